/* store: SQL for messages. Every statement goes through PQexecParams or
 * PQexecPrepared with $n placeholders; batches travel as PostgreSQL array
 * literals and are unnested server-side, so a batch of any size is one
 * prepared INSERT: one round trip and one commit. */
#include "store.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "mem.h"

#define PARTITION_LOCK_BASE 7243200 /* advisory lock keys: base + partition */

struct store {
    PGconn *c;
    int prepared; /* the batch statements are prepared on this connection */
};

/* Version n of the schema is steps[n-1]; never edit a step, add one. */
static const char *const steps[] = {
    "CREATE TABLE messages ("
    " id uuid PRIMARY KEY,"
    " sender_id uuid NOT NULL,"
    " recipient_id uuid NOT NULL,"
    " type text NOT NULL CHECK (type IN ('text', 'audio', 'image')),"
    " content text NOT NULL,"
    " client_message_id text,"
    " created_at timestamptz NOT NULL,"
    " read_at timestamptz);"
    "CREATE UNIQUE INDEX messages_sender_client_id ON messages (sender_id, client_message_id);"
    "CREATE INDEX messages_conversation ON messages"
    " (least(sender_id, recipient_id), greatest(sender_id, recipient_id), created_at DESC, id DESC);",
    /* Sends stored per sender and UTC day, for MESSAGING_SENDS_PER_DAY:
     * written by the batch's own INSERT, read when a replica takes a
     * partition over; rows older than yesterday are pruned. */
    "CREATE TABLE message_quota ("
    " sender_id uuid NOT NULL,"
    " day date NOT NULL,"
    " n integer NOT NULL,"
    " PRIMARY KEY (sender_id, day));",
    /* conversation:list: one row per user and other user, with the latest
     * message between them (either direction), kept by a statement-level
     * trigger on every INSERT into messages (whoever inserts: a batch, an
     * older replica, a script), in key order so that concurrent batches
     * lock rows in one order; a message older than the row's (a redelivery
     * after a fail-over) leaves it. Filled from the messages already there.
     * messages_unread: the unread of one recipient from one sender, in
     * order (unread counts, conversation:read). */
    "CREATE TABLE conversations ("
    " user_id uuid NOT NULL,"
    " with_user_id uuid NOT NULL,"
    " last_at timestamptz NOT NULL,"
    " last_id uuid NOT NULL,"
    " PRIMARY KEY (user_id, with_user_id));"
    "CREATE INDEX conversations_recent ON conversations (user_id, last_at, with_user_id);"
    "CREATE INDEX messages_unread ON messages (recipient_id, sender_id, created_at, id)"
    " WHERE read_at IS NULL;"
    "CREATE FUNCTION conversations_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    " INSERT INTO conversations (user_id, with_user_id, last_at, last_id)"
    " SELECT DISTINCT ON (u, w) u, w, at, id FROM ("
    "  SELECT sender_id AS u, recipient_id AS w, created_at AS at, id FROM new_rows"
    "  UNION ALL SELECT recipient_id, sender_id, created_at, id FROM new_rows) x"
    " ORDER BY u, w, at DESC, id DESC"
    " ON CONFLICT (user_id, with_user_id) DO UPDATE SET last_at = EXCLUDED.last_at, last_id = "
    "EXCLUDED.last_id"
    " WHERE (EXCLUDED.last_at, EXCLUDED.last_id) > (conversations.last_at, conversations.last_id);"
    " RETURN NULL; END $$;"
    "CREATE TRIGGER messages_conversations AFTER INSERT ON messages REFERENCING NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION conversations_touch();"
    "INSERT INTO conversations (user_id, with_user_id, last_at, last_id)"
    " SELECT DISTINCT ON (u, w) u, w, at, id FROM ("
    "  SELECT sender_id AS u, recipient_id AS w, created_at AS at, id FROM messages"
    "  UNION ALL SELECT recipient_id, sender_id, created_at, id FROM messages) x"
    " ORDER BY u, w, at DESC, id DESC;",
};

