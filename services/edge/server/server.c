/* server: the lws context, its one protocol callback for HTTP and WebSocket on
 * one port, and the dispatch of its events: Engine.IO paths to the
 * transports (ws.c, polling.c), other paths to the plain routes. Other
 * threads reach the loop only through server_wake() (lws_cancel_service,
 * whose wake-ups lws coalesces). */
#include "server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "conn.h"
#include "log.h"
#include "mem.h"

#define FD_RESERVE 64 /* descriptors kept for NATS, files and the like */

/* ---------- addresses ---------- */

/* 1 when ip is in list: comma-separated addresses or CIDR blocks, v4 or v6. */
static int ip_in_list(const char *ip, const char *list)
{
    unsigned char a[16], b[16];
    int fam = strchr(ip, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(fam, ip, a) != 1)
        return 0;
    size_t alen = fam == AF_INET ? 4 : 16;
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        char item[64];
        while (n && *p == ' ')
            p++, n--;
        while (n && p[n - 1] == ' ')
            n--;
        if (n && n < sizeof item) {
            memcpy(item, p, n);
            item[n] = '\0';
            char *slash = strchr(item, '/');
            long bits = (long)alen * 8;
            if (slash) {
                *slash = '\0';
                bits = strtol(slash + 1, NULL, 10);
            }
            if (inet_pton(fam, item, b) == 1 && bits >= 0 && bits <= (long)alen * 8) {
                size_t full = (size_t)bits / 8;
                unsigned rest = (unsigned)bits % 8;
                if (memcmp(a, b, full) == 0 &&
                    (rest == 0 || ((a[full] ^ b[full]) & (unsigned char)(0xff << (8 - rest)) & 0xff) == 0))
                    return 1;
            }
        }
        p = comma ? comma + 1 : p + strlen(p);
    }
    return 0;
}

/* An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d: one
 * address has one spelling, a.b.c.d. */
static void unmap_v4(char *ip)
{
    if (strncmp(ip, "::ffff:", 7) == 0 && strchr(ip + 7, '.'))
        memmove(ip, ip + 7, strlen(ip + 7) + 1);
}

void server_client_ip(struct server *srv, struct lws *wsi, char *out, size_t n)
{
    out[0] = '\0';
    lws_get_peer_simple(wsi, out, n);
    unmap_v4(out);
    if (!*srv->cfg->trusted_proxies || !ip_in_list(out, srv->cfg->trusted_proxies))
        return;
    char xff[256];
    if (lws_hdr_copy(wsi, xff, sizeof xff, WSI_TOKEN_X_FORWARDED_FOR) <= 0)
        return;
    const char *last = strrchr(xff, ',');
    last = last ? last + 1 : xff;
    while (*last == ' ')
        last++;
    unsigned char tmp[16];
    if (inet_pton(strchr(last, ':') ? AF_INET6 : AF_INET, last, tmp) == 1) { /* the proxy appended it */
        snprintf(out, n, "%s", last);
        unmap_v4(out);
        srv->forwarded++;
    }
}

/* ---------- TCP connections per peer address ---------- */

/* ip: the address counted per peer, or "" (a trusted proxy, the limit off). */
static void tcp_release(struct server *srv, char *ip)
{
    srv->tcp_open--;
    long *count = *ip ? map_get(&srv->tcp_peers, ip) : NULL;
    if (count && --*count == 0) {
        map_del(&srv->tcp_peers, ip);
        free(count);
    }
    free(ip);
}

/* FILTER_NETWORK_CONNECTION: 0 takes the connection, -1 refuses it (lws
 * closes it at once). Its address waits in tcp_pending until lws has made the
 * connection (SERVER_NEW_CLIENT_INSTANTIATED follows at once), which then
 * holds it; if lws never does, the next accept gives the count back. */
static int tcp_admit(struct server *srv, const struct lws_filter_network_conn_args *filt)
{
    if (srv->tcp_pending) {
        tcp_release(srv, srv->tcp_pending);
        srv->tcp_pending = NULL;
    }
    /* The descriptors the process has, minus a reserve for NATS, files and
     * the like: a connection over it is closed at once, so that accept()
     * never fails for want of a descriptor (lws would retry it in a loop). */
    if (srv->max_open > 0 && srv->tcp_open >= srv->max_open) {
        srv->refused_tcp++;
        log_limited(LOG_WARN, "connection refused: %ld open, the open-files limit less a reserve of %d",
                    srv->tcp_open, FD_RESERVE);
        return -1;
    }
    char ip[INET6_ADDRSTRLEN] = "";
    if (srv->cfg->max_tcp_per_ip <= 0)
        goto take;
    if (filt->cli_addr.ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&filt->cli_addr)->sin_addr, ip, sizeof ip);
    else if (filt->cli_addr.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&filt->cli_addr)->sin6_addr, ip, sizeof ip);
    unmap_v4(ip);
    if (!*ip || (*srv->cfg->trusted_proxies && ip_in_list(ip, srv->cfg->trusted_proxies))) {
        ip[0] = '\0';
        goto take;
    }
    long *count = map_get(&srv->tcp_peers, ip);
    if (count && *count >= srv->cfg->max_tcp_per_ip) {
        srv->refused_tcp++;
        log_limited(LOG_WARN, "connection refused: %ld already open from %s (EDGE_MAX_TCP_PER_IP)", *count,
                    ip);
        return -1;
    }
    if (!count) {
        count = xcalloc(1, sizeof *count);
        map_put(&srv->tcp_peers, ip, count);
    }
    ++*count;
