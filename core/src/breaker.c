/* Circuit breaker per deployment/model: closed -> open when failures exceed the rate over the
 * window (with a minimum volume) or on N consecutive failures; open -> half-open after a
 * cooldown that grows with each opening in a row; half-open lets one probe through at a time
 * and closes after M successes, or opens again on a failure. */
#include "engine.h"

static void window_add(cps_stats *s, const cps_breaker_cfg *b, uint64_t now, int ok)
{
    uint64_t width = (uint64_t)b->window_ms * 1000000u / 10u;
    uint64_t idx = now / (width ? width : 1);
    unsigned slot = (unsigned)(idx % 10);
    if (s->w_idx[slot] != idx) {
        s->w_idx[slot] = idx;
        s->w_ok[slot] = s->w_fail[slot] = 0;
    }
    if (ok)
        s->w_ok[slot]++;
    else
        s->w_fail[slot]++;
}

static void window_sum(const cps_stats *s, const cps_breaker_cfg *b, uint64_t now,
                       uint64_t *ok, uint64_t *fail)
{
    uint64_t width = (uint64_t)b->window_ms * 1000000u / 10u;
    uint64_t cur = now / (width ? width : 1);
    *ok = *fail = 0;
    for (int i = 0; i < 10; i++)
        if (s->w_idx[i] + 10 > cur && s->w_idx[i] <= cur) {
            *ok += s->w_ok[i];
            *fail += s->w_fail[i];
        }
}

static void window_clear(cps_stats *s)
{
    for (int i = 0; i < 10; i++)
        s->w_idx[i] = 0, s->w_ok[i] = s->w_fail[i] = 0;
}

static void open_now(cps_stats *s, const cps_breaker_cfg *b, uint64_t now)
{
    size_t i = (size_t)s->trips < b->n_cooldowns ? (size_t)s->trips : b->n_cooldowns - 1;
    s->breaker = COMPASS_BREAKER_OPEN;
    s->opened_ns = now;
    s->cooldown_ns = (uint64_t)b->cooldowns_ms[i] * 1000000u;
    s->trips++;
    s->half_ok = 0;
    s->probe = 0;
}

/* Called with mu held. */
static void maybe_half_open(cps_stats *s, uint64_t now)
{
    if (s->breaker == COMPASS_BREAKER_OPEN && now - s->opened_ns >= s->cooldown_ns) {
        s->breaker = COMPASS_BREAKER_HALF_OPEN;
        s->half_ok = 0;
        s->probe = 0;
    }
}

int cps_breaker_allow(cps_stats *s, const cps_breaker_cfg *b, uint64_t now)
{
    if (!b->enabled)
        return CPS_ALLOW;
    pthread_mutex_lock(&s->mu);
    maybe_half_open(s, now);
    int r = CPS_ALLOW;
    if (s->breaker == COMPASS_BREAKER_OPEN)
        r = CPS_DENY;
    else if (s->breaker == COMPASS_BREAKER_HALF_OPEN) {
        if (s->probe)
            r = CPS_DENY;
        else {
            s->probe = 1;
            r = CPS_PROBE;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

int cps_breaker_record(cps_stats *s, const cps_breaker_cfg *b, int ok, int probe, uint64_t now)
{
    if (!b->enabled)
        return -1;
    pthread_mutex_lock(&s->mu);
    int before = s->breaker;
    if (probe)
        s->probe = 0;
    switch (s->breaker) {
    case COMPASS_BREAKER_HALF_OPEN:
        if (!ok) {
            open_now(s, b, now);
        } else if (++s->half_ok >= b->half_open_successes) {
            s->breaker = COMPASS_BREAKER_CLOSED;
            s->closed_ns = now;
            window_clear(s);
        }
        break;
    case COMPASS_BREAKER_OPEN:
        break; /* late answers of attempts started before it opened */
    default: {
        /* a breaker that stayed closed for longer than its longest cooldown forgets old trips */
        if (s->trips && s->closed_ns &&
            now - s->closed_ns > (uint64_t)b->cooldowns_ms[b->n_cooldowns - 1] * 1000000u)
            s->trips = 0;
        window_add(s, b, now, ok);
        if (ok)
            break;
        uint64_t wok, wfail;
        window_sum(s, b, now, &wok, &wfail);
        uint64_t vol = wok + wfail;
        if (s->consecutive_fail >= b->consecutive ||
            (vol >= (uint64_t)b->min_volume && (double)wfail > b->failure_rate * (double)vol))
            open_now(s, b, now);
    }
    }
    int after = s->breaker;
    pthread_mutex_unlock(&s->mu);
    return after != before ? after : -1;
}

void cps_breaker_release(cps_stats *s, int probe)
{
    if (!probe)
        return;
    pthread_mutex_lock(&s->mu);
    s->probe = 0;
    pthread_mutex_unlock(&s->mu);
}

int cps_breaker_state(cps_stats *s, const cps_breaker_cfg *b, uint64_t now)
{
    if (!b->enabled)
        return COMPASS_BREAKER_CLOSED;
    pthread_mutex_lock(&s->mu);
    maybe_half_open(s, now);
    int st = s->breaker;
    pthread_mutex_unlock(&s->mu);
    return st;
}

const char *cps_breaker_name(int state)
{
    return state == COMPASS_BREAKER_OPEN        ? "open"
           : state == COMPASS_BREAKER_HALF_OPEN ? "half_open"
                                                : "closed";
}