struct store *store_open(const char *conninfo, const char *app)
{
    PGconn *c = db_connect(conninfo, app);
    if (!c)
        return NULL;
    struct store *st = xcalloc(1, sizeof *st);
    st->c = c;
    return st;
}

void store_close(struct store *st)
{
    if (!st)
        return;
    PQfinish(st->c);
    free(st);
}

int store_ok(struct store *st)
{
    return st && db_ok(st->c) ? 0 : -1;
}

int store_migrate(struct store *st)
{
    return db_migrate(st->c, "messaging", steps, (int)(sizeof steps / sizeof steps[0]));
}

int store_statement_timeout(struct store *st, long ms)
{
    char sql[64];
    snprintf(sql, sizeof sql, "SET statement_timeout = %ld", ms);
    return db_exec(st->c, sql);
}

/* Runs a statement; returns its result when its status is want, else logs,
 * clears and returns NULL. */
static PGresult *run(struct store *st, ExecStatusType want, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(st->c, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != want) {
        log_error("postgres: %s", PQresultErrorMessage(r));
        PQclear(r);
        return NULL;
    }
    return r;
}

int store_try_lock(struct store *st, unsigned partition)
{
    char key[24];
    snprintf(key, sizeof key, "%u", PARTITION_LOCK_BASE + partition);
    const char *params[] = {key};
    PGresult *r = run(st, PGRES_TUPLES_OK, "SELECT pg_try_advisory_lock($1::bigint)", 1, params);
    if (!r)
        return -1;
    int got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return got;
}

int store_unlock(struct store *st, unsigned partition)
{
    char key[24];
    snprintf(key, sizeof key, "%u", PARTITION_LOCK_BASE + partition);
    const char *params[] = {key};
    PGresult *r = run(st, PGRES_TUPLES_OK, "SELECT pg_advisory_unlock($1::bigint)", 1, params);
    PQclear(r);
    return r ? 0 : -1;
}

int store_count_replicas(struct store *st, const char *app_prefix)
{
    char like[128];
    snprintf(like, sizeof like, "%s%%", app_prefix);
    const char *params[] = {like};
    PGresult *r =
        run(st, PGRES_TUPLES_OK,
            "SELECT count(DISTINCT application_name) FROM pg_stat_activity WHERE application_name LIKE $1", 1,
            params);
    if (!r)
        return -1;
    int n = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    return n;
}

static void row_from(struct store_row *row, PGresult *r, int i, int col)
{
    snprintf(row->id, sizeof row->id, "%s", PQgetvalue(r, i, col));
    snprintf(row->sender, sizeof row->sender, "%s", PQgetvalue(r, i, col + 1));
    snprintf(row->recipient, sizeof row->recipient, "%s", PQgetvalue(r, i, col + 2));
    snprintf(row->type, sizeof row->type, "%s", PQgetvalue(r, i, col + 3));
    row->content = xstrdup(PQgetvalue(r, i, col + 4));
    row->cmid = xstrdup(PQgetvalue(r, i, col + 5));
    row->created_ms = atoll(PQgetvalue(r, i, col + 6));
    row->read_ms = atoll(PQgetvalue(r, i, col + 7));
    row->found = 1;
}

#define ROW_COLUMNS                                                                                          \
    "m.id, m.sender_id, m.recipient_id, m.type, m.content, coalesce(m.client_message_id, ''), "              \
    "floor(extract(epoch FROM m.created_at) * 1000)::bigint, "                                               \
    "coalesce(floor(extract(epoch FROM m.read_at) * 1000)::bigint, 0)"

#define INSERT_SQL                                                                                           \
    "INSERT INTO messages (id, sender_id, recipient_id, type, content, client_message_id, created_at) "      \
    "SELECT t.id, t.s, t.r, t.ty, t.c, t.cm, 'epoch'::timestamptz + t.us * interval '1 microsecond' "        \
    "FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::bigint[]) "     \
    "AS t(id, s, r, ty, c, cm, us) ON CONFLICT DO NOTHING RETURNING id"

