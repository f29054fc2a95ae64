/* test_histq: messaging's fair queue of history queries on a simulated clock.
 * Users are served round-robin (a backlog delays another user by one query per
 * turn, not by itself), one user's queries stay in order, and each bound
 * refuses at once: queued in all (FULL), queued + running per user (BUSY,
 * until done), per-second per user (RATE, with a retry time that is right).
 * Idle users are forgotten, so the table stays small. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "histq.h"

static int items[1000];

static void push_ok(struct histq *q, const char *user, int i, long long now)
{
    long long retry = -1;
    assert_int_equal(histq_push(q, user, &items[i], now, &retry), HISTQ_OK);
    assert_int_equal(retry, 0);
}

/* Pops one query, checks its user and item, marks it done. */
static void pop_is(struct histq *q, const char *user, int i, long long now)
{
    const char *u = NULL;
    int *it = histq_pop(q, &u);
    assert_non_null(it);
    assert_string_equal(u, user);
    assert_int_equal(it - items, i);
    histq_done(q, u, now);
}

static void test_round_robin(void **state)
{
    (void)state;
    struct histq_limits lim = {100, 0, 0};
    struct histq *q = histq_create(&lim);
    for (int i = 0; i < 10; i++)
        push_ok(q, "flood", i, 0);
    push_ok(q, "alice", 10, 0);
    push_ok(q, "bob", 11, 0);
    push_ok(q, "alice", 12, 0);
    assert_int_equal(histq_queued(q), 13);
    /* alice and bob wait one flood query each turn, not ten. */
    pop_is(q, "flood", 0, 0);
    pop_is(q, "alice", 10, 0);
    pop_is(q, "bob", 11, 0);
    pop_is(q, "flood", 1, 0);
    pop_is(q, "alice", 12, 0);
    for (int i = 2; i < 10; i++)
        pop_is(q, "flood", i, 0);
    const char *u = NULL;
    assert_null(histq_pop(q, &u));
    assert_int_equal(histq_queued(q), 0);
    assert_int_equal(histq_users(q), 0); /* no limits: nothing to remember */
    histq_destroy(q, NULL);
}

static void test_newcomer_waits_one_turn(void **state)
{
    (void)state;
    struct histq_limits lim = {100, 0, 0};
    struct histq *q = histq_create(&lim);
    for (int i = 0; i < 5; i++)
        push_ok(q, "flood", i, 0);
    pop_is(q, "flood", 0, 0);
    push_ok(q, "late", 50, 0); /* arrives while the flood has 4 queued */
    pop_is(q, "flood", 1, 0);
    pop_is(q, "late", 50, 0);
    histq_destroy(q, NULL);
}

static void test_full(void **state)
{
    (void)state;
    struct histq_limits lim = {3, 0, 0};
    struct histq *q = histq_create(&lim);
    char name[16];
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "u%d", i);
        push_ok(q, name, i, 0);
    }
    long long retry = -1;
    assert_int_equal(histq_push(q, "u9", &items[9], 0, &retry), HISTQ_FULL);
    assert_int_equal(retry, 0);
    pop_is(q, "u0", 0, 0); /* a slot frees when a query leaves the queue */
    push_ok(q, "u9", 9, 0);
    histq_destroy(q, NULL);
}

static void test_per_user_counts_running(void **state)
{
    (void)state;
    struct histq_limits lim = {100, 2, 0};
    struct histq *q = histq_create(&lim);
    long long retry;
    push_ok(q, "a", 0, 0);
    push_ok(q, "a", 1, 0);
    assert_int_equal(histq_push(q, "a", &items[2], 0, &retry), HISTQ_USER_BUSY);
    push_ok(q, "b", 3, 0); /* another user is not affected */
    const char *u;
    assert_ptr_equal(histq_pop(q, &u), &items[0]);
    /* popped but still running: still counts */
    assert_int_equal(histq_push(q, "a", &items[2], 0, &retry), HISTQ_USER_BUSY);
    histq_done(q, u, 0);
    push_ok(q, "a", 2, 0);
    histq_destroy(q, NULL);
}

static void test_rate(void **state)
{
    (void)state;
    struct histq_limits lim = {1000, 0, 10}; /* 10/s, burst 20 */
    struct histq *q = histq_create(&lim);
    long long now = 1000000, retry = 0;
    for (int i = 0; i < 20; i++)
        push_ok(q, "a", i, now);
    assert_int_equal(histq_push(q, "a", &items[20], now, &retry), HISTQ_USER_RATE);
    assert_true(retry > 0 && retry <= 101);
    assert_int_equal(histq_push(q, "a", &items[20], now + retry - 10, &retry), HISTQ_USER_RATE);
    push_ok(q, "b", 21, now); /* per user */
    now += 150;               /* from now + retry - 10: half a token more than one */
    push_ok(q, "a", 22, now);
    assert_int_equal(histq_push(q, "a", &items[23], now, &retry), HISTQ_USER_RATE);
    /* refused queries cost nothing: after 2 s the bucket is full again */
    now += 2000;
    for (int i = 0; i < 20; i++)
        push_ok(q, "a", 100 + i, now);
    assert_int_equal(histq_push(q, "a", &items[200], now, &retry), HISTQ_USER_RATE);
    histq_destroy(q, NULL);
}

static int freed;
static void count_free(void *item)
{
    (void)item;
    freed++;
}

static void test_idle_users_forgotten(void **state)
{
    (void)state;
    struct histq_limits lim = {100000, 4, 10};
    struct histq *q = histq_create(&lim);
    char name[32];
    long long now = 0;
    /* 10,000 users, one query each, each served at once: the table is swept
     * as it grows, of users whose bucket is full again (after 100 ms). */
    for (int i = 0; i < 10000; i++, now += 1) {
        snprintf(name, sizeof name, "user-%d", i);
        push_ok(q, name, 0, now);
        const char *u;
        assert_non_null(histq_pop(q, &u));
        histq_done(q, u, now);
    }
    assert_true(histq_users(q) <= 2048);
    /* destroy frees what is still queued */
    push_ok(q, "x", 1, now);
    push_ok(q, "y", 2, now);
    freed = 0;
    histq_destroy(q, count_free);
    assert_int_equal(freed, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_robin), cmocka_unit_test(test_newcomer_waits_one_turn),
        cmocka_unit_test(test_full),        cmocka_unit_test(test_per_user_counts_running),
        cmocka_unit_test(test_rate),        cmocka_unit_test(test_idle_users_forgotten),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
