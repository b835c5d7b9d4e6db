/*
 * response_diff: a test helper (criterion) that runs one response body through a provider's
 * two parse_response readers, the scanner reader (json_scan.h) and the json-c tree reader,
 * each on its own fake host, and asserts that they answer alike: the same return code, error
 * text and upstream error, the same log lines and the same response, field by field, every
 * string copied out of the body. The companion of stream_diff.h for whole bodies.
 * Include after <criterion/criterion.h> and "compass_fakehost.h".
 */
#ifndef COMPASS_PROVIDERS_RESPONSE_DIFF_H
#define COMPASS_PROVIDERS_RESPONSE_DIFF_H

#include <stdlib.h>
#include <string.h>

typedef struct rd_readers {
    compass_fakehost *fast_fh, *full_fh; /* one fake host each: their own request and log */
    void *fast_ctx, *full_ctx;
    /* the scanner reader: as parse_response, or declined (out untouched, nothing logged) */
    int (*fast)(void *ctx, compass_req *req, const compass_http_response *resp,
                compass_chat_response *out, compass_err *err);
    int (*full)(void *ctx, compass_req *req, const compass_http_response *resp,
                compass_chat_response *out, compass_upstream_error *u, compass_err *err);
    int declined;
} rd_readers;

/* A case: a name, whether the scanner reader must take the body itself (1) or leave it to
 * the tree reader (0), the HTTP status (0: 200) and the body. */
typedef struct rd_case {
    const char *name;
    int fast;
    int status;
    const char *body;
} rd_case;

/* Makes the fake host of each reader. */
static inline void rd_open(rd_readers *r, const char *plugin)
{
    memset(r, 0, sizeof(*r));
    r->fast_fh = compass_fakehost_new(plugin);
    r->full_fh = compass_fakehost_new(plugin);
    cr_assert(r->fast_fh && r->full_fh);
}

static inline void rd_close(rd_readers *r)
{
    compass_fakehost_free(r->fast_fh);
    compass_fakehost_free(r->full_fh);
}

/* head, n nested empty arrays, then tail, into buf (for depth limits). */
static inline const char *rd_nested(char *buf, size_t cap, const char *head, int n,
                                    const char *tail)
{
    size_t o, hl = strlen(head), tl = strlen(tail);
    int i;
    cr_assert_lt(hl + tl + 2 * (size_t)n + 1, cap);
    memcpy(buf, head, hl);
    o = hl;
    for (i = 0; i < 2 * n; i++)
        buf[o++] = i < n ? '[' : ']';
    memcpy(buf + o, tail, tl + 1);
    return buf;
}

static inline void rd_str_same(const char *name, const char *what, compass_str a,
                               compass_str b, const char *body)
{
    size_t bl = strlen(body);
    cr_assert_eq(a.len, b.len, "%s: %s has %zu bytes (fast) vs %zu (full)", name, what, a.len,
                 b.len);
    cr_assert(a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0,
              "%s: %s \"%.*s\" (fast) vs \"%.*s\" (full)", name, what, (int)a.len, a.ptr,
              (int)b.len, b.ptr);
    cr_assert_eq(a.ptr == NULL, b.ptr == NULL, "%s: %s: NULL (fast) %d vs (full) %d", name, what,
                 a.ptr == NULL, b.ptr == NULL);
    /* request-owned: copied into the arena, never a view of the body */
    cr_assert(!a.ptr || a.ptr < body || a.ptr >= body + bl, "%s: %s borrows the body", name,
              what);
}

static inline void rd_response_same(const char *name, const compass_chat_response *a,
                                    const compass_chat_response *b, const char *body)
{
    size_t i;
    cr_assert_eq(a->size, b->size, "%s: size", name);
    rd_str_same(name, "id", a->id, b->id, body);
    rd_str_same(name, "model", a->model, b->model, body);
    cr_assert_eq(a->created, b->created, "%s: created %lld vs %lld", name, (long long)a->created,
                 (long long)b->created);
    cr_assert_eq(a->has_content, b->has_content, "%s: has_content", name);
    rd_str_same(name, "content", a->content, b->content, body);
    rd_str_same(name, "refusal", a->refusal, b->refusal, body);
    cr_assert_eq(a->n_tool_calls, b->n_tool_calls, "%s: %zu tool calls (fast) vs %zu (full)",
                 name, a->n_tool_calls, b->n_tool_calls);
    cr_assert_eq(a->tool_calls == NULL, b->tool_calls == NULL, "%s: tool_calls", name);
    for (i = 0; i < a->n_tool_calls; i++) {
        rd_str_same(name, "tool_calls[].id", a->tool_calls[i].id, b->tool_calls[i].id, body);
        rd_str_same(name, "tool_calls[].name", a->tool_calls[i].name, b->tool_calls[i].name,
                    body);
        rd_str_same(name, "tool_calls[].arguments", a->tool_calls[i].arguments,
                    b->tool_calls[i].arguments, body);
    }
    cr_assert_eq(a->finish_reason, b->finish_reason, "%s: finish_reason %d vs %d", name,
                 a->finish_reason, b->finish_reason);
    cr_assert_eq(a->usage.present, b->usage.present, "%s: usage.present", name);
    cr_assert_eq(a->usage.prompt_tokens, b->usage.prompt_tokens, "%s: prompt", name);
    cr_assert_eq(a->usage.completion_tokens, b->usage.completion_tokens, "%s: completion", name);
    cr_assert_eq(a->usage.total_tokens, b->usage.total_tokens, "%s: total", name);
    cr_assert_eq(a->usage.cached_tokens, b->usage.cached_tokens, "%s: cached", name);
    cr_assert_eq(a->usage.reasoning_tokens, b->usage.reasoning_tokens, "%s: reasoning", name);
}

