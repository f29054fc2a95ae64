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
 * sees a PresenceChange can already read the row it describes.
 * Every replica applies every event; only the active one (replica.c) writes,
 * publishes, answers session opens, snapshots and transfers. Queries are
 * answered by any replica whose roster is current. */
#include "presence_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "map.h"
#include "metrics.h"
#include "subjects.h"

long long presence_clock(clockid_t id)
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

/* The reply to a session open: the online list with PRESENCE_LIST_IN_REPLY=1
 * (for edges that keep no copy of it) when it fits in a NATS message, else an
 * empty list, which still tells the edge that presence has the session. */
static void reply_open(struct presence *p, const char *reply)
{
    if (p->cfg->list_in_reply) {
        const struct buf *l = online_list(p);
        if ((int64_t)l->len <= natsConnection_GetMaxPayload(p->bus->nc)) {
            reply_raw(p, reply, l->data, l->len);
            return;
        }
        if (!p->list_too_big_logged)
            log_warn("online list of %zu bytes over NATS's max payload: session opens answered without it",
                     l->len);
        p->list_too_big_logged = 1;
    }
    reply_raw(p, reply, NULL, 0);
}

static const char *status_name(enum roster_status s)
{
    return s == ROSTER_ONLINE ? "online" : s == ROSTER_AWAY ? "away" : "offline";
}

/* Numbers the change in the epoch (a publication that fails still takes its
 * number: receivers see the gap and ask for a snapshot), publishes it, and
 * records that the world was shown it. */
static void publish_change(struct presence *p, const struct roster_change *c)
{
    Chat__V1__PresenceInfo info;
    info_to_pb(&info, c->user_id, c->username, c->status, c->last_seen_ms);
    Chat__V1__PresenceChange pc = CHAT__V1__PRESENCE_CHANGE__INIT;
    pc.info = &info;
    pc.seq = ++p->seq;
    pc.epoch = p->epoch;
    log_debug("status user=%s status=%s seq=%llu", c->user_id, status_name(c->status),
              (unsigned long long)pc.seq);
    if (bus_publish(p->bus, SUBJ_PRESENCE_STATUS, &pc.base) != 0)
        log_warn("presence change not published user=%s seq=%llu", c->user_id, (unsigned long long)pc.seq);
    roster_shown(p->roster, c->user_id, c->username, c->status, c->last_seen_ms);
}

int presence_publishing(struct presence *p)
{
    return p->role == ROLE_ACTIVE && lease_held(p->lease);
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

/* A database that is down delays the writes, never the broadcasts: memory is
 * the truth, and the users stay dirty until a later batch or tick writes
 * them. A standby writes nothing: the active does. */
void presence_write_dirty(struct presence *p)
{
    if (p->role == ROLE_ACTIVE)
        presence_flush(p);
}

size_t presence_flush(struct presence *p)
{
    return roster_flush(p->roster, FLUSH_MAX, save_users, p);
}

void presence_commit(struct presence *p)
{
    presence_write_dirty(p);
    const struct roster_change *c;
    size_t n = roster_changes(p->roster, &c);
    if (n && presence_publishing(p))
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
    case ITEM_SHOWN:
        chat__v1__presence_change__free_unpacked(it->pb.pc, NULL);
        break;
    case ITEM_SNAPSHOT:
    case ITEM_TRANSFER:
        break;
    }
    free(it->reply);
    free(it->answer);
    handoff_chunks_cleanup(&it->chunks);
}

/* Takes ownership of *it. Waits while the queue is full: nats.c keeps the
 * messages behind it (the subscriptions' pending limits are large). */
