/*
 * least_latency: the fastest candidate first, by latency_ewma_ms (ttft_ewma_ms when the
 * client streams, since then the first token is what the user waits for). Candidates with
 * no measurement yet (EWMA 0) come first so they get measured. With probability `explore`
 * a random healthy candidate other than the fastest goes first instead, so a deployment
 * that was slow once (or just recovered) gets a fresh measurement rather than being starved.
 *
 * Randomness comes from a per-thread splitmix64 state: no shared state, no locks.
 */
#include <compass/plugin.h>

#include <math.h>
#include <stdatomic.h>
#include <stddef.h>

#include "../common/rank_util.h"

typedef struct ll_options {
    double explore;
} ll_options;

typedef struct ll_inst {
    const compass_host *h;
    double explore;
} ll_inst;

static const compass_option ll_option_table[] = {
    {"explore", COMPASS_OPT_DOUBLE, "0.05", 0, offsetof(ll_options, explore),
     "probability (0..1) of putting a random healthy non-fastest candidate first"},
    {NULL, 0, NULL, 0, 0, NULL},
};

static _Atomic uint64_t ll_seed_counter;
static _Thread_local uint64_t ll_rng;
static _Thread_local int ll_rng_ready;

static uint64_t ll_random(const compass_host *h)
{
    if (!ll_rng_ready) {
        uint64_t s = atomic_fetch_add_explicit(&ll_seed_counter, 1, memory_order_relaxed);
        ll_rng = (s + 1) * 0xD1B54A32D192ED03ull ^ (uint64_t)(uintptr_t)&ll_rng;
        if (h && h->monotonic_ns)
            ll_rng ^= h->monotonic_ns(h);
        ll_rng_ready = 1;
    }
    return rk_splitmix64(&ll_rng);
}

static int ll_new(const compass_host *h, const compass_instance_info *info, void **inst,
                  compass_err *err)
{
    const ll_options *o = info ? (const ll_options *)info->options : NULL;
    ll_inst *p;
    double explore = o ? o->explore : 0.05;
    if (!h || !inst)
        return compass_err_set(err, COMPASS_EINVAL, "least_latency: NULL argument");
    if (!(explore >= 0.0 && explore <= 1.0))
        return compass_err_set(err, COMPASS_ECONFIG,
                               "least_latency: option explore must be between 0 and 1");
    p = (ll_inst *)h->alloc(h, sizeof(*p));
    if (!p)
        return compass_err_set(err, COMPASS_ENOMEM, "least_latency: out of memory");
    p->h = h;
    p->explore = explore;
    *inst = p;
    return COMPASS_OK;
}

static void ll_free(void *inst)
{
    ll_inst *p = (ll_inst *)inst;
    if (p)
        p->h->free(p->h, p);
}

typedef struct ll_ctx {
    const compass_route_request *rr;
    const compass_candidate *const *c;
} ll_ctx;

/* Latency key: unmeasured (0, negative, NaN) sorts before every measurement. */
static double ll_key(const ll_ctx *x, size_t i)
{
    double v = rk_latency(x->rr, x->c[i]);
    return v > 0 ? v : -1.0;
}

static int ll_cmp(const void *vctx, size_t a, size_t b)
{
    const ll_ctx *x = (const ll_ctx *)vctx;
    int d = rk_health(x->c[a]) - rk_health(x->c[b]);
    if (d)
        return d;
    return rk_cmp_double(ll_key(x, a), ll_key(x, b));
}

static int ll_rank(void *inst, compass_req *req, const compass_route_request *rr,
                   const compass_candidate *const *cands, size_t n, size_t *order,
                   size_t *n_order, compass_err *err)
{
    ll_inst *p = (ll_inst *)inst;
    ll_ctx x;
    size_t m, healthy, i;
    int rc;
    (void)req;
    if (!p)
        return compass_err_set(err, COMPASS_EINVAL, "least_latency: NULL instance");
    rc = rk_filter("least_latency", rr, cands, n, order, n_order, &m, err);
    if (rc)
        return rc;
    x.rr = rr;
    x.c = cands;
    rk_sort(order, m, ll_cmp, &x);

    if (p->explore > 0 && m > 1 && rk_health(cands[order[0]]) == 0) {
        uint64_t r = ll_random(p->h);
        if (rk_unit(r) < p->explore) {
            /* The closed candidates are a prefix after the sort. */
            for (healthy = 1; healthy < m && rk_health(cands[order[healthy]]) == 0; healthy++)
                ;
            if (healthy > 1) {
                i = 1 + (size_t)(rk_unit(ll_random(p->h)) * (double)(healthy - 1));
                if (i >= healthy)
                    i = healthy - 1;
                rk_move_front(order, i);
            }
        }
    }
    return rk_done(n_order, m);
}

static const compass_router_ops ll_ops = {
    .size = sizeof(compass_router_ops),
    .instance_new = ll_new,
    .instance_free = ll_free,
    .rank = ll_rank,
};

static const compass_plugin_desc ll_desc = {
    COMPASS_PLUGIN_DESC_INIT,
    .kind = COMPASS_PLUGIN_ROUTER,
    .name = "least_latency",
    .version = "1.0.0",
    .summary = "fastest candidate first (EWMA latency, TTFT when streaming), with exploration",
    .options = ll_option_table,
    .options_size = sizeof(ll_options),
    .ops.router = &ll_ops,
};

COMPASS_PLUGIN_DEFINE(least_latency, ll_desc)
