/*
 * The behaviour every built-in router shares through rank_util.h, tested once here and
 * included at the end of each router's test file. The including file defines fh, desc, mk(),
 * cand(), req(), ptrs() and rank(), and its fixture as setup()/teardown().
 */
#ifndef COMPASS_ROUTER_CONTRACT_TESTS_H
#define COMPASS_ROUTER_CONTRACT_TESTS_H

TestSuite(router_contract, .init = setup, .fini = teardown);

static int health_of(const compass_candidate *c)
{
    if (c->breaker == COMPASS_BREAKER_CLOSED)
        return 0;
    return c->breaker == COMPASS_BREAKER_HALF_OPEN ? 1 : 2;
}

Test(router_contract, breaker_open_last_half_open_after_closed)
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

Test(router_contract, drops_candidates_that_cannot_serve)
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

Test(router_contract, none_left_is_not_found_naming_the_capability)
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

Test(router_contract, rank_does_not_allocate)
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

#endif
