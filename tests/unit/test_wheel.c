/* test_wheel: the edge's timing wheel on a simulated clock. Every timer must
 * fire never later than its due time and never earlier than a tick before it
 * (a WHEEL_EARLY one: than its slack before it), never twice, never once
 * cancelled; timers beyond a revolution wait for theirs; close periodic timers
 * share wakeups; callbacks may schedule and cancel. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "wheel.h"

struct item {
    struct wheel_timer t;
    int64_t want_us; /* due time */
    int64_t fired_us;
    int fired;
    struct item *victim; /* cancelled by this one's callback */
    int64_t again_us;    /* > 0: reschedules itself this far ahead */
    int how;             /* WHEEL_EXACT or WHEEL_EARLY */
};

static struct wheel w; /* 32 KiB: not on the stack */
static int64_t now_us;
static size_t wakeups;

static void on_fire(struct wheel_timer *t)
{
    struct item *it = (struct item *)t;
    it->fired++;
    it->fired_us = now_us;
    if (it->victim)
        wheel_cancel(&w, &it->victim->t);
    if (it->again_us > 0) { /* a ping, then its deadline: exact */
        it->want_us = now_us + it->again_us;
        it->again_us = 0;
        it->how = WHEEL_EXACT;
        wheel_schedule(&w, &it->t, on_fire, now_us, it->want_us - now_us, it->how);
    }
}

static void at(struct item *it, int64_t delay_us)
{
    it->want_us = now_us + delay_us;
    wheel_schedule(&w, &it->t, on_fire, now_us, delay_us, it->how);
}

/* Runs the clock the way wheel_lws does, until the wheel is empty or until. */
static void run_until(int64_t until_us)
{
    for (;;) {
        int64_t n = wheel_next_us(&w, now_us);
        if (n < 0 || now_us + n > until_us)
            break;
        now_us += n;
        wakeups++;
        wheel_advance(&w, now_us);
    }
    now_us = until_us;
}

/* fired once, never late, not earlier than a tick (or its slack) before */
static void assert_on_time(const struct item *it, int64_t delay_us)
{
    assert_int_equal(it->fired, 1);
    /* A due time inside the tick being served: the next tick, less than a tick late. */
    int64_t next_tick = (it->want_us - delay_us) / WHEEL_TICK_US * WHEEL_TICK_US + WHEEL_TICK_US;
    assert_true(it->fired_us <= (it->want_us > next_tick ? it->want_us : next_tick));
    int64_t slack = 0;
    if (it->how == WHEEL_EARLY) {
        slack = delay_us / WHEEL_TICK_US / 16;
        if (slack > WHEEL_MAX_SLACK)
            slack = WHEEL_MAX_SLACK;
    }
    assert_true(it->fired_us > it->want_us - (slack + 1) * WHEEL_TICK_US);
}

static int setup(void **state)
{
    (void)state;
    now_us = 1000000007; /* not on a tick */
    wakeups = 0;
    wheel_init(&w, now_us);
    return 0;
}

static void test_delays(void **state)
{
    (void)state;
    static const int64_t delays[] = {0,        1,        4999,     5000,     5001,
                                     200000,   300000,   2000000,  20479999, 20480000,
                                     20485000, 25000000, 45000000, 61000000, 3600000000LL};
    enum { N = sizeof delays / sizeof delays[0] };
    struct item items[2 * N];
    memset(items, 0, sizeof items);
    for (int i = 0; i < 2 * N; i++) {
        items[i].how = i < N ? WHEEL_EXACT : WHEEL_EARLY;
        at(&items[i], delays[i % N]);
    }
    assert_int_equal(w.count, 2 * N);
    run_until(now_us + 4000000000LL);
    for (int i = 0; i < 2 * N; i++)
        assert_on_time(&items[i], delays[i % N]);
    assert_int_equal(w.count, 0);
    assert_int_equal(wheel_next_us(&w, now_us), -1);
}

static void test_cancel(void **state)
{
    (void)state;
    struct item a = {0}, b = {0}, c = {0}, d = {0};
    at(&a, 100000);
    at(&b, 100000);
    at(&c, 100000);
    at(&d, 30000000);
    a.victim = &b; /* whichever of a and b fires first cancels the other */
    b.victim = &a;
    wheel_cancel(&w, &c.t);
    wheel_cancel(&w, &c.t); /* twice: nothing */
    wheel_cancel(&w, &d.t);
    run_until(now_us + 60000000);
    assert_int_equal(a.fired + b.fired, 1);
    assert_int_equal(c.fired, 0);
    assert_int_equal(d.fired, 0);
    assert_int_equal(w.count, 0);
}

static void test_reschedule(void **state)
{
    (void)state;
    struct item a = {0}, b = {0};
    at(&a, 300000);
    a.again_us = 200000; /* a ping, then its pong deadline */
    at(&b, 50000);
    at(&b, 700000); /* moved: fires once, at the new time */
    run_until(now_us + 2000000);
    assert_int_equal(a.fired, 2);
    a.fired = 1; /* the second firing must be on time */
    assert_on_time(&a, 200000);
    assert_on_time(&b, 700000);
}

/* 20,000 sessions pinging every 25 s, connected over 2 s: the wheel wakes
 * about ten times a second, not once per timer or per tick. */
static void test_coalescing(void **state)
{
    (void)state;
    enum { N = 20000 };
    struct item *items = calloc(N, sizeof *items);
    for (int i = 0; i < N; i++) {
        now_us += 100; /* 2 s of connects */
        items[i].how = WHEEL_EARLY;
        at(&items[i], 25000000);
    }
    wakeups = 0;
    run_until(now_us + 30000000);
    for (int i = 0; i < N; i++)
        assert_on_time(&items[i], 25000000);
    assert_true(wakeups <= 30);
    free(items);
}

/* The clock jumps several revolutions (a stalled loop): everything due fires,
 * nothing that is not. */
static void test_stall(void **state)
{
    (void)state;
    struct item a = {0}, b = {0};
    at(&a, 1000000);
    at(&b, 100000000);
    now_us += 3 * (int64_t)WHEEL_SLOTS * WHEEL_TICK_US;
    assert_int_equal(wheel_advance(&w, now_us), 1);
    assert_int_equal(a.fired, 1);
    assert_int_equal(b.fired, 0);
    run_until(now_us + 200000000);
    assert_int_equal(b.fired, 1);
    assert_on_time(&b, 100000000);
}

/* The official suites' heartbeat: a ping at 300 ms, its pong deadline 200 ms
 * later, polled for at exactly 500 ms. Whatever the phase of the clock
 * against the ticks, the session must be gone by then. */
static void test_deadline_never_late(void **state)
{
    (void)state;
    for (int64_t phase = 0; phase < 2 * WHEEL_TICK_US; phase += 250) {
        setup(NULL);
        now_us += phase;
        int64_t start = now_us;
        struct item ping = {0};
        ping.how = WHEEL_EARLY;
        ping.again_us = 200000; /* then the exact pong deadline */
        at(&ping, 300000);
        run_until(start + 500000);
        assert_int_equal(ping.fired, 2);
        assert_true(ping.fired_us <= start + 500000);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_delays, setup),
        cmocka_unit_test_setup(test_cancel, setup),
        cmocka_unit_test_setup(test_reschedule, setup),
        cmocka_unit_test_setup(test_coalescing, setup),
        cmocka_unit_test_setup(test_stall, setup),
        cmocka_unit_test_setup(test_deadline_never_late, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
