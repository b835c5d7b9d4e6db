/* Unit tests of json_scan.h: what the scanner accepts and refuses, the spans it yields, and
 * that everything it accepts json-c accepts too. */
#include <compass/plugin.h>

#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_scan.h"
#include "pair_cases.h"

/* Whether json-c parses exactly p[0..n) as one value (the oracle: parsed from a
 * NUL-terminated copy, a bare number ended by the NUL, whitespace after it allowed). */
static int jsonc_accepts(const char *p, size_t n, int depth)
{
    char *copy = strndup(p, n);
    json_tokener *tok = json_tokener_new_ex(depth);
    json_object *o;
    int ok;
    cr_assert(copy && tok);
    o = json_tokener_parse_ex(tok, copy, (int)n + 1); /* the NUL too */
    ok = strlen(copy) == n && json_tokener_get_error(tok) == json_tokener_success &&
         js_skip_ws(p, n, json_tokener_get_parse_end(tok)) >= n;
    json_object_put(o);
    json_tokener_free(tok);
    free(copy);
    return ok;
}

static int scans(const char *s)
{
    return js_is_json(s, strlen(s), 32);
}

static const char *const VALID[] = {
    "{}", "[]", "0", "-0", "1", "-1", "12.5", "1e3", "1E+3", "1.5E-2", "-0.0e-0", "1e400",
    "123456789012345678901234567890", "\"\"", "\"a\"", "true", "false", "null",
    "\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\uD83D\\uDE00 \\ud800 \\u0000\"",
    "\"caf\xc3\xa9 \x7f raw DEL and UTF-8\"", " \t\r\n{ \"a\" : [ 1 , { } , [ ] ] } \n",
    "{\"a\":1,\"a\":2}", "{\"\":\"empty key\"}", "[[[],[[]]],{\"x\":{\"y\":{}}}]",
    "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}",
};

static const char *const INVALID[] = {
    "", " ", "\"unterminated", "\"bad escape \\x\"", "\"\\u12\"", "\"\\u12G4\"", "\"\\",
    "\"raw \x01 control\"", "\"raw\nnewline\"", "\"raw\ttab\"", "01", "-01", "00", "1.", ".5",
    "+1", "-", "1e", "1e+", "0x10", "NaN", "Infinity", "-Infinity", "tru", "nul", "True", "nulls",
    "[1,]", "{\"a\":1,}", "[,]", "{,}", "[1 2]", "{\"a\" 1}", "{\"a\":}", "{a:1}", "{'a':1}",
    "{\"a\":1}}", "[1]]", "{\"a\":1", "[1", "{} {}", "{}x", "/* c */{}", "{\"a\":1 /* c */}",
    "\f{}", "{}\v", "[\"a\"\x00]", "{\"a\":-}", "[1.e5]", "[.]",
};

Test(json_scan, accepts_valid_json)
{
    size_t i;
    for (i = 0; i < sizeof(VALID) / sizeof(VALID[0]); i++)
        cr_assert(scans(VALID[i]), "refused: %s", VALID[i]);
}

Test(json_scan, refuses_invalid_bytes)
{
    size_t i;
    for (i = 0; i < sizeof(INVALID) / sizeof(INVALID[0]); i++)
        cr_assert_not(scans(INVALID[i]), "accepted: %s", INVALID[i]);
    /* a NUL byte inside the buffer, where strlen would stop */
    cr_assert_not(js_is_json("[1,\0 2]", 7, 32));
    cr_assert_not(js_is_json("\"a\0b\"", 5, 32));
    cr_assert_not(js_is_json(NULL, 0, 32));
}

Test(json_scan, is_at_least_as_strict_as_json_c)
{
    size_t i;
    for (i = 0; i < sizeof(VALID) / sizeof(VALID[0]); i++)
        cr_assert(jsonc_accepts(VALID[i], strlen(VALID[i]), 32), "json-c refused: %s", VALID[i]);
    for (i = 0; i < sizeof(INVALID) / sizeof(INVALID[0]); i++)
        if (scans(INVALID[i]))
            cr_assert(jsonc_accepts(INVALID[i], strlen(INVALID[i]), 32), "%s", INVALID[i]);
}

/* n nested arrays inside an object: the object counts as one level. */
static size_t nest(char *buf, size_t cap, int n)
{
    size_t o = 0;
    int i;
    cr_assert_lt((size_t)(2 * n + 8), cap);
    o += (size_t)snprintf(buf, cap, "{\"x\":");
    for (i = 0; i < n; i++)
        buf[o++] = '[';
    for (i = 0; i < n; i++)
        buf[o++] = ']';
    buf[o++] = '}';
    buf[o] = '\0';
    return o;
}

Test(json_scan, depth_limit_matches_json_c)
{
    static const int depths[] = {2, 3, 32, 128};
    char buf[600];
    size_t i;
    for (i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
        int d = depths[i];
        size_t n = nest(buf, sizeof(buf), d - 1); /* exactly d levels */
        cr_assert(js_is_json(buf, n, d), "depth %d refused at its limit", d);
        cr_assert(jsonc_accepts(buf, n, d));
        n = nest(buf, sizeof(buf), d); /* d + 1 levels */
        cr_assert_not(js_is_json(buf, n, d), "depth %d accepted past its limit", d);
        cr_assert_not(jsonc_accepts(buf, n, d));
    }
}

