/* Unit tests of the openai provider on the fake host, on OpenAI wire bytes. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "compass_fakehost.h"
#include "openai_wire.h"

#include "../common/pair_cases.h"
#include "../common/response_diff.h"
#include "../common/stream_diff.h"

static compass_fakehost *fh;
static const compass_plugin_desc *desc;
static const compass_provider_ops *ops;

static void setup(void)
{
    compass_err err;
    memset(&err, 0, sizeof(err));
    fh = compass_fakehost_new("openai");
    cr_assert_not_null(fh);
    desc = compass_fakehost_load(fh, COMPASS_PLUGIN_DIR "/openai.so", &err);
    cr_assert_not_null(desc, "load: %s", err.msg);
    ops = desc->ops.provider;
}

static void teardown(void)
{
    compass_fakehost_free(fh);
}

TestSuite(openai, .init = setup, .fini = teardown);

/* ---------------------------------------------------------------------------------------- */
/* helpers                                                                                   */
/* ---------------------------------------------------------------------------------------- */

static void *mkinst(const char *base_url, const char *key, const char *const *opts)
{
    compass_err err;
    void *inst;
    memset(&err, 0, sizeof(err));
    inst = compass_fakehost_instance(fh, "dep1", base_url, key, opts, &err);
    cr_assert_not_null(inst, "instance: %s", err.msg);
    return inst;
}

/* Parses req_json, optionally swaps the model, builds; returns the re-parsed body. */
static json_object *build_with(void *inst, const char *req_json, const char *model,
                               compass_http_request *out)
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
    if (model)
        in.model = compass_str_c(model);
    rc = ops->build_request(inst, req, &in, out, &err);
    cr_assert_eq(rc, 0, "build_request: %d %s", rc, err.msg);
    cr_assert_not_null(out->body.ptr);
    cr_assert_eq(out->body.ptr[out->body.len], '\0');
    body = json_tokener_parse(out->body.ptr);
    cr_assert_not_null(body, "body is not JSON: %s", out->body.ptr);
    return body;
}

static json_object *build(void *inst, const char *req_json, compass_http_request *out)
{
    return build_with(inst, req_json, NULL, out);
}

static json_object *path(json_object *o, const char *p)
{
    /* dotted path with numeric array indexes: "messages.0.content" */
    while (o && *p) {
        char seg[128];
        size_t n = strcspn(p, ".");
        if (n >= sizeof(seg))
            return NULL;
        memcpy(seg, p, n);
        seg[n] = '\0';
        p += n;
        if (*p == '.')
            p++;
        if (json_object_is_type(o, json_type_array)) {
            o = json_object_array_get_idx(o, (size_t)strtol(seg, NULL, 10));
        } else if (!json_object_object_get_ex(o, seg, &o)) {
            return NULL;
        }
    }
    return o;
}

static const char *pstr(json_object *o, const char *p)
{
    json_object *v = path(o, p);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static int has(json_object *o, const char *p)
{
    char buf[256], *dot;
    json_object *parent = o;
    snprintf(buf, sizeof(buf), "%s", p);
    dot = strrchr(buf, '.');
    if (dot) {
        *dot = '\0';
        parent = path(o, buf);
        return parent && json_object_object_get_ex(parent, dot + 1, NULL);
    }
    return json_object_object_get_ex(o, p, NULL);
}

static const char *hdr(const compass_http_request *r, const char *name)
{
    compass_str v = compass_header_get(r->headers, r->n_headers, name);
    return v.ptr; /* NUL-terminated: copied with req_strdup */
}

static size_t count_sub(const char *s, const char *sub)
{
    size_t n = 0, l = strlen(sub);
    for (s = strstr(s, sub); s; s = strstr(s + l, sub))
        n++;
    return n;
}

static const char *SIMPLE = "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":"
                            "\"Hello\"}]}";

/* ---------------------------------------------------------------------------------------- */
/* build_request                                                                             */
/* ---------------------------------------------------------------------------------------- */

Test(openai, build_replaces_model_and_posts_json)
{
    compass_http_request out;
    void *inst = mkinst(NULL, "sk-test", NULL);
    json_object *b = build_with(inst, SIMPLE, "gpt-4o-2024-08-06", &out);
    cr_assert_eq(out.method, COMPASS_HTTP_POST);
    cr_assert(compass_str_eq(out.url, "https://api.openai.com/v1/chat/completions"), "%s",
              out.url.ptr);
    cr_assert_str_eq(pstr(b, "model"), "gpt-4o-2024-08-06");
    cr_assert_str_eq(pstr(b, "messages.0.role"), "user");
    cr_assert_str_eq(pstr(b, "messages.0.content"), "Hello");
    cr_assert_eq(count_sub(out.body.ptr, "\"model\""), 1);
    cr_assert_str_eq(hdr(&out, "content-type"), "application/json");
    cr_assert_str_eq(hdr(&out, "Authorization"), "Bearer sk-test");
    cr_assert_eq(out.stream_format, COMPASS_STREAM_NONE);
    cr_assert_not(has(b, "stream"));
    cr_assert_not(has(b, "stream_options"));
    json_object_put(b);
}

Test(openai, build_writes_tools_and_function_tool_choice)
{
    compass_http_request out;
    void *inst = mkinst(NULL, "k", NULL);
    json_object *b = build(
        inst,
        "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"description\":\"Get the weather\",\"parameters\":{\"type\":\"object\","
        "\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"],"
        "\"additionalProperties\":false},\"strict\":true}},{\"type\":\"function\","
        "\"function\":{\"name\":\"noop\"}}],"
        "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}},"
        "\"parallel_tool_calls\":false}",
        &out);
    cr_assert_eq(json_object_array_length(path(b, "tools")), 2);
    cr_assert_str_eq(pstr(b, "tools.0.type"), "function");
    cr_assert_str_eq(pstr(b, "tools.0.function.name"), "get_weather");
    cr_assert_str_eq(pstr(b, "tools.0.function.description"), "Get the weather");
    cr_assert_str_eq(pstr(b, "tools.0.function.parameters.properties.city.type"), "string");
    cr_assert_eq(json_object_get_boolean(path(b, "tools.0.function.strict")), 1);
    cr_assert_str_eq(pstr(b, "tools.1.function.name"), "noop");
    cr_assert_not(has(b, "tools.1.function.parameters"));
    cr_assert_not(has(b, "tools.1.function.strict"));
    cr_assert_str_eq(pstr(b, "tool_choice.type"), "function");
    cr_assert_str_eq(pstr(b, "tool_choice.function.name"), "get_weather");
    cr_assert(has(b, "parallel_tool_calls"));
    cr_assert_eq(json_object_get_boolean(path(b, "parallel_tool_calls")), 0);
    json_object_put(b);
}

Test(openai, build_writes_string_tool_choices)
{
    static const char *const forms[] = {"auto", "none", "required"};
    size_t i;
    void *inst = mkinst(NULL, "k", NULL);
    for (i = 0; i < 3; i++) {
        char req[512];
        compass_http_request out;
        json_object *b;
        snprintf(req, sizeof(req),
                 "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                 "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
                 "\"parameters\":{\"type\":\"object\"}}}],\"tool_choice\":\"%s\"}",
                 forms[i]);
        b = build(inst, req, &out);
        cr_assert_str_eq(pstr(b, "tool_choice"), forms[i]);
        json_object_put(b);
    }
}

