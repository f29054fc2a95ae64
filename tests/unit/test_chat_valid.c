/* test_chat_valid: the payload checks of every chat event
 * (the README's event table), table-driven: each case
 * is the event's argument as JSON and the exact chat:error code and message,
 * or none when the payload is valid. Small limits keep the edges visible. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "chat/chat_valid.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

#define MAX_BYTES 16 /* EDGE_MAX_MESSAGE_BYTES */
#define MAX_GHOST 8  /* EDGE_MAX_GHOST_TEXT */
#define MAX_IDS 3    /* EDGE_MAX_PRESENCE_QUERY */

#define U1 "0190a0b0-0000-7000-8000-00000000a11c"
#define U1_UPPER "0190A0B0-0000-7000-8000-00000000A11C"
#define U2 "0190a0b0-0000-7000-8000-000000000b0b"
#define C64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

#define BAD "bad_request"
#define BIG "too_large"
#define MISSING "a required id field is missing"
#define NOT_UUID "an id field is not a uuid"
#define GHOST_TEXT "text must be a string"
#define GHOST_BIG "text is longer than EDGE_MAX_GHOST_TEXT bytes"
#define PLAYING "isPlaying must be a boolean"
#define TYPE "type must be text, audio or image"
#define CONTENT "content must be a non-empty string"
#define CONTENT_BIG "content is longer than EDGE_MAX_MESSAGE_BYTES bytes"
#define CMID "clientMessageId must be a string of 1 to 64 bytes"
#define LIMIT "limit must be an integer from 1 to 100"
#define STATUS "status must be online, away or offline"
#define IDS_BIG "more user ids than EDGE_MAX_PRESENCE_QUERY"
#define IDS_ENTRY "every entry must be a user id (uuid)"
#define GHOST_NUL "text must not contain U+0000"
#define CONTENT_NUL "content must not contain U+0000"
#define CMID_NUL "clientMessageId must not contain U+0000"
#define CURSOR "before must be the nextBefore of a previous page"
#define CONV_LIMIT "limit must be an integer from 1 to 50"

enum ev {
    EV_RECIPIENT,
    EV_GHOST,
    EV_LISTENING,
    EV_SEND,
    EV_READ,
    EV_HISTORY,
    EV_STATUS,
    EV_IDS,
    EV_CONVS,
    EV_CONV_READ
};

struct vcase {
    const char *name;
    enum ev ev;
    const char *json; /* the event's argument */
    const char *code; /* NULL: valid */
    const char *msg;
};

