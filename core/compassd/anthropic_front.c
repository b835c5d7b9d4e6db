/* Anthropic Messages <-> canonical (OpenAI chat completions) translation for compassd's
 * /v1/messages front door. Requests and whole responses go through json-c trees (keys keep
 * their insertion order, numbers keep the text the client wrote); stream events are written by
 * hand into a cps_buf because they are on every streamed token's path.
 *
 * Error messages name the field the way Anthropic's API does: a dotted path with array
 * indexes ("messages.1.content.0.type: ..."), and for shape mistakes the wording of the
 * validator behind Anthropic's API ("Field required", "Input should be a valid integer"). */
#include "anthropic_front.h"

#include "json_scan.h" /* js_tokener_parse: json-c with the surrogate pairs it misreads */

#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_OUT_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* OpenAI (and so the canonical model) accepts at most this many stop sequences. */
#define MAX_STOP 4

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

/* ---- small json-c helpers ------------------------------------------------------------------ */

/* Whether o has key k; *v is the value (NULL for JSON null). */
static int has(json_object *o, const char *k, json_object **v)
{
    json_object *x = NULL;
    if (!json_object_object_get_ex(o, k, &x))
        return 0;
    *v = x;
    return 1;
}

/* Like has() but a JSON null counts as absent (Anthropic's optional fields accept null). */
static int has_value(json_object *o, const char *k, json_object **v)
{
    return has(o, k, v) && *v != NULL;
}

static int is_type(json_object *o, json_type t)
{
    return o != NULL && json_object_is_type(o, t);
}

static int is_number(json_object *o)
{
    return is_type(o, json_type_int) || is_type(o, json_type_double);
}

static int is_integer(json_object *o)
{
    if (is_type(o, json_type_int))
        return 1;
    if (is_type(o, json_type_double)) {
        double d = json_object_get_double(o);
        return isfinite(d) && floor(d) == d && fabs(d) < 9e15;
    }
    return 0;
}

static const char *str_of(json_object *o)
{
    const char *s = json_object_get_string(o);
    return s ? s : "";
}

/* Adds a new reference of v under k. */
static void put_ref(json_object *dst, const char *k, json_object *v)
{
    json_object_object_add(dst, k, json_object_get(v));
}

static void put_str(json_object *dst, const char *k, const char *s, size_t n)
{
    json_object_object_add(dst, k, json_object_new_string_len(s, (int)n));
}

/* Parses len bytes of JSON text; NULL with *why set on failure. */
static json_object *parse_json(const char *json, size_t len, const char **why)
{
    *why = "empty body";
    if (!json || !len)
        return NULL;
    if (len > INT32_MAX) {
        *why = "body too large";
        return NULL;
    }
    json_tokener *tok = json_tokener_new_ex(128);
    if (!tok) {
        *why = "out of memory";
        return NULL;
    }
    size_t end;
    json_object *root = js_tokener_parse(tok, json, len, &end);
    enum json_tokener_error e = json_tokener_get_error(tok);
    if (e == json_tokener_continue) {
        *why = "unexpected end of input";
        json_object_put(root);
        root = NULL;
    } else if (e != json_tokener_success) {
        *why = json_tokener_error_desc(e);
        json_object_put(root);
        root = NULL;
    } else if (end < len) {
        /* trailing bytes other than whitespace are garbage */
        for (size_t i = end; i < len; i++)
            if (json[i] != ' ' && json[i] != '\n' && json[i] != '\r' && json[i] != '\t') {
                *why = "unexpected data after the JSON value";
                json_object_put(root);
                root = NULL;
                break;
            }
    }
    json_tokener_free(tok);
    return root;
}

/* Serialises o and appends it to out. */
static int emit_json(json_object *o, cps_buf *out, compass_err *err)
{
    size_t n = 0;
    const char *s = json_object_to_json_string_length(o, JSON_OUT_FLAGS, &n);
    if (!s || cps_buf_append(out, s, n))
        return fail(err, COMPASS_ENOMEM, "out of memory");
    return 0;
}

/* ---- request: Anthropic -> OpenAI ------------------------------------------------------------ */

/* The content block types Anthropic's Messages API knows, for the "does not match" message. */
#define BLOCK_TAGS                                                                             \
    "'text', 'image', 'document', 'search_result', 'thinking', 'redacted_thinking', "         \
    "'tool_use', 'tool_result', 'server_tool_use', 'web_search_tool_result'"

/* Types Anthropic accepts that have no OpenAI chat equivalent. */
static int is_untranslatable_block(const char *t)
{
    static const char *const names[] = {"document", "search_result", "server_tool_use",
                                        "web_search_tool_result", "web_fetch_tool_result",
                                        "code_execution_tool_result", "mcp_tool_use",
                                        "mcp_tool_result", "container_upload", NULL};
    for (size_t i = 0; names[i]; i++)
        if (!strcmp(t, names[i]))
            return 1;
    return 0;
}

/* Checks that block (at path) is an object with a string "type"; *type gets it. */
static int block_type(json_object *block, const char *path, const char **type,
                      compass_err *err)
{
    json_object *t;
    if (!is_type(block, json_type_object))
        return fail(err, COMPASS_EINVAL, "%s: Input should be a valid dictionary", path);
    if (!has_value(block, "type", &t))
        return fail(err, COMPASS_EINVAL, "%s: Unable to extract tag using discriminator 'type'",
                    path);
    if (!is_type(t, json_type_string))
        return fail(err, COMPASS_EINVAL, "%s.type: Input should be a valid string", path);
    *type = str_of(t);
    return 0;
}

/* A required string field of a block; empty strings allowed unless nonempty. */
static int req_string(json_object *o, const char *key, const char *path, json_object **v,
                      compass_err *err)
{
    if (!has(o, key, v))
        return fail(err, COMPASS_EINVAL, "%s.%s: Field required", path, key);
    if (!is_type(*v, json_type_string))
        return fail(err, COMPASS_EINVAL, "%s.%s: Input should be a valid string", path, key);
    return 0;
}

/* text block -> {"type":"text","text":...}; Anthropic refuses empty text blocks. */
static int text_part(json_object *block, const char *path, json_object **part,
                     compass_err *err)
{
    json_object *text;
    int rc = req_string(block, "text", path, &text, err);
    if (rc)
        return rc;
    if (json_object_get_string_len(text) == 0) {
        /* Anthropic names the top-level field only: "messages: ..." or "system: ..." */
        int top = (int)strcspn(path, ".");
        return fail(err, COMPASS_EINVAL, "%.*s: text content blocks must be non-empty", top,
                    path);
    }
    /* cache_control and citations are hints/metadata with no OpenAI equivalent: dropped */
    *part = json_object_new_object();
    json_object_object_add(*part, "type", json_object_new_string("text"));
    put_ref(*part, "text", text);
    return 0;
}

/* image block -> {"type":"image_url","image_url":{"url":...}}: base64 sources become data:
 * URLs, url sources pass through. */
