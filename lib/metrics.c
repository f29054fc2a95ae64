/* metrics: a sorted render of a small hash map of series ("name{labels}" ->
 * value), with HELP/TYPE lines from metrics_describe. */
#include "metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "map.h"
#include "mem.h"

struct series {
    char *name;
    char *labels;
    double value;
};

struct family {
    char *type;
    char *help;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct map series_map, families;
static int ready;

static struct series *get(const char *name, const char *labels)
{
    if (!ready) {
        map_init(&series_map);
        map_init(&families);
        ready = 1;
    }
    char key[256]; /* name{labels}, cut to fit: on every event, so no printf */
    size_t n = strlen(name), l = labels ? strlen(labels) : 0;
    if (n > sizeof key - 3)
        n = sizeof key - 3;
    if (l > sizeof key - 3 - n)
        l = sizeof key - 3 - n;
    memcpy(key, name, n);
    key[n] = '{';
    memcpy(key + n + 1, labels ? labels : "", l);
    memcpy(key + n + 1 + l, "}", 2);
    struct series *s = map_get(&series_map, key);
    if (!s) {
        s = xcalloc(1, sizeof *s);
        s->name = xstrdup(name);
        s->labels = labels ? xstrdup(labels) : NULL;
        map_put(&series_map, key, s);
    }
    return s;
}

void metrics_add(const char *name, const char *labels, double v)
{
    pthread_mutex_lock(&mu);
    get(name, labels)->value += v;
    pthread_mutex_unlock(&mu);
}

void metrics_set(const char *name, const char *labels, double v)
{
    pthread_mutex_lock(&mu);
    get(name, labels)->value = v;
    pthread_mutex_unlock(&mu);
}

void metrics_describe(const char *name, const char *type, const char *help)
{
    pthread_mutex_lock(&mu);
    if (!ready) {
        map_init(&series_map);
        map_init(&families);
        ready = 1;
    }
    if (!map_get(&families, name)) {
        struct family *f = xcalloc(1, sizeof *f);
        f->type = xstrdup(type);
        f->help = xstrdup(help);
        map_put(&families, name, f);
    }
    pthread_mutex_unlock(&mu);
}

static int by_key(const void *a, const void *b)
{
    const struct map_entry *x = *(const struct map_entry *const *)a, *y = *(const struct map_entry *const *)b;
    return strcmp(x->key, y->key);
}

char *metrics_render(void)
{
    struct buf out;
    buf_init(&out);
    pthread_mutex_lock(&mu);
    if (ready) {
        size_t n = series_map.count, i = 0, it;
        struct map_entry **all = xcalloc(n ? n : 1, sizeof *all);
        for (struct map_entry *e = map_first(&series_map, &it); e; e = map_next(&series_map, e, &it))
            all[i++] = e;
        qsort(all, n, sizeof *all, by_key);
        const char *last = "";
        for (i = 0; i < n; i++) {
            struct series *s = all[i]->value;
            if (strcmp(s->name, last) != 0) {
                struct family *f = map_get(&families, s->name);
                if (f) {
                    char line[512];
                    snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n", s->name, f->help, s->name,
                             f->type);
                    buf_puts(&out, line);
                }
                last = s->name;
            }
            char line[512];
            if (s->labels)
                snprintf(line, sizeof line, "%s{%s} %.17g\n", s->name, s->labels, s->value);
            else
                snprintf(line, sizeof line, "%s %.17g\n", s->name, s->value);
            buf_puts(&out, line);
        }
        free(all);
    }
    pthread_mutex_unlock(&mu);
    return buf_steal(&out, NULL);
}