static const struct vcase cases[] = {
    /* typing:start/stop, audio:recording:start/stop */
    {"recipient ok", EV_RECIPIENT, "{\"recipientId\":\"" U1 "\"}", NULL, NULL},
    {"recipient upper", EV_RECIPIENT, "{\"recipientId\":\"" U1_UPPER "\"}", NULL, NULL},
    {"recipient extra keys", EV_RECIPIENT, "{\"recipientId\":\"" U1 "\",\"x\":[1]}", NULL, NULL},
    {"recipient missing", EV_RECIPIENT, "{}", BAD, MISSING},
    {"recipient in array", EV_RECIPIENT, "[\"" U1 "\"]", BAD, MISSING},
    {"recipient null", EV_RECIPIENT, "{\"recipientId\":null}", BAD, NOT_UUID},
    {"recipient number", EV_RECIPIENT, "{\"recipientId\":42}", BAD, NOT_UUID},
    {"recipient object", EV_RECIPIENT, "{\"recipientId\":{}}", BAD, NOT_UUID},
    {"recipient empty", EV_RECIPIENT, "{\"recipientId\":\"\"}", BAD, NOT_UUID},
    {"recipient short", EV_RECIPIENT, "{\"recipientId\":\"0190a0b0-0000-7000-8000-00000000a11\"}", BAD,
     NOT_UUID},
    {"recipient long", EV_RECIPIENT, "{\"recipientId\":\"" U1 "0\"}", BAD, NOT_UUID},
    {"recipient braces", EV_RECIPIENT, "{\"recipientId\":\"{0190a0b0-0000-7000-8000-00000000a1}\"}", BAD,
     NOT_UUID},
    {"recipient dash moved", EV_RECIPIENT, "{\"recipientId\":\"0190a0b00-000-7000-8000-00000000a11c\"}", BAD,
     NOT_UUID},
    {"recipient not hex", EV_RECIPIENT, "{\"recipientId\":\"0190a0b0-0000-7000-8000-00000000a11g\"}", BAD,
     NOT_UUID},
    {"recipient with U+0000", EV_RECIPIENT,
     "{\"recipientId\":\"0190a0b0-0000-7000-8000-00000000a11\\u0000\"}", BAD, NOT_UUID},
    {"recipient non-ASCII", EV_RECIPIENT, "{\"recipientId\":\"0190a0b0-0000-7000-8000-00000000a11\\u00e9\"}",
     BAD, NOT_UUID},

    /* ghost:typing */
    {"ghost ok", EV_GHOST, "{\"recipientId\":\"" U1 "\",\"text\":\"hi\"}", NULL, NULL},
    {"ghost empty text", EV_GHOST, "{\"recipientId\":\"" U1 "\",\"text\":\"\"}", NULL, NULL},
    {"ghost at limit", EV_GHOST, "{\"recipientId\":\"" U1 "\",\"text\":\"12345678\"}", NULL, NULL},
    {"ghost over limit", EV_GHOST, "{\"recipientId\":\"" U1 "\",\"text\":\"123456789\"}", BIG, GHOST_BIG},
    {"ghost limit in bytes", EV_GHOST,
     "{\"recipientId\":\"" U1 "\",\"text\":\"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\"}", BIG, GHOST_BIG},
    {"ghost text missing", EV_GHOST, "{\"recipientId\":\"" U1 "\"}", BAD, GHOST_TEXT},
    {"ghost text null", EV_GHOST, "{\"recipientId\":\"" U1 "\",\"text\":null}", BAD, GHOST_TEXT},
    {"ghost text number", EV_GHOST, "{\"recipientId\":\"" U1 "\",\"text\":7}", BAD, GHOST_TEXT},
    {"ghost recipient first", EV_GHOST, "{\"text\":7}", BAD, MISSING},
    {"ghost text with U+0000", EV_GHOST, "{\"recipientId\":\"" U1 "\",\"text\":\"a\\u0000b\"}", BAD,
     GHOST_NUL},
    {"ghost length before U+0000", EV_GHOST, "{\"recipientId\":\"" U1 "\",\"text\":\"\\u000012345678\"}", BIG,
     GHOST_BIG},
    {"ghost bad recipient", EV_GHOST, "{\"recipientId\":\"bob\",\"text\":\"hi\"}", BAD, NOT_UUID},

    /* audio:listening */
    {"listening true", EV_LISTENING, "{\"messageId\":\"" U1 "\",\"senderId\":\"" U2 "\",\"isPlaying\":true}",
     NULL, NULL},
    {"listening false", EV_LISTENING,
     "{\"messageId\":\"" U1 "\",\"senderId\":\"" U2 "\",\"isPlaying\":false}", NULL, NULL},
    {"listening no message", EV_LISTENING, "{\"senderId\":\"" U2 "\",\"isPlaying\":true}", BAD, MISSING},
    {"listening no sender", EV_LISTENING, "{\"messageId\":\"" U1 "\",\"isPlaying\":true}", BAD, MISSING},
    {"listening bad sender", EV_LISTENING, "{\"messageId\":\"" U1 "\",\"senderId\":1,\"isPlaying\":true}",
     BAD, NOT_UUID},
    {"listening no playing", EV_LISTENING, "{\"messageId\":\"" U1 "\",\"senderId\":\"" U2 "\"}", BAD,
     PLAYING},
    {"listening playing string", EV_LISTENING,
     "{\"messageId\":\"" U1 "\",\"senderId\":\"" U2 "\",\"isPlaying\":\"true\"}", BAD, PLAYING},
    {"listening playing number", EV_LISTENING,
     "{\"messageId\":\"" U1 "\",\"senderId\":\"" U2 "\",\"isPlaying\":1}", BAD, PLAYING},
    {"listening playing null", EV_LISTENING,
     "{\"messageId\":\"" U1 "\",\"senderId\":\"" U2 "\",\"isPlaying\":null}", BAD, PLAYING},

    /* message:send */
    {"send text", EV_SEND, "{\"recipientId\":\"" U1 "\",\"content\":\"hello\",\"type\":\"text\"}", NULL,
     NULL},
    {"send audio", EV_SEND, "{\"recipientId\":\"" U1 "\",\"content\":\"a.ogg\",\"type\":\"audio\"}", NULL,
     NULL},
    {"send image", EV_SEND, "{\"recipientId\":\"" U1 "\",\"content\":\"i.png\",\"type\":\"image\"}", NULL,
     NULL},
    {"send at limit", EV_SEND,
     "{\"recipientId\":\"" U1 "\",\"content\":\"0123456789abcdef\",\"type\":\"text\"}", NULL, NULL},
    {"send over limit", EV_SEND,
     "{\"recipientId\":\"" U1 "\",\"content\":\"0123456789abcdefg\",\"type\":\"text\"}", BIG, CONTENT_BIG},
    {"send limit in bytes", EV_SEND,
     "{\"recipientId\":\"" U1
     "\",\"content\":\"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\","
     "\"type\":\"text\"}",
     BIG, CONTENT_BIG},
    {"send cmid", EV_SEND,
     "{\"recipientId\":\"" U1 "\",\"content\":\"x\",\"type\":\"text\",\"clientMessageId\":\"c1\"}", NULL,
     NULL},
    {"send cmid null", EV_SEND,
     "{\"recipientId\":\"" U1 "\",\"content\":\"x\",\"type\":\"text\",\"clientMessageId\":null}", NULL, NULL},
    {"send cmid 64", EV_SEND,
     "{\"recipientId\":\"" U1 "\",\"content\":\"x\",\"type\":\"text\",\"clientMessageId\":\"" C64 "\"}", NULL,
     NULL},
    {"send cmid 65", EV_SEND,
     "{\"recipientId\":\"" U1 "\",\"content\":\"x\",\"type\":\"text\",\"clientMessageId\":\"" C64 "0\"}", BAD,
     CMID},
    {"send cmid empty", EV_SEND,
     "{\"recipientId\":\"" U1 "\",\"content\":\"x\",\"type\":\"text\",\"clientMessageId\":\"\"}", BAD, CMID},
    {"send cmid number", EV_SEND,
     "{\"recipientId\":\"" U1 "\",\"content\":\"x\",\"type\":\"text\",\"clientMessageId\":5}", BAD, CMID},
    {"send cmid false", EV_SEND,
     "{\"recipientId\":\"" U1 "\",\"content\":\"x\",\"type\":\"text\",\"clientMessageId\":false}", BAD, CMID},
    {"send content with U+0000", EV_SEND,
     "{\"recipientId\":\"" U1 "\",\"content\":\"a\\u0000b\",\"type\":\"text\"}", BAD, CONTENT_NUL},
    {"send cmid with U+0000", EV_SEND,
     "{\"recipientId\":\"" U1 "\",\"content\":\"x\",\"type\":\"text\",\"clientMessageId\":\"c\\u0000\"}", BAD,
     CMID_NUL},
    {"send type with U+0000 (fuzz_chat)", EV_SEND,
     "{\"recipientId\":\"" U1 "\",\"content\":\"x\",\"type\":\"text\\u0000x\"}", BAD, TYPE},
    {"send no recipient", EV_SEND, "{\"content\":\"x\",\"type\":\"text\"}", BAD, MISSING},
    {"send bad recipient first", EV_SEND, "{\"recipientId\":\"x\",\"content\":\"\",\"type\":\"video\"}", BAD,
     NOT_UUID},
    {"send no type", EV_SEND, "{\"recipientId\":\"" U1 "\",\"content\":\"x\"}", BAD, TYPE},
    {"send type unknown", EV_SEND, "{\"recipientId\":\"" U1 "\",\"content\":\"x\",\"type\":\"video\"}", BAD,
     TYPE},
    {"send type case", EV_SEND, "{\"recipientId\":\"" U1 "\",\"content\":\"x\",\"type\":\"TEXT\"}", BAD,
     TYPE},
    {"send type number", EV_SEND, "{\"recipientId\":\"" U1 "\",\"content\":\"x\",\"type\":1}", BAD, TYPE},
    {"send type before content", EV_SEND, "{\"recipientId\":\"" U1 "\",\"content\":\"\",\"type\":\"\"}", BAD,
     TYPE},
    {"send no content", EV_SEND, "{\"recipientId\":\"" U1 "\",\"type\":\"text\"}", BAD, CONTENT},
    {"send empty content", EV_SEND, "{\"recipientId\":\"" U1 "\",\"content\":\"\",\"type\":\"text\"}", BAD,
     CONTENT},
    {"send content object", EV_SEND, "{\"recipientId\":\"" U1 "\",\"content\":{},\"type\":\"text\"}", BAD,
     CONTENT},
    {"send content before cmid", EV_SEND,
     "{\"recipientId\":\"" U1
     "\",\"content\":\"0123456789abcdefg\",\"type\":\"text\",\"clientMessageId\":\"\"}",
     BIG, CONTENT_BIG},

    /* message:read */
    {"read ok", EV_READ, "{\"messageId\":\"" U1 "\",\"senderId\":\"" U2 "\"}", NULL, NULL},
    {"read no sender", EV_READ, "{\"messageId\":\"" U1 "\"}", NULL, NULL},
    {"read sender null", EV_READ, "{\"messageId\":\"" U1 "\",\"senderId\":null}", BAD, NOT_UUID},
    {"read sender bad", EV_READ, "{\"messageId\":\"" U1 "\",\"senderId\":\"bob\"}", BAD, NOT_UUID},
    {"read no message", EV_READ, "{\"senderId\":\"" U2 "\"}", BAD, MISSING},
    {"read message number", EV_READ, "{\"messageId\":1}", BAD, NOT_UUID},

    /* message:history (the ack id check is the handler's) */
    {"history ok", EV_HISTORY, "{\"withUserId\":\"" U1 "\"}", NULL, NULL},
    {"history all", EV_HISTORY, "{\"withUserId\":\"" U1 "\",\"before\":\"" U2 "\",\"limit\":100}", NULL,
     NULL},
    {"history nulls", EV_HISTORY, "{\"withUserId\":\"" U1 "\",\"before\":null,\"limit\":null}", NULL, NULL},
    {"history limit 1", EV_HISTORY, "{\"withUserId\":\"" U1 "\",\"limit\":1}", NULL, NULL},
    {"history no with", EV_HISTORY, "{\"limit\":1}", BAD, MISSING},
    {"history bad with", EV_HISTORY, "{\"withUserId\":\"x\",\"limit\":0}", BAD, NOT_UUID},
    {"history bad before", EV_HISTORY, "{\"withUserId\":\"" U1 "\",\"before\":\"x\"}", BAD, NOT_UUID},
    {"history before number", EV_HISTORY, "{\"withUserId\":\"" U1 "\",\"before\":0}", BAD, NOT_UUID},
    {"history before first", EV_HISTORY, "{\"withUserId\":\"" U1 "\",\"before\":\"x\",\"limit\":0}", BAD,
     NOT_UUID},
    {"history limit 0", EV_HISTORY, "{\"withUserId\":\"" U1 "\",\"limit\":0}", BAD, LIMIT},
    {"history limit 101", EV_HISTORY, "{\"withUserId\":\"" U1 "\",\"limit\":101}", BAD, LIMIT},
    {"history limit -1", EV_HISTORY, "{\"withUserId\":\"" U1 "\",\"limit\":-1}", BAD, LIMIT},
    {"history limit huge", EV_HISTORY, "{\"withUserId\":\"" U1 "\",\"limit\":9223372036854775807}", BAD,
     LIMIT},
    {"history limit real", EV_HISTORY, "{\"withUserId\":\"" U1 "\",\"limit\":1.5}", BAD, LIMIT},
    {"history limit real whole", EV_HISTORY, "{\"withUserId\":\"" U1 "\",\"limit\":10.0}", BAD, LIMIT},
    {"history limit string", EV_HISTORY, "{\"withUserId\":\"" U1 "\",\"limit\":\"10\"}", BAD, LIMIT},
    {"history limit true", EV_HISTORY, "{\"withUserId\":\"" U1 "\",\"limit\":true}", BAD, LIMIT},

    /* conversation:list (the ack id check is the handler's) */
    {"convs empty", EV_CONVS, "{}", NULL, NULL},
    {"convs nulls", EV_CONVS, "{\"before\":null,\"limit\":null}", NULL, NULL},
    {"convs cursor", EV_CONVS, "{\"before\":\"1733600000123456." U1 "\",\"limit\":50}", NULL, NULL},
    {"convs cursor upper", EV_CONVS, "{\"before\":\"1." U1_UPPER "\"}", NULL, NULL},
    {"convs cursor zero", EV_CONVS, "{\"before\":\"0." U1 "\"}", NULL, NULL},
    {"convs limit 1", EV_CONVS, "{\"limit\":1}", NULL, NULL},
    {"convs limit 0", EV_CONVS, "{\"limit\":0}", BAD, CONV_LIMIT},
    {"convs limit 51", EV_CONVS, "{\"limit\":51}", BAD, CONV_LIMIT},
    {"convs limit string", EV_CONVS, "{\"limit\":\"5\"}", BAD, CONV_LIMIT},
    {"convs limit real", EV_CONVS, "{\"limit\":2.0}", BAD, CONV_LIMIT},
    {"convs cursor first", EV_CONVS, "{\"before\":\"x\",\"limit\":0}", BAD, CURSOR},
    {"convs cursor number", EV_CONVS, "{\"before\":17}", BAD, CURSOR},
    {"convs cursor uuid only", EV_CONVS, "{\"before\":\"" U1 "\"}", BAD, CURSOR},
    {"convs cursor no digits", EV_CONVS, "{\"before\":\"." U1 "\"}", BAD, CURSOR},
    {"convs cursor leading zero", EV_CONVS, "{\"before\":\"01." U1 "\"}", BAD, CURSOR},
    {"convs cursor 16 digits", EV_CONVS, "{\"before\":\"9999999999999999." U1 "\"}", NULL, NULL},
    {"convs cursor 17 digits", EV_CONVS, "{\"before\":\"10000000000000000." U1 "\"}", BAD, CURSOR},
    {"convs cursor sign", EV_CONVS, "{\"before\":\"-1." U1 "\"}", BAD, CURSOR},
    {"convs cursor bad uuid", EV_CONVS, "{\"before\":\"12." U1 "0\"}", BAD, CURSOR},
    {"convs cursor two dots", EV_CONVS, "{\"before\":\"1.2." U1 "\"}", BAD, CURSOR},
    {"convs cursor with U+0000", EV_CONVS, "{\"before\":\"1\\u0000." U1 "\"}", BAD, CURSOR},

    /* conversation:read */
    {"conv read ok", EV_CONV_READ, "{\"withUserId\":\"" U1 "\",\"upTo\":\"" U2 "\"}", NULL, NULL},
    {"conv read no with", EV_CONV_READ, "{\"upTo\":\"" U2 "\"}", BAD, MISSING},
    {"conv read no upTo", EV_CONV_READ, "{\"withUserId\":\"" U1 "\"}", BAD, MISSING},
    {"conv read upTo null", EV_CONV_READ, "{\"withUserId\":\"" U1 "\",\"upTo\":null}", BAD, NOT_UUID},
    {"conv read with first", EV_CONV_READ, "{\"withUserId\":1,\"upTo\":1}", BAD, NOT_UUID},

    /* presence:update */
    {"status online", EV_STATUS, "{\"status\":\"online\"}", NULL, NULL},
    {"status away", EV_STATUS, "{\"status\":\"away\"}", NULL, NULL},
    {"status offline", EV_STATUS, "{\"status\":\"offline\"}", NULL, NULL},
    {"status busy", EV_STATUS, "{\"status\":\"busy\"}", BAD, STATUS},
    {"status case", EV_STATUS, "{\"status\":\"Online\"}", BAD, STATUS},
    {"status empty", EV_STATUS, "{\"status\":\"\"}", BAD, STATUS},
    {"status number", EV_STATUS, "{\"status\":1}", BAD, STATUS},
    {"status missing", EV_STATUS, "{}", BAD, STATUS},
    {"status with U+0000 (fuzz_chat)", EV_STATUS, "{\"status\":\"away\\u0000\"}", BAD, STATUS},

    /* presence:request */
    {"ids empty", EV_IDS, "[]", NULL, NULL},
    {"ids one", EV_IDS, "[\"" U1 "\"]", NULL, NULL},
    {"ids at limit", EV_IDS, "[\"" U1 "\",\"" U2 "\",\"" U1_UPPER "\"]", NULL, NULL},
    {"ids over limit", EV_IDS, "[\"" U1 "\",\"" U2 "\",\"" U1 "\",\"" U2 "\"]", BIG, IDS_BIG},
    {"ids size before entries", EV_IDS, "[1,2,3,4]", BIG, IDS_BIG},
    {"ids number", EV_IDS, "[\"" U1 "\",1]", BAD, IDS_ENTRY},
    {"ids null", EV_IDS, "[null]", BAD, IDS_ENTRY},
    {"ids not uuid", EV_IDS, "[\"bob\"]", BAD, IDS_ENTRY},
    {"ids with U+0000", EV_IDS, "[\"0190a0b0-0000-7000-8000-00000000a11\\u0000\"]", BAD, IDS_ENTRY},
    {"ids nested", EV_IDS, "[[\"" U1 "\"]]", BAD, IDS_ENTRY},
};

