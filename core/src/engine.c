/* The engine: configuration generations (swapped atomically on reload, freed when their last
 * request ends), the plugin cache they share, routing, and the public API. */
#include "engine.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "canon.h"
#include "options.h"

#ifndef COMPASS_VERSION_STRING
#define COMPASS_VERSION_STRING "0.1.0"
#endif

uint64_t cps_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void default_log(void *ud, int level, const char *msg)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    (void)ud;
    fprintf(stderr, "compass %s: %s\n", level >= 0 && level <= 3 ? names[level] : "?", msg);
}

void cps_log(struct compass_engine *e, int level, const char *fmt, ...)
{
    if (level > e->log_level)
        return;
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    e->log_fn(e->log_ud, level, msg);
}

/* ---- errors and version ---- */

static const struct {
    int code;
    const char *name, *text;
} errs[] = {
    {COMPASS_OK, "COMPASS_OK", "success"},
    {COMPASS_EINVAL, "COMPASS_EINVAL", "invalid argument"},
    {COMPASS_ENOMEM, "COMPASS_ENOMEM", "out of memory"},
    {COMPASS_EPHASE, "COMPASS_EPHASE", "called in the wrong phase"},
    {COMPASS_EPARSE, "COMPASS_EPARSE", "parse error"},
    {COMPASS_EUNSUPPORTED, "COMPASS_EUNSUPPORTED", "not supported"},
    {COMPASS_ENOTFOUND, "COMPASS_ENOTFOUND", "not found"},
    {COMPASS_EIO, "COMPASS_EIO", "I/O error"},
    {COMPASS_EUPSTREAM, "COMPASS_EUPSTREAM", "upstream error"},
    {COMPASS_EABI, "COMPASS_EABI", "incompatible plugin ABI"},
    {COMPASS_ECONFIG, "COMPASS_ECONFIG", "invalid configuration"},
    {COMPASS_ETIMEDOUT, "COMPASS_ETIMEDOUT", "timed out"},
    {COMPASS_ECANCELED, "COMPASS_ECANCELED", "cancelled"},
    {COMPASS_ELIMIT, "COMPASS_ELIMIT", "limit exceeded"},
    {COMPASS_EEXIST, "COMPASS_EEXIST", "already exists"},
    {COMPASS_EPLUGIN, "COMPASS_EPLUGIN", "plugin error"},
};

COMPASS_API const char *compass_strerror(int code)
{
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++)
        if (errs[i].code == code)
            return errs[i].text;
    return "unknown error";
}

COMPASS_API const char *compass_errname(int code)
{
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++)
        if (errs[i].code == code)
            return errs[i].name;
    return "COMPASS_E?";
}

COMPASS_API const char *compass_version(void)
{
    return COMPASS_VERSION_STRING;
}

COMPASS_API void compass_free(void *p)
{
    free(p);
}

/* ---- stats ---- */

static cps_stats *stats_get(struct compass_engine *e, const char *key)
{
    pthread_mutex_lock(&e->stats_mu);
    cps_stats *s;
    for (s = e->stats; s; s = s->next)
        if (!strcmp(s->key, key))
            break;
    if (!s && (s = calloc(1, sizeof(*s)))) {
        s->key = strdup(key);
        if (!s->key) {
            free(s);
            s = NULL;
        } else {
            pthread_mutex_init(&s->mu, NULL);
            s->next = e->stats;
            e->stats = s;
        }
    }
    pthread_mutex_unlock(&e->stats_mu);
    return s;
}

void cps_stats_record(cps_stats *s, int ok, double ms, double ttft_ms)
{
    const double a = 0.2, ea = 0.05;
    pthread_mutex_lock(&s->mu);
    if (ok) {
        s->ok++;
        s->consecutive_fail = 0;
        s->ewma_ms = s->ewma_ms ? (1 - a) * s->ewma_ms + a * ms : ms;
        if (ttft_ms >= 0)
            s->ewma_ttft_ms = s->ewma_ttft_ms ? (1 - a) * s->ewma_ttft_ms + a * ttft_ms : ttft_ms;
    } else {
        s->fail++;
        s->consecutive_fail++;
    }
    s->err_ewma = (1 - ea) * s->err_ewma + ea * (ok ? 0 : 1);
    if (ok && ttft_ms >= 0) {
        s->ttft_ring[s->ttft_pos] = (float)ttft_ms;
        s->ttft_pos = (s->ttft_pos + 1) % 64;
        if (s->ttft_n < 64)
            s->ttft_n++;
    }
    pthread_mutex_unlock(&s->mu);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

double cps_stats_ttft_p95(cps_stats *s)
{
    float v[64];
    pthread_mutex_lock(&s->mu);
    unsigned n = s->ttft_n;
    memcpy(v, s->ttft_ring, n * sizeof(float));
    pthread_mutex_unlock(&s->mu);
    if (n < 8)
        return -1;
    qsort(v, n, sizeof(float), cmp_float);
    return v[(n * 95 + 99) / 100 - 1];
}

int64_t cps_estimate_prompt_tokens(const compass_chat_request *r, size_t *chars)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n_messages; i++) {
        n += r->messages[i].content.len;
        for (size_t k = 0; k < r->messages[i].n_tool_calls; k++)
            n += r->messages[i].tool_calls[k].arguments.len;
    }
    for (size_t i = 0; i < r->n_tools; i++)
        n += r->tools[i].name.len + r->tools[i].description.len + r->tools[i].parameters.len;
    if (chars)
        *chars = n;
    return (int64_t)((n + 3) / 4 + 3 * r->n_messages);
}

/* ---- plugin cache ---- */

static const char *const *all_paths(struct compass_engine *e, const cps_config *c, size_t *n,
                                    char ***owned)
{
    size_t total = e->n_extra_paths + c->n_plugin_paths + 1;
    char **v = calloc(total, sizeof(*v));
    *owned = v;
    *n = 0;
    if (!v)
        return NULL;
    const char *envp = getenv("COMPASS_PLUGIN_PATH");
    size_t k = 0;
    for (size_t i = 0; i < e->n_extra_paths; i++)
        v[k++] = strdup(e->extra_paths[i]);
    if (envp && *envp)
        v[k++] = strdup(envp); /* one directory */
    /* relative paths in a config file resolve against the file's directory */
    const char *slash = c->path ? strrchr(c->path, '/') : NULL;
    for (size_t i = 0; i < c->n_plugin_paths && k < total; i++) {
        const char *p = c->plugin_paths[i];
        if (p[0] != '/' && slash && e->config_path) {
            size_t dl = (size_t)(slash - c->path);
            size_t len = dl + 1 + strlen(p) + 1;
            char *full = malloc(len);
            if (full)
                snprintf(full, len, "%.*s/%s", (int)dl, c->path, p);
            v[k++] = full;
        } else {
            v[k++] = strdup(p);
        }
    }
    size_t j = 0;
    for (size_t i = 0; i < k; i++)
        if (v[i])
            v[j++] = v[i];
    *n = j;
    return (const char *const *)v;
}

