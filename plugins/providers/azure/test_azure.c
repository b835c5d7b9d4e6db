/* Unit tests of the azure provider on the fake host, on Azure OpenAI wire bytes (URLs, headers,
 * error bodies and streams as Microsoft's REST reference documents them). */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "compass_fakehost.h"
#include "openai_wire.h"

#include "../common/stream_diff.h"

static compass_fakehost *fh;
static const compass_plugin_desc *desc;
static const compass_provider_ops *ops;

static void setup(void)
{
    compass_err err;
    memset(&err, 0, sizeof(err));
    fh = compass_fakehost_new("azure");
    cr_assert_not_null(fh);
    desc = compass_fakehost_load(fh, COMPASS_PLUGIN_DIR "/azure.so", &err);
    cr_assert_not_null(desc, "load: %s", err.msg);
    ops = desc->ops.provider;
}

static void teardown(void)
{
    compass_fakehost_free(fh);
}

TestSuite(azure, .init = setup, .fini = teardown);

/* ---------------------------------------------------------------------------------------- */
/* helpers                                                                                   */
/* ---------------------------------------------------------------------------------------- */

#define ENDPOINT "https://contoso-eastus.openai.azure.com"

static void *mkinst(const char *base_url, const char *key, const char *const *opts)
{
    compass_err err;
    void *inst;
    memset(&err, 0, sizeof(err));
    inst = compass_fakehost_instance(fh, "az1", base_url, key, opts, &err);
    cr_assert_not_null(inst, "instance: %s", err.msg);
    return inst;
}

static int mkinst_fails(const char *base_url, const char *const *opts, compass_err *err)
{
    memset(err, 0, sizeof(*err));
    cr_assert_null(compass_fakehost_instance(fh, "az1", base_url, "k", opts, err));
    return err->code;
}

static json_object *build(void *inst, const char *req_json, compass_http_request *out)
{
    compass_chat_request in;
    compass_err err;
    compass_req *req = compass_fakehost_req(fh);
    json_object *body;
    int rc;
    memset(&in, 0, sizeof(in));
    memset(&err, 0, sizeof(err));
    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    rc = compass_fakehost_parse_chat(fh, req_json, &in, &err);
    cr_assert_eq(rc, 0, "parse_chat: %s", err.msg);
    rc = ops->build_request(inst, req, &in, out, &err);
    cr_assert_eq(rc, 0, "build_request: %d %s", rc, err.msg);
    cr_assert_eq(out->body.ptr[out->body.len], '\0');
    cr_assert_eq(out->url.ptr[out->url.len], '\0');
    body = json_tokener_parse(out->body.ptr);
    cr_assert_not_null(body, "body is not JSON: %s", out->body.ptr);
    return body;
}

