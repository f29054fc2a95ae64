/* session: Engine.IO session state on the lws thread. It owns the output
 * queue (bounded by EDGE_MAX_QUEUE_BYTES: a peer that stops reading is cut
 * off, never buffered for) and the heartbeat: the server pings every
 * pingInterval and closes when no pong comes within pingTimeout
 * (engine.io-protocol v4 §Heartbeat). */
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"
#include "ids.h"
#include "log.h"
#include "mem.h"

static void on_ping_timer(lws_sorted_usec_list_t *sul);

static void arm(struct session *s, long ms)
{
    lws_sul_schedule(s->edge->ctx, 0, &s->sul_ping, on_ping_timer, (lws_usec_t)ms * LWS_US_PER_MS);
}

/* Closes at once, dropping what is queued: for a dead or abusive peer. */
static void kill_now(struct session *s, const char *reason)
{
    if (!s->close_reason)
        s->close_reason = reason;
    s->closing = 1;
    if (s->ws)
        lws_set_timeout(s->ws, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

static void on_ping_timer(lws_sorted_usec_list_t *sul)
{
    struct session *s = lws_container_of(sul, struct session, sul_ping);
    if (s->pong_due) {
        log_debug("session ping timeout sid=%s", s->sid);
        kill_now(s, "ping timeout");
        return;
    }
    session_send(s, EIO_PING, NULL, 0);
    s->pong_due = 1;
    arm(s, s->edge->cfg->ping_timeout_ms);
}

static void enqueue(struct session *s, struct frame *f)
{
    if (s->closing) {
        free(f);
        return;
    }
    if (s->queued + f->len > (size_t)s->edge->cfg->max_queue_bytes) {
        free(f);
        log_warn("session output queue full sid=%s queued=%zu: closing slow client", s->sid, s->queued);
        kill_now(s, "transport error");
        return;
    }
    f->next = NULL;
    if (s->tail)
        s->tail->next = f;
    else
        s->head = f;
    s->tail = f;
    s->queued += f->len;
    if (s->ws)
        lws_callback_on_writable(s->ws);
}

static struct frame *frame_new(size_t len, int binary)
{
    struct frame *f = xmalloc(sizeof *f + LWS_PRE + len);
    f->len = len;
    f->binary = binary;
    f->next = NULL;
    return f;
}

struct session *session_create(struct edge *e, const struct session_app *app, struct lws *ws)
{
    struct session *s = xcalloc(1, sizeof *s);
    s->edge = e;
    s->app = app;
    s->ws = ws;
    eio_rx_init(&s->rx, (size_t)e->cfg->max_payload);
    do
        ids_random(s->sid, 20);
    while (map_get(&e->sessions, s->sid));
    map_put(&e->sessions, s->sid, s);

    /* engine.io-protocol §Handshake: exactly these keys; no upgrades from a
     * WebSocket session. */
    char open[256];
    int n = snprintf(open, sizeof open,
                     "{\"sid\":\"%s\",\"upgrades\":[],\"pingInterval\":%ld,\"pingTimeout\":%ld,"
                     "\"maxPayload\":%ld}",
                     s->sid, e->cfg->ping_interval_ms, e->cfg->ping_timeout_ms, e->cfg->max_payload);
    session_send(s, EIO_OPEN, open, (size_t)n);
    arm(s, e->cfg->ping_interval_ms);
    log_debug("session open sid=%s", s->sid);
    if (app->on_open)
        app->on_open(s);
    return s;
}

void session_destroy(struct session *s, const char *reason)
{
    if (!s)
        return;
    if (s->close_reason)
        reason = s->close_reason;
    lws_sul_cancel(&s->sul_ping);
    map_del(&s->edge->sessions, s->sid);
    s->closing = 1; /* the app may try to send while closing: dropped */
    if (s->app->on_close)
        s->app->on_close(s, reason);
    log_debug("session closed sid=%s reason=\"%s\"", s->sid, reason);
    struct frame *f = s->head;
    while (f) {
        struct frame *next = f->next;
        free(f);
        f = next;
    }
    eio_rx_cleanup(&s->rx);
    free(s);
}

int session_ws_receive(struct session *s, const void *in, size_t len, int first, int final, int binary)
{
    int r = eio_rx_feed(&s->rx, in, len, first, final, binary);
    if (r == EIO_RX_TOO_BIG) {
        /* engine.io-protocol §maxPayload: the reference closes with 1009. */
        s->close_reason = "transport error";
        lws_close_reason(s->ws, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                         (unsigned char *)"Max payload size exceeded", 25);
        return -1;
    }
    if (r != EIO_RX_DONE || s->closing)
        return 0;

    struct eio_packet p;
    const char *err;
    if (eio_decode_ws(&p, (const uint8_t *)s->rx.msg.data, s->rx.msg.len, s->rx.binary, &err) != 0) {
        log_debug("session parse error sid=%s: %s", s->sid, err);
        s->close_reason = "parse error";
        return -1;
    }
    switch (p.type) {
    case EIO_PONG:
        if (s->pong_due) {
            s->pong_due = 0;
            arm(s, s->edge->cfg->ping_interval_ms);
        }
        return 0;
    case EIO_MESSAGE:
        s->app->on_message(s, p.data, p.len, p.binary);
        return 0;
    case EIO_CLOSE:
        /* engine.io-protocol §close: the peer ends the session. */
        s->close_reason = "transport close";
        return -1;
    default:
        /* open, noop and upgrade never come from a client on an open
         * WebSocket session; a client ping is a v3 habit, refused in v4. */
        s->close_reason = "parse error";
        return -1;
    }
}

void session_send(struct session *s, enum eio_type type, const void *payload, size_t len)
{
    struct frame *f = frame_new(len + 1, 0);
    f->buf[LWS_PRE] = (unsigned char)('0' + type);
    if (len)
        memcpy(f->buf + LWS_PRE + 1, payload, len);
    enqueue(s, f);
}

void session_send_message(struct session *s, const void *text, size_t len)
{
    session_send(s, EIO_MESSAGE, text, len);
}

void session_send_binary(struct session *s, const void *data, size_t len)
{
    struct frame *f = frame_new(len, 1);
    if (len)
        memcpy(f->buf + LWS_PRE, data, len);
    enqueue(s, f);
}

void session_close(struct session *s, const char *reason)
{
    if (s->closing)
        return;
    s->closing = 1;
    s->close_reason = reason;
    if (s->ws) {
        lws_callback_on_writable(s->ws);
        /* A peer that does not read cannot hold the session open. */
        lws_set_timeout(s->ws, PENDING_TIMEOUT_USER_OK, 3);
    }
}

struct frame *session_pop(struct session *s)
{
    struct frame *f = s->head;
    if (!f)
        return NULL;
    s->head = f->next;
    if (!s->head)
        s->tail = NULL;
    s->queued -= f->len;
    return f;
}
