/* ws: the libwebsockets glue: one protocol callback for HTTP and WebSocket on
 * one port, which turns lws events into session calls. */
#ifndef WS_H
#define WS_H

struct edge;

/* Creates the lws context listening on cfg host:port. Returns 0 or -1 (logged). */
int ws_start(struct edge *e);
/* Closes every session gracefully (server shutting down). */
void ws_close_all(struct edge *e);
void ws_stop(struct edge *e);

#endif
