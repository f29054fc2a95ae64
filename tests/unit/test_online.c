/* test_online: the edge's copy of the online list (chat/online.c): snapshot
 * chunks in order (and every way a snapshot can break off), changes applied
 * by seq, a gap and another epoch detected, changes buffered while a
 * snapshot comes and applied after it, epochs left behind skipped, entries
 * that cannot be written left out, and the list written as the same JSON as
 * presence's own list; then 100,000 users with churn against a model. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat_json.h"
#include "chat/chat_wire.h"
#include "chat/online.h"

#define T0 1767225600000LL /* 2026-01-01T00:00:00.000Z */

/* ---- building what presence sends ---- */

static void uid(char *out, int n)
{
    snprintf(out, 37, "00000000-0000-4000-8000-%012d", n);
}

/* A PresenceInfo for user n (its strings in the struct's own buffers). */
struct info {
    Chat__V1__PresenceInfo pb;
    char id[48];
    char name[256];
};

static void info_init(struct info *i, int n, Chat__V1__Status status, long long last_seen)
{
    chat__v1__presence_info__init(&i->pb);
    uid(i->id, n);
    snprintf(i->name, sizeof i->name, "user %d", n);
    i->pb.user_id = i->id;
    i->pb.username = i->name;
    i->pb.status = status;
    i->pb.last_seen_ms = last_seen;
}

static enum online_verdict change(struct online *o, const char *epoch, uint64_t seq, int n,
                                  Chat__V1__Status st, const char **why)
{
    struct info i;
    info_init(&i, n, st, T0 + (long long)seq);
    Chat__V1__PresenceChange pc = CHAT__V1__PRESENCE_CHANGE__INIT;
    pc.info = &i.pb;
    pc.seq = seq;
    pc.epoch = (char *)epoch;
    const char *unused;
    return online_change(o, &pc, why ? why : &unused);
}

/* A chunk of users [from, to) online. */
static enum online_verdict chunk(struct online *o, const char *epoch, uint64_t seq, uint32_t k,
                                 uint32_t chunks, int from, int to, const char **why)
{
    size_t n = to > from ? (size_t)(to - from) : 0;
    struct info *is = calloc(n ? n : 1, sizeof *is);
    Chat__V1__PresenceInfo **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    for (size_t j = 0; j < n; j++) {
        info_init(&is[j], from + (int)j, CHAT__V1__STATUS__STATUS_ONLINE, T0);
        ptrs[j] = &is[j].pb;
    }
    Chat__V1__PresenceSnapshot s = CHAT__V1__PRESENCE_SNAPSHOT__INIT;
    s.epoch = (char *)epoch;
    s.seq = seq;
    s.chunk = k;
    s.chunks = chunks;
    s.n_users = n;
    s.users = ptrs;
    const char *unused;
    enum online_verdict v = online_chunk(o, &s, why ? why : &unused);
    free(ptrs);
    free(is);
    return v;
}

/* ---- reading what the copy writes ---- */

/* The list online_write writes, parsed: checks the packet's frame and returns
 * the array (new reference). */
static json_t *written(const struct online *o)
{
    struct buf b;
    buf_init(&b);
    online_write(o, &b, "presence:update");
    assert_true(b.len > 2);
    assert_int_equal(b.data[0], '2');
    json_error_t err;
    json_t *packet = json_loadb(b.data + 1, b.len - 1, 0, &err);
    if (!packet)
        fail_msg("not JSON (%s): %.200s", err.text, b.data);
    buf_cleanup(&b);
    assert_true(json_is_array(packet) && json_array_size(packet) == 2);
    assert_string_equal(json_string_value(json_array_get(packet, 0)), "presence:update");
    json_t *list = json_incref(json_array_get(packet, 1));
    json_decref(packet);
    assert_true(json_is_array(list));
    return list;
}

