/*
 * stream_diff: a test helper (criterion) that runs one recorded SSE stream through a
 * provider's two stream readers, the scanner reader (json_scan.h) and the json-c tree reader,
 * each on its own fake host, and asserts that they answer alike: the same return code for
 * every event, the same error text and upstream error, and the same deltas, field by field.
 * Include after <criterion/criterion.h> and "compass_fakehost.h".
 */
#ifndef COMPASS_PROVIDERS_STREAM_DIFF_H
#define COMPASS_PROVIDERS_STREAM_DIFF_H

#include <stdio.h>
#include <string.h>

#define SD_MAX_EVENTS 64

typedef struct sd_readers {
    compass_fakehost *fast_fh, *full_fh; /* one fake host each: their own request and deltas */
    void *fast_ctx, *full_ctx;
    /* the scanner reader: as parse_stream_event, or declined when it leaves the event */
    int (*fast)(void *ctx, compass_req *req, const compass_stream_event *ev, compass_err *err);
    int (*full)(void *ctx, compass_req *req, const compass_stream_event *ev,
                compass_upstream_error *u, compass_err *err);
    int declined;
} sd_readers;

/* A case: a name, how many of its events the scanner reader must leave to the tree reader
 * (errors, bytes that are not strict JSON, duplicates, odd shapes), and the SSE body. */
typedef struct sd_case {
    const char *name;
    size_t left;
    const char *sse;
} sd_case;

/* Makes the fake host of each reader. */
static inline void sd_open(sd_readers *r, const char *plugin)
{
    memset(r, 0, sizeof(*r));
    r->fast_fh = compass_fakehost_new(plugin);
    r->full_fh = compass_fakehost_new(plugin);
    cr_assert(r->fast_fh && r->full_fh);
}

static inline void sd_close(sd_readers *r)
{
    compass_fakehost_free(r->fast_fh);
    compass_fakehost_free(r->full_fh);
}

/* One SSE event whose data is head, n nested empty arrays and tail (for depth limits). */
static inline const char *sd_nested(char *buf, size_t cap, const char *head, int n,
                                     const char *tail)
{
    size_t o = 0, hl = strlen(head), tl = strlen(tail);
    int i;
    cr_assert_lt(hl + tl + 2 * (size_t)n + 16, cap);
    memcpy(buf, "data: ", 6);
    o = 6;
    memcpy(buf + o, head, hl);
    o += hl;
    for (i = 0; i < 2 * n; i++)
        buf[o++] = i < n ? '[' : ']';
    memcpy(buf + o, tail, tl);
    o += tl;
    memcpy(buf + o, "\n\n", 3);
    return buf;
}

static inline void sd_str_same(const char *what, const char *name, size_t i, compass_str a,
                        compass_str b)
{
    cr_assert_eq(a.len, b.len, "%s: delta %zu: %s has %zu bytes (fast) vs %zu (full)", name, i,
                 what, a.len, b.len);
    cr_assert(a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0,
              "%s: delta %zu: %s \"%.*s\" (fast) vs \"%.*s\" (full)", name, i, what, (int)a.len,
              a.ptr, (int)b.len, b.ptr);
}

static inline void sd_delta_same(const char *name, size_t i, const compass_chat_delta *a,
                          const compass_chat_delta *b)
{
    sd_str_same("id", name, i, a->id, b->id);
    sd_str_same("model", name, i, a->model, b->model);
    cr_assert_eq(a->role, b->role, "%s: delta %zu: role", name, i);
    sd_str_same("content", name, i, a->content, b->content);
    sd_str_same("refusal", name, i, a->refusal, b->refusal);
    cr_assert_eq(a->tool_index, b->tool_index, "%s: delta %zu: tool_index %d vs %d", name, i,
                 a->tool_index, b->tool_index);
    sd_str_same("tool_id", name, i, a->tool_id, b->tool_id);
    sd_str_same("tool_name", name, i, a->tool_name, b->tool_name);
    sd_str_same("tool_arguments", name, i, a->tool_arguments, b->tool_arguments);
    cr_assert_eq(a->finish_reason, b->finish_reason, "%s: delta %zu: finish_reason %d vs %d",
                 name, i, a->finish_reason, b->finish_reason);
    cr_assert_eq(a->usage.present, b->usage.present, "%s: delta %zu: usage.present", name, i);
    cr_assert_eq(a->usage.prompt_tokens, b->usage.prompt_tokens, "%s: delta %zu: prompt", name,
                 i);
    cr_assert_eq(a->usage.completion_tokens, b->usage.completion_tokens,
                 "%s: delta %zu: completion", name, i);
    cr_assert_eq(a->usage.total_tokens, b->usage.total_tokens, "%s: delta %zu: total", name, i);
    cr_assert_eq(a->usage.cached_tokens, b->usage.cached_tokens, "%s: delta %zu: cached", name,
                 i);
    cr_assert_eq(a->usage.reasoning_tokens, b->usage.reasoning_tokens,
                 "%s: delta %zu: reasoning", name, i);
}

/* Splits an SSE body into events ("event:" and "data:" lines, LF or CRLF; an event ends at a
 * blank line). The data is copied into buf, lines joined with '\n'; returns the number of
 * events. */
