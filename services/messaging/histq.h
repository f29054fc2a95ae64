/* histq: the history queries waiting for a worker, fair between users. Each
 * user has a FIFO; the users that have queries queued are served
 * round-robin, so a user with a long backlog delays another user's query by
 * at most one of its own per turn, never by its whole backlog. Bounded three
 * ways, each checked when a query arrives (it is refused at once rather than
 * queued): queries queued in all, queries queued or running per user, and
 * queries per second per user (a token bucket, burst twice the rate). Pure
 * and not thread-safe: the caller locks around every call. */
#ifndef HISTQ_H
#define HISTQ_H

#include <stddef.h>

struct histq_limits {
    long max_queued; /* queued, all users together (>= 1) */
    long per_user;   /* queued + running of one user; 0: no limit */
    long per_s;      /* accepted per second per user, burst twice that; 0: no limit */
};

enum histq_verdict {
    HISTQ_OK,        /* queued */
    HISTQ_FULL,      /* max_queued reached */
    HISTQ_USER_BUSY, /* the user has per_user queries queued or running */
    HISTQ_USER_RATE, /* the user is over per_s */
};

struct histq;

struct histq *histq_create(const struct histq_limits *lim);
/* Frees the queue and calls free_item (when not NULL) on each queued item. */
void histq_destroy(struct histq *q, void (*free_item)(void *item));

/* Queues item (borrowed until popped) for user (copied). Anything but
 * HISTQ_OK queues nothing; *retry_ms is then the time after which the user
 * would be let in (HISTQ_USER_RATE), or 0 when that cannot be told. */
enum histq_verdict histq_push(struct histq *q, const char *user, void *item, long long now_ms,
                              long long *retry_ms);
/* The next query, round-robin over the users, or NULL when none is queued.
 * *user is its user, valid until histq_done(q, *user, ...), which the caller
 * must call once the query has run (or been dropped): until then it counts as
 * running for that user. */
void *histq_pop(struct histq *q, const char **user);
void histq_done(struct histq *q, const char *user, long long now_ms);

/* Queries queued now, all users together. */
size_t histq_queued(const struct histq *q);
/* Users the queue keeps state for (queued, running, or a bucket refilling). */
size_t histq_users(const struct histq *q);

#endif
