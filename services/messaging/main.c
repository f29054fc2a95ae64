/* chat-messaging: stores messages and read receipts (see messaging.h). Reads
 * its configuration, connects NATS, runs the workers until SIGTERM/SIGINT,
 * then stops them and flushes NATS. */
#include <stddef.h>
#include <time.h>

#include "admin.h"
#include "bus.h"
#include "config.h"
#include "log.h"
#include "messaging.h"
#include "stop.h"
#include "streams.h"

#define V(...) CONFIG_VAR(struct messaging_config, __VA_ARGS__)

#define STR_(x) #x
#define STR(x) STR_(x)

static const struct config_var vars[] = {
    V("LOG_LEVEL", CONFIG_STR, "info", log_level, 0, 0, "debug, info, warn or error"),
    V("NATS_URL", CONFIG_STR, "nats://127.0.0.1:4222", nats_url, 0, 0,
      "NATS server URL, or a cluster's URLs comma-separated (tried in that order)"),
    V("DATABASE_URL", CONFIG_SECRET, "", database_url, 0, 0, "libpq conninfo or URI (empty: PG* variables)"),
    V("CHAT_PARTITIONS", CONFIG_INT, "8", partitions, 1, 1024, "sender partitions; the same on every edge"),
    V("CHAT_STREAM_REPLICAS", CONFIG_INT, "1", stream_replicas, 1, 5,
      "replicas of the JetStream streams and consumers (3 on a 3-node cluster)"),
    V("MESSAGING_BATCH", CONFIG_INT, "256", batch, 1, 10000, "largest batch per transaction"),
    V("MESSAGING_ACK_WAIT_MS", CONFIG_INT, "5000", ack_wait_ms, 500, 3600000,
      "redelivery delay of a command left unacked by a crashed replica"),
    V("MESSAGING_HISTORY_CONNS", CONFIG_INT, "4", history_conns, 1, 64,
      "history workers, each with its own PostgreSQL connection"),
    V("MESSAGING_HISTORY_QUEUE", CONFIG_INT, "1000", history_queue, 1, 1000000,
      "history queries waiting for a worker, all users; over it: unavailable"),
    V("MESSAGING_HISTORY_PER_USER", CONFIG_INT, "16", history_per_user, 0, 1000000,
      "history queries of one user queued or running; over it: rate_limited (0: no limit)"),
    V("MESSAGING_HISTORY_PER_S", CONFIG_INT, "20", history_per_s, 0, 1000000,
      "history queries per user per second, burst twice that; over it: rate_limited (0: no limit)"),
    V("MESSAGING_SENDS_PER_MIN", CONFIG_INT, "120", sends_per_min, 0, 1000000000,
      "sends per sender per minute (a bucket refilled continuously); over it: rate_limited (0: no limit)"),
    V("MESSAGING_SENDS_PER_DAY", CONFIG_INT, "10000", sends_per_day, 0, 1000000000,
      "sends per sender per UTC day; over it: rate_limited until midnight UTC (0: no limit)"),
    V("MESSAGING_REQUIRE_KNOWN_RECIPIENT", CONFIG_INT, "1", require_known_recipient, 0, 1,
      "1: a message to a user never seen (no row in users) gets not_found; 0: off"),
    V("CHAT_EVENTS_MAX_AGE_S", CONFIG_INT, STR(STREAMS_EVENTS_MAX_AGE_S), streams.events_max_age_s, 0,
      3650L * 86400, "CHAT_EVENTS keeps taps this long (s; 0: no limit)"),
    V("CHAT_EVENTS_MAX_BYTES", CONFIG_INT, STR(STREAMS_EVENTS_MAX_BYTES), streams.events_max_bytes, 0,
      1L << 44, "CHAT_EVENTS size; past it the oldest taps go (0: no limit)"),
    V("CHAT_CMD_MAX_BYTES", CONFIG_INT, STR(STREAMS_CMD_MAX_BYTES), streams.cmd_max_bytes, 0, 1L << 44,
      "CHAT_CMD size; past it new commands are refused (0: no limit)"),
    V("HEALTH_HOST", CONFIG_STR, "0.0.0.0", health_host, 0, 0, "address of GET /healthz and /metrics"),
    V("HEALTH_PORT", CONFIG_INT, "9101", health_port, 0, 65535, "port of GET /healthz and /metrics; 0: off"),
};

int main(void)
{
    static struct messaging_config cfg;
    struct bus bus = {0};
    log_init("messaging", "info");
    config_load(&cfg, vars, CONFIG_COUNT(vars));
    if (log_init("messaging", cfg.log_level) != 0)
        log_warn("unknown LOG_LEVEL=%s; using info", cfg.log_level);
    config_log(&cfg, vars, CONFIG_COUNT(vars));
    streams_set_replicas(cfg.stream_replicas);
    stop_install(NULL, NULL);

    if (bus_open(&bus, cfg.nats_url, "chat-messaging", 1) != 0)
        return 1;
    struct messaging *m = messaging_start(&cfg, &bus);
    if (!m || admin_start(cfg.health_host, cfg.health_port, messaging_healthy, m) != 0) {
        messaging_stop(m);
        bus_close(&bus, 0);
        return 1;
    }
    /* Polled: a signal may land on a nats.c thread, which would not wake
     * pause() here. */
    while (!stop_requested()) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    log_info("shutting down");
    admin_stop();
    messaging_stop(m);
    bus_close(&bus, 1000);
    nats_CloseAndWait(1000);
    log_info("stopped");
    return 0;
}
