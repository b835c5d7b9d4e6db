/* Unit tests for the gemini provider plugin, on the fake host, over wire bytes shaped as
 * Google documents them (ai.google.dev/api: GenerateContentRequest/Response, SSE stream,
 * google.rpc error model). */
#include <compass/plugin.h>
#include <compass_fakehost.h>

#include <criterion/criterion.h>
#include <json-c/json.h>
#include <json-c/json_pointer.h>

#include <stdio.h>
#include <string.h>

#include "../common/pair_cases.h"
#include "../common/stream_diff.h"
#include "gemini.h"

static compass_fakehost *fh;
static void *inst;
static json_object *body;
static compass_http_request hreq;

static void setup(void)
{
    compass_err e = {0};
    fh = compass_fakehost_new("gemini");
    cr_assert_not_null(fh);
    cr_assert_not_null(compass_fakehost_load(fh, COMPASS_PLUGIN_DIR "/gemini.so", &e), "%s", e.msg);
    inst = compass_fakehost_instance(fh, "g", NULL, "KEY123", NULL, &e);
    cr_assert_not_null(inst, "%s", e.msg);
    body = NULL;
}

static void teardown(void)
{
    if (body)
        json_object_put(body);
    body = NULL;
    compass_fakehost_free(fh);
}

TestSuite(gemini, .init = setup, .fini = teardown);

static const compass_provider_ops *ops(void)
{
    compass_err e;
    const compass_plugin_desc *d = compass_fakehost_load(fh, COMPASS_PLUGIN_DIR "/gemini.so", &e);
    return d->ops.provider;
}

/* Builds a request from OpenAI JSON on inst i; returns build_request's code. */
static int build_on(void *i, const char *json, compass_err *e)
{
    compass_chat_request r;
    compass_req *req = compass_fakehost_req(fh);
    int rc = compass_fakehost_parse_chat(fh, json, &r, e);
    cr_assert_eq(rc, 0, "parse_chat: %s", e->msg);
    memset(&hreq, 0, sizeof(hreq));
    rc = ops()->build_request(i, req, &r, &hreq, e);
    if (rc == 0) {
        if (body)
            json_object_put(body);
        body = json_tokener_parse(hreq.body.ptr);
        cr_assert_not_null(body, "body is not JSON: %s", hreq.body.ptr);
    }
    return rc;
}

static void build_ok(const char *json)
{
    compass_err e = {0};
    int rc = build_on(inst, json, &e);
    cr_assert_eq(rc, 0, "build_request: %d %s", rc, e.msg);
}

static int build_fails(const char *json, char *msg, size_t cap)
{
    compass_err e = {0};
    int rc = build_on(inst, json, &e);
    if (msg)
        snprintf(msg, cap, "%s", e.msg);
    return rc;
}

static json_object *at(const char *ptr)
{
    json_object *v = NULL;
    if (json_pointer_get(body, ptr, &v) != 0)
        return NULL;
    return v;
}

static const char *s_at(const char *ptr)
{
    json_object *v = at(ptr);
    cr_assert_not_null(v, "missing %s in %s", ptr, json_object_to_json_string(body));
    return json_object_get_string(v);
}

static int64_t i_at(const char *ptr)
{
    json_object *v = at(ptr);
    cr_assert_not_null(v, "missing %s in %s", ptr, json_object_to_json_string(body));
    return json_object_get_int64(v);
}

static double d_at(const char *ptr)
{
    json_object *v = at(ptr);
    cr_assert_not_null(v, "missing %s in %s", ptr, json_object_to_json_string(body));
    return json_object_get_double(v);
}

static size_t n_at(const char *ptr)
{
    json_object *v = at(ptr);
    cr_assert_not_null(v, "missing %s in %s", ptr, json_object_to_json_string(body));
    return json_object_array_length(v);
}

static compass_str hdr(const char *name)
{
    return compass_header_get(hreq.headers, hreq.n_headers, name);
}

static int str_eq(compass_str s, const char *c)
{
    return compass_str_eq(s, c);
}

/* ---------------------------------------------------------------------------------------- */
/* build_request                                                                             */
/* ---------------------------------------------------------------------------------------- */

Test(gemini, url_non_stream)
{
    build_ok(
        "{\"model\":\"gemini-2.0-flash\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    cr_assert(str_eq(hreq.url, "https://generativelanguage.googleapis.com/v1beta/models/"
                               "gemini-2.0-flash:generateContent"),
              "%.*s", (int)hreq.url.len, hreq.url.ptr);
    cr_assert_eq(hreq.method, COMPASS_HTTP_POST);
    cr_assert_eq(hreq.stream_format, COMPASS_STREAM_NONE);
}

Test(gemini, url_stream_uses_alt_sse)
{
    build_ok("{\"model\":\"gemini-2.0-flash\",\"stream\":true,"
             "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    cr_assert(str_eq(hreq.url, "https://generativelanguage.googleapis.com/v1beta/models/"
                               "gemini-2.0-flash:streamGenerateContent?alt=sse"),
              "%.*s", (int)hreq.url.len, hreq.url.ptr);
    cr_assert_eq(hreq.stream_format, COMPASS_STREAM_SSE);
}

Test(gemini, base_url_and_api_version_options)
{
    compass_err e = {0};
    const char *opts[] = {"api_version=v1", NULL};
    void *i2 = compass_fakehost_instance(fh, "g2", "http://127.0.0.1:9/", NULL, opts, &e);
    cr_assert_not_null(i2, "%s", e.msg);
    cr_assert_eq(build_on(i2,
                          "{\"model\":\"models/gemini-2.5-pro\",\"messages\":[{\"role\":"
                          "\"user\",\"content\":\"hi\"}]}",
                          &e),
                 0, "%s", e.msg);
    cr_assert(str_eq(hreq.url, "http://127.0.0.1:9/v1/models/gemini-2.5-pro:generateContent"),
              "%.*s", (int)hreq.url.len, hreq.url.ptr);
    /* no key configured: no x-goog-api-key header */
    cr_assert_eq(hdr("x-goog-api-key").len, 0);
}

Test(gemini, bad_option_values_are_refused)
{
    compass_err e = {0};
    const char *o1[] = {"api_version=v1/../x", NULL};
    const char *o2[] = {"thought_signatures=sometimes", NULL};
    cr_assert_null(compass_fakehost_instance(fh, "b1", NULL, NULL, o1, &e));
    cr_assert_eq(e.code, COMPASS_ECONFIG);
    cr_assert_null(compass_fakehost_instance(fh, "b2", NULL, NULL, o2, &e));
    cr_assert_eq(e.code, COMPASS_ECONFIG);
}

Test(gemini, headers_carry_key_and_json_type)
{
    build_ok(
        "{\"model\":\"gemini-2.0-flash\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    cr_assert(str_eq(hdr("x-goog-api-key"), "KEY123"));
    cr_assert(str_eq(hdr("content-type"), "application/json"));
    cr_assert_eq(hdr("authorization").len, 0);
}

Test(gemini, model_with_path_characters_is_refused)
{
    cr_assert_eq(build_fails("{\"model\":\"../x?y\",\"messages\":[{\"role\":\"user\","
                             "\"content\":\"hi\"}]}",
                             NULL, 0),
                 COMPASS_EUNSUPPORTED);
}

Test(gemini, roles_and_system_instruction)
{
    build_ok("{\"model\":\"gemini-2.0-flash\",\"messages\":["
             "{\"role\":\"system\",\"content\":\"Be terse.\"},"
             "{\"role\":\"developer\",\"content\":\"Use metric.\"},"
             "{\"role\":\"user\",\"content\":\"hi\"},"
             "{\"role\":\"assistant\",\"content\":\"hello\"},"
             "{\"role\":\"user\",\"content\":\"how far is the moon?\"}]}");
    cr_assert_str_eq(s_at("/systemInstruction/parts/0/text"), "Be terse.");
    cr_assert_str_eq(s_at("/systemInstruction/parts/1/text"), "Use metric.");
    cr_assert_eq(n_at("/contents"), 3);
    cr_assert_str_eq(s_at("/contents/0/role"), "user");
    cr_assert_str_eq(s_at("/contents/0/parts/0/text"), "hi");
    cr_assert_str_eq(s_at("/contents/1/role"), "model");
    cr_assert_str_eq(s_at("/contents/1/parts/0/text"), "hello");
    cr_assert_str_eq(s_at("/contents/2/role"), "user");
    cr_assert_null(at("/generationConfig"));
    cr_assert_null(at("/tools"));
}

Test(gemini, consecutive_same_role_messages_merge)
{
    build_ok("{\"model\":\"gemini-2.0-flash\",\"messages\":["
             "{\"role\":\"user\",\"content\":\"one\"},{\"role\":\"user\",\"content\":\"two\"},"
             "{\"role\":\"assistant\",\"content\":\"a\"},"
             "{\"role\":\"assistant\",\"content\":\"b\"}]}");
    cr_assert_eq(n_at("/contents"), 2);
    cr_assert_eq(n_at("/contents/0/parts"), 2);
    cr_assert_str_eq(s_at("/contents/0/parts/1/text"), "two");
    cr_assert_str_eq(s_at("/contents/1/role"), "model");
    cr_assert_eq(n_at("/contents/1/parts"), 2);
}

Test(gemini, images_inline_and_by_uri)
{
    build_ok(
        "{\"model\":\"gemini-2.0-flash\",\"messages\":[{\"role\":\"user\",\"content\":["
        "{\"type\":\"text\",\"text\":\"what is this?\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0KGgo=\"}},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x.test/a/cat.WEBP?sig=1\"}},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x.test/photo\"}}]}]}");
    cr_assert_str_eq(s_at("/contents/0/parts/0/text"), "what is this?");
    cr_assert_str_eq(s_at("/contents/0/parts/1/inlineData/mimeType"), "image/png");
    cr_assert_str_eq(s_at("/contents/0/parts/1/inlineData/data"), "iVBORw0KGgo=");
    cr_assert_str_eq(s_at("/contents/0/parts/2/fileData/mimeType"), "image/webp");
    cr_assert_str_eq(s_at("/contents/0/parts/2/fileData/fileUri"),
                     "https://x.test/a/cat.WEBP?sig=1");
    cr_assert_str_eq(s_at("/contents/0/parts/3/fileData/mimeType"), "image/jpeg");
}

Test(gemini, unsupported_image_urls_are_refused)
{
    char msg[512];
    cr_assert_eq(
        build_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
                    "{\"type\":\"image_url\",\"image_url\":{\"url\":\"ftp://x/a.png\"}}]}]}",
                    msg, sizeof(msg)),
        COMPASS_EUNSUPPORTED);
    cr_assert(strstr(msg, "messages[0]"), "%s", msg);
    cr_assert_eq(
        build_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
                    "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png,abc\"}}]}]}",
                    NULL, 0),
        COMPASS_EUNSUPPORTED);
}

