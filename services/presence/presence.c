/* presence: decodes the presence subjects, applies them to the roster under one
 * lock, writes dirty users, then broadcasts. Bad payloads (garbage protobuf, a
 * user id that is not a uuid, a missing edge id, an unknown enum) are dropped
 * with a debug line: they never reach the roster and are never answered.
 * Order on every event: roster, then PostgreSQL, then NATS, so that whoever
 * sees a PresenceChange can already read the row it describes. */
#include "presence.h"

#include "metrics.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat.pb-c.h"
#include "ids.h"
#include "log.h"
#include "mem.h"
#include "roster.h"
#include "subjects.h"
#include "userdb.h"

enum { SUB_SESSION, SUB_SET, SUB_QUERY, SUB_HEARTBEAT, NSUBS };

/* After a NATS reconnection, how long to wait before re-sending the
 * ResyncRequest: lib/bus.c clients retry every 250 ms. */
#define RECONNECT_SETTLE_MS 1000
/* Most users in one INSERT (after an outage the dirty set can be large). */
#define FLUSH_MAX 5000

struct presence {
    const struct presence_config *cfg;
    struct bus *bus;
    natsSubscription *subs[NSUBS];
    natsStatistics *stats; /* the ticker's, for the reconnection count */
    char boot_id[23];      /* this process's life, in every ResyncRequest */

    pthread_mutex_t mu; /* everything below */
    struct roster *roster;
    struct userdb *db;
    int nats_up;          /* NATS was connected at the last tick */
    int resync_started;   /* the first ResyncRequest went out */
    long long resync_due; /* monotonic ms of the next ResyncRequest after a reconnection, 0 = none */
    uint64_t reconnects;  /* nats.c's count at the last tick */
    long long resync_end; /* monotonic ms at which the window closes */
    int sweep_pending;    /* the window closed, the DB sweep has not run yet */
};

static long long clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- output ---- */

static void info_to_pb(Chat__V1__PresenceInfo *pb, const char *user_id, const char *username,
                       enum roster_status status, long long last_seen_ms)
{
    chat__v1__presence_info__init(pb);
    pb->user_id = (char *)user_id;
    pb->username = (char *)username;
    pb->status = (Chat__V1__Status)status;
    pb->last_seen_ms = last_seen_ms;
}

/* Sends a PresenceList of n infos to the reply subject. */
static void reply_list(struct presence *p, const char *reply, const struct roster_info *infos, size_t n)
{
    Chat__V1__PresenceInfo *pbs = xmalloc((n ? n : 1) * sizeof *pbs);
    Chat__V1__PresenceInfo **ptrs = xmalloc((n ? n : 1) * sizeof *ptrs);
    for (size_t i = 0; i < n; i++) {
        info_to_pb(&pbs[i], infos[i].user_id, infos[i].username, infos[i].status, infos[i].last_seen_ms);
        ptrs[i] = &pbs[i];
    }
    Chat__V1__PresenceList list = CHAT__V1__PRESENCE_LIST__INIT;
    list.n_users = n;
    list.users = ptrs;
    if (bus_publish(p->bus, reply, &list.base) != 0)
        log_debug("presence reply not sent subject=%s", reply);
    free(ptrs);
    free(pbs);
}

static const char *status_name(enum roster_status s)
{
    return s == ROSTER_ONLINE ? "online" : s == ROSTER_AWAY ? "away" : "offline";
}

/* Writes the dirty users, then broadcasts the queued changes (see the file
 * comment for why in this order). A database that is down delays the writes,
 * never the broadcasts: memory is the truth. Called with the lock held. */
static void commit(struct presence *p)
{
    roster_flush(p->roster, FLUSH_MAX, userdb_save, p->db);
    const struct roster_change *c;
    size_t n = roster_changes(p->roster, &c);
    for (size_t i = 0; i < n; i++) {
        Chat__V1__PresenceInfo info;
        info_to_pb(&info, c[i].user_id, c[i].username, c[i].status, c[i].last_seen_ms);
        Chat__V1__PresenceChange pc = CHAT__V1__PRESENCE_CHANGE__INIT;
        pc.info = &info;
        log_debug("status user=%s status=%s", c[i].user_id, status_name(c[i].status));
        if (bus_publish(p->bus, SUBJ_PRESENCE_STATUS, &pc.base) != 0)
            log_warn("presence change not published user=%s", c[i].user_id);
    }
    roster_changes_clear(p->roster);
}

