/*
 * Tests for the anthropic provider on the fake host, on wire bytes shaped as Anthropic's
 * Messages API reference documents them (requests, responses, SSE streams, error bodies).
 */
#include <criterion/criterion.h>

#include <compass/plugin.h>
#include <compass_fakehost.h>
#include <json-c/json.h>

#include "../common/pair_cases.h"
#include "../common/response_diff.h"
#include "../common/stream_diff.h"
#include "anthropic.h"

#include <stdio.h>
#include <string.h>

static compass_fakehost *fh;
static const compass_plugin_desc *desc;
static const compass_provider_ops *ops;
static void *inst;
static compass_req *req;

static void *make_instance(const char *base_url, const char *const *options)
{
    compass_err err;
    void *i;
    memset(&err, 0, sizeof(err));
    i = compass_fakehost_instance(fh, "claude", base_url, "sk-ant-test", options, &err);
    cr_assert(i, "instance: %s", err.msg);
    return i;
}

static void setup(void)
{
    compass_err err;
    memset(&err, 0, sizeof(err));
    fh = compass_fakehost_new("anthropic");
    cr_assert(fh);
    desc = compass_fakehost_load(fh, COMPASS_PLUGIN_DIR "/anthropic.so", &err);
    cr_assert(desc, "load: %s", err.msg);
    cr_assert_eq(desc->kind, COMPASS_PLUGIN_PROVIDER);
    cr_assert_str_eq(desc->name, "anthropic");
    ops = desc->ops.provider;
    inst = make_instance(NULL, NULL);
    req = compass_fakehost_req(fh);
}

static void teardown(void)
{
    compass_fakehost_free(fh);
}

TestSuite(anthropic, .init = setup, .fini = teardown);

/* ---------------------------------------------------------------------------------------- */
/* helpers                                                                                  */
/* ---------------------------------------------------------------------------------------- */

/* Builds the upstream request for an OpenAI chat body on instance i. */
static int build_on(void *i, const char *chat, compass_http_request *out, compass_err *err)
{
    compass_chat_request in;
    int rc;
    req = compass_fakehost_req(fh);
    memset(&in, 0, sizeof(in));
    memset(out, 0, sizeof(*out));
    memset(err, 0, sizeof(*err));
    rc = compass_fakehost_parse_chat(fh, chat, &in, err);
    cr_assert_eq(rc, 0, "parse_chat: %s", err->msg);
    return ops->build_request(i, req, &in, out, err);
}

/* Builds and parses the body; the caller puts the result. */
static json_object *body_of(const char *chat, compass_http_request *out)
{
    compass_err err;
    json_object *body;
    int rc = build_on(inst, chat, out, &err);
    cr_assert_eq(rc, 0, "build_request: %d %s", rc, err.msg);
    cr_assert(out->body.ptr);
    body = json_tokener_parse(out->body.ptr);
    cr_assert(body, "body is not JSON: %s", out->body.ptr);
    return body;
}

static json_object *at(json_object *o, const char *path)
{
    char key[64];
    const char *p = path;
    while (o && *p) {
        size_t n = strcspn(p, ".");
        memcpy(key, p, n);
        key[n] = '\0';
        if (json_object_is_type(o, json_type_array)) {
            char *end;
            long idx = strtol(key, &end, 10);
            o = *end ? NULL : json_object_array_get_idx(o, (size_t)idx);
        } else if (!json_object_object_get_ex(o, key, &o)) {
            o = NULL;
        }
        p += n;
        if (*p == '.')
            p++;
    }
    return o;
}

static const char *at_s(json_object *o, const char *path)
{
    json_object *v = at(o, path);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static size_t at_len(json_object *o, const char *path)
{
    json_object *v = at(o, path);
    cr_assert(v && json_object_is_type(v, json_type_array), "%s is not an array", path);
    return json_object_array_length(v);
}

static compass_str header(const compass_http_request *r, const char *name)
{
    return compass_header_get(r->headers, r->n_headers, name);
}

static int refused(const char *chat, const char *needle)
{
    compass_http_request out;
    compass_err err;
    int rc = build_on(inst, chat, &out, &err);
    cr_assert_eq(rc, COMPASS_EUNSUPPORTED, "rc %d for %s", rc, chat);
    cr_assert(strstr(err.msg, needle), "message \"%s\" does not name \"%s\"", err.msg, needle);
    return 1;
}

#define SIMPLE_MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]"

/* ---------------------------------------------------------------------------------------- */
/* build_request                                                                            */
/* ---------------------------------------------------------------------------------------- */

Test(anthropic, request_has_url_headers_and_default_max_tokens)
{
    compass_http_request out;
    json_object *b = body_of("{\"model\":\"claude-sonnet-4-5\"," SIMPLE_MSGS "}", &out);

    cr_assert_eq(out.method, COMPASS_HTTP_POST);
    cr_assert(compass_str_eq(out.url, "https://api.anthropic.com/v1/messages"));
    cr_assert(compass_str_eq(header(&out, "x-api-key"), "sk-ant-test"));
    cr_assert(compass_str_eq(header(&out, "anthropic-version"), "2023-06-01"));
    cr_assert(compass_str_eq(header(&out, "content-type"), "application/json"));
    cr_assert_eq(header(&out, "anthropic-beta").len, 0);
    cr_assert_eq(out.stream_format, COMPASS_STREAM_NONE);

    cr_assert_str_eq(at_s(b, "model"), "claude-sonnet-4-5");
    cr_assert_eq(json_object_get_int64(at(b, "max_tokens")), 4096);
    cr_assert_eq(at_len(b, "messages"), 1);
    cr_assert_str_eq(at_s(b, "messages.0.role"), "user");
    cr_assert_str_eq(at_s(b, "messages.0.content.0.type"), "text");
    cr_assert_str_eq(at_s(b, "messages.0.content.0.text"), "Hello");
    cr_assert_null(at(b, "stream"));
    cr_assert_null(at(b, "system"));
    cr_assert_null(at(b, "temperature"));
    json_object_put(b);
}

Test(anthropic, options_change_url_version_beta_and_default_max_tokens)
{
    static const char *const opts[] = {"anthropic_version=2024-01-01", "default_max_tokens=777",
                                       "messages_path=/proxy/messages",
                                       "beta=prompt-caching-2024-07-31", NULL};
    void *i = make_instance("https://gw.example.com/", opts);
    compass_http_request out;
    compass_err err;
    json_object *b;

    cr_assert_eq(build_on(i, "{\"model\":\"m\"," SIMPLE_MSGS "}", &out, &err), 0, "%s",
                 err.msg);
    cr_assert(compass_str_eq(out.url, "https://gw.example.com/proxy/messages"), "%.*s",
              (int)out.url.len, out.url.ptr);
    cr_assert(compass_str_eq(header(&out, "anthropic-version"), "2024-01-01"));
    cr_assert(compass_str_eq(header(&out, "anthropic-beta"), "prompt-caching-2024-07-31"));
    b = json_tokener_parse(out.body.ptr);
    cr_assert_eq(json_object_get_int64(at(b, "max_tokens")), 777);
    json_object_put(b);
}

Test(anthropic, no_api_key_sends_no_x_api_key_header)
{
    compass_err err;
    compass_http_request out;
    void *i;
    memset(&err, 0, sizeof(err));
    i = compass_fakehost_instance(fh, "keyless", NULL, NULL, NULL, &err);
    cr_assert(i, "%s", err.msg);
    cr_assert_eq(build_on(i, "{\"model\":\"m\"," SIMPLE_MSGS "}", &out, &err), 0, "%s",
                 err.msg);
    cr_assert_eq(header(&out, "x-api-key").len, 0);
    cr_assert(compass_str_eq(header(&out, "anthropic-version"), "2023-06-01"));
}

Test(anthropic, bad_options_are_refused)
{
    static const char *const zero[] = {"default_max_tokens=0", NULL};
    static const char *const path[] = {"messages_path=v1/messages", NULL};
    compass_err err;
    memset(&err, 0, sizeof(err));
    cr_assert_null(compass_fakehost_instance(fh, "x", NULL, NULL, zero, &err));
    cr_assert(strstr(err.msg, "default_max_tokens"), "%s", err.msg);
    cr_assert_null(compass_fakehost_instance(fh, "x", NULL, NULL, path, &err));
    cr_assert(strstr(err.msg, "messages_path"), "%s", err.msg);
    cr_assert_null(compass_fakehost_instance(fh, "x", "ftp://x", NULL, NULL, &err));
    cr_assert(strstr(err.msg, "base_url"), "%s", err.msg);
}

Test(anthropic, system_and_developer_messages_are_lifted)
{
    compass_http_request out;
    json_object *b = body_of(
        "{\"model\":\"m\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"You are terse.\"},"
        "{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"Answer in French.\"}]},"
        "{\"role\":\"user\",\"content\":\"Hi\"}]}",
        &out);
    cr_assert_str_eq(at_s(b, "system"), "You are terse.\n\nAnswer in French.");
    cr_assert_eq(at_len(b, "messages"), 1);
    cr_assert_str_eq(at_s(b, "messages.0.role"), "user");
    json_object_put(b);
}

Test(anthropic, consecutive_same_role_messages_merge)
{
    compass_http_request out;
    json_object *b = body_of("{\"model\":\"m\",\"messages\":["
                             "{\"role\":\"user\",\"content\":\"one\"},"
                             "{\"role\":\"user\",\"content\":\"two\"},"
                             "{\"role\":\"assistant\",\"content\":\"three\"},"
                             "{\"role\":\"assistant\",\"content\":\"four\"},"
                             "{\"role\":\"user\",\"content\":\"five\"}]}",
                             &out);
    cr_assert_eq(at_len(b, "messages"), 3);
    cr_assert_str_eq(at_s(b, "messages.0.role"), "user");
    cr_assert_eq(at_len(b, "messages.0.content"), 2);
    cr_assert_str_eq(at_s(b, "messages.0.content.0.text"), "one");
    cr_assert_str_eq(at_s(b, "messages.0.content.1.text"), "two");
    cr_assert_str_eq(at_s(b, "messages.1.role"), "assistant");
    cr_assert_eq(at_len(b, "messages.1.content"), 2);
    cr_assert_str_eq(at_s(b, "messages.1.content.1.text"), "four");
    cr_assert_str_eq(at_s(b, "messages.2.content.0.text"), "five");
    json_object_put(b);
}

Test(anthropic, images_become_base64_and_url_sources)
{
    compass_http_request out;
    json_object *b = body_of(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
        "{\"type\":\"text\",\"text\":\"What is in these?\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0KGgo=\"}},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://example.com/cat.jpg\","
        "\"detail\":\"high\"}}]}]}",
        &out);
    cr_assert_eq(at_len(b, "messages.0.content"), 3);
    cr_assert_str_eq(at_s(b, "messages.0.content.1.type"), "image");
    cr_assert_str_eq(at_s(b, "messages.0.content.1.source.type"), "base64");
    cr_assert_str_eq(at_s(b, "messages.0.content.1.source.media_type"), "image/png");
    cr_assert_str_eq(at_s(b, "messages.0.content.1.source.data"), "iVBORw0KGgo=");
    cr_assert_str_eq(at_s(b, "messages.0.content.2.type"), "image");
    cr_assert_str_eq(at_s(b, "messages.0.content.2.source.type"), "url");
    cr_assert_str_eq(at_s(b, "messages.0.content.2.source.url"), "https://example.com/cat.jpg");
    json_object_put(b);
}

Test(anthropic, unusable_images_are_refused)
{
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
            "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png,rawbytes\"}}]}]}",
            "base64");
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
            "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/tiff;base64,AAAA\"}}]}]}",
            "image/tiff");
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
            "{\"type\":\"image_url\",\"image_url\":{\"url\":\"ftp://example.com/a.png\"}}]}]}",
            "image_url");
}

#define WEATHER_TOOL                                                                         \
    "{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Get the " \
    "current weather in a given location\",\"parameters\":{\"type\":\"object\","              \
    "\"properties\":{\"location\":{\"type\":\"string\"}},\"required\":[\"location\"]}}}"
#define NOARG_TOOL "{\"type\":\"function\",\"function\":{\"name\":\"get_time\"}}"

Test(anthropic, tools_become_input_schemas)
{
    compass_http_request out;
    json_object *b = body_of("{\"model\":\"m\"," SIMPLE_MSGS ",\"tools\":[" WEATHER_TOOL
                             "," NOARG_TOOL "]}",
                             &out);
    cr_assert_eq(at_len(b, "tools"), 2);
    cr_assert_str_eq(at_s(b, "tools.0.name"), "get_weather");
    cr_assert_str_eq(at_s(b, "tools.0.description"), "Get the current weather in a given location");
    cr_assert_str_eq(at_s(b, "tools.0.input_schema.type"), "object");
    cr_assert_str_eq(at_s(b, "tools.0.input_schema.required.0"), "location");
    cr_assert_str_eq(at_s(b, "tools.1.name"), "get_time");
    cr_assert_null(at(b, "tools.1.description"));
    cr_assert_str_eq(at_s(b, "tools.1.input_schema.type"), "object");
    cr_assert(json_object_is_type(at(b, "tools.1.input_schema.properties"), json_type_object));
    cr_assert_null(at(b, "tool_choice"));
    json_object_put(b);
}

