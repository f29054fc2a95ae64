/* userdb: the only presence file that speaks libpq (SQL stays in one file per
 * service). Every statement goes through PQexecParams with $n placeholders.
 * Times cross the wire as integer milliseconds and are converted in SQL,
 * exactly (no float).
 * It does not decide anything: the roster says what a row must hold. */
#include "userdb.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "db.h"
#include "log.h"
#include "mem.h"

#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 5000

struct userdb {
    const char *conninfo;
    PGconn *conn;           /* NULL while down; under the caller's lock */
    atomic_int outage;      /* 1 once the outage was logged; set by either thread */
    long long next_dial_ms; /* ticker thread only */
    long long backoff_ms;   /* ticker thread only */
    int ever_up;            /* ticker thread only */
};

struct userdb_link {
    PGconn *conn;
};

/* Version n of the schema is steps[n-1]; never edit a step, append one. The
 * ALTERs let a users table made by an older layout (the first draft had no
 * status/online) take the new columns. */
static const char *const steps[] = {
    "CREATE TABLE IF NOT EXISTS users ("
    " id uuid PRIMARY KEY,"
    " username text NOT NULL,"
    " status text NOT NULL DEFAULT 'online' CHECK (status IN ('online', 'away', 'offline')),"
    " online boolean NOT NULL DEFAULT false,"
    " last_seen timestamptz,"
    " created_at timestamptz NOT NULL DEFAULT now());"
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'online';"
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS online boolean NOT NULL DEFAULT false;"
    "CREATE INDEX IF NOT EXISTS users_online_idx ON users (id) WHERE online;",
};

static const char *status_text(enum roster_status s)
{
    switch (s) {
    case ROSTER_AWAY:
        return "away";
    case ROSTER_OFFLINE:
        return "offline";
    case ROSTER_ONLINE:
        break;
    }
    return "online";
}

static enum roster_status status_parse(const char *s)
{
    if (strcmp(s, "away") == 0)
        return ROSTER_AWAY;
    if (strcmp(s, "offline") == 0)
        return ROSTER_OFFLINE;
    return ROSTER_ONLINE;
}

struct userdb *userdb_create(const char *conninfo)
{
    /* A key=value string or a URI is checked now (bad config: exit at start);
     * a bare database name or "" (the PG* variables) cannot be wrong here. */
    if (strchr(conninfo, '=') || strncmp(conninfo, "postgres://", 11) == 0 ||
        strncmp(conninfo, "postgresql://", 13) == 0) {
        char *err = NULL;
        PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
        if (!opts) {
            log_error("config: DATABASE_URL is not a libpq conninfo or URI: %.*s",
                      err ? (int)strcspn(err, "\n") : 13, err ? err : "out of memory");
            PQfreemem(err);
            return NULL;
        }
        PQconninfoFree(opts);
    }
    struct userdb *db = xcalloc(1, sizeof *db);
    db->conninfo = conninfo;
    db->backoff_ms = BACKOFF_MIN_MS;
    atomic_init(&db->outage, 0);
    return db;
}

void userdb_destroy(struct userdb *db)
{
    if (!db)
        return;
    PQfinish(db->conn);
    free(db);
}

int userdb_up(const struct userdb *db)
{
    return db->conn != NULL;
}

static void outage_begin(struct userdb *db, const char *why)
{
    if (!atomic_exchange(&db->outage, 1))
        log_warn("postgres unavailable: %s; retrying in the background", why);
}

struct userdb_link *userdb_dial(struct userdb *db, long long mono_ms)
{
    if (mono_ms < db->next_dial_ms)
        return NULL;
    /* PQping first: it is silent, where db_connect logs every failure, and an
     * outage must be logged once. */
    const char *keys[] = {"dbname", "connect_timeout", NULL};
    const char *vals[] = {db->conninfo, "3", NULL};
    PGPing ping = PQpingParams(keys, vals, 1);
    PGconn *c = NULL;
    if (ping != PQPING_OK) {
        outage_begin(db, ping == PQPING_REJECT ? "server rejects connections" : "no response");
    } else if (!(c = db_connect(db->conninfo, "chat-presence"))) {
        outage_begin(db, "connect failed");
    } else if (db_migrate(c, "presence", steps, (int)(sizeof steps / sizeof steps[0])) != 0) {
        outage_begin(db, "migration failed");
        PQfinish(c);
        c = NULL;
    }
    if (!c) {
        db->next_dial_ms = mono_ms + db->backoff_ms;
        db->backoff_ms = db->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : db->backoff_ms * 2;
        return NULL;
    }
    db->backoff_ms = BACKOFF_MIN_MS;
    db->next_dial_ms = 0;
    struct userdb_link *l = xmalloc(sizeof *l);
    l->conn = c;
    if (atomic_exchange(&db->outage, 0) || !db->ever_up)
        log_info("postgres connected, schema ready");
    db->ever_up = 1;
    return l;
}

void userdb_attach(struct userdb *db, struct userdb_link *link)
{
    PQfinish(db->conn);
    db->conn = link->conn;
    free(link);
}