Test(json_scan, walks_members_with_their_spans)
{
    static const char doc[] = " {\"a\" : 1, \"b\\\"\":\"x\\\"y\",\"c\":[1,{\"d\":null}],\"e\":{},"
                              "\"f\":true,\"g\":false , \"h\":-0.5e+3,\"i\":\"\"} ";
    static const struct {
        const char *key;
        int key_escaped;
        js_type type;
        const char *raw;
    } want[] = {
        {"\"a\"", 0, JS_NUMBER, "1"},
        {"\"b\\\"\"", 1, JS_STRING, "\"x\\\"y\""},
        {"\"c\"", 0, JS_ARRAY, "[1,{\"d\":null}]"},
        {"\"e\"", 0, JS_OBJECT, "{}"},
        {"\"f\"", 0, JS_TRUE, "true"},
        {"\"g\"", 0, JS_FALSE, "false"},
        {"\"h\"", 0, JS_NUMBER, "-0.5e+3"},
        {"\"i\"", 0, JS_STRING, "\"\""},
    };
    json_scan s;
    js_val k, v;
    size_t i = 0;
    int r;
    js_init(&s, doc, sizeof(doc) - 1, 8);
    cr_assert_eq(js_peek(&s), JS_OBJECT);
    cr_assert_eq(js_begin(&s, '{'), 0);
    while ((r = js_member(&s, &k)) > 0) {
        cr_assert_lt(i, sizeof(want) / sizeof(want[0]));
        cr_assert_eq(k.type, JS_STRING);
        cr_assert_eq(k.len, strlen(want[i].key));
        cr_assert(!memcmp(k.ptr, want[i].key, k.len), "key %zu", i);
        cr_assert_eq(k.escaped, want[i].key_escaped, "key %zu", i);
        cr_assert_eq(js_peek(&s), want[i].type, "value %zu", i);
        cr_assert_eq(js_value(&s, &v), 0);
        cr_assert_eq(v.type, want[i].type, "value %zu", i);
        cr_assert_eq(v.len, strlen(want[i].raw), "value %zu", i);
        cr_assert(!memcmp(v.ptr, want[i].raw, v.len), "value %zu: %.*s", i, (int)v.len, v.ptr);
        i++;
    }
    cr_assert_eq(r, 0);
    cr_assert_eq(i, sizeof(want) / sizeof(want[0]));
    cr_assert_eq(js_end(&s), 0);
    cr_assert(js_key_is(&(js_val){JS_STRING, 0, "\"id\"", 4}, "id"));
    cr_assert_not(js_key_is(&(js_val){JS_STRING, 1, "\"id\"", 4}, "id"));
    cr_assert_not(js_key_is(&(js_val){JS_STRING, 0, "\"idx\"", 5}, "id"));
}

/* js_members_k keeps the named members, skips the rest whole, and refuses what json-c would
 * read otherwise (a kept key twice) or what might spell a kept key (an escaped key). */
Test(json_scan, members_keeps_the_named_ones)
{
    static const js_key keys[] = {JS_KEY("id"), JS_KEY("n")};
    static const char *const refused[] = {
        "{\"id\":1,\"id\":2}", "{\"i\\u0064\":1}", "{\"x\\n\":1}", "{\"id\":1,}",
        "[\"id\",1]",         "{\"id\":[1,}",   "{\"id\" 1}",
    };
    /* skipped keys may come twice */
    static const char doc[] =
        "{\"skip\":{\"id\":[1,{}]},\"n\":-2,\"id\":\"a\\\"b\",\"skip\":0} x";
    js_val m[2];
    json_scan s;
    size_t i;
    memset(m, 0, sizeof(m));
    js_init(&s, doc, strlen(doc), 8);
    cr_assert_eq(js_members_k(&s, keys, m, 2), 0);
    cr_assert_eq(s.i, strlen(doc) - 2, "stops after the object");
    cr_assert_eq(m[0].type, JS_STRING);
    cr_assert(m[0].escaped);
    cr_assert_eq(m[0].len, 6);
    cr_assert_eq(m[1].type, JS_NUMBER);
    cr_assert_eq(m[1].len, 2);
    for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        memset(m, 0, sizeof(m));
        js_init(&s, refused[i], strlen(refused[i]), 8);
        cr_assert_eq(js_members_k(&s, keys, m, 2), -1, "took %s", refused[i]);
    }
}

Test(json_scan, walks_nested_containers)
{
    static const char doc[] = "{\"o\":{\"p\":[{\"q\":1},{}],\"r\":[]},\"s\":[[],[2]],\"t\":0}";
    json_scan s;
    js_val k, v;
    int n_elems = 0;
    js_init(&s, doc, sizeof(doc) - 1, 8);
    cr_assert_eq(js_begin(&s, '{'), 0);
    cr_assert_eq(js_member(&s, &k), 1);
    cr_assert(js_key_is(&k, "o"));
    cr_assert_eq(js_begin(&s, '{'), 0);
    cr_assert_eq(js_member(&s, &k), 1);
    cr_assert(js_key_is(&k, "p"));
    cr_assert_eq(js_begin(&s, '['), 0);
    while (js_elem(&s) > 0) {
        cr_assert_eq(js_begin(&s, '{'), 0);
        while (js_member(&s, &k) > 0)
            cr_assert_eq(js_skip(&s), 0);
        n_elems++;
    }
    cr_assert_eq(n_elems, 2);
    cr_assert_eq(js_member(&s, &k), 1);
    cr_assert(js_key_is(&k, "r"));
    cr_assert_eq(js_begin(&s, '['), 0);
    cr_assert_eq(js_elem(&s), 0); /* empty */
    cr_assert_eq(js_member(&s, &k), 0); /* end of "o" */
    cr_assert_eq(s.depth, 1);
    cr_assert_eq(js_member(&s, &k), 1);
    cr_assert(js_key_is(&k, "s"));
    cr_assert_eq(js_value(&s, &v), 0);
    cr_assert_eq(v.type, JS_ARRAY);
    cr_assert_eq(v.len, 8);
    cr_assert_eq(js_member(&s, &k), 1);
    cr_assert_eq(js_value(&s, &v), 0);
    cr_assert_eq(js_member(&s, &k), 0);
    cr_assert_eq(js_end(&s), 0);
}

/* Walks p as an object of members, skipping every value; 0 when it all scans. */
static int walk(const char *p, int max_depth)
{
    json_scan s;
    js_val k;
    int r;
    js_init(&s, p, strlen(p), max_depth);
    if (js_begin(&s, '{'))
        return -1;
    while ((r = js_member(&s, &k)) > 0)
        if (js_skip(&s))
            return -1;
    return r < 0 ? -1 : js_end(&s);
}

Test(json_scan, walking_refuses_what_skipping_refuses)
{
    static const char *const bad[] = {
        "{\"a\":1,}", "{,\"a\":1}", "{\"a\":1 \"b\":2}", "{\"a\"}", "{\"a\":}", "{\"a\":1",
        "{\"a\":1}x", "{\"a\":01}", "{\"a\":\"\\q\"}", "{\"a\":\"\x1f\"}", "{\"a\x01\":1}",
        "{\"a\":[1,]}", "{1:2}", "[]", "{\"a\":1}}",
    };
    size_t i;
    cr_assert_eq(walk("{ \"a\" : [ 1 , 2 ] , \"b\" : { \"c\" : \"\\u00e9\" } }", 4), 0);
    cr_assert_eq(walk("{}", 1), 0);
    cr_assert_eq(walk("{\"a\":[]}", 1), -1); /* two levels, one allowed */
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(walk(bad[i], 8), -1, "walked: %s", bad[i]);
}

