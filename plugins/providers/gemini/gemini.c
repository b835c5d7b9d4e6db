/*
 * gemini: provider plugin for the Google Gemini API (generateContent,
 * streamGenerateContent?alt=sse and batchEmbedContents). Pure translation between the
 * canonical (OpenAI chat and embeddings) model and Gemini's wire format; the host owns all I/O.
 *
 * Wire reference: ai.google.dev/api (GenerateContentRequest, GenerateContentResponse,
 * Candidate.FinishReason, UsageMetadata, BatchEmbedContentsRequest/Response, google.rpc error
 * model).
 */
#include <compass/plugin.h>

#include <json-c/json.h>

#include "../common/json_scan.h"
#include "gemini.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GM_DEFAULT_BASE "https://generativelanguage.googleapis.com"
#define GM_SIG_SENTINEL "skip_thought_signature_validator"
#define GM_MAX_SCHEMA_DEPTH 64

/* ---------------------------------------------------------------------------------------- */
/* Options and instance                                                                      */
/* ---------------------------------------------------------------------------------------- */

typedef struct gm_options {
    const char *api_version;
    const char *thought_signatures;
} gm_options;

enum { GM_SIG_AUTO = 0, GM_SIG_ALWAYS = 1, GM_SIG_NEVER = 2 };

typedef struct gm_inst {
    const compass_host *h;
    char *base; /* without trailing '/' */
    char *api_version;
    char *api_key; /* NULL when none; never logged */
    int sig_mode;
} gm_inst;

/* Per-request stream state, kept in the request arena through h->req_data. */
typedef struct gm_stream {
    int role_sent;
    int n_tools;
    int finished;
} gm_stream;

static const compass_option gm_option_table[] = {
    {"api_version", COMPASS_OPT_STRING, "v1beta", 0, offsetof(gm_options, api_version),
     "API version path segment (v1beta or v1)"},
    {"thought_signatures", COMPASS_OPT_STRING, "auto", 0, offsetof(gm_options, thought_signatures),
     "auto|always|never: send Google's skip_thought_signature_validator sentinel on replayed "
     "functionCall parts (auto: for gemini-3 models)"},
    {NULL, 0, NULL, 0, 0, NULL}};

static int fail(compass_err *err, int code, const char *fmt, ...) COMPASS_PRINTF(3, 4);

