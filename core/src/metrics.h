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
/** Prometheus text exposition, sorted by name. */
int cps_metrics_render(cps_metrics *m, cps_buf *out);
/** Whether name is a valid metric name. */
int cps_metrics_valid_name(const char *name);

#endif