/* "<n>:<status>" of every user listed, sorted by n, joined by spaces. */
static char *summary(const struct online *o)
{
    json_t *list = written(o);
    size_t n = json_array_size(list);
    int *ns = calloc(n ? n : 1, sizeof *ns);
    char **st = calloc(n ? n : 1, sizeof *st);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(list, i);
        const char *id = json_string_value(json_object_get(e, "userId"));
        assert_non_null(id);
        ns[i] = atoi(id + 24);
        st[i] = (char *)json_string_value(json_object_get(e, "status"));
    }
    for (size_t i = 1; i < n; i++) /* insertion sort, small lists only */
        for (size_t j = i; j > 0 && ns[j - 1] > ns[j]; j--) {
            int t = ns[j];
            ns[j] = ns[j - 1];
            ns[j - 1] = t;
            char *u = st[j];
            st[j] = st[j - 1];
            st[j - 1] = u;
        }
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; i < n; i++) {
        char one[64];
        snprintf(one, sizeof one, "%s%d:%s", i ? " " : "", ns[i], st[i]);
        buf_puts(&b, one);
    }
    char *out = strdup(buf_cstr(&b));
    buf_cleanup(&b);
    free(ns);
    free(st);
    json_decref(list);
    return out;
}

#define assert_listed(o, want)                                                                               \
    do {                                                                                                     \
        char *got_ = summary(o);                                                                             \
        assert_string_equal(got_, want);                                                                     \
        free(got_);                                                                                          \
    } while (0)

/* A copy in step at epoch "e1", seq 5, with users 1, 2, 3 online. */
static struct online *in_step(void)
{
    struct online *o = online_create();
    online_asked(o);
    assert_int_equal(chunk(o, "e1", 5, 0, 2, 1, 3, NULL), ONLINE_MORE);
    assert_int_equal(chunk(o, "e1", 5, 1, 2, 3, 4, NULL), ONLINE_IN_STEP);
    assert_true(online_in_step(o));
    return o;
}

/* ---- the cases ---- */

static void test_snapshot(void **state)
{
    (void)state;
    struct online *o = online_create();
    assert_false(online_in_step(o));
    assert_string_equal(online_epoch(o), "");
    assert_listed(o, "");
    /* a change before any snapshot: nothing to apply it to */
    assert_int_equal(change(o, "e1", 1, 9, CHAT__V1__STATUS__STATUS_ONLINE, NULL), ONLINE_SKIPPED);
    online_asked(o);
    assert_true(online_asking(o));
    assert_int_equal(chunk(o, "e1", 5, 0, 3, 1, 3, NULL), ONLINE_MORE);
    assert_false(online_in_step(o));
    assert_int_equal(chunk(o, "e1", 5, 1, 3, 3, 4, NULL), ONLINE_MORE);
    assert_int_equal(chunk(o, "e1", 5, 2, 3, 0, 0, NULL), ONLINE_IN_STEP); /* an empty chunk is a chunk */
    assert_true(online_in_step(o));
    assert_false(online_asking(o));
    assert_string_equal(online_epoch(o), "e1");
    assert_int_equal(online_seq(o), 5);
    assert_int_equal(online_count(o), 3);
    assert_listed(o, "1:online 2:online 3:online");
    /* a new snapshot replaces the copy whole */
    online_asked(o);
    assert_false(online_in_step(o));
    assert_int_equal(chunk(o, "e1", 9, 0, 1, 7, 9, NULL), ONLINE_IN_STEP);
    assert_listed(o, "7:online 8:online");
    assert_int_equal(online_seq(o), 9);
    /* an empty roster: one chunk, no users */
    online_asked(o);
    assert_int_equal(chunk(o, "e1", 12, 0, 1, 0, 0, NULL), ONLINE_IN_STEP);
    assert_listed(o, "");
    assert_int_equal(online_count(o), 0);
    online_destroy(o);
}

