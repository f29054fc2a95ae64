/* load_client: many Socket.IO v5 clients over Engine.IO v4 WebSocket
 * (docs/protocol.md §2.5, §3) on one libwebsockets client context, one
 * thread. Each connection: WebSocket upgrade on /socket.io/, the open packet,
 * CONNECT with {"token"}, the CONNECT reply, then the first event
 * (presence:update) marks it ready; a CONNECT reply with no presence:update
 * within LC_JOIN_GRACE_MS (a server whose presence lookup timed out, or a
 * client too swamped to read it) marks it ready too, as of the reply, and is
 * counted in no_list until its list comes (then in list_late). Server pings are answered; everything
 * else is handed to the application's callbacks. Frames are written one per
 * WRITEABLE callback (docs/architecture.md §Libraries), built when they are written. */
#ifndef LOAD_CLIENT_H
#define LOAD_CLIENT_H

#include <stddef.h>
#include <stdint.h>

enum lc_state {
    LC_IDLE,       /* not started */
    LC_CONNECTING, /* TCP + WebSocket upgrade */
    LC_OPENING,    /* waiting for the Engine.IO open packet */
    LC_JOINING,    /* CONNECT sent, waiting for its reply and presence:update */
    LC_READY,      /* connected: events flow */
    LC_FAILED,     /* never got ready */
    LC_CLOSED      /* was ready, then closed */
};

struct lc_conn {
    struct lws *wsi;
    const char *token; /* borrowed: lives as long as the run */
    uint32_t idx, user, peer;
    uint8_t state;                   /* enum lc_state */
    uint8_t sio_due;                 /* the CONNECT is to be written */
    uint8_t sio_ok;                  /* the CONNECT reply came */
    uint8_t skipping;                /* dropping the rest of a large message nobody needs */
    uint8_t closing;                 /* close at the next WRITEABLE */
    uint8_t list_wait;               /* ready without its presence:update list, which may still come */
    uint16_t pongs;                  /* pongs to write */
    uint32_t emits;                  /* application frames to write */
    uint32_t inflight;               /* closed-loop frames awaiting their answer */
    uint64_t seq;                    /* frames written by the application */
    int64_t t_start, t_sio, t_ready; /* connect started, CONNECT reply, ready */
    char *rx;                        /* a message arriving in parts (NULL most of the time) */
    uint32_t rx_len, rx_cap;
};

/* The application: called on the lws thread (the only thread). */
struct lc_app {
    /* Writes the next application frame (Engine.IO + Socket.IO text, e.g.
     * 42["ev",{...}]) into buf (cap bytes) and returns its length, or 0 to
     * write nothing. Called when c->emits > 0; the client decrements it. */
    size_t (*write_frame)(struct lc_conn *c, char *buf, size_t cap);
    /* An EVENT: name (not NUL-terminated), args = the whole JSON array text
     * [name, ...]; both valid during the call only. now = arrival time. */
    void (*on_event)(struct lc_conn *c, int64_t now, const char *name, size_t name_len, const char *args,
                     size_t args_len);
    /* An ACK 43<id>[...]: args = the JSON array text. */
    void (*on_ack)(struct lc_conn *c, int64_t now, long long id, const char *args, size_t args_len);
    /* Large messages whose event name this returns 0 for are not kept. */
    int (*wants)(const char *name, size_t name_len);
    /* The presence:update list (args: the whole JSON array text), whole, when
     * this is set (else a large list is dropped unread and only marks the
     * socket ready). */
    void (*on_list)(struct lc_conn *c, const char *args, size_t args_len);
};

#define LC_JOIN_GRACE_MS 1000

struct lc_counts {
    size_t connecting; /* started, not yet ready or failed */
    size_t ready, failed, closed;
    size_t no_list;           /* ready without the presence:update list, which never came (so far) */
    size_t list_late;         /* ready without it, which came later */
    int64_t list_late_max_ns; /* the longest from a CONNECT reply to its late list */
    size_t frames_in;         /* every Engine.IO message received */
    int64_t last_rx;          /* time of the last message received */
    size_t pings;
    char first_error[160];
};

extern struct lc_counts lc_counts;

/* Creates the lws context for the nconns connections of conns (borrowed for
 * the run) to host:port; src_addrs
 * > 0 binds connection i to the source address 127.0.0.(1 + i % src_addrs).
 * Returns 0, or -1. */
int lc_init(struct lc_conn *conns, size_t nconns, const char *host, int port, int src_addrs,
            const struct lc_app *app);
/* Starts connecting c (c->token set). */
void lc_connect(struct lc_conn *c);
/* The service loop wakes at least every us microseconds (default 10 ms). */
void lc_set_tick(long us);
/* Asks for a WRITEABLE callback on c (no-op unless it has a socket). */
void lc_want_write(struct lc_conn *c);
/* Runs one lws service round: returns when something happened or a timer
 * fired (a 10 ms tick keeps it returning). */
void lc_service(void);
/* Closes every socket and destroys the context. */
void lc_destroy(void);

#endif
