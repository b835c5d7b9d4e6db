/* Incremental splitter for text/event-stream and NDJSON bodies. */
#ifndef COMPASS_CORE_SSE_H
#define COMPASS_CORE_SSE_H

#include <compass/plugin.h>

#include "buf.h"

/** Called once per complete event; a non-zero return stops feeding and is returned. */
typedef int (*cps_sse_cb)(void *ud, const compass_stream_event *ev);

typedef struct cps_sse {
    int format;        /* COMPASS_STREAM_SSE or COMPASS_STREAM_NDJSON */
    size_t max_event;  /* an event larger than this fails with COMPASS_ELIMIT */
    cps_buf line;      /* partial line carried between feeds */
    cps_buf event, data, id;
    int has_data;
} cps_sse;

void cps_sse_init(cps_sse *s, int format, size_t max_event);
void cps_sse_free(cps_sse *s);
/** Feeds n bytes; calls cb for each complete event. Returns 0, cb's non-zero value, or
 *  COMPASS_ELIMIT / COMPASS_ENOMEM. */
int cps_sse_feed(cps_sse *s, const char *p, size_t n, cps_sse_cb cb, void *ud);
/** At end of body: NDJSON dispatches a last line with no newline; an SSE event not closed by
 *  a blank line is incomplete and dropped, as EventSource does. Returns as cps_sse_feed. */
int cps_sse_finish(cps_sse *s, cps_sse_cb cb, void *ud);

#endif
