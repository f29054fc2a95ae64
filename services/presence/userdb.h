/* userdb: presence's table, users, in PostgreSQL: schema migrations, whole-row
 * writes of the roster's dirty users (many in one statement), and reads by id
 * or of everyone marked online. Survives the database going away: the connection is re-dialled in the
 * background with backoff, and every call fails fast (-1) while it is down. */
#ifndef USERDB_H
#define USERDB_H

#include <stddef.h>

#include "roster.h"

struct userdb;
/* A connected and migrated connection, not yet in use (see userdb_dial). */
struct userdb_link;

/* Keeps conninfo (borrowed: it must outlive the store); connects later. Returns
 * NULL after logging when conninfo cannot be parsed (a config error). */
struct userdb *userdb_create(const char *conninfo);
/* Closes the connection. Accepts NULL. */
void userdb_destroy(struct userdb *db);

/* Threads: userdb_dial runs on one thread (the ticker) without the caller's
 * lock, since connecting can block for seconds; every other call runs under
 * the caller's lock. */

/* 1 when a connection is in use. */
int userdb_up(const struct userdb *db);
/* When the store is down and the backoff (250 ms doubling to 5 s) has passed at
 * mono_ms: dials, migrates and returns the link; else NULL. Logs once per
 * outage. */
struct userdb_link *userdb_dial(struct userdb *db, long long mono_ms);
/* Puts the link in use (takes ownership). */
void userdb_attach(struct userdb *db, struct userdb_link *link);

/* Writes the whole rows of the n users (distinct ids) in one statement, so one
 * transaction: all of them or none. An empty username or a last_seen of 0 keeps
 * the stored one. Signature of roster_flush's save, with db as ctx. Returns 0,
 * or -1 when the store is down or the statement failed. */
int userdb_save(void *db, const struct roster_user *const *users, size_t n);
/* Reads the rows of ids (canonical lowercase uuids) and calls row_cb once per
 * row found, in no particular order; row strings die when row_cb returns.
 * Returns 0, or -1 when the store is down or the query failed. */
int userdb_load(struct userdb *db, const char *const *ids, size_t n,
                void (*row_cb)(void *ctx, const struct roster_row *row), void *ctx);
/* Same, for every row with online = true. */
int userdb_online(struct userdb *db, void (*row_cb)(void *ctx, const struct roster_row *row), void *ctx);

#endif
