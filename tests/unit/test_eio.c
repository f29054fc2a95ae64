/* test_eio: Engine.IO v4 codec. Cases are the examples of
 * docs/protocol.md §2 and §5; every incremental decoder is fed whole,
 * split at every offset and one byte at a time. Run it under ASan: inputs are
 * copied into exact-size heap blocks so any over-read is caught. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engineio/eio.h"
#include "mem.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define OPEN_WS                                                                                              \
    "0{\"sid\":\"lv_VI97HAXpY6yYWAAAC\",\"upgrades\":[],\"pingInterval\":25000,\"pingTimeout\":20000,"       \
    "\"maxPayload\":1000000}"
#define OPEN_POLL                                                                                            \
    "0{\"sid\":\"ne8jMtaanfC3DRrDAAAF\",\"upgrades\":[\"websocket\"],\"pingInterval\":25000,"                \
    "\"pingTimeout\":20000,\"maxPayload\":1000000}"

/* Bytes given with their length, so they may hold NUL or 0x1e. */
struct bytes {
    const char *p;
    size_t n;
};
#define B(s)                                                                                                 \
    {                                                                                                        \
        s, sizeof(s) - 1                                                                                     \
    }
/* s without its first byte (the type digit) */
#define B_TAIL(s)                                                                                            \
    {                                                                                                        \
        (s) + 1, sizeof(s) - 2                                                                               \
    }

static void expect_bytes(const char *name, const void *got, size_t glen, const void *want, size_t wlen)
{
    if (glen != wlen || (wlen && memcmp(got, want, wlen) != 0))
        fail_msg("%s: got %zu bytes '%.*s', want %zu bytes '%.*s'", name, glen, (int)glen, (const char *)got,
                 wlen, (int)wlen, (const char *)want);
}

/* An exact-size heap copy: reading one byte past it is an ASan error. */
static uint8_t *heap_copy(const void *p, size_t n)
{
    uint8_t *c = xmalloc(n);
    if (n)
        memcpy(c, p, n);
    return c;
}

/* ---- eio_decode_ws ---- */

struct ws_case {
    const char *name;
    struct bytes in;
    int binary;
    int ok;
    enum eio_type type;
    struct bytes payload;
};

static const struct ws_case ws_cases[] = {
    /* §2.3 / §5.1 open packets */
    {"open ws", B(OPEN_WS), 0, 1, EIO_OPEN, B_TAIL(OPEN_WS)},
    {"open polling", B(OPEN_POLL), 0, 1, EIO_OPEN, B_TAIL(OPEN_POLL)},
    /* §2.2 types */
    {"close", B("1"), 0, 1, EIO_CLOSE, B("")},
    {"ping", B("2"), 0, 1, EIO_PING, B("")},
    {"pong", B("3"), 0, 1, EIO_PONG, B("")},
    {"ping probe", B("2probe"), 0, 1, EIO_PING, B("probe")},
    {"pong probe", B("3probe"), 0, 1, EIO_PONG, B("probe")},
    {"message", B("4hello"), 0, 1, EIO_MESSAGE, B("hello")},
    {"empty message", B("4"), 0, 1, EIO_MESSAGE, B("")},
    {"upgrade", B("5"), 0, 1, EIO_UPGRADE, B("")},
    {"noop", B("6"), 0, 1, EIO_NOOP, B("")},
    /* §5.1 Socket.IO packets inside message packets */
    {"sio connect", B("40{\"token\":\"abc123\"}"), 0, 1, EIO_MESSAGE, B("0{\"token\":\"abc123\"}")},
    {"sio event ack", B("420[\"chat\",\"hi\"]"), 0, 1, EIO_MESSAGE, B("20[\"chat\",\"hi\"]")},
    {"sio binary header", B("451-[\"file\",{\"_placeholder\":true,\"num\":0}]"), 0, 1, EIO_MESSAGE,
     B("51-[\"file\",{\"_placeholder\":true,\"num\":0}]")},
    {"sio disconnect", B("41"), 0, 1, EIO_MESSAGE, B("1")},
    /* §2.5 binary frames carry the raw bytes with no type prefix */
    {"binary 010203", B("\x01\x02\x03"), 1, 1, EIO_MESSAGE, B("\x01\x02\x03")},
    {"binary looks like text", B("4hi"), 1, 1, EIO_MESSAGE, B("4hi")},
    {"binary with NUL", B("\x00\xff\x1e"), 1, 1, EIO_MESSAGE, B("\x00\xff\x1e")},
    {"binary empty", B(""), 1, 1, EIO_MESSAGE, B("")},
    /* §2.2 / §3.7 parse errors */
    {"empty text", B(""), 0, 0, 0, B("")},
    {"garbage abc", B("abc"), 0, 0, 0, B("")},
    {"type 7", B("7"), 0, 0, 0, B("")},
    {"type 9", B("9hello"), 0, 0, 0, B("")},
    {"type b on ws", B("bAQIDBA=="), 0, 0, 0, B("")},
    {"NUL type", B("\x00"), 0, 0, 0, B("")},
    {"v3 binary prefix as text", B("\x04hello"), 0, 0, 0, B("")},
};

