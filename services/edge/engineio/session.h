/* session: Engine.IO v4 sessions (docs/protocol.md §Engine.IO): the engine
 * that holds them, one session's sid, bounded output queue, heartbeat (the
 * server pings, the client pongs) and upgrade from long-polling to
 * WebSocket, and the application on top (Socket.IO, or a raw app).
 *
 * Two interfaces meet here, both one-way:
 * - above, struct eio_app: what the session tells its application (open,
 *   message, close), with the ctx given when the app was mounted;
 * - below, struct eio_transport: the connection that carries the session (a
 *   WebSocket, or HTTP long-polling) and a WebSocket probing an upgrade. The
 *   session only ever calls its ops; the transports (server/) feed the
 *   session with session_handle() and drain it with session_pop().
 * Everything runs on the loop's thread. */
#ifndef SESSION_H
#define SESSION_H

#include <libwebsockets.h>
#include <stddef.h>
#include <stdint.h>

#include "eio.h"
#include "frame.h"
#include "map.h"
#include "wheel.h"

struct session;
struct eio_transport;

/* What sits on top of an Engine.IO session. ctx: the app's own, given when it
 * was mounted (eio_engine users pass it to session_create). */
struct eio_app {
    /* The session is open (open packet queued). */
    void (*on_open)(void *ctx, struct session *s);
    /* One message packet (text payload without the '4', or binary). data is
     * valid during the call only. */
    void (*on_message)(void *ctx, struct session *s, const uint8_t *data, size_t len, int binary);
    /* The session is gone (an engine.io close reason); free s->app_state. */
    void (*on_close)(void *ctx, struct session *s, const char *reason);
};

/* What a transport does for the session. */
struct eio_transport_ops {
    const char *name;     /* "websocket", "polling" */
    const char *upgrades; /* the handshake's upgrades list, as JSON items: "\"websocket\"" or "" */
    int close_packet;     /* 1: a server close is sent as an Engine.IO "1" packet (polling) */
    /* Frames are queued, or the session is closing: write when the connection
     * can (session_pop() gives the frames). */
    void (*kick)(struct eio_transport *t);
    /* session_close(): the queue ends here; give a peer that does not read a
     * short time to take it. May be NULL. */
    void (*closing)(struct eio_transport *t);
    /* The session lets go of t: it was destroyed (reason: an engine.io close
     * reason, "transport close" when the client ended it) or upgraded away from
     * t ("upgrade"), or t was a probe that failed. After this t->s is NULL and
     * the session never calls t again. */
    void (*release)(struct eio_transport *t, const char *reason);
    /* paused 1: the session's output is over its read-pause mark, so stop
     * reading from the client until it takes what is queued (paused 0). */
    void (*pause)(struct eio_transport *t, int paused);
};

/* Embedded in the transport's own per-connection state. */
struct eio_transport {
    const struct eio_transport_ops *ops;
    struct session *s; /* the session carried or probed, NULL once released */
};

/* What a queued frame costs a queue beyond the frame: its pointer in the ring
 * and the ring's spare room (it doubles). */
#define FRAME_SLOT_BYTES 16

struct eio_config {
    long ping_interval_ms;
    long ping_timeout_ms;
    long max_payload;      /* largest packet accepted (maxPayload of the handshake) */
    long max_queue_bytes;  /* output queued per session; past it the session is cut off */
    long read_pause_bytes; /* output queued past which the client is not read (0: never) */
    long max_output_bytes; /* output queued by all sessions together; 0: no limit */
};

/* Every session of one server. */
struct eio_engine {
    const struct eio_config *cfg;
    struct lws_context *ctx; /* its loop runs deferred kills */
    struct wheel *wheel;     /* every timer (wheel_lws on ctx) */
    struct map sessions;     /* sid -> struct session */
    /* Memory of the output queued by every session: each frame's bytes once,
     * however many queues hold it (a status sent to every socket is one
     * frame), plus FRAME_SLOT_BYTES per place in a queue. */
    size_t queued;
    uint64_t frames_coalesced;
    uint64_t budget_kills; /* sessions cut off by max_output_bytes */
    /* Optional admission of a new session by client address: admit returns 0
     * (then release is called when the session ends) or -1 (refused). */
    int (*admit)(void *ctx, const char *ip);
    void (*release)(void *ctx, const char *ip);
    void *admit_ctx;
};

void eio_engine_init(struct eio_engine *e, const struct eio_config *cfg, struct lws_context *ctx,
                     struct wheel *wheel);
/* Destroys the sessions that are left, then frees the table. */
void eio_engine_cleanup(struct eio_engine *e);
/* Closes every session gracefully (the server stops). */
void eio_engine_close_all(struct eio_engine *e, const char *reason);