static const char *reply_of(natsMsg *msg)
{
    const char *r = natsMsg_GetReply(msg);
    return r && *r ? r : NULL;
}

/* ---- chat.presence.session ---- */

/* A copy of the one row userdb_load found. */
struct row_copy {
    int found;
    struct roster_row row;
};

static void copy_row(void *ctx, const struct roster_row *row)
{
    struct row_copy *rc = ctx;
    if (rc->found)
        return;
    rc->found = 1;
    rc->row = *row;
    rc->row.id = xstrdup(row->id);
    rc->row.username = xstrdup(row->username);
}

static void session_open(struct presence *p, const struct roster_event *ev, const char *reply)
{
    struct row_copy rc = {0};
    if (!roster_user_get(p->roster, ev->user_id)) {
        const char *ids[] = {ev->user_id};
        /* The database down: carry on as with a new user (its row is written
         * when the store is back; an empty username or last_seen keeps the
         * stored ones). */
        if (userdb_load(p->db, ids, 1, copy_row, &rc) != 0)
            log_debug("user not read user=%s: database unavailable", ev->user_id);
    }
    int first = roster_open(p->roster, ev, rc.found ? &rc.row : NULL);
    log_debug("session open user=%s edge=%s conn=%llu first=%d resync=%d", ev->user_id, ev->edge_id,
              ev->conn_id, first, ev->resync);
    if (rc.found) {
        free((char *)rc.row.id);
        free((char *)rc.row.username);
    }
    commit(p);
    if (reply) {
        struct roster_info *infos;
        size_t n = roster_online(p->roster, &infos);
        reply_list(p, reply, infos, n);
        free(infos);
    }
}

static void on_session(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct presence *p = closure;
    Chat__V1__SessionEvent *se = chat__v1__session_event__unpack(NULL, (size_t)natsMsg_GetDataLength(msg),
                                                                 (const uint8_t *)natsMsg_GetData(msg));
    char user_id[IDS_UUID_LEN + 1] = "";
    if (!se || !*se->edge_id ||
        (se->kind != CHAT__V1__SESSION_EVENT__KIND__KIND_OPEN &&
         se->kind != CHAT__V1__SESSION_EVENT__KIND__KIND_CLOSE) ||
        (se->kind == CHAT__V1__SESSION_EVENT__KIND__KIND_OPEN &&
         ids_uuid_norm(user_id, se->user_id, strlen(se->user_id)) != 0)) {
        log_debug("session event dropped: %s", se ? "invalid fields" : "not a SessionEvent");
        goto out;
    }
    pthread_mutex_lock(&p->mu);
    struct roster_event ev = {se->edge_id,
                              se->boot_id,
                              se->conn_id,
                              user_id,
                              se->username,
                              se->resync,
                              clock_ms(CLOCK_MONOTONIC),
                              clock_ms(CLOCK_REALTIME)};
    if (se->kind == CHAT__V1__SESSION_EVENT__KIND__KIND_OPEN) {
        session_open(p, &ev, reply_of(msg));
    } else {
        int r = roster_close(p->roster, &ev);
        log_debug("session close edge=%s conn=%llu result=%d", ev.edge_id, ev.conn_id, r);
        commit(p);
        if (reply_of(msg))
            reply_list(p, reply_of(msg), NULL, 0);
    }
    pthread_mutex_unlock(&p->mu);
out:
    chat__v1__session_event__free_unpacked(se, NULL);
    natsMsg_Destroy(msg);
}

/* ---- chat.presence.set ---- */

