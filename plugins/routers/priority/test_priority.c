#include <compass/plugin.h>
#include <compass_fakehost.h>

#include <criterion/criterion.h>
#include <string.h>

static compass_fakehost *fh;
static const compass_plugin_desc *desc;
static void *inst;

static void setup(void)
{
    compass_err err = {0};
    fh = compass_fakehost_new("priority");
    cr_assert_not_null(fh);
    desc = compass_fakehost_load(fh, COMPASS_PLUGIN_DIR "/priority.so", &err);
    cr_assert_not_null(desc, "load: %s", err.msg);
    inst = compass_fakehost_instance(fh, "r", NULL, NULL, NULL, &err);
    cr_assert_not_null(inst, "instance: %s", err.msg);
}

static void teardown(void)
{
    compass_fakehost_free(fh);
}

static compass_candidate cand(const char *id, int breaker)
{
    compass_candidate c;
    memset(&c, 0, sizeof(c));
    c.size = sizeof(c);
    c.id = compass_str_c(id);
    c.weight = 1;
    c.breaker = breaker;
    c.caps = COMPASS_CAP_TOOLS | COMPASS_CAP_VISION | COMPASS_CAP_STREAM;
    return c;
}

static compass_route_request req(void)
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

static int rank(const compass_route_request *rr, const compass_candidate *c, size_t n,
                size_t *order, size_t *m, compass_err *err)
{
    const compass_candidate *cp[MAX_CANDS];
    cr_assert_leq(n, MAX_CANDS);
    *m = n;
    return desc->ops.router->rank(inst, NULL, rr, ptrs(cp, c, n), n, order, m, err);
}

TestSuite(priority, .init = setup, .fini = teardown);

Test(priority, descriptor_is_a_router_named_priority)
{
    cr_assert_eq(desc->kind, COMPASS_PLUGIN_ROUTER);
    cr_assert_str_eq(desc->name, "priority");
}

Test(priority, keeps_configured_order)
{
    compass_candidate c[4] = {cand("a", 0), cand("b", 0), cand("c", 0), cand("d", 0)};
    compass_route_request rr = req();
    size_t order[4], m;
    compass_err err = {0};
    cr_assert_eq(rank(&rr, c, 4, order, &m, &err), 0, "%s", err.msg);
    cr_assert_eq(m, 4);
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(order[i], i);
}

Test(priority, open_last_half_open_after_closed)
{
    compass_candidate c[5] = {cand("a", COMPASS_BREAKER_OPEN), cand("b", COMPASS_BREAKER_HALF_OPEN),
                              cand("c", COMPASS_BREAKER_CLOSED), cand("d", COMPASS_BREAKER_OPEN),
                              cand("e", COMPASS_BREAKER_CLOSED)};
    compass_route_request rr = req();
    size_t order[5], m, want[5] = {2, 4, 1, 0, 3};
    compass_err err = {0};
    cr_assert_eq(rank(&rr, c, 5, order, &m, &err), 0, "%s", err.msg);
    cr_assert_eq(m, 5);
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(order[i], want[i], "order[%zu]=%zu want %zu", i, order[i], want[i]);
}

Test(priority, drops_candidates_that_cannot_serve)
{
    compass_candidate c[4] = {cand("notools", 0), cand("novision", 0), cand("small", 0),
                              cand("ok", 0)};
    compass_route_request rr = req();
    size_t order[4], m;
    compass_err err = {0};
    c[0].caps &= ~COMPASS_CAP_TOOLS;
    c[1].caps &= ~COMPASS_CAP_VISION;
    c[2].context_window = 4096;
    rr.has_tools = 1;
    rr.has_images = 1;
    rr.est_prompt_tokens = 5000;
    cr_assert_eq(rank(&rr, c, 4, order, &m, &err), 0, "%s", err.msg);
    cr_assert_eq(m, 1);
    cr_assert_eq(order[0], 3);

    /* Without tools, images or a long prompt all of them serve. */
    rr = req();
    cr_assert_eq(rank(&rr, c, 4, order, &m, &err), 0, "%s", err.msg);
    cr_assert_eq(m, 4);
}

Test(priority, none_left_names_the_missing_capability)
{
    compass_candidate c[2] = {cand("a", 0), cand("b", 0)};
    compass_route_request rr = req();
    size_t order[2], m;
    compass_err err = {0};
    c[0].caps = 0;
    c[1].caps = COMPASS_CAP_VISION;
    rr.has_tools = 1;
    cr_assert_eq(rank(&rr, c, 2, order, &m, &err), COMPASS_ENOTFOUND);
    cr_assert_eq(err.code, COMPASS_ENOTFOUND);
    cr_assert_not_null(strstr(err.msg, "tools"), "%s", err.msg);
    cr_assert_null(strstr(err.msg, "vision"), "%s", err.msg);

    rr = req();
    rr.has_images = 1;
    c[1].caps = 0;
    cr_assert_eq(rank(&rr, c, 2, order, &m, &err), COMPASS_ENOTFOUND);
    cr_assert_not_null(strstr(err.msg, "vision"), "%s", err.msg);

    rr = req();
    rr.est_prompt_tokens = 200000;
    c[0].context_window = c[1].context_window = 128000;
    cr_assert_eq(rank(&rr, c, 2, order, &m, &err), COMPASS_ENOTFOUND);
    cr_assert_not_null(strstr(err.msg, "context window"), "%s", err.msg);
}

Test(priority, no_candidates_is_not_found)
{
    compass_route_request rr = req();
    size_t order[1], m = 1;
    compass_err err = {0};
    cr_assert_eq(desc->ops.router->rank(inst, NULL, &rr, NULL, 0, order, &m, &err),
                 COMPASS_ENOTFOUND);
}

Test(priority, small_order_buffer_is_invalid)
{
    compass_candidate c[3] = {cand("a", 0), cand("b", 0), cand("c", 0)};
    const compass_candidate *cp[3];
    compass_route_request rr = req();
    size_t order[3], m = 2;
    compass_err err = {0};
    cr_assert_eq(desc->ops.router->rank(inst, NULL, &rr, ptrs(cp, c, 3), 3, order, &m, &err),
                 COMPASS_EINVAL);
}

Test(priority, rank_does_not_allocate)
{
    compass_candidate c[3] = {cand("a", 0), cand("b", COMPASS_BREAKER_OPEN), cand("c", 0)};
    compass_route_request rr = req();
    size_t order[3], m;
    compass_err err = {0};
    (void)compass_fakehost_alloc_count(fh);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(rank(&rr, c, 3, order, &m, &err), 0);
    cr_assert_eq(compass_fakehost_alloc_count(fh), 0);
}
