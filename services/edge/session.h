/* session: one Engine.IO v4 session (engine.io-protocol §Transports,
 * §Heartbeat): its sid, its bounded output queue, the server ping and pong
 * deadline, and the application on top (Socket.IO, or the raw echo of
 * conformance mode). The transport glue (ws.c) feeds it and drains it. */
#ifndef SESSION_H
#define SESSION_H

#include <libwebsockets.h>
#include <stddef.h>
#include <stdint.h>

#include "eio.h"

struct edge;
struct session;

/* What sits on top of an Engine.IO session. */
struct session_app {
    /* The session is open (open packet queued). */
    void (*on_open)(struct session *s);
    /* One message packet (text payload without the '4', or binary). data is
     * valid during the call only. */
    void (*on_message)(struct session *s, const uint8_t *data, size_t len, int binary);
    /* The session is gone; free app_state. reason: an engine.io close reason. */
    void (*on_close)(struct session *s, const char *reason);
};

/* A queued output frame: one Engine.IO packet, with LWS_PRE bytes of
 * headroom before data + LWS_PRE. */
struct frame {
    struct frame *next;
    size_t len;
    int binary;
    unsigned char buf[];
};

struct session {
    struct edge *edge;
    char sid[21];
    const struct session_app *app;
    void *app_state;
    struct lws *ws;                  /* the WebSocket carrying the session */
    struct frame *head, *tail;       /* output queue */
    size_t queued;                   /* bytes in the queue */
    struct eio_rx rx;                /* fragment reassembly */
    lws_sorted_usec_list_t sul_ping; /* next ping, or the pong deadline */
    int pong_due;                    /* 1 between a ping and its pong */
    int closing;                     /* flush the queue, then close */
    const char *close_reason;
};

/* Creates a session bound to the WebSocket ws, queues the open packet and
 * arms the heartbeat. */
struct session *session_create(struct edge *e, const struct session_app *app, struct lws *ws);
/* Called by the transport when it is gone: tells the app, frees everything. */
void session_destroy(struct session *s, const char *reason);

/* Feeds one received WebSocket fragment. Returns 0, or -1 when the session
 * must be closed now (reason set in s->close_reason). */
int session_ws_receive(struct session *s, const void *in, size_t len, int first, int final, int binary);

/* Queues an Engine.IO text packet: type digit + payload. */
void session_send(struct session *s, enum eio_type type, const void *payload, size_t len);
/* Queues a binary message packet. */
void session_send_binary(struct session *s, const void *data, size_t len);
/* Queues an Engine.IO message packet whose text payload is given whole
 * ("4" is prepended). */
void session_send_message(struct session *s, const void *text, size_t len);

/* Closes after the queued packets are written. */
void session_close(struct session *s, const char *reason);

/* Pops the next frame for the transport (the caller frees it), or NULL. */
struct frame *session_pop(struct session *s);

#endif
