/* chat-edge: the Socket.IO gateway. Reads its configuration, starts the
 * server (server/), mounts the applications on it (Socket.IO with the chat
 * app on /socket.io/; in conformance mode the suites' apps instead), then
 * NATS, runs the loop until SIGTERM/SIGINT, closes every socket cleanly and
 * stops NATS before the server (docs/architecture.md §Shutdown). The only
 * file that sees both the server and the applications. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "abuse.h"
#include "chat/chat.h"
#include "config.h"
#include "conform/conform.h"
#include "ids.h"
#include "log.h"
#include "metrics.h"
#include "server/server.h"
#include "site.h"
#include "socketio/sock.h"
#include "stop.h"
#include "streams.h"

/* Every variable of the environment table; main hands each layer its part. */
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
    long stream_replicas;
    long heartbeat_ms;
    const char *static_dir;
    long dev_login;
    long max_conn_per_ip;
    long handshakes_per_s;
    long events_per_s;
    long events_burst;
    long rate_disconnect;
    long max_sockets_per_user;
    long max_tcp_per_ip;
    const char *trusted_proxies;
    long read_pause_bytes;
    long max_output_bytes;
    long to_user_per_s;
    long to_user_burst;
    long queries_per_user_per_s;
    long recovery_window_ms;
    const char *presence_scope;
    long recovery_max_events;
    const char *log_level;
};

#define V(...) CONFIG_VAR(struct edge_config, __VA_ARGS__)

