/* chat_json: protobuf -> JSON for the server events of the README's event
 * table (docs/schema/chat.schema.json is the machine-checked form). */
#include "chat_json.h"

#include "msgtype.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

json_t *chat_json_time(long long ms)
{
    if (ms <= 0)
        return json_null();
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char out[80];
    snprintf(out, sizeof out, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    return json_string(out);
}

const char *chat_json_status_name(Chat__V1__Status s)
{
    switch (s) {
    case CHAT__V1__STATUS__STATUS_ONLINE:
        return "online";
    case CHAT__V1__STATUS__STATUS_AWAY:
        return "away";
    default:
        return "offline";
    }
}

Chat__V1__Status chat_json_status(const char *name)
{
    if (strcmp(name, "online") == 0)
        return CHAT__V1__STATUS__STATUS_ONLINE;
    if (strcmp(name, "away") == 0)
        return CHAT__V1__STATUS__STATUS_AWAY;
    if (strcmp(name, "offline") == 0)
        return CHAT__V1__STATUS__STATUS_OFFLINE;
    return CHAT__V1__STATUS__STATUS_UNSPECIFIED;
}

json_t *chat_json_message(const Chat__V1__Message *m)
{
    const char *type = msgtype_name(m->type);
    json_t *o =
        json_pack("{s:s,s:s,s:s,s:s,s:s,s:o,s:o}", "id", m->id, "senderId", m->sender_id, "recipientId",
                  m->recipient_id, "content", m->content, "type", type ? type : "text", "createdAt",
                  chat_json_time(m->created_at_ms), "readAt", chat_json_time(m->read_at_ms));
    if (o && *m->client_message_id)
        json_object_set_new(o, "clientMessageId", json_string(m->client_message_id));
    return o;
}

int chat_json_presence_seen(const Chat__V1__PresenceInfo *p)
{
    return p->last_seen_ms > 0;
}

json_t *chat_json_presence(const Chat__V1__PresenceInfo *p)
{
    return json_pack("{s:s,s:s,s:s,s:o}", "userId", p->user_id, "username", p->username, "status",
                     chat_json_status_name(p->status), "lastSeen", chat_json_time(p->last_seen_ms));
}

json_t *chat_json_presence_list(const Chat__V1__PresenceList *l)
{
    json_t *a = json_array();
    for (size_t i = 0; i < l->n_users; i++)
        if (chat_json_presence_seen(l->users[i]))
            json_array_append_new(a, chat_json_presence(l->users[i]));
    return a;
}

json_t *chat_json_conversation(const Chat__V1__Conversation *c)
{
    if (!c->last_message)
        return NULL;
    return json_pack("{s:s,s:s,s:o,s:I}", "withUserId", c->with_user_id, "username", c->username,
                     "lastMessage", chat_json_message(c->last_message), "unread", (json_int_t)c->unread);
}

json_t *chat_json_conversation_page(const Chat__V1__ConversationList *l)
{
    json_t *a = json_array();
    const Chat__V1__Conversation *last = NULL;
    for (size_t i = 0; i < l->n_conversations; i++) {
        json_t *c = chat_json_conversation(l->conversations[i]);
        if (c) {
            json_array_append_new(a, c);
            last = l->conversations[i];
        }
    }
    json_t *next = json_null();
    if (l->more && last && last->last_at_us > 0) {
        char cursor[64];
        snprintf(cursor, sizeof cursor, "%lld.%s", (long long)last->last_at_us, last->with_user_id);
        json_decref(next);
        next = json_string(cursor);
    }
    return json_pack("{s:b,s:o,s:o}", "ok", 1, "conversations", a, "nextBefore", next);
}
