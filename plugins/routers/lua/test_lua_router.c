/*
 * Tests of the lua router plugin on the fake host: the example policies in scripts/routing
 * rank as their comments say; bad policies (throwing, looping, allocating, nonsense answers,
 * forbidden globals, bytecode, syntax errors) fail with the exact error class, are counted
 * and logged, and leave the instance usable; nothing a call writes reaches the next call;
 * rank is safe from several threads.
 */
#include <criterion/criterion.h>

#include <compass_fakehost.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ROUTING COMPASS_SOURCE_DIR "/scripts/routing/"
#define TESTDATA COMPASS_SOURCE_DIR "/plugins/routers/lua/testdata/"

/* Mondays to Saturdays in November 2026, UTC. */
#define MON_10H 1795428000000LL
#define MON_20H 1795464000000LL
#define SAT_10H 1795860000000LL
#define FRI_17H59 1795802340000LL
#define FRI_18H 1795802400000LL

static compass_fakehost *fh;
static const compass_plugin_desc *desc;

static void setup(void)
{
    setenv("TZ", "UTC", 1);
    tzset();
    compass_err err = {0, ""};
    fh = compass_fakehost_new("lua");
    cr_assert_not_null(fh);
    desc = compass_fakehost_load(fh, COMPASS_PLUGIN_DIR "/lua.so", &err);
    cr_assert_not_null(desc, "load: %s", err.msg);
    cr_assert_eq(desc->kind, COMPASS_PLUGIN_ROUTER);
}

static void teardown(void)
{
    compass_fakehost_free(fh);
}

TestSuite(lua, .init = setup, .fini = teardown, .timeout = 120);

/* An instance over policy with up to two more "name=value" options; NULL + err on failure. */
static void *inst_err(const char *policy, const char *o1, const char *o2, compass_err *err)
{
    char popt[512];
    snprintf(popt, sizeof(popt), "policy=%s", policy);
    const char *opts[4] = {popt, o1, o1 ? o2 : NULL, NULL};
    return compass_fakehost_instance(fh, "test-route", NULL, NULL, opts, err);
}

static void *inst(const char *policy, const char *o1, const char *o2)
{
    compass_err err = {0, ""};
    void *i = inst_err(policy, o1, o2, &err);
    cr_assert_not_null(i, "instance of %s: %s", policy, err.msg);
    return i;
}

/* Candidates: a mix of price, tier, health and capability. */
static compass_candidate cand(const char *id, int tier, double pin, double pout, double lat,
                              double erate, int breaker, unsigned caps, int64_t ctx)
{
    compass_candidate c;
    memset(&c, 0, sizeof(c));
    c.size = sizeof(c);
    c.id = compass_str_c(id);
    const char *slash = strchr(id, '/');
    c.provider.ptr = id;
    c.provider.len = slash ? (size_t)(slash - id) : strlen(id);
    c.model = compass_str_c(slash ? slash + 1 : id);
    c.tier = tier;
    c.weight = 1;
    c.price_in = pin;
    c.price_out = pout;
    c.latency_ewma_ms = lat;
    c.ttft_ewma_ms = lat / 4;
    c.error_rate = erate;
    c.breaker = breaker;
    c.caps = caps;
    c.context_window = ctx;
    return c;
}

#define ALLCAPS (COMPASS_CAP_TOOLS | COMPASS_CAP_VISION | COMPASS_CAP_JSON)

/* Six candidates used by most tests (positions 0..5). */
static size_t std_cands(compass_candidate *c)
{
    c[0] = cand("openai/gpt-4o", 1, 2.5, 10, 900, 0.01, COMPASS_BREAKER_CLOSED, ALLCAPS, 128000);
    c[1] = cand("anthropic/sonnet", 1, 3, 15, 700, 0.02, COMPASS_BREAKER_CLOSED, ALLCAPS, 200000);
    c[2] = cand("groq/llama-8b", 3, 0.05, 0.08, 200, 0.00, COMPASS_BREAKER_CLOSED,
                COMPASS_CAP_JSON, 8192);
    c[3] = cand("openai/gpt-4o-mini", 2, 0.15, 0.6, 400, 0.03, COMPASS_BREAKER_CLOSED, ALLCAPS,
                128000);
    c[4] = cand("broken/cheap", 3, 0.01, 0.01, 100, 0.50, COMPASS_BREAKER_OPEN, ALLCAPS, 8192);
    c[5] = cand("flaky/cheap", 3, 0.02, 0.02, 150, 0.20, COMPASS_BREAKER_CLOSED, ALLCAPS, 8192);
    return 6;
}

static compass_route_request req(const char *route, int64_t tokens, const char *key,
                                 int64_t now_ms)
{
    compass_route_request r;
    memset(&r, 0, sizeof(r));
    r.size = sizeof(r);
    r.route = compass_str_c(route);
    r.n_messages = 2;
    r.n_chars = (size_t)tokens * 4;
    r.est_prompt_tokens = tokens;
    r.key_id = compass_str_c(key);
    r.now_ms = now_ms;
    return r;
}

/* The host passes candidates as an array of pointers. */
static int rank_cap(void *i, const compass_route_request *rr, const compass_candidate *c,
                    size_t n, size_t *order, size_t *n_order, compass_err *err)
{
    const compass_candidate *ptrs[256];
    cr_assert(n <= 256);
    for (size_t k = 0; k < n; k++)
        ptrs[k] = &c[k];
    err->code = 0;
    err->msg[0] = '\0';
    return desc->ops.router->rank(i, NULL, rr, ptrs, n, order, n_order, err);
}

static int rank(void *i, const compass_route_request *rr, const compass_candidate *c, size_t n,
                size_t *order, size_t *n_order, compass_err *err)
{
    *n_order = n;
    return rank_cap(i, rr, c, n, order, n_order, err);
}

/* Ranks and asserts success; returns the count. */
static size_t rank_ok(void *i, const compass_route_request *rr, const compass_candidate *c,
                      size_t n, size_t *order)
{
    size_t no;
    compass_err err;
    int rc = rank(i, rr, c, n, order, &no, &err);
    cr_assert_eq(rc, COMPASS_OK, "rank: %d %s", rc, err.msg);
    return no;
}