Test(json_scan, small_ints_are_read_as_json_c_reads_them)
{
    static const struct {
        const char *raw;
        int small;
        int64_t v;
    } cases[] = {
        {"0", 1, 0}, {"-0", 1, 0}, {"62", 1, 62}, {"-17", 1, -17},
        {"999999999999999999", 1, 999999999999999999LL}, {"1000000000000000000", 0, 0},
        {"1.0", 0, 0}, {"1e3", 0, 0}, {"-1E2", 0, 0},
    };
    js_keep keep;
    size_t i;
    js_keep_init(&keep, 32);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        js_val v = {JS_NUMBER, 0, cases[i].raw, strlen(cases[i].raw)};
        int64_t got = -1, via = -2;
        json_object *o = json_tokener_parse(cases[i].raw);
        cr_assert_eq(js_small_int(&v, &got), cases[i].small, "%s", cases[i].raw);
        if (cases[i].small)
            cr_assert_eq(got, cases[i].v, "%s", cases[i].raw);
        /* js_int64 falls back on json-c and agrees with json_object_get_int64 either way */
        cr_assert_eq(js_int64(&keep, &v, &via), 0, "%s", cases[i].raw);
        cr_assert_eq(via, json_object_get_int64(o), "%s", cases[i].raw);
        json_object_put(o);
    }
    js_keep_release(&keep);
}

Test(json_scan, strings_are_views_or_decoded_by_json_c)
{
    static const char doc[] = "[\"plain\",\"a\\nb \\u00e9 \\ud83d\\ude00 \\\"q\\\"\",\"\\u0000x\"]";
    json_scan s;
    js_val v;
    js_keep keep;
    compass_str t;
    js_init(&s, doc, sizeof(doc) - 1, 4);
    js_keep_init(&keep, 4);
    cr_assert_eq(js_begin(&s, '['), 0);

    cr_assert_eq(js_elem(&s), 1);
    cr_assert_eq(js_value(&s, &v), 0);
    cr_assert_eq(js_string(&keep, &v, &t), 0);
    cr_assert_eq(t.ptr, doc + 2); /* a view of the input */
    cr_assert_eq(t.len, 5);
    cr_assert_eq(keep.n, 0);

    cr_assert_eq(js_elem(&s), 1);
    cr_assert_eq(js_value(&s, &v), 0);
    cr_assert(v.escaped);
    cr_assert_eq(js_string(&keep, &v, &t), 0);
    cr_assert_eq(t.len, strlen("a\nb \xc3\xa9 \xf0\x9f\x98\x80 \"q\""));
    cr_assert(!memcmp(t.ptr, "a\nb \xc3\xa9 \xf0\x9f\x98\x80 \"q\"", t.len));
    cr_assert_eq(keep.n, 1);

    cr_assert_eq(js_elem(&s), 1);
    cr_assert_eq(js_value(&s, &v), 0);
    cr_assert_eq(js_string(&keep, &v, &t), 0);
    cr_assert_eq(t.len, 2);
    cr_assert(!memcmp(t.ptr, "\0x", 2));

    cr_assert_eq(js_elem(&s), 0);
    cr_assert_eq(js_end(&s), 0);
    js_keep_release(&keep);
    cr_assert_eq(keep.n, 0);
    cr_assert_null(keep.tok);
}

Test(json_scan, decode_hands_json_c_just_the_span)
{
    static const char doc[] = "{\"usage\":{\"prompt_tokens\":62,\"d\":[1.5]},\"n\":7,\"z\":null}";
    json_scan s;
    js_val k, v;
    js_keep keep;
    json_object *o;
    int i;
    js_init(&s, doc, sizeof(doc) - 1, 4);
    js_keep_init(&keep, 4);
    cr_assert_eq(js_begin(&s, '{'), 0);
    cr_assert_eq(js_member(&s, &k), 1);
    cr_assert_eq(js_value(&s, &v), 0);
    cr_assert_eq(js_decode(&keep, &v, &o), 0);
    cr_assert(json_object_is_type(o, json_type_object));
    cr_assert_str_eq(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
                     "{\"prompt_tokens\":62,\"d\":[1.5]}");
    cr_assert_eq(js_member(&s, &k), 1);
    cr_assert_eq(js_value(&s, &v), 0);
    cr_assert_eq(js_decode(&keep, &v, &o), 0); /* a bare number needs its end signalled */
    cr_assert_eq(json_object_get_int64(o), 7);
    cr_assert_eq(js_member(&s, &k), 1);
    cr_assert_eq(js_value(&s, &v), 0);
    cr_assert_eq(js_decode(&keep, &v, &o), 0);
    cr_assert_null(o);
    cr_assert_eq(keep.n, 2);
    /* a full keep refuses more */
    for (i = keep.n; i < JS_KEEP_MAX; i++)
        cr_assert_eq(js_decode(&keep, &(js_val){JS_NUMBER, 0, "1", 1}, &o), 0);
    cr_assert_eq(js_decode(&keep, &(js_val){JS_NUMBER, 0, "1", 1}, &o), -1);
    js_keep_release(&keep);
}

Test(json_scan, sums_are_held_at_the_int64_range)
{
    cr_assert_eq(js_add_sat(62, 1000), 1062);
    cr_assert_eq(js_add_sat(-5, 3), -2);
    cr_assert_eq(js_add_sat(INT64_MAX, 1), INT64_MAX);
    cr_assert_eq(js_add_sat(INT64_MAX - 1, 1), INT64_MAX);
    cr_assert_eq(js_add_sat(INT64_MIN, -1), INT64_MIN);
    cr_assert_eq(js_add_sat(INT64_MIN, INT64_MAX), -1);
}

/* ---- the word-at-a-time string and whitespace scans against byte-at-a-time references */