static const char *TOOLS =
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
    "\"description\":\"Weather for a city\",\"parameters\":{"
    "\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"type\":\"object\","
    "\"additionalProperties\":false,\"properties\":{"
    "\"city\":{\"type\":\"string\",\"description\":\"City\"},"
    "\"additionalProperties\":{\"type\":\"string\"},"
    "\"unit\":{\"type\":[\"string\",\"null\"],\"enum\":[\"c\",\"f\"]},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"additionalProperties\":false,"
    "\"properties\":{\"k\":{\"type\":\"string\"}}}}},"
    "\"required\":[\"city\"]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"get_time\"}}]";

Test(gemini, tools_become_function_declarations_with_clean_schema)
{
    char json[2048];
    snprintf(json, sizeof(json),
             "{\"model\":\"gemini-2.0-flash\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
             "%s}",
             TOOLS);
    build_ok(json);
    cr_assert_eq(n_at("/tools"), 1);
    cr_assert_eq(n_at("/tools/0/functionDeclarations"), 2);
    cr_assert_str_eq(s_at("/tools/0/functionDeclarations/0/name"), "get_weather");
    cr_assert_str_eq(s_at("/tools/0/functionDeclarations/0/description"), "Weather for a city");
    cr_assert_str_eq(s_at("/tools/0/functionDeclarations/0/parameters/type"), "object");
    cr_assert_null(at("/tools/0/functionDeclarations/0/parameters/$schema"));
    cr_assert_null(at("/tools/0/functionDeclarations/0/parameters/additionalProperties"));
    /* a property that happens to be called additionalProperties stays */
    cr_assert_str_eq(
        s_at("/tools/0/functionDeclarations/0/parameters/properties/additionalProperties/type"),
        "string");
    cr_assert_null(at("/tools/0/functionDeclarations/0/parameters/properties/tags/items/"
                      "additionalProperties"));
    cr_assert_str_eq(s_at("/tools/0/functionDeclarations/0/parameters/properties/unit/type"),
                     "string");
    cr_assert(json_object_get_boolean(
        at("/tools/0/functionDeclarations/0/parameters/properties/unit/nullable")));
    cr_assert_str_eq(s_at("/tools/0/functionDeclarations/0/parameters/required/0"), "city");
    cr_assert_str_eq(s_at("/tools/0/functionDeclarations/1/name"), "get_time");
    cr_assert_null(at("/tools/0/functionDeclarations/1/parameters"));
    cr_assert_null(at("/toolConfig"));
}

Test(gemini, schema_ref_is_refused)
{
    char msg[512];
    cr_assert_eq(
        build_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
                    "\"parameters\":{\"type\":\"object\",\"properties\":{\"a\":"
                    "{\"$ref\":\"#/$defs/A\"}},\"$defs\":{\"A\":{\"type\":\"string\"}}}}}]}",
                    msg, sizeof(msg)),
        COMPASS_EUNSUPPORTED);
    cr_assert(strstr(msg, "tools[0]") && strstr(msg, "$ref"), "%s", msg);
}

static void tool_choice_case(const char *choice, const char *mode, const char *allowed)
{
    char json[2048];
    snprintf(json, sizeof(json),
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],%s,"
             "\"tool_choice\":%s}",
             TOOLS, choice);
    build_ok(json);
    cr_assert_str_eq(s_at("/toolConfig/functionCallingConfig/mode"), mode);
    if (allowed) {
        cr_assert_eq(n_at("/toolConfig/functionCallingConfig/allowedFunctionNames"), 1);
        cr_assert_str_eq(s_at("/toolConfig/functionCallingConfig/allowedFunctionNames/0"), allowed);
    } else {
        cr_assert_null(at("/toolConfig/functionCallingConfig/allowedFunctionNames"));
    }
}

Test(gemini, tool_choice_modes)
{
    tool_choice_case("\"auto\"", "AUTO", NULL);
    tool_choice_case("\"none\"", "NONE", NULL);
    tool_choice_case("\"required\"", "ANY", NULL);
    tool_choice_case("{\"type\":\"function\",\"function\":{\"name\":\"get_time\"}}", "ANY",
                     "get_time");
}

static const char *ROUND_TRIP =
    "{\"model\":\"gemini-2.5-flash\",\"messages\":["
    "{\"role\":\"user\",\"content\":\"weather in Paris and time?\"},"
    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
    "{\"id\":\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
    "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
    "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_time\","
    "\"arguments\":\"\"}}]},"
    "{\"role\":\"tool\",\"tool_call_id\":\"call_0\",\"content\":\"{\\\"temp_c\\\":21}\"},"
    "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"12:00\"}]}";

Test(gemini, function_call_and_response_round_trip)
{
    build_ok(ROUND_TRIP);
    cr_assert_eq(n_at("/contents"), 3);
    cr_assert_str_eq(s_at("/contents/1/role"), "model");
    cr_assert_str_eq(s_at("/contents/1/parts/0/functionCall/name"), "get_weather");
    cr_assert_str_eq(s_at("/contents/1/parts/0/functionCall/args/city"), "Paris");
    cr_assert_str_eq(s_at("/contents/1/parts/1/functionCall/name"), "get_time");
    cr_assert(json_object_is_type(at("/contents/1/parts/1/functionCall/args"), json_type_object));
    /* gemini-2.5: no thought signature sentinel in auto mode */
    cr_assert_null(at("/contents/1/parts/0/thoughtSignature"));
    /* both tool answers land in one user turn */
    cr_assert_str_eq(s_at("/contents/2/role"), "user");
    cr_assert_eq(n_at("/contents/2/parts"), 2);
    cr_assert_str_eq(s_at("/contents/2/parts/0/functionResponse/name"), "get_weather");
    cr_assert_eq(i_at("/contents/2/parts/0/functionResponse/response/temp_c"), 21);
    cr_assert_str_eq(s_at("/contents/2/parts/1/functionResponse/name"), "get_time");
    cr_assert_str_eq(s_at("/contents/2/parts/1/functionResponse/response/content"), "12:00");
}

Test(gemini, gemini3_history_gets_thought_signature_sentinel)
{
    char json[2048];
    const char *p = strstr(ROUND_TRIP, "gemini-2.5-flash");
    snprintf(json, sizeof(json), "%.*sgemini-3-pro-preview%s", (int)(p - ROUND_TRIP), ROUND_TRIP,
             p + strlen("gemini-2.5-flash"));
    build_ok(json);
    cr_assert_str_eq(s_at("/contents/1/parts/0/thoughtSignature"),
                     "skip_thought_signature_validator");
}

Test(gemini, invalid_tool_arguments_are_refused)
{
    char msg[512];
    cr_assert_eq(
        build_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
                    "{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"a\",\"type\":"
                    "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{oops\"}}]}]}",
                    msg, sizeof(msg)),
        COMPASS_EUNSUPPORTED);
    cr_assert(strstr(msg, "messages[1].tool_calls[0]"), "%s", msg);
}

Test(gemini, tool_message_without_matching_call_is_refused)
{
    char msg[512];
    cr_assert_eq(build_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
                             "{\"role\":\"tool\",\"tool_call_id\":\"nope\",\"content\":\"r\"}]}",
                             msg, sizeof(msg)),
                 COMPASS_EUNSUPPORTED);
    cr_assert(strstr(msg, "messages[1].tool_call_id"), "%s", msg);
}

Test(gemini, generation_config_fields)
{
    build_ok("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
             "\"temperature\":0.7,\"top_p\":0.9,\"max_tokens\":50,\"max_completion_tokens\":100,"
             "\"stop\":[\"END\",\"STOP\"],\"seed\":42,\"n\":1,\"presence_penalty\":0.5,"
             "\"frequency_penalty\":-0.25}");
    cr_assert_float_eq(d_at("/generationConfig/temperature"), 0.7, 1e-9);
    cr_assert_float_eq(d_at("/generationConfig/topP"), 0.9, 1e-9);
    cr_assert_eq(i_at("/generationConfig/maxOutputTokens"), 100);
    cr_assert_eq(n_at("/generationConfig/stopSequences"), 2);
    cr_assert_str_eq(s_at("/generationConfig/stopSequences/1"), "STOP");
    cr_assert_eq(i_at("/generationConfig/seed"), 42);
    cr_assert_eq(i_at("/generationConfig/candidateCount"), 1);
    cr_assert_float_eq(d_at("/generationConfig/presencePenalty"), 0.5, 1e-9);
    cr_assert_float_eq(d_at("/generationConfig/frequencyPenalty"), -0.25, 1e-9);
    /* the wire number is the short form, not 0.69999999999999996 */
    cr_assert(strstr(hreq.body.ptr, "\"temperature\":0.7"), "%s", hreq.body.ptr);
}

Test(gemini, max_tokens_used_without_max_completion_tokens)
{
    build_ok("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
             "\"max_tokens\":64,\"stop\":\"##\"}");
    cr_assert_eq(i_at("/generationConfig/maxOutputTokens"), 64);
    cr_assert_str_eq(s_at("/generationConfig/stopSequences/0"), "##");
}

Test(gemini, n_above_one_is_refused)
{
    char msg[512];
    cr_assert_eq(
        build_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                    "\"n\":2}",
                    msg, sizeof(msg)),
        COMPASS_EUNSUPPORTED);
    cr_assert(strstr(msg, "n:"), "%s", msg);
}

Test(gemini, response_format_json_object)
{
    build_ok("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
             "\"response_format\":{\"type\":\"json_object\"}}");
    cr_assert_str_eq(s_at("/generationConfig/responseMimeType"), "application/json");
    cr_assert_null(at("/generationConfig/responseSchema"));
}

