/* chat_int: what the chat application's files share (chat_socks.c: sockets
 * and users; chat_events.c: the client events; chat_nats.c: everything that
 * goes to and comes from NATS). Private to chat/. */
#ifndef CHAT_INT_H
#define CHAT_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>

#include "bucket.h"
#include "chat.h"
#include "chat.pb-c.h"
#include "engineio/frame.h"
#include "map.h"
#include "mem.h"
#include "online.h"
#include "recovery.h"
#include "relay.h"

/* A NATS subscription's closure: its chat, and what its messages are. */
struct chat_sub {
    struct chat *c;
    enum relay_kind kind;
};

enum { PARTNERS_UNKNOWN, PARTNERS_LOADING, PARTNERS_LOADED };

struct chat_user {
    char id[37];
    struct map partners; /* PRESENCE_SCOPE=interest: the users whose status it follows (chat_interest.c) */
    int partners_state;  /* PARTNERS_*: loaded from messaging at its first socket here */
    natsSubscription *sub;
    struct chat_sock *socks; /* every local socket of the user */
    int nsocks;
    struct bucket queries; /* presence:request, message:history, conversation:list of all its sockets here */
};

struct chat_sock {
    struct sock *k;
    struct chat_user *user;
    struct chat_sock *next; /* in user->socks */
    struct chat *chat;
    char num[24];                /* k->num in decimal: key of chat->socks */
    struct bucket events;        /* EDGE_EVENTS_PER_S */
    long refused_in_row;         /* events refused by the rate limit, in a row */
    struct wheel_timer t_expiry; /* the token's exp */
    int64_t *pending;            /* ack ids of commands sent to JetStream, not answered yet */
    uint32_t npending, pending_cap;
    /* From the CONNECT to its reply (chat_records.c, chat_recovery.c, chat_online.c). */
    int waiting;                 /* WAIT_*: what the reply waits for */
    struct map asked;            /* PRESENCE_SCOPE=interest: the users it asked about (nslots 0: none) */
    uint64_t fan_stamp;          /* the last interest fan-out that reached it (chat_interest.c) */
    long long connect_us;        /* when the CONNECT came (bucket_now_us) */
    struct wheel_timer t_online; /* WAIT_ONLINE: the end of the CONNECT's wait (chat_online.c) */
    uint64_t start;              /* the records position when it connected: the pid's start
                                  * (CHAT_NO_START: the consumer had not started) */
    uint8_t *presence;           /* presence's reply to the open (a PresenceList), until the reply */
    size_t presence_len;         /* (0 with presence NULL: none came) */
    struct held *held;           /* records for it that came before its reply, in order */
    uint32_t nheld, held_cap;
    uint64_t skip;            /* a recovered socket's offset: records up to it were delivered */
    struct recovery_pid rpid; /* WAIT_RECOVERY: the pid it came back with */
    char *pid;                /* the session's pid once open (NULL: recovery off) */
    uint8_t *replay;          /* a recovery's records (chat_recovery.c's format) */
    size_t replay_len;
    int recovered;   /* 1: its CONNECT recovered the session */
    char username[]; /* the token's, at most AUTH_MAX_USERNAME bytes */
};

enum { WAIT_PRESENCE = 1, WAIT_RECOVERY = 2, WAIT_ONLINE = 4, WAIT_PARTNERS = 8 };

/* Longest wait for presence (and for a snapshot of the online list on its
 * way) before a CONNECT reply. */
#define CONNECT_WAIT_MS 2000

#define CHAT_NO_START UINT64_MAX

struct held {
    struct frame *f;
    uint64_t seq; /* its record's stream sequence */
};

/* Most records held for one socket between its CONNECT and the reply; past
 * it the socket is closed (its client comes back and recovers). */
#define CHAT_MAX_HELD 4096

/* Most commands of one socket waiting for their outcome (far above what the
 * event rate allows within JetStream's publish timeout). */
#define CHAT_MAX_PENDING 1024

enum req_kind { REQ_CONNECT, REQ_HISTORY, REQ_PRESENCE, REQ_CONVERSATIONS, REQ_PARTNERS };

/* A request to a service waiting for its reply (or its timeout). */
struct chat_req {
    struct chat *chat;
    enum req_kind kind;
    char key[24];      /* request number: last token of the reply subject */
    char sock_num[24]; /* the socket it answers */
    char user_id[37];  /* REQ_PARTNERS: the user it answers (whichever of its sockets asked) */
    int64_t ack_id;
    struct wheel_timer timer;
};