/* js_scan_string as it was written before it read words: one byte at a time. */
static int ref_scan_string(const char *p, size_t n, size_t *i, int *escaped)
{
    size_t k = *i + 1;
    *escaped = 0;
    for (;;) {
        unsigned char c;
        if (k >= n)
            return -1;
        c = (unsigned char)p[k];
        if (c == '"')
            break;
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            *escaped = 1;
            if (++k >= n)
                return -1;
            switch (p[k]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                break;
            case 'u':
                if (n - k < 5 || !js_hex(p[k + 1]) || !js_hex(p[k + 2]) || !js_hex(p[k + 3]) ||
                    !js_hex(p[k + 4]))
                    return -1;
                k += 4;
                break;
            default:
                return -1;
            }
        }
        k++;
    }
    *i = k + 1;
    return 0;
}

static size_t ref_skip_ws(const char *p, size_t n, size_t i)
{
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    return i;
}

/* Scans p[0..n) (a string opening at p[at]) with both, from a heap copy of exactly n bytes
 * (so that ASan sees any read past n); asserts the same answer. Returns js_scan_string's. */
static int same_scan(const char *p, size_t n, size_t at, const char *what, size_t off)
{
    char *copy = malloc(n ? n : 1);
    size_t ia = at, ib = at;
    int ea = -7, eb = -7, ra, rb;
    cr_assert(copy);
    memcpy(copy, p, n);
    ra = js_scan_string(copy, n, &ia, &ea);
    rb = ref_scan_string(copy, n, &ib, &eb);
    free(copy);
    cr_assert_eq(ra, rb, "%s at %zu, %zu bytes: rc %d vs %d", what, off, n, ra, rb);
    if (!ra) {
        cr_assert_eq(ia, ib, "%s at %zu, %zu bytes: ends at %zu vs %zu", what, off, n, ia, ib);
        cr_assert_eq(ea, eb, "%s at %zu, %zu bytes: escaped %d vs %d", what, off, n, ea, eb);
    } else {
        cr_assert_eq(ia, at, "%s at %zu, %zu bytes: moved on a refusal", what, off, n);
    }
    return ra;
}

/* What goes at the offset under test: the end of the string, each escape (good and bad),
 * control bytes, and bytes that must pass as they are (0x7f, >= 0x80, the edges of the
 * special ranges). */
static const struct {
    const char *bytes;
    size_t len;
} SPECIALS[] = {
    {"\"", 1}, {"\\\"", 2}, {"\\\\", 2}, {"\\/", 2}, {"\\b", 2}, {"\\f", 2}, {"\\n", 2},
    {"\\r", 2}, {"\\t", 2}, {"\\u00e9", 6}, {"\\uD83D\\uDE00", 12}, {"\\uABCF", 6},
    {"\\u12G4", 6}, {"\\u12", 4}, {"\\x", 2}, {"\\0", 2}, {"\\", 1}, {"\\\\\\", 3},
    {"\0", 1}, {"\x01", 1}, {"\t", 1}, {"\n", 1}, {"\x1f", 1}, {" ", 1}, {"!", 1}, {"#", 1},
    {"[", 1}, {"]", 1}, {"\x7f", 1}, {"\x80", 1}, {"\xa2", 1}, {"\xdc", 1}, {"\xff", 1},
    {"\xc3\xa9", 2}, {"\x9f\x22", 2}, {"\xdc\x5c\x6e", 3}, {"\"\"", 2}, {"\x20\x1f", 2},
};

/* Fillers around the special byte: plain ASCII, and high bytes whose lanes a borrow could
 * confuse (0x80, 0xa0, 0xdc, 0xff: each is '"', ' ' or '\\' with the high bit set, or all
 * bits). */
static const char FILLERS[] = {'a', ' ', '\x80', '\xa2', '\xdc', '\xff', '~', '0'};

Test(json_scan, string_scan_agrees_at_every_offset_and_length)
{
    char buf[64];
    size_t s, f, off, tail, n;
    for (s = 0; s < sizeof(SPECIALS) / sizeof(SPECIALS[0]); s++) {
        for (f = 0; f < sizeof(FILLERS); f++) {
            for (off = 0; off <= 20; off++) {
                for (tail = 0; tail <= 20; tail++) {
                    size_t o = 0;
                    buf[o++] = '"';
                    memset(buf + o, FILLERS[f], off);
                    o += off;
                    memcpy(buf + o, SPECIALS[s].bytes, SPECIALS[s].len);
                    o += SPECIALS[s].len;
                    memset(buf + o, FILLERS[(f + 1) % sizeof(FILLERS)], tail);
                    o += tail;
                    buf[o++] = '"';
                    buf[o++] = ',';
                    cr_assert_lt(o, sizeof(buf));
                    /* every truncation of it too, down to the lone opening quote */
                    for (n = 1; n <= o; n++)
                        same_scan(buf, n, 0, SPECIALS[s].bytes, off);
                }
            }
        }
    }
}

Test(json_scan, string_scan_finds_the_end_at_every_length)
{
    char buf[80];
    size_t len, at, n;
    int escaped;
    for (at = 0; at < 3; at++) {
        for (len = 0; len <= 60; len++) {
            size_t i = at, o;
            memset(buf, 'x', at);
            o = at;
            buf[o++] = '"';
            memset(buf + o, 'a' + (int)(len % 26), len);
            o += len;
            buf[o++] = '"';
            cr_assert_eq(same_scan(buf, o, at, "plain", len), 0);
            cr_assert_eq(js_scan_string(buf, o, &i, &escaped), 0);
            cr_assert_eq(i, o, "%zu bytes from %zu", len, at);
            cr_assert_eq(escaped, 0);
            for (n = at + 1; n < o; n++)
                cr_assert_eq(same_scan(buf, n, at, "truncated", len), -1);
        }
    }
}

/* Random strings over a small alphabet dense in special bytes, at random offsets. */
Test(json_scan, string_scan_agrees_on_random_strings)
{
    static const char alphabet[] = "aZ \"\\\\\\/bfnrtu0123456789AbCdEfG\x01\x1f\x7f\x80\xa2\xdc"
                                   "\xff\x22\x5c";
    unsigned seed = 12345;
    char buf[48];
    int trial;
    for (trial = 0; trial < 200000; trial++) {
        size_t len, k, at;
        seed = seed * 1103515245u + 12345u;
        len = 1 + (seed >> 16) % (sizeof(buf) - 1);
        at = (seed >> 8) % 4 < len ? (seed >> 8) % 4 : 0;
        for (k = 0; k < len; k++) {
            seed = seed * 1103515245u + 12345u;
            buf[k] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
        }
        buf[at] = '"';
        same_scan(buf, len, at, "random", (size_t)trial);
    }
}

