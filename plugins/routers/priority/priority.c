/*
 * priority: candidates in the order the route lists them (configuration order), after the
 * shared rules: unfit candidates dropped, CLOSED breakers before HALF_OPEN before OPEN.
 */
#include <compass/plugin.h>

#include "../common/rank_util.h"

typedef struct priority_inst {
    const compass_host *h;
} priority_inst;

static int priority_new(const compass_host *h, const compass_instance_info *info, void **inst,
                        compass_err *err)
{
    priority_inst *p;
    (void)info;
    if (!h || !inst)
        return compass_err_set(err, COMPASS_EINVAL, "priority: NULL argument");
    p = (priority_inst *)h->alloc(h, sizeof(*p));
    if (!p)
        return compass_err_set(err, COMPASS_ENOMEM, "priority: out of memory");
    p->h = h;
    *inst = p;
    return COMPASS_OK;
}

static void priority_free(void *inst)
{
    priority_inst *p = (priority_inst *)inst;
    if (p)
        p->h->free(p->h, p);
}

static int priority_rank(void *inst, compass_req *req, const compass_route_request *rr,
                         const compass_candidate *const *cands, size_t n, size_t *order,
                         size_t *n_order, compass_err *err)
{
    size_t m;
    int rc;
    (void)inst;
    (void)req;
    rc = rk_filter("priority", rr, cands, n, order, n_order, &m, err);
    if (rc)
        return rc;
    rk_sort(order, m, rk_cmp_health, cands);
    return rk_done(n_order, m);
}

static const compass_router_ops priority_ops = {
    .size = sizeof(compass_router_ops),
    .instance_new = priority_new,
    .instance_free = priority_free,
    .rank = priority_rank,
};

static const compass_plugin_desc priority_desc = {
    COMPASS_PLUGIN_DESC_INIT,
    .kind = COMPASS_PLUGIN_ROUTER,
    .name = "priority",
    .version = "1.0.0",
    .summary = "candidates in configured order; healthy breakers first",
    .options = NULL,
    .options_size = 0,
    .ops.router = &priority_ops,
};

COMPASS_PLUGIN_DEFINE(priority, priority_desc)
