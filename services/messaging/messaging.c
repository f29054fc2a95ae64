/* messaging: see messaging.h. Threads: one worker per partition, one for read
 * receipts (which also counts the replicas), and nats.c's own threads for the
 * history queries (one connection of their own, behind a mutex). */
#include "messaging.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat.pb-c.h"
#include "ids.h"
#include "log.h"
#include "mem.h"
#include "msgtype.h"
#include "metrics.h"
#include "store.h"
#include "streams.h"
#include "subjects.h"

#define APP_PREFIX "chat-messaging/"
#define READ_CONSUMER "messaging-read"
#define HISTORY_MAX 100

struct worker {
    struct messaging *m;
    int is_read;        /* the read-receipt worker */
    unsigned partition; /* send workers */
    pthread_t thread;
    struct store *st;
    int owned; /* holds the partition's lock */
    natsSubscription *sub;
    long long last_us; /* last created_at given: strictly increasing */
};

struct messaging {
    const struct messaging_config *cfg;
    struct bus *bus;
    jsCtx *js;
    char app[64]; /* application_name: APP_PREFIX + replica id */
    struct worker *workers;
    int nworkers;
    atomic_int owned_count;
    atomic_int fair_share;
    atomic_int stopping;
    atomic_int db_up; /* the read worker's last look at PostgreSQL */
    pthread_mutex_t setup_mu;
    int setup_done; /* streams, consumers and schema are there */
    pthread_mutex_t query_mu;
    struct store *query_st;
    natsSubscription *query_sub;
};

/* Deliveries are core NATS publishes: after NATS comes back, the edges need a
 * moment to re-subscribe their users' subjects, or what is stored right then
 * is delivered to nobody. Workers hold their fetches for this long after a
 * reconnection (not after the first connection). */
#define RECONNECT_GRACE_MS 2000
static atomic_int connections;
static atomic_llong reconnected_at; /* CLOCK_MONOTONIC ms */

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void messaging_bus_connected(void *closure)
{
    (void)closure;
    if (atomic_fetch_add(&connections, 1) > 0)
        atomic_store(&reconnected_at, mono_ms());
}

