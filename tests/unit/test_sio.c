/* test_sio: Socket.IO v5 codec. Cases are the examples of
 * docs/protocol.md §3 and §5, written as they appear on the wire
 * (with the Engine.IO message digit '4' in front, which the driver strips).
 * Inputs are copied into exact-size heap blocks so ASan catches over-reads. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "socketio/sio.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* Bytes given with their length, so they may hold NUL. */
struct bytes {
    const char *p;
    size_t n;
};
#define B(s)                                                                                                 \
    {                                                                                                        \
        s, sizeof(s) - 1                                                                                     \
    }

#define PH(k) "{\"_placeholder\":true,\"num\":" #k "}"

static char *heap_copy(const void *p, size_t n)
{
    char *c = xmalloc(n);
    if (n)
        memcpy(c, p, n);
    return c;
}

/* Compact dump of data, or "" for NULL; the caller frees it. */
static char *dump(const json_t *data)
{
    if (!data)
        return xstrdup("");
    char *s = json_dumps(data, JSON_COMPACT);
    assert_non_null(s);
    return s;
}

static void expect_json(const char *name, const json_t *data, const char *want)
{
    char *got = dump(data);
    if (strcmp(got, want ? want : "") != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s: payload %s, want %s", name, got, want ? want : "(none)");
        free(got);
        fail_msg("%s", msg);
    }
    free(got);
}

/* ---- sio_decode ---- */

struct dec_case {
    struct bytes in; /* the Engine.IO message text: '4' + Socket.IO packet */
    int ok;
    enum sio_type type;
    const char *nsp;
    int64_t ack;
    int att;
    const char *json;  /* compact payload, NULL when absent */
    const char *canon; /* what sio_encode gives back, NULL when the same as in */
};

#define OK(in, type, nsp, ack, att, json)                                                                    \
    {                                                                                                        \
        B(in), 1, type, nsp, ack, att, json, NULL                                                            \
    }
#define OKC(in, type, nsp, ack, att, json, canon)                                                            \
    {                                                                                                        \
        B(in), 1, type, nsp, ack, att, json, canon                                                           \
    }
#define BAD(in)                                                                                              \
    {                                                                                                        \
        B(in), 0, 0, NULL, 0, 0, NULL, NULL                                                                  \
    }

