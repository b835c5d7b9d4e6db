/* Breakers, retry rounds and the fault matrix, through compassd and mockllm. Cooldowns are
 * shortened to hundreds of milliseconds. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <time.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static const char *CONF =
    "server = { listen = \"127.0.0.1:0\";\n"
    "  timeouts = { connect_ms = 1000; first_byte_ms = 800; idle_ms = 800; total_ms = 10000; };\n"
    "  breaker = { consecutive_failures = 5; cooldowns_ms = [400, 1200]; half_open_successes = 3;\n"
    "              min_volume = 1000; };\n"
    "};\n"
    "plugins = { paths = [ \"@PLUGINS@\" ]; };\n"
    "deployments = (\n"
    "  { name = \"up1\"; plugin = \"openai\"; base_url = \"@MOCKLLM@/v1\"; models = [\"m\"]; },\n"
    "  { name = \"up2\"; plugin = \"openai\"; base_url = \"@MOCKLLM2@/v1\"; models = [\"m\"]; },\n"
    "  { name = \"dead\"; plugin = \"openai\"; base_url = \"http://127.0.0.1:9/v1\"; models = [\"m\"]; },\n"
    "  { name = \"local\"; plugin = \"mock\"; models = [\"mock-1\"]; }\n"
    ");\n"
    "routes = (\n"
    "  { name = \"guarded\"; candidates = [\"up1/m\", \"local/mock-1\"]; },\n"
    "  { name = \"matrix\"; candidates = [\"up1/m\", \"up2/m\"]; },\n"
    "  { name = \"retry\"; candidates = [\"up1/m\"]; retries = 2; backoff_ms = 50;\n"
    "    backoff_max_ms = 3000; },\n"
    "  { name = \"deadline\"; candidates = [\"up1/m\"]; retries = 5; backoff_ms = 400;\n"
    "    deadline_ms = 700; },\n"
    "  { name = \"deadfirst\"; candidates = [\"dead/m\", \"up2/m\"]; }\n"
    ");\n";

static th_proc m1, m2, cd;

static void up(void)
{
    cr_assert_eq(th_mockllm_start(&m1), 0);
    cr_assert_eq(th_mockllm_start(&m2), 0);
    const char *conf = th_write_config(1, CONF, &m1, &m2);
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

TestSuite(resilience, .init = up, .fini = down, .timeout = 60);

static long post(const char *route, th_resp *r)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", route);
    th_http(cd.port, "POST", "/v1/chat/completions", body, NULL, 0, r);
    return r->status;
}

static long chats(const th_proc *m)
{
    json_object *st = th_mock_stats(m);
    long n = th_json_int(st, "chat");
    json_object_put(st);
    return n;
}

static char *breaker_of(const char *dep)
{
    th_resp r;
    th_http(cd.port, "GET", "/api/v1/providers", NULL, NULL, 0, &r);
    json_object *o = json_tokener_parse(r.body);
    th_resp_free(&r);
    json_object *ps = json_object_object_get(o, "providers");
    char *out = NULL;
    for (size_t i = 0; ps && i < json_object_array_length(ps); i++) {
        json_object *p = json_object_array_get_idx(ps, i);
        if (!strcmp(th_json_str(p, "name"), dep))
            out = strdup(th_json_str(p, "models.0.breaker"));
    }
    json_object_put(o);
    return out ? out : strdup("?");
}

Test(resilience, breaker_opens_after_five_failures_half_opens_closes_and_backs_off_longer)
{
    th_resp r;
    /* five consecutive failures: each request still succeeds on the next candidate */
    cr_assert_eq(th_mock_next(&m1, "[{\"status\":500},{\"status\":500},{\"status\":502},"
                                   "{\"status\":503},{\"status\":500}]"),
                 0);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(post("guarded", &r), 200, "request %d: %s", i, r.body);
        th_resp_free(&r);
    }
    char *st = breaker_of("up1");
    cr_assert_str_eq(st, "open");
    free(st);
    long before = chats(&m1);
    cr_assert_eq(post("guarded", &r), 200);
    char *prov = th_header(&r, "x-compass-provider"), *att = th_header(&r, "x-compass-attempts");
    cr_assert_str_eq(prov, "local");
    cr_assert_str_eq(att, "1", "an open breaker must not cost an attempt");
    free(prov), free(att);
    th_resp_free(&r);
    cr_assert_eq(chats(&m1), before, "traffic reached a deployment whose breaker is open");
    th_http(cd.port, "GET", "/metrics", NULL, NULL, 0, &r);
    cr_assert(strstr(r.body, "compass_circuit_breaker_state{provider=\"up1\",model=\"m\"} 1\n"),
              "%s", r.body);
    th_resp_free(&r);

    /* after the cooldown (400 ms): half-open; three successful probes close it */
    th_sleep_ms(450);
    st = breaker_of("up1");
    cr_assert_str_eq(st, "half_open");
    free(st);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(post("guarded", &r), 200);
        prov = th_header(&r, "x-compass-provider");
        cr_assert_str_eq(prov, "up1", "probe %d did not go to the half-open deployment", i);
        free(prov);
        th_resp_free(&r);
    }
    st = breaker_of("up1");
    cr_assert_str_eq(st, "closed");
    free(st);

    /* it opens again: the cooldown grows to 1200 ms */
    cr_assert_eq(th_mock_next(&m1, "[{\"status\":500},{\"status\":500},{\"status\":500},"
                                   "{\"status\":500},{\"status\":500}]"),
                 0);
    for (int i = 0; i < 5; i++) {
        post("guarded", &r);
        th_resp_free(&r);
    }
    th_sleep_ms(600);
    st = breaker_of("up1");
    cr_assert_str_eq(st, "open", "the second cooldown did not grow");
    free(st);
    th_sleep_ms(700);
    st = breaker_of("up1");
    cr_assert_str_eq(st, "half_open");
    free(st);
    /* a failing probe re-opens it */
    cr_assert_eq(th_mock_next(&m1, "{\"status\":500}"), 0);
    cr_assert_eq(post("guarded", &r), 200);
    th_resp_free(&r);
    st = breaker_of("up1");
    cr_assert_str_eq(st, "open");
    free(st);
}

