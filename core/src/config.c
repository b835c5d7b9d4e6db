/* Reads compassd.conf with libconfig and checks it against the schema below: unknown keys,
 * wrong types and bad values are refused with "file:line: path: what is wrong". */
#include "config.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cfail(compass_err *err, const config_setting_t *s, const char *fallback_file,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int cfail(compass_err *err, const config_setting_t *s, const char *fallback_file,
                 const char *fmt, ...)
{
    if (!err)
        return COMPASS_ECONFIG;
    const char *file = s ? config_setting_source_file(s) : NULL;
    int line = s ? (int)config_setting_source_line(s) : 0;
    int n = snprintf(err->msg, sizeof(err->msg), "%s:%d: ", file ? file : fallback_file, line);
    if (n < 0 || (size_t)n >= sizeof(err->msg))
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg + n, sizeof(err->msg) - (size_t)n, fmt, ap);
    va_end(ap);
    err->code = COMPASS_ECONFIG;
    return COMPASS_ECONFIG;
}

/* Edit distance, for "did you mean" on unknown keys. */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), prev[64], cur[64];
    if (la >= 63 || lb >= 63)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, sizeof(size_t) * (lb + 1));
    }
    return prev[lb];
}

struct ctx {
    cps_config *c;
    compass_err *err;
    const char *file;
};

static int check_keys(struct ctx *x, const config_setting_t *g, const char *path,
                      const char *const *allowed)
{
    int n = config_setting_length(g);
    for (int i = 0; i < n; i++) {
        config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(s);
        if (!name)
            continue;
        int ok = 0;
        const char *best = NULL;
        size_t bestd = 3;
        for (const char *const *k = allowed; *k; k++) {
            if (!strcmp(*k, name)) {
                ok = 1;
                break;
            }
            size_t d = distance(*k, name);
            if (d < bestd) {
                bestd = d;
                best = *k;
            }
        }
        if (!ok) {
            if (best)
                return cfail(x->err, s, x->file, "%s: unknown key '%s' (did you mean '%s'?)",
                             path, name, best);
            return cfail(x->err, s, x->file, "%s: unknown key '%s'", path, name);
        }
    }
    return 0;
}

static int want_group(struct ctx *x, const config_setting_t *s, const char *path)
{
    if (config_setting_type(s) != CONFIG_TYPE_GROUP)
        return cfail(x->err, s, x->file, "%s: expected a group { ... }", path);
    return 0;
}

static int get_str(struct ctx *x, const config_setting_t *g, const char *key, const char *path,
                   int required, const char **out)
{
    config_setting_t *s = config_setting_get_member(g, key);
    if (!s) {
        if (required)
            return cfail(x->err, g, x->file, "%s.%s: required", path, key);
        return 0;
    }
    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return cfail(x->err, s, x->file, "%s.%s: expected a string", path, key);
    *out = config_setting_get_string(s);
    if (required && !**out)
        return cfail(x->err, s, x->file, "%s.%s: must not be empty", path, key);
    return 0;
}

static int get_int(struct ctx *x, const config_setting_t *g, const char *key, const char *path,
                   int64_t lo, int64_t hi, int64_t *out)
{
    config_setting_t *s = config_setting_get_member(g, key);
    if (!s)
        return 0;
    int t = config_setting_type(s);
    if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
        return cfail(x->err, s, x->file, "%s.%s: expected an integer", path, key);
    long long v = config_setting_get_int64(s);
    if (v < lo || v > hi)
        return cfail(x->err, s, x->file, "%s.%s: %lld is out of range [%lld, %lld]", path, key, v,
                     (long long)lo, (long long)hi);
    *out = v;
    return 0;
}

