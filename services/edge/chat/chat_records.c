/* chat_records: the stored events, delivered from CHAT_EVENTS
 * (docs/architecture.md §Deliveries). Every edge reads the records of
 * chat.event.message.> through one ordered consumer, in stream order, and
 * writes each to the local sockets of the users it names: the stream
 * sequence is then a position every edge agrees on, which is what a client's
 * recovery offset is (chat_recovery.c). The consumer's thread sets up the
 * streams and the recovery bucket, subscribes after the stream's last record,
 * and after a NATS reconnection subscribes again after the last record it
 * gave the loop: a socket that stays connected misses nothing while
 * nats-server restarts. Records reach the loop through the relay without
 * ever being dropped (relay_push_wait). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat_int.h"
#include "chat_wire.h"
#include "ids.h"
#include "log.h"
#include "metrics.h"
#include "streams.h"
#include "subjects.h"

#define CREATED_PREFIX "chat.event.message.created."
#define RECORDS_HEARTBEAT_NS 1000000000LL
#define READ_PREFIX "chat.event.message.read."

/* A subscription's closure: which one it is, so that a message of one that
 * was replaced is not taken. */
struct records_sub {
    struct chat *c;
    unsigned gen;
};

/* ---------- NATS side ---------- */

static void on_record(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct records_sub *rs = closure;
    struct chat *c = rs->c;
    jsMsgMetaData *meta = NULL;
    if (natsMsg_GetMetaData(&meta, msg) != NATS_OK) {
        natsMsg_Destroy(msg);
        return;
    }
    uint64_t seq = meta->Sequence.Stream;
    jsMsgMetaData_Destroy(meta);
    const char *subj = natsMsg_GetSubject(msg);
    size_t sl = strlen(subj), dl = (size_t)natsMsg_GetDataLength(msg);
    uint8_t *item = xmalloc(sl + 1 + dl);
    memcpy(item, subj, sl + 1);
    memcpy(item + sl + 1, natsMsg_GetData(msg), dl);
    char key[24];
    snprintf(key, sizeof key, "%" PRIu64, seq);
    pthread_mutex_lock(&c->records_mu);
    if (rs->gen == c->records_gen && seq > c->records_pushed &&
        relay_push_wait(c->relay, RELAY_RECORD, key, item, sl + 1 + dl) == 0)
        c->records_pushed = seq;
    pthread_mutex_unlock(&c->records_mu);
    free(item);
    natsMsg_Destroy(msg);
}

static void records_sub_free(void *closure)
{
    free(closure);
}

/* The last sequence of CHAT_EVENTS, or -1. */
static long long stream_last(struct chat *c)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    if (js_GetStreamInfo(&si, c->js_short, STREAM_EVENTS, NULL, &jerr) != NATS_OK)
        return -1;
    long long last = (long long)si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    return last;
}

/* Subscribes after start - 1 (under records_mu). Returns 0 or -1. */
static int subscribe_records(struct chat *c, uint64_t start)
{
    natsSubscription *old = c->records_sub;
    c->records_sub = NULL;
    c->records_gen++;
    bus_sub_retire(c->bus, &old, 1);
    struct records_sub *rs = xcalloc(1, sizeof *rs);
    *rs = (struct records_sub){c, c->records_gen};
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = STREAM_EVENTS;
    so.Ordered = true;
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = start;
    /* An ordered consumer lives on one node (memory, one replica): when that
     * node dies the edge itself may stay connected, and only missed idle
     * heartbeats tell nats.c to make a new one after the last record. Every
     * second (nats.c's default is 5: a 10 s stall). */
    so.Config.Heartbeat = RECORDS_HEARTBEAT_NS;
    jsErrCode jerr = 0;
    natsStatus s =
        js_Subscribe(&c->records_sub, c->js_short, SUBJ_EVENT_MESSAGES, on_record, rs, NULL, &so, &jerr);
    if (s != NATS_OK) {
        log_warn("records consumer not started: %s (code %d)", natsStatus_GetText(s), (int)jerr);
        c->records_sub = NULL;
        free(rs);
        return -1;
    }
    natsSubscription_SetOnCompleteCB(c->records_sub, records_sub_free, rs);
    natsSubscription_SetPendingLimits(c->records_sub, -1, 64 * 1024 * 1024);
    return 0;
}

static void nap_100ms(void)
{
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
}

/* Sets up JetStream (blocking requests: never on the loop), then keeps the
 * consumer subscribed. */
