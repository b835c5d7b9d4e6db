/*
 * round_robin: each call starts one place further along the candidate list. The rotation
 * runs within each breaker class (CLOSED, then HALF_OPEN, then OPEN), so an open breaker
 * neither takes a turn nor skews the others' shares. One atomic counter per instance.
 */
#include <compass/plugin.h>

#include <stdatomic.h>

#include "../common/rank_util.h"

typedef struct rr_inst {
    const compass_host *h;
    _Atomic uint64_t next;
} rr_inst;

static int rr_new(const compass_host *h, const compass_instance_info *info, void **inst,
                  compass_err *err)
{
    rr_inst *p;
    (void)info;
    if (!h || !inst)
        return compass_err_set(err, COMPASS_EINVAL, "round_robin: NULL argument");
    p = (rr_inst *)h->alloc(h, sizeof(*p));
    if (!p)
        return compass_err_set(err, COMPASS_ENOMEM, "round_robin: out of memory");
    p->h = h;
    atomic_init(&p->next, 0);
    *inst = p;
    return COMPASS_OK;
}

static void rr_free(void *inst)
{
    rr_inst *p = (rr_inst *)inst;
    if (p)
        p->h->free(p->h, p);
}

static void reverse(size_t *a, size_t n)
{
    size_t i, j;
    if (n < 2)
        return;
    for (i = 0, j = n - 1; i < j; i++, j--) {
        size_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* Rotates a[0..n) left by k. */
static void rotate(size_t *a, size_t n, size_t k)
{
    if (n < 2 || (k %= n) == 0)
        return;
    reverse(a, k);
    reverse(a + k, n - k);
    reverse(a, n);
}

static int rr_rank(void *inst, compass_req *req, const compass_route_request *rr,
                   const compass_candidate *const *cands, size_t n, size_t *order,
                   size_t *n_order, compass_err *err)
{
    rr_inst *p = (rr_inst *)inst;
    uint64_t turn;
    size_t m, lo, hi;
    int rc;
    (void)req;
    if (!p)
        return compass_err_set(err, COMPASS_EINVAL, "round_robin: NULL instance");
    rc = rk_filter("round_robin", rr, cands, n, order, n_order, &m, err);
    if (rc)
        return rc;
    rk_sort(order, m, rk_cmp_health, cands);
    turn = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
    for (lo = 0; lo < m; lo = hi) {
        int cls = rk_health(cands[order[lo]]);
        for (hi = lo + 1; hi < m && rk_health(cands[order[hi]]) == cls; hi++)
            ;
        rotate(order + lo, hi - lo, (size_t)(turn % (hi - lo)));
    }
    return rk_done(n_order, m);
}

static const compass_router_ops rr_ops = {
    .size = sizeof(compass_router_ops),
    .instance_new = rr_new,
    .instance_free = rr_free,
    .rank = rr_rank,
};

static const compass_plugin_desc rr_desc = {
    COMPASS_PLUGIN_DESC_INIT,
    .kind = COMPASS_PLUGIN_ROUTER,
    .name = "round_robin",
    .version = "1.0.0",
    .summary = "rotates the first candidate on every request",
    .options = NULL,
    .options_size = 0,
    .ops.router = &rr_ops,
};

COMPASS_PLUGIN_DEFINE(round_robin, rr_desc)