/* Runs body through the scanner reader (then the tree reader when it declines) on one side
 * and the tree reader alone on the other; asserts the same answer, field by field, and the
 * same log lines. Returns whether the scanner reader took the body. */
static inline int rd_compare(const rd_readers *r, const char *name, int status, const char *body)
{
    compass_http_response resp = compass_fakehost_http(status ? status : 200, body);
    compass_chat_response oa, ob, untouched;
    compass_upstream_error ua, ub;
    compass_err ea, eb;
    compass_req *ra = compass_fakehost_req(r->fast_fh), *rb = compass_fakehost_req(r->full_fh);
    size_t la = strlen(compass_fakehost_log(r->fast_fh));
    size_t lb = strlen(compass_fakehost_log(r->full_fh));
    int a, b, taken = 1;

    memset(&oa, 0x5a, sizeof(oa));
    oa.size = sizeof(oa);
    untouched = oa;
    memset(&ob, 0, sizeof(ob));
    ob.size = sizeof(ob);
    memset(&ua, 0, sizeof(ua));
    memset(&ub, 0, sizeof(ub));
    memset(&ea, 0, sizeof(ea));
    memset(&eb, 0, sizeof(eb));
    a = r->fast(r->fast_ctx, ra, &resp, &oa, &ea);
    if (a == r->declined) {
        taken = 0;
        cr_assert(!memcmp(&oa, &untouched, sizeof(oa)), "%s: declined but wrote out", name);
        cr_assert_eq(strlen(compass_fakehost_log(r->fast_fh)), la, "%s: declined but logged",
                     name);
        cr_assert_str_empty(ea.msg, "%s: declined with an error: %s", name, ea.msg);
        memset(&oa, 0, sizeof(oa));
        oa.size = sizeof(oa);
        a = r->full(r->fast_ctx, ra, &resp, &oa, &ua, &ea);
    }
    b = r->full(r->full_ctx, rb, &resp, &ob, &ub, &eb);
    cr_assert_eq(a, b, "%s: rc %d (fast) vs %d (full): %s / %s", name, a, b, ea.msg, eb.msg);
    cr_assert_str_eq(ea.msg, eb.msg, "%s: err", name);
    cr_assert_eq(ua.outcome, ub.outcome, "%s: outcome", name);
    cr_assert_eq(ua.http_status, ub.http_status, "%s: status", name);
    cr_assert_eq(ua.retry_after_ms, ub.retry_after_ms, "%s: retry", name);
    cr_assert_str_eq(ua.type, ub.type, "%s: type", name);
    cr_assert_str_eq(ua.code, ub.code, "%s: code", name);
    cr_assert_str_eq(ua.message, ub.message, "%s: message", name);
    cr_assert_str_eq(compass_fakehost_log(r->fast_fh) + la, compass_fakehost_log(r->full_fh) + lb,
                     "%s: log", name);
    if (a == COMPASS_OK)
        rd_response_same(name, &oa, &ob, body);
    cr_assert(!taken || a == COMPASS_OK, "%s: the scanner reader took a body it failed (%d)",
              name, a);
    return taken;
}

/* Runs every case, asserting that the reader it names answered; returns how many the scanner
 * reader took (so a caller can check that it takes the bulk of them). */
static inline size_t rd_compare_all(const rd_readers *r, const rd_case *cases, size_t n)
{
    size_t i, fast = 0;
    for (i = 0; i < n; i++) {
        int taken = rd_compare(r, cases[i].name, cases[i].status, cases[i].body);
        cr_assert_eq(taken, cases[i].fast, "%s: the scanner reader %s the body", cases[i].name,
                     taken ? "took" : "left");
        fast += (size_t)taken;
    }
    return fast;
}

/* Runs every proper prefix of each case the scanner reader takes (trailing whitespace aside):
 * the scanner reader must leave each to the tree reader, which answers as it always did. */
static inline void rd_compare_prefixes(const rd_readers *r, const rd_case *cases, size_t n)
{
    size_t i, k;
    for (i = 0; i < n; i++) {
        size_t len = strlen(cases[i].body);
        char *buf;
        if (!cases[i].fast)
            continue;
        while (len && strchr(" \t\r\n", cases[i].body[len - 1]))
            len--;
        buf = malloc(len + 1);
        cr_assert(buf);
        for (k = 0; k < len; k++) {
            memcpy(buf, cases[i].body, k);
            buf[k] = '\0';
            cr_assert(!rd_compare(r, cases[i].name, 200, buf), "%s: prefix of %zu bytes taken",
                      cases[i].name, k);
        }
        free(buf);
    }
}

#endif