static inline size_t sd_split(const char *sse, char *buf, size_t cap, compass_stream_event *evs,
                       size_t max)
{
    size_t n = 0, len = strlen(sse), o = 0;
    const char *p = sse, *end = sse + len;
    int open = 0, any = 0;
    cr_assert_lt(len + 2 * max, cap, "stream too long for the test buffer");
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t ll = eol ? (size_t)(eol - p) : (size_t)(end - p);
        const char *next = p + ll + (eol ? 1 : 0);
        if (ll && p[ll - 1] == '\r')
            ll--;
        if (!ll) { /* a blank line ends the event */
            if (open) {
                evs[n].data.len = (size_t)(buf + o - evs[n].data.ptr);
                buf[o++] = '\0';
                n++;
            }
            open = any = 0;
            p = next;
            continue;
        }
        if (!open) {
            cr_assert_lt(n, max, "too many events for the test");
            memset(&evs[n], 0, sizeof(evs[n]));
            evs[n].data.ptr = buf + o;
            open = 1;
        }
        if (ll >= 6 && !memcmp(p, "event:", 6)) {
            size_t skip = 6 + (ll > 6 && p[6] == ' ');
            evs[n].event.ptr = p + skip;
            evs[n].event.len = ll - skip;
        } else if (ll >= 5 && !memcmp(p, "data:", 5)) {
            size_t skip = 5 + (ll > 5 && p[5] == ' ');
            if (any)
                buf[o++] = '\n';
            memcpy(buf + o, p + skip, ll - skip);
            o += ll - skip;
            any = 1;
        }
        p = next;
    }
    if (open) {
        evs[n].data.len = (size_t)(buf + o - evs[n].data.ptr);
        buf[o++] = '\0';
        n++;
    }
    return n;
}

/* Runs c through both readers in one request each; asserts they agree. Returns how many
 * events the scanner reader left to the tree reader. */
static inline size_t sd_compare(const sd_readers *r, const sd_case *c)
{
    static char buf[1 << 16]; /* static inline: one per test program */
    compass_stream_event evs[SD_MAX_EVENTS];
    size_t n = sd_split(c->sse, buf, sizeof(buf), evs, SD_MAX_EVENTS), i, declined = 0;
    compass_req *ra = compass_fakehost_req(r->fast_fh), *rb = compass_fakehost_req(r->full_fh);
    for (i = 0; i < n; i++) {
        compass_upstream_error ua, ub;
        compass_err ea, eb;
        int a, b;
        memset(&ua, 0, sizeof(ua));
        memset(&ub, 0, sizeof(ub));
        memset(&ea, 0, sizeof(ea));
        memset(&eb, 0, sizeof(eb));
        a = r->fast(r->fast_ctx, ra, &evs[i], &ea);
        if (a == r->declined) {
            declined++;
            a = r->full(r->fast_ctx, ra, &evs[i], &ua, &ea);
        }
        b = r->full(r->full_ctx, rb, &evs[i], &ub, &eb);
        cr_assert_eq(a, b, "%s: event %zu: rc %d (fast) vs %d (full): %s / %s", c->name, i, a, b,
                     ea.msg, eb.msg);
        cr_assert_str_eq(ea.msg, eb.msg, "%s: event %zu: err", c->name, i);
        cr_assert_eq(ua.outcome, ub.outcome, "%s: event %zu: outcome", c->name, i);
        cr_assert_eq(ua.http_status, ub.http_status, "%s: event %zu: status", c->name, i);
        cr_assert_eq(ua.retry_after_ms, ub.retry_after_ms, "%s: event %zu: retry", c->name, i);
        cr_assert_str_eq(ua.type, ub.type, "%s: event %zu: type", c->name, i);
        cr_assert_str_eq(ua.code, ub.code, "%s: event %zu: code", c->name, i);
        cr_assert_str_eq(ua.message, ub.message, "%s: event %zu: message", c->name, i);
        if (a < 0 || a == COMPASS_STREAM_END)
            break; /* the host stops the stream here */
    }
    cr_assert_eq(compass_fakehost_n_deltas(r->fast_fh), compass_fakehost_n_deltas(r->full_fh),
                 "%s: %zu deltas (fast) vs %zu (full)", c->name,
                 compass_fakehost_n_deltas(r->fast_fh), compass_fakehost_n_deltas(r->full_fh));
    for (i = 0; i < compass_fakehost_n_deltas(r->fast_fh); i++)
        sd_delta_same(c->name, i, compass_fakehost_delta(r->fast_fh, i),
                      compass_fakehost_delta(r->full_fh, i));
    cr_assert_eq(declined, c->left, "%s: the scanner reader left %zu event(s), not %zu", c->name,
                 declined, c->left);
    return declined;
}

/* Runs every case; returns how many deltas they produced in all (so a caller can check the
 * corpus is not empty of output). */
static inline size_t sd_compare_all(const sd_readers *r, const sd_case *cases, size_t n)
{
    size_t i, deltas = 0;
    for (i = 0; i < n; i++) {
        sd_compare(r, &cases[i]);
        deltas += compass_fakehost_n_deltas(r->full_fh);
    }
    return deltas;
}

#endif
