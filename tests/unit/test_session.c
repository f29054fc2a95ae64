/* test_session: the Engine.IO session (services/edge/engineio/session.c)
 * driven through its two interfaces with no socket at all: fake transports
 * below (they record what the session asks of them) and a recording app
 * above. The loop is a real lws context that listens nowhere, so the wheel's
 * timers and the deferred kills run as in the edge; heartbeat times are short
 * and every wait is bounded. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <libwebsockets.h>
#include <stdio.h>
#include <string.h>

#include "engineio/session.h"
#include "mem.h"
#include "wheel.h"

#define PING_MS 120
#define PONG_MS 80
#define SCHED_SLACK_MS 60 /* what a shared 2-core machine may delay the process by */

/* ---- a transport that records ---- */

struct fake {
    struct eio_transport t;
    int kicks, closings, releases;
    char released_with[64];
};

static void fake_kick(struct eio_transport *t)
{
    ((struct fake *)t)->kicks++;
}

static void fake_closing(struct eio_transport *t)
{
    ((struct fake *)t)->closings++;
}

static void fake_release(struct eio_transport *t, const char *reason)
{
    struct fake *f = (struct fake *)t;
    f->releases++;
    snprintf(f->released_with, sizeof f->released_with, "%s", reason);
}

/* Like the WebSocket: no upgrades, no close packet. */
static const struct eio_transport_ops ws_like = {"websocket",  "",           0,   fake_kick,
                                                 fake_closing, fake_release, NULL};
/* Like long-polling: upgradable to a WebSocket, closes with a "1" packet. */
static const struct eio_transport_ops poll_like = {"polling", "\"websocket\"", 1,   fake_kick,
                                                   NULL,      fake_release,    NULL};

/* ---- an app that records ---- */

struct app_log {
    int opens, closes;
    char closed_with[64];
    struct buf messages; /* each message, then '|' */
};

static void app_open(void *ctx, struct session *s)
{
    (void)s;
    ((struct app_log *)ctx)->opens++;
}

static void app_message(void *ctx, struct session *s, const uint8_t *data, size_t len, int binary)
{
    (void)s;
    struct app_log *a = ctx;
    if (binary)
        buf_puts(&a->messages, "bin:");
    buf_append(&a->messages, data, len);
    buf_putc(&a->messages, '|');
}

static void app_close(void *ctx, struct session *s, const char *reason)
{
    (void)s;
    struct app_log *a = ctx;
    a->closes++;
    snprintf(a->closed_with, sizeof a->closed_with, "%s", reason);
}

static const struct eio_app app = {app_open, app_message, app_close};

/* ---- the loop ---- */

static struct lws_context *ctx;
static struct wheel wheel;
static struct eio_engine engine;
static struct eio_config cfg = {PING_MS, PONG_MS, 1000, 400, 0, 0};
static struct app_log log_;
static int refuse_next;

static int admit(void *actx, const char *ip)
{
    (void)actx;
    (void)ip;
    return refuse_next ? -1 : 0;
}

static void no_release(void *actx, const char *ip)
{
    (void)actx;
    (void)ip;
}

static int loop_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    (void)wsi, (void)reason, (void)user, (void)in, (void)len;
    return 0;
}

static const struct lws_protocols protocols[] = {{"test", loop_cb, 0, 0, 0, NULL, 0},
                                                 {NULL, NULL, 0, 0, 0, NULL, 0}};

static int setup(void **state)
{
    (void)state;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    lws_set_log_level(LLL_ERR, NULL);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    ctx = lws_create_context(&info);
    assert_non_null(ctx);
    wheel_lws_init(&wheel, ctx);
    eio_engine_init(&engine, &cfg, ctx, &wheel);
    engine.admit = admit;
    engine.release = no_release;
    memset(&log_, 0, sizeof log_);
    refuse_next = 0;
    return 0;
}

/* Each case ends with done() while its transports (on its stack) live: the
 * sessions left are destroyed and their transports released. */
static void done(void)
{
    eio_engine_cleanup(&engine);
    map_init(&engine.sessions);
}

static int teardown(void **state)
{
    (void)state;
    eio_engine_cleanup(&engine);
    wheel_lws_cleanup(&wheel);
    lws_context_destroy(ctx);
    buf_cleanup(&log_.messages);
    return 0;
}

/* Turns the loop until *flag is set or ms pass; returns *flag. */
static int run_until(const int *flag, int ms)
{
    lws_usec_t until = lws_now_usecs() + (lws_usec_t)ms * 1000;
    while (!*flag && lws_now_usecs() < until) {
        lws_cancel_service(ctx); /* never block past the check */
        lws_service(ctx, 0);
    }
    return *flag;
}

