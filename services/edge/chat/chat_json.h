/* chat_json: the JSON shapes of the seed's server events, built from the
 * chat.v1 protobuf messages that arrive over NATS. Pure: jansson in, jansson
 * out. Times are ISO 8601 UTC with milliseconds; 0 ms means null. */
#ifndef CHAT_JSON_H
#define CHAT_JSON_H

#include <jansson.h>

#include "chat.pb-c.h"

/* "2026-11-27T02:33:06.123Z", or JSON null for 0. New reference. */
json_t *chat_json_time(long long ms);
/* Message: {id, senderId, recipientId, content, type, createdAt, readAt}
 * plus clientMessageId when there is one. */
json_t *chat_json_message(const Chat__V1__Message *m);
/* 1 when presence has ever seen the user (it has a lastSeen): only those are
 * shown to clients, whose PresenceInfo has a string lastSeen, never null. */
int chat_json_presence_seen(const Chat__V1__PresenceInfo *p);
/* PresenceInfo: {userId, username, status, lastSeen}, all strings. */
json_t *chat_json_presence(const Chat__V1__PresenceInfo *p);
/* An array of the PresenceInfo of the users ever seen, in order. */
json_t *chat_json_presence_list(const Chat__V1__PresenceList *l);
/* Conversation: {withUserId, username, lastMessage: Message, unread}; NULL
 * for one without its last message (never sent by messaging). */
json_t *chat_json_conversation(const Chat__V1__Conversation *c);
/* The conversation:list ack: {ok: true, conversations: [Conversation],
 * nextBefore: the cursor of the last one ("<µs>.<withUserId>") when more
 * follow, else null}. */
json_t *chat_json_conversation_page(const Chat__V1__ConversationList *l);
/* Status names: "online", "away", "offline"; unknown -> STATUS_UNSPECIFIED. */
const char *chat_json_status_name(Chat__V1__Status s);
Chat__V1__Status chat_json_status(const char *name);

#endif