static void check_choice(const char *choice, const char *extra, const char *want_type,
                         const char *want_name, int want_disable)
{
    char chat[1024];
    compass_http_request out;
    json_object *b, *d;
    snprintf(chat, sizeof(chat), "{\"model\":\"m\"," SIMPLE_MSGS ",\"tools\":[" WEATHER_TOOL
             "],\"tool_choice\":%s%s}", choice, extra);
    b = body_of(chat, &out);
    cr_assert_str_eq(at_s(b, "tool_choice.type"), want_type, "for %s", choice);
    if (want_name)
        cr_assert_str_eq(at_s(b, "tool_choice.name"), want_name);
    else
        cr_assert_null(at(b, "tool_choice.name"));
    d = at(b, "tool_choice.disable_parallel_tool_use");
    if (want_disable)
        cr_assert(d && json_object_get_boolean(d), "for %s%s", choice, extra);
    else
        cr_assert_null(d, "for %s%s", choice, extra);
    json_object_put(b);
}

Test(anthropic, each_tool_choice_maps)
{
    check_choice("\"auto\"", "", "auto", NULL, 0);
    check_choice("\"required\"", "", "any", NULL, 0);
    check_choice("\"none\"", "", "none", NULL, 0);
    check_choice("{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}", "", "tool",
                 "get_weather", 0);
    check_choice("\"auto\"", ",\"parallel_tool_calls\":false", "auto", NULL, 1);
    check_choice("\"required\"", ",\"parallel_tool_calls\":false", "any", NULL, 1);
    check_choice("{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}",
                 ",\"parallel_tool_calls\":false", "tool", "get_weather", 1);
    check_choice("\"auto\"", ",\"parallel_tool_calls\":true", "auto", NULL, 0);
}

Test(anthropic, parallel_tool_calls_false_alone_sends_auto_with_disable)
{
    compass_http_request out;
    json_object *b = body_of("{\"model\":\"m\"," SIMPLE_MSGS ",\"tools\":[" WEATHER_TOOL
                             "],\"parallel_tool_calls\":false}",
                             &out);
    cr_assert_str_eq(at_s(b, "tool_choice.type"), "auto");
    cr_assert(json_object_get_boolean(at(b, "tool_choice.disable_parallel_tool_use")));
    json_object_put(b);
}

Test(anthropic, tool_use_and_tool_result_round_trip)
{
    compass_http_request out;
    json_object *b = body_of(
        "{\"model\":\"m\",\"tools\":[" WEATHER_TOOL "],\"messages\":["
        "{\"role\":\"user\",\"content\":\"Weather in Paris and Rome?\"},"
        "{\"role\":\"assistant\",\"content\":\"Checking.\",\"tool_calls\":["
        "{\"id\":\"toolu_01A\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"arguments\":\"{\\\"location\\\":\\\"Paris\\\"}\"}},"
        "{\"id\":\"toolu_01B\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"arguments\":\"{\\\"location\\\":\\\"Rome\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"toolu_01A\",\"content\":\"18C sunny\"},"
        "{\"role\":\"tool\",\"tool_call_id\":\"toolu_01B\",\"content\":\"24C clear\"},"
        "{\"role\":\"user\",\"content\":\"Which is warmer?\"}]}",
        &out);
    cr_assert_eq(at_len(b, "messages"), 3);
    cr_assert_str_eq(at_s(b, "messages.1.role"), "assistant");
    cr_assert_eq(at_len(b, "messages.1.content"), 3);
    cr_assert_str_eq(at_s(b, "messages.1.content.0.type"), "text");
    cr_assert_str_eq(at_s(b, "messages.1.content.0.text"), "Checking.");
    cr_assert_str_eq(at_s(b, "messages.1.content.1.type"), "tool_use");
    cr_assert_str_eq(at_s(b, "messages.1.content.1.id"), "toolu_01A");
    cr_assert_str_eq(at_s(b, "messages.1.content.1.name"), "get_weather");
    cr_assert(json_object_is_type(at(b, "messages.1.content.1.input"), json_type_object));
    cr_assert_str_eq(at_s(b, "messages.1.content.1.input.location"), "Paris");
    cr_assert_str_eq(at_s(b, "messages.1.content.2.input.location"), "Rome");

    cr_assert_str_eq(at_s(b, "messages.2.role"), "user");
    cr_assert_eq(at_len(b, "messages.2.content"), 3);
    cr_assert_str_eq(at_s(b, "messages.2.content.0.type"), "tool_result");
    cr_assert_str_eq(at_s(b, "messages.2.content.0.tool_use_id"), "toolu_01A");
    cr_assert_str_eq(at_s(b, "messages.2.content.0.content"), "18C sunny");
    cr_assert_str_eq(at_s(b, "messages.2.content.1.tool_use_id"), "toolu_01B");
    cr_assert_str_eq(at_s(b, "messages.2.content.1.content"), "24C clear");
    cr_assert_str_eq(at_s(b, "messages.2.content.2.type"), "text");
    cr_assert_str_eq(at_s(b, "messages.2.content.2.text"), "Which is warmer?");
    json_object_put(b);
}

Test(anthropic, assistant_tool_call_without_text_and_empty_arguments)
{
    compass_http_request out;
    json_object *b = body_of(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"time?\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"toolu_9\","
        "\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"toolu_9\",\"content\":\"noon\"}]}",
        &out);
    cr_assert_eq(at_len(b, "messages.1.content"), 1);
    cr_assert_str_eq(at_s(b, "messages.1.content.0.type"), "tool_use");
    cr_assert(json_object_is_type(at(b, "messages.1.content.0.input"), json_type_object));
    cr_assert_eq(json_object_object_length(at(b, "messages.1.content.0.input")), 0);
    json_object_put(b);
}

Test(anthropic, invalid_tool_arguments_are_refused_naming_the_call)
{
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
            "{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"toolu_bad\",\"type\":\"function\","
            "\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"location\\\":\"}}]}]}",
            "toolu_bad");
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
            "{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"toolu_arr\",\"type\":\"function\","
            "\"function\":{\"name\":\"get_weather\",\"arguments\":\"[1,2]\"}}]}]}",
            "get_weather");
}

Test(anthropic, max_tokens_prefers_max_completion_tokens)
{
    compass_http_request out;
    json_object *b;
    b = body_of("{\"model\":\"m\"," SIMPLE_MSGS ",\"max_tokens\":100}", &out);
    cr_assert_eq(json_object_get_int64(at(b, "max_tokens")), 100);
    json_object_put(b);
    b = body_of("{\"model\":\"m\"," SIMPLE_MSGS ",\"max_tokens\":100,"
                "\"max_completion_tokens\":200}",
                &out);
    cr_assert_eq(json_object_get_int64(at(b, "max_tokens")), 200);
    json_object_put(b);
}

Test(anthropic, temperature_above_one_is_refused_not_clamped)
{
    compass_http_request out;
    json_object *b;
    refused("{\"model\":\"m\"," SIMPLE_MSGS ",\"temperature\":1.5}", "temperature");
    b = body_of("{\"model\":\"m\"," SIMPLE_MSGS ",\"temperature\":0.7,\"top_p\":0.9}", &out);
    cr_assert(strstr(out.body.ptr, "\"temperature\":0.7"), "%s", out.body.ptr);
    cr_assert(strstr(out.body.ptr, "\"top_p\":0.9"), "%s", out.body.ptr);
    json_object_put(b);
    b = body_of("{\"model\":\"m\"," SIMPLE_MSGS ",\"temperature\":1}", &out);
    cr_assert_float_eq(json_object_get_double(at(b, "temperature")), 1.0, 1e-9);
    json_object_put(b);
}

Test(anthropic, parameters_without_an_anthropic_equivalent_are_refused)
{
    refused("{\"model\":\"m\"," SIMPLE_MSGS ",\"n\":2}", "n=2");
    refused("{\"model\":\"m\"," SIMPLE_MSGS ",\"seed\":42}", "seed");
    refused("{\"model\":\"m\"," SIMPLE_MSGS ",\"presence_penalty\":0.5}", "presence_penalty");
    refused("{\"model\":\"m\"," SIMPLE_MSGS ",\"frequency_penalty\":-1}", "frequency_penalty");
    refused("{\"model\":\"m\"," SIMPLE_MSGS ",\"response_format\":{\"type\":\"json_schema\","
            "\"json_schema\":{\"name\":\"x\",\"schema\":{\"type\":\"object\"}}}}",
            "json_schema");
    refused("{\"model\":\"m\"," SIMPLE_MSGS ",\"reasoning_effort\":\"high\"}",
            "reasoning_effort");
}

Test(anthropic, harmless_defaults_are_accepted)
{
    compass_http_request out;
    json_object *b = body_of("{\"model\":\"m\"," SIMPLE_MSGS ",\"n\":1,\"presence_penalty\":0,"
                             "\"frequency_penalty\":0,"
                             "\"response_format\":{\"type\":\"json_object\"}}",
                             &out);
    cr_assert_null(at(b, "response_format"));
    json_object_put(b);
}

Test(anthropic, stop_user_and_stream_are_mapped)
{
    compass_http_request out;
    json_object *b = body_of("{\"model\":\"m\"," SIMPLE_MSGS ",\"stop\":[\"END\",\"\\n\\nHuman:\"],"
                             "\"user\":\"user-42\",\"stream\":true}",
                             &out);
    cr_assert_eq(at_len(b, "stop_sequences"), 2);
    cr_assert_str_eq(at_s(b, "stop_sequences.0"), "END");
    cr_assert_str_eq(at_s(b, "stop_sequences.1"), "\n\nHuman:");
    cr_assert_str_eq(at_s(b, "metadata.user_id"), "user-42");
    cr_assert(json_object_get_boolean(at(b, "stream")));
    cr_assert_eq(out.stream_format, COMPASS_STREAM_SSE);
    cr_assert_null(at(b, "stop"));
    json_object_put(b);
    b = body_of("{\"model\":\"m\"," SIMPLE_MSGS ",\"stop\":\"STOP\"}", &out);
    cr_assert_eq(at_len(b, "stop_sequences"), 1);
    cr_assert_str_eq(at_s(b, "stop_sequences.0"), "STOP");
    json_object_put(b);
}

/* ---------------------------------------------------------------------------------------- */
/* parse_response                                                                           */
/* ---------------------------------------------------------------------------------------- */

static int parse(int status, const char *body, compass_chat_response *out,
                 compass_upstream_error *uerr, compass_err *err)
{
    compass_http_response resp = compass_fakehost_http(status, body);
    req = compass_fakehost_req(fh);
    memset(out, 0, sizeof(*out));
    memset(uerr, 0, sizeof(*uerr));
    memset(err, 0, sizeof(*err));
    return ops->parse_response(inst, req, &resp, out, uerr, err);
}

static const char TEXT_RESPONSE[] =
    "{\"id\":\"msg_013Zva2CMHLNnXjNJJKqJ2EF\",\"type\":\"message\",\"role\":\"assistant\","
    "\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[{\"type\":\"text\",\"text\":\"Hi! "
    "My name is Claude.\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,"
    "\"usage\":{\"input_tokens\":2095,\"output_tokens\":503}}";

Test(anthropic, text_response_is_parsed)
{
    compass_chat_response r;
    compass_upstream_error u;
    compass_err err;
    cr_assert_eq(parse(200, TEXT_RESPONSE, &r, &u, &err), 0, "%s", err.msg);
    cr_assert(compass_str_eq(r.id, "msg_013Zva2CMHLNnXjNJJKqJ2EF"));
    cr_assert(compass_str_eq(r.model, "claude-sonnet-4-5-20250929"));
    cr_assert(r.has_content);
    cr_assert(compass_str_eq(r.content, "Hi! My name is Claude."));
    cr_assert_eq(r.n_tool_calls, 0);
    cr_assert_eq(r.finish_reason, COMPASS_FINISH_STOP);
    cr_assert(r.usage.present);
    cr_assert_eq(r.usage.prompt_tokens, 2095);
    cr_assert_eq(r.usage.completion_tokens, 503);
    cr_assert_eq(r.usage.total_tokens, 2598);
    cr_assert_eq(r.usage.cached_tokens, 0);
}

Test(anthropic, tool_use_response_becomes_tool_calls)
{
    compass_chat_response r;
    compass_upstream_error u;
    compass_err err;
    static const char body[] =
        "{\"id\":\"msg_01Aq9w938a90dw8q\",\"model\":\"claude-sonnet-4-5\",\"stop_reason\":"
        "\"tool_use\",\"role\":\"assistant\",\"type\":\"message\",\"content\":["
        "{\"type\":\"text\",\"text\":\"I'll check the weather.\"},"
        "{\"type\":\"tool_use\",\"id\":\"toolu_01A09q90qw90lq917835lq9\",\"name\":\"get_weather\","
        "\"input\":{\"location\":\"San Francisco, CA\",\"unit\":\"celsius\"}},"
        "{\"type\":\"tool_use\",\"id\":\"toolu_02\",\"name\":\"get_time\",\"input\":{}}],"
        "\"usage\":{\"input_tokens\":10,\"output_tokens\":20}}";
    json_object *args;
    cr_assert_eq(parse(200, body, &r, &u, &err), 0, "%s", err.msg);
    cr_assert_eq(r.finish_reason, COMPASS_FINISH_TOOL_CALLS);
    cr_assert(compass_str_eq(r.content, "I'll check the weather."));
    cr_assert_eq(r.n_tool_calls, 2);
    cr_assert(compass_str_eq(r.tool_calls[0].id, "toolu_01A09q90qw90lq917835lq9"));
    cr_assert(compass_str_eq(r.tool_calls[0].name, "get_weather"));
    args = json_tokener_parse(r.tool_calls[0].arguments.ptr);
    cr_assert(args);
    cr_assert_str_eq(at_s(args, "location"), "San Francisco, CA");
    cr_assert_str_eq(at_s(args, "unit"), "celsius");
    json_object_put(args);
    cr_assert(compass_str_eq(r.tool_calls[1].arguments, "{}"));
}