/* The queue as text: "<type><payload>" per frame, joined by '|'. */
static void queue_text(struct session *s, char *out, size_t n)
{
    size_t used = 0;
    out[0] = '\0';
    for (uint32_t i = 0; i < s->qlen; i++) {
        struct frame *f = s->q[(s->qhead + i) % s->qcap];
        used += (size_t)snprintf(out + used, n - used, "%s%.*s", i ? "|" : "", (int)f->len, frame_data(f));
    }
}

static struct session *open_session(struct fake *t, const struct eio_transport_ops *ops)
{
    memset(t, 0, sizeof *t);
    t->t.ops = ops;
    return session_create(&engine, &app, &log_, &t->t, "192.0.2.1");
}

static void handle(struct session *s, enum eio_type type, const char *data, int want)
{
    struct eio_packet p = {type, 0, (const uint8_t *)data, strlen(data)};
    assert_int_equal(session_handle(s, &p), want);
}

/* ---- the cases ---- */

static void test_open(void **state)
{
    (void)state;
    struct fake t, u;
    struct session *s = open_session(&t, &poll_like);
    assert_non_null(s);
    assert_ptr_equal(t.t.s, s);
    assert_int_equal(log_.opens, 1);
    assert_ptr_equal(session_find(&engine, s->sid), s);
    char q[512], want[512];
    queue_text(s, q, sizeof q);
    snprintf(want, sizeof want,
             "0{\"sid\":\"%s\",\"upgrades\":[\"websocket\"],\"pingInterval\":%d,\"pingTimeout\":%d,"
             "\"maxPayload\":1000}",
             s->sid, PING_MS, PONG_MS);
    assert_string_equal(q, want);
    assert_true(t.kicks >= 1); /* asked to write the open packet */
    struct session *w = open_session(&u, &ws_like);
    queue_text(w, q, sizeof q);
    assert_non_null(strstr(q, "\"upgrades\":[]"));
    refuse_next = 1; /* the admission hook says no: nothing is created */
    struct fake r;
    assert_null(open_session(&r, &ws_like));
    assert_int_equal(engine.sessions.count, 2);
    done();
}

static void test_queue(void **state)
{
    (void)state;
    struct fake t;
    struct session *s = open_session(&t, &ws_like);
    frame_unref(session_pop(s)); /* the open packet */
    session_send_message(s, "hello", 5);
    struct frame *g1 = frame_text(EIO_MESSAGE, "g1", 2), *g2 = frame_text(EIO_MESSAGE, "g2", 2);
    g1->coalesce = g2->coalesce = 42;
    session_send_frame(s, g1);
    session_send_frame(s, g2); /* replaces g1, still queued behind hello */
    frame_unref(g1);
    frame_unref(g2);
    char q[256];
    queue_text(s, q, sizeof q);
    assert_string_equal(q, "4hello|4g2");
    assert_int_equal(engine.frames_coalesced, 1);
    handle(s, EIO_MESSAGE, "in", 0);
    assert_string_equal(buf_cstr(&log_.messages), "in|");
    /* past max_queue_bytes (400): the slow client is cut off, on the next loop turn */
    char big[420];
    memset(big, 'x', sizeof big);
    session_send_message(s, big, sizeof big);
    assert_int_equal(s->closing, 1);
    assert_true(run_until(&log_.closes, 1000));
    assert_string_equal(log_.closed_with, "transport error");
    assert_int_equal(t.releases, 1);
    assert_string_equal(t.released_with, "transport error");
    assert_null(t.t.s);
    assert_int_equal(engine.sessions.count, 0);
    done();
}

/* A socket's first online list is as long as everyone online: one unbounded
 * frame at a time is not held against the queue bound; a second is. */
