/* roster: the presence rules over three indexes: users by id, edges by id and
 * sessions by (conn_id, edge_id). A session sits on two doubly linked lists, its
 * user's and its edge's, so that dropping an edge or closing a tab costs only
 * what it touches. It never reads a clock, a socket or the database: the
 * service hands it times and database rows, and takes back the changes to
 * broadcast and the users to write. */
#include "roster.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "map.h"
#include "mem.h"

struct roster_edge {
    char *id;
    char *boot_id;
    long long last_heard_ms; /* monotonic */
    size_t nsessions;
    int mismatch; /* its last heartbeat counted other than nsessions */
    struct roster_session *sessions;
};

struct roster_session {
    struct roster_user *user;
    struct roster_edge *edge;
    unsigned long long conn_id;
    int stale; /* known before the resync window, not re-announced yet */
    struct roster_session *user_prev, *user_next;
    struct roster_session *edge_prev, *edge_next;
};

struct roster {
    struct map users;    /* id -> struct roster_user */
    struct map edges;    /* id -> struct roster_edge */
    struct map sessions; /* session_key() -> struct roster_session */
    struct map grace;    /* id -> struct roster_user in the grace period */
    long long grace_ms;
    int resyncing;
    int quiet; /* queue no change (a quiet end of a resync window) */
    struct roster_change *changes;
    size_t nchanges, changes_cap;
    struct roster_user **dirty; /* in marking order, each user once */
    size_t ndirty, dirty_cap;
    unsigned long long online_gen; /* bumped by anything roster_online() shows */
};

/* "conn_id:edge_id": the decimal has no ':', so any edge id is unambiguous. The
 * key is written into the caller's stackbuf, or on the heap when it does not
 * fit; release it with key_free(). */
static char *session_key(char *stackbuf, size_t size, const char *edge_id, unsigned long long conn_id)
{
    int n = snprintf(stackbuf, size, "%llu:%s", conn_id, edge_id);
    if (n >= 0 && (size_t)n < size)
        return stackbuf;
    char *k = xmalloc((size_t)n + 1);
    snprintf(k, (size_t)n + 1, "%llu:%s", conn_id, edge_id);
    return k;
}

static void key_free(char *key, char *stackbuf)
{
    if (key != stackbuf)
        free(key);
}

struct roster *roster_create(void)
{
    struct roster *r = xcalloc(1, sizeof *r);
    map_init(&r->users);
    map_init(&r->edges);
    map_init(&r->sessions);
    map_init(&r->grace);
    return r;
}

void roster_set_grace(struct roster *r, long long grace_ms)
{
    r->grace_ms = grace_ms > 0 ? grace_ms : 0;
}

static void user_free(struct roster_user *u)
{
    free((char *)u->id);
    free(u->username);
    free(u);
}

void roster_destroy(struct roster *r)
{
    if (!r)
        return;
    size_t i;
    for (struct map_entry *e = map_first(&r->sessions, &i); e; e = map_next(&r->sessions, e, &i))
        free(e->value);
    for (struct map_entry *e = map_first(&r->edges, &i); e; e = map_next(&r->edges, e, &i)) {
        struct roster_edge *edge = e->value;
        free(edge->id);
        free(edge->boot_id);
        free(edge);
    }
    for (struct map_entry *e = map_first(&r->users, &i); e; e = map_next(&r->users, e, &i))
        user_free(e->value);
    roster_changes_clear(r);
    map_cleanup(&r->sessions);
    map_cleanup(&r->grace);
    map_cleanup(&r->edges);
    map_cleanup(&r->users);
    free(r->changes);
    free(r->dirty);
    free(r);
}

struct roster_user *roster_user_get(const struct roster *r, const char *id)
{
    return map_get(&r->users, id);
}

/* ---- bookkeeping ---- */

static void mark_dirty(struct roster *r, struct roster_user *u)
{
    if (u->dirty)
        return;
    u->dirty = 1;
    if (r->ndirty == r->dirty_cap) {
        r->dirty_cap = r->dirty_cap ? r->dirty_cap * 2 : 16;
        r->dirty = xrealloc(r->dirty, r->dirty_cap * sizeof *r->dirty);
    }
    r->dirty[r->ndirty++] = u;
}

