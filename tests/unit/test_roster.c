/* test_roster: every presence rule of the roster, as scripts of steps (open,
 * close, heartbeat, timer, set, resync, flush, query) with the broadcasts each
 * step must queue, written as "user/username:status@last_seen". Times: the
 * scripts use one number t for both the monotonic and the wall clock, so a
 * last_seen equals the t of the step that caused it. No network, no clock. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "roster.h"

enum op {
    OP_END,
    OP_OPEN,   /* edge boot conn user name resync t [row]; ret = first session */
    OP_CLOSE,  /* edge boot conn t; ret = -1 unknown, 1 last, 0 */
    OP_HB,     /* edge boot t */
    OP_EXPIRE, /* t, arg = timeout; ret = edges dropped */
    OP_TOUCH,  /* t */
    OP_SET,    /* user, arg = status, t; ret */
    OP_RBEGIN,
    OP_RBEGIN_EDGES, /* user = space separated edge ids */
    OP_REND,         /* t, arg = quiet */
    OP_SWEEP,        /* row, t, arg = quiet; ret */
    OP_FLUSH,        /* arg = how many save calls succeed before the store fails, max = users per call (0: 1);
                        ret = still dirty; want = saved ids, calls separated by " | " */
    OP_GEN,          /* ret = 1 when roster_online_gen() changed since the previous OP_GEN (or the start) */
    OP_ONLINE,       /* want = sorted online list */
    OP_QUERY,        /* user = space separated ids, arg = as shown; want = answers in order, "?" = unknown */
    OP_COUNTS,       /* want = "users=U sessions=S edges=E" */
    OP_HBCOUNT,      /* edge boot t, arg = open_sessions of the heartbeat; ret = disagrees */
    OP_MISMATCHED,   /* want = sorted ids of the edges that disagree */
    OP_SHOWN,        /* user name, arg = status, t = its lastSeen */
    OP_SHOWN_ALL,
    OP_RECONCILE, /* ret = changes; want = the changes, sorted */
    OP_SETTLE,    /* arg = users taken as written, resync = keep them; ret = still dirty */
    OP_FORGET,    /* ret = users forgotten */
    OP_MARK,      /* user; ret */
    OP_GRACE,     /* arg = the grace period (roster_set_grace) */
    OP_GEXPIRE,   /* t; ret = users gone offline */
    OP_GRACED,    /* want = sorted "user@since" of the users in the grace period */
    OP_TRANSFER,  /* the roster rebuilt through the import API as another replica does (edges heard at t),
                     with grace period arg; the old one dropped */
};

struct step {
    enum op op;
    const char *edge, *boot;
    unsigned long long conn;
    const char *user, *name;
    int resync;
    long long t;
    const struct roster_row *row;
    long long arg;
    size_t max;
    int ret;
    const char *want; /* broadcasts queued by this step (or the op's output) */
};

#define OPEN(e, b, c, u, n, tm) .op = OP_OPEN, .edge = e, .boot = b, .conn = c, .user = u, .name = n, .t = tm
#define CLOSE(e, b, c, tm) .op = OP_CLOSE, .edge = e, .boot = b, .conn = c, .t = tm
#define HB(e, b, tm) .op = OP_HB, .edge = e, .boot = b, .t = tm
#define EXPIRE(tm, timeout) .op = OP_EXPIRE, .t = tm, .arg = timeout
#define SET(u, st, tm) .op = OP_SET, .user = u, .arg = st, .t = tm
#define QUERY(ids) .op = OP_QUERY, .user = ids
#define GRACE(ms) .op = OP_GRACE, .arg = ms
#define GEXPIRE(tm) .op = OP_GEXPIRE, .t = tm
#define ROW(id, name, st, ls, on) (&(const struct roster_row){id, name, st, ls, on})

struct roster_case {
    const char *name;
    const struct step *steps;
};

/* ---- rendering ---- */

static const char *st(enum roster_status s)
{
    return s == ROSTER_ONLINE ? "online" : s == ROSTER_AWAY ? "away" : s == ROSTER_OFFLINE ? "offline" : "?";
}

static void put_info(struct buf *b, const char *id, const char *name, enum roster_status s, long long ls)
{
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s%s/%s:%s@%lld", b->len ? " " : "", id, name, st(s), ls);
    buf_puts(b, tmp);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends the n strings sorted, space separated; frees them. */
static void put_sorted(struct buf *out, char **lines, size_t n)
{
    qsort(lines, n, sizeof *lines, cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_putc(out, ' ');
        buf_puts(out, lines[i]);
        free(lines[i]);
    }
}

/* Splits a space separated list in place; returns the count (at most max). */
static size_t split(char *copy, const char **out, size_t max)
{
    char *save_ptr = NULL;
    size_t n = 0;
    for (char *tok = strtok_r(copy, " ", &save_ptr); tok && n < max; tok = strtok_r(NULL, " ", &save_ptr))
        out[n++] = tok;
    return n;
}

/* Records what roster_flush saved; fails after `left` saves. */
struct saver {
    struct buf saved;
    long long left;
};

static int save(void *ctx, const struct roster_user *const *users, size_t n)
{
    struct saver *s = ctx;
    if (s->left-- <= 0)
        return -1;
    if (s->saved.len)
        buf_puts(&s->saved, " | ");
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_putc(&s->saved, ' ');
        buf_puts(&s->saved, users[i]->id);
        buf_puts(&s->saved, users[i]->nsessions ? "+" : "-"); /* users.online as written */
    }
    return 0;
}

/* OP_GRACED: each user in the grace period as "id@since". */
struct graced {
    char **lines;
    size_t n;
};

static void graced_user(void *ctx, const struct roster_user *u)
{
    struct graced *g = ctx;
    if (!u->in_grace)
        return;
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s@%lld", u->id, u->grace_since_ms);
    g->lines = xrealloc(g->lines, (g->n + 1) * sizeof *g->lines);
    g->lines[g->n++] = xstrdup(tmp);
}

/* OP_TRANSFER: what handoff.c does with the protobuf in between. */
struct transfer {
    struct roster *to;
    struct roster_user *u;
};

static void transfer_edge(void *ctx, const char *edge_id, const char *boot_id)
{
    struct transfer *x = ctx;
    roster_import_edge(x->to, edge_id, boot_id, 0);
}

static void transfer_session(void *ctx, const char *edge_id, unsigned long long conn_id)
{
    struct transfer *x = ctx;
    roster_import_session(x->to, x->u, edge_id, conn_id);
}

static void transfer_user(void *ctx, const struct roster_user *u)
{
    struct transfer *x = ctx;
    struct roster_row row = {u->id, u->username, u->status, u->last_seen_ms, u->was_online};
    x->u = roster_import_user(x->to, &row);
    roster_user_sessions(u, transfer_session, x);
    if (u->in_grace)
        roster_import_grace(x->to, x->u, u->grace_since_ms);
    else if (x->u->nsessions == 0)
        roster_mark_dirty(x->to, u->id);
}

