/*
 * openai: the provider adapter for OpenAI's chat completions API and the many servers that
 * speak it (vLLM, Ollama, Groq, Together, Mistral, DeepSeek, OpenRouter, TGI...).
 *
 * Pure translation: the canonical request is already OpenAI-shaped, so build_request writes
 * it back out with the deployment's model and this upstream's quirks (paths, auth header,
 * stream_options, the max tokens field name), and the parsers read OpenAI's
 * chat.completion, chat.completion.chunk and error bodies. The host owns every socket.
 *
 * The wire code itself (body writer, parsers, error classifier) is openai_wire.c, shared with
 * the azure plugin; this file holds what is OpenAI's own: options, URLs and the descriptor.
 */
#include <compass/plugin.h>

#include <string.h>

#include "openai_wire.h"

#define OAI_DEFAULT_BASE_URL "https://api.openai.com/v1"

/* ---------------------------------------------------------------------------------------- */
/* Options and instance                                                                      */
/* ---------------------------------------------------------------------------------------- */

typedef struct oai_options {
    const char *chat_path;
    const char *embeddings_path;
    const char *auth_header;
    const char *auth_scheme;
    int stream_options;
    const char *organization;
    const char *extra_headers;
    const char *max_tokens_field;
} oai_options;

typedef struct oai_inst {
    oai_wire w;             /* auth, headers, body options; first, so the wire is the inst */
    char *chat_url;
    char *embeddings_url;   /* base_url + embeddings_path */
} oai_inst;

static void oai_instance_free(void *vinst)
{
    oai_inst *inst = vinst;
    const compass_host *h;
    if (!inst)
        return;
    h = inst->w.h;
    h->free(h, inst->chat_url);
    h->free(h, inst->embeddings_url);
    oai_wire_release(&inst->w);
    h->free(h, inst);
}