static void queue_change(struct roster *r, struct roster_user *u, enum roster_status status)
{
    if (r->quiet)
        return;
    if (r->nchanges == r->changes_cap) {
        r->changes_cap = r->changes_cap ? r->changes_cap * 2 : 16;
        r->changes = xrealloc(r->changes, r->changes_cap * sizeof *r->changes);
    }
    r->changes[r->nchanges++] =
        (struct roster_change){xstrdup(u->id), xstrdup(u->username), status, u->last_seen_ms};
}

static struct roster_user *user_new(struct roster *r, const struct roster_row *row)
{
    struct roster_user *u = xcalloc(1, sizeof *u);
    u->id = xstrdup(row->id);
    u->username = xstrdup(row->username ? row->username : "");
    u->status = row->status;
    u->last_seen_ms = row->last_seen_ms;
    u->was_online = row->online;
    u->shown = ROSTER_OFFLINE;
    map_put(&r->users, u->id, u);
    return u;
}

/* Nothing left to remember: no session, no grace period running, nothing to
 * write, and the world was shown the user offline (a takeover has nothing to
 * correct). */
static int forgettable(const struct roster_user *u)
{
    return u->nsessions == 0 && !u->in_grace && !u->dirty && u->shown == ROSTER_OFFLINE;
}

/* Connected, as far as the world and the row are concerned. */
static int present(const struct roster_user *u)
{
    return u->nsessions > 0 || u->in_grace;
}

static void grace_leave(struct roster *r, struct roster_user *u)
{
    if (!u->in_grace)
        return;
    u->in_grace = 0;
    u->grace_since_ms = 0;
    map_del(&r->grace, u->id);
}

static void user_forget(struct roster *r, struct roster_user *u)
{
    grace_leave(r, u);
    map_del(&r->users, u->id);
    user_free(u);
}

/* What the world should see of u. */
static enum roster_status public_status(const struct roster_user *u)
{
    return present(u) ? u->status : ROSTER_OFFLINE;
}

/* u's last session closed at since_ms: nothing is said or written yet. */
static void grace_enter(struct roster *r, struct roster_user *u, long long since_ms)
{
    u->in_grace = 1;
    u->grace_since_ms = since_ms;
    map_put(&r->grace, u->id, u);
}

/* The grace period of u is over: offline as of its last close. The caller
 * queues the change, or not. */
static void grace_end(struct roster *r, struct roster_user *u)
{
    u->last_seen_ms = u->grace_since_ms;
    u->was_online = 0; /* offline now: a later open is news again */
    grace_leave(r, u);
    r->online_gen++;
    mark_dirty(r, u);
}

static void set_username(struct roster *r, struct roster_user *u, const char *username)
{
    if (!username || !*username || strcmp(u->username, username) == 0)
        return;
    free(u->username);
    u->username = xstrdup(username);
    r->online_gen++;
    mark_dirty(r, u);
}

/* Unlinks and frees s. When it was the user's last session, the user goes
 * offline at now_ms: that is the only way a user goes offline. */
static void session_remove(struct roster *r, struct roster_session *s, long long now_ms)
{
    char buf[128];
    char *key = session_key(buf, sizeof buf, s->edge->id, s->conn_id);
    map_del(&r->sessions, key);
    key_free(key, buf);

    struct roster_user *u = s->user;
    if (s->user_prev)
        s->user_prev->user_next = s->user_next;
    else
        u->sessions = s->user_next;
    if (s->user_next)
        s->user_next->user_prev = s->user_prev;
    if (s->edge_prev)
        s->edge_prev->edge_next = s->edge_next;
    else
        s->edge->sessions = s->edge_next;
    if (s->edge_next)
        s->edge_next->edge_prev = s->edge_prev;
    s->edge->nsessions--;
    free(s);
    r->online_gen++;

    assert(u->nsessions > 0);
    if (--u->nsessions == 0 && r->grace_ms > 0) {
        /* The user may be back within the grace period (a client that
         * recovered its connection, on any edge): the world keeps what it
         * was shown until roster_grace_expire decides, after any window. */
        grace_enter(r, u, now_ms);
    } else if (u->nsessions == 0 && r->resyncing) {
        /* In the resync window the user's other sessions may not be
         * re-announced yet: decide at the end of the window. */
        u->last_seen_ms = now_ms;
        u->offline_pending = 1;
    } else if (u->nsessions == 0) {
        u->last_seen_ms = now_ms;
        u->was_online = 0; /* announced offline: a later open is news again */
        mark_dirty(r, u);
        queue_change(r, u, ROSTER_OFFLINE);
    }
}

