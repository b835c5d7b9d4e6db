/* OpenAI chat completions JSON <-> the canonical model in plugin.h. Parsing uses json-c and
 * copies what it keeps into the request arena; writing appends JSON text to a cps_buf by hand
 * because it is on every response's path. */
#include "canon.h"

#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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

int cps_canon_parse_chat(cps_arena *a, const char *json, size_t len, compass_chat_request *out,
                         compass_err *err)
{
    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    if (len > INT32_MAX)
        return fail(err, COMPASS_ELIMIT, "request body too large");
    json_tokener *tok = json_tokener_new_ex(64);
    if (!tok)
        return fail(err, COMPASS_ENOMEM, "out of memory");
    json_object *root = json_tokener_parse_ex(tok, json, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
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
    json_object *root = json_tokener_parse_ex(tok, json, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
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
    cps_buf_printf(b,
                   "{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld,"
                   "\"prompt_tokens_details\":{\"cached_tokens\":%lld},"
                   "\"completion_tokens_details\":{\"reasoning_tokens\":%lld}}",
                   (long long)u->prompt_tokens, (long long)u->completion_tokens,
                   (long long)(u->total_tokens ? u->total_tokens
                                               : u->prompt_tokens + u->completion_tokens),
                   (long long)u->cached_tokens, (long long)u->reasoning_tokens);
}

int cps_canon_write_response(cps_buf *b, const compass_chat_response *r, compass_str id,
                             compass_str model, int64_t created)
{
    cps_buf_puts(b, "{\"id\":");
    put_str(b, r->id.len ? r->id : id);
    cps_buf_printf(b, ",\"object\":\"chat.completion\",\"created\":%lld,\"model\":",
                   (long long)(r->created ? r->created : created));
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
    cps_buf_printf(b, "},\"logprobs\":null,\"finish_reason\":\"%s\"}]", fin ? fin : "stop");
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
    cps_buf_printf(b, ",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":",
                   (long long)created);
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
        cps_buf_printf(b, "\"role\":\"%s\"", cps_canon_role_name(d->role));
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
        cps_buf_printf(b, "%s\"tool_calls\":[{\"index\":%d", first ? "" : ",", d->tool_index);
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
    if (fin)
        cps_buf_printf(b, "\"%s\"", fin);
    else
        cps_buf_puts(b, "null");
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
