/*
 * Shared, header-only helpers for the built-in router plugins (included by relative path;
 * every router is its own .so, so nothing here is a shared library or an exported symbol).
 *
 * What every router does the same way:
 *   - candidates that cannot serve the request are dropped: the request has tools and the
 *     candidate lacks COMPASS_CAP_TOOLS, it has images and the candidate lacks
 *     COMPASS_CAP_VISION, or the candidate's context window is known and smaller than the
 *     estimated prompt. If none is left, rank fails with COMPASS_ENOTFOUND and a message
 *     naming what was missing;
 *   - breaker state dominates the strategy: CLOSED candidates first, then HALF_OPEN, then
 *     OPEN (still listed so a request can try them when everything else failed);
 *   - ties keep configuration order (position).
 *
 * Nothing here allocates: rank() works in the order[] buffer the host passes.
 */
#ifndef COMPASS_ROUTERS_RANK_UTIL_H
#define COMPASS_ROUTERS_RANK_UTIL_H

#include <compass/plugin.h>

#include <math.h>
#include <stdio.h>

/** Health class for ordering: 0 closed, 1 half-open, 2 open (or an unknown state). */
static inline int rk_health(const compass_candidate *c)
{
    switch (c->breaker) {
    case COMPASS_BREAKER_CLOSED:
        return 0;
    case COMPASS_BREAKER_HALF_OPEN:
        return 1;
    default:
        return 2;
    }
}

/** Why a candidate cannot serve rr: 0 when it can, else one of the RK_MISS_* bits. */
#define RK_MISS_TOOLS 1u
#define RK_MISS_VISION 2u
#define RK_MISS_CONTEXT 4u

static inline unsigned rk_misses(const compass_route_request *rr, const compass_candidate *c)
{
    unsigned m = 0;
    if (rr->has_tools && !(c->caps & COMPASS_CAP_TOOLS))
        m |= RK_MISS_TOOLS;
    if (rr->has_images && !(c->caps & COMPASS_CAP_VISION))
        m |= RK_MISS_VISION;
    if (c->context_window > 0 && rr->est_prompt_tokens > c->context_window)
        m |= RK_MISS_CONTEXT;
    return m;
}

/* Fills err with why no candidate of n could serve rr. Error path only. */
static inline int rk_fail_none(const compass_route_request *rr,
                               const compass_candidate *const *c, size_t n, const char *router,
                               compass_err *err)
{
    size_t tools = 0, vision = 0, context = 0, i;
    int64_t largest = 0;
    char msg[400];
    int w;

    for (i = 0; i < n; i++) {
        unsigned m = rk_misses(rr, c[i]);
        tools += (m & RK_MISS_TOOLS) != 0;
        vision += (m & RK_MISS_VISION) != 0;
        if (m & RK_MISS_CONTEXT) {
            context++;
            if (c[i]->context_window > largest)
                largest = c[i]->context_window;
        }
    }
    w = snprintf(msg, sizeof(msg), "router %s, route \"%.*s\": no candidate can serve the request",
                 router, (int)(rr->route.len > 64 ? 64 : rr->route.len),
                 rr->route.ptr ? rr->route.ptr : "");
    if (n == 0 && w > 0 && (size_t)w < sizeof(msg))
        snprintf(msg + w, sizeof(msg) - (size_t)w, " (the route has no candidates)");
    if (tools && w > 0 && (size_t)w < sizeof(msg))
        w += snprintf(msg + w, sizeof(msg) - (size_t)w,
                      "; missing capability tools (%zu of %zu candidates lack it)", tools, n);
    if (vision && w > 0 && (size_t)w < sizeof(msg))
        w += snprintf(msg + w, sizeof(msg) - (size_t)w,
                      "; missing capability vision (%zu of %zu candidates lack it)", vision, n);
    if (context && w > 0 && (size_t)w < sizeof(msg))
        snprintf(msg + w, sizeof(msg) - (size_t)w,
                 "; context window too small (%zu of %zu candidates; prompt is ~%lld tokens, "
                 "largest such window %lld)",
                 context, n, (long long)rr->est_prompt_tokens, (long long)largest);
    return compass_err_set(err, COMPASS_ENOTFOUND, msg);
}

/**
 * Checks the arguments of rank() and writes into order[] the indexes of the candidates that
 * can serve rr, in position order. *m gets their count. Returns 0, COMPASS_EINVAL, or
 * COMPASS_ENOTFOUND (with a message naming the missing capability) when none is left.
 */
