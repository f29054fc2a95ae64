/* chat: the chat application on the Socket.IO layer (docs/architecture.md):
 * JWT auth on CONNECT, one NATS subscription per connected user
 * (chat.user.<id>) for the ephemeral signals, validation of the seed's client
 * events (the README's event table), the stored events delivered from one
 * ordered consumer of CHAT_EVENTS to every local socket of their users, and
 * connection state recovery. It knows the protocol layers (socketio/,
 * engineio/) and NATS, never a transport: main.c mounts it. */
#ifndef CHAT_H
#define CHAT_H

#include "bus.h"
#include "socketio/sock.h"
#include "wheel.h"

struct chat_config {
    const char *edge_id;         /* this edge's name on NATS (chat.edge.<id>) */
    const char *boot_id;         /* random per start: tells presence a restart */
    const char *jwt_secret;      /* HS256 */
    long max_ghost_text;         /* bytes */
    long max_message_bytes;      /* bytes */
    long max_presence_query;     /* ids */
    long partitions;             /* CHAT_PARTITIONS */
    long heartbeat_ms;           /* chat.edge.heartbeat period */
    long events_per_s;           /* client events per second per socket */
    long events_burst;           /* ... with this burst */
    long rate_disconnect;        /* refused events in a row before the socket is disconnected */
    long max_sockets_per_user;   /* on this edge */
    long to_user_per_s;          /* events of one user to one other user, per second (0: no limit) */
    long to_user_burst;          /* ... with this burst */
    long queries_per_user_per_s; /* presence:request and message:history per user (burst: twice) */
    long recovery_window_ms;     /* connection state recovery: how long after a drop (0: off) */
    long recovery_max_events;    /* most events one recovery replays; more: a new session */
    int presence_interest;       /* PRESENCE_SCOPE=interest (1), else broadcast to everyone (0) */
};

struct chat;

/* The Socket.IO application (its ctx: the struct chat). */
extern const struct sio_app chat_sio_app;

/* Creates the app; nothing touches NATS yet. wake(wake_ctx) wakes the loop
 * from NATS threads (then the loop calls chat_drain). */
struct chat *chat_create(const struct chat_config *cfg, struct bus *bus, struct wheel *wheel,
                         void (*wake)(void *ctx), void *wake_ctx);
/* Subscribes chat.edge.<EDGE_ID> and the rest; starts the heartbeat. The bus
 * must be open. Returns 0, or -1 (logged). */
int chat_start(struct chat *c);
/* bus on_connect hook (any thread; closure: the chat): after a NATS
 * (re)connection every session is announced to presence again. */
void chat_bus_connected(void *closure);
/* The loop's wake hook (ctx: the chat): handles everything the NATS threads
 * queued. */
void chat_drain(void *ctx);
/* 1 when NATS is there and the records consumer has started (for
 * /healthz). */
int chat_healthy(void *ctx);
/* Unsubscribes everything; later disconnects no longer touch NATS. */
void chat_stop(struct chat *c);
void chat_destroy(struct chat *c);

#endif
