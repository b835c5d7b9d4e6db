/*
 * weighted: smooth weighted round-robin (nginx's ngx_http_upstream_get_peer) over
 * candidate.weight. Each call adds every participant's weight to its running "current"
 * value, picks the largest, and takes the total off the pick. Over any window the picks
 * match weight/total exactly, and heavy candidates are interleaved rather than bunched.
 *
 * Participants are the candidates of the healthiest breaker class present with a positive
 * weight. The rest follow: the other participants by current value (who is next), then
 * everything else by breaker class, weight, position. State is one double per candidate
 * position, under a mutex (a handful of additions per call).
 */
#include <compass/plugin.h>

#include <math.h>
#include <pthread.h>

#include "../common/rank_util.h"

#define W_INITIAL_SLOTS 32

typedef struct w_inst {
    const compass_host *h;
    pthread_mutex_t mu;
    double *cur;  /* running current weight per candidate position */
    size_t cap;
} w_inst;

typedef struct w_ctx {
    const compass_candidate *const *c;
    const double *cur; /* NULL when the state could not grow */
    int cls;           /* the participating breaker class */
    size_t best;
} w_ctx;

static double w_weight(const compass_candidate *c)
{
    return isfinite(c->weight) && c->weight > 0 ? c->weight : 0.0;
}

static int w_new(const compass_host *h, const compass_instance_info *info, void **inst,
                 compass_err *err)
{
    w_inst *p;
    (void)info;
    if (!h || !inst)
        return compass_err_set(err, COMPASS_EINVAL, "weighted: NULL argument");
    p = (w_inst *)h->alloc(h, sizeof(*p));
    if (!p)
        return compass_err_set(err, COMPASS_ENOMEM, "weighted: out of memory");
    p->h = h;
    p->cap = W_INITIAL_SLOTS;
    p->cur = (double *)h->alloc(h, p->cap * sizeof(double));
    if (!p->cur) {
        h->free(h, p);
        return compass_err_set(err, COMPASS_ENOMEM, "weighted: out of memory");
    }
    memset(p->cur, 0, p->cap * sizeof(double));
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        h->free(h, p->cur);
        h->free(h, p);
        return compass_err_set(err, COMPASS_ENOMEM, "weighted: cannot create a mutex");
    }
    *inst = p;
    return COMPASS_OK;
}

static void w_free(void *inst)
{
    w_inst *p = (w_inst *)inst;
    if (!p)
        return;
    pthread_mutex_destroy(&p->mu);
    p->h->free(p->h, p->cur);
    p->h->free(p->h, p);
}

/* Grows the state to n slots (under the lock). Only when a route has more candidates than
 * ever before, so rank stays allocation-free in steady state. */
static int w_reserve(w_inst *p, size_t n)
{
    double *nc;
    size_t cap = p->cap;
    if (n <= cap)
        return 1;
    while (cap < n)
        cap *= 2;
    nc = (double *)p->h->realloc(p->h, p->cur, cap * sizeof(double));
    if (!nc)
        return 0;
    memset(nc + p->cap, 0, (cap - p->cap) * sizeof(double));
    p->cur = nc;
    p->cap = cap;
    return 1;
}

static int w_cmp(const void *vctx, size_t a, size_t b)
{
    const w_ctx *x = (const w_ctx *)vctx;
    const compass_candidate *ca = x->c[a], *cb = x->c[b];
    int ha = rk_health(ca), hb = rk_health(cb), pa, pb, r;
    if (ha != hb)
        return ha - hb;
    if ((a == x->best) != (b == x->best))
        return a == x->best ? -1 : 1;
    pa = x->cur && ha == x->cls && w_weight(ca) > 0;
    pb = x->cur && hb == x->cls && w_weight(cb) > 0;
    if (pa != pb)
        return pb - pa;
    if (pa && (r = rk_cmp_double(x->cur[b], x->cur[a])) != 0)
        return r;
    return rk_cmp_double(w_weight(cb), w_weight(ca));
}

static int w_rank(void *inst, compass_req *req, const compass_route_request *rr,
                  const compass_candidate *const *cands, size_t n, size_t *order,
                  size_t *n_order, compass_err *err)
{
    w_inst *p = (w_inst *)inst;
    w_ctx x;
    size_t m, i;
    double total = 0;
    int rc, have = 0;
    (void)req;
    if (!p)
        return compass_err_set(err, COMPASS_EINVAL, "weighted: NULL instance");
    rc = rk_filter("weighted", rr, cands, n, order, n_order, &m, err);
    if (rc)
        return rc;

    x.c = cands;
    x.cls = 3;
    x.best = (size_t)-1;
    for (i = 0; i < m; i++) {
        int h = rk_health(cands[order[i]]);
        if (h < x.cls)
            x.cls = h;
    }

    pthread_mutex_lock(&p->mu);
    x.cur = w_reserve(p, n) ? p->cur : NULL;
    if (x.cur) {
        for (i = 0; i < m; i++) {
            size_t k = order[i];
            double w = w_weight(cands[k]);
            if (rk_health(cands[k]) != x.cls || w <= 0)
                continue;
            p->cur[k] += w;
            total += w;
            if (!have || p->cur[k] > p->cur[x.best])
                x.best = k;
            have = 1;
        }
        if (have)
            p->cur[x.best] -= total;
    }
    rk_sort(order, m, w_cmp, &x);
    pthread_mutex_unlock(&p->mu);
    return rk_done(n_order, m);
}

static const compass_router_ops w_ops = {
    .size = sizeof(compass_router_ops),
    .instance_new = w_new,
    .instance_free = w_free,
    .rank = w_rank,
};

static const compass_plugin_desc w_desc = {
    COMPASS_PLUGIN_DESC_INIT,
    .kind = COMPASS_PLUGIN_ROUTER,
    .name = "weighted",
    .version = "1.0.0",
    .summary = "smooth weighted round-robin over candidate weights",
    .options = NULL,
    .options_size = 0,
    .ops.router = &w_ops,
};

COMPASS_PLUGIN_DEFINE(weighted, w_desc)