Test(openai, build_writes_image_parts_with_detail)
{
    compass_http_request out;
    void *inst = mkinst(NULL, "k", NULL);
    json_object *b = build(
        inst,
        "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":["
        "{\"type\":\"text\",\"text\":\"What is in this image?\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://example.com/cat.png\","
        "\"detail\":\"high\"}},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0KGgo=\"}}"
        "]}]}",
        &out);
    cr_assert(json_object_is_type(path(b, "messages.0.content"), json_type_array));
    cr_assert_eq(json_object_array_length(path(b, "messages.0.content")), 3);
    cr_assert_str_eq(pstr(b, "messages.0.content.0.type"), "text");
    cr_assert_str_eq(pstr(b, "messages.0.content.0.text"), "What is in this image?");
    cr_assert_str_eq(pstr(b, "messages.0.content.1.type"), "image_url");
    cr_assert_str_eq(pstr(b, "messages.0.content.1.image_url.url"),
                     "https://example.com/cat.png");
    cr_assert_str_eq(pstr(b, "messages.0.content.1.image_url.detail"), "high");
    cr_assert_str_eq(pstr(b, "messages.0.content.2.image_url.url"),
                     "data:image/png;base64,iVBORw0KGgo=");
    cr_assert_not(has(b, "messages.0.content.2.image_url.detail"));
    json_object_put(b);
}

Test(openai, build_writes_tool_calls_and_tool_results)
{
    compass_http_request out;
    void *inst = mkinst(NULL, "k", NULL);
    json_object *b = build(
        inst,
        "{\"model\":\"gpt-4o\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"Be brief.\"},"
        "{\"role\":\"user\",\"name\":\"alice\",\"content\":\"Weather in Paris?\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\","
        "\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"18C, sunny\"}]}",
        &out);
    cr_assert_str_eq(pstr(b, "messages.0.role"), "system");
    cr_assert_str_eq(pstr(b, "messages.1.name"), "alice");
    cr_assert_str_eq(pstr(b, "messages.2.role"), "assistant");
    cr_assert(has(b, "messages.2.content"));
    cr_assert_null(path(b, "messages.2.content"), "assistant content must be null");
    cr_assert_str_eq(pstr(b, "messages.2.tool_calls.0.id"), "call_1");
    cr_assert_str_eq(pstr(b, "messages.2.tool_calls.0.type"), "function");
    cr_assert_str_eq(pstr(b, "messages.2.tool_calls.0.function.name"), "get_weather");
    cr_assert_str_eq(pstr(b, "messages.2.tool_calls.0.function.arguments"),
                     "{\"city\":\"Paris\"}");
    cr_assert_str_eq(pstr(b, "messages.3.role"), "tool");
    cr_assert_str_eq(pstr(b, "messages.3.tool_call_id"), "call_1");
    cr_assert_str_eq(pstr(b, "messages.3.content"), "18C, sunny");
    json_object_put(b);
}

Test(openai, build_writes_sampling_fields_exactly)
{
    compass_http_request out;
    void *inst = mkinst(NULL, "k", NULL);
    json_object *b = build(
        inst,
        "{\"model\":\"o3-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
        "\"temperature\":0.7,\"top_p\":0.9,\"presence_penalty\":-0.5,"
        "\"frequency_penalty\":1.25,\"max_tokens\":256,\"seed\":42,\"n\":2,"
        "\"stop\":[\"END\",\"\\n\\n\"],\"response_format\":{\"type\":\"json_schema\","
        "\"json_schema\":{\"name\":\"r\",\"schema\":{\"type\":\"object\"},\"strict\":true}},"
        "\"reasoning_effort\":\"low\",\"user\":\"u-123\"}",
        &out);
    cr_assert(strstr(out.body.ptr, "\"temperature\":0.7"), "%s", out.body.ptr);
    cr_assert(strstr(out.body.ptr, "\"top_p\":0.9"));
    cr_assert(strstr(out.body.ptr, "\"presence_penalty\":-0.5"));
    cr_assert(strstr(out.body.ptr, "\"frequency_penalty\":1.25"));
    cr_assert_eq(json_object_get_int64(path(b, "max_tokens")), 256);
    cr_assert_not(has(b, "max_completion_tokens"));
    cr_assert_eq(json_object_get_int64(path(b, "seed")), 42);
    cr_assert_eq(json_object_get_int64(path(b, "n")), 2);
    cr_assert_str_eq(pstr(b, "stop.0"), "END");
    cr_assert_str_eq(pstr(b, "stop.1"), "\n\n");
    cr_assert_str_eq(pstr(b, "response_format.type"), "json_schema");
    cr_assert_str_eq(pstr(b, "response_format.json_schema.name"), "r");
    cr_assert_str_eq(pstr(b, "reasoning_effort"), "low");
    cr_assert_str_eq(pstr(b, "user"), "u-123");
    json_object_put(b);
}

Test(openai, build_escapes_strings)
{
    compass_http_request out;
    void *inst = mkinst(NULL, "k", NULL);
    json_object *b = build(inst,
                           "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
                           "\"quote \\\" backslash \\\\ tab \\t ctl \\u0001 \\u00e9\"}]}",
                           &out);
    cr_assert_str_eq(pstr(b, "messages.0.content"),
                     "quote \" backslash \\ tab \t ctl \x01 \xc3\xa9");
    json_object_put(b);
}

Test(openai, build_max_tokens_field_option)
{
    static const char *const to_mct[] = {"max_tokens_field=max_completion_tokens", NULL};
    static const char *const to_mt[] = {"max_tokens_field=max_tokens", NULL};
    compass_http_request out;
    json_object *b;
    void *a = mkinst(NULL, "k", to_mct), *c = mkinst(NULL, "k", to_mt);
    void *keep = mkinst(NULL, "k", NULL);

    b = build(a, "{\"model\":\"o1\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                 "\"max_tokens\":100}",
              &out);
    cr_assert_eq(json_object_get_int64(path(b, "max_completion_tokens")), 100);
    cr_assert_not(has(b, "max_tokens"));
    json_object_put(b);

    b = build(c, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                 "\"max_completion_tokens\":77}",
              &out);
    cr_assert_eq(json_object_get_int64(path(b, "max_tokens")), 77);
    cr_assert_not(has(b, "max_completion_tokens"));
    json_object_put(b);

    b = build(keep, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                    "\"max_completion_tokens\":55}",
              &out);
    cr_assert_eq(json_object_get_int64(path(b, "max_completion_tokens")), 55);
    cr_assert_not(has(b, "max_tokens"));
    json_object_put(b);
}

Test(openai, build_refuses_bad_max_tokens_field)
{
    static const char *const bad[] = {"max_tokens_field=maxTokens", NULL};
    compass_err err;
    memset(&err, 0, sizeof(err));
    cr_assert_null(compass_fakehost_instance(fh, "dep1", NULL, "k", bad, &err));
    cr_assert_eq(err.code, COMPASS_ECONFIG);
    cr_assert(strstr(err.msg, "max_tokens_field"), "%s", err.msg);
}

Test(openai, build_stream_always_asks_for_usage)
{
    compass_http_request out;
    void *inst = mkinst(NULL, "k", NULL);
    json_object *b = build(inst,
                           "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\","
                           "\"content\":\"x\"}]}",
                           &out);
    cr_assert_eq(out.stream_format, COMPASS_STREAM_SSE);
    cr_assert_eq(json_object_get_boolean(path(b, "stream")), 1);
    cr_assert_eq(json_object_get_boolean(path(b, "stream_options.include_usage")), 1);
    json_object_put(b);
}

Test(openai, build_stream_options_off_by_option)
{
    static const char *const off[] = {"stream_options=false", NULL};
    compass_http_request out;
    void *inst = mkinst(NULL, "k", off);
    json_object *b = build(inst,
                           "{\"model\":\"m\",\"stream\":true,\"stream_options\":{"
                           "\"include_usage\":true},\"messages\":[{\"role\":\"user\","
                           "\"content\":\"x\"}]}",
                           &out);
    cr_assert_eq(out.stream_format, COMPASS_STREAM_SSE);
    cr_assert_eq(json_object_get_boolean(path(b, "stream")), 1);
    cr_assert_not(has(b, "stream_options"));
    json_object_put(b);
}

Test(openai, build_passes_through_unnamed_fields)
{
    compass_http_request out;
    void *inst = mkinst(NULL, "k", NULL);
    json_object *b = build_with(
        inst,
        "{\"model\":\"route-x\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
        "\"logprobs\":true,\"top_logprobs\":3,\"logit_bias\":{\"50256\":-100},"
        "\"metadata\":{\"team\":\"a\"},\"service_tier\":\"flex\",\"store\":false,"
        "\"stream\":true,\"stream_options\":{\"include_usage\":false}}",
        "gpt-4o-mini", &out);
    cr_assert_eq(json_object_get_boolean(path(b, "logprobs")), 1);
    cr_assert_eq(json_object_get_int64(path(b, "top_logprobs")), 3);
    cr_assert_eq(json_object_get_int64(path(b, "logit_bias.50256")), -100);
    cr_assert_str_eq(pstr(b, "metadata.team"), "a");
    cr_assert_str_eq(pstr(b, "service_tier"), "flex");
    cr_assert(has(b, "store"));
    cr_assert_str_eq(pstr(b, "model"), "gpt-4o-mini");
    cr_assert_eq(count_sub(out.body.ptr, "\"model\""), 1);
    cr_assert_eq(count_sub(out.body.ptr, "\"stream_options\""), 1);
    cr_assert_eq(count_sub(out.body.ptr, "\"stream\""), 1);
    cr_assert_eq(json_object_get_boolean(path(b, "stream_options.include_usage")), 1);
    json_object_put(b);
}

Test(openai, build_auth_header_forms)
{
    static const char *const raw[] = {"auth_scheme=", NULL};
    static const char *const custom[] = {"auth_header=api-key", "auth_scheme=", NULL};
    static const char *const bare_scheme[] = {"auth_scheme=Token", NULL};
    compass_http_request out;
    json_object *b;

    b = build(mkinst(NULL, "sk-raw", raw), SIMPLE, &out);
    cr_assert_str_eq(hdr(&out, "Authorization"), "sk-raw");
    json_object_put(b);

    b = build(mkinst(NULL, "azure-key", custom), SIMPLE, &out);
    cr_assert_str_eq(hdr(&out, "api-key"), "azure-key");
    cr_assert_null(hdr(&out, "Authorization"));
    json_object_put(b);

    b = build(mkinst(NULL, "t0k", bare_scheme), SIMPLE, &out);
    cr_assert_str_eq(hdr(&out, "Authorization"), "Token t0k");
    json_object_put(b);

    b = build(mkinst("http://localhost:11434/v1", NULL, NULL), SIMPLE, &out);
    cr_assert_null(hdr(&out, "Authorization"));
    cr_assert_eq(out.n_headers, 1);
    json_object_put(b);
}

Test(openai, build_organization_and_extra_headers)
{
    static const char *const opts[] = {"organization=org-abc",
                                       "extra_headers=HTTP-Referer: https://x.example; "
                                       "X-Title: compass ;",
                                       NULL};
    compass_http_request out;
    json_object *b = build(mkinst(NULL, "k", opts), SIMPLE, &out);
    cr_assert_str_eq(hdr(&out, "OpenAI-Organization"), "org-abc");
    cr_assert_str_eq(hdr(&out, "HTTP-Referer"), "https://x.example");
    cr_assert_str_eq(hdr(&out, "X-Title"), "compass");
    cr_assert_eq(out.n_headers, 5);
    json_object_put(b);
}

Test(openai, build_refuses_bad_extra_headers)
{
    static const char *const bad[] = {"extra_headers=no colon here", NULL};
    compass_err err;
    memset(&err, 0, sizeof(err));
    cr_assert_null(compass_fakehost_instance(fh, "dep1", NULL, "k", bad, &err));
    cr_assert_eq(err.code, COMPASS_ECONFIG);
    cr_assert(strstr(err.msg, "extra_headers"), "%s", err.msg);
}

Test(openai, build_base_url_and_paths)
{
    static const char *const groq[] = {"chat_path=/openai/v1/chat/completions", NULL};
    static const char *const full[] = {"chat_path=https://other.example/v9/chat", NULL};
    compass_http_request out;
    json_object *b;

    b = build(mkinst("http://localhost:11434/v1/", NULL, NULL), SIMPLE, &out);
    cr_assert(compass_str_eq(out.url, "http://localhost:11434/v1/chat/completions"), "%s",
              out.url.ptr);
    json_object_put(b);

    b = build(mkinst("https://api.groq.com", "k", groq), SIMPLE, &out);
    cr_assert(compass_str_eq(out.url, "https://api.groq.com/openai/v1/chat/completions"), "%s",
              out.url.ptr);
    json_object_put(b);

    b = build(mkinst("https://ignored.example", "k", full), SIMPLE, &out);
    cr_assert(compass_str_eq(out.url, "https://other.example/v9/chat"), "%s", out.url.ptr);
    json_object_put(b);
}

Test(openai, instance_refuses_bad_base_url)
{
    compass_err err;
    memset(&err, 0, sizeof(err));
    cr_assert_null(compass_fakehost_instance(fh, "dep1", "api.openai.com", "k", NULL, &err));
    cr_assert_eq(err.code, COMPASS_ECONFIG);
    cr_assert(strstr(err.msg, "base_url"), "%s", err.msg);
}

Test(openai, logs_never_hold_the_key)
{
    compass_http_request out;
    compass_upstream_error u;
    compass_http_response r = compass_fakehost_http(
        401, "{\"error\":{\"message\":\"Incorrect API key provided: sk-***ret.\","
             "\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"invalid_api_key\"}}");
    void *inst = mkinst(NULL, "sk-supersecret", NULL);
    json_object *b = build(inst, SIMPLE, &out);
    json_object_put(b);
    ops->classify_error(inst, compass_fakehost_req(fh), &r, &u);
    cr_assert_not_null(strstr(compass_fakehost_log(fh), "dep1"));
    cr_assert_null(strstr(compass_fakehost_log(fh), "sk-supersecret"), "%s",
                   compass_fakehost_log(fh));
}

/* ---------------------------------------------------------------------------------------- */
/* parse_response                                                                            */
/* ---------------------------------------------------------------------------------------- */

static int parse(void *inst, int status, const char *body, compass_chat_response *out,
                 compass_upstream_error *u, compass_err *err)
{
    compass_http_response r = compass_fakehost_http(status, body);
    compass_req *req = compass_fakehost_req(fh);
    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    memset(u, 0, sizeof(*u));
    memset(err, 0, sizeof(*err));
    return ops->parse_response(inst, req, &r, out, u, err);
}

static const char *RESP_PLAIN =
    "{\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion\","
    "\"created\":1741569952,\"model\":\"gpt-4.1-2025-04-14\",\"choices\":[{\"index\":0,"
    "\"message\":{\"role\":\"assistant\",\"content\":\"Hello! How can I assist you today?\","
    "\"refusal\":null,\"annotations\":[]},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,\"total_tokens\":29,"
    "\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},"
    "\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,"
    "\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}},"
    "\"service_tier\":\"default\"}";

Test(openai, parse_plain_response)
{
    compass_chat_response out;
    compass_upstream_error u;
    compass_err err;
    void *inst = mkinst(NULL, "k", NULL);
    cr_assert_eq(parse(inst, 200, RESP_PLAIN, &out, &u, &err), 0, "%s", err.msg);
    cr_assert(compass_str_eq(out.id, "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"));
    cr_assert(compass_str_eq(out.model, "gpt-4.1-2025-04-14"));
    cr_assert_eq(out.created, 1741569952);
    cr_assert_eq(out.has_content, 1);
    cr_assert(compass_str_eq(out.content, "Hello! How can I assist you today?"));
    cr_assert_eq(out.refusal.len, 0);
    cr_assert_eq(out.n_tool_calls, 0);
    cr_assert_eq(out.finish_reason, COMPASS_FINISH_STOP);
    cr_assert_eq(out.usage.present, 1);
    cr_assert_eq(out.usage.prompt_tokens, 19);
    cr_assert_eq(out.usage.completion_tokens, 10);
    cr_assert_eq(out.usage.total_tokens, 29);
    cr_assert_eq(out.size, sizeof(out));
}

Test(openai, parse_tool_calls_response)
{
    compass_chat_response out;
    compass_upstream_error u;
    compass_err err;
    void *inst = mkinst(NULL, "k", NULL);
    int rc = parse(
        inst, 200,
        "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion\",\"created\":1699896916,"
        "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
        "\"content\":null,\"tool_calls\":[{\"id\":\"call_abc123\",\"type\":\"function\","
        "\"function\":{\"name\":\"get_current_weather\",\"arguments\":\"{\\n\\\"location\\\": "
        "\\\"Boston, MA\\\"\\n}\"}},{\"id\":\"call_def456\",\"type\":\"function\",\"function\":"
        "{\"name\":\"get_time\",\"arguments\":\"{}\"}}]},\"logprobs\":null,"
        "\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":82,"
        "\"completion_tokens\":17,\"total_tokens\":99}}",
        &out, &u, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(out.has_content, 0);
    cr_assert_eq(out.n_tool_calls, 2);
    cr_assert(compass_str_eq(out.tool_calls[0].id, "call_abc123"));
    cr_assert(compass_str_eq(out.tool_calls[0].name, "get_current_weather"));
    cr_assert(compass_str_eq(out.tool_calls[0].arguments,
                             "{\n\"location\": \"Boston, MA\"\n}"));
    cr_assert(compass_str_eq(out.tool_calls[1].name, "get_time"));
    cr_assert(compass_str_eq(out.tool_calls[1].arguments, "{}"));
    cr_assert_eq(out.finish_reason, COMPASS_FINISH_TOOL_CALLS);
}

Test(openai, parse_legacy_function_call_finish)
{
    compass_chat_response out;
    compass_upstream_error u;
    compass_err err;
    void *inst = mkinst(NULL, "k", NULL);
    int rc = parse(inst, 200,
                   "{\"id\":\"x\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                   "\"content\":null,\"function_call\":{\"name\":\"f\",\"arguments\":"
                   "\"{\\\"a\\\":1}\"}},\"finish_reason\":\"function_call\"}]}",
                   &out, &u, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(out.finish_reason, COMPASS_FINISH_TOOL_CALLS);
    cr_assert_eq(out.n_tool_calls, 1);
    cr_assert(compass_str_eq(out.tool_calls[0].name, "f"));
    cr_assert(compass_str_eq(out.tool_calls[0].arguments, "{\"a\":1}"));
    cr_assert_eq(out.usage.present, 0);
}

Test(openai, parse_refusal_response)
{
    compass_chat_response out;
    compass_upstream_error u;
    compass_err err;
    void *inst = mkinst(NULL, "k", NULL);
    int rc = parse(inst, 200,
                   "{\"id\":\"chatcmpl-r\",\"object\":\"chat.completion\",\"created\":1,"
                   "\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"message\":{"
                   "\"role\":\"assistant\",\"content\":null,\"refusal\":\"I'm sorry, I cannot "
                   "assist with that request.\"},\"logprobs\":null,\"finish_reason\":\"stop\"}]}",
                   &out, &u, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(out.has_content, 0);
    cr_assert(compass_str_eq(out.refusal, "I'm sorry, I cannot assist with that request."));
    cr_assert_eq(out.finish_reason, COMPASS_FINISH_STOP);
}

Test(openai, parse_length_and_content_filter_finishes)
{
    compass_chat_response out;
    compass_upstream_error u;
    compass_err err;
    void *inst = mkinst(NULL, "k", NULL);
    cr_assert_eq(parse(inst, 200,
                       "{\"id\":\"a\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                       "\"assistant\",\"content\":\"Once upon a\"},\"finish_reason\":"
                       "\"length\"}]}",
                       &out, &u, &err),
                 0);
    cr_assert_eq(out.finish_reason, COMPASS_FINISH_LENGTH);
    cr_assert(compass_str_eq(out.content, "Once upon a"));
    cr_assert_eq(parse(inst, 200,
                       "{\"id\":\"b\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                       "\"assistant\",\"content\":\"\"},\"finish_reason\":"
                       "\"content_filter\"}]}",
                       &out, &u, &err),
                 0);
    cr_assert_eq(out.finish_reason, COMPASS_FINISH_CONTENT_FILTER);
    cr_assert_eq(out.has_content, 1);
    cr_assert_eq(out.content.len, 0);
}

Test(openai, parse_usage_details)
{
    compass_chat_response out;
    compass_upstream_error u;
    compass_err err;
    void *inst = mkinst(NULL, "k", NULL);
    int rc = parse(inst, 200,
                   "{\"id\":\"c\",\"model\":\"o3-mini\",\"choices\":[{\"index\":0,\"message\":"
                   "{\"role\":\"assistant\",\"content\":\"42\"},\"finish_reason\":\"stop\"}],"
                   "\"usage\":{\"prompt_tokens\":2006,\"completion_tokens\":300,"
                   "\"total_tokens\":2306,\"prompt_tokens_details\":{\"cached_tokens\":1920},"
                   "\"completion_tokens_details\":{\"reasoning_tokens\":256}}}",
                   &out, &u, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(out.usage.present, 1);
    cr_assert_eq(out.usage.prompt_tokens, 2006);
    cr_assert_eq(out.usage.completion_tokens, 300);
    cr_assert_eq(out.usage.total_tokens, 2306);
    cr_assert_eq(out.usage.cached_tokens, 1920);
    cr_assert_eq(out.usage.reasoning_tokens, 256);
}

Test(openai, parse_error_in_200_body)
{
    compass_chat_response out;
    compass_upstream_error u;
    compass_err err;
    void *inst = mkinst(NULL, "k", NULL);
    int rc = parse(inst, 200,
                   "{\"error\":{\"message\":\"The server had an error while processing your "
                   "request. Sorry about that!\",\"type\":\"server_error\",\"param\":null,"
                   "\"code\":null}}",
                   &out, &u, &err);
    cr_assert_eq(rc, COMPASS_EUPSTREAM);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert_str_eq(u.type, "server_error");
    cr_assert(strstr(u.message, "The server had an error"));
    cr_assert_eq(u.http_status, 200);
}

Test(openai, parse_garbage_is_eparse)
{
    compass_chat_response out;
    compass_upstream_error u;
    compass_err err;
    void *inst = mkinst(NULL, "k", NULL);
    cr_assert_eq(parse(inst, 200, "<html>oops</html>", &out, &u, &err), COMPASS_EPARSE);
    cr_assert(strstr(err.msg, "not JSON"), "%s", err.msg);
    cr_assert_eq(parse(inst, 200, "{\"id\":\"x\",\"choices\":[", &out, &u, &err),
                 COMPASS_EPARSE);
    cr_assert_eq(parse(inst, 200, "", &out, &u, &err), COMPASS_EPARSE);
    cr_assert_eq(parse(inst, 200, "[1,2]", &out, &u, &err), COMPASS_EPARSE);
    cr_assert(strstr(err.msg, "not an object"), "%s", err.msg);
    cr_assert_eq(parse(inst, 200, "{\"a\":1} trailing", &out, &u, &err), COMPASS_EPARSE);
}

Test(openai, parse_empty_choices_is_eparse)
{
    compass_chat_response out;
    compass_upstream_error u;
    compass_err err;
    void *inst = mkinst(NULL, "k", NULL);
    cr_assert_eq(parse(inst, 200, "{\"id\":\"x\",\"choices\":[]}", &out, &u, &err),
                 COMPASS_EPARSE);
    cr_assert(strstr(err.msg, "empty 'choices'"), "%s", err.msg);
    cr_assert_eq(parse(inst, 200, "{\"id\":\"x\"}", &out, &u, &err), COMPASS_EPARSE);
    cr_assert(strstr(err.msg, "no 'choices'"), "%s", err.msg);
}

/* ---------------------------------------------------------------------------------------- */
/* parse_stream_event                                                                        */
/* ---------------------------------------------------------------------------------------- */

Test(openai, stream_recorded_parallel_tool_calls)
{
    compass_upstream_error u;
    compass_err err;
    void *inst = mkinst(NULL, "k", NULL);
    compass_str body;
    const compass_chat_delta *d;
    size_t i, n, n_finish = 0, n_usage = 0, n_role = 0;
    int rc;

    compass_fakehost_req(fh);
    body = compass_fakehost_read_file(fh, OPENAI_TESTDATA "/stream_parallel_tools.sse");
    cr_assert_gt(body.len, 0);
    memset(&err, 0, sizeof(err));
    rc = compass_fakehost_feed_sse(fh, inst, body, &u, &err);
    cr_assert_eq(rc, COMPASS_STREAM_END, "rc %d %s", rc, err.msg);
    cr_assert_str_eq(compass_fakehost_content(fh), "Let me check both.");
    cr_assert_str_eq(compass_fakehost_tool_args(fh, 0), "{\"city\": \"Paris\"}");
    cr_assert_str_eq(compass_fakehost_tool_args(fh, 1), "{\"tz\": \"Europe/Paris\"}");
    n = compass_fakehost_n_deltas(fh);
    /* role, 2 content, 3 + 3 tool fragments, finish, usage */
    cr_assert_eq(n, 11, "deltas: %zu", n);
    for (i = 0; i < n; i++) {
        d = compass_fakehost_delta(fh, i);
        cr_assert(compass_str_eq(d->id, "chatcmpl-AbC123"));
        cr_assert(compass_str_eq(d->model, "gpt-4o-2024-08-06"));
        if (d->role) {
            n_role++;
            cr_assert_eq(d->role, COMPASS_ROLE_ASSISTANT);
        }
        if (d->finish_reason) {
            n_finish++;
            cr_assert_eq(d->finish_reason, COMPASS_FINISH_TOOL_CALLS);
        }
        if (d->usage.present) {
            n_usage++;
            cr_assert_eq(d->usage.prompt_tokens, 82);
            cr_assert_eq(d->usage.completion_tokens, 41);
            cr_assert_eq(d->usage.total_tokens, 123);
            cr_assert_eq(d->usage.cached_tokens, 64);
        }
    }
    cr_assert_eq(n_role, 1);
    cr_assert_eq(n_finish, 1);
    cr_assert_eq(n_usage, 1);
    d = compass_fakehost_delta(fh, 3);
    cr_assert_eq(d->tool_index, 0);
    cr_assert(compass_str_eq(d->tool_id, "call_aaa111"));
    cr_assert(compass_str_eq(d->tool_name, "get_weather"));
    d = compass_fakehost_delta(fh, 6);
    cr_assert_eq(d->tool_index, 1);
    cr_assert(compass_str_eq(d->tool_id, "call_bbb222"));
    cr_assert(compass_str_eq(d->tool_name, "get_time"));
    cr_assert_eq(compass_fakehost_delta(fh, 9)->finish_reason, COMPASS_FINISH_TOOL_CALLS);
    cr_assert_eq(compass_fakehost_delta(fh, 10)->usage.present, 1, "usage comes last");
}

static int feed(void *inst, const char *sse, compass_upstream_error *u, compass_err *err)
{
    compass_fakehost_req(fh);
    memset(u, 0, sizeof(*u));
    memset(err, 0, sizeof(*err));
    return compass_fakehost_feed_sse(fh, inst, compass_str_c(sse), u, err);
}

Test(openai, stream_unindexed_tool_calls_get_numbered)
{
    compass_upstream_error u;
    compass_err err;
    void *inst = mkinst(NULL, "k", NULL);
    int rc = feed(inst,
                  "data: {\"id\":\"m1\",\"model\":\"mistral-large\",\"choices\":[{\"index\":0,"
                  "\"delta\":{\"tool_calls\":[{\"id\":\"a1\",\"function\":{\"name\":\"f\","
                  "\"arguments\":\"{\\\"x\\\":1}\"}},{\"id\":\"b2\",\"function\":{\"name\":\"g\","
                  "\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n"
                  "data: [DONE]\n\n",
                  &u, &err);
    cr_assert_eq(rc, COMPASS_STREAM_END, "%s", err.msg);
    cr_assert_str_eq(compass_fakehost_tool_args(fh, 0), "{\"x\":1}");
    cr_assert_str_eq(compass_fakehost_tool_args(fh, 1), "{}");
}

Test(openai, stream_error_event_is_eupstream)
{
    compass_upstream_error u;
    compass_err err;
    void *inst = mkinst(NULL, "k", NULL);
    int rc = feed(inst,
                  "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},"
                  "\"finish_reason\":null}]}\n\n"
                  "data: {\"error\":{\"message\":\"The server had an error while processing "
                  "your request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
                  &u, &err);
    cr_assert_eq(rc, COMPASS_EUPSTREAM);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert_str_eq(u.type, "server_error");
    cr_assert(strstr(u.message, "The server had an error"));
    cr_assert_str_eq(compass_fakehost_content(fh), "Hi");
}

Test(openai, stream_invalid_json_is_eparse)
{
    compass_upstream_error u;
    compass_err err;
    void *inst = mkinst(NULL, "k", NULL);
    cr_assert_eq(feed(inst, "data: {\"id\":\"c\",\"choices\":[{\n\n", &u, &err), COMPASS_EPARSE);
    cr_assert(strstr(err.msg, "not a JSON object"), "%s", err.msg);
}

Test(openai, stream_empty_and_comment_events_emit_nothing)
{
    compass_stream_event ev;
    compass_upstream_error u;
    compass_err err;
    void *inst = mkinst(NULL, "k", NULL);
    compass_req *req = compass_fakehost_req(fh);
    memset(&ev, 0, sizeof(ev));
    cr_assert_eq(ops->parse_stream_event(inst, req, &ev, &u, &err), COMPASS_OK);
    ev.data = compass_str_c("  \n ");
    cr_assert_eq(ops->parse_stream_event(inst, req, &ev, &u, &err), COMPASS_OK);
    cr_assert_eq(feed(inst, ": ping\n\n: keep-alive\n\n", &u, &err), COMPASS_OK);
    ev.data = compass_str_c("{\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{},"
                            "\"finish_reason\":null}],\"usage\":null}");
    cr_assert_eq(ops->parse_stream_event(inst, req, &ev, &u, &err), COMPASS_OK);
    cr_assert_eq(compass_fakehost_n_deltas(fh), 0);
    ev.data = compass_str_c("[DONE]");
    cr_assert_eq(ops->parse_stream_event(inst, req, &ev, &u, &err), COMPASS_STREAM_END);
}

Test(openai, stream_refusal_and_length)
{
    compass_upstream_error u;
    compass_err err;
    void *inst = mkinst(NULL, "k", NULL);
    int rc = feed(inst,
                  "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
                  "\"assistant\",\"refusal\":\"I can't\"},\"finish_reason\":null}]}\n\n"
                  "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},"
                  "\"finish_reason\":\"length\"}]}\n\n"
                  "data: [DONE]\n\n",
                  &u, &err);
    cr_assert_eq(rc, COMPASS_STREAM_END);
    cr_assert_eq(compass_fakehost_n_deltas(fh), 2);
    cr_assert(compass_str_eq(compass_fakehost_delta(fh, 0)->refusal, "I can't"));
    cr_assert_eq(compass_fakehost_delta(fh, 1)->finish_reason, COMPASS_FINISH_LENGTH);
}

/* ---------------------------------------------------------------------------------------- */
/* classify_error                                                                            */
/* ---------------------------------------------------------------------------------------- */

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

static compass_header H(const char *n, const char *v)
{
    compass_header h;
    h.name = compass_str_c(n);
    h.value = compass_str_c(v);
    return h;
}

Test(openai, classify_401_invalid_api_key)
{
    compass_upstream_error u;
    classify(mkinst(NULL, "k", NULL), 401,
             "{\"error\":{\"message\":\"Incorrect API key provided: sk-abc***xyz. You can find "
             "your API key at https://platform.openai.com/account/api-keys.\",\"type\":"
             "\"invalid_request_error\",\"param\":null,\"code\":\"invalid_api_key\"}}",
             NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_AUTH);
    cr_assert_str_eq(u.type, "invalid_request_error");
    cr_assert_str_eq(u.code, "invalid_api_key");
    cr_assert(strstr(u.message, "Incorrect API key provided"));
    cr_assert_eq(u.retry_after_ms, -1);
}

static const char *RATE_BODY =
    "{\"error\":{\"message\":\"Rate limit reached for gpt-4o in organization org-x on requests "
    "per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms.\",\"type\":"
    "\"requests\",\"param\":null,\"code\":\"rate_limit_exceeded\"}}";

Test(openai, classify_429_rate_limit_with_retry_after)
{
    compass_upstream_error u;
    void *inst = mkinst(NULL, "k", NULL);
    compass_header hs[2];
    hs[0] = H("Retry-After", "20");
    hs[1] = H("x-ratelimit-reset-requests", "6m0s");
    classify(inst, 429, RATE_BODY, hs, 2, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RATE_LIMITED);
    cr_assert_str_eq(u.code, "rate_limit_exceeded");
    cr_assert_str_eq(u.type, "requests");
    cr_assert_eq(u.retry_after_ms, 20000);

    hs[0] = H("retry-after-ms", "1500");
    classify(inst, 429, RATE_BODY, hs, 1, &u);
    cr_assert_eq(u.retry_after_ms, 1500);

    classify(inst, 429, RATE_BODY, hs + 1, 1, &u);
    cr_assert_eq(u.retry_after_ms, 360000);

    hs[0] = H("x-ratelimit-reset-requests", "1s");
    classify(inst, 429, RATE_BODY, hs, 1, &u);
    cr_assert_eq(u.retry_after_ms, 1000);

    /* no headers: the message's "try again in 120ms" */
    classify(inst, 429, RATE_BODY, NULL, 0, &u);
    cr_assert_eq(u.retry_after_ms, 120);

    /* an HTTP date in the past means "now" */
    hs[0] = H("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT");
    classify(inst, 429, RATE_BODY, hs, 1, &u);
    cr_assert_eq(u.retry_after_ms, 0);

    /* an HTTP date ~ an hour from now */
    {
        char date[64];
        time_t t = time(NULL) + 3600;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        hs[0] = H("Retry-After", date);
        classify(inst, 429, RATE_BODY, hs, 1, &u);
        cr_assert(u.retry_after_ms > 3590000 && u.retry_after_ms <= 3600000, "%lld",
                  (long long)u.retry_after_ms);
    }
}

Test(openai, classify_429_insufficient_quota)
{
    compass_upstream_error u;
    classify(mkinst(NULL, "k", NULL), 429,
             "{\"error\":{\"message\":\"You exceeded your current quota, please check your "
             "plan and billing details.\",\"type\":\"insufficient_quota\",\"param\":null,"
             "\"code\":\"insufficient_quota\"}}",
             NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RATE_LIMITED);
    cr_assert_str_eq(u.code, "insufficient_quota");
    cr_assert_str_eq(u.type, "insufficient_quota");
    cr_assert_eq(u.retry_after_ms, -1);
    cr_assert(strstr(compass_fakehost_log(fh), "quota exhausted"));
}

Test(openai, classify_400_invalid_request_with_param)
{
    compass_upstream_error u;
    classify(mkinst(NULL, "k", NULL), 400,
             "{\"error\":{\"message\":\"This model's maximum context length is 128000 tokens. "
             "However, your messages resulted in 130000 tokens.\",\"type\":"
             "\"invalid_request_error\",\"param\":\"messages\",\"code\":"
             "\"context_length_exceeded\"}}",
             NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_BAD_REQUEST);
    cr_assert_str_eq(u.type, "invalid_request_error");
    cr_assert_str_eq(u.code, "context_length_exceeded");
    cr_assert(strstr(u.message, "maximum context length"));
    cr_assert(strstr(u.message, "(param: messages)"), "%s", u.message);
}

Test(openai, classify_400_content_filter)
{
    compass_upstream_error u;
    void *inst = mkinst(NULL, "k", NULL);
    classify(inst, 400,
             "{\"error\":{\"message\":\"The response was filtered due to the prompt "
             "triggering content management policy.\",\"type\":null,\"param\":\"prompt\","
             "\"code\":\"content_filter\",\"status\":400}}",
             NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_CONTENT_FILTER);
    cr_assert_str_eq(u.code, "content_filter");
    classify(inst, 400,
             "{\"error\":{\"message\":\"Your request was rejected as a result of our safety "
             "system.\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":"
             "\"content_policy_violation\"}}",
             NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_CONTENT_FILTER);
}

Test(openai, classify_404_model_not_found)
{
    compass_upstream_error u;
    classify(mkinst(NULL, "k", NULL), 404,
             "{\"error\":{\"message\":\"The model `gpt-9` does not exist or you do not have "
             "access to it.\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":"
             "\"model_not_found\"}}",
             NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_NOT_FOUND);
    cr_assert_str_eq(u.code, "model_not_found");
}

Test(openai, classify_500_and_503)
{
    compass_upstream_error u;
    void *inst = mkinst(NULL, "k", NULL);
    compass_header hs[1];
    classify(inst, 500,
             "{\"error\":{\"message\":\"The server had an error while processing your request. "
             "Sorry about that!\",\"type\":\"server_error\",\"param\":null,\"code\":null}}",
             NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert_str_eq(u.type, "server_error");
    cr_assert_str_eq(u.code, "");
    hs[0] = H("Retry-After", "3");
    classify(inst, 503,
             "{\"error\":{\"message\":\"The engine is currently overloaded, please try again "
             "later\",\"type\":\"server_error\",\"param\":null,\"code\":null}}",
             hs, 1, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert_eq(u.retry_after_ms, 3000);
    cr_assert(strstr(u.message, "overloaded"));
}

Test(openai, classify_html_502)
{
    compass_upstream_error u;
    classify(mkinst(NULL, "k", NULL), 502,
             "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>"
             "502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n"
             "</html>\r\n",
             NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert_str_eq(u.message, "upstream returned HTTP 502");
    cr_assert_str_eq(u.type, "server_error");
    cr_assert_str_eq(u.code, "");
    cr_assert_eq(u.retry_after_ms, -1);
}

Test(openai, classify_compatible_server_shapes)
{
    compass_upstream_error u;
    void *inst = mkinst(NULL, NULL, NULL);
    /* vLLM: top-level error object with an integer code */
    classify(inst, 400,
             "{\"object\":\"error\",\"message\":\"max_tokens must be at least 1\",\"type\":"
             "\"BadRequestError\",\"param\":null,\"code\":400}",
             NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_BAD_REQUEST);
    cr_assert_str_eq(u.message, "max_tokens must be at least 1");
    cr_assert_str_eq(u.code, "400");
    /* TGI: error as a string */
    classify(inst, 422, "{\"error\":\"Input validation error: `inputs` must have less than "
                        "4096 tokens\",\"error_type\":\"validation\"}",
             NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_BAD_REQUEST);
    cr_assert_str_eq(u.type, "validation");
    cr_assert(strstr(u.message, "Input validation error"));
    /* Mistral: message is a validation object */
    classify(inst, 422,
             "{\"object\":\"error\",\"message\":{\"detail\":[{\"type\":\"extra_forbidden\","
             "\"loc\":[\"body\",\"stream_options\",\"include_usage\"],\"msg\":\"Extra inputs "
             "are not permitted\",\"input\":true}]},\"type\":\"invalid_request_error\","
             "\"param\":null,\"code\":null}",
             NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_BAD_REQUEST);
    cr_assert(strstr(u.message, "Extra inputs are not permitted"), "%s", u.message);
    cr_assert_str_eq(u.type, "invalid_request_error");
    /* FastAPI */
    classify(inst, 404, "{\"detail\":\"Not Found\"}", NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_NOT_FOUND);
    cr_assert_str_eq(u.message, "Not Found");
    cr_assert_str_eq(u.type, "not_found_error");
}

Test(openai, classify_empty_body_uses_status)
{
    compass_upstream_error u;
    void *inst = mkinst(NULL, "k", NULL);
    classify(inst, 403, "", NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_AUTH);
    cr_assert_str_eq(u.message, "upstream returned HTTP 403");
    cr_assert_str_eq(u.type, "permission_error");
    classify(inst, 402,
             "{\"error\":{\"code\":402,\"message\":\"Insufficient credits\"}}", NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_AUTH);
    cr_assert_str_eq(u.code, "402");
    cr_assert_str_eq(u.message, "Insufficient credits");
    classify(inst, 408, NULL, NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    classify(inst, 409, "{}", NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
}

/* ---------------------------------------------------------------------------------------- */
/* robustness                                                                                */
/* ---------------------------------------------------------------------------------------- */

Test(openai, build_without_raw_and_with_broken_raw)
{
    compass_chat_request in;
    compass_http_request out;
    compass_err err;
    void *inst = mkinst(NULL, "k", NULL);
    static const char *const raws[] = {"", "not json", "{\"logprobs\":true,\"top_logprobs\":tr",
                                       "{\"a\":1,", "[1]", "{\"x\\u0041\":1}"};
    size_t i;
    for (i = 0; i < sizeof(raws) / sizeof(raws[0]); i++) {
        compass_req *req = compass_fakehost_req(fh);
        json_object *b;
        memset(&in, 0, sizeof(in));
        memset(&out, 0, sizeof(out));
        memset(&err, 0, sizeof(err));
        cr_assert_eq(compass_fakehost_parse_chat(fh, SIMPLE, &in, &err), 0);
        in.raw = compass_str_c(raws[i]);
        cr_assert_eq(ops->build_request(inst, req, &in, &out, &err), 0, "%s", err.msg);
        b = json_tokener_parse(out.body.ptr);
        cr_assert_not_null(b, "raw '%s' gave a broken body: %s", raws[i], out.body.ptr);
        cr_assert_eq(json_object_object_length(b) >= 2, 1);
        if (i == 2)
            cr_assert_eq(json_object_get_boolean(path(b, "logprobs")), 1,
                         "whole members before the break are kept");
        json_object_put(b);
    }
}

Test(openai, build_refuses_request_without_model)
{
    compass_chat_request in;
    compass_http_request out;
    compass_err err;
    void *inst = mkinst(NULL, "k", NULL);
    compass_req *req = compass_fakehost_req(fh);
    memset(&in, 0, sizeof(in));
    memset(&err, 0, sizeof(err));
    cr_assert_eq(compass_fakehost_parse_chat(fh, SIMPLE, &in, &err), 0);
    in.model = compass_str_c("");
    cr_assert_eq(ops->build_request(inst, req, &in, &out, &err), COMPASS_EINVAL);
    cr_assert(strstr(err.msg, "no model"), "%s", err.msg);
}

Test(openai, truncated_bodies_never_crash)
{
    static const char *const bodies[] = {
        NULL, /* RESP_PLAIN */
        "{\"error\":{\"message\":\"m\",\"type\":\"server_error\",\"param\":\"p\",\"code\":5}}",
        "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
        "\"id\":\"x\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
        "\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":1}}"};
    void *inst = mkinst(NULL, "k", NULL);
    size_t b, n;
    for (b = 0; b < sizeof(bodies) / sizeof(bodies[0]); b++) {
        const char *full = bodies[b] ? bodies[b] : RESP_PLAIN;
        size_t len = strlen(full);
        for (n = 0; n <= len; n++) {
            char buf[2048];
            compass_chat_response out;
            compass_upstream_error u;
            compass_err err;
            compass_stream_event ev;
            compass_req *req;
            int rc;
            memcpy(buf, full, n);
            buf[n] = '\0';
            rc = parse(inst, 200, buf, &out, &u, &err);
            cr_assert(rc == 0 || rc == COMPASS_EPARSE || rc == COMPASS_EUPSTREAM, "rc %d", rc);
            classify(inst, 500, buf, NULL, 0, &u);
            cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
            cr_assert(u.message[0]);
            req = compass_fakehost_req(fh);
            memset(&ev, 0, sizeof(ev));
            ev.data.ptr = buf;
            ev.data.len = n;
            rc = ops->parse_stream_event(inst, req, &ev, &u, &err);
            cr_assert(rc == 0 || rc == COMPASS_EPARSE || rc == COMPASS_EUPSTREAM, "rc %d", rc);
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* out of memory                                                                             */
/* ---------------------------------------------------------------------------------------- */

static const char *OOM_REQ =
    "{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"look\"},{\"type\":"
    "\"image_url\",\"image_url\":{\"url\":\"https://e.x/a.png\",\"detail\":\"low\"}}]},"
    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
    "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
    "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"ok\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":"
    "\"object\"}}}],\"tool_choice\":\"auto\",\"temperature\":0.2,\"logprobs\":true}";

Test(openai, oom_build_request_fails_cleanly)
{
    static const char *const opts[] = {"organization=org-1", "extra_headers=A: 1; B: 2", NULL};
    void *inst = mkinst(NULL, "sk-oom", opts);
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
        cr_assert_eq(compass_fakehost_parse_chat(fh, OOM_REQ, &in, &err), 0, "%s", err.msg);
        compass_fakehost_fail_alloc_at(fh, nth);
        rc = ops->build_request(inst, req, &in, &out, &err);
        compass_fakehost_fail_alloc_at(fh, 0);
        if (rc == COMPASS_OK) {
            saw_ok = 1;
            cr_assert_not_null(out.body.ptr);
        } else {
            cr_assert_eq(rc, COMPASS_ENOMEM, "nth %ld: rc %d (%s)", nth, rc, err.msg);
            cr_assert(err.msg[0]);
        }
    }
    cr_assert(saw_ok, "build_request never succeeded within 40 allocations");
    cr_assert_gt(nth, 3, "build_request should need several allocations");
}

Test(openai, oom_parse_response_fails_cleanly)
{
    static const char *body =
        "{\"id\":\"chatcmpl-1\",\"model\":\"gpt-4o\",\"created\":1,\"choices\":[{\"index\":0,"
        "\"message\":{\"role\":\"assistant\",\"content\":\"Hi\",\"refusal\":\"no\","
        "\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\","
        "\"arguments\":\"{}\"}},{\"id\":\"c2\",\"type\":\"function\",\"function\":{\"name\":"
        "\"g\",\"arguments\":\"{\\\"a\\\":1}\"}}]},\"finish_reason\":\"tool_calls\"}],"
        "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}";
    void *inst = mkinst(NULL, "k", NULL);
    long nth;
    int saw_ok = 0;
    for (nth = 1; nth <= 40 && !saw_ok; nth++) {
        compass_chat_response out;
        compass_upstream_error u;
        compass_err err;
        compass_http_response r = compass_fakehost_http(200, body);
        compass_req *req = compass_fakehost_req(fh);
        int rc;
        memset(&out, 0, sizeof(out));
        memset(&err, 0, sizeof(err));
        compass_fakehost_fail_alloc_at(fh, nth);
        rc = ops->parse_response(inst, req, &r, &out, &u, &err);
        compass_fakehost_fail_alloc_at(fh, 0);
        if (rc == COMPASS_OK) {
            saw_ok = 1;
            cr_assert_eq(out.n_tool_calls, 2);
            cr_assert(compass_str_eq(out.tool_calls[1].arguments, "{\"a\":1}"));
        } else {
            cr_assert_eq(rc, COMPASS_ENOMEM, "nth %ld: rc %d (%s)", nth, rc, err.msg);
        }
    }
    cr_assert(saw_ok, "parse_response never succeeded within 40 allocations");
    cr_assert_gt(nth, 5);
}

Test(openai, oom_instance_new_fails_cleanly)
{
    static const char *const opts[] = {"organization=org-1", "extra_headers=A: 1", NULL};
    long nth;
    int saw_ok = 0;
    for (nth = 1; nth <= 20 && !saw_ok; nth++) {
        compass_err err;
        void *inst;
        memset(&err, 0, sizeof(err));
        compass_fakehost_fail_alloc_at(fh, nth);
        inst = compass_fakehost_instance(fh, "d", NULL, "k", opts, &err);
        compass_fakehost_fail_alloc_at(fh, 0);
        if (inst)
            saw_ok = 1;
        else
            cr_assert_eq(err.code, COMPASS_ENOMEM, "nth %ld: %s", nth, err.msg);
    }
    cr_assert(saw_ok);
}

/* ---------------------------------------------------------------------------------------- */
/* The stream's two readers agree: the scanner reader (what parse_stream_event tries first)  */
/* against the json-c tree reader, on chat.completion.chunk wire bytes                        */
/* ---------------------------------------------------------------------------------------- */

#define D(json) "data: " json "\n\n"
#define HEAD                                                                                  \
    "{\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\",\"created\":1732240000,"     \
    "\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_1\",\"choices\":["
#define CH(delta, finish) HEAD "{\"index\":0,\"delta\":" delta ",\"logprobs\":null," \
                               "\"finish_reason\":" finish "}]}"

/* Real wire shapes (api.openai.com and compatible servers), then what goes wrong on the wire.
 * fast=1: the scanner reader must take every event itself; fast=0: it must leave at least one
 * to the tree reader (errors, bytes that are not strict JSON, duplicates, odd shapes). */
static const sd_case OAI_CORPUS[] = {
    {"text", 0,
     D(CH("{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}", "null"))
     D(CH("{\"content\":\"Hello\"}", "null")) D(CH("{\"content\":\" world\"}", "null"))
     D(CH("{}", "\"stop\"")) D(HEAD "],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,"
         "\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":4,\"audio_tokens\":0},"
         "\"completion_tokens_details\":{\"reasoning_tokens\":1}}}") "data: [DONE]\n\n"},
    {"escapes", 0,
     D(CH("{\"content\":\"a\\nb \\\"q\\\" back\\\\slash \\/ caf\\u00e9 \\ud83d\\ude00 "
          "ctl\\u0001\\b\\f\\r\\t end\"}", "null"))
     D(CH("{\"content\":\"\\u0000nul inside\"}", "null"))
     D("{\"id\":\"id\\u002d1\",\"model\":\"m\\/x\",\"choices\":[{\"index\":0,\"delta\":"
       "{\"role\":\"assist\\u0061nt\",\"refusal\":\"no\\n\"},\"finish_reason\":\"st\\u006fp\"}]}")
     D(CH("{\"content\":\"lone \\ud800 surrogate \\udc00\"}", "null"))},
    {"empty_and_role_only", 0,
     D(CH("{\"role\":\"assistant\"}", "null")) D(CH("{\"content\":\"\"}", "null"))
     D(CH("{\"role\":\"user\",\"content\":null}", "null"))
     D(CH("{\"role\":\"tool\"}", "null")) D(CH("{\"role\":\"system\"}", "null"))
     D(CH("{\"role\":\"developer\"}", "null")) D(CH("{\"role\":\"wizard\"}", "null"))
     D(CH("{\"role\":7,\"content\":8,\"refusal\":[]}", "null"))},
    {"tool_calls", 0,
     D(CH("{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":"
          "\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
          "\"arguments\":\"\"}}]}", "null"))
     D(CH("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"lo\"}}]}", "null"))
     D(CH("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"cation\\\": \\\"P\"}}]}",
          "null"))
     D(CH("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"aris\\\"}\"}}]}", "null"))
     D(CH("{}", "\"tool_calls\""))},
    {"parallel_tool_calls", 0,
     D(CH("{\"role\":\"assistant\",\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":"
          "\"function\",\"function\":{\"name\":\"a\",\"arguments\":\"\"}},{\"index\":1,\"id\":"
          "\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"b\",\"arguments\":\"{}\"}}]}",
          "null"))
     D(CH("{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"{\\\"x\\\":1}\"}}]}",
          "null"))
     D(CH("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":{\"obj\":[1,2]}}}]}", "null"))
     D(CH("{}", "\"tool_calls\""))},
    {"tool_calls_without_index", 0,
     D(CH("{\"tool_calls\":[{\"id\":\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}},"
          "{\"id\":\"c2\",\"function\":{\"name\":\"g\",\"arguments\":\"{\\\"a\\\":1}\"}}]}",
          "null"))
     D(CH("{\"tool_calls\":[{\"function\":{\"arguments\":\"more\"}},7,null]}", "null"))
     D(CH("{\"tool_calls\":[{\"index\":-3,\"id\":\"c3\",\"function\":null}]}", "\"stop\""))},
    {"function_call_legacy", 0,
     D(CH("{\"role\":\"assistant\",\"content\":null,\"function_call\":{\"name\":\"lookup\","
          "\"arguments\":\"\"}}", "null"))
     D(CH("{\"function_call\":{\"arguments\":\"{\\\"q\\\":\"}}", "null"))
     D(CH("{\"function_call\":{\"arguments\":{\"q\":\"x\"}}}", "null"))
     D(CH("{\"function_call\":\"not an object\"}", "null"))
     D(CH("{\"tool_calls\":null,\"function_call\":{\"name\":\"n\"}}", "null"))
     D(CH("{\"tool_calls\":[],\"function_call\":{\"name\":\"ignored\"}}", "null"))
     D(CH("{}", "\"function_call\""))},
    {"refusal", 0,
     D(CH("{\"role\":\"assistant\",\"content\":null,\"refusal\":\"\"}", "null"))
     D(CH("{\"refusal\":\"I'm sorry, I can't\"}", "null"))
     D(CH("{\"refusal\":\" help with that.\"}", "null")) D(CH("{}", "\"stop\""))},
    {"every_finish_reason", 0,
     D(CH("{}", "\"stop\"")) D(CH("{}", "\"length\"")) D(CH("{}", "\"tool_calls\""))
     D(CH("{}", "\"function_call\"")) D(CH("{}", "\"content_filter\"")) D(CH("{}", "\"error\""))
     D(CH("{}", "\"eos\"")) D(CH("{}", "\"end_turn\"")) D(CH("{}", "\"\""))
     D(CH("{}", "null")) D(CH("{}", "42")) D(CH("{}", "{\"x\":1}"))},
    {"usage", 0,
     D(HEAD "],\"usage\":{\"prompt_tokens\":62,\"completion_tokens\":1000}}")
     D(HEAD "],\"usage\":{\"prompt_tokens\":5,\"prompt_cache_hit_tokens\":3,"
         "\"completion_tokens\":1e3,\"total_tokens\":-0,\"completion_tokens_details\":null}}")
     D(HEAD "],\"usage\":{\"prompt_tokens\":123456789012345678901,\"completion_tokens\":1.5E-2,"
         "\"total_tokens\":\"7\"}}")
     D(HEAD "],\"usage\":{\"prompt_tokens\":9223372036854775807,\"completion_tokens\":5}}")
     D(HEAD "],\"usage\":{\"prompt_tokens\":-9223372036854775808,\"completion_tokens\":-5}}")
     D(HEAD "],\"usage\":7}") D(HEAD "],\"usage\":[]}")
     D("{\"id\":\"g\",\"choices\":[],\"x_groq\":{\"id\":\"req_1\",\"usage\":{\"prompt_tokens\":3,"
       "\"completion_tokens\":4,\"total_tokens\":7}}}")
     D("{\"id\":\"g\",\"choices\":[],\"usage\":null,\"x_groq\":{\"usage\":{\"prompt_tokens\":1}}}")
     D("{\"id\":\"g\",\"choices\":[],\"usage\":{\"prompt_tokens\":2},\"x_groq\":{\"usage\":"
       "{\"prompt_tokens\":1}}}")
     D("{\"id\":\"g\",\"x_groq\":{\"usage\":5}}") D("{\"id\":\"g\",\"x_groq\":[1]}")},
    {"null_members", 0,
     D("{\"id\":null,\"model\":null,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}],"
       "\"error\":null,\"object\":null}")
     D("{\"id\":\"a\",\"choices\":[{\"index\":null,\"delta\":null,\"finish_reason\":\"stop\"}]}")
     D("{\"id\":\"a\",\"choices\":null,\"usage\":null}")
     D("{\"id\":\"a\",\"choices\":[{\"delta\":{\"content\":\"no index\"}}]}")
     D("{\"id\":\"a\",\"choices\":{\"0\":{}}}") D("{}")},
    {"unknown_members_and_nesting", 0,
     D("{\"id\":\"u\",\"extra\":[[1,[2,{}]],{\"a\":[]},\"s\",true,false,null,-0.5e+3],"
       "\"choices\":[{\"index\":0,\"logprobs\":{\"content\":[{\"token\":\"Hi\",\"logprob\":"
       "-0.0001,\"bytes\":[72,105],\"top_logprobs\":[]}]},\"delta\":{\"content\":\"Hi\","
       "\"audio\":{\"id\":\"x\"}},\"finish_reason\":null,\"matched_stop\":null}],"
       "\"service_tier\":\"default\",\"obfuscation\":\"Xq\"}")
     D("{\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
       "\"!\"}}],\"created\":1e3,\"n\":-0,\"t\":1.5E-2,\"big\":1E+400,\"neg\":-1e-400}")},
    {"choice_selection", 0,
     D("{\"choices\":[{\"index\":1,\"delta\":{\"content\":\"one\"}},{\"index\":0,\"delta\":"
       "{\"content\":\"zero\"}},{\"index\":0,\"delta\":{\"content\":\"again\"}}]}")
     D("{\"choices\":[{\"index\":2,\"delta\":{\"content\":\"two\"}}]}")
     D("{\"choices\":[7,{\"index\":0,\"delta\":{\"content\":\"after a number\"}}]}")
     D("{\"choices\":[{\"index\":1},null,{\"index\":0,\"delta\":{\"content\":\"z\"}}]}")
     D("{\"choices\":[{\"index\":-0,\"delta\":{\"content\":\"minus zero\"}}]}")
     D("{\"choices\":[{\"index\":0.0,\"delta\":{\"content\":\"a double\"}}]}")
     D("{\"choices\":[{\"index\":1e0,\"delta\":{\"content\":\"1e0\"}},{\"index\":0.9,\"delta\":"
       "{\"content\":\"0.9\"}}]}")
     D("{\"choices\":[{\"index\":18446744073709551616,\"delta\":{\"content\":\"big\"}},"
       "{\"delta\":{\"content\":\"next\"}}]}")},
    {"whitespace", 0,
     D(" \t{ \"id\" : \"w\" , \"choices\" :\t[ { \"index\" : 0 , \"delta\" : { \"content\""
       " : \"spaced\" } , \"finish_reason\" : \"length\" } ] , \"usage\" : { \"prompt_tokens\""
       " : 1 } } \t")
     /* data lines are joined with '\n': whitespace between tokens */
     "data: {\"id\":\"multi\",\ndata:  \"choices\":[{\"delta\":\ndata: {\"content\":\"x\"}}]\n"
     "data: }\n\n"},
    {"azure_filters", 0,
     D("{\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\","
       "\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{\"hate\":"
       "{\"filtered\":false,\"severity\":\"safe\"},\"jailbreak\":{\"filtered\":false,"
       "\"detected\":false}}}]}")
     D("{\"choices\":[{\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":"
       "\"safe\"}},\"delta\":{\"content\":\"ok\"},\"finish_reason\":null,\"index\":0,"
       "\"logprobs\":null}],\"created\":1,\"id\":\"chatcmpl-az\",\"model\":\"gpt-4o\"}")
     D("{\"choices\":[{\"content_filter_results\":{},\"delta\":{},\"finish_reason\":"
       "\"content_filter\",\"index\":0}],\"id\":\"chatcmpl-az\",\"model\":\"gpt-4o\","
       "\"usage\":{\"completion_tokens\":1,\"prompt_tokens\":2,\"total_tokens\":3}}")},
    {"error_objects", 1,
     D(CH("{\"content\":\"partial\"}", "null"))
     D("{\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\","
       "\"param\":null,\"code\":null}}")},
    {"error_rate_limit", 1,
     D("{\"id\":\"x\",\"choices\":[],\"error\":{\"message\":\"Rate limit reached\",\"type\":"
       "\"requests\",\"code\":\"rate_limit_exceeded\",\"param\":\"model\"}}")},
    {"error_vllm_object", 1,
     D("{\"object\":\"error\",\"message\":\"bad\",\"type\":\"BadRequestError\",\"code\":400}")},
    {"error_string", 1, D("{\"error\":\"overloaded\",\"error_type\":\"overloaded\"}")},
    {"error_event_not_json", 1, "event: error\ndata: upstream exploded\n\n"},
    {"error_event_json", 1,
     "event: error\ndata: {\"message\":\"boom\",\"choices\":[{\"delta\":{\"content\":"
     "\"x\"}}]}\n\n"},
    {"error_false_alarm", 0,
     D("{\"object\":\"errors\",\"choices\":[{\"delta\":{\"content\":\"fine\"}}]}")},
    {"truncated", 1,
     D(CH("{\"content\":\"ok\"}", "null")) D("{\"id\":\"x\",\"choices\":[{\"delta\"")},
    {"truncated_string", 1, D("{\"id\":\"x\",\"choices\":[{\"delta\":{\"content\":\"abc}}]}")},
    {"trailing_comma", 2,
     D("{\"choices\":[{\"delta\":{\"content\":\"tc\"},}],}")
     D("{\"choices\":[{\"delta\":{\"content\":\"in a skipped member\"},\"logprobs\":"
       "{\"content\":[1,],}}]}")},
    {"raw_control_character", 1, D("{\"choices\":[{\"delta\":{\"content\":\"tab\there\"}}]}")},
    {"bad_escape", 1, D("{\"choices\":[{\"delta\":{\"content\":\"\\x41\"}}]}")},
    {"leading_zero", 1, D("{\"choices\":[{\"index\":00,\"delta\":{\"content\":\"z\"}}]}")},
    {"single_quotes", 1, D("{'choices':[{'delta':{'content':'q'}}]}")},
    {"comment", 1, D("{/* c */\"choices\":[{\"delta\":{\"content\":\"c\"}}]}")},
    {"trailing_bytes", 1, D("{\"choices\":[]} {}")},
    {"not_an_object_array", 1, D("[1,2]")},
    {"not_an_object_string", 1, D("\"text\"")},
    {"not_an_object_number", 1, D("42")},
    {"literal_case", 1, D("{\"choices\":[{\"delta\":{\"content\":\"t\"},\"x\":True}]}")},
    {"duplicate_keys", 3,
     D("{\"choices\":[{\"delta\":{\"content\":\"first\"}}],\"choices\":[{\"delta\":{\"content\":"
       "\"second\"}}]}")
     D("{\"choices\":[{\"delta\":{\"content\":\"a\",\"content\":\"b\"}}]}")
     D("{\"id\":\"1\",\"id\":\"2\",\"choices\":[]}")},
    {"escaped_keys", 2,
     D("{\"choices\":[{\"delta\":{\"con\\u0074ent\":\"escaped key\"}}]}")
     D("{\"\\u0069d\":\"x\",\"choices\":[]}")},
    {"index_not_a_number", 2,
     D("{\"choices\":[{\"index\":\"0\",\"delta\":{\"content\":\"s\"}}]}")
     D("{\"choices\":[{\"index\":true,\"delta\":{\"content\":\"b\"}}]}")},
    {"keepalives_and_done", 0, "data: \n\n: comment\n\nevent: ping\n\n" D("[DONE]")},
};

static int oai_fast(void *w, compass_req *req, const compass_stream_event *ev, compass_err *err)
{
    return oai_wire_parse_stream_event_fast(w, req, ev, err);
}

static int oai_full(void *w, compass_req *req, const compass_stream_event *ev,
                    compass_upstream_error *u, compass_err *err)
{
    return oai_wire_parse_stream_event_full(w, req, ev, u, err);
}

Test(openai, stream_readers_agree_on_the_wire_corpus)
{
    static const char head[] = "{\"choices\":[{\"delta\":{\"content\":\"deep\"}}],\"x\":";
    char at[600], over[600];
    /* the root object and 127 arrays are json-c's 128 levels; one more is past them */
    const sd_case depth[] = {
        {"depth_at_limit", 0, sd_nested(at, sizeof(at), head, 127, "}")},
        {"depth_over_limit", 1, sd_nested(over, sizeof(over), head, 128, "}")}};
    oai_wire wa, wb;
    compass_err err;
    sd_readers r;
    memset(&err, 0, sizeof(err));
    sd_open(&r, "openai");
    cr_assert_eq(oai_wire_init(&wa, compass_fakehost_host(r.fast_fh), "openai", "dep1", &err), 0);
    cr_assert_eq(oai_wire_init(&wb, compass_fakehost_host(r.full_fh), "openai", "dep1", &err), 0);
    r.fast_ctx = &wa;
    r.full_ctx = &wb;
    r.fast = oai_fast;
    r.full = oai_full;
    r.declined = OAI_WIRE_DECLINED;
    cr_assert_gt(sd_compare_all(&r, OAI_CORPUS, sizeof(OAI_CORPUS) / sizeof(OAI_CORPUS[0])), 60);
    cr_assert_eq(sd_compare_all(&r, depth, 2), 1); /* "deep"; the second is an error */
    oai_wire_release(&wa);
    oai_wire_release(&wb);
    sd_close(&r);
}

/* ---------------------------------------------------------------------------------------- */
/* parse_response's two readers agree: the scanner reader (what parse_response tries first)  */
/* against the json-c tree reader, on chat.completion bodies                                  */
/* ---------------------------------------------------------------------------------------- */

/* Each reader on its own oai_wire instance (and fake host, in response_diff.h). */
typedef struct rd_openai {
    rd_readers r;
    oai_wire wa, wb;
} rd_openai;

static int rd_fast(void *w, compass_req *rq, const compass_http_response *resp,
                   compass_chat_response *out, compass_err *err)
{
    return oai_wire_parse_response_fast(w, rq, resp, out, err);
}

static int rd_full(void *w, compass_req *rq, const compass_http_response *resp,
                   compass_chat_response *out, compass_upstream_error *u, compass_err *err)
{
    return oai_wire_parse_response_full(w, rq, resp, out, u, err);
}

static void rd_open_openai(rd_openai *o)
{
    compass_err err;
    memset(&err, 0, sizeof(err));
    rd_open(&o->r, "openai");
    cr_assert_eq(oai_wire_init(&o->wa, compass_fakehost_host(o->r.fast_fh), "openai", "dep1",
                               &err), 0);
    cr_assert_eq(oai_wire_init(&o->wb, compass_fakehost_host(o->r.full_fh), "openai", "dep1",
                               &err), 0);
    o->r.fast = rd_fast;
    o->r.full = rd_full;
    o->r.fast_ctx = &o->wa;
    o->r.full_ctx = &o->wb;
    o->r.declined = OAI_WIRE_DECLINED;
}

static void rd_close_openai(rd_openai *o)
{
    oai_wire_release(&o->wa);
    oai_wire_release(&o->wb);
    rd_close(&o->r);
}

#define MSG(m) "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1741569952," \
               "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"message\":" m               \
               ",\"logprobs\":null,\"finish_reason\":\"stop\"}]}"
#define FIN(f) "{\"id\":\"f\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","  \
               "\"content\":\"x\"},\"finish_reason\":" f "}]}"
#define USE(u) "{\"id\":\"u\",\"choices\":[{\"index\":0,\"message\":{\"content\":\"x\"}}]," \
               "\"usage\":" u "}"
#define CHS(c) "{\"id\":\"c\",\"choices\":" c "}"

/* chat.completion bodies as api.openai.com, Azure OpenAI and compatible servers send them,
 * then what goes wrong on the wire. */
static const rd_case RD_CORPUS[] = {
    {"plain", 1, 0, NULL /* RESP_PLAIN */},
    {"docs_example", 1, 0,
     "{\"id\":\"chatcmpl-123\",\"object\":\"chat.completion\",\"created\":1677652288,\"model\":"
     "\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,"
     "\"message\":{\"role\":\"assistant\",\"content\":\"\\n\\nHello there, how may I assist you "
     "today?\"},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"service_tier\":\"default\","
     "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21,"
     "\"completion_tokens_details\":{\"reasoning_tokens\":0,\"accepted_prediction_tokens\":0,"
     "\"rejected_prediction_tokens\":0}}}"},
    /* api.openai.com pretty-prints its bodies */
    {"pretty_printed", 1, 0,
     "{\n  \"id\": \"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\n  \"object\": "
     "\"chat.completion\",\n  \"created\": 1741570283,\n  \"model\": \"gpt-4o-2024-08-06\",\n"
     "  \"choices\": [\n    {\n      \"index\": 0,\n      \"message\": {\n        \"role\": "
     "\"assistant\",\n        \"content\": \"The image shows a wooden boardwalk extending "
     "through a lush green marshland.\",\n        \"refusal\": null,\n        \"annotations\": "
     "[]\n      },\n      \"logprobs\": null,\n      \"finish_reason\": \"stop\"\n    }\n  ],\n"
     "  \"usage\": {\n    \"prompt_tokens\": 1117,\n    \"completion_tokens\": 46,\n    "
     "\"total_tokens\": 1163,\n    \"prompt_tokens_details\": {\n      \"cached_tokens\": 0,\n"
     "      \"audio_tokens\": 0\n    },\n    \"completion_tokens_details\": {\n      "
     "\"reasoning_tokens\": 0,\n      \"audio_tokens\": 0,\n      "
     "\"accepted_prediction_tokens\": 0,\n      \"rejected_prediction_tokens\": 0\n    }\n  },\n"
     "  \"service_tier\": \"default\",\n  \"system_fingerprint\": \"fp_fc9f1d7035\"\n}\n"},
    {"whitespace_everywhere", 1, 0,
     " \r\n\t{ \"id\" :\"w\" , \"choices\" :\t[ { \"index\" : 0 , \"message\" : { \"content\""
     " : \"spaced\" } , \"finish_reason\" : \"length\" } ] , \"usage\" : { \"prompt_tokens\""
     " : 1 , \"prompt_tokens_details\" : { \"cached_tokens\" : 1 } } } \t\r\n"},
    {"escapes_and_unicode", 1, 0,
     MSG("{\"role\":\"assistant\",\"content\":\"a\\nb \\\"q\\\" back\\\\slash \\/ caf\\u00e9 "
         "\\ud83d\\ude00 ctl\\u0001\\b\\f\\r\\t end\",\"refusal\":\"no\\u0000nul\"}")},
    {"raw_utf8", 1, 0,
     MSG("{\"role\":\"assistant\",\"content\":\"caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac "
         "\xf0\x9f\x98\x80 and a stray \xff byte\"}")},
    {"lone_surrogates", 1, 0,
     MSG("{\"content\":\"lone \\ud800 high, \\udc00 low, \\ud83d\\u0041 broken pair\"}")},
    {"escaped_id_model_finish", 1, 0,
     "{\"id\":\"id\\u002d1\",\"model\":\"gpt\\/4o\",\"created\":2,\"choices\":[{\"index\":0,"
     "\"message\":{\"content\":\"x\"},\"finish_reason\":\"st\\u006fp\"}]}"},
    {"refusal", 1, 0,
     "{\"id\":\"chatcmpl-r\",\"object\":\"chat.completion\",\"created\":1,\"model\":"
     "\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
     "\"content\":null,\"refusal\":\"I'm sorry, I cannot assist with that request.\"},"
     "\"logprobs\":null,\"finish_reason\":\"stop\"}]}"},
    {"tool_calls", 1, 0,
     "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion\",\"created\":1699896916,\"model\":"
     "\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
     "null,\"tool_calls\":[{\"id\":\"call_abc123\",\"type\":\"function\",\"function\":{\"name\":"
     "\"get_current_weather\",\"arguments\":\"{\\n\\\"location\\\": \\\"Boston, MA\\\"\\n}\"}},"
     "{\"id\":\"call_def456\",\"type\":\"function\",\"function\":{\"name\":\"get_time\","
     "\"arguments\":\"{}\"}},{\"id\":\"call_ghi789\",\"type\":\"function\",\"function\":{\"name\":"
     "\"search\",\"arguments\":\"{\\\"q\\\":\\\"caf\\u00e9\\\"}\"}}],\"refusal\":null,"
     "\"annotations\":[]},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],\"usage\":{"
     "\"prompt_tokens\":82,\"completion_tokens\":17,\"total_tokens\":99}}"},
    {"tool_calls_odd_elements", 1, 0,
     MSG("{\"content\":\"\",\"tool_calls\":[{\"id\":\"c1\",\"function\":{\"name\":\"f\","
         "\"arguments\":{\"obj\":[1,2.5,\"s\"]}}},7,null,{\"id\":\"c2\",\"function\":null},"
         "{\"function\":{\"name\":\"g\"}},{\"id\":5,\"function\":{\"name\":[],\"arguments\":"
         "null}}]}")},
    {"function_call_legacy", 1, 0,
     "{\"id\":\"x\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
     "null,\"function_call\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}},"
     "\"finish_reason\":\"function_call\"}]}"},
    {"function_call_object_arguments", 1, 0,
     MSG("{\"function_call\":{\"name\":\"f\",\"arguments\":{\"a\":[true,null]}}}")},
    {"function_call_not_an_object", 1, 0, MSG("{\"function_call\":\"f\"}")},
    {"tool_calls_empty_then_function_call", 1, 0,
     MSG("{\"tool_calls\":[],\"function_call\":{\"name\":\"legacy\"}}")},
    {"tool_calls_null_then_function_call", 1, 0,
     MSG("{\"tool_calls\":null,\"function_call\":{\"name\":\"legacy\"}}")},
    {"tool_calls_and_function_call", 1, 0,
     MSG("{\"tool_calls\":[{\"id\":\"t\",\"function\":{\"name\":\"new\"}}],\"function_call\":"
         "{\"name\":\"old\"}}")},
    {"tool_calls_not_an_array", 1, 0, MSG("{\"tool_calls\":{\"id\":\"t\"}}")},
    {"finish_stop", 1, 0, FIN("\"stop\"")},
    {"finish_length", 1, 0, FIN("\"length\"")},
    {"finish_tool_calls", 1, 0, FIN("\"tool_calls\"")},
    {"finish_function_call", 1, 0, FIN("\"function_call\"")},
    {"finish_content_filter", 1, 0, FIN("\"content_filter\"")},
    {"finish_error", 1, 0, FIN("\"error\"")},
    {"finish_eos", 1, 0, FIN("\"eos\"")},
    {"finish_end_turn", 1, 0, FIN("\"end_turn\"")},
    {"finish_empty", 1, 0, FIN("\"\"")},
    {"finish_null", 1, 0, FIN("null")},
    {"finish_number", 1, 0, FIN("42")},
    {"finish_object", 1, 0, FIN("{\"type\":\"stop\"}")},
    {"usage_details", 1, 0,
     USE("{\"prompt_tokens\":2006,\"completion_tokens\":300,\"total_tokens\":2306,"
         "\"prompt_tokens_details\":{\"cached_tokens\":1920,\"audio_tokens\":0},"
         "\"completion_tokens_details\":{\"reasoning_tokens\":256,\"audio_tokens\":0,"
         "\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}")},
    {"usage_absent", 1, 0, MSG("{\"content\":\"no usage\"}")},
    {"usage_null", 1, 0, USE("null")},
    {"usage_not_an_object", 1, 0, USE("[1,2]")},
    {"usage_number", 1, 0, USE("7")},
    {"usage_empty", 1, 0, USE("{}")},
    {"usage_no_total", 1, 0, USE("{\"prompt_tokens\":62,\"completion_tokens\":1000}")},
    {"usage_deepseek_cache", 1, 0,
     USE("{\"prompt_tokens\":5,\"prompt_cache_hit_tokens\":3,\"prompt_cache_miss_tokens\":2,"
         "\"completion_tokens\":1,\"total_tokens\":6}")},
    {"usage_cache_both", 1, 0,
     USE("{\"prompt_cache_hit_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":4}}")},
    {"usage_odd_numbers", 1, 0,
     USE("{\"prompt_tokens\":1e3,\"completion_tokens\":1.5E-2,\"total_tokens\":-0,"
         "\"prompt_tokens_details\":{\"cached_tokens\":2.9},\"completion_tokens_details\":"
         "{\"reasoning_tokens\":-7}}")},
    {"usage_huge_numbers", 1, 0,
     USE("{\"prompt_tokens\":123456789012345678901,\"completion_tokens\":9223372036854775807,"
         "\"total_tokens\":0,\"prompt_tokens_details\":{\"cached_tokens\":1E+400}}")},
    {"usage_saturating_sum", 1, 0,
     USE("{\"prompt_tokens\":-9223372036854775808,\"completion_tokens\":-5}")},
    {"usage_wrong_types", 1, 0,
     USE("{\"prompt_tokens\":\"7\",\"completion_tokens\":true,\"total_tokens\":null,"
         "\"prompt_tokens_details\":null,\"completion_tokens_details\":[{\"reasoning_tokens\":"
         "1}]}")},
    {"usage_details_not_objects", 1, 0,
     USE("{\"prompt_tokens\":1,\"prompt_tokens_details\":5,\"completion_tokens_details\":"
         "\"x\"}")},
    {"content_null", 1, 0, MSG("{\"role\":\"assistant\",\"content\":null}")},
    {"content_absent", 1, 0, MSG("{\"role\":\"assistant\"}")},
    {"content_empty", 1, 0, MSG("{\"content\":\"\"}")},
    {"content_number", 1, 0, MSG("{\"content\":42}")},
    {"content_object", 1, 0, MSG("{\"content\":{\"text\":\"no\"}}")},
    {"content_parts", 1, 0,
     MSG("{\"content\":[{\"type\":\"text\",\"text\":\"Hello, \"},{\"type\":\"image_url\"},7,"
         "null,{\"type\":\"text\",\"text\":\"w\\u00f6rld\"},{\"text\":[]}]}")},
    {"content_parts_no_text", 1, 0, MSG("{\"content\":[{\"type\":\"image_url\"}]}")},
    {"content_parts_empty", 1, 0, MSG("{\"content\":[]}")},
    {"azure", 1, 0,
     "{\"choices\":[{\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":"
     "\"safe\"},\"protected_material_code\":{\"filtered\":false,\"detected\":false},"
     "\"protected_material_text\":{\"filtered\":false,\"detected\":false},\"self_harm\":"
     "{\"filtered\":false,\"severity\":\"safe\"},\"sexual\":{\"filtered\":false,\"severity\":"
     "\"safe\"},\"violence\":{\"filtered\":false,\"severity\":\"safe\"}},\"finish_reason\":"
     "\"stop\",\"index\":0,\"logprobs\":null,\"message\":{\"content\":\"Azure OpenAI Service "
     "is a cloud service.\",\"refusal\":null,\"role\":\"assistant\"}}],\"created\":1724285045,"
     "\"id\":\"chatcmpl-A0hW9ZdoPNYnB9Kq2Hkx5BCxqwFUQ\",\"model\":\"gpt-4o-2024-05-13\","
     "\"object\":\"chat.completion\",\"prompt_filter_results\":[{\"prompt_index\":0,"
     "\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":\"safe\"},"
     "\"jailbreak\":{\"filtered\":false,\"detected\":false},\"self_harm\":{\"filtered\":false,"
     "\"severity\":\"safe\"},\"sexual\":{\"filtered\":false,\"severity\":\"safe\"},"
     "\"violence\":{\"filtered\":false,\"severity\":\"safe\"}}}],\"system_fingerprint\":"
     "\"fp_abc28019ad\",\"usage\":{\"completion_tokens\":22,\"prompt_tokens\":18,"
     "\"total_tokens\":40,\"completion_tokens_details\":{\"reasoning_tokens\":0},"
     "\"prompt_tokens_details\":{\"cached_tokens\":0}}}"},
    {"azure_content_filtered", 1, 0,
     "{\"choices\":[{\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":"
     "\"safe\"},\"violence\":{\"filtered\":true,\"severity\":\"medium\"}},\"finish_reason\":"
     "\"content_filter\",\"index\":0,\"message\":{\"role\":\"assistant\"}}],\"created\":1,"
     "\"id\":\"chatcmpl-cf\",\"model\":\"gpt-4o\",\"object\":\"chat.completion\","
     "\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}],"
     "\"usage\":{\"completion_tokens\":5,\"prompt_tokens\":10,\"total_tokens\":15}}"},
    {"annotations_audio_logprobs", 1, 0,
     "{\"id\":\"chatcmpl-l\",\"object\":\"chat.completion\",\"created\":1702685778,\"model\":"
     "\"gpt-4o-search-preview\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
     "\"content\":\"See [example](https://e.x).\",\"annotations\":[{\"type\":\"url_citation\","
     "\"url_citation\":{\"end_index\":26,\"start_index\":4,\"title\":\"E\",\"url\":"
     "\"https://e.x\"}}],\"audio\":{\"id\":\"audio_1\",\"data\":\"UklGRg==\",\"expires_at\":1,"
     "\"transcript\":\"t\"}},\"logprobs\":{\"content\":[{\"token\":\"Hello\",\"logprob\":"
     "-0.31725305,\"bytes\":[72,101,108,108,111],\"top_logprobs\":[{\"token\":\"Hello\","
     "\"logprob\":-0.31725305,\"bytes\":[72,101,108,108,111]},{\"token\":\"Hi\",\"logprob\":"
     "-1.3190403,\"bytes\":null}]}],\"refusal\":null},\"finish_reason\":\"stop\"}],\"usage\":{"
     "\"prompt_tokens\":9,\"completion_tokens\":9,\"total_tokens\":18}}"},
    {"unknown_members", 1, 0,
     "{\"extra\":[[1,[2,{}]],{\"a\":[]},\"s\",true,false,null,-0.5e+3,1E+400],\"id\":\"u\","
     "\"choices\":[{\"index\":0,\"message\":{\"content\":\"hi\",\"reasoning_content\":"
     "\"think\",\"x\":{\"y\":[{}]}},\"finish_reason\":\"stop\",\"matched_stop\":null,"
     "\"stop_reason\":2}],\"error\":null,\"object\":null,\"service_tier\":\"default\","
     "\"x_groq\":{\"usage\":{\"prompt_tokens\":1}},\"kv_transfer_params\":null}"},
    {"created_odd", 1, 0,
     "{\"id\":\"t\",\"created\":1.7e9,\"choices\":[{\"message\":{\"content\":\"x\"}}]}"},
    {"created_string", 1, 0,
     "{\"id\":7,\"model\":null,\"created\":\"1741569952\",\"choices\":[{\"message\":{}}]}"},
    {"object_not_error", 1, 0,
     "{\"object\":\"errors\",\"choices\":[{\"message\":{\"content\":\"fine\"}}]}"},
    {"n3_choices", 1, 0,
     "{\"id\":\"n\",\"choices\":[{\"index\":0,\"message\":{\"content\":\"zero\"},"
     "\"finish_reason\":\"stop\"},{\"index\":1,\"message\":{\"content\":\"one\"},"
     "\"finish_reason\":\"length\"},{\"index\":2,\"message\":{\"content\":\"two\"},"
     "\"finish_reason\":\"stop\"}]}"},
    {"choices_out_of_order", 1, 0,
     "{\"choices\":[{\"index\":1,\"message\":{\"content\":\"one\"}},{\"index\":0,\"message\":"
     "{\"content\":\"zero\"},\"finish_reason\":\"length\"},{\"index\":0,\"message\":"
     "{\"content\":\"again\"}}]}"},
    {"choice_without_index", 1, 0,
     "{\"choices\":[{\"message\":{\"content\":\"no index\"},\"finish_reason\":\"stop\"}]}"},
    {"choice_index_null", 1, 0, CHS("[{\"index\":null,\"message\":{\"content\":\"n\"}}]")},
    {"choice_index_minus_zero", 1, 0, CHS("[{\"index\":-0,\"message\":{\"content\":\"m\"}}]")},
    {"choice_index_doubles", 1, 0,
     CHS("[{\"index\":1e0,\"message\":{\"content\":\"1e0\"}},{\"index\":0.9,\"message\":"
         "{\"content\":\"0.9\"}}]")},
    {"choice_index_huge", 1, 0,
     CHS("[{\"index\":18446744073709551616,\"message\":{\"content\":\"big\"}},{\"message\":"
         "{\"content\":\"next\"}}]")},
    {"other_status", 1, 201, MSG("{\"content\":\"created\"}")},
    /* errors: the tree reader words them */
    {"error_in_200", 0, 0,
     "{\"error\":{\"message\":\"The server had an error while processing your request. Sorry "
     "about that!\",\"type\":\"server_error\",\"param\":null,\"code\":null}}"},
    {"error_with_choices", 0, 0,
     "{\"id\":\"x\",\"choices\":[{\"index\":0,\"message\":{\"content\":\"x\"}}],\"error\":"
     "{\"message\":\"Rate limit reached\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\","
     "\"param\":\"model\"}}"},
    {"error_string", 0, 0, "{\"error\":\"overloaded\",\"error_type\":\"overloaded\"}"},
    {"error_false", 0, 0, "{\"error\":false,\"choices\":[{\"message\":{}}]}"},
    {"error_vllm_object", 0, 400,
     "{\"object\":\"error\",\"message\":\"bad\",\"type\":\"BadRequestError\",\"code\":400}"},
    {"error_object_escaped", 0, 0,
     "{\"object\":\"err\\u006fr\",\"choices\":[{\"message\":{\"content\":\"x\"}}]}"},
    {"error_fastapi_detail", 0, 422, "{\"detail\":[{\"loc\":[\"body\"],\"msg\":\"bad\"}]}"},
    {"error_status_500", 0, 500, "{\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}"},
    /* shapes the tree reader refuses */
    {"choices_absent", 0, 0, "{\"id\":\"x\"}"},
    {"choices_null", 0, 0, CHS("null")},
    {"choices_empty", 0, 0, CHS("[]")},
    {"choices_object", 0, 0, CHS("{\"0\":{\"message\":{}}}")},
    {"choices_first_not_object", 0, 0, CHS("[7,{\"index\":0,\"message\":{\"content\":\"z\"}}]")},
    {"choices_null_element", 0, 0,
     CHS("[{\"index\":1,\"message\":{}},null,{\"index\":0,\"message\":{}}]")},
    {"choices_no_zero", 0, 0, CHS("[{\"index\":1,\"message\":{\"content\":\"one\"}}]")},
    {"message_absent", 0, 0, CHS("[{\"index\":0,\"text\":\"completions API\"}]")},
    {"message_null", 0, 0, CHS("[{\"index\":0,\"message\":null}]")},
    {"message_string", 0, 0, CHS("[{\"index\":0,\"message\":\"hi\"}]")},
    {"not_json_html", 0, 502, "<html><body>Bad Gateway</body></html>"},
    {"not_json_empty", 0, 0, ""},
    {"not_json_blank", 0, 0, " \n"},
    {"not_an_object_array", 0, 0, "[1,2]"},
    {"not_an_object_null", 0, 0, "null"},
    {"not_an_object_string", 0, 0, "\"chat.completion\""},
    {"truncated", 0, 0, "{\"id\":\"x\",\"choices\":[{\"index\":0,\"message\":{\"content\":\"ab"},
    {"trailing_bytes", 0, 0, "{\"id\":\"x\",\"choices\":[{\"message\":{}}]} {}"},
    {"trailing_comma", 0, 0, CHS("[{\"message\":{\"content\":\"tc\"},}]")},
    {"trailing_comma_skipped_member", 0, 0,
     "{\"choices\":[{\"message\":{\"content\":\"c\"}}],\"logprobs\":{\"content\":[1,],}}"},
    {"raw_control_character", 0, 0, MSG("{\"content\":\"tab\there\"}")},
    {"bad_escape", 0, 0, MSG("{\"content\":\"\\x41\"}")},
    {"leading_zero", 0, 0, "{\"created\":017,\"choices\":[{\"message\":{}}]}"},
    {"nan", 0, 0, "{\"created\":NaN,\"choices\":[{\"message\":{}}]}"},
    {"single_quotes", 0, 0, "{'choices':[{'message':{'content':'q'}}]}"},
    {"comment", 0, 0, "{/* c */\"choices\":[{\"message\":{\"content\":\"c\"}}]}"},
    {"literal_case", 0, 0, CHS("[{\"message\":{\"content\":\"t\"},\"x\":True}]")},
    {"duplicate_choices", 0, 0,
     "{\"choices\":[{\"message\":{\"content\":\"first\"}}],\"choices\":[{\"message\":"
     "{\"content\":\"second\"}}]}"},
    {"duplicate_content", 0, 0, MSG("{\"content\":\"a\",\"content\":\"b\"}")},
    {"duplicate_id", 0, 0, "{\"id\":\"1\",\"id\":\"2\",\"choices\":[{\"message\":{}}]}"},
    {"duplicate_message", 0, 0,
     CHS("[{\"message\":{\"content\":\"a\"},\"message\":{\"content\":\"b\"}}]")},
    {"duplicate_usage_detail", 0, 0,
     USE("{\"prompt_tokens_details\":{\"cached_tokens\":1,\"cached_tokens\":2}}")},
    /* usage is read in place: each of its kept members, and usage itself, may come once */
    {"duplicate_usage", 0, 0,
     "{\"id\":\"u\",\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":"
     "{\"prompt_tokens\":1},\"usage\":{\"prompt_tokens\":2}}"},
    {"duplicate_usage_null_first", 0, 0,
     "{\"usage\":null,\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":"
     "{\"prompt_tokens\":2}}"},
    {"duplicate_usage_member", 0, 0, USE("{\"prompt_tokens\":1,\"prompt_tokens\":2}")},
    {"duplicate_usage_details", 0, 0,
     USE("{\"completion_tokens_details\":{\"reasoning_tokens\":1},"
         "\"completion_tokens_details\":{\"reasoning_tokens\":2}}")},
    {"duplicate_usage_details_not_object", 0, 0,
     USE("{\"prompt_tokens_details\":7,\"prompt_tokens_details\":{\"cached_tokens\":2}}")},
    {"escaped_usage_detail_key", 0, 0,
     USE("{\"prompt_tokens_details\":{\"cached\\u005ftokens\":3}}")},
    {"usage_skipped_duplicates", 1, 0,
     USE("{\"audio\":1,\"audio\":2,\"prompt_tokens_details\":{\"audio_tokens\":1,"
         "\"audio_tokens\":2,\"cached_tokens\":5},\"prompt_tokens\":4}")},
    {"escaped_key", 0, 0, MSG("{\"con\\u0074ent\":\"escaped key\"}")},
    {"escaped_top_key", 0, 0, "{\"\\u0069d\":\"x\",\"choices\":[{\"message\":{}}]}"},
    {"escaped_usage_key", 0, 0, USE("{\"prompt\\u005ftokens\":3}")},
    {"index_string", 0, 0, CHS("[{\"index\":\"0\",\"message\":{\"content\":\"s\"}}]")},
    {"index_bool", 0, 0, CHS("[{\"index\":false,\"message\":{\"content\":\"b\"}}]")},
};

Test(openai, response_readers_agree_on_the_wire_corpus)
{
    static const char head[] = "{\"choices\":[{\"message\":{\"content\":\"deep\"}}],\"x\":";
    char at[600], over[600];
    rd_openai o;
    size_t i, fast = 0;
    rd_open_openai(&o);
    for (i = 0; i < sizeof(RD_CORPUS) / sizeof(RD_CORPUS[0]); i++) {
        const rd_case *c = &RD_CORPUS[i];
        int taken = rd_compare(&o.r, c->name, c->status, c->body ? c->body : RESP_PLAIN);
        cr_assert_eq(taken, c->fast, "%s: the scanner reader %s the body", c->name,
                     taken ? "took" : "left");
        fast += (size_t)taken;
    }
    cr_assert_gt(fast, 60);
    /* the root object and 127 arrays are json-c's 128 levels; one more is past them
     * (sd_nested writes an SSE event: skip its "data: "; the blank line is whitespace) */
    cr_assert(rd_compare(&o.r, "depth_at_limit", 0, rd_nested(at, sizeof(at), head, 127, "}")));
    cr_assert(!rd_compare(&o.r, "depth_over_limit", 0, rd_nested(over, sizeof(over), head, 128,
                                                                  "}")));
    rd_close_openai(&o);
}

/* Every proper prefix of a body is left to the tree reader, which answers as it always did. */
Test(openai, response_readers_agree_on_truncated_bodies)
{
    rd_openai o;
    size_t i;
    rd_open_openai(&o);
    for (i = 0; i < sizeof(RD_CORPUS) / sizeof(RD_CORPUS[0]); i++) {
        const rd_case *c = &RD_CORPUS[i];
        const char *body = c->body ? c->body : RESP_PLAIN;
        size_t len = strlen(body), k;
        char buf[4096];
        if (!c->fast)
            continue;
        while (len && strchr(" \t\r\n", body[len - 1]))
            len--;
        cr_assert_lt(len, sizeof(buf));
        for (k = 0; k < len; k++) {
            memcpy(buf, body, k);
            buf[k] = '\0';
            cr_assert(!rd_compare(&o.r, c->name, 200, buf), "%s: prefix of %zu bytes taken",
                      c->name, k);
        }
    }
    rd_close_openai(&o);
}

/* ---------------------------------------------------------------------------------------- */
/* The request writer's fast paths against the plain code they stand for                     */
/* ---------------------------------------------------------------------------------------- */

/* jw_strval as it was written before it copied runs found a word at a time. */
static size_t ref_escape(const char *s, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, o = 0;
    out[o++] = '"';
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default: break;
        }
        if (esc) {
            memcpy(out + o, esc, 2);
            o += 2;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[c >> 4];
            out[o + 5] = hex[c & 15];
            o += 6;
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    return o;
}

/* Builds a request whose one message holds content[0..n) and asserts that the body carries
 * it exactly as ref_escape writes it. */
static void build_escapes_as_before(void *inst, const char *content, size_t n)
{
    compass_message m;
    compass_chat_request in;
    compass_http_request out;
    compass_err err;
    char want[700], body_want[800];
    size_t wl, bl;
    int rc;
    cr_assert_lt(n, 100);
    memset(&m, 0, sizeof(m));
    m.role = COMPASS_ROLE_USER;
    m.has_content = 1;
    m.content.ptr = content;
    m.content.len = n;
    memset(&in, 0, sizeof(in));
    in.size = sizeof(in);
    in.model = compass_str_c("m");
    in.messages = &m;
    in.n_messages = 1;
    memset(&out, 0, sizeof(out));
    out.size = sizeof(out);
    memset(&err, 0, sizeof(err));
    rc = ops->build_request(inst, compass_fakehost_req(fh), &in, &out, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    wl = ref_escape(content, n, want);
    bl = (size_t)snprintf(body_want, sizeof(body_want),
                          "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":%.*s}]}",
                          (int)wl, want);
    cr_assert_eq(out.body.len, bl, "%zu bytes: %s vs %s", n, out.body.ptr, body_want);
    cr_assert(!memcmp(out.body.ptr, body_want, bl), "%zu bytes: %s vs %s", n, out.body.ptr,
              body_want);
}

Test(openai, build_escapes_each_byte_at_every_offset)
{
    static const char fill[] = {'a', ' ', '~', '\x80', '\xa2', '\xdc', '\xff'};
    void *inst = mkinst(NULL, NULL, NULL);
    char buf[64];
    unsigned c;
    size_t off, tail, f;
    for (c = 0; c < 256; c++) {
        /* every byte but the plain ones in between, which are checked as fillers and below */
        if (c > 0x22 && c < 0x7f && c != '\\' && c != 'a')
            continue;
        for (off = 0; off <= 20; off++) {
            for (tail = 0; tail <= 12; tail++) {
                f = (c + off + tail) % sizeof(fill);
                memset(buf, fill[f], off);
                buf[off] = (char)c;
                memset(buf + off + 1, fill[(f + 3) % sizeof(fill)], tail);
                build_escapes_as_before(inst, buf, off + 1 + tail);
            }
        }
    }
    /* runs of plain bytes of every length, and two escapes side by side */
    for (off = 0; off <= 40; off++) {
        memset(buf, 'x', off);
        build_escapes_as_before(inst, buf, off);
        memcpy(buf + off, "\"\\\x7f\n", 4);
        build_escapes_as_before(inst, buf, off + 4);
    }
}

Test(openai, build_escapes_random_strings_as_before)
{
    static const char alphabet[] = "ab \"\\\x01\x1f\x7f\x80\xa2\xdc\xff\n\t\r\b\f\x20\x21\x5b";
    void *inst = mkinst(NULL, NULL, NULL);
    unsigned seed = 4242;
    char buf[80];
    int trial;
    for (trial = 0; trial < 3000; trial++) {
        size_t len, k;
        seed = seed * 1103515245u + 12345u;
        len = (seed >> 16) % sizeof(buf);
        for (k = 0; k < len; k++) {
            seed = seed * 1103515245u + 12345u;
            buf[k] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
        }
        build_escapes_as_before(inst, buf, len);
    }
}

/* The number rule the writer had before its fast path: the shortest of %.15g and %.17g that
 * reads back exactly, with a '.' whatever the locale. */
static size_t ref_double(double d, char *buf)
{
    int n = snprintf(buf, OAI_WIRE_DOUBLE_CAP, "%.15g", d), i;
    if (strtod(buf, NULL) != d)
        n = snprintf(buf, OAI_WIRE_DOUBLE_CAP, "%.17g", d);
    for (i = 0; i < n; i++)
        if (buf[i] == ',')
            buf[i] = '.';
    return (size_t)n;
}

/* Asserts that the writer prints d as the rule does, and that the fast path, when it takes
 * d, prints the same. Returns whether the fast path took it. */
static int double_same(double d)
{
    char want[OAI_WIRE_DOUBLE_CAP], got[OAI_WIRE_DOUBLE_CAP], fast[OAI_WIRE_DOUBLE_CAP];
    size_t wl = ref_double(d, want), gl = oai_wire_double_text(d, got);
    size_t fl = oai_wire_double_fast(d, fast);
    cr_assert_eq(gl, wl, "%.17g: \"%.*s\" vs \"%s\"", d, (int)gl, got, want);
    cr_assert(!memcmp(got, want, wl), "%.17g: \"%.*s\" vs \"%s\"", d, (int)gl, got, want);
    cr_assert_eq(got[gl], '\0', "%.17g: not NUL-terminated", d);
    if (fl) {
        cr_assert_eq(fl, wl, "%.17g: fast \"%.*s\" vs \"%s\"", d, (int)fl, fast, want);
        cr_assert(!memcmp(fast, want, wl), "%.17g: fast \"%.*s\" vs \"%s\"", d, (int)fl, fast,
                  want);
    }
    return fl != 0;
}

/* The double next to d, one unit in the last place up (up = 1) or down. */
static double ulp_step(double d, int up)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    if ((d > 0) == (up > 0))
        u++;
    else
        u--;
    memcpy(&d, &u, sizeof(d));
    return d;
}

Test(openai, double_fast_path_prints_what_snprintf_did)
{
    /* what clients send for temperature, top_p and the penalties, and numbers like them */
    static const double taken[] = {
        0, -0.0, 0.2, 0.7, 1, 1.5, 2, 0.95, 0.9, 0.1, 0.3, 0.05, 0.01, 1.25, -0.5, -2,
        -1.999, 0.333, 0.6667, 123456.789, 1e-4, 0.00012, 0.0001234, 99.99999999,
        1234567.12345678, 999999999999999, 100, 1e14, 281474976710656, 0.12345678,
        -123456789.5, 42,
    };
    /* what it must leave to snprintf (exponents, more digits than it reads) */
    static const double left[] = {
        1e-5, 9.9e-5, 1e15, 1e16, 1e300, -1e300, 5e-324, 2.2250738585072014e-308,
        1.7976931348623157e308, 0.1 + 0.2, 1.0 / 3, 3.141592653589793, 0.123456789,
        1234567890123456.0, 9007199254740993.0, 1e-10,
    };
    unsigned long long seed = 99;
    size_t i;
    int m;
    for (i = 0; i < sizeof(taken) / sizeof(taken[0]); i++)
        cr_assert(double_same(taken[i]), "%.17g: the fast path left it", taken[i]);
    for (i = 0; i < sizeof(left) / sizeof(left[0]); i++)
        cr_assert_not(double_same(left[i]), "%.17g: the fast path took it", left[i]);
    /* k / 10^m for random k and m, and the doubles just beside each (which the fast path
     * must either print exactly as the rule does or leave) */
    for (i = 0; i < 200000; i++) {
        double d;
        int64_t k;
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        m = (int)((seed >> 60) % 11);
        k = (int64_t)((seed >> 11) % (i % 3 ? 100000ULL : 1000000000000000ULL));
        d = (double)k;
        while (m--)
            d /= 10;
        if (seed & 1)
            d = -d;
        double_same(d);
        double_same(ulp_step(d, 1));
        double_same(ulp_step(d, -1));
    }
    /* random bit patterns: every exponent */
    for (i = 0; i < 100000; i++) {
        double d;
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        memcpy(&d, &seed, sizeof(d));
        if (d != d || d - d != 0)
            continue; /* NaN and infinities are written as null */
        double_same(d);
    }
}

Test(openai, build_writes_sampling_fields_through_the_fast_path)
{
    compass_http_request out;
    void *inst = mkinst(NULL, "k", NULL);
    json_object *b = build(inst,
                           "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                           "\"temperature\":0,\"top_p\":1e-5,\"presence_penalty\":-0.0,"
                           "\"frequency_penalty\":0.30000000000000004,\"max_tokens\":7,"
                           "\"seed\":-9223372036854775808}",
                           &out);
    cr_assert(strstr(out.body.ptr, "\"temperature\":0,"), "%s", out.body.ptr);
    cr_assert(strstr(out.body.ptr, "\"top_p\":1e-05,"), "%s", out.body.ptr);
    cr_assert(strstr(out.body.ptr, "\"presence_penalty\":-0,"), "%s", out.body.ptr);
    cr_assert(strstr(out.body.ptr, "\"frequency_penalty\":0.30000000000000004"), "%s",
              out.body.ptr);
    cr_assert(strstr(out.body.ptr, "\"max_tokens\":7,"), "%s", out.body.ptr);
    cr_assert(strstr(out.body.ptr, "\"seed\":-9223372036854775808"), "%s", out.body.ptr);
    json_object_put(b);
}

/* ---------------------------------------------------------------------------------------- */
/* Characters json-c 0.16 alone would replace (pair_cases.h), as the user sees them, from    */
/* either reader                                                                             */
/* ---------------------------------------------------------------------------------------- */

typedef struct pair_ctx {
    oai_wire w; /* for the scanner reader alone */
    void *inst;
} pair_ctx;

static void pair_ctx_run(void (*f)(void *ctx, const char *head, size_t i))
{
    pair_ctx c;
    compass_err err;
    memset(&err, 0, sizeof(err));
    cr_assert_eq(oai_wire_init(&c.w, compass_fakehost_host(fh), "openai", "dep1", &err), 0);
    c.inst = mkinst(NULL, "k", NULL);
    pair_each(f, &c);
    oai_wire_release(&c.w);
}

/* A chat.completion with case i in the content, the refusal and a tool call's arguments. */
static void response_pair(void *ctx, const char *head, size_t i)
{
    pair_ctx *c = ctx;
    char b[640];
    compass_http_response resp = compass_fakehost_http(
        200, pair_fill(b, sizeof(b),
                       "{^\"id\":\"c\",\"object\":\"chat.completion\",\"model\":\"m\",\"choices\":"
                       "[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"a@b\","
                       "\"refusal\":\"r@\",\"tool_calls\":[{\"id\":\"t\",\"type\":\"function\","
                       "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"q\\\":\\\"a@\\\"}\"}}]},"
                       "\"finish_reason\":\"stop\"}]}",
                       head, i));
    compass_chat_response out = {.size = sizeof(out)};
    compass_upstream_error u;
    compass_err err = {0};
    cr_assert_eq(oai_wire_parse_response_fast(&c->w, compass_fakehost_req(fh), &resp, &out, &err),
                 *head ? OAI_WIRE_DECLINED : 0, "%s", b);
    cr_assert_eq(parse(c->inst, 200, b, &out, &u, &err), 0, "%s", err.msg);
    cr_assert(pair_is(out.content, "a", i, "b"), "%s", b);
    cr_assert(pair_is(out.refusal, "r", i, ""), "%s", b);
    cr_assert_eq(out.n_tool_calls, 1);
    cr_assert(pair_is(out.tool_calls[0].arguments, "{\"q\":\"a", i, "\"}"), "%s", b);
}

Test(openai, response_keeps_characters_json_c_would_replace)
{
    pair_ctx_run(response_pair);
}

/* A chunk with case i in the delta's content and a tool call's arguments. */
static void stream_pair(void *ctx, const char *head, size_t i)
{
    pair_ctx *c = ctx;
    char data[512], sse[600];
    compass_stream_event ev = {0};
    compass_upstream_error u;
    compass_err err = {0};
    ev.data = compass_str_c(pair_fill(
        data, sizeof(data),
        "{^\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a@b\",\"tool_calls\":"
        "[{\"index\":0,\"id\":\"t\",\"function\":{\"name\":\"f\",\"arguments\":"
        "\"{\\\"q\\\":\\\"a@\\\"}\"}}]},\"finish_reason\":null}]}",
        head, i));
    cr_assert_eq(oai_wire_parse_stream_event_fast(&c->w, compass_fakehost_req(fh), &ev, &err),
                 *head ? OAI_WIRE_DECLINED : COMPASS_OK, "%s", data);
    snprintf(sse, sizeof(sse), "data: %s\n\ndata: [DONE]\n\n", data);
    cr_assert_eq(feed(c->inst, sse, &u, &err), COMPASS_STREAM_END, "%s", err.msg);
    cr_assert(pair_is(compass_str_c(compass_fakehost_content(fh)), "a", i, "b"), "%s", data);
    cr_assert(pair_is(compass_str_c(compass_fakehost_tool_args(fh, 0)), "{\"q\":\"a", i, "\"}"),
              "%s", data);
}

Test(openai, stream_keeps_characters_json_c_would_replace)
{
    pair_ctx_run(stream_pair);
}

/* An upstream's error message reaches the client. */
static void classify_400(void *inst, const char *body, compass_upstream_error *u)
{
    classify(inst, 400, body, NULL, 0, u);
}

Test(openai, error_message_keeps_characters_json_c_would_replace)
{
    pair_error_each("{^\"error\":{\"message\":\"bad @\",\"type\":\"invalid_request_error\"}}",
                    classify_400, mkinst(NULL, "k", NULL));
}
