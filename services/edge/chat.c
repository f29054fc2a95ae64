/* chat: seed-socket-handlers.md on top of sock.h. The sender of every relayed
 * signal is the token's user, never a field of the payload. Bad input gets
 * chat:error {event, code, message} (or the ack's error when the client asked
 * for an ack); the connection keeps working. Events that other services serve
 * answer "unavailable" until those services exist. */
#include "chat.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "chat.pb-c.h"
#include "edge.h"
#include "ids.h"
#include "log.h"
#include "mem.h"
#include "relay.h"
#include "subjects.h"

#define CONNECT_SYNC_MS 2000 /* longest wait for the subscription round trip */

struct chat_user {
    char id[IDS_UUID_LEN + 1];
    natsSubscription *sub;
    struct chat_sock *socks; /* every local socket of the user */
};

struct chat_sock {
    struct sock *k;
    struct chat_user *user;
    struct chat_sock *next; /* in user->socks */
    struct chat *chat;
    char username[AUTH_MAX_USERNAME + 1];
    lws_sorted_usec_list_t sul_sync;
    char num[24]; /* k->num in decimal: key of chat->pending */
};

struct chat {
    struct edge *e;
    struct relay *relay;
    struct map users;   /* user id -> struct chat_user */
    struct map pending; /* socket number -> struct chat_sock awaiting sync */
    natsSubscription *edge_sub;
    char edge_subject[128];
    int stopped;
};

/* The one chat instance of the process (the sock_app callbacks have no
 * closure of their own). */
static struct chat *the_chat;

/* ---------- NATS threads ---------- */

static void on_user_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct chat *c = closure;
    const char *subj = natsMsg_GetSubject(msg);
    const char *dot = strrchr(subj, '.');
    relay_push(c->relay, RELAY_USER, dot ? dot + 1 : "", natsMsg_GetData(msg),
               (size_t)natsMsg_GetDataLength(msg));
    natsMsg_Destroy(msg);
}

static void on_edge_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct chat *c = closure;
    relay_push(c->relay, RELAY_EDGE, "", natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg));
    natsMsg_Destroy(msg);
}

/* ---------- users and their subscriptions ---------- */

static struct chat_user *user_attach(struct chat *c, struct chat_sock *cs, const char *id)
{
    struct chat_user *u = map_get(&c->users, id);
    if (!u) {
        u = xcalloc(1, sizeof *u);
        memcpy(u->id, id, sizeof u->id);
        char subj[64];
        snprintf(subj, sizeof subj, SUBJ_USER_FMT, id);
        natsStatus s = natsConnection_Subscribe(&u->sub, c->e->bus.nc, subj, on_user_msg, c);
        if (s == NATS_OK)
            natsSubscription_SetPendingLimits(u->sub, 65536, 64 * 1024 * 1024);
        else
            log_warn("subscribe failed subject=%s: %s", subj, natsStatus_GetText(s));
        map_put(&c->users, u->id, u);
    }
    cs->user = u;
    cs->next = u->socks;
    u->socks = cs;
    return u;
}

static void unsubscribe(struct chat_user *u)
{
    if (u->sub) {
        natsSubscription_Unsubscribe(u->sub);
        natsSubscription_Destroy(u->sub);
        u->sub = NULL;
    }
}

static void user_detach(struct chat *c, struct chat_sock *cs)
{
    struct chat_user *u = cs->user;
    if (!u)
        return;
    struct chat_sock **p = &u->socks;
    while (*p && *p != cs)
        p = &(*p)->next;
    if (*p)
        *p = cs->next;
    cs->user = NULL;
    if (!u->socks) {
        if (!c->stopped)
            unsubscribe(u);
        map_del(&c->users, u->id);
        free(u);
    }
}

/* ---------- outgoing events ---------- */