static int get_double(struct ctx *x, const config_setting_t *g, const char *key,
                      const char *path, double lo, double hi, double *out)
{
    config_setting_t *s = config_setting_get_member(g, key);
    if (!s)
        return 0;
    int t = config_setting_type(s);
    double v;
    if (t == CONFIG_TYPE_FLOAT)
        v = config_setting_get_float(s);
    else if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64)
        v = (double)config_setting_get_int64(s);
    else
        return cfail(x->err, s, x->file, "%s.%s: expected a number", path, key);
    if (!(v >= lo && v <= hi))
        return cfail(x->err, s, x->file, "%s.%s: %g is out of range [%g, %g]", path, key, v, lo,
                     hi);
    *out = v;
    return 0;
}

static int get_bool(struct ctx *x, const config_setting_t *g, const char *key, const char *path,
                    int *out)
{
    config_setting_t *s = config_setting_get_member(g, key);
    if (!s)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_BOOL)
        return cfail(x->err, s, x->file, "%s.%s: expected true or false", path, key);
    *out = config_setting_get_bool(s);
    return 0;
}

/* A list or array of strings; the returned array is malloc'd, the strings are libconfig's. */
static int get_str_list(struct ctx *x, const config_setting_t *g, const char *key,
                        const char *path, int required, const char ***out, size_t *n_out)
{
    config_setting_t *s = config_setting_get_member(g, key);
    *out = NULL;
    *n_out = 0;
    if (!s) {
        if (required)
            return cfail(x->err, g, x->file, "%s.%s: required", path, key);
        return 0;
    }
    int t = config_setting_type(s);
    if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
        return cfail(x->err, s, x->file, "%s.%s: expected a list of strings [\"a\", \"b\"]", path,
                     key);
    int n = config_setting_length(s);
    if (required && n == 0)
        return cfail(x->err, s, x->file, "%s.%s: must not be empty", path, key);
    const char **arr = calloc((size_t)n + 1, sizeof(*arr));
    if (!arr)
        return compass_err_set(x->err, COMPASS_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            free(arr);
            return cfail(x->err, e, x->file, "%s.%s[%d]: expected a string", path, key, i);
        }
        arr[i] = config_setting_get_string(e);
    }
    *out = arr;
    *n_out = (size_t)n;
    return 0;
}

static const char *const timeout_keys[] = {"connect_ms", "first_byte_ms", "idle_ms", "total_ms",
                                           NULL};

static int read_timeouts(struct ctx *x, const config_setting_t *parent, const char *path,
                         cps_timeouts *t)
{
    config_setting_t *g = config_setting_get_member(parent, "timeouts");
    char p[128];
    int rc;
    if (!g)
        return 0;
    snprintf(p, sizeof(p), "%s.timeouts", path);
    if ((rc = want_group(x, g, p)) || (rc = check_keys(x, g, p, timeout_keys)) ||
        (rc = get_int(x, g, "connect_ms", p, 1, 600000, &t->connect_ms)) ||
        (rc = get_int(x, g, "first_byte_ms", p, 1, 3600000, &t->first_byte_ms)) ||
        (rc = get_int(x, g, "idle_ms", p, 1, 3600000, &t->idle_ms)) ||
        (rc = get_int(x, g, "total_ms", p, 1, 86400000, &t->total_ms)))
        return rc;
    return 0;
}

static const char *const breaker_keys[] = {"enabled", "failure_rate", "window_ms",
                                           "min_volume", "consecutive_failures", "cooldowns_ms",
                                           "half_open_successes", NULL};

