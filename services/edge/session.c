/* session: Engine.IO session state on the lws thread. It owns the output
 * queue (bounded by EDGE_MAX_QUEUE_BYTES: a peer that stops reading is cut
 * off, never buffered for), the heartbeat (the server pings every
 * pingInterval and ends the session when no pong comes within pingTimeout,
 * engine.io-protocol v4 §Heartbeat) and the upgrade from long-polling to
 * WebSocket (§Upgrade). It never writes to a socket itself: it asks the
 * transport (ws.c, polling.c) for a writable callback. */
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"
#include "ids.h"
#include "abuse.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "polling.h"
#include "ws.h"

#define UPGRADE_TIMEOUT_MS 10000 /* what the reference server allows */
#define CLOSE_GRACE_MS 5000      /* polling: longest wait for the GET that fetches "1" */

static void on_ping_timer(struct wheel_timer *t);

/* The next ping may go out a little early (it shares wakeups with other
 * sessions' pings); the pong deadline is exact: no session outlives
 * pingInterval + pingTimeout without a pong. */
static void arm(struct session *s, long ms, int how)
{
    wheel_lws_schedule(&s->edge->wheel, &s->t_ping, on_ping_timer, (int64_t)ms * 1000, how);
}

static void on_close_timer(struct wheel_timer *t)
{
    struct session *s = lws_container_of(t, struct session, t_close);
    session_destroy(s, s->close_reason ? s->close_reason : "forced close");
}

/* session_kill: a timer due at once (lws's sorted list takes it at its head,
 * the wheel would wait for its next tick). */
static void on_kill(lws_sorted_usec_list_t *sul)
{
    struct session *s = lws_container_of(sul, struct session, sul_kill);
    session_destroy(s, s->close_reason ? s->close_reason : "forced close");
}

static void on_ping_timer(struct wheel_timer *t)
{
    struct session *s = lws_container_of(t, struct session, t_ping);
    if (s->pong_due) {
        log_debug("session ping timeout sid=%s", s->sid);
        session_kill(s, "ping timeout");
        return;
    }
    session_send(s, EIO_PING, NULL, 0);
    s->pong_due = 1;
    arm(s, s->edge->cfg->ping_timeout_ms, WHEEL_EXACT);
}

void session_kick(struct session *s)
{
    if (s->transport == SESSION_WEBSOCKET && s->ws)
        lws_callback_on_writable(s->ws);
    else if (s->transport == SESSION_POLLING && s->poll_get)
        lws_callback_on_writable(s->poll_get);
}

void session_kill(struct session *s, const char *reason)
{
    if (!s->close_reason)
        s->close_reason = reason;
    s->closing = 1;
    if (s->transport == SESSION_WEBSOCKET && s->ws)
        lws_set_timeout(s->ws, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC); /* CLOSED destroys */
    else
        lws_sul_schedule(s->edge->ctx, 0, &s->sul_kill, on_kill, 1);
}

/* ---------- frames ---------- */

static struct frame *frame_new(size_t len, int binary)
{
    struct frame *f = xmalloc(sizeof *f + FRAME_HEAD + len);
    f->refs = 1;
    f->len = len;
    f->coalesce = 0;
    f->binary = (uint8_t)binary;
    unsigned char h[FRAME_HEAD]; /* RFC 6455 §5.2: FIN, opcode, length; no mask */
    h[0] = 0x80 | (binary ? 0x2 : 0x1);
    if (len < 126) {
        h[1] = (unsigned char)len;
        f->ws_hlen = 2;
    } else if (len <= 0xffff) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        f->ws_hlen = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
        f->ws_hlen = 10;
    }
    memcpy(f->buf + FRAME_HEAD - f->ws_hlen, h, f->ws_hlen); /* it ends where the data starts */
    return f;
}