static const struct dec_case dec_cases[] = {
    /* §3.1, §3.3 CONNECT */
    OK("40", SIO_CONNECT, "/", -1, 0, NULL),
    OK("40{\"token\":\"abc123\"}", SIO_CONNECT, "/", -1, 0, "{\"token\":\"abc123\"}"),
    OK("40{\"token\":\"bad\"}", SIO_CONNECT, "/", -1, 0, "{\"token\":\"bad\"}"),
    OK("40{}", SIO_CONNECT, "/", -1, 0, "{}"),
    OK("40/admin,", SIO_CONNECT, "/admin", -1, 0, NULL),
    OK("40/admin,{\"token\":\"x\"}", SIO_CONNECT, "/admin", -1, 0, "{\"token\":\"x\"}"),
    OK("40/nope,{\"token\":\"abc123\"}", SIO_CONNECT, "/nope", -1, 0, "{\"token\":\"abc123\"}"),
    OKC("40/custom", SIO_CONNECT, "/custom", -1, 0, NULL, "40/custom,"),
    OKC("40/random", SIO_CONNECT, "/random", -1, 0, NULL, "40/random,"),
    OKC("40/", SIO_CONNECT, "/", -1, 0, NULL, "40"),
    OKC("40/,{\"a\":1}", SIO_CONNECT, "/", -1, 0, "{\"a\":1}", "40{\"a\":1}"),
    /* §3.9: key order is kept */
    OK("40{\"pid\":\"YHcX\",\"offset\":\"MzUPkW0\",\"token\":\"abc123\"}", SIO_CONNECT, "/", -1, 0,
       "{\"pid\":\"YHcX\",\"offset\":\"MzUPkW0\",\"token\":\"abc123\"}"),
    OK("40/caf\xc3\xa9,", SIO_CONNECT, "/caf\xc3\xa9", -1, 0, NULL),
    OK("40/\xf0\x9f\x98\x80,", SIO_CONNECT, "/\xf0\x9f\x98\x80", -1, 0, NULL),
    /* §3.6 DISCONNECT */
    OK("41", SIO_DISCONNECT, "/", -1, 0, NULL),
    OK("41/admin,", SIO_DISCONNECT, "/admin", -1, 0, NULL),
    OKC("41/custom", SIO_DISCONNECT, "/custom", -1, 0, NULL, "41/custom,"),
    /* §3.1, §3.4, §5 EVENT */
    OK("42[\"chat\",\"hi\"]", SIO_EVENT, "/", -1, 0, "[\"chat\",\"hi\"]"),
    OK("42[\"chat\",{\"text\":\"hi\"}]", SIO_EVENT, "/", -1, 0, "[\"chat\",{\"text\":\"hi\"}]"),
    OK("420[\"chat\",\"hi\"]", SIO_EVENT, "/", 0, 0, "[\"chat\",\"hi\"]"),
    OK("420[\"question\",\"q1\"]", SIO_EVENT, "/", 0, 0, "[\"question\",\"q1\"]"),
    OK("42/admin,[\"name\"]", SIO_EVENT, "/admin", -1, 0, "[\"name\"]"),
    OK("4212[\"name\"]", SIO_EVENT, "/", 12, 0, "[\"name\"]"),
    OK("42/admin,12[\"name\"]", SIO_EVENT, "/admin", 12, 0, "[\"name\"]"),
    OK("42/admin,0[\"name\"]", SIO_EVENT, "/admin", 0, 0, "[\"name\"]"),
    OK("42/room,7[\"chat\",\"hi\"]", SIO_EVENT, "/room", 7, 0, "[\"chat\",\"hi\"]"),
    OK("42[\"welcome\",{\"user\":\"alice\"}]", SIO_EVENT, "/", -1, 0, "[\"welcome\",{\"user\":\"alice\"}]"),
    OK("42[\"kick\"]", SIO_EVENT, "/", -1, 0, "[\"kick\"]"),
    OK("42[\"foo\",\"MzUPkW0\"]", SIO_EVENT, "/", -1, 0, "[\"foo\",\"MzUPkW0\"]"),
    OK("42[\"message-back\",1,\"2\",{\"3\":[true]}]", SIO_EVENT, "/", -1, 0,
       "[\"message-back\",1,\"2\",{\"3\":[true]}]"),
    OK("42[1,\"x\"]", SIO_EVENT, "/", -1, 0, "[1,\"x\"]"),
    OK("42[1.5]", SIO_EVENT, "/", -1, 0, "[1.5]"),
    /* jansson writes \u001E; JSON does not care about the case */
    OKC("42[\"caf\xc3\xa9\",\"\\u001e\"]", SIO_EVENT, "/", -1, 0, "[\"caf\xc3\xa9\",\"\\u001E\"]",
        "42[\"caf\xc3\xa9\",\"\\u001E\"]"),
    OK("42[\"connected\"]", SIO_EVENT, "/", -1, 0, "[\"connected\"]"),
    OK("42[\"Connect\"]", SIO_EVENT, "/", -1, 0, "[\"Connect\"]"),
    OK("42999999999999999[\"x\"]", SIO_EVENT, "/", 999999999999999LL, 0, "[\"x\"]"),
    OKC("42007[\"x\"]", SIO_EVENT, "/", 7, 0, "[\"x\"]", "427[\"x\"]"),
    OKC("42 [\"x\"] ", SIO_EVENT, "/", -1, 0, "[\"x\"]", "42[\"x\"]"),
    /* §3.4 ACK */
    OK("4312[\"result\"]", SIO_ACK, "/", 12, 0, "[\"result\"]"),
    OK("43/admin,13[\"bar\"]", SIO_ACK, "/admin", 13, 0, "[\"bar\"]"),
    OK("43456[1,\"2\",{\"3\":[false]}]", SIO_ACK, "/", 456, 0, "[1,\"2\",{\"3\":[false]}]"),
    OK("430[{\"ok\":true}]", SIO_ACK, "/", 0, 0, "[{\"ok\":true}]"),
    OK("430[\"answer-q1\"]", SIO_ACK, "/", 0, 0, "[\"answer-q1\"]"),
    OK("43/room,7[{\"ok\":true}]", SIO_ACK, "/room", 7, 0, "[{\"ok\":true}]"),
    OK("43/room,7[]", SIO_ACK, "/room", 7, 0, "[]"),
    /* §3.5 BINARY_EVENT / BINARY_ACK */
    OK("451-[\"file\"," PH(0) "]", SIO_BINARY_EVENT, "/", -1, 1, "[\"file\"," PH(0) "]"),
    OK("452-[\"message\"," PH(0) "," PH(1) "]", SIO_BINARY_EVENT, "/", -1, 2,
       "[\"message\"," PH(0) "," PH(1) "]"),
    OK("451-/admin,3[\"up\",{\"f\":" PH(0) "}]", SIO_BINARY_EVENT, "/admin", 3, 1,
       "[\"up\",{\"f\":" PH(0) "}]"),
    OK("4510-[\"ten\"]", SIO_BINARY_EVENT, "/", -1, 10, "[\"ten\"]"),
    OK("461-15[" PH(0) "]", SIO_BINARY_ACK, "/", 15, 1, "[" PH(0) "]"),
    OK("462-789[" PH(0) "," PH(1) "]", SIO_BINARY_ACK, "/", 789, 2, "[" PH(0) "," PH(1) "]"),
    OK("461-/admin,0[]", SIO_BINARY_ACK, "/admin", 0, 1, "[]"),
    OKC("4501-[\"x\"]", SIO_BINARY_EVENT, "/", -1, 1, "[\"x\"]", "451-[\"x\"]"),

    /* §3.2, §3.7 malformed: type */
    BAD("4"),
    BAD("4abc"),
    BAD("47"),
    BAD("48[\"x\"]"),
    BAD("4-1"),
    BAD("4 2[\"x\"]"),
    /* CONNECT_ERROR is only ever sent by the server (§3.2) */
    BAD("44abc"),
    BAD("44{\"message\":\"x\"}"),
    BAD("44/admin,{\"message\":\"x\"}"),
    BAD("44/random,{\"message\":\"Invalid namespace\"}"),
    /* CONNECT shape */
    BAD("40[]"),
    BAD("40[\"x\"]"),
    BAD("40\"x\""),
    BAD("401"),
    BAD("40true"),
    BAD("40{\"a\":1,\"a\":2}"),
    BAD("40{"),
    BAD("40{}x"),
    BAD("40{}{}"),
    BAD("40admin,"),
    BAD("40admin,{}"),
    BAD("401{}"),
    BAD("40/admin,1{}"),
    /* namespace characters */
    BAD("40/a\x01,"),
    BAD("40/a\x00"
        "b,"),
    BAD("40/a\x1e"
        "b,"),
    BAD("40/a\x7f,"),
    BAD("40/\xff,"),
    BAD("40/\xc0\xaf,"),
    BAD("40/\xe0\x80\xaf,"),
    BAD("40/\xf0\x80\x80\xaf,"),
    BAD("40/\xed\xa0\x80,"),
    BAD("40/\xf4\x90\x80\x80,"),
    BAD("40/\xe2\x82,"),
    BAD("40/\xe2\x82"),
    /* DISCONNECT takes nothing */
    BAD("41{}"),
    BAD("41/admin,{}"),
    BAD("41/admin,[\"x\"]"),
    BAD("411"),
    BAD("41[]"),
    /* EVENT shape */
    BAD("42{}"),
    BAD("42abc[\"m\"]"),
    BAD("42abc[\"chat\",\"hi\"]"),
    BAD("42"),
    BAD("421"),
    BAD("42/admin,"),
    BAD("42/admin"),
    BAD("42/admin[\"x\"]"),
    BAD("42[]"),
    BAD("42[{}]"),
    BAD("42[[\"x\"]]"),
    BAD("42[null]"),
    BAD("42[true]"),
    BAD("42\"x\""),
    BAD("42 "),
    BAD("42[\"chat\"]x"),
    BAD("42[\"chat\"][\"x\"]"),
    /* "\u0000" is valid JSON: decoded (users go by json_string_length). */
    OK("42[\"\\u0000\"]", SIO_EVENT, "/", -1, 0, "[\"\\u0000\"]"),
    OK("42[\"m\",\"a\\u0000b\"]", SIO_EVENT, "/", -1, 0, "[\"m\",\"a\\u0000b\"]"),
    BAD("42[\"x\",01]"),
    BAD("42[\"x\",]"),
    BAD("42['x']"),
    BAD("42[\"x\",NaN]"),
    BAD("42[\"\xff\"]"),
    BAD("42[\"a\tb\"]"),
    BAD("42[\"x\",100000000000000000000]"),
    BAD("42/admin,{}"),
    /* reserved event names (§3.2) */
    BAD("42[\"connect\"]"),
    BAD("42[\"connect_error\",{}]"),
    BAD("42[\"disconnect\"]"),
    BAD("42[\"disconnecting\"]"),
    BAD("42[\"newListener\",\"x\"]"),
    BAD("42[\"removeListener\"]"),
    BAD("42/admin,[\"disconnect\"]"),
    BAD("4212[\"connect\"]"),
    BAD("451-[\"connect\"," PH(0) "]"),
    /* ack id */
    BAD("421234567890123456[\"x\"]"),
    BAD("420000000000000000[\"x\"]"),
    BAD("42/admin,1234567890123456[\"x\"]"),
    /* ACK shape */
    BAD("43"),
    BAD("43[\"x\"]"),
    BAD("43/admin,[\"x\"]"),
    BAD("4312"),
    BAD("4312{}"),
    BAD("4312\"x\""),
    /* attachment header (§3.5) */
    BAD("45[\"x\"]"),
    BAD("451[\"x\"]"),
    BAD("45-[\"x\"]"),
    BAD("450-[\"x\"]"),
    BAD("4511-[\"x\"]"),
    BAD("4599999999999999999999-[\"x\"]"),
    BAD("45x-[\"x\"]"),
    BAD("451-"),
    BAD("451-{}"),
    BAD("451-[]"),
    BAD("46[" PH(0) "]"),
    BAD("461-[" PH(0) "]"),
    BAD("461-15{}"),
    BAD("45/admin,1-[\"x\"]"),
    /* a '-' header on a non-binary type */
    BAD("421-[\"x\"]"),
    BAD("42-[\"x\"]"),
    BAD("401-"),
    BAD("411-"),
    BAD("431-1[]"),
};

