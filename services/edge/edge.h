/* edge: the state shared by the edge's modules: configuration, the lws
 * context, the NATS bus and the table of Engine.IO sessions. Everything here
 * is touched on the lws service thread only, except what relay.h says. */
#ifndef EDGE_H
#define EDGE_H

#include <libwebsockets.h>
#include <stdint.h>

#include "bus.h"
#include "map.h"
#include "wheel.h"

struct edge_config {
    const char *nats_url;
    const char *host;
    long port;
    const char *edge_id;
    const char *jwt_secret;
    long ping_interval_ms;
    long ping_timeout_ms;
    long max_payload;
    long connect_timeout_ms;
    const char *cors_origins;
    const char *mode; /* "chat" or "conformance" */
    long max_queue_bytes;
    long max_ghost_text;
    long max_message_bytes;
    long max_presence_query;
    long partitions;
    long stream_replicas; /* CHAT_STREAM_REPLICAS */
    long heartbeat_ms;
    const char *static_dir;
    long dev_login;
    long max_conn_per_ip;      /* Engine.IO sessions per client address */
    long handshakes_per_s;     /* new sessions per second per address (burst: twice) */
    long events_per_s;         /* client events per second per socket */
    long events_burst;         /* ... with this burst */
    long rate_disconnect;      /* refused events in a row before the socket is disconnected */
    long max_sockets_per_user; /* sockets of one user on this edge */
    const char *log_level;
};

struct relay;
struct chat;

struct edge {
    const struct edge_config *cfg;
    int conformance;
    struct lws_context *ctx;
    struct bus bus;        /* unused (nc NULL) in conformance mode */
    struct relay *relay;   /* NATS threads -> lws thread */
    struct chat *chat;     /* the chat application, NULL in conformance mode */
    struct map sessions;   /* sid -> struct session */
    struct map peers;      /* client address -> abuse.c state */
    struct wheel wheel;    /* every per-session and per-request timer */
    uint64_t next_id;      /* ids for sockets, unique for this process */
    char boot_id[17];      /* random per start: tells presence a restart */
    int dev_login;         /* POST /dev/login is served (demo only) */
    volatile int stopping; /* set by SIGTERM/SIGINT */
};

/* Returns a new process-unique id (> 0). */
uint64_t edge_next_id(struct edge *e);

#endif