static void free_paths(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Takes a reference on a cached plugin, loading it on first use. */
static int plugin_get(struct compass_engine *e, const char *const *dirs, size_t n_dirs,
                      const char *name, int kind, cps_plugin **out, compass_err *err)
{
    pthread_mutex_lock(&e->plugins_mu);
    for (size_t i = 0; i < e->n_plugins; i++) {
        cps_plugin *p = e->plugins[i];
        if (!strcmp(p->name, name)) {
            if (p->desc->kind != kind) {
                pthread_mutex_unlock(&e->plugins_mu);
                snprintf(err->msg, sizeof(err->msg), "%s: plugin '%s' is a %s plugin, but is "
                         "used as a %s", p->path, name, cps_plugin_kind_name(p->desc->kind),
                         cps_plugin_kind_name(kind));
                err->code = COMPASS_EPLUGIN;
                return COMPASS_EPLUGIN;
            }
            p->refs++;
            *out = p;
            pthread_mutex_unlock(&e->plugins_mu);
            return 0;
        }
    }
    if (e->n_plugins == e->cap_plugins) {
        size_t cap = e->cap_plugins ? e->cap_plugins * 2 : 8;
        cps_plugin **np = realloc(e->plugins, cap * sizeof(*np));
        if (!np) {
            pthread_mutex_unlock(&e->plugins_mu);
            return compass_err_set(err, COMPASS_ENOMEM, "out of memory");
        }
        e->plugins = np;
        e->cap_plugins = cap;
    }
    int rc = cps_plugin_find(dirs, n_dirs, name, kind, &e->host_tmpl, e, out, err);
    if (!rc) {
        e->plugins[e->n_plugins++] = *out;
        cps_log(e, COMPASS_LOG_INFO, "loaded %s plugin '%s' %s from %s",
                cps_plugin_kind_name(kind), name, (*out)->desc->version ? (*out)->desc->version
                                                                        : "",
                (*out)->path);
    }
    pthread_mutex_unlock(&e->plugins_mu);
    return rc;
}

static void plugin_put(struct compass_engine *e, cps_plugin *p)
{
    pthread_mutex_lock(&e->plugins_mu);
    if (--p->refs == 0) {
        for (size_t i = 0; i < e->n_plugins; i++)
            if (e->plugins[i] == p) {
                e->plugins[i] = e->plugins[--e->n_plugins];
                break;
            }
        cps_plugin_unload(p);
    }
    pthread_mutex_unlock(&e->plugins_mu);
}

/* ---- generations ---- */

static void free_instance(cps_plugin *p, void *inst)
{
    if (!inst)
        return;
    switch (p->desc->kind) {
    case COMPASS_PLUGIN_PROVIDER: p->desc->ops.provider->instance_free(inst); break;
    case COMPASS_PLUGIN_ROUTER: p->desc->ops.router->instance_free(inst); break;
    case COMPASS_PLUGIN_PATTERN: p->desc->ops.pattern->instance_free(inst); break;
    default: break;
    }
}

static void gen_free(cps_gen *g)
{
    struct compass_engine *e = g->e;
    for (size_t i = 0; i < g->n_routes; i++) {
        cps_route *r = &g->routes[i];
        if (r->router)
            free_instance(r->router, r->router_inst);
        free(r->targets);
        cps_arena_free(r->opt_arena);
    }
    for (size_t i = 0; i < g->n_deps; i++) {
        cps_deployment *d = &g->deps[i];
        if (d->plugin)
            free_instance(d->plugin, d->inst);
        if (d->api_key) {
            volatile char *k = d->api_key;
            while (*k)
                *k++ = 0;
            free(d->api_key);
        }
        cps_arena_free(d->opt_arena);
    }
    for (size_t i = 0; i < g->n_targets; i++)
        free(g->targets[i].id);
    for (size_t i = 0; i < g->n_plugins; i++)
        plugin_put(e, g->plugins[i]);
    free(g->plugins);
    free(g->routes);
    free(g->targets);
    free(g->deps);
    cps_config_free(g->cfg);
    free(g);
}

void cps_gen_unref(cps_gen *g)
{
    if (g && atomic_fetch_sub(&g->refs, 1) == 1)
        gen_free(g);
}

static cps_gen *gen_current(struct compass_engine *e)
{
    pthread_mutex_lock(&e->gen_mu);
    cps_gen *g = e->gen;
    if (g)
        atomic_fetch_add(&g->refs, 1);
    pthread_mutex_unlock(&e->gen_mu);
    return g;
}

static int gen_add_plugin(cps_gen *g, cps_plugin *p)
{
    for (size_t i = 0; i < g->n_plugins; i++)
        if (g->plugins[i] == p) {
            plugin_put(g->e, p); /* already held once by this generation */
            return 0;
        }
    cps_plugin **np = realloc(g->plugins, (g->n_plugins + 1) * sizeof(*np));
    if (!np)
        return COMPASS_ENOMEM;
    g->plugins = np;
    g->plugins[g->n_plugins++] = p;
    return 0;
}

/* Fills an options struct from a libconfig group per the plugin's option table. */
static int apply_options(cps_arena *a, const compass_plugin_desc *d, config_setting_t *grp,
                         void *opts, const char *what, const char *file, compass_err *err)
{
    int rc = cps_opt_apply_defaults(a, d->options, opts, err);
    if (rc)
        return rc;
    size_t n = cps_opt_count(d->options);
    unsigned char seen[256] = {0};
    int cnt = grp ? config_setting_length(grp) : 0;
    for (int i = 0; i < cnt; i++) {
        config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
        const char *name = config_setting_name(s);
        const char *sf = config_setting_source_file(s) ? config_setting_source_file(s) : file;
        int line = (int)config_setting_source_line(s);
        const compass_option *o = cps_opt_find(d->options, name);
        if (!o) {
            char list[300] = "";
            size_t off = 0;
            for (const compass_option *k = d->options; k && k->name && off < sizeof(list); k++) {
                int w = snprintf(list + off, sizeof(list) - off, "%s%s", off ? ", " : "",
                                 k->name);
                if (w < 0)
                    break;
                off += (size_t)w;
            }
            snprintf(err->msg, sizeof(err->msg), "%s:%d: %s.options: plugin '%s' has no option "
                     "'%s' (it takes: %s)", sf, line, what, d->name, name, off ? list : "none");
            return err->code = COMPASS_ECONFIG;
        }
        char text[64];
        const char *val = NULL;
        int t = config_setting_type(s);
        int ok = 1;
        switch (o->type) {
        case COMPASS_OPT_STRING:
            ok = t == CONFIG_TYPE_STRING;
            if (ok)
                val = config_setting_get_string(s);
            break;
        case COMPASS_OPT_INT:
            ok = t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
            if (ok) {
                snprintf(text, sizeof(text), "%lld", config_setting_get_int64(s));
                val = text;
            }
            break;
        case COMPASS_OPT_BOOL:
            ok = t == CONFIG_TYPE_BOOL;
            if (ok)
                val = config_setting_get_bool(s) ? "true" : "false";
            break;
        case COMPASS_OPT_DOUBLE:
            ok = t == CONFIG_TYPE_FLOAT || t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
            if (ok) {
                double v = t == CONFIG_TYPE_FLOAT ? config_setting_get_float(s)
                                                  : (double)config_setting_get_int64(s);
                snprintf(text, sizeof(text), "%.17g", v);
                val = text;
            }
            break;
        }
        if (!ok) {
            snprintf(err->msg, sizeof(err->msg), "%s:%d: %s.options.%s: expected %s %s", sf,
                     line, what, name, o->type == COMPASS_OPT_INT ? "an" : "a",
                     cps_opt_type_name(o->type));
            return err->code = COMPASS_ECONFIG;
        }
        compass_err e2;
        memset(&e2, 0, sizeof(e2));
        if ((rc = cps_opt_set_text(a, o, opts, val, &e2))) {
            snprintf(err->msg, sizeof(err->msg), "%s:%d: %s.options.%s: %s", sf, line, what, name,
                     e2.msg);
            return err->code = rc;
        }
        size_t idx = (size_t)(o - d->options);
        if (idx < sizeof(seen))
            seen[idx] = 1;
    }
    for (size_t i = 0; i < n && i < sizeof(seen); i++)
        if (d->options[i].required && !seen[i] && !d->options[i].default_value) {
            snprintf(err->msg, sizeof(err->msg), "%s: %s.options.%s: required by plugin '%s' (%s)",
                     file, what, d->options[i].name, d->name,
                     d->options[i].help ? d->options[i].help : "no help");
            return err->code = COMPASS_ECONFIG;
        }
    return 0;
}

static int instance_err(compass_err *err, const char *file, int line, const char *what,
                        const char *name, const compass_err *ie)
{
    snprintf(err->msg, sizeof(err->msg), "%s:%d: %s '%s': %s", file, line, what, name,
             ie->msg[0] ? ie->msg : "instance_new failed");
    return err->code = COMPASS_ECONFIG;
}

static cps_target *find_target(cps_gen *g, const char *dep, size_t dl, const char *model)
{
    for (size_t i = 0; i < g->n_targets; i++) {
        cps_target *t = &g->targets[i];
        if (strlen(t->dep->cfg->name) == dl && !memcmp(t->dep->cfg->name, dep, dl) &&
            !strcmp(t->model, model))
            return t;
    }
    return NULL;
}

/* Keeps enabled targets; standby targets only when no other candidate is enabled. */
static int route_targets(cps_route *r, cps_target **cands, size_t n)
{
    size_t k = 0, live_main = 0;
    for (size_t i = 0; i < n; i++)
        if (cands[i]->dep->enabled && !cands[i]->dep->cfg->standby)
            live_main++;
    r->targets = calloc(n ? n : 1, sizeof(*r->targets));
    if (!r->targets)
        return COMPASS_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        cps_target *t = cands[i];
        if (!t->dep->enabled)
            continue;
        if (t->dep->cfg->standby && live_main)
            continue;
        r->targets[k++] = t;
    }
    r->n = k;
    return 0;
}