static void send_error(struct chat_sock *cs, const char *event, int64_t ack_id, const char *code,
                       const char *message)
{
    json_t *err = json_pack("{s:s,s:s}", "code", code, "message", message);
    if (ack_id >= 0) {
        json_t *args = json_pack("[{s:b,s:O}]", "ok", 0, "error", err);
        sock_ack(cs->k, ack_id, args);
        json_decref(args);
    } else {
        json_t *args =
            json_pack("[s{s:s,s:s,s:s}]", "chat:error", "event", event, "code", code, "message", message);
        sock_emit(cs->k, args);
        json_decref(args);
    }
    json_decref(err);
}

/* The JSON event for a Delivery, or NULL for one this edge does not know. */
static json_t *delivery_json(const Chat__V1__Delivery *d)
{
    switch (d->event_case) {
    case CHAT__V1__DELIVERY__EVENT_TYPING_START:
        return json_pack("[s{s:s,s:s}]", "typing:start", "userId", d->typing_start->user_id, "username",
                         d->typing_start->username);
    case CHAT__V1__DELIVERY__EVENT_TYPING_STOP:
        return json_pack("[s{s:s}]", "typing:stop", "userId", d->typing_stop->user_id);
    case CHAT__V1__DELIVERY__EVENT_GHOST_TYPING:
        return json_pack("[s{s:s,s:s}]", "ghost:typing", "userId", d->ghost_typing->user_id, "text",
                         d->ghost_typing->text);
    case CHAT__V1__DELIVERY__EVENT_AUDIO_RECORDING_START:
        return json_pack("[s{s:s}]", "audio:recording:start", "userId", d->audio_recording_start->user_id);
    case CHAT__V1__DELIVERY__EVENT_AUDIO_RECORDING_STOP:
        return json_pack("[s{s:s}]", "audio:recording:stop", "userId", d->audio_recording_stop->user_id);
    case CHAT__V1__DELIVERY__EVENT_AUDIO_LISTENING:
        return json_pack("[s{s:s,s:s,s:b}]", "audio:listening", "userId", d->audio_listening->user_id,
                         "messageId", d->audio_listening->message_id, "isPlaying",
                         d->audio_listening->is_playing);
    default:
        return NULL;
    }
}

/* Encodes a Delivery once and sends it to every open socket of the user. */
static void deliver(struct chat *c, const char *user_id, const uint8_t *data, size_t len)
{
    struct chat_user *u = map_get(&c->users, user_id);
    if (!u)
        return; /* the last socket left after NATS had it queued */
    Chat__V1__Delivery *d = chat__v1__delivery__unpack(NULL, len, data);
    if (!d) {
        log_warn("undecodable delivery user=%s len=%zu", user_id, len);
        return;
    }
    json_t *args = delivery_json(d);
    chat__v1__delivery__free_unpacked(d, NULL);
    if (!args)
        return;
    struct buf text;
    buf_init(&text);
    sio_encode(&text, SIO_EVENT, "/", -1, 0, args);
    json_decref(args);
    for (struct chat_sock *cs = u->socks; cs; cs = cs->next)
        if (cs->k->state == SOCK_OPEN)
            sock_send_encoded(cs->k, text.data, text.len);
    buf_cleanup(&text);
}

static void finish_connect(struct chat_sock *cs)
{
    lws_sul_cancel(&cs->sul_sync);
    map_del(&cs->chat->pending, cs->num);
    sock_accept(cs->k);
}

static void on_command_result(struct chat *c, const uint8_t *data, size_t len)
{
    Chat__V1__CommandResult *r = chat__v1__command_result__unpack(NULL, len, data);
    if (!r)
        return;
    if (r->origin && strcmp(r->event, "connect") == 0) {
        char num[24];
        snprintf(num, sizeof num, "%" PRIu64, r->origin->conn_id);
        struct chat_sock *cs = map_get(&c->pending, num);
        if (cs)
            finish_connect(cs);
    }
    chat__v1__command_result__free_unpacked(r, NULL);
}