Test(json_scan, whitespace_skip_agrees_at_every_length)
{
    static const char ws[] = {' ', '\t', '\n', '\r'};
    char buf[64];
    size_t run, at, w, n;
    for (w = 0; w < sizeof(ws); w++) {
        for (at = 0; at <= 20; at++) {
            for (run = 0; run <= 40; run++) {
                size_t o = 0, k;
                memset(buf, 'x', at);
                o = at;
                /* mostly spaces (the indentation of pretty-printed JSON), one other byte */
                for (k = 0; k < run; k++)
                    buf[o++] = k == run / 3 ? ws[w] : ' ';
                buf[o++] = '"';
                for (n = 0; n <= o; n++) {
                    char *copy = malloc(n ? n : 1);
                    size_t start = at < n ? at : n;
                    cr_assert(copy);
                    memcpy(copy, buf, n);
                    cr_assert_eq(js_skip_ws(copy, n, start), ref_skip_ws(copy, n, start),
                                 "run %zu from %zu, %zu bytes", run, at, n);
                    free(copy);
                }
            }
        }
    }
    /* bytes next to the whitespace ones are not whitespace */
    cr_assert_eq(js_skip_ws("\x0b", 1, 0), 0);
    cr_assert_eq(js_skip_ws("\x0c", 1, 0), 0);
    cr_assert_eq(js_skip_ws("\x08", 1, 0), 0);
    cr_assert_eq(js_skip_ws("\x21", 1, 0), 0);
    cr_assert_eq(js_skip_ws("\xa0", 1, 0), 0);
    cr_assert_eq(js_skip_ws("        \xa0", 9, 0), 8);
}

/* Keys are told apart by their first byte before anything else: that must not change which
 * keys match. */
Test(json_scan, key_is_matches_exactly)
{
    cr_assert(js_key_is(&(js_val){JS_STRING, 0, "\"\"", 2}, ""));
    cr_assert_not(js_key_is(&(js_val){JS_STRING, 0, "\"\"", 2}, "a"));
    cr_assert_not(js_key_is(&(js_val){JS_STRING, 0, "\"a\"", 3}, ""));
    cr_assert(js_key_is(&(js_val){JS_STRING, 0, "\"a\"", 3}, "a"));
    cr_assert_not(js_key_is(&(js_val){JS_STRING, 0, "\"b\"", 3}, "a"));
    cr_assert_not(js_key_is(&(js_val){JS_STRING, 0, "\"ab\"", 4}, "a"));
    cr_assert_not(js_key_is(&(js_val){JS_STRING, 0, "\"a\"", 3}, "ab"));
    cr_assert_not(js_key_is(&(js_val){JS_NUMBER, 0, "\"a\"", 3}, "a"));
    cr_assert(js_key_is(&(js_val){JS_STRING, 0, "\"usage\"", 7}, "usage"));
    cr_assert_not(js_key_is(&(js_val){JS_STRING, 0, "\"usagf\"", 7}, "usage"));
}

/* ---- js_unescape against json-c, the oracle it must match byte for byte */

/* json-c's text for the JSON string p[0..n) (quotes included), read through
 * js_tokener_parse as every site reads it: 0 with a malloc'd copy in *out, or -1 when json-c
 * refuses it. */
static int jsonc_string(const char *p, size_t n, char **out, size_t *len)
{
    json_tokener *tok = json_tokener_new_ex(8);
    json_object *o;
    int rc = -1;
    cr_assert(tok);
    o = js_tokener_parse(tok, p, n, NULL);
    if (json_tokener_get_error(tok) == json_tokener_success &&
        json_object_is_type(o, json_type_string)) {
        *len = (size_t)json_object_get_string_len(o);
        *out = malloc(*len + 1);
        cr_assert(*out);
        memcpy(*out, json_object_get_string(o), *len);
        rc = 0;
    }
    json_object_put(o);
    json_tokener_free(tok);
    return rc;
}

/* Unescapes the string p[0..n) from a heap copy of exactly n bytes into a heap buffer of
 * exactly n - 2 (so that ASan sees any access past either), after the scanner took it whole;
 * compares with json-c. Returns js_unescape's answer: -1 is only allowed for a lone
 * surrogate, where json-c writes U+FFFD (the caller says whether there is one). */
static int same_unescape(const char *p, size_t n, int lone, const char *what)
{
    char *copy = malloc(n), *out = malloc(n - 2 ? n - 2 : 1), *want = NULL;
    size_t i = 0, len = 0, want_len = 0;
    js_val v = {JS_STRING, 0, NULL, n};
    int esc, rc;
    cr_assert(copy && out);
    memcpy(copy, p, n);
    cr_assert_eq(js_scan_string(copy, n, &i, &esc), 0, "%s: not a string", what);
    cr_assert_eq(i, n, "%s: not one string", what);
    v.ptr = copy;
    v.escaped = esc;
    rc = js_unescape(&v, out, n - 2, &len);
    cr_assert_eq(jsonc_string(copy, n, &want, &want_len), 0, "%s: json-c refused", what);
    if (lone) {
        cr_assert_eq(rc, -1, "%s: a lone surrogate decoded", what);
        cr_assert(memmem(want, want_len, "\xef\xbf\xbd", 3), "%s: json-c wrote no U+FFFD",
                  what);
    } else {
        cr_assert_eq(rc, 0, "%s: refused", what);
        cr_assert_eq(len, want_len, "%s: %zu bytes vs json-c's %zu", what, len, want_len);
        cr_assert(!memcmp(out, want, len), "%s: other bytes than json-c's", what);
        cr_assert(len <= n - 2, "%s: longer than its source", what);
    }
    free(want);
    free(out);
    free(copy);
    return rc;
}

Test(json_scan, unescape_matches_json_c_for_every_code_unit)
{
    char buf[32];
    long cp;
    for (cp = 0; cp <= 0xFFFF; cp++) {
        int lone = cp >= 0xD800 && cp <= 0xDFFF;
        int n = snprintf(buf, sizeof(buf), cp & 1 ? "\"a\\u%04lX b\"" : "\"\\u%04lx\"", cp);
        same_unescape(buf, (size_t)n, lone, buf);
    }
}

