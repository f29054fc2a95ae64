/* load_client: Socket.IO clients on one lws client context (see
 * load_client.h). It speaks only what a socket.io-client v4 with
 * transports: ["websocket"] speaks: no polling, no binary, namespace "/". It
 * never answers a server's ack request (the seed's server sends none). */
#include "load_client.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "load_util.h"

#define WBUF_CAP 65536
#define RX_KEEP_CAP 65536 /* a larger reassembly buffer is freed after use */

struct lc_counts lc_counts;

static struct lws_context *ctx;
static const struct lc_app *app;
static char host_addr[256], host_hdr[300];
static int host_port, n_src;
static unsigned char wbuf[LWS_PRE + WBUF_CAP];
static int tick_fd = -1; /* a timerfd in lws' poll set: see lc_set_tick */
static struct lc_conn *all;
static size_t n_all;
static int64_t next_scan;

static void note_error(const char *why)
{
    if (!lc_counts.first_error[0] && why)
        snprintf(lc_counts.first_error, sizeof lc_counts.first_error, "%s", why);
}

/* c leaves the active states: failed (never ready) or closed (was ready). */
static void finish(struct lc_conn *c, const char *why)
{
    if (c->state == LC_CONNECTING || c->state == LC_OPENING || c->state == LC_JOINING) {
        lc_counts.connecting--;
        lc_counts.failed++;
        c->state = LC_FAILED;
        note_error(why);
    } else if (c->state == LC_READY) {
        lc_counts.ready--;
        lc_counts.closed++;
        c->state = LC_CLOSED;
        note_error(why);
    }
    c->emits = 0;
}

static int is_name(const char *name, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len == n && memcmp(name, lit, n) == 0;
}

/* In a Socket.IO EVENT or ACK body (after the type digit): skips an ack id,
 * returns the id (or -1) and points *rest at the JSON array. */
static long long take_id(const char *p, size_t len, const char **rest, size_t *rest_len)
{
    long long id = -1;
    size_t i = 0;
    while (i < len && p[i] >= '0' && p[i] <= '9') {
        id = (id < 0 ? 0 : id * 10) + (p[i] - '0');
        i++;
    }
    *rest = p + i;
    *rest_len = len - i;
    return id;
}

/* The event name of a JSON array text ["name", ...]; 0 when not found in
 * the first len bytes. */
static int event_name(const char *a, size_t len, const char **name, size_t *name_len)
{
    if (len < 3 || a[0] != '[' || a[1] != '"')
        return 0;
    const char *end = memchr(a + 2, '"', len - 2);
    if (!end)
        return 0;
    *name = a + 2;
    *name_len = (size_t)(end - (a + 2));
    return 1;
}

/* The presence:update list came: c is ready, or, ready already without it
 * (promote_joined), it is no longer missing its list. */
static void got_list(struct lc_conn *c, int64_t now)
{
    if (c->list_wait) {
        c->list_wait = 0;
        lc_counts.no_list--;
        lc_counts.list_late++;
        if (now - c->t_sio > lc_counts.list_late_max_ns)
            lc_counts.list_late_max_ns = now - c->t_sio;
    }
}

static void become_ready(struct lc_conn *c, int64_t now)
{
    if (c->state != LC_JOINING)
        return;
    c->state = LC_READY;
    c->t_ready = now;
    lc_counts.connecting--;
    lc_counts.ready++;
    if (c->emits)
        lc_want_write(c);
}

/* One whole Engine.IO message (docs/protocol.md §2.2, §3). */
static void on_message(struct lc_conn *c, int64_t now, const char *p, size_t len)
{
    lc_counts.frames_in++;
    if (len == 0)
        return;
    if (p[0] != '2')
        lc_counts.last_rx = now; /* heartbeats do not count as traffic */
    switch (p[0]) {
    case '0': /* open */
        if (c->state == LC_OPENING) {
            c->state = LC_JOINING;
            c->sio_due = 1;
            lc_want_write(c);
        }
        return;
    case '2': /* ping: answer pong */
        c->pongs++;
        lc_counts.pings++;
        lc_want_write(c);
        return;
    case '1': /* close */
        finish(c, "server sent an Engine.IO close");
        c->closing = 1;
        lc_want_write(c);
        return;
    case '4':
        break;
    default:
        return;
    }
    if (len < 2)
        return;
    const char *rest, *name;
    size_t rest_len, name_len;
    switch (p[1]) {
    case '0': /* CONNECT reply {"sid"} */
        c->sio_ok = 1;
        c->t_sio = now;
        return;
    case '4': { /* CONNECT_ERROR */
        char why[120];
        snprintf(why, sizeof why, "connect_error %.*s", (int)(len - 2 > 80 ? 80 : len - 2), p + 2);
        finish(c, why);
        c->closing = 1;
        lc_want_write(c);
        return;
    }
    case '1': /* DISCONNECT */
        finish(c, "server disconnected the socket (41)");
        c->closing = 1;
        lc_want_write(c);
        return;
    case '2': /* EVENT */
        take_id(p + 2, len - 2, &rest, &rest_len);
        if (!event_name(rest, rest_len, &name, &name_len))
            return;
        if ((c->state == LC_JOINING && c->sio_ok) || c->list_wait) {
            if (is_name(name, name_len, "presence:update")) {
                if (app->on_list)
                    app->on_list(c, rest, rest_len);
                got_list(c, now);
                become_ready(c, now);
                return;
            }
        }
        if (c->state == LC_READY && app->on_event)
            app->on_event(c, now, name, name_len, rest, rest_len);
        return;
    case '3': { /* ACK */
        long long id = take_id(p + 2, len - 2, &rest, &rest_len);
        if (c->state == LC_READY && app->on_ack && id >= 0)
            app->on_ack(c, now, id, rest, rest_len);
        return;
    }
    default:
        return;
    }
}

