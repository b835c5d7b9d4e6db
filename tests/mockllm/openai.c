/*
 * mockllm: the OpenAI wire format (chat completions, streaming chunks, models, embeddings).
 * Shapes follow the OpenAI API reference: chat.completion, chat.completion.chunk with
 * "data: [DONE]", the usage chunk with empty choices when stream_options.include_usage, and
 * error bodies {"error":{"message","type","param","code"}}.
 */
#include "mockllm.h"
#include "ml_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FINGERPRINT "fp_mockllm"

/* ---------------------------------------------------------------- json helpers */

/* Add v under k; false (and v released) on failure, so callers can chain `ok &= put(...)`. */
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

static const char *type_name(json_object *v)
{
    switch (json_object_get_type(v)) {
    case json_type_null:
        return "null";
    case json_type_boolean:
        return "a boolean";
    case json_type_double:
        return "a decimal";
    case json_type_int:
        return "an integer";
    case json_type_object:
        return "an object";
    case json_type_array:
        return "an array";
    case json_type_string:
        return "a string";
    }
    return "a value";
}

/* ---------------------------------------------------------------- errors */

static json_object *error_obj(const char *message, const char *type, const char *param,
                              const char *code)
{
    json_object *o = json_object_new_object();
    json_object *e = json_object_new_object();
    bool ok = put(e, "message", str(message));
    ok &= put(e, "type", str(type));
    ok &= param ? put(e, "param", str(param)) : put_null(e, "param");
    ok &= code ? put(e, "code", str(code)) : put_null(e, "code");
    if (!ok || !put(o, "error", e)) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

static void send_error(ml_reply *rep, unsigned status, const char *message, const char *type,
                       const char *param, const char *code)
{
    json_object *o = error_obj(message, type, param, code);
    if (!o) {
        ml_reply_status(rep, status);
        ml_reply_body(rep, NULL, NULL, 0);
        return;
    }
    ml_reply_json(rep, status, o);
    json_object_put(o);
}

static void oa_error(ml_reply *rep, unsigned status, const char *type, const char *code,
                     const char *message)
{
    const char *dt = "invalid_request_error", *dc = NULL, *dm = "Mock error.";
    switch (status) {
    case 400:
        dm = "Bad request (mock).";
        break;
    case 401:
        dc = "invalid_api_key";
        dm = "Incorrect API key provided (mock).";
        break;
    case 403:
        dt = "permission_error";
        dm = "You are not allowed to sample from this model (mock).";
        break;
    case 404:
        dc = "model_not_found";
        dm = "The model does not exist or you do not have access to it (mock).";
        break;
    case 408:
        dt = "timeout";
        dm = "Request timed out (mock).";
        break;
    case 429:
        dt = "requests";
        dc = "rate_limit_exceeded";
        dm = "Rate limit reached for requests (mock). Please try again later.";
        break;
    case 500:
        dt = "server_error";
        dm = "The server had an error while processing your request (mock).";
        break;
    case 502:
    case 504:
        dt = "server_error";
        dm = "Bad gateway (mock).";
        break;
    case 503:
        dt = "server_error";
        dm = "The engine is currently overloaded, please try again later (mock).";
        break;
    default:
        if (status >= 500)
            dt = "server_error";
        break;
    }
    send_error(rep, status, message ? message : dm, type ? type : dt, NULL, code ? code : dc);
}

static void oa_stream_error(ml_reply *rep, const char *type, const char *code,
                            const char *message)
{
    json_object *o = error_obj(message ? message : "The server had an error while processing "
                                                   "your request (mock stream error).",
                               type ? type : "server_error", NULL, code);
    if (!o) {
        ml_reply_event(rep, "data: {\"error\":{}}\n\n", 20);
        return;
    }
    ml_reply_sse_json(rep, o);
    json_object_put(o);
}

static bool oa_authorize(const ml_request *req, const char *key, ml_reply *rep)
{
    const char *h = ml_request_header(req, "authorization");
    if (h && strncmp(h, "Bearer ", 7) == 0 && strcmp(h + 7, key) == 0)
        return true;
    if (!h)
        send_error(rep, 401,
                   "You didn't provide an API key. You need to provide your API key in an "
                   "Authorization header using Bearer auth (i.e. Authorization: Bearer "
                   "YOUR_KEY).",
                   "invalid_request_error", NULL, "invalid_api_key");
    else
        send_error(rep, 401,
                   "Incorrect API key provided. You can find your API key at "
                   "https://platform.openai.com/account/api-keys.",
                   "invalid_request_error", NULL, "invalid_api_key");
    return false;
}

static void parse_error(ml_reply *rep)
{
    send_error(rep, 400,
               "We could not parse the JSON body of your request. (HINT: This likely means "
               "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
               "payload, but what was sent was not valid JSON. If you have trouble figuring "
               "out how to fix this, please contact us through our help center at "
               "help.openai.com.)",
               "invalid_request_error", NULL, NULL);
}

/* ---------------------------------------------------------------- text helpers */

/* Append the text of a message content (string or array of {type:"text",text}) to buf. */
static size_t content_text(json_object *content, sbuf *out)
{
    size_t total = 0;
    if (!content)
        return 0;
    if (json_object_is_type(content, json_type_string)) {
        size_t n = (size_t)json_object_get_string_len(content);
        if (out)
            sb_add(out, json_object_get_string(content), n);
        return n;
    }
    if (json_object_is_type(content, json_type_array)) {
        size_t n = json_object_array_length(content);
        for (size_t i = 0; i < n; i++) {
            json_object *part = json_object_array_get_idx(content, i);
            json_object *t = get(part, "text");
            if (t && json_object_is_type(t, json_type_string)) {
                size_t l = (size_t)json_object_get_string_len(t);
                if (out) {
                    if (out->n)
                        sb_add(out, " ", 1);
                    sb_add(out, json_object_get_string(t), l);
                }
                total += l;
            }
        }
    }
    return total;
}

static char *oa_last_user_text(const ml_request *req)
{
    json_object *msgs = get(req->json, "messages");
    if (!msgs || !json_object_is_type(msgs, json_type_array))
        return NULL;
    for (size_t i = json_object_array_length(msgs); i-- > 0;) {
        json_object *m = json_object_array_get_idx(msgs, i);
        json_object *role = get(m, "role");
        if (!role || !json_object_is_type(role, json_type_string) ||
            strcmp(json_object_get_string(role), "user") != 0)
            continue;
        sbuf b = {0};
        content_text(get(m, "content"), &b);
        if (b.failed) {
            free(b.p);
            return NULL;
        }
        if (!b.p) {
            b.p = calloc(1, 1);
        }
        return b.p;
    }
    return NULL;
}

/* ---------------------------------------------------------------- chat */

typedef struct chat {
    const char *model;
    char *content;   /* reply text (NULL for tool calls) */
    char *tool_name; /* tool call, or NULL */
    char *tool_args;
    const char *finish;
    long long prompt_tokens, completion_tokens;
    char id[64];
    long long created;
    char *chunk_head; /* "data: {...envelope...,\"choices\":[{\"index\":0,\"delta\":" */
    size_t chunk_head_len;
} chat;

static void chat_free(chat *c)
{
    free(c->content);
    free(c->tool_name);
    free(c->tool_args);
    free(c->chunk_head);
}

static json_object *find_tool(json_object *tools, const char *name)
{
    if (!tools || !json_object_is_type(tools, json_type_array))
        return NULL;
    for (size_t i = 0; i < json_object_array_length(tools); i++) {
        json_object *t = json_object_array_get_idx(tools, i);
        json_object *fn = get(t, "function");
        json_object *n = get(fn, "name");
        if (n && json_object_is_type(n, json_type_string) &&
            (!name || strcmp(json_object_get_string(n), name) == 0))
            return fn;
    }
    return NULL;
}

/* Name of the function to call, or NULL for a text answer. Borrowed from req. */
static const char *pick_tool(const ml_request *req)
{
    const char *k = ml_knob_str(req, "tool_call");
    if (k && *k)
        return k;
    json_object *tools = get(req->json, "tools");
    if (!tools || !json_object_is_type(tools, json_type_array) ||
        json_object_array_length(tools) == 0)
        return NULL;
    json_object *tc = get(req->json, "tool_choice");
    if (!tc)
        return NULL;
    if (json_object_is_type(tc, json_type_string)) {
        if (strcmp(json_object_get_string(tc), "required") != 0)
            return NULL;
        json_object *fn = find_tool(tools, NULL);
        return fn ? json_object_get_string(get(fn, "name")) : NULL;
    }
    json_object *n = get(get(tc, "function"), "name");
    if (n && json_object_is_type(n, json_type_string))
        return json_object_get_string(n);
    return NULL;
}

static char *tool_arguments(const ml_request *req, const char *name)
{
    json_object *fn = find_tool(get(req->json, "tools"), name);
    json_object *props = get(get(fn, "parameters"), "properties");
    const char *key = "arg";
    if (props && json_object_is_type(props, json_type_object)) {
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

/* Validate like OpenAI; on error build the reply and return false. */
static bool validate(const ml_request *req, ml_reply *rep)
{
    char msg[256], param[64];
    if (!req->json || !json_object_is_type(req->json, json_type_object)) {
        parse_error(rep);
        return false;
    }
    json_object *model = get(req->json, "model");
    if (!model) {
        send_error(rep, 400, "you must provide a model parameter", "invalid_request_error",
                   "model", NULL);
        return false;
    }
    if (!json_object_is_type(model, json_type_string)) {
        snprintf(msg, sizeof msg, "Invalid type for 'model': expected a string, but got %s "
                 "instead.", type_name(model));
        send_error(rep, 400, msg, "invalid_request_error", "model", "invalid_type");
        return false;
    }
    json_object *msgs = get(req->json, "messages");
    if (!msgs) {
        send_error(rep, 400, "Missing required parameter: 'messages'.", "invalid_request_error",
                   "messages", "missing_required_parameter");
        return false;
    }
    if (!json_object_is_type(msgs, json_type_array)) {
        snprintf(msg, sizeof msg, "Invalid type for 'messages': expected an array of objects, "
                 "but got %s instead.", type_name(msgs));
        send_error(rep, 400, msg, "invalid_request_error", "messages", "invalid_type");
        return false;
    }
    size_t n = json_object_array_length(msgs);
    if (n == 0) {
        send_error(rep, 400, "Invalid 'messages': empty array. Expected an array with minimum "
                   "length 1, but got an empty array instead.", "invalid_request_error",
                   "messages", "empty_array");
        return false;
    }
    static const char *const roles[] = {"system", "assistant", "user", "function", "tool",
                                        "developer"};
    for (size_t i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(msgs, i);
        if (!m || !json_object_is_type(m, json_type_object)) {
            snprintf(param, sizeof param, "messages[%zu]", i);
            snprintf(msg, sizeof msg, "Invalid type for '%s': expected an object, but got %s "
                     "instead.", param, m ? type_name(m) : "null");
            send_error(rep, 400, msg, "invalid_request_error", param, "invalid_type");
            return false;
        }
        json_object *role = get(m, "role");
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (!role) {
            snprintf(msg, sizeof msg, "Missing required parameter: '%s'.", param);
            send_error(rep, 400, msg, "invalid_request_error", param,
                       "missing_required_parameter");
            return false;
        }
        bool ok = false;
        if (json_object_is_type(role, json_type_string))
            for (size_t r = 0; r < sizeof roles / sizeof roles[0]; r++)
                ok |= strcmp(json_object_get_string(role), roles[r]) == 0;
        if (!ok) {
            snprintf(msg, sizeof msg, "Invalid value: '%.64s'. Supported values are: 'system', "
                     "'assistant', 'user', 'function', 'tool', and 'developer'.",
                     json_object_is_type(role, json_type_string) ? json_object_get_string(role)
                                                                 : type_name(role));
            send_error(rep, 400, msg, "invalid_request_error", param, "invalid_value");
            return false;
        }
    }
    if (strcmp(json_object_get_string(model), "does-not-exist") == 0) {
        send_error(rep, 404, "The model `does-not-exist` does not exist or you do not have "
                   "access to it.", "invalid_request_error", NULL, "model_not_found");
        return false;
    }
    return true;
}

/* Work out the answer. Returns false on allocation failure. */
static bool compose(const ml_request *req, chat *c)
{
    static const char prefix[] = "mock reply to: ";
    c->model = json_object_get_string(get(req->json, "model"));
    snprintf(c->id, sizeof c->id, "chatcmpl-mock-%llu", (unsigned long long)req->seq);
    c->created = (long long)time(NULL);

    json_object *msgs = get(req->json, "messages");
    size_t chars = 0;
    for (size_t i = 0; i < json_object_array_length(msgs); i++)
        chars += content_text(get(json_object_array_get_idx(msgs, i), "content"), NULL);
    c->prompt_tokens = (long long)((chars + 3) / 4);

    const char *tool = pick_tool(req);
    if (tool) {
        c->tool_name = strdup(tool);
        c->tool_args = tool_arguments(req, tool);
        if (!c->tool_name || !c->tool_args)
            return false;
        c->finish = "tool_calls";
        c->completion_tokens = (long long)((strlen(c->tool_args) + strlen(tool) + 3) / 4);
        return true;
    }

    const char *knob = ml_knob_str(req, "content");
    if (knob) {
        c->content = strdup(knob);
        if (!c->content)
            return false;
    } else {
        char *last = oa_last_user_text(req);
        const char *t = "";
        if (last) {
            ml_strip_directives(last);
            t = last;
        }
        size_t cut = utf8_prefix(t, 64);
        size_t len = sizeof prefix - 1 + cut;
        c->content = malloc(len + 1);
        if (!c->content) {
            free(last);
            return false;
        }
        memcpy(c->content, prefix, sizeof prefix - 1);
        memcpy(c->content + sizeof prefix - 1, t, cut);
        c->content[len] = '\0';
        free(last);
    }
    c->finish = "stop";
    long long max = -1;
    json_object *mt = get(req->json, "max_completion_tokens");
    if (!mt || !json_object_is_type(mt, json_type_int))
        mt = get(req->json, "max_tokens");
    if (mt && json_object_is_type(mt, json_type_int))
        max = (long long)json_object_get_int64(mt);
    size_t words = count_words(c->content);
    if (max >= 0 && (size_t)max < words) {
        cut_words(c->content, (size_t)max);
        c->finish = "length";
        words = (size_t)max;
    }
    c->completion_tokens = (long long)words;
    return true;
}

static json_object *usage_obj(const chat *c)
{
    json_object *u = json_object_new_object();
    json_object *pd = json_object_new_object();
    json_object *cd = json_object_new_object();
    bool ok = put(u, "prompt_tokens", json_object_new_int64(c->prompt_tokens));
    ok &= put(u, "completion_tokens", json_object_new_int64(c->completion_tokens));
    ok &= put(u, "total_tokens", json_object_new_int64(c->prompt_tokens + c->completion_tokens));
    ok &= put(pd, "cached_tokens", json_object_new_int(0));
    ok &= put(pd, "audio_tokens", json_object_new_int(0));
    ok &= put(cd, "reasoning_tokens", json_object_new_int(0));
    ok &= put(cd, "audio_tokens", json_object_new_int(0));
    ok &= put(cd, "accepted_prediction_tokens", json_object_new_int(0));
    ok &= put(cd, "rejected_prediction_tokens", json_object_new_int(0));
    ok &= put(u, "prompt_tokens_details", pd);
    ok &= put(u, "completion_tokens_details", cd);
    if (!ok) {
        json_object_put(u);
        return NULL;
    }
    return u;
}

static json_object *envelope(const chat *c, const char *object)
{
    json_object *o = json_object_new_object();
    bool ok = put(o, "id", str(c->id));
    ok &= put(o, "object", str(object));
    ok &= put(o, "created", json_object_new_int64(c->created));
    ok &= put(o, "model", str(c->model));
    ok &= put(o, "system_fingerprint", str(FINGERPRINT));
    ok &= put(o, "service_tier", str("default"));
    if (!ok) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

static json_object *tool_call_obj(const chat *c, bool stream, const char *args)
{
    json_object *tc = json_object_new_object();
    json_object *fn = json_object_new_object();
    bool ok = true;
    if (stream)
        ok &= put(tc, "index", json_object_new_int(0));
    if (!stream || !args) {
        ok &= put(tc, "id", str("call_mock_1"));
        ok &= put(tc, "type", str("function"));
        ok &= put(fn, "name", str(c->tool_name));
    }
    ok &= put(fn, "arguments", str(args ? args : (stream ? "" : c->tool_args)));
    ok &= put(tc, "function", fn);
    json_object *arr = json_object_new_array();
    ok &= append(arr, tc);
    if (!ok) {
        json_object_put(arr);
        return NULL;
    }
    return arr;
}

static void reply_chat(const chat *c, ml_reply *rep)
{
    json_object *o = envelope(c, "chat.completion");
    json_object *choices = json_object_new_array();
    json_object *ch = json_object_new_object();
    json_object *msg = json_object_new_object();
    bool ok = put(msg, "role", str("assistant"));
    if (c->tool_name) {
        ok &= put_null(msg, "content");
        ok &= put(msg, "tool_calls", tool_call_obj(c, false, NULL));
    } else {
        ok &= put(msg, "content", str(c->content));
    }
    ok &= put_null(msg, "refusal");
    ok &= put(msg, "annotations", json_object_new_array());
    ok &= put(ch, "index", json_object_new_int(0));
    ok &= put(ch, "message", msg);
    ok &= put_null(ch, "logprobs");
    ok &= put(ch, "finish_reason", str(c->finish));
    ok &= append(choices, ch);
    ok &= put(o, "choices", choices);
    ok &= put(o, "usage", usage_obj(c));
    if (ok)
        ml_reply_json(rep, 200, o);
    else
        oa_error(rep, 500, NULL, NULL, "mockllm: out of memory");
    json_object_put(o);
}

/* Streams are built up front, one event per chunk; with thousands of streams that is most of
 * the work, so chunks are assembled from a prebuilt envelope head instead of json-c trees. */
static bool make_chunk_head(chat *c)
{
    json_object *m = json_object_new_string(c->model);
    const char *mj = m ? json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE)
                       : NULL;
    char buf[1024];
    int n = mj ? snprintf(buf, sizeof buf,
                          "data: {\"id\":\"%s\",\"object\":\"chat.completion.chunk\","
                          "\"created\":%lld,\"model\":%s,\"system_fingerprint\":\"%s\","
                          "\"service_tier\":\"default\",\"choices\":[{\"index\":0,\"delta\":",
                          c->id, c->created, mj, FINGERPRINT)
               : -1;
    if (n >= 0 && (size_t)n < sizeof buf) {
        c->chunk_head = strdup(buf);
        c->chunk_head_len = (size_t)n;
    } else if (mj) {
        /* absurdly long model name: fall back to the heap */
        size_t len = strlen(mj) + 512;
        c->chunk_head = malloc(len);
        if (c->chunk_head) {
            n = snprintf(c->chunk_head, len,
                         "data: {\"id\":\"%s\",\"object\":\"chat.completion.chunk\","
                         "\"created\":%lld,\"model\":%s,\"system_fingerprint\":\"%s\","
                         "\"service_tier\":\"default\",\"choices\":[{\"index\":0,\"delta\":",
                         c->id, c->created, mj, FINGERPRINT);
            c->chunk_head_len = n > 0 ? (size_t)n : 0;
        }
    }
    json_object_put(m);
    return c->chunk_head != NULL;
}

/* Queue one chunk whose delta is the JSON text d (length dn). */
static bool emit_chunk(const chat *c, ml_reply *rep, bool usage_null, const char *d, size_t dn,
                       const char *finish)
{
    char tail[96];
    int tn = snprintf(tail, sizeof tail, ",\"logprobs\":null,\"finish_reason\":%s%s%s}]%s}\n\n",
                      finish ? "\"" : "", finish ? finish : "null", finish ? "\"" : "",
                      usage_null ? ",\"usage\":null" : "");
    if (tn < 0 || (size_t)tn >= sizeof tail)
        return false;
    sbuf b = {0};
    sb_add(&b, c->chunk_head, c->chunk_head_len);
    sb_add(&b, d, dn);
    sb_add(&b, tail, (size_t)tn);
    bool ok = !b.failed && ml_reply_event(rep, b.p, b.n) == 0;
    free(b.p);
    return ok;
}

/* One chat.completion.chunk with a single choice; delta is taken over (may be NULL). */
static bool chunk(const chat *c, ml_reply *rep, bool usage_null, json_object *delta,
                  const char *finish)
{
    if (!delta)
        return emit_chunk(c, rep, usage_null, "{}", 2, finish);
    size_t n = 0;
    const char *d = json_object_to_json_string_length(
        delta, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
    bool ok = d && emit_chunk(c, rep, usage_null, d, n, finish);
    json_object_put(delta);
    return ok;
}

/* Append s as a JSON string literal. */
static void sb_json_str(sbuf *b, const char *s, size_t n)
{
    sb_add(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        sb_add(b, s + run, i - run);
        run = i + 1;
        char esc[8];
        switch (ch) {
        case '"':
            sb_add(b, "\\\"", 2);
            break;
        case '\\':
            sb_add(b, "\\\\", 2);
            break;
        case '\n':
            sb_add(b, "\\n", 2);
            break;
        case '\r':
            sb_add(b, "\\r", 2);
            break;
        case '\t':
            sb_add(b, "\\t", 2);
            break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", ch);
            sb_add(b, esc, 6);
            break;
        }
    }
    sb_add(b, s + run, n - run);
    sb_add(b, "\"", 1);
}

static bool content_delta(const chat *c, ml_reply *rep, bool usage_null, const char *s,
                          size_t n)
{
    sbuf b = {0};
    sb_add(&b, "{\"content\":", 11);
    sb_json_str(&b, s, n);
    sb_add(&b, "}", 1);
    bool ok = !b.failed && emit_chunk(c, rep, usage_null, b.p, b.n, NULL);
    free(b.p);
    return ok;
}

/* Split s into `pieces` parts of about equal code-point counts and emit each with emit. */
static bool split_even(const chat *c, ml_reply *rep, bool un, const char *s, long long pieces,
                       bool args)
{
    size_t cps = utf8_len(s);
    if (pieces < 1)
        pieces = 1;
    if ((size_t)pieces > cps && cps > 0)
        pieces = (long long)cps;
    size_t start = 0;
    for (long long i = 0; i < pieces; i++) {
        size_t end_cp = (size_t)(((unsigned long long)cps * (unsigned long long)(i + 1)) /
                                 (unsigned long long)pieces);
        size_t end = utf8_prefix(s, end_cp);
        bool ok;
        if (args) {
            char *frag = strndup(s + start, end - start);
            if (!frag)
                return false;
            json_object *d = json_object_new_object();
            ok = put(d, "tool_calls", tool_call_obj(c, true, frag));
            free(frag);
            if (!ok)
                json_object_put(d);
            ok = ok && chunk(c, rep, un, d, NULL);
        } else {
            ok = content_delta(c, rep, un, s + start, end - start);
        }
        if (!ok)
            return false;
        start = end;
    }
    return true;
}

static void reply_stream(const ml_request *req, chat *c, ml_reply *rep)
{
    if (!make_chunk_head(c)) {
        oa_error(rep, 500, NULL, NULL, "mockllm: out of memory");
        return;
    }
    bool usage = false;
    json_object *so = get(req->json, "stream_options");
    json_object *iu = get(so, "include_usage");
    if (iu && json_object_get_boolean(iu))
        usage = true;
    long long pieces = ml_knob_int(req, "chunks", 0);

    ml_reply_stream(rep, "text/event-stream");
    ml_reply_header(rep, "X-Accel-Buffering", "no");

    bool ok = true;
    json_object *d = json_object_new_object();
    ok &= put(d, "role", str("assistant"));
    if (c->tool_name) {
        ok &= put_null(d, "content");
        ok &= put(d, "tool_calls", tool_call_obj(c, true, NULL));
        ok &= put_null(d, "refusal");
        if (!ok)
            json_object_put(d);
        ok = ok && chunk(c, rep, usage, d, NULL);
        if (ok) {
            size_t cps = utf8_len(c->tool_args);
            ok = split_even(c, rep, usage, c->tool_args,
                            pieces > 0 ? pieces : (long long)((cps + 7) / 8), true);
        }
    } else {
        ok &= put(d, "content", str(""));
        ok &= put_null(d, "refusal");
        if (!ok)
            json_object_put(d);
        ok = ok && chunk(c, rep, usage, d, NULL);
        if (ok && pieces > 0) {
            ok = split_even(c, rep, usage, c->content, pieces, false);
        } else if (ok) {
            /* one chunk per word, carrying the whitespace that follows it */
            const char *p = c->content;
            while (ok && *p) {
                const char *q = p;
                while (*q && is_space(*q))
                    q++;
                while (*q && !is_space(*q))
                    q++;
                while (*q && is_space(*q))
                    q++;
                ok = content_delta(c, rep, usage, p, (size_t)(q - p));
                p = q;
            }
        }
    }
    ok = ok && chunk(c, rep, usage, NULL, c->finish);
    if (ok && usage) {
        json_object *o = envelope(c, "chat.completion.chunk");
        ok = put(o, "choices", json_object_new_array());
        ok &= put(o, "usage", usage_obj(c));
        ok = ok && ml_reply_sse_json(rep, o) == 0;
        json_object_put(o);
    }
    if (ok)
        ml_reply_event(rep, "data: [DONE]\n\n", 14);
    else
        oa_error(rep, 500, NULL, NULL, "mockllm: out of memory");
}

static void handle_chat(const ml_request *req, ml_reply *rep)
{
    if (!validate(req, rep))
        return;
    chat c = {0};
    if (!compose(req, &c)) {
        chat_free(&c);
        oa_error(rep, 500, NULL, NULL, "mockllm: out of memory");
        return;
    }
    json_object *s = get(req->json, "stream");
    if (s && json_object_get_boolean(s))
        reply_stream(req, &c, rep);
    else
        reply_chat(&c, rep);
    chat_free(&c);
}

/* ---------------------------------------------------------------- models, embeddings */

static void handle_models(const ml_request *req, ml_reply *rep)
{
    (void)req;
    static const char *const ids[] = {"gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini",
                                      "o3-mini", "text-embedding-3-small", "mock-model"};
    json_object *o = json_object_new_object();
    json_object *data = json_object_new_array();
    bool ok = put(o, "object", str("list"));
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        json_object *m = json_object_new_object();
        ok &= put(m, "id", str(ids[i]));
        ok &= put(m, "object", str("model"));
        ok &= put(m, "created", json_object_new_int64(1700000000));
        ok &= put(m, "owned_by", str(strcmp(ids[i], "mock-model") == 0 ? "mockllm" : "openai"));
        ok &= append(data, m);
    }
    ok &= put(o, "data", data);
    if (ok)
        ml_reply_json(rep, 200, o);
    else
        oa_error(rep, 500, NULL, NULL, "mockllm: out of memory");
    json_object_put(o);
}

static json_object *embedding(const char *s, size_t len)
{
    uint64_t seed = ml_hash(s, len);
    double v[8], norm = 0;
    for (int i = 0; i < 8; i++) {
        v[i] = (double)(splitmix(&seed) >> 11) / 9007199254740992.0 * 2.0 - 1.0;
        norm += v[i] * v[i];
    }
    norm = norm > 0 ? 1.0 / sqrt(norm) : 1.0;
    json_object *a = json_object_new_array();
    bool ok = a != NULL;
    for (int i = 0; i < 8; i++) {
        double x = v[i] * norm;
        char txt[32];
        snprintf(txt, sizeof txt, "%.6f", x);
        ok &= append(a, json_object_new_double_s(x, txt));
    }
    if (!ok) {
        json_object_put(a);
        return NULL;
    }
    return a;
}

static void handle_embeddings(const ml_request *req, ml_reply *rep)
{
    if (!req->json || !json_object_is_type(req->json, json_type_object)) {
        parse_error(rep);
        return;
    }
    json_object *model = get(req->json, "model");
    if (!model || !json_object_is_type(model, json_type_string)) {
        send_error(rep, 400, "you must provide a model parameter", "invalid_request_error",
                   "model", NULL);
        return;
    }
    json_object *input = get(req->json, "input");
    bool is_arr = input && json_object_is_type(input, json_type_array);
    if (!input || (!is_arr && !json_object_is_type(input, json_type_string)) ||
        (is_arr && json_object_array_length(input) == 0)) {
        send_error(rep, 400, "'input' must be a non-empty string or array.",
                   "invalid_request_error", "input", "invalid_value");
        return;
    }
    json_object *o = json_object_new_object();
    json_object *data = json_object_new_array();
    bool ok = put(o, "object", str("list"));
    size_t n = is_arr ? json_object_array_length(input) : 1, chars = 0;
    for (size_t i = 0; i < n; i++) {
        json_object *it = is_arr ? json_object_array_get_idx(input, i) : input;
        const char *s;
        size_t len;
        if (it && json_object_is_type(it, json_type_string)) {
            s = json_object_get_string(it);
            len = (size_t)json_object_get_string_len(it);
        } else {
            /* token arrays and the like: hash their JSON text */
            s = it ? json_object_to_json_string_ext(it, JSON_C_TO_STRING_PLAIN) : "null";
            len = s ? strlen(s) : 0;
            if (!s)
                s = "";
        }
        chars += len;
        json_object *e = json_object_new_object();
        ok &= put(e, "object", str("embedding"));
        ok &= put(e, "index", json_object_new_int64((int64_t)i));
        ok &= put(e, "embedding", embedding(s, len));
        ok &= append(data, e);
    }
    ok &= put(o, "data", data);
    ok &= put(o, "model", str(json_object_get_string(model)));
    json_object *u = json_object_new_object();
    long long pt = (long long)((chars + 3) / 4);
    ok &= put(u, "prompt_tokens", json_object_new_int64(pt));
    ok &= put(u, "total_tokens", json_object_new_int64(pt));
    ok &= put(o, "usage", u);
    if (ok)
        ml_reply_json(rep, 200, o);
    else
        oa_error(rep, 500, NULL, NULL, "mockllm: out of memory");
    json_object_put(o);
}

/* ---------------------------------------------------------------- routes */

static bool match_chat(const char *method, const char *path)
{
    return strcmp(method, "POST") == 0 && ends_with(path, "/chat/completions");
}

static bool match_models(const char *method, const char *path)
{
    return strcmp(method, "GET") == 0 && ends_with(path, "/models");
}

static bool match_embeddings(const char *method, const char *path)
{
    return strcmp(method, "POST") == 0 && ends_with(path, "/embeddings");
}

static const ml_route routes[] = {
    {.match = match_chat, .handle = handle_chat, .is_chat = true},
    {.match = match_models, .handle = handle_models},
    {.match = match_embeddings, .handle = handle_embeddings},
};

const ml_provider ml_openai_provider = {
    .name = "openai",
    .routes = routes,
    .n_routes = sizeof routes / sizeof routes[0],
    .authorize = oa_authorize,
    .error = oa_error,
    .stream_error = oa_stream_error,
    .last_user_text = oa_last_user_text,
};

/* ---------------------------------------------------------------- shared with azure.c */

void ml_openai_chat(const ml_request *req, ml_reply *rep)
{
    handle_chat(req, rep);
}

void ml_openai_embeddings(const ml_request *req, ml_reply *rep)
{
    handle_embeddings(req, rep);
}

void ml_openai_error(ml_reply *rep, unsigned status, const char *type, const char *code,
                     const char *message)
{
    oa_error(rep, status, type, code, message);
}

void ml_openai_stream_error(ml_reply *rep, const char *type, const char *code,
                            const char *message)
{
    oa_stream_error(rep, type, code, message);
}

char *ml_openai_last_user_text(const ml_request *req)
{
    return oa_last_user_text(req);
}
