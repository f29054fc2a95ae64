/* test_recovery: the pid and offset a client hands back (recovery.c): a pid
 * reads back as written, only with its key, only in its one spelling; an
 * offset is a plain decimal; a CONNECT payload asks for a recovery only with
 * a valid pid of the token's user. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "chat/recovery.h"

static const char user[] = "0190a0b0-0000-7000-8000-00000000a11c";

static void make(char pid[RECOVERY_PID_MAX], const uint8_t *key, uint64_t start)
{
    struct recovery_pid p = {.start = start};
    memcpy(p.user_id, user, sizeof user);
    memcpy(p.boot_id, "AbCdEfGh-_012345", 17);
    memcpy(p.sid, "sidsidsidsidsidsid-_", 21);
    assert_int_equal(recovery_pid_write(pid, &p, key), 0);
}

static void test_round_trip(void **state)
{
    (void)state;
    uint8_t key[RECOVERY_KEY_LEN], other[RECOVERY_KEY_LEN];
    recovery_key(key, "secret-a", 8);
    recovery_key(other, "secret-b", 8);
    char pid[RECOVERY_PID_MAX];
    make(pid, key, UINT64_MAX);
    assert_int_equal(strlen(pid), 103);
    struct recovery_pid p;
    assert_int_equal(recovery_pid_read(&p, pid, strlen(pid), key), 0);
    assert_string_equal(p.user_id, user);
    assert_string_equal(p.boot_id, "AbCdEfGh-_012345");
    assert_string_equal(p.sid, "sidsidsidsidsidsid-_");
    assert_true(p.start == UINT64_MAX);
    /* another deployment's key */
    assert_int_equal(recovery_pid_read(&p, pid, strlen(pid), other), -1);
    /* every single-character change is refused */
    for (size_t i = 0; i < strlen(pid); i++) {
        char bad[RECOVERY_PID_MAX];
        memcpy(bad, pid, sizeof bad);
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        assert_int_equal(recovery_pid_read(&p, bad, strlen(bad), key), -1);
    }
    /* shorter, longer, not base64url */
    assert_int_equal(recovery_pid_read(&p, pid, strlen(pid) - 1, key), -1);
    char longer[RECOVERY_PID_MAX + 1];
    snprintf(longer, sizeof longer, "%sA", pid);
    assert_int_equal(recovery_pid_read(&p, longer, strlen(longer), key), -1);
    char padded[RECOVERY_PID_MAX];
    memcpy(padded, pid, sizeof padded);
    padded[102] = '=';
    assert_int_equal(recovery_pid_read(&p, padded, strlen(padded), key), -1);
    /* an id that is not base64url is never written */
    struct recovery_pid q = {.start = 1};
    memcpy(q.user_id, user, sizeof user);
    memcpy(q.boot_id, "has a space here", 17);
    memcpy(q.sid, "sidsidsidsidsidsid-_", 21);
    assert_int_equal(recovery_pid_write(pid, &q, key), -1);
}

static void test_offsets(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(recovery_offset_read(&v, "0", 1), 0);
    assert_true(v == 0);
    assert_int_equal(recovery_offset_read(&v, "18446744073709551615", 20), 0);
    assert_true(v == UINT64_MAX);
    const char *bad[] = {"",   "01", "-1", "+1", "1.0", "18446744073709551616", "99999999999999999999",
                         "1 ", "x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(recovery_offset_read(&v, bad[i], strlen(bad[i])), -1);
    assert_int_equal(recovery_offset_read(&v,
                                          "12\0"
                                          "3",
                                          4),
                     -1); /* a NUL inside */
}

static void test_connect(void **state)
{
    (void)state;
    uint8_t key[RECOVERY_KEY_LEN];
    recovery_key(key, "secret-a", 8);
    char pid[RECOVERY_PID_MAX];
    make(pid, key, 100);
    struct recovery_pid p;
    uint64_t off = 0;
    json_t *a;

    a = json_pack("{s:s}", "token", "t");
    assert_int_equal(recovery_connect_read(a, user, key, &p, &off), RECOVERY_NONE);
    json_decref(a);
    assert_int_equal(recovery_connect_read(NULL, user, key, &p, &off), RECOVERY_NONE);
    a = json_pack("{s:n}", "pid");
    assert_int_equal(recovery_connect_read(a, user, key, &p, &off), RECOVERY_NONE);
    json_decref(a);

    a = json_pack("{s:s,s:s}", "pid", pid, "offset", "150");
    assert_int_equal(recovery_connect_read(a, user, key, &p, &off), RECOVERY_ASKED);
    assert_true(off == 150);
    assert_int_equal(recovery_connect_read(a, "0190a0b0-0000-7000-8000-00000000b0b0", key, &p, &off),
                     RECOVERY_INVALID); /* someone else's pid */
    json_decref(a);

    a = json_pack("{s:s}", "pid", pid); /* no offset: nothing came since the start */
    assert_int_equal(recovery_connect_read(a, user, key, &p, &off), RECOVERY_ASKED);
    assert_true(off == 100);
    json_decref(a);
    a = json_pack("{s:s,s:s}", "pid", pid, "offset", "7"); /* an offset of an older session */
    assert_int_equal(recovery_connect_read(a, user, key, &p, &off), RECOVERY_ASKED);
    assert_true(off == 100);
    json_decref(a);

    a = json_pack("{s:s,s:i}", "pid", pid, "offset", 150);
    assert_int_equal(recovery_connect_read(a, user, key, &p, &off), RECOVERY_INVALID);
    json_decref(a);
    a = json_pack("{s:s,s:s}", "pid", pid, "offset", "1e3");
    assert_int_equal(recovery_connect_read(a, user, key, &p, &off), RECOVERY_INVALID);
    json_decref(a);
    a = json_pack("{s:i}", "pid", 5);
    assert_int_equal(recovery_connect_read(a, user, key, &p, &off), RECOVERY_INVALID);
    json_decref(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_offsets),
        cmocka_unit_test(test_connect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
