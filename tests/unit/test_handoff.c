/* test_handoff: presence's state in chunks. The online list of 100,000 users
 * as PresenceSnapshot chunks (each within HANDOFF_CHUNK_BYTES, every user once,
 * in order), and a roster sent whole to another replica and rebuilt: the same
 * users, statuses, sessions per edge, online list and answers. No network. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.pb-c.h"
#include "handoff.h"
#include "mem.h"
#include "roster.h"

static void id_of(char *out, int i)
{
    snprintf(out, 37, "00000000-0000-4000-8000-%012d", i);
}

static void test_snapshot_100k(void **state)
{
    (void)state;
    enum { N = 100000 };
    struct roster_info *infos = xcalloc(N, sizeof *infos);
    char(*ids)[37] = xmalloc(N * sizeof *ids);
    char(*names)[24] = xmalloc(N * sizeof *names);
    for (int i = 0; i < N; i++) {
        id_of(ids[i], i);
        snprintf(names[i], sizeof names[i], "user%d", i);
        infos[i] = (struct roster_info){ids[i], names[i], i % 7 ? ROSTER_ONLINE : ROSTER_AWAY,
                                        1700000000000LL + i, 1};
    }
    struct handoff_chunks c = {0};
    handoff_snapshot(&c, infos, N, "epoch-1", 42);
    assert_true(c.n > 1);
    int next = 0;
    for (size_t k = 0; k < c.n; k++) {
        assert_true(c.bufs[k].len <= HANDOFF_CHUNK_BYTES);
        Chat__V1__PresenceSnapshot *s =
            chat__v1__presence_snapshot__unpack(NULL, c.bufs[k].len, (const uint8_t *)c.bufs[k].data);
        assert_non_null(s);
        assert_string_equal(s->epoch, "epoch-1");
        assert_int_equal(s->seq, 42);
        assert_int_equal(s->chunk, k);
        assert_int_equal(s->chunks, c.n);
        assert_true(s->n_users > 0);
        for (size_t i = 0; i < s->n_users; i++, next++) {
            assert_string_equal(s->users[i]->user_id, ids[next]);
            assert_string_equal(s->users[i]->username, names[next]);
            assert_int_equal(s->users[i]->status, infos[next].status);
            assert_int_equal(s->users[i]->last_seen_ms, infos[next].last_seen_ms);
        }
        chat__v1__presence_snapshot__free_unpacked(s, NULL);
    }
    assert_int_equal(next, N);
    /* about 56 bytes a user: roughly 22 chunks of 256 KiB, none far below */
    assert_true(c.n <= (size_t)N * 60 / (HANDOFF_CHUNK_BYTES - 1024) + 1);
    handoff_chunks_cleanup(&c);
    handoff_snapshot(&c, NULL, 0, "e", 0);
    assert_int_equal(c.n, 1);
    Chat__V1__PresenceSnapshot *s =
        chat__v1__presence_snapshot__unpack(NULL, c.bufs[0].len, (const uint8_t *)c.bufs[0].data);
    assert_non_null(s);
    assert_int_equal(s->n_users, 0);
    assert_int_equal(s->chunks, 1);
    chat__v1__presence_snapshot__free_unpacked(s, NULL);
    handoff_chunks_cleanup(&c);
    free(names);
    free(ids);
    free(infos);
}

/* A roster of n users over three edges: user i has 1 + i % 3 sessions, every
 * fifth is away, every eleventh invisible; then some close (offline, dirty). */
static struct roster *make_roster(int n)
{
    struct roster *r = roster_create();
    const char *edges[] = {"edge-a", "edge-b", "edge-c"};
    const char *boots[] = {"boot-a", "boot-b", "boot-c"};
    for (int i = 0; i < n; i++) {
        char id[37], name[32];
        id_of(id, i);
        snprintf(name, sizeof name, "name-%d", i);
        for (int k = 0; k <= i % 3; k++) {
            struct roster_event ev = {edges[(i + k) % 3],
                                      boots[(i + k) % 3],
                                      (unsigned long long)i * 4 + k,
                                      id,
                                      name,
                                      0,
                                      1000,
                                      1000 + i};
            roster_open(r, &ev, NULL);
        }
        if (i % 5 == 0)
            roster_set_status(r, id, ROSTER_AWAY, 5000 + i);
        if (i % 11 == 0)
            roster_set_status(r, id, ROSTER_OFFLINE, 6000 + i);
        if (i % 13 == 0) { /* all sessions closed: offline, not written yet */
            for (int k = 0; k <= i % 3; k++) {
                struct roster_event ev = {edges[(i + k) % 3],
                                          boots[(i + k) % 3],
                                          (unsigned long long)i * 4 + k,
                                          id,
                                          "",
                                          0,
                                          2000,
                                          7000 + i};
                roster_close(r, &ev);
            }
        }
    }
    roster_changes_clear(r);
    return r;
}