/* A part of a message larger than lws' rx buffer: kept, or dropped when
 * nobody needs it (the presence:update list still marks readiness). */
static void on_part(struct lc_conn *c, int64_t now, const char *in, size_t len, int final)
{
    if (!c->rx_len && !c->skipping) { /* first part */
        const char *rest, *name;
        size_t rest_len, name_len;
        if (len > 2 && in[0] == '4' && in[1] == '2') {
            take_id(in + 2, len - 2, &rest, &rest_len);
            if (event_name(rest, rest_len, &name, &name_len)) {
                if (is_name(name, name_len, "presence:update") && !app->on_list)
                    c->skipping = 2;
                else if (app->wants && !app->wants(name, name_len))
                    c->skipping = 1;
            }
        }
    }
    if (!c->skipping) {
        if (c->rx_len + len > c->rx_cap) {
            uint32_t cap = c->rx_cap ? c->rx_cap : 8192;
            while (cap < c->rx_len + len)
                cap *= 2;
            char *p = realloc(c->rx, cap);
            if (!p) {
                fprintf(stderr, "chatload: out of memory\n");
                exit(1);
            }
            c->rx = p;
            c->rx_cap = cap;
        }
        memcpy(c->rx + c->rx_len, in, len);
        c->rx_len += (uint32_t)len;
    }
    if (!final)
        return;
    if (c->skipping) {
        lc_counts.frames_in++;
        lc_counts.last_rx = now;
        if (c->skipping == 2 && c->sio_ok) {
            got_list(c, now);
            become_ready(c, now);
        }
    } else {
        on_message(c, now, c->rx, c->rx_len);
    }
    c->skipping = 0;
    c->rx_len = 0;
    if (c->rx_cap > RX_KEEP_CAP) {
        free(c->rx);
        c->rx = NULL;
        c->rx_cap = 0;
    }
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    (void)user;
    struct lc_conn *c = wsi ? lws_get_opaque_user_data(wsi) : NULL;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (c) {
            char why[160];
            snprintf(why, sizeof why, "connection error: %s", in ? (const char *)in : "?");
            c->wsi = NULL;
            finish(c, why);
        }
        break;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (c && c->state == LC_CONNECTING)
            c->state = LC_OPENING;
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (c) {
            int64_t now = load_now_ns();
            int final = lws_is_final_fragment(wsi);
            if (final && !c->rx_len && !c->skipping)
                on_message(c, now, in, len);
            else
                on_part(c, now, in, len, final);
        }
        break;
    case LWS_CALLBACK_CLIENT_WRITEABLE: {
        if (!c || c->closing)
            return -1;
        char *buf = (char *)wbuf + LWS_PRE;
        size_t n = 0;
        if (c->sio_due) {
            int r = snprintf(buf, WBUF_CAP, "40{\"token\":\"%s\"}", c->token);
            n = r > 0 && r < WBUF_CAP ? (size_t)r : 0;
            c->sio_due = 0;
        } else if (c->pongs) {
            buf[0] = '3';
            n = 1;
            c->pongs--;
        } else if (c->emits && c->state == LC_READY) {
            c->emits--;
            n = app->write_frame(c, buf, WBUF_CAP);
        }
        if (n && lws_write(wsi, (unsigned char *)buf, n, LWS_WRITE_TEXT) < (int)n) {
            finish(c, "write failed");
            return -1;
        }
        if (c->sio_due || c->pongs || (c->emits && c->state == LC_READY))
            lws_callback_on_writable(wsi);
        break;
    }
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (c) {
            c->wsi = NULL;
            finish(c, "connection closed by the server");
        }
        break;
    default:
        break;
    }
    return 0;
}