Test(gemini, response_format_json_schema_is_cleaned)
{
    build_ok("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
             "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"r\","
             "\"strict\":true,\"schema\":{\"$schema\":\"x\",\"type\":\"object\","
             "\"additionalProperties\":false,\"properties\":{\"items\":{\"type\":\"array\","
             "\"items\":{\"type\":\"object\",\"additionalProperties\":false,\"properties\":"
             "{\"n\":{\"type\":\"integer\"}}}},\"alt\":{\"anyOf\":[{\"type\":\"string\","
             "\"$comment\":\"c\"},{\"type\":\"null\"}]}},\"required\":[\"items\"]}}}}");
    cr_assert_str_eq(s_at("/generationConfig/responseMimeType"), "application/json");
    cr_assert_str_eq(s_at("/generationConfig/responseSchema/type"), "object");
    cr_assert_null(at("/generationConfig/responseSchema/$schema"));
    cr_assert_null(at("/generationConfig/responseSchema/additionalProperties"));
    cr_assert_str_eq(s_at("/generationConfig/responseSchema/properties/items/type"), "array");
    cr_assert_null(
        at("/generationConfig/responseSchema/properties/items/items/additionalProperties"));
    cr_assert_str_eq(
        s_at("/generationConfig/responseSchema/properties/items/items/properties/n/type"),
        "integer");
    cr_assert_null(at("/generationConfig/responseSchema/properties/alt/anyOf/0/$comment"));
    cr_assert_null(at("/generationConfig/responseSchema/strict"));
}

Test(gemini, reasoning_effort_maps_to_thinking_config)
{
    build_ok("{\"model\":\"gemini-2.5-flash\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
             "\"reasoning_effort\":\"low\"}");
    cr_assert_eq(i_at("/generationConfig/thinkingConfig/thinkingBudget"), 1024);
    build_ok("{\"model\":\"gemini-2.5-flash\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
             "\"reasoning_effort\":\"none\"}");
    cr_assert_eq(i_at("/generationConfig/thinkingConfig/thinkingBudget"), 0);
    build_ok("{\"model\":\"gemini-3-pro-preview\",\"messages\":[{\"role\":\"user\","
             "\"content\":\"x\"}],\"reasoning_effort\":\"high\"}");
    cr_assert_str_eq(s_at("/generationConfig/thinkingConfig/thinkingLevel"), "HIGH");
    cr_assert_null(at("/generationConfig/thinkingConfig/thinkingBudget"));
}

Test(gemini, reasoning_effort_refusals)
{
    char msg[512];
    cr_assert_eq(build_fails("{\"model\":\"gemini-3-pro-preview\",\"messages\":[{\"role\":"
                             "\"user\",\"content\":\"x\"}],\"reasoning_effort\":\"none\"}",
                             msg, sizeof(msg)),
                 COMPASS_EUNSUPPORTED);
    cr_assert(strstr(msg, "reasoning_effort"), "%s", msg);
    cr_assert_eq(build_fails("{\"model\":\"gemini-2.5-pro\",\"messages\":[{\"role\":"
                             "\"user\",\"content\":\"x\"}],\"reasoning_effort\":\"extreme\"}",
                             msg, sizeof(msg)),
                 COMPASS_EUNSUPPORTED);
    cr_assert(strstr(msg, "extreme"), "%s", msg);
}

Test(gemini, only_system_messages_are_refused)
{
    cr_assert_eq(build_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":"
                             "\"x\"}]}",
                             NULL, 0),
                 COMPASS_EUNSUPPORTED);
}

/* ---------------------------------------------------------------------------------------- */
/* parse_response                                                                            */
/* ---------------------------------------------------------------------------------------- */

static int parse(const char *json, compass_chat_response *out, compass_upstream_error *u,
                 compass_err *e)
{
    compass_req *req = compass_fakehost_req(fh);
    compass_http_response resp = compass_fakehost_http(200, json);
    memset(out, 0, sizeof(*out));
    compass_uerr_init(u, COMPASS_OUTCOME_OK, 0);
    return ops()->parse_response(inst, req, &resp, out, u, e);
}

Test(gemini, parses_text_response)
{
    compass_chat_response r;
    compass_upstream_error u;
    compass_err e = {0};
    int rc = parse(
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hello\"},{\"text\":\", world\"}],"
        "\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0,\"safetyRatings\":[]}],"
        "\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":3,"
        "\"totalTokenCount\":7},\"modelVersion\":\"gemini-2.0-flash-001\","
        "\"responseId\":\"abc123\"}",
        &r, &u, &e);
    cr_assert_eq(rc, 0, "%s", e.msg);
    cr_assert(str_eq(r.content, "Hello, world"));
    cr_assert(r.has_content);
    cr_assert_eq(r.n_tool_calls, 0);
    cr_assert_eq(r.finish_reason, COMPASS_FINISH_STOP);
    cr_assert(str_eq(r.id, "abc123"));
    cr_assert(str_eq(r.model, "gemini-2.0-flash-001"));
    cr_assert(r.usage.present);
    cr_assert_eq(r.usage.prompt_tokens, 4);
    cr_assert_eq(r.usage.completion_tokens, 3);
    cr_assert_eq(r.usage.total_tokens, 7);
}

Test(gemini, thought_parts_are_not_content)
{
    compass_chat_response r;
    compass_upstream_error u;
    compass_err e = {0};
    cr_assert_eq(parse("{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"thinking...\","
                       "\"thought\":true},{\"text\":\"42\"}]},\"finishReason\":\"STOP\"}]}",
                       &r, &u, &e),
                 0, "%s", e.msg);
    cr_assert(str_eq(r.content, "42"));
}

Test(gemini, parses_function_calls)
{
    compass_chat_response r;
    compass_upstream_error u;
    compass_err e = {0};
    int rc = parse("{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":["
                   "{\"functionCall\":{\"name\":\"get_weather\",\"args\":{\"city\":\"Paris\"}}},"
                   "{\"functionCall\":{\"name\":\"get_time\",\"args\":{}}}]},"
                   "\"finishReason\":\"STOP\"}]}",
                   &r, &u, &e);
    cr_assert_eq(rc, 0, "%s", e.msg);
    cr_assert_eq(r.n_tool_calls, 2);
    cr_assert(str_eq(r.tool_calls[0].id, "call_0"));
    cr_assert(str_eq(r.tool_calls[0].name, "get_weather"));
    cr_assert(str_eq(r.tool_calls[0].arguments, "{\"city\":\"Paris\"}"), "%s",
              r.tool_calls[0].arguments.ptr);
    cr_assert(str_eq(r.tool_calls[1].id, "call_1"));
    cr_assert(str_eq(r.tool_calls[1].arguments, "{}"));
    cr_assert_eq(r.finish_reason, COMPASS_FINISH_TOOL_CALLS);
    cr_assert_not(r.has_content);
}

static int finish_of(const char *reason)
{
    char json[256];
    compass_chat_response r;
    compass_upstream_error u;
    compass_err e = {0};
    snprintf(json, sizeof(json),
             "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]},"
             "\"finishReason\":\"%s\"}]}",
             reason);
    cr_assert_eq(parse(json, &r, &u, &e), 0, "%s", e.msg);
    return r.finish_reason;
}

Test(gemini, finish_reason_classes)
{
    cr_assert_eq(finish_of("STOP"), COMPASS_FINISH_STOP);
    cr_assert_eq(finish_of("MAX_TOKENS"), COMPASS_FINISH_LENGTH);
    cr_assert_eq(finish_of("SAFETY"), COMPASS_FINISH_CONTENT_FILTER);
    cr_assert_eq(finish_of("RECITATION"), COMPASS_FINISH_CONTENT_FILTER);
    cr_assert_eq(finish_of("BLOCKLIST"), COMPASS_FINISH_CONTENT_FILTER);
    cr_assert_eq(finish_of("PROHIBITED_CONTENT"), COMPASS_FINISH_CONTENT_FILTER);
    cr_assert_eq(finish_of("SPII"), COMPASS_FINISH_CONTENT_FILTER);
    cr_assert_eq(finish_of("OTHER"), COMPASS_FINISH_STOP);
    cr_assert_eq(finish_of("LANGUAGE"), COMPASS_FINISH_STOP);
    cr_assert_eq(finish_of("FINISH_REASON_UNSPECIFIED"), COMPASS_FINISH_STOP);
}

Test(gemini, prompt_feedback_block_is_content_filter)
{
    compass_chat_response r;
    compass_upstream_error u;
    compass_err e = {0};
    int rc = parse("{\"promptFeedback\":{\"blockReason\":\"SAFETY\",\"safetyRatings\":[]},"
                   "\"usageMetadata\":{\"promptTokenCount\":9,\"totalTokenCount\":9}}",
                   &r, &u, &e);
    cr_assert_eq(rc, 0, "%s", e.msg);
    cr_assert_eq(r.finish_reason, COMPASS_FINISH_CONTENT_FILTER);
    cr_assert_eq(r.content.len, 0);
    cr_assert_eq(r.n_tool_calls, 0);
    cr_assert_eq(r.usage.prompt_tokens, 9);
}

Test(gemini, usage_with_thoughts_and_cache)
{
    compass_chat_response r;
    compass_upstream_error u;
    compass_err e = {0};
    int rc = parse("{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"ok\"}]},"
                   "\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":100,"
                   "\"candidatesTokenCount\":50,\"thoughtsTokenCount\":30,"
                   "\"cachedContentTokenCount\":40,\"totalTokenCount\":180}}",
                   &r, &u, &e);
    cr_assert_eq(rc, 0, "%s", e.msg);
    cr_assert_eq(r.usage.prompt_tokens, 100);
    cr_assert_eq(r.usage.completion_tokens, 80);
    cr_assert_eq(r.usage.reasoning_tokens, 30);
    cr_assert_eq(r.usage.cached_tokens, 40);
    cr_assert_eq(r.usage.total_tokens, 180);
}

Test(gemini, error_body_is_upstream_error)
{
    compass_chat_response r;
    compass_upstream_error u;
    compass_err e = {0};
    int rc = parse("{\"error\":{\"code\":429,\"message\":\"Quota exceeded\","
                   "\"status\":\"RESOURCE_EXHAUSTED\"}}",
                   &r, &u, &e);
    cr_assert_eq(rc, COMPASS_EUPSTREAM);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RATE_LIMITED);
    cr_assert_eq(u.http_status, 429);
    cr_assert_str_eq(u.message, "Quota exceeded");
}

