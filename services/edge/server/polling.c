/* polling: the HTTP long-polling transport of Engine.IO v4 (docs/protocol.md
 * §Long-polling). A session carried by long-polling has one struct polling:
 * its transport, with the GET it holds and the POST it is receiving. A GET is
 * held until something is queued (the ping comes within pingInterval at the
 * latest), then answered with every queued packet joined by 0x1e (binary as
 * 'b' + base64). A POST carries the client's packets and is answered "ok". At
 * most one GET and one POST per session; a second of either ends the session.
 * Responses are written by http.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "conn.h"
#include "log.h"
#include "mem.h"
#include "server.h"

#define TEXT_PLAIN "text/plain; charset=UTF-8"
#define CHECK_US 1000000 /* how often a held GET is checked for an abort */
#define POST_BODY_S 10   /* longest a POST may take to send its body */
#define APP_JSON "application/json"

/* docs/protocol.md §Errors: HTTP 400 with {"code":N,"message":...}. */
enum {
    ERR_TRANSPORT_UNKNOWN = 0,
    ERR_SESSION_UNKNOWN = 1,
    ERR_BAD_HANDSHAKE_METHOD = 2,
    ERR_BAD_REQUEST = 3,
    ERR_FORBIDDEN = 4,
    ERR_UNSUPPORTED_VERSION = 5,
};

static const char *const err_text[] = {
    "Transport unknown", "Session ID unknown", "Bad handshake method",
    "Bad request",       "Forbidden",          "Unsupported protocol version"};

struct polling {
    struct eio_transport t;
    struct lws *get;  /* the held GET, or NULL */
    struct lws *post; /* the POST being received, or NULL */
};

static const struct eio_transport_ops polling_ops;

int polling_carries(const struct session *s)
{
    return s->carrier && s->carrier->ops == &polling_ops;
}

static struct conn *conn_of(struct lws *wsi)
{
    return lws_wsi_user(wsi);
}

/* The request is no longer a long-polling one (its response may still be
 * due). */
static void unbind(struct conn *c)
{
    wheel_cancel(&c->srv->wheel, &c->u.http.t_check);
    c->u.http.pl = NULL;
    c->role = CONN_NONE;
}

static int respond_error(struct lws *wsi, struct http_conn *h, unsigned int status, int code)
{
    char body[96];
    int n = snprintf(body, sizeof body, "{\"code\":%d,\"message\":\"%s\"}", code, err_text[code]);
    return http_respond(wsi, h, status, APP_JSON, body, (size_t)n);
}

/* lws 4.1 does not read a connection that waits for its response, so a
 * client that gives up a held GET goes unnoticed until a write fails, which
 * would swallow the packets written. Peek at the socket instead: 0 bytes
 * means the peer closed. */
