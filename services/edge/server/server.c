/* server: the lws context, its one protocol callback for HTTP and WebSocket on
 * one port, and the dispatch of its events: Engine.IO paths to the
 * transports (ws.c, polling.c), other paths to the plain routes. Other
 * threads reach the loop only through server_wake() (lws_cancel_service,
 * whose wake-ups lws coalesces). */
#include "server.h"

#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "log.h"

/* The mount serving a request path, or -1. Socket.IO clients always add the
 * trailing slash; we accept it missing too. */
static int mount_of(const struct server *srv, const char *path)
{
    for (int i = 0; i < srv->nmounts; i++) {
        const char *m = srv->mounts[i].path;
        size_t n = strlen(m);
        if (strcmp(path, m) == 0 || (strncmp(path, m, n - 1) == 0 && path[n - 1] == '\0'))
            return i;
    }
    return -1;
}

static int request_mount(struct lws *wsi, const struct server *srv)
{
    char path[256];
    if (lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI) <= 0)
        return -1;
    return mount_of(srv, path);
}

static int route_request(struct lws *wsi, struct conn *c, const char *path)
{
    struct server *srv = c->srv;
    struct http_conn *h = &c->u.http.h;
    c->role = CONN_NONE;
    http_begin(wsi, h, "");
    if (!srv->routes) {
        h->close_after = 1;
        return http_respond(wsi, h, HTTP_STATUS_NOT_FOUND, "text/plain", "not found\n", 10);
    }
    int want_body = 0;
    int r = srv->routes->request(srv->routes_ctx, wsi, h, path, &want_body);
    if (r == 0 && want_body)
        c->role = CONN_ROUTE;
    return r;
}

static int route_body(struct conn *c, const void *in, size_t len)
{
    if (c->role != CONN_ROUTE)
        return polling_body(c->wsi, c, in, len);
    if ((long)(c->u.http.h.body.len + len) > c->srv->routes->max_body)
        return -1;
    buf_append(&c->u.http.h.body, in, len);
    return 0;
}

