/* compassd.conf: libconfig text checked against a schema, with file:line errors. */
#ifndef COMPASS_CORE_CONFIG_H
#define COMPASS_CORE_CONFIG_H

#include <libconfig.h>
#include <stdint.h>

#include <compass/plugin.h>

typedef struct cps_timeouts {
    int64_t connect_ms, first_byte_ms, idle_ms, total_ms;
} cps_timeouts;

/* Circuit breaker per deployment/model (DESIGN: 20% over 60 s with a minimum volume, or 5
 * consecutive failures; cooldown 1 min -> 5 min -> 15 min -> 1 h; 3 successes close it). */
typedef struct cps_breaker_cfg {
    int enabled;
    double failure_rate;
    int64_t window_ms;
    int64_t min_volume;
    int64_t consecutive;
    int64_t cooldowns_ms[8];
    size_t n_cooldowns;
    int64_t half_open_successes;
} cps_breaker_cfg;

typedef struct cps_cfg_deployment {
    const char *name;
    const char *plugin;
    const char *base_url;     /* may be NULL */
    const char *api_key_env;  /* may be NULL */
    const char **models;
    size_t n_models;
    int standby;
    double weight;
    int tier;
    double price_in, price_out;
    int64_t capacity;
    int64_t context_window;
    unsigned caps;
    cps_timeouts timeouts;    /* server defaults where not overridden */
    cps_breaker_cfg breaker;  /* server defaults where not overridden */
    int64_t health_check_ms;  /* 0: off; else probe each model this often */
    config_setting_t *options; /* may be NULL */
    const char *file;
    int line;
} cps_cfg_deployment;

typedef struct cps_cfg_route {
    const char *name;
    const char *strategy;     /* router plugin name, or "priority" (built in) */
    const char **candidates;  /* "deployment/model" */
    size_t n_candidates;
    int max_attempts;         /* 0: one per candidate per round */
    int retries;              /* extra rounds over the candidates after all failed */
    int64_t backoff_ms;       /* base of the exponential backoff between rounds */
    int64_t backoff_max_ms;   /* cap, also for Retry-After */
    int64_t deadline_ms;      /* overall deadline for the request; 0: none */
    int64_t hedge_ms;         /* 0: no hedging; >0: fixed delay; -1: the candidate's p95 TTFT */
    config_setting_t *options;
    const char *file;
    int line;
} cps_cfg_route;

typedef struct cps_config {
    config_t cfg;
    char *path;               /* file it came from, or "<string>" */
    const char *listen_host;
    int listen_port;
    int64_t max_body_bytes;
    int threads;
    int64_t max_connections;
    int drain_seconds;
    int log_requests;
    const char *log_level;
    cps_timeouts timeouts;
    cps_breaker_cfg breaker;
    const char **plugin_paths;
    size_t n_plugin_paths;
    config_setting_t *plugin_settings; /* plugins.settings: per-plugin global groups */
    cps_cfg_deployment *deployments;
    size_t n_deployments;
    cps_cfg_route *routes;
    size_t n_routes;
} cps_config;

/** Loads and checks a config file. On error returns NULL with err->msg "file:line: ...". */
cps_config *cps_config_load_file(const char *path, compass_err *err);
/** Same, from text (errors say "<string>:line"); base_dir is reserved and unused: relative
 *  plugin paths in config text resolve against the working directory. */
cps_config *cps_config_load_string(const char *text, const char *base_dir, compass_err *err);
void cps_config_free(cps_config *c);

#endif
