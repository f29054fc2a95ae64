/* chatload: a load generator for any server that serves the seed's Socket.IO
 * events (ours or another implementation) over Engine.IO v4 WebSocket. It
 * mints HS256 tokens from the secret, opens the connections itself (one
 * thread, libwebsockets), runs one scenario and prints its figures, its
 * parameters and the machine. Latencies are measured in this process with
 * CLOCK_MONOTONIC: the send time travels in the payload (ghost:typing text,
 * message content) and is read back on arrival. It never tunes or restarts
 * the server; --pid names the server processes whose RSS and CPU it reads.
 *
 *   chatload SCENARIO --url http://127.0.0.1:PORT --secret S [options]
 *   scenarios: idle connect relay messages fanout (chatload --help) */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "load_client.h"
#include "load_util.h"

#define MAX_PIDS 8
#define MAX_SAMPLES (1u << 22)

enum scenario { SC_IDLE, SC_CONNECT, SC_RELAY, SC_MESSAGES, SC_FANOUT };
static const char *const scenario_names[] = {"idle", "connect", "relay", "messages", "fanout"};

static struct {
    enum scenario sc;
    const char *url, *secret, *label, *tsv;
    const char *nats_monitor; /* host:port of nats-server's monitoring (-m): NATS figures */
    long contacts;            /* connect: each user's contacts (i±1..±K/2); 0: none */
    long long user_seed;      /* >= 0: user ids from it (chatload seed wrote their conversations) */
    int interest;             /* connect: the server is in PRESENCE_SCOPE=interest: check exactly */
    const char *out;          /* seed: the COPY file to write */
    char host[256];
    int port;
    long n, users, window, connect_window, rounds, src_addrs;
    double rate, seconds, connect_timeout, settle_max;
    int ack;
    int npids;
    pid_t pids[MAX_PIDS];
    char pid_names[MAX_PIDS][32];
} opt;

struct user {
    char id[LOAD_UUID_LEN + 1];
    char *token;
};

static struct user *users;
static struct lc_conn *conns;
static char machine[512];
static volatile sig_atomic_t interrupted;

/* ---------- what the callbacks count ---------- */

enum mode { M_NONE, M_RELAY, M_MESSAGES, M_FANOUT };

static struct {
    enum mode mode;
    int closed_loop; /* window-driven; otherwise the rate schedules frames */
    int running;     /* closed loop: answers start new frames */
    int64_t t0;      /* start of the current phase: older stamps are ignored */
    uint64_t sent, recv, done, errors;
    struct load_samples lat, lat2; /* relay/messages latency; messages: send -> message:sent */
    /* fanout */
    const char *fan_user, *fan_status;
    int64_t fan_t0, fan_last, fan_first;
    uint64_t fan_got;
    char first_error[200];
} st;

/* ---------- output ---------- */

static FILE *tsv;

