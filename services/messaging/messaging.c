/* messaging: see messaging.h. Threads: one worker per partition, one for read
 * receipts (which also counts the replicas), and history.c's pool for the
 * history queries. */
#include "messaging.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat.pb-c.h"
#include "guard.h"
#include "history.h"
#include "ids.h"
#include "log.h"
#include "mem.h"
#include "msgtype.h"
#include "metrics.h"
#include "store.h"
#include "streams.h"
#include "subjects.h"

#define APP_PREFIX "chat-messaging/"
#define HISTORY_TIMEOUT_MS 5000 /* a query that says none: the edge's request timeout */
#define READ_CONSUMER "messaging-read"
#define PRUNE_EVERY_MS 3600000

struct worker {
    struct messaging *m;
    int is_read;        /* the read-receipt worker */
    unsigned partition; /* send workers */
    pthread_t thread;
    struct store *st;
    int owned; /* holds the partition's lock */
    natsSubscription *sub;
    long long last_us; /* last created_at given: strictly increasing */
    jsCtx *js;         /* its own: it waits for its own records (records_wait) */
    atomic_int records_failed;
    int unwaited;    /* read worker: records published since the last records_wait */
    int wait_failed; /* read worker: a records_wait of this batch failed */
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
    struct history_config history_cfg;
    struct history *history;
    struct guard *guard; /* known recipients and send quotas */
};

/* How long a worker waits for JetStream to store its records. */
#define RECORDS_WAIT_MS 2000
/* The read worker waits for its records every this many: a conversation:read
 * may mark thousands of messages, each one record. */
#define READ_RECORDS_CHUNK 4096

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
        if (bus_connected(m->bus) && streams_ensure(m->js, &m->cfg->streams) == 0 && store_migrate(st) == 0) {
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

/* The record of a stored event in CHAT_EVENTS (subjects.h): what the edges
 * deliver to the sockets of both users, and what other teams tap. Published
 * without waiting, with an id as Nats-Msg-Id so that a redelivered command
 * does not record twice within the duplicate window; records_wait then waits
 * for all of a batch. */
static void publish_record(struct worker *w, const char *subject, const char *msg_id,
                           const ProtobufCMessage *p)
{
    natsStatus s = bus_js_publish(w->js, subject, msg_id, 0, p);
    if (s != NATS_OK) {
        log_warn("record publish failed subject=%s: %s", subject, natsStatus_GetText(s));
        atomic_fetch_add(&w->records_failed, 1);
    }
}

/* JetStream refused a record (the closure: its worker). */
static void on_record_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    (void)js;
    struct worker *w = closure;
    log_warn("record not stored subject=%s: %s", natsMsg_GetSubject(pae->Msg),
             pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err));
    atomic_fetch_add(&w->records_failed, 1);
}

/* The worker's own JetStream context, for its records. Returns 0 or -1. */
static int records_context(struct worker *w)
{
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    jo.PublishAsync.MaxPending = 65536;
    jo.PublishAsync.ErrHandler = on_record_error;
    jo.PublishAsync.ErrHandlerClosure = w;
    return natsConnection_JetStream(&w->js, w->m->bus->nc, &jo) == NATS_OK ? 0 : -1;
}

/* Waits until JetStream has answered for every record published since the
 * last call. Returns 0 when it stored them all, -1 otherwise: the commands
 * are then given back to JetStream, and their redelivery records them again
 * (the same Nats-Msg-Id: at most once each). */
static int records_wait(struct worker *w)
{
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = RECORDS_WAIT_MS;
    natsStatus s = js_PublishAsyncComplete(w->js, &po);
    int failed = atomic_exchange(&w->records_failed, 0);
    if (s != NATS_OK || failed) {
        log_warn("records not stored: %d refused, %s", failed, natsStatus_GetText(s));
        metrics_add("chat_messaging_record_failures_total", NULL, 1);
        if (s != NATS_OK) {
            /* A publication whose answer died with a nats-server stays
             * pending in its context for ever (nats.c 3.4.1 has no timeout
             * for them): every later wait would time out too. A new context
             * starts with nothing pending. */
            jsCtx_Destroy(w->js);
            w->js = NULL;
            if (records_context(w) != 0)
                log_error("jetstream context failed");
        }
        return -1;
    }
    return 0;
}