static void test_changes(void **state)
{
    (void)state;
    struct online *o = in_step();
    unsigned long long gen = online_gen(o);
    assert_int_equal(change(o, "e1", 6, 4, CHAT__V1__STATUS__STATUS_ONLINE, NULL), ONLINE_APPLIED);
    assert_true(online_gen(o) > gen);
    assert_int_equal(change(o, "e1", 7, 2, CHAT__V1__STATUS__STATUS_AWAY, NULL), ONLINE_APPLIED);
    assert_int_equal(change(o, "e1", 8, 1, CHAT__V1__STATUS__STATUS_OFFLINE, NULL), ONLINE_APPLIED);
    assert_listed(o, "2:away 3:online 4:online");
    /* the new lastSeen is the change's */
    json_t *l = written(o);
    for (size_t i = 0; i < json_array_size(l); i++) {
        json_t *e = json_array_get(l, i);
        if (strcmp(json_string_value(json_object_get(e, "userId")), "00000000-0000-4000-8000-000000000002") ==
            0)
            assert_string_equal(json_string_value(json_object_get(e, "lastSeen")),
                                "2026-01-01T00:00:00.007Z");
    }
    json_decref(l);
    /* held already: skipped, nothing changes */
    gen = online_gen(o);
    assert_int_equal(change(o, "e1", 8, 3, CHAT__V1__STATUS__STATUS_OFFLINE, NULL), ONLINE_SKIPPED);
    assert_int_equal(change(o, "e1", 2, 3, CHAT__V1__STATUS__STATUS_OFFLINE, NULL), ONLINE_SKIPPED);
    assert_int_equal(online_gen(o), gen);
    assert_listed(o, "2:away 3:online 4:online");
    /* offline for a user not listed, and a user going invisible (offline while connected) */
    assert_int_equal(change(o, "e1", 9, 40, CHAT__V1__STATUS__STATUS_OFFLINE, NULL), ONLINE_APPLIED);
    assert_int_equal(change(o, "e1", 10, 3, CHAT__V1__STATUS__STATUS_OFFLINE, NULL), ONLINE_APPLIED);
    assert_listed(o, "2:away 4:online");
    assert_int_equal(online_seq(o), 10);
    assert_true(online_in_step(o));
    online_destroy(o);
}

static void test_gap(void **state)
{
    (void)state;
    struct online *o = in_step();
    const char *why = NULL;
    assert_int_equal(change(o, "e1", 6, 4, CHAT__V1__STATUS__STATUS_ONLINE, &why), ONLINE_APPLIED);
    assert_int_equal(change(o, "e1", 8, 5, CHAT__V1__STATUS__STATUS_ONLINE, &why), ONLINE_AGAIN);
    assert_string_equal(why, "gap");
    assert_false(online_in_step(o));
    /* out of step, nothing asked yet: changes wait for the snapshot */
    assert_int_equal(change(o, "e1", 9, 6, CHAT__V1__STATUS__STATUS_ONLINE, NULL), ONLINE_SKIPPED);
    assert_int_equal(change(o, "e1", 7, 6, CHAT__V1__STATUS__STATUS_ONLINE, NULL), ONLINE_SKIPPED);
    online_destroy(o);
}

static void test_epoch(void **state)
{
    (void)state;
    struct online *o = in_step();
    const char *why = NULL;
    /* epochs are compared for equality only: "e0" and a seq that follows are still another epoch */
    assert_int_equal(change(o, "e0", 6, 4, CHAT__V1__STATUS__STATUS_ONLINE, &why), ONLINE_AGAIN);
    assert_string_equal(why, "epoch");
    assert_false(online_in_step(o));
    online_destroy(o);
    o = in_step();
    assert_int_equal(change(o, "e2", 1, 4, CHAT__V1__STATUS__STATUS_ONLINE, &why), ONLINE_AGAIN);
    assert_string_equal(why, "epoch");
    /* the snapshot comes from the new active: e1 is over */
    online_asked(o);
    assert_int_equal(chunk(o, "e2", 1, 0, 1, 2, 5, NULL), ONLINE_IN_STEP);
    assert_string_equal(online_epoch(o), "e2");
    assert_listed(o, "2:online 3:online 4:online");
    /* a stray change of e1 (the old active's last words) is skipped */
    assert_int_equal(change(o, "e1", 6, 9, CHAT__V1__STATUS__STATUS_ONLINE, &why), ONLINE_SKIPPED);
    assert_true(online_in_step(o));
    assert_int_equal(change(o, "e2", 2, 2, CHAT__V1__STATUS__STATUS_OFFLINE, &why), ONLINE_APPLIED);
    assert_listed(o, "3:online 4:online");
    /* a third epoch is news again */
    assert_int_equal(change(o, "e3", 1, 9, CHAT__V1__STATUS__STATUS_ONLINE, &why), ONLINE_AGAIN);
    assert_string_equal(why, "epoch");
    online_destroy(o);
}