static int fail(compass_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

static int oom(compass_err *err)
{
    return compass_err_set(err, COMPASS_ENOMEM, "gemini: out of memory");
}

static char *inst_strdup(const compass_host *h, const char *s, size_t n)
{
    char *p = h->alloc(h, n + 1);
    if (!p)
        return NULL;
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void gm_instance_free(void *vinst)
{
    gm_inst *in = vinst;
    const compass_host *h;
    if (!in)
        return;
    h = in->h;
    h->free(h, in->base);
    h->free(h, in->api_version);
    if (in->api_key) {
        volatile char *k = in->api_key;
        while (*k)
            *k++ = '\0';
        h->free(h, in->api_key);
    }
    h->free(h, in);
}

static int gm_instance_new(const compass_host *h, const compass_instance_info *info, void **out,
                           compass_err *err)
{
    const gm_options *o = info ? info->options : NULL;
    const char *ver = o && o->api_version && *o->api_version ? o->api_version : "v1beta";
    const char *sig =
        o && o->thought_signatures && *o->thought_signatures ? o->thought_signatures : "auto";
    const char *base = info && info->base_url && *info->base_url ? info->base_url : GM_DEFAULT_BASE;
    size_t blen = strlen(base), i;
    gm_inst *in;

    if (!h || !out)
        return compass_err_set(err, COMPASS_EINVAL, "gemini: instance_new: NULL argument");
    for (i = 0; ver[i]; i++) {
        char c = ver[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return fail(err, COMPASS_ECONFIG,
                        "gemini: option api_version: \"%s\" is not a version like v1beta", ver);
    }
    if (i == 0 || i > 32)
        return fail(err, COMPASS_ECONFIG, "gemini: option api_version: bad length");
    in = h->alloc(h, sizeof(*in));
    if (!in)
        return oom(err);
    memset(in, 0, sizeof(*in));
    in->h = h;
    if (strcmp(sig, "auto") == 0)
        in->sig_mode = GM_SIG_AUTO;
    else if (strcmp(sig, "always") == 0)
        in->sig_mode = GM_SIG_ALWAYS;
    else if (strcmp(sig, "never") == 0)
        in->sig_mode = GM_SIG_NEVER;
    else {
        h->free(h, in);
        return fail(err, COMPASS_ECONFIG,
                    "gemini: option thought_signatures: \"%s\" is not auto, always or never", sig);
    }
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    in->base = inst_strdup(h, base, blen);
    in->api_version = inst_strdup(h, ver, strlen(ver));
    if (info && info->api_key && *info->api_key)
        in->api_key = inst_strdup(h, info->api_key, strlen(info->api_key));
    if (!in->base || !in->api_version ||
        (info && info->api_key && *info->api_key && !in->api_key)) {
        gm_instance_free(in);
        return oom(err);
    }
    *out = in;
    return COMPASS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* JSON helpers                                                                              */
/* ---------------------------------------------------------------------------------------- */

/* Adds v under k, taking ownership of v even on failure. */
static int jadd(json_object *o, const char *k, json_object *v)
{
    if (!v)
        return COMPASS_ENOMEM;
    if (json_object_object_add(o, k, v) != 0) {
        json_object_put(v);
        return COMPASS_ENOMEM;
    }
    return COMPASS_OK;
}

static int jpush(json_object *a, json_object *v)
{
    if (!v)
        return COMPASS_ENOMEM;
    if (json_object_array_add(a, v) != 0) {
        json_object_put(v);
        return COMPASS_ENOMEM;
    }
    return COMPASS_OK;
}

static json_object *jstr(compass_str s)
{
    if (s.len > (size_t)INT_MAX)
        return NULL;
    return json_object_new_string_len(s.len ? s.ptr : "", (int)s.len);
}

static json_object *jdouble(double d)
{
    char buf[40];
    snprintf(buf, sizeof(buf), "%.15g", d);
    return json_object_new_double_s(d, buf);
}

/* Parses exactly the bytes of s as one JSON value. *out may be NULL for JSON null.
 * Returns COMPASS_OK, COMPASS_EPARSE or COMPASS_ENOMEM. */
static int jparse(compass_str s, json_object **out)
{
    json_tokener *tok;
    json_object *o;
    enum json_tokener_error e;
    size_t end, i;

    *out = NULL;
    if (s.len == 0 || s.len > (size_t)INT_MAX - 1)
        return COMPASS_EPARSE;
    tok = json_tokener_new();
    if (!tok)
        return COMPASS_ENOMEM;
    o = js_tokener_parse(tok, s.ptr, s.len, &end);
    e = json_tokener_get_error(tok);
    if (e == json_tokener_continue) {
        /* a bare number (or trailing whitespace) needs a terminator */
        o = json_tokener_parse_ex(tok, " ", 1);
        e = json_tokener_get_error(tok);
        end = s.len;
    }
    if (e != json_tokener_success) {
        json_tokener_free(tok);
        if (o)
            json_object_put(o);
        return COMPASS_EPARSE;
    }
    json_tokener_free(tok);
    for (i = end; i < s.len; i++) {
        char c = s.ptr[i];
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
            json_object_put(o);
            return COMPASS_EPARSE;
        }
    }
    *out = o;
    return COMPASS_OK;
}

static json_object *jget(json_object *o, const char *k)
{
    json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object))
        return NULL;
    if (!json_object_object_get_ex(o, k, &v))
        return NULL;
    return v;
}

static compass_str jstrval(json_object *o)
{
    compass_str r = {NULL, 0};
    if (o && json_object_is_type(o, json_type_string)) {
        r.ptr = json_object_get_string(o);
        r.len = (size_t)json_object_get_string_len(o);
    }
    return r;
}

static int64_t jint(json_object *o)
{
    if (!o)
        return 0;
    if (json_object_is_type(o, json_type_int) || json_object_is_type(o, json_type_double))
        return json_object_get_int64(o);
    if (json_object_is_type(o, json_type_string)) {
        /* proto int64 fields may arrive as strings */
        const char *s = json_object_get_string(o);
        char *endp = NULL;
        long long v = strtoll(s, &endp, 10);
        return endp && endp != s ? (int64_t)v : 0;
    }
    return 0;
}

static int str_is(compass_str s, const char *lit)
{
    return compass_str_eq(s, lit);
}

static int str_starts(compass_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len >= n && memcmp(s.ptr, lit, n) == 0;
}

static int req_dup(const compass_host *h, compass_req *req, compass_str s, compass_str *out)
{
    compass_str r = h->req_strdup(req, s.len ? s.ptr : "", s.len);
    if (!r.ptr)
        return COMPASS_ENOMEM;
    *out = r;
    return COMPASS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* JSON Schema cleaning (Gemini takes an OpenAPI 3.0 subset)                                  */
/* ---------------------------------------------------------------------------------------- */

static const char *const gm_drop_keys[] = {"$schema",
                                           "$id",
                                           "$comment",
                                           "$anchor",
                                           "$defs",
                                           "definitions",
                                           "additionalProperties",
                                           "unevaluatedProperties",
                                           "patternProperties",
                                           "strict",
                                           "examples",
                                           "readOnly",
                                           "writeOnly",
                                           "deprecated",
                                           "contentEncoding",
                                           "contentMediaType",
                                           NULL};

static int schema_clean(json_object *s, int depth, const char **why);

static int schema_clean_array(json_object *a, int depth, const char **why)
{
    size_t i, n = json_object_array_length(a);
    for (i = 0; i < n; i++) {
        int rc = schema_clean(json_object_array_get_idx(a, i), depth + 1, why);
        if (rc)
            return rc;
    }
    return COMPASS_OK;
}

/* Folds "type": ["string", "null"] into "type": "string", "nullable": true. */
static int schema_fold_type(json_object *s)
{
    json_object *t = jget(s, "type"), *one = NULL;
    size_t i, n, n_real = 0;
    int has_null = 0;
    compass_str name;

    if (!t || !json_object_is_type(t, json_type_array))
        return COMPASS_OK;
    n = json_object_array_length(t);
    for (i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(t, i);
        if (str_is(jstrval(e), "null"))
            has_null = 1;
        else {
            n_real++;
            one = e;
        }
    }
    if (n_real != 1 || !json_object_is_type(one, json_type_string))
        return COMPASS_OK;
    name = jstrval(one);
    /* jstr copies before "type" (and with it `one`) is replaced */
    if (jadd(s, "type", jstr(name)))
        return COMPASS_ENOMEM;
    if (has_null && jadd(s, "nullable", json_object_new_boolean(1)))
        return COMPASS_ENOMEM;
    return COMPASS_OK;
}

static int schema_clean(json_object *s, int depth, const char **why)
{
    json_object *v;
    size_t i;
    int rc;
    static const char *const sub_arrays[] = {"anyOf", "oneOf", "allOf", "prefixItems", NULL};

    if (depth > GM_MAX_SCHEMA_DEPTH) {
        *why = "nested too deeply";
        return COMPASS_EUNSUPPORTED;
    }
    if (!s || !json_object_is_type(s, json_type_object))
        return COMPASS_OK;
    if (jget(s, "$ref")) {
        *why = "$ref is not supported by Gemini schemas; inline the definition";
        return COMPASS_EUNSUPPORTED;
    }
    for (i = 0; gm_drop_keys[i]; i++)
        json_object_object_del(s, gm_drop_keys[i]);
    if ((rc = schema_fold_type(s)) != 0)
        return rc;
    v = jget(s, "properties");
    if (v && json_object_is_type(v, json_type_object)) {
        json_object_object_foreach (v, pkey, pval) {
            (void)pkey;
            if ((rc = schema_clean(pval, depth + 1, why)) != 0)
                return rc;
        }
    }
    v = jget(s, "items");
    if (v && json_object_is_type(v, json_type_object)) {
        if ((rc = schema_clean(v, depth + 1, why)) != 0)
            return rc;
    } else if (v && json_object_is_type(v, json_type_array)) {
        if ((rc = schema_clean_array(v, depth, why)) != 0)
            return rc;
    }
    for (i = 0; sub_arrays[i]; i++) {
        v = jget(s, sub_arrays[i]);
        if (v && json_object_is_type(v, json_type_array)) {
            if ((rc = schema_clean_array(v, depth, why)) != 0)
                return rc;
        }
    }
    v = jget(s, "not");
    if (v && (rc = schema_clean(v, depth + 1, why)) != 0)
        return rc;
    return COMPASS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* build_request                                                                             */
/* ---------------------------------------------------------------------------------------- */

typedef struct gm_build {
    json_object *contents;  /* array of Content */
    json_object *sys_parts; /* array of Part, or NULL */
    json_object *cur_parts; /* parts of the last Content */
    int cur_role;           /* 1 user, 2 model, 0 none */
} gm_build;

/* Returns the parts array to append to for role (1 user, 2 model), merging runs. */
static int turn_parts(gm_build *b, int role, json_object **parts)
{
    json_object *content, *arr;
    if (b->cur_role == role && b->cur_parts) {
        *parts = b->cur_parts;
        return COMPASS_OK;
    }
    content = json_object_new_object();
    if (!content)
        return COMPASS_ENOMEM;
    if (jpush(b->contents, content))
        return COMPASS_ENOMEM;
    if (jadd(content, "role", json_object_new_string(role == 2 ? "model" : "user")))
        return COMPASS_ENOMEM;
    arr = json_object_new_array();
    if (jadd(content, "parts", arr))
        return COMPASS_ENOMEM;
    b->cur_parts = arr;
    b->cur_role = role;
    *parts = arr;
    return COMPASS_OK;
}

static int push_text_part(json_object *parts, compass_str text)
{
    json_object *p = json_object_new_object();
    if (jpush(parts, p))
        return COMPASS_ENOMEM;
    return jadd(p, "text", jstr(text));
}

static const char *guess_mime(compass_str url)
{
    static const struct {
        const char *ext;
        const char *mime;
    } map[] = {{".png", "image/png"},   {".jpg", "image/jpeg"},      {".jpeg", "image/jpeg"},
               {".webp", "image/webp"}, {".gif", "image/gif"},       {".heic", "image/heic"},
               {".heif", "image/heif"}, {".pdf", "application/pdf"}, {NULL, NULL}};
    size_t end = url.len, i, k;
    for (i = 0; i < url.len; i++) {
        if (url.ptr[i] == '?' || url.ptr[i] == '#') {
            end = i;
            break;
        }
    }
    for (i = 0; map[i].ext; i++) {
        size_t n = strlen(map[i].ext);
        if (end < n)
            continue;
        for (k = 0; k < n; k++) {
            char c = url.ptr[end - n + k];
            if (c >= 'A' && c <= 'Z')
                c = (char)(c - 'A' + 'a');
            if (c != map[i].ext[k])
                break;
        }
        if (k == n)
            return map[i].mime;
    }
    return "image/jpeg";
}

static int push_image_part(json_object *parts, compass_str url, size_t mi, compass_err *err)
{
    json_object *p, *d;
    if (str_starts(url, "data:")) {
        /* data:<mime>;base64,<data> */
        const char *comma = memchr(url.ptr, ',', url.len);
        compass_str meta, mime, data;
        size_t semi;
        if (!comma)
            return fail(err, COMPASS_EUNSUPPORTED,
                        "gemini: messages[%zu]: image_url data: URL has no ','", mi);
        meta.ptr = url.ptr + 5;
        meta.len = (size_t)(comma - meta.ptr);
        data.ptr = comma + 1;
        data.len = url.len - (size_t)(data.ptr - url.ptr);
        if (meta.len < 7 || memcmp(meta.ptr + meta.len - 7, ";base64", 7) != 0)
            return fail(err, COMPASS_EUNSUPPORTED,
                        "gemini: messages[%zu]: image_url data: URL must be base64", mi);
        for (semi = 0; semi < meta.len && meta.ptr[semi] != ';'; semi++)
            ;
        mime.ptr = meta.ptr;
        mime.len = semi;
        if (mime.len == 0)
            return fail(err, COMPASS_EUNSUPPORTED,
                        "gemini: messages[%zu]: image_url data: URL has no media type", mi);
        p = json_object_new_object();
        if (jpush(parts, p))
            return oom(err);
        d = json_object_new_object();
        if (jadd(p, "inlineData", d) || jadd(d, "mimeType", jstr(mime)) ||
            jadd(d, "data", jstr(data)))
            return oom(err);
        return COMPASS_OK;
    }
    if (str_starts(url, "https://") || str_starts(url, "http://") || str_starts(url, "gs://")) {
        p = json_object_new_object();
        if (jpush(parts, p))
            return oom(err);
        d = json_object_new_object();
        if (jadd(p, "fileData", d) ||
            jadd(d, "mimeType", json_object_new_string(guess_mime(url))) ||
            jadd(d, "fileUri", jstr(url)))
            return oom(err);
        return COMPASS_OK;
    }
    return fail(err, COMPASS_EUNSUPPORTED,
                "gemini: messages[%zu]: image_url must be an https URL or a base64 data: URL", mi);
}

static int want_signature(const gm_inst *in, compass_str model)
{
    size_t i;
    if (in->sig_mode == GM_SIG_ALWAYS)
        return 1;
    if (in->sig_mode == GM_SIG_NEVER)
        return 0;
    for (i = 0; i + 8 <= model.len; i++)
        if (memcmp(model.ptr + i, "gemini-3", 8) == 0)
            return 1;
    return 0;
}

static int add_user_message(gm_build *b, const compass_message *m, size_t mi, compass_err *err)
{
    json_object *parts;
    size_t i;
    int rc;

    if (m->parts && m->n_parts) {
        if (turn_parts(b, 1, &parts))
            return oom(err);
        for (i = 0; i < m->n_parts; i++) {
            const compass_content_part *p = &m->parts[i];
            if (p->type == COMPASS_PART_TEXT) {
                if (p->text.len && push_text_part(parts, p->text))
                    return oom(err);
            } else if (p->type == COMPASS_PART_IMAGE_URL) {
                if ((rc = push_image_part(parts, p->url, mi, err)) != 0)
                    return rc;
            } else {
                return fail(err, COMPASS_EUNSUPPORTED,
                            "gemini: messages[%zu].content[%zu]: unsupported part type", mi, i);
            }
        }
        return COMPASS_OK;
    }
    if (!m->has_content || m->content.len == 0)
        return COMPASS_OK;
    if (turn_parts(b, 1, &parts) || push_text_part(parts, m->content))
        return oom(err);
    return COMPASS_OK;
}

static int add_assistant_message(const gm_inst *in, gm_build *b, const compass_message *m,
                                 size_t mi, int sig, compass_err *err)
{
    json_object *parts;
    size_t i;
    int rc;

    if ((!m->has_content || m->content.len == 0) && m->n_tool_calls == 0)
        return COMPASS_OK;
    if (turn_parts(b, 2, &parts))
        return oom(err);
    if (m->has_content && m->content.len && push_text_part(parts, m->content))
        return oom(err);
    for (i = 0; i < m->n_tool_calls; i++) {
        const compass_tool_call *tc = &m->tool_calls[i];
        json_object *args = NULL, *p, *fc;
        if (tc->arguments.len == 0) {
            args = json_object_new_object();
            if (!args)
                return oom(err);
        } else {
            rc = jparse(tc->arguments, &args);
            if (rc == COMPASS_ENOMEM)
                return oom(err);
            if (rc || !args || !json_object_is_type(args, json_type_object)) {
                if (args)
                    json_object_put(args);
                return fail(err, COMPASS_EUNSUPPORTED,
                            "gemini: messages[%zu].tool_calls[%zu].function.arguments: not a "
                            "JSON object",
                            mi, i);
            }
        }
        p = json_object_new_object();
        if (!p) {
            json_object_put(args);
            return oom(err);
        }
        if (jpush(parts, p)) {
            json_object_put(args);
            return oom(err);
        }
        fc = json_object_new_object();
        if (jadd(p, "functionCall", fc)) {
            json_object_put(args);
            return oom(err);
        }
        if (jadd(fc, "name", jstr(tc->name))) {
            json_object_put(args);
            return oom(err);
        }
        if (jadd(fc, "args", args))
            return oom(err);
        if (sig && jadd(p, "thoughtSignature", json_object_new_string(GM_SIG_SENTINEL)))
            return oom(err);
    }
    (void)in;
    return COMPASS_OK;
}

/* The function name a tool message answers: the nearest earlier assistant tool call with
 * the same id. */
static compass_str tool_name_for(const compass_chat_request *r, size_t mi)
{
    compass_str none = {NULL, 0};
    const compass_message *tm = &r->messages[mi];
    size_t j = mi, k;
    while (j-- > 0) {
        const compass_message *m = &r->messages[j];
        if (m->role != COMPASS_ROLE_ASSISTANT)
            continue;
        for (k = 0; k < m->n_tool_calls; k++) {
            const compass_tool_call *tc = &m->tool_calls[k];
            if (tc->id.len == tm->tool_call_id.len &&
                (tc->id.len == 0 || memcmp(tc->id.ptr, tm->tool_call_id.ptr, tc->id.len) == 0))
                return tc->name;
        }
    }
    return none;
}

static int add_tool_message(gm_build *b, const compass_chat_request *r, size_t mi, compass_err *err)
{
    const compass_message *m = &r->messages[mi];
    compass_str name = tool_name_for(r, mi);
    json_object *parts, *p, *fr, *resp = NULL;
    int rc;

    if (name.len == 0)
        name = m->name;
    if (name.len == 0)
        return fail(err, COMPASS_EUNSUPPORTED,
                    "gemini: messages[%zu].tool_call_id: no earlier assistant tool call with "
                    "this id (Gemini needs the function name)",
                    mi);
    if (m->has_content && m->content.len) {
        rc = jparse(m->content, &resp);
        if (rc == COMPASS_ENOMEM)
            return oom(err);
        if (rc == 0 && resp && !json_object_is_type(resp, json_type_object)) {
            json_object_put(resp);
            resp = NULL;
        }
    }
    if (!resp) {
        resp = json_object_new_object();
        if (!resp)
            return oom(err);
        if (jadd(resp, "content", jstr(m->content))) {
            json_object_put(resp);
            return oom(err);
        }
    }
    if (turn_parts(b, 1, &parts)) {
        json_object_put(resp);
        return oom(err);
    }
    p = json_object_new_object();
    if (!p) {
        json_object_put(resp);
        return oom(err);
    }
    if (jpush(parts, p)) {
        json_object_put(resp);
        return oom(err);
    }
    fr = json_object_new_object();
    if (jadd(p, "functionResponse", fr)) {
        json_object_put(resp);
        return oom(err);
    }
    if (jadd(fr, "name", jstr(name))) {
        json_object_put(resp);
        return oom(err);
    }
    if (jadd(fr, "response", resp))
        return oom(err);
    return COMPASS_OK;
}

static int add_tools(json_object *root, const compass_chat_request *r, compass_err *err)
{
    json_object *tools, *tool, *decls, *cfg, *fcc;
    size_t i;
    int rc;

    if (r->n_tools) {
        tools = json_object_new_array();
        if (jadd(root, "tools", tools))
            return oom(err);
        tool = json_object_new_object();
        if (jpush(tools, tool))
            return oom(err);
        decls = json_object_new_array();
        if (jadd(tool, "functionDeclarations", decls))
            return oom(err);
        for (i = 0; i < r->n_tools; i++) {
            const compass_tool *t = &r->tools[i];
            json_object *d = json_object_new_object(), *params = NULL;
            const char *why = "";
            if (jpush(decls, d))
                return oom(err);
            if (jadd(d, "name", jstr(t->name)))
                return oom(err);
            if (t->description.len && jadd(d, "description", jstr(t->description)))
                return oom(err);
            if (t->parameters.len == 0)
                continue;
            rc = jparse(t->parameters, &params);
            if (rc == COMPASS_ENOMEM)
                return oom(err);
            if (rc || !params || !json_object_is_type(params, json_type_object)) {
                if (params)
                    json_object_put(params);
                return fail(err, COMPASS_EUNSUPPORTED,
                            "gemini: tools[%zu].function.parameters: not a JSON object", i);
            }
            if (jadd(d, "parameters", params))
                return oom(err);
            rc = schema_clean(params, 0, &why);
            if (rc == COMPASS_ENOMEM)
                return oom(err);
            if (rc)
                return fail(err, rc, "gemini: tools[%zu].function.parameters: %s", i, why);
            /* an empty object schema is rejected by Gemini; drop it */
            if (json_object_object_length(params) == 0)
                json_object_object_del(d, "parameters");
        }
    }
    if (r->tool_choice == COMPASS_TOOL_CHOICE_UNSET)
        return COMPASS_OK;
    cfg = json_object_new_object();
    if (jadd(root, "toolConfig", cfg))
        return oom(err);
    fcc = json_object_new_object();
    if (jadd(cfg, "functionCallingConfig", fcc))
        return oom(err);
    switch (r->tool_choice) {
    case COMPASS_TOOL_CHOICE_AUTO:
        rc = jadd(fcc, "mode", json_object_new_string("AUTO"));
        break;
    case COMPASS_TOOL_CHOICE_NONE:
        rc = jadd(fcc, "mode", json_object_new_string("NONE"));
        break;
    case COMPASS_TOOL_CHOICE_REQUIRED:
        rc = jadd(fcc, "mode", json_object_new_string("ANY"));
        break;
    case COMPASS_TOOL_CHOICE_FUNCTION: {
        json_object *names;
        if (r->tool_choice_name.len == 0)
            return compass_err_set(err, COMPASS_EUNSUPPORTED,
                                   "gemini: tool_choice: function name is empty");
        rc = jadd(fcc, "mode", json_object_new_string("ANY"));
        if (rc)
            break;
        names = json_object_new_array();
        rc = jadd(fcc, "allowedFunctionNames", names);
        if (rc)
            break;
        rc = jpush(names, jstr(r->tool_choice_name));
        break;
    }
    default:
        return compass_err_set(err, COMPASS_EUNSUPPORTED, "gemini: tool_choice: unknown value");
    }
    return rc ? oom(err) : COMPASS_OK;
}

/* Returns 1 when cfg got thinkingConfig, 0 when nothing, or a negative error. */
static int add_thinking(json_object *cfg, const compass_chat_request *r, compass_err *err)
{
    static const struct {
        const char *effort;
        const char *level; /* Gemini 3: thinkingLevel; NULL: refused */
        int64_t budget;    /* Gemini 2.5: thinkingBudget */
    } map[] = {{"none", NULL, 0},          {"minimal", "MINIMAL", 512}, {"low", "LOW", 1024},
               {"medium", "MEDIUM", 8192}, {"high", "HIGH", 24576},     {NULL, NULL, 0}};
    compass_str e = r->reasoning_effort;
    json_object *tc;
    size_t i, k;
    int g3 = 0;

    if (e.len == 0)
        return 0;
    for (k = 0; k + 8 <= r->model.len; k++)
        if (memcmp(r->model.ptr + k, "gemini-3", 8) == 0)
            g3 = 1;
    for (i = 0; map[i].effort; i++)
        if (str_is(e, map[i].effort))
            break;
    if (!map[i].effort)
        return fail(err, COMPASS_EUNSUPPORTED,
                    "gemini: reasoning_effort: \"%.*s\" is not none, minimal, low, medium or "
                    "high",
                    (int)(e.len > 32 ? 32 : e.len), e.ptr);
    if (g3 && !map[i].level)
        return compass_err_set(err, COMPASS_EUNSUPPORTED,
                               "gemini: reasoning_effort: gemini-3 models cannot turn thinking "
                               "off (use minimal or low)");
    tc = json_object_new_object();
    if (jadd(cfg, "thinkingConfig", tc))
        return oom(err);
    if (g3) {
        if (jadd(tc, "thinkingLevel", json_object_new_string(map[i].level)))
            return oom(err);
    } else if (jadd(tc, "thinkingBudget", json_object_new_int64(map[i].budget))) {
        return oom(err);
    }
    return 1;
}

static int add_response_format(json_object *cfg, const compass_chat_request *r, int *added,
                               compass_err *err)
{
    json_object *rf = NULL, *schema, *copy = NULL;
    compass_str type;
    const char *why = "";
    int rc;

    *added = 0;
    if (r->response_format.len == 0)
        return COMPASS_OK;
    rc = jparse(r->response_format, &rf);
    if (rc == COMPASS_ENOMEM)
        return oom(err);
    if (rc || !rf || !json_object_is_type(rf, json_type_object)) {
        if (rf)
            json_object_put(rf);
        return compass_err_set(err, COMPASS_EUNSUPPORTED,
                               "gemini: response_format: not a JSON object");
    }
    type = jstrval(jget(rf, "type"));
    if (str_is(type, "text")) {
        json_object_put(rf);
        return COMPASS_OK;
    }
    if (!str_is(type, "json_object") && !str_is(type, "json_schema")) {
        json_object_put(rf);
        return compass_err_set(err, COMPASS_EUNSUPPORTED,
                               "gemini: response_format.type: expected text, json_object or "
                               "json_schema");
    }
    if (jadd(cfg, "responseMimeType", json_object_new_string("application/json"))) {
        json_object_put(rf);
        return oom(err);
    }
    *added = 1;
    if (str_is(type, "json_object")) {
        json_object_put(rf);
        return COMPASS_OK;
    }
    schema = jget(jget(rf, "json_schema"), "schema");
    if (!schema || !json_object_is_type(schema, json_type_object)) {
        json_object_put(rf);
        return compass_err_set(err, COMPASS_EUNSUPPORTED,
                               "gemini: response_format.json_schema.schema: missing or not an "
                               "object");
    }
    /* detach the schema from rf so rf can go */
    copy = json_object_get(schema);
    json_object_put(rf);
    if (jadd(cfg, "responseSchema", copy))
        return oom(err);
    rc = schema_clean(copy, 0, &why);
    if (rc == COMPASS_ENOMEM)
        return oom(err);
    if (rc)
        return fail(err, rc, "gemini: response_format.json_schema.schema: %s", why);
    return COMPASS_OK;
}

static int add_generation_config(json_object *root, const compass_chat_request *r, compass_err *err)
{
    json_object *cfg = json_object_new_object();
    int n = 0, rc, added = 0;
    size_t i;

    if (!cfg)
        return oom(err);
    if (r->set & COMPASS_SET_TEMPERATURE) {
        if (jadd(cfg, "temperature", jdouble(r->temperature)))
            goto nomem;
        n++;
    }
    if (r->set & COMPASS_SET_TOP_P) {
        if (jadd(cfg, "topP", jdouble(r->top_p)))
            goto nomem;
        n++;
    }
    if (r->set & (COMPASS_SET_MAX_COMPLETION_TOKENS | COMPASS_SET_MAX_TOKENS)) {
        int64_t mt =
            (r->set & COMPASS_SET_MAX_COMPLETION_TOKENS) ? r->max_completion_tokens : r->max_tokens;
        if (jadd(cfg, "maxOutputTokens", json_object_new_int64(mt)))
            goto nomem;
        n++;
    }
    if (r->n_stop) {
        json_object *st = json_object_new_array();
        if (jadd(cfg, "stopSequences", st))
            goto nomem;
        for (i = 0; i < r->n_stop; i++)
            if (jpush(st, jstr(r->stop[i])))
                goto nomem;
        n++;
    }
    if (r->set & COMPASS_SET_SEED) {
        if (jadd(cfg, "seed", json_object_new_int64(r->seed)))
            goto nomem;
        n++;
    }
    if (r->set & COMPASS_SET_N) {
        if (r->n != 1) {
            json_object_put(cfg);
            return compass_err_set(err, COMPASS_EUNSUPPORTED,
                                   "gemini: n: only n=1 is supported (one choice per answer)");
        }
        if (jadd(cfg, "candidateCount", json_object_new_int64(r->n)))
            goto nomem;
        n++;
    }
    if (r->set & COMPASS_SET_PRESENCE_PENALTY) {
        if (jadd(cfg, "presencePenalty", jdouble(r->presence_penalty)))
            goto nomem;
        n++;
    }
    if (r->set & COMPASS_SET_FREQUENCY_PENALTY) {
        if (jadd(cfg, "frequencyPenalty", jdouble(r->frequency_penalty)))
            goto nomem;
        n++;
    }
    rc = add_response_format(cfg, r, &added, err);
    if (rc) {
        json_object_put(cfg);
        return rc;
    }
    n += added;
    rc = add_thinking(cfg, r, err);
    if (rc < 0) {
        json_object_put(cfg);
        return rc;
    }
    n += rc;
    if (n == 0) {
        json_object_put(cfg);
        return COMPASS_OK;
    }
    if (jadd(root, "generationConfig", cfg))
        return oom(err);
    return COMPASS_OK;
nomem:
    json_object_put(cfg);
    return oom(err);
}

static int model_ok(compass_str m)
{
    size_t i;
    if (m.len == 0 || m.len > 256)
        return 0;
    for (i = 0; i < m.len; i++) {
        char c = m.ptr[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return 0;
    }
    return 1;
}

static int build_body(const gm_inst *in, const compass_chat_request *r, json_object *root,
                      compass_err *err)
{
    gm_build b;
    size_t i;
    int rc, sig = want_signature(in, r->model);

    memset(&b, 0, sizeof(b));
    b.contents = json_object_new_array();
    if (jadd(root, "contents", b.contents))
        return oom(err);
    for (i = 0; i < r->n_messages; i++) {
        const compass_message *m = &r->messages[i];
        switch (m->role) {
        case COMPASS_ROLE_SYSTEM:
        case COMPASS_ROLE_DEVELOPER:
            if (!m->has_content || m->content.len == 0)
                break;
            if (!b.sys_parts) {
                json_object *si = json_object_new_object();
                if (jadd(root, "systemInstruction", si))
                    return oom(err);
                b.sys_parts = json_object_new_array();
                if (jadd(si, "parts", b.sys_parts))
                    return oom(err);
            }
            if (push_text_part(b.sys_parts, m->content))
                return oom(err);
            break;
        case COMPASS_ROLE_USER:
            if ((rc = add_user_message(&b, m, i, err)) != 0)
                return rc;
            break;
        case COMPASS_ROLE_ASSISTANT:
            if ((rc = add_assistant_message(in, &b, m, i, sig, err)) != 0)
                return rc;
            break;
        case COMPASS_ROLE_TOOL:
            if ((rc = add_tool_message(&b, r, i, err)) != 0)
                return rc;
            break;
        default:
            return fail(err, COMPASS_EUNSUPPORTED, "gemini: messages[%zu].role: unsupported", i);
        }
    }
    if (json_object_array_length(b.contents) == 0)
        return compass_err_set(err, COMPASS_EUNSUPPORTED,
                               "gemini: messages: Gemini needs at least one user, assistant or "
                               "tool message with content");
    if ((rc = add_tools(root, r, err)) != 0)
        return rc;
    return add_generation_config(root, r, err);
}

static int gm_build_request(void *vinst, compass_req *req, const compass_chat_request *r,
                            compass_http_request *out, compass_err *err)
{
    gm_inst *in = vinst;
    const compass_host *h;
    compass_str model;
    json_object *root;
    const char *body;
    size_t body_len, url_cap;
    char *url;
    compass_header *hdr;
    size_t nh = 0;
    int rc;

    if (!in || !req || !r || !out)
        return compass_err_set(err, COMPASS_EINVAL, "gemini: build_request: NULL argument");
    h = in->h;
    model = r->model;
    if (str_starts(model, "models/")) {
        model.ptr += 7;
        model.len -= 7;
    }
    if (!model_ok(model))
        return compass_err_set(err, COMPASS_EUNSUPPORTED,
                               "gemini: model: empty or has characters other than "
                               "[A-Za-z0-9._-]");

    root = json_object_new_object();
    if (!root)
        return oom(err);
    rc = build_body(in, r, root, err);
    if (rc) {
        json_object_put(root);
        return rc;
    }
    body = json_object_to_json_string_ext(root,
                                          JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (!body) {
        json_object_put(root);
        return oom(err);
    }
    body_len = strlen(body);
    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    out->body = h->req_strdup(req, body, body_len);
    json_object_put(root);
    if (!out->body.ptr)
        return oom(err);

    url_cap = strlen(in->base) + strlen(in->api_version) + model.len + 64;
    url = h->req_alloc(req, url_cap);
    if (!url)
        return oom(err);
    snprintf(url, url_cap, "%s/%s/models/%.*s:%s", in->base, in->api_version, (int)model.len,
             model.ptr, r->stream ? "streamGenerateContent?alt=sse" : "generateContent");
    out->url = compass_str_c(url);
    out->method = COMPASS_HTTP_POST;
    out->stream_format = r->stream ? COMPASS_STREAM_SSE : COMPASS_STREAM_NONE;

    hdr = h->req_alloc(req, 2 * sizeof(*hdr));
    if (!hdr)
        return oom(err);
    hdr[nh].name = compass_str_c("content-type");
    hdr[nh].value = compass_str_c("application/json");
    nh++;
    if (in->api_key) {
        hdr[nh].name = compass_str_c("x-goog-api-key");
        hdr[nh].value = compass_str_c(in->api_key);
        nh++;
    }
    out->headers = hdr;
    out->n_headers = nh;
    return COMPASS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Errors                                                                                    */
/* ---------------------------------------------------------------------------------------- */

/* Parses a google.protobuf.Duration text ("30s", "1.5s") into milliseconds; -1 if not one. */
static int64_t parse_duration_ms(compass_str s)
{
    int64_t whole = 0, frac = 0, scale = 1000;
    size_t i = 0;
    int digits = 0;
    if (s.len < 2 || s.ptr[s.len - 1] != 's')
        return -1;
    for (; i < s.len - 1 && s.ptr[i] >= '0' && s.ptr[i] <= '9'; i++, digits++) {
        if (whole > INT64_MAX / 10000)
            return -1;
        whole = whole * 10 + (s.ptr[i] - '0');
    }
    if (i < s.len - 1 && s.ptr[i] == '.') {
        for (i++; i < s.len - 1 && s.ptr[i] >= '0' && s.ptr[i] <= '9'; i++) {
            if (scale > 1) {
                scale /= 10;
                frac += (s.ptr[i] - '0') * scale;
            } else if (s.ptr[i] != '0' && frac == 0) {
                frac = 1; /* round sub-millisecond delays up */
            }
            digits++;
        }
    }
    if (i != s.len - 1 || digits == 0)
        return -1;
    return whole * 1000 + frac;
}

/* Retry-After in delta-seconds (the HTTP-date form is not honoured). */
static int64_t parse_retry_after(compass_str v)
{
    int64_t r = 0;
    size_t i;
    while (v.len && (v.ptr[0] == ' ' || v.ptr[0] == '\t')) {
        v.ptr++;
        v.len--;
    }
    while (v.len && (v.ptr[v.len - 1] == ' ' || v.ptr[v.len - 1] == '\t'))
        v.len--;
    if (v.len == 0 || v.len > 12)
        return -1;
    for (i = 0; i < v.len; i++) {
        if (v.ptr[i] < '0' || v.ptr[i] > '9')
            return -1;
        r = r * 10 + (v.ptr[i] - '0');
    }
    return r * 1000;
}

static void set_type_code(compass_upstream_error *u, const char *type, const char *code)
{
    compass_copy_fixed(u->type, sizeof(u->type), compass_str_c(type));
    compass_copy_fixed(u->code, sizeof(u->code), compass_str_c(code));
}

/* Fills u from a Google error object ({"code","message","status","details"}) and/or the HTTP
 * status. err_obj may be NULL. */
static void fill_uerr(compass_upstream_error *u, json_object *err_obj, int http_status,
                      const compass_header *hs, size_t nh)
{
    compass_str status = jstrval(jget(err_obj, "status"));
    compass_str msg = jstrval(jget(err_obj, "message"));
    json_object *details = jget(err_obj, "details");
    int code = (int)jint(jget(err_obj, "code"));
    int st = http_status ? http_status : code;
    int outcome, key_invalid = 0;
    int64_t retry = -1;
    char lower[64];
    size_t i;

    if (details && json_object_is_type(details, json_type_array)) {
        size_t n = json_object_array_length(details);
        for (i = 0; i < n; i++) {
            json_object *d = json_object_array_get_idx(details, i);
            compass_str t = jstrval(jget(d, "@type"));
            if (str_is(t, "type.googleapis.com/google.rpc.RetryInfo"))
                retry = parse_duration_ms(jstrval(jget(d, "retryDelay")));
            else if (str_is(t, "type.googleapis.com/google.rpc.ErrorInfo") &&
                     (str_is(jstrval(jget(d, "reason")), "API_KEY_INVALID") ||
                      str_is(jstrval(jget(d, "reason")), "API_KEY_EXPIRED")))
                key_invalid = 1;
        }
    }

    if (key_invalid)
        outcome = COMPASS_OUTCOME_AUTH;
    else if (str_is(status, "INVALID_ARGUMENT") || str_is(status, "FAILED_PRECONDITION") ||
             str_is(status, "OUT_OF_RANGE"))
        outcome = COMPASS_OUTCOME_BAD_REQUEST;
    else if (str_is(status, "UNAUTHENTICATED") || str_is(status, "PERMISSION_DENIED"))
        outcome = COMPASS_OUTCOME_AUTH;
    else if (str_is(status, "NOT_FOUND"))
        outcome = COMPASS_OUTCOME_NOT_FOUND;
    else if (str_is(status, "RESOURCE_EXHAUSTED"))
        outcome = COMPASS_OUTCOME_RATE_LIMITED;
    else if (str_is(status, "INTERNAL") || str_is(status, "UNAVAILABLE") ||
             str_is(status, "DEADLINE_EXCEEDED") || str_is(status, "ABORTED") ||
             str_is(status, "CANCELLED"))
        outcome = COMPASS_OUTCOME_RETRYABLE;
    else if (st == 0 || (st >= 200 && st < 300))
        outcome = COMPASS_OUTCOME_FATAL; /* an error body with no usable status */
    else
        outcome = compass_outcome_from_status(st);

    compass_uerr_init(u, outcome, http_status ? http_status : code);
    if (outcome == COMPASS_OUTCOME_RATE_LIMITED) {
        if (retry < 0)
            retry = parse_retry_after(compass_header_get(hs, nh, "retry-after"));
        u->retry_after_ms = retry;
    }

    lower[0] = '\0';
    if (status.len && status.len < sizeof(lower)) {
        for (i = 0; i < status.len; i++) {
            char c = status.ptr[i];
            lower[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        }
        lower[status.len] = '\0';
    }
    switch (outcome) {
    case COMPASS_OUTCOME_BAD_REQUEST:
        set_type_code(u, "invalid_request_error", lower[0] ? lower : "invalid_argument");
        break;
    case COMPASS_OUTCOME_AUTH:
        if (key_invalid)
            set_type_code(u, "authentication_error", "invalid_api_key");
        else if (str_is(status, "PERMISSION_DENIED") || (!status.len && st == 403))
            set_type_code(u, "permission_error", "permission_denied");
        else
            set_type_code(u, "authentication_error", "invalid_api_key");
        break;
    case COMPASS_OUTCOME_NOT_FOUND:
        set_type_code(u, "invalid_request_error", "model_not_found");
        break;
    case COMPASS_OUTCOME_RATE_LIMITED:
        set_type_code(u, "rate_limit_error", "rate_limit_exceeded");
        break;
    case COMPASS_OUTCOME_RETRYABLE:
        set_type_code(u, "server_error", lower[0] ? lower : "upstream_unavailable");
        break;
    default:
        set_type_code(u, "api_error", lower);
        break;
    }
    if (msg.len)
        compass_copy_fixed(u->message, sizeof(u->message), msg);
    else
        snprintf(u->message, sizeof(u->message), "gemini: upstream error (HTTP %d%s%.*s)",
                 u->http_status, status.len ? ", " : "", (int)(status.len > 40 ? 40 : status.len),
                 status.ptr ? status.ptr : "");
}

/* The error object of a Google error body: {"error":{...}} or [{"error":{...}}]. */
static json_object *error_object(json_object *root)
{
    json_object *e;
    if (root && json_object_is_type(root, json_type_array) && json_object_array_length(root) > 0)
        root = json_object_array_get_idx(root, 0);
    e = jget(root, "error");
    return e && json_object_is_type(e, json_type_object) ? e : NULL;
}

static void gm_classify_error(void *vinst, compass_req *req, const compass_http_response *resp,
                              compass_upstream_error *u)
{
    json_object *root = NULL;
    (void)vinst;
    (void)req;
    if (!u)
        return;
    if (!resp) {
        compass_uerr_init(u, COMPASS_OUTCOME_FATAL, 0);
        return;
    }
    if (resp->body.len)
        (void)jparse(resp->body, &root);
    fill_uerr(u, error_object(root), resp->status, resp->headers, resp->n_headers);
    if (root)
        json_object_put(root);
}

/* ---------------------------------------------------------------------------------------- */
/* Responses                                                                                 */
/* ---------------------------------------------------------------------------------------- */

static int map_finish(compass_str r, int has_tools)
{
    if (str_is(r, "MAX_TOKENS"))
        return COMPASS_FINISH_LENGTH;
    if (str_is(r, "SAFETY") || str_is(r, "RECITATION") || str_is(r, "BLOCKLIST") ||
        str_is(r, "PROHIBITED_CONTENT") || str_is(r, "SPII") || str_is(r, "IMAGE_SAFETY"))
        return COMPASS_FINISH_CONTENT_FILTER;
    return has_tools ? COMPASS_FINISH_TOOL_CALLS : COMPASS_FINISH_STOP;
}

static int read_usage(json_object *um, compass_usage *u)
{
    int64_t cand, thoughts;
    if (!um || !json_object_is_type(um, json_type_object))
        return 0;
    memset(u, 0, sizeof(*u));
    u->present = 1;
    cand = jint(jget(um, "candidatesTokenCount"));
    thoughts = jint(jget(um, "thoughtsTokenCount"));
    u->prompt_tokens = jint(jget(um, "promptTokenCount"));
    u->completion_tokens = js_add_sat(cand, thoughts);
    u->reasoning_tokens = thoughts;
    u->cached_tokens = jint(jget(um, "cachedContentTokenCount"));
    u->total_tokens = jget(um, "totalTokenCount") ? jint(jget(um, "totalTokenCount"))
                                                  : js_add_sat(u->prompt_tokens,
                                                               u->completion_tokens);
    return 1;
}

static int part_is_thought(json_object *p)
{
    json_object *t = jget(p, "thought");
    return t && json_object_is_type(t, json_type_boolean) && json_object_get_boolean(t);
}

static int serialise_args(const compass_host *h, compass_req *req, json_object *args,
                          compass_str *out)
{
    const char *s;
    if (!args || !json_object_is_type(args, json_type_object))
        return req_dup(h, req, compass_str_c("{}"), out);
    s = json_object_to_json_string_ext(args,
                                       JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (!s)
        return COMPASS_ENOMEM;
    return req_dup(h, req, compass_str_c(s), out);
}

static int make_call_id(const compass_host *h, compass_req *req, int index, compass_str *out)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "call_%d", index);
    return req_dup(h, req, (compass_str){buf, (size_t)n}, out);
}

static int parse_candidate(const compass_host *h, compass_req *req, json_object *cand,
                           compass_chat_response *out)
{
    json_object *parts = jget(jget(cand, "content"), "parts");
    size_t i, n = 0, text_len = 0, n_calls = 0;
    char *text;
    int rc;

    if (parts && !json_object_is_type(parts, json_type_array))
        return COMPASS_EPARSE;
    if (parts)
        n = json_object_array_length(parts);
    for (i = 0; i < n; i++) {
        json_object *p = json_object_array_get_idx(parts, i);
        if (jget(p, "functionCall"))
            n_calls++;
        else if (!part_is_thought(p))
            text_len += jstrval(jget(p, "text")).len;
    }
    text = h->req_alloc(req, text_len + 1);
    if (!text)
        return COMPASS_ENOMEM;
    text_len = 0;
    if (n_calls) {
        out->tool_calls = h->req_alloc(req, n_calls * sizeof(*out->tool_calls));
        if (!out->tool_calls)
            return COMPASS_ENOMEM;
        memset(out->tool_calls, 0, n_calls * sizeof(*out->tool_calls));
    }
    for (i = 0; i < n; i++) {
        json_object *p = json_object_array_get_idx(parts, i), *fc = jget(p, "functionCall");
        if (fc) {
            compass_tool_call *tc = &out->tool_calls[out->n_tool_calls];
            if ((rc = make_call_id(h, req, (int)out->n_tool_calls, &tc->id)) != 0 ||
                (rc = req_dup(h, req, jstrval(jget(fc, "name")), &tc->name)) != 0 ||
                (rc = serialise_args(h, req, jget(fc, "args"), &tc->arguments)) != 0)
                return rc;
            out->n_tool_calls++;
        } else if (!part_is_thought(p)) {
            compass_str t = jstrval(jget(p, "text"));
            if (t.len)
                memcpy(text + text_len, t.ptr, t.len);
            text_len += t.len;
        }
    }
    text[text_len] = '\0';
    out->content.ptr = text;
    out->content.len = text_len;
    out->has_content = text_len > 0 || out->n_tool_calls == 0;
    out->finish_reason = map_finish(jstrval(jget(cand, "finishReason")), out->n_tool_calls > 0);
    return COMPASS_OK;
}

static int gm_parse_response(void *vinst, compass_req *req, const compass_http_response *resp,
                             compass_chat_response *out, compass_upstream_error *uerr,
                             compass_err *err)
{
    gm_inst *in = vinst;
    const compass_host *h;
    json_object *root = NULL, *cands, *eo;
    int rc;

    if (!in || !req || !resp || !out)
        return compass_err_set(err, COMPASS_EINVAL, "gemini: parse_response: NULL argument");
    h = in->h;
    rc = jparse(resp->body, &root);
    if (rc == COMPASS_ENOMEM)
        return oom(err);
    if (rc || !root) {
        if (root)
            json_object_put(root);
        return compass_err_set(err, COMPASS_EPARSE, "gemini: response body is not JSON");
    }
    if ((eo = error_object(root)) != NULL) {
        if (uerr)
            fill_uerr(uerr, eo, resp->status >= 300 ? resp->status : 0, resp->headers,
                      resp->n_headers);
        json_object_put(root);
        return compass_err_set(err, COMPASS_EUPSTREAM, "gemini: upstream returned an error");
    }
    if (!json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return compass_err_set(err, COMPASS_EPARSE,
                               "gemini: response body is not a GenerateContentResponse");
    }
    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    if ((rc = req_dup(h, req, jstrval(jget(root, "responseId")), &out->id)) != 0 ||
        (rc = req_dup(h, req, jstrval(jget(root, "modelVersion")), &out->model)) != 0) {
        json_object_put(root);
        return oom(err);
    }
    read_usage(jget(root, "usageMetadata"), &out->usage);
    cands = jget(root, "candidates");
    if (cands && !json_object_is_type(cands, json_type_array)) {
        json_object_put(root);
        return compass_err_set(err, COMPASS_EPARSE, "gemini: candidates is not an array");
    }
    if (!cands || json_object_array_length(cands) == 0) {
        compass_str block = jstrval(jget(jget(root, "promptFeedback"), "blockReason"));
        json_object_put(root);
        if (block.len == 0)
            return compass_err_set(err, COMPASS_EPARSE,
                                   "gemini: response has no candidates and no blockReason");
        out->has_content = 1;
        out->content = h->req_strdup(req, "", 0);
        if (!out->content.ptr)
            return oom(err);
        out->finish_reason = COMPASS_FINISH_CONTENT_FILTER;
        return COMPASS_OK;
    }
    rc = parse_candidate(h, req, json_object_array_get_idx(cands, 0), out);
    json_object_put(root);
    if (rc == COMPASS_ENOMEM)
        return oom(err);
    if (rc)
        return compass_err_set(err, rc, "gemini: candidates[0].content.parts: bad shape");
    return COMPASS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Streaming                                                                                 */
/* ---------------------------------------------------------------------------------------- */

static gm_stream *stream_state(const compass_host *h, compass_req *req)
{
    void **slot = h->req_data(req);
    gm_stream *s;
    if (!slot)
        return NULL;
    if (*slot)
        return *slot;
    s = h->req_alloc(req, sizeof(*s));
    if (!s)
        return NULL;
    memset(s, 0, sizeof(*s));
    *slot = s;
    return s;
}

static void delta_base(compass_chat_delta *d, gm_stream *st, compass_str id, compass_str model)
{
    compass_delta_init(d);
    d->id = id;
    d->model = model;
    if (!st->role_sent) {
        d->role = COMPASS_ROLE_ASSISTANT;
        st->role_sent = 1;
    }
}

static int emit(const compass_host *h, compass_req *req, const compass_chat_delta *d)
{
    int rc = h->stream_emit(req, d);
    return rc < 0 ? rc : COMPASS_OK;
}

/* Emits one part of candidates[0]: a functionCall (fc not NULL) or a text (none when empty). */
static int emit_part(const compass_host *h, compass_req *req, gm_stream *st, compass_str id,
                     compass_str model, json_object *fc, compass_str text)
{
    compass_chat_delta d;
    if (fc) {
        char idbuf[32];
        const char *args = "{}";
        json_object *a = jget(fc, "args");
        int k = snprintf(idbuf, sizeof(idbuf), "call_%d", st->n_tools);
        if (a && json_object_is_type(a, json_type_object)) {
            args = json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN |
                                                         JSON_C_TO_STRING_NOSLASHESCAPE);
            if (!args)
                return COMPASS_ENOMEM;
        }
        delta_base(&d, st, id, model);
        d.tool_index = st->n_tools;
        d.tool_id.ptr = idbuf;
        d.tool_id.len = (size_t)k;
        d.tool_name = jstrval(jget(fc, "name"));
        d.tool_arguments = compass_str_c(args);
        st->n_tools++;
        return emit(h, req, &d);
    }
    if (text.len == 0)
        return COMPASS_OK;
    delta_base(&d, st, id, model);
    d.content = text;
    return emit(h, req, &d);
}

/* After the parts: the finish (or the prompt's block reason when there is no candidate), the
 * opening of the assistant message when nothing opened it yet, and the usage once finished.
 * usage_meta is usageMetadata (may be NULL). */
static int emit_end(const compass_host *h, compass_req *req, gm_stream *st, compass_str id,
                    compass_str model, int has_cand, compass_str finish, compass_str block,
                    json_object *usage_meta)
{
    compass_chat_delta d;
    compass_usage usage;
    int have_usage = read_usage(usage_meta, &usage);
    int rc, fin = 0;

    if (finish.len)
        fin = map_finish(finish, st->n_tools > 0);
    else if (!has_cand && block.len)
        fin = COMPASS_FINISH_CONTENT_FILTER;
    if (fin) {
        delta_base(&d, st, id, model);
        d.finish_reason = fin;
        st->finished = 1;
        if ((rc = emit(h, req, &d)) != 0)
            return rc;
    } else if (!st->role_sent && has_cand) {
        /* an opening event with no text still opens the assistant message */
        delta_base(&d, st, id, model);
        if ((rc = emit(h, req, &d)) != 0)
            return rc;
    }
    if (have_usage && st->finished) {
        delta_base(&d, st, id, model);
        d.usage = usage;
        if ((rc = emit(h, req, &d)) != 0)
            return rc;
    }
    return COMPASS_OK;
}

/* Maps a stream reader's result to the hook's return. */
static int stream_result(int rc, compass_err *err)
{
    if (rc == COMPASS_ENOMEM)
        return oom(err);
    if (rc == COMPASS_EPARSE)
        return compass_err_set(err, rc, "gemini: stream event has a bad candidates shape");
    if (rc)
        return fail(err, rc, "gemini: stream_emit failed (%d)", rc);
    return COMPASS_OK;
}

/* The event's JSON text. Returns 1 when there is JSON to read, else 0 (a keep-alive). */
static int event_json(const compass_stream_event *ev, compass_str *data)
{
    *data = ev->data;
    while (data->len &&
           (data->ptr[0] == ' ' || data->ptr[0] == '\r' || data->ptr[0] == '\n')) {
        data->ptr++;
        data->len--;
    }
    return data->len > 0;
}

/* ---- the tree reader: json-c parses the whole event */

static int stream_event(const compass_host *h, compass_req *req, gm_stream *st, json_object *root)
{
    compass_str id = jstrval(jget(root, "responseId"));
    compass_str model = jstrval(jget(root, "modelVersion"));
    compass_str none = {NULL, 0};
    json_object *cands = jget(root, "candidates"), *cand = NULL, *parts;
    size_t i, n = 0;
    int rc;

    if (cands && !json_object_is_type(cands, json_type_array))
        return COMPASS_EPARSE;
    if (cands && json_object_array_length(cands) > 0)
        cand = json_object_array_get_idx(cands, 0);
    parts = jget(jget(cand, "content"), "parts");
    if (parts && !json_object_is_type(parts, json_type_array))
        return COMPASS_EPARSE;
    if (parts)
        n = json_object_array_length(parts);

    for (i = 0; i < n; i++) {
        json_object *p = json_object_array_get_idx(parts, i), *fc = jget(p, "functionCall");
        if (fc)
            rc = emit_part(h, req, st, id, model, fc, none);
        else if (!part_is_thought(p))
            rc = emit_part(h, req, st, id, model, NULL, jstrval(jget(p, "text")));
        else
            continue;
        if (rc != 0)
            return rc;
    }
    return emit_end(h, req, st, id, model, cand != NULL, jstrval(jget(cand, "finishReason")),
                    cand ? none : jstrval(jget(jget(root, "promptFeedback"), "blockReason")),
                    jget(root, "usageMetadata"));
}

int gm_stream_event_full(const compass_host *h, compass_req *req, const compass_stream_event *ev,
                         compass_upstream_error *uerr, compass_err *err)
{
    json_object *root = NULL, *eo;
    gm_stream *st;
    compass_str data;
    int rc;

    if (!event_json(ev, &data))
        return COMPASS_OK; /* keep-alive or comment-only event */
    rc = jparse(data, &root);
    if (rc == COMPASS_ENOMEM)
        return oom(err);
    if (rc || !root) {
        if (root)
            json_object_put(root);
        return compass_err_set(err, COMPASS_EPARSE, "gemini: stream event data is not JSON");
    }
    if ((eo = error_object(root)) != NULL) {
        if (uerr)
            fill_uerr(uerr, eo, 0, NULL, 0);
        json_object_put(root);
        return compass_err_set(err, COMPASS_EUPSTREAM, "gemini: upstream sent an error event");
    }
    if (!json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return compass_err_set(err, COMPASS_EPARSE,
                               "gemini: stream event is not a GenerateContentResponse");
    }
    st = stream_state(h, req);
    if (!st) {
        json_object_put(root);
        return oom(err);
    }
    rc = stream_event(h, req, st, root);
    json_object_put(root);
    return stream_result(rc, err);
}

/* ---- the scanner reader: walks the event in place, decodes only what a chunk keeps */

#define GM_SCAN_MAX_PARTS 16
#define GM_JSON_DEPTH 32 /* json-c's default, which jparse uses */

/* A GenerateContentResponse as the scanner reader found it. Views borrow the event's data or
 * json-c objects in keep. */
typedef struct gm_scan {
    compass_str id, model, finish;
    int has_cand;                          /* candidates[0] is an object */
    js_val usage, feedback;                /* usageMetadata, promptFeedback */
    size_t n_parts;                        /* parts that emit, in order */
    struct {
        json_object *fc;                   /* a functionCall, or NULL for text */
        compass_str text;
    } parts[GM_SCAN_MAX_PARTS];
} gm_scan;

/* One element of parts: kept in g when it emits (a functionCall, or a non-empty text that is
 * not a thought). */
static int scan_part(json_scan *s, js_keep *keep, gm_scan *g)
{
    js_val k, fc = {0}, thought = {0}, text = {0};
    json_object *o = NULL;
    compass_str t = {NULL, 0};
    int r;
    if (js_peek(s) != JS_OBJECT)
        return js_skip(s); /* no functionCall, no text: nothing to emit */
    if (js_begin(s, '{'))
        return -1;
    while ((r = js_member(s, &k)) > 0) {
        js_val *slot = js_key_is(&k, "text")           ? &text
                       : js_key_is(&k, "functionCall") ? &fc
                       : js_key_is(&k, "thought")      ? &thought
                                                       : NULL;
        if (k.escaped || (slot ? js_take(s, slot) : js_skip(s)))
            return -1;
    }
    if (r < 0)
        return -1;
    if (fc.type != JS_NONE && fc.type != JS_NULL) {
        if (js_decode(keep, &fc, &o))
            return -1;
    } else if (thought.type == JS_TRUE || text.type != JS_STRING) {
        return 0;
    } else if (js_string(keep, &text, &t)) {
        return -1;
    } else if (!t.len) {
        return 0;
    }
    if (g->n_parts >= GM_SCAN_MAX_PARTS)
        return -1;
    g->parts[g->n_parts].fc = o;
    g->parts[g->n_parts].text = t;
    g->n_parts++;
    return 0;
}

static int scan_candidate(json_scan *s, js_keep *keep, gm_scan *g)
{
    js_val k, finish = {0};
    int r, seen_content = 0, seen_parts = 0;
    if (js_begin(s, '{'))
        return -1;
    while ((r = js_member(s, &k)) > 0) {
        if (k.escaped)
            return -1;
        if (js_key_is(&k, "finishReason")) {
            if (js_take(s, &finish))
                return -1;
            continue;
        }
        if (!js_key_is(&k, "content") || js_peek(s) != JS_OBJECT) {
            if ((js_key_is(&k, "content") && seen_content++) || js_skip(s))
                return -1;
            continue;
        }
        if (seen_content++ || js_begin(s, '{'))
            return -1;
        while ((r = js_member(s, &k)) > 0) {
            if (k.escaped)
                return -1;
            if (!js_key_is(&k, "parts") || js_peek(s) == JS_NULL) {
                if ((js_key_is(&k, "parts") && seen_parts++) || js_skip(s))
                    return -1;
                continue;
            }
            /* parts that is not an array is a bad shape: the tree reader says so */
            if (seen_parts++ || js_begin(s, '['))
                return -1;
            while ((r = js_elem(s)) > 0)
                if (scan_part(s, keep, g))
                    return -1;
            if (r < 0)
                return -1;
        }
        if (r < 0)
            return -1;
    }
    if (r < 0)
        return -1;
    g->has_cand = 1;
    return finish.type == JS_STRING ? js_string(keep, &finish, &g->finish) : 0;
}

/* Reads data into g; -1 when the tree reader must take the event (not strict JSON, an error,
 * a duplicate or escaped key, a shape the scanner reader does not follow). */
static int scan_event(compass_str data, js_keep *keep, gm_scan *g)
{
    json_scan s;
    js_val k, id = {0}, model = {0}, error = {0};
    int r, seen_cands = 0;

    memset(g, 0, sizeof(*g));
    if (data.len > (size_t)INT_MAX - 1)
        return -1;
    js_init(&s, data.ptr, data.len, GM_JSON_DEPTH);
    if (js_begin(&s, '{'))
        return -1;
    while ((r = js_member(&s, &k)) > 0) {
        js_val *slot;
        if (k.escaped)
            return -1;
        if (js_key_is(&k, "candidates")) {
            int first = 1;
            if (seen_cands++)
                return -1;
            if (js_peek(&s) == JS_NULL) {
                if (js_skip(&s))
                    return -1;
                continue;
            }
            if (js_begin(&s, '['))
                return -1; /* not an array: a bad shape */
            while ((r = js_elem(&s)) > 0) {
                js_type t = js_peek(&s);
                /* candidates[0]: an object, or null (no candidate); the rest are skipped */
                if (first && t == JS_OBJECT)
                    r = scan_candidate(&s, keep, g);
                else if (first && t != JS_NULL)
                    r = -1;
                else
                    r = js_skip(&s);
                if (r)
                    return -1;
                first = 0;
            }
            if (r < 0)
                return -1;
            continue;
        }
        slot = js_key_is(&k, "responseId")       ? &id
               : js_key_is(&k, "modelVersion")   ? &model
               : js_key_is(&k, "usageMetadata")  ? &g->usage
               : js_key_is(&k, "promptFeedback") ? &g->feedback
               : js_key_is(&k, "error")          ? &error
                                                 : NULL;
        if (slot ? js_take(&s, slot) : js_skip(&s))
            return -1;
    }
    if (r < 0 || js_end(&s) || error.type == JS_OBJECT) /* an error: fill_uerr reads it */
        return -1;
    if ((id.type == JS_STRING && js_string(keep, &id, &g->id)) ||
        (model.type == JS_STRING && js_string(keep, &model, &g->model)))
        return -1;
    return 0;
}

int gm_stream_event_fast(const compass_host *h, compass_req *req, const compass_stream_event *ev,
                         compass_err *err)
{
    js_keep keep;
    gm_scan g;
    gm_stream *st;
    compass_str data, block = {NULL, 0};
    json_object *usage = NULL;
    size_t i;
    int rc = COMPASS_OK;

    if (!event_json(ev, &data))
        return COMPASS_OK; /* keep-alive or comment-only event */
    js_keep_init(&keep, GM_JSON_DEPTH);
    if (scan_event(data, &keep, &g)) {
        js_keep_release(&keep);
        return GM_DECLINED;
    }
    st = stream_state(h, req);
    if (!st) {
        js_keep_release(&keep);
        return oom(err);
    }
    /* what the end of the event reads, decoded before anything is emitted */
    if (!g.finish.len && !g.has_cand && g.feedback.type == JS_OBJECT) {
        json_object *pf;
        if (js_decode(&keep, &g.feedback, &pf)) {
            js_keep_release(&keep);
            return GM_DECLINED;
        }
        block = jstrval(jget(pf, "blockReason"));
    }
    if ((st->finished || g.finish.len || block.len) && g.usage.type == JS_OBJECT &&
        js_decode(&keep, &g.usage, &usage)) {
        js_keep_release(&keep);
        return GM_DECLINED;
    }
    for (i = 0; i < g.n_parts && !rc; i++)
        rc = emit_part(h, req, st, g.id, g.model, g.parts[i].fc, g.parts[i].text);
    if (!rc)
        rc = emit_end(h, req, st, g.id, g.model, g.has_cand, g.finish, block, usage);
    js_keep_release(&keep);
    return stream_result(rc, err);
}

static int gm_parse_stream_event(void *vinst, compass_req *req, const compass_stream_event *ev,
                                 compass_upstream_error *uerr, compass_err *err)
{
    gm_inst *in = vinst;
    int rc;
    if (!in || !req || !ev)
        return compass_err_set(err, COMPASS_EINVAL, "gemini: parse_stream_event: NULL argument");
    rc = gm_stream_event_fast(in->h, req, ev, err);
    if (rc != GM_DECLINED)
        return rc;
    return gm_stream_event_full(in->h, req, ev, uerr, err);
}

/* ---------------------------------------------------------------------------------------- */
/* Embeddings (batchEmbedContents)                                                           */
/* ---------------------------------------------------------------------------------------- */

/* batchEmbedContents refuses batches of more than 100 requests. */
#define GM_MAX_EMBED_INPUTS 100

/* What parse_embed_response needs from build_embed_request, kept through h->req_data. */
typedef struct gm_embed_state {
    size_t n_inputs;
    compass_str model; /* the deployment's model, as the host gave it */
} gm_embed_state;

static int build_embed_body(const compass_embed_request *r, const char *model_name,
                            json_object *root)
{
    json_object *reqs = json_object_new_array();
    size_t i;

    if (jadd(root, "requests", reqs))
        return COMPASS_ENOMEM;
    for (i = 0; i < r->n_inputs; i++) {
        json_object *one = json_object_new_object(), *content, *parts;
        if (jpush(reqs, one))
            return COMPASS_ENOMEM;
        if (jadd(one, "model", json_object_new_string(model_name)))
            return COMPASS_ENOMEM;
        content = json_object_new_object();
        if (jadd(one, "content", content))
            return COMPASS_ENOMEM;
        parts = json_object_new_array();
        if (jadd(content, "parts", parts))
            return COMPASS_ENOMEM;
        if (push_text_part(parts, r->inputs[i]))
            return COMPASS_ENOMEM;
        if (r->dimensions > 0 &&
            jadd(one, "outputDimensionality", json_object_new_int64(r->dimensions)))
            return COMPASS_ENOMEM;
    }
    return COMPASS_OK;
}

static int gm_build_embed_request(void *vinst, compass_req *req, const compass_embed_request *r,
                                  compass_http_request *out, compass_err *err)
{
    gm_inst *in = vinst;
    const compass_host *h;
    compass_str model;
    json_object *root;
    const char *body;
    char *url, *model_name;
    size_t url_cap, name_cap, nh = 0;
    compass_header *hdr;
    gm_embed_state *st;
    void **slot;
    int rc;

    if (!in || !req || !r || !out)
        return compass_err_set(err, COMPASS_EINVAL,
                               "gemini: build_embed_request: NULL argument");
    h = in->h;
    if (r->n_inputs == 0 || !r->inputs)
        return compass_err_set(err, COMPASS_EUNSUPPORTED,
                               "gemini: input: at least one text is needed");
    if (r->n_inputs > GM_MAX_EMBED_INPUTS)
        return fail(err, COMPASS_EUNSUPPORTED,
                    "gemini: input: batchEmbedContents takes at most %d inputs, got %zu",
                    GM_MAX_EMBED_INPUTS, r->n_inputs);
    if (r->dimensions < 0)
        return compass_err_set(err, COMPASS_EUNSUPPORTED,
                               "gemini: dimensions: must be a positive integer");
    model = r->model;
    if (str_starts(model, "models/")) {
        model.ptr += 7;
        model.len -= 7;
    }
    if (!model_ok(model))
        return compass_err_set(err, COMPASS_EUNSUPPORTED,
                               "gemini: model: empty or has characters other than "
                               "[A-Za-z0-9._-]");

    name_cap = model.len + 8;
    model_name = h->req_alloc(req, name_cap);
    if (!model_name)
        return oom(err);
    snprintf(model_name, name_cap, "models/%.*s", (int)model.len, model.ptr);

    root = json_object_new_object();
    if (!root)
        return oom(err);
    if (build_embed_body(r, model_name, root)) {
        json_object_put(root);
        return oom(err);
    }
    body = json_object_to_json_string_ext(root,
                                          JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (!body) {
        json_object_put(root);
        return oom(err);
    }
    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    out->body = h->req_strdup(req, body, strlen(body));
    json_object_put(root);
    if (!out->body.ptr)
        return oom(err);

    url_cap = strlen(in->base) + strlen(in->api_version) + model.len + 64;
    url = h->req_alloc(req, url_cap);
    if (!url)
        return oom(err);
    snprintf(url, url_cap, "%s/%s/models/%.*s:batchEmbedContents", in->base, in->api_version,
             (int)model.len, model.ptr);
    out->url = compass_str_c(url);
    out->method = COMPASS_HTTP_POST;
    out->stream_format = COMPASS_STREAM_NONE;

    hdr = h->req_alloc(req, 2 * sizeof(*hdr));
    if (!hdr)
        return oom(err);
    hdr[nh].name = compass_str_c("content-type");
    hdr[nh].value = compass_str_c("application/json");
    nh++;
    if (in->api_key) {
        hdr[nh].name = compass_str_c("x-goog-api-key");
        hdr[nh].value = compass_str_c(in->api_key);
        nh++;
    }
    out->headers = hdr;
    out->n_headers = nh;

    /* parse_embed_response checks the count against the inputs and names the model */
    st = h->req_alloc(req, sizeof(*st));
    if (!st)
        return oom(err);
    memset(st, 0, sizeof(*st));
    st->n_inputs = r->n_inputs;
    if ((rc = req_dup(h, req, r->model, &st->model)) != 0)
        return oom(err);
    slot = h->req_data(req);
    if (slot)
        *slot = st;
    return COMPASS_OK;
}

/* Reads one ContentEmbedding's values into request-arena floats. */
static int read_embedding(const compass_host *h, compass_req *req, json_object *e,
                          compass_embedding *out)
{
    json_object *vals = jget(e, "values");
    size_t n, k;
    float *f;

    if (!vals || !json_object_is_type(vals, json_type_array))
        return COMPASS_EPARSE;
    n = json_object_array_length(vals);
    if (n == 0)
        return COMPASS_EPARSE;
    f = h->req_alloc(req, n * sizeof(*f));
    if (!f)
        return COMPASS_ENOMEM;
    for (k = 0; k < n; k++) {
        json_object *v = json_object_array_get_idx(vals, k);
        if (!v || !(json_object_is_type(v, json_type_double) ||
                    json_object_is_type(v, json_type_int)))
            return COMPASS_EPARSE;
        f[k] = (float)json_object_get_double(v);
    }
    out->values = f;
    out->n = n;
    return COMPASS_OK;
}

static int gm_parse_embed_response(void *vinst, compass_req *req, const compass_http_response *resp,
                                   compass_embed_response *out, compass_upstream_error *uerr,
                                   compass_err *err)
{
    gm_inst *in = vinst;
    const compass_host *h;
    json_object *root = NULL, *eo, *embs;
    const gm_embed_state *st;
    void **slot;
    size_t n, i;
    int rc;

    if (!in || !req || !resp || !out)
        return compass_err_set(err, COMPASS_EINVAL,
                               "gemini: parse_embed_response: NULL argument");
    h = in->h;
    if (resp->status != 0 && (resp->status < 200 || resp->status >= 300)) {
        if (uerr)
            gm_classify_error(vinst, req, resp, uerr);
        return fail(err, COMPASS_EUPSTREAM, "gemini: upstream answered HTTP %d", resp->status);
    }
    rc = jparse(resp->body, &root);
    if (rc == COMPASS_ENOMEM)
        return oom(err);
    if (rc || !root) {
        if (root)
            json_object_put(root);
        return compass_err_set(err, COMPASS_EPARSE,
                               "gemini: embeddings response body is not JSON");
    }
    if ((eo = error_object(root)) != NULL) {
        if (uerr)
            fill_uerr(uerr, eo, 0, resp->headers, resp->n_headers);
        json_object_put(root);
        return compass_err_set(err, COMPASS_EUPSTREAM, "gemini: upstream returned an error");
    }
    embs = jget(root, "embeddings");
    if (!embs || !json_object_is_type(embs, json_type_array) ||
        json_object_array_length(embs) == 0) {
        json_object_put(root);
        return compass_err_set(err, COMPASS_EPARSE,
                               "gemini: embeddings response has no embeddings array");
    }
    n = json_object_array_length(embs);
    slot = h->req_data(req);
    st = slot ? *slot : NULL;
    if (st && st->n_inputs != n) {
        json_object_put(root);
        return fail(err, COMPASS_EPARSE, "gemini: %zu embeddings came back for %zu inputs", n,
                    st->n_inputs);
    }
    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    out->data = h->req_alloc(req, n * sizeof(*out->data));
    if (!out->data) {
        json_object_put(root);
        return oom(err);
    }
    memset(out->data, 0, n * sizeof(*out->data));
    for (i = 0; i < n; i++) {
        rc = read_embedding(h, req, json_object_array_get_idx(embs, i), &out->data[i]);
        if (rc) {
            json_object_put(root);
            out->data = NULL;
            if (rc == COMPASS_ENOMEM)
                return oom(err);
            return fail(err, COMPASS_EPARSE,
                        "gemini: embeddings[%zu].values is not a non-empty array of numbers", i);
        }
    }
    json_object_put(root);
    out->n_data = n;
    /* batchEmbedContents reports no token usage: usage stays zero and the host estimates */
    if (st)
        out->model = st->model;
    return COMPASS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Descriptor                                                                                */
/* ---------------------------------------------------------------------------------------- */

static int gm_init(const compass_host *h, compass_err *err)
{
    if (!h || !COMPASS_HOST_HAS(h, req_data) || !COMPASS_HOST_HAS(h, stream_emit) ||
        !COMPASS_HOST_HAS(h, req_alloc) || !COMPASS_HOST_HAS(h, req_strdup))
        return compass_err_set(err, COMPASS_EPLUGIN,
                               "gemini: host lacks req_data/stream_emit/req_alloc services");
    return COMPASS_OK;
}

static const compass_provider_ops gm_ops = {
    .size = sizeof(compass_provider_ops),
    .instance_new = gm_instance_new,
    .instance_free = gm_instance_free,
    .build_request = gm_build_request,
    .parse_response = gm_parse_response,
    .parse_stream_event = gm_parse_stream_event,
    .classify_error = gm_classify_error,
    .local_call = NULL,
    .follow = NULL,
    .build_embed_request = gm_build_embed_request,
    .parse_embed_response = gm_parse_embed_response,
};

static const compass_plugin_desc gm_desc = {
    COMPASS_PLUGIN_DESC_INIT,
    .kind = COMPASS_PLUGIN_PROVIDER,
    .name = "gemini",
    .version = "0.1.0",
    .summary = "Google Gemini API (generateContent, streamGenerateContent?alt=sse, "
               "batchEmbedContents)",
    .options = gm_option_table,
    .options_size = sizeof(gm_options),
    .init = gm_init,
    .fini = NULL,
    .ops = {.provider = &gm_ops},
};

COMPASS_PLUGIN_DEFINE(gemini, gm_desc)
