/*
 * json_scan: a strict JSON (RFC 8259) structure scanner shared by provider plugins
 * (header-only, like json_util.h: each plugin compiles its own copy, since a plugin may link
 * no other plugin). Include after <compass/plugin.h>.
 *
 * It walks the bytes in place: js_member yields an object's members one key at a time,
 * js_elem an array's elements, and js_value consumes one value (skipping a container whole)
 * and says where it lies and what type it is. Nothing is allocated and nothing is decoded;
 * every byte walked over, skipped or not, is validated against the grammar, so a value it
 * accepts is one json-c accepts too. It is stricter than json-c (which takes comments,
 * trailing commas, raw control characters in strings, NaN, single quotes...): to a caller,
 * a refusal only means "take the general path". Like json-c it does not validate UTF-8:
 * bytes >= 0x80 pass through as they are.
 *
 * Strings with no backslash can be used as views of the input; a string with escapes, a
 * number that is not a plain short integer, or a whole sub-value the caller wants as a tree
 * is handed to json-c with js_decode, on just that value's bytes.
 *
 * Use:
 *   json_scan s; js_val k, v; int r;
 *   js_init(&s, p, n, 128);
 *   if (js_begin(&s, '{')) goto bad;
 *   while ((r = js_member(&s, &k)) > 0) {
 *       if (js_key_is(&k, "id")) { if (js_value(&s, &v)) goto bad; ... }
 *       else if (js_skip(&s)) goto bad;
 *   }
 *   if (r < 0 || js_end(&s)) goto bad;
 */
#ifndef COMPASS_PROVIDERS_JSON_SCAN_H
#define COMPASS_PROVIDERS_JSON_SCAN_H

#include <json-c/json.h>

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef enum js_type {
    JS_NONE = 0, /* absent (a member not seen) */
    JS_NULL,
    JS_FALSE,
    JS_TRUE,
    JS_NUMBER,
    JS_STRING,
    JS_ARRAY,
    JS_OBJECT
} js_type;

/* A value (or a key) found by the scanner: its raw bytes in the input (a string with its
 * quotes, a container with its brackets). Borrowed from the scanned buffer. */
typedef struct js_val {
    js_type type;
    int escaped; /* a string (or key) that holds a backslash escape */
    const char *ptr;
    size_t len;
} js_val;

typedef struct json_scan {
    const char *p;
    size_t n;
    size_t i;      /* the next byte to read */
    int depth;     /* containers entered with js_begin and not yet closed */
    int max_depth; /* nesting allowed, counting every container from the top */
    int first;     /* just after '{' or '[': no ',' may come yet */
} json_scan;

static inline void js_init(json_scan *s, const char *p, size_t n, int max_depth)
{
    s->p = p;
    s->n = p ? n : 0;
    s->i = 0;
    s->depth = 0;
    s->max_depth = max_depth;
    s->first = 0;
}

static inline int js_is_ws(char c)
{
    /* one compare rules out every byte that starts a value or is punctuation */
    return (unsigned char)c <= ' ' && (c == ' ' || c == '\t' || c == '\n' || c == '\r');
}

/* The walking calls (js_member) sit in every caller's loop: inlined, the scanner's state
 * stays in registers across an object, which GCC does not do by itself for a function this
 * size. */
#if defined(__GNUC__)
#define JS_HOT inline __attribute__((always_inline))
#define JS_COLD __attribute__((noinline, unused))
#define JS_RARE __attribute__((cold, noinline, unused)) /* placed away from the hot code */
#else
#define JS_HOT inline
#define JS_COLD inline
#define JS_RARE inline
#endif

/* ---- several bytes at a time
 *
 * SWAR (SIMD within a register): 8 input bytes in one uint64_t, loaded with memcpy (any
 * alignment, no aliasing question; compilers make it one load). Each test sets the high bit
 * of every byte lane that holds what it looks for; a borrow can also set it in lanes above a
 * true hit, never below one. So a mask that is 0 means no lane hits, the OR of several masks
 * still has its lowest set bit on a true hit, and on a little-endian machine that bit marks
 * the first such byte in memory. Elsewhere (or without a count-trailing-zeros builtin) the
 * word only says "look closer" and the bytes are walked one at a time from there. */