static void check_decoded(const struct dec_case *c, const struct sio_packet *p)
{
    const char *name = c->in.p;
    if (p->type != c->type)
        fail_msg("%s: type %d, want %d", name, p->type, c->type);
    if (strcmp(p->nsp, c->nsp) != 0)
        fail_msg("%s: nsp '%s', want '%s'", name, p->nsp, c->nsp);
    if (p->ack_id != c->ack)
        fail_msg("%s: ack %lld, want %lld", name, (long long)p->ack_id, (long long)c->ack);
    if (p->attachments != c->att)
        fail_msg("%s: attachments %d, want %d", name, p->attachments, c->att);
    if (p->natt != 0)
        fail_msg("%s: natt %d", name, p->natt);
    expect_json(name, p->data, c->json);
}

static void test_decode(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ELEMS(dec_cases); i++) {
        const struct dec_case *c = &dec_cases[i];
        assert_true(c->in.n >= 1 && c->in.p[0] == '4');
        char *in = heap_copy(c->in.p + 1, c->in.n - 1);
        struct sio_packet p;
        const char *err = NULL;
        int rc = sio_decode(&p, in, c->in.n - 1, &err);
        free(in); /* nothing in the packet points into the input */
        if (!c->ok) {
            if (rc != -1)
                fail_msg("case %zu '%s': decoded, want error", i, c->in.p);
            if (!err || !*err)
                fail_msg("case %zu '%s': no error text", i, c->in.p);
            /* a failed decode owns nothing, and cleanup is harmless */
            assert_null(p.data);
            assert_int_equal(p.natt, 0);
            sio_packet_cleanup(&p);
            continue;
        }
        if (rc != 0)
            fail_msg("case %zu '%s': error '%s'", i, c->in.p, err);
        check_decoded(c, &p);
        sio_packet_cleanup(&p);
        /* cleanup leaves an empty packet; a second one is harmless */
        assert_null(p.data);
        assert_string_equal(p.nsp, "/");
        sio_packet_cleanup(&p);
    }
    sio_packet_cleanup(NULL);
}

/* Every decodable case encodes back to its canonical text, which decodes to
 * the same packet again. */
