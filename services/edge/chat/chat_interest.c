/* chat_interest: PRESENCE_SCOPE=interest (docs/architecture.md §Presence).
 * The original contract sends every status change to every socket, and
 * every connect the whole online list: a storm of N users is O(N²) frames.
 * In interest mode a socket gets user:status only for its own user, the users
 * its user has a conversation with (messages either way: messaging's
 * conversations table, the newest INTEREST_PARTNERS of them, loaded when the
 * user's first socket connects here, then every new one a record shows), and
 * the users it asked about with presence:request in this session; its
 * connect list holds those of them who are online.
 *
 * A reverse index, watchers: user id -> the local users who have it as a
 * partner and the local sockets that asked about it, so that a change costs
 * the sockets that want it, not a scan of everyone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_int.h"
#include "chat_wire.h"
#include "ids.h"
#include "log.h"
#include "metrics.h"
#include "subjects.h"

#define INTEREST_PARTNERS 1000 /* partners loaded at a connect */
#define INTEREST_MAX 4000      /* partners kept per user, live ones included */
#define INTEREST_ASKED 1000    /* users one socket may ask about and keep watching */

struct watch {
    struct chat_user **users;
    uint32_t nusers, cap_users;
    struct chat_sock **socks;
    uint32_t nsocks, cap_socks;
};

int chat_interest_on(const struct chat *c)
{
    return c->cfg->presence_interest;
}

static struct watch *watch_of(struct chat *c, const char *id, int create)
{
    struct watch *w = map_get(&c->watchers, id);
    if (!w && create) {
        w = xcalloc(1, sizeof *w);
        map_put(&c->watchers, id, w);
    }
    return w;
}

static void watch_gc(struct chat *c, const char *id, struct watch *w)
{
    if (w->nusers || w->nsocks)
        return;
    map_del(&c->watchers, id);
    free(w->users);
    free(w->socks);
    free(w);
}

#define VEC_ADD(vec, n, cap, item)                                                                           \
    do {                                                                                                     \
        if ((n) == (cap)) {                                                                                  \
            (cap) = (cap) ? (cap)*2 : 4;                                                                     \
            (vec) = xrealloc((vec), (cap) * sizeof *(vec));                                                  \
        }                                                                                                    \
        (vec)[(n)++] = (item);                                                                               \
    } while (0)

#define VEC_DEL(vec, n, item)                                                                                \
    do {                                                                                                     \
        for (uint32_t i_ = 0; i_ < (n); i_++)                                                                \
            if ((vec)[i_] == (item)) {                                                                       \
                (vec)[i_] = (vec)[--(n)];                                                                    \
                break;                                                                                       \
            }                                                                                                \
    } while (0)

/* u follows id's status from now on. */
static void add_partner(struct chat *c, struct chat_user *u, const char *id)
{
    if (map_get(&u->partners, id) || u->partners.count >= INTEREST_MAX)
        return;
    map_put(&u->partners, id, u);
    struct watch *w = watch_of(c, id, 1);
    VEC_ADD(w->users, w->nusers, w->cap_users, u);
}

void chat_interest_user_new(struct chat *c, struct chat_user *u)
{
    if (!chat_interest_on(c))
        return; /* broadcast mode: nothing per user (nor per socket) */
    map_init(&u->partners);
    add_partner(c, u, u->id); /* its own status, as in broadcast mode */
}

void chat_interest_user_gone(struct chat *c, struct chat_user *u)
{
    if (!chat_interest_on(c))
        return;
    size_t i;
    for (struct map_entry *m = map_first(&u->partners, &i); m; m = map_next(&u->partners, m, &i)) {
        struct watch *w = watch_of(c, m->key, 0);
        if (w) {
            VEC_DEL(w->users, w->nusers, u);
            watch_gc(c, m->key, w);
        }
    }
    map_cleanup(&u->partners);
}

void chat_interest_sock_gone(struct chat_sock *cs)
{
    struct chat *c = cs->chat;
    if (!cs->asked.nslots)
        return; /* asked about nobody */
    size_t i;
    for (struct map_entry *m = map_first(&cs->asked, &i); m; m = map_next(&cs->asked, m, &i)) {
        struct watch *w = watch_of(c, m->key, 0);
        if (w) {
            VEC_DEL(w->socks, w->nsocks, cs);
            watch_gc(c, m->key, w);
        }
    }
    map_cleanup(&cs->asked);
}

void chat_interest_asked(struct chat_sock *cs, char *const *ids, size_t n)
{
    struct chat *c = cs->chat;
    if (!chat_interest_on(c))
        return;
    if (!cs->asked.nslots)
        map_init(&cs->asked);
    for (size_t k = 0; k < n && cs->asked.count < INTEREST_ASKED; k++) {
        if (map_get(&cs->asked, ids[k]))
            continue;
        map_put(&cs->asked, ids[k], cs);
        struct watch *w = watch_of(c, ids[k], 1);
        VEC_ADD(w->socks, w->nsocks, w->cap_socks, cs);
    }
}