Test(resilience, fault_matrix_each_request_succeeds_on_another_candidate)
{
    const char *faults[] = {
        "{\"status\":500}", "{\"status\":529}", "{\"status\":429,\"retry_after\":1}",
        "{\"malformed\":true}", "{\"hang\":true}", "{\"truncate\":true}",
        "{\"body\":\"<html>502 Bad Gateway</html>\"}",
    };
    for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
        cr_assert_eq(th_mock_next(&m1, faults[i]), 0);
        th_resp r;
        cr_assert_eq(post("matrix", &r), 200, "fault %s: %ld %s", faults[i], r.status, r.body);
        char *prov = th_header(&r, "x-compass-provider");
        cr_assert_str_eq(prov, "up2", "fault %s", faults[i]);
        free(prov);
        th_resp_free(&r);
    }
    /* connect refused */
    th_resp r;
    cr_assert_eq(post("deadfirst", &r), 200, "%s", r.body);
    th_resp_free(&r);
}

Test(resilience, retry_rounds_back_off_and_honour_retry_after)
{
    th_resp r;
    cr_assert_eq(th_mock_next(&m1, "[{\"status\":503},{\"status\":503}]"), 0);
    cr_assert_eq(post("retry", &r), 200, "%s", r.body);
    char *att = th_header(&r, "x-compass-attempts");
    cr_assert_str_eq(att, "3");
    free(att);
    th_resp_free(&r);
    cr_assert_eq(th_mock_next(&m1, "{\"status\":429,\"retry_after\":1}"), 0);
    cr_assert_eq(post("retry", &r), 200, "%s", r.body);
    cr_assert(r.total_s >= 0.95, "Retry-After 1 s not honoured: answered after %.3f s",
              r.total_s);
    th_resp_free(&r);
    /* rounds exhausted: the client sees the failure */
    cr_assert_eq(th_mock_next(&m1, "[{\"status\":503},{\"status\":503},{\"status\":503}]"), 0);
    cr_assert_eq(post("retry", &r), 503, "%s", r.body);
    th_resp_free(&r);
}

