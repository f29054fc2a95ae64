/* sio: Socket.IO v5 packets (docs/protocol.md §Packet format), pure: no
 * sockets, clock or globals. JSON payloads are parsed and checked for the shape
 * each packet type requires with jansson. Binary packets (types 5/6) are
 * assembled from a text header and its attachments by struct sio_rx. */
#ifndef SIO_H
#define SIO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "mem.h"

enum sio_type {
    SIO_CONNECT = 0,
    SIO_DISCONNECT = 1,
    SIO_EVENT = 2,
    SIO_ACK = 3,
    SIO_CONNECT_ERROR = 4,
    SIO_BINARY_EVENT = 5,
    SIO_BINARY_ACK = 6,
};

#define SIO_MAX_ATTACHMENTS 10 /* what the reference server accepts */
#define SIO_MAX_NSP 128        /* longest namespace name we accept */

struct sio_attachment {
    uint8_t *data; /* owned by the packet */
    size_t len;
};

struct sio_packet {
    enum sio_type type;
    char nsp[SIO_MAX_NSP + 1]; /* "/" when absent; NUL-terminated copy */
    int64_t ack_id;            /* -1 when absent */
    int attachments;           /* declared count (types 5/6), else 0 */
    json_t *data;              /* payload, NULL when absent; owned by the packet */
    struct sio_attachment att[SIO_MAX_ATTACHMENTS];
    int natt; /* attachments received so far */
};

/* Decodes a text packet (the Engine.IO message payload). Accepts a namespace
 * that runs to the end without a comma ("40/custom"). Checks the payload shape
 * per type: CONNECT absent or object; DISCONNECT none; EVENT/BINARY_EVENT a
 * non-empty array whose first element is a string (not a reserved name) or a
 * number; ACK/BINARY_ACK an array; CONNECT_ERROR (client-sent) is refused.
 * Returns 0, or -1 with *err static text. On success, release with
 * sio_packet_cleanup(). */
int sio_decode(struct sio_packet *p, const char *s, size_t len, const char **err);
void sio_packet_cleanup(struct sio_packet *p);

/* Checks that every {"_placeholder":true,"num":k} in data has an integer k in
 * [0, n), and that each k in [0, n) is used. Returns 0 or -1. */
int sio_check_placeholders(const json_t *data, int n);

/* Appends the encoding of a packet's text part: type, "<n>-" when
 * attachments > 0, "<nsp>," when nsp is not "/", the ack id when >= 0, then
 * data as compact JSON (nothing when NULL). Attachments are sent separately. */
void sio_encode(struct buf *out, enum sio_type type, const char *nsp, int64_t ack_id, int attachments,
                const json_t *data);

/* Assembles packets from the Engine.IO messages of one session. */
struct sio_rx {
    struct sio_packet *pending; /* a binary packet waiting for attachments, or NULL */
};

enum { SIO_RX_MORE = 0, SIO_RX_PACKET = 1, SIO_RX_ERROR = -1 };

void sio_rx_init(struct sio_rx *rx);
void sio_rx_cleanup(struct sio_rx *rx);
/* Feeds one Engine.IO message (text or binary). Returns SIO_RX_PACKET with *out
 * set (the caller owns it: sio_packet_cleanup), SIO_RX_MORE when a binary
 * packet still waits for attachments, or SIO_RX_ERROR with *err: a binary
 * message with no header pending, a text message while attachments are
 * pending, a placeholder out of range, or a decode error. */
int sio_rx_feed(struct sio_rx *rx, const uint8_t *data, size_t len, int binary, struct sio_packet *out,
                const char **err);

#endif