static const char *pstr(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static const char *hdr(const compass_http_request *r, const char *name)
{
    compass_str v = compass_header_get(r->headers, r->n_headers, name);
    return v.ptr;
}

static compass_header H(const char *n, const char *v)
{
    compass_header h;
    h.name = compass_str_c(n);
    h.value = compass_str_c(v);
    return h;
}

static void classify(void *inst, int status, const char *body, const compass_header *hs,
                     size_t n_hs, compass_upstream_error *u)
{
    compass_http_response r = compass_fakehost_http(status, body);
    r.headers = hs;
    r.n_headers = n_hs;
    memset(u, 0x5a, sizeof(*u));
    ops->classify_error(inst, compass_fakehost_req(fh), &r, u);
    cr_assert_eq(u->http_status, status);
}

static const char *CHAT = "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"system\",\"content\":"
                          "\"You are a helpful assistant.\"},{\"role\":\"user\",\"content\":"
                          "\"Does Azure OpenAI support customer managed keys?\"}]}";

/* ---------------------------------------------------------------------------------------- */
/* URLs, query, auth                                                                         */
/* ---------------------------------------------------------------------------------------- */

Test(azure, chat_url_deployment_and_api_version)
{
    static const char *const opts[] = {"deployments=gpt-4o=my-gpt4o-prod; gpt-4o-mini=mini-dep",
                                       NULL};
    compass_http_request out;
    void *inst = mkinst(ENDPOINT, "azkey123", opts);
    json_object *b = build(inst, CHAT, &out);
    cr_assert_eq(out.method, COMPASS_HTTP_POST);
    cr_assert_str_eq(out.url.ptr, ENDPOINT "/openai/deployments/my-gpt4o-prod/chat/completions"
                                           "?api-version=2024-10-21");
    cr_assert_str_eq(pstr(b, "model"), "gpt-4o"); /* Azure ignores it, but it is sent */
    cr_assert_str_eq(hdr(&out, "api-key"), "azkey123");
    cr_assert_null(hdr(&out, "Authorization"));
    cr_assert_str_eq(hdr(&out, "Content-Type"), "application/json");
    cr_assert_eq(out.stream_format, COMPASS_STREAM_NONE);
    json_object_put(b);

    b = build(inst,
              "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
              &out);
    cr_assert_str_eq(out.url.ptr, ENDPOINT "/openai/deployments/mini-dep/chat/completions"
                                           "?api-version=2024-10-21");
    json_object_put(b);
}

Test(azure, unmapped_model_uses_its_own_name_encoded)
{
    static const char *const opts[] = {"deployments=gpt-4o=prod", NULL};
    compass_http_request out;
    void *inst = mkinst(ENDPOINT, "k", opts);
    json_object *b = build(
        inst, "{\"model\":\"gpt-35-turbo\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
        &out);
    cr_assert_str_eq(out.url.ptr, ENDPOINT "/openai/deployments/gpt-35-turbo/chat/completions"
                                           "?api-version=2024-10-21");
    json_object_put(b);
    /* a model name that is not a valid path segment is percent-encoded, never spliced */
    b = build(inst,
              "{\"model\":\"org/model x?\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
              &out);
    cr_assert_str_eq(out.url.ptr, ENDPOINT "/openai/deployments/org%2Fmodel%20x%3F/"
                                           "chat/completions?api-version=2024-10-21");
    json_object_put(b);
}

Test(azure, api_version_option_and_base_url_forms)
{
    static const char *const opts[] = {"api_version=2025-04-01-preview", NULL};
    static const char *const bases[] = {ENDPOINT, ENDPOINT "/", ENDPOINT "/openai",
                                        ENDPOINT "/openai/"};
    size_t i;
    for (i = 0; i < 4; i++) {
        compass_http_request out;
        void *inst = mkinst(bases[i], "k", opts);
        json_object *b = build(inst, CHAT, &out);
        cr_assert_str_eq(out.url.ptr, ENDPOINT "/openai/deployments/gpt-4o/chat/completions"
                                               "?api-version=2025-04-01-preview",
                         "base %s", bases[i]);
        json_object_put(b);
    }
}

Test(azure, bearer_auth_sends_entra_token)
{
    static const char *const opts[] = {"auth=bearer", NULL};
    compass_http_request out;
    void *inst = mkinst(ENDPOINT, "eyJ0eXAiOiJKV1Qi.entra.token", opts);
    json_object *b = build(inst, CHAT, &out);
    cr_assert_str_eq(hdr(&out, "Authorization"), "Bearer eyJ0eXAiOiJKV1Qi.entra.token");
    cr_assert_null(hdr(&out, "api-key"));
    json_object_put(b);
}

Test(azure, no_key_sends_no_auth_header)
{
    compass_http_request out;
    void *inst = mkinst(ENDPOINT, NULL, NULL);
    json_object *b = build(inst, CHAT, &out);
    cr_assert_null(hdr(&out, "api-key"));
    cr_assert_null(hdr(&out, "Authorization"));
    cr_assert_eq(out.n_headers, 1);
    json_object_put(b);
}

Test(azure, stream_request_asks_for_usage)
{
    compass_http_request out;
    void *inst = mkinst(ENDPOINT, "k", NULL);
    json_object *b = build(inst,
                           "{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[{\"role\":"
                           "\"user\",\"content\":\"hi\"}]}",
                           &out);
    json_object *so = NULL, *iu = NULL;
    cr_assert_eq(out.stream_format, COMPASS_STREAM_SSE);
    cr_assert(json_object_object_get_ex(b, "stream_options", &so));
    cr_assert(json_object_object_get_ex(so, "include_usage", &iu));
    cr_assert(json_object_get_boolean(iu));
    json_object_put(b);
}

Test(azure, instance_refuses_bad_config)
{
    compass_err err;
    static const char *const bad_auth[] = {"auth=basic", NULL};
    static const char *const bad_map[] = {"deployments=gpt-4o", NULL};
    static const char *const bad_dep[] = {"deployments=gpt-4o=my dep", NULL};
    static const char *const dup_map[] = {"deployments=a=x; a=y", NULL};
    static const char *const bad_ver[] = {"api_version=2024-10-21&x=1", NULL};

    cr_assert_eq(mkinst_fails(NULL, NULL, &err), COMPASS_ECONFIG);
    cr_assert(strstr(err.msg, "base_url is required"), "%s", err.msg);
    cr_assert_eq(mkinst_fails("contoso.openai.azure.com", NULL, &err), COMPASS_ECONFIG);
    cr_assert(strstr(err.msg, "base_url"), "%s", err.msg);
    cr_assert_eq(mkinst_fails(ENDPOINT "?x=1", NULL, &err), COMPASS_ECONFIG);
    cr_assert_eq(mkinst_fails(ENDPOINT, bad_auth, &err), COMPASS_ECONFIG);
    cr_assert(strstr(err.msg, "auth 'basic'"), "%s", err.msg);
    cr_assert_eq(mkinst_fails(ENDPOINT, bad_map, &err), COMPASS_ECONFIG);
    cr_assert(strstr(err.msg, "model=deployment"), "%s", err.msg);
    cr_assert_eq(mkinst_fails(ENDPOINT, bad_dep, &err), COMPASS_ECONFIG);
    cr_assert(strstr(err.msg, "deployment name"), "%s", err.msg);
    cr_assert_eq(mkinst_fails(ENDPOINT, dup_map, &err), COMPASS_ECONFIG);
    cr_assert(strstr(err.msg, "twice"), "%s", err.msg);
    cr_assert_eq(mkinst_fails(ENDPOINT, bad_ver, &err), COMPASS_ECONFIG);
    cr_assert(strstr(err.msg, "api_version"), "%s", err.msg);
    cr_assert(strstr(err.msg, "az1"), "names the deployment: %s", err.msg);
}

Test(azure, logs_never_hold_the_key)
{
    compass_http_request out;
    compass_upstream_error u;
    void *inst = mkinst(ENDPOINT, "azsupersecret", NULL);
    json_object *b = build(inst, CHAT, &out);
    json_object_put(b);
    classify(inst, 401,
             "{\"error\":{\"code\":\"401\",\"message\":\"Access denied due to invalid "
             "subscription key or wrong API endpoint. Make sure to provide a valid key for an "
             "active subscription and use a correct regional API endpoint for your "
             "resource.\"}}",
             NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_AUTH);
    cr_assert(strstr(u.message, "Access denied"));
    cr_assert_not_null(strstr(compass_fakehost_log(fh), "az1"));
    cr_assert_null(strstr(compass_fakehost_log(fh), "azsupersecret"), "%s",
                   compass_fakehost_log(fh));
    cr_assert_not_null(strstr(compass_fakehost_log(fh), "?api-version=2024-10-21, auth api-key"),
                       "%s", compass_fakehost_log(fh));
}

/* ---------------------------------------------------------------------------------------- */
/* Responses and streams                                                                     */
/* ---------------------------------------------------------------------------------------- */

static const char *AZ_RESP =
    "{\"choices\":[{\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":"
    "\"safe\"},\"self_harm\":{\"filtered\":false,\"severity\":\"safe\"},\"sexual\":{\"filtered\":"
    "false,\"severity\":\"safe\"},\"violence\":{\"filtered\":false,\"severity\":\"safe\"}},"
    "\"finish_reason\":\"stop\",\"index\":0,\"logprobs\":null,\"message\":{\"content\":\"Yes, "
    "customer managed keys are supported by Azure OpenAI.\",\"refusal\":null,\"role\":"
    "\"assistant\"}}],\"created\":1732036488,\"id\":\"chatcmpl-AVNJa1rMbsa6Tx4BHhQqXwzBMWh2f\","
    "\"model\":\"gpt-4o-2024-08-06\",\"object\":\"chat.completion\",\"prompt_filter_results\":"
    "[{\"prompt_index\":0,\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":"
    "\"safe\"},\"jailbreak\":{\"filtered\":false,\"detected\":false}}}],\"system_fingerprint\":"
    "\"fp_04751d0b65\",\"usage\":{\"completion_tokens\":12,\"prompt_tokens\":29,\"total_tokens\":"
    "41,\"prompt_tokens_details\":{\"cached_tokens\":0}}}";

Test(azure, parse_response_with_filter_results)
{
    compass_chat_response out;
    compass_upstream_error u;
    compass_err err;
    compass_http_response r = compass_fakehost_http(200, AZ_RESP);
    void *inst = mkinst(ENDPOINT, "k", NULL);
    memset(&out, 0, sizeof(out));
    out.size = sizeof(out);
    memset(&err, 0, sizeof(err));
    cr_assert_eq(ops->parse_response(inst, compass_fakehost_req(fh), &r, &out, &u, &err), 0,
                 "%s", err.msg);
    cr_assert(compass_str_eq(out.content, "Yes, customer managed keys are supported by Azure "
                                          "OpenAI."));
    cr_assert(compass_str_eq(out.model, "gpt-4o-2024-08-06"));
    cr_assert_eq(out.finish_reason, COMPASS_FINISH_STOP);
    cr_assert_eq(out.usage.prompt_tokens, 29);
    cr_assert_eq(out.usage.completion_tokens, 12);
    cr_assert_eq(out.usage.total_tokens, 41);
}

Test(azure, parse_response_content_filter_finish)
{
    compass_chat_response out;
    compass_upstream_error u;
    compass_err err;
    compass_http_response r = compass_fakehost_http(
        200, "{\"choices\":[{\"content_filter_results\":{\"violence\":{\"filtered\":true,"
             "\"severity\":\"medium\"}},\"finish_reason\":\"content_filter\",\"index\":0,"
             "\"message\":{\"content\":null,\"role\":\"assistant\"}}],\"created\":1,\"id\":"
             "\"chatcmpl-x\",\"model\":\"gpt-4o\",\"object\":\"chat.completion\"}");
    void *inst = mkinst(ENDPOINT, "k", NULL);
    memset(&out, 0, sizeof(out));
    out.size = sizeof(out);
    memset(&err, 0, sizeof(err));
    cr_assert_eq(ops->parse_response(inst, compass_fakehost_req(fh), &r, &out, &u, &err), 0,
                 "%s", err.msg);
    cr_assert_eq(out.finish_reason, COMPASS_FINISH_CONTENT_FILTER);
    cr_assert_eq(out.has_content, 0);
}

Test(azure, stream_recorded_chat)
{
    compass_upstream_error u;
    compass_err err;
    void *inst = mkinst(ENDPOINT, "k", NULL);
    compass_str body;
    size_t i, n, n_usage = 0, n_finish = 0, n_role = 0;
    int rc;

    compass_fakehost_req(fh);
    body = compass_fakehost_read_file(fh, AZURE_TESTDATA "/stream_chat.sse");
    cr_assert_gt(body.len, 0);
    memset(&err, 0, sizeof(err));
    rc = compass_fakehost_feed_sse(fh, inst, body, &u, &err);
    cr_assert_eq(rc, COMPASS_STREAM_END, "rc %d %s", rc, err.msg);
    cr_assert_str_eq(compass_fakehost_content(fh), "Hello! How can I help you today?");
    n = compass_fakehost_n_deltas(fh);
    /* the prompt_filter_results chunk (empty choices) emits nothing; role, 9 words, finish,
     * usage */
    cr_assert_eq(n, 12, "deltas: %zu", n);
    for (i = 0; i < n; i++) {
        const compass_chat_delta *d = compass_fakehost_delta(fh, i);
        cr_assert(compass_str_eq(d->model, "gpt-4o-2024-08-06"));
        n_role += d->role == COMPASS_ROLE_ASSISTANT;
        if (d->finish_reason) {
            n_finish++;
            cr_assert_eq(d->finish_reason, COMPASS_FINISH_STOP);
        }
        if (d->usage.present) {
            n_usage++;
            cr_assert_eq(d->usage.prompt_tokens, 19);
            cr_assert_eq(d->usage.completion_tokens, 10);
            cr_assert_eq(d->usage.total_tokens, 29);
        }
    }
    cr_assert_eq(n_role, 1);
    cr_assert_eq(n_finish, 1);
    cr_assert_eq(n_usage, 1);
}

Test(azure, stream_error_event_is_eupstream)
{
    compass_upstream_error u;
    compass_err err;
    compass_stream_event ev;
    void *inst = mkinst(ENDPOINT, "k", NULL);
    memset(&ev, 0, sizeof(ev));
    ev.data = compass_str_c("{\"error\":{\"code\":\"content_filter\",\"message\":\"The response "
                            "was filtered\",\"status\":400}}");
    memset(&err, 0, sizeof(err));
    cr_assert_eq(ops->parse_stream_event(inst, compass_fakehost_req(fh), &ev, &u, &err),
                 COMPASS_EUPSTREAM);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_CONTENT_FILTER);
}

