/* chat_valid: the checks the chat runs on each event's payload before acting
 * on it, in the order they are reported (the first failing field wins). The
 * codes and messages are the chat:error ones clients see, so they must not
 * change. It does not know who sends the event or whether NATS is up: the
 * handlers in chat_events.c do. */
#include "chat_valid.h"

#include <stdlib.h>
#include <string.h>

#include "chat_json.h"
#include "msgtype.h"
#include "mem.h"

/* The Socket.IO decoder accepts "\u0000" (valid JSON); C strings, protobuf and
 * PostgreSQL text cannot carry it, so text fields refuse it. */
static int has_nul(const json_t *s)
{
    return memchr(json_string_value(s), '\0', json_string_length(s)) != NULL;
}

static int fail(const char **code, const char **msg, const char *c, const char *m)
{
    *code = c;
    *msg = m;
    return -1;
}

static int bad_request(const char **code, const char **msg, const char *m)
{
    return fail(code, msg, "bad_request", m);
}

/* A required uuid field of obj, lowercased into out. */
static int get_uuid(const json_t *obj, const char *key, char *out, const char **code, const char **msg)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_string(v) || ids_uuid_norm(out, json_string_value(v), json_string_length(v)) != 0)
        return bad_request(code, msg, !v ? "a required id field is missing" : "an id field is not a uuid");
    return 0;
}

int chat_valid_recipient(struct chat_valid_recipient *out, const json_t *arg, const char **code,
                         const char **msg)
{
    return get_uuid(arg, "recipientId", out->to, code, msg);
}

int chat_valid_ghost(struct chat_valid_ghost *out, const json_t *arg, size_t max_text, const char **code,
                     const char **msg)
{
    if (get_uuid(arg, "recipientId", out->to, code, msg))
        return -1;
    const json_t *text = json_object_get(arg, "text");
    if (!json_is_string(text))
        return bad_request(code, msg, "text must be a string");
    if (json_string_length(text) > max_text)
        return fail(code, msg, "too_large", "text is longer than EDGE_MAX_GHOST_TEXT bytes");
    if (has_nul(text))
        return bad_request(code, msg, "text must not contain U+0000");
    out->text = json_string_value(text);
    return 0;
}

int chat_valid_listening(struct chat_valid_listening *out, const json_t *arg, const char **code,
                         const char **msg)
{
    if (get_uuid(arg, "messageId", out->message_id, code, msg) ||
        get_uuid(arg, "senderId", out->to, code, msg))
        return -1;
    const json_t *playing = json_object_get(arg, "isPlaying");
    if (!json_is_boolean(playing))
        return bad_request(code, msg, "isPlaying must be a boolean");
    out->is_playing = json_is_true(playing);
    return 0;
}

int chat_valid_send(struct chat_valid_send *out, const json_t *arg, size_t max_bytes, const char **code,
                    const char **msg)
{
    if (get_uuid(arg, "recipientId", out->to, code, msg))
        return -1;
    const json_t *type = json_object_get(arg, "type");
    const json_t *content = json_object_get(arg, "content");
    const json_t *cmid = json_object_get(arg, "clientMessageId");
    /* has_nul: strcmp would take "text\u0000x" for "text". */
    if (!json_is_string(type) || has_nul(type) || msgtype_parse(json_string_value(type)) == 0)
        return bad_request(code, msg, "type must be text, audio or image");
    if (!json_is_string(content) || json_string_length(content) == 0)
        return bad_request(code, msg, "content must be a non-empty string");
    if (json_string_length(content) > max_bytes)
        return fail(code, msg, "too_large", "content is longer than EDGE_MAX_MESSAGE_BYTES bytes");
    if (has_nul(content))
        return bad_request(code, msg, "content must not contain U+0000");
    if (cmid && !json_is_null(cmid) &&
        (!json_is_string(cmid) || json_string_length(cmid) == 0 ||
         json_string_length(cmid) > CHAT_VALID_CLIENT_ID_MAX))
        return bad_request(code, msg, "clientMessageId must be a string of 1 to 64 bytes");
    if (json_is_string(cmid) && has_nul(cmid))
        return bad_request(code, msg, "clientMessageId must not contain U+0000");
    out->type = msgtype_parse(json_string_value(type));
    out->content = json_string_value(content);
    out->content_len = json_string_length(content);
    out->client_message_id = json_is_string(cmid) ? json_string_value(cmid) : "";
    return 0;
}

