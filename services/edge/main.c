/* chat-edge: the Socket.IO gateway. Reads its configuration, opens the lws
 * context, then NATS, runs the loop until SIGTERM/SIGINT, closes every socket
 * cleanly and stops NATS before lws (c-stack.md §3). */
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "config.h"
#include "conform.h"
#include "edge.h"
#include "ids.h"
#include "abuse.h"
#include "log.h"
#include "site.h"
#include "streams.h"
#include "sock.h"
#include "ws.h"

#define V(name, kind, def, req, field, min, max, help)                                                       \
    {                                                                                                        \
        name, kind, def, req, offsetof(struct edge_config, field), min, max, help                            \
    }

static const struct config_var vars[] = {
    V("LOG_LEVEL", CONFIG_STR, "info", 0, log_level, 0, 0, "debug, info, warn or error"),
    V("EDGE_MODE", CONFIG_STR, "chat", 0, mode, 0, 0, "chat, or conformance for the protocol test suites"),
    V("NATS_URL", CONFIG_STR, "nats://127.0.0.1:4222", 0, nats_url, 0, 0,
      "NATS server URL, or a cluster's URLs comma-separated (tried in that order)"),
    V("EDGE_HOST", CONFIG_STR, "0.0.0.0", 0, host, 0, 0, "address to listen on"),
    V("EDGE_PORT", CONFIG_INT, "3000", 0, port, 1, 65535, "port for Socket.IO (HTTP and WebSocket)"),
    V("EDGE_ID", CONFIG_STR, NULL, 0, edge_id, 0, 0, "this edge's name on NATS (default: random)"),
    V("JWT_SECRET", CONFIG_SECRET, NULL, 0, jwt_secret, 0, 0, "HS256 secret (or JWT_SECRET_FILE)"),
    V("EDGE_PING_INTERVAL_MS", CONFIG_INT, "25000", 0, ping_interval_ms, 50, 3600000,
      "Engine.IO pingInterval"),
    V("EDGE_PING_TIMEOUT_MS", CONFIG_INT, "20000", 0, ping_timeout_ms, 50, 3600000, "Engine.IO pingTimeout"),
    V("EDGE_MAX_PAYLOAD", CONFIG_INT, "1000000", 0, max_payload, 1024, 100000000,
      "largest Engine.IO packet accepted, bytes"),
    V("EDGE_CONNECT_TIMEOUT_MS", CONFIG_INT, "45000", 0, connect_timeout_ms, 50, 3600000,
      "time allowed for the Socket.IO CONNECT"),
    V("EDGE_CORS_ORIGINS", CONFIG_STR, "", 0, cors_origins, 0, 0,
      "origins allowed to long-poll from a browser: empty, * or a list"),
    V("EDGE_MAX_QUEUE_BYTES", CONFIG_INT, "4194304", 0, max_queue_bytes, 4096, 1073741824,
      "per-connection output queue limit; a client past it is disconnected"),
    V("EDGE_MAX_GHOST_TEXT", CONFIG_INT, "2000", 0, max_ghost_text, 0, 1000000,
      "longest ghost:typing text, bytes"),
    V("EDGE_MAX_MESSAGE_BYTES", CONFIG_INT, "10000", 0, max_message_bytes, 1, 1000000,
      "longest message content, bytes"),
    V("EDGE_MAX_PRESENCE_QUERY", CONFIG_INT, "500", 0, max_presence_query, 1, 100000,
      "most user ids in one presence:request"),
    V("CHAT_PARTITIONS", CONFIG_INT, "8", 0, partitions, 1, 1024,
      "sender partitions; the same as messaging's"),
    V("CHAT_STREAM_REPLICAS", CONFIG_INT, "1", 0, stream_replicas, 1, 5,
      "replicas of the JetStream streams it creates (3 on a 3-node cluster)"),
    V("EDGE_HEARTBEAT_MS", CONFIG_INT, "5000", 0, heartbeat_ms, 100, 600000, "period of chat.edge.heartbeat"),
    V("EDGE_STATIC_DIR", CONFIG_STR, "", 0, static_dir, 0, 0,
      "folder served at / (the demo page); empty: none"),
    V("EDGE_DEV_LOGIN", CONFIG_INT, "0", 0, dev_login, 0, 1, "1: POST /dev/login issues tokens (demo only)"),
    V("EDGE_MAX_CONN_PER_IP", CONFIG_INT, "1024", 0, max_conn_per_ip, 0, 10000000,
      "sessions per client address; 0: no limit (behind a proxy)"),
    V("EDGE_HANDSHAKES_PER_S", CONFIG_INT, "50", 0, handshakes_per_s, 0, 1000000,
      "new sessions per second per client address, burst twice that; 0: no limit"),
    V("EDGE_EVENTS_PER_S", CONFIG_INT, "30", 0, events_per_s, 1, 1000000,
      "client events per second per socket"),
    V("EDGE_EVENTS_BURST", CONFIG_INT, "60", 0, events_burst, 1, 1000000,
      "burst of client events per socket"),
    V("EDGE_RATE_DISCONNECT", CONFIG_INT, "200", 0, rate_disconnect, 1, 1000000,
      "rate-limited events in a row before the socket is disconnected"),
    V("EDGE_MAX_SOCKETS_PER_USER", CONFIG_INT, "32", 0, max_sockets_per_user, 1, 1000000,
      "sockets of one user on this edge"),
};

