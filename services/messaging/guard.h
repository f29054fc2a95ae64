/* guard: what messaging checks before it stores a send, once the command's
 * shape is right:
 *   - the recipient is a user the system has seen, i.e. has a row in
 *     presence's users table (MESSAGING_REQUIRE_KNOWN_RECIPIENT; both
 *     services share one database, messaging only reads that table): a
 *     message to an id nobody ever used is refused, not stored;
 *   - the sender is within its send quota (MESSAGING_SENDS_PER_MIN and
 *     _PER_DAY, quota.c, one per partition: all sends of a sender go through
 *     the partition's one worker).
 * No query per message: known ids are cached (seen.c, bounded), and a batch
 * costs at most one query for the recipients not cached and one for the day
 * counts of senders first seen since the partition was taken. */
#ifndef GUARD_H
#define GUARD_H

#include "store.h"

struct guard_config {
    int require_known; /* refuse sends to users never seen */
    long per_min;      /* sends per sender per minute; 0: no limit */
    long per_day;      /* sends per sender per UTC day; 0: no limit */
};

enum guard_verdict {
    GUARD_OK,                /* may be stored (its quota is charged) */
    GUARD_UNKNOWN_RECIPIENT, /* not_found */
    GUARD_QUOTA,             /* rate_limited, with a retry time */
};

struct guard;

/* cfg is copied. partitions: CHAT_PARTITIONS. */
struct guard *guard_create(const struct guard_config *cfg, unsigned partitions);
void guard_destroy(struct guard *g);
/* This replica has just taken partition: its senders' counts are read again
 * (another replica may have stored for them meanwhile). Call from the
 * partition's worker. */
void guard_taken(struct guard *g, unsigned partition);

/* Decides for each of the n sends of one batch of partition, in order:
 * verdict[i], and retry_ms[i] for GUARD_QUOTA. The sends found GUARD_OK are
 * charged to their senders' quotas. Call from the partition's worker, with
 * its connection. Returns 0, or -1 when PostgreSQL could not answer (then
 * nothing is charged). */
int guard_check(struct guard *g, unsigned partition, struct store *st, const struct store_msg *in, int n,
                long long now_ms, enum guard_verdict *verdict, long long *retry_ms);
/* Gives back the charge of a GUARD_OK send that was not stored after all. */
void guard_refund(struct guard *g, unsigned partition, const char *sender, long long now_ms);
/* The day ("YYYY-MM-DD" in buf, 11 bytes) to whose per-sender counter the
 * batch's INSERT must add its rows, or NULL when there is no day limit. */
const char *guard_count_day(const struct guard *g, long long now_ms, char *buf);

#endif
