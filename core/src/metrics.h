/* A small Prometheus registry: counters, gauges and histograms keyed by name and labels. */
#ifndef COMPASS_CORE_METRICS_H
#define COMPASS_CORE_METRICS_H

#include "buf.h"

typedef struct cps_metrics cps_metrics;

cps_metrics *cps_metrics_new(void);
void cps_metrics_free(cps_metrics *m);
/** labels: Prometheus label text without braces, or NULL. */
void cps_metrics_add(cps_metrics *m, const char *name, const char *labels, double delta);
void cps_metrics_set(cps_metrics *m, const char *name, const char *labels, double value);
/** Observes value (seconds) in a histogram with the standard latency buckets. */
void cps_metrics_observe(cps_metrics *m, const char *name, const char *labels, double value);
/** One series (a name with its labels), made by cps_metrics_series; it lives as long as the
 *  registry, so a hot path can look it up once and keep the pointer. */
typedef struct cps_metric cps_metric;
enum { CPS_METRIC_COUNTER, CPS_METRIC_GAUGE, CPS_METRIC_HISTOGRAM };
/** The series name{labels} of the given type, made on first use; NULL on OOM or when the
 *  series exists with another type. */
cps_metric *cps_metrics_series(cps_metrics *m, int type, const char *name, const char *labels);
/** One change to a series: a counter adds value, a histogram observes it. */
typedef struct cps_metric_update {
    cps_metric *series; /* NULL entries are skipped */
    double value;
} cps_metric_update;
/** Applies n changes under one lock (a finished request updates several series). */
void cps_metrics_apply(cps_metrics *m, const cps_metric_update *u, size_t n);
/** Prometheus text exposition, sorted by name. */
int cps_metrics_render(cps_metrics *m, cps_buf *out);
/** Whether name is a valid metric name. */
int cps_metrics_valid_name(const char *name);

#endif
