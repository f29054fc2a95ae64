/* fuzz_recovery: libFuzzer target for what a client hands back to recover a
 * session (recovery.c): the CONNECT payload's pid and offset. Byte 0 picks
 * how the rest reaches it, with a fixed key and user:
 *   0  the whole input as the CONNECT payload (JSON, any shape);
 *   1  {"pid": <a valid pid with one byte of it changed>, "offset": <rest>}:
 *      a signed pid one edit away, and any offset text;
 *   2  the rest as a pid (recovery_pid_read);
 *   3  the rest as an offset (recovery_offset_read).
 * An accepted pid must be the user's and read back as it was written; an
 * offset must be the decimal it was. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/recovery.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_recovery: check failed: %s (line %d)\n", #cond, __LINE__);                 \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

static const char user[] = "0190a0b0-0000-7000-8000-00000000a11c";
static uint8_t key[RECOVERY_KEY_LEN];
static char good[RECOVERY_PID_MAX];

static void init(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    recovery_key(key, "fuzz-secret", 11);
    struct recovery_pid p = {.start = 1234};
    memcpy(p.user_id, user, sizeof user);
    memcpy(p.boot_id, "bootbootbootboot", 17);
    memcpy(p.sid, "sidsidsidsidsidsid-_", 21);
    CHECK(recovery_pid_write(good, &p, key) == 0);
}

static void check_ask(const json_t *auth)
{
    struct recovery_pid p;
    uint64_t offset = 0;
    enum recovery_ask a = recovery_connect_read(auth, user, key, &p, &offset);
    if (a == RECOVERY_ASKED) {
        CHECK(strcmp(p.user_id, user) == 0);
        CHECK(offset >= p.start);
        char again[RECOVERY_PID_MAX];
        CHECK(recovery_pid_write(again, &p, key) == 0);
        const json_t *pid = json_object_get(auth, "pid");
        CHECK(strcmp(again, json_string_value(pid)) == 0); /* one spelling per pid */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    if (size < 1)
        return 0;
    const char *rest = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 0: {
        json_t *auth = json_loadb(rest, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        check_ask(auth);
        json_decref(auth);
        break;
    }
    case 1: {
        char pid[RECOVERY_PID_MAX];
        memcpy(pid, good, sizeof pid);
        if (n >= 2) {
            pid[rest[0] % (strlen(good))] = rest[1];
            rest += 2;
            n -= 2;
        }
        json_t *auth = json_object();
        json_object_set_new(auth, "pid", json_stringn_nocheck(pid, strnlen(pid, sizeof pid)));
        json_object_set_new(auth, "offset", json_stringn_nocheck(rest, n));
        check_ask(auth);
        json_decref(auth);
        break;
    }
    case 2: {
        struct recovery_pid p;
        if (recovery_pid_read(&p, rest, n, key) == 0) {
            char again[RECOVERY_PID_MAX];
            CHECK(recovery_pid_write(again, &p, key) == 0);
            CHECK(strlen(again) == n && memcmp(again, rest, n) == 0);
        }
        break;
    }
    case 3: {
        uint64_t v;
        if (recovery_offset_read(&v, rest, n) == 0) {
            char back[24];
            snprintf(back, sizeof back, "%llu", (unsigned long long)v);
            CHECK(strlen(back) == n && memcmp(back, rest, n) == 0);
        }
        break;
    }
    }
    return 0;
}
