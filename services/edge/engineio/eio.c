/* eio: Engine.IO v4 packet codec (docs/protocol.md §2).
 * Decodes WebSocket messages and long-polling bodies, reassembles fragmented
 * WebSocket messages under maxPayload, and encodes text packets and payloads.
 * Pure: no sockets, clock or globals. It does not judge whether a packet is
 * allowed in the session's current state (e.g. a client ping); ws.c does. */
#include "eio.h"

#include <limits.h>
#include <string.h>

/* docs/protocol.md §Payload: records of a polling body are joined by the
 * ASCII record separator; JSON escapes it, so it never occurs inside a record. */
#define EIO_SEPARATOR 0x1e

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Maps a type digit to its type; -1 for anything but '0'..'6' (§2.2). */
static int type_from_digit(uint8_t c)
{
    if (c < '0' || c > '6')
        return -1;
    return c - '0';
}

int eio_decode_ws(struct eio_packet *p, const uint8_t *buf, size_t len, int binary, const char **err)
{
    /* §2.5: a binary frame is a message packet whose payload is the raw bytes,
     * with no type prefix in v4. An empty one is an empty binary message. */
    if (binary) {
        p->type = EIO_MESSAGE;
        p->binary = 1;
        p->data = buf;
        p->len = len;
        return 0;
    }
    if (len == 0) {
        *err = "empty text message";
        return -1;
    }
    /* §2.2: a text packet whose first character is not 0-6 is a parse error. */
    int type = type_from_digit(buf[0]);
    if (type < 0) {
        *err = "packet type is not a digit 0..6";
        return -1;
    }
    p->type = (enum eio_type)type;
    p->binary = 0;
    p->data = buf + 1;
    p->len = len - 1;
    return 0;
}

void eio_encode_text(struct buf *out, enum eio_type type, const void *payload, size_t len)
{
    buf_reserve(out, 1 + len);
    buf_putc(out, (char)('0' + type));
    buf_append(out, payload, len);
}

void eio_rx_init(struct eio_rx *rx, size_t max)
{
    buf_init(&rx->msg);
    rx->max = max;
    rx->binary = 0;
}

void eio_rx_cleanup(struct eio_rx *rx)
{
    buf_cleanup(&rx->msg);
}

/* The check happens before the append, so the buffer never grows past max
 * (rx->msg.len <= max always holds) and the subtraction cannot wrap. §2.9:
 * maxPayload counts the whole encoded packet, so exactly max bytes is allowed.
 * On EIO_RX_TOO_BIG the caller closes the connection (WS status 1009); the
 * fragments of the oversized message that may still follow are not tracked. */
int eio_rx_feed(struct eio_rx *rx, const void *data, size_t len, int first, int final, int binary)
{
    if (first) {
        rx->msg.len = 0;
        rx->binary = binary ? 1 : 0;
    }
    if (len > rx->max - rx->msg.len) {
        buf_cleanup(&rx->msg);
        return EIO_RX_TOO_BIG;
    }
    /* Appending even zero bytes allocates, so msg.data is never NULL on DONE. */
    buf_append(&rx->msg, data, len);
    return final ? EIO_RX_DONE : EIO_RX_MORE;
}

void eio_payload_iter_init(struct eio_payload_iter *it, uint8_t *body, size_t len)
{
    it->body = body;
    it->len = len;
    it->pos = 0;
    it->done = 0;
}

/* Errors end the iteration: a later call returns 0, so callers must act on
 * the -1 (§2.6: an invalid packet in a POST body closes the session). */
