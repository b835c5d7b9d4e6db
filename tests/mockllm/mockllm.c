/*
 * mockllm: a mock LLM upstream on libmicrohttpd.
 *
 * Threads: MHD's epoll worker threads (--threads, default 2), one timer thread, and main, which
 * only waits for SIGTERM/SIGINT. No thread per connection: a request that must wait (latency,
 * chunk delay, hang) is suspended with MHD_suspend_connection and put in the timer's min-heap;
 * the timer thread resumes it when due.
 *
 * Disconnect detection while suspended: MHD does not watch a suspended socket, so for waits
 * longer than WATCH_NS the timer thread wakes every 100 ms and polls the connection's fd with
 * poll(POLLRDHUP, timeout 0). On hangup/error it marks the wait aborted and resumes the
 * connection; the access handler (or content reader) then returns MHD_NO (or
 * END_WITH_ERROR), MHD closes the connection, and NOTIFY_COMPLETED decrements in_flight.
 *
 * Shutdown: MHD forbids MHD_stop_daemon with suspended connections, so on SIGTERM the timer
 * thread, under its lock, sets `stopping`, resumes every waiting connection with the aborted
 * flag, and from then on nothing suspends; then MHD_stop_daemon.
 */
#include "mockllm.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#define MAX_BODY (32u * 1024u * 1024u)
#define WATCH_NS (100ull * 1000000ull)
#define TICK_NS (4ull * 1000000ull)
#define NEVER UINT64_MAX

/* The provider table: one line per wire format. Earlier entries win on a path match. */
static const ml_provider *const providers[] = {
    &ml_azure_provider, /* before openai: its /chat/completions suffix match */
    &ml_openai_provider,
    &ml_anthropic_provider,
    &ml_gemini_provider,
    &ml_replicate_provider,
};
#define N_PROVIDERS (sizeof providers / sizeof providers[0])

/* ---------------------------------------------------------------- options and state */

static struct {
    char host[64];
    unsigned port;
    const char *port_file;
    unsigned threads;
    const char *require_key;
    bool quiet;
} opt = {.host = "127.0.0.1", .port = 0, .threads = 2};

static struct {
    atomic_ullong requests, chat, streams_started, streams_completed, streams_aborted,
        streams_dropped, seq;
    atomic_llong in_flight;
} st;

/* Last provider request, swapped in whole under lr_lock. */
typedef struct last_req {
    char *path;
    char *hdrs; /* n_hdrs pairs "name\0value\0" */
    size_t n_hdrs;
    char *body;
    size_t body_len;
} last_req; /* one allocation; strings follow the struct */
static pthread_mutex_t lr_lock = PTHREAD_MUTEX_INITIALIZER;
static last_req *last;
/* Provider requests per path (the first 64 paths seen), also under lr_lock. */
static struct {
    char *path;
    unsigned long long n;
} path_counts[64];
static size_t n_path_counts;

/* FIFO of knob objects from POST /_mock/next. */
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static json_object *queue; /* json array; consumed from index 0 */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
    if (opt.quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("mockllm: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---------------------------------------------------------------- timer */

/* What a suspended connection waits for. Lives in the request (or stream) state, which
 * outlives the suspension: MHD never closes a suspended connection. */
typedef struct ml_wait {
    struct MHD_Connection *conn;
    int fd;
    atomic_bool aborted;
    uint64_t deadline;
} ml_wait;

typedef struct heap_ent {
    uint64_t due;
    ml_wait *w;
} heap_ent;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    heap_ent *h;
    size_t n, cap;
    bool stopping;
    pthread_t thread;
} tm = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void heap_swap(size_t a, size_t b)
{
    heap_ent t = tm.h[a];
    tm.h[a] = tm.h[b];
    tm.h[b] = t;
}

static int heap_push(uint64_t due, ml_wait *w)
{
    if (tm.n == tm.cap) {
        size_t ncap = tm.cap ? tm.cap * 2 : 1024;
        heap_ent *nh = realloc(tm.h, ncap * sizeof *nh);
        if (!nh)
            return -1;
        tm.h = nh;
        tm.cap = ncap;
    }
    size_t i = tm.n++;
    tm.h[i] = (heap_ent){due, w};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (tm.h[p].due <= tm.h[i].due)
            break;
        heap_swap(p, i);
        i = p;
    }
    return 0;
}

static heap_ent heap_pop(void)
{
    heap_ent top = tm.h[0];
    tm.h[0] = tm.h[--tm.n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < tm.n && tm.h[l].due < tm.h[m].due)
            m = l;
        if (r < tm.n && tm.h[r].due < tm.h[m].due)
            m = r;
        if (m == i)
            break;
        heap_swap(i, m);
        i = m;
    }
    return top;
}

/* Wakeups are rounded up to a TICK_NS grid so that resumes come in batches: MHD walks its
 * whole suspended list once per event-loop pass that has a pending resume, so resuming
 * thousands of streams one by one would cost O(suspended) each. */
static uint64_t next_check(uint64_t now, uint64_t deadline)
{
    uint64_t due = (deadline == NEVER || deadline - now > WATCH_NS) ? now + WATCH_NS : deadline;
    return (due + TICK_NS - 1) / TICK_NS * TICK_NS;
}

/* Suspend the current connection until deadline (NEVER: until the client goes away). Must be
 * called from the access handler or a content reader. Returns -1 if it could not suspend
 * (stopping, out of memory): the caller then fails the request. */
static int wait_suspend(ml_wait *w, uint64_t deadline)
{
    int rc = -1;
    uint64_t now = mono_ns();
    pthread_mutex_lock(&tm.lock);
    if (!tm.stopping) {
        w->deadline = deadline;
        uint64_t due = next_check(now, deadline);
        if (heap_push(due, w) == 0) {
            MHD_suspend_connection(w->conn);
            if (tm.h[0].w == w)
                pthread_cond_signal(&tm.cond);
            rc = 0;
        }
    }
    pthread_mutex_unlock(&tm.lock);
    return rc;
}

