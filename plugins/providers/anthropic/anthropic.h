/*
 * anthropic.h: what anthropic.c shares with its unit test (test_anthropic.c compiles
 * anthropic.c in to reach these). Nothing here leaves the plugin's .so: plugins build with
 * hidden visibility.
 */
#ifndef COMPASS_PLUGINS_ANTHROPIC_H
#define COMPASS_PLUGINS_ANTHROPIC_H

#include <compass/plugin.h>

/* parse_response reads a Messages body with the scanner reader first (common/json_scan.h:
 * only what the response keeps is decoded, escaped strings by js_unescape, tool inputs by
 * json-c); what it leaves (error bodies, bytes
 * that are not strict JSON, duplicate or escaped keys, a type other than "message", content
 * that is not an array) goes to the json-c tree reader, which reads every body the same way.
 * Both fill the response through one filler, copying what it keeps into the request arena.
 * The two readers, for the tests that compare them: */

/** What an_parse_response_fast returns for a body it leaves to the tree reader (out
 *  untouched, nothing logged), and an_stream_event_fast for such an event. */
#define AN_DECLINED 2
/** The json-c tree reader alone. */
int an_parse_response_full(const compass_host *h, compass_req *req,
                           const compass_http_response *resp, compass_chat_response *out,
                           compass_upstream_error *uerr, compass_err *err);
/** The scanner reader alone: as parse_response, or AN_DECLINED. */
int an_parse_response_fast(const compass_host *h, compass_req *req,
                           const compass_http_response *resp, compass_chat_response *out,
                           compass_err *err);

/* parse_stream_event reads each event with the scanner reader first (it walks the event in
 * place, decodes escaped strings itself and lets json-c decode only the odd string or
 * number); what it leaves (error events, the events the tree reader words an error for,
 * bytes that are not strict JSON, duplicate or escaped keys) goes to the json-c tree reader,
 * which reads every event the same way. Both act through one set of handlers. The two
 * readers, for the tests that compare them (an_stream_event_fast returns AN_DECLINED for an
 * event it leaves, having emitted and changed nothing): */

/** The json-c tree reader alone. */
int an_stream_event_full(const compass_host *h, compass_req *req, const compass_stream_event *ev,
                         compass_upstream_error *uerr, compass_err *err);
/** The scanner reader alone: as parse_stream_event, or AN_DECLINED. */
int an_stream_event_fast(const compass_host *h, compass_req *req, const compass_stream_event *ev,
                         compass_err *err);

#endif