static void test_unbounded(void **state)
{
    (void)state;
    struct fake t;
    struct session *s = open_session(&t, &ws_like);
    frame_unref(session_pop(s)); /* the open packet */
    char big[1000];
    memset(big, 'l', sizeof big);
    struct frame *list = frame_text(EIO_MESSAGE, big, sizeof big);
    list->unbounded = 1;
    session_send_frame(s, list); /* 1001 bytes, max_queue_bytes 400 */
    assert_int_equal(s->closing, 0);
    assert_ptr_equal(s->exempt, list);
    char small[300];
    memset(small, 's', sizeof small);
    session_send_message(s, small, sizeof small); /* 301 counted */
    assert_int_equal(s->closing, 0);
    assert_int_equal(s->queued, 1001 + 301);
    /* the list taken: a new one is exempt again */
    struct frame *f = session_pop(s);
    assert_ptr_equal(f, list);
    frame_unref(f);
    assert_null(s->exempt);
    session_send_frame(s, list);
    assert_int_equal(s->closing, 0);
    assert_ptr_equal(s->exempt, list);
    /* a second list while one is queued counts like any frame: 301 + 1001 > 400 */
    struct frame *again = frame_text(EIO_MESSAGE, big, sizeof big);
    again->unbounded = 1;
    session_send_frame(s, again);
    frame_unref(again);
    frame_unref(list);
    assert_int_equal(s->closing, 1);
    assert_true(run_until(&log_.closes, 1000));
    assert_string_equal(log_.closed_with, "transport error");
    done();
}

/* The output budget is memory: a frame queued to many sessions (a status
 * sent to everyone) counts once, plus a slot per queue; a session with
 * unread output that would pass it is cut off. */
static void test_budget(void **state)
{
    (void)state;
    struct eio_config keep = cfg;
    cfg.max_queue_bytes = 4000;
    cfg.max_output_bytes = 1000;
    struct fake t[3];
    struct session *s[3];
    for (int i = 0; i < 3; i++) {
        s[i] = open_session(&t[i], &ws_like);
        frame_unref(session_pop(s[i])); /* the open packet */
    }
    assert_int_equal(engine.queued, 0);
    char x[299];
    memset(x, 'x', sizeof x);
    for (int k = 0; k < 2; k++) { /* two frames of 300 bytes, each to all three */
        struct frame *shared = frame_text(EIO_MESSAGE, x, sizeof x);
        for (int i = 0; i < 3; i++)
            session_send_frame(s[i], shared);
        frame_unref(shared);
    }
    assert_int_equal(engine.queued, 600 + 6 * FRAME_SLOT_BYTES); /* not 1800 */
    for (int i = 0; i < 3; i++)
        assert_int_equal(s[i]->closing, 0);
    /* a frame of its own would take 696 + 316 past 1000: s[0] has unread output */
    session_send_message(s[0], x, sizeof x);
    assert_int_equal(s[0]->closing, 1);
    assert_int_equal(engine.budget_kills, 1);
    assert_true(run_until(&log_.closes, 1000));
    assert_int_equal(engine.queued, 600 + 4 * FRAME_SLOT_BYTES); /* the others still hold both */
    for (struct frame *f; (f = session_pop(s[1]));)
        frame_unref(f);
    assert_int_equal(engine.queued, 600 + 2 * FRAME_SLOT_BYTES);
    /* one that has read everything still gets its frame past the budget */
    char big[999];
    memset(big, 'b', sizeof big);
    session_send_message(s[1], big, sizeof big);
    assert_int_equal(s[1]->closing, 0);
    assert_int_equal(engine.queued, 600 + 1000 + 3 * FRAME_SLOT_BYTES);
    for (int i = 1; i < 3; i++)
        for (struct frame *f; (f = session_pop(s[i]));)
            frame_unref(f);
    assert_int_equal(engine.queued, 0);
    cfg = keep;
    done();
}

static void test_heartbeat(void **state)
{
    (void)state;
    struct fake t;
    struct session *s = open_session(&t, &ws_like);
    frame_unref(session_pop(s));
    lws_usec_t start = lws_now_usecs();
    int queued = 0;
    while (!(queued = s->qlen > 0) && lws_now_usecs() - start < 1000000) {
        lws_cancel_service(ctx);
        lws_service(ctx, 0);
    }
    assert_true(queued);
    lws_usec_t at = lws_now_usecs() - start;
    /* Not late. The wheel's exactness is test_wheel's (a simulated clock);
     * here the wall clock also counts a busy machine's scheduling delay. */
    assert_true(at <= (PING_MS + SCHED_SLACK_MS) * 1000);
    char q[64];
    queue_text(s, q, sizeof q);
    assert_string_equal(q, "2");
    frame_unref(session_pop(s));
    handle(s, EIO_PONG, "", 0); /* answered: the next ping comes, no timeout */
    start = lws_now_usecs();
    while (!s->qlen && lws_now_usecs() - start < 1000000) {
        lws_cancel_service(ctx);
        lws_service(ctx, 0);
    }
    assert_int_equal(log_.closes, 0);
    frame_unref(session_pop(s));
    /* no pong this time: gone by pingTimeout, never later */
    lws_usec_t ping_at = lws_now_usecs();
    assert_true(run_until(&log_.closes, 1000));
    assert_string_equal(log_.closed_with, "ping timeout");
    assert_true(lws_now_usecs() - ping_at <= (PONG_MS + SCHED_SLACK_MS) * 1000);
    done();
}