static bool peer_gone(int fd)
{
    if (fd < 0)
        return false;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0)
        return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static void *timer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&tm.lock);
    while (!tm.stopping) {
        uint64_t now = mono_ns();
        while (tm.n > 0 && tm.h[0].due <= now) {
            heap_ent e = heap_pop();
            ml_wait *w = e.w;
            if (now >= w->deadline) {
                MHD_resume_connection(w->conn);
            } else if (peer_gone(w->fd)) {
                atomic_store(&w->aborted, true);
                MHD_resume_connection(w->conn);
            } else if (heap_push(next_check(now, w->deadline), w) != 0) {
                /* cannot happen (we just popped), but never lose a connection */
                atomic_store(&w->aborted, true);
                MHD_resume_connection(w->conn);
            }
        }
        if (tm.n == 0) {
            pthread_cond_wait(&tm.cond, &tm.lock);
        } else {
            uint64_t due = tm.h[0].due;
            struct timespec ts = {.tv_sec = (time_t)(due / 1000000000ull),
                                  .tv_nsec = (long)(due % 1000000000ull)};
            pthread_cond_timedwait(&tm.cond, &tm.lock, &ts);
        }
    }
    /* stopping: resume everything, aborted */
    while (tm.n > 0) {
        heap_ent e = heap_pop();
        atomic_store(&e.w->aborted, true);
        MHD_resume_connection(e.w->conn);
    }
    pthread_mutex_unlock(&tm.lock);
    return NULL;
}

static int timer_start(void)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return -1;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&tm.cond, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0)
        return -1;
    return pthread_create(&tm.thread, NULL, timer_main, NULL) == 0 ? 0 : -1;
}

static void timer_stop(void)
{
    pthread_mutex_lock(&tm.lock);
    tm.stopping = true;
    pthread_cond_signal(&tm.cond);
    pthread_mutex_unlock(&tm.lock);
    pthread_join(tm.thread, NULL);
    free(tm.h);
    tm.h = NULL;
    tm.n = tm.cap = 0;
}

/* ---------------------------------------------------------------- replies */

typedef struct ml_event {
    char *data;
    size_t len;
    unsigned delay_ms;
} ml_event;

struct ml_reply {
    unsigned status;
    ml_pair *hdrs; /* owned strings */
    size_t n_hdrs;
    char *body;
    size_t body_len;
    char *content_type;
    bool stream;
    bool abrupt;
    bool failed;
    ml_event *ev;
    size_t n_ev, cap_ev;
};

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (!d)
        return NULL;
    if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static char *dup0(const char *s)
{
    return dupn(s, strlen(s));
}

static int rep_fail(ml_reply *rep)
{
    rep->failed = true;
    return -1;
}

int ml_reply_status(ml_reply *rep, unsigned status)
{
    rep->status = status;
    return 0;
}

int ml_reply_header(ml_reply *rep, const char *name, const char *value)
{
    ml_pair *n = realloc(rep->hdrs, (rep->n_hdrs + 1) * sizeof *n);
    if (!n)
        return rep_fail(rep);
    rep->hdrs = n;
    char *a = dup0(name), *b = dup0(value);
    if (!a || !b) {
        free(a);
        free(b);
        return rep_fail(rep);
    }
    rep->hdrs[rep->n_hdrs++] = (ml_pair){a, b};
    return 0;
}

static int set_ctype(ml_reply *rep, const char *ct)
{
    free(rep->content_type);
    rep->content_type = NULL;
    if (ct && !(rep->content_type = dup0(ct)))
        return rep_fail(rep);
    return 0;
}

int ml_reply_body(ml_reply *rep, const char *content_type, const char *data, size_t len)
{
    free(rep->body);
    rep->body = dupn(data, len);
    rep->body_len = len;
    if (!rep->body)
        return rep_fail(rep);
    return set_ctype(rep, content_type);
}

