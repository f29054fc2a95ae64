/* test_chat_wire: every packet chat_wire writes must parse to the JSON that
 * jansson builds from the same protobuf (chat_json's presence and message
 * shapes, which the acks use, and the delivery shapes below), for plain,
 * escaped, non-ASCII and empty strings; strings that are not UTF-8 must fail
 * the call. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "chat/chat_json.h"
#include "chat/chat_wire.h"

/* The seed's shapes for each Delivery, built with jansson: [name, payload],
 * or NULL for an unknown one (or a string jansson refuses). */
static json_t *expected_delivery(const Chat__V1__Delivery *d)
{
    switch (d->event_case) {
    case CHAT__V1__DELIVERY__EVENT_MESSAGE_RECEIVED:
        return json_pack("[so]", "message:received", chat_json_message(d->message_received));
    case CHAT__V1__DELIVERY__EVENT_MESSAGE_SENT:
        return json_pack("[so]", "message:sent", chat_json_message(d->message_sent));
    case CHAT__V1__DELIVERY__EVENT_MESSAGE_READ:
        return json_pack("[s{s:s,s:o}]", "message:read", "messageId", d->message_read->message_id, "readAt",
                         chat_json_time(d->message_read->read_at_ms));
    case CHAT__V1__DELIVERY__EVENT_TYPING_START:
        return json_pack("[s{s:s,s:s}]", "typing:start", "userId", d->typing_start->user_id, "username",
                         d->typing_start->username);
    case CHAT__V1__DELIVERY__EVENT_TYPING_STOP:
        return json_pack("[s{s:s}]", "typing:stop", "userId", d->typing_stop->user_id);
    case CHAT__V1__DELIVERY__EVENT_GHOST_TYPING:
        return json_pack("[s{s:s,s:s}]", "ghost:typing", "userId", d->ghost_typing->user_id, "text",
                         d->ghost_typing->text);
    case CHAT__V1__DELIVERY__EVENT_AUDIO_RECORDING_START:
        return json_pack("[s{s:s}]", "audio:recording:start", "userId", d->audio_recording_start->user_id);
    case CHAT__V1__DELIVERY__EVENT_AUDIO_RECORDING_STOP:
        return json_pack("[s{s:s}]", "audio:recording:stop", "userId", d->audio_recording_stop->user_id);
    case CHAT__V1__DELIVERY__EVENT_AUDIO_LISTENING:
        return json_pack("[s{s:s,s:s,s:b}]", "audio:listening", "userId", d->audio_listening->user_id,
                         "messageId", d->audio_listening->message_id, "isPlaying",
                         d->audio_listening->is_playing);
    default:
        return NULL;
    }
}

/* b must hold 2<json> whose json equals want (which is consumed). */
static void assert_packet(struct buf *b, json_t *want)
{
    assert_non_null(want);
    assert_true(b->len > 1);
    assert_int_equal(b->data[0], '2');
    json_error_t err;
    json_t *got = json_loadb(b->data + 1, b->len - 1, JSON_ALLOW_NUL, &err);
    if (!got)
        fail_msg("not JSON (%s): %.*s", err.text, (int)b->len, b->data);
    if (!json_equal(got, want)) {
        char *w = json_dumps(want, JSON_COMPACT);
        fail_msg("got %.*s\nwant %s", (int)b->len, b->data, w);
    }
    for (size_t i = 0; i < b->len; i++) /* polling payloads are split at 0x1e */
        assert_true((unsigned char)b->data[i] >= 0x20);
    json_decref(got);
    json_decref(want);
}

static const char *const texts[] = {
    "plain",
    "",
    "quote \" backslash \\ slash /",
    "tab\tnewline\nrecord\x1e"
    "bell\x07"
    "del\x7f",
    "héllo wörld ✓ 😀 \xe2\x80\xa8",
    "{\"json\":[1,2]}",
};

static void test_presence(void **state)
{
    (void)state;
    Chat__V1__PresenceInfo infos[6], *ptrs[6];
    for (int i = 0; i < 6; i++) {
        chat__v1__presence_info__init(&infos[i]);
        infos[i].user_id = "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";
        infos[i].username = (char *)texts[i];
        infos[i].status = (Chat__V1__Status)(i % 4);
        infos[i].last_seen_ms = i % 2 ? 1764210786123LL + i : 0;
        ptrs[i] = &infos[i];
        struct buf b;
        buf_init(&b);
        if (infos[i].last_seen_ms) {
            assert_int_equal(chat_wire_status(&b, &infos[i]), 0);
            assert_packet(&b, json_pack("[so]", "user:status", chat_json_presence(&infos[i])));
        } else { /* never seen: no status to tell */
            assert_int_equal(chat_wire_status(&b, &infos[i]), -1);
        }
        buf_cleanup(&b);
    }
    for (size_t n = 0; n <= 6; n += 3) {
        Chat__V1__PresenceList l = CHAT__V1__PRESENCE_LIST__INIT;
        l.n_users = n;
        l.users = ptrs;
        struct buf b;
        buf_init(&b);
        assert_int_equal(chat_wire_presence_list(&b, "presence:update", &l), 0);
        json_t *want = chat_json_presence_list(&l);
        assert_int_equal(json_array_size(want), n / 2); /* the never seen are left out */
        for (size_t k = 0; k < json_array_size(want); k++) {
            json_t *e = json_array_get(want, k);
            assert_true(json_is_string(json_object_get(e, "username")));
            assert_true(json_is_string(json_object_get(e, "lastSeen")));
        }
        assert_packet(&b, json_pack("[so]", "presence:update", want));
        buf_cleanup(&b);
    }
}

