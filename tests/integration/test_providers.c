/* compassd with the anthropic and gemini adapters against mockllm's Anthropic Messages and
 * Gemini wire formats, over real sockets on 127.0.0.1. Clients speak OpenAI; mockllm checks
 * every upstream request the way the real API would (max_tokens, top-level system, alternating
 * turns, tool_use/tool_result pairs; roles user/model, parts, no unknown fields), so a 200 here
 * also means the adapter sent something the real API accepts. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static const char *CONF =
    "server = { listen = \"127.0.0.1:0\"; threads = 1;\n"
    "  timeouts = { connect_ms = 2000; first_byte_ms = 3000; idle_ms = 3000; total_ms = 20000; };\n"
    "};\n"
    "plugins = { paths = [ \"@PLUGINS@\" ]; };\n"
    "deployments = (\n"
    "  { name = \"claude\"; plugin = \"anthropic\"; base_url = \"@MOCKLLM@\";\n"
    "    api_key_env = \"COMPASS_IT_ANTHROPIC_KEY\"; models = [\"claude-test\"]; },\n"
    "  { name = \"claude2\"; plugin = \"anthropic\"; base_url = \"@MOCKLLM2@\";\n"
    "    api_key_env = \"COMPASS_IT_ANTHROPIC_KEY\"; models = [\"claude-test\"]; },\n"
    "  { name = \"gem\"; plugin = \"gemini\"; base_url = \"@MOCKLLM@\";\n"
    "    api_key_env = \"COMPASS_IT_GEMINI_KEY\"; models = [\"gemini-test\"]; },\n"
    "  { name = \"gem2\"; plugin = \"gemini\"; base_url = \"@MOCKLLM2@\";\n"
    "    api_key_env = \"COMPASS_IT_GEMINI_KEY\"; models = [\"gemini-test\"]; },\n"
    "  { name = \"gem3\"; plugin = \"gemini\"; base_url = \"@MOCKLLM@\";\n"
    "    api_key_env = \"COMPASS_IT_GEMINI_KEY\"; models = [\"gemini-3-pro-preview\"]; }\n"
    ");\n"
    "routes = (\n"
    "  { name = \"r-claude\"; candidates = [\"claude/claude-test\"]; },\n"
    "  { name = \"r-claude-fo\"; candidates = [\"claude/claude-test\", \"claude2/claude-test\"]; },\n"
    "  { name = \"r-gem\"; candidates = [\"gem/gemini-test\"]; },\n"
    "  { name = \"r-gem-fo\"; candidates = [\"gem/gemini-test\", \"gem2/gemini-test\"]; },\n"
    "  { name = \"r-gem3\"; candidates = [\"gem3/gemini-3-pro-preview\"]; }\n"
    ");\n";

static th_proc m1, m2, cd;

static void up(void)
{
    setenv("COMPASS_IT_ANTHROPIC_KEY", "sk-ant-it-test", 1);
    setenv("COMPASS_IT_GEMINI_KEY", "gm-it-test", 1);
    cr_assert_eq(th_mockllm_start(&m1), 0, "mockllm 1 did not start");
    cr_assert_eq(th_mockllm_start(&m2), 0, "mockllm 2 did not start");
    const char *conf = th_write_config(6, CONF, &m1, &m2);
    if (th_compassd_start(&cd, conf)) {
        char *log = th_log(&cd);
        cr_assert_fail("compassd did not start: %s", log);
    }
}

static void down(void)
{
    th_stop(&cd, SIGTERM, 5000);
    th_stop(&m1, SIGTERM, 3000);
    th_stop(&m2, SIGTERM, 3000);
}

TestSuite(providers, .init = up, .fini = down, .timeout = 60);

/* ---------------------------------------------------------------- helpers */

static const char *chat(const char *model, const char *text, int stream)
{
    static char buf[4096];
    snprintf(buf, sizeof(buf),
             "{\"model\":\"%s\",\"stream\":%s,\"stream_options\":{\"include_usage\":true},"
             "\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
             "{\"role\":\"user\",\"content\":\"%s\"}]}",
             model, stream ? "true" : "false", text);
    return buf;
}

static const char *tools_chat(const char *model, int stream)
{
    static char buf[4096];
    snprintf(buf, sizeof(buf),
             "{\"model\":\"%s\",\"stream\":%s,\"stream_options\":{\"include_usage\":true},"
             "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
             "\"description\":\"Weather for a city\",\"parameters\":{\"type\":\"object\","
             "\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}}],"
             "\"tool_choice\":\"required\","
             "\"messages\":[{\"role\":\"user\",\"content\":\"weather in Paris?\"}]}",
             model, stream ? "true" : "false");
    return buf;
}

/* A multi-turn conversation with a tool round trip, two system messages, two user messages in
 * a row and a developer message in the middle: what the adapter must reshape. */
static const char *conversation(const char *model)
{
    static char buf[4096];
    snprintf(buf, sizeof(buf),
             "{\"model\":\"%s\","
             "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
             "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":"
             "\"string\"}}}}}],"
             "\"messages\":["
             "{\"role\":\"system\",\"content\":\"be brief\"},"
             "{\"role\":\"user\",\"content\":\"weather in Paris?\"},"
             "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\","
             "\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
             "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},"
             "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"sunny, 21C\"},"
             "{\"role\":\"assistant\",\"content\":\"It is sunny.\"},"
             "{\"role\":\"developer\",\"content\":\"answer in English\"},"
             "{\"role\":\"user\",\"content\":\"thanks\"},"
             "{\"role\":\"user\",\"content\":\"and tomorrow?\"}]}",
             model);
    return buf;
}

static json_object *body_json(const th_resp *r)
{
    json_object *o = json_tokener_parse(r->body);
    cr_assert_not_null(o, "body is not JSON: %s", r->body);
    return o;
}

static void post(const char *body, th_resp *r)
{
    cr_assert_eq(th_http(cd.port, "POST", "/v1/chat/completions", body, NULL, 0, r), 0,
                 "transport error");
}

static void assert_header(const th_resp *r, const char *name, const char *want)
{
    char *v = th_header(r, name);
    cr_assert(v && strcmp(v, want) == 0, "%s: got %s, want %s", name, v ? v : "(none)", want);
    free(v);
}

/* What came back in an OpenAI SSE body. */
typedef struct sse_sum {
    int events, done, n_error;
    char *content, *finish;
    long usage_total, usage_prompt, usage_completion;
    char tool_args[1024], tool_name[128], tool_id[128];
    int tool_deltas;
    char first_error[512];
} sse_sum;

