/* quota: the send budget of the senders of one partition, kept by the worker
 * that owns the partition (all sends of a sender go through it). Two limits,
 * each 0 for off:
 *   per minute: a bucket of per_min sends refilled continuously, so a sender
 *     who used it up may send one more 60/per_min s later;
 *   per UTC day: a count, which the caller loads (quota_load) from
 *     PostgreSQL's per-day counter the first time it sees a sender, so that
 *     it survives a fail-over; the counter is written in the batch's own
 *     statement. The minute bucket starts full on a new owner.
 * Pure and not thread-safe. Senders idle for a minute are forgotten once the
 * table has doubled since the last sweep (their day count is reloaded). */
#ifndef QUOTA_H
#define QUOTA_H

#include <stddef.h>

struct quota_limits {
    long per_min; /* sends per minute per sender; 0: no limit */
    long per_day; /* sends per UTC day per sender; 0: no limit */
};

struct quota;

struct quota *quota_create(const struct quota_limits *lim);
void quota_destroy(struct quota *q);
/* Forgets every sender (the partition changed hands: reload the counts). */
void quota_reset(struct quota *q);

/* 1 when sender's count for today must be given (quota_load) before
 * quota_take; always 0 without a day limit. */
int quota_needs_load(struct quota *q, const char *sender);
/* Sets sender's count for the UTC day of now_ms (already stored sends). */
void quota_load(struct quota *q, const char *sender, long count, long long now_ms);
/* Charges one send to sender: returns 0 when it is within both limits, else
 * charges nothing and returns the milliseconds until a send of this sender
 * would be within them (> 0). */
long long quota_take(struct quota *q, const char *sender, long long now_ms);
/* Gives back one send charged by quota_take that was not stored after all
 * (it was a resend of a stored message). */
void quota_refund(struct quota *q, const char *sender, long long now_ms);

/* Senders kept in memory. */
size_t quota_senders(const struct quota *q);
/* The UTC day of now_ms as "YYYY-MM-DD" (out: 11 bytes), the counter's key. */
void quota_day(char *out, long long now_ms);

#endif
