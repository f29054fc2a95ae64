/* config: environment-only configuration, read once in main from a table
 * (style rule 20). Prints the effective values with secrets masked; on bad
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

/* Fills *out from the environment. Exits 1 after logging every missing or
 * invalid variable. Strings stay valid for the life of the process. */
void config_load(void *out, const struct config_var *vars, size_t n);
/* Logs one line with every value (secrets as ***). */
void config_log(const void *cfg, const struct config_var *vars, size_t n);

#endif
