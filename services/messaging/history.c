/* history: see history.h. One history query used to hold nats.c's delivery
 * thread and the replica's one query connection for its whole run, from an
 * unbounded backlog: one user paging a long conversation from many sockets
 * made everyone else's history time out for minutes. Here the callback
 * returns at once, and the backlog is bounded, fair and cut at the asker's
 * deadline. */
#include "history.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bucket.h"
#include "chat.pb-c.h"
#include "histq.h"
#include "ids.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "msgtype.h"
#include "store.h"
#include "subjects.h"

#define HISTORY_MAX 100
#define HISTORY_DEFAULT 50
#define CONVERSATIONS_MAX 50
#define CONVERSATIONS_DEFAULT 20
#define PARTNERS_MAX 1000
/* A query still running this long is cancelled by PostgreSQL: the edge has
 * answered "unavailable" by then (its request timeout is 5 s). */
#define STATEMENT_TIMEOUT_MS 5000

enum hkind { HQ_HISTORY, HQ_CONVERSATIONS };

struct hquery {
    enum hkind kind;
    char *reply;
    /* HQ_HISTORY: with, before (a message id); HQ_CONVERSATIONS: before
     * (the other user of the keyset, "" for the first page) and before_us. */
    char user[IDS_UUID_LEN + 1], with[IDS_UUID_LEN + 1], before[IDS_UUID_LEN + 1];
    long long before_us;
    int limit;
    int partners;          /* HQ_CONVERSATIONS: only the other users' ids */
    long long deadline_ms; /* CLOCK_MONOTONIC: the asker gives up then */
};

struct hworker {
    struct history *h;
    pthread_t thread;
    struct store *st; /* this worker's own connection */
};

struct history {
    const struct history_config *cfg;
    natsConnection *nc;
    natsSubscription *sub;
    natsSubscription *conv_sub;
    pthread_mutex_t mu; /* guards q and stopping */
    pthread_cond_t cv;  /* a query was queued, or stopping */
    struct histq *q;
    int stopping;
    struct hworker *workers;
    int nworkers;
};

static long long mono_ms(void)
{
    return bucket_now_us() / 1000;
}

static void hquery_free(struct hquery *hq)
{
    if (hq)
        free(hq->reply);
    free(hq);
}

/* ---------- replies ---------- */

static void publish_list(natsConnection *nc, const char *reply, Chat__V1__MessageList *list)
{
    size_t len = chat__v1__message_list__get_packed_size(list);
    uint8_t *buf = xmalloc(len ? len : 1);
    chat__v1__message_list__pack(list, buf);
    natsStatus s = natsConnection_Publish(nc, reply, buf, (int)len);
    if (s != NATS_OK) /* e.g. a page over NATS's max_payload: the edge times out */
        log_warn("history reply not sent bytes=%zu: %s", len, natsStatus_GetText(s));
    free(buf);
}

static void reply_error(natsConnection *nc, const char *reply, const char *code, const char *text,
                        long long retry_ms)
{
    Chat__V1__MessageList list = CHAT__V1__MESSAGE_LIST__INIT;
    Chat__V1__Error err = CHAT__V1__ERROR__INIT;
    err.code = (char *)code;
    err.message = (char *)text;
    err.retry_after_ms = retry_ms;
    list.error = &err;
    publish_list(nc, reply, &list);
}

static void publish_conv_list(natsConnection *nc, const char *reply, Chat__V1__ConversationList *list)
{
    size_t len = chat__v1__conversation_list__get_packed_size(list);
    uint8_t *buf = xmalloc(len ? len : 1);
    chat__v1__conversation_list__pack(list, buf);
    natsStatus s = natsConnection_Publish(nc, reply, buf, (int)len);
    if (s != NATS_OK)
        log_warn("conversations reply not sent bytes=%zu: %s", len, natsStatus_GetText(s));
    free(buf);
}