static int image_part(json_object *block, const char *path, json_object **part,
                      compass_err *err)
{
    json_object *src, *st, *v;
    if (!has(block, "source", &src))
        return fail(err, COMPASS_EINVAL, "%s.source: Field required", path);
    if (!is_type(src, json_type_object))
        return fail(err, COMPASS_EINVAL, "%s.source: Input should be a valid dictionary", path);
    if (!has_value(src, "type", &st))
        return fail(err, COMPASS_EINVAL,
                    "%s.source: Unable to extract tag using discriminator 'type'", path);
    if (!is_type(st, json_type_string))
        return fail(err, COMPASS_EINVAL, "%s.source.type: Input should be a valid string", path);
    const char *stype = str_of(st);
    cps_buf url;
    cps_buf_init(&url);
    if (!strcmp(stype, "base64")) {
        static const char *const media[] = {"image/jpeg", "image/png", "image/gif",
                                            "image/webp", NULL};
        json_object *mt;
        char p[300];
        snprintf(p, sizeof(p), "%s.source.base64", path);
        int rc = req_string(src, "media_type", p, &mt, err);
        if (rc)
            return rc;
        size_t i;
        for (i = 0; media[i]; i++)
            if (!strcmp(str_of(mt), media[i]))
                break;
        if (!media[i])
            return fail(err, COMPASS_EINVAL,
                        "%s.media_type: Input should be 'image/jpeg', 'image/png', "
                        "'image/gif' or 'image/webp'",
                        p);
        if ((rc = req_string(src, "data", p, &v, err)))
            return rc;
        cps_buf_puts(&url, "data:");
        cps_buf_puts(&url, media[i]);
        cps_buf_puts(&url, ";base64,");
        cps_buf_append(&url, str_of(v), (size_t)json_object_get_string_len(v));
    } else if (!strcmp(stype, "url")) {
        char p[300];
        snprintf(p, sizeof(p), "%s.source.url", path);
        int rc = req_string(src, "url", p, &v, err);
        if (rc)
            return rc;
        cps_buf_append(&url, str_of(v), (size_t)json_object_get_string_len(v));
    } else if (!strcmp(stype, "file")) {
        return fail(err, COMPASS_EUNSUPPORTED,
                    "%s.source.type: 'file' image sources (the Files API) are not supported by "
                    "this gateway; send the image as base64 or url",
                    path);
    } else {
        return fail(err, COMPASS_EINVAL,
                    "%s.source: Input tag '%s' found using 'type' does not match any of the "
                    "expected tags: 'base64', 'url', 'file'",
                    path, stype);
    }
    if (url.oom) {
        cps_buf_free(&url);
        return fail(err, COMPASS_ENOMEM, "out of memory");
    }
    json_object *iu = json_object_new_object();
    put_str(iu, "url", url.ptr ? url.ptr : "", url.len);
    cps_buf_free(&url);
    *part = json_object_new_object();
    json_object_object_add(*part, "type", json_object_new_string("image_url"));
    json_object_object_add(*part, "image_url", iu);
    return 0;
}

/* The tool_use ids of the previous assistant message, which the next message must answer. */
typedef struct pending_ids {
    json_object *ids;   /* array of strings; NULL when none */
    json_object *done;  /* object: id -> true once answered */
    size_t msg_index;   /* the assistant message that made them */
} pending_ids;

static void pending_clear(pending_ids *p)
{
    json_object_put(p->ids);
    json_object_put(p->done);
    p->ids = p->done = NULL;
}

static int pending_has(const pending_ids *p, const char *id)
{
    if (!p->ids)
        return 0;
    for (size_t i = 0; i < json_object_array_length(p->ids); i++)
        if (!strcmp(str_of(json_object_array_get_idx(p->ids, i)), id))
            return 1;
    return 0;
}

/* Anthropic's refusal for tool_use blocks left unanswered by the next message. */
static int pending_check(const pending_ids *p, compass_err *err)
{
    if (!p->ids)
        return 0;
    cps_buf missing;
    cps_buf_init(&missing);
    for (size_t i = 0; i < json_object_array_length(p->ids); i++) {
        const char *id = str_of(json_object_array_get_idx(p->ids, i));
        json_object *x;
        if (p->done && json_object_object_get_ex(p->done, id, &x))
            continue;
        if (missing.len)
            cps_buf_puts(&missing, ", ");
        cps_buf_puts(&missing, id);
    }
    int rc = 0;
    if (missing.len)
        rc = fail(err, COMPASS_EINVAL,
                  "messages.%zu: `tool_use` ids were found without `tool_result` blocks "
                  "immediately after: %s. Each `tool_use` block must have a corresponding "
                  "`tool_result` block in the next message.",
                  p->msg_index, missing.ptr);
    cps_buf_free(&missing);
    return rc;
}

/* The text of a tool_result's content (string, or text blocks) as an OpenAI tool message
 * content: a string stays a string, blocks become text parts. is_error has no OpenAI field, so
 * it is said in the text: "Error: " ahead of the result. */
static int tool_result_content(json_object *block, const char *path, json_object **content,
                               compass_err *err)
{
    json_object *c = NULL, *ie;
    int is_error = 0;
    if (has_value(block, "is_error", &ie)) {
        if (!is_type(ie, json_type_boolean))
            return fail(err, COMPASS_EINVAL, "%s.is_error: Input should be a valid boolean",
                        path);
        is_error = json_object_get_boolean(ie);
    }
    has_value(block, "content", &c);
    if (!c || is_type(c, json_type_string)) {
        const char *s = c ? str_of(c) : "";
        size_t n = c ? (size_t)json_object_get_string_len(c) : 0;
        if (!is_error) {
            *content = json_object_new_string_len(s, (int)n);
            return 0;
        }
        cps_buf b;
        cps_buf_init(&b);
        cps_buf_puts(&b, n ? "Error: " : "Error");
        cps_buf_append(&b, s, n);
        if (b.oom) {
            cps_buf_free(&b);
            return fail(err, COMPASS_ENOMEM, "out of memory");
        }
        *content = json_object_new_string_len(b.ptr, (int)b.len);
        cps_buf_free(&b);
        return 0;
    }
    if (!is_type(c, json_type_array))
        return fail(err, COMPASS_EINVAL,
                    "%s.content: Input should be a valid string or a list of content blocks",
                    path);
    json_object *parts = json_object_new_array();
    if (is_error) {
        json_object *p = json_object_new_object();
        json_object_object_add(p, "type", json_object_new_string("text"));
        json_object_object_add(p, "text", json_object_new_string("Error: "));
        json_object_array_add(parts, p);
    }
    for (size_t j = 0; j < json_object_array_length(c); j++) {
        json_object *b = json_object_array_get_idx(c, j), *part = NULL;
        char p[300];
        const char *t;
        snprintf(p, sizeof(p), "%s.content.%zu", path, j);
        int rc = block_type(b, p, &t, err);
        if (!rc) {
            if (!strcmp(t, "text"))
                rc = text_part(b, p, &part, err);
            else if (!strcmp(t, "image"))
                rc = fail(err, COMPASS_EUNSUPPORTED,
                          "%s.type: images inside tool_result are not supported by this "
                          "gateway (OpenAI tool messages carry text only)",
                          p);
            else if (!strcmp(t, "document") || !strcmp(t, "search_result"))
                rc = fail(err, COMPASS_EUNSUPPORTED,
                          "%s.type: '%s' blocks are not supported by this gateway", p, t);
            else
                rc = fail(err, COMPASS_EINVAL,
                          "%s: Input tag '%s' found using 'type' does not match any of the "
                          "expected tags: 'text', 'image', 'search_result', 'document'",
                          p, t);
        }
        if (rc) {
            json_object_put(parts);
            return rc;
        }
        json_object_array_add(parts, part);
    }
    if (json_object_array_length(parts) == 0) {
        json_object_put(parts);
        *content = json_object_new_string("");
        return 0;
    }
    *content = parts;
    return 0;
}