static void check_ws_decode(const struct ws_case *c, const uint8_t *buf, size_t len, int binary)
{
    struct eio_packet p;
    const char *err = NULL;
    int rc = eio_decode_ws(&p, buf, len, binary, &err);
    if (!c->ok) {
        if (rc != -1)
            fail_msg("%s: decoded, want error", c->name);
        if (!err || !*err)
            fail_msg("%s: no error text", c->name);
        return;
    }
    if (rc != 0)
        fail_msg("%s: error '%s'", c->name, err);
    if (p.type != c->type)
        fail_msg("%s: type %d, want %d", c->name, p.type, c->type);
    if (p.binary != c->binary)
        fail_msg("%s: binary %d, want %d", c->name, p.binary, c->binary);
    expect_bytes(c->name, p.data, p.len, c->payload.p, c->payload.n);
    /* data points into the input */
    if (p.len && (p.data < buf || p.data + p.len > buf + len))
        fail_msg("%s: data not inside the input", c->name);
}

static void test_decode_ws_whole(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ELEMS(ws_cases); i++) {
        const struct ws_case *c = &ws_cases[i];
        uint8_t *in = heap_copy(c->in.p, c->in.n);
        check_ws_decode(c, in, c->in.n, c->binary);
        free(in);
    }
}

/* Feeds the message through eio_rx split into fragments at the given offsets
 * (sorted), then decodes the reassembled message. */
static void feed_fragments(const struct ws_case *c, const size_t *cuts, size_t ncuts)
{
    struct eio_rx rx;
    eio_rx_init(&rx, c->in.n);
    size_t start = 0;
    for (size_t k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts ? cuts[k] : c->in.n;
        uint8_t *frag = heap_copy(c->in.p + start, end - start);
        int first = k == 0, final = k == ncuts;
        /* only the first fragment's kind counts: lie on the others */
        int binary = first ? c->binary : !c->binary;
        int rc = eio_rx_feed(&rx, frag, end - start, first, final, binary);
        free(frag);
        if (rc != (final ? EIO_RX_DONE : EIO_RX_MORE))
            fail_msg("%s: fragment %zu returned %d", c->name, k, rc);
        start = end;
    }
    if (rx.binary != c->binary)
        fail_msg("%s: reassembled binary %d, want %d", c->name, rx.binary, c->binary);
    expect_bytes(c->name, rx.msg.data, rx.msg.len, c->in.p, c->in.n);
    uint8_t *msg = heap_copy(rx.msg.data, rx.msg.len);
    check_ws_decode(c, msg, rx.msg.len, rx.binary);
    free(msg);
    eio_rx_cleanup(&rx);
}

static void test_decode_ws_fragmented(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ELEMS(ws_cases); i++) {
        const struct ws_case *c = &ws_cases[i];
        /* whole */
        feed_fragments(c, NULL, 0);
        /* split in two at every offset, including empty first and last parts */
        for (size_t cut = 0; cut <= c->in.n; cut++)
            feed_fragments(c, &cut, 1);
        /* one byte at a time */
        if (c->in.n > 1) {
            size_t *cuts = xmalloc(c->in.n * sizeof *cuts);
            for (size_t k = 0; k + 1 < c->in.n; k++)
                cuts[k] = k + 1;
            feed_fragments(c, cuts, c->in.n - 1);
            free(cuts);
        }
    }
}

/* ---- eio_rx limits and reuse ---- */