static int peer_gone(struct lws *wsi)
{
    char c;
    ssize_t n = recv(lws_get_socket_fd(wsi), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* The held GET of pl is gone: the session is over ("closes the session upon
 * cancelled polling request"). */
static void get_aborted(struct polling *pl)
{
    struct lws *wsi = pl->get;
    log_debug("held poll aborted session=%s", pl->t.s->tag);
    unbind(conn_of(wsi));
    pl->get = NULL;
    session_kill(pl->t.s, "transport error");
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

static void on_check_timer(struct wheel_timer *t)
{
    struct conn *c = lws_container_of(t, struct conn, u.http.t_check);
    struct polling *pl = c->u.http.pl;
    if (!pl || c->role != CONN_GET || pl->get != c->wsi)
        return;
    if (peer_gone(c->wsi)) {
        get_aborted(pl);
        return;
    }
    wheel_lws_schedule(&c->srv->wheel, &c->u.http.t_check, on_check_timer, CHECK_US, WHEEL_EARLY);
}

/* Answers the held GET of pl with body (e.g. "6") and detaches it. */
static void finish_get(struct polling *pl, const char *body)
{
    struct lws *wsi = pl->get;
    struct conn *c = conn_of(wsi);
    pl->get = NULL;
    unbind(c);
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    http_respond(wsi, &c->u.http.h, HTTP_STATUS_OK, TEXT_PLAIN, body, strlen(body));
}

/* ---------- the transport, as the session sees it ---------- */

static void kick(struct eio_transport *t)
{
    struct polling *pl = lws_container_of(t, struct polling, t);
    if (pl->get)
        lws_callback_on_writable(pl->get);
}

/* The session is gone, or went to a WebSocket: a held GET is answered "6"
 * when the client closed (docs/protocol.md §Close) or upgraded (§Upgrade),
 * "1" otherwise; a POST still gets its answer. */
static void release(struct eio_transport *t, const char *reason)
{
    struct polling *pl = lws_container_of(t, struct polling, t);
    if (pl->get)
        finish_get(pl, strcmp(reason, "transport close") == 0 || strcmp(reason, "upgrade") == 0 ? "6" : "1");
    if (pl->post)
        unbind(conn_of(pl->post));
    free(pl);
}

/* A client that does not fetch what is queued is not read from: its POST
 * waits (docs/protocol.md §2.6). */
static void pause_reading(struct eio_transport *t, int paused)
{
    struct polling *pl = lws_container_of(t, struct polling, t);
    if (pl->post)
        lws_rx_flow_control(pl->post, !paused);
}

static const struct eio_transport_ops polling_ops = {
    .name = "polling",
    .upgrades = "\"websocket\"",
    .close_packet = 1,
    .kick = kick,
    .closing = NULL,
    .release = release,
    .pause = pause_reading,
};

/* ---------- requests ---------- */

static int hold_get(struct lws *wsi, struct conn *c, struct polling *pl)
{
    struct session *s = pl->t.s;
    const struct eio_config *cfg = s->engine->cfg;
    pl->get = wsi;
    c->role = CONN_GET;
    c->u.http.pl = pl;
    /* lws would close an unanswered request after timeout_secs; a held GET
     * is answered by the next ping at the latest. */
    long hold_s = (cfg->ping_interval_ms + cfg->ping_timeout_ms) / 1000 + 5;
    lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, (int)hold_s);
    wheel_lws_schedule(&c->srv->wheel, &c->u.http.t_check, on_check_timer, CHECK_US, WHEEL_EARLY);
    if (s->upgrading || s->qlen)
        lws_callback_on_writable(wsi);
    return 0;
}

static int take_post(struct lws *wsi, struct conn *c, struct polling *pl)
{
    struct http_conn *h = &c->u.http.h;
    struct session *s = pl->t.s;
    if (pl->get && peer_gone(pl->get)) {
        get_aborted(pl);
        h->close_after = 1;
        return respond_error(wsi, h, HTTP_STATUS_BAD_REQUEST, ERR_SESSION_UNKNOWN);
    }
    if (pl->post) {
        respond_error(wsi, h, HTTP_STATUS_BAD_REQUEST, ERR_BAD_REQUEST);
        h->close_after = 1;
        session_kill(s, "transport error");
        return 0;
    }
    char ctype[64];
    if (lws_hdr_copy(wsi, ctype, sizeof ctype, WSI_TOKEN_HTTP_CONTENT_TYPE) > 0 &&
        strncmp(ctype, "application/octet-stream", 24) == 0) {
        h->close_after = 1; /* v4 payloads are text */
        return respond_error(wsi, h, HTTP_STATUS_BAD_REQUEST, ERR_BAD_REQUEST);
    }
    long long clen = http_content_length(wsi);
    if (clen == -1) {
        h->close_after = 1; /* lws 4.1 delivers Content-Length bodies only */
        return http_respond(wsi, h, HTTP_STATUS_LENGTH_REQUIRED, TEXT_PLAIN, "length required", 15);
    }
    if (clen < 0) { /* ambiguous framing: the rest of the stream cannot be trusted */
        h->close_after = 1;
        return respond_error(wsi, h, HTTP_STATUS_BAD_REQUEST, ERR_BAD_REQUEST);
    }
    if (clen > s->engine->cfg->max_payload) {
        h->close_after = 1;
        return http_respond(wsi, h, HTTP_STATUS_REQ_ENTITY_TOO_LARGE, TEXT_PLAIN, "payload too large", 17);
    }
    pl->post = wsi;
    c->role = CONN_POST;
    c->u.http.pl = pl;
    if (clen == 0)
        return polling_body_done(wsi, c); /* lws sends no BODY callbacks */
    lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, POST_BODY_S);
    if (s->paused)
        lws_rx_flow_control(wsi, 0);
    return 0;
}

/* A GET or POST naming an existing session (sid=). */
static int on_session_request(struct lws *wsi, struct conn *c, struct session *s, int post)
{
    struct http_conn *h = &c->u.http.h;
    char ip[64];
    server_client_ip(c->srv, wsi, ip, sizeof ip);
    if (strcmp(ip, s->ip) != 0) {
        /* A sid is a bearer credential: a request from another client than the
         * one that opened the session is answered as for an unknown sid. */
        log_limited(LOG_WARN, "polling request for session=%s from another address: refused", s->tag);
        h->close_after = 1;
        return respond_error(wsi, h, HTTP_STATUS_BAD_REQUEST, ERR_SESSION_UNKNOWN);
    }
    if (!polling_carries(s))
        return respond_error(wsi, h, HTTP_STATUS_BAD_REQUEST, ERR_BAD_REQUEST); /* upgraded */
    struct polling *pl = lws_container_of(s->carrier, struct polling, t);
    if (post)
        return take_post(wsi, c, pl);
    if (pl->get) {
        /* A second concurrent GET: 400 for it, and the session ends (the
         * held one gets "1"). */
        respond_error(wsi, h, HTTP_STATUS_BAD_REQUEST, ERR_BAD_REQUEST);
        session_kill(s, "transport error");
        return 0;
    }
    return hold_get(wsi, c, pl);
}

/* A handshake: a new session carried by a new polling transport. */
static int open_session(struct lws *wsi, struct conn *c, const struct eio_app *app, void *app_ctx)
{
    struct http_conn *h = &c->u.http.h;
    char ip[64];
    server_client_ip(c->srv, wsi, ip, sizeof ip);
    struct polling *pl = xcalloc(1, sizeof *pl);
    pl->t.ops = &polling_ops;
    struct session *s = session_create(&c->srv->engine, app, app_ctx, &pl->t, ip);
    if (!s) {
        free(pl);
        h->close_after = 1;
        return respond_error(wsi, h, 429 /* Too Many Requests */, ERR_FORBIDDEN);
    }
    pl->get = wsi;
    c->role = CONN_GET;
    c->u.http.pl = pl;
    lws_callback_on_writable(wsi); /* the open packet is queued */
    return 0;
}

int polling_request(struct lws *wsi, struct conn *c, const struct eio_app *app, void *app_ctx)
{
    struct http_conn *h = &c->u.http.h;
    char *uri;
    int ulen;
    int method = lws_http_get_uri_and_method(wsi, &uri, &ulen);
    unbind(c);
    http_begin(wsi, h, c->srv->cfg->cors_origins);
    if (method == LWSHUMETH_OPTIONS) {
        h->preflight = 1;
        return http_respond(wsi, h, HTTP_STATUS_NO_CONTENT, TEXT_PLAIN, "", 0);
    }
    char v[64];
    const char *eio = lws_get_urlarg_by_name(wsi, "EIO=", v, sizeof v);
    if (!eio || strcmp(eio, "4") != 0)
        return respond_error(wsi, h, HTTP_STATUS_BAD_REQUEST, ERR_UNSUPPORTED_VERSION);
    const char *transport = lws_get_urlarg_by_name(wsi, "transport=", v, sizeof v);
    if (!transport || strcmp(transport, "polling") != 0)
        return respond_error(wsi, h, HTTP_STATUS_BAD_REQUEST, ERR_TRANSPORT_UNKNOWN);
    int post = method == LWSHUMETH_POST;
    if (method != LWSHUMETH_GET && !post) {
        h->close_after = 1;
        return respond_error(wsi, h, HTTP_STATUS_BAD_REQUEST, ERR_BAD_HANDSHAKE_METHOD);
    }
    char sid[64];
    const char *sidv = lws_get_urlarg_by_name(wsi, "sid=", sid, sizeof sid);
    if (sidv) {
        struct session *s = session_find(&c->srv->engine, sidv);
        if (!s) {
            h->close_after |= post;
            return respond_error(wsi, h, HTTP_STATUS_BAD_REQUEST, ERR_SESSION_UNKNOWN);
        }
        return on_session_request(wsi, c, s, post);
    }
    /* docs/protocol.md §Handshake: only a GET opens a session. */
    if (post || c->srv->stopping) {
        h->close_after = 1;
        return respond_error(wsi, h, HTTP_STATUS_BAD_REQUEST, ERR_BAD_HANDSHAKE_METHOD);
    }
    return open_session(wsi, c, app, app_ctx);
}

int polling_body(struct lws *wsi, struct conn *c, const void *in, size_t len)
{
    (void)wsi;
    if (c->role != CONN_POST)
        return 0;
    if (c->u.http.h.body.len + len > (size_t)c->srv->engine.cfg->max_payload)
        return -1; /* more than Content-Length announced: lws would not */
    buf_append(&c->u.http.h.body, in, len);
    return 0;
}

int polling_body_done(struct lws *wsi, struct conn *c)
{
    struct http_conn *h = &c->u.http.h;
    struct polling *pl = c->u.http.pl;
    if (c->role != CONN_POST)
        return 0;
    unbind(c);
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    if (!pl) /* the session ended while the body came in */
        return respond_error(wsi, h, HTTP_STATUS_BAD_REQUEST, ERR_SESSION_UNKNOWN);
    struct session *s = pl->t.s;
    pl->post = NULL;

    struct eio_payload_iter it;
    struct eio_packet p;
    const char *err;
    int r;
    eio_payload_iter_init(&it, (uint8_t *)h->body.data, h->body.len);
    while ((r = eio_payload_next(&it, &p, &err)) == 1) {
        if (session_handle(s, &p) != 0) {
            /* "1" from the client ends the session (the GET gets "6"); any
             * other refused packet too, with a 400. */
            int client_close = p.type == EIO_CLOSE;
            session_kill(s, s->close_reason);
            if (client_close)
                return http_respond(wsi, h, HTTP_STATUS_OK, "text/html", "ok", 2);
            return respond_error(wsi, h, HTTP_STATUS_BAD_REQUEST, ERR_BAD_REQUEST);
        }
    }
    if (r < 0) {
        log_debug("polling parse error session=%s: %s", s->tag, err);
        session_kill(s, "parse error");
        return respond_error(wsi, h, HTTP_STATUS_BAD_REQUEST, ERR_BAD_REQUEST);
    }
    return http_respond(wsi, h, HTTP_STATUS_OK, "text/html", "ok", 2);
}

/* Moves every queued packet of s into body as a polling payload. */
static void drain_queue(struct session *s, struct buf *body)
{
    struct frame *f;
    body->len = 0;
    while ((f = session_pop(s))) {
        if (body->len)
            buf_putc(body, 0x1e);
        if (f->binary) {
            buf_putc(body, 'b');
            eio_base64_encode(body, frame_data(f), f->len);
        } else {
            buf_append(body, frame_data(f), f->len);
        }
        frame_unref(f);
    }
}

/* A held GET becomes writable: answer it with what is queued (or the
 * upgrade's noop) and return 1, or keep holding (0), or -1 when the client
 * is gone. */
static int answer_get(struct lws *wsi, struct conn *c, struct polling *pl)
{
    struct session *s = pl->t.s;
    if (peer_gone(wsi)) {
        get_aborted(pl); /* keep the queue: nothing is written into a dead socket */
        return -1;
    }
    struct http_conn *h = &c->u.http.h;
    if (s->upgrading) {
        h->body.len = 0;
        buf_append(&h->body, "6", 1); /* §Upgrade: free the poll */
    } else if (s->qlen) {
        drain_queue(s, &h->body);
    } else {
        return 0; /* nothing queued yet: keep holding */
    }
    pl->get = NULL;
    unbind(c);
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    h->status = HTTP_STATUS_OK;
    h->ctype = TEXT_PLAIN;
    h->phase = 1; /* written below, in this same callback */
    if (s->closing && !s->qlen)
        session_kill(s, s->close_reason); /* "1" went out: the session is over */
    return 1;
}

int polling_writeable(struct lws *wsi, struct conn *c)
{
    struct polling *pl = c->u.http.pl;
    if (c->role == CONN_GET && pl && c->u.http.h.phase == 0 && pl->get == wsi) {
        int r = answer_get(wsi, c, pl);
        if (r <= 0)
            return r;
    }
    return http_write(wsi, &c->u.http.h) == HTTP_CLOSE ? -1 : 0;
}

void polling_closed(struct lws *wsi, struct conn *c)
{
    struct polling *pl = c->u.http.pl;
    if (pl && c->role == CONN_GET && pl->get == wsi) {
        /* The client gave up a held poll: the session is over
         * ("closes the session upon cancelled polling request"). */
        pl->get = NULL;
        session_kill(pl->t.s, "transport error");
    } else if (pl && c->role == CONN_POST && pl->post == wsi) {
        pl->post = NULL;
    }
    unbind(c);
    http_reset(&c->u.http.h);
}
