/* polling: HTTP long-polling for Engine.IO v4. A GET is held until something is
 * queued (the ping comes within pingInterval at the latest), then answered
 * with every queued packet joined by 0x1e (binary as 'b' + base64). A POST
 * carries the client's packets and is answered "ok". At most one GET and one
 * POST per session; a second of either ends the session (engine.io-protocol
 * §HTTP long-polling). Every response goes out from HTTP_WRITEABLE: headers
 * in one call, body in the next. */
#include "polling.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "edge.h"
#include "log.h"
#include "mem.h"

#define TEXT_PLAIN "text/plain; charset=UTF-8"
#define CHECK_US 1000000 /* how often a held GET is checked for an abort */
#define APP_JSON "application/json"

/* engine.io-protocol §Errors: HTTP 400 with {"code":N,"message":...}. */
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

static struct wheel *wheel_of(struct lws *wsi)
{
    return &((struct edge *)lws_context_user(lws_get_context(wsi)))->wheel;
}

static void reset(struct ws_pss *pss)
{
    free(pss->origin);
    pss->origin = NULL;
    if (pss->wsi)
        wheel_cancel(wheel_of(pss->wsi), &pss->t_check);
    buf_cleanup(&pss->body);
    pss->s = NULL;
    pss->role = WS_ROLE_NONE;
    pss->status = 0;
    pss->ctype = NULL;
    pss->phase = 0;
    pss->close_after = 0;
    pss->preflight = 0;
}

int polling_respond(struct lws *wsi, struct ws_pss *pss, unsigned int status, const char *ctype,
                    const void *body, size_t len)
{
    pss->body.len = 0;
    buf_append(&pss->body, body, len);
    pss->status = status;
    pss->ctype = ctype;
    pss->phase = 1;
    lws_callback_on_writable(wsi);
    return 0;
}

static int respond_error(struct lws *wsi, struct ws_pss *pss, unsigned int status, int code)
{
    char body[96];
    int n = snprintf(body, sizeof body, "{\"code\":%d,\"message\":\"%s\"}", code, err_text[code]);
    return polling_respond(wsi, pss, status, APP_JSON, body, (size_t)n);
}

/* EDGE_CORS_ORIGINS: empty (no CORS), "*" (any origin), or a comma-separated
 * list of exact origins. The allowed origin is echoed, with credentials. */
static void cors_check(struct lws *wsi, struct ws_pss *pss, const char *allowed)
{
    char origin[256];
    free(pss->origin);
    pss->origin = NULL;
    if (!*allowed || lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) <= 0)
        return;
    for (const char *c = origin; *c; c++)
        if ((unsigned char)*c < 0x21 || (unsigned char)*c > 0x7e)
            return; /* never echo control characters into a header */
    size_t olen = strlen(origin);
    if (strcmp(allowed, "*") != 0) {
        const char *p = allowed;
        int ok = 0;
        while (*p && !ok) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            while (n > 0 && p[0] == ' ')
                p++, n--;
            while (n > 0 && p[n - 1] == ' ')
                n--;
            ok = n == olen && memcmp(p, origin, n) == 0;
            p = comma ? comma + 1 : p + n;
        }
        if (!ok)
            return;
    }
    pss->origin = xstrdup(origin);
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

/* The held GET of s is gone: the session is over ("closes the session upon
 * cancelled polling request"). */
static void get_aborted(struct session *s, struct lws *wsi)
{
    struct ws_pss *pss = lws_wsi_user(wsi);
    log_debug("held poll aborted sid=%s", s->sid);
    wheel_cancel(wheel_of(wsi), &pss->t_check);
    s->poll_get = NULL;
    pss->s = NULL;
    session_kill(s, "transport error");
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

static void on_check_timer(struct wheel_timer *t)
{
    struct ws_pss *pss = lws_container_of(t, struct ws_pss, t_check);
    struct session *s = pss->s;
    if (!s || pss->role != WS_ROLE_GET || s->poll_get != pss->wsi)
        return;
    if (peer_gone(pss->wsi)) {
        get_aborted(s, pss->wsi);
        return;
    }
    wheel_lws_schedule(wheel_of(pss->wsi), &pss->t_check, on_check_timer, CHECK_US, WHEEL_EARLY);
}

int polling_origin_ok(struct lws *wsi, const char *allowed)
{
    struct ws_pss tmp = {0};
    if (!*allowed || lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) <= 0)
        return 1; /* no policy, or not a browser */
    cors_check(wsi, &tmp, allowed);
    int ok = tmp.origin != NULL;
    free(tmp.origin);
    return ok;
}