static void test_decode_encode_roundtrip(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ELEMS(dec_cases); i++) {
        const struct dec_case *c = &dec_cases[i];
        if (!c->ok)
            continue;
        struct sio_packet p;
        const char *err = NULL;
        assert_int_equal(sio_decode(&p, c->in.p + 1, c->in.n - 1, &err), 0);
        struct buf out;
        buf_init(&out);
        buf_putc(&out, '4'); /* the Engine.IO message digit; sio_encode appends */
        sio_encode(&out, p.type, p.nsp, p.ack_id, p.attachments, p.data);
        const char *want = c->canon ? c->canon : c->in.p;
        if (out.len != strlen(want) || memcmp(out.data, want, out.len) != 0)
            fail_msg("'%s': encoded '%s', want '%s'", c->in.p, buf_cstr(&out), want);
        struct sio_packet q;
        assert_int_equal(sio_decode(&q, out.data + 1, out.len - 1, &err), 0);
        check_decoded(c, &q);
        assert_true(json_equal(p.data, q.data) || (!p.data && !q.data));
        sio_packet_cleanup(&q);
        sio_packet_cleanup(&p);
        buf_cleanup(&out);
    }
}

/* Every prefix of every valid packet, and every byte of a few packets
 * replaced by every value: decodes or fails, never crashes or over-reads. */
static void test_decode_prefixes_and_mutations(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ELEMS(dec_cases); i++) {
        const struct dec_case *c = &dec_cases[i];
        if (!c->ok)
            continue;
        for (size_t n = 0; n < c->in.n - 1; n++) {
            char *in = heap_copy(c->in.p + 1, n);
            struct sio_packet p;
            const char *err = NULL;
            int rc = sio_decode(&p, in, n, &err);
            if (rc == 0) {
                assert_true(p.type >= SIO_CONNECT && p.type <= SIO_BINARY_ACK);
                assert_true(p.nsp[0] == '/' && strlen(p.nsp) <= SIO_MAX_NSP);
            } else {
                assert_int_equal(rc, -1);
                assert_non_null(err);
            }
            sio_packet_cleanup(&p);
            free(in);
        }
    }
    static const char *const seeds[] = {
        "51-/admin,3[\"up\",{\"f\":" PH(0) "}]",
        "0/admin,{\"token\":\"x\"}",
        "3/room,7[{\"ok\":true}]",
    };
    for (size_t s = 0; s < N_ELEMS(seeds); s++) {
        size_t n = strlen(seeds[s]);
        for (size_t pos = 0; pos < n; pos++) {
            for (int v = 0; v < 256; v++) {
                char *in = heap_copy(seeds[s], n);
                in[pos] = (char)v;
                struct sio_packet p;
                const char *err = NULL;
                if (sio_decode(&p, in, n, &err) == 0)
                    assert_true(strlen(p.nsp) <= SIO_MAX_NSP);
                sio_packet_cleanup(&p);
                free(in);
            }
        }
    }
}

static void test_decode_nsp_length(void **state)
{
    (void)state;
    static const struct {
        size_t nsp_len; /* including the '/' */
        const char *tail;
        int ok;
    } cases[] = {
        {SIO_MAX_NSP, ",", 1},
        {SIO_MAX_NSP, "", 1},
        {SIO_MAX_NSP, ",{\"a\":1}", 1},
        {SIO_MAX_NSP + 1, ",", 0},
        {SIO_MAX_NSP + 1, "", 0},
        {SIO_MAX_NSP + 1, ",{\"a\":1}", 0},
        {1000, ",", 0},
        {100000, "", 0},
        {1, ",", 1},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct buf in;
        buf_init(&in);
        buf_puts(&in, "0/");
        for (size_t k = 1; k < cases[i].nsp_len; k++)
            buf_putc(&in, (char)('a' + k % 26));
        buf_puts(&in, cases[i].tail);
        char *copy = heap_copy(in.data, in.len);
        struct sio_packet p;
        const char *err = NULL;
        int rc = sio_decode(&p, copy, in.len, &err);
        if (rc != (cases[i].ok ? 0 : -1))
            fail_msg("nsp length %zu tail '%s': rc %d", cases[i].nsp_len, cases[i].tail, rc);
        if (cases[i].ok) {
            assert_int_equal(strlen(p.nsp), cases[i].nsp_len);
            assert_memory_equal(p.nsp, in.data + 1, cases[i].nsp_len);
        }
        sio_packet_cleanup(&p);
        free(copy);
        buf_cleanup(&in);
    }
}

/* ---- sio_encode ---- */

struct enc_case {
    enum sio_type type;
    const char *nsp;
    int64_t ack;
    int att;
    const char *json; /* NULL: no payload */
    const char *want; /* with the Engine.IO '4' in front */
    int decodes;      /* 0: sio_decode must refuse it (server-only type) */
};

