/* fuzz_sio: libFuzzer target for the Socket.IO codec (sio.c). The whole
 * input is decoded as one text packet, and a packet that decodes must encode
 * and decode back to the same packet. The input is also split into a
 * sequence of Engine.IO messages for sio_rx (byte 0: which ones are binary,
 * byte 1: the separator), and every packet sio_rx returns must be complete
 * and encodable. A failed check aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "socketio/sio.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_sio: check failed: %s (line %d)\n", #cond, __LINE__);                      \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

static uint8_t *copy(const uint8_t *data, size_t size)
{
    uint8_t *c = xmalloc(size);
    if (size)
        memcpy(c, data, size);
    return c;
}

static void encode(struct buf *out, const struct sio_packet *p)
{
    sio_encode(out, p->type, p->nsp, p->ack_id, p->attachments, p->data);
}

/* decode → encode → decode gives the same packet, and encoding is stable. */
static void whole_packet(const uint8_t *data, size_t size)
{
    char *text = (char *)copy(data, size);
    struct sio_packet p;
    const char *err = NULL;
    if (sio_decode(&p, text, size, &err) != 0) {
        CHECK(err != NULL && p.data == NULL);
        free(text);
        return;
    }
    CHECK(p.type != SIO_CONNECT_ERROR && p.natt == 0 && p.nsp[0] == '/');
    CHECK(p.attachments >= 0 && p.attachments <= SIO_MAX_ATTACHMENTS);
    struct buf a, b;
    buf_init(&a);
    buf_init(&b);
    encode(&a, &p);

    char *again = (char *)copy((const uint8_t *)a.data, a.len);
    struct sio_packet q;
    if (sio_decode(&q, again, a.len, &err) != 0) {
        fprintf(stderr, "fuzz_sio: re-decode of \"%.*s\" failed: %s\n", (int)a.len, a.data, err);
        abort();
    }
    CHECK(q.type == p.type && strcmp(q.nsp, p.nsp) == 0 && q.ack_id == p.ack_id &&
          q.attachments == p.attachments);
    CHECK((!p.data && !q.data) || json_equal(p.data, q.data));
    encode(&b, &q);
    CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);

    sio_packet_cleanup(&q);
    sio_packet_cleanup(&p);
    buf_cleanup(&a);
    buf_cleanup(&b);
    free(again);
    free(text);
}

/* A packet from sio_rx: whole (every attachment in), the placeholders of a
 * binary packet matching its attachments, and encodable. In a plain EVENT or
 * ACK a placeholder-shaped object is ordinary data (§3.5: only types 5/6
 * carry attachments), so it is not checked there. */
static void check_rx_packet(struct sio_packet *p)
{
    CHECK(p->natt == p->attachments);
    if (p->attachments > 0)
        CHECK(sio_check_placeholders(p->data, p->attachments) == 0);
    for (int i = 0; i < p->natt; i++)
        CHECK(p->att[i].data != NULL);
    struct buf out;
    buf_init(&out);
    encode(&out, p);
    CHECK(out.len > 0);
    buf_cleanup(&out);
    sio_packet_cleanup(p);
}

static void sequence(const uint8_t *data, size_t size)
{
    if (size < 2)
        return;
    uint8_t kinds = data[0], sep = data[1];
    const uint8_t *rest = data + 2;
    size_t len = size - 2;

    struct sio_rx rx;
    sio_rx_init(&rx);
    size_t pos = 0;
    for (unsigned i = 0; pos <= len; i++) {
        const uint8_t *end = memchr(rest + pos, sep, len - pos);
        size_t n = end ? (size_t)(end - (rest + pos)) : len - pos;
        int binary = kinds >> (i % 8) & 1;
        uint8_t *msg = copy(rest + pos, n);
        struct sio_packet p;
        const char *err = NULL;
        int rc = sio_rx_feed(&rx, msg, n, binary, &p, &err);
        free(msg);
        if (rc == SIO_RX_PACKET)
            check_rx_packet(&p);
        else if (rc == SIO_RX_ERROR)
            CHECK(err != NULL && !rx.pending);
        else
            CHECK(rc == SIO_RX_MORE && rx.pending);
        pos += n + 1;
    }
    sio_rx_cleanup(&rx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    whole_packet(data, size);
    sequence(data, size);
    return 0;
}
