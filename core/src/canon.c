/* OpenAI chat completions JSON <-> the canonical model in plugin.h. Parsing copies what it
 * keeps into the request arena: a chat request is first read in place by a fast path (the
 * strict scanner of json_scan.h), and anything that path is not sure of goes to the general
 * path, a json-c tree, which also writes every error message. Writing appends JSON text to a
 * cps_buf by hand because it is on every response's path. */
#include "canon.h"

#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The fast path reads bodies with the provider plugins' strict scanner. It is header-only,
 * all static inline code: the core compiles its own copy, as each plugin does, so no symbol
 * is shared between the core and a plugin. */
#include "json_scan.h"

static int fail(compass_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(compass_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

static compass_str dup_str(cps_arena *a, const char *s, size_t n)
{
    compass_str r = {NULL, 0};
    char *p = cps_arena_strndup(a, s, n);
    if (p) {
        r.ptr = p;
        r.len = n;
    }
    return r;
}

/* Copies a JSON string value; *ok cleared on OOM. */
static compass_str jstr(cps_arena *a, json_object *o, int *ok)
{
    const char *s = json_object_get_string(o);
    size_t n = (size_t)json_object_get_string_len(o);
    compass_str r = dup_str(a, s ? s : "", n);
    if (!r.ptr)
        *ok = 0;
    return r;
}

/* Serialises any JSON value compactly into the arena. */
static compass_str jdump(cps_arena *a, json_object *o, int *ok)
{
    size_t n = 0;
    const char *s = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
    compass_str r = dup_str(a, s ? s : "null", s ? n : 4);
    if (!r.ptr)
        *ok = 0;
    return r;
}

static int is_number(json_object *o)
{
    json_type t = json_object_get_type(o);
    return t == json_type_int || t == json_type_double;
}

static int is_integer(json_object *o)
{
    if (json_object_get_type(o) == json_type_int)
        return 1;
    if (json_object_get_type(o) == json_type_double) {
        double d = json_object_get_double(o);
        return isfinite(d) && floor(d) == d && fabs(d) < 9e15;
    }
    return 0;
}

static int parse_role(const char *s)
{
    if (!strcmp(s, "system"))
        return COMPASS_ROLE_SYSTEM;
    if (!strcmp(s, "user"))
        return COMPASS_ROLE_USER;
    if (!strcmp(s, "assistant"))
        return COMPASS_ROLE_ASSISTANT;
    if (!strcmp(s, "tool"))
        return COMPASS_ROLE_TOOL;
    if (!strcmp(s, "developer"))
        return COMPASS_ROLE_DEVELOPER;
    return 0;
}

const char *cps_canon_role_name(int role)
{
    switch (role) {
    case COMPASS_ROLE_SYSTEM: return "system";
    case COMPASS_ROLE_USER: return "user";
    case COMPASS_ROLE_ASSISTANT: return "assistant";
    case COMPASS_ROLE_TOOL: return "tool";
    case COMPASS_ROLE_DEVELOPER: return "developer";
    default: return "assistant";
    }
}

const char *cps_canon_finish_name(int finish)
{
    switch (finish) {
    case COMPASS_FINISH_STOP: return "stop";
    case COMPASS_FINISH_LENGTH: return "length";
    case COMPASS_FINISH_TOOL_CALLS: return "tool_calls";
    case COMPASS_FINISH_CONTENT_FILTER: return "content_filter";
    case COMPASS_FINISH_ERROR: return "error";
    default: return NULL;
    }
}

static int parse_content(cps_arena *a, json_object *c, compass_message *m, size_t mi,
                         compass_err *err)
{
    int ok = 1;
    json_type t = json_object_get_type(c);
    if (t == json_type_null) {
        m->has_content = 0;
        return 0;
    }
    if (t == json_type_string) {
        m->has_content = 1;
        m->content = jstr(a, c, &ok);
        return ok ? 0 : fail(err, COMPASS_ENOMEM, "out of memory");
    }
    if (t != json_type_array)
        return fail(err, COMPASS_EINVAL,
                    "messages[%zu].content: expected a string, an array of content parts or "
                    "null",
                    mi);
    size_t n = json_object_array_length(c);
    compass_content_part *parts = cps_arena_calloc(a, (n ? n : 1) * sizeof(*parts));
    if (!parts)
        return fail(err, COMPASS_ENOMEM, "out of memory");
    size_t text_len = 0;
    for (size_t j = 0; j < n; j++) {
        json_object *p = json_object_array_get_idx(c, j), *ty, *v;
        if (!json_object_is_type(p, json_type_object) ||
            !json_object_object_get_ex(p, "type", &ty) ||
            !json_object_is_type(ty, json_type_string))
            return fail(err, COMPASS_EINVAL,
                        "messages[%zu].content[%zu]: expected an object with a string 'type'",
                        mi, j);
        const char *tys = json_object_get_string(ty);
        if (!strcmp(tys, "text")) {
            if (!json_object_object_get_ex(p, "text", &v) ||
                !json_object_is_type(v, json_type_string))
                return fail(err, COMPASS_EINVAL, "messages[%zu].content[%zu].text: required string",
                            mi, j);
            parts[j].type = COMPASS_PART_TEXT;
            parts[j].text = jstr(a, v, &ok);
            text_len += parts[j].text.len;
        } else if (!strcmp(tys, "image_url")) {
            json_object *u;
            if (!json_object_object_get_ex(p, "image_url", &v))
                return fail(err, COMPASS_EINVAL,
                            "messages[%zu].content[%zu].image_url: required", mi, j);
            if (json_object_is_type(v, json_type_string)) {
                u = v;
            } else if (!json_object_is_type(v, json_type_object) ||
                       !json_object_object_get_ex(v, "url", &u) ||
                       !json_object_is_type(u, json_type_string)) {
                return fail(err, COMPASS_EINVAL,
                            "messages[%zu].content[%zu].image_url.url: required string", mi, j);
            }
            parts[j].type = COMPASS_PART_IMAGE_URL;
            parts[j].url = jstr(a, u, &ok);
            json_object *d;
            if (json_object_is_type(v, json_type_object) &&
                json_object_object_get_ex(v, "detail", &d) &&
                json_object_is_type(d, json_type_string))
                parts[j].detail = jstr(a, d, &ok);
        } else {
            return fail(err, COMPASS_EINVAL,
                        "messages[%zu].content[%zu].type: unsupported content part type '%s' "
                        "(supported: text, image_url)",
                        mi, j, tys);
        }
    }
    if (!ok)
        return fail(err, COMPASS_ENOMEM, "out of memory");
    /* content holds all text joined, for adapters and token estimates */
    char *all = cps_arena_alloc(a, text_len + 1);
    if (!all)
        return fail(err, COMPASS_ENOMEM, "out of memory");
    size_t off = 0;
    for (size_t j = 0; j < n; j++)
        if (parts[j].type == COMPASS_PART_TEXT && parts[j].text.len) {
            memcpy(all + off, parts[j].text.ptr, parts[j].text.len);
            off += parts[j].text.len;
        }
    all[off] = '\0';
    m->has_content = 1;
    m->content.ptr = all;
    m->content.len = off;
    m->parts = parts;
    m->n_parts = n;
    return 0;
}

static int parse_tool_calls(cps_arena *a, json_object *tc, compass_message *m, size_t mi,
                            compass_err *err)
{
    int ok = 1;
    if (json_object_is_type(tc, json_type_null))
        return 0;
    if (!json_object_is_type(tc, json_type_array))
        return fail(err, COMPASS_EINVAL, "messages[%zu].tool_calls: expected an array", mi);
    size_t n = json_object_array_length(tc);
    compass_tool_call *calls = cps_arena_calloc(a, (n ? n : 1) * sizeof(*calls));
    if (!calls)
        return fail(err, COMPASS_ENOMEM, "out of memory");
    for (size_t j = 0; j < n; j++) {
        json_object *c = json_object_array_get_idx(tc, j), *id, *fn, *name, *args;
        if (!json_object_is_type(c, json_type_object) ||
            !json_object_object_get_ex(c, "function", &fn) ||
            !json_object_is_type(fn, json_type_object) ||
            !json_object_object_get_ex(fn, "name", &name) ||
            !json_object_is_type(name, json_type_string))
            return fail(err, COMPASS_EINVAL,
                        "messages[%zu].tool_calls[%zu].function.name: required string", mi, j);
        if (json_object_object_get_ex(c, "id", &id) && json_object_is_type(id, json_type_string))
            calls[j].id = jstr(a, id, &ok);
        calls[j].name = jstr(a, name, &ok);
        if (json_object_object_get_ex(fn, "arguments", &args)) {
            if (json_object_is_type(args, json_type_string))
                calls[j].arguments = jstr(a, args, &ok);
            else
                calls[j].arguments = jdump(a, args, &ok);
        }
    }
    if (!ok)
        return fail(err, COMPASS_ENOMEM, "out of memory");
    m->tool_calls = calls;
    m->n_tool_calls = n;
    return 0;
}

static int parse_messages(cps_arena *a, json_object *arr, compass_chat_request *out,
                          compass_err *err)
{
    if (!json_object_is_type(arr, json_type_array))
        return fail(err, COMPASS_EINVAL, "messages: expected an array of message objects");
    size_t n = json_object_array_length(arr);
    if (n == 0)
        return fail(err, COMPASS_EINVAL, "messages: must contain at least one message");
    compass_message *ms = cps_arena_calloc(a, n * sizeof(*ms));
    if (!ms)
        return fail(err, COMPASS_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(arr, i), *v;
        int ok = 1, rc;
        if (!json_object_is_type(m, json_type_object))
            return fail(err, COMPASS_EINVAL, "messages[%zu]: expected an object", i);
        if (!json_object_object_get_ex(m, "role", &v) || !json_object_is_type(v, json_type_string))
            return fail(err, COMPASS_EINVAL, "messages[%zu].role: required string", i);
        ms[i].role = parse_role(json_object_get_string(v));
        if (!ms[i].role)
            return fail(err, COMPASS_EINVAL,
                        "messages[%zu].role: '%s' is not one of system, user, assistant, tool, "
                        "developer",
                        i, json_object_get_string(v));
        if (json_object_object_get_ex(m, "content", &v)) {
            if ((rc = parse_content(a, v, &ms[i], i, err)))
                return rc;
        }
        if (json_object_object_get_ex(m, "tool_calls", &v)) {
            if (ms[i].role != COMPASS_ROLE_ASSISTANT)
                return fail(err, COMPASS_EINVAL,
                            "messages[%zu].tool_calls: only assistant messages carry tool calls",
                            i);
            if ((rc = parse_tool_calls(a, v, &ms[i], i, err)))
                return rc;
        }
        if (json_object_object_get_ex(m, "name", &v) && json_object_is_type(v, json_type_string))
            ms[i].name = jstr(a, v, &ok);
        if (ms[i].role == COMPASS_ROLE_TOOL) {
            if (!json_object_object_get_ex(m, "tool_call_id", &v) ||
                !json_object_is_type(v, json_type_string))
                return fail(err, COMPASS_EINVAL, "messages[%zu].tool_call_id: required string for "
                            "role tool", i);
            ms[i].tool_call_id = jstr(a, v, &ok);
        }
        if (!ms[i].has_content && !ms[i].n_tool_calls && ms[i].role != COMPASS_ROLE_ASSISTANT)
            return fail(err, COMPASS_EINVAL, "messages[%zu].content: required for role %s", i,
                        cps_canon_role_name(ms[i].role));
        if (!ok)
            return fail(err, COMPASS_ENOMEM, "out of memory");
    }
    out->messages = ms;
    out->n_messages = n;
    return 0;
}

static int parse_tools(cps_arena *a, json_object *arr, compass_chat_request *out,
                       compass_err *err)
{
    int ok = 1;
    if (json_object_is_type(arr, json_type_null))
        return 0;
    if (!json_object_is_type(arr, json_type_array))
        return fail(err, COMPASS_EINVAL, "tools: expected an array");
    size_t n = json_object_array_length(arr);
    compass_tool *ts = cps_arena_calloc(a, (n ? n : 1) * sizeof(*ts));
    if (!ts)
        return fail(err, COMPASS_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_object *t = json_object_array_get_idx(arr, i), *ty, *fn, *v;
        if (!json_object_is_type(t, json_type_object))
            return fail(err, COMPASS_EINVAL, "tools[%zu]: expected an object", i);
        if (json_object_object_get_ex(t, "type", &ty) &&
            (!json_object_is_type(ty, json_type_string) ||
             strcmp(json_object_get_string(ty), "function")))
            return fail(err, COMPASS_EINVAL, "tools[%zu].type: only 'function' is supported", i);
        if (!json_object_object_get_ex(t, "function", &fn) ||
            !json_object_is_type(fn, json_type_object))
            return fail(err, COMPASS_EINVAL, "tools[%zu].function: required object", i);
        if (!json_object_object_get_ex(fn, "name", &v) || !json_object_is_type(v, json_type_string)
            || json_object_get_string_len(v) == 0)
            return fail(err, COMPASS_EINVAL, "tools[%zu].function.name: required string", i);
        ts[i].name = jstr(a, v, &ok);
        if (json_object_object_get_ex(fn, "description", &v) &&
            json_object_is_type(v, json_type_string))
            ts[i].description = jstr(a, v, &ok);
        if (json_object_object_get_ex(fn, "parameters", &v) &&
            !json_object_is_type(v, json_type_null)) {
            if (!json_object_is_type(v, json_type_object))
                return fail(err, COMPASS_EINVAL,
                            "tools[%zu].function.parameters: expected a JSON Schema object", i);
            ts[i].parameters = jdump(a, v, &ok);
        }
        ts[i].strict = -1;
        if (json_object_object_get_ex(fn, "strict", &v) &&
            json_object_is_type(v, json_type_boolean))
            ts[i].strict = json_object_get_boolean(v);
    }
    if (!ok)
        return fail(err, COMPASS_ENOMEM, "out of memory");
    out->tools = ts;
    out->n_tools = n;
    return 0;
}

static int parse_tool_choice(cps_arena *a, json_object *v, compass_chat_request *out,
                             compass_err *err)
{
    int ok = 1;
    if (json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        if (!strcmp(s, "auto"))
            out->tool_choice = COMPASS_TOOL_CHOICE_AUTO;
        else if (!strcmp(s, "none"))
            out->tool_choice = COMPASS_TOOL_CHOICE_NONE;
        else if (!strcmp(s, "required"))
            out->tool_choice = COMPASS_TOOL_CHOICE_REQUIRED;
        else
            return fail(err, COMPASS_EINVAL,
                        "tool_choice: '%s' is not one of auto, none, required", s);
        return 0;
    }
    json_object *fn, *name;
    if (json_object_is_type(v, json_type_object) &&
        json_object_object_get_ex(v, "function", &fn) &&
        json_object_object_get_ex(fn, "name", &name) &&
        json_object_is_type(name, json_type_string)) {
        out->tool_choice = COMPASS_TOOL_CHOICE_FUNCTION;
        out->tool_choice_name = jstr(a, name, &ok);
        return ok ? 0 : fail(err, COMPASS_ENOMEM, "out of memory");
    }
    if (json_object_is_type(v, json_type_null))
        return 0;
    return fail(err, COMPASS_EINVAL,
                "tool_choice: expected auto, none, required or {\"type\":\"function\","
                "\"function\":{\"name\":...}}");
}

static int num_field(json_object *root, const char *key, double lo, double hi, double *dst,
                     unsigned bit, unsigned *set, compass_err *err)
{
    json_object *v;
    if (!json_object_object_get_ex(root, key, &v) || json_object_is_type(v, json_type_null))
        return 0;
    if (!is_number(v))
        return fail(err, COMPASS_EINVAL, "%s: expected a number", key);
    double d = json_object_get_double(v);
    if (!(d >= lo && d <= hi))
        return fail(err, COMPASS_EINVAL, "%s: %g is out of range [%g, %g]", key, d, lo, hi);
    *dst = d;
    *set |= bit;
    return 0;
}

static int int_field(json_object *root, const char *key, int64_t lo, int64_t *dst, unsigned bit,
                     unsigned *set, compass_err *err)
{
    json_object *v;
    if (!json_object_object_get_ex(root, key, &v) || json_object_is_type(v, json_type_null))
        return 0;
    if (!is_integer(v))
        return fail(err, COMPASS_EINVAL, "%s: expected an integer", key);
    int64_t x = json_object_get_int64(v);
    if (x < lo)
        return fail(err, COMPASS_EINVAL, "%s: must be at least %lld", key, (long long)lo);
    *dst = x;
    *set |= bit;
    return 0;
}

static int parse_root(cps_arena *a, json_object *root, compass_chat_request *out,
                      compass_err *err)
{
    json_object *v;
    int rc, ok = 1;

    if (!json_object_is_type(root, json_type_object))
        return fail(err, COMPASS_EINVAL, "request body must be a JSON object");
    if (!json_object_object_get_ex(root, "model", &v) || !json_object_is_type(v, json_type_string)
        || json_object_get_string_len(v) == 0)
        return fail(err, COMPASS_EINVAL, "model: required string");
    out->model = jstr(a, v, &ok);
    if (!json_object_object_get_ex(root, "messages", &v))
        return fail(err, COMPASS_EINVAL, "messages: required");
    if ((rc = parse_messages(a, v, out, err)))
        return rc;
    if (json_object_object_get_ex(root, "tools", &v) && (rc = parse_tools(a, v, out, err)))
        return rc;
    if (json_object_object_get_ex(root, "tool_choice", &v) &&
        (rc = parse_tool_choice(a, v, out, err)))
        return rc;
    if (out->tool_choice == COMPASS_TOOL_CHOICE_FUNCTION) {
        size_t i;
        for (i = 0; i < out->n_tools; i++)
            if (out->tools[i].name.len == out->tool_choice_name.len &&
                !memcmp(out->tools[i].name.ptr, out->tool_choice_name.ptr,
                        out->tool_choice_name.len))
                break;
        if (i == out->n_tools)
            return fail(err, COMPASS_EINVAL, "tool_choice: function '%s' is not in tools",
                        out->tool_choice_name.ptr);
    }
    if (json_object_object_get_ex(root, "stream", &v) && !json_object_is_type(v, json_type_null)) {
        if (!json_object_is_type(v, json_type_boolean))
            return fail(err, COMPASS_EINVAL, "stream: expected a boolean");
        out->stream = json_object_get_boolean(v);
    }
    if (json_object_object_get_ex(root, "stream_options", &v) &&
        !json_object_is_type(v, json_type_null)) {
        json_object *iu;
        if (!json_object_is_type(v, json_type_object))
            return fail(err, COMPASS_EINVAL, "stream_options: expected an object");
        if (json_object_object_get_ex(v, "include_usage", &iu)) {
            if (!json_object_is_type(iu, json_type_boolean))
                return fail(err, COMPASS_EINVAL, "stream_options.include_usage: expected a "
                            "boolean");
            out->include_usage = json_object_get_boolean(iu);
        }
    }
    if ((rc = num_field(root, "temperature", 0, 2, &out->temperature, COMPASS_SET_TEMPERATURE,
                        &out->set, err)) ||
        (rc = num_field(root, "top_p", 0, 1, &out->top_p, COMPASS_SET_TOP_P, &out->set, err)) ||
        (rc = num_field(root, "presence_penalty", -2, 2, &out->presence_penalty,
                        COMPASS_SET_PRESENCE_PENALTY, &out->set, err)) ||
        (rc = num_field(root, "frequency_penalty", -2, 2, &out->frequency_penalty,
                        COMPASS_SET_FREQUENCY_PENALTY, &out->set, err)) ||
        (rc = int_field(root, "max_tokens", 1, &out->max_tokens, COMPASS_SET_MAX_TOKENS,
                        &out->set, err)) ||
        (rc = int_field(root, "max_completion_tokens", 1, &out->max_completion_tokens,
                        COMPASS_SET_MAX_COMPLETION_TOKENS, &out->set, err)) ||
        (rc = int_field(root, "seed", INT64_MIN, &out->seed, COMPASS_SET_SEED, &out->set, err)) ||
        (rc = int_field(root, "n", 1, &out->n, COMPASS_SET_N, &out->set, err)))
        return rc;
    if (json_object_object_get_ex(root, "parallel_tool_calls", &v) &&
        !json_object_is_type(v, json_type_null)) {
        if (!json_object_is_type(v, json_type_boolean))
            return fail(err, COMPASS_EINVAL, "parallel_tool_calls: expected a boolean");
        out->parallel_tool_calls = json_object_get_boolean(v);
        out->set |= COMPASS_SET_PARALLEL_TOOL_CALLS;
    }
    if (json_object_object_get_ex(root, "stop", &v) && !json_object_is_type(v, json_type_null)) {
        if (json_object_is_type(v, json_type_string)) {
            compass_str *st = cps_arena_alloc(a, sizeof(*st));
            if (!st)
                return fail(err, COMPASS_ENOMEM, "out of memory");
            st[0] = jstr(a, v, &ok);
            out->stop = st;
            out->n_stop = 1;
        } else if (json_object_is_type(v, json_type_array)) {
            size_t n = json_object_array_length(v);
            if (n > 4)
                return fail(err, COMPASS_EINVAL, "stop: at most 4 sequences");
            compass_str *st = cps_arena_calloc(a, (n ? n : 1) * sizeof(*st));
            if (!st)
                return fail(err, COMPASS_ENOMEM, "out of memory");
            for (size_t i = 0; i < n; i++) {
                json_object *s = json_object_array_get_idx(v, i);
                if (!json_object_is_type(s, json_type_string))
                    return fail(err, COMPASS_EINVAL, "stop[%zu]: expected a string", i);
                st[i] = jstr(a, s, &ok);
            }
            out->stop = st;
            out->n_stop = n;
        } else {
            return fail(err, COMPASS_EINVAL, "stop: expected a string or an array of strings");
        }
    }
    if (json_object_object_get_ex(root, "response_format", &v) &&
        !json_object_is_type(v, json_type_null)) {
        json_object *ty;
        if (!json_object_is_type(v, json_type_object) ||
            !json_object_object_get_ex(v, "type", &ty) || !json_object_is_type(ty, json_type_string))
            return fail(err, COMPASS_EINVAL, "response_format: expected an object with a 'type'");
        const char *t = json_object_get_string(ty);
        if (strcmp(t, "text") && strcmp(t, "json_object") && strcmp(t, "json_schema"))
            return fail(err, COMPASS_EINVAL, "response_format.type: '%s' is not one of text, "
                        "json_object, json_schema", t);
        out->response_format = jdump(a, v, &ok);
    }
    if (json_object_object_get_ex(root, "reasoning_effort", &v) &&
        json_object_is_type(v, json_type_string))
        out->reasoning_effort = jstr(a, v, &ok);
    if (json_object_object_get_ex(root, "user", &v) && json_object_is_type(v, json_type_string))
        out->user = jstr(a, v, &ok);
    if (!ok)
        return fail(err, COMPASS_ENOMEM, "out of memory");
    return 0;
}

int cps_canon_parse_chat_general(cps_arena *a, const char *json, size_t len,
                                 compass_chat_request *out, compass_err *err)
{
    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    if (len > INT32_MAX)
        return fail(err, COMPASS_ELIMIT, "request body too large");
    json_tokener *tok = json_tokener_new_ex(64);
    if (!tok)
        return fail(err, COMPASS_ENOMEM, "out of memory");
    size_t used;
    json_object *root = js_tokener_parse(tok, json, len, &used);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    json_tokener_free(tok);
    if (!root || jerr != json_tokener_success) {
        if (root)
            json_object_put(root);
        return fail(err, COMPASS_EPARSE, "request body is not valid JSON: %s (at byte %zu)",
                    jerr == json_tokener_continue ? "unexpected end of input"
                                                  : json_tokener_error_desc(jerr),
                    used);
    }
    for (; used < len; used++) {
        char c = json[used];
        if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
            json_object_put(root);
            return fail(err, COMPASS_EPARSE,
                        "request body is not valid JSON: trailing data at byte %zu", used);
        }
    }
    int rc = parse_root(a, root, out, err);
    json_object_put(root);
    out->raw.ptr = json;
    out->raw.len = len;
    return rc;
}

/* ---- the fast path: reading the body in place ----
 *
 * json_scan walks the body without building a tree; every value that json-c's tree would
 * give us is read straight from the bytes: plain strings are copied, escaped ones decoded
 * here, short numbers read exactly. Only the sub-values the general path re-serialises
 * (parameters, non-string arguments, response_format), a lone surrogate and the rare number
 * not read exactly here go through json-c, each on just its own bytes.
 *
 * It declines (returns -1, and cps_canon_parse_chat runs the general path from scratch) on
 * anything it is not sure of: every client mistake (so the general path writes the message),
 * a duplicate key the fields read (json-c keeps the last), an escaped key, deep nesting,
 * json-c's leniencies (the scanner is strict) and out of memory. What it answers is exactly
 * what the general path would. */

#define FAST_DEPTH 32 /* below the general tokener's 64: what the scanner takes, json-c takes */

typedef struct fast {
    cps_arena *a;
    js_keep keep; /* json-c, for the few spans decoded with it */
} fast;

/* Frees what json-c decoded for one value; the tokener is kept for the next. */
static void fast_drop(fast *f)
{
    for (int i = 0; i < f->keep.n; i++)
        json_object_put(f->keep.objs[i]);
    f->keep.n = 0;
}

/* The next member of the object being read whose key is one of keys[0..n): 1 with *ki set
 * (its value comes next), 0 at the end of the object, -1 to decline: bad JSON, an escaped
 * key (it might spell a kept one) or a kept key seen twice. Other members are skipped. */
static int fast_member(json_scan *s, const js_key *keys, int n, unsigned *seen, int *ki)
{
    size_t i;
    int r;
    while ((r = js_member_key(s, keys, (size_t)n, &i)) > 0) {
        if (i == (size_t)n) {
            if (js_skip(s))
                return -1;
            continue;
        }
        if (*seen & (1u << i))
            return -1;
        *seen |= 1u << i;
        *ki = (int)i;
        return 1;
    }
    return r;
}

/* Whether string value v is exactly lit, with no escapes (json-c compares the decoded C
 * string; an escaped one is left to it). */
static int fast_is(const js_val *v, const char *lit)
{
    return js_key_is(v, lit);
}

/* String v decoded by json-c, copied into the arena. */
static int fast_jc_string(fast *f, const js_val *v, compass_str *out)
{
    compass_str s;
    int rc = -1;
    if (!js_string(&f->keep, v, &s)) {
        *out = dup_str(f->a, s.ptr, s.len);
        rc = out->ptr ? 0 : -1;
    }
    fast_drop(f);
    return rc;
}

static unsigned fast_hex4(const char *p)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = (unsigned char)p[i];
        v = v << 4 | (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

/* Decodes string v (escaped) into the arena byte for byte as json-c does: \u escapes and
 * surrogate pairs to UTF-8, \u0000 to a NUL byte kept in the length. A lone surrogate (json-c
 * writes U+FFFD for it) is left to json-c itself. The scanner has checked every escape. */
static int fast_unescape(fast *f, const js_val *v, compass_str *out)
{
    const char *p = v->ptr + 1, *end = v->ptr + v->len - 1;
    char *d = cps_arena_alloc(f->a, (size_t)(end - p) + 1), *o = d;
    if (!d)
        return -1;
    while (p < end) {
        const char *bs = memchr(p, '\\', (size_t)(end - p));
        size_t run = (size_t)((bs ? bs : end) - p);
        memcpy(o, p, run);
        o += run;
        p += run;
        if (!bs)
            break;
        p++;
        switch (*p++) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp = fast_hex4(p), lo;
            p += 4;
            if (cp >= 0xd800 && cp <= 0xdfff) {
                if (cp >= 0xdc00 || end - p < 6 || p[0] != '\\' || p[1] != 'u' ||
                    (lo = fast_hex4(p + 2)) < 0xdc00 || lo > 0xdfff)
                    return fast_jc_string(f, v, out);
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;
            }
            if (cp < 0x80) {
                *o++ = (char)cp;
            } else if (cp < 0x800) {
                *o++ = (char)(0xc0 | cp >> 6);
                *o++ = (char)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                *o++ = (char)(0xe0 | cp >> 12);
                *o++ = (char)(0x80 | (cp >> 6 & 0x3f));
                *o++ = (char)(0x80 | (cp & 0x3f));
            } else {
                *o++ = (char)(0xf0 | cp >> 18);
                *o++ = (char)(0x80 | (cp >> 12 & 0x3f));
                *o++ = (char)(0x80 | (cp >> 6 & 0x3f));
                *o++ = (char)(0x80 | (cp & 0x3f));
            }
            break;
        }
        default: /* '"', '\\', '/' */
            *o++ = p[-1];
            break;
        }
    }
    *o = '\0';
    out->ptr = d;
    out->len = (size_t)(o - d);
    return 0;
}

