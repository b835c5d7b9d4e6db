#include <compass/plugin.h>
#include <compass_fakehost.h>

#include <criterion/criterion.h>
#include <string.h>

static compass_fakehost *fh;
static const compass_plugin_desc *desc;

static void setup(void)
{
    compass_err err = {0};
    fh = compass_fakehost_new("least_latency");
    cr_assert_not_null(fh);
    desc = compass_fakehost_load(fh, COMPASS_PLUGIN_DIR "/least_latency.so", &err);
    cr_assert_not_null(desc, "load: %s", err.msg);
    cr_assert_eq(desc->kind, COMPASS_PLUGIN_ROUTER);
    cr_assert_str_eq(desc->name, "least_latency");
}

static void teardown(void)
{
    compass_fakehost_free(fh);
}

/* An instance with options ("name=value", NULL-terminated list; NULL for defaults). */
static inline void *mk(const char *const *opts)
{
    compass_err err = {0};
    void *inst = compass_fakehost_instance(fh, "route", NULL, NULL, opts, &err);
    cr_assert_not_null(inst, "instance: %s", err.msg);
    return inst;
}

static inline compass_candidate cand(const char *id, int breaker)
{
    compass_candidate c;
    memset(&c, 0, sizeof(c));
    c.size = sizeof(c);
    c.id = compass_str_c(id);
    c.provider = compass_str_c(id);
    c.model = compass_str_c(id);
    c.weight = 1;
    c.breaker = breaker;
    c.caps = COMPASS_CAP_TOOLS | COMPASS_CAP_VISION | COMPASS_CAP_STREAM;
    return c;
}

static inline compass_route_request req(void)
{
    compass_route_request r;
    memset(&r, 0, sizeof(r));
    r.size = sizeof(r);
    r.route = compass_str_c("auto");
    r.est_prompt_tokens = 100;
    return r;
}

/* rank() takes n pointers to candidates: points p[0..n) at c[0..n) and returns p. */
static inline const compass_candidate *const *ptrs(const compass_candidate **p,
                                                  const compass_candidate *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = &c[i];
    return p;
}

#define MAX_CANDS 128 /* the most any test ranks at once */

/* Ranks c[0..n) into order (capacity n); returns rank's code, *m the count. */
static inline int rank(void *inst, const compass_route_request *rr, const compass_candidate *c,
                size_t n, size_t *order, size_t *m)
{
    const compass_candidate *cp[MAX_CANDS];
    compass_err err = {0};
    int rc;
    cr_assert_leq(n, MAX_CANDS);
    *m = n;
    rc = desc->ops.router->rank(inst, NULL, rr, ptrs(cp, c, n), n, order, m, &err);
    if (rc == 0)
        cr_assert_leq(*m, n);
    return rc;
}

/* Ranks and asserts success; returns the first choice. */
static inline size_t first(void *inst, const compass_route_request *rr, const compass_candidate *c,
                    size_t n, size_t *order)
{
    size_t m;
    int rc = rank(inst, rr, c, n, order, &m);
    cr_assert_eq(rc, 0, "rank failed: %d", rc);
    cr_assert_gt(m, 0);
    return order[0];
}

#include <math.h>

TestSuite(least_latency, .init = setup, .fini = teardown);

static const char *const no_explore[] = {"explore=0", NULL};

Test(least_latency, fastest_first)
{
    void *inst = mk(no_explore);
    compass_candidate c[4] = {cand("a", 0), cand("b", 0), cand("c", 0), cand("d", 0)};
    compass_route_request rr = req();
    size_t order[4], m, want[4] = {2, 0, 3, 1};
    c[0].latency_ewma_ms = 300;
    c[1].latency_ewma_ms = 900;
    c[2].latency_ewma_ms = 120;
    c[3].latency_ewma_ms = 450;
    for (int k = 0; k < 100; k++) {
        cr_assert_eq(rank(inst, &rr, c, 4, order, &m), 0);
        for (size_t i = 0; i < 4; i++)
            cr_assert_eq(order[i], want[i]);
    }
}