void polling_finish_get(struct lws *wsi, const char *body)
{
    struct ws_pss *pss = lws_wsi_user(wsi);
    if (!pss)
        return;
    if (pss->s && pss->s->poll_get == wsi)
        pss->s->poll_get = NULL;
    pss->s = NULL;
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    polling_respond(wsi, pss, HTTP_STATUS_OK, TEXT_PLAIN, body, strlen(body));
}

/* A GET or POST naming an existing session (sid=). */
static int on_session_request(struct lws *wsi, struct ws_pss *pss, struct edge *e, struct session *s,
                              int post)
{
    if (s->transport != SESSION_POLLING)
        return respond_error(wsi, pss, HTTP_STATUS_BAD_REQUEST, ERR_BAD_REQUEST); /* upgraded */
    if (!post) {
        if (s->poll_get) {
            /* A second concurrent GET: 400 for it, and the session ends (the
             * held one gets "1"). */
            respond_error(wsi, pss, HTTP_STATUS_BAD_REQUEST, ERR_BAD_REQUEST);
            session_kill(s, "transport error");
            return 0;
        }
        s->poll_get = wsi;
        pss->s = s;
        pss->role = WS_ROLE_GET;
        /* lws would close an unanswered request after timeout_secs; a held GET
         * is answered by the next ping at the latest. */
        long hold_s = (e->cfg->ping_interval_ms + e->cfg->ping_timeout_ms) / 1000 + 5;
        lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, (int)hold_s);
        pss->wsi = wsi;
        wheel_lws_schedule(wheel_of(wsi), &pss->t_check, on_check_timer, CHECK_US, WHEEL_EARLY);
        if (s->upgrading || s->qlen)
            lws_callback_on_writable(wsi);
        return 0;
    }
    if (s->poll_get && peer_gone(s->poll_get)) {
        get_aborted(s, s->poll_get);
        pss->close_after = 1;
        return respond_error(wsi, pss, HTTP_STATUS_BAD_REQUEST, ERR_SESSION_UNKNOWN);
    }
    if (s->poll_post) {
        respond_error(wsi, pss, HTTP_STATUS_BAD_REQUEST, ERR_BAD_REQUEST);
        pss->close_after = 1;
        session_kill(s, "transport error");
        return 0;
    }
    char ctype[64];
    if (lws_hdr_copy(wsi, ctype, sizeof ctype, WSI_TOKEN_HTTP_CONTENT_TYPE) > 0 &&
        strncmp(ctype, "application/octet-stream", 24) == 0) {
        pss->close_after = 1; /* v4 payloads are text */
        return respond_error(wsi, pss, HTTP_STATUS_BAD_REQUEST, ERR_BAD_REQUEST);
    }
    char clen[24];
    if (lws_hdr_copy(wsi, clen, sizeof clen, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0) {
        pss->close_after = 1; /* lws 4.1 delivers Content-Length bodies only */
        return polling_respond(wsi, pss, HTTP_STATUS_LENGTH_REQUIRED, TEXT_PLAIN, "length required", 15);
    }
    if (strtoull(clen, NULL, 10) > (unsigned long long)e->cfg->max_payload) {
        pss->close_after = 1;
        return polling_respond(wsi, pss, HTTP_STATUS_REQ_ENTITY_TOO_LARGE, TEXT_PLAIN, "payload too large",
                               17);
    }
    s->poll_post = wsi;
    pss->s = s;
    pss->role = WS_ROLE_POST;
    if (strtoull(clen, NULL, 10) == 0)
        return polling_body_done(wsi, pss); /* lws sends no BODY callbacks */
    return 0;
}