take:
    srv->tcp_open++;
    srv->tcp_pending = xstrdup(ip);
    return 0;
}

/* ---------- methods ---------- */

/* What the edge serves is GET, POST and OPTIONS: any other method gets 405
 * (on an Engine.IO path, Engine.IO's own 400) and the connection is closed;
 * a CONNECT, which lws would otherwise hold as a raw socket forever, too. */
static const char refused_method[] = "HTTP/1.1 405 Method Not Allowed\r\nallow: GET, POST, OPTIONS\r\n"
                                     "content-length: 0\r\nconnection: close\r\n\r\n";

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
    if (c && !c->srv && reason != LWS_CALLBACK_FILTER_NETWORK_CONNECTION) {
        c->srv = srv;
        c->wsi = wsi;
    }

    switch (reason) {
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION: /* user: the accept's arguments */
        return tcp_admit(srv, user);
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED: /* (lws resets the opaque pointer before this) */
        if (srv && srv->tcp_pending) {
            lws_set_opaque_user_data(wsi, srv->tcp_pending);
            srv->tcp_pending = NULL;
        }
        break;
    case LWS_CALLBACK_WSI_DESTROY:
        if (srv && lws_get_opaque_user_data(wsi)) {
            tcp_release(srv, lws_get_opaque_user_data(wsi));
            lws_set_opaque_user_data(wsi, NULL);
        }
        break;
    case LWS_CALLBACK_RAW_ADOPT: /* an HTTP CONNECT: lws turned it raw */
        (void)!send(lws_get_socket_fd(wsi), refused_method, sizeof refused_method - 1,
                    MSG_DONTWAIT | MSG_NOSIGNAL);
        return -1;

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

    case LWS_CALLBACK_HTTP: {
        if ((m = mount_of(srv, (const char *)in)) >= 0) /* other methods: Engine.IO's 400 */
            return polling_request(wsi, c, srv->mounts[m].app, srv->mounts[m].ctx);
        char *uri;
        int ulen;
        int method = lws_http_get_uri_and_method(wsi, &uri, &ulen);
        if (method != LWSHUMETH_GET && method != LWSHUMETH_POST && method != LWSHUMETH_OPTIONS) {
            c->role = CONN_NONE;
            http_begin(wsi, &c->u.http.h, "");
            c->u.http.h.close_after = 1;
            return http_respond(wsi, &c->u.http.h, 405, "text/plain", "method not allowed\n", 19);
        }
        return route_request(wsi, c, (const char *)in);
    }
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

/* lws's own lines, at most one a second of the same kind: a flood of
 * "accept: errno 24" or "no space for new conn" says nothing more than one
 * line with its count. */
static void lws_log(int level, const char *line)
{
    static char last[48];
    static long long last_us;
    static unsigned long same;
    long long now = (long long)lws_now_usecs();
    if (strncmp(line, last, sizeof last - 1) == 0 && now - last_us < 1000000) {
        same++;
        return;
    }
    if (same)
        log_warn("lws: %lu more lines like \"%.40s\"", same, last);
    snprintf(last, sizeof last, "%s", line);
    last_us = now;
    same = 0;
    if (level & LLL_ERR)
        log_error("lws: %s", line);
    else if (level & LLL_WARN)
        log_warn("lws: %s", line);
    else
        log_debug("lws: %s", line);
}

/* The soft open-files limit up to the hard one: every connection is a
 * descriptor. Returns the limit the process has. */
static long raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? 1 << 20 : (long)rl.rlim_cur;
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

int server_start(struct server *srv, const struct server_config *cfg, const struct eio_config *ecfg)
{
    memset(srv, 0, sizeof *srv);
    srv->cfg = cfg;
    map_init(&srv->tcp_peers);
    long nofile = raise_nofile();
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log);
    /* Connections up to this many (tcp_admit); lws's own fd_limit_per_thread
     * would do it too, but below the open-files limit lws 4.1.6 finds a
     * connection by its descriptor with a scan of its whole table, on every
     * event (a fifth of the edge's CPU in a fan-out to 2,000 sockets). */
    srv->max_open = nofile > 2 * FD_RESERVE ? nofile - FD_RESERVE : 0;
    log_info("open files limit=%ld (connections up to %ld)", nofile, srv->max_open);
    info.port = (int)cfg->port;
    info.protocols = protocols;
    info.user = srv;
    /* Text frames must be valid UTF-8 (RFC 6455 §8.1); lws closes with 1007. */
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
    listen_on(&info, cfg->host);
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
    lws_context_destroy(srv->ctx); /* every connection's WSI_DESTROY: the counts go to 0 */
    srv->ctx = NULL;
    free(srv->tcp_pending);
    size_t i;
    struct map_entry *m;
    while ((m = map_first(&srv->tcp_peers, &i)))
        free(map_del(&srv->tcp_peers, m->key));
    map_cleanup(&srv->tcp_peers);
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