static inline int rk_filter(const char *router, const compass_route_request *rr,
                            const compass_candidate *const *c, size_t n, size_t *order,
                            const size_t *n_order, size_t *m, compass_err *err)
{
    size_t i, k = 0;

    *m = 0;
    if (!rr || (!c && n) || !order || !n_order)
        return compass_err_set(err, COMPASS_EINVAL, "rank: NULL argument");
    if (*n_order < n)
        return compass_err_set(err, COMPASS_EINVAL,
                               "rank: order[] capacity is smaller than the candidate count");
    for (i = 0; i < n; i++)
        if (rk_misses(rr, c[i]) == 0)
            order[k++] = i;
    if (k == 0)
        return rk_fail_none(rr, c, n, router, err);
    *m = k;
    return COMPASS_OK;
}

/** A strict comparison of two candidate indexes: < 0 when a goes before b, 0 for a tie. */
typedef int (*rk_cmp_fn)(const void *ctx, size_t a, size_t b);

/**
 * Stable insertion sort of order[0..m) by cmp: ties keep their current relative order.
 * Candidate lists are short (tens), where this beats anything fancier and never allocates.
 */
static inline void rk_sort(size_t *order, size_t m, rk_cmp_fn cmp, const void *ctx)
{
    size_t i, j;
    for (i = 1; i < m; i++) {
        size_t v = order[i];
        for (j = i; j > 0 && cmp(ctx, v, order[j - 1]) < 0; j--)
            order[j] = order[j - 1];
        order[j] = v;
    }
}

/** Orders by health class only (stable): the shared tail of every strategy. */
static inline int rk_cmp_health(const void *ctx, size_t a, size_t b)
{
    const compass_candidate *const *c = (const compass_candidate *const *)ctx;
    return rk_health(c[a]) - rk_health(c[b]);
}

/** Three-way compare of doubles (NaN sorts last). */
static inline int rk_cmp_double(double a, double b)
{
    if (isnan(a))
        return isnan(b) ? 0 : 1;
    if (isnan(b))
        return -1;
    return (a > b) - (a < b);
}

/** Moves order[i] to the front, shifting order[0..i) one place back. */
static inline void rk_move_front(size_t *order, size_t i)
{
    size_t v = order[i];
    for (; i > 0; i--)
        order[i] = order[i - 1];
    order[0] = v;
}

/**
 * The output tokens to expect for rr: chat->max_tokens or max_completion_tokens when the
 * client set one, else dflt.
 */
static inline int64_t rk_expected_output(const compass_route_request *rr, int64_t dflt)
{
    const compass_chat_request *ch = rr->chat;
    if (ch) {
        if ((ch->set & COMPASS_SET_MAX_COMPLETION_TOKENS) && ch->max_completion_tokens > 0)
            return ch->max_completion_tokens;
        if ((ch->set & COMPASS_SET_MAX_TOKENS) && ch->max_tokens > 0)
            return ch->max_tokens;
    }
    return dflt > 0 ? dflt : 0;
}

/** Estimated USD cost of rr on c with out_tokens output (prices are per 1M tokens). */
static inline double rk_est_cost(const compass_route_request *rr, const compass_candidate *c,
                                 int64_t out_tokens)
{
    double in = rr->est_prompt_tokens > 0 ? (double)rr->est_prompt_tokens : 0.0;
    return (in * c->price_in + (double)out_tokens * c->price_out) / 1e6;
}

/** The latency that matters for rr: time to first token when streaming, else total. */
static inline double rk_latency(const compass_route_request *rr, const compass_candidate *c)
{
    return rr->stream ? c->ttft_ewma_ms : c->latency_ewma_ms;
}

/** Writes the count and returns success: the common end of rank(). */
static inline int rk_done(size_t *n_order, size_t m)
{
    *n_order = m;
    return COMPASS_OK;
}

/* A small, fast PRNG (splitmix64) for routers that need randomness. */
static inline uint64_t rk_splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/** Uniform double in [0, 1) from 53 random bits. */
static inline double rk_unit(uint64_t r)
{
    return (double)(r >> 11) * (1.0 / 9007199254740992.0);
}

#endif /* COMPASS_ROUTERS_RANK_UTIL_H */