#define JS_SWAR_ONES UINT64_C(0x0101010101010101)
#define JS_SWAR_HIGHS UINT64_C(0x8080808080808080)

/* JS_SWAR_PORTABLE takes the byte walk everywhere (to test it on a little-endian machine). */
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
    !defined(JS_SWAR_PORTABLE)
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define JS_SWAR_FIRST 1
#endif
#endif

static inline uint64_t js_swar_load(const char *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof(w));
    return w;
}

/* The borrow terms of the tests: lanes of w below b (1 <= b <= 0x80) once ANDed with ~w and
 * the high bits; lanes of w equal to b (b < 0x80) once w ^ b is. Tests for bytes without the
 * high bit share that ~w (x ^ b has the high bits of x), so a mask of several is
 * (term | term | ...) & ~w & JS_SWAR_HIGHS. */
static inline uint64_t js_swar_below(uint64_t w, unsigned b)
{
    return w - JS_SWAR_ONES * b;
}

static inline uint64_t js_swar_equal(uint64_t w, unsigned b)
{
    return (w ^ (JS_SWAR_ONES * b)) - JS_SWAR_ONES;
}

/* Lanes of w holding '"', '\\' or a control byte: what a string cannot hold as it is. One
 * test takes both '"' and the control bytes: x ^ 2 is below 0x21 just for x below 0x20 (which
 * it shuffles among themselves) and for 0x22 (which it makes 0x20). */
static inline uint64_t js_swar_str_special(uint64_t w)
{
    return (js_swar_below(w ^ (JS_SWAR_ONES * 2), 0x21) | js_swar_equal(w, '\\')) & ~w &
           JS_SWAR_HIGHS;
}

#ifdef JS_SWAR_FIRST
/* The offset in memory of the first lane mask m (not 0) flags. */
static inline size_t js_swar_first(uint64_t m)
{
    return (size_t)__builtin_ctzll(m) >> 3;
}
#endif

/* Whether a[0..n) and b[0..n) hold the same bytes: memcmp for the short keys of JSON
 * objects, inline, a word (or the overlapping last word) at a time. */
static inline int js_bytes_eq(const char *a, const char *b, size_t n)
{
    size_t j;
    uint32_t x, y, x2, y2;
    if (n >= 8) {
        for (j = 0; j + 8 < n; j += 8)
            if (js_swar_load(a + j) != js_swar_load(b + j))
                return 0;
        return js_swar_load(a + n - 8) == js_swar_load(b + n - 8);
    }
    if (n >= 4) {
        memcpy(&x, a, 4);
        memcpy(&y, b, 4);
        memcpy(&x2, a + n - 4, 4);
        memcpy(&y2, b + n - 4, 4);
        return x == y && x2 == y2;
    }
    /* 0, n / 2 and n - 1 cover every byte of 1 to 3 */
    return n == 0 || (a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1]);
}

/* The index of the first byte at or after i that is not JSON whitespace. */
static inline size_t js_skip_ws(const char *p, size_t n, size_t i)
{
    while (i < n && js_is_ws(p[i])) {
        i++;
        /* pretty-printed JSON indents with runs of spaces */
        while (n - i >= 8 && js_swar_load(p + i) == JS_SWAR_ONES * ' ')
            i += 8;
    }
    return i;
}

