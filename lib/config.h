/* config: environment-only configuration, read once in main from a table
 * (every service lists its variables the same way). Prints the effective values with secrets masked; on bad
 * input lists every problem and exits 1. */
#ifndef CONFIG_H
#define CONFIG_H

#include <stddef.h>

enum config_kind {
    CONFIG_STR,    /* const char * field */
    CONFIG_INT,    /* long field, checked against [min, max] */
    CONFIG_SECRET, /* const char * field; NAME_FILE names a file holding it; masked in logs */
};

struct config_var {
    const char *name;
    enum config_kind kind;
    const char *def; /* NULL: no default */
    int required;    /* 1: must be set and non-empty (after the default) */
    size_t offset;   /* offsetof the field in the service's config struct */
    long min, max;   /* CONFIG_INT bounds */
    const char *help;
};

/* One row of a service's table for its config struct T (style: every
 * service's main.c lists its variables this way). */
#define CONFIG_VAR(T, name, kind, def, field, min, max, help)                                                \
    {                                                                                                        \
        name, kind, def, 0, offsetof(T, field), min, max, help                                               \
    }
/* The number of rows of a table. */
#define CONFIG_COUNT(vars) (sizeof(vars) / sizeof((vars)[0]))

/* Fills *out from the environment. Exits 1 after logging every missing or
 * invalid variable. Strings stay valid for the life of the process. */
void config_load(void *out, const struct config_var *vars, size_t n);
/* Logs one line with every value (secrets as ***). */
void config_log(const void *cfg, const struct config_var *vars, size_t n);

#endif