struct session {
    struct eio_engine *engine;
    char sid[21];
    char tag[9]; /* what logs name the session by: a hash of the sid, which is a credential */
    char ip[64]; /* the client's address: admission, and every later request must come from it */
    const struct eio_app *app;
    void *app_ctx;
    void *app_state;
    struct eio_transport *carrier;   /* the transport carrying the session */
    struct eio_transport *probe;     /* a WebSocket probing an upgrade, or NULL */
    int upgrading;                   /* probe answered, waiting for the client's "5" */
    struct frame **q;                /* output queue: a ring of qcap frames */
    uint32_t qcap, qhead, qlen;      /* its size, first, count */
    size_t queued;                   /* data bytes in the queue */
    const struct frame *exempt;      /* the unbounded frame not counted (frame.h), or NULL */
    struct wheel_timer t_ping;       /* next ping, or the pong deadline */
    struct wheel_timer t_close;      /* close packet: the grace for fetching "1" */
    struct wheel_timer t_upgrade;    /* upgrade timeout */
    lws_sorted_usec_list_t sul_kill; /* destruction deferred to the next loop turn */
    int pong_due;                    /* 1 between a ping and its pong */
    int paused;                      /* the carrier was told to stop reading (read_pause_bytes) */
    int closing;                     /* flush the queue, then close */
    const char *close_reason;
};

/* Admits a session from ip (e->admit), or returns NULL when it is refused.
 * Then binds it to its first transport t, queues the open packet (t's
 * upgrades) and arms the heartbeat; app->on_open runs last. */
struct session *session_create(struct eio_engine *e, const struct eio_app *app, void *app_ctx,
                               struct eio_transport *t, const char *ip);
/* Tells the app, releases the transports, frees everything. */
void session_destroy(struct session *s, const char *reason);
/* t's connection went away (its transport says so): a carrier ends the
 * session with reason, a probe is forgotten. t is not released. */
void session_transport_gone(struct session *s, struct eio_transport *t, const char *reason);
/* Looks a session up by sid; NULL when unknown. */
struct session *session_find(struct eio_engine *e, const char *sid);

/* Acts on one packet from the client. Returns 0, or -1 when the session must
 * end (s->close_reason says why). */
int session_handle(struct session *s, const struct eio_packet *p);

/* Queues an Engine.IO text packet: type digit + payload. */
void session_send(struct session *s, enum eio_type type, const void *payload, size_t len);
/* Queues a binary message packet. */
void session_send_binary(struct session *s, const void *data, size_t len);
/* Queues a message packet whose text payload is given whole ("4" prepended). */
void session_send_message(struct session *s, const void *text, size_t len);
/* Queues f (a packet made once for many sessions): s takes its own
 * reference. When the last frame still queued has f's coalesce key, f
 * replaces it (a socket that falls behind gets the latest, not each one).
 * An unbounded frame (frame.h) is not counted against max_queue_bytes and
 * read_pause_bytes while no other unbounded frame is queued; a second one
 * counts like any frame. Against max_output_bytes every frame counts once,
 * however many queues hold it, plus FRAME_SLOT_BYTES per queue. */
void session_send_frame(struct session *s, struct frame *f);

/* Closes after the queued packets are written (with a close packet: once
 * "1" is fetched, or after a short grace). */
void session_close(struct session *s, const char *reason);
/* Ends the session on the next loop turn, dropping what is queued (dead or
 * abusive peer). Safe to call from anywhere on the loop's thread. */
void session_kill(struct session *s, const char *reason);
/* Asks the carrier to write (queued packets, or the close). */
void session_kick(struct session *s);

/* Pops the next frame for the transport (the caller unrefs it), or NULL. */
struct frame *session_pop(struct session *s);
/* The next frame, left queued, or NULL. */
static inline struct frame *session_peek(const struct session *s)
{
    return s->qlen ? s->q[s->qhead] : NULL;
}

/* Upgrade (docs/protocol.md §Upgrade). 1 when s may take a probe now: its
 * carrier offers upgrades, and it is not probing or closing. */
int session_upgradable(const struct session *s);
/* Binds a probing WebSocket transport (session_upgradable() was 1). */
void session_probe_attach(struct session *s, struct eio_transport *probe);
enum { PROBE_FAIL = -1, PROBE_OK = 0, PROBE_PONG = 1 };
/* One packet from the probe: "2probe" answers PROBE_PONG (the transport sends
 * "3probe"), then "5" switches the session to the probe (PROBE_OK: the old
 * carrier is released with "upgrade"); anything else is PROBE_FAIL (the
 * transport closes the probe, the session goes on). */
int session_probe_packet(struct session *s, const struct eio_packet *p);
/* The probe's connection went away (or failed): the session forgets it. */
void session_probe_detach(struct session *s);

#endif