static void edge_drop_sessions(struct roster *r, struct roster_edge *e, long long now_ms)
{
    while (e->sessions)
        session_remove(r, e->sessions, now_ms);
}

/* ---- edges ---- */

static struct roster_edge *edge_seen(struct roster *r, const char *edge_id, const char *boot_id,
                                     long long mono_ms, long long now_ms)
{
    struct roster_edge *e = map_get(&r->edges, edge_id);
    if (!boot_id)
        boot_id = "";
    if (!e) {
        e = xcalloc(1, sizeof *e);
        e->id = xstrdup(edge_id);
        e->boot_id = xstrdup(boot_id);
        map_put(&r->edges, e->id, e);
    } else if (strcmp(e->boot_id, boot_id) != 0) {
        /* The edge restarted: the sockets of its previous life are gone. */
        edge_drop_sessions(r, e, now_ms);
        free(e->boot_id);
        e->boot_id = xstrdup(boot_id);
        e->mismatch = 0;
    }
    if (mono_ms > e->last_heard_ms)
        e->last_heard_ms = mono_ms;
    return e;
}

void roster_edge_seen(struct roster *r, const char *edge_id, const char *boot_id, long long mono_ms,
                      long long now_ms)
{
    edge_seen(r, edge_id, boot_id, mono_ms, now_ms);
}

size_t roster_edge_expire(struct roster *r, long long mono_ms, long long timeout_ms, long long now_ms)
{
    /* Collect first: the map must not change while it is iterated. */
    struct roster_edge **dead = NULL;
    size_t ndead = 0, i;
    for (struct map_entry *me = map_first(&r->edges, &i); me; me = map_next(&r->edges, me, &i)) {
        struct roster_edge *e = me->value;
        if (mono_ms - e->last_heard_ms > timeout_ms) {
            dead = xrealloc(dead, (ndead + 1) * sizeof *dead);
            dead[ndead++] = e;
        }
    }
    for (size_t k = 0; k < ndead; k++) {
        struct roster_edge *e = dead[k];
        edge_drop_sessions(r, e, now_ms);
        map_del(&r->edges, e->id);
        free(e->id);
        free(e->boot_id);
        free(e);
    }
    free(dead);
    return ndead;
}

void roster_edge_touch_all(struct roster *r, long long mono_ms)
{
    size_t i;
    for (struct map_entry *me = map_first(&r->edges, &i); me; me = map_next(&r->edges, me, &i)) {
        struct roster_edge *e = me->value;
        if (mono_ms > e->last_heard_ms)
            e->last_heard_ms = mono_ms;
    }
}

int roster_edge_count(struct roster *r, const char *edge_id, unsigned long open_sessions)
{
    struct roster_edge *e = map_get(&r->edges, edge_id);
    if (!e)
        return 0;
    e->mismatch = e->nsessions != open_sessions;
    return e->mismatch;
}

size_t roster_mismatched_edges(const struct roster *r, const char ***out)
{
    size_t n = 0, i;
    *out = xmalloc((r->edges.count ? r->edges.count : 1) * sizeof **out);
    for (struct map_entry *me = map_first(&r->edges, &i); me; me = map_next(&r->edges, me, &i)) {
        const struct roster_edge *e = me->value;
        if (e->mismatch)
            (*out)[n++] = e->id;
    }
    return n;
}

/* ---- sessions ---- */

static struct roster_session *session_find(const struct roster *r, const char *edge_id,
                                           unsigned long long conn_id)
{
    char buf[128];
    char *key = session_key(buf, sizeof buf, edge_id, conn_id);
    struct roster_session *s = map_get(&r->sessions, key);
    key_free(key, buf);
    return s;
}