/* Copies string v into the arena, decoded, as jstr does for json-c's string. */
static int fast_str(fast *f, const js_val *v, compass_str *out)
{
    if (v->escaped)
        return fast_unescape(f, v, out);
    *out = dup_str(f->a, v->ptr + 1, v->len - 2);
    return out->ptr ? 0 : -1;
}

/* Value v decoded by json-c and written back as jdump writes it. */
static int fast_dump(fast *f, const js_val *v, compass_str *out)
{
    json_object *o;
    int ok = 0;
    if (!js_decode(&f->keep, v, &o)) {
        ok = 1;
        *out = jdump(f->a, o, &ok);
    }
    fast_drop(f);
    return ok ? 0 : -1;
}

/* A number as json-c holds it: an int64 (json-c saturates a too large integer; its uint64
 * for one above INT64_MAX reads back as INT64_MAX) or a double. */
typedef struct fast_num {
    int is_double;
    int64_t i;
    double d;
} fast_num;

/* Reads number v exactly as json-c does. Integers are read here, saturating like strtoll;
 * a decimal of at most 15 digits with a power of ten of at most 22 is one correctly rounded
 * IEEE operation on exact operands, so it equals the correctly rounded strtod json-c calls
 * (Clinger's fast path); other decimals are decoded with json-c. */
