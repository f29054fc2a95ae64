/* chat_nats: the chat's side of NATS. nats.c's threads only copy what
 * arrives into the relay (the one door into the loop's thread); the loop
 * drains it (chat_drain): deliveries and statuses to sockets, services'
 * answers to the sockets that asked. Publications (signals, commands to
 * JetStream, session events, requests, the heartbeat) happen on the loop
 * and never block it. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat_int.h"
#include "chat_json.h"
#include "log.h"
#include "metrics.h"
#include "streams.h"
#include "subjects.h"

/* ---------- NATS threads: copy into the relay, nothing else ---------- */

static void on_nats_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    const struct chat_sub *cs = closure; /* lives as long as the chat */
    enum relay_kind kind = cs->kind;
    const char *key = "";
    if (kind == RELAY_USER || kind == RELAY_REPLY) {
        const char *dot = strrchr(natsMsg_GetSubject(msg), '.');
        key = dot ? dot + 1 : "";
        if (kind == RELAY_REPLY && natsMsg_IsNoResponders(msg))
            kind = RELAY_NO_REPLY;
    }
    relay_push(cs->c->relay, kind, key, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg));
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
        r.event = send ? "message:send" : *read->with_user_id ? "conversation:read" : "message:read";
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
    /* presence may have missed closes and opens (announced again), this
     * edge changes of the online list (a new snapshot) */
    struct chat *c = closure;
    relay_push(c->relay, RELAY_CONNECTED, "", "", 0);
    chat_records_reconnected(c); /* and the records go on after the last one delivered */
}

/* ---------- subscriptions ---------- */

static int subscribe(struct chat *c, natsSubscription **sub, const char *subject, int which)
{
    natsStatus s = natsConnection_Subscribe(sub, c->bus->nc, subject, on_nats_msg, &c->sub_ctx[which]);
    if (s != NATS_OK) {
        log_warn("subscribe failed subject=%s: %s", subject, natsStatus_GetText(s));
        return -1;
    }
    natsSubscription_SetPendingLimits(*sub, 65536, 64 * 1024 * 1024);
    return 0;
}

void chat_subscribe_user(struct chat *c, struct chat_user *u)
{
    char subj[64];
    snprintf(subj, sizeof subj, SUBJ_USER_FMT, u->id);
    subscribe(c, &u->sub, subj, SUB_USER);
}

void chat_unsubscribe(struct chat *c, natsSubscription **sub)
{
    bus_sub_retire(c->bus, sub, 1);
}

/* ---------- publications ---------- */

void chat_session_event(Chat__V1__SessionEvent *ev, struct chat_sock *cs, Chat__V1__SessionEvent__Kind kind,
                        int resync)
{
    const struct chat_config *cfg = cs->chat->cfg;
    chat__v1__session_event__init(ev);
    ev->kind = kind;
    ev->edge_id = (char *)cfg->edge_id;
    ev->boot_id = (char *)cfg->boot_id;
    ev->conn_id = cs->k->num;
    ev->user_id = cs->user->id;
    ev->username = cs->username;
    ev->resync = resync;
}

void chat_announce(struct chat_sock *cs, Chat__V1__SessionEvent__Kind kind, int resync)
{
    Chat__V1__SessionEvent ev;
    chat_session_event(&ev, cs, kind, resync);
    bus_publish(cs->chat->bus, SUBJ_PRESENCE_SESSION, &ev.base);
}

/* To the recipient's sockets on other edges (and to whoever taps
 * chat.user.>) through NATS; to its sockets here directly: the edge's
 * connection does not hear its own publications (no_echo). Either both or
 * neither: a bus that does not take it is an error for the client. */
int chat_publish_delivery(struct chat_sock *cs, const char *to, Chat__V1__Delivery *d, const char **code,
                          const char **msg)
{
    struct chat *c = cs->chat;
    if (chat_pair_take(cs, to, code, msg))
        return -1;
    char subj[64];
    snprintf(subj, sizeof subj, SUBJ_USER_FMT, to);
    if (!bus_connected(c->bus) || bus_publish(c->bus, subj, &d->base) != 0)
        FAIL("unavailable", "the message bus is unavailable; try again");
    struct chat_user *u = map_get(&c->users, to);
    if (u)
        chat_fan_out_delivery(c, u, d); /* d passed chat_valid: it is written */
    return 0;
}

/* Publishes a command to JetStream without waiting (the loop never
 * blocks); failures come back through on_publish_error. */
