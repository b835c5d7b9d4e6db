#include <compass/plugin.h>
#include <compass_fakehost.h>

#include <criterion/criterion.h>
#include <string.h>

static compass_fakehost *fh;
static const compass_plugin_desc *desc;

static void setup(void)
{
    compass_err err = {0};
    fh = compass_fakehost_new("least_busy");
    cr_assert_not_null(fh);
    desc = compass_fakehost_load(fh, COMPASS_PLUGIN_DIR "/least_busy.so", &err);
    cr_assert_not_null(desc, "load: %s", err.msg);
    cr_assert_eq(desc->kind, COMPASS_PLUGIN_ROUTER);
    cr_assert_str_eq(desc->name, "least_busy");
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

TestSuite(least_busy, .init = setup, .fini = teardown);

Test(least_busy, lowest_in_flight_over_capacity_first)
{
    void *inst = mk(NULL);
    compass_candidate c[4] = {cand("a", 0), cand("b", 0), cand("c", 0), cand("d", 0)};
    compass_route_request rr = req();
    size_t order[4], m, want[4] = {1, 3, 0, 2};
    c[0].in_flight = 8;  c[0].capacity = 10;  /* 0.8 */
    c[1].in_flight = 30; c[1].capacity = 100; /* 0.3 */
    c[2].in_flight = 9;  c[2].capacity = 10;  /* 0.9 */
    c[3].in_flight = 5;  c[3].capacity = 10;  /* 0.5 */
    cr_assert_eq(rank(inst, &rr, c, 4, order, &m), 0);
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(order[i], want[i], "order[%zu]=%zu", i, order[i]);
}

Test(least_busy, zero_capacity_counts_in_flight_as_is)
{
    void *inst = mk(NULL);
    compass_candidate c[3] = {cand("a", 0), cand("b", 0), cand("c", 0)};
    compass_route_request rr = req();
    size_t order[3], m;
    c[0].in_flight = 3;                       /* unlimited: load 3 */
    c[1].in_flight = 20; c[1].capacity = 10;  /* 2.0 */
    c[2].in_flight = 1;                       /* unlimited: load 1 */
    cr_assert_eq(rank(inst, &rr, c, 3, order, &m), 0);
    cr_assert_eq(order[0], 2);
    cr_assert_eq(order[1], 1);
    cr_assert_eq(order[2], 0);
}

Test(least_busy, ties_keep_position)
{
    void *inst = mk(NULL);
    compass_candidate c[4] = {cand("a", 0), cand("b", 0), cand("c", 0), cand("d", 0)};
    compass_route_request rr = req();
    size_t order[4], m;
    c[0].in_flight = 4; c[0].capacity = 8;
    c[1].in_flight = 1; c[1].capacity = 2;
    c[2].in_flight = 0;
    c[3].in_flight = 0; c[3].capacity = 5;
    cr_assert_eq(rank(inst, &rr, c, 4, order, &m), 0);
    cr_assert_eq(order[0], 2);
    cr_assert_eq(order[1], 3);
    cr_assert_eq(order[2], 0);
    cr_assert_eq(order[3], 1);
}

Test(least_busy, idle_open_breaker_still_last)
{
    void *inst = mk(NULL);
    compass_candidate c[3] = {cand("a", COMPASS_BREAKER_OPEN), cand("b", COMPASS_BREAKER_HALF_OPEN),
                              cand("c", 0)};
    compass_route_request rr = req();
    size_t order[3], m;
    c[2].in_flight = 100;
    cr_assert_eq(rank(inst, &rr, c, 3, order, &m), 0);
    cr_assert_eq(order[0], 2);
    cr_assert_eq(order[1], 1);
    cr_assert_eq(order[2], 0);
}

/* ---- shared behaviour every router must have ---- */

#include "../common/contract_tests.h"
