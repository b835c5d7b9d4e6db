/*
 * Small helpers (error text, strings, json-c) shared by provider plugins (header-only: each plugin compiles its own
 * copy, since a plugin may link no other plugin). Include after <compass/plugin.h> and
 * <json-c/json.h>.
 */
#ifndef COMPASS_PROVIDERS_JSON_UTIL_H
#define COMPASS_PROVIDERS_JSON_UTIL_H

#include "json_scan.h" /* js_tokener_parse */

#include <limits.h>
#include <stdarg.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Adds v under key; on failure releases v. A NULL v (a failed constructor) fails too. */
static inline int jset(json_object *o, const char *key, json_object *v)
{
    if (!v)
        return -1;
    if (json_object_object_add(o, key, v) != 0) {
        json_object_put(v);
        return -1;
    }
    return 0;
}

static inline json_object *jstr(compass_str s)
{
    if (s.len > (size_t)INT_MAX)
        return NULL;
    return json_object_new_string_len(s.ptr ? s.ptr : "", (int)s.len);
}

/* A double that serialises as the shortest text that reads back the same. */
static inline json_object *jdouble(double d)
{
    char buf[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    return json_object_new_double_s(d, buf);
}

static inline json_object *jget(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (o && json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, key, &v))
        return v;
    return NULL;
}

/* The string at key, or NULL when absent or not a string. */
static inline const char *jgets(json_object *o, const char *key)
{
    json_object *v = jget(o, key);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static inline compass_str jgetstr(json_object *o, const char *key)
{
    json_object *v = jget(o, key);
    compass_str s = {NULL, 0};
    if (v && json_object_is_type(v, json_type_string)) {
        s.ptr = json_object_get_string(v);
        s.len = (size_t)json_object_get_string_len(v);
    }
    return s;
}

/* The integer at key; *found says whether it was there as a number. */
static inline int64_t jgeti(json_object *o, const char *key, int *found)
{
    json_object *v = jget(o, key);
    if (v && (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double))) {
        if (found)
            *found = 1;
        return json_object_get_int64(v);
    }
    if (found)
        *found = 0;
    return 0;
}

/* Parses exactly the n bytes at p as one JSON value (whitespace around it allowed), nested at
 * most depth deep. Returns 0 and *out (NULL for the literal null), or -1 when the text is not
 * one JSON value (or there was no memory to read it). */
static inline int json_parse_n(const char *p, size_t n, int depth, json_object **out)
{
    json_tokener *tok;
    json_object *o;
    enum json_tokener_error e;
    size_t end, i;

    *out = NULL;
    if (!p || n == 0 || n > (size_t)INT_MAX - 1)
        return -1;
    tok = json_tokener_new_ex(depth);
    if (!tok)
        return -1;
    o = js_tokener_parse(tok, p, n, &end);
    e = json_tokener_get_error(tok);
    if (e == json_tokener_continue) {
        /* A bare number is only complete once something follows it. */
        o = json_tokener_parse_ex(tok, " ", 1);
        e = json_tokener_get_error(tok);
        end = n;
    }
    json_tokener_free(tok);
    if (e != json_tokener_success) {
        json_object_put(o);
        return -1;
    }
    for (i = end; i < n; i++) {
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n') {
            json_object_put(o);
            return -1;
        }
    }
    *out = o;
    return 0;
}

static inline int streq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* A compass_str as printf "%.*s" arguments. */
#define STR_ARG(s) (int)((s).len > 200 ? 200 : (s).len), ((s).ptr ? (s).ptr : "")

/* Fills err (may be NULL) with code and a formatted message; returns code. */
static inline int fail(compass_err *err, int code, const char *fmt, ...) COMPASS_PRINTF(3, 4);
static inline int fail(compass_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

static inline int str_has_prefix(compass_str s, const char *p)
{
    size_t n = strlen(p);
    return s.len >= n && strncasecmp(s.ptr, p, n) == 0;
}

static inline int str_is_blank(compass_str s)
{
    size_t i;
    for (i = 0; i < s.len; i++)
        if (s.ptr[i] != ' ' && s.ptr[i] != '\t' && s.ptr[i] != '\r' && s.ptr[i] != '\n')
            return 0;
    return 1;
}

/* Retry-After in ms: delay-seconds (an integer, a fraction tolerated) or an HTTP-date (measured
 * from the host's clock when it has one). -1 when the value is neither. */
static inline int64_t retry_after_ms(const compass_host *h, compass_str v)
{
    char buf[64], *end;
    size_t i = 0, n = v.len;
    double secs;

    while (i < n && (v.ptr[i] == ' ' || v.ptr[i] == '\t'))
        i++;
    while (n > i && (v.ptr[n - 1] == ' ' || v.ptr[n - 1] == '\t'))
        n--;
    if (n == i || n - i >= sizeof(buf))
        return -1;
    memcpy(buf, v.ptr + i, n - i);
    buf[n - i] = '\0';
    if (buf[0] >= '0' && buf[0] <= '9') {
        secs = strtod(buf, &end);
        if (*end != '\0' || secs < 0 || secs > 86400.0 * 365)
            return -1;
        return (int64_t)(secs * 1000.0 + 0.5);
    } else {
        struct tm tm;
        time_t t;
        int64_t now, ms;
        memset(&tm, 0, sizeof(tm));
        end = strptime(buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        if (!end || *end != '\0')
            return -1;
        t = timegm(&tm);
        if (t == (time_t)-1)
            return -1;
        now = h && h->now_ms ? h->now_ms(h) : (int64_t)time(NULL) * 1000;
        ms = (int64_t)t * 1000 - now;
        return ms > 0 ? ms : 0;
    }
}

#endif