static void run_step(struct roster **rp, const struct step *s, struct buf *out, int *ret,
                     unsigned long long *gen)
{
    struct roster *r = *rp;
    struct roster_event ev = {s->edge,   s->boot, s->conn, s->user, s->name ? s->name : "",
                              s->resync, s->t,    s->t};
    switch (s->op) {
    case OP_OPEN:
        *ret = roster_open(r, &ev, s->row);
        break;
    case OP_CLOSE:
        *ret = roster_close(r, &ev);
        break;
    case OP_HB:
        roster_edge_seen(r, s->edge, s->boot, s->t, s->t);
        break;
    case OP_EXPIRE:
        *ret = (int)roster_edge_expire(r, s->t, s->arg, s->t);
        break;
    case OP_TOUCH:
        roster_edge_touch_all(r, s->t);
        break;
    case OP_SET:
        *ret = roster_set_status(r, s->user, (enum roster_status)s->arg, s->t);
        break;
    case OP_RBEGIN:
        roster_resync_begin(r);
        break;
    case OP_RBEGIN_EDGES: {
        char *copy = xstrdup(s->user);
        const char *ids[16];
        roster_resync_begin_edges(r, ids, split(copy, ids, 16));
        free(copy);
        break;
    }
    case OP_REND:
        roster_resync_end(r, s->t, (int)s->arg);
        break;
    case OP_SWEEP:
        *ret = roster_sweep_user(r, s->row, s->t, (int)s->arg);
        break;
    case OP_HBCOUNT:
        roster_edge_seen(r, s->edge, s->boot, s->t, s->t);
        *ret = roster_edge_count(r, s->edge, (unsigned long)s->arg);
        break;
    case OP_MISMATCHED: {
        const char **ids;
        size_t n = roster_mismatched_edges(r, &ids);
        char **lines = xcalloc(n ? n : 1, sizeof *lines);
        for (size_t i = 0; i < n; i++)
            lines[i] = xstrdup(ids[i]);
        put_sorted(out, lines, n);
        free(lines);
        free(ids);
        return;
    }
    case OP_SHOWN:
        roster_shown(r, s->user, s->name ? s->name : "", (enum roster_status)s->arg, s->t);
        break;
    case OP_SHOWN_ALL:
        roster_shown_all(r);
        break;
    case OP_RECONCILE: {
        *ret = (int)roster_reconcile(r);
        const struct roster_change *c;
        size_t n = roster_changes(r, &c);
        char **lines = xcalloc(n ? n : 1, sizeof *lines);
        for (size_t i = 0; i < n; i++) {
            struct buf one;
            buf_init(&one);
            put_info(&one, c[i].user_id, c[i].username, c[i].status, c[i].last_seen_ms);
            lines[i] = buf_steal(&one, NULL);
        }
        put_sorted(out, lines, n);
        free(lines);
        roster_changes_clear(r);
        return;
    }
    case OP_SETTLE:
        *ret = (int)roster_settle(r, (size_t)s->arg, s->resync ? 0 : 1);
        break;
    case OP_MARK:
        *ret = roster_mark_dirty(r, s->user);
        break;
    case OP_FORGET:
        *ret = (int)roster_forget_idle(r);
        break;
    case OP_GRACE:
        roster_set_grace(r, s->arg);
        break;
    case OP_GEXPIRE:
        *ret = (int)roster_grace_expire(r, s->t);
        break;
    case OP_GRACED: {
        struct graced g = {NULL, 0};
        roster_each_user(r, graced_user, &g);
        if (g.n != roster_ngrace(r))
            buf_puts(out, "(roster_ngrace disagrees) ");
        if (g.n) /* qsort takes no NULL, even for 0 */
            put_sorted(out, g.lines, g.n);
        free(g.lines);
        return;
    }
    case OP_TRANSFER: {
        struct transfer x = {roster_create(), NULL};
        roster_each_edge(r, transfer_edge, &x);
        roster_edge_touch_all(x.to, s->t);
        roster_each_user(r, transfer_user, &x);
        roster_shown_all(x.to);
        roster_set_grace(x.to, s->arg);
        roster_destroy(r);
        *rp = r = x.to;
        break;
    }
    case OP_FLUSH: {
        struct saver sv = {{0}, s->arg};
        buf_init(&sv.saved);
        *ret = (int)roster_flush(r, s->max ? s->max : 1, save, &sv);
        buf_append(out, sv.saved.data, sv.saved.len);
        buf_cleanup(&sv.saved);
        return;
    }
    case OP_ONLINE: {
        struct roster_info *infos;
        size_t n = roster_online(r, &infos);
        char **lines = xcalloc(n ? n : 1, sizeof *lines);
        for (size_t i = 0; i < n; i++) {
            struct buf one;
            buf_init(&one);
            put_info(&one, infos[i].user_id, infos[i].username, infos[i].status, infos[i].last_seen_ms);
            lines[i] = buf_steal(&one, NULL);
        }
        put_sorted(out, lines, n);
        free(lines);
        free(infos);
        return;
    }
    case OP_QUERY: {
        char *copy = xstrdup(s->user);
        const char *ids[16];
        size_t n = split(copy, ids, 16);
        struct roster_info infos[16];
        roster_query(r, ids, n, infos, (int)s->arg);
        for (size_t i = 0; i < n; i++) {
            put_info(out, infos[i].user_id, infos[i].username, infos[i].status, infos[i].last_seen_ms);
            if (!infos[i].known)
                buf_putc(out, '?');
        }
        free(copy);
        return;
    }
    case OP_COUNTS: {
        char tmp[96];
        snprintf(tmp, sizeof tmp, "users=%zu sessions=%zu edges=%zu", roster_nusers(r), roster_nsessions(r),
                 roster_nedges(r));
        buf_puts(out, tmp);
        return;
    }
    case OP_GEN:
        *ret = roster_online_gen(r) != *gen;
        *gen = roster_online_gen(r);
        return;
    case OP_END:
        break;
    }
    const struct roster_change *c;
    size_t n = roster_changes(r, &c);
    for (size_t i = 0; i < n; i++)
        put_info(out, c[i].user_id, c[i].username, c[i].status, c[i].last_seen_ms);
    roster_changes_clear(r);
}

static void run_case(const struct roster_case *k)
{
    struct roster *r = roster_create();
    unsigned long long gen = roster_online_gen(r);
    int nstep = 1;
    for (const struct step *s = k->steps; s->op != OP_END; s++, nstep++) {
        struct buf out;
        buf_init(&out);
        int ret = 0;
        run_step(&r, s, &out, &ret, &gen);
        char got[1024];
        snprintf(got, sizeof got, "%s", buf_cstr(&out));
        buf_cleanup(&out);
        const char *want = s->want ? s->want : "";
        if (strcmp(got, want) != 0 || ret != s->ret) {
            roster_destroy(r);
            fail_msg("%s, step %d: got \"%s\" ret %d, want \"%s\" ret %d", k->name, nstep, got, ret, want,
                     s->ret);
        }
    }
    roster_destroy(r);
}

/* ---- the rules ---- */