static inline int js_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static inline int js_hex(char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* Whether a string may not hold byte c as it is: its end, an escape or a control byte. */
static inline int js_str_special(unsigned char c)
{
    return c == '"' || c == '\\' || c < 0x20;
}

/* The index of the first byte at or after k (k <= n) that is '"', '\\' or a control byte, or
 * (when del is set) DEL; n when there is none. Never reads p[n] or past it. The readers here
 * stop at these bytes, and the JSON writers of the core and the plugins (which also escape
 * DEL) copy the runs between them: all of them share this one loop. */
static inline size_t js_plain_run(const char *p, size_t n, size_t k, int del)
{
    for (; n - k >= 8; k += 8) {
        uint64_t w = js_swar_load(p + k);
        uint64_t m = js_swar_str_special(w);
        if (del)
            m |= js_swar_equal(w, 0x7f) & ~w & JS_SWAR_HIGHS;
        if (m) {
#ifdef JS_SWAR_FIRST
            return k + js_swar_first(m);
#else
            break;
#endif
        }
    }
    while (k < n && !js_str_special((unsigned char)p[k]) && !(del && p[k] == 0x7f))
        k++;
    return k;
}

/* The index of the first byte at or after k (k <= n) that js_str_special flags; n when none
 * does. Never reads p[n] or past it. */
static inline size_t js_str_run(const char *p, size_t n, size_t k)
{
    return js_plain_run(p, n, k, 0);
}

/* js_scan_string from p[k], the first byte js_str_run flags after the opening quote. */
static inline int js_scan_string_at(const char *p, size_t n, size_t *i, int *escaped, size_t k)
{
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
        /* a backslash */
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
        k = js_str_run(p, n, k + 1);
    }
    *i = k + 1;
    return 0;
}

/* A string whose opening quote is at p[*i]; *i ends one past the closing quote. Sets
 * *escaped when it holds a backslash. 0, or -1 when it is not a valid JSON string. */
static inline int js_scan_string(const char *p, size_t n, size_t *i, int *escaped)
{
    size_t k = js_str_run(p, n, *i + 1);
    /* most strings hold no escape: their first flagged byte is the closing quote */
    if (k < n && p[k] == '"') {
        *escaped = 0;
        *i = k + 1;
        return 0;
    }
    return js_scan_string_at(p, n, i, escaped, k);
}

/* A number at p[*i] (-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?); *i ends after it. What
 * may follow it is checked by the caller's grammar (a ',', a bracket, whitespace, the end). */
static inline int js_scan_number(const char *p, size_t n, size_t *i)
{
    size_t k = *i, d;
    if (k < n && p[k] == '-')
        k++;
    if (k >= n || !js_is_digit(p[k]))
        return -1;
    if (p[k] == '0')
        k++;
    else
        while (k < n && js_is_digit(p[k]))
            k++;
    if (k < n && p[k] == '.') {
        for (d = ++k; k < n && js_is_digit(p[k]); k++)
            ;
        if (k == d)
            return -1;
    }
    if (k < n && (p[k] == 'e' || p[k] == 'E')) {
        k++;
        if (k < n && (p[k] == '+' || p[k] == '-'))
            k++;
        for (d = k; k < n && js_is_digit(p[k]); k++)
            ;
        if (k == d)
            return -1;
    }
    *i = k;
    return 0;
}

static JS_COLD int js_scan_container(const char *p, size_t n, size_t *i, int depth,
                                     int max_depth);

/* One value at p[*i] (whitespace already skipped) inside depth open containers; *i ends one
 * past it. Fills v (may be NULL). 0, or -1 on bad JSON or nesting deeper than max_depth. */
static inline int js_scan_value(const char *p, size_t n, size_t *i, int depth, int max_depth,
                                js_val *v)
{
    size_t k = *i, start = k;
    int escaped = 0;
    js_type t;
    if (k >= n)
        return -1;
    switch (p[k]) {
    case '"':
        if (js_scan_string(p, n, &k, &escaped))
            return -1;
        t = JS_STRING;
        break;
    case '{':
    case '[':
        t = p[k] == '{' ? JS_OBJECT : JS_ARRAY;
        if (js_scan_container(p, n, &k, depth, max_depth))
            return -1;
        break;
    case 't':
    case 'f':
    case 'n': {
        static const char *const lit[] = {"null", "false", "true"};
        static const unsigned char lit_len[] = {4, 5, 4};
        size_t ll;
        t = p[k] == 't' ? JS_TRUE : p[k] == 'f' ? JS_FALSE : JS_NULL;
        ll = lit_len[t - JS_NULL];
        if (n - k < ll || !js_bytes_eq(p + k, lit[t - JS_NULL], ll))
            return -1;
        k += ll;
        break;
    }
    default:
        if (js_scan_number(p, n, &k))
            return -1;
        t = JS_NUMBER;
        break;
    }
    if (v) {
        v->type = t;
        v->escaped = escaped;
        v->ptr = p + start;
        v->len = k - start;
    }
    *i = k;
    return 0;
}

