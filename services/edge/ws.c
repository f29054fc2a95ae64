/* ws: WebSocket transport for Engine.IO (engine.io-protocol v4 §WebSocket),
 * including the probe WebSocket of an upgrade; HTTP requests go to polling.c. Writes happen only in
 * SERVER_WRITEABLE, one lws_write each (libwebsockets README.coding.md), which carries every queued frame
 * that fits; other threads reach this thread only through relay.c and lws_cancel_service(). */
#include "ws.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "conform.h"
#include "polling.h"
#include "edge.h"
#include "log.h"
#include "session.h"
#include "site.h"
#include "sock.h"

/* The Engine.IO application serving a request path, or NULL. Socket.IO
 * clients always add the trailing slash; we accept it missing too. */
static const struct session_app *app_for_path(struct edge *e, const char *path)
{
    if (strcmp(path, "/socket.io/") == 0 || strcmp(path, "/socket.io") == 0)
        return &sock_session_app;
    if (e->conformance && (strcmp(path, "/engine.io/") == 0 || strcmp(path, "/engine.io") == 0))
        return &conform_echo_app;
    return NULL;
}

/* engine.io-protocol §Query parameters: EIO=4 and transport=websocket are
 * required. With a sid it is an upgrade: the session must exist, be on
 * polling and not already probing (§Upgrade step 1; a second WebSocket for an
 * upgraded session is refused), checked only when check_sid is set. Returns
 * the session to probe through *probe. */
static int ws_query_ok(struct edge *e, struct lws *wsi, struct session **probe, int check_sid)
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
    struct session *s = session_find(e, p);
    if (!s || s->transport != SESSION_POLLING || s->probe || s->closing)
        return 0;
    *probe = s;
    return 1;
}

static int get_path(struct lws *wsi, char *path, int len)
{
    if (lws_hdr_copy(wsi, path, len, WSI_TOKEN_GET_URI) <= 0)
        return -1;
    return 0;
}

