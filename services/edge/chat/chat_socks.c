/* chat_socks: the chat's sockets and users. A CONNECT is authorized by its
 * token; every socket of a user on this edge hangs off one struct chat_user,
 * which holds the user's one NATS subscription. Deliveries and statuses that
 * come from NATS are written once into a frame and queued for every socket
 * they concern. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "ids.h"
#include "chat_int.h"
#include "chat_wire.h"
#include "log.h"
#include "subjects.h"

/* ---------- users ---------- */

void chat_user_attach(struct chat *c, struct chat_sock *cs, const char *id)
{
    struct chat_user *u = map_get(&c->users, id);
    if (!u) {
        u = xcalloc(1, sizeof *u);
        memcpy(u->id, id, sizeof u->id);
        chat_subscribe_user(c, u);
        chat_interest_user_new(c, u);
        map_put(&c->users, u->id, u);
    }
    cs->user = u;
    cs->next = u->socks;
    u->socks = cs;
    u->nsocks++;
}

void chat_user_detach(struct chat *c, struct chat_sock *cs)
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
            chat_unsubscribe(c, &u->sub);
        chat_interest_user_gone(c, u);
        map_del(&c->users, u->id);
        free(u);
    }
}

/* ---------- acks of commands ---------- */

int chat_pending_add(struct chat_sock *cs, int64_t ack_id)
{
    if (cs->npending == CHAT_MAX_PENDING)
        return -1;
    if (cs->npending == cs->pending_cap) {
        cs->pending_cap = cs->pending_cap ? cs->pending_cap * 2 : 8;
        cs->pending = xrealloc(cs->pending, cs->pending_cap * sizeof *cs->pending);
    }
    cs->pending[cs->npending++] = ack_id;
    return 0;
}

int chat_pending_take(struct chat_sock *cs, int64_t ack_id)
{
    for (uint32_t i = 0; i < cs->npending; i++) {
        if (cs->pending[i] != ack_id)
            continue;
        cs->pending[i] = cs->pending[--cs->npending];
        if (cs->npending == 0 && cs->pending_cap > 64) { /* a burst is over: back to little */
            free(cs->pending);
            cs->pending = NULL;
            cs->pending_cap = 0;
        }
        return 0;
    }
    return -1;
}

/* ---------- events of one user to another ---------- */

#define PAIRS_MAX 262144 /* pairs tracked at once; idle ones are dropped first */

/* Drops the pairs whose bucket is full again (idle long enough to have
 * refilled): what is left is only the pairs that sent recently. */
static void pairs_sweep(struct chat *c, long long now)
{
    double rate = (double)c->cfg->to_user_per_s, burst = (double)c->cfg->to_user_burst;
    size_t i;
    struct map_entry *m = map_first(&c->pairs, &i);
    while (m) {
        struct map_entry *next = map_next(&c->pairs, m, &i);
        struct bucket *b = m->value;
        if (b->tokens + (double)(now - b->last_us) * rate / 1e6 >= burst) {
            map_del(&c->pairs, m->key); /* next stays valid: it is another entry */
            free(b);
        }
        m = next;
    }
}

int chat_pair_take(struct chat_sock *cs, const char *to, const char **code, const char **msg)
{
    struct chat *c = cs->chat;
    if (c->cfg->to_user_per_s <= 0)
        return 0;
    char key[2 * IDS_UUID_LEN + 2];
    snprintf(key, sizeof key, "%s|%s", cs->user->id, to);
    long long now = bucket_now_us();
    struct bucket *b = map_get(&c->pairs, key);
    if (!b) {
        if (c->pairs.count >= PAIRS_MAX / 2)
            pairs_sweep(c, now);
        if (c->pairs.count >= PAIRS_MAX)
            FAIL("rate_limited", "too many events to other users: slow down");
        b = xcalloc(1, sizeof *b);
        map_put(&c->pairs, key, b);
    }
    if (!bucket_take(b, (double)c->cfg->to_user_per_s, (double)c->cfg->to_user_burst, now))
        FAIL("rate_limited", "too many events to this user: slow down");
    return 0;
}