static void assert_same(struct roster *a, struct roster *b, int n)
{
    assert_int_equal(roster_nusers(a), roster_nusers(b));
    assert_int_equal(roster_nsessions(a), roster_nsessions(b));
    assert_int_equal(roster_nedges(a), roster_nedges(b));
    struct roster_info *la, *lb;
    size_t na = roster_online(a, &la), nb = roster_online(b, &lb);
    assert_int_equal(na, nb);
    free(la);
    free(lb);
    for (int i = 0; i < n; i++) {
        char id[37];
        id_of(id, i);
        const char *ids[] = {id};
        struct roster_info ia, ib;
        roster_query(a, ids, 1, &ia, 0);
        roster_query(b, ids, 1, &ib, 1); /* a transferred roster shows what the active shows */
        assert_int_equal(ia.known, ib.known);
        assert_int_equal(ia.status, ib.status);
        assert_int_equal(ia.last_seen_ms, ib.last_seen_ms);
        assert_string_equal(ia.username, ib.username);
        const struct roster_user *ua = roster_user_get(a, id), *ub = roster_user_get(b, id);
        assert_true((ua == NULL) == (ub == NULL));
        if (ua) {
            assert_int_equal(ua->nsessions, ub->nsessions);
            assert_int_equal(ua->status, ub->status);
            assert_int_equal(ub->in_grace, ua->in_grace);
            assert_int_equal(ub->shown, ub->nsessions || ub->in_grace ? ub->status : ROSTER_OFFLINE);
        }
    }
}

/* Rosters of make_roster(n): every edge holds as many sessions on both sides. */
static void assert_same_edges(struct roster *a, struct roster *b, int n)
{
    const char *edges[] = {"edge-a", "edge-b", "edge-c"};
    for (int e = 0; e < 3; e++) {
        size_t count = 0;
        for (int i = 0; i < n; i++)
            if (i % 13 != 0)
                for (int k = 0; k <= i % 3; k++)
                    count += (i + k) % 3 == e;
        assert_int_equal(roster_edge_count(a, edges[e], count), 0);
        assert_int_equal(roster_edge_count(b, edges[e], count), 0);
    }
}

static void test_state_roundtrip(void **state)
{
    (void)state;
    enum { N = 20000 };
    struct roster *a = make_roster(N);
    struct handoff_chunks c = {0};
    handoff_state(&c, a, "epoch-7", 99);
    assert_true(c.n > 2);
    struct handoff_import *im = handoff_import_create(123);
    int rc = 0, not_ready = 0;
    for (size_t k = 0; k < c.n; k++) {
        assert_true(c.bufs[k].len <= HANDOFF_CHUNK_BYTES);
        rc = handoff_import_add(im, c.bufs[k].data, c.bufs[k].len, &not_ready);
        assert_int_equal(rc, k + 1 == c.n ? 1 : 0);
    }
    char epoch[64];
    uint64_t seq = 0;
    struct roster *b = handoff_import_take(im, epoch, sizeof epoch, &seq);
    assert_string_equal(epoch, "epoch-7");
    assert_int_equal(seq, 99);
    assert_same(a, b, N);
    assert_same_edges(a, b, N);
    /* the offline users the active still had to write are dirty on this side too */
    assert_int_equal(roster_ndirty(b), (N + 12) / 13);
    assert_int_equal(roster_reconcile(b), 0); /* the world was shown what the roster says */
    roster_destroy(b);
    handoff_import_destroy(im);
    handoff_chunks_cleanup(&c);
    roster_destroy(a);
}

/* Imports c whole into a new roster with the given grace period. */
static struct roster *import_all(const struct handoff_chunks *c, long long grace_ms)
{
    struct handoff_import *im = handoff_import_create(0);
    int not_ready = 0, rc = 0;
    for (size_t k = 0; k < c->n; k++)
        rc = handoff_import_add(im, c->bufs[k].data, c->bufs[k].len, &not_ready);
    assert_int_equal(rc, 1);
    char epoch[64];
    uint64_t seq = 0;
    struct roster *r = handoff_import_take(im, epoch, sizeof epoch, &seq);
    handoff_import_destroy(im);
    roster_set_grace(r, grace_ms);
    return r;
}

/* Users in the grace period (PRESENCE_GRACE_MS) travel with the time their
 * last session closed: the new roster shows them as before, has nothing to
 * tell the world at a takeover, and ends their grace at the same time. */
