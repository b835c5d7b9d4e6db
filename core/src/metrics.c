/* One mutex over a hash table: metrics are updated once per request, not per byte. */
#include "metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBUCKETS 14
static const double bounds[NBUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1,     2.5,  5,     10,   30,  60,  120};

enum { COUNTER = CPS_METRIC_COUNTER, GAUGE = CPS_METRIC_GAUGE, HISTOGRAM = CPS_METRIC_HISTOGRAM };

struct cps_metric {
    struct cps_metric *next;
    char *name, *labels;
    int type;
    double value, sum;
    unsigned long long count, buckets[NBUCKETS];
};

struct cps_metrics {
    pthread_mutex_t mu;
    struct cps_metric *tab[512];
    size_t n;
};

static const struct {
    const char *name, *help;
} helps[] = {
    {"compass_requests_total", "Chat requests answered, by deployment, model and HTTP status."},
    {"compass_requests_duration_seconds", "Time from request to last byte, by deployment."},
    {"compass_tokens_total", "Tokens counted, by deployment, model and type (prompt/completion)."},
    {"compass_active_tasks", "Requests in flight."},
    {"compass_upstream_attempts_total", "Upstream attempts, by deployment, model and outcome."},
    {"compass_failover_total", "Requests that moved to another candidate after a failure."},
    {"compass_router_errors_total", "Router plugin failures that fell back to priority order."},
    {"compass_lua_errors_total", "Lua policy failures that fell back to the default strategy."},
    {"compass_hedges_total", "Hedged requests, by route and which attempt won."},
    {"compass_health_checks_total", "Active health checks, by deployment, model and result."},
    {"compass_loop_requests_total", "Requests answered by each event loop (its balance)."},
    {"compass_circuit_breaker_state", "Breaker per deployment/model: 0 closed, 1 open, 2 half-open."},
};

cps_metrics *cps_metrics_new(void)
{
    cps_metrics *m = calloc(1, sizeof(*m));
    if (m)
        pthread_mutex_init(&m->mu, NULL);
    return m;
}

void cps_metrics_free(cps_metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < 512; i++) {
        struct cps_metric *e = m->tab[i];
        while (e) {
            struct cps_metric *n = e->next;
            free(e->name);
            free(e->labels);
            free(e);
            e = n;
        }
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

int cps_metrics_valid_name(const char *s)
{
    if (!s || !*s || (*s >= '0' && *s <= '9'))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == ':'))
            return 0;
    return 1;
}

static unsigned hash2(const char *a, const char *b)
{
    unsigned h = 2166136261u;
    for (; *a; a++)
        h = (h ^ (unsigned char)*a) * 16777619u;
    h = (h ^ '{') * 16777619u;
    for (; b && *b; b++)
        h = (h ^ (unsigned char)*b) * 16777619u;
    return h;
}

/* Called with the mutex held. */
static struct cps_metric *get(cps_metrics *m, const char *name, const char *labels, int type)
{
    if (!labels)
        labels = "";
    unsigned h = hash2(name, labels) % 512;
    for (struct cps_metric *e = m->tab[h]; e; e = e->next)
        if (!strcmp(e->name, name) && !strcmp(e->labels, labels))
            return e->type == type ? e : NULL;
    struct cps_metric *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->name = strdup(name);
    e->labels = strdup(labels);
    if (!e->name || !e->labels) {
        free(e->name);
        free(e->labels);
        free(e);
        return NULL;
    }
    e->type = type;
    e->next = m->tab[h];
    m->tab[h] = e;
    m->n++;
    return e;
}

void cps_metrics_add(cps_metrics *m, const char *name, const char *labels, double delta)
{
    pthread_mutex_lock(&m->mu);
    struct cps_metric *e = get(m, name, labels, COUNTER);
    if (e)
        e->value += delta;
    pthread_mutex_unlock(&m->mu);
}

void cps_metrics_set(cps_metrics *m, const char *name, const char *labels, double value)
{
    pthread_mutex_lock(&m->mu);
    struct cps_metric *e = get(m, name, labels, GAUGE);
    if (e)
        e->value = value;
    pthread_mutex_unlock(&m->mu);
}