static void fig(const char *name, double v, const char *unit)
{
    printf("  %-30s %14.3f  %s\n", name, v, unit);
    if (tsv)
        fprintf(tsv, "%s\t%s\t%s\t%.6f\t%s\n", opt.label, scenario_names[opt.sc], name, v, unit);
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

/* ---------- the server processes ---------- */

struct snap {
    struct load_proc p[MAX_PIDS];
    int ok[MAX_PIDS];
    int64_t t;
};

static void snap_take(struct snap *s)
{
    s->t = load_now_ns();
    for (int i = 0; i < opt.npids; i++)
        s->ok[i] = load_proc_read(opt.pids[i], &s->p[i]) == 0;
}

/* CPU of process i between a and b, in % of one core. */
static double cpu_pct(const struct snap *a, const struct snap *b, int i)
{
    double dt = (double)(b->t - a->t) / 1e9;
    if (!a->ok[i] || !b->ok[i] || dt <= 0)
        return -1;
    return 100.0 * (b->p[i].cpu_s - a->p[i].cpu_s) / dt;
}

/* Cores busy in every server process of --pid between a and b; -1 when one
 * of them could not be read. */
static double server_cores(const struct snap *a, const struct snap *b)
{
    double sum = 0;
    for (int i = 0; i < opt.npids; i++) {
        double p = cpu_pct(a, b, i);
        if (p < 0)
            return -1;
        sum += p / 100.0;
    }
    return opt.npids ? sum : -1;
}

/* name = rate per CPU-second of the server processes: what the server does
 * with a core, which a machine shared with other work measures better than
 * the rate itself. */
static void fig_per_core(const char *name, double rate, const struct snap *a, const struct snap *b)
{
    double cores = server_cores(a, b);
    fig(name, cores > 0 ? rate / cores : -1, "per CPU-second of all the --pid processes");
}

static void fig_cpu(const char *phase, const struct snap *a, const struct snap *b)
{
    char name[96];
    if (opt.npids) { /* the main process once more under a name shared by every side */
        snprintf(name, sizeof name, "cpu_%s", phase);
        fig(name, cpu_pct(a, b, 0), "% of one core (main process)");
    }
    for (int i = 0; i < opt.npids; i++) {
        snprintf(name, sizeof name, "cpu_%s.%s", phase, opt.pid_names[i]);
        fig(name, cpu_pct(a, b, i), "% of one core");
    }
}

static long self_rss_kb(void)
{
    struct load_proc p;
    return load_proc_read(getpid(), &p) == 0 ? p.rss_kb : 0;
}

/* ---------- the loop ---------- */

static int64_t now_ns(void)
{
    return load_now_ns();
}

static int64_t after_s(double s)
{
    return now_ns() + (int64_t)(s * 1e9);
}

/* Services the connections for s seconds. */
static void run_for(double s)
{
    int64_t end = after_s(s);
    while (!interrupted && now_ns() < end)
        lc_service();
}

/* Services the connections until nothing has arrived for quiet_s and the
 * server processes use under 10 % of a core together, for at most max_s.
 * Returns the seconds it took (max_s when it gave up). */
static double settle(double quiet_s, double max_s)
{
    int64_t t0 = now_ns(), end = after_s(max_s);
    struct snap a, b;
    snap_take(&a);
    while (!interrupted && now_ns() < end) {
        run_for(0.25);
        snap_take(&b);
        double busy = 0;
        for (int i = 0; i < opt.npids; i++)
            busy += cpu_pct(&a, &b, i) > 0 ? cpu_pct(&a, &b, i) : 0;
        a = b;
        if (busy < 10.0 && now_ns() - lc_counts.last_rx > (int64_t)(quiet_s * 1e9))
            return (double)(now_ns() - t0) / 1e9;
    }
    return max_s;
}

/* Opens conns [0, n) with at most opt.connect_window handshakes in flight.
 * Returns the seconds from the first start to the last ready socket. */
static double connect_all(long n, struct load_samples *lat)
{
    long next = 0;
    int64_t first = now_ns(), end = after_s(opt.connect_timeout);
    while (!interrupted && now_ns() < end) {
        while (next < n && (long)lc_counts.connecting < opt.connect_window)
            lc_connect(&conns[next++]);
        if (next == n && lc_counts.connecting == 0)
            break;
        lc_service();
    }
    int64_t last = first;
    for (long i = 0; i < n; i++)
        if (conns[i].state == LC_READY) {
            if (conns[i].t_ready > last)
                last = conns[i].t_ready;
            if (lat)
                load_samples_add(lat, conns[i].t_ready - conns[i].t_start);
        }
    if (lc_counts.connecting) {
        long by_state[LC_CLOSED + 1] = {0};
        for (long i = 0; i < n; i++)
            by_state[conns[i].state]++;
        fprintf(stderr,
                "chatload: %zu connections still not ready after %.0f s (%ld in the WebSocket handshake, "
                "%ld waiting for the open packet, %ld for the CONNECT reply)\n",
                lc_counts.connecting, opt.connect_timeout, by_state[LC_CONNECTING], by_state[LC_OPENING],
                by_state[LC_JOINING]);
    }
    return (double)(last - first) / 1e9;
}

/* ---------- frames ---------- */

static int is(const char *name, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len == n && memcmp(name, lit, n) == 0;
}

/* args[1][key] as a decimal number (a send time in ns), or -1. */
static int64_t stamp_of(const char *args, size_t len, const char *key, int nested_message)
{
    json_error_t err;
    json_t *a = json_loadb(args, len, 0, &err);
    if (!a)
        return -1;
    json_t *o = json_array_get(a, nested_message ? 0 : 1);
    if (nested_message) /* an ack {ok, message: {...}} */
        o = json_object_get(o, "message");
    const char *s = json_string_value(json_object_get(o, key));
    int64_t v = s ? strtoll(s, NULL, 10) : -1;
    json_decref(a);
    return v;
}

static size_t write_frame(struct lc_conn *c, char *buf, size_t cap)
{
    int64_t now = now_ns();
    const char *peer = users[conns[c->peer].user].id;
    int n = 0;
    switch (st.mode) {
    case M_RELAY:
        if (c->seq++ % 2 == 0)
            n = snprintf(buf, cap, "42[\"ghost:typing\",{\"recipientId\":\"%s\",\"text\":\"%lld\"}]", peer,
                         (long long)now);
        else
            n = snprintf(buf, cap, "42[\"typing:start\",{\"recipientId\":\"%s\"}]", peer);
        break;
    case M_MESSAGES:
        if (opt.ack)
            n = snprintf(
                buf, cap,
                "42%llu[\"message:send\",{\"recipientId\":\"%s\",\"content\":\"%lld\",\"type\":\"text\"}]",
                (unsigned long long)++c->seq, peer, (long long)now);
        else
            n = snprintf(
                buf, cap,
                "42[\"message:send\",{\"recipientId\":\"%s\",\"content\":\"%lld\",\"type\":\"text\"}]", peer,
                (long long)now);
        break;
    case M_FANOUT:
        n = snprintf(buf, cap, "42[\"presence:update\",{\"status\":\"%s\"}]", st.fan_status);
        st.fan_t0 = now;
        break;
    case M_NONE:
        return 0;
    }
    if (n <= 0 || (size_t)n >= cap)
        return 0;
    st.sent++;
    if (st.closed_loop)
        c->inflight++;
    return (size_t)n;
}

/* A closed-loop frame of c was answered: the next one goes out. */
static void credit(struct lc_conn *c)
{
    if (!st.closed_loop)
        return;
    if (c->inflight)
        c->inflight--;
    if (st.running) {
        c->emits++;
        lc_want_write(c);
    }
}

/* ---------- contacts (connect --contacts K): what each socket learns of who is online ---------- */

static uint32_t *user_slots; /* open addressing: user index + 1 by id */
static size_t nuser_slots;
static uint32_t *known;    /* per connection: bit 0 itself, bit k its k-th contact, online */
static uint64_t strangers; /* online users heard of by a socket that has no conversation with them */

static uint32_t id_hash(const char *id)
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < LOAD_UUID_LEN; i++)
        h = (h ^ (unsigned char)id[i]) * 16777619u;
    return h;
}

static void users_index(void)
{
    for (nuser_slots = 16; nuser_slots < (size_t)opt.users * 2; nuser_slots *= 2)
        ;
    user_slots = calloc(nuser_slots, sizeof *user_slots);
    for (long u = 0; u < opt.users; u++) {
        size_t i = id_hash(users[u].id) & (nuser_slots - 1);
        while (user_slots[i])
            i = (i + 1) & (nuser_slots - 1);
        user_slots[i] = (uint32_t)u + 1;
    }
}

static long user_of(const char *id)
{
    size_t i = id_hash(id) & (nuser_slots - 1);
    while (user_slots[i]) {
        if (memcmp(users[user_slots[i] - 1].id, id, LOAD_UUID_LEN) == 0)
            return (long)user_slots[i] - 1;
        i = (i + 1) & (nuser_slots - 1);
    }
    return -1;
}

/* The slot of user v among u's contacts (0: u itself), or -1. */
static int contact_slot(long u, long v)
{
    if (u == v)
        return 0;
    long half = opt.contacts / 2, d = (v - u + opt.users) % opt.users;
    if (d >= 1 && d <= half)
        return (int)d;
    if (opt.users - d >= 1 && opt.users - d <= half)
        return (int)(half + (opt.users - d));
    return -1;
}

/* One user heard of as online by connection c (id: 36 characters). */
static void heard(const struct lc_conn *c, const char *id)
{
    long v = user_of(id);
    int slot = v < 0 ? -1 : contact_slot((long)c->user, v);
    if (slot >= 0)
        known[c->idx] |= 1u << slot;
    else
        strangers++;
}