Test(json_scan, unescape_matches_json_c_for_surrogate_pairs)
{
    char buf[40];
    long hi, lo;
    for (hi = 0xD800; hi <= 0xDBFF; hi++) {
        for (lo = 0xDC00; lo <= 0xDFFF; lo += hi % 7 + 1) {
            int n = snprintf(buf, sizeof(buf), "\"x\\u%04lx\\u%04lX\"", hi, lo);
            same_unescape(buf, (size_t)n, 0, buf);
        }
        snprintf(buf, sizeof(buf), "\"\\u%04lx\\uDFFF tail\"", hi);
        same_unescape(buf, strlen(buf), 0, buf);
    }
}

Test(json_scan, unescape_leaves_every_lone_surrogate)
{
    static const char *const lone[] = {
        "\"\\ud800\"", "\"\\uDBFF\"", "\"\\udc00\"", "\"\\uDFFF\"", "\"\\ud800x\"",
        "\"\\ud800\\n\"", "\"\\ud800\\\\\"", "\"\\ud800\\u0041\"", "\"\\ud800\\ud800\\udc00\"",
        "\"\\udc00\\ud800\"", "\"\\ud83d\\ude00\\ud800\"", "\"ok \\ud83d\"", "\"\\ud83d \\ude00\"",
        "\"\\ud83d\\\\ude00\"", "\"\\ud83d\\uE000\"", "\"\\ud83d\\uDBFF\"",
        "\"\\ud836\\udc00\\udc00\"", "\"\\\\ud836\\udc00\"",
    };
    size_t i;
    for (i = 0; i < sizeof(lone) / sizeof(lone[0]); i++)
        same_unescape(lone[i], strlen(lone[i]), 1, lone[i]);
}

Test(json_scan, unescape_decodes_each_short_escape_and_passes_bytes)
{
    static const char *const ok[] = {
        "\"\"", "\"plain\"", "\"\\\"\"", "\"\\\\\"", "\"\\/\"", "\"\\b\\f\\n\\r\\t\"",
        "\"a\\nb \\\"q\\\" back\\\\slash \\/ caf\\u00e9 \\ud83d\\ude00 ctl\\u0001 nul\\u0000end\"",
        "\"caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80 stray \xff \x80 \x7f bytes\\n\"",
        "\"{\\\"location\\\": \\\"San Francisco, CA\\\", \\\"unit\\\": \\\"fahrenheit\\\"}\"",
        "\"\\u0080\\u07FF\\u0800\\uFFFF\\uE000\\uD7FF\"", "\"\\\\u0041\"", "\"\\\\\\\\\"",
        "\"\\ud836\\udc00 \\uD837\\uDFFF \\ud876\\ude00 x \\udbf7\\udc00\"",
    };
    size_t i;
    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        same_unescape(ok[i], strlen(ok[i]), 0, ok[i]);
}

/* Random strings of escapes (every kind, hex digits of either case) and raw bytes, long
 * enough to take the word-at-a-time runs between them. */
Test(json_scan, unescape_matches_json_c_on_random_strings)
{
    static const char *const pieces[] = {
        "a", "Z", " ", "~", "\x7f", "\x80", "\xc3\xa9", "\xff", "\xdc", "\\\"", "\\\\", "\\/",
        "\\b", "\\f", "\\n", "\\r", "\\t", "\\u0000", "\\u001f", "\\u0041", "\\u00E9",
        "\\u07ff", "\\u0800", "\\u20AC", "\\uffff", "\\uD83D\\uDE00", "\\udbff\\udfff",
        "\\ud800\\udc00", "\\uD836\\uDC00", "\\udbf7\\udfff", "0123456789abcdef",
        "plain words here",
    };
    unsigned seed = 4242;
    char buf[512];
    int trial;
    for (trial = 0; trial < 20000; trial++) {
        size_t o = 0, k, np;
        seed = seed * 1103515245u + 12345u;
        np = (seed >> 16) % 24;
        buf[o++] = '"';
        for (k = 0; k < np; k++) {
            const char *pc;
            seed = seed * 1103515245u + 12345u;
            pc = pieces[(seed >> 16) % (sizeof(pieces) / sizeof(pieces[0]))];
            memcpy(buf + o, pc, strlen(pc));
            o += strlen(pc);
        }
        buf[o++] = '"';
        cr_assert_lt(o, sizeof(buf));
        same_unescape(buf, o, 0, "random");
    }
}

Test(json_scan, unescape_refuses_what_does_not_fit_or_is_not_a_string)
{
    static const char s[] = "\"ab\\u00e9\\ud83d\\ude00\\n\\u0041\"";
    const js_val v = {JS_STRING, 1, s, sizeof(s) - 1};
    char out[64], want[] = "ab\xc3\xa9\xf0\x9f\x98\x80\nA";
    size_t cap, len = 99;
    /* every room short of the text is refused without a byte written past it */
    for (cap = 0; cap <= sizeof(want) - 1; cap++) {
        memset(out, '#', sizeof(out));
        len = 99;
        cr_assert_eq(js_unescape(&v, cap ? out : NULL, cap, &len),
                     cap < sizeof(want) - 1 ? -1 : 0, "cap %zu", cap);
        cr_assert_eq(out[cap], '#', "cap %zu: wrote past the room", cap);
    }
    cr_assert_eq(len, sizeof(want) - 1);
    cr_assert(!memcmp(out, want, len));
    /* not a string, or not a valid one (the scanner would have refused these) */
    cr_assert_eq(js_unescape(&(js_val){JS_NUMBER, 0, "12", 2}, out, sizeof(out), &len), -1);
    cr_assert_eq(js_unescape(&(js_val){JS_STRING, 0, "\"", 1}, out, sizeof(out), &len), -1);
    cr_assert_eq(js_unescape(&(js_val){JS_STRING, 1, "\"\\x\"", 4}, out, sizeof(out), &len), -1);
    cr_assert_eq(js_unescape(&(js_val){JS_STRING, 1, "\"\\\"", 3}, out, sizeof(out), &len), -1);
    cr_assert_eq(js_unescape(&(js_val){JS_STRING, 1, "\"\\u12\"", 6}, out, sizeof(out), &len),
                 -1);
    cr_assert_eq(js_unescape(&(js_val){JS_STRING, 1, "\"\\u12G4\"", 8}, out, sizeof(out), &len),
                 -1);
    cr_assert_eq(js_unescape(&(js_val){JS_STRING, 0, "\"a\x01\"", 4}, out, sizeof(out), &len),
                 -1);
    cr_assert_eq(js_unescape(&(js_val){JS_STRING, 0, "\"a\"b\"", 5}, out, sizeof(out), &len),
                 -1);
    /* the empty string */
    cr_assert_eq(js_unescape(&(js_val){JS_STRING, 0, "\"\"", 2}, NULL, 0, &len), 0);
    cr_assert_eq(len, 0);
}