static void sse_summary(const char *body, sse_sum *s)
{
    memset(s, 0, sizeof(*s));
    s->events = th_sse_parse(body, &s->content, &s->done, &s->n_error, &s->usage_total,
                             &s->finish);
    s->usage_prompt = s->usage_completion = -1;
    size_t al = 0;
    for (const char *p = strstr(body, "data: "); p; p = strstr(p, "\ndata: ")) {
        if (*p == '\n')
            p++;
        p += 6;
        const char *e = strstr(p, "\n\n");
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char *ev = strndup(p, len);
        json_object *o = json_tokener_parse(ev);
        free(ev);
        p += len;
        if (!o)
            continue;
        json_object *x;
        if (json_object_object_get_ex(o, "error", &x) && !s->first_error[0])
            snprintf(s->first_error, sizeof(s->first_error), "%s",
                     json_object_to_json_string(x));
        const char *a = th_json_str(o, "choices.0.delta.tool_calls.0.function.arguments");
        const char *n = th_json_str(o, "choices.0.delta.tool_calls.0.function.name");
        const char *id = th_json_str(o, "choices.0.delta.tool_calls.0.id");
        if (a) {
            size_t l = strlen(a);
            if (al + l < sizeof(s->tool_args)) {
                memcpy(s->tool_args + al, a, l);
                al += l;
                s->tool_args[al] = '\0';
            }
            s->tool_deltas++;
        }
        if (n && *n)
            snprintf(s->tool_name, sizeof(s->tool_name), "%s", n);
        if (id && *id)
            snprintf(s->tool_id, sizeof(s->tool_id), "%s", id);
        long up = th_json_int(o, "usage.prompt_tokens");
        if (up >= 0) {
            s->usage_prompt = up;
            s->usage_completion = th_json_int(o, "usage.completion_tokens");
        }
        json_object_put(o);
    }
}

static void sse_free(sse_sum *s)
{
    free(s->content);
    free(s->finish);
}

/* The last request mockllm m received, as parsed JSON (json_object_put the stats). */
static json_object *last_request(const th_proc *m, json_object **stats)
{
    *stats = th_mock_stats(m);
    cr_assert_not_null(*stats, "no /_mock/stats");
    json_object *lr = NULL;
    cr_assert(json_object_object_get_ex(*stats, "last_request", &lr) && lr,
              "mockllm got no request");
    return lr;
}

static long chat_count(const th_proc *m)
{
    json_object *st = th_mock_stats(m);
    long n = th_json_int(st, "chat");
    json_object_put(st);
    return n;
}

/* The arguments text is a JSON object equal to {"city":"value"}. */
static void assert_city_args(const char *args)
{
    json_object *a = json_tokener_parse(args);
    cr_assert_not_null(a, "tool arguments are not valid JSON: '%s'", args);
    cr_assert(json_object_is_type(a, json_type_object), "arguments not an object: %s", args);
    cr_assert_str_eq(th_json_str(a, "city"), "value", "%s", args);
    json_object_put(a);
}

/* A stream request that must end with an error chunk after some content, never [DONE], and
 * must not be retried elsewhere. */
static void assert_broken_stream(const char *route, const char *knobs, const th_proc *other)
{
    cr_assert_eq(th_mock_next(&m1, knobs), 0);
    th_resp r;
    post(chat(route, "one two three four five six", 1), &r);
    cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
    sse_sum s;
    sse_summary(r.body, &s);
    cr_assert_eq(s.n_error, 1, "%s: expected one error chunk: %s", knobs, r.body);
    cr_assert(!s.done, "%s: a broken stream must not end with [DONE]: %s", knobs, r.body);
    cr_assert(strlen(s.content) > 0 &&
                  strlen(s.content) < strlen("mock reply to: one two three four five six"),
              "%s: content '%s'", knobs, s.content);
    if (other)
        cr_assert_eq(chat_count(other), 0, "%s: a stream that sent content was retried", knobs);
    sse_free(&s);
    th_resp_free(&r);
}

/* A stream that fails before any content: the client sees a clean answer from the second
 * deployment of the failover route. */
static void assert_clean_failover(const char *route, const char *knobs, const char *second)
{
    cr_assert_eq(th_mock_next(&m1, knobs), 0);
    th_resp r;
    post(chat(route, "hello", 1), &r);
    cr_assert_eq(r.status, 200, "%s: %ld %s", knobs, r.status, r.body);
    sse_sum s;
    sse_summary(r.body, &s);
    cr_assert_str_eq(s.content, "mock reply to: hello", "%s: %s", knobs, r.body);
    cr_assert(s.done, "%s: no [DONE]: %s", knobs, r.body);
    cr_assert_eq(s.n_error, 0, "%s: %s", knobs, r.body);
    assert_header(&r, "x-compass-provider", second);
    cr_assert_eq(chat_count(&m2), 1, "%s: the second deployment was not asked", knobs);
    sse_free(&s);
    th_resp_free(&r);
}

/* A non-streaming "hello" through route, answered by deployment/model in OpenAI's shape. */
static void hello_answered(const char *route, const char *deployment, const char *model)
{
    th_resp r;
    post(chat(route, "hello", 0), &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    assert_header(&r, "x-compass-provider", deployment);
    assert_header(&r, "x-compass-model", model);
    json_object *o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "object"), "chat.completion");
    cr_assert_str_eq(th_json_str(o, "choices.0.message.role"), "assistant");
    cr_assert_str_eq(th_json_str(o, "choices.0.message.content"), "mock reply to: hello");
    cr_assert_str_eq(th_json_str(o, "choices.0.finish_reason"), "stop");
    /* mockllm: prompt = ceil(("be brief" + "hello") / 4) = 4, completion = 4 words */
    cr_assert_eq(th_json_int(o, "usage.prompt_tokens"), 4, "%s", r.body);
    cr_assert_eq(th_json_int(o, "usage.completion_tokens"), 4, "%s", r.body);
    cr_assert_eq(th_json_int(o, "usage.total_tokens"), 8, "%s", r.body);
    json_object_put(o);
    th_resp_free(&r);
}

/* ================================================================ Anthropic */

Test(providers, anthropic_non_streaming)
{
    hello_answered("r-claude", "claude", "claude-test");

    json_object *st, *lr = last_request(&m1, &st);
    cr_assert_str_eq(th_json_str(lr, "path"), "/v1/messages");
    cr_assert_str_eq(th_json_str(lr, "headers.x-api-key"), "present");
    cr_assert_str_eq(th_json_str(lr, "headers.anthropic-version"), "2023-06-01");
    cr_assert_str_eq(th_json_str(lr, "body.model"), "claude-test");
    cr_assert_gt(th_json_int(lr, "body.max_tokens"), 0, "no max_tokens sent");
    cr_assert_str_eq(th_json_str(lr, "body.system"), "be brief", "system not top-level");
    cr_assert_str_eq(th_json_str(lr, "body.messages.0.role"), "user");
    json_object *msgs = NULL;
    cr_assert(json_object_object_get_ex(json_object_object_get(lr, "body"), "messages", &msgs));
    cr_assert_eq(json_object_array_length(msgs), 1, "the system message stayed in messages");
    json_object_put(st);
}

