/* frame: see frame.h. */
#include "frame.h"

#include <stdlib.h>
#include <string.h>

#include "mem.h"

static struct frame *frame_new(size_t len, int binary)
{
    struct frame *f = xmalloc(sizeof *f + FRAME_HEAD + len);
    f->refs = 1;
    f->queues = 0;
    f->len = len;
    f->coalesce = 0;
    f->unbounded = 0;
    f->binary = (uint8_t)binary;
    unsigned char h[FRAME_HEAD]; /* RFC 6455 §5.2: FIN, opcode, length; no mask */
    h[0] = 0x80 | (binary ? 0x2 : 0x1);
    if (len < 126) {
        h[1] = (unsigned char)len;
        f->ws_hlen = 2;
    } else if (len <= 0xffff) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        f->ws_hlen = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
        f->ws_hlen = 10;
    }
    memcpy(f->buf + FRAME_HEAD - f->ws_hlen, h, f->ws_hlen); /* it ends where the data starts */
    return f;
}

struct frame *frame_text(enum eio_type type, const void *payload, size_t len)
{
    struct frame *f = frame_new(len + 1, 0);
    frame_data(f)[0] = (unsigned char)('0' + type);
    if (len)
        memcpy(frame_data(f) + 1, payload, len);
    return f;
}

struct frame *frame_binary(const void *data, size_t len)
{
    struct frame *f = frame_new(len, 1);
    if (len)
        memcpy(frame_data(f), data, len);
    return f;
}

void frame_unref(struct frame *f)
{
    if (f && --f->refs == 0)
        free(f);
}
