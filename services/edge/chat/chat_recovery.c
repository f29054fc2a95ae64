/* chat_recovery: Socket.IO's connection state recovery, across edges
 * (docs/architecture.md §Recovery). Nothing a recovery needs lives in one
 * edge's memory:
 *   - the pid (recovery.h) says whose socket it was and where its
 *     deliveries started; any edge can check it;
 *   - the key-value bucket CHAT_RECOVERY says when it closed: the edge that
 *     closes a socket a client may come back to writes s.<socket id> =
 *     "<ms>", and every edge process writes e.<boot id> = "<ms>" at each
 *     heartbeat; a socket its client has left but its edge has not noticed
 *     yet (a half-open connection) is released on request, and one whose edge
 *     was killed closed at that edge's last heartbeat;
 *   - what it missed is in CHAT_EVENTS: the records after its offset that
 *     name its user, read with the stream's "next message on a subject"
 *     request, up to where this edge's consumer was when the CONNECT came;
 *     the consumer holds what comes after, so nothing is sent twice.
 * The blocking part (the bucket, the release request, the stream reads) runs
 * on a few worker threads; their outcome comes back through the relay. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat_int.h"
#include "engineio/eio.h"
#include "log.h"
#include "metrics.h"
#include "streams.h"
#include "subjects.h"

#define MARGIN_MS 60000 /* the bucket keeps entries this much longer than the window */
#define THREADS 4       /* recovery workers */
#define QUEUE_MAX 4096  /* recoveries waiting for a worker; past it: new sessions */
#define RELEASE_WAIT_MS 1000
#define READ_WAIT_MS 2000
#define STREAM_GET "$JS.API.STREAM.MSG.GET." STREAM_EVENTS

struct job {
    struct job *next;
    char num[24]; /* the socket waiting for it */
    struct recovery_pid pid;
    uint64_t offset; /* replay after this ... */
    uint64_t until;  /* ... up to this (the consumer's position at the CONNECT) */
};

struct recovery_pool {
    struct chat *c;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *head, *tail;
    int queued;
    int stop;
    pthread_t threads[THREADS];
    int nthreads;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int chat_recovery_on(const struct chat *c)
{
    return c->cfg->recovery_window_ms > 0;
}

static kvStore *bucket(const struct chat *c)
{
    return __atomic_load_n(&c->kv, __ATOMIC_ACQUIRE);
}

static void count(const char *result)
{
    chat_count("chat_edge_recoveries_total", "result", result);
}

/* ---------- the outcome: [ok u8][offset u64] then records [seq u64][subject len u32][data len u32][...] */

struct out {
    uint8_t *p;
    size_t len, cap;
};

static void out_put(struct out *o, const void *data, size_t n)
{
    if (o->len + n > o->cap) {
        o->cap = (o->len + n) * 2;
        o->p = xrealloc(o->p, o->cap);
    }
    memcpy(o->p + o->len, data, n);
    o->len += n;
}

static void out_u64(struct out *o, uint64_t v)
{
    out_put(o, &v, sizeof v);
}

static void out_u32(struct out *o, uint32_t v)
{
    out_put(o, &v, sizeof v);
}

/* One record found by a read, in the order of its filter. */
struct rec {
    uint64_t seq;
    char *subject;
    uint8_t *data;
    size_t len;
};

struct recs {
    struct rec *r;
    size_t n, cap;
};

static void recs_free(struct recs *rs)
{
    for (size_t i = 0; i < rs->n; i++) {
        free(rs->r[i].subject);
        free(rs->r[i].data);
    }
    free(rs->r);
}

/* ---------- worker side ---------- */

/* The value of key in the bucket (a NUL-terminated copy), or NULL. */
static char *kv_get(struct chat *c, const char *key)
{
    kvEntry *e = NULL;
    if (kvStore_Get(&e, bucket(c), key) != NATS_OK)
        return NULL;
    char *v = xstrdup(kvEntry_ValueString(e));
    kvEntry_Destroy(e);
    return v;
}

/* A release this edge's loop answers for one of its workers. Two owners: the
 * worker (which may give up waiting) and the loop; the last frees it. */
struct release_here {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    int done;
    long long at; /* when the loop closed the socket; 0: it holds no such socket */
    char user[IDS_UUID_LEN + 1];
    char sid[RECOVERY_SID_LEN + 1];
};

static void release_here_unref(struct release_here *r)
{
    pthread_mutex_lock(&r->mu);
    int last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (last) {
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cv);
        free(r);
    }
}