static void test_rx_max(void **state)
{
    (void)state;
    const char *msg = "42[\"big\",\"xxxxxxxxxx\"]";
    size_t n = strlen(msg);
    struct eio_rx rx;

    /* exactly max is accepted, whole and split at every offset (§2.9) */
    for (size_t cut = 0; cut <= n; cut++) {
        eio_rx_init(&rx, n);
        if (cut == 0 || cut == n) {
            assert_int_equal(eio_rx_feed(&rx, msg, n, 1, 1, 0), EIO_RX_DONE);
        } else {
            assert_int_equal(eio_rx_feed(&rx, msg, cut, 1, 0, 0), EIO_RX_MORE);
            assert_int_equal(eio_rx_feed(&rx, msg + cut, n - cut, 0, 1, 0), EIO_RX_DONE);
        }
        assert_int_equal(rx.msg.len, n);
        assert_memory_equal(rx.msg.data, msg, n);
        eio_rx_cleanup(&rx);
    }

    /* max + 1 is refused on the fragment that passes the limit */
    for (size_t cut = 1; cut <= n; cut++) {
        eio_rx_init(&rx, n - 1);
        if (cut == n) {
            assert_int_equal(eio_rx_feed(&rx, msg, n, 1, 1, 0), EIO_RX_TOO_BIG);
        } else {
            /* the first part fits (cut <= max), the rest does not */
            assert_int_equal(eio_rx_feed(&rx, msg, cut, 1, 0, 0), EIO_RX_MORE);
            assert_int_equal(eio_rx_feed(&rx, msg + cut, n - cut, 0, 1, 0), EIO_RX_TOO_BIG);
        }
        /* the buffer is reset */
        assert_int_equal(rx.msg.len, 0);
        /* and the next message starts cleanly */
        assert_int_equal(eio_rx_feed(&rx, "3", 1, 1, 1, 0), EIO_RX_DONE);
        assert_int_equal(rx.msg.len, 1);
        assert_memory_equal(rx.msg.data, "3", 1);
        eio_rx_cleanup(&rx);
    }

    /* one byte at a time: byte max+1 is the one refused */
    eio_rx_init(&rx, 5);
    for (size_t k = 0; k < 5; k++)
        assert_int_equal(eio_rx_feed(&rx, msg + k, 1, k == 0, 0, 0), EIO_RX_MORE);
    assert_int_equal(eio_rx_feed(&rx, msg + 5, 1, 0, 0, 0), EIO_RX_TOO_BIG);
    eio_rx_cleanup(&rx);

    /* max 0: only empty messages */
    eio_rx_init(&rx, 0);
    assert_int_equal(eio_rx_feed(&rx, "", 0, 1, 1, 1), EIO_RX_DONE);
    assert_int_equal(rx.msg.len, 0);
    assert_non_null(rx.msg.data);
    assert_int_equal(rx.binary, 1);
    assert_int_equal(eio_rx_feed(&rx, "2", 1, 1, 1, 0), EIO_RX_TOO_BIG);
    eio_rx_cleanup(&rx);
}

static void test_rx_sequence(void **state)
{
    (void)state;
    struct eio_rx rx;
    eio_rx_init(&rx, 1000000);
    /* §5.1: a binary header then its attachment, then a ping reply */
    assert_int_equal(eio_rx_feed(&rx, "451-[\"file\",", 12, 1, 0, 0), EIO_RX_MORE);
    assert_int_equal(eio_rx_feed(&rx, "{\"_placeholder\":true,\"num\":0}]", 31, 0, 1, 0), EIO_RX_DONE);
    assert_int_equal(rx.binary, 0);
    expect_bytes("header", rx.msg.data, rx.msg.len, "451-[\"file\",{\"_placeholder\":true,\"num\":0}]", 43);
    assert_int_equal(eio_rx_feed(&rx, "\x01\x02", 2, 1, 0, 1), EIO_RX_MORE);
    assert_int_equal(eio_rx_feed(&rx, "\x03", 1, 0, 1, 0), EIO_RX_DONE);
    assert_int_equal(rx.binary, 1);
    expect_bytes("attachment", rx.msg.data, rx.msg.len, "\x01\x02\x03", 3);
    assert_int_equal(eio_rx_feed(&rx, "3", 1, 1, 1, 0), EIO_RX_DONE);
    assert_int_equal(rx.binary, 0);
    expect_bytes("pong", rx.msg.data, rx.msg.len, "3", 1);
    /* empty fragments are fine anywhere */
    assert_int_equal(eio_rx_feed(&rx, "", 0, 1, 0, 0), EIO_RX_MORE);
    assert_int_equal(eio_rx_feed(&rx, "4hi", 3, 0, 0, 1), EIO_RX_MORE);
    assert_int_equal(eio_rx_feed(&rx, "", 0, 0, 1, 1), EIO_RX_DONE);
    assert_int_equal(rx.binary, 0);
    expect_bytes("empty fragments", rx.msg.data, rx.msg.len, "4hi", 3);
    eio_rx_cleanup(&rx);
    /* cleanup leaves it empty and is repeatable */
    assert_null(rx.msg.data);
    eio_rx_cleanup(&rx);
}

