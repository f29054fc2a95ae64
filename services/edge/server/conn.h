/* conn: what the server keeps per lws connection (lws allocates it with the
 * connection and zeroes it; the server frees what it puts in it when the
 * connection closes). A connection is an HTTP request (long-polling or a
 * plain route, reused across keep-alive requests) or a WebSocket (carrying a
 * session, or probing an upgrade). Private to server/. */
#ifndef CONN_H
#define CONN_H

#include <libwebsockets.h>

#include "engineio/eio.h"
#include "engineio/session.h"
#include "http.h"
#include "wheel.h"

struct server;
struct polling;

enum conn_role {
    CONN_NONE,  /* a plain HTTP request, or nothing yet */
    CONN_WS,    /* a WebSocket carrying or probing a session (t.s) */
    CONN_GET,   /* a long-polling GET (held or being answered) */
    CONN_POST,  /* a long-polling POST */
    CONN_ROUTE, /* a plain route receiving a body */
};

struct ws_conn {
    struct eio_transport t; /* the session's carrier, or its probe */
    struct eio_rx rx;       /* fragment reassembly */
    int probe_reply;        /* "3probe" owed on a probe */
};

struct http_side {
    struct http_conn h;
    struct polling *pl;         /* CONN_GET / CONN_POST: the session's polling transport */
    struct wheel_timer t_check; /* a held GET's abort check */
};

struct conn {
    struct lws *wsi;
    struct server *srv;
    enum conn_role role;
    union {
        struct ws_conn ws;
        struct http_side http;
    } u;
};

/* polling.c, for the lws callback in server.c */
int polling_request(struct lws *wsi, struct conn *c, const struct eio_app *app, void *app_ctx);
int polling_body(struct lws *wsi, struct conn *c, const void *in, size_t len);
int polling_body_done(struct lws *wsi, struct conn *c);
int polling_writeable(struct lws *wsi, struct conn *c);
void polling_closed(struct lws *wsi, struct conn *c);
/* 1 when the session is carried by long-polling. */
int polling_carries(const struct session *s);

/* ws.c */
int ws_established(struct lws *wsi, struct conn *c, const struct eio_app *app, void *app_ctx);
int ws_filter(struct lws *wsi, struct server *srv);
int ws_receive(struct lws *wsi, struct conn *c, const void *in, size_t len);
int ws_writeable(struct lws *wsi, struct conn *c);
void ws_closed(struct lws *wsi, struct conn *c);

#endif
