/*
 * azure: the provider adapter for Azure OpenAI (the "data plane - inference" REST API).
 *
 * Azure speaks OpenAI's chat completions and embeddings formats; what differs is the URL
 * (the model is chosen by a deployment in the path, the API by an api-version query
 * parameter), the auth header (api-key, or an Entra ID bearer token) and a few error shapes
 * (content filter detail under innererror, "retry after N seconds" messages). So this file
 * holds only those; the body writer, parsers and classifier are openai_wire.c, compiled into
 * this plugin and the openai plugin alike.
 *
 *   POST {base_url}/openai/deployments/{deployment}/chat/completions?api-version={v}
 *   POST {base_url}/openai/deployments/{deployment}/embeddings?api-version={v}
 */
#include <compass/plugin.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "openai_wire.h"

#define AZ_DEFAULT_API_VERSION "2024-10-21" /* latest GA of the inference API */
#define AZ_MAX_MAP 64

/* ---------------------------------------------------------------------------------------- */
/* Options and instance                                                                      */
/* ---------------------------------------------------------------------------------------- */

typedef struct az_options {
    const char *api_version;
    const char *deployments;
    const char *auth;
    int stream_options;
    const char *max_tokens_field;
    const char *extra_headers;
} az_options;

typedef struct az_map {
    compass_str model;      /* NUL-terminated, in map_buf */
    compass_str deployment; /* NUL-terminated, in map_buf */
} az_map;

typedef struct az_inst {
    oai_wire w;             /* auth, headers, body options */
    char *base;             /* base_url without trailing '/' or '/openai' */
    char *api_version;
    char *map_buf;          /* backing store of map[] */
    az_map map[AZ_MAX_MAP];
    size_t n_map;
} az_inst;

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static compass_str trim(char *p, size_t n)
{
    compass_str r;
    while (n && is_space(*p)) {
        p++;
        n--;
    }
    while (n && is_space(p[n - 1]))
        n--;
    r.ptr = p;
    r.len = n;
    return r;
}