static void on_set(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct presence *p = closure;
    Chat__V1__SetStatus *ss = chat__v1__set_status__unpack(NULL, (size_t)natsMsg_GetDataLength(msg),
                                                           (const uint8_t *)natsMsg_GetData(msg));
    char user_id[IDS_UUID_LEN + 1];
    if (!ss || ids_uuid_norm(user_id, ss->user_id, strlen(ss->user_id)) != 0 ||
        (ss->status != CHAT__V1__STATUS__STATUS_ONLINE && ss->status != CHAT__V1__STATUS__STATUS_AWAY &&
         ss->status != CHAT__V1__STATUS__STATUS_OFFLINE)) {
        log_debug("set status dropped: %s", ss ? "invalid fields" : "not a SetStatus");
        goto out;
    }
    pthread_mutex_lock(&p->mu);
    if (roster_set_status(p->roster, user_id, (enum roster_status)ss->status) != 0)
        log_debug("set status ignored user=%s: no session", user_id);
    commit(p);
    pthread_mutex_unlock(&p->mu);
out:
    chat__v1__set_status__free_unpacked(ss, NULL);
    natsMsg_Destroy(msg);
}

/* ---- chat.presence.query ---- */

struct query_fill {
    char (*norm)[IDS_UUID_LEN + 1]; /* normalised ids, "" when not a uuid */
    struct roster_info *infos;
    size_t n;
};

/* One database row: fills every position that asked for it (duplicates kept). */
static void fill_row(void *ctx, const struct roster_row *row)
{
    struct query_fill *f = ctx;
    for (size_t i = 0; i < f->n; i++) {
        if (f->infos[i].known || strcmp(f->norm[i], row->id) != 0)
            continue;
        f->infos[i].username = xstrdup(row->username); /* known = 2 marks it ours to free */
        f->infos[i].status = ROSTER_OFFLINE;           /* no session here: offline whatever it chose */
        f->infos[i].last_seen_ms = row->last_seen_ms;
        f->infos[i].known = 2;
    }
}

static void on_query(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct presence *p = closure;
    const char *reply = reply_of(msg);
    Chat__V1__PresenceQuery *q = chat__v1__presence_query__unpack(NULL, (size_t)natsMsg_GetDataLength(msg),
                                                                  (const uint8_t *)natsMsg_GetData(msg));
    if (!q || !reply) {
        log_debug("query dropped: %s", q ? "no reply subject" : "not a PresenceQuery");
        goto out;
    }
    if (q->n_user_ids > (size_t)p->cfg->max_query) {
        log_debug("query refused: %zu ids > PRESENCE_MAX_QUERY", q->n_user_ids);
        reply_list(p, reply, NULL, 0);
        goto out;
    }
    size_t n = q->n_user_ids;
    struct query_fill f = {xcalloc(n ? n : 1, sizeof *f.norm), xcalloc(n ? n : 1, sizeof *f.infos), n};
    const char **ids = xcalloc(n ? n : 1, sizeof *ids);
    size_t nunknown = 0;
    for (size_t i = 0; i < n; i++)
        if (ids_uuid_norm(f.norm[i], q->user_ids[i], strlen(q->user_ids[i])) != 0)
            f.norm[i][0] = '\0';
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < n; i++)
        ids[i] = f.norm[i];
    roster_query(p->roster, ids, n, f.infos);
    for (size_t i = 0; i < n; i++) {
        f.infos[i].user_id = q->user_ids[i]; /* answer with the id as asked */
        if (!f.infos[i].known && f.norm[i][0])
            ids[nunknown++] = f.norm[i];
    }
    if (nunknown && userdb_load(p->db, ids, nunknown, fill_row, &f) != 0)
        log_debug("query: %zu ids not read: database unavailable", nunknown);
    reply_list(p, reply, f.infos, n);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < n; i++)
        if (f.infos[i].known == 2)
            free((char *)f.infos[i].username);
    free(ids);
    free(f.infos);
    free(f.norm);
out:
    chat__v1__presence_query__free_unpacked(q, NULL);
    natsMsg_Destroy(msg);
}

/* ---- chat.edge.heartbeat ---- */

