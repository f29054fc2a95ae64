/* session: one Engine.IO v4 session (engine.io-protocol §Transports,
 * §Heartbeat, §Upgrade): its sid, its bounded output queue, the server ping
 * and pong deadline, the transport that carries it (a WebSocket, or HTTP
 * long-polling until an upgrade), and the application on top (Socket.IO, or
 * the raw echo of conformance mode). ws.c and polling.c feed it and drain it. */
#ifndef SESSION_H
#define SESSION_H

#include <libwebsockets.h>
#include <stddef.h>
#include <stdint.h>

#include "eio.h"
#include "wheel.h"

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

/* An output packet, shared by every session it is queued for (a broadcast is
 * encoded once, whatever the number of sockets): text frames hold
 * "<type digit><payload>", binary frames the raw bytes, at frame_data(). The
 * WebSocket frame header for it (RFC 6455 §5.2, server to client: unmasked)
 * sits right before the data, in FRAME_HEAD bytes of headroom, so that
 * frame_ws() is the whole WebSocket frame. */
#define FRAME_HEAD 10
struct frame {
    uint32_t refs;
    uint8_t binary;
    uint8_t ws_hlen;   /* WebSocket header bytes before the data */
    size_t len;        /* data bytes */
    uint64_t coalesce; /* 0, or a key: queued behind a frame with the same key, it takes its place */
    unsigned char buf[];
};

/* A text packet of the given type (one reference: the caller's). */
struct frame *frame_text(enum eio_type type, const void *payload, size_t len);
/* A binary message packet (one reference: the caller's). */
struct frame *frame_binary(const void *data, size_t len);
/* Drops a reference; the last one frees f. */
void frame_unref(struct frame *f);
static inline unsigned char *frame_data(struct frame *f)
{
    return f->buf + FRAME_HEAD;
}
/* The WebSocket frame: header + data, *len bytes. */
static inline unsigned char *frame_ws(struct frame *f, size_t *len)
{
    *len = f->ws_hlen + f->len;
    return f->buf + FRAME_HEAD - f->ws_hlen;
}

enum session_transport { SESSION_WEBSOCKET, SESSION_POLLING };

struct session {
    struct edge *edge;
    char sid[21];
    char ip[64]; /* the client's address, for abuse.c */
    const struct session_app *app;
    void *app_state;
    enum session_transport transport;
    struct lws *ws;                  /* the WebSocket carrying the session */
    struct lws *probe;               /* a WebSocket being probed for an upgrade */
    struct lws *poll_get;            /* the held long-polling GET */
    struct lws *poll_post;           /* the POST being received */
    int upgrading;                   /* probe answered, waiting for the client's "5" */
    int probe_reply;                 /* "3probe" owed on the probe WebSocket */
    struct frame **q;                /* output queue: a ring of qcap frames */
    uint32_t qcap, qhead, qlen;      /* its size, first, count */
    size_t queued;                   /* data bytes in the queue */
    struct eio_rx rx;                /* WebSocket fragment reassembly */
    struct wheel_timer t_ping;       /* next ping, or the pong deadline */
    struct wheel_timer t_close;      /* polling: the grace for fetching "1" */
    lws_sorted_usec_list_t sul_kill; /* destruction deferred to the next loop turn */
    struct wheel_timer t_upgrade;    /* upgrade timeout */
    int pong_due;                    /* 1 between a ping and its pong */
    int closing;                     /* flush the queue, then close */
    const char *close_reason;
};

/* Admits a session from ip (abuse.c), or returns NULL when ip is over its
 * limits. Then queues the open packet (upgrades: ["websocket"] on polling,
 * [] on a WebSocket) and arms the heartbeat. The caller binds its connection
 * (s->ws or s->poll_get). */
struct session *session_create(struct edge *e, const struct session_app *app, enum session_transport t,
                               const char *ip);
/* Tells the app, releases the transport's connections, frees everything. */
void session_destroy(struct session *s, const char *reason);
/* Looks a session up by sid; NULL when unknown. */
struct session *session_find(struct edge *e, const char *sid);

/* Acts on one packet from the client. Returns 0, or -1 when the session must
 * end (s->close_reason says why). */
int session_handle(struct session *s, const struct eio_packet *p);
/* Feeds one WebSocket fragment of the session's WebSocket. Returns 0, or -1
 * when the connection must be closed now. */
int session_ws_receive(struct session *s, const void *in, size_t len, int first, int final, int binary);

/* Queues an Engine.IO text packet: type digit + payload. */
void session_send(struct session *s, enum eio_type type, const void *payload, size_t len);
/* Queues a binary message packet. */
void session_send_binary(struct session *s, const void *data, size_t len);
/* Queues a message packet whose text payload is given whole ("4" prepended). */
void session_send_message(struct session *s, const void *text, size_t len);
/* Queues f (a packet made once for many sessions): s takes its own
 * reference. When the last frame still queued has f's coalesce key, f
 * replaces it (a socket that falls behind gets the latest, not each one). */
void session_send_frame(struct session *s, struct frame *f);

/* Closes after the queued packets are written (polling: after "1" is
 * fetched, or a short grace). */
void session_close(struct session *s, const char *reason);
/* Ends the session now, dropping what is queued (dead or abusive peer).
 * Safe to call from anywhere on the lws thread: destruction is deferred. */
void session_kill(struct session *s, const char *reason);
/* Asks the transport to write (queued packets, or the close). */
void session_kick(struct session *s);

/* Pops the next frame for the transport (the caller unrefs it), or NULL. */
struct frame *session_pop(struct session *s);
/* The next frame, left queued, or NULL. */
static inline struct frame *session_peek(const struct session *s)
{
    return s->qlen ? s->q[s->qhead] : NULL;
}

/* Upgrade (engine.io-protocol §Upgrade). probe_attach binds a new WebSocket
 * that names this polling session; probe_receive feeds its fragments ("2probe",
 * then "5" switches the session to it); returns -1 when the probe must be
 * closed. probe_detach when the probe WebSocket goes away. */
void session_probe_attach(struct session *s, struct lws *wsi);
int session_probe_receive(struct session *s, const void *in, size_t len, int first, int final, int binary);
void session_probe_detach(struct session *s);

#endif