/* The error of either kind of query. */
static void reply_error_kind(natsConnection *nc, const struct hquery *hq, const char *code, const char *text,
                             long long retry_ms)
{
    if (hq->kind == HQ_HISTORY) {
        reply_error(nc, hq->reply, code, text, retry_ms);
        return;
    }
    Chat__V1__ConversationList list = CHAT__V1__CONVERSATION_LIST__INIT;
    Chat__V1__Error err = CHAT__V1__ERROR__INIT;
    err.code = (char *)code;
    err.message = (char *)text;
    err.retry_after_ms = retry_ms;
    list.error = &err;
    publish_conv_list(nc, hq->reply, &list);
}

static void message_from(Chat__V1__Message *m, struct store_row *row)
{
    chat__v1__message__init(m);
    m->id = row->id;
    m->sender_id = row->sender;
    m->recipient_id = row->recipient;
    m->type = msgtype_parse(row->type);
    m->content = row->content;
    m->client_message_id = row->cmid;
    m->created_at_ms = row->created_ms;
    m->read_at_ms = row->read_ms;
}

/* n rows were read for a page of limit: one more than limit says there is
 * a next page. */
static void reply_convs(natsConnection *nc, const char *reply, struct store_conv *cv, int n, int limit)
{
    Chat__V1__ConversationList list = CHAT__V1__CONVERSATION_LIST__INIT;
    list.more = n > limit;
    if (n > limit)
        n = limit;
    Chat__V1__Conversation *items = xcalloc((size_t)(n ? n : 1), sizeof *items);
    Chat__V1__Conversation **ptrs = xcalloc((size_t)(n ? n : 1), sizeof *ptrs);
    Chat__V1__Message *msgs = xcalloc((size_t)(n ? n : 1), sizeof *msgs);
    for (int i = 0; i < n; i++) {
        chat__v1__conversation__init(&items[i]);
        message_from(&msgs[i], &cv[i].last);
        items[i].with_user_id = cv[i].with;
        items[i].username = cv[i].username;
        items[i].last_message = &msgs[i];
        items[i].unread = cv[i].unread > UINT32_MAX ? UINT32_MAX : (uint32_t)cv[i].unread;
        items[i].last_at_us = cv[i].last_at_us;
        ptrs[i] = &items[i];
    }
    list.n_conversations = (size_t)n;
    list.conversations = ptrs;
    publish_conv_list(nc, reply, &list);
    free(items);
    free(ptrs);
    free(msgs);
}

/* The other users of a partners_only query: conversations with with_user_id alone. */
static void reply_partners(natsConnection *nc, const char *reply, char (*ids)[IDS_UUID_LEN + 1], int n)
{
    Chat__V1__ConversationList list = CHAT__V1__CONVERSATION_LIST__INIT;
    Chat__V1__Conversation *items = xcalloc((size_t)(n ? n : 1), sizeof *items);
    Chat__V1__Conversation **ptrs = xcalloc((size_t)(n ? n : 1), sizeof *ptrs);
    for (int i = 0; i < n; i++) {
        chat__v1__conversation__init(&items[i]);
        items[i].with_user_id = ids[i];
        ptrs[i] = &items[i];
    }
    list.n_conversations = (size_t)n;
    list.conversations = ptrs;
    publish_conv_list(nc, reply, &list);
    free(items);
    free(ptrs);
}

static void reply_rows(natsConnection *nc, const char *reply, struct store_row *rows, int n)
{
    Chat__V1__MessageList list = CHAT__V1__MESSAGE_LIST__INIT;
    Chat__V1__Message *msgs = xcalloc((size_t)(n ? n : 1), sizeof *msgs);
    Chat__V1__Message **ptrs = xcalloc((size_t)(n ? n : 1), sizeof *ptrs);
    for (int i = 0; i < n; i++) {
        message_from(&msgs[i], &rows[i]);
        ptrs[i] = &msgs[i];
    }
    list.n_messages = (size_t)n;
    list.messages = ptrs;
    publish_list(nc, reply, &list);
    free(msgs);
    free(ptrs);
}

/* ---------- the workers ---------- */

static struct store *connect_store(struct history *h)
{
    struct store *st = store_open(h->cfg->database_url, h->cfg->app);
    if (st && store_statement_timeout(st, STATEMENT_TIMEOUT_MS) != 0) {
        store_close(st);
        st = NULL;
    }
    return st;
}