Test(least_latency, streaming_uses_time_to_first_token)
{
    void *inst = mk(no_explore);
    compass_candidate c[2] = {cand("a", 0), cand("b", 0)};
    compass_route_request rr = req();
    size_t order[2];
    c[0].latency_ewma_ms = 1000;
    c[0].ttft_ewma_ms = 100;
    c[1].latency_ewma_ms = 500;
    c[1].ttft_ewma_ms = 400;
    cr_assert_eq(first(inst, &rr, c, 2, order), 1);
    rr.stream = 1;
    cr_assert_eq(first(inst, &rr, c, 2, order), 0);
}

Test(least_latency, unmeasured_candidates_go_first)
{
    void *inst = mk(no_explore);
    compass_candidate c[3] = {cand("a", 0), cand("b", 0), cand("c", 0)};
    compass_route_request rr = req();
    size_t order[3], m;
    c[0].latency_ewma_ms = 50;
    c[1].latency_ewma_ms = 0;
    c[2].latency_ewma_ms = 80;
    cr_assert_eq(rank(inst, &rr, c, 3, order, &m), 0);
    cr_assert_eq(order[0], 1);
    cr_assert_eq(order[1], 0);
    cr_assert_eq(order[2], 2);
}

Test(least_latency, slow_closed_beats_fast_open)
{
    void *inst = mk(no_explore);
    compass_candidate c[2] = {cand("fast", COMPASS_BREAKER_OPEN), cand("slow", 0)};
    compass_route_request rr = req();
    size_t order[2];
    c[0].latency_ewma_ms = 10;
    c[1].latency_ewma_ms = 5000;
    cr_assert_eq(first(inst, &rr, c, 2, order), 1);
}

static void explore_run(const char *const *opts, size_t *counts, size_t calls)
{
    void *inst = mk(opts);
    compass_candidate c[5] = {cand("a", 0), cand("b", 0), cand("c", 0), cand("d", 0),
                              cand("e", COMPASS_BREAKER_OPEN)};
    compass_route_request rr = req();
    size_t order[5];
    c[0].latency_ewma_ms = 400;
    c[1].latency_ewma_ms = 100; /* the fastest */
    c[2].latency_ewma_ms = 900;
    c[3].latency_ewma_ms = 250;
    c[4].latency_ewma_ms = 5;
    for (size_t i = 0; i < calls; i++) {
        size_t f = first(inst, &rr, c, 5, order);
        counts[f]++;
        cr_assert_eq(order[4], 4, "the open breaker stays last while exploring");
    }
}

Test(least_latency, explores_at_the_configured_rate)
{
    static const char *const opts[] = {"explore=0.2", NULL};
    size_t counts[5] = {0};
    double rate;
    explore_run(opts, counts, 10000);
    rate = (double)(10000 - counts[1]) / 10000.0;
    cr_assert(fabs(rate - 0.2) < 0.015, "explored %.4f of calls, want 0.2", rate);
    cr_assert_eq(counts[4], 0, "an open breaker is never explored");
    /* The three other healthy candidates share the exploration evenly (each ~6.7%). */
    for (int k = 0; k < 4; k++) {
        if (k == 1)
            continue;
        double s = (double)counts[k] / 10000.0;
        cr_assert(fabs(s - 0.2 / 3) < 0.015, "candidate %d explored %.4f", k, s);
    }
}

Test(least_latency, default_explore_is_five_percent)
{
    size_t counts[5] = {0};
    double rate;
    explore_run(NULL, counts, 10000);
    rate = (double)(10000 - counts[1]) / 10000.0;
    cr_assert(fabs(rate - 0.05) < 0.01, "explored %.4f of calls, want 0.05", rate);
}

Test(least_latency, explore_zero_never_explores)
{
    size_t counts[5] = {0};
    explore_run(no_explore, counts, 5000);
    cr_assert_eq(counts[1], 5000);
}

Test(least_latency, explore_out_of_range_is_refused)
{
    static const char *const opts[] = {"explore=1.5", NULL};
    compass_err err = {0};
    void *inst = compass_fakehost_instance(fh, "route", NULL, NULL, opts, &err);
    cr_assert_null(inst);
    cr_assert_not_null(strstr(err.msg, "explore"), "%s", err.msg);
}

/* ---- shared behaviour every router must have ---- */

static int health_of(const compass_candidate *c)
{
    if (c->breaker == COMPASS_BREAKER_CLOSED)
        return 0;
    return c->breaker == COMPASS_BREAKER_HALF_OPEN ? 1 : 2;
}