/* ---------------------------------------------------------------------------------------- */
/* Errors                                                                                    */
/* ---------------------------------------------------------------------------------------- */

static const char *FILTER_BODY =
    "{\"error\":{\"message\":\"The response was filtered due to the prompt triggering Azure "
    "OpenAI's content management policy. Please modify your prompt and retry. To learn more "
    "about our content filtering policies please read our documentation: "
    "https://go.microsoft.com/fwlink/?linkid=2198766\",\"type\":null,\"param\":\"prompt\","
    "\"code\":\"content_filter\",\"status\":400,\"innererror\":{\"code\":"
    "\"ResponsibleAIPolicyViolation\",\"content_filter_result\":{\"hate\":{\"filtered\":false,"
    "\"severity\":\"safe\"},\"jailbreak\":{\"filtered\":true,\"detected\":true},\"self_harm\":"
    "{\"filtered\":false,\"severity\":\"safe\"},\"sexual\":{\"filtered\":false,\"severity\":"
    "\"safe\"},\"violence\":{\"filtered\":true,\"severity\":\"medium\"}}}}}";

Test(azure, classify_content_filter_with_innererror)
{
    compass_upstream_error u;
    void *inst = mkinst(ENDPOINT, "k", NULL);
    classify(inst, 400, FILTER_BODY, NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_CONTENT_FILTER);
    cr_assert_str_eq(u.code, "content_filter");
    cr_assert(strstr(u.message, "content management policy"), "%s", u.message);
    cr_assert(strstr(u.message, "(filtered: jailbreak, violence/medium)"), "%s", u.message);
    cr_assert_eq(u.retry_after_ms, -1);

    /* an innererror verdict alone (no top-level code) is still a content filter refusal */
    classify(inst, 400,
             "{\"error\":{\"message\":\"blocked\",\"innererror\":{\"code\":"
             "\"ResponsibleAIPolicyViolation\"}}}",
             NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_CONTENT_FILTER);
    cr_assert_str_eq(u.code, "content_filter");
}