/* One Anthropic message (index i of n) -> zero or more OpenAI messages appended to omsgs. */
static int convert_message(json_object *m, size_t i, size_t n, json_object *omsgs,
                           pending_ids *pend, compass_err *err)
{
    json_object *rv, *content;
    char path[64];
    snprintf(path, sizeof(path), "messages.%zu", i);
    if (!is_type(m, json_type_object))
        return fail(err, COMPASS_EINVAL, "%s: Input should be a valid dictionary", path);
    if (!has(m, "role", &rv))
        return fail(err, COMPASS_EINVAL, "%s.role: Field required", path);
    if (!is_type(rv, json_type_string))
        return fail(err, COMPASS_EINVAL, "%s.role: Input should be a valid string", path);
    const char *role = str_of(rv);
    int is_user = !strcmp(role, "user"), is_asst = !strcmp(role, "assistant");
    if (!strcmp(role, "system"))
        return fail(err, COMPASS_EINVAL,
                    "messages: Unexpected role \"system\". The Messages API accepts a top-level "
                    "`system` parameter, not \"system\" as an input message role.");
    if (!is_user && !is_asst)
        return fail(err, COMPASS_EINVAL,
                    "messages: Unexpected role \"%s\". Allowed roles are \"user\" or "
                    "\"assistant\"",
                    role);
    if (!has(m, "content", &content))
        return fail(err, COMPASS_EINVAL, "%s.content: Field required", path);
    int last_asst = is_asst && i + 1 == n;
    int empty = 0;
    if (is_type(content, json_type_string))
        empty = json_object_get_string_len(content) == 0;
    else if (is_type(content, json_type_array))
        empty = json_object_array_length(content) == 0;
    else
        return fail(err, COMPASS_EINVAL,
                    "%s.content: Input should be a valid string or a list of content blocks",
                    path);
    if (empty && !last_asst)
        return fail(err, COMPASS_EINVAL,
                    "%s: all messages must have non-empty content except for the optional "
                    "final assistant message",
                    path);

    /* the previous assistant message's tool_use ids: only this message can answer them */
    pending_ids prev = *pend;
    pend->ids = pend->done = NULL;
    int rc = 0;

    if (is_type(content, json_type_string)) {
        rc = pending_check(&prev, err);
        if (!rc) {
            /* a string stays a string: the simplest faithful form for every provider */
            json_object *om = json_object_new_object();
            json_object_object_add(om, "role", json_object_new_string(role));
            put_ref(om, "content", content);
            json_object_array_add(omsgs, om);
        }
        pending_clear(&prev);
        return rc;
    }

    json_object *parts = json_object_new_array();      /* text / image_url parts */
    json_object *calls = json_object_new_array();      /* assistant tool_calls */
    json_object *tools = json_object_new_array();      /* tool-role messages (user turns) */
    json_object *ids = json_object_new_array();        /* this message's tool_use ids */
    if (prev.ids && !prev.done)
        prev.done = json_object_new_object();
    for (size_t k = 0; !rc && k < json_object_array_length(content); k++) {
        json_object *b = json_object_array_get_idx(content, k), *part = NULL;
        char p[96];
        const char *t;
        snprintf(p, sizeof(p), "%s.content.%zu", path, k);
        if ((rc = block_type(b, p, &t, err)))
            break;
        if (!strcmp(t, "text")) {
            if (!(rc = text_part(b, p, &part, err)))
                json_object_array_add(parts, part);
        } else if (!strcmp(t, "image")) {
            if (!is_user)
                rc = fail(err, COMPASS_EINVAL,
                          "%s: image blocks are only allowed in user messages", p);
            else if (!(rc = image_part(b, p, &part, err)))
                json_object_array_add(parts, part);
        } else if (!strcmp(t, "tool_use")) {
            json_object *id, *name, *input;
            if (!is_asst) {
                rc = fail(err, COMPASS_EINVAL,
                          "%s: tool_use blocks are only allowed in assistant messages", p);
                break;
            }
            if ((rc = req_string(b, "id", p, &id, err)) ||
                (rc = req_string(b, "name", p, &name, err)))
                break;
            if (!has(b, "input", &input)) {
                rc = fail(err, COMPASS_EINVAL, "%s.input: Field required", p);
                break;
            }
            if (!is_type(input, json_type_object)) {
                rc = fail(err, COMPASS_EINVAL, "%s.input: Input should be a valid dictionary", p);
                break;
            }
            size_t alen = 0;
            const char *args = json_object_to_json_string_length(input, JSON_OUT_FLAGS, &alen);
            json_object *fn = json_object_new_object(), *call = json_object_new_object();
            put_ref(fn, "name", name);
            put_str(fn, "arguments", args ? args : "{}", args ? alen : 2);
            put_ref(call, "id", id);
            json_object_object_add(call, "type", json_object_new_string("function"));
            json_object_object_add(call, "function", fn);
            json_object_array_add(calls, call);
            json_object_array_add(ids, json_object_get(id));
        } else if (!strcmp(t, "tool_result")) {
            json_object *tid, *tc = NULL;
            if (!is_user) {
                rc = fail(err, COMPASS_EINVAL,
                          "%s: tool_result blocks are only allowed in user messages", p);
                break;
            }
            if ((rc = req_string(b, "tool_use_id", p, &tid, err)))
                break;
            if (!pending_has(&prev, str_of(tid))) {
                rc = fail(err, COMPASS_EINVAL,
                          "%s: unexpected `tool_use_id` found in `tool_result` blocks: %s. Each "
                          "`tool_result` block must have a corresponding `tool_use` block in "
                          "the previous message.",
                          p, str_of(tid));
                break;
            }
            json_object_object_add(prev.done, str_of(tid), json_object_new_boolean(1));
            if ((rc = tool_result_content(b, p, &tc, err)))
                break;
            json_object *tm = json_object_new_object();
            json_object_object_add(tm, "role", json_object_new_string("tool"));
            put_ref(tm, "tool_call_id", tid);
            json_object_object_add(tm, "content", tc);
            json_object_array_add(tools, tm);
        } else if (!strcmp(t, "thinking") || !strcmp(t, "redacted_thinking")) {
            /* Earlier turns' thinking: Anthropic does not show it to the model either, and no
             * OpenAI-format provider can take it back. Dropped. */
            if (!is_asst)
                rc = fail(err, COMPASS_EINVAL,
                          "%s: %s blocks are only allowed in assistant messages", p, t);
        } else if (is_untranslatable_block(t)) {
            rc = fail(err, COMPASS_EUNSUPPORTED,
                      "%s.type: '%s' blocks are not supported by this gateway", p, t);
        } else {
            rc = fail(err, COMPASS_EINVAL,
                      "%s.type: Input tag '%s' found using 'type' does not match any of the "
                      "expected tags: " BLOCK_TAGS,
                      p, t);
        }
    }
    if (!rc)
        rc = pending_check(&prev, err);
    if (!rc) {
        /* tool results first: OpenAI wants them right after the assistant's tool_calls (and
         * Anthropic wants them first in the user turn) */
        for (size_t k = 0; k < json_object_array_length(tools); k++)
            json_object_array_add(omsgs, json_object_get(json_object_array_get_idx(tools, k)));
        size_t np = json_object_array_length(parts), nc = json_object_array_length(calls);
        if (is_asst) {
            json_object *om = json_object_new_object();
            json_object_object_add(om, "role", json_object_new_string("assistant"));
            if (np)
                put_ref(om, "content", parts);
            else if (nc)
                json_object_object_add(om, "content", NULL);
            else
                json_object_object_add(om, "content", json_object_new_string(""));
            if (nc)
                put_ref(om, "tool_calls", calls);
            json_object_array_add(omsgs, om);
            if (json_object_array_length(ids)) {
                pend->ids = json_object_get(ids);
                pend->msg_index = i;
            }
        } else if (np) {
            json_object *om = json_object_new_object();
            json_object_object_add(om, "role", json_object_new_string("user"));
            put_ref(om, "content", parts);
            json_object_array_add(omsgs, om);
        }
    }
    pending_clear(&prev);
    json_object_put(parts);
    json_object_put(calls);
    json_object_put(tools);
    json_object_put(ids);
    return rc;
}

