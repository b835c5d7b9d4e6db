/*
 * pair_cases: a test helper, the characters each test of a json-c site checks. U+1D800 and
 * U+2DFFF, whose escaped surrogate pairs json-c 0.16 decodes as U+FFFD (js_bad_pair in
 * json_scan.h); U+1F600, which it always decoded; escaped backslashes before "uD836" and
 * "uDC00", which make no pair at all. Each as a JSON string holds it (the text between the
 * quotes) and as the user must see it. Include after <criterion/criterion.h> and
 * <compass/plugin.h>.
 */
#ifndef COMPASS_PROVIDERS_PAIR_CASES_H
#define COMPASS_PROVIDERS_PAIR_CASES_H

#include <json-c/json.h>

#include <stdio.h>
#include <string.h>

typedef struct pair_case {
    const char *esc;
    const char *utf8;
} pair_case;

static const pair_case PAIR_CASES[] = {
    {"\\uD836\\uDC00", "\xF0\x9D\xA0\x80"},   /* U+1D800 */
    {"\\uD877\\uDFFF", "\xF0\xAD\xBF\xBF"},   /* U+2DFFF */
    {"\\uD83D\\uDE00", "\xF0\x9F\x98\x80"},   /* U+1F600 */
    {"\\\\uD836\\\\uDC00", "\\uD836\\uDC00"}, /* no pair */
};

#define N_PAIR_CASES (sizeof(PAIR_CASES) / sizeof(PAIR_CASES[0]))

/* What a body starts with to be read by the scanner reader (json_scan.h) of a plugin or of
 * the core, or to be left to the json-c tree reader: an escaped key, which the scanner
 * readers refuse (it might spell a key they keep). */
static const char *const PAIR_HEADS[] = {"", "\"x\\u0041\":1,"};

#define N_PAIR_HEADS (sizeof(PAIR_HEADS) / sizeof(PAIR_HEADS[0]))

/* Calls f(ctx, head, i) for each of PAIR_HEADS and each case i. */
static inline void pair_each(void (*f)(void *ctx, const char *head, size_t i), void *ctx)
{
    for (size_t c = 0; c < N_PAIR_HEADS * N_PAIR_CASES; c++)
        f(ctx, PAIR_HEADS[c / N_PAIR_CASES], c % N_PAIR_CASES);
}

/* tmpl into b[0..cap) with each '^' replaced by head and each '@' by case i's escaped text;
 * returns b. */
static inline const char *pair_fill(char *b, size_t cap, const char *tmpl, const char *head,
                                    size_t i)
{
    size_t o = 0;
    for (; *tmpl; tmpl++) {
        const char *put = *tmpl == '^' ? head : *tmpl == '@' ? PAIR_CASES[i].esc : NULL;
        size_t n = put ? strlen(put) : 1;
        cr_assert_lt(o + n, cap, "pair_fill: %s", tmpl);
        memcpy(b + o, put ? put : tmpl, n);
        o += n;
    }
    b[o] = '\0';
    return b;
}

/* Whether s is lead, then case i's text, then tail. */
static inline int pair_is(compass_str s, const char *lead, size_t i, const char *tail)
{
    char want[128];
    int n = snprintf(want, sizeof(want), "%s%s%s", lead, PAIR_CASES[i].utf8, tail);
    return n > 0 && (size_t)n < sizeof(want) && s.len == (size_t)n && s.ptr &&
           !memcmp(s.ptr, want, s.len);
}

/* Whether the JSON text j (NUL-terminated) is an object whose member "q" is lead, then case
 * i's text: how a value written back as JSON is checked (json-c writes the character as it
 * is, and the backslash escaped again). */
static inline int pair_q_is(const char *j, const char *lead, size_t i)
{
    json_object *o = j ? json_tokener_parse(j) : NULL, *q;
    int ok = json_object_object_get_ex(o, "q", &q) && json_object_is_type(q, json_type_string) &&
             pair_is((compass_str){json_object_get_string(q),
                                   (size_t)json_object_get_string_len(q)},
                     lead, i, "");
    json_object_put(o);
    return ok;
}

/* Whether a response holds "a", case i's text, "b" as its content, and one tool call whose
 * arguments (written back as JSON) are {"q": "a" then case i's text}. */
static inline int pair_reply_is(const compass_chat_response *r, size_t i)
{
    return pair_is(r->content, "a", i, "b") && r->n_tool_calls == 1 &&
           pair_q_is(r->tool_calls[0].arguments.ptr, "a", i);
}

/* For each head and case: classify reads the upstream error body tmpl (its '^' the head, its
 * '@' the case) into u, whose message, which reaches the client, must hold "bad " then the
 * case's text. */
static inline void pair_error_each(const char *tmpl,
                                   void (*classify)(void *ctx, const char *body,
                                                    compass_upstream_error *u),
                                   void *ctx)
{
    for (size_t c = 0; c < N_PAIR_HEADS * N_PAIR_CASES; c++) {
        size_t i = c % N_PAIR_CASES;
        char b[512], want[64];
        compass_upstream_error u;
        pair_fill(b, sizeof(b), tmpl, PAIR_HEADS[c / N_PAIR_CASES], i);
        classify(ctx, b, &u);
        snprintf(want, sizeof(want), "bad %s", PAIR_CASES[i].utf8);
        cr_assert(strstr(u.message, want), "%s: %s", b, u.message);
    }
}

#endif
