/* replica: what this presence replica is, and the moves between standby and
 * active. The lease (lease.c) decides: its holder is active, the others are
 * standbys. A standby applies every event to its own roster like the active
 * (presence.c) and records what the world was shown (the active's
 * PresenceChanges), but writes, publishes and answers session opens not.
 *
 * Becoming active with a current roster (a takeover) asks no edge to
 * re-announce: the roster is right but for the events the old active applied
 * without publishing, or never heard; the difference between what the roster
 * says and what the world was shown is published, and the rows are checked
 * against memory once PostgreSQL can be read. Only an edge whose last
 * heartbeat counted other sessions than the roster is re-learnt, in a window
 * of its own. Becoming active without a current roster (the first replica, or
 * after being cut off) asks every edge, as a single instance always did.
 *
 * A standby gets a current roster by a state transfer from the active: it
 * subscribed its inputs first and buffered them (the worker waits), so after
 * installing the state it applies them; session opens and closes, sets and
 * heartbeats are idempotent enough for the overlap (an open of a known
 * session, a close of an unknown one, a set or a heartbeat applied twice
 * leave the same roster), and changes heard that the state already includes
 * are skipped by their seq. */
#include "presence_int.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "map.h"
#include "metrics.h"
#include "subjects.h"

/* After a NATS reconnection, how long the active waits before asking the
 * edges again: lib/bus.c clients retry every 250 ms. */
#define RECONNECT_SETTLE_MS 1000
/* A transfer gives up when the next chunk does not come within this. */
#define TRANSFER_WAIT_MS 2000
/* How long to wait before asking again after a failed transfer. */
#define TRANSFER_RETRY_MS 250
/* A standby takes its dirty users as written by the active after one to two
 * of these: long enough for the active's write, short enough to stay small. */
#define SETTLE_MS 5000

void replica_set_synced(struct presence *p, int synced)
{
    p->synced = synced;
    if (synced)
        p->synced_reconnects = presence_reconnects(p, p->role_stats);
    lease_set_eager(p->lease, synced);
    if (synced)
        presence_subscribe(p, &p->query_sub, SUBJ_PRESENCE_QUERY, QUEUE_PRESENCE, presence_on_query);
}

static void send_resync_request(struct presence *p, const char *edge_id)
{
    Chat__V1__ResyncRequest rr = CHAT__V1__RESYNC_REQUEST__INIT;
    rr.presence_boot_id = p->boot_id;
    rr.edge_id = (char *)(edge_id ? edge_id : "");
    if (bus_publish(p->bus, SUBJ_PRESENCE_RESYNC, &rr.base) == 0)
        log_info("resync requested boot_id=%s%s%s", p->boot_id, edge_id ? " edge=" : "",
                 edge_id ? edge_id : "");
}

/* ---- becoming active ---- */

/* No current roster: every edge re-announces its sessions; a window decides
 * who went away meanwhile (the single instance's restart). */
static void start_cold(struct presence *p, long long mono)
{
    roster_edge_touch_all(p->roster, mono); /* this replica was deaf, not the edges */
    roster_resync_begin(p->roster);
    p->cold_window = 1;
    p->resync_due = mono; /* sent by the next tick; the window counts from it */
    p->resync_end = 0;
    log_info("active epoch=%s: no current state to take over; the edges are asked for their sessions",
             p->epoch);
}

/* A current roster: tell the world what it was not shown, re-learn only the
 * edges that disagree. */
