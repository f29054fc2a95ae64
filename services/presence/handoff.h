/* handoff: presence's state cut into NATS-sized pieces, and put back together.
 * Two shapes: the online list as PresenceSnapshot chunks (for edges that keep
 * a copy of it), and a replica's whole roster as PresenceState chunks (for a
 * replica that starts while another is active). Every chunk is one packed
 * message of at most HANDOFF_CHUNK_BYTES, whatever the number of users, so no
 * list is bounded by NATS's max payload. Pure: protobuf and the roster, no
 * NATS, no clock. */
#ifndef HANDOFF_H
#define HANDOFF_H

#include <stddef.h>
#include <stdint.h>

#include "mem.h"
#include "roster.h"

/* A quarter of NATS's default max payload (1 MB). */
#define HANDOFF_CHUNK_BYTES (256 * 1024)

/* Packed messages, in the order they must be sent. */
struct handoff_chunks {
    struct buf *bufs;
    size_t n;
};

void handoff_chunks_cleanup(struct handoff_chunks *c);

/* The n users of infos (roster_online's answer) as PresenceSnapshot chunks
 * stamped with epoch and seq (the last change included). At least one chunk,
 * empty when n is 0. */
void handoff_snapshot(struct handoff_chunks *out, const struct roster_info *infos, size_t n,
                      const char *epoch, uint64_t seq);

/* The whole roster (edges, users, their sessions) as PresenceState chunks. */
void handoff_state(struct handoff_chunks *out, const struct roster *r, const char *epoch, uint64_t seq);
/* One PresenceState chunk saying "not now" (the active is in a resync window). */
void handoff_not_ready(struct handoff_chunks *out, const char *epoch);

/* ---- receiving a PresenceState ---- */

struct handoff_import;

/* Edges of the new roster count as heard at mono_ms. */
struct handoff_import *handoff_import_create(long long mono_ms);
/* Accepts NULL. */
void handoff_import_destroy(struct handoff_import *im);
/* Feeds the next chunk as received. Returns 1 when it was the last one, 0 when
 * more are due, and -1 when the transfer cannot go on: not a PresenceState, a
 * chunk out of order or of another epoch, or not_ready (*not_ready set). */
int handoff_import_add(struct handoff_import *im, const void *data, size_t len, int *not_ready);
/* After the last chunk: the roster built (the caller owns it and sets its
 * grace period; every user's shown status is its public one, users with no
 * session and no grace period are dirty so that they are settled or written
 * like any other, users in the grace period keep the time their last session
 * closed), and the epoch and seq it is as of. */
struct roster *handoff_import_take(struct handoff_import *im, char *epoch, size_t epoch_size, uint64_t *seq);

#endif