void ws_detach(struct lws *wsi, int kill)
{
    struct ws_pss *pss = lws_wsi_user(wsi);
    if (pss)
        pss->s = NULL;
    if (kill)
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

#define WRITE_BATCH 65536

static int ws_writeable(struct lws *wsi, struct ws_pss *pss, struct edge *e)
{
    struct session *s = pss->s;
    if (!s)
        return -1;
    if (pss->role == WS_ROLE_PROBE) {
        if (s->probe_reply) {
            unsigned char out[LWS_PRE + 6];
            memcpy(out + LWS_PRE, "3probe", 6);
            s->probe_reply = 0;
            if (lws_write(wsi, out + LWS_PRE, 6, LWS_WRITE_TEXT) < 6)
                return -1;
        }
        return 0;
    }
    struct frame *f = session_peek(s);
    if (!f) {
        if (s->closing) {
            if (e->stopping)
                lws_close_reason(wsi, LWS_CLOSE_STATUS_GOINGAWAY, NULL, 0);
            return -1;
        }
        return 0;
    }
    /* One write for as many queued frames as fit in WRITE_BATCH: the frames
     * carry their WebSocket headers (session.h), so they go out as raw bytes
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

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    struct ws_pss *pss = user;
    struct lws_context *ctx = lws_get_context(wsi);
    struct edge *e = ctx ? lws_context_user(ctx) : NULL;
    struct session *s;
    char path[256];

    switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        /* Delivered once per protocol per vhost: we have one of each. */
        if (e && e->chat)
            chat_drain(e->chat);
        break;

    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        /* A sid that cannot be upgraded is refused after the 101 (ESTABLISHED),
         * as the reference does: clients then see a close, not an error. */
        if (get_path(wsi, path, sizeof path) || !app_for_path(e, path) || !ws_query_ok(e, wsi, &s, 0) ||
            !polling_origin_ok(wsi, e->cfg->cors_origins) || e->stopping) {
            log_debug("websocket upgrade refused path=%.64s", path);
            return -1;
        }
        break;

    case LWS_CALLBACK_ESTABLISHED:
        if (get_path(wsi, path, sizeof path) || !ws_query_ok(e, wsi, &s, 1))
            return -1;
        if (s) {
            pss->role = WS_ROLE_PROBE;
            pss->s = s;
            session_probe_attach(s, wsi);
        } else {
            char ip[64] = "";
            lws_get_peer_simple(wsi, ip, sizeof ip);
            if (!(s = session_create(e, app_for_path(e, path), SESSION_WEBSOCKET, ip)))
                return -1; /* over the address's limits */
            pss->role = WS_ROLE_WS;
            pss->s = s;
            s->ws = wsi;
            session_kick(s);
        }
        break;

    case LWS_CALLBACK_RECEIVE:
        s = pss->s;
        if (!s)
            return -1;
        if (pss->role == WS_ROLE_PROBE)
            return session_probe_receive(s, in, len, lws_is_first_fragment(wsi), lws_is_final_fragment(wsi),
                                         lws_frame_is_binary(wsi))
                       ? -1
                       : 0;
        if (session_ws_receive(s, in, len, lws_is_first_fragment(wsi), lws_is_final_fragment(wsi),
                               lws_frame_is_binary(wsi)))
            return -1;
        break;

    case LWS_CALLBACK_SERVER_WRITEABLE:
        return ws_writeable(wsi, pss, e);

    case LWS_CALLBACK_CLOSED:
        s = pss->s;
        pss->s = NULL;
        if (s && pss->role == WS_ROLE_PROBE) {
            session_probe_detach(s);
        } else if (s) {
            s->ws = NULL;
            session_destroy(s, "transport close");
        }
        break;

    case LWS_CALLBACK_HTTP:
        if (app_for_path(e, (const char *)in))
            return polling_request(wsi, pss, e, app_for_path(e, (const char *)in));
        return site_request(wsi, pss, e, (const char *)in);
    case LWS_CALLBACK_HTTP_BODY:
        if (pss->role == WS_ROLE_LOGIN)
            return site_body(wsi, pss, in, len);
        return polling_body(wsi, pss, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (pss->role == WS_ROLE_LOGIN)
            return site_body_done(wsi, pss, e);
        return polling_body_done(wsi, pss);
    case LWS_CALLBACK_HTTP_FILE_COMPLETION:
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return polling_writeable(wsi, pss);
    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss) /* lws closes some connections (e.g. oversized headers) before it attaches user data */
            polling_closed(wsi, pss);
        break;

    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    /* Index 0: lws binds upgrades without Sec-WebSocket-Protocol (what
     * socket.io-client sends) to the default protocol. */
    {"engine.io", callback, sizeof(struct ws_pss), 512, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void lws_log(int level, const char *line)
{
    if (level & LLL_ERR)
        log_error("lws: %s", line);
    else if (level & LLL_WARN)
        log_warn("lws: %s", line);
    else
        log_debug("lws: %s", line);
}

/* lws listens on an IPv6 socket, where an IPv4 address given as iface is not
 * applied: it listened on every address. An IPv4 address gets an IPv4 socket;
 * 0.0.0.0 stays every address, IPv6 included. */
static void listen_on(struct lws_context_creation_info *info, const char *host)
{
    struct in_addr v4;
    if (strcmp(host, "0.0.0.0") == 0)
        return;
    info->iface = host;
    if (inet_pton(AF_INET, host, &v4) == 1)
        info->options |= LWS_SERVER_OPTION_DISABLE_IPV6;
}

int ws_start(struct edge *e)
{
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log);
    info.port = (int)e->cfg->port;
    info.protocols = protocols;
    info.user = e;
    /* Text frames must be valid UTF-8 (RFC 6455 §8.1); lws closes with 1007. */
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
    listen_on(&info, e->cfg->host);
    info.max_http_header_data = 4096;
    info.timeout_secs = 10;
    e->ctx = lws_create_context(&info);
    if (!e->ctx) {
        log_error("cannot listen host=%s port=%ld", e->cfg->host, e->cfg->port);
        return -1;
    }
    return 0;
}

void ws_close_all(struct edge *e)
{
    size_t i;
    for (struct map_entry *m = map_first(&e->sessions, &i); m; m = map_next(&e->sessions, m, &i))
        session_close(m->value, "server shutting down");
}

void ws_destroy_all(struct edge *e)
{
    size_t i;
    struct map_entry *m;
    while ((m = map_first(&e->sessions, &i)))
        session_destroy(m->value, "server shutting down");
}

void ws_stop(struct edge *e)
{
    if (e->ctx)
        lws_context_destroy(e->ctx);
    e->ctx = NULL;
}
