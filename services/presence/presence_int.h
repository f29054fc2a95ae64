/* presence_int: the service's state, shared by its two halves and nothing
 * else: presence.c, the data path (NATS callbacks, the queue, the worker's
 * batches, queries, the lifecycle), and replica.c, the replica's role (the
 * lease, becoming active or standby, the state transfer, the timers).
 * Locks: qmu guards the queue and the worker's wake-ups; mu guards the rest
 * (roster, database, role), held by the worker for a batch and by the ticker
 * for a tick. */
#ifndef PRESENCE_INT_H
#define PRESENCE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "chat.pb-c.h"
#include "handoff.h"
#include "ids.h"
#include "lease.h"
#include "mem.h"
#include "presence.h"
#include "roster.h"
#include "userdb.h"

enum item_kind {
    ITEM_OPEN,
    ITEM_CLOSE,
    ITEM_SET,
    ITEM_QUERY,
    ITEM_HEARTBEAT,
    ITEM_SHOWN,    /* a PresenceChange of the active, heard by a standby */
    ITEM_SNAPSHOT, /* an edge asks for the online list */
    ITEM_TRANSFER, /* a replica asks for the whole state */
};

/* One decoded event, from its callback to the end of its batch. */
struct item {
    enum item_kind kind;
    union {
        Chat__V1__SessionEvent *se; /* ITEM_OPEN, ITEM_CLOSE */
        Chat__V1__SetStatus *ss;
        Chat__V1__PresenceQuery *q;
        Chat__V1__EdgeHeartbeat *hb;
        Chat__V1__PresenceChange *pc; /* ITEM_SHOWN */
    } pb;                             /* owned; freed with the item */
    char *reply;                      /* reply subject, owned, or NULL */
    char user_id[IDS_UUID_LEN + 1];   /* normalised (open, set, shown; a close for its log line) */
    long long mono_ms, now_ms;        /* when it was heard */
    size_t changes_end;               /* the worker: roster changes queued up to this event */
    uint8_t *answer;                  /* the worker: a query's packed PresenceList (malloc'd) */
    size_t answer_len;
    struct handoff_chunks chunks; /* the worker: a snapshot's or transfer's reply */
};

enum role { ROLE_STANDBY, ROLE_ACTIVE };

enum { SUB_SESSION, SUB_SET, SUB_HEARTBEAT, SUB_STATUS, SUB_RESYNC, NSUBS };

struct presence {
    const struct presence_config *cfg;
    struct bus *bus;
    natsSubscription *subs[NSUBS];
    natsSubscription *query_sub;    /* once the roster is current (queue group) */
    natsSubscription *snapshot_sub; /* while active */
    natsSubscription *transfer_sub; /* while active */
    natsStatistics *stats;          /* the ticker's, for the reconnection count */
    natsStatistics *role_stats;     /* for the role changes (under mu), likewise */
    char boot_id[23];               /* this process's life: its replica id, in ResyncRequests */
    struct lease *lease;

    pthread_mutex_t qmu; /* the queue, from the callbacks to the worker */
    pthread_cond_t qwork, qroom;
    struct item *queue; /* ring of QUEUE_CAP */
    size_t qhead, qlen;
    int qstop;   /* presence_stop: the worker leaves once the queue is empty */
    int qclosed; /* the worker is gone: late callbacks drop what they get */
    int poke;    /* the role may have to change: the worker looks */
    pthread_t worker;
    int worker_running;