/* system: a string, or a list of text blocks -> one leading system message. Blocks become
 * text parts (no separator is invented between them). */
static int convert_system(json_object *sys, json_object *omsgs, compass_err *err)
{
    json_object *om;
    if (is_type(sys, json_type_string)) {
        if (json_object_get_string_len(sys) == 0)
            return 0;
        om = json_object_new_object();
        json_object_object_add(om, "role", json_object_new_string("system"));
        put_ref(om, "content", sys);
        json_object_array_add(omsgs, om);
        return 0;
    }
    if (!is_type(sys, json_type_array))
        return fail(err, COMPASS_EINVAL,
                    "system: Input should be a valid string or a list of text blocks");
    size_t n = json_object_array_length(sys);
    if (!n)
        return 0;
    json_object *parts = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        json_object *b = json_object_array_get_idx(sys, i), *part = NULL;
        char p[48];
        const char *t;
        snprintf(p, sizeof(p), "system.%zu", i);
        int rc = block_type(b, p, &t, err);
        if (!rc && strcmp(t, "text"))
            rc = fail(err, COMPASS_EINVAL,
                      "%s.type: Input tag '%s' found using 'type' does not match any of the "
                      "expected tags: 'text'",
                      p, t);
        if (!rc)
            rc = text_part(b, p, &part, err);
        if (rc) {
            json_object_put(parts);
            return rc;
        }
        json_object_array_add(parts, part);
    }
    om = json_object_new_object();
    json_object_object_add(om, "role", json_object_new_string("system"));
    json_object_object_add(om, "content", parts);
    json_object_array_add(omsgs, om);
    return 0;
}

/* tools: [{name, description, input_schema}] -> OpenAI function tools. */
static int convert_tools(json_object *tools, json_object *root_out, compass_err *err)
{
    if (!is_type(tools, json_type_array))
        return fail(err, COMPASS_EINVAL, "tools: Input should be a valid list");
    size_t n = json_object_array_length(tools);
    if (!n)
        return 0;
    json_object *arr = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        json_object *t = json_object_array_get_idx(tools, i), *v = NULL, *name = NULL,
                    *schema = NULL;
        char p[48];
        int rc = 0;
        snprintf(p, sizeof(p), "tools.%zu", i);
        if (!is_type(t, json_type_object))
            rc = fail(err, COMPASS_EINVAL, "%s: Input should be a valid dictionary", p);
        else if (has_value(t, "type", &v) &&
                 (!is_type(v, json_type_string) || strcmp(str_of(v), "custom")))
            rc = fail(err, COMPASS_EUNSUPPORTED,
                      "%s.type: server tool '%s' is not supported by this gateway; only client "
                      "tools ({name, description, input_schema}) are",
                      p, is_type(v, json_type_string) ? str_of(v) : "?");
        else if (!(rc = req_string(t, "name", p, &name, err))) {
            if (json_object_get_string_len(name) == 0)
                rc = fail(err, COMPASS_EINVAL, "%s.name: String should have at least 1 character",
                          p);
            else if (!has(t, "input_schema", &schema))
                rc = fail(err, COMPASS_EINVAL, "%s.input_schema: Field required", p);
            else if (!is_type(schema, json_type_object))
                rc = fail(err, COMPASS_EINVAL, "%s.input_schema: Input should be a valid dictionary",
                          p);
            else if (has_value(t, "description", &v) && !is_type(v, json_type_string))
                rc = fail(err, COMPASS_EINVAL, "%s.description: Input should be a valid string", p);
        }
        if (rc) {
            json_object_put(arr);
            return rc;
        }
        json_object *fn = json_object_new_object(), *ot = json_object_new_object();
        put_ref(fn, "name", name);
        if (has_value(t, "description", &v))
            put_ref(fn, "description", v);
        put_ref(fn, "parameters", schema);
        /* cache_control: a caching hint, no OpenAI equivalent; dropped */
        json_object_object_add(ot, "type", json_object_new_string("function"));
        json_object_object_add(ot, "function", fn);
        json_object_array_add(arr, ot);
    }
    json_object_object_add(root_out, "tools", arr);
    return 0;
}

/* tool_choice {type: auto|any|tool|none, name, disable_parallel_tool_use}. */
static int convert_tool_choice(json_object *tc, json_object *root_out, compass_err *err)
{
    json_object *t, *v;
    if (!is_type(tc, json_type_object))
        return fail(err, COMPASS_EINVAL, "tool_choice: Input should be a valid dictionary");
    if (!has_value(tc, "type", &t))
        return fail(err, COMPASS_EINVAL,
                    "tool_choice: Unable to extract tag using discriminator 'type'");
    if (!is_type(t, json_type_string))
        return fail(err, COMPASS_EINVAL, "tool_choice.type: Input should be a valid string");
    const char *ty = str_of(t);
    json_object *choice;
    if (!strcmp(ty, "auto")) {
        choice = json_object_new_string("auto");
    } else if (!strcmp(ty, "any")) {
        choice = json_object_new_string("required");
    } else if (!strcmp(ty, "none")) {
        choice = json_object_new_string("none");
    } else if (!strcmp(ty, "tool")) {
        json_object *name;
        int rc = req_string(tc, "name", "tool_choice", &name, err);
        if (rc)
            return rc;
        json_object *fn = json_object_new_object();
        put_ref(fn, "name", name);
        choice = json_object_new_object();
        json_object_object_add(choice, "type", json_object_new_string("function"));
        json_object_object_add(choice, "function", fn);
    } else {
        return fail(err, COMPASS_EINVAL,
                    "tool_choice: Input tag '%s' found using 'type' does not match any of the "
                    "expected tags: 'auto', 'any', 'tool', 'none'",
                    ty);
    }
    if (has_value(tc, "disable_parallel_tool_use", &v)) {
        if (!is_type(v, json_type_boolean)) {
            json_object_put(choice);
            return fail(err, COMPASS_EINVAL,
                        "tool_choice.disable_parallel_tool_use: Input should be a valid boolean");
        }
        if (json_object_get_boolean(v) && strcmp(ty, "none"))
            json_object_object_add(root_out, "parallel_tool_calls", json_object_new_boolean(0));
    }
    json_object_object_add(root_out, "tool_choice", choice);
    return 0;
}

