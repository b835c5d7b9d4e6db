/* The fake host: a real compass_host table for plugin unit tests. Single-threaded except
 * where noted; allocation counting uses a mutex so routers can be hammered from threads. */
#include "compass_fakehost.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "buf.h"
#include "canon.h"
#include "options.h"
#include "sse.h"

struct compass_req {
    compass_fakehost *fh;
    cps_arena *arena;
    void *plugin_data;
};

struct inst_rec {
    struct inst_rec *next;
    void *inst;
    cps_arena *arena; /* options, info strings */
};

struct compass_fakehost {
    compass_host host;
    char *plugin_name;
    void *dl;
    const compass_plugin_desc *desc;
    int inited;
    compass_req req;
    compass_chat_delta *deltas;
    size_t n_deltas, cap_deltas;
    cps_buf log, joined;
    pthread_mutex_t mu;
    long fail_at, count;
    struct inst_rec *insts;
};

static compass_fakehost *fh_of(const compass_host *h)
{
    return (compass_fakehost *)h->host_ctx;
}

/* Returns 1 when this allocation should fail. */
static int tick(compass_fakehost *fh)
{
    pthread_mutex_lock(&fh->mu);
    fh->count++;
    int fail = fh->fail_at > 0 && fh->count == fh->fail_at;
    pthread_mutex_unlock(&fh->mu);
    return fail;
}

static void h_log(const compass_host *h, int level, const char *fmt, ...)
{
    static const char *names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    compass_fakehost *fh = fh_of(h);
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&fh->mu);
    cps_buf_printf(&fh->log, "%s ", level >= 0 && level <= 3 ? names[level] : "?");
    cps_buf_vprintf(&fh->log, fmt, ap);
    cps_buf_puts(&fh->log, "\n");
    pthread_mutex_unlock(&fh->mu);
    va_end(ap);
}

static void *h_alloc(const compass_host *h, size_t n)
{
    return tick(fh_of(h)) ? NULL : malloc(n ? n : 1);
}

static void *h_realloc(const compass_host *h, void *p, size_t n)
{
    return tick(fh_of(h)) ? NULL : realloc(p, n ? n : 1);
}

static void h_free(const compass_host *h, void *p)
{
    (void)h;
    free(p);
}

static void *h_req_alloc(compass_req *req, size_t n)
{
    if (!req || tick(req->fh))
        return NULL;
    return cps_arena_alloc(req->arena, n);
}

static compass_str h_req_strdup(compass_req *req, const char *s, size_t n)
{
    compass_str r = {NULL, 0};
    if (!req || tick(req->fh))
        return r;
    char *p = cps_arena_strndup(req->arena, s ? s : "", s ? n : 0);
    if (p) {
        r.ptr = p;
        r.len = s ? n : 0;
    }
    return r;
}

static compass_str h_req_id(compass_req *req)
{
    (void)req;
    return compass_str_c("req-fakehost");
}

