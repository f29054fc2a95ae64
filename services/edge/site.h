/* site: the edge's plain HTTP routes next to Engine.IO: GET /healthz, GET
 * /metrics, the demo's static files (EDGE_STATIC_DIR) and, for the demo only,
 * POST /dev/login (EDGE_DEV_LOGIN=1 with a "dev-" secret). */
#ifndef SITE_H
#define SITE_H

#include <libwebsockets.h>

#include "ws.h"

struct edge;

/* LWS_CALLBACK_HTTP for a path that is not Engine.IO's. */
int site_request(struct lws *wsi, struct ws_pss *pss, struct edge *e, const char *path);
/* POST bodies of /dev/login (LWS_CALLBACK_HTTP_BODY / _COMPLETION). */
int site_body(struct lws *wsi, struct ws_pss *pss, const void *in, size_t len);
int site_body_done(struct lws *wsi, struct ws_pss *pss, struct edge *e);
/* 1 when EDGE_DEV_LOGIN may be used with this secret. */
int site_dev_secret(const char *secret);

#endif
