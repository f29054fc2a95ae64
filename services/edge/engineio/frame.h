/* frame: an Engine.IO output packet, encoded once and shared by every session
 * it is queued for (a broadcast costs one encoding whatever the number of
 * sockets). Text frames hold "<type digit><payload>", binary frames the raw
 * bytes, at frame_data(). The WebSocket frame header for it (RFC 6455 §5.2,
 * server to client: unmasked) sits right before the data, in FRAME_HEAD bytes
 * of headroom, so that frame_ws() is the whole WebSocket frame and a
 * WebSocket transport writes it without a copy. Pure. */
#ifndef FRAME_H
#define FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "eio.h"

#define FRAME_HEAD 10

struct frame {
    uint32_t refs;
    uint32_t queues; /* how many session queues hold it (session.c: its bytes count once) */
    uint8_t binary;
    uint8_t ws_hlen;   /* WebSocket header bytes before the data */
    size_t len;        /* data bytes */
    uint64_t coalesce; /* 0, or a key: queued behind a frame with the same key, it takes its place */
    /* 1: its size is the server's doing, not the peer's (a socket's first
     * list of who is online, as long as everyone online): the session's queue
     * bound and read-pause mark do not count it while it is the only such
     * frame queued (session.c). 0 for every other frame. */
    uint8_t unbounded;
    unsigned char buf[];
};

/* A text packet of the given type (one reference: the caller's). */
struct frame *frame_text(enum eio_type type, const void *payload, size_t len);
/* A binary message packet (one reference: the caller's). */
struct frame *frame_binary(const void *data, size_t len);
/* Drops a reference; the last one frees f. Accepts NULL. */
void frame_unref(struct frame *f);
static inline unsigned char *frame_data(struct frame *f)
{
    return f->buf + FRAME_HEAD;
}
/* The WebSocket frame: header + data, *len bytes. */
static inline unsigned char *frame_ws(struct frame *f, size_t *len)
{
    *len = f->ws_hlen + f->len;
    return f->buf + FRAME_HEAD - f->ws_hlen;
}

#endif