static void run(struct hworker *w, struct hquery *hq)
{
    struct history *h = w->h;
    if (mono_ms() >= hq->deadline_ms) { /* the asker has answered its client already */
        metrics_add("chat_messaging_history_expired_total", NULL, 1);
        return;
    }
    if (store_ok(w->st) != 0) {
        store_close(w->st);
        w->st = connect_store(h);
    }
    if (hq->kind == HQ_CONVERSATIONS && hq->partners) {
        char(*ids)[IDS_UUID_LEN + 1] = NULL;
        int n = w->st ? store_partners(w->st, hq->user, hq->limit, &ids) : -1;
        if (n < 0) {
            reply_error_kind(h->nc, hq, "unavailable", "the message store is unavailable; try again", 0);
            return;
        }
        reply_partners(h->nc, hq->reply, ids, n);
        metrics_add("chat_messaging_partners_answered_total", NULL, 1);
        free(ids);
        return;
    }
    if (hq->kind == HQ_CONVERSATIONS) {
        struct store_conv *cv = NULL;
        /* One more than asked: whether a next page exists. */
        int n =
            w->st ? store_conversations(w->st, hq->user, hq->before_us, hq->before, hq->limit + 1, &cv) : -1;
        if (n < 0) {
            reply_error_kind(h->nc, hq, "unavailable", "the message store is unavailable; try again", 0);
            return;
        }
        reply_convs(h->nc, hq->reply, cv, n, hq->limit);
        metrics_add("chat_messaging_conversations_answered_total", NULL, 1);
        store_convs_cleanup(cv, n);
        free(cv);
        return;
    }
    struct store_row *rows = NULL;
    int n = w->st ? store_history(w->st, hq->user, hq->with, hq->before, hq->limit, &rows) : -1;
    if (n < 0) {
        reply_error(h->nc, hq->reply, "unavailable", "the message store is unavailable; try again", 0);
        return;
    }
    reply_rows(h->nc, hq->reply, rows, n);
    metrics_add("chat_messaging_history_answered_total", NULL, 1);
    store_rows_cleanup(rows, n);
    free(rows);
}

static void *worker_main(void *arg)
{
    struct hworker *w = arg;
    struct history *h = w->h;
    for (;;) {
        const char *user = NULL;
        struct hquery *hq = NULL;
        pthread_mutex_lock(&h->mu);
        while (!h->stopping && !(hq = histq_pop(h->q, &user)))
            pthread_cond_wait(&h->cv, &h->mu);
        size_t depth = histq_queued(h->q);
        pthread_mutex_unlock(&h->mu);
        if (!hq)
            break; /* stopping: history_stop answers what is left */
        metrics_set("chat_messaging_history_queue", NULL, (double)depth);
        run(w, hq);
        pthread_mutex_lock(&h->mu);
        histq_done(h->q, user, mono_ms());
        pthread_mutex_unlock(&h->mu);
        hquery_free(hq);
    }
    store_close(w->st);
    w->st = NULL;
    return NULL;
}

/* ---------- the NATS callback: decode, check, queue ---------- */

/* A query as the edge checked it, or NULL when it is not one. */
static struct hquery *parse(const Chat__V1__HistoryQuery *q, const char *reply, long default_timeout_ms)
{
    struct hquery hq = {.kind = HQ_HISTORY};
    if (!q || ids_uuid_norm(hq.user, q->user_id, strlen(q->user_id)) ||
        ids_uuid_norm(hq.with, q->with_user_id, strlen(q->with_user_id)) ||
        (*q->before_id && ids_uuid_norm(hq.before, q->before_id, strlen(q->before_id))))
        return NULL;
    hq.limit = q->limit < 1 ? HISTORY_DEFAULT : q->limit > HISTORY_MAX ? HISTORY_MAX : (int)q->limit;
    hq.deadline_ms = mono_ms() + (q->timeout_ms ? (long long)q->timeout_ms : default_timeout_ms);
    struct hquery *out = xmalloc(sizeof *out);
    *out = hq;
    out->reply = xstrdup(reply);
    return out;
}

