/* chat: the chat application on the Socket.IO layer: JWT auth on CONNECT, one
 * NATS subscription per connected user (chat.user.<id>), validation of the
 * seed's client events and relay of the ephemeral signals, and fan-out of
 * Deliveries to every local socket of a user. */
#ifndef CHAT_H
#define CHAT_H

#include "sock.h"

struct edge;
struct chat;

extern const struct sock_app chat_sock_app;

/* Creates the app and subscribes chat.edge.<EDGE_ID>. Returns NULL on error
 * (logged). The bus must be open. */
struct chat *chat_create(struct edge *e);
/* bus on_connect hook (any thread): after a NATS (re)connection every
 * session is announced to presence again. */
void chat_bus_connected(void *closure);
/* lws thread: handles everything the NATS threads queued. */
void chat_drain(struct chat *c);
/* Unsubscribes everything; later disconnects no longer touch NATS. */
void chat_stop(struct chat *c);
void chat_destroy(struct chat *c);

#endif
