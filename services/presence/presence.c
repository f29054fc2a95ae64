/* presence: nats.c's threads decode the presence subjects and queue them
 * (bounded: when the queue is full the callback waits, so nats.c holds the
 * rest; nothing is dropped). One worker takes everything queued, at most
 * BATCH_MAX events, applies it to the roster in arrival order under one lock,
 * writes every user the batch made dirty in one statement (one transaction,
 * one WAL flush), then publishes the broadcasts and the replies in event
 * order. Bad payloads (garbage protobuf, a user id that is not a uuid, a
 * missing edge id, an unknown enum) are dropped with a debug line before the
 * queue: they never reach the roster and are never answered.
 * Order on every batch: roster, then PostgreSQL, then NATS, so that whoever
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
#include "map.h"
#include "mem.h"
#include "roster.h"
#include "subjects.h"
#include "userdb.h"

enum { SUB_SESSION, SUB_SET, SUB_QUERY, SUB_HEARTBEAT, NSUBS };

/* After a NATS reconnection, how long to wait before re-sending the
 * ResyncRequest: lib/bus.c clients retry every 250 ms. */
#define RECONNECT_SETTLE_MS 1000
/* Events waiting for the worker; past it the NATS callbacks wait. */
#define QUEUE_CAP 8192
/* Most events applied and written as one batch. */
#define BATCH_MAX 1000
/* Most users in one INSERT (after an outage the dirty set can be large). */
#define FLUSH_MAX 5000

enum item_kind { ITEM_OPEN, ITEM_CLOSE, ITEM_SET, ITEM_QUERY, ITEM_HEARTBEAT };

/* One decoded event, from its callback to the end of its batch. */
struct item {
    enum item_kind kind;
    union {
        Chat__V1__SessionEvent *se; /* ITEM_OPEN, ITEM_CLOSE */
        Chat__V1__SetStatus *ss;
        Chat__V1__PresenceQuery *q;
        Chat__V1__EdgeHeartbeat *hb;
    } pb;                           /* owned; freed with the item */
    char *reply;                    /* reply subject, owned, or NULL */
    char user_id[IDS_UUID_LEN + 1]; /* normalised (open, set) */
    long long mono_ms, now_ms;      /* when it was heard */
    size_t changes_end;             /* the worker: roster changes queued up to this event */
    uint8_t *answer;                /* the worker: a query's packed PresenceList (malloc'd) */
    size_t answer_len;
};

struct presence {
    const struct presence_config *cfg;
    struct bus *bus;
    natsSubscription *subs[NSUBS];
    natsStatistics *stats; /* the ticker's, for the reconnection count */
    char boot_id[23];      /* this process's life, in every ResyncRequest */

    pthread_mutex_t qmu; /* the queue, from the callbacks to the worker */
    pthread_cond_t qwork, qroom;
    struct item *queue; /* ring of QUEUE_CAP */
    size_t qhead, qlen;
    int qstop;   /* presence_stop: the worker leaves once the queue is empty */
    int qclosed; /* the worker is gone: late callbacks drop what they get */
    pthread_t worker;
    int worker_running;

    pthread_mutex_t mu; /* everything below */
    struct roster *roster;
    struct userdb *db;
    int nats_up;                   /* NATS was connected at the last tick */
    int resync_started;            /* the first ResyncRequest went out */
    long long resync_due;          /* monotonic ms of the next ResyncRequest after a reconnection, 0 = none */
    uint64_t reconnects;           /* nats.c's count at the last tick */
    long long resync_end;          /* monotonic ms at which the window closes */
    int sweep_pending;             /* the window closed, the DB sweep has not run yet */
    struct buf online;             /* the packed PresenceList of everyone online... */
    unsigned long long online_gen; /* ...as of this roster_online_gen() */
    int online_valid;
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

/* Packs a PresenceList of n infos into out (replacing what it held). */
static void pack_list(struct buf *out, const struct roster_info *infos, size_t n)
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
    size_t len = protobuf_c_message_get_packed_size(&list.base);
    out->len = 0;
    buf_reserve(out, len);
    protobuf_c_message_pack(&list.base, (uint8_t *)out->data);
    out->len = len;
    free(ptrs);
    free(pbs);
}

/* Publishes packed bytes to a reply subject. */
static void reply_raw(struct presence *p, const char *reply, const void *data, size_t len)
{
    natsStatus s = natsConnection_Publish(p->bus->nc, reply, data, (int)len);
    if (s != NATS_OK)
        log_debug("presence reply not sent subject=%s: %s", reply, natsStatus_GetText(s));
}