/* ---- the pairs json-c 0.16 decodes wrong (U+1D800..U+1DFFF...), read right */

Test(json_scan, unescape_keeps_characters_json_c_would_replace)
{
    char buf[64], out[64], want[64];
    size_t i, len;
    for (i = 0; i < N_PAIR_CASES; i++) {
        int n = snprintf(buf, sizeof(buf), "\"a%sb\"", PAIR_CASES[i].esc);
        js_val v = {JS_STRING, 1, buf, (size_t)n};
        snprintf(want, sizeof(want), "a%sb", PAIR_CASES[i].utf8);
        cr_assert_eq(js_unescape(&v, out, (size_t)n - 2, &len), 0, "%s", buf);
        cr_assert_eq(len, strlen(want), "%s", buf);
        cr_assert(!memcmp(out, want, len), "%s", buf);
    }
}

/* js_string (json-c, for an escaped string) and js_decode (a whole sub-value). */
Test(json_scan, string_and_decode_keep_characters_json_c_would_replace)
{
    char doc[96], want[64];
    size_t i;
    for (i = 0; i < N_PAIR_CASES; i++) {
        json_scan s;
        js_val k, v;
        js_keep keep;
        compass_str t;
        json_object *o, *q;
        snprintf(doc, sizeof(doc), "{\"s\":\"a%sb\",\"o\":{\"q\":\"a%sb\"}}", PAIR_CASES[i].esc,
                 PAIR_CASES[i].esc);
        snprintf(want, sizeof(want), "a%sb", PAIR_CASES[i].utf8);
        js_init(&s, doc, strlen(doc), 4);
        js_keep_init(&keep, 4);
        cr_assert_eq(js_begin(&s, '{'), 0);
        cr_assert_eq(js_member(&s, &k), 1);
        cr_assert_eq(js_value(&s, &v), 0);
        cr_assert_eq(js_string(&keep, &v, &t), 0);
        cr_assert_eq(t.len, strlen(want), "%s", doc);
        cr_assert(!memcmp(t.ptr, want, t.len), "%s", doc);
        cr_assert_eq(js_member(&s, &k), 1);
        cr_assert_eq(js_value(&s, &v), 0);
        cr_assert_eq(js_decode(&keep, &v, &o), 0);
        cr_assert(json_object_object_get_ex(o, "q", &q));
        cr_assert_str_eq(json_object_get_string(q), want, "%s", doc);
        js_keep_release(&keep);
    }
}

Test(json_scan, bad_pair_finds_just_the_pairs_json_c_decodes_wrong)
{
    static const struct {
        const char *text;
        size_t at; /* where the first such pair starts; (size_t)-1 for none */
    } cases[] = {
        {"x\\uD836\\uDC00", 1},          {"\\ud836\\udc00", 0},
        {"\\uDBF7\\uDFFF", 0},           {"\\\\uD836\\uDC00", (size_t)-1},
        {"\\\\\\uD836\\uDC00", 2},       {"\\uD800\\uD836\\uDC00", 6},
        {"\\uDC00\\uD836\\uDC00", 6},    {"\\u0041\\uD836\\uDC00", 6},
        {"\\uD83D\\uDE00\\uD877\\uDFFF", 12}, {"\\n\\uD836\\uDC00", 2},
        {"\\uD836\\uDC0", (size_t)-1},   {"\\uD836 \\uDC00", (size_t)-1},
        {"\\uD836\\uDBFF", (size_t)-1},  {"\\uD836\\\\uDC00", (size_t)-1},
        {"\\uD83D\\uDE00", (size_t)-1},  {"\\uDBFF\\uDFFF", (size_t)-1},
        {"\"\\uD836\\uDC00\"", 1},       {"", (size_t)-1},
    };
    char buf[16];
    long hi, lo;
    size_t i;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = strlen(cases[i].text);
        cr_assert_eq(js_bad_pair(cases[i].text, n, 0), cases[i].at == (size_t)-1 ? n : cases[i].at,
                     "%s", cases[i].text);
    }
    /* every pair: just those whose code point has its low 16 bits in D800..DFFF */
    for (hi = 0xD800; hi <= 0xDBFF; hi++)
        for (lo = 0xDC00; lo <= 0xDFFF; lo++) {
            long cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
            int bad = cp % 0x10000 >= 0xD800 && cp % 0x10000 <= 0xDFFF;
            snprintf(buf, sizeof(buf), hi & 1 ? "\\u%04lX\\u%04lx" : "\\u%04lx\\u%04lX", hi, lo);
            cr_assert_eq(js_bad_pair(buf, 12, 0), bad ? 0u : 12u, "%s", buf);
        }
}

Test(json_scan, fix_pairs_writes_them_as_utf8_in_place)
{
    static const char in[] = "[\"\\uD836\\uDC00\\uD877\\uDFFF\",\"x\\\\uD836\\uDC00\\uDBF7"
                             "\\uDC00y\\uD83D\\uDE00\",{\"\\ud836\\udfff\":0}]";
    static const char want[] = "[\"\xF0\x9D\xA0\x80\xF0\xAD\xBF\xBF\",\"x\\\\uD836\\uDC00"
                               "\xF4\x8D\xB0\x80y\\uD83D\\uDE00\",{\"\xF0\x9D\xAF\xBF\":0}]";
    char buf[sizeof(in)];
    size_t n = sizeof(in) - 1, k = js_bad_pair(in, n, 0), m;
    cr_assert_eq(k, 2);
    memcpy(buf, in, n);
    m = js_fix_pairs(buf, n, k);
    cr_assert_eq(m, sizeof(want) - 1);
    cr_assert(!memcmp(buf, want, m));
    cr_assert_eq(js_bad_pair(buf, m, 0), m);
}

/* The decoded text of element i of array a. */
static const char *elem_str(json_object *a, size_t i)
{
    json_object *e = json_object_array_get_idx(a, i);
    cr_assert(json_object_is_type(e, json_type_string), "element %zu", i);
    return json_object_get_string(e);
}

