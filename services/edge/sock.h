/* sock: the Socket.IO v5 layer on an Engine.IO session (socket.io-protocol v5
 * §Connection to a namespace, §Sending and receiving data): namespaces,
 * CONNECT/CONNECT_ERROR, DISCONNECT both ways, events and acks, binary
 * attachments and the connect timeout. It knows nothing of the application on
 * top (chat or conformance): that is struct sock_app. */
#ifndef SOCK_H
#define SOCK_H

#include <jansson.h>
#include <stdint.h>

#include "session.h"
#include "sio.h"

enum sock_state { SOCK_PENDING, SOCK_OPEN };

/* One Socket.IO socket: a namespace joined over one Engine.IO session. */
struct sock {
    struct sock_conn *conn;
    struct sock *next;
    char id[21];  /* public socket id, never the Engine.IO sid */
    uint64_t num; /* process-unique number, for routing replies */
    enum sock_state state;
    void *app_state;
    char nsp[]; /* at most SIO_MAX_NSP bytes and the NUL */
};

enum { SOCK_ACCEPT = 0, SOCK_REJECT = -1, SOCK_LATER = 1 };

struct sock_app {
    /* 1 if clients may join the namespace nsp. */
    int (*nsp_valid)(const char *nsp);
    /* Decides on a CONNECT (auth: its payload or NULL). SOCK_ACCEPT, or
     * SOCK_REJECT with *error set to the CONNECT_ERROR object (ownership
     * passes), or SOCK_LATER: the app calls sock_accept/sock_reject later. */
    int (*authorize)(struct sock *k, json_t *auth, json_t **error);
    /* After the CONNECT reply went out. */
    void (*on_connect)(struct sock *k);
    /* EVENT, BINARY_EVENT, ACK or BINARY_ACK for an open socket. The packet is
     * borrowed for the call. */
    void (*on_packet)(struct sock *k, struct sio_packet *p);
    /* The socket is gone (before it is freed); free app_state. Also called for
     * a socket that was refused or still pending (state SOCK_PENDING). */
    void (*on_disconnect)(struct sock *k, const char *reason);
};

/* The Engine.IO application that runs Socket.IO with app on top. */
extern const struct session_app sock_session_app;
/* Set before any session is created. */
void sock_set_app(const struct sock_app *app);

/* For SOCK_LATER: answer the CONNECT now. sock_reject takes ownership of error
 * and frees the socket (do not use k afterwards). */
void sock_accept(struct sock *k);
void sock_reject(struct sock *k, json_t *error);

/* Sends a packet on k's namespace. data may be NULL; att/natt the attachments
 * of a binary packet (sent right after it). */
void sock_send(struct sock *k, enum sio_type type, int64_t ack_id, const json_t *data,
               const struct sio_attachment *att, int natt);
/* Emits an event: args is the whole array, event name first. */
void sock_emit(struct sock *k, const json_t *args);
/* Answers the client's ack ack_id with the values of args (an array). */
void sock_ack(struct sock *k, int64_t ack_id, const json_t *args);
/* Sends a packet encoded once for many sockets (session.h frame_text with
 * EIO_MESSAGE): the socket's session takes its own reference. */
void sock_send_frame(struct sock *k, struct frame *f);
/* Server-side disconnect: sends DISCONNECT (the client will not reconnect)
 * and frees the socket; the Engine.IO session stays. */
void sock_disconnect(struct sock *k);
/* The same, then the whole Engine.IO session is closed (an abusive client). */
void sock_kick(struct sock *k);

#endif