static int oai_instance_new(const compass_host *h, const compass_instance_info *info,
                            void **out, compass_err *err)
{
    static const oai_options defaults = {"/chat/completions", "/embeddings", "Authorization",
                                         "Bearer ", 1, NULL, NULL, NULL};
    const oai_options *o;
    const char *base, *chat_path, *emb_path, *auth_header, *scheme;
    size_t base_len;
    oai_inst *inst;
    int rc;

    if (!h || !info || !out)
        return compass_err_set(err, COMPASS_EINVAL, "openai: instance_new: NULL argument");
    *out = NULL;
    o = info->options ? (const oai_options *)info->options : &defaults;
    inst = h->alloc(h, sizeof(*inst));
    if (!inst)
        return compass_err_set(err, COMPASS_ENOMEM, "openai: out of memory");
    memset(inst, 0, sizeof(*inst));
    if ((rc = oai_wire_init(&inst->w, h, "openai", info->name, err)))
        goto fail;
    inst->w.stream_options = o->stream_options ? 1 : 0;

    base = info->base_url && info->base_url[0] ? info->base_url : OAI_DEFAULT_BASE_URL;
    if (strncmp(base, "http://", 7) && strncmp(base, "https://", 8)) {
        rc = oai_wire_err(err, COMPASS_ECONFIG,
                          "openai: deployment %s: base_url '%s' must start with http:// or "
                          "https://",
                          inst->w.name, base);
        goto fail;
    }
    base_len = strlen(base);
    while (base_len > 8 && base[base_len - 1] == '/')
        base_len--;

    chat_path = o->chat_path && o->chat_path[0] ? o->chat_path : defaults.chat_path;
    emb_path = o->embeddings_path && o->embeddings_path[0] ? o->embeddings_path
                                                           : defaults.embeddings_path;
    if (oai_wire_has_ctl(base, base_len) || oai_wire_has_ctl(chat_path, strlen(chat_path)) ||
        oai_wire_has_ctl(emb_path, strlen(emb_path))) {
        rc = oai_wire_err(err, COMPASS_ECONFIG,
                          "openai: deployment %s: base_url, chat_path or embeddings_path holds "
                          "a control character",
                          inst->w.name);
        goto fail;
    }
    inst->chat_url = oai_wire_join_url(h, base, base_len, chat_path);
    inst->embeddings_url = oai_wire_join_url(h, base, base_len, emb_path);
    if (!inst->chat_url || !inst->embeddings_url) {
        rc = compass_err_set(err, COMPASS_ENOMEM, "openai: out of memory");
        goto fail;
    }

    auth_header = o->auth_header ? o->auth_header : defaults.auth_header;
    scheme = o->auth_scheme ? o->auth_scheme : "";
    if ((rc = oai_wire_set_auth(&inst->w, auth_header, scheme, info->api_key, err)) ||
        (rc = oai_wire_set_organization(&inst->w, o->organization, err)) ||
        (rc = oai_wire_set_extra_headers(&inst->w, o->extra_headers, err)) ||
        (rc = oai_wire_set_max_tokens_field(&inst->w, o->max_tokens_field, err)))
        goto fail;

    h->log(h, COMPASS_LOG_INFO,
           "deployment %s: POST %s, auth %s%s%s, stream_options %s, %zu extra header(s)",
           inst->w.name, inst->chat_url, inst->w.auth_name ? "header " : "none",
           inst->w.auth_name ? inst->w.auth_name : "",
           inst->w.auth_name ? (scheme[0] ? " with scheme" : " (raw key)") : "",
           inst->w.stream_options ? "on" : "off", inst->w.n_extra);
    *out = inst;
    return COMPASS_OK;
fail:
    oai_instance_free(inst);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Ops: the wire code with this deployment's URLs                                             */
/* ---------------------------------------------------------------------------------------- */

static int oai_build_request(void *vinst, compass_req *req, const compass_chat_request *in,
                             compass_http_request *out, compass_err *err)
{
    oai_inst *inst = vinst;
    if (!inst)
        return compass_err_set(err, COMPASS_EINVAL, "openai: build_request: NULL argument");
    return oai_wire_build_chat(&inst->w, req, in, inst->chat_url, out, err);
}

static int oai_parse_response(void *vinst, compass_req *req, const compass_http_response *resp,
                              compass_chat_response *out, compass_upstream_error *uerr,
                              compass_err *err)
{
    oai_inst *inst = vinst;
    if (!inst)
        return compass_err_set(err, COMPASS_EINVAL, "openai: parse_response: NULL argument");
    return oai_wire_parse_response(&inst->w, req, resp, out, uerr, err);
}

static int oai_parse_stream_event(void *vinst, compass_req *req, const compass_stream_event *ev,
                                  compass_upstream_error *uerr, compass_err *err)
{
    oai_inst *inst = vinst;
    if (!inst)
        return compass_err_set(err, COMPASS_EINVAL, "openai: parse_stream_event: NULL argument");
    return oai_wire_parse_stream_event(&inst->w, req, ev, uerr, err);
}

static void oai_classify_error(void *vinst, compass_req *req, const compass_http_response *resp,
                               compass_upstream_error *u)
{
    oai_inst *inst = vinst;
    oai_wire_classify_error(inst ? &inst->w : NULL, req, resp, u);
}

static int oai_build_embed_request(void *vinst, compass_req *req,
                                   const compass_embed_request *in, compass_http_request *out,
                                   compass_err *err)
{
    oai_inst *inst = vinst;
    if (!inst)
        return compass_err_set(err, COMPASS_EINVAL, "openai: build_embed_request: NULL argument");
    return oai_wire_build_embed(&inst->w, req, in, inst->embeddings_url, out, err);
}

static int oai_parse_embed_response(void *vinst, compass_req *req,
                                    const compass_http_response *resp,
                                    compass_embed_response *out, compass_upstream_error *uerr,
                                    compass_err *err)
{
    oai_inst *inst = vinst;
    if (!inst)
        return compass_err_set(err, COMPASS_EINVAL, "openai: parse_embed_response: NULL argument");
    return oai_wire_parse_embed_response(&inst->w, req, resp, out, uerr, err);
}

/* ---------------------------------------------------------------------------------------- */
/* Descriptor                                                                                */
/* ---------------------------------------------------------------------------------------- */

static const compass_option oai_option_table[] = {
    {"chat_path", COMPASS_OPT_STRING, "/chat/completions", 0,
     offsetof(oai_options, chat_path),
     "path appended to base_url for chat completions (a full http(s) URL replaces it)"},
    {"embeddings_path", COMPASS_OPT_STRING, "/embeddings", 0,
     offsetof(oai_options, embeddings_path),
     "path appended to base_url for embeddings (a full http(s) URL replaces it)"},
    {"auth_header", COMPASS_OPT_STRING, "Authorization", 0, offsetof(oai_options, auth_header),
     "header that carries the api key (e.g. api-key, x-api-key); empty sends none"},
    {"auth_scheme", COMPASS_OPT_STRING, "Bearer ", 0, offsetof(oai_options, auth_scheme),
     "text before the key in the auth header; empty sends the raw key"},
    {"stream_options", COMPASS_OPT_BOOL, "true", 0, offsetof(oai_options, stream_options),
     "send stream_options.include_usage when streaming; turn off for servers that reject it"},
    {"organization", COMPASS_OPT_STRING, NULL, 0, offsetof(oai_options, organization),
     "OpenAI organization id, sent as OpenAI-Organization"},
    {"extra_headers", COMPASS_OPT_STRING, NULL, 0, offsetof(oai_options, extra_headers),
     "more headers for every request: \"Name: value; Name2: value2\""},
    {"max_tokens_field", COMPASS_OPT_STRING, NULL, 0, offsetof(oai_options, max_tokens_field),
     "send the output cap as max_tokens or max_completion_tokens; unset keeps the client's"},
    {NULL, 0, NULL, 0, 0, NULL}};

static const compass_provider_ops oai_ops = {
    .size = sizeof(compass_provider_ops),
    .instance_new = oai_instance_new,
    .instance_free = oai_instance_free,
    .build_request = oai_build_request,
    .parse_response = oai_parse_response,
    .parse_stream_event = oai_parse_stream_event,
    .classify_error = oai_classify_error,
    .local_call = NULL,
    .build_embed_request = oai_build_embed_request,
    .parse_embed_response = oai_parse_embed_response,
};

static const compass_plugin_desc oai_desc = {
    COMPASS_PLUGIN_DESC_INIT,
    .kind = COMPASS_PLUGIN_PROVIDER,
    .name = "openai",
    .version = "1.0.0",
    .summary = "OpenAI chat completions and compatible servers (vLLM, Ollama, Groq, Together, "
               "Mistral, DeepSeek, OpenRouter, TGI)",
    .options = oai_option_table,
    .options_size = sizeof(oai_options),
    .init = NULL,
    .fini = NULL,
    .ops = {.provider = &oai_ops},
};

COMPASS_PLUGIN_DEFINE(openai, oai_desc)
