/* The engine's event loop: one thread drives every upstream transfer through libcurl multi,
 * the delays of in-process providers through a timer heap, and the request state machine:
 * attempt, parse, fail over, answer. No thread ever waits on an upstream. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "canon.h"
#include "engine.h"

#define MAX_BODY ((size_t)32 << 20)
#define MAX_HDRS ((size_t)64 << 10)
#define SCAN_NS (50ull * 1000000ull)

enum kind { K_OTHER, K_UNSUPPORTED, K_RATE, K_TIMEOUT, K_BADGW, K_CLIENT };

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
/* whether the environment names proxies: libcurl would otherwise getenv() them on every
 * transfer, five lookups a request, for a process environment that does not change */
static int env_proxy, env_noproxy;

static int env_set(const char *name)
{
    const char *v = getenv(name);
    return v && *v;
}

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    env_proxy = env_set("http_proxy") || env_set("https_proxy") || env_set("HTTPS_PROXY") ||
                env_set("all_proxy") || env_set("ALL_PROXY");
    env_noproxy = env_set("no_proxy") || env_set("NO_PROXY");
}

static void next_attempt(compass_engine_call *c);
static void arm_hedge(compass_engine_call *c);
static void spawn_hedge(compass_engine_call *p);

/* ---- call lifetime ---- */

void cps_call_unref(compass_engine_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    cps_buf_free(&c->body);
    cps_buf_free(&c->hdrs);
    cps_buf_free(&c->chunk);
    cps_sse_free(&c->sse);
    if (c->slist)
        curl_slist_free_all(c->slist);
    cps_gen_unref(c->gen);
    cps_arena_free(c->arena);
    compass_engine_call *primary = c->is_hedge ? c->peer : NULL;
    free(c);
    if (primary)
        cps_call_unref(primary); /* the hedge shared its primary's request */
}

static double ms_since(uint64_t t0, uint64_t t1)
{
    return t1 > t0 ? (double)(t1 - t0) / 1e6 : 0;
}

static double cost_of(const compass_engine_call *c)
{
    if (!c->target)
        return -1;
    const cps_cfg_deployment *d = c->target->dep->cfg;
    if (!d->price_in && !d->price_out)
        return -1;
    return ((double)c->usage.prompt_tokens * d->price_in +
            (double)c->usage.completion_tokens * d->price_out) / 1e6;
}

static void attempts_text(compass_engine_call *c, cps_buf *b)
{
    for (int i = 0; i < c->n_log; i++) {
        if (i)
            cps_buf_puts(b, ", ");
        cps_buf_puts(b, c->log[i].target);
        cps_buf_puts(b, ":");
        cps_buf_puts(b, c->log[i].what);
        if (c->log[i].status) {
            cps_buf_puts(b, ":");
            cps_buf_put_i64(b, c->log[i].status);
        }
    }
}

/* The next free entry of the call's attempt log, or NULL when it is full. The log lives in
 * the call's arena and is made on first use (a stream in flight has logged nothing yet), with
 * room for two attempts, the usual most, so that it fits the arena's first block. */
static cps_attempt_log *log_slot(compass_engine_call *c)
{
    if (c->n_log >= CPS_MAX_ATTEMPTS)
        return NULL;
    if (c->n_log == c->cap_log) {
        int cap = c->cap_log ? CPS_MAX_ATTEMPTS : 2;
        cps_attempt_log *l = cps_arena_alloc(c->arena, (size_t)cap * sizeof(*l));
        if (!l)
            return NULL;
        if (c->n_log)
            memcpy(l, c->log, (size_t)c->n_log * sizeof(*l));
        c->log = l;
        c->cap_log = cap;
    }
    return &c->log[c->n_log++];
}

/* The series s caches in *slot, made on first use. Racing loops make the same series. */
static cps_metric *series(cps_metrics *m, _Atomic(cps_metric *) *slot, int type, const char *name,
                          const char *prov, const char *model, const char *extra)
{
    cps_metric *x = atomic_load_explicit(slot, memory_order_acquire);
    if (x)
        return x;
    char labels[300];
    snprintf(labels, sizeof(labels), "provider=\"%s\",model=\"%s\"%s", prov, model, extra);
    x = cps_metrics_series(m, type, name, labels);
    if (x)
        atomic_store_explicit(slot, x, memory_order_release);
    return x;
}

/* The metrics of an answered request: one lock, and no label text formatted once a
 * deployment/model has answered 200 before. */
static void count_request(compass_engine_call *c, int status, double seconds)
{
    compass_engine *e = c->e;
    cps_metric_update u[5];
    size_t n = 0;
    const char *prov = c->target ? c->target->dep->cfg->name : "";
    const char *model = c->target ? c->target->model : "";
    cps_stats *st = c->target ? c->target->stats : NULL;
    if (c->loop)
        u[n++] = (cps_metric_update){c->loop->m_requests, 1};
    if (st && status == 200) {
        u[n++] = (cps_metric_update){series(e->metrics, &st->m_ok, CPS_METRIC_COUNTER,
                                            "compass_requests_total", prov, model,
                                            ",status=\"200\""), 1};
    } else {
        char labels[300];
        snprintf(labels, sizeof(labels), "provider=\"%s\",model=\"%s\",status=\"%d\"", prov,
                 model, status);
        cps_metrics_add(e->metrics, "compass_requests_total", labels, 1);
    }
    if (st) {
        u[n++] = (cps_metric_update){series(e->metrics, &st->m_duration, CPS_METRIC_HISTOGRAM,
                                            "compass_requests_duration_seconds", prov, model,
                                            ""), seconds};
        if (c->usage.present || c->usage.prompt_tokens || c->usage.completion_tokens) {
            u[n++] = (cps_metric_update){series(e->metrics, &st->m_prompt, CPS_METRIC_COUNTER,
                                                "compass_tokens_total", prov, model,
                                                ",type=\"prompt\""),
                                         (double)c->usage.prompt_tokens};
            u[n++] = (cps_metric_update){series(e->metrics, &st->m_completion,
                                                CPS_METRIC_COUNTER, "compass_tokens_total", prov,
                                                model, ",type=\"completion\""),
                                         (double)c->usage.completion_tokens};
        }
    }
    cps_metrics_apply(e->metrics, u, n);
}

static void finish(compass_engine_call *c, int status, int rc, const char *body, size_t len)
{
    if (c->finished)
        return;
    c->finished = 1;
    c->phase = PH_DONE;
    compass_engine *e = c->e;
    cps_loop *lp = c->loop;
    uint64_t now = cps_now_ns();
    const char *prov = c->target ? c->target->dep->cfg->name : "";
    const char *model = c->target ? c->target->model : "";
    cps_buf att;
    cps_buf_init(&att);
    attempts_text(c, &att);
    compass_engine_result res;
    memset(&res, 0, sizeof(res));
    res.size = sizeof(res);
    res.status = status;
    res.rc = rc;
    res.body = body ? body : "";
    res.body_len = body ? len : 0;
    res.request_id = c->request_id;
    res.route = c->route_name;
    res.provider = prov;
    res.model = model;
    res.attempts_log = att.ptr ? att.ptr : "";
    res.attempts = c->n_log;
    res.usage = c->usage;
    res.latency_ms = ms_since(c->start_ns, now);
    res.ttft_ms = c->first_content_ns ? ms_since(c->start_ns, c->first_content_ns)
                                      : res.latency_ms;
    res.cost_usd = cost_of(c);

    if (c->silent)
        goto quiet;
    if (c->internal)
        goto done;
    count_request(c, status, res.latency_ms / 1000.0);
done:
    c->cb.on_done(c->ud, &res);
    if (!c->internal)
        atomic_fetch_sub(&e->in_flight, 1);
quiet:
    cps_buf_free(&att);
    if (c->is_hedge && c->peer && c->peer->peer == c)
        c->peer->peer = NULL; /* the primary no longer has a running hedge */
    if (lp && (c->all_prev || c->all_next || lp->all == c)) {
        if (c->all_prev)
            c->all_prev->all_next = c->all_next;
        else
            lp->all = c->all_next;
        if (c->all_next)
            c->all_next->all_prev = c->all_prev;
        c->all_prev = c->all_next = NULL;
    }
    cps_call_unref(c);
}

static void send_head(compass_engine_call *c, int status, int stream)
{
    compass_engine_head h;
    memset(&h, 0, sizeof(h));
    h.size = sizeof(h);
    h.status = status;
    h.stream = stream;
    h.content_type = stream ? "text/event-stream" : "application/json";
    h.request_id = c->request_id;
    h.route = c->route_name;
    h.provider = c->target ? c->target->dep->cfg->name : "";
    h.model = c->target ? c->target->model : "";
    h.attempts = c->n_log;
    h.cost_usd = cost_of(c);
    if (c->cb.on_head)
        c->cb.on_head(c->ud, &h);
}

static void release_easy(compass_engine_call *c);
static void end_attempt(compass_engine_call *c, int ok, int counts);

/* Stops a call on the engine thread; a silent one says nothing to the client. */
static void cancel_call(compass_engine_call *c, int silent)
{
    if (c->finished)
        return;
    release_easy(c);
    c->timer_gen++; /* a pending timer becomes stale */
    end_attempt(c, 0, 0);
    c->silent = silent;
    finish(c, 499, COMPASS_ECANCELED, "", 0);
}

/* Hedging: a primary and its hedge share one client. Whether c may write to it now: the first
 * to succeed (first content, or a whole answer) claims the client and the other is cancelled;
 * a failure stays silent while the other still runs, and speaks when it is the last one. */