static int run(enum ev ev, const json_t *arg, const char **code, const char **msg)
{
    struct chat_valid_recipient r;
    struct chat_valid_ghost g;
    struct chat_valid_listening l;
    struct chat_valid_send s;
    struct chat_valid_read rd;
    struct chat_valid_history h;
    struct chat_valid_status st;
    struct chat_valid_ids ids;
    struct chat_valid_conversations cv;
    struct chat_valid_conversation_read cr;
    int rc = -2;
    switch (ev) {
    case EV_RECIPIENT:
        rc = chat_valid_recipient(&r, arg, code, msg);
        break;
    case EV_GHOST:
        rc = chat_valid_ghost(&g, arg, MAX_GHOST, code, msg);
        break;
    case EV_LISTENING:
        rc = chat_valid_listening(&l, arg, code, msg);
        break;
    case EV_SEND:
        rc = chat_valid_send(&s, arg, MAX_BYTES, code, msg);
        break;
    case EV_READ:
        rc = chat_valid_read(&rd, arg, code, msg);
        break;
    case EV_HISTORY:
        rc = chat_valid_history(&h, arg, code, msg);
        break;
    case EV_STATUS:
        rc = chat_valid_status(&st, arg, code, msg);
        break;
    case EV_IDS:
        rc = chat_valid_ids(&ids, arg, MAX_IDS, code, msg);
        chat_valid_ids_cleanup(&ids);
        break;
    case EV_CONVS:
        rc = chat_valid_conversations(&cv, arg, code, msg);
        break;
    case EV_CONV_READ:
        rc = chat_valid_conversation_read(&cr, arg, code, msg);
        break;
    }
    return rc;
}