static int fast_number(fast *f, const js_val *v, fast_num *out)
{
    static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    const char *p = v->ptr, *end = v->ptr + v->len;
    int neg = *p == '-', digits = 0, frac = 0;
    uint64_t m = 0;
    if (neg)
        p++;
    for (; p < end && js_is_digit(*p); p++, digits++)
        if (digits < 19) /* 19 digits fit a uint64 */
            m = m * 10 + (uint64_t)(*p - '0');
    if (p == end) {
        out->is_double = 0;
        if (neg)
            out->i = digits > 19 || m > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)m;
        else
            out->i = digits > 19 || m > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)m;
        out->d = (double)out->i;
        return 0;
    }
    out->is_double = 1;
    if (*p == '.')
        for (p++; p < end && js_is_digit(*p); p++, digits++, frac++)
            if (digits < 19)
                m = m * 10 + (uint64_t)(*p - '0');
    int e10 = -frac;
    if (p < end) { /* the exponent */
        int eneg = 0, ex = 0, ed = 0;
        p++;
        if (*p == '+' || *p == '-')
            eneg = *p++ == '-';
        for (; p < end; p++, ed++)
            if (ed < 4)
                ex = ex * 10 + (*p - '0');
        if (ed > 4)
            goto general;
        e10 += eneg ? -ex : ex;
    }
    if (digits > 15 || e10 < -22 || e10 > 22)
        goto general;
    double d = (double)m;
    d = e10 < 0 ? d / pow10[-e10] : d * pow10[e10];
    out->d = neg ? -d : d;
    out->i = 0;
    return 0;
