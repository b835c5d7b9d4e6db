#include "buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <compass/plugin.h>

#include "json_scan.h" /* js_plain_run: the SWAR run finder the JSON code shares */

void cps_buf_init(cps_buf *b)
{
    b->ptr = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}

void cps_buf_free(cps_buf *b)
{
    free(b->ptr);
    cps_buf_init(b);
}

void cps_buf_reset(cps_buf *b)
{
    b->len = 0;
    b->oom = 0;
    if (b->ptr)
        b->ptr[0] = '\0';
}

int cps_buf_reserve(cps_buf *b, size_t extra)
{
    if (b->oom)
        return COMPASS_ENOMEM;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) {
        if (cap > ((size_t)-1) / 2) {
            b->oom = 1;
            return COMPASS_ENOMEM;
        }
        cap *= 2;
    }
    char *p = realloc(b->ptr, cap);
    if (!p) {
        b->oom = 1;
        return COMPASS_ENOMEM;
    }
    b->ptr = p;
    b->cap = cap;
    return 0;
}

int cps_buf_append(cps_buf *b, const void *p, size_t n)
{
    if (cps_buf_reserve(b, n))
        return COMPASS_ENOMEM;
    if (n)
        memcpy(b->ptr + b->len, p, n);
    b->len += n;
    b->ptr[b->len] = '\0';
    return 0;
}

int cps_buf_puts(cps_buf *b, const char *s)
{
    return cps_buf_append(b, s, strlen(s));
}

int cps_buf_vprintf(cps_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        return COMPASS_EINVAL;
    }
    if ((size_t)n < sizeof(tmp))
        return cps_buf_append(b, tmp, (size_t)n);
    if (cps_buf_reserve(b, (size_t)n))
        return COMPASS_ENOMEM;
    vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int cps_buf_printf(cps_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = cps_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void cps_str_copy(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strnlen(src, cap - 1) : 0;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

int cps_buf_put_i64(cps_buf *b, long long v)
{
    char tmp[24], *p = tmp + sizeof(tmp);
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return cps_buf_append(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

int cps_buf_json_str(cps_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;
    if (cps_buf_reserve(b, n + 2))
        return COMPASS_ENOMEM;
    b->ptr[b->len++] = '"';
    for (;;) {
        size_t run = js_plain_run(s, n, i, 0);
        const char *esc = NULL;
        char u[6];
        unsigned char c;
        if (cps_buf_append(b, s + i, run - i))
            return COMPASS_ENOMEM;
        if (run == n)
            break;
        c = (unsigned char)s[run];
        i = run + 1;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0';
            u[4] = hex[c >> 4]; u[5] = hex[c & 15];
            break;
        }
        if (esc ? cps_buf_append(b, esc, 2) : cps_buf_append(b, u, 6))
            return COMPASS_ENOMEM;
    }
    if (cps_buf_append(b, "\"", 1))
        return COMPASS_ENOMEM;
    return 0;
}

void cps_buf_consume(cps_buf *b, size_t n)
{
    if (n >= b->len) {
        cps_buf_reset(b);
        return;
    }
    memmove(b->ptr, b->ptr + n, b->len - n);
    b->len -= n;
    b->ptr[b->len] = '\0';
}