/* The same INSERT, and the stored rows counted per sender for the day $8 in
 * the same statement: the count commits with the messages, or neither. */
#define INSERT_COUNTED_SQL                                                                                   \
    "WITH ins AS (" INSERT_SQL ", sender_id), "                                                              \
    "cnt AS (INSERT INTO message_quota (sender_id, day, n) SELECT sender_id, $8::date, count(*) FROM ins "   \
    "GROUP BY sender_id ON CONFLICT (sender_id, day) DO UPDATE SET n = message_quota.n + EXCLUDED.n) "       \
    "SELECT id FROM ins"

/* For each input, its own row or the earlier one with its client id. */
#define SELECT_SQL                                                                                           \
    "SELECT DISTINCT ON (t.ord) t.ord, " ROW_COLUMNS                                                         \
    " FROM unnest($1::uuid[], $2::uuid[], $3::text[]) WITH ORDINALITY AS t(id, s, cm, ord) "                 \
    "JOIN messages m ON m.id = t.id OR (t.cm IS NOT NULL AND m.sender_id = t.s AND "                         \
    "m.client_message_id = t.cm) ORDER BY t.ord, (m.id = t.id) DESC"

/* The batch statements are prepared once per connection: a batch is then
 * bound and executed, without parsing and planning it again. */
static int prepare_batch(struct store *st)
{
    if (st->prepared)
        return 0;
    static const char *const names[] = {"insert_batch", "insert_counted", "select_batch"};
    static const char *const sqls[] = {INSERT_SQL, INSERT_COUNTED_SQL, SELECT_SQL};
    static const int nparams[] = {7, 8, 3};
    for (int i = 0; i < 3; i++) {
        PGresult *r = PQprepare(st->c, names[i], sqls[i], nparams[i], NULL);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            log_error("postgres: preparing %s: %s", names[i], PQresultErrorMessage(r));
        PQclear(r);
        if (!ok)
            return -1;
    }
    st->prepared = 1;
    return 0;
}

static PGresult *run_prepared(struct store *st, const char *name, int n, const char *const *params)
{
    PGresult *r = PQexecPrepared(st->c, name, n, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        log_error("postgres: %s: %s", name, PQresultErrorMessage(r));
        PQclear(r);
        return NULL;
    }
    return r;
}

/* An input this call stored: its row is what was sent (ids as PostgreSQL
 * prints them, created_at to the millisecond, unread). */
static void row_from_input(struct store_row *row, const struct store_msg *m)
{
    ids_uuid_norm(row->sender, m->sender, strlen(m->sender));
    ids_uuid_norm(row->recipient, m->recipient, strlen(m->recipient));
    snprintf(row->type, sizeof row->type, "%s", m->type);
    row->content = xstrdup(m->content);
    row->cmid = xstrdup(m->cmid);
    row->created_ms = m->created_us / 1000;
    row->read_ms = 0;
    row->found = 1;
    row->inserted = 1;
}

/* The rows of the inputs the INSERT did not store (redeliveries, resends
 * with a known client id), read back by a second statement. */
static int select_known(struct store *st, const struct store_msg *in, int n, struct store_row *out)
{
    struct buf ids, senders, cmids;
    int *which = xcalloc((size_t)n, sizeof *which), m = 0;
    db_array_start(&ids);
    db_array_start(&senders);
    db_array_start(&cmids);
    for (int i = 0; i < n; i++) {
        if (out[i].found)
            continue;
        which[m++] = i;
        db_array_add(&ids, in[i].id);
        db_array_add(&senders, in[i].sender);
        db_array_add(&cmids, *in[i].cmid ? in[i].cmid : NULL);
    }
    int rc = 0;
    if (m > 0) {
        const char *params[] = {db_array_end(&ids), db_array_end(&senders), db_array_end(&cmids)};
        PGresult *r = run_prepared(st, "select_batch", 3, params);
        if (r) {
            for (int i = 0; i < PQntuples(r); i++) {
                int k = atoi(PQgetvalue(r, i, 0)) - 1;
                if (k >= 0 && k < m)
                    row_from(&out[which[k]], r, i, 1);
            }
        }
        rc = r ? 0 : -1;
        PQclear(r);
    }
    buf_cleanup(&ids);
    buf_cleanup(&senders);
    buf_cleanup(&cmids);
    free(which);
    return rc;
}

