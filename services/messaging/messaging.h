/* messaging: the message pipeline of chat-messaging. Commands come from the
 * JetStream stream CHAT_CMD: sends through one durable pull consumer per
 * partition of senders, reads through one shared consumer. A replica serves a
 * partition only while it holds that partition's PostgreSQL advisory lock, so
 * one sender's messages are committed and delivered by one process, in order;
 * replicas share the partitions evenly. Each fetched batch is one
 * transaction; deliveries, taps and acks to the client follow the COMMIT, the
 * JetStream ack comes last. History queries are answered on
 * chat.query.messages (queue group). */
#ifndef MESSAGING_H
#define MESSAGING_H

#include "bus.h"

struct messaging_config {
    const char *nats_url;
    const char *database_url;
    const char *log_level;
    long partitions;      /* CHAT_PARTITIONS: the same value as the edges' */
    long stream_replicas; /* CHAT_STREAM_REPLICAS: streams and consumers */
    long batch;           /* largest fetch and transaction */
    long ack_wait_ms;     /* JetStream redelivery delay of an unacked command */
    const char *health_host;
    long health_port; /* GET /healthz and /metrics; 0: off */
};

struct messaging;

/* Starts the workers (they connect to PostgreSQL and set up JetStream in the
 * background, retrying until both are there). */
struct messaging *messaging_start(const struct messaging_config *cfg, struct bus *bus);
/* bus on_connect hook (nats.c thread): after a reconnection, deliveries
 * wait a grace period for the edges to re-subscribe. */
void messaging_bus_connected(void *closure);
/* For lib/admin.c (closure: the messaging): 1 when NATS, JetStream set-up and
 * PostgreSQL are all there. */
int messaging_healthy(void *closure);
/* Stops and joins the workers, closes everything. */
void messaging_stop(struct messaging *m);

#endif
