/* One mutex over a hash table: metrics are updated once per request, not per byte. */
#include "metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBUCKETS 14
static const double bounds[NBUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1,     2.5,  5,     10,   30,  60,  120};

enum { COUNTER, GAUGE, HISTOGRAM };

struct entry {
    struct entry *next;
    char *name, *labels;
    int type;
    double value, sum;
    unsigned long long count, buckets[NBUCKETS];
};

struct cps_metrics {
    pthread_mutex_t mu;
    struct entry *tab[512];
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
        struct entry *e = m->tab[i];
        while (e) {
            struct entry *n = e->next;
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
static struct entry *get(cps_metrics *m, const char *name, const char *labels, int type)
{
    if (!labels)
        labels = "";
    unsigned h = hash2(name, labels) % 512;
    for (struct entry *e = m->tab[h]; e; e = e->next)
        if (!strcmp(e->name, name) && !strcmp(e->labels, labels))
            return e->type == type ? e : NULL;
    struct entry *e = calloc(1, sizeof(*e));
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
    struct entry *e = get(m, name, labels, COUNTER);
    if (e)
        e->value += delta;
    pthread_mutex_unlock(&m->mu);
}

void cps_metrics_set(cps_metrics *m, const char *name, const char *labels, double value)
{
    pthread_mutex_lock(&m->mu);
    struct entry *e = get(m, name, labels, GAUGE);
    if (e)
        e->value = value;
    pthread_mutex_unlock(&m->mu);
}

void cps_metrics_observe(cps_metrics *m, const char *name, const char *labels, double value)
{
    pthread_mutex_lock(&m->mu);
    struct entry *e = get(m, name, labels, HISTOGRAM);
    if (e) {
        e->count++;
        e->sum += value;
        for (int i = 0; i < NBUCKETS; i++)
            if (value <= bounds[i])
                e->buckets[i]++;
    }
    pthread_mutex_unlock(&m->mu);
}

static int cmp_entry(const void *a, const void *b)
{
    const struct entry *x = *(const struct entry *const *)a, *y = *(const struct entry *const *)b;
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
    struct entry **all = malloc((m->n ? m->n : 1) * sizeof(*all));
    if (!all) {
        pthread_mutex_unlock(&m->mu);
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < 512; i++)
        for (struct entry *e = m->tab[i]; e; e = e->next)
            all[k++] = e;
    qsort(all, k, sizeof(*all), cmp_entry);
    const char *last = "";
    for (size_t i = 0; i < k; i++) {
        struct entry *e = all[i];
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