Test(providers, anthropic_streaming_with_usage)
{
    th_resp r;
    post(chat("r-claude", "tell me a story", 1), &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    assert_header(&r, "x-compass-provider", "claude");
    sse_sum s;
    sse_summary(r.body, &s);
    cr_assert_str_eq(s.content, "mock reply to: tell me a story", "%s", r.body);
    cr_assert(s.done, "no [DONE]: %s", r.body);
    cr_assert_eq(s.n_error, 0, "%s", r.body);
    cr_assert_str_eq(s.finish, "stop");
    /* ceil(("be brief" + "tell me a story") / 4) = 6; 7 words */
    cr_assert_eq(s.usage_prompt, 6, "%s", r.body);
    cr_assert_eq(s.usage_completion, 7, "%s", r.body);
    cr_assert_eq(s.usage_total, 13, "%s", r.body);
    sse_free(&s);
    th_resp_free(&r);
    json_object *st, *lr = last_request(&m1, &st);
    cr_assert(json_object_get_boolean(json_object_object_get(json_object_object_get(lr, "body"),
                                                              "stream")));
    json_object_put(st);
}

Test(providers, anthropic_max_tokens_is_length)
{
    th_resp r;
    post("{\"model\":\"r-claude\",\"max_tokens\":2,\"messages\":[{\"role\":\"user\","
         "\"content\":\"a b c\"}]}",
         &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_object *o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "choices.0.message.content"), "mock reply");
    cr_assert_str_eq(th_json_str(o, "choices.0.finish_reason"), "length");
    json_object_put(o);
    th_resp_free(&r);
    json_object *st, *lr = last_request(&m1, &st);
    cr_assert_eq(th_json_int(lr, "body.max_tokens"), 2);
    json_object_put(st);
}

Test(providers, anthropic_tool_call)
{
    th_resp r;
    post(tools_chat("r-claude", 0), &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_object *o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "choices.0.finish_reason"), "tool_calls", "%s", r.body);
    cr_assert_str_eq(th_json_str(o, "choices.0.message.tool_calls.0.type"), "function");
    cr_assert_str_eq(th_json_str(o, "choices.0.message.tool_calls.0.id"), "toolu_mock_1");
    cr_assert_str_eq(th_json_str(o, "choices.0.message.tool_calls.0.function.name"),
                     "get_weather");
    assert_city_args(th_json_str(o, "choices.0.message.tool_calls.0.function.arguments"));
    json_object_put(o);
    th_resp_free(&r);
    json_object *st, *lr = last_request(&m1, &st);
    cr_assert_str_eq(th_json_str(lr, "body.tool_choice.type"), "any");
    cr_assert_str_eq(th_json_str(lr, "body.tools.0.name"), "get_weather");
    cr_assert_str_eq(th_json_str(lr, "body.tools.0.input_schema.type"), "object");
    json_object_put(st);
}

Test(providers, anthropic_streamed_tool_call_reassembles)
{
    th_resp r;
    post(tools_chat("r-claude", 1), &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    sse_sum s;
    sse_summary(r.body, &s);
    cr_assert(s.done && s.n_error == 0, "%s", r.body);
    cr_assert_gt(s.tool_deltas, 1, "arguments came in one piece: %s", r.body);
    cr_assert_str_eq(s.tool_name, "get_weather", "%s", r.body);
    cr_assert_str_eq(s.tool_id, "toolu_mock_1", "%s", r.body);
    assert_city_args(s.tool_args);
    cr_assert_str_eq(s.finish, "tool_calls");
    cr_assert_gt(s.usage_total, 0);
    sse_free(&s);
    th_resp_free(&r);
}

Test(providers, anthropic_conversation_is_valid_for_the_api)
{
    th_resp r;
    post(conversation("r-claude"), &r);
    cr_assert_eq(r.status, 200, "mockllm (as Anthropic) refused the request: %s", r.body);
    json_object *o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "choices.0.message.content"),
                     "mock reply to: thanks and tomorrow?", "%s", r.body);
    json_object_put(o);
    th_resp_free(&r);
    json_object *st, *lr = last_request(&m1, &st);
    cr_assert_str_eq(th_json_str(lr, "body.system"), "be brief\n\nanswer in English");
    json_object *msgs = json_object_object_get(json_object_object_get(lr, "body"), "messages");
    cr_assert_eq(json_object_array_length(msgs), 5, "%s", json_object_to_json_string(msgs));
    static const char *const roles[] = {"user", "assistant", "user", "assistant", "user"};
    for (size_t i = 0; i < 5; i++)
        cr_assert_str_eq(th_json_str(json_object_array_get_idx(msgs, i), "role"), roles[i]);
    cr_assert_str_eq(th_json_str(lr, "body.messages.1.content.0.type"), "tool_use");
    cr_assert_str_eq(th_json_str(lr, "body.messages.1.content.0.input.city"), "Paris");
    cr_assert_str_eq(th_json_str(lr, "body.messages.2.content.0.type"), "tool_result");
    cr_assert_str_eq(th_json_str(lr, "body.messages.2.content.0.tool_use_id"), "call_1");
    json_object_put(st);
}

Test(providers, anthropic_stream_truncated_after_content)
{
    /* message_start, content_block_start, ping, 2 deltas, then the connection drops */
    assert_broken_stream("r-claude-fo", "{\"drop_after\":5}", &m2);
}

Test(providers, anthropic_stream_truncated_before_content_fails_over)
{
    assert_clean_failover("r-claude-fo", "{\"drop_after\":3}", "claude2");
}

Test(providers, anthropic_stream_invalid_json_event)
{
    assert_broken_stream("r-claude-fo", "{\"garbage_after\":5}", &m2);
}

Test(providers, anthropic_stream_unknown_event_is_ignored)
{
    for (int at = 1; at <= 3; at++) {
        char knobs[64];
        snprintf(knobs, sizeof(knobs), "{\"unknown_event\":%d}", at);
        cr_assert_eq(th_mock_next(&m1, knobs), 0);
        th_resp r;
        post(chat("r-claude", "hello", 1), &r);
        cr_assert_eq(r.status, 200, "%s", r.body);
        sse_sum s;
        sse_summary(r.body, &s);
        cr_assert_str_eq(s.content, "mock reply to: hello", "at %d: %s", at, r.body);
        cr_assert(s.done, "at %d: no [DONE]: %s", at, r.body);
        cr_assert_eq(s.n_error, 0, "at %d: %s", at, r.body);
        cr_assert_eq(s.usage_total, 8, "at %d: %s", at, r.body);
        sse_free(&s);
        th_resp_free(&r);
    }
}

Test(providers, anthropic_stream_error_event_mid_stream)
{
    assert_broken_stream("r-claude-fo", "{\"error_event_after\":5}", &m2);
}

Test(providers, anthropic_stream_error_event_before_content_fails_over)
{
    assert_clean_failover("r-claude-fo", "{\"error_event_after\":3}", "claude2");
}