Test(gemini, garbage_is_parse_error)
{
    compass_chat_response r;
    compass_upstream_error u;
    compass_err e = {0};
    cr_assert_eq(parse("<html>502 Bad Gateway</html>", &r, &u, &e), COMPASS_EPARSE);
    cr_assert_eq(parse("{\"candidates\":", &r, &u, &e), COMPASS_EPARSE);
    cr_assert_eq(parse("{\"candidates\":{}}", &r, &u, &e), COMPASS_EPARSE);
    cr_assert_eq(parse("{}", &r, &u, &e), COMPASS_EPARSE);
    cr_assert_eq(parse("[1,2]", &r, &u, &e), COMPASS_EPARSE);
    cr_assert_eq(parse("", &r, &u, &e), COMPASS_EPARSE);
}

/* ---------------------------------------------------------------------------------------- */
/* Streaming                                                                                 */
/* ---------------------------------------------------------------------------------------- */

/* Shaped like a recorded streamGenerateContent?alt=sse body: each event a full
 * GenerateContentResponse, CRLF framing, usage on every event, no end marker. */
static const char *TEXT_STREAM =
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"The quick\"}],"
    "\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 6,"
    "\"totalTokenCount\": 6},\"modelVersion\": \"gemini-2.0-flash\",\"responseId\": "
    "\"r-1\"}\r\n\r\n"
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" brown fox\"}],"
    "\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 6,"
    "\"totalTokenCount\": 6},\"modelVersion\": \"gemini-2.0-flash\",\"responseId\": "
    "\"r-1\"}\r\n\r\n"
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" jumps.\"}],"
    "\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 6,"
    "\"totalTokenCount\": 6},\"modelVersion\": \"gemini-2.0-flash\",\"responseId\": "
    "\"r-1\"}\r\n\r\n"
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"\"}],\"role\": \"model\"},"
    "\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 6,"
    "\"candidatesTokenCount\": 5,\"thoughtsTokenCount\": 2,\"totalTokenCount\": 13},"
    "\"modelVersion\": \"gemini-2.0-flash\",\"responseId\": \"r-1\"}\r\n\r\n";

static int feed(const char *sse, compass_upstream_error *u, compass_err *e)
{
    compass_uerr_init(u, COMPASS_OUTCOME_OK, 0);
    return compass_fakehost_feed_sse(fh, inst, compass_str_c(sse), u, e);
}

Test(gemini, stream_text_role_once_finish_usage)
{
    compass_upstream_error u;
    compass_err e = {0};
    size_t i, n, roles = 0, finishes = 0, usages = 0;
    compass_fakehost_req(fh);
    cr_assert_eq(feed(TEXT_STREAM, &u, &e), COMPASS_OK, "%s", e.msg);
    cr_assert_str_eq(compass_fakehost_content(fh), "The quick brown fox jumps.");
    n = compass_fakehost_n_deltas(fh);
    cr_assert_gt(n, 0);
    cr_assert_eq(compass_fakehost_delta(fh, 0)->role, COMPASS_ROLE_ASSISTANT);
    for (i = 0; i < n; i++) {
        const compass_chat_delta *d = compass_fakehost_delta(fh, i);
        roles += d->role != 0;
        if (d->finish_reason) {
            finishes++;
            cr_assert_eq(d->finish_reason, COMPASS_FINISH_STOP);
        }
        if (d->usage.present) {
            usages++;
            cr_assert_eq(d->usage.prompt_tokens, 6);
            cr_assert_eq(d->usage.completion_tokens, 7);
            cr_assert_eq(d->usage.reasoning_tokens, 2);
            cr_assert_eq(d->usage.total_tokens, 13);
        }
        cr_assert_eq(d->tool_index, -1);
        cr_assert(str_eq(d->id, "r-1"));
    }
    cr_assert_eq(roles, 1);
    cr_assert_eq(finishes, 1);
    cr_assert_eq(usages, 1);
    /* the usage delta comes last */
    cr_assert(compass_fakehost_delta(fh, n - 1)->usage.present);
}

Test(gemini, stream_state_is_per_request)
{
    compass_upstream_error u;
    compass_err e = {0};
    compass_fakehost_req(fh);
    cr_assert_eq(feed(TEXT_STREAM, &u, &e), COMPASS_OK, "%s", e.msg);
    compass_fakehost_req(fh);
    cr_assert_eq(feed(TEXT_STREAM, &u, &e), COMPASS_OK, "%s", e.msg);
    cr_assert_eq(compass_fakehost_delta(fh, 0)->role, COMPASS_ROLE_ASSISTANT);
}

Test(gemini, stream_function_call)
{
    compass_upstream_error u;
    compass_err e = {0};
    size_t i, n, tools = 0;
    const compass_chat_delta *last = NULL;
    compass_fakehost_req(fh);
    cr_assert_eq(
        feed("data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": "
             "\"get_weather\",\"args\": {\"city\": \"Paris\"}}}],\"role\": \"model\"},"
             "\"index\": 0}],\"modelVersion\": \"gemini-2.5-flash\"}\r\n\r\n"
             "data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": "
             "\"get_time\",\"args\": {}}}],\"role\": \"model\"},\"finishReason\": \"STOP\","
             "\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 20,"
             "\"candidatesTokenCount\": 10,\"totalTokenCount\": 30},"
             "\"modelVersion\": \"gemini-2.5-flash\"}\r\n\r\n",
             &u, &e),
        COMPASS_OK, "%s", e.msg);
    n = compass_fakehost_n_deltas(fh);
    cr_assert_eq(compass_fakehost_delta(fh, 0)->role, COMPASS_ROLE_ASSISTANT);
    for (i = 0; i < n; i++) {
        const compass_chat_delta *d = compass_fakehost_delta(fh, i);
        if (d->tool_index >= 0) {
            cr_assert_eq(d->tool_index, (int)tools);
            cr_assert(str_eq(d->tool_id, tools == 0 ? "call_0" : "call_1"));
            cr_assert(str_eq(d->tool_name, tools == 0 ? "get_weather" : "get_time"));
            tools++;
        }
        if (d->finish_reason)
            last = d;
        if (i > 0)
            cr_assert_eq(d->role, 0);
    }
    cr_assert_eq(tools, 2);
    cr_assert_str_eq(compass_fakehost_tool_args(fh, 0), "{\"city\":\"Paris\"}");
    cr_assert_str_eq(compass_fakehost_tool_args(fh, 1), "{}");
    cr_assert_not_null(last);
    cr_assert_eq(last->finish_reason, COMPASS_FINISH_TOOL_CALLS);
}

Test(gemini, stream_error_event)
{
    compass_upstream_error u;
    compass_err e = {0};
    compass_fakehost_req(fh);
    cr_assert_eq(feed("data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}]}}]}"
                      "\r\n\r\n"
                      "data: {\"error\": {\"code\": 503, \"message\": \"The model is overloaded.\","
                      " \"status\": \"UNAVAILABLE\"}}\r\n\r\n",
                      &u, &e),
                 COMPASS_EUPSTREAM);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert_eq(u.http_status, 503);
    cr_assert_str_eq(u.message, "The model is overloaded.");
    cr_assert_str_eq(compass_fakehost_content(fh), "Hi");
}

Test(gemini, stream_invalid_json)
{
    compass_upstream_error u;
    compass_err e = {0};
    compass_fakehost_req(fh);
    cr_assert_eq(feed("data: {\"candidates\": [\r\n\r\n", &u, &e), COMPASS_EPARSE);
    compass_fakehost_req(fh);
    cr_assert_eq(feed("data: not json\r\n\r\n", &u, &e), COMPASS_EPARSE);
}

Test(gemini, stream_prompt_blocked)
{
    compass_upstream_error u;
    compass_err e = {0};
    size_t n;
    compass_fakehost_req(fh);
    cr_assert_eq(
        feed("data: {\"promptFeedback\": {\"blockReason\": \"PROHIBITED_CONTENT\"},"
             "\"usageMetadata\": {\"promptTokenCount\": 3,\"totalTokenCount\": 3}}\r\n\r\n",
             &u, &e),
        COMPASS_OK, "%s", e.msg);
    n = compass_fakehost_n_deltas(fh);
    cr_assert_geq(n, 1);
    cr_assert_eq(compass_fakehost_delta(fh, 0)->role, COMPASS_ROLE_ASSISTANT);
    cr_assert_eq(compass_fakehost_delta(fh, 0)->finish_reason, COMPASS_FINISH_CONTENT_FILTER);
}

/* ---------------------------------------------------------------------------------------- */
/* classify_error                                                                            */
/* ---------------------------------------------------------------------------------------- */

static compass_upstream_error classify_h(int status, const char *b, const compass_header *hs,
                                         size_t nh)
{
    compass_upstream_error u;
    compass_http_response resp = compass_fakehost_http(status, b);
    resp.headers = hs;
    resp.n_headers = nh;
    memset(&u, 0x5a, sizeof(u));
    ops()->classify_error(inst, compass_fakehost_req(fh), &resp, &u);
    return u;
}

static compass_upstream_error classify(int status, const char *google_status)
{
    char b[512];
    snprintf(b, sizeof(b), "{\"error\":{\"code\":%d,\"message\":\"msg %s\",\"status\":\"%s\"}}",
             status, google_status, google_status);
    return classify_h(status, b, NULL, 0);
}

Test(gemini, classify_each_status)
{
    compass_upstream_error u;
    u = classify(400, "INVALID_ARGUMENT");
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_BAD_REQUEST);
    cr_assert_str_eq(u.type, "invalid_request_error");
    cr_assert_str_eq(u.message, "msg INVALID_ARGUMENT");
    cr_assert_eq(u.http_status, 400);
    cr_assert_eq(u.retry_after_ms, -1);
    u = classify(400, "FAILED_PRECONDITION");
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_BAD_REQUEST);
    u = classify(401, "UNAUTHENTICATED");
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_AUTH);
    cr_assert_str_eq(u.type, "authentication_error");
    u = classify(403, "PERMISSION_DENIED");
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_AUTH);
    cr_assert_str_eq(u.type, "permission_error");
    u = classify(404, "NOT_FOUND");
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_NOT_FOUND);
    u = classify(429, "RESOURCE_EXHAUSTED");
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RATE_LIMITED);
    cr_assert_str_eq(u.type, "rate_limit_error");
    cr_assert_str_eq(u.code, "rate_limit_exceeded");
    cr_assert_eq(u.retry_after_ms, -1);
    u = classify(500, "INTERNAL");
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert_str_eq(u.type, "server_error");
    u = classify(503, "UNAVAILABLE");
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    u = classify(504, "DEADLINE_EXCEEDED");
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
}