static int speak(compass_engine_call *c, int success)
{
    compass_engine_call *p = c->is_hedge ? c->peer : c;
    compass_engine_call *other = c->is_hedge ? c->peer : c->peer;
    if (!p || (!c->is_hedge && !c->hedged))
        return 1; /* no hedging involved */
    int mine = c->is_hedge ? 2 : 1;
    if (p->claimed)
        return p->claimed == mine;
    int other_running = other && !other->finished;
    if (!success && other_running)
        return 0;
    p->claimed = mine;
    if (other_running) {
        /* keep the loser's attempts in the winner's log: both were paid for */
        cps_attempt_log *l;
        for (int i = 0; i < other->n_log && (l = log_slot(c)); i++)
            *l = other->log[i];
        if (other->target && (l = log_slot(c))) {
            l->target = other->target->id;
            snprintf(l->what, sizeof(l->what), "hedge_lost");
            l->status = 0;
            l->kind = 0;
        }
        char labels[200];
        snprintf(labels, sizeof(labels), "route=\"%s\",winner=\"%s\"", c->route_name,
                 c->is_hedge ? "hedge" : "primary");
        cps_metrics_add(c->e->metrics, "compass_hedges_total", labels, 1);
        cancel_call(other, 1);
    }
    return 1;
}

void cps_call_fail_now(compass_engine_call *c, int status, const char *type, const char *param,
                       const char *code, const char *msg)
{
    if (!speak(c, 0)) {
        c->silent = 1;
        finish(c, status, COMPASS_EUPSTREAM, "", 0);
        return;
    }
    cps_buf b;
    cps_buf_init(&b);
    cps_canon_write_error(&b, msg, type, param, code);
    send_head(c, status, 0);
    finish(c, status, status >= 500 ? COMPASS_EUPSTREAM : COMPASS_EINVAL, b.ptr ? b.ptr : "",
           b.len);
    cps_buf_free(&b);
}

/* ---- the queue from other threads ---- */

/* One eventfd write per batch: the loop clears wake_pending before it drains the queue. */
static void wake_loop(cps_loop *lp)
{
    if (atomic_exchange(&lp->wake_pending, 1))
        return;
    uint64_t one = 1;
    ssize_t w;
    do
        w = write(lp->wakefd, &one, sizeof(one));
    while (w < 0 && errno == EINTR);
}

/* The loop whose thread this is, if any: calls submitted from a loop's own thread (the
 * host's loop thread in external mode) stay on that loop and need no wakeup. */
static _Thread_local cps_loop *this_loop;
static _Thread_local unsigned long this_serial; /* the engine this_loop belongs to */

/* The loop a new call goes to: this thread's own loop of e, else the next in turn. The serial
 * (unique per engine ever opened) tells this_loop is e's without touching it: it may belong
 * to an engine closed since. */
static cps_loop *pick_loop(compass_engine *e)
{
    if (this_loop && this_serial == e->serial)
        return this_loop;
    unsigned n = (unsigned)e->n_loops;
    return &e->loops[n > 1 ? atomic_fetch_add(&e->next_loop, 1) % n : 0];
}

void cps_loop_post(compass_engine *e, int kind, compass_engine_call *call)
{
    if (!call->loop)
        call->loop = kind == 1 ? pick_loop(e) : &e->loops[0];
    cps_loop *lp = call->loop;
    cps_msg *m = malloc(sizeof(*m));
    if (!m) {
        if (kind == 1)
            cps_call_fail_now(call, 503, "server_error", NULL, "overloaded", "out of memory");
        else
            cps_call_unref(call);
        return;
    }
    m->next = NULL;
    m->kind = kind;
    m->call = call;
    pthread_mutex_lock(&lp->q_mu);
    if (lp->q_tail)
        lp->q_tail->next = m;
    else
        lp->q_head = m;
    lp->q_tail = m;
    pthread_mutex_unlock(&lp->q_mu);
    /* on its own thread, a loop drains its queue before it waits again; a host that runs
     * the loop itself waits for the fd, so it is told, unless it asks for pending work itself */
    if (this_loop != lp || this_serial != e->serial || (e->external && !e->run_pending))
        wake_loop(lp);
}

/* ---- timers (a binary heap; each entry holds a call reference) ---- */

static int timer_push(compass_engine_call *c, uint64_t due)
{
    cps_loop *lp = c->loop;
    if (lp->n_timers == lp->cap_timers) {
        size_t cap = lp->cap_timers ? lp->cap_timers * 2 : 64;
        cps_timer *nt = realloc(lp->timers, cap * sizeof(*nt));
        if (!nt)
            return COMPASS_ENOMEM;
        lp->timers = nt;
        lp->cap_timers = cap;
    }
    atomic_fetch_add(&c->refs, 1);
    c->timer_gen++;
    c->timer_pending = 1;
    size_t i = lp->n_timers++;
    cps_timer t = {due, c, c->timer_gen};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (lp->timers[p].due <= due)
            break;
        lp->timers[i] = lp->timers[p];
        i = p;
    }
    lp->timers[i] = t;
    return 0;
}

static cps_timer timer_pop(cps_loop *lp)
{
    cps_timer top = lp->timers[0], last = lp->timers[--lp->n_timers];
    size_t i = 0, n = lp->n_timers;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        uint64_t md = last.due;
        if (l < n && lp->timers[l].due < md) {
            m = l;
            md = lp->timers[l].due;
        }
        if (r < n && lp->timers[r].due < md)
            m = r;
        if (m == i)
            break;
        lp->timers[i] = lp->timers[m];
        i = m;
    }
    if (n)
        lp->timers[i] = last;
    return top;
}

/* ---- attempts ---- */

static const compass_provider_ops *ops_of(const cps_target *t)
{
    return t->dep->plugin->desc->ops.provider;
}

static int has_local(const compass_provider_ops *o)
{
    return o->size >= offsetof(compass_provider_ops, local_call) + sizeof(o->local_call) &&
           o->local_call;
}

static void active_remove(cps_loop *lp, compass_engine_call *c)
{
    if (c->act_prev)
        c->act_prev->act_next = c->act_next;
    else if (lp->active == c)
        lp->active = c->act_next;
    if (c->act_next)
        c->act_next->act_prev = c->act_prev;
    c->act_prev = c->act_next = NULL;
}

/* The parsed form of an upstream URL, from the loop's few (a deployment has one or two
 * URLs); NULL when it cannot be had, and the transfer then hands curl the text alone. The
 * flags are the ones curl parses CURLOPT_URL with, so the result is the same. */
static cps_url *url_take(cps_loop *lp, const char *text, size_t len)
{
    cps_url *u, *spare = NULL;
    const size_t n = sizeof(lp->urls) / sizeof(lp->urls[0]);
    for (size_t i = 0; i < n; i++) {
        u = &lp->urls[i];
        if (u->text && u->len == len && !memcmp(u->text, text, len))
            goto found;
        if (!u->users && (!spare || !u->text || (spare->text && u->used < spare->used)))
            spare = u;
    }
    if (!spare)
        return NULL;
    u = spare;
    char *copy = malloc(len + 1);
    CURLU *uh = curl_url();
    if (!copy || !uh ||
        curl_url_set(uh, CURLUPART_URL, text, CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME)) {
        free(copy);
        curl_url_cleanup(uh);
        return NULL;
    }
    memcpy(copy, text, len + 1);
    free(u->text);
    curl_url_cleanup(u->uh);
    u->text = copy;
    u->len = len;
    u->uh = uh;
found:
    u->users++;
    u->used = ++lp->url_clock;
    return u;
}

static void urls_free(cps_loop *lp)
{
    for (size_t i = 0; i < sizeof(lp->urls) / sizeof(lp->urls[0]); i++) {
        free(lp->urls[i].text);
        curl_url_cleanup(lp->urls[i].uh);
        memset(&lp->urls[i], 0, sizeof(lp->urls[i]));
    }
}

static void release_easy(compass_engine_call *c)
{
    cps_loop *lp = c->loop;
    if (!c->easy)
        return;
    active_remove(lp, c);
    curl_multi_remove_handle(lp->multi, c->easy);
    if (lp->n_easy_pool < sizeof(lp->easy_pool) / sizeof(lp->easy_pool[0])) {
        /* kept with its options (launch sets every one that varies): no curl_easy_reset, and
         * nothing left pointing at this call's memory */
        curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
        curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, (char *)NULL);
        curl_easy_setopt(c->easy, CURLOPT_PRIVATE, (void *)NULL);
        curl_easy_setopt(c->easy, CURLOPT_WRITEDATA, (void *)NULL);
        curl_easy_setopt(c->easy, CURLOPT_HEADERDATA, (void *)NULL);
        curl_easy_setopt(c->easy, CURLOPT_CURLU, (CURLU *)NULL);
        lp->easy_pool[lp->n_easy_pool++] = c->easy;
    } else {
        curl_easy_cleanup(c->easy);
    }
    c->easy = NULL;
    if (c->url) {
        c->url->users--;
        c->url = NULL;
    }
    if (c->slist) {
        curl_slist_free_all(c->slist);
        c->slist = NULL;
    }
}

/* Ends the attempt's bookkeeping: in-flight count, stats and the breaker (when counts). */
static void end_attempt(compass_engine_call *c, int ok, int counts)
{
    cps_target *t = c->target;
    if (!t || c->phase == PH_NEW)
        return;
    atomic_fetch_sub(&t->stats->in_flight, 1);
    c->phase = PH_NEW;
    int probe = c->probe;
    c->probe = 0;
    if (!counts) {
        cps_breaker_release(t->stats, probe);
        return;
    }
    uint64_t now = cps_now_ns();
    double ttft = c->first_content_ns ? ms_since(c->attempt_start_ns, c->first_content_ns) : -1;
    cps_stats_record(t->stats, ok, ms_since(c->attempt_start_ns, now), ttft);
    int changed = cps_breaker_record(t->stats, &t->dep->cfg->breaker, ok, probe, now);
    if (changed >= 0) {
        char labels[300];
        snprintf(labels, sizeof(labels), "provider=\"%s\",model=\"%s\"", t->dep->cfg->name,
                 t->model);
        cps_metrics_set(c->e->metrics, "compass_circuit_breaker_state", labels, changed);
        cps_log(c->e, changed == COMPASS_BREAKER_OPEN ? COMPASS_LOG_WARN : COMPASS_LOG_INFO,
                "circuit breaker for %s is now %s", t->id, cps_breaker_name(changed));
    }
}

static void log_attempt(compass_engine_call *c, const char *what, int status, int kind)
{
    cps_attempt_log *l = log_slot(c);
    if (!l)
        return;
    l->target = c->target ? c->target->id : "?";
    cps_str_copy(l->what, sizeof(l->what), what);
    l->status = status;
    l->kind = kind;
}

