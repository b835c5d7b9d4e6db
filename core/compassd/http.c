/* The front door. libmicrohttpd runs the client sockets on its own epoll thread(s); a chat
 * request is handed to the engine and its connection suspended (no thread waits). The engine's
 * callbacks fill the connection's buffer and resume it. A watchdog peeks at suspended sockets
 * so that a client that goes away cancels its upstream transfer promptly. */
#include "http.h"

#include <errno.h>
#include <json-c/json.h>
#include <malloc.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "anthropic_front.h"
#include "buf.h"

#define MAX_PENDING_OUT ((size_t)16 << 20)

enum endpoint {
    EP_NONE, EP_CHAT, EP_EMBED, EP_MESSAGES, EP_MODELS, EP_HEALTH, EP_PROVIDERS, EP_METRICS
};

#define MAX_META 16

struct cpd_http {
    struct MHD_Daemon *d;
    compass_engine *e;
    cpd_http_opts o;
    int port;
    atomic_long open_conns;
    pthread_mutex_t watch_mu;
    struct conn *watch;
    pthread_t watchdog;
    int watchdog_started;
    atomic_int stop;
    /* handoff mode: sockets accepted elsewhere, waiting for this front door's thread */
    atomic_long tcp_conns, n_handed;
    pthread_mutex_t hand_mu;
    struct handed *handed;
    size_t cap_handed;
    atomic_int resumed; /* a connection was resumed since the last cpd_http_run */
};

struct handed {
    int fd;
    socklen_t len;
    struct sockaddr_storage addr;
};

struct conn {
    cpd_http *h;
    struct MHD_Connection *mhd;
    int fd;
    enum endpoint ep;
    const char *path;
    pthread_mutex_t mu;
    int refs;
    cps_buf body;
    int too_large, submitted;
    compass_engine_call *call;
    int suspended, head_ready, done, stream, mhd_done, cancel_sent, queued;
    int status, attempts;
    double cost;
    char provider[128], model[192], route[192];
    char request_id[80];
    cps_buf out;
    size_t out_off;
    struct conn *w_prev, *w_next;
    int watched;
    cpd_anth_stream *anth;  /* /v1/messages streams: canonical deltas -> Anthropic events */
    int anth_failed;        /* an error event was sent */
};

/* ---- small helpers ---- */

static void conn_unref(struct conn *c)
{
    pthread_mutex_lock(&c->mu);
    int left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left)
        return;
    cps_buf_free(&c->body);
    cps_buf_free(&c->out);
    cpd_anth_stream_free(c->anth);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void watch_add(cpd_http *h, struct conn *c)
{
    pthread_mutex_lock(&h->watch_mu);
    c->w_prev = NULL;
    c->w_next = h->watch;
    if (h->watch)
        h->watch->w_prev = c;
    h->watch = c;
    c->watched = 1;
    pthread_mutex_unlock(&h->watch_mu);
}

static void watch_remove(cpd_http *h, struct conn *c)
{
    pthread_mutex_lock(&h->watch_mu);
    if (c->watched) {
        if (c->w_prev)
            c->w_prev->w_next = c->w_next;
        else
            h->watch = c->w_next;
        if (c->w_next)
            c->w_next->w_prev = c->w_prev;
        c->watched = 0;
    }
    pthread_mutex_unlock(&h->watch_mu);
}

/* Called with c->mu held. */
static void wake(struct conn *c)
{
    if (c->suspended && !c->mhd_done) {
        c->suspended = 0;
        MHD_resume_connection(c->mhd);
        atomic_store_explicit(&c->h->resumed, 1, memory_order_relaxed);
    }
}

