/* The Anthropic-format front door's translation module: POST /v1/messages in Anthropic's
 * Messages format, translated to and from the canonical (OpenAI chat completions) model so
 * that an Anthropic-format client can use any provider behind compass.
 *
 * Pure translation: no I/O, no globals, thread-safe. Every function appends to the cps_buf it
 * is given (initialise it with cps_buf_init; nothing is appended when a call fails).
 *
 * What does not translate (each is also noted at its place in anthropic_front.c):
 *   - top_k, thinking, service_tier, cache_control, container: accepted and ignored (OpenAI
 *     has no equivalent; none of them changes what a correct answer is).
 *   - thinking / redacted_thinking blocks in earlier assistant turns are dropped (Anthropic
 *     itself does not show earlier turns' thinking to the model).
 *   - server tools (tools[].type other than "custom"), document / search_result / container
 *     blocks, images inside tool_result, image sources other than base64 and url, and
 *     non-empty mcp_servers are refused with COMPASS_EUNSUPPORTED naming the field.
 *   - stop_reason "stop_sequence" and "pause_turn" are never produced (OpenAI's "stop" does
 *     not say which); stop_sequence is always null.
 */
#ifndef COMPASSD_ANTHROPIC_FRONT_H
#define COMPASSD_ANTHROPIC_FRONT_H

#include <stdint.h>

#include <compass/plugin.h>

#include "buf.h"

/** Anthropic Messages request JSON -> OpenAI chat completions request JSON, appended to out.
 *  *stream (may be NULL) is set to 1 when the client asked for a stream (the OpenAI request
 *  then also asks for stream_options.include_usage, so the final usage reaches the stream).
 *  On a client mistake returns COMPASS_EINVAL or COMPASS_EPARSE (COMPASS_EUNSUPPORTED for a
 *  valid Anthropic feature compass cannot honour) with err->msg naming the field the way
 *  Anthropic does ("messages.1.content.0.type: ..."). Answer those with HTTP 400 and
 *  cpd_anth_error_json(400, err->msg, ...). */
int cpd_anth_request_to_openai(const char *json, size_t len, cps_buf *out, int *stream,
                               compass_err *err);

/** OpenAI chat.completion JSON (what the engine answers) -> Anthropic Message JSON.
 *  COMPASS_EPARSE (err->msg says why) when json is not a chat.completion. */
int cpd_anth_response_from_openai(const char *json, size_t len, cps_buf *out,
                                  compass_err *err);

/** An OpenAI error body + HTTP status -> Anthropic error JSON
 *  {"type":"error","error":{"type","message"}}. The message is the OpenAI error's message
 *  (a stock one for the status when the body has none). Returns 0 or COMPASS_ENOMEM. */
int cpd_anth_error_from_openai(int status, const char *json, size_t len, cps_buf *out);

/** Anthropic's error type for an HTTP status: 400 invalid_request_error (and other 4xx),
 *  401 authentication_error, 403 permission_error, 404 not_found_error, 413
 *  request_too_large, 429 rate_limit_error, 503 and 529 overloaded_error, other 5xx
 *  api_error. */
const char *cpd_anth_error_type(int status);

/** Appends {"type":"error","error":{"type":<cpd_anth_error_type(status)>,"message":message}}.
 *  For answering compassd's own refusals (a bad request, a body too large). */
int cpd_anth_error_json(int status, const char *message, cps_buf *out);

/* ---- streaming ---------------------------------------------------------------------------- */

/** A per-request translator fed canonical deltas (from on_delta); appends Anthropic SSE events
 *  ("event: X\ndata: {...}\n\n") to out:
 *    message_start (id, model, role, usage.input_tokens) before anything else;
 *    content_block_start / content_block_delta / content_block_stop for text (text_delta) and
 *    for each tool call (tool_use with id and name; input_json_delta with the argument
 *    fragments), blocks indexed from 0 in the order they start;
 *    message_delta (stop_reason from the finish reason: stop -> end_turn, length ->
 *    max_tokens, tool_calls -> tool_use, content_filter -> refusal; a "stop" answer that
 *    carried tool calls says tool_use; usage) and message_stop, from cpd_anth_stream_finish.
 *  Not thread-safe: feed one stream from one thread at a time. */
typedef struct cpd_anth_stream cpd_anth_stream;

/** model is echoed in message_start; msg_id is the message id ("msg_..."; NULL makes one).
 *  Returns NULL when out of memory. */
cpd_anth_stream *cpd_anth_stream_new(const char *model, const char *msg_id);
/** Optional, before the first delta: the prompt tokens message_start reports (default 0; the
 *  real count follows in message_delta's usage when the provider reports it). */
void cpd_anth_stream_set_input_tokens(cpd_anth_stream *s, int64_t input_tokens);
/** One canonical delta. COMPASS_EPHASE after finish or error; COMPASS_ENOMEM. */
int cpd_anth_stream_delta(cpd_anth_stream *s, const compass_chat_delta *d, cps_buf *out);
/** The final usage, if known (a delta carrying usage.present does the same). */
int cpd_anth_stream_usage(cpd_anth_stream *s, const compass_usage *u);
/** Closes the open block, then message_delta + message_stop. COMPASS_EPHASE when repeated. */
int cpd_anth_stream_finish(cpd_anth_stream *s, cps_buf *out);
/** event: error with type api_error. Ends the stream (later calls give COMPASS_EPHASE). */
int cpd_anth_stream_error(cpd_anth_stream *s, const char *message, cps_buf *out);
/** The same with an Anthropic error type (e.g. cpd_anth_error_type(status)). */
int cpd_anth_stream_error_typed(cpd_anth_stream *s, const char *type, const char *message,
                                cps_buf *out);
void cpd_anth_stream_free(cpd_anth_stream *s);

#endif