static json_t *load(const char *text)
{
    json_error_t e;
    /* The flags sio_decode parses payloads with: strings may hold U+0000. */
    json_t *v = json_loadb(text, strlen(text), JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
    if (!v)
        fail_msg("bad test JSON %s: %s", text, e.text);
    return v;
}

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        const struct vcase *c = &cases[i];
        json_t *arg = load(c->json);
        const char *code = NULL, *msg = NULL;
        int rc = run(c->ev, arg, &code, &msg);
        if (!c->code) {
            if (rc != 0)
                fail_msg("%s: refused with %s \"%s\"", c->name, code, msg);
        } else {
            if (rc != -1)
                fail_msg("%s: accepted, want %s \"%s\"", c->name, c->code, c->msg);
            if (!code || !msg || strcmp(code, c->code) != 0 || strcmp(msg, c->msg) != 0)
                fail_msg("%s: got %s \"%s\", want %s \"%s\"", c->name, code ? code : "(null)",
                         msg ? msg : "(null)", c->code, c->msg);
        }
        json_decref(arg);
    }
}

/* The fields a valid payload yields: uuids lowercased, defaults filled. */
static void test_fields(void **state)
{
    (void)state;
    const char *code, *msg;

    json_t *a = load("{\"recipientId\":\"" U1_UPPER "\"}");
    struct chat_valid_recipient r;
    assert_int_equal(chat_valid_recipient(&r, a, &code, &msg), 0);
    assert_string_equal(r.to, U1);
    json_decref(a);

    a = load("{\"recipientId\":\"" U1_UPPER "\",\"text\":\"draft\"}");
    struct chat_valid_ghost g;
    assert_int_equal(chat_valid_ghost(&g, a, MAX_GHOST, &code, &msg), 0);
    assert_string_equal(g.to, U1);
    assert_string_equal(g.text, "draft");
    json_decref(a);

    a = load("{\"messageId\":\"" U1_UPPER "\",\"senderId\":\"" U2 "\",\"isPlaying\":true}");
    struct chat_valid_listening l;
    assert_int_equal(chat_valid_listening(&l, a, &code, &msg), 0);
    assert_string_equal(l.message_id, U1);
    assert_string_equal(l.to, U2);
    assert_int_equal(l.is_playing, 1);
    json_decref(a);

    a = load("{\"recipientId\":\"" U1_UPPER "\",\"content\":\"hello\",\"type\":\"image\"}");
    struct chat_valid_send s;
    assert_int_equal(chat_valid_send(&s, a, MAX_BYTES, &code, &msg), 0);
    assert_string_equal(s.to, U1);
    assert_int_equal(s.type, CHAT__V1__MESSAGE_TYPE__MESSAGE_TYPE_IMAGE);
    assert_string_equal(s.content, "hello");
    assert_int_equal(s.content_len, 5);
    assert_string_equal(s.client_message_id, "");
    json_decref(a);

    a = load("{\"recipientId\":\"" U1 "\",\"content\":\"x\",\"type\":\"text\",\"clientMessageId\":\"c-1\"}");
    assert_int_equal(chat_valid_send(&s, a, MAX_BYTES, &code, &msg), 0);
    assert_int_equal(s.type, CHAT__V1__MESSAGE_TYPE__MESSAGE_TYPE_TEXT);
    assert_string_equal(s.client_message_id, "c-1");
    json_decref(a);

    a = load("{\"messageId\":\"" U1_UPPER "\"}");
    struct chat_valid_read rd;
    assert_int_equal(chat_valid_read(&rd, a, &code, &msg), 0);
    assert_string_equal(rd.message_id, U1);
    assert_string_equal(rd.sender_id, "");
    json_decref(a);

    a = load("{\"withUserId\":\"" U1_UPPER "\"}");
    struct chat_valid_history h;
    assert_int_equal(chat_valid_history(&h, a, &code, &msg), 0);
    assert_string_equal(h.with, U1);
    assert_string_equal(h.before, "");
    assert_int_equal(h.limit, CHAT_VALID_HISTORY_DEFAULT);
    json_decref(a);

    a = load("{\"withUserId\":\"" U1 "\",\"before\":\"" U1_UPPER "\",\"limit\":7}");
    assert_int_equal(chat_valid_history(&h, a, &code, &msg), 0);
    assert_string_equal(h.before, U1);
    assert_int_equal(h.limit, 7);
    json_decref(a);

    a = load("{\"status\":\"away\"}");
    struct chat_valid_status st;
    assert_int_equal(chat_valid_status(&st, a, &code, &msg), 0);
    assert_int_equal(st.status, CHAT__V1__STATUS__STATUS_AWAY);
    json_decref(a);

    a = load("[\"" U1_UPPER "\",\"" U2 "\"]");
    struct chat_valid_ids ids;
    assert_int_equal(chat_valid_ids(&ids, a, MAX_IDS, &code, &msg), 0);
    assert_int_equal(ids.n, 2);
    assert_string_equal(ids.ptrs[0], U1);
    assert_string_equal(ids.ptrs[1], U2);
    assert_ptr_equal(ids.ptrs[1], ids.ids[1]);
    chat_valid_ids_cleanup(&ids);
    assert_null(ids.ids);
    chat_valid_ids_cleanup(&ids); /* twice is harmless */
    json_decref(a);
}