static enum MHD_Result send_buf(struct MHD_Connection *mc, int status, const char *ctype,
                                const char *body, size_t len, const char *req_id)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", ctype);
    if (req_id && *req_id)
        MHD_add_response_header(r, "x-request-id", req_id);
    enum MHD_Result ret = MHD_queue_response(mc, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *mc, int status, const char *type,
                                  const char *code, const char *msg, const char *req_id,
                                  const char *allow)
{
    cps_buf b;
    cps_buf_init(&b);
    cps_buf_puts(&b, "{\"error\":{\"message\":");
    cps_buf_json_str(&b, msg, strlen(msg));
    cps_buf_puts(&b, ",\"type\":");
    cps_buf_json_str(&b, type, strlen(type));
    cps_buf_puts(&b, ",\"param\":null,\"code\":");
    cps_buf_json_str(&b, code, strlen(code));
    cps_buf_puts(&b, "}}");
    struct MHD_Response *r = MHD_create_response_from_buffer(
        b.len, b.ptr ? b.ptr : (void *)"", MHD_RESPMEM_MUST_COPY);
    cps_buf_free(&b);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (req_id && *req_id)
        MHD_add_response_header(r, "x-request-id", req_id);
    if (allow)
        MHD_add_response_header(r, "Allow", allow);
    enum MHD_Result ret = MHD_queue_response(mc, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static void new_request_id(char *out, size_t cap)
{
    static atomic_ulong n;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long long x = ((unsigned long long)ts.tv_nsec << 20) ^ (unsigned long long)ts.tv_sec;
    x ^= (unsigned long long)atomic_fetch_add(&n, 1) * 0x9E3779B97F4A7C15ull;
    x ^= x >> 31;
    /* "req-%016llx", by hand: on every request's path */
    static const char hex[] = "0123456789abcdef";
    char id[21] = "req-";
    for (int i = 0; i < 16; i++)
        id[4 + i] = hex[(x >> (60 - 4 * i)) & 15];
    id[20] = '\0';
    cps_str_copy(out, cap, id);
}

static int sane_id(const char *s)
{
    size_t n = 0;
    for (; s && *s; s++, n++)
        if (n >= 64 || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                         (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.' ||
                         *s == ':'))
            return 0;
    return n > 0;
}

/* ---- engine callbacks (engine thread) ---- */

static void on_head(void *ud, const compass_engine_head *hd)
{
    struct conn *c = ud;
    pthread_mutex_lock(&c->mu);
    c->status = hd->status;
    c->stream = hd->stream;
    c->attempts = hd->attempts;
    c->cost = hd->cost_usd;
    cps_str_copy(c->provider, sizeof(c->provider), hd->provider);
    cps_str_copy(c->model, sizeof(c->model), hd->model);
    cps_str_copy(c->route, sizeof(c->route), hd->route);
    cps_str_copy(c->request_id, sizeof(c->request_id), hd->request_id);
    c->head_ready = 1;
    if (c->ep == EP_MESSAGES && c->stream && !c->anth) {
        char id[96];
        snprintf(id, sizeof(id), "msg_%s", c->request_id);
        c->anth = cpd_anth_stream_new(hd->model, id);
    }
    if (c->stream)
        wake(c); /* a whole body is woken for by on_done */
    pthread_mutex_unlock(&c->mu);
}

static void anth_delta(void *ud, const compass_chat_delta *d)
{
    struct conn *c = ud;
    pthread_mutex_lock(&c->mu);
    if (c->anth && !c->mhd_done) {
        cpd_anth_stream_delta(c->anth, d, &c->out);
        wake(c);
    }
    pthread_mutex_unlock(&c->mu);
}

/* Anthropic streams: the OpenAI chunks are not sent; an error event is translated. */
static void anth_chunk(void *ud, const char *data, size_t len)
{
    struct conn *c = ud;
    if (len < 9 || memcmp(data, "{\"error\"", 8))
        return;
    char msg[600] = "upstream failed mid-stream";
    json_object *o = json_tokener_parse(data);
    json_object *e, *m;
    if (o && json_object_object_get_ex(o, "error", &e) &&
        json_object_object_get_ex(e, "message", &m))
        snprintf(msg, sizeof(msg), "%s", json_object_get_string(m));
    json_object_put(o);
    pthread_mutex_lock(&c->mu);
    if (c->anth && !c->mhd_done) {
        cpd_anth_stream_error(c->anth, msg, &c->out);
        c->anth_failed = 1;
        wake(c);
    }
    pthread_mutex_unlock(&c->mu);
}

static void on_chunk(void *ud, const char *data, size_t len)
{
    struct conn *c = ud;
    pthread_mutex_lock(&c->mu);
    if (!c->mhd_done && c->out.len - c->out_off + len < MAX_PENDING_OUT) {
        cps_buf_append(&c->out, "data: ", 6);
        cps_buf_append(&c->out, data, len);
        cps_buf_append(&c->out, "\n\n", 2);
        wake(c);
    } else if (!c->cancel_sent && c->call && !c->mhd_done) {
        /* the client reads slower than the upstream writes: give up on it */
        c->cancel_sent = 1;
        compass_engine_cancel(c->call);
    }
    pthread_mutex_unlock(&c->mu);
}

static void log_request(struct conn *c, const compass_engine_result *r)
{
    cpd_http *h = c->h;
    if (!h->o.log_requests || !h->o.log_line)
        return;
    cps_buf b;
    cps_buf_init(&b);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    cps_buf_printf(&b, "{\"ts\":\"%s.%03ldZ\",\"level\":\"info\",\"msg\":\"request\",\"id\":", when,
                   ts.tv_nsec / 1000000);
    cps_buf_json_str(&b, r->request_id, strlen(r->request_id));
    cps_buf_puts(&b, ",\"path\":");
    cps_buf_json_str(&b, c->path, strlen(c->path));
    cps_buf_puts(&b, ",\"route\":");
    cps_buf_json_str(&b, r->route, strlen(r->route));
    cps_buf_puts(&b, ",\"provider\":");
    cps_buf_json_str(&b, r->provider, strlen(r->provider));
    cps_buf_puts(&b, ",\"model\":");
    cps_buf_json_str(&b, r->model, strlen(r->model));
    cps_buf_printf(&b, ",\"status\":%d,\"stream\":%s,\"latency_ms\":%.3f,\"ttft_ms\":%.3f,"
                   "\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"attempts\":%d,"
                   "\"attempt_log\":",
                   r->status, c->stream ? "true" : "false", r->latency_ms, r->ttft_ms,
                   (long long)r->usage.prompt_tokens, (long long)r->usage.completion_tokens,
                   r->attempts);
    cps_buf_json_str(&b, r->attempts_log, strlen(r->attempts_log));
    if (r->cost_usd >= 0)
        cps_buf_printf(&b, ",\"cost_usd\":%.8f", r->cost_usd);
    if (r->rc == COMPASS_ECANCELED)
        cps_buf_puts(&b, ",\"cancelled\":true");
    cps_buf_puts(&b, "}");
    if (!b.oom)
        h->o.log_line(b.ptr);
    cps_buf_free(&b);
}

static void on_done(void *ud, const compass_engine_result *r)
{
    struct conn *c = ud;
    log_request(c, r);
    watch_remove(c->h, c);
    compass_err terr;
    memset(&terr, 0, sizeof(terr));
    pthread_mutex_lock(&c->mu);
    c->done = 1;
    c->call = NULL;
    if (!c->stream && !c->mhd_done) {
        cps_buf_reset(&c->out);
        c->status = r->status;
        if (c->ep != EP_MESSAGES)
            cps_buf_append(&c->out, r->body, r->body_len);
        else if (r->status == 200 &&
                 cpd_anth_response_from_openai(r->body, r->body_len, &c->out, &terr) == 0)
            ;
        else if (cpd_anth_error_from_openai(r->status == 200 ? 502 : r->status, r->body,
                                            r->body_len, &c->out) != 0 ||
                 r->status == 200)
            c->status = 502;
    } else if (c->anth && !c->mhd_done && !c->anth_failed && r->rc == 0) {
        cpd_anth_stream_usage(c->anth, &r->usage);
        cpd_anth_stream_finish(c->anth, &c->out);
    }
    wake(c);
    pthread_mutex_unlock(&c->mu);
    conn_unref(c); /* the engine's reference */
}

/* ---- streaming body ---- */

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct conn *c = cls;
    pthread_mutex_lock(&c->mu);
    size_t avail = c->out.len - c->out_off;
    if (avail) {
        size_t n = avail < max ? avail : max;
        memcpy(buf, c->out.ptr + c->out_off, n);
        c->out_off += n;
        if (c->out_off == c->out.len) {
            cps_buf_reset(&c->out);
            c->out_off = 0;
        }
        pthread_mutex_unlock(&c->mu);
        return (ssize_t)n;
    }
    if (c->done) {
        pthread_mutex_unlock(&c->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    c->suspended = 1;
    MHD_suspend_connection(c->mhd);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

static void stream_free(void *cls)
{
    conn_unref(cls); /* the response's reference */
}

static void add_compass_headers(struct MHD_Response *r, struct conn *c)
{
    char tmp[64];
    MHD_add_response_header(r, "x-request-id", c->request_id);
    if (c->route[0])
        MHD_add_response_header(r, "x-compass-route", c->route);
    if (c->provider[0])
        MHD_add_response_header(r, "x-compass-provider", c->provider);
    if (c->model[0])
        MHD_add_response_header(r, "x-compass-model", c->model);
    if (c->attempts >= 0 && c->attempts < 10) { /* the usual case, without the formatter */
        tmp[0] = (char)('0' + c->attempts);
        tmp[1] = '\0';
    } else {
        snprintf(tmp, sizeof(tmp), "%d", c->attempts);
    }
    MHD_add_response_header(r, "x-compass-attempts", tmp);
    if (c->cost >= 0) {
        snprintf(tmp, sizeof(tmp), "%.8f", c->cost);
        MHD_add_response_header(r, "x-compass-cost", tmp);
    }
}

/* Called with c->mu held: whether the answer can be queued (a stream once its head is known,
 * a whole body once it is complete). */
static int answer_ready(const struct conn *c)
{
    return c->head_ready && (c->stream || c->done);
}

/* Called with c->mu held, once answer_ready. */
static enum MHD_Result queue_answer(struct conn *c)
{
    struct MHD_Response *r;
    c->queued = 1;
    if (c->stream) {
        c->refs++;
        /* SSE events are small; MHD allocates one block per stream */
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 512, stream_reader, c,
                                              stream_free);
        if (!r) {
            c->refs--;
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        MHD_add_response_header(r, "X-Accel-Buffering", "no");
    } else if (c->out.ptr && c->out.len) {
        /* the body moves to MHD, which free()s it (cps_buf allocates with realloc) */
        r = MHD_create_response_from_buffer(c->out.len, c->out.ptr, MHD_RESPMEM_MUST_FREE);
        if (!r)
            return MHD_NO;
        cps_buf_init(&c->out);
        MHD_add_response_header(r, "Content-Type", "application/json");
    } else {
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (!r)
            return MHD_NO;
        MHD_add_response_header(r, "Content-Type", "application/json");
    }
    add_compass_headers(r, c);
    enum MHD_Result ret = MHD_queue_response(c->mhd, (unsigned)c->status, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- the access handler ---- */

static enum endpoint route_of(const char *url, const char **allow)
{
    if (!strcmp(url, "/v1/chat/completions") || !strcmp(url, "/chat/completions")) {
        *allow = "POST";
        return EP_CHAT;
    }
    if (!strcmp(url, "/v1/embeddings") || !strcmp(url, "/embeddings")) {
        *allow = "POST";
        return EP_EMBED;
    }
    if (!strcmp(url, "/v1/messages")) {
        *allow = "POST";
        return EP_MESSAGES;
    }
    *allow = "GET";
    if (!strcmp(url, "/v1/models") || !strcmp(url, "/models"))
        return EP_MODELS;
    if (!strcmp(url, "/api/v1/health") || !strcmp(url, "/health"))
        return EP_HEALTH;
    if (!strcmp(url, "/api/v1/providers"))
        return EP_PROVIDERS;
    if (!strcmp(url, "/metrics") || !strcmp(url, "/api/v1/metrics"))
        return EP_METRICS;
    *allow = NULL;
    return EP_NONE;
}

static enum MHD_Result serve_get(cpd_http *h, struct MHD_Connection *mc, enum endpoint ep,
                                 const char *req_id)
{
    char *body = NULL;
    const char *ctype = "application/json";
    switch (ep) {
    case EP_MODELS: body = compass_engine_models_json(h->e); break;
    case EP_PROVIDERS: body = compass_engine_providers_json(h->e); break;
    case EP_METRICS:
        body = compass_engine_metrics_text(h->e);
        ctype = "text/plain; version=0.0.4; charset=utf-8";
        break;
    case EP_HEALTH: {
        char tmp[160];
        snprintf(tmp, sizeof(tmp), "{\"status\":\"ok\",\"version\":\"%s\",\"in_flight\":%ld}",
                 compass_version(), compass_engine_in_flight(h->e));
        return send_buf(mc, 200, ctype, tmp, strlen(tmp), req_id);
    }
    default: break;
    }
    if (!body)
        return send_error(mc, 500, "server_error", "internal_error", "out of memory", req_id,
                          NULL);
    enum MHD_Result r = send_buf(mc, 200, ctype, body, strlen(body), req_id);
    compass_free(body);
    return r;
}

/* x-compass-* request headers, for routers: the engine copies them at submit, so they live on
 * the submitting stack (not in the connection, which a long stream keeps for its duration). */
struct meta {
    compass_header meta[MAX_META];
    size_t n_meta;
    cps_buf meta_text;
};

/* Collects x-compass-<name> request headers as metadata name/value pairs. */
static enum MHD_Result collect_meta(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    struct meta *c = cls;
    if (!key || !value || strncasecmp(key, "x-compass-", 10) || c->n_meta >= MAX_META)
        return MHD_YES;
    size_t kl = strlen(key + 10), vl = strlen(value);
    if (!kl || kl > 64 || vl > 256)
        return MHD_YES;
    /* offsets now, pointers once the text buffer stops moving */
    size_t off = c->meta_text.len;
    for (size_t i = 0; i < kl; i++) {
        char ch = key[10 + i];
        ch = (char)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
        cps_buf_append(&c->meta_text, &ch, 1);
    }
    cps_buf_append(&c->meta_text, value, vl);
    c->meta[c->n_meta].name.ptr = (const char *)(uintptr_t)off;
    c->meta[c->n_meta].name.len = kl;
    c->meta[c->n_meta].value.ptr = (const char *)(uintptr_t)(off + kl);
    c->meta[c->n_meta].value.len = vl;
    c->n_meta++;
    return MHD_YES;
}

/* x-compass-explain: 1 answers with the routing plan instead of calling an upstream. */
static int getenv_explain(struct conn *c)
{
    const char *v = MHD_lookup_connection_value(c->mhd, MHD_HEADER_KIND, "x-compass-explain");
    return v && (!strcmp(v, "1") || !strcasecmp(v, "true"));
}

static enum MHD_Result submit_chat(cpd_http *h, struct conn *c)
{
    static const compass_engine_callbacks cb = {sizeof(compass_engine_callbacks), on_head,
                                                on_chunk, NULL, on_done};
    static const compass_engine_callbacks anth_cb = {sizeof(compass_engine_callbacks), on_head,
                                                     anth_chunk, anth_delta, on_done};
    compass_engine_request rq;
    memset(&rq, 0, sizeof(rq));
    rq.size = sizeof(rq);
    rq.body = c->body.ptr ? c->body.ptr : "";
    rq.body_len = c->body.len;
    cps_buf translated;
    cps_buf_init(&translated);
    if (c->ep == EP_MESSAGES) {
        compass_err terr;
        int stream = 0;
        memset(&terr, 0, sizeof(terr));
        if (cpd_anth_request_to_openai(rq.body, rq.body_len, &translated, &stream, &terr)) {
            cps_buf eb;
            cps_buf_init(&eb);
            cpd_anth_error_json(400, terr.msg[0] ? terr.msg : "invalid request", &eb);
            c->queued = 1;
            enum MHD_Result ret = send_buf(c->mhd, 400, "application/json", eb.ptr ? eb.ptr : "",
                                           eb.len, c->request_id);
            cps_buf_free(&eb);
            cps_buf_free(&translated);
            return ret;
        }
        /* the engine reads the body during submit (it copies it) */
        rq.body = translated.ptr ? translated.ptr : "";
        rq.body_len = translated.len;
    }
    rq.request_id = c->request_id;
    rq.endpoint = c->ep == EP_EMBED ? COMPASS_ENDPOINT_EMBEDDINGS : COMPASS_ENDPOINT_CHAT;
    struct meta m;
    m.n_meta = 0;
    cps_buf_init(&m.meta_text);
    MHD_get_connection_values(c->mhd, MHD_HEADER_KIND, collect_meta, &m);
    if (m.meta_text.oom)
        m.n_meta = 0;
    for (size_t i = 0; i < m.n_meta; i++) {
        m.meta[i].name.ptr = m.meta_text.ptr + (uintptr_t)m.meta[i].name.ptr;
        m.meta[i].value.ptr = m.meta_text.ptr + (uintptr_t)m.meta[i].value.ptr;
    }
    rq.metadata = m.meta;
    rq.n_metadata = m.n_meta;
    c->submitted = 1;
    pthread_mutex_lock(&c->mu);
    c->refs++; /* the engine's */
    pthread_mutex_unlock(&c->mu);
    watch_add(h, c);
    if (getenv_explain(c))
        rq.explain = 1;
    compass_engine_call *call = NULL;
    int rc = compass_engine_submit(h->e, &rq, c->ep == EP_MESSAGES ? &anth_cb : &cb, c, &call);
    cps_buf_free(&m.meta_text);
    cps_buf_free(&translated);
    cps_buf_free(&c->body); /* the engine keeps its own copy */
    if (rc) {
        watch_remove(h, c);
        conn_unref(c);
        return send_error(c->mhd, 503, "server_error", "unavailable",
                          rc == COMPASS_ECANCELED ? "compassd is shutting down"
                                                  : compass_strerror(rc),
                          c->request_id, NULL);
    }
    pthread_mutex_lock(&c->mu);
    if (!c->done)
        c->call = call;
    enum MHD_Result ret = MHD_YES;
    if (answer_ready(c)) {
        ret = queue_answer(c);
    } else {
        c->suspended = 1;
        MHD_suspend_connection(c->mhd);
    }
    pthread_mutex_unlock(&c->mu);
    return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *mc, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    (void)version;
    cpd_http *h = cls;
    struct conn *c = *con_cls;
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c)
            return MHD_NO;
        c->h = h;
        c->mhd = mc;
        c->refs = 1; /* MHD's, dropped at completion */
        pthread_mutex_init(&c->mu, NULL);
        cps_buf_init(&c->body);
        cps_buf_init(&c->out);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci ? ci->connect_fd : -1;
        const char *rid = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "x-request-id");
        if (rid && sane_id(rid))
            snprintf(c->request_id, sizeof(c->request_id), "%s", rid);
        else
            new_request_id(c->request_id, sizeof(c->request_id));
        const char *allow = NULL;
        c->ep = route_of(url, &allow);
        c->path = c->ep == EP_CHAT       ? "/v1/chat/completions"
                  : c->ep == EP_EMBED    ? "/v1/embeddings"
                  : c->ep == EP_MESSAGES ? "/v1/messages"
                                         : "other";
        *con_cls = c;
        atomic_fetch_add(&h->open_conns, 1);
        if (c->ep == EP_NONE) {
            char msg[300];
            snprintf(msg, sizeof(msg), "Unknown request URL: %s %.200s", method, url);
            c->queued = 1;
            return send_error(mc, 404, "invalid_request_error", "unknown_url", msg,
                              c->request_id, NULL);
        }
        int is_post = !strcmp(method, "POST"), is_get = !strcmp(method, "GET") ||
                                                        !strcmp(method, "HEAD");
        int takes_body = c->ep == EP_CHAT || c->ep == EP_EMBED || c->ep == EP_MESSAGES;
        if ((takes_body && !is_post) || (!takes_body && !is_get)) {
            char msg[200];
            snprintf(msg, sizeof(msg), "Method %s is not allowed on %.100s (allowed: %s)",
                     method, url, allow);
            c->queued = 1;
            return send_error(mc, 405, "invalid_request_error", "method_not_allowed", msg,
                              c->request_id, allow);
        }
        if (takes_body) {
            const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND,
                                                         "Content-Length");
            long long declared = cl ? strtoll(cl, NULL, 10) : 0;
            if (declared > h->o.max_body_bytes && declared <= 64LL << 20) {
                /* read and drop the body, then answer 413: a client still uploading would
                 * see a reset instead of the answer if we closed early */
                c->too_large = 1;
            } else if (declared > h->o.max_body_bytes) {
                /* answer before reading the body; MHD closes the connection after it */
                char msg[160];
                snprintf(msg, sizeof(msg), "Request body is larger than the limit of %ld bytes",
                         h->o.max_body_bytes);
                c->queued = 1;
                return send_error(mc, 413, "invalid_request_error", "request_too_large", msg,
                                  c->request_id, NULL);
            }
        }
        return MHD_YES;
    }
    if (c->ep != EP_CHAT && c->ep != EP_EMBED && c->ep != EP_MESSAGES) {
        if (c->queued)
            return MHD_YES;
        c->queued = 1;
        return serve_get(h, mc, c->ep, c->request_id);
    }
    if (*upload_size) {
        if (!c->too_large && !c->queued) {
            if ((long)(c->body.len + *upload_size) > h->o.max_body_bytes)
                c->too_large = 1;
            else if (cps_buf_append(&c->body, upload, *upload_size))
                c->too_large = 1;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (c->queued)
        return MHD_YES;
    if (c->too_large) {
        char msg[160];
        snprintf(msg, sizeof(msg), "Request body is larger than the limit of %ld bytes",
                 h->o.max_body_bytes);
        c->queued = 1;
        return send_error(mc, 413, "invalid_request_error", "request_too_large", msg,
                          c->request_id, NULL);
    }
    if (!c->submitted)
        return submit_chat(h, c);
    /* resumed by the engine (or the watchdog) */
    pthread_mutex_lock(&c->mu);
    enum MHD_Result ret = MHD_YES;
    if (answer_ready(c) && !c->queued) {
        ret = queue_answer(c);
    } else if (c->done && !c->head_ready) {
        ret = MHD_NO; /* cancelled before any answer: close */
    } else if (!c->queued) {
        c->suspended = 1;
        MHD_suspend_connection(mc);
    }
    pthread_mutex_unlock(&c->mu);
    return ret;
}

static void completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)mc;
    (void)toe;
    cpd_http *h = cls;
    struct conn *c = *con_cls;
    if (!c)
        return;
    *con_cls = NULL;
    pthread_mutex_lock(&c->mu);
    c->mhd_done = 1;
    if (!c->done && c->call && !c->cancel_sent) {
        c->cancel_sent = 1;
        compass_engine_cancel(c->call);
    }
    pthread_mutex_unlock(&c->mu);
    atomic_fetch_sub(&h->open_conns, 1);
    conn_unref(c);
}

/* Peeks at waiting clients' sockets: EOF means the client left; cancel its request. Also
 * hands freed memory back to the system once a burst is over. */
static void *watchdog_main(void *arg)
{
    cpd_http *h = arg;
    int idle_ticks = 0, trimmed = 1;
    while (!atomic_load(&h->stop)) {
        struct timespec ts = {0, 200 * 1000000};
        nanosleep(&ts, NULL);
        if (compass_engine_in_flight(h->e) == 0 && atomic_load(&h->open_conns) == 0) {
            if (++idle_ticks >= 10 && !trimmed) {
                malloc_trim(0);
                trimmed = 1;
            }
        } else {
            idle_ticks = 0;
            trimmed = 0;
        }
        pthread_mutex_lock(&h->watch_mu);
        for (struct conn *c = h->watch; c; c = c->w_next) {
            char b;
            if (c->fd < 0)
                continue;
            ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                pthread_mutex_lock(&c->mu);
                if (!c->done && c->call && !c->cancel_sent) {
                    c->cancel_sent = 1;
                    compass_engine_cancel(c->call);
                }
                pthread_mutex_unlock(&c->mu);
            }
        }
        pthread_mutex_unlock(&h->watch_mu);
    }
    return NULL;
}

static void on_connection(void *cls, struct MHD_Connection *mc, void **sock_ctx,
                          enum MHD_ConnectionNotificationCode toe)
{
    (void)mc;
    (void)sock_ctx;
    cpd_http *h = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED)
        atomic_fetch_add(&h->tcp_conns, 1);
    else if (toe == MHD_CONNECTION_NOTIFY_CLOSED)
        atomic_fetch_sub(&h->tcp_conns, 1);
}

