/* compassd with the replicate adapter against mockllm's Replicate predictions API, over real
 * sockets on 127.0.0.1. Non-streamed calls create the prediction with Prefer: wait; streamed
 * calls create it with "stream": true and then follow its urls.stream (a second HTTP call in
 * the same attempt, made by the core from the plugin's follow op), whose SSE output events
 * the client receives as OpenAI chunks. */
#include <criterion/criterion.h>
#include <signal.h>
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
    "  { name = \"repl\"; plugin = \"replicate\"; base_url = \"@MOCKLLM@\";\n"
    "    api_key_env = \"COMPASS_IT_REPLICATE_KEY\"; models = [\"meta/llama-mock\"];\n"
    "    options = { wait_seconds = 30; max_tokens_field = \"max_new_tokens\"; }; },\n"
    "  { name = \"replv\"; plugin = \"replicate\"; base_url = \"@MOCKLLM@\";\n"
    "    api_key_env = \"COMPASS_IT_REPLICATE_KEY\";\n"
    "    models = [\"meta/llama-mock:5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9\"];"
    " }\n"
    ");\n"
    "routes = (\n"
    "  { name = \"r-repl\"; candidates = [\"repl/meta/llama-mock\"]; },\n"
    "  { name = \"r-replv\"; candidates = [\"replv/meta/llama-mock:5c7d5dc6dd8bf75c1acaa8565735e7"
    "986bc5b66206b55cca93cb72c9\"]; }\n"
    ");\n";

static th_proc m1, cd;

static void up(void)
{
    setenv("COMPASS_IT_REPLICATE_KEY", "r8_it_test", 1);
    cr_assert_eq(th_mockllm_start(&m1), 0, "mockllm did not start");
    const char *conf = th_write_config(7, CONF, &m1, NULL);
    if (th_compassd_start(&cd, conf)) {
        char *log = th_log(&cd);
        cr_assert_fail("compassd did not start: %s", log);
    }
}

static void down(void)
{
    th_stop(&cd, SIGTERM, 5000);
    th_stop(&m1, SIGTERM, 3000);
}

TestSuite(replicate, .init = up, .fini = down, .timeout = 60);

static const char *chat(const char *model, const char *text, int stream, const char *extra)
{
    static char buf[4096];
    snprintf(buf, sizeof(buf),
             "{\"model\":\"%s\",\"stream\":%s,%s"
             "\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
             "{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"yo\"},"
             "{\"role\":\"user\",\"content\":\"%s\"}]}",
             model, stream ? "true" : "false", extra ? extra : "", text);
    return buf;
}

static json_object *body_json(const th_resp *r)
{
    json_object *o = json_tokener_parse(r->body);
    cr_assert_not_null(o, "body is not JSON: %s", r->body);
    return o;
}

Test(replicate, non_streaming_waits_for_the_prediction)
{
    th_resp r;
    cr_assert_eq(th_http(cd.port, "POST", "/v1/chat/completions",
                         chat("r-repl", "hello", 0, "\"max_tokens\":40,\"temperature\":0.5,"),
                         NULL, 0, &r),
                 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_object *o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "choices.0.message.role"), "assistant");
    cr_assert_str_eq(th_json_str(o, "choices.0.message.content"), "mock reply to: hello");
    cr_assert_str_eq(th_json_str(o, "choices.0.finish_reason"), "stop");
    /* usage from the prediction's metrics: output_token_count is the reply's word count */
    cr_assert_eq(th_json_int(o, "usage.completion_tokens"), 4, "%s", r.body);
    cr_assert_gt(th_json_int(o, "usage.prompt_tokens"), 0);
    char *prov = th_header(&r, "x-compass-provider");
    cr_assert_str_eq(prov, "repl");
    free(prov);
    json_object_put(o);
    th_resp_free(&r);

    json_object *st = th_mock_stats(&m1);
    cr_assert_str_eq(th_json_str(st, "last_request.path"),
                     "/v1/models/meta/llama-mock/predictions");
    cr_assert_str_eq(th_json_str(st, "last_request.headers.prefer"), "wait=30");
    cr_assert_str_eq(th_json_str(st, "last_request.headers.authorization"), "present");
    cr_assert_str_eq(th_json_str(st, "last_request.body.input.prompt"),
                     "User: hi\nAssistant: yo\nUser: hello\nAssistant:");
    cr_assert_str_eq(th_json_str(st, "last_request.body.input.system_prompt"), "be brief");
    cr_assert_eq(th_json_int(st, "last_request.body.input.max_new_tokens"), 40);
    json_object_put(st);
}

Test(replicate, version_models_use_the_predictions_endpoint)
{
    th_resp r;
    cr_assert_eq(th_http(cd.port, "POST", "/v1/chat/completions", chat("r-replv", "v", 0, NULL),
                         NULL, 0, &r),
                 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_object *o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "choices.0.message.content"), "mock reply to: v");
    json_object_put(o);
    th_resp_free(&r);
    json_object *st = th_mock_stats(&m1);
    cr_assert_str_eq(th_json_str(st, "last_request.path"), "/v1/predictions");
    cr_assert_str_eq(th_json_str(st, "last_request.body.version"),
                     "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9");
    json_object_put(st);
}

