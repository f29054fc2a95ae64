/* chat_online: the edge's copy of the online list (online.c) kept from NATS,
 * on the loop's thread (docs/architecture.md §Presence). The changes come from
 * chat.presence.status (chat_on_status); a snapshot is asked on
 * chat.presence.snapshot with the reply subject <inbox>.s<n>, so that its
 * chunks come back through the edge's inbox subscription and the relay like
 * any reply, and a chunk of an attempt given up is known by its n. Nothing
 * here blocks: a snapshot is a publish, a timer and the chunks as they come.
 *
 * A snapshot is asked at the start, after every NATS (re)connection and
 * whenever a change does not follow the copy (a gap, another epoch). With no
 * presence replica active the request finds no responder at once: it is
 * asked again every SNAPSHOT_RETRY_MS. A connect's presence:update is written
 * from the copy while it is in step, in one packet shared by the sockets
 * that connect while it does not change. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_int.h"
#include "log.h"
#include "metrics.h"
#include "subjects.h"

#define SNAPSHOT_CHUNK_WAIT_MS                                                                               \
    2000                      /* a snapshot is given up when its next chunk does not come within this        \
                               */
#define SNAPSHOT_RETRY_MS 250 /* before asking again after a snapshot that failed */

static void ask(struct chat *c);

static void gauges(struct chat *c)
{
    metrics_set("chat_edge_online_users", NULL, (double)online_count(c->online));
    metrics_set("chat_edge_online_in_step", NULL, online_in_step(c->online));
    size_t left = online_left_out(c->online);
    if (left != c->online_left_out) {
        log_limited(LOG_WARN,
                    "online list: %zu entries left out so far (a user id or username that cannot be "
                    "written)",
                    left);
        c->online_left_out = left;
    }
}

/* The sockets whose CONNECT reply waits for the snapshot are answered: from
 * the copy when it is in step now, else from presence's reply. */
static void release_waiters(struct chat *c)
{
    if (!c->online_waiters)
        return;
    struct chat_sock **ready = xmalloc(c->online_waiters * sizeof *ready);
    size_t n = 0, i;
    for (struct map_entry *m = map_first(&c->socks, &i); m && n < c->online_waiters;
         m = map_next(&c->socks, m, &i)) {
        struct chat_sock *cs = m->value;
        if (cs->waiting & WAIT_ONLINE)
            ready[n++] = cs;
    }
    for (size_t k = 0; k < n; k++) {
        chat_online_forget(ready[k]);
        chat_open(ready[k]);
    }
    free(ready);
}

static void on_online_timer(struct wheel_timer *t)
{
    struct chat *c = container_of(t, struct chat, t_online);
    if (c->online_retrying) {
        ask(c);
        return;
    }
    /* A busy loop turn may have left chunks waiting in the relay: taken
     * first (they may complete it, or reschedule the timer). */
    unsigned attempt = c->online_attempt;
    chat_drain(c);
    if (c->online_attempt != attempt || c->t_online.pprev || !online_asking(c->online) || c->online_retrying)
        return;
    log_warn("online list: snapshot %u given up: no chunk for %d ms", c->online_attempt,
             SNAPSHOT_CHUNK_WAIT_MS);
    online_lost(c->online);
    gauges(c);
    release_waiters(c);
    c->online_retrying = 1;
    wheel_lws_schedule(c->wheel, &c->t_online, on_online_timer, SNAPSHOT_RETRY_MS * 1000LL, WHEEL_EXACT);
}

static void retry_later(struct chat *c)
{
    c->online_retrying = 1;
    wheel_lws_schedule(c->wheel, &c->t_online, on_online_timer, SNAPSHOT_RETRY_MS * 1000LL, WHEEL_EXACT);
}