int polling_request(struct lws *wsi, struct ws_pss *pss, struct edge *e, const struct session_app *app)
{
    char *uri;
    int ulen;
    int method = lws_http_get_uri_and_method(wsi, &uri, &ulen);
    reset(pss);
    cors_check(wsi, pss, e->cfg->cors_origins);
    /* Say "connection: close" back when the client asked for it: clients with
     * a keep-alive pool (Node >= 19) otherwise reuse a socket we close. */
    char conn[32];
    if (lws_hdr_copy(wsi, conn, sizeof conn, WSI_TOKEN_CONNECTION) > 0) {
        for (char *c = conn; *c; c++)
            *c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
        if (strstr(conn, "close"))
            pss->close_after = 1;
    }

    if (method == LWSHUMETH_OPTIONS) {
        pss->preflight = 1;
        return polling_respond(wsi, pss, HTTP_STATUS_NO_CONTENT, TEXT_PLAIN, "", 0);
    }
    char v[64];
    const char *eio = lws_get_urlarg_by_name(wsi, "EIO=", v, sizeof v);
    if (!eio || strcmp(eio, "4") != 0)
        return respond_error(wsi, pss, HTTP_STATUS_BAD_REQUEST, ERR_UNSUPPORTED_VERSION);
    const char *transport = lws_get_urlarg_by_name(wsi, "transport=", v, sizeof v);
    if (!transport || strcmp(transport, "polling") != 0)
        return respond_error(wsi, pss, HTTP_STATUS_BAD_REQUEST, ERR_TRANSPORT_UNKNOWN);
    int post = method == LWSHUMETH_POST;
    if (method != LWSHUMETH_GET && !post) {
        pss->close_after = 1;
        return respond_error(wsi, pss, HTTP_STATUS_BAD_REQUEST, ERR_BAD_HANDSHAKE_METHOD);
    }
    char sid[64];
    const char *sidv = lws_get_urlarg_by_name(wsi, "sid=", sid, sizeof sid);
    if (sidv) {
        struct session *s = session_find(e, sidv);
        if (!s) {
            pss->close_after |= post;
            return respond_error(wsi, pss, HTTP_STATUS_BAD_REQUEST, ERR_SESSION_UNKNOWN);
        }
        return on_session_request(wsi, pss, e, s, post);
    }
    /* engine.io-protocol §Handshake: only a GET opens a session. */
    if (post || e->stopping) {
        pss->close_after = 1;
        return respond_error(wsi, pss, HTTP_STATUS_BAD_REQUEST, ERR_BAD_HANDSHAKE_METHOD);
    }
    char ip[64] = "";
    lws_get_peer_simple(wsi, ip, sizeof ip);
    struct session *s = session_create(e, app, SESSION_POLLING, ip);
    if (!s) {
        pss->close_after = 1;
        return respond_error(wsi, pss, 429 /* Too Many Requests */, ERR_FORBIDDEN);
    }
    s->poll_get = wsi;
    pss->s = s;
    pss->role = WS_ROLE_GET;
    lws_callback_on_writable(wsi); /* the open packet is queued */
    return 0;
}

int polling_body(struct lws *wsi, struct ws_pss *pss, const void *in, size_t len)
{
    if (pss->role != WS_ROLE_POST)
        return 0;
    struct edge *e = lws_context_user(lws_get_context(wsi));
    if (pss->body.len + len > (size_t)e->cfg->max_payload)
        return -1; /* more than Content-Length announced: lws would not */
    buf_append(&pss->body, in, len);
    return 0;
}