int chat_publish_command(struct chat_sock *cs, const char *subject, const char *msg_id, int64_t ack_id,
                         const ProtobufCMessage *m, const char **code, const char **msg)
{
    struct chat *c = cs->chat;
    if (!bus_connected(c->bus))
        FAIL("unavailable", "the message bus is unavailable; try again");
    if (ack_id >= 0 && chat_pending_add(cs, ack_id) != 0)
        FAIL("rate_limited", "too many commands waiting for their outcome: slow down");
    natsStatus s = bus_js_publish(c->js, subject, msg_id, REQUEST_TIMEOUT_MS, m);
    if (s != NATS_OK) {
        chat_pending_take(cs, ack_id);
        FAIL("unavailable", "the message store is unavailable; try again");
    }
    return 1;
}

/* ---------- requests to the services ---------- */

static void req_done(struct chat_req *r)
{
    wheel_cancel(r->chat->wheel, &r->timer);
    map_del(&r->chat->reqs, r->key);
    free(r);
}

/* A reply arrived (data/len), or none will (data NULL: no responder or
 * timeout). */
static void req_answer(struct chat_req *r, const uint8_t *data, size_t len)
{
    if (r->kind == REQ_PARTNERS) {
        chat_interest_partners(r->chat, r->user_id, data, len);
        return;
    }
    struct chat_sock *cs = map_get(&r->chat->socks, r->sock_num);
    if (!cs)
        return; /* the socket left meanwhile */
    if (r->kind == REQ_CONNECT) {
        chat_finish_connect(cs, data, len);
    } else if (r->kind == REQ_HISTORY) {
        Chat__V1__MessageList *l = data ? chat__v1__message_list__unpack(NULL, len, data) : NULL;
        if (!l || l->error) {
            chat_send_error_hint(
                cs, "message:history", r->ack_id, l && l->error ? l->error->code : "unavailable",
                l && l->error ? l->error->message : "the message service did not answer; try again",
                l && l->error ? l->error->retry_after_ms : 0);
        } else {
            json_t *a = json_array();
            for (size_t i = 0; i < l->n_messages; i++)
                json_array_append_new(a, chat_json_message(l->messages[i]));
            chat_send_ok(cs, r->ack_id, "messages", a);
        }
        chat__v1__message_list__free_unpacked(l, NULL);
    } else if (r->kind == REQ_CONVERSATIONS) {
        Chat__V1__ConversationList *l = data ? chat__v1__conversation_list__unpack(NULL, len, data) : NULL;
        if (!l || l->error) {
            chat_send_error_hint(
                cs, "conversation:list", r->ack_id, l && l->error ? l->error->code : "unavailable",
                l && l->error ? l->error->message : "the message service did not answer; try again",
                l && l->error ? l->error->retry_after_ms : 0);
        } else {
            json_t *args = json_pack("[o]", chat_json_conversation_page(l));
            sock_ack(cs->k, r->ack_id, args);
            json_decref(args);
        }
        chat__v1__conversation_list__free_unpacked(l, NULL);
    } else {
        Chat__V1__PresenceList *l = data ? chat__v1__presence_list__unpack(NULL, len, data) : NULL;
        if (!l) {
            chat_send_error(cs, "presence:request", r->ack_id, "unavailable",
                            "the presence service did not answer; try again");
        } else {
            chat_emit(cs, "presence:response", chat_json_presence_list(l));
            chat_send_ok(cs, r->ack_id, "users", chat_json_presence_list(l));
        }
        chat__v1__presence_list__free_unpacked(l, NULL);
    }
}

static void on_req_timeout(struct wheel_timer *t)
{
    struct chat_req *r = container_of(t, struct chat_req, timer);
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

int chat_request(struct chat_sock *cs, enum req_kind kind, int64_t ack_id, const char *subject,
                 const ProtobufCMessage *m, long timeout_ms)
{
    struct chat *c = cs->chat;
    struct chat_req *r = xcalloc(1, sizeof *r);
    r->chat = c;
    r->kind = kind;
    r->ack_id = ack_id;
    snprintf(r->key, sizeof r->key, "%" PRIu64, ++c->next_req);
    memcpy(r->sock_num, cs->num, sizeof r->sock_num);
    if (cs->user)
        memcpy(r->user_id, cs->user->id, sizeof r->user_id);
    char reply[96];
    snprintf(reply, sizeof reply, "%s.%s", c->inbox, r->key);
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = xmalloc(n ? n : 1);
    protobuf_c_message_pack(m, buf);
    natsStatus s = natsConnection_PublishRequest(c->bus->nc, subject, reply, buf, (int)n);
    free(buf);
    if (s != NATS_OK || !bus_connected(c->bus)) {
        free(r);
        return -1;
    }
    map_put(&c->reqs, r->key, r);
    wheel_lws_schedule(c->wheel, &r->timer, on_req_timeout, (int64_t)timeout_ms * 1000, WHEEL_EXACT);
    return 0;
}

/* ---------- from the relay, on the loop ---------- */

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
    /* A command JetStream redelivered (after a crash or a NATS outage) is
     * answered again: its ack went out already. */
    if (cs && r->origin->ack_id >= 0 && chat_pending_take(cs, r->origin->ack_id) != 0) {
        log_debug("duplicate outcome dropped socket=%s ack=%lld", cs->k->id, (long long)r->origin->ack_id);
        cs = NULL;
    }
    if (cs && cs->k->state == SOCK_OPEN) {
        if (r->outcome_case == CHAT__V1__COMMAND_RESULT__OUTCOME_ERROR && r->error)
            chat_send_error_hint(cs, r->event, r->origin->ack_id, r->error->code, r->error->message,
                                 r->error->retry_after_ms);
        else if (r->outcome_case == CHAT__V1__COMMAND_RESULT__OUTCOME_MESSAGE && r->message)
            chat_send_ok(cs, r->origin->ack_id, "message", chat_json_message(r->message));
        else
            chat_send_ok(cs, r->origin->ack_id, NULL, NULL);
    }
    chat__v1__command_result__free_unpacked(r, NULL);
}