static const struct roster_case cases[] = {
    {"first session online, reply list, last session offline",
     (const struct step[]){
         {OPEN("A", "b1", 1, "u1", "alice", 100), .ret = 1,
          .want = "u1/alice:online@100"}, /* lastSeen: now */
         {.op = OP_ONLINE, .want = "u1/alice:online@100"},
         {OPEN("A", "b1", 2, "u1", "alice", 110), .ret = 0, .want = ""}, /* second tab: quiet */
         {OPEN("A", "b1", 2, "u1", "alice", 120), .ret = 0, .want = ""}, /* same session again: idempotent */
         {.op = OP_COUNTS, .want = "users=1 sessions=2 edges=1"},
         {CLOSE("A", "b1", 1, 200), .ret = 0, .want = ""},  /* one of two: nothing */
         {CLOSE("A", "b1", 1, 210), .ret = -1, .want = ""}, /* unknown close: ignored */
         {CLOSE("A", "b1", 2, 300), .ret = 1, .want = "u1/alice:offline@300"},
         {.op = OP_ONLINE, .want = ""},
         {QUERY("u1"), .want = "u1/alice:offline@300"}, /* known until written */
         {.op = OP_FLUSH, .arg = 9, .ret = 0, .want = "u1-"},
         {QUERY("u1"), .want = "u1/:offline@0?"}, /* written, forgotten: the caller asks the database */
         {.op = OP_COUNTS, .want = "users=0 sessions=0 edges=1"},
         {OPEN("A", "b1", 3, "u1", "alice2", 400), .ret = 1, .want = "u1/alice2:online@400"},
         {.op = OP_END}}},
    {"a database row gives username, last_seen and status",
     (const struct step[]){
         {OPEN("A", "b1", 1, "u1", "", 100), .row = ROW("u1", "bob", ROSTER_AWAY, 50, 0), .ret = 1,
          .want = "u1/bob:online@100"}, /* a fresh connect makes the chosen status online, lastSeen now */
         {OPEN("A", "b1", 2, "u2", "carol", 100), .row = ROW("someone-else", "x", ROSTER_AWAY, 1, 1),
          .ret = 1, .want = "u2/carol:online@100"}, /* a row for another id is not used */
         {.op = OP_END}}},
    {"multi-edge: a user stays online while any edge holds a session",
     (const struct step[]){
         {OPEN("A", "a1", 1, "u1", "alice", 0), .ret = 1, .want = "u1/alice:online@0"},
         {OPEN("B", "b1", 1, "u1", "alice", 0), .ret = 0, .want = ""}, /* same conn id, other edge */
         {.op = OP_COUNTS, .want = "users=1 sessions=2 edges=2"},
         {CLOSE("A", "a1", 1, 50), .ret = 0, .want = ""},
         {CLOSE("B", "b1", 1, 60), .ret = 1, .want = "u1/alice:offline@60"},
         {.op = OP_END}}},
    {"boot id change drops the edge's sessions at once",
     (const struct step[]){
         {OPEN("A", "a1", 1, "u1", "alice", 0), .ret = 1, .want = "u1/alice:online@0"},
         {OPEN("A", "a1", 2, "u2", "bob", 0), .ret = 1, .want = "u2/bob:online@0"},
         {OPEN("B", "b1", 7, "u2", "bob", 0), .ret = 0, .want = ""},
         {HB("A", "a1", 10), .want = ""},
         {HB("A", "a2", 20), .want = "u1/alice:offline@20"}, /* u2 keeps B */
         {.op = OP_COUNTS, .want = "users=2 sessions=1 edges=2"},
         {OPEN("A", "a2", 1, "u1", "alice", 30), .ret = 1, .want = "u1/alice:online@30"},
         /* a session event with yet another boot id counts as a restart too */
         {OPEN("A", "a3", 5, "u3", "dan", 40), .ret = 1, .want = "u1/alice:offline@40 u3/dan:online@40"},
         {CLOSE("B", "b2", 99, 50), .ret = -1, .want = "u2/bob:offline@50"},
         {.op = OP_END}}},
    {"edge timeout drops silent edges, heartbeats keep them",
     (const struct step[]){
         {OPEN("A", "a1", 1, "u1", "alice", 0), .ret = 1, .want = "u1/alice:online@0"},
         {OPEN("B", "b1", 1, "u2", "bob", 0), .ret = 1, .want = "u2/bob:online@0"},
         {HB("B", "b1", 1000), .want = ""},
         {EXPIRE(1500, 1500), .ret = 0, .want = ""}, /* exactly the timeout: not yet */
         {EXPIRE(1501, 1500), .ret = 1, .want = "u1/alice:offline@1501"},
         {.op = OP_COUNTS, .want = "users=2 sessions=1 edges=1"},
         {EXPIRE(2400, 1500), .ret = 0, .want = ""},
         {.op = OP_TOUCH, .t = 5000, .want = ""}, /* presence was deaf: the edges get a new grace */
         {EXPIRE(6000, 1500), .ret = 0, .want = ""},
         {EXPIRE(6501, 1500), .ret = 1, .want = "u2/bob:offline@6501"},
         {HB("A", "a1", 7000), .want = ""}, /* a dropped edge that comes back starts empty */
         {.op = OP_COUNTS, .want = "users=2 sessions=0 edges=1"},
         {.op = OP_END}}},
    {"resync window: re-announced sessions and users online before are quiet",
     (const struct step[]){
         {.op = OP_RBEGIN},
         {OPEN("A", "a1", 1, "u1", "alice", 0), .resync = 1, .row = ROW("u1", "alice", ROSTER_AWAY, 500, 1),
          .ret = 1, .want = ""},
         {.op = OP_ONLINE, .want = "u1/alice:away@500"}, /* chosen status kept */
         {OPEN("B", "b1", 1, "u2", "bob", 0), .row = ROW("u2", "bob", ROSTER_AWAY, 600, 1), .ret = 1,
          .want = ""}, /* a new tab before its edge re-announced: still quiet */
         {OPEN("B", "b1", 2, "u3", "carol", 750), .row = ROW("u3", "carol", ROSTER_ONLINE, 700, 0), .ret = 1,
          .want = "u3/carol:online@750"}, /* was offline: news */
         {OPEN("B", "b1", 3, "u4", "dan", 760), .resync = 1, .ret = 1, .want = ""},
         {QUERY("u4"), .want = "u4/dan:online@760"}, /* quiet, and no row: lastSeen from now all the same */
         /* a last close in the window is decided at its end: other sessions
          * of the user may not be re-announced yet */
         {CLOSE("B", "b1", 1, 800), .ret = 1, .want = ""},
         {OPEN("B", "b1", 4, "u2", "bob", 0), .ret = 1, .want = ""}, /* never announced offline */
         {CLOSE("B", "b1", 2, 850), .ret = 1, .want = ""},
         {.op = OP_REND, .want = "u3/carol:offline@850"}, /* bob has a session again: quiet */
         /* the sweep: online in the database, no session re-announced */
         {.op = OP_SWEEP,
          .row = ROW("u9", "zed", ROSTER_AWAY, 100, 1),
          .t = 900,
          .ret = 1,
          .want = "u9/zed:offline@900"},
         {.op = OP_SWEEP, .row = ROW("u1", "alice", ROSTER_AWAY, 500, 1), .t = 900, .ret = 0, .want = ""},
         {.op = OP_SWEEP, .row = ROW("u9", "zed", ROSTER_AWAY, 100, 1), .t = 950, .ret = 0, .want = ""},
         /* after the window a re-announced first session is news (the world was told offline) */
         {OPEN("C", "c1", 1, "u9", "zed", 1000), .resync = 1, .ret = 1, .want = "u9/zed:online@1000"},
         {OPEN("A", "a1", 1, "u1", "alice", 1000), .resync = 1, .ret = 0, .want = ""},
         {.op = OP_END}}},
    {"resync window: a status chosen before its session came back is kept and published with it",
     (const struct step[]){
         {.op = OP_RBEGIN},
         {SET("u1", ROSTER_AWAY, 10), .ret = 0, .want = ""}, /* the edge holds the socket: kept */
         {QUERY("u1"), .want = "u1/:offline@0?"},            /* says nothing yet */
         {OPEN("A", "a1", 1, "u1", "alice", 20), .resync = 1, .row = ROW("u1", "alice", ROSTER_ONLINE, 5, 1),
          .ret = 1, .want = "u1/alice:away@10"},
         {.op = OP_ONLINE, .want = "u1/alice:away@10"},
         {SET("u2", ROSTER_AWAY, 30), .ret = 0, .want = ""}, /* its session never comes back */
         {.op = OP_COUNTS, .want = "users=2 sessions=1 edges=1"},
         {.op = OP_REND, .t = 40, .want = ""},
         {.op = OP_COUNTS, .want = "users=1 sessions=1 edges=1"},
         {SET("u2", ROSTER_AWAY, 50), .ret = -1, .want = ""}, /* after the window: no session, nothing */
         {.op = OP_END}}},
    {"invisible users: set status, online list, query",
     (const struct step[]){
         {SET("u1", ROSTER_AWAY, 1), .ret = -1, .want = ""}, /* no session: ignored */
         {OPEN("A", "a1", 1, "u1", "alice", 2), .row = ROW("u1", "alice", ROSTER_ONLINE, 1, 0), .ret = 1,
          .want = "u1/alice:online@2"},
         {OPEN("A", "a1", 2, "u2", "bob", 3), .ret = 1, .want = "u2/bob:online@3"},
         {SET("u1", ROSTER_AWAY, 4), .ret = 0, .want = "u1/alice:away@4"}, /* lastSeen: the change */
         {.op = OP_ONLINE, .want = "u1/alice:away@4 u2/bob:online@3"},
         {SET("u2", ROSTER_OFFLINE, 5), .ret = 0, .want = "u2/bob:offline@5"},
         {.op = OP_ONLINE, .want = "u1/alice:away@4"},
         {QUERY("u2 u1"), .want = "u2/bob:offline@5 u1/alice:away@4"},
         {OPEN("A", "a1", 3, "u2", "bob", 6), .ret = 0, .want = ""}, /* still invisible */
         {.op = OP_ONLINE, .want = "u1/alice:away@4"},
         {SET("u2", ROSTER_ONLINE, 7), .ret = 0, .want = "u2/bob:online@7"},
         {CLOSE("A", "a1", 2, 10), .ret = 0, .want = ""},
         {CLOSE("A", "a1", 3, 20), .ret = 1, .want = "u2/bob:offline@20"},
         {SET("u2", ROSTER_AWAY, 21), .ret = -1, .want = ""},
         {.op = OP_END}}},
    {"query: request order, duplicates, unknown ids",
     (const struct step[]){
         {OPEN("A", "a1", 1, "u1", "alice", 0), .ret = 1, .want = "u1/alice:online@0"},
         {OPEN("A", "a1", 2, "u2", "bob", 0), .ret = 1, .want = "u2/bob:online@0"},
         {CLOSE("A", "a1", 2, 77), .ret = 1, .want = "u2/bob:offline@77"},
         {QUERY("zz u1 u2 u1 zz"),
          .want = "zz/:offline@0? u1/alice:online@0 u2/bob:offline@77 u1/alice:online@0 zz/:offline@0?"},
         {QUERY(""), .want = ""},
         {.op = OP_END}}},
    {"sessions: moved to another user, username updates",
     (const struct step[]){
         {OPEN("A", "a1", 1, "u1", "alice", 0), .ret = 1, .want = "u1/alice:online@0"},
         {.op = OP_FLUSH, .arg = 9, .want = "u1+"},
         {OPEN("A", "a1", 1, "u1", "", 0), .ret = 0, .want = ""}, /* empty username: kept */
         {.op = OP_FLUSH, .arg = 9, .want = ""},
         {OPEN("A", "a1", 1, "u1", "alicia", 0), .ret = 0, .want = ""},
         {.op = OP_FLUSH, .arg = 9, .want = "u1+"}, /* the new name is written */
         {OPEN("A", "a1", 1, "u2", "bob", 5), .ret = 1, .want = "u1/alicia:offline@5 u2/bob:online@5"},
         {.op = OP_COUNTS, .want = "users=2 sessions=1 edges=1"},
         {.op = OP_END}}},
    {"flush and queries of an empty roster",
     (const struct step[]){{.op = OP_FLUSH, .arg = 9, .ret = 0, .want = ""},
                           {.op = OP_ONLINE, .want = ""},
                           {EXPIRE(99999, 1), .ret = 0, .want = ""},
                           {.op = OP_COUNTS, .want = "users=0 sessions=0 edges=0"},
                           {.op = OP_END}}},
    {"flush: stops at the first failure, keeps order, forgets offline users once written",
     (const struct step[]){{OPEN("A", "a1", 1, "u1", "alice", 0), .ret = 1, .want = "u1/alice:online@0"},
                           {OPEN("A", "a1", 2, "u2", "bob", 0), .ret = 1, .want = "u2/bob:online@0"},
                           {CLOSE("A", "a1", 1, 10), .ret = 1, .want = "u1/alice:offline@10"},
                           {.op = OP_FLUSH, .arg = 0, .ret = 2, .want = ""},    /* store down */
                           {.op = OP_FLUSH, .arg = 1, .ret = 1, .want = "u1-"}, /* u1 written, so forgotten */
                           {.op = OP_COUNTS, .want = "users=1 sessions=1 edges=1"},
                           {OPEN("A", "a1", 3, "u1", "alice", 20),
                            .row = ROW("u1", "alice", ROSTER_ONLINE, 10, 0), .ret = 1,
                            .want = "u1/alice:online@20"},
                           {.op = OP_FLUSH, .arg = 9, .ret = 0, .want = "u2+ | u1+"},
                           {.op = OP_COUNTS, .want = "users=2 sessions=2 edges=1"},
                           {.op = OP_END}}},
    {"flush in slices: a slice is written whole or not at all, in marking order",
     (const struct step[]){{OPEN("A", "a1", 1, "u1", "alice", 0), .ret = 1, .want = "u1/alice:online@0"},
                           {OPEN("A", "a1", 2, "u2", "bob", 0), .ret = 1, .want = "u2/bob:online@0"},
                           {OPEN("A", "a1", 3, "u3", "carol", 0), .ret = 1, .want = "u3/carol:online@0"},
                           {CLOSE("A", "a1", 1, 10), .ret = 1, .want = "u1/alice:offline@10"},
                           {.op = OP_FLUSH, .arg = 0, .max = 100, .ret = 3, .want = ""}, /* store down */
                           {.op = OP_FLUSH, .arg = 1, .max = 2, .ret = 1, .want = "u1- u2+"},
                           {.op = OP_COUNTS, .want = "users=2 sessions=2 edges=1"}, /* u1 forgotten */
                           {CLOSE("A", "a1", 2, 20), .ret = 1, .want = "u2/bob:offline@20"},
                           {.op = OP_FLUSH, .arg = 9, .max = 2, .ret = 0, .want = "u3+ u2-"},
                           {.op = OP_COUNTS, .want = "users=1 sessions=1 edges=1"},
                           {.op = OP_FLUSH, .arg = 9, .max = 1000, .ret = 0, .want = ""},
                           {.op = OP_END}}},
    {"the online list's generation moves with everything the list shows",
     (const struct step[]){{.op = OP_GEN, .ret = 0},
                           {OPEN("A", "a1", 1, "u1", "alice", 0), .ret = 1, .want = "u1/alice:online@0"},
                           {.op = OP_GEN, .ret = 1},
                           {HB("A", "a1", 5), .want = ""},
                           {QUERY("u1"), .want = "u1/alice:online@0"},
                           {.op = OP_FLUSH, .arg = 9, .want = "u1+"},
                           {.op = OP_GEN, .ret = 0}, /* heartbeat, query, flush: same list */
                           {OPEN("A", "a1", 1, "u1", "alicia", 0), .ret = 0, .want = ""},
                           {.op = OP_GEN, .ret = 1}, /* new username */
                           {OPEN("A", "a1", 2, "u1", "", 0), .ret = 0, .want = ""},
                           {.op = OP_GEN, .ret = 1}, /* second session: cheap to over-count */
                           {SET("u1", ROSTER_OFFLINE, 6), .ret = 0, .want = "u1/alicia:offline@6"},
                           {.op = OP_GEN, .ret = 1},
                           {SET("u1", ROSTER_ONLINE, 7), .ret = 0, .want = "u1/alicia:online@7"},
                           {.op = OP_GEN, .ret = 1},
                           {CLOSE("A", "a1", 1, 10), .ret = 0, .want = ""},
                           {.op = OP_GEN, .ret = 1},
                           {.op = OP_RBEGIN},
                           {CLOSE("A", "a1", 2, 20), .ret = 1, .want = ""}, /* quiet, but off the list */
                           {.op = OP_GEN, .ret = 1},
                           {.op = OP_ONLINE, .want = ""},
                           {HB("A", "a2", 30), .want = ""},
                           {.op = OP_GEN, .ret = 0},
                           {OPEN("A", "a2", 3, "u2", "bob", 40), .ret = 1, .want = "u2/bob:online@40"},
                           {HB("A", "a3", 50), .want = ""}, /* restart: bob's session dropped (quietly) */
                           {.op = OP_GEN, .ret = 1},
                           {.op = OP_ONLINE, .want = ""},
                           {.op = OP_END}}},
    {"heartbeat counts: an edge whose count disagrees is remembered until one agrees",
     (const struct step[]){{OPEN("A", "a1", 1, "u1", "alice", 0), .ret = 1, .want = "u1/alice:online@0"},
                           {OPEN("A", "a1", 2, "u2", "bob", 0), .ret = 1, .want = "u2/bob:online@0"},
                           {OPEN("A", "a1", 3, "u2", "bob", 0), .ret = 0, .want = ""},
                           {.op = OP_HBCOUNT, .edge = "A", .boot = "a1", .t = 10, .arg = 3, .ret = 0},
                           {.op = OP_HBCOUNT, .edge = "A", .boot = "a1", .t = 20, .arg = 4, .ret = 1},
                           {OPEN("B", "b1", 1, "u3", "carol", 30), .ret = 1, .want = "u3/carol:online@30"},
                           {.op = OP_HBCOUNT, .edge = "B", .boot = "b1", .t = 40, .arg = 0, .ret = 1},
                           {.op = OP_MISMATCHED, .want = "A B"},
                           {CLOSE("A", "a1", 3, 50), .ret = 0, .want = ""},
                           {.op = OP_HBCOUNT, .edge = "A", .boot = "a1", .t = 60, .arg = 2, .ret = 0},
                           {.op = OP_MISMATCHED, .want = "B"},
                           /* a restart drops the sessions: the new life starts from 0 and agrees */
                           {.op = OP_HBCOUNT,
                            .edge = "B",
                            .boot = "b2",
                            .t = 70,
                            .arg = 0,
                            .ret = 0,
                            .want = "u3/carol:offline@70"},
                           {.op = OP_MISMATCHED, .want = ""},
                           {.op = OP_HBCOUNT, .edge = "Z", .boot = "z1", .t = 80, .arg = 0, .ret = 0},
                           {.op = OP_END}}},
    {"takeover: the world is told only what it was not shown, with the shown lastSeen kept",
     (const struct step[]){
         {OPEN("A", "a1", 1, "u1", "alice", 10), .ret = 1, .want = "u1/alice:online@10"},
         {.op = OP_SHOWN, .user = "u1", .name = "alice", .arg = ROSTER_ONLINE, .t = 8}, /* the active's clock
                                                                                         */
         {OPEN("A", "a1", 2, "u2", "bob", 20), .ret = 1, .want = "u2/bob:online@20"},   /* never published */
         {.op = OP_SHOWN, .user = "u3", .name = "carol", .arg = ROSTER_ONLINE, .t = 5}, /* open never heard */
         {.op = OP_SHOWN, .user = "u9", .name = "zed", .arg = ROSTER_OFFLINE, .t = 6},  /* nothing to keep */
         {OPEN("A", "a1", 4, "u4", "dan", 30), .ret = 1, .want = "u4/dan:online@30"},
         {.op = OP_SHOWN, .user = "u4", .name = "dan", .arg = ROSTER_ONLINE, .t = 29},
         {SET("u4", ROSTER_AWAY, 40), .ret = 0, .want = "u4/dan:away@40"}, /* not published */
         {OPEN("A", "a1", 5, "u5", "erin", 50), .ret = 1, .want = "u5/erin:online@50"},
         {.op = OP_SHOWN, .user = "u5", .name = "erin", .arg = ROSTER_ONLINE, .t = 49},
         {CLOSE("A", "a1", 5, 60), .ret = 1, .want = "u5/erin:offline@60"}, /* not published */
         {.op = OP_COUNTS, .want = "users=5 sessions=3 edges=1"},
         {.op = OP_RECONCILE,
          .ret = 4,
          .want = "u2/bob:online@20 u3/carol:offline@5 u4/dan:away@40 u5/erin:offline@60"},
         {QUERY("u1"), .want = "u1/alice:online@8"},
         {.op = OP_FLUSH, .arg = 9, .max = 100, .want = "u1+ u2+ u4+ u5- u3-"},
         {.op = OP_SHOWN, .user = "u2", .name = "bob", .arg = ROSTER_ONLINE, .t = 20},
         {.op = OP_SHOWN, .user = "u3", .name = "carol", .arg = ROSTER_OFFLINE, .t = 5},
         {.op = OP_SHOWN, .user = "u4", .name = "dan", .arg = ROSTER_AWAY, .t = 40},
         {.op = OP_SHOWN, .user = "u5", .name = "erin", .arg = ROSTER_OFFLINE, .t = 60},
         {.op = OP_COUNTS, .want = "users=3 sessions=3 edges=1"}, /* carol and erin forgotten */
         {.op = OP_RECONCILE, .ret = 0, .want = ""},
         {.op = OP_END}}},
    {"shown: a user with no session is kept while the world sees them, and while unwritten",
     (const struct step[]){
         {.op = OP_SHOWN, .user = "u9", .name = "zed", .arg = ROSTER_AWAY, .t = 1},
         {.op = OP_COUNTS, .want = "users=1 sessions=0 edges=0"},
         {.op = OP_ONLINE, .want = ""}, /* no session: not listed */
         {.op = OP_SHOWN, .user = "u9", .name = "zed", .arg = ROSTER_OFFLINE, .t = 2},
         {.op = OP_COUNTS, .want = "users=0 sessions=0 edges=0"},
         {OPEN("A", "a1", 1, "u1", "alice", 10), .ret = 1, .want = "u1/alice:online@10"},
         {.op = OP_SHOWN, .user = "u1", .name = "alice", .arg = ROSTER_ONLINE, .t = 10},
         {CLOSE("A", "a1", 1, 20), .ret = 1, .want = "u1/alice:offline@20"},
         {.op = OP_FLUSH, .arg = 9, .want = "u1-"},
         {.op = OP_COUNTS, .want = "users=1 sessions=0 edges=1"}, /* written, still shown online */
         {.op = OP_SHOWN, .user = "u1", .name = "alice", .arg = ROSTER_OFFLINE, .t = 20},
         {.op = OP_COUNTS, .want = "users=0 sessions=0 edges=1"},
         {OPEN("A", "a1", 2, "u2", "bob", 30), .ret = 1, .want = "u2/bob:online@30"},
         {CLOSE("A", "a1", 2, 40), .ret = 1, .want = "u2/bob:offline@40"},
         {.op = OP_SHOWN, .user = "u2", .name = "bob", .arg = ROSTER_OFFLINE, .t = 40},
         {.op = OP_COUNTS, .want = "users=1 sessions=0 edges=1"}, /* not written yet */
         {.op = OP_FLUSH, .arg = 9, .want = "u2-"},
         {.op = OP_COUNTS, .want = "users=0 sessions=0 edges=1"},
         {.op = OP_END}}},
    {"settle: a standby lets the oldest marks go, in marking order",
     (const struct step[]){{OPEN("A", "a1", 1, "u1", "alice", 0), .ret = 1, .want = "u1/alice:online@0"},
                           {OPEN("A", "a1", 2, "u2", "bob", 0), .ret = 1, .want = "u2/bob:online@0"},
                           {OPEN("A", "a1", 3, "u3", "carol", 0), .ret = 1, .want = "u3/carol:online@0"},
                           {CLOSE("A", "a1", 1, 10), .ret = 1, .want = "u1/alice:offline@10"},
                           {.op = OP_SETTLE, .arg = 2, .ret = 1},
                           {.op = OP_COUNTS, .want = "users=2 sessions=2 edges=1"}, /* alice forgotten */
                           {.op = OP_MARK, .user = "u2", .ret = 0},
                           {.op = OP_MARK, .user = "u1", .ret = -1},
                           {.op = OP_SETTLE, .arg = 99, .ret = 0},
                           {.op = OP_FLUSH, .arg = 9, .want = ""},
                           /* a takeover keeps the users it settles, until it has checked their rows */
                           {CLOSE("A", "a1", 2, 20), .ret = 1, .want = "u2/bob:offline@20"},
                           {.op = OP_SETTLE, .arg = 99, .resync = 1, .ret = 0},
                           {.op = OP_COUNTS, .want = "users=2 sessions=1 edges=1"},
                           {.op = OP_FORGET, .ret = 1},
                           {.op = OP_COUNTS, .want = "users=1 sessions=1 edges=1"},
                           {.op = OP_END}}},
    {"shown: where the roster agrees with the world, it takes the shown lastSeen",
     (const struct step[]){
         {OPEN("A", "a1", 1, "u1", "alice", 10), .ret = 1, .want = "u1/alice:online@10"},
         {.op = OP_SHOWN, .user = "u1", .name = "alice", .arg = ROSTER_ONLINE, .t = 8},
         {QUERY("u1"), .want = "u1/alice:online@8"},
         {.op = OP_SHOWN, .user = "u1", .name = "alice", .arg = ROSTER_AWAY, .t = 12}, /* set not heard yet */
         {QUERY("u1"), .want = "u1/alice:online@8"},
         {QUERY("u1"), .arg = 1, .want = "u1/alice:away@12"}, /* a standby answers what the world saw */
         {QUERY("u9"), .arg = 1, .want = "u9/:offline@0?"},
         {SET("u1", ROSTER_AWAY, 13), .ret = 0, .want = "u1/alice:away@13"},
         {.op = OP_RECONCILE, .ret = 0, .want = ""},
         {QUERY("u1"), .want = "u1/alice:away@12"},
         {.op = OP_FLUSH, .arg = 9, .want = "u1+"}, /* not marked again for the lastSeen taken */
         {.op = OP_END}}},
    {"a resync window for some edges: their sessions re-learnt, a quiet end, then reconcile",
     (const struct step[]){
         {OPEN("A", "a1", 1, "u1", "alice", 0), .ret = 1, .want = "u1/alice:online@0"},
         {OPEN("B", "b1", 1, "u2", "bob", 0), .ret = 1, .want = "u2/bob:online@0"},
         {OPEN("B", "b1", 2, "u3", "carol", 0), .ret = 1, .want = "u3/carol:online@0"},
         {.op = OP_SHOWN_ALL},
         {.op = OP_RBEGIN_EDGES, .user = "B Z"},
         {OPEN("B", "b1", 1, "u2", "bob", 10), .resync = 1, .ret = 0, .want = ""},
         {OPEN("B", "b1", 3, "u4", "dan", 20), .resync = 1, .ret = 1, .want = ""}, /* lost open, quiet */
         {CLOSE("A", "a1", 1, 30), .ret = 1, .want = ""},                          /* decided at the end */
         {.op = OP_REND, .t = 40, .arg = 1, .want = ""},
         {.op = OP_COUNTS, .want = "users=4 sessions=2 edges=2"},
         {.op = OP_RECONCILE, .ret = 3, .want = "u1/alice:offline@30 u3/carol:offline@40 u4/dan:online@20"},
         /* a quiet sweep writes the row without telling anyone */
         {.op = OP_SWEEP,
          .row = ROW("u8", "hal", ROSTER_ONLINE, 1, 1),
          .t = 50,
          .arg = 1,
          .ret = 1,
          .want = ""},
         {.op = OP_END}}},

    /* ---- the grace period (PRESENCE_GRACE_MS) ---- */
    {"grace: a close then an open within the grace queues nothing and writes nothing",
     (const struct step[]){
         {GRACE(1000)},
         {OPEN("A", "a1", 1, "u1", "alice", 100), .ret = 1, .want = "u1/alice:online@100"},
         {.op = OP_FLUSH, .arg = 9, .want = "u1+"},
         {CLOSE("A", "a1", 1, 200), .ret = 1, .want = ""}, /* the last session: no offline */
         {.op = OP_GRACED, .want = "u1@200"},
         {QUERY("u1"), .want = "u1/alice:online@100"}, /* what the world was shown */
         {.op = OP_ONLINE, .want = "u1/alice:online@100"},
         {.op = OP_FLUSH, .arg = 9, .want = ""},                          /* the row still says online */
         {GEXPIRE(1199), .ret = 0, .want = ""},                           /* 999 ms: not yet */
         {OPEN("B", "b1", 7, "u1", "alice", 1150), .ret = 1, .want = ""}, /* back, on another edge */
         {.op = OP_GRACED, .want = ""},
         {.op = OP_FLUSH, .arg = 9, .want = ""},
         {GEXPIRE(9999), .ret = 0, .want = ""},
         {QUERY("u1"), .want = "u1/alice:online@100"},
         {.op = OP_COUNTS, .want = "users=1 sessions=1 edges=2"},
         {.op = OP_END}}},
    {"grace: the grace passes: one offline with lastSeen the close; the row written offline then",
     (const struct step[]){
         {GRACE(1000)},
         {OPEN("A", "a1", 1, "u1", "alice", 100), .ret = 1, .want = "u1/alice:online@100"},
         {OPEN("A", "a1", 2, "u1", "alice", 110), .ret = 0, .want = ""},
         {.op = OP_FLUSH, .arg = 9, .want = "u1+"},
         {CLOSE("A", "a1", 1, 200), .ret = 0, .want = ""}, /* one of two: no grace */
         {.op = OP_GRACED, .want = ""},
         {CLOSE("A", "a1", 2, 300), .ret = 1, .want = ""},
         {GEXPIRE(1299), .ret = 0, .want = ""},
         {GEXPIRE(1300), .ret = 1, .want = "u1/alice:offline@300"}, /* the grace after the close */
         {GEXPIRE(1301), .ret = 0, .want = ""},                     /* once */
         {QUERY("u1"), .want = "u1/alice:offline@300"},
         {.op = OP_ONLINE, .want = ""},
         {.op = OP_FLUSH, .arg = 9, .want = "u1-"},
         {.op = OP_COUNTS, .want = "users=0 sessions=0 edges=1"},
         {OPEN("A", "a1", 3, "u1", "alice", 2000), .ret = 1, .want = "u1/alice:online@2000"}, /* news again */
         {.op = OP_END}}},
    {"grace: away, and invisible, kept across a drop within the grace",
     (const struct step[]){
         {GRACE(5000)},
         {OPEN("A", "a1", 1, "u1", "alice", 100), .ret = 1, .want = "u1/alice:online@100"},
         {SET("u1", ROSTER_AWAY, 150), .ret = 0, .want = "u1/alice:away@150"},
         {CLOSE("A", "a1", 1, 200), .ret = 1, .want = ""},
         {QUERY("u1"), .want = "u1/alice:away@150"},
         {.op = OP_ONLINE, .want = "u1/alice:away@150"},
         {SET("u1", ROSTER_ONLINE, 250), .ret = -1, .want = ""},         /* no session to set it from */
         {OPEN("B", "b1", 1, "u1", "alice", 300), .ret = 1, .want = ""}, /* not set back to online */
         {QUERY("u1"), .want = "u1/alice:away@150"},
         {.op = OP_FLUSH, .arg = 9, .want = "u1+"}, /* the open and the set, before the drop */
         {SET("u1", ROSTER_OFFLINE, 400), .ret = 0, .want = "u1/alice:offline@400"},
         {CLOSE("B", "b1", 1, 500), .ret = 1, .want = ""},
         {.op = OP_ONLINE, .want = ""},
         {OPEN("A", "a1", 2, "u1", "alice", 600), .ret = 1, .want = ""}, /* still invisible */
         {QUERY("u1"), .want = "u1/alice:offline@400"},
         {CLOSE("A", "a1", 2, 700), .ret = 1, .want = ""},
         {GEXPIRE(5700), .ret = 1, .want = "u1/alice:offline@700"}, /* as today: lastSeen the close */
         {.op = OP_END}}},
    {"grace: every other way of losing the last session: an edge restarted, a silent edge, a moved session",
     (const struct step[]){
         {GRACE(500)},
         {OPEN("A", "a1", 1, "u1", "alice", 0), .ret = 1, .want = "u1/alice:online@0"},
         {OPEN("B", "b1", 1, "u2", "bob", 0), .ret = 1, .want = "u2/bob:online@0"},
         {OPEN("A", "a1", 2, "u3", "carol", 0), .ret = 1, .want = "u3/carol:online@0"},
         {OPEN("C", "c1", 1, "u4", "dan", 0), .ret = 1, .want = "u4/dan:online@0"},
         {HB("A", "a2", 100), .want = ""}, /* A restarted */
         {HB("C", "c1", 150), .want = ""},
         {OPEN("C", "c1", 1, "u5", "erin", 200), .ret = 1,
          .want = "u5/erin:online@200"}, /* dan's conn id reused */
         {HB("A", "a2", 900), .want = ""},
         {HB("C", "c1", 900), .want = ""},
         {EXPIRE(1000, 800), .ret = 1, .want = ""}, /* B silent */
         {.op = OP_GRACED, .want = "u1@100 u2@1000 u3@100 u4@200"},
         {.op = OP_ONLINE,
          .want = "u1/alice:online@0 u2/bob:online@0 u3/carol:online@0 u4/dan:online@0 "
                  "u5/erin:online@200"},
         {GEXPIRE(650), .ret = 2, .want = "u1/alice:offline@100 u3/carol:offline@100"}, /* oldest first */
         {GEXPIRE(700), .ret = 1, .want = "u4/dan:offline@200"},
         {GEXPIRE(1499), .ret = 0, .want = ""},
         {GEXPIRE(1500), .ret = 1, .want = "u2/bob:offline@1000"},
         {.op = OP_COUNTS, .want = "users=5 sessions=1 edges=2"},
         {.op = OP_END}}},
    {"grace: a resync window defers its end; a re-announced session takes the user back silently",
     (const struct step[]){
         {GRACE(1000)},
         {OPEN("A", "a1", 1, "u1", "alice", 0), .ret = 1, .want = "u1/alice:online@0"},
         {OPEN("A", "a1", 2, "u2", "bob", 0), .ret = 1, .want = "u2/bob:online@0"},
         {OPEN("A", "a1", 3, "u3", "carol", 0), .ret = 1, .want = "u3/carol:online@0"},
         {.op = OP_SHOWN_ALL},
         {CLOSE("A", "a1", 1, 100), .ret = 1, .want = ""},
         {.op = OP_RBEGIN},
         {GEXPIRE(1200), .ret = 0, .want = ""}, /* the window is open */
         {OPEN("B", "b1", 9, "u1", "alice", 1300), .resync = 1, .ret = 1, .want = ""},
         {CLOSE("A", "a1", 3, 1400), .ret = 1, .want = ""}, /* in the window: the grace starts */
         {.op = OP_REND, .t = 1500, .arg = 0, .want = ""},  /* bob not re-announced: dropped now */
         {.op = OP_GRACED, .want = "u2@1500 u3@1400"},
         {QUERY("u1 u2 u3"), .want = "u1/alice:online@0 u2/bob:online@0 u3/carol:online@0"},
         {.op = OP_SWEEP, .row = ROW("u2", "bob", ROSTER_ONLINE, 0, 1), .t = 1500, .ret = 0, .want = ""},
         {GEXPIRE(2399), .ret = 0, .want = ""},
         {GEXPIRE(2400), .ret = 1, .want = "u3/carol:offline@1400"},
         {GEXPIRE(2500), .ret = 1, .want = "u2/bob:offline@1500"},
         {.op = OP_RBEGIN},
         {CLOSE("B", "b1", 9, 3000), .ret = 1, .want = ""},
         {GEXPIRE(4500), .ret = 0, .want = ""},
         {.op = OP_REND, .t = 4600, .arg = 1, .want = ""},
         {GEXPIRE(4600), .ret = 1, .want = "u1/alice:offline@3000"}, /* after the window, as of the close */
         {.op = OP_END}}},
    {"grace: a status chosen in a resync window for a user in the grace period is shown at its end",
     (const struct step[]){
         {GRACE(5000)},
         {OPEN("A", "a1", 1, "u1", "alice", 0), .ret = 1, .want = "u1/alice:online@0"},
         {CLOSE("A", "a1", 1, 100), .ret = 1, .want = ""},
         {.op = OP_RBEGIN},
         {SET("u1", ROSTER_AWAY, 200), .ret = 0, .want = ""}, /* its session not re-announced yet */
         {.op = OP_REND, .t = 300, .arg = 0, .want = "u1/alice:away@200"},
         {QUERY("u1"), .want = "u1/alice:away@200"},
         {GEXPIRE(5100), .ret = 1, .want = "u1/alice:offline@100"},
         {.op = OP_END}}},
    {"grace: a state transfer keeps a user in the grace period with the same deadline",
     (const struct step[]){
         {GRACE(1000)},
         {OPEN("A", "a1", 1, "u1", "alice", 10), .ret = 1, .want = "u1/alice:online@10"},
         {SET("u1", ROSTER_AWAY, 20), .ret = 0, .want = "u1/alice:away@20"},
         {OPEN("A", "a1", 2, "u2", "bob", 10), .ret = 1, .want = "u2/bob:online@10"},
         {OPEN("A", "a1", 3, "u3", "carol", 10), .ret = 1, .want = "u3/carol:online@10"},
         {CLOSE("A", "a1", 1, 100), .ret = 1, .want = ""},
         {CLOSE("A", "a1", 3, 150), .ret = 1, .want = ""},
         {.op = OP_TRANSFER, .t = 500, .arg = 1000},
         {.op = OP_GRACED, .want = "u1@100 u3@150"},
         {.op = OP_COUNTS, .want = "users=3 sessions=1 edges=1"},
         {QUERY("u1 u3"), .arg = 1, .want = "u1/alice:away@20 u3/carol:online@10"}, /* as shown */
         {.op = OP_FLUSH, .arg = 9, .want = ""},                         /* nothing to write about them */
         {.op = OP_RECONCILE, .ret = 0, .want = ""},                     /* a takeover has nothing to tell */
         {OPEN("B", "b1", 1, "u3", "carol", 600), .ret = 1, .want = ""}, /* back within it */
         {GEXPIRE(1099), .ret = 0, .want = ""},
         {GEXPIRE(1100), .ret = 1, .want = "u1/alice:offline@100"},
         {QUERY("u3"), .want = "u3/carol:online@10"},
         {.op = OP_END}}},
    {"grace: a standby whose grace ended first tells the world at a takeover, once; one the active's offline "
     "reached first ends it",
     (const struct step[]){
         {GRACE(1000)},
         {OPEN("A", "a1", 1, "u1", "alice", 10), .ret = 1, .want = "u1/alice:online@10"},
         {OPEN("A", "a1", 2, "u2", "bob", 10), .ret = 1, .want = "u2/bob:online@10"},
         {.op = OP_SHOWN, .user = "u1", .name = "alice", .arg = ROSTER_ONLINE, .t = 9},
         {.op = OP_SHOWN, .user = "u2", .name = "bob", .arg = ROSTER_ONLINE, .t = 9},
         {CLOSE("A", "a1", 1, 100), .ret = 1, .want = ""},
         {CLOSE("A", "a1", 2, 100), .ret = 1, .want = ""},
         {.op = OP_SHOWN, .user = "u2", .name = "bob", .arg = ROSTER_OFFLINE, .t = 98}, /* the active's */
         {.op = OP_GRACED, .want = "u1@100"},
         {QUERY("u2"), .want = "u2/bob:offline@98"},
         {GEXPIRE(1100), .ret = 1, .want = "u1/alice:offline@100"}, /* a standby drops it: not shown */
         {.op = OP_RECONCILE, .ret = 1, .want = "u1/alice:offline@100"},
         {.op = OP_SHOWN, .user = "u1", .name = "alice", .arg = ROSTER_OFFLINE, .t = 100},
         {.op = OP_RECONCILE, .ret = 0, .want = ""},
         {.op = OP_END}}},
    {"grace 0: a close is offline at once, as without the setting",
     (const struct step[]){{GRACE(0)},
                           {OPEN("A", "a1", 1, "u1", "alice", 0), .ret = 1, .want = "u1/alice:online@0"},
                           {CLOSE("A", "a1", 1, 50), .ret = 1, .want = "u1/alice:offline@50"},
                           {.op = OP_GRACED, .want = ""},
                           {GEXPIRE(99999), .ret = 0, .want = ""},
                           {OPEN("A", "a1", 2, "u2", "bob", 60), .ret = 1, .want = "u2/bob:online@60"},
                           {HB("A", "a2", 70), .want = "u2/bob:offline@70"},
                           {.op = OP_END}}},
};

static void test_case(void **state)
{
    run_case(*state);
}

int main(void)
{
    struct CMUnitTest tests[sizeof cases / sizeof cases[0]];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        tests[i] = (struct CMUnitTest){cases[i].name, test_case, NULL, NULL, (void *)&cases[i]};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