static void take_over(struct presence *p, long long mono)
{
    const char **ids;
    size_t n = roster_mismatched_edges(p->roster, &ids), changes = 0;
    metrics_add("chat_presence_takeovers_total", NULL, 1);
    /* What the standby kept dirty was written by the old active, but for its
     * last moments: the rows are checked (pg_check) rather than rewritten, so
     * that a takeover after a burst of connects publishes at once. Kept until
     * then. */
    roster_settle(p->roster, roster_ndirty(p->roster), 0);
    if (n) {
        roster_resync_begin_edges(p->roster, ids, n);
        for (size_t i = 0; i < n; i++)
            send_resync_request(p, ids[i]);
        p->cold_window = 0;
        p->resync_due = 0;
        p->resync_end = mono + p->cfg->resync_ms;
    } else {
        changes = roster_reconcile(p->roster);
        presence_commit(p);
    }
    free(ids);
    p->pg_check_pending = 1;
    log_info("active epoch=%s: took over users=%zu sessions=%zu edges=%zu edges_asked=%zu changes=%zu",
             p->epoch, roster_nusers(p->roster), roster_nsessions(p->roster), roster_nedges(p->roster), n,
             changes);
}

static void activate(struct presence *p, uint64_t gen)
{
    long long mono = presence_clock(CLOCK_MONOTONIC);
    /* The lease can be taken the moment NATS is back, before the ticker has
     * seen the reconnection: a roster that was current before it is not. */
    p->epoch_reconnects = presence_reconnects(p, p->role_stats);
    if (p->synced && p->epoch_reconnects != p->synced_reconnects)
        replica_set_synced(p, 0);
    p->role = ROLE_ACTIVE;
    p->lease_gen = gen;
    p->activations++;
    snprintf(p->epoch, sizeof p->epoch, "%s.%u", p->boot_id, p->activations);
    p->seq = 0;
    p->online_valid = 0;
    metrics_set("chat_presence_active", NULL, 1);
    metrics_add("chat_presence_epoch_changes_total", NULL, 1);
    presence_subscribe(p, &p->snapshot_sub, SUBJ_PRESENCE_SNAPSHOT, NULL, presence_on_snapshot);
    presence_subscribe(p, &p->transfer_sub, SUBJ_PRESENCE_TRANSFER, NULL, presence_on_transfer);
    presence_subscribe(p, &p->query_sub, SUBJ_PRESENCE_QUERY, QUEUE_PRESENCE, presence_on_query);
    if (p->synced)
        take_over(p, mono);
    else
        start_cold(p, mono);
}

static void deactivate(struct presence *p, const char *why)
{
    p->role = ROLE_STANDBY;
    metrics_set("chat_presence_active", NULL, 0);
    presence_unsubscribe(p, &p->snapshot_sub);
    presence_unsubscribe(p, &p->transfer_sub);
    /* A roster in the middle of re-learning the edges is not current. */
    if (roster_resyncing(p->roster) || p->sweep_pending)
        replica_set_synced(p, 0);
    else
        lease_set_eager(p->lease, p->synced);
    p->transfer_due = 0;
    p->refresh = 0;
    p->resync_due = p->resync_end = 0;
    p->cold_window = p->sweep_pending = p->pg_check_pending = 0;
    p->settle_mark = 0;
    p->settle_at = presence_clock(CLOCK_MONOTONIC) + SETTLE_MS;
    roster_changes_clear(p->roster);
    /* What it published is in its roster: hearing it again changes nothing. */
    snprintf(p->heard_epoch, sizeof p->heard_epoch, "%s", p->epoch);
    p->heard_seq = p->seq;
    log_warn("standby now (epoch %s ended at seq %llu): %s", p->epoch, (unsigned long long)p->seq, why);
}

void replica_roles(struct presence *p)
{
    int held = lease_held(p->lease);
    uint64_t gen = lease_generation(p->lease);
    pthread_mutex_lock(&p->mu);
    if (p->role == ROLE_ACTIVE && !held)
        deactivate(p, "the lease was not renewed in time");
    else if (p->role == ROLE_ACTIVE && gen != p->lease_gen)
        deactivate(p, "the lease was lost and taken again");
    if (p->role == ROLE_STANDBY && held && p->synced && p->drain_left < 0) {
        pthread_mutex_lock(&p->qmu);
        p->drain_left = (long)p->qlen;
        pthread_mutex_unlock(&p->qmu);
    }
    if (p->role == ROLE_STANDBY && held && (!p->synced || p->drain_left <= 0)) {
        p->drain_left = -1;
        activate(p, gen);
    }
    if (!held)
        p->drain_left = -1;
    pthread_mutex_unlock(&p->mu);
}