/* ---- eio_encode_text ---- */

struct enc_case {
    enum eio_type type;
    struct bytes payload;
    struct bytes want;
};

static const struct enc_case enc_cases[] = {
    {EIO_OPEN, B_TAIL(OPEN_WS), B(OPEN_WS)},
    {EIO_CLOSE, B(""), B("1")},
    {EIO_PING, B(""), B("2")},
    {EIO_PONG, B(""), B("3")},
    {EIO_PING, B("probe"), B("2probe")},
    {EIO_PONG, B("probe"), B("3probe")},
    {EIO_MESSAGE, B("hello"), B("4hello")},
    {EIO_MESSAGE, B("0{\"sid\":\"wZX3oN0bSVIhsaknAAAI\"}"), B("40{\"sid\":\"wZX3oN0bSVIhsaknAAAI\"}")},
    {EIO_MESSAGE, B("2[\"welcome\",{\"user\":\"alice\"}]"), B("42[\"welcome\",{\"user\":\"alice\"}]")},
    {EIO_UPGRADE, B(""), B("5")},
    {EIO_NOOP, B(""), B("6")},
};

static void test_encode_text(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ELEMS(enc_cases); i++) {
        const struct enc_case *c = &enc_cases[i];
        struct buf out;
        buf_init(&out);
        buf_puts(&out, "prefix:"); /* appends, never overwrites */
        eio_encode_text(&out, c->type, c->payload.p, c->payload.n);
        assert_true(out.len >= 7);
        assert_memory_equal(out.data, "prefix:", 7);
        expect_bytes(c->want.p, out.data + 7, out.len - 7, c->want.p, c->want.n);
        /* and it decodes back */
        struct eio_packet p;
        const char *err = NULL;
        assert_int_equal(eio_decode_ws(&p, (const uint8_t *)out.data + 7, out.len - 7, 0, &err), 0);
        assert_int_equal(p.type, c->type);
        assert_int_equal(p.binary, 0);
        expect_bytes(c->want.p, p.data, p.len, c->payload.p, c->payload.n);
        buf_cleanup(&out);
    }
}

/* ---- long-polling payloads ---- */

#define MAX_RECS 4

struct rec {
    enum eio_type type;
    int binary;
    struct bytes data;
};

struct payload_case {
    const char *name;
    struct bytes body;
    size_t nrec;              /* records decoded before the end or the error */
    int error;                /* 1: the call after the nrec records fails */
    struct rec rec[MAX_RECS]; /* decoded records */
};