static const struct config_var vars[] = {
    V("LOG_LEVEL", CONFIG_STR, "info", log_level, 0, 0, "debug, info, warn or error"),
    V("EDGE_MODE", CONFIG_STR, "chat", mode, 0, 0, "chat, or conformance for the protocol test suites"),
    V("NATS_URL", CONFIG_STR, "nats://127.0.0.1:4222", nats_url, 0, 0,
      "NATS server URL, or a cluster's URLs comma-separated (tried in that order)"),
    V("EDGE_HOST", CONFIG_STR, "0.0.0.0", host, 0, 0, "address to listen on"),
    V("EDGE_PORT", CONFIG_INT, "3000", port, 1, 65535, "port for Socket.IO (HTTP and WebSocket)"),
    V("EDGE_ID", CONFIG_STR, NULL, edge_id, 0, 0, "this edge's name on NATS (default: random)"),
    V("JWT_SECRET", CONFIG_SECRET, NULL, jwt_secret, 0, 0, "HS256 secret (or JWT_SECRET_FILE)"),
    V("EDGE_PING_INTERVAL_MS", CONFIG_INT, "25000", ping_interval_ms, 50, 3600000, "Engine.IO pingInterval"),
    V("EDGE_PING_TIMEOUT_MS", CONFIG_INT, "20000", ping_timeout_ms, 50, 3600000, "Engine.IO pingTimeout"),
    V("EDGE_MAX_PAYLOAD", CONFIG_INT, "1000000", max_payload, 1024, 100000000,
      "largest Engine.IO packet accepted, bytes"),
    V("EDGE_CONNECT_TIMEOUT_MS", CONFIG_INT, "45000", connect_timeout_ms, 50, 3600000,
      "time allowed for the Socket.IO CONNECT"),
    V("EDGE_CORS_ORIGINS", CONFIG_STR, "", cors_origins, 0, 0,
      "origins allowed to long-poll from a browser and to upgrade: empty, * or a list"),
    V("EDGE_MAX_QUEUE_BYTES", CONFIG_INT, "4194304", max_queue_bytes, 4096, 1073741824,
      "per-connection output queue limit; a client past it is disconnected"),
    V("EDGE_MAX_GHOST_TEXT", CONFIG_INT, "2000", max_ghost_text, 0, 1000000,
      "longest ghost:typing text, bytes"),
    V("EDGE_MAX_MESSAGE_BYTES", CONFIG_INT, "10000", max_message_bytes, 1, 1000000,
      "longest message content, bytes"),
    V("EDGE_MAX_PRESENCE_QUERY", CONFIG_INT, "500", max_presence_query, 1, 100000,
      "most user ids in one presence:request"),
    V("CHAT_PARTITIONS", CONFIG_INT, "8", partitions, 1, 1024, "sender partitions; the same as messaging's"),
    V("CHAT_STREAM_REPLICAS", CONFIG_INT, "1", stream_replicas, 1, 5,
      "replicas of the JetStream streams and bucket it creates (3 on a 3-node cluster)"),
    V("EDGE_HEARTBEAT_MS", CONFIG_INT, "5000", heartbeat_ms, 100, 600000, "period of chat.edge.heartbeat"),
    V("EDGE_STATIC_DIR", CONFIG_STR, "", static_dir, 0, 0, "folder served at / (the demo page); empty: none"),
    V("EDGE_DEV_LOGIN", CONFIG_INT, "0", dev_login, 0, 1, "1: POST /dev/login issues tokens (demo only)"),
    V("EDGE_MAX_CONN_PER_IP", CONFIG_INT, "4096", max_conn_per_ip, 0, 10000000,
      "Engine.IO sessions per client address (an office behind NAT is one address); 0: no limit"),
    V("EDGE_HANDSHAKES_PER_S", CONFIG_INT, "200", handshakes_per_s, 0, 1000000,
      "new sessions per second per client address, burst twice that; 0: no limit"),
    V("EDGE_MAX_TCP_PER_IP", CONFIG_INT, "4096", max_tcp_per_ip, 0, 10000000,
      "open TCP connections per peer address (trusted proxies excepted); 0: no limit"),
    V("EDGE_TRUSTED_PROXIES", CONFIG_STR, "", trusted_proxies, 0, 0,
      "proxies (addresses or CIDR blocks, comma-separated) whose X-Forwarded-For names the client"),
    V("EDGE_READ_PAUSE_BYTES", CONFIG_INT, "262144", read_pause_bytes, 0, 1073741824,
      "output queued for a client past which it is not read until it takes it; 0: never"),
    V("EDGE_MAX_OUTPUT_BYTES", CONFIG_INT, "536870912", max_output_bytes, 0, 68719476736,
      "output queued for all clients together; past it, clients with unread output are cut off; 0: no limit"),
    V("EDGE_EVENTS_TO_USER_PER_S", CONFIG_INT, "20", to_user_per_s, 0, 1000000,
      "events (signals and messages) of one user to one other user per second; 0: no limit"),
    V("EDGE_EVENTS_TO_USER_BURST", CONFIG_INT, "60", to_user_burst, 1, 1000000, "... with this burst"),
    V("EDGE_QUERIES_PER_USER_PER_S", CONFIG_INT, "10", queries_per_user_per_s, 0, 1000000,
      "presence:request and message:history of one user's sockets per second, burst twice that; 0: no limit"),
    V("PRESENCE_SCOPE", CONFIG_STR, "broadcast", presence_scope, 0, 0,
      "broadcast: every socket gets every user:status and the whole online list (the original contract); "
      "interest: only its conversations' users and those it asked about"),
    V("EDGE_RECOVERY_WINDOW_MS", CONFIG_INT, "120000", recovery_window_ms, 0, 86400000,
      "how long after a drop a client may recover its session (missed events replayed); 0: off"),
    V("EDGE_RECOVERY_MAX_EVENTS", CONFIG_INT, "1000", recovery_max_events, 1, 1000000,
      "most events one recovery replays; a client that missed more gets a new session"),
    V("EDGE_EVENTS_PER_S", CONFIG_INT, "30", events_per_s, 1, 1000000, "client events per second per socket"),
    V("EDGE_EVENTS_BURST", CONFIG_INT, "60", events_burst, 1, 1000000, "burst of client events per socket"),
    V("EDGE_RATE_DISCONNECT", CONFIG_INT, "200", rate_disconnect, 1, 1000000,
      "rate-limited events in a row before the socket is disconnected"),
    V("EDGE_MAX_SOCKETS_PER_USER", CONFIG_INT, "32", max_sockets_per_user, 1, 1000000,
      "sockets of one user on this edge"),
};

static struct edge_config cfg;
static struct server srv;
static struct abuse abuse;
static struct bus bus;
static struct chat *chat;
static struct sio_server sio;
static struct site site;
static struct eio_config eio_cfg;
static struct server_config srv_cfg;
static struct sio_config sio_cfg;
static struct chat_config chat_cfg;
static char boot_id[17];

static void wake(void *ctx)
{
    server_wake(ctx);
}