/* Found by fuzz_chat: with U+0000 allowed in JSON strings, a name the
 * validators compare with strcmp ("away\u0000", "text\u0000x") matched as its
 * prefix. The fuzzer's input, then the same for message:send's type. */
static void test_fuzz_nul_after_a_name(void **state)
{
    (void)state;
    const char *code = NULL, *msg = NULL;
    json_t *a = load("{\"status\":\"away\\u0000\"}");
    struct chat_valid_status st;
    assert_int_equal(chat_valid_status(&st, a, &code, &msg), -1);
    assert_string_equal(code, BAD);
    assert_string_equal(msg, STATUS);
    json_decref(a);

    a = load("{\"recipientId\":\"" U1 "\",\"content\":\"x\",\"type\":\"image\\u0000\"}");
    struct chat_valid_send s;
    assert_int_equal(chat_valid_send(&s, a, MAX_BYTES, &code, &msg), -1);
    assert_string_equal(code, BAD);
    assert_string_equal(msg, TYPE);
    json_decref(a);
}

/* conversation:list and conversation:read: the cursor's parts, defaults. */
static void test_conversation_fields(void **state)
{
    (void)state;
    const char *code, *msg;
    json_t *a = load("{}");
    struct chat_valid_conversations cv;
    assert_int_equal(chat_valid_conversations(&cv, a, &code, &msg), 0);
    assert_int_equal(cv.limit, CHAT_VALID_CONVERSATIONS_DEFAULT);
    assert_int_equal(cv.before_us, 0);
    assert_string_equal(cv.before_with, "");
    json_decref(a);

    a = load("{\"before\":\"1733600000123456." U1_UPPER "\",\"limit\":7}");
    assert_int_equal(chat_valid_conversations(&cv, a, &code, &msg), 0);
    assert_int_equal(cv.limit, 7);
    assert_true(cv.before_us == 1733600000123456LL);
    assert_string_equal(cv.before_with, U1);
    json_decref(a);

    a = load("{\"withUserId\":\"" U1_UPPER "\",\"upTo\":\"" U2 "\"}");
    struct chat_valid_conversation_read cr;
    assert_int_equal(chat_valid_conversation_read(&cr, a, &code, &msg), 0);
    assert_string_equal(cr.with, U1);
    assert_string_equal(cr.up_to, U2);
    json_decref(a);
}

/* On -1 the ids struct holds nothing: cleanup is optional (ASan checks). */
static void test_ids_refused_hold_nothing(void **state)
{
    (void)state;
    const char *code, *msg;
    json_t *a = load("[\"" U1 "\",\"x\"]");
    struct chat_valid_ids ids;
    assert_int_equal(chat_valid_ids(&ids, a, MAX_IDS, &code, &msg), -1);
    assert_int_equal(ids.n, 0);
    assert_null(ids.ids);
    assert_null(ids.ptrs);
    json_decref(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_conversation_fields),
        cmocka_unit_test(test_ids_refused_hold_nothing),
        cmocka_unit_test(test_fuzz_nul_after_a_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
