/* chat_events: the client events of the seed (the README's event table),
 * validated (chat_valid.c) and acted on: signals straight to the
 * recipient's subject, commands to JetStream, queries as requests; and the
 * answers to the client (ack or chat:error). The sender of every relayed
 * signal is the token's user, never a field of the payload. Bad input gets
 * chat:error {event, code, message} (or the ack's error when the client asked
 * for an ack); the connection keeps working. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat_int.h"
#include "chat_json.h"
#include "chat_valid.h"
#include "ids.h"
#include "log.h"
#include "metrics.h"
#include "subjects.h"

/* ---------- answers to the client ---------- */

void chat_count(const char *metric, const char *label, const char *value)
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

void chat_send_error_hint(struct chat_sock *cs, const char *event, int64_t ack_id, const char *code,
                          const char *message, int64_t retry_after_ms)
{
    json_t *args, *err;
    chat_count("chat_edge_errors_total", "code", code);
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

void chat_send_error(struct chat_sock *cs, const char *event, int64_t ack_id, const char *code,
                     const char *message)
{
    chat_send_error_hint(cs, event, ack_id, code, message, 0);
}

/* Acks {ok: true} plus key: value when value is set (stolen). */
void chat_send_ok(struct chat_sock *cs, int64_t ack_id, const char *key, json_t *value)
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

void chat_emit(struct chat_sock *cs, const char *event, json_t *payload)
{
    json_t *args = json_pack("[so]", event, payload);
    sock_emit(cs->k, args);
    json_decref(args);
}

/* ---------- client events ---------- */

/* A handler validates one event and acts on it. Returns 0 (done: ack ok),
 * 1 (the answer comes later), or -1 with *code and *msg (static text). */
typedef int (*handler_fn)(struct chat_sock *cs, json_t *arg, int64_t ack_id, const char **code,
                          const char **msg);

static Chat__V1__Origin origin_of(struct chat_sock *cs, int64_t ack_id)
{
    Chat__V1__Origin o = CHAT__V1__ORIGIN__INIT;
    o.edge_id = (char *)cs->chat->cfg->edge_id;
    o.conn_id = cs->k->num;
    o.ack_id = ack_id;
    return o;
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
    return chat_publish_delivery(cs, v.to, &d, code, msg);
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
    return chat_publish_delivery(cs, v.to, &d, code, msg);
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
    if (chat_valid_ghost(&v, arg, (size_t)cs->chat->cfg->max_ghost_text, code, msg))
        return -1;
    Chat__V1__GhostTyping g = CHAT__V1__GHOST_TYPING__INIT;
    g.user_id = cs->user->id;
    g.text = (char *)v.text;
    Chat__V1__Delivery d = CHAT__V1__DELIVERY__INIT;
    d.event_case = CHAT__V1__DELIVERY__EVENT_GHOST_TYPING;
    d.ghost_typing = &g;
    return chat_publish_delivery(cs, v.to, &d, code, msg);
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
    return chat_publish_delivery(cs, v.to, &d, code, msg);
}

/* message:send {recipientId, content, type, clientMessageId?}: the edge
 * gives the id (UUIDv7); messaging stores, then answers the ack and sends
 * message:received / message:sent. */
static int on_message_send(struct chat_sock *cs, json_t *arg, int64_t ack_id, const char **code,
                           const char **msg)
{
    struct chat_valid_send v;
    char id[IDS_UUID_LEN + 1];
    if (chat_valid_send(&v, arg, (size_t)cs->chat->cfg->max_message_bytes, code, msg) ||
        chat_pair_take(cs, v.to, code, msg))
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
             ids_partition(cs->user->id, (unsigned)cs->chat->cfg->partitions));
    return chat_publish_command(cs, subj, id, ack_id, &cmd.base, code, msg);
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
    return chat_publish_command(cs, SUBJ_CMD_READ, NULL, ack_id, &cmd.base, code, msg);
}

/* message:history {withUserId, before?, limit?} (ack required): newest first,
 * before = the id of the oldest message the client has. */
static int on_message_history(struct chat_sock *cs, json_t *arg, int64_t ack_id, const char **code,
                              const char **msg)
{
    struct chat_valid_history v;
    if (ack_id < 0)
        FAIL("bad_request", "message:history answers through its ack: emit it with one");
    if (chat_valid_history(&v, arg, code, msg) || chat_query_take(cs, code, msg))
        return -1;
    Chat__V1__HistoryQuery q = CHAT__V1__HISTORY_QUERY__INIT;
    q.user_id = cs->user->id;
    q.with_user_id = v.with;
    q.before_id = v.before;
    q.limit = v.limit;
    q.timeout_ms = REQUEST_TIMEOUT_MS; /* messaging drops it once this has passed */
    if (chat_request(cs, REQ_HISTORY, ack_id, SUBJ_QUERY_MESSAGES, &q.base, REQUEST_TIMEOUT_MS) != 0)
        FAIL("unavailable", "the message bus is unavailable; try again");
    return 1;
}