static int read_breaker(struct ctx *x, const config_setting_t *parent, const char *path,
                        cps_breaker_cfg *b)
{
    config_setting_t *g = config_setting_get_member(parent, "breaker");
    char p[128];
    int rc;
    if (!g)
        return 0;
    snprintf(p, sizeof(p), "%s.breaker", path);
    if ((rc = want_group(x, g, p)) || (rc = check_keys(x, g, p, breaker_keys)) ||
        (rc = get_bool(x, g, "enabled", p, &b->enabled)) ||
        (rc = get_double(x, g, "failure_rate", p, 0.01, 1.0, &b->failure_rate)) ||
        (rc = get_int(x, g, "window_ms", p, 100, 86400000, &b->window_ms)) ||
        (rc = get_int(x, g, "min_volume", p, 1, 1000000, &b->min_volume)) ||
        (rc = get_int(x, g, "consecutive_failures", p, 1, 1000, &b->consecutive)) ||
        (rc = get_int(x, g, "half_open_successes", p, 1, 1000, &b->half_open_successes)))
        return rc;
    config_setting_t *cd = config_setting_get_member(g, "cooldowns_ms");
    if (cd) {
        int t = config_setting_type(cd);
        int n = (t == CONFIG_TYPE_ARRAY || t == CONFIG_TYPE_LIST) ? config_setting_length(cd) : -1;
        if (n < 1 || n > 8)
            return cfail(x->err, cd, x->file, "%s.cooldowns_ms: expected a list of 1 to 8 "
                         "integers, e.g. [60000, 300000, 900000, 3600000]", p);
        for (int i = 0; i < n; i++) {
            config_setting_t *e = config_setting_get_elem(cd, (unsigned)i);
            int et = config_setting_type(e);
            long long v = (et == CONFIG_TYPE_INT || et == CONFIG_TYPE_INT64)
                              ? config_setting_get_int64(e)
                              : -1;
            if (v < 1 || v > 86400000)
                return cfail(x->err, e, x->file, "%s.cooldowns_ms[%d]: expected an integer in "
                             "[1, 86400000]", p, i);
            b->cooldowns_ms[i] = v;
        }
        b->n_cooldowns = (size_t)n;
    }
    return 0;
}

static int valid_name(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.' || *s == ':'))
            return 0;
    return 1;
}

static const char *const server_keys[] = {"listen", "max_body_bytes", "threads",
                                          "max_connections", "drain_seconds", "log_requests",
                                          "log_level", "timeouts", "breaker", NULL};
static const char *const plugins_keys[] = {"paths", "settings", NULL};
static const char *const dep_keys[] = {"name", "plugin", "base_url", "api_key_env", "models",
                                       "standby", "weight", "tier", "price_in", "price_out",
                                       "capacity", "context_window", "capabilities", "timeouts",
                                       "breaker", "health_check_ms", "options", NULL};
static const char *const route_keys[] = {"name", "strategy", "candidates", "max_attempts",
                                         "retries", "backoff_ms", "backoff_max_ms",
                                         "deadline_ms", "hedge", "options", NULL};
static const char *const top_keys[] = {"server", "plugins", "deployments", "routes", NULL};

