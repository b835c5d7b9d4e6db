/*
 * anthropic: a compass provider for the Anthropic Messages API (POST /v1/messages).
 *
 * Pure translation: the canonical request (OpenAI chat completions) becomes a Messages
 * request, and a Messages response, stream event or error body becomes the canonical
 * answer. The host owns all I/O. Wire facts follow Anthropic's public API reference:
 * system prompt at the top level, strictly alternating user/assistant turns made of content
 * blocks (text, image, tool_use, tool_result), a required max_tokens, and SSE streams with
 * named events (message_start, content_block_start/delta/stop, message_delta, message_stop,
 * ping, error).
 */
#include <compass/plugin.h>

#include <json-c/json.h>

#include "../common/json_scan.h"
#include "../common/json_util.h"
#include "anthropic.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define ANTHROPIC_DEFAULT_BASE_URL "https://api.anthropic.com"
#define ANTHROPIC_JSON_DEPTH 128
#define ANTHROPIC_MAX_BLOCKS 100000 /* a stream block index beyond this is garbage */

/* ---------------------------------------------------------------------------------------- */
/* Options and instance                                                                     */
/* ---------------------------------------------------------------------------------------- */

typedef struct anthropic_options {
    const char *anthropic_version;
    int64_t default_max_tokens;
    const char *messages_path;
    const char *beta;
} anthropic_options;

static const compass_option anthropic_option_table[] = {
    {"anthropic_version", COMPASS_OPT_STRING, "2023-06-01", 0,
     offsetof(anthropic_options, anthropic_version),
     "value of the anthropic-version header sent with every call"},
    {"default_max_tokens", COMPASS_OPT_INT, "4096", 0,
     offsetof(anthropic_options, default_max_tokens),
     "max_tokens sent when the client gives neither max_tokens nor max_completion_tokens "
     "(Anthropic requires one)"},
    {"messages_path", COMPASS_OPT_STRING, "/v1/messages", 0,
     offsetof(anthropic_options, messages_path), "path of the Messages endpoint under base_url"},
    {"beta", COMPASS_OPT_STRING, NULL, 0, offsetof(anthropic_options, beta),
     "value of the anthropic-beta header (comma-separated beta names); unset sends none"},
    {NULL, 0, NULL, 0, 0, NULL},
};

typedef struct anthropic {
    const compass_host *h;
    char *url;               /* base_url + messages_path; h->alloc */
    const char *version;     /* host-owned until instance_free */
    const char *beta;        /* NULL or empty: no anthropic-beta header */
    const char *api_key;     /* NULL: no x-api-key header. Never logged */
    int64_t default_max_tokens;
} anthropic;

/* ---------------------------------------------------------------------------------------- */
/* Small helpers                                                                            */
/* ---------------------------------------------------------------------------------------- */

static int oom(compass_err *err, const char *what)
{
    return fail(err, COMPASS_ENOMEM, "anthropic: out of memory %s", what);
}