/* The packed list of everyone online now, rebuilt only when the roster says it
 * may have changed: in a connect storm every reply of a batch shares one. */
static const struct buf *online_list(struct presence *p)
{
    unsigned long long gen = roster_online_gen(p->roster);
    if (!p->online_valid || p->online_gen != gen) {
        struct roster_info *infos;
        size_t n = roster_online(p->roster, &infos);
        pack_list(&p->online, infos, n);
        free(infos);
        p->online_gen = gen;
        p->online_valid = 1;
    }
    return &p->online;
}

static const char *status_name(enum roster_status s)
{
    return s == ROSTER_ONLINE ? "online" : s == ROSTER_AWAY ? "away" : "offline";
}

static void publish_change(struct presence *p, const struct roster_change *c)
{
    Chat__V1__PresenceInfo info;
    info_to_pb(&info, c->user_id, c->username, c->status, c->last_seen_ms);
    Chat__V1__PresenceChange pc = CHAT__V1__PRESENCE_CHANGE__INIT;
    pc.info = &info;
    log_debug("status user=%s status=%s", c->user_id, status_name(c->status));
    if (bus_publish(p->bus, SUBJ_PRESENCE_STATUS, &pc.base) != 0)
        log_warn("presence change not published user=%s", c->user_id);
}

/* roster_flush's save: userdb_save, counted for /metrics. */
static int save_users(void *ctx, const struct roster_user *const *users, size_t n)
{
    struct presence *p = ctx;
    if (userdb_save(p->db, users, n) != 0)
        return -1;
    metrics_add("chat_presence_writes_total", NULL, 1);
    metrics_add("chat_presence_rows_written_total", NULL, (double)n);
    return 0;
}

/* Writes the dirty users (see the file comment for why first). A database that
 * is down delays the writes, never the broadcasts: memory is the truth, and the
 * users stay dirty until a later batch or tick writes them. Called with the
 * lock held. */
static void write_dirty(struct presence *p)
{
    roster_flush(p->roster, FLUSH_MAX, save_users, p);
}

/* Writes the dirty users, then broadcasts the queued changes. Called with the
 * lock held. */
static void commit(struct presence *p)
{
    write_dirty(p);
    const struct roster_change *c;
    size_t n = roster_changes(p->roster, &c);
    for (size_t i = 0; i < n; i++)
        publish_change(p, &c[i]);
    roster_changes_clear(p->roster);
}

static char *reply_of(natsMsg *msg)
{
    const char *r = natsMsg_GetReply(msg);
    return r && *r ? xstrdup(r) : NULL;
}

/* ---- the queue ---- */

static void item_cleanup(struct item *it)
{
    switch (it->kind) {
    case ITEM_OPEN:
    case ITEM_CLOSE:
        chat__v1__session_event__free_unpacked(it->pb.se, NULL);
        break;
    case ITEM_SET:
        chat__v1__set_status__free_unpacked(it->pb.ss, NULL);
        break;
    case ITEM_QUERY:
        chat__v1__presence_query__free_unpacked(it->pb.q, NULL);
        break;
    case ITEM_HEARTBEAT:
        chat__v1__edge_heartbeat__free_unpacked(it->pb.hb, NULL);
        break;
    }
    free(it->reply);
    free(it->answer);
}

/* Takes ownership of *it. Waits while the queue is full: nats.c keeps the
 * messages behind it (the subscriptions' pending limits are large). */
static void enqueue(struct presence *p, struct item *it)
{
    it->mono_ms = clock_ms(CLOCK_MONOTONIC);
    it->now_ms = clock_ms(CLOCK_REALTIME);
    pthread_mutex_lock(&p->qmu);
    while (p->qlen == QUEUE_CAP && !p->qclosed)
        pthread_cond_wait(&p->qroom, &p->qmu);
    if (p->qclosed) { /* stopping: nobody would answer it */
        pthread_mutex_unlock(&p->qmu);
        item_cleanup(it);
        return;
    }
    p->queue[(p->qhead + p->qlen) % QUEUE_CAP] = *it;
    p->qlen++;
    pthread_cond_signal(&p->qwork);
    pthread_mutex_unlock(&p->qmu);
}

/* ---- callbacks: decode, check, queue ---- */