/* An optional number in [lo, hi]: copied under the same name. */
static int number_in(json_object *root, const char *key, double lo, double hi,
                     json_object *root_out, compass_err *err)
{
    json_object *v;
    if (!has_value(root, key, &v))
        return 0;
    if (!is_number(v))
        return fail(err, COMPASS_EINVAL, "%s: Input should be a valid number", key);
    double d = json_object_get_double(v);
    if (!(d >= lo && d <= hi))
        return fail(err, COMPASS_EINVAL, "%s: range: %g..%g", key, lo, hi);
    put_ref(root_out, key, v);
    return 0;
}

static int convert_request(json_object *root, json_object *o, int *stream, compass_err *err)
{
    json_object *v, *msgs;
    int rc;
    if (!is_type(root, json_type_object))
        return fail(err, COMPASS_EINVAL, "request body: Input should be a valid dictionary");

    /* model passes through unchanged: it names a compass route or model */
    if (!has(root, "model", &v))
        return fail(err, COMPASS_EINVAL, "model: Field required");
    if (!is_type(v, json_type_string))
        return fail(err, COMPASS_EINVAL, "model: Input should be a valid string");
    if (json_object_get_string_len(v) == 0)
        return fail(err, COMPASS_EINVAL, "model: String should have at least 1 character");
    put_ref(o, "model", v);

    if (!has(root, "messages", &msgs))
        return fail(err, COMPASS_EINVAL, "messages: Field required");
    if (!is_type(msgs, json_type_array))
        return fail(err, COMPASS_EINVAL, "messages: Input should be a valid list");

    /* max_tokens is required by Anthropic (not by OpenAI): refused the way Anthropic does */
    if (!has(root, "max_tokens", &v))
        return fail(err, COMPASS_EINVAL, "max_tokens: Field required");
    if (!is_integer(v))
        return fail(err, COMPASS_EINVAL, "max_tokens: Input should be a valid integer");
    if (json_object_get_int64(v) < 1)
        return fail(err, COMPASS_EINVAL, "max_tokens: Input should be greater than or equal to 1");
    json_object *max_tokens = v;

    json_object *omsgs = json_object_new_array();
    json_object_object_add(o, "messages", omsgs);
    if (has_value(root, "system", &v) && (rc = convert_system(v, omsgs, err)))
        return rc;
    size_t n = json_object_array_length(msgs);
    if (n == 0)
        return fail(err, COMPASS_EINVAL, "messages: at least one message is required");
    pending_ids pend = {NULL, NULL, 0};
    for (size_t i = 0; i < n; i++) {
        if ((rc = convert_message(json_object_array_get_idx(msgs, i), i, n, omsgs, &pend, err))) {
            pending_clear(&pend);
            return rc;
        }
    }
    /* a final assistant turn with tool_use blocks leaves them unanswered */
    rc = pending_check(&pend, err);
    pending_clear(&pend);
    if (rc)
        return rc;

    put_ref(o, "max_tokens", max_tokens);
    if ((rc = number_in(root, "temperature", 0, 1, o, err)) ||
        (rc = number_in(root, "top_p", 0, 1, o, err)))
        return rc;
    /* top_k: OpenAI chat completions has no top-k sampling. Validated and ignored: it only
     * narrows sampling, it does not change what the request asks for. */
    if (has_value(root, "top_k", &v)) {
        if (!is_integer(v))
            return fail(err, COMPASS_EINVAL, "top_k: Input should be a valid integer");
        if (json_object_get_int64(v) < 0)
            return fail(err, COMPASS_EINVAL, "top_k: Input should be greater than or equal to 0");
    }
    if (has_value(root, "stop_sequences", &v)) {
        if (!is_type(v, json_type_array))
            return fail(err, COMPASS_EINVAL, "stop_sequences: Input should be a valid list");
        size_t ns = json_object_array_length(v);
        for (size_t i = 0; i < ns; i++)
            if (!is_type(json_object_array_get_idx(v, i), json_type_string))
                return fail(err, COMPASS_EINVAL, "stop_sequences.%zu: Input should be a valid "
                            "string", i);
        if (ns > MAX_STOP)
            return fail(err, COMPASS_EUNSUPPORTED,
                        "stop_sequences: this gateway accepts at most %d stop sequences, got %zu",
                        MAX_STOP, ns);
        if (ns)
            put_ref(o, "stop", v);
    }
    int want_stream = 0;
    if (has_value(root, "stream", &v)) {
        if (!is_type(v, json_type_boolean))
            return fail(err, COMPASS_EINVAL, "stream: Input should be a valid boolean");
        want_stream = json_object_get_boolean(v);
    }
    if (want_stream) {
        json_object *so = json_object_new_object();
        json_object_object_add(o, "stream", json_object_new_boolean(1));
        /* message_delta reports usage: ask for it */
        json_object_object_add(so, "include_usage", json_object_new_boolean(1));
        json_object_object_add(o, "stream_options", so);
    }
    if (has_value(root, "tools", &v) && (rc = convert_tools(v, o, err)))
        return rc;
    if (has_value(root, "tool_choice", &v) && (rc = convert_tool_choice(v, o, err)))
        return rc;
    if (has_value(root, "metadata", &v)) {
        json_object *uid;
        if (!is_type(v, json_type_object))
            return fail(err, COMPASS_EINVAL, "metadata: Input should be a valid dictionary");
        if (has_value(v, "user_id", &uid)) {
            if (!is_type(uid, json_type_string))
                return fail(err, COMPASS_EINVAL, "metadata.user_id: Input should be a valid "
                            "string");
            put_ref(o, "user", uid);
        }
    }
    if (has_value(root, "mcp_servers", &v) && is_type(v, json_type_array) &&
        json_object_array_length(v) > 0)
        return fail(err, COMPASS_EUNSUPPORTED,
                    "mcp_servers: the MCP connector is not supported by this gateway");
    /* thinking, service_tier, container, context_management: no OpenAI equivalent; ignored
     * (the answer is still an answer to the same request, without thinking blocks) */
    if (stream)
        *stream = want_stream;
    return 0;
}

int cpd_anth_request_to_openai(const char *json, size_t len, cps_buf *out, int *stream,
                               compass_err *err)
{
    const char *why;
    if (stream)
        *stream = 0;
    if (!out)
        return fail(err, COMPASS_EINVAL, "out: required");
    json_object *root = parse_json(json, len, &why);
    if (!root)
        return fail(err, COMPASS_EPARSE, "request body is not valid JSON: %s", why);
    json_object *o = json_object_new_object();
    int st = 0;
    int rc = convert_request(root, o, &st, err);
    if (!rc)
        rc = emit_json(o, out, err);
    if (!rc && stream)
        *stream = st;
    json_object_put(o);
    json_object_put(root);
    return rc;
}

/* ---- response: OpenAI -> Anthropic ------------------------------------------------------------ */

static const char *stop_reason_of(const char *finish, int has_tools, int refused)
{
    if (finish && !strcmp(finish, "length"))
        return "max_tokens";
    if (finish && (!strcmp(finish, "tool_calls") || !strcmp(finish, "function_call")))
        return "tool_use";
    if (finish && !strcmp(finish, "content_filter"))
        return "refusal";
    /* "stop" (or none): some providers say "stop" while calling tools; Anthropic clients run
     * tools on tool_use, so say that. A refusal answered with "stop" is a refusal. */
    if (has_tools)
        return "tool_use";
    if (refused)
        return "refusal";
    return "end_turn";
}