int polling_body_done(struct lws *wsi, struct ws_pss *pss)
{
    struct session *s = pss->s;
    if (pss->role != WS_ROLE_POST)
        return 0;
    pss->role = WS_ROLE_NONE;
    pss->s = NULL;
    if (!s) /* the session ended while the body came in */
        return respond_error(wsi, pss, HTTP_STATUS_BAD_REQUEST, ERR_SESSION_UNKNOWN);
    s->poll_post = NULL;

    struct eio_payload_iter it;
    struct eio_packet p;
    const char *err;
    int r;
    eio_payload_iter_init(&it, (uint8_t *)pss->body.data, pss->body.len);
    while ((r = eio_payload_next(&it, &p, &err)) == 1) {
        if (session_handle(s, &p) != 0) {
            /* "1" from the client ends the session (the GET gets "6"); any
             * other refused packet too, with a 400. */
            int client_close = p.type == EIO_CLOSE;
            session_kill(s, s->close_reason);
            if (client_close)
                return polling_respond(wsi, pss, HTTP_STATUS_OK, "text/html", "ok", 2);
            return respond_error(wsi, pss, HTTP_STATUS_BAD_REQUEST, ERR_BAD_REQUEST);
        }
    }
    if (r < 0) {
        log_debug("polling parse error sid=%s: %s", s->sid, err);
        session_kill(s, "parse error");
        return respond_error(wsi, pss, HTTP_STATUS_BAD_REQUEST, ERR_BAD_REQUEST);
    }
    return polling_respond(wsi, pss, HTTP_STATUS_OK, "text/html", "ok", 2);
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

static int write_headers(struct lws *wsi, struct ws_pss *pss)
{
    unsigned char hdr[LWS_PRE + 1024], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;
    if (lws_add_http_common_headers(wsi, pss->status, pss->ctype, (lws_filepos_t)pss->body.len, &p, end))
        return -1;
    if (lws_add_http_header_by_name(
            wsi, (const unsigned char *)"cache-control:", (const unsigned char *)"no-store", 8, &p, end))
        return -1;
    if (pss->origin) {
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)"access-control-allow-origin:",
                                        (const unsigned char *)pss->origin, (int)strlen(pss->origin), &p,
                                        end) ||
            lws_add_http_header_by_name(wsi, (const unsigned char *)"access-control-allow-credentials:",
                                        (const unsigned char *)"true", 4, &p, end) ||
            lws_add_http_header_by_name(wsi, (const unsigned char *)"vary:", (const unsigned char *)"Origin",
                                        6, &p, end))
            return -1;
        if (pss->preflight &&
            (lws_add_http_header_by_name(wsi, (const unsigned char *)"access-control-allow-methods:",
                                         (const unsigned char *)"GET, POST, OPTIONS", 18, &p, end) ||
             lws_add_http_header_by_name(wsi, (const unsigned char *)"access-control-allow-headers:",
                                         (const unsigned char *)"content-type", 12, &p, end) ||
             lws_add_http_header_by_name(wsi, (const unsigned char *)"access-control-max-age:",
                                         (const unsigned char *)"86400", 5, &p, end)))
            return -1;
    }
    if (pss->close_after && lws_add_http_header_by_name(wsi, (const unsigned char *)"connection:",
                                                        (const unsigned char *)"close", 5, &p, end))
        return -1;
    return lws_finalize_write_http_header(wsi, start, &p, end);
}

static int complete(struct lws *wsi, struct ws_pss *pss)
{
    int close_after = pss->close_after;
    reset(pss);
    if (close_after)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

int polling_writeable(struct lws *wsi, struct ws_pss *pss)
{
    if (pss->phase == 0 && pss->role == WS_ROLE_GET && pss->s) {
        struct session *s = pss->s;
        if (peer_gone(wsi)) {
            get_aborted(s, wsi); /* keep the queue: nothing is written into a dead socket */
            return -1;
        }
        wheel_cancel(wheel_of(wsi), &pss->t_check);
        if (s->upgrading) {
            buf_cleanup(&pss->body);
            buf_append(&pss->body, "6", 1); /* §Upgrade: free the poll */
        } else if (s->qlen) {
            drain_queue(s, &pss->body);
        } else {
            return 0; /* nothing queued yet: keep holding */
        }
        s->poll_get = NULL;
        pss->s = NULL;
        pss->status = HTTP_STATUS_OK;
        pss->ctype = TEXT_PLAIN;
        pss->phase = 1;
        lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
        if (s->closing && !s->qlen)
            session_kill(s, s->close_reason); /* "1" went out: the session is over */
    }
    if (pss->phase == 1) {
        if (write_headers(wsi, pss))
            return -1;
        pss->phase = 2;
        if (pss->body.len == 0)
            return complete(wsi, pss);
        lws_callback_on_writable(wsi);
        return 0;
    }
    if (pss->phase == 2) {
        /* lws_write needs LWS_PRE bytes of headroom before the data. */
        unsigned char *out = xmalloc(LWS_PRE + pss->body.len);
        memcpy(out + LWS_PRE, pss->body.data, pss->body.len);
        int n = lws_write(wsi, out + LWS_PRE, pss->body.len, LWS_WRITE_HTTP_FINAL);
        free(out);
        if (n < (int)pss->body.len)
            return -1;
        return complete(wsi, pss);
    }
    return 0;
}

void polling_closed(struct lws *wsi, struct ws_pss *pss)
{
    struct session *s = pss->s;
    if (s && pss->role == WS_ROLE_GET && s->poll_get == wsi) {
        /* The client gave up a held poll: the session is over
         * ("closes the session upon cancelled polling request"). */
        s->poll_get = NULL;
        session_kill(s, "transport error");
    } else if (s && pss->role == WS_ROLE_POST && s->poll_post == wsi) {
        s->poll_post = NULL;
    }
    reset(pss);
}