void chat_drain(struct chat *c)
{
    struct relay_item *it = relay_take(c->relay);
    while (it) {
        struct relay_item *next = it->next;
        if (it->kind == RELAY_USER)
            deliver(c, it->key, it->data, it->len);
        else
            on_command_result(c, it->data, it->len);
        free(it);
        it = next;
    }
}

/* ---------- connect / disconnect ---------- */

static int nsp_valid(const char *nsp)
{
    return strcmp(nsp, "/") == 0;
}

static void on_sync_timeout(lws_sorted_usec_list_t *sul)
{
    struct chat_sock *cs = lws_container_of(sul, struct chat_sock, sul_sync);
    log_warn("connect sync timed out user=%s: accepting", cs->user ? cs->user->id : "?");
    finish_connect(cs);
}

/* architecture.md §Connect: verify the token; subscribe the user's subject;
 * then answer the CONNECT only once NATS has echoed a marker published after
 * the SUB, so deliveries to this socket work from its first moment on. */
static int authorize(struct sock *k, json_t *auth, json_t **error)
{
    struct chat *c = the_chat;
    json_t *tok = json_object_get(auth, "token");
    struct auth_claims claims;
    const char *why = "no token";
    if (!json_is_string(tok) || auth_verify(&claims, json_string_value(tok), json_string_length(tok),
                                            (const unsigned char *)c->e->cfg->jwt_secret,
                                            strlen(c->e->cfg->jwt_secret), time(NULL), &why) != 0) {
        log_info("connect refused socket=%s reason=\"%s\"", k->id, why);
        *error = json_pack("{s:s}", "message", "unauthorized");
        return SOCK_REJECT;
    }
    struct chat_sock *cs = xcalloc(1, sizeof *cs);
    cs->k = k;
    cs->chat = c;
    memcpy(cs->username, claims.username, sizeof cs->username);
    snprintf(cs->num, sizeof cs->num, "%" PRIu64, k->num);
    k->app_state = cs;
    user_attach(c, cs, claims.user_id);
    log_info("connect user=%s socket=%s", claims.user_id, k->id);

    if (!bus_connected(&c->e->bus))
        return SOCK_ACCEPT; /* no NATS now: nothing to wait for */
    Chat__V1__Origin origin = CHAT__V1__ORIGIN__INIT;
    origin.edge_id = (char *)c->e->cfg->edge_id;
    origin.conn_id = k->num;
    origin.ack_id = -1;
    Chat__V1__CommandResult marker = CHAT__V1__COMMAND_RESULT__INIT;
    marker.origin = &origin;
    marker.event = "connect";
    marker.outcome_case = CHAT__V1__COMMAND_RESULT__OUTCOME_OK;
    marker.ok = 1;
    if (bus_publish(&c->e->bus, c->edge_subject, &marker.base) != 0)
        return SOCK_ACCEPT;
    map_put(&c->pending, cs->num, cs);
    lws_sul_schedule(c->e->ctx, 0, &cs->sul_sync, on_sync_timeout,
                     (lws_usec_t)CONNECT_SYNC_MS * LWS_US_PER_MS);
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
    log_info("disconnect user=%s socket=%s reason=\"%s\"", cs->user ? cs->user->id : "?", k->id, reason);
    lws_sul_cancel(&cs->sul_sync);
    map_del(&cs->chat->pending, cs->num);
    user_detach(cs->chat, cs);
    free(cs);
    k->app_state = NULL;
}

/* ---------- client events ---------- */

/* A handler validates one event and acts on it. Returns 0, or -1 with *code
 * and *msg (static text) describing the refusal. */
typedef int (*handler_fn)(struct chat_sock *cs, json_t *arg, const char **code, const char **msg);

/* Reads a required uuid field of obj into out. */
static int get_uuid(json_t *obj, const char *key, char *out, const char **code, const char **msg)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v) || ids_uuid_norm(out, json_string_value(v), json_string_length(v)) != 0) {
        *code = "bad_request";
        *msg = !v ? "a required id field is missing" : "an id field is not a uuid";
        return -1;
    }
    return 0;
}