static struct edge edge;
static lws_sorted_usec_list_t sul_grace;
static int grace_over;

static void on_grace(lws_sorted_usec_list_t *sul)
{
    (void)sul;
    grace_over = 1;
    lws_cancel_service(edge.ctx); /* lws services timers before it polls: end that poll */
}

static void on_signal(int sig)
{
    (void)sig;
    edge.stopping = 1;
    if (edge.ctx)
        lws_cancel_service(edge.ctx);
}

uint64_t edge_next_id(struct edge *e)
{
    return ++e->next_id;
}

int main(void)
{
    static struct edge_config cfg;
    static char random_id[24];
    log_init("edge", "info");
    config_load(&cfg, vars, sizeof vars / sizeof vars[0]);
    if (log_init("edge", cfg.log_level) != 0)
        log_warn("unknown LOG_LEVEL=%s; using info", cfg.log_level);
    edge.conformance = strcmp(cfg.mode, "conformance") == 0;
    if (!edge.conformance && strcmp(cfg.mode, "chat") != 0) {
        log_error("config: EDGE_MODE=%s is neither chat nor conformance", cfg.mode);
        return 1;
    }
    if (!edge.conformance && !*cfg.jwt_secret) {
        log_error("config: JWT_SECRET (or JWT_SECRET_FILE) is required in chat mode");
        return 1;
    }
    if (cfg.dev_login && !edge.conformance) {
        if (!site_dev_secret(cfg.jwt_secret)) {
            log_error(
                "config: EDGE_DEV_LOGIN=1 needs a dev secret (JWT_SECRET starting with \"dev-\"): refused");
            return 1;
        }
        edge.dev_login = 1;
        log_warn("EDGE_DEV_LOGIN=1: POST /dev/login gives anyone a token for any name. DEMO ONLY.");
    }
    if (!*cfg.edge_id) {
        ids_random(random_id, 12);
        cfg.edge_id = random_id;
    }
    edge.cfg = &cfg;
    ids_random(edge.boot_id, 16);
    config_log(&cfg, vars, sizeof vars / sizeof vars[0]);
    streams_set_replicas(cfg.stream_replicas);

    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    map_init(&edge.sessions);
    map_init(&edge.peers);
    if (ws_start(&edge) != 0)
        return 1;
    wheel_lws_init(&edge.wheel, edge.ctx);
    if (edge.conformance) {
        sock_set_app(&conform_sock_app);
    } else {
        sock_set_app(&chat_sock_app);
        edge.bus.on_connect = chat_bus_connected;
        edge.bus.no_echo = 1; /* chat.c delivers to this edge's own sockets itself */
        if (bus_open(&edge.bus, cfg.nats_url, "chat-edge", 0) != 0 || !(edge.chat = chat_create(&edge))) {
            bus_close(&edge.bus, 0);
            wheel_lws_cleanup(&edge.wheel);
            ws_stop(&edge);
            return 1;
        }
    }
    log_info("listening host=%s port=%ld mode=%s edge=%s", cfg.host, cfg.port, cfg.mode, cfg.edge_id);

    while (!edge.stopping)
        if (lws_service(edge.ctx, 0) < 0)
            break;

    /* Graceful stop: close every session (WebSocket 1001), give them up to
     * 2 s to flush, then NATS, then lws. */
    log_info("shutting down sessions=%zu", edge.sessions.count);
    ws_close_all(&edge);
    lws_sul_schedule(edge.ctx, 0, &sul_grace, on_grace, 2 * LWS_US_PER_SEC); /* wakes the loop */
    while (edge.sessions.count > 0 && !grace_over)
        if (lws_service(edge.ctx, 0) < 0)
            break;
    lws_sul_cancel(&sul_grace);
    chat_stop(edge.chat);
    bus_close(&edge.bus, 1000);
    nats_CloseAndWait(1000); /* no nats.c thread runs past this: none can reach freed state */
    ws_destroy_all(&edge);
    wheel_lws_cleanup(&edge.wheel);
    ws_stop(&edge);
    chat_destroy(edge.chat);
    map_cleanup(&edge.sessions);
    abuse_cleanup(&edge);
    log_info("stopped");
    return 0;
}