/* Links a new session of u on e (the caller checked it is not known). */
static void session_add(struct roster *r, struct roster_user *u, struct roster_edge *e,
                        unsigned long long conn_id)
{
    struct roster_session *s = xcalloc(1, sizeof *s);
    s->user = u;
    s->edge = e;
    s->conn_id = conn_id;
    s->user_next = u->sessions;
    if (u->sessions)
        u->sessions->user_prev = s;
    u->sessions = s;
    s->edge_next = e->sessions;
    if (e->sessions)
        e->sessions->edge_prev = s;
    e->sessions = s;
    e->nsessions++;
    char buf[128];
    char *key = session_key(buf, sizeof buf, e->id, conn_id);
    map_put(&r->sessions, key, s);
    key_free(key, buf);
    r->online_gen++;
    u->nsessions++;
}

int roster_open(struct roster *r, const struct roster_event *ev, const struct roster_row *row)
{
    struct roster_edge *e = edge_seen(r, ev->edge_id, ev->boot_id, ev->mono_ms, ev->now_ms);
    struct roster_session *s = session_find(r, ev->edge_id, ev->conn_id);
    if (s && strcmp(s->user->id, ev->user_id) == 0) {
        s->stale = 0;
        set_username(r, s->user, ev->username);
        return 0;
    }
    if (s) /* the edge reused a connection id for another user: close the old one */
        session_remove(r, s, ev->now_ms);

    struct roster_user *u = map_get(&r->users, ev->user_id);
    if (!u) {
        struct roster_row fresh = {ev->user_id, "", ROSTER_ONLINE, 0, 0};
        u = user_new(r, row && strcmp(row->id, ev->user_id) == 0 ? row : &fresh);
        mark_dirty(r, u); /* at least users.online changes; a new user needs its row */
    }
    set_username(r, u, ev->username);
    session_add(r, u, e, ev->conn_id);
    if (u->nsessions > 1)
        return 0;
    /* Back within the grace period: the world never saw the user leave, and
     * the row still says online. */
    int returned = u->in_grace;
    grace_leave(r, u);
    if (!returned || u->status_pending)
        mark_dirty(r, u); /* online = true */
    /* In the resync window, a re-announced session, or a user who was online
     * before presence restarted and whose other sessions are not re-announced
     * yet: the rest of the world still sees them as they were, so say nothing.
     * After the window, a first session is news even when re-announced: the
     * sweep (or nobody) told the world this user was offline. */
    int quiet = r->resyncing && (ev->resync || u->was_online);
    if (u->status_pending) { /* chosen before this session came back: nobody saw it */
        u->status_pending = 0;
        queue_change(r, u, u->status);
    } else if (returned) {
        /* the status it had, and its lastSeen, go on */
    } else if (!quiet) {
        u->status = ROSTER_ONLINE;
        u->last_seen_ms = ev->now_ms; /* the time of this change */
        queue_change(r, u, ROSTER_ONLINE);
    } else if (u->last_seen_ms <= 0) {
        u->last_seen_ms = ev->now_ms; /* a row from before lastSeen was kept for everyone */
    }
    return 1;
}

int roster_close(struct roster *r, const struct roster_event *ev)
{
    edge_seen(r, ev->edge_id, ev->boot_id, ev->mono_ms, ev->now_ms);
    struct roster_session *s = session_find(r, ev->edge_id, ev->conn_id);
    if (!s)
        return -1;
    int last = s->user->nsessions == 1;
    session_remove(r, s, ev->now_ms);
    return last;
}

int roster_set_status(struct roster *r, const char *user_id, enum roster_status status, long long now_ms)
{
    struct roster_user *u = map_get(&r->users, user_id);
    if ((!u || u->nsessions == 0) && r->resyncing) {
        if (!u) {
            struct roster_row row = {user_id, "", status, now_ms, 0};
            u = user_new(r, &row);
        }
        u->status = status;
        u->last_seen_ms = now_ms;
        u->status_pending = 1;
        return 0;
    }
    if (!u || u->nsessions == 0)
        return -1;
    u->status = status;
    u->last_seen_ms = now_ms;
    r->online_gen++;
    mark_dirty(r, u);
    queue_change(r, u, status);
    return 0;
}