Test(gemini, classify_invalid_api_key_is_auth)
{
    compass_upstream_error u = classify_h(
        400,
        "{\"error\":{\"code\":400,\"message\":\"API key not valid. Please pass a valid API key.\","
        "\"status\":\"INVALID_ARGUMENT\",\"details\":[{\"@type\":"
        "\"type.googleapis.com/google.rpc.ErrorInfo\",\"reason\":\"API_KEY_INVALID\","
        "\"domain\":\"googleapis.com\"}]}}",
        NULL, 0);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_AUTH);
    cr_assert_str_eq(u.code, "invalid_api_key");
}

Test(gemini, classify_retry_delay_from_retry_info)
{
    compass_header h = {compass_str_c("Retry-After"), compass_str_c("99")};
    compass_upstream_error u =
        classify_h(429,
                   "{\"error\":{\"code\":429,\"message\":\"You exceeded your current quota.\","
                   "\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"@type\":"
                   "\"type.googleapis.com/google.rpc.QuotaFailure\",\"violations\":[]},{\"@type\":"
                   "\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"30s\"}]}}",
                   &h, 1);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RATE_LIMITED);
    cr_assert_eq(u.retry_after_ms, 30000);
    u = classify_h(429,
                   "{\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{"
                   "\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":"
                   "\"34.4s\"}]}}",
                   NULL, 0);
    cr_assert_eq(u.retry_after_ms, 34400);
}

Test(gemini, classify_retry_after_header_fallback)
{
    compass_header h = {compass_str_c("retry-after"), compass_str_c(" 7 ")};
    compass_upstream_error u = classify_h(
        429,
        "{\"error\":{\"code\":429,\"message\":\"slow down\",\"status\":\"RESOURCE_EXHAUSTED\"}}",
        &h, 1);
    cr_assert_eq(u.retry_after_ms, 7000);
}

Test(gemini, classify_unreadable_body_uses_status)
{
    compass_upstream_error u = classify_h(502, "<html>bad gateway</html>", NULL, 0);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert_eq(u.http_status, 502);
    cr_assert_gt(strlen(u.message), 0);
    u = classify_h(403, "", NULL, 0);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_AUTH);
    u = classify_h(429, "", NULL, 0);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RATE_LIMITED);
    /* an array-wrapped error body (streamGenerateContent without alt=sse) */
    u = classify_h(404,
                   "[{\"error\":{\"code\":404,\"message\":\"models/x is not found\","
                   "\"status\":\"NOT_FOUND\"}}]",
                   NULL, 0);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_NOT_FOUND);
    cr_assert_str_eq(u.message, "models/x is not found");
}

/* ---------------------------------------------------------------------------------------- */
/* Embeddings: batchEmbedContents                                                            */
/* ---------------------------------------------------------------------------------------- */

static const compass_str EMB_INPUTS[3] = {{"hello", 5}, {"wor\"ld", 6}, {"third", 5}};
static compass_req *ereq; /* the request embed_on built in; embed_parse parses in it */

/* Builds an embeddings request for n of EMB_INPUTS on inst i, in the current request. */
static int embed_on(void *i, const char *model, size_t n, int64_t dims, compass_err *e)
{
    compass_embed_request r;
    int rc;
    memset(&r, 0, sizeof(r));
    r.size = sizeof(r);
    r.model = compass_str_c(model);
    r.inputs = EMB_INPUTS;
    r.n_inputs = n;
    r.dimensions = dims;
    r.encoding_format = compass_str_c("base64"); /* the host's business, never sent */
    r.user = compass_str_c("u-1");
    memset(&hreq, 0, sizeof(hreq));
    ereq = compass_fakehost_req(fh);
    rc = ops()->build_embed_request(i, ereq, &r, &hreq, e);
    if (rc == 0) {
        if (body)
            json_object_put(body);
        body = json_tokener_parse(hreq.body.ptr);
        cr_assert_not_null(body, "body is not JSON: %s", hreq.body.ptr);
    }
    return rc;
}

/* Parses an embeddings answer in the current request (no new request: keeps build's state). */
static int embed_parse(int status, const char *json, compass_embed_response *out,
                       compass_upstream_error *u, compass_err *e)
{
    compass_http_response resp = compass_fakehost_http(status, json);
    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    compass_uerr_init(u, COMPASS_OUTCOME_OK, 0);
    return ops()->parse_embed_response(inst, ereq, &resp, out, u, e);
}

Test(gemini, embed_ops_are_set)
{
    cr_assert(COMPASS_OPS_HAS(ops(), build_embed_request));
    cr_assert(COMPASS_OPS_HAS(ops(), parse_embed_response));
}

Test(gemini, embed_url_headers_and_body)
{
    compass_err e = {0};
    json_object *one;
    cr_assert_eq(embed_on(inst, "gemini-embedding-001", 2, 0, &e), 0, "%s", e.msg);
    cr_assert(str_eq(hreq.url, "https://generativelanguage.googleapis.com/v1beta/models/"
                               "gemini-embedding-001:batchEmbedContents"),
              "%.*s", (int)hreq.url.len, hreq.url.ptr);
    cr_assert_eq(hreq.method, COMPASS_HTTP_POST);
    cr_assert_eq(hreq.stream_format, COMPASS_STREAM_NONE);
    cr_assert(str_eq(hdr("x-goog-api-key"), "KEY123"));
    cr_assert(str_eq(hdr("content-type"), "application/json"));
    cr_assert_null(strstr(hreq.url.ptr, "KEY123"), "the key must not be in the URL");
    /* {"requests":[{"model","content":{"parts":[{"text"}]}}, ...]} and nothing else */
    cr_assert_eq(json_object_object_length(body), 1, "%s", hreq.body.ptr);
    cr_assert_eq(n_at("/requests"), 2);
    cr_assert_str_eq(s_at("/requests/0/model"), "models/gemini-embedding-001");
    cr_assert_str_eq(s_at("/requests/0/content/parts/0/text"), "hello");
    cr_assert_eq(n_at("/requests/0/content/parts"), 1);
    cr_assert_str_eq(s_at("/requests/1/model"), "models/gemini-embedding-001");
    cr_assert_str_eq(s_at("/requests/1/content/parts/0/text"), "wor\"ld");
    one = at("/requests/0");
    cr_assert_eq(json_object_object_length(one), 2, "%s", hreq.body.ptr);
    cr_assert_null(at("/requests/0/outputDimensionality"));
    cr_assert_null(at("/requests/0/content/role"));
    cr_assert_null(strstr(hreq.body.ptr, "u-1"), "user is not a Gemini field");
    cr_assert_null(strstr(hreq.body.ptr, "base64"), "encoding_format is not a Gemini field");
}

Test(gemini, embed_dimensions_and_models_prefix)
{
    compass_err e = {0};
    cr_assert_eq(embed_on(inst, "models/text-embedding-004", 3, 256, &e), 0, "%s", e.msg);
    cr_assert(str_eq(hreq.url, "https://generativelanguage.googleapis.com/v1beta/models/"
                               "text-embedding-004:batchEmbedContents"),
              "%.*s", (int)hreq.url.len, hreq.url.ptr);
    cr_assert_eq(n_at("/requests"), 3);
    cr_assert_str_eq(s_at("/requests/2/model"), "models/text-embedding-004");
    cr_assert_eq(i_at("/requests/0/outputDimensionality"), 256);
    cr_assert_eq(i_at("/requests/1/outputDimensionality"), 256);
    cr_assert_eq(i_at("/requests/2/outputDimensionality"), 256);
    cr_assert_str_eq(s_at("/requests/2/content/parts/0/text"), "third");
}

Test(gemini, embed_base_url_api_version_and_no_key)
{
    compass_err e = {0};
    const char *v1[] = {"api_version=v1", NULL};
    void *i2 = compass_fakehost_instance(fh, "g2", "http://127.0.0.1:9/", NULL, v1, &e);
    cr_assert_not_null(i2, "%s", e.msg);
    cr_assert_eq(embed_on(i2, "gemini-embedding-001", 1, 0, &e), 0, "%s", e.msg);
    cr_assert(str_eq(hreq.url, "http://127.0.0.1:9/v1/models/gemini-embedding-001:"
                               "batchEmbedContents"),
              "%.*s", (int)hreq.url.len, hreq.url.ptr);
    cr_assert_null(hdr("x-goog-api-key").ptr);
    cr_assert_eq(hreq.n_headers, 1);
}

Test(gemini, embed_refusals)
{
    compass_err e = {0};
    compass_embed_request r;
    compass_str many[101];
    size_t i;
    cr_assert_eq(embed_on(inst, "gemini-embedding-001", 0, 0, &e), COMPASS_EUNSUPPORTED);
    cr_assert(strstr(e.msg, "input"), "%s", e.msg);
    cr_assert_eq(embed_on(inst, "../x", 1, 0, &e), COMPASS_EUNSUPPORTED);
    cr_assert(strstr(e.msg, "model"), "%s", e.msg);
    cr_assert_eq(embed_on(inst, "", 1, 0, &e), COMPASS_EUNSUPPORTED);
    cr_assert_eq(embed_on(inst, "gemini-embedding-001", 1, -3, &e), COMPASS_EUNSUPPORTED);
    cr_assert(strstr(e.msg, "dimensions"), "%s", e.msg);
    for (i = 0; i < 101; i++)
        many[i] = compass_str_c("x");
    memset(&r, 0, sizeof(r));
    r.size = sizeof(r);
    r.model = compass_str_c("gemini-embedding-001");
    r.inputs = many;
    r.n_inputs = 101;
    cr_assert_eq(ops()->build_embed_request(inst, compass_fakehost_req(fh), &r, &hreq, &e),
                 COMPASS_EUNSUPPORTED);
    cr_assert(strstr(e.msg, "100"), "%s", e.msg);
    r.n_inputs = 100;
    cr_assert_eq(ops()->build_embed_request(inst, compass_fakehost_req(fh), &r, &hreq, &e), 0,
                 "%s", e.msg);
    cr_assert_eq(ops()->build_embed_request(inst, compass_fakehost_req(fh), NULL, &hreq, &e),
                 COMPASS_EINVAL);
}

