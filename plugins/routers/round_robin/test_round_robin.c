#include <compass/plugin.h>
#include <compass_fakehost.h>

#include <criterion/criterion.h>
#include <string.h>

static compass_fakehost *fh;
static const compass_plugin_desc *desc;

static void setup(void)
{
    compass_err err = {0};
    fh = compass_fakehost_new("round_robin");
    cr_assert_not_null(fh);
    desc = compass_fakehost_load(fh, COMPASS_PLUGIN_DIR "/round_robin.so", &err);
    cr_assert_not_null(desc, "load: %s", err.msg);
    cr_assert_eq(desc->kind, COMPASS_PLUGIN_ROUTER);
    cr_assert_str_eq(desc->name, "round_robin");
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

#include <pthread.h>

TestSuite(round_robin, .init = setup, .fini = teardown);

Test(round_robin, rotates_the_start_each_call)
{
    void *inst = mk(NULL);
    compass_candidate c[3] = {cand("a", 0), cand("b", 0), cand("c", 0)};
    compass_route_request rr = req();
    size_t order[3], m, counts[3] = {0}, prev = 99;
    for (int i = 0; i < 300; i++) {
        cr_assert_eq(rank(inst, &rr, c, 3, order, &m), 0);
        cr_assert_eq(m, 3);
        cr_assert_eq(order[1], (order[0] + 1) % 3, "a rotation keeps the cycle");
        cr_assert_eq(order[2], (order[0] + 2) % 3);
        if (prev != 99)
            cr_assert_eq(order[0], (prev + 1) % 3, "the start moves one place per call");
        prev = order[0];
        counts[order[0]]++;
    }
    for (int i = 0; i < 3; i++)
        cr_assert_eq(counts[i], 100);
}

Test(round_robin, open_breaker_takes_no_turn)
{
    void *inst = mk(NULL);
    compass_candidate c[3] = {cand("a", 0), cand("b", COMPASS_BREAKER_OPEN), cand("c", 0)};
    compass_route_request rr = req();
    size_t order[3], m, counts[3] = {0};
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(rank(inst, &rr, c, 3, order, &m), 0);
        cr_assert_eq(order[2], 1);
        counts[order[0]]++;
    }
    cr_assert_eq(counts[0], 50);
    cr_assert_eq(counts[2], 50);
}

Test(round_robin, skips_unfit_candidates_in_rotation)
{
    void *inst = mk(NULL);
    compass_candidate c[4] = {cand("a", 0), cand("b", 0), cand("c", 0), cand("d", 0)};
    compass_route_request rr = req();
    size_t order[4], m, counts[4] = {0};
    c[1].caps = 0;
    rr.has_tools = 1;
    for (int i = 0; i < 300; i++) {
        cr_assert_eq(rank(inst, &rr, c, 4, order, &m), 0);
        cr_assert_eq(m, 3);
        counts[order[0]]++;
    }
    cr_assert_eq(counts[1], 0);
    cr_assert_eq(counts[0], 100);
    cr_assert_eq(counts[2], 100);
    cr_assert_eq(counts[3], 100);
}

struct rr_thread {
    void *inst;
    size_t counts[4];
};

static void *rr_worker(void *arg)
{
    struct rr_thread *t = (struct rr_thread *)arg;
    compass_candidate c[4] = {cand("a", 0), cand("b", 0), cand("c", 0), cand("d", 0)};
    const compass_candidate *cp[4];
    compass_route_request rr = req();
    size_t order[4], m;
    ptrs(cp, c, 4);
    for (int i = 0; i < 10000; i++) {
        m = 4;
        if (desc->ops.router->rank(t->inst, NULL, &rr, cp, 4, order, &m, NULL) == 0)
            t->counts[order[0]]++;
    }
    return NULL;
}

Test(round_robin, concurrent_calls_share_one_counter)
{
    void *inst = mk(NULL);
    struct rr_thread t[4];
    pthread_t th[4];
    size_t total[4] = {0};
    memset(t, 0, sizeof(t));
    for (int i = 0; i < 4; i++) {
        t[i].inst = inst;
        cr_assert_eq(pthread_create(&th[i], NULL, rr_worker, &t[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        for (int k = 0; k < 4; k++)
            total[k] += t[i].counts[k];
    }
    for (int k = 0; k < 4; k++)
        cr_assert_eq(total[k], 10000, "candidate %d first %zu times", k, total[k]);
}

/* ---- shared behaviour every router must have ---- */

#include "../common/contract_tests.h"