static void *records_main(void *arg)
{
    struct chat *c = arg;
    int started = 0;
    int ensured = 0;
    while (!c->stopped) {
        if (!bus_connected(c->bus) || (!ensured && streams_ensure(c->js_short, NULL) != 0)) {
            nap_100ms();
            continue;
        }
        ensured = 1;
        if (chat_recovery_on(c) && !c->kv && chat_recovery_start(c) != 0) {
            nap_100ms();
            continue;
        }
        pthread_mutex_lock(&c->records_mu);
        if (!started) {
            long long last = stream_last(c);
            if (last >= 0) {
                char key[24];
                snprintf(key, sizeof key, "%lld", last);
                c->records_pushed = (uint64_t)last;
                relay_push_wait(c->relay, RELAY_RECORDS, key, "", 0);
                started = subscribe_records(c, (uint64_t)last + 1) == 0;
                if (started)
                    log_info("records consumer started after sequence %lld", last);
            }
        } else if (c->records_resubscribe) {
            c->records_resubscribe = 0;
            ensured = 0; /* a nats-server that restarted without its store has no streams */
            long long last = stream_last(c);
            if (last >= 0 && (uint64_t)last < c->records_pushed) {
                /* A new stream (a nats-server that lost its store): its
                 * sequences start again, and so does this edge's position. */
                char key[32];
                snprintf(key, sizeof key, "reset:%lld", last);
                log_warn("CHAT_EVENTS ends at %lld, before this edge's position %" PRIu64
                         ": a new stream, followed from there",
                         last, c->records_pushed);
                c->records_pushed = (uint64_t)last;
                relay_push_wait(c->relay, RELAY_RECORDS, key, "", 0);
            }
            if (subscribe_records(c, c->records_pushed + 1) == 0)
                log_info("records consumer subscribed again after sequence %" PRIu64, c->records_pushed);
            else
                c->records_resubscribe = 1;
        }
        if (started && !c->records_resubscribe && !c->stopped) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&c->records_cv, &c->records_mu, &until);
        }
        pthread_mutex_unlock(&c->records_mu);
        if (!started || c->records_resubscribe)
            nap_100ms();
    }
    return NULL;
}

int chat_records_start(struct chat *c)
{
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 1000; /* a stop waits for the thread's request */
    if (natsConnection_JetStream(&c->js_short, c->bus->nc, &jo) != NATS_OK)
        return -1;
    pthread_mutex_init(&c->records_mu, NULL);
    pthread_cond_init(&c->records_cv, NULL);
    c->records_started = pthread_create(&c->records_thread, NULL, records_main, c) == 0;
    return c->records_started ? 0 : -1;
}

void chat_records_reconnected(struct chat *c)
{
    if (!c->records_started)
        return;
    pthread_mutex_lock(&c->records_mu);
    c->records_resubscribe = 1;
    pthread_cond_signal(&c->records_cv);
    pthread_mutex_unlock(&c->records_mu);
}

void chat_records_stop(struct chat *c)
{
    if (!c->records_started)
        return;
    pthread_mutex_lock(&c->records_mu);
    pthread_cond_signal(&c->records_cv);
    pthread_mutex_unlock(&c->records_mu);
    pthread_join(c->records_thread, NULL); /* c->stopped is set: it returns */
    c->records_started = 0;
    bus_sub_retire(c->bus, &c->records_sub, 1);
    pthread_mutex_destroy(&c->records_mu);
    pthread_cond_destroy(&c->records_cv);
}

void chat_records_destroy(struct chat *c)
{
    jsCtx_Destroy(c->js_short);
    c->js_short = NULL;
}

/* ---------- loop side ---------- */

void chat_send_or_hold(struct chat_sock *cs, struct frame *f, uint64_t seq)
{
    if (seq <= cs->skip)
        return; /* recovered from an edge that was ahead of this one: delivered there */
    if (cs->k->state == SOCK_OPEN) {
        sock_send_frame(cs->k, f);
        return;
    }
    if (cs->nheld == CHAT_MAX_HELD) {
        log_warn("too many records held for a connecting socket user=%s: closing it", cs->user->id);
        sock_close_session(cs->k);
        return;
    }
    if (cs->nheld == cs->held_cap) {
        cs->held_cap = cs->held_cap ? cs->held_cap * 2 : 8;
        cs->held = xrealloc(cs->held, cs->held_cap * sizeof *cs->held);
    }
    f->refs++;
    cs->held[cs->nheld++] = (struct held){f, seq};
}

/* The two users a record's subject names (the part after prefix), copied.
 * Returns 0, or -1 when it is not <uuid>.<uuid>. */
static int record_users(const char *rest, char a[IDS_UUID_LEN + 1], char b[IDS_UUID_LEN + 1])
{
    const char *dot = strchr(rest, '.');
    if (!dot || ids_uuid_norm(a, rest, (size_t)(dot - rest)) != 0 ||
        ids_uuid_norm(b, dot + 1, strlen(dot + 1)) != 0)
        return -1;
    return 0;
}

static int emit_delivery(struct chat *c, Chat__V1__Delivery *d, uint64_t seq, chat_emit_fn *emit, void *arg)
{
    struct buf b;
    const char *event;
    char offset[24];
    snprintf(offset, sizeof offset, "%" PRIu64, seq);
    buf_init(&b);
    int r = chat_wire_delivery(&b, d, chat_recovery_on(c) ? offset : NULL, &event);
    if (r == 0) {
        struct frame *f = frame_text(EIO_MESSAGE, b.data, b.len);
        emit(arg, event, f, seq);
        frame_unref(f);
    }
    buf_cleanup(&b);
    return r;
}