/* The object or array opening at p[*i], skipped whole. Kept out of line: most values are
 * scalars, and they are read without this loop's frame. */
static JS_COLD int js_scan_container(const char *p, size_t n, size_t *i, int depth,
                                     int max_depth)
{
    size_t k = *i;
    char close = p[k] == '{' ? '}' : ']';
    if (depth >= max_depth)
        return -1;
    k = js_skip_ws(p, n, k + 1);
    if (k < n && p[k] == close) {
        *i = k + 1;
        return 0;
    }
    for (;;) {
        if (close == '}') {
            int key_escaped;
            if (k >= n || p[k] != '"' || js_scan_string(p, n, &k, &key_escaped))
                return -1;
            k = js_skip_ws(p, n, k);
            if (k >= n || p[k] != ':')
                return -1;
            k = js_skip_ws(p, n, k + 1);
        }
        if (js_scan_value(p, n, &k, depth + 1, max_depth, NULL))
            return -1;
        k = js_skip_ws(p, n, k);
        if (k >= n)
            return -1;
        if (p[k] == close) {
            *i = k + 1;
            return 0;
        }
        if (p[k] != ',')
            return -1;
        k = js_skip_ws(p, n, k + 1);
    }
}

/* Whether p[0..n) is exactly one JSON value, whitespace around it allowed. */
static inline int js_is_json(const char *p, size_t n, int max_depth)
{
    size_t i;
    if (!p)
        return 0;
    i = js_skip_ws(p, n, 0);
    if (js_scan_value(p, n, &i, 0, max_depth, NULL))
        return 0;
    return js_skip_ws(p, n, i) == n;
}

/* ---- walking */

/* The type of the next value, without consuming it; JS_NONE when no value can start there. */
static inline js_type js_peek(json_scan *s)
{
    s->i = js_skip_ws(s->p, s->n, s->i);
    if (s->i >= s->n)
        return JS_NONE;
    switch (s->p[s->i]) {
    case '{': return JS_OBJECT;
    case '[': return JS_ARRAY;
    case '"': return JS_STRING;
    case 't': return JS_TRUE;
    case 'f': return JS_FALSE;
    case 'n': return JS_NULL;
    default: return s->p[s->i] == '-' || js_is_digit(s->p[s->i]) ? JS_NUMBER : JS_NONE;
    }
}

/* Consumes one whole value; v (may be NULL) says where it lies. 0 or -1. */
static inline int js_value(json_scan *s, js_val *v)
{
    s->i = js_skip_ws(s->p, s->n, s->i);
    if (js_scan_value(s->p, s->n, &s->i, s->depth, s->max_depth, v))
        return -1;
    s->first = 0;
    return 0;
}

static inline int js_skip(json_scan *s)
{
    return js_value(s, NULL);
}

/* Enters the object ('{') or array ('[') that comes next. 0, or -1 when something else comes
 * or the nesting is too deep. */
static inline int js_begin(json_scan *s, char open)
{
    s->i = js_skip_ws(s->p, s->n, s->i);
    if (s->i >= s->n || s->p[s->i] != open || s->depth >= s->max_depth)
        return -1;
    s->i++;
    s->depth++;
    s->first = 1;
    return 0;
}

/* Before the next member or element: 1 when one follows, 0 when close was consumed (the
 * container is left), -1 on bad JSON. */
static inline int js_next(json_scan *s, char close)
{
    const char *p = s->p;
    size_t n = s->n, i = js_skip_ws(p, n, s->i);
    if (i >= n)
        return -1;
    if (p[i] == close) {
        s->i = i + 1;
        s->depth--;
        s->first = 0;
        return 0;
    }
    if (!s->first) {
        if (p[i] != ',')
            return -1;
        i = js_skip_ws(p, n, i + 1);
    }
    s->i = i;
    s->first = 0;
    return 1;
}