int ml_reply_json(ml_reply *rep, unsigned status, json_object *obj)
{
    size_t len = 0;
    const char *s = json_object_to_json_string_length(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    if (!s)
        return rep_fail(rep);
    rep->status = status;
    return ml_reply_body(rep, "application/json", s, len);
}

int ml_reply_stream(ml_reply *rep, const char *content_type)
{
    rep->stream = true;
    if (!rep->status)
        rep->status = 200;
    return set_ctype(rep, content_type);
}

static int push_event(ml_reply *rep, char *owned, size_t len)
{
    if (rep->n_ev == rep->cap_ev) {
        size_t ncap = rep->cap_ev ? rep->cap_ev * 2 : 16;
        ml_event *n = realloc(rep->ev, ncap * sizeof *n);
        if (!n) {
            free(owned);
            return rep_fail(rep);
        }
        rep->ev = n;
        rep->cap_ev = ncap;
    }
    rep->ev[rep->n_ev++] = (ml_event){owned, len, 0};
    return 0;
}

int ml_reply_event(ml_reply *rep, const char *data, size_t len)
{
    char *d = dupn(data, len);
    if (!d)
        return rep_fail(rep);
    return push_event(rep, d, len);
}

int ml_reply_sse_json(ml_reply *rep, json_object *obj)
{
    size_t len = 0;
    const char *s = json_object_to_json_string_length(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    if (!s)
        return rep_fail(rep);
    char *d = malloc(len + 9);
    if (!d)
        return rep_fail(rep);
    memcpy(d, "data: ", 6);
    memcpy(d + 6, s, len);
    memcpy(d + 6 + len, "\n\n", 3);
    return push_event(rep, d, len + 8);
}

void ml_reply_close_abruptly(ml_reply *rep)
{
    rep->abrupt = true;
}

size_t ml_reply_event_count(const ml_reply *rep)
{
    return rep->n_ev;
}

static void events_free(ml_event *ev, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(ev[i].data);
    free(ev);
}

static void reply_clear(ml_reply *rep)
{
    for (size_t i = 0; i < rep->n_hdrs; i++) {
        free((char *)rep->hdrs[i].name);
        free((char *)rep->hdrs[i].value);
    }
    free(rep->hdrs);
    free(rep->body);
    free(rep->content_type);
    events_free(rep->ev, rep->n_ev);
    memset(rep, 0, sizeof *rep);
}

/* ---------------------------------------------------------------- request accessors */

const char *ml_request_header(const ml_request *req, const char *lname)
{
    for (size_t i = 0; i < req->n_headers; i++)
        if (strcmp(req->headers[i].name, lname) == 0)
            return req->headers[i].value;
    return NULL;
}

const char *ml_request_arg(const ml_request *req, const char *name)
{
    for (size_t i = 0; i < req->n_args; i++)
        if (strcmp(req->args[i].name, name) == 0)
            return req->args[i].value;
    return NULL;
}

bool ml_knob_has(const ml_request *req, const char *name)
{
    json_object *v;
    return json_object_object_get_ex(req->knobs, name, &v) && v != NULL;
}

long long ml_knob_int(const ml_request *req, const char *name, long long dflt)
{
    json_object *v;
    if (!json_object_object_get_ex(req->knobs, name, &v) || !v)
        return dflt;
    switch (json_object_get_type(v)) {
    case json_type_int:
        return (long long)json_object_get_int64(v);
    case json_type_double:
        return (long long)json_object_get_double(v);
    case json_type_boolean:
        return json_object_get_boolean(v) ? 1 : 0;
    case json_type_string: {
        const char *s = json_object_get_string(v);
        char *end;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (errno || end == s)
            return dflt;
        return x;
    }
    default:
        return dflt;
    }
}

bool ml_knob_bool(const ml_request *req, const char *name)
{
    json_object *v;
    if (!json_object_object_get_ex(req->knobs, name, &v) || !v)
        return false;
    if (json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        return strcmp(s, "true") == 0 || strcmp(s, "1") == 0 || strcmp(s, "yes") == 0;
    }
    return json_object_get_boolean(v) != 0;
}

const char *ml_knob_str(const ml_request *req, const char *name)
{
    json_object *v;
    if (!json_object_object_get_ex(req->knobs, name, &v) || !v)
        return NULL;
    return json_object_get_string(v);
}

uint64_t ml_hash(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* One reusable tokener per thread (json_tokener_parse allocates and zeroes a new one per call,
 * which shows in the benchmark profile). Freed by the key destructor at thread exit. */
static pthread_key_t tok_key;
static pthread_once_t tok_once = PTHREAD_ONCE_INIT;

static void tok_free(void *p)
{
    json_tokener_free(p);
}

static void tok_init(void)
{
    pthread_key_create(&tok_key, tok_free);
}

/* Parse exactly one JSON value (trailing whitespace allowed); NULL if invalid. */
static json_object *parse_json(const char *s, size_t len)
{
    pthread_once(&tok_once, tok_init);
    json_tokener *tok = pthread_getspecific(tok_key);
    if (!tok) {
        tok = json_tokener_new();
        if (!tok)
            return NULL;
        if (pthread_setspecific(tok_key, tok) != 0) {
            json_tokener_free(tok);
            return NULL;
        }
    }
    if (len > INT_MAX)
        return NULL;
    json_tokener_reset(tok);
    json_object *o = json_tokener_parse_ex(tok, s, (int)len);
    if (json_tokener_get_error(tok) != json_tokener_success) {
        json_object_put(o);
        return NULL;
    }
    for (size_t i = json_tokener_get_parse_end(tok); i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') {
            json_object_put(o);
            return NULL;
        }
    return o;
}

/* Find "#mock{" and the length of its JSON object; returns the object parsed (or NULL). */
static const char *find_directive(const char *text, size_t *span, json_object **obj)
{
    const char *p = text;
    while ((p = strstr(p, "#mock{")) != NULL) {
        json_tokener *tok = json_tokener_new();
        if (!tok)
            return NULL;
        const char *js = p + 5;
        json_object *o = json_tokener_parse_ex(tok, js, (int)strnlen(js, INT_MAX - 1));
        enum json_tokener_error err = json_tokener_get_error(tok);
        size_t used = json_tokener_get_parse_end(tok);
        json_tokener_free(tok);
        if (o && err == json_tokener_success && json_object_is_type(o, json_type_object)) {
            *span = 5 + used;
            if (obj)
                *obj = o;
            else
                json_object_put(o);
            return p;
        }
        json_object_put(o);
        p += 6;
    }
    return NULL;
}

void ml_strip_directives(char *text)
{
    size_t span;
    char *p;
    while ((p = (char *)find_directive(text, &span, NULL)) != NULL) {
        size_t rest = strlen(p + span);
        memmove(p, p + span, rest + 1);
    }
}

/* ---------------------------------------------------------------- per-request state */

enum { WAIT_NONE, WAIT_LATENCY, WAIT_HANG };

typedef struct mreq {
    char *body;
    size_t body_len, body_cap;
    bool internal;  /* /_mock/... : not counted */
    bool too_large;
    bool dispatched;
    int waiting;                   /* WAIT_* in the access handler */
    struct MHD_Response *pending;  /* built, queued after latency */
    unsigned pending_status;
    bool is_stream;
    bool dropping; /* the stream ends with an abrupt close by design */
    ml_wait wait;
    /* stream delivery */
    ml_event *ev;
    size_t n_ev, idx, off;
    uint64_t due, last_due;
    bool due_set;
    bool abrupt;
} mreq;

static void mreq_free(mreq *r)
{
    if (!r)
        return;
    if (r->pending)
        MHD_destroy_response(r->pending);
    events_free(r->ev, r->n_ev);
    free(r->body);
    free(r);
}

/* ---------------------------------------------------------------- delivery */

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    mreq *r = cls;
    if (atomic_load(&r->wait.aborted))
        return MHD_CONTENT_READER_END_WITH_ERROR;
    size_t out = 0;
    while (out < max && r->idx < r->n_ev) {
        ml_event *e = &r->ev[r->idx];
        if (r->off == 0 && e->delay_ms) {
            uint64_t now = mono_ns();
            if (!r->due_set) {
                /* pace from the previous event's due time, so scheduling latency under load
                 * does not stretch the stream; restart from now if we fell behind */
                uint64_t base = r->last_due && now - r->last_due < 1000000000ull ? r->last_due
                                                                                  : now;
                r->due = base + (uint64_t)e->delay_ms * 1000000ull;
                r->due_set = true;
            }
            if (now < r->due) {
                if (out > 0)
                    return (ssize_t)out;
                if (wait_suspend(&r->wait, r->due) != 0)
                    return MHD_CONTENT_READER_END_WITH_ERROR;
                return 0;
            }
        }
        size_t n = e->len - r->off;
        if (n > max - out)
            n = max - out;
        memcpy(buf + out, e->data + r->off, n);
        out += n;
        r->off += n;
        if (r->off == e->len) {
            if (r->due_set)
                r->last_due = r->due;
            r->idx++;
            r->off = 0;
            r->due_set = false;
        }
    }
    if (out > 0)
        return (ssize_t)out;
    if (r->abrupt) {
        r->dropping = true;
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    return MHD_CONTENT_READER_END_OF_STREAM;
}

typedef struct trunc_body {
    char *data;
    size_t len;
} trunc_body;

static ssize_t trunc_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    trunc_body *t = cls;
    if (pos >= t->len)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    size_t n = t->len - (size_t)pos;
    if (n > max)
        n = max;
    memcpy(buf, t->data + pos, n);
    return (ssize_t)n;
}

static void trunc_free(void *cls)
{
    trunc_body *t = cls;
    free(t->data);
    free(t);
}

static struct MHD_Response *plain_response(const char *ct, const char *body)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (resp && ct)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ct);
    return resp;
}