/* The socket closes here: when (Unix ms), 0 when this edge does not hold it,
 * -1 when the loop did not answer in time. */
static long long release_here(struct chat *c, const struct recovery_pid *p)
{
    struct release_here *r = xcalloc(1, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->refs = 2;
    memcpy(r->user, p->user_id, sizeof r->user);
    memcpy(r->sid, p->sid, sizeof r->sid);
    if (relay_push_wait(c->relay, RELAY_RELEASE_HERE, "", &r, sizeof r) != 0) {
        r->refs = 1;
        release_here_unref(r);
        return -1;
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += RELEASE_WAIT_MS / 1000;
    until.tv_nsec += (RELEASE_WAIT_MS % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&r->mu);
    while (!r->done && pthread_cond_timedwait(&r->cv, &r->mu, &until) == 0)
        ;
    long long at = r->done ? r->at : -1;
    pthread_mutex_unlock(&r->mu);
    release_here_unref(r);
    return at;
}

/* Closes a socket of this edge that a client came back for; when, or 0. */
static long long release_socket(struct chat *c, const char *user, const char *sid)
{
    struct chat_user *u = map_get(&c->users, user);
    for (struct chat_sock *cs = u ? u->socks : NULL; cs; cs = cs->next) {
        if (strcmp(cs->k->id, sid) == 0 && cs->k->state == SOCK_OPEN) {
            log_info("released user=%s socket=%s: its client came back on another connection", user, sid);
            sock_close_session(cs->k);
            return now_ms();
        }
    }
    return 0;
}

static void release_here_answer(struct release_here *r, long long at)
{
    pthread_mutex_lock(&r->mu);
    r->at = at;
    r->done = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    release_here_unref(r);
}

void chat_on_release_here(struct chat *c, const uint8_t *data, size_t len)
{
    struct release_here *r;
    if (len != sizeof r)
        return;
    memcpy(&r, data, sizeof r);
    release_here_answer(r, release_socket(c, r->user, r->sid));
}

void chat_release_here_drop(const uint8_t *data, size_t len)
{
    struct release_here *r;
    if (len != sizeof r)
        return;
    memcpy(&r, data, sizeof r);
    release_here_answer(r, -1);
}

/* When the socket closed (Unix ms), or -1 when that cannot be known (then it
 * is not recovered). */
static long long closed_at(struct chat *c, const struct job *j)
{
    char key[64];
    snprintf(key, sizeof key, "s.%s", j->pid.sid);
    char *v = kv_get(c, key);
    const char *boot = j->pid.boot_id;
    char live_boot[RECOVERY_BOOT_LEN + 1] = "";
    if (v && strncmp(v, "live ", 5) == 0) { /* recovered once: it lives on that edge */
        snprintf(live_boot, sizeof live_boot, "%s", v + 5);
        boot = live_boot;
    } else if (v) {
        long long at = atoll(v);
        free(v);
        return at > 0 ? at : -1;
    }
    free(v);
    /* Not closed as far as the bucket knows: its edge may hold it still (a
     * half-open connection), or have died. */
    if (strcmp(boot, c->cfg->boot_id) == 0) { /* this very edge */
        long long here = release_here(c, &j->pid);
        if (here > 0)
            return here;
        if (here < 0)
            return -1;
        v = kv_get(c, key); /* not held here (any more): it closed meanwhile, or never */
        long long at = v && strncmp(v, "live ", 5) != 0 ? atoll(v) : -1;
        free(v);
        return at > 0 ? at : -1;
    }
    char subj[96], req[IDS_UUID_LEN + RECOVERY_SID_LEN + 2];
    snprintf(subj, sizeof subj, SUBJ_RECOVERY_RELEASE_FMT, boot);
    snprintf(req, sizeof req, "%s %s", j->pid.user_id, j->pid.sid);
    natsMsg *reply = NULL;
    natsStatus s = natsConnection_RequestString(&reply, c->bus->nc, subj, req, RELEASE_WAIT_MS);
    long long at = -1;
    if (s == NATS_OK) {
        const char *r = natsMsg_GetData(reply);
        if (r && strncmp(r, "ok ", 3) == 0)
            at = atoll(r + 3);
        else if ((v = kv_get(c, key)) && strncmp(v, "live ", 5) != 0) /* it closed meanwhile */
            at = atoll(v);
        free(v);
    } else if (s == NATS_NO_RESPONDERS) { /* that edge process is gone: it died at its last heartbeat */
        snprintf(key, sizeof key, "e.%s", boot);
        if ((v = kv_get(c, key)))
            at = atoll(v);
        free(v);
    }
    natsMsg_Destroy(reply);
    return at > 0 ? at : -1;
}

/* Appends to rs the records after `after`, up to `until`, whose subject
 * matches filter. Returns 0, 1 when there are more than max in all, -1 when
 * the stream cannot be read. */
static int read_filter(struct chat *c, const char *filter, uint64_t after, uint64_t until, struct recs *rs,
                       size_t max)
{
    uint64_t seq = after + 1;
    while (seq <= until) {
        char req[256];
        snprintf(req, sizeof req, "{\"seq\":%" PRIu64 ",\"next_by_subj\":\"%s\"}", seq, filter);
        natsMsg *reply = NULL;
        if (natsConnection_RequestString(&reply, c->bus->nc, STREAM_GET, req, READ_WAIT_MS) != NATS_OK)
            return -1;
        json_error_t err;
        json_t *j = json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), 0, &err);
        natsMsg_Destroy(reply);
        json_t *m = json_object_get(j, "message");
        json_t *e = json_object_get(j, "error");
        if (!m) {
            int none = json_integer_value(json_object_get(e, "code")) == 404;
            json_decref(j);
            return none ? 0 : -1;
        }
        json_t *js = json_object_get(m, "seq"), *subj = json_object_get(m, "subject"),
               *data = json_object_get(m, "data");
        uint64_t at = (uint64_t)json_integer_value(js);
        if (!json_is_integer(js) || !json_is_string(subj) || at < seq) {
            json_decref(j);
            return -1;
        }
        if (at > until) {
            json_decref(j);
            return 0;
        }
        if (rs->n == max) {
            json_decref(j);
            return 1;
        }
        const char *b64 = json_is_string(data) ? json_string_value(data) : "";
        size_t bl = strlen(b64);
        uint8_t *raw = xmalloc(bl * 3 / 4 + 3);
        long n = eio_base64_decode(raw, b64, bl);
        if (n < 0) {
            free(raw);
            json_decref(j);
            return -1;
        }
        if (rs->n == rs->cap) {
            rs->cap = rs->cap ? rs->cap * 2 : 16;
            rs->r = xrealloc(rs->r, rs->cap * sizeof *rs->r);
        }
        rs->r[rs->n++] = (struct rec){at, xstrdup(json_string_value(subj)), raw, (size_t)n};
        json_decref(j);
        seq = at + 1;
    }
    return 0;
}

