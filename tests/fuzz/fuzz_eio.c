/* fuzz_eio: libFuzzer target for the Engine.IO codec (eio.c). One input is
 * used five ways: a whole WebSocket message (text and binary), a message cut
 * into fragments for eio_rx (the cuts come from the input's first bytes), a
 * polling body, and base64 both ways. Round trips are checked where they are
 * exact; any mismatch aborts, which libFuzzer reports as a crash. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engineio/eio.h"
#include "mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_eio: check failed: %s (line %d)\n", #cond, __LINE__);                      \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

/* An exact-size heap copy, so ASan catches a read one byte past the input. */
static uint8_t *copy(const uint8_t *data, size_t size)
{
    uint8_t *c = xmalloc(size);
    if (size)
        memcpy(c, data, size);
    return c;
}

/* eio_decode_ws on the whole input; a decoded text packet encodes back to
 * the input (§2.2: digit then payload). */
static void whole_message(const uint8_t *data, size_t size)
{
    uint8_t *in = copy(data, size);
    for (int binary = 0; binary <= 1; binary++) {
        struct eio_packet p;
        const char *err = NULL;
        if (eio_decode_ws(&p, in, size, binary, &err) != 0) {
            CHECK(!binary && err);
            continue;
        }
        CHECK(p.data >= in && p.data + p.len == in + size);
        if (binary) {
            CHECK(p.type == EIO_MESSAGE && p.binary && p.len == size);
            continue;
        }
        struct buf out;
        buf_init(&out);
        eio_encode_text(&out, p.type, p.data, p.len);
        CHECK(out.len == size && memcmp(out.data, in, size) == 0);
        buf_cleanup(&out);
    }
    free(in);
}

/* eio_rx on the input cut into fragments. Layout: byte 0 picks max, byte 1
 * the number of cuts k (0..7), the next k bytes the fragment lengths; the
 * rest is the message. The message is fed twice on the same rx, so reuse
 * after DONE and after TOO_BIG is covered. */
static void fragments(const uint8_t *data, size_t size)
{
    if (size < 2)
        return;
    size_t max = data[0] == 0xff ? (size_t)-1 : (size_t)data[0] * 3;
    size_t k = data[1] % 8;
    if (size < 2 + k)
        return;
    const uint8_t *cuts = data + 2;
    const uint8_t *msg = data + 2 + k;
    size_t len = size - 2 - k;
    int binary = data[1] & 0x80 ? 1 : 0;

    struct eio_rx rx;
    eio_rx_init(&rx, max);
    for (int round = 0; round < 2; round++) {
        size_t pos = 0;
        int rc = EIO_RX_MORE;
        for (size_t i = 0; i <= k && rc == EIO_RX_MORE; i++) {
            size_t n = i < k ? cuts[i] : len - pos;
            if (n > len - pos)
                n = len - pos;
            int final = i == k;
            uint8_t *frag = copy(msg + pos, n);
            rc = eio_rx_feed(&rx, frag, n, i == 0, final, binary);
            free(frag);
            pos += n;
            CHECK(rx.msg.len <= max);
            if (rc == EIO_RX_TOO_BIG)
                CHECK(pos > max);
            else
                CHECK(rc == (final ? EIO_RX_DONE : EIO_RX_MORE));
        }
        if (rc == EIO_RX_DONE) {
            /* Reassembly is exact: the fragments joined give the message. */
            CHECK(len <= max && rx.msg.len == len && rx.binary == binary);
            CHECK(rx.msg.data != NULL && (len == 0 || memcmp(rx.msg.data, msg, len) == 0));
            struct eio_packet p;
            const char *err;
            (void)eio_decode_ws(&p, (const uint8_t *)rx.msg.data, rx.msg.len, rx.binary, &err);
        } else {
            CHECK(rc == EIO_RX_TOO_BIG && len > max);
        }
    }
    eio_rx_cleanup(&rx);
}

/* eio_payload iterator over a writable copy. When every record decodes,
 * appending the packets again gives the body back byte for byte (§2.6; the
 * base64 decoder accepts one encoding per byte string). */
static void payload(const uint8_t *data, size_t size)
{
    uint8_t *body = copy(data, size);
    struct eio_payload_iter it;
    eio_payload_iter_init(&it, body, size);
    struct buf out;
    buf_init(&out);
    struct eio_packet p;
    const char *err = NULL;
    int rc, n = 0, failed = 0;
    while ((rc = eio_payload_next(&it, &p, &err)) != 0) {
        if (rc < 0) {
            CHECK(err != NULL);
            failed = 1;
            continue; /* the next call must end the iteration */
        }
        CHECK(rc == 1 && p.data >= body && p.data + p.len <= body + size);
        CHECK(!p.binary || p.type == EIO_MESSAGE);
        eio_payload_append(&out, &p);
        n++;
        CHECK(n <= (int)size); /* every record is at least one byte */
    }
    if (!failed) {
        CHECK(size > 0);
        CHECK(out.len == size && memcmp(out.data, data, size) == 0);
    }
    buf_cleanup(&out);
    free(body);
}

/* base64: encode then decode gives the input; a successful decode encodes
 * back to the very same text (strict, canonical decoder). */
static void base64(const uint8_t *data, size_t size)
{
    struct buf enc;
    buf_init(&enc);
    eio_base64_encode(&enc, data, size);
    CHECK(enc.len == (size + 2) / 3 * 4);
    uint8_t *dec = xmalloc(enc.len / 4 * 3 + 1);
    long n = eio_base64_decode(dec, enc.data ? enc.data : "", enc.len);
    CHECK(n == (long)size && (size == 0 || memcmp(dec, data, size) == 0));
    free(dec);
    buf_cleanup(&enc);

    char *text = (char *)copy(data, size);
    dec = xmalloc(size / 4 * 3 + 1);
    n = eio_base64_decode(dec, text, size);
    if (n >= 0) {
        CHECK((size_t)n <= size / 4 * 3);
        buf_init(&enc);
        eio_base64_encode(&enc, dec, (size_t)n);
        CHECK(enc.len == size && (size == 0 || memcmp(enc.data, text, size) == 0));
        buf_cleanup(&enc);
    }
    free(dec);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    whole_message(data, size);
    fragments(data, size);
    payload(data, size);
    base64(data, size);
    return 0;
}