static const struct enc_case enc_cases[] = {
    {SIO_EVENT, "/", -1, 0, "[\"message-back\",1,\"2\",{\"3\":[true]}]",
     "42[\"message-back\",1,\"2\",{\"3\":[true]}]", 1},
    {SIO_ACK, "/", 456, 0, "[1,\"2\",{\"3\":[false]}]", "43456[1,\"2\",{\"3\":[false]}]", 1},
    {SIO_BINARY_ACK, "/", 789, 2, "[" PH(0) "," PH(1) "]", "462-789[" PH(0) "," PH(1) "]", 1},
    {SIO_CONNECT_ERROR, "/random", -1, 0, "{\"message\":\"Invalid namespace\"}",
     "44/random,{\"message\":\"Invalid namespace\"}", 0},
    {SIO_CONNECT, "/", -1, 0, "{\"sid\":\"x\"}", "40{\"sid\":\"x\"}", 1},
    /* §3.3, §5 */
    {SIO_CONNECT, "/", -1, 0, "{\"sid\":\"wZX3oN0bSVIhsaknAAAI\"}", "40{\"sid\":\"wZX3oN0bSVIhsaknAAAI\"}",
     1},
    {SIO_CONNECT, "/admin", -1, 0, "{\"sid\":\"y\"}", "40/admin,{\"sid\":\"y\"}", 1},
    {SIO_CONNECT, "/", -1, 0, "{\"sid\":\"GNpW\",\"pid\":\"YHcX\"}", "40{\"sid\":\"GNpW\",\"pid\":\"YHcX\"}",
     1},
    {SIO_CONNECT_ERROR, "/", -1, 0, "{\"message\":\"unauthorized\",\"data\":{\"code\":\"BAD_TOKEN\"}}",
     "44{\"message\":\"unauthorized\",\"data\":{\"code\":\"BAD_TOKEN\"}}", 0},
    {SIO_CONNECT_ERROR, "/nope", -1, 0, "{\"message\":\"Invalid namespace\"}",
     "44/nope,{\"message\":\"Invalid namespace\"}", 0},
    {SIO_DISCONNECT, "/", -1, 0, NULL, "41", 1},
    {SIO_DISCONNECT, "/admin", -1, 0, NULL, "41/admin,", 1},
    {SIO_CONNECT, "/admin", -1, 0, NULL, "40/admin,", 1},
    {SIO_EVENT, "/", -1, 0, "[\"welcome\",{\"user\":\"alice\"}]", "42[\"welcome\",{\"user\":\"alice\"}]", 1},
    {SIO_EVENT, "/", 0, 0, "[\"question\",\"q1\"]", "420[\"question\",\"q1\"]", 1},
    {SIO_EVENT, "/room", 7, 0, "[\"chat\",\"hi\"]", "42/room,7[\"chat\",\"hi\"]", 1},
    {SIO_ACK, "/", 0, 0, "[{\"ok\":true}]", "430[{\"ok\":true}]", 1},
    {SIO_ACK, "/room", 7, 0, "[]", "43/room,7[]", 1},
    {SIO_ACK, "/admin", 13, 0, "[\"bar\"]", "43/admin,13[\"bar\"]", 1},
    {SIO_BINARY_EVENT, "/", -1, 1, "[\"file\"," PH(0) "]", "451-[\"file\"," PH(0) "]", 1},
    {SIO_BINARY_EVENT, "/admin", 3, 10, "[\"ten\"]", "4510-/admin,3[\"ten\"]", 1},
    {SIO_EVENT, "/", 999999999999999LL, 0, "[\"x\"]", "42999999999999999[\"x\"]", 1},
    /* UTF-8 is written as is, '/' is not escaped, control characters are */
    {SIO_EVENT, "/", -1, 0, "[\"caf\xc3\xa9\",\"a/b\",\"\\u001e\"]",
     "42[\"caf\xc3\xa9\",\"a/b\",\"\\u001E\"]", 1},
};

static void test_encode(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ELEMS(enc_cases); i++) {
        const struct enc_case *c = &enc_cases[i];
        json_t *data = NULL;
        if (c->json) {
            json_error_t e;
            data = json_loads(c->json, JSON_REJECT_DUPLICATES, &e);
            if (!data)
                fail_msg("case %zu: bad test JSON: %s", i, e.text);
        }
        struct buf out;
        buf_init(&out);
        buf_putc(&out, '4');
        sio_encode(&out, c->type, c->nsp, c->ack, c->att, data);
        if (out.len != strlen(c->want) || memcmp(out.data, c->want, out.len) != 0)
            fail_msg("case %zu: encoded '%s', want '%s'", i, buf_cstr(&out), c->want);

        struct sio_packet p;
        const char *err = NULL;
        int rc = sio_decode(&p, out.data + 1, out.len - 1, &err);
        if (!c->decodes) {
            if (rc != -1)
                fail_msg("'%s': decoded, want refusal", c->want);
        } else {
            if (rc != 0)
                fail_msg("'%s': decode error '%s'", c->want, err);
            assert_int_equal(p.type, c->type);
            assert_string_equal(p.nsp, c->nsp);
            assert_int_equal(p.ack_id, c->ack);
            assert_int_equal(p.attachments, c->att);
            assert_true(data ? json_equal(data, p.data) : p.data == NULL);
            sio_packet_cleanup(&p);
        }
        json_decref(data);
        buf_cleanup(&out);
    }
}

/* Objects built in code keep their insertion order on the wire. */
static void test_encode_key_order(void **state)
{
    (void)state;
    json_t *o = json_object();
    json_object_set_new(o, "sid", json_string("a"));
    json_object_set_new(o, "pid", json_string("b"));
    json_t *arr = json_array();
    json_t *z = json_object();
    json_object_set_new(z, "z", json_integer(1));
    json_object_set_new(z, "a", json_integer(2));
    json_object_set_new(z, "m", json_null());
    json_array_append_new(arr, json_string("ev"));
    json_array_append_new(arr, z);

    struct buf out;
    buf_init(&out);
    sio_encode(&out, SIO_CONNECT, "/", -1, 0, o);
    assert_string_equal(buf_cstr(&out), "0{\"sid\":\"a\",\"pid\":\"b\"}");
    out.len = 0;
    sio_encode(&out, SIO_EVENT, "/chat", 42, 0, arr);
    assert_string_equal(buf_cstr(&out), "2/chat,42[\"ev\",{\"z\":1,\"a\":2,\"m\":null}]");
    buf_cleanup(&out);
    json_decref(o);
    json_decref(arr);
}

/* ---- sio_check_placeholders ---- */