void chat_interest_record(struct chat *c, struct chat_user *u, const char *other)
{
    /* Whatever the state of the load: a record newer than messaging's answer
     * must not be lost, and one the answer holds is added once. */
    if (chat_interest_on(c))
        add_partner(c, u, other);
}

/* ---------- the partners of a user, at its first socket here ---------- */

void chat_interest_connect(struct chat_sock *cs)
{
    struct chat *c = cs->chat;
    struct chat_user *u = cs->user;
    if (!chat_interest_on(c) || u->partners_state == PARTNERS_LOADED)
        return;
    if (u->partners_state == PARTNERS_LOADING) { /* another socket of the user asked already */
        cs->waiting |= WAIT_PARTNERS;
        return;
    }
    Chat__V1__ConversationQuery q = CHAT__V1__CONVERSATION_QUERY__INIT;
    q.user_id = u->id;
    q.partners_only = 1;
    q.limit = INTEREST_PARTNERS;
    q.timeout_ms = CONNECT_WAIT_MS;
    if (chat_request(cs, REQ_PARTNERS, -1, SUBJ_QUERY_CONVERSATIONS, &q.base, CONNECT_WAIT_MS) == 0) {
        u->partners_state = PARTNERS_LOADING;
        cs->waiting |= WAIT_PARTNERS;
    }
}

void chat_interest_partners(struct chat *c, const char *user_id, const uint8_t *data, size_t len)
{
    /* Keyed by the user, not by the socket that asked: that one may have left
     * while its user's other sockets wait for the same answer. */
    struct chat_user *u = map_get(&c->users, user_id);
    if (!u || u->partners_state == PARTNERS_LOADED)
        return; /* the user left; or an earlier ask of its answered already */
    Chat__V1__ConversationList *l = data ? chat__v1__conversation_list__unpack(NULL, len, data) : NULL;
    if (l && !l->error) {
        for (size_t i = 0; i < l->n_conversations; i++) {
            char id[IDS_UUID_LEN + 1];
            const char *w = l->conversations[i]->with_user_id;
            if (ids_uuid_norm(id, w, strlen(w)) == 0)
                add_partner(c, u, id);
        }
        u->partners_state = PARTNERS_LOADED;
    } else {
        /* Tried again at the user's next connect; meanwhile its sockets see
         * itself and what they ask about. */
        u->partners_state = PARTNERS_UNKNOWN;
        log_warn("interest: the partners of user=%s did not come (%s)", u->id,
                 l ? l->error->code : "no answer");
        metrics_add("chat_edge_interest_failures_total", NULL, 1);
    }
    chat__v1__conversation_list__free_unpacked(l, NULL);
    /* Every socket of the user that waited for them. */
    for (struct chat_sock *s = u->socks, *next; s; s = next) {
        next = s->next;
        if (s->waiting & WAIT_PARTNERS) {
            s->waiting &= ~WAIT_PARTNERS;
            chat_open(s);
        }
    }
}

/* ---------- fan-out and lists ---------- */

void chat_interest_status(struct chat *c, const char *user_id, struct frame *f)
{
    struct watch *w = watch_of(c, user_id, 0);
    if (!w)
        return;
    uint64_t stamp = ++c->fan_stamp;
    for (uint32_t i = 0; i < w->nusers; i++)
        for (struct chat_sock *cs = w->users[i]->socks; cs; cs = cs->next)
            if (cs->k->state == SOCK_OPEN && cs->fan_stamp != stamp) {
                cs->fan_stamp = stamp;
                sock_send_frame(cs->k, f);
            }
    for (uint32_t i = 0; i < w->nsocks; i++) {
        struct chat_sock *cs = w->socks[i];
        if (cs->k->state == SOCK_OPEN && cs->fan_stamp != stamp) {
            cs->fan_stamp = stamp;
            sock_send_frame(cs->k, f);
        }
    }
}

struct frame *chat_interest_list(struct chat_sock *cs)
{
    struct chat *c = cs->chat;
    if (!c->online || !online_in_step(c->online))
        return NULL;
    struct chat_user *u = cs->user;
    const char **ids = xcalloc(u->partners.count + 1, sizeof *ids);
    size_t n = 0, i;
    for (struct map_entry *m = map_first(&u->partners, &i); m; m = map_next(&u->partners, m, &i))
        ids[n++] = m->key;
    struct buf b;
    buf_init(&b);
    online_write_only(c->online, &b, "presence:update", ids, n);
    struct frame *f = frame_text(EIO_MESSAGE, b.data, b.len);
    buf_cleanup(&b);
    free(ids);
    return f;
}

void chat_interest_init(struct chat *c)
{
    map_init(&c->watchers);
}

void chat_interest_cleanup(struct chat *c)
{
    size_t i;
    struct map_entry *m;
    while ((m = map_first(&c->watchers, &i))) {
        struct watch *w = map_del(&c->watchers, m->key);
        free(w->users);
        free(w->socks);
        free(w);
    }
    map_cleanup(&c->watchers);
}