static void on_session(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct presence *p = closure;
    Chat__V1__SessionEvent *se = chat__v1__session_event__unpack(NULL, (size_t)natsMsg_GetDataLength(msg),
                                                                 (const uint8_t *)natsMsg_GetData(msg));
    struct item it = {.kind = ITEM_OPEN, .pb.se = se};
    if (!se || !*se->edge_id ||
        (se->kind != CHAT__V1__SESSION_EVENT__KIND__KIND_OPEN &&
         se->kind != CHAT__V1__SESSION_EVENT__KIND__KIND_CLOSE) ||
        (se->kind == CHAT__V1__SESSION_EVENT__KIND__KIND_OPEN &&
         ids_uuid_norm(it.user_id, se->user_id, strlen(se->user_id)) != 0)) {
        log_debug("session event dropped: %s", se ? "invalid fields" : "not a SessionEvent");
        chat__v1__session_event__free_unpacked(se, NULL);
    } else {
        if (se->kind == CHAT__V1__SESSION_EVENT__KIND__KIND_CLOSE)
            it.kind = ITEM_CLOSE;
        it.reply = reply_of(msg);
        enqueue(p, &it);
    }
    natsMsg_Destroy(msg);
}

static void on_set(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct presence *p = closure;
    Chat__V1__SetStatus *ss = chat__v1__set_status__unpack(NULL, (size_t)natsMsg_GetDataLength(msg),
                                                           (const uint8_t *)natsMsg_GetData(msg));
    struct item it = {.kind = ITEM_SET, .pb.ss = ss};
    if (!ss || ids_uuid_norm(it.user_id, ss->user_id, strlen(ss->user_id)) != 0 ||
        (ss->status != CHAT__V1__STATUS__STATUS_ONLINE && ss->status != CHAT__V1__STATUS__STATUS_AWAY &&
         ss->status != CHAT__V1__STATUS__STATUS_OFFLINE)) {
        log_debug("set status dropped: %s", ss ? "invalid fields" : "not a SetStatus");
        chat__v1__set_status__free_unpacked(ss, NULL);
    } else {
        enqueue(p, &it);
    }
    natsMsg_Destroy(msg);
}

static void on_query(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct presence *p = closure;
    Chat__V1__PresenceQuery *q = chat__v1__presence_query__unpack(NULL, (size_t)natsMsg_GetDataLength(msg),
                                                                  (const uint8_t *)natsMsg_GetData(msg));
    struct item it = {.kind = ITEM_QUERY, .pb.q = q, .reply = reply_of(msg)};
    if (!q || !it.reply) {
        log_debug("query dropped: %s", q ? "no reply subject" : "not a PresenceQuery");
        item_cleanup(&it);
    } else {
        enqueue(p, &it);
    }
    natsMsg_Destroy(msg);
}

static void on_heartbeat(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct presence *p = closure;
    Chat__V1__EdgeHeartbeat *hb = chat__v1__edge_heartbeat__unpack(NULL, (size_t)natsMsg_GetDataLength(msg),
                                                                   (const uint8_t *)natsMsg_GetData(msg));
    struct item it = {.kind = ITEM_HEARTBEAT, .pb.hb = hb};
    if (!hb || !*hb->edge_id) {
        log_debug("heartbeat dropped: %s", hb ? "no edge id" : "not an EdgeHeartbeat");
        chat__v1__edge_heartbeat__free_unpacked(hb, NULL);
    } else {
        enqueue(p, &it);
    }
    natsMsg_Destroy(msg);
}

/* ---- the worker: one batch ---- */

/* The database rows of the users a batch opens sessions for and the roster
 * does not hold: one read for the whole batch. */
static void keep_row(void *ctx, const struct roster_row *row)
{
    struct map *rows = ctx;
    if (map_get(rows, row->id))
        return;
    struct roster_row *copy = xmalloc(sizeof *copy);
    *copy = *row;
    copy->id = xstrdup(row->id);
    copy->username = xstrdup(row->username);
    map_put(rows, copy->id, copy);
}

static void load_rows(struct presence *p, const struct item *b, size_t n, struct map *rows)
{
    const char **ids = xmalloc(n * sizeof *ids);
    size_t nids = 0;
    struct map seen;
    map_init(&seen);
    for (size_t i = 0; i < n; i++) {
        if (b[i].kind != ITEM_OPEN || roster_user_get(p->roster, b[i].user_id) ||
            map_get(&seen, b[i].user_id))
            continue;
        map_put(&seen, b[i].user_id, (void *)&b[i]);
        ids[nids++] = b[i].user_id;
    }
    /* The database down: carry on as with new users (their rows are written
     * when the store is back; an empty username or last_seen keeps the stored
     * ones). */
    if (nids && userdb_load(p->db, ids, nids, keep_row, rows) != 0)
        log_debug("users not read count=%zu: database unavailable", nids);
    map_cleanup(&seen);
    free(ids);
}