Test(anthropic, each_stop_reason_maps)
{
    static const struct {
        const char *reason;
        int finish;
    } cases[] = {
        {"end_turn", COMPASS_FINISH_STOP},       {"stop_sequence", COMPASS_FINISH_STOP},
        {"max_tokens", COMPASS_FINISH_LENGTH},   {"tool_use", COMPASS_FINISH_TOOL_CALLS},
        {"refusal", COMPASS_FINISH_CONTENT_FILTER}, {"pause_turn", COMPASS_FINISH_STOP},
    };
    size_t i;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[512];
        compass_chat_response r;
        compass_upstream_error u;
        compass_err err;
        snprintf(body, sizeof(body),
                 "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\","
                 "\"content\":[{\"type\":\"text\",\"text\":\"x\"}],\"stop_reason\":\"%s\","
                 "\"stop_sequence\":null,\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}",
                 cases[i].reason);
        cr_assert_eq(parse(200, body, &r, &u, &err), 0, "%s", err.msg);
        cr_assert_eq(r.finish_reason, cases[i].finish, "%s", cases[i].reason);
    }
}

Test(anthropic, usage_counts_cache_tokens_into_prompt)
{
    compass_chat_response r;
    compass_upstream_error u;
    compass_err err;
    static const char body[] =
        "{\"id\":\"msg_c\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\","
        "\"content\":[{\"type\":\"text\",\"text\":\"ok\"}],\"stop_reason\":\"end_turn\","
        "\"stop_sequence\":null,\"usage\":{\"input_tokens\":21,\"cache_creation_input_tokens\":"
        "188086,\"cache_read_input_tokens\":1000,\"output_tokens\":393}}";
    cr_assert_eq(parse(200, body, &r, &u, &err), 0, "%s", err.msg);
    cr_assert_eq(r.usage.prompt_tokens, 21 + 188086 + 1000);
    cr_assert_eq(r.usage.cached_tokens, 1000);
    cr_assert_eq(r.usage.completion_tokens, 393);
    cr_assert_eq(r.usage.total_tokens, 21 + 188086 + 1000 + 393);
}

Test(anthropic, error_body_is_an_upstream_error)
{
    compass_chat_response r;
    compass_upstream_error u;
    compass_err err;
    static const char body[] = "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                               "\"message\":\"Overloaded\"},"
                               "\"request_id\":\"req_011CSHoEeqs5C35K2UUqR7Fy\"}";
    cr_assert_eq(parse(200, body, &r, &u, &err), COMPASS_EUPSTREAM);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert_str_eq(u.message, "Overloaded");
    cr_assert_str_eq(u.type, "server_error");
}

Test(anthropic, garbage_response_is_a_parse_error)
{
    compass_chat_response r;
    compass_upstream_error u;
    compass_err err;
    cr_assert_eq(parse(200, "<html>oops</html>", &r, &u, &err), COMPASS_EPARSE);
    cr_assert_eq(parse(200, "", &r, &u, &err), COMPASS_EPARSE);
    cr_assert_eq(parse(200, "[1,2]", &r, &u, &err), COMPASS_EPARSE);
    cr_assert_eq(parse(200, "{\"id\":\"x\"}", &r, &u, &err), COMPASS_EPARSE);
    cr_assert_eq(parse(200, "{\"type\":\"message\",\"content\":[", &r, &u, &err),
                 COMPASS_EPARSE);
}

/* ---------------------------------------------------------------------------------------- */
/* parse_response's two readers agree: the scanner reader (what parse_response tries first)  */
/* against the json-c tree reader, on Messages bodies                                        */
/* ---------------------------------------------------------------------------------------- */

static int rd_fast(void *h, compass_req *rq, const compass_http_response *resp,
                   compass_chat_response *out, compass_err *err)
{
    return an_parse_response_fast(h, rq, resp, out, err);
}

static int rd_full(void *h, compass_req *rq, const compass_http_response *resp,
                   compass_chat_response *out, compass_upstream_error *u, compass_err *err)
{
    return an_parse_response_full(h, rq, resp, out, u, err);
}

static void rd_open_anthropic(rd_readers *r)
{
    rd_open(r, "anthropic");
    r->fast = rd_fast;
    r->full = rd_full;
    r->fast_ctx = (void *)compass_fakehost_host(r->fast_fh);
    r->full_ctx = (void *)compass_fakehost_host(r->full_fh);
    r->declined = AN_DECLINED;
}

static const char ERROR_OVERLOADED[] =
    "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"},"
    "\"request_id\":\"req_011CSHoEeqs5C35K2UUqR7Fy\"}";

#define RD_MSG(c)                                                                             \
    "{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":"                \
    "\"claude-sonnet-4-5\",\"content\":" c ",\"stop_reason\":\"end_turn\",\"stop_sequence\":"  \
    "null,\"usage\":{\"input_tokens\":10,\"output_tokens\":5}}"
#define RD_TEXT "[{\"type\":\"text\",\"text\":\"ok\"}]"
#define RD_STOP(s)                                                                            \
    "{\"id\":\"msg_s\",\"type\":\"message\",\"role\":\"assistant\",\"content\":" RD_TEXT       \
    ",\"stop_reason\":" s ",\"stop_sequence\":null}"
#define RD_USAGE(u)                                                                           \
    "{\"id\":\"msg_u\",\"type\":\"message\",\"content\":" RD_TEXT ",\"stop_reason\":"          \
    "\"end_turn\",\"usage\":" u "}"
#define RD_TOOL(in)                                                                           \
    RD_MSG("[{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"f\",\"input\":" in "}]")
#define RD_TU(i) "{\"type\":\"tool_use\",\"id\":\"toolu_" #i "\",\"name\":\"t\",\"input\":{}}"
#define RD_TX(i) "{\"type\":\"text\",\"text\":\"" #i " \"}"

/* Messages bodies as Anthropic's API reference documents them, then what goes wrong on the
 * wire. */