/* Appends v to an array; on failure releases v. */
static int jpush(json_object *arr, json_object *v)
{
    if (!v)
        return -1;
    if (json_object_array_add(arr, v) != 0) {
        json_object_put(v);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Error classification                                                                     */
/* ---------------------------------------------------------------------------------------- */

typedef struct error_map {
    const char *anthropic_type;
    int outcome;
    int status;           /* the status Anthropic documents for this type */
    const char *oa_type;  /* OpenAI error type */
    const char *oa_code;  /* OpenAI error code, may be "" */
} error_map;

static const error_map error_table[] = {
    {"invalid_request_error", COMPASS_OUTCOME_BAD_REQUEST, 400, "invalid_request_error", ""},
    {"authentication_error", COMPASS_OUTCOME_AUTH, 401, "authentication_error",
     "invalid_api_key"},
    {"billing_error", COMPASS_OUTCOME_AUTH, 402, "insufficient_quota", "billing_error"},
    {"permission_error", COMPASS_OUTCOME_AUTH, 403, "permission_error", ""},
    {"not_found_error", COMPASS_OUTCOME_NOT_FOUND, 404, "not_found_error", ""},
    {"request_too_large", COMPASS_OUTCOME_BAD_REQUEST, 413, "invalid_request_error",
     "request_too_large"},
    {"rate_limit_error", COMPASS_OUTCOME_RATE_LIMITED, 429, "rate_limit_error",
     "rate_limit_exceeded"},
    {"api_error", COMPASS_OUTCOME_RETRYABLE, 500, "server_error", ""},
    {"timeout_error", COMPASS_OUTCOME_RETRYABLE, 504, "server_error", "timeout"},
    {"overloaded_error", COMPASS_OUTCOME_RETRYABLE, 529, "server_error", "overloaded"},
};

static const error_map *error_lookup(const char *type)
{
    size_t i;
    if (!type)
        return NULL;
    for (i = 0; i < sizeof(error_table) / sizeof(error_table[0]); i++)
        if (strcmp(error_table[i].anthropic_type, type) == 0)
            return &error_table[i];
    return NULL;
}

/* The OpenAI error type a bare status implies. */
static const char *oa_type_from_status(int status)
{
    if (status == 401)
        return "authentication_error";
    if (status == 403)
        return "permission_error";
    if (status == 404)
        return "not_found_error";
    if (status == 429)
        return "rate_limit_error";
    if (status >= 400 && status < 500)
        return "invalid_request_error";
    return "server_error";
}

static void copy_cstr(char *dst, size_t cap, const char *s)
{
    compass_copy_fixed(dst, cap, compass_str_c(s));
}

/* Fills u from an Anthropic error type and message; status 0 means "the one the type
 * implies" (errors inside a 200 stream or body). */
static void uerr_fill(compass_upstream_error *u, int status, const char *etype,
                      const char *emsg)
{
    const error_map *m = error_lookup(etype);
    int st = status;
    if (st == 0 || (st >= 200 && st < 300))
        st = m ? m->status : 0;
    compass_uerr_init(u, m ? m->outcome : compass_outcome_from_status(st), st);
    if (m) {
        copy_cstr(u->type, sizeof(u->type), m->oa_type);
        copy_cstr(u->code, sizeof(u->code), m->oa_code);
    } else {
        copy_cstr(u->type, sizeof(u->type), oa_type_from_status(st));
        if (st == 429)
            copy_cstr(u->code, sizeof(u->code), "rate_limit_exceeded");
        else if (etype)
            copy_cstr(u->code, sizeof(u->code), etype); /* a type newer than this table */
    }
    if (emsg && *emsg)
        copy_cstr(u->message, sizeof(u->message), emsg);
    else if (etype)
        snprintf(u->message, sizeof(u->message), "anthropic: %s", etype);
    else
        snprintf(u->message, sizeof(u->message), "anthropic: HTTP %d", st);
}

/* Fills u from a parsed {"type":"error","error":{"type","message"}} body. Returns 0 when the
 * body had that shape. */
static int uerr_from_body(compass_upstream_error *u, int status, json_object *root)
{
    json_object *e = jget(root, "error");
    if (!e || !json_object_is_type(e, json_type_object))
        return -1;
    uerr_fill(u, status, jgets(e, "type"), jgets(e, "message"));
    return 0;
}

static void classify_error(void *inst, compass_req *req, const compass_http_response *resp,
                           compass_upstream_error *uerr)
{
    anthropic *a = inst;
    json_object *root = NULL;
    compass_str ra;
    (void)req;

    if (!uerr)
        return;
    if (!resp) {
        uerr_fill(uerr, 0, NULL, "anthropic: no response");
        return;
    }
    if (json_parse_n(resp->body.ptr, resp->body.len, ANTHROPIC_JSON_DEPTH, &root) != 0 ||
        uerr_from_body(uerr, resp->status, root) != 0) {
        /* Not Anthropic's error shape (a proxy's HTML page, an empty body): the status
         * decides, and a short piece of the body says what it was. */
        uerr_fill(uerr, resp->status, NULL, NULL);
        if (resp->body.len > 0 && !str_is_blank(resp->body))
            snprintf(uerr->message, sizeof(uerr->message), "anthropic: HTTP %d: %.*s",
                     resp->status, STR_ARG(resp->body));
    }
    json_object_put(root);

    ra = compass_header_get(resp->headers, resp->n_headers, "retry-after");
    if (ra.len > 0)
        uerr->retry_after_ms = retry_after_ms(a ? a->h : NULL, ra);
}

/* ---------------------------------------------------------------------------------------- */
/* Instances                                                                                */
/* ---------------------------------------------------------------------------------------- */

static int instance_new(const compass_host *h, const compass_instance_info *info, void **inst,
                        compass_err *err)
{
    const anthropic_options *o = info ? info->options : NULL;
    const char *base, *path, *name;
    anthropic *a;
    size_t bl, pl;

    if (!h || !info || !inst)
        return fail(err, COMPASS_EINVAL, "anthropic: instance_new: NULL argument");
    name = info->name ? info->name : "?";
    base = info->base_url && *info->base_url ? info->base_url : ANTHROPIC_DEFAULT_BASE_URL;
    path = o && o->messages_path ? o->messages_path : "/v1/messages";
    if (strncasecmp(base, "https://", 8) != 0 && strncasecmp(base, "http://", 7) != 0)
        return fail(err, COMPASS_ECONFIG,
                    "anthropic: deployment %s: base_url \"%s\" must start with https:// or "
                    "http://", name, base);
    if (path[0] != '/')
        return fail(err, COMPASS_ECONFIG,
                    "anthropic: deployment %s: messages_path \"%s\" must start with '/'", name,
                    path);
    if (o && o->default_max_tokens < 1)
        return fail(err, COMPASS_ECONFIG,
                    "anthropic: deployment %s: default_max_tokens must be at least 1", name);
    if (o && (!o->anthropic_version || !*o->anthropic_version))
        return fail(err, COMPASS_ECONFIG,
                    "anthropic: deployment %s: anthropic_version must not be empty", name);

    a = h->alloc(h, sizeof(*a));
    if (!a)
        return oom(err, "creating the instance");
    memset(a, 0, sizeof(*a));
    a->h = h;
    a->version = o ? o->anthropic_version : "2023-06-01";
    a->beta = o ? o->beta : NULL;
    a->api_key = info->api_key;
    a->default_max_tokens = o ? o->default_max_tokens : 4096;

    bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        bl--;
    pl = strlen(path);
    a->url = h->alloc(h, bl + pl + 1);
    if (!a->url) {
        h->free(h, a);
        return oom(err, "creating the instance");
    }
    memcpy(a->url, base, bl);
    memcpy(a->url + bl, path, pl);
    a->url[bl + pl] = '\0';
    *inst = a;
    return COMPASS_OK;
}

static void instance_free(void *inst)
{
    anthropic *a = inst;
    if (!a)
        return;
    a->h->free(a->h, a->url);
    a->h->free(a->h, a);
}

/* ---------------------------------------------------------------------------------------- */
/* build_request                                                                            */
/* ---------------------------------------------------------------------------------------- */

typedef struct builder {
    anthropic *a;
    compass_req *req;
    compass_err *err;
} builder;

static int b_oom(builder *b)
{
    return oom(b->err, "building the request");
}

static int add_text_block(builder *b, json_object *blocks, compass_str text)
{
    json_object *blk;
    if (text.len == 0)
        return COMPASS_OK; /* Anthropic refuses empty text blocks */
    blk = json_object_new_object();
    if (jpush(blocks, blk) || jset(blk, "type", json_object_new_string("text")) ||
        jset(blk, "text", jstr(text)))
        return b_oom(b);
    return COMPASS_OK;
}

static int media_type_ok(compass_str m)
{
    static const char *const ok[] = {"image/jpeg", "image/png", "image/gif", "image/webp"};
    size_t i;
    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (m.len == strlen(ok[i]) && strncasecmp(m.ptr, ok[i], m.len) == 0)
            return 1;
    return 0;
}

static int add_image_block(builder *b, json_object *blocks, compass_str url, size_t mi,
                           size_t pi)
{
    json_object *blk, *src;

    blk = json_object_new_object();
    if (jpush(blocks, blk) || jset(blk, "type", json_object_new_string("image")))
        return b_oom(b);
    src = json_object_new_object();
    if (jset(blk, "source", src))
        return b_oom(b);

    if (str_has_prefix(url, "data:")) {
        const char *s = url.ptr + 5, *end = url.ptr + url.len;
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *semi;
        compass_str media, data;
        int base64 = 0;
        if (!comma)
            return fail(b->err, COMPASS_EUNSUPPORTED,
                        "anthropic: messages[%zu].content[%zu].image_url: malformed data: URL "
                        "(no ',')", mi, pi);
        semi = memchr(s, ';', (size_t)(comma - s));
        media.ptr = s;
        media.len = (size_t)((semi ? semi : comma) - s);
        while (semi && semi < comma) {
            const char *next = memchr(semi + 1, ';', (size_t)(comma - semi - 1));
            const char *pe = next ? next : comma;
            if ((size_t)(pe - semi - 1) == 6 && strncasecmp(semi + 1, "base64", 6) == 0)
                base64 = 1;
            semi = next;
        }
        if (!base64)
            return fail(b->err, COMPASS_EUNSUPPORTED,
                        "anthropic: messages[%zu].content[%zu].image_url: only base64 data: "
                        "URLs are supported", mi, pi);
        if (!media_type_ok(media))
            return fail(b->err, COMPASS_EUNSUPPORTED,
                        "anthropic: messages[%zu].content[%zu].image_url: media type \"%.*s\" "
                        "is not supported (Anthropic takes image/jpeg, image/png, image/gif, "
                        "image/webp)", mi, pi, STR_ARG(media));
        data.ptr = comma + 1;
        data.len = (size_t)(end - comma - 1);
        if (jset(src, "type", json_object_new_string("base64")) ||
            jset(src, "media_type", jstr(media)) || jset(src, "data", jstr(data)))
            return b_oom(b);
        return COMPASS_OK;
    }
    if (str_has_prefix(url, "https://") || str_has_prefix(url, "http://")) {
        if (jset(src, "type", json_object_new_string("url")) || jset(src, "url", jstr(url)))
            return b_oom(b);
        return COMPASS_OK;
    }
    return fail(b->err, COMPASS_EUNSUPPORTED,
                "anthropic: messages[%zu].content[%zu].image_url: only https:// and base64 "
                "data: URLs are supported", mi, pi);
}

static int add_content_blocks(builder *b, json_object *blocks, const compass_message *m,
                              size_t mi)
{
    size_t i;
    int rc;
    if (m->parts && m->n_parts > 0) {
        for (i = 0; i < m->n_parts; i++) {
            const compass_content_part *p = &m->parts[i];
            if (p->type == COMPASS_PART_TEXT)
                rc = add_text_block(b, blocks, p->text);
            else if (p->type == COMPASS_PART_IMAGE_URL)
                rc = add_image_block(b, blocks, p->url, mi, i);
            else
                rc = fail(b->err, COMPASS_EUNSUPPORTED,
                          "anthropic: messages[%zu].content[%zu]: unsupported content part "
                          "type %d", mi, i, p->type);
            if (rc)
                return rc;
        }
        return COMPASS_OK;
    }
    if (m->has_content)
        return add_text_block(b, blocks, m->content);
    return COMPASS_OK;
}

static int add_tool_use_blocks(builder *b, json_object *blocks, const compass_message *m,
                               size_t mi)
{
    size_t i;
    for (i = 0; i < m->n_tool_calls; i++) {
        const compass_tool_call *tc = &m->tool_calls[i];
        json_object *input = NULL, *blk;
        if (str_is_blank(tc->arguments)) {
            input = json_object_new_object();
            if (!input)
                return b_oom(b);
        } else if (json_parse_n(tc->arguments.ptr, tc->arguments.len, ANTHROPIC_JSON_DEPTH,
                                &input) != 0 ||
                   !json_object_is_type(input, json_type_object)) {
            json_object_put(input);
            return fail(b->err, COMPASS_EUNSUPPORTED,
                        "anthropic: messages[%zu].tool_calls[%zu] (id \"%.*s\", function "
                        "\"%.*s\"): arguments are not a JSON object; Anthropic needs tool_use "
                        "input as an object", mi, i, STR_ARG(tc->id), STR_ARG(tc->name));
        }
        blk = json_object_new_object();
        if (jpush(blocks, blk)) {
            json_object_put(input);
            return b_oom(b);
        }
        if (jset(blk, "type", json_object_new_string("tool_use")) ||
            jset(blk, "id", jstr(tc->id)) || jset(blk, "name", jstr(tc->name)) ||
            jset(blk, "input", input))
            return b_oom(b);
    }
    return COMPASS_OK;
}

static int add_tool_result_block(builder *b, json_object *blocks, const compass_message *m,
                                 size_t mi)
{
    json_object *blk;
    if (m->tool_call_id.len == 0)
        return fail(b->err, COMPASS_EUNSUPPORTED,
                    "anthropic: messages[%zu]: a tool message needs tool_call_id", mi);
    blk = json_object_new_object();
    if (jpush(blocks, blk) || jset(blk, "type", json_object_new_string("tool_result")) ||
        jset(blk, "tool_use_id", jstr(m->tool_call_id)))
        return b_oom(b);
    if (m->has_content && m->content.len > 0 && jset(blk, "content", jstr(m->content)))
        return b_oom(b);
    return COMPASS_OK;
}

/* Builds "messages" (alternating turns) and the joined system prompt. */
static int build_messages(builder *b, const compass_chat_request *in, json_object *root)
{
    json_object *msgs, *last_blocks = NULL;
    const char *last_role = NULL;
    size_t i, k, sys_len = 0, n_sys = 0;
    int rc;

    msgs = json_object_new_array();
    if (jset(root, "messages", msgs))
        return b_oom(b);

    for (i = 0; i < in->n_messages; i++) {
        const compass_message *m = &in->messages[i];
        json_object *blocks;
        const char *role;

        if (m->role == COMPASS_ROLE_SYSTEM || m->role == COMPASS_ROLE_DEVELOPER) {
            if (m->content.len > 0) {
                sys_len += m->content.len + (n_sys ? 2 : 0);
                n_sys++;
            }
            continue;
        }
        if (m->role == COMPASS_ROLE_USER || m->role == COMPASS_ROLE_TOOL)
            role = "user";
        else if (m->role == COMPASS_ROLE_ASSISTANT)
            role = "assistant";
        else
            return fail(b->err, COMPASS_EUNSUPPORTED,
                        "anthropic: messages[%zu]: unsupported role %d", i, m->role);

        blocks = json_object_new_array();
        if (!blocks)
            return b_oom(b);
        if (m->role == COMPASS_ROLE_TOOL) {
            rc = add_tool_result_block(b, blocks, m, i);
        } else {
            rc = add_content_blocks(b, blocks, m, i);
            if (!rc && m->role == COMPASS_ROLE_ASSISTANT)
                rc = add_tool_use_blocks(b, blocks, m, i);
        }
        if (rc) {
            json_object_put(blocks);
            return rc;
        }
        if (json_object_array_length(blocks) == 0) {
            /* Nothing Anthropic would accept (an empty message): leave it out. */
            json_object_put(blocks);
            continue;
        }
        if (last_role && strcmp(last_role, role) == 0) {
            /* Anthropic wants user and assistant turns to alternate: merge. */
            for (k = 0; k < json_object_array_length(blocks); k++) {
                json_object *v = json_object_get(json_object_array_get_idx(blocks, k));
                if (jpush(last_blocks, v)) {
                    json_object_put(blocks);
                    return b_oom(b);
                }
            }
            json_object_put(blocks);
        } else {
            json_object *msg;
            if (!last_role && strcmp(role, "user") != 0) {
                /* Anthropic requires the first turn to be the user's; a conversation that
                 * opens with the assistant (a chat UI's greeting) gets a minimal user turn
                 * before it, as other gateways do, rather than a 400 the client cannot fix. */
                json_object *u = json_object_new_object(), *ub = json_object_new_array();
                json_object *tb = json_object_new_object();
                if (jpush(msgs, u) || !ub || !tb ||
                    jset(u, "role", json_object_new_string("user")) ||
                    jset(tb, "type", json_object_new_string("text")) ||
                    jset(tb, "text", json_object_new_string(".")) || jpush(ub, tb) ||
                    jset(u, "content", ub)) {
                    json_object_put(blocks);
                    return b_oom(b);
                }
            }
            msg = json_object_new_object();
            if (jpush(msgs, msg)) {
                json_object_put(blocks);
                return b_oom(b);
            }
            if (jset(msg, "role", json_object_new_string(role)) ||
                jset(msg, "content", blocks))
                return b_oom(b);
            last_role = role;
            last_blocks = blocks;
        }
    }

    if (json_object_array_length(msgs) == 0)
        return fail(b->err, COMPASS_EUNSUPPORTED,
                    "anthropic: messages: Anthropic needs at least one user or assistant message "
                    "with content besides the system prompt");
    if (n_sys > 0) {
        char *sys = b->a->h->req_alloc(b->req, sys_len + 1);
        size_t off = 0;
        compass_str s;
        if (!sys)
            return b_oom(b);
        for (i = 0; i < in->n_messages; i++) {
            const compass_message *m = &in->messages[i];
            if ((m->role != COMPASS_ROLE_SYSTEM && m->role != COMPASS_ROLE_DEVELOPER) ||
                m->content.len == 0)
                continue;
            if (off > 0) {
                memcpy(sys + off, "\n\n", 2);
                off += 2;
            }
            memcpy(sys + off, m->content.ptr, m->content.len);
            off += m->content.len;
        }
        sys[off] = '\0';
        s.ptr = sys;
        s.len = off;
        if (jset(root, "system", jstr(s)))
            return b_oom(b);
    }
    return COMPASS_OK;
}

static int build_tools(builder *b, const compass_chat_request *in, json_object *root)
{
    json_object *tools, *tc;
    const char *type = NULL;
    size_t i;

    if (in->n_tools == 0) {
        if (in->tool_choice == COMPASS_TOOL_CHOICE_REQUIRED ||
            in->tool_choice == COMPASS_TOOL_CHOICE_FUNCTION)
            return fail(b->err, COMPASS_EUNSUPPORTED,
                        "anthropic: tool_choice: \"%s\" needs tools, and the request has none",
                        in->tool_choice == COMPASS_TOOL_CHOICE_REQUIRED ? "required"
                                                                        : "function");
        return COMPASS_OK; /* auto/none without tools: nothing to say */
    }

    tools = json_object_new_array();
    if (jset(root, "tools", tools))
        return b_oom(b);
    for (i = 0; i < in->n_tools; i++) {
        const compass_tool *t = &in->tools[i];
        json_object *tool, *schema = NULL;
        if (t->name.len == 0)
            return fail(b->err, COMPASS_EUNSUPPORTED, "anthropic: tools[%zu]: no name", i);
        if (str_is_blank(t->parameters)) {
            schema = json_object_new_object();
            if (jset(schema, "type", json_object_new_string("object")) ||
                jset(schema, "properties", json_object_new_object())) {
                json_object_put(schema);
                return b_oom(b);
            }
        } else if (json_parse_n(t->parameters.ptr, t->parameters.len, ANTHROPIC_JSON_DEPTH,
                                &schema) != 0 ||
                   !json_object_is_type(schema, json_type_object)) {
            json_object_put(schema);
            return fail(b->err, COMPASS_EUNSUPPORTED,
                        "anthropic: tools[%zu] (\"%.*s\").parameters: not a JSON object", i,
                        STR_ARG(t->name));
        }
        tool = json_object_new_object();
        if (jpush(tools, tool)) {
            json_object_put(schema);
            return b_oom(b);
        }
        if (jset(tool, "name", jstr(t->name)) ||
            (t->description.len > 0 && jset(tool, "description", jstr(t->description))) ||
            jset(tool, "input_schema", schema))
            return b_oom(b);
    }

    switch (in->tool_choice) {
    case COMPASS_TOOL_CHOICE_AUTO:
        type = "auto";
        break;
    case COMPASS_TOOL_CHOICE_NONE:
        type = "none";
        break;
    case COMPASS_TOOL_CHOICE_REQUIRED:
        type = "any";
        break;
    case COMPASS_TOOL_CHOICE_FUNCTION:
        type = "tool";
        break;
    default:
        type = NULL;
        break;
    }
    if ((in->set & COMPASS_SET_PARALLEL_TOOL_CALLS) && !in->parallel_tool_calls && !type)
        type = "auto"; /* the only way to say "one tool call at a time" */
    if (!type)
        return COMPASS_OK;
    if (in->tool_choice == COMPASS_TOOL_CHOICE_FUNCTION && in->tool_choice_name.len == 0)
        return fail(b->err, COMPASS_EUNSUPPORTED,
                    "anthropic: tool_choice: a function choice needs a function name");
    tc = json_object_new_object();
    if (jset(root, "tool_choice", tc) || jset(tc, "type", json_object_new_string(type)))
        return b_oom(b);
    if (in->tool_choice == COMPASS_TOOL_CHOICE_FUNCTION &&
        jset(tc, "name", jstr(in->tool_choice_name)))
        return b_oom(b);
    if ((in->set & COMPASS_SET_PARALLEL_TOOL_CALLS) && !in->parallel_tool_calls &&
        strcmp(type, "none") != 0 &&
        jset(tc, "disable_parallel_tool_use", json_object_new_boolean(1)))
        return b_oom(b);
    return COMPASS_OK;
}

/* Parameters Anthropic has no equivalent for: refuse rather than silently drop. */
static int check_unsupported(builder *b, const compass_chat_request *in)
{
    if ((in->set & COMPASS_SET_N) && in->n > 1)
        return fail(b->err, COMPASS_EUNSUPPORTED,
                    "anthropic: n=%lld is not supported: the Messages API returns one choice",
                    (long long)in->n);
    if (in->set & COMPASS_SET_SEED)
        return fail(b->err, COMPASS_EUNSUPPORTED,
                    "anthropic: seed is not supported: the Messages API has no seed, so the "
                    "output would not be reproducible");
    if ((in->set & COMPASS_SET_PRESENCE_PENALTY) && in->presence_penalty != 0.0)
        return fail(b->err, COMPASS_EUNSUPPORTED,
                    "anthropic: presence_penalty is not supported by the Messages API");
    if ((in->set & COMPASS_SET_FREQUENCY_PENALTY) && in->frequency_penalty != 0.0)
        return fail(b->err, COMPASS_EUNSUPPORTED,
                    "anthropic: frequency_penalty is not supported by the Messages API");
    if ((in->set & COMPASS_SET_TEMPERATURE) &&
        !(in->temperature >= 0.0 && in->temperature <= 1.0))
        return fail(b->err, COMPASS_EUNSUPPORTED,
                    "anthropic: temperature %g is out of range: Anthropic accepts 0 to 1 "
                    "(OpenAI's 0 to 2 is not rescaled)", in->temperature);
    if ((in->set & COMPASS_SET_TOP_P) && !(in->top_p >= 0.0 && in->top_p <= 1.0))
        return fail(b->err, COMPASS_EUNSUPPORTED,
                    "anthropic: top_p %g is out of range: Anthropic accepts 0 to 1", in->top_p);
    if (in->response_format.len > 0 && !str_is_blank(in->response_format)) {
        json_object *rf = NULL;
        const char *t;
        if (json_parse_n(in->response_format.ptr, in->response_format.len, ANTHROPIC_JSON_DEPTH,
                         &rf) != 0) {
            return fail(b->err, COMPASS_EUNSUPPORTED, "anthropic: response_format: not valid JSON");
        }
        t = jgets(rf, "type");
        if (streq(t, "json_schema")) {
            json_object_put(rf);
            return fail(b->err, COMPASS_EUNSUPPORTED,
                        "anthropic: response_format json_schema is not supported: the "
                        "Messages API has no response_format, and its output would not be "
                        "guaranteed to match the schema");
        }
        if (!streq(t, "text") && !streq(t, "json_object")) {
            int rc = fail(b->err, COMPASS_EUNSUPPORTED,
                          "anthropic: response_format type \"%s\" is not supported",
                          t ? t : "(none)");
            json_object_put(rf);
            return rc;
        }
        json_object_put(rf);
    }
    if (in->reasoning_effort.len > 0 && !compass_str_eq(in->reasoning_effort, "none"))
        return fail(b->err, COMPASS_EUNSUPPORTED,
                    "anthropic: reasoning_effort is not supported: extended thinking returns "
                    "thinking blocks that the OpenAI chat format cannot carry back");
    return COMPASS_OK;
}

static int build_body(builder *b, const compass_chat_request *in, json_object *root)
{
    int64_t max_tokens;
    int rc;

    if (jset(root, "model", jstr(in->model)))
        return b_oom(b);

    if (in->set & COMPASS_SET_MAX_COMPLETION_TOKENS)
        max_tokens = in->max_completion_tokens;
    else if (in->set & COMPASS_SET_MAX_TOKENS)
        max_tokens = in->max_tokens;
    else
        max_tokens = b->a->default_max_tokens;
    if (max_tokens < 1)
        return fail(b->err, COMPASS_EUNSUPPORTED,
                    "anthropic: max_tokens %lld is not supported: Anthropic needs at least 1",
                    (long long)max_tokens);
    if (jset(root, "max_tokens", json_object_new_int64(max_tokens)))
        return b_oom(b);

    rc = build_messages(b, in, root);
    if (rc)
        return rc;
    rc = build_tools(b, in, root);
    if (rc)
        return rc;

    if ((in->set & COMPASS_SET_TEMPERATURE) && jset(root, "temperature", jdouble(in->temperature)))
        return b_oom(b);
    if ((in->set & COMPASS_SET_TOP_P) && jset(root, "top_p", jdouble(in->top_p)))
        return b_oom(b);
    if (in->n_stop > 0) {
        json_object *stops = json_object_new_array();
        size_t i;
        if (jset(root, "stop_sequences", stops))
            return b_oom(b);
        for (i = 0; i < in->n_stop; i++)
            if (jpush(stops, jstr(in->stop[i])))
                return b_oom(b);
    }
    if (in->user.len > 0) {
        json_object *md = json_object_new_object();
        if (jset(root, "metadata", md) || jset(md, "user_id", jstr(in->user)))
            return b_oom(b);
    }
    if (in->stream && jset(root, "stream", json_object_new_boolean(1)))
        return b_oom(b);
    return COMPASS_OK;
}

static int set_header(compass_header *hd, const char *name, compass_str value)
{
    hd->name = compass_str_c(name);
    hd->value = value;
    return value.ptr ? 0 : -1;
}

static compass_str req_dup(const anthropic *a, compass_req *req, const char *s)
{
    return a->h->req_strdup(req, s, strlen(s));
}

static int build_request(void *inst, compass_req *req, const compass_chat_request *in,
                         compass_http_request *out, compass_err *err)
{
    anthropic *a = inst;
    builder b;
    json_object *root;
    const char *text;
    compass_header *hs;
    compass_str body;
    size_t n = 0, cap = 5;
    int rc;

    if (!a || !req || !in || !out)
        return fail(err, COMPASS_EINVAL, "anthropic: build_request: NULL argument");
    b.a = a;
    b.req = req;
    b.err = err;

    rc = check_unsupported(&b, in);
    if (rc)
        return rc;
    if (in->model.len == 0)
        return fail(err, COMPASS_EINVAL, "anthropic: build_request: no model");

    root = json_object_new_object();
    if (!root)
        return b_oom(&b);
    rc = build_body(&b, in, root);
    if (rc) {
        json_object_put(root);
        return rc;
    }
    text = json_object_to_json_string_ext(root,
                                          JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (!text) {
        json_object_put(root);
        return b_oom(&b);
    }
    body = a->h->req_strdup(req, text, strlen(text));
    json_object_put(root);
    if (!body.ptr)
        return b_oom(&b);

    hs = a->h->req_alloc(req, cap * sizeof(*hs));
    if (!hs)
        return b_oom(&b);
    if (set_header(&hs[n++], "content-type", compass_str_c("application/json")) ||
        set_header(&hs[n++], "anthropic-version", req_dup(a, req, a->version)))
        return b_oom(&b);
    if (a->api_key && set_header(&hs[n++], "x-api-key", req_dup(a, req, a->api_key)))
        return b_oom(&b);
    if (a->beta && *a->beta && set_header(&hs[n++], "anthropic-beta", req_dup(a, req, a->beta)))
        return b_oom(&b);

    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    out->method = COMPASS_HTTP_POST;
    out->url = req_dup(a, req, a->url);
    if (!out->url.ptr)
        return b_oom(&b);
    out->headers = hs;
    out->n_headers = n;
    out->body = body;
    out->stream_format = in->stream ? COMPASS_STREAM_SSE : COMPASS_STREAM_NONE;
    return COMPASS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* parse_response                                                                           */
/* ---------------------------------------------------------------------------------------- */

/* s as a stop_reason: ptr NULL when there is none (absent or not a string). */
static int map_stop_reason(const compass_host *h, compass_str s)
{
    if (!s.ptr)
        return COMPASS_FINISH_NONE;
    if (compass_str_eq(s, "end_turn") || compass_str_eq(s, "stop_sequence") ||
        compass_str_eq(s, "pause_turn"))
        return COMPASS_FINISH_STOP;
    if (compass_str_eq(s, "max_tokens") || compass_str_eq(s, "model_context_window_exceeded"))
        return COMPASS_FINISH_LENGTH;
    if (compass_str_eq(s, "tool_use"))
        return COMPASS_FINISH_TOOL_CALLS;
    if (compass_str_eq(s, "refusal"))
        return COMPASS_FINISH_CONTENT_FILTER;
    if (h && h->log)
        h->log(h, COMPASS_LOG_DEBUG, "unknown stop_reason \"%.*s\" read as stop", STR_ARG(s));
    return COMPASS_FINISH_STOP;
}

/* Anthropic's usage: input_tokens excludes cached input, so prompt_tokens adds the cache
 * reads and writes back in, as OpenAI's prompt_tokens counts every input token. */
typedef struct in_usage {
    int64_t input, cache_read, cache_creation;
} in_usage;

static void read_in_usage(json_object *u, in_usage *iu)
{
    int found;
    int64_t v;
    v = jgeti(u, "input_tokens", &found);
    if (found)
        iu->input = v;
    v = jgeti(u, "cache_read_input_tokens", &found);
    if (found)
        iu->cache_read = v;
    v = jgeti(u, "cache_creation_input_tokens", &found);
    if (found)
        iu->cache_creation = v;
}

/* What one usage object says, whichever reader read it: has_* tells which input counts it
 * held as numbers (only those replace what a stream kept from message_start). */
typedef struct usage_in {
    int present; /* usage is an object */
    int has_input, has_cache_read, has_cache_creation;
    in_usage in;    /* 0 where not a number */
    int64_t output; /* output_tokens; 0 when not a number */
} usage_in;

/* usage_in for a json-c value (any type; only an object has counts). */
static void usage_from_tree(json_object *o, usage_in *u)
{
    memset(u, 0, sizeof(*u));
    if (!o || !json_object_is_type(o, json_type_object))
        return;
    u->present = 1;
    u->in.input = jgeti(o, "input_tokens", &u->has_input);
    u->in.cache_read = jgeti(o, "cache_read_input_tokens", &u->has_cache_read);
    u->in.cache_creation = jgeti(o, "cache_creation_input_tokens", &u->has_cache_creation);
    u->output = jgeti(o, "output_tokens", NULL);
}

/* Sums saturate: the counts are upstream bytes (json-c reads a too large one as INT64_MAX). */
static void fill_usage(compass_usage *u, const in_usage *iu, int64_t output)
{
    memset(u, 0, sizeof(*u));
    u->present = 1;
    u->prompt_tokens = js_add_sat(js_add_sat(iu->input, iu->cache_read), iu->cache_creation);
    u->completion_tokens = output;
    u->total_tokens = js_add_sat(u->prompt_tokens, u->completion_tokens);
    u->cached_tokens = iu->cache_read;
}

static int dup_str(const compass_host *h, compass_req *req, compass_str s, compass_str *out)
{
    if (s.len == 0) {
        out->ptr = NULL;
        out->len = 0;
        return 0;
    }
    *out = h->req_strdup(req, s.ptr, s.len);
    return out->ptr ? 0 : -1;
}

/* A content block the response keeps: a text block or a tool_use block (thinking,
 * redacted_thinking and server tool blocks have no canonical form). */
typedef struct an_block {
    int tool;             /* a tool_use block; else a text block */
    compass_str text;     /* a text block's text: empty unless a string */
    compass_str id, name; /* a tool_use block's: empty unless strings */
    json_object *input;   /* a tool_use block's input; NULL (absent or null) reads as {} */
} an_block;

/* The kept blocks in order: a few in place, more in host memory. */
typedef struct an_blocks {
    const compass_host *h;
    an_block *v;
    size_t n, cap;
    an_block local[8];
} an_blocks;

static void blocks_init(an_blocks *b, const compass_host *h)
{
    b->h = h;
    b->v = b->local;
    b->n = 0;
    b->cap = sizeof(b->local) / sizeof(b->local[0]);
}

static void blocks_release(an_blocks *b)
{
    if (b->v != b->local)
        b->h->free(b->h, b->v);
    blocks_init(b, b->h);
}

/* A new zeroed block at the end, or NULL when out of memory. */
static an_block *blocks_add(an_blocks *b)
{
    if (b->n == b->cap) {
        an_block *nv;
        if (b->cap > SIZE_MAX / 2 / sizeof(*nv))
            return NULL;
        nv = b->h->alloc(b->h, 2 * b->cap * sizeof(*nv));
        if (!nv)
            return NULL;
        memcpy(nv, b->v, b->n * sizeof(*nv));
        if (b->v != b->local)
            b->h->free(b->h, b->v);
        b->v = nv;
        b->cap *= 2;
    }
    memset(&b->v[b->n], 0, sizeof(b->v[0]));
    return &b->v[b->n++];
}

/* What a Messages object says, as either reader found it. The views borrow the body or json-c
 * objects that live until the response has been filled (which copies what it keeps). */
typedef struct an_reply {
    compass_str id, model;
    compass_str stop_reason; /* ptr NULL when absent or not a string */
    const an_blocks *blocks;
    int has_usage;           /* usage is an object: in and output hold its counts */
    in_usage in;
    int64_t output;
} an_reply;

/* Fills out from r: the text blocks' text joined, one tool call per tool_use block (its input
 * as JSON text), strings copied into the request arena. */
static int fill_response(const compass_host *h, compass_req *req, const an_reply *r,
                         compass_chat_response *out, compass_err *err)
{
    size_t i, n_tools = 0, text_len = 0, n_text = 0, ti = 0, off = 0;
    char *text = NULL;

    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    if (dup_str(h, req, r->id, &out->id) || dup_str(h, req, r->model, &out->model))
        goto nomem;
    for (i = 0; i < r->blocks->n; i++) {
        const an_block *b = &r->blocks->v[i];
        if (b->tool) {
            n_tools++;
        } else {
            text_len += b->text.len;
            n_text++;
        }
    }
    if (n_text > 0) {
        text = h->req_alloc(req, text_len + 1);
        if (!text)
            goto nomem;
    }
    if (n_tools > 0) {
        out->tool_calls = h->req_alloc(req, n_tools * sizeof(*out->tool_calls));
        if (!out->tool_calls)
            goto nomem;
        memset(out->tool_calls, 0, n_tools * sizeof(*out->tool_calls));
    }
    for (i = 0; i < r->blocks->n; i++) {
        const an_block *b = &r->blocks->v[i];
        if (!b->tool) {
            if (b->text.len)
                memcpy(text + off, b->text.ptr, b->text.len);
            off += b->text.len;
        } else {
            compass_tool_call *tc = &out->tool_calls[ti++];
            const char *args = b->input ? json_object_to_json_string_ext(
                                              b->input, JSON_C_TO_STRING_PLAIN |
                                                            JSON_C_TO_STRING_NOSLASHESCAPE)
                                        : "{}";
            if (!args)
                goto nomem;
            if (dup_str(h, req, b->id, &tc->id) || dup_str(h, req, b->name, &tc->name) ||
                dup_str(h, req, compass_str_c(args), &tc->arguments))
                goto nomem;
        }
    }
    out->n_tool_calls = n_tools;
    if (text) {
        text[off] = '\0';
        out->has_content = 1;
        out->content.ptr = text;
        out->content.len = off;
    }
    out->finish_reason = map_stop_reason(h, r->stop_reason);
    if (r->has_usage)
        fill_usage(&out->usage, &r->in, r->output);
    return COMPASS_OK;

nomem:
    return oom(err, "parsing the response");
}

/* ---- the tree reader: json-c parses the whole body, and words every error */

int an_parse_response_full(const compass_host *h, compass_req *req,
                           const compass_http_response *resp, compass_chat_response *out,
                           compass_upstream_error *uerr, compass_err *err)
{
    json_object *root = NULL, *content, *usage;
    const char *type;
    an_blocks blocks;
    an_reply r;
    size_t i, n;
    int rc = COMPASS_OK;

    if (json_parse_n(resp->body.ptr, resp->body.len, ANTHROPIC_JSON_DEPTH, &root) != 0 ||
        !json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return fail(err, COMPASS_EPARSE, "anthropic: response body is not a JSON object");
    }
    type = jgets(root, "type");
    if (streq(type, "error") || (!type && jget(root, "error"))) {
        compass_upstream_error tmp;
        if (uerr_from_body(uerr ? uerr : &tmp, resp->status, root) != 0)
            uerr_fill(uerr ? uerr : &tmp, resp->status, NULL, NULL);
        rc = fail(err, COMPASS_EUPSTREAM, "anthropic: upstream error: %s",
                  uerr ? uerr->message : tmp.message);
        json_object_put(root);
        return rc;
    }
    content = jget(root, "content");
    if ((type && strcmp(type, "message") != 0) || !content ||
        !json_object_is_type(content, json_type_array)) {
        rc = fail(err, COMPASS_EPARSE,
                  "anthropic: response is not a Messages object (type \"%s\", content %s)",
                  type ? type : "(none)", content ? "not an array" : "missing");
        json_object_put(root); /* after: type lives in root */
        return rc;
    }

    memset(&r, 0, sizeof(r));
    r.id = jgetstr(root, "id");
    r.model = jgetstr(root, "model");
    r.stop_reason = compass_str_c(jgets(root, "stop_reason"));
    blocks_init(&blocks, h);
    r.blocks = &blocks;
    n = json_object_array_length(content);
    for (i = 0; i < n && !rc; i++) {
        json_object *blk = json_object_array_get_idx(content, i);
        const char *bt = jgets(blk, "type");
        an_block *b;
        if (!streq(bt, "text") && !streq(bt, "tool_use"))
            continue;
        b = blocks_add(&blocks);
        if (!b) {
            rc = oom(err, "parsing the response");
        } else if (streq(bt, "text")) {
            b->text = jgetstr(blk, "text");
        } else {
            b->tool = 1;
            b->id = jgetstr(blk, "id");
            b->name = jgetstr(blk, "name");
            b->input = jget(blk, "input");
        }
    }
    usage = jget(root, "usage");
    if (usage && json_object_is_type(usage, json_type_object)) {
        r.has_usage = 1;
        read_in_usage(usage, &r.in);
        r.output = jgeti(usage, "output_tokens", NULL);
    }
    if (!rc)
        rc = fill_response(h, req, &r, out, err);
    blocks_release(&blocks);
    json_object_put(root);
    return rc;
}

/* ---- the scanner reader: walks the body in place, each byte once, and decodes only what
 * the response keeps: escaped strings itself, tool inputs (which are re-serialised) and odd
 * numbers with json-c */

/* Where the decoded text of escaped strings goes, and json-c for the strings js_unescape
 * leaves to it. The room is a buffer the caller gives, or (with heap set) cap bytes taken
 * from heap on the first escaped string and given back by text_release. */
typedef struct an_text {
    char *buf;
    size_t cap, used;
    const compass_host *heap;
    js_keep *keep;
} an_text;

static void text_init(an_text *t, char *buf, size_t cap, const compass_host *heap,
                      js_keep *keep)
{
    t->buf = buf;
    t->cap = cap;
    t->used = 0;
    t->heap = buf ? NULL : heap;
    t->keep = keep;
}

static void text_release(an_text *t)
{
    if (t->heap && t->buf)
        t->heap->free(t->heap, t->buf);
    t->buf = NULL;
}

/* String v as jgetstr() reads it (ptr NULL unless a string): a view of the input when it
 * has no escape; else decoded into t's room, or by json-c (kept in t->keep) for what
 * js_unescape leaves (lone surrogates, which json-c writes U+FFFD for) or when there is no
 * room. */
static int text_of(an_text *t, const js_val *v, compass_str *out)
{
    size_t n;
    out->ptr = NULL;
    out->len = 0;
    if (v->type != JS_STRING)
        return 0;
    if (!v->escaped) {
        *out = js_text(v);
        return 0;
    }
    if (!t->buf && t->heap && t->cap) {
        t->buf = t->heap->alloc(t->heap, t->cap);
        if (!t->buf)
            t->heap = NULL; /* json-c decodes instead, from here on */
    }
    if (t->buf && !js_unescape(v, t->buf + t->used, t->cap - t->used, &n)) {
        out->ptr = t->buf + t->used;
        out->len = n;
        t->used += n;
        return 0;
    }
    return js_string(t->keep, v, out);
}

/* String v as jgets() reads it, a C string: ptr NULL unless a string, and a decoded NUL
 * ends it. */
static int cstr_of(an_text *t, const js_val *v, compass_str *out)
{
    const char *nul;
    if (text_of(t, v, out))
        return -1;
    nul = v->escaped && out->len ? memchr(out->ptr, '\0', out->len) : NULL;
    if (nul)
        out->len = (size_t)(nul - out->ptr);
    return 0;
}

/* The usage counts both Messages bodies and stream events carry. */
enum { U_INPUT, U_CACHE_READ, U_CACHE_CREATION, U_OUTPUT, U_N };
static const js_key usage_keys[U_N] = {JS_KEY("input_tokens"),
                                       JS_KEY("cache_read_input_tokens"),
                                       JS_KEY("cache_creation_input_tokens"),
                                       JS_KEY("output_tokens")};

/* A usage member as the scanner found it: its type (JS_NONE while absent) and, when an
 * object, its counts' spans. */
typedef struct usage_scan {
    js_type type;
    js_val m[U_N];
} usage_scan;

/* The type of the value that comes next, into *type: 1 for an object (left for the caller to
 * enter), 0 for any other (read past). -1 on bad JSON or when *type was set already: the
 * member came twice (json-c keeps the last). */
static int scan_type_in(json_scan *s, js_type *type)
{
    js_val v;
    if (*type != JS_NONE)
        return -1;
    if (js_peek(s) == JS_OBJECT) {
        *type = JS_OBJECT;
        return 1;
    }
    if (js_value(s, &v))
        return -1;
    *type = v.type;
    return 0;
}

/* Reads the usage value that comes next into u: an object is entered in place (no second
 * walk over its bytes), anything else only typed. -1 on bad JSON, an escaped key, or usage
 * or one of its counts coming twice (json-c keeps the last). */
static int scan_usage_in(json_scan *s, usage_scan *u)
{
    int r = scan_type_in(s, &u->type);
    if (r <= 0)
        return r;
    memset(u->m, 0, sizeof(u->m));
    return js_members_k(s, usage_keys, u->m, U_N);
}

/* A count as jgeti() reads it: found (and *out set) only when it is a number. */
static int scan_count(js_keep *keep, const js_val *v, int64_t *out, int *found)
{
    if (v->type != JS_NUMBER)
        return 0;
    if (found)
        *found = 1;
    return js_int64(keep, v, out);
}

/* usage_in as usage_from_tree() reads it, from what scan_usage_in found. */
static int usage_from_scan(js_keep *keep, const usage_scan *s, usage_in *u)
{
    memset(u, 0, sizeof(*u));
    if (s->type != JS_OBJECT)
        return 0;
    u->present = 1;
    return scan_count(keep, &s->m[U_INPUT], &u->in.input, &u->has_input) ||
                   scan_count(keep, &s->m[U_CACHE_READ], &u->in.cache_read,
                              &u->has_cache_read) ||
                   scan_count(keep, &s->m[U_CACHE_CREATION], &u->in.cache_creation,
                              &u->has_cache_creation) ||
                   scan_count(keep, &s->m[U_OUTPUT], &u->output, NULL)
               ? -1
               : 0;
}

/* One element of content, an object: kept (in blocks) when it is a text or tool_use block. */
static int scan_block(json_scan *s, an_text *t, an_blocks *blocks)
{
    enum { B_TYPE, B_TEXT, B_ID, B_NAME, B_INPUT, B_N };
    static const js_key keys[B_N] = {JS_KEY("type"), JS_KEY("text"), JS_KEY("id"),
                                     JS_KEY("name"), JS_KEY("input")};
    js_val m[B_N];
    compass_str type;
    an_block *b;

    memset(m, 0, sizeof(m));
    if (js_members_k(s, keys, m, B_N) || cstr_of(t, &m[B_TYPE], &type))
        return -1;
    if (!compass_str_eq(type, "text") && !compass_str_eq(type, "tool_use"))
        return 0;
    b = blocks_add(blocks);
    if (!b)
        return -1;
    if (compass_str_eq(type, "text"))
        return text_of(t, &m[B_TEXT], &b->text);
    b->tool = 1;
    return text_of(t, &m[B_ID], &b->id) || text_of(t, &m[B_NAME], &b->name) ||
                   (m[B_INPUT].type != JS_NONE && js_decode(t->keep, &m[B_INPUT], &b->input))
               ? -1
               : 0;
}

static int scan_content(json_scan *s, an_text *t, an_blocks *blocks)
{
    int r;
    if (js_begin(s, '['))
        return -1;
    while ((r = js_elem(s)) > 0)
        if (js_peek(s) == JS_OBJECT ? scan_block(s, t, blocks) : js_skip(s))
            return -1;
    return r;
}

/* Reads a Messages body into r and blocks; -1 when the tree reader must take it: not strict
 * JSON, a duplicate or escaped key, an error (a non-null error member, a type other than
 * "message"), content that is not an array. */
static int scan_response(compass_str body, an_text *t, an_blocks *blocks, an_reply *r)
{
    enum { T_ID, T_TYPE, T_MODEL, T_STOP_REASON, T_ERROR, T_N, T_USAGE = T_N, T_CONTENT };
    static const js_key keys[T_CONTENT + 1] = {JS_KEY("id"), JS_KEY("type"), JS_KEY("model"),
                                              JS_KEY("stop_reason"), JS_KEY("error"),
                                              JS_KEY("usage"), JS_KEY("content")};
    js_val m[T_N];
    const js_val *type = &m[T_TYPE];
    usage_scan usage;
    usage_in u;
    json_scan s;
    size_t i;
    int rc, seen_content = 0;

    memset(r, 0, sizeof(*r));
    memset(m, 0, sizeof(m));
    usage.type = JS_NONE;
    r->blocks = blocks;
    if (!body.ptr || body.len == 0 || body.len > (size_t)INT_MAX - 1) /* as json_parse_n */
        return -1;
    js_init(&s, body.ptr, body.len, ANTHROPIC_JSON_DEPTH);
    if (js_begin(&s, '{'))
        return -1;
    while ((rc = js_member_key(&s, keys, T_CONTENT + 1, &i)) > 0) {
        if (i == T_CONTENT) {
            if (seen_content++ || js_peek(&s) != JS_ARRAY || scan_content(&s, t, blocks))
                return -1;
        } else if (i == T_USAGE ? scan_usage_in(&s, &usage)
                                : i < T_N ? js_take(&s, &m[i]) : js_skip(&s)) {
            return -1;
        }
    }
    if (rc < 0 || js_end(&s) || !seen_content ||
        (m[T_ERROR].type != JS_NONE && m[T_ERROR].type != JS_NULL) ||
        (type->type != JS_NONE && !js_key_is(type, "message")))
        return -1;
    if (text_of(t, &m[T_ID], &r->id) || text_of(t, &m[T_MODEL], &r->model) ||
        cstr_of(t, &m[T_STOP_REASON], &r->stop_reason) || usage_from_scan(t->keep, &usage, &u))
        return -1;
    r->has_usage = u.present;
    r->in = u.in;
    r->output = u.output;
    return 0;
}

int an_parse_response_fast(const compass_host *h, compass_req *req,
                           const compass_http_response *resp, compass_chat_response *out,
                           compass_err *err)
{
    js_keep keep;
    an_text t;
    an_blocks blocks;
    an_reply r;
    int rc;
    js_keep_init(&keep, ANTHROPIC_JSON_DEPTH);
    /* decoded text is never longer than the body it comes from */
    text_init(&t, NULL, resp->body.len, h, &keep);
    blocks_init(&blocks, h);
    rc = scan_response(resp->body, &t, &blocks, &r) ? AN_DECLINED
                                                   : fill_response(h, req, &r, out, err);
    blocks_release(&blocks);
    text_release(&t);
    js_keep_release(&keep);
    return rc;
}

static int parse_response(void *inst, compass_req *req, const compass_http_response *resp,
                          compass_chat_response *out, compass_upstream_error *uerr,
                          compass_err *err)
{
    anthropic *a = inst;
    int rc;
    if (!a || !req || !resp || !out)
        return fail(err, COMPASS_EINVAL, "anthropic: parse_response: NULL argument");
    rc = an_parse_response_fast(a->h, req, resp, out, err);
    return rc == AN_DECLINED ? an_parse_response_full(a->h, req, resp, out, uerr, err) : rc;
}

/* ---------------------------------------------------------------------------------------- */
/* parse_stream_event                                                                       */
/* ---------------------------------------------------------------------------------------- */

/* Per-attempt stream state, in the request arena, found through h->req_data. */
typedef struct block_slot {
    int tool;      /* the tool index of this content block, or -1 when it is not a tool_use */
    int has_args;  /* a non-empty input_json_delta arrived for it */
} block_slot;

typedef struct stream_state {
    in_usage in;           /* input usage from message_start */
    int n_tools;           /* tool_use blocks seen so far */
    block_slot *blocks;    /* indexed by Anthropic's content block index */
    size_t cap;
} stream_state;

static stream_state *state_get(const compass_host *h, compass_req *req, compass_err *err,
                               int *rc)
{
    void **slot;
    stream_state *st;

    *rc = COMPASS_OK;
    if (!COMPASS_HOST_HAS(h, req_data)) {
        *rc = fail(err, COMPASS_EPLUGIN,
                   "anthropic: the host has no req_data service for stream state");
        return NULL;
    }
    slot = h->req_data(req);
    if (!slot) {
        *rc = fail(err, COMPASS_EINVAL, "anthropic: req_data returned no slot");
        return NULL;
    }
    if (*slot)
        return *slot;
    st = h->req_alloc(req, sizeof(*st));
    if (!st) {
        *rc = oom(err, "allocating stream state");
        return NULL;
    }
    memset(st, 0, sizeof(*st));
    *slot = st;
    return st;
}

/* The slot for block idx, growing the table in the arena. */
static block_slot *state_block(const compass_host *h, compass_req *req, stream_state *st,
                               size_t idx)
{
    if (idx >= st->cap) {
        size_t cap = st->cap ? st->cap : 8, i;
        block_slot *nb;
        while (cap <= idx)
            cap *= 2;
        nb = h->req_alloc(req, cap * sizeof(*nb));
        if (!nb)
            return NULL;
        if (st->cap)
            memcpy(nb, st->blocks, st->cap * sizeof(*nb));
        for (i = st->cap; i < cap; i++) {
            nb[i].tool = -1;
            nb[i].has_args = 0;
        }
        st->blocks = nb; /* the old table stays in the arena until the request ends */
        st->cap = cap;
    }
    return &st->blocks[idx];
}

static int emit(const compass_host *h, compass_req *req, const compass_chat_delta *d,
                compass_err *err)
{
    int rc = h->stream_emit(req, d);
    if (rc < 0)
        return fail(err, rc, "anthropic: stream_emit failed (%d)", rc);
    return COMPASS_OK;
}

/* ---- what each event does, whichever reader read it: they hand over plain values, read
 * as json-c's getters read them (strings as jgetstr(), types and stop_reason as the C
 * strings jgets() gives, ptr NULL when absent) */

static int on_message_start(const compass_host *h, compass_req *req, const usage_in *u,
                            compass_str id, compass_str model, compass_err *err)
{
    compass_chat_delta d;
    stream_state *st;
    int rc;

    st = state_get(h, req, err, &rc);
    if (!st)
        return rc;
    if (u->has_input)
        st->in.input = u->in.input;
    if (u->has_cache_read)
        st->in.cache_read = u->in.cache_read;
    if (u->has_cache_creation)
        st->in.cache_creation = u->in.cache_creation;
    compass_delta_init(&d);
    d.role = COMPASS_ROLE_ASSISTANT;
    d.id = id;
    d.model = model;
    return emit(h, req, &d, err);
}

static int on_block_start(const compass_host *h, compass_req *req, size_t idx, compass_str bt,
                          compass_str text, compass_str id, compass_str name, compass_err *err)
{
    compass_chat_delta d;
    stream_state *st;
    block_slot *bs;
    int rc;

    compass_delta_init(&d);
    if (compass_str_eq(bt, "text")) {
        d.content = text;
        return d.content.len ? emit(h, req, &d, err) : COMPASS_OK;
    }
    if (!compass_str_eq(bt, "tool_use"))
        return COMPASS_OK; /* thinking, server tools: no canonical form */
    st = state_get(h, req, err, &rc);
    if (!st)
        return rc;
    bs = state_block(h, req, st, idx);
    if (!bs)
        return oom(err, "tracking stream blocks");
    bs->tool = st->n_tools++;
    bs->has_args = 0;
    d.tool_index = bs->tool;
    d.tool_id = id;
    d.tool_name = name;
    return emit(h, req, &d, err);
}

static int on_block_delta(const compass_host *h, compass_req *req, size_t idx, compass_str dt,
                          compass_str text, compass_str partial_json, compass_err *err)
{
    compass_chat_delta d;
    stream_state *st;
    int rc;

    compass_delta_init(&d);
    if (compass_str_eq(dt, "text_delta")) {
        d.content = text;
        return d.content.len ? emit(h, req, &d, err) : COMPASS_OK;
    }
    if (compass_str_eq(dt, "input_json_delta")) {
        st = state_get(h, req, err, &rc);
        if (!st)
            return rc;
        if (idx >= st->cap || st->blocks[idx].tool < 0)
            return COMPASS_OK; /* a server tool's input: not the client's tool call */
        d.tool_index = st->blocks[idx].tool;
        d.tool_arguments = partial_json;
        if (d.tool_arguments.len == 0)
            return COMPASS_OK;
        st->blocks[idx].has_args = 1;
        return emit(h, req, &d, err);
    }
    return COMPASS_OK; /* thinking_delta, signature_delta, citations_delta */
}

static int on_block_stop(const compass_host *h, compass_req *req, size_t idx, compass_err *err)
{
    compass_chat_delta d;
    stream_state *st;
    int rc;

    st = state_get(h, req, err, &rc);
    if (!st)
        return rc;
    if (idx >= st->cap || st->blocks[idx].tool < 0 || st->blocks[idx].has_args)
        return COMPASS_OK;
    /* A tool called with no input streams no JSON: say "{}" so clients can parse it. */
    compass_delta_init(&d);
    d.tool_index = st->blocks[idx].tool;
    d.tool_arguments = compass_str_c("{}");
    st->blocks[idx].has_args = 1;
    return emit(h, req, &d, err);
}

static int on_message_delta(const compass_host *h, compass_req *req, compass_str stop_reason,
                            const usage_in *u, compass_err *err)
{
    compass_chat_delta d;
    stream_state *st;
    int rc;

    st = state_get(h, req, err, &rc);
    if (!st)
        return rc;
    compass_delta_init(&d);
    d.finish_reason = map_stop_reason(h, stop_reason);
    if (d.finish_reason) {
        rc = emit(h, req, &d, err);
        if (rc)
            return rc;
    }
    if (u->present) {
        /* Counts here are cumulative; newer API versions repeat the input counts too. */
        if (u->has_input)
            st->in.input = u->in.input;
        if (u->has_cache_read)
            st->in.cache_read = u->in.cache_read;
        if (u->has_cache_creation)
            st->in.cache_creation = u->in.cache_creation;
        compass_delta_init(&d);
        fill_usage(&d.usage, &st->in, u->output);
        return emit(h, req, &d, err);
    }
    return COMPASS_OK;
}

static void on_unknown(const compass_host *h, compass_str type)
{
    /* Anthropic may add event types: skip what we do not know. */
    if (h->log)
        h->log(h, COMPASS_LOG_DEBUG, "ignoring unknown stream event type \"%.*s\"",
               (int)type.len, type.ptr);
}

/* The event types, told apart by length and bytes. */
enum {
    ET_MESSAGE_START,
    ET_BLOCK_START,
    ET_BLOCK_DELTA,
    ET_BLOCK_STOP,
    ET_MESSAGE_DELTA,
    ET_MESSAGE_STOP,
    ET_PING,
    ET_ERROR,
    ET_N
};
static const js_key event_types[ET_N] = {
    JS_KEY("message_start"), JS_KEY("content_block_start"), JS_KEY("content_block_delta"),
    JS_KEY("content_block_stop"), JS_KEY("message_delta"), JS_KEY("message_stop"),
    JS_KEY("ping"), JS_KEY("error")};

static size_t event_type(compass_str t)
{
    size_t i;
    for (i = 0; i < ET_N; i++)
        if (event_types[i].len == t.len && js_bytes_eq(t.ptr, event_types[i].name, t.len))
            return i;
    return ET_N;
}

/* The type of an event whose data names none: its SSE event name (the data's type and the
 * event name always match), as a C string of at most 63 bytes in name. */
static compass_str event_name(const compass_stream_event *ev, char *name, size_t cap)
{
    compass_copy_fixed(name, cap, ev->event);
    return compass_str_c(name);
}

/* An event whose data is blank: 1 with *rc its answer, else 0. */
static int blank_event(const compass_stream_event *ev, compass_err *err, int *rc)
{
    if (!str_is_blank(ev->data))
        return 0;
    if (compass_str_eq(ev->event, "ping"))
        *rc = COMPASS_OK;
    else if (compass_str_eq(ev->event, "message_stop"))
        *rc = COMPASS_STREAM_END;
    else
        *rc = fail(err, COMPASS_EPARSE, "anthropic: stream event \"%.*s\" has no data",
                   STR_ARG(ev->event));
    return 1;
}

/* ---- the tree reader: json-c parses the whole event, and words every error */

static int block_index(json_object *ev, size_t *idx)
{
    int found;
    int64_t v = jgeti(ev, "index", &found);
    if (!found || v < 0 || v > ANTHROPIC_MAX_BLOCKS)
        return -1;
    *idx = (size_t)v;
    return 0;
}

static int tree_message_start(const compass_host *h, compass_req *req, json_object *ev,
                              compass_err *err)
{
    json_object *msg = jget(ev, "message");
    usage_in u;
    if (!msg || !json_object_is_type(msg, json_type_object))
        return fail(err, COMPASS_EPARSE, "anthropic: message_start without a message object");
    usage_from_tree(jget(msg, "usage"), &u);
    return on_message_start(h, req, &u, jgetstr(msg, "id"), jgetstr(msg, "model"), err);
}

static int tree_block_start(const compass_host *h, compass_req *req, json_object *ev,
                            compass_err *err)
{
    json_object *cb = jget(ev, "content_block");
    size_t idx;
    if (!cb || block_index(ev, &idx) != 0)
        return fail(err, COMPASS_EPARSE,
                    "anthropic: content_block_start without index or content_block");
    return on_block_start(h, req, idx, compass_str_c(jgets(cb, "type")), jgetstr(cb, "text"),
                          jgetstr(cb, "id"), jgetstr(cb, "name"), err);
}

static int tree_block_delta(const compass_host *h, compass_req *req, json_object *ev,
                            compass_err *err)
{
    json_object *delta = jget(ev, "delta");
    size_t idx;
    if (!delta || block_index(ev, &idx) != 0)
        return fail(err, COMPASS_EPARSE, "anthropic: content_block_delta without index or delta");
    return on_block_delta(h, req, idx, compass_str_c(jgets(delta, "type")),
                          jgetstr(delta, "text"), jgetstr(delta, "partial_json"), err);
}

static int tree_block_stop(const compass_host *h, compass_req *req, json_object *ev,
                           compass_err *err)
{
    size_t idx;
    if (block_index(ev, &idx) != 0)
        return fail(err, COMPASS_EPARSE, "anthropic: content_block_stop without index");
    return on_block_stop(h, req, idx, err);
}

static int tree_message_delta(const compass_host *h, compass_req *req, json_object *ev,
                              compass_err *err)
{
    usage_in u;
    usage_from_tree(jget(ev, "usage"), &u);
    return on_message_delta(h, req, compass_str_c(jgets(jget(ev, "delta"), "stop_reason")), &u,
                            err);
}

int an_stream_event_full(const compass_host *h, compass_req *req, const compass_stream_event *ev,
                         compass_upstream_error *uerr, compass_err *err)
{
    json_object *root = NULL;
    const char *type;
    compass_str t;
    char name[64];
    int rc = COMPASS_OK;

    if (blank_event(ev, err, &rc))
        return rc;
    if (json_parse_n(ev->data.ptr, ev->data.len, ANTHROPIC_JSON_DEPTH, &root) != 0 ||
        !json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return fail(err, COMPASS_EPARSE, "anthropic: stream event \"%.*s\": data is not a JSON "
                    "object", STR_ARG(ev->event));
    }
    /* The data's type and the SSE event name always match; prefer the data. */
    type = jgets(root, "type");
    t = type ? compass_str_c(type) : event_name(ev, name, sizeof(name));
    switch (event_type(t)) {
    case ET_MESSAGE_START:
        rc = tree_message_start(h, req, root, err);
        break;
    case ET_BLOCK_START:
        rc = tree_block_start(h, req, root, err);
        break;
    case ET_BLOCK_DELTA:
        rc = tree_block_delta(h, req, root, err);
        break;
    case ET_BLOCK_STOP:
        rc = tree_block_stop(h, req, root, err);
        break;
    case ET_MESSAGE_DELTA:
        rc = tree_message_delta(h, req, root, err);
        break;
    case ET_MESSAGE_STOP:
        rc = COMPASS_STREAM_END;
        break;
    case ET_PING:
        rc = COMPASS_OK;
        break;
    case ET_ERROR: {
        compass_upstream_error tmp;
        compass_upstream_error *u = uerr ? uerr : &tmp;
        if (uerr_from_body(u, 0, root) != 0)
            uerr_fill(u, 0, "api_error", "anthropic: stream error event without detail");
        rc = fail(err, COMPASS_EUPSTREAM, "anthropic: stream error: %s", u->message);
        break;
    }
    default:
        on_unknown(h, t);
        rc = COMPASS_OK;
        break;
    }
    json_object_put(root);
    return rc;
}

/* ---- the scanner reader: walks the event in place, each byte once, keeping the members any
 * event type reads (the type may come last); escaped strings are decoded on the stack */

/* Room for an event's escaped strings, decoded: a text delta is a few tokens, so this holds
 * nearly all of them; a longer one is decoded by json-c. */
#define AN_TEXT_ROOM 1024

/* The top-level members the scanner reader keeps, and those of message, content_block and
 * delta (a message's usage is read like the top-level one). */
enum { EK_TYPE, EK_INDEX, EK_MESSAGE, EK_CONTENT_BLOCK, EK_DELTA, EK_USAGE, EK_N };
static const js_key event_keys[EK_N] = {JS_KEY("type"), JS_KEY("index"), JS_KEY("message"),
                                        JS_KEY("content_block"), JS_KEY("delta"),
                                        JS_KEY("usage")};
enum { MK_ID, MK_MODEL, MK_USAGE, MK_N };
static const js_key message_keys[MK_N] = {JS_KEY("id"), JS_KEY("model"), JS_KEY("usage")};
enum { BK_TYPE, BK_TEXT, BK_ID, BK_NAME, BK_N };
static const js_key block_keys[BK_N] = {JS_KEY("type"), JS_KEY("text"), JS_KEY("id"),
                                        JS_KEY("name")};
enum { DK_TYPE, DK_TEXT, DK_PARTIAL_JSON, DK_STOP_REASON, DK_N };
static const js_key delta_keys[DK_N] = {JS_KEY("type"), JS_KEY("text"), JS_KEY("partial_json"),
                                        JS_KEY("stop_reason")};
#define OBJ_MAX_KEYS 4

/* A member whose object the reader looks into: its type (JS_NONE while absent) and, when an
 * object, the spans of the members its key table names (and a message's usage). */
typedef struct obj_scan {
    js_type type;
    js_val m[OBJ_MAX_KEYS];
    usage_scan usage;
} obj_scan;

typedef struct event_scan {
    js_val type, index;
    obj_scan message, block, delta;
    usage_scan usage;
} event_scan;

/* Reads the value that comes next into o: an object is entered in place, keeping the
 * members keys[0..n) names, where keys[usage_at] (if < n) is read with scan_usage_in; any
 * other value is only typed. -1 on bad JSON, an escaped key, or o or a kept member coming
 * twice (json-c keeps the last). */
static int scan_obj_in(json_scan *s, const js_key *keys, size_t n, size_t usage_at,
                       obj_scan *o)
{
    size_t i;
    int r = scan_type_in(s, &o->type);
    if (r <= 0)
        return r;
    memset(o->m, 0, sizeof(o->m));
    o->usage.type = JS_NONE;
    if (js_begin(s, '{'))
        return -1;
    while ((r = js_member_key(s, keys, n, &i)) > 0) {
        if (i == usage_at ? scan_usage_in(s, &o->usage)
                          : i < n ? js_take(s, &o->m[i]) : js_skip(s))
            return -1;
    }
    return r;
}

/* Reads data into e; -1 when the tree reader must take the event: not strict JSON (or not an
 * object), a duplicate or escaped key among those kept. */
static int scan_event(compass_str data, event_scan *e)
{
    json_scan s;
    size_t ki;
    int r;

    e->type.type = JS_NONE;
    e->index.type = JS_NONE;
    e->message.type = JS_NONE;
    e->block.type = JS_NONE;
    e->delta.type = JS_NONE;
    e->usage.type = JS_NONE;
    if (!data.ptr || data.len > (size_t)INT_MAX - 1) /* as json_parse_n */
        return -1;
    js_init(&s, data.ptr, data.len, ANTHROPIC_JSON_DEPTH);
    if (js_begin(&s, '{'))
        return -1;
    while ((r = js_member_key(&s, event_keys, EK_N, &ki)) > 0) {
        switch (ki) {
        case EK_TYPE:
            r = js_take(&s, &e->type);
            break;
        case EK_INDEX:
            r = js_take(&s, &e->index);
            break;
        case EK_MESSAGE:
            r = scan_obj_in(&s, message_keys, MK_N, MK_USAGE, &e->message);
            break;
        case EK_CONTENT_BLOCK:
            r = scan_obj_in(&s, block_keys, BK_N, BK_N, &e->block);
            break;
        case EK_DELTA:
            r = scan_obj_in(&s, delta_keys, DK_N, DK_N, &e->delta);
            break;
        case EK_USAGE:
            r = scan_usage_in(&s, &e->usage);
            break;
        default:
            r = js_skip(&s);
            break;
        }
        if (r)
            return -1;
    }
    return r < 0 || js_end(&s) ? -1 : 0;
}

/* block_index() for the index the scanner found; -1 (the tree reader words the error)
 * unless it is a number in range. */
static int scan_index(js_keep *keep, const js_val *v, size_t *idx)
{
    int64_t x;
    if (v->type != JS_NUMBER || js_int64(keep, v, &x) || x < 0 || x > ANTHROPIC_MAX_BLOCKS)
        return -1;
    *idx = (size_t)x;
    return 0;
}

/* Each reads what its on_* takes, then acts; AN_DECLINED, having done nothing, for what the
 * tree reader must take (the errors it words, a string json-c must decode but could not
 * keep). */

static int scan_message_start(const compass_host *h, compass_req *req, const event_scan *e,
                              an_text *t, compass_err *err)
{
    const obj_scan *msg = &e->message;
    compass_str id, model;
    usage_in u;
    if (msg->type != JS_OBJECT || text_of(t, &msg->m[MK_ID], &id) ||
        text_of(t, &msg->m[MK_MODEL], &model) || usage_from_scan(t->keep, &msg->usage, &u))
        return AN_DECLINED;
    return on_message_start(h, req, &u, id, model, err);
}

/* What content_block_start and content_block_delta read: the index, then the first n
 * members of obj's key table (a type, a text, more strings), all empty when obj is not an
 * object. */
static int scan_block_event(const event_scan *e, const obj_scan *obj, size_t n, an_text *t,
                            size_t *idx, compass_str out[OBJ_MAX_KEYS])
{
    size_t i;
    memset(out, 0, OBJ_MAX_KEYS * sizeof(out[0]));
    /* absent or null, as jget() reads it: the tree reader's error */
    if (obj->type == JS_NONE || obj->type == JS_NULL || scan_index(t->keep, &e->index, idx))
        return -1;
    if (obj->type != JS_OBJECT)
        return 0;
    for (i = 0; i < n; i++)
        if (i == 0 ? cstr_of(t, &obj->m[0], &out[0]) : text_of(t, &obj->m[i], &out[i]))
            return -1;
    return 0;
}

static int scan_block_start(const compass_host *h, compass_req *req, const event_scan *e,
                            an_text *t, compass_err *err)
{
    compass_str v[OBJ_MAX_KEYS];
    size_t idx;
    if (scan_block_event(e, &e->block, BK_N, t, &idx, v))
        return AN_DECLINED;
    return on_block_start(h, req, idx, v[BK_TYPE], v[BK_TEXT], v[BK_ID], v[BK_NAME], err);
}

static int scan_block_delta(const compass_host *h, compass_req *req, const event_scan *e,
                            an_text *t, compass_err *err)
{
    compass_str v[OBJ_MAX_KEYS];
    size_t idx;
    if (scan_block_event(e, &e->delta, DK_PARTIAL_JSON + 1, t, &idx, v))
        return AN_DECLINED;
    return on_block_delta(h, req, idx, v[DK_TYPE], v[DK_TEXT], v[DK_PARTIAL_JSON], err);
}

static int scan_message_delta(const compass_host *h, compass_req *req, const event_scan *e,
                              an_text *t, compass_err *err)
{
    compass_str stop_reason = {NULL, 0};
    usage_in u;
    if ((e->delta.type == JS_OBJECT && cstr_of(t, &e->delta.m[DK_STOP_REASON], &stop_reason)) ||
        usage_from_scan(t->keep, &e->usage, &u))
        return AN_DECLINED;
    return on_message_delta(h, req, stop_reason, &u, err);
}

int an_stream_event_fast(const compass_host *h, compass_req *req, const compass_stream_event *ev,
                         compass_err *err)
{
    char room[AN_TEXT_ROOM], name[64];
    event_scan e;
    js_keep keep;
    an_text t;
    compass_str type;
    size_t idx;
    int rc;

    if (blank_event(ev, err, &rc))
        return rc;
    if (scan_event(ev->data, &e))
        return AN_DECLINED;
    js_keep_init(&keep, ANTHROPIC_JSON_DEPTH);
    text_init(&t, room, sizeof(room), NULL, &keep);
    if (e.type.type != JS_STRING) {
        type = event_name(ev, name, sizeof(name));
    } else if (cstr_of(&t, &e.type, &type)) {
        js_keep_release(&keep);
        return AN_DECLINED;
    }
    switch (event_type(type)) {
    case ET_MESSAGE_START:
        rc = scan_message_start(h, req, &e, &t, err);
        break;
    case ET_BLOCK_START:
        rc = scan_block_start(h, req, &e, &t, err);
        break;
    case ET_BLOCK_DELTA:
        rc = scan_block_delta(h, req, &e, &t, err);
        break;
    case ET_BLOCK_STOP:
        rc = scan_index(&keep, &e.index, &idx) ? AN_DECLINED : on_block_stop(h, req, idx, err);
        break;
    case ET_MESSAGE_DELTA:
        rc = scan_message_delta(h, req, &e, &t, err);
        break;
    case ET_MESSAGE_STOP:
        rc = COMPASS_STREAM_END;
        break;
    case ET_PING:
        rc = COMPASS_OK;
        break;
    case ET_ERROR:
        rc = AN_DECLINED; /* the tree reader classifies and words it */
        break;
    default:
        on_unknown(h, type);
        rc = COMPASS_OK;
        break;
    }
    js_keep_release(&keep);
    return rc;
}

static int parse_stream_event(void *inst, compass_req *req, const compass_stream_event *ev,
                              compass_upstream_error *uerr, compass_err *err)
{
    anthropic *a = inst;
    int rc;
    if (!a || !req || !ev)
        return fail(err, COMPASS_EINVAL, "anthropic: parse_stream_event: NULL argument");
    rc = an_stream_event_fast(a->h, req, ev, err);
    return rc == AN_DECLINED ? an_stream_event_full(a->h, req, ev, uerr, err) : rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Descriptor                                                                               */
/* ---------------------------------------------------------------------------------------- */

static const compass_provider_ops anthropic_ops = {
    .size = sizeof(compass_provider_ops),
    .instance_new = instance_new,
    .instance_free = instance_free,
    .build_request = build_request,
    .parse_response = parse_response,
    .parse_stream_event = parse_stream_event,
    .classify_error = classify_error,
    .local_call = NULL,
};

static const compass_plugin_desc anthropic_desc = {
    COMPASS_PLUGIN_DESC_INIT,
    .kind = COMPASS_PLUGIN_PROVIDER,
    .name = "anthropic",
    .version = "1.0.0",
    .summary = "Anthropic Messages API (/v1/messages), streaming and tools",
    .options = anthropic_option_table,
    .options_size = sizeof(anthropic_options),
    .init = NULL,
    .fini = NULL,
    .ops = {.provider = &anthropic_ops},
};

COMPASS_PLUGIN_DEFINE(anthropic, anthropic_desc)