static int64_t int_at(json_object *o, const char *k)
{
    json_object *v;
    if (o && has_value(o, k, &v) && is_number(v))
        return json_object_get_int64(v);
    return 0;
}

/* Anthropic counts input_tokens without the cached part; OpenAI's prompt_tokens includes it. */
static json_object *usage_json(int64_t prompt, int64_t completion, int64_t cached)
{
    json_object *u = json_object_new_object();
    if (cached < 0 || cached > prompt)
        cached = cached < 0 ? 0 : prompt;
    json_object_object_add(u, "input_tokens", json_object_new_int64(prompt - cached));
    json_object_object_add(u, "cache_creation_input_tokens", json_object_new_int64(0));
    json_object_object_add(u, "cache_read_input_tokens", json_object_new_int64(cached));
    json_object_object_add(u, "output_tokens", json_object_new_int64(completion));
    return u;
}

static int convert_response(json_object *root, json_object *o, compass_err *err)
{
    json_object *v, *choices, *choice, *msg = NULL, *content = NULL, *refusal = NULL,
                                        *calls = NULL;
    if (!is_type(root, json_type_object))
        return fail(err, COMPASS_EPARSE, "response: expected a JSON object");
    if (!has_value(root, "choices", &choices) || !is_type(choices, json_type_array) ||
        json_object_array_length(choices) == 0)
        return fail(err, COMPASS_EPARSE, "response: no choices (not a chat.completion)");
    choice = json_object_array_get_idx(choices, 0);
    if (!is_type(choice, json_type_object) || !has_value(choice, "message", &msg) ||
        !is_type(msg, json_type_object))
        return fail(err, COMPASS_EPARSE, "response: choices.0.message: expected an object");

    /* id: msg_ + the chat id (an id that already is an Anthropic one is kept) */
    cps_buf id;
    cps_buf_init(&id);
    const char *cid = has_value(root, "id", &v) && is_type(v, json_type_string) ? str_of(v) : "";
    if (strncmp(cid, "msg_", 4))
        cps_buf_puts(&id, "msg_");
    cps_buf_puts(&id, *cid ? cid : "compass");
    if (id.oom) {
        cps_buf_free(&id);
        return fail(err, COMPASS_ENOMEM, "out of memory");
    }
    put_str(o, "id", id.ptr, id.len);
    cps_buf_free(&id);
    json_object_object_add(o, "type", json_object_new_string("message"));
    json_object_object_add(o, "role", json_object_new_string("assistant"));
    if (has_value(root, "model", &v) && is_type(v, json_type_string))
        put_ref(o, "model", v);
    else
        json_object_object_add(o, "model", json_object_new_string(""));

    json_object *blocks = json_object_new_array();
    json_object_object_add(o, "content", blocks);
    has_value(msg, "content", &content);
    has_value(msg, "refusal", &refusal);
    int refused = 0;
    if (is_type(content, json_type_string) && json_object_get_string_len(content) > 0) {
        json_object *b = json_object_new_object();
        json_object_object_add(b, "type", json_object_new_string("text"));
        put_ref(b, "text", content);
        json_object_array_add(blocks, b);
    }
    if (is_type(refusal, json_type_string) && json_object_get_string_len(refusal) > 0) {
        /* a refusal is what the model said: the client sees it as text */
        json_object *b = json_object_new_object();
        json_object_object_add(b, "type", json_object_new_string("text"));
        put_ref(b, "text", refusal);
        json_object_array_add(blocks, b);
        refused = 1;
    }
    size_t ntools = 0;
    if (has_value(msg, "tool_calls", &calls) && is_type(calls, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(calls); i++) {
            json_object *c = json_object_array_get_idx(calls, i), *fn = NULL, *name = NULL,
                        *args = NULL, *cidv = NULL;
            if (!is_type(c, json_type_object) || !has_value(c, "function", &fn) ||
                !is_type(fn, json_type_object) || !has_value(fn, "name", &name) ||
                !is_type(name, json_type_string))
                return fail(err, COMPASS_EPARSE,
                            "response: choices.0.message.tool_calls.%zu.function.name: missing",
                            i);
            json_object *input = NULL;
            if (has_value(fn, "arguments", &args) && is_type(args, json_type_string) &&
                json_object_get_string_len(args) > 0) {
                const char *why;
                input = parse_json(str_of(args), (size_t)json_object_get_string_len(args), &why);
                if (!is_type(input, json_type_object)) {
                    json_object_put(input);
                    return fail(err, COMPASS_EPARSE,
                                "response: choices.0.message.tool_calls.%zu.function.arguments: "
                                "the model's arguments are not a JSON object",
                                i);
                }
            } else if (is_type(args, json_type_object)) {
                input = json_object_get(args);
            } else {
                input = json_object_new_object();
            }
            json_object *b = json_object_new_object();
            json_object_object_add(b, "type", json_object_new_string("tool_use"));
            if (has_value(c, "id", &cidv) && is_type(cidv, json_type_string) &&
                json_object_get_string_len(cidv) > 0) {
                put_ref(b, "id", cidv);
            } else {
                char gen[48];
                snprintf(gen, sizeof(gen), "toolu_compass_%zu", i);
                json_object_object_add(b, "id", json_object_new_string(gen));
            }
            put_ref(b, "name", name);
            json_object_object_add(b, "input", input);
            json_object_array_add(blocks, b);
            ntools++;
        }
    }
    const char *finish = has_value(choice, "finish_reason", &v) && is_type(v, json_type_string)
                             ? str_of(v)
                             : NULL;
    json_object_object_add(o, "stop_reason",
                           json_object_new_string(stop_reason_of(finish, ntools > 0, refused)));
    json_object_object_add(o, "stop_sequence", NULL);
    json_object *u = NULL, *det = NULL;
    has_value(root, "usage", &u);
    if (u && !is_type(u, json_type_object))
        u = NULL;
    if (u)
        has_value(u, "prompt_tokens_details", &det);
    json_object_object_add(o, "usage", usage_json(int_at(u, "prompt_tokens"),
                                                  int_at(u, "completion_tokens"),
                                                  int_at(det, "cached_tokens")));
    return 0;
}

int cpd_anth_response_from_openai(const char *json, size_t len, cps_buf *out,
                                  compass_err *err)
{
    const char *why;
    if (!out)
        return fail(err, COMPASS_EINVAL, "out: required");
    json_object *root = parse_json(json, len, &why);
    if (!root)
        return fail(err, COMPASS_EPARSE, "response is not valid JSON: %s", why);
    json_object *o = json_object_new_object();
    int rc = convert_response(root, o, err);
    if (!rc)
        rc = emit_json(o, out, err);
    json_object_put(o);
    json_object_put(root);
    return rc;
}

/* ---- errors ------------------------------------------------------------------------------------ */

const char *cpd_anth_error_type(int status)
{
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503:
    case 529: return "overloaded_error";
    default: break;
    }
    /* Anthropic: "We may also use this error type for other 4XX status codes" */
    if (status >= 400 && status < 500)
        return "invalid_request_error";
    return "api_error";
}

