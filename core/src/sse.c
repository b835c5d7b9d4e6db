/* Splits text/event-stream (per the WHATWG EventSource rules: fields event/data/id, comment
 * lines starting with ':', events dispatched on a blank line) and NDJSON bodies into events. */
#include "sse.h"

#include <string.h>

void cps_sse_init(cps_sse *s, int format, size_t max_event)
{
    memset(s, 0, sizeof(*s));
    s->format = format;
    s->max_event = max_event ? max_event : (size_t)1 << 20;
    cps_buf_init(&s->line);
    cps_buf_init(&s->event);
    cps_buf_init(&s->data);
    cps_buf_init(&s->id);
}

void cps_sse_free(cps_sse *s)
{
    cps_buf_free(&s->line);
    cps_buf_free(&s->event);
    cps_buf_free(&s->data);
    cps_buf_free(&s->id);
}

static compass_str as_str(const cps_buf *b)
{
    compass_str r = {b->ptr, b->len};
    return r;
}

static int dispatch(cps_sse *s, cps_sse_cb cb, void *ud)
{
    int rc = 0;
    if (s->has_data || s->event.len) {
        compass_stream_event ev = {as_str(&s->event), as_str(&s->data), as_str(&s->id)};
        if (!ev.data.ptr)
            ev.data.ptr = "";
        rc = cb(ud, &ev);
    }
    cps_buf_reset(&s->event);
    cps_buf_reset(&s->data);
    s->has_data = 0;
    return rc;
}

/* One complete line (without its terminator). */
static int on_line(cps_sse *s, const char *p, size_t n, cps_sse_cb cb, void *ud)
{
    if (s->format == COMPASS_STREAM_NDJSON) {
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (!n)
            return 0;
        compass_stream_event ev = {{"", 0}, {p, n}, {"", 0}};
        return cb(ud, &ev);
    }
    if (n == 0)
        return dispatch(s, cb, ud);
    if (p[0] == ':')
        return 0;
    const char *colon = memchr(p, ':', n);
    size_t fl = colon ? (size_t)(colon - p) : n;
    const char *v = colon ? colon + 1 : p + n;
    size_t vl = colon ? n - fl - 1 : 0;
    if (vl && v[0] == ' ') {
        v++;
        vl--;
    }
    if (fl == 4 && !memcmp(p, "data", 4)) {
        if (s->has_data && cps_buf_append(&s->data, "\n", 1))
            return COMPASS_ENOMEM;
        if (cps_buf_append(&s->data, v, vl))
            return COMPASS_ENOMEM;
        s->has_data = 1;
        if (s->data.len > s->max_event)
            return COMPASS_ELIMIT;
    } else if (fl == 5 && !memcmp(p, "event", 5)) {
        cps_buf_reset(&s->event);
        if (cps_buf_append(&s->event, v, vl))
            return COMPASS_ENOMEM;
    } else if (fl == 2 && !memcmp(p, "id", 2)) {
        cps_buf_reset(&s->id);
        if (cps_buf_append(&s->id, v, vl))
            return COMPASS_ENOMEM;
    }
    return 0; /* retry and unknown fields are ignored */
}

int cps_sse_feed(cps_sse *s, const char *p, size_t n, cps_sse_cb cb, void *ud)
{
    size_t i = 0;
    while (i < n) {
        const char *nl = memchr(p + i, '\n', n - i);
        if (!nl) {
            if (cps_buf_append(&s->line, p + i, n - i))
                return COMPASS_ENOMEM;
            if (s->line.len > s->max_event)
                return COMPASS_ELIMIT;
            return 0;
        }
        size_t seg = (size_t)(nl - (p + i));
        const char *lp;
        size_t ll;
        if (s->line.len) {
            if (cps_buf_append(&s->line, p + i, seg))
                return COMPASS_ENOMEM;
            lp = s->line.ptr;
            ll = s->line.len;
        } else {
            lp = p + i;
            ll = seg;
        }
        if (ll && lp[ll - 1] == '\r')
            ll--;
        int rc = on_line(s, lp, ll, cb, ud);
        cps_buf_reset(&s->line);
        if (rc)
            return rc;
        i += seg + 1;
    }
    return 0;
}

int cps_sse_finish(cps_sse *s, cps_sse_cb cb, void *ud)
{
    int rc = 0;
    if (s->line.len) {
        size_t ll = s->line.len;
        if (s->line.ptr[ll - 1] == '\r')
            ll--;
        rc = on_line(s, s->line.ptr, ll, cb, ud);
        cps_buf_reset(&s->line);
        if (rc)
            return rc;
    }
    /* An SSE event not closed by a blank line is incomplete and discarded (WHATWG). */
    cps_buf_reset(&s->event);
    cps_buf_reset(&s->data);
    s->has_data = 0;
    return rc;
}