static const struct payload_case payload_cases[] = {
    /* §2.6 */
    {"three records",
     B("4hello\x1e"
       "2\x1e"
       "4world"),
     3,
     0,
     {{EIO_MESSAGE, 0, B("hello")}, {EIO_PING, 0, B("")}, {EIO_MESSAGE, 0, B("world")}}},
    {"text then binary",
     B("4hello\x1e"
       "bAQIDBA=="),
     2,
     0,
     {{EIO_MESSAGE, 0, B("hello")}, {EIO_MESSAGE, 1, B("\x01\x02\x03\x04")}}},
    {"open", B(OPEN_POLL), 1, 0, {{EIO_OPEN, 0, B_TAIL(OPEN_POLL)}}},
    /* §5.3 */
    {"connect reply and event",
     B("40{\"sid\":\"QShMLHC2pS_lbq2NAAAE\"}\x1e"
       "42[\"welcome\",{\"user\":\"alice\"}]"),
     2,
     0,
     {{EIO_MESSAGE, 0, B("0{\"sid\":\"QShMLHC2pS_lbq2NAAAE\"}")},
      {EIO_MESSAGE, 0, B("2[\"welcome\",{\"user\":\"alice\"}]")}}},
    {"binary event over polling",
     B("451-[\"file\",{\"_placeholder\":true,\"num\":0}]\x1e"
       "bAQID"),
     2,
     0,
     {{EIO_MESSAGE, 0, B("51-[\"file\",{\"_placeholder\":true,\"num\":0}]")},
      {EIO_MESSAGE, 1, B("\x01\x02\x03")}}},
    {"two attachments",
     B("452-[\"message\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]"
       "\x1e"
       "bAQID\x1e"
       "bBAUG"),
     3,
     0,
     {{EIO_MESSAGE, 0,
       B("52-[\"message\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]")},
      {EIO_MESSAGE, 1, B("\x01\x02\x03")},
      {EIO_MESSAGE, 1, B("\x04\x05\x06")}}},
    {"noop", B("6"), 1, 0, {{EIO_NOOP, 0, B("")}}},
    {"client close", B("1"), 1, 0, {{EIO_CLOSE, 0, B("")}}},
    {"pong", B("3"), 1, 0, {{EIO_PONG, 0, B("")}}},
    {"sio disconnect", B("41"), 1, 0, {{EIO_MESSAGE, 0, B("1")}}},
    {"sio disconnect then close",
     B("41\x1e"
       "1"),
     2,
     0,
     {{EIO_MESSAGE, 0, B("1")}, {EIO_CLOSE, 0, B("")}}},
    {"empty binary", B("b"), 1, 0, {{EIO_MESSAGE, 1, B("")}}},
    {"binary one byte", B("bAA=="), 1, 0, {{EIO_MESSAGE, 1, B("\x00")}}},
    {"binary two bytes", B("b//8="), 1, 0, {{EIO_MESSAGE, 1, B("\xff\xff")}}},
    /* errors */
    {"empty body", B(""), 0, 1, {{0}}},
    {"garbage abc", B("abc"), 0, 1, {{0}}},
    {"type 7", B("7"), 0, 1, {{0}}},
    {"only separator", B("\x1e"), 0, 1, {{0}}},
    {"leading separator",
     B("\x1e"
       "4a"),
     0,
     1,
     {{0}}},
    {"trailing separator", B("4a\x1e"), 1, 1, {{EIO_MESSAGE, 0, B("a")}}},
    {"double separator",
     B("4a\x1e\x1e"
       "4b"),
     1,
     1,
     {{EIO_MESSAGE, 0, B("a")}}},
    {"bad second type",
     B("4a\x1e"
       "x"),
     1,
     1,
     {{EIO_MESSAGE, 0, B("a")}}},
    {"base64 bad length", B("bAQIDB"), 0, 1, {{0}}},
    {"base64 bad char", B("bAQ!D"), 0, 1, {{0}}},
    {"base64url char", B("b-_8="), 0, 1, {{0}}},
    {"base64 padding inside", B("bAQ==AQID"), 0, 1, {{0}}},
    {"base64 three pads", B("bA==="), 0, 1, {{0}}},
    {"base64 nonzero pad bits", B("bAR=="), 0, 1, {{0}}},
    {"base64 whitespace", B("bAQID BA=="), 0, 1, {{0}}},
    {"bad base64 after text",
     B("4x\x1e"
       "b=AAA"),
     1,
     1,
     {{EIO_MESSAGE, 0, B("x")}}},
};

/* Decodes a heap copy of body and checks the records against want. */
static void check_payload(const struct payload_case *c)
{
    uint8_t *body = heap_copy(c->body.p, c->body.n);
    struct eio_payload_iter it;
    eio_payload_iter_init(&it, body, c->body.n);
    struct eio_packet p;
    const char *err = NULL;
    for (size_t k = 0; k < c->nrec; k++) {
        int rc = eio_payload_next(&it, &p, &err);
        if (rc != 1)
            fail_msg("%s: record %zu returned %d (%s)", c->name, k, rc, rc < 0 ? err : "end");
        if (p.type != c->rec[k].type || p.binary != c->rec[k].binary)
            fail_msg("%s: record %zu type %d binary %d", c->name, k, p.type, p.binary);
        expect_bytes(c->name, p.data, p.len, c->rec[k].data.p, c->rec[k].data.n);
        if (p.len && (p.data < body || p.data + p.len > body + c->body.n))
            fail_msg("%s: record %zu not inside the body", c->name, k);
    }
    int rc = eio_payload_next(&it, &p, &err);
    if (rc != (c->error ? -1 : 0))
        fail_msg("%s: end returned %d", c->name, rc);
    if (c->error && (!err || !*err))
        fail_msg("%s: no error text", c->name);
    /* the iterator stays finished */
    assert_int_equal(eio_payload_next(&it, &p, &err), 0);
    free(body);
}