/* The records of pid's user after offset, up to until, in stream order, into
 * o. Returns 0, or a reason it cannot. */
static const char *replay(struct chat *c, const struct job *j, struct out *o)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    if (js_GetStreamInfo(&si, c->js_short, STREAM_EVENTS, NULL, &jerr) != NATS_OK)
        return "unavailable";
    uint64_t first = si->State.FirstSeq, last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    if (j->offset > last)
        return "invalid"; /* an offset no record ever had */
    if (j->offset < j->until && first > j->offset + 1)
        return "expired"; /* records after it were removed (CHAT_EVENTS' limits) */
    char sent[128], received[128];
    /* Its own messages and the receipts of its messages; messages to it. */
    snprintf(sent, sizeof sent, "chat.event.message.*.%s.*", j->pid.user_id);
    snprintf(received, sizeof received, "chat.event.message.created.*.%s", j->pid.user_id);
    struct recs a = {0}, b = {0};
    size_t max = (size_t)c->cfg->recovery_max_events;
    int ra = read_filter(c, sent, j->offset, j->until, &a, max);
    int rb = ra == 0 ? read_filter(c, received, j->offset, j->until, &b, max) : ra;
    const char *why = NULL;
    if (ra < 0 || rb < 0)
        why = "unavailable";
    else if (ra > 0 || rb > 0 || a.n + b.n > max)
        why = "too_many";
    for (size_t i = 0, k = 0; !why && (i < a.n || k < b.n);) {
        struct rec *r;
        if (k == b.n || (i < a.n && a.r[i].seq < b.r[k].seq))
            r = &a.r[i++];
        else if (i == a.n || b.r[k].seq < a.r[i].seq)
            r = &b.r[k++];
        else { /* a message to oneself matches both: once */
            r = &a.r[i++];
            k++;
        }
        size_t sl = strlen(r->subject);
        out_u64(o, r->seq);
        out_u32(o, (uint32_t)sl);
        out_u32(o, (uint32_t)r->len);
        out_put(o, r->subject, sl);
        out_put(o, r->data, r->len);
    }
    recs_free(&a);
    recs_free(&b);
    return why;
}