static int kind_of(const compass_upstream_error *u)
{
    if (u->outcome == COMPASS_OUTCOME_RATE_LIMITED)
        return K_RATE;
    if (u->outcome == COMPASS_OUTCOME_BAD_REQUEST || u->outcome == COMPASS_OUTCOME_CONTENT_FILTER)
        return K_CLIENT;
    if (u->http_status == 504)
        return K_TIMEOUT;
    if (u->http_status == 502)
        return K_BADGW;
    return K_OTHER;
}

static const char *outcome_name(int o)
{
    switch (o) {
    case COMPASS_OUTCOME_OK: return "ok";
    case COMPASS_OUTCOME_RETRYABLE: return "retryable";
    case COMPASS_OUTCOME_RATE_LIMITED: return "rate_limited";
    case COMPASS_OUTCOME_AUTH: return "auth";
    case COMPASS_OUTCOME_BAD_REQUEST: return "bad_request";
    case COMPASS_OUTCOME_CONTENT_FILTER: return "content_filter";
    case COMPASS_OUTCOME_NOT_FOUND: return "not_found";
    default: return "fatal";
    }
}

/* The final answer when every candidate failed: one kind of failure keeps its status (429,
 * 504, 502, 400 for a parameter no candidate can honour); a mix is 503. */
static void final_failure(compass_engine_call *c, const char *last_msg)
{
    if (!speak(c, 0)) {
        c->silent = 1;
        finish(c, 503, COMPASS_EUPSTREAM, "", 0);
        return;
    }
    int kind = c->n_log ? c->log[0].kind : K_OTHER;
    for (int i = 1; i < c->n_log; i++)
        if (c->log[i].kind != kind)
            kind = K_OTHER;
    cps_buf b;
    cps_buf_init(&b);
    if (c->n_log == 1)
        cps_buf_printf(&b, "upstream deployment %s failed: %s", c->log[0].target, last_msg);
    else {
        cps_buf_printf(&b, "all %d attempts failed: ", c->n_log);
        attempts_text(c, &b);
        cps_buf_printf(&b, " (last: %s)", last_msg);
    }
    int status = 503;
    const char *code = "all_candidates_failed", *type = "upstream_error";
    switch (kind) {
    case K_UNSUPPORTED:
        status = 400;
        type = "invalid_request_error";
        code = "unsupported_parameter";
        b.len = 0;
        cps_buf_puts(&b, last_msg);
        break;
    case K_RATE:
        status = 429;
        type = "rate_limit_error";
        code = "rate_limit_exceeded";
        break;
    case K_TIMEOUT:
        status = 504;
        code = "upstream_timeout";
        break;
    case K_BADGW:
        status = 502;
        code = "bad_gateway";
        break;
    default:
        break;
    }
    cps_buf e2;
    cps_buf_init(&e2);
    cps_canon_write_error(&e2, b.ptr ? b.ptr : "upstream failed", type, NULL, code);
    send_head(c, status, 0);
    finish(c, status, COMPASS_EUPSTREAM, e2.ptr ? e2.ptr : "", e2.len);
    cps_buf_free(&e2);
    cps_buf_free(&b);
}

/* ---- streaming ---- */

static void commit(compass_engine_call *c)
{
    speak(c, 1);
    c->committed = 1;
    if (!c->chunk_id[0])
        snprintf(c->chunk_id, sizeof(c->chunk_id), "chatcmpl-%s", c->request_id);
    if (!c->chunk_model)
        c->chunk_model = c->target ? c->target->model : "";
    send_head(c, 200, 1);
    compass_chat_delta d;
    compass_delta_init(&d);
    d.role = COMPASS_ROLE_ASSISTANT;
    if (c->cb.on_delta)
        c->cb.on_delta(c->ud, &d);
    if (c->cb.on_chunk) {
        cps_buf_reset(&c->chunk);
        cps_canon_write_chunk(&c->chunk, &d, compass_str_c(c->chunk_id),
                              compass_str_c(c->chunk_model), c->created, 0);
        if (!c->chunk.oom)
            c->cb.on_chunk(c->ud, c->chunk.ptr, c->chunk.len);
    }
    c->role_pending = 0;
}

int cps_call_emit(compass_engine_call *c, const compass_chat_delta *d)
{
    if (c->finished)
        return 0;
    if (d->usage.present)
        c->usage = d->usage;
    if (d->finish_reason)
        c->saw_finish = 1;
    if (d->id.len && !c->chunk_id[0] && d->id.len < sizeof(c->chunk_id))
        compass_copy_fixed(c->chunk_id, sizeof(c->chunk_id), d->id);
    if (d->model.len && !c->chunk_model)
        c->chunk_model = cps_arena_strndup(c->arena, d->model.ptr, d->model.len);
    int content = d->content.len || d->tool_index >= 0 || d->refusal.len || d->finish_reason;
    if (!content) {
        if (d->role)
            c->role_pending = 1;
        return 0;
    }
    if (!c->committed)
        commit(c);
    if (!c->first_content_ns)
        c->first_content_ns = cps_now_ns();
    c->out_chars += d->content.len + d->tool_arguments.len + d->refusal.len;
    compass_chat_delta x = *d;
    x.role = 0;
    x.usage.present = 0;
    if (c->cb.on_delta)
        c->cb.on_delta(c->ud, &x);
    if (c->cb.on_chunk) {
        cps_buf_reset(&c->chunk);
        cps_canon_write_chunk(&c->chunk, &x, compass_str_c(c->chunk_id),
                              compass_str_c(c->chunk_model), c->created, 0);
        if (c->chunk.oom)
            return COMPASS_ENOMEM;
        c->cb.on_chunk(c->ud, c->chunk.ptr, c->chunk.len);
    }
    return 0;
}

static void estimate_usage(compass_engine_call *c)
{
    if (c->usage.present)
        return;
    c->usage.prompt_tokens = cps_estimate_prompt_tokens(&c->req, NULL);
    c->usage.completion_tokens = (int64_t)((c->out_chars + 3) / 4);
    c->usage.total_tokens = c->usage.prompt_tokens + c->usage.completion_tokens;
}

static void success_stream(compass_engine_call *c)
{
    end_attempt(c, 1, 1);
    log_attempt(c, "ok", 200, K_OTHER);
    if (!c->committed)
        commit(c);
    if (!c->saw_finish) {
        compass_chat_delta d;
        compass_delta_init(&d);
        d.finish_reason = COMPASS_FINISH_STOP;
        cps_call_emit(c, &d);
    }
    estimate_usage(c);
    if (c->req.include_usage && c->cb.on_chunk) {
        compass_chat_delta d;
        compass_delta_init(&d);
        d.usage = c->usage;
        cps_buf_reset(&c->chunk);
        cps_canon_write_chunk(&c->chunk, &d, compass_str_c(c->chunk_id),
                              compass_str_c(c->chunk_model), c->created, 1);
        if (!c->chunk.oom)
            c->cb.on_chunk(c->ud, c->chunk.ptr, c->chunk.len);
    }
    if (c->cb.on_chunk)
        c->cb.on_chunk(c->ud, "[DONE]", 6);
    finish(c, 200, 0, "", 0);
}