/* ---- a standby takes the active's state ---- */

static int stopping(struct presence *p)
{
    pthread_mutex_lock(&p->qmu);
    int stop = p->qstop;
    pthread_mutex_unlock(&p->qmu);
    return stop;
}

/* Asks for the state and feeds the chunks to im. Returns 1 when complete, -1
 * when there is no active (no responders), -2 when it is not ready, 0 when
 * it failed otherwise (timeout, NATS, a bad chunk, or this replica took the
 * lease or is stopping meanwhile). */
static int fetch_state(struct presence *p, struct handoff_import *im, size_t *chunks)
{
    natsInbox *inbox = NULL;
    natsSubscription *sub = NULL;
    natsStatus s = natsInbox_Create(&inbox);
    if (s == NATS_OK)
        s = natsConnection_SubscribeSync(&sub, p->bus->nc, inbox);
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(sub, -1, -1);
    Chat__V1__PresenceStateRequest rq = CHAT__V1__PRESENCE_STATE_REQUEST__INIT;
    rq.replica_id = p->boot_id;
    uint8_t buf[64];
    size_t len = chat__v1__presence_state_request__pack(&rq, buf);
    if (s == NATS_OK)
        s = natsConnection_PublishRequest(p->bus->nc, SUBJ_PRESENCE_TRANSFER, inbox, buf, (int)len);
    int rc = s == NATS_OK ? 0 : -3;
    long long deadline = presence_clock(CLOCK_MONOTONIC) + TRANSFER_WAIT_MS;
    while (rc == 0 && !stopping(p) && !lease_held(p->lease)) {
        natsMsg *m = NULL;
        s = natsSubscription_NextMsg(&m, sub, 100);
        if (s == NATS_TIMEOUT && presence_clock(CLOCK_MONOTONIC) < deadline)
            continue;
        if (s != NATS_OK)
            break;
        int not_ready = 0;
        if (natsMsg_IsNoResponders(m))
            rc = -1;
        else if ((rc = handoff_import_add(im, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m),
                                          &not_ready)) < 0)
            rc = not_ready ? -2 : -3;
        (*chunks)++;
        deadline = presence_clock(CLOCK_MONOTONIC) + TRANSFER_WAIT_MS;
        natsMsg_Destroy(m);
    }
    bus_sub_retire(p->bus, &sub, 1);
    natsInbox_Destroy(inbox);
    return rc == -3 ? 0 : rc;
}

int replica_sync_due(struct presence *p, long long mono)
{
    return p->role == ROLE_STANDBY && (!p->synced || p->refresh) && mono >= p->transfer_due;
}