general:;
    json_object *o;
    int rc = -1;
    if (!js_decode(&f->keep, v, &o) && json_object_is_type(o, json_type_double)) {
        out->d = json_object_get_double(o);
        out->i = json_object_get_int64(o);
        rc = 0;
    }
    fast_drop(f);
    return rc;
}

/* num_field on a scanned value. */
static int fast_double(fast *f, const js_val *v, double lo, double hi, double *dst,
                       unsigned bit, unsigned *set)
{
    fast_num x;
    if (v->type == JS_NONE || v->type == JS_NULL)
        return 0;
    if (v->type != JS_NUMBER || fast_number(f, v, &x))
        return -1;
    double d = x.is_double ? x.d : (double)x.i;
    if (!(d >= lo && d <= hi))
        return -1;
    *dst = d;
    *set |= bit;
    return 0;
}

/* int_field on a scanned value, with is_integer's rule for a double. */
static int fast_int(fast *f, const js_val *v, int64_t lo, int64_t *dst, unsigned bit,
                    unsigned *set)
{
    fast_num x;
    int64_t i;
    if (v->type == JS_NONE || v->type == JS_NULL)
        return 0;
    if (v->type != JS_NUMBER || fast_number(f, v, &x))
        return -1;
    if (!x.is_double)
        i = x.i;
    else if (isfinite(x.d) && floor(x.d) == x.d && fabs(x.d) < 9e15)
        i = (int64_t)x.d;
    else
        return -1;
    if (i < lo)
        return -1;
    *dst = i;
    *set |= bit;
    return 0;
}

/* A boolean, or absent/null (left as it is): 0, or -1 for anything else. */
static int fast_bool(const js_val *v, int *dst, int *given)
{
    if (v->type == JS_NONE || v->type == JS_NULL)
        return 0;
    if (v->type != JS_TRUE && v->type != JS_FALSE)
        return -1;
    *dst = v->type == JS_TRUE;
    if (given)
        *given = 1;
    return 0;
}

/* A growing array in the arena (declined requests waste what they grew). */
typedef struct fast_vec {
    void *ptr;
    size_t n, cap;
} fast_vec;

/* A zeroed new last element of v, NULL on OOM. */
static void *fast_push(cps_arena *a, fast_vec *v, size_t size)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        void *p = cap <= SIZE_MAX / size ? cps_arena_alloc(a, cap * size) : NULL;
        if (!p)
            return NULL;
        if (v->n)
            memcpy(p, v->ptr, v->n * size);
        v->ptr = p;
        v->cap = cap;
    }
    void *e = (char *)v->ptr + v->n++ * size;
    memset(e, 0, size);
    return e;
}