Test(providers, anthropic_html_body_is_502)
{
    cr_assert_eq(th_mock_next(&m1, "{\"body\":\"<html><body>gateway</body></html>\"}"), 0);
    th_resp r;
    post(chat("r-claude", "x", 0), &r);
    cr_assert_eq(r.status, 502, "%ld %s", r.status, r.body);
    json_object *o = body_json(&r);
    cr_assert_not_null(th_json_str(o, "error.message"), "%s", r.body);
    json_object_put(o);
    th_resp_free(&r);
}

Test(providers, anthropic_error_statuses)
{
    th_resp r;
    /* 529 overloaded: retryable, the second deployment answers */
    cr_assert_eq(th_mock_next(&m1, "{\"status\":529}"), 0);
    post(chat("r-claude-fo", "hello", 0), &r);
    cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
    assert_header(&r, "x-compass-provider", "claude2");
    th_resp_free(&r);
    /* 429 on the only candidate: 429 */
    cr_assert_eq(th_mock_next(&m1, "{\"status\":429,\"retry_after\":3}"), 0);
    post(chat("r-claude", "hello", 0), &r);
    cr_assert_eq(r.status, 429, "%ld %s", r.status, r.body);
    th_resp_free(&r);
    /* 400: the client's fault, not retried */
    cr_assert_eq(th_mock_next(&m1, "{\"status\":400,\"error_message\":\"bad thing here\"}"), 0);
    post(chat("r-claude-fo", "hello", 0), &r);
    cr_assert_eq(r.status, 400, "%ld %s", r.status, r.body);
    cr_assert(strstr(r.body, "bad thing here"), "%s", r.body);
    th_resp_free(&r);
    cr_assert_eq(chat_count(&m2), 1, "the 400 was retried");
}

/* ================================================================ Gemini */

Test(providers, gemini_non_streaming)
{
    hello_answered("r-gem", "gem", "gemini-test");

    json_object *st, *lr = last_request(&m1, &st);
    cr_assert_str_eq(th_json_str(lr, "path"), "/v1beta/models/gemini-test:generateContent");
    cr_assert_str_eq(th_json_str(lr, "headers.x-goog-api-key"), "present");
    cr_assert_str_eq(th_json_str(lr, "body.systemInstruction.parts.0.text"), "be brief");
    cr_assert_str_eq(th_json_str(lr, "body.contents.0.role"), "user");
    cr_assert_str_eq(th_json_str(lr, "body.contents.0.parts.0.text"), "hello");
    json_object_put(st);
}

Test(providers, gemini_streaming_with_usage)
{
    th_resp r;
    post(chat("r-gem", "tell me a story", 1), &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    assert_header(&r, "x-compass-provider", "gem");
    sse_sum s;
    sse_summary(r.body, &s);
    cr_assert_str_eq(s.content, "mock reply to: tell me a story", "%s", r.body);
    cr_assert(s.done, "no [DONE]: %s", r.body);
    cr_assert_eq(s.n_error, 0, "%s", r.body);
    cr_assert_str_eq(s.finish, "stop");
    cr_assert_eq(s.usage_prompt, 6, "%s", r.body);
    cr_assert_eq(s.usage_completion, 7, "%s", r.body);
    cr_assert_eq(s.usage_total, 13, "%s", r.body);
    sse_free(&s);
    th_resp_free(&r);
    json_object *st, *lr = last_request(&m1, &st);
    cr_assert_str_eq(th_json_str(lr, "path"), "/v1beta/models/gemini-test:streamGenerateContent");
    json_object_put(st);
}

Test(providers, gemini_max_tokens_is_length)
{
    th_resp r;
    post("{\"model\":\"r-gem\",\"max_tokens\":2,\"messages\":[{\"role\":\"user\","
         "\"content\":\"a b c\"}]}",
         &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_object *o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "choices.0.message.content"), "mock reply");
    cr_assert_str_eq(th_json_str(o, "choices.0.finish_reason"), "length");
    json_object_put(o);
    th_resp_free(&r);
    json_object *st, *lr = last_request(&m1, &st);
    cr_assert_eq(th_json_int(lr, "body.generationConfig.maxOutputTokens"), 2);
    json_object_put(st);
}

Test(providers, gemini_tool_call)
{
    th_resp r;
    post(tools_chat("r-gem", 0), &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_object *o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "choices.0.finish_reason"), "tool_calls", "%s", r.body);
    cr_assert_str_eq(th_json_str(o, "choices.0.message.tool_calls.0.type"), "function");
    cr_assert_not_null(th_json_str(o, "choices.0.message.tool_calls.0.id"), "%s", r.body);
    cr_assert_str_eq(th_json_str(o, "choices.0.message.tool_calls.0.function.name"),
                     "get_weather");
    assert_city_args(th_json_str(o, "choices.0.message.tool_calls.0.function.arguments"));
    json_object_put(o);
    th_resp_free(&r);
    json_object *st, *lr = last_request(&m1, &st);
    cr_assert_str_eq(th_json_str(lr, "body.toolConfig.functionCallingConfig.mode"), "ANY");
    cr_assert_str_eq(th_json_str(lr, "body.tools.0.functionDeclarations.0.name"), "get_weather");
    json_object_put(st);
}

Test(providers, gemini_streamed_tool_call_reassembles)
{
    th_resp r;
    post(tools_chat("r-gem", 1), &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    sse_sum s;
    sse_summary(r.body, &s);
    cr_assert(s.done && s.n_error == 0, "%s", r.body);
    cr_assert_str_eq(s.tool_name, "get_weather", "%s", r.body);
    cr_assert(s.tool_id[0], "no tool call id: %s", r.body);
    assert_city_args(s.tool_args);
    cr_assert_str_eq(s.finish, "tool_calls");
    cr_assert_gt(s.usage_total, 0);
    sse_free(&s);
    th_resp_free(&r);
}

Test(providers, gemini_conversation_is_valid_for_the_api)
{
    th_resp r;
    post(conversation("r-gem"), &r);
    cr_assert_eq(r.status, 200, "mockllm (as Gemini) refused the request: %s", r.body);
    json_object *o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "choices.0.message.content"),
                     "mock reply to: thanks and tomorrow?", "%s", r.body);
    json_object_put(o);
    th_resp_free(&r);
    json_object *st, *lr = last_request(&m1, &st);
    json_object *body = json_object_object_get(lr, "body");
    cr_assert_null(strstr(json_object_to_json_string(body), "\"assistant\""),
                   "role assistant sent to Gemini: %s", json_object_to_json_string(body));
    json_object *contents = json_object_object_get(body, "contents");
    size_t n = json_object_array_length(contents);
    cr_assert_eq(n, 5, "%s", json_object_to_json_string(contents));
    static const char *const roles[] = {"user", "model", "user", "model", "user"};
    for (size_t i = 0; i < n && i < 5; i++)
        cr_assert_str_eq(th_json_str(json_object_array_get_idx(contents, i), "role"), roles[i]);
    cr_assert_str_eq(th_json_str(body, "contents.1.parts.0.functionCall.name"), "get_weather");
    cr_assert_str_eq(th_json_str(body, "contents.1.parts.0.functionCall.args.city"), "Paris");
    cr_assert_str_eq(th_json_str(body, "contents.2.parts.0.functionResponse.name"),
                     "get_weather");
    json_object_put(st);
}