/* A conversation query as the edge checked it, or NULL. */
static struct hquery *parse_conv(const Chat__V1__ConversationQuery *q, const char *reply,
                                 long default_timeout_ms)
{
    struct hquery hq = {.kind = HQ_CONVERSATIONS};
    if (!q || ids_uuid_norm(hq.user, q->user_id, strlen(q->user_id)) ||
        (*q->before_with_id && ids_uuid_norm(hq.before, q->before_with_id, strlen(q->before_with_id))) ||
        q->before_at_us < 0)
        return NULL;
    hq.before_us = q->before_at_us;
    hq.partners = q->partners_only;
    int max = hq.partners ? PARTNERS_MAX : CONVERSATIONS_MAX;
    hq.limit = q->limit < 1               ? (hq.partners ? PARTNERS_MAX : CONVERSATIONS_DEFAULT)
               : q->limit > (uint32_t)max ? max
                                          : (int)q->limit;
    hq.deadline_ms = mono_ms() + (q->timeout_ms ? (long long)q->timeout_ms : default_timeout_ms);
    struct hquery *out = xmalloc(sizeof *out);
    *out = hq;
    out->reply = xstrdup(reply);
    return out;
}

static void refuse(struct history *h, struct hquery *hq, enum histq_verdict v, long long retry_ms)
{
    int conv = hq->kind == HQ_CONVERSATIONS;
    switch (v) {
    case HISTQ_USER_RATE:
        metrics_add("chat_messaging_history_refused_total", "reason=\"user_rate\"", 1);
        reply_error_kind(h->nc, hq, "rate_limited",
                         conv ? "too many conversation queries: slow down"
                              : "too many history queries: slow down",
                         retry_ms);
        break;
    case HISTQ_USER_BUSY:
        metrics_add("chat_messaging_history_refused_total", "reason=\"user_busy\"", 1);
        reply_error_kind(h->nc, hq, "rate_limited",
                         conv ? "too many conversation queries waiting for their answer: wait for them"
                              : "too many history queries waiting for their answer: wait for them",
                         0);
        break;
    default:
        metrics_add("chat_messaging_history_refused_total", "reason=\"queue_full\"", 1);
        reply_error_kind(h->nc, hq, "unavailable", "the message store is busy; try again", 0);
        break;
    }
}

static void admit(struct history *h, struct hquery *hq)
{
    long long retry_ms = 0;
    pthread_mutex_lock(&h->mu);
    enum histq_verdict v = h->stopping ? HISTQ_FULL : histq_push(h->q, hq->user, hq, mono_ms(), &retry_ms);
    if (v == HISTQ_OK)
        pthread_cond_signal(&h->cv);
    size_t depth = histq_queued(h->q);
    pthread_mutex_unlock(&h->mu);
    metrics_set("chat_messaging_history_queue", NULL, (double)depth);
    if (v != HISTQ_OK) {
        refuse(h, hq, v, retry_ms);
        hquery_free(hq);
    }
}

static void on_query(natsConnection *nc, natsSubscription *sub, natsMsg *nm, void *closure)
{
    (void)sub;
    struct history *h = closure;
    const char *reply = natsMsg_GetReply(nm);
    Chat__V1__HistoryQuery *q = chat__v1__history_query__unpack(NULL, (size_t)natsMsg_GetDataLength(nm),
                                                                (const uint8_t *)natsMsg_GetData(nm));
    if (reply && *reply) {
        struct hquery *hq = parse(q, reply, h->cfg->timeout_ms);
        if (hq)
            admit(h, hq);
        else
            reply_error(nc, reply, "bad_request", "invalid history query", 0);
    }
    chat__v1__history_query__free_unpacked(q, NULL);
    natsMsg_Destroy(nm);
}

static void on_conv_query(natsConnection *nc, natsSubscription *sub, natsMsg *nm, void *closure)
{
    (void)sub;
    struct history *h = closure;
    const char *reply = natsMsg_GetReply(nm);
    Chat__V1__ConversationQuery *q = chat__v1__conversation_query__unpack(
        NULL, (size_t)natsMsg_GetDataLength(nm), (const uint8_t *)natsMsg_GetData(nm));
    if (reply && *reply) {
        struct hquery *hq = parse_conv(q, reply, h->cfg->timeout_ms);
        if (hq) {
            admit(h, hq);
        } else {
            struct hquery bad = {.kind = HQ_CONVERSATIONS, .reply = (char *)reply};
            reply_error_kind(nc, &bad, "bad_request", "invalid conversation query", 0);
        }
    }
    chat__v1__conversation_query__free_unpacked(q, NULL);
    natsMsg_Destroy(nm);
}