int cpd_http_listen(const char *host, int port, int *bound, char *msg, size_t cap)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        snprintf(msg, cap, "listen address '%s' is not an IPv4 address", host);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 4096)) {
        snprintf(msg, cap, "cannot listen on %s:%d: %s", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    socklen_t len = sizeof(sa);
    *bound = getsockname(fd, (struct sockaddr *)&sa, &len) == 0 ? ntohs(sa.sin_port) : port;
    return fd;
}

long cpd_http_connections(cpd_http *h)
{
    return atomic_load(&h->tcp_conns) + atomic_load(&h->n_handed);
}

void cpd_http_hand(cpd_http *h, int fd, const struct sockaddr *addr, unsigned addrlen)
{
    pthread_mutex_lock(&h->hand_mu);
    size_t n = (size_t)atomic_load(&h->n_handed);
    if (n == h->cap_handed) {
        size_t cap = h->cap_handed ? 2 * h->cap_handed : 16;
        struct handed *p = realloc(h->handed, cap * sizeof(*p));
        if (!p) {
            pthread_mutex_unlock(&h->hand_mu);
            close(fd); /* the client sees a reset, as at a full backlog */
            return;
        }
        h->handed = p;
        h->cap_handed = cap;
    }
    struct handed *x = &h->handed[n];
    x->fd = fd;
    x->len = addrlen <= sizeof(x->addr) ? (socklen_t)addrlen : 0;
    if (x->len)
        memcpy(&x->addr, addr, x->len);
    atomic_store(&h->n_handed, (long)n + 1);
    pthread_mutex_unlock(&h->hand_mu);
}

void cpd_http_take_handed(cpd_http *h)
{
    if (!atomic_load(&h->n_handed))
        return;
    pthread_mutex_lock(&h->hand_mu);
    size_t n = (size_t)atomic_load(&h->n_handed);
    for (size_t i = 0; i < n; i++) {
        struct handed *x = &h->handed[i];
        /* MHD owns the socket from here, and closes it itself when it refuses it (over the
         * connection limit) */
        MHD_add_connection(h->d, x->fd, (struct sockaddr *)&x->addr, x->len);
        atomic_fetch_sub(&h->n_handed, 1);
    }
    pthread_mutex_unlock(&h->hand_mu);
}

cpd_http *cpd_http_start(compass_engine *e, const cpd_http_opts *o, char *msg, size_t cap)
{
    cpd_http *h = calloc(1, sizeof(*h));
    if (!h) {
        snprintf(msg, cap, "out of memory");
        return NULL;
    }
    h->e = e;
    h->o = *o;
    pthread_mutex_init(&h->watch_mu, NULL);
    pthread_mutex_init(&h->hand_mu, NULL);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)o->port);
    if (inet_pton(AF_INET, o->host, &sa.sin_addr) != 1) {
        snprintf(msg, cap, "listen address '%s' is not an IPv4 address", o->host);
        free(h);
        return NULL;
    }
    /* no thread of its own: the caller runs it (cpd_http_run) on its loop's thread. With
     * handoff it listens on nothing (compassd's first loop accepts for all of them); else it
     * listens itself, without SO_REUSEPORT, so a second daemon on the port fails to start. */
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO | MHD_USE_ERROR_LOG;
    if (o->handoff)
        flags |= MHD_USE_NO_LISTEN_SOCKET;
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, handler, h, MHD_OPTION_SOCK_ADDR, &sa,
                            MHD_OPTION_NOTIFY_COMPLETED, completed, h,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)o->max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, 120u,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)6 * 1024,
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096u, MHD_OPTION_END);
    if (!h->d) {
        snprintf(msg, cap, "cannot listen on %s:%d: %s", o->host, o->port, strerror(errno));
        pthread_mutex_destroy(&h->watch_mu);
        pthread_mutex_destroy(&h->hand_mu);
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : o->port;
    if (pthread_create(&h->watchdog, NULL, watchdog_main, h) == 0)
        h->watchdog_started = 1;
    return h;
}

