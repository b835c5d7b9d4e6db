/*
 * Small helpers the mockllm provider handlers share: a growable string buffer, UTF-8 and
 * text checks, JSON setters. Header-only (static inline) so each handler file stays
 * self-contained.
 */
#ifndef MOCKLLM_UTIL_H
#define MOCKLLM_UTIL_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool failed;
} sbuf;

static inline bool put_null(json_object *o, const char *k)
{
    return o && json_object_object_add(o, k, NULL) == 0;
}

static inline bool append(json_object *a, json_object *v)
{
    if (!a || !v) {
        json_object_put(v);
        return false;
    }
    if (json_object_array_add(a, v) != 0) {
        json_object_put(v);
        return false;
    }
    return true;
}

static inline json_object *str(const char *s)
{
    return json_object_new_string(s ? s : "");
}

static inline bool is_type(json_object *v, json_type t)
{
    return v && json_object_is_type(v, t);
}

static inline bool streq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

static inline void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (n >= SIZE_MAX / 2 - b->n) { /* the size arithmetic below would wrap */
        b->failed = true;
        return;
    }
    if (b->n + n + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 64;
        while (ncap < b->n + n + 1)
            ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->failed = true;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static inline bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static inline size_t utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

static inline size_t count_words(const char *s)
{
    size_t n = 0;
    bool in = false;
    for (; *s; s++) {
        bool sp = is_space(*s);
        if (!sp && !in)
            n++;
        in = !sp;
    }
    return n;
}

/* Cuts s in place after max_words words (and the spaces before the cut). */
static inline void cut_words(char *s, size_t max_words)
{
    size_t n = 0;
    bool in = false;
    for (char *p = s; *p; p++) {
        bool sp = is_space(*p);
        if (!sp && !in) {
            if (n == max_words) {
                while (p > s && is_space(p[-1]))
                    p--;
                *p = '\0';
                return;
            }
            n++;
        }
        in = !sp;
    }
}

/* The length in bytes of the first n code points of s. */
static inline size_t utf8_prefix(const char *s, size_t n)
{
    size_t i = 0, cps = 0;
    while (s[i]) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (cps == n)
                break;
            cps++;
        }
        i++;
    }
    return i;
}

static inline bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

static inline uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#endif