struct frame *frame_text(enum eio_type type, const void *payload, size_t len)
{
    struct frame *f = frame_new(len + 1, 0);
    frame_data(f)[0] = (unsigned char)('0' + type);
    if (len)
        memcpy(frame_data(f) + 1, payload, len);
    return f;
}

struct frame *frame_binary(const void *data, size_t len)
{
    struct frame *f = frame_new(len, 1);
    if (len)
        memcpy(frame_data(f), data, len);
    return f;
}

void frame_unref(struct frame *f)
{
    if (f && --f->refs == 0)
        free(f);
}

/* ---------- the output queue ---------- */

void session_send_frame(struct session *s, struct frame *f)
{
    if (s->closing)
        return;
    if (s->queued + f->len > (size_t)s->edge->cfg->max_queue_bytes) {
        log_warn("session output queue full sid=%s queued=%zu: closing slow client", s->sid, s->queued);
        session_kill(s, "transport error");
        return;
    }
    if (f->coalesce && s->qlen) {
        struct frame **last = &s->q[(s->qhead + s->qlen - 1) % s->qcap];
        if ((*last)->coalesce == f->coalesce) {
            s->queued -= (*last)->len;
            frame_unref(*last);
            *last = f;
            f->refs++;
            s->queued += f->len;
            metrics_add("chat_edge_frames_coalesced_total", NULL, 1);
            return;
        }
    }
    if (s->qlen == s->qcap) { /* grow the ring, oldest first */
        uint32_t cap = s->qcap ? s->qcap * 2 : 8;
        struct frame **q = xmalloc(cap * sizeof *q);
        for (uint32_t i = 0; i < s->qlen; i++)
            q[i] = s->q[(s->qhead + i) % s->qcap];
        free(s->q);
        s->q = q;
        s->qcap = cap;
        s->qhead = 0;
    }
    s->q[(s->qhead + s->qlen) % s->qcap] = f;
    f->refs++;
    s->queued += f->len;
    if (s->qlen++ == 0) /* a non-empty queue has its writable callback asked for */
        session_kick(s);
}

static void enqueue(struct session *s, struct frame *f)
{
    session_send_frame(s, f);
    frame_unref(f);
}

struct session *session_create(struct edge *e, const struct session_app *app, enum session_transport t,
                               const char *ip)
{
    if (abuse_admit(e, ip) != 0)
        return NULL;
    struct session *s = xcalloc(1, sizeof *s);
    snprintf(s->ip, sizeof s->ip, "%s", ip);
    s->edge = e;
    s->app = app;
    s->transport = t;
    eio_rx_init(&s->rx, (size_t)e->cfg->max_payload);
    do
        ids_random(s->sid, 20);
    while (map_get(&e->sessions, s->sid));
    map_put(&e->sessions, s->sid, s);

    /* engine.io-protocol §Handshake: exactly these keys; a polling session may
     * upgrade to a WebSocket, a WebSocket session to nothing. */
    char open[256];
    int n = snprintf(open, sizeof open,
                     "{\"sid\":\"%s\",\"upgrades\":[%s],\"pingInterval\":%ld,\"pingTimeout\":%ld,"
                     "\"maxPayload\":%ld}",
                     s->sid, t == SESSION_POLLING ? "\"websocket\"" : "", e->cfg->ping_interval_ms,
                     e->cfg->ping_timeout_ms, e->cfg->max_payload);
    session_send(s, EIO_OPEN, open, (size_t)n);
    arm(s, e->cfg->ping_interval_ms, WHEEL_EARLY);
    log_debug("session open sid=%s transport=%s", s->sid, t == SESSION_POLLING ? "polling" : "websocket");
    if (app->on_open)
        app->on_open(s);
    return s;
}

struct session *session_find(struct edge *e, const char *sid)
{
    return map_get(&e->sessions, sid);
}

