/* store: messaging's PostgreSQL side, the only file of the service that
 * speaks SQL. One struct store is one connection; use it from one thread at
 * a time (libpq forbids sharing a connection between threads). */
#ifndef STORE_H
#define STORE_H

#include <stddef.h>

#include "ids.h"

struct store;

/* A message to insert. Strings are borrowed. cmid "" = none. */
struct store_msg {
    const char *id, *sender, *recipient, *type, *content, *cmid;
    long long created_us; /* Unix microseconds */
};

/* A stored message. content and cmid are owned (store_rows_cleanup). */
struct store_row {
    char id[IDS_UUID_LEN + 1], sender[IDS_UUID_LEN + 1], recipient[IDS_UUID_LEN + 1];
    char type[8];
    char *content, *cmid;
    long long created_ms, read_ms; /* read_ms 0 = unread */
    int found;                     /* store_insert_batch: 0 if no row came back */
    int inserted;                  /* store_insert_batch: 1 if this call stored it */
};

enum store_read {
    STORE_READ_OK,
    STORE_READ_ALREADY,
    STORE_READ_NOT_FOUND,
    STORE_READ_FORBIDDEN,
    STORE_READ_ERROR
};

/* Connects (application_name app) or returns NULL when PostgreSQL cannot be
 * reached (logged). */
struct store *store_open(const char *conninfo, const char *app);
void store_close(struct store *st);
/* 0 when the connection is usable. */
int store_ok(struct store *st);
/* Creates or migrates messaging's tables. */
int store_migrate(struct store *st);
/* Every statement of this connection that runs longer than ms is cancelled
 * (it then fails). Returns 0, or -1 after logging. */
int store_statement_timeout(struct store *st, long ms);

/* Partition ownership: a session-level advisory lock, released when the
 * connection ends (crash included). try_lock: 1 taken, 0 held elsewhere, -1
 * error. */
int store_try_lock(struct store *st, unsigned partition);
int store_unlock(struct store *st, unsigned partition);
/* Number of messaging replicas connected to the database (by application
 * name prefix), or -1. */
int store_count_replicas(struct store *st, const char *app_prefix);

/* Inserts n messages with one statement, its own transaction (ON CONFLICT DO
 * NOTHING on the id and on (sender, client message id)); with count_day
 * ("YYYY-MM-DD") the same statement adds the rows it stored to their
 * senders' counts for that day (message_quota). Returns, for
 * each input, the stored row: itself, or the earlier message with the same
 * client message id. Rows it stored come from the inputs; only the others
 * are read back. Returns 0 once committed (an input whose row could not be
 * read back then has found 0), or -1 (nothing committed, or not known to be;
 * the connection may be gone). */
int store_insert_batch(struct store *st, const struct store_msg *in, int n, const char *count_day,
                       struct store_row *out);
/* store_insert_batch's read-back alone, for inputs that were not inserted
 * (refused): for each, its stored row (by id, or by sender and client
 * message id) with found 1, or found 0 when there is none. Returns 0, or
 * -1 when the query failed. */
int store_find_batch(struct store *st, const struct store_msg *in, int n, struct store_row *out);
void store_rows_cleanup(struct store_row *rows, int n);

/* known[i] = 1 when ids[i] has a row in the users table (presence's: every
 * user ever connected), else 0; one query. No users table yet: none is
 * known. Returns 0, or -1 on error. */
int store_known_users(struct store *st, const char *const *ids, int n, int *known);
/* counts[i] = the sends of senders[i] stored on day ("YYYY-MM-DD", UTC)
 * (0 when none); one query. Returns 0, or -1 on error. */
int store_quota_counts(struct store *st, const char *const *senders, int n, const char *day, long *counts);
/* Deletes the per-day counts older than the day before day. */
int store_prune_quota(struct store *st, const char *day);

/* Marks message_id read by reader (only its recipient, only once). On
 * STORE_READ_OK and STORE_READ_ALREADY set sender and read_ms (the first read). */
enum store_read store_mark_read(struct store *st, const char *message_id, const char *reader, char *sender,
                                long long *read_ms);

/* The conversation of user and with, newest first, before the message
 * before_id ("" = from the newest), at most limit rows. Returns the count
 * (rows malloc'd into *rows), or -1. */
int store_history(struct store *st, const char *user, const char *with, const char *before_id, int limit,
                  struct store_row **rows);

/* One receipt of a conversation read: the message and when it was read. */
struct store_receipt {
    char id[IDS_UUID_LEN + 1];
    long long read_ms;
};

/* conversation:read: marks read, in one statement, every unread message of
 * with to reader up to and including up_to (by created_at, id), which must
 * be a message between the two (either direction). *out (malloc'd, *n
 * entries, in message order) are the messages it marked; with
 * since_ms > 0 (a redelivered command: JetStream stored it then), every
 * message of that range read since since_ms minus a few seconds instead, so
 * that the receipts of a first try that died before recording them are
 * recorded again (their Nats-Msg-Id drops the copies). Returns STORE_READ_OK
 * (n may be 0: nothing was unread), STORE_READ_NOT_FOUND (up_to is not a
 * message between them) or STORE_READ_ERROR. */
enum store_read store_mark_conversation_read(struct store *st, const char *reader, const char *with,
                                             const char *up_to, long long since_ms,
                                             struct store_receipt **out, int *n);

/* One item of conversation:list. last.content and last.cmid and username
 * are owned (store_convs_cleanup). */
struct store_conv {
    char with[IDS_UUID_LEN + 1];
    char *username; /* "" when presence's users table has no row (or no table) */
    struct store_row last;
    long unread;
    long long last_at_us; /* last.created_at in Unix microseconds: the keyset */
};

/* The conversations of user, latest activity first, after the keyset
 * (before_us, before_with) (before_with "": from the newest), at most limit.
 * Returns the count (malloc'd into *out), or -1. */
int store_conversations(struct store *st, const char *user, long long before_us, const char *before_with,
                        int limit, struct store_conv **out);
/* The users user has a conversation with, newest activity first, at most
 * limit, into *ids (free it). Returns how many, or -1. */
int store_partners(struct store *st, const char *user, int limit, char (**ids)[IDS_UUID_LEN + 1]);
void store_convs_cleanup(struct store_conv *convs, int n);

#endif
