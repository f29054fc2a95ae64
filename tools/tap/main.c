/* chat-tap: prints chat events as JSON lines, one per NATS message, decoded
 * from the chat.v1 protobuf by subject, for analytics and debugging.
 *   chat-tap [--since TIME] SUBJECT...
 * With --since (seconds ago, e.g. 3600, or Unix seconds), it replays the
 * JetStream stream CHAT_EVENTS from that time (an ordered consumer) before
 * going live; otherwise it subscribes to the live subjects (wildcards
 * allowed, e.g. 'chat.>'). Output: {"subject":..., "type":..., "data":{...}}.
 * NATS_URL says where NATS is: one URL, or a cluster's comma-separated. */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "chat.pb-c.h"
#include "log.h"
#include "mem.h"

static volatile sig_atomic_t stopping;
static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

/* The payload type of a subject (lib/subjects.h), or NULL. */
static const ProtobufCMessageDescriptor *type_of(const char *subject)
{
    static const struct {
        const char *prefix;
        const ProtobufCMessageDescriptor *d;
    } table[] = {
        {"chat.user.", &chat__v1__delivery__descriptor},
        {"chat.edge.heartbeat", &chat__v1__edge_heartbeat__descriptor},
        {"chat.edge.", &chat__v1__command_result__descriptor},
        {"chat.cmd.message.send", &chat__v1__send_message__descriptor},
        {"chat.cmd.message.read", &chat__v1__mark_read__descriptor},
        {"chat.query.messages", &chat__v1__history_query__descriptor},
        {"chat.presence.session", &chat__v1__session_event__descriptor},
        {"chat.presence.set", &chat__v1__set_status__descriptor},
        {"chat.presence.query", &chat__v1__presence_query__descriptor},
        {"chat.presence.status", &chat__v1__presence_change__descriptor},
        {"chat.presence.resync", &chat__v1__resync_request__descriptor},
        {"chat.presence.transfer", &chat__v1__presence_state_request__descriptor},
        {"chat.event.message.created", &chat__v1__message__descriptor},
        {"chat.event.message.read", &chat__v1__read_receipt__descriptor},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strncmp(subject, table[i].prefix, strlen(table[i].prefix)) == 0)
            return table[i].d;
    return NULL;
}

static json_t *to_json(const ProtobufCMessage *m);

/* One value of field f stored at p. */
static json_t *value(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return json_integer(*(const int64_t *)p);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return json_integer((json_int_t) * (const uint64_t *)p);
    case PROTOBUF_C_TYPE_FLOAT:
        return json_real(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return json_real(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *)p);
        return ev ? json_string(ev->name) : json_integer(*(const int *)p);
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        json_t *j = json_string(s ? s : "");
        return j ? j : json_string("<invalid utf-8>");
    }
    case PROTOBUF_C_TYPE_BYTES:
        return json_integer((json_int_t)((const ProtobufCBinaryData *)p)->len); /* size only */
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
        return sub ? to_json(sub) : json_null();
    }
    }
    return json_null();
}

/* Any protobuf-c message as a JSON object, field names as in the proto. */
static json_t *to_json(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    json_t *o = json_object();
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const char *arr = *(char *const *)(base + f->offset);
            size_t size = f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE
                              ? sizeof(void *)
                          : f->type == PROTOBUF_C_TYPE_INT64 || f->type == PROTOBUF_C_TYPE_UINT64 ||
                                  f->type == PROTOBUF_C_TYPE_SINT64 || f->type == PROTOBUF_C_TYPE_FIXED64 ||
                                  f->type == PROTOBUF_C_TYPE_SFIXED64 || f->type == PROTOBUF_C_TYPE_DOUBLE
                              ? 8
                          : f->type == PROTOBUF_C_TYPE_BYTES ? sizeof(ProtobufCBinaryData)
                          : f->type == PROTOBUF_C_TYPE_BOOL  ? sizeof(protobuf_c_boolean)
                                                             : 4;
            json_t *a = json_array();
            for (size_t k = 0; k < n; k++)
                json_array_append_new(a, value(f, arr + k * size));
            json_object_set_new(o, f->name, a);
            continue;
        }
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue; /* another member of the oneof is set */
        json_object_set_new(o, f->name, value(f, base + f->offset));
    }
    return o;
}