static int read_server(struct ctx *x, config_setting_t *root)
{
    cps_config *c = x->c;
    config_setting_t *g = config_setting_get_member(root, "server");
    int rc;
    if (!g)
        return 0;
    if ((rc = want_group(x, g, "server")) || (rc = check_keys(x, g, "server", server_keys)))
        return rc;
    const char *listen = NULL;
    if ((rc = get_str(x, g, "listen", "server", 0, &listen)))
        return rc;
    if (listen) {
        const char *colon = strrchr(listen, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : -1;
        if (!colon || colon == listen || !colon[1] || !end || *end || port < 0 || port > 65535)
            return cfail(x->err, config_setting_get_member(g, "listen"), x->file,
                         "server.listen: '%s' is not host:port (e.g. \"127.0.0.1:8080\")",
                         listen);
        size_t hl = (size_t)(colon - listen);
        char *host = malloc(hl + 1);
        if (!host)
            return compass_err_set(x->err, COMPASS_ENOMEM, "out of memory");
        memcpy(host, listen, hl);
        host[hl] = '\0';
        c->listen_host = host;
        c->listen_port = (int)port;
    }
    int64_t threads = c->threads, drain = c->drain_seconds;
    if ((rc = get_int(x, g, "max_body_bytes", "server", 1024, (int64_t)1 << 30,
                      &c->max_body_bytes)) ||
        (rc = get_int(x, g, "threads", "server", 0, 64, &threads)) ||
        (rc = get_int(x, g, "max_connections", "server", 16, 1000000, &c->max_connections)) ||
        (rc = get_int(x, g, "drain_seconds", "server", 0, 3600, &drain)) ||
        (rc = get_bool(x, g, "log_requests", "server", &c->log_requests)) ||
        (rc = get_str(x, g, "log_level", "server", 0, &c->log_level)) ||
        (rc = read_timeouts(x, g, "server", &c->timeouts)) ||
        (rc = read_breaker(x, g, "server", &c->breaker)))
        return rc;
    c->threads = (int)threads;
    c->drain_seconds = (int)drain;
    if (strcmp(c->log_level, "error") && strcmp(c->log_level, "warn") &&
        strcmp(c->log_level, "info") && strcmp(c->log_level, "debug"))
        return cfail(x->err, config_setting_get_member(g, "log_level"), x->file,
                     "server.log_level: '%s' is not one of error, warn, info, debug",
                     c->log_level);
    return 0;
}

static int read_plugins(struct ctx *x, config_setting_t *root)
{
    config_setting_t *g = config_setting_get_member(root, "plugins");
    int rc;
    if (!g)
        return 0;
    if ((rc = want_group(x, g, "plugins")) || (rc = check_keys(x, g, "plugins", plugins_keys)) ||
        (rc = get_str_list(x, g, "paths", "plugins", 0, &x->c->plugin_paths,
                           &x->c->n_plugin_paths)))
        return rc;
    config_setting_t *s = config_setting_get_member(g, "settings");
    if (s) {
        if ((rc = want_group(x, s, "plugins.settings")))
            return rc;
        x->c->plugin_settings = s;
    }
    return 0;
}

static int parse_caps(struct ctx *x, config_setting_t *g, const char *path, unsigned *caps)
{
    const char **list;
    size_t n;
    int rc = get_str_list(x, g, "capabilities", path, 0, &list, &n);
    if (rc)
        return rc;
    if (!list)
        return 0;
    *caps = 0;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(list[i], "tools"))
            *caps |= COMPASS_CAP_TOOLS;
        else if (!strcmp(list[i], "vision"))
            *caps |= COMPASS_CAP_VISION;
        else if (!strcmp(list[i], "json"))
            *caps |= COMPASS_CAP_JSON;
        else if (!strcmp(list[i], "stream"))
            *caps |= COMPASS_CAP_STREAM;
        else {
            config_setting_t *s = config_setting_get_member(g, "capabilities");
            cfail(x->err, s, x->file,
                  "%s.capabilities: '%s' is not one of tools, vision, json, stream", path,
                  list[i]);
            free(list);
            return COMPASS_ECONFIG;
        }
    }
    free(list);
    return 0;
}