int store_insert_batch(struct store *st, const struct store_msg *in, int n, const char *count_day,
                       struct store_row *out)
{
    struct buf ids, senders, recipients, types, contents, cmids, created;
    db_array_start(&ids);
    db_array_start(&senders);
    db_array_start(&recipients);
    db_array_start(&types);
    db_array_start(&contents);
    db_array_start(&cmids);
    db_array_start(&created);
    memset(out, 0, sizeof *out * (size_t)n);
    for (int i = 0; i < n; i++) {
        char us[24];
        snprintf(us, sizeof us, "%lld", in[i].created_us);
        db_array_add(&ids, in[i].id);
        db_array_add(&senders, in[i].sender);
        db_array_add(&recipients, in[i].recipient);
        db_array_add(&types, in[i].type);
        db_array_add(&contents, in[i].content);
        db_array_add(&cmids, *in[i].cmid ? in[i].cmid : NULL);
        db_array_add(&created, us);
        ids_uuid_norm(out[i].id, in[i].id, strlen(in[i].id));
    }
    const char *params[] = {
        db_array_end(&ids),      db_array_end(&senders), db_array_end(&recipients), db_array_end(&types),
        db_array_end(&contents), db_array_end(&cmids),   db_array_end(&created),    count_day};
    int rc = -1;
    PGresult *ins = NULL;

    /* One statement outside a transaction block: it commits (flushed, with
     * synchronous_commit) before its result comes back, so a result means
     * the batch is durable. */
    if (prepare_batch(st) != 0 || !(ins = count_day ? run_prepared(st, "insert_counted", 8, params)
                                                    : run_prepared(st, "insert_batch", 7, params))) {
        for (int i = 0; i < n; i++)
            out[i].id[0] = '\0';
        goto out;
    }
    /* RETURNING comes in input order in practice: look from where the last
     * one was found, wrapping around, so the usual case is linear. */
    for (int i = 0, k = 0; i < PQntuples(ins); i++) {
        const char *id = PQgetvalue(ins, i, 0);
        for (int tries = 0; tries < n; tries++, k = (k + 1) % n) {
            if (!out[k].found && strcmp(out[k].id, id) == 0) {
                row_from_input(&out[k], &in[k]);
                break;
            }
        }
    }
    /* The others were stored before (or by an earlier input of this batch):
     * committed either way, so they are read after the INSERT's commit. A
     * failure here leaves them unfound; the caller gives them back to
     * JetStream, and their redelivery finds them. */
    if (select_known(st, in, n, out) != 0)
        for (int i = 0; i < n; i++)
            if (!out[i].inserted)
                out[i].found = 0;
    rc = 0;
out:
    PQclear(ins);
    buf_cleanup(&ids);
    buf_cleanup(&senders);
    buf_cleanup(&recipients);
    buf_cleanup(&types);
    buf_cleanup(&contents);
    buf_cleanup(&cmids);
    buf_cleanup(&created);
    return rc;
}

int store_find_batch(struct store *st, const struct store_msg *in, int n, struct store_row *out)
{
    memset(out, 0, sizeof *out * (size_t)n);
    if (prepare_batch(st) != 0)
        return -1;
    return select_known(st, in, n, out);
}

/* Rows of `table` whose `column` is one of ids: known[i] = 1 for each found
 * (and the value of `value_col` in values[i] when values is set). One
 * statement for the whole list. A table that does not exist yet has no rows. */
