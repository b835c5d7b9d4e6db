#include <compass/plugin.h>
#include <compass_fakehost.h>

#include <criterion/criterion.h>
#include <string.h>

static compass_fakehost *fh;
static const compass_plugin_desc *desc;

static void setup(void)
{
    compass_err err = {0};
    fh = compass_fakehost_new("cost");
    cr_assert_not_null(fh);
    desc = compass_fakehost_load(fh, COMPASS_PLUGIN_DIR "/cost.so", &err);
    cr_assert_not_null(desc, "load: %s", err.msg);
    cr_assert_eq(desc->kind, COMPASS_PLUGIN_ROUTER);
    cr_assert_str_eq(desc->name, "cost");
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

TestSuite(cost, .init = setup, .fini = teardown);

enum { PREMIUM, MINI, CHEAP_IN, CHEAP_OUT, N };

static void priced(compass_candidate *c)
{
    c[PREMIUM] = cand("premium", 0);
    c[PREMIUM].price_in = 5.0;
    c[PREMIUM].price_out = 15.0;
    c[MINI] = cand("mini", 0);
    c[MINI].price_in = 0.15;
    c[MINI].price_out = 0.60;
    c[CHEAP_IN] = cand("cheap-input", 0); /* cheap input, dear output */
    c[CHEAP_IN].price_in = 0.05;
    c[CHEAP_IN].price_out = 20.0;
    c[CHEAP_OUT] = cand("cheap-output", 0);
    c[CHEAP_OUT].price_in = 3.0;
    c[CHEAP_OUT].price_out = 0.50;
}

static compass_chat_request chat_max(int64_t max_tokens, int completion)
{
    compass_chat_request ch;
    memset(&ch, 0, sizeof(ch));
    ch.size = sizeof(ch);
    if (completion) {
        ch.set = COMPASS_SET_MAX_COMPLETION_TOKENS;
        ch.max_completion_tokens = max_tokens;
    } else {
        ch.set = COMPASS_SET_MAX_TOKENS;
        ch.max_tokens = max_tokens;
    }
    return ch;
}

Test(cost, short_prompt_cheapest_overall_wins)
{
    void *inst = mk(NULL);
    compass_candidate c[N];
    compass_route_request rr = req();
    size_t order[N], m, want[N] = {MINI, CHEAP_OUT, PREMIUM, CHEAP_IN};
    priced(c);
    rr.est_prompt_tokens = 100; /* + 256 expected output by default */
    cr_assert_eq(rank(inst, &rr, c, N, order, &m), 0);
    for (size_t i = 0; i < N; i++)
        cr_assert_eq(order[i], want[i], "order[%zu]=%zu want %zu", i, order[i], want[i]);
}

Test(cost, long_prompt_short_answer_favours_cheap_input)
{
    void *inst = mk(NULL);
    compass_candidate c[N];
    compass_route_request rr = req();
    compass_chat_request ch = chat_max(50, 0);
    size_t order[N];
    priced(c);
    rr.est_prompt_tokens = 100000;
    rr.chat = &ch;
    cr_assert_eq(first(inst, &rr, c, N, order), CHEAP_IN);
}

Test(cost, cheap_input_dear_output_loses_output_heavy_requests)
{
    void *inst = mk(NULL);
    compass_candidate c[N];
    compass_route_request rr = req();
    compass_chat_request ch = chat_max(4000, 1);
    size_t order[N], m;
    priced(c);
    rr.est_prompt_tokens = 100000;
    rr.chat = &ch;
    cr_assert_eq(rank(inst, &rr, c, N, order, &m), 0);
    cr_assert_eq(order[0], MINI);
    cr_assert_neq(order[0], CHEAP_IN);
    /* and with a short prompt it comes dead last */
    rr.est_prompt_tokens = 200;
    cr_assert_eq(rank(inst, &rr, c, N, order, &m), 0);
    cr_assert_eq(order[N - 1], CHEAP_IN);
}

Test(cost, expected_output_tokens_option_is_used_when_unset)
{
    static const char *const none[] = {"expected_output_tokens=0", NULL};
    static const char *const lots[] = {"expected_output_tokens=2000", NULL};
    compass_candidate c[N];
    compass_route_request rr = req();
    size_t order[N];
    void *a = mk(none), *b = mk(lots);
    priced(c);
    rr.est_prompt_tokens = 10000;
    cr_assert_eq(first(a, &rr, c, N, order), CHEAP_IN);
    cr_assert_eq(first(b, &rr, c, N, order), MINI);
}

Test(cost, equal_cost_goes_to_the_faster)
{
    void *inst = mk(NULL);
    compass_candidate c[3] = {cand("a", 0), cand("b", 0), cand("c", 0)};
    compass_route_request rr = req();
    size_t order[3], m;
    for (int i = 0; i < 3; i++) {
        c[i].price_in = 1;
        c[i].price_out = 2;
    }
    c[0].latency_ewma_ms = 0; /* unmeasured */
    c[1].latency_ewma_ms = 800;
    c[2].latency_ewma_ms = 300;
    cr_assert_eq(rank(inst, &rr, c, 3, order, &m), 0);
    cr_assert_eq(order[0], 2);
    cr_assert_eq(order[1], 1);
    cr_assert_eq(order[2], 0);
}

Test(cost, cheap_but_open_goes_last)
{
    void *inst = mk(NULL);
    compass_candidate c[N];
    compass_route_request rr = req();
    size_t order[N], m;
    priced(c);
    c[MINI].breaker = COMPASS_BREAKER_OPEN;
    cr_assert_eq(rank(inst, &rr, c, N, order, &m), 0);
    cr_assert_eq(order[0], CHEAP_OUT);
    cr_assert_eq(order[N - 1], MINI);
}

/* ---- shared behaviour every router must have ---- */

#include "../common/contract_tests.h"
