/*
 * gemini.h: what gemini.c shares with its unit test (test_gemini.c compiles gemini.c in to
 * reach these). Nothing here leaves the plugin's .so: plugins build with hidden visibility.
 */
#ifndef COMPASS_PLUGINS_GEMINI_H
#define COMPASS_PLUGINS_GEMINI_H

#include <compass/plugin.h>

/* parse_stream_event reads a streamGenerateContent event with the scanner reader first
 * (common/json_scan.h: only what the event keeps is decoded, by json-c); what it leaves
 * (errors, bytes that are not strict JSON, duplicate or escaped keys, odd shapes) goes to the
 * json-c tree reader, which reads every event the same way. The two readers, for the tests
 * that compare them: */

/** What gm_stream_event_fast returns for an event it leaves to the tree reader (having
 *  emitted nothing). */
#define GM_DECLINED 2
/** The json-c tree reader alone. */
int gm_stream_event_full(const compass_host *h, compass_req *req, const compass_stream_event *ev,
                         compass_upstream_error *uerr, compass_err *err);
/** The scanner reader alone: as parse_stream_event, or GM_DECLINED. */
int gm_stream_event_fast(const compass_host *h, compass_req *req, const compass_stream_event *ev,
                         compass_err *err);

#endif