static int lookup_ids(struct store *st, const char *sql, const char *extra, const char *const *ids, int n,
                      int *known, long *values)
{
    struct buf arr;
    db_array_start(&arr);
    for (int i = 0; i < n; i++) {
        db_array_add(&arr, ids[i]);
        known[i] = 0;
    }
    const char *params[] = {db_array_end(&arr), extra};
    PGresult *r = PQexecParams(st->c, sql, extra ? 2 : 1, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        for (int i = 0; i < PQntuples(r); i++) {
            int k = atoi(PQgetvalue(r, i, 0)) - 1;
            if (k < 0 || k >= n)
                continue;
            known[k] = 1;
            if (values)
                values[k] = atol(PQgetvalue(r, i, 1));
        }
    } else {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (!state || strcmp(state, "42P01") != 0) { /* 42P01: undefined_table */
            log_error("postgres: %s", PQresultErrorMessage(r));
            rc = -1;
        }
    }
    PQclear(r);
    buf_cleanup(&arr);
    return rc;
}

int store_known_users(struct store *st, const char *const *ids, int n, int *known)
{
    return lookup_ids(st,
                      "SELECT t.ord FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, ord) "
                      "JOIN users u ON u.id = t.id",
                      NULL, ids, n, known, NULL);
}

int store_quota_counts(struct store *st, const char *const *senders, int n, const char *day, long *counts)
{
    int *found = xcalloc((size_t)(n ? n : 1), sizeof *found);
    for (int i = 0; i < n; i++)
        counts[i] = 0;
    int rc = lookup_ids(st,
                        "SELECT t.ord, q.n FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, ord) "
                        "JOIN message_quota q ON q.sender_id = t.id AND q.day = $2::date",
                        day, senders, n, found, counts);
    free(found);
    return rc;
}

int store_prune_quota(struct store *st, const char *day)
{
    const char *params[] = {day};
    PGresult *r = run(st, PGRES_COMMAND_OK, "DELETE FROM message_quota WHERE day < $1::date - 1", 1, params);
    PQclear(r);
    return r ? 0 : -1;
}

void store_rows_cleanup(struct store_row *rows, int n)
{
    for (int i = 0; i < n; i++) {
        free(rows[i].content);
        free(rows[i].cmid);
        rows[i].content = rows[i].cmid = NULL;
    }
}

enum store_read store_mark_read(struct store *st, const char *message_id, const char *reader, char *sender,
                                long long *read_ms)
{
    const char *params[] = {message_id, reader};
    PGresult *r =
        run(st, PGRES_TUPLES_OK,
            "UPDATE messages SET read_at = now() WHERE id = $1 AND recipient_id = $2 AND read_at IS NULL "
            "RETURNING sender_id, floor(extract(epoch FROM read_at) * 1000)::bigint",
            2, params);
    if (!r)
        return STORE_READ_ERROR;
    if (PQntuples(r) == 1) {
        snprintf(sender, IDS_UUID_LEN + 1, "%s", PQgetvalue(r, 0, 0));
        *read_ms = atoll(PQgetvalue(r, 0, 1));
        PQclear(r);
        return STORE_READ_OK;
    }
    PQclear(r);
    /* Nothing updated: say why. */
    r = run(st, PGRES_TUPLES_OK,
            "SELECT recipient_id = $2::uuid, sender_id, floor(extract(epoch FROM read_at) * 1000)::bigint "
            "FROM messages WHERE id = $1",
            2, params);
    if (!r)
        return STORE_READ_ERROR;
    enum store_read res = PQntuples(r) == 0                       ? STORE_READ_NOT_FOUND
                          : strcmp(PQgetvalue(r, 0, 0), "t") != 0 ? STORE_READ_FORBIDDEN
                                                                  : STORE_READ_ALREADY;
    if (res == STORE_READ_ALREADY) {
        snprintf(sender, IDS_UUID_LEN + 1, "%s", PQgetvalue(r, 0, 1));
        *read_ms = atoll(PQgetvalue(r, 0, 2));
    }
    PQclear(r);
    return res;
}

