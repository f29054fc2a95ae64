/* relay: the one door from nats.c threads into the loop's thread
 * (docs/architecture.md §Threads): a mutex-protected, bounded queue plus a
 * wake-up of the loop, coalesced until the loop takes the queue. */
#ifndef RELAY_H
#define RELAY_H

#include <stddef.h>

enum relay_kind {
    RELAY_USER,         /* a Delivery for chat.user.<key> */
    RELAY_EDGE,         /* a CommandResult for this edge */
    RELAY_REPLY,        /* the reply to request <key> */
    RELAY_NO_REPLY,     /* request <key> found no responder */
    RELAY_STATUS,       /* a PresenceChange for every socket */
    RELAY_RESYNC,       /* a ResyncRequest: announce every session again, if it asks this edge */
    RELAY_CONNECTED,    /* NATS (re)connected: announce every session again, a new online list snapshot */
    RELAY_RECORD,       /* a CHAT_EVENTS record: key its stream sequence, data subject NUL payload */
    RELAY_RECORDS,      /* the records consumer starts after stream sequence <key> */
    RELAY_RECOVERY,     /* the outcome of socket <key>'s recovery (chat_recovery.c) */
    RELAY_RELEASE,      /* another edge asks for a socket (chat_recovery.c) */
    RELAY_RELEASE_HERE, /* a recovery worker asks this edge for a socket: data a pointer */
};

struct relay_item {
    struct relay_item *next;
    enum relay_kind kind;
    char key[40];
    size_t len;
    unsigned char data[];
};

struct relay;

/* max_bytes bounds what may wait in the queue; past it relay_push drops
 * (and counts) what it is given: an ephemeral signal, a status, a service's
 * answer (the client's request then times out). Records and recovery
 * outcomes go through relay_push_wait, which waits instead. */
struct relay *relay_create(void (*wake)(void *ctx), void *wake_ctx, size_t max_bytes);
void relay_destroy(struct relay *r);
/* Any thread. Copies data. Returns 0, or -1 when dropped. */
int relay_push(struct relay *r, enum relay_kind kind, const char *key, const void *data, size_t len);
/* The same for what must not be dropped (records, recovery outcomes): when
 * the queue is full, waits until the loop has taken it (backpressure on the
 * calling NATS thread) or the relay stops (-1). */
int relay_push_wait(struct relay *r, enum relay_kind kind, const char *key, const void *data, size_t len);
/* Loop thread: takes every queued item, oldest first (free() each). */
struct relay_item *relay_take(struct relay *r);
/* No more wake-ups (shutdown): later pushes are dropped. */
void relay_stop(struct relay *r);

#endif