static void test_check_placeholders(void **state)
{
    (void)state;
    static const struct {
        const char *json; /* NULL: no payload */
        int n;
        int rc;
    } cases[] = {
        {"[\"file\"," PH(0) "]", 1, 0},
        {"[\"file\"," PH(0) "]", 0, -1}, /* out of range */
        {"[\"file\"," PH(0) "]", 2, -1}, /* attachment 1 unused */
        {"[\"message\"," PH(0) "," PH(1) "]", 2, 0},
        {"[\"message\"," PH(1) "," PH(0) "]", 2, 0},       /* any order */
        {"[{\"a\":[{\"b\":" PH(1) "}]}," PH(0) "]", 2, 0}, /* any depth */
        {"{\"k\":" PH(0) "}", 1, 0},
        {"[" PH(0) "," PH(0) "]", 1, 0}, /* used twice */
        {"[" PH(1) "]", 1, -1},
        {"[" PH(-1) "]", 1, -1},
        {"[" PH(10) "]", 10, -1},
        {"[" PH(4294967296) "]", 1, -1}, /* no truncation to int */
        {"[" PH(0.0) "]", 1, -1},        /* not an integer */
        {"[{\"_placeholder\":true,\"num\":\"0\"}]", 1, -1},
        {"[{\"_placeholder\":true}]", 1, -1},
        {"[{\"_placeholder\":true,\"num\":null}]", 1, -1},
        {"[{\"_placeholder\":true,\"num\":0,\"x\":1}]", 1, 0}, /* other keys are ignored */
        {"[{\"num\":0,\"_placeholder\":true}]", 1, 0},
        {"[{\"_placeholder\":false,\"num\":0}]", 0, 0}, /* not a placeholder */
        {"[{\"_placeholder\":1,\"num\":0}]", 0, 0},     /* only true counts */
        {"[{\"_placeholder\":\"true\",\"num\":0}]", 0, 0},
        {"[{\"_placeholder\":false,\"num\":0}]", 1, -1}, /* so attachment 0 is unused */
        {"[\"x\"]", 0, 0},
        {"[]", 0, 0},
        {"{}", 0, 0},
        {"[\"x\"]", 1, -1},
        {"[\"x\"]", SIO_MAX_ATTACHMENTS + 1, -1},
        {"[\"x\"]", -1, -1},
        {NULL, 0, 0},
        {NULL, 1, -1},
        {"[" PH(0) "," PH(1) "," PH(2) "," PH(3) "," PH(4) "," PH(5) "," PH(6) "," PH(7) "," PH(8) "," PH(
             9) "]",
         10, 0},
        {"[" PH(0) "," PH(1) "," PH(2) "," PH(3) "," PH(4) "," PH(5) "," PH(6) "," PH(7) "," PH(9) "]", 10,
         -1},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        json_t *data = NULL;
        if (cases[i].json) {
            json_error_t e;
            data = json_loads(cases[i].json, 0, &e);
            if (!data)
                fail_msg("case %zu: bad test JSON: %s", i, e.text);
        }
        int rc = sio_check_placeholders(data, cases[i].n);
        if (rc != cases[i].rc)
            fail_msg("case %zu %s n=%d: rc %d, want %d", i, cases[i].json ? cases[i].json : "(null)",
                     cases[i].n, rc, cases[i].rc);
        json_decref(data);
    }
}

/* ---- sio_rx ---- */

#define MAX_STEPS 5

struct rx_step {
    int binary;
    struct bytes in; /* the Engine.IO message payload (no '4' for text) */
    int rc;
};

struct rx_case {
    const char *name;
    size_t nsteps;
    struct rx_step steps[MAX_STEPS];
    /* the last packet returned */
    enum sio_type type;
    const char *nsp;
    int64_t ack;
    const char *json;
    int natt;
    struct bytes att[3];
};

#define T(s, rc)                                                                                             \
    {                                                                                                        \
        0, B(s), rc                                                                                          \
    }
#define BIN(s, rc)                                                                                           \
    {                                                                                                        \
        1, B(s), rc                                                                                          \
    }