static int publish_delivery(struct chat_sock *cs, const char *to, Chat__V1__Delivery *d, const char **code,
                            const char **msg)
{
    char subj[64];
    snprintf(subj, sizeof subj, SUBJ_USER_FMT, to);
    if (bus_publish(&cs->chat->e->bus, subj, &d->base) != 0) {
        *code = "unavailable";
        *msg = "the message bus is unavailable; try again";
        return -1;
    }
    return 0;
}

/* typing:stop, audio:recording:start/stop: {recipientId} -> {userId}. */
static int relay_signal(struct chat_sock *cs, json_t *arg, Chat__V1__Delivery__EventCase which,
                        const char **code, const char **msg)
{
    char to[IDS_UUID_LEN + 1];
    if (get_uuid(arg, "recipientId", to, code, msg))
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
    return publish_delivery(cs, to, &d, code, msg);
}

static int on_typing_start(struct chat_sock *cs, json_t *arg, const char **code, const char **msg)
{
    char to[IDS_UUID_LEN + 1];
    if (get_uuid(arg, "recipientId", to, code, msg))
        return -1;
    Chat__V1__TypingStart t = CHAT__V1__TYPING_START__INIT;
    t.user_id = cs->user->id;
    t.username = cs->username;
    Chat__V1__Delivery d = CHAT__V1__DELIVERY__INIT;
    d.event_case = CHAT__V1__DELIVERY__EVENT_TYPING_START;
    d.typing_start = &t;
    return publish_delivery(cs, to, &d, code, msg);
}

static int on_typing_stop(struct chat_sock *cs, json_t *arg, const char **code, const char **msg)
{
    return relay_signal(cs, arg, CHAT__V1__DELIVERY__EVENT_TYPING_STOP, code, msg);
}

static int on_recording_start(struct chat_sock *cs, json_t *arg, const char **code, const char **msg)
{
    return relay_signal(cs, arg, CHAT__V1__DELIVERY__EVENT_AUDIO_RECORDING_START, code, msg);
}

static int on_recording_stop(struct chat_sock *cs, json_t *arg, const char **code, const char **msg)
{
    return relay_signal(cs, arg, CHAT__V1__DELIVERY__EVENT_AUDIO_RECORDING_STOP, code, msg);
}

static int on_ghost_typing(struct chat_sock *cs, json_t *arg, const char **code, const char **msg)
{
    char to[IDS_UUID_LEN + 1];
    if (get_uuid(arg, "recipientId", to, code, msg))
        return -1;
    json_t *text = json_object_get(arg, "text");
    if (!json_is_string(text)) {
        *code = "bad_request";
        *msg = "text must be a string";
        return -1;
    }
    if (json_string_length(text) > (size_t)cs->chat->e->cfg->max_ghost_text) {
        *code = "too_large";
        *msg = "text is longer than EDGE_MAX_GHOST_TEXT bytes";
        return -1;
    }
    if (memchr(json_string_value(text), '\0', json_string_length(text))) {
        *code = "bad_request";
        *msg = "text contains a NUL character";
        return -1;
    }
    Chat__V1__GhostTyping g = CHAT__V1__GHOST_TYPING__INIT;
    g.user_id = cs->user->id;
    g.text = (char *)json_string_value(text);
    Chat__V1__Delivery d = CHAT__V1__DELIVERY__INIT;
    d.event_case = CHAT__V1__DELIVERY__EVENT_GHOST_TYPING;
    d.ghost_typing = &g;
    return publish_delivery(cs, to, &d, code, msg);
}