static void test_state_grace(void **state)
{
    (void)state;
    enum { N = 3000 };
    struct roster *a = roster_create();
    roster_set_grace(a, 5000);
    for (int i = 0; i < N; i++) {
        char id[37], name[32];
        id_of(id, i);
        snprintf(name, sizeof name, "g-%d", i);
        struct roster_event ev = {"edge-a", "boot-a", (unsigned long long)i + 1, id, name, 0, 1000, 1000000};
        roster_open(a, &ev, NULL);
        if (i % 4 == 1)
            roster_set_status(a, id, ROSTER_AWAY, 1000100);
        if (i % 2) { /* the odd ones drop: in the grace period since 1001000 + i */
            ev.now_ms = 1001000 + i;
            assert_int_equal(roster_close(a, &ev), 1);
        }
    }
    roster_changes_clear(a);
    assert_int_equal(roster_ngrace(a), N / 2);
    struct handoff_chunks c = {0};
    handoff_state(&c, a, "epoch-g", 7);
    struct roster *b = import_all(&c, 5000);
    assert_int_equal(roster_ngrace(b), N / 2);
    assert_int_equal(roster_nsessions(b), N - N / 2);
    assert_same(a, b, N); /* the same answers: users in the grace period as shown */
    assert_int_equal(roster_reconcile(b), 0);
    assert_int_equal(roster_ndirty(b), 0); /* nobody to write offline yet */
    for (int i = 1; i < N; i += 2) {
        char id[37];
        id_of(id, i);
        const struct roster_user *u = roster_user_get(b, id);
        assert_non_null(u);
        assert_true(u->in_grace);
        assert_int_equal(u->grace_since_ms, 1001000 + i);
    }
    /* the deadline: the close + 5000, on either side */
    assert_int_equal(roster_grace_expire(a, 1006000), 0);
    assert_int_equal(roster_grace_expire(a, 1006001), 1);
    assert_int_equal(roster_grace_expire(b, 1006000), 0);
    assert_int_equal(roster_grace_expire(b, 1006001), 1);
    assert_int_equal(roster_grace_expire(b, 1006001 + N / 2), N / 4);
    const struct roster_change *ch;
    size_t n = roster_changes(b, &ch);
    assert_int_equal(n, 1 + N / 4);
    assert_int_equal(ch[0].status, ROSTER_OFFLINE);
    assert_int_equal(ch[0].last_seen_ms, 1001001); /* the close, not the expiry */
    for (size_t k = 1; k < n; k++)
        assert_true(ch[k].last_seen_ms > ch[k - 1].last_seen_ms); /* oldest first */
    /* a replica with no grace period ends them at its next sweep */
    struct roster *z = import_all(&c, 0);
    assert_int_equal(roster_grace_expire(z, 1001000), 0);
    assert_int_equal(roster_grace_expire(z, 1001000 + N), N / 2);
    roster_destroy(z);
    roster_destroy(b);
    handoff_chunks_cleanup(&c);
    roster_destroy(a);
}

static void test_import_refuses(void **state)
{
    (void)state;
    struct roster *a = make_roster(8000);
    struct handoff_chunks c = {0};
    handoff_state(&c, a, "epoch-1", 5);
    assert_true(c.n > 1);
    int not_ready = 0;
    struct handoff_import *im = handoff_import_create(0);
    assert_int_equal(handoff_import_add(im, c.bufs[1].data, c.bufs[1].len, &not_ready),
                     -1); /* chunk 0 first */
    handoff_import_destroy(im);
    im = handoff_import_create(0);
    assert_int_equal(handoff_import_add(im, "\xff\xff\xff", 3, &not_ready), -1);
    assert_int_equal(not_ready, 0);
    assert_int_equal(handoff_import_add(im, c.bufs[0].data, c.bufs[0].len, &not_ready), 0);
    struct handoff_chunks other = {0};
    handoff_state(&other, a, "epoch-2", 5);
    assert_int_equal(handoff_import_add(im, other.bufs[1].data, other.bufs[1].len, &not_ready), -1);
    handoff_import_destroy(im);
    handoff_chunks_cleanup(&other);
    handoff_not_ready(&other, "epoch-2");
    im = handoff_import_create(0);
    assert_int_equal(handoff_import_add(im, other.bufs[0].data, other.bufs[0].len, &not_ready), -1);
    assert_int_equal(not_ready, 1);
    handoff_import_destroy(im);
    handoff_chunks_cleanup(&other);
    handoff_chunks_cleanup(&c);
    roster_destroy(a);
    /* an empty roster is one chunk */
    struct roster *e = roster_create();
    handoff_state(&c, e, "x", 0);
    assert_int_equal(c.n, 1);
    im = handoff_import_create(0);
    assert_int_equal(handoff_import_add(im, c.bufs[0].data, c.bufs[0].len, &not_ready), 1);
    handoff_import_destroy(im);
    handoff_chunks_cleanup(&c);
    roster_destroy(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_100k),
        cmocka_unit_test(test_state_roundtrip),
        cmocka_unit_test(test_state_grace),
        cmocka_unit_test(test_import_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