static void test_buffering(void **state)
{
    (void)state;
    struct online *o = in_step();
    const char *why = NULL;
    assert_int_equal(change(o, "e1", 8, 9, CHAT__V1__STATUS__STATUS_ONLINE, &why), ONLINE_AGAIN);
    /* changes heard before the request are not kept: the snapshot holds them */
    online_asked(o);
    assert_int_equal(change(o, "e1", 9, 10, CHAT__V1__STATUS__STATUS_ONLINE, NULL), ONLINE_BUFFERED);
    assert_int_equal(change(o, "e1", 11, 11, CHAT__V1__STATUS__STATUS_ONLINE, NULL), ONLINE_BUFFERED);
    assert_int_equal(chunk(o, "e1", 10, 0, 2, 1, 3, NULL), ONLINE_MORE);
    /* one heard between chunks */
    assert_int_equal(change(o, "e1", 12, 1, CHAT__V1__STATUS__STATUS_AWAY, NULL), ONLINE_BUFFERED);
    assert_int_equal(chunk(o, "e1", 10, 1, 2, 10, 11, NULL), ONLINE_IN_STEP);
    /* seq 9 (in the snapshot) skipped; 11 and 12 applied */
    assert_int_equal(online_seq(o), 12);
    assert_listed(o, "1:away 2:online 10:online 11:online");
    online_destroy(o);

    /* a gap among the buffered changes: out of step again at once */
    o = in_step();
    online_asked(o);
    assert_int_equal(change(o, "e1", 7, 20, CHAT__V1__STATUS__STATUS_ONLINE, NULL), ONLINE_BUFFERED);
    assert_int_equal(change(o, "e1", 9, 21, CHAT__V1__STATUS__STATUS_ONLINE, NULL), ONLINE_BUFFERED);
    assert_int_equal(chunk(o, "e1", 6, 0, 1, 1, 3, NULL), ONLINE_AGAIN);
    assert_false(online_in_step(o));
    assert_false(online_asking(o));
    online_destroy(o);

    /* a later epoch among them: likewise */
    o = in_step();
    online_asked(o);
    assert_int_equal(change(o, "e2", 1, 20, CHAT__V1__STATUS__STATUS_ONLINE, NULL), ONLINE_BUFFERED);
    assert_int_equal(chunk(o, "e1", 6, 0, 1, 1, 3, &why), ONLINE_AGAIN);
    assert_string_equal(why, "epoch");
    assert_false(online_in_step(o));
    /* the next request starts with an empty buffer */
    online_asked(o);
    assert_int_equal(chunk(o, "e2", 1, 0, 1, 20, 21, NULL), ONLINE_IN_STEP);
    assert_listed(o, "20:online");
    online_destroy(o);

    /* too much meanwhile: the snapshot is given up */
    o = in_step();
    online_asked(o);
    enum online_verdict v = ONLINE_BUFFERED;
    uint64_t seq = 6;
    while (v == ONLINE_BUFFERED)
        v = change(o, "e1", seq++, 7, CHAT__V1__STATUS__STATUS_ONLINE, &why);
    assert_int_equal(v, ONLINE_AGAIN);
    assert_string_equal(why, "overflow");
    assert_true(seq > ONLINE_MAX_BUFFERED / 200);
    assert_false(online_asking(o));
    assert_false(online_in_step(o));
    assert_int_equal(chunk(o, "e1", seq, 0, 1, 1, 2, &why), ONLINE_AGAIN); /* its chunks are refused */
    online_destroy(o);
}

