/* bus: NATS connection lifecycle and protobuf publishing. */
#include "bus.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "bucket.h"
#include "log.h"
#include "mem.h"

#define MAX_SERVERS 32

/* Retired subscriptions in the order they were retired (a FIFO: the oldest
 * at head). */
struct bus_graveyard {
    pthread_mutex_t mu;
    struct grave {
        natsSubscription *sub;
        long long at_ms;
    } * v;
    size_t head, len, cap;
};

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    struct bus *b = closure;
    if (!b->closing)
        log_warn("nats disconnected; reconnecting");
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    struct bus *b = closure;
    char url[256] = "";
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    log_info("nats connected url=%s", url);
    if (b->on_connect)
        b->on_connect(b->on_connect_closure);
}

/* NATS_URL's list, in its order: a deployment spreads its processes over a
 * cluster's nodes by giving them the nodes in different orders, and knows
 * where each one goes first. Spaces around the commas are allowed. */
static natsStatus set_servers(natsOptions *o, const char *url)
{
    char *copy = xstrdup(url), *save = NULL;
    const char *list[MAX_SERVERS];
    int n = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok && n < MAX_SERVERS; tok = strtok_r(NULL, ",", &save)) {
        tok += strspn(tok, " \t");
        size_t len = strlen(tok);
        while (len > 0 && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
            tok[--len] = '\0';
        if (len > 0)
            list[n++] = tok;
    }
    natsStatus s = n > 0 ? natsOptions_SetServers(o, list, n) : NATS_INVALID_ARG;
    if (s == NATS_OK)
        s = natsOptions_SetNoRandomize(o, true);
    free(copy); /* nats.c copied the strings */
    return s;
}

int bus_open(struct bus *b, const char *url, const char *name, int send_asap)
{
    natsStatus s;
    struct bus keep = *b;
    memset(b, 0, sizeof *b);
    b->graveyard = xcalloc(1, sizeof *b->graveyard);
    pthread_mutex_init(&b->graveyard->mu, NULL);
    b->on_connect = keep.on_connect;
    b->on_connect_closure = keep.on_connect_closure;
    b->no_echo = keep.no_echo;
    b->no_reconnect_buffer = keep.no_reconnect_buffer;
    s = natsOptions_Create(&b->opts);
    if (s == NATS_OK)
        s = set_servers(b->opts, url);
    if (s == NATS_OK)
        s = natsOptions_SetName(b->opts, name);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(b->opts, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(b->opts, 250);
    /* 0 is nats.c's "no buffer": every publish while reconnecting fails. */
    if (s == NATS_OK)
        s = natsOptions_SetReconnectBufSize(b->opts, b->no_reconnect_buffer ? 0 : 8 * 1024 * 1024);
    if (s == NATS_OK)
        s = natsOptions_SetRetryOnFailedConnect(b->opts, true, on_reconnected, b);
    if (s == NATS_OK)
        s = natsOptions_UseGlobalMessageDelivery(b->opts, true);
    if (s == NATS_OK)
        s = natsOptions_SetSendAsap(b->opts, send_asap ? true : false);
    if (s == NATS_OK && b->no_echo)
        s = natsOptions_SetNoEcho(b->opts, true);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(b->opts, on_disconnected, b);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(b->opts, on_reconnected, b);
    if (s == NATS_OK) {
        s = natsConnection_Connect(&b->nc, b->opts);
        if (s == NATS_NOT_YET_CONNECTED) {
            log_warn("nats not reachable yet url=%s; retrying in the background", url);
            s = NATS_OK;
        } else if (s == NATS_OK) {
            char now[256] = "";
            natsConnection_GetConnectedUrl(b->nc, now, sizeof now);
            log_info("nats connected url=%s", now);
        }
    }
    if (s != NATS_OK) {
        log_error("nats connect failed url=%s: %s", url, natsStatus_GetText(s));
        bus_close(b, 0);
        return -1;
    }
    return 0;
}

void bus_close(struct bus *b, int timeout_ms)
{
    b->closing = 1;
    if (b->nc) {
        if (timeout_ms > 0 && natsConnection_Status(b->nc) == NATS_CONN_STATUS_CONNECTED)
            natsConnection_FlushTimeout(b->nc, timeout_ms); /* publishes reach the server */
        natsConnection_Close(b->nc);
    }
    if (b->graveyard) { /* the reader thread is gone: nothing can reach them */
        struct bus_graveyard *g = b->graveyard;
        for (size_t i = g->head; i < g->head + g->len; i++)
            natsSubscription_Destroy(g->v[i].sub);
        free(g->v);
        pthread_mutex_destroy(&g->mu);
        free(g);
        b->graveyard = NULL;
    }
    if (b->nc)
        natsConnection_Destroy(b->nc);
    natsOptions_Destroy(b->opts);
    b->nc = NULL;
    b->opts = NULL;
}

void bus_sub_retire(struct bus *b, natsSubscription **sub, int unsubscribe)
{
    if (!*sub)
        return;
    natsSubscription *s = *sub;
    *sub = NULL;
    if (unsubscribe)
        natsSubscription_Unsubscribe(s);
    struct bus_graveyard *g = b->graveyard;
    if (!g) { /* never opened: no connection, no reader thread */
        natsSubscription_Destroy(s);
        return;
    }
    long long now = bucket_now_us() / 1000;
    natsSubscription *due[64];
    size_t ndue = 0;
    pthread_mutex_lock(&g->mu);
    while (g->len > 0 && ndue < sizeof due / sizeof due[0] && now - g->v[g->head].at_ms >= BUS_RETIRE_MS) {
        due[ndue++] = g->v[g->head].sub;
        g->head++;
        g->len--;
    }
    if (g->head + g->len == g->cap) {
        if (g->head > 0) { /* slide down before growing */
            memmove(g->v, g->v + g->head, g->len * sizeof *g->v);
            g->head = 0;
        }
        if (g->len == g->cap) {
            g->cap = g->cap ? g->cap * 2 : 16;
            g->v = xrealloc(g->v, g->cap * sizeof *g->v);
        }
    }
    g->v[g->head + g->len++] = (struct grave){s, now};
    pthread_mutex_unlock(&g->mu);
    for (size_t i = 0; i < ndue; i++)
        natsSubscription_Destroy(due[i]);
}

int bus_publish(struct bus *b, const char *subject, const ProtobufCMessage *m)
{
    unsigned char stackbuf[1024];
    size_t n = protobuf_c_message_get_packed_size(m);
    unsigned char *p = n <= sizeof stackbuf ? stackbuf : malloc(n);
    if (!p)
        return -1;
    protobuf_c_message_pack(m, p);
    natsStatus s = natsConnection_Publish(b->nc, subject, p, (int)n);
    if (p != stackbuf)
        free(p);
    if (s != NATS_OK) {
        log_debug("nats publish failed subject=%s: %s", subject, natsStatus_GetText(s));
        return -1;
    }
    return 0;
}

int bus_connected(const struct bus *b)
{
    return b->nc && natsConnection_Status(b->nc) == NATS_CONN_STATUS_CONNECTED;
}

natsStatus bus_js_publish(jsCtx *js, const char *subject, const char *msg_id, long max_wait_ms,
                          const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = xmalloc(n ? n : 1);
    protobuf_c_message_pack(m, buf);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msg_id;
    po.MaxWait = max_wait_ms;
    natsStatus s = js_PublishAsync(js, subject, buf, (int)n, &po);
    free(buf);
    return s;
}