static const char *stock_message(int status)
{
    switch (status) {
    case 400: return "Invalid request";
    case 401: return "Invalid API key";
    case 403: return "Permission denied";
    case 404: return "Not found";
    case 413: return "Request exceeds the maximum allowed size";
    case 429: return "Rate limit exceeded";
    case 503:
    case 529: return "Overloaded";
    default: return status >= 400 && status < 500 ? "Invalid request" : "Internal server error";
    }
}

static int error_json(const char *type, const char *message, size_t mlen, cps_buf *out)
{
    cps_buf_puts(out, "{\"type\":\"error\",\"error\":{\"type\":");
    cps_buf_json_str(out, type, strlen(type));
    cps_buf_puts(out, ",\"message\":");
    cps_buf_json_str(out, message, mlen);
    cps_buf_puts(out, "}}");
    return out->oom ? COMPASS_ENOMEM : 0;
}

int cpd_anth_error_json(int status, const char *message, cps_buf *out)
{
    if (!message || !*message)
        message = stock_message(status);
    return error_json(cpd_anth_error_type(status), message, strlen(message), out);
}

int cpd_anth_error_from_openai(int status, const char *json, size_t len, cps_buf *out)
{
    const char *why;
    json_object *root = parse_json(json, len, &why), *e, *m;
    const char *msg = NULL;
    size_t mlen = 0;
    if (is_type(root, json_type_object) && has_value(root, "error", &e)) {
        if (is_type(e, json_type_object) && has_value(e, "message", &m) &&
            is_type(m, json_type_string) && json_object_get_string_len(m) > 0) {
            msg = str_of(m);
            mlen = (size_t)json_object_get_string_len(m);
        } else if (is_type(e, json_type_string) && json_object_get_string_len(e) > 0) {
            msg = str_of(e);
            mlen = (size_t)json_object_get_string_len(e);
        }
    }
    if (!msg) {
        msg = stock_message(status);
        mlen = strlen(msg);
    }
    int rc = error_json(cpd_anth_error_type(status), msg, mlen, out);
    json_object_put(root);
    return rc;
}

/* ---- streaming ---------------------------------------------------------------------------------- */

enum { BLOCK_NONE, BLOCK_TEXT, BLOCK_TOOL };

typedef struct tool_slot {
    int tool_index;  /* the canonical delta's tool_index */
    int block;       /* the Anthropic content block index; -1 until started */
    int closed;
    cps_buf id, name;
    cps_buf pending; /* argument fragments that arrived before the name */
} tool_slot;

struct cpd_anth_stream {
    char *model, *id;
    int started, ended;
    int64_t input_hint;
    int open_kind;      /* BLOCK_* of the block in progress */
    int open_block;     /* its index (text), or -1 */
    tool_slot *open_tool; /* the tool slot in progress (its block may still be unstarted) */
    int next_block;
    tool_slot *tools;
    size_t n_tools, cap_tools;
    int finish;         /* compass_finish seen */
    int saw_refusal;
    compass_usage usage;
    unsigned long gen;  /* for made-up tool ids */
};

static char *dup_cstr(const char *s)
{
    size_t n = strlen(s);
    char *p = malloc(n + 1);
    if (p)
        memcpy(p, s, n + 1);
    return p;
}

cpd_anth_stream *cpd_anth_stream_new(const char *model, const char *msg_id)
{
    cpd_anth_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->model = dup_cstr(model ? model : "");
    s->id = dup_cstr(msg_id && *msg_id ? msg_id : "msg_compass");
    if (!s->model || !s->id) {
        cpd_anth_stream_free(s);
        return NULL;
    }
    s->open_block = -1;
    return s;
}

void cpd_anth_stream_set_input_tokens(cpd_anth_stream *s, int64_t input_tokens)
{
    if (s)
        s->input_hint = input_tokens < 0 ? 0 : input_tokens;
}

void cpd_anth_stream_free(cpd_anth_stream *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_tools; i++) {
        cps_buf_free(&s->tools[i].id);
        cps_buf_free(&s->tools[i].name);
        cps_buf_free(&s->tools[i].pending);
    }
    free(s->tools);
    free(s->model);
    free(s->id);
    free(s);
}

/* "event: name\ndata: " ... the caller writes the JSON, then ev_end. */
static void ev_begin(cps_buf *out, const char *name)
{
    cps_buf_puts(out, "event: ");
    cps_buf_puts(out, name);
    cps_buf_puts(out, "\ndata: ");
}

static void ev_end(cps_buf *out)
{
    cps_buf_puts(out, "\n\n");
}

static void put_cstr(cps_buf *out, const char *s)
{
    cps_buf_json_str(out, s, strlen(s));
}