/* The outcome for the client's socket (its ack, or chat:error). Successes
 * without an ack request need no message: message:sent tells all devices.
 * retry_ms > 0: when a refused command may be sent again (rate_limited). */
static void publish_result(struct messaging *m, const Chat__V1__Origin *origin, const char *event,
                           Chat__V1__Message *msg, const char *err_code, const char *err_text,
                           long long retry_ms)
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
        e.retry_after_ms = retry_ms;
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

/* One fetched batch of a partition: its first k entries are the valid
 * commands, in stream order. */
struct batch {
    int n, k;
    Chat__V1__SendMessage **cmds;
    natsMsg **msgs;
    struct store_msg *in;
    struct store_row *out;       /* each command's stored row, when found */
    enum guard_verdict *verdict; /* what guard_check said */
    long long *retry_ms;         /* GUARD_QUOTA: when to try again */
    int *later;                  /* 1: given back to JetStream, decided later */
};

/* createdAt: when JetStream stored the command (stream order). A tie with
 * the previous one (µs resolution) is broken forward; an older one (a
 * redelivery after a fail-over) keeps its own time, so history stays in
 * send order. */
static long long created_us(struct worker *w, natsMsg *nm)
{
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
    return us;
}

/* Unpacks the batch; an invalid command is answered and terminated here. */
static void batch_decode(struct worker *w, natsMsgList *list, struct batch *b)
{
    size_t n = (size_t)list->Count;
    *b = (struct batch){.n = (int)n};
    b->cmds = xcalloc(n, sizeof *b->cmds);
    b->msgs = xcalloc(n, sizeof *b->msgs);
    b->in = xcalloc(n, sizeof *b->in);
    b->out = xcalloc(n, sizeof *b->out);
    b->verdict = xcalloc(n, sizeof *b->verdict);
    b->retry_ms = xcalloc(n, sizeof *b->retry_ms);
    b->later = xcalloc(n, sizeof *b->later);
    for (int i = 0; i < list->Count; i++) {
        natsMsg *nm = list->Msgs[i];
        Chat__V1__SendMessage *c = chat__v1__send_message__unpack(NULL, (size_t)natsMsg_GetDataLength(nm),
                                                                  (const uint8_t *)natsMsg_GetData(nm));
        if (!c || !send_valid(c)) {
            log_warn("dropping an invalid send command subject=%s", natsMsg_GetSubject(nm));
            if (c)
                publish_result(w->m, c->origin, "message:send", NULL, "bad_request", "invalid message", 0);
            chat__v1__send_message__free_unpacked(c, NULL);
            natsMsg_Term(nm, NULL);
            continue;
        }
        const Chat__V1__Message *msg = c->message;
        b->cmds[b->k] = c;
        b->msgs[b->k] = nm;
        b->in[b->k] = (struct store_msg){
            msg->id,      msg->sender_id,         msg->recipient_id, msgtype_name(msg->type),
            msg->content, msg->client_message_id, created_us(w, nm)};
        b->k++;
    }
}

static void batch_cleanup(struct batch *b)
{
    store_rows_cleanup(b->out, b->n);
    for (int i = 0; i < b->n; i++)
        chat__v1__send_message__free_unpacked(b->cmds[i], NULL);
    free(b->cmds);
    free(b->msgs);
    free(b->in);
    free(b->out);
    free(b->verdict);
    free(b->retry_ms);
    free(b->later);
}

/* Inserts the commands the guard let through (one statement) and reads back
 * the refused ones, which may be stored already (a resend with a known
 * client message id, a redelivery): those are answered as stored, not
 * refused. Fills b->out. Returns -1 when the INSERT failed: nothing is
 * stored and nothing stays charged. */