static const char *RATE_BODY =
    "{\"error\":{\"code\":\"429\",\"message\":\"Requests to the ChatCompletions_Create Operation "
    "under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current "
    "OpenAI S0 pricing tier. Please retry after 6 seconds. Please go here: "
    "https://aka.ms/oai/quotaincrease if you would like to further increase the default rate "
    "limit.\"}}";

Test(azure, classify_429_retry_after_ms_and_message)
{
    compass_upstream_error u;
    compass_header hs[2];
    void *inst = mkinst(ENDPOINT, "k", NULL);
    hs[0] = H("retry-after-ms", "5431");
    hs[1] = H("retry-after", "6");
    classify(inst, 429, RATE_BODY, hs, 2, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RATE_LIMITED);
    cr_assert_str_eq(u.code, "429");
    cr_assert_eq(u.retry_after_ms, 5431);
    classify(inst, 429, RATE_BODY, hs + 1, 1, &u);
    cr_assert_eq(u.retry_after_ms, 6000);
    /* no headers: "Please retry after 6 seconds." in the message */
    classify(inst, 429, RATE_BODY, NULL, 0, &u);
    cr_assert_eq(u.retry_after_ms, 6000);
    classify(inst, 429,
             "{\"error\":{\"code\":\"429\",\"message\":\"Rate limit is exceeded. Try again in "
             "86400 seconds.\"}}",
             NULL, 0, &u);
    cr_assert_eq(u.retry_after_ms, 86400000);
}