static int count_of(const char *hay, const char *needle)
{
    int k = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        k++;
    return k;
}

/* Asserts one failing call with message msg (exact), counted once more for policy file. */
static void expect_fail(void *i, const char *route, const char *file, const char *msg)
{
    compass_candidate c[8];
    size_t n = std_cands(c), order[8], no = 99;
    compass_route_request rr = req(route, 100, "key-1", MON_10H);
    char metric[256];
    snprintf(metric, sizeof(metric), "METRIC compass_lua_errors_total{policy=\"%s\"} 1", file);
    int before = count_of(compass_fakehost_log(fh), metric);
    compass_err err;
    int rc = rank(i, &rr, c, n, order, &no, &err);
    cr_assert_eq(rc, COMPASS_EPLUGIN, "route %s: rc %d", route, rc);
    cr_assert_eq(err.code, COMPASS_EPLUGIN);
    cr_assert_str_eq(err.msg, msg, "route %s: got \"%s\"", route, err.msg);
    cr_assert_eq(no, 0);
    const char *log = compass_fakehost_log(fh);
    cr_assert_eq(count_of(log, metric), before + 1, "metric not counted: %s", log);
    char warn[600];
    snprintf(warn, sizeof(warn), "WARN lua policy failed, route falls back to its default: %s",
             msg);
    cr_assert(strstr(log, warn), "no warning \"%s\" in: %s", warn, log);
    /* The very next call on the same instance works. */
    rr = req("ok", 100, "key-1", MON_10H);
    cr_assert_eq(rank_ok(i, &rr, c, n, order), n);
    for (size_t k = 0; k < n; k++)
        cr_assert_eq(order[k], k);
}

/* ---------------------------------------------------------------------------------------- */
/* Example policies                                                                          */
/* ---------------------------------------------------------------------------------------- */

Test(lua, cheapest_healthy_ranks_healthy_by_price)
{
    void *i = inst(ROUTING "cheapest_healthy.lua", NULL, NULL);
    compass_candidate c[8];
    size_t n = std_cands(c), order[8];
    compass_route_request rr = req("cheap", 1000, "k", MON_10H);
    size_t no = rank_ok(i, &rr, c, n, order);
    /* broken (open breaker) and flaky (20% errors) are left out. */
    cr_assert_eq(no, 4);
    cr_assert_eq(order[0], 2); /* groq 0.05/0.08 */
    cr_assert_eq(order[1], 3); /* mini */
    cr_assert_eq(order[2], 0); /* gpt-4o */
    cr_assert_eq(order[3], 1); /* sonnet */

    /* With tools, groq (no tool support) drops out. */
    rr.has_tools = 1;
    no = rank_ok(i, &rr, c, n, order);
    cr_assert_eq(no, 3);
    cr_assert_eq(order[0], 3);
}

Test(lua, cheapest_healthy_weighs_prompt_tokens_against_output)
{
    void *i = inst(ROUTING "cheapest_healthy.lua", NULL, NULL);
    compass_candidate c[2];
    /* a: cheap input, dear output; b: the reverse. */
    c[0] = cand("a/in", 2, 0.1, 20, 100, 0, COMPASS_BREAKER_CLOSED, ALLCAPS, 0);
    c[1] = cand("b/out", 2, 5, 1, 100, 0, COMPASS_BREAKER_CLOSED, ALLCAPS, 0);
    size_t order[2];
    compass_route_request rr = req("cheap", 100, "k", MON_10H); /* output dominates */
    rank_ok(i, &rr, c, 2, order);
    cr_assert_eq(order[0], 1);
    rr = req("cheap", 100000, "k", MON_10H); /* input dominates */
    rank_ok(i, &rr, c, 2, order);
    cr_assert_eq(order[0], 0);
}

Test(lua, cheapest_healthy_with_nothing_healthy_ranks_all)
{
    void *i = inst(ROUTING "cheapest_healthy.lua", NULL, NULL);
    compass_candidate c[3];
    c[0] = cand("a/x", 1, 3, 3, 100, 0.5, COMPASS_BREAKER_OPEN, ALLCAPS, 0);
    c[1] = cand("b/x", 1, 1, 1, 100, 0.5, COMPASS_BREAKER_HALF_OPEN, ALLCAPS, 0);
    c[2] = cand("c/x", 1, 2, 2, 100, 0.5, COMPASS_BREAKER_CLOSED, ALLCAPS, 0);
    size_t order[3];
    compass_route_request rr = req("cheap", 10, "k", MON_10H);
    cr_assert_eq(rank_ok(i, &rr, c, 3, order), 3);
    cr_assert_eq(order[0], 1);
    cr_assert_eq(order[1], 2);
    cr_assert_eq(order[2], 0);
}

Test(lua, tier_by_size_picks_tier_from_prompt_size)
{
    void *i = inst(ROUTING "tier_by_size.lua", NULL, NULL);
    compass_candidate c[8];
    size_t n = std_cands(c), order[8];
    compass_route_request rr = req("auto", 200, "k", MON_10H);
    size_t no = rank_ok(i, &rr, c, n, order);
    cr_assert_eq(no, 6);
    cr_assert_eq(c[order[0]].tier, 3);
    cr_assert_eq(order[0], 4); /* tier 3, lowest latency (100 ms) */
    cr_assert_eq(order[1], 5);
    cr_assert_eq(order[2], 2);
    cr_assert_eq(order[3], 3); /* then tier 2 */

    rr = req("auto", 20000, "k", MON_10H); /* big: tier 1, and 8k windows drop out */
    no = rank_ok(i, &rr, c, n, order);
    cr_assert_eq(no, 3);
    cr_assert_eq(order[0], 1); /* sonnet 700 ms before gpt-4o 900 ms */
    cr_assert_eq(order[1], 0);
    cr_assert_eq(order[2], 3);

    rr = req("auto", 3000, "k", MON_10H); /* medium: tier 2, then 1, then 3 */
    no = rank_ok(i, &rr, c, n, order);
    cr_assert_eq(no, 6);
    cr_assert_eq(order[0], 3);
    cr_assert_eq(c[order[1]].tier, 1);
    cr_assert_eq(c[order[2]].tier, 1);
    cr_assert_eq(c[order[3]].tier, 3);
}