Test(providers, gemini_stream_truncated_after_content)
{
    assert_broken_stream("r-gem-fo", "{\"drop_after\":2}", &m2);
}

Test(providers, gemini_stream_truncated_before_content_fails_over)
{
    assert_clean_failover("r-gem-fo", "{\"drop_after\":0}", "gem2");
}

Test(providers, gemini_stream_invalid_json_event)
{
    assert_broken_stream("r-gem-fo", "{\"garbage_after\":2}", &m2);
}

Test(providers, gemini_stream_error_event_mid_stream)
{
    assert_broken_stream("r-gem-fo", "{\"error_event_after\":2}", &m2);
}

Test(providers, gemini_stream_error_event_before_content_fails_over)
{
    assert_clean_failover("r-gem-fo", "{\"error_event_after\":0}", "gem2");
}

Test(providers, gemini_html_body_is_502)
{
    cr_assert_eq(th_mock_next(&m1, "{\"body\":\"<html><body>gateway</body></html>\"}"), 0);
    th_resp r;
    post(chat("r-gem", "x", 0), &r);
    cr_assert_eq(r.status, 502, "%ld %s", r.status, r.body);
    th_resp_free(&r);
}

Test(providers, gemini_error_statuses)
{
    th_resp r;
    cr_assert_eq(th_mock_next(&m1, "{\"status\":503}"), 0);
    post(chat("r-gem-fo", "hello", 0), &r);
    cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
    assert_header(&r, "x-compass-provider", "gem2");
    th_resp_free(&r);
    cr_assert_eq(th_mock_next(&m1, "{\"status\":429,\"retry_after\":3}"), 0);
    post(chat("r-gem", "hello", 0), &r);
    cr_assert_eq(r.status, 429, "%ld %s", r.status, r.body);
    th_resp_free(&r);
    cr_assert_eq(th_mock_next(&m1, "{\"status\":400,\"error_message\":\"bad thing here\"}"), 0);
    post(chat("r-gem-fo", "hello", 0), &r);
    cr_assert_eq(r.status, 400, "%ld %s", r.status, r.body);
    cr_assert(strstr(r.body, "bad thing here"), "%s", r.body);
    th_resp_free(&r);
    cr_assert_eq(chat_count(&m2), 1, "the 400 was retried");
}

/* ================================================================ both: reshaping details */

/* Two parallel tool calls answered by two tool messages, then a user message. */
static const char *parallel_calls(const char *model)
{
    static char buf[4096];
    snprintf(buf, sizeof(buf),
             "{\"model\":\"%s\","
             "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
             "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":"
             "\"string\"}}}}}],"
             "\"messages\":["
             "{\"role\":\"user\",\"content\":\"weather in Paris and Rome?\"},"
             "{\"role\":\"assistant\",\"content\":\"Checking.\",\"tool_calls\":["
             "{\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
             "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
             "{\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
             "\"arguments\":\"{\\\"city\\\":\\\"Rome\\\"}\"}}]},"
             "{\"role\":\"tool\",\"tool_call_id\":\"call_a\",\"content\":\"sunny\"},"
             "{\"role\":\"tool\",\"tool_call_id\":\"call_b\",\"content\":\"{\\\"sky\\\":\\\"rain\\\"}\"},"
             "{\"role\":\"user\",\"content\":\"which is warmer?\"}]}",
             model);
    return buf;
}

Test(providers, anthropic_parallel_tool_results_share_one_turn)
{
    th_resp r;
    post(parallel_calls("r-claude"), &r);
    cr_assert_eq(r.status, 200, "mockllm (as Anthropic) refused the request: %s", r.body);
    th_resp_free(&r);
    json_object *st, *lr = last_request(&m1, &st);
    json_object *body = json_object_object_get(lr, "body");
    json_object *msgs = json_object_object_get(body, "messages");
    cr_assert_eq(json_object_array_length(msgs), 3, "%s", json_object_to_json_string(msgs));
    cr_assert_str_eq(th_json_str(body, "messages.1.content.0.type"), "text");
    cr_assert_str_eq(th_json_str(body, "messages.1.content.1.id"), "call_a");
    cr_assert_str_eq(th_json_str(body, "messages.1.content.2.id"), "call_b");
    cr_assert_str_eq(th_json_str(body, "messages.2.content.0.tool_use_id"), "call_a");
    cr_assert_str_eq(th_json_str(body, "messages.2.content.1.tool_use_id"), "call_b");
    cr_assert_str_eq(th_json_str(body, "messages.2.content.2.type"), "text");
    json_object_put(st);
}

Test(providers, gemini_parallel_function_responses_share_one_turn)
{
    th_resp r;
    post(parallel_calls("r-gem"), &r);
    cr_assert_eq(r.status, 200, "mockllm (as Gemini) refused the request: %s", r.body);
    th_resp_free(&r);
    json_object *st, *lr = last_request(&m1, &st);
    json_object *body = json_object_object_get(lr, "body");
    cr_assert_str_eq(th_json_str(body, "contents.1.role"), "model");
    cr_assert_str_eq(th_json_str(body, "contents.1.parts.1.functionCall.args.city"), "Paris");
    cr_assert_str_eq(th_json_str(body, "contents.1.parts.2.functionCall.args.city"), "Rome");
    cr_assert_str_eq(th_json_str(body, "contents.2.role"), "user");
    cr_assert_str_eq(th_json_str(body, "contents.2.parts.0.functionResponse.name"),
                     "get_weather");
    cr_assert_str_eq(th_json_str(body, "contents.2.parts.1.functionResponse.response.sky"),
                     "rain", "a JSON tool result should be the response object");
    json_object_put(st);
}

Test(providers, sampling_parameters_are_mapped)
{
    th_resp r;
    post("{\"model\":\"r-claude\",\"temperature\":0.5,\"top_p\":0.9,\"stop\":[\"END\"],"
         "\"user\":\"u-42\",\"max_completion_tokens\":50,\"parallel_tool_calls\":false,"
         "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
         &r);
    cr_assert_eq(r.status, 200, "anthropic: %s", r.body);
    th_resp_free(&r);
    json_object *st, *lr = last_request(&m1, &st);
    json_object *b = json_object_object_get(lr, "body");
    cr_assert_float_eq(json_object_get_double(json_object_object_get(b, "temperature")), 0.5,
                       1e-9);
    cr_assert_str_eq(th_json_str(b, "stop_sequences.0"), "END");
    cr_assert_str_eq(th_json_str(b, "metadata.user_id"), "u-42");
    cr_assert_eq(th_json_int(b, "max_tokens"), 50);
    json_object_put(st);

    post("{\"model\":\"r-gem\",\"temperature\":1.5,\"top_p\":0.9,\"stop\":[\"END\"],\"seed\":7,"
         "\"user\":\"u-42\",\"max_completion_tokens\":50,"
         "\"response_format\":{\"type\":\"json_object\"},"
         "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
         &r);
    cr_assert_eq(r.status, 200, "gemini: %s", r.body);
    th_resp_free(&r);
    lr = last_request(&m1, &st);
    b = json_object_object_get(lr, "body");
    cr_assert_str_eq(th_json_str(b, "generationConfig.stopSequences.0"), "END");
    cr_assert_eq(th_json_int(b, "generationConfig.maxOutputTokens"), 50);
    cr_assert_eq(th_json_int(b, "generationConfig.seed"), 7);
    cr_assert_str_eq(th_json_str(b, "generationConfig.responseMimeType"), "application/json");
    json_object_put(st);
}