static int read_deployments(struct ctx *x, config_setting_t *root)
{
    cps_config *c = x->c;
    config_setting_t *l = config_setting_get_member(root, "deployments");
    if (!l)
        return 0;
    if (config_setting_type(l) != CONFIG_TYPE_LIST)
        return cfail(x->err, l, x->file, "deployments: expected a list ( {...}, {...} )");
    int n = config_setting_length(l);
    c->deployments = calloc((size_t)n + 1, sizeof(*c->deployments));
    if (!c->deployments)
        return compass_err_set(x->err, COMPASS_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        config_setting_t *g = config_setting_get_elem(l, (unsigned)i);
        cps_cfg_deployment *d = &c->deployments[i];
        char path[64];
        int rc;
        snprintf(path, sizeof(path), "deployments[%d]", i);
        c->n_deployments = (size_t)i + 1;
        d->timeouts = c->timeouts;
        d->breaker = c->breaker;
        d->weight = 1;
        d->caps = COMPASS_CAP_TOOLS | COMPASS_CAP_VISION | COMPASS_CAP_JSON | COMPASS_CAP_STREAM;
        d->file = config_setting_source_file(g) ? config_setting_source_file(g) : x->file;
        d->line = (int)config_setting_source_line(g);
        int64_t tier = 0;
        if ((rc = want_group(x, g, path)) || (rc = check_keys(x, g, path, dep_keys)) ||
            (rc = get_str(x, g, "name", path, 1, &d->name)) ||
            (rc = get_str(x, g, "plugin", path, 1, &d->plugin)) ||
            (rc = get_str(x, g, "base_url", path, 0, &d->base_url)) ||
            (rc = get_str(x, g, "api_key_env", path, 0, &d->api_key_env)) ||
            (rc = get_str_list(x, g, "models", path, 1, &d->models, &d->n_models)) ||
            (rc = get_bool(x, g, "standby", path, &d->standby)) ||
            (rc = get_double(x, g, "weight", path, 0, 1e6, &d->weight)) ||
            (rc = get_int(x, g, "tier", path, 0, 4, &tier)) ||
            (rc = get_double(x, g, "price_in", path, 0, 1e6, &d->price_in)) ||
            (rc = get_double(x, g, "price_out", path, 0, 1e6, &d->price_out)) ||
            (rc = get_int(x, g, "capacity", path, 0, INT32_MAX, &d->capacity)) ||
            (rc = get_int(x, g, "context_window", path, 0, INT64_MAX / 2, &d->context_window)) ||
            (rc = parse_caps(x, g, path, &d->caps)) ||
            (rc = read_timeouts(x, g, path, &d->timeouts)) ||
            (rc = read_breaker(x, g, path, &d->breaker)) ||
            (rc = get_int(x, g, "health_check_ms", path, 0, 86400000, &d->health_check_ms)))
            return rc;
        d->tier = (int)tier;
        if (!valid_name(d->name))
            return cfail(x->err, config_setting_get_member(g, "name"), x->file,
                         "%s.name: '%s' may only hold letters, digits, '-', '_', '.', ':'", path,
                         d->name);
        for (int j = 0; j < i; j++)
            if (!strcmp(c->deployments[j].name, d->name))
                return cfail(x->err, config_setting_get_member(g, "name"), x->file,
                             "%s.name: '%s' is already used by deployments[%d]", path, d->name,
                             j);
        if (d->base_url && strncmp(d->base_url, "http://", 7) && strncmp(d->base_url, "https://", 8))
            return cfail(x->err, config_setting_get_member(g, "base_url"), x->file,
                         "%s.base_url: '%s' must start with http:// or https://", path,
                         d->base_url);
        config_setting_t *o = config_setting_get_member(g, "options");
        if (o) {
            char p2[80];
            snprintf(p2, sizeof(p2), "%s.options", path);
            if ((rc = want_group(x, o, p2)))
                return rc;
            d->options = o;
        }
    }
    return 0;
}

static const cps_cfg_deployment *find_dep(const cps_config *c, const char *name, size_t len)
{
    for (size_t i = 0; i < c->n_deployments; i++)
        if (strlen(c->deployments[i].name) == len && !memcmp(c->deployments[i].name, name, len))
            return &c->deployments[i];
    return NULL;
}

