/* relay: the one door from nats.c threads into the loop's thread
 * (docs/architecture.md §Threads): a mutex-protected, bounded queue plus a
 * wake-up of the loop, coalesced until the loop takes the queue. */
#ifndef RELAY_H
#define RELAY_H

#include <stddef.h>

enum relay_kind {
    RELAY_USER,     /* a Delivery for chat.user.<key> */
    RELAY_EDGE,     /* a CommandResult for this edge */
    RELAY_REPLY,    /* the reply to request <key> */
    RELAY_NO_REPLY, /* request <key> found no responder */
    RELAY_STATUS,   /* a PresenceChange for every socket */
    RELAY_RESYNC,   /* presence restarted: announce every session again */
};

struct relay_item {
    struct relay_item *next;
    enum relay_kind kind;
    char key[40];
    size_t len;
    unsigned char data[];
};

struct relay;

/* max_bytes bounds what may wait in the queue; past it items are dropped and
 * counted, a delivery among them (the loop is stalled that long: a client
 * that stayed connected finds such a message in its history). */
struct relay *relay_create(void (*wake)(void *ctx), void *wake_ctx, size_t max_bytes);
void relay_destroy(struct relay *r);
/* Any thread. Copies data. Returns 0, or -1 when dropped. */
int relay_push(struct relay *r, enum relay_kind kind, const char *key, const void *data, size_t len);
/* Loop thread: takes every queued item, oldest first (free() each). */
struct relay_item *relay_take(struct relay *r);
/* No more wake-ups (shutdown): later pushes are dropped. */
void relay_stop(struct relay *r);

#endif
