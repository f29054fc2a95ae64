/* lease: at most one holder at a time among the presence replicas, without
 * PostgreSQL (presence keeps broadcasting while the database is down). The
 * lease is a key of a JetStream KV bucket whose entries expire ttl after they
 * are written (the stream's MaxAge; one entry per key). The holder rewrites the
 * key every ttl/4 with a compare-and-set on its last revision; the others try
 * to create it, which succeeds only once it has expired or been deleted. A
 * holder counts itself valid only until ttl - ttl/4 after it sent its last
 * successful renewal: the server stamped that entry later than it was sent, so
 * the key outlives the holder's validity by at least ttl/4, and nobody can
 * take over before the old holder has stopped acting. One thread of its own
 * does the (blocking) KV calls; the bucket is created, or updated to the
 * configured ttl and replicas, on first use. */
#ifndef LEASE_H
#define LEASE_H

#include <stdint.h>

#include "bus.h"

struct lease_config {
    const char *bucket; /* KV bucket name */
    const char *key;    /* the one key */
    const char *holder; /* this process's id: the value it writes */
    long ttl_ms;        /* life of the key after the last renewal */
    long poll_ms;       /* how often an eager candidate tries to take it */
    long replicas;      /* of the bucket's stream */
    int file_storage;   /* 1: survives a NATS server restart */
};

struct lease;

/* cfg is copied (its strings are borrowed for the lease's life), bus borrowed.
 * on_change(ctx) runs on the lease thread whenever lease_held() turns true or
 * false (it may also run when nothing changed). */
struct lease *lease_create(const struct lease_config *cfg, struct bus *bus, void (*on_change)(void *ctx),
                           void *ctx);
/* Starts the thread; returns 0 or -1 after logging. */
int lease_start(struct lease *l);
/* 1 while this process holds the lease and may act as its holder. Any thread. */
int lease_held(const struct lease *l);
/* Counts the acquisitions: a holder that lost the lease and took it again has
 * a new number (a new epoch). Any thread. */
uint64_t lease_generation(const struct lease *l);
/* Eager (1): try to take the lease every poll_ms; else every ttl/2, so that
 * an eager candidate (a replica with a current roster) wins the race. */
void lease_set_eager(struct lease *l, int eager);
/* Stops the thread; with release, deletes the key first if held, so that
 * another replica takes over at once instead of after ttl. */
void lease_stop(struct lease *l, int release);
/* Accepts NULL. After lease_stop. */
void lease_destroy(struct lease *l);

#endif
