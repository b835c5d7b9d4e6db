#include <compass/plugin.h>
#include <compass_fakehost.h>

#include <criterion/criterion.h>
#include <string.h>

static compass_fakehost *fh;
static const compass_plugin_desc *desc;

static void setup(void)
{
    compass_err err = {0};
    fh = compass_fakehost_new("weighted");
    cr_assert_not_null(fh);
    desc = compass_fakehost_load(fh, COMPASS_PLUGIN_DIR "/weighted.so", &err);
    cr_assert_not_null(desc, "load: %s", err.msg);
    cr_assert_eq(desc->kind, COMPASS_PLUGIN_ROUTER);
    cr_assert_str_eq(desc->name, "weighted");
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
#include <pthread.h>

TestSuite(weighted, .init = setup, .fini = teardown);

static void check_shares(const double *w, size_t n)
{
    void *inst = mk(NULL);
    compass_candidate c[8];
    compass_route_request rr = req();
    size_t order[8], counts[8] = {0};
    double total = 0;
    for (size_t i = 0; i < n; i++) {
        c[i] = cand("x", 0);
        c[i].weight = w[i];
        total += w[i];
    }
    for (int call = 0; call < 10000; call++)
        counts[first(inst, &rr, c, n, order)]++;
    for (size_t i = 0; i < n; i++) {
        double share = (double)counts[i] / 10000.0, want = w[i] / total;
        cr_assert(fabs(share - want) <= 0.01, "candidate %zu: share %.4f want %.4f", i, share,
                  want);
    }
}

Test(weighted, shares_match_weights_within_one_percent)
{
    const double a[3] = {5, 3, 2};
    const double b[4] = {1, 2.5, 6.5, 0.5};
    const double c[5] = {100, 1, 1, 1, 1};
    check_shares(a, 3);
    check_shares(b, 4);
    check_shares(c, 5);
}

Test(weighted, smooth_sequence_interleaves_like_nginx)
{
    /* nginx's example: weights 5, 1, 1 give a a b a c a a. */
    void *inst = mk(NULL);
    compass_candidate c[3] = {cand("a", 0), cand("b", 0), cand("c", 0)};
    compass_route_request rr = req();
    size_t order[3], want[7] = {0, 0, 1, 0, 2, 0, 0};
    c[0].weight = 5;
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 7; i++)
            cr_assert_eq(first(inst, &rr, c, 3, order), want[i], "round %d pick %d", round, i);
}

Test(weighted, open_breaker_and_zero_weight_are_never_first)
{
    void *inst = mk(NULL);
    compass_candidate c[4] = {cand("a", COMPASS_BREAKER_OPEN), cand("b", 0), cand("c", 0),
                              cand("d", 0)};
    compass_route_request rr = req();
    size_t order[4], counts[4] = {0};
    c[0].weight = 50;
    c[1].weight = 1;
    c[2].weight = 3;
    c[3].weight = 0;
    for (int i = 0; i < 4000; i++) {
        counts[first(inst, &rr, c, 4, order)]++;
        cr_assert_eq(order[3], 0, "the open breaker goes last");
        cr_assert_eq(order[2], 3, "zero weight after weighted closed ones");
    }
    cr_assert_eq(counts[0], 0);
    cr_assert_eq(counts[3], 0);
    cr_assert_eq(counts[1], 1000);
    cr_assert_eq(counts[2], 3000);
}

Test(weighted, half_open_candidates_take_turns_when_nothing_is_closed)
{
    void *inst = mk(NULL);
    compass_candidate c[3] = {cand("a", COMPASS_BREAKER_HALF_OPEN), cand("b", COMPASS_BREAKER_OPEN),
                              cand("c", COMPASS_BREAKER_HALF_OPEN)};
    compass_route_request rr = req();
    size_t order[3], counts[3] = {0};
    c[0].weight = 1;
    c[1].weight = 10;
    c[2].weight = 3;
    for (int i = 0; i < 400; i++)
        counts[first(inst, &rr, c, 3, order)]++;
    cr_assert_eq(counts[1], 0);
    cr_assert_eq(counts[0], 100);
    cr_assert_eq(counts[2], 300);
}

Test(weighted, grows_past_its_initial_slots)
{
    void *inst = mk(NULL);
    compass_candidate c[40];
    compass_route_request rr = req();
    size_t order[40], counts[40] = {0};
    for (size_t i = 0; i < 40; i++) {
        c[i] = cand("x", 0);
        c[i].weight = i == 39 ? 41 : 1;
    }
    for (int i = 0; i < 8000; i++)
        counts[first(inst, &rr, c, 40, order)]++;
    cr_assert_eq(counts[39], 4100);
    cr_assert_eq(counts[0], 100);
}

struct w_thread {
    void *inst;
    size_t counts[3];
};

static void *w_worker(void *arg)
{
    struct w_thread *t = (struct w_thread *)arg;
    compass_candidate c[3] = {cand("a", 0), cand("b", 0), cand("c", 0)};
    const compass_candidate *cp[3];
    compass_route_request rr = req();
    size_t order[3], m;
    c[0].weight = 6;
    c[1].weight = 3;
    c[2].weight = 1;
    ptrs(cp, c, 3);
    for (int i = 0; i < 2500; i++) {
        m = 3;
        if (desc->ops.router->rank(t->inst, NULL, &rr, cp, 3, order, &m, NULL) == 0)
            t->counts[order[0]]++;
    }
    return NULL;
}

Test(weighted, concurrent_calls_keep_exact_shares)
{
    void *inst = mk(NULL);
    struct w_thread t[4];
    pthread_t th[4];
    size_t total[3] = {0};
    memset(t, 0, sizeof(t));
    for (int i = 0; i < 4; i++) {
        t[i].inst = inst;
        cr_assert_eq(pthread_create(&th[i], NULL, w_worker, &t[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        for (int k = 0; k < 3; k++)
            total[k] += t[i].counts[k];
    }
    cr_assert_eq(total[0], 6000);
    cr_assert_eq(total[1], 3000);
    cr_assert_eq(total[2], 1000);
}

/* ---- shared behaviour every router must have ---- */

#include "../common/contract_tests.h"

Test(weighted, out_of_memory_in_instance_new_fails_cleanly)
{
    for (long nth = 1; nth <= 3; nth++) {
        compass_err err = {0};
        void *inst;
        compass_fakehost_fail_alloc_at(fh, nth);
        inst = compass_fakehost_instance(fh, "route", NULL, NULL, NULL, &err);
        compass_fakehost_fail_alloc_at(fh, 0);
        if (nth <= 2) {
            cr_assert_null(inst, "allocation %ld failed, yet an instance", nth);
            cr_assert_eq(err.code, COMPASS_ENOMEM);
        } else {
            cr_assert_not_null(inst, "%s", err.msg);
        }
    }
}

Test(weighted, failed_growth_falls_back_to_weight_order)
{
    void *inst = mk(NULL);
    compass_candidate c[40];
    compass_route_request rr = req();
    size_t order[40];
    for (size_t i = 0; i < 40; i++) {
        c[i] = cand("x", 0);
        c[i].weight = i == 35 ? 9 : 1;
    }
    compass_fakehost_fail_alloc_at(fh, 1);
    cr_assert_eq(first(inst, &rr, c, 40, order), 35);
    cr_assert_eq(first(inst, &rr, c, 40, order), 35, "the next call grows and starts the cycle");
    compass_fakehost_fail_alloc_at(fh, 0);
}