/* The next member of the object entered with js_begin(s, '{'): 1 with key filled (its value
 * comes next: read it with js_value/js_skip or enter it with js_begin), 0 at the end of the
 * object, -1 on bad JSON. */
static JS_HOT int js_member(json_scan *s, js_val *key)
{
    const char *p = s->p;
    size_t n = s->n, start, i, end;
    int r = js_next(s, '}'), escaped;
    if (r <= 0)
        goto none;
    start = i = s->i;
    r = -1;
    if (i >= n || p[i] != '"' || js_scan_string(p, n, &i, &escaped))
        goto none;
    end = i;
    if (i >= n || p[i] != ':') { /* compact JSON has the colon right there */
        i = js_skip_ws(p, n, i);
        if (i >= n || p[i] != ':')
            goto none;
    }
    s->i = i + 1;
    key->type = JS_STRING;
    key->escaped = escaped;
    key->ptr = p + start;
    key->len = end - start;
    return 1;
none: /* no key: an empty one, never stale bytes */
    key->type = JS_NONE;
    key->escaped = 0;
    key->ptr = NULL;
    key->len = 0;
    return r;
}

/* The next element of the array entered with js_begin(s, '['): 1 when one follows (read it
 * next), 0 at the end of the array, -1 on bad JSON. */
static inline int js_elem(json_scan *s)
{
    return js_next(s, ']');
}

/* 0 when nothing but whitespace is left after the top-level value, else -1. */
static inline int js_end(json_scan *s)
{
    return s->depth == 0 && js_skip_ws(s->p, s->n, s->i) == s->n ? 0 : -1;
}

/* Reads a member's value into slot; -1 when slot is already filled: the key came twice
 * (json-c keeps the last value; a caller leaves such input to its general path). */
static inline int js_take(json_scan *s, js_val *slot)
{
    return slot->type != JS_NONE ? -1 : js_value(s, slot);
}

/* ---- reading what was found */

/* Whether key (or string value) k is exactly lit, with no escapes. */
static inline int js_key_is(const js_val *k, const char *lit)
{
    size_t n;
    if (k->type != JS_STRING || k->escaped)
        return 0;
    /* its first byte tells most keys apart before strlen (a raw string holds no NUL) */
    if (k->len > 2 && k->ptr[1] != lit[0])
        return 0;
    n = strlen(lit);
    return k->len == n + 2 && !memcmp(k->ptr + 1, lit, n);
}

/* A key looked for, with its length, so that a table of them is searched without strlen:
 * most keys are told apart by their length alone. Write them with JS_KEY("name"). */
typedef struct js_key {
    const char *name;
    size_t len;
} js_key;

/* "" lit "" does not compile for a pointer, whose sizeof would not be the length. */
#define JS_KEY(lit) {"" lit "", sizeof(lit) - 1}

/* The index in keys[0..n) of the one key k (a raw key: the caller refuses escaped ones) is,
 * or n when it is none of them. */
static inline size_t js_key_index(const js_val *k, const js_key *keys, size_t n)
{
    size_t i, len = k->len - 2;
    for (i = 0; i < n; i++)
        if (keys[i].len == len && js_bytes_eq(k->ptr + 1, keys[i].name, len))
            return i;
    return n;
}

/* The next member of the object entered with js_begin(s, '{'), as js_member, with its key
 * looked up in keys[0..n): 1 with *ki its index (n for a key none of them names; read or skip
 * its value next), 0 at the end of the object, -1 on bad JSON or an escaped key (it might
 * spell one of keys, and json-c compares the decoded text). */
static inline int js_member_key(json_scan *s, const js_key *keys, size_t n, size_t *ki)
{
    js_val k;
    int r = js_member(s, &k);
    if (r <= 0)
        return r;
    if (k.escaped)
        return -1;
    *ki = js_key_index(&k, keys, n);
    return 1;
}

/* Reads the object that comes next, keeping the members keys[0..n) names in slots (which the
 * caller zeroes: a slot left JS_NONE was absent) and skipping the others. 0, or -1 on bad
 * JSON, an escaped key (it might spell a kept one) or a kept key that comes twice (json-c
 * keeps the last). */
