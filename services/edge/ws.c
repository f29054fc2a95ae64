/* ws: WebSocket transport for Engine.IO (engine.io-protocol v4 §WebSocket) and
 * the HTTP side of the port. Writes happen only in SERVER_WRITEABLE, one
 * lws_write each (libwebsockets README.coding.md); other threads reach this
 * thread only through relay.c and lws_cancel_service(). */
#include "ws.h"

#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "conform.h"
#include "edge.h"
#include "log.h"
#include "session.h"
#include "sock.h"

struct ws_pss {
    struct session *s;
};

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
 * required; a sid means an upgrade from long-polling, which this edge does
 * not serve yet. */
static int ws_query_ok(struct lws *wsi)
{
    char v[64];
    const char *p = lws_get_urlarg_by_name(wsi, "EIO=", v, sizeof v);
    if (!p || strcmp(p, "4") != 0)
        return 0;
    p = lws_get_urlarg_by_name(wsi, "transport=", v, sizeof v);
    if (!p || strcmp(p, "websocket") != 0)
        return 0;
    if (lws_get_urlarg_by_name(wsi, "sid=", v, sizeof v))
        return 0;
    return 1;
}

static int get_path(struct lws *wsi, char *path, int len)
{
    if (lws_hdr_copy(wsi, path, len, WSI_TOKEN_GET_URI) <= 0)
        return -1;
    return 0;
}

static int http_reply(struct lws *wsi, unsigned int status, const char *body)
{
    unsigned char hdr[LWS_PRE + 512], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr;
    size_t len = strlen(body);
    if (lws_add_http_common_headers(wsi, status, "application/json", (lws_filepos_t)len, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    /* Small bodies fit in the socket buffer: written right after the headers. */
    unsigned char out[LWS_PRE + 256];
    if (len > sizeof out - LWS_PRE)
        len = sizeof out - LWS_PRE;
    memcpy(out + LWS_PRE, body, len);
    if (lws_write(wsi, out + LWS_PRE, len, LWS_WRITE_HTTP_FINAL) < (int)len)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    struct ws_pss *pss = user;
    struct lws_context *ctx = lws_get_context(wsi);
    struct edge *e = ctx ? lws_context_user(ctx) : NULL;
    char path[256];

    switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        /* Delivered once per protocol per vhost: we have one of each. */
        if (e && e->chat)
            chat_drain(e->chat);
        break;

    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        if (get_path(wsi, path, sizeof path) || !app_for_path(e, path) || !ws_query_ok(wsi) || e->stopping) {
            log_debug("websocket upgrade refused path=%s", path);
            return -1;
        }
        break;

    case LWS_CALLBACK_ESTABLISHED:
        if (get_path(wsi, path, sizeof path))
            return -1;
        pss->s = session_create(e, app_for_path(e, path), wsi);
        break;

    case LWS_CALLBACK_RECEIVE:
        if (!pss->s)
            return -1;
        if (session_ws_receive(pss->s, in, len, lws_is_first_fragment(wsi), lws_is_final_fragment(wsi),
                               lws_frame_is_binary(wsi)))
            return -1;
        break;

    case LWS_CALLBACK_SERVER_WRITEABLE: {
        struct session *s = pss->s;
        if (!s)
            return -1;
        struct frame *f = session_pop(s);
        if (!f) {
            if (s->closing) {
                if (e->stopping)
                    lws_close_reason(wsi, LWS_CLOSE_STATUS_GOINGAWAY, NULL, 0);
                return -1;
            }
            break;
        }
        int n = lws_write(wsi, f->buf + LWS_PRE, f->len, f->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
        int short_write = n < (int)f->len;
        free(f);
        if (short_write)
            return -1;
        if (s->head || s->closing)
            lws_callback_on_writable(wsi);
        break;
    }

    case LWS_CALLBACK_CLOSED:
        if (pss->s) {
            session_destroy(pss->s, "transport close");
            pss->s = NULL;
        }
        break;

    case LWS_CALLBACK_HTTP:
        /* Long-polling is not served yet: engine.io-protocol §Errors code 0. */
        if (app_for_path(e, (const char *)in))
            return http_reply(wsi, HTTP_STATUS_BAD_REQUEST, "{\"code\":0,\"message\":\"Transport unknown\"}");
        return http_reply(wsi, HTTP_STATUS_NOT_FOUND, "{\"code\":404,\"message\":\"Not found\"}");

    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    /* Index 0: lws binds upgrades without Sec-WebSocket-Protocol (what
     * socket.io-client sends) to the default protocol. */
    {"engine.io", callback, sizeof(struct ws_pss), 65536, 0, NULL, 0},
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

int ws_start(struct edge *e)
{
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log);
    info.port = (int)e->cfg->port;
    info.iface = e->cfg->host;
    info.protocols = protocols;
    info.user = e;
    /* Text frames must be valid UTF-8 (RFC 6455 §8.1); lws closes with 1007. */
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
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

void ws_stop(struct edge *e)
{
    if (e->ctx)
        lws_context_destroy(e->ctx);
    e->ctx = NULL;
}