/* Sends a snapshot request; its chunks come to <inbox>.s<attempt>. */
static void ask(struct chat *c)
{
    wheel_cancel(c->wheel, &c->t_online);
    c->online_retrying = 0;
    if (c->stopped)
        return;
    char reply[96];
    snprintf(reply, sizeof reply, "%s.s%u", c->inbox, ++c->online_attempt);
    online_asked(c->online); /* before the request: a change that comes with the chunks is buffered */
    if (!bus_connected(c->bus) ||
        natsConnection_PublishRequest(c->bus->nc, SUBJ_PRESENCE_SNAPSHOT, reply, "", 0) != NATS_OK) {
        online_lost(c->online);
        release_waiters(c);
        retry_later(c); /* the (re)connection asks again too */
        return;
    }
    c->online_asked_us = bucket_now_us();
    log_debug("online list: snapshot %u asked", c->online_attempt);
    wheel_lws_schedule(c->wheel, &c->t_online, on_online_timer, SNAPSHOT_CHUNK_WAIT_MS * 1000LL, WHEEL_EXACT);
}

static const char *why_text(const char *why)
{
    if (strcmp(why, "gap") == 0)
        return "a change skipped a seq";
    if (strcmp(why, "epoch") == 0)
        return "a change of another epoch";
    if (strcmp(why, "overflow") == 0)
        return "too many changes while the snapshot came";
    return "a chunk out of order, or of another epoch or seq";
}

/* The copy went out of step (why: online.h's reason): a new snapshot now. */
static void out_of_step(struct chat *c, const char *why)
{
    chat_count("chat_edge_online_out_of_step_total", "reason", why);
    log_info("online list out of step (%s) at epoch=%s seq=%" PRIu64 ": asking for a snapshot", why_text(why),
             online_epoch(c->online), online_seq(c->online));
    gauges(c);
    ask(c);
}

int chat_online_key(const char *key)
{
    return key[0] == 's';
}

void chat_online_reply(struct chat *c, const char *key, const uint8_t *data, size_t len)
{
    char want[16];
    snprintf(want, sizeof want, "s%u", c->online_attempt);
    if (strcmp(key, want) != 0 || !online_asking(c->online) || c->online_retrying)
        return; /* a chunk of a snapshot given up */
    if (!data) {
        log_debug("online list: no presence replica answers snapshots; asking again in %d ms",
                  SNAPSHOT_RETRY_MS);
        online_lost(c->online);
        release_waiters(c);
        retry_later(c);
        return;
    }
    Chat__V1__PresenceSnapshot *s = chat__v1__presence_snapshot__unpack(NULL, len, data);
    const char *why = "chunk";
    enum online_verdict v = ONLINE_AGAIN;
    uint32_t chunks = 0;
    if (s) {
        v = online_chunk(c->online, s, &why);
        chunks = s->chunks;
    } else {
        online_lost(c->online);
    }
    chat__v1__presence_snapshot__free_unpacked(s, NULL);
    if (v == ONLINE_MORE) {
        wheel_lws_schedule(c->wheel, &c->t_online, on_online_timer, SNAPSHOT_CHUNK_WAIT_MS * 1000LL,
                           WHEEL_EXACT);
        return;
    }
    wheel_cancel(c->wheel, &c->t_online);
    if (v == ONLINE_IN_STEP) {
        metrics_add("chat_edge_online_snapshots_total", NULL, 1);
        log_info("online list in step: snapshot %u of %zu users in %" PRIu32 " chunks, epoch=%s seq=%" PRIu64
                 ", %lld ms after asking",
                 c->online_attempt, online_count(c->online), chunks, online_epoch(c->online),
                 online_seq(c->online), (bucket_now_us() - c->online_asked_us) / 1000);
        gauges(c);
        release_waiters(c);
        return;
    }
    if (strcmp(why, "chunk") != 0) { /* whole, but a change buffered meanwhile does not follow it */
        metrics_add("chat_edge_online_snapshots_total", NULL, 1);
        out_of_step(c, why);
        return;
    }
    log_warn("online list: snapshot %u refused (%s); asking again in %d ms", c->online_attempt, why_text(why),
             SNAPSHOT_RETRY_MS);
    gauges(c);
    release_waiters(c);
    retry_later(c);
}