static void free_rows(struct map *rows)
{
    size_t i;
    for (struct map_entry *e = map_first(rows, &i); e; e = map_next(rows, e, &i)) {
        struct roster_row *row = e->value;
        free((char *)row->id);
        free((char *)row->username);
        free(row);
    }
    map_cleanup(rows);
}

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

/* Answers a query from the roster as it stands at this point of the batch, and
 * from the database for the users it does not hold; packs it into it->answer. */
static void run_query(struct presence *p, struct item *it)
{
    const Chat__V1__PresenceQuery *q = it->pb.q;
    struct buf out;
    buf_init(&out);
    if (q->n_user_ids > (size_t)p->cfg->max_query) {
        log_debug("query refused: %zu ids > PRESENCE_MAX_QUERY", q->n_user_ids);
        it->answer = (uint8_t *)buf_steal(&out, &it->answer_len);
        return;
    }
    size_t n = q->n_user_ids;
    struct query_fill f = {xcalloc(n ? n : 1, sizeof *f.norm), xcalloc(n ? n : 1, sizeof *f.infos), n};
    const char **ids = xcalloc(n ? n : 1, sizeof *ids);
    size_t nunknown = 0;
    for (size_t i = 0; i < n; i++)
        if (ids_uuid_norm(f.norm[i], q->user_ids[i], strlen(q->user_ids[i])) != 0)
            f.norm[i][0] = '\0';
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
    /* Users never seen have no PresenceInfo (no name, no lastSeen): left out,
     * as the original backend's store, which only holds users it has seen. */
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (f.infos[i].known)
            f.infos[kept++] = f.infos[i];
    pack_list(&out, f.infos, kept);
    it->answer = (uint8_t *)buf_steal(&out, &it->answer_len);
    for (size_t i = 0; i < kept; i++)
        if (f.infos[i].known == 2)
            free((char *)f.infos[i].username);
    free(ids);
    free(f.infos);
    free(f.norm);
}

/* Applies one event to the roster. */
static void apply(struct presence *p, struct item *it, const struct map *rows)
{
    switch (it->kind) {
    case ITEM_OPEN:
    case ITEM_CLOSE: {
        const Chat__V1__SessionEvent *se = it->pb.se;
        struct roster_event ev = {se->edge_id,  se->boot_id, se->conn_id, it->user_id,
                                  se->username, se->resync,  it->mono_ms, it->now_ms};
        if (it->kind == ITEM_OPEN) {
            int first = roster_open(p->roster, &ev, map_get(rows, it->user_id));
            log_debug("session open user=%s edge=%s conn=%llu first=%d resync=%d", ev.user_id, ev.edge_id,
                      ev.conn_id, first, ev.resync);
        } else {
            int r = roster_close(p->roster, &ev);
            log_debug("session close edge=%s conn=%llu result=%d", ev.edge_id, ev.conn_id, r);
        }
        break;
    }
    case ITEM_SET:
        if (roster_set_status(p->roster, it->user_id, (enum roster_status)it->pb.ss->status, it->now_ms) != 0)
            log_debug("set status ignored user=%s: no session", it->user_id);
        break;
    case ITEM_QUERY:
        run_query(p, it);
        break;
    case ITEM_HEARTBEAT:
        roster_edge_seen(p->roster, it->pb.hb->edge_id, it->pb.hb->boot_id, it->mono_ms, it->now_ms);
        break;
    }
}

/* The batch: every event applied in order, one write, then each event's
 * broadcasts followed by its reply. A session open is answered with the online
 * list as of the end of the batch (built once for all of them): never older
 * than the event it answers; a broadcast of a later event of the batch may
 * follow a list that already shows it. */