/* Called with the mutex held. */
static void observe(struct cps_metric *e, double value)
{
    e->count++;
    e->sum += value;
    for (int i = NBUCKETS - 1; i >= 0 && value <= bounds[i]; i--)
        e->buckets[i]++;
}

void cps_metrics_observe(cps_metrics *m, const char *name, const char *labels, double value)
{
    pthread_mutex_lock(&m->mu);
    struct cps_metric *e = get(m, name, labels, HISTOGRAM);
    if (e)
        observe(e, value);
    pthread_mutex_unlock(&m->mu);
}

cps_metric *cps_metrics_series(cps_metrics *m, int type, const char *name, const char *labels)
{
    pthread_mutex_lock(&m->mu);
    struct cps_metric *e = get(m, name, labels, type);
    pthread_mutex_unlock(&m->mu);
    return e;
}

void cps_metrics_apply(cps_metrics *m, const cps_metric_update *u, size_t n)
{
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < n; i++) {
        struct cps_metric *e = u[i].series;
        if (!e)
            continue;
        if (e->type == HISTOGRAM)
            observe(e, u[i].value);
        else if (e->type == COUNTER)
            e->value += u[i].value;
        else
            e->value = u[i].value;
    }
    pthread_mutex_unlock(&m->mu);
}

static int cmp_entry(const void *a, const void *b)
{
    const struct cps_metric *x = *(const struct cps_metric *const *)a, *y = *(const struct cps_metric *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->labels, y->labels);
}

static void labels_with(cps_buf *out, const char *labels, const char *extra)
{
    if (!*labels && !extra)
        return;
    cps_buf_puts(out, "{");
    cps_buf_puts(out, labels);
    if (extra)
        cps_buf_printf(out, "%s%s", *labels ? "," : "", extra);
    cps_buf_puts(out, "}");
}

int cps_metrics_render(cps_metrics *m, cps_buf *out)
{
    pthread_mutex_lock(&m->mu);
    struct cps_metric **all = malloc((m->n ? m->n : 1) * sizeof(*all));
    if (!all) {
        pthread_mutex_unlock(&m->mu);
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < 512; i++)
        for (struct cps_metric *e = m->tab[i]; e; e = e->next)
            all[k++] = e;
    qsort(all, k, sizeof(*all), cmp_entry);
    const char *last = "";
    for (size_t i = 0; i < k; i++) {
        struct cps_metric *e = all[i];
        if (strcmp(e->name, last)) {
            for (size_t h = 0; h < sizeof(helps) / sizeof(helps[0]); h++)
                if (!strcmp(helps[h].name, e->name))
                    cps_buf_printf(out, "# HELP %s %s\n", e->name, helps[h].help);
            cps_buf_printf(out, "# TYPE %s %s\n", e->name,
                           e->type == COUNTER ? "counter"
                           : e->type == GAUGE ? "gauge"
                                              : "histogram");
            last = e->name;
        }
        if (e->type != HISTOGRAM) {
            cps_buf_puts(out, e->name);
            labels_with(out, e->labels, NULL);
            cps_buf_printf(out, " %.17g\n", e->value);
            continue;
        }
        char le[48];
        for (int b = 0; b < NBUCKETS; b++) {
            snprintf(le, sizeof(le), "le=\"%g\"", bounds[b]);
            cps_buf_printf(out, "%s_bucket", e->name);
            labels_with(out, e->labels, le);
            cps_buf_printf(out, " %llu\n", e->buckets[b]);
        }
        cps_buf_printf(out, "%s_bucket", e->name);
        labels_with(out, e->labels, "le=\"+Inf\"");
        cps_buf_printf(out, " %llu\n", e->count);
        cps_buf_printf(out, "%s_sum", e->name);
        labels_with(out, e->labels, NULL);
        cps_buf_printf(out, " %.17g\n", e->sum);
        cps_buf_printf(out, "%s_count", e->name);
        labels_with(out, e->labels, NULL);
        cps_buf_printf(out, " %llu\n", e->count);
    }
    pthread_mutex_unlock(&m->mu);
    free(all);
    return out->oom ? -1 : 0;
}