/* Checks r; on failure logs and, when the connection itself broke, drops it
 * so that the ticker re-dials. Clears r in every case. */
static int result_ok(struct userdb *db, PGresult *r, ExecStatusType want, const char *what)
{
    if (PQresultStatus(r) == want) {
        PQclear(r);
        return 0;
    }
    if (PQstatus(db->conn) == CONNECTION_BAD) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(db->conn));
        msg[strcspn(msg, "\n")] = '\0';
        outage_begin(db, msg);
        PQfinish(db->conn);
        db->conn = NULL;
    } else {
        log_error("postgres %s: %s", what, PQresultErrorMessage(r));
    }
    PQclear(r);
    return -1;
}

int userdb_save(void *ctx, const struct roster_user *const *users, size_t n)
{
    struct userdb *db = ctx;
    if (!db->conn)
        return -1;
    if (n == 0)
        return 0;
    /* Five array literals, one element per user, in the same order. */
    struct buf ids, names, statuses, online, seen;
    struct buf *arrs[] = {&ids, &names, &statuses, &online, &seen};
    for (size_t k = 0; k < 5; k++)
        db_array_start(arrs[k]);
    for (size_t i = 0; i < n; i++) {
        const struct roster_user *u = users[i];
        char ms[24];
        snprintf(ms, sizeof ms, "%lld", u->last_seen_ms);
        db_array_add(&ids, u->id);
        db_array_add(&names, u->username);
        db_array_add(&statuses, status_text(u->status));
        db_array_add(&online, u->nsessions > 0 || u->in_grace ? "t" : "f"); /* the grace: not offline yet */
        db_array_add(&seen, ms);
    }
    const char *params[5];
    for (size_t k = 0; k < 5; k++)
        params[k] = db_array_end(arrs[k]);
    /* One statement, so one transaction and one WAL flush for the whole batch.
     * Each id appears once (the roster's dirty set), as ON CONFLICT DO UPDATE
     * requires. */
    PGresult *r = PQexecParams(
        db->conn,
        "INSERT INTO users (id, username, status, online, last_seen)"
        " SELECT u.id, u.username, u.status, u.online,"
        "  CASE WHEN u.seen > 0 THEN timestamptz 'epoch' + u.seen * interval '1 millisecond' END"
        " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::boolean[], $5::bigint[])"
        "  AS u(id, username, status, online, seen)"
        " ON CONFLICT (id) DO UPDATE SET"
        "  username = CASE WHEN EXCLUDED.username <> '' THEN EXCLUDED.username ELSE users.username END,"
        "  status = EXCLUDED.status, online = EXCLUDED.online,"
        "  last_seen = COALESCE(EXCLUDED.last_seen, users.last_seen)",
        5, NULL, params, NULL, NULL, 0);
    for (size_t k = 0; k < 5; k++)
        buf_cleanup(arrs[k]);
    return result_ok(db, r, PGRES_COMMAND_OK, "save users");
}

#define ROW_COLUMNS                                                                                          \
    "SELECT id::text, username, status, online,"                                                             \
    " floor(extract(epoch FROM COALESCE(last_seen, created_at)) * 1000)::bigint FROM users"

static int read_rows(struct userdb *db, PGresult *r, void (*row_cb)(void *ctx, const struct roster_row *row),
                     void *ctx)
{
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return result_ok(db, r, PGRES_TUPLES_OK, "read users");
    for (int i = 0; i < PQntuples(r); i++) {
        struct roster_row row = {
            .id = PQgetvalue(r, i, 0),
            .username = PQgetvalue(r, i, 1),
            .status = status_parse(PQgetvalue(r, i, 2)),
            .online = PQgetvalue(r, i, 3)[0] == 't',
            .last_seen_ms = strtoll(PQgetvalue(r, i, 4), NULL, 10),
        };
        row_cb(ctx, &row);
    }
    PQclear(r);
    return 0;
}

int userdb_load(struct userdb *db, const char *const *ids, size_t n,
                void (*row_cb)(void *ctx, const struct roster_row *row), void *ctx)
{
    if (!db->conn)
        return -1;
    if (n == 0)
        return 0;
    /* One round trip for the whole query: an array literal {id,id,...}; uuids
     * need no quoting. */
    struct buf arr;
    buf_init(&arr);
    buf_putc(&arr, '{');
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_putc(&arr, ',');
        buf_puts(&arr, ids[i]);
    }
    buf_putc(&arr, '}');
    const char *params[] = {buf_cstr(&arr)};
    PGresult *r =
        PQexecParams(db->conn, ROW_COLUMNS " WHERE id = ANY($1::uuid[])", 1, NULL, params, NULL, NULL, 0);
    buf_cleanup(&arr);
    return read_rows(db, r, row_cb, ctx);
}

int userdb_online(struct userdb *db, void (*row_cb)(void *ctx, const struct roster_row *row), void *ctx)
{
    if (!db->conn)
        return -1;
    PGresult *r = PQexecParams(db->conn, ROW_COLUMNS " WHERE online", 0, NULL, NULL, NULL, NULL, 0);
    return read_rows(db, r, row_cb, ctx);
}
