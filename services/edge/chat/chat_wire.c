/* chat_wire: see chat_wire.h. Every writer returns 0, or -1 at the first
 * string that is not UTF-8 (what b holds then is not a packet). */
#include "chat_wire.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "chat_json.h"
#include "msgtype.h"

/* Length of the UTF-8 sequence at p (RFC 3629: no overlong forms, no
 * surrogates, nothing past U+10FFFF), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *p)
{
    unsigned c = p[0];
    if (c >= 0xc2 && c <= 0xdf)
        return (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        unsigned lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        return p[1] >= lo && p[1] <= hi && (p[2] & 0xc0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        return p[1] >= lo && p[1] <= hi && (p[2] & 0xc0) == 0x80 && (p[3] & 0xc0) == 0x80 ? 4 : 0;
    }
    return 0;
}

int chat_wire_string(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *run = p;
    buf_putc(b, '"');
    for (;;) {
        unsigned c = *p;
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            p++;
            continue;
        }
        buf_append(b, run, (size_t)(p - run));
        if (c == 0)
            break;
        if (c >= 0x80) { /* the NUL that ends s stops a truncated sequence */
            size_t n = utf8_len(p);
            if (!n)
                return -1;
            buf_append(b, p, n);
            p += n;
        } else {
            char esc[6] = {'\\', (char)c, 0, 0, 0, 0};
            size_t n = 2;
            if (c < 0x20) { /* control characters, 0x1e too: polling payloads stay splittable */
                memcpy(esc + 1, "u00", 3);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                n = 6;
            }
            buf_append(b, esc, n);
            p++;
        }
        run = p;
    }
    buf_putc(b, '"');
    return 0;
}

static void put_time(struct buf *b, long long ms)
{
    if (ms <= 0) {
        buf_puts(b, "null");
        return;
    }
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char out[80];
    int n = snprintf(out, sizeof out, "\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    buf_append(b, out, (size_t)n);
}

/* ,"key": then the string value */
static int put_key_str(struct buf *b, const char *key, const char *value)
{
    buf_puts(b, key);
    return chat_wire_string(b, value);
}

static void open_event(struct buf *b, const char *event)
{
    buf_puts(b, "2[\"");
    buf_puts(b, event); /* our own names: nothing to escape */
    buf_puts(b, "\",");
}

int chat_wire_presence_info(struct buf *b, const Chat__V1__PresenceInfo *p)
{
    if (put_key_str(b, "{\"userId\":", p->user_id))
        return -1;
    buf_puts(b, ",\"username\":");
    if (chat_wire_string(b, p->username))
        return -1;
    buf_puts(b, ",\"status\":\"");
    buf_puts(b, chat_json_status_name(p->status));
    buf_puts(b, "\",\"lastSeen\":");
    put_time(b, p->last_seen_ms);
    buf_putc(b, '}');
    return 0;
}

int chat_wire_presence_list(struct buf *b, const char *event, const Chat__V1__PresenceList *l)
{
    open_event(b, event);
    buf_putc(b, '[');
    int first = 1;
    for (size_t i = 0; i < l->n_users; i++) {
        if (!chat_json_presence_seen(l->users[i]))
            continue;
        if (!first)
            buf_putc(b, ',');
        first = 0;
        if (chat_wire_presence_info(b, l->users[i]))
            return -1;
    }
    buf_puts(b, "]]");
    return 0;
}

int chat_wire_status(struct buf *b, const Chat__V1__PresenceInfo *p)
{
    if (!chat_json_presence_seen(p))
        return -1;
    open_event(b, "user:status");
    if (chat_wire_presence_info(b, p))
        return -1;
    buf_putc(b, ']');
    return 0;
}

static int put_message(struct buf *b, const Chat__V1__Message *m)
{
    const char *type = msgtype_name(m->type);
    if (put_key_str(b, "{\"id\":", m->id) || put_key_str(b, ",\"senderId\":", m->sender_id) ||
        put_key_str(b, ",\"recipientId\":", m->recipient_id) || put_key_str(b, ",\"content\":", m->content) ||
        put_key_str(b, ",\"type\":", type ? type : "text"))
        return -1;
    buf_puts(b, ",\"createdAt\":");
    put_time(b, m->created_at_ms);
    buf_puts(b, ",\"readAt\":");
    put_time(b, m->read_at_ms);
    if (*m->client_message_id && put_key_str(b, ",\"clientMessageId\":", m->client_message_id))
        return -1;
    buf_putc(b, '}');
    return 0;
}

/* {"userId":...} with nothing else */
static int put_user(struct buf *b, const char *user_id)
{
    if (put_key_str(b, "{\"userId\":", user_id))
        return -1;
    buf_putc(b, '}');
    return 0;
}

int chat_wire_delivery(struct buf *b, const Chat__V1__Delivery *d, const char *offset, const char **event)
{
    int r;
    switch (d->event_case) {
    case CHAT__V1__DELIVERY__EVENT_MESSAGE_RECEIVED:
        open_event(b, *event = "message:received");
        r = put_message(b, d->message_received);
        break;
    case CHAT__V1__DELIVERY__EVENT_MESSAGE_SENT:
        open_event(b, *event = "message:sent");
        r = put_message(b, d->message_sent);
        break;
    case CHAT__V1__DELIVERY__EVENT_MESSAGE_READ:
        open_event(b, *event = "message:read");
        r = put_key_str(b, "{\"messageId\":", d->message_read->message_id);
        buf_puts(b, ",\"readAt\":");
        put_time(b, d->message_read->read_at_ms);
        buf_putc(b, '}');
        break;
    case CHAT__V1__DELIVERY__EVENT_TYPING_START:
        open_event(b, *event = "typing:start");
        r = put_key_str(b, "{\"userId\":", d->typing_start->user_id) ||
            put_key_str(b, ",\"username\":", d->typing_start->username);
        buf_putc(b, '}');
        break;
    case CHAT__V1__DELIVERY__EVENT_TYPING_STOP:
        open_event(b, *event = "typing:stop");
        r = put_user(b, d->typing_stop->user_id);
        break;
    case CHAT__V1__DELIVERY__EVENT_GHOST_TYPING:
        open_event(b, *event = "ghost:typing");
        r = put_key_str(b, "{\"userId\":", d->ghost_typing->user_id) ||
            put_key_str(b, ",\"text\":", d->ghost_typing->text);
        buf_putc(b, '}');
        break;
    case CHAT__V1__DELIVERY__EVENT_AUDIO_RECORDING_START:
        open_event(b, *event = "audio:recording:start");
        r = put_user(b, d->audio_recording_start->user_id);
        break;
    case CHAT__V1__DELIVERY__EVENT_AUDIO_RECORDING_STOP:
        open_event(b, *event = "audio:recording:stop");
        r = put_user(b, d->audio_recording_stop->user_id);
        break;
    case CHAT__V1__DELIVERY__EVENT_AUDIO_LISTENING:
        open_event(b, *event = "audio:listening");
        r = put_key_str(b, "{\"userId\":", d->audio_listening->user_id) ||
            put_key_str(b, ",\"messageId\":", d->audio_listening->message_id);
        buf_puts(b, d->audio_listening->is_playing ? ",\"isPlaying\":true}" : ",\"isPlaying\":false}");
        break;
    default:
        return -1;
    }
    if (r)
        return -1;
    if (offset) {
        buf_putc(b, ',');
        chat_wire_string(b, offset); /* digits */
    }
    buf_putc(b, ']');
    return 0;
}