static void on_heartbeat(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct presence *p = closure;
    Chat__V1__EdgeHeartbeat *hb = chat__v1__edge_heartbeat__unpack(NULL, (size_t)natsMsg_GetDataLength(msg),
                                                                   (const uint8_t *)natsMsg_GetData(msg));
    if (!hb || !*hb->edge_id) {
        log_debug("heartbeat dropped: %s", hb ? "no edge id" : "not an EdgeHeartbeat");
        goto out;
    }
    pthread_mutex_lock(&p->mu);
    roster_edge_seen(p->roster, hb->edge_id, hb->boot_id, clock_ms(CLOCK_MONOTONIC),
                     clock_ms(CLOCK_REALTIME));
    commit(p);
    pthread_mutex_unlock(&p->mu);
out:
    chat__v1__edge_heartbeat__free_unpacked(hb, NULL);
    natsMsg_Destroy(msg);
}

/* ---- timers ---- */

static void sweep_row(void *ctx, const struct roster_row *row)
{
    struct presence *p = ctx;
    if (roster_sweep_user(p->roster, row, clock_ms(CLOCK_REALTIME)))
        log_info("user offline after resync user=%s", row->id);
}

/* End of the resync window: who the database still thinks is online but no
 * edge re-announced went away while presence was down. Needs the database;
 * until it is back, it waits. */
static void resync_sweep(struct presence *p)
{
    if (!userdb_up(p->db) || roster_flush(p->roster, FLUSH_MAX, userdb_save, p->db) != 0)
        return; /* the rows must reflect memory first */
    if (userdb_online(p->db, sweep_row, p) != 0)
        return;
    p->sweep_pending = 0;
    log_info("resync done users=%zu sessions=%zu edges=%zu", roster_nusers(p->roster),
             roster_nsessions(p->roster), roster_nedges(p->roster));
}

static void send_resync_request(struct presence *p)
{
    Chat__V1__ResyncRequest rr = CHAT__V1__RESYNC_REQUEST__INIT;
    rr.presence_boot_id = p->boot_id;
    if (bus_publish(p->bus, SUBJ_PRESENCE_RESYNC, &rr.base) == 0)
        log_info("resync requested boot_id=%s", p->boot_id);
}

void presence_tick(struct presence *p)
{
    /* Dialling may block for seconds: only this thread does it, unlocked. */
    pthread_mutex_lock(&p->mu);
    int down = !userdb_up(p->db);
    pthread_mutex_unlock(&p->mu);
    struct userdb_link *link = down ? userdb_dial(p->db, clock_ms(CLOCK_MONOTONIC)) : NULL;

    pthread_mutex_lock(&p->mu);
    if (link)
        userdb_attach(p->db, link);
    long long mono = clock_ms(CLOCK_MONOTONIC);
    int up = bus_connected(p->bus);
    /* The count also catches an outage shorter than a tick. */
    uint64_t reconnects = p->reconnects;
    if (natsConnection_GetStats(p->bus->nc, p->stats) == NATS_OK)
        natsStatistics_GetCounts(p->stats, NULL, NULL, NULL, NULL, &reconnects);
    if (up && (!p->nats_up || reconnects != p->reconnects)) {
        p->reconnects = reconnects;
        if (!p->resync_started) {
            send_resync_request(p);
            /* The window counts from the request: edges cannot answer before.
             * It was opened at start (presence_start), so that events heard
             * before this tick are quiet too. */
            p->resync_started = 1;
            p->resync_end = mono + p->cfg->resync_ms;
        } else {
            /* Presence was deaf, not the edges: give them a full timeout again.
             * The NATS server may have restarted: let the edges reconnect too
             * before asking, or they would miss the request. Closes heard
             * meanwhile may be missing: a new window settles who is still there. */
            roster_edge_touch_all(p->roster, mono);
            p->resync_due = mono + RECONNECT_SETTLE_MS;
            roster_resync_begin(p->roster);
            p->resync_end = p->resync_due + p->cfg->resync_ms;
        }
    }
    p->nats_up = up;
    if (up && p->resync_due && mono >= p->resync_due) {
        send_resync_request(p);
        p->resync_due = 0;
    }
    if (roster_resyncing(p->roster) && p->resync_started && !p->resync_due && mono >= p->resync_end) {
        roster_resync_end(p->roster, clock_ms(CLOCK_REALTIME));
        commit(p);
        p->sweep_pending = 1;
    }
    if (p->sweep_pending)
        resync_sweep(p);
    if (up) {
        size_t n = roster_edge_expire(p->roster, mono, p->cfg->edge_timeout_ms, clock_ms(CLOCK_REALTIME));
        if (n)
            log_info("edges silent for %ld ms dropped count=%zu", p->cfg->edge_timeout_ms, n);
    }
    commit(p);
    pthread_mutex_unlock(&p->mu);
}