/* A whole response, answered as a stream when the client asked for one. */
static void success_response(compass_engine_call *c, compass_chat_response *r)
{
    if (r->usage.present)
        c->usage = r->usage;
    if (c->req.stream) {
        compass_chat_delta d;
        compass_delta_init(&d);
        d.id = r->id;
        d.model = r->model;
        d.content = r->content;
        d.refusal = r->refusal;
        if (d.content.len || d.refusal.len || !r->n_tool_calls)
            cps_call_emit(c, &d);
        for (size_t i = 0; i < r->n_tool_calls; i++) {
            compass_delta_init(&d);
            d.tool_index = (int)i;
            d.tool_id = r->tool_calls[i].id;
            d.tool_name = r->tool_calls[i].name;
            d.tool_arguments = r->tool_calls[i].arguments;
            cps_call_emit(c, &d);
        }
        compass_delta_init(&d);
        d.finish_reason = r->finish_reason ? r->finish_reason : COMPASS_FINISH_STOP;
        cps_call_emit(c, &d);
        success_stream(c);
        return;
    }
    end_attempt(c, 1, 1);
    log_attempt(c, "ok", 200, K_OTHER);
    speak(c, 1);
    c->out_chars = r->content.len;
    for (size_t i = 0; i < r->n_tool_calls; i++)
        c->out_chars += r->tool_calls[i].arguments.len;
    estimate_usage(c);
    r->usage = c->usage;
    r->usage.present = 1;
    if (!c->first_content_ns)
        c->first_content_ns = cps_now_ns();
    char id[96] = "chatcmpl-";
    cps_str_copy(id + 9, sizeof(id) - 9, c->request_id);
    cps_buf_reset(&c->chunk);
    cps_canon_write_response(&c->chunk, r, compass_str_c(id),
                             compass_str_c(c->target ? c->target->model : ""), c->created);
    if (c->chunk.oom) {
        cps_call_fail_now(c, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    send_head(c, 200, 0);
    finish(c, 200, 0, c->chunk.ptr, c->chunk.len);
}

/* Every candidate of this round failed: start another round after a backoff (exponential with
 * full jitter, or the largest Retry-After seen, capped), if the route allows one and the
 * attempt limit and deadline leave room. */
static int schedule_retry(compass_engine_call *c)
{
    const cps_route *r = c->route;
    if (!r || !r->cfg || c->round >= r->cfg->retries || c->n_log >= c->max_attempts)
        return 0;
    const cps_cfg_route *rc = r->cfg;
    uint64_t cap = (uint64_t)(rc ? rc->backoff_max_ms : 10000);
    uint64_t base = (uint64_t)(rc ? rc->backoff_ms : 200) << (c->round < 16 ? c->round : 16);
    if (base > cap)
        base = cap;
    uint64_t delay = base ? (uint64_t)rand_r(&c->seed) % (base + 1) : 0;
    if (c->retry_after_ms > 0)
        delay = (uint64_t)c->retry_after_ms < cap ? (uint64_t)c->retry_after_ms : cap;
    uint64_t due = cps_now_ns() + delay * 1000000u;
    if (c->deadline_ns && due >= c->deadline_ns)
        return 0;
    c->round++;
    c->next = 0;
    c->retry_after_ms = 0;
    c->timer_kind = 1;
    if (timer_push(c, due)) {
        c->timer_kind = 0;
        return 0;
    }
    cps_log(c->e, COMPASS_LOG_INFO, "request %s: retry round %d in %llu ms", c->request_id,
            c->round, (unsigned long long)delay);
    return 1;
}

static void success_embed(compass_engine_call *c, compass_embed_response *r)
{
    end_attempt(c, 1, 1);
    log_attempt(c, "ok", 200, K_OTHER);
    speak(c, 1);
    if (r->usage.prompt_tokens || r->usage.present) {
        c->usage = r->usage;
    } else {
        size_t chars = 0;
        for (size_t i = 0; i < c->ereq.n_inputs; i++)
            chars += c->ereq.inputs[i].len;
        c->usage.prompt_tokens = (int64_t)((chars + 3) / 4);
    }
    c->usage.total_tokens = c->usage.prompt_tokens;
    c->usage.present = 1;
    r->usage = c->usage;
    cps_buf_reset(&c->chunk);
    cps_canon_write_embed(&c->chunk, r, compass_str_c(c->target->model),
                          compass_str_eq(c->ereq.encoding_format, "base64"));
    if (c->chunk.oom) {
        cps_call_fail_now(c, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    send_head(c, 200, 0);
    finish(c, 200, 0, c->chunk.ptr, c->chunk.len);
}

/* An attempt failed: fail over while nothing reached the client, else end the stream. */
static void attempt_failure(compass_engine_call *c, const compass_upstream_error *u,
                            const char *what)
{
    int kind = kind_of(u);
    end_attempt(c, kind == K_CLIENT, 1); /* an upstream that rejects a bad request is healthy */
    if (u->retry_after_ms > c->retry_after_ms)
        c->retry_after_ms = u->retry_after_ms;
    char msg[700];
    snprintf(msg, sizeof(msg), "%s%s%s", what, u->message[0] ? ": " : "", u->message);
    char brief[96];
    snprintf(brief, sizeof(brief), "%s", outcome_name(u->outcome));
    log_attempt(c, brief, u->http_status, kind);
    char labels[300];
    snprintf(labels, sizeof(labels), "provider=\"%s\",model=\"%s\",outcome=\"%s\"",
             c->target->dep->cfg->name, c->target->model, outcome_name(u->outcome));
    cps_metrics_add(c->e->metrics, "compass_upstream_attempts_total", labels, 1);
    cps_log(c->e, COMPASS_LOG_WARN, "request %s: %s failed (%s, HTTP %d): %s", c->request_id,
            c->target->id, outcome_name(u->outcome), u->http_status, msg);
    if (c->committed) {
        /* bytes reached the client: never retry from the start; end with an error event */
        char m2[800];
        snprintf(m2, sizeof(m2), "upstream deployment %s failed mid-stream: %s", c->target->id,
                 msg);
        cps_buf b;
        cps_buf_init(&b);
        cps_canon_write_error(&b, m2, "upstream_error", NULL, "stream_interrupted");
        if (c->cb.on_chunk && !b.oom)
            c->cb.on_chunk(c->ud, b.ptr, b.len);
        cps_buf_free(&b);
        finish(c, 200, COMPASS_EUPSTREAM, "", 0);
        return;
    }
    if (kind == K_CLIENT) {
        int status = u->http_status >= 400 && u->http_status < 500 ? u->http_status : 400;
        char m2[800];
        snprintf(m2, sizeof(m2), "%s (from %s)", u->message[0] ? u->message : what,
                 c->target->id);
        cps_call_fail_now(c, status, u->type[0] ? u->type : "invalid_request_error", NULL,
                          u->code[0] ? u->code
                          : u->outcome == COMPASS_OUTCOME_CONTENT_FILTER ? "content_filter"
                                                                          : NULL,
                          m2);
        return;
    }
    if (c->next < c->n_order && c->n_log < c->max_attempts) {
        cps_target *to = c->order[c->next];
        snprintf(labels, sizeof(labels), "provider=\"%s\",from_model=\"%s\",to_model=\"%s\"",
                 c->target->dep->cfg->name, c->target->model, to->model);
        cps_metrics_add(c->e->metrics, "compass_failover_total", labels, 1);
        next_attempt(c);
        return;
    }
    if (schedule_retry(c))
        return;
    final_failure(c, msg);
}

/* ---- curl callbacks ---- */

/* The attempt's failure record: made on first use, in the call's arena (most calls never fail,
 * and a call in flight should stay small), as a retryable 502 for the caller to refine. */
static compass_upstream_error *fail_rec(compass_engine_call *c)
{
    if (!c->fail_uerr)
        c->fail_uerr = cps_arena_alloc(c->arena, sizeof(*c->fail_uerr));
    if (c->fail_uerr)
        compass_uerr_init(c->fail_uerr, COMPASS_OUTCOME_RETRYABLE, 502);
    return c->fail_uerr;
}

/* The failure record to report (a plain retryable 502 when there was no memory for one). */
static const compass_upstream_error *fail_of(compass_engine_call *c)
{
    static const compass_upstream_error plain = {sizeof(compass_upstream_error),
                                                 COMPASS_OUTCOME_RETRYABLE, 502, -1, "", "", ""};
    return c->fail_uerr ? c->fail_uerr : &plain;
}

static int on_event(void *ud, const compass_stream_event *ev)
{
    compass_engine_call *c = ud;
    if (c->stream_ended || c->finished)
        return 0;
    compass_upstream_error u;
    compass_uerr_init(&u, COMPASS_OUTCOME_RETRYABLE, 502);
    compass_err err;
    memset(&err, 0, sizeof(err));
    int rc = ops_of(c->target)->parse_stream_event(c->target->dep->inst, &c->preq, ev, &u, &err);
    if (rc == COMPASS_STREAM_END) {
        c->stream_ended = 1;
        return 0;
    }
    if (rc == 0)
        return 0;
    c->attempt_failed = 1;
    if (rc == COMPASS_EUPSTREAM) {
        if (u.outcome == COMPASS_OUTCOME_OK)
            u.outcome = COMPASS_OUTCOME_RETRYABLE;
        compass_upstream_error *f = fail_rec(c);
        if (f)
            *f = u;
        c->fail_what = "error event in stream";
    } else {
        compass_upstream_error *f = fail_rec(c);
        if (f)
            compass_copy_fixed(f->message, sizeof(f->message),
                               compass_str_c(err.msg[0] ? err.msg : compass_strerror(rc)));
        c->fail_what = rc == COMPASS_ELIMIT ? "stream event too large" : "invalid stream event";
    }
    return rc;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    compass_engine_call *c = ud;
    size_t n = size * nmemb;
    uint64_t now = cps_now_ns();
    if (!c->first_byte_ns)
        c->first_byte_ns = now;
    c->last_byte_ns = now;
    if (atomic_load(&c->cancel_requested))
        return 0;
    if (!c->status_checked) {
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &c->status);
        c->status_checked = 1;
    }
    if (c->req.stream && c->hreq.stream_format != COMPASS_STREAM_NONE && c->status >= 200 &&
        c->status < 300) {
        int rc = cps_sse_feed(&c->sse, ptr, n, on_event, c);
        if (rc && !c->attempt_failed) {
            c->attempt_failed = 1;
            fail_rec(c);
            c->fail_what = rc == COMPASS_ELIMIT ? "stream event too large" : "out of memory";
        }
        return c->attempt_failed ? 0 : n;
    }
    if (c->body.len + n > MAX_BODY) {
        c->attempt_failed = 1;
        fail_rec(c);
        c->fail_what = "upstream response larger than 32 MiB";
        return 0;
    }
    return cps_buf_append(&c->body, ptr, n) ? 0 : n;
}

static size_t header_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    compass_engine_call *c = ud;
    size_t n = size * nmemb;
    if (n > 5 && !memcmp(ptr, "HTTP/", 5))
        cps_buf_reset(&c->hdrs); /* a new response (after 1xx): keep only its headers */
    if (c->hdrs.len + n <= MAX_HDRS)
        cps_buf_append(&c->hdrs, ptr, n);
    return n;
}

/* Parses the raw header block into name/value pairs in the arena. */
static size_t parse_headers(compass_engine_call *c, compass_header **out)
{
    size_t cap = 0;
    for (size_t i = 0; i < c->hdrs.len; i++)
        if (c->hdrs.ptr[i] == '\n')
            cap++;
    compass_header *hs = cps_arena_alloc(c->arena, (cap + 1) * sizeof(*hs));
    size_t n = 0;
    const char *p = c->hdrs.ptr, *end = p ? p + c->hdrs.len : NULL;
    while (hs && p && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon && n < cap + 1) {
            const char *v = colon + 1, *ve = le;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
                ve--;
            hs[n].name.ptr = p;
            hs[n].name.len = (size_t)(colon - p);
            hs[n].value.ptr = v;
            hs[n].value.len = (size_t)(ve - v);
            n++;
        }
        p = nl ? nl + 1 : end;
    }
    *out = hs;
    return hs ? n : 0;
}

/* ---- starting an attempt ---- */

static int clean_header(compass_str s)
{
    for (size_t i = 0; i < s.len; i++)
        if (s.ptr[i] == '\r' || s.ptr[i] == '\n' || s.ptr[i] == '\0')
            return 0;
    return 1;
}

/* ---- curl sockets in the loop's epoll ----
 *
 * When a transfer ends, curl parks its connection in the pool and asks for its socket to be
 * removed; the next transfer on that connection asks for it again. Doing both in epoll costs
 * two epoll_ctl calls per request, so a parked socket stays registered (for input only) and is
 * removed only if it fires while parked (the server closed it) or when curl closes it. The
 * state per descriptor lives in lp->fdstate. It is trusted only for connection sockets, which
 * curl opens and closes through open_sock/close_sock (FD_OURS), so it stays true across
 * descriptor reuse; other sockets curl watches (the threaded resolver's socketpair, closed
 * without the callback) get the plain ADD/MOD/DEL every time. */
#define FD_IN 1u
#define FD_OUT 2u
#define FD_PARKED 4u
#define FD_REG 8u
#define FD_OURS 16u

static uint8_t *fd_slot(cps_loop *lp, curl_socket_t fd)
{
    if (fd < 0)
        return NULL;
    if ((size_t)fd >= lp->n_fdstate) {
        size_t n = lp->n_fdstate ? lp->n_fdstate : 256;
        while (n <= (size_t)fd)
            n *= 2;
        uint8_t *p = realloc(lp->fdstate, n);
        if (!p)
            return NULL;
        memset(p + lp->n_fdstate, 0, n - lp->n_fdstate);
        lp->fdstate = p;
        lp->n_fdstate = n;
    }
    return &lp->fdstate[fd];
}

static void fd_forget(cps_loop *lp, curl_socket_t fd)
{
    if (fd >= 0 && (size_t)fd < lp->n_fdstate)
        lp->fdstate[fd] = 0;
}

static curl_socket_t open_sock(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)purpose;
    curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    uint8_t *st = fd_slot(ud, fd);
    if (st)
        *st = FD_OURS; /* a new socket is in no epoll set, whatever its number held before */
    return fd;
}

