/*
 * mockllm: the Gemini API wire format, as its API reference documents it:
 * POST /{version}/models/{model}:generateContent and :streamGenerateContent (with alt=sse: SSE
 * events "data: {GenerateContentResponse}\n\n", no end marker; without it: one JSON array of
 * responses). The key comes in x-goog-api-key or the key query parameter. Answers carry
 * candidates[0].content {role "model", parts}, finishReason, index, usageMetadata
 * {promptTokenCount, candidatesTokenCount, totalTokenCount}, modelVersion and responseId.
 * Errors are Google's {"error":{"code","message","status"[,"details"]}}.
 *
 * It refuses what the real API refuses: roles other than user/model, empty contents, contents
 * without parts, parts without data, unknown fields (the API parses protobuf JSON and names the
 * field it cannot find; that includes JSON Schema keywords such as additionalProperties or
 * $schema in function parameters and responseSchema, and "type" lists), temperature outside
 * 0..2, function calling mode ANY without declarations, functionResponse parts outside user
 * turns, function response turns whose part count differs from the call turn's, and (for
 * gemini-3 models) replayed function calls without a thoughtSignature.
 *
 * POST /{version}/models/{model}:batchEmbedContents takes {"requests":[EmbedContentRequest
 * {model "models/{model}", content, outputDimensionality?}, ...]} (at most 100, each naming
 * the URL's model) and answers {"embeddings":[{"values":[...]}, ...]}: deterministic unit
 * vectors from a hash of each request's text, 8 values unless outputDimensionality says
 * otherwise (8 gives the OpenAI handler's vector for the same text). No usage, like the real
 * API. Same key rules and error shapes as the other routes; no knobs (not a chat route).
 *
 * Knobs beyond the shared ones: content (with a function call: a text part before it),
 * tool_call, chunks.
 */
#include "mockllm.h"
#include "ml_util.h"

#include <math.h>
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

/* Field k, also under its proto snake_case spelling (the API accepts both). */
static json_object *get(json_object *o, const char *k)
{
    json_object *v = NULL;
    if (!is_type(o, json_type_object))
        return NULL;
    if (json_object_object_get_ex(o, k, &v))
        return v;
    char snake[96];
    size_t j = 0;
    for (const char *p = k; *p && j + 2 < sizeof snake; p++) {
        if (*p >= 'A' && *p <= 'Z') {
            snake[j++] = '_';
            snake[j++] = (char)(*p - 'A' + 'a');
        } else {
            snake[j++] = *p;
        }
    }
    snake[j] = '\0';
    if (strcmp(snake, k) != 0 && json_object_object_get_ex(o, snake, &v))
        return v;
    return NULL;
}