/* ---- resync ---- */

void roster_resync_begin(struct roster *r)
{
    r->resyncing = 1;
    /* After a NATS outage the edges announce what they hold now: sessions
     * that are not announced again by the end of the window closed while
     * presence could not hear it. */
    size_t i;
    for (struct map_entry *m = map_first(&r->sessions, &i); m; m = map_next(&r->sessions, m, &i))
        ((struct roster_session *)m->value)->stale = 1;
}

void roster_resync_begin_edges(struct roster *r, const char *const *edge_ids, size_t n)
{
    r->resyncing = 1;
    for (size_t k = 0; k < n; k++) {
        struct roster_edge *e = map_get(&r->edges, edge_ids[k]);
        for (struct roster_session *s = e ? e->sessions : NULL; s; s = s->edge_next)
            s->stale = 1;
    }
}

void roster_resync_end(struct roster *r, long long now_ms, int quiet)
{
    r->resyncing = 0;
    r->quiet = quiet;
    size_t i;
    struct map_entry *m = map_first(&r->sessions, &i);
    while (m) {
        struct map_entry *next = map_next(&r->sessions, m, &i);
        struct roster_session *s = m->value;
        if (s->stale)
            session_remove(r, s, now_ms); /* next is another entry: still valid */
        m = next;
    }
    m = map_first(&r->users, &i);
    while (m) {
        struct map_entry *next = map_next(&r->users, m, &i);
        struct roster_user *u = m->value;
        m = next;
        if (u->status_pending) { /* no session came back to take it */
            u->status_pending = 0;
            if (u->in_grace) { /* chosen on a session of a user the world still sees: shown now */
                r->online_gen++;
                mark_dirty(r, u);
                queue_change(r, u, u->status);
            }
            if (forgettable(u)) {
                user_forget(r, u);
                continue;
            }
        }
        if (!u->offline_pending)
            continue;
        u->offline_pending = 0;
        if (u->nsessions == 0) {
            u->was_online = 0;
            mark_dirty(r, u);
            queue_change(r, u, ROSTER_OFFLINE);
        }
    }
    r->quiet = 0;
}

int roster_resyncing(const struct roster *r)
{
    return r->resyncing;
}

int roster_sweep_user(struct roster *r, const struct roster_row *row, long long now_ms, int quiet)
{
    struct roster_user *u = map_get(&r->users, row->id);
    if (u && (present(u) || u->dirty))
        return 0; /* connected (or in the grace period), or already gone offline with its write pending */
    if (!u)
        u = user_new(r, row);
    u->last_seen_ms = now_ms;
    u->was_online = 0;
    mark_dirty(r, u);
    if (!quiet)
        queue_change(r, u, ROSTER_OFFLINE);
    return 1;
}

/* ---- the grace period ---- */

static int cmp_grace(const void *a, const void *b)
{
    const struct roster_user *x = *(struct roster_user *const *)a, *y = *(struct roster_user *const *)b;
    if (x->grace_since_ms != y->grace_since_ms)
        return x->grace_since_ms < y->grace_since_ms ? -1 : 1;
    return strcmp(x->id, y->id);
}

size_t roster_grace_expire(struct roster *r, long long now_ms)
{
    if (r->resyncing || r->grace.count == 0)
        return 0;
    /* Collect first: the map must not change while it is iterated. */
    struct roster_user **due = NULL;
    size_t n = 0, cap = 0, i;
    for (struct map_entry *me = map_first(&r->grace, &i); me; me = map_next(&r->grace, me, &i)) {
        struct roster_user *u = me->value;
        if (now_ms - u->grace_since_ms < r->grace_ms)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            due = xrealloc(due, cap * sizeof *due);
        }
        due[n++] = u;
    }
    if (n > 1)
        qsort(due, n, sizeof *due, cmp_grace);
    for (size_t k = 0; k < n; k++) {
        grace_end(r, due[k]);
        queue_change(r, due[k], ROSTER_OFFLINE);
    }
    free(due);
    return n;
}

size_t roster_ngrace(const struct roster *r)
{
    return r->grace.count;
}

