/*
 * least_busy: the candidate with the lowest load first, where load is in_flight / capacity
 * (in_flight as is when the capacity is 0, i.e. unlimited). Ties keep configuration order.
 */
#include <compass/plugin.h>

#include "../common/rank_util.h"

typedef struct lb_inst {
    const compass_host *h;
} lb_inst;

static int lb_new(const compass_host *h, const compass_instance_info *info, void **inst,
                  compass_err *err)
{
    lb_inst *p;
    (void)info;
    if (!h || !inst)
        return compass_err_set(err, COMPASS_EINVAL, "least_busy: NULL argument");
    p = (lb_inst *)h->alloc(h, sizeof(*p));
    if (!p)
        return compass_err_set(err, COMPASS_ENOMEM, "least_busy: out of memory");
    p->h = h;
    *inst = p;
    return COMPASS_OK;
}

static void lb_free(void *inst)
{
    lb_inst *p = (lb_inst *)inst;
    if (p)
        p->h->free(p->h, p);
}

static double lb_load(const compass_candidate *c)
{
    double f = c->in_flight > 0 ? (double)c->in_flight : 0.0;
    return c->capacity > 0 ? f / (double)c->capacity : f;
}

static int lb_cmp(const void *ctx, size_t a, size_t b)
{
    const compass_candidate *const *c = (const compass_candidate *const *)ctx;
    int d = rk_health(c[a]) - rk_health(c[b]);
    if (d)
        return d;
    return rk_cmp_double(lb_load(c[a]), lb_load(c[b]));
}

static int lb_rank(void *inst, compass_req *req, const compass_route_request *rr,
                   const compass_candidate *const *cands, size_t n, size_t *order,
                   size_t *n_order, compass_err *err)
{
    size_t m;
    int rc;
    (void)inst;
    (void)req;
    rc = rk_filter("least_busy", rr, cands, n, order, n_order, &m, err);
    if (rc)
        return rc;
    rk_sort(order, m, lb_cmp, cands);
    return rk_done(n_order, m);
}

static const compass_router_ops lb_ops = {
    .size = sizeof(compass_router_ops),
    .instance_new = lb_new,
    .instance_free = lb_free,
    .rank = lb_rank,
};

static const compass_plugin_desc lb_desc = {
    COMPASS_PLUGIN_DESC_INIT,
    .kind = COMPASS_PLUGIN_ROUTER,
    .name = "least_busy",
    .version = "1.0.0",
    .summary = "lowest in-flight load (relative to capacity) first",
    .options = NULL,
    .options_size = 0,
    .ops.router = &lb_ops,
};

COMPASS_PLUGIN_DEFINE(least_busy, lb_desc)