static int store_guarded(struct worker *w, struct batch *b, long long now)
{
    int *idx = xcalloc((size_t)b->k, sizeof *idx), nok = 0;
    struct store_msg *sub = xcalloc((size_t)b->k, sizeof *sub);
    struct store_row *rows = xcalloc((size_t)b->k, sizeof *rows);
    char day[11];
    int rc = 0;
    for (int i = 0; i < b->k; i++)
        if (b->verdict[i] == GUARD_OK) {
            idx[nok] = i;
            sub[nok++] = b->in[i];
        }
    if (nok > 0 && store_insert_batch(w->st, sub, nok, guard_count_day(w->m->guard, now, day), rows) != 0) {
        for (int j = 0; j < nok; j++)
            guard_refund(w->m->guard, w->partition, sub[j].sender, now);
        rc = -1;
        goto out;
    }
    for (int j = 0; j < nok; j++) {
        b->out[idx[j]] = rows[j];
        if (!rows[j].inserted)
            guard_refund(w->m->guard, w->partition, sub[j].sender, now);
    }
    int nref = 0;
    for (int i = 0; i < b->k; i++)
        if (b->verdict[i] != GUARD_OK) {
            idx[nref] = i;
            sub[nref++] = b->in[i];
        }
    memset(rows, 0, sizeof *rows * (size_t)b->k);
    int found = nref > 0 ? store_find_batch(w->st, sub, nref, rows) : 0;
    for (int j = 0; j < nref; j++) {
        b->later[idx[j]] = found != 0; /* not known whether it is stored: decided on redelivery */
        b->out[idx[j]] = rows[j];
    }
out:
    free(idx);
    free(sub);
    free(rows);
    return rc;
}

/* The record of a stored message (message:received for the recipient,
 * message:sent for the sender's sockets). A resend with a known client
 * message id has its record already: the first one's. Returns 1 when it
 * published one. */
static int record_stored(struct worker *w, struct batch *b, int i)
{
    struct store_row *row = &b->out[i];
    if (strcmp(row->id, b->in[i].id) != 0)
        return 0;
    Chat__V1__Message msg;
    message_from_row(&msg, row);
    char subj[160];
    snprintf(subj, sizeof subj, SUBJ_EVENT_CREATED_FMT, row->sender, row->recipient);
    publish_record(w, subj, row->id, &msg.base);
    return 1;
}

/* Ack to the client, JetStream ack: for a stored message whose record is
 * stored. */
static void answer_stored(struct worker *w, struct batch *b, int i)
{
    struct store_row *row = &b->out[i];
    Chat__V1__Message msg;
    message_from_row(&msg, row);
    publish_result(w->m, b->cmds[i]->origin, "message:send", &msg, NULL, NULL, 0);
    natsMsg_Ack(b->msgs[i], NULL);
    if (row->inserted)
        metrics_add("chat_messaging_messages_stored_total", NULL, 1);
}

/* A refused send: not stored, not delivered; the client is told why. */
static void publish_refused(struct worker *w, struct batch *b, int i)
{
    if (b->verdict[i] == GUARD_UNKNOWN_RECIPIENT) {
        metrics_add("chat_messaging_sends_refused_total", "reason=\"unknown_recipient\"", 1);
        publish_result(w->m, b->cmds[i]->origin, "message:send", NULL, "not_found", "no such user", 0);
    } else {
        metrics_add("chat_messaging_sends_refused_total", "reason=\"quota\"", 1);
        publish_result(w->m, b->cmds[i]->origin, "message:send", NULL, "rate_limited",
                       "send quota used up: try again later", b->retry_ms[i]);
    }
    natsMsg_Ack(b->msgs[i], NULL);
}

/* Checks, stores one fetched batch of a partition, and publishes what
 * follows, in stream order. */