Test(azure, classify_404_deployment_not_found_and_5xx)
{
    compass_upstream_error u;
    void *inst = mkinst(ENDPOINT, "k", NULL);
    classify(inst, 404,
             "{\"error\":{\"code\":\"DeploymentNotFound\",\"message\":\"The API deployment for "
             "this resource does not exist. If you created the deployment within the last 5 "
             "minutes, please wait a moment and try again.\"}}",
             NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_NOT_FOUND);
    cr_assert_str_eq(u.code, "DeploymentNotFound");
    classify(inst, 404, "{\"error\":{\"code\":\"404\",\"message\":\"Resource not found\"}}", NULL,
             0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_NOT_FOUND);
    classify(inst, 500,
             "{\"error\":{\"code\":\"InternalServerError\",\"message\":\"The service is "
             "temporarily unable to process your request. Please try again later.\"}}",
             NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    classify(inst, 503, "", NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert_str_eq(u.message, "upstream returned HTTP 503");
}

/* ---------------------------------------------------------------------------------------- */
/* Embeddings                                                                                */
/* ---------------------------------------------------------------------------------------- */

Test(azure, embeddings_url_and_body)
{
    static const char *const opts[] = {"deployments=text-embedding-3-small=emb-small", NULL};
    static const compass_str inputs[] = {{"first text", 10}, {"second", 6}};
    compass_embed_request in;
    compass_http_request out;
    compass_err err;
    json_object *b, *arr = NULL;
    void *inst = mkinst(ENDPOINT, "k", opts);
    memset(&in, 0, sizeof(in));
    in.size = sizeof(in);
    in.model = compass_str_c("text-embedding-3-small");
    in.inputs = inputs;
    in.n_inputs = 2;
    in.dimensions = 256;
    memset(&out, 0, sizeof(out));
    memset(&err, 0, sizeof(err));
    cr_assert_eq(ops->build_embed_request(inst, compass_fakehost_req(fh), &in, &out, &err), 0,
                 "%s", err.msg);
    cr_assert_str_eq(out.url.ptr, ENDPOINT "/openai/deployments/emb-small/embeddings"
                                           "?api-version=2024-10-21");
    cr_assert_str_eq(hdr(&out, "api-key"), "k");
    b = json_tokener_parse(out.body.ptr);
    cr_assert_not_null(b);
    cr_assert_str_eq(pstr(b, "model"), "text-embedding-3-small");
    cr_assert(json_object_object_get_ex(b, "input", &arr));
    cr_assert_eq(json_object_array_length(arr), 2);
    cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(arr, 1)), "second");
    cr_assert(json_object_object_get_ex(b, "dimensions", &arr));
    cr_assert_eq(json_object_get_int(arr), 256);
    json_object_put(b);
}