Test(resilience, route_deadline_stops_retry_rounds)
{
    th_resp r;
    cr_assert_eq(th_mock_next(&m1, "[{\"status\":503},{\"status\":503},{\"status\":503},"
                                   "{\"status\":503},{\"status\":503},{\"status\":503}]"),
                 0);
    post("deadline", &r);
    cr_assert_neq(r.status, 200);
    cr_assert(r.total_s < 1.5, "deadline 700 ms not kept: %.3f s", r.total_s);
    th_resp_free(&r);
}

/* Ten seconds of load over three deployments, one failing 30% of its requests: no error may
 * reach a client, and the flaky deployment's breaker opens. */
Test(resilience, flaky_deployment_under_load_never_reaches_clients, .timeout = 90)
{
    static const char *LOAD =
        "server = { listen = \"127.0.0.1:0\"; log_requests = false;\n"
        "  breaker = { failure_rate = 0.2; min_volume = 20; window_ms = 60000;\n"
        "              cooldowns_ms = [60000]; };\n"
        "};\n"
        "plugins = { paths = [ \"@PLUGINS@\" ]; };\n"
        "deployments = (\n"
        "  { name = \"flaky\"; plugin = \"mock\"; models = [\"m\"]; options = { fail_rate = 0.3; }; },\n"
        "  { name = \"a\"; plugin = \"mock\"; models = [\"m\"]; },\n"
        "  { name = \"b\"; plugin = \"mock\"; models = [\"m\"]; }\n"
        ");\n"
        "routes = ( { name = \"spread\"; strategy = \"round_robin\";\n"
        "             candidates = [\"flaky/m\", \"a/m\", \"b/m\"]; } );\n";
    th_proc d;
    const char *conf = th_write_config(5, LOAD, NULL, NULL);
    cr_assert_eq(th_compassd_start(&d, conf), 0);
    CURLM *multi = curl_multi_init();
    enum { N = 16 };
    CURL *hs[N];
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", d.port);
    struct curl_slist *sl = curl_slist_append(NULL, "Content-Type: application/json");
    FILE *devnull = fopen("/dev/null", "w");
    long ok = 0, bad = 0;
    char body[256];
    int seq = 0;
    for (int i = 0; i < N; i++) {
        hs[i] = curl_easy_init();
        curl_easy_setopt(hs[i], CURLOPT_URL, url);
        curl_easy_setopt(hs[i], CURLOPT_HTTPHEADER, sl);
        curl_easy_setopt(hs[i], CURLOPT_WRITEDATA, devnull);
        curl_easy_setopt(hs[i], CURLOPT_TIMEOUT_MS, 10000L);
        curl_easy_setopt(hs[i], CURLOPT_COPYPOSTFIELDS, "");
    }
    uint64_t t0 = (uint64_t)time(NULL);
    for (int i = 0; i < N; i++) {
        snprintf(body, sizeof(body), "{\"model\":\"spread\",\"messages\":[{\"role\":\"user\","
                 "\"content\":\"request %d\"}]}", seq++);
        curl_easy_setopt(hs[i], CURLOPT_COPYPOSTFIELDS, body);
        curl_multi_add_handle(multi, hs[i]);
    }
    int running = 1;
    while (running) {
        curl_multi_perform(multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            long code = 0;
            curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &code);
            if (m->data.result == CURLE_OK && code == 200)
                ok++;
            else
                bad++;
            curl_multi_remove_handle(multi, m->easy_handle);
            if ((uint64_t)time(NULL) - t0 < 10) {
                snprintf(body, sizeof(body), "{\"model\":\"spread\",\"messages\":[{\"role\":"
                         "\"user\",\"content\":\"request %d\"}]}", seq++);
                curl_easy_setopt(m->easy_handle, CURLOPT_COPYPOSTFIELDS, body);
                curl_multi_add_handle(multi, m->easy_handle);
                running = 1;
            }
        }
        curl_multi_poll(multi, NULL, 0, 20, NULL);
    }
    for (int i = 0; i < N; i++)
        curl_easy_cleanup(hs[i]);
    curl_multi_cleanup(multi);
    curl_slist_free_all(sl);
    fclose(devnull);
    th_resp r;
    th_http(d.port, "GET", "/metrics", NULL, NULL, 0, &r);
    int opened = strstr(r.body, "compass_circuit_breaker_state{provider=\"flaky\",model=\"m\"} 1")
                 != NULL;
    char *metrics = strdup(r.body);
    th_resp_free(&r);
    th_stop(&d, SIGTERM, 5000);
    cr_assert_gt(ok, 1000, "only %ld requests in 10 s", ok);
    cr_assert_eq(bad, 0, "%ld of %ld requests reached the client as errors", bad, ok + bad);
    cr_assert(opened, "the flaky deployment's breaker did not open:\n%s", metrics);
    free(metrics);
}

