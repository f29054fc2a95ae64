/* chat-messaging: stores messages and read receipts (see messaging.h). Reads
 * its configuration, connects NATS, runs the workers until SIGTERM/SIGINT,
 * then stops them and flushes NATS. */
#include <signal.h>
#include <stddef.h>
#include <time.h>

#include "admin.h"
#include "bus.h"
#include "config.h"
#include "log.h"
#include "messaging.h"
#include "streams.h"

#define V(name, kind, def, field, min, max, help)                                                            \
    {                                                                                                        \
        name, kind, def, 0, offsetof(struct messaging_config, field), min, max, help                         \
    }

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
    V("HEALTH_HOST", CONFIG_STR, "0.0.0.0", health_host, 0, 0, "address of GET /healthz and /metrics"),
    V("HEALTH_PORT", CONFIG_INT, "9101", health_port, 0, 65535, "port of GET /healthz and /metrics; 0: off"),
};

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

int main(void)
{
    static struct messaging_config cfg;
    struct bus bus = {0};
    log_init("messaging", "info");
    config_load(&cfg, vars, sizeof vars / sizeof vars[0]);
    if (log_init("messaging", cfg.log_level) != 0)
        log_warn("unknown LOG_LEVEL=%s; using info", cfg.log_level);
    config_log(&cfg, vars, sizeof vars / sizeof vars[0]);
    streams_set_replicas(cfg.stream_replicas);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);

    bus.on_connect = messaging_bus_connected;
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
    while (!stopping) {
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