static void test_bad_chunks(void **state)
{
    (void)state;
    const char *why = NULL;
    struct online *o = online_create();
    assert_int_equal(chunk(o, "e1", 5, 0, 1, 1, 3, &why), ONLINE_AGAIN); /* none asked for */
    assert_string_equal(why, "chunk");
    online_asked(o);
    assert_int_equal(chunk(o, "e1", 5, 1, 2, 1, 3, &why), ONLINE_AGAIN); /* not chunk 0 first */
    assert_string_equal(why, "chunk");
    assert_false(online_asking(o));
    online_asked(o);
    assert_int_equal(chunk(o, "e1", 5, 0, 0, 1, 3, &why), ONLINE_AGAIN); /* 0 chunks */
    online_asked(o);
    assert_int_equal(chunk(o, "e1", 5, 0, 3, 1, 3, NULL), ONLINE_MORE);
    assert_int_equal(chunk(o, "e1", 5, 0, 3, 1, 3, &why), ONLINE_AGAIN); /* chunk 0 twice */
    online_asked(o);
    assert_int_equal(chunk(o, "e1", 5, 0, 3, 1, 3, NULL), ONLINE_MORE);
    assert_int_equal(chunk(o, "e1", 5, 2, 3, 1, 3, &why), ONLINE_AGAIN); /* a chunk missing */
    online_asked(o);
    assert_int_equal(chunk(o, "e1", 5, 0, 2, 1, 3, NULL), ONLINE_MORE);
    assert_int_equal(chunk(o, "e2", 5, 1, 2, 1, 3, &why), ONLINE_AGAIN); /* another epoch */
    online_asked(o);
    assert_int_equal(chunk(o, "e1", 5, 0, 2, 1, 3, NULL), ONLINE_MORE);
    assert_int_equal(chunk(o, "e1", 6, 1, 2, 1, 3, &why), ONLINE_AGAIN); /* another seq */
    online_asked(o);
    assert_int_equal(chunk(o, "e1", 5, 0, 2, 1, 3, NULL), ONLINE_MORE);
    assert_int_equal(chunk(o, "e1", 5, 1, 3, 1, 3, &why), ONLINE_AGAIN); /* another count */
    assert_false(online_in_step(o));
    assert_int_equal(change(o, "e1", 6, 1, CHAT__V1__STATUS__STATUS_ONLINE, NULL), ONLINE_SKIPPED);
    /* and a whole one after all that */
    online_asked(o);
    assert_int_equal(chunk(o, "e1", 5, 0, 1, 1, 3, NULL), ONLINE_IN_STEP);
    assert_listed(o, "1:online 2:online");
    online_destroy(o);
}

static void test_lost(void **state)
{
    (void)state;
    struct online *o = in_step();
    online_lost(o); /* NATS reconnected */
    assert_false(online_in_step(o));
    assert_int_equal(change(o, "e1", 6, 4, CHAT__V1__STATUS__STATUS_ONLINE, NULL), ONLINE_SKIPPED);
    online_asked(o);
    assert_int_equal(change(o, "e1", 7, 4, CHAT__V1__STATUS__STATUS_ONLINE, NULL), ONLINE_BUFFERED);
    online_lost(o); /* the snapshot on its way is given up: its chunks are refused */
    assert_false(online_asking(o));
    assert_int_equal(chunk(o, "e1", 6, 0, 1, 1, 3, NULL), ONLINE_AGAIN);
    online_destroy(o);
}

/* The entries presence sends that clients never get, or that cannot be
 * written, and the JSON of the rest: the same as presence's own list. */
