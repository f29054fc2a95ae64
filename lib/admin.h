/* admin: the health and metrics endpoint of the services that have no HTTP
 * port of their own (messaging, presence): GET /healthz (200 when healthy()
 * says so, else 503) and GET /metrics (Prometheus text), one small request at
 * a time on its own thread. The edge serves the same paths on its own port. */
#ifndef ADMIN_H
#define ADMIN_H

/* Starts listening on host:port (port 0: disabled). Returns 0, or -1 after
 * logging. healthy is called on the admin thread. */
int admin_start(const char *host, long port, int (*healthy)(void *closure), void *closure);
/* Stops the thread and closes the socket. */
void admin_stop(void);

#endif