static void run(struct chat *c, struct job *j)
{
    struct out o = {0};
    uint8_t ok = 0;
    out_put(&o, &ok, 1);
    out_u64(&o, j->offset);
    const char *why = NULL;
    long long at = closed_at(c, j);
    if (at < 0 || now_ms() - at > c->cfg->recovery_window_ms)
        why = "expired";
    else
        why = replay(c, j, &o);
    if (!why)
        o.p[0] = 1;
    else
        log_info("recovery refused user=%s socket=%s reason=%s", j->pid.user_id, j->pid.sid, why);
    count(why ? why : "recovered");
    relay_push_wait(c->relay, RELAY_RECOVERY, j->num, o.p, o.len);
    free(o.p);
}

static void *worker_main(void *arg)
{
    struct recovery_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        struct job *j = p->head;
        if (!j) {
            pthread_cond_wait(&p->cv, &p->mu);
            continue;
        }
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        p->queued--;
        pthread_mutex_unlock(&p->mu);
        run(p->c, j);
        free(j);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Another edge's release request (NATS thread): to the loop. */
static void on_release_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct chat *c = closure;
    const char *reply = natsMsg_GetReply(msg);
    int dl = natsMsg_GetDataLength(msg);
    if (reply && dl > 0 && dl < 128) {
        size_t rl = strlen(reply);
        char item[256];
        if (rl + 1 + (size_t)dl <= sizeof item) {
            memcpy(item, reply, rl + 1);
            memcpy(item + rl + 1, natsMsg_GetData(msg), (size_t)dl);
            relay_push(c->relay, RELAY_RELEASE, "", item, rl + 1 + (size_t)dl);
        }
    }
    natsMsg_Destroy(msg);
}