#define IMAGE_CHAT(model)                                                                     \
    "{\"model\":\"" model "\",\"messages\":[{\"role\":\"user\",\"content\":["                \
    "{\"type\":\"text\",\"text\":\"what is this?\"},"                                          \
    "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0KGgo=\"}}" \
    "]}]}"

Test(providers, images_are_mapped)
{
    th_resp r;
    post(IMAGE_CHAT("r-claude"), &r);
    cr_assert_eq(r.status, 200, "anthropic: %s", r.body);
    th_resp_free(&r);
    json_object *st, *lr = last_request(&m1, &st);
    cr_assert_str_eq(th_json_str(lr, "body.messages.0.content.1.type"), "image");
    cr_assert_str_eq(th_json_str(lr, "body.messages.0.content.1.source.media_type"),
                     "image/png");
    cr_assert_str_eq(th_json_str(lr, "body.messages.0.content.1.source.data"), "iVBORw0KGgo=");
    json_object_put(st);
    post(IMAGE_CHAT("r-gem"), &r);
    cr_assert_eq(r.status, 200, "gemini: %s", r.body);
    th_resp_free(&r);
    lr = last_request(&m1, &st);
    cr_assert_str_eq(th_json_str(lr, "body.contents.0.parts.1.inlineData.mimeType"), "image/png");
    cr_assert_str_eq(th_json_str(lr, "body.contents.0.parts.1.inlineData.data"), "iVBORw0KGgo=");
    json_object_put(st);
}

Test(providers, anthropic_refuses_what_the_api_would_reject_without_calling_it)
{
    th_resp r;
    post("{\"model\":\"r-claude\",\"temperature\":1.5,\"messages\":[{\"role\":\"user\","
         "\"content\":\"hi\"}]}",
         &r);
    cr_assert(r.status >= 400 && r.status < 500, "%ld %s", r.status, r.body);
    cr_assert(strstr(r.body, "temperature"), "%s", r.body);
    th_resp_free(&r);
    cr_assert_eq(chat_count(&m1), 0, "the request reached the upstream");
}

/* Regression (was an adapter bug) plugins/providers/anthropic/anthropic.c, build_messages(): when the
 * first non-system message is an assistant message, it becomes messages[0] with role
 * "assistant"; the Messages API answers 400 "messages: first message must use the \"user\"
 * role" (mockllm does the same), so a conversation that is valid in OpenAI's format fails with
 * a 400 that is not the client's fault and is not failed over. Expected: prepend a user turn
 * (or refuse with COMPASS_EUNSUPPORTED before sending). Re-enable when fixed. */
Test(providers, anthropic_conversation_opening_with_an_assistant_greeting)
{
    /* Valid in OpenAI's format (a chat UI's greeting), refused by Anthropic ("messages: first
     * message must use the \"user\" role"): the adapter must reshape it or refuse it itself. */
    th_resp r;
    post("{\"model\":\"r-claude\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
         "{\"role\":\"assistant\",\"content\":\"Hi! How can I help?\"},"
         "{\"role\":\"user\",\"content\":\"hello\"}]}",
         &r);
    cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
    th_resp_free(&r);
    json_object *st, *lr = last_request(&m1, &st);
    cr_assert_str_eq(th_json_str(lr, "body.messages.0.role"), "user");
    json_object_put(st);
}

Test(providers, gemini_json_schemas_are_cleaned)
{
    /* JSON Schema keywords the Gemini Schema message does not have, and a type list: the
     * API refuses them as unknown fields unless the adapter cleans them. */
    th_resp r;
    post("{\"model\":\"r-gem\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"find\","
         "\"strict\":true,\"parameters\":{\"$schema\":\"http://json-schema.org/draft-07/schema#\","
         "\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
         "\"q\":{\"type\":[\"string\",\"null\"],\"description\":\"query\"},"
         "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"additionalProperties\":"
         "false,\"properties\":{\"name\":{\"type\":\"string\"}}}}},\"required\":[\"q\"]}}}],"
         "\"tool_choice\":\"required\","
         "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"out\","
         "\"strict\":true,\"schema\":{\"type\":\"object\",\"additionalProperties\":false,"
         "\"properties\":{\"answer\":{\"type\":\"string\"}},\"required\":[\"answer\"]}}},"
         "\"messages\":[{\"role\":\"user\",\"content\":\"find it\"}]}",
         &r);
    cr_assert_eq(r.status, 200, "mockllm (as Gemini) refused the request: %s", r.body);
    json_object *o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "choices.0.message.tool_calls.0.function.name"), "find");
    assert_header(&r, "x-compass-provider", "gem");
    json_object_put(o);
    th_resp_free(&r);
    json_object *st, *lr = last_request(&m1, &st);
    json_object *b = json_object_object_get(lr, "body");
    cr_assert_str_eq(th_json_str(b, "tools.0.functionDeclarations.0.parameters.properties.q.type"),
                     "string");
    json_object *params = NULL, *tool0 = json_object_array_get_idx(
                                        json_object_object_get(b, "tools"), 0);
    params = json_object_object_get(
        json_object_array_get_idx(json_object_object_get(tool0, "functionDeclarations"), 0),
        "parameters");
    json_object *nullable = json_object_object_get(
        json_object_object_get(json_object_object_get(params, "properties"), "q"), "nullable");
    cr_assert(nullable && json_object_get_boolean(nullable), "q is not nullable");
    cr_assert_str_eq(th_json_str(b, "generationConfig.responseMimeType"), "application/json");
    cr_assert_str_eq(th_json_str(b, "generationConfig.responseSchema.type"), "object");
    json_object_put(st);
}

static const char *named_tool_chat(const char *model)
{
    static char buf[2048];
    snprintf(buf, sizeof(buf),
             "{\"model\":\"%s\",\"tools\":["
             "{\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"parameters\":{"
             "\"type\":\"object\",\"properties\":{\"zone\":{\"type\":\"string\"}}}}},"
             "{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{"
             "\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}}],"
             "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}},"
             "\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}]}",
             model);
    return buf;
}

