/* streams: the JetStream streams of the product:
 *   CHAT_CMD    chat.cmd.>    work queue of client commands (file storage,
 *                             2 min duplicate window on Nats-Msg-Id); when
 *                             full, new commands are refused (never dropped)
 *   CHAT_EVENTS chat.event.>  taps for other teams (limits retention); when
 *                             full, the oldest taps go
 * Messaging owns their limits (its configuration) and creates or updates
 * them; the edge only creates a stream that is missing, with the defaults
 * below, and never changes an existing one, so the two never fight. */
#ifndef STREAMS_H
#define STREAMS_H

#include <nats/nats.h>

#define STREAM_CMD "CHAT_CMD"
#define STREAM_EVENTS "CHAT_EVENTS"

/* The defaults of messaging's CHAT_EVENTS_MAX_AGE_S, CHAT_EVENTS_MAX_BYTES and
 * CHAT_CMD_MAX_BYTES (README, Abuse limits), as literals so that the
 * configuration table can use them as strings. */
#define STREAMS_EVENTS_MAX_AGE_S 604800     /* 7 days */
#define STREAMS_EVENTS_MAX_BYTES 4294967296 /* 4 GiB */
#define STREAMS_CMD_MAX_BYTES 1073741824    /* 1 GiB */

/* Stream limits; 0 in any field: no limit. */
struct streams_limits {
    long events_max_age_s; /* CHAT_EVENTS: taps older than this are removed */
    long events_max_bytes; /* CHAT_EVENTS: past this the oldest taps are removed */
    long cmd_max_bytes;    /* CHAT_CMD: past this new commands are refused */
};

/* limits set: creates both streams, or updates existing ones to these limits
 * (logged when they change). limits NULL: creates a missing stream with the
 * default limits and leaves an existing one as it is. Blocking (a few
 * JetStream requests): never call it on an event-loop thread. Returns 0, or
 * -1 after logging. */
int streams_ensure(jsCtx *js, const struct streams_limits *limits);

/* CHAT_STREAM_REPLICAS: the replicas every later streams_ensure gives the
 * streams (1 by default; 3 on a 3-node cluster). Set once in main, before any
 * thread runs. A change is applied to existing streams by their update. */
void streams_set_replicas(long n);
long streams_replicas(void);

#endif