static const char *get_str(json_object *o, const char *k)
{
    json_object *v = get(o, k);
    return is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* lowerCamel form of a field name (proto JSON names), into buf. */
static const char *camel(const char *k, char *buf, size_t cap)
{
    size_t j = 0;
    bool up = false;
    for (const char *p = k; *p && j + 1 < cap; p++) {
        if (*p == '_') {
            up = true;
            continue;
        }
        buf[j++] = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
        up = false;
    }
    buf[j] = '\0';
    return buf;
}

/* ---------------------------------------------------------------- text helpers */

/* Text of a Content's parts; returns chars. */
static size_t parts_text(json_object *content, sbuf *out)
{
    json_object *parts = get(content, "parts");
    size_t total = 0;
    if (!is_type(parts, json_type_array))
        return 0;
    for (size_t i = 0; i < json_object_array_length(parts); i++) {
        const char *t = get_str(json_object_array_get_idx(parts, i), "text");
        if (!t)
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

static const char *status_for_code(unsigned code)
{
    switch (code) {
    case 400:
        return "INVALID_ARGUMENT";
    case 401:
        return "UNAUTHENTICATED";
    case 403:
        return "PERMISSION_DENIED";
    case 404:
        return "NOT_FOUND";
    case 409:
        return "ABORTED";
    case 429:
        return "RESOURCE_EXHAUSTED";
    case 499:
        return "CANCELLED";
    case 501:
        return "UNIMPLEMENTED";
    case 503:
        return "UNAVAILABLE";
    case 504:
        return "DEADLINE_EXCEEDED";
    default:
        return code >= 500 ? "INTERNAL" : "INVALID_ARGUMENT";
    }
}

static const char *message_for_status(const char *status)
{
    if (streq(status, "RESOURCE_EXHAUSTED"))
        return "Resource has been exhausted (e.g. check quota). (mock)";
    if (streq(status, "UNAVAILABLE"))
        return "The model is overloaded. Please try again later. (mock)";
    if (streq(status, "INTERNAL"))
        return "An internal error has occurred. Please retry or report in "
               "https://developers.generativeai.google/guide/troubleshooting (mock)";
    if (streq(status, "DEADLINE_EXCEEDED"))
        return "Deadline expired before operation could complete. (mock)";
    if (streq(status, "PERMISSION_DENIED"))
        return "The caller does not have permission (mock).";
    if (streq(status, "UNAUTHENTICATED"))
        return "Request had invalid authentication credentials. (mock)";
    if (streq(status, "NOT_FOUND"))
        return "Requested entity was not found. (mock)";
    return "Request contains an invalid argument. (mock)";
}

/* {"error":{"code","message","status"[,"details"]}}; details is taken over. */
static json_object *error_obj(unsigned code, const char *status, const char *message,
                              json_object *details)
{
    json_object *o = json_object_new_object();
    json_object *e = json_object_new_object();
    bool ok = put(e, "code", json_object_new_int((int)code));
    ok &= put(e, "message", str(message ? message : message_for_status(status)));
    ok &= put(e, "status", str(status));
    if (details)
        ok &= put(e, "details", details);
    ok &= put(o, "error", e);
    if (!ok) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

static void send_error_d(ml_reply *rep, unsigned code, const char *status, const char *message,
                         json_object *details)
{
    json_object *o = error_obj(code, status ? status : status_for_code(code), message, details);
    if (!o) {
        ml_reply_status(rep, code);
        ml_reply_body(rep, NULL, NULL, 0);
        return;
    }
    ml_reply_json(rep, code, o);
    json_object_put(o);
}

static void gm_error(ml_reply *rep, unsigned status, const char *type, const char *code,
                     const char *message)
{
    (void)code;
    send_error_d(rep, status, type, message, NULL);
}

static void gm_stream_error(ml_reply *rep, const char *type, const char *code,
                            const char *message)
{
    long c = 500;
    if (code) {
        char *end;
        long v = strtol(code, &end, 10);
        if (end != code && v >= 400 && v <= 599)
            c = v;
    }
    json_object *o = error_obj((unsigned)c, type ? type : status_for_code((unsigned)c), message,
                               NULL);
    if (!o || ml_reply_sse_json(rep, o) != 0) {
        static const char fb[] = "data: {\"error\":{\"code\":500,\"status\":\"INTERNAL\"}}\n\n";
        ml_reply_event(rep, fb, sizeof fb - 1);
    }
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
    send_error_d(rep, 400, "INVALID_ARGUMENT", msg, NULL);
}

/* key NULL: any non-empty key will do. */
static bool check_key(const ml_request *req, const char *key, ml_reply *rep)
{
    const char *h = ml_request_header(req, "x-goog-api-key");
    if (!h || !*h)
        h = ml_request_arg(req, "key");
    if (!h || !*h) {
        send_error_d(rep, 403, "PERMISSION_DENIED",
                     "Method doesn't allow unregistered callers (callers without established "
                     "identity). Please use API Key or other form of API consumer identity to "
                     "call this API.",
                     NULL);
        return false;
    }
    if (key && strcmp(h, key) != 0) {
        json_object *details = json_object_new_array();
        json_object *info = json_object_new_object();
        json_object *md = json_object_new_object();
        bool ok = put(info, "@type", str("type.googleapis.com/google.rpc.ErrorInfo"));
        ok &= put(info, "reason", str("API_KEY_INVALID"));
        ok &= put(info, "domain", str("googleapis.com"));
        ok &= put(md, "service", str("generativelanguage.googleapis.com"));
        ok &= put(info, "metadata", md);
        ok &= append(details, info);
        if (!ok) {
            json_object_put(details);
            details = NULL;
        }
        send_error_d(rep, 400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API "
                     "key.", details);
        return false;
    }
    return true;
}

static bool gm_authorize(const ml_request *req, const char *key, ml_reply *rep)
{
    return check_key(req, key, rep);
}

/* ---------------------------------------------------------------- validation */

/* Fail on a field of o that is not in allowed (lowerCamel names; snake_case also accepted). */
static bool known_fields(ml_reply *rep, json_object *o, const char *where,
                         const char *const *allowed, size_t n_allowed)
{
    if (!is_type(o, json_type_object))
        return true;
    json_object_object_foreach(o, k, v)
    {
        (void)v;
        char buf[96];
        const char *c = camel(k, buf, sizeof buf);
        bool ok = false;
        for (size_t i = 0; i < n_allowed && !ok; i++)
            ok = strcmp(c, allowed[i]) == 0;
        if (!ok) {
            bad_request(rep, "Invalid JSON payload received. Unknown name \"%.64s\" at '%s': "
                        "Cannot find field.", k, where);
            return false;
        }
    }
    return true;
}

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static const char *const top_fields[] = {"contents", "tools", "toolConfig", "safetySettings",
                                         "systemInstruction", "generationConfig",
                                         "cachedContent", "labels"};
static const char *const content_fields[] = {"role", "parts"};
static const char *const part_fields[] = {"text", "inlineData", "fileData", "functionCall",
                                          "functionResponse", "executableCode",
                                          "codeExecutionResult", "thought", "thoughtSignature",
                                          "videoMetadata", "partMetadata"};
static const char *const part_data[] = {"text", "inlineData", "fileData", "functionCall",
                                        "functionResponse", "executableCode",
                                        "codeExecutionResult"};
static const char *const gen_fields[] = {
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema",
    "responseModalities", "candidateCount", "maxOutputTokens", "temperature", "topP", "topK",
    "seed", "presencePenalty", "frequencyPenalty", "responseLogprobs", "logprobs",
    "enableEnhancedCivicAnswers", "speechConfig", "thinkingConfig", "mediaResolution",
    "imageConfig"};
static const char *const tool_fields[] = {"functionDeclarations", "googleSearch",
                                          "googleSearchRetrieval", "codeExecution", "urlContext",
                                          "computerUse", "fileSearch", "googleMaps"};
static const char *const decl_fields[] = {"name", "description", "parameters",
                                          "parametersJsonSchema", "response",
                                          "responseJsonSchema", "behavior"};

/* The Schema message (an OpenAPI subset): fields outside it are refused, "type" is one enum
 * value (not a JSON Schema type list). */
static const char *const schema_fields[] = {
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
    "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
    "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum",
    "maximum"};

static bool valid_schema(ml_reply *rep, json_object *sc, const char *where, int depth)
{
    char w[256];
    if (depth > 32)
        return true;
    if (!is_type(sc, json_type_object)) {
        bad_request(rep, "Invalid JSON payload received. Expected an object at '%s'.", where);
        return false;
    }
    if (!known_fields(rep, sc, where, schema_fields, N_OF(schema_fields)))
        return false;
    json_object *t = get(sc, "type");
    if (t && !is_type(t, json_type_string)) {
        bad_request(rep, "Invalid JSON payload received. Proto field is not repeating, cannot "
                    "start list. (at '%s.type')", where);
        return false;
    }
    json_object *props = get(sc, "properties");
    if (is_type(props, json_type_object)) {
        json_object_object_foreach(props, k, v)
        {
            snprintf(w, sizeof w, "%.160s.properties[%.40s].value", where, k);
            if (!valid_schema(rep, v, w, depth + 1))
                return false;
        }
    }
    json_object *items = get(sc, "items");
    if (items) {
        snprintf(w, sizeof w, "%.200s.items", where);
        if (!valid_schema(rep, items, w, depth + 1))
            return false;
    }
    json_object *any = get(sc, "anyOf");
    for (size_t i = 0; is_type(any, json_type_array) && i < json_object_array_length(any); i++) {
        snprintf(w, sizeof w, "%.200s.any_of[%zu]", where, i);
        if (!valid_schema(rep, json_object_array_get_idx(any, i), w, depth + 1))
            return false;
    }
    return true;
}

static bool valid_content(ml_reply *rep, json_object *c, const char *where, bool system)
{
    char w[64];
    if (!is_type(c, json_type_object)) {
        bad_request(rep, "Invalid JSON payload received. Expected an object at '%s'.", where);
        return false;
    }
    if (!known_fields(rep, c, where, content_fields, N_OF(content_fields)))
        return false;
    json_object *role = get(c, "role");
    const char *r = is_type(role, json_type_string) ? json_object_get_string(role) : NULL;
    if (!system && role && !streq(r, "user") && !streq(r, "model")) {
        bad_request(rep, "Please use a valid role: user, model.");
        return false;
    }
    json_object *parts = get(c, "parts");
    if (!is_type(parts, json_type_array) || json_object_array_length(parts) == 0) {
        bad_request(rep, "* GenerateContentRequest.%s.parts: contents.parts must not be empty.",
                    where);
        return false;
    }
    for (size_t i = 0; i < json_object_array_length(parts); i++) {
        json_object *p = json_object_array_get_idx(parts, i);
        snprintf(w, sizeof w, "%s.parts[%zu]", where, i);
        if (!known_fields(rep, p, w, part_fields, N_OF(part_fields)))
            return false;
        size_t data = 0;
        for (size_t k = 0; k < N_OF(part_data); k++)
            data += get(p, part_data[k]) != NULL;
        if (data != 1) {
            bad_request(rep, "* GenerateContentRequest.%s.data: %s", w,
                        data ? "only one of the data fields may be set"
                             : "required oneof field 'data' must have one initialized field");
            return false;
        }
        json_object *fc = get(p, "functionCall"), *fr = get(p, "functionResponse");
        if (fc && (!get_str(fc, "name") || (get(fc, "args") &&
                                            !is_type(get(fc, "args"), json_type_object)))) {
            bad_request(rep, "* GenerateContentRequest.%s.function_call: name is required and "
                        "args must be an object", w);
            return false;
        }
        if (fc && streq(r, "user")) {
            bad_request(rep, "Please ensure that function call turns come immediately after a "
                        "user turn or after a function response turn.");
            return false;
        }
        if (fr && (!get_str(fr, "name") || !is_type(get(fr, "response"), json_type_object))) {
            bad_request(rep, "* GenerateContentRequest.%s.function_response: name is required "
                        "and response must be an object", w);
            return false;
        }
        json_object *inl = get(p, "inlineData"), *fd = get(p, "fileData");
        if (inl && (!get_str(inl, "mimeType") || !get_str(inl, "data"))) {
            bad_request(rep, "* GenerateContentRequest.%s.inline_data: mime_type and data are "
                        "required", w);
            return false;
        }
        if (fd && !get_str(fd, "fileUri")) {
            bad_request(rep, "* GenerateContentRequest.%s.file_data.file_uri: a file uri is "
                        "required", w);
            return false;
        }
        if (fr && streq(r, "model")) {
            bad_request(rep, "Please ensure that function response turn comes immediately after "
                        "a function call turn.");
            return false;
        }
    }
    return true;
}

static size_t count_parts(json_object *content, const char *field)
{
    json_object *parts = get(content, "parts");
    size_t n = 0;
    for (size_t i = 0; is_type(parts, json_type_array) && i < json_object_array_length(parts);
         i++)
        n += get(json_object_array_get_idx(parts, i), field) != NULL;
    return n;
}

/* A turn of function calls must be followed by a turn with as many function responses, and
 * function responses must answer the turn before. */
static bool valid_call_turns(ml_reply *rep, json_object *contents)
{
    size_t n = json_object_array_length(contents);
    for (size_t i = 0; i < n; i++) {
        json_object *c = json_object_array_get_idx(contents, i);
        size_t calls = count_parts(c, "functionCall");
        size_t resps = count_parts(c, "functionResponse");
        size_t prev_calls = i > 0 ? count_parts(json_object_array_get_idx(contents, i - 1),
                                                "functionCall")
                                  : 0;
        if (resps && resps != prev_calls) {
            bad_request(rep, "Please ensure that the number of function response parts is equal "
                        "to the number of function call parts of the function call turn.");
            return false;
        }
        if (calls && i + 1 < n &&
            count_parts(json_object_array_get_idx(contents, i + 1), "functionResponse") != calls) {
            bad_request(rep, "Please ensure that the number of function response parts is equal "
                        "to the number of function call parts of the function call turn.");
            return false;
        }
    }
    return true;
}

/* Gemini 3 models: the first functionCall part of each model turn in the history must carry
 * a thoughtSignature (the one the model returned, or Google's documented
 * "skip_thought_signature_validator" sentinel for calls that did not come from Gemini). */
static bool valid_signatures(ml_reply *rep, json_object *contents)
{
    for (size_t i = 0; i < json_object_array_length(contents); i++) {
        json_object *c = json_object_array_get_idx(contents, i);
        json_object *parts = get(c, "parts");
        if (!streq(get_str(c, "role"), "model") || !is_type(parts, json_type_array))
            continue;
        for (size_t k = 0; k < json_object_array_length(parts); k++) {
            json_object *p = json_object_array_get_idx(parts, k);
            json_object *fc = get(p, "functionCall");
            if (!fc)
                continue;
            const char *sig = get_str(p, "thoughtSignature");
            if (!sig || !*sig) {
                bad_request(rep, "Function call is missing a thought_signature in functionCall "
                            "parts. This is required for tools to work correctly, and missing "
                            "thought_signature may lead to degraded model performance. "
                            "Additional data, function call `default_api:%.64s` , position %zu. "
                            "Please refer to https://ai.google.dev/gemini-api/docs/"
                            "thought-signatures for more details.",
                            get_str(fc, "name") ? get_str(fc, "name") : "", i + 1);
                return false;
            }
            break; /* only the first call of a turn carries it */
        }
    }
    return true;
}

static bool validate(const ml_request *req, ml_reply *rep, const char *model)
{
    json_object *j = req->json;
    char w[64];
    if (!is_type(j, json_type_object)) {
        bad_request(rep, "Invalid JSON payload received. Unexpected token.");
        return false;
    }
    if (!known_fields(rep, j, "", top_fields, N_OF(top_fields)))
        return false;
    json_object *contents = get(j, "contents");
    if (!is_type(contents, json_type_array) || json_object_array_length(contents) == 0) {
        bad_request(rep, "* GenerateContentRequest.contents: contents is not specified");
        return false;
    }
    for (size_t i = 0; i < json_object_array_length(contents); i++) {
        snprintf(w, sizeof w, "contents[%zu]", i);
        if (!valid_content(rep, json_object_array_get_idx(contents, i), w, false))
            return false;
    }
    if (!valid_call_turns(rep, contents))
        return false;
    if (strstr(model, "gemini-3") && !valid_signatures(rep, contents))
        return false;
    json_object *si = get(j, "systemInstruction");
    if (si && !valid_content(rep, si, "system_instruction", true))
        return false;
    json_object *gc = get(j, "generationConfig");
    if (gc) {
        if (!known_fields(rep, gc, "generation_config", gen_fields, N_OF(gen_fields)))
            return false;
        json_object *t = get(gc, "temperature");
        if (t && (json_object_get_double(t) < 0.0 || json_object_get_double(t) > 2.0)) {
            bad_request(rep, "* GenerateContentRequest.generation_config.temperature: "
                        "temperature must be in the range [0.0, 2.0]");
            return false;
        }
        json_object *mo = get(gc, "maxOutputTokens");
        if (mo && (!is_type(mo, json_type_int) || json_object_get_int64(mo) < 1)) {
            bad_request(rep, "* GenerateContentRequest.generation_config.max_output_tokens: "
                        "must be a positive integer");
            return false;
        }
        json_object *rs = get(gc, "responseSchema");
        if (rs && !valid_schema(rep, rs, "generation_config.response_schema", 0))
            return false;
        json_object *cc = get(gc, "candidateCount");
        if (cc && json_object_get_int64(cc) > 8) {
            bad_request(rep, "* GenerateContentRequest.generation_config.candidate_count: must "
                        "be at most 8");
            return false;
        }
    }
    json_object *tools = get(j, "tools");
    size_t n_decl = 0;
    if (tools) {
        if (!is_type(tools, json_type_array)) {
            bad_request(rep, "Invalid JSON payload received. Expected an array at 'tools'.");
            return false;
        }
        for (size_t i = 0; i < json_object_array_length(tools); i++) {
            json_object *t = json_object_array_get_idx(tools, i);
            snprintf(w, sizeof w, "tools[%zu]", i);
            if (!known_fields(rep, t, w, tool_fields, N_OF(tool_fields)))
                return false;
            json_object *fd = get(t, "functionDeclarations");
            for (size_t k = 0; is_type(fd, json_type_array) && k < json_object_array_length(fd);
                 k++) {
                json_object *d = json_object_array_get_idx(fd, k);
                snprintf(w, sizeof w, "tools[%zu].function_declarations[%zu]", i, k);
                if (!known_fields(rep, d, w, decl_fields, N_OF(decl_fields)))
                    return false;
                json_object *params = get(d, "parameters");
                if (params) {
                    char pw[96];
                    snprintf(pw, sizeof pw, "%s.parameters", w);
                    if (!valid_schema(rep, params, pw, 0))
                        return false;
                }
                if (!get_str(d, "name")) {
                    bad_request(rep, "* GenerateContentRequest.%s.name: Name cannot be empty.",
                                w);
                    return false;
                }
                n_decl++;
            }
        }
    }
    json_object *fcc = get(get(j, "toolConfig"), "functionCallingConfig");
    const char *mode = get_str(fcc, "mode");
    if (mode && !streq(mode, "AUTO") && !streq(mode, "ANY") && !streq(mode, "NONE") &&
        !streq(mode, "VALIDATED") && !streq(mode, "MODE_UNSPECIFIED")) {
        bad_request(rep, "Invalid value at 'tool_config.function_calling_config.mode' "
                    "(type.googleapis.com/google.ai.generativelanguage.v1beta."
                    "FunctionCallingConfig.Mode), \"%.32s\"", mode);
        return false;
    }
    if (streq(mode, "ANY") && n_decl == 0) {
        bad_request(rep, "Function calling config is set without function_declarations.");
        return false;
    }
    if (streq(model, "does-not-exist")) {
        char msg[256];
        snprintf(msg, sizeof msg, "models/%s is not found for API version v1beta, or is not "
                 "supported for generateContent. Call ListModels to see the list of available "
                 "models and their supported methods.", model);
        send_error_d(rep, 404, "NOT_FOUND", msg, NULL);
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------- composing the answer */

typedef struct answer {
    char model[128];
    char *text;
    char *tool_name;
    json_object *tool_args;
    const char *finish;
    long long prompt_tokens, output_tokens;
    char id[64];
} answer;

static void answer_free(answer *a)
{
    free(a->text);
    free(a->tool_name);
    json_object_put(a->tool_args);
}

static char *gm_last_user_text(const ml_request *req)
{
    json_object *contents = get(req->json, "contents");
    if (!is_type(contents, json_type_array))
        return NULL;
    for (size_t i = json_object_array_length(contents); i-- > 0;) {
        json_object *c = json_object_array_get_idx(contents, i);
        const char *role = get_str(c, "role");
        if (role && !streq(role, "user"))
            continue;
        sbuf b = {0};
        parts_text(c, &b);
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

static json_object *find_decl(json_object *tools, const char *name)
{
    for (size_t i = 0; is_type(tools, json_type_array) && i < json_object_array_length(tools);
         i++) {
        json_object *fd = get(json_object_array_get_idx(tools, i), "functionDeclarations");
        for (size_t k = 0; is_type(fd, json_type_array) && k < json_object_array_length(fd);
             k++) {
            json_object *d = json_object_array_get_idx(fd, k);
            const char *n = get_str(d, "name");
            if (n && (!name || strcmp(n, name) == 0))
                return d;
        }
    }
    return NULL;
}

static const char *pick_tool(const ml_request *req)
{
    const char *k = ml_knob_str(req, "tool_call");
    if (k && *k)
        return k;
    json_object *fcc = get(get(req->json, "toolConfig"), "functionCallingConfig");
    if (!streq(get_str(fcc, "mode"), "ANY"))
        return NULL;
    json_object *allowed = get(fcc, "allowedFunctionNames");
    if (is_type(allowed, json_type_array) && json_object_array_length(allowed) > 0) {
        json_object *n = json_object_array_get_idx(allowed, 0);
        if (is_type(n, json_type_string))
            return json_object_get_string(n);
    }
    json_object *d = find_decl(get(req->json, "tools"), NULL);
    return d ? get_str(d, "name") : NULL;
}

static json_object *tool_args(const ml_request *req, const char *name)
{
    json_object *d = find_decl(get(req->json, "tools"), name);
    json_object *schema = get(d, "parameters");
    if (!schema)
        schema = get(d, "parametersJsonSchema");
    json_object *props = get(schema, "properties");
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
    return o;
}

/* The model name from ".../models/{model}:method". */
static void path_model(const char *path, char *out, size_t cap)
{
    const char *m = strstr(path, "/models/");
    m = m ? m + 8 : "";
    const char *colon = strrchr(m, ':');
    size_t n = colon ? (size_t)(colon - m) : strlen(m);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, m, n);
    out[n] = '\0';
}

static bool compose(const ml_request *req, answer *a)
{
    static const char prefix[] = "mock reply to: ";
    path_model(req->path, a->model, sizeof a->model);
    snprintf(a->id, sizeof a->id, "mockresp%llu", (unsigned long long)req->seq);

    size_t chars = parts_text(get(req->json, "systemInstruction"), NULL);
    json_object *contents = get(req->json, "contents");
    for (size_t i = 0; i < json_object_array_length(contents); i++)
        chars += parts_text(json_object_array_get_idx(contents, i), NULL);
    a->prompt_tokens = (long long)((chars + 3) / 4);

    const char *tool = pick_tool(req);
    if (tool) {
        a->tool_name = strdup(tool);
        a->tool_args = tool_args(req, tool);
        if (!a->tool_name || !a->tool_args)
            return false;
        a->finish = "STOP";
        const char *s = json_object_to_json_string_ext(a->tool_args, JSON_C_TO_STRING_PLAIN);
        a->output_tokens = (long long)(((s ? strlen(s) : 0) + strlen(tool) + 3) / 4);
        /* a text part before the functionCall part */
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
        char *last = gm_last_user_text(req);
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
    a->finish = "STOP";
    json_object *mo = get(get(req->json, "generationConfig"), "maxOutputTokens");
    long long max = is_type(mo, json_type_int) ? (long long)json_object_get_int64(mo) : -1;
    size_t words = count_words(a->text);
    if (max >= 0 && (size_t)max < words) {
        cut_words(a->text, (size_t)max);
        a->finish = "MAX_TOKENS";
        words = (size_t)max;
    }
    a->output_tokens = (long long)words;
    return true;
}

static json_object *usage_obj(const answer *a, bool final)
{
    json_object *u = json_object_new_object();
    bool ok = put(u, "promptTokenCount", json_object_new_int64(a->prompt_tokens));
    if (final) {
        ok &= put(u, "candidatesTokenCount", json_object_new_int64(a->output_tokens));
        ok &= put(u, "totalTokenCount", json_object_new_int64(a->prompt_tokens +
                                                                a->output_tokens));
    } else {
        ok &= put(u, "totalTokenCount", json_object_new_int64(a->prompt_tokens));
    }
    json_object *d = json_object_new_array(), *m = json_object_new_object();
    ok &= put(m, "modality", str("TEXT"));
    ok &= put(m, "tokenCount", json_object_new_int64(a->prompt_tokens));
    ok &= append(d, m);
    ok &= put(u, "promptTokensDetails", d);
    if (!ok) {
        json_object_put(u);
        return NULL;
    }
    return u;
}

/* One GenerateContentResponse: a text part (text not NULL) and/or the function call part
 * (call); finish NULL: no finishReason; usage: final counts. */
static json_object *response_obj(const answer *a, const char *text, size_t text_len, bool call,
                                 const char *finish, bool final_usage)
{
    json_object *o = json_object_new_object();
    json_object *cands = json_object_new_array();
    json_object *cand = json_object_new_object();
    json_object *content = json_object_new_object();
    json_object *parts = json_object_new_array();
    bool ok = true;
    if (text) {
        json_object *part = json_object_new_object();
        ok &= put(part, "text", json_object_new_string_len(text, (int)text_len));
        ok &= append(parts, part);
    }
    if (call) {
        json_object *part = json_object_new_object();
        json_object *fc = json_object_new_object();
        ok &= put(fc, "name", str(a->tool_name));
        ok &= put(fc, "args", json_object_get(a->tool_args));
        ok &= put(part, "functionCall", fc);
        ok &= append(parts, part);
    }
    ok &= put(content, "parts", parts);
    ok &= put(content, "role", str("model"));
    ok &= put(cand, "content", content);
    if (finish)
        ok &= put(cand, "finishReason", str(finish));
    ok &= put(cand, "index", json_object_new_int(0));
    ok &= append(cands, cand);
    ok &= put(o, "candidates", cands);
    ok &= put(o, "usageMetadata", usage_obj(a, final_usage));
    ok &= put(o, "modelVersion", str(a->model));
    ok &= put(o, "responseId", str(a->id));
    if (!ok) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

/* Split the answer into stream responses; each is handed to emit. */
static bool pieces(const ml_request *req, const answer *a,
                   bool (*emit)(void *ctx, json_object *o), void *ctx)
{
    bool call = a->tool_name != NULL;
    if (!a->text)
        return emit(ctx, response_obj(a, NULL, 0, true, a->finish, true));
    const char *s = a->text;
    size_t n = strlen(s);
    long long want = ml_knob_int(req, "chunks", 0);
    /* piece boundaries: by word (with the following whitespace), or N even pieces */
    size_t bounds[1024];
    size_t nb = 0;
    if (want > 0) {
        size_t cps = utf8_len(s);
        if ((size_t)want > cps && cps > 0)
            want = (long long)cps;
        if (want > (long long)N_OF(bounds))
            want = (long long)N_OF(bounds);
        for (long long i = 0; i < want; i++)
            bounds[nb++] = utf8_prefix(s, (size_t)(((unsigned long long)cps *
                                                    (unsigned long long)(i + 1)) /
                                                   (unsigned long long)want));
    } else {
        const char *p = s;
        while (*p && nb < N_OF(bounds) - 1) {
            while (*p && is_space(*p))
                p++;
            while (*p && !is_space(*p))
                p++;
            while (*p && is_space(*p))
                p++;
            bounds[nb++] = (size_t)(p - s);
        }
        if (nb == 0 || bounds[nb - 1] != n)
            bounds[nb++] = n;
    }
    size_t start = 0;
    for (size_t i = 0; i < nb; i++) {
        bool last = i + 1 == nb && !call;
        if (!emit(ctx, response_obj(a, s + start, bounds[i] - start, false,
                                    last ? a->finish : NULL, last)))
            return false;
        start = bounds[i];
    }
    /* the function call comes whole in the last response */
    return !call || emit(ctx, response_obj(a, NULL, 0, true, a->finish, true));
}

static bool emit_sse(void *ctx, json_object *o)
{
    bool ok = o && ml_reply_sse_json(ctx, o) == 0;
    json_object_put(o);
    return ok;
}

static bool emit_array(void *ctx, json_object *o)
{
    return append(ctx, o);
}

static void handle_generate(const ml_request *req, ml_reply *rep, bool stream)
{
    answer a = {0};
    path_model(req->path, a.model, sizeof a.model);
    if (!check_key(req, NULL, rep) || !validate(req, rep, a.model))
        return;
    if (!compose(req, &a)) {
        answer_free(&a);
        send_error_d(rep, 500, "INTERNAL", "mockllm: out of memory", NULL);
        return;
    }
    if (stream && streq(ml_request_arg(req, "alt"), "sse")) {
        ml_reply_stream(rep, "text/event-stream");
        if (!pieces(req, &a, emit_sse, rep))
            send_error_d(rep, 500, "INTERNAL", "mockllm: out of memory", NULL);
    } else if (stream) {
        /* without alt=sse the stream is one JSON array of responses */
        json_object *arr = json_object_new_array();
        if (arr && pieces(req, &a, emit_array, arr))
            ml_reply_json(rep, 200, arr);
        else
            send_error_d(rep, 500, "INTERNAL", "mockllm: out of memory", NULL);
        json_object_put(arr);
    } else {
        json_object *o = response_obj(&a, a.text, a.text ? strlen(a.text) : 0,
                                      a.tool_name != NULL, a.finish, true);
        if (o)
            ml_reply_json(rep, 200, o);
        else
            send_error_d(rep, 500, "INTERNAL", "mockllm: out of memory", NULL);
        json_object_put(o);
    }
    answer_free(&a);
}

static void handle_gc(const ml_request *req, ml_reply *rep)
{
    handle_generate(req, rep, false);
}

static void handle_sgc(const ml_request *req, ml_reply *rep)
{
    handle_generate(req, rep, true);
}

/* ---------------------------------------------------------------- embeddings */

static const char *const batch_fields[] = {"requests"};
static const char *const embed_fields[] = {"model", "content", "taskType", "title",
                                           "outputDimensionality"};

#define ML_EMBED_DIM 8        /* without outputDimensionality (the real default is larger) */
#define ML_EMBED_MAX_DIM 3072 /* gemini-embedding-001's full size */
#define ML_EMBED_MAX_BATCH 100

/* n deterministic values from a hash of the text, scaled to unit length; for n == 8 the same
 * vector the OpenAI handler gives the same text. */
static json_object *embed_values(const char *s, size_t len, size_t n)
{
    uint64_t seed = ml_hash(s, len);
    double *v = calloc(n, sizeof *v), norm = 0;
    json_object *a = json_object_new_array();
    bool ok = v && a;
    for (size_t i = 0; ok && i < n; i++) {
        v[i] = (double)(splitmix(&seed) >> 11) / 9007199254740992.0 * 2.0 - 1.0;
        norm += v[i] * v[i];
    }
    norm = norm > 0 ? 1.0 / sqrt(norm) : 1.0;
    for (size_t i = 0; ok && i < n; i++) {
        double x = v[i] * norm;
        char txt[32];
        snprintf(txt, sizeof txt, "%.6f", x);
        ok &= append(a, json_object_new_double_s(x, txt));
    }
    free(v);
    if (!ok) {
        json_object_put(a);
        return NULL;
    }
    return a;
}

/* Checks one EmbedContentRequest of a batch; *dim gets its vector size. */
static bool valid_embed_request(ml_reply *rep, json_object *r, size_t i, const char *model,
                                size_t *dim)
{
    char w[64], want[160];
    if (!is_type(r, json_type_object)) {
        bad_request(rep, "Invalid JSON payload received. Expected an object at 'requests[%zu]'.",
                    i);
        return false;
    }
    snprintf(w, sizeof w, "requests[%zu]", i);
    if (!known_fields(rep, r, w, embed_fields, N_OF(embed_fields)))
        return false;
    const char *m = get_str(r, "model");
    snprintf(want, sizeof want, "models/%s", model);
    if (!m || strcmp(m, want) != 0) {
        bad_request(rep, "* BatchEmbedContentsRequest.requests[%zu].model: the model of each "
                    "request must be the model of the URL (%.100s), got %.100s", i, want,
                    m ? m : "none");
        return false;
    }
    json_object *content = get(r, "content");
    if (!content) {
        bad_request(rep, "* BatchEmbedContentsRequest.requests[%zu].content: content is not "
                    "specified", i);
        return false;
    }
    snprintf(w, sizeof w, "requests[%zu].content", i);
    if (!valid_content(rep, content, w, false))
        return false;
    json_object *od = get(r, "outputDimensionality");
    *dim = ML_EMBED_DIM;
    if (od) {
        long long d = is_type(od, json_type_int) ? json_object_get_int64(od) : -1;
        if (d < 1 || d > ML_EMBED_MAX_DIM) {
            bad_request(rep, "* BatchEmbedContentsRequest.requests[%zu].output_dimensionality: "
                        "must be an integer from 1 to %d", i, ML_EMBED_MAX_DIM);
            return false;
        }
        *dim = (size_t)d;
    }
    return true;
}

static void handle_batch_embed(const ml_request *req, ml_reply *rep)
{
    char model[128];
    path_model(req->path, model, sizeof model);
    if (!check_key(req, NULL, rep))
        return;
    json_object *j = req->json;
    if (!is_type(j, json_type_object)) {
        bad_request(rep, "Invalid JSON payload received. Unexpected token.");
        return;
    }
    if (!known_fields(rep, j, "", batch_fields, N_OF(batch_fields)))
        return;
    json_object *reqs = get(j, "requests");
    if (!is_type(reqs, json_type_array) || json_object_array_length(reqs) == 0) {
        bad_request(rep, "* BatchEmbedContentsRequest.requests: requests is not specified");
        return;
    }
    size_t n = json_object_array_length(reqs);
    if (n > ML_EMBED_MAX_BATCH) {
        bad_request(rep, "* BatchEmbedContentsRequest.requests: at most %d requests can be in "
                    "one batch", ML_EMBED_MAX_BATCH);
        return;
    }
    json_object *o = json_object_new_object();
    json_object *embs = json_object_new_array();
    bool ok = put(o, "embeddings", embs);
    for (size_t i = 0; ok && i < n; i++) {
        json_object *r = json_object_array_get_idx(reqs, i);
        size_t dim;
        if (!valid_embed_request(rep, r, i, model, &dim)) {
            json_object_put(o);
            return;
        }
        sbuf text = {0};
        parts_text(get(r, "content"), &text);
        json_object *e = json_object_new_object();
        ok &= !text.failed;
        ok &= put(e, "values", embed_values(text.p ? text.p : "", text.n, dim));
        ok &= append(embs, e);
        free(text.p);
    }
    if (ok)
        ml_reply_json(rep, 200, o);
    else
        send_error_d(rep, 500, "INTERNAL", "mockllm: out of memory", NULL);
    json_object_put(o);
}

/* ---------------------------------------------------------------- routes */

static bool match_gc(const char *method, const char *path)
{
    return strcmp(method, "POST") == 0 && strstr(path, "/models/") &&
           ends_with(path, ":generateContent");
}

static bool match_sgc(const char *method, const char *path)
{
    return strcmp(method, "POST") == 0 && strstr(path, "/models/") &&
           ends_with(path, ":streamGenerateContent");
}

static bool match_embed(const char *method, const char *path)
{
    return strcmp(method, "POST") == 0 && strstr(path, "/models/") &&
           ends_with(path, ":batchEmbedContents");
}

static const ml_route routes[] = {
    {.match = match_gc, .handle = handle_gc, .is_chat = true},
    {.match = match_sgc, .handle = handle_sgc, .is_chat = true},
    /* like the other wire formats' embeddings: not a chat (no knobs queue, no chat count) */
    {.match = match_embed, .handle = handle_batch_embed},
};

const ml_provider ml_gemini_provider = {
    .name = "gemini",
    .routes = routes,
    .n_routes = sizeof routes / sizeof routes[0],
    .authorize = gm_authorize,
    .error = gm_error,
    .stream_error = gm_stream_error,
    .last_user_text = gm_last_user_text,
};