static int close_sock(void *ud, curl_socket_t fd)
{
    fd_forget(ud, fd); /* closing it takes it out of the epoll set */
    return close(fd);
}

/* Whether an event for fd belongs to a parked socket; if so it leaves the epoll set. */
static int fd_parked_event(cps_loop *lp, int fd)
{
    if (fd < 0 || (size_t)fd >= lp->n_fdstate || !(lp->fdstate[fd] & FD_PARKED))
        return 0;
    epoll_ctl(lp->epfd, EPOLL_CTL_DEL, fd, NULL);
    lp->fdstate[fd] = 0;
    return 1;
}

/* A new easy handle with the options that never change between transfers. */
static CURL *easy_new(cps_loop *lp)
{
    CURL *h = curl_easy_init();
    if (!h)
        return NULL;
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_sock);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, lp);
    curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, close_sock);
    curl_easy_setopt(h, CURLOPT_CLOSESOCKETDATA, lp);
    if (!env_proxy)
        curl_easy_setopt(h, CURLOPT_PROXY, "");
    if (!env_noproxy)
        curl_easy_setopt(h, CURLOPT_NOPROXY, "");
    return h;
}

/* Starts the transfer c->hreq describes. */
static int launch(compass_engine_call *c, compass_err *err)
{
    cps_loop *lp = c->loop;
    char *url = cps_arena_strndup(c->arena, c->hreq.url.ptr ? c->hreq.url.ptr : "",
                                  c->hreq.url.len);
    if (!url || (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)))
        return compass_err_set(err, COMPASS_EPLUGIN, "plugin built no http(s) URL");
    struct curl_slist *sl = NULL;
    for (size_t i = 0; i < c->hreq.n_headers; i++) {
        compass_header *h = &c->hreq.headers[i];
        if (!clean_header(h->name) || !clean_header(h->value)) {
            curl_slist_free_all(sl);
            return compass_err_set(err, COMPASS_EPLUGIN, "plugin built a header with CR/LF");
        }
        size_t nl = h->name.len, vl = h->value.len;
        char *line = cps_arena_alloc(c->arena, nl + vl + 3);
        if (!line) {
            curl_slist_free_all(sl);
            return compass_err_set(err, COMPASS_ENOMEM, "out of memory");
        }
        if (nl)
            memcpy(line, h->name.ptr, nl);
        line[nl] = ':';
        line[nl + 1] = ' ';
        if (vl)
            memcpy(line + nl + 2, h->value.ptr, vl);
        line[nl + 2 + vl] = '\0';
        struct curl_slist *ns = curl_slist_append(sl, line);
        if (!ns) {
            curl_slist_free_all(sl);
            return compass_err_set(err, COMPASS_ENOMEM, "out of memory");
        }
        sl = ns;
    }
    struct curl_slist *ns = curl_slist_append(sl, "Expect:");
    if (ns)
        sl = ns;
    CURL *h = lp->n_easy_pool ? lp->easy_pool[--lp->n_easy_pool] : easy_new(lp);
    if (!h) {
        curl_slist_free_all(sl);
        return compass_err_set(err, COMPASS_ENOMEM, "out of memory");
    }
    /* a pooled handle keeps its options: every option that varies between transfers is set
     * here, each time */
    const cps_timeouts *t = &c->target->dep->cfg->timeouts;
    c->url = url_take(lp, url, strlen(url));
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CURLU, c->url ? c->url->uh : NULL);
    curl_easy_setopt(h, CURLOPT_PRIVATE, c);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, sl);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)t->connect_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)t->total_ms);
    switch (c->hreq.method) {
    case COMPASS_HTTP_GET:
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, (char *)NULL);
        break;
    case COMPASS_HTTP_DELETE:
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
        break;
    default:
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, (char *)NULL);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->hreq.body.len);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->hreq.body.ptr ? c->hreq.body.ptr : "");
    }
    c->easy = h;
    c->slist = sl;
    if (c->req.stream && c->hreq.stream_format != COMPASS_STREAM_NONE) {
        /* stream events are small: a smaller receive buffer per transfer saves memory when
         * thousands of streams are open */
        curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 1024L);
        cps_sse_free(&c->sse);
        cps_sse_init(&c->sse, c->hreq.stream_format, (size_t)4 << 20);
    } else {
        curl_easy_setopt(h, CURLOPT_BUFFERSIZE, (long)CURL_MAX_WRITE_SIZE);
    }
    if (curl_multi_add_handle(lp->multi, h) != CURLM_OK) {
        if (c->url)
            c->url->users--;
        c->url = NULL;
        c->easy = NULL;
        c->slist = NULL;
        curl_easy_cleanup(h);
        curl_slist_free_all(sl);
        return compass_err_set(err, COMPASS_EIO, "could not start the transfer");
    }
    c->act_prev = NULL;
    c->act_next = lp->active;
    if (lp->active)
        lp->active->act_prev = c;
    lp->active = c;
    c->phase = PH_UPSTREAM;
    return 0;
}

static int start_http(compass_engine_call *c, const compass_provider_ops *o,
                      const compass_chat_request *r, compass_err *err)
{
    memset(&c->hreq, 0, sizeof(c->hreq));
    c->hreq.size = sizeof(c->hreq);
    c->hreq.method = COMPASS_HTTP_POST;
    int rc;
    if (c->kind == COMPASS_ENDPOINT_EMBEDDINGS) {
        compass_embed_request er = c->ereq;
        er.model = compass_str_c(c->target->model);
        rc = o->build_embed_request(c->target->dep->inst, &c->preq, &er, &c->hreq, err);
    } else {
        rc = o->build_request(c->target->dep->inst, &c->preq, r, &c->hreq, err);
    }
    return rc ? rc : launch(c, err);
}

static int start_attempt(compass_engine_call *c, cps_target *t, compass_err *err)
{
    const compass_provider_ops *o = ops_of(t);
    c->target = t;
    c->status = 0;
    c->status_checked = 0;
    c->first_byte_ns = c->last_byte_ns = 0;
    c->stream_ended = c->saw_finish = c->attempt_failed = 0;
    c->fail_what = NULL;
    c->preq.plugin_data = NULL;
    c->chunk_model = NULL;
    c->chunk_id[0] = '\0';
    c->usage.present = 0;
    cps_buf_reset(&c->body);
    cps_buf_reset(&c->hdrs);
    c->attempt_start_ns = cps_now_ns();
    atomic_fetch_add(&t->stats->in_flight, 1);
    c->phase = PH_UPSTREAM; /* so end_attempt balances the in-flight count */
    compass_chat_request r = c->req;
    r.model = compass_str_c(t->model);
    c->follows = 0;
    int rc;
    if (c->kind == COMPASS_ENDPOINT_EMBEDDINGS) {
        if (!COMPASS_OPS_HAS(o, build_embed_request) || !COMPASS_OPS_HAS(o, parse_embed_response))
            return compass_err_set(err, COMPASS_EUNSUPPORTED,
                                   "this deployment's plugin does not serve embeddings");
        rc = start_http(c, o, &r, err);
    } else if (has_local(o)) {
        if (!c->local && !(c->local = cps_arena_alloc(c->arena, sizeof(*c->local))))
            return compass_err_set(err, COMPASS_ENOMEM, "out of memory");
        memset(c->local, 0, sizeof(*c->local));
        c->local->size = sizeof(*c->local);
        rc = o->local_call(t->dep->inst, &c->preq, &r, c->local, err);
        if (!rc) {
            c->phase = PH_LOCAL_WAIT;
            c->local_next = 0;
            int64_t d = c->local->first_delay_ms > 0 ? c->local->first_delay_ms : 0;
            rc = timer_push(c, cps_now_ns() + (uint64_t)d * 1000000u);
            if (rc)
                compass_err_set(err, rc, "out of memory");
        }
    } else {
        rc = start_http(c, o, &r, err);
        if (!rc)
            arm_hedge(c);
    }
    return rc;
}