void chat_drain(void *ctx)
{
    struct chat *c = ctx;
    struct relay_item *it = relay_take(c->relay);
    while (it) {
        struct relay_item *next = it->next;
        struct chat_req *r;
        switch (it->kind) {
        case RELAY_USER:
            chat_deliver(c, it->key, it->data, it->len);
            break;
        case RELAY_EDGE:
            on_command_result(c, it->data, it->len);
            break;
        case RELAY_REPLY:
        case RELAY_NO_REPLY:
            if (chat_online_key(it->key))
                chat_online_reply(c, it->key, it->kind == RELAY_REPLY ? it->data : NULL, it->len);
            else if ((r = map_get(&c->reqs, it->key))) {
                req_answer(r, it->kind == RELAY_REPLY ? it->data : NULL, it->len);
                req_done(r);
            }
            break;
        case RELAY_STATUS:
            chat_on_status(c, it->data, it->len);
            break;
        case RELAY_RESYNC:
            chat_on_resync_request(c, it->data, it->len);
            break;
        case RELAY_CONNECTED:
            chat_on_resync(c);
            chat_online_lost(c);
            break;
        case RELAY_RECORD:
            chat_on_record(c, it->key, it->data, it->len);
            break;
        case RELAY_RECORDS:
            chat_on_records_start(c, it->key);
            break;
        case RELAY_RECOVERY:
            chat_on_recovery(c, it->key, it->data, it->len);
            break;
        case RELAY_RELEASE:
            chat_on_release(c, it->data, it->len);
            break;
        case RELAY_RELEASE_HERE:
            chat_on_release_here(c, it->data, it->len);
            break;
        }
        free(it);
        it = next;
    }
}

static void on_heartbeat(struct wheel_timer *t)
{
    struct chat *c = container_of(t, struct chat, t_heartbeat);
    Chat__V1__EdgeHeartbeat hb = CHAT__V1__EDGE_HEARTBEAT__INIT;
    hb.edge_id = (char *)c->cfg->edge_id;
    hb.boot_id = (char *)c->cfg->boot_id;
    hb.open_sessions = (uint32_t)c->socks.count;
    hb.interval_ms = (uint32_t)c->cfg->heartbeat_ms;
    bus_publish(c->bus, SUBJ_EDGE_HEARTBEAT, &hb.base);
    chat_recovery_alive(c);
    wheel_lws_schedule(c->wheel, &c->t_heartbeat, on_heartbeat, (int64_t)c->cfg->heartbeat_ms * 1000,
                       WHEEL_EARLY);
}

/* ---------- lifecycle ---------- */

static void describe_metrics(void)
{
    metrics_describe("chat_edge_events_in_total", "counter", "Client events received, by name.");
    metrics_describe("chat_edge_errors_total", "counter", "Refusals sent to clients, by error code.");
    metrics_describe("chat_edge_connects_total", "counter", "Socket.IO CONNECTs, by result.");
    metrics_describe("chat_edge_fanouts_total", "counter", "Events fanned out to local sockets, by name.");
    metrics_describe("chat_edge_disconnects_total", "counter", "Sockets the edge disconnected, by reason.");
    metrics_describe(
        "chat_edge_recoveries_total", "counter",
        "CONNECTs that asked to recover a session, by outcome (recovered, expired, invalid...).");
    metrics_describe("chat_edge_records_position", "gauge", "Stream sequence of the last record delivered.");
}