/* The array's elements; an empty one still gets storage, as the general path's
 * calloc(n ? n : 1) does (so parts, tool_calls, tools say "given, empty"). */
static void *fast_vec_done(cps_arena *a, fast_vec *v, size_t size)
{
    if (!v->ptr)
        v->ptr = cps_arena_calloc(a, size);
    return v->ptr;
}

/* Reads the array that comes next into v, each element into a zeroed new slot of size bytes
 * by elem. 0, or -1 on bad JSON, no memory, or an element elem refuses. */
static int fast_array(fast *f, json_scan *s, fast_vec *v, size_t size,
                      int (*elem)(fast *f, json_scan *s, void *out))
{
    int r;
    if (js_begin(s, '['))
        return -1;
    while ((r = js_elem(s)) > 0) {
        void *e = fast_push(f->a, v, size);
        if (!e || elem(f, s, e))
            return -1;
    }
    return r;
}

static int fast_part(fast *f, json_scan *s, void *out)
{
    compass_content_part *part = out;
    enum { K_TYPE, K_TEXT, K_IMAGE_URL, K_N };
    static const js_key keys[K_N] = {JS_KEY("type"), JS_KEY("text"), JS_KEY("image_url")};
    enum { K_URL, K_DETAIL, K_UN };
    static const js_key ukeys[K_UN] = {JS_KEY("url"), JS_KEY("detail")};
    js_val type = {0}, text = {0}, url = {0}, detail = {0};
    js_type image = JS_NONE;
    unsigned seen = 0, useen = 0;
    int ki, r;
    if (js_begin(s, '{'))
        return -1;
    while ((r = fast_member(s, keys, K_N, &seen, &ki)) > 0) {
        if (ki == K_TYPE) {
            r = js_value(s, &type);
        } else if (ki == K_TEXT) {
            r = js_value(s, &text);
        } else if ((image = js_peek(s)) == JS_OBJECT) {
            if (js_begin(s, '{'))
                return -1;
            while ((r = fast_member(s, ukeys, K_UN, &useen, &ki)) > 0)
                if (js_value(s, ki == K_URL ? &url : &detail))
                    return -1;
        } else {
            r = js_value(s, &url);
        }
        if (r < 0)
            return -1;
    }
    if (r < 0)
        return -1;
    if (fast_is(&type, "text")) {
        part->type = COMPASS_PART_TEXT;
        return text.type == JS_STRING ? fast_str(f, &text, &part->text) : -1;
    }
    if (!fast_is(&type, "image_url") || url.type != JS_STRING ||
        (image != JS_STRING && image != JS_OBJECT))
        return -1;
    part->type = COMPASS_PART_IMAGE_URL;
    if (fast_str(f, &url, &part->url))
        return -1;
    return detail.type == JS_STRING ? fast_str(f, &detail, &part->detail) : 0;
}

static int fast_content(fast *f, json_scan *s, compass_message *m)
{
    js_val v;
    switch (js_peek(s)) {
    case JS_NULL:
        m->has_content = 0;
        return js_skip(s);
    case JS_STRING:
        m->has_content = 1;
        return js_value(s, &v) || fast_str(f, &v, &m->content) ? -1 : 0;
    case JS_ARRAY:
        break;
    default:
        return -1;
    }
    fast_vec parts = {0};
    compass_content_part *ps;
    if (fast_array(f, s, &parts, sizeof(*ps), fast_part) ||
        !(ps = fast_vec_done(f->a, &parts, sizeof(*ps))))
        return -1;
    size_t text_len = 0;
    for (size_t j = 0; j < parts.n; j++)
        text_len += ps[j].text.len;
    char *all = cps_arena_alloc(f->a, text_len + 1);
    if (!all)
        return -1;
    size_t off = 0;
    for (size_t j = 0; j < parts.n; j++)
        if (ps[j].text.len) {
            memcpy(all + off, ps[j].text.ptr, ps[j].text.len);
            off += ps[j].text.len;
        }
    all[off] = '\0';
    m->has_content = 1;
    m->content.ptr = all;
    m->content.len = off;
    m->parts = ps;
    m->n_parts = parts.n;
    return 0;
}

/* Reads the object that comes next the way tool calls and tools are written: the value of
 * keys[0] ("id", "type") into *first, and the members of keys[1] ("function") that
 * fkeys[0..nf) name into fn[]; *seen gets which of keys came. 0, or -1 on bad JSON or what
 * fast_member refuses. */
static int fast_fn_object(json_scan *s, const js_key keys[2], const js_key *fkeys, int nf,
                          js_val *first, js_val *fn, unsigned *seen)
{
    unsigned fseen = 0;
    int ki, r;
    *seen = 0;
    if (js_begin(s, '{'))
        return -1;
    while ((r = fast_member(s, keys, 2, seen, &ki)) > 0) {
        if (ki == 0) {
            if (js_value(s, first))
                return -1;
            continue;
        }
        if (js_begin(s, '{'))
            return -1;
        while ((r = fast_member(s, fkeys, nf, &fseen, &ki)) > 0)
            if (js_value(s, &fn[ki]))
                return -1;
        if (r < 0)
            return -1;
    }
    return r;
}

static int fast_tool_call(fast *f, json_scan *s, void *out)
{
    compass_tool_call *c = out;
    static const js_key keys[2] = {JS_KEY("id"), JS_KEY("function")};
    enum { K_NAME, K_ARGUMENTS, K_FN };
    static const js_key fkeys[K_FN] = {JS_KEY("name"), JS_KEY("arguments")};
    js_val id = {0}, fn[K_FN] = {{0}}, *name = &fn[K_NAME], *args = &fn[K_ARGUMENTS];
    unsigned seen;
    if (fast_fn_object(s, keys, fkeys, K_FN, &id, fn, &seen) || name->type != JS_STRING)
        return -1;
    if ((id.type == JS_STRING && fast_str(f, &id, &c->id)) || fast_str(f, name, &c->name))
        return -1;
    if (args->type == JS_STRING)
        return fast_str(f, args, &c->arguments);
    return args->type == JS_NONE ? 0 : fast_dump(f, args, &c->arguments);
}

static int fast_tool_calls(fast *f, json_scan *s, compass_message *m)
{
    fast_vec calls = {0};
    if (js_peek(s) == JS_NULL)
        return js_skip(s);
    if (fast_array(f, s, &calls, sizeof(*m->tool_calls), fast_tool_call) ||
        !(m->tool_calls = fast_vec_done(f->a, &calls, sizeof(*m->tool_calls))))
        return -1;
    m->n_tool_calls = calls.n;
    return 0;
}

static int fast_role(const js_val *v)
{
    static const char *const names[] = {"system", "user", "assistant", "tool", "developer"};
    static const int roles[] = {COMPASS_ROLE_SYSTEM, COMPASS_ROLE_USER, COMPASS_ROLE_ASSISTANT,
                                COMPASS_ROLE_TOOL, COMPASS_ROLE_DEVELOPER};
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
        if (fast_is(v, names[i]))
            return roles[i];
    return 0;
}

static int fast_message(fast *f, json_scan *s, void *out)
{
    compass_message *m = out;
    enum { K_ROLE, K_CONTENT, K_TOOL_CALLS, K_NAME, K_TOOL_CALL_ID, K_N };
    static const js_key keys[K_N] = {JS_KEY("role"), JS_KEY("content"), JS_KEY("tool_calls"),
                                       JS_KEY("name"), JS_KEY("tool_call_id")};
    js_val role = {0}, name = {0}, call_id = {0};
    unsigned seen = 0;
    int ki, r;
    if (js_begin(s, '{'))
        return -1;
    while ((r = fast_member(s, keys, K_N, &seen, &ki)) > 0) {
        switch (ki) {
        case K_ROLE: r = js_value(s, &role); break;
        case K_CONTENT: r = fast_content(f, s, m); break;
        case K_TOOL_CALLS: r = fast_tool_calls(f, s, m); break;
        case K_NAME: r = js_value(s, &name); break;
        default: r = js_value(s, &call_id); break;
        }
        if (r < 0)
            return -1;
    }
    if (r < 0 || !(m->role = fast_role(&role)))
        return -1;
    if ((seen & 1u << K_TOOL_CALLS) && m->role != COMPASS_ROLE_ASSISTANT)
        return -1;
    if (name.type == JS_STRING && fast_str(f, &name, &m->name))
        return -1;
    if (m->role == COMPASS_ROLE_TOOL &&
        (call_id.type != JS_STRING || fast_str(f, &call_id, &m->tool_call_id)))
        return -1;
    if (!m->has_content && !m->n_tool_calls && m->role != COMPASS_ROLE_ASSISTANT)
        return -1;
    return 0;
}