Test(json_scan, tokener_parse_reads_the_pairs_right)
{
    static const char doc[] =
        "{\"\\uD836\\uDC00\":[\"a\\uD836\\uDC00b\",\"\\uD877\\uDFFF\\uDBFF\\uDFFF\","
        "\"\\uD83D\\uDE00\",\"\\\\uD836\\\\uDC00\",\"\\uD836\\uDC00\\uDC00\","
        "\"\\uD800\\uD836\\uDC00\"]} \n";
    json_tokener *tok = json_tokener_new_ex(8);
    json_object *o, *a;
    size_t end = 0;
    cr_assert(tok);
    o = js_tokener_parse(tok, doc, sizeof(doc) - 1, &end);
    cr_assert_eq(json_tokener_get_error(tok), json_tokener_success);
    cr_assert_eq(end, sizeof(doc) - 1);
    cr_assert(json_object_object_get_ex(o, "\xF0\x9D\xA0\x80", &a), "the key");
    cr_assert_str_eq(elem_str(a, 0), "a\xF0\x9D\xA0\x80" "b");
    cr_assert_str_eq(elem_str(a, 1), "\xF0\xAD\xBF\xBF\xF4\x8F\xBF\xBF");
    cr_assert_str_eq(elem_str(a, 2), "\xF0\x9F\x98\x80");
    cr_assert_str_eq(elem_str(a, 3), "\\uD836\\uDC00");
    /* the lone surrogates next to a pair keep json-c's U+FFFD */
    cr_assert_str_eq(elem_str(a, 4), "\xF0\x9D\xA0\x80\xEF\xBF\xBD");
    cr_assert_str_eq(elem_str(a, 5), "\xEF\xBF\xBD\xF0\x9D\xA0\x80");
    json_object_put(o);
    json_tokener_free(tok);
}

/* js_tokener_parse and a plain json_tokener_parse_ex on p[0..n) from a heap copy of exactly n
 * bytes (so that ASan sees any read past n): the same error and the same parse end, and the
 * same continuation when the text may go on. Returns the error. */
static enum json_tokener_error same_parse(const char *p, size_t n, const char *what)
{
    char *copy = malloc(n ? n : 1);
    json_tokener *ta = json_tokener_new_ex(8), *tb = json_tokener_new_ex(8);
    json_object *oa, *ob;
    enum json_tokener_error ea, eb;
    size_t end = 0;
    cr_assert(copy && ta && tb);
    memcpy(copy, p, n);
    oa = js_tokener_parse(ta, copy, n, &end);
    ob = json_tokener_parse_ex(tb, copy, (int)n);
    ea = json_tokener_get_error(ta);
    eb = json_tokener_get_error(tb);
    cr_assert_eq(ea, eb, "%s (%zu bytes): %s vs %s", what, n, json_tokener_error_desc(ea),
                 json_tokener_error_desc(eb));
    cr_assert_eq(end, json_tokener_get_parse_end(tb), "%s (%zu bytes): end", what, n);
    cr_assert_eq(!oa, !ob, "%s (%zu bytes)", what, n);
    if (ea == json_tokener_continue) {
        json_object_put(json_tokener_parse_ex(ta, " ", 1));
        json_object_put(json_tokener_parse_ex(tb, " ", 1));
        cr_assert_eq(json_tokener_get_error(ta), json_tokener_get_error(tb), "%s (%zu bytes)",
                     what, n);
    }
    json_object_put(oa);
    json_object_put(ob);
    json_tokener_free(ta);
    json_tokener_free(tb);
    free(copy);
    return ea;
}

/* Text json-c refuses, or ends before its last bytes, keeps json-c's own error and offset:
 * the callers' messages name them. */
Test(json_scan, tokener_parse_errors_stay_json_c_own)
{
    static const char *const bad[] = {
        "{\"a\":\"\\uD836\\uDC00\"} x",        "{\"a\":\"\\uD836\\uDC00\"}}",
        "{\"a\":\"\\uD836\\uDC00\" \"b\"}",     "{\"a\":\"\\uD836\\uDC00\\x\"}",
        "[\"\\uD836\\uDC00\", tru]",           "[\"\\uD836\\uDC00\"",
        "\"\\uD836\\uDC00\" \"\\uD877\\uDFFF\"", "1 \"\\uD836\\uDC00\"",
        "[\"\\uD836\\uDC00\",]",               "/* \\uD836\\uDC00 */ [1] x",
        "\\uD836\\uDC00",                      "[\"\\uD836\\uDC00\"]\n\\uD836\\uDC00",
    };
    size_t i;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        same_parse(bad[i], strlen(bad[i]), bad[i]);
    same_parse("[\"\\uD836\\uDC00\"]\0 ", 18, "a NUL after the value");
    same_parse("[\"\\uD836\\uDC00\0\"]", 17, "a NUL in the string");
}

/* Every truncated prefix of a body with pairs: no read past its end (ASan), and json-c's
 * own answer for each, but the whole body, which reads right. */
Test(json_scan, tokener_parse_reads_no_byte_past_any_prefix)
{
    static const char body[] =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\\uD836\\uDC00b "
        "\\\\uD836 \\uD877\\uDFFF\\uD836\"}],\"k\\uDBFF\\uDFFF\":\"\\uD836\\uDC00\"}";
    size_t n, len = sizeof(body) - 1;
    for (n = 0; n < len; n++) {
        char *copy = malloc(n ? n : 1);
        size_t k;
        cr_assert(copy);
        memcpy(copy, body, n);
        k = js_bad_pair(copy, n, 0);
        cr_assert_leq(k, n);
        if (k < n)
            cr_assert_leq(js_fix_pairs(copy, n, k), n);
        free(copy);
        cr_assert_neq(same_parse(body, n, "prefix"), json_tokener_success, "%zu bytes", n);
    }
    {
        json_tokener *tok = json_tokener_new_ex(8);
        json_object *o, *v;
        size_t end = 0;
        cr_assert(tok);
        o = js_tokener_parse(tok, body, len, &end);
        cr_assert_eq(end, len);
        cr_assert(json_object_object_get_ex(o, "k\xF4\x8F\xBF\xBF", &v));
        cr_assert_str_eq(json_object_get_string(v), "\xF0\x9D\xA0\x80");
        json_object_put(o);
        json_tokener_free(tok);
    }
}