struct chat *chat_create(const struct chat_config *cfg, struct bus *bus, struct wheel *wheel,
                         void (*wake)(void *ctx), void *wake_ctx)
{
    struct chat *c = xcalloc(1, sizeof *c);
    describe_metrics();
    c->cfg = cfg;
    c->bus = bus;
    c->wheel = wheel;
    c->relay = relay_create(wake, wake_ctx, 256u * 1024 * 1024);
    map_init(&c->users);
    map_init(&c->socks);
    map_init(&c->reqs);
    map_init(&c->pairs);
    chat_interest_init(c);
    static const enum relay_kind kinds[NSUBS] = {RELAY_EDGE,   RELAY_REPLY, RELAY_STATUS,
                                                 RELAY_RESYNC, RELAY_USER,  RELAY_RELEASE};
    for (int i = 0; i < NSUBS; i++)
        c->sub_ctx[i] = (struct chat_sub){c, kinds[i]};
    snprintf(c->edge_subject, sizeof c->edge_subject, SUBJ_EDGE_FMT, cfg->edge_id);
    snprintf(c->inbox, sizeof c->inbox, "_INBOX.edge.%s", cfg->boot_id);
    recovery_key(c->pid_key, cfg->jwt_secret, strlen(cfg->jwt_secret));
    chat_online_create(c);
    return c;
}

int chat_start(struct chat *c)
{
    char reply_subject[80];
    snprintf(reply_subject, sizeof reply_subject, "%s.*", c->inbox);
    /* One delivery thread for every subscription (nats.c's default, made
     * explicit): what arrives on one connection reaches the relay in that
     * order, whatever the subscription. The copy of the online list relies
     * on it: presence publishes the changes an open causes before its reply,
     * so they are applied before the reply is handled. */
    nats_SetMessageDeliveryPoolSize(1);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    jo.PublishAsync.MaxPending = 65536;
    jo.PublishAsync.StallWait = 1; /* never hold the loop */
    jo.PublishAsync.ErrHandler = on_publish_error;
    jo.PublishAsync.ErrHandlerClosure = c;
    if (natsConnection_JetStream(&c->js, c->bus->nc, &jo) != NATS_OK ||
        subscribe(c, &c->subs[SUB_EDGE], c->edge_subject, SUB_EDGE) ||
        subscribe(c, &c->subs[SUB_REPLY], reply_subject, SUB_REPLY) ||
        subscribe(c, &c->subs[SUB_STATUS], SUBJ_PRESENCE_STATUS, SUB_STATUS) ||
        subscribe(c, &c->subs[SUB_RESYNC], SUBJ_PRESENCE_RESYNC, SUB_RESYNC)) {
        log_error("chat: NATS set-up failed");
        return -1;
    }
    if (chat_records_start(c) != 0) {
        log_error("chat: records thread not started");
        return -1;
    }
    chat_online_start(c); /* after chat.presence.status is subscribed */
    wheel_lws_schedule(c->wheel, &c->t_heartbeat, on_heartbeat, 0, WHEEL_EXACT);
    return 0;
}

int chat_healthy(void *ctx)
{
    struct chat *c = ctx;
    return bus_connected(c->bus) && c->records_ready;
}

void chat_stop(struct chat *c)
{
    if (!c || c->stopped)
        return;
    c->stopped = 1;
    relay_stop(c->relay); /* before the threads: none waits on a full relay */
    wheel_cancel(c->wheel, &c->t_heartbeat);
    chat_online_stop(c);
    chat_records_stop(c);
    chat_recovery_stop(c);
    size_t i;
    for (struct map_entry *m = map_first(&c->users, &i); m; m = map_next(&c->users, m, &i))
        chat_unsubscribe(c, &((struct chat_user *)m->value)->sub);
    /* Presence hears of the sockets that close with this edge from the
     * close events below, or from the missing heartbeat. */
    for (struct map_entry *m = map_first(&c->socks, &i); m; m = map_next(&c->socks, m, &i))
        chat_announce(m->value, CHAT__V1__SESSION_EVENT__KIND__KIND_CLOSE, 0);
    for (int k = 0; k < NSUBS; k++)
        chat_unsubscribe(c, &c->subs[k]);
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
    chat_pairs_cleanup(c);
    chat_interest_cleanup(c);
    chat_records_destroy(c);
    chat_online_destroy(c);
    /* What the loop will never take: a worker's release request still owns
     * half of its state. */
    for (struct relay_item *it = relay_take(c->relay), *next; it; it = next) {
        next = it->next;
        if (it->kind == RELAY_RELEASE_HERE)
            chat_release_here_drop(it->data, it->len);
        free(it);
    }
    relay_destroy(c->relay);
    free(c);
}
