/* conform: the suites' server handlers, on the same protocol layer as the chat
 * application. If this file ever needs to reach below socketio/ and
 * engineio/, the seam between protocol and application is broken (the layer
 * check of make test says so). */
#include "conform.h"

#include <string.h>

static void echo_message(void *ctx, struct session *s, const uint8_t *data, size_t len, int binary)
{
    (void)ctx;
    if (binary)
        session_send_binary(s, data, len);
    else
        session_send_message(s, data, len);
}

const struct eio_app conform_echo_app = {
    .on_open = NULL,
    .on_message = echo_message,
    .on_close = NULL,
};

static int nsp_valid(void *ctx, const char *nsp)
{
    (void)ctx;
    return strcmp(nsp, "/") == 0 || strcmp(nsp, "/custom") == 0;
}

static int authorize(void *ctx, struct sock *k, json_t *auth, json_t **error)
{
    (void)ctx;
    (void)error;
    k->app_state = auth ? json_incref(auth) : json_object();
    return SOCK_ACCEPT;
}

/* On connect the suites expect the CONNECT payload back as an "auth" event. */
static void on_connect(void *ctx, struct sock *k)
{
    (void)ctx;
    json_t *args = json_pack("[sO]", "auth", (json_t *)k->app_state);
    sock_emit(k, args);
    json_decref(args);
}

/* "message" -> "message-back" with the same arguments; "message-with-ack" ->
 * ack with the same arguments. Binary attachments go back as they came. */
static void on_packet(void *ctx, struct sock *k, struct sio_packet *p)
{
    (void)ctx;
    if (p->type != SIO_EVENT && p->type != SIO_BINARY_EVENT)
        return;
    const char *name = json_string_value(json_array_get(p->data, 0));
    if (!name)
        return;
    int binary = p->type == SIO_BINARY_EVENT;
    if (strcmp(name, "message") == 0) {
        json_t *args = json_copy(p->data);
        json_array_set_new(args, 0, json_string("message-back"));
        sock_send(k, binary ? SIO_BINARY_EVENT : SIO_EVENT, -1, args, p->att, p->natt);
        json_decref(args);
    } else if (strcmp(name, "message-with-ack") == 0 && p->ack_id >= 0) {
        json_t *args = json_copy(p->data);
        json_array_remove(args, 0);
        sock_send(k, binary ? SIO_BINARY_ACK : SIO_ACK, p->ack_id, args, p->att, p->natt);
        json_decref(args);
    }
}

static void on_disconnect(void *ctx, struct sock *k, const char *reason)
{
    (void)ctx;
    (void)reason;
    json_decref(k->app_state);
    k->app_state = NULL;
}

const struct sio_app conform_sio_app = {
    .nsp_valid = nsp_valid,
    .authorize = authorize,
    .on_connect = on_connect,
    .on_packet = on_packet,
    .on_disconnect = on_disconnect,
};
