/* sock: Socket.IO sockets over one Engine.IO session. Protocol errors close
 * the whole Engine.IO session (docs/protocol.md §Malformed packets, and what
 * the reference server does: a packet for a namespace not joined, a second
 * CONNECT, an undecodable packet). */
#include "sock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ids.h"
#include "log.h"
#include "mem.h"

/* Per-session Socket.IO state (session->app_state). */
struct sock_conn {
    struct session *s;
    struct sio_server *srv;
    struct sio_rx rx;
    struct sock *socks;
    struct wheel_timer t_connect;
    int joined; /* a namespace was joined once: no connect timeout */
};

void sio_server_init(struct sio_server *srv, const struct sio_config *cfg, const struct sio_app *app,
                     void *ctx)
{
    srv->cfg = cfg;
    srv->app = app;
    srv->ctx = ctx;
    srv->next_num = 0;
}

static struct sock *find(struct sock_conn *c, const char *nsp)
{
    for (struct sock *k = c->socks; k; k = k->next)
        if (strcmp(k->nsp, nsp) == 0)
            return k;
    return NULL;
}

static void unlink_sock(struct sock *k)
{
    struct sock **pk = &k->conn->socks;
    while (*pk && *pk != k)
        pk = &(*pk)->next;
    if (*pk)
        *pk = k->next;
}

/* Frees k after telling the app (which may see a socket it never accepted). */
static void drop(struct sock *k, const char *reason)
{
    struct sio_server *srv = k->conn->srv;
    unlink_sock(k);
    if (srv->app->on_disconnect)
        srv->app->on_disconnect(srv->ctx, k, reason);
    free(k);
}

static void on_connect_timeout(struct wheel_timer *t)
{
    struct sock_conn *c = lws_container_of(t, struct sock_conn, t_connect);
    if (!c->joined) {
        log_debug("socket.io connect timeout session=%s", c->s->tag);
        session_close(c->s, "forced close");
    }
}

static void conn_open(void *ctx, struct session *s)
{
    struct sock_conn *c = xcalloc(1, sizeof *c);
    c->s = s;
    c->srv = ctx;
    sio_rx_init(&c->rx);
    s->app_state = c;
    wheel_lws_schedule(s->engine->wheel, &c->t_connect, on_connect_timeout,
                       (int64_t)c->srv->cfg->connect_timeout_ms * 1000, WHEEL_EXACT);
}

static void conn_close(void *ctx, struct session *s, const char *reason)
{
    (void)ctx;
    struct sock_conn *c = s->app_state;
    wheel_cancel(s->engine->wheel, &c->t_connect);
    while (c->socks)
        drop(c->socks, reason);
    sio_rx_cleanup(&c->rx);
    free(c);
    s->app_state = NULL;
}

static void send_packet(struct session *s, enum sio_type type, const char *nsp, int64_t ack_id,
                        const json_t *data, int attachments)
{
    struct buf b;
    buf_init(&b);
    sio_encode(&b, type, nsp, ack_id, attachments, data);
    session_send_message(s, b.data, b.len);
    buf_cleanup(&b);
}

void sock_send(struct sock *k, enum sio_type type, int64_t ack_id, const json_t *data,
               const struct sio_attachment *att, int natt)
{
    struct session *s = k->conn->s;
    send_packet(s, type, k->nsp, ack_id, data, natt);
    for (int i = 0; i < natt; i++)
        session_send_binary(s, att[i].data, att[i].len);
}

void sock_emit(struct sock *k, const json_t *args)
{
    sock_send(k, SIO_EVENT, -1, args, NULL, 0);
}

void sock_ack(struct sock *k, int64_t ack_id, const json_t *args)
{
    sock_send(k, SIO_ACK, ack_id, args, NULL, 0);
}

void sock_send_frame(struct sock *k, struct frame *f)
{
    session_send_frame(k->conn->s, f);
}

void sock_broadcast(struct sock *const *ks, size_t n, const json_t *args)
{
    if (n == 0)
        return;
    struct buf b;
    buf_init(&b);
    sio_encode(&b, SIO_EVENT, ks[0]->nsp, -1, 0, args);
    struct frame *f = frame_text(EIO_MESSAGE, b.data, b.len);
    buf_cleanup(&b);
    for (size_t i = 0; i < n; i++)
        session_send_frame(ks[i]->conn->s, f);
    frame_unref(f);
}

