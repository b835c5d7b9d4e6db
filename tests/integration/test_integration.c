/* compassd and mockllm over real sockets on 127.0.0.1: each case holds a config, a scripted
 * upstream, a request and the expected answer. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <unistd.h>

#include "harness.h"

static const char *BASE =
    "server = { listen = \"127.0.0.1:0\"; threads = 1;\n"
    "  timeouts = { connect_ms = 2000; first_byte_ms = 1500; idle_ms = 1500; total_ms = 20000; };\n"
    "};\n"
    "plugins = { paths = [ \"@PLUGINS@\" ]; };\n"
    "deployments = (\n"
    "  { name = \"up1\"; plugin = \"openai\"; base_url = \"@MOCKLLM@/v1\";\n"
    "    models = [\"gpt-test\", \"text-embedding-3-small\"];\n"
    "    price_in = 1.0; price_out = 2.0; },\n"
    "  { name = \"up2\"; plugin = \"openai\"; base_url = \"@MOCKLLM2@/v1\"; models = [\"gpt-test\"]; },\n"
    "  { name = \"local\"; plugin = \"mock\"; models = [\"mock-1\"]; }\n"
    ");\n"
    "routes = (\n"
    "  { name = \"one\"; candidates = [\"up1/gpt-test\"]; },\n"
    "  { name = \"two\"; candidates = [\"up1/gpt-test\", \"up2/gpt-test\"]; },\n"
    "  { name = \"mixed\"; candidates = [\"up1/gpt-test\", \"local/mock-1\"]; }\n"
    ");\n";

static th_proc m1, m2, cd;
static const char *conf_path;

static void up(void)
{
    cr_assert_eq(th_mockllm_start(&m1), 0, "mockllm 1 did not start");
    cr_assert_eq(th_mockllm_start(&m2), 0, "mockllm 2 did not start");
    conf_path = th_write_config(0, BASE, &m1, &m2);
    if (th_compassd_start(&cd, conf_path)) {
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

static json_object *body_json(const th_resp *r)
{
    json_object *o = json_tokener_parse(r->body);
    cr_assert_not_null(o, "body is not JSON: %s", r->body);
    return o;
}

TestSuite(integration, .init = up, .fini = down, .timeout = 60);

Test(integration, non_streaming_chat_through_openai_adapter)
{
    th_resp r;
    const char *hdrs[] = {"x-request-id: it-req-1", NULL};
    cr_assert_eq(th_http(cd.port, "POST", "/v1/chat/completions", chat("one", "hello", 0),
                         hdrs, 0, &r), 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_object *o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "object"), "chat.completion");
    cr_assert_str_eq(th_json_str(o, "choices.0.message.role"), "assistant");
    cr_assert_str_eq(th_json_str(o, "choices.0.message.content"), "mock reply to: hello");
    cr_assert_str_eq(th_json_str(o, "choices.0.finish_reason"), "stop");
    cr_assert_gt(th_json_int(o, "usage.prompt_tokens"), 0);
    cr_assert_eq(th_json_int(o, "usage.total_tokens"),
                 th_json_int(o, "usage.prompt_tokens") + th_json_int(o, "usage.completion_tokens"));
    char *prov = th_header(&r, "x-compass-provider"), *model = th_header(&r, "x-compass-model"),
         *route = th_header(&r, "x-compass-route"), *rid = th_header(&r, "x-request-id"),
         *cost = th_header(&r, "x-compass-cost");
    cr_assert_str_eq(prov, "up1");
    cr_assert_str_eq(model, "gpt-test");
    cr_assert_str_eq(route, "one");
    cr_assert_str_eq(rid, "it-req-1");
    cr_assert_not_null(cost, "x-compass-cost missing though prices are configured");
    /* the upstream got the deployment's model and the messages */
    json_object *st = th_mock_stats(&m1);
    cr_assert_str_eq(th_json_str(st, "last_request.body.model"), "gpt-test");
    cr_assert_str_eq(th_json_str(st, "last_request.body.messages.1.content"), "hello");
    json_object_put(st);
    free(prov), free(model), free(route), free(rid), free(cost);
    json_object_put(o);
    th_resp_free(&r);
}