static enum MHD_Result queue_plain(struct MHD_Connection *c, unsigned status, const char *ct,
                                   const char *body)
{
    struct MHD_Response *resp = plain_response(ct, body);
    if (!resp)
        return MHD_NO;
    enum MHD_Result rc = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* Build the MHD response for a finished reply. Stream events move into r. */
static struct MHD_Response *build_response(mreq *r, ml_reply *rep, bool truncate)
{
    struct MHD_Response *resp;
    if (rep->stream) {
        r->ev = rep->ev;
        r->n_ev = rep->n_ev;
        r->abrupt = rep->abrupt;
        rep->ev = NULL;
        rep->n_ev = rep->cap_ev = 0;
        r->is_stream = true;
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, r,
                                                 NULL);
    } else if (truncate) {
        trunc_body *t = malloc(sizeof *t);
        if (!t)
            return NULL;
        t->data = rep->body;
        t->len = rep->body_len;
        rep->body = NULL;
        /* declare more than we send, then fail the reader: MHD closes the connection */
        resp = MHD_create_response_from_callback(t->len + 128, 16 * 1024, trunc_read, t,
                                                 trunc_free);
        if (!resp) {
            trunc_free(t);
            return NULL;
        }
    } else {
        resp = MHD_create_response_from_buffer(rep->body_len, rep->body ? rep->body : (void *)"",
                                               MHD_RESPMEM_MUST_COPY);
    }
    if (!resp)
        return NULL;
    if (rep->content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, rep->content_type);
    if (rep->stream) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    }
    for (size_t i = 0; i < rep->n_hdrs; i++)
        MHD_add_response_header(resp, rep->hdrs[i].name, rep->hdrs[i].value);
    return resp;
}

/* ---------------------------------------------------------------- request parsing */

typedef struct pairs {
    ml_pair *v;
    size_t n, cap;
    bool failed;
} pairs;

static enum MHD_Result collect(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *value)
{
    (void)kind;
    pairs *p = cls;
    if (p->n == p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 32;
        ml_pair *n = realloc(p->v, ncap * sizeof *n);
        if (!n) {
            p->failed = true;
            return MHD_NO;
        }
        p->v = n;
        p->cap = ncap;
    }
    p->v[p->n++] = (ml_pair){key, value ? value : ""};
    return MHD_YES;
}

static void pairs_free(pairs *p, bool owned)
{
    if (owned)
        for (size_t i = 0; i < p->n; i++)
            free((char *)p->v[i].name);
    free(p->v);
}

/* Headers with names lowercased (owned names, borrowed values). */
static int collect_headers(struct MHD_Connection *c, pairs *out)
{
    pairs raw = {0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, collect, &raw);
    if (raw.failed) {
        free(raw.v);
        return -1;
    }
    for (size_t i = 0; i < raw.n; i++) {
        char *ln = dup0(raw.v[i].name);
        if (!ln) {
            free(raw.v);
            return -1;
        }
        for (char *q = ln; *q; q++)
            if (*q >= 'A' && *q <= 'Z')
                *q = (char)(*q - 'A' + 'a');
        raw.v[i].name = ln;
    }
    *out = raw;
    return 0;
}

static bool is_secret_header(const char *n)
{
    return strcmp(n, "authorization") == 0 || strcmp(n, "x-api-key") == 0 ||
           strcmp(n, "api-key") == 0 || strcmp(n, "x-goog-api-key") == 0 ||
           strcmp(n, "proxy-authorization") == 0;
}


/* Copy path, headers (secrets redacted) and body in one allocation: this runs on every
 * provider request, so the JSON for /_mock/stats is only built when asked for. */
static void record_last(const ml_request *req)
{
    size_t plen = strlen(req->path), need = sizeof(last_req) + plen + 1 + req->body_len + 1;
    for (size_t i = 0; i < req->n_headers; i++)
        /* + "present": a redacted value may be longer than the real one */
        need += strlen(req->headers[i].name) + strlen(req->headers[i].value) + 2 + sizeof "present";
    need += sizeof "authorization" + sizeof "absent";
    last_req *l = malloc(need);
    if (!l)
        return;
    char *p = (char *)(l + 1);
    l->path = p;
    memcpy(p, req->path, plen + 1);
    p += plen + 1;
    l->body = p;
    l->body_len = req->body_len;
    memcpy(p, req->body, req->body_len);
    p[req->body_len] = '\0';
    p += req->body_len + 1;
    l->hdrs = p;
    l->n_hdrs = 0;
    bool auth = false;
    for (size_t i = 0; i < req->n_headers; i++) {
        const char *n = req->headers[i].name;
        const char *v = is_secret_header(n) ? "present" : req->headers[i].value;
        if (strcmp(n, "authorization") == 0)
            auth = true;
        size_t nl = strlen(n) + 1, vl = strlen(v) + 1;
        memcpy(p, n, nl);
        memcpy(p + nl, v, vl);
        p += nl + vl;
        l->n_hdrs++;
    }
    if (!auth) {
        memcpy(p, "authorization", sizeof "authorization");
        memcpy(p + sizeof "authorization", "absent", sizeof "absent");
        l->n_hdrs++;
    }
    pthread_mutex_lock(&lr_lock);
    last_req *old = last;
    last = l;
    size_t i = 0;
    while (i < n_path_counts && strcmp(path_counts[i].path, req->path))
        i++;
    if (i == n_path_counts && i < sizeof(path_counts) / sizeof(path_counts[0]) &&
        (path_counts[i].path = strdup(req->path)))
        n_path_counts++;
    if (i < n_path_counts)
        path_counts[i].n++;
    pthread_mutex_unlock(&lr_lock);
    free(old);
}

