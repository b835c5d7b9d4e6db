/*
 * cost: the cheapest candidate for this request first. The estimate is
 *   est_prompt_tokens x price_in + expected output x price_out     (prices per 1M tokens)
 * where the expected output is the client's max_completion_tokens or max_tokens when set,
 * else the option expected_output_tokens. So a model with cheap input and dear output wins
 * short-answer requests and loses output-heavy ones. Equal costs go to the faster candidate
 * (latency EWMA; unmeasured after measured), then configuration order.
 */
#include <compass/plugin.h>

#include <stddef.h>

#include "../common/rank_util.h"

typedef struct cost_options {
    int64_t expected_output_tokens;
} cost_options;

typedef struct cost_inst {
    const compass_host *h;
    int64_t expected_output;
} cost_inst;

static const compass_option cost_option_table[] = {
    {"expected_output_tokens", COMPASS_OPT_INT, "256", 0,
     offsetof(cost_options, expected_output_tokens),
     "output tokens to assume when the request sets neither max_tokens nor "
     "max_completion_tokens"},
    {NULL, 0, NULL, 0, 0, NULL},
};

static int cost_new(const compass_host *h, const compass_instance_info *info, void **inst,
                    compass_err *err)
{
    const cost_options *o = info ? (const cost_options *)info->options : NULL;
    cost_inst *p;
    int64_t out = o ? o->expected_output_tokens : 256;
    if (!h || !inst)
        return compass_err_set(err, COMPASS_EINVAL, "cost: NULL argument");
    if (out < 0)
        return compass_err_set(err, COMPASS_ECONFIG,
                               "cost: option expected_output_tokens must not be negative");
    p = (cost_inst *)h->alloc(h, sizeof(*p));
    if (!p)
        return compass_err_set(err, COMPASS_ENOMEM, "cost: out of memory");
    p->h = h;
    p->expected_output = out;
    *inst = p;
    return COMPASS_OK;
}

static void cost_free(void *inst)
{
    cost_inst *p = (cost_inst *)inst;
    if (p)
        p->h->free(p->h, p);
}

typedef struct cost_ctx {
    const compass_route_request *rr;
    const compass_candidate *const *c;
    int64_t out;
} cost_ctx;

static double cost_latency_key(const cost_ctx *x, size_t i)
{
    double v = rk_latency(x->rr, x->c[i]);
    return v > 0 ? v : 1e300; /* unmeasured after measured */
}

static int cost_cmp(const void *vctx, size_t a, size_t b)
{
    const cost_ctx *x = (const cost_ctx *)vctx;
    int d = rk_health(x->c[a]) - rk_health(x->c[b]);
    if (d)
        return d;
    d = rk_cmp_double(rk_est_cost(x->rr, x->c[a], x->out), rk_est_cost(x->rr, x->c[b], x->out));
    if (d)
        return d;
    return rk_cmp_double(cost_latency_key(x, a), cost_latency_key(x, b));
}

static int cost_rank(void *inst, compass_req *req, const compass_route_request *rr,
                     const compass_candidate *const *cands, size_t n, size_t *order,
                     size_t *n_order, compass_err *err)
{
    cost_inst *p = (cost_inst *)inst;
    cost_ctx x;
    size_t m;
    int rc;
    (void)req;
    if (!p)
        return compass_err_set(err, COMPASS_EINVAL, "cost: NULL instance");
    rc = rk_filter("cost", rr, cands, n, order, n_order, &m, err);
    if (rc)
        return rc;
    x.rr = rr;
    x.c = cands;
    x.out = rk_expected_output(rr, p->expected_output);
    rk_sort(order, m, cost_cmp, &x);
    return rk_done(n_order, m);
}

static const compass_router_ops cost_ops = {
    .size = sizeof(compass_router_ops),
    .instance_new = cost_new,
    .instance_free = cost_free,
    .rank = cost_rank,
};

static const compass_plugin_desc cost_desc = {
    COMPASS_PLUGIN_DESC_INIT,
    .kind = COMPASS_PLUGIN_ROUTER,
    .name = "cost",
    .version = "1.0.0",
    .summary = "cheapest estimated cost for this request first",
    .options = cost_option_table,
    .options_size = sizeof(cost_options),
    .ops.router = &cost_ops,
};

COMPASS_PLUGIN_DEFINE(cost, cost_desc)