Test(providers, named_tool_choice_calls_that_tool)
{
    static const char *const routes[] = {"r-claude", "r-gem"};
    for (size_t i = 0; i < 2; i++) {
        th_resp r;
        post(named_tool_chat(routes[i]), &r);
        cr_assert_eq(r.status, 200, "%s: %s", routes[i], r.body);
        json_object *o = body_json(&r);
        cr_assert_str_eq(th_json_str(o, "choices.0.message.tool_calls.0.function.name"),
                         "get_weather", "%s: %s", routes[i], r.body);
        assert_city_args(th_json_str(o, "choices.0.message.tool_calls.0.function.arguments"));
        json_object_put(o);
        th_resp_free(&r);
    }
    json_object *st, *lr = last_request(&m1, &st);
    cr_assert_str_eq(th_json_str(lr, "body.toolConfig.functionCallingConfig.allowedFunctionNames.0"),
                     "get_weather");
    json_object_put(st);
}

Test(providers, text_then_tool_call)
{
    /* the model says something, then calls the tool: Anthropic a text block then a tool_use
     * block (index 1), Gemini a text part then a functionCall part */
    static const char *const routes[] = {"r-claude", "r-gem"};
    for (size_t i = 0; i < 2; i++) {
        for (int stream = 0; stream < 2; stream++) {
            cr_assert_eq(th_mock_next(&m1, "{\"content\":\"Let me check that.\"}"), 0);
            th_resp r;
            post(tools_chat(routes[i], stream), &r);
            cr_assert_eq(r.status, 200, "%s/%d: %s", routes[i], stream, r.body);
            if (stream) {
                sse_sum s;
                sse_summary(r.body, &s);
                cr_assert(s.done && s.n_error == 0, "%s: %s", routes[i], r.body);
                cr_assert_str_eq(s.content, "Let me check that.", "%s: %s", routes[i], r.body);
                cr_assert_str_eq(s.tool_name, "get_weather", "%s: %s", routes[i], r.body);
                assert_city_args(s.tool_args);
                cr_assert_str_eq(s.finish, "tool_calls", "%s: %s", routes[i], r.body);
                sse_free(&s);
            } else {
                json_object *o = body_json(&r);
                cr_assert_str_eq(th_json_str(o, "choices.0.message.content"),
                                 "Let me check that.", "%s: %s", routes[i], r.body);
                cr_assert_str_eq(th_json_str(o, "choices.0.message.tool_calls.0.function.name"),
                                 "get_weather", "%s: %s", routes[i], r.body);
                assert_city_args(
                    th_json_str(o, "choices.0.message.tool_calls.0.function.arguments"));
                cr_assert_str_eq(th_json_str(o, "choices.0.finish_reason"), "tool_calls");
                json_object_put(o);
            }
            th_resp_free(&r);
        }
    }
}

/* Only a system message (valid for OpenAI): Anthropic needs at least one message ("messages:
 * at least one message is required"), Gemini at least one content; an adapter must refuse it
 * itself rather than send a request the API rejects. */
static void assert_system_only_refused(const char *route)
{
    char body[256];
    snprintf(body, sizeof(body),
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"}]}",
             route);
    th_resp r;
    post(body, &r);
    cr_assert(r.status >= 400 && r.status < 500, "%s: %ld %s", route, r.status, r.body);
    th_resp_free(&r);
    cr_assert_eq(chat_count(&m1), 0, "%s: sent to the upstream, which refuses it", route);
}

Test(providers, gemini_system_only_is_refused_before_the_upstream)
{
    assert_system_only_refused("r-gem");
}

/* Regression (was an adapter bug) plugins/providers/anthropic/anthropic.c, build_messages(): with only
 * system/developer messages (or only messages that end up with no blocks, e.g. a user message
 * whose content is ""), it sends "messages": [] and the Messages API answers 400 "messages: at
 * least one message is required". The gemini adapter refuses the same request itself
 * (COMPASS_EUNSUPPORTED, "Gemini needs at least one user, assistant or tool message"); the
 * anthropic adapter should too. Re-enable when fixed. */
Test(providers, anthropic_system_only_is_refused_before_the_upstream)
{
    assert_system_only_refused("r-claude");
}

Test(providers, malformed_and_hanging_upstreams)
{
    static const char *const routes[] = {"r-claude", "r-gem"};
    for (size_t i = 0; i < 2; i++) {
        cr_assert_eq(th_mock_next(&m1, "{\"malformed\":true}"), 0);
        th_resp r;
        post(chat(routes[i], "x", 0), &r);
        cr_assert_eq(r.status, 502, "%s: %ld %s", routes[i], r.status, r.body);
        th_resp_free(&r);
    }
    /* no answer at all: 504 after the first-byte timeout (3 s here) */
    cr_assert_eq(th_mock_next(&m1, "{\"hang\":true}"), 0);
    th_resp r;
    post(chat("r-claude", "x", 0), &r);
    cr_assert_eq(r.status, 504, "%ld %s", r.status, r.body);
    th_resp_free(&r);
}

Test(providers, gemini_3_replayed_function_calls_carry_a_thought_signature)
{
    /* Gemini 3 refuses a history whose function calls have no thoughtSignature; calls that
     * came from an OpenAI client have none, so the adapter sends Google's documented sentinel. */
    th_resp r;
    post(parallel_calls("r-gem3"), &r);
    cr_assert_eq(r.status, 200, "mockllm (as Gemini 3) refused the request: %s", r.body);
    assert_header(&r, "x-compass-model", "gemini-3-pro-preview");
    th_resp_free(&r);
    json_object *st, *lr = last_request(&m1, &st);
    cr_assert_str_eq(th_json_str(lr, "path"),
                     "/v1beta/models/gemini-3-pro-preview:generateContent");
    cr_assert_str_eq(th_json_str(lr, "body.contents.1.parts.1.thoughtSignature"),
                     "skip_thought_signature_validator");
    json_object_put(st);
}

/* ================================================================ Gemini embeddings */

/* What mockllm itself answers to batchEmbedContents for one text (dims 0: its default). The
 * values array is copied out (json_object_put it). */
static json_object *mock_gemini_vector(const char *text, int dims)
{
    static const char *const key[] = {"x-goog-api-key: gm-it-test", NULL};
    char body[512];
    char dim[64] = "";
    th_resp r;
    if (dims > 0)
        snprintf(dim, sizeof(dim), ",\"outputDimensionality\":%d", dims);
    snprintf(body, sizeof(body),
             "{\"requests\":[{\"model\":\"models/gemini-test\",\"content\":{\"parts\":[{\"text\":"
             "\"%s\"}]}%s}]}",
             text, dim);
    cr_assert_eq(th_http(m1.port, "POST", "/v1beta/models/gemini-test:batchEmbedContents", body,
                         key, 0, &r),
                 0, "transport error");
    cr_assert_eq(r.status, 200, "mockllm: %s", r.body);
    json_object *o = body_json(&r), *embs = NULL, *vals = NULL;
    cr_assert(json_object_object_get_ex(o, "embeddings", &embs), "%s", r.body);
    cr_assert(json_object_object_get_ex(json_object_array_get_idx(embs, 0), "values", &vals));
    json_object_get(vals);
    json_object_put(o);
    th_resp_free(&r);
    return vals;
}