static void process_sends(struct worker *w, natsMsgList *list)
{
    struct batch b;
    batch_decode(w, list, &b);
    long long t0 = now_ms();
    int failed = b.k > 0 &&
                 (guard_check(w->m->guard, w->partition, w->st, b.in, b.k, t0, b.verdict, b.retry_ms) != 0 ||
                  store_guarded(w, &b, t0) != 0);
    if (failed) {
        metrics_add("chat_messaging_batch_failures_total", NULL, 1);
        /* Nothing is stored; JetStream gives the batch back (to this replica
         * once PostgreSQL is back, or to the next owner of the partition). */
        for (int i = 0; i < b.k; i++)
            natsMsg_NakWithDelay(b.msgs[i], store_ok(w->st) == 0 ? 1000 : 0, NULL);
    }
    /* Records first, all of them stored, then the answers: once a client
     * has its ack, the edges deliver the message from the record, even
     * after a crash of this replica or of nats-server. */
    int records = 0;
    for (int i = 0; i < b.k && !failed; i++)
        if (b.out[i].found)
            records += record_stored(w, &b, i);
    int unrecorded = records > 0 && records_wait(w) != 0;
    for (int i = 0; i < b.k && !failed; i++) {
        if (b.out[i].found && unrecorded)
            natsMsg_NakWithDelay(b.msgs[i], 1000, NULL);
        else if (b.out[i].found)
            answer_stored(w, &b, i);
        else if (b.verdict[i] == GUARD_OK || b.later[i])
            natsMsg_NakWithDelay(b.msgs[i], 1000, NULL);
        else
            publish_refused(w, &b, i);
    }
    if (b.k > 0 && !failed) {
        log_debug("stored batch partition=%u size=%d", w->partition, b.k);
        metrics_add("chat_messaging_batches_total", NULL, 1);
        metrics_add("chat_messaging_batch_size_sum", NULL, b.k);
        metrics_add("chat_messaging_batch_seconds_sum", NULL, (double)(now_ms() - t0) / 1000.0);
    }
    batch_cleanup(&b);
}

/* ---------- reads ---------- */

/* When JetStream stored this command (Unix ms) if it delivered it before,
 * else 0. */
static long long redelivered_at(natsMsg *nm)
{
    jsMsgMetaData *meta = NULL;
    long long at = 0;
    if (natsMsg_GetMetaData(&meta, nm) == NATS_OK && meta->NumDelivered > 1)
        at = meta->Timestamp / 1000000;
    jsMsgMetaData_Destroy(meta);
    return at;
}

/* The record of one receipt (message:read for the sender's sockets); the
 * read worker waits for them every READ_RECORDS_CHUNK. */
static void record_receipt(struct worker *w, const char *message_id, const char *sender, const char *reader,
                           long long read_ms)
{
    Chat__V1__ReadReceipt rr = CHAT__V1__READ_RECEIPT__INIT;
    rr.message_id = (char *)message_id;
    rr.sender_id = (char *)sender;
    rr.reader_id = (char *)reader;
    rr.read_at_ms = read_ms;
    char subj[160], rec_id[48];
    snprintf(subj, sizeof subj, SUBJ_EVENT_READ_FMT, sender, reader);
    snprintf(rec_id, sizeof rec_id, "read:%s", message_id);
    publish_record(w, subj, rec_id, &rr.base);
    if (++w->unwaited >= READ_RECORDS_CHUNK) {
        if (records_wait(w) != 0)
            w->wait_failed = 1;
        w->unwaited = 0;
    }
}

/* conversation:read: every unread message of with to the reader up to
 * up_to, in one statement, then one record per message marked, in message
 * order, with the same Nats-Msg-Id as message:read's ("read:<id>"). A
 * redelivery records again what the range has read since the command was
 * stored (a first try may have died after the mark, before its records were
 * stored; the duplicate window drops the copies of those that were). */
