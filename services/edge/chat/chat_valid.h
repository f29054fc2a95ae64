/* chat_valid: the payload checks of the client events of the README's event
 * table, pure: a json_t in, the validated fields out. No
 * NATS, no sockets, no globals, so it is unit-tested and fuzzed alone. */
#ifndef CHAT_VALID_H
#define CHAT_VALID_H

#include <jansson.h>
#include <stddef.h>

#include "chat.pb-c.h"
#include "ids.h"

#define CHAT_VALID_HISTORY_MAX 100          /* largest message:history limit */
#define CHAT_VALID_HISTORY_DEFAULT 50       /* limit when the client gives none */
#define CHAT_VALID_CLIENT_ID_MAX 64         /* longest clientMessageId, bytes */
#define CHAT_VALID_CONVERSATIONS_MAX 50     /* largest conversation:list limit */
#define CHAT_VALID_CONVERSATIONS_DEFAULT 20 /* limit when the client gives none */
/* A conversation:list cursor: "<Unix microseconds>.<uuid>", the digits
 * without a leading zero (at most 16 of them); opaque to clients. */
#define CHAT_VALID_CURSOR_MAX (16 + 1 + IDS_UUID_LEN)

/* Every function below takes the event's argument (any JSON value; the
 * caller has checked it is an object or an array) and returns 0 with *out
 * filled, or -1 with *code and *msg set to static text (the chat:error code
 * and message) and *out unspecified. Uuids are copied lowercased
 * (ids_uuid_norm); strings marked "borrowed" point into arg and live as long
 * as it does. */

/* typing:start, typing:stop, audio:recording:start/stop: {recipientId}. */
struct chat_valid_recipient {
    char to[IDS_UUID_LEN + 1];
};
int chat_valid_recipient(struct chat_valid_recipient *out, const json_t *arg, const char **code,
                         const char **msg);

/* ghost:typing {recipientId, text}: text at most max_text bytes. */
struct chat_valid_ghost {
    char to[IDS_UUID_LEN + 1];
    const char *text; /* borrowed */
};
int chat_valid_ghost(struct chat_valid_ghost *out, const json_t *arg, size_t max_text, const char **code,
                     const char **msg);

/* audio:listening {messageId, senderId, isPlaying}. */
struct chat_valid_listening {
    char message_id[IDS_UUID_LEN + 1];
    char to[IDS_UUID_LEN + 1]; /* senderId: who is told */
    int is_playing;
};
int chat_valid_listening(struct chat_valid_listening *out, const json_t *arg, const char **code,
                         const char **msg);

/* message:send {recipientId, content, type, clientMessageId?}: content
 * 1..max_bytes bytes; clientMessageId absent, null or 1..64 bytes. */
struct chat_valid_send {
    char to[IDS_UUID_LEN + 1];
    Chat__V1__MessageType type;
    const char *content; /* borrowed */
    size_t content_len;
    const char *client_message_id; /* borrowed; "" when absent or null */
};
int chat_valid_send(struct chat_valid_send *out, const json_t *arg, size_t max_bytes, const char **code,
                    const char **msg);

/* message:read {messageId, senderId?}: senderId, when present, must be a
 * uuid (it is only a hint; messaging uses the stored sender). */
struct chat_valid_read {
    char message_id[IDS_UUID_LEN + 1];
    char sender_id[IDS_UUID_LEN + 1]; /* "" when absent */
};
int chat_valid_read(struct chat_valid_read *out, const json_t *arg, const char **code, const char **msg);

/* message:history {withUserId, before?, limit?}: before absent, null or a
 * uuid; limit absent, null or an integer 1..100 (default 50). Whether the
 * event carries an ack id is the handler's check, not the payload's. */
struct chat_valid_history {
    char with[IDS_UUID_LEN + 1];
    char before[IDS_UUID_LEN + 1]; /* "" when absent or null */
    unsigned limit;
};
int chat_valid_history(struct chat_valid_history *out, const json_t *arg, const char **code,
                       const char **msg);

/* conversation:list {before?, limit?}: before absent, null or a cursor (the
 * nextBefore of the previous page); limit absent, null or an integer 1..50
 * (default 20). Whether the event carries an ack id is the handler's check. */
struct chat_valid_conversations {
    long long before_us;                /* 0 when absent */
    char before_with[IDS_UUID_LEN + 1]; /* "" when absent or null */
    unsigned limit;
};
int chat_valid_conversations(struct chat_valid_conversations *out, const json_t *arg, const char **code,
                             const char **msg);
/* Parses a cursor (len bytes, not NUL-terminated): 0 with *us and with (the
 * uuid lowercased), or -1. */
int chat_valid_cursor(const char *s, size_t len, long long *us, char with[IDS_UUID_LEN + 1]);

/* conversation:read {withUserId, upTo}: both uuids. */
struct chat_valid_conversation_read {
    char with[IDS_UUID_LEN + 1];
    char up_to[IDS_UUID_LEN + 1];
};
int chat_valid_conversation_read(struct chat_valid_conversation_read *out, const json_t *arg,
                                 const char **code, const char **msg);

/* presence:update {status}: "online", "away" or "offline". */
struct chat_valid_status {
    Chat__V1__Status status;
};
int chat_valid_status(struct chat_valid_status *out, const json_t *arg, const char **code, const char **msg);

/* presence:request [ids]: at most max_ids uuids. On 0, out holds n ids and
 * ptrs[i] == ids[i]; release with chat_valid_ids_cleanup(). On -1 out holds
 * nothing (cleanup is then a harmless no-op). */
struct chat_valid_ids {
    size_t n;
    char (*ids)[IDS_UUID_LEN + 1];
    char **ptrs; /* the shape protobuf-c's repeated string wants */
};
int chat_valid_ids(struct chat_valid_ids *out, const json_t *arg, size_t max_ids, const char **code,
                   const char **msg);
void chat_valid_ids_cleanup(struct chat_valid_ids *out);

#endif