Test(azure, embeddings_parse_response)
{
    compass_embed_response out;
    compass_upstream_error u;
    compass_err err;
    compass_http_response r = compass_fakehost_http(
        200, "{\"data\":[{\"embedding\":[0.5,-0.25,0.125],\"index\":1,\"object\":\"embedding\"},"
             "{\"embedding\":[1,2,3],\"index\":0,\"object\":\"embedding\"}],\"model\":"
             "\"text-embedding-3-small\",\"object\":\"list\",\"usage\":{\"prompt_tokens\":4,"
             "\"total_tokens\":4}}");
    void *inst = mkinst(ENDPOINT, "k", NULL);
    memset(&out, 0, sizeof(out));
    out.size = sizeof(out);
    memset(&err, 0, sizeof(err));
    cr_assert_eq(ops->parse_embed_response(inst, compass_fakehost_req(fh), &r, &out, &u, &err),
                 0, "%s", err.msg);
    cr_assert_eq(out.n_data, 2);
    cr_assert_eq(out.data[0].n, 3);
    cr_assert_float_eq(out.data[0].values[2], 3.0f, 1e-6);
    cr_assert_float_eq(out.data[1].values[1], -0.25f, 1e-6);
    cr_assert_eq(out.usage.prompt_tokens, 4);
    cr_assert(compass_str_eq(out.model, "text-embedding-3-small"));
}

/* ---------------------------------------------------------------------------------------- */
/* Out of memory                                                                             */
/* ---------------------------------------------------------------------------------------- */

Test(azure, oom_instance_new_fails_cleanly)
{
    static const char *const opts[] = {"deployments=gpt-4o=prod; mini=m", "auth=bearer",
                                       "extra_headers=X-Tenant: t1", NULL};
    long nth;
    int saw_ok = 0;
    for (nth = 1; nth <= 30 && !saw_ok; nth++) {
        compass_err err;
        void *inst;
        memset(&err, 0, sizeof(err));
        compass_fakehost_fail_alloc_at(fh, nth);
        inst = compass_fakehost_instance(fh, "d", ENDPOINT, "k", opts, &err);
        compass_fakehost_fail_alloc_at(fh, 0);
        if (inst)
            saw_ok = 1;
        else
            cr_assert_eq(err.code, COMPASS_ENOMEM, "nth %ld: %s", nth, err.msg);
    }
    cr_assert(saw_ok);
    cr_assert_gt(nth, 4);
}