int store_history(struct store *st, const char *user, const char *with, const char *before_id, int limit,
                  struct store_row **rows)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *params[] = {user, with, *before_id ? before_id : NULL, lim};
    PGresult *r = run(st, PGRES_TUPLES_OK,
                      "SELECT " ROW_COLUMNS " FROM messages m "
                      "WHERE least(m.sender_id, m.recipient_id) = least($1::uuid, $2::uuid) "
                      "AND greatest(m.sender_id, m.recipient_id) = greatest($1::uuid, $2::uuid) "
                      "AND ($3::uuid IS NULL OR (m.created_at, m.id) < "
                      "(SELECT b.created_at, b.id FROM messages b WHERE b.id = $3::uuid)) "
                      "ORDER BY m.created_at DESC, m.id DESC LIMIT $4::int",
                      4, params);
    if (!r)
        return -1;
    int n = PQntuples(r);
    *rows = xcalloc((size_t)(n ? n : 1), sizeof **rows);
    for (int i = 0; i < n; i++)
        row_from(&(*rows)[i], r, i, 0);
    PQclear(r);
    return n;
}

#define CONV_READ_RANGE                                                                                      \
    "m.recipient_id = $1::uuid AND m.sender_id = $2::uuid AND (m.created_at, m.id) <= "                      \
    "(SELECT b.created_at, b.id FROM messages b WHERE b.id = $3::uuid AND ((b.sender_id = $1::uuid AND "     \
    "b.recipient_id = $2::uuid) OR (b.sender_id = $2::uuid AND b.recipient_id = $1::uuid)))"

enum store_read store_mark_conversation_read(struct store *st, const char *reader, const char *with,
                                             const char *up_to, long long since_ms,
                                             struct store_receipt **out, int *n)
{
    *out = NULL;
    *n = 0;
    const char *params[] = {reader, with, up_to, NULL};
    /* One statement: the unread of the range, through messages_unread. */
    PGresult *r =
        run(st, PGRES_TUPLES_OK,
            "WITH upd AS (UPDATE messages m SET read_at = now() WHERE m.read_at IS NULL AND " CONV_READ_RANGE
            " RETURNING m.id, m.created_at, m.read_at) "
            "SELECT id, floor(extract(epoch FROM read_at) * 1000)::bigint FROM upd ORDER BY created_at, id",
            3, params);
    if (!r)
        return STORE_READ_ERROR;
    char since[32];
    if (since_ms > 0) {
        /* A redelivery: what this command may have marked on its first try
         * too. The 5 s cover a clock of PostgreSQL behind nats-server's. */
        PQclear(r);
        snprintf(since, sizeof since, "%lld", since_ms - 5000);
        params[3] = since;
        r = run(st, PGRES_TUPLES_OK,
                "SELECT m.id, floor(extract(epoch FROM m.read_at) * 1000)::bigint FROM messages m "
                "WHERE " CONV_READ_RANGE
                " AND m.read_at >= 'epoch'::timestamptz + $4::bigint * interval '1 millisecond' "
                "ORDER BY m.created_at, m.id",
                4, params);
        if (!r)
            return STORE_READ_ERROR;
    }
    int rows = PQntuples(r);
    if (rows == 0) {
        PQclear(r);
        r = run(st, PGRES_TUPLES_OK,
                "SELECT 1 FROM messages b WHERE b.id = $3::uuid AND ((b.sender_id = $1::uuid AND "
                "b.recipient_id = "
                "$2::uuid) OR (b.sender_id = $2::uuid AND b.recipient_id = $1::uuid))",
                3, params);
        if (!r)
            return STORE_READ_ERROR;
        enum store_read res = PQntuples(r) == 1 ? STORE_READ_OK : STORE_READ_NOT_FOUND;
        PQclear(r);
        return res;
    }
    *out = xcalloc((size_t)rows, sizeof **out);
    for (int i = 0; i < rows; i++) {
        snprintf((*out)[i].id, sizeof(*out)[i].id, "%s", PQgetvalue(r, i, 0));
        (*out)[i].read_ms = atoll(PQgetvalue(r, i, 1));
    }
    *n = rows;
    PQclear(r);
    return STORE_READ_OK;
}

