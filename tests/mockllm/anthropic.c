/*
 * mockllm: the Anthropic Messages wire format (POST /v1/messages), as the API reference
 * documents it: x-api-key and anthropic-version headers; a Message object
 * {id "msg_…", type "message", role "assistant", content blocks, stop_reason, usage}; the SSE
 * event sequence message_start, content_block_start, ping, content_block_delta…,
 * content_block_stop, message_delta, message_stop, each as "event: <type>\ndata: {json}\n\n";
 * and error bodies {"type":"error","error":{"type","message"},"request_id"}.
 *
 * It refuses what the real API refuses (missing max_tokens, a "system" role inside messages,
 * turns that do not alternate, a first turn that is not the user's, empty messages, empty text
 * blocks, temperature outside 0..1, tool_result without the matching tool_use…), so requests an
 * adapter builds are checked against the rules, not just parsed.
 *
 * Knobs beyond the shared ones: content (with a tool call: a text block before the tool_use
 * block), tool_call, chunks, and unknown_event N (insert an
 * event of a type the client cannot know after N events, at a stage boundary: 1 after
 * message_start, 2 after content_block_start, 3 (or true) after ping, or right after the last
 * content_block_delta).
 */
#include "mockllm.h"
#include "ml_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- json helpers */

static bool put(json_object *o, const char *k, json_object *v)
{
    if (!o || !v) {
        json_object_put(v);
        return false;
    }
    if (json_object_object_add(o, k, v) != 0) {
        json_object_put(v);
        return false;
    }
    return true;
}

static json_object *get(json_object *o, const char *k)
{
    json_object *v = NULL;
    if (o && json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, k, &v))
        return v;
    return NULL;
}

