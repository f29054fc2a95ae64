/* streams: the JetStream streams of the product, created or updated by
 * whichever process starts first (edge or messaging):
 *   CHAT_CMD    chat.cmd.>    work queue of client commands (file storage,
 *                             2 min duplicate window on Nats-Msg-Id)
 *   CHAT_EVENTS chat.event.>  taps for other teams (limits retention) */
#ifndef STREAMS_H
#define STREAMS_H

#include <nats/nats.h>

#define STREAM_CMD "CHAT_CMD"
#define STREAM_EVENTS "CHAT_EVENTS"

/* Creates both streams, or updates them to this configuration. Blocking (a
 * few JetStream requests): never call it on an event-loop thread. Returns 0,
 * or -1 after logging. */
int streams_ensure(jsCtx *js);

/* CHAT_STREAM_REPLICAS: the replicas every later streams_ensure gives the
 * streams (1 by default; 3 on a 3-node cluster). Set once in main, before any
 * thread runs. A change is applied to existing streams by their update. */
void streams_set_replicas(long n);
long streams_replicas(void);

#endif
