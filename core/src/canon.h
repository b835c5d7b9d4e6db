/* The canonical request/response model (OpenAI chat completions) to and from JSON. */
#ifndef COMPASS_CORE_CANON_H
#define COMPASS_CORE_CANON_H

#include <compass/plugin.h>

#include "arena.h"
#include "buf.h"

/**
 * Parses an OpenAI chat completions request body into out. Every string and array lands in
 * arena a. On a client mistake returns COMPASS_EPARSE (not JSON) or COMPASS_EINVAL (wrong
 * shape) with err->msg naming the field, e.g. "messages[1].role: expected one of system,
 * user, assistant, tool, developer". out->raw points at json.
 */
int cps_canon_parse_chat(cps_arena *a, const char *json, size_t len, compass_chat_request *out,
                         compass_err *err);

/* The two paths of cps_canon_parse_chat, declared for the differential test
 * (tests/unit/test_canon_fast.c); everything else calls cps_canon_parse_chat.
 *
 * The fast path reads the body in place and answers only when it is sure of giving exactly
 * what the general path gives: 0 with out filled, or 1 when it declines (out reset, nothing
 * kept that matters; arena bytes may be spent). It never writes err.
 *
 * The general path builds a json-c tree; it takes any body and writes every error. */
int cps_canon_parse_chat_fast(cps_arena *a, const char *json, size_t len,
                              compass_chat_request *out);
int cps_canon_parse_chat_general(cps_arena *a, const char *json, size_t len,
                                 compass_chat_request *out, compass_err *err);

/** Writes r as an OpenAI "chat.completion" object. model overrides r->model when r's is
 *  empty. */
int cps_canon_write_response(cps_buf *b, const compass_chat_response *r, compass_str id,
                             compass_str model, int64_t created);

/** Writes one "chat.completion.chunk" object for delta d (no "data: " framing). When
 *  usage_only is set, writes the usage chunk (choices: []) OpenAI sends last. */
int cps_canon_write_chunk(cps_buf *b, const compass_chat_delta *d, compass_str id,
                          compass_str model, int64_t created, int usage_only);

/** Writes {"error":{"message","type","param","code"}}. param/code may be NULL. */
int cps_canon_write_error(cps_buf *b, const char *message, const char *type, const char *param,
                          const char *code);

/** Parses an OpenAI /v1/embeddings request (input: a string or an array of strings). */
int cps_canon_parse_embed(cps_arena *a, const char *json, size_t len, compass_embed_request *out,
                          compass_err *err);

/** Writes an OpenAI embeddings list object; base64 writes each vector as the base64 of its
 *  little-endian float32 values, as OpenAI does for encoding_format "base64". */
int cps_canon_write_embed(cps_buf *b, const compass_embed_response *r, compass_str model,
                          int base64);

/** The OpenAI finish_reason text for a compass_finish, or NULL for NONE. */
const char *cps_canon_finish_name(int finish);
/** The role text for a compass_role. */
const char *cps_canon_role_name(int role);

#endif