/* Every "userId":"<id>" of a list or a status whose status is not offline. */
static void heard_in(const struct lc_conn *c, const char *p, size_t len)
{
    static const char key[] = "\"userId\":\"";
    const char *end = p + len;
    while ((p = memmem(p, (size_t)(end - p), key, sizeof key - 1))) {
        p += sizeof key - 1;
        if (end - p < LOAD_UUID_LEN)
            return;
        const char *obj_end = memchr(p, '}', (size_t)(end - p));
        if (!obj_end || !memmem(p, (size_t)(obj_end - p), "\"status\":\"offline\"", 18))
            heard(c, p);
    }
}

static void on_list(struct lc_conn *c, const char *args, size_t len)
{
    heard_in(c, args, len);
}

static void on_event(struct lc_conn *c, int64_t now, const char *name, size_t nlen, const char *args,
                     size_t alen)
{
    if (opt.interest && known && is(name, nlen, "user:status")) {
        heard_in(c, args, alen);
        return;
    }
    if (st.mode == M_RELAY && (is(name, nlen, "ghost:typing") || is(name, nlen, "typing:start"))) {
        st.recv++;
        if (!st.closed_loop && name[0] == 'g') {
            int64_t ts = stamp_of(args, alen, "text", 0);
            if (ts >= st.t0)
                load_samples_add(&st.lat, now - ts);
        }
        credit(&conns[c->peer]);
    } else if (st.mode == M_MESSAGES && is(name, nlen, "message:received")) {
        st.recv++;
        if (!st.closed_loop) {
            int64_t ts = stamp_of(args, alen, "content", 0);
            if (ts >= st.t0)
                load_samples_add(&st.lat, now - ts);
        }
    } else if (st.mode == M_MESSAGES && is(name, nlen, "message:sent")) {
        if (!opt.ack) {
            st.done++;
            if (!st.closed_loop) {
                int64_t ts = stamp_of(args, alen, "content", 0);
                if (ts >= st.t0)
                    load_samples_add(&st.lat2, now - ts);
            }
            credit(c);
        }
    } else if (st.mode == M_FANOUT && is(name, nlen, "user:status")) {
        char want[64];
        snprintf(want, sizeof want, "\"status\":\"%s\"", st.fan_status);
        if (st.fan_user && memmem(args, alen, st.fan_user, strlen(st.fan_user)) &&
            memmem(args, alen, want, strlen(want))) {
            if (!st.fan_got++)
                st.fan_first = now;
            st.fan_last = now;
            load_samples_add(&st.lat, now - st.fan_t0);
        }
    } else if (is(name, nlen, "chat:error")) {
        st.errors++;
        if (!st.first_error[0])
            snprintf(st.first_error, sizeof st.first_error, "%.*s", (int)(alen > 180 ? 180 : alen), args);
        if (st.mode == M_RELAY || st.mode == M_MESSAGES)
            credit(c); /* a refused frame is answered too: the loop goes on */
    }
}

static void on_ack(struct lc_conn *c, int64_t now, long long id, const char *args, size_t alen)
{
    (void)id;
    if (st.mode != M_MESSAGES || !opt.ack)
        return;
    if (!memmem(args, alen, "\"ok\":true", 9)) {
        st.errors++;
        if (!st.first_error[0])
            snprintf(st.first_error, sizeof st.first_error, "%.*s", (int)(alen > 180 ? 180 : alen), args);
        credit(c);
        return;
    }
    st.done++;
    if (!st.closed_loop) {
        int64_t ts = stamp_of(args, alen, "content", 1);
        if (ts >= st.t0)
            load_samples_add(&st.lat2, now - ts);
    }
    credit(c);
}

/* Large messages worth keeping (others, like a long presence list, are
 * dropped as they arrive). */
static int wants(const char *name, size_t len)
{
    return is(name, len, "message:received") || is(name, len, "message:sent") || is(name, len, "chat:error");
}

static struct lc_app app = {write_frame, on_event, on_ack, wants, NULL};

/* ---------- scenario helpers ---------- */

static size_t count_ready(void)
{
    return lc_counts.ready;
}

/* A closed loop of opt.window frames per ready connection for opt.seconds;
 * returns the answers per second after a warm-up (a fifth, at most 1 s). */
static double closed_loop(uint64_t *answers)
{
    double warm = opt.seconds / 5 < 1 ? opt.seconds / 5 : 1;
    st.closed_loop = 1;
    st.running = 1;
    st.t0 = now_ns();
    for (long i = 0; i < opt.n; i++)
        if (conns[i].state == LC_READY) {
            conns[i].inflight = 0;
            conns[i].emits = (uint32_t)opt.window;
            lc_want_write(&conns[i]);
        }
    run_for(warm);
    uint64_t a0 = *answers;
    int64_t t1 = now_ns();
    run_for(opt.seconds - warm);
    uint64_t a1 = *answers;
    double rate = (double)(a1 - a0) / ((double)(now_ns() - t1) / 1e9);
    st.running = 0;
    for (long i = 0; i < opt.n; i++)
        conns[i].emits = 0;
    /* let what is in flight land (bounded) */
    int64_t end = after_s(10);
    for (;;) {
        uint64_t left = 0;
        for (long i = 0; i < opt.n; i++)
            left += conns[i].inflight;
        if (!left || now_ns() >= end || interrupted)
            break;
        lc_service();
    }
    return rate;
}

/* An open loop: opt.rate frames per second spread round-robin over the
 * ready connections for opt.seconds, then up to drain_s for the answers.
 * Frames carry their send time. */
