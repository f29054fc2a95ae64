/* presence: the service itself: NATS subjects in (chat.presence.session, .set,
 * .query, .snapshot, chat.edge.heartbeat), PresenceChange broadcasts and
 * ResyncRequests out, the roster in memory and the users table behind it.
 * Several replicas run the same way: one is active (it holds a JetStream KV
 * lease), the others are hot standbys that apply the same events to their own
 * roster and take over within PRESENCE_FAILOVER_MS when it dies. nats.c's
 * threads only decode and queue; one worker thread applies, writes and
 * publishes in batches. One lock covers the roster and the database
 * connection: the worker holds it for a batch, main for presence_tick(). */
#ifndef PRESENCE_H
#define PRESENCE_H

#include "bus.h"

/* The environment, read by main through lib/config.h. */
struct presence_config {
    const char *nats_url;
    const char *database_url; /* libpq conninfo or URI; "" = the PG* variables */
    const char *log_level;
    long edge_timeout_ms; /* an edge silent this long loses its sessions */
    long grace_ms;        /* a user whose last session closed goes offline this long after; 0: at once */
    long resync_ms;       /* window after the ResyncRequest for edges to re-announce */
    long max_query;       /* most ids in one PresenceQuery */
    long failover_ms;     /* a standby takes over within this after the active dies */
    long list_in_reply;   /* 1: a session open's reply carries the online list (for older edges) */
    long stream_replicas; /* replicas of the lease bucket */
    const char *health_host;
    long health_port; /* GET /healthz and /metrics; 0: off */
};

/* How often main must call presence_tick(): a quarter of the coarsest timer we
 * serve, so that an edge is dropped at most this late. */
#define PRESENCE_TICK_MS 250

struct presence;

/* cfg is borrowed for the life of the service. Returns NULL after logging on a
 * bad DATABASE_URL. Connects to nothing yet. */
struct presence *presence_create(const struct presence_config *cfg);
/* Starts the worker, then subscribes on bus (borrowed; connected or still
 * retrying). Returns 0, or -1 after logging (then presence_stop). */
int presence_start(struct presence *p, struct bus *bus);
/* Timers: PostgreSQL re-dial, ResyncRequests, the end of a resync window,
 * silent edges, the end of grace periods, a standby's settling of its dirty
 * users. */
void presence_tick(struct presence *p);
/* Unsubscribes, lets the worker answer what is queued and joins it, writes
 * what is dirty (active), hands the lease over. Then close
 * the bus and wait for nats.c's threads
 * (nats_CloseAndWait) before presence_destroy. */
void presence_stop(struct presence *p);
/* For lib/admin.c (closure: the presence): 1 when NATS and PostgreSQL are
 * both reachable, active or standby. Also refreshes the gauges of /metrics. */
int presence_healthy(void *closure);
/* Writes what is still dirty when it can, closes PostgreSQL, frees. Accepts
 * NULL. */
void presence_destroy(struct presence *p);

#endif