Test(lua, ab_split_is_deterministic_and_near_ninety_ten)
{
    void *i = inst(ROUTING "ab_split.lua", NULL, NULL);
    compass_candidate c[8];
    size_t n = std_cands(c), order[8];
    int b = 0;
    for (int k = 0; k < 2000; k++) {
        char key[32];
        snprintf(key, sizeof(key), "key-%d", k);
        compass_route_request rr = req("ab", 10, key, MON_10H);
        cr_assert_eq(rank_ok(i, &rr, c, n, order), n);
        size_t first = order[0];
        cr_assert(first == 0 || first == 1);
        cr_assert_eq(order[1], 1 - first);
        for (size_t j = 2; j < n; j++)
            cr_assert_eq(order[j], j);
        b += first == 1;
        rank_ok(i, &rr, c, n, order); /* same key, same arm */
        cr_assert_eq(order[0], first);
    }
    cr_assert(b > 140 && b < 260, "challenger got %d of 2000", b);

    compass_route_request rr = req("ab", 10, "", MON_10H); /* no key: control */
    rank_ok(i, &rr, c, n, order);
    cr_assert_eq(order[0], 0);

    compass_header md = {compass_str_c("ab_arm"), compass_str_c("b")};
    rr.metadata = &md;
    rr.n_metadata = 1;
    rank_ok(i, &rr, c, n, order);
    cr_assert_eq(order[0], 1);
}

Test(lua, office_hours_premium_by_day_cheap_otherwise)
{
    void *i = inst(ROUTING "office_hours.lua", NULL, NULL);
    compass_candidate c[8];
    size_t n = std_cands(c), order[8];
    compass_route_request rr = req("auto", 10, "k", MON_10H);
    rank_ok(i, &rr, c, n, order);
    cr_assert_eq(order[0], 1); /* tier 1, 700 ms */
    cr_assert_eq(order[1], 0); /* tier 1, 900 ms */
    cr_assert_eq(order[2], 3); /* tier 2 */

    int64_t cheap_times[] = {MON_20H, SAT_10H, FRI_18H};
    for (size_t k = 0; k < 3; k++) {
        rr = req("auto", 10, "k", cheap_times[k]);
        rank_ok(i, &rr, c, n, order);
        cr_assert_eq(order[0], 4, "time %lld", (long long)cheap_times[k]); /* 0.01 + 0.01 */
        cr_assert_eq(order[1], 5);
        cr_assert_eq(order[2], 2);
        cr_assert_eq(order[5], 1);
    }
    rr = req("auto", 10, "k", FRI_17H59);
    rank_ok(i, &rr, c, n, order);
    cr_assert_eq(order[0], 1);
}

