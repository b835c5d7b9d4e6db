/* The stream splitter (core/src/sse.c): text/event-stream per the EventSource rules and NDJSON,
 * independent of how the body is cut into reads. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <string.h>

#include "sse.h"

/* Each event is recorded as "[event]{data}<id>\n". */
typedef struct rec {
    cps_buf out;
    int n;
    int stop_after; /* non-zero: the callback returns 42 at this event */
} rec;

static int on_event(void *ud, const compass_stream_event *ev)
{
    rec *r = ud;
    cps_buf_append(&r->out, "[", 1);
    cps_buf_append(&r->out, ev->event.ptr, ev->event.len);
    cps_buf_append(&r->out, "]{", 2);
    cps_buf_append(&r->out, ev->data.ptr, ev->data.len);
    cps_buf_append(&r->out, "}<", 2);
    cps_buf_append(&r->out, ev->id.ptr, ev->id.len);
    cps_buf_append(&r->out, ">\n", 2);
    r->n++;
    return r->stop_after && r->n == r->stop_after ? 42 : 0;
}

static const char stream[] =
    ": keep-alive comment\r\n"
    "event: message_start\r\n"
    "id: 1\r\n"
    "data: {\"type\":\"message_start\"}\r\n"
    "\r\n"
    "data: line1\n"
    "data: line2\n"
    "data:\n"
    "\n"
    "retry: 100\n"
    "unknown: field\n"
    "data:nospace\n"
    "\n"
    "event: content_block_delta\n"
    "data:  two spaces\n"
    "id: 7\n"
    "\n"
    "data: [DONE]\n"
    "\n";

static const char expected[] =
    "[message_start]{{\"type\":\"message_start\"}}<1>\n"
    "[]{line1\nline2\n}<1>\n"
    "[]{nospace}<1>\n"
    "[content_block_delta]{ two spaces}<7>\n"
    "[]{[DONE]}<7>\n";

/* Feeds stream in chunks whose sizes come from next(); returns the record. */
static void feed_chunks(rec *r, int format, const char *p, size_t n, size_t (*next)(void))
{
    cps_sse s;
    cps_sse_init(&s, format, 0);
    size_t off = 0;
    while (off < n) {
        size_t k = next();
        if (k > n - off)
            k = n - off;
        cr_assert_eq(cps_sse_feed(&s, p + off, k, on_event, r), 0);
        off += k;
    }
    cr_assert_eq(cps_sse_finish(&s, on_event, r), 0);
    cps_sse_free(&s);
}

static size_t one(void)
{
    return 1;
}

static size_t all(void)
{
    return SIZE_MAX;
}

static uint32_t lcg_state;
static size_t lcg(void)
{
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return 1 + (lcg_state >> 16) % 17;
}

Test(sse, whole_body_gives_the_events)
{
    rec r = {0};
    feed_chunks(&r, COMPASS_STREAM_SSE, stream, strlen(stream), all);
    cr_assert_str_eq(r.out.ptr, expected);
    cr_assert_eq(r.n, 5);
    cps_buf_free(&r.out);
}

Test(sse, one_byte_at_a_time_gives_the_same_events)
{
    rec r = {0};
    feed_chunks(&r, COMPASS_STREAM_SSE, stream, strlen(stream), one);
    cr_assert_str_eq(r.out.ptr, expected);
    cps_buf_free(&r.out);
}

Test(sse, random_chunk_sizes_give_the_same_events)
{
    for (uint32_t seed = 1; seed <= 50; seed++) {
        rec r = {0};
        lcg_state = seed;
        feed_chunks(&r, COMPASS_STREAM_SSE, stream, strlen(stream), lcg);
        cr_assert_str_eq(r.out.ptr, expected, "seed %u", seed);
        cps_buf_free(&r.out);
    }
}

Test(sse, crlf_between_events_is_a_blank_line)
{
    rec r = {0};
    const char *s = "data: a\r\n\r\ndata: b\r\n\r\n";
    feed_chunks(&r, COMPASS_STREAM_SSE, s, strlen(s), all);
    cr_assert_str_eq(r.out.ptr, "[]{a}<>\n[]{b}<>\n");
    cps_buf_free(&r.out);
}

Test(sse, comment_only_stream_gives_no_event)
{
    rec r = {0};
    const char *s = ": ping\n\n: ping\n\n";
    feed_chunks(&r, COMPASS_STREAM_SSE, s, strlen(s), one);
    cr_assert_eq(r.n, 0);
    cps_buf_free(&r.out);
}

Test(sse, trailing_event_without_blank_line_is_dropped_at_finish)
{
    rec r = {0};
    const char *s = "data: a\n\ndata: b\n";
    feed_chunks(&r, COMPASS_STREAM_SSE, s, strlen(s), all);
    cr_assert_str_eq(r.out.ptr, "[]{a}<>\n");
    cps_buf_free(&r.out);
}

