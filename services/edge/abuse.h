/* abuse: the per-address limits of the edge: Engine.IO sessions and
 * handshakes per client address (EDGE_MAX_CONN_PER_IP, EDGE_HANDSHAKES_PER_S).
 * main.c makes them the engine's admission hook. Loop thread only. */
#ifndef ABUSE_H
#define ABUSE_H

#include "map.h"

struct abuse {
    long max_conn_per_ip;  /* 0: no limit */
    long handshakes_per_s; /* 0: no limit; burst twice that */
    struct map peers;      /* client address -> its state */
};

void abuse_init(struct abuse *a, long max_conn_per_ip, long handshakes_per_s);
/* The engine's admit/release hooks (ctx: the struct abuse). admit: 0, or -1
 * when ip already holds max_conn_per_ip sessions or opens them too fast. */
int abuse_admit(void *ctx, const char *ip);
void abuse_release(void *ctx, const char *ip);
/* Frees the table (shutdown). */
void abuse_cleanup(struct abuse *a);

#endif
