/* chat_wire: the server events that go to many sockets, or that carry long
 * lists, written straight from the chat.v1 protobuf messages into Socket.IO
 * EVENT packets (namespace "/", no ack id) without building JSON trees. The
 * JSON is what jansson would build (tests/unit/test_chat_wire.c compares
 * them with chat_json.h's shapes, which the acks use). Strings must be UTF-8: anything else
 * makes the call fail, as jansson would. Pure. */
#ifndef CHAT_WIRE_H
#define CHAT_WIRE_H

#include "chat.pb-c.h"
#include "mem.h"

/* 2["<event>",[{userId, username, status, lastSeen}, ...]]: the users that
 * were ever seen (chat_json_presence_seen), in order. */
int chat_wire_presence_list(struct buf *b, const char *event, const Chat__V1__PresenceList *l);
/* {userId, username, status, lastSeen}: one entry of those lists, alone (the
 * caller checks chat_json_presence_seen). */
int chat_wire_presence_info(struct buf *b, const Chat__V1__PresenceInfo *p);
/* 2["user:status",{userId, username, status, lastSeen}]; -1 for a user never
 * seen (no lastSeen: nothing to say). */
int chat_wire_status(struct buf *b, const Chat__V1__PresenceInfo *p);
/* 2["<event>",{...}] for a Delivery (the README's event table, with
 * chat_json_message for messages); *event is set to the event name. offset
 * (not NULL): 2["<event>",{...},"<offset>"], a recoverable event with its
 * recovery offset (recovery.h). */
int chat_wire_delivery(struct buf *b, const Chat__V1__Delivery *d, const char *offset, const char **event);
/* Appends s as a JSON string (quotes included). Returns 0, or -1 when s is
 * not UTF-8. */
int chat_wire_string(struct buf *b, const char *s);

#endif