static const struct rx_case rx_cases[] = {
    /* §5.1 */
    {"file",
     2,
     {T("51-[\"file\"," PH(0) "]", SIO_RX_MORE), BIN("\x01\x02\x03", SIO_RX_PACKET)},
     SIO_BINARY_EVENT,
     "/",
     -1,
     "[\"file\"," PH(0) "]",
     1,
     {B("\x01\x02\x03")}},
    /* §3.5 */
    {"two attachments",
     3,
     {T("52-[\"message\"," PH(0) "," PH(1) "]", SIO_RX_MORE), BIN("\x01\x02\x03", SIO_RX_MORE),
      BIN("\x04\x05\x06", SIO_RX_PACKET)},
     SIO_BINARY_EVENT,
     "/",
     -1,
     "[\"message\"," PH(0) "," PH(1) "]",
     2,
     {B("\x01\x02\x03"), B("\x04\x05\x06")}},
    {"binary ack",
     3,
     {T("62-789[" PH(0) "," PH(1) "]", SIO_RX_MORE), BIN("\x01\x02\x03", SIO_RX_MORE),
      BIN("\x04\x05\x06", SIO_RX_PACKET)},
     SIO_BINARY_ACK,
     "/",
     789,
     "[" PH(0) "," PH(1) "]",
     2,
     {B("\x01\x02\x03"), B("\x04\x05\x06")}},
    {"binary ack §3.1",
     2,
     {T("61-15[" PH(0) "]", SIO_RX_MORE), BIN("\x00", SIO_RX_PACKET)},
     SIO_BINARY_ACK,
     "/",
     15,
     "[" PH(0) "]",
     1,
     {B("\x00")}},
    {"namespace, nested, empty attachment",
     2,
     {T("51-/admin,3[\"up\",{\"f\":" PH(0) "}]", SIO_RX_MORE), BIN("", SIO_RX_PACKET)},
     SIO_BINARY_EVENT,
     "/admin",
     3,
     "[\"up\",{\"f\":" PH(0) "}]",
     1,
     {B("")}},
    {"attachments in reverse num order",
     3,
     {T("52-[\"m\"," PH(1) "," PH(0) "]", SIO_RX_MORE), BIN("A", SIO_RX_MORE), BIN("B", SIO_RX_PACKET)},
     SIO_BINARY_EVENT,
     "/",
     -1,
     "[\"m\"," PH(1) "," PH(0) "]",
     2,
     {B("A"), B("B")}},
    {"text event",
     1,
     {T("2[\"chat\",\"hi\"]", SIO_RX_PACKET)},
     SIO_EVENT,
     "/",
     -1,
     "[\"chat\",\"hi\"]",
     0,
     {{0}}},
    {"connect",
     1,
     {T("0{\"token\":\"abc123\"}", SIO_RX_PACKET)},
     SIO_CONNECT,
     "/",
     -1,
     "{\"token\":\"abc123\"}",
     0,
     {{0}}},
    {"event, binary, event",
     4,
     {T("2[\"a\"]", SIO_RX_PACKET), T("51-[\"b\"," PH(0) "]", SIO_RX_MORE), BIN("\xff", SIO_RX_PACKET),
      T("3/admin,1[]", SIO_RX_PACKET)},
     SIO_ACK,
     "/admin",
     1,
     "[]",
     0,
     {{0}}},
    {"two binary packets",
     4,
     {T("51-[\"a\"," PH(0) "]", SIO_RX_MORE), BIN("1", SIO_RX_PACKET), T("51-[\"b\"," PH(0) "]", SIO_RX_MORE),
      BIN("2", SIO_RX_PACKET)},
     SIO_BINARY_EVENT,
     "/",
     -1,
     "[\"b\"," PH(0) "]",
     1,
     {B("2")}},
    /* §3.5: only types 5/6 carry attachments; in a plain ACK or EVENT a
     * placeholder-shaped object is data, passed on as is (found by fuzz_sio) */
    {"placeholder-shaped data in a plain ack",
     1,
     {T("307[" PH(5) "]", SIO_RX_PACKET)},
     SIO_ACK,
     "/",
     7,
     "[" PH(5) "]",
     0,
     {{0}}},
    {"placeholder-shaped data in a plain event",
     1,
     {T("2[\"x\"," PH(0) "]", SIO_RX_PACKET)},
     SIO_EVENT,
     "/",
     -1,
     "[\"x\"," PH(0) "]",
     0,
     {{0}}},
    /* errors (§3.5, §3.7) */
    {"binary with no header", 1, {BIN("\x01\x02\x03", SIO_RX_ERROR)}, 0, NULL, 0, NULL, 0, {{0}}},
    {"binary after a complete packet",
     3,
     {T("51-[\"f\"," PH(0) "]", SIO_RX_MORE), BIN("\x01", SIO_RX_PACKET), BIN("\x02", SIO_RX_ERROR)},
     0,
     NULL,
     0,
     NULL,
     0,
     {{0}}},
    {"binary after a text packet",
     2,
     {T("2[\"a\"]", SIO_RX_PACKET), BIN("\x02", SIO_RX_ERROR)},
     0,
     NULL,
     0,
     NULL,
     0,
     {{0}}},
    {"text while attachments pending",
     2,
     {T("51-[\"f\"," PH(0) "]", SIO_RX_MORE), T("2[\"x\"]", SIO_RX_ERROR)},
     0,
     NULL,
     0,
     NULL,
     0,
     {{0}}},
    {"text while second attachment pending",
     3,
     {T("52-[\"f\"," PH(0) "," PH(1) "]", SIO_RX_MORE), BIN("\x01", SIO_RX_MORE),
      T("2[\"x\"]", SIO_RX_ERROR)},
     0,
     NULL,
     0,
     NULL,
     0,
     {{0}}},
    {"placeholder out of range",
     2,
     {T("51-[\"f\"," PH(1) "]", SIO_RX_MORE), BIN("\x01", SIO_RX_ERROR)},
     0,
     NULL,
     0,
     NULL,
     0,
     {{0}}},
    {"placeholder num a string",
     2,
     {T("51-[\"f\",{\"_placeholder\":true,\"num\":\"0\"}]", SIO_RX_MORE), BIN("\x01", SIO_RX_ERROR)},
     0,
     NULL,
     0,
     NULL,
     0,
     {{0}}},
    {"attachment unused",
     3,
     {T("52-[\"f\"," PH(0) "]", SIO_RX_MORE), BIN("\x01", SIO_RX_MORE), BIN("\x02", SIO_RX_ERROR)},
     0,
     NULL,
     0,
     NULL,
     0,
     {{0}}},
    {"no placeholder",
     2,
     {T("51-[\"f\"]", SIO_RX_MORE), BIN("\x01", SIO_RX_ERROR)},
     0,
     NULL,
     0,
     NULL,
     0,
     {{0}}},
    {"too many attachments", 1, {T("511-[\"f\"]", SIO_RX_ERROR)}, 0, NULL, 0, NULL, 0, {{0}}},
    {"binary type without header", 1, {T("5[\"f\"]", SIO_RX_ERROR)}, 0, NULL, 0, NULL, 0, {{0}}},
    {"malformed text", 1, {T("2{}", SIO_RX_ERROR)}, 0, NULL, 0, NULL, 0, {{0}}},
    {"garbage", 1, {T("abc", SIO_RX_ERROR)}, 0, NULL, 0, NULL, 0, {{0}}},
    {"reserved name", 1, {T("2[\"disconnect\"]", SIO_RX_ERROR)}, 0, NULL, 0, NULL, 0, {{0}}},
};