/* ---- what the world was shown ---- */

/* Where the roster agrees with what the world was shown, the shown lastSeen
 * wins: it is the one the active wrote. */
static void adopt_shown(struct roster *r, struct roster_user *u)
{
    if (public_status(u) == u->shown && u->shown_last_seen_ms > 0 &&
        u->last_seen_ms != u->shown_last_seen_ms) {
        u->last_seen_ms = u->shown_last_seen_ms;
        r->online_gen++;
    }
}

void roster_shown(struct roster *r, const char *user_id, const char *username, enum roster_status status,
                  long long last_seen_ms)
{
    struct roster_user *u = map_get(&r->users, user_id);
    if (!u && status == ROSTER_OFFLINE)
        return;
    if (!u) { /* a standby that has not heard the open (yet): remember what the world saw */
        struct roster_row row = {user_id, username, status, last_seen_ms, 0};
        u = user_new(r, &row);
    }
    u->shown = status;
    u->shown_last_seen_ms = last_seen_ms;
    if (status == ROSTER_OFFLINE && u->in_grace)
        grace_end(r, u); /* the active's grace ended before this roster's */
    adopt_shown(r, u);
    if (forgettable(u))
        user_forget(r, u);
}

size_t roster_reconcile(struct roster *r)
{
    size_t n = 0, i;
    for (struct map_entry *e = map_first(&r->users, &i); e; e = map_next(&r->users, e, &i)) {
        struct roster_user *u = e->value;
        if (public_status(u) != u->shown) {
            mark_dirty(r, u);
            queue_change(r, u, public_status(u));
            n++;
        } else {
            adopt_shown(r, u);
        }
    }
    return n;
}

void roster_shown_all(struct roster *r)
{
    size_t i;
    for (struct map_entry *e = map_first(&r->users, &i); e; e = map_next(&r->users, e, &i)) {
        struct roster_user *u = e->value;
        u->shown = public_status(u);
        u->shown_last_seen_ms = u->last_seen_ms;
    }
}

/* ---- output ---- */

size_t roster_changes(const struct roster *r, const struct roster_change **out)
{
    *out = r->changes;
    return r->nchanges;
}

void roster_changes_clear(struct roster *r)
{
    for (size_t i = 0; i < r->nchanges; i++) {
        free(r->changes[i].user_id);
        free(r->changes[i].username);
    }
    r->nchanges = 0;
}

/* The first done dirty users were written: they leave the list, and those
 * with nothing left to remember are forgotten. */
static void forget_written(struct roster *r, size_t done)
{
    for (size_t k = 0; k < done; k++) {
        struct roster_user *u = r->dirty[k];
        if (forgettable(u))
            user_forget(r, u);
    }
    if (done) {
        memmove(r->dirty, r->dirty + done, (r->ndirty - done) * sizeof *r->dirty);
        r->ndirty -= done;
    }
}

size_t roster_flush(struct roster *r, size_t max,
                    int (*save)(void *ctx, const struct roster_user *const *users, size_t n), void *ctx)
{
    assert(max > 0);
    size_t done = 0;
    while (done < r->ndirty) {
        size_t n = r->ndirty - done < max ? r->ndirty - done : max;
        if (save(ctx, (const struct roster_user *const *)(r->dirty + done), n) != 0)
            break;
        for (size_t k = done; k < done + n; k++)
            r->dirty[k]->dirty = 0;
        done += n;
    }
    forget_written(r, done);
    return r->ndirty;
}

size_t roster_settle(struct roster *r, size_t n, int forget)
{
    if (n > r->ndirty)
        n = r->ndirty;
    for (size_t k = 0; k < n; k++)
        r->dirty[k]->dirty = 0;
    if (forget) {
        forget_written(r, n);
    } else if (n) {
        memmove(r->dirty, r->dirty + n, (r->ndirty - n) * sizeof *r->dirty);
        r->ndirty -= n;
    }
    return r->ndirty;
}

size_t roster_forget_idle(struct roster *r)
{
    size_t n = 0, i;
    struct map_entry *m = map_first(&r->users, &i);
    while (m) {
        struct map_entry *next = map_next(&r->users, m, &i);
        struct roster_user *u = m->value;
        if (forgettable(u)) {
            user_forget(r, u); /* next is another entry: still valid */
            n++;
        }
        m = next;
    }
    return n;
}