static void run_batch(struct presence *p, struct item *b, size_t n)
{
    struct map rows;
    map_init(&rows);
    pthread_mutex_lock(&p->mu);
    load_rows(p, b, n, &rows);
    for (size_t i = 0; i < n; i++) {
        apply(p, &b[i], &rows);
        const struct roster_change *unused;
        b[i].changes_end = roster_changes(p->roster, &unused);
    }
    free_rows(&rows);
    write_dirty(p);
    const struct roster_change *c;
    size_t nchanges = roster_changes(p->roster, &c), next = 0;
    for (size_t i = 0; i < n; i++) {
        for (; next < b[i].changes_end && next < nchanges; next++)
            publish_change(p, &c[next]);
        if (!b[i].reply)
            continue;
        if (b[i].kind == ITEM_OPEN) {
            const struct buf *l = online_list(p);
            reply_raw(p, b[i].reply, l->data, l->len);
        } else if (b[i].kind == ITEM_QUERY) {
            reply_raw(p, b[i].reply, b[i].answer, b[i].answer_len);
        } else { /* a close (or anything else) asked as a request: an empty list */
            reply_raw(p, b[i].reply, NULL, 0);
        }
    }
    for (; next < nchanges; next++)
        publish_change(p, &c[next]);
    roster_changes_clear(p->roster);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < n; i++)
        item_cleanup(&b[i]);
    metrics_add("chat_presence_events_total", NULL, (double)n);
    metrics_add("chat_presence_batches_total", NULL, 1);
}

static void *worker_main(void *arg)
{
    struct presence *p = arg;
    struct item *batch = xmalloc(BATCH_MAX * sizeof *batch);
    for (;;) {
        pthread_mutex_lock(&p->qmu);
        while (p->qlen == 0 && !p->qstop)
            pthread_cond_wait(&p->qwork, &p->qmu);
        if (p->qlen == 0) { /* stopping, and everything queued is answered */
            p->qclosed = 1;
            pthread_cond_broadcast(&p->qroom);
            pthread_mutex_unlock(&p->qmu);
            break;
        }
        size_t n = p->qlen < BATCH_MAX ? p->qlen : BATCH_MAX;
        for (size_t i = 0; i < n; i++)
            batch[i] = p->queue[(p->qhead + i) % QUEUE_CAP];
        p->qhead = (p->qhead + n) % QUEUE_CAP;
        p->qlen -= n;
        pthread_cond_broadcast(&p->qroom);
        pthread_mutex_unlock(&p->qmu);
        run_batch(p, batch, n);
    }
    free(batch);
    return NULL;
}

/* ---- timers ---- */

static void sweep_row(void *ctx, const struct roster_row *row)
{
    struct presence *p = ctx;
    if (roster_sweep_user(p->roster, row, clock_ms(CLOCK_REALTIME), 0))
        log_info("user offline after resync user=%s", row->id);
}

/* End of the resync window: who the database still thinks is online but no
 * edge re-announced went away while presence was down. Needs the database;
 * until it is back, it waits. */
static void resync_sweep(struct presence *p)
{
    if (!userdb_up(p->db) || roster_flush(p->roster, FLUSH_MAX, save_users, p) != 0)
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
        roster_resync_end(p->roster, clock_ms(CLOCK_REALTIME), 0);
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
    pthread_mutex_init(&p->qmu, NULL);
    pthread_cond_init(&p->qwork, NULL);
    pthread_cond_init(&p->qroom, NULL);
    p->queue = xmalloc(QUEUE_CAP * sizeof *p->queue);
    buf_init(&p->online);
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
    int err = pthread_create(&p->worker, NULL, worker_main, p);
    if (err != 0) {
        log_error("presence worker thread: %s", strerror(err));
        return -1;
    }
    p->worker_running = 1;
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
    /* The worker answers what is queued, then leaves; a callback still running
     * on a nats.c thread after that drops its event. */
    if (p->worker_running) {
        pthread_mutex_lock(&p->qmu);
        p->qstop = 1;
        pthread_cond_signal(&p->qwork);
        pthread_mutex_unlock(&p->qmu);
        pthread_join(p->worker, NULL);
        p->worker_running = 0;
    }
    natsStatistics_Destroy(p->stats);
    p->stats = NULL;
}

void presence_destroy(struct presence *p)
{
    if (!p)
        return;
    /* nats.c's threads and the worker are gone: nobody else holds the locks. */
    size_t left = roster_flush(p->roster, FLUSH_MAX, save_users, p);
    if (left)
        log_warn("users not written at exit count=%zu", left);
    for (size_t i = 0; i < p->qlen; i++) /* only when the worker never ran */
        item_cleanup(&p->queue[(p->qhead + i) % QUEUE_CAP]);
    free(p->queue);
    buf_cleanup(&p->online);
    roster_changes_clear(p->roster);
    roster_destroy(p->roster);
    userdb_destroy(p->db);
    pthread_cond_destroy(&p->qroom);
    pthread_cond_destroy(&p->qwork);
    pthread_mutex_destroy(&p->qmu);
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
    pthread_mutex_lock(&p->qmu);
    metrics_set("chat_presence_queue", NULL, (double)p->qlen);
    pthread_mutex_unlock(&p->qmu);
    return ok;
}