/* audio:listening {messageId, senderId, isPlaying}: to the message's sender. */
static int on_audio_listening(struct chat_sock *cs, json_t *arg, const char **code, const char **msg)
{
    char to[IDS_UUID_LEN + 1], message_id[IDS_UUID_LEN + 1];
    if (get_uuid(arg, "messageId", message_id, code, msg) || get_uuid(arg, "senderId", to, code, msg))
        return -1;
    json_t *playing = json_object_get(arg, "isPlaying");
    if (!json_is_boolean(playing)) {
        *code = "bad_request";
        *msg = "isPlaying must be a boolean";
        return -1;
    }
    Chat__V1__AudioListening l = CHAT__V1__AUDIO_LISTENING__INIT;
    l.user_id = cs->user->id;
    l.message_id = message_id;
    l.is_playing = json_is_true(playing);
    Chat__V1__Delivery d = CHAT__V1__DELIVERY__INIT;
    d.event_case = CHAT__V1__DELIVERY__EVENT_AUDIO_LISTENING;
    d.audio_listening = &l;
    return publish_delivery(cs, to, &d, code, msg);
}

static int on_not_served(struct chat_sock *cs, json_t *arg, const char **code, const char **msg)
{
    (void)cs;
    (void)arg;
    *code = "unavailable";
    *msg = "this event is served by a service this deployment does not run yet";
    return -1;
}

static const struct {
    const char *name;
    handler_fn fn;
} handlers[] = {
    {"typing:start", on_typing_start},
    {"typing:stop", on_typing_stop},
    {"ghost:typing", on_ghost_typing},
    {"audio:recording:start", on_recording_start},
    {"audio:recording:stop", on_recording_stop},
    {"audio:listening", on_audio_listening},
    {"message:send", on_not_served},
    {"message:read", on_not_served},
    {"message:history", on_not_served},
    {"presence:update", on_not_served},
    {"presence:request", on_not_served},
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
    if (p->type == SIO_BINARY_EVENT) {
        code = "bad_request";
        msg = "binary payloads are not accepted";
    } else {
        for (size_t i = 0; i < sizeof handlers / sizeof handlers[0]; i++) {
            if (strcmp(handlers[i].name, name) != 0)
                continue;
            json_t *arg = json_array_get(p->data, 1);
            if (!json_is_object(arg)) {
                code = "bad_request";
                msg = "the payload must be a JSON object";
            } else {
                rc = handlers[i].fn(cs, arg, &code, &msg);
            }
            break;
        }
    }
    if (rc == 0) {
        if (p->ack_id >= 0) {
            json_t *args = json_pack("[{s:b}]", "ok", 1);
            sock_ack(k, p->ack_id, args);
            json_decref(args);
        }
        return;
    }
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

struct chat *chat_create(struct edge *e)
{
    struct chat *c = xcalloc(1, sizeof *c);
    c->e = e;
    c->relay = relay_create(e->ctx, 256u * 1024 * 1024);
    map_init(&c->users);
    map_init(&c->pending);
    snprintf(c->edge_subject, sizeof c->edge_subject, SUBJ_EDGE_FMT, e->cfg->edge_id);
    natsStatus s = natsConnection_Subscribe(&c->edge_sub, e->bus.nc, c->edge_subject, on_edge_msg, c);
    if (s != NATS_OK) {
        log_error("subscribe failed subject=%s: %s", c->edge_subject, natsStatus_GetText(s));
        chat_destroy(c);
        return NULL;
    }
    the_chat = c;
    return c;
}

void chat_stop(struct chat *c)
{
    if (!c || c->stopped)
        return;
    c->stopped = 1;
    relay_stop(c->relay);
    size_t i;
    for (struct map_entry *m = map_first(&c->users, &i); m; m = map_next(&c->users, m, &i))
        unsubscribe(m->value);
    if (c->edge_sub) {
        natsSubscription_Unsubscribe(c->edge_sub);
        natsSubscription_Destroy(c->edge_sub);
        c->edge_sub = NULL;
    }
}

void chat_destroy(struct chat *c)
{
    if (!c)
        return;
    chat_stop(c);
    map_cleanup(&c->users); /* empty by now: every socket was closed */
    map_cleanup(&c->pending);
    relay_destroy(c->relay);
    if (the_chat == c)
        the_chat = NULL;
    free(c);
}
