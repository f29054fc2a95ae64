/* sock: the Socket.IO v5 layer on Engine.IO sessions (docs/protocol.md
 * §Socket.IO): namespaces, CONNECT/CONNECT_ERROR, DISCONNECT both ways,
 * events and acks, binary attachments and the connect timeout. It knows
 * nothing of the application on top (chat, conformance, an example): that is
 * struct sio_app, called with the ctx it was registered with; nor of the
 * transports below (they are the session's business). */
#ifndef SOCK_H
#define SOCK_H

#include <jansson.h>
#include <stdint.h>

#include "engineio/session.h"
#include "sio.h"

enum sock_state { SOCK_PENDING, SOCK_OPEN };

/* One Socket.IO socket: a namespace joined over one Engine.IO session. */
struct sock {
    struct sock_conn *conn;
    struct sock *next;
    char id[21];  /* public socket id, never the Engine.IO sid */
    uint64_t num; /* unique within its sio_server: for routing replies */
    enum sock_state state;
    void *app_state;
    char nsp[]; /* at most SIO_MAX_NSP bytes and the NUL */
};

enum { SOCK_ACCEPT = 0, SOCK_REJECT = -1, SOCK_LATER = 1 };

struct sio_app {
    /* 1 if clients may join the namespace nsp. NULL: only "/". */
    int (*nsp_valid)(void *ctx, const char *nsp);
    /* Decides on a CONNECT (auth: its payload or NULL). SOCK_ACCEPT, or
     * SOCK_REJECT with *error set to the CONNECT_ERROR object (ownership
     * passes), or SOCK_LATER: the app calls sock_accept/sock_reject later. */
    int (*authorize)(void *ctx, struct sock *k, json_t *auth, json_t **error);
    /* After the CONNECT reply went out. May be NULL. */
    void (*on_connect)(void *ctx, struct sock *k);
    /* EVENT, BINARY_EVENT, ACK or BINARY_ACK for an open socket. The packet is
     * borrowed for the call. */
    void (*on_packet)(void *ctx, struct sock *k, struct sio_packet *p);
    /* The socket is gone (before it is freed); free app_state. Also called for
     * a socket that was refused or still pending (state SOCK_PENDING). */
    void (*on_disconnect)(void *ctx, struct sock *k, const char *reason);
};

struct sio_config {
    long connect_timeout_ms; /* from the Engine.IO open to a CONNECT */
};

/* Socket.IO over the sessions of one mount point. */
struct sio_server {
    const struct sio_config *cfg;
    const struct sio_app *app;
    void *ctx;
    uint64_t next_num;
};

void sio_server_init(struct sio_server *srv, const struct sio_config *cfg, const struct sio_app *app,
                     void *ctx);
/* The Engine.IO application that runs Socket.IO: mount it with the
 * sio_server as its ctx. */
extern const struct eio_app sio_eio_app;

/* For SOCK_LATER: answer the CONNECT now. sock_reject takes ownership of error
 * and frees the socket (do not use k afterwards). */
void sock_accept(struct sock *k);
void sock_reject(struct sock *k, json_t *error);
/* sock_accept for connection state recovery: id (not NULL) becomes the
 * socket's id (a recovered socket keeps the one it had, at most 20
 * characters), and the reply carries pid (not NULL), the session's
 * recovery id. */
void sock_accept_pid(struct sock *k, const char *id, const char *pid);

/* Sends a packet on k's namespace. data may be NULL; att/natt the attachments
 * of a binary packet (sent right after it). */
void sock_send(struct sock *k, enum sio_type type, int64_t ack_id, const json_t *data,
               const struct sio_attachment *att, int natt);
/* Emits an event: args is the whole array, event name first. */
void sock_emit(struct sock *k, const json_t *args);
/* Answers the client's ack ack_id with the values of args (an array). */
void sock_ack(struct sock *k, int64_t ack_id, const json_t *args);
/* Sends a packet encoded once for many sockets (frame_text with EIO_MESSAGE):
 * the socket's session takes its own reference. */
void sock_send_frame(struct sock *k, struct frame *f);
/* Emits the event args (name first) to n sockets of the same namespace,
 * encoded once. */
void sock_broadcast(struct sock *const *ks, size_t n, const json_t *args);
/* Server-side disconnect: sends DISCONNECT (the client will not reconnect)
 * and frees the socket; the Engine.IO session stays. */
void sock_disconnect(struct sock *k);
/* The same, then the whole Engine.IO session is closed (an abusive client). */
void sock_kick(struct sock *k);
/* Closes k's Engine.IO session without a DISCONNECT, as if its transport
 * had closed ("forced close"): a client that comes back recovers. */
void sock_close_session(struct sock *k);
/* The client's address (for logs and limits). */
const char *sock_ip(const struct sock *k);

#endif