static void check_delivery(Chat__V1__Delivery *d)
{
    struct buf b;
    const char *event = NULL;
    buf_init(&b);
    assert_int_equal(chat_wire_delivery(&b, d, NULL, &event), 0);
    json_t *want = expected_delivery(d);
    assert_string_equal(event, json_string_value(json_array_get(want, 0)));
    assert_packet(&b, want);
    buf_cleanup(&b);
    /* A recoverable event carries its offset as a last argument. */
    buf_init(&b);
    assert_int_equal(chat_wire_delivery(&b, d, "18446744073709551615", &event), 0);
    want = expected_delivery(d);
    json_array_append_new(want, json_string("18446744073709551615"));
    assert_packet(&b, want);
    buf_cleanup(&b);
}

static void test_deliveries(void **state)
{
    (void)state;
    const char *uid = "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        Chat__V1__Message m = CHAT__V1__MESSAGE__INIT;
        m.id = "0190a1b2-c3d4-7e5f-8a6b-000000000001";
        m.sender_id = (char *)uid;
        m.recipient_id = "0190a1b2-c3d4-7e5f-8a6b-000000000002";
        m.content = (char *)texts[t];
        m.type = (Chat__V1__MessageType)(t % 5);
        m.created_at_ms = 1764210786123LL;
        m.read_at_ms = t % 2 ? 1764210799001LL : 0;
        m.client_message_id = t % 2 ? "c-1" : "";
        Chat__V1__Delivery d = CHAT__V1__DELIVERY__INIT;
        d.event_case = CHAT__V1__DELIVERY__EVENT_MESSAGE_RECEIVED;
        d.message_received = &m;
        check_delivery(&d);
        d.event_case = CHAT__V1__DELIVERY__EVENT_MESSAGE_SENT;
        d.message_sent = &m;
        check_delivery(&d);

        Chat__V1__ReadReceipt r = CHAT__V1__READ_RECEIPT__INIT;
        r.message_id = m.id;
        r.read_at_ms = m.read_at_ms;
        d.event_case = CHAT__V1__DELIVERY__EVENT_MESSAGE_READ;
        d.message_read = &r;
        check_delivery(&d);

        Chat__V1__TypingStart ts = CHAT__V1__TYPING_START__INIT;
        ts.user_id = (char *)uid;
        ts.username = (char *)texts[t];
        d.event_case = CHAT__V1__DELIVERY__EVENT_TYPING_START;
        d.typing_start = &ts;
        check_delivery(&d);

        Chat__V1__GhostTyping g = CHAT__V1__GHOST_TYPING__INIT;
        g.user_id = (char *)uid;
        g.text = (char *)texts[t];
        d.event_case = CHAT__V1__DELIVERY__EVENT_GHOST_TYPING;
        d.ghost_typing = &g;
        check_delivery(&d);

        Chat__V1__UserSignal sig = CHAT__V1__USER_SIGNAL__INIT;
        sig.user_id = (char *)uid;
        d.event_case = CHAT__V1__DELIVERY__EVENT_TYPING_STOP;
        d.typing_stop = &sig;
        check_delivery(&d);
        d.event_case = CHAT__V1__DELIVERY__EVENT_AUDIO_RECORDING_START;
        d.audio_recording_start = &sig;
        check_delivery(&d);
        d.event_case = CHAT__V1__DELIVERY__EVENT_AUDIO_RECORDING_STOP;
        d.audio_recording_stop = &sig;
        check_delivery(&d);

        Chat__V1__AudioListening al = CHAT__V1__AUDIO_LISTENING__INIT;
        al.user_id = (char *)uid;
        al.message_id = m.id;
        al.is_playing = (protobuf_c_boolean)(t % 2);
        d.event_case = CHAT__V1__DELIVERY__EVENT_AUDIO_LISTENING;
        d.audio_listening = &al;
        check_delivery(&d);
    }
    Chat__V1__Delivery none = CHAT__V1__DELIVERY__INIT;
    struct buf b;
    const char *event;
    buf_init(&b);
    assert_int_equal(chat_wire_delivery(&b, &none, NULL, &event), -1);
    buf_cleanup(&b);
}

static void test_not_utf8(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\x80",
        "a\xc0\xaf",
        "\xc3",
        "\xe0\x80\xaf",
        "\xed\xa0\x80" /* surrogate */,
        "\xf4\x90\x80\x80" /* > U+10FFFF */,
        "\xf0\x9f\x98",
        "\xff",
        "ok\xe2\x82",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct buf b;
        buf_init(&b);
        assert_int_equal(chat_wire_string(&b, bad[i]), -1);
        Chat__V1__GhostTyping g = CHAT__V1__GHOST_TYPING__INIT;
        g.user_id = "u";
        g.text = (char *)bad[i];
        Chat__V1__Delivery d = CHAT__V1__DELIVERY__INIT;
        d.event_case = CHAT__V1__DELIVERY__EVENT_GHOST_TYPING;
        d.ghost_typing = &g;
        const char *event;
        b.len = 0;
        assert_int_equal(chat_wire_delivery(&b, &d, NULL, &event), -1);
        assert_null(expected_delivery(&d)); /* jansson refuses them too */
        buf_cleanup(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presence),
        cmocka_unit_test(test_deliveries),
        cmocka_unit_test(test_not_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