/* /metrics: the gauges read from the server and NATS, not counted. */
static void gauges(void *ctx)
{
    (void)ctx;
    size_t websocket, polling;
    server_count(&srv, &websocket, &polling);
    metrics_set("chat_edge_sessions", "transport=\"polling\"", (double)polling);
    metrics_set("chat_edge_sessions", "transport=\"websocket\"", (double)websocket);
    metrics_set("chat_edge_frames_coalesced_total", NULL, (double)srv.engine.frames_coalesced);
    metrics_set("chat_edge_output_bytes", NULL, (double)srv.engine.queued);
    metrics_set("chat_edge_output_budget_kills_total", NULL, (double)srv.engine.budget_kills);
    metrics_set("chat_edge_tcp_refused_total", NULL, (double)srv.refused_tcp);
    metrics_set("chat_edge_forwarded_total", NULL, (double)srv.forwarded);
    if (bus.nc) {
        natsStatistics *st = NULL;
        uint64_t reconnects = 0;
        if (natsStatistics_Create(&st) == NATS_OK && natsConnection_GetStats(bus.nc, st) == NATS_OK)
            natsStatistics_GetCounts(st, NULL, NULL, NULL, NULL, &reconnects);
        natsStatistics_Destroy(st);
        metrics_set("chat_edge_nats_reconnects_total", NULL, (double)reconnects);
        metrics_set("chat_edge_nats_connected", NULL, bus_connected(&bus));
    }
}

static int healthy(void *ctx)
{
    (void)ctx;
    return !chat || chat_healthy(chat);
}

/* Hands each layer its part of the configuration. */
static void split_config(void)
{
    eio_cfg = (struct eio_config){cfg.ping_interval_ms, cfg.ping_timeout_ms,  cfg.max_payload,
                                  cfg.max_queue_bytes,  cfg.read_pause_bytes, cfg.max_output_bytes};
    srv_cfg =
        (struct server_config){cfg.host, cfg.port, cfg.cors_origins, cfg.trusted_proxies, cfg.max_tcp_per_ip};
    sio_cfg = (struct sio_config){cfg.connect_timeout_ms};
    chat_cfg = (struct chat_config){
        .edge_id = cfg.edge_id,
        .boot_id = boot_id,
        .jwt_secret = cfg.jwt_secret,
        .max_ghost_text = cfg.max_ghost_text,
        .max_message_bytes = cfg.max_message_bytes,
        .max_presence_query = cfg.max_presence_query,
        .partitions = cfg.partitions,
        .heartbeat_ms = cfg.heartbeat_ms,
        .events_per_s = cfg.events_per_s,
        .events_burst = cfg.events_burst,
        .rate_disconnect = cfg.rate_disconnect,
        .max_sockets_per_user = cfg.max_sockets_per_user,
        .to_user_per_s = cfg.to_user_per_s,
        .to_user_burst = cfg.to_user_burst,
        .queries_per_user_per_s = cfg.queries_per_user_per_s,
        .recovery_window_ms = cfg.recovery_window_ms,
        .recovery_max_events = cfg.recovery_max_events,
        .presence_interest = strcmp(cfg.presence_scope, "interest") == 0,
    };
}

/* The chat application on /socket.io/, with NATS. Returns 0 or -1. */
static int start_chat(void)
{
    chat = chat_create(&chat_cfg, &bus, &srv.wheel, wake, &srv);
    sio_server_init(&sio, &sio_cfg, &chat_sio_app, chat);
    server_mount(&srv, "/socket.io/", &sio_eio_app, &sio);
    server_on_wake(&srv, chat_drain, chat);
    bus.on_connect = chat_bus_connected;
    bus.on_connect_closure = chat;
    bus.no_echo = 1; /* the chat delivers to this edge's own sockets itself */
    if (bus_open(&bus, cfg.nats_url, "chat-edge", 0) != 0 || chat_start(chat) != 0)
        return -1;
    return 0;
}

