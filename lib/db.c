/* db: see db.h. Migration bookkeeping lives in one table shared by the
 * services, keyed by service name. */
#include "db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"

#define MIGRATION_LOCK_KEY 7243100 /* any constant: one lock for all services */

/* Server notices and warnings go through the logger like every other line:
 * libpq's default receiver prints them raw on stderr, which breaks
 * LOG_FORMAT=json. A notice (the migrations' "already exists, skipping" at
 * every start) is debug; a warning is one. */
static void on_notice(void *arg, const PGresult *res)
{
    (void)arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *text = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (!text)
        text = "";
    if (severity && strcmp(severity, "WARNING") == 0)
        log_warn("postgres warning: %s", text);
    else
        log_debug("postgres notice: %s", text);
}

PGconn *db_connect(const char *conninfo, const char *app_name)
{
    const char *keys[] = {"dbname", "application_name", "connect_timeout", NULL};
    const char *vals[] = {conninfo, app_name, "5", NULL};
    /* expand_dbname=1: conninfo may be a full conninfo string or URI. */
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(c));
        msg[strcspn(msg, "\n")] = '\0';
        log_warn("postgres connect failed: %s", msg);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeReceiver(c, on_notice, NULL);
    return c;
}

int db_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        log_error("postgres: %s", PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : -1;
}

int db_ok(PGconn *c)
{
    return c && PQstatus(c) == CONNECTION_OK;
}

static int current_version(PGconn *c, const char *service)
{
    const char *params[] = {service};
    PGresult *r =
        PQexecParams(c, "SELECT coalesce(max(version), 0) FROM schema_migrations WHERE service = $1", 1, NULL,
                     params, NULL, NULL, 0);
    int v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        v = atoi(PQgetvalue(r, 0, 0));
    else
        log_error("postgres: %s", PQresultErrorMessage(r));
    PQclear(r);
    return v;
}

int db_migrate(PGconn *c, const char *service, const char *const *steps, int nsteps)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%d)", MIGRATION_LOCK_KEY);
    if (db_exec(c, sql) != 0)
        return -1;
    int rc = -1;
    if (db_exec(c,
                "CREATE TABLE IF NOT EXISTS schema_migrations (service text NOT NULL, version int NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (service, version))") != 0)
        goto out;
    int v = current_version(c, service);
    if (v < 0)
        goto out;
    for (; v < nsteps; v++) {
        char ver[16];
        snprintf(ver, sizeof ver, "%d", v + 1);
        const char *params[] = {service, ver};
        if (db_exec(c, "BEGIN") != 0)
            goto out;
        PGresult *r = NULL;
        if (db_exec(c, steps[v]) != 0 ||
            PQresultStatus(
                r = PQexecParams(c, "INSERT INTO schema_migrations (service, version) VALUES ($1, $2)", 2,
                                 NULL, params, NULL, NULL, 0)) != PGRES_COMMAND_OK) {
            if (r)
                log_error("postgres: %s", PQresultErrorMessage(r));
            PQclear(r);
            db_exec(c, "ROLLBACK");
            goto out;
        }
        PQclear(r);
        if (db_exec(c, "COMMIT") != 0)
            goto out;
        log_info("schema migrated service=%s version=%d", service, v + 1);
    }
    rc = 0;
out:
    snprintf(sql, sizeof sql, "SELECT pg_advisory_unlock(%d)", MIGRATION_LOCK_KEY);
    db_exec(c, sql);
    return rc;
}

void db_array_start(struct buf *b)
{
    buf_init(b);
    buf_putc(b, '{');
}

void db_array_add(struct buf *b, const char *s)
{
    if (b->len > 1)
        buf_putc(b, ',');
    if (!s) {
        buf_puts(b, "NULL");
        return;
    }
    buf_putc(b, '"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            buf_putc(b, '\\');
        buf_putc(b, *s);
    }
    buf_putc(b, '"');
}

const char *db_array_end(struct buf *b)
{
    buf_putc(b, '}');
    return buf_cstr(b);
}