static int b64_val(char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    return ch == '+' ? 62 : ch == '/' ? 63 : -1;
}

/* Decodes base64 little-endian float32s into out; returns how many floats. */
static size_t b64_floats(const char *s, float *out, size_t cap)
{
    unsigned char bytes[4096];
    size_t nb = 0, len = strlen(s);
    cr_assert_eq(len % 4, 0, "base64 length %zu", len);
    for (size_t i = 0; i < len; i += 4) {
        int a = b64_val(s[i]), b = b64_val(s[i + 1]);
        int c = s[i + 2] == '=' ? 0 : b64_val(s[i + 2]), d = s[i + 3] == '=' ? 0 : b64_val(s[i + 3]);
        cr_assert(a >= 0 && b >= 0 && c >= 0 && d >= 0, "not base64: %s", s);
        cr_assert_lt(nb + 3, sizeof(bytes));
        bytes[nb++] = (unsigned char)(a << 2 | b >> 4);
        if (s[i + 2] != '=')
            bytes[nb++] = (unsigned char)(b << 4 | c >> 2);
        if (s[i + 3] != '=')
            bytes[nb++] = (unsigned char)(c << 6 | d);
    }
    cr_assert_eq(nb % 4, 0, "%zu bytes are not whole float32s", nb);
    size_t n = nb / 4;
    cr_assert_leq(n, cap);
    for (size_t k = 0; k < n; k++) {
        uint32_t u = (uint32_t)bytes[4 * k] | (uint32_t)bytes[4 * k + 1] << 8 |
                     (uint32_t)bytes[4 * k + 2] << 16 | (uint32_t)bytes[4 * k + 3] << 24;
        memcpy(&out[k], &u, sizeof(float));
    }
    return n;
}

Test(providers, gemini_embeddings_float_and_base64)
{
    th_resp r;
    cr_assert_eq(th_http(cd.port, "POST", "/v1/embeddings",
                         "{\"model\":\"r-gem\",\"input\":[\"hello\",\"world\"]}", NULL, 0, &r),
                 0, "transport error");
    cr_assert_eq(r.status, 200, "%s", r.body);
    assert_header(&r, "x-compass-provider", "gem");
    json_object *o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "object"), "list", "%s", r.body);
    cr_assert_str_eq(th_json_str(o, "model"), "gemini-test", "%s", r.body);
    json_object *data = json_object_object_get(o, "data");
    cr_assert_eq(json_object_array_length(data), 2, "%s", r.body);
    /* Gemini reports no usage for embeddings: the host estimates ceil(10 chars / 4) = 3 */
    cr_assert_eq(th_json_int(o, "usage.prompt_tokens"), 3, "%s", r.body);
    cr_assert_eq(th_json_int(o, "usage.total_tokens"), 3, "%s", r.body);

    json_object *st, *lr = last_request(&m1, &st);
    cr_assert_str_eq(th_json_str(lr, "path"), "/v1beta/models/gemini-test:batchEmbedContents");
    cr_assert_str_eq(th_json_str(lr, "headers.x-goog-api-key"), "present");
    cr_assert_str_eq(th_json_str(lr, "body.requests.0.model"), "models/gemini-test");
    cr_assert_str_eq(th_json_str(lr, "body.requests.0.content.parts.0.text"), "hello");
    cr_assert_str_eq(th_json_str(lr, "body.requests.1.content.parts.0.text"), "world");
    json_object_put(st);

    static const char *const texts[] = {"hello", "world"};
    for (size_t i = 0; i < 2; i++) {
        json_object *e = json_object_array_get_idx(data, i);
        cr_assert_str_eq(th_json_str(e, "object"), "embedding");
        cr_assert_eq(th_json_int(e, "index"), (long)i);
        json_object *got = json_object_object_get(e, "embedding");
        json_object *want = mock_gemini_vector(texts[i], 0);
        size_t n = json_object_array_length(want);
        cr_assert_eq(n, 8, "mockllm's default is 8 values");
        cr_assert_eq(json_object_array_length(got), n, "%s", r.body);
        for (size_t k = 0; k < n; k++)
            cr_assert_float_eq(json_object_get_double(json_object_array_get_idx(got, k)),
                               json_object_get_double(json_object_array_get_idx(want, k)), 1e-6,
                               "data[%zu][%zu]: %s", i, k, r.body);
        json_object_put(want);
    }
    json_object_put(o);
    th_resp_free(&r);

    /* base64 (little-endian float32) with dimensions → outputDimensionality */
    cr_assert_eq(th_http(cd.port, "POST", "/v1/embeddings",
                         "{\"model\":\"r-gem\",\"input\":\"hello\",\"dimensions\":5,"
                         "\"encoding_format\":\"base64\"}",
                         NULL, 0, &r),
                 0, "transport error");
    cr_assert_eq(r.status, 200, "%s", r.body);
    lr = last_request(&m1, &st);
    cr_assert_eq(th_json_int(lr, "body.requests.0.outputDimensionality"), 5);
    json_object_put(st);
    o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "object"), "list", "%s", r.body);
    cr_assert_eq(th_json_int(o, "data.0.index"), 0);
    const char *b64 = th_json_str(o, "data.0.embedding");
    cr_assert_not_null(b64, "%s", r.body);
    float vals[64];
    size_t n = b64_floats(b64, vals, 64);
    json_object *want = mock_gemini_vector("hello", 5);
    cr_assert_eq(n, 5, "%s", r.body);
    cr_assert_eq(json_object_array_length(want), 5);
    for (size_t k = 0; k < n; k++)
        cr_assert_float_eq(vals[k], json_object_get_double(json_object_array_get_idx(want, k)),
                           1e-6, "[%zu]: %s", k, r.body);
    json_object_put(want);
    json_object_put(o);
    th_resp_free(&r);
}

Test(providers, gemini_embeddings_errors)
{
    /* more inputs than batchEmbedContents takes: refused before the upstream */
    char body[2048];
    size_t n = (size_t)snprintf(body, sizeof(body), "{\"model\":\"r-gem\",\"input\":[");
    for (int i = 0; i < 101; i++)
        n += (size_t)snprintf(body + n, sizeof(body) - n, "%s\"x\"", i ? "," : "");
    snprintf(body + n, sizeof(body) - n, "]}");
    json_object *st0 = th_mock_stats(&m1);
    long before = th_json_int(st0, "requests");
    json_object_put(st0);
    th_resp r;
    cr_assert_eq(th_http(cd.port, "POST", "/v1/embeddings", body, NULL, 0, &r), 0);
    cr_assert_eq(r.status, 400, "%ld %s", r.status, r.body);
    cr_assert(strstr(r.body, "100"), "%s", r.body);
    th_resp_free(&r);
    st0 = th_mock_stats(&m1);
    cr_assert_eq(th_json_int(st0, "requests"), before, "the upstream was called");
    json_object_put(st0);
}