int eio_payload_next(struct eio_payload_iter *it, struct eio_packet *p, const char **err)
{
    if (it->done)
        return 0;
    if (it->len == 0) {
        it->done = 1;
        *err = "empty payload";
        return -1;
    }

    uint8_t *rec = it->body + it->pos;
    size_t room = it->len - it->pos;
    uint8_t *sep = memchr(rec, EIO_SEPARATOR, room);
    size_t n = sep ? (size_t)(sep - rec) : room;
    if (sep) {
        it->pos += n + 1;
    } else {
        it->pos = it->len;
        it->done = 1;
    }

    /* §2.6: no trailing separator and no empty packets, so an empty record
     * (leading, doubled or trailing 0x1e) is malformed. */
    if (n == 0) {
        it->done = 1;
        *err = "empty record in payload";
        return -1;
    }

    /* §2.6: binary messages travel as 'b' + base64, with no '4'. Decoding in
     * place is safe: output group k ends at byte 3k+3 while its input starts
     * at byte 4k+1, and each group is read before it is written. */
    if (rec[0] == 'b') {
        long dec = eio_base64_decode(rec, (const char *)rec + 1, n - 1);
        if (dec < 0) {
            it->done = 1;
            *err = "bad base64 in binary record";
            return -1;
        }
        p->type = EIO_MESSAGE;
        p->binary = 1;
        p->data = rec;
        p->len = (size_t)dec;
        return 1;
    }

    int type = type_from_digit(rec[0]);
    if (type < 0) {
        it->done = 1;
        *err = "packet type is not a digit 0..6";
        return -1;
    }
    p->type = (enum eio_type)type;
    p->binary = 0;
    p->data = rec + 1;
    p->len = n - 1;
    return 1;
}

void eio_payload_append(struct buf *out, const struct eio_packet *p)
{
    if (out->len > 0)
        buf_putc(out, EIO_SEPARATOR);
    if (p->binary) {
        buf_putc(out, 'b');
        eio_base64_encode(out, p->data, p->len);
    } else {
        eio_encode_text(out, p->type, p->data, p->len);
    }
}

void eio_base64_encode(struct buf *out, const uint8_t *data, size_t len)
{
    buf_reserve(out, (len + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        unsigned long v = (unsigned long)data[i] << 16 | (unsigned long)data[i + 1] << 8 | data[i + 2];
        char q[4] = {b64_alphabet[v >> 18 & 63], b64_alphabet[v >> 12 & 63], b64_alphabet[v >> 6 & 63],
                     b64_alphabet[v & 63]};
        buf_append(out, q, 4);
    }
    if (len - i == 1) {
        unsigned long v = (unsigned long)data[i] << 16;
        char q[4] = {b64_alphabet[v >> 18 & 63], b64_alphabet[v >> 12 & 63], '=', '='};
        buf_append(out, q, 4);
    } else if (len - i == 2) {
        unsigned long v = (unsigned long)data[i] << 16 | (unsigned long)data[i + 1] << 8;
        char q[4] = {b64_alphabet[v >> 18 & 63], b64_alphabet[v >> 12 & 63], b64_alphabet[v >> 6 & 63], '='};
        buf_append(out, q, 4);
    }
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Strict RFC 4648 §4: length a multiple of 4, padding only at the very end
 * (at most two '='), no whitespace, no base64url, and the unused bits before
 * the padding must be zero (§3.5), so each byte string has exactly one
 * accepted encoding. out may equal in (see eio_payload_next). */
long eio_base64_decode(uint8_t *out, const char *in, size_t len)
{
    if (len % 4 != 0 || len / 4 > LONG_MAX / 3)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int last = i + 4 == len;
        int pad = 0;
        unsigned long v = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)in[i + k];
            int d;
            if (c == '=' && last && k >= 2) {
                pad++;
                d = 0;
            } else {
                if (pad)
                    return -1; /* data after '=' */
                d = b64_value(c);
                if (d < 0)
                    return -1;
            }
            v = v << 6 | (unsigned long)d;
        }
        if ((pad == 2 && (v & 0xffff)) || (pad == 1 && (v & 0xff)))
            return -1;
        out[o++] = (uint8_t)(v >> 16);
        if (pad < 2)
            out[o++] = (uint8_t)(v >> 8);
        if (pad < 1)
            out[o++] = (uint8_t)v;
    }
    return (long)o;
}