static int read_routes(struct ctx *x, config_setting_t *root)
{
    cps_config *c = x->c;
    config_setting_t *l = config_setting_get_member(root, "routes");
    if (!l)
        return 0;
    if (config_setting_type(l) != CONFIG_TYPE_LIST)
        return cfail(x->err, l, x->file, "routes: expected a list ( {...}, {...} )");
    int n = config_setting_length(l);
    c->routes = calloc((size_t)n + 1, sizeof(*c->routes));
    if (!c->routes)
        return compass_err_set(x->err, COMPASS_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        config_setting_t *g = config_setting_get_elem(l, (unsigned)i);
        cps_cfg_route *r = &c->routes[i];
        char path[64];
        int rc;
        int64_t max_attempts = 0;
        snprintf(path, sizeof(path), "routes[%d]", i);
        c->n_routes = (size_t)i + 1;
        r->strategy = "priority";
        r->file = config_setting_source_file(g) ? config_setting_source_file(g) : x->file;
        r->line = (int)config_setting_source_line(g);
        if ((rc = want_group(x, g, path)) || (rc = check_keys(x, g, path, route_keys)) ||
            (rc = get_str(x, g, "name", path, 1, &r->name)) ||
            (rc = get_str(x, g, "strategy", path, 0, &r->strategy)) ||
            (rc = get_str_list(x, g, "candidates", path, 1, &r->candidates, &r->n_candidates)) ||
            (rc = get_int(x, g, "max_attempts", path, 0, 100, &max_attempts)))
            return rc;
        int64_t retries = 0;
        r->backoff_ms = 200;
        r->backoff_max_ms = 10000;
        if ((rc = get_int(x, g, "retries", path, 0, 10, &retries)) ||
            (rc = get_int(x, g, "backoff_ms", path, 1, 600000, &r->backoff_ms)) ||
            (rc = get_int(x, g, "backoff_max_ms", path, 1, 3600000, &r->backoff_max_ms)) ||
            (rc = get_int(x, g, "deadline_ms", path, 0, 86400000, &r->deadline_ms)))
            return rc;
        r->retries = (int)retries;
        r->max_attempts = (int)max_attempts;
        config_setting_t *hs = config_setting_get_member(g, "hedge");
        if (hs) {
            int ht = config_setting_type(hs);
            if (ht == CONFIG_TYPE_STRING && !strcmp(config_setting_get_string(hs), "p95"))
                r->hedge_ms = -1;
            else if ((ht == CONFIG_TYPE_INT || ht == CONFIG_TYPE_INT64) &&
                     config_setting_get_int64(hs) >= 0 && config_setting_get_int64(hs) <= 600000)
                r->hedge_ms = config_setting_get_int64(hs);
            else
                return cfail(x->err, hs, x->file, "%s.hedge: expected a delay in milliseconds "
                             "(0 turns hedging off) or \"p95\"", path);
        }
        if (!valid_name(r->name))
            return cfail(x->err, config_setting_get_member(g, "name"), x->file,
                         "%s.name: '%s' may only hold letters, digits, '-', '_', '.', ':'", path,
                         r->name);
        for (int j = 0; j < i; j++)
            if (!strcmp(c->routes[j].name, r->name))
                return cfail(x->err, config_setting_get_member(g, "name"), x->file,
                             "%s.name: '%s' is already used by routes[%d]", path, r->name, j);
        config_setting_t *cl = config_setting_get_member(g, "candidates");
        for (size_t k = 0; k < r->n_candidates; k++) {
            const char *cand = r->candidates[k];
            const char *slash = strchr(cand, '/');
            config_setting_t *e = config_setting_get_elem(cl, (unsigned)k);
            if (!slash || slash == cand || !slash[1])
                return cfail(x->err, e, x->file,
                             "%s.candidates[%zu]: '%s' is not \"deployment/model\"", path, k,
                             cand);
            const cps_cfg_deployment *d = find_dep(c, cand, (size_t)(slash - cand));
            if (!d)
                return cfail(x->err, e, x->file,
                             "%s.candidates[%zu]: no deployment named '%.*s'", path, k,
                             (int)(slash - cand), cand);
            size_t m;
            for (m = 0; m < d->n_models; m++)
                if (!strcmp(d->models[m], slash + 1))
                    break;
            if (m == d->n_models)
                return cfail(x->err, e, x->file,
                             "%s.candidates[%zu]: deployment '%s' does not serve model '%s'",
                             path, k, d->name, slash + 1);
        }
        config_setting_t *o = config_setting_get_member(g, "options");
        if (o) {
            char p2[80];
            snprintf(p2, sizeof(p2), "%s.options", path);
            if ((rc = want_group(x, o, p2)))
                return rc;
            r->options = o;
        }
    }
    return 0;
}

