/* site: the edge's plain HTTP routes beside Engine.IO: GET /healthz, GET
 * /metrics, the demo's static files (EDGE_STATIC_DIR) and, for the demo only,
 * POST /dev/login (EDGE_DEV_LOGIN=1 with a "dev-" secret). main.c mounts them
 * on the server (server_set_routes with site_routes and the struct site). */
#ifndef SITE_H
#define SITE_H

#include "server/server.h"

struct site {
    const char *static_dir; /* "" : no static files */
    const char *jwt_secret; /* signs dev logins */
    int dev_login;          /* POST /dev/login is served */
    /* 1 when the edge can do its job (GET /healthz: 200, else 503). */
    int (*healthy)(void *ctx);
    /* Sets the gauges that are read, not counted, just before /metrics is rendered. */
    void (*gauges)(void *ctx);
    void *ctx;
};

extern const struct server_routes site_routes;
/* 1 when EDGE_DEV_LOGIN may be used with this secret. */
int site_dev_secret(const char *secret);

#endif