static enum store_read process_conv_read(struct worker *w, natsMsg *nm, const Chat__V1__MarkRead *c,
                                         const char *reader)
{
    char with[IDS_UUID_LEN + 1], up_to[IDS_UUID_LEN + 1];
    if (ids_uuid_norm(with, c->with_user_id, strlen(c->with_user_id)) ||
        ids_uuid_norm(up_to, c->up_to_id, strlen(c->up_to_id))) {
        log_warn("dropping an invalid conversation read command");
        natsMsg_Term(nm, NULL);
        return STORE_READ_ERROR;
    }
    struct store_receipt *rs = NULL;
    int n = 0;
    enum store_read r = store_mark_conversation_read(w->st, reader, with, up_to, redelivered_at(nm), &rs, &n);
    if (r == STORE_READ_ERROR) {
        natsMsg_NakWithDelay(nm, 1000, NULL);
        return r;
    }
    metrics_add("chat_messaging_reads_total", NULL, n);
    for (int i = 0; i < n; i++)
        record_receipt(w, rs[i].id, with, reader, rs[i].read_ms);
    free(rs);
    return r;
}

/* One read command: stored, and its record published (the receipt for the
 * sender's sockets). Returns what its answer will be; STORE_READ_ERROR: given
 * back to JetStream already. A message read before (STORE_READ_ALREADY) is
 * recorded again only when the command is a redelivery, with the same
 * Nats-Msg-Id and the first read time: a replica that died between the mark
 * and the record leaves it to the next delivery (JetStream's duplicate window
 * drops the copy of one that was stored); a second mark by the client is not
 * a new receipt. */
static enum store_read process_read(struct worker *w, natsMsg *nm, Chat__V1__MarkRead **cmd)
{
    Chat__V1__MarkRead *c = chat__v1__mark_read__unpack(NULL, (size_t)natsMsg_GetDataLength(nm),
                                                        (const uint8_t *)natsMsg_GetData(nm));
    char id[IDS_UUID_LEN + 1], reader[IDS_UUID_LEN + 1], sender[IDS_UUID_LEN + 1];
    *cmd = c;
    if (c && *c->with_user_id && ids_uuid_norm(reader, c->reader_id, strlen(c->reader_id)) == 0)
        return process_conv_read(w, nm, c, reader);
    if (!c || ids_uuid_norm(id, c->message_id, strlen(c->message_id)) ||
        ids_uuid_norm(reader, c->reader_id, strlen(c->reader_id))) {
        log_warn("dropping an invalid read command");
        natsMsg_Term(nm, NULL);
        return STORE_READ_ERROR;
    }
    long long read_ms = 0;
    enum store_read r = store_mark_read(w->st, id, reader, sender, &read_ms);
    if (r == STORE_READ_ERROR) {
        natsMsg_NakWithDelay(nm, 1000, NULL);
        return r;
    }
    if (r == STORE_READ_OK || (r == STORE_READ_ALREADY && redelivered_at(nm))) {
        if (r == STORE_READ_OK)
            metrics_add("chat_messaging_reads_total", NULL, 1);
        record_receipt(w, id, sender, reader, read_ms);
    }
    return r;
}

/* A fetched batch of read commands: marked, their records stored, then
 * answered. */
