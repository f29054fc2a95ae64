/* bus: the thin nats.c layer every service uses: connect to NATS_URL (one
 * server, or a cluster's servers comma-separated) with reconnection forever
 * (and retry when NATS is not up yet at start), publish packed protobuf, drain
 * on exit. Subscriptions use the nats.c API directly on bus->nc; their
 * callbacks run on nats.c threads. */
#ifndef BUS_H
#define BUS_H

#include <nats/nats.h>
#include <protobuf-c/protobuf-c.h>

struct bus {
    natsConnection *nc;
    natsOptions *opts;
    volatile int closing; /* set by bus_close: a disconnect is expected */
    /* Called on a nats.c thread after every (re)connection, when set before
     * bus_open. */
    void (*on_connect)(void *closure);
    void *on_connect_closure;
    /* Set before bus_open: the connection does not receive what it publishes
     * itself (NATS no_echo), for a process that delivers its own locally. */
    int no_echo;
    /* Set before bus_open: while the connection is down, publishing fails at
     * once instead of being held until the reconnection, for a process whose
     * messages must not arrive late (presence: a replica that lost its lease
     * meanwhile must not be heard after the new active). */
    int no_reconnect_buffer;
    struct bus_graveyard *graveyard; /* bus_sub_retire's subscriptions, freed later */
};

/* Connects (or keeps trying in the background when the server is not up).
 * url: "nats://host:port", or several comma-separated: they are tried in the
 * order given (not randomised), first at start and then on every reconnection
 * from the one after the server just lost; the cluster's other servers are
 * learnt from it too. Keeps on_connect/on_connect_closure, no_echo and
 * no_reconnect_buffer if the caller set them.
 * send_asap: 1 for request/reply responders (lower latency, docs/architecture.md §Libraries).
 * Returns 0, or -1 after logging the nats.c error (bad URL...). */
int bus_open(struct bus *b, const char *url, const char *name, int send_asap);
/* Flushes what was published (bounded by timeout_ms), closes and frees. Accepts a
 * bus that was never opened. */
void bus_close(struct bus *b, int timeout_ms);
/* Packs m and publishes it. Returns 0, or -1 when NATS does not take it. */
int bus_publish(struct bus *b, const char *subject, const ProtobufCMessage *m);
/* Packs m and publishes it to JetStream without waiting for the ack (a
 * failure comes back to the jsCtx's PublishAsync error handler). msg_id: the
 * Nats-Msg-Id that makes a republication within the stream's duplicate
 * window a no-op, or NULL. max_wait_ms: how long nats.c waits for the ack (0:
 * its default). Returns what js_PublishAsync returns. */
natsStatus bus_js_publish(jsCtx *js, const char *subject, const char *msg_id, long max_wait_ms,
                          const ProtobufCMessage *m);
/* Ends a subscription of b->nc and sets *sub to NULL. unsubscribe: 1 to tell
 * the server now (a JetStream subscription's consumer is then deleted if
 * nats.c created it); 0 to leave the interest until the connection closes
 * (a pull subscription on a durable that must stay). The object itself is
 * freed later: BUS_RETIRE_MS after, or when bus_close has closed the
 * connection. nats.c 3.4.1 looks a subscription up by its sid under the
 * connection's lock and takes the subscription's own lock only after letting
 * the first go, without holding a reference: a message arriving while the
 * subscription is destroyed is delivered to freed memory (a crash of the
 * reader thread, seen when a pull consumer's timeout status met a stop).
 * Thread-safe; does nothing for NULL. */
void bus_sub_retire(struct bus *b, natsSubscription **sub, int unsubscribe);
#define BUS_RETIRE_MS 2000
/* 1 when the connection is up now. */
int bus_connected(const struct bus *b);

#endif