Test(gemini, embed_parses_two_embeddings)
{
    compass_embed_response out;
    compass_upstream_error u;
    compass_err e = {0};
    cr_assert_eq(embed_on(inst, "gemini-embedding-001", 2, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(embed_parse(200,
                             "{\"embeddings\":[{\"values\":[0.25,-0.5,1e-3,0]},"
                             "{\"values\":[1,-2]}]}",
                             &out, &u, &e),
                 0, "%s", e.msg);
    cr_assert_eq(out.n_data, 2);
    cr_assert_eq(out.data[0].n, 4);
    cr_assert_float_eq(out.data[0].values[0], 0.25f, 1e-7);
    cr_assert_float_eq(out.data[0].values[1], -0.5f, 1e-7);
    cr_assert_float_eq(out.data[0].values[2], 0.001f, 1e-9);
    cr_assert_float_eq(out.data[0].values[3], 0.0f, 1e-9);
    cr_assert_eq(out.data[1].n, 2);
    cr_assert_float_eq(out.data[1].values[0], 1.0f, 1e-7);
    cr_assert_float_eq(out.data[1].values[1], -2.0f, 1e-7);
    cr_assert(str_eq(out.model, "gemini-embedding-001"), "%.*s", (int)out.model.len,
              out.model.ptr);
    /* Gemini reports no usage here: zero, for the host to estimate */
    cr_assert_not(out.usage.present);
    cr_assert_eq(out.usage.prompt_tokens, 0);
    cr_assert_eq(out.usage.total_tokens, 0);
}

Test(gemini, embed_parse_without_build_leaves_model_to_the_host)
{
    compass_embed_response out;
    compass_upstream_error u;
    compass_err e = {0};
    ereq = compass_fakehost_req(fh);
    cr_assert_eq(embed_parse(200, "{\"embeddings\":[{\"values\":[0.5]}]}", &out, &u, &e), 0,
                 "%s", e.msg);
    cr_assert_eq(out.n_data, 1);
    cr_assert_eq(out.model.len, 0);
}

Test(gemini, embed_count_mismatch_is_a_parse_error)
{
    compass_embed_response out;
    compass_upstream_error u;
    compass_err e = {0};
    cr_assert_eq(embed_on(inst, "gemini-embedding-001", 2, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(embed_parse(200, "{\"embeddings\":[{\"values\":[0.5]}]}", &out, &u, &e),
                 COMPASS_EPARSE);
    cr_assert(strstr(e.msg, "1 embeddings came back for 2 inputs"), "%s", e.msg);
}

Test(gemini, embed_error_bodies_are_upstream_errors)
{
    compass_embed_response out;
    compass_upstream_error u;
    compass_err e = {0};
    ereq = compass_fakehost_req(fh);
    cr_assert_eq(embed_parse(200,
                             "{\"error\":{\"code\":429,\"message\":\"quota\",\"status\":"
                             "\"RESOURCE_EXHAUSTED\",\"details\":[{\"@type\":\"type.googleapis."
                             "com/google.rpc.RetryInfo\",\"retryDelay\":\"2s\"}]}}",
                             &out, &u, &e),
                 COMPASS_EUPSTREAM);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RATE_LIMITED);
    cr_assert_str_eq(u.message, "quota");
    cr_assert_eq(u.retry_after_ms, 2000);
    cr_assert_eq(embed_parse(400,
                             "{\"error\":{\"code\":400,\"message\":\"API key not valid. Please "
                             "pass a valid API key.\",\"status\":\"INVALID_ARGUMENT\",\"details\":"
                             "[{\"@type\":\"type.googleapis.com/google.rpc.ErrorInfo\",\"reason\":"
                             "\"API_KEY_INVALID\"}]}}",
                             &out, &u, &e),
                 COMPASS_EUPSTREAM);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_AUTH);
    cr_assert_str_eq(u.code, "invalid_api_key");
    cr_assert_eq(u.http_status, 400);
    cr_assert_eq(embed_parse(200,
                             "{\"error\":{\"code\":400,\"message\":\"* BatchEmbedContentsRequest."
                             "requests: at most 100 requests\",\"status\":\"INVALID_ARGUMENT\"}}",
                             &out, &u, &e),
                 COMPASS_EUPSTREAM);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_BAD_REQUEST);
    cr_assert_str_eq(u.type, "invalid_request_error");
    /* a non-2xx answer with an unreadable body still classifies from the status */
    cr_assert_eq(embed_parse(503, "<html>down</html>", &out, &u, &e), COMPASS_EUPSTREAM);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert_eq(u.http_status, 503);
}

Test(gemini, embed_garbage_is_a_parse_error)
{
    static const char *const bad[] = {
        "not json",
        "",
        "{\"embeddings\":[{\"values\":[1]}]} trailing",
        "[]",
        "{}",
        "{\"embeddings\":{}}",
        "{\"embeddings\":[]}",
        "{\"embeddings\":[{}]}",
        "{\"embeddings\":[{\"values\":\"x\"}]}",
        "{\"embeddings\":[{\"values\":[]}]}",
        "{\"embeddings\":[{\"values\":[0.1,\"0.2\"]}]}",
        "{\"embeddings\":[{\"values\":[0.1,null]}]}",
        "{\"embeddings\":[7]}",
        NULL};
    size_t i;
    for (i = 0; bad[i]; i++) {
        compass_embed_response out;
        compass_upstream_error u;
        compass_err e = {0};
        ereq = compass_fakehost_req(fh);
        cr_assert_eq(embed_parse(200, bad[i], &out, &u, &e), COMPASS_EPARSE, "body %s", bad[i]);
        cr_assert_eq(e.code, COMPASS_EPARSE);
        cr_assert_gt(strlen(e.msg), 0);
    }
}

Test(gemini, oom_embed_build_and_parse)
{
    static const char *resp_json =
        "{\"embeddings\":[{\"values\":[0.1,0.2]},{\"values\":[0.3]},{\"values\":[0.4,0.5,0.6]}]}";
    long nth;
    int saw_oom = 0, ok = 0;
    for (nth = 1; nth <= 40 && !ok; nth++) {
        compass_err e = {0};
        int rc;
        compass_fakehost_req(fh);
        compass_fakehost_fail_alloc_at(fh, nth);
        rc = embed_on(inst, "gemini-embedding-001", 3, 64, &e);
        compass_fakehost_fail_alloc_at(fh, 0);
        if (rc == 0)
            ok = 1;
        else {
            cr_assert_eq(rc, COMPASS_ENOMEM, "nth=%ld rc=%d %s", nth, rc, e.msg);
            cr_assert_eq(e.code, COMPASS_ENOMEM);
            saw_oom = 1;
        }
    }
    cr_assert(saw_oom && ok, "build: saw_oom=%d ok=%d", saw_oom, ok);

    saw_oom = ok = 0;
    for (nth = 1; nth <= 40 && !ok; nth++) {
        compass_embed_response out;
        compass_upstream_error u;
        compass_err e = {0};
        int rc;
        cr_assert_eq(embed_on(inst, "gemini-embedding-001", 3, 0, &e), 0, "%s", e.msg);
        compass_fakehost_fail_alloc_at(fh, nth);
        rc = embed_parse(200, resp_json, &out, &u, &e);
        compass_fakehost_fail_alloc_at(fh, 0);
        if (rc == 0) {
            ok = 1;
            cr_assert_eq(out.n_data, 3);
            cr_assert_eq(out.data[2].n, 3);
            cr_assert_float_eq(out.data[2].values[2], 0.6f, 1e-7);
        } else {
            cr_assert_eq(rc, COMPASS_ENOMEM, "nth=%ld rc=%d %s", nth, rc, e.msg);
            saw_oom = 1;
        }
    }
    cr_assert(saw_oom && ok, "parse: saw_oom=%d ok=%d", saw_oom, ok);
}

/* ---------------------------------------------------------------------------------------- */
/* Out of memory                                                                             */
/* ---------------------------------------------------------------------------------------- */

static const char *BIG_REQUEST =
    "{\"model\":\"gemini-3-pro-preview\",\"stream\":true,\"messages\":["
    "{\"role\":\"system\",\"content\":\"sys\"},"
    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"look\"},"
    "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}},"
    "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x.test/a.gif\"}}]},"
    "{\"role\":\"assistant\",\"content\":\"ok\",\"tool_calls\":[{\"id\":\"c1\",\"type\":"
    "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}}]},"
    "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"done\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":"
    "\"object\",\"additionalProperties\":false,\"properties\":{\"a\":{\"type\":\"integer\"}}}}}],"
    "\"tool_choice\":\"required\",\"temperature\":0.2,\"max_tokens\":10,\"stop\":[\"x\"],"
    "\"reasoning_effort\":\"low\","
    "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"n\",\"schema\":"
    "{\"type\":\"object\"}}}}";

Test(gemini, oom_build_request)
{
    long nth;
    int saw_oom = 0, ok = 0;
    for (nth = 1; nth <= 60 && !ok; nth++) {
        compass_chat_request r;
        compass_err e = {0};
        compass_req *req = compass_fakehost_req(fh);
        int rc;
        cr_assert_eq(compass_fakehost_parse_chat(fh, BIG_REQUEST, &r, &e), 0, "%s", e.msg);
        compass_fakehost_fail_alloc_at(fh, nth);
        memset(&hreq, 0, sizeof(hreq));
        rc = ops()->build_request(inst, req, &r, &hreq, &e);
        compass_fakehost_fail_alloc_at(fh, 0);
        if (rc == 0)
            ok = 1;
        else {
            cr_assert_eq(rc, COMPASS_ENOMEM, "nth=%ld rc=%d %s", nth, rc, e.msg);
            cr_assert_eq(e.code, COMPASS_ENOMEM);
            saw_oom = 1;
        }
    }
    cr_assert(saw_oom);
    cr_assert(ok, "build_request never succeeded within 60 allocations");
}

Test(gemini, oom_parse_response)
{
    static const char *resp_json =
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"},{\"functionCall\":{\"name\":"
        "\"f\",\"args\":{\"x\":1}}},{\"functionCall\":{\"name\":\"g\"}}]},\"finishReason\":"
        "\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":1},\"modelVersion\":\"m\","
        "\"responseId\":\"i\"}";
    long nth;
    int saw_oom = 0, ok = 0;
    for (nth = 1; nth <= 60 && !ok; nth++) {
        compass_chat_response r;
        compass_upstream_error u;
        compass_err e = {0};
        compass_req *req = compass_fakehost_req(fh);
        compass_http_response resp = compass_fakehost_http(200, resp_json);
        int rc;
        compass_fakehost_fail_alloc_at(fh, nth);
        rc = ops()->parse_response(inst, req, &resp, &r, &u, &e);
        compass_fakehost_fail_alloc_at(fh, 0);
        if (rc == 0)
            ok = 1;
        else {
            cr_assert_eq(rc, COMPASS_ENOMEM, "nth=%ld rc=%d %s", nth, rc, e.msg);
            saw_oom = 1;
        }
    }
    cr_assert(saw_oom && ok);
}

