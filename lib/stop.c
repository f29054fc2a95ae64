/* stop: see stop.h. */
#include "stop.h"

#include <signal.h>
#include <stddef.h>

static volatile sig_atomic_t stopping;
static void (*wake_fn)(void *ctx);
static void *wake_ctx;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
    if (wake_fn)
        wake_fn(wake_ctx);
}

void stop_install(void (*wake)(void *ctx), void *ctx)
{
    wake_fn = wake;
    wake_ctx = ctx;
    struct sigaction sa;
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int stop_requested(void)
{
    return stopping;
}