/* conversation:list {before?, limit?} (ack required): the user's
 * conversations, the latest activity first; before = the nextBefore of the
 * previous page. */
static int on_conversation_list(struct chat_sock *cs, json_t *arg, int64_t ack_id, const char **code,
                                const char **msg)
{
    struct chat_valid_conversations v;
    if (ack_id < 0)
        FAIL("bad_request", "conversation:list answers through its ack: emit it with one");
    if (chat_valid_conversations(&v, arg, code, msg) || chat_query_take(cs, code, msg))
        return -1;
    Chat__V1__ConversationQuery q = CHAT__V1__CONVERSATION_QUERY__INIT;
    q.user_id = cs->user->id;
    q.before_at_us = v.before_us;
    q.before_with_id = v.before_with;
    q.limit = v.limit;
    q.timeout_ms = REQUEST_TIMEOUT_MS; /* messaging drops it once this has passed */
    if (chat_request(cs, REQ_CONVERSATIONS, ack_id, SUBJ_QUERY_CONVERSATIONS, &q.base, REQUEST_TIMEOUT_MS) !=
        0)
        FAIL("unavailable", "the message bus is unavailable; try again");
    return 1;
}

/* conversation:read {withUserId, upTo}: every message of withUserId to the
 * user up to upTo read at once (messaging: one statement, one message:read
 * to the sender per message). A command, like message:read. */
static int on_conversation_read(struct chat_sock *cs, json_t *arg, int64_t ack_id, const char **code,
                                const char **msg)
{
    struct chat_valid_conversation_read v;
    if (chat_valid_conversation_read(&v, arg, code, msg))
        return -1;
    Chat__V1__Origin origin = origin_of(cs, ack_id);
    Chat__V1__MarkRead cmd = CHAT__V1__MARK_READ__INIT;
    cmd.reader_id = cs->user->id;
    cmd.with_user_id = v.with;
    cmd.up_to_id = v.up_to;
    cmd.origin = &origin;
    return chat_publish_command(cs, SUBJ_CMD_READ, NULL, ack_id, &cmd.base, code, msg);
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
    if (!bus_connected(cs->chat->bus) || bus_publish(cs->chat->bus, SUBJ_PRESENCE_SET, &set.base) != 0)
        FAIL("unavailable", "the message bus is unavailable; try again");
    return 0;
}

/* presence:request [ids] -> presence:response [PresenceInfo]. */
static int on_presence_request(struct chat_sock *cs, json_t *arg, int64_t ack_id, const char **code,
                               const char **msg)
{
    struct chat_valid_ids v;
    if (chat_valid_ids(&v, arg, (size_t)cs->chat->cfg->max_presence_query, code, msg))
        return -1;
    if (chat_query_take(cs, code, msg)) {
        chat_valid_ids_cleanup(&v);
        return -1;
    }
    chat_interest_asked(cs, v.ptrs, v.n); /* PRESENCE_SCOPE=interest: their changes from now on */
    Chat__V1__PresenceQuery q = CHAT__V1__PRESENCE_QUERY__INIT;
    q.n_user_ids = v.n;
    q.user_ids = v.ptrs;
    int rc = 1;
    if (chat_request(cs, REQ_PRESENCE, ack_id, SUBJ_PRESENCE_QUERY, &q.base, REQUEST_TIMEOUT_MS) != 0) {
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
    {"presence:request", on_presence_request, 1},   {"conversation:list", on_conversation_list, 0},
    {"conversation:read", on_conversation_read, 0},
};

void chat_on_packet(void *ctx, struct sock *k, struct sio_packet *p)
{
    (void)ctx;
    struct chat_sock *cs = k->app_state;
    if (p->type == SIO_ACK || p->type == SIO_BINARY_ACK)
        return; /* this app never asks clients for acks: late or stray */
    json_t *name_v = json_array_get(p->data, 0);
    const char *name = json_is_string(name_v) ? json_string_value(name_v) : "";
    const char *code = "unknown_event", *msg = "no such event";
    int rc = -1;
    const struct chat_config *cfg = cs->chat->cfg;
    if (!bucket_take(&cs->events, (double)cfg->events_per_s, (double)cfg->events_burst, bucket_now_us())) {
        /* Paced per socket: refused events say so; a client that keeps
         * going past EDGE_RATE_DISCONNECT refusals in a row is cut off. */
        if (++cs->refused_in_row >= cfg->rate_disconnect) {
            log_warn("rate limit: disconnecting user=%s socket=%s", cs->user->id, k->id);
            chat_count("chat_edge_disconnects_total", "reason", "rate_limited");
            sock_kick(k); /* frees cs */
            return;
        }
        chat_send_error(cs, name, p->ack_id, "rate_limited", "too many events: slow down");
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
            chat_count("chat_edge_events_in_total", "event", handlers[i].name);
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
        chat_send_ok(cs, p->ack_id, NULL, NULL);
    if (rc >= 0)
        return;
    log_debug("event refused user=%s event=%.64s code=%s", cs->user->id, name, code);
    chat_send_error(cs, name, p->ack_id, code, msg);
}