void chat_online_change(struct chat *c, const Chat__V1__PresenceChange *pc)
{
    const char *why;
    enum online_verdict v = online_change(c->online, pc, &why);
    if (v == ONLINE_AGAIN)
        out_of_step(c, why);
    else if (v == ONLINE_APPLIED)
        gauges(c);
}

void chat_online_lost(struct chat *c)
{
    online_lost(c->online);
    chat_count("chat_edge_online_out_of_step_total", "reason", "reconnect");
    log_info("online list out of step (NATS connected again): asking for a snapshot");
    gauges(c);
    ask(c);
}

/* ---------- connects ---------- */

static void on_connect_deadline(struct wheel_timer *t)
{
    struct chat_sock *cs = container_of(t, struct chat_sock, t_online);
    log_debug("online list: snapshot not in time for socket=%s: answered from presence's reply", cs->k->id);
    chat_online_forget(cs);
    chat_open(cs);
}

void chat_online_wait(struct chat_sock *cs)
{
    struct chat *c = cs->chat;
    if (online_in_step(c->online))
        return;
    if (!online_asking(c->online))
        ask(c); /* presence just answered: it answers a snapshot too (no need to wait for the retry) */
    if (!online_asking(c->online))
        return; /* NATS cannot take the request: presence's reply it is */
    long long left_us = cs->connect_us + CONNECT_WAIT_MS * 1000LL - bucket_now_us();
    if (left_us <= 0)
        return;
    cs->waiting |= WAIT_ONLINE;
    c->online_waiters++;
    wheel_lws_schedule(c->wheel, &cs->t_online, on_connect_deadline, left_us, WHEEL_EXACT);
}

void chat_online_forget(struct chat_sock *cs)
{
    if (!(cs->waiting & WAIT_ONLINE))
        return;
    cs->waiting &= ~WAIT_ONLINE;
    cs->chat->online_waiters--;
    wheel_cancel(cs->chat->wheel, &cs->t_online);
}

struct frame *chat_online_list(struct chat *c)
{
    if (!online_in_step(c->online))
        return NULL;
    unsigned long long gen = online_gen(c->online);
    if (!c->online_list || c->online_list_gen != gen) {
        frame_unref(c->online_list);
        struct buf b;
        buf_init(&b);
        online_write(c->online, &b, "presence:update");
        c->online_list = frame_text(EIO_MESSAGE, b.data, b.len);
        c->online_list->unbounded = 1; /* as long as everyone online: not the client's doing */
        c->online_list_gen = gen;
        log_debug("online list written users=%zu bytes=%zu", online_count(c->online), b.len);
        buf_cleanup(&b);
    }
    c->online_list->refs++;
    return c->online_list;
}

/* ---------- lifecycle ---------- */

void chat_online_create(struct chat *c)
{
    c->online = online_create();
    metrics_describe("chat_edge_online_users", "gauge", "Users in the edge's copy of the online list.");
    metrics_describe("chat_edge_online_in_step", "gauge",
                     "1 while the copy of the online list is in step with presence's changes.");
    metrics_describe("chat_edge_online_snapshots_total", "counter",
                     "Snapshots of the online list taken whole from presence.");
    metrics_describe("chat_edge_online_out_of_step_total", "counter",
                     "Times the copy of the online list fell out of step, by reason (gap, epoch, reconnect, "
                     "overflow).");
    metrics_add("chat_edge_online_snapshots_total", NULL, 0);
    gauges(c);
}

void chat_online_start(struct chat *c)
{
    ask(c);
}

void chat_online_stop(struct chat *c)
{
    wheel_cancel(c->wheel, &c->t_online);
}

void chat_online_destroy(struct chat *c)
{
    frame_unref(c->online_list);
    c->online_list = NULL;
    online_destroy(c->online);
    c->online = NULL;
}