static const char *get_str(json_object *o, const char *k)
{
    json_object *v = get(o, k);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* ---------------------------------------------------------------- text helpers */

/* Text of a content (string, or array of blocks: the text of "text" blocks). Returns chars. */
static size_t content_text(json_object *content, sbuf *out)
{
    if (is_type(content, json_type_string)) {
        size_t n = (size_t)json_object_get_string_len(content);
        if (out)
            sb_add(out, json_object_get_string(content), n);
        return n;
    }
    size_t total = 0;
    if (!is_type(content, json_type_array))
        return 0;
    for (size_t i = 0; i < json_object_array_length(content); i++) {
        json_object *b = json_object_array_get_idx(content, i);
        const char *t = get_str(b, "text");
        if (!t || !streq(get_str(b, "type"), "text"))
            continue;
        size_t l = strlen(t);
        if (out) {
            if (out->n)
                sb_add(out, " ", 1);
            sb_add(out, t, l);
        }
        total += l;
    }
    return total;
}

/* ---------------------------------------------------------------- errors */

static const char *type_for_status(unsigned status)
{
    switch (status) {
    case 400:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 402:
        return "billing_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 504:
        return "timeout_error";
    case 529:
        return "overloaded_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

static const char *message_for_type(const char *type)
{
    if (streq(type, "authentication_error"))
        return "invalid x-api-key";
    if (streq(type, "billing_error"))
        return "Your credit balance is too low to access the Anthropic API (mock).";
    if (streq(type, "permission_error"))
        return "Your API key does not have permission to use the specified resource (mock).";
    if (streq(type, "not_found_error"))
        return "Not found (mock).";
    if (streq(type, "request_too_large"))
        return "Request exceeds the maximum allowed number of bytes (mock).";
    if (streq(type, "rate_limit_error"))
        return "This request would exceed the rate limit for your organization (mock).";
    if (streq(type, "api_error"))
        return "Internal server error (mock).";
    if (streq(type, "timeout_error"))
        return "Request timed out (mock).";
    if (streq(type, "overloaded_error"))
        return "Overloaded";
    return "Bad request (mock).";
}

static json_object *error_obj(const char *type, const char *message, bool request_id)
{
    json_object *o = json_object_new_object();
    json_object *e = json_object_new_object();
    bool ok = put(o, "type", str("error"));
    ok &= put(e, "type", str(type));
    ok &= put(e, "message", str(message ? message : message_for_type(type)));
    ok &= put(o, "error", e);
    if (request_id)
        ok &= put(o, "request_id", str("req_mockllm"));
    if (!ok) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

static void send_error(ml_reply *rep, unsigned status, const char *type, const char *message)
{
    json_object *o = error_obj(type ? type : type_for_status(status), message, true);
    if (!o) {
        ml_reply_status(rep, status);
        ml_reply_body(rep, NULL, NULL, 0);
        return;
    }
    ml_reply_header(rep, "request-id", "req_mockllm");
    ml_reply_json(rep, status, o);
    json_object_put(o);
}

static void an_error(ml_reply *rep, unsigned status, const char *type, const char *code,
                     const char *message)
{
    (void)code; /* Anthropic errors carry no code */
    send_error(rep, status, type, message);
}

static void an_stream_error(ml_reply *rep, const char *type, const char *code,
                            const char *message)
{
    (void)code;
    json_object *o = error_obj(type ? type : "overloaded_error", message, false);
    const char *s = o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                              JSON_C_TO_STRING_NOSLASHESCAPE)
                      : NULL;
    sbuf b = {0};
    sb_add(&b, "event: error\ndata: ", 19);
    if (s) {
        sb_add(&b, s, strlen(s));
    } else {
        static const char fb[] = "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}";
        sb_add(&b, fb, sizeof fb - 1);
    }
    sb_add(&b, "\n\n", 2);
    if (!b.failed)
        ml_reply_event(rep, b.p, b.n);
    free(b.p);
    json_object_put(o);
}

static void bad_request(ml_reply *rep, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad_request(ml_reply *rep, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    send_error(rep, 400, "invalid_request_error", msg);
}

/* key NULL: any non-empty x-api-key will do. */
static bool check_key(const ml_request *req, const char *key, ml_reply *rep)
{
    const char *h = ml_request_header(req, "x-api-key");
    if (!h || !*h) {
        send_error(rep, 401, "authentication_error", "x-api-key header is required");
        return false;
    }
    if (key && strcmp(h, key) != 0) {
        send_error(rep, 401, "authentication_error", "invalid x-api-key");
        return false;
    }
    return true;
}

static bool an_authorize(const ml_request *req, const char *key, ml_reply *rep)
{
    return check_key(req, key, rep);
}

/* ---------------------------------------------------------------- validation */

static bool valid_blocks(ml_reply *rep, json_object *content, size_t mi, const char *role,
                         bool allow_empty)
{
    if (is_type(content, json_type_string)) {
        if (json_object_get_string_len(content) == 0 && !allow_empty) {
            /* an empty string is allowed only for the final assistant turn (prefill) */
            bad_request(rep, "messages.%zu: all messages must have non-empty content except "
                        "for the optional final assistant message", mi);
            return false;
        }
        return true;
    }
    if (!is_type(content, json_type_array)) {
        bad_request(rep, "messages.%zu.content: Input should be a valid list", mi);
        return false;
    }
    if (json_object_array_length(content) == 0 && !allow_empty) {
        bad_request(rep, "messages.%zu: all messages must have non-empty content except for "
                    "the optional final assistant message", mi);
        return false;
    }
    for (size_t i = 0; i < json_object_array_length(content); i++) {
        json_object *b = json_object_array_get_idx(content, i);
        const char *t = get_str(b, "type");
        if (!t) {
            bad_request(rep, "messages.%zu.content.%zu.type: Field required", mi, i);
            return false;
        }
        if (streq(t, "text")) {
            const char *tx = get_str(b, "text");
            if (!tx) {
                bad_request(rep, "messages.%zu.content.%zu.text: Field required", mi, i);
                return false;
            }
            if (!*tx) {
                bad_request(rep, "messages: text content blocks must be non-empty");
                return false;
            }
        } else if (streq(t, "image")) {
            json_object *src = get(b, "source");
            const char *st = get_str(src, "type"), *mt = get_str(src, "media_type");
            if (!streq(st, "base64") && !streq(st, "url")) {
                bad_request(rep, "messages.%zu.content.%zu.image.source: Input tag '%s' found "
                            "using 'type' does not match any of the expected tags: 'base64', "
                            "'url'", mi, i, st ? st : "");
                return false;
            }
            if (streq(st, "base64") &&
                (!get_str(src, "data") ||
                 !(streq(mt, "image/jpeg") || streq(mt, "image/png") || streq(mt, "image/gif") ||
                   streq(mt, "image/webp")))) {
                bad_request(rep, "messages.%zu.content.%zu.image.source.base64.media_type: Input "
                            "should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'",
                            mi, i);
                return false;
            }
            if (streq(st, "url") && !get_str(src, "url")) {
                bad_request(rep, "messages.%zu.content.%zu.image.source.url.url: Field required",
                            mi, i);
                return false;
            }
        } else if (streq(t, "tool_use")) {
            if (!streq(role, "assistant")) {
                bad_request(rep, "messages.%zu.content.%zu: tool_use blocks can only be in "
                            "assistant messages", mi, i);
                return false;
            }
            if (!get_str(b, "id") || !get_str(b, "name") ||
                !is_type(get(b, "input"), json_type_object)) {
                bad_request(rep, "messages.%zu.content.%zu.tool_use: id, name and an object "
                            "input are required", mi, i);
                return false;
            }
        } else if (streq(t, "tool_result")) {
            if (!streq(role, "user")) {
                bad_request(rep, "messages.%zu.content.%zu: tool_result blocks can only be in "
                            "user messages", mi, i);
                return false;
            }
            if (!get_str(b, "tool_use_id")) {
                bad_request(rep, "messages.%zu.content.%zu.tool_result.tool_use_id: Field "
                            "required", mi, i);
                return false;
            }
        } else if (!streq(t, "document") && !streq(t, "thinking") &&
                   !streq(t, "redacted_thinking") && !streq(t, "search_result")) {
            bad_request(rep, "messages.%zu.content.%zu: Input tag '%.64s' found using 'type' "
                        "does not match any of the expected tags", mi, i, t);
            return false;
        }
    }
    return true;
}

/* Whether blocks (an array) holds a block of type with key == val. */
static bool has_block(json_object *blocks, const char *type, const char *key, const char *val)
{
    if (!is_type(blocks, json_type_array))
        return false;
    for (size_t i = 0; i < json_object_array_length(blocks); i++) {
        json_object *b = json_object_array_get_idx(blocks, i);
        if (streq(get_str(b, "type"), type) && streq(get_str(b, key), val))
            return true;
    }
    return false;
}

/* tool_use blocks must be answered by tool_result blocks in the very next (user) turn, and
 * every tool_result must answer a tool_use of the turn before. */
static bool valid_tool_pairs(ml_reply *rep, json_object *msgs)
{
    size_t n = json_object_array_length(msgs);
    for (size_t i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(msgs, i);
        json_object *c = get(m, "content");
        if (!is_type(c, json_type_array))
            continue;
        json_object *prev = i > 0 ? get(json_object_array_get_idx(msgs, i - 1), "content") : NULL;
        json_object *next = i + 1 < n ? get(json_object_array_get_idx(msgs, i + 1), "content")
                                      : NULL;
        for (size_t k = 0; k < json_object_array_length(c); k++) {
            json_object *b = json_object_array_get_idx(c, k);
            const char *t = get_str(b, "type");
            if (streq(t, "tool_result") &&
                !has_block(prev, "tool_use", "id", get_str(b, "tool_use_id"))) {
                bad_request(rep, "messages.%zu.content.%zu: unexpected `tool_use_id` found in "
                            "`tool_result` blocks: %.64s. Each `tool_result` block must have a "
                            "corresponding `tool_use` block in the previous message.",
                            i, k, get_str(b, "tool_use_id"));
                return false;
            }
            if (streq(t, "tool_use") && i + 1 < n &&
                !has_block(next, "tool_result", "tool_use_id", get_str(b, "id"))) {
                bad_request(rep, "messages.%zu: `tool_use` ids were found without `tool_result` "
                            "blocks immediately after: %.64s. Each `tool_use` block must have a "
                            "corresponding `tool_result` block in the next message.",
                            i, get_str(b, "id"));
                return false;
            }
        }
    }
    return true;
}

static bool validate(const ml_request *req, ml_reply *rep)
{
    json_object *j = req->json;
    if (!is_type(j, json_type_object)) {
        bad_request(rep, "There was an issue with the JSON body of your request: it is not a "
                    "valid JSON object");
        return false;
    }
    const char *ver = ml_request_header(req, "anthropic-version");
    if (!ver || !*ver) {
        bad_request(rep, "anthropic-version: header is required");
        return false;
    }
    json_object *model = get(j, "model");
    if (!model) {
        bad_request(rep, "model: Field required");
        return false;
    }
    if (!is_type(model, json_type_string) || json_object_get_string_len(model) == 0) {
        bad_request(rep, "model: Input should be a valid string");
        return false;
    }
    json_object *mt = get(j, "max_tokens");
    if (!mt) {
        bad_request(rep, "max_tokens: Field required");
        return false;
    }
    if (!is_type(mt, json_type_int) || json_object_get_int64(mt) < 1) {
        bad_request(rep, "max_tokens: Input should be a valid integer greater than or equal "
                    "to 1");
        return false;
    }
    json_object *msgs = get(j, "messages");
    if (!msgs) {
        bad_request(rep, "messages: Field required");
        return false;
    }
    if (!is_type(msgs, json_type_array)) {
        bad_request(rep, "messages: Input should be a valid list");
        return false;
    }
    size_t n = json_object_array_length(msgs);
    if (n == 0) {
        bad_request(rep, "messages: at least one message is required");
        return false;
    }
    const char *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(msgs, i);
        if (!is_type(m, json_type_object)) {
            bad_request(rep, "messages.%zu: Input should be a valid dictionary", i);
            return false;
        }
        const char *role = get_str(m, "role");
        if (!role) {
            bad_request(rep, "messages.%zu.role: Field required", i);
            return false;
        }
        if (streq(role, "system")) {
            bad_request(rep, "messages: Unexpected role \"system\". The Messages API accepts a "
                        "top-level `system` parameter, not \"system\" as an input message role.");
            return false;
        }
        if (!streq(role, "user") && !streq(role, "assistant")) {
            bad_request(rep, "messages.%zu.role: Input should be 'user' or 'assistant'", i);
            return false;
        }
        if (i == 0 && !streq(role, "user")) {
            bad_request(rep, "messages: first message must use the \"user\" role");
            return false;
        }
        if (prev && streq(prev, role)) {
            bad_request(rep, "messages: roles must alternate between \"user\" and \"assistant\", "
                        "but found multiple \"%s\" roles in a row", role);
            return false;
        }
        prev = role;
        json_object *c = get(m, "content");
        if (!c) {
            bad_request(rep, "messages.%zu.content: Field required", i);
            return false;
        }
        bool final_assistant = i + 1 == n && streq(role, "assistant");
        if (!valid_blocks(rep, c, i, role, final_assistant))
            return false;
    }
    if (!valid_tool_pairs(rep, msgs))
        return false;
    json_object *sys = get(j, "system");
    if (sys && !is_type(sys, json_type_string)) {
        if (!is_type(sys, json_type_array)) {
            bad_request(rep, "system: Input should be a valid string or list of text blocks");
            return false;
        }
        for (size_t i = 0; i < json_object_array_length(sys); i++) {
            json_object *b = json_object_array_get_idx(sys, i);
            const char *tx = get_str(b, "text");
            if (!streq(get_str(b, "type"), "text") || !tx || !*tx) {
                bad_request(rep, "system.%zu: system blocks must be non-empty text blocks", i);
                return false;
            }
        }
    }
    json_object *temp = get(j, "temperature");
    if (temp) {
        double t = json_object_get_double(temp);
        if (!is_type(temp, json_type_double) && !is_type(temp, json_type_int)) {
            bad_request(rep, "temperature: Input should be a valid number");
            return false;
        }
        if (t > 1.0) {
            bad_request(rep, "temperature: Input should be less than or equal to 1");
            return false;
        }
        if (t < 0.0) {
            bad_request(rep, "temperature: Input should be greater than or equal to 0");
            return false;
        }
    }
    json_object *tp = get(j, "top_p");
    if (tp && (json_object_get_double(tp) < 0.0 || json_object_get_double(tp) > 1.0)) {
        bad_request(rep, "top_p: Input should be between 0 and 1");
        return false;
    }
    static const char *const openai_only[] = {"n", "seed", "presence_penalty",
                                              "frequency_penalty", "response_format",
                                              "stream_options", "max_completion_tokens",
                                              "logprobs", "parallel_tool_calls", "user"};
    for (size_t i = 0; i < sizeof openai_only / sizeof openai_only[0]; i++)
        if (get(j, openai_only[i])) {
            bad_request(rep, "%s: Extra inputs are not permitted", openai_only[i]);
            return false;
        }
    json_object *tools = get(j, "tools");
    if (tools) {
        if (!is_type(tools, json_type_array)) {
            bad_request(rep, "tools: Input should be a valid list");
            return false;
        }
        for (size_t i = 0; i < json_object_array_length(tools); i++) {
            json_object *t = json_object_array_get_idx(tools, i);
            if (!get_str(t, "name")) {
                bad_request(rep, "tools.%zu.name: Field required", i);
                return false;
            }
            json_object *schema = get(t, "input_schema");
            if (!schema && !get_str(t, "type")) {
                bad_request(rep, "tools.%zu.custom.input_schema: Field required", i);
                return false;
            }
            if (schema && !streq(get_str(schema, "type"), "object")) {
                bad_request(rep, "tools.%zu.custom.input_schema.type: Input should be 'object'",
                            i);
                return false;
            }
            if (get(t, "function") || get(t, "parameters")) {
                bad_request(rep, "tools.%zu: OpenAI-style tool (function/parameters): Extra "
                            "inputs are not permitted", i);
                return false;
            }
        }
    }
    json_object *tc = get(j, "tool_choice");
    if (tc) {
        const char *t = get_str(tc, "type");
        if (!is_type(tc, json_type_object) ||
            !(streq(t, "auto") || streq(t, "any") || streq(t, "tool") || streq(t, "none"))) {
            bad_request(rep, "tool_choice: Input tag found using 'type' does not match any of "
                        "the expected tags: 'auto', 'any', 'tool', 'none'");
            return false;
        }
        if ((streq(t, "any") || streq(t, "tool")) &&
            (!tools || json_object_array_length(tools) == 0)) {
            bad_request(rep, "tool_choice: tool_choice.type '%s' requires tools", t);
            return false;
        }
        if (streq(t, "tool") && !get_str(tc, "name")) {
            bad_request(rep, "tool_choice.tool.name: Field required");
            return false;
        }
    }
    json_object *ss = get(j, "stop_sequences");
    if (ss && !is_type(ss, json_type_array)) {
        bad_request(rep, "stop_sequences: Input should be a valid list");
        return false;
    }
    if (streq(json_object_get_string(model), "does-not-exist")) {
        send_error(rep, 404, "not_found_error", "model: does-not-exist");
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------- composing the answer */

typedef struct answer {
    const char *model;
    char *text;      /* NULL for a tool call */
    char *tool_name; /* or NULL */
    char *tool_args; /* JSON object text */
    const char *stop_reason;
    long long input_tokens, output_tokens;
    char id[64];
} answer;

static void answer_free(answer *a)
{
    free(a->text);
    free(a->tool_name);
    free(a->tool_args);
}

static char *an_last_user_text(const ml_request *req)
{
    json_object *msgs = get(req->json, "messages");
    if (!is_type(msgs, json_type_array))
        return NULL;
    for (size_t i = json_object_array_length(msgs); i-- > 0;) {
        json_object *m = json_object_array_get_idx(msgs, i);
        if (!streq(get_str(m, "role"), "user"))
            continue;
        sbuf b = {0};
        content_text(get(m, "content"), &b);
        if (b.failed) {
            free(b.p);
            return NULL;
        }
        if (!b.p)
            b.p = calloc(1, 1);
        return b.p;
    }
    return NULL;
}

static json_object *find_tool(json_object *tools, const char *name)
{
    if (!is_type(tools, json_type_array))
        return NULL;
    for (size_t i = 0; i < json_object_array_length(tools); i++) {
        json_object *t = json_object_array_get_idx(tools, i);
        const char *n = get_str(t, "name");
        if (n && (!name || strcmp(n, name) == 0))
            return t;
    }
    return NULL;
}

static const char *pick_tool(const ml_request *req)
{
    const char *k = ml_knob_str(req, "tool_call");
    if (k && *k)
        return k;
    json_object *tools = get(req->json, "tools");
    json_object *tc = get(req->json, "tool_choice");
    const char *t = get_str(tc, "type");
    if (streq(t, "tool"))
        return get_str(tc, "name");
    if (streq(t, "any")) {
        json_object *first = find_tool(tools, NULL);
        return first ? get_str(first, "name") : NULL;
    }
    return NULL;
}

static char *tool_input(const ml_request *req, const char *name)
{
    json_object *props = get(get(find_tool(get(req->json, "tools"), name), "input_schema"),
                             "properties");
    const char *key = "arg";
    if (is_type(props, json_type_object)) {
        json_object_object_foreach(props, pk, pv)
        {
            (void)pv;
            key = pk;
            break;
        }
    }
    json_object *o = json_object_new_object();
    if (!put(o, key, str("value"))) {
        json_object_put(o);
        return NULL;
    }
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                          JSON_C_TO_STRING_NOSLASHESCAPE);
    char *r = s ? strdup(s) : NULL;
    json_object_put(o);
    return r;
}

static bool compose(const ml_request *req, answer *a)
{
    static const char prefix[] = "mock reply to: ";
    a->model = json_object_get_string(get(req->json, "model"));
    snprintf(a->id, sizeof a->id, "msg_mock%llu", (unsigned long long)req->seq);

    size_t chars = content_text(get(req->json, "system"), NULL);
    json_object *msgs = get(req->json, "messages");
    for (size_t i = 0; i < json_object_array_length(msgs); i++)
        chars += content_text(get(json_object_array_get_idx(msgs, i), "content"), NULL);
    a->input_tokens = (long long)((chars + 3) / 4);

    const char *tool = pick_tool(req);
    if (tool) {
        a->tool_name = strdup(tool);
        a->tool_args = tool_input(req, tool);
        if (!a->tool_name || !a->tool_args)
            return false;
        a->stop_reason = "tool_use";
        a->output_tokens = (long long)((strlen(a->tool_args) + strlen(tool) + 3) / 4);
        /* a text block before the tool_use block, as the model often says what it does */
        const char *pre = ml_knob_str(req, "content");
        if (pre && *pre) {
            if (!(a->text = strdup(pre)))
                return false;
            a->output_tokens += (long long)count_words(pre);
        }
        return true;
    }
    const char *knob = ml_knob_str(req, "content");
    if (knob) {
        if (!(a->text = strdup(knob)))
            return false;
    } else {
        char *last = an_last_user_text(req);
        const char *t = "";
        if (last) {
            ml_strip_directives(last);
            t = last;
        }
        size_t cut = utf8_prefix(t, 64), len = sizeof prefix - 1 + cut;
        a->text = malloc(len + 1);
        if (!a->text) {
            free(last);
            return false;
        }
        memcpy(a->text, prefix, sizeof prefix - 1);
        memcpy(a->text + sizeof prefix - 1, t, cut);
        a->text[len] = '\0';
        free(last);
    }
    a->stop_reason = "end_turn";
    long long max = json_object_get_int64(get(req->json, "max_tokens"));
    size_t words = count_words(a->text);
    if (max >= 0 && (size_t)max < words) {
        cut_words(a->text, (size_t)max);
        a->stop_reason = "max_tokens";
        words = (size_t)max;
    }
    a->output_tokens = (long long)words;
    return true;
}

static json_object *usage_obj(long long in, long long out)
{
    json_object *u = json_object_new_object();
    bool ok = put(u, "input_tokens", json_object_new_int64(in));
    ok &= put(u, "cache_creation_input_tokens", json_object_new_int(0));
    ok &= put(u, "cache_read_input_tokens", json_object_new_int(0));
    ok &= put(u, "output_tokens", json_object_new_int64(out));
    ok &= put(u, "service_tier", str("standard"));
    if (!ok) {
        json_object_put(u);
        return NULL;
    }
    return u;
}

static json_object *message_obj(const answer *a, bool started)
{
    json_object *o = json_object_new_object();
    json_object *content = json_object_new_array();
    bool ok = put(o, "id", str(a->id));
    ok &= put(o, "type", str("message"));
    ok &= put(o, "role", str("assistant"));
    ok &= put(o, "model", str(a->model));
    if (!started && a->text) {
        json_object *b = json_object_new_object();
        ok &= put(b, "type", str("text"));
        ok &= put(b, "text", str(a->text));
        ok &= append(content, b);
    }
    if (!started && a->tool_name) {
        json_object *b = json_object_new_object();
        ok &= put(b, "type", str("tool_use"));
        ok &= put(b, "id", str("toolu_mock_1"));
        ok &= put(b, "name", str(a->tool_name));
        ok &= put(b, "input", json_tokener_parse(a->tool_args));
        ok &= append(content, b);
    }
    ok &= put(o, "content", content);
    if (started)
        ok &= put_null(o, "stop_reason");
    else
        ok &= put(o, "stop_reason", str(a->stop_reason));
    ok &= put_null(o, "stop_sequence");
    ok &= put(o, "usage", usage_obj(a->input_tokens, started ? 1 : a->output_tokens));
    if (!ok) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

/* ---------------------------------------------------------------- stream */

/* Queue "event: <type>\ndata: <obj>\n\n"; obj is taken over. */
static bool sse(ml_reply *rep, const char *type, json_object *obj)
{
    if (!obj)
        return false;
    const char *s = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
                                                            JSON_C_TO_STRING_NOSLASHESCAPE);
    sbuf b = {0};
    sb_add(&b, "event: ", 7);
    sb_add(&b, type, strlen(type));
    sb_add(&b, "\ndata: ", 7);
    if (s)
        sb_add(&b, s, strlen(s));
    sb_add(&b, "\n\n", 2);
    bool ok = s && !b.failed && ml_reply_event(rep, b.p, b.n) == 0;
    free(b.p);
    json_object_put(obj);
    return ok;
}

static json_object *typed(const char *type)
{
    json_object *o = json_object_new_object();
    if (!put(o, "type", str(type))) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

static bool block_delta(ml_reply *rep, int index, bool tool, const char *s, size_t n)
{
    json_object *o = typed("content_block_delta");
    json_object *d = json_object_new_object();
    bool ok = put(o, "index", json_object_new_int(index));
    ok &= put(d, "type", str(tool ? "input_json_delta" : "text_delta"));
    ok &= put(d, tool ? "partial_json" : "text", json_object_new_string_len(s, (int)n));
    ok &= put(o, "delta", d);
    if (!ok) {
        json_object_put(o);
        return false;
    }
    return sse(rep, "content_block_delta", o);
}

/* The deltas of block index: the text (tool false) or the tool input. */
static bool deltas(const ml_request *req, ml_reply *rep, const answer *a, int index, bool tool)
{
    long long pieces = ml_knob_int(req, "chunks", 0);
    const char *s = tool ? a->tool_args : a->text;
    if (!tool && pieces <= 0) {
        /* one delta per word, carrying the whitespace that follows it */
        const char *p = s;
        while (*p) {
            const char *q = p;
            while (*q && is_space(*q))
                q++;
            while (*q && !is_space(*q))
                q++;
            while (*q && is_space(*q))
                q++;
            if (!block_delta(rep, index, false, p, (size_t)(q - p)))
                return false;
            p = q;
        }
        return true;
    }
    size_t cps = utf8_len(s);
    if (pieces <= 0)
        pieces = (long long)((cps + 7) / 8); /* tool input: several fragments */
    if ((size_t)pieces > cps && cps > 0)
        pieces = (long long)cps;
    if (pieces < 1)
        pieces = 1;
    size_t start = 0;
    for (long long i = 0; i < pieces; i++) {
        size_t end = utf8_prefix(s, (size_t)(((unsigned long long)cps *
                                              (unsigned long long)(i + 1)) /
                                             (unsigned long long)pieces));
        if (!block_delta(rep, index, tool, s + start, end - start))
            return false;
        start = end;
    }
    return true;
}

static bool unknown_event(const ml_request *req, ml_reply *rep, size_t at)
{
    if (!ml_knob_has(req, "unknown_event"))
        return true;
    const char *v = ml_knob_str(req, "unknown_event");
    if (streq(v, "false"))
        return true;
    long long pos = streq(v, "true") ? 3 : ml_knob_int(req, "unknown_event", 3);
    if (pos < 0 || (size_t)pos != at)
        return true;
    json_object *o = typed("mock_future_event");
    if (!put(o, "detail", str("an event type this client cannot know")))
        return false;
    return sse(rep, "mock_future_event", o);
}

static void reply_stream(const ml_request *req, const answer *a, ml_reply *rep)
{
    ml_reply_stream(rep, "text/event-stream; charset=utf-8");
    ml_reply_header(rep, "request-id", "req_mockllm");
    bool ok;
    json_object *o = typed("message_start");
    if (put(o, "message", message_obj(a, true))) {
        ok = sse(rep, "message_start", o);
    } else {
        json_object_put(o);
        ok = false;
    }
    ok = ok && unknown_event(req, rep, ml_reply_event_count(rep));

    int index = 0;
    for (int pass = 0; pass < 2 && ok; pass++) {
        bool tool = pass == 1;
        if (tool ? !a->tool_name : !a->text)
            continue;
        o = typed("content_block_start");
        json_object *cb = json_object_new_object();
        bool k = put(o, "index", json_object_new_int(index));
        if (tool) {
            k &= put(cb, "type", str("tool_use"));
            k &= put(cb, "id", str("toolu_mock_1"));
            k &= put(cb, "name", str(a->tool_name));
            k &= put(cb, "input", json_object_new_object());
        } else {
            k &= put(cb, "type", str("text"));
            k &= put(cb, "text", str(""));
        }
        k &= put(o, "content_block", cb);
        if (!k) {
            json_object_put(o);
            o = NULL;
        }
        ok = ok && sse(rep, "content_block_start", o);
        if (index == 0) {
            ok = ok && unknown_event(req, rep, ml_reply_event_count(rep));
            ok = ok && sse(rep, "ping", typed("ping"));
            ok = ok && unknown_event(req, rep, ml_reply_event_count(rep));
        }
        ok = ok && deltas(req, rep, a, index, tool);
        if (index == 0)
            ok = ok && unknown_event(req, rep, ml_reply_event_count(rep));
        o = typed("content_block_stop");
        if (!put(o, "index", json_object_new_int(index))) {
            json_object_put(o);
            o = NULL;
        }
        ok = ok && sse(rep, "content_block_stop", o);
        index++;
    }

    o = typed("message_delta");
    json_object *d = json_object_new_object();
    json_object *u = json_object_new_object();
    bool k = put(d, "stop_reason", str(a->stop_reason));
    k &= put_null(d, "stop_sequence");
    k &= put(o, "delta", d);
    k &= put(u, "output_tokens", json_object_new_int64(a->output_tokens));
    k &= put(o, "usage", u);
    if (!k) {
        json_object_put(o);
        o = NULL;
    }
    ok = ok && sse(rep, "message_delta", o);
    ok = ok && sse(rep, "message_stop", typed("message_stop"));
    if (!ok)
        send_error(rep, 500, "api_error", "mockllm: out of memory");
}

static void handle_messages(const ml_request *req, ml_reply *rep)
{
    if (!check_key(req, NULL, rep) || !validate(req, rep))
        return;
    answer a = {0};
    if (!compose(req, &a)) {
        answer_free(&a);
        send_error(rep, 500, "api_error", "mockllm: out of memory");
        return;
    }
    json_object *s = get(req->json, "stream");
    if (s && json_object_get_boolean(s)) {
        reply_stream(req, &a, rep);
    } else {
        json_object *o = message_obj(&a, false);
        if (o) {
            ml_reply_header(rep, "request-id", "req_mockllm");
            ml_reply_json(rep, 200, o);
        } else {
            send_error(rep, 500, "api_error", "mockllm: out of memory");
        }
        json_object_put(o);
    }
    answer_free(&a);
}

/* ---------------------------------------------------------------- routes */

static bool match_messages(const char *method, const char *path)
{
    return strcmp(method, "POST") == 0 && ends_with(path, "/v1/messages");
}

static const ml_route routes[] = {
    {.match = match_messages, .handle = handle_messages, .is_chat = true},
};

const ml_provider ml_anthropic_provider = {
    .name = "anthropic",
    .routes = routes,
    .n_routes = sizeof routes / sizeof routes[0],
    .authorize = an_authorize,
    .error = an_error,
    .stream_error = an_stream_error,
    .last_user_text = an_last_user_text,
};