static void test_upgrade(void **state)
{
    (void)state;
    struct fake poll, probe;
    struct session *s = open_session(&poll, &poll_like);
    assert_true(session_upgradable(s));
    memset(&probe, 0, sizeof probe);
    probe.t.ops = &ws_like;
    session_probe_attach(s, &probe.t);
    assert_false(session_upgradable(s)); /* one probe at a time */
    struct eio_packet bad = {EIO_MESSAGE, 0, (const uint8_t *)"x", 1};
    struct eio_packet ping = {EIO_PING, 0, (const uint8_t *)"probe", 5};
    struct eio_packet up = {EIO_UPGRADE, 0, (const uint8_t *)"", 0};
    assert_int_equal(session_probe_packet(s, &up), PROBE_FAIL); /* "5" before "2probe" */
    int kicks = poll.kicks;
    assert_int_equal(session_probe_packet(s, &ping), PROBE_PONG);
    assert_int_equal(s->upgrading, 1);
    assert_true(poll.kicks > kicks); /* the held GET is freed with a noop */
    assert_int_equal(session_probe_packet(s, &bad), PROBE_FAIL);
    session_send_message(s, "queued before the switch", 24);
    assert_int_equal(session_probe_packet(s, &up), PROBE_OK);
    assert_ptr_equal(s->carrier, &probe.t);
    assert_null(s->probe);
    assert_int_equal(poll.releases, 1);
    assert_string_equal(poll.released_with, "upgrade");
    assert_true(probe.kicks >= 1); /* the queue goes out on the WebSocket */
    char q[512];
    queue_text(s, q, sizeof q);
    assert_non_null(strstr(q, "4queued before the switch"));
    /* the carrier's connection goes: the session ends with it, not released twice */
    session_transport_gone(s, &probe.t, "transport close");
    assert_int_equal(log_.closes, 1);
    assert_string_equal(log_.closed_with, "transport close");
    assert_int_equal(probe.releases, 0);
    done();
}

static void test_probe_lost(void **state)
{
    (void)state;
    struct fake poll, probe;
    struct session *s = open_session(&poll, &poll_like);
    memset(&probe, 0, sizeof probe);
    probe.t.ops = &ws_like;
    session_probe_attach(s, &probe.t);
    session_transport_gone(s, &probe.t, "transport close"); /* the probe's socket closed */
    assert_null(s->probe);
    assert_int_equal(s->upgrading, 0);
    assert_true(session_upgradable(s)); /* another probe may come */
    assert_int_equal(log_.closes, 0);
    done();
}

static void test_close_paths(void **state)
{
    (void)state;
    struct fake p, w, c;
    /* long-polling: "1" is queued for the next GET; the session goes once it is fetched or after a grace */
    struct session *s = open_session(&p, &poll_like);
    frame_unref(session_pop(s));
    session_close(s, "server shutting down");
    char q[64];
    queue_text(s, q, sizeof q);
    assert_string_equal(q, "1");
    assert_int_equal(log_.closes, 0);
    /* WebSocket: no packet, the transport is told to close after the queue */
    struct session *t = open_session(&w, &ws_like);
    frame_unref(session_pop(t));
    session_close(t, "forced close");
    assert_int_equal(t->qlen, 0);
    assert_int_equal(w.closings, 1);
    /* the client's "1": the session ends with "transport close" */
    struct session *u = open_session(&c, &ws_like);
    handle(u, EIO_CLOSE, "", -1);
    assert_string_equal(u->close_reason, "transport close");
    session_kill(u, u->close_reason);
    assert_true(run_until(&log_.closes, 1000));
    assert_string_equal(log_.closed_with, "transport close");
    assert_string_equal(c.released_with, "transport close");
    /* a packet a client may not send ends it as a parse error */
    struct fake d;
    struct session *v = open_session(&d, &ws_like);
    handle(v, EIO_OPEN, "", -1);
    assert_string_equal(v->close_reason, "parse error");
    /* the engine's cleanup destroys what is left, releasing every transport */
    done();
    assert_int_equal(p.releases + w.releases + d.releases, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unbounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upgrade, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_paths, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