Test(integration, streaming_chat_ends_with_usage_and_done)
{
    th_resp r;
    cr_assert_eq(th_http(cd.port, "POST", "/v1/chat/completions",
                         chat("one", "tell me a story", 1), NULL, 0, &r), 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    char *ct = th_header(&r, "content-type");
    cr_assert(ct && strstr(ct, "text/event-stream"), "content-type %s", ct ? ct : "(none)");
    char *content, *finish;
    int done, nerr;
    long usage;
    int n = th_sse_parse(r.body, &content, &done, &nerr, &usage, &finish);
    cr_assert_gt(n, 3);
    cr_assert_str_eq(content, "mock reply to: tell me a story");
    cr_assert(done, "no [DONE]: %s", r.body);
    cr_assert_eq(nerr, 0);
    cr_assert_gt(usage, 0, "no usage chunk though include_usage was asked: %s", r.body);
    cr_assert_str_eq(finish, "stop");
    /* the upstream was asked for usage in the stream */
    json_object *st = th_mock_stats(&m1);
    json_object *so = NULL, *body = NULL;
    cr_assert(json_object_object_get_ex(st, "last_request", &body));
    cr_assert(json_object_object_get_ex(json_object_object_get(body, "body"), "stream_options",
                                        &so));
    json_object_put(st);
    free(content), free(finish), free(ct);
    th_resp_free(&r);
}

Test(integration, garbage_from_upstream_is_502_naming_the_deployment)
{
    cr_assert_eq(th_mock_next(&m1, "{\"malformed\":true}"), 0);
    th_resp r;
    th_http(cd.port, "POST", "/v1/chat/completions", chat("one", "x", 0), NULL, 0, &r);
    cr_assert_eq(r.status, 502, "%ld %s", r.status, r.body);
    json_object *o = body_json(&r);
    cr_assert(strstr(th_json_str(o, "error.message"), "up1/gpt-test"), "%s", r.body);
    cr_assert_str_eq(th_json_str(o, "error.code"), "bad_gateway");
    json_object_put(o);
    th_resp_free(&r);
    /* and an HTML page with status 200 */
    cr_assert_eq(th_mock_next(&m1, "{\"body\":\"<html><body>gateway</body></html>\"}"), 0);
    th_http(cd.port, "POST", "/v1/chat/completions", chat("one", "x", 0), NULL, 0, &r);
    cr_assert_eq(r.status, 502, "%ld %s", r.status, r.body);
    th_resp_free(&r);
}

Test(integration, truncated_body_is_502)
{
    cr_assert_eq(th_mock_next(&m1, "{\"truncate\":true}"), 0);
    th_resp r;
    th_http(cd.port, "POST", "/v1/chat/completions", chat("one", "x", 0), NULL, 0, &r);
    cr_assert_eq(r.status, 502, "%ld %s", r.status, r.body);
    th_resp_free(&r);
}

Test(integration, hanging_upstream_is_504_after_first_byte_timeout)
{
    cr_assert_eq(th_mock_next(&m1, "{\"hang\":true}"), 0);
    th_resp r;
    th_http(cd.port, "POST", "/v1/chat/completions", chat("one", "x", 0), NULL, 0, &r);
    cr_assert_eq(r.status, 504, "%ld %s", r.status, r.body);
    cr_assert(r.total_s >= 1.4 && r.total_s < 5, "answered after %.2f s", r.total_s);
    json_object *o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "error.code"), "upstream_timeout");
    json_object_put(o);
    th_resp_free(&r);
    /* compassd closed the upstream transfer */
    long in_flight = -1;
    for (int i = 0; i < 30 && in_flight != 0; i++) {
        json_object *st = th_mock_stats(&m1);
        in_flight = th_json_int(st, "in_flight");
        json_object_put(st);
        if (in_flight)
            th_sleep_ms(100);
    }
    cr_assert_eq(in_flight, 0, "the hung upstream request was not cancelled");
}

