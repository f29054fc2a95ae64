/* session: Engine.IO session state on the loop's thread. It owns the output
 * queue (bounded by max_queue_bytes: a peer that stops reading is cut off,
 * never buffered for), the heartbeat (the server pings every pingInterval and
 * ends the session when no pong comes within pingTimeout, docs/protocol.md
 * §Heartbeat) and the upgrade from long-polling to WebSocket (§Upgrade). It
 * never writes to a socket itself: it asks its transport (struct
 * eio_transport_ops) to write, and the transport pops the frames. */
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ids.h"
#include "log.h"
#include "mem.h"

#define UPGRADE_TIMEOUT_MS 10000 /* what the reference server allows */
#define CLOSE_GRACE_MS 5000      /* with a close packet: longest wait for the request that fetches "1" */

static void on_ping_timer(struct wheel_timer *t);

/* FNV-1a 32 of the sid, in hex: enough to follow a session through the logs,
 * nothing to take it over with (a sid is its bearer's credential). */
static void make_tag(struct session *s)
{
    uint32_t h = 2166136261u;
    for (const char *p = s->sid; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    snprintf(s->tag, sizeof s->tag, "%08x", h);
}

/* The next ping may go out a little early (it shares wakeups with other
 * sessions' pings); the pong deadline is exact: no session outlives
 * pingInterval + pingTimeout without a pong. */
static void arm(struct session *s, long ms, int how)
{
    wheel_lws_schedule(s->engine->wheel, &s->t_ping, on_ping_timer, (int64_t)ms * 1000, how);
}

static void on_close_timer(struct wheel_timer *t)
{
    struct session *s = lws_container_of(t, struct session, t_close);
    session_destroy(s, s->close_reason ? s->close_reason : "forced close");
}

/* session_kill: a timer due at once (lws's sorted list takes it at its head,
 * the wheel would wait for its next tick). */
static void on_kill(lws_sorted_usec_list_t *sul)
{
    struct session *s = lws_container_of(sul, struct session, sul_kill);
    session_destroy(s, s->close_reason ? s->close_reason : "forced close");
}

static void on_ping_timer(struct wheel_timer *t)
{
    struct session *s = lws_container_of(t, struct session, t_ping);
    if (s->pong_due) {
        log_debug("session ping timeout session=%s", s->tag);
        session_kill(s, "ping timeout");
        return;
    }
    session_send(s, EIO_PING, NULL, 0);
    s->pong_due = 1;
    arm(s, s->engine->cfg->ping_timeout_ms, WHEEL_EXACT);
}

void session_kick(struct session *s)
{
    if (s->carrier)
        s->carrier->ops->kick(s->carrier);
}

void session_kill(struct session *s, const char *reason)
{
    if (!s->close_reason)
        s->close_reason = reason;
    s->closing = 1;
    lws_sul_schedule(s->engine->ctx, 0, &s->sul_kill, on_kill, 1);
}

/* ---------- the engine ---------- */

void eio_engine_init(struct eio_engine *e, const struct eio_config *cfg, struct lws_context *ctx,
                     struct wheel *wheel)
{
    memset(e, 0, sizeof *e);
    e->cfg = cfg;
    e->ctx = ctx;
    e->wheel = wheel;
    map_init(&e->sessions);
}

void eio_engine_close_all(struct eio_engine *e, const char *reason)
{
    size_t i;
    for (struct map_entry *m = map_first(&e->sessions, &i); m; m = map_next(&e->sessions, m, &i))
        session_close(m->value, reason);
}

void eio_engine_cleanup(struct eio_engine *e)
{
    size_t i;
    struct map_entry *m;
    while ((m = map_first(&e->sessions, &i)))
        session_destroy(m->value, "server shutting down");
    map_cleanup(&e->sessions);
}

/* ---------- the output queue ---------- */

/* The carrier stops or starts reading from the client as the queue passes
 * the read-pause mark, or falls to half of it. */
static void flow(struct session *s)
{
    long mark = s->engine->cfg->read_pause_bytes;
    size_t queued = s->queued - (s->exempt ? s->exempt->len : 0);
    int pause = s->paused ? queued > (size_t)mark / 2 : mark > 0 && queued > (size_t)mark;
    if (pause == s->paused)
        return;
    s->paused = pause;
    if (s->carrier && s->carrier->ops->pause)
        s->carrier->ops->pause(s->carrier, pause);
}

/* f joins or leaves a queue: the engine's memory of queued output. */
static void queue_ref(struct eio_engine *e, struct frame *f)
{
    if (f->queues++ == 0)
        e->queued += f->len;
    e->queued += FRAME_SLOT_BYTES;
}

static void queue_unref(struct eio_engine *e, struct frame *f)
{
    if (--f->queues == 0)
        e->queued -= f->len;
    e->queued -= FRAME_SLOT_BYTES;
}

void session_send_frame(struct session *s, struct frame *f)
{
    if (s->closing)
        return;
    struct eio_engine *e = s->engine;
    /* A socket's first online list is as long as everyone online: its size
     * is not the peer's doing, so it is not held against the peer (once per
     * queue: a second one counts). */
    int exempt = f->unbounded && !s->exempt;
    size_t counted = s->queued - (s->exempt ? s->exempt->len : 0);
    if (!exempt && counted + f->len > (size_t)e->cfg->max_queue_bytes) {
        log_limited(LOG_WARN, "session output queue full session=%s queued=%zu: closing slow client", s->tag,
                    s->queued);
        session_kill(s, "transport error");
        return;
    }
    size_t cost = FRAME_SLOT_BYTES + (f->queues ? 0 : f->len);
    if (e->cfg->max_output_bytes > 0 && s->qlen && e->queued + cost > (size_t)e->cfg->max_output_bytes) {
        /* The edge's output budget is spent: a session with something still
         * unread does not get more (one that has read everything still gets
         * its frame, so that everyone can make progress). */
        e->budget_kills++;
        log_limited(LOG_WARN, "output budget reached queued=%zu: closing session=%s with %zu unread",
                    e->queued, s->tag, s->queued);
        session_kill(s, "transport error");
        return;
    }
    if (f->coalesce && s->qlen) {
        struct frame **last = &s->q[(s->qhead + s->qlen - 1) % s->qcap];
        if ((*last)->coalesce == f->coalesce) {
            s->queued -= (*last)->len;
            queue_unref(e, *last);
            frame_unref(*last);
            *last = f;
            f->refs++;
            s->queued += f->len;
            queue_ref(e, f);
            e->frames_coalesced++;
            return;
        }
    }
    if (s->qlen == s->qcap) { /* grow the ring, oldest first */
        uint32_t cap = s->qcap ? s->qcap * 2 : 8;
        struct frame **q = xmalloc(cap * sizeof *q);
        for (uint32_t i = 0; i < s->qlen; i++)
            q[i] = s->q[(s->qhead + i) % s->qcap];
        free(s->q);
        s->q = q;
        s->qcap = cap;
        s->qhead = 0;
    }
    s->q[(s->qhead + s->qlen) % s->qcap] = f;
    f->refs++;
    s->queued += f->len;
    queue_ref(e, f);
    if (exempt)
        s->exempt = f;
    if (s->qlen++ == 0) /* a non-empty queue has its writable callback asked for */
        session_kick(s);
    flow(s);
}

static void enqueue(struct session *s, struct frame *f)
{
    session_send_frame(s, f);
    frame_unref(f);
}

void session_send(struct session *s, enum eio_type type, const void *payload, size_t len)
{
    enqueue(s, frame_text(type, payload, len));
}

void session_send_message(struct session *s, const void *text, size_t len)
{
    session_send(s, EIO_MESSAGE, text, len);
}

void session_send_binary(struct session *s, const void *data, size_t len)
{
    enqueue(s, frame_binary(data, len));
}

struct frame *session_pop(struct session *s)
{
    if (!s->qlen)
        return NULL;
    struct frame *f = s->q[s->qhead];
    s->qhead = (s->qhead + 1) % s->qcap;
    s->queued -= f->len;
    queue_unref(s->engine, f);
    if (f == s->exempt) /* (a frame queued twice: its first pop ends it; the other is counted) */
        s->exempt = NULL;
    if (--s->qlen == 0 && s->qcap > 64) { /* a burst is over: back to nothing */
        free(s->q);
        s->q = NULL;
        s->qcap = s->qhead = 0;
    }
    if (s->paused)
        flow(s);
    return f;
}

/* ---------- life ---------- */

struct session *session_create(struct eio_engine *e, const struct eio_app *app, void *app_ctx,
                               struct eio_transport *t, const char *ip)
{
    if (e->admit && e->admit(e->admit_ctx, ip) != 0)
        return NULL;
    struct session *s = xcalloc(1, sizeof *s);
    snprintf(s->ip, sizeof s->ip, "%s", ip);
    s->engine = e;
    s->app = app;
    s->app_ctx = app_ctx;
    s->carrier = t;
    t->s = s;
    do
        ids_random(s->sid, 20);
    while (map_get(&e->sessions, s->sid));
    make_tag(s);
    map_put(&e->sessions, s->sid, s);

    /* docs/protocol.md §Handshake: exactly these keys; a polling session may
     * upgrade to a WebSocket, a WebSocket session to nothing. */
    char open[256];
    int n = snprintf(open, sizeof open,
                     "{\"sid\":\"%s\",\"upgrades\":[%s],\"pingInterval\":%ld,\"pingTimeout\":%ld,"
                     "\"maxPayload\":%ld}",
                     s->sid, t->ops->upgrades, e->cfg->ping_interval_ms, e->cfg->ping_timeout_ms,
                     e->cfg->max_payload);
    session_send(s, EIO_OPEN, open, (size_t)n);
    arm(s, e->cfg->ping_interval_ms, WHEEL_EARLY);
    log_debug("session open session=%s transport=%s", s->tag, t->ops->name);
    if (app->on_open)
        app->on_open(app_ctx, s);
    return s;
}

struct session *session_find(struct eio_engine *e, const char *sid)
{
    return map_get(&e->sessions, sid);
}

/* Detaches t, then lets its transport go: a transport's release may free t
 * (long-polling's does), so t is not touched after it. */
static void release(struct eio_transport *t, const char *reason)
{
    if (!t)
        return;
    t->s = NULL;
    t->ops->release(t, reason);
}

void session_destroy(struct session *s, const char *reason)
{
    if (!s)
        return;
    if (s->close_reason)
        reason = s->close_reason;
    struct eio_engine *e = s->engine;
    wheel_cancel(e->wheel, &s->t_ping);
    wheel_cancel(e->wheel, &s->t_close);
    wheel_cancel(e->wheel, &s->t_upgrade);
    lws_sul_cancel(&s->sul_kill);
    map_del(&e->sessions, s->sid);
    if (e->release)
        e->release(e->admit_ctx, s->ip);
    s->closing = 1; /* the app may try to send while closing: dropped */
    if (s->app->on_close)
        s->app->on_close(s->app_ctx, s, reason);
    log_debug("session closed session=%s reason=\"%s\"", s->tag, reason);
    /* No connection may point here any more. */
    release(s->carrier, reason);
    release(s->probe, reason);
    s->carrier = s->probe = NULL;
    struct frame *f;
    while ((f = session_pop(s)))
        frame_unref(f);
    free(s->q);
    free(s);
}

void session_transport_gone(struct session *s, struct eio_transport *t, const char *reason)
{
    t->s = NULL;
    if (s->probe == t) {
        session_probe_detach(s);
    } else if (s->carrier == t) {
        s->carrier = NULL;
        session_destroy(s, reason);
    }
}

int session_handle(struct session *s, const struct eio_packet *p)
{
    if (s->closing)
        return 0;
    switch (p->type) {
    case EIO_PONG:
        if (s->pong_due) {
            s->pong_due = 0;
            arm(s, s->engine->cfg->ping_interval_ms, WHEEL_EARLY);
        }
        return 0;
    case EIO_MESSAGE:
        s->app->on_message(s->app_ctx, s, p->data, p->len, p->binary);
        return 0;
    case EIO_CLOSE:
        /* docs/protocol.md §Close: the peer ends the session. */
        s->close_reason = "transport close";
        return -1;
    default:
        /* open, noop and upgrade never come from a client on an open
         * transport; a client ping is a v3 habit, refused in v4. */
        s->close_reason = "parse error";
        return -1;
    }
}

void session_close(struct session *s, const char *reason)
{
    if (s->closing || !s->carrier)
        return;
    if (s->carrier->ops->close_packet) {
        /* docs/protocol.md §Close: "1" goes out on the next GET, then the
         * session is gone. A client that never polls again gets a grace. */
        session_send(s, EIO_CLOSE, NULL, 0);
        wheel_lws_schedule(s->engine->wheel, &s->t_close, on_close_timer, (int64_t)CLOSE_GRACE_MS * 1000,
                           WHEEL_EXACT);
    }
    s->closing = 1;
    s->close_reason = reason;
    session_kick(s);
    if (s->carrier->ops->closing)
        s->carrier->ops->closing(s->carrier);
}

/* ---------- upgrade ---------- */

int session_upgradable(const struct session *s)
{
    return s->carrier && *s->carrier->ops->upgrades && !s->probe && !s->closing;
}

static void on_upgrade_timeout(struct wheel_timer *t)
{
    struct session *s = lws_container_of(t, struct session, t_upgrade);
    if (s->probe) {
        log_debug("upgrade timed out session=%s", s->tag);
        release(s->probe, "upgrade timeout");
        session_probe_detach(s);
    }
}

void session_probe_attach(struct session *s, struct eio_transport *probe)
{
    s->probe = probe;
    probe->s = s;
    wheel_lws_schedule(s->engine->wheel, &s->t_upgrade, on_upgrade_timeout,
                       (int64_t)UPGRADE_TIMEOUT_MS * 1000, WHEEL_EXACT);
}

int session_probe_packet(struct session *s, const struct eio_packet *p)
{
    if (!s->upgrading && p->type == EIO_PING && p->len == 5 && memcmp(p->data, "probe", 5) == 0) {
        /* §Upgrade step 2: the probe is answered; the carrier frees its pending
         * request with a noop (and every one until the switch). */
        s->upgrading = 1;
        session_kick(s);
        return PROBE_PONG;
    }
    if (s->upgrading && p->type == EIO_UPGRADE && !s->closing) {
        /* §Upgrade step 3: the probe carries the session from now on; what was
         * queued goes out on it, in order. */
        wheel_cancel(s->engine->wheel, &s->t_upgrade);
        struct eio_transport *old = s->carrier;
        s->carrier = s->probe;
        s->probe = NULL;
        s->upgrading = 0;
        release(old, "upgrade");
        if (s->paused && s->carrier->ops->pause)
            s->carrier->ops->pause(s->carrier, 1);
        log_debug("session upgraded session=%s", s->tag);
        session_kick(s);
        return PROBE_OK;
    }
    /* §Upgrade step 4: anything else ends the probe, not the session. */
    return PROBE_FAIL;
}

void session_probe_detach(struct session *s)
{
    wheel_cancel(s->engine->wheel, &s->t_upgrade);
    s->probe = NULL;
    s->upgrading = 0;
    if (s->qlen)
        session_kick(s);
}