static inline int js_members_k(json_scan *s, const js_key *keys, js_val *slots, size_t n)
{
    size_t i;
    int r;
    if (js_begin(s, '{'))
        return -1;
    while ((r = js_member_key(s, keys, n, &i)) > 0)
        if (i < n ? js_take(s, &slots[i]) : js_skip(s))
            return -1;
    return r;
}

/* The text of a string without escapes (the bytes between its quotes). */
static inline compass_str js_text(const js_val *v)
{
    compass_str r;
    r.ptr = v->ptr + 1;
    r.len = v->len - 2;
    return r;
}

/* A number that is a plain integer of at most 18 digits (so exact in an int64): 1 with *out
 * set, as json-c would read it; 0 for any other number (decode those with json-c). */
static inline int js_small_int(const js_val *v, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    int64_t r = 0;
    if (v->type != JS_NUMBER)
        return 0;
    if (v->ptr[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (v->len - i > 18)
        return 0;
    for (; i < v->len; i++) {
        unsigned d = (unsigned char)v->ptr[i] - (unsigned)'0';
        if (d > 9)
            return 0;
        r = r * 10 + (int64_t)d;
    }
    *out = neg ? -r : r;
    return 1;
}

/* a + b held at the int64 range, for sums of numbers read from upstream bytes (json-c reads
 * a too large integer as INT64_MAX). */
static inline int64_t js_add_sat(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b)
        return INT64_MIN;
    return a + b;
}

/* ---- decoding escaped strings without json-c */

/* The value of the 4 hex digits at p, or -1 when one is not a hex digit. */
static inline long js_hex4(const char *p)
{
    long r = 0;
    int i;
    for (i = 0; i < 4; i++) {
        unsigned c = (unsigned char)p[i], d;
        if (c - '0' < 10)
            d = c - '0';
        else if ((c | 0x20) - 'a' < 6)
            d = (c | 0x20) - 'a' + 10;
        else
            return -1;
        r = r << 4 | (long)d;
    }
    return r;
}

/* ---- the surrogate pairs json-c 0.16 decodes wrong
 *
 * json-c decodes an escaped pair to its code point, then tests that again for a surrogate
 * with a 16-bit mask: a code point whose low 16 bits fall in D800..DFFF (U+1D800..U+1DFFF,
 * U+2D800..U+2DFFF, ... U+10D800..U+10DFFF: Sutton SignWriting, CJK Extension F...) comes out
 * as U+FFFD. Python's json.dumps sends such characters as escaped pairs. js_unescape decodes
 * them itself; js_tokener_parse, through which every json-c parse of a client's or an
 * upstream's text goes, hands them to json-c as raw UTF-8, which JSON allows in a string. */

/* The code point of the escaped pair at p[0..12): a high surrogate escape right before a low
 * one. -1 when p holds no such pair. */
static inline long js_pair_cp(const char *p)
{
    long hi, lo;
    if (p[0] != '\\' || p[1] != 'u' || (hi = js_hex4(p + 2)) < 0xD800 || hi > 0xDBFF ||
        p[6] != '\\' || p[7] != 'u' || (lo = js_hex4(p + 8)) < 0xDC00 || lo > 0xDFFF)
        return -1;
    return 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
}

/* Writes code point cp (U+10000..U+10FFFF) as its 4 bytes of UTF-8 at out. */
static inline void js_utf8_4(char *out, long cp)
{
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
}

/* The index in p[k..n) of the first escaped pair json-c decodes wrong, n when there is none;
 * k is not inside an escape. Only backslashes are looked at: in a string each starts an
 * escape whose next byte starts none (so "\\uD836" holds no pair), and outside strings a
 * backslash is not JSON at all (json-c refuses the text, and js_tokener_parse then hands it
 * the bytes as they are). Never reads p[n] or past it. */
static inline size_t js_bad_pair(const char *p, size_t n, size_t k)
{
    const char *b;
    /* a pair takes 12 bytes: no backslash after p[n - 12] starts one */
    while (n - k >= 12 && (b = memchr(p + k, '\\', n - k - 11)) != NULL) {
        long cp = js_pair_cp(b);
        k = (size_t)(b - p);
        if (cp >= 0 && (cp & 0xF800) == 0xD800)
            return k;
        k += 2; /* the hex digits of a \u escape hold no backslash either */
    }
    return n;
}

/* Rewrites p[0..n) in place from k, the first pair js_bad_pair found there: each pair json-c
 * decodes wrong becomes its 4 bytes of UTF-8, every other byte stays. The new length. */
static inline size_t js_fix_pairs(char *p, size_t n, size_t k)
{
    size_t o = k, next;
    while (k < n) {
        js_utf8_4(p + o, js_pair_cp(p + k));
        o += 4;
        k += 12;
        next = js_bad_pair(p, n, k);
        memmove(p + o, p + k, next - k);
        o += next - k;
        k = next;
    }
    return o;
}

/* Decodes string v (a JS_STRING as the scanner found it, quotes included) into out[0..cap)
 * byte for byte as json-c 0.16 decodes it, except for the pairs above, which it decodes
 * right (as json-c does through js_tokener_parse): the eight short escapes, \uXXXX as UTF-8
 * (\u0000 as a NUL byte), a high surrogate escape followed by a low one as one 4-byte
 * sequence, and every other byte as it is (json-c does not validate UTF-8 either). The text
 * is never longer than the bytes between the quotes (v->len - 2), so that much room always
 * suffices. 0 with *len set, or -1 when it does not fit in cap, is not a valid string, or
 * holds a lone surrogate (json-c writes U+FFFD for it: decode those with js_string). */
static inline int js_unescape(const js_val *v, char *out, size_t cap, size_t *len)
{
    const char *p;
    size_t n, i = 0, o = 0, k;
    if (v->type != JS_STRING || v->len < 2)
        return -1;
    p = v->ptr + 1;
    n = v->len - 2;
    for (;;) {
        long cp;
        char c;
        /* in a valid string body, the first flagged byte is a backslash or the end */
        k = js_str_run(p, n, i);
        if (k - i > cap - o)
            return -1;
        if (k > i) /* out may be NULL when cap is 0 */
            memcpy(out + o, p + i, k - i);
        o += k - i;
        if (k == n)
            break;
        if (p[k] != '\\' || n - k < 2)
            return -1;
        c = p[k + 1];
        i = k + 2;
        switch (c) {
        case '"': case '\\': case '/': break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u':
            if (n - i < 4 || (cp = js_hex4(p + i)) < 0)
                return -1;
            i += 4;
            if (cp >= 0xD800 && cp <= 0xDFFF) {
                /* a low half first, or a high one without its low half: lone */
                if (n - k < 12 || (cp = js_pair_cp(p + k)) < 0)
                    return -1;
                i = k + 12;
                if (cap - o < 4)
                    return -1;
                js_utf8_4(out + o, cp);
                o += 4;
            } else if (cp < 0x80) {
                if (cap - o < 1)
                    return -1;
                out[o++] = (char)cp;
            } else if (cp < 0x800) {
                if (cap - o < 2)
                    return -1;
                out[o++] = (char)(0xC0 | (cp >> 6));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            } else {
                if (cap - o < 3)
                    return -1;
                out[o++] = (char)(0xE0 | (cp >> 12));
                out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            }
            continue;
        default:
            return -1;
        }
        if (cap - o < 1)
            return -1;
        out[o++] = c;
    }
    *len = o;
    return 0;
}

/* ---- decoding spans with json-c */

#define JS_KEEP_MAX 16

/* The json-c objects decoded while reading one event, released together by js_keep_release
 * once nothing borrows from them any more. */
typedef struct js_keep {
    json_tokener *tok;
    int max_depth;
    int n;
    json_object *objs[JS_KEEP_MAX];
} js_keep;

static inline void js_keep_init(js_keep *k, int max_depth)
{
    k->tok = NULL;
    k->max_depth = max_depth;
    k->n = 0;
}

static inline void js_keep_release(js_keep *k)
{
    int i;
    for (i = 0; i < k->n; i++)
        json_object_put(k->objs[i]);
    k->n = 0;
    if (k->tok)
        json_tokener_free(k->tok);
    k->tok = NULL;
}

/* js_tokener_parse on p[0..n), whose first pair json-c decodes wrong is at p[k]: parses a
 * copy holding the pairs as raw UTF-8. 1 with *out when that copy is one value with only
 * whitespace after it; else 0, with tok reset for p as it is. */
static JS_RARE int js_tokener_parse_copy(json_tokener *tok, const char *p, size_t n, size_t k,
                                         json_object **out, size_t *end)
{
    char *c = malloc(n);
    size_t m, e;
    if (!c)
        return 0;
    memcpy(c, p, n);
    m = js_fix_pairs(c, n, k);
    *out = json_tokener_parse_ex(tok, c, (int)m);
    e = json_tokener_get_parse_end(tok);
    if (json_tokener_get_error(tok) == json_tokener_success && js_skip_ws(c, m, e) == m) {
        free(c);
        if (end)
            *end = e + (n - m); /* the bytes taken out all lie before e */
        return 1;
    }
    free(c);
    json_object_put(*out);
    json_tokener_reset(tok);
    return 0;
}

/* json_tokener_parse_ex(tok, p, n) on a whole text, with the pairs json-c decodes wrong (see
 * js_bad_pair) read right; *end (may be NULL) gets json_tokener_get_parse_end, counted in p.
 * A text without such a pair (nearly every one: a memchr finds no backslash) is parsed as it
 * is. Another is parsed from a copy; when that copy is not one value with only whitespace
 * after it, or there is no memory for it, p is parsed as it is instead, so that every error
 * (its message, its byte offset) stays json-c's own on p. n <= INT_MAX. */
static inline json_object *js_tokener_parse(json_tokener *tok, const char *p, size_t n,
                                            size_t *end)
{
    size_t k = js_bad_pair(p, n, 0);
    json_object *o;
    if (k < n && js_tokener_parse_copy(tok, p, n, k, &o, end))
        return o;
    o = json_tokener_parse_ex(tok, p, (int)n);
    if (end)
        *end = json_tokener_get_parse_end(tok);
    return o;
}

/* Decodes the value v with json-c; *out (NULL for a JSON null) lives until js_keep_release.
 * 0, or -1 when json-c refuses it, runs out of memory, or k is full. */
static inline int js_decode(js_keep *k, const js_val *v, json_object **out)
{
    json_object *o;
    *out = NULL;
    if (v->type == JS_NULL)
        return 0;
    if (k->n >= JS_KEEP_MAX || v->len > (size_t)INT_MAX - 1)
        return -1;
    if (!k->tok) {
        k->tok = json_tokener_new_ex(k->max_depth);
        if (!k->tok)
            return -1;
    } else {
        json_tokener_reset(k->tok);
    }
    o = js_tokener_parse(k->tok, v->ptr, v->len, NULL);
    if (json_tokener_get_error(k->tok) == json_tokener_continue)
        o = json_tokener_parse_ex(k->tok, "", 1); /* a number needs its end signalled */
    if (json_tokener_get_error(k->tok) != json_tokener_success || !o) {
        json_object_put(o);
        return -1;
    }
    k->objs[k->n++] = o;
    *out = o;
    return 0;
}

/* The text of string v: a view of the input when it has no escapes, else decoded by json-c
 * (kept in k). 0 or -1. */
static inline int js_string(js_keep *k, const js_val *v, compass_str *out)
{
    json_object *o;
    if (!v->escaped) {
        *out = js_text(v);
        return 0;
    }
    if (js_decode(k, v, &o) || !json_object_is_type(o, json_type_string))
        return -1;
    out->ptr = json_object_get_string(o);
    out->len = (size_t)json_object_get_string_len(o);
    return 0;
}

/* The int64 json-c's json_object_get_int64 gives for number v. 0 or -1. */
static inline int js_int64(js_keep *k, const js_val *v, int64_t *out)
{
    json_object *o;
    if (js_small_int(v, out))
        return 0;
    if (v->type != JS_NUMBER || js_decode(k, v, &o))
        return -1;
    *out = json_object_get_int64(o);
    return 0;
}

#endif