Test(azure, oom_build_request_fails_cleanly)
{
    static const char *const opts[] = {"deployments=gpt-4o=prod", NULL};
    void *inst = mkinst(ENDPOINT, "k", opts);
    long nth;
    int saw_ok = 0;
    for (nth = 1; nth <= 40 && !saw_ok; nth++) {
        compass_chat_request in;
        compass_http_request out;
        compass_err err;
        compass_req *req = compass_fakehost_req(fh);
        int rc;
        memset(&in, 0, sizeof(in));
        memset(&out, 0, sizeof(out));
        memset(&err, 0, sizeof(err));
        cr_assert_eq(compass_fakehost_parse_chat(fh, CHAT, &in, &err), 0, "%s", err.msg);
        compass_fakehost_fail_alloc_at(fh, nth);
        rc = ops->build_request(inst, req, &in, &out, &err);
        compass_fakehost_fail_alloc_at(fh, 0);
        if (rc == COMPASS_OK) {
            saw_ok = 1;
            cr_assert(compass_str_eq(out.url, ENDPOINT "/openai/deployments/prod/chat/"
                                                       "completions?api-version=2024-10-21"));
        } else {
            cr_assert_eq(rc, COMPASS_ENOMEM, "nth %ld: rc %d (%s)", nth, rc, err.msg);
            cr_assert(err.msg[0]);
        }
    }
    cr_assert(saw_ok);
    cr_assert_gt(nth, 3);
}

Test(azure, oom_build_embed_request_fails_cleanly)
{
    static const compass_str inputs[] = {{"a", 1}};
    void *inst = mkinst(ENDPOINT, "k", NULL);
    long nth;
    int saw_ok = 0;
    for (nth = 1; nth <= 30 && !saw_ok; nth++) {
        compass_embed_request in;
        compass_http_request out;
        compass_err err;
        compass_req *req = compass_fakehost_req(fh);
        int rc;
        memset(&in, 0, sizeof(in));
        in.size = sizeof(in);
        in.model = compass_str_c("emb");
        in.inputs = inputs;
        in.n_inputs = 1;
        memset(&out, 0, sizeof(out));
        memset(&err, 0, sizeof(err));
        compass_fakehost_fail_alloc_at(fh, nth);
        rc = ops->build_embed_request(inst, req, &in, &out, &err);
        compass_fakehost_fail_alloc_at(fh, 0);
        if (rc == COMPASS_OK)
            saw_ok = 1;
        else
            cr_assert_eq(rc, COMPASS_ENOMEM, "nth %ld: rc %d (%s)", nth, rc, err.msg);
    }
    cr_assert(saw_ok);
}

/* ---------------------------------------------------------------------------------------- */
/* The stream's two readers agree (openai_wire's scanner reader against its json-c tree        */
/* reader) on Azure's chunks: members in alphabetical order, content filter annotations        */
/* ---------------------------------------------------------------------------------------- */

#define D(json) "data: " json "\n\n"
#define FILTERS                                                                               \
    "\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":\"safe\"},"         \
    "\"protected_material_code\":{\"filtered\":false,\"detected\":false},"                     \
    "\"protected_material_text\":{\"filtered\":false,\"detected\":false},\"self_harm\":"        \
    "{\"filtered\":false,\"severity\":\"safe\"},\"sexual\":{\"filtered\":false,\"severity\":"   \
    "\"safe\"},\"violence\":{\"filtered\":false,\"severity\":\"safe\"}}"
#define AZ(choice, tail)                                                                      \
    "{\"choices\":[{" choice "}],\"created\":1732036488,\"id\":\"chatcmpl-AVN\",\"model\":"     \
    "\"gpt-4o-2024-08-06\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":"        \
    "\"fp_04751d0b65\"" tail "}"

