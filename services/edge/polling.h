/* polling: the Engine.IO v4 HTTP long-polling transport (engine.io-protocol
 * §HTTP long-polling, docs/socketio-protocol.md §2.6) and CORS, on the same
 * port and path as the WebSocket. ws.c forwards the HTTP callbacks here. */
#ifndef POLLING_H
#define POLLING_H

#include <libwebsockets.h>
#include <stddef.h>

#include "session.h"
#include "ws.h"

/* LWS_CALLBACK_HTTP for a path an Engine.IO app serves (app). Returns what
 * the callback returns. */
int polling_request(struct lws *wsi, struct ws_pss *pss, struct edge *e, const struct session_app *app);
/* LWS_CALLBACK_HTTP_BODY / _BODY_COMPLETION. */
int polling_body(struct lws *wsi, struct ws_pss *pss, const void *in, size_t len);
int polling_body_done(struct lws *wsi, struct ws_pss *pss);
/* LWS_CALLBACK_HTTP_WRITEABLE. */
int polling_writeable(struct lws *wsi, struct ws_pss *pss);
/* LWS_CALLBACK_CLOSED_HTTP: an aborted held GET ends its session. */
void polling_closed(struct lws *wsi, struct ws_pss *pss);
/* 1 when a WebSocket upgrade may proceed under EDGE_CORS_ORIGINS (allowed):
 * no policy, no Origin header (not a browser), or an allowed origin. */
int polling_origin_ok(struct lws *wsi, const char *allowed);
/* Answers a held GET with body (e.g. "6") and detaches it from its session. */
void polling_finish_get(struct lws *wsi, const char *body);
/* Queues a plain HTTP response on wsi (JSON or text). */
int polling_respond(struct lws *wsi, struct ws_pss *pss, unsigned int status, const char *ctype,
                    const void *body, size_t len);

#endif
