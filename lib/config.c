/* config: the table-driven reader of the environment. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"

/* Reads a secret from NAME_FILE: the whole file, trailing newlines removed. */
static char *read_secret_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct buf b;
    buf_init(&b);
    char chunk[512];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && b.len < 65536)
        buf_append(&b, chunk, n);
    fclose(f);
    while (b.len > 0 && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r'))
        b.len--;
    return buf_steal(&b, NULL);
}

void config_load(void *out, const struct config_var *vars, size_t n)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        const struct config_var *v = &vars[i];
        const char *val = getenv(v->name);
        if ((!val || !*val) && v->kind == CONFIG_SECRET) {
            char fname[128];
            snprintf(fname, sizeof fname, "%s_FILE", v->name);
            const char *path = getenv(fname);
            if (path && *path) {
                val = read_secret_file(path);
                if (!val) {
                    log_error("config: cannot read %s=%s: %s", fname, path, strerror(errno));
                    bad++;
                    continue;
                }
            }
        }
        if (!val || !*val)
            val = v->def;
        if (v->required && (!val || !*val)) {
            log_error("config: %s is required (%s)", v->name, v->help);
            bad++;
            continue;
        }
        char *field = (char *)out + v->offset;
        if (v->kind == CONFIG_INT) {
            char *end;
            errno = 0;
            long x = val && *val ? strtol(val, &end, 10) : 0;
            if (val && *val && (errno || *end || x < v->min || x > v->max)) {
                log_error("config: %s=%s is not an integer in [%ld, %ld] (%s)", v->name, val, v->min, v->max,
                          v->help);
                bad++;
                continue;
            }
            memcpy(field, &x, sizeof x);
        } else {
            const char *s = val ? val : "";
            memcpy(field, &s, sizeof s);
        }
    }
    if (bad) {
        log_error("config: %d problem(s); see above", bad);
        exit(1);
    }
}

void config_log(const void *cfg, const struct config_var *vars, size_t n)
{
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "config");
    for (size_t i = 0; i < n; i++) {
        const struct config_var *v = &vars[i];
        const char *field = (const char *)cfg + v->offset;
        buf_putc(&b, ' ');
        buf_puts(&b, v->name);
        buf_putc(&b, '=');
        if (v->kind == CONFIG_INT) {
            long x;
            memcpy(&x, field, sizeof x);
            char tmp[32];
            snprintf(tmp, sizeof tmp, "%ld", x);
            buf_puts(&b, tmp);
        } else {
            const char *s;
            memcpy(&s, field, sizeof s);
            buf_puts(&b, v->kind == CONFIG_SECRET ? (*s ? "***" : "") : s);
        }
    }
    log_info("%s", buf_cstr(&b));
    buf_cleanup(&b);
}