Test(replicate, streaming_follows_the_stream_url)
{
    th_resp r;
    cr_assert_eq(th_http(cd.port, "POST", "/v1/chat/completions",
                         chat("r-repl", "tell me a story", 1,
                              "\"stream_options\":{\"include_usage\":true},"),
                         NULL, 0, &r),
                 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    char *ct = th_header(&r, "content-type");
    cr_assert(ct && strstr(ct, "text/event-stream"), "content-type %s", ct ? ct : "(none)");
    char *content = NULL, *finish = NULL;
    int done = 0, nerr = 0;
    long usage = 0;
    int n = th_sse_parse(r.body, &content, &done, &nerr, &usage, &finish);
    cr_assert_gt(n, 3, "%s", r.body);
    cr_assert_str_eq(content, "mock reply to: tell me a story");
    cr_assert(done, "no [DONE]: %s", r.body);
    cr_assert_eq(nerr, 0, "%s", r.body);
    cr_assert_str_eq(finish, "stop");
    /* the role arrives once */
    const char *p = r.body;
    int roles = 0;
    while ((p = strstr(p, "\"role\":\"assistant\"")) != NULL) {
        roles++;
        p++;
    }
    cr_assert_eq(roles, 1, "%s", r.body);
    free(content), free(finish), free(ct);
    th_resp_free(&r);

    /* two calls upstream: the creation (stream: true, no Prefer) and the stream GET */
    json_object *st = th_mock_stats(&m1);
    const char *path = th_json_str(st, "last_request.path");
    cr_assert(path && strncmp(path, "/v1/streams/", 12) == 0, "last path %s", path);
    cr_assert_str_eq(th_json_str(st, "last_request.headers.accept"), "text/event-stream");
    cr_assert_str_eq(th_json_str(st, "last_request.headers.authorization"), "present");
    cr_assert_eq(th_json_int(st, "chat"), 1, "one creation");
    cr_assert_eq(th_json_int(st, "requests"), 2, "creation plus stream GET");
    cr_assert_eq(th_json_int(st, "streams_completed"), 1);
    json_object_put(st);
}

Test(replicate, stream_shaping_reaches_the_stream_call)
{
    th_resp r;
    cr_assert_eq(th_mock_next(&m1, "{\"chunks\":3}"), 0);
    cr_assert_eq(th_http(cd.port, "POST", "/v1/chat/completions",
                         chat("r-repl", "abc def ghi", 1, NULL), NULL, 0, &r),
                 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    char *content = NULL, *finish = NULL;
    int done = 0, nerr = 0;
    long usage = 0;
    th_sse_parse(r.body, &content, &done, &nerr, &usage, &finish);
    cr_assert_str_eq(content, "mock reply to: abc def ghi");
    cr_assert(done);
    free(content), free(finish);
    th_resp_free(&r);
}

Test(replicate, invalid_input_is_a_client_error_naming_the_detail)
{
    th_resp r;
    cr_assert_eq(th_mock_next(&m1, "{\"status\":422,\"error_message\":\"- input.prompt: too "
                                   "long\"}"),
                 0);
    cr_assert_eq(th_http(cd.port, "POST", "/v1/chat/completions", chat("r-repl", "x", 0, NULL),
                         NULL, 0, &r),
                 0);
    cr_assert_eq(r.status, 422, "%s", r.body);
    json_object *o = body_json(&r);
    const char *msg = th_json_str(o, "error.message");
    cr_assert(msg && strstr(msg, "too long"), "%s", r.body);
    json_object_put(o);
    th_resp_free(&r);
}

Test(replicate, failed_prediction_and_stream_error_are_upstream_errors)
{
    th_resp r;
    cr_assert_eq(th_mock_next(&m1, "{\"prediction_status\":\"failed\",\"error_message\":"
                                   "\"CUDA out of memory\"}"),
                 0);
    cr_assert_eq(th_http(cd.port, "POST", "/v1/chat/completions", chat("r-repl", "x", 0, NULL),
                         NULL, 0, &r),
                 0);
    cr_assert_geq(r.status, 500, "%s", r.body);
    cr_assert(strstr(r.body, "CUDA out of memory"), "%s", r.body);
    th_resp_free(&r);

    /* an error event after two outputs: bytes reached the client, so the stream ends with an
     * error chunk and no [DONE] */
    cr_assert_eq(th_mock_next(&m1, "{\"error_event_after\":2,\"error_message\":\"GPU fell "
                                   "over\"}"),
                 0);
    cr_assert_eq(th_http(cd.port, "POST", "/v1/chat/completions",
                         chat("r-repl", "one two three four", 1, NULL), NULL, 0, &r),
                 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    char *content = NULL, *finish = NULL;
    int done = 0, nerr = 0;
    long usage = 0;
    th_sse_parse(r.body, &content, &done, &nerr, &usage, &finish);
    cr_assert_str_eq(content, "mock reply ", "%s", r.body);
    cr_assert_eq(nerr, 1, "%s", r.body);
    cr_assert(strstr(r.body, "GPU fell over"), "%s", r.body);
    free(content), free(finish);
    th_resp_free(&r);
}

Test(replicate, tools_are_refused_before_any_upstream_call)
{
    th_resp r;
    cr_assert_eq(th_http(cd.port, "POST", "/v1/chat/completions",
                         "{\"model\":\"r-repl\",\"tools\":[{\"type\":\"function\",\"function\":"
                         "{\"name\":\"f\"}}],\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                         NULL, 0, &r),
                 0);
    cr_assert_eq(r.status, 400, "%s", r.body);
    cr_assert(strstr(r.body, "tools"), "%s", r.body);
    th_resp_free(&r);
    json_object *st = th_mock_stats(&m1);
    cr_assert_eq(th_json_int(st, "requests"), 0);
    json_object_put(st);
}