Test(gemini, oom_stream_and_instance)
{
    long nth;
    int saw_oom = 0, ok = 0;
    for (nth = 1; nth <= 40 && !ok; nth++) {
        compass_upstream_error u;
        compass_err e = {0};
        int rc;
        compass_fakehost_req(fh);
        compass_fakehost_fail_alloc_at(fh, nth);
        rc = feed(TEXT_STREAM, &u, &e);
        compass_fakehost_fail_alloc_at(fh, 0);
        if (rc == 0)
            ok = 1;
        else {
            cr_assert_eq(rc, COMPASS_ENOMEM, "nth=%ld rc=%d %s", nth, rc, e.msg);
            saw_oom = 1;
        }
    }
    cr_assert(saw_oom && ok);

    saw_oom = ok = 0;
    for (nth = 1; nth <= 40 && !ok; nth++) {
        compass_err e = {0};
        char name[32];
        void *i2;
        snprintf(name, sizeof(name), "oom%ld", nth);
        compass_fakehost_fail_alloc_at(fh, nth);
        i2 = compass_fakehost_instance(fh, name, "https://example.test", "K", NULL, &e);
        compass_fakehost_fail_alloc_at(fh, 0);
        if (i2)
            ok = 1;
        else {
            cr_assert_eq(e.code, COMPASS_ENOMEM, "nth=%ld %s", nth, e.msg);
            saw_oom = 1;
        }
    }
    cr_assert(saw_oom && ok);
}

Test(gemini, thought_signature_option_modes)
{
    compass_err e = {0};
    const char *never[] = {"thought_signatures=never", NULL};
    const char *always[] = {"thought_signatures=always", NULL};
    char json[2048];
    const char *p = strstr(ROUND_TRIP, "gemini-2.5-flash");
    void *in_never = compass_fakehost_instance(fh, "n", NULL, NULL, never, &e);
    void *in_always = compass_fakehost_instance(fh, "a", NULL, NULL, always, &e);
    cr_assert_not_null(in_never);
    cr_assert_not_null(in_always);
    snprintf(json, sizeof(json), "%.*sgemini-3-flash%s", (int)(p - ROUND_TRIP), ROUND_TRIP,
             p + strlen("gemini-2.5-flash"));
    cr_assert_eq(build_on(in_never, json, &e), 0, "%s", e.msg);
    cr_assert_null(at("/contents/1/parts/0/thoughtSignature"));
    cr_assert_eq(build_on(in_always, ROUND_TRIP, &e), 0, "%s", e.msg);
    cr_assert_str_eq(s_at("/contents/1/parts/1/thoughtSignature"),
                     "skip_thought_signature_validator");
}

Test(gemini, stream_lf_framing_text_and_finish_in_one_event)
{
    compass_upstream_error u;
    compass_err e = {0};
    size_t n;
    const compass_chat_delta *d;
    compass_fakehost_req(fh);
    cr_assert_eq(feed("data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"All \"}]}}]}\n\n"
                      "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"done\"}]},"
                      "\"finishReason\":\"MAX_TOKENS\"}],\"usageMetadata\":{\"promptTokenCount\":"
                      "2,\"candidatesTokenCount\":2,\"totalTokenCount\":4}}\n\n",
                      &u, &e),
                 COMPASS_OK, "%s", e.msg);
    cr_assert_str_eq(compass_fakehost_content(fh), "All done");
    n = compass_fakehost_n_deltas(fh);
    cr_assert_eq(n, 4);
    d = compass_fakehost_delta(fh, 2);
    cr_assert_eq(d->finish_reason, COMPASS_FINISH_LENGTH);
    d = compass_fakehost_delta(fh, 3);
    cr_assert(d->usage.present);
    cr_assert_eq(d->usage.total_tokens, 4);
}

/* ---------------------------------------------------------------------------------------- */
/* The stream's two readers agree: the scanner reader (what parse_stream_event tries first)  */
/* against the json-c tree reader, on GenerateContentResponse events                          */
/* ---------------------------------------------------------------------------------------- */

#define D(json) "data: " json "\r\n\r\n"
#define TAIL ",\"usageMetadata\":{\"promptTokenCount\":6,\"totalTokenCount\":6}," \
             "\"modelVersion\":\"gemini-2.0-flash\",\"responseId\":\"r-1\"}"
#define CAND(parts, rest) "{\"candidates\":[{\"content\":{\"parts\":" parts ",\"role\":\"model\"}" \
                          rest ",\"index\":0}]" TAIL
#define SAFETY ",\"safetyRatings\":[{\"category\":\"HARM_CATEGORY_HATE_SPEECH\",\"probability\":" \
               "\"NEGLIGIBLE\"},{\"category\":\"HARM_CATEGORY_DANGEROUS_CONTENT\"," \
               "\"probability\":\"NEGLIGIBLE\",\"blocked\":false}]"
#define FIN(reason) CAND("[{\"text\":\"\"}]", ",\"finishReason\":\"" reason "\"")