Test(lua, readme_tutorial_policy_works)
{
    void *i = inst(TESTDATA "tutorial.lua", NULL, NULL);
    compass_candidate c[8];
    size_t n = std_cands(c), order[8];
    compass_route_request rr = req("auto", 10000, "k", MON_10H);
    rr.has_tools = 1;
    /* open breaker, no tools (groq) and 8k windows drop out; fastest first */
    cr_assert_eq(rank_ok(i, &rr, c, n, order), 3);
    cr_assert_eq(order[0], 3);
    cr_assert_eq(order[1], 1);
    cr_assert_eq(order[2], 0);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

Test(lua, reload_is_a_new_instance_and_a_bad_file_keeps_the_old)
{
    char path[] = "/tmp/compass-lua-reload-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    write_file(path, "#!/usr/bin/env lua\nfunction route(r, c) return { 1 } end\n");
    void *old = inst(path, NULL, NULL);
    write_file(path, "function route(r, c) return { 2 } end\n");
    void *fresh = inst(path, NULL, NULL);
    compass_candidate c[8];
    size_t n = std_cands(c), order[8];
    compass_route_request rr = req("x", 10, "k", MON_10H);
    rank_ok(old, &rr, c, n, order);
    cr_assert_eq(order[0], 0); /* the old instance keeps the text it read */
    rank_ok(fresh, &rr, c, n, order);
    cr_assert_eq(order[0], 1);
    write_file(path, "function route(r, c)\n  return { 3 }\nen\n");
    compass_err err = {0, ""};
    cr_assert_null(inst_err(path, NULL, NULL, &err));
    const char *base = strrchr(path, '/') + 1;
    char want[128];
    snprintf(want, sizeof(want), "%s:3: ", base);
    cr_assert(strncmp(err.msg, want, strlen(want)) == 0, "%s", err.msg);
    rank_ok(fresh, &rr, c, n, order); /* still serving */
    cr_assert_eq(order[0], 1);
    unlink(path);
}

/* The request and candidates fields.lua checks (every request field, every field of
 * std_cands' fifth candidate); rr points at md for its metadata. The candidate count. */
static size_t fields_case(compass_candidate *c, compass_route_request *rr, compass_header md[2])
{
    size_t n = std_cands(c);
    c[4].in_flight = 3;
    c[4].capacity = 10;
    c[2].breaker = COMPASS_BREAKER_HALF_OPEN;
    *rr = req("fields", 500, "key-7", MON_10H);
    rr->has_tools = 1;
    rr->stream = 1;
    md[0] = (compass_header){compass_str_c("team"), compass_str_c("search")};
    md[1] = (compass_header){compass_str_c("tier"), compass_str_c("gold")};
    rr->metadata = md;
    rr->n_metadata = 2;
    return n;
}

Test(lua, policy_sees_every_request_and_candidate_field)
{
    void *i = inst(TESTDATA "fields.lua", NULL, NULL);
    compass_candidate c[8];
    compass_route_request rr;
    compass_header md[2];
    size_t n = fields_case(c, &rr, md), order[8];
    cr_assert_eq(rank_ok(i, &rr, c, n, order), 1);
    cr_assert_eq(order[0], 4);
}

/* ---------------------------------------------------------------------------------------- */
/* Answers                                                                                   */
/* ---------------------------------------------------------------------------------------- */

Test(lua, answers_may_be_tables_indexes_or_ids)
{
    void *i = inst(TESTDATA "nonsense.lua", NULL, NULL);
    compass_candidate c[8];
    size_t n = std_cands(c), order[8];
    compass_route_request rr = req("ids", 10, "k", MON_10H);
    cr_assert_eq(rank_ok(i, &rr, c, n, order), 2);
    cr_assert_eq(order[0], 2);
    cr_assert_eq(order[1], 0);
    rr = req("indexes", 10, "k", MON_10H);
    cr_assert_eq(rank_ok(i, &rr, c, n, order), 3);
    cr_assert_eq(order[0], 1);
    cr_assert_eq(order[1], 2);
    cr_assert_eq(order[2], 0);
    rr = req("mixed", 10, "k", MON_10H);
    cr_assert_eq(rank_ok(i, &rr, c, n, order), 3);
    cr_assert_eq(order[0], 1);
    cr_assert_eq(order[1], 2);
    cr_assert_eq(order[2], 0);
}

Test(lua, order_capacity_is_respected)
{
    void *i = inst(TESTDATA "nonsense.lua", NULL, NULL);
    compass_candidate c[8];
    size_t n = std_cands(c), order[8];
    compass_route_request rr = req("ok", 10, "k", MON_10H);
    size_t no = 2;
    compass_err err;
    int rc = rank_cap(i, &rr, c, n, order, &no, &err);
    cr_assert_eq(rc, COMPASS_OK);
    cr_assert_eq(no, 2);
    cr_assert_eq(order[0], 0);
    cr_assert_eq(order[1], 1);
}

Test(lua, nonsense_answers_fail_cleanly)
{
    void *i = inst(TESTDATA "nonsense.lua", NULL, NULL);
    const char *f = "nonsense.lua";
    expect_fail(i, "bad", f, "nonsense.lua:2: route() returned number; expected an array of "
                             "candidates");
    expect_fail(i, "empty", f, "nonsense.lua:2: route() returned an empty list");
    expect_fail(i, "dup", f, "nonsense.lua:2: route() returned candidate 1 ('openai/gpt-4o') "
                             "twice");
    expect_fail(i, "unknown_id", f, "nonsense.lua:2: route() returned unknown candidate id "
                                    "'nobody/none' at entry 1");
    expect_fail(i, "range", f, "nonsense.lua:2: route() returned 99 at entry 1, not a "
                               "candidate index (1..6)");
    expect_fail(i, "float", f, "nonsense.lua:2: route() returned 1.5 at entry 1, not a "
                               "candidate index (1..6)");
    expect_fail(i, "foreign", f, "nonsense.lua:2: route() returned a table at entry 1 that is "
                                 "not one of the candidates");
    expect_fail(i, "bool", f, "nonsense.lua:2: route() returned boolean at entry 1; expected a "
                              "candidate, its index or its id");
}

Test(lua, many_candidates_use_heap_buffers)
{
    void *i = inst(TESTDATA "nonsense.lua", NULL, NULL);
    enum { N = 200 };
    static compass_candidate c[N];
    static char ids[N][16];
    static size_t order[N];
    for (int k = 0; k < N; k++) {
        snprintf(ids[k], sizeof(ids[k]), "p%d/m", k);
        c[k] = cand(ids[k], 1, 1, 1, 1, 0, COMPASS_BREAKER_CLOSED, 0, 0);
    }
    compass_route_request rr = req("ok", 10, "k", MON_10H);
    cr_assert_eq(rank_ok(i, &rr, c, N, order), N);
    cr_assert_eq(order[N - 1], N - 1);
    rr = req("dup", 10, "k", MON_10H);
    size_t no;
    compass_err err;
    cr_assert_eq(rank(i, &rr, c, N, order, &no, &err), COMPASS_EPLUGIN);
}

Test(lua, candidate_tables_are_fresh_views_each_call)
{
    void *i = inst(TESTDATA "views.lua", NULL, NULL);
    compass_candidate c[8];
    size_t n = std_cands(c), order[8];
    for (int k = 0; k < 3; k++) {
        compass_route_request rr = req("ok", 10, "k", MON_10H);
        cr_assert_eq(rank_ok(i, &rr, c, n, order), 1);
        cr_assert_eq(order[0], 0);
    }
    compass_route_request rr = req("stale", 10, "k", MON_10H);
    size_t no;
    compass_err err;
    cr_assert_eq(rank(i, &rr, c, n, order, &no, &err), COMPASS_EPLUGIN);
    cr_assert_str_eq(err.msg, "views.lua:4: route() returned a table at entry 1 that is not one "
                              "of the candidates");
    rr = req("ok", 10, "k", MON_10H);
    cr_assert_eq(rank_ok(i, &rr, c, n, order), 1);
    /* Changed stats reach the policy. */
    c[0].price_in = 3;
    cr_assert_eq(rank(i, &rr, c, n, order, &no, &err), COMPASS_EPLUGIN);
    cr_assert_str_eq(err.msg, "views.lua:10: assertion failed!");
}

/* ---------------------------------------------------------------------------------------- */
/* Bad policies                                                                              */
/* ---------------------------------------------------------------------------------------- */

Test(lua, runtime_errors_name_file_and_line)
{
    void *i = inst(TESTDATA "throws.lua", NULL, NULL);
    const char *f = "throws.lua";
    expect_fail(i, "bad", f, "throws.lua:4: no candidate suits key-1");
    expect_fail(i, "bad_table", f, "throws.lua:6: (error object is a table value)");
    expect_fail(i, "bad_level0", f, "throws.lua:8: no position here");
    expect_fail(i, "bad_index", f, "throws.lua:10: attempt to index a nil value (field "
                                   "'nothing')");
    /* The traceback goes to the debug log. */
    cr_assert(strstr(compass_fakehost_log(fh), "stack traceback:"));
}

/* The budget tests turn the wall clock off (timeout_ms=0): under a sanitizer on a busy
 * machine, 100,000 instructions can take longer than the default 5 ms, and the time budget
 * would then speak first. */
Test(lua, instruction_budget_stops_endless_loops)
{
    void *i = inst(TESTDATA "loops.lua", "timeout_ms=0", NULL);
    expect_fail(i, "bad", "loops.lua", "loops.lua:4: instruction budget exceeded");
    /* pcall inside the policy cannot swallow the budget error. */
    compass_candidate c[8];
    size_t n = std_cands(c), order[8], no;
    compass_route_request rr = req("sneaky", 10, "k", MON_10H);
    compass_err err;
    cr_assert_eq(rank(i, &rr, c, n, order, &no, &err), COMPASS_EPLUGIN);
    cr_assert(strstr(err.msg, "loops.lua:") == err.msg, "%s", err.msg);
    cr_assert(strstr(err.msg, ": instruction budget exceeded"), "%s", err.msg);
    rr = req("ok", 10, "k", MON_10H);
    cr_assert_eq(rank_ok(i, &rr, c, n, order), n);
}

Test(lua, time_budget_stops_slow_policies)
{
    void *i = inst(TESTDATA "loops.lua", "instructions=1000000000000", "timeout_ms=20");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    expect_fail(i, "bad", "loops.lua", "loops.lua:4: time budget exceeded");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    cr_assert(ms < 1000, "took %.1f ms", ms);
}

Test(lua, memory_cap_stops_growth)
{
    void *i = inst(TESTDATA "allocates.lua", "memory_kb=256", NULL);
    expect_fail(i, "bad", "allocates.lua", "allocates.lua:2: memory limit exceeded (256 KB)");
    /* With a bigger cap the loop runs long enough for the hook to see where it is. */
    void *big = inst(TESTDATA "allocates.lua", "memory_kb=2048", "timeout_ms=2000");
    expect_fail(big, "bad", "allocates.lua", "allocates.lua:6: memory limit exceeded (2048 KB)");
    /* string.rep of a gigabyte is refused by the same cap. */
    compass_candidate c[8];
    size_t n = std_cands(c), order[8], no;
    compass_route_request rr = req("rep", 10, "k", MON_10H);
    compass_err err;
    cr_assert_eq(rank(i, &rr, c, n, order, &no, &err), COMPASS_EPLUGIN);
    cr_assert(strstr(err.msg, "allocates.lua:") == err.msg, "%s", err.msg);
    cr_assert(strstr(err.msg, "memory limit exceeded (256 KB)"), "%s", err.msg);
    for (int k = 0; k < 3; k++) {
        rr = req("ok", 10, "k", MON_10H);
        cr_assert_eq(rank_ok(i, &rr, c, n, order), n);
        rr = req("bad", 10, "k", MON_10H);
        cr_assert_eq(rank(i, &rr, c, n, order, &no, &err), COMPASS_EPLUGIN);
    }
}

Test(lua, forbidden_globals_are_nil)
{
    struct {
        const char *fn, *msg;
    } cases[] = {
        {"route_os", "forbidden.lua:2: attempt to index a nil value (global 'os')"},
        {"route_io", "forbidden.lua:3: attempt to index a nil value (global 'io')"},
        {"route_load", "forbidden.lua:4: attempt to call a nil value (global 'load')"},
        {"route_require", "forbidden.lua:5: attempt to call a nil value (global 'require')"},
        {"route_dofile", "forbidden.lua:6: attempt to call a nil value (global 'dofile')"},
        {"route_debug", "forbidden.lua:7: attempt to index a nil value (global 'debug')"},
        {"route_gc", "forbidden.lua:8: attempt to call a nil value (global 'collectgarbage')"},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        char fo[64];
        snprintf(fo, sizeof(fo), "function=%s", cases[k].fn);
        void *i = inst(TESTDATA "forbidden.lua", fo, NULL);
        compass_candidate c[8];
        size_t n = std_cands(c), order[8], no;
        compass_route_request rr = req("x", 10, "k", MON_10H);
        compass_err err;
        cr_assert_eq(rank(i, &rr, c, n, order, &no, &err), COMPASS_EPLUGIN, "%s", cases[k].fn);
        cr_assert_str_eq(err.msg, cases[k].msg);
    }
    void *i = inst(TESTDATA "forbidden.lua", NULL, NULL); /* route: checks they are all nil */
    compass_candidate c[8];
    size_t n = std_cands(c), order[8];
    compass_route_request rr = req("x", 10, "k", MON_10H);
    cr_assert_eq(rank_ok(i, &rr, c, n, order), n);
}

Test(lua, bytecode_is_refused)
{
    compass_err err = {0, ""};
    cr_assert_null(inst_err(TESTDATA "bytecode.luac", NULL, NULL, &err));
    cr_assert_eq(err.code, COMPASS_EPLUGIN);
    cr_assert_str_eq(err.msg, "bytecode.luac: precompiled (binary) chunks are refused; give "
                              "Lua source");
}

Test(lua, syntax_error_names_file_and_line)
{
    compass_err err = {0, ""};
    cr_assert_null(inst_err(TESTDATA "syntax.lua", NULL, NULL, &err));
    cr_assert_eq(err.code, COMPASS_EPLUGIN);
    cr_assert(strncmp(err.msg, "syntax.lua:4: ", 14) == 0, "%s", err.msg);
    cr_assert(strstr(err.msg, "unexpected symbol near 'end'"), "%s", err.msg);
}

Test(lua, load_failures_are_clear)
{
    compass_err err = {0, ""};
    cr_assert_null(inst_err(TESTDATA "nofunc.lua", NULL, NULL, &err));
    cr_assert_str_eq(err.msg, "nofunc.lua: the policy defines no function 'route' (found nil)");
    cr_assert_null(inst_err(TESTDATA "nofunc.lua", "function=x", NULL, &err));
    cr_assert_str_eq(err.msg, "nofunc.lua: the policy defines no function 'x' (found nil)");
    cr_assert_null(inst_err(TESTDATA "loadloop.lua", "timeout_ms=0", NULL, &err));
    cr_assert_str_eq(err.msg, "loadloop.lua:2: instruction budget exceeded");
    cr_assert_null(inst_err(TESTDATA "missing.lua", NULL, NULL, &err));
    cr_assert_eq(err.code, COMPASS_ENOTFOUND);
    cr_assert(strstr(err.msg, "missing.lua: cannot open policy"), "%s", err.msg);
    cr_assert_null(inst_err(TESTDATA "throws.lua", "memory_kb=1", NULL, &err));
    cr_assert_eq(err.code, COMPASS_ECONFIG);
    cr_assert_null(inst_err(TESTDATA "throws.lua", "instructions=0", NULL, &err));
    cr_assert_eq(err.code, COMPASS_ECONFIG);
}

Test(lua, compass_module_and_print_log_through_the_host)
{
    void *i = inst(TESTDATA "logs.lua", NULL, NULL);
    compass_candidate c[8];
    size_t n = std_cands(c), order[8];
    compass_route_request rr = req("hello", 10, "k", MON_10H);
    cr_assert_eq(rank_ok(i, &rr, c, n, order), n);
    const char *log = compass_fakehost_log(fh);
    cr_assert(strstr(log, "INFO logs.lua: hello from hello\n"), "%s", log);
    cr_assert(strstr(log, "DEBUG logs.lua: printed\t1\ttrue\tnil\n"), "%s", log);
    expect_fail(i, "badlevel", "logs.lua",
                "logs.lua:6: bad argument #1 to 'log' (invalid option 'loud')");
}

Test(lua, host_allocation_failures_are_clean)
{
    /* instance_new: every host allocation in turn fails; each either fails cleanly with
     * ENOMEM or (once past them all) succeeds. ASan checks for leaks. */
    int made = 0;
    for (long nth = 1; nth <= 16 && !made; nth++) {
        compass_err err = {0, ""};
        compass_fakehost_fail_alloc_at(fh, nth);
        void *i = inst_err(ROUTING "cheapest_healthy.lua", NULL, NULL, &err);
        compass_fakehost_fail_alloc_at(fh, 0);
        if (i)
            made = 1;
        else
            cr_assert_eq(err.code, COMPASS_ENOMEM, "nth %ld: %d %s", nth, err.code, err.msg);
    }
    cr_assert(made);
    /* rank: the state's candidate cache cannot grow; the call fails cleanly, then works. */
    void *i = inst(ROUTING "cheapest_healthy.lua", NULL, NULL);
    compass_candidate c[8];
    size_t n = std_cands(c), order[8], no;
    compass_route_request rr = req("cheap", 10, "k", MON_10H);
    compass_err err;
    compass_fakehost_fail_alloc_at(fh, 1);
    cr_assert_eq(rank(i, &rr, c, n, order, &no, &err), COMPASS_EPLUGIN);
    compass_fakehost_fail_alloc_at(fh, 0);
    cr_assert_str_eq(err.msg, "lua: out of memory for the candidate cache");
    cr_assert_eq(rank_ok(i, &rr, c, n, order), 4);
}

/* ---------------------------------------------------------------------------------------- */
/* Threads                                                                                   */
/* ---------------------------------------------------------------------------------------- */

struct worker {
    void *inst;
    int failures;
    int seed;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    compass_candidate c[8];
    size_t n = std_cands(c), order[8], no;
    for (int k = 0; k < 10000; k++) {
        compass_route_request rr = req("cheap", 100 + (k + w->seed) % 5000, "key", MON_10H);
        compass_err err;
        no = n;
        const compass_candidate *ptrs[8];
        for (size_t j = 0; j < n; j++)
            ptrs[j] = &c[j];
        if (desc->ops.router->rank(w->inst, NULL, &rr, ptrs, n, order, &no, &err) != 0 ||
            no != 4 || order[0] != 2) {
            if (!w->failures)
                fprintf(stderr, "thread %d call %d: %s\n", w->seed, k, err.msg);
            w->failures++;
        }
    }
    return NULL;
}

Test(lua, two_threads_rank_on_one_instance)
{
    void *i = inst(ROUTING "cheapest_healthy.lua", NULL, NULL);
    struct worker w[2] = {{i, 0, 0}, {i, 0, 7}};
    pthread_t t[2];
    for (int k = 0; k < 2; k++)
        cr_assert_eq(pthread_create(&t[k], NULL, work, &w[k]), 0);
    for (int k = 0; k < 2; k++)
        pthread_join(t[k], NULL);
    cr_assert_eq(w[0].failures + w[1].failures, 0, "%d + %d failures", w[0].failures,
                 w[1].failures);
    cr_assert_null(strstr(compass_fakehost_log(fh), "METRIC"));
}

/* Appended for every router: rank() makes no host allocation once warm. (The Lua states
 * allocate through their own capped allocator; the host only sees the per-state candidate
 * cache grow on a state's first call with more candidates.) */
Test(lua, rank_does_not_allocate)
{
    void *i = inst(ROUTING "cheapest_healthy.lua", NULL, NULL);
    compass_candidate c[10];
    compass_route_request rr = req("cheap", 100, "k", MON_10H);
    size_t order[10];
    for (int k = 0; k < 10; k++) {
        c[k] = cand("x/y", 1 + k % 4, 0.1 * k, 0.2 * k, 50.0 * k, 0,
                    k == 3 ? COMPASS_BREAKER_OPEN : COMPASS_BREAKER_CLOSED, ALLCAPS, 0);
        c[k].weight = 1 + k;
        c[k].in_flight = k;
    }
    rank_ok(i, &rr, c, 10, order); /* warm: the state's candidate cache grows once */
    (void)compass_fakehost_alloc_count(fh);
    for (int k = 0; k < 1000; k++)
        rank_ok(i, &rr, c, 10, order);
    cr_assert_eq(compass_fakehost_alloc_count(fh), 0);
}

/* ---------------------------------------------------------------------------------------- */
/* The example policies' decisions, pinned (a speed-up must not change them)                 */
/* ---------------------------------------------------------------------------------------- */

/* Ten candidates with ties in tier, latency and price, an open and a half-open breaker, a
 * flaky one, one without tools, small context windows and an unset tier. */
static size_t golden_cands(compass_candidate *c)
{
    static const char *const ids[10] = {"p0/m0", "p1/m1", "p2/m2", "p3/m3", "p4/m4",
                                        "p5/m5", "p6/m6", "p7/m7", "p8/m8", "p9/m9"};
    static const int tiers[10] = {1, 2, 3, 4, 0, 2, 1, 3, 2, 3};
    static const double pin[10] = {2.5, 0.15, 0.05, 1.0, 0.3, 0.15, 3.0, 0.05, 0.6, 0.02};
    static const double pout[10] = {10, 0.6, 0.08, 2.0, 1.2, 0.6, 15, 0.2, 2.4, 0.02};
    static const double lat[10] = {900, 400, 200, 600, 300, 400, 700, 250, 400, 150};
    static const double err[10] = {0.01, 0.02, 0, 0.05, 0.01, 0.02, 0.3, 0, 0.09, 0.0};
    static const int brk[10] = {COMPASS_BREAKER_CLOSED, COMPASS_BREAKER_CLOSED,
                                COMPASS_BREAKER_CLOSED, COMPASS_BREAKER_HALF_OPEN,
                                COMPASS_BREAKER_CLOSED, COMPASS_BREAKER_CLOSED,
                                COMPASS_BREAKER_CLOSED, COMPASS_BREAKER_CLOSED,
                                COMPASS_BREAKER_CLOSED, COMPASS_BREAKER_OPEN};
    static const unsigned caps[10] = {ALLCAPS, ALLCAPS, COMPASS_CAP_JSON, ALLCAPS,
                                      COMPASS_CAP_TOOLS, ALLCAPS, ALLCAPS, COMPASS_CAP_TOOLS,
                                      ALLCAPS, ALLCAPS};
    static const int64_t ctx[10] = {128000, 128000, 8192, 0, 32000, 128000, 200000, 4096,
                                    16000, 8192};
    for (int k = 0; k < 10; k++)
        c[k] = cand(ids[k], tiers[k], pin[k], pout[k], lat[k], err[k], brk[k], caps[k], ctx[k]);
    return 10;
}

/* Ranks rr with policy over the golden candidates; the order as "1,2,3" (0-based). */
static void golden(void *i, const compass_route_request *rr, const char *want)
{
    compass_candidate c[10];
    size_t n = golden_cands(c), order[10];
    size_t no = rank_ok(i, rr, c, n, order);
    char got[64] = "";
    size_t len = 0;
    for (size_t k = 0; k < no && len < sizeof(got); k++)
        len += (size_t)snprintf(got + len, sizeof(got) - len, k ? ",%zu" : "%zu", order[k]);
    cr_assert_str_eq(got, want);
}

Test(lua, example_policy_decisions_are_pinned)
{
    compass_header md[1];
    void *i = inst(ROUTING "cheapest_healthy.lua", NULL, NULL);
    compass_route_request rr = req("r", 100, "k", MON_10H);
    golden(i, &rr, "2,7,1,5,4,8,0");
    rr = req("r", 20000, "k", MON_10H);
    golden(i, &rr, "2,7,1,5,4,8,0");
    rr.has_tools = 1;
    golden(i, &rr, "7,1,5,4,8,0");
    rr.has_images = 1;
    golden(i, &rr, "1,5,8,0");

    i = inst(ROUTING "tier_by_size.lua", NULL, NULL);
    rr = req("r", 100, "k", MON_10H);
    golden(i, &rr, "9,2,7,1,5,8,3,6,0,4");
    rr = req("r", 5000, "k", MON_10H);
    golden(i, &rr, "1,5,8,6,0,9,2,3,4");
    rr = req("r", 20000, "k", MON_10H);
    golden(i, &rr, "6,0,1,5,3,4");
    rr = req("r", 500000, "k", MON_10H);
    golden(i, &rr, "3");

    i = inst(ROUTING "ab_split.lua", NULL, NULL);
    static const char *const keys[] = {"", "key-1", "key-7", "key-42", "key-1000", "alice"};
    static const char *const key_order[] = {
        "0,1,2,3,4,5,6,7,8,9", "0,1,2,3,4,5,6,7,8,9", "0,1,2,3,4,5,6,7,8,9",
        "1,0,2,3,4,5,6,7,8,9", "0,1,2,3,4,5,6,7,8,9", "0,1,2,3,4,5,6,7,8,9"};
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        rr = req("r", 100, keys[k], MON_10H);
        golden(i, &rr, key_order[k]);
    }
    md[0].name = compass_str_c("ab_arm");
    md[0].value = compass_str_c("b");
    rr = req("r", 100, "", MON_10H);
    rr.metadata = md;
    rr.n_metadata = 1;
    golden(i, &rr, "1,0,2,3,4,5,6,7,8,9");

    i = inst(ROUTING "office_hours.lua", NULL, NULL);
    static const int64_t whens[] = {MON_10H, MON_20H, SAT_10H, FRI_17H59, FRI_18H};
    static const char *const when_order[] = {
        "6,0,1,5,8,9,2,7,3,4", "9,2,7,1,5,4,3,8,0,6",
        "9,2,7,1,5,4,3,8,0,6", "6,0,1,5,8,9,2,7,3,4", "9,2,7,1,5,4,3,8,0,6"};
    for (size_t k = 0; k < sizeof(whens) / sizeof(whens[0]); k++) {
        rr = req("r", 100, "k", whens[k]);
        golden(i, &rr, when_order[k]);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* What a call can carry into the next one (the state keeps backing tables, key strings and  */
/* freed blocks between calls; the policy must see none of it)                               */
/* ---------------------------------------------------------------------------------------- */

Test(lua, nothing_a_call_writes_reaches_the_next_call)
{
    void *i = inst(TESTDATA "carry.lua", NULL, NULL);
    compass_candidate c[8];
    size_t n = std_cands(c), order[8], no;
    compass_header md = {compass_str_c("team"), compass_str_c("search")};
    compass_err err;
    for (int k = 0; k < 3; k++) {
        compass_route_request rr = req("write", 100, "k", MON_10H);
        rr.metadata = &md;
        rr.n_metadata = 1;
        cr_assert_eq(rank_ok(i, &rr, c, n, order), 2);
        cr_assert_eq(order[0], 1);
        cr_assert_eq(order[1], 0);
        rr = req("check", 100, "k", MON_10H);
        rr.metadata = &md;
        rr.n_metadata = 1;
        cr_assert_eq(rank_ok(i, &rr, c, n, order), n);
        for (size_t j = 0; j < n; j++)
            cr_assert_eq(order[j], j);
    }
    /* A candidate table kept from an earlier call is not one of this call's. */
    compass_route_request rr = req("check", 100, "stale", MON_10H);
    rr.metadata = &md;
    rr.n_metadata = 1;
    cr_assert_eq(rank(i, &rr, c, n, order, &no, &err), COMPASS_EPLUGIN);
    cr_assert_str_eq(err.msg, "carry.lua:5: route() returned a table at entry 1 that is not one "
                              "of the candidates");
}

Test(lua, request_strings_follow_each_call)
{
    void *i = inst(TESTDATA "echo.lua", NULL, NULL);
    compass_candidate c[8];
    size_t n = std_cands(c), order[8];
    static const char *const keys[] = {"1", "2", "2", "3", "1", "", "", "6", "4", "4"};
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        char route[16], val[16];
        snprintf(route, sizeof(route), "r%s", keys[k]);
        snprintf(val, sizeof(val), "v%s", keys[k]);
        compass_header md = {compass_str_c("k"), compass_str_c(val)};
        compass_route_request rr = req(route, 100, keys[k], MON_10H);
        if (*keys[k]) {
            rr.metadata = &md;
            rr.n_metadata = 1;
        }
        cr_assert_eq(rank_ok(i, &rr, c, n, order), 1);
        cr_assert_eq(order[0], *keys[k] ? (size_t)atoi(keys[k]) - 1 : n - 1, "call %zu", k);
    }
}

/* Views are made bare or with room for the policy's own fields, from what the policy did
 * in earlier calls; the ranking must not depend on which. */
Test(lua, own_fields_rank_the_same_whatever_the_views_were_made_with)
{
    void *i = inst(TESTDATA "ownfields.lua", NULL, NULL);
    compass_candidate c[8];
    size_t n = std_cands(c), order[8];
    static const char *const seq[] = {"plain", "plain", "one", "one", "plain", "many",
                                      "some", "one", "plain", "some"};
    for (int k = 0; k < 700; k++) {
        const char *what = k < 300 ? seq[k % 10] : k < 600 ? "one" : "plain";
        compass_route_request rr = req(what, 100, "k", MON_10H);
        size_t no = rank_ok(i, &rr, c, n, order);
        if (strcmp(what, "plain") == 0) {
            cr_assert_eq(no, n);
            for (size_t j = 0; j < n; j++)
                cr_assert_eq(order[j], j, "call %d", k);
        } else if (strcmp(what, "some") == 0) {
            cr_assert_eq(no, 3);
            cr_assert_eq(order[0], 4);
            cr_assert_eq(order[1], 2);
            cr_assert_eq(order[2], 0);
        } else {
            cr_assert_eq(no, n);
            for (size_t j = 0; j < n; j++)
                cr_assert_eq(order[j], n - 1 - j, "%s call %d", what, k);
        }
    }
}

Test(lua, candidates_may_change_between_calls)
{
    void *i = inst(TESTDATA "fields.lua", NULL, NULL);
    void *echo = inst(TESTDATA "nonsense.lua", NULL, NULL);
    compass_candidate c[10];
    size_t order[10];
    for (int round = 0; round < 3; round++) {
        compass_route_request rr;
        compass_header md[2];
        size_t n = fields_case(c, &rr, md);
        cr_assert_eq(rank_ok(i, &rr, c, n, order), 1);
        cr_assert_eq(order[0], 4);
        /* other candidates, more and fewer of them, in the same positions */
        n = golden_cands(c);
        rr = req("ids", 10, "k", MON_10H);
        cr_assert_eq(rank_ok(echo, &rr, c, n, order), 2); /* candidates[3].id, [1].id */
        cr_assert_eq(order[0], 2);
        cr_assert_eq(order[1], 0);
        c[0] = c[2];
        c[2] = cand("late/new", 1, 1, 1, 1, 0, COMPASS_BREAKER_CLOSED, 0, 0);
        cr_assert_eq(rank_ok(echo, &rr, c, 3, order), 2);
        cr_assert_eq(order[0], 2);
        cr_assert_eq(order[1], 0);
    }
}

Test(lua, churning_memory_stays_under_a_small_cap)
{
    void *i = inst(TESTDATA "churn.lua", "memory_kb=256", NULL);
    compass_candidate c[8];
    size_t n = std_cands(c), order[8];
    for (int k = 0; k < 3000; k++) {
        compass_route_request rr = req("x", k, "k", MON_10H);
        cr_assert_eq(rank_ok(i, &rr, c, n, order), n, "call %d", k);
    }
    cr_assert_null(strstr(compass_fakehost_log(fh), "METRIC"));
}

/* More threads than an instance has states: they take turns, each call on a state of its
 * own while it runs. */
Test(lua, more_threads_than_states_share_the_pool)
{
    void *i = inst(ROUTING "cheapest_healthy.lua", NULL, NULL);
    enum { T = 12 };
    struct worker w[T];
    pthread_t t[T];
    for (int k = 0; k < T; k++) {
        w[k].inst = i;
        w[k].failures = 0;
        w[k].seed = k * 13;
        cr_assert_eq(pthread_create(&t[k], NULL, work, &w[k]), 0);
    }
    int failures = 0;
    for (int k = 0; k < T; k++) {
        pthread_join(t[k], NULL);
        failures += w[k].failures;
    }
    cr_assert_eq(failures, 0, "%d failures", failures);
    cr_assert_null(strstr(compass_fakehost_log(fh), "METRIC"));
}