Test(sse, trailing_line_without_newline_is_dropped_at_finish)
{
    rec r = {0};
    const char *s = "data: a\n\ndata: b";
    feed_chunks(&r, COMPASS_STREAM_SSE, s, strlen(s), one);
    cr_assert_str_eq(r.out.ptr, "[]{a}<>\n");
    cps_buf_free(&r.out);
}

Test(sse, event_over_max_event_is_a_limit_error)
{
    cps_sse s;
    rec r = {0};
    cps_sse_init(&s, COMPASS_STREAM_SSE, 16);
    const char *ok = "data: 0123456789\n\n";
    cr_assert_eq(cps_sse_feed(&s, ok, strlen(ok), on_event, &r), 0);
    cr_assert_eq(r.n, 1);
    /* 20 bytes of data over two lines: each line fits, the event does not */
    const char *big = "data: 0123456789\ndata: 012345678\n";
    cr_assert_eq(cps_sse_feed(&s, big, strlen(big), on_event, &r), COMPASS_ELIMIT);
    cr_assert_eq(r.n, 1);
    cps_sse_free(&s);
    cps_buf_free(&r.out);
}

Test(sse, unterminated_line_over_max_event_is_a_limit_error)
{
    cps_sse s;
    rec r = {0};
    char line[64];
    memset(line, 'x', sizeof(line));
    cps_sse_init(&s, COMPASS_STREAM_SSE, 32);
    cr_assert_eq(cps_sse_feed(&s, "data: ", 6, on_event, &r), 0);
    cr_assert_eq(cps_sse_feed(&s, line, sizeof(line), on_event, &r), COMPASS_ELIMIT);
    cr_assert_eq(r.n, 0);
    cps_sse_free(&s);
    cps_buf_free(&r.out);
}

Test(sse, callback_return_value_stops_the_feed)
{
    cps_sse s;
    rec r = {0};
    r.stop_after = 1;
    cps_sse_init(&s, COMPASS_STREAM_SSE, 0);
    const char *t = "data: a\n\ndata: b\n\n";
    cr_assert_eq(cps_sse_feed(&s, t, strlen(t), on_event, &r), 42);
    cr_assert_eq(r.n, 1);
    cps_sse_free(&s);
    cps_buf_free(&r.out);
}

static const char ndjson[] = "{\"a\":1}\n{\"b\":2}\r\n\n   \n{\"c\":3}  \n{\"d\":4}";

Test(sse, ndjson_lines_are_events_and_the_last_needs_no_newline)
{
    rec r = {0};
    feed_chunks(&r, COMPASS_STREAM_NDJSON, ndjson, strlen(ndjson), all);
    cr_assert_str_eq(r.out.ptr, "[]{{\"a\":1}}<>\n[]{{\"b\":2}}<>\n[]{{\"c\":3}}<>\n"
                                "[]{{\"d\":4}}<>\n");
    cps_buf_free(&r.out);
}

Test(sse, ndjson_split_anywhere_gives_the_same_lines)
{
    rec whole = {0};
    feed_chunks(&whole, COMPASS_STREAM_NDJSON, ndjson, strlen(ndjson), all);
    rec bytes = {0};
    feed_chunks(&bytes, COMPASS_STREAM_NDJSON, ndjson, strlen(ndjson), one);
    cr_assert_str_eq(bytes.out.ptr, whole.out.ptr);
    for (uint32_t seed = 1; seed <= 20; seed++) {
        rec r = {0};
        lcg_state = seed;
        feed_chunks(&r, COMPASS_STREAM_NDJSON, ndjson, strlen(ndjson), lcg);
        cr_assert_str_eq(r.out.ptr, whole.out.ptr, "seed %u", seed);
        cps_buf_free(&r.out);
    }
    cps_buf_free(&whole.out);
    cps_buf_free(&bytes.out);
}

Test(sse, ndjson_last_line_is_not_dispatched_before_finish)
{
    cps_sse s;
    rec r = {0};
    cps_sse_init(&s, COMPASS_STREAM_NDJSON, 0);
    cr_assert_eq(cps_sse_feed(&s, "{\"a\":1}\n{\"b\"", 12, on_event, &r), 0);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(cps_sse_feed(&s, ":2}", 3, on_event, &r), 0);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(cps_sse_finish(&s, on_event, &r), 0);
    cr_assert_str_eq(r.out.ptr, "[]{{\"a\":1}}<>\n[]{{\"b\":2}}<>\n");
    cps_sse_free(&s);
    cps_buf_free(&r.out);
}