static void enqueue(struct presence *p, struct item *it)
{
    it->mono_ms = presence_clock(CLOCK_MONOTONIC);
    it->now_ms = presence_clock(CLOCK_REALTIME);
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

uint64_t presence_reconnects(struct presence *p, natsStatistics *st)
{
    uint64_t n = 0;
    if (st && natsConnection_GetStats(p->bus->nc, st) == NATS_OK)
        natsStatistics_GetCounts(st, NULL, NULL, NULL, NULL, &n);
    return n;
}

void presence_poke(struct presence *p)
{
    pthread_mutex_lock(&p->qmu);
    p->poke = 1;
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
        if (se->kind == CHAT__V1__SESSION_EVENT__KIND__KIND_CLOSE) {
            it.kind = ITEM_CLOSE;
            if (ids_uuid_norm(it.user_id, se->user_id, strlen(se->user_id)) != 0)
                it.user_id[0] = '\0'; /* only for the log: a close names its session */
        }
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

void presence_on_query(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
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

/* What the active replica told the world (no_echo: never this replica's own). */
static void on_status(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct presence *p = closure;
    Chat__V1__PresenceChange *pc = chat__v1__presence_change__unpack(NULL, (size_t)natsMsg_GetDataLength(msg),
                                                                     (const uint8_t *)natsMsg_GetData(msg));
    struct item it = {.kind = ITEM_SHOWN, .pb.pc = pc};
    if (!pc || !pc->info || ids_uuid_norm(it.user_id, pc->info->user_id, strlen(pc->info->user_id)) != 0 ||
        pc->info->status < CHAT__V1__STATUS__STATUS_ONLINE ||
        pc->info->status > CHAT__V1__STATUS__STATUS_OFFLINE) {
        log_debug("presence change dropped: %s", pc ? "invalid fields" : "not a PresenceChange");
        chat__v1__presence_change__free_unpacked(pc, NULL);
    } else {
        enqueue(p, &it);
    }
    natsMsg_Destroy(msg);
}

static void on_resync(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    replica_heard_resync(closure);
    natsMsg_Destroy(msg);
}

/* Snapshots and transfers are answered at their place in the stream of
 * events, so the request only needs a reply subject. */
static void on_request(struct presence *p, natsMsg *msg, enum item_kind kind)
{
    struct item it = {.kind = kind, .reply = reply_of(msg)};
    if (!it.reply)
        log_debug("request dropped: no reply subject");
    else
        enqueue(p, &it);
    natsMsg_Destroy(msg);
}

void presence_on_snapshot(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    on_request(closure, msg, ITEM_SNAPSHOT);
}

void presence_on_transfer(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    on_request(closure, msg, ITEM_TRANSFER);
}

int presence_subscribe(struct presence *p, natsSubscription **sub, const char *subject, const char *queue,
                       natsMsgHandler handler)
{
    if (*sub)
        return 0;
    natsStatus s = queue ? natsConnection_QueueSubscribe(sub, p->bus->nc, subject, queue, handler, p)
                         : natsConnection_Subscribe(sub, p->bus->nc, subject, handler, p);
    if (s == NATS_OK) /* a reconnect storm of resyncs must not be dropped as a slow consumer */
        s = natsSubscription_SetPendingLimits(*sub, 1000000, 256 * 1024 * 1024);
    if (s != NATS_OK) {
        log_error("nats subscribe failed subject=%s: %s", subject, natsStatus_GetText(s));
        natsSubscription_Destroy(*sub);
        *sub = NULL;
        return -1;
    }
    return 0;
}

void presence_unsubscribe(struct presence *p, natsSubscription **sub)
{
    bus_sub_retire(p->bus, sub, 1);
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
    /* A standby answers what the active told the world: the same answer
     * whichever replica the queue group picks. */
    roster_query(p->roster, ids, n, f.infos, p->role != ROLE_ACTIVE);
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

/* A change the active published, heard by this standby: what the world was
 * shown. Changes already in the roster it took over (same epoch, seq up to
 * the transfer's) are skipped. */
static void apply_shown(struct presence *p, const Chat__V1__PresenceChange *pc, const char *user_id)
{
    if (p->role == ROLE_ACTIVE) {
        log_warn("presence change of another active replica heard epoch=%s seq=%llu", pc->epoch,
                 (unsigned long long)pc->seq);
        return;
    }
    if (strcmp(pc->epoch, p->heard_epoch) == 0 && pc->seq <= p->heard_seq)
        return;
    snprintf(p->heard_epoch, sizeof p->heard_epoch, "%s", pc->epoch);
    p->heard_seq = pc->seq;
    roster_shown(p->roster, user_id, pc->info->username, (enum roster_status)pc->info->status,
                 pc->info->last_seen_ms);
}

/* The online list or the whole roster at this point of the batch: as of the
 * change numbered seq, published just before the reply. Only the active
 * answers; a transfer waits for the end of a resync window. */
static void answer_request(struct presence *p, struct item *it, uint64_t seq)
{
    if (!presence_publishing(p))
        return;
    if (it->kind == ITEM_SNAPSHOT) {
        struct roster_info *infos;
        size_t n = roster_online(p->roster, &infos);
        handoff_snapshot(&it->chunks, infos, n, p->epoch, seq);
        free(infos);
        metrics_add("chat_presence_snapshots_total", NULL, 1);
        log_debug("snapshot users=%zu chunks=%zu seq=%llu", n, it->chunks.n, (unsigned long long)seq);
    } else if (roster_resyncing(p->roster)) {
        handoff_not_ready(&it->chunks, p->epoch);
    } else {
        handoff_state(&it->chunks, p->roster, p->epoch, seq);
        metrics_add("chat_presence_transfers_total", NULL, 1);
        log_info("state sent users=%zu sessions=%zu edges=%zu chunks=%zu seq=%llu", roster_nusers(p->roster),
                 roster_nsessions(p->roster), roster_nedges(p->roster), it->chunks.n,
                 (unsigned long long)seq);
    }
}

/* Applies one event to the roster; changes_before: the changes the batch had
 * queued before it. */
static void apply(struct presence *p, struct item *it, const struct map *rows, size_t changes_before)
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
            log_debug("session close user=%s edge=%s conn=%llu result=%d%s", it->user_id, ev.edge_id,
                      ev.conn_id, r, r == 1 && p->cfg->grace_ms > 0 ? " grace" : "");
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
    case ITEM_HEARTBEAT: {
        const Chat__V1__EdgeHeartbeat *hb = it->pb.hb;
        roster_edge_seen(p->roster, hb->edge_id, hb->boot_id, it->mono_ms, it->now_ms);
        if (roster_edge_count(p->roster, hb->edge_id, hb->open_sessions))
            log_debug("edge %s holds %u sessions, the roster another count", hb->edge_id, hb->open_sessions);
        break;
    }
    case ITEM_SHOWN:
        apply_shown(p, it->pb.pc, it->user_id);
        break;
    case ITEM_SNAPSHOT:
    case ITEM_TRANSFER:
        answer_request(p, it, p->seq + changes_before);
        break;
    }
}

/* The batch: every event applied in order, one write, then each event's
 * broadcasts followed by its reply. A session open is answered with the online
 * list as of the end of the batch (built once for all of them): never older
 * than the event it answers; a broadcast of a later event of the batch may
 * follow a list that already shows it. A standby only applies (and answers
 * queries): its changes are dropped, the active publishes them. */
static void run_batch(struct presence *p, struct item *b, size_t n)
{
    struct map rows;
    map_init(&rows);
    pthread_mutex_lock(&p->mu);
    load_rows(p, b, n, &rows);
    for (size_t i = 0; i < n; i++) {
        const struct roster_change *unused;
        apply(p, &b[i], &rows, roster_changes(p->roster, &unused));
        b[i].changes_end = roster_changes(p->roster, &unused);
    }
    free_rows(&rows);
    presence_write_dirty(p);
    int publishing = presence_publishing(p);
    const struct roster_change *c;
    size_t nchanges = roster_changes(p->roster, &c), next = 0;
    for (size_t i = 0; i < n; i++) {
        for (; publishing && next < b[i].changes_end && next < nchanges; next++)
            publish_change(p, &c[next]);
        if (!b[i].reply)
            continue;
        if (b[i].kind == ITEM_QUERY) {
            reply_raw(p, b[i].reply, b[i].answer, b[i].answer_len);
        } else if (!publishing) {
            continue; /* only the active answers the rest */
        } else if (b[i].kind == ITEM_OPEN) {
            reply_open(p, b[i].reply);
        } else if (b[i].kind == ITEM_SNAPSHOT || b[i].kind == ITEM_TRANSFER) {
            for (size_t k = 0; k < b[i].chunks.n; k++)
                reply_raw(p, b[i].reply, b[i].chunks.bufs[k].data, b[i].chunks.bufs[k].len);
        } else { /* a close (or anything else) asked as a request: an empty list */
            reply_raw(p, b[i].reply, NULL, 0);
        }
    }
    for (; publishing && next < nchanges; next++)
        publish_change(p, &c[next]);
    roster_changes_clear(p->roster);
    if (p->drain_left > 0 && (p->drain_left -= (long)n) <= 0) {
        p->drain_left = 0;
        presence_poke(p); /* the queue may be empty now: the worker must look at the lease */
    }
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < n; i++)
        item_cleanup(&b[i]);
    metrics_add("chat_presence_events_total", NULL, (double)n);
    metrics_add("chat_presence_batches_total", NULL, 1);
}

/* Waits for work: events, a poke, a stop, or (while the roster is not
 * current) the next attempt at a transfer. Returns the number of events to
 * take (0: none now), -1 to leave. */
static long wait_work(struct presence *p, int synced, long long transfer_due)
{
    pthread_mutex_lock(&p->qmu);
    for (;;) {
        if (p->qstop && (p->qlen == 0 || !synced)) { /* unsynced: nobody to answer them */
            p->qclosed = 1;
            pthread_cond_broadcast(&p->qroom);
            pthread_mutex_unlock(&p->qmu);
            return -1;
        }
        if (p->poke || (!synced && presence_clock(CLOCK_MONOTONIC) >= transfer_due) || (synced && p->qlen))
            break;
        if (synced) {
            pthread_cond_wait(&p->qwork, &p->qmu);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            long long ns = ts.tv_nsec + 50 * 1000000LL;
            ts.tv_sec += (time_t)(ns / 1000000000);
            ts.tv_nsec = (long)(ns % 1000000000);
            pthread_cond_timedwait(&p->qwork, &p->qmu, &ts);
        }
    }
    p->poke = 0;
    long n = synced ? (long)(p->qlen < BATCH_MAX ? p->qlen : BATCH_MAX) : 0;
    pthread_mutex_unlock(&p->qmu);
    return n;
}

static void *worker_main(void *arg)
{
    struct presence *p = arg;
    struct item *batch = xmalloc(BATCH_MAX * sizeof *batch);
    for (;;) {
        replica_roles(p);
        pthread_mutex_lock(&p->mu);
        int synced = p->synced || p->role == ROLE_ACTIVE;
        long long due = p->transfer_due;
        int refresh = replica_sync_due(p, presence_clock(CLOCK_MONOTONIC));
        pthread_mutex_unlock(&p->mu);
        if (refresh && synced) { /* the events wait while the new state comes */
            replica_sync(p);
            continue;
        }
        long n = wait_work(p, synced, due);
        if (n < 0)
            break;
        if (!synced) {
            replica_sync(p);
            continue;
        }
        pthread_mutex_lock(&p->qmu);
        if ((size_t)n > p->qlen)
            n = (long)p->qlen;
        for (long i = 0; i < n; i++)
            batch[i] = p->queue[(p->qhead + (size_t)i) % QUEUE_CAP];
        p->qhead = (p->qhead + (size_t)n) % QUEUE_CAP;
        p->qlen -= (size_t)n;
        pthread_cond_broadcast(&p->qroom);
        pthread_mutex_unlock(&p->qmu);
        if (n > 0)
            run_batch(p, batch, (size_t)n);
    }
    free(batch);
    return NULL;
}

/* ---- timers ---- */

void presence_tick(struct presence *p)
{
    /* Dialling may block for seconds: only this thread does it, unlocked. */
    pthread_mutex_lock(&p->mu);
    int down = !userdb_up(p->db);
    pthread_mutex_unlock(&p->mu);
    struct userdb_link *link = down ? userdb_dial(p->db, presence_clock(CLOCK_MONOTONIC)) : NULL;

    pthread_mutex_lock(&p->mu);
    if (link)
        userdb_attach(p->db, link);
    long long mono = presence_clock(CLOCK_MONOTONIC);
    int up = bus_connected(p->bus);
    /* The count also catches an outage shorter than a tick. */
    uint64_t reconnects = presence_reconnects(p, p->stats);
    if (up && (!p->nats_up || reconnects != p->reconnects)) {
        p->reconnects = reconnects;
        if (p->ever_up)
            replica_reconnected(p, mono, reconnects);
        p->ever_up = 1;
    }
    p->nats_up = up;
    replica_timers(p, mono, up);
    if (up) {
        size_t n =
            roster_edge_expire(p->roster, mono, p->cfg->edge_timeout_ms, presence_clock(CLOCK_REALTIME));
        if (n)
            log_info("edges silent for %ld ms dropped count=%zu", p->cfg->edge_timeout_ms, n);
        /* Only while NATS is up: an offline that cannot be published now must
         * not count as shown. A resync window defers it too (roster.h). */
        n = roster_grace_expire(p->roster, presence_clock(CLOCK_REALTIME));
        if (n)
            log_debug("grace period over: offline count=%zu", n);
    }
    presence_commit(p);
    pthread_mutex_unlock(&p->mu);
}

/* ---- lifecycle ---- */

static void on_lease_change(void *ctx)
{
    presence_poke(ctx);
}

struct presence *presence_create(const struct presence_config *cfg)
{
    struct userdb *db = userdb_create(cfg->database_url);
    if (!db)
        return NULL;
    struct presence *p = xcalloc(1, sizeof *p);
    p->cfg = cfg;
    p->db = db;
    p->roster = roster_create();
    roster_set_grace(p->roster, cfg->grace_ms);
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->qmu, NULL);
    pthread_cond_init(&p->qwork, NULL);
    pthread_cond_init(&p->qroom, NULL);
    p->queue = xmalloc(QUEUE_CAP * sizeof *p->queue);
    buf_init(&p->online);
    ids_random(p->boot_id, sizeof p->boot_id - 1);
    p->role = ROLE_STANDBY;
    p->drain_left = -1;
    atomic_init(&p->retransfer_at, 0);
    return p;
}