Test(least_latency, breaker_open_last_half_open_after_closed)
{
    void *inst = mk(NULL);
    compass_candidate c[6] = {
        cand("a", COMPASS_BREAKER_OPEN),   cand("b", COMPASS_BREAKER_HALF_OPEN),
        cand("c", COMPASS_BREAKER_CLOSED), cand("d", COMPASS_BREAKER_OPEN),
        cand("e", COMPASS_BREAKER_CLOSED), cand("f", COMPASS_BREAKER_HALF_OPEN)};
    compass_route_request rr = req();
    size_t order[6], m;
    for (size_t i = 0; i < 6; i++) {
        c[i].tier = 1 + (int)(i % 3);
        c[i].price_in = 1.0 + (double)i;
        c[i].price_out = 2.0 + (double)i;
        c[i].latency_ewma_ms = 100.0 * (double)(6 - i);
        c[i].ttft_ewma_ms = 10.0 * (double)(6 - i);
        c[i].in_flight = (int64_t)(6 - i);
    }
    for (int call = 0; call < 50; call++) {
        int seen[6] = {0};
        cr_assert_eq(rank(inst, &rr, c, 6, order, &m), 0);
        cr_assert_eq(m, 6, "every candidate is still listed");
        for (size_t i = 0; i < m; i++) {
            cr_assert_lt(order[i], 6);
            cr_assert_eq(seen[order[i]]++, 0, "listed twice");
            if (i)
                cr_assert_leq(health_of(&c[order[i - 1]]), health_of(&c[order[i]]),
                              "call %d: %zu (breaker %d) before %zu (breaker %d)", call,
                              order[i - 1], c[order[i - 1]].breaker, order[i],
                              c[order[i]].breaker);
        }
    }
}

Test(least_latency, drops_candidates_that_cannot_serve)
{
    void *inst = mk(NULL);
    compass_candidate c[4] = {cand("notools", 0), cand("novision", 0), cand("small", 0),
                              cand("ok", 0)};
    compass_route_request rr = req();
    size_t order[4], m;
    for (size_t i = 0; i < 4; i++)
        c[i].tier = 2;
    c[0].caps &= ~COMPASS_CAP_TOOLS;
    c[1].caps &= ~COMPASS_CAP_VISION;
    c[2].context_window = 4096;
    rr.has_tools = 1;
    rr.has_images = 1;
    rr.est_prompt_tokens = 5000;
    cr_assert_eq(rank(inst, &rr, c, 4, order, &m), 0);
    cr_assert_eq(m, 1);
    cr_assert_eq(order[0], 3);
}

Test(least_latency, none_left_is_not_found_naming_the_capability)
{
    void *inst = mk(NULL);
    compass_candidate c[2] = {cand("a", 0), cand("b", 0)};
    compass_route_request rr = req();
    size_t order[2], m = 2;
    compass_err err = {0};
    const compass_candidate *cp[2];
    c[0].caps = COMPASS_CAP_TOOLS;
    c[1].caps = 0;
    rr.has_images = 1;
    cr_assert_eq(desc->ops.router->rank(inst, NULL, &rr, ptrs(cp, c, 2), 2, order, &m, &err),
                 COMPASS_ENOTFOUND);
    cr_assert_not_null(strstr(err.msg, "vision"), "%s", err.msg);
    cr_assert_null(strstr(err.msg, "tools"), "%s", err.msg);
}

Test(least_latency, rank_does_not_allocate)
{
    void *inst = mk(NULL);
    compass_candidate c[10];
    compass_route_request rr = req();
    size_t order[10], m;
    for (int i = 0; i < 10; i++) {
        c[i] = cand("x", i == 3 ? COMPASS_BREAKER_OPEN : 0);
        c[i].tier = 1 + i % 4;
        c[i].weight = 1 + i;
        c[i].latency_ewma_ms = 50.0 * i;
        c[i].in_flight = i;
        c[i].price_in = 0.1 * i;
    }
    (void)compass_fakehost_alloc_count(fh);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(rank(inst, &rr, c, 10, order, &m), 0);
    cr_assert_eq(compass_fakehost_alloc_count(fh), 0);
}