static const rd_case RD_CORPUS[] = {
    {"docs_text", 1, 0, TEXT_RESPONSE},
    {"docs_text_members_sorted", 1, 0,
     "{\"content\":[{\"text\":\"Hi! My name is Claude.\",\"type\":\"text\"}],\"id\":"
     "\"msg_013Zva2CMHLNnXjNJJKqJ2EF\",\"model\":\"claude-sonnet-4-5-20250929\",\"role\":"
     "\"assistant\",\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"type\":\"message\","
     "\"usage\":{\"input_tokens\":2095,\"output_tokens\":503}}"},
    {"pretty_printed", 1, 0,
     "{\n  \"id\": \"msg_01XFDUDYJgAACzvnptvVoYEL\",\n  \"type\": \"message\",\n  \"role\": "
     "\"assistant\",\n  \"content\": [\n    {\n      \"type\": \"text\",\n      \"text\": "
     "\"Hello!\"\n    }\n  ],\n  \"model\": \"claude-opus-4-1-20250805\",\n  \"stop_reason\": "
     "\"end_turn\",\n  \"stop_sequence\": null,\n  \"usage\": {\n    \"input_tokens\": 12,\n"
     "    \"cache_creation_input_tokens\": 0,\n    \"cache_read_input_tokens\": 0,\n    "
     "\"cache_creation\": {\n      \"ephemeral_5m_input_tokens\": 0,\n      "
     "\"ephemeral_1h_input_tokens\": 0\n    },\n    \"output_tokens\": 6,\n    "
     "\"service_tier\": \"standard\"\n  }\n}\n"},
    {"whitespace_everywhere", 1, 0,
     " \r\n\t{ \"id\" :\"w\" , \"type\" : \"message\" , \"content\" :\t[ { \"type\" : \"text\" ,"
     " \"text\" : \"spaced\" } , { \"type\" : \"tool_use\" , \"id\" : \"t\" , \"input\" : { "
     "\"a\" : [ 1 , 2 ] } } ] , \"usage\" : { \"input_tokens\" : 1 } } \t\r\n"},
    {"several_text_blocks", 1, 0,
     RD_MSG("[{\"type\":\"text\",\"text\":\"One. \"},{\"type\":\"text\",\"text\":\"Two. \"},"
            "{\"type\":\"text\",\"text\":\"Three.\"}]")},
    {"many_text_blocks", 1, 0,
     RD_MSG("[" RD_TX(1) "," RD_TX(2) "," RD_TX(3) "," RD_TX(4) "," RD_TX(5) "," RD_TX(6) ","
            RD_TX(7) "," RD_TX(8) "," RD_TX(9) "," RD_TX(10) "," RD_TX(11) "," RD_TX(12) ","
            RD_TX(13) "," RD_TX(14) "," RD_TX(15) "," RD_TX(16) "," RD_TX(17) "," RD_TX(18)
            "," RD_TX(19) "," RD_TX(20) "]")},
    {"citations", 1, 0,
     RD_MSG("[{\"type\":\"text\",\"text\":\"According to the document, \"},{\"type\":\"text\","
            "\"text\":\"the grass is green\",\"citations\":[{\"type\":\"char_location\","
            "\"cited_text\":\"The grass is green.\",\"document_index\":0,\"document_title\":"
            "\"Example Document\",\"start_char_index\":0,\"end_char_index\":20}]},{\"type\":"
            "\"text\",\"text\":\" and \"},{\"type\":\"text\",\"text\":\"the sky is blue\","
            "\"citations\":[{\"type\":\"char_location\",\"cited_text\":\"The sky is blue.\","
            "\"document_index\":0,\"document_title\":null,\"start_char_index\":20,"
            "\"end_char_index\":36}]}]")},
    {"escapes_and_unicode", 1, 0,
     RD_MSG("[{\"type\":\"text\",\"text\":\"a\\nb \\\"q\\\" back\\\\slash \\/ caf\\u00e9 "
            "\\ud83d\\ude00 ctl\\u0001\\b\\f\\r\\t nul\\u0000end\"}]")},
    {"raw_utf8", 1, 0,
     RD_MSG("[{\"type\":\"text\",\"text\":\"caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac "
            "\xf0\x9f\x98\x80 and a stray \xff byte\"}]")},
    {"lone_surrogates", 1, 0,
     RD_MSG("[{\"type\":\"text\",\"text\":\"lone \\ud800 high, \\udc00 low, \\ud83d\\u0041 "
            "broken pair\"}]")},
    {"escaped_id_model", 1, 0,
     "{\"id\":\"msg\\u005f1\",\"type\":\"message\",\"model\":\"claude\\/sonnet\",\"content\":"
     "[]}"},
    {"text_odd_values", 1, 0,
     RD_MSG("[{\"type\":\"text\",\"text\":\"\"},{\"type\":\"text\",\"text\":null},{\"type\":"
            "\"text\"},{\"type\":\"text\",\"text\":42},{\"type\":\"text\",\"text\":[\"x\"]},"
            "{\"type\":\"text\",\"text\":\"kept\"}]")},
    {"text_only_empty", 1, 0, RD_MSG("[{\"type\":\"text\",\"text\":\"\"}]")},
    {"text_only_not_a_string", 1, 0, RD_MSG("[{\"type\":\"text\",\"text\":{}}]")},
    {"content_empty", 1, 0, RD_MSG("[]")},
    {"content_odd_elements", 1, 0,
     RD_MSG("[7,null,\"text\",[{\"type\":\"text\",\"text\":\"nested\"}],true,{},{\"type\":null},"
            "{\"type\":7,\"text\":\"t\"},{\"type\":\"text\",\"text\":\"x\"}]")},
    {"block_type_escaped", 1, 0,
     RD_MSG("[{\"type\":\"t\\u0065xt\",\"text\":\"escaped type\"},{\"type\":\"tool\\u005fuse\","
            "\"id\":\"e\",\"name\":\"n\",\"input\":{}}]")},
    {"block_type_nul", 1, 0,
     RD_MSG("[{\"type\":\"text\\u0000more\",\"text\":\"a C string\"},{\"type\":\"te\\u0000xt\","
            "\"text\":\"not text\"}]")},
    {"block_type_case", 1, 0, RD_MSG("[{\"type\":\"Text\",\"text\":\"no\"}]")},
    {"tool_use_docs", 1, 0,
     "{\"id\":\"msg_01Aq9w938a90dw8q\",\"type\":\"message\",\"role\":\"assistant\",\"model\":"
     "\"claude-opus-4-1-20250805\",\"stop_reason\":\"tool_use\",\"stop_sequence\":null,"
     "\"content\":[{\"type\":\"text\",\"text\":\"I'll check the current weather in San "
     "Francisco for you.\"},{\"type\":\"tool_use\",\"id\":\"toolu_01A09q90qw90lq917835lq9\","
     "\"name\":\"get_weather\",\"input\":{\"location\":\"San Francisco, CA\",\"unit\":"
     "\"celsius\"}}],\"usage\":{\"input_tokens\":384,\"output_tokens\":92}}"},
    {"tool_use_several", 1, 0,
     RD_MSG("[{\"type\":\"text\",\"text\":\"Let me check both.\"},{\"type\":\"tool_use\",\"id\":"
            "\"toolu_01\",\"name\":\"get_weather\",\"input\":{\"location\":\"Paris\"}},"
            "{\"type\":\"tool_use\",\"id\":\"toolu_02\",\"name\":\"get_time\",\"input\":"
            "{\"timezone\":\"Europe/Paris\"}},{\"type\":\"text\",\"text\":\" Done.\"},"
            "{\"type\":\"tool_use\",\"id\":\"toolu_03\",\"name\":\"noop\",\"input\":{}}]")},
    {"tool_use_nested_input", 1, 0,
     RD_TOOL("{\"query\":{\"filters\":[{\"field\":\"date\",\"op\":\">=\",\"value\":"
             "\"2024-01-01\"},{\"field\":\"tags\",\"in\":[\"a\",\"b\",null,true,false]}],"
             "\"limit\":10,\"ratio\":0.25,\"big\":1e3,\"neg\":-0,\"exp\":2.5E-3},\"empty\":{},"
             "\"arr\":[],\"deep\":[[[{\"x\":[1,[2,[3]]]}]]]}")},
    {"tool_use_input_escapes", 1, 0,
     RD_TOOL("{\"path\":\"C:\\\\dir\\/file\",\"quote\":\"say \\\"hi\\\"\",\"nl\":\"a\\nb\","
             "\"u\":\"caf\\u00e9 \\ud83d\\ude00\",\"ctl\":\"\\u0001\\u001f\\u007f\",\"nul\":"
             "\"a\\u0000b\",\"raw\":\"\xc3\xa9\",\"k\\u0065y\":1,\"\":\"empty key\"}")},
    {"tool_use_input_duplicate_keys", 1, 0, RD_TOOL("{\"a\":1,\"b\":2,\"a\":3}")},
    {"tool_use_input_odd_numbers", 1, 0,
     RD_TOOL("{\"i\":123456789012345678901,\"min\":-9223372036854775808,\"d\":1.0,\"e\":1E+400,"
             "\"z\":0.000,\"f\":-1.5e-10}")},
    {"tool_use_input_empty", 1, 0, RD_TOOL("{}")},
    {"tool_use_input_null", 1, 0, RD_TOOL("null")},
    {"tool_use_input_absent", 1, 0,
     RD_MSG("[{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_time\"}]")},
    {"tool_use_input_string", 1, 0, RD_TOOL("\"{\\\"a\\\":1}\"")},
    {"tool_use_input_number", 1, 0, RD_TOOL("1.50")},
    {"tool_use_input_int", 1, 0, RD_TOOL("-12")},
    {"tool_use_input_bool", 1, 0, RD_TOOL("false")},
    {"tool_use_input_array", 1, 0, RD_TOOL("[1,\"two\",{\"three\":3}]")},
    {"tool_use_odd_id_name", 1, 0,
     RD_MSG("[{\"type\":\"tool_use\",\"id\":5,\"name\":null,\"input\":{}},{\"type\":"
            "\"tool_use\",\"input\":{}},{\"type\":\"tool_use\",\"id\":\"\",\"name\":\"\"},"
            "{\"type\":\"tool_use\",\"id\":\"toolu\\u005f9\",\"name\":\"get\\u005fweather\"}]")},
    {"thinking", 1, 0,
     "{\"id\":\"msg_th\",\"type\":\"message\",\"role\":\"assistant\",\"model\":"
     "\"claude-sonnet-4-5\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"Let me analyze "
     "this step by step...\\n\\n1. First\",\"signature\":\"WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem"
     "2dw3URve/op91XWHOEBLLqIOMfFG/UvLEczmEsUjavL....\"},{\"type\":\"redacted_thinking\","
     "\"data\":\"EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP...\"},"
     "{\"type\":\"text\",\"text\":\"Based on my analysis...\"}],\"stop_reason\":\"end_turn\","
     "\"stop_sequence\":null,\"usage\":{\"input_tokens\":2048,\"output_tokens\":1024}}"},
    {"thinking_then_tool_use", 1, 0,
     RD_MSG("[{\"type\":\"thinking\",\"thinking\":\"I need the weather.\",\"signature\":"
            "\"abc\"},{\"type\":\"tool_use\",\"id\":\"toolu_t\",\"name\":\"get_weather\","
            "\"input\":{\"location\":\"Oslo\"}}]")},
    {"server_tools", 1, 0,
     RD_MSG("[{\"type\":\"text\",\"text\":\"I'll search.\"},{\"type\":\"server_tool_use\","
            "\"id\":\"srvtoolu_01\",\"name\":\"web_search\",\"input\":{\"query\":\"claude "
            "shannon birth date\"}},{\"type\":\"web_search_tool_result\",\"tool_use_id\":"
            "\"srvtoolu_01\",\"content\":[{\"type\":\"web_search_result\",\"url\":"
            "\"https://en.wikipedia.org/wiki/Claude_Shannon\",\"title\":\"Claude Shannon\","
            "\"encrypted_content\":\"EqgfCioIARgBIiQ3YTAwMjY1Mi1mZjM5LTQ1NGUtODgxNC1kNjNjNTk1ZWI3"
            "Y\",\"page_age\":\"April 30, 2025\"}]},{\"type\":\"text\",\"text\":\"Claude Shannon "
            "was born on April 30, 1916.\",\"citations\":[{\"type\":\"web_search_result_location\","
            "\"url\":\"https://en.wikipedia.org/wiki/Claude_Shannon\",\"title\":\"Claude "
            "Shannon\",\"encrypted_index\":\"Eo8BCioIAhgBIiQyYjQ0OWJmZi1lNm\",\"cited_text\":"
            "\"Claude Elwood Shannon (April 30, 1916 \\u2013 February 24, 2001)\"}]}]")},
    {"unknown_block_type", 1, 0,
     RD_MSG("[{\"type\":\"future_block\",\"text\":\"not text\",\"input\":{\"x\":1},\"id\":"
            "\"f\"},{\"type\":\"text\",\"text\":\"text\"}]")},
    {"stop_end_turn", 1, 0, RD_STOP("\"end_turn\"")},
    {"stop_max_tokens", 1, 0, RD_STOP("\"max_tokens\"")},
    {"stop_sequence", 1, 0,
     "{\"id\":\"msg_q\",\"type\":\"message\",\"content\":" RD_TEXT ",\"stop_reason\":"
     "\"stop_sequence\",\"stop_sequence\":\"\\n\\nHuman:\"}"},
    {"stop_tool_use", 1, 0, RD_STOP("\"tool_use\"")},
    {"stop_pause_turn", 1, 0, RD_STOP("\"pause_turn\"")},
    {"stop_refusal", 1, 0, RD_STOP("\"refusal\"")},
    {"stop_context_window", 1, 0, RD_STOP("\"model_context_window_exceeded\"")},
    {"stop_unknown", 1, 0, RD_STOP("\"a_new_reason\"")},
    {"stop_empty", 1, 0, RD_STOP("\"\"")},
    {"stop_null", 1, 0, RD_STOP("null")},
    {"stop_absent", 1, 0, "{\"type\":\"message\",\"content\":" RD_TEXT "}"},
    {"stop_number", 1, 0, RD_STOP("3")},
    {"stop_object", 1, 0, RD_STOP("{\"type\":\"end_turn\"}")},
    {"stop_escaped", 1, 0, RD_STOP("\"max\\u005ftokens\"")},
    {"stop_nul", 1, 0, RD_STOP("\"tool_use\\u0000junk\"")},
    {"usage_cache", 1, 0,
     RD_USAGE("{\"input_tokens\":21,\"cache_creation_input_tokens\":188086,"
              "\"cache_read_input_tokens\":1000,\"output_tokens\":393}")},
    {"usage_cache_detail", 1, 0,
     RD_USAGE("{\"input_tokens\":50,\"cache_creation_input_tokens\":2048,"
              "\"cache_read_input_tokens\":1800,\"cache_creation\":{\"ephemeral_5m_input_tokens\""
              ":2048,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":503,\"server_tool_use\":"
              "{\"web_search_requests\":1},\"service_tier\":\"standard\"}")},
    {"usage_cache_null", 1, 0,
     RD_USAGE("{\"input_tokens\":3,\"cache_creation_input_tokens\":null,"
              "\"cache_read_input_tokens\":null,\"output_tokens\":4}")},
    {"usage_absent", 1, 0, "{\"type\":\"message\",\"content\":" RD_TEXT "}"},
    {"usage_null", 1, 0, RD_USAGE("null")},
    {"usage_empty", 1, 0, RD_USAGE("{}")},
    {"usage_array", 1, 0, RD_USAGE("[{\"input_tokens\":1}]")},
    {"usage_number", 1, 0, RD_USAGE("7")},
    {"usage_wrong_types", 1, 0,
     RD_USAGE("{\"input_tokens\":\"7\",\"output_tokens\":true,\"cache_read_input_tokens\":[1],"
              "\"cache_creation_input_tokens\":{}}")},
    {"usage_odd_numbers", 1, 0,
     RD_USAGE("{\"input_tokens\":1e3,\"output_tokens\":1.5E-2,\"cache_read_input_tokens\":-0,"
              "\"cache_creation_input_tokens\":2.9}")},
    {"usage_huge_numbers", 1, 0,
     RD_USAGE("{\"input_tokens\":123456789012345678901,\"output_tokens\":1E+400,"
              "\"cache_read_input_tokens\":9223372036854775807}")},
    {"usage_saturating_sums", 1, 0,
     RD_USAGE("{\"input_tokens\":9223372036854775807,\"cache_read_input_tokens\":5,"
              "\"cache_creation_input_tokens\":-9223372036854775808,\"output_tokens\":"
              "9223372036854775807}")},
    {"usage_negative", 1, 0,
     RD_USAGE("{\"input_tokens\":-9223372036854775808,\"cache_read_input_tokens\":-1,"
              "\"output_tokens\":-9223372036854775808}")},
    {"unknown_members", 1, 0,
     "{\"extra\":[[1,[2,{}]],{\"a\":[]},\"s\",true,false,null,-0.5e+3,1E+400],\"id\":\"u\","
     "\"type\":\"message\",\"container\":{\"id\":\"c\",\"expires_at\":\"2025-01-01\"},"
     "\"content\":" RD_TEXT ",\"error\":null,\"role\":\"user\",\"context_management\":null}"},
    {"type_absent", 1, 0, "{\"id\":\"n\",\"content\":" RD_TEXT ",\"stop_reason\":\"max_tokens\"}"},
    {"id_model_odd", 1, 0, "{\"id\":7,\"model\":null,\"type\":\"message\",\"content\":[]}"},
    {"other_status", 1, 201, RD_MSG(RD_TEXT)},
    /* errors: the tree reader words them */
    {"error_overloaded_200", 0, 0, ERROR_OVERLOADED},
    {"error_invalid_request", 0, 400,
     "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":"
     "\"messages: roles must alternate between \\\"user\\\" and \\\"assistant\\\"\"},"
     "\"request_id\":\"req_01\"}"},
    {"error_authentication", 0, 401,
     "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":"
     "\"invalid x-api-key\"}}"},
    {"error_billing", 0, 402,
     "{\"type\":\"error\",\"error\":{\"type\":\"billing_error\",\"message\":\"b\"}}"},
    {"error_permission", 0, 403,
     "{\"type\":\"error\",\"error\":{\"type\":\"permission_error\",\"message\":\"p\"}}"},
    {"error_not_found", 0, 404,
     "{\"type\":\"error\",\"error\":{\"type\":\"not_found_error\",\"message\":\"model: x\"}}"},
    {"error_too_large", 0, 413,
     "{\"type\":\"error\",\"error\":{\"type\":\"request_too_large\",\"message\":\"big\"}}"},
    {"error_rate_limit", 0, 429,
     "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow\"}}"},
    {"error_api", 0, 500, "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":"
                          "\"Internal server error\"}}"},
    {"error_timeout", 0, 504,
     "{\"type\":\"error\",\"error\":{\"type\":\"timeout_error\",\"message\":\"t\"}}"},
    {"error_unknown_type", 0, 418,
     "{\"type\":\"error\",\"error\":{\"type\":\"teapot_error\",\"message\":\"\"}}"},
    {"error_without_detail", 0, 0, "{\"type\":\"error\"}"},
    {"error_detail_not_object", 0, 500, "{\"type\":\"error\",\"error\":\"boom\"}"},
    {"error_without_type", 0, 0, "{\"error\":{\"type\":\"api_error\",\"message\":\"m\"}}"},
    {"error_with_content", 0, 0,
     "{\"type\":\"message\",\"content\":" RD_TEXT ",\"error\":{\"type\":\"api_error\"}}"},
    {"error_false", 0, 0, "{\"content\":" RD_TEXT ",\"error\":false}"},
    {"error_escaped_type", 0, 0,
     "{\"type\":\"err\\u006fr\",\"error\":{\"type\":\"api_error\",\"message\":\"e\"}}"},
    /* shapes the tree reader refuses, or reads without the scanner reader */
    {"type_other", 0, 0, "{\"type\":\"completion\",\"content\":" RD_TEXT "}"},
    {"type_number", 0, 0, "{\"type\":5,\"content\":" RD_TEXT "}"},
    {"type_null", 0, 0, "{\"type\":null,\"content\":" RD_TEXT "}"},
    {"type_escaped", 0, 0, "{\"type\":\"m\\u0065ssage\",\"content\":" RD_TEXT "}"},
    {"content_absent", 0, 0, "{\"id\":\"x\",\"type\":\"message\"}"},
    {"content_null", 0, 0, "{\"type\":\"message\",\"content\":null}"},
    {"content_string", 0, 0, "{\"type\":\"message\",\"content\":\"Hello\"}"},
    {"content_object", 0, 0, "{\"type\":\"message\",\"content\":{\"type\":\"text\"}}"},
    {"too_many_decoded_values", 0, 0,
     RD_MSG("[" RD_TU(1) "," RD_TU(2) "," RD_TU(3) "," RD_TU(4) "," RD_TU(5) "," RD_TU(6) ","
            RD_TU(7) "," RD_TU(8) "," RD_TU(9) "," RD_TU(10) "," RD_TU(11) "," RD_TU(12) ","
            RD_TU(13) "," RD_TU(14) "," RD_TU(15) "," RD_TU(16) "," RD_TU(17) "]")},
    {"not_json_html", 0, 502, "<html><body>Bad Gateway</body></html>"},
    {"not_json_empty", 0, 0, ""},
    {"not_json_blank", 0, 0, " \n"},
    {"not_an_object_array", 0, 0, "[1,2]"},
    {"not_an_object_null", 0, 0, "null"},
    {"not_an_object_string", 0, 0, "\"message\""},
    {"truncated", 0, 0, "{\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"ab"},
    {"trailing_bytes", 0, 0, "{\"type\":\"message\",\"content\":[]} {}"},
    {"trailing_comma", 0, 0, RD_MSG("[{\"type\":\"text\",\"text\":\"tc\"},]")},
    {"trailing_comma_skipped_member", 0, 0,
     "{\"type\":\"message\",\"content\":[],\"usage\":{\"input_tokens\":1,}}"},
    {"raw_control_character", 0, 0, RD_MSG("[{\"type\":\"text\",\"text\":\"tab\there\"}]")},
    {"bad_escape", 0, 0, RD_MSG("[{\"type\":\"text\",\"text\":\"\\x41\"}]")},
    {"leading_zero", 0, 0, RD_USAGE("{\"input_tokens\":017}")},
    {"nan", 0, 0, RD_USAGE("{\"input_tokens\":NaN}")},
    {"single_quotes", 0, 0, "{'type':'message','content':[{'type':'text','text':'q'}]}"},
    {"comment", 0, 0, "{/* c */\"type\":\"message\",\"content\":" RD_TEXT "}"},
    {"literal_case", 0, 0, RD_MSG("[{\"type\":\"text\",\"text\":\"t\",\"x\":True}]")},
    {"bad_json_in_input", 0, 0, RD_TOOL("{\"a\":[1,2}")},
    {"duplicate_content", 0, 0,
     "{\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"first\"}],\"content\":"
     "[{\"type\":\"text\",\"text\":\"second\"}]}"},
    {"duplicate_id", 0, 0, "{\"id\":\"1\",\"id\":\"2\",\"type\":\"message\",\"content\":[]}"},
    {"duplicate_type", 0, 0, "{\"type\":\"error\",\"type\":\"message\",\"content\":[]}"},
    {"duplicate_block_type", 0, 0,
     RD_MSG("[{\"type\":\"tool_use\",\"type\":\"text\",\"text\":\"t\"}]")},
    {"duplicate_block_text", 0, 0, RD_MSG("[{\"type\":\"text\",\"text\":\"a\",\"text\":\"b\"}]")},
    {"duplicate_input", 0, 0,
     RD_MSG("[{\"type\":\"tool_use\",\"id\":\"d\",\"input\":{\"a\":1},\"input\":{\"b\":2}}]")},
    {"duplicate_usage_field", 0, 0, RD_USAGE("{\"input_tokens\":1,\"input_tokens\":2}")},
    {"escaped_top_key", 0, 0, "{\"\\u0069d\":\"x\",\"type\":\"message\",\"content\":[]}"},
    {"escaped_block_key", 0, 0, RD_MSG("[{\"type\":\"text\",\"te\\u0078t\":\"escaped key\"}]")},
    {"escaped_usage_key", 0, 0, RD_USAGE("{\"input\\u005ftokens\":3}")},
};

#define RD_N (sizeof(RD_CORPUS) / sizeof(RD_CORPUS[0]))

Test(anthropic, response_readers_agree_on_the_wire_corpus)
{
    /* the root object, content, the block and 125 arrays are json-c's 128 levels */
    static const char head[] =
        "{\"type\":\"message\",\"content\":[{\"type\":\"tool_use\",\"id\":\"d\",\"input\":";
    char at_limit[600], over[600];
    rd_readers r;
    rd_open_anthropic(&r);
    cr_assert_gt(rd_compare_all(&r, RD_CORPUS, RD_N), 60);
    cr_assert(rd_compare(&r, "depth_at_limit", 0,
                         rd_nested(at_limit, sizeof(at_limit), head, 125, "}]}")));
    cr_assert(!rd_compare(&r, "depth_over_limit", 0,
                          rd_nested(over, sizeof(over), head, 126, "}]}")));
    rd_close(&r);
}

/* Every proper prefix of a body is left to the tree reader, which answers as it always did. */
Test(anthropic, response_readers_agree_on_truncated_bodies)
{
    rd_readers r;
    rd_open_anthropic(&r);
    rd_compare_prefixes(&r, RD_CORPUS, RD_N);
    rd_close(&r);
}

/* Each reader fails every allocation cleanly (the scanner reader may leave the body instead). */
Test(anthropic, response_readers_fail_allocations_cleanly)
{
    compass_fakehost *f = compass_fakehost_new("anthropic");
    const compass_host *h = compass_fakehost_host(f);
    const rd_case *c = NULL;
    size_t i;
    long nth;
    cr_assert(f);
    for (i = 0; i < RD_N; i++)
        if (!strcmp(RD_CORPUS[i].name, "many_text_blocks"))
            c = &RD_CORPUS[i];
    cr_assert(c);
    for (nth = 1; nth <= 40; nth++) {
        compass_http_response r = compass_fakehost_http(200, c->body);
        compass_chat_response out;
        compass_upstream_error u;
        compass_err err;
        int rc;
        memset(&err, 0, sizeof(err));
        compass_fakehost_fail_alloc_at(f, nth);
        rc = an_parse_response_fast(h, compass_fakehost_req(f), &r, &out, &err);
        cr_assert(rc == 0 || rc == AN_DECLINED || (rc == COMPASS_ENOMEM && err.code == rc),
                  "fast nth=%ld rc=%d %s", nth, rc, err.msg);
        memset(&err, 0, sizeof(err));
        compass_fakehost_fail_alloc_at(f, nth);
        rc = an_parse_response_full(h, compass_fakehost_req(f), &r, &out, &u, &err);
        cr_assert(rc == 0 || (rc == COMPASS_ENOMEM && err.code == rc), "full nth=%ld rc=%d %s",
                  nth, rc, err.msg);
    }
    compass_fakehost_fail_alloc_at(f, 0);
    compass_fakehost_free(f);
}

/* ---------------------------------------------------------------------------------------- */
/* parse_stream_event                                                                       */
/* ---------------------------------------------------------------------------------------- */

/* A whole stream with a text block and a tool_use block, as the streaming docs show it. */
static const char FULL_STREAM[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\","
    "\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\","
    "\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":10,"
    "\"cache_read_input_tokens\":100,\"output_tokens\":2},\"content\":[],\"stop_reason\":null}}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
    "\"text\":\"\"}}\n"
    "\n"
    "event: ping\n"
    "data: {\"type\": \"ping\"}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"Okay\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\", let's check the weather for San Francisco, CA:\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\","
    "\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"{\\\"location\\\":\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\" \\\"San Fra\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"ncisc\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"o, CA\\\"\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\", \\\"unit\\\": \\\"fahrenheit\\\"}\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n"
    "\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\","
    "\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n"
    "\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n"
    "\n";

static int feed(const char *body, compass_upstream_error *u, compass_err *err)
{
    req = compass_fakehost_req(fh);
    memset(u, 0, sizeof(*u));
    memset(err, 0, sizeof(*err));
    return compass_fakehost_feed_sse(fh, inst, compass_str_c(body), u, err);
}

Test(anthropic, full_stream_reassembles_text_tools_finish_and_usage)
{
    compass_upstream_error u;
    compass_err err;
    size_t i, n;
    int saw_role = 0, saw_tool_start = 0, finish = 0, usage_seen = 0;
    json_object *args;

    cr_assert_eq(feed(FULL_STREAM, &u, &err), COMPASS_STREAM_END, "%s", err.msg);
    cr_assert_str_eq(compass_fakehost_content(fh),
                     "Okay, let's check the weather for San Francisco, CA:");
    cr_assert_str_eq(compass_fakehost_tool_args(fh, 0),
                     "{\"location\": \"San Francisco, CA\", \"unit\": \"fahrenheit\"}");
    args = json_tokener_parse(compass_fakehost_tool_args(fh, 0));
    cr_assert(args);
    json_object_put(args);

    n = compass_fakehost_n_deltas(fh);
    for (i = 0; i < n; i++) {
        const compass_chat_delta *d = compass_fakehost_delta(fh, i);
        if (d->role == COMPASS_ROLE_ASSISTANT) {
            saw_role++;
            cr_assert(compass_str_eq(d->id, "msg_014p7gG3wDgGV9EUtLvnow3U"));
            cr_assert(compass_str_eq(d->model, "claude-sonnet-4-5-20250929"));
        }
        if (d->tool_index == 0 && d->tool_id.len) {
            saw_tool_start++;
            cr_assert(compass_str_eq(d->tool_id, "toolu_01T1x1fJ34qAmk2tNTrN7Up6"));
            cr_assert(compass_str_eq(d->tool_name, "get_weather"));
        }
        if (d->finish_reason)
            finish = d->finish_reason;
        if (d->usage.present) {
            usage_seen++;
            cr_assert_eq(d->usage.prompt_tokens, 472 + 10 + 100);
            cr_assert_eq(d->usage.cached_tokens, 100);
            cr_assert_eq(d->usage.completion_tokens, 89);
            cr_assert_eq(d->usage.total_tokens, 472 + 10 + 100 + 89);
        }
    }
    cr_assert_eq(saw_role, 1);
    cr_assert_eq(saw_tool_start, 1);
    cr_assert_eq(finish, COMPASS_FINISH_TOOL_CALLS);
    cr_assert_eq(usage_seen, 1);
}

Test(anthropic, second_tool_gets_the_next_index_and_empty_input_reads_as_object)
{
    static const char body[] =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"type\":\"message\","
        "\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"stop_reason\":null,"
        "\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n"
        "event: content_block_start\n"
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":"
        "\"tool_use\",\"id\":\"toolu_a\",\"name\":\"get_time\",\"input\":{}}}\n\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
        "\"input_json_delta\",\"partial_json\":\"\"}}\n\n"
        "event: content_block_stop\n"
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
        "event: content_block_start\n"
        "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":"
        "\"tool_use\",\"id\":\"toolu_b\",\"name\":\"get_weather\",\"input\":{}}}\n\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
        "\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\\\"Oslo\\\"}\"}}\n\n"
        "event: content_block_stop\n"
        "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},"
        "\"usage\":{\"output_tokens\":30}}\n\n"
        "event: message_stop\n"
        "data: {\"type\":\"message_stop\"}\n\n";
    compass_upstream_error u;
    compass_err err;
    cr_assert_eq(feed(body, &u, &err), COMPASS_STREAM_END, "%s", err.msg);
    cr_assert_str_eq(compass_fakehost_tool_args(fh, 0), "{}");
    cr_assert_str_eq(compass_fakehost_tool_args(fh, 1), "{\"location\":\"Oslo\"}");
    cr_assert_str_eq(compass_fakehost_content(fh), "");
}

Test(anthropic, stream_state_is_per_request)
{
    compass_upstream_error u;
    compass_err err;
    cr_assert_eq(feed(FULL_STREAM, &u, &err), COMPASS_STREAM_END, "%s", err.msg);
    /* A new request (or a retried attempt) starts from tool index 0 again. */
    cr_assert_eq(feed(FULL_STREAM, &u, &err), COMPASS_STREAM_END, "%s", err.msg);
    cr_assert_str_eq(compass_fakehost_tool_args(fh, 0),
                     "{\"location\": \"San Francisco, CA\", \"unit\": \"fahrenheit\"}");
    cr_assert_str_eq(compass_fakehost_tool_args(fh, 1), "");
}

Test(anthropic, error_event_mid_stream_is_retryable)
{
    static const char body[] =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_3\",\"type\":\"message\","
        "\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"stop_reason\":null,"
        "\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n"
        "event: content_block_start\n"
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
        "\"text\":\"\"}}\n\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
        "\"text\":\"Hel\"}}\n\n"
        "event: error\n"
        "data: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": "
        "\"Overloaded\"}}\n\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
        "\"text\":\"lo\"}}\n\n";
    compass_upstream_error u;
    compass_err err;
    cr_assert_eq(feed(body, &u, &err), COMPASS_EUPSTREAM);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert_str_eq(u.message, "Overloaded");
    cr_assert_str_eq(u.type, "server_error");
    cr_assert_str_eq(compass_fakehost_content(fh), "Hel");
}

Test(anthropic, unknown_event_types_are_ignored_and_logged)
{
    static const char body[] =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_4\",\"type\":\"message\","
        "\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"stop_reason\":null,"
        "\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n"
        "event: future_thing\n"
        "data: {\"type\":\"future_thing\",\"payload\":{\"x\":1}}\n\n"
        "event: content_block_start\n"
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":"
        "\"thinking\",\"thinking\":\"\"}}\n\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
        "\"thinking_delta\","
        "\"thinking\":\"hmm\"}}\n\n"
        "event: content_block_stop\n"
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
        "event: content_block_start\n"
        "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\","
        "\"text\":\"\"}}\n\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\","
        "\"text\":\"Hi\"}}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},"
        "\"usage\":{\"output_tokens\":3}}\n\n"
        "event: message_stop\n"
        "data: {\"type\":\"message_stop\"}\n\n";
    compass_upstream_error u;
    compass_err err;
    size_t i;
    int finish = 0;
    cr_assert_eq(feed(body, &u, &err), COMPASS_STREAM_END, "%s", err.msg);
    cr_assert_str_eq(compass_fakehost_content(fh), "Hi");
    cr_assert(strstr(compass_fakehost_log(fh), "future_thing"), "log: %s",
              compass_fakehost_log(fh));
    for (i = 0; i < compass_fakehost_n_deltas(fh); i++) {
        cr_assert_eq(compass_fakehost_delta(fh, i)->tool_index, -1);
        if (compass_fakehost_delta(fh, i)->finish_reason)
            finish = compass_fakehost_delta(fh, i)->finish_reason;
    }
    cr_assert_eq(finish, COMPASS_FINISH_LENGTH);
}

Test(anthropic, invalid_json_in_a_stream_is_a_parse_error)
{
    compass_upstream_error u;
    compass_err err;
    cr_assert_eq(feed("event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                      "\"index\":0,\n\n",
                      &u, &err),
                 COMPASS_EPARSE);
    cr_assert(strstr(err.msg, "content_block_delta"), "%s", err.msg);
    cr_assert_eq(feed("event: message_delta\ndata: not json\n\n", &u, &err), COMPASS_EPARSE);
}

/* ---------------------------------------------------------------------------------------- */
/* parse_stream_event's two readers agree: the scanner reader (what parse_stream_event tries */
/* first) against the json-c tree reader, on Messages streams                                */
/* ---------------------------------------------------------------------------------------- */

#define SE(name, data) "event: " name "\ndata: " data "\n\n"
#define S_START                                                                               \
    SE("message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":"  \
                        "\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\","  \
                        "\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"          \
                        "\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}")
#define S_START_USAGE(u)                                                                      \
    SE("message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_u\",\"model\":" \
                        "\"m\",\"usage\":" u "}}")
#define S_BLOCK(i, cb)                                                                        \
    SE("content_block_start",                                                                 \
       "{\"type\":\"content_block_start\",\"index\":" #i ",\"content_block\":" cb "}")
#define S_TEXT_START(i) S_BLOCK(i, "{\"type\":\"text\",\"text\":\"\"}")
#define S_TOOL_START(i, id, name)                                                             \
    S_BLOCK(i, "{\"type\":\"tool_use\",\"id\":\"" id "\",\"name\":\"" name "\",\"input\":{}}")
#define S_DELTA(i, d)                                                                         \
    SE("content_block_delta",                                                                 \
       "{\"type\":\"content_block_delta\",\"index\":" #i ",\"delta\":" d "}")
#define S_TEXT(i, t) S_DELTA(i, "{\"type\":\"text_delta\",\"text\":\"" t "\"}")
#define S_ARGS(i, j) S_DELTA(i, "{\"type\":\"input_json_delta\",\"partial_json\":\"" j "\"}")
#define S_STOP(i) SE("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":" #i "}")
#define S_MDELTA(reason, usage)                                                               \
    SE("message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":" reason       \
                        ",\"stop_sequence\":null},\"usage\":" usage "}")
#define S_FINISH S_MDELTA("\"end_turn\"", "{\"output_tokens\":15}")
#define S_END SE("message_stop", "{\"type\":\"message_stop\"}")
#define S_PING SE("ping", "{\"type\": \"ping\"}")
#define S_ERROR(e) SE("error", "{\"type\":\"error\",\"error\":" e "}")
/* a text of 1,024 bytes once decoded (9 bytes of JSON for each 8), the scanner reader's room */
#define T8 "abcdefg\\n"
#define T64 T8 T8 T8 T8 T8 T8 T8 T8
#define T1K T64 T64 T64 T64 T64 T64 T64 T64 T64 T64 T64 T64 T64 T64 T64 T64

/* Streams as Anthropic's streaming docs show them, then each escape and odd value the
 * scanner reader decodes itself, then what it leaves: error events and the shapes the tree
 * reader words an error for, bytes that are not strict JSON, duplicate and escaped keys. */
static const sd_case SD_CORPUS[] = {
    {"docs_text_and_tool", 0, FULL_STREAM},
    {"docs_text", 0,
     S_START S_TEXT_START(0) S_PING S_TEXT(0, "Hello") S_TEXT(0, "!") S_STOP(0) S_FINISH S_END},
    {"text_every_escape", 0,
     S_START S_TEXT_START(0)
     S_TEXT(0, "q\\\"uote back\\\\slash sl\\/ash \\b\\f\\n\\r\\t caf\\u00e9 \\u20AC \\u07FF "
               "\\u0800 \\uFFFF nul\\u0000end ctl\\u0001\\u001f \\u007f")
     S_TEXT(0, "\\n") S_TEXT(0, "\\u0000") S_TEXT(0, "ends with \\\\") S_FINISH S_END},
    {"text_surrogate_pairs", 0,
     S_TEXT_START(0) S_TEXT(0, "\\uD83D\\uDE00 \\ud83d\\ude00 \\ud800\\udc00 \\uDBFF\\uDFFF")
     S_TEXT(0, "\\ud83e\\udd16") S_TEXT(0, "\\uD835\\uDFFF \\uD838\\uDC00") S_END},
    {"text_lone_surrogates", 0, /* json-c decodes these, for the scanner reader */
     S_TEXT_START(0) S_TEXT(0, "lone \\ud800 high") S_TEXT(0, "\\udc00 low")
     S_TEXT(0, "\\ud83d\\u0041 broken") S_TEXT(0, "\\ud83d") S_TEXT(0, "\\ud800\\ud800\\udc00")
     S_TEXT(0, "\\ud836\\udc00 \\uD837\\uDFFF masked") S_TEXT(0, "ok \\u00e9") S_END},
    {"text_raw_bytes", 0,
     S_TEXT_START(0) S_TEXT(0, "caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80 stray \xff \x7f")
     S_TEXT(0, "\xc3\xa9\\n\xc3") S_END},
    {"text_long_escaped", 0, /* the room, then one byte more: json-c decodes that one */
     S_TEXT_START(0) S_TEXT(0, T1K) S_TEXT(0, T1K "x") S_TEXT(0, T1K T1K T1K "\\u00e9")
     S_TEXT(0, "after") S_END},
    {"text_empty_and_odd", 0,
     S_TEXT_START(0) S_TEXT(0, "") S_DELTA(0, "{\"type\":\"text_delta\",\"text\":null}")
     S_DELTA(0, "{\"type\":\"text_delta\",\"text\":7}")
     S_DELTA(0, "{\"type\":\"text_delta\",\"text\":[\"x\"]}")
     S_DELTA(0, "{\"type\":\"text_delta\"}") S_DELTA(0, "{\"text\":\"no type\"}")
     S_DELTA(0, "{\"type\":null,\"text\":\"null type\"}") S_DELTA(0, "\"a string\"")
     S_DELTA(0, "[1]") S_DELTA(0, "7") S_DELTA(0, "{}") S_TEXT(0, "kept") S_END},
    {"text_block_start_with_text", 0,
     S_BLOCK(0, "{\"type\":\"text\",\"text\":\"Hi \\\"there\\\"\\n\"}")
     S_BLOCK(1, "{\"text\":\"before type\",\"type\":\"text\"}")
     S_BLOCK(2, "{\"type\":\"text\",\"text\":\"\\ud800 lone\"}")
     S_BLOCK(3, "{\"type\":\"text\",\"text\":5}") S_BLOCK(4, "\"not an object\"")
     S_BLOCK(5, "[]") S_BLOCK(6, "{}") S_END},
    {"delta_type_variants", 0,
     S_TEXT_START(0) S_DELTA(0, "{\"type\":\"t\\u0065xt_delta\",\"text\":\"escaped type\"}")
     S_DELTA(0, "{\"type\":\"text_delta\\u0000more\",\"text\":\"a C string\"}")
     S_DELTA(0, "{\"type\":\"text\\u0000_delta\",\"text\":\"cut short\"}")
     S_DELTA(0, "{\"type\":\"Text_delta\",\"text\":\"case\"}")
     S_DELTA(0, "{\"type\":\"text_delta \",\"text\":\"space\"}")
     S_DELTA(0, "{\"type\":\"\\ud800\",\"text\":\"lone type\"}") S_END},
    {"thinking_signature_citations", 0,
     S_START S_BLOCK(0, "{\"type\":\"thinking\",\"thinking\":\"\"}")
     S_DELTA(0, "{\"type\":\"thinking_delta\",\"thinking\":\"Let me \\\"think\\\"\\n\"}")
     S_DELTA(0, "{\"type\":\"signature_delta\",\"signature\":\"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjr"
                "kzLoky3dl1pkiMOYds...\"}")
     S_STOP(0) S_BLOCK(1, "{\"type\":\"redacted_thinking\",\"data\":\"EmwKAhgBEgy3va3p\"}")
     S_STOP(1) S_TEXT_START(2)
     S_DELTA(2, "{\"type\":\"citations_delta\",\"citation\":{\"type\":\"char_location\","
                "\"cited_text\":\"The grass is green.\",\"document_index\":0}}")
     S_TEXT(2, "the grass is green") S_STOP(2) S_FINISH S_END},
    {"tool_args_with_escapes", 0,
     S_START S_TOOL_START(0, "toolu_01", "get_weather") S_ARGS(0, "")
     S_ARGS(0, "{\\\"location\\\": \\\"San")
     S_ARGS(0, " Francisco, CA\\\", \\\"note\\\": \\\"a\\\\nb \\\\\\\"q\\\\\\\"\\\"")
     S_ARGS(0, ", \\\"u\\\": \\\"caf\\u00e9 \\ud83d\\ude00 \\\\u00e9\\\", \\\"t\\\": \\\"\\t\\\"}")
     S_STOP(0) S_MDELTA("\"tool_use\"", "{\"output_tokens\":40}") S_END},
    {"tool_args_odd", 0,
     S_TOOL_START(0, "toolu_a", "f") S_ARGS(0, "\\ud800 lone")
     S_DELTA(0, "{\"type\":\"input_json_delta\",\"partial_json\":null}")
     S_DELTA(0, "{\"type\":\"input_json_delta\",\"partial_json\":{}}")
     S_DELTA(0, "{\"type\":\"input_json_delta\"}") S_ARGS(0, "{}") S_STOP(0)
     S_ARGS(0, "after stop") S_ARGS(7, "{\\\"never started\\\":1}") S_END},
    {"tools_several_and_empty_input", 0,
     S_TOOL_START(0, "toolu_a", "get_time") S_ARGS(0, "") S_STOP(0)
     S_TOOL_START(1, "toolu_b", "get_weather") S_ARGS(1, "{\\\"city\\\":\\\"Oslo\\\"}") S_STOP(1)
     S_TEXT_START(2) S_TEXT(2, "and") S_STOP(2) S_TOOL_START(40, "toolu_c", "far_index")
     S_STOP(40) S_STOP(40) S_STOP(3) S_TOOL_START(1, "toolu_d", "index_reused") S_STOP(1)
     S_END},
    {"tool_id_name_odd", 0,
     S_BLOCK(0, "{\"type\":\"tool_use\",\"id\":\"toolu\\u005f9\",\"name\":\"get\\u005fweather\"}")
     S_BLOCK(1, "{\"type\":\"tool_use\",\"id\":5,\"name\":null}")
     S_BLOCK(2, "{\"type\":\"tool_use\"}") S_BLOCK(3, "{\"type\":\"tool_use\",\"id\":\"\"}")
     S_BLOCK(4, "{\"type\":\"tool\\u005fuse\",\"id\":\"\\ud800\",\"name\":\"n\\u0000ul\"}")
     S_BLOCK(5, "{\"type\":\"server_tool_use\",\"id\":\"srvtoolu_1\",\"name\":\"web_search\"}")
     S_ARGS(5, "{\\\"query\\\":\\\"x\\\"}") S_STOP(5) S_STOP(0) S_STOP(1) S_END},
    {"index_odd_numbers", 0,
     SE("content_block_start", "{\"type\":\"content_block_start\",\"index\":1.0,"
                               "\"content_block\":{\"type\":\"tool_use\",\"id\":\"t1\"}}")
     SE("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1.9,\"delta\":"
                               "{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}")
     SE("content_block_start", "{\"type\":\"content_block_start\",\"index\":2e0,"
                               "\"content_block\":{\"type\":\"tool_use\",\"id\":\"t2\"}}")
     SE("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":2.5E0}")
     SE("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":-0}")
     SE("content_block_start", "{\"type\":\"content_block_start\",\"index\":100000,"
                               "\"content_block\":{\"type\":\"tool_use\",\"id\":\"max\"}}")
     SE("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":100000}") S_END},
    {"message_start_escaped_and_odd", 0,
     SE("message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"msg\\u005f1\\n\","
                         "\"model\":\"claude\\/sonnet \\ud800\"}}")
     SE("message_start", "{\"type\":\"message_start\",\"message\":{\"id\":7,\"model\":null}}")
     SE("message_start", "{\"type\":\"message_start\",\"message\":{}}")
     SE("message_start", "{\"message\":{\"id\":\"" T1K "\",\"model\":\"" T1K "\"},\"type\":"
                         "\"message_start\"}") S_END},
    {"usage_message_start_and_delta", 0,
     S_START_USAGE("{\"input_tokens\":472,\"cache_creation_input_tokens\":10,"
                   "\"cache_read_input_tokens\":100,\"output_tokens\":2,\"cache_creation\":"
                   "{\"ephemeral_5m_input_tokens\":10},\"service_tier\":\"standard\"}")
     S_TEXT_START(0) S_TEXT(0, "x") S_MDELTA("\"end_turn\"", "{\"output_tokens\":89}") S_END},
    {"usage_repeated_in_message_delta", 0,
     S_START_USAGE("{\"input_tokens\":5,\"cache_read_input_tokens\":7,\"output_tokens\":1}")
     S_MDELTA("\"end_turn\"", "{\"input_tokens\":6,\"cache_creation_input_tokens\":3,"
                              "\"cache_read_input_tokens\":8,\"output_tokens\":9,"
                              "\"server_tool_use\":{\"web_search_requests\":1}}")
     S_MDELTA("null", "{\"output_tokens\":10}") S_END},
    {"usage_odd_values", 0,
     S_START_USAGE("{\"input_tokens\":1e3,\"cache_read_input_tokens\":2.9,"
                   "\"cache_creation_input_tokens\":-0}")
     S_MDELTA("\"end_turn\"", "{\"output_tokens\":1.5E-2,\"input_tokens\":\"7\","
                              "\"cache_read_input_tokens\":null,"
                              "\"cache_creation_input_tokens\":[1]}")
     S_MDELTA("\"end_turn\"", "{\"output_tokens\":true}")
     S_MDELTA("\"end_turn\"", "{}") S_END},
    {"usage_huge_and_saturating", 0,
     S_START_USAGE("{\"input_tokens\":9223372036854775807,\"cache_read_input_tokens\":5,"
                   "\"cache_creation_input_tokens\":123456789012345678901}")
     S_MDELTA("\"end_turn\"", "{\"output_tokens\":9223372036854775807}")
     S_MDELTA("\"end_turn\"", "{\"input_tokens\":-9223372036854775808,\"output_tokens\":"
                              "1E+400,\"cache_creation_input_tokens\":-9223372036854775808}")
     S_END},
    {"usage_not_objects", 0,
     S_START_USAGE("null") S_START_USAGE("[{\"input_tokens\":1}]") S_START_USAGE("7")
     S_MDELTA("\"end_turn\"", "null") S_MDELTA("\"end_turn\"", "[]")
     S_MDELTA("\"end_turn\"", "\"{}\"")
     SE("message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}")
     SE("message_delta", "{\"type\":\"message_delta\"}") S_END},
    {"stop_reasons", 0,
     S_MDELTA("\"end_turn\"", "{}") S_MDELTA("\"stop_sequence\"", "{}")
     S_MDELTA("\"pause_turn\"", "{}") S_MDELTA("\"max_tokens\"", "{}")
     S_MDELTA("\"model_context_window_exceeded\"", "{}") S_MDELTA("\"tool_use\"", "{}")
     S_MDELTA("\"refusal\"", "{}") S_MDELTA("\"a_new_reason\"", "{}") S_MDELTA("\"\"", "{}")
     S_MDELTA("null", "{}") S_MDELTA("3", "{}") S_MDELTA("{\"r\":1}", "{}")
     S_MDELTA("\"max\\u005ftokens\"", "{}") S_MDELTA("\"tool_use\\u0000junk\"", "{}")
     S_MDELTA("\"new\\u0000\"", "{}") S_MDELTA("\"\\ud800\"", "{}")
     SE("message_delta", "{\"type\":\"message_delta\",\"delta\":\"end_turn\"}")
     SE("message_delta", "{\"type\":\"message_delta\",\"delta\":null,\"usage\":{}}") S_END},
    {"unknown_event_types", 0,
     S_START SE("future_thing", "{\"type\":\"future_thing\",\"payload\":{\"x\":[1,{}]}}")
     SE("x", "{\"type\":\"\"}") SE("x", "{\"type\":\"Ping\"}")
     SE("x", "{\"type\":\"new\\u005fthing \\ud800\"}") SE("x", "{\"type\":\"x\\u0000y\"}")
     SE("future_thing", "{\"data\":1}") SE("future_thing", "{\"type\":7}")
     SE("future_thing", "{\"type\":null}") S_TEXT(0, "still read") S_END},
    {"type_from_the_event_name", 0,
     SE("content_block_delta", "{\"index\":0,\"delta\":{\"type\":\"text_delta\","
                               "\"text\":\"named by the event\"}}")
     SE("content_block_start", "{\"type\":[],\"index\":1,\"content_block\":{\"type\":\"text\","
                               "\"text\":\"type not a string\"}}")
     SE("ping", "{}") "data: {\"no\":\"event name\"}\n\n"
     SE("an_event_name_of_more_than_sixty_three_bytes_is_cut_to_sixty_three_xx", "{}")
     SE("message_stop", "{\"index\":0}")},
    {"type_escaped", 0,
     S_TEXT_START(0)
     SE("x", "{\"type\":\"content\\u005fblock_delta\",\"index\":0,\"delta\":{\"type\":"
             "\"text_delta\",\"text\":\"escaped event type\"}}")
     SE("x", "{\"type\":\"ping\\u0000junk\"}") SE("x", "{\"type\":\"\\ud800\"}")
     SE("x", "{\"type\":\"message\\u005fstop\"}")},
    {"type_last_and_members_anywhere", 0,
     SE("content_block_delta", "{\"delta\":{\"text\":\"type last\",\"type\":\"text_delta\"},"
                               "\"index\":0,\"type\":\"content_block_delta\"}")
     SE("content_block_delta", "{\"extra\":[[1,[2,{\"text\":\"no\"}]],{\"a\":[]},\"s\",true,"
                               "false,null,-0.5e+3,1E+400],\"type\":\"content_block_delta\","
                               "\"index\":0,\"message\":{\"id\":\"ignored\"},\"content_block\":"
                               "{\"type\":\"text\",\"text\":\"ignored\"},\"usage\":{},\"delta\":"
                               "{\"type\":\"text_delta\",\"text\":\"kept\",\"stop_reason\":1}}")
     S_END},
    {"whitespace_crlf_and_multiline_data", 0,
     "event: message_start\r\ndata:  \r\n\t{ \"type\" : \"message_start\" , \"message\" : { "
     "\"id\" : \"m\" , \"usage\" : { \"input_tokens\" : 3 } } } \r\n\r\n"
     "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\ndata: "
     "\"index\":0,\ndata: \"delta\":{\"type\":\"text_delta\",\"text\":\"two lines\"}}\n\n"
     "event: content_block_delta\ndata:{\"type\":\"content_block_delta\",\"index\":0,"
     "\"delta\":{\"type\":\"text_delta\",\"text\":\"no space\"}}\n\n" S_END},
    {"pings_and_blank_data", 0,
     S_PING SE("ping", "{\"type\":\"ping\"}") SE("ping", "") SE("ping", " \t")
     SE("x", "{\"type\":\"ping\",\"extra\":{}}") SE("message_stop", "")},
    {"blank_data_other_event", 0, S_PING SE("content_block_delta", " ")},
    /* errors, and shapes the tree reader words an error for */
    {"error_overloaded", 1,
     S_START S_TEXT_START(0) S_TEXT(0, "Hel")
     S_ERROR("{\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}") S_TEXT(0, "lo")},
    {"error_types", 1, S_ERROR("{\"type\":\"rate_limit_error\",\"message\":\"slow \\u00e9\"}")},
    {"error_without_detail", 1, SE("error", "{\"type\":\"error\"}")},
    {"error_detail_not_an_object", 1, SE("error", "{\"type\":\"error\",\"error\":\"boom\"}")},
    {"error_named_by_the_event", 1, SE("error", "{\"error\":{\"type\":\"api_error\"}}")},
    {"error_escaped_type", 1, SE("x", "{\"type\":\"err\\u006fr\",\"error\":{}}")},
    {"message_start_without_message", 1,
     S_PING SE("message_start", "{\"type\":\"message_start\"}")},
    {"message_start_message_null", 1,
     SE("message_start", "{\"type\":\"message_start\",\"message\":null}")},
    {"message_start_message_array", 1,
     SE("message_start", "{\"type\":\"message_start\",\"message\":[]}")},
    {"block_start_without_block", 1,
     SE("content_block_start", "{\"type\":\"content_block_start\",\"index\":0}")},
    {"block_start_block_null", 1,
     SE("content_block_start", "{\"type\":\"content_block_start\",\"index\":0,"
                               "\"content_block\":null}")},
    {"block_start_without_index", 1,
     SE("content_block_start", "{\"type\":\"content_block_start\",\"content_block\":{}}")},
    {"delta_without_delta", 1,
     SE("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0}")},
    {"delta_index_string", 1,
     SE("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":\"0\",\"delta\":{}}")},
    {"delta_index_negative", 1,
     SE("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":-1,\"delta\":{}}")},
    {"delta_index_too_big", 1,
     SE("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":100001,"
                               "\"delta\":{}}")},
    {"delta_index_huge", 1,
     SE("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1e300,"
                               "\"delta\":{}}")},
    {"stop_without_index", 1, SE("content_block_stop", "{\"type\":\"content_block_stop\"}")},
    {"stop_index_null", 1,
     SE("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":null}")},
    {"stop_index_bool", 1,
     SE("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":true}")},
    /* bytes that are not strict JSON, or not an object */
    {"not_json", 1, SE("message_delta", "not json")},
    {"truncated", 1,
     S_TEXT_START(0) SE("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,")},
    {"not_an_object", 1, SE("content_block_delta", "[{\"type\":\"content_block_delta\"}]")},
    {"null_data", 1, SE("ping", "null")},
    {"string_data", 1, SE("ping", "\"ping\"")},
    {"trailing_bytes", 1, S_TEXT_START(0) SE("ping", "{\"type\":\"ping\"} {}") S_END},
    {"trailing_comma", 1, S_TEXT_START(0) S_DELTA(0, "{\"type\":\"text_delta\",\"text\":\"t\",}")
     S_END},
    {"raw_control_character", 1, S_TEXT_START(0) S_TEXT(0, "tab\there") S_END},
    {"bad_escape", 1, S_TEXT_START(0) S_TEXT(0, "\\x41") S_END},
    {"single_quotes", 1, S_TEXT_START(0) SE("x", "{'type':'ping'}") S_END},
    {"comment", 1, SE("x", "{/* c */\"type\":\"ping\"}") S_END},
    {"literal_case", 1, SE("x", "{\"type\":\"ping\",\"x\":True}") S_END},
    {"leading_zero", 1, SE("x", "{\"type\":\"ping\",\"index\":01}") S_END},
    {"nan", 1, S_MDELTA("\"end_turn\"", "{\"output_tokens\":NaN}") S_END},
    /* duplicate and escaped keys: json-c keeps the last, or the key may spell a kept one */
    {"duplicate_type", 1, SE("x", "{\"type\":\"error\",\"type\":\"ping\"}") S_END},
    {"duplicate_index", 1,
     S_TEXT_START(0) SE("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":5,"
                                               "\"index\":0,\"delta\":{\"type\":\"text_delta\","
                                               "\"text\":\"dup\"}}") S_END},
    {"duplicate_delta", 1,
     S_TEXT_START(0) SE("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,"
                                               "\"delta\":{\"type\":\"text_delta\",\"text\":"
                                               "\"a\"},\"delta\":{\"type\":\"text_delta\","
                                               "\"text\":\"b\"}}") S_END},
    {"duplicate_text", 1,
     S_TEXT_START(0) S_DELTA(0, "{\"type\":\"text_delta\",\"text\":\"a\",\"text\":\"b\"}") S_END},
    {"duplicate_usage", 1,
     S_MDELTA("\"end_turn\"", "{\"output_tokens\":1}") "event: message_delta\ndata: "
     "{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":1},\"usage\":{\"output_tokens\""
     ":2}}\n\n" S_END},
    {"duplicate_usage_count", 1,
     S_START_USAGE("{\"input_tokens\":1,\"input_tokens\":2}") S_END},
    {"escaped_top_key", 1,
     S_TEXT_START(0) SE("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,"
                                               "\"d\\u0065lta\":{\"type\":\"text_delta\","
                                               "\"text\":\"esc\"}}") S_END},
    {"escaped_delta_key", 1,
     S_TEXT_START(0) S_DELTA(0, "{\"type\":\"text_delta\",\"te\\u0078t\":\"escaped key\"}")
     S_END},
    {"escaped_usage_key", 1, S_START_USAGE("{\"input\\u005ftokens\":3}") S_END},
};

#define SD_N (sizeof(SD_CORPUS) / sizeof(SD_CORPUS[0]))

static int sd_fast(void *h, compass_req *rq, const compass_stream_event *ev, compass_err *err)
{
    return an_stream_event_fast(h, rq, ev, err);
}

static int sd_full(void *h, compass_req *rq, const compass_stream_event *ev,
                   compass_upstream_error *u, compass_err *err)
{
    return an_stream_event_full(h, rq, ev, u, err);
}

static void sd_open_anthropic(sd_readers *r)
{
    sd_open(r, "anthropic");
    r->fast = sd_fast;
    r->full = sd_full;
    r->fast_ctx = (void *)compass_fakehost_host(r->fast_fh);
    r->full_ctx = (void *)compass_fakehost_host(r->full_fh);
    r->declined = AN_DECLINED;
}

/* sd_compare, and the same log lines on both sides (unknown types, stop reasons). Returns
 * how many deltas the case produced. */
static size_t sd_compare_logged(const sd_readers *r, const sd_case *c)
{
    size_t la = strlen(compass_fakehost_log(r->fast_fh));
    size_t lb = strlen(compass_fakehost_log(r->full_fh));
    sd_compare(r, c);
    cr_assert_str_eq(compass_fakehost_log(r->fast_fh) + la, compass_fakehost_log(r->full_fh) + lb,
                     "%s: log", c->name);
    return compass_fakehost_n_deltas(r->full_fh);
}

Test(anthropic, stream_readers_agree_on_the_wire_corpus)
{
    static const char head[] = "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                               "{\"type\":\"text_delta\",\"text\":\"deep\"},\"x\":";
    char at[400], over[400];
    /* the root object and 127 arrays are json-c's 128 levels; one more is past them */
    const sd_case depth[] = {{"depth_at_limit", 0, sd_nested(at, sizeof(at), head, 127, "}")},
                             {"depth_over_limit", 1,
                              sd_nested(over, sizeof(over), head, 128, "}")}};
    sd_readers r;
    size_t i, deltas = 0;
    sd_open_anthropic(&r);
    for (i = 0; i < SD_N; i++)
        deltas += sd_compare_logged(&r, &SD_CORPUS[i]);
    cr_assert_gt(deltas, 150, "only %zu deltas", deltas);
    cr_assert(strstr(compass_fakehost_log(r.full_fh), "future_thing"));
    cr_assert(strstr(compass_fakehost_log(r.full_fh), "a_new_reason"));
    cr_assert_eq(sd_compare_logged(&r, &depth[0]), 1); /* "deep" */
    cr_assert_eq(sd_compare_logged(&r, &depth[1]), 0);
    sd_close(&r);
}

/* The scanner reader takes nothing from the host but what the tree reader takes, in the
 * same order: with any one allocation failing, both answer alike (a clean ENOMEM). */
Test(anthropic, stream_readers_agree_when_an_allocation_fails)
{
    static const char *const names[] = {"docs_text_and_tool", "tools_several_and_empty_input",
                                        "usage_repeated_in_message_delta", "text_long_escaped"};
    sd_readers r;
    size_t i, k;
    long nth;
    sd_open_anthropic(&r);
    for (k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        const sd_case *c = NULL;
        for (i = 0; i < SD_N; i++)
            if (!strcmp(SD_CORPUS[i].name, names[k]))
                c = &SD_CORPUS[i];
        cr_assert(c && c->left == 0, "%s", names[k]);
        for (nth = 1; nth <= 12; nth++) {
            compass_fakehost_fail_alloc_at(r.fast_fh, nth);
            compass_fakehost_fail_alloc_at(r.full_fh, nth);
            sd_compare(&r, c);
        }
    }
    compass_fakehost_fail_alloc_at(r.fast_fh, 0);
    compass_fakehost_fail_alloc_at(r.full_fh, 0);
    sd_close(&r);
}

/* ---------------------------------------------------------------------------------------- */
/* classify_error                                                                           */
/* ---------------------------------------------------------------------------------------- */

static void classify(int status, const char *body, const compass_header *hs, size_t nh,
                     compass_upstream_error *u)
{
    compass_http_response resp = compass_fakehost_http(status, body);
    resp.headers = hs;
    resp.n_headers = nh;
    req = compass_fakehost_req(fh);
    memset(u, 0xff, sizeof(*u));
    ops->classify_error(inst, req, &resp, u);
}

Test(anthropic, classify_error_maps_each_type)
{
    static const struct {
        int status;
        const char *type;
        int outcome;
        const char *oa_type;
        const char *oa_code;
    } cases[] = {
        {400, "invalid_request_error", COMPASS_OUTCOME_BAD_REQUEST, "invalid_request_error", ""},
        {401, "authentication_error", COMPASS_OUTCOME_AUTH, "authentication_error", NULL},
        {403, "permission_error", COMPASS_OUTCOME_AUTH, "permission_error", NULL},
        {404, "not_found_error", COMPASS_OUTCOME_NOT_FOUND, "not_found_error", NULL},
        {413, "request_too_large", COMPASS_OUTCOME_BAD_REQUEST, "invalid_request_error", NULL},
        {429, "rate_limit_error", COMPASS_OUTCOME_RATE_LIMITED, "rate_limit_error",
         "rate_limit_exceeded"},
        {500, "api_error", COMPASS_OUTCOME_RETRYABLE, "server_error", NULL},
        {529, "overloaded_error", COMPASS_OUTCOME_RETRYABLE, "server_error", NULL},
    };
    size_t i;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[256];
        compass_upstream_error u;
        snprintf(body, sizeof(body),
                 "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"msg %s\"},"
                 "\"request_id\":\"req_1\"}",
                 cases[i].type, cases[i].type);
        classify(cases[i].status, body, NULL, 0, &u);
        cr_assert_eq(u.size, sizeof(u));
        cr_assert_eq(u.outcome, cases[i].outcome, "%s", cases[i].type);
        cr_assert_eq(u.http_status, cases[i].status);
        cr_assert_str_eq(u.type, cases[i].oa_type, "%s", cases[i].type);
        if (cases[i].oa_code)
            cr_assert_str_eq(u.code, cases[i].oa_code);
        cr_assert(strstr(u.message, cases[i].type), "%s", u.message);
        cr_assert_eq(u.retry_after_ms, -1);
    }
}

Test(anthropic, classify_error_reads_retry_after)
{
    compass_header hs[2];
    compass_upstream_error u;
    hs[0].name = compass_str_c("request-id");
    hs[0].value = compass_str_c("req_018EeWyXxfu5pfWkrYcMdjWG");
    hs[1].name = compass_str_c("Retry-After");
    hs[1].value = compass_str_c("17");
    classify(429,
             "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":"
             "\"Number of request tokens has exceeded your per-minute rate limit\"}}",
             hs, 2, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RATE_LIMITED);
    cr_assert_eq(u.retry_after_ms, 17000);
    cr_assert_str_eq(u.code, "rate_limit_exceeded");

    hs[1].value = compass_str_c(" 1.5 ");
    classify(529, "", hs, 2, &u);
    cr_assert_eq(u.retry_after_ms, 1500);
    cr_assert_eq(u.http_status, 529);

    hs[1].value = compass_str_c("Wed, 21 Oct 2015 07:28:00 GMT"); /* long past */
    classify(529, "", hs, 2, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert_eq(u.retry_after_ms, 0);
}

Test(anthropic, classify_error_without_a_json_body_uses_the_status)
{
    compass_upstream_error u;
    classify(413, "<html><body>413 Request Entity Too Large</body></html>", NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_BAD_REQUEST);
    cr_assert_str_eq(u.type, "invalid_request_error");
    cr_assert(strstr(u.message, "413"), "%s", u.message);
    classify(502, "", NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert_str_eq(u.type, "server_error");
    classify(401, "{\"nope\":true}", NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_AUTH);
}

/* ---------------------------------------------------------------------------------------- */
/* out of memory                                                                            */
/* ---------------------------------------------------------------------------------------- */

static const char RICH_CHAT[] =
    "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":300,\"temperature\":0.5,\"user\":\"u1\","
    "\"stop\":[\"X\"],\"stream\":true,\"tools\":[" WEATHER_TOOL "],\"tool_choice\":\"auto\","
    "\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Look\"},{\"type\":\"image_url\","
    "\"image_url\":{\"url\":\"data:image/jpeg;base64,/9j/4AAQ\"}}]},"
    "{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"toolu_1\",\"type\":\"function\","
    "\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"location\\\":\\\"Oslo\\\"}\"}}]},"
    "{\"role\":\"tool\",\"tool_call_id\":\"toolu_1\",\"content\":\"cold\"}]}";

Test(anthropic, every_failed_allocation_is_a_clean_enomem)
{
    long nth;
    int saw_oom = 0;
    for (nth = 1; nth <= 40; nth++) {
        compass_chat_request in;
        compass_http_request out;
        compass_chat_response r;
        compass_upstream_error u;
        compass_http_response resp = compass_fakehost_http(200, TEXT_RESPONSE);
        compass_err err;
        int rc;

        /* build_request */
        req = compass_fakehost_req(fh);
        memset(&err, 0, sizeof(err));
        cr_assert_eq(compass_fakehost_parse_chat(fh, RICH_CHAT, &in, &err), 0, "%s", err.msg);
        compass_fakehost_fail_alloc_at(fh, nth);
        rc = ops->build_request(inst, req, &in, &out, &err);
        cr_assert(rc == 0 || rc == COMPASS_ENOMEM, "build nth=%ld rc=%d %s", nth, rc, err.msg);
        if (rc) {
            cr_assert_eq(err.code, COMPASS_ENOMEM);
            saw_oom++;
        }

        /* parse_response */
        req = compass_fakehost_req(fh);
        memset(&err, 0, sizeof(err));
        compass_fakehost_fail_alloc_at(fh, nth);
        rc = ops->parse_response(inst, req, &resp, &r, &u, &err);
        cr_assert(rc == 0 || rc == COMPASS_ENOMEM, "parse nth=%ld rc=%d %s", nth, rc, err.msg);
        if (rc)
            cr_assert_eq(err.code, COMPASS_ENOMEM);

        /* stream */
        req = compass_fakehost_req(fh);
        memset(&err, 0, sizeof(err));
        compass_fakehost_fail_alloc_at(fh, nth);
        rc = compass_fakehost_feed_sse(fh, inst, compass_str_c(FULL_STREAM), &u, &err);
        cr_assert(rc == COMPASS_STREAM_END || rc == COMPASS_ENOMEM, "stream nth=%ld rc=%d %s",
                  nth, rc, err.msg);
        if (rc == COMPASS_ENOMEM)
            cr_assert_eq(err.code, COMPASS_ENOMEM);

        /* instance_new */
        compass_fakehost_fail_alloc_at(fh, nth);
        {
            void *i;
            memset(&err, 0, sizeof(err));
            i = compass_fakehost_instance(fh, "oom", NULL, NULL, NULL, &err);
            if (!i)
                cr_assert_eq(err.code, COMPASS_ENOMEM, "instance nth=%ld: %s", nth, err.msg);
        }
    }
    compass_fakehost_fail_alloc_at(fh, 0);
    cr_assert(saw_oom > 3, "only %d build failures were injected", saw_oom);
}

/* ---------------------------------------------------------------------------------------- */
/* Characters json-c 0.16 alone would replace (pair_cases.h), as the user sees them, from   */
/* either reader                                                                            */
/* ---------------------------------------------------------------------------------------- */

/* A Messages body with case i in a text block and a tool_use block's input. */
static void response_pair(void *ctx, const char *head, size_t i)
{
    char b[512];
    compass_http_response resp = compass_fakehost_http(
        200, pair_fill(b, sizeof(b),
                       "{^\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":"
                       "\"claude\",\"content\":[{\"type\":\"text\",\"text\":\"a@b\"},{\"type\":"
                       "\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\",\"input\":{\"q\":\"a@\"}}],"
                       "\"stop_reason\":\"tool_use\",\"usage\":{\"input_tokens\":1,"
                       "\"output_tokens\":2}}",
                       head, i));
    compass_chat_response r = {0};
    compass_upstream_error u;
    compass_err err = {0};
    (void)ctx;
    req = compass_fakehost_req(fh);
    cr_assert_eq(an_parse_response_fast(compass_fakehost_host(fh), req, &resp, &r, &err),
                 *head ? AN_DECLINED : 0, "%s", b);
    cr_assert_eq(parse(200, b, &r, &u, &err), 0, "%s", err.msg);
    cr_assert(pair_reply_is(&r, i), "%s", b);
}

Test(anthropic, response_keeps_characters_json_c_would_replace)
{
    pair_each(response_pair, NULL);
}

/* A stream with case i in a text_delta and an input_json_delta. */
static void stream_pair(void *ctx, const char *head, size_t i)
{
    char text[256], tool[256], sse[1536];
    compass_stream_event ev = {0};
    compass_upstream_error u;
    compass_err err = {0};
    (void)ctx;
    ev.event = compass_str_c("content_block_delta");
    ev.data = compass_str_c(pair_fill(text, sizeof(text),
                                      "{^\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                                      "{\"type\":\"text_delta\",\"text\":\"a@b\"}}",
                                      head, i));
    if (*head) /* the scanner reader reads the other one after a message_start */
        cr_assert_eq(an_stream_event_fast(compass_fakehost_host(fh), compass_fakehost_req(fh),
                                          &ev, &err),
                     AN_DECLINED, "%s", text);
    pair_fill(tool, sizeof(tool),
              "{^\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
              "\"input_json_delta\",\"partial_json\":\"{\\\"q\\\":\\\"a@\\\"}\"}}",
              head, i);
    snprintf(sse, sizeof(sse),
             "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":"
             "\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\","
             "\"content\":[],\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n"
             "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
             "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
             "event: content_block_delta\ndata: %s\n\n"
             "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,"
             "\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\","
             "\"input\":{}}}\n\n"
             "event: content_block_delta\ndata: %s\n\n"
             "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
             text, tool);
    cr_assert_eq(feed(sse, &u, &err), COMPASS_STREAM_END, "%s", err.msg);
    cr_assert(pair_is(compass_str_c(compass_fakehost_content(fh)), "a", i, "b"), "%s", text);
    cr_assert(pair_is(compass_str_c(compass_fakehost_tool_args(fh, 0)), "{\"q\":\"a", i, "\"}"),
              "%s", text);
}

Test(anthropic, stream_keeps_characters_json_c_would_replace)
{
    pair_each(stream_pair, NULL);
}

/* An upstream's error message reaches the client. */
static void classify_400(void *ctx, const char *body, compass_upstream_error *u)
{
    (void)ctx;
    classify(400, body, NULL, 0, u);
}

Test(anthropic, error_message_keeps_characters_json_c_would_replace)
{
    pair_error_each("{^\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
                    "\"message\":\"bad @\"}}",
                    classify_400, NULL);
}