void session_destroy(struct session *s, const char *reason)
{
    if (!s)
        return;
    if (s->close_reason)
        reason = s->close_reason;
    wheel_cancel(&s->edge->wheel, &s->t_ping);
    wheel_cancel(&s->edge->wheel, &s->t_close);
    lws_sul_cancel(&s->sul_kill);
    wheel_cancel(&s->edge->wheel, &s->t_upgrade);
    map_del(&s->edge->sessions, s->sid);
    abuse_release(s->edge, s->ip);
    s->closing = 1; /* the app may try to send while closing: dropped */
    if (s->app->on_close)
        s->app->on_close(s, reason);
    log_debug("session closed sid=%s reason=\"%s\"", s->sid, reason);

    /* Release the connections: none may point here any more. A held GET is
     * answered: "6" when the client closed (engine.io-protocol §close), "1"
     * otherwise. */
    if (s->ws)
        ws_detach(s->ws, 1);
    if (s->probe)
        ws_detach(s->probe, 1);
    if (s->poll_get)
        polling_finish_get(s->poll_get, strcmp(reason, "transport close") == 0 ? "6" : "1");
    if (s->poll_post)
        ws_detach(s->poll_post, 0); /* it still gets its answer */

    struct frame *f;
    while ((f = session_pop(s)))
        frame_unref(f);
    free(s->q);
    eio_rx_cleanup(&s->rx);
    free(s);
}

int session_handle(struct session *s, const struct eio_packet *p)
{
    if (s->closing)
        return 0;
    switch (p->type) {
    case EIO_PONG:
        if (s->pong_due) {
            s->pong_due = 0;
            arm(s, s->edge->cfg->ping_interval_ms, WHEEL_EARLY);
        }
        return 0;
    case EIO_MESSAGE:
        s->app->on_message(s, p->data, p->len, p->binary);
        return 0;
    case EIO_CLOSE:
        /* engine.io-protocol §close: the peer ends the session. */
        s->close_reason = "transport close";
        return -1;
    default:
        /* open, noop and upgrade never come from a client on an open
         * transport; a client ping is a v3 habit, refused in v4. */
        s->close_reason = "parse error";
        return -1;
    }
}

/* Reassembles one WebSocket message; returns 1 with *p set, 0 for more, -1
 * with *why to close (oversize or undecodable). */
static int ws_message(struct session *s, struct lws *wsi, const void *in, size_t len, int first, int final,
                      int binary, struct eio_packet *p, const char **why)
{
    int r = eio_rx_feed(&s->rx, in, len, first, final, binary);
    if (r == EIO_RX_TOO_BIG) {
        /* engine.io-protocol §maxPayload: the reference closes with 1009. */
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                         (unsigned char *)"Max payload size exceeded", 25);
        *why = "transport error";
        return -1;
    }
    if (r != EIO_RX_DONE)
        return 0;
    const char *err;
    if (eio_decode_ws(p, (const uint8_t *)s->rx.msg.data, s->rx.msg.len, s->rx.binary, &err) != 0) {
        log_debug("session parse error sid=%s: %s", s->sid, err);
        *why = "parse error";
        return -1;
    }
    return 1;
}

int session_ws_receive(struct session *s, const void *in, size_t len, int first, int final, int binary)
{
    struct eio_packet p;
    const char *why = NULL;
    int r = ws_message(s, s->ws, in, len, first, final, binary, &p, &why);
    if (r < 0) {
        if (!s->close_reason)
            s->close_reason = why;
        return -1;
    }
    if (r == 0 || s->closing)
        return 0;
    return session_handle(s, &p);
}

void session_send(struct session *s, enum eio_type type, const void *payload, size_t len)
{
    enqueue(s, frame_text(type, payload, len));
}

void session_send_message(struct session *s, const void *text, size_t len)
{
    session_send(s, EIO_MESSAGE, text, len);
}

void session_send_binary(struct session *s, const void *data, size_t len)
{
    enqueue(s, frame_binary(data, len));
}