int replica_sync(struct presence *p)
{
    long long t0 = presence_clock(CLOCK_MONOTONIC);
    pthread_mutex_lock(&p->mu);
    int due = replica_sync_due(p, t0), synced = p->synced;
    pthread_mutex_unlock(&p->mu);
    if (!due)
        return synced;
    int rc = 0;
    size_t chunks = 0;
    struct handoff_import *im = NULL;
    if (bus_connected(p->bus)) {
        im = handoff_import_create(t0);
        rc = fetch_state(p, im, &chunks);
    }
    pthread_mutex_lock(&p->mu);
    if (rc == 1 && p->role == ROLE_STANDBY && (!p->synced || p->refresh)) {
        struct roster *old = p->roster;
        p->roster = handoff_import_take(im, p->heard_epoch, sizeof p->heard_epoch, &p->heard_seq);
        roster_set_grace(p->roster, p->cfg->grace_ms);
        roster_destroy(old);
        p->online_valid = 0;
        p->settle_mark = 0;
        p->settle_at = t0 + SETTLE_MS;
        atomic_store(&p->retransfer_at, 0);
        p->refresh = 0;
        replica_set_synced(p, 1);
        metrics_add("chat_presence_transfers_received_total", NULL, 1);
        log_info(
            "standby synced from epoch=%s seq=%llu users=%zu sessions=%zu edges=%zu chunks=%zu in %lld ms",
            p->heard_epoch, (unsigned long long)p->heard_seq, roster_nusers(p->roster),
            roster_nsessions(p->roster), roster_nedges(p->roster), chunks,
            presence_clock(CLOCK_MONOTONIC) - t0);
    } else if (p->synced && p->refresh && rc != -2) {
        p->refresh = 0; /* nobody to refresh from (now): the roster it has stays */
        log_info("state not taken again (%s); keeping this one",
                 rc == -1 ? "no active replica" : "no answer");
    } else if (rc != 1) {
        p->transfer_due = presence_clock(CLOCK_MONOTONIC) + TRANSFER_RETRY_MS;
        log_debug("no state taken (%s); again in %d ms",
                  rc == -1   ? "no active replica"
                  : rc == -2 ? "the active is re-learning the edges"
                             : "no answer",
                  TRANSFER_RETRY_MS);
    }
    synced = p->synced;
    pthread_mutex_unlock(&p->mu);
    handoff_import_destroy(im);
    return synced;
}

/* ---- timers ---- */

void replica_reconnected(struct presence *p, long long mono, uint64_t reconnects)
{
    roster_edge_touch_all(p->roster, mono); /* this replica was deaf, not the edges */
    if (p->role == ROLE_ACTIVE && reconnects == p->epoch_reconnects)
        return; /* it became active after this reconnection, knowing of it */
    if (p->role == ROLE_ACTIVE) {
        /* Closes heard meanwhile may be missing: a new window settles who is
         * still there. The NATS server may have restarted: let the edges
         * reconnect too before asking, or they would miss the request. */
        p->resync_due = mono + RECONNECT_SETTLE_MS;
        p->resync_end = 0;
        p->cold_window = 1;
        roster_resync_begin(p->roster);
    } else {
        /* Events were missed: the active's state again, not the edges'. */
        replica_set_synced(p, 0);
        p->transfer_due = mono;
        presence_poke(p);
        log_info("standby reconnected to NATS: taking the active's state again");
    }
}

void replica_heard_resync(struct presence *p)
{
    /* The active re-learns edges: this roster may keep sessions it drops at
     * the end of its window. Its state is taken again after. */
    atomic_store(&p->retransfer_at,
                 presence_clock(CLOCK_MONOTONIC) + p->cfg->resync_ms + RECONNECT_SETTLE_MS);
}

static void sweep_row(void *ctx, const struct roster_row *row)
{
    struct presence *p = ctx;
    if (roster_sweep_user(p->roster, row, presence_clock(CLOCK_REALTIME), 0))
        log_info("user offline after resync user=%s", row->id);
}

/* End of a cold window: who the database still thinks is online but no edge
 * re-announced went away while nobody was active. Needs the database; until
 * it is back, it waits. */
static void resync_sweep(struct presence *p)
{
    if (!userdb_up(p->db) || presence_flush(p) != 0)
        return; /* the rows must reflect memory first */
    if (userdb_online(p->db, sweep_row, p) != 0)
        return;
    p->sweep_pending = 0;
    log_info("resync done users=%zu sessions=%zu edges=%zu", roster_nusers(p->roster),
             roster_nsessions(p->roster), roster_nedges(p->roster));
}

struct pg_check {
    struct presence *p;
    struct map online; /* ids the database has online */
    size_t fixed;
    long long now_ms;
};

