/* metrics: process-wide counters and gauges, rendered in the Prometheus text
 * format (version 0.0.4). Thread-safe (one mutex; an update is a hash lookup
 * and an add). Names and label sets are fixed strings chosen by the code, never
 * taken from the network. */
#ifndef METRICS_H
#define METRICS_H

/* labels: NULL, or the inside of the braces, e.g. "event=\"message:send\"". */
void metrics_add(const char *name, const char *labels, double v); /* counter */
void metrics_set(const char *name, const char *labels, double v); /* gauge */
/* Declares a metric's HELP text and type ("counter" or "gauge"). */
void metrics_describe(const char *name, const char *type, const char *help);
/* The whole registry as Prometheus text; free() it. */
char *metrics_render(void);

#endif