/* The page: the keyset on conversations_recent, then per row its last
 * message (by primary key), the other user's name and the unread count
 * (messages_unread). %s: the name's expression and join (presence's users
 * table, or nothing when it does not exist yet). */
#define CONVERSATIONS_SQL                                                                                    \
    "SELECT c.with_user_id, %s, floor(extract(epoch FROM c.last_at) * 1000000)::bigint, "                    \
    "(SELECT count(*) FROM messages n WHERE n.recipient_id = $1::uuid AND n.sender_id = c.with_user_id "     \
    "AND n.read_at IS NULL), " ROW_COLUMNS " FROM conversations c JOIN messages m ON m.id = c.last_id %s "   \
    "WHERE c.user_id = $1::uuid AND ($3::uuid IS NULL OR (c.last_at, c.with_user_id) < "                     \
    "('epoch'::timestamptz + $2::bigint * interval '1 microsecond', $3::uuid)) "                             \
    "ORDER BY c.last_at DESC, c.with_user_id DESC LIMIT $4::int"

int store_conversations(struct store *st, const char *user, long long before_us, const char *before_with,
                        int limit, struct store_conv **out)
{
    char lim[16], before[24], sql[1536];
    snprintf(lim, sizeof lim, "%d", limit);
    snprintf(before, sizeof before, "%lld", before_us);
    const char *params[] = {user, before, *before_with ? before_with : NULL, lim};
    *out = NULL;
    snprintf(sql, sizeof sql, CONVERSATIONS_SQL, "coalesce(u.username, '')",
             "LEFT JOIN users u ON u.id = c.with_user_id");
    PGresult *r = PQexecParams(st->c, sql, 4, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        int no_users = state && strcmp(state, "42P01") == 0; /* undefined_table: presence never ran */
        if (!no_users)
            log_error("postgres: %s", PQresultErrorMessage(r));
        PQclear(r);
        if (!no_users)
            return -1;
        snprintf(sql, sizeof sql, CONVERSATIONS_SQL, "''", "");
        if (!(r = run(st, PGRES_TUPLES_OK, sql, 4, params)))
            return -1;
    }
    int n = PQntuples(r);
    *out = xcalloc((size_t)(n ? n : 1), sizeof **out);
    for (int i = 0; i < n; i++) {
        struct store_conv *cv = &(*out)[i];
        snprintf(cv->with, sizeof cv->with, "%s", PQgetvalue(r, i, 0));
        cv->username = xstrdup(PQgetvalue(r, i, 1));
        cv->last_at_us = atoll(PQgetvalue(r, i, 2));
        cv->unread = atol(PQgetvalue(r, i, 3));
        row_from(&cv->last, r, i, 4);
    }
    PQclear(r);
    return n;
}

int store_partners(struct store *st, const char *user, int limit, char (**ids)[IDS_UUID_LEN + 1])
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *params[] = {user, lim};
    *ids = NULL;
    PGresult *r = run(st, PGRES_TUPLES_OK,
                      "SELECT with_user_id FROM conversations WHERE user_id = $1::uuid "
                      "ORDER BY last_at DESC, with_user_id DESC LIMIT $2::int",
                      2, params);
    if (!r)
        return -1;
    int n = PQntuples(r);
    *ids = xcalloc((size_t)(n ? n : 1), sizeof **ids);
    for (int i = 0; i < n; i++)
        snprintf((*ids)[i], sizeof(*ids)[i], "%s", PQgetvalue(r, i, 0));
    PQclear(r);
    return n;
}

void store_convs_cleanup(struct store_conv *convs, int n)
{
    for (int i = 0; i < n; i++) {
        free(convs[i].username);
        store_rows_cleanup(&convs[i].last, 1);
        convs[i].username = NULL;
    }
}