/* The fixed subscriptions; SUB_USER is only the closure of every user's. */
enum { SUB_EDGE, SUB_REPLY, SUB_STATUS, SUB_RESYNC, SUB_USER, SUB_RELEASE, NSUBS };

struct recovery_pool; /* chat_recovery.c */

struct chat {
    const struct chat_config *cfg;
    struct bus *bus;
    struct wheel *wheel;
    struct relay *relay;
    jsCtx *js;
    struct map users; /* user id -> struct chat_user */
    struct map socks; /* socket number -> struct chat_sock */
    struct map reqs;  /* request number -> struct chat_req */
    struct map pairs; /* "<sender>|<recipient>" -> struct bucket: events of one user to another */
    uint64_t next_req;
    natsSubscription *subs[NSUBS];
    struct chat_sub sub_ctx[NSUBS];
    char edge_subject[128];
    char inbox[64]; /* replies come to <inbox>.<request number> */
    struct wheel_timer t_heartbeat;
    /* The records consumer (chat_records.c). NATS side: its thread sets up
     * the streams and (re)subscribes; under records_mu. */
    pthread_t records_thread;
    int records_started;
    pthread_mutex_t records_mu;
    pthread_cond_t records_cv;
    int records_resubscribe; /* NATS reconnected: subscribe again after pushed */
    unsigned records_gen;    /* the current subscription's number */
    uint64_t records_pushed; /* the last record given to the relay */
    natsSubscription *records_sub;
    jsCtx *js_short; /* for the records and recovery threads: requests that give up in a second */
    /* Loop side. */
    int records_ready; /* the consumer has started: position means something */
    uint64_t position; /* the last record delivered */
    /* Connection state recovery (chat_recovery.c); window 0: off. */
    uint8_t pid_key[RECOVERY_KEY_LEN];
    kvStore *kv; /* CHAT_RECOVERY, once the records thread has it */
    struct recovery_pool *rpool;
    /* The copy of the online list (chat_online.c; loop side only). */
    struct online *online;
    unsigned online_attempt;     /* the snapshot request's number: its chunks come to <inbox>.s<n> */
    int online_retrying;         /* t_online waits to ask again (else for the next chunk) */
    struct wheel_timer t_online; /* the wait for the next chunk, or before asking again */
    long long online_asked_us;   /* when the snapshot on its way was asked */
    size_t online_waiters;       /* sockets whose CONNECT reply waits for it (WAIT_ONLINE) */
    size_t online_left_out;      /* entries left out already logged */
    /* PRESENCE_SCOPE=interest (chat_interest.c): user id -> who follows it. */
    struct map watchers;
    uint64_t fan_stamp;
    struct frame *online_list;          /* the last presence:update written from the copy... */
    unsigned long long online_list_gen; /* ...and the copy's generation it shows */
    volatile int stopped;
};

#define REQUEST_TIMEOUT_MS 5000

/* For the functions that refuse with *code and *msg (static text). */
#define FAIL(c, m)                                                                                           \
    do {                                                                                                     \
        *code = (c);                                                                                         \
        *msg = (m);                                                                                          \
        return -1;                                                                                           \
    } while (0)

/* chat_socks.c */
/* Takes one token of cs's user's bucket toward user to (EDGE_EVENTS_TO_USER_PER_S).
 * Returns 0, or -1 with *code and *msg. */
int chat_pair_take(struct chat_sock *cs, const char *to, const char **code, const char **msg);
/* Takes one token of cs's user's query bucket (EDGE_QUERIES_PER_USER_PER_S):
 * the queries of all the user's sockets share it. Returns 0, or -1 with *code
 * and *msg. */
int chat_query_take(struct chat_sock *cs, const char **code, const char **msg);
/* Frees the pair buckets (shutdown). */
void chat_pairs_cleanup(struct chat *c);
void chat_user_attach(struct chat *c, struct chat_sock *cs, const char *id);
void chat_user_detach(struct chat *c, struct chat_sock *cs);
/* Presence answered the socket's open (data NULL: it did not): the CONNECT
 * is answered once nothing else is waited for (chat_open). */
void chat_finish_connect(struct chat_sock *cs, const uint8_t *data, size_t len);
/* Answers cs's CONNECT if nothing is waited for any more: the reply (with its
 * pid), the presence list, a recovery's records, then the held records. */
