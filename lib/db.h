/* db: the PostgreSQL plumbing every service shares: connect with an
 * application name (so replicas can count each other), and run versioned,
 * idempotent migrations under an advisory lock. Services keep their SQL in
 * their own store files. */
#ifndef DB_H
#define DB_H

#include <libpq-fe.h>

/* Connects to conninfo (a libpq conninfo string or URI; "" = the PG*
 * environment variables) with application_name set; the server's notices and
 * warnings on that connection are logged through log.h. Returns NULL after
 * logging when the server cannot be reached. */
PGconn *db_connect(const char *conninfo, const char *app_name);

/* Applies steps[version-1] for every version above the one recorded for
 * service in schema_migrations, each in its own transaction, holding an
 * advisory lock so that replicas starting together migrate once. Returns 0, or
 * -1 after logging. */
int db_migrate(PGconn *c, const char *service, const char *const *steps, int nsteps);

/* Runs one statement without parameters; returns 0, or -1 after logging. */
int db_exec(PGconn *c, const char *sql);

/* 1 when the connection is usable (reset it otherwise). */
int db_ok(PGconn *c);

/* Array literals, one text parameter per column for `unnest($n::type[])`:
 * db_array_start, db_array_add per element, then db_array_end gives the
 * parameter (valid until b is cleaned up). Every element is quoted, with "
 * and \ escaped, so that any text (commas, braces, quotes, "NULL") stays one
 * element; s NULL adds SQL NULL. */
struct buf;
void db_array_start(struct buf *b);
void db_array_add(struct buf *b, const char *s);
const char *db_array_end(struct buf *b);

#endif