/* Records thread: the bucket, the workers, the release subscription. */
int chat_recovery_start(struct chat *c)
{
    kvStore *kv = NULL;
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = KV_RECOVERY;
    kc.History = 1;
    kc.TTL = (int64_t)(c->cfg->recovery_window_ms + MARGIN_MS) * 1000000LL;
    kc.StorageType = js_FileStorage;
    kc.Replicas = (int)streams_replicas();
    jsErrCode jerr = 0;
    natsStatus s = js_CreateKeyValue(&kv, c->js_short, &kc);
    if (s != NATS_OK)
        s = js_KeyValue(&kv, c->js_short, KV_RECOVERY); /* there already (another edge made it) */
    if (s != NATS_OK) {
        log_warn("recovery bucket %s not ready: %s (code %d)", KV_RECOVERY, natsStatus_GetText(s), (int)jerr);
        return -1;
    }
    if (!c->rpool) {
        char subj[96];
        snprintf(subj, sizeof subj, SUBJ_RECOVERY_RELEASE_FMT, c->cfg->boot_id);
        if (natsConnection_Subscribe(&c->subs[SUB_RELEASE], c->bus->nc, subj, on_release_msg, c) != NATS_OK) {
            kvStore_Destroy(kv);
            return -1;
        }
        struct recovery_pool *p = xcalloc(1, sizeof *p);
        p->c = c;
        pthread_mutex_init(&p->mu, NULL);
        pthread_cond_init(&p->cv, NULL);
        for (int i = 0; i < THREADS; i++)
            if (pthread_create(&p->threads[p->nthreads], NULL, worker_main, p) == 0)
                p->nthreads++;
        c->rpool = p;
    }
    __atomic_store_n(&c->kv, kv, __ATOMIC_RELEASE);
    chat_recovery_alive(c); /* at once: a kill before the first heartbeat is recoverable too */
    log_info("connection state recovery on: window=%ldms bucket=%s", c->cfg->recovery_window_ms, KV_RECOVERY);
    return 0;
}

void chat_recovery_stop(struct chat *c)
{
    struct recovery_pool *p = c->rpool;
    if (p) {
        pthread_mutex_lock(&p->mu);
        p->stop = 1;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        for (int i = 0; i < p->nthreads; i++)
            pthread_join(p->threads[i], NULL);
        while (p->head) {
            struct job *j = p->head;
            p->head = j->next;
            free(j);
        }
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        free(p);
        c->rpool = NULL;
    }
    kvStore_Destroy(bucket(c));
    __atomic_store_n(&c->kv, NULL, __ATOMIC_RELEASE);
}

/* ---------- loop side ---------- */