/* Merge src's keys into dst (later wins). */
static void knobs_merge(json_object *dst, json_object *src)
{
    if (!src || !json_object_is_type(src, json_type_object))
        return;
    json_object_object_foreach(src, k, v)
    {
        json_object_object_add(dst, k, json_object_get(v));
    }
}

static json_object *queue_take(void)
{
    json_object *o = NULL;
    pthread_mutex_lock(&q_lock);
    if (queue && json_object_array_length(queue) > 0) {
        o = json_object_get(json_object_array_get_idx(queue, 0));
        json_object_array_del_idx(queue, 0, 1);
    }
    pthread_mutex_unlock(&q_lock);
    return o;
}

static int build_knobs(const ml_provider *prov, const ml_request *req, bool chat,
                       json_object *knobs)
{
    /* 1. #mock{...} in the last user message */
    if (prov->last_user_text && req->json) {
        char *text = prov->last_user_text(req);
        if (text) {
            const char *p = text;
            size_t span;
            json_object *o;
            while ((p = find_directive(p, &span, &o)) != NULL) {
                knobs_merge(knobs, o);
                json_object_put(o);
                p += span;
            }
            free(text);
        }
    }
    /* 2. x-mock-<knob> headers; '-' in the knob name reads as '_' */
    for (size_t i = 0; i < req->n_headers; i++) {
        const char *n = req->headers[i].name;
        if (strncmp(n, "x-mock-", 7) != 0 || !n[7])
            continue;
        char key[64];
        size_t kl = strlen(n + 7);
        if (kl >= sizeof key)
            continue;
        for (size_t j = 0; j <= kl; j++)
            key[j] = n[7 + j] == '-' ? '_' : n[7 + j];
        const char *v = req->headers[i].value;
        json_object *val = NULL;
        /* numbers and booleans as JSON, anything else as a string */
        json_object *parsed = parse_json(v, strlen(v));
        if (parsed && !json_object_is_type(parsed, json_type_string) &&
            !json_object_is_type(parsed, json_type_object) &&
            !json_object_is_type(parsed, json_type_array))
            val = parsed;
        else {
            json_object_put(parsed);
            val = json_object_new_string(v);
        }
        if (!val || json_object_object_add(knobs, key, val) != 0) {
            json_object_put(val);
            return -1;
        }
    }
    /* 3. the control queue */
    if (chat) {
        json_object *q = queue_take();
        knobs_merge(knobs, q);
        json_object_put(q);
    }
    return 0;
}

/* Apply the stream knobs every wire format shares. */
static void shape_stream(const ml_provider *prov, const ml_request *req, ml_reply *rep)
{
    long long error_after = ml_knob_int(req, "error_event_after", -1);
    long long drop_after = ml_knob_int(req, "drop_after", -1);
    long long garbage_after = ml_knob_int(req, "garbage_after", -1);
    long long delay = ml_knob_int(req, "chunk_delay_ms", 0);

    if (error_after >= 0 && (size_t)error_after <= rep->n_ev) {
        for (size_t i = (size_t)error_after; i < rep->n_ev; i++)
            free(rep->ev[i].data);
        rep->n_ev = (size_t)error_after;
        if (prov->stream_error)
            prov->stream_error(rep, ml_knob_str(req, "error_type"),
                               ml_knob_str(req, "error_code"), ml_knob_str(req, "error_message"));
    }
    if (drop_after >= 0 && (size_t)drop_after <= rep->n_ev) {
        for (size_t i = (size_t)drop_after; i < rep->n_ev; i++)
            free(rep->ev[i].data);
        rep->n_ev = (size_t)drop_after;
        rep->abrupt = true;
    }
    if (garbage_after >= 0 && (size_t)garbage_after <= rep->n_ev) {
        static const char junk[] = "data: {not json\n\n";
        size_t at = (size_t)garbage_after;
        if (ml_reply_event(rep, junk, sizeof junk - 1) == 0) {
            ml_event g = rep->ev[rep->n_ev - 1];
            memmove(&rep->ev[at + 1], &rep->ev[at], (rep->n_ev - 1 - at) * sizeof g);
            rep->ev[at] = g;
        }
    }
    if (delay > 0) {
        if (delay > 3600000)
            delay = 3600000;
        for (size_t i = 1; i < rep->n_ev; i++)
            rep->ev[i].delay_ms = (unsigned)delay;
    }
}

static void default_error(ml_reply *rep, unsigned status, const char *message,
                          const char *code)
{
    json_object *m = json_object_new_string(message);
    json_object *o = json_object_new_object();
    json_object *e = json_object_new_object();
    if (!m || !o || !e) {
        json_object_put(m);
        json_object_put(o);
        json_object_put(e);
        rep_fail(rep);
        return;
    }
    json_object_object_add(e, "message", m);
    json_object_object_add(e, "type", json_object_new_string("invalid_request_error"));
    json_object_object_add(e, "param", NULL);
    json_object_object_add(e, "code", code ? json_object_new_string(code) : NULL);
    json_object_object_add(o, "error", e);
    ml_reply_json(rep, status, o);
    json_object_put(o);
}

/* ---------------------------------------------------------------- control endpoints */

