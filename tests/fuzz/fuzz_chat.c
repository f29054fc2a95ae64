/* fuzz_chat: libFuzzer target for the chat events' payload checks
 * (chat_valid.c). The input is parsed as JSON the way sio_decode parses it
 * and given to every chat_valid_* function with small limits; a refusal must
 * carry a known code and a message, and accepted fields must keep the
 * promises of chat_valid.h. A failed check aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chat/chat_json.h"
#include "chat/chat_valid.h"
#include "msgtype.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_BYTES 16
#define MAX_GHOST 8
#define MAX_IDS 4

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_chat: check failed: %s (line %d)\n", #cond, __LINE__);                     \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

/* A normalised uuid: 36 bytes, lowercase hex and dashes. */
static void check_uuid(const char *s)
{
    CHECK(strlen(s) == IDS_UUID_LEN);
    for (size_t i = 0; i < IDS_UUID_LEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23)
            CHECK(c == '-');
        else
            CHECK((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
    }
}

/* rc -1 needs a known code and a message; the codes are the only two the
 * validators use. */
static int checked(int rc, const char *code, const char *msg)
{
    CHECK(rc == 0 || rc == -1);
    if (rc < 0) {
        CHECK(code && msg && msg[0]);
        CHECK(strcmp(code, "bad_request") == 0 || strcmp(code, "too_large") == 0);
    }
    return rc;
}

static void validate(const json_t *arg)
{
    const char *code, *msg;

    struct chat_valid_recipient r;
    code = msg = NULL;
    if (checked(chat_valid_recipient(&r, arg, &code, &msg), code, msg) == 0)
        check_uuid(r.to);

    struct chat_valid_ghost g;
    code = msg = NULL;
    if (checked(chat_valid_ghost(&g, arg, MAX_GHOST, &code, &msg), code, msg) == 0) {
        check_uuid(g.to);
        CHECK(g.text && strlen(g.text) <= MAX_GHOST);
    }

    struct chat_valid_listening l;
    code = msg = NULL;
    if (checked(chat_valid_listening(&l, arg, &code, &msg), code, msg) == 0) {
        check_uuid(l.message_id);
        check_uuid(l.to);
        CHECK(l.is_playing == 0 || l.is_playing == 1);
    }

    struct chat_valid_send s;
    code = msg = NULL;
    if (checked(chat_valid_send(&s, arg, MAX_BYTES, &code, &msg), code, msg) == 0) {
        check_uuid(s.to);
        CHECK(s.type != CHAT__V1__MESSAGE_TYPE__MESSAGE_TYPE_UNSPECIFIED);
        CHECK(s.content && s.content_len >= 1 && s.content_len <= MAX_BYTES);
        CHECK(strlen(s.content) == s.content_len); /* no U+0000: it goes on as a C string */
        CHECK(s.client_message_id && strlen(s.client_message_id) <= CHAT_VALID_CLIENT_ID_MAX);
        /* the type is exactly one of the names, not a prefix of the value */
        const json_t *type = json_object_get(arg, "type");
        CHECK(json_string_length(type) == strlen(msgtype_name(s.type)));
    }

    struct chat_valid_read rd;
    code = msg = NULL;
    if (checked(chat_valid_read(&rd, arg, &code, &msg), code, msg) == 0) {
        check_uuid(rd.message_id);
        if (rd.sender_id[0])
            check_uuid(rd.sender_id);
    }

    struct chat_valid_history h;
    code = msg = NULL;
    if (checked(chat_valid_history(&h, arg, &code, &msg), code, msg) == 0) {
        check_uuid(h.with);
        if (h.before[0])
            check_uuid(h.before);
        CHECK(h.limit >= 1 && h.limit <= CHAT_VALID_HISTORY_MAX);
    }

    struct chat_valid_conversations cv;
    code = msg = NULL;
    if (checked(chat_valid_conversations(&cv, arg, &code, &msg), code, msg) == 0) {
        CHECK(cv.limit >= 1 && cv.limit <= CHAT_VALID_CONVERSATIONS_MAX);
        CHECK(cv.before_us >= 0 && cv.before_us <= 9999999999999999LL);
        if (cv.before_with[0]) {
            check_uuid(cv.before_with);
            /* the cursor the client gave is the one the edge writes back */
            const json_t *b = json_object_get(arg, "before");
            char again[64];
            snprintf(again, sizeof again, "%lld.%s", cv.before_us, cv.before_with);
            CHECK(json_string_length(b) == strlen(again) && strcasecmp(json_string_value(b), again) == 0);
        } else {
            CHECK(cv.before_us == 0);
        }
    }

    struct chat_valid_conversation_read cr;
    code = msg = NULL;
    if (checked(chat_valid_conversation_read(&cr, arg, &code, &msg), code, msg) == 0) {
        check_uuid(cr.with);
        check_uuid(cr.up_to);
    }

    struct chat_valid_status st;
    code = msg = NULL;
    if (checked(chat_valid_status(&st, arg, &code, &msg), code, msg) == 0) {
        CHECK(st.status == CHAT__V1__STATUS__STATUS_ONLINE || st.status == CHAT__V1__STATUS__STATUS_AWAY ||
              st.status == CHAT__V1__STATUS__STATUS_OFFLINE);
        const json_t *status = json_object_get(arg, "status");
        CHECK(json_string_length(status) == strlen(chat_json_status_name(st.status)));
    }

    struct chat_valid_ids ids;
    code = msg = NULL;
    if (checked(chat_valid_ids(&ids, arg, MAX_IDS, &code, &msg), code, msg) == 0) {
        CHECK(ids.n <= MAX_IDS && ids.n == json_array_size(arg));
        for (size_t i = 0; i < ids.n; i++) {
            CHECK(ids.ptrs[i] == ids.ids[i]);
            check_uuid(ids.ptrs[i]);
        }
    } else {
        CHECK(ids.n == 0 && !ids.ids && !ids.ptrs);
    }
    chat_valid_ids_cleanup(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The flags sio_decode uses (strings may hold U+0000), plus DECODE_ANY:
     * a handler may get any value as its argument (on_packet checks
     * object/array first, the validators must not rely on it). */
    json_error_t e;
    json_t *v =
        json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &e);
    if (!v)
        return 0;
    validate(v);
    /* The same value as an event's argument inside [name, arg], too. */
    if (json_is_array(v))
        for (size_t i = 0; i < json_array_size(v) && i < 4; i++)
            validate(json_array_get(v, i));
    json_decref(v);
    return 0;
}
