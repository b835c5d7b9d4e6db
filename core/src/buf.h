/* Growable byte buffer. Always NUL-terminated after a successful append. */
#ifndef COMPASS_CORE_BUF_H
#define COMPASS_CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct cps_buf {
    char *ptr;
    size_t len, cap;
    int oom; /* set once an append failed; later appends are no-ops */
} cps_buf;

void cps_buf_init(cps_buf *b);
void cps_buf_free(cps_buf *b);
void cps_buf_reset(cps_buf *b);
int cps_buf_reserve(cps_buf *b, size_t extra);
int cps_buf_append(cps_buf *b, const void *p, size_t n);
int cps_buf_puts(cps_buf *b, const char *s);
int cps_buf_printf(cps_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cps_buf_vprintf(cps_buf *b, const char *fmt, va_list ap);
/** Copies NUL-terminated src (NULL: "") into dst[cap], cut to fit and NUL-terminated: what
 *  snprintf(dst, cap, "%s", src) does, without the formatter. cap > 0. */
void cps_str_copy(char *dst, size_t cap, const char *src);
/** Appends v in decimal (what printf's %lld writes), without the formatter. */
int cps_buf_put_i64(cps_buf *b, long long v);
/** Appends s as a JSON string literal, quotes included. */
int cps_buf_json_str(cps_buf *b, const char *s, size_t n);
/** Drops the first n bytes. */
void cps_buf_consume(cps_buf *b, size_t n);

#endif