static void nap(struct messaging *m, int ms)
{
    for (; ms > 0 && !atomic_load(&m->stopping); ms -= 50) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------- set-up ---------- */

static void consumer_name(char *out, size_t n, const struct worker *w)
{
    if (w->is_read)
        snprintf(out, n, READ_CONSUMER);
    else
        snprintf(out, n, "messaging-send-%u", w->partition);
}

static void consumer_filter(char *out, size_t n, const struct worker *w)
{
    if (w->is_read)
        snprintf(out, n, SUBJ_CMD_READ);
    else
        snprintf(out, n, SUBJ_CMD_SEND_FMT, w->partition);
}

static int ensure_consumer(struct messaging *m, const struct worker *w)
{
    char name[64], filter[64];
    consumer_name(name, sizeof name, w);
    consumer_filter(filter, sizeof filter, w);
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = name;
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = m->cfg->ack_wait_ms * 1000000LL;
    cc.MaxDeliver = -1; /* a command is retried until stored: never dropped */
    cc.MaxAckPending = (int)m->cfg->batch * 4;
    cc.FilterSubject = filter;
    cc.DeliverPolicy = js_DeliverAll;
    cc.Replicas = streams_replicas(); /* as many copies as the stream: survives a node */
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddConsumer(&ci, m->js, STREAM_CMD, &cc, NULL, &jerr);
    if (s != NATS_OK && jerr == JSConsumerNameExistErr)
        s = js_UpdateConsumer(&ci, m->js, STREAM_CMD, &cc, NULL, &jerr);
    jsConsumerInfo_Destroy(ci);
    if (s != NATS_OK) {
        log_warn("jetstream consumer %s not ready: %s (code %d)", name, natsStatus_GetText(s), (int)jerr);
        return -1;
    }
    return 0;
}

/* Once per process: streams, consumers, schema. Returns 0 when done. */
static int setup(struct messaging *m, struct store *st)
{
    int rc = 0;
    pthread_mutex_lock(&m->setup_mu);
    if (!m->setup_done) {
        rc = -1;
        if (bus_connected(m->bus) && streams_ensure(m->js) == 0 && store_migrate(st) == 0) {
            int i;
            for (i = 0; i < m->nworkers && ensure_consumer(m, &m->workers[i]) == 0; i++)
                ;
            if (i == m->nworkers) {
                m->setup_done = 1;
                rc = 0;
                log_info("ready partitions=%ld batch=%ld", m->cfg->partitions, m->cfg->batch);
            }
        }
    }
    pthread_mutex_unlock(&m->setup_mu);
    return rc;
}

/* ---------- publishing ---------- */

/* Fills a Message from a row; strings are borrowed from the row. */
static void message_from_row(Chat__V1__Message *msg, struct store_row *r)
{
    chat__v1__message__init(msg);
    msg->id = r->id;
    msg->sender_id = r->sender;
    msg->recipient_id = r->recipient;
    msg->type = msgtype_parse(r->type);
    msg->content = r->content;
    msg->client_message_id = r->cmid;
    msg->created_at_ms = r->created_ms;
    msg->read_at_ms = r->read_ms;
}

static void publish_delivery(struct messaging *m, const char *user, Chat__V1__Delivery *d)
{
    char subj[64];
    snprintf(subj, sizeof subj, SUBJ_USER_FMT, user);
    bus_publish(m->bus, subj, &d->base);
}

/* A tap for other teams: JetStream with the id as Nats-Msg-Id, so a
 * redelivered command does not tap twice within the duplicate window. */
static void publish_tap(struct messaging *m, const char *subject, const char *msg_id,
                        const ProtobufCMessage *p)
{
    size_t n = protobuf_c_message_get_packed_size(p);
    uint8_t *buf = xmalloc(n);
    protobuf_c_message_pack(p, buf);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msg_id;
    natsStatus s = js_PublishAsync(m->js, subject, buf, (int)n, &po);
    if (s != NATS_OK)
        log_warn("tap publish failed subject=%s: %s", subject, natsStatus_GetText(s));
    free(buf);
}

/* The outcome for the client's socket (its ack, or chat:error). Successes
 * without an ack request need no message: message:sent tells all devices. */
static void publish_result(struct messaging *m, const Chat__V1__Origin *origin, const char *event,
                           Chat__V1__Message *msg, const char *err_code, const char *err_text)
{
    if (!origin || !*origin->edge_id || (!err_code && origin->ack_id < 0))
        return;
    Chat__V1__CommandResult r = CHAT__V1__COMMAND_RESULT__INIT;
    Chat__V1__Error e = CHAT__V1__ERROR__INIT;
    r.origin = (Chat__V1__Origin *)origin;
    r.event = (char *)event;
    if (err_code) {
        e.code = (char *)err_code;
        e.message = (char *)err_text;
        r.outcome_case = CHAT__V1__COMMAND_RESULT__OUTCOME_ERROR;
        r.error = &e;
    } else if (msg) {
        r.outcome_case = CHAT__V1__COMMAND_RESULT__OUTCOME_MESSAGE;
        r.message = msg;
    } else {
        r.outcome_case = CHAT__V1__COMMAND_RESULT__OUTCOME_OK;
        r.ok = 1;
    }
    char subj[160];
    snprintf(subj, sizeof subj, SUBJ_EDGE_FMT, origin->edge_id);
    bus_publish(m->bus, subj, &r.base);
}

/* ---------- sends ---------- */

/* A command the edge should never have sent: answered and terminated. */
static int send_valid(const Chat__V1__SendMessage *c)
{
    char tmp[IDS_UUID_LEN + 1];
    const Chat__V1__Message *msg = c->message;
    return msg && ids_uuid_norm(tmp, msg->id, strlen(msg->id)) == 0 &&
           ids_uuid_norm(tmp, msg->sender_id, strlen(msg->sender_id)) == 0 &&
           ids_uuid_norm(tmp, msg->recipient_id, strlen(msg->recipient_id)) == 0 && msgtype_name(msg->type) &&
           *msg->content && strlen(msg->client_message_id) <= 64;
}

/* Stores one fetched batch of a partition and publishes what follows. */
static void process_sends(struct worker *w, natsMsgList *list)
{
    struct messaging *m = w->m;
    int n = list->Count;
    Chat__V1__SendMessage **cmds = xcalloc((size_t)n, sizeof *cmds);
    struct store_msg *in = xcalloc((size_t)n, sizeof *in);
    struct store_row *out = xcalloc((size_t)n, sizeof *out);
    natsMsg **msgs = xcalloc((size_t)n, sizeof *msgs);
    int k = 0;

    for (int i = 0; i < n; i++) {
        natsMsg *nm = list->Msgs[i];
        Chat__V1__SendMessage *c = chat__v1__send_message__unpack(NULL, (size_t)natsMsg_GetDataLength(nm),
                                                                  (const uint8_t *)natsMsg_GetData(nm));
        if (!c || !send_valid(c)) {
            log_warn("dropping an invalid send command subject=%s", natsMsg_GetSubject(nm));
            if (c)
                publish_result(m, c->origin, "message:send", NULL, "bad_request", "invalid message");
            chat__v1__send_message__free_unpacked(c, NULL);
            natsMsg_Term(nm, NULL);
            continue;
        }
        /* createdAt: when JetStream stored the command (stream order). A tie
         * with the previous one (µs resolution) is broken forward; an older
         * one (a redelivery after a fail-over) keeps its own time, so
         * history stays in send order. */
        jsMsgMetaData *meta = NULL;
        long long us = now_ms() * 1000;
        if (natsMsg_GetMetaData(&meta, nm) == NATS_OK) {
            us = meta->Timestamp / 1000;
            jsMsgMetaData_Destroy(meta);
        }
        if (us == w->last_us)
            us++;
        if (us > w->last_us)
            w->last_us = us;
        cmds[k] = c;
        msgs[k] = nm;
        in[k] = (struct store_msg){c->message->id,
                                   c->message->sender_id,
                                   c->message->recipient_id,
                                   msgtype_name(c->message->type),
                                   c->message->content,
                                   c->message->client_message_id,
                                   us};
        k++;
    }

    long long t0 = now_ms();
    if (k > 0 && store_insert_batch(w->st, in, k, out) != 0) {
        metrics_add("chat_messaging_batch_failures_total", NULL, 1);
        /* Nothing is stored; JetStream gives the batch back (to this replica
         * once PostgreSQL is back, or to the next owner of the partition). */
        for (int i = 0; i < k; i++)
            natsMsg_NakWithDelay(msgs[i], store_ok(w->st) == 0 ? 1000 : 0, NULL);
        k = 0;
    }
    for (int i = 0; i < k; i++) {
        if (!out[i].found) {
            natsMsg_NakWithDelay(msgs[i], 1000, NULL);
            continue;
        }
        Chat__V1__Message msg;
        message_from_row(&msg, &out[i]);
        int same = strcmp(out[i].id, in[i].id) == 0; /* else: a resend with a known client id */
        Chat__V1__Delivery d = CHAT__V1__DELIVERY__INIT;
        if (same) {
            d.event_case = CHAT__V1__DELIVERY__EVENT_MESSAGE_RECEIVED;
            d.message_received = &msg;
            publish_delivery(m, out[i].recipient, &d);
            publish_tap(m, SUBJ_EVENT_CREATED, out[i].id, &msg.base);
        }
        d.event_case = CHAT__V1__DELIVERY__EVENT_MESSAGE_SENT;
        d.message_sent = &msg;
        publish_delivery(m, out[i].sender, &d);
        publish_result(m, cmds[i]->origin, "message:send", &msg, NULL, NULL);
        natsMsg_Ack(msgs[i], NULL);
        if (out[i].inserted)
            metrics_add("chat_messaging_messages_stored_total", NULL, 1);
    }
    if (k > 0) {
        log_debug("stored batch partition=%u size=%d", w->partition, k);
        metrics_add("chat_messaging_batches_total", NULL, 1);
        metrics_add("chat_messaging_batch_size_sum", NULL, k);
        metrics_add("chat_messaging_batch_seconds_sum", NULL, (double)(now_ms() - t0) / 1000.0);
    }

    store_rows_cleanup(out, k);
    for (int i = 0; i < n; i++)
        chat__v1__send_message__free_unpacked(cmds[i], NULL);
    free(cmds);
    free(in);
    free(out);
    free(msgs);
}

/* ---------- reads ---------- */

static void process_read(struct worker *w, natsMsg *nm)
{
    struct messaging *m = w->m;
    Chat__V1__MarkRead *c = chat__v1__mark_read__unpack(NULL, (size_t)natsMsg_GetDataLength(nm),
                                                        (const uint8_t *)natsMsg_GetData(nm));
    char id[IDS_UUID_LEN + 1], reader[IDS_UUID_LEN + 1], sender[IDS_UUID_LEN + 1];
    if (!c || ids_uuid_norm(id, c->message_id, strlen(c->message_id)) ||
        ids_uuid_norm(reader, c->reader_id, strlen(c->reader_id))) {
        log_warn("dropping an invalid read command");
        natsMsg_Term(nm, NULL);
        chat__v1__mark_read__free_unpacked(c, NULL);
        return;
    }
    long long read_ms = 0;
    switch (store_mark_read(w->st, id, reader, sender, &read_ms)) {
    case STORE_READ_OK: {
        metrics_add("chat_messaging_reads_total", NULL, 1);
        Chat__V1__ReadReceipt rr = CHAT__V1__READ_RECEIPT__INIT;
        rr.message_id = id;
        rr.sender_id = sender;
        rr.reader_id = reader;
        rr.read_at_ms = read_ms;
        Chat__V1__Delivery d = CHAT__V1__DELIVERY__INIT;
        d.event_case = CHAT__V1__DELIVERY__EVENT_MESSAGE_READ;
        d.message_read = &rr;
        publish_delivery(m, sender, &d);
        char tap_id[48];
        snprintf(tap_id, sizeof tap_id, "read:%s", id);
        publish_tap(m, SUBJ_EVENT_READ, tap_id, &rr.base);
        publish_result(m, c->origin, "message:read", NULL, NULL, NULL);
        break;
    }
    case STORE_READ_ALREADY:
        publish_result(m, c->origin, "message:read", NULL, NULL, NULL);
        break;
    case STORE_READ_NOT_FOUND:
        publish_result(m, c->origin, "message:read", NULL, "not_found", "no such message");
        break;
    case STORE_READ_FORBIDDEN:
        publish_result(m, c->origin, "message:read", NULL, "forbidden",
                       "only the recipient can mark it read");
        break;
    case STORE_READ_ERROR:
        natsMsg_NakWithDelay(nm, 1000, NULL);
        chat__v1__mark_read__free_unpacked(c, NULL);
        return;
    }
    natsMsg_Ack(nm, NULL);
    chat__v1__mark_read__free_unpacked(c, NULL);
}

/* ---------- workers ---------- */

/* Partition ownership: take a free partition while below the fair share,
 * give one back while above it. Returns 1 when the worker may fetch. */
static int own(struct worker *w)
{
    struct messaging *m = w->m;
    if (w->is_read)
        return 1;
    int fair = atomic_load(&m->fair_share);
    if (!w->owned) {
        if (atomic_load(&m->owned_count) >= fair)
            return 0;
        if (store_try_lock(w->st, w->partition) != 1)
            return 0;
        w->owned = 1;
        w->last_us = 0;
        atomic_fetch_add(&m->owned_count, 1);
        log_info("partition %u taken", w->partition);
        return 1;
    }
    if (atomic_load(&m->owned_count) > fair) {
        store_unlock(w->st, w->partition);
        w->owned = 0;
        atomic_fetch_sub(&m->owned_count, 1);
        log_info("partition %u released (fair share %d)", w->partition, fair);
        return 0;
    }
    return 1;
}

static void lose_db(struct worker *w)
{
    if (w->owned) {
        w->owned = 0; /* the lock died with the connection */
        atomic_fetch_sub(&w->m->owned_count, 1);
        log_warn("partition %u lost with its database connection", w->partition);
    }
    store_close(w->st);
    w->st = NULL;
}

static void count_replicas(struct worker *w)
{
    int n = store_count_replicas(w->st, APP_PREFIX);
    if (n < 1)
        n = 1;
    int p = (int)w->m->cfg->partitions;
    atomic_store(&w->m->fair_share, (p + n - 1) / n);
}

/* Pending commands per partition (JetStream), refreshed by the read worker. */
static void pending_gauges(struct messaging *m)
{
    for (int i = 0; i < m->nworkers; i++) {
        char name[64], labels[96];
        consumer_name(name, sizeof name, &m->workers[i]);
        jsConsumerInfo *ci = NULL;
        if (js_GetConsumerInfo(&ci, m->js, STREAM_CMD, name, NULL, NULL) == NATS_OK) {
            snprintf(labels, sizeof labels, "consumer=\"%s\"", name);
            metrics_set("chat_messaging_jetstream_pending", labels,
                        (double)(ci->NumPending + ci->NumAckPending));
        }
        jsConsumerInfo_Destroy(ci);
    }
}

/* How many commands to fetch. Commands can arrive after a Fetch has given up
 * (a late answer to its pull request) and wait in the subscription. nats.c
 * 3.4.1's Fetch takes those first, then asks the server for the rest of the
 * batch but keeps reading until its count equals that rest: with more than
 * half a batch waiting it writes past its array (heap corruption, seen as
 * "double free" crashes under load). Asking for no more than what waits
 * takes it from the subscription alone, without a request. */
static int fetch_size(struct worker *w)
{
    int pending = 0, bytes = 0;
    int batch = (int)w->m->cfg->batch;
    if (natsSubscription_GetPending(w->sub, &pending, &bytes) == NATS_OK && pending > 0 && pending < batch)
        return pending;
    return batch;
}

/* Takes what the consumer has, up to a batch, at once; when it has nothing,
 * waits (500 ms at most) for the next command alone. natsSubscription_Fetch
 * would ask for a whole batch once the consumer was empty, and return only
 * when the batch was full or its timeout passed: at 2,000 messages/s over 8
 * partitions that held commands ~50-90 ms (median) in the benchmark. */
static natsStatus fetch(struct worker *w, natsMsgList *list)
{
    jsFetchRequest req;
    jsFetchRequest_Init(&req);
    req.Batch = fetch_size(w);
    req.NoWait = true;
    req.Expires = 500 * 1000000LL; /* bounds the wait for the server's answer */
    natsStatus s = natsSubscription_FetchRequest(list, w->sub, &req);
    if (s != NATS_NOT_FOUND && s != NATS_TIMEOUT)
        return s;
    jsErrCode jerr = 0;
    return natsSubscription_Fetch(list, w->sub, 1, 500, &jerr);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct messaging *m = w->m;
    long long next_count = 0;
    while (!atomic_load(&m->stopping)) {
        if (store_ok(w->st) != 0) {
            lose_db(w);
            if (!(w->st = store_open(m->cfg->database_url, m->app))) {
                if (w->is_read)
                    atomic_store(&m->db_up, 0);
                nap(m, 1000);
                continue;
            }
        }
        if (w->is_read)
            atomic_store(&m->db_up, 1);
        if (setup(m, w->st) != 0) {
            nap(m, 1000);
            continue;
        }
        if (w->is_read && now_ms() >= next_count) {
            count_replicas(w);
            pending_gauges(m);
            next_count = now_ms() + 2000;
        }
        if (!own(w)) {
            nap(m, 500);
            continue;
        }
        long long since = mono_ms() - atomic_load(&reconnected_at);
        if (atomic_load(&reconnected_at) && since < RECONNECT_GRACE_MS) {
            nap(m, (int)(RECONNECT_GRACE_MS - since));
            continue;
        }
        if (!w->sub) {
            char name[64], filter[64];
            consumer_name(name, sizeof name, w);
            consumer_filter(filter, sizeof filter, w);
            jsSubOptions so;
            jsSubOptions_Init(&so);
            so.Stream = STREAM_CMD;
            so.Consumer = name;
            jsErrCode jerr = 0;
            if (js_PullSubscribe(&w->sub, m->js, filter, name, NULL, &so, &jerr) != NATS_OK) {
                w->sub = NULL;
                nap(m, 1000);
                continue;
            }
        }
        natsMsgList list = {0};
        natsStatus s = fetch(w, &list);
        if (s == NATS_OK && list.Count > 0) {
            if (w->is_read) {
                for (int i = 0; i < list.Count; i++)
                    process_read(w, list.Msgs[i]);
            } else {
                process_sends(w, &list);
            }
            if (store_ok(w->st) != 0)
                lose_db(w);
        } else if (s != NATS_TIMEOUT && s != NATS_OK) {
            nap(m, 200); /* NATS away: the connection reconnects by itself */
        }
        natsMsgList_Destroy(&list);
    }
    if (w->sub) {
        natsSubscription_Destroy(w->sub); /* not Unsubscribe: the durable stays */
        w->sub = NULL;
    }
    if (w->owned)
        atomic_fetch_sub(&m->owned_count, 1);
    store_close(w->st);
    return NULL;
}

/* ---------- history ---------- */

static void on_history(natsConnection *nc, natsSubscription *sub, natsMsg *nm, void *closure)
{
    (void)sub;
    struct messaging *m = closure;
    const char *reply = natsMsg_GetReply(nm);
    Chat__V1__HistoryQuery *q = chat__v1__history_query__unpack(NULL, (size_t)natsMsg_GetDataLength(nm),
                                                                (const uint8_t *)natsMsg_GetData(nm));
    Chat__V1__MessageList list = CHAT__V1__MESSAGE_LIST__INIT;
    Chat__V1__Error err = CHAT__V1__ERROR__INIT;
    struct store_row *rows = NULL;
    int n = 0;
    char user[IDS_UUID_LEN + 1], with[IDS_UUID_LEN + 1], before[IDS_UUID_LEN + 1] = "";
    if (!reply || !q || ids_uuid_norm(user, q->user_id, strlen(q->user_id)) ||
        ids_uuid_norm(with, q->with_user_id, strlen(q->with_user_id)) ||
        (*q->before_id && ids_uuid_norm(before, q->before_id, strlen(q->before_id)))) {
        err.code = "bad_request";
        err.message = "invalid history query";
        list.error = &err;
    } else {
        int limit = q->limit < 1 ? 50 : q->limit > HISTORY_MAX ? HISTORY_MAX : (int)q->limit;
        pthread_mutex_lock(&m->query_mu);
        if (store_ok(m->query_st) != 0) {
            store_close(m->query_st);
            m->query_st = store_open(m->cfg->database_url, m->app);
        }
        n = m->query_st ? store_history(m->query_st, user, with, before, limit, &rows) : -1;
        pthread_mutex_unlock(&m->query_mu);
        if (n < 0) {
            n = 0;
            err.code = "unavailable";
            err.message = "the message store is unavailable; try again";
            list.error = &err;
        }
    }
    Chat__V1__Message *msgs = xcalloc((size_t)(n ? n : 1), sizeof *msgs);
    Chat__V1__Message **ptrs = xcalloc((size_t)(n ? n : 1), sizeof *ptrs);
    for (int i = 0; i < n; i++) {
        message_from_row(&msgs[i], &rows[i]);
        ptrs[i] = &msgs[i];
    }
    list.n_messages = (size_t)n;
    list.messages = ptrs;
    if (reply) {
        size_t len = chat__v1__message_list__get_packed_size(&list);
        uint8_t *buf = xmalloc(len);
        chat__v1__message_list__pack(&list, buf);
        natsConnection_Publish(nc, reply, buf, (int)len);
        free(buf);
    }
    store_rows_cleanup(rows, n);
    free(rows);
    free(msgs);
    free(ptrs);
    chat__v1__history_query__free_unpacked(q, NULL);
    natsMsg_Destroy(nm);
}

int messaging_healthy(void *closure)
{
    struct messaging *m = closure;
    pthread_mutex_lock(&m->setup_mu);
    int ready = m->setup_done;
    pthread_mutex_unlock(&m->setup_mu);
    int ok = bus_connected(m->bus) && ready && atomic_load(&m->db_up);
    metrics_set("chat_messaging_partitions_owned", NULL, atomic_load(&m->owned_count));
    metrics_set("chat_messaging_nats_connected", NULL, bus_connected(m->bus));
    metrics_set("chat_messaging_postgres_up", NULL, atomic_load(&m->db_up));
    return ok;
}

/* ---------- lifecycle ---------- */

struct messaging *messaging_start(const struct messaging_config *cfg, struct bus *bus)
{
    struct messaging *m = xcalloc(1, sizeof *m);
    char replica[13];
    ids_random(replica, 12);
    snprintf(m->app, sizeof m->app, APP_PREFIX "%s", replica);
    m->cfg = cfg;
    m->bus = bus;
    atomic_init(&m->fair_share, (int)cfg->partitions);
    pthread_mutex_init(&m->setup_mu, NULL);
    pthread_mutex_init(&m->query_mu, NULL);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    jo.PublishAsync.MaxPending = 65536;
    if (natsConnection_JetStream(&m->js, bus->nc, &jo) != NATS_OK) {
        log_error("jetstream context failed");
        free(m);
        return NULL;
    }
    natsConnection_QueueSubscribe(&m->query_sub, bus->nc, SUBJ_QUERY_MESSAGES, QUEUE_MESSAGING, on_history,
                                  m);
    m->nworkers = (int)cfg->partitions + 1;
    m->workers = xcalloc((size_t)m->nworkers, sizeof *m->workers);
    for (int i = 0; i < m->nworkers; i++) {
        struct worker *w = &m->workers[i];
        w->m = m;
        w->is_read = i == (int)cfg->partitions;
        w->partition = (unsigned)i;
        pthread_create(&w->thread, NULL, worker_main, w);
    }
    log_info("replica %s started", m->app);
    return m;
}

void messaging_stop(struct messaging *m)
{
    if (!m)
        return;
    atomic_store(&m->stopping, 1);
    for (int i = 0; i < m->nworkers; i++)
        pthread_join(m->workers[i].thread, NULL);
    if (m->query_sub) {
        natsSubscription_Unsubscribe(m->query_sub);
        natsSubscription_Destroy(m->query_sub);
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 1000; /* bounded: NATS may be gone */
    js_PublishAsyncComplete(m->js, &po);
    jsCtx_Destroy(m->js);
    store_close(m->query_st);
    pthread_mutex_destroy(&m->setup_mu);
    pthread_mutex_destroy(&m->query_mu);
    free(m->workers);
    free(m);
}