int cpd_http_fd(cpd_http *h)
{
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
    return di ? di->epoll_fd : -1;
}

int cpd_http_run(cpd_http *h, int ready)
{
    if (!atomic_exchange_explicit(&h->resumed, 0, memory_order_relaxed) && !ready &&
        cpd_http_timeout_ms(h) != 0)
        return 0;
    MHD_run(h->d);
    return 1;
}

int cpd_http_resumed(cpd_http *h)
{
    return atomic_load_explicit(&h->resumed, memory_order_relaxed);
}

int cpd_http_timeout_ms(cpd_http *h)
{
    MHD_UNSIGNED_LONG_LONG t;
    if (MHD_get_timeout(h->d, &t) != MHD_YES)
        return -1;
    return t > 60000 ? 60000 : (int)t;
}

int cpd_http_port(cpd_http *h)
{
    return h->port;
}

void cpd_http_quiesce(cpd_http *h)
{
    MHD_socket s = MHD_quiesce_daemon(h->d);
    if (s != MHD_INVALID_SOCKET)
        close(s);
}

long cpd_http_open_connections(cpd_http *h)
{
    return atomic_load(&h->open_conns);
}

void cpd_http_stop(cpd_http *h)
{
    if (!h)
        return;
    atomic_store(&h->stop, 1);
    if (h->watchdog_started)
        pthread_join(h->watchdog, NULL);
    MHD_stop_daemon(h->d);
    for (long i = 0; i < atomic_load(&h->n_handed); i++)
        close(h->handed[i].fd);
    free(h->handed);
    pthread_mutex_destroy(&h->watch_mu);
    pthread_mutex_destroy(&h->hand_mu);
    free(h);
}