static void open_loop(uint64_t *answers, double drain_s)
{
    st.closed_loop = 0;
    st.running = 0;
    st.sent = 0;
    *answers = 0;
    lc_set_tick(1000);
    int64_t t0 = now_ns(), end = t0 + (int64_t)(opt.seconds * 1e9);
    st.t0 = t0;
    uint64_t scheduled = 0;
    long rr = 0;
    while (!interrupted) {
        int64_t now = now_ns();
        if (now >= end)
            break;
        uint64_t due = (uint64_t)((double)(now - t0) * opt.rate / 1e9);
        while (scheduled < due) {
            for (long k = 0; k < opt.n && conns[rr].state != LC_READY; k++)
                rr = (rr + 1) % opt.n;
            if (conns[rr].state != LC_READY)
                break;
            conns[rr].emits++;
            lc_want_write(&conns[rr]);
            rr = (rr + 1) % opt.n;
            scheduled++;
        }
        lc_service();
    }
    uint64_t unsent = 0;
    for (long i = 0; i < opt.n; i++) {
        unsent += conns[i].emits;
        conns[i].emits = 0;
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    fig("offered_per_s", opt.rate, "frames/s");
    fig("sent_per_s", (double)st.sent / secs, "frames/s (written by the client)");
    if (unsent)
        fig("unsent", (double)unsent, "frames the client could not write in time");
    int64_t dend = after_s(drain_s);
    while (!interrupted && *answers < st.sent && now_ns() < dend)
        lc_service();
    lc_set_tick(10000);
}

static void fig_latency(const char *prefix, struct load_samples *s)
{
    char name[64];
    snprintf(name, sizeof name, "%s_p50_ms", prefix);
    fig(name, ms(load_samples_pct(s, 50)), "ms");
    snprintf(name, sizeof name, "%s_p99_ms", prefix);
    fig(name, ms(load_samples_pct(s, 99)), "ms");
    snprintf(name, sizeof name, "%s_p999_ms", prefix);
    fig(name, ms(load_samples_pct(s, 99.9)), "ms");
    snprintf(name, sizeof name, "%s_max_ms", prefix);
    fig(name, ms(load_samples_pct(s, 100)), "ms");
    snprintf(name, sizeof name, "%s_samples", prefix);
    fig(name, (double)s->n, s->dropped ? "samples (some dropped: cap reached)" : "samples");
}

static void setup_pairs(void)
{
    for (long i = 0; i < opt.n; i++)
        conns[i].peer = (uint32_t)(i ^ 1) < (uint32_t)opt.n ? (uint32_t)(i ^ 1) : (uint32_t)i;
}

/* Gives lists still on their way time to come (a swamped client reads them
 * late; only one that never comes is "without list"): as long as another
 * came within the last stall_s, up to max_s in all. */
static void await_lists(double stall_s, double max_s)
{
    int64_t end = after_s(max_s), stall = after_s(stall_s);
    uint64_t left = lc_counts.no_list;
    while (!interrupted && lc_counts.no_list && now_ns() < end && now_ns() < stall) {
        lc_service();
        if (lc_counts.no_list < left) {
            left = lc_counts.no_list;
            stall = after_s(stall_s);
        }
    }
}

static void fig_connected(double secs)
{
    size_t ready = count_ready();
    double closed = (double)lc_counts.closed;
    await_lists(10, 300);
    fig("connected", (double)ready, "sockets");
    fig("connect_failed", (double)lc_counts.failed, "sockets");
    fig("connect_seconds", secs, "s (first start to last ready)");
    fig("closed_by_server", closed, "sockets closed by the server after they were ready");
    fig("closed_awaiting_lists", (double)lc_counts.closed - closed,
        "sockets closed later, while the client read lists late (its pongs were late too)");
    fig("connected_without_list", (double)lc_counts.no_list,
        "sockets that never got their presence:update list (within the run)");
    fig("list_late", (double)lc_counts.list_late,
        "sockets whose list came over 1 s after the CONNECT reply (it came)");
    fig("list_late_max_ms", (double)lc_counts.list_late_max_ns / 1e6,
        "ms from a CONNECT reply to its latest list");
}

/* ---------- scenarios ---------- */

static void sc_idle(void)
{
    struct snap base, full, held;
    snap_take(&base);
    long self0 = self_rss_kb();
    double secs = connect_all(opt.n, NULL);
    double waited = settle(0.5, opt.settle_max);
    snap_take(&full);
    long self1 = self_rss_kb();
    uint64_t pings0 = lc_counts.pings;
    run_for(opt.seconds);
    snap_take(&held);
    size_t n = count_ready();
    fig_connected(secs);
    fig("settle_seconds", waited, "s until the server was quiet after the connects");
    if (opt.npids)
        fig("rss_per_conn_kib",
            n && base.ok[0] && full.ok[0] ? (double)(full.p[0].rss_kb - base.p[0].rss_kb) / (double)n : -1,
            "KiB per connection (main process)");
    for (int i = 0; i < opt.npids; i++) {
        char name[96];
        snprintf(name, sizeof name, "rss_before_mib.%s", opt.pid_names[i]);
        fig(name, base.ok[i] ? base.p[i].rss_kb / 1024.0 : -1, "MiB");
        snprintf(name, sizeof name, "rss_after_mib.%s", opt.pid_names[i]);
        fig(name, full.ok[i] ? full.p[i].rss_kb / 1024.0 : -1, "MiB");
        snprintf(name, sizeof name, "rss_per_conn_kib.%s", opt.pid_names[i]);
        fig(name,
            n && base.ok[i] && full.ok[i] ? (double)(full.p[i].rss_kb - base.p[i].rss_kb) / (double)n : -1,
            "KiB per connection");
    }
    fig_cpu("idle", &full, &held);
    fig("client_rss_per_conn_kib", n ? (double)(self1 - self0) / (double)n : 0,
        "KiB per connection (chatload)");
    fig("pings_answered", (double)(lc_counts.pings - pings0), "during the hold");
    fig("closed_during_hold", (double)lc_counts.closed, "sockets");
}

static void sc_connect(void)
{
    struct load_samples lat;
    struct snap a, b;
    load_samples_init(&lat, (size_t)opt.n);
    snap_take(&a);
    double secs = connect_all(opt.n, &lat);
    snap_take(&b);
    size_t ready = count_ready(); /* before the wait for late lists */
    fig_connected(secs);
    if (opt.contacts && opt.interest) {
        /* Every user online now: each socket must know exactly its contacts. */
        settle(0.5, 30);
        uint32_t all = (1u << (opt.contacts + 1)) - 1;
        size_t complete = 0;
        for (long i = 0; i < opt.n; i++)
            complete += conns[i].state == LC_READY && (known[i] & all) == all;
        fig("contacts_complete", (double)complete,
            "sockets that know each of their contacts online (all should)");
        fig("strangers_heard", (double)strangers,
            "users heard of by a socket without a conversation with them (0)");
    }
    fig("connects_per_s", secs > 0 ? (double)ready / secs : 0, "handshakes + auth per second");
    fig_per_core("connects_per_core_s", secs > 0 ? (double)ready / secs : 0, &a, &b);
    fig_latency("connect", &lat);
    fig_cpu("connect", &a, &b);
    load_samples_cleanup(&lat);
}

static void sc_relay(void)
{
    struct snap a, b;
    setup_pairs();
    double secs = connect_all(opt.n, NULL);
    fig_connected(secs);
    settle(0.3, opt.settle_max);
    st.mode = M_RELAY;
    snap_take(&a);
    double eps = closed_loop(&st.recv);
    snap_take(&b);
    fig("events_per_s", eps, "relayed events/s received (closed loop)");
    fig_per_core("events_per_core_s", eps, &a, &b);
    fig_cpu("closed", &a, &b);
    settle(0.3, 10);
    snap_take(&a);
    open_loop(&st.recv, 3);
    snap_take(&b);
    fig("received", (double)st.recv, "events");
    fig("lost", st.sent > st.recv ? (double)(st.sent - st.recv) : 0, "events not received");
    fig_latency("latency", &st.lat);
    fig_cpu("open", &a, &b);
}

/* ---------- nats-server's monitoring: what a persisted message costs NATS ---------- */

/* GET path on opt.nats_monitor; the JSON body, or NULL. */
static json_t *monitor_get(const char *path)
{
    char host[64] = "127.0.0.1";
    int port = 0;
    const char *colon = strrchr(opt.nats_monitor, ':');
    if (!colon || (size_t)(colon - opt.nats_monitor) >= sizeof host)
        return NULL;
    memcpy(host, opt.nats_monitor, (size_t)(colon - opt.nats_monitor));
    host[colon - opt.nats_monitor] = '\0';
    port = atoi(colon + 1);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return NULL;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    if (!buf || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || write(fd, req, (size_t)n) != n) {
        free(buf);
        close(fd);
        return NULL;
    }
    for (;;) {
        if (len + 4096 > cap) {
            char *p = realloc(buf, cap *= 2);
            if (!p)
                break;
            buf = p;
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    char *body = strstr(buf, "\r\n\r\n");
    /* nats-server writes uint64 maxima that overflow a json_int_t: read numbers as doubles. */
    json_t *j = body ? json_loads(body + 4, JSON_DECODE_INT_AS_REAL, NULL) : NULL;
    free(buf);
    return j;
}

struct nats_counts {
    double in_msgs, out_msgs, stores;
    int ok;
};

/* The server's message counters and its JetStream stores (the sum of every
 * stream's last sequence: each store takes one). */
static void nats_counts(struct nats_counts *c)
{
    memset(c, 0, sizeof *c);
    if (!opt.nats_monitor)
        return;
    json_t *v = monitor_get("/varz");
    json_t *j = monitor_get("/jsz?accounts=true&streams=true");
    if (v && j) {
        c->in_msgs = json_number_value(json_object_get(v, "in_msgs"));
        c->out_msgs = json_number_value(json_object_get(v, "out_msgs"));
        size_t i, k;
        json_t *acc, *stream;
        json_array_foreach(json_object_get(j, "account_details"), i, acc)
            json_array_foreach(json_object_get(acc, "stream_detail"), k, stream)
                c->stores += json_number_value(json_object_get(json_object_get(stream, "state"), "last_seq"));
        c->ok = 1;
    }
    json_decref(v);
    json_decref(j);
}

static void fig_nats(const struct nats_counts *a, const struct nats_counts *b, double messages)
{
    if (!a->ok || !b->ok || messages <= 0)
        return;
    fig("nats_msgs_in_per_message", (b->in_msgs - a->in_msgs) / messages,
        "NATS messages the server received per persisted message (all clients: edge, services)");
    fig("nats_msgs_out_per_message", (b->out_msgs - a->out_msgs) / messages,
        "NATS messages the server sent per persisted message");
    fig("jetstream_stores_per_message", (b->stores - a->stores) / messages,
        "JetStream stores per persisted message (every stream's sequence advanced)");
}

static void sc_messages(void)
{
    struct snap a, b;
    setup_pairs();
    double secs = connect_all(opt.n, NULL);
    fig_connected(secs);
    settle(0.3, opt.settle_max);
    st.mode = M_MESSAGES;
    struct nats_counts na, nb;
    nats_counts(&na);
    uint64_t done0 = st.done;
    snap_take(&a);
    double mps = closed_loop(&st.done);
    snap_take(&b);
    nats_counts(&nb);
    fig_nats(&na, &nb, (double)(st.done - done0));
    fig("persisted_per_s", mps,
        opt.ack ? "messages/s acked ok (closed loop)" : "messages/s confirmed by message:sent (closed loop)");
    fig_per_core("persisted_per_core_s", mps, &a, &b);
    fig_cpu("closed", &a, &b);
    settle(0.3, 20);
    st.recv = 0;
    snap_take(&a);
    open_loop(&st.done, 10);
    int64_t end = after_s(5); /* the recipients' copies may trail the confirmations */
    while (!interrupted && st.recv < st.sent && now_ns() < end)
        lc_service();
    snap_take(&b);
    fig("confirmed", (double)st.done, "messages");
    fig("received", (double)st.recv, "messages");
    fig("lost", st.sent > st.recv ? (double)(st.sent - st.recv) : 0, "messages not received");
    fig_latency("latency", &st.lat);
    fig_latency("confirm", &st.lat2);
    fig_cpu("open", &a, &b);
}

/* Nanoseconds pid has run on a CPU (/proc/<pid>/schedstat: exact, where
 * /proc/<pid>/stat counts 10 ms ticks), or -1. */
static double run_ns(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/schedstat", (int)pid);
    FILE *f = fopen(path, "r");
    unsigned long long ns = 0;
    int ok = f && fscanf(f, "%llu", &ns) == 1;
    if (f)
        fclose(f);
    return ok ? (double)ns : -1;
}

static void sc_fanout(void)
{
    double secs = connect_all(opt.n, NULL);
    fig_connected(secs);
    double waited = settle(0.5, opt.settle_max);
    fig("settle_seconds", waited, "s until the server was quiet after the connects");
    struct lc_conn *changer = NULL;
    for (long i = 0; i < opt.n && !changer; i++)
        if (conns[i].state == LC_READY)
            changer = &conns[i];
    if (!changer)
        return;
    st.mode = M_FANOUT;
    st.fan_user = users[changer->user].id;
    size_t expect = count_ready();
    struct load_samples last, first;
    load_samples_init(&last, (size_t)opt.rounds);
    load_samples_init(&first, (size_t)opt.rounds);
    uint64_t min_got = UINT64_MAX, frames = 0;
    double main_cpu_s = 0; /* the main --pid process (the edge) during the rounds */
    for (long r = 0; r < opt.rounds && !interrupted; r++) {
        st.fan_status = r % 2 ? "online" : "away";
        st.fan_got = 0;
        st.fan_t0 = 0;
        st.lat.n = 0;
        double ra = opt.npids ? run_ns(opt.pids[0]) : -1;
        changer->emits = 1;
        lc_want_write(changer);
        int64_t end = after_s(10);
        while (!interrupted && now_ns() < end && st.fan_got < expect) {
            lc_service();
            if (st.fan_got && now_ns() - st.fan_last > 2000000000LL)
                break; /* nothing new for 2 s: some sockets will not get it */
        }
        double rb = opt.npids ? run_ns(opt.pids[0]) : -1;
        if (ra >= 0 && rb >= 0)
            main_cpu_s += (rb - ra) / 1e9;
        frames += st.fan_got;
        if (st.fan_got) {
            load_samples_add(&last, st.fan_last - st.fan_t0);
            load_samples_add(&first, st.fan_first - st.fan_t0);
        }
        if (st.fan_got < min_got)
            min_got = st.fan_got;
        settle(0.2, 5);
    }
    fig("sockets", (double)expect, "connected sockets");
    fig("received_min", min_got == UINT64_MAX ? 0 : (double)min_got,
        "sockets that got the change (worst round)");
    fig("rounds", (double)last.n, "status changes");
    fig("last_ms_median", ms(load_samples_pct(&last, 50)), "ms until the last socket had it (median round)");
    fig("last_ms_max", ms(load_samples_pct(&last, 100)), "ms (worst round)");
    fig("first_ms_median", ms(load_samples_pct(&first, 50)), "ms until the first socket had it");
    if (opt.npids && frames)
        fig("main_us_per_frame", main_cpu_s * 1e6 / (double)frames,
            "µs of the main --pid process's CPU per user:status delivered, over the rounds");
    load_samples_cleanup(&last);
    load_samples_cleanup(&first);
}

/* ---------- options ---------- */

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: chatload SCENARIO --url http://HOST:PORT --secret S [options]\n"
        "scenarios:\n"
        "  idle      open N connections, hold them; the server's RSS per connection and idle CPU\n"
        "  connect   N connections as fast as the window allows: handshakes + auth per second\n"
        "  relay     N/2 pairs exchange ghost:typing / typing:start: events/s (closed loop), then\n"
        "            latency send -> recipient's receive at --rate (open loop)\n"
        "  messages  N/2 pairs exchange message:send: persisted messages/s (closed loop), then\n"
        "            latency send -> message:received at --rate (open loop)\n"
        "  fanout    N sockets; one presence:update; time until the last socket has user:status\n"
        "options:\n"
        "  --n N               connections (default: idle/connect/fanout 1000, relay/messages 100)\n"
        "  --users U           distinct users, connection i is user i %% U (default N; relay/messages: N)\n"
        "  --rate R            open-loop frames/s (relay 20000, messages 5000)\n"
        "  --seconds T         length of each measured phase (default 5)\n"
        "  --window W          closed loop: frames in flight per connection (relay 32, messages 16)\n"
        "  --connect-window C  handshakes in flight at once (default 500)\n"
        "  --connect-timeout S give up on connects after S seconds (default 120)\n"
        "  --settle-max S      longest wait for the server to go quiet after connecting (default 60)\n"
        "  --rounds K          fanout: status changes (default 5)\n"
        "  --src-addrs K       bind connection i to 127.0.0.(1 + i %% K) (default: one address per 20000)\n"
        "  --pid [NAME=]PID,.. server processes whose RSS and CPU are read (the first is the main one)\n"
        "  --ack               messages: ask for acks and count {ok:true} acks instead of message:sent\n"
        "  --label L           a name for this side in the output (default: the URL)\n"
        "  --tsv FILE          also append 'label scenario figure value unit' lines to FILE\n"
        "  --contacts K        connect: user i's contacts are i+-1..i+-K/2 (K even, at most 30)\n"
        "  --user-seed S       user ids from S (the ones `chatload seed` wrote conversations for)\n"
        "  --interest          connect: the server is in PRESENCE_SCOPE=interest: each socket must\n"
        "                      hear of exactly its contacts online (contacts_complete, strangers_heard)\n"
        "  chatload seed --users N --contacts K --user-seed S --out FILE: their conversations, one\n"
        "                      message each way of a pair, as a COPY file for the messages table\n"
        "  --nats-monitor H:P  messages: nats-server's monitoring port (-m): NATS messages and JetStream\n"
        "                      stores per persisted message, from /varz and /jsz deltas\n"
        "The secret may come from JWT_SECRET instead of --secret.\n");
}

static int parse_url(const char *url)
{
    const char *p = url;
    if (strncmp(p, "http://", 7) == 0)
        p += 7;
    else if (strncmp(p, "ws://", 5) == 0)
        p += 5;
    else
        return -1;
    const char *colon = strchr(p, ':');
    if (!colon || (size_t)(colon - p) >= sizeof opt.host)
        return -1;
    memcpy(opt.host, p, (size_t)(colon - p));
    opt.host[colon - p] = 0;
    opt.port = atoi(colon + 1);
    return opt.port > 0 && opt.port < 65536 ? 0 : -1;
}

static int parse_pids(char *list)
{
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        if (opt.npids == MAX_PIDS)
            return -1;
        char *eq = strchr(tok, '=');
        const char *num = eq ? eq + 1 : tok;
        long pid = strtol(num, NULL, 10);
        if (pid <= 0)
            return -1;
        opt.pids[opt.npids] = (pid_t)pid;
        if (eq)
            snprintf(opt.pid_names[opt.npids], sizeof opt.pid_names[0], "%.*s", (int)(eq - tok), tok);
        else
            snprintf(opt.pid_names[opt.npids], sizeof opt.pid_names[0], "pid%ld", pid);
        opt.npids++;
    }
    return 0;
}