Test(integration, failover_to_next_candidate_on_5xx)
{
    cr_assert_eq(th_mock_next(&m1, "{\"status\":500}"), 0);
    th_resp r;
    th_http(cd.port, "POST", "/v1/chat/completions", chat("two", "hello", 0), NULL, 0, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    char *prov = th_header(&r, "x-compass-provider"), *att = th_header(&r, "x-compass-attempts");
    cr_assert_str_eq(prov, "up2");
    cr_assert_str_eq(att, "2");
    free(prov), free(att);
    th_resp_free(&r);
    /* across providers of different kinds too: openai adapter fails, mock answers */
    cr_assert_eq(th_mock_next(&m1, "{\"status\":503}"), 0);
    th_http(cd.port, "POST", "/v1/chat/completions", chat("mixed", "hello", 0), NULL, 0, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    prov = th_header(&r, "x-compass-provider");
    cr_assert_str_eq(prov, "local");
    free(prov);
    th_resp_free(&r);
}

Test(integration, failover_on_429_and_on_connect_refused)
{
    cr_assert_eq(th_mock_next(&m1, "{\"status\":429,\"retry_after\":1}"), 0);
    th_resp r;
    th_http(cd.port, "POST", "/v1/chat/completions", chat("two", "hi", 0), NULL, 0, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);
    /* mockllm 2 gone: connect refused on the second, first fails with 500 */
    th_stop(&m2, SIGTERM, 3000);
    cr_assert_eq(th_mock_next(&m1, "{\"status\":500}"), 0);
    th_http(cd.port, "POST", "/v1/chat/completions", chat("two", "hi", 0), NULL, 0, &r);
    cr_assert_eq(r.status, 503, "%ld %s", r.status, r.body);
    json_object *o = body_json(&r);
    const char *msg = th_json_str(o, "error.message");
    cr_assert(strstr(msg, "up1/gpt-test") && strstr(msg, "up2/gpt-test"),
              "attempts not listed: %s", msg);
    json_object_put(o);
    th_resp_free(&r);
}

Test(integration, client_error_from_upstream_is_not_retried)
{
    cr_assert_eq(th_mock_next(&m1, "{\"status\":400,\"error_message\":\"bad thing in request\","
                                   "\"error_type\":\"invalid_request_error\"}"),
                 0);
    th_resp r;
    th_http(cd.port, "POST", "/v1/chat/completions", chat("two", "hi", 0), NULL, 0, &r);
    cr_assert_eq(r.status, 400, "%ld %s", r.status, r.body);
    cr_assert(strstr(r.body, "bad thing in request"), "%s", r.body);
    char *att = th_header(&r, "x-compass-attempts");
    cr_assert_str_eq(att, "1");
    free(att);
    th_resp_free(&r);
    json_object *st = th_mock_stats(&m2);
    cr_assert_eq(th_json_int(st, "chat"), 0, "a bad request was retried on another deployment");
    json_object_put(st);
}

Test(integration, rate_limit_on_only_candidate_is_429)
{
    cr_assert_eq(th_mock_next(&m1, "{\"status\":429,\"retry_after\":3}"), 0);
    th_resp r;
    th_http(cd.port, "POST", "/v1/chat/completions", chat("one", "hi", 0), NULL, 0, &r);
    cr_assert_eq(r.status, 429, "%ld %s", r.status, r.body);
    th_resp_free(&r);
}

Test(integration, stream_failing_before_first_token_fails_over_cleanly)
{
    /* the first upstream sends its role chunk, then drops: no content reached the client */
    cr_assert_eq(th_mock_next(&m1, "{\"drop_after\":1}"), 0);
    th_resp r;
    th_http(cd.port, "POST", "/v1/chat/completions", chat("two", "hello", 1), NULL, 0, &r);
    cr_assert_eq(r.status, 200);
    char *content, *finish;
    int done, nerr;
    long usage;
    th_sse_parse(r.body, &content, &done, &nerr, &usage, &finish);
    cr_assert_str_eq(content, "mock reply to: hello", "%s", r.body);
    cr_assert(done);
    cr_assert_eq(nerr, 0, "%s", r.body);
    char *prov = th_header(&r, "x-compass-provider");
    cr_assert_str_eq(prov, "up2");
    free(prov), free(content), free(finish);
    th_resp_free(&r);
    /* an error status on a stream request also fails over */
    cr_assert_eq(th_mock_next(&m1, "{\"status\":503}"), 0);
    th_http(cd.port, "POST", "/v1/chat/completions", chat("two", "again", 1), NULL, 0, &r);
    th_sse_parse(r.body, &content, &done, &nerr, &usage, &finish);
    cr_assert_str_eq(content, "mock reply to: again", "%s", r.body);
    free(content), free(finish);
    th_resp_free(&r);
}

Test(integration, stream_dropped_after_content_ends_with_error_chunk)
{
    cr_assert_eq(th_mock_next(&m1, "{\"drop_after\":3}"), 0);
    th_resp r;
    th_http(cd.port, "POST", "/v1/chat/completions",
            chat("two", "one two three four five six", 1), NULL, 0, &r);
    cr_assert_eq(r.status, 200);
    char *content, *finish;
    int done, nerr;
    long usage;
    th_sse_parse(r.body, &content, &done, &nerr, &usage, &finish);
    cr_assert_eq(nerr, 1, "expected one error chunk: %s", r.body);
    cr_assert(!done, "a broken stream must not end with [DONE]");
    cr_assert(strlen(content) > 0 && strlen(content) < strlen("mock reply to: one two three four "
                                                               "five six"));
    json_object *st = th_mock_stats(&m2);
    cr_assert_eq(th_json_int(st, "chat"), 0, "a stream that sent content was retried");
    json_object_put(st);
    free(content), free(finish);
    th_resp_free(&r);
}

Test(integration, client_disconnect_cancels_upstream_stream)
{
    cr_assert_eq(th_mock_next(&m1, "{\"chunks\":100,\"chunk_delay_ms\":100}"), 0);
    th_resp r;
    /* the client gives up after 600 ms */
    th_http(cd.port, "POST", "/v1/chat/completions", chat("one", "long story", 1), NULL, 600,
            &r);
    th_resp_free(&r);
    long aborted = 0, in_flight = -1;
    for (int i = 0; i < 40 && (aborted < 1 || in_flight != 0); i++) {
        th_sleep_ms(100);
        json_object *st = th_mock_stats(&m1);
        aborted = th_json_int(st, "streams_aborted");
        in_flight = th_json_int(st, "in_flight");
        json_object_put(st);
    }
    cr_assert_geq(aborted, 1, "the upstream stream was not cancelled");
    cr_assert_eq(in_flight, 0);
    /* the daemon keeps serving */
    th_http(cd.port, "POST", "/v1/chat/completions", chat("one", "still there", 0), NULL, 0, &r);
    cr_assert_eq(r.status, 200);
    th_resp_free(&r);
}

Test(integration, client_disconnect_while_waiting_cancels_upstream)
{
    /* a slow upstream (2 s before headers) and a client that leaves after 300 ms */
    cr_assert_eq(th_mock_next(&m1, "{\"latency_ms\":2000}"), 0);
    th_resp r;
    th_http(cd.port, "POST", "/v1/chat/completions", chat("one", "x", 0), NULL, 300, &r);
    th_resp_free(&r);
    th_sleep_ms(1200);
    char *log = th_log(&cd);
    cr_assert(strstr(log, "\"cancelled\":true"), "no cancelled request in the log:\n%s", log);
    free(log);
}

Test(integration, metrics_count_requests_tokens_and_latency)
{
    th_resp r;
    for (int i = 0; i < 2; i++) {
        th_http(cd.port, "POST", "/v1/chat/completions", chat("one", "count me", 0), NULL, 0, &r);
        cr_assert_eq(r.status, 200);
        th_resp_free(&r);
    }
    th_http(cd.port, "GET", "/metrics", NULL, NULL, 0, &r);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body, "compass_requests_total{provider=\"up1\",model=\"gpt-test\","
                             "status=\"200\"} 2\n"),
              "%s", r.body);
    cr_assert(strstr(r.body, "compass_tokens_total{provider=\"up1\",model=\"gpt-test\","
                             "type=\"completion\"}"));
    cr_assert(strstr(r.body, "compass_requests_duration_seconds_count{provider=\"up1\","
                             "model=\"gpt-test\"} 2\n"));
    cr_assert(strstr(r.body, "compass_active_tasks"));
    th_resp_free(&r);
}

Test(integration, models_health_and_providers_endpoints)
{
    th_resp r;
    th_http(cd.port, "GET", "/v1/models", NULL, NULL, 0, &r);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body, "\"id\":\"two\"") && strstr(r.body, "\"id\":\"gpt-test\"") &&
              strstr(r.body, "\"id\":\"mock-1\""), "%s", r.body);
    th_resp_free(&r);
    th_http(cd.port, "GET", "/api/v1/health", NULL, NULL, 0, &r);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body, "\"status\":\"ok\""));
    th_resp_free(&r);
    th_http(cd.port, "GET", "/api/v1/providers", NULL, NULL, 0, &r);
    cr_assert_eq(r.status, 200);
    json_object *o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "providers.0.name"), "up1");
    json_object_put(o);
    th_resp_free(&r);
}