static void process_reads(struct worker *w, natsMsgList *list)
{
    struct messaging *m = w->m;
    enum store_read *r = xcalloc((size_t)list->Count, sizeof *r);
    Chat__V1__MarkRead **cmds = xcalloc((size_t)list->Count, sizeof *cmds);
    w->unwaited = 0;
    w->wait_failed = 0;
    for (int i = 0; i < list->Count; i++)
        r[i] = process_read(w, list->Msgs[i], &cmds[i]);
    int unrecorded = (w->unwaited > 0 && records_wait(w) != 0) || w->wait_failed;
    w->unwaited = 0;
    w->wait_failed = 0;
    for (int i = 0; i < list->Count; i++) {
        const Chat__V1__Origin *o = cmds[i] ? cmds[i]->origin : NULL;
        const char *event = cmds[i] && *cmds[i]->with_user_id ? "conversation:read" : "message:read";
        switch (r[i]) {
        case STORE_READ_OK:
        case STORE_READ_ALREADY:
            if (unrecorded) {
                natsMsg_NakWithDelay(list->Msgs[i], 1000, NULL);
                break;
            }
            publish_result(m, o, event, NULL, NULL, NULL, 0);
            natsMsg_Ack(list->Msgs[i], NULL);
            break;
        case STORE_READ_NOT_FOUND:
            publish_result(
                m, o, event, NULL, "not_found",
                *cmds[i]->with_user_id ? "no such message in this conversation" : "no such message", 0);
            natsMsg_Ack(list->Msgs[i], NULL);
            break;
        case STORE_READ_FORBIDDEN:
            publish_result(m, o, event, NULL, "forbidden", "only the recipient can mark it read", 0);
            natsMsg_Ack(list->Msgs[i], NULL);
            break;
        case STORE_READ_ERROR:
            break; /* given back, or terminated */
        }
        chat__v1__mark_read__free_unpacked(cmds[i], NULL);
    }
    free(r);
    free(cmds);
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
        guard_taken(m->guard, w->partition);
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

/* The per-day send counts of days before yesterday are of no use: dropped
 * by the read worker now and then (any replica may; it is idempotent). */
static void prune_quota(struct worker *w)
{
    char day[11];
    if (guard_count_day(w->m->guard, now_ms(), day))
        store_prune_quota(w->st, day);
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
    long long next_count = 0, next_prune = 0;
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
        if (w->is_read && now_ms() >= next_prune) {
            prune_quota(w);
            next_prune = now_ms() + PRUNE_EVERY_MS;
        }
        if (!own(w)) {
            nap(m, 500);
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
                process_reads(w, &list);
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
    /* Not unsubscribed: the durable stays. Freed after the connection closes
     * (a pull request's late answer may be arriving). */
    bus_sub_retire(m->bus, &w->sub, 0);
    if (w->owned)
        atomic_fetch_sub(&m->owned_count, 1);
    store_close(w->st);
    return NULL;
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
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    jo.PublishAsync.MaxPending = 65536;
    if (natsConnection_JetStream(&m->js, bus->nc, &jo) != NATS_OK) {
        log_error("jetstream context failed");
        free(m);
        return NULL;
    }
    m->history_cfg = (struct history_config){.database_url = cfg->database_url,
                                             .app = m->app,
                                             .conns = cfg->history_conns,
                                             .queue = cfg->history_queue,
                                             .per_user = cfg->history_per_user,
                                             .per_s = cfg->history_per_s,
                                             .timeout_ms = HISTORY_TIMEOUT_MS};
    if (!(m->history = history_start(&m->history_cfg, bus->nc))) {
        jsCtx_Destroy(m->js);
        pthread_mutex_destroy(&m->setup_mu);
        free(m);
        return NULL;
    }
    struct guard_config gc = {(int)cfg->require_known_recipient, cfg->sends_per_min, cfg->sends_per_day};
    m->guard = guard_create(&gc, (unsigned)cfg->partitions);
    m->nworkers = (int)cfg->partitions + 1;
    m->workers = xcalloc((size_t)m->nworkers, sizeof *m->workers);
    for (int i = 0; i < m->nworkers; i++) {
        struct worker *w = &m->workers[i];
        w->m = m;
        w->is_read = i == (int)cfg->partitions;
        w->partition = (unsigned)i;
        if (records_context(w) != 0)
            abort(); /* only fails out of memory */
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
    history_stop(m->history);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 1000; /* bounded: NATS may be gone */
    for (int i = 0; i < m->nworkers; i++) {
        pthread_join(m->workers[i].thread, NULL);
        js_PublishAsyncComplete(m->workers[i].js, &po);
        jsCtx_Destroy(m->workers[i].js);
    }
    jsCtx_Destroy(m->js);
    guard_destroy(m->guard);
    pthread_mutex_destroy(&m->setup_mu);
    free(m->workers);
    free(m);
}