const char *sock_ip(const struct sock *k)
{
    return k->conn->s->ip;
}

void sock_accept(struct sock *k)
{
    sock_accept_pid(k, NULL, NULL);
}

void sock_accept_pid(struct sock *k, const char *id, const char *pid)
{
    struct sock_conn *c = k->conn;
    k->state = SOCK_OPEN;
    c->joined = 1;
    wheel_cancel(c->s->engine->wheel, &c->t_connect);
    if (id)
        snprintf(k->id, sizeof k->id, "%s", id);
    /* docs/protocol.md §3.3: the socket id, and the pid of a session that can
     * be recovered. */
    json_t *reply = json_pack("{s:s}", "sid", k->id);
    if (pid)
        json_object_set_new(reply, "pid", json_string(pid));
    send_packet(c->s, SIO_CONNECT, k->nsp, -1, reply, 0);
    json_decref(reply);
    if (c->srv->app->on_connect)
        c->srv->app->on_connect(c->srv->ctx, k);
}

void sock_reject(struct sock *k, json_t *error)
{
    send_packet(k->conn->s, SIO_CONNECT_ERROR, k->nsp, -1, error, 0);
    json_decref(error);
    drop(k, "connect error");
}

void sock_disconnect(struct sock *k)
{
    send_packet(k->conn->s, SIO_DISCONNECT, k->nsp, -1, NULL, 0);
    drop(k, "server namespace disconnect");
}

void sock_close_session(struct sock *k)
{
    session_close(k->conn->s, "forced close");
}

void sock_kick(struct sock *k)
{
    struct session *s = k->conn->s;
    sock_disconnect(k);
    session_close(s, "forced close");
}

static void on_connect_packet(struct sock_conn *c, struct sio_packet *p)
{
    if (find(c, p->nsp)) {
        session_close(c->s, "parse error"); /* a second CONNECT for a namespace */
        return;
    }
    const struct sio_app *app = c->srv->app;
    if (app->nsp_valid ? !app->nsp_valid(c->srv->ctx, p->nsp) : strcmp(p->nsp, "/") != 0) {
        json_t *err = json_pack("{s:s}", "message", "Invalid namespace");
        send_packet(c->s, SIO_CONNECT_ERROR, p->nsp, -1, err, 0);
        json_decref(err);
        return;
    }
    size_t nsp_len = strlen(p->nsp);
    struct sock *k = xcalloc(1, sizeof *k + nsp_len + 1);
    k->conn = c;
    memcpy(k->nsp, p->nsp, nsp_len + 1);
    ids_random(k->id, 20);
    k->num = ++c->srv->next_num;
    k->state = SOCK_PENDING;
    k->next = c->socks;
    c->socks = k;
    json_t *error = NULL;
    int r = app->authorize(c->srv->ctx, k, p->data, &error);
    if (r == SOCK_ACCEPT)
        sock_accept(k);
    else if (r == SOCK_REJECT)
        sock_reject(k, error ? error : json_pack("{s:s}", "message", "unauthorized"));
}

static void on_packet(struct sock_conn *c, struct sio_packet *p)
{
    if (p->type == SIO_CONNECT) {
        on_connect_packet(c, p);
        return;
    }
    struct sock *k = find(c, p->nsp);
    if (!k || k->state != SOCK_OPEN) {
        /* Only CONNECT may address a namespace that is not joined. */
        session_close(c->s, "parse error");
        return;
    }
    if (p->type == SIO_DISCONNECT) {
        drop(k, "client namespace disconnect");
        return;
    }
    c->srv->app->on_packet(c->srv->ctx, k, p);
}

static void conn_message(void *ctx, struct session *s, const uint8_t *data, size_t len, int binary)
{
    (void)ctx;
    struct sock_conn *c = s->app_state;
    struct sio_packet p;
    const char *err = NULL;
    int r = sio_rx_feed(&c->rx, data, len, binary, &p, &err);
    if (r == SIO_RX_ERROR) {
        log_debug("socket.io parse error session=%s: %s", s->tag, err);
        session_close(s, "parse error");
        return;
    }
    if (r == SIO_RX_PACKET) {
        on_packet(c, &p);
        sio_packet_cleanup(&p);
    }
}

const struct eio_app sio_eio_app = {
    .on_open = conn_open,
    .on_message = conn_message,
    .on_close = conn_close,
};