Test(integration, bad_input_gets_openai_errors_and_daemon_keeps_serving)
{
    struct {
        const char *method, *path, *body;
        long status;
        const char *needle;
    } cases[] = {
        {"POST", "/v1/chat/completions", "{not json", 400, "not valid JSON"},
        {"POST", "/v1/chat/completions", "{\"model\":\"one\"}", 400, "messages"},
        {"POST", "/v1/chat/completions", "{\"model\":\"one\",\"messages\":\"hi\"}", 400,
         "messages"},
        {"POST", "/v1/chat/completions", "{\"model\":\"one\",\"messages\":[{\"role\":1}]}", 400,
         "messages[0].role"},
        {"POST", "/v1/chat/completions",
         "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 404,
         "model_not_found"},
        {"POST", "/v1/chat/completions",
         "{\"model\":\"one\",\"temperature\":\"hot\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"x\"}]}",
         400, "temperature"},
        {"GET", "/v1/chat/completions", NULL, 405, "not allowed"},
        {"DELETE", "/v1/models", NULL, 405, "not allowed"},
        {"GET", "/v2/nothing", NULL, 404, "Unknown request URL"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        th_resp r;
        th_http(cd.port, cases[i].method, cases[i].path, cases[i].body, NULL, 0, &r);
        cr_assert_eq(r.status, cases[i].status, "case %zu: %ld %s", i, r.status, r.body);
        json_object *o = body_json(&r);
        cr_assert_not_null(th_json_str(o, "error.message"), "case %zu: %s", i, r.body);
        cr_assert_not_null(th_json_str(o, "error.type"));
        cr_assert(strstr(r.body, cases[i].needle), "case %zu: %s", i, r.body);
        json_object_put(o);
        th_resp_free(&r);
    }
    /* over the body limit (1 MiB default) */
    size_t big = 1200000;
    char *body = malloc(big + 1);
    memset(body, 'a', big);
    body[big] = '\0';
    th_resp r;
    th_http(cd.port, "POST", "/v1/chat/completions", body, NULL, 0, &r);
    cr_assert_eq(r.status, 413, "%ld", r.status);
    free(body);
    th_resp_free(&r);
    th_http(cd.port, "POST", "/v1/chat/completions", chat("one", "fine", 0), NULL, 0, &r);
    cr_assert_eq(r.status, 200);
    th_resp_free(&r);
}

struct bg {
    int port;
    const char *body;
    th_resp r;
};

static void *bg_request(void *arg)
{
    struct bg *b = arg;
    th_http(b->port, "POST", "/v1/chat/completions", b->body, NULL, 15000, &b->r);
    return NULL;
}

Test(integration, sighup_reloads_config_and_in_flight_requests_finish)
{
    /* a slow stream in flight across the reload */
    cr_assert_eq(th_mock_next(&m1, "{\"chunks\":10,\"chunk_delay_ms\":100}"), 0);
    struct bg b = {cd.port, chat("one", "slow one", 1), {0}};
    char body[4096];
    snprintf(body, sizeof(body), "%s", b.body);
    b.body = body;
    pthread_t t;
    pthread_create(&t, NULL, bg_request, &b);
    th_sleep_ms(200);
    /* add a route and reload */
    char text[8192];
    snprintf(text, sizeof(text), "%s", BASE);
    char *end = strrchr(text, ')');
    snprintf(end, sizeof(text) - (size_t)(end - text),
             ",\n  { name = \"three\"; candidates = [\"local/mock-1\"]; }\n);\n");
    th_write_config(0, text, &m1, &m2);
    th_signal(&cd, SIGHUP);
    long status = 0;
    for (int i = 0; i < 30 && status != 200; i++) {
        th_resp r;
        th_http(cd.port, "POST", "/v1/chat/completions", chat("three", "new", 0), NULL, 0, &r);
        status = r.status;
        th_resp_free(&r);
        if (status != 200)
            th_sleep_ms(100);
    }
    cr_assert_eq(status, 200, "the new route did not appear after SIGHUP");
    pthread_join(t, NULL);
    cr_assert_eq(b.r.status, 200);
    char *content, *finish;
    int done, nerr;
    long usage;
    th_sse_parse(b.r.body, &content, &done, &nerr, &usage, &finish);
    cr_assert(done && nerr == 0, "the in-flight stream broke across the reload: %s", b.r.body);
    free(content), free(finish);
    th_resp_free(&b.r);
    /* a broken config on reload is refused; the old one keeps serving */
    th_write_config(0, "routes = ( { name = 1; } );\n", &m1, &m2);
    th_signal(&cd, SIGHUP);
    th_sleep_ms(300);
    th_resp r;
    th_http(cd.port, "POST", "/v1/chat/completions", chat("three", "still", 0), NULL, 0, &r);
    cr_assert_eq(r.status, 200);
    th_resp_free(&r);
    char *log = th_log(&cd);
    cr_assert(strstr(log, ".conf:1: routes[0].name: expected a string"), "%s", log);
    free(log);
}

Test(integration, sigterm_drains_requests_in_flight)
{
    cr_assert_eq(th_mock_next(&m1, "{\"latency_ms\":800}"), 0);
    char body[4096];
    snprintf(body, sizeof(body), "%s", chat("one", "drain me", 0));
    struct bg b = {cd.port, body, {0}};
    pthread_t t;
    pthread_create(&t, NULL, bg_request, &b);
    th_sleep_ms(250);
    int rc = th_stop(&cd, SIGTERM, 10000);
    pthread_join(t, NULL);
    cr_assert_eq(b.r.status, 200, "request in flight at SIGTERM got %ld", b.r.status);
    cr_assert_eq(rc, 0, "compassd exit status %d", rc);
    th_resp_free(&b.r);
}

struct many {
    int port, n, ok;
    long threads_max;
    pid_t pid;
};

static long threads_of(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long n = -1;
    while (f && fgets(line, sizeof(line), f))
        if (!strncmp(line, "Threads:", 8))
            n = strtol(line + 8, NULL, 10);
    if (f)
        fclose(f);
    return n;
}

struct peak_ctx {
    pid_t pid;
    long peak;
};

static void track_peak(void *ctx)
{
    struct peak_ctx *p = ctx;
    long t = threads_of(p->pid);
    if (t > p->peak)
        p->peak = t;
}

Test(integration, concurrent_streams_do_not_add_threads)
{
    long before = threads_of(cd.pid);
    int n = 300;
    /* the in-process mock with a 1 s stream: 10 chunks 100 ms apart */
    const char *body = "{\"model\":\"mixed\",\"stream\":true,\"messages\":[{\"role\":\"user\","
                       "\"content\":\"a b c d e f g h #mock{\\\"chunk_delay_ms\\\":100}\"}]}";
    th_proc *m = &m1;
    th_stop(m, SIGTERM, 3000); /* up1 down: mixed goes to the mock */
    const char **bodies = calloc((size_t)n, sizeof(*bodies));
    long *codes = calloc((size_t)n, sizeof(*codes));
    for (int i = 0; i < n; i++)
        bodies[i] = body;
    struct peak_ctx pk = {cd.pid, before};
    th_post_all(cd.port, "/v1/chat/completions", bodies, n, 0, codes, NULL, track_peak, &pk);
    long peak = pk.peak;
    int ok = 0;
    for (int i = 0; i < n; i++)
        ok += codes[i] == 200;
    free(bodies);
    free(codes);
    cr_assert_eq(ok, n, "%d of %d streams succeeded", ok, n);
    cr_assert_eq(peak, before, "threads grew from %ld to %ld under %d streams", before, peak, n);
}

/* The value of one sample line ("name{labels} value") in a Prometheus text body, or -1. */
static double metric_value(const char *body, const char *sample)
{
    const char *p = body;
    size_t n = strlen(sample);
    while ((p = strstr(p, sample))) {
        if ((p == body || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p += n;
    }
    return -1;
}

/* server.threads = 2: two event loops, each with its own front door behind the one port. Clients
 * on separate connections are handed to the loop holding the fewest, so both loops serve about
 * half; every request is answered, and the metrics (shared by the loops) count each one once.
 * Then requests made one after another, each on a new connection, alternate between the loops
 * rather than all landing on the first. */
Test(integration, two_event_loops_share_one_port_and_one_set_of_metrics)
{
    const char *conf = th_write_config(
        9,
        "server = { listen = \"127.0.0.1:0\"; threads = 2; };\n"
        "plugins = { paths = [ \"@PLUGINS@\" ]; };\n"
        "deployments = ( { name = \"up1\"; plugin = \"openai\"; base_url = \"@MOCKLLM@/v1\";\n"
        "  models = [\"gpt-test\"]; } );\n"
        "routes = ( { name = \"one\"; candidates = [\"up1/gpt-test\"]; } );\n",
        &m1, NULL);
    th_proc d2;
    if (th_compassd_start(&d2, conf)) {
        char *log = th_log(&d2);
        cr_assert_fail("compassd did not start: %s", log);
    }
    char *log = th_log(&d2);
    cr_assert(log && strstr(log, "(2 event loops)"), "startup log: %s", log ? log : "");
    free(log);

    enum { N = 60 };
    char bodies[2][4096];
    const char *each[N];
    long codes[N];
    char *outs[N];
    snprintf(bodies[0], sizeof(bodies[0]), "%s", chat("one", "plain", 0));
    snprintf(bodies[1], sizeof(bodies[1]), "%s", chat("one", "streamed", 1));
    for (int i = 0; i < N; i++)
        each[i] = bodies[i % 2];
    /* a connection of its own each */
    th_post_all(d2.port, "/v1/chat/completions", each, N, 1, codes, outs, NULL, NULL);
    int ok = 0, done_marks = 0;
    for (int i = 0; i < N; i++) {
        if (codes[i] == 200)
            ok++;
        if (i % 2 && outs[i] && strstr(outs[i], "data: [DONE]"))
            done_marks++;
        free(outs[i]);
    }
    cr_assert_eq(ok, N, "%d of %d requests got 200", ok, N);
    cr_assert_eq(done_marks, N / 2, "%d of %d streams ended with [DONE]", done_marks, N / 2);

    th_resp r;
    th_http(d2.port, "GET", "/metrics", NULL, NULL, 0, &r);
    cr_assert_eq(r.status, 200);
    double l0 = metric_value(r.body, "compass_loop_requests_total{loop=\"0\"}");
    double l1 = metric_value(r.body, "compass_loop_requests_total{loop=\"1\"}");
    double total = metric_value(
        r.body, "compass_requests_total{provider=\"up1\",model=\"gpt-test\",status=\"200\"}");
    cr_assert(l0 >= N / 3 && l1 >= N / 3, "the loops should share the requests: %g and %g\n%s",
              l0, l1, r.body);
    cr_assert_eq(l0 + l1, N, "loops counted %g + %g, not %d", l0, l1, N);
    cr_assert_eq(total, N, "compass_requests_total %g, not %d", total, N);
    th_resp_free(&r);

    enum { SEQ = 12 };
    for (int i = 0; i < SEQ; i++) {
        th_http(d2.port, "POST", "/v1/chat/completions", chat("one", "one after another", 0),
                NULL, 0, &r);
        cr_assert_eq(r.status, 200, "sequential request %d: HTTP %ld", i, r.status);
        th_resp_free(&r);
    }
    th_http(d2.port, "GET", "/metrics", NULL, NULL, 0, &r);
    double s0 = metric_value(r.body, "compass_loop_requests_total{loop=\"0\"}") - l0;
    double s1 = metric_value(r.body, "compass_loop_requests_total{loop=\"1\"}") - l1;
    cr_assert(s0 >= SEQ / 3 && s1 >= SEQ / 3,
              "%d connections one after another went %g / %g to the loops", SEQ, s0, s1);
    th_resp_free(&r);
    cr_assert_eq(th_stop(&d2, SIGTERM, 5000), 0, "compassd did not exit cleanly");
}

/* A loop keeps the upstream URLs it sends to parsed (16 of them). With more deployments than
 * that, on one loop, every request still reaches its own deployment's URL: one after another
 * (kept URLs give way to new ones) and all at once (more URLs in use than are kept). */
Test(integration, every_request_reaches_its_deployments_url_beyond_the_kept_urls)
{
    enum { D = 20 };
    char conf[8192];
    size_t off = (size_t)snprintf(conf, sizeof(conf),
                                  "server = { listen = \"127.0.0.1:0\"; threads = 1; };\n"
                                  "plugins = { paths = [ \"@PLUGINS@\" ]; };\ndeployments = (\n");
    for (int i = 0; i < D; i++)
        off += (size_t)snprintf(conf + off, sizeof(conf) - off,
                                "  { name = \"d%d\"; plugin = \"openai\"; base_url = "
                                "\"@MOCKLLM@/p%d/v1\"; models = [\"gpt-test\"]; }%s\n",
                                i, i, i + 1 < D ? "," : "");
    off += (size_t)snprintf(conf + off, sizeof(conf) - off, ");\nroutes = (\n");
    for (int i = 0; i < D; i++)
        off += (size_t)snprintf(conf + off, sizeof(conf) - off,
                                "  { name = \"r%d\"; candidates = [\"d%d/gpt-test\"]; }%s\n", i,
                                i, i + 1 < D ? "," : "");
    snprintf(conf + off, sizeof(conf) - off, ");\n");
    th_proc d2;
    if (th_compassd_start(&d2, th_write_config(10, conf, &m1, NULL))) {
        char *log = th_log(&d2);
        cr_assert_fail("compassd did not start: %s", log);
    }
    th_resp r;
    th_http(m1.port, "POST", "/_mock/reset", "{}", NULL, 0, &r);
    th_resp_free(&r);
    char route[16], want[64];
    /* two passes over the deployments in two orders: 7 and 3 are prime to 20 */
    for (int k = 0; k < 2 * D; k++) {
        int i = (k * (k < D ? 7 : 3)) % D;
        snprintf(route, sizeof(route), "r%d", i);
        cr_assert_eq(th_http(d2.port, "POST", "/v1/chat/completions", chat(route, "hi", 0),
                             NULL, 0, &r), 0);
        cr_assert_eq(r.status, 200, "%s: HTTP %ld %s", route, r.status, r.body);
        char *prov = th_header(&r, "x-compass-provider");
        snprintf(want, sizeof(want), "d%d", i);
        cr_assert(prov && !strcmp(prov, want), "%s was served by %s", route, prov ? prov : "?");
        free(prov);
        th_resp_free(&r);
        json_object *st = th_mock_stats(&m1);
        snprintf(want, sizeof(want), "/p%d/v1/chat/completions", i);
        cr_assert_str_eq(th_json_str(st, "last_request.path"), want, "route %s", route);
        json_object_put(st);
    }
    /* all at once: each held 300 ms upstream, so all D transfers are in flight together */
    char knobs[2048];
    off = (size_t)snprintf(knobs, sizeof(knobs), "[");
    for (int i = 0; i < D; i++)
        off += (size_t)snprintf(knobs + off, sizeof(knobs) - off, "%s{\"latency_ms\":300}",
                                i ? "," : "");
    snprintf(knobs + off, sizeof(knobs) - off, "]");
    cr_assert_eq(th_mock_next(&m1, knobs), 0);
    char bodies[D][512];
    const char *each[D];
    long codes[D];
    for (int i = 0; i < D; i++) {
        snprintf(route, sizeof(route), "r%d", i);
        snprintf(bodies[i], sizeof(bodies[i]), "%s", chat(route, "together", 0));
        each[i] = bodies[i];
    }
    th_post_all(d2.port, "/v1/chat/completions", each, D, 0, codes, NULL, NULL, NULL);
    for (int i = 0; i < D; i++)
        cr_expect_eq(codes[i], 200, "r%d together: HTTP %ld", i, codes[i]);
    /* every path got its two requests one after another and its one of the batch */
    json_object *st = th_mock_stats(&m1);
    for (int i = 0; i < D; i++) {
        snprintf(want, sizeof(want), "paths./p%d/v1/chat/completions", i);
        cr_expect_eq(th_json_int(st, want), 3, "%s: %ld requests", want + 6,
                     th_json_int(st, want));
    }
    json_object_put(st);
    cr_assert_eq(th_stop(&d2, SIGTERM, 5000), 0, "compassd did not exit cleanly");
}

/* Request headers: 4 KiB of them (a long bearer token, say) are served; 16 KiB get 431 and
 * the daemon keeps serving. */
Test(integration, large_request_headers_are_served_and_oversized_ones_get_431)
{
    static char big[4200], huge[16500];
    snprintf(big, sizeof(big), "authorization: Bearer %0*d", 4000, 7);
    snprintf(huge, sizeof(huge), "x-padding: %0*d", 16384, 7);
    const char *h1[] = {big, NULL}, *h2[] = {huge, NULL};
    th_resp r;
    th_http(cd.port, "POST", "/v1/chat/completions", chat("one", "big headers", 0), h1, 0, &r);
    cr_assert_eq(r.status, 200, "4 KiB of headers: HTTP %ld: %s", r.status, r.body);
    th_resp_free(&r);
    th_http(cd.port, "POST", "/v1/chat/completions", chat("one", "huge headers", 0), h2, 0, &r);
    cr_assert_eq(r.status, 431, "16 KiB of headers: HTTP %ld", r.status);
    th_resp_free(&r);
    th_http(cd.port, "POST", "/v1/chat/completions", chat("one", "after", 0), NULL, 0, &r);
    cr_assert_eq(r.status, 200);
    th_resp_free(&r);
}

Test(integration, check_config_reports_file_and_line)
{
    const char *bad = th_write_config(3,
                                      "plugins = { paths = [ \"@PLUGINS@\" ]; };\n"
                                      "deployments = (\n"
                                      "  { name = \"a\"; plugin = \"mock\";\n"
                                      "    modles = [\"x\"]; }\n"
                                      ");\n",
                                      NULL, NULL);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s --check-config %s 2>&1", COMPASSD_BIN, bad);
    FILE *p = popen(cmd, "r");
    char out[2048] = "";
    size_t got = fread(out, 1, sizeof(out) - 1, p);
    out[got] = '\0';
    int st = pclose(p);
    cr_assert_neq(WEXITSTATUS(st), 0);
    cr_assert(strstr(out, ".conf:4: deployments[0]: unknown key 'modles' (did you mean "
                          "'models'?)"),
              "%s", out);
    snprintf(cmd, sizeof(cmd), "%s --check-config %s 2>&1", COMPASSD_BIN, conf_path);
    p = popen(cmd, "r");
    got = fread(out, 1, sizeof(out) - 1, p);
    out[got] = '\0';
    st = pclose(p);
    cr_assert_eq(WEXITSTATUS(st), 0, "%s", out);
}

Test(integration, missing_plugin_stops_start_with_a_clear_message)
{
    const char *bad = th_write_config(4,
                                      "plugins = { paths = [ \"@PLUGINS@\" ]; };\n"
                                      "deployments = ( { name = \"a\"; plugin = \"nosuch\"; "
                                      "models = [\"x\"]; } );\n",
                                      NULL, NULL);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s --config %s --listen 127.0.0.1:0 2>&1", COMPASSD_BIN, bad);
    FILE *p = popen(cmd, "r");
    char out[2048] = "";
    size_t got = fread(out, 1, sizeof(out) - 1, p);
    out[got] = '\0';
    int st = pclose(p);
    cr_assert_eq(WEXITSTATUS(st), 1);
    cr_assert(strstr(out, ".conf:2: deployment 'a': provider plugin 'nosuch' not found: no "
                          "nosuch.so in"),
              "%s", out);
}

static int b64val(char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    return ch == '+' ? 62 : ch == '/' ? 63 : -1;
}

Test(integration, embeddings_float_and_base64_through_openai_adapter)
{
    th_resp r;
    th_http(cd.port, "POST", "/v1/embeddings",
            "{\"model\":\"text-embedding-3-small\",\"input\":[\"hello\",\"world\"]}", NULL, 0,
            &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_object *o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "object"), "list");
    json_object *data = json_object_object_get(o, "data");
    cr_assert_eq(json_object_array_length(data), 2);
    json_object *v0 = json_object_object_get(json_object_array_get_idx(data, 0), "embedding");
    cr_assert_gt(json_object_array_length(v0), 0);
    double first = json_object_get_double(json_object_array_get_idx(v0, 0));
    cr_assert_gt(th_json_int(o, "usage.prompt_tokens"), 0);
    json_object_put(o);
    th_resp_free(&r);
    /* base64: little-endian float32, the same values */
    th_http(cd.port, "POST", "/v1/embeddings",
            "{\"model\":\"text-embedding-3-small\",\"input\":\"hello\","
            "\"encoding_format\":\"base64\"}",
            NULL, 0, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    o = body_json(&r);
    const char *b64 = th_json_str(o, "data.0.embedding");
    cr_assert_not_null(b64, "%s", r.body);
    /* the first 8 base64 characters hold the first 6 bytes: the first float is bytes 0..3 */
    unsigned char bytes[6];
    for (int g = 0; g < 2; g++) {
        int a = b64val(b64[4 * g]), b = b64val(b64[4 * g + 1]), c = b64val(b64[4 * g + 2]),
            d = b64val(b64[4 * g + 3]);
        bytes[3 * g] = (unsigned char)(a << 2 | b >> 4);
        bytes[3 * g + 1] = (unsigned char)(b << 4 | c >> 2);
        bytes[3 * g + 2] = (unsigned char)(c << 6 | d);
    }
    float got;
    uint32_t u = (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16 |
                 (uint32_t)bytes[3] << 24;
    memcpy(&got, &u, 4);
    cr_assert_float_eq(got, first, 1e-6, "base64 vector differs: %g vs %g", got, first);
    json_object_put(o);
    th_resp_free(&r);
    /* a deployment whose plugin has no embeddings: a clear 400 */
    th_http(cd.port, "POST", "/v1/embeddings", "{\"model\":\"mock-1\",\"input\":\"x\"}", NULL, 0,
            &r);
    cr_assert_eq(r.status, 400, "%s", r.body);
    cr_assert(strstr(r.body, "does not serve embeddings"), "%s", r.body);
    th_resp_free(&r);
    th_http(cd.port, "POST", "/v1/embeddings", "{\"model\":\"text-embedding-3-small\"}", NULL, 0,
            &r);
    cr_assert_eq(r.status, 400);
    cr_assert(strstr(r.body, "input"), "%s", r.body);
    th_resp_free(&r);
}

Test(integration, anthropic_format_front_door_routes_to_any_provider)
{
    const char *hdrs[] = {"x-api-key: unused", "anthropic-version: 2023-06-01", NULL};
    th_resp r;
    /* an Anthropic-format client reaching the OpenAI adapter */
    th_http(cd.port, "POST", "/v1/messages",
            "{\"model\":\"one\",\"max_tokens\":64,\"system\":\"be brief\","
            "\"messages\":[{\"role\":\"user\",\"content\":\"hello claude\"}]}",
            hdrs, 0, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_object *o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "type"), "message");
    cr_assert_str_eq(th_json_str(o, "role"), "assistant");
    cr_assert_str_eq(th_json_str(o, "content.0.type"), "text");
    cr_assert_str_eq(th_json_str(o, "content.0.text"), "mock reply to: hello claude");
    cr_assert_str_eq(th_json_str(o, "stop_reason"), "end_turn");
    cr_assert_gt(th_json_int(o, "usage.input_tokens"), 0);
    json_object_put(o);
    json_object *st = th_mock_stats(&m1);
    cr_assert_str_eq(th_json_str(st, "last_request.body.messages.0.role"), "system",
                     "the system prompt did not reach the upstream as a system message");
    json_object_put(st);
    th_resp_free(&r);
    /* streaming: Anthropic's event sequence */
    th_http(cd.port, "POST", "/v1/messages",
            "{\"model\":\"one\",\"max_tokens\":64,\"stream\":true,"
            "\"messages\":[{\"role\":\"user\",\"content\":\"hi there\"}]}",
            hdrs, 0, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    const char *seq[] = {"event: message_start", "event: content_block_start",
                         "event: content_block_delta", "event: content_block_stop",
                         "event: message_delta", "event: message_stop"};
    const char *at = r.body;
    for (size_t i = 0; i < sizeof(seq) / sizeof(seq[0]); i++) {
        const char *hit = strstr(at, seq[i]);
        cr_assert_not_null(hit, "missing or out of order: %s\n%s", seq[i], r.body);
        at = hit;
    }
    cr_assert_null(strstr(r.body, "chat.completion.chunk"), "OpenAI chunks leaked: %s", r.body);
    th_resp_free(&r);
    /* Anthropic's own errors */
    th_http(cd.port, "POST", "/v1/messages",
            "{\"model\":\"one\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", hdrs,
            0, &r);
    cr_assert_eq(r.status, 400);
    o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "type"), "error");
    cr_assert_str_eq(th_json_str(o, "error.type"), "invalid_request_error");
    cr_assert(strstr(th_json_str(o, "error.message"), "max_tokens"), "%s", r.body);
    json_object_put(o);
    th_resp_free(&r);
    th_http(cd.port, "POST", "/v1/messages",
            "{\"model\":\"nope\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\","
            "\"content\":\"x\"}]}",
            hdrs, 0, &r);
    cr_assert_eq(r.status, 404);
    cr_assert(strstr(r.body, "\"not_found_error\""), "%s", r.body);
    th_resp_free(&r);
}

Test(integration, explain_header_and_cli_show_the_plan)
{
    const char *hdrs[] = {"x-compass-explain: 1", NULL};
    th_resp r;
    long before;
    json_object *st = th_mock_stats(&m1);
    before = th_json_int(st, "chat");
    json_object_put(st);
    th_http(cd.port, "POST", "/v1/chat/completions", chat("two", "plan this", 0), hdrs, 0, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_object *o = body_json(&r);
    cr_assert_str_eq(th_json_str(o, "route"), "two");
    cr_assert_str_eq(th_json_str(o, "strategy"), "priority");
    cr_assert_str_eq(th_json_str(o, "order.0"), "up1/gpt-test");
    cr_assert_str_eq(th_json_str(o, "order.1"), "up2/gpt-test");
    cr_assert_str_eq(th_json_str(o, "candidates.0.breaker"), "closed");
    json_object_put(o);
    th_resp_free(&r);
    st = th_mock_stats(&m1);
    cr_assert_eq(th_json_int(st, "chat"), before, "explain called the upstream");
    json_object_put(st);
    /* the CLI */
    FILE *f = fopen("/tmp/compass-it-explain.json", "w");
    fputs(chat("mixed", "x", 0), f);
    fclose(f);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s --config %s --explain-route /tmp/compass-it-explain.json 2>&1",
             COMPASSD_BIN, conf_path);
    FILE *p = popen(cmd, "r");
    char out[8192] = "";
    size_t got = fread(out, 1, sizeof(out) - 1, p);
    out[got] = '\0';
    int rc = pclose(p);
    cr_assert_eq(WEXITSTATUS(rc), 0, "%s", out);
    cr_assert(strstr(out, "\"order\":[") || strstr(out, "\"order\":"), "%s", out);
    cr_assert(strstr(out, "local/mock-1"), "%s", out);
    cr_assert_null(strstr(out, "loaded provider plugin"), "log lines in the CLI output: %s", out);
}

Test(integration, candidates_that_cannot_serve_the_request_are_filtered)
{
    /* a route whose only candidate lacks vision: a clear 400, not an upstream error */
    static const char *CONF =
        "plugins = { paths = [ \"@PLUGINS@\" ]; };\n"
        "deployments = ( { name = \"blind\"; plugin = \"mock\"; models = [\"m\"];\n"
        "                  capabilities = [\"tools\"]; },\n"
        "                { name = \"sees\"; plugin = \"mock\"; models = [\"v\"]; } );\n"
        "routes = ( { name = \"textonly\"; candidates = [\"blind/m\"]; },\n"
        "           { name = \"both\"; candidates = [\"blind/m\", \"sees/v\"]; } );\n";
    th_proc d;
    cr_assert_eq(th_compassd_start(&d, th_write_config(6, CONF, NULL, NULL)), 0);
#define IMG_FMT                                                                               \
    "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","          \
    "\"text\":\"what is this\"},{\"type\":\"image_url\",\"image_url\":{\"url\":"                  \
    "\"https://example.invalid/cat.png\"}}]}]}"
    char body[512];
    snprintf(body, sizeof(body), IMG_FMT, "textonly");
    th_resp r;
    th_http(d.port, "POST", "/v1/chat/completions", body, NULL, 0, &r);
    cr_assert_eq(r.status, 400, "%s", r.body);
    cr_assert(strstr(r.body, "does not support images"), "%s", r.body);
    th_resp_free(&r);
    snprintf(body, sizeof(body), IMG_FMT, "both");
    th_http(d.port, "POST", "/v1/chat/completions", body, NULL, 0, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    char *prov = th_header(&r, "x-compass-provider");
    cr_assert_str_eq(prov, "sees");
    free(prov);
    th_resp_free(&r);
    th_stop(&d, SIGTERM, 5000);
}
