/* server: the HTTP/WebSocket server under the protocol layers: one lws
 * context and its loop, the timer wheel, the Engine.IO engine, and the two
 * transports (WebSocket, HTTP long-polling) that carry its sessions. Engine.IO
 * applications are mounted on paths (Socket.IO's sio_eio_app on /socket.io/);
 * other paths go to one optional set of plain HTTP routes. Other threads
 * reach the loop only through server_wake(), which runs the wake hook on it. */
#ifndef SERVER_H
#define SERVER_H

#include <libwebsockets.h>

#include "engineio/session.h"
#include "http.h"
#include "map.h"
#include "wheel.h"

struct server_config {
    const char *host;
    long port;
    const char *cors_origins;    /* empty, "*" or a comma-separated list of origins */
    const char *trusted_proxies; /* addresses whose X-Forwarded-For names the client ("": none) */
    long max_tcp_per_ip; /* open TCP connections per peer address (trusted proxies: no limit); 0: off */
};

/* Plain HTTP routes for paths no Engine.IO app is mounted on. */
struct server_routes {
    /* A request: answer with http_respond(), or return 0 after setting
     * *want_body to 1 to receive a body (then body_done). Return -1 to close. */
    int (*request)(void *ctx, struct lws *wsi, struct http_conn *h, const char *path, int *want_body);
    /* The body is in h->body: answer it. May be NULL (no route takes bodies). */
    int (*body_done)(void *ctx, struct lws *wsi, struct http_conn *h);
    long max_body; /* a longer body closes the connection */
};

#define SERVER_MAX_MOUNTS 4

struct server {
    const struct server_config *cfg;
    struct lws_context *ctx;
    struct wheel wheel;
    struct eio_engine engine;
    struct {
        const char *path; /* with its trailing '/': "/socket.io/" */
        const struct eio_app *app;
        void *ctx;
    } mounts[SERVER_MAX_MOUNTS];
    int nmounts;
    const struct server_routes *routes;
    void *routes_ctx;
    void (*on_wake)(void *ctx); /* the loop was woken by server_wake() */
    void *wake_ctx;
    volatile int stopping; /* no new sessions; WebSockets close with 1001 */
    struct map tcp_peers;  /* peer address -> open TCP connections (max_tcp_per_ip) */
    char *tcp_pending;     /* the address accepted last, until its connection exists */
    uint64_t refused_tcp;  /* connections refused at accept (per-address or open-files limit) */
    long tcp_open;         /* connections open (accepted, not yet destroyed) */
    long max_open;         /* the open-files limit less a reserve (0: none) */
    uint64_t forwarded;    /* client addresses taken from a trusted proxy's X-Forwarded-For */
};

/* Listens on cfg host:port and sets up the engine with ecfg. Returns 0 or -1
 * (logged). */
int server_start(struct server *srv, const struct server_config *cfg, const struct eio_config *ecfg);
/* Serves path (and path without its trailing '/') with app. */
int server_mount(struct server *srv, const char *path, const struct eio_app *app, void *ctx);
void server_set_routes(struct server *srv, const struct server_routes *routes, void *ctx);
void server_on_wake(struct server *srv, void (*fn)(void *ctx), void *ctx);
/* Any thread: wakes the loop, which then runs the wake hook (wake-ups that
 * come together are coalesced into one). */
void server_wake(struct server *srv);
/* One turn of the loop; -1 when it failed. */
int server_service(struct server *srv);
/* Stops taking sessions and closes every one gracefully; then turns the loop
 * until they are gone or grace_ms passed. */
void server_drain(struct server *srv, int grace_ms);
/* Destroys what is left (sessions, timers, the lws context). */
void server_destroy(struct server *srv);

/* The client's address of a request: the peer, or, when the peer is one of
 * the trusted proxies, the last address of its X-Forwarded-For. */
void server_client_ip(struct server *srv, struct lws *wsi, char *out, size_t n);

/* Sessions carried by each transport, for metrics. */
void server_count(const struct server *srv, size_t *websocket, size_t *polling);

#endif
