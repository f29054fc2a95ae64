/* chat-messaging: for now it only connects to NATS and waits for SIGTERM; its
 * work comes with its own issue. */
#include <signal.h>
#include <stddef.h>
#include <unistd.h>

#include "bus.h"
#include "config.h"
#include "log.h"

struct messaging_config {
    const char *nats_url;
    const char *log_level;
};

static const struct config_var vars[] = {
    {"LOG_LEVEL", CONFIG_STR, "info", 0, offsetof(struct messaging_config, log_level), 0, 0,
     "debug, info, warn, error"},
    {"NATS_URL", CONFIG_STR, "nats://127.0.0.1:4222", 0, offsetof(struct messaging_config, nats_url), 0, 0,
     "NATS URL"},
};

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

int main(void)
{
    struct messaging_config cfg;
    struct bus bus;
    log_init("messaging", "info");
    config_load(&cfg, vars, sizeof vars / sizeof vars[0]);
    log_init("messaging", cfg.log_level);
    config_log(&cfg, vars, sizeof vars / sizeof vars[0]);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    if (bus_open(&bus, cfg.nats_url, "chat-messaging", 1) != 0)
        return 1;
    log_info("ready");
    while (!stopping)
        pause();
    bus_close(&bus, 1000);
    nats_CloseAndWait(1000);
    log_info("stopped");
    return 0;
}