static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    (void)closure;
    const char *subject = natsMsg_GetSubject(msg);
    const ProtobufCMessageDescriptor *d = type_of(subject);
    ProtobufCMessage *m = d ? protobuf_c_message_unpack(d, NULL, (size_t)natsMsg_GetDataLength(msg),
                                                        (const uint8_t *)natsMsg_GetData(msg))
                            : NULL;
    json_t *line = json_pack("{s:s,s:s,s:o}", "subject", subject, "type", m ? d->name : "unknown", "data",
                             m ? to_json(m) : json_integer(natsMsg_GetDataLength(msg)));
    char *text = json_dumps(line, JSON_COMPACT);
    if (text) {
        puts(text);
        fflush(stdout);
    }
    free(text);
    json_decref(line);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    natsMsg_Destroy(msg);
}

int main(int argc, char **argv)
{
    long long since = -1;
    int first = 1;
    if (argc > 2 && strcmp(argv[1], "--since") == 0) {
        char *end;
        long long v = strtoll(argv[2], &end, 10);
        if (*end || v < 0) {
            fprintf(stderr, "chat-tap: --since takes seconds ago or Unix seconds\n");
            return 2;
        }
        since = v < 1000000000LL ? (long long)time(NULL) - v : v;
        first = 3;
    }
    if (first >= argc) {
        fprintf(stderr, "usage: chat-tap [--since SECONDS_AGO|UNIX_SECONDS] SUBJECT...\n"
                        "  e.g. chat-tap 'chat.>'   or   chat-tap --since 3600 'chat.event.>'\n");
        return 2;
    }
    log_init("tap", getenv("LOG_LEVEL") ? getenv("LOG_LEVEL") : "warn");
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    const char *url = getenv("NATS_URL") ? getenv("NATS_URL") : "nats://127.0.0.1:4222";
    struct bus bus = {0};
    if (bus_open(&bus, url, "chat-tap", 0) != 0)
        return 1;
    int n = argc - first;
    natsSubscription **subs = xcalloc((size_t)n, sizeof *subs);
    jsCtx *js = NULL;
    for (int i = 0; i < n; i++) {
        natsStatus s;
        if (since >= 0) {
            jsSubOptions so;
            jsSubOptions_Init(&so);
            so.Stream = "CHAT_EVENTS";
            so.Ordered = true;
            so.Config.DeliverPolicy = js_DeliverByStartTime;
            so.Config.OptStartTime = since * 1000000000LL;
            if (!js)
                natsConnection_JetStream(&js, bus.nc, NULL);
            s = js_Subscribe(&subs[i], js, argv[first + i], on_msg, NULL, NULL, &so, NULL);
        } else {
            s = natsConnection_Subscribe(&subs[i], bus.nc, argv[first + i], on_msg, NULL);
        }
        if (s != NATS_OK) {
            fprintf(stderr, "chat-tap: cannot subscribe to %s: %s\n", argv[first + i], natsStatus_GetText(s));
            stopping = 1;
        }
    }
    if (!stopping) {
        /* The SUBs are on the wire once a flush returns: say so (tests wait for it). */
        natsConnection_FlushTimeout(bus.nc, 5000);
        fprintf(stderr, "chat-tap: subscribed\n");
    }
    while (!stopping) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < n; i++)
        natsSubscription_Destroy(subs[i]);
    free(subs);
    jsCtx_Destroy(js);
    bus_close(&bus, 0);
    nats_CloseAndWait(1000);
    return 0;
}
