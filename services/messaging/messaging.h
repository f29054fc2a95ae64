/* messaging: the message pipeline of chat-messaging. Commands come from the
 * JetStream stream CHAT_CMD: sends through one durable pull consumer per
 * partition of senders, reads through one shared consumer. A replica serves a
 * partition only while it holds that partition's PostgreSQL advisory lock, so
 * one sender's messages are committed and delivered by one process, in order;
 * replicas share the partitions evenly. A batch's sends are checked first
 * (guard.c: known recipients, send quotas; refusals are answered, not
 * stored); the rest is one transaction. After the COMMIT each stored event
 * is recorded in CHAT_EVENTS (the edges deliver it from there, and other teams
 * tap it); once JetStream has stored every record of the batch, the clients
 * get their acks and the commands their JetStream acks. History queries are
 * answered on chat.query.messages (queue group) by history.c. */
#ifndef MESSAGING_H
#define MESSAGING_H

#include "bus.h"
#include "streams.h"

struct messaging_config {
    const char *nats_url;
    const char *database_url;
    const char *log_level;
    long partitions;               /* CHAT_PARTITIONS: the same value as the edges' */
    long stream_replicas;          /* CHAT_STREAM_REPLICAS: streams and consumers */
    long batch;                    /* largest fetch and transaction */
    long ack_wait_ms;              /* JetStream redelivery delay of an unacked command */
    struct streams_limits streams; /* messaging owns the streams' limits */
    long history_conns;            /* history workers, one PostgreSQL connection each */
    long history_queue;            /* queued history queries, all users */
    long history_per_user;         /* queued + running history queries per user; 0: no limit */
    long history_per_s;            /* history queries per user per second (burst 2x); 0: no limit */
    long sends_per_min;            /* sends per sender per minute; 0: no limit */
    long sends_per_day;            /* sends per sender per UTC day; 0: no limit */
    long require_known_recipient;  /* 1: sends only to users presence has seen */
    const char *health_host;
    long health_port; /* GET /healthz and /metrics; 0: off */
};

struct messaging;

/* Starts the workers (they connect to PostgreSQL and set up JetStream in the
 * background, retrying until both are there). */
struct messaging *messaging_start(const struct messaging_config *cfg, struct bus *bus);
/* For lib/admin.c (closure: the messaging): 1 when NATS, JetStream set-up and
 * PostgreSQL are all there. */
int messaging_healthy(void *closure);
/* Stops and joins the workers, closes everything. */
void messaging_stop(struct messaging *m);

#endif