void chat_open(struct chat_sock *cs);
void chat_deliver(struct chat *c, const char *user_id, const uint8_t *data, size_t len);
int chat_fan_out_delivery(struct chat *c, struct chat_user *u, const Chat__V1__Delivery *d);
void chat_on_status(struct chat *c, const uint8_t *data, size_t len);
/* Announces every open socket to presence again (resync). */
void chat_on_resync(struct chat *c);
/* A ResyncRequest: announces again when it names this edge or none. */
void chat_on_resync_request(struct chat *c, const uint8_t *data, size_t len);

/* chat_online.c */
void chat_online_create(struct chat *c);
/* Asks for the first snapshot (NATS is open, chat.presence.status subscribed). */
void chat_online_start(struct chat *c);
void chat_online_stop(struct chat *c);
void chat_online_destroy(struct chat *c);
/* 1 when key (the last token of a reply subject) is a snapshot's. */
int chat_online_key(const char *key);
/* A reply to snapshot request key: a chunk, or none (data NULL: no responder). */
void chat_online_reply(struct chat *c, const char *key, const uint8_t *data, size_t len);
/* A PresenceChange heard (after its user:status went out). */
void chat_online_change(struct chat *c, const Chat__V1__PresenceChange *pc);
/* NATS (re)connected: changes may have been lost meanwhile. */
void chat_online_lost(struct chat *c);
/* Presence answered cs's open: when the copy is out of step, the reply
 * waits for a snapshot (WAIT_ONLINE; the one on its way, or one asked now),
 * at most until CONNECT_WAIT_MS after the CONNECT. */
void chat_online_wait(struct chat_sock *cs);
/* cs goes: it no longer waits. */
void chat_online_forget(struct chat_sock *cs);
/* A new reference to the presence:update packet written from the copy, or
 * NULL when the copy is out of step. */
struct frame *chat_online_list(struct chat *c);

/* chat_records.c */
/* Starts the records thread: streams, the recovery bucket, the consumer. */
int chat_records_start(struct chat *c);
void chat_records_stop(struct chat *c);
void chat_records_destroy(struct chat *c);
/* bus on_connect: subscribe again after the last record given to the loop. */
void chat_records_reconnected(struct chat *c);
/* Loop: a record (RELAY_RECORD) / the consumer's start (RELAY_RECORDS). */
void chat_on_record(struct chat *c, const char *key, const uint8_t *data, size_t len);
void chat_on_records_start(struct chat *c, const char *key);
/* A record's event for a user, written once (for emit). */
typedef void chat_emit_fn(void *arg, const char *event, struct frame *f, uint64_t seq);
/* Writes the events record seq means for user user_id, each with the
 * record's offset (when recovery is on), and calls emit for each. Returns 0,
 * or -1 for a record it cannot read. */
int chat_record_events(struct chat *c, const char *user_id, uint64_t seq, const char *subject,
                       const uint8_t *data, size_t len, chat_emit_fn *emit, void *arg);
/* Sends record seq's frame f to cs, or holds it until cs's CONNECT is
 * answered. */
void chat_send_or_hold(struct chat_sock *cs, struct frame *f, uint64_t seq);

/* chat_recovery.c */
int chat_recovery_on(const struct chat *c);
int chat_recovery_start(struct chat *c);
void chat_recovery_stop(struct chat *c);
/* Loop, in authorize: starts recovering cs if its CONNECT asks for it and
 * may; sets WAIT_RECOVERY then. */
void chat_recovery_connect(struct chat_sock *cs, const json_t *auth);
/* Loop: the pid of a new session (cs->pid), or none. */
void chat_recovery_new_pid(struct chat_sock *cs);
/* Loop: cs closes; a client that may come back (reason) can recover it. */
void chat_recovery_closed(struct chat_sock *cs, const char *reason);
/* Loop: a recovered socket was opened here. */
void chat_recovery_opened(struct chat_sock *cs);
/* Loop: a worker's outcome (RELAY_RECOVERY) / another edge's release request. */
void chat_on_recovery(struct chat *c, const char *key, const uint8_t *data, size_t len);
void chat_on_release(struct chat *c, const uint8_t *data, size_t len);
/* Loop: the same from a worker of this edge (its own subscription would not
 * hear a request on its no_echo connection). */
void chat_on_release_here(struct chat *c, const uint8_t *data, size_t len);
/* Shutdown: a RELAY_RELEASE_HERE the loop will not answer. */
void chat_release_here_drop(const uint8_t *data, size_t len);
/* Loop, every heartbeat: this edge process is alive (for recoveries after a
 * kill). */
