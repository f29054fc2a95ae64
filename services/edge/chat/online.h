/* online: an edge's copy of the online list (docs/architecture.md §Presence),
 * kept from what the active presence replica says. A snapshot
 * (PresenceSnapshot chunks, chunk 0 first, on the reply subject of one
 * request) sets it as of one point of the replica's stream of numbered
 * changes (epoch, seq); the changes of that epoch that follow, each seq one
 * more than the last, keep it in step. A gap, another epoch, or a snapshot
 * that breaks off leaves it out of step until the next snapshot is whole. An
 * epoch the copy left for another (its snapshot came from a later active) is
 * over: its stray changes are skipped.
 *
 * While a snapshot is on its way the changes heard are buffered, then applied
 * after it (the ones it holds already, by seq, are skipped). A change heard
 * before the request went out needs no buffering: presence published it
 * before it read the request, so the snapshot holds it (or its epoch is over).
 *
 * Each user is kept as the JSON object clients get, {userId, username,
 * status, lastSeen} (chat_wire_presence_info), written once when the user
 * changes, so that a presence:update list is a copy of bytes (in no
 * particular order, as presence's own list was). Users online or away with a
 * lastSeen are kept; an offline user, or one never seen (no lastSeen), is not
 * (chat_json_presence_seen). An entry that cannot be written (a user id that
 * is not 1-36 plain characters, a username longer than AUTH_MAX_USERNAME
 * bytes or not UTF-8) is left out and counted.
 *
 * Memory per user: a 24-byte entry, its JSON (about 100 bytes and the
 * username) and 8 bytes of index. Pure: no NATS, no clock, no loop
 * (chat_online.c asks for the snapshots). */
#ifndef ONLINE_H
#define ONLINE_H

#include <stddef.h>
#include <stdint.h>

#include "chat.pb-c.h"
#include "mem.h"

/* Most bytes of changes buffered while a snapshot is on its way; past it the
 * snapshot is given up and asked again. */
#define ONLINE_MAX_BUFFERED (16u * 1024 * 1024)
/* Epochs left behind that are remembered (their stray changes skipped). */
#define ONLINE_RETIRED 4

enum online_verdict {
    ONLINE_APPLIED,  /* a change: applied; the copy is in step */
    ONLINE_SKIPPED,  /* a change: held already, of an epoch left behind, or heard out of step with no
                      * snapshot on its way (the next one will hold it) */
    ONLINE_BUFFERED, /* a change: kept for after the snapshot on its way */
    ONLINE_MORE,     /* a snapshot chunk: taken; more are to come */
    ONLINE_IN_STEP,  /* a snapshot chunk: the last one; the copy is in step */
    ONLINE_AGAIN,    /* out of step now: ask for a new snapshot (*why says why) */
};

/* Why ONLINE_AGAIN (*why): "gap" (a change that skips a seq), "epoch" (a
 * change of another epoch), "overflow" (more than ONLINE_MAX_BUFFERED of
 * changes while the snapshot came), "chunk" (a chunk out of order, of another
 * epoch or seq, or when none was asked for). */

struct online;

struct online *online_create(void);
void online_destroy(struct online *o);

/* A snapshot request went out: what comes now is buffered for after it, the
 * changes buffered before are dropped (the snapshot holds them). The copy is
 * out of step until the snapshot is whole. */
void online_asked(struct online *o);
/* One chunk of the snapshot asked for. ONLINE_MORE, ONLINE_IN_STEP (the
 * buffered changes applied), or ONLINE_AGAIN: a chunk out of order or of
 * another epoch or seq, no snapshot asked, or a buffered change that puts the
 * new copy out of step again (a gap, a later epoch). */
enum online_verdict online_chunk(struct online *o, const Chat__V1__PresenceSnapshot *s, const char **why);
/* The copy is out of step (NATS reconnected: changes may have been lost);
 * the snapshot on its way, if any, is given up (timeout, no responder). */
void online_lost(struct online *o);
/* One PresenceChange heard, in the order heard. */
enum online_verdict online_change(struct online *o, const Chat__V1__PresenceChange *pc, const char **why);

/* 1 when the copy is in step. */
int online_in_step(const struct online *o);
/* 1 while a snapshot is on its way (online_asked, not whole or given up). */
int online_asking(const struct online *o);
/* Users in the copy. */
size_t online_count(const struct online *o);
/* Bumped by everything that changes what online_write writes. */
unsigned long long online_gen(const struct online *o);
/* The epoch and seq the copy is at ("" and 0 before the first snapshot). */
const char *online_epoch(const struct online *o);
uint64_t online_seq(const struct online *o);
/* Entries left out since the start (not writable: see above). */
size_t online_left_out(const struct online *o);

/* Appends 2["<event>",[<every user of the copy>]] to b (a Socket.IO EVENT
 * packet, as chat_wire_presence_list writes one). */
void online_write(const struct online *o, struct buf *b, const char *event);
/* The JSON of user id in the copy (*len its length), or NULL: not online. */
const char *online_get(const struct online *o, const char *id, size_t *len);
/* The same packet with only those of the n ids that are in the copy, in the
 * order given (ids distinct). */
void online_write_only(const struct online *o, struct buf *b, const char *event, const char *const *ids,
                       size_t n);

#endif