static const sd_case AZ_CORPUS[] = {
    {"prompt_filter_then_text", 0,
     D("{\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\","
       "\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{\"hate\":"
       "{\"filtered\":false,\"severity\":\"safe\"},\"jailbreak\":{\"filtered\":false,"
       "\"detected\":false},\"custom_blocklists\":{\"filtered\":false,\"details\":[]}}}]}")
     D(AZ("\"content_filter_results\":{},\"delta\":{\"content\":\"\",\"refusal\":null,\"role\":"
          "\"assistant\"},\"finish_reason\":null,\"index\":0,\"logprobs\":null", ",\"usage\":null"))
     D(AZ(FILTERS ",\"delta\":{\"content\":\"Caf\\u00e9 \\\"Z\\\"\\n\"},\"finish_reason\":null,"
          "\"index\":0,\"logprobs\":null", ",\"usage\":null"))
     D(AZ(FILTERS ",\"content_filter_offsets\":{\"check_offset\":35,\"start_offset\":35,"
          "\"end_offset\":70},\"delta\":{},\"finish_reason\":\"stop\",\"index\":0,"
          "\"logprobs\":null",
          ",\"usage\":null"))
     D("{\"choices\":[],\"created\":1732036488,\"id\":\"chatcmpl-AVN\",\"model\":\"gpt-4o\","
       "\"usage\":{\"completion_tokens\":10,\"completion_tokens_details\":{\"reasoning_tokens\":3},"
       "\"prompt_tokens\":19,\"prompt_tokens_details\":{\"cached_tokens\":8},\"total_tokens\":29}}")
     D("[DONE]")},
    {"filtered_completion", 0,
     D(AZ("\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":\"safe\"},"
          "\"violence\":{\"filtered\":true,\"severity\":\"medium\"}},\"delta\":{},"
          "\"finish_reason\":\"content_filter\",\"index\":0,\"logprobs\":null", ""))},
    {"tool_calls_alphabetical", 0,
     D(AZ("\"content_filter_results\":{},\"delta\":{\"content\":null,\"role\":\"assistant\","
          "\"tool_calls\":[{\"function\":{\"arguments\":\"\",\"name\":\"get_weather\"},\"id\":"
          "\"call_x\",\"index\":0,\"type\":\"function\"}]},\"finish_reason\":null,\"index\":0",
          ""))
     D(AZ("\"content_filter_results\":{},\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":"
          "\"{\\\"city\\\":\\\"Paris\\\"}\"},\"index\":0}]},\"finish_reason\":null,"
          "\"index\":0", ""))
     D(AZ("\"content_filter_results\":{},\"delta\":{},\"finish_reason\":\"tool_calls\","
          "\"index\":0", ""))},
    {"error_in_stream", 1,
     D(AZ(FILTERS ",\"delta\":{\"content\":\"partial\"},\"finish_reason\":null,\"index\":0", ""))
     D("{\"error\":{\"code\":\"content_filter\",\"message\":\"The response was filtered\","
       "\"status\":400,\"innererror\":{\"code\":\"ResponsibleAIPolicyViolation\"}}}")},
    {"error_server", 1,
     D("{\"error\":{\"code\":\"500\",\"message\":\"The server had an error while processing "
       "your request.\"}}")},
    {"malformed_filter", 1,
     D(AZ("\"content_filter_results\":{\"hate\":{\"filtered\":fals}},\"delta\":{\"content\":"
          "\"x\"},\"index\":0", ""))},
};

static int az_fast(void *w, compass_req *req, const compass_stream_event *ev, compass_err *err)
{
    return oai_wire_parse_stream_event_fast(w, req, ev, err);
}

static int az_full(void *w, compass_req *req, const compass_stream_event *ev,
                   compass_upstream_error *u, compass_err *err)
{
    return oai_wire_parse_stream_event_full(w, req, ev, u, err);
}

Test(azure, stream_readers_agree_on_azure_chunks)
{
    compass_str rec = compass_fakehost_read_file(fh, AZURE_TESTDATA "/stream_chat.sse");
    char *copy = rec.ptr ? strndup(rec.ptr, rec.len) : NULL;
    const sd_case recorded = {"recorded_stream_chat", 0, copy};
    oai_wire wa, wb;
    compass_err err;
    sd_readers r;
    cr_assert_not_null(copy);
    memset(&err, 0, sizeof(err));
    sd_open(&r, "azure");
    cr_assert_eq(oai_wire_init(&wa, compass_fakehost_host(r.fast_fh), "azure", "dep1", &err), 0);
    cr_assert_eq(oai_wire_init(&wb, compass_fakehost_host(r.full_fh), "azure", "dep1", &err), 0);
    r.fast_ctx = &wa;
    r.full_ctx = &wb;
    r.fast = az_fast;
    r.full = az_full;
    r.declined = OAI_WIRE_DECLINED;
    /* the recording: role, 9 texts, finish, usage */
    cr_assert_eq(sd_compare_all(&r, &recorded, 1), 12);
    cr_assert_eq(sd_compare_all(&r, AZ_CORPUS, sizeof(AZ_CORPUS) / sizeof(AZ_CORPUS[0])), 10);
    oai_wire_release(&wa);
    oai_wire_release(&wb);
    sd_close(&r);
    free(copy);
}