/* The lease's timing from PRESENCE_FAILOVER_MS (F): standbys with a current
 * roster try every F/20 (50-250 ms); the key lives F - that - F/5 after its
 * last renewal, so that a standby takes it at most F - F/5 after the active's
 * last renewal, with F/5 left for the takeover itself and its first status to
 * reach the sockets through the edges (F/10 was seen exceeded by 50 ms on a
 * busy 3-node cluster with the sanitizer build). */
static struct lease *make_lease(struct presence *p)
{
    long f = p->cfg->failover_ms;
    long poll = f / 20 < 50 ? 50 : f / 20 > 250 ? 250 : f / 20;
    struct lease_config lc = {
        .bucket = "CHAT_PRESENCE_LEASE",
        .key = "active",
        .holder = p->boot_id,
        .ttl_ms = f - poll - f / 5,
        .poll_ms = poll,
        .replicas = p->cfg->stream_replicas,
        .file_storage = 1,
    };
    return lease_create(&lc, p->bus, on_lease_change, p);
}

static void describe_metrics(void)
{
    metrics_describe("chat_presence_active", "gauge", "1 while this replica is the active one, else 0.");
    metrics_describe("chat_presence_epoch_changes_total", "counter",
                     "Epochs this replica started (it became active).");
    metrics_describe("chat_presence_takeovers_total", "counter",
                     "Activations with a current roster, taken over from a previous active.");
    metrics_describe("chat_presence_snapshots_total", "counter", "Online-list snapshots sent to edges.");
    metrics_describe("chat_presence_transfers_total", "counter", "Whole states sent to other replicas.");
    metrics_describe("chat_presence_transfers_received_total", "counter",
                     "Whole states taken from the active replica.");
    metrics_set("chat_presence_active", NULL, 0);
    metrics_add("chat_presence_epoch_changes_total", NULL, 0);
    metrics_add("chat_presence_takeovers_total", NULL, 0);
    metrics_add("chat_presence_snapshots_total", NULL, 0);
}