static enum MHD_Result json_answer(struct MHD_Connection *c, unsigned status, json_object *o)
{
    if (!o)
        return queue_plain(c, 500, "text/plain", "out of memory\n");
    const char *s = json_object_to_json_string_ext(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    enum MHD_Result rc = s ? queue_plain(c, status, "application/json", s)
                           : queue_plain(c, 500, "text/plain", "out of memory\n");
    json_object_put(o);
    return rc;
}

static json_object *jint(unsigned long long v)
{
    return json_object_new_int64((int64_t)v);
}

static json_object *stats_json(void)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    json_object_object_add(o, "requests", jint(atomic_load(&st.requests)));
    json_object_object_add(o, "chat", jint(atomic_load(&st.chat)));
    json_object_object_add(o, "streams_started", jint(atomic_load(&st.streams_started)));
    json_object_object_add(o, "streams_completed", jint(atomic_load(&st.streams_completed)));
    json_object_object_add(o, "streams_aborted", jint(atomic_load(&st.streams_aborted)));
    json_object_object_add(o, "streams_dropped", jint(atomic_load(&st.streams_dropped)));
    json_object_object_add(o, "in_flight", json_object_new_int64(atomic_load(&st.in_flight)));
    pthread_mutex_lock(&q_lock);
    json_object_object_add(o, "queued",
                           jint(queue ? json_object_array_length(queue) : 0));
    pthread_mutex_unlock(&q_lock);
    json_object *lr = NULL;
    pthread_mutex_lock(&lr_lock);
    if (last) {
        lr = json_object_new_object();
        if (lr) {
            json_object_object_add(lr, "path", json_object_new_string(last->path));
            json_object *h = json_object_new_object();
            const char *p = last->hdrs;
            for (size_t i = 0; h && i < last->n_hdrs; i++) {
                const char *v = p + strlen(p) + 1;
                json_object_object_add(h, p, json_object_new_string(v));
                p = v + strlen(v) + 1;
            }
            json_object_object_add(lr, "headers", h);
            json_object *b = NULL;
            if (last->body_len) {
                b = parse_json(last->body, last->body_len);
                if (!b)
                    b = json_object_new_string_len(last->body, (int)last->body_len);
            }
            json_object_object_add(lr, "body", b);
        }
    }
    json_object *paths = json_object_new_object();
    for (size_t i = 0; paths && i < n_path_counts; i++)
        json_object_object_add(paths, path_counts[i].path, jint(path_counts[i].n));
    pthread_mutex_unlock(&lr_lock);
    json_object_object_add(o, "last_request", lr);
    json_object_object_add(o, "paths", paths);
    return o;
}

static void stats_reset(void)
{
    atomic_store(&st.requests, 0);
    atomic_store(&st.chat, 0);
    atomic_store(&st.streams_started, 0);
    atomic_store(&st.streams_completed, 0);
    atomic_store(&st.streams_aborted, 0);
    atomic_store(&st.streams_dropped, 0);
    /* in_flight is live state, not a statistic: keep it */
    pthread_mutex_lock(&q_lock);
    json_object_put(queue);
    queue = NULL;
    pthread_mutex_unlock(&q_lock);
    pthread_mutex_lock(&lr_lock);
    last_req *old = last;
    last = NULL;
    for (size_t i = 0; i < n_path_counts; i++)
        free(path_counts[i].path);
    n_path_counts = 0;
    pthread_mutex_unlock(&lr_lock);
    free(old);
}

static enum MHD_Result handle_control(struct MHD_Connection *c, const char *method,
                                      const char *url, mreq *r)
{
    if (strcmp(url, "/_mock/stats") == 0 && strcmp(method, "GET") == 0)
        return json_answer(c, 200, stats_json());
    if (strcmp(url, "/_mock/health") == 0)
        return queue_plain(c, 200, "application/json", "{\"status\":\"ok\"}");
    if (strcmp(url, "/_mock/reset") == 0 && strcmp(method, "POST") == 0) {
        stats_reset();
        return queue_plain(c, 200, "application/json", "{\"reset\":true}");
    }
    if (strcmp(url, "/_mock/next") == 0 && strcmp(method, "DELETE") == 0) {
        pthread_mutex_lock(&q_lock);
        json_object_put(queue);
        queue = NULL;
        pthread_mutex_unlock(&q_lock);
        return queue_plain(c, 200, "application/json", "{\"queued\":0}");
    }
    if (strcmp(url, "/_mock/next") == 0 && strcmp(method, "POST") == 0) {
        json_object *in = r->body_len ? parse_json(r->body, r->body_len) : NULL;
        bool arr = in && json_object_is_type(in, json_type_array);
        if (!in || (!arr && !json_object_is_type(in, json_type_object))) {
            json_object_put(in);
            return queue_plain(c, 400, "application/json",
                               "{\"error\":{\"message\":\"expected a JSON object or array of "
                               "objects\",\"type\":\"invalid_request_error\",\"param\":null,"
                               "\"code\":null}}");
        }
        size_t n = arr ? json_object_array_length(in) : 1;
        int fail = 0;
        size_t total;
        pthread_mutex_lock(&q_lock);
        if (!queue)
            queue = json_object_new_array();
        for (size_t i = 0; queue && i < n && !fail; i++) {
            json_object *k = arr ? json_object_array_get_idx(in, i) : in;
            if (json_object_is_type(k, json_type_object))
                fail = json_object_array_add(queue, json_object_get(k));
        }
        total = queue ? json_object_array_length(queue) : 0;
        pthread_mutex_unlock(&q_lock);
        json_object_put(in);
        if (fail || total == 0)
            return queue_plain(c, 500, "text/plain", "out of memory\n");
        char buf[64];
        snprintf(buf, sizeof buf, "{\"queued\":%zu}", total);
        return queue_plain(c, 200, "application/json", buf);
    }
    return queue_plain(c, 404, "application/json",
                       "{\"error\":{\"message\":\"unknown mock control endpoint\",\"type\":"
                       "\"invalid_request_error\",\"param\":null,\"code\":\"unknown_url\"}}");
}

/* ---------------------------------------------------------------- dispatch */