int chat_valid_read(struct chat_valid_read *out, const json_t *arg, const char **code, const char **msg)
{
    if (get_uuid(arg, "messageId", out->message_id, code, msg))
        return -1;
    out->sender_id[0] = '\0';
    /* Present means checked, null included: null is not a uuid. */
    if (json_object_get(arg, "senderId") && get_uuid(arg, "senderId", out->sender_id, code, msg))
        return -1;
    return 0;
}

int chat_valid_history(struct chat_valid_history *out, const json_t *arg, const char **code, const char **msg)
{
    if (get_uuid(arg, "withUserId", out->with, code, msg))
        return -1;
    out->before[0] = '\0';
    const json_t *b = json_object_get(arg, "before");
    if (b && !json_is_null(b) && get_uuid(arg, "before", out->before, code, msg))
        return -1;
    const json_t *lim = json_object_get(arg, "limit");
    out->limit = CHAT_VALID_HISTORY_DEFAULT;
    if (lim && !json_is_null(lim)) {
        if (!json_is_integer(lim) || json_integer_value(lim) < 1 ||
            json_integer_value(lim) > CHAT_VALID_HISTORY_MAX)
            return bad_request(code, msg, "limit must be an integer from 1 to 100");
        out->limit = (unsigned)json_integer_value(lim);
    }
    return 0;
}

int chat_valid_cursor(const char *s, size_t len, long long *us, char with[IDS_UUID_LEN + 1])
{
    const char *dot = memchr(s, '.', len);
    size_t digits = dot ? (size_t)(dot - s) : 0;
    if (!dot || digits < 1 || digits > 16 || (digits > 1 && s[0] == '0'))
        return -1;
    long long v = 0;
    for (size_t i = 0; i < digits; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0'); /* 16 digits: no overflow */
    }
    if (ids_uuid_norm(with, dot + 1, len - digits - 1) != 0)
        return -1;
    *us = v;
    return 0;
}

int chat_valid_conversations(struct chat_valid_conversations *out, const json_t *arg, const char **code,
                             const char **msg)
{
    out->before_us = 0;
    out->before_with[0] = '\0';
    const json_t *b = json_object_get(arg, "before");
    if (b && !json_is_null(b) &&
        (!json_is_string(b) || chat_valid_cursor(json_string_value(b), json_string_length(b), &out->before_us,
                                                 out->before_with) != 0))
        return bad_request(code, msg, "before must be the nextBefore of a previous page");
    const json_t *lim = json_object_get(arg, "limit");
    out->limit = CHAT_VALID_CONVERSATIONS_DEFAULT;
    if (lim && !json_is_null(lim)) {
        if (!json_is_integer(lim) || json_integer_value(lim) < 1 ||
            json_integer_value(lim) > CHAT_VALID_CONVERSATIONS_MAX)
            return bad_request(code, msg, "limit must be an integer from 1 to 50");
        out->limit = (unsigned)json_integer_value(lim);
    }
    return 0;
}

int chat_valid_conversation_read(struct chat_valid_conversation_read *out, const json_t *arg,
                                 const char **code, const char **msg)
{
    if (get_uuid(arg, "withUserId", out->with, code, msg) || get_uuid(arg, "upTo", out->up_to, code, msg))
        return -1;
    return 0;
}

int chat_valid_status(struct chat_valid_status *out, const json_t *arg, const char **code, const char **msg)
{
    const json_t *st = json_object_get(arg, "status");
    out->status = json_is_string(st) && !has_nul(st) ? chat_json_status(json_string_value(st)) : 0;
    if (out->status == CHAT__V1__STATUS__STATUS_UNSPECIFIED)
        return bad_request(code, msg, "status must be online, away or offline");
    return 0;
}

int chat_valid_ids(struct chat_valid_ids *out, const json_t *arg, size_t max_ids, const char **code,
                   const char **msg)
{
    memset(out, 0, sizeof *out);
    size_t n = json_array_size(arg);
    if (n > max_ids)
        return fail(code, msg, "too_large", "more user ids than EDGE_MAX_PRESENCE_QUERY");
    out->ids = xcalloc(n ? n : 1, sizeof *out->ids);
    out->ptrs = xcalloc(n ? n : 1, sizeof *out->ptrs);
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(arg, i);
        if (!json_is_string(v) ||
            ids_uuid_norm(out->ids[i], json_string_value(v), json_string_length(v)) != 0) {
            chat_valid_ids_cleanup(out);
            return bad_request(code, msg, "every entry must be a user id (uuid)");
        }
        out->ptrs[i] = out->ids[i];
    }
    out->n = n;
    return 0;
}

void chat_valid_ids_cleanup(struct chat_valid_ids *out)
{
    free(out->ids);
    free(out->ptrs);
    memset(out, 0, sizeof *out);
}