/* RFC 3986 unreserved: kept as is in a path segment or query value. */
static int is_unreserved(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

static size_t pct_len(compass_str s)
{
    size_t i, n = 0;
    for (i = 0; i < s.len; i++)
        n += is_unreserved(s.ptr[i]) ? 1 : 3;
    return n;
}

static char *pct_put(char *d, compass_str s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i;
    for (i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (is_unreserved((char)c)) {
            *d++ = (char)c;
        } else {
            *d++ = '%';
            *d++ = hex[c >> 4];
            *d++ = hex[c & 15];
        }
    }
    return d;
}

static void az_instance_free(void *vinst)
{
    az_inst *inst = vinst;
    const compass_host *h;
    if (!inst)
        return;
    h = inst->w.h;
    h->free(h, inst->base);
    h->free(h, inst->api_version);
    h->free(h, inst->map_buf);
    oai_wire_release(&inst->w);
    h->free(h, inst);
}

/* Parses "model=deployment; model2=deployment2" (';' or ',' between entries). */
static int parse_deployments(az_inst *inst, const char *spec, compass_err *err)
{
    const compass_host *h = inst->w.h;
    size_t n, i = 0;
    char *buf;
    if (!spec || !spec[0])
        return COMPASS_OK;
    n = strlen(spec);
    buf = oai_wire_strndup(h, spec, n);
    if (!buf)
        return compass_err_set(err, COMPASS_ENOMEM, "azure: out of memory");
    inst->map_buf = buf;
    while (i < n) {
        size_t start = i, end, eq, k;
        compass_str model, dep;
        while (i < n && buf[i] != ';' && buf[i] != ',')
            i++;
        end = i++;
        if (!trim(buf + start, end - start).len)
            continue;
        for (eq = start; eq < end && buf[eq] != '='; eq++)
            ;
        model = trim(buf + start, eq - start);
        dep = eq < end ? trim(buf + eq + 1, end - eq - 1) : trim(buf + end, 0);
        if (eq == end || !model.len || !dep.len || oai_wire_has_ctl(model.ptr, model.len))
            return oai_wire_err(err, COMPASS_ECONFIG,
                                "azure: deployment %s: deployments: '%.*s' is not "
                                "'model=deployment'",
                                inst->w.name, (int)(end - start), buf + start);
        for (k = 0; k < dep.len; k++)
            if (!is_unreserved(dep.ptr[k]))
                return oai_wire_err(err, COMPASS_ECONFIG,
                                    "azure: deployment %s: deployments: Azure deployment name "
                                    "'%.*s' may hold only letters, digits, '-', '_' and '.'",
                                    inst->w.name, (int)dep.len, dep.ptr);
        for (k = 0; k < inst->n_map; k++)
            if (inst->map[k].model.len == model.len &&
                !memcmp(inst->map[k].model.ptr, model.ptr, model.len))
                return oai_wire_err(err, COMPASS_ECONFIG,
                                    "azure: deployment %s: deployments: model '%.*s' is mapped "
                                    "twice",
                                    inst->w.name, (int)model.len, model.ptr);
        if (inst->n_map == AZ_MAX_MAP)
            return oai_wire_err(err, COMPASS_ECONFIG,
                                "azure: deployment %s: deployments: more than %d entries",
                                inst->w.name, AZ_MAX_MAP);
        ((char *)model.ptr)[model.len] = '\0';
        ((char *)dep.ptr)[dep.len] = '\0';
        inst->map[inst->n_map].model = model;
        inst->map[inst->n_map].deployment = dep;
        inst->n_map++;
    }
    return COMPASS_OK;
}

static int az_instance_new(const compass_host *h, const compass_instance_info *info,
                           void **out, compass_err *err)
{
    static const az_options defaults = {AZ_DEFAULT_API_VERSION, NULL, "api-key", 1, NULL, NULL};
    const az_options *o;
    const char *base, *ver, *auth;
    size_t base_len, k;
    az_inst *inst;
    int rc;

    if (!h || !info || !out)
        return compass_err_set(err, COMPASS_EINVAL, "azure: instance_new: NULL argument");
    *out = NULL;
    o = info->options ? (const az_options *)info->options : &defaults;
    inst = h->alloc(h, sizeof(*inst));
    if (!inst)
        return compass_err_set(err, COMPASS_ENOMEM, "azure: out of memory");
    memset(inst, 0, sizeof(*inst));
    if ((rc = oai_wire_init(&inst->w, h, "azure", info->name, err)))
        goto fail;
    inst->w.stream_options = o->stream_options ? 1 : 0;

    base = info->base_url;
    if (!base || !base[0]) {
        rc = oai_wire_err(err, COMPASS_ECONFIG,
                          "azure: deployment %s: base_url is required: your resource's "
                          "endpoint, https://<resource>.openai.azure.com",
                          inst->w.name);
        goto fail;
    }
    if (strncmp(base, "http://", 7) && strncmp(base, "https://", 8)) {
        rc = oai_wire_err(err, COMPASS_ECONFIG,
                          "azure: deployment %s: base_url '%s' must start with http:// or "
                          "https://",
                          inst->w.name, base);
        goto fail;
    }
    base_len = strlen(base);
    if (oai_wire_has_ctl(base, base_len) || memchr(base, '?', base_len) ||
        memchr(base, ' ', base_len)) {
        rc = oai_wire_err(err, COMPASS_ECONFIG,
                          "azure: deployment %s: base_url holds a space, a control character "
                          "or a query string",
                          inst->w.name);
        goto fail;
    }
    /* the endpoint as the portal shows it; also accept one pasted with "/openai" */
    for (;;) {
        while (base_len > 8 && base[base_len - 1] == '/')
            base_len--;
        if (base_len > 15 && !memcmp(base + base_len - 7, "/openai", 7))
            base_len -= 7;
        else
            break;
    }
    inst->base = oai_wire_strndup(h, base, base_len);
    if (!inst->base) {
        rc = compass_err_set(err, COMPASS_ENOMEM, "azure: out of memory");
        goto fail;
    }

    ver = o->api_version && o->api_version[0] ? o->api_version : AZ_DEFAULT_API_VERSION;
    for (k = 0; ver[k]; k++)
        if (!is_unreserved(ver[k]))
            break;
    if (ver[k]) {
        rc = oai_wire_err(err, COMPASS_ECONFIG,
                          "azure: deployment %s: api_version '%s' is not a version such as "
                          "\"%s\" or \"2025-04-01-preview\"",
                          inst->w.name, ver, AZ_DEFAULT_API_VERSION);
        goto fail;
    }
    inst->api_version = oai_wire_strndup(h, ver, strlen(ver));
    if (!inst->api_version) {
        rc = compass_err_set(err, COMPASS_ENOMEM, "azure: out of memory");
        goto fail;
    }

    auth = o->auth && o->auth[0] ? o->auth : "api-key";
    if (!strcmp(auth, "api-key"))
        rc = oai_wire_set_auth(&inst->w, "api-key", "", info->api_key, err);
    else if (!strcmp(auth, "bearer"))
        rc = oai_wire_set_auth(&inst->w, "Authorization", "Bearer ", info->api_key, err);
    else
        rc = oai_wire_err(err, COMPASS_ECONFIG,
                          "azure: deployment %s: auth '%s' is not \"api-key\" or \"bearer\" "
                          "(an Entra ID token)",
                          inst->w.name, auth);
    if (rc ||
        (rc = oai_wire_set_extra_headers(&inst->w, o->extra_headers, err)) ||
        (rc = oai_wire_set_max_tokens_field(&inst->w, o->max_tokens_field, err)) ||
        (rc = parse_deployments(inst, o->deployments, err)))
        goto fail;

    h->log(h, COMPASS_LOG_INFO,
           "deployment %s: POST %s/openai/deployments/{deployment}/chat/completions"
           "?api-version=%s, auth %s, %zu model mapping(s), stream_options %s",
           inst->w.name, inst->base, inst->api_version,
           inst->w.auth_name ? auth : "none (no api_key_env)", inst->n_map,
           inst->w.stream_options ? "on" : "off");
    *out = inst;
    return COMPASS_OK;
fail:
    az_instance_free(inst);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* URLs                                                                                      */
/* ---------------------------------------------------------------------------------------- */

/* The Azure deployment that serves model: its mapping, else the model's own name. */
static compass_str deployment_for(const az_inst *inst, compass_str model)
{
    size_t i;
    for (i = 0; i < inst->n_map; i++)
        if (inst->map[i].model.len == model.len &&
            !memcmp(inst->map[i].model.ptr, model.ptr, model.len))
            return inst->map[i].deployment;
    return model;
}

/* {base}/openai/deployments/{deployment}/{op}?api-version={v}, in the request arena. */
static int make_url(const az_inst *inst, compass_req *req, compass_str model, const char *op,
                    char **out, compass_err *err)
{
    static const char dpath[] = "/openai/deployments/", q[] = "?api-version=";
    const compass_host *h = inst->w.h;
    compass_str dep = deployment_for(inst, model);
    size_t bl = strlen(inst->base), ol = strlen(op), vl = strlen(inst->api_version);
    size_t n = bl + sizeof(dpath) - 1 + pct_len(dep) + 1 + ol + sizeof(q) - 1 + vl;
    char *url, *d;
    if (!dep.len)
        return oai_wire_err(err, COMPASS_EINVAL, "azure: deployment %s: request has no model",
                            inst->w.name);
    url = h->req_alloc(req, n + 1);
    if (!url)
        return compass_err_set(err, COMPASS_ENOMEM, "azure: out of memory");
    d = url;
    memcpy(d, inst->base, bl);
    d += bl;
    memcpy(d, dpath, sizeof(dpath) - 1);
    d += sizeof(dpath) - 1;
    d = pct_put(d, dep);
    *d++ = '/';
    memcpy(d, op, ol);
    d += ol;
    memcpy(d, q, sizeof(q) - 1);
    d += sizeof(q) - 1;
    memcpy(d, inst->api_version, vl);
    d += vl;
    *d = '\0';
    *out = url;
    return COMPASS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Errors: OpenAI's shapes plus Azure's content filter detail and retry messages              */
/* ---------------------------------------------------------------------------------------- */

static void append_msg(compass_upstream_error *u, const char *s, size_t n)
{
    size_t ml = strlen(u->message);
    if (ml + n + 1 > sizeof(u->message))
        return;
    memcpy(u->message + ml, s, n);
    u->message[ml + n] = '\0';
}

/* Names the filtered categories of a content_filter_result ({"hate":{"filtered":true,
 * "severity":"medium"},...}) into the message. Returns how many were filtered. */
static int note_filtered(compass_upstream_error *u, json_object *cfr)
{
    int n = 0;
    if (!cfr || !json_object_is_type(cfr, json_type_object))
        return 0;
    json_object_object_foreach(cfr, cat, v)
    {
        json_object *f = oai_wire_jget(v, "filtered");
        compass_str sev = oai_wire_jstr(v, "severity");
        if (!f || !json_object_get_boolean(f))
            continue;
        append_msg(u, n ? ", " : " (filtered: ", n ? 2 : 12);
        append_msg(u, cat, strlen(cat));
        if (sev.len) {
            append_msg(u, "/", 1);
            append_msg(u, sev.ptr, sev.len);
        }
        n++;
    }
    if (n)
        append_msg(u, ")", 1);
    return n;
}

/* "Please retry after 6 seconds." / "Try again in 86400 seconds." -> ms; -1 when absent. */
static int64_t retry_from_message(const char *m)
{
    static const char *const leads[] = {"retry after ", "try again in ", NULL};
    size_t i, k, ml = strlen(m);
    for (k = 0; leads[k]; k++) {
        size_t ll = strlen(leads[k]);
        for (i = 0; i + ll <= ml; i++) {
            size_t j;
            int64_t v = 0;
            if (strncasecmp(m + i, leads[k], ll))
                continue;
            j = i + ll;
            if (j >= ml || m[j] < '0' || m[j] > '9')
                continue;
            while (j < ml && m[j] >= '0' && m[j] <= '9' && v < 100000000)
                v = v * 10 + (m[j++] - '0');
            while (j < ml && m[j] == ' ')
                j++;
            if (!strncasecmp(m + j, "second", 6))
                return v * 1000;
            if (!strncasecmp(m + j, "millisecond", 11) || !strncasecmp(m + j, "ms", 2))
                return v;
            return oai_wire_parse_duration(m + i + ll, ml - i - ll);
        }
    }
    return -1;
}

static void az_classify_error(void *vinst, compass_req *req, const compass_http_response *resp,
                              compass_upstream_error *u)
{
    az_inst *inst = vinst;
    json_object *root = NULL, *e, *inner;
    char why[64];
    if (!u)
        return;
    oai_wire_classify_error(inst ? &inst->w : NULL, req, resp, u);
    if (!resp)
        return;
    if (u->retry_after_ms < 0 && u->message[0])
        u->retry_after_ms = retry_from_message(u->message);
    if (resp->body.len)
        root = oai_wire_parse_json(resp->body.ptr, resp->body.len, why, sizeof(why));
    e = oai_wire_jget(root, "error");
    inner = oai_wire_jget(e, "innererror");
    if (inner && resp->status < 500) {
        int filtered = note_filtered(u, oai_wire_jget(inner, "content_filter_result"));
        if (filtered || compass_str_eq(oai_wire_jstr(inner, "code"),
                                       "ResponsibleAIPolicyViolation")) {
            u->outcome = COMPASS_OUTCOME_CONTENT_FILTER;
            if (!u->code[0])
                snprintf(u->code, sizeof(u->code), "%s", "content_filter");
            if (inst)
                inst->w.h->log(inst->w.h, COMPASS_LOG_INFO,
                               "deployment %s: Azure content filter refused the request: %.200s",
                               inst->w.name, u->message);
        }
    }
    json_object_put(root);
}

/* ---------------------------------------------------------------------------------------- */
/* Ops                                                                                       */
/* ---------------------------------------------------------------------------------------- */

static int az_build_request(void *vinst, compass_req *req, const compass_chat_request *in,
                            compass_http_request *out, compass_err *err)
{
    az_inst *inst = vinst;
    char *url;
    int rc;
    if (!inst || !req || !in || !out)
        return compass_err_set(err, COMPASS_EINVAL, "azure: build_request: NULL argument");
    if ((rc = make_url(inst, req, in->model, "chat/completions", &url, err)))
        return rc;
    return oai_wire_build_chat(&inst->w, req, in, url, out, err);
}

static int az_parse_response(void *vinst, compass_req *req, const compass_http_response *resp,
                             compass_chat_response *out, compass_upstream_error *uerr,
                             compass_err *err)
{
    az_inst *inst = vinst;
    if (!inst)
        return compass_err_set(err, COMPASS_EINVAL, "azure: parse_response: NULL argument");
    return oai_wire_parse_response(&inst->w, req, resp, out, uerr, err);
}

static int az_parse_stream_event(void *vinst, compass_req *req, const compass_stream_event *ev,
                                 compass_upstream_error *uerr, compass_err *err)
{
    az_inst *inst = vinst;
    if (!inst)
        return compass_err_set(err, COMPASS_EINVAL, "azure: parse_stream_event: NULL argument");
    return oai_wire_parse_stream_event(&inst->w, req, ev, uerr, err);
}

static int az_build_embed_request(void *vinst, compass_req *req, const compass_embed_request *in,
                                  compass_http_request *out, compass_err *err)
{
    az_inst *inst = vinst;
    char *url;
    int rc;
    if (!inst || !req || !in || !out)
        return compass_err_set(err, COMPASS_EINVAL, "azure: build_embed_request: NULL argument");
    if ((rc = make_url(inst, req, in->model, "embeddings", &url, err)))
        return rc;
    return oai_wire_build_embed(&inst->w, req, in, url, out, err);
}

static int az_parse_embed_response(void *vinst, compass_req *req,
                                   const compass_http_response *resp,
                                   compass_embed_response *out, compass_upstream_error *uerr,
                                   compass_err *err)
{
    az_inst *inst = vinst;
    if (!inst || !resp || !out)
        return compass_err_set(err, COMPASS_EINVAL, "azure: parse_embed_response: NULL argument");
    return oai_wire_parse_embed_response(&inst->w, req, resp, out, uerr, err);
}

/* ---------------------------------------------------------------------------------------- */
/* Descriptor                                                                                */
/* ---------------------------------------------------------------------------------------- */

static const compass_option az_option_table[] = {
    {"api_version", COMPASS_OPT_STRING, AZ_DEFAULT_API_VERSION, 0,
     offsetof(az_options, api_version),
     "the api-version query parameter (a GA date such as 2024-10-21, or a -preview)"},
    {"deployments", COMPASS_OPT_STRING, NULL, 0, offsetof(az_options, deployments),
     "model to Azure deployment name: \"gpt-4o=my-gpt4o; gpt-4o-mini=mini\"; a model without "
     "an entry is sent to the deployment of its own name"},
    {"auth", COMPASS_OPT_STRING, "api-key", 0, offsetof(az_options, auth),
     "\"api-key\": the key in an api-key header; \"bearer\": an Entra ID token as "
     "Authorization: Bearer"},
    {"stream_options", COMPASS_OPT_BOOL, "true", 0, offsetof(az_options, stream_options),
     "send stream_options.include_usage when streaming (api-version 2024-09-01-preview or "
     "later); turn off for older versions"},
    {"max_tokens_field", COMPASS_OPT_STRING, NULL, 0, offsetof(az_options, max_tokens_field),
     "send the output cap as max_tokens or max_completion_tokens; unset keeps the client's"},
    {"extra_headers", COMPASS_OPT_STRING, NULL, 0, offsetof(az_options, extra_headers),
     "more headers for every request: \"Name: value; Name2: value2\""},
    {NULL, 0, NULL, 0, 0, NULL}};

static const compass_provider_ops az_ops = {
    .size = sizeof(compass_provider_ops),
    .instance_new = az_instance_new,
    .instance_free = az_instance_free,
    .build_request = az_build_request,
    .parse_response = az_parse_response,
    .parse_stream_event = az_parse_stream_event,
    .classify_error = az_classify_error,
    .local_call = NULL,
    .build_embed_request = az_build_embed_request,
    .parse_embed_response = az_parse_embed_response,
};

static const compass_plugin_desc az_desc = {
    COMPASS_PLUGIN_DESC_INIT,
    .kind = COMPASS_PLUGIN_PROVIDER,
    .name = "azure",
    .version = "1.0.0",
    .summary = "Azure OpenAI chat completions and embeddings (deployments, api-version, "
               "api-key or Entra ID auth)",
    .options = az_option_table,
    .options_size = sizeof(az_options),
    .init = NULL,
    .fini = NULL,
    .ops = {.provider = &az_ops},
};

COMPASS_PLUGIN_DEFINE(azure, az_desc)