int chat_record_events(struct chat *c, const char *user_id, uint64_t seq, const char *subject,
                       const uint8_t *data, size_t len, chat_emit_fn *emit, void *arg)
{
    char a[IDS_UUID_LEN + 1], b[IDS_UUID_LEN + 1];
    Chat__V1__Delivery d = CHAT__V1__DELIVERY__INIT;
    int r = 0;
    if (strncmp(subject, CREATED_PREFIX, sizeof CREATED_PREFIX - 1) == 0) {
        if (record_users(subject + sizeof CREATED_PREFIX - 1, a, b) != 0)
            return -1;
        int to_recipient = strcmp(b, user_id) == 0, to_sender = strcmp(a, user_id) == 0;
        if (!to_recipient && !to_sender)
            return 0;
        Chat__V1__Message *m = chat__v1__message__unpack(NULL, len, data);
        if (!m)
            return -1;
        if (to_recipient) { /* a message to oneself is both */
            d.event_case = CHAT__V1__DELIVERY__EVENT_MESSAGE_RECEIVED;
            d.message_received = m;
            r |= emit_delivery(c, &d, seq, emit, arg);
        }
        if (to_sender) {
            d.event_case = CHAT__V1__DELIVERY__EVENT_MESSAGE_SENT;
            d.message_sent = m;
            r |= emit_delivery(c, &d, seq, emit, arg);
        }
        chat__v1__message__free_unpacked(m, NULL);
    } else if (strncmp(subject, READ_PREFIX, sizeof READ_PREFIX - 1) == 0) {
        if (record_users(subject + sizeof READ_PREFIX - 1, a, b) != 0)
            return -1;
        if (strcmp(a, user_id) != 0) /* the receipt is for the message's sender */
            return 0;
        Chat__V1__ReadReceipt *rr = chat__v1__read_receipt__unpack(NULL, len, data);
        if (!rr)
            return -1;
        d.event_case = CHAT__V1__DELIVERY__EVENT_MESSAGE_READ;
        d.message_read = rr;
        r = emit_delivery(c, &d, seq, emit, arg);
        chat__v1__read_receipt__free_unpacked(rr, NULL);
    }
    return r ? -1 : 0;
}

/* emit for live records: the frame to every socket of the user. */
static void emit_to_user(void *arg, const char *event, struct frame *f, uint64_t seq)
{
    struct chat_user *u = arg;
    chat_count("chat_edge_fanouts_total", "event", event);
    for (struct chat_sock *cs = u->socks; cs; cs = cs->next)
        chat_send_or_hold(cs, f, seq);
}

/* The local user of one side of a record, if any. */
static void deliver_to(struct chat *c, const char *rest, int which, uint64_t seq, const char *subject,
                       const uint8_t *data, size_t len)
{
    char a[IDS_UUID_LEN + 1], b[IDS_UUID_LEN + 1];
    if (record_users(rest, a, b) != 0) {
        log_warn("record with an unexpected subject=%s", subject);
        return;
    }
    const char *id = which == 0 ? a : b;
    if (which == 1 && strcmp(a, b) == 0)
        return; /* a message to oneself: its user had both events already */
    struct chat_user *u = map_get(&c->users, id);
    if (u && chat_record_events(c, id, seq, subject, data, len, emit_to_user, u) != 0)
        log_warn("undecodable record seq=%" PRIu64 " subject=%s", seq, subject);
    if (u) /* PRESENCE_SCOPE=interest: a conversation, followed from now on */
        chat_interest_record(c, u, which == 0 ? b : a);
}

void chat_on_record(struct chat *c, const char *key, const uint8_t *data, size_t len)
{
    uint64_t seq = strtoull(key, NULL, 10);
    const char *subject = (const char *)data;
    size_t sl = strnlen(subject, len);
    if (sl == len || seq <= c->position)
        return; /* a consumer started again may repeat what was delivered */
    c->position = seq;
    const uint8_t *payload = data + sl + 1;
    size_t plen = len - sl - 1;
    if (strncmp(subject, CREATED_PREFIX, sizeof CREATED_PREFIX - 1) == 0) {
        deliver_to(c, subject + sizeof CREATED_PREFIX - 1, 1, seq, subject, payload, plen); /* recipient */
        deliver_to(c, subject + sizeof CREATED_PREFIX - 1, 0, seq, subject, payload, plen); /* sender */
    } else if (strncmp(subject, READ_PREFIX, sizeof READ_PREFIX - 1) == 0) {
        deliver_to(c, subject + sizeof READ_PREFIX - 1, 0, seq, subject, payload, plen);
    }
    metrics_set("chat_edge_records_position", NULL, (double)seq);
}

void chat_on_records_start(struct chat *c, const char *key)
{
    if (strncmp(key, "reset:", 6) == 0) { /* a new stream: its sequences start again */
        c->position = strtoull(key + 6, NULL, 10);
        return;
    }
    uint64_t last = strtoull(key, NULL, 10);
    if (last > c->position)
        c->position = last;
    c->records_ready = 1;
}