static void test_entries(void **state)
{
    (void)state;
    struct online *o = online_create();
    enum { N = 9 };
    struct info is[N];
    Chat__V1__PresenceInfo *ptrs[N];
    for (int i = 0; i < N; i++) {
        info_init(&is[i], i + 1, CHAT__V1__STATUS__STATUS_ONLINE, T0 + 123);
        ptrs[i] = &is[i].pb;
    }
    snprintf(is[1].name, sizeof is[1].name, "quote \" backslash \\ tab\t héllo 😀");
    is[2].pb.status = CHAT__V1__STATUS__STATUS_AWAY;
    is[3].pb.last_seen_ms = 0;                          /* never seen: not shown */
    is[4].pb.status = CHAT__V1__STATUS__STATUS_OFFLINE; /* not online */
    snprintf(is[5].name, sizeof is[5].name, "bad \xc3\x28 utf-8");
    memset(is[6].name, 'n', 129); /* over AUTH_MAX_USERNAME */
    is[6].name[129] = '\0';
    snprintf(is[7].id, sizeof is[7].id, "id\"quote");
    memset(is[8].name, 'm', 128); /* exactly AUTH_MAX_USERNAME: kept */
    is[8].name[128] = '\0';
    Chat__V1__PresenceSnapshot s = CHAT__V1__PRESENCE_SNAPSHOT__INIT;
    s.epoch = "e1";
    s.chunks = 1;
    s.n_users = N;
    s.users = ptrs;
    const char *why;
    online_asked(o);
    assert_int_equal(online_chunk(o, &s, &why), ONLINE_IN_STEP);
    assert_int_equal(online_left_out(o), 3); /* not UTF-8, too long, an id with a quote */
    assert_int_equal(online_count(o), 4);
    /* what presence's own list would show of the same users, as jansson builds it */
    Chat__V1__PresenceInfo *shown[N];
    size_t nshown = 0;
    for (int i = 0; i < N; i++)
        if (i == 0 || i == 1 || i == 2 || i == 8)
            shown[nshown++] = ptrs[i];
    Chat__V1__PresenceList pl = CHAT__V1__PRESENCE_LIST__INIT;
    pl.n_users = nshown;
    pl.users = shown;
    json_t *want = chat_json_presence_list(&pl);
    json_t *got = written(o);
    assert_int_equal(json_array_size(got), json_array_size(want));
    for (size_t i = 0; i < json_array_size(want); i++) { /* the same objects, in any order */
        int found = 0;
        for (size_t j = 0; j < json_array_size(got); j++)
            found += json_equal(json_array_get(want, i), json_array_get(got, j));
        if (found != 1)
            fail_msg("want %s once", json_dumps(json_array_get(want, i), JSON_COMPACT));
    }
    json_decref(want);
    json_decref(got);
    /* and byte for byte what chat_wire_presence_list writes (here in the same order) */
    struct buf a, b;
    buf_init(&a);
    buf_init(&b);
    online_write(o, &a, "presence:update");
    assert_int_equal(chat_wire_presence_list(&b, "presence:update", &pl), 0);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    buf_cleanup(&a);
    buf_cleanup(&b);
    /* a change that makes a listed user not writable takes the user out */
    assert_int_equal(change(o, "e1", 1, 1, CHAT__V1__STATUS__STATUS_ONLINE, NULL), ONLINE_APPLIED);
    struct info bad;
    info_init(&bad, 1, CHAT__V1__STATUS__STATUS_ONLINE, T0);
    snprintf(bad.name, sizeof bad.name, "\xff");
    Chat__V1__PresenceChange pc = CHAT__V1__PRESENCE_CHANGE__INIT;
    pc.info = &bad.pb;
    pc.seq = 2;
    pc.epoch = "e1";
    assert_int_equal(online_change(o, &pc, &why), ONLINE_APPLIED);
    assert_int_equal(online_count(o), 3);
    assert_int_equal(online_left_out(o), 4);
    /* a change without info still takes its seq */
    pc.info = NULL;
    pc.seq = 3;
    assert_int_equal(online_change(o, &pc, &why), ONLINE_APPLIED);
    assert_int_equal(online_seq(o), 3);
    online_destroy(o);
}

/* 100,000 users in chunks of about 4,600, as presence cuts them, then 20,000
 * changes (half of them removals: every removal moves an entry and shifts the
 * index) against a model; the copy must list exactly the model's users. */
/* online_write_only: the entries of the ids given that are online, in the
 * ids' order, each as online_write writes it; the others (offline, unknown,
 * malformed) left out. online_get finds one entry. */