static int parse_args(int argc, char **argv)
{
    if (argc < 2)
        return -1;
    int found = 0;
    for (int i = 0; i < 5; i++)
        if (strcmp(argv[1], scenario_names[i]) == 0) {
            opt.sc = (enum scenario)i;
            found = 1;
        }
    if (!found)
        return -1;
    opt.n = opt.users = opt.window = -1;
    opt.user_seed = -1;
    opt.rate = -1;
    opt.seconds = 5;
    opt.connect_window = 500;
    opt.connect_timeout = 120;
    opt.settle_max = 60;
    opt.rounds = 5;
    opt.src_addrs = -1;
    opt.secret = getenv("JWT_SECRET");
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--ack") == 0) {
            opt.ack = 1;
            continue;
        }
        if (strcmp(a, "--interest") == 0) {
            opt.interest = 1;
            continue;
        }
        if (!v)
            return -1;
        i++;
        if (strcmp(a, "--url") == 0)
            opt.url = v;
        else if (strcmp(a, "--secret") == 0)
            opt.secret = v;
        else if (strcmp(a, "--n") == 0)
            opt.n = atol(v);
        else if (strcmp(a, "--users") == 0)
            opt.users = atol(v);
        else if (strcmp(a, "--rate") == 0)
            opt.rate = atof(v);
        else if (strcmp(a, "--seconds") == 0)
            opt.seconds = atof(v);
        else if (strcmp(a, "--window") == 0)
            opt.window = atol(v);
        else if (strcmp(a, "--connect-window") == 0)
            opt.connect_window = atol(v);
        else if (strcmp(a, "--connect-timeout") == 0)
            opt.connect_timeout = atof(v);
        else if (strcmp(a, "--settle-max") == 0)
            opt.settle_max = atof(v);
        else if (strcmp(a, "--rounds") == 0)
            opt.rounds = atol(v);
        else if (strcmp(a, "--src-addrs") == 0)
            opt.src_addrs = atol(v);
        else if (strcmp(a, "--pid") == 0) {
            char *copy = strdup(v);
            int r = copy ? parse_pids(copy) : -1;
            free(copy);
            if (r != 0)
                return -1;
        } else if (strcmp(a, "--label") == 0)
            opt.label = v;
        else if (strcmp(a, "--tsv") == 0)
            opt.tsv = v;
        else if (strcmp(a, "--nats-monitor") == 0)
            opt.nats_monitor = v;
        else if (strcmp(a, "--contacts") == 0)
            opt.contacts = atol(v);
        else if (strcmp(a, "--user-seed") == 0)
            opt.user_seed = atoll(v);
        else if (strcmp(a, "--out") == 0)
            opt.out = v;
        else
            return -1;
    }
    if (!opt.url || parse_url(opt.url) != 0 || !opt.secret || !*opt.secret)
        return -1;
    int pairs = opt.sc == SC_RELAY || opt.sc == SC_MESSAGES;
    if (opt.n < 0)
        opt.n = pairs ? 100 : 1000;
    if (opt.users < 0 || pairs)
        opt.users = opt.n;
    if (opt.window < 0)
        opt.window = opt.sc == SC_RELAY ? 32 : 16;
    if (opt.rate < 0)
        opt.rate = opt.sc == SC_RELAY ? 20000 : 5000;
    if (opt.src_addrs < 0)
        opt.src_addrs = opt.n > 20000 ? (opt.n + 19999) / 20000 : 0;
    if (!opt.label)
        opt.label = opt.url;
    if (opt.contacts && (opt.contacts % 2 || opt.contacts > 30 || opt.contacts >= opt.users))
        return -1;
    if (opt.n < 1 || opt.users < 1 || opt.users > opt.n || opt.window < 1 || opt.connect_window < 1 ||
        opt.rate <= 0 || opt.seconds <= 0 || opt.rounds < 1 || opt.src_addrs > 254 || (pairs && opt.n < 2))
        return -1;
    return 0;
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* chatload seed --users N --contacts K --user-seed S --out FILE: one
 * message from each user i to each of i+1..i+K/2 (mod N), as a COPY file for
 * the messages table (id, sender_id, recipient_id, type, content,
 * created_at): the conversations that `connect --contacts K --user-seed S`
 * then finds (each user's K contacts, i±1..±K/2). */
static int seed_main(int argc, char **argv)
{
    long n = 0, k = 0;
    long long seed = -1;
    const char *out = NULL;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--users") == 0)
            n = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--contacts") == 0)
            k = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--user-seed") == 0)
            seed = atoll(argv[i + 1]);
        else if (strcmp(argv[i], "--out") == 0)
            out = argv[i + 1];
        else
            return 2;
    }
    if (n < 2 || k < 2 || k % 2 || k > 30 || k >= n || seed < 0 || !out)
        return 2;
    FILE *f = fopen(out, "w");
    if (!f) {
        fprintf(stderr, "chatload: %s: %s\n", out, strerror(errno));
        return 1;
    }
    char a[LOAD_UUID_LEN + 1], b[LOAD_UUID_LEN + 1], id[LOAD_UUID_LEN + 1];
    for (long i = 0; i < n; i++) {
        load_uuid_of(a, (uint64_t)seed, (uint64_t)i);
        for (long d = 1; d <= k / 2; d++) {
            load_uuid_of(b, (uint64_t)seed, (uint64_t)((i + d) % n));
            load_uuid_of(id, (uint64_t)seed ^ 0x5eedULL, (uint64_t)(i * k + d));
            fprintf(f, "%s\t%s\t%s\ttext\tseed\t2026-01-01 00:00:00.%06ld+00\n", id, a, b,
                    (i * k + d) % 1000000);
        }
    }
    if (fclose(f) != 0)
        return 1;
    printf("chatload seed: %ld messages for %ld users with %ld contacts each in %s\n", n * (k / 2), n, k,
           out);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "seed") == 0) {
        int r = seed_main(argc, argv);
        if (r == 2)
            usage(stderr);
        return r;
    }
    if (parse_args(argc, argv) != 0) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    long nofile = load_raise_nofile(), asked = opt.n;
    if (nofile < opt.n + 100) { /* lws needs a few descriptors of its own */
        opt.n = nofile - 100;
        if (opt.users > opt.n)
            opt.users = opt.n;
        if (opt.n < 2) {
            fprintf(stderr, "chatload: RLIMIT_NOFILE is %ld: no room for connections\n", nofile);
            return 1;
        }
    }
    if (opt.tsv && !(tsv = fopen(opt.tsv, "a"))) {
        fprintf(stderr, "chatload: %s: %s\n", opt.tsv, strerror(errno));
        return 1;
    }
    load_machine(machine, sizeof machine);

    users = calloc((size_t)opt.users, sizeof *users);
    conns = calloc((size_t)opt.n, sizeof *conns);
    if (!users || !conns) {
        fprintf(stderr, "chatload: out of memory\n");
        return 1;
    }
    for (long u = 0; u < opt.users; u++) {
        char name[32];
        if (opt.user_seed >= 0)
            load_uuid_of(users[u].id, (uint64_t)opt.user_seed, (uint64_t)u);
        else
            load_uuid(users[u].id);
        snprintf(name, sizeof name, "load%ld", u);
        if (!(users[u].token = load_token(opt.secret, users[u].id, name))) {
            fprintf(stderr, "chatload: could not mint a token\n");
            return 1;
        }
    }
    for (long i = 0; i < opt.n; i++) {
        conns[i].idx = (uint32_t)i;
        conns[i].user = (uint32_t)(i % opt.users);
        conns[i].peer = (uint32_t)i;
        conns[i].token = users[conns[i].user].token;
    }
    if (opt.contacts) {
        users_index();
        known = calloc((size_t)opt.n, sizeof *known);
        if (opt.interest)
            app.on_list = on_list; /* small lists: read, to check them */
    }
    load_samples_init(&st.lat, MAX_SAMPLES);
    load_samples_init(&st.lat2, MAX_SAMPLES);
    if (lc_init(conns, (size_t)opt.n, opt.host, opt.port, (int)opt.src_addrs, &app) != 0) {
        fprintf(stderr, "chatload: lws context creation failed\n");
        return 1;
    }

    printf("== chatload %s  [%s]\n", scenario_names[opt.sc], opt.label);
    printf("  url        %s\n", opt.url);
    printf("  machine    %s\n", machine);
    printf("  params     n=%ld users=%ld seconds=%g", opt.n, opt.users, opt.seconds);
    if (opt.sc == SC_RELAY || opt.sc == SC_MESSAGES)
        printf(" pairs=%ld window=%ld rate=%g%s", opt.n / 2, opt.window, opt.rate, opt.ack ? " ack" : "");
    if (opt.sc == SC_FANOUT)
        printf(" rounds=%ld", opt.rounds);
    printf(" connect-window=%ld src-addrs=%ld", opt.connect_window, opt.src_addrs);
    for (int i = 0; i < opt.npids; i++)
        printf(" %s=%d", opt.pid_names[i], (int)opt.pids[i]);
    printf("\n");
    if (opt.n < asked)
        printf("  NOTE       n capped at %ld (asked %ld): RLIMIT_NOFILE cannot be raised past %ld here\n",
               opt.n, asked, nofile);
    printf("  figures\n");
    fflush(stdout);

    double calm = settle(0.3, opt.settle_max); /* what an earlier run left behind */
    if (calm >= opt.settle_max)
        printf("  (the server processes were still busy after %.0f s; measuring anyway)\n", calm);
    else if (calm > 1)
        printf("  (waited %.1f s for the server processes to go quiet)\n", calm);
    struct snap s0, s1;
    struct load_proc self0, self1;
    snap_take(&s0);
    double busy0 = -1, soft0 = 0, busy1 = -1, soft1 = 0;
    int cpu_ok = load_machine_cpu(&busy0, &soft0) == 0;
    load_proc_read(getpid(), &self0);
    switch (opt.sc) {
    case SC_IDLE:
        sc_idle();
        break;
    case SC_CONNECT:
        sc_connect();
        break;
    case SC_RELAY:
        sc_relay();
        break;
    case SC_MESSAGES:
        sc_messages();
        break;
    case SC_FANOUT:
        sc_fanout();
        break;
    }
    snap_take(&s1);
    cpu_ok = cpu_ok && load_machine_cpu(&busy1, &soft1) == 0;
    load_proc_read(getpid(), &self1);
    double secs = (double)(s1.t - s0.t) / 1e9, ours = self1.cpu_s - self0.cpu_s;
    for (int i = 0; i < opt.npids; i++)
        if (s0.ok[i] && s1.ok[i])
            ours += s1.p[i].cpu_s - s0.p[i].cpu_s;
    fig("client_cpu_pct", 100.0 * (self1.cpu_s - self0.cpu_s) / secs, "% of one core (chatload, whole run)");
    /* Everything else the machine did meanwhile: other programs (and the
     * processes of a server not named with --pid) compete for the cores. */
    fig("machine_other_cpu_pct", cpu_ok ? 100.0 * (busy1 - busy0 - ours) / secs : -1,
        "% of one core used by other processes during the run");
    fig("machine_softirq_pct", cpu_ok ? 100.0 * (soft1 - soft0) / secs : -1,
        "% of one core in softirq (mostly this run's loopback TCP)");
    if (st.errors)
        fig("chat_errors", (double)st.errors, "chat:error or failed acks");
    if (st.first_error[0])
        printf("  first error: %s\n", st.first_error);
    if (lc_counts.first_error[0])
        printf("  first connection problem: %s\n", lc_counts.first_error);
    printf("== end %s [%s]\n", scenario_names[opt.sc], opt.label);
    fflush(stdout);
    int status = interrupted ? 130 : count_ready() > 0 ? 0 : 1;

    lc_destroy();
    if (tsv)
        fclose(tsv);
    for (long u = 0; u < opt.users; u++)
        free(users[u].token);
    for (long i = 0; i < opt.n; i++)
        free(conns[i].rx);
    free(users);
    free(conns);
    load_samples_cleanup(&st.lat);
    load_samples_cleanup(&st.lat2);
    return status;
}
