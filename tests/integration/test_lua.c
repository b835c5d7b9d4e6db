/* The lua router through compassd: a good policy, policies that throw, loop and hoard memory
 * (each falls back to the route's default order), SIGHUP reload of an edited policy, and
 * --explain-route. Deployments are in-process mocks with different prices and tiers. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"

#define LUA_SCRIPTS COMPASS_SOURCE_DIR "/scripts/routing"
#define LUA_TESTDATA COMPASS_SOURCE_DIR "/plugins/routers/lua/testdata"

/* Config order (the default, priority order): pricey, mid, cheap. */
#define LUA_DEPLOYMENTS                                                                       \
    "plugins = { paths = [ \"@PLUGINS@\" ]; };\n"                                             \
    "deployments = (\n"                                                                       \
    "  { name = \"pricey\"; plugin = \"mock\"; models = [\"m\"]; tier = 1;\n"                  \
    "    price_in = 10.0; price_out = 30.0; },\n"                                               \
    "  { name = \"mid\"; plugin = \"mock\"; models = [\"m\"]; tier = 2;\n"                     \
    "    price_in = 1.0; price_out = 4.0; },\n"                                                 \
    "  { name = \"cheap\"; plugin = \"mock\"; models = [\"m\"]; tier = 3;\n"                   \
    "    price_in = 0.1; price_out = 0.4; }\n"                                                  \
    ");\n"

static const char *chat_body(const char *model)
{
    static char buf[512];
    snprintf(buf, sizeof(buf),
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", model);
    return buf;
}

/* POSTs a chat to route; returns the status and the x-compass-provider (malloc'd) in *prov. */
static long lua_post(const th_proc *d, const char *route, char **prov, double *secs)
{
    th_resp r;
    th_http(d->port, "POST", "/v1/chat/completions", chat_body(route), NULL, 0, &r);
    long st = r.status;
    if (prov)
        *prov = th_header(&r, "x-compass-provider");
    if (secs)
        *secs = r.total_s;
    th_resp_free(&r);
    return st;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *start_with_policy(th_proc *d, const char *route, const char *policy)
{
    char conf[2048];
    snprintf(conf, sizeof(conf),
             LUA_DEPLOYMENTS
             "routes = ( { name = \"%s\"; strategy = \"lua\";\n"
             "  options = { policy = \"%s\"; };\n"
             "  candidates = [\"pricey/m\", \"mid/m\", \"cheap/m\"]; } );\n",
             route, policy);
    const char *path = th_write_config(7, conf, NULL, NULL);
    if (th_compassd_start(d, path)) {
        char *log = th_log(d);
        cr_assert_fail("compassd did not start: %s", log);
    }
    return strdup(path);
}

TestSuite(lua, .timeout = 60);

Test(lua, good_policy_routes_to_the_cheapest_deployment)
{
    th_proc d;
    char *conf = start_with_policy(&d, "cheapest", LUA_SCRIPTS "/cheapest_healthy.lua");
    for (int i = 0; i < 3; i++) {
        char *prov = NULL;
        cr_assert_eq(lua_post(&d, "cheapest", &prov, NULL), 200);
        cr_assert_str_eq(prov ? prov : "(none)", "cheap");
        free(prov);
    }
    th_stop(&d, SIGTERM, 5000);
    free(conf);
}

/* Each misbehaving testdata policy misbehaves when the route is named "bad". */
static void bad_policy(const char *file)
{
    char policy[512];
    snprintf(policy, sizeof(policy), "%s/%s", LUA_TESTDATA, file);
    th_proc d;
    char *conf = start_with_policy(&d, "bad", policy);
    double t0 = mono_s();
    for (int i = 0; i < 3; i++) {
        char *prov = NULL;
        long st = lua_post(&d, "bad", &prov, NULL);
        cr_assert_eq(st, 200, "%s: request %d answered %ld", file, i, st);
        cr_assert_str_eq(prov ? prov : "(none)", "pricey",
                         "%s: the fallback is the route's priority order", file);
        free(prov);
    }
    double took = mono_s() - t0;
    cr_assert_lt(took, 1.0, "%s: three requests took %.3f s", file, took);
    th_resp r;
    th_http(d.port, "GET", "/metrics", NULL, NULL, 0, &r);
    char want[128];
    snprintf(want, sizeof(want), "compass_lua_errors_total{policy=\"%s\"}", file);
    cr_assert(r.body && strstr(r.body, want), "%s not in /metrics:\n%s", want, r.body);
    th_resp_free(&r);

    /* the log names the policy's file:line */
    char *log = th_log(&d);
    char pat[128];
    snprintf(pat, sizeof(pat), "%s:", file);
    int found = 0;
    for (const char *p = log ? strstr(log, pat) : NULL; p && !found; p = strstr(p + 1, pat)) {
        const char *q = p + strlen(pat);
        found = *q >= '0' && *q <= '9';
    }
    cr_assert(found, "no %s<line> in the log:\n%s", pat, log ? log : "");
    free(log);

    /* the daemon keeps serving */
    cr_assert_eq(lua_post(&d, "bad", NULL, NULL), 200);
    th_resp h;
    th_http(d.port, "GET", "/health", NULL, NULL, 0, &h);
    cr_assert_lt(h.status, 500L, "health: %ld", h.status);
    th_resp_free(&h);
    cr_assert_eq(th_stop(&d, SIGTERM, 5000), 0, "compassd did not exit cleanly");
    free(conf);
}

Test(lua, policy_that_throws_falls_back_to_the_default_order)
{
    bad_policy("throws.lua");
}

Test(lua, policy_that_loops_is_stopped_by_its_budget)
{
    bad_policy("loops.lua");
}

Test(lua, policy_that_hoards_memory_is_stopped_by_its_cap)
{
    bad_policy("allocates.lua");
}

static void write_policy(const char *path, const char *first)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "function route(request, candidates)\n  return { \"%s\" }\nend\n", first);
    fclose(f);
}