int presence_start(struct presence *p, struct bus *bus)
{
    static const char *const subjects[NSUBS] = {SUBJ_PRESENCE_SESSION, SUBJ_PRESENCE_SET, SUBJ_EDGE_HEARTBEAT,
                                                SUBJ_PRESENCE_STATUS, SUBJ_PRESENCE_RESYNC};
    static natsMsgHandler const handlers[NSUBS] = {on_session, on_set, on_heartbeat, on_status, on_resync};
    p->bus = bus;
    p->lease = make_lease(p);
    describe_metrics();
    natsStatus st = natsStatistics_Create(&p->stats);
    if (st == NATS_OK)
        st = natsStatistics_Create(&p->role_stats);
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
    /* Every input first, then the lease: whatever this replica becomes, it has
     * heard everything since before it decided. */
    for (int i = 0; i < NSUBS; i++)
        if (presence_subscribe(p, &p->subs[i], subjects[i], NULL, handlers[i]) != 0)
            return -1;
    log_info("standby replica=%s: the lease decides (PRESENCE_FAILOVER_MS=%ld)", p->boot_id,
             p->cfg->failover_ms);
    return lease_start(p->lease);
}

void presence_stop(struct presence *p)
{
    for (int i = 0; i < NSUBS; i++)
        presence_unsubscribe(p, &p->subs[i]);
    presence_unsubscribe(p, &p->query_sub);
    presence_unsubscribe(p, &p->snapshot_sub);
    presence_unsubscribe(p, &p->transfer_sub);
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
    /* The last writes before the lease goes: the next active's come after. */
    pthread_mutex_lock(&p->mu);
    size_t left = p->role == ROLE_ACTIVE ? presence_flush(p) : 0;
    pthread_mutex_unlock(&p->mu);
    if (left)
        log_warn("users not written at exit count=%zu", left);
    lease_stop(p->lease, 1);
    natsStatistics_Destroy(p->stats);
    natsStatistics_Destroy(p->role_stats);
    p->stats = p->role_stats = NULL;
}

void presence_destroy(struct presence *p)
{
    if (!p)
        return;
    /* nats.c's threads and the worker are gone: nobody else holds the locks. */
    for (size_t i = 0; i < p->qlen; i++) /* only when the worker never ran, or left unsynced */
        item_cleanup(&p->queue[(p->qhead + i) % QUEUE_CAP]);
    lease_destroy(p->lease);
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
