/* msgtype: the wire names of chat.v1 MessageType ("text", "audio", "image"),
 * shared by the edge (JSON) and messaging (the messages.type column). */
#ifndef MSGTYPE_H
#define MSGTYPE_H

#include "chat.pb-c.h"

/* The name of t, or NULL for an unknown type. */
const char *msgtype_name(Chat__V1__MessageType t);
/* The type named name, or MESSAGE_TYPE_UNSPECIFIED (0). */
Chat__V1__MessageType msgtype_parse(const char *name);

#endif