static void test_payload_decode(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ELEMS(payload_cases); i++)
        check_payload(&payload_cases[i]);
}

/* Every prefix of a valid body decodes to a prefix of its records, the last
 * one possibly cut short, or stops with an error; never reads past it. */
static void test_payload_prefixes(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ELEMS(payload_cases); i++) {
        const struct payload_case *c = &payload_cases[i];
        if (c->error)
            continue;
        for (size_t n = 0; n <= c->body.n; n++) {
            uint8_t *body = heap_copy(c->body.p, n);
            struct eio_payload_iter it;
            eio_payload_iter_init(&it, body, n);
            struct eio_packet p;
            const char *err = NULL;
            size_t k = 0;
            int rc;
            while ((rc = eio_payload_next(&it, &p, &err)) == 1) {
                if (k >= c->nrec)
                    fail_msg("%s[:%zu]: more records than the whole body", c->name, n);
                const struct rec *r = &c->rec[k];
                if (p.type != r->type || p.binary != r->binary)
                    fail_msg("%s[:%zu]: record %zu has another type", c->name, n, k);
                if (p.len > r->data.n || (p.len && memcmp(p.data, r->data.p, p.len) != 0))
                    fail_msg("%s[:%zu]: record %zu is not a prefix", c->name, n, k);
                k++;
                /* only the last record of a cut body may be short */
                if (p.len != r->data.n && eio_payload_next(&it, &p, &err) != 0)
                    fail_msg("%s[:%zu]: records after a short one", c->name, n);
            }
            if (n == 0 && rc != -1)
                fail_msg("%s: empty prefix accepted", c->name);
            if (n == c->body.n && (rc != 0 || k != c->nrec))
                fail_msg("%s: whole body: rc %d after %zu records", c->name, rc, k);
            free(body);
        }
    }
}

/* Every byte of a body replaced by every value: no crash, no read outside,
 * and whatever decodes points inside the body. */
static void test_payload_mutations(void **state)
{
    (void)state;
    static const char body0[] = "4hello\x1e"
                                "bAQIDBA==\x1e"
                                "2";
    size_t n = sizeof body0 - 1;
    for (size_t pos = 0; pos < n; pos++) {
        for (int v = 0; v < 256; v++) {
            uint8_t *body = heap_copy(body0, n);
            body[pos] = (uint8_t)v;
            struct eio_payload_iter it;
            eio_payload_iter_init(&it, body, n);
            struct eio_packet p;
            const char *err = NULL;
            int rc, k = 0;
            while ((rc = eio_payload_next(&it, &p, &err)) == 1) {
                assert_true(p.type >= EIO_OPEN && p.type <= EIO_NOOP);
                assert_true(p.data >= body && p.data + p.len <= body + n);
                assert_true(++k <= 4);
            }
            assert_true(rc == 0 || (rc == -1 && err != NULL));
            free(body);
        }
    }
}

static void test_payload_append(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        size_t n;
        struct eio_packet pk[3];
        struct bytes want;
    } cases[] = {
        {"§2.6 three",
         3,
         {{EIO_MESSAGE, 0, (const uint8_t *)"hello", 5},
          {EIO_PING, 0, NULL, 0},
          {EIO_MESSAGE, 0, (const uint8_t *)"world", 5}},
         B("4hello\x1e"
           "2\x1e"
           "4world")},
        {"§2.6 binary",
         2,
         {{EIO_MESSAGE, 0, (const uint8_t *)"hello", 5},
          {EIO_MESSAGE, 1, (const uint8_t *)"\x01\x02\x03\x04", 4}},
         B("4hello\x1e"
           "bAQIDBA==")},
        {"§2.6 noop", 1, {{EIO_NOOP, 0, NULL, 0}}, B("6")},
        {"§5.3 open", 1, {{EIO_OPEN, 0, (const uint8_t *)OPEN_POLL + 1, sizeof OPEN_POLL - 2}}, B(OPEN_POLL)},
        {"empty binary first",
         2,
         {{EIO_MESSAGE, 1, NULL, 0}, {EIO_CLOSE, 0, NULL, 0}},
         B("b\x1e"
           "1")},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct buf out;
        buf_init(&out);
        for (size_t k = 0; k < cases[i].n; k++)
            eio_payload_append(&out, &cases[i].pk[k]);
        expect_bytes(cases[i].name, out.data, out.len, cases[i].want.p, cases[i].want.n);

        /* and back */
        struct eio_payload_iter it;
        eio_payload_iter_init(&it, (uint8_t *)out.data, out.len);
        struct eio_packet p;
        const char *err = NULL;
        for (size_t k = 0; k < cases[i].n; k++) {
            assert_int_equal(eio_payload_next(&it, &p, &err), 1);
            assert_int_equal(p.type, cases[i].pk[k].type);
            assert_int_equal(p.binary, cases[i].pk[k].binary);
            expect_bytes(cases[i].name, p.data, p.len, cases[i].pk[k].data, cases[i].pk[k].len);
        }
        assert_int_equal(eio_payload_next(&it, &p, &err), 0);
        buf_cleanup(&out);
    }
}