static const sd_case GM_CORPUS[] = {
    {"text", 0,
     D(CAND("[{\"text\":\"The quick\"}]", SAFETY)) D(CAND("[{\"text\":\" brown fox\"}]", ""))
     D("{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" jumps.\"}],\"role\":\"model\"},"
       "\"finishReason\":\"STOP\",\"index\":0" SAFETY "}],\"usageMetadata\":{\"promptTokenCount\":"
       "6,\"candidatesTokenCount\":5,\"thoughtsTokenCount\":2,\"cachedContentTokenCount\":1,"
       "\"totalTokenCount\":13,\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":6}]},"
       "\"modelVersion\":\"gemini-2.0-flash\",\"responseId\":\"r-1\"}")},
    {"escapes", 0,
     D(CAND("[{\"text\":\"a\\nb \\\"q\\\" back\\\\slash \\/ caf\\u00e9 \\ud83d\\ude00 "
            "ctl\\u0001\\t\"}]", ""))
     D(CAND("[{\"text\":\"\\u0000nul\"},{\"text\":\"lone \\ud800\"}]", ""))
     D("{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]},\"finishReason\":"
       "\"MAX_\\u0054OKENS\"}],\"modelVersion\":\"gemini-\\u0032.5\",\"responseId\":\"r\\/2\"}")},
    {"role_only_first_chunk", 0,
     D(CAND("[{\"text\":\"\"}]", "")) D(CAND("[{\"text\":\"hi\"}]", "")) D(FIN("STOP"))},
    {"opening_without_parts", 0,
     D("{\"candidates\":[{\"content\":{\"role\":\"model\"},\"index\":0}]" TAIL)
     D("{\"candidates\":[{\"index\":0}]" TAIL) D(FIN("STOP"))},
    {"function_calls", 0,
     D(CAND("[{\"functionCall\":{\"name\":\"get_weather\",\"args\":{\"city\":\"Paris\","
            "\"units\":[\"c\",{\"x\":null}],\"n\":1.5E-2,\"s\":\"a/b\\u00e9\"}}}]", ""))
     D(CAND("[{\"text\":\"and \"},{\"functionCall\":{\"name\":\"a\",\"args\":{}}},"
            "{\"functionCall\":{\"name\":\"b\"}},{\"functionCall\":{\"name\":\"c\",\"args\":[1]}},"
            "{\"functionCall\":\"odd\"},{\"functionCall\":{\"id\":\"x\",\"name\":\"d\",\"args\":"
            "{\"q\":\"\\\"\"}},\"thoughtSignature\":\"c2ln\"}]", ""))
     D(FIN("STOP"))},
    {"thoughts", 0,
     D(CAND("[{\"text\":\"thinking...\",\"thought\":true},{\"text\":\"visible\",\"thought\":"
            "false},{\"text\":\"also\",\"thought\":null},{\"text\":\"str\",\"thought\":\"true\"}]",
            ""))
     D(CAND("[{\"thought\":true,\"functionCall\":{\"name\":\"t\"}},{\"thought\":true}]", ""))},
    {"finish_reasons", 0,
     D(FIN("STOP")) D(FIN("MAX_TOKENS")) D(FIN("SAFETY")) D(FIN("RECITATION"))
     D(FIN("BLOCKLIST")) D(FIN("PROHIBITED_CONTENT")) D(FIN("SPII")) D(FIN("IMAGE_SAFETY"))
     D(FIN("OTHER")) D(FIN("LANGUAGE")) D(FIN("MALFORMED_FUNCTION_CALL"))
     D(FIN("FINISH_REASON_UNSPECIFIED"))
     D(CAND("[{\"text\":\"\"}]", ",\"finishReason\":null"))
     D(CAND("[{\"text\":\"\"}]", ",\"finishReason\":3"))},
    {"tool_finish", 0,
     D(CAND("[{\"functionCall\":{\"name\":\"f\",\"args\":{}}}]", ",\"finishReason\":\"STOP\""))},
    {"blocked_prompt", 0,
     D("{\"promptFeedback\":{\"blockReason\":\"SAFETY\",\"safetyRatings\":[{\"category\":"
       "\"HARM_CATEGORY_HARASSMENT\",\"probability\":\"HIGH\"}]},\"usageMetadata\":"
       "{\"promptTokenCount\":8,\"totalTokenCount\":8},\"modelVersion\":\"gemini-2.0-flash\"}")},
    {"blocked_escaped_reason", 0,
     D("{\"candidates\":[],\"promptFeedback\":{\"blockReason\":\"OTH\\u0045R\"}}")},
    {"feedback_without_block", 0,
     D("{\"promptFeedback\":{\"safetyRatings\":[]},\"usageMetadata\":{\"promptTokenCount\":1}}")
     D("{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]}}],\"promptFeedback\":"
       "{\"blockReason\":\"SAFETY\"}}")
     D("{\"promptFeedback\":null}") D("{\"promptFeedback\":\"SAFETY\"}")},
    {"usage_after_finish", 0,
     D(CAND("[{\"text\":\"done\"}]", ",\"finishReason\":\"STOP\""))
     D("{\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":\"62\",\"candidatesTokenCount\":"
       "\"1000\",\"totalTokenCount\":1e3},\"responseId\":\"r-1\"}")
     D("{\"usageMetadata\":{\"promptTokenCount\":123456789012345678901,\"candidatesTokenCount\":"
       "-0,\"thoughtsTokenCount\":2.5}}")
     D("{\"usageMetadata\":{\"candidatesTokenCount\":9223372036854775807,\"thoughtsTokenCount\":"
       "9,\"promptTokenCount\":-9223372036854775808}}")
     D("{\"usageMetadata\":[]}") D("{\"usageMetadata\":null}") D("{}")},
    {"null_members", 0,
     D("{\"candidates\":null,\"usageMetadata\":null,\"responseId\":null,\"modelVersion\":null}")
     D("{\"candidates\":[null,{\"content\":{\"parts\":[{\"text\":\"second\"}]}}]}")
     D("{\"candidates\":[{\"content\":null,\"finishReason\":null}]}")
     D("{\"candidates\":[{\"content\":{\"parts\":null}}]}")
     D("{\"candidates\":[{\"content\":{\"parts\":[null,7,\"s\",[],{\"text\":null},"
       "{\"functionCall\":null,\"text\":\"kept\"}]}}]}")
     D("{\"candidates\":[{\"content\":\"text\"}],\"error\":null}")
     D("{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]}}],"
       "\"error\":\"not an object\"}")},
    {"unknown_members_and_whitespace", 0,
     D(" { \"candidates\" : [ { \"content\" : { \"parts\" : [ { \"text\" : \"spaced\" , "
       "\"inlineData\" : { \"mimeType\" : \"image/png\" , \"data\" : \"iVBO\" } } ] , \"role\" :"
       " \"model\" } , \"citationMetadata\" : { \"citationSources\" : [ { \"startIndex\" : 0 , "
       "\"endIndex\" : 1e2 , \"uri\" : \"https://x\" } ] } , \"avgLogprobs\" : -0.5E-3 , "
       "\"index\" : 0 } , { \"content\" : { \"parts\" : [ { \"text\" : \"candidate 1\" } ] } } ] ,"
       "\t\"createTime\" : \"2025-01-01T00:00:00Z\" , \"x\" : [ [ ] , { } , [ [ true ] ] ] } \t")},
    {"many_parts", 0,
     D(CAND("[{\"text\":\"1\"},{\"text\":\"2\"},{\"text\":\"3\"},{\"text\":\"4\"},{\"text\":\"5\"},"
            "{\"text\":\"6\"},{\"text\":\"7\"},{\"text\":\"8\"},{\"text\":\"9\"},{\"text\":\"10\"},"
            "{\"text\":\"11\"},{\"text\":\"12\"},{\"text\":\"13\"},{\"text\":\"14\"},"
            "{\"text\":\"15\"},{\"text\":\"16\"},{\"text\":\"\"},"
            "{\"thought\":true,\"text\":\"t\"}]",
            ""))},
    {"too_many_parts", 1,
     D(CAND("[{\"text\":\"1\"},{\"text\":\"2\"},{\"text\":\"3\"},{\"text\":\"4\"},{\"text\":\"5\"},"
            "{\"text\":\"6\"},{\"text\":\"7\"},{\"text\":\"8\"},{\"text\":\"9\"},{\"text\":\"10\"},"
            "{\"text\":\"11\"},{\"text\":\"12\"},{\"text\":\"13\"},{\"text\":\"14\"},"
            "{\"text\":\"15\"},{\"text\":\"16\"},{\"text\":\"17\"}]", ""))},
    {"error_event", 1,
     D(CAND("[{\"text\":\"partial\"}]", ""))
     D("{\"error\":{\"code\":429,\"message\":\"Resource has been exhausted\",\"status\":"
       "\"RESOURCE_EXHAUSTED\",\"details\":[{\"@type\":\"type.googleapis.com/google.rpc."
       "RetryInfo\",\"retryDelay\":\"7s\"}]}}")},
    {"error_array", 1,
     D("[{\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":"
       "\"UNAVAILABLE\"}}]")},
    {"error_beside_candidates", 1,
     D("{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]}}],\"error\":{\"code\":500,"
       "\"message\":\"internal\",\"status\":\"INTERNAL\"}}")},
    {"candidates_not_an_array", 1, D("{\"candidates\":{\"content\":{}}}")},
    {"parts_not_an_array", 1, D("{\"candidates\":[{\"content\":{\"parts\":{}}}]}")},
    {"candidate_a_number", 1, D("{\"candidates\":[5]}")},
    {"candidate_a_string", 1, D("{\"candidates\":[\"s\"]}")},
    {"event_an_array", 1, D("[]")},
    {"event_a_string", 1, D("\"text\"")},
    {"truncated", 1, D(CAND("[{\"text\":\"ok\"}]", "")) D("{\"candidates\":[{\"content\":{")},
    {"trailing_comma", 1, D("{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"t\"},]}}],}")},
    {"raw_control_character", 1,
     D("{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\tb\"}]}}]}")},
    {"bad_escape", 1, D("{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"\\q\"}]}}]}")},
    {"leading_zero", 1, D("{\"candidates\":[],\"n\":01}")},
    {"fraction_without_digits", 1, D("{\"candidates\":[],\"n\":1.}")},
    {"nan", 1, D("{\"candidates\":[],\"n\":NaN}")},
    {"trailing_bytes", 1, D("{\"candidates\":[]}x")},
    {"duplicate_and_escaped_keys", 3,
     D("{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\",\"text\":\"b\"}]}}]}")
     D("{\"responseId\":\"1\",\"responseId\":\"2\"}")
     D("{\"candidates\":[{\"content\":{\"parts\":[{\"te\\u0078t\":\"esc\"}]}}]}")},
    {"keepalives", 0, "data: \r\n\r\n: comment\r\n\r\n" D("  \n {\"candidates\":[]}")},
};

static int gm_fast(void *h, compass_req *req, const compass_stream_event *ev, compass_err *err)
{
    return gm_stream_event_fast(h, req, ev, err);
}

static int gm_full(void *h, compass_req *req, const compass_stream_event *ev,
                   compass_upstream_error *u, compass_err *err)
{
    return gm_stream_event_full(h, req, ev, u, err);
}

Test(gemini, stream_readers_agree_on_the_wire_corpus)
{
    static const char head[] = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":"
                               "\"deep\"}]}}],\"x\":";
    char at[200], over[200];
    /* the root object and 31 arrays are json-c's default 32 levels; one more is past them */
    const sd_case depth[] = {{"depth_at_limit", 0, sd_nested(at, sizeof(at), head, 31, "}")},
                             {"depth_over_limit", 1, sd_nested(over, sizeof(over), head, 32, "}")},
                             {"recorded_text_stream", 0, TEXT_STREAM}};
    sd_readers r;
    sd_open(&r, "gemini");
    r.fast_ctx = (void *)compass_fakehost_host(r.fast_fh);
    r.full_ctx = (void *)compass_fakehost_host(r.full_fh);
    r.fast = gm_fast;
    r.full = gm_full;
    r.declined = GM_DECLINED;
    cr_assert_gt(sd_compare_all(&r, GM_CORPUS, sizeof(GM_CORPUS) / sizeof(GM_CORPUS[0])), 60);
    cr_assert_eq(sd_compare_all(&r, depth, 3), 1 + 5); /* "deep"; 3 texts, finish, usage */
    sd_close(&r);
}

/* ---------------------------------------------------------------------------------------- */
/* Characters json-c 0.16 alone would replace (pair_cases.h), as the user sees them          */
/* ---------------------------------------------------------------------------------------- */

/* A GenerateContentResponse with case i in a text part and a functionCall's args. */
#define GM_PAIR_BODY                                                                           \
    "{^\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"a@b\"},"        \
    "{\"functionCall\":{\"name\":\"f\",\"args\":{\"q\":\"a@\"}}}]},\"finishReason\":\"STOP\"}]," \
    "\"responseId\":\"r\"}"

/* parse_response reads bodies with json-c alone; the stream with either reader. */
static void response_pair(void *ctx, const char *head, size_t i)
{
    char b[512];
    compass_chat_response r;
    compass_upstream_error u;
    compass_err err = {0};
    (void)ctx;
    cr_assert_eq(parse(pair_fill(b, sizeof(b), GM_PAIR_BODY, head, i), &r, &u, &err), 0, "%s",
                 err.msg);
    cr_assert(pair_reply_is(&r, i), "%s", b);
}

Test(gemini, response_keeps_characters_json_c_would_replace)
{
    pair_each(response_pair, NULL);
}

static void stream_pair(void *ctx, const char *head, size_t i)
{
    char data[512], sse[600];
    compass_stream_event ev = {0};
    compass_upstream_error u;
    compass_err err = {0};
    (void)ctx;
    ev.data = compass_str_c(pair_fill(data, sizeof(data), GM_PAIR_BODY, head, i));
    cr_assert_eq(gm_stream_event_fast(compass_fakehost_host(fh), compass_fakehost_req(fh), &ev,
                                      &err),
                 *head ? GM_DECLINED : COMPASS_OK, "%s", data);
    compass_fakehost_req(fh);
    snprintf(sse, sizeof(sse), "data: %s\r\n\r\n", data);
    cr_assert_eq(feed(sse, &u, &err), COMPASS_OK, "%s", err.msg);
    cr_assert(pair_is(compass_str_c(compass_fakehost_content(fh)), "a", i, "b"), "%s", data);
    cr_assert(pair_q_is(compass_fakehost_tool_args(fh, 0), "a", i), "%s: %s", data,
              compass_fakehost_tool_args(fh, 0));
}

Test(gemini, stream_keeps_characters_json_c_would_replace)
{
    pair_each(stream_pair, NULL);
}

/* An upstream's error message reaches the client. */
static void classify_400(void *ctx, const char *b, compass_upstream_error *u)
{
    (void)ctx;
    *u = classify_h(400, b, NULL, 0);
}

Test(gemini, error_message_keeps_characters_json_c_would_replace)
{
    pair_error_each(
        "{^\"error\":{\"code\":400,\"message\":\"bad @\",\"status\":\"INVALID_ARGUMENT\"}}",
        classify_400, NULL);
}