int chat_query_take(struct chat_sock *cs, const char **code, const char **msg)
{
    double rate = (double)cs->chat->cfg->queries_per_user_per_s;
    if (rate > 0 && !bucket_take(&cs->user->queries, rate, 2 * rate, bucket_now_us()))
        FAIL("rate_limited", "too many queries: slow down");
    return 0;
}

void chat_pairs_cleanup(struct chat *c)
{
    size_t i;
    struct map_entry *m;
    while ((m = map_first(&c->pairs, &i)))
        free(map_del(&c->pairs, m->key));
    map_cleanup(&c->pairs);
}

/* ---------- frames ---------- */

/* Sends one packet (written once) to sockets: one user's (user set) or
 * everyone's. */
static void fan_out(struct chat *c, struct chat_user *user, const char *event, const struct buf *packet,
                    uint64_t coalesce)
{
    chat_count("chat_edge_fanouts_total", "event", event);
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

int chat_fan_out_delivery(struct chat *c, struct chat_user *u, const Chat__V1__Delivery *d)
{
    struct buf b;
    const char *event;
    buf_init(&b);
    int r = chat_wire_delivery(&b, d, NULL, &event);
    if (r == 0)
        fan_out(c, u, event, &b, d->event_case == CHAT__V1__DELIVERY__EVENT_GHOST_TYPING ? ghost_key(d) : 0);
    buf_cleanup(&b);
    return r;
}

void chat_deliver(struct chat *c, const char *user_id, const uint8_t *data, size_t len)
{
    struct chat_user *u = map_get(&c->users, user_id);
    if (!u)
        return; /* the last socket left after NATS had it queued */
    Chat__V1__Delivery *d = chat__v1__delivery__unpack(NULL, len, data);
    if (!d || chat_fan_out_delivery(c, u, d) != 0)
        log_warn("undecodable delivery user=%s len=%zu", user_id, len);
    chat__v1__delivery__free_unpacked(d, NULL);
}

/* A change of presence: user:status to every socket, and the copy of the
 * online list. */
void chat_on_status(struct chat *c, const uint8_t *data, size_t len)
{
    Chat__V1__PresenceChange *ch = chat__v1__presence_change__unpack(NULL, len, data);
    if (!ch) {
        log_limited(LOG_WARN, "undecodable presence change len=%zu", len);
        return;
    }
    struct buf b;
    buf_init(&b);
    if (ch->info && chat_wire_status(&b, ch->info) == 0) {
        if (chat_interest_on(c)) {
            chat_count("chat_edge_fanouts_total", "event", "user:status");
            struct frame *f = frame_text(EIO_MESSAGE, b.data, b.len);
            chat_interest_status(c, ch->info->user_id, f);
            frame_unref(f);
        } else {
            fan_out(c, NULL, "user:status", &b, 0);
        }
    }
    buf_cleanup(&b);
    chat_online_change(c, ch);
    chat__v1__presence_change__free_unpacked(ch, NULL);
}

/* Presence learns every open session of this edge again, without
 * broadcasts (docs/architecture.md §Presence). */
void chat_on_resync(struct chat *c)
{
    size_t i;
    for (struct map_entry *m = map_first(&c->socks, &i); m; m = map_next(&c->socks, m, &i)) {
        struct chat_sock *cs = m->value;
        if (cs->k->state == SOCK_OPEN)
            chat_announce(cs, CHAT__V1__SESSION_EVENT__KIND__KIND_OPEN, 1);
    }
}

/* A ResyncRequest asks every edge (edge_id "") or one: this one answers
 * only when it is asked. */
void chat_on_resync_request(struct chat *c, const uint8_t *data, size_t len)
{
    Chat__V1__ResyncRequest *rr = chat__v1__resync_request__unpack(NULL, len, data);
    if (!rr) {
        log_limited(LOG_WARN, "undecodable resync request len=%zu: ignored", len);
        return;
    }
    if (!*rr->edge_id || strcmp(rr->edge_id, c->cfg->edge_id) == 0) {
        log_info("resync requested by presence %s: announcing %zu sockets again", rr->presence_boot_id,
                 c->socks.count);
        chat_on_resync(c);
    } else {
        log_debug("resync request for edge %s: not this one", rr->edge_id);
    }
    chat__v1__resync_request__free_unpacked(rr, NULL);
}

/* ---------- connect / disconnect ---------- */

void chat_finish_connect(struct chat_sock *cs, const uint8_t *data, size_t len)
{
    cs->waiting &= ~WAIT_PRESENCE;
    if (data) {
        cs->presence = xmalloc(len ? len : 1);
        memcpy(cs->presence, data, len);
        cs->presence_len = len;
        chat_online_wait(cs); /* the copy, if a snapshot of it is on its way */
    }
    chat_open(cs);
}

/* The first presence:update, once presence answered the open (the changes
 * the open caused came before its answer): from the edge's copy of the
 * online list when it is in step, else the list presence's answer carries
 * (PRESENCE_LIST_IN_REPLY=1; empty otherwise). Nothing when presence did not
 * answer. */
static void send_presence(struct chat_sock *cs)
{
    if (!cs->presence)
        return;
    int interest = chat_interest_on(cs->chat);
    struct frame *f = interest ? chat_interest_list(cs) : chat_online_list(cs->chat);
    if (f) {
        sock_send_frame(cs->k, f);
        frame_unref(f);
        free(cs->presence);
        cs->presence = NULL;
        return;
    }
    Chat__V1__PresenceList *list = chat__v1__presence_list__unpack(NULL, cs->presence_len, cs->presence);
    free(cs->presence);
    cs->presence = NULL;
    if (!list)
        return;
    if (interest) { /* presence's list, as the copy would be: the user's partners only */
        size_t n = 0;
        for (size_t i = 0; i < list->n_users; i++) {
            if (map_get(&cs->user->partners, list->users[i]->user_id))
                list->users[n++] = list->users[i];
            else
                chat__v1__presence_info__free_unpacked(list->users[i], NULL);
        }
        list->n_users = n;
    }
    struct buf b;
    buf_init(&b);
    if (chat_wire_presence_list(&b, "presence:update", list) == 0) {
        f = frame_text(EIO_MESSAGE, b.data, b.len);
        f->unbounded = 1;
        sock_send_frame(cs->k, f);
        frame_unref(f);
    } else {
        log_warn("presence list with a name that is not UTF-8: not sent socket=%s", cs->k->id);
    }
    buf_cleanup(&b);
    chat__v1__presence_list__free_unpacked(list, NULL);
}

/* docs/protocol.md §3.8: the reply (a recovered socket keeps its id and
 * pid), the users online, what a recovery found, then the records that came
 * for it while it waited, in order. */
void chat_open(struct chat_sock *cs)
{
    if (cs->waiting)
        return;
    if (cs->recovered) {
        char pid[RECOVERY_PID_MAX];
        recovery_pid_write(pid, &cs->rpid, cs->chat->pid_key); /* the client's pid, as it sent it */
        cs->pid = xstrdup(pid);
        sock_accept_pid(cs->k, cs->rpid.sid, cs->pid);
    } else {
        chat_recovery_new_pid(cs);
        sock_accept_pid(cs->k, NULL, cs->pid);
    }
    send_presence(cs);
    if (cs->recovered) {
        chat_recovery_replay(cs);
        chat_recovery_opened(cs);
    }
    for (uint32_t i = 0; i < cs->nheld; i++) {
        if (cs->held[i].seq > cs->skip)
            sock_send_frame(cs->k, cs->held[i].f);
        frame_unref(cs->held[i].f);
    }
    free(cs->held);
    cs->held = NULL;
    cs->nheld = cs->held_cap = 0;
}

static void sock_free(struct chat_sock *cs)
{
    chat_interest_sock_gone(cs);
    for (uint32_t i = 0; i < cs->nheld; i++)
        frame_unref(cs->held[i].f);
    free(cs->held);
    free(cs->presence);
    free(cs->replay);
    free(cs->pid);
    free(cs->pending);
    free(cs);
}

static int nsp_valid(void *ctx, const char *nsp)
{
    (void)ctx;
    return strcmp(nsp, "/") == 0;
}

static void on_token_expiry(struct wheel_timer *t)
{
    struct chat_sock *cs = container_of(t, struct chat_sock, t_expiry);
    log_info("token expired user=%s socket=%s: disconnecting", cs->user->id, cs->k->id);
    chat_count("chat_edge_disconnects_total", "reason", "token_expired");
    sock_disconnect(cs->k); /* frees cs (on_disconnect) */
}

/* docs/architecture.md §Connect: verify the token, subscribe the user's
 * subject, announce the session to presence and answer the CONNECT with its
 * reply. The reply travels after the SUB on the same NATS connection, so once
 * the client sees "connect", deliveries to it work from every edge. Without
 * presence (no responder, timeout) the CONNECT is answered all the same. */
static int authorize(void *ctx, struct sock *k, json_t *auth, json_t **error)
{
    struct chat *c = ctx;
    const struct chat_config *cfg = c->cfg;
    json_t *tok = json_object_get(auth, "token");
    struct auth_claims claims;
    const char *why = "no token";
    if (!json_is_string(tok) ||
        auth_verify(&claims, json_string_value(tok), json_string_length(tok),
                    (const unsigned char *)cfg->jwt_secret, strlen(cfg->jwt_secret), time(NULL), &why) != 0) {
        log_info("connect refused socket=%s reason=\"%s\"", k->id, why);
        chat_count("chat_edge_connects_total", "result", "unauthorized");
        *error = json_pack("{s:s}", "message", "unauthorized");
        return SOCK_REJECT;
    }
    struct chat_user *known = map_get(&c->users, claims.user_id);
    if (known && known->nsocks >= cfg->max_sockets_per_user) {
        log_info("connect refused user=%s reason=\"too many sockets\" sockets=%d", claims.user_id,
                 known->nsocks);
        chat_count("chat_edge_connects_total", "result", "too_many_connections");
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
    wheel_lws_schedule(c->wheel, &cs->t_expiry, on_token_expiry, left_us > 0 ? left_us : 0, WHEEL_EXACT);
    snprintf(cs->num, sizeof cs->num, "%" PRIu64, k->num);
    cs->connect_us = bucket_now_us();
    k->app_state = cs;
    map_put(&c->socks, cs->num, cs);
    chat_user_attach(c, cs, claims.user_id);
    /* Records after this one are held for it until its reply; a recovery
     * replays up to it. */
    cs->start = c->records_ready ? c->position : CHAT_NO_START;
    log_info("connect user=%s socket=%s", claims.user_id, k->id);
    chat_count("chat_edge_connects_total", "result", "ok");

    chat_recovery_connect(cs, auth);
    chat_interest_connect(cs);
    Chat__V1__SessionEvent ev;
    chat_session_event(&ev, cs, CHAT__V1__SESSION_EVENT__KIND__KIND_OPEN, 0);
    if (chat_request(cs, REQ_CONNECT, -1, SUBJ_PRESENCE_SESSION, &ev.base, CONNECT_WAIT_MS) == 0)
        cs->waiting |= WAIT_PRESENCE; /* else no NATS now: nothing to wait for */
    chat_open(cs);
    return SOCK_LATER;
}

static void on_disconnect(void *ctx, struct sock *k, const char *reason)
{
    struct chat *c = ctx;
    struct chat_sock *cs = k->app_state;
    if (!cs)
        return;
    log_info("disconnect user=%s socket=%s reason=\"%s\"", cs->user->id, k->id, reason);
    wheel_cancel(c->wheel, &cs->t_expiry);
    chat_online_forget(cs);
    if (!c->stopped)
        chat_announce(cs, CHAT__V1__SESSION_EVENT__KIND__KIND_CLOSE, 0);
    if (k->state == SOCK_OPEN)
        chat_recovery_closed(cs, reason);
    map_del(&c->socks, cs->num);
    chat_user_detach(c, cs);
    sock_free(cs);
    k->app_state = NULL;
}

const struct sio_app chat_sio_app = {
    .nsp_valid = nsp_valid,
    .authorize = authorize,
    .on_connect = NULL,
    .on_packet = chat_on_packet,
    .on_disconnect = on_disconnect,
};
