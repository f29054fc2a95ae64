/* chat: seed-socket-handlers.md on top of sock.h. The sender of every relayed
 * signal is the token's user, never a field of the payload. Bad input gets
 * chat:error {event, code, message} (or the ack's error when the client asked
 * for an ack); the connection keeps working. Commands for the services go out
 * on NATS (messages through JetStream); their outcomes come back on
 * chat.edge.<EDGE_ID> or as request replies, and are routed to the socket by
 * its number. */
#include "chat.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "abuse.h"
#include "auth.h"
#include "chat.pb-c.h"
#include "chat_json.h"
#include "chat_valid.h"
#include "chat_wire.h"
#include "edge.h"
#include "ids.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "relay.h"
#include "streams.h"
#include "subjects.h"

#define CONNECT_WAIT_MS 2000 /* longest wait for presence before a CONNECT reply */
#define REQUEST_TIMEOUT_MS 5000

struct chat_user {
    char id[IDS_UUID_LEN + 1];
    natsSubscription *sub;
    struct chat_sock *socks; /* every local socket of the user */
    int nsocks;
};

struct chat_sock {
    struct sock *k;
    struct chat_user *user;
    struct chat_sock *next; /* in user->socks */
    struct chat *chat;
    char num[24];                /* k->num in decimal: key of chat->socks */
    struct abuse_bucket events;  /* EDGE_EVENTS_PER_S */
    long refused_in_row;         /* events refused by the rate limit, in a row */
    struct wheel_timer t_expiry; /* the token's exp */
    char username[];             /* the token's, at most AUTH_MAX_USERNAME bytes */
};

enum req_kind { REQ_CONNECT, REQ_HISTORY, REQ_PRESENCE };

/* A request to a service waiting for its reply (or its timeout). */
struct chat_req {
    struct chat *chat;
    enum req_kind kind;
    char key[24];      /* request number: last token of the reply subject */
    char sock_num[24]; /* the socket it answers */
    int64_t ack_id;
    struct wheel_timer timer;
};

struct chat {
    struct edge *e;
    struct relay *relay;
    jsCtx *js;
    struct map users; /* user id -> struct chat_user */
    struct map socks; /* socket number -> struct chat_sock */
    struct map reqs;  /* request number -> struct chat_req */
    uint64_t next_req;
    natsSubscription *edge_sub, *reply_sub, *status_sub, *resync_sub;
    char edge_subject[128];
    char inbox[64]; /* replies come to <inbox>.<request number> */
    lws_sorted_usec_list_t sul_heartbeat;
    pthread_t streams_thread;
    int streams_started;
    volatile int stopped;
};

/* The one chat instance of the process (the sock_app callbacks have no
 * closure of their own). Atomic: nats.c threads read it. */
static _Atomic(struct chat *) the_chat;

/* ---------- NATS threads: copy into the relay, nothing else ---------- */

static void on_nats_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    struct chat *c = atomic_load(&the_chat);
    enum relay_kind kind = (enum relay_kind)(intptr_t)closure;
    const char *key = "";
    if (kind == RELAY_USER || kind == RELAY_REPLY) {
        const char *dot = strrchr(natsMsg_GetSubject(msg), '.');
        key = dot ? dot + 1 : "";
        if (kind == RELAY_REPLY && natsMsg_IsNoResponders(msg))
            kind = RELAY_NO_REPLY;
    }
    (void)sub;
    if (c)
        relay_push(c->relay, kind, key, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg));
    natsMsg_Destroy(msg);
}

/* JetStream did not take a command (no stream, timeout...): the client is
 * told at once, through the same path as the services' answers. */
static void on_publish_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    (void)js;
    struct chat *c = closure;
    const char *subj = natsMsg_GetSubject(pae->Msg);
    const uint8_t *data = (const uint8_t *)natsMsg_GetData(pae->Msg);
    size_t len = (size_t)natsMsg_GetDataLength(pae->Msg);
    Chat__V1__Origin *origin = NULL;
    Chat__V1__SendMessage *send = NULL;
    Chat__V1__MarkRead *read = NULL;
    if (strncmp(subj, "chat.cmd.message.send", 21) == 0 &&
        (send = chat__v1__send_message__unpack(NULL, len, data)))
        origin = send->origin;
    else if ((read = chat__v1__mark_read__unpack(NULL, len, data)))
        origin = read->origin;
    log_warn("jetstream publish failed subject=%s: %s", subj, natsStatus_GetText(pae->Err));
    if (origin) {
        Chat__V1__Error err = CHAT__V1__ERROR__INIT;
        err.code = "unavailable";
        err.message = "the message store is unavailable; try again";
        Chat__V1__CommandResult r = CHAT__V1__COMMAND_RESULT__INIT;
        r.origin = origin;
        r.event = send ? "message:send" : "message:read";
        r.outcome_case = CHAT__V1__COMMAND_RESULT__OUTCOME_ERROR;
        r.error = &err;
        uint8_t buf[512];
        size_t n = chat__v1__command_result__get_packed_size(&r);
        if (n <= sizeof buf) {
            chat__v1__command_result__pack(&r, buf);
            relay_push(c->relay, RELAY_EDGE, "", buf, n);
        }
    }
    chat__v1__send_message__free_unpacked(send, NULL);
    chat__v1__mark_read__free_unpacked(read, NULL);
}

void chat_bus_connected(void *closure)
{
    (void)closure;
    struct chat *c = atomic_load(&the_chat);
    if (c) /* presence may have missed closes and opens: announce again */
        relay_push(c->relay, RELAY_RESYNC, "", "", 0);
}

/* JetStream set-up blocks: it runs on its own thread until it succeeds. It
 * only creates missing streams: messaging owns their limits. */