static enum MHD_Result queue_or_wait(struct MHD_Connection *c, mreq *r,
                                     struct MHD_Response *resp, unsigned status,
                                     long long latency_ms)
{
    if (latency_ms > 0) {
        r->pending = resp;
        r->pending_status = status;
        r->waiting = WAIT_LATENCY;
        if (latency_ms > 3600000)
            latency_ms = 3600000;
        if (wait_suspend(&r->wait, mono_ns() + (uint64_t)latency_ms * 1000000ull) != 0)
            return MHD_NO;
        return MHD_YES;
    }
    if (r->is_stream)
        atomic_fetch_add(&st.streams_started, 1);
    enum MHD_Result rc = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result dispatch(struct MHD_Connection *c, const char *method, const char *url,
                                mreq *r)
{
    const ml_provider *prov = NULL;
    const ml_route *route = NULL;
    for (size_t i = 0; i < N_PROVIDERS && !route; i++)
        for (size_t j = 0; j < providers[i]->n_routes; j++)
            if (providers[i]->routes[j].match(method, url)) {
                prov = providers[i];
                route = &providers[i]->routes[j];
                break;
            }

    pairs hdrs = {0}, args = {0};
    if (collect_headers(c, &hdrs) != 0)
        return queue_plain(c, 500, "text/plain", "out of memory\n");
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect, &args);

    ml_request req = {
        .method = method,
        .path = url,
        .headers = hdrs.v,
        .n_headers = hdrs.n,
        .args = args.v,
        .n_args = args.n,
        .body = r->body ? r->body : "",
        .body_len = r->body_len,
        .seq = atomic_fetch_add(&st.seq, 1) + 1,
    };
    ml_reply rep = {0};
    json_object *knobs = json_object_new_object();
    enum MHD_Result rc = MHD_NO;
    if (!knobs || args.failed) {
        rc = queue_plain(c, 500, "text/plain", "out of memory\n");
        goto out;
    }
    req.knobs = knobs;
    if (r->body_len) {
        req.json = parse_json(r->body, r->body_len);
    }

    if (!route) {
        char msg[512];
        snprintf(msg, sizeof msg,
                 "Unknown request URL: %s %.300s. Please check the URL for typos, or see the "
                 "docs at https://platform.openai.com/docs/api-reference/.",
                 method, url);
        default_error(&rep, 404, msg, "unknown_url");
    } else {
        record_last(&req);
        if (route->is_chat)
            atomic_fetch_add(&st.chat, 1);
        if (opt.require_key && prov->authorize &&
            !prov->authorize(&req, opt.require_key, &rep)) {
            /* 401 built by the provider */
        } else if (build_knobs(prov, &req, route->is_chat, knobs) != 0) {
            rep.failed = true;
        } else if (route->is_chat && ml_knob_bool(&req, "hang")) {
            r->waiting = WAIT_HANG;
            rc = wait_suspend(&r->wait, NEVER) == 0 ? MHD_YES : MHD_NO;
            goto out;
        } else if (route->is_chat && ml_knob_int(&req, "status", 200) != 200) {
            long long s = ml_knob_int(&req, "status", 500);
            if (s < 100 || s > 599)
                s = 500;
            if (prov->error)
                prov->error(&rep, (unsigned)s, ml_knob_str(&req, "error_type"),
                            ml_knob_str(&req, "error_code"), ml_knob_str(&req, "error_message"));
            else
                default_error(&rep, (unsigned)s, "mock error", NULL);
            if (ml_knob_has(&req, "retry_after"))
                ml_reply_header(&rep, "Retry-After", ml_knob_str(&req, "retry_after"));
        } else if (route->is_chat && ml_knob_has(&req, "body")) {
            const char *b = ml_knob_str(&req, "body");
            const char *ct = ml_knob_str(&req, "content_type");
            if (!ct)
                ct = b[0] == '<' ? "text/html; charset=utf-8" : "text/plain; charset=utf-8";
            rep.status = 200;
            ml_reply_body(&rep, ct, b, strlen(b));
        } else if (route->is_chat && ml_knob_bool(&req, "malformed")) {
            static const char bad[] = "{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion\","
                                      "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assist";
            rep.status = 200;
            ml_reply_body(&rep, "application/json", bad, sizeof bad - 1);
        } else {
            route->handle(&req, &rep);
            if (rep.stream && !rep.failed)
                shape_stream(prov, &req, &rep);
        }
    }

    if (rep.failed) {
        rc = queue_plain(c, 500, "text/plain", "mockllm: out of memory\n");
        goto out;
    }
    if (!rep.status)
        rep.status = 200;
    bool truncate = route && route->is_chat && !rep.stream && ml_knob_bool(&req, "truncate");
    struct MHD_Response *resp = build_response(r, &rep, truncate);
    if (!resp) {
        rc = queue_plain(c, 500, "text/plain", "mockllm: out of memory\n");
        goto out;
    }
    rc = queue_or_wait(c, r, resp, rep.status,
                       route ? ml_knob_int(&req, "latency_ms", 0) : 0);
out:
    reply_clear(&rep);
    json_object_put(req.json);
    json_object_put(knobs);
    pairs_free(&hdrs, true);
    pairs_free(&args, false);
    return rc;
}

