/* test_seen: messaging's bounded set of known user ids: what is added is
 * found, nothing else is; the set never holds more than two generations; ids
 * in use survive generation changes, ids unused for a generation go. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "seen.h"

static void test_bounded_and_recent(void **state)
{
    (void)state;
    struct seen *s = seen_create(100);
    char id[32];
    assert_int_equal(seen_has(s, "hot"), 0);
    seen_add(s, "hot");
    for (int i = 0; i < 10000; i++) {
        snprintf(id, sizeof id, "user-%d", i);
        seen_add(s, id);
        assert_int_equal(seen_has(s, id), 1);
        if (i % 50 == 0) /* in use: stays */
            assert_int_equal(seen_has(s, "hot"), 1);
        assert_true(seen_count(s) <= 200);
    }
    assert_int_equal(seen_has(s, "hot"), 1);
    assert_int_equal(seen_has(s, "user-0"), 0); /* long unused: gone */
    assert_int_equal(seen_has(s, "user-9999"), 1);
    assert_int_equal(seen_has(s, "never"), 0);
    seen_add(s, "user-9999"); /* twice: one entry */
    seen_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounded_and_recent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