static void *streams_main(void *arg)
{
    struct chat *c = arg;
    while (!c->stopped) {
        if (bus_connected(&c->e->bus) && streams_ensure(c->js, NULL) == 0)
            break;
        for (int i = 0; i < 10 && !c->stopped; i++) {
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* ---------- users and their subscriptions ---------- */

static void user_attach(struct chat *c, struct chat_sock *cs, const char *id)
{
    struct chat_user *u = map_get(&c->users, id);
    if (!u) {
        u = xcalloc(1, sizeof *u);
        memcpy(u->id, id, sizeof u->id);
        char subj[64];
        snprintf(subj, sizeof subj, SUBJ_USER_FMT, id);
        natsStatus s =
            natsConnection_Subscribe(&u->sub, c->e->bus.nc, subj, on_nats_msg, (void *)(intptr_t)RELAY_USER);
        if (s == NATS_OK)
            natsSubscription_SetPendingLimits(u->sub, 65536, 64 * 1024 * 1024);
        else
            log_warn("subscribe failed subject=%s: %s", subj, natsStatus_GetText(s));
        map_put(&c->users, u->id, u);
    }
    cs->user = u;
    cs->next = u->socks;
    u->socks = cs;
    u->nsocks++;
}

static void unsubscribe(natsSubscription **sub)
{
    if (*sub) {
        natsSubscription_Unsubscribe(*sub);
        natsSubscription_Destroy(*sub);
        *sub = NULL;
    }
}

static void user_detach(struct chat *c, struct chat_sock *cs)
{
    struct chat_user *u = cs->user;
    struct chat_sock **p = &u->socks;
    while (*p && *p != cs)
        p = &(*p)->next;
    if (*p)
        *p = cs->next;
    cs->user = NULL;
    u->nsocks--;
    if (!u->socks) {
        if (!c->stopped)
            unsubscribe(&u->sub);
        map_del(&c->users, u->id);
        free(u);
    }
}

/* ---------- answers to the client ---------- */

static void count(const char *metric, const char *label, const char *value)
{
    char labels[96]; /* label="value", cut to fit: on every event, so no printf */
    size_t n = strlen(label), v = strlen(value);
    if (n > 32)
        n = 32;
    if (v > sizeof labels - n - 4)
        v = sizeof labels - n - 4;
    memcpy(labels, label, n);
    memcpy(labels + n, "=\"", 2);
    memcpy(labels + n + 2, value, v);
    memcpy(labels + n + 2 + v, "\"", 2);
    metrics_add(metric, labels, 1);
}

/* retry_after_ms > 0 (a service's rate_limited) adds retryAfterMs to the
 * error object: when the client may try again. */
static void send_error_hint(struct chat_sock *cs, const char *event, int64_t ack_id, const char *code,
                            const char *message, int64_t retry_after_ms)
{
    json_t *args, *err;
    count("chat_edge_errors_total", "code", code);
    if (ack_id >= 0) {
        args = json_pack("[{s:b,s:{s:s,s:s}}]", "ok", 0, "error", "code", code, "message", message);
        err = json_object_get(json_array_get(args, 0), "error");
    } else {
        args = json_pack("[s{s:s,s:s,s:s}]", "chat:error", "event", event, "code", code, "message", message);
        err = json_array_get(args, 1);
    }
    if (retry_after_ms > 0)
        json_object_set_new(err, "retryAfterMs", json_integer(retry_after_ms));
    if (ack_id >= 0)
        sock_ack(cs->k, ack_id, args);
    else
        sock_emit(cs->k, args);
    json_decref(args);
}

static void send_error(struct chat_sock *cs, const char *event, int64_t ack_id, const char *code,
                       const char *message)
{
    send_error_hint(cs, event, ack_id, code, message, 0);
}

/* Acks {ok: true} plus key: value when value is set (stolen). */
static void send_ok(struct chat_sock *cs, int64_t ack_id, const char *key, json_t *value)
{
    if (ack_id < 0) {
        json_decref(value);
        return;
    }
    json_t *o = json_pack("{s:b}", "ok", 1);
    if (value)
        json_object_set_new(o, key, value);
    json_t *args = json_pack("[o]", o);
    sock_ack(cs->k, ack_id, args);
    json_decref(args);
}

static void emit(struct chat_sock *cs, const char *event, json_t *payload)
{
    json_t *args = json_pack("[so]", event, payload);
    sock_emit(cs->k, args);
    json_decref(args);
}

/* ---------- requests to the services ---------- */

static void req_done(struct chat_req *r)
{
    wheel_cancel(&r->chat->e->wheel, &r->timer);
    map_del(&r->chat->reqs, r->key);
    free(r);
}

/* Sends one packet written by chat_wire to one socket. */
static void send_wire(struct chat_sock *cs, const struct buf *packet)
{
    struct frame *f = frame_text(EIO_MESSAGE, packet->data, packet->len);
    sock_send_frame(cs->k, f);
    frame_unref(f);
}

static void finish_connect(struct chat_sock *cs, const Chat__V1__PresenceList *list)
{
    sock_accept(cs->k);
    if (!list)
        return;
    struct buf b;
    buf_init(&b);
    if (chat_wire_presence_list(&b, "presence:update", list) == 0)
        send_wire(cs, &b);
    else
        log_warn("presence list with a name that is not UTF-8: not sent socket=%s", cs->k->id);
    buf_cleanup(&b);
}

/* A reply arrived (data/len), or none will (data NULL: no responder or
 * timeout). */
static void req_answer(struct chat_req *r, const uint8_t *data, size_t len)
{
    struct chat_sock *cs = map_get(&r->chat->socks, r->sock_num);
    if (!cs)
        return; /* the socket left meanwhile */
    if (r->kind == REQ_CONNECT) {
        Chat__V1__PresenceList *l = data ? chat__v1__presence_list__unpack(NULL, len, data) : NULL;
        finish_connect(cs, l);
        chat__v1__presence_list__free_unpacked(l, NULL);
    } else if (r->kind == REQ_HISTORY) {
        Chat__V1__MessageList *l = data ? chat__v1__message_list__unpack(NULL, len, data) : NULL;
        if (!l || l->error) {
            send_error_hint(cs, "message:history", r->ack_id, l && l->error ? l->error->code : "unavailable",
                            l && l->error ? l->error->message
                                          : "the message service did not answer; try again",
                            l && l->error ? l->error->retry_after_ms : 0);
        } else {
            json_t *a = json_array();
            for (size_t i = 0; i < l->n_messages; i++)
                json_array_append_new(a, chat_json_message(l->messages[i]));
            send_ok(cs, r->ack_id, "messages", a);
        }
        chat__v1__message_list__free_unpacked(l, NULL);
    } else {
        Chat__V1__PresenceList *l = data ? chat__v1__presence_list__unpack(NULL, len, data) : NULL;
        if (!l) {
            send_error(cs, "presence:request", r->ack_id, "unavailable",
                       "the presence service did not answer; try again");
        } else {
            emit(cs, "presence:response", chat_json_presence_list(l));
            send_ok(cs, r->ack_id, "users", chat_json_presence_list(l));
        }
        chat__v1__presence_list__free_unpacked(l, NULL);
    }
}

static void on_req_timeout(struct wheel_timer *t)
{
    struct chat_req *r = lws_container_of(t, struct chat_req, timer);
    struct chat *c = r->chat;
    char key[sizeof r->key];
    memcpy(key, r->key, sizeof key);
    /* A busy loop turn may have left the reply waiting in the relay: a reply
     * that came in time is taken (chat_drain may answer and free r). */
    chat_drain(c);
    if (!(r = map_get(&c->reqs, key)))
        return;
    log_debug("request timed out kind=%d", (int)r->kind);
    req_answer(r, NULL, 0);
    req_done(r);
}

/* Sends a request whose reply comes back through the relay. Returns 0, or
 * -1 when NATS does not take it. */
static int request(struct chat_sock *cs, enum req_kind kind, int64_t ack_id, const char *subject,
                   const ProtobufCMessage *m, long timeout_ms)
{
    struct chat *c = cs->chat;
    struct chat_req *r = xcalloc(1, sizeof *r);
    r->chat = c;
    r->kind = kind;
    r->ack_id = ack_id;
    snprintf(r->key, sizeof r->key, "%" PRIu64, ++c->next_req);
    memcpy(r->sock_num, cs->num, sizeof r->sock_num);
    char reply[96];
    snprintf(reply, sizeof reply, "%s.%s", c->inbox, r->key);
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = xmalloc(n ? n : 1);
    protobuf_c_message_pack(m, buf);
    natsStatus s = natsConnection_PublishRequest(c->e->bus.nc, subject, reply, buf, (int)n);
    free(buf);
    if (s != NATS_OK || !bus_connected(&c->e->bus)) {
        free(r);
        return -1;
    }
    map_put(&c->reqs, r->key, r);
    wheel_lws_schedule(&c->e->wheel, &r->timer, on_req_timeout, (int64_t)timeout_ms * 1000, WHEEL_EXACT);
    return 0;
}

/* ---------- from the relay, on the lws thread ---------- */

/* Sends one packet (written once) to sockets: one user's (user set) or
 * everyone's. */
static void fan_out(struct chat *c, struct chat_user *user, const char *event, const struct buf *packet,
                    uint64_t coalesce)
{
    count("chat_edge_fanouts_total", "event", event);
    struct frame *f = frame_text(EIO_MESSAGE, packet->data, packet->len);
    f->coalesce = coalesce;
    if (user) {
        for (struct chat_sock *cs = user->socks; cs; cs = cs->next)
            if (cs->k->state == SOCK_OPEN)
                sock_send_frame(cs->k, f);
    } else {
        size_t i;
        for (struct map_entry *m = map_first(&c->socks, &i); m; m = map_next(&c->socks, m, &i)) {
            struct chat_sock *cs = m->value;
            if (cs->k->state == SOCK_OPEN)
                sock_send_frame(cs->k, f);
        }
    }
    frame_unref(f);
}

/* ghost:typing is the whole text typed so far: a newer one from the same
 * sender makes a queued one useless. Its frames carry a key of the sender
 * (FNV-1a 64, never 0) so that one still queued is replaced (session.h). */
static uint64_t ghost_key(const Chat__V1__Delivery *d)
{
    uint64_t h = 14695981039346656037ULL;
    for (const unsigned char *p = (const unsigned char *)d->ghost_typing->user_id; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h | 1;
}

/* Writes d once and sends it to every socket of u here. Returns 0, or -1
 * when d is no event we know or carries a string that is not UTF-8. */
static int fan_out_delivery(struct chat *c, struct chat_user *u, const Chat__V1__Delivery *d)
{
    struct buf b;
    const char *event;
    buf_init(&b);
    int r = chat_wire_delivery(&b, d, &event);
    if (r == 0)
        fan_out(c, u, event, &b, d->event_case == CHAT__V1__DELIVERY__EVENT_GHOST_TYPING ? ghost_key(d) : 0);
    buf_cleanup(&b);
    return r;
}

static void deliver(struct chat *c, const char *user_id, const uint8_t *data, size_t len)
{
    struct chat_user *u = map_get(&c->users, user_id);
    if (!u)
        return; /* the last socket left after NATS had it queued */
    Chat__V1__Delivery *d = chat__v1__delivery__unpack(NULL, len, data);
    if (!d || fan_out_delivery(c, u, d) != 0)
        log_warn("undecodable delivery user=%s len=%zu", user_id, len);
    chat__v1__delivery__free_unpacked(d, NULL);
}

static void on_status(struct chat *c, const uint8_t *data, size_t len)
{
    Chat__V1__PresenceChange *ch = chat__v1__presence_change__unpack(NULL, len, data);
    struct buf b;
    buf_init(&b);
    if (ch && ch->info && chat_wire_status(&b, ch->info) == 0)
        fan_out(c, NULL, "user:status", &b, 0);
    buf_cleanup(&b);
    chat__v1__presence_change__free_unpacked(ch, NULL);
}

static void announce(struct chat_sock *cs, Chat__V1__SessionEvent__Kind kind, int resync)
{
    struct chat *c = cs->chat;
    Chat__V1__SessionEvent ev = CHAT__V1__SESSION_EVENT__INIT;
    ev.kind = kind;
    ev.edge_id = (char *)c->e->cfg->edge_id;
    ev.boot_id = c->e->boot_id;
    ev.conn_id = cs->k->num;
    ev.user_id = cs->user->id;
    ev.username = cs->username;
    ev.resync = resync;
    bus_publish(&c->e->bus, SUBJ_PRESENCE_SESSION, &ev.base);
}

/* Presence restarted: it learns every open session again, without
 * broadcasts (architecture.md §Presence restart). */
static void on_resync(struct chat *c)
{
    size_t i;
    for (struct map_entry *m = map_first(&c->socks, &i); m; m = map_next(&c->socks, m, &i)) {
        struct chat_sock *cs = m->value;
        if (cs->k->state == SOCK_OPEN)
            announce(cs, CHAT__V1__SESSION_EVENT__KIND__KIND_OPEN, 1);
    }
}

static void on_command_result(struct chat *c, const uint8_t *data, size_t len)
{
    Chat__V1__CommandResult *r = chat__v1__command_result__unpack(NULL, len, data);
    if (!r || !r->origin) {
        chat__v1__command_result__free_unpacked(r, NULL);
        return;
    }
    char num[24];
    snprintf(num, sizeof num, "%" PRIu64, r->origin->conn_id);
    struct chat_sock *cs = map_get(&c->socks, num);
    if (cs && cs->k->state == SOCK_OPEN) {
        if (r->outcome_case == CHAT__V1__COMMAND_RESULT__OUTCOME_ERROR && r->error)
            send_error_hint(cs, r->event, r->origin->ack_id, r->error->code, r->error->message,
                            r->error->retry_after_ms);
        else if (r->outcome_case == CHAT__V1__COMMAND_RESULT__OUTCOME_MESSAGE && r->message)
            send_ok(cs, r->origin->ack_id, "message", chat_json_message(r->message));
        else
            send_ok(cs, r->origin->ack_id, NULL, NULL);
    }
    chat__v1__command_result__free_unpacked(r, NULL);
}

void chat_drain(struct chat *c)
{
    struct relay_item *it = relay_take(c->relay);
    while (it) {
        struct relay_item *next = it->next;
        struct chat_req *r;
        switch (it->kind) {
        case RELAY_USER:
            deliver(c, it->key, it->data, it->len);
            break;
        case RELAY_EDGE:
            on_command_result(c, it->data, it->len);
            break;
        case RELAY_REPLY:
        case RELAY_NO_REPLY:
            if ((r = map_get(&c->reqs, it->key))) {
                req_answer(r, it->kind == RELAY_REPLY ? it->data : NULL, it->len);
                req_done(r);
            }
            break;
        case RELAY_STATUS:
            on_status(c, it->data, it->len);
            break;
        case RELAY_RESYNC:
            on_resync(c);
            break;
        }
        free(it);
        it = next;
    }
}

static void on_heartbeat(lws_sorted_usec_list_t *sul)
{
    struct chat *c = lws_container_of(sul, struct chat, sul_heartbeat);
    Chat__V1__EdgeHeartbeat hb = CHAT__V1__EDGE_HEARTBEAT__INIT;
    hb.edge_id = (char *)c->e->cfg->edge_id;
    hb.boot_id = c->e->boot_id;
    hb.open_sessions = (uint32_t)c->socks.count;
    hb.interval_ms = (uint32_t)c->e->cfg->heartbeat_ms;
    bus_publish(&c->e->bus, SUBJ_EDGE_HEARTBEAT, &hb.base);
    lws_sul_schedule(c->e->ctx, 0, &c->sul_heartbeat, on_heartbeat,
                     (lws_usec_t)c->e->cfg->heartbeat_ms * LWS_US_PER_MS);
}

/* ---------- connect / disconnect ---------- */

static int nsp_valid(const char *nsp)
{
    return strcmp(nsp, "/") == 0;
}

static void on_token_expiry(struct wheel_timer *t)
{
    struct chat_sock *cs = lws_container_of(t, struct chat_sock, t_expiry);
    log_info("token expired user=%s socket=%s: disconnecting", cs->user->id, cs->k->id);
    count("chat_edge_disconnects_total", "reason", "token_expired");
    sock_disconnect(cs->k); /* frees cs (on_disconnect) */
}

/* architecture.md §Connect: verify the token, subscribe the user's subject,
 * announce the session to presence and answer the CONNECT with its reply.
 * The reply travels after the SUB on the same NATS connection, so once the
 * client sees "connect", deliveries to it work from every edge. Without
 * presence (no responder, timeout) the CONNECT is answered all the same. */
static int authorize(struct sock *k, json_t *auth, json_t **error)
{
    struct chat *c = atomic_load(&the_chat);
    json_t *tok = json_object_get(auth, "token");
    struct auth_claims claims;
    const char *why = "no token";
    if (!json_is_string(tok) || auth_verify(&claims, json_string_value(tok), json_string_length(tok),
                                            (const unsigned char *)c->e->cfg->jwt_secret,
                                            strlen(c->e->cfg->jwt_secret), time(NULL), &why) != 0) {
        log_info("connect refused socket=%s reason=\"%s\"", k->id, why);
        count("chat_edge_connects_total", "result", "unauthorized");
        *error = json_pack("{s:s}", "message", "unauthorized");
        return SOCK_REJECT;
    }
    struct chat_user *known = map_get(&c->users, claims.user_id);
    if (known && known->nsocks >= c->e->cfg->max_sockets_per_user) {
        log_info("connect refused user=%s reason=\"too many sockets\" sockets=%d", claims.user_id,
                 known->nsocks);
        count("chat_edge_connects_total", "result", "too_many_connections");
        *error = json_pack("{s:s}", "message", "too many connections");
        return SOCK_REJECT;
    }
    size_t name_len = strlen(claims.username);
    struct chat_sock *cs = xcalloc(1, sizeof *cs + name_len + 1);
    cs->k = k;
    cs->chat = c;
    memcpy(cs->username, claims.username, name_len + 1);
    /* The socket lives as long as its token: DISCONNECT at exp. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long long left_us = (claims.exp - (long long)now.tv_sec) * 1000000LL - now.tv_nsec / 1000;
    wheel_lws_schedule(&c->e->wheel, &cs->t_expiry, on_token_expiry, left_us > 0 ? left_us : 0, WHEEL_EXACT);
    snprintf(cs->num, sizeof cs->num, "%" PRIu64, k->num);
    k->app_state = cs;
    map_put(&c->socks, cs->num, cs);
    user_attach(c, cs, claims.user_id);
    log_info("connect user=%s socket=%s", claims.user_id, k->id);
    count("chat_edge_connects_total", "result", "ok");

    Chat__V1__SessionEvent ev = CHAT__V1__SESSION_EVENT__INIT;
    ev.kind = CHAT__V1__SESSION_EVENT__KIND__KIND_OPEN;
    ev.edge_id = (char *)c->e->cfg->edge_id;
    ev.boot_id = c->e->boot_id;
    ev.conn_id = k->num;
    ev.user_id = cs->user->id;
    ev.username = cs->username;
    if (request(cs, REQ_CONNECT, -1, SUBJ_PRESENCE_SESSION, &ev.base, CONNECT_WAIT_MS) != 0)
        return SOCK_ACCEPT; /* no NATS now: nothing to wait for */
    return SOCK_LATER;
}

static void on_connect(struct sock *k)
{
    (void)k;
}

static void on_disconnect(struct sock *k, const char *reason)
{
    struct chat_sock *cs = k->app_state;
    if (!cs)
        return;
    struct chat *c = cs->chat;
    log_info("disconnect user=%s socket=%s reason=\"%s\"", cs->user->id, k->id, reason);
    wheel_cancel(&c->e->wheel, &cs->t_expiry);
    if (!c->stopped)
        announce(cs, CHAT__V1__SESSION_EVENT__KIND__KIND_CLOSE, 0);
    map_del(&c->socks, cs->num);
    user_detach(c, cs);
    free(cs);
    k->app_state = NULL;
}

/* ---------- client events ---------- */

/* A handler validates one event and acts on it. Returns 0 (done: ack ok),
 * 1 (the answer comes later), or -1 with *code and *msg (static text). */
typedef int (*handler_fn)(struct chat_sock *cs, json_t *arg, int64_t ack_id, const char **code,
                          const char **msg);

#define FAIL(c, m)                                                                                           \
    do {                                                                                                     \
        *code = (c);                                                                                         \
        *msg = (m);                                                                                          \
        return -1;                                                                                           \
    } while (0)

static Chat__V1__Origin origin_of(struct chat_sock *cs, int64_t ack_id)
{
    Chat__V1__Origin o = CHAT__V1__ORIGIN__INIT;
    o.edge_id = (char *)cs->chat->e->cfg->edge_id;
    o.conn_id = cs->k->num;
    o.ack_id = ack_id;
    return o;
}

/* To the recipient's sockets on other edges (and to whoever taps
 * chat.user.>) through NATS; to its sockets here directly: the edge's
 * connection does not hear its own publications (no_echo). Either both or
 * neither: a bus that does not take it is an error for the client. */
static int publish_delivery(struct chat_sock *cs, const char *to, Chat__V1__Delivery *d, const char **code,
                            const char **msg)
{
    struct chat *c = cs->chat;
    char subj[64];
    snprintf(subj, sizeof subj, SUBJ_USER_FMT, to);
    if (!bus_connected(&c->e->bus) || bus_publish(&c->e->bus, subj, &d->base) != 0)
        FAIL("unavailable", "the message bus is unavailable; try again");
    struct chat_user *u = map_get(&c->users, to);
    if (u)
        fan_out_delivery(c, u, d); /* d passed chat_valid: it is written */
    return 0;
}

/* typing:stop, audio:recording:start/stop: {recipientId} -> {userId}. */
static int relay_signal(struct chat_sock *cs, json_t *arg, Chat__V1__Delivery__EventCase which,
                        const char **code, const char **msg)
{
    struct chat_valid_recipient v;
    if (chat_valid_recipient(&v, arg, code, msg))
        return -1;
    Chat__V1__UserSignal sig = CHAT__V1__USER_SIGNAL__INIT;
    sig.user_id = cs->user->id;
    Chat__V1__Delivery d = CHAT__V1__DELIVERY__INIT;
    d.event_case = which;
    if (which == CHAT__V1__DELIVERY__EVENT_TYPING_STOP)
        d.typing_stop = &sig;
    else if (which == CHAT__V1__DELIVERY__EVENT_AUDIO_RECORDING_START)
        d.audio_recording_start = &sig;
    else
        d.audio_recording_stop = &sig;
    return publish_delivery(cs, v.to, &d, code, msg);
}

static int on_typing_start(struct chat_sock *cs, json_t *arg, int64_t ack_id, const char **code,
                           const char **msg)
{
    (void)ack_id;
    struct chat_valid_recipient v;
    if (chat_valid_recipient(&v, arg, code, msg))
        return -1;
    Chat__V1__TypingStart t = CHAT__V1__TYPING_START__INIT;
    t.user_id = cs->user->id;
    t.username = cs->username;
    Chat__V1__Delivery d = CHAT__V1__DELIVERY__INIT;
    d.event_case = CHAT__V1__DELIVERY__EVENT_TYPING_START;
    d.typing_start = &t;
    return publish_delivery(cs, v.to, &d, code, msg);
}

static int on_typing_stop(struct chat_sock *cs, json_t *arg, int64_t ack_id, const char **code,
                          const char **msg)
{
    (void)ack_id;
    return relay_signal(cs, arg, CHAT__V1__DELIVERY__EVENT_TYPING_STOP, code, msg);
}

static int on_recording_start(struct chat_sock *cs, json_t *arg, int64_t ack_id, const char **code,
                              const char **msg)
{
    (void)ack_id;
    return relay_signal(cs, arg, CHAT__V1__DELIVERY__EVENT_AUDIO_RECORDING_START, code, msg);
}

static int on_recording_stop(struct chat_sock *cs, json_t *arg, int64_t ack_id, const char **code,
                             const char **msg)
{
    (void)ack_id;
    return relay_signal(cs, arg, CHAT__V1__DELIVERY__EVENT_AUDIO_RECORDING_STOP, code, msg);
}

static int on_ghost_typing(struct chat_sock *cs, json_t *arg, int64_t ack_id, const char **code,
                           const char **msg)
{
    (void)ack_id;
    struct chat_valid_ghost v;
    if (chat_valid_ghost(&v, arg, (size_t)cs->chat->e->cfg->max_ghost_text, code, msg))
        return -1;
    Chat__V1__GhostTyping g = CHAT__V1__GHOST_TYPING__INIT;
    g.user_id = cs->user->id;
    g.text = (char *)v.text;
    Chat__V1__Delivery d = CHAT__V1__DELIVERY__INIT;
    d.event_case = CHAT__V1__DELIVERY__EVENT_GHOST_TYPING;
    d.ghost_typing = &g;
    return publish_delivery(cs, v.to, &d, code, msg);
}

/* audio:listening {messageId, senderId, isPlaying}: to the message's sender. */
static int on_audio_listening(struct chat_sock *cs, json_t *arg, int64_t ack_id, const char **code,
                              const char **msg)
{
    (void)ack_id;
    struct chat_valid_listening v;
    if (chat_valid_listening(&v, arg, code, msg))
        return -1;
    Chat__V1__AudioListening l = CHAT__V1__AUDIO_LISTENING__INIT;
    l.user_id = cs->user->id;
    l.message_id = v.message_id;
    l.is_playing = v.is_playing;
    Chat__V1__Delivery d = CHAT__V1__DELIVERY__INIT;
    d.event_case = CHAT__V1__DELIVERY__EVENT_AUDIO_LISTENING;
    d.audio_listening = &l;
    return publish_delivery(cs, v.to, &d, code, msg);
}

/* Publishes a command to JetStream without waiting (the lws thread never
 * blocks); failures come back through on_publish_error. */
static int publish_command(struct chat_sock *cs, const char *subject, const char *msg_id,
                           const ProtobufCMessage *m, const char **code, const char **msg)
{
    struct chat *c = cs->chat;
    if (!bus_connected(&c->e->bus))
        FAIL("unavailable", "the message bus is unavailable; try again");
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = xmalloc(n);
    protobuf_c_message_pack(m, buf);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msg_id;
    po.MaxWait = REQUEST_TIMEOUT_MS;
    natsStatus s = js_PublishAsync(c->js, subject, buf, (int)n, &po);
    free(buf);
    if (s != NATS_OK)
        FAIL("unavailable", "the message store is unavailable; try again");
    return 1;
}

/* message:send {recipientId, content, type, clientMessageId?}: the edge
 * gives the id (UUIDv7); messaging stores, then answers the ack and sends
 * message:received / message:sent. */
static int on_message_send(struct chat_sock *cs, json_t *arg, int64_t ack_id, const char **code,
                           const char **msg)
{
    struct chat_valid_send v;
    char id[IDS_UUID_LEN + 1];
    if (chat_valid_send(&v, arg, (size_t)cs->chat->e->cfg->max_message_bytes, code, msg))
        return -1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ids_uuid7(id, (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);

    Chat__V1__Message m = CHAT__V1__MESSAGE__INIT;
    m.id = id;
    m.sender_id = cs->user->id;
    m.recipient_id = v.to;
    m.type = v.type;
    m.content = (char *)v.content;
    m.client_message_id = (char *)v.client_message_id;
    Chat__V1__Origin origin = origin_of(cs, ack_id);
    Chat__V1__SendMessage cmd = CHAT__V1__SEND_MESSAGE__INIT;
    cmd.message = &m;
    cmd.origin = &origin;
    char subj[64];
    snprintf(subj, sizeof subj, SUBJ_CMD_SEND_FMT,
             ids_partition(cs->user->id, (unsigned)cs->chat->e->cfg->partitions));
    return publish_command(cs, subj, id, &cmd.base, code, msg);
}

/* message:read {messageId, senderId}: senderId is only a hint; messaging uses
 * the stored sender and refuses anyone but the recipient. */
static int on_message_read(struct chat_sock *cs, json_t *arg, int64_t ack_id, const char **code,
                           const char **msg)
{
    struct chat_valid_read v;
    if (chat_valid_read(&v, arg, code, msg))
        return -1;
    Chat__V1__Origin origin = origin_of(cs, ack_id);
    Chat__V1__MarkRead cmd = CHAT__V1__MARK_READ__INIT;
    cmd.message_id = v.message_id;
    cmd.reader_id = cs->user->id;
    cmd.origin = &origin;
    return publish_command(cs, SUBJ_CMD_READ, NULL, &cmd.base, code, msg);
}

/* message:history {withUserId, before?, limit?} (ack required): newest first,
 * before = the id of the oldest message the client has. */
static int on_message_history(struct chat_sock *cs, json_t *arg, int64_t ack_id, const char **code,
                              const char **msg)
{
    struct chat_valid_history v;
    if (ack_id < 0)
        FAIL("bad_request", "message:history answers through its ack: emit it with one");
    if (chat_valid_history(&v, arg, code, msg))
        return -1;
    Chat__V1__HistoryQuery q = CHAT__V1__HISTORY_QUERY__INIT;
    q.user_id = cs->user->id;
    q.with_user_id = v.with;
    q.before_id = v.before;
    q.limit = v.limit;
    q.timeout_ms = REQUEST_TIMEOUT_MS; /* messaging drops it once this has passed */
    if (request(cs, REQ_HISTORY, ack_id, SUBJ_QUERY_MESSAGES, &q.base, REQUEST_TIMEOUT_MS) != 0)
        FAIL("unavailable", "the message bus is unavailable; try again");
    return 1;
}

/* presence:update {status}: the user's chosen status, broadcast by presence. */
static int on_presence_update(struct chat_sock *cs, json_t *arg, int64_t ack_id, const char **code,
                              const char **msg)
{
    struct chat_valid_status v;
    if (chat_valid_status(&v, arg, code, msg))
        return -1;
    Chat__V1__Origin origin = origin_of(cs, ack_id);
    Chat__V1__SetStatus set = CHAT__V1__SET_STATUS__INIT;
    set.user_id = cs->user->id;
    set.status = v.status;
    set.origin = &origin;
    if (!bus_connected(&cs->chat->e->bus) ||
        bus_publish(&cs->chat->e->bus, SUBJ_PRESENCE_SET, &set.base) != 0)
        FAIL("unavailable", "the message bus is unavailable; try again");
    return 0;
}

/* presence:request [ids] -> presence:response [PresenceInfo]. */
static int on_presence_request(struct chat_sock *cs, json_t *arg, int64_t ack_id, const char **code,
                               const char **msg)
{
    struct chat_valid_ids v;
    if (chat_valid_ids(&v, arg, (size_t)cs->chat->e->cfg->max_presence_query, code, msg))
        return -1;
    Chat__V1__PresenceQuery q = CHAT__V1__PRESENCE_QUERY__INIT;
    q.n_user_ids = v.n;
    q.user_ids = v.ptrs;
    int rc = 1;
    if (request(cs, REQ_PRESENCE, ack_id, SUBJ_PRESENCE_QUERY, &q.base, REQUEST_TIMEOUT_MS) != 0) {
        *code = "unavailable";
        *msg = "the message bus is unavailable; try again";
        rc = -1;
    }
    chat_valid_ids_cleanup(&v);
    return rc;
}

static const struct {
    const char *name;
    handler_fn fn;
    int array; /* the payload is an array (else an object) */
} handlers[] = {
    {"typing:start", on_typing_start, 0},           {"typing:stop", on_typing_stop, 0},
    {"ghost:typing", on_ghost_typing, 0},           {"audio:recording:start", on_recording_start, 0},
    {"audio:recording:stop", on_recording_stop, 0}, {"audio:listening", on_audio_listening, 0},
    {"message:send", on_message_send, 0},           {"message:read", on_message_read, 0},
    {"message:history", on_message_history, 0},     {"presence:update", on_presence_update, 0},
    {"presence:request", on_presence_request, 1},
};

static void on_packet(struct sock *k, struct sio_packet *p)
{
    struct chat_sock *cs = k->app_state;
    if (p->type == SIO_ACK || p->type == SIO_BINARY_ACK)
        return; /* this app never asks clients for acks: late or stray */
    json_t *name_v = json_array_get(p->data, 0);
    const char *name = json_is_string(name_v) ? json_string_value(name_v) : "";
    const char *code = "unknown_event", *msg = "no such event";
    int rc = -1;
    const struct edge_config *cfg = cs->chat->e->cfg;
    if (!abuse_take(&cs->events, (double)cfg->events_per_s, (double)cfg->events_burst, abuse_now_us())) {
        /* Paced per socket: refused events say so; a client that keeps
         * going past EDGE_RATE_DISCONNECT refusals in a row is cut off. */
        if (++cs->refused_in_row >= cfg->rate_disconnect) {
            log_warn("rate limit: disconnecting user=%s socket=%s", cs->user->id, k->id);
            count("chat_edge_disconnects_total", "reason", "rate_limited");
            sock_kick(k); /* frees cs */
            return;
        }
        send_error(cs, name, p->ack_id, "rate_limited", "too many events: slow down");
        return;
    }
    cs->refused_in_row = 0;
    if (json_is_string(name_v) && strlen(name) != json_string_length(name_v))
        name = ""; /* a NUL inside the name: no such event */
    if (p->type == SIO_BINARY_EVENT) {
        code = "bad_request";
        msg = "binary payloads are not accepted";
    } else {
        for (size_t i = 0; i < sizeof handlers / sizeof handlers[0]; i++) {
            if (strcmp(handlers[i].name, name) != 0)
                continue;
            count("chat_edge_events_in_total", "event", handlers[i].name);
            json_t *arg = json_array_get(p->data, 1);
            if (handlers[i].array ? !json_is_array(arg) : !json_is_object(arg)) {
                code = "bad_request";
                msg = handlers[i].array ? "the payload must be a JSON array"
                                        : "the payload must be a JSON object";
            } else {
                rc = handlers[i].fn(cs, arg, p->ack_id, &code, &msg);
            }
            break;
        }
    }
    if (rc == 0)
        send_ok(cs, p->ack_id, NULL, NULL);
    if (rc >= 0)
        return;
    log_debug("event refused user=%s event=%.64s code=%s", cs->user->id, name, code);
    send_error(cs, name, p->ack_id, code, msg);
}

const struct sock_app chat_sock_app = {
    .nsp_valid = nsp_valid,
    .authorize = authorize,
    .on_connect = on_connect,
    .on_packet = on_packet,
    .on_disconnect = on_disconnect,
};

/* ---------- lifecycle ---------- */

static int subscribe(struct chat *c, natsSubscription **sub, const char *subject, enum relay_kind kind)
{
    natsStatus s = natsConnection_Subscribe(sub, c->e->bus.nc, subject, on_nats_msg, (void *)(intptr_t)kind);
    if (s != NATS_OK) {
        log_error("subscribe failed subject=%s: %s", subject, natsStatus_GetText(s));
        return -1;
    }
    natsSubscription_SetPendingLimits(*sub, 65536, 64 * 1024 * 1024);
    return 0;
}

static void describe_metrics(void)
{
    metrics_describe("chat_edge_events_in_total", "counter", "Client events received, by name.");
    metrics_describe("chat_edge_errors_total", "counter", "Refusals sent to clients, by error code.");
    metrics_describe("chat_edge_connects_total", "counter", "Socket.IO CONNECTs, by result.");
    metrics_describe("chat_edge_fanouts_total", "counter", "Events fanned out to local sockets, by name.");
    metrics_describe(
        "chat_edge_frames_coalesced_total", "counter",
        "ghost:typing frames replaced by a newer one from the same sender before they were sent.");
    metrics_describe("chat_edge_sessions", "gauge", "Open Engine.IO sessions, by transport.");
    metrics_describe("chat_edge_nats_reconnects_total", "counter", "NATS reconnections.");
    metrics_describe("chat_edge_nats_connected", "gauge", "1 while NATS is connected.");
}

struct chat *chat_create(struct edge *e)
{
    struct chat *c = xcalloc(1, sizeof *c);
    describe_metrics();
    c->e = e;
    c->relay = relay_create(e->ctx, 256u * 1024 * 1024);
    map_init(&c->users);
    map_init(&c->socks);
    map_init(&c->reqs);
    atomic_store(&the_chat, c);
    snprintf(c->edge_subject, sizeof c->edge_subject, SUBJ_EDGE_FMT, e->cfg->edge_id);
    snprintf(c->inbox, sizeof c->inbox, "_INBOX.edge.%s", e->boot_id);
    char reply_subject[80];
    snprintf(reply_subject, sizeof reply_subject, "%s.*", c->inbox);

    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    jo.PublishAsync.MaxPending = 65536;
    jo.PublishAsync.StallWait = 1; /* never hold the lws thread */
    jo.PublishAsync.ErrHandler = on_publish_error;
    jo.PublishAsync.ErrHandlerClosure = c;
    if (natsConnection_JetStream(&c->js, e->bus.nc, &jo) != NATS_OK ||
        subscribe(c, &c->edge_sub, c->edge_subject, RELAY_EDGE) ||
        subscribe(c, &c->reply_sub, reply_subject, RELAY_REPLY) ||
        subscribe(c, &c->status_sub, SUBJ_PRESENCE_STATUS, RELAY_STATUS) ||
        subscribe(c, &c->resync_sub, SUBJ_PRESENCE_RESYNC, RELAY_RESYNC)) {
        chat_destroy(c);
        return NULL;
    }
    c->streams_started = pthread_create(&c->streams_thread, NULL, streams_main, c) == 0;
    lws_sul_schedule(e->ctx, 0, &c->sul_heartbeat, on_heartbeat, 1);
    return c;
}

void chat_stop(struct chat *c)
{
    if (!c || c->stopped)
        return;
    c->stopped = 1;
    relay_stop(c->relay);
    lws_sul_cancel(&c->sul_heartbeat);
    if (c->streams_started)
        pthread_join(c->streams_thread, NULL);
    c->streams_started = 0;
    size_t i;
    for (struct map_entry *m = map_first(&c->users, &i); m; m = map_next(&c->users, m, &i))
        unsubscribe(&((struct chat_user *)m->value)->sub);
    /* Presence hears of the sockets that close with this edge from the
     * close events below, or from the missing heartbeat. */
    for (struct map_entry *m = map_first(&c->socks, &i); m; m = map_next(&c->socks, m, &i))
        announce(m->value, CHAT__V1__SESSION_EVENT__KIND__KIND_CLOSE, 0);
    unsubscribe(&c->edge_sub);
    unsubscribe(&c->reply_sub);
    unsubscribe(&c->status_sub);
    unsubscribe(&c->resync_sub);
    if (c->js) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = 1000; /* bounded: NATS may be gone */
        js_PublishAsyncComplete(c->js, &po);
        jsCtx_Destroy(c->js);
        c->js = NULL;
    }
}

void chat_destroy(struct chat *c)
{
    if (!c)
        return;
    chat_stop(c);
    size_t i;
    struct map_entry *m;
    while ((m = map_first(&c->reqs, &i)))
        req_done(m->value);
    map_cleanup(&c->users); /* empty by now: every socket was closed */
    map_cleanup(&c->socks);
    map_cleanup(&c->reqs);
    jsCtx_Destroy(c->js);
    relay_destroy(c->relay);
    if (atomic_load(&the_chat) == c)
        atomic_store(&the_chat, NULL);
    free(c);
}