size_t roster_ndirty(const struct roster *r)
{
    return r->ndirty;
}

int roster_mark_dirty(struct roster *r, const char *user_id)
{
    struct roster_user *u = map_get(&r->users, user_id);
    if (!u)
        return -1;
    mark_dirty(r, u);
    return 0;
}

static void info_of(struct roster_info *out, const struct roster_user *u)
{
    out->user_id = u->id;
    out->username = u->username;
    out->status = public_status(u);
    out->last_seen_ms = u->last_seen_ms;
    out->known = 1;
}

void roster_query(const struct roster *r, const char *const *ids, size_t n, struct roster_info *out,
                  int shown)
{
    for (size_t i = 0; i < n; i++) {
        const struct roster_user *u = map_get(&r->users, ids[i]);
        if (u && !u->status_pending) { /* a status waiting for its session says nothing yet */
            info_of(&out[i], u);
            if (shown) {
                out[i].status = u->shown;
                if (u->shown_last_seen_ms > 0)
                    out[i].last_seen_ms = u->shown_last_seen_ms;
            }
        } else {
            out[i] = (struct roster_info){ids[i], "", ROSTER_OFFLINE, 0, 0};
        }
    }
}

size_t roster_online(const struct roster *r, struct roster_info **out)
{
    size_t n = 0, i;
    *out = xmalloc((r->users.count ? r->users.count : 1) * sizeof **out);
    for (struct map_entry *e = map_first(&r->users, &i); e; e = map_next(&r->users, e, &i)) {
        const struct roster_user *u = e->value;
        if (present(u) && u->status != ROSTER_OFFLINE)
            info_of(&(*out)[n++], u);
    }
    return n;
}

unsigned long long roster_online_gen(const struct roster *r)
{
    return r->online_gen;
}

size_t roster_nusers(const struct roster *r)
{
    return r->users.count;
}

size_t roster_nsessions(const struct roster *r)
{
    return r->sessions.count;
}

size_t roster_nedges(const struct roster *r)
{
    return r->edges.count;
}

/* ---- state transfer ---- */

void roster_each_edge(const struct roster *r, void (*cb)(void *ctx, const char *edge_id, const char *boot_id),
                      void *ctx)
{
    size_t i;
    for (struct map_entry *e = map_first(&r->edges, &i); e; e = map_next(&r->edges, e, &i)) {
        const struct roster_edge *edge = e->value;
        cb(ctx, edge->id, edge->boot_id);
    }
}

void roster_each_user(const struct roster *r, void (*cb)(void *ctx, const struct roster_user *u), void *ctx)
{
    size_t i;
    for (struct map_entry *e = map_first(&r->users, &i); e; e = map_next(&r->users, e, &i))
        cb(ctx, e->value);
}

void roster_user_sessions(const struct roster_user *u,
                          void (*cb)(void *ctx, const char *edge_id, unsigned long long conn_id), void *ctx)
{
    for (const struct roster_session *s = u->sessions; s; s = s->user_next)
        cb(ctx, s->edge->id, s->conn_id);
}

void roster_import_edge(struct roster *r, const char *edge_id, const char *boot_id, long long mono_ms)
{
    edge_seen(r, edge_id, boot_id, mono_ms, 0);
}

struct roster_user *roster_import_user(struct roster *r, const struct roster_row *row)
{
    struct roster_user *u = map_get(&r->users, row->id);
    return u ? u : user_new(r, row);
}

int roster_import_session(struct roster *r, struct roster_user *u, const char *edge_id,
                          unsigned long long conn_id)
{
    struct roster_edge *e = map_get(&r->edges, edge_id);
    if (!e || session_find(r, edge_id, conn_id))
        return -1;
    grace_leave(r, u);
    session_add(r, u, e, conn_id);
    return 0;
}

int roster_import_grace(struct roster *r, struct roster_user *u, long long since_ms)
{
    if (u->nsessions > 0)
        return -1;
    grace_enter(r, u, since_ms);
    return 0;
}