/* The tick timerfd: only wakes poll up. */
static int tick_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    (void)wsi;
    (void)user;
    (void)in;
    (void)len;
    if (reason == LWS_CALLBACK_RAW_RX_FILE) {
        uint64_t expirations;
        if (read(tick_fd, &expirations, sizeof expirations) < 0)
            return 0; /* EAGAIN: nothing due */
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {"chatload", callback, 0, 4096, 0, NULL, 0},
    {"chatload-tick", tick_callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

int lc_init(struct lc_conn *conns, size_t nconns, const char *host, int port, int src_addrs,
            const struct lc_app *a)
{
    all = conns;
    n_all = nconns;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.gid = (gid_t)-1;
    info.uid = (uid_t)-1;
    info.fd_limit_per_thread = (unsigned int)(nconns + 256);
    info.timeout_secs = 60;
    info.connect_timeout_secs = 30;
    lws_set_log_level(LLL_ERR, NULL);
    app = a;
    snprintf(host_addr, sizeof host_addr, "%s", host);
    snprintf(host_hdr, sizeof host_hdr, "%s:%d", host, port);
    host_port = port;
    n_src = src_addrs;
    ctx = lws_create_context(&info);
    if (!ctx)
        return -1;
    /* lws 4.1.6 turns the time to its next timer into a poll() timeout in
     * whole ms, rounded down: a timer less than 1 ms away makes it spin
     * with poll(0). The periodic wake-up is therefore a timerfd that poll
     * watches, not an lws timer. */
    tick_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    lws_sock_file_fd_type fd;
    fd.filefd = tick_fd;
    if (tick_fd < 0 || !lws_adopt_descriptor_vhost(lws_get_vhost_by_name(ctx, "default"),
                                                   LWS_ADOPT_RAW_FILE_DESC, fd, "chatload-tick", NULL)) {
        fprintf(stderr, "chatload: could not add the tick timer to the loop\n");
        return -1;
    }
    lc_set_tick(10000);
    return 0;
}

void lc_set_tick(long us)
{
    if (us < 100)
        us = 100;
    struct itimerspec its;
    its.it_interval.tv_sec = us / 1000000;
    its.it_interval.tv_nsec = (us % 1000000) * 1000;
    its.it_value = its.it_interval;
    timerfd_settime(tick_fd, 0, &its, NULL);
}

void lc_connect(struct lc_conn *c)
{
    char iface[32];
    struct lws_client_connect_info i;
    memset(&i, 0, sizeof i);
    i.context = ctx;
    i.address = host_addr;
    i.port = host_port;
    i.path = "/socket.io/?EIO=4&transport=websocket";
    i.host = host_hdr;
    i.local_protocol_name = "chatload";
    i.opaque_user_data = c;
    i.pwsi = &c->wsi;
    if (n_src > 0) {
        unsigned a = 1 + c->idx % (unsigned)n_src; /* 127.0.0.1 ... 127.0.0.254 */
        snprintf(iface, sizeof iface, "127.0.0.%u", a);
        i.iface = iface;
    }
    c->state = LC_CONNECTING;
    c->t_start = load_now_ns();
    lc_counts.connecting++;
    if (!lws_client_connect_via_info(&i) && c->state == LC_CONNECTING) {
        c->wsi = NULL;
        finish(c, "lws_client_connect_via_info failed");
    }
}

void lc_want_write(struct lc_conn *c)
{
    if (c->wsi)
        lws_callback_on_writable(c->wsi);
}

/* Sockets whose CONNECT was answered but whose presence:update is not
 * coming: ready as of the reply. */
static void promote_joined(int64_t now)
{
    int64_t grace = (int64_t)LC_JOIN_GRACE_MS * 1000000;
    for (size_t i = 0; i < n_all; i++) {
        struct lc_conn *c = &all[i];
        if (c->state == LC_JOINING && c->sio_ok && now - c->t_sio > grace) {
            become_ready(c, c->t_sio);
            c->list_wait = 1; /* counted until its list comes, if it does */
            lc_counts.no_list++;
        }
    }
}

void lc_service(void)
{
    lws_service(ctx, 0);
    int64_t now = load_now_ns();
    if (lc_counts.connecting && now >= next_scan) {
        next_scan = now + 100000000; /* every 100 ms */
        promote_joined(now);
    }
}

void lc_destroy(void)
{
    if (ctx)
        lws_context_destroy(ctx); /* closes the tick timerfd too */
    ctx = NULL;
    tick_fd = -1;
}
