/* The services table every plugin gets (each plugin its own copy; host_ctx is its cps_plugin,
 * whose owner is the engine). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"

static struct compass_engine *eng(const compass_host *h)
{
    return ((cps_plugin *)h->host_ctx)->owner;
}

static void h_log(const compass_host *h, int level, const char *fmt, ...)
{
    struct compass_engine *e = eng(h);
    if (level > e->log_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cps_log(e, level, "plugin %s: %s", h->plugin_name, msg);
}

static void *h_alloc(const compass_host *h, size_t n)
{
    (void)h;
    return malloc(n ? n : 1);
}

static void *h_realloc(const compass_host *h, void *p, size_t n)
{
    (void)h;
    return realloc(p, n ? n : 1);
}

static void h_free(const compass_host *h, void *p)
{
    (void)h;
    free(p);
}

static void *h_req_alloc(compass_req *req, size_t n)
{
    return req ? cps_arena_alloc(req->arena, n) : NULL;
}

static compass_str h_req_strdup(compass_req *req, const char *s, size_t n)
{
    compass_str r = {NULL, 0};
    if (!req)
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
    return compass_str_c(req && req->call ? req->call->request_id : "");
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
    return cps_now_ns();
}

static int h_config_get(const compass_host *h, const char *key, compass_str *out)
{
    struct compass_engine *e = eng(h);
    int rc = COMPASS_ENOTFOUND;
    pthread_mutex_lock(&e->gen_mu);
    cps_gen *g = e->gen;
    config_setting_t *ps = g ? g->cfg->plugin_settings : NULL;
    config_setting_t *grp = ps ? config_setting_get_member(ps, h->plugin_name) : NULL;
    config_setting_t *s = grp ? config_setting_get_member(grp, key) : NULL;
    if (s && config_setting_type(s) == CONFIG_TYPE_STRING) {
        *out = compass_str_c(config_setting_get_string(s));
        rc = 0;
    }
    pthread_mutex_unlock(&e->gen_mu);
    return rc;
}

static int h_metric_add(const compass_host *h, const char *name, const char *labels, double v)
{
    if (!cps_metrics_valid_name(name))
        return COMPASS_EINVAL;
    cps_metrics_add(eng(h)->metrics, name, labels, v);
    return 0;
}

static int h_metric_set(const compass_host *h, const char *name, const char *labels, double v)
{
    if (!cps_metrics_valid_name(name))
        return COMPASS_EINVAL;
    cps_metrics_set(eng(h)->metrics, name, labels, v);
    return 0;
}

static int h_stream_emit(compass_req *req, const compass_chat_delta *d)
{
    if (!req || !req->call || !d)
        return COMPASS_EINVAL;
    return cps_call_emit(req->call, d);
}

static int h_complete(compass_run *run, const compass_chat_request *req, compass_str route,
                      uint64_t *step_id)
{
    (void)run;
    (void)req;
    (void)route;
    (void)step_id;
    return COMPASS_EPHASE; /* workflows arrive with the workflow engine */
}

static int h_run_finish(compass_run *run, compass_str output, const compass_upstream_error *u)
{
    (void)run;
    (void)output;
    (void)u;
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

void cps_host_init(compass_host *h)
{
    memset(h, 0, sizeof(*h));
    h->size = sizeof(*h);
    h->abi_major = COMPASS_ABI_MAJOR;
    h->abi_minor = COMPASS_ABI_MINOR;
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
    h->metric_add = h_metric_add;
    h->metric_set = h_metric_set;
    h->stream_emit = h_stream_emit;
    h->complete = h_complete;
    h->run_finish = h_run_finish;
    h->run_data = h_run_data;
    h->req_data = h_req_data;
}