static int route_body_done(struct conn *c)
{
    if (c->role != CONN_ROUTE)
        return polling_body_done(c->wsi, c);
    c->role = CONN_NONE;
    if (!c->srv->routes->body_done)
        return -1;
    return c->srv->routes->body_done(c->srv->routes_ctx, c->wsi, &c->u.http.h);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    struct conn *c = user;
    struct lws_context *ctx = lws_get_context(wsi);
    struct server *srv = ctx ? lws_context_user(ctx) : NULL;
    int m;
    if (c && !c->srv) {
        c->srv = srv;
        c->wsi = wsi;
    }

    switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        /* Delivered once per protocol per vhost: we have one of each. */
        if (srv && srv->on_wake)
            srv->on_wake(srv->wake_ctx);
        break;

    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        if (request_mount(wsi, srv) < 0 || ws_filter(wsi, srv) != 0) {
            log_debug("websocket upgrade refused");
            return -1;
        }
        break;
    case LWS_CALLBACK_ESTABLISHED:
        if ((m = request_mount(wsi, srv)) < 0)
            return -1;
        http_reset(&c->u.http.h); /* a keep-alive connection may have served HTTP before */
        return ws_established(wsi, c, srv->mounts[m].app, srv->mounts[m].ctx);
    case LWS_CALLBACK_RECEIVE:
        return ws_receive(wsi, c, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return ws_writeable(wsi, c);
    case LWS_CALLBACK_CLOSED:
        ws_closed(wsi, c);
        break;

    case LWS_CALLBACK_HTTP:
        if ((m = mount_of(srv, (const char *)in)) >= 0)
            return polling_request(wsi, c, srv->mounts[m].app, srv->mounts[m].ctx);
        return route_request(wsi, c, (const char *)in);
    case LWS_CALLBACK_HTTP_BODY:
        return route_body(c, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return route_body_done(c);
    case LWS_CALLBACK_HTTP_FILE_COMPLETION:
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return polling_writeable(wsi, c);
    case LWS_CALLBACK_CLOSED_HTTP:
        if (c &&
            c->srv) /* lws closes some connections (e.g. oversized headers) before it attaches user data */
            polling_closed(wsi, c);
        break;

    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    /* Index 0: lws binds upgrades without Sec-WebSocket-Protocol (what
     * socket.io-client sends) to the default protocol. */
    {"engine.io", callback, sizeof(struct conn), 512, 0, NULL, 0},
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

int server_start(struct server *srv, const struct server_config *cfg, const struct eio_config *ecfg)
{
    memset(srv, 0, sizeof *srv);
    srv->cfg = cfg;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log);
    info.port = (int)cfg->port;
    info.iface = cfg->host;
    info.protocols = protocols;
    info.user = srv;
    /* Text frames must be valid UTF-8 (RFC 6455 §8.1); lws closes with 1007. */
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
    info.max_http_header_data = 4096;
    info.timeout_secs = 10;
    srv->ctx = lws_create_context(&info);
    if (!srv->ctx) {
        log_error("cannot listen host=%s port=%ld", cfg->host, cfg->port);
        return -1;
    }
    wheel_lws_init(&srv->wheel, srv->ctx);
    eio_engine_init(&srv->engine, ecfg, srv->ctx, &srv->wheel);
    return 0;
}

int server_mount(struct server *srv, const char *path, const struct eio_app *app, void *ctx)
{
    size_t n = strlen(path);
    if (srv->nmounts == SERVER_MAX_MOUNTS || n < 2 || path[0] != '/' || path[n - 1] != '/')
        return -1;
    srv->mounts[srv->nmounts].path = path;
    srv->mounts[srv->nmounts].app = app;
    srv->mounts[srv->nmounts].ctx = ctx;
    srv->nmounts++;
    return 0;
}

void server_set_routes(struct server *srv, const struct server_routes *routes, void *ctx)
{
    srv->routes = routes;
    srv->routes_ctx = ctx;
}

void server_on_wake(struct server *srv, void (*fn)(void *ctx), void *ctx)
{
    srv->on_wake = fn;
    srv->wake_ctx = ctx;
}

void server_wake(struct server *srv)
{
    if (srv->ctx)
        lws_cancel_service(srv->ctx);
}

int server_service(struct server *srv)
{
    return lws_service(srv->ctx, 0) < 0 ? -1 : 0;
}

static void on_grace(lws_sorted_usec_list_t *sul)
{
    (void)sul; /* only wakes the loop: lws services timers before it polls */
}

void server_drain(struct server *srv, int grace_ms)
{
    srv->stopping = 1;
    eio_engine_close_all(&srv->engine, "server shutting down");
    lws_sorted_usec_list_t sul;
    memset(&sul, 0, sizeof sul);
    lws_usec_t until = lws_now_usecs() + (lws_usec_t)grace_ms * 1000;
    lws_sul_schedule(srv->ctx, 0, &sul, on_grace, (lws_usec_t)grace_ms * 1000);
    while (srv->engine.sessions.count > 0 && lws_now_usecs() < until)
        if (lws_service(srv->ctx, 0) < 0)
            break;
    lws_sul_cancel(&sul);
}

void server_destroy(struct server *srv)
{
    if (!srv->ctx)
        return;
    eio_engine_cleanup(&srv->engine);
    wheel_lws_cleanup(&srv->wheel);
    lws_context_destroy(srv->ctx);
    srv->ctx = NULL;
}

void server_count(const struct server *srv, size_t *websocket, size_t *polling)
{
    size_t i;
    *websocket = *polling = 0;
    for (struct map_entry *m = map_first(&srv->engine.sessions, &i); m;
         m = map_next(&srv->engine.sessions, m, &i))
        if (polling_carries(m->value))
            (*polling)++;
        else
            (*websocket)++;
}