/* A row the database has online, against memory. */
static void check_row(void *ctx, const struct roster_row *row)
{
    struct pg_check *c = ctx;
    map_put(&c->online, row->id, c);
    const struct roster_user *u = roster_user_get(c->p->roster, row->id);
    if (!u) {
        if (roster_sweep_user(c->p->roster, row, c->now_ms, 1))
            c->fixed++; /* online in the database only: written offline, nobody told */
    } else if ((u->nsessions == 0 && !u->in_grace) || u->status != row->status ||
               strcmp(u->username, row->username) != 0 || u->last_seen_ms != row->last_seen_ms) {
        roster_mark_dirty(c->p->roster, u->id); /* the old active's last write did not happen */
        c->fixed++;
    }
}

static void check_user(void *ctx, const struct roster_user *u)
{
    struct pg_check *c = ctx;
    if ((u->nsessions > 0 || u->in_grace) && !u->dirty && !map_get(&c->online, u->id)) {
        roster_mark_dirty(c->p->roster, u->id);
        c->fixed++;
    }
}

/* After a takeover: the old active may have died before writing. Every row
 * the database has online is compared with memory, and so is every connected
 * user; what differs is written as memory says. The users with no session the
 * standby kept until now are forgotten after. */
static void pg_check(struct presence *p)
{
    if (!userdb_up(p->db) || presence_flush(p) != 0)
        return;
    struct pg_check c = {p, {0}, 0, presence_clock(CLOCK_REALTIME)};
    map_init(&c.online);
    if (userdb_online(p->db, check_row, &c) == 0) {
        roster_each_user(p->roster, check_user, &c);
        presence_flush(p);
        roster_forget_idle(p->roster);
        p->pg_check_pending = 0;
        log_info("takeover: users rows checked against memory fixed=%zu", c.fixed);
    }
    map_cleanup(&c.online);
}

static void window_end(struct presence *p)
{
    long long now = presence_clock(CLOCK_REALTIME);
    size_t changes = 0;
    if (p->cold_window) {
        roster_resync_end(p->roster, now, 0);
        presence_commit(p);
        roster_shown_all(p->roster); /* the world sees what the edges re-announced */
        p->sweep_pending = 1;
        replica_set_synced(p, 1);
    } else {
        roster_resync_end(p->roster, now, 1);
        changes = roster_reconcile(p->roster);
        presence_commit(p);
    }
    log_info("resync window closed (%s) changes=%zu", p->cold_window ? "every edge" : "some edges", changes);
    p->cold_window = 0;
    p->resync_end = 0;
}

static void active_timers(struct presence *p, long long mono, int up)
{
    if (up && p->resync_due && mono >= p->resync_due) {
        send_resync_request(p, NULL);
        p->resync_due = 0;
        p->resync_end = mono + p->cfg->resync_ms; /* the edges cannot answer before */
    }
    if (roster_resyncing(p->roster) && !p->resync_due && p->resync_end && mono >= p->resync_end)
        window_end(p);
    if (p->sweep_pending)
        resync_sweep(p);
    if (p->pg_check_pending && !roster_resyncing(p->roster))
        pg_check(p);
}

static void standby_timers(struct presence *p, long long mono)
{
    if (!p->synced)
        return;
    if (mono >= p->settle_at) {
        roster_settle(p->roster, p->settle_mark, 1);
        p->settle_mark = roster_ndirty(p->roster);
        p->settle_at = mono + SETTLE_MS;
    }
    long long at = atomic_load(&p->retransfer_at);
    if (at && mono >= at) {
        /* The roster stays current meanwhile: should the active be gone by
         * now, this standby can still take over without asking the edges. */
        atomic_store(&p->retransfer_at, 0);
        p->refresh = 1;
        p->transfer_due = mono;
        presence_poke(p);
        log_info("the active re-learnt edges: taking its state again");
    }
}

void replica_timers(struct presence *p, long long mono, int up)
{
    if (p->role == ROLE_ACTIVE)
        active_timers(p, mono, up);
    else
        standby_timers(p, mono);
}