/* ---------------------------------------------------------------- MHD callbacks */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    (void)cls;
    (void)version;
    mreq *r = *req_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->wait.conn = c;
        r->wait.fd = -1;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (ci)
            r->wait.fd = ci->connect_fd;
        r->internal = strncmp(url, "/_mock/", 7) == 0;
        if (!r->internal) {
            atomic_fetch_add(&st.requests, 1);
            atomic_fetch_add(&st.in_flight, 1);
        }
        *req_cls = r;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->too_large || r->body_len + n > MAX_BODY) {
            r->too_large = true;
            return MHD_YES;
        }
        if (r->body_len + n + 1 > r->body_cap) {
            size_t ncap = r->body_cap ? r->body_cap : 1024;
            while (ncap < r->body_len + n + 1)
                ncap *= 2;
            char *nb = realloc(r->body, ncap);
            if (!nb)
                return MHD_NO;
            r->body = nb;
            r->body_cap = ncap;
        }
        memcpy(r->body + r->body_len, upload_data, n);
        r->body_len += n;
        r->body[r->body_len] = '\0';
        return MHD_YES;
    }
    if (r->dispatched) {
        /* resumed after a wait */
        if (atomic_load(&r->wait.aborted))
            return MHD_NO;
        if (r->waiting == WAIT_HANG) /* spurious; keep hanging */
            return wait_suspend(&r->wait, NEVER) == 0 ? MHD_YES : MHD_NO;
        if (r->waiting == WAIT_LATENCY && r->pending) {
            struct MHD_Response *resp = r->pending;
            r->pending = NULL;
            r->waiting = WAIT_NONE;
            if (r->is_stream)
                atomic_fetch_add(&st.streams_started, 1);
            enum MHD_Result rc = MHD_queue_response(c, r->pending_status, resp);
            MHD_destroy_response(resp);
            return rc;
        }
        return MHD_YES;
    }
    r->dispatched = true;
    if (r->too_large)
        return queue_plain(c, 413, "application/json",
                           "{\"error\":{\"message\":\"Request body too large for mockllm.\","
                           "\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}");
    if (r->internal)
        return handle_control(c, method, url, r);
    return dispatch(c, method, url, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    mreq *r = *req_cls;
    if (!r)
        return;
    *req_cls = NULL;
    if (!r->internal) {
        atomic_fetch_sub(&st.in_flight, 1);
        if (r->is_stream && !r->pending) {
            if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
                atomic_fetch_add(&st.streams_completed, 1);
            else if (r->dropping)
                atomic_fetch_add(&st.streams_dropped, 1);
            else
                atomic_fetch_add(&st.streams_aborted, 1);
        }
    }
    mreq_free(r);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    if (opt.quiet)
        return;
    fputs("mockllm: mhd: ", stderr);
    vfprintf(stderr, fmt, ap);
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fputs("usage: mockllm [--host 127.0.0.1] [--port N] [--port-file PATH] [--threads N]\n"
          "               [--require-key KEY] [--quiet]\n",
          f);
}

static int parse_uint(const char *s, unsigned long max, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > max)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quiet") == 0) {
            opt.quiet = true;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--host") != 0 && strcmp(a, "--port") != 0 &&
                   strcmp(a, "--port-file") != 0 && strcmp(a, "--threads") != 0 &&
                   strcmp(a, "--require-key") != 0) {
            fprintf(stderr, "mockllm: unknown option '%s'\n", a);
            usage(stderr);
            return -1;
        } else if (!v) {
            fprintf(stderr, "mockllm: %s needs a value\n", a);
            return -1;
        } else if (strcmp(a, "--host") == 0) {
            if (strlen(v) >= sizeof opt.host) {
                fprintf(stderr, "mockllm: bad --host\n");
                return -1;
            }
            snprintf(opt.host, sizeof opt.host, "%s", v);
            i++;
        } else if (strcmp(a, "--port") == 0) {
            if (parse_uint(v, 65535, &opt.port) != 0) {
                fprintf(stderr, "mockllm: bad --port '%s'\n", v);
                return -1;
            }
            i++;
        } else if (strcmp(a, "--port-file") == 0) {
            opt.port_file = v;
            i++;
        } else if (strcmp(a, "--threads") == 0) {
            if (parse_uint(v, 256, &opt.threads) != 0 || opt.threads == 0) {
                fprintf(stderr, "mockllm: bad --threads '%s'\n", v);
                return -1;
            }
            i++;
        } else if (strcmp(a, "--require-key") == 0) {
            opt.require_key = v;
            i++;
        }
    }
    return 0;
}

static int write_port_file(const char *path, unsigned port)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return -1;
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    int bad = fprintf(f, "%u\n", port) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0)
        return 2;

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    if (inet_pton(AF_INET, opt.host, &sa.sin_addr) != 1 ||
        (ntohl(sa.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "mockllm: --host must be a 127.x.x.x address, got '%s'\n", opt.host);
        return 2;
    }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            logf_("could not raise RLIMIT_NOFILE: %s", strerror(errno));
    }
    signal(SIGPIPE, SIG_IGN);

    /* SIGTERM/SIGINT go to main's sigwait only: block them before any thread exists */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    if (timer_start() != 0) {
        fprintf(stderr, "mockllm: cannot start timer thread\n");
        return 1;
    }

    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    struct MHD_OptionItem ops[] = {
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)on_mhd_log, NULL},
        {MHD_OPTION_SOCK_ADDR, 0, &sa},
        {MHD_OPTION_CONNECTION_LIMIT, 20000, NULL},
        {MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, 0, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, NULL},
        {opt.threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, opt.threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    struct MHD_Daemon *d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL,
                                            MHD_OPTION_ARRAY, ops, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "mockllm: cannot listen on %s:%u\n", opt.host, opt.port);
        timer_stop();
        return 1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    unsigned port = di ? di->port : opt.port;
    if (opt.port_file && write_port_file(opt.port_file, port) != 0) {
        fprintf(stderr, "mockllm: cannot write %s: %s\n", opt.port_file, strerror(errno));
        MHD_stop_daemon(d);
        timer_stop();
        return 1;
    }
    printf("mockllm listening on %s:%u\n", opt.host, port);
    fflush(stdout);

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0) {
    }
    logf_("signal %d: stopping", sig);
    /* resume every suspended connection (aborted) before MHD_stop_daemon, which forbids them */
    MHD_socket lsock = MHD_quiesce_daemon(d);
    timer_stop();
    /* let the workers process the resumed connections and close them */
    for (int i = 0; i < 50; i++) {
        const union MHD_DaemonInfo *n = MHD_get_daemon_info(d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (!n || n->num_connections == 0)
            break;
        usleep(10000);
    }
    MHD_stop_daemon(d);
    if (lsock != MHD_INVALID_SOCKET)
        close(lsock);
    pthread_mutex_lock(&q_lock);
    json_object_put(queue);
    queue = NULL;
    pthread_mutex_unlock(&q_lock);
    free(last);
    last = NULL;
    if (opt.port_file) {
        /* remove the port file unless a newer instance has replaced it */
        FILE *f = fopen(opt.port_file, "r");
        char line[32] = "";
        if (f) {
            if (!fgets(line, sizeof line, f))
                line[0] = '\0';
            fclose(f);
            if (strtoul(line, NULL, 10) == port)
                unlink(opt.port_file);
        }
    }
    return 0;
}