void chat_recovery_alive(struct chat *c);
/* Loop: the replayed records of cs, sent with chat_record_events. */
void chat_recovery_replay(struct chat_sock *cs);

/* chat_interest.c */
int chat_interest_on(const struct chat *c);
void chat_interest_init(struct chat *c);
void chat_interest_cleanup(struct chat *c);
/* A user's first socket here / its last one gone. */
void chat_interest_user_new(struct chat *c, struct chat_user *u);
void chat_interest_user_gone(struct chat *c, struct chat_user *u);
/* A socket gone: what it asked about is no longer watched for it. */
void chat_interest_sock_gone(struct chat_sock *cs);
/* presence:request's ids: watched for cs from now on. */
void chat_interest_asked(struct chat_sock *cs, char *const *ids, size_t n);
/* A record between u and other: other is a partner of u from now on. */
void chat_interest_record(struct chat *c, struct chat_user *u, const char *other);
/* In authorize: the user's partners asked of messaging if not known yet
 * (WAIT_PARTNERS); their answer (REQ_PARTNERS, data NULL: none). */
void chat_interest_connect(struct chat_sock *cs);
void chat_interest_partners(struct chat *c, const char *user_id, const uint8_t *data, size_t len);
/* user:status of user_id to the local sockets that follow it. */
void chat_interest_status(struct chat *c, const char *user_id, struct frame *f);
/* cs's connect list from the online copy: its user's partners online (NULL:
 * the copy is out of step). */
struct frame *chat_interest_list(struct chat_sock *cs);

/* chat_events.c */
void chat_count(const char *metric, const char *label, const char *value);
void chat_send_error(struct chat_sock *cs, const char *event, int64_t ack_id, const char *code,
                     const char *message);
/* The same with a retry hint: retry_after_ms > 0 (a service's rate_limited)
 * adds retryAfterMs to the error object, when the client may try again. */
void chat_send_error_hint(struct chat_sock *cs, const char *event, int64_t ack_id, const char *code,
                          const char *message, int64_t retry_after_ms);
void chat_send_ok(struct chat_sock *cs, int64_t ack_id, const char *key, json_t *value);
void chat_emit(struct chat_sock *cs, const char *event, json_t *payload);
/* The sio_app's on_packet (ctx: the chat): one client event. */
void chat_on_packet(void *ctx, struct sock *k, struct sio_packet *p);

/* A command with ack id ack_id went out: its outcome is acked once. Returns
 * 0, or -1 when CHAT_MAX_PENDING are waiting already. */
int chat_pending_add(struct chat_sock *cs, int64_t ack_id);
/* Takes ack_id off the waiting list; 0 if it was there, -1 if not (answered
 * already: a command redelivered by JetStream is answered again). */
int chat_pending_take(struct chat_sock *cs, int64_t ack_id);

/* chat_nats.c */
/* Sends a request whose reply comes back through the relay (or times out
 * after timeout_ms). Returns 0, or -1 when NATS does not take it. */
int chat_request(struct chat_sock *cs, enum req_kind kind, int64_t ack_id, const char *subject,
                 const ProtobufCMessage *m, long timeout_ms);
/* Subscribes chat.user.<u->id> (a failure is logged: the user gets nothing
 * from other edges until NATS takes it). */
void chat_subscribe_user(struct chat *c, struct chat_user *u);
void chat_unsubscribe(struct chat *c, natsSubscription **sub);
/* A SessionEvent about cs (its strings borrowed from cs and the config). */
void chat_session_event(Chat__V1__SessionEvent *ev, struct chat_sock *cs, Chat__V1__SessionEvent__Kind kind,
                        int resync);
/* Tells presence that cs opened or closed. */
void chat_announce(struct chat_sock *cs, Chat__V1__SessionEvent__Kind kind, int resync);
/* A Delivery to user to: through NATS to the user's sockets on other edges
 * (and to taps), directly to its sockets here (the edge's connection does not
 * hear its own publications). Returns 0, or -1 with *code and *msg. */
int chat_publish_delivery(struct chat_sock *cs, const char *to, Chat__V1__Delivery *d, const char **code,
                          const char **msg);
/* A command to JetStream, without waiting (the loop never blocks); a failure
 * comes back as the client's error; its outcome is acked once (ack_id, -1 for
 * none). Returns 1 (answered later), or -1. */
int chat_publish_command(struct chat_sock *cs, const char *subject, const char *msg_id, int64_t ack_id,
                         const ProtobufCMessage *m, const char **code, const char **msg);

#endif