/* ---------- lifecycle ---------- */

static void describe_metrics(void)
{
    metrics_describe("chat_messaging_history_queue", "gauge", "History queries waiting for a worker.");
    metrics_describe("chat_messaging_history_answered_total", "counter",
                     "History queries answered with rows.");
    metrics_describe("chat_messaging_partners_answered_total", "counter",
                     "Partners queries answered (an edge's interest set, PRESENCE_SCOPE=interest).");
    metrics_describe("chat_messaging_conversations_answered_total", "counter",
                     "Conversation list queries answered with rows.");
    metrics_describe("chat_messaging_history_expired_total", "counter",
                     "History and conversation queries dropped unanswered: their asker had given up before a "
                     "worker took them.");
    metrics_describe(
        "chat_messaging_history_refused_total", "counter",
        "History and conversation queries refused at once: queue_full (unavailable), user_busy or user_rate "
        "(rate_limited).");
}

struct history *history_start(const struct history_config *cfg, natsConnection *nc)
{
    struct history *h = xcalloc(1, sizeof *h);
    struct histq_limits lim = {cfg->queue, cfg->per_user, cfg->per_s};
    h->cfg = cfg;
    h->nc = nc;
    h->q = histq_create(&lim);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    describe_metrics();
    metrics_set("chat_messaging_history_queue", NULL, 0);
    h->nworkers = (int)cfg->conns;
    h->workers = xcalloc((size_t)h->nworkers, sizeof *h->workers);
    for (int i = 0; i < h->nworkers; i++) {
        h->workers[i].h = h;
        pthread_create(&h->workers[i].thread, NULL, worker_main, &h->workers[i]);
    }
    natsStatus s =
        natsConnection_QueueSubscribe(&h->sub, nc, SUBJ_QUERY_MESSAGES, QUEUE_MESSAGING, on_query, h);
    if (s != NATS_OK) {
        log_error("subscribe failed subject=%s: %s", SUBJ_QUERY_MESSAGES, natsStatus_GetText(s));
        history_stop(h);
        return NULL;
    }
    s = natsConnection_QueueSubscribe(&h->conv_sub, nc, SUBJ_QUERY_CONVERSATIONS, QUEUE_MESSAGING,
                                      on_conv_query, h);
    if (s != NATS_OK) {
        log_error("subscribe failed subject=%s: %s", SUBJ_QUERY_CONVERSATIONS, natsStatus_GetText(s));
        history_stop(h);
        return NULL;
    }
    return h;
}

void history_stop(struct history *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stopping = 1; /* the callback refuses from now on, the workers leave */
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    /* Drained: no callback runs after this (bounded; NATS may be gone). */
    natsSubscription *subs[] = {h->sub, h->conv_sub};
    int drained[2] = {0, 0};
    for (int i = 0; i < 2; i++)
        if (subs[i] && !(drained[i] = natsSubscription_Drain(subs[i]) == NATS_OK))
            natsSubscription_Unsubscribe(subs[i]);
    for (int i = 0; i < 2; i++)
        if (drained[i])
            natsSubscription_WaitForDrainCompletion(subs[i], 2000);
    for (int i = 0; i < h->nworkers; i++)
        pthread_join(h->workers[i].thread, NULL);
    const char *user;
    struct hquery *hq;
    while ((hq = histq_pop(h->q, &user))) {
        reply_error_kind(h->nc, hq, "unavailable", "the message service is stopping; try again", 0);
        histq_done(h->q, user, mono_ms());
        hquery_free(hq);
    }
    natsSubscription_Destroy(h->sub);
    natsSubscription_Destroy(h->conv_sub);
    histq_destroy(h->q, NULL);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h->workers);
    free(h);
}