static int gen_build(struct compass_engine *e, cps_config *cfg, cps_gen **out, compass_err *err)
{
    cps_gen *g = calloc(1, sizeof(*g));
    if (!g) {
        cps_config_free(cfg);
        return compass_err_set(err, COMPASS_ENOMEM, "out of memory");
    }
    atomic_init(&g->refs, 1);
    g->e = e;
    g->cfg = cfg;
    int rc = 0;
    char **owned = NULL;
    size_t n_dirs = 0;
    const char *const *dirs = all_paths(e, cfg, &n_dirs, &owned);
    size_t n_targets = 0;
    for (size_t i = 0; i < cfg->n_deployments; i++)
        n_targets += cfg->deployments[i].n_models;
    g->deps = calloc(cfg->n_deployments + 1, sizeof(*g->deps));
    g->targets = calloc(n_targets + 1, sizeof(*g->targets));
    if (!g->deps || !g->targets || !owned) {
        rc = compass_err_set(err, COMPASS_ENOMEM, "out of memory");
        goto out;
    }
    /* deployments */
    for (size_t i = 0; i < cfg->n_deployments; i++) {
        const cps_cfg_deployment *dc = &cfg->deployments[i];
        cps_deployment *d = &g->deps[i];
        g->n_deps = i + 1;
        d->cfg = dc;
        cps_plugin *p = NULL;
        compass_err perr;
        memset(&perr, 0, sizeof(perr));
        if ((rc = plugin_get(e, dirs, n_dirs, dc->plugin, COMPASS_PLUGIN_PROVIDER, &p, &perr))) {
            snprintf(err->msg, sizeof(err->msg), "%s:%d: deployment '%s': %s", dc->file, dc->line,
                     dc->name, perr.msg);
            err->code = rc;
            goto out;
        }
        if ((rc = gen_add_plugin(g, p))) {
            plugin_put(e, p);
            compass_err_set(err, rc, "out of memory");
            goto out;
        }
        d->plugin = p;
        d->opt_arena = cps_arena_new(512);
        const compass_plugin_desc *pd = p->desc;
        void *opts = pd->options_size && d->opt_arena
                         ? cps_arena_calloc(d->opt_arena, pd->options_size)
                         : NULL;
        if (!d->opt_arena || (pd->options_size && !opts)) {
            rc = compass_err_set(err, COMPASS_ENOMEM, "out of memory");
            goto out;
        }
        char what[160];
        snprintf(what, sizeof(what), "deployment '%s'", dc->name);
        if ((rc = apply_options(d->opt_arena, pd, dc->options, opts, what, dc->file, err)))
            goto out;
        /* options are checked even for a deployment whose key is missing, so a typo shows
         * now and not on the reload after the key is set */
        if (dc->api_key_env) {
            const char *v = getenv(dc->api_key_env);
            if (!v || !*v) {
                snprintf(d->disabled_reason, sizeof(d->disabled_reason), "%s is not set",
                         dc->api_key_env);
                cps_log(e, COMPASS_LOG_INFO, "deployment '%s' disabled: %s", dc->name,
                        d->disabled_reason);
                continue;
            }
            d->api_key = strdup(v);
            if (!d->api_key) {
                rc = compass_err_set(err, COMPASS_ENOMEM, "out of memory");
                goto out;
            }
        }
        compass_instance_info info;
        memset(&info, 0, sizeof(info));
        info.size = sizeof(info);
        info.name = dc->name;
        info.base_url = dc->base_url;
        info.api_key = d->api_key;
        info.models = dc->models;
        info.n_models = dc->n_models;
        info.options = opts;
        compass_err ie;
        memset(&ie, 0, sizeof(ie));
        if (pd->ops.provider->instance_new(&p->host, &info, &d->inst, &ie)) {
            d->inst = NULL;
            rc = instance_err(err, dc->file, dc->line, "deployment", dc->name, &ie);
            goto out;
        }
        d->enabled = 1;
    }
    int checks = 0;
    for (size_t i = 0; i < g->n_deps; i++)
        if (g->deps[i].enabled && g->deps[i].cfg->health_check_ms)
            checks = 1;
    atomic_store(&e->has_checks, checks);
    /* targets: every deployment/model pair */
    for (size_t i = 0; i < g->n_deps; i++)
        for (size_t m = 0; m < g->deps[i].cfg->n_models; m++) {
            cps_target *t = &g->targets[g->n_targets++];
            t->dep = &g->deps[i];
            t->model = g->deps[i].cfg->models[m];
            size_t len = strlen(t->dep->cfg->name) + strlen(t->model) + 2;
            t->id = malloc(len);
            if (!t->id) {
                rc = compass_err_set(err, COMPASS_ENOMEM, "out of memory");
                goto out;
            }
            snprintf(t->id, len, "%s/%s", t->dep->cfg->name, t->model);
            t->stats = stats_get(e, t->id);
            if (!t->stats) {
                rc = compass_err_set(err, COMPASS_ENOMEM, "out of memory");
                goto out;
            }
        }
    /* routes: configured ones, then one per distinct concrete model name */
    g->routes = calloc(cfg->n_routes + g->n_targets + 1, sizeof(*g->routes));
    cps_target **cands = calloc(g->n_targets + 64, sizeof(*cands));
    if (!g->routes || !cands) {
        free(cands);
        rc = compass_err_set(err, COMPASS_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const cps_cfg_route *rc_ = &cfg->routes[i];
        cps_route *r = &g->routes[g->n_routes++];
        r->name = rc_->name;
        r->cfg = rc_;
        r->max_attempts = rc_->max_attempts;
        size_t n = 0;
        for (size_t k = 0; k < rc_->n_candidates && n < 64; k++) {
            const char *slash = strchr(rc_->candidates[k], '/');
            cps_target *t = find_target(g, rc_->candidates[k],
                                        (size_t)(slash - rc_->candidates[k]), slash + 1);
            if (t)
                cands[n++] = t;
        }
        if ((rc = route_targets(r, cands, n))) {
            free(cands);
            compass_err_set(err, rc, "out of memory");
            goto out;
        }
        if (r->n == 0)
            cps_log(e, COMPASS_LOG_WARN, "route '%s' has no enabled candidate; requests to it "
                    "will get 503", r->name);
        if (!strcmp(rc_->strategy, "priority") && rc_->options &&
            config_setting_length(rc_->options) > 0) {
            config_setting_t *o0 = config_setting_get_elem(rc_->options, 0);
            free(cands);
            snprintf(err->msg, sizeof(err->msg), "%s:%d: route '%s': the built-in strategy "
                     "'priority' takes no options (found '%s')", rc_->file,
                     (int)config_setting_source_line(o0), rc_->name, config_setting_name(o0));
            rc = err->code = COMPASS_ECONFIG;
            goto out;
        }
        if (strcmp(rc_->strategy, "priority")) {
            cps_plugin *p = NULL;
            compass_err perr;
            memset(&perr, 0, sizeof(perr));
            if ((rc = plugin_get(e, dirs, n_dirs, rc_->strategy, COMPASS_PLUGIN_ROUTER, &p,
                                 &perr))) {
                free(cands);
                snprintf(err->msg, sizeof(err->msg), "%s:%d: route '%s': %s", rc_->file,
                         rc_->line, rc_->name, perr.msg);
                err->code = rc;
                goto out;
            }
            if ((rc = gen_add_plugin(g, p))) {
                plugin_put(e, p);
                free(cands);
                compass_err_set(err, rc, "out of memory");
                goto out;
            }
            r->router = p;
            r->opt_arena = cps_arena_new(512);
            void *opts = p->desc->options_size && r->opt_arena
                             ? cps_arena_calloc(r->opt_arena, p->desc->options_size)
                             : NULL;
            char what[160];
            snprintf(what, sizeof(what), "route '%s'", rc_->name);
            if (!r->opt_arena ||
                (rc = apply_options(r->opt_arena, p->desc, rc_->options, opts, what, rc_->file,
                                    err))) {
                free(cands);
                if (!r->opt_arena)
                    rc = compass_err_set(err, COMPASS_ENOMEM, "out of memory");
                goto out;
            }
            compass_instance_info info;
            memset(&info, 0, sizeof(info));
            info.size = sizeof(info);
            info.name = rc_->name;
            info.options = opts;
            compass_err ie;
            memset(&ie, 0, sizeof(ie));
            if (p->desc->ops.router->instance_new(&p->host, &info, &r->router_inst, &ie)) {
                r->router_inst = NULL;
                free(cands);
                rc = instance_err(err, rc_->file, rc_->line, "route", rc_->name, &ie);
                goto out;
            }
        }
    }
    for (size_t i = 0; i < g->n_targets; i++) {
        const char *model = g->targets[i].model;
        int seen = 0;
        for (size_t k = 0; k < g->n_routes; k++)
            if (!strcmp(g->routes[k].name, model))
                seen = 1;
        if (seen)
            continue;
        size_t n = 0;
        for (size_t k = 0; k < g->n_targets && n < 64; k++)
            if (!strcmp(g->targets[k].model, model))
                cands[n++] = &g->targets[k];
        cps_route *r = &g->routes[g->n_routes++];
        r->name = model;
        r->implicit = 1;
        if ((rc = route_targets(r, cands, n))) {
            free(cands);
            compass_err_set(err, rc, "out of memory");
            goto out;
        }
    }
    free(cands);
out:
    free_paths(owned, n_dirs);
    if (rc) {
        gen_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

/* ---- open, reload, close ---- */

static int engine_new(compass_engine **out, const compass_engine_opts *opts, compass_err *err)
{
    compass_engine *e = calloc(1, sizeof(*e));
    *out = e;
    if (!e)
        return compass_err_set(err, COMPASS_ENOMEM, "out of memory");
    e->log_fn = opts && opts->log ? opts->log : default_log;
    e->log_ud = opts ? opts->log_ud : NULL;
    e->log_level = opts ? opts->log_level : COMPASS_LOG_WARN;
    size_t osize = opts ? (opts->size ? opts->size : sizeof(*opts)) : 0;
#define HAS_OPT(f) (opts && osize >= offsetof(compass_engine_opts, f) + sizeof(opts->f))
    e->external = HAS_OPT(external_loop) && opts->external_loop;
    e->run_pending = e->external && HAS_OPT(run_pending) && opts->run_pending;
    e->want_loops = HAS_OPT(loops) ? opts->loops : 1;
    static atomic_ulong serials;
    e->serial = atomic_fetch_add(&serials, 1) + 1;
#undef HAS_OPT
    if (opts && opts->n_plugin_paths) {
        e->extra_paths = calloc(opts->n_plugin_paths, sizeof(char *));
        if (!e->extra_paths) {
            free(e);
            return compass_err_set(err, COMPASS_ENOMEM, "out of memory");
        }
        for (size_t i = 0; i < opts->n_plugin_paths; i++)
            if ((e->extra_paths[e->n_extra_paths] = strdup(opts->plugin_paths[i])))
                e->n_extra_paths++;
    }
    pthread_mutex_init(&e->gen_mu, NULL);
    pthread_mutex_init(&e->reload_mu, NULL);
    pthread_mutex_init(&e->plugins_mu, NULL);
    pthread_mutex_init(&e->stats_mu, NULL);
    e->metrics = cps_metrics_new();
    cps_host_init(&e->host_tmpl);
    atomic_init(&e->in_flight, 0);
    atomic_init(&e->seq, 0);
    atomic_init(&e->closing, 0);
    *out = e;
    return e->metrics ? 0 : compass_err_set(err, COMPASS_ENOMEM, "out of memory");
}

static void engine_free(compass_engine *e)
{
    if (e->gen)
        cps_gen_unref(e->gen);
    for (size_t i = 0; i < e->n_plugins; i++)
        cps_plugin_unload(e->plugins[i]);
    free(e->plugins);
    while (e->stats) {
        cps_stats *s = e->stats;
        e->stats = s->next;
        pthread_mutex_destroy(&s->mu);
        free(s->key);
        free(s);
    }
    for (size_t i = 0; i < e->n_extra_paths; i++)
        free(e->extra_paths[i]);
    free(e->extra_paths);
    cps_metrics_free(e->metrics);
    free(e->config_path);
    free(e->config_text);
    pthread_mutex_destroy(&e->gen_mu);
    pthread_mutex_destroy(&e->reload_mu);
    pthread_mutex_destroy(&e->plugins_mu);
    pthread_mutex_destroy(&e->stats_mu);
    free(e);
}

static int load_config(compass_engine *e, cps_config **out, compass_err *err)
{
    *out = e->config_path ? cps_config_load_file(e->config_path, err)
                          : cps_config_load_string(e->config_text, NULL, err);
    return *out ? 0 : (err->code ? err->code : COMPASS_ECONFIG);
}

static int engine_start(compass_engine *e, compass_err *err)
{
    cps_config *cfg;
    cps_gen *g;
    int rc = load_config(e, &cfg, err);
    if (!rc)
        rc = gen_build(e, cfg, &g, err);
    if (!rc) {
        e->gen = g;
        int n = e->want_loops;
        if (n == COMPASS_LOOPS_FROM_CONFIG) {
            n = g->cfg->threads;
            if (n <= 0) {
                long cpus = sysconf(_SC_NPROCESSORS_ONLN);
                n = cpus > 0 ? (int)(cpus < 64 ? cpus : 64) : 1;
            }
        }
        rc = cps_loop_start(e, n > 64 ? 64 : n, err);
    }
    return rc;
}

COMPASS_API int compass_engine_open(compass_engine **out, const char *config_path,
                                    const compass_engine_opts *opts, compass_err *err)
{
    compass_err local;
    if (!err)
        err = &local;
    memset(err, 0, sizeof(*err));
    if (!out || !config_path)
        return compass_err_set(err, COMPASS_EINVAL, "compass_engine_open: NULL argument");
    compass_engine *e = NULL;
    int rc = engine_new(&e, opts, err);
    if (!rc && !(e->config_path = strdup(config_path)))
        rc = compass_err_set(err, COMPASS_ENOMEM, "out of memory");
    if (!rc)
        rc = engine_start(e, err);
    if (rc) {
        if (e) {
            cps_loop_stop(e);
            engine_free(e);
        }
        return rc;
    }
    *out = e;
    return 0;
}

COMPASS_API int compass_engine_open_string(compass_engine **out, const char *config_text,
                                           const compass_engine_opts *opts, compass_err *err)
{
    compass_err local;
    if (!err)
        err = &local;
    memset(err, 0, sizeof(*err));
    if (!out || !config_text)
        return compass_err_set(err, COMPASS_EINVAL, "compass_engine_open_string: NULL argument");
    compass_engine *e = NULL;
    int rc = engine_new(&e, opts, err);
    if (!rc && !(e->config_text = strdup(config_text)))
        rc = compass_err_set(err, COMPASS_ENOMEM, "out of memory");
    if (!rc)
        rc = engine_start(e, err);
    if (rc) {
        if (e) {
            cps_loop_stop(e);
            engine_free(e);
        }
        return rc;
    }
    *out = e;
    return 0;
}

COMPASS_API int compass_engine_reload(compass_engine *e, compass_err *err)
{
    compass_err local;
    if (!err)
        err = &local;
    memset(err, 0, sizeof(*err));
    pthread_mutex_lock(&e->reload_mu);
    cps_config *cfg;
    cps_gen *g;
    int rc = load_config(e, &cfg, err);
    if (!rc)
        rc = gen_build(e, cfg, &g, err);
    if (!rc) {
        pthread_mutex_lock(&e->gen_mu);
        cps_gen *old = e->gen;
        e->gen = g;
        pthread_mutex_unlock(&e->gen_mu);
        cps_gen_unref(old);
        cps_log(e, COMPASS_LOG_INFO, "configuration reloaded (%zu deployments, %zu routes)",
                g->n_deps, g->cfg->n_routes);
    }
    pthread_mutex_unlock(&e->reload_mu);
    return rc;
}

COMPASS_API long compass_engine_in_flight(compass_engine *e)
{
    return atomic_load(&e->in_flight);
}

COMPASS_API void compass_engine_close(compass_engine *e, int drain_ms)
{
    if (!e)
        return;
    atomic_store(&e->closing, 1);
    uint64_t deadline = cps_now_ns() + (uint64_t)(drain_ms > 0 ? drain_ms : 0) * 1000000u;
    while (atomic_load(&e->in_flight) > 0 && cps_now_ns() < deadline) {
        if (e->external) {
            cps_loop_pump(e, 10); /* nobody else runs the loop */
            continue;
        }
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    cps_loop_stop(e); /* cancels what is left and waits for it */
    engine_free(e);
}

/* ---- submit ---- */

static cps_route *find_route(cps_gen *g, const char *name)
{
    for (size_t i = 0; i < g->n_routes; i++)
        if (!strcmp(g->routes[i].name, name))
            return &g->routes[i];
    return NULL;
}

static void make_request_id(compass_engine *e, char *out, size_t cap)
{
    unsigned long n = atomic_fetch_add(&e->seq, 1);
    uint64_t x = cps_now_ns() ^ ((uint64_t)(uintptr_t)e << 16) ^ (n * 0x9E3779B97F4A7C15ull);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    snprintf(out, cap, "req-%016llx", (unsigned long long)x);
}

static int sane_id(const char *s)
{
    size_t n = 0;
    for (; *s; s++, n++)
        if (n >= 64 || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                         (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.' ||
                         *s == ':'))
            return 0;
    return n > 0;
}

static void rank(compass_engine_call *c, cps_target **elig, size_t n);

/* Why t cannot serve this request (NULL when it can): checked before any strategy. */
static const char *cannot_serve(const compass_engine_call *c, const cps_target *t, int64_t est)
{
    const cps_cfg_deployment *d = t->dep->cfg;
    if (c->kind != COMPASS_ENDPOINT_CHAT)
        return NULL;
    if (c->req.n_tools && !(d->caps & COMPASS_CAP_TOOLS))
        return "tools";
    for (size_t i = 0; i < c->req.n_messages; i++)
        for (size_t k = 0; k < c->req.messages[i].n_parts; k++)
            if (c->req.messages[i].parts[k].type == COMPASS_PART_IMAGE_URL &&
                !(d->caps & COMPASS_CAP_VISION))
                return "images";
    if (c->req.response_format.len && !(d->caps & COMPASS_CAP_JSON) &&
        !memmem(c->req.response_format.ptr, c->req.response_format.len, "\"text\"", 6))
        return "JSON mode";
    if (d->context_window && est > d->context_window)
        return "a context window this large";
    return NULL;
}

/* Filters out candidates that cannot serve the request, orders the rest (the router plugin's
 * ranking, or config order), then moves open breakers last, keeping relative order. Half-open
 * ones keep their place: they must see their probe (one at a time; the others skip them). */
static void plan(compass_engine_call *c)
{
    cps_route *r = c->route;
    cps_target *elig[64];
    size_t n = 0;
    /* room for every candidate (a call in flight keeps only what its route needs) */
    size_t cap = r->n < 64 ? (r->n ? r->n : 1) : 64;
    c->order = cps_arena_alloc(c->arena, cap * sizeof(*c->order));
    if (!c->order)
        return; /* no candidate: answered as "no enabled deployment" */
    int64_t est = c->kind == COMPASS_ENDPOINT_CHAT ? cps_estimate_prompt_tokens(&c->req, NULL)
                                                   : 0;
    for (size_t i = 0; i < r->n && i < 64; i++) {
        const char *why = cannot_serve(c, r->targets[i], est);
        if (!why) {
            elig[n++] = r->targets[i];
            continue;
        }
        if (!c->n_filtered++ && (c->filter_msg = cps_arena_alloc(c->arena, 300)))
            snprintf(c->filter_msg, 300,
                     "no candidate of '%s' can serve this request: %s does not support %s",
                     c->route_name, r->targets[i]->id, why);
    }
    rank(c, elig, n);
    cps_target *sorted[64];
    size_t k = 0;
    uint64_t now = cps_now_ns();
    int st[64];
    for (size_t i = 0; i < c->n_order; i++)
        st[i] = cps_breaker_state(c->order[i]->stats, &c->order[i]->dep->cfg->breaker, now);
    for (int p = 0; p < 2; p++)
        for (size_t i = 0; i < c->n_order; i++)
            if ((st[i] == COMPASS_BREAKER_OPEN) == p)
                sorted[k++] = c->order[i];
    memcpy(c->order, sorted, k * sizeof(*sorted));
}

static void rank(compass_engine_call *c, cps_target **elig, size_t n)
{
    cps_route *r = c->route;
    c->n_order = 0;
    if (r->router && n) {
        compass_candidate cands[64];
        size_t order[64], n_order = n;
        compass_route_request rr;
        memset(&rr, 0, sizeof(rr));
        rr.size = sizeof(rr);
        rr.route = compass_str_c(c->route_name);
        rr.n_messages = c->req.n_messages;
        rr.est_prompt_tokens = cps_estimate_prompt_tokens(&c->req, &rr.n_chars);
        rr.has_tools = c->req.n_tools > 0;
        for (size_t i = 0; i < c->req.n_messages; i++)
            for (size_t k = 0; k < c->req.messages[i].n_parts; k++)
                if (c->req.messages[i].parts[k].type == COMPASS_PART_IMAGE_URL)
                    rr.has_images = 1;
        rr.stream = c->req.stream;
        rr.key_id = compass_str_c(c->key_id);
        rr.metadata = c->metadata;
        rr.n_metadata = c->n_metadata;
        rr.now_ms = (int64_t)time(NULL) * 1000;
        rr.chat = c->kind == COMPASS_ENDPOINT_CHAT ? &c->req : NULL;
        for (size_t i = 0; i < n; i++) {
            cps_target *t = elig[i];
            const cps_cfg_deployment *dc = t->dep->cfg;
            compass_candidate *k = &cands[i];
            memset(k, 0, sizeof(*k));
            k->size = sizeof(*k);
            k->id = compass_str_c(t->id);
            k->provider = compass_str_c(dc->name);
            k->model = compass_str_c(t->model);
            k->tier = dc->tier;
            k->weight = dc->weight;
            k->price_in = dc->price_in;
            k->price_out = dc->price_out;
            k->capacity = dc->capacity;
            k->caps = dc->caps;
            k->context_window = dc->context_window;
            k->in_flight = atomic_load(&t->stats->in_flight);
            pthread_mutex_lock(&t->stats->mu);
            k->latency_ewma_ms = t->stats->ewma_ms;
            k->ttft_ewma_ms = t->stats->ewma_ttft_ms;
            k->error_rate = t->stats->err_ewma;
            pthread_mutex_unlock(&t->stats->mu);
            k->breaker = cps_breaker_state(t->stats, &dc->breaker, cps_now_ns());
        }
        compass_err err;
        memset(&err, 0, sizeof(err));
        const compass_candidate *ptrs[64];
        for (size_t i = 0; i < n; i++)
            ptrs[i] = &cands[i];
        int rc = r->router->desc->ops.router->rank(r->router_inst, &c->preq, &rr, ptrs, n,
                                                   order, &n_order, &err);
        if (rc == 0 && n_order <= n) {
            int ok = 1;
            for (size_t i = 0; i < n_order; i++)
                if (order[i] >= n)
                    ok = 0;
            if (ok) {
                for (size_t i = 0; i < n_order; i++)
                    c->order[c->n_order++] = elig[order[i]];
                return;
            }
            snprintf(err.msg, sizeof(err.msg), "it returned an index out of range");
        }
        c->router_fell_back = 1;
        c->router_msg = cps_arena_strndup(c->arena, err.msg[0] ? err.msg : compass_strerror(rc),
                                          strlen(err.msg[0] ? err.msg : compass_strerror(rc)));
        char labels[160];
        snprintf(labels, sizeof(labels), "route=\"%s\",router=\"%s\"", r->name, r->router->name);
        cps_metrics_add(c->e->metrics, "compass_router_errors_total", labels, 1);
        cps_log(c->e, COMPASS_LOG_WARN, "route '%s': router '%s' failed (%s); using priority "
                "order", r->name, r->router->name, c->router_msg ? c->router_msg : "?");
    }
    for (size_t i = 0; i < n; i++)
        c->order[c->n_order++] = elig[i];
}

/* Answers an explain request with the plan as JSON. */
static void explain_answer(compass_engine_call *c)
{
    cps_buf b;
    cps_buf_init(&b);
    cps_route *r = c->route;
    uint64_t now = cps_now_ns();
    cps_buf_puts(&b, "{\"route\":");
    cps_buf_json_str(&b, c->route_name, strlen(c->route_name));
    cps_buf_printf(&b, ",\"kind\":\"%s\",\"strategy\":",
                   !r ? "deployment" : r->implicit ? "model" : "route");
    const char *strategy = r && r->router ? r->router->name : "priority";
    cps_buf_json_str(&b, strategy, strlen(strategy));
    cps_buf_printf(&b, ",\"est_prompt_tokens\":%lld,\"candidates\":[",
                   (long long)cps_estimate_prompt_tokens(&c->req, NULL));
    cps_target *single[1] = {c->order[0]};
    cps_target **all = r ? r->targets : single;
    size_t n_all = r ? r->n : 1;
    int64_t est = cps_estimate_prompt_tokens(&c->req, NULL);
    for (size_t i = 0; i < n_all && i < 64; i++) {
        cps_target *t = all[i];
        cps_stats *s = t->stats;
        int pos = -1;
        for (size_t k = 0; k < c->n_order; k++)
            if (c->order[k] == t)
                pos = (int)k;
        const char *why = cannot_serve(c, t, est);
        int br = cps_breaker_state(s, &t->dep->cfg->breaker, now);
        pthread_mutex_lock(&s->mu);
        cps_buf_printf(&b, "%s{\"id\":", i ? "," : "");
        cps_buf_json_str(&b, t->id, strlen(t->id));
        cps_buf_printf(&b, ",\"rank\":%d,\"breaker\":\"%s\",\"tier\":%d,\"price_in\":%g,"
                       "\"price_out\":%g,\"latency_ewma_ms\":%.3f,\"ttft_ewma_ms\":%.3f,"
                       "\"error_rate\":%.4f,\"in_flight\":%ld",
                       pos, cps_breaker_name(br), t->dep->cfg->tier, t->dep->cfg->price_in,
                       t->dep->cfg->price_out, s->ewma_ms, s->ewma_ttft_ms, s->err_ewma,
                       atomic_load(&s->in_flight));
        pthread_mutex_unlock(&s->mu);
        if (why)
            cps_buf_printf(&b, ",\"excluded\":\"does not support %s\"", why);
        else if (br == COMPASS_BREAKER_OPEN)
            cps_buf_puts(&b, ",\"note\":\"breaker open: skipped until its cooldown ends\"");
        cps_buf_puts(&b, "}");
    }
    cps_buf_puts(&b, "],\"order\":[");
    for (size_t k = 0; k < c->n_order; k++) {
        cps_buf_puts(&b, k ? "," : "");
        cps_buf_json_str(&b, c->order[k]->id, strlen(c->order[k]->id));
    }
    cps_buf_puts(&b, "]");
    if (c->router_fell_back && c->router_msg) {
        cps_buf_puts(&b, ",\"router_error\":");
        cps_buf_json_str(&b, c->router_msg, strlen(c->router_msg));
        cps_buf_puts(&b, ",\"fallback\":\"priority order\"");
    }
    if (c->n_filtered && c->filter_msg) {
        cps_buf_puts(&b, ",\"filtered\":");
        cps_buf_json_str(&b, c->filter_msg, strlen(c->filter_msg));
    }
    cps_buf_puts(&b, "}");
    if (b.oom) {
        cps_buf_free(&b);
        cps_call_fail_now(c, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    compass_engine_head h;
    memset(&h, 0, sizeof(h));
    h.size = sizeof(h);
    h.status = 200;
    h.content_type = "application/json";
    h.request_id = c->request_id;
    h.route = c->route_name;
    h.provider = h.model = "";
    h.cost_usd = -1;
    if (c->cb.on_head)
        c->cb.on_head(c->ud, &h);
    compass_engine_result res;
    memset(&res, 0, sizeof(res));
    res.size = sizeof(res);
    res.status = 200;
    res.body = b.ptr;
    res.body_len = b.len;
    res.request_id = c->request_id;
    res.route = c->route_name;
    res.provider = res.model = res.attempts_log = "";
    res.cost_usd = -1;
    c->finished = 1;
    c->cb.on_done(c->ud, &res);
    cps_buf_free(&b);
    atomic_fetch_sub(&c->e->in_flight, 1);
    cps_call_unref(c);
}

COMPASS_API int compass_engine_submit(compass_engine *e, const compass_engine_request *rq,
                                      const compass_engine_callbacks *cb, void *ud,
                                      compass_engine_call **out)
{
    if (out)
        *out = NULL;
    if (!e || !rq || !cb || !cb->on_done || (!rq->body && rq->body_len))
        return COMPASS_EINVAL;
    if (atomic_load(&e->closing))
        return COMPASS_ECANCELED;
    compass_engine_call *c = calloc(1, sizeof(*c));
    if (!c)
        return COMPASS_ENOMEM;
    /* the body, its canonical form and the upstream request fit in about three times it */
    c->arena = cps_arena_new(rq->body_len * 3 + 1024);
    if (!c->arena) {
        free(c);
        return COMPASS_ENOMEM;
    }
    c->e = e;
    atomic_init(&c->refs, 1);
    atomic_init(&c->cancel_requested, 0);
    c->cb = *cb;
    c->ud = ud;
    c->start_ns = cps_now_ns();
    c->created = (int64_t)time(NULL);
    c->route_name = "";
    c->preq.call = c;
    c->preq.arena = c->arena;
    cps_buf_init(&c->body);
    cps_buf_init(&c->hdrs);
    cps_buf_init(&c->chunk);
    if (rq->request_id && sane_id(rq->request_id))
        snprintf(c->request_id, sizeof(c->request_id), "%s", rq->request_id);
    else
        make_request_id(e, c->request_id, sizeof(c->request_id));
    if (rq->key_id)
        snprintf(c->key_id, sizeof(c->key_id), "%s", rq->key_id);
    c->gen = gen_current(e);
    atomic_fetch_add(&e->in_flight, 1); /* compass_active_tasks is read from it when rendered */
    if (out)
        *out = c;

    size_t rq_size = rq->size ? rq->size : sizeof(*rq);
    if (rq_size >= offsetof(compass_engine_request, endpoint) + sizeof(rq->endpoint))
        c->kind = rq->endpoint == COMPASS_ENDPOINT_EMBEDDINGS ? COMPASS_ENDPOINT_EMBEDDINGS
                                                              : COMPASS_ENDPOINT_CHAT;
    if (rq_size >= offsetof(compass_engine_request, n_metadata) + sizeof(rq->n_metadata) &&
        rq->metadata && rq->n_metadata) {
        size_t n = rq->n_metadata < 32 ? rq->n_metadata : 32;
        c->metadata = cps_arena_calloc(c->arena, n * sizeof(*c->metadata));
        for (size_t i = 0; c->metadata && i < n; i++) {
            const compass_header *m = &rq->metadata[i];
            char *k = cps_arena_strndup(c->arena, m->name.ptr ? m->name.ptr : "", m->name.len);
            char *v = cps_arena_strndup(c->arena, m->value.ptr ? m->value.ptr : "", m->value.len);
            if (!k || !v)
                break;
            c->metadata[i].name.ptr = k;
            c->metadata[i].name.len = m->name.len;
            c->metadata[i].value.ptr = v;
            c->metadata[i].value.len = m->value.len;
            c->n_metadata = i + 1;
        }
    }
    int explain = rq_size >= offsetof(compass_engine_request, explain) + sizeof(rq->explain) &&
                  rq->explain;
    char *body = cps_arena_strndup(c->arena, rq->body ? rq->body : "", rq->body_len);
    compass_err perr;
    memset(&perr, 0, sizeof(perr));
    int rc;
    if (!body)
        rc = compass_err_set(&perr, COMPASS_ENOMEM, "out of memory");
    else if (c->kind == COMPASS_ENDPOINT_EMBEDDINGS)
        rc = cps_canon_parse_embed(c->arena, body, rq->body_len, &c->ereq, &perr);
    else
        rc = cps_canon_parse_chat(c->arena, body, rq->body_len, &c->req, &perr);
    if (rc == COMPASS_ENOMEM) {
        cps_call_fail_now(c, 500, "server_error", NULL, NULL, "out of memory");
        return 0;
    }
    if (rc) {
        /* the message starts with the field it names: "messages[1].role: ..." */
        char param[64] = "";
        const char *colon = strchr(perr.msg, ':');
        if (rc == COMPASS_EINVAL && colon && (size_t)(colon - perr.msg) < sizeof(param) &&
            !memchr(perr.msg, ' ', (size_t)(colon - perr.msg)))
            snprintf(param, sizeof(param), "%.*s", (int)(colon - perr.msg), perr.msg);
        cps_call_fail_now(c, 400, "invalid_request_error", param[0] ? param : NULL,
                          rc == COMPASS_EPARSE ? "invalid_json" : "invalid_value", perr.msg);
        return 0;
    }
    if ((c->req.set & COMPASS_SET_N) && c->req.n > 1) {
        cps_call_fail_now(c, 400, "invalid_request_error", "n", "unsupported_value",
                          "n: compass returns one choice per request; n > 1 is not supported");
        return 0;
    }
    c->route_name = c->kind == COMPASS_ENDPOINT_EMBEDDINGS ? c->ereq.model.ptr : c->req.model.ptr;
    if (!c->gen) {
        cps_call_fail_now(c, 503, "server_error", NULL, "not_ready", "compass is not ready");
        return 0;
    }
    c->route = find_route(c->gen, c->route_name);
    if (!c->route) {
        /* "deployment/model" addresses one target directly */
        const char *slash = strchr(c->route_name, '/');
        cps_target *t = slash ? find_target(c->gen, c->route_name,
                                            (size_t)(slash - c->route_name), slash + 1)
                              : NULL;
        if (t && t->dep->enabled) {
            c->order = c->one_target;
            c->order[0] = t;
            c->n_order = 1;
        } else {
            char msg[600];
            size_t off = 0;
            off += (size_t)snprintf(msg, sizeof(msg),
                                    "The model '%.100s' does not exist or you do not have access "
                                    "to it. Available: ",
                                    c->route_name);
            for (size_t i = 0; i < c->gen->n_routes && off < sizeof(msg) - 64; i++)
                if (c->gen->routes[i].n)
                    off += (size_t)snprintf(msg + off, sizeof(msg) - off, "%s%s",
                                            i ? ", " : "", c->gen->routes[i].name);
            cps_call_fail_now(c, 404, "invalid_request_error", "model", "model_not_found", msg);
            return 0;
        }
    } else {
        plan(c);
    }
    int rounds = 1 + (c->route && c->route->cfg ? c->route->cfg->retries : 0);
    c->max_attempts = c->route && c->route->max_attempts ? c->route->max_attempts
                                                         : (int)c->n_order * rounds;
    if (c->route && c->route->cfg && c->route->cfg->deadline_ms)
        c->deadline_ns = c->start_ns + (uint64_t)c->route->cfg->deadline_ms * 1000000u;
    c->seed = (unsigned)(c->start_ns ^ (uintptr_t)c);
    if (c->max_attempts > CPS_MAX_ATTEMPTS)
        c->max_attempts = CPS_MAX_ATTEMPTS;
    if (explain) {
        explain_answer(c);
        return 0;
    }
    if (c->n_order == 0 && c->n_filtered) {
        cps_call_fail_now(c, 400, "invalid_request_error", NULL, "unsupported_capability",
                          c->filter_msg ? c->filter_msg : "no candidate can serve this request");
        return 0;
    }
    if (c->n_order == 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "route '%.100s' has no enabled deployment (check the API key "
                 "environment variables its deployments name)", c->route_name);
        cps_call_fail_now(c, 503, "server_error", NULL, "no_deployment", msg);
        return 0;
    }
    cps_loop_post(e, 1, c);
    return 0;
}

COMPASS_API void compass_engine_cancel(compass_engine_call *call)
{
    if (!call)
        return;
    atomic_store(&call->cancel_requested, 1);
    atomic_fetch_add(&call->refs, 1); /* dropped by the loop once it handled the message */
    cps_loop_post(call->e, 2, call);
}

/* ---- synchronous chat ---- */

struct sync_ctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, status;
    char *body;
    cps_buf last_error;
    void (*on_delta)(void *ud, const compass_chat_delta *d);
    void *ud;
};

static void sync_delta(void *ud, const compass_chat_delta *d)
{
    struct sync_ctx *s = ud;
    if (s->on_delta)
        s->on_delta(s->ud, d);
}

static void sync_chunk(void *ud, const char *data, size_t len)
{
    struct sync_ctx *s = ud;
    if (len > 10 && !memcmp(data, "{\"error\"", 8)) {
        cps_buf_reset(&s->last_error);
        cps_buf_append(&s->last_error, data, len);
    }
}

static void sync_done(void *ud, const compass_engine_result *res)
{
    struct sync_ctx *s = ud;
    const char *b = res->body_len ? res->body : (s->last_error.ptr ? s->last_error.ptr : "");
    size_t bl = res->body_len ? res->body_len : s->last_error.len;
    char *copy = malloc(bl + 1);
    if (copy) {
        memcpy(copy, b, bl);
        copy[bl] = '\0';
    }
    pthread_mutex_lock(&s->mu);
    s->status = res->status;
    s->body = copy;
    s->done = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static int chat_sync(compass_engine *e, const char *body, size_t body_len, int explain,
                     void (*on_delta)(void *ud, const compass_chat_delta *d), void *ud,
                     int *status_out, char **body_out);

COMPASS_API char *compass_engine_explain(compass_engine *e, const char *body, size_t len,
                                         int *status_out)
{
    char *out = NULL;
    int status = 0;
    if (chat_sync(e, body, len, 1, NULL, NULL, &status, &out))
        return NULL;
    if (status_out)
        *status_out = status;
    return out;
}

COMPASS_API int compass_engine_chat(compass_engine *e, const char *body, size_t body_len,
                                    void (*on_delta)(void *ud, const compass_chat_delta *d),
                                    void *ud, int *status_out, char **body_out)
{
    return chat_sync(e, body, body_len, 0, on_delta, ud, status_out, body_out);
}

static int chat_sync(compass_engine *e, const char *body, size_t body_len, int explain,
                     void (*on_delta)(void *ud, const compass_chat_delta *d), void *ud,
                     int *status_out, char **body_out)
{
    struct sync_ctx s;
    memset(&s, 0, sizeof(s));
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    cps_buf_init(&s.last_error);
    s.on_delta = on_delta;
    s.ud = ud;
    compass_engine_callbacks cb;
    memset(&cb, 0, sizeof(cb));
    cb.size = sizeof(cb);
    cb.on_delta = sync_delta;
    cb.on_chunk = sync_chunk;
    cb.on_done = sync_done;
    compass_engine_request rq;
    memset(&rq, 0, sizeof(rq));
    rq.size = sizeof(rq);
    rq.body = body;
    rq.body_len = body_len;
    rq.explain = explain;
    int rc = compass_engine_submit(e, &rq, &cb, &s, NULL);
    if (!rc) {
        pthread_mutex_lock(&s.mu);
        while (!s.done)
            pthread_cond_wait(&s.cv, &s.mu);
        pthread_mutex_unlock(&s.mu);
        if (status_out)
            *status_out = s.status;
        if (body_out)
            *body_out = s.body;
        else
            free(s.body);
    }
    cps_buf_free(&s.last_error);
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
    return rc;
}

/* ---- introspection ---- */

COMPASS_API char *compass_engine_models_json(compass_engine *e)
{
    cps_gen *g = gen_current(e);
    cps_buf b;
    cps_buf_init(&b);
    cps_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    int first = 1;
    for (size_t i = 0; g && i < g->n_routes; i++) {
        cps_route *r = &g->routes[i];
        if (!r->n)
            continue;
        cps_buf_puts(&b, first ? "{\"id\":" : ",{\"id\":");
        cps_buf_json_str(&b, r->name, strlen(r->name));
        cps_buf_puts(&b, ",\"object\":\"model\",\"created\":0,\"owned_by\":");
        const char *owner = r->implicit ? r->targets[0]->dep->cfg->name : "compass";
        cps_buf_json_str(&b, owner, strlen(owner));
        cps_buf_printf(&b, ",\"compass\":{\"kind\":\"%s\",\"candidates\":[",
                       r->implicit ? "model" : "route");
        for (size_t k = 0; k < r->n; k++) {
            if (k)
                cps_buf_puts(&b, ",");
            cps_buf_json_str(&b, r->targets[k]->id, strlen(r->targets[k]->id));
        }
        cps_buf_puts(&b, "]}}");
        first = 0;
    }
    cps_buf_puts(&b, "]}");
    cps_gen_unref(g);
    if (b.oom) {
        cps_buf_free(&b);
        return NULL;
    }
    return b.ptr;
}

COMPASS_API char *compass_engine_providers_json(compass_engine *e)
{
    cps_gen *g = gen_current(e);
    cps_buf b;
    cps_buf_init(&b);
    cps_buf_puts(&b, "{\"providers\":[");
    for (size_t i = 0; g && i < g->n_deps; i++) {
        cps_deployment *d = &g->deps[i];
        cps_buf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
        cps_buf_json_str(&b, d->cfg->name, strlen(d->cfg->name));
        cps_buf_puts(&b, ",\"plugin\":");
        cps_buf_json_str(&b, d->cfg->plugin, strlen(d->cfg->plugin));
        cps_buf_printf(&b, ",\"enabled\":%s", d->enabled ? "true" : "false");
        if (!d->enabled) {
            cps_buf_puts(&b, ",\"disabled_reason\":");
            cps_buf_json_str(&b, d->disabled_reason, strlen(d->disabled_reason));
        }
        cps_buf_printf(&b, ",\"standby\":%s,\"models\":[", d->cfg->standby ? "true" : "false");
        int first = 1;
        for (size_t t = 0; t < g->n_targets; t++) {
            cps_target *x = &g->targets[t];
            if (x->dep != d)
                continue;
            cps_stats *s = x->stats;
            pthread_mutex_lock(&s->mu);
            cps_buf_puts(&b, first ? "{\"model\":" : ",{\"model\":");
            cps_buf_json_str(&b, x->model, strlen(x->model));
            cps_buf_printf(&b, ",\"state\":\"%s\",\"in_flight\":%ld,\"requests_ok\":%llu,"
                           "\"requests_failed\":%llu,\"consecutive_failures\":%d,"
                           "\"latency_ewma_ms\":%.3f,\"ttft_ewma_ms\":%.3f,"
                           "\"error_rate\":%.4f,\"breaker_trips\":%d",
                           s->consecutive_fail ? "degraded" : "healthy",
                           atomic_load(&s->in_flight), s->ok, s->fail, s->consecutive_fail,
                           s->ewma_ms, s->ewma_ttft_ms, s->err_ewma, s->trips);
            pthread_mutex_unlock(&s->mu);
            cps_buf_printf(&b, ",\"breaker\":\"%s\"}",
                           cps_breaker_name(cps_breaker_state(s, &d->cfg->breaker,
                                                              cps_now_ns())));
            first = 0;
        }
        cps_buf_puts(&b, "]}");
    }
    cps_buf_puts(&b, "]}");
    cps_gen_unref(g);
    if (b.oom) {
        cps_buf_free(&b);
        return NULL;
    }
    return b.ptr;
}

COMPASS_API char *compass_engine_metrics_text(compass_engine *e)
{
    cps_buf b;
    cps_buf_init(&b);
    cps_metrics_set(e->metrics, "compass_active_tasks", NULL, (double)atomic_load(&e->in_flight));
    if (cps_metrics_render(e->metrics, &b) || !b.ptr) {
        cps_buf_free(&b);
        char *empty = malloc(1);
        if (empty)
            *empty = '\0';
        return empty;
    }
    return b.ptr;
}

COMPASS_API int compass_engine_server_config(compass_engine *e, char *host, size_t host_cap,
                                             int *port, long *max_body_bytes, int *threads,
                                             long *max_connections, int *drain_seconds,
                                             int *log_requests)
{
    cps_gen *g = gen_current(e);
    if (!g)
        return COMPASS_EPHASE;
    const cps_config *c = g->cfg;
    if (host)
        snprintf(host, host_cap, "%s", c->listen_host);
    if (port)
        *port = c->listen_port;
    if (max_body_bytes)
        *max_body_bytes = (long)c->max_body_bytes;
    if (threads)
        *threads = c->threads;
    if (max_connections)
        *max_connections = (long)c->max_connections;
    if (drain_seconds)
        *drain_seconds = c->drain_seconds;
    if (log_requests)
        *log_requests = c->log_requests;
    cps_gen_unref(g);
    return 0;
}