static void test_only(void **state)
{
    (void)state;
    struct online *o = online_create();
    online_asked(o);
    assert_int_equal(chunk(o, "e1", 5, 0, 1, 1, 6, NULL), ONLINE_IN_STEP); /* users 1..5 */
    assert_int_equal(change(o, "e1", 6, 3, CHAT__V1__STATUS__STATUS_OFFLINE, NULL), ONLINE_APPLIED);
    char a[37], b[37], c[37], d[37];
    uid(a, 4);
    uid(b, 3); /* offline now */
    uid(c, 2);
    uid(d, 99); /* never seen */
    const char *ids[] = {a, b, "not-an-id", "", d, c};
    struct buf w;
    buf_init(&w);
    online_write_only(o, &w, "presence:update", ids, 6);
    json_error_t err;
    assert_int_equal(w.data[0], '2');
    json_t *packet = json_loadb(w.data + 1, w.len - 1, 0, &err);
    assert_non_null(packet);
    json_t *list = json_array_get(packet, 1);
    assert_int_equal(json_array_size(list), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "userId")), a);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 1), "userId")), c);
    /* each entry is the one the whole list holds */
    json_t *all = written(o);
    for (size_t i = 0; i < json_array_size(all); i++) {
        json_t *e = json_array_get(all, i);
        if (strcmp(json_string_value(json_object_get(e, "userId")), c) == 0)
            assert_true(json_equal(e, json_array_get(list, 1)));
    }
    json_decref(all);
    json_decref(packet);
    size_t len = 0;
    const char *got = online_get(o, a, &len);
    assert_non_null(got);
    assert_true(len > 0 && got[0] == '{' && got[len - 1] == '}');
    assert_null(online_get(o, b, &len));
    assert_null(online_get(o, d, &len));
    assert_null(online_get(o, "", &len));
    /* no ids: an empty list */
    buf_cleanup(&w);
    buf_init(&w);
    online_write_only(o, &w, "presence:update", NULL, 0);
    assert_int_equal((int)w.len, (int)strlen("2[\"presence:update\",[]]"));
    assert_memory_equal(w.data, "2[\"presence:update\",[]]", w.len);
    buf_cleanup(&w);
    online_destroy(o);
}

static void test_many(void **state)
{
    (void)state;
    enum { N = 100000, PER = 4600, CHANGES = 20000 };
    struct online *o = online_create();
    signed char *model = calloc(2 * N, 1); /* 0 absent, 1 online, 2 away */
    uint32_t chunks = (N + PER - 1) / PER;
    online_asked(o);
    for (uint32_t k = 0; k < chunks; k++) {
        int from = (int)k * PER, to = from + PER > N ? N : from + PER;
        assert_int_equal(chunk(o, "big", 1000, k, chunks, from, to, NULL),
                         k + 1 < chunks ? ONLINE_MORE : ONLINE_IN_STEP);
    }
    for (int u = 0; u < N; u++)
        model[u] = 1;
    assert_int_equal(online_count(o), N);
    srand(42);
    uint64_t seq = 1000;
    for (int i = 0; i < CHANGES; i++) {
        int u = rand() % (2 * N);
        int r = rand() % 4;
        Chat__V1__Status st = r < 2    ? CHAT__V1__STATUS__STATUS_OFFLINE
                              : r == 2 ? CHAT__V1__STATUS__STATUS_ONLINE
                                       : CHAT__V1__STATUS__STATUS_AWAY;
        assert_int_equal(change(o, "big", ++seq, u, st, NULL), ONLINE_APPLIED);
        model[u] = st == CHAT__V1__STATUS__STATUS_OFFLINE ? 0 : st == CHAT__V1__STATUS__STATUS_ONLINE ? 1 : 2;
    }
    size_t want = 0;
    for (int u = 0; u < 2 * N; u++)
        want += model[u] != 0;
    assert_int_equal(online_count(o), want);
    json_t *list = written(o);
    assert_int_equal(json_array_size(list), want);
    signed char *seen = calloc(2 * N, 1);
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *e = json_array_get(list, i);
        int u = atoi(json_string_value(json_object_get(e, "userId")) + 24);
        const char *st = json_string_value(json_object_get(e, "status"));
        assert_true(u >= 0 && u < 2 * N);
        assert_int_equal(seen[u], 0); /* listed once */
        seen[u] = 1;
        assert_int_equal(model[u], strcmp(st, "online") == 0 ? 1 : 2);
    }
    json_decref(list);
    /* every user the model has: a replace of each finds its entry (the index is whole) */
    size_t before = online_count(o);
    for (int u = 0; u < 2 * N; u++)
        if (model[u])
            assert_int_equal(change(o, "big", ++seq, u, CHAT__V1__STATUS__STATUS_AWAY, NULL), ONLINE_APPLIED);
    assert_int_equal(online_count(o), before);
    free(seen);
    free(model);
    online_destroy(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot), cmocka_unit_test(test_changes),   cmocka_unit_test(test_gap),
        cmocka_unit_test(test_epoch),    cmocka_unit_test(test_buffering), cmocka_unit_test(test_bad_chunks),
        cmocka_unit_test(test_lost),     cmocka_unit_test(test_entries),   cmocka_unit_test(test_many),
        cmocka_unit_test(test_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