/* ---- base64 ---- */

static void test_base64_vectors(void **state)
{
    (void)state;
    /* RFC 4648 §10 */
    static const struct {
        const char *raw, *enc;
    } v[] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
        {"\x01\x02\x03\x04", "AQIDBA=="},
    };
    for (size_t i = 0; i < N_ELEMS(v); i++) {
        size_t rn = strlen(v[i].raw), en = strlen(v[i].enc);
        struct buf out;
        buf_init(&out);
        eio_base64_encode(&out, (const uint8_t *)v[i].raw, rn);
        expect_bytes(v[i].enc, out.data, out.len, v[i].enc, en);
        buf_cleanup(&out);

        char *in = (char *)heap_copy(v[i].enc, en);
        uint8_t dec[16];
        assert_int_equal(eio_base64_decode(dec, in, en), (long)rn);
        expect_bytes(v[i].enc, dec, rn, v[i].raw, rn);
        /* in place */
        assert_int_equal(eio_base64_decode((uint8_t *)in, in, en), (long)rn);
        expect_bytes(v[i].enc, in, rn, v[i].raw, rn);
        free(in);
    }
}

static void test_base64_invalid(void **state)
{
    (void)state;
    static const struct bytes bad[] = {
        B("Z"),     B("Zg"),   B("Zg="),      B("Zg==="),   B("Z==="),    B("===="),       B("=Zg="),
        B("Zm9v="), B("Zm=v"), B("Zg==Zg=="), B("Zh=="),    B("Zm9="),    B("Zm-v"),       B("Zm_v"),
        B("Zm9 "),  B(" Zm9"), B("Zm9v\n"),   B("Zm\x00v"), B("Zm9\x80"), B("Zm9vZm9=\n"),
    };
    uint8_t dec[16];
    for (size_t i = 0; i < N_ELEMS(bad); i++) {
        char *in = (char *)heap_copy(bad[i].p, bad[i].n);
        if (eio_base64_decode(dec, in, bad[i].n) != -1)
            fail_msg("bad[%zu] '%.*s' decoded, want -1", i, (int)bad[i].n, bad[i].p);
        free(in);
    }
}

static void test_base64_roundtrip(void **state)
{
    (void)state;
    uint8_t raw[256];
    for (int i = 0; i < 256; i++)
        raw[i] = (uint8_t)(255 - i);
    for (size_t n = 0; n <= sizeof raw; n++) {
        struct buf out;
        buf_init(&out);
        eio_base64_encode(&out, raw, n);
        assert_int_equal(out.len, (n + 2) / 3 * 4);
        uint8_t *in = heap_copy(out.data, out.len);
        assert_int_equal(eio_base64_decode(in, (const char *)in, out.len), (long)n);
        assert_memory_equal(in, raw, n);
        free(in);
        buf_cleanup(&out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_ws_whole),  cmocka_unit_test(test_decode_ws_fragmented),
        cmocka_unit_test(test_rx_max),           cmocka_unit_test(test_rx_sequence),
        cmocka_unit_test(test_encode_text),      cmocka_unit_test(test_payload_decode),
        cmocka_unit_test(test_payload_prefixes), cmocka_unit_test(test_payload_mutations),
        cmocka_unit_test(test_payload_append),   cmocka_unit_test(test_base64_vectors),
        cmocka_unit_test(test_base64_invalid),   cmocka_unit_test(test_base64_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
