/* eio: Engine.IO v4 packets (docs/protocol.md §2), pure: bytes <-> structs, no
 * sockets, clock or globals. Covers the WebSocket framing (one packet per
 * message), reassembly of fragmented WebSocket messages and the long-polling
 * payload (records joined by 0x1e, binary as 'b' + base64). */
#ifndef EIO_H
#define EIO_H

#include <stddef.h>
#include <stdint.h>

#include "mem.h"

enum eio_type {
    EIO_OPEN = 0,
    EIO_CLOSE = 1,
    EIO_PING = 2,
    EIO_PONG = 3,
    EIO_MESSAGE = 4,
    EIO_UPGRADE = 5,
    EIO_NOOP = 6,
};

/* A decoded packet. data points into the caller's input (or, for polling
 * payloads, into the body decoded in place) and lives as long as it does. */
struct eio_packet {
    enum eio_type type;
    int binary; /* 1: a binary message (only EIO_MESSAGE is ever binary) */
    const uint8_t *data;
    size_t len;
};

/* Decodes one WebSocket message (docs/protocol.md §WebSocket: one packet per
 * message). A binary message is an EIO_MESSAGE with the raw bytes (no type
 * prefix in v4). A text message is a type digit '0'..'6' then the payload.
 * Returns 0, or -1 with *err set to static text (empty text message, type not
 * a digit 0..6). */
int eio_decode_ws(struct eio_packet *p, const uint8_t *buf, size_t len, int binary, const char **err);

/* Appends the text encoding of a text packet: the type digit, then the payload. */
void eio_encode_text(struct buf *out, enum eio_type type, const void *payload, size_t len);

/* Reassembles one WebSocket message from its fragments, bounded by max bytes
 * (the handshake's maxPayload counts the whole encoded packet). */
struct eio_rx {
    struct buf msg;
    size_t max;
    int binary;
};

enum { EIO_RX_MORE = 0, EIO_RX_DONE = 1, EIO_RX_TOO_BIG = -1 };

void eio_rx_init(struct eio_rx *rx, size_t max);
void eio_rx_cleanup(struct eio_rx *rx);
/* Feeds one fragment. first/final say whether it starts/ends a message;
 * binary is read from the first fragment. Returns EIO_RX_DONE when final:
 * rx->msg holds the whole message (valid until the next feed), and
 * rx->binary its kind. EIO_RX_TOO_BIG once the message passes max; the
 * buffer is then reset. */
int eio_rx_feed(struct eio_rx *rx, const void *data, size_t len, int first, int final, int binary);

/* Long-polling payload (docs/protocol.md §Payload): iterates over the
 * records of a whole body. Decodes in place (base64 shrinks), so the body must
 * be writable; packets point into it. */
struct eio_payload_iter {
    uint8_t *body;
    size_t len;
    size_t pos;
    int done;
};

void eio_payload_iter_init(struct eio_payload_iter *it, uint8_t *body, size_t len);
/* Returns 1 with *p set, 0 at the end, -1 with *err on a bad record (empty
 * record, bad type digit, bad base64). An empty body is an error. */
int eio_payload_next(struct eio_payload_iter *it, struct eio_packet *p, const char **err);
/* Appends one packet to a polling payload, with the 0x1e separator when out
 * already holds a record; binary packets as 'b' + base64. */
void eio_payload_append(struct buf *out, const struct eio_packet *p);

/* base64 (RFC 4648, with padding). decode returns the decoded length, or -1. */
void eio_base64_encode(struct buf *out, const uint8_t *data, size_t len);
long eio_base64_decode(uint8_t *out, const char *in, size_t len);

#endif
