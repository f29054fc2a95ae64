/* stop: how a service learns that it must stop: SIGTERM and SIGINT set a flag
 * (and wake the caller's loop, when it has one to wake), SIGPIPE is ignored
 * (a peer gone is a write error, not a death). The handler only sets the flag
 * and calls wake, so it may run on any thread, nats.c's included. */
#ifndef STOP_H
#define STOP_H

/* Installs the handlers. wake (may be NULL) must be async-signal-safe. */
void stop_install(void (*wake)(void *ctx), void *ctx);
/* 1 once SIGTERM or SIGINT came. */
int stop_requested(void);

#endif