static int fast_messages(fast *f, json_scan *s, compass_chat_request *out)
{
    fast_vec ms = {0};
    if (fast_array(f, s, &ms, sizeof(*out->messages), fast_message) || !ms.n)
        return -1;
    out->messages = ms.ptr;
    out->n_messages = ms.n;
    return 0;
}

static int fast_tool(fast *f, json_scan *s, void *out)
{
    compass_tool *t = out;
    enum { K_TYPE, K_FUNCTION, K_N };
    static const js_key keys[K_N] = {JS_KEY("type"), JS_KEY("function")};
    enum { K_NAME, K_DESCRIPTION, K_PARAMETERS, K_STRICT, K_FN };
    static const js_key fkeys[K_FN] = {JS_KEY("name"), JS_KEY("description"),
                                         JS_KEY("parameters"), JS_KEY("strict")};
    js_val type = {0}, fn[K_FN] = {{0}};
    unsigned seen;
    if (fast_fn_object(s, keys, fkeys, K_FN, &type, fn, &seen) ||
        (type.type != JS_NONE && !fast_is(&type, "function")) ||
        !(seen & 1u << K_FUNCTION) || fn[K_NAME].type != JS_STRING ||
        fast_str(f, &fn[K_NAME], &t->name) || !t->name.len)
        return -1;
    if (fn[K_DESCRIPTION].type == JS_STRING && fast_str(f, &fn[K_DESCRIPTION], &t->description))
        return -1;
    if (fn[K_PARAMETERS].type == JS_OBJECT) {
        if (fast_dump(f, &fn[K_PARAMETERS], &t->parameters))
            return -1;
    } else if (fn[K_PARAMETERS].type != JS_NONE && fn[K_PARAMETERS].type != JS_NULL) {
        return -1;
    }
    t->strict = fn[K_STRICT].type == JS_TRUE ? 1 : fn[K_STRICT].type == JS_FALSE ? 0 : -1;
    return 0;
}

static int fast_tools(fast *f, json_scan *s, compass_chat_request *out)
{
    fast_vec ts = {0};
    if (js_peek(s) == JS_NULL)
        return js_skip(s);
    if (fast_array(f, s, &ts, sizeof(*out->tools), fast_tool) ||
        !(out->tools = fast_vec_done(f->a, &ts, sizeof(*out->tools))))
        return -1;
    out->n_tools = ts.n;
    return 0;
}

static int fast_tool_choice(fast *f, json_scan *s, compass_chat_request *out)
{
    static const js_key fkey[1] = {JS_KEY("function")}, nkey[1] = {JS_KEY("name")};
    js_val v = {0}, name = {0};
    unsigned seen = 0, fseen = 0;
    int ki, r;
    switch (js_peek(s)) {
    case JS_NULL:
        return js_skip(s);
    case JS_STRING:
        if (js_value(s, &v))
            return -1;
        out->tool_choice = fast_is(&v, "auto")       ? COMPASS_TOOL_CHOICE_AUTO
                           : fast_is(&v, "none")     ? COMPASS_TOOL_CHOICE_NONE
                           : fast_is(&v, "required") ? COMPASS_TOOL_CHOICE_REQUIRED
                                                     : COMPASS_TOOL_CHOICE_UNSET;
        return out->tool_choice ? 0 : -1;
    case JS_OBJECT:
        break;
    default:
        return -1;
    }
    if (js_begin(s, '{'))
        return -1;
    while ((r = fast_member(s, fkey, 1, &seen, &ki)) > 0) {
        if (js_begin(s, '{'))
            return -1;
        while ((r = fast_member(s, nkey, 1, &fseen, &ki)) > 0)
            if (js_value(s, &name))
                return -1;
        if (r < 0)
            return -1;
    }
    if (r < 0 || name.type != JS_STRING || fast_str(f, &name, &out->tool_choice_name))
        return -1;
    out->tool_choice = COMPASS_TOOL_CHOICE_FUNCTION;
    return 0;
}

static int fast_stream_options(json_scan *s, compass_chat_request *out)
{
    static const js_key keys[1] = {JS_KEY("include_usage")};
    js_val iu = {0};
    unsigned seen = 0;
    int ki, r;
    if (js_peek(s) == JS_NULL)
        return js_skip(s);
    if (js_begin(s, '{'))
        return -1;
    while ((r = fast_member(s, keys, 1, &seen, &ki)) > 0)
        if (js_value(s, &iu))
            return -1;
    if (r < 0 || iu.type == JS_NULL)
        return -1;
    return fast_bool(&iu, &out->include_usage, NULL);
}

static int fast_stop(fast *f, json_scan *s, compass_chat_request *out)
{
    compass_str tmp[4];
    compass_str *st;
    js_val v;
    size_t n = 0;
    int r;
    switch (js_peek(s)) {
    case JS_NULL:
        return js_skip(s);
    case JS_STRING:
        if (js_value(s, &v) || !(st = cps_arena_alloc(f->a, sizeof(*st))) ||
            fast_str(f, &v, &st[0]))
            return -1;
        out->stop = st;
        out->n_stop = 1;
        return 0;
    case JS_ARRAY:
        break;
    default:
        return -1;
    }
    if (js_begin(s, '['))
        return -1;
    while ((r = js_elem(s)) > 0) {
        if (n == 4 || js_value(s, &v) || v.type != JS_STRING || fast_str(f, &v, &tmp[n]))
            return -1;
        n++;
    }
    if (r < 0 || !(st = cps_arena_calloc(f->a, (n ? n : 1) * sizeof(*st))))
        return -1;
    if (n)
        memcpy(st, tmp, n * sizeof(*st));
    out->stop = st;
    out->n_stop = n;
    return 0;
}

static int fast_response_format(fast *f, json_scan *s, compass_chat_request *out)
{
    static const js_key keys[1] = {JS_KEY("type")};
    js_val type = {0}, all = {0};
    unsigned seen = 0;
    int ki, r;
    if (js_peek(s) == JS_NULL)
        return js_skip(s);
    size_t start = s->i;
    if (js_begin(s, '{'))
        return -1;
    while ((r = fast_member(s, keys, 1, &seen, &ki)) > 0)
        if (js_value(s, &type))
            return -1;
    if (r < 0 || (!fast_is(&type, "text") && !fast_is(&type, "json_object") &&
                  !fast_is(&type, "json_schema")))
        return -1;
    all.type = JS_OBJECT;
    all.ptr = s->p + start;
    all.len = s->i - start;
    return fast_dump(f, &all, &out->response_format);
}

enum {
    RK_MODEL, RK_MESSAGES, RK_TOOLS, RK_TOOL_CHOICE, RK_STREAM, RK_STREAM_OPTIONS,
    RK_TEMPERATURE, RK_TOP_P, RK_PRESENCE_PENALTY, RK_FREQUENCY_PENALTY, RK_MAX_TOKENS,
    RK_MAX_COMPLETION_TOKENS, RK_SEED, RK_N, RK_PARALLEL_TOOL_CALLS, RK_STOP,
    RK_RESPONSE_FORMAT, RK_REASONING_EFFORT, RK_USER, RK_COUNT
};

static const js_key root_keys[RK_COUNT] = {
    JS_KEY("model"), JS_KEY("messages"), JS_KEY("tools"), JS_KEY("tool_choice"), JS_KEY("stream"),
    JS_KEY("stream_options"), JS_KEY("temperature"), JS_KEY("top_p"), JS_KEY("presence_penalty"),
    JS_KEY("frequency_penalty"), JS_KEY("max_tokens"), JS_KEY("max_completion_tokens"), JS_KEY("seed"),
    JS_KEY("n"), JS_KEY("parallel_tool_calls"), JS_KEY("stop"), JS_KEY("response_format"),
    JS_KEY("reasoning_effort"), JS_KEY("user")};