static void next_attempt(compass_engine_call *c)
{
    while (c->next < c->n_order && c->n_log < c->max_attempts) {
        cps_target *t = c->order[c->next++];
        uint64_t now = cps_now_ns();
        if (c->deadline_ns && now >= c->deadline_ns) {
            compass_upstream_error u;
            compass_uerr_init(&u, COMPASS_OUTCOME_RETRYABLE, 504);
            if (!c->n_log)
                log_attempt(c, "deadline", 504, K_TIMEOUT);
            final_failure(c, "the route's deadline passed");
            return;
        }
        int allow = cps_breaker_allow(t->stats, &t->dep->cfg->breaker, now);
        if (allow == CPS_DENY) {
            c->skipped_open++;
            continue;
        }
        compass_err err;
        memset(&err, 0, sizeof(err));
        c->probe = allow == CPS_PROBE; /* a failed start releases it in end_attempt below */
        int rc = start_attempt(c, t, &err);
        if (!rc)
            return;
        end_attempt(c, 0, 0);
        if (rc == COMPASS_EUNSUPPORTED || rc == COMPASS_EINVAL) {
            log_attempt(c, "unsupported", 400, K_UNSUPPORTED);
            if (c->next >= c->n_order || c->n_log >= c->max_attempts) {
                char m[600];
                snprintf(m, sizeof(m), "%s (deployment %s)", err.msg[0] ? err.msg
                         : "the request cannot be honoured", t->id);
                final_failure(c, m);
                return;
            }
            continue;
        }
        log_attempt(c, "error", 0, K_OTHER);
        cps_log(c->e, COMPASS_LOG_ERROR, "request %s: %s: cannot start: %s", c->request_id,
                t->id, err.msg[0] ? err.msg : compass_strerror(rc));
        if (c->next >= c->n_order || c->n_log >= c->max_attempts) {
            final_failure(c, err.msg[0] ? err.msg : compass_strerror(rc));
            return;
        }
    }
    if (c->finished)
        return;
    if (c->n_log == 0 && c->skipped_open) {
        cps_call_fail_now(c, 503, "upstream_error", NULL, "circuit_open",
                          "every candidate deployment is unavailable (circuit breaker open); "
                          "try again later");
        return;
    }
    if (schedule_retry(c))
        return;
    final_failure(c, "no candidate left to try");
}

/* ---- transfer completion ---- */

static void on_done_transfer(compass_engine_call *c, CURLcode res)
{
    const compass_provider_ops *o = ops_of(c->target);
    long status = 0;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    const char *curl_msg = curl_easy_strerror(res); /* static text */
    release_easy(c);
    if (atomic_load(&c->cancel_requested)) {
        end_attempt(c, 0, 0);
        finish(c, 499, COMPASS_ECANCELED, "", 0);
        return;
    }
    compass_upstream_error u;
    if (c->attempt_failed) {
        attempt_failure(c, fail_of(c), c->fail_what ? c->fail_what : "upstream failed");
        return;
    }
    if (res != CURLE_OK) {
        int timeout = res == CURLE_OPERATION_TIMEDOUT;
        compass_uerr_init(&u, COMPASS_OUTCOME_RETRYABLE, timeout ? 504 : 502);
        snprintf(u.message, sizeof(u.message), "%s", curl_msg);
        attempt_failure(c, &u,
                        timeout                                ? "upstream timed out"
                        : res == CURLE_COULDNT_CONNECT         ? "cannot connect"
                        : res == CURLE_PARTIAL_FILE ||
                                res == CURLE_RECV_ERROR ||
                                res == CURLE_GOT_NOTHING       ? "upstream closed the connection"
                                                               : "transfer failed");
        return;
    }
    compass_http_response resp;
    memset(&resp, 0, sizeof(resp));
    resp.status = (int)status;
    resp.body.ptr = c->body.ptr ? c->body.ptr : "";
    resp.body.len = c->body.len;
    if (status < 200 || status >= 300) {
        compass_header *hs;
        resp.n_headers = parse_headers(c, &hs);
        resp.headers = hs;
        compass_uerr_init(&u, compass_outcome_from_status((int)status), (int)status);
        o->classify_error(c->target->dep->inst, &c->preq, &resp, &u);
        if (u.outcome == COMPASS_OUTCOME_OK)
            u.outcome = compass_outcome_from_status((int)status);
        if (!u.http_status)
            u.http_status = (int)status;
        attempt_failure(c, &u, "upstream answered an error");
        return;
    }
    if (c->req.stream && c->hreq.stream_format != COMPASS_STREAM_NONE) {
        cps_sse_finish(&c->sse, on_event, c);
        if (c->attempt_failed) {
            attempt_failure(c, fail_of(c), c->fail_what ? c->fail_what : "upstream failed");
        } else if (c->stream_ended || c->saw_finish) {
            success_stream(c);
        } else {
            compass_uerr_init(&u, COMPASS_OUTCOME_RETRYABLE, 502);
            attempt_failure(c, &u, "upstream stream ended before its end marker");
        }
        return;
    }
    compass_err err;
    memset(&err, 0, sizeof(err));
    if (COMPASS_OPS_HAS(o, follow)) {
        compass_http_request next;
        memset(&next, 0, sizeof(next));
        next.size = sizeof(next);
        next.method = COMPASS_HTTP_POST;
        int frc = o->follow(c->target->dep->inst, &c->preq, &resp, &next, &err);
        if (frc == 0) {
            if (++c->follows > 4) {
                compass_uerr_init(&u, COMPASS_OUTCOME_FATAL, 502);
                attempt_failure(c, &u, "the provider asked for more than 4 follow-up calls");
                return;
            }
            c->hreq = next;
            c->status = 0;
            c->status_checked = 0;
            c->first_byte_ns = c->last_byte_ns = 0;
            c->attempt_start_ns = cps_now_ns();
            cps_buf_reset(&c->body);
            cps_buf_reset(&c->hdrs);
            if ((frc = launch(c, &err)) == 0)
                return;
        }
        if (frc != COMPASS_ENOTFOUND) {
            compass_uerr_init(&u, COMPASS_OUTCOME_RETRYABLE, 502);
            compass_copy_fixed(u.message, sizeof(u.message),
                               compass_str_c(err.msg[0] ? err.msg : compass_strerror(frc)));
            attempt_failure(c, &u, "follow-up call failed");
            return;
        }
    }
    compass_uerr_init(&u, COMPASS_OUTCOME_RETRYABLE, 502);
    if (c->kind == COMPASS_ENDPOINT_EMBEDDINGS) {
        compass_embed_response eo;
        memset(&eo, 0, sizeof(eo));
        eo.size = sizeof(eo);
        int erc = o->parse_embed_response(c->target->dep->inst, &c->preq, &resp, &eo, &u, &err);
        if (erc == COMPASS_EUPSTREAM) {
            attempt_failure(c, &u, "upstream answered an error");
        } else if (erc) {
            compass_uerr_init(&u, COMPASS_OUTCOME_RETRYABLE, 502);
            compass_copy_fixed(u.message, sizeof(u.message),
                               compass_str_c(err.msg[0] ? err.msg : compass_strerror(erc)));
            attempt_failure(c, &u, "unreadable upstream response");
        } else {
            success_embed(c, &eo);
        }
        return;
    }
    compass_chat_response out;
    memset(&out, 0, sizeof(out));
    out.size = sizeof(out);
    int rc = o->parse_response(c->target->dep->inst, &c->preq, &resp, &out, &u, &err);
    if (rc == COMPASS_EUPSTREAM) {
        attempt_failure(c, &u, "upstream answered an error");
    } else if (rc) {
        compass_uerr_init(&u, COMPASS_OUTCOME_RETRYABLE, 502);
        compass_copy_fixed(u.message, sizeof(u.message),
                           compass_str_c(err.msg[0] ? err.msg : compass_strerror(rc)));
        attempt_failure(c, &u, "unreadable upstream response");
    } else {
        success_response(c, &out);
    }
}

/* In-process providers: the answer, or the next delta, is due. */
static void on_timer(compass_engine_call *c)
{
    c->timer_pending = 0;
    if (atomic_load(&c->cancel_requested)) {
        end_attempt(c, 0, 0);
        finish(c, 499, COMPASS_ECANCELED, "", 0);
        return;
    }
    if (c->timer_kind == 1) {
        c->timer_kind = 0;
        next_attempt(c);
        return;
    }
    if (c->timer_kind == 2) {
        c->timer_kind = 0;
        if (!c->first_byte_ns && !c->committed && c->phase == PH_UPSTREAM)
            spawn_hedge(c);
        return;
    }
    compass_local_result *l = c->local;
    if (l->failed) {
        attempt_failure(c, &l->error, "in-process provider failed");
        return;
    }
    if (!c->req.stream || !l->n_deltas) {
        success_response(c, &l->response);
        return;
    }
    uint64_t now = cps_now_ns();
    if (!c->first_byte_ns)
        c->first_byte_ns = now;
    while (c->local_next < l->n_deltas && !c->finished) {
        const compass_chat_delta *d = &l->deltas[c->local_next++];
        cps_call_emit(c, d);
        int content = d->content.len || d->tool_index >= 0;
        if (content && l->chunk_delay_ms > 0 && c->local_next < l->n_deltas &&
            timer_push(c, now + (uint64_t)l->chunk_delay_ms * 1000000u) == 0)
            return; /* without a timer slot the rest goes out now */
    }
    if (!c->finished)
        success_stream(c);
}

/* Time since t, 0 when t is later than now (an attempt started after now was read). */
static uint64_t since(uint64_t now, uint64_t t)
{
    return now > t ? now - t : 0;
}

/* First-byte and idle deadlines (connect and total are curl's). */
static void scan_deadlines(cps_loop *lp, uint64_t now)
{
    compass_engine_call *c = lp->active, *next;
    for (; c; c = next) {
        next = c->act_next;
        const cps_timeouts *t = &c->target->dep->cfg->timeouts;
        const char *what = NULL;
        char msg[160];
        if (!c->first_byte_ns &&
            since(now, c->attempt_start_ns) > (uint64_t)t->first_byte_ms * 1000000u) {
            what = "upstream sent no response in time";
            snprintf(msg, sizeof(msg), "no first byte within %lld ms",
                     (long long)t->first_byte_ms);
        } else if (c->first_byte_ns && c->req.stream &&
                   since(now, c->last_byte_ns) > (uint64_t)t->idle_ms * 1000000u) {
            what = "upstream stream stalled";
            snprintf(msg, sizeof(msg), "no data for %lld ms between chunks",
                     (long long)t->idle_ms);
        }
        if (!what)
            continue;
        release_easy(c);
        compass_upstream_error u;
        compass_uerr_init(&u, COMPASS_OUTCOME_RETRYABLE, 504);
        snprintf(u.message, sizeof(u.message), "%s", msg);
        attempt_failure(c, &u, what);
    }
}

