/* ws: the libwebsockets glue: one protocol callback for HTTP and WebSocket on
 * one port, which turns lws events into session calls (WebSocket here,
 * long-polling in polling.c). */
#ifndef WS_H
#define WS_H

#include <libwebsockets.h>

#include "mem.h"
#include "wheel.h"

struct edge;
struct session;

/* What a connection is doing for Engine.IO. */
enum ws_role {
    WS_ROLE_NONE,  /* a plain HTTP request, or nothing yet */
    WS_ROLE_WS,    /* the WebSocket carrying a session */
    WS_ROLE_PROBE, /* a WebSocket probing an upgrade */
    WS_ROLE_GET,   /* a long-polling GET */
    WS_ROLE_POST,  /* a long-polling POST */
    WS_ROLE_LOGIN, /* a POST /dev/login */
};

/* lws per-connection data (lws allocates and frees the struct; we free what
 * we put in it on CLOSED / CLOSED_HTTP). Reused across keep-alive requests. */
struct ws_pss {
    struct session *s; /* NULL once the session is gone */
    enum ws_role role;
    struct buf body; /* POST body, then the response body */
    unsigned int status;
    const char *ctype;
    int phase;                  /* 0: nothing to write, 1: headers due, 2: body due */
    int close_after;            /* close the connection after this response */
    int preflight;              /* a CORS preflight: add the Allow-* headers */
    char *origin;               /* allowed CORS origin to echo, or NULL */
    struct lws *wsi;            /* back pointer for t_check */
    struct wheel_timer t_check; /* a held GET's abort check */
};

/* Creates the lws context listening on cfg host:port. Returns 0 or -1 (logged). */
int ws_start(struct edge *e);
/* Closes every session gracefully (server shutting down). */
void ws_close_all(struct edge *e);
/* Destroys the sessions that are left (polling ones have no socket that
 * lws_context_destroy would close). */
void ws_destroy_all(struct edge *e);
void ws_stop(struct edge *e);
/* Detaches the connection from its session; kill: close it now. */
void ws_detach(struct lws *wsi, int kill);

#endif