void chat_recovery_connect(struct chat_sock *cs, const json_t *auth)
{
    struct chat *c = cs->chat;
    if (!chat_recovery_on(c) || !bucket(c) || !c->rpool || cs->start == CHAT_NO_START)
        return;
    uint64_t offset = 0;
    switch (recovery_connect_read(auth, cs->user->id, c->pid_key, &cs->rpid, &offset)) {
    case RECOVERY_NONE:
        return;
    case RECOVERY_INVALID:
        log_info("recovery refused user=%s reason=invalid", cs->user->id);
        count("invalid");
        return;
    case RECOVERY_ASKED:
        break;
    }
    struct recovery_pool *p = c->rpool;
    struct job *j = xcalloc(1, sizeof *j);
    memcpy(j->num, cs->num, sizeof j->num);
    j->pid = cs->rpid;
    j->offset = offset;
    j->until = cs->start;
    pthread_mutex_lock(&p->mu);
    int full = p->queued >= QUEUE_MAX;
    if (!full) {
        if (p->tail)
            p->tail->next = j;
        else
            p->head = j;
        p->tail = j;
        p->queued++;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    if (full) {
        free(j);
        count("busy");
        return;
    }
    cs->waiting |= WAIT_RECOVERY;
}

void chat_on_recovery(struct chat *c, const char *key, const uint8_t *data, size_t len)
{
    struct chat_sock *cs = map_get(&c->socks, key);
    if (!cs || !(cs->waiting & WAIT_RECOVERY) || len < 9)
        return; /* it left meanwhile */
    cs->waiting &= ~WAIT_RECOVERY;
    if (data[0] == 1) {
        cs->recovered = 1;
        memcpy(&cs->skip, data + 1, sizeof cs->skip);
        cs->replay = xmalloc(len - 9 ? len - 9 : 1);
        memcpy(cs->replay, data + 9, len - 9);
        cs->replay_len = len - 9;
    }
    chat_open(cs);
}

/* emit for replayed records: to the one socket, open by now. */
static void emit_to_sock(void *arg, const char *event, struct frame *f, uint64_t seq)
{
    (void)event;
    (void)seq;
    sock_send_frame(((struct chat_sock *)arg)->k, f);
}

void chat_recovery_replay(struct chat_sock *cs)
{
    const uint8_t *p = cs->replay, *end = cs->replay + cs->replay_len;
    size_t sent = 0;
    while (end - p >= 16) {
        uint64_t seq;
        uint32_t sl, dl;
        memcpy(&seq, p, 8);
        memcpy(&sl, p + 8, 4);
        memcpy(&dl, p + 12, 4);
        p += 16;
        if ((size_t)(end - p) < (size_t)sl + dl)
            break;
        char *subject = xmalloc(sl + 1);
        memcpy(subject, p, sl);
        subject[sl] = '\0';
        if (chat_record_events(cs->chat, cs->user->id, seq, subject, p + sl, dl, emit_to_sock, cs) != 0)
            log_warn("undecodable record in a recovery seq=%" PRIu64, seq);
        free(subject);
        p += sl + dl;
        sent++;
    }
    log_info("recovered user=%s socket=%s records=%zu after=%" PRIu64, cs->user->id, cs->k->id, sent,
             cs->skip);
    free(cs->replay);
    cs->replay = NULL;
    cs->replay_len = 0;
}

void chat_recovery_new_pid(struct chat_sock *cs)
{
    struct chat *c = cs->chat;
    if (!chat_recovery_on(c) || !bucket(c) || cs->start == CHAT_NO_START)
        return;
    struct recovery_pid p;
    snprintf(p.user_id, sizeof p.user_id, "%s", cs->user->id);
    snprintf(p.boot_id, sizeof p.boot_id, "%s", c->cfg->boot_id);
    snprintf(p.sid, sizeof p.sid, "%s", cs->k->id);
    p.start = cs->start;
    char pid[RECOVERY_PID_MAX];
    if (recovery_pid_write(pid, &p, c->pid_key) == 0)
        cs->pid = xstrdup(pid);
}

static void kv_put(struct chat *c, const char *key, const char *value)
{
    char subj[96];
    snprintf(subj, sizeof subj, "$KV." KV_RECOVERY ".%s", key);
    natsConnection_PublishString(c->bus->nc, subj, value); /* stored by JetStream; never blocks the loop */
}

void chat_recovery_closed(struct chat_sock *cs, const char *reason)
{
    static const char *const recoverable[] = {"transport close", "transport error", "ping timeout",
                                              "forced close", "server shutting down"};
    struct chat *c = cs->chat;
    if (!cs->pid || !bucket(c) || c->stopped)
        return;
    for (size_t i = 0; i < sizeof recoverable / sizeof *recoverable; i++) {
        if (strcmp(reason, recoverable[i]) == 0) {
            char key[64], at[24];
            snprintf(key, sizeof key, "s.%s", cs->k->id);
            snprintf(at, sizeof at, "%lld", now_ms());
            kv_put(c, key, at);
            return;
        }
    }
}

void chat_recovery_opened(struct chat_sock *cs)
{
    char key[64], live[8 + RECOVERY_BOOT_LEN];
    snprintf(key, sizeof key, "s.%s", cs->k->id);
    snprintf(live, sizeof live, "live %s", cs->chat->cfg->boot_id);
    kv_put(cs->chat, key, live);
}

void chat_recovery_alive(struct chat *c)
{
    if (!chat_recovery_on(c) || !bucket(c))
        return;
    char key[64], at[24];
    snprintf(key, sizeof key, "e.%s", c->cfg->boot_id);
    snprintf(at, sizeof at, "%lld", now_ms());
    kv_put(c, key, at);
}

void chat_on_release(struct chat *c, const uint8_t *data, size_t len)
{
    const char *reply = (const char *)data;
    size_t rl = strnlen(reply, len);
    if (rl == len)
        return;
    char req[128] = "";
    snprintf(req, sizeof req, "%.*s", (int)(len - rl - 1), reply + rl + 1);
    char *sp = strchr(req, ' ');
    const char *answer = "gone";
    char ok[32];
    if (sp) {
        *sp = '\0';
        long long at = release_socket(c, req, sp + 1);
        if (at > 0) {
            snprintf(ok, sizeof ok, "ok %lld", at);
            answer = ok;
        }
    }
    natsConnection_PublishString(c->bus->nc, reply, answer);
}
