/* echo: a Socket.IO v5 server on the edge's protocol layers, the example of
 * docs/socketio-library.md. A socket.io-client on http://127.0.0.1:$ECHO_PORT
 * (default 3001; any transport) gets "welcome" {id}; "echo" comes back with
 * the same arguments (through the ack when it has one); "shout" goes to every
 * socket. It links the protocol library only: no NATS, no database. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server/server.h"
#include "socketio/sock.h"

#define MAX_SOCKS 1024

struct echo {
    struct sock *socks[MAX_SOCKS]; /* every connected socket, for "shout" */
    size_t n;
};

static volatile int stopping;
static struct server srv;

static int authorize(void *ctx, struct sock *k, json_t *auth, json_t **error)
{
    struct echo *e = ctx;
    (void)auth;
    if (e->n == MAX_SOCKS) {
        *error = json_pack("{s:s}", "message", "full");
        return SOCK_REJECT;
    }
    e->socks[e->n++] = k;
    return SOCK_ACCEPT;
}

static void on_connect(void *ctx, struct sock *k)
{
    (void)ctx;
    json_t *args = json_pack("[s{s:s}]", "welcome", "id", k->id);
    sock_emit(k, args);
    json_decref(args);
}

static void on_packet(void *ctx, struct sock *k, struct sio_packet *p)
{
    struct echo *e = ctx;
    const char *name = json_string_value(json_array_get(p->data, 0));
    if (p->type != SIO_EVENT || !name)
        return;
    if (strcmp(name, "echo") == 0 && p->ack_id >= 0) {
        json_array_remove(p->data, 0); /* the ack carries the arguments only */
        sock_ack(k, p->ack_id, p->data);
    } else if (strcmp(name, "echo") == 0) {
        sock_emit(k, p->data);
    } else if (strcmp(name, "shout") == 0) {
        sock_broadcast(e->socks, e->n, p->data);
    }
}

static void on_disconnect(void *ctx, struct sock *k, const char *reason)
{
    struct echo *e = ctx;
    (void)reason;
    for (size_t i = 0; i < e->n; i++)
        if (e->socks[i] == k)
            e->socks[i] = e->socks[--e->n];
}

static const struct sio_app echo_app = {NULL, authorize, on_connect, on_packet, on_disconnect};

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
    server_wake(&srv);
}

int main(void)
{
    static struct echo echo;
    static struct sio_server sio;
    const char *port = getenv("ECHO_PORT");
    struct server_config scfg = {"127.0.0.1", port ? atol(port) : 3001, "*", "", 0};
    struct eio_config ecfg = {25000, 20000, 1000000, 4 << 20, 256 << 10, 256 << 20};
    struct sio_config icfg = {45000};
    log_init("echo", "info");
    signal(SIGTERM, on_signal);
    if (server_start(&srv, &scfg, &ecfg) != 0)
        return 1;
    sio_server_init(&sio, &icfg, &echo_app, &echo);
    server_mount(&srv, "/socket.io/", &sio_eio_app, &sio);
    log_info("listening port=%ld", scfg.port);
    while (!stopping && server_service(&srv) == 0)
        ;
    server_drain(&srv, 1000);
    server_destroy(&srv);
    return 0;
}
