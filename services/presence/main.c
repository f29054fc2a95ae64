/* chat-presence: who is online. Reads its configuration, then serves the
 * presence subjects until SIGTERM or SIGINT (see presence.h for the work and
 * docs/architecture.md for the flows). The signals are blocked in
 * every thread and taken synchronously here, between ticks: no handler code
 * runs at an arbitrary point of a nats.c thread. */
#include <signal.h>
#include <stddef.h>
#include <time.h>

#include "admin.h"
#include "bus.h"
#include "config.h"
#include "log.h"
#include "presence.h"

#define V(...) CONFIG_VAR(struct presence_config, __VA_ARGS__)

static const struct config_var vars[] = {
    V("LOG_LEVEL", CONFIG_STR, "info", log_level, 0, 0, "debug, info, warn, error"),
    V("NATS_URL", CONFIG_STR, "nats://127.0.0.1:4222", nats_url, 0, 0,
      "NATS server URL, or a cluster's URLs comma-separated (tried in that order)"),
    V("DATABASE_URL", CONFIG_SECRET, "", database_url, 0, 0,
      "libpq conninfo or URI; empty: the PG* variables"),
    V("PRESENCE_EDGE_TIMEOUT_MS", CONFIG_INT, "15000", edge_timeout_ms, 500, 3600000,
      "an edge whose heartbeats stop this long loses its sessions"),
    V("PRESENCE_GRACE_MS", CONFIG_INT, "5000", grace_ms, 0, 600000,
      "a user whose last session closed goes offline this long after, unless one opens meanwhile; 0: at "
      "once"),
    V("PRESENCE_RESYNC_MS", CONFIG_INT, "3000", resync_ms, 0, 600000,
      "after start, how long edges have to re-announce their sessions"),
    V("PRESENCE_MAX_QUERY", CONFIG_INT, "500", max_query, 1, 100000, "most user ids in one presence query"),
    V("PRESENCE_FAILOVER_MS", CONFIG_INT, "3000", failover_ms, 1000, 600000,
      "a standby replica takes over within this after the active dies; the same on every replica"),
    V("PRESENCE_LIST_IN_REPLY", CONFIG_INT, "0", list_in_reply, 0, 1,
      "0: a session open's reply is an empty list (edges keep their own copy); 1: the online list, for older "
      "edges"),
    V("CHAT_STREAM_REPLICAS", CONFIG_INT, "1", stream_replicas, 1, 5,
      "replicas of the lease's JetStream KV bucket (3 on a 3-node cluster)"),
    V("HEALTH_HOST", CONFIG_STR, "0.0.0.0", health_host, 0, 0, "address of GET /healthz and /metrics"),
    V("HEALTH_PORT", CONFIG_INT, "9102", health_port, 0, 65535, "port of GET /healthz and /metrics; 0: off"),
};

int main(void)
{
    struct presence_config cfg;
    struct bus bus = {0};
    struct presence *p;
    sigset_t stop_signals;
    const struct timespec tick = {0, PRESENCE_TICK_MS * 1000000L};

    log_init("presence", "info");
    config_load(&cfg, vars, CONFIG_COUNT(vars));
    log_init("presence", cfg.log_level);
    config_log(&cfg, vars, CONFIG_COUNT(vars));

    /* Blocked before any thread exists, so that every thread inherits it. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    if (!(p = presence_create(&cfg)))
        return 1;
    /* A replica never needs what it publishes itself, and what it could not
     * publish in time must not arrive late, after another replica took over. */
    bus.no_echo = 1;
    bus.no_reconnect_buffer = 1;
    if (bus_open(&bus, cfg.nats_url, "chat-presence", 1) != 0) {
        presence_destroy(p);
        return 1;
    }
    if (presence_start(p, &bus) != 0) {
        presence_stop(p);
        bus_close(&bus, 0);
        nats_CloseAndWait(1000);
        presence_destroy(p);
        return 1;
    }
    if (admin_start(cfg.health_host, cfg.health_port, presence_healthy, p) != 0) {
        presence_stop(p);
        bus_close(&bus, 0);
        nats_CloseAndWait(1000);
        presence_destroy(p);
        return 1;
    }
    log_info("ready");

    presence_tick(p);
    while (sigtimedwait(&stop_signals, NULL, &tick) < 0)
        presence_tick(p);

    log_info("stopping");
    admin_stop();
    presence_stop(p);
    bus_close(&bus, 1000);
    nats_CloseAndWait(1000);
    presence_destroy(p);
    log_info("stopped");
    return 0;
}
