/* msgtype: one table for both directions. */
#include "msgtype.h"

#include <string.h>

static const struct {
    Chat__V1__MessageType type;
    const char *name;
} types[] = {
    {CHAT__V1__MESSAGE_TYPE__MESSAGE_TYPE_TEXT, "text"},
    {CHAT__V1__MESSAGE_TYPE__MESSAGE_TYPE_AUDIO, "audio"},
    {CHAT__V1__MESSAGE_TYPE__MESSAGE_TYPE_IMAGE, "image"},
};

const char *msgtype_name(Chat__V1__MessageType t)
{
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (types[i].type == t)
            return types[i].name;
    return NULL;
}

Chat__V1__MessageType msgtype_parse(const char *name)
{
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(types[i].name, name) == 0)
            return types[i].type;
    return CHAT__V1__MESSAGE_TYPE__MESSAGE_TYPE_UNSPECIFIED;
}
