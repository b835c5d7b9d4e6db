/*
 * anthropic.h: what anthropic.c shares with its unit test (test_anthropic.c compiles
 * anthropic.c in to reach these). Nothing here leaves the plugin's .so: plugins build with
 * hidden visibility.
 */
#ifndef COMPASS_PLUGINS_ANTHROPIC_H
#define COMPASS_PLUGINS_ANTHROPIC_H

#include <compass/plugin.h>

/* parse_response reads a Messages body with the scanner reader first (common/json_scan.h:
 * only what the response keeps is decoded, by json-c); what it leaves (error bodies, bytes
 * that are not strict JSON, duplicate or escaped keys, a type other than "message", content
 * that is not an array) goes to the json-c tree reader, which reads every body the same way.
 * Both fill the response through one filler, copying what it keeps into the request arena.
 * The two readers, for the tests that compare them: */

/** What an_parse_response_fast returns for a body it leaves to the tree reader (out
 *  untouched, nothing logged). */
#define AN_DECLINED 2
/** The json-c tree reader alone. */
int an_parse_response_full(const compass_host *h, compass_req *req,
                           const compass_http_response *resp, compass_chat_response *out,
                           compass_upstream_error *uerr, compass_err *err);
/** The scanner reader alone: as parse_response, or AN_DECLINED. */
int an_parse_response_fast(const compass_host *h, compass_req *req,
                           const compass_http_response *resp, compass_chat_response *out,
                           compass_err *err);

#endif