static void check_rx_packet(const struct rx_case *c, const struct sio_packet *p)
{
    if (p->type != c->type)
        fail_msg("%s: type %d, want %d", c->name, p->type, c->type);
    if (strcmp(p->nsp, c->nsp) != 0)
        fail_msg("%s: nsp '%s'", c->name, p->nsp);
    if (p->ack_id != c->ack)
        fail_msg("%s: ack %lld", c->name, (long long)p->ack_id);
    if (p->natt != c->natt || p->attachments != c->natt)
        fail_msg("%s: natt %d attachments %d, want %d", c->name, p->natt, p->attachments, c->natt);
    expect_json(c->name, p->data, c->json);
    for (int k = 0; k < c->natt; k++) {
        if (p->att[k].len != c->att[k].n || memcmp(p->att[k].data, c->att[k].p, c->att[k].n) != 0)
            fail_msg("%s: attachment %d differs", c->name, k);
    }
}

static void test_rx(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ELEMS(rx_cases); i++) {
        const struct rx_case *c = &rx_cases[i];
        struct sio_rx rx;
        sio_rx_init(&rx);
        int last = SIO_RX_MORE;
        for (size_t k = 0; k < c->nsteps; k++) {
            const struct rx_step *st = &c->steps[k];
            /* a heap copy freed right after the call: attachments are copies */
            char *in = heap_copy(st->in.p, st->in.n);
            struct sio_packet p;
            const char *err = NULL;
            int rc = sio_rx_feed(&rx, (const uint8_t *)in, st->in.n, st->binary, &p, &err);
            free(in);
            if (rc != st->rc)
                fail_msg("%s: step %zu returned %d, want %d (%s)", c->name, k, rc, st->rc,
                         rc == SIO_RX_ERROR ? err : "");
            if (rc == SIO_RX_ERROR && (!err || !*err))
                fail_msg("%s: step %zu: no error text", c->name, k);
            if (rc == SIO_RX_PACKET) {
                if (k == c->nsteps - 1)
                    check_rx_packet(c, &p);
                sio_packet_cleanup(&p);
            }
            last = rc;
        }
        assert_int_equal(rx.pending != NULL, last == SIO_RX_MORE);
        /* after anything, including an error, a fresh packet goes through */
        if (last != SIO_RX_MORE) {
            struct sio_packet p;
            const char *err = NULL;
            const char *hdr = "51-[\"z\"," PH(0) "]";
            assert_int_equal(sio_rx_feed(&rx, (const uint8_t *)hdr, strlen(hdr), 0, &p, &err), SIO_RX_MORE);
            assert_int_equal(sio_rx_feed(&rx, (const uint8_t *)"z", 1, 1, &p, &err), SIO_RX_PACKET);
            assert_int_equal(p.natt, 1);
            assert_memory_equal(p.att[0].data, "z", 1);
            sio_packet_cleanup(&p);
        }
        sio_rx_cleanup(&rx);
    }
}

/* Cleanup with a packet half received frees it (LeakSanitizer checks). */
static void test_rx_cleanup_pending(void **state)
{
    (void)state;
    struct sio_rx rx;
    struct sio_packet p;
    const char *err = NULL;
    const char *hdr = "53-[\"f\"," PH(0) "," PH(1) "," PH(2) "]";
    sio_rx_init(&rx);
    assert_int_equal(sio_rx_feed(&rx, (const uint8_t *)hdr, strlen(hdr), 0, &p, &err), SIO_RX_MORE);
    assert_int_equal(sio_rx_feed(&rx, (const uint8_t *)"abc", 3, 1, &p, &err), SIO_RX_MORE);
    assert_int_equal(sio_rx_feed(&rx, (const uint8_t *)"def", 3, 1, &p, &err), SIO_RX_MORE);
    assert_non_null(rx.pending);
    assert_int_equal(rx.pending->natt, 2);
    sio_rx_cleanup(&rx);
    assert_null(rx.pending);
    sio_rx_cleanup(&rx);
}

/* The maximum: ten attachments, fed one message at a time. */
static void test_rx_ten_attachments(void **state)
{
    (void)state;
    const char *hdr = "510-[\"f\"," PH(0) "," PH(1) "," PH(2) "," PH(3) "," PH(4) "," PH(5) "," PH(6) "," PH(
        7) "," PH(8) "," PH(9) "]";
    struct sio_rx rx;
    struct sio_packet p;
    const char *err = NULL;
    sio_rx_init(&rx);
    assert_int_equal(sio_rx_feed(&rx, (const uint8_t *)hdr, strlen(hdr), 0, &p, &err), SIO_RX_MORE);
    for (int k = 0; k < SIO_MAX_ATTACHMENTS; k++) {
        uint8_t bin[3] = {(uint8_t)k, (uint8_t)(k * 2), 0xee};
        int rc = sio_rx_feed(&rx, bin, sizeof bin, 1, &p, &err);
        assert_int_equal(rc, k == SIO_MAX_ATTACHMENTS - 1 ? SIO_RX_PACKET : SIO_RX_MORE);
    }
    assert_int_equal(p.type, SIO_BINARY_EVENT);
    assert_int_equal(p.attachments, 10);
    assert_int_equal(p.natt, 10);
    for (int k = 0; k < SIO_MAX_ATTACHMENTS; k++) {
        uint8_t bin[3] = {(uint8_t)k, (uint8_t)(k * 2), 0xee};
        assert_int_equal(p.att[k].len, 3);
        assert_memory_equal(p.att[k].data, bin, 3);
    }
    assert_null(rx.pending);
    sio_packet_cleanup(&p);
    sio_rx_cleanup(&rx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_decode_encode_roundtrip),
        cmocka_unit_test(test_decode_prefixes_and_mutations),
        cmocka_unit_test(test_decode_nsp_length),
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_encode_key_order),
        cmocka_unit_test(test_check_placeholders),
        cmocka_unit_test(test_rx),
        cmocka_unit_test(test_rx_cleanup_pending),
        cmocka_unit_test(test_rx_ten_attachments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