static int fast_root(fast *f, const char *json, size_t len, compass_chat_request *out)
{
    json_scan s;
    js_val v[RK_COUNT] = {{0}}; /* the scalars, read once the object is done */
    unsigned seen = 0;
    int ki, r, ptc = 0;
    js_init(&s, json, len, FAST_DEPTH);
    if (js_begin(&s, '{'))
        return -1;
    while ((r = fast_member(&s, root_keys, RK_COUNT, &seen, &ki)) > 0) {
        switch (ki) {
        case RK_MESSAGES: r = fast_messages(f, &s, out); break;
        case RK_TOOLS: r = fast_tools(f, &s, out); break;
        case RK_TOOL_CHOICE: r = fast_tool_choice(f, &s, out); break;
        case RK_STREAM_OPTIONS: r = fast_stream_options(&s, out); break;
        case RK_STOP: r = fast_stop(f, &s, out); break;
        case RK_RESPONSE_FORMAT: r = fast_response_format(f, &s, out); break;
        default: r = js_value(&s, &v[ki]); break;
        }
        if (r < 0)
            return -1;
    }
    if (r < 0 || js_end(&s) || !(seen & 1u << RK_MESSAGES) || v[RK_MODEL].type != JS_STRING ||
        fast_str(f, &v[RK_MODEL], &out->model) || !out->model.len)
        return -1;
    if (out->tool_choice == COMPASS_TOOL_CHOICE_FUNCTION) {
        size_t i;
        for (i = 0; i < out->n_tools; i++)
            if (out->tools[i].name.len == out->tool_choice_name.len &&
                !memcmp(out->tools[i].name.ptr, out->tool_choice_name.ptr,
                        out->tool_choice_name.len))
                break;
        if (i == out->n_tools)
            return -1;
    }
    if (fast_bool(&v[RK_STREAM], &out->stream, NULL) ||
        fast_double(f, &v[RK_TEMPERATURE], 0, 2, &out->temperature, COMPASS_SET_TEMPERATURE,
                    &out->set) ||
        fast_double(f, &v[RK_TOP_P], 0, 1, &out->top_p, COMPASS_SET_TOP_P, &out->set) ||
        fast_double(f, &v[RK_PRESENCE_PENALTY], -2, 2, &out->presence_penalty,
                    COMPASS_SET_PRESENCE_PENALTY, &out->set) ||
        fast_double(f, &v[RK_FREQUENCY_PENALTY], -2, 2, &out->frequency_penalty,
                    COMPASS_SET_FREQUENCY_PENALTY, &out->set) ||
        fast_int(f, &v[RK_MAX_TOKENS], 1, &out->max_tokens, COMPASS_SET_MAX_TOKENS,
                 &out->set) ||
        fast_int(f, &v[RK_MAX_COMPLETION_TOKENS], 1, &out->max_completion_tokens,
                 COMPASS_SET_MAX_COMPLETION_TOKENS, &out->set) ||
        fast_int(f, &v[RK_SEED], INT64_MIN, &out->seed, COMPASS_SET_SEED, &out->set) ||
        fast_int(f, &v[RK_N], 1, &out->n, COMPASS_SET_N, &out->set) ||
        fast_bool(&v[RK_PARALLEL_TOOL_CALLS], &out->parallel_tool_calls, &ptc))
        return -1;
    if (ptc)
        out->set |= COMPASS_SET_PARALLEL_TOOL_CALLS;
    if (v[RK_REASONING_EFFORT].type == JS_STRING &&
        fast_str(f, &v[RK_REASONING_EFFORT], &out->reasoning_effort))
        return -1;
    if (v[RK_USER].type == JS_STRING && fast_str(f, &v[RK_USER], &out->user))
        return -1;
    return 0;
}

int cps_canon_parse_chat_fast(cps_arena *a, const char *json, size_t len,
                              compass_chat_request *out)
{
    fast f;
    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    if (len > INT32_MAX)
        return 1;
    f.a = a;
    js_keep_init(&f.keep, 64);
    int rc = fast_root(&f, json, len, out);
    js_keep_release(&f.keep);
    if (rc) {
        memset(out, 0, sizeof(*out));
        out->size = sizeof(*out);
        return 1;
    }
    out->raw.ptr = json;
    out->raw.len = len;
    return 0;
}

int cps_canon_parse_chat(cps_arena *a, const char *json, size_t len, compass_chat_request *out,
                         compass_err *err)
{
    if (!cps_canon_parse_chat_fast(a, json, len, out))
        return 0;
    return cps_canon_parse_chat_general(a, json, len, out, err);
}

static json_object *parse_root_object(const char *json, size_t len, compass_err *err, int *rc)
{
    *rc = 0;
    if (len > INT32_MAX) {
        *rc = fail(err, COMPASS_ELIMIT, "request body too large");
        return NULL;
    }
    json_tokener *tok = json_tokener_new_ex(64);
    if (!tok) {
        *rc = fail(err, COMPASS_ENOMEM, "out of memory");
        return NULL;
    }
    size_t used;
    json_object *root = js_tokener_parse(tok, json, len, &used);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    json_tokener_free(tok);
    if (!root || jerr != json_tokener_success) {
        if (root)
            json_object_put(root);
        *rc = fail(err, COMPASS_EPARSE, "request body is not valid JSON: %s (at byte %zu)",
                   jerr == json_tokener_continue ? "unexpected end of input"
                                                 : json_tokener_error_desc(jerr),
                   used);
        return NULL;
    }
    for (; used < len; used++) {
        char c = json[used];
        if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
            json_object_put(root);
            *rc = fail(err, COMPASS_EPARSE,
                       "request body is not valid JSON: trailing data at byte %zu", used);
            return NULL;
        }
    }
    if (!json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        *rc = fail(err, COMPASS_EINVAL, "request body must be a JSON object");
        return NULL;
    }
    return root;
}