static void handle_msg(cps_loop *lp, cps_msg *m)
{
    compass_engine_call *c = m->call;
    if (m->kind == 1) {
        c->all_prev = NULL;
        c->all_next = lp->all;
        if (lp->all)
            lp->all->all_prev = c;
        lp->all = c;
        if (atomic_load(&c->cancel_requested))
            finish(c, 499, COMPASS_ECANCELED, "", 0);
        else
            next_attempt(c);
        return;
    }
    compass_engine_call *h = c->peer; /* a running hedge, if any */
    if (!c->finished) {
        if (h && !h->finished)
            cancel_call(h, 1);
        cancel_call(c, 0);
    } else if (h && !h->finished) {
        cancel_call(h, 0); /* the primary already stepped back: the hedge owns the client */
    }
    cps_call_unref(c);
}

/* Starts a hedge for primary p: its next candidate, in parallel, sharing p's request. */
static void spawn_hedge(compass_engine_call *p)
{
    compass_engine *e = p->e;
    cps_loop *lp = p->loop;
    if (p->next >= p->n_order || p->peer)
        return;
    compass_engine_call *h = calloc(1, sizeof(*h));
    cps_arena *a = cps_arena_new(4096);
    if (!h || !a) {
        free(h);
        cps_arena_free(a);
        return;
    }
    cps_target *t = p->order[p->next++]; /* the primary will not fail over to it */
    h->e = e;
    h->loop = lp;
    h->gen = p->gen;
    atomic_fetch_add(&h->gen->refs, 1);
    atomic_init(&h->refs, 1);
    atomic_init(&h->cancel_requested, 0);
    h->arena = a;
    h->req = p->req;
    h->kind = p->kind;
    h->ereq = p->ereq;
    h->metadata = p->metadata;
    h->n_metadata = p->n_metadata;
    h->route = p->route;
    h->route_name = p->route_name;
    memcpy(h->request_id, p->request_id, sizeof(h->request_id));
    memcpy(h->key_id, p->key_id, sizeof(h->key_id));
    h->cb = p->cb;
    h->ud = p->ud;
    h->start_ns = p->start_ns;
    h->created = p->created;
    h->preq.call = h;
    h->preq.arena = a;
    cps_buf_init(&h->body);
    cps_buf_init(&h->hdrs);
    cps_buf_init(&h->chunk);
    h->order = h->one_target;
    h->order[0] = t;
    h->n_order = 1;
    h->max_attempts = 1;
    h->deadline_ns = p->deadline_ns;
    h->seed = p->seed ^ 0x5bd1e995u;
    h->is_hedge = 1;
    h->peer = p;
    atomic_fetch_add(&p->refs, 1);
    p->peer = h;
    h->all_next = lp->all;
    if (lp->all)
        lp->all->all_prev = h;
    lp->all = h;
    cps_log(e, COMPASS_LOG_INFO, "request %s: no first byte from %s yet; hedging with %s",
            p->request_id, p->target ? p->target->id : "?", t->id);
    next_attempt(h);
}

/* Arms the hedge timer when the route hedges and a candidate is left to hedge with. */
static void arm_hedge(compass_engine_call *c)
{
    const cps_cfg_route *rc = c->route ? c->route->cfg : NULL;
    if (!rc || !rc->hedge_ms || c->is_hedge || c->hedged || c->next >= c->n_order)
        return;
    double delay = (double)rc->hedge_ms;
    if (rc->hedge_ms < 0) {
        delay = cps_stats_ttft_p95(c->target->stats);
        if (delay < 0)
            return; /* too few samples to know this deployment's p95 yet */
    }
    c->hedged = 1;
    c->timer_kind = 2;
    if (timer_push(c, cps_now_ns() + (uint64_t)(delay * 1e6)))
        c->timer_kind = 0;
}

/* libcurl tells which sockets to watch (socket_action interface): only sockets with activity
 * are processed, so thousands of idle streams cost nothing per event. */
static int sock_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    cps_loop *lp = userp;
    uint8_t *st = fd_slot(lp, fd);
    if (st && !(*st & FD_OURS))
        st = NULL; /* not a connection socket: no state kept for it */
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.data.fd = fd;
    if (what == CURL_POLL_REMOVE) {
        if (!st) {
            epoll_ctl(lp->epfd, EPOLL_CTL_DEL, fd, NULL);
        } else if (*st & FD_REG) {
            /* park it; an idle socket watched for output would fire at once */
            if (*st & FD_OUT) {
                ev.events = EPOLLIN;
                epoll_ctl(lp->epfd, EPOLL_CTL_MOD, fd, &ev);
            }
            *st = FD_OURS | FD_REG | FD_IN | FD_PARKED;
        }
        return 0;
    }
    unsigned want = (what & CURL_POLL_IN ? FD_IN : 0) | (what & CURL_POLL_OUT ? FD_OUT : 0);
    ev.events = (want & FD_IN ? EPOLLIN : 0) | (want & FD_OUT ? EPOLLOUT : 0);
    if (st && (*st & FD_REG)) {
        if ((*st & (FD_IN | FD_OUT)) != want &&
            epoll_ctl(lp->epfd, EPOLL_CTL_MOD, fd, &ev) && errno == ENOENT)
            epoll_ctl(lp->epfd, EPOLL_CTL_ADD, fd, &ev);
    } else if (epoll_ctl(lp->epfd, EPOLL_CTL_ADD, fd, &ev) && errno == EEXIST) {
        epoll_ctl(lp->epfd, EPOLL_CTL_MOD, fd, &ev);
    }
    if (st)
        *st = (uint8_t)(FD_OURS | FD_REG | want);
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    cps_loop *lp = userp;
    lp->curl_timer_set = timeout_ms >= 0;
    lp->curl_due = cps_now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000u;
    return 0;
}

static void read_done(cps_loop *lp)
{
    CURLMsg *cm;
    int left;
    while ((cm = curl_multi_info_read(lp->multi, &left))) {
        if (cm->msg != CURLMSG_DONE)
            continue;
        compass_engine_call *c = NULL;
        curl_easy_getinfo(cm->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        if (c)
            on_done_transfer(c, cm->data.result);
    }
}

/* ---- active health checks ---- */

static void check_done(void *ud, const compass_engine_result *res)
{
    compass_engine *e = ud;
    char labels[300];
    const char *result = res->status == 200 ? "ok" : "failed";
    snprintf(labels, sizeof(labels), "provider=\"%s\",model=\"%s\",result=\"%s\"",
             res->provider, res->model, result);
    cps_metrics_add(e->metrics, "compass_health_checks_total", labels, 1);
    if (res->status != 200)
        cps_log(e, COMPASS_LOG_WARN, "health check of %s/%s failed (HTTP %d): %.*s",
                res->provider, res->model, res->status, (int)(res->body_len < 300 ? res->body_len
                                                                                   : 300),
                res->body);
}

/* Sends one minimal chat request to t through the normal attempt path: its outcome feeds the
 * same stats and breaker as client traffic (so an open breaker is respected, and a half-open
 * one gets its probe from here when no client comes). */
static void spawn_check(cps_loop *lp, cps_gen *g, cps_target *t)
{
    compass_engine *e = lp->e;
    static const compass_engine_callbacks cb = {sizeof(compass_engine_callbacks), NULL, NULL,
                                                NULL, check_done};
    compass_engine_call *c = calloc(1, sizeof(*c));
    cps_arena *a = cps_arena_new(2048);
    if (!c || !a) {
        free(c);
        cps_arena_free(a);
        return;
    }
    char body[512];
    int n = snprintf(body, sizeof(body),
                     "{\"model\":\"%s\",\"max_tokens\":1,\"messages\":[{\"role\":\"user\","
                     "\"content\":\"ping\"}]}",
                     t->model);
    char *copy = cps_arena_strndup(a, body, (size_t)n);
    compass_err err;
    memset(&err, 0, sizeof(err));
    if (!copy || cps_canon_parse_chat(a, copy, (size_t)n, &c->req, &err)) {
        free(c);
        cps_arena_free(a);
        return;
    }
    c->e = e;
    c->loop = lp;
    c->gen = g;
    atomic_fetch_add(&g->refs, 1);
    atomic_init(&c->refs, 1);
    atomic_init(&c->cancel_requested, 0);
    c->arena = a;
    c->internal = 1;
    c->cb = cb;
    c->ud = e;
    c->start_ns = cps_now_ns();
    c->created = (int64_t)time(NULL);
    c->route_name = "health-check";
    snprintf(c->request_id, sizeof(c->request_id), "check-%s", t->id);
    c->preq.call = c;
    c->preq.arena = a;
    cps_buf_init(&c->body);
    cps_buf_init(&c->hdrs);
    cps_buf_init(&c->chunk);
    c->order = c->one_target;
    c->order[0] = t;
    c->n_order = 1;
    c->max_attempts = 1;
    c->all_next = lp->all;
    if (lp->all)
        lp->all->all_prev = c;
    lp->all = c;
    next_attempt(c);
}

/* At most a few times a second: probes whose interval has passed. */
static void run_checks(cps_loop *lp, uint64_t now)
{
    compass_engine *e = lp->e;
    if (now < lp->next_health_scan_ns)
        return;
    lp->next_health_scan_ns = now + 100000000ull;
    pthread_mutex_lock(&e->gen_mu);
    cps_gen *g = e->gen;
    if (g)
        atomic_fetch_add(&g->refs, 1);
    pthread_mutex_unlock(&e->gen_mu);
    if (!g)
        return;
    for (size_t i = 0; i < g->n_targets; i++) {
        cps_target *t = &g->targets[i];
        int64_t every = t->dep->cfg->health_check_ms;
        if (!every || !t->dep->enabled)
            continue;
        if (!t->stats->next_check_ns) {
            t->stats->next_check_ns = now + (uint64_t)every * 1000000u;
            continue;
        }
        if (now < t->stats->next_check_ns)
            continue;
        t->stats->next_check_ns = now + (uint64_t)every * 1000000u;
        /* an open breaker is waiting out its cooldown: nothing to learn from a check */
        if (cps_breaker_state(t->stats, &t->dep->cfg->breaker, now) == COMPASS_BREAKER_OPEN)
            continue;
        spawn_check(lp, g, t);
    }
    cps_gen_unref(g);
}

/* One turn of the loop: the queue, curl's timer, our timers, deadlines, then the sockets
 * that are ready, waiting at most max_wait_ms (0: not at all). Returns 1 once stopped, else 0;
 * *next_ms gets how long the loop may sleep before it has something due (-1: nothing). */
static int loop_turn(cps_loop *lp, int max_wait_ms, int *next_ms)
{
    compass_engine *e = lp->e;
    struct epoll_event evs[256];
    int running = 0;
    this_loop = lp;
    this_serial = e->serial;
    pthread_mutex_lock(&lp->q_mu);
    cps_msg *m = lp->q_head;
    lp->q_head = lp->q_tail = NULL;
    int stop = lp->stop;
    pthread_mutex_unlock(&lp->q_mu);
    while (m) {
        cps_msg *next = m->next;
        handle_msg(lp, m);
        free(m);
        m = next;
    }
    if (stop) {
        while (lp->all) {
            compass_engine_call *c = lp->all;
            release_easy(c);
            c->timer_gen++;
            end_attempt(c, 0, 0);
            c->silent = c->is_hedge;
            finish(c, 499, COMPASS_ECANCELED, "", 0);
        }
        return 1;
    }
    uint64_t now = cps_now_ns();
    if (lp->curl_timer_set && lp->curl_due <= now) {
        lp->curl_timer_set = 0;
        curl_multi_socket_action(lp->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        read_done(lp);
    }
    while (lp->n_timers && lp->timers[0].due <= now) {
        cps_timer t = timer_pop(lp);
        if (t.gen == t.call->timer_gen && !t.call->finished)
            on_timer(t.call);
        cps_call_unref(t.call);
    }
    if (since(now, lp->last_scan_ns) >= SCAN_NS) {
        lp->last_scan_ns = now;
        scan_deadlines(lp, now);
    }
    if (lp->index == 0)
        run_checks(lp, now);
    /* how long may we sleep: the next of our timers, curl's timer, the deadline scan */
    uint64_t wake = now + (lp->active ? SCAN_NS : 1000000000ull);
    if (lp->index == 0 && atomic_load(&e->has_checks) && lp->next_health_scan_ns < wake)
        wake = lp->next_health_scan_ns > now ? lp->next_health_scan_ns : now;
    if (lp->n_timers && lp->timers[0].due < wake)
        wake = lp->timers[0].due;
    if (lp->curl_timer_set && lp->curl_due < wake)
        wake = lp->curl_due;
    pthread_mutex_lock(&lp->q_mu);
    int queued = lp->q_head != NULL;
    pthread_mutex_unlock(&lp->q_mu);
    now = cps_now_ns();
    int wait_ms = queued || wake <= now ? 0 : (int)((wake - now + 999999) / 1000000);
    if (wait_ms > max_wait_ms)
        wait_ms = max_wait_ms;
    int n = epoll_wait(lp->epfd, evs, 256, wait_ms);
    for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        if (fd == lp->wakefd) {
            uint64_t v;
            ssize_t r = read(lp->wakefd, &v, sizeof(v));
            (void)r;
            atomic_store(&lp->wake_pending, 0);
            continue;
        }
        if (fd_parked_event(lp, fd))
            continue; /* a pooled connection the server closed: curl finds out on reuse */
        int mask = 0;
        if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP))
            mask |= CURL_CSELECT_IN;
        if (evs[i].events & EPOLLOUT)
            mask |= CURL_CSELECT_OUT;
        if (evs[i].events & EPOLLERR)
            mask |= CURL_CSELECT_ERR;
        curl_multi_socket_action(lp->multi, fd, mask, &running);
    }
    if (n > 0)
        read_done(lp);
    if (next_ms) {
        now = cps_now_ns();
        uint64_t due = UINT64_MAX;
        if (lp->n_timers)
            due = lp->timers[0].due;
        if (lp->curl_timer_set && lp->curl_due < due)
            due = lp->curl_due;
        if (lp->active && now + SCAN_NS < due)
            due = now + SCAN_NS;
        if (lp->index == 0 && atomic_load(&e->has_checks) && lp->next_health_scan_ns < due)
            due = lp->next_health_scan_ns;
        *next_ms = due == UINT64_MAX ? -1 : due <= now ? 0 : (int)((due - now + 999999) / 1000000);
    }
    return 0;
}