Test(lua, sighup_reloads_an_edited_policy)
{
    char policy[128];
    snprintf(policy, sizeof(policy), "/tmp/compass-it-%d-policy.lua", (int)getpid());
    write_policy(policy, "mid/m");
    th_proc d;
    char *conf = start_with_policy(&d, "edited", policy);
    char *prov = NULL;
    cr_assert_eq(lua_post(&d, "edited", &prov, NULL), 200);
    cr_assert_str_eq(prov ? prov : "(none)", "mid");
    free(prov);

    write_policy(policy, "cheap/m");
    th_signal(&d, SIGHUP);
    int moved = 0;
    for (int i = 0; i < 100 && !moved; i++) {
        prov = NULL;
        cr_assert_eq(lua_post(&d, "edited", &prov, NULL), 200);
        moved = prov && !strcmp(prov, "cheap");
        free(prov);
        if (!moved)
            th_sleep_ms(50);
    }
    char *log = th_log(&d);
    cr_assert(moved, "requests never went to the edited policy's choice:\n%s", log ? log : "");
    free(log);
    th_stop(&d, SIGTERM, 5000);
    unlink(policy);
    free(conf);
}

Test(lua, explain_route_shows_the_policy_order)
{
    char conf[2048];
    snprintf(conf, sizeof(conf),
             LUA_DEPLOYMENTS
             "routes = ( { name = \"bysize\"; strategy = \"lua\";\n"
             "  options = { policy = \"%s\"; };\n"
             "  candidates = [\"pricey/m\", \"mid/m\", \"cheap/m\"]; } );\n",
             LUA_SCRIPTS "/cheapest_healthy.lua");
    const char *path = th_write_config(7, conf, NULL, NULL);
    char req[128];
    snprintf(req, sizeof(req), "/tmp/compass-it-%d-explain-lua.json", (int)getpid());
    FILE *f = fopen(req, "w");
    cr_assert_not_null(f);
    fputs(chat_body("bysize"), f);
    fclose(f);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s --config %s --explain-route %s 2>&1", COMPASSD_BIN, path,
             req);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char out[8192] = "";
    size_t got = fread(out, 1, sizeof(out) - 1, p);
    out[got] = '\0';
    int rc = pclose(p);
    unlink(req);
    cr_assert_eq(WEXITSTATUS(rc), 0, "%s", out);
    cr_assert(strstr(out, "lua"), "strategy not shown: %s", out);
    const char *o = strstr(out, "\"order\"");
    cr_assert_not_null(o, "%s", out);
    const char *c = strstr(o, "cheap/m"), *m = strstr(o, "mid/m"), *x = strstr(o, "pricey/m");
    cr_assert(c && m && x && c < m && m < x, "order is not cheapest first: %s", out);
}