static int64_t h_now_ms(const compass_host *h)
{
    (void)h;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t h_monotonic_ns(const compass_host *h)
{
    (void)h;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int h_config_get(const compass_host *h, const char *key, compass_str *out)
{
    (void)h;
    (void)key;
    (void)out;
    return COMPASS_ENOTFOUND;
}

static int h_metric(const compass_host *h, const char *name, const char *labels, double v)
{
    compass_fakehost *fh = fh_of(h);
    pthread_mutex_lock(&fh->mu);
    cps_buf_printf(&fh->log, "METRIC %s{%s} %g\n", name, labels ? labels : "", v);
    pthread_mutex_unlock(&fh->mu);
    return 0;
}

static compass_str copy_str(cps_arena *a, compass_str s)
{
    compass_str r = {"", 0};
    if (s.len) {
        char *p = cps_arena_strndup(a, s.ptr, s.len);
        if (p) {
            r.ptr = p;
            r.len = s.len;
        }
    }
    return r;
}

static int h_stream_emit(compass_req *req, const compass_chat_delta *d)
{
    compass_fakehost *fh = req->fh;
    if (!d)
        return COMPASS_EINVAL;
    if (fh->n_deltas == fh->cap_deltas) {
        size_t cap = fh->cap_deltas ? fh->cap_deltas * 2 : 16;
        compass_chat_delta *nd = realloc(fh->deltas, cap * sizeof(*nd));
        if (!nd)
            return COMPASS_ENOMEM;
        fh->deltas = nd;
        fh->cap_deltas = cap;
    }
    compass_chat_delta c = *d;
    c.size = sizeof(c);
    c.id = copy_str(req->arena, d->id);
    c.model = copy_str(req->arena, d->model);
    c.content = copy_str(req->arena, d->content);
    c.refusal = copy_str(req->arena, d->refusal);
    c.tool_id = copy_str(req->arena, d->tool_id);
    c.tool_name = copy_str(req->arena, d->tool_name);
    c.tool_arguments = copy_str(req->arena, d->tool_arguments);
    fh->deltas[fh->n_deltas++] = c;
    return 0;
}

static int h_complete(compass_run *run, const compass_chat_request *req, compass_str route,
                      uint64_t *step_id)
{
    (void)run;
    (void)req;
    (void)route;
    (void)step_id;
    return COMPASS_EPHASE;
}

static int h_run_finish(compass_run *run, compass_str output, const compass_upstream_error *e)
{
    (void)run;
    (void)output;
    (void)e;
    return COMPASS_EPHASE;
}

static void **h_run_data(compass_run *run)
{
    (void)run;
    return NULL;
}

static void **h_req_data(compass_req *req)
{
    return req ? &req->plugin_data : NULL;
}

compass_fakehost *compass_fakehost_new(const char *plugin_name)
{
    compass_fakehost *fh = calloc(1, sizeof(*fh));
    if (!fh)
        return NULL;
    fh->plugin_name = strdup(plugin_name ? plugin_name : "test");
    pthread_mutex_init(&fh->mu, NULL);
    cps_buf_init(&fh->log);
    cps_buf_init(&fh->joined);
    cps_buf_puts(&fh->log, "");
    compass_host *h = &fh->host;
    h->size = sizeof(*h);
    h->abi_major = COMPASS_ABI_MAJOR;
    h->abi_minor = COMPASS_ABI_MINOR;
    h->host_ctx = fh;
    h->plugin_name = fh->plugin_name;
    h->log = h_log;
    h->alloc = h_alloc;
    h->realloc = h_realloc;
    h->free = h_free;
    h->req_alloc = h_req_alloc;
    h->req_strdup = h_req_strdup;
    h->req_id = h_req_id;
    h->now_ms = h_now_ms;
    h->monotonic_ns = h_monotonic_ns;
    h->config_get = h_config_get;
    h->metric_add = h_metric;
    h->metric_set = h_metric;
    h->stream_emit = h_stream_emit;
    h->complete = h_complete;
    h->run_finish = h_run_finish;
    h->run_data = h_run_data;
    h->req_data = h_req_data;
    fh->req.fh = fh;
    fh->req.arena = cps_arena_new(8192);
    return fh;
}

static void free_instance(compass_fakehost *fh, struct inst_rec *r)
{
    if (fh->desc && r->inst) {
        switch (fh->desc->kind) {
        case COMPASS_PLUGIN_PROVIDER: fh->desc->ops.provider->instance_free(r->inst); break;
        case COMPASS_PLUGIN_ROUTER: fh->desc->ops.router->instance_free(r->inst); break;
        case COMPASS_PLUGIN_PATTERN: fh->desc->ops.pattern->instance_free(r->inst); break;
        default: break;
        }
    }
    cps_arena_free(r->arena);
    free(r);
}

void compass_fakehost_free(compass_fakehost *fh)
{
    if (!fh)
        return;
    while (fh->insts) {
        struct inst_rec *r = fh->insts;
        fh->insts = r->next;
        free_instance(fh, r);
    }
    if (fh->inited && fh->desc && fh->desc->fini)
        fh->desc->fini();
    if (fh->dl)
        dlclose(fh->dl);
    cps_arena_free(fh->req.arena);
    free(fh->deltas);
    cps_buf_free(&fh->log);
    cps_buf_free(&fh->joined);
    pthread_mutex_destroy(&fh->mu);
    free(fh->plugin_name);
    free(fh);
}

const compass_host *compass_fakehost_host(compass_fakehost *fh)
{
    return &fh->host;
}

const compass_plugin_desc *compass_fakehost_load(compass_fakehost *fh, const char *path,
                                                 compass_err *err)
{
    fh->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!fh->dl) {
        if (err) {
            snprintf(err->msg, sizeof(err->msg), "%s: %s", path, dlerror());
            err->code = COMPASS_EPLUGIN;
        }
        return NULL;
    }
    compass_plugin_entry_fn entry;
    void *sym = dlsym(fh->dl, COMPASS_PLUGIN_ENTRY_SYMBOL);
    memcpy(&entry, &sym, sizeof(entry));
    const compass_plugin_desc *d = entry ? entry() : NULL;
    if (!d || d->abi_major != COMPASS_ABI_MAJOR || d->abi_minor > COMPASS_ABI_MINOR) {
        if (err) {
            snprintf(err->msg, sizeof(err->msg), "%s: no entry or incompatible ABI", path);
            err->code = COMPASS_EABI;
        }
        return NULL;
    }
    fh->desc = d;
    if (d->init) {
        int rc = d->init(&fh->host, err);
        if (rc)
            return NULL;
    }
    fh->inited = 1;
    return d;
}

void *compass_fakehost_instance(compass_fakehost *fh, const char *name, const char *base_url,
                                const char *api_key, const char *const *options,
                                compass_err *err)
{
    const compass_plugin_desc *d = fh->desc;
    if (!d) {
        compass_err_set(err, COMPASS_EPHASE, "no plugin loaded");
        return NULL;
    }
    struct inst_rec *r = calloc(1, sizeof(*r));
    if (!r) {
        compass_err_set(err, COMPASS_ENOMEM, "out of memory");
        return NULL;
    }
    r->arena = cps_arena_new(1024);
    void *opts = d->options_size ? cps_arena_calloc(r->arena, d->options_size) : NULL;
    if (cps_opt_apply_defaults(r->arena, d->options, opts, err))
        goto fail;
    for (const char *const *o = options; o && *o; o++) {
        const char *eq = strchr(*o, '=');
        char key[128];
        size_t kl = eq ? (size_t)(eq - *o) : strlen(*o);
        if (kl >= sizeof(key))
            kl = sizeof(key) - 1;
        memcpy(key, *o, kl);
        key[kl] = '\0';
        const compass_option *row = cps_opt_find(d->options, key);
        if (!row) {
            if (err) {
                snprintf(err->msg, sizeof(err->msg), "unknown option '%s'", key);
                err->code = COMPASS_ECONFIG;
            }
            goto fail;
        }
        if (cps_opt_set_text(r->arena, row, opts, eq ? eq + 1 : "", err))
            goto fail;
    }
    compass_instance_info info;
    memset(&info, 0, sizeof(info));
    info.size = sizeof(info);
    info.name = name ? name : "test";
    info.base_url = base_url;
    info.api_key = api_key;
    info.options = opts;
    int rc;
    switch (d->kind) {
    case COMPASS_PLUGIN_PROVIDER:
        rc = d->ops.provider->instance_new(&fh->host, &info, &r->inst, err);
        break;
    case COMPASS_PLUGIN_ROUTER:
        rc = d->ops.router->instance_new(&fh->host, &info, &r->inst, err);
        break;
    case COMPASS_PLUGIN_PATTERN:
        rc = d->ops.pattern->instance_new(&fh->host, &info, &r->inst, err);
        break;
    default:
        rc = compass_err_set(err, COMPASS_EPLUGIN, "unknown plugin kind");
    }
    if (rc)
        goto fail;
    r->next = fh->insts;
    fh->insts = r;
    return r->inst;
fail:
    r->inst = NULL;
    cps_arena_free(r->arena);
    free(r);
    return NULL;
}

compass_req *compass_fakehost_req(compass_fakehost *fh)
{
    cps_arena_free(fh->req.arena);
    fh->req.arena = cps_arena_new(8192);
    fh->req.plugin_data = NULL;
    fh->n_deltas = 0;
    return &fh->req;
}

int compass_fakehost_parse_chat(compass_fakehost *fh, const char *json,
                                compass_chat_request *out, compass_err *err)
{
    size_t n = strlen(json);
    char *copy = cps_arena_strndup(fh->req.arena, json, n);
    if (!copy)
        return compass_err_set(err, COMPASS_ENOMEM, "out of memory");
    return cps_canon_parse_chat(fh->req.arena, copy, n, out, err);
}

size_t compass_fakehost_n_deltas(compass_fakehost *fh)
{
    return fh->n_deltas;
}

const compass_chat_delta *compass_fakehost_delta(compass_fakehost *fh, size_t i)
{
    return i < fh->n_deltas ? &fh->deltas[i] : NULL;
}

const char *compass_fakehost_content(compass_fakehost *fh)
{
    cps_buf_reset(&fh->joined);
    cps_buf_puts(&fh->joined, "");
    for (size_t i = 0; i < fh->n_deltas; i++)
        cps_buf_append(&fh->joined, fh->deltas[i].content.ptr, fh->deltas[i].content.len);
    return fh->joined.ptr ? fh->joined.ptr : "";
}

const char *compass_fakehost_tool_args(compass_fakehost *fh, int idx)
{
    cps_buf_reset(&fh->joined);
    cps_buf_puts(&fh->joined, "");
    for (size_t i = 0; i < fh->n_deltas; i++)
        if (fh->deltas[i].tool_index == idx)
            cps_buf_append(&fh->joined, fh->deltas[i].tool_arguments.ptr,
                           fh->deltas[i].tool_arguments.len);
    return fh->joined.ptr ? fh->joined.ptr : "";
}

const char *compass_fakehost_log(compass_fakehost *fh)
{
    return fh->log.ptr ? fh->log.ptr : "";
}

void compass_fakehost_fail_alloc_at(compass_fakehost *fh, long nth)
{
    pthread_mutex_lock(&fh->mu);
    fh->count = 0;
    fh->fail_at = nth;
    pthread_mutex_unlock(&fh->mu);
}

long compass_fakehost_alloc_count(compass_fakehost *fh)
{
    pthread_mutex_lock(&fh->mu);
    long c = fh->count;
    fh->count = 0;
    pthread_mutex_unlock(&fh->mu);
    return c;
}

compass_str compass_fakehost_read_file(compass_fakehost *fh, const char *path)
{
    compass_str r = {NULL, 0};
    FILE *f = fopen(path, "rb");
    if (!f)
        return r;
    cps_buf b;
    cps_buf_init(&b);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        cps_buf_append(&b, tmp, n);
    fclose(f);
    char *p = cps_arena_strndup(fh->req.arena, b.ptr ? b.ptr : "", b.len);
    if (p) {
        r.ptr = p;
        r.len = b.len;
    }
    cps_buf_free(&b);
    return r;
}

compass_http_response compass_fakehost_http(int status, const char *body)
{
    compass_http_response r;
    memset(&r, 0, sizeof(r));
    r.status = status;
    r.body = compass_str_c(body);
    return r;
}

struct feed_ctx {
    compass_fakehost *fh;
    void *inst;
    compass_upstream_error *uerr;
    compass_err *err;
    int last;
};

static int feed_one(void *ud, const compass_stream_event *ev)
{
    struct feed_ctx *c = ud;
    c->last = c->fh->desc->ops.provider->parse_stream_event(c->inst, &c->fh->req, ev, c->uerr,
                                                             c->err);
    return c->last; /* non-zero (end marker or error) stops the feed */
}

int compass_fakehost_feed_sse(compass_fakehost *fh, void *inst, compass_str body,
                              compass_upstream_error *uerr, compass_err *err)
{
    cps_sse s;
    cps_sse_init(&s, COMPASS_STREAM_SSE, 0);
    struct feed_ctx c = {fh, inst, uerr, err, 0};
    int rc = cps_sse_feed(&s, body.ptr, body.len, feed_one, &c);
    if (!rc)
        rc = cps_sse_finish(&s, feed_one, &c);
    cps_sse_free(&s);
    if (rc == COMPASS_ENOMEM || rc == COMPASS_ELIMIT)
        return rc;
    return c.last;
}