static void *loop_main(void *arg)
{
    cps_loop *lp = arg;
    while (!loop_turn(lp, 1000, NULL))
        ;
    /* drop the timers' references */
    while (lp->n_timers) {
        cps_timer t = timer_pop(lp);
        cps_call_unref(t.call);
    }
    return NULL;
}

void cps_loop_pump(compass_engine *e, int wait_ms)
{
    for (int i = 0; i < e->n_loops; i++)
        loop_turn(&e->loops[i], e->n_loops > 1 ? 0 : wait_ms, NULL);
    if (e->n_loops > 1 && wait_ms > 0) {
        struct timespec ts = {0, 1000000}; /* several loops: a short nap instead of a wait */
        nanosleep(&ts, NULL);
    }
}

COMPASS_API int compass_engine_loops(compass_engine *e)
{
    return e ? e->n_loops : 0;
}

COMPASS_API int compass_engine_loop_fd(compass_engine *e, int i)
{
    return e && e->external && i >= 0 && i < e->n_loops ? e->loops[i].epfd : -1;
}

COMPASS_API int compass_engine_loop_run(compass_engine *e, int i)
{
    int next = -1;
    if (!e || !e->external || i < 0 || i >= e->n_loops)
        return -1;
    loop_turn(&e->loops[i], 0, &next);
    return next;
}

COMPASS_API int compass_engine_loop_pending(compass_engine *e, int i)
{
    if (!e || !e->external || i < 0 || i >= e->n_loops)
        return 0;
    cps_loop *lp = &e->loops[i];
    pthread_mutex_lock(&lp->q_mu);
    int queued = lp->q_head != NULL;
    pthread_mutex_unlock(&lp->q_mu);
    return queued;
}

COMPASS_API int compass_engine_fd(compass_engine *e)
{
    return compass_engine_loop_fd(e, 0);
}

COMPASS_API int compass_engine_run(compass_engine *e)
{
    return compass_engine_loop_run(e, 0);
}


static int loop_init(cps_loop *lp)
{
    lp->epfd = epoll_create1(EPOLL_CLOEXEC);
    lp->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    lp->multi = curl_multi_init();
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.fd = lp->wakefd;
    if (lp->epfd < 0 || lp->wakefd < 0 || !lp->multi ||
        epoll_ctl(lp->epfd, EPOLL_CTL_ADD, lp->wakefd, &ev))
        return -1;
    curl_multi_setopt(lp->multi, CURLMOPT_MAXCONNECTS, 1024L);
    curl_multi_setopt(lp->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(lp->multi, CURLMOPT_SOCKETDATA, lp);
    curl_multi_setopt(lp->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(lp->multi, CURLMOPT_TIMERDATA, lp);
    return 0;
}

int cps_loop_start(compass_engine *e, int n, compass_err *err)
{
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return compass_err_set(err, COMPASS_EIO, "libcurl failed to initialise");
    if (n < 1)
        n = 1;
    e->loops = calloc((size_t)n, sizeof(*e->loops));
    if (!e->loops)
        return compass_err_set(err, COMPASS_ENOMEM, "out of memory");
    e->n_loops = n;
    for (int i = 0; i < n; i++) {
        cps_loop *lp = &e->loops[i];
        lp->e = e;
        lp->index = i;
        snprintf(lp->metric_label, sizeof(lp->metric_label), "loop=\"%d\"", i);
        lp->m_requests = cps_metrics_series(e->metrics, CPS_METRIC_COUNTER,
                                            "compass_loop_requests_total", lp->metric_label);
        lp->epfd = lp->wakefd = -1;
        pthread_mutex_init(&lp->q_mu, NULL);
        atomic_init(&lp->wake_pending, 0);
    }
    for (int i = 0; i < n; i++) {
        cps_loop *lp = &e->loops[i];
        if (loop_init(lp)) {
            cps_loop_stop(e);
            return compass_err_set(err, COMPASS_EIO, "cannot set up the engine's event loop");
        }
        if (e->external)
            continue; /* the host runs the loops */
        if (pthread_create(&lp->thread, NULL, loop_main, lp)) {
            cps_loop_stop(e);
            return compass_err_set(err, COMPASS_EIO, "cannot start an engine thread");
        }
        lp->thread_started = 1;
    }
    return 0;
}

/* Cancels what is left on the loop and frees it (its thread, if any, is joined). */
static void loop_stop(cps_loop *lp)
{
    compass_engine *e = lp->e;
    if (lp->thread_started) {
        pthread_mutex_lock(&lp->q_mu);
        lp->stop = 1;
        pthread_mutex_unlock(&lp->q_mu);
        atomic_store(&lp->wake_pending, 0);
        wake_loop(lp);
        pthread_join(lp->thread, NULL);
        lp->thread_started = 0;
    } else if (e->external && lp->multi) {
        /* no thread: cancel what is left on the caller's thread */
        pthread_mutex_lock(&lp->q_mu);
        lp->stop = 1;
        pthread_mutex_unlock(&lp->q_mu);
        loop_turn(lp, 0, NULL);
        while (lp->n_timers) {
            cps_timer t = timer_pop(lp);
            cps_call_unref(t.call);
        }
    }
    if (this_loop == lp) {
        this_loop = NULL;
        this_serial = 0;
    }
    for (size_t i = 0; i < lp->n_easy_pool; i++)
        curl_easy_cleanup(lp->easy_pool[i]);
    lp->n_easy_pool = 0;
    free(lp->timers);
    lp->timers = NULL;
    if (lp->multi)
        curl_multi_cleanup(lp->multi);
    lp->multi = NULL;
    if (lp->epfd >= 0)
        close(lp->epfd);
    if (lp->wakefd >= 0)
        close(lp->wakefd);
    lp->epfd = lp->wakefd = -1;
    urls_free(lp); /* after the easy handles that may point at them */
    free(lp->fdstate); /* after curl_multi_cleanup, whose closes clear entries */
    lp->fdstate = NULL;
    lp->n_fdstate = 0;
    pthread_mutex_destroy(&lp->q_mu);
}

void cps_loop_stop(compass_engine *e)
{
    for (int i = 0; i < e->n_loops; i++)
        loop_stop(&e->loops[i]);
    free(e->loops);
    e->loops = NULL;
    e->n_loops = 0;
}
