/* ws: the WebSocket transport of Engine.IO v4 (docs/protocol.md §WebSocket):
 * a WebSocket carrying a session, or probing an upgrade of a long-polling one
 * (§Upgrade). Writes happen only in SERVER_WRITEABLE, one lws_write each
 * (libwebsockets README.coding.md), which carries every queued frame that
 * fits. */
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "log.h"
#include "server.h"

#define WRITE_BATCH 65536

static struct conn *conn_of_transport(struct eio_transport *t)
{
    return lws_container_of(t, struct conn, u.ws.t);
}

static int probing(const struct conn *c)
{
    return c->u.ws.t.s && c->u.ws.t.s->probe == &c->u.ws.t;
}

/* ---------- the transport, as the session sees it ---------- */

static void kick(struct eio_transport *t)
{
    lws_callback_on_writable(conn_of_transport(t)->wsi);
}

/* A peer that does not read gets 3 s to take the rest. */
static void closing(struct eio_transport *t)
{
    lws_set_timeout(conn_of_transport(t)->wsi, PENDING_TIMEOUT_USER_OK, 3);
}

static void release(struct eio_transport *t, const char *reason)
{
    (void)reason;
    lws_set_timeout(conn_of_transport(t)->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/* A client that does not read what is queued is not read from either. */
static void pause_reading(struct eio_transport *t, int paused)
{
    lws_rx_flow_control(conn_of_transport(t)->wsi, !paused);
}

static const struct eio_transport_ops ws_ops = {
    .name = "websocket",
    .upgrades = "",
    .close_packet = 0,
    .kick = kick,
    .closing = closing,
    .release = release,
    .pause = pause_reading,
};

/* ---------- the lws side ---------- */

/* docs/protocol.md §Query parameters: EIO=4 and transport=websocket are
 * required. With a sid it is an upgrade: the session must exist, be
 * upgradable (§Upgrade step 1; a second WebSocket for an upgraded session is
 * refused) and have been opened by the same client address (a sid is a
 * bearer credential), checked only when check_sid is set. Returns the
 * session to probe through *probe. */
static int query_ok(struct server *srv, struct lws *wsi, struct session **probe, int check_sid)
{
    char v[64];
    *probe = NULL;
    const char *p = lws_get_urlarg_by_name(wsi, "EIO=", v, sizeof v);
    if (!p || strcmp(p, "4") != 0)
        return 0;
    p = lws_get_urlarg_by_name(wsi, "transport=", v, sizeof v);
    if (!p || strcmp(p, "websocket") != 0)
        return 0;
    p = lws_get_urlarg_by_name(wsi, "sid=", v, sizeof v);
    if (!p || !check_sid)
        return 1;
    struct session *s = session_find(&srv->engine, p);
    if (!s || !session_upgradable(s))
        return 0;
    char ip[64];
    server_client_ip(srv, wsi, ip, sizeof ip);
    if (strcmp(ip, s->ip) != 0) {
        log_limited(LOG_WARN, "upgrade of session=%s from another address: refused", s->tag);
        return 0;
    }
    *probe = s;
    return 1;
}

/* FILTER_PROTOCOL_CONNECTION: 0 lets the upgrade go on. A sid that cannot be
 * upgraded is refused after the 101 (ESTABLISHED), as the reference does:
 * clients then see a close, not an error. */
int ws_filter(struct lws *wsi, struct server *srv)
{
    struct session *s;
    if (!query_ok(srv, wsi, &s, 0) || !http_origin_ok(wsi, srv->cfg->cors_origins) || srv->stopping)
        return -1;
    return 0;
}

int ws_established(struct lws *wsi, struct conn *c, const struct eio_app *app, void *app_ctx)
{
    struct session *s;
    if (!query_ok(c->srv, wsi, &s, 1))
        return -1;
    memset(&c->u.ws, 0, sizeof c->u.ws);
    c->role = CONN_WS;
    c->u.ws.t.ops = &ws_ops;
    eio_rx_init(&c->u.ws.rx, (size_t)c->srv->engine.cfg->max_payload);
    if (s) {
        session_probe_attach(s, &c->u.ws.t);
        return 0;
    }
    char ip[64];
    server_client_ip(c->srv, wsi, ip, sizeof ip);
    if (!session_create(&c->srv->engine, app, app_ctx, &c->u.ws.t, ip))
        return -1; /* over the address's limits */
    kick(&c->u.ws.t);
    return 0;
}

/* Reassembles one WebSocket message; returns 1 with *p set, 0 for more, -1
 * with *why to close (oversize or undecodable). */
static int message(struct lws *wsi, struct conn *c, const void *in, size_t len, struct eio_packet *p,
                   const char **why)
{
    struct eio_rx *rx = &c->u.ws.rx;
    int r = eio_rx_feed(rx, in, len, lws_is_first_fragment(wsi), lws_is_final_fragment(wsi),
                        lws_frame_is_binary(wsi));
    if (r == EIO_RX_TOO_BIG) {
        /* docs/protocol.md §maxPayload: the reference closes with 1009. */
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                         (unsigned char *)"Max payload size exceeded", 25);
        *why = "transport error";
        return -1;
    }
    if (r != EIO_RX_DONE)
        return 0;
    const char *err;
    if (eio_decode_ws(p, (const uint8_t *)rx->msg.data, rx->msg.len, rx->binary, &err) != 0) {
        log_debug("session parse error session=%s: %s", c->u.ws.t.s->tag, err);
        *why = "parse error";
        return -1;
    }
    return 1;
}

int ws_receive(struct lws *wsi, struct conn *c, const void *in, size_t len)
{
    struct session *s = c->u.ws.t.s;
    if (!s)
        return -1;
    struct eio_packet p;
    const char *why = NULL;
    int r = message(wsi, c, in, len, &p, &why);
    if (r < 0) {
        if (!probing(c) && !s->close_reason)
            s->close_reason = why;
        return -1;
    }
    if (r == 0)
        return 0;
    if (probing(c)) {
        r = session_probe_packet(s, &p);
        if (r == PROBE_PONG) {
            c->u.ws.probe_reply = 1;
            lws_callback_on_writable(wsi);
        }
        return r == PROBE_FAIL ? -1 : 0;
    }
    if (s->closing)
        return 0;
    return session_handle(s, &p) ? -1 : 0;
}

static int write_probe_reply(struct lws *wsi, struct conn *c)
{
    if (!c->u.ws.probe_reply)
        return 0;
    unsigned char out[LWS_PRE + 6];
    memcpy(out + LWS_PRE, "3probe", 6);
    c->u.ws.probe_reply = 0;
    return lws_write(wsi, out + LWS_PRE, 6, LWS_WRITE_TEXT) < 6 ? -1 : 0;
}

int ws_writeable(struct lws *wsi, struct conn *c)
{
    struct session *s = c->u.ws.t.s;
    if (!s)
        return -1;
    if (probing(c))
        return write_probe_reply(wsi, c);
    struct frame *f = session_peek(s);
    if (!f) {
        if (s->closing) {
            if (c->srv->stopping)
                lws_close_reason(wsi, LWS_CLOSE_STATUS_GOINGAWAY, NULL, 0);
            return -1;
        }
        return 0;
    }
    /* One write for as many queued frames as fit in WRITE_BATCH: the frames
     * carry their WebSocket headers (frame.h), so they go out as raw bytes
     * (LWS_WRITE_HTTP is lws's raw write; no extension is negotiated here).
     * A lone or large frame is written from where it lies. lws keeps what the
     * kernel did not take and calls back when it is out. */
    static unsigned char batch[WRITE_BATCH];
    size_t len, total = 0;
    unsigned char *out = frame_ws(f, &len);
    if (s->qlen == 1 || len >= WRITE_BATCH / 2) {
        total = len;
        f = session_pop(s);
    } else {
        out = batch;
        while ((f = session_peek(s))) {
            unsigned char *p = frame_ws(f, &len);
            if (total + len > WRITE_BATCH)
                break;
            memcpy(batch + total, p, len);
            total += len;
            frame_unref(session_pop(s));
        }
        f = NULL;
    }
    int n = lws_write(wsi, out, total, LWS_WRITE_HTTP);
    frame_unref(f);
    if (n < (int)total)
        return -1;
    if (s->qlen || s->closing)
        lws_callback_on_writable(wsi);
    return 0;
}

void ws_closed(struct lws *wsi, struct conn *c)
{
    (void)wsi;
    struct session *s = c->u.ws.t.s;
    if (s)
        session_transport_gone(s, &c->u.ws.t, "transport close");
    eio_rx_cleanup(&c->u.ws.rx);
}