int main(void)
{
    static char random_id[24];
    log_init("edge", "info");
    config_load(&cfg, vars, CONFIG_COUNT(vars));
    if (log_init("edge", cfg.log_level) != 0)
        log_warn("unknown LOG_LEVEL=%s; using info", cfg.log_level);
    int conformance = strcmp(cfg.mode, "conformance") == 0;
    if (!conformance && strcmp(cfg.mode, "chat") != 0) {
        log_error("config: EDGE_MODE=%s is neither chat nor conformance", cfg.mode);
        return 1;
    }
    if (strcmp(cfg.presence_scope, "broadcast") != 0 && strcmp(cfg.presence_scope, "interest") != 0) {
        log_error("config: PRESENCE_SCOPE=%s is neither broadcast nor interest", cfg.presence_scope);
        return 1;
    }
    if (!conformance && !*cfg.jwt_secret) {
        log_error("config: JWT_SECRET (or JWT_SECRET_FILE) is required in chat mode");
        return 1;
    }
    site = (struct site){cfg.static_dir, cfg.jwt_secret, 0, healthy, gauges, NULL};
    if (cfg.dev_login && !conformance) {
        if (!site_dev_secret(cfg.jwt_secret)) {
            log_error(
                "config: EDGE_DEV_LOGIN=1 needs a dev secret (JWT_SECRET starting with \"dev-\"): refused");
            return 1;
        }
        site.dev_login = 1;
        log_warn("EDGE_DEV_LOGIN=1: POST /dev/login gives anyone a token for any name. DEMO ONLY.");
    }
    if (!*cfg.edge_id) {
        ids_random(random_id, 12);
        cfg.edge_id = random_id;
    }
    ids_random(boot_id, 16);
    config_log(&cfg, vars, CONFIG_COUNT(vars));
    streams_set_replicas(cfg.stream_replicas);
    split_config();
    metrics_describe("chat_edge_sessions", "gauge", "Open Engine.IO sessions, by transport.");
    metrics_describe(
        "chat_edge_frames_coalesced_total", "counter",
        "ghost:typing frames replaced by a newer one from the same sender before they were sent.");
    metrics_describe("chat_edge_nats_reconnects_total", "counter", "NATS reconnections.");
    metrics_describe("chat_edge_nats_connected", "gauge", "1 while NATS is connected.");
    metrics_describe("chat_edge_output_bytes", "gauge",
                     "Output queued for all clients (EDGE_MAX_OUTPUT_BYTES).");
    metrics_describe("chat_edge_output_budget_kills_total", "counter",
                     "Sessions cut off because the edge's output budget was spent.");
    metrics_describe("chat_edge_tcp_refused_total", "counter",
                     "Connections refused at accept: the peer address had EDGE_MAX_TCP_PER_IP open, or the "
                     "edge its open-files limit less 64.");
    metrics_describe("chat_edge_forwarded_total", "counter",
                     "Client addresses taken from the X-Forwarded-For of a proxy in EDGE_TRUSTED_PROXIES.");

    stop_install(wake, &srv); /* the loop notices at its next turn */

    if (server_start(&srv, &srv_cfg, &eio_cfg) != 0)
        return 1;
    abuse_init(&abuse, cfg.max_conn_per_ip, cfg.handshakes_per_s);
    srv.engine.admit = abuse_admit;
    srv.engine.release = abuse_release;
    srv.engine.admit_ctx = &abuse;
    server_set_routes(&srv, &site_routes, &site);
    if (conformance) {
        sio_server_init(&sio, &sio_cfg, &conform_sio_app, NULL);
        server_mount(&srv, "/socket.io/", &sio_eio_app, &sio);
        server_mount(&srv, "/engine.io/", &conform_echo_app, NULL);
    } else if (start_chat() != 0) {
        chat_destroy(chat);
        bus_close(&bus, 0);
        server_destroy(&srv);
        abuse_cleanup(&abuse);
        return 1;
    }
    log_info("listening host=%s port=%ld mode=%s edge=%s", cfg.host, cfg.port, cfg.mode, cfg.edge_id);

    while (!stop_requested())
        if (server_service(&srv) < 0)
            break;

    /* Graceful stop: close every session (WebSocket 1001), give them up to
     * 2 s to flush, then NATS, then the server. */
    log_info("shutting down sessions=%zu", srv.engine.sessions.count);
    server_drain(&srv, 2000);
    chat_stop(chat);
    bus_close(&bus, 1000);
    nats_CloseAndWait(1000); /* no nats.c thread runs past this: none can reach freed state */
    server_destroy(&srv);
    chat_destroy(chat);
    abuse_cleanup(&abuse);
    log_info("stopped");
    return 0;
}