    pthread_mutex_t mu; /* everything below */
    struct roster *roster;
    struct userdb *db;
    enum role role;
    int synced; /* the roster is current: taken over, rebuilt, or kept up while active */
    /* NATS reconnections when the roster last became current: a later one means events were missed */
    uint64_t synced_reconnects;
    uint64_t epoch_reconnects; /* NATS reconnections when this replica became active */
    uint64_t lease_gen;        /* the lease acquisition this activation belongs to */
    /* a standby that holds the lease applies the events queued before it first (what the old active
     * published among them): how many are left; -1: none */
    long drain_left;
    unsigned activations;   /* epochs this process started */
    char epoch[40];         /* while active: "<boot id>.<activation>" */
    uint64_t seq;           /* while active: the last change numbered in the epoch */
    char heard_epoch[40];   /* standby: the latest epoch the roster includes changes of... */
    uint64_t heard_seq;     /* ...up to this seq */
    long long transfer_due; /* standby not synced, or refreshing: monotonic ms of the next attempt */
    int refresh;            /* synced standby: take the active's state again, keeping this one meanwhile */
    /* standby: the active re-learns edges; take its state after this (set by a callback) */
    atomic_llong retransfer_at;
    int ever_up;                   /* NATS was connected once */
    int nats_up;                   /* NATS was connected at the last tick */
    uint64_t reconnects;           /* nats.c's count at the last tick */
    long long resync_due;          /* monotonic ms at which to send the ResyncRequest, 0 = none */
    long long resync_end;          /* monotonic ms at which the window closes */
    int cold_window;               /* the window re-learns every edge (else only those that disagreed) */
    int sweep_pending;             /* a cold window closed, the DB sweep has not run yet */
    int pg_check_pending;          /* after a takeover: rows to compare with memory */
    size_t settle_mark;            /* standby: dirty users at the last settle */
    long long settle_at;           /* standby: monotonic ms of the next settle */
    struct buf online;             /* the packed PresenceList of everyone online... */
    unsigned long long online_gen; /* ...as of this roster_online_gen() */
    int online_valid;
    int list_too_big_logged;
};

/* Queue and batch sizes. */
#define QUEUE_CAP 8192
#define BATCH_MAX 1000
/* Most users in one INSERT (after an outage the dirty set can be large). */
#define FLUSH_MAX 5000

long long presence_clock(clockid_t id);
/* 1 when this replica may publish: active, and the lease still valid. */
int presence_publishing(struct presence *p);
/* Writes the dirty users (active only), then publishes the queued changes
 * (active, lease valid) or drops them. Under mu. */
void presence_commit(struct presence *p);
/* Writes what is dirty as far as it can (active only). Under mu. */
void presence_write_dirty(struct presence *p);
/* Writes every dirty user (whatever the role); returns how many are left
 * (the database is down). Under mu. */
size_t presence_flush(struct presence *p);
/* nats.c's count of reconnections (st: the calling thread's own). nats.c
 * counts one before anything can be sent on the new connection. */
uint64_t presence_reconnects(struct presence *p, natsStatistics *st);
/* Wakes the worker so that it looks at the lease and its role. */
void presence_poke(struct presence *p);
/* Subscribes handler on subject (queue group when queue is set) unless *sub
 * is set; returns 0 or -1 after logging. */
int presence_subscribe(struct presence *p, natsSubscription **sub, const char *subject, const char *queue,
                       natsMsgHandler handler);
void presence_unsubscribe(struct presence *p, natsSubscription **sub);
/* The callbacks replica.c subscribes while active. */
void presence_on_snapshot(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure);
void presence_on_transfer(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure);
void presence_on_query(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure);

/* replica.c. The worker, without mu: act on the lease (become active or
 * standby). */
void replica_roles(struct presence *p);
/* The worker, without mu, while not synced (or refreshing) and standby: ask
 * the active for its state and install it. Returns 1 when the roster is
 * current. */
int replica_sync(struct presence *p);
/* 1 when the worker should call replica_sync before the next batch. Under mu. */
int replica_sync_due(struct presence *p, long long mono);
/* The ticker, under mu: NATS came back after an outage. */
void replica_reconnected(struct presence *p, long long mono, uint64_t reconnects);
/* The ticker, under mu: the windows, the sweeps, the settles, silent edges. */
void replica_timers(struct presence *p, long long mono, int up);
/* A callback: another replica asked the edges to re-announce. */
void replica_heard_resync(struct presence *p);
/* Under mu, at the worker's start and on a change of roster: the lease's
 * eagerness follows whether the roster is current. */
void replica_set_synced(struct presence *p, int synced);

#endif