int cps_canon_parse_embed(cps_arena *a, const char *json, size_t len, compass_embed_request *out,
                          compass_err *err)
{
    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    int rc, ok = 1;
    json_object *root = parse_root_object(json, len, err, &rc), *v;
    if (!root)
        return rc;
    if (!json_object_object_get_ex(root, "model", &v) || !json_object_is_type(v, json_type_string)
        || json_object_get_string_len(v) == 0) {
        rc = fail(err, COMPASS_EINVAL, "model: required string");
        goto out;
    }
    out->model = jstr(a, v, &ok);
    if (!json_object_object_get_ex(root, "input", &v)) {
        rc = fail(err, COMPASS_EINVAL, "input: required (a string or an array of strings)");
        goto out;
    }
    if (json_object_is_type(v, json_type_string)) {
        compass_str *in = cps_arena_alloc(a, sizeof(*in));
        if (!in) {
            rc = fail(err, COMPASS_ENOMEM, "out of memory");
            goto out;
        }
        in[0] = jstr(a, v, &ok);
        out->inputs = in;
        out->n_inputs = 1;
    } else if (json_object_is_type(v, json_type_array)) {
        size_t n = json_object_array_length(v);
        if (n == 0 || n > 2048) {
            rc = fail(err, COMPASS_EINVAL, "input: must hold 1 to 2048 strings");
            goto out;
        }
        compass_str *in = cps_arena_calloc(a, n * sizeof(*in));
        if (!in) {
            rc = fail(err, COMPASS_ENOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            json_object *e = json_object_array_get_idx(v, i);
            if (!json_object_is_type(e, json_type_string)) {
                rc = fail(err, COMPASS_EINVAL, "input[%zu]: expected a string (token arrays "
                          "are not supported)", i);
                goto out;
            }
            in[i] = jstr(a, e, &ok);
        }
        out->inputs = in;
        out->n_inputs = n;
    } else {
        rc = fail(err, COMPASS_EINVAL, "input: expected a string or an array of strings");
        goto out;
    }
    if (json_object_object_get_ex(root, "dimensions", &v) && !json_object_is_type(v, json_type_null)) {
        if (!is_integer(v) || json_object_get_int64(v) < 1) {
            rc = fail(err, COMPASS_EINVAL, "dimensions: expected a positive integer");
            goto out;
        }
        out->dimensions = json_object_get_int64(v);
    }
    if (json_object_object_get_ex(root, "encoding_format", &v) &&
        json_object_is_type(v, json_type_string)) {
        const char *f = json_object_get_string(v);
        if (strcmp(f, "float") && strcmp(f, "base64")) {
            rc = fail(err, COMPASS_EINVAL, "encoding_format: '%s' is not float or base64", f);
            goto out;
        }
        out->encoding_format = jstr(a, v, &ok);
    }
    if (json_object_object_get_ex(root, "user", &v) && json_object_is_type(v, json_type_string))
        out->user = jstr(a, v, &ok);
    out->raw.ptr = json;
    out->raw.len = len;
    rc = ok ? 0 : fail(err, COMPASS_ENOMEM, "out of memory");
out:
    json_object_put(root);
    return rc;
}

/* ---- writing ---- */

static int put_str(cps_buf *b, compass_str s)
{
    return cps_buf_json_str(b, s.ptr ? s.ptr : "", s.len);
}

static void write_usage(cps_buf *b, const compass_usage *u)
{
    cps_buf_puts(b, "{\"prompt_tokens\":");
    cps_buf_put_i64(b, (long long)u->prompt_tokens);
    cps_buf_puts(b, ",\"completion_tokens\":");
    cps_buf_put_i64(b, (long long)u->completion_tokens);
    cps_buf_puts(b, ",\"total_tokens\":");
    cps_buf_put_i64(b, (long long)(u->total_tokens ? u->total_tokens
                                                   : u->prompt_tokens + u->completion_tokens));
    cps_buf_puts(b, ",\"prompt_tokens_details\":{\"cached_tokens\":");
    cps_buf_put_i64(b, (long long)u->cached_tokens);
    cps_buf_puts(b, "},\"completion_tokens_details\":{\"reasoning_tokens\":");
    cps_buf_put_i64(b, (long long)u->reasoning_tokens);
    cps_buf_puts(b, "}}");
}

int cps_canon_write_response(cps_buf *b, const compass_chat_response *r, compass_str id,
                             compass_str model, int64_t created)
{
    cps_buf_puts(b, "{\"id\":");
    put_str(b, r->id.len ? r->id : id);
    cps_buf_puts(b, ",\"object\":\"chat.completion\",\"created\":");
    cps_buf_put_i64(b, (long long)(r->created ? r->created : created));
    cps_buf_puts(b, ",\"model\":");
    put_str(b, r->model.len ? r->model : model);
    cps_buf_puts(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                    "\"content\":");
    if (r->has_content)
        put_str(b, r->content);
    else
        cps_buf_puts(b, "null");
    cps_buf_puts(b, ",\"refusal\":");
    if (r->refusal.len)
        put_str(b, r->refusal);
    else
        cps_buf_puts(b, "null");
    if (r->n_tool_calls) {
        cps_buf_puts(b, ",\"tool_calls\":[");
        for (size_t i = 0; i < r->n_tool_calls; i++) {
            const compass_tool_call *t = &r->tool_calls[i];
            cps_buf_puts(b, i ? ",{\"id\":" : "{\"id\":");
            put_str(b, t->id);
            cps_buf_puts(b, ",\"type\":\"function\",\"function\":{\"name\":");
            put_str(b, t->name);
            cps_buf_puts(b, ",\"arguments\":");
            put_str(b, t->arguments.len ? t->arguments : compass_str_c("{}"));
            cps_buf_puts(b, "}}");
        }
        cps_buf_puts(b, "]");
    }
    const char *fin = cps_canon_finish_name(r->finish_reason);
    cps_buf_puts(b, "},\"logprobs\":null,\"finish_reason\":\"");
    cps_buf_puts(b, fin ? fin : "stop");
    cps_buf_puts(b, "\"}]");
    if (r->usage.present) {
        cps_buf_puts(b, ",\"usage\":");
        write_usage(b, &r->usage);
    }
    cps_buf_puts(b, "}");
    return b->oom ? COMPASS_ENOMEM : 0;
}

int cps_canon_write_chunk(cps_buf *b, const compass_chat_delta *d, compass_str id,
                          compass_str model, int64_t created, int usage_only)
{
    cps_buf_puts(b, "{\"id\":");
    put_str(b, id);
    cps_buf_puts(b, ",\"object\":\"chat.completion.chunk\",\"created\":");
    cps_buf_put_i64(b, (long long)created);
    cps_buf_puts(b, ",\"model\":");
    put_str(b, model);
    if (usage_only) {
        cps_buf_puts(b, ",\"choices\":[],\"usage\":");
        write_usage(b, &d->usage);
        cps_buf_puts(b, "}");
        return b->oom ? COMPASS_ENOMEM : 0;
    }
    cps_buf_puts(b, ",\"choices\":[{\"index\":0,\"delta\":{");
    int first = 1;
    if (d->role) {
        cps_buf_puts(b, "\"role\":\"");
        cps_buf_puts(b, cps_canon_role_name(d->role));
        cps_buf_puts(b, "\"");
        first = 0;
    }
    if (d->content.len || d->role) {
        cps_buf_puts(b, first ? "\"content\":" : ",\"content\":");
        put_str(b, d->content);
        first = 0;
    }
    if (d->refusal.len) {
        cps_buf_puts(b, first ? "\"refusal\":" : ",\"refusal\":");
        put_str(b, d->refusal);
        first = 0;
    }
    if (d->tool_index >= 0) {
        cps_buf_puts(b, first ? "\"tool_calls\":[{\"index\":" : ",\"tool_calls\":[{\"index\":");
        cps_buf_put_i64(b, d->tool_index);
        if (d->tool_id.len) {
            cps_buf_puts(b, ",\"id\":");
            put_str(b, d->tool_id);
            cps_buf_puts(b, ",\"type\":\"function\"");
        }
        cps_buf_puts(b, ",\"function\":{");
        if (d->tool_name.len) {
            cps_buf_puts(b, "\"name\":");
            put_str(b, d->tool_name);
            cps_buf_puts(b, ",");
        }
        cps_buf_puts(b, "\"arguments\":");
        put_str(b, d->tool_arguments);
        cps_buf_puts(b, "}}]");
    }
    const char *fin = cps_canon_finish_name(d->finish_reason);
    cps_buf_puts(b, "},\"logprobs\":null,\"finish_reason\":");
    if (fin) {
        cps_buf_puts(b, "\"");
        cps_buf_puts(b, fin);
        cps_buf_puts(b, "\"");
    } else {
        cps_buf_puts(b, "null");
    }
    cps_buf_puts(b, "}]}");
    return b->oom ? COMPASS_ENOMEM : 0;
}

int cps_canon_write_error(cps_buf *b, const char *message, const char *type, const char *param,
                          const char *code)
{
    cps_buf_puts(b, "{\"error\":{\"message\":");
    cps_buf_json_str(b, message, strlen(message));
    cps_buf_puts(b, ",\"type\":");
    cps_buf_json_str(b, type, strlen(type));
    cps_buf_puts(b, ",\"param\":");
    if (param)
        cps_buf_json_str(b, param, strlen(param));
    else
        cps_buf_puts(b, "null");
    cps_buf_puts(b, ",\"code\":");
    if (code)
        cps_buf_json_str(b, code, strlen(code));
    else
        cps_buf_puts(b, "null");
    cps_buf_puts(b, "}}");
    return b->oom ? COMPASS_ENOMEM : 0;
}

static void put_base64_floats(cps_buf *b, const float *v, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char in[3];
    size_t have = 0;
    char out[4];
    cps_buf_puts(b, "\"");
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        unsigned char le[4] = {(unsigned char)u, (unsigned char)(u >> 8),
                               (unsigned char)(u >> 16), (unsigned char)(u >> 24)};
        for (int k = 0; k < 4; k++) {
            in[have++] = le[k];
            if (have == 3) {
                out[0] = tab[in[0] >> 2];
                out[1] = tab[((in[0] & 3) << 4) | (in[1] >> 4)];
                out[2] = tab[((in[1] & 15) << 2) | (in[2] >> 6)];
                out[3] = tab[in[2] & 63];
                cps_buf_append(b, out, 4);
                have = 0;
            }
        }
    }
    if (have) {
        if (have == 1)
            in[1] = 0;
        out[0] = tab[in[0] >> 2];
        out[1] = tab[((in[0] & 3) << 4) | (in[1] >> 4)];
        out[2] = have == 2 ? tab[(in[1] & 15) << 2] : '=';
        out[3] = '=';
        cps_buf_append(b, out, 4);
    }
    cps_buf_puts(b, "\"");
}

int cps_canon_write_embed(cps_buf *b, const compass_embed_response *r, compass_str model,
                          int base64)
{
    cps_buf_puts(b, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < r->n_data; i++) {
        cps_buf_printf(b, "%s{\"object\":\"embedding\",\"index\":%zu,\"embedding\":",
                       i ? "," : "", i);
        if (base64) {
            put_base64_floats(b, r->data[i].values, r->data[i].n);
        } else {
            cps_buf_puts(b, "[");
            for (size_t k = 0; k < r->data[i].n; k++)
                cps_buf_printf(b, k ? ",%.9g" : "%.9g", (double)r->data[i].values[k]);
            cps_buf_puts(b, "]");
        }
        cps_buf_puts(b, "}");
    }
    cps_buf_puts(b, "],\"model\":");
    put_str(b, r->model.len ? r->model : model);
    cps_buf_printf(b, ",\"usage\":{\"prompt_tokens\":%lld,\"total_tokens\":%lld}}",
                   (long long)r->usage.prompt_tokens,
                   (long long)(r->usage.total_tokens ? r->usage.total_tokens
                                                     : r->usage.prompt_tokens));
    return b->oom ? COMPASS_ENOMEM : 0;
}