/* Hedging: the first candidate is slow to its first byte; after the hedge delay the next one
 * starts too, the first to answer wins and the slow transfer is cancelled. */
Test(resilience, hedged_request_takes_the_fast_candidate_and_cancels_the_slow_one)
{
    static const char *HEDGE =
        "server = { listen = \"127.0.0.1:0\"; };\n"
        "plugins = { paths = [ \"@PLUGINS@\" ]; };\n"
        "deployments = (\n"
        "  { name = \"slow\"; plugin = \"openai\"; base_url = \"@MOCKLLM@/v1\"; models = [\"m\"]; },\n"
        "  { name = \"fast\"; plugin = \"openai\"; base_url = \"@MOCKLLM2@/v1\"; models = [\"m\"]; }\n"
        ");\n"
        "routes = ( { name = \"hedged\"; candidates = [\"slow/m\", \"fast/m\"]; hedge = 150; },\n"
        "           { name = \"plain\"; candidates = [\"slow/m\", \"fast/m\"]; } );\n";
    th_proc d;
    cr_assert_eq(th_compassd_start(&d, th_write_config(7, HEDGE, &m1, &m2)), 0);
    th_resp r;
    char body[256];
    /* non-streaming */
    cr_assert_eq(th_mock_next(&m1, "{\"latency_ms\":3000}"), 0);
    snprintf(body, sizeof(body), "{\"model\":\"hedged\",\"messages\":[{\"role\":\"user\","
             "\"content\":\"quick\"}]}");
    th_http(d.port, "POST", "/v1/chat/completions", body, NULL, 0, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(r.total_s < 1.5, "hedge did not help: %.3f s", r.total_s);
    char *prov = th_header(&r, "x-compass-provider");
    cr_assert_str_eq(prov, "fast");
    free(prov);
    th_resp_free(&r);
    long in_flight = -1;
    for (int i = 0; i < 30 && in_flight != 0; i++) {
        th_sleep_ms(100);
        json_object *st = th_mock_stats(&m1);
        in_flight = th_json_int(st, "in_flight");
        json_object_put(st);
    }
    cr_assert_eq(in_flight, 0, "the slow transfer was not cancelled");
    /* streaming: time to first token is the fast candidate's */
    cr_assert_eq(th_mock_next(&m1, "{\"latency_ms\":3000}"), 0);
    snprintf(body, sizeof(body), "{\"model\":\"hedged\",\"stream\":true,\"messages\":"
             "[{\"role\":\"user\",\"content\":\"quick stream\"}]}");
    th_http(d.port, "POST", "/v1/chat/completions", body, NULL, 0, &r);
    cr_assert_eq(r.status, 200);
    cr_assert(r.total_s < 1.5, "streamed hedge did not help: %.3f s", r.total_s);
    cr_assert(strstr(r.body, "mock reply to: quick stream") || strstr(r.body, "stream"),
              "%s", r.body);
    cr_assert(strstr(r.body, "data: [DONE]"), "%s", r.body);
    th_resp_free(&r);
    /* without hedging the same request waits for the slow one */
    cr_assert_eq(th_mock_next(&m1, "{\"latency_ms\":1200}"), 0);
    snprintf(body, sizeof(body), "{\"model\":\"plain\",\"messages\":[{\"role\":\"user\","
             "\"content\":\"slow\"}]}");
    th_http(d.port, "POST", "/v1/chat/completions", body, NULL, 0, &r);
    cr_assert_eq(r.status, 200);
    cr_assert(r.total_s >= 1.1, "%.3f s", r.total_s);
    th_resp_free(&r);
    th_http(d.port, "GET", "/metrics", NULL, NULL, 0, &r);
    cr_assert(strstr(r.body, "compass_hedges_total{route=\"hedged\",winner=\"hedge\"} 2"), "%s",
              r.body);
    th_resp_free(&r);
    th_stop(&d, SIGTERM, 5000);
}

/* Active health checks: a deployment is probed on its own, and a dead one's breaker opens
 * before any client request meets it. */
Test(resilience, health_checks_probe_and_open_the_breaker_without_client_traffic)
{
    static const char *CHECKS =
        "server = { listen = \"127.0.0.1:0\";\n"
        "  breaker = { consecutive_failures = 3; cooldowns_ms = [60000]; }; };\n"
        "plugins = { paths = [ \"@PLUGINS@\" ]; };\n"
        "deployments = (\n"
        "  { name = \"watched\"; plugin = \"openai\"; base_url = \"@MOCKLLM@/v1\"; models = [\"m\"];\n"
        "    health_check_ms = 150; }\n"
        ");\n";
    th_proc d;
    cr_assert_eq(th_compassd_start(&d, th_write_config(8, CHECKS, &m1, NULL)), 0);
    long chats = 0;
    for (int i = 0; i < 30 && chats < 3; i++) {
        th_sleep_ms(100);
        json_object *st = th_mock_stats(&m1);
        chats = th_json_int(st, "chat");
        if (chats >= 1)
            cr_assert_str_eq(th_json_str(st, "last_request.body.messages.0.content"), "ping");
        json_object_put(st);
    }
    cr_assert_geq(chats, 3, "no health checks reached the upstream (%ld)", chats);
    /* the upstream starts failing: three failed checks open the breaker */
    cr_assert_eq(th_mock_next(&m1, "[{\"status\":500},{\"status\":500},{\"status\":500},"
                                   "{\"status\":500},{\"status\":500}]"),
                 0);
    int open = 0;
    for (int i = 0; i < 40 && !open; i++) {
        th_sleep_ms(100);
        th_resp r;
        th_http(d.port, "GET", "/api/v1/providers", NULL, NULL, 0, &r);
        open = strstr(r.body, "\"breaker\":\"open\"") != NULL;
        th_resp_free(&r);
    }
    cr_assert(open, "health checks did not open the breaker");
    th_resp r;
    th_http(d.port, "GET", "/metrics", NULL, NULL, 0, &r);
    cr_assert(strstr(r.body, "compass_health_checks_total{provider=\"watched\",model=\"m\","
                             "result=\"failed\"}"),
              "%s", r.body);
    th_resp_free(&r);
    th_stop(&d, SIGTERM, 5000);
}