static int check(cps_config *c, compass_err *err)
{
    struct ctx x = {c, err, c->path};
    config_setting_t *root = config_root_setting(&c->cfg);
    int rc;
    c->listen_host = NULL;
    c->listen_port = 8080;
    c->max_body_bytes = 1 << 20;
    c->threads = 0; /* one event loop per online CPU */
    c->max_connections = 20000;
    c->drain_seconds = 30;
    c->log_requests = 1;
    c->log_level = "info";
    c->timeouts.connect_ms = 5000;
    c->timeouts.first_byte_ms = 60000;
    c->timeouts.idle_ms = 60000;
    c->timeouts.total_ms = 600000;
    c->breaker.enabled = 1;
    c->breaker.failure_rate = 0.2;
    c->breaker.window_ms = 60000;
    c->breaker.min_volume = 10;
    c->breaker.consecutive = 5;
    c->breaker.cooldowns_ms[0] = 60000;
    c->breaker.cooldowns_ms[1] = 300000;
    c->breaker.cooldowns_ms[2] = 900000;
    c->breaker.cooldowns_ms[3] = 3600000;
    c->breaker.n_cooldowns = 4;
    c->breaker.half_open_successes = 3;
    if ((rc = check_keys(&x, root, "config", top_keys)) || (rc = read_server(&x, root)) ||
        (rc = read_plugins(&x, root)) || (rc = read_deployments(&x, root)) ||
        (rc = read_routes(&x, root)))
        return rc;
    if (!c->listen_host) {
        c->listen_host = strdup("127.0.0.1");
        if (!c->listen_host)
            return compass_err_set(err, COMPASS_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < c->n_routes; i++)
        for (size_t j = 0; j < c->n_deployments; j++)
            for (size_t m = 0; m < c->deployments[j].n_models; m++)
                if (!strcmp(c->routes[i].name, c->deployments[j].models[m])) {
                    snprintf(err->msg, sizeof(err->msg),
                             "%s:%d: routes[%zu].name: '%s' is also a model of deployment "
                             "'%s'; a route name must not shadow a model",
                             c->routes[i].file, c->routes[i].line, i, c->routes[i].name,
                             c->deployments[j].name);
                    return err->code = COMPASS_ECONFIG;
                }
    return 0;
}

static cps_config *finish_load(cps_config *c, int parsed, compass_err *err)
{
    if (!parsed) {
        if (err) {
            const char *f = config_error_file(&c->cfg);
            snprintf(err->msg, sizeof(err->msg), "%s:%d: %s", f ? f : c->path,
                     config_error_line(&c->cfg), config_error_text(&c->cfg));
            err->code = COMPASS_ECONFIG;
        }
        cps_config_free(c);
        return NULL;
    }
    if (check(c, err)) {
        cps_config_free(c);
        return NULL;
    }
    return c;
}

static cps_config *new_config(const char *path)
{
    cps_config *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    config_init(&c->cfg);
    config_set_options(&c->cfg, 0); /* no autoconvert: types are checked */
    c->path = strdup(path);
    if (!c->path) {
        config_destroy(&c->cfg);
        free(c);
        return NULL;
    }
    return c;
}

cps_config *cps_config_load_file(const char *path, compass_err *err)
{
    cps_config *c = new_config(path);
    if (!c) {
        compass_err_set(err, COMPASS_ENOMEM, "out of memory");
        return NULL;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        if (err) {
            snprintf(err->msg, sizeof(err->msg), "%s: cannot open config file", path);
            err->code = COMPASS_ENOTFOUND;
        }
        cps_config_free(c);
        return NULL;
    }
    fclose(f);
    return finish_load(c, config_read_file(&c->cfg, path) == CONFIG_TRUE, err);
}

cps_config *cps_config_load_string(const char *text, const char *base_dir, compass_err *err)
{
    (void)base_dir;
    cps_config *c = new_config("<string>");
    if (!c) {
        compass_err_set(err, COMPASS_ENOMEM, "out of memory");
        return NULL;
    }
    return finish_load(c, config_read_string(&c->cfg, text) == CONFIG_TRUE, err);
}

void cps_config_free(cps_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_deployments; i++)
        free(c->deployments[i].models);
    for (size_t i = 0; i < c->n_routes; i++)
        free(c->routes[i].candidates);
    free(c->deployments);
    free(c->routes);
    free(c->plugin_paths);
    free((char *)c->listen_host);
    config_destroy(&c->cfg);
    free(c->path);
    free(c);
}
