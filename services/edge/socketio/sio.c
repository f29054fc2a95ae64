/* sio: Socket.IO v5 packet codec (docs/protocol.md §3).
 * Decodes the text of a packet, checks the JSON payload shape each type
 * requires (jansson), encodes packets, and joins a binary packet to its
 * attachments. Pure: no sockets, clock or globals. Input is untrusted, so every
 * field is bounded; it does not know which namespaces exist or are joined. */
#include "sio.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* §3.2: ack ids are JS numbers; 15 digits keep them exact (below 2^53) and
 * far from int64 overflow. */
#define SIO_MAX_ACK_DIGITS 15

/* §3.2: event names the reference server refuses, since they are its own
 * lifecycle events. */
static const char *const reserved_events[] = {
    "connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener",
};

static int fail(const char **err, const char *text)
{
    *err = text;
    return -1;
}

static void packet_reset(struct sio_packet *p)
{
    memset(p, 0, sizeof *p);
    p->nsp[0] = '/';
    p->ack_id = -1;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Counts the decimal digits at s, stopping at limit. */
static size_t count_digits(const char *s, size_t len, size_t limit)
{
    size_t n = 0;
    while (n < len && n < limit && is_digit(s[n]))
        n++;
    return n;
}

/* A namespace is echoed back to the client (`44/<nsp>,...`, §3.3) and may end
 * up in JSON or protobuf strings, so it must be valid UTF-8 (no overlongs,
 * surrogates or code points past U+10FFFF) without control characters (NUL
 * would cut the C string; 0x1e would split a polling payload). */
static int nsp_chars_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned long cp, min;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            need = 2, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i - 1 < need)
            return 0;
        for (size_t k = 1; k <= need; k++) {
            unsigned d = s[i + k];
            if ((d & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (d & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += need + 1;
    }
    return 1;
}

/* §3.2 "Payload validity": the shape each type requires. */
static int check_shape(const struct sio_packet *p, const char **err)
{
    const json_t *d = p->data;
    switch (p->type) {
    case SIO_CONNECT:
        /* The payload is the client's auth option; absent means none (§3.3). */
        if (d && !json_is_object(d))
            return fail(err, "CONNECT payload is not an object");
        return 0;
    case SIO_DISCONNECT:
        if (d)
            return fail(err, "DISCONNECT takes no payload");
        return 0;
    case SIO_EVENT:
    case SIO_BINARY_EVENT: {
        if (!json_is_array(d) || json_array_size(d) == 0)
            return fail(err, "EVENT payload is not a non-empty array");
        const json_t *name = json_array_get(d, 0);
        if (json_is_number(name))
            return 0;
        if (!json_is_string(name))
            return fail(err, "event name is not a string or number");
        /* jansson refuses \u0000 without JSON_ALLOW_NUL, so strcmp sees it all. */
        for (size_t i = 0; i < sizeof reserved_events / sizeof reserved_events[0]; i++)
            if (strcmp(json_string_value(name), reserved_events[i]) == 0)
                return fail(err, "reserved event name");
        return 0;
    }
    case SIO_ACK:
    case SIO_BINARY_ACK:
        /* §3.4: the array holds the ack callback's arguments; it may be empty. */
        if (!json_is_array(d))
            return fail(err, "ACK payload is not an array");
        return 0;
    case SIO_CONNECT_ERROR:
        break;
    }
    return fail(err, "CONNECT_ERROR is only sent by the server");
}

/* Grammar (§3.2): <type> [<count> "-"] [<nsp> ","] [<ack id>] [<JSON>]. */
int sio_decode(struct sio_packet *p, const char *s, size_t len, const char **err)
{
    packet_reset(p);
    if (len == 0)
        return fail(err, "empty packet");
    if (s[0] < '0' || s[0] > '6')
        return fail(err, "packet type is not a digit 0..6");
    p->type = (enum sio_type)(s[0] - '0');
    size_t pos = 1;

    /* §3.3: a client never sends CONNECT_ERROR; refuse it before parsing. */
    if (p->type == SIO_CONNECT_ERROR)
        return fail(err, "CONNECT_ERROR is only sent by the server");

    /* Attachment header, types 5/6 only (§3.5). The value saturates just
     * above the limit, so any number of digits is safe. */
    int binary = p->type == SIO_BINARY_EVENT || p->type == SIO_BINARY_ACK;
    size_t nd = count_digits(s + pos, len - pos, len);
    if (pos + nd < len && s[pos + nd] == '-') {
        if (!binary)
            return fail(err, "attachment header on a non-binary packet");
        if (nd == 0)
            return fail(err, "attachment count missing");
        int count = 0;
        for (size_t i = 0; i < nd; i++) {
            count = count * 10 + (s[pos + i] - '0');
            if (count > SIO_MAX_ATTACHMENTS)
                return fail(err, "too many attachments");
        }
        if (count < 1)
            return fail(err, "attachment count is zero");
        p->attachments = count;
        pos += nd + 1;
    } else if (binary) {
        return fail(err, "binary packet without attachment header");
    }

    /* Namespace: from '/' to the first ',' or to the end; the reference
     * suite sends "40/custom" with no comma (§3.2). */
    if (pos < len && s[pos] == '/') {
        const char *comma = memchr(s + pos, ',', len - pos);
        size_t n = comma ? (size_t)(comma - (s + pos)) : len - pos;
        if (n > SIO_MAX_NSP)
            return fail(err, "namespace too long");
        if (!nsp_chars_ok((const unsigned char *)s + pos, n))
            return fail(err, "namespace has control characters or bad UTF-8");
        memcpy(p->nsp, s + pos, n);
        p->nsp[n] = '\0';
        pos += n + (comma ? 1 : 0);
    }

    /* Ack id: digits right after the namespace or the header (§3.2). */
    nd = count_digits(s + pos, len - pos, SIO_MAX_ACK_DIGITS + 1);
    if (nd > SIO_MAX_ACK_DIGITS)
        return fail(err, "ack id too long");
    if (nd > 0) {
        int64_t id = 0;
        for (size_t i = 0; i < nd; i++)
            id = id * 10 + (s[pos + i] - '0');
        p->ack_id = id;
        pos += nd;
    }
    /* §3.4: acks are requested by events and answered by acks; on the other
     * types an id means nothing, and an ack without one answers nothing. */
    if (p->ack_id >= 0 && (p->type == SIO_CONNECT || p->type == SIO_DISCONNECT))
        return fail(err, "ack id on a packet type that takes none");
    if (p->ack_id < 0 && (p->type == SIO_ACK || p->type == SIO_BINARY_ACK))
        return fail(err, "ACK without an ack id");

    /* What remains is JSON or nothing. Without JSON_DECODE_ANY jansson only
     * accepts an array or object at the top, and it refuses trailing bytes,
     * so "42abc[...]" fails here (§3.7). "\u0000" is valid JSON (a JS peer
     * sends it): strings may hold NUL, so users of their values must go by
     * json_string_length, not strlen. */
    if (pos < len) {
        json_error_t e;
        p->data = json_loadb(s + pos, len - pos, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
        if (!p->data)
            return fail(err, "payload is not valid JSON");
    }
    if (check_shape(p, err) < 0) {
        sio_packet_cleanup(p);
        return -1;
    }
    return 0;
}

void sio_packet_cleanup(struct sio_packet *p)
{
    if (!p)
        return;
    json_decref(p->data);
    for (int i = 0; i < p->natt; i++)
        free(p->att[i].data);
    packet_reset(p);
}

/* §3.5: a placeholder is an object whose "_placeholder" is true (the
 * reference decoder ignores its other keys); its "num" must be an integer
 * naming a received attachment. used[] records which ones are referenced. */
static int walk_placeholders(const json_t *v, int n, unsigned char *used)
{
    if (json_is_object(v)) {
        if (json_is_true(json_object_get(v, "_placeholder"))) {
            const json_t *num = json_object_get(v, "num");
            if (!json_is_integer(num))
                return -1;
            json_int_t k = json_integer_value(num);
            if (k < 0 || k >= n)
                return -1;
            used[k] = 1;
            return 0;
        }
        const char *key;
        json_t *child;
        /* The cast only satisfies the macro; nothing is modified. */
        json_object_foreach((json_t *)v, key, child)
        {
            if (walk_placeholders(child, n, used) < 0)
                return -1;
        }
        return 0;
    }
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (walk_placeholders(json_array_get(v, i), n, used) < 0)
                return -1;
    }
    return 0;
}

int sio_check_placeholders(const json_t *data, int n)
{
    unsigned char used[SIO_MAX_ATTACHMENTS] = {0};
    if (n < 0 || n > SIO_MAX_ATTACHMENTS)
        return -1;
    if (data && walk_placeholders(data, n, used) < 0)
        return -1;
    for (int k = 0; k < n; k++)
        if (!used[k])
            return -1;
    return 0;
}

static int dump_to_buf(const char *chunk, size_t size, void *data)
{
    buf_append(data, chunk, size);
    return 0;
}

/* The arguments come from our own code, so bad ones are a broken invariant
 * (assert), not peer input. A namespace with ',' could not be decoded back. */
void sio_encode(struct buf *out, enum sio_type type, const char *nsp, int64_t ack_id, int attachments,
                const json_t *data)
{
    assert(type >= SIO_CONNECT && type <= SIO_BINARY_ACK);
    assert(attachments >= 0 && attachments <= SIO_MAX_ATTACHMENTS);
    assert(nsp && nsp[0] == '/' && !strchr(nsp, ','));
    assert(!data || json_is_array(data) || json_is_object(data));

    buf_putc(out, (char)('0' + type));
    if (attachments > 0) {
        buf_putu64(out, (unsigned long long)attachments);
        buf_putc(out, '-');
    }
    /* §3.2: the namespace is written only when it is not "/", and encoders
     * always add the ','. */
    if (strcmp(nsp, "/") != 0) {
        buf_puts(out, nsp);
        buf_putc(out, ',');
    }
    if (ack_id >= 0)
        buf_putu64(out, (unsigned long long)ack_id);
    if (data) {
        /* Compact, key order kept, UTF-8 left as is; control characters (so
         * 0x1e too) are escaped, which keeps polling payloads splittable. */
        int rc = json_dump_callback(data, dump_to_buf, out, JSON_COMPACT);
        assert(rc == 0);
        (void)rc;
    }
}

void sio_rx_init(struct sio_rx *rx)
{
    rx->pending = NULL;
}

void sio_rx_cleanup(struct sio_rx *rx)
{
    if (rx->pending) {
        sio_packet_cleanup(rx->pending);
        free(rx->pending);
    }
    rx->pending = NULL;
}

/* §3.5 receiver rules. Any error drops the pending packet, so rx is ready
 * for a fresh header (though the caller normally closes the session). */
int sio_rx_feed(struct sio_rx *rx, const uint8_t *data, size_t len, int binary, struct sio_packet *out,
                const char **err)
{
    if (binary) {
        struct sio_packet *pp = rx->pending;
        if (!pp)
            return fail(err, "binary message with no header pending");
        struct sio_attachment *a = &pp->att[pp->natt++];
        a->data = xmalloc(len);
        if (len)
            memcpy(a->data, data, len);
        a->len = len;
        if (pp->natt < pp->attachments)
            return SIO_RX_MORE;
        if (sio_check_placeholders(pp->data, pp->attachments) < 0) {
            sio_rx_cleanup(rx);
            return fail(err, "placeholder out of range or attachment unused");
        }
        *out = *pp; /* moves ownership of data and att[] */
        free(pp);
        rx->pending = NULL;
        return SIO_RX_PACKET;
    }

    if (rx->pending) {
        sio_rx_cleanup(rx);
        return fail(err, "text message while attachments are pending");
    }
    struct sio_packet p;
    if (sio_decode(&p, (const char *)data, len, err) < 0)
        return SIO_RX_ERROR;
    if (p.attachments > 0) {
        rx->pending = xmalloc(sizeof *rx->pending);
        *rx->pending = p;
        return SIO_RX_MORE;
    }
    *out = p;
    return SIO_RX_PACKET;
}