/* ---- lifecycle ---- */

struct presence *presence_create(const struct presence_config *cfg)
{
    struct userdb *db = userdb_create(cfg->database_url);
    if (!db)
        return NULL;
    struct presence *p = xcalloc(1, sizeof *p);
    p->cfg = cfg;
    p->db = db;
    p->roster = roster_create();
    pthread_mutex_init(&p->mu, NULL);
    ids_random(p->boot_id, sizeof p->boot_id - 1);
    return p;
}

int presence_start(struct presence *p, struct bus *bus)
{
    static const char *const subjects[NSUBS] = {SUBJ_PRESENCE_SESSION, SUBJ_PRESENCE_SET, SUBJ_PRESENCE_QUERY,
                                                SUBJ_EDGE_HEARTBEAT};
    static natsMsgHandler const handlers[NSUBS] = {on_session, on_set, on_query, on_heartbeat};
    p->bus = bus;
    /* The resync window opens before the first event can arrive: until the
     * edges have re-announced, a close may not be anyone's last. */
    pthread_mutex_lock(&p->mu);
    roster_resync_begin(p->roster);
    pthread_mutex_unlock(&p->mu);
    natsStatus st = natsStatistics_Create(&p->stats);
    if (st != NATS_OK) {
        log_error("nats statistics: %s", natsStatus_GetText(st));
        return -1;
    }
    for (int i = 0; i < NSUBS; i++) {
        natsStatus s = natsConnection_Subscribe(&p->subs[i], bus->nc, subjects[i], handlers[i], p);
        if (s == NATS_OK) /* a reconnect storm of resyncs must not be dropped as a slow consumer */
            s = natsSubscription_SetPendingLimits(p->subs[i], 1000000, 256 * 1024 * 1024);
        if (s != NATS_OK) {
            log_error("nats subscribe failed subject=%s: %s", subjects[i], natsStatus_GetText(s));
            return -1;
        }
    }
    return 0;
}

void presence_stop(struct presence *p)
{
    for (int i = 0; i < NSUBS; i++) {
        if (p->subs[i])
            natsSubscription_Unsubscribe(p->subs[i]);
        natsSubscription_Destroy(p->subs[i]);
        p->subs[i] = NULL;
    }
    natsStatistics_Destroy(p->stats);
    p->stats = NULL;
}

void presence_destroy(struct presence *p)
{
    if (!p)
        return;
    /* nats.c's threads are gone: nobody else holds the lock. */
    size_t left = roster_flush(p->roster, FLUSH_MAX, userdb_save, p->db);
    if (left)
        log_warn("users not written at exit count=%zu", left);
    roster_changes_clear(p->roster);
    roster_destroy(p->roster);
    userdb_destroy(p->db);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int presence_healthy(void *closure)
{
    struct presence *p = closure;
    pthread_mutex_lock(&p->mu);
    int ok = bus_connected(p->bus) && userdb_up(p->db);
    metrics_set("chat_presence_users", NULL, (double)roster_nusers(p->roster));
    metrics_set("chat_presence_sessions", NULL, (double)roster_nsessions(p->roster));
    metrics_set("chat_presence_edges", NULL, (double)roster_nedges(p->roster));
    metrics_set("chat_presence_postgres_up", NULL, userdb_up(p->db));
    metrics_set("chat_presence_nats_connected", NULL, bus_connected(p->bus));
    pthread_mutex_unlock(&p->mu);
    return ok;
}