static void ensure_started(cpd_anth_stream *s, cps_buf *out)
{
    if (s->started)
        return;
    s->started = 1;
    ev_begin(out, "message_start");
    cps_buf_puts(out, "{\"type\":\"message_start\",\"message\":{\"id\":");
    put_cstr(out, s->id);
    cps_buf_puts(out, ",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    put_cstr(out, s->model);
    cps_buf_printf(out, ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
                        "\"usage\":{\"input_tokens\":%lld,\"output_tokens\":0}}}",
                   (long long)s->input_hint);
    ev_end(out);
}

static void block_stop(cps_buf *out, int index)
{
    ev_begin(out, "content_block_stop");
    cps_buf_printf(out, "{\"type\":\"content_block_stop\",\"index\":%d}", index);
    ev_end(out);
}

static void tool_args_delta(cps_buf *out, int index, const char *p, size_t n)
{
    ev_begin(out, "content_block_delta");
    cps_buf_printf(out, "{\"type\":\"content_block_delta\",\"index\":%d,"
                        "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":",
                   index);
    cps_buf_json_str(out, p, n);
    cps_buf_puts(out, "}}");
    ev_end(out);
}

/* Starts a tool slot's block (content_block_start tool_use) and flushes buffered arguments. */
static void tool_start(cpd_anth_stream *s, tool_slot *t, cps_buf *out)
{
    if (t->block >= 0)
        return;
    if (!t->id.len) {
        /* the provider gave no id: make one the client can answer with tool_result */
        cps_buf_printf(&t->id, "toolu_compass_%lu", s->gen++);
    }
    t->block = s->next_block++;
    ev_begin(out, "content_block_start");
    cps_buf_printf(out, "{\"type\":\"content_block_start\",\"index\":%d,\"content_block\":"
                        "{\"type\":\"tool_use\",\"id\":",
                   t->block);
    cps_buf_json_str(out, t->id.ptr ? t->id.ptr : "", t->id.len);
    cps_buf_puts(out, ",\"name\":");
    cps_buf_json_str(out, t->name.ptr ? t->name.ptr : "", t->name.len);
    cps_buf_puts(out, ",\"input\":{}}}");
    ev_end(out);
    if (t->pending.len)
        tool_args_delta(out, t->block, t->pending.ptr, t->pending.len);
    cps_buf_free(&t->pending);
}

/* Closes whatever block is in progress. */
static void close_open(cpd_anth_stream *s, cps_buf *out)
{
    if (s->open_kind == BLOCK_TEXT) {
        block_stop(out, s->open_block);
    } else if (s->open_kind == BLOCK_TOOL && s->open_tool) {
        tool_start(s, s->open_tool, out); /* a tool whose name never came still gets a block */
        block_stop(out, s->open_tool->block);
        s->open_tool->closed = 1;
    }
    s->open_kind = BLOCK_NONE;
    s->open_block = -1;
    s->open_tool = NULL;
}

static void text_delta(cpd_anth_stream *s, const char *p, size_t n, cps_buf *out)
{
    if (s->open_kind != BLOCK_TEXT) {
        close_open(s, out);
        s->open_kind = BLOCK_TEXT;
        s->open_block = s->next_block++;
        ev_begin(out, "content_block_start");
        cps_buf_printf(out, "{\"type\":\"content_block_start\",\"index\":%d,\"content_block\":"
                            "{\"type\":\"text\",\"text\":\"\"}}",
                       s->open_block);
        ev_end(out);
    }
    ev_begin(out, "content_block_delta");
    cps_buf_printf(out, "{\"type\":\"content_block_delta\",\"index\":%d,"
                        "\"delta\":{\"type\":\"text_delta\",\"text\":",
                   s->open_block);
    cps_buf_json_str(out, p, n);
    cps_buf_puts(out, "}}");
    ev_end(out);
}

static tool_slot *find_tool(cpd_anth_stream *s, int tool_index)
{
    for (size_t i = 0; i < s->n_tools; i++)
        if (s->tools[i].tool_index == tool_index)
            return &s->tools[i];
    return NULL;
}

static int tool_delta(cpd_anth_stream *s, const compass_chat_delta *d, cps_buf *out)
{
    tool_slot *t = find_tool(s, d->tool_index);
    if (!t) {
        if (s->n_tools == s->cap_tools) {
            size_t cap = s->cap_tools ? s->cap_tools * 2 : 4;
            /* slots move on growth: remember the open one by position */
            size_t open_pos = s->open_tool ? (size_t)(s->open_tool - s->tools) : (size_t)-1;
            tool_slot *nt = realloc(s->tools, cap * sizeof(*nt));
            if (!nt)
                return COMPASS_ENOMEM;
            s->tools = nt;
            s->cap_tools = cap;
            if (open_pos != (size_t)-1)
                s->open_tool = &s->tools[open_pos];
        }
        close_open(s, out);
        t = &s->tools[s->n_tools++];
        memset(t, 0, sizeof(*t));
        t->tool_index = d->tool_index;
        t->block = -1;
        cps_buf_init(&t->id);
        cps_buf_init(&t->name);
        cps_buf_init(&t->pending);
        s->open_kind = BLOCK_TOOL;
        s->open_tool = t;
    } else if (s->open_tool != t && !t->closed) {
        /* cannot happen (only one block is open at a time); kept total */
        close_open(s, out);
        s->open_kind = BLOCK_TOOL;
        s->open_tool = t;
    }
    if (t->block < 0) {
        if (d->tool_id.len && !t->id.len)
            cps_buf_append(&t->id, d->tool_id.ptr, d->tool_id.len);
        if (d->tool_name.len && !t->name.len)
            cps_buf_append(&t->name, d->tool_name.ptr, d->tool_name.len);
        if (!t->name.len) {
            /* wait for the name: Anthropic sends it in content_block_start */
            cps_buf_append(&t->pending, d->tool_arguments.ptr, d->tool_arguments.len);
            return 0;
        }
        tool_start(s, t, out);
    }
    if (d->tool_arguments.len)
        /* A fragment for a tool whose block was already stopped (providers stream tool calls
         * one after another, so this does not happen in practice) still goes to its index. */
        tool_args_delta(out, t->block, d->tool_arguments.ptr, d->tool_arguments.len);
    return 0;
}

int cpd_anth_stream_delta(cpd_anth_stream *s, const compass_chat_delta *d, cps_buf *out)
{
    if (!s || !d || !out)
        return COMPASS_EINVAL;
    if (s->ended)
        return COMPASS_EPHASE;
    ensure_started(s, out);
    if (d->content.len)
        text_delta(s, d->content.ptr, d->content.len, out);
    if (d->refusal.len) {
        /* the model's refusal is text the client should see; stop_reason says refusal */
        s->saw_refusal = 1;
        text_delta(s, d->refusal.ptr, d->refusal.len, out);
    }
    if (d->tool_index >= 0) {
        int rc = tool_delta(s, d, out);
        if (rc)
            return rc;
    }
    if (d->finish_reason)
        s->finish = d->finish_reason;
    if (d->usage.present)
        s->usage = d->usage;
    return out->oom ? COMPASS_ENOMEM : 0;
}

int cpd_anth_stream_usage(cpd_anth_stream *s, const compass_usage *u)
{
    if (!s || !u)
        return COMPASS_EINVAL;
    if (u->present)
        s->usage = *u;
    return 0;
}

static const char *stream_stop_reason(const cpd_anth_stream *s)
{
    switch (s->finish) {
    case COMPASS_FINISH_LENGTH: return "max_tokens";
    case COMPASS_FINISH_TOOL_CALLS: return "tool_use";
    case COMPASS_FINISH_CONTENT_FILTER: return "refusal";
    default: break;
    }
    if (s->n_tools)
        return "tool_use";
    if (s->saw_refusal)
        return "refusal";
    return "end_turn";
}

int cpd_anth_stream_finish(cpd_anth_stream *s, cps_buf *out)
{
    if (!s || !out)
        return COMPASS_EINVAL;
    if (s->ended)
        return COMPASS_EPHASE;
    ensure_started(s, out);
    close_open(s, out);
    s->ended = 1;
    ev_begin(out, "message_delta");
    cps_buf_puts(out, "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":");
    put_cstr(out, stream_stop_reason(s));
    cps_buf_puts(out, ",\"stop_sequence\":null},\"usage\":");
    if (s->usage.present) {
        int64_t cached = s->usage.cached_tokens, prompt = s->usage.prompt_tokens;
        if (cached < 0 || cached > prompt)
            cached = cached < 0 ? 0 : prompt;
        cps_buf_printf(out, "{\"input_tokens\":%lld,\"cache_creation_input_tokens\":0,"
                            "\"cache_read_input_tokens\":%lld,\"output_tokens\":%lld}}",
                       (long long)(prompt - cached), (long long)cached,
                       (long long)s->usage.completion_tokens);
    } else {
        cps_buf_puts(out, "{\"output_tokens\":0}}");
    }
    ev_end(out);
    ev_begin(out, "message_stop");
    cps_buf_puts(out, "{\"type\":\"message_stop\"}");
    ev_end(out);
    return out->oom ? COMPASS_ENOMEM : 0;
}

int cpd_anth_stream_error_typed(cpd_anth_stream *s, const char *type, const char *message,
                                cps_buf *out)
{
    if (!s || !out)
        return COMPASS_EINVAL;
    if (s->ended)
        return COMPASS_EPHASE;
    s->ended = 1;
    if (!type || !*type)
        type = "api_error";
    if (!message || !*message)
        message = "Internal server error";
    ev_begin(out, "error");
    error_json(type, message, strlen(message), out);
    ev_end(out);
    return out->oom ? COMPASS_ENOMEM : 0;
}

int cpd_anth_stream_error(cpd_anth_stream *s, const char *message, cps_buf *out)
{
    return cpd_anth_stream_error_typed(s, "api_error", message, out);
}