void session_close(struct session *s, const char *reason)
{
    if (s->closing)
        return;
    if (s->transport == SESSION_POLLING) {
        /* engine.io-protocol §close: "1" goes out on the next GET, then the
         * session is gone. A client that never polls again gets a grace. */
        session_send(s, EIO_CLOSE, NULL, 0);
        wheel_lws_schedule(&s->edge->wheel, &s->t_close, on_close_timer, (int64_t)CLOSE_GRACE_MS * 1000,
                           WHEEL_EXACT);
    }
    s->closing = 1;
    s->close_reason = reason;
    session_kick(s);
    if (s->transport == SESSION_WEBSOCKET && s->ws)
        lws_set_timeout(s->ws, PENDING_TIMEOUT_USER_OK, 3); /* a peer that does not read */
}

struct frame *session_pop(struct session *s)
{
    if (!s->qlen)
        return NULL;
    struct frame *f = s->q[s->qhead];
    s->qhead = (s->qhead + 1) % s->qcap;
    s->queued -= f->len;
    if (--s->qlen == 0 && s->qcap > 64) { /* a burst is over: back to nothing */
        free(s->q);
        s->q = NULL;
        s->qcap = s->qhead = 0;
    }
    return f;
}

/* ---------- upgrade ---------- */

static void on_upgrade_timeout(struct wheel_timer *t)
{
    struct session *s = lws_container_of(t, struct session, t_upgrade);
    if (s->probe) {
        log_debug("upgrade timed out sid=%s", s->sid);
        ws_detach(s->probe, 1);
        session_probe_detach(s);
    }
}

void session_probe_attach(struct session *s, struct lws *wsi)
{
    s->probe = wsi;
    eio_rx_cleanup(&s->rx);
    eio_rx_init(&s->rx, (size_t)s->edge->cfg->max_payload);
    wheel_lws_schedule(&s->edge->wheel, &s->t_upgrade, on_upgrade_timeout, (int64_t)UPGRADE_TIMEOUT_MS * 1000,
                       WHEEL_EXACT);
}

int session_probe_receive(struct session *s, const void *in, size_t len, int first, int final, int binary)
{
    struct eio_packet p;
    const char *why;
    int r = ws_message(s, s->probe, in, len, first, final, binary, &p, &why);
    if (r <= 0)
        return r;
    if (!s->upgrading && p.type == EIO_PING && p.len == 5 && memcmp(p.data, "probe", 5) == 0) {
        /* §Upgrade step 2: answer the probe, free the pending poll with a
         * noop; every GET until the switch gets a noop too. */
        s->upgrading = 1;
        s->probe_reply = 1;
        lws_callback_on_writable(s->probe);
        if (s->poll_get)
            lws_callback_on_writable(s->poll_get);
        return 0;
    }
    if (s->upgrading && p.type == EIO_UPGRADE && !s->closing) {
        /* §Upgrade step 3: the WebSocket carries the session from now on;
         * what was queued for polling goes out on it, in order. */
        wheel_cancel(&s->edge->wheel, &s->t_upgrade);
        s->transport = SESSION_WEBSOCKET;
        s->ws = s->probe;
        s->probe = NULL;
        s->upgrading = 0;
        struct ws_pss *pss = lws_wsi_user(s->ws);
        pss->role = WS_ROLE_WS;
        if (s->poll_get)
            polling_finish_get(s->poll_get, "6");
        log_debug("session upgraded sid=%s", s->sid);
        session_kick(s);
        return 0;
    }
    /* §Upgrade step 4: anything else ends the probe, not the session. */
    return -1;
}

void session_probe_detach(struct session *s)
{
    wheel_cancel(&s->edge->wheel, &s->t_upgrade);
    s->probe = NULL;
    s->upgrading = 0;
    s->probe_reply = 0;
    eio_rx_cleanup(&s->rx);
    eio_rx_init(&s->rx, (size_t)s->edge->cfg->max_payload);
    if (s->poll_get && s->qlen)
        lws_callback_on_writable(s->poll_get);
}
