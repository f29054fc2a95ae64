/* test_quota: messaging's send budget per sender on a simulated clock: the
 * minute bucket (burst per_min, then one send per 60/per_min s, with a retry
 * time that is right), the UTC day count (loaded, refused until midnight with
 * the time to midnight, reset by the next day), both together, refunds,
 * independence of senders, limits off, reset after a change of owner, and
 * idle senders forgotten. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "quota.h"

#define DAY 86400000LL
#define T0 (20000 * DAY + 10 * 3600000LL) /* 10:00 UTC on some day */

static void test_minute_bucket(void **state)
{
    (void)state;
    struct quota_limits lim = {6, 0}; /* 6 per minute: one every 10 s */
    struct quota *q = quota_create(&lim);
    long long now = T0;
    assert_int_equal(quota_needs_load(q, "a"), 0); /* no day limit: nothing to load */
    for (int i = 0; i < 6; i++)
        assert_int_equal(quota_take(q, "a", now), 0);
    long long wait = quota_take(q, "a", now);
    assert_true(wait > 9990 && wait <= 10001);
    assert_true(quota_take(q, "a", now + wait - 20) > 0); /* not before the hint */
    assert_int_equal(quota_take(q, "a", now + wait), 0);  /* at the hint */
    assert_true(quota_take(q, "a", now + wait) > 0);
    assert_int_equal(quota_take(q, "b", now), 0); /* per sender */
    /* a refund gives the send back */
    quota_refund(q, "a", now + wait);
    assert_int_equal(quota_take(q, "a", now + wait), 0);
    /* a minute later the bucket is full again, not fuller */
    now += 10 * 60000;
    for (int i = 0; i < 6; i++)
        assert_int_equal(quota_take(q, "a", now), 0);
    assert_true(quota_take(q, "a", now) > 0);
    quota_destroy(q);
}

static void test_day_count(void **state)
{
    (void)state;
    struct quota_limits lim = {0, 100};
    struct quota *q = quota_create(&lim);
    long long now = T0;
    assert_int_equal(quota_needs_load(q, "a"), 1);
    quota_load(q, "a", 97, now); /* 97 stored today, before this owner */
    assert_int_equal(quota_needs_load(q, "a"), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(quota_take(q, "a", now), 0);
    long long wait = quota_take(q, "a", now);
    assert_int_equal(wait, 14 * 3600000LL); /* until midnight UTC */
    quota_refund(q, "a", now);
    assert_int_equal(quota_take(q, "a", now), 0);
    assert_true(quota_take(q, "a", now + wait - 1) > 0);
    assert_int_equal(quota_take(q, "a", now + wait), 0); /* the next day */
    char day[11];
    quota_day(day, now);
    assert_string_equal(day, "2024-10-04");
    quota_day(day, now + wait);
    assert_string_equal(day, "2024-10-05");
    quota_destroy(q);
}

static void test_both_and_off(void **state)
{
    (void)state;
    struct quota_limits both = {60, 3};
    struct quota *q = quota_create(&both);
    quota_load(q, "a", 0, T0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(quota_take(q, "a", T0), 0);
    assert_true(quota_take(q, "a", T0) > 3600000LL); /* the day decides, not the minute */
    quota_destroy(q);

    struct quota_limits off = {0, 0};
    q = quota_create(&off);
    for (int i = 0; i < 100000; i++)
        assert_int_equal(quota_take(q, "a", T0), 0);
    assert_int_equal(quota_needs_load(q, "a"), 0);
    assert_int_equal(quota_senders(q), 0);
    quota_destroy(q);
}

static void test_reset_and_sweep(void **state)
{
    (void)state;
    struct quota_limits lim = {10, 1000};
    struct quota *q = quota_create(&lim);
    quota_load(q, "a", 5, T0);
    quota_reset(q); /* a new owner: counts come from the database again */
    assert_int_equal(quota_needs_load(q, "a"), 1);
    assert_int_equal(quota_senders(q), 0);
    char id[32];
    long long now = T0;
    /* 20,000 senders over 200 s, one send each: those idle for a minute are
     * forgotten as the table grows. */
    for (int i = 0; i < 20000; i++, now += 10) {
        snprintf(id, sizeof id, "s%d", i);
        quota_load(q, id, 0, now);
        assert_int_equal(quota_take(q, id, now), 0);
    }
    assert_true(quota_senders(q) <= 2 * 6000 + 1024);
    assert_int_equal(quota_needs_load(q, "s0"), 1);
    assert_int_equal(quota_needs_load(q, "s19999"), 0);
    quota_destroy(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minute_bucket),
        cmocka_unit_test(test_day_count),
        cmocka_unit_test(test_both_and_off),
        cmocka_unit_test(test_reset_and_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
