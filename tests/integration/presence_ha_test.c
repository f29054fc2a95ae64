/* presence_ha_test: chat-presence replicas on a real 3-node nats-server
 * cluster (JetStream on every node, each its own store; started here on free
 * loopback ports) and a throwaway PostgreSQL (started by run.sh: DATABASE_URL
 * and the PG* variables). This program plays three edges, each connected to
 * another node: session opens and closes, status sets and heartbeats that
 * count their open sessions exactly, re-announcements when asked or
 * reconnected; and an observer that records every PresenceChange (epoch,
 * seq) and ResyncRequest. It kills the active replica with SIGKILL in the
 * middle of a stream of events, stops one with SIGTERM, starts a replica late
 * (state transfer), kills a NATS node and restarts it with its store, and
 * announces HA_USERS (100,000) synthetic users to time a chunked snapshot of
 * them. Figures are printed as "figure: ..." lines. Every wait is bounded.
 * Prints "presence-ha: N passed, M failed"; exits 1 on any failure.
 * usage: presence_ha_test PRESENCE_BIN WORKDIR (logs, stores and the pids of
 * every child, for run.sh to stop if this program dies, go there) */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#include "chat.pb-c.h"

#define FAILOVER_MS 3000 /* PRESENCE_FAILOVER_MS: the default */
#define RESYNC_MS 1000
#define EDGE_TIMEOUT_MS 5000
#define HEARTBEAT_MS 200
#define MAX_QUERY 500
#define CHUNK_MAX (256 * 1024)

#define NNODES 3
#define NEDGES 3
#define NREPLICAS 4
#define NSTAY 30        /* users 0..29: connected from start to end, never offline */
#define CHURN_FIRST 100 /* users 100..199: open and close all along */
#define NCHURN 100
#define BIG_FIRST 1000 /* the synthetic users */
#define MAX_USERS (BIG_FIRST + 200000)

static int passed, failed;

#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (cond) {                                                                                          \
            passed++;                                                                                        \
        } else {                                                                                             \
            failed++;                                                                                        \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                             \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fputc('\n', stderr);                                                                             \
        }                                                                                                    \
    } while (0)

static const char *presence_bin, *workdir;
static int big_n = 100000;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void uid(char *out, int n)
{
    snprintf(out, 37, "00000000-0000-4000-8000-%012d", n);
}

/* The user number of a test uuid, or -1. */
static int unum(const char *id)
{
    if (strncmp(id, "00000000-0000-4000-8000-", 24) != 0)
        return -1;
    int n = atoi(id + 24);
    return n >= 0 && n < MAX_USERS ? n : -1;
}

/* ---- processes ---- */

static void remember_pid(pid_t pid)
{
    char path[512];
    snprintf(path, sizeof path, "%s/pids", workdir);
    FILE *f = fopen(path, "a");
    if (f) {
        fprintf(f, "%d\n", (int)pid);
        fclose(f);
    }
}

/* Waits up to ms for *pid to exit; returns its wait status, -1 on timeout. */
static int child_wait(pid_t *pid, long ms)
{
    for (long t = 0; t < ms; t += 10) {
        int st;
        if (waitpid(*pid, &st, WNOHANG) == *pid) {
            *pid = -1;
            return st;
        }
        sleep_ms(10);
    }
    return -1;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* GET path on 127.0.0.1:port; returns the status code (-1: no answer) and
 * the body in out. */
static int http_get(int port, const char *path, char *out, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    out[0] = '\0';
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    size_t got = 0;
    ssize_t r;
    while (got + 1 < size && (r = read(fd, out + got, size - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = '\0';
    close(fd);
    int code = -1;
    if (sscanf(out, "HTTP/1.%*d %d", &code) != 1)
        return -1;
    char *body = strstr(out, "\r\n\r\n");
    if (body)
        memmove(out, body + 4, strlen(body + 4) + 1);
    return code;
}

/* ---- the NATS cluster ---- */

struct node {
    int port, cport, mport;
    pid_t pid;
};
static struct node nodes[NNODES];

static void node_start(int i)
{
    char port[16], mport[16], name[16], store[512], cluster[64], routes[256] = "", log[512];
    snprintf(port, sizeof port, "%d", nodes[i].port);
    snprintf(mport, sizeof mport, "%d", nodes[i].mport);
    snprintf(name, sizeof name, "n%d", i + 1);
    snprintf(store, sizeof store, "%s/nats-%d", workdir, i + 1);
    snprintf(cluster, sizeof cluster, "nats://127.0.0.1:%d", nodes[i].cport);
    for (int j = 0; j < NNODES; j++)
        if (j != i)
            snprintf(routes + strlen(routes), sizeof routes - strlen(routes), "%snats://127.0.0.1:%d",
                     *routes ? "," : "", nodes[j].cport);
    snprintf(log, sizeof log, "%s/nats-%d.log", workdir, i + 1);
    nodes[i].pid = fork();
    if (nodes[i].pid == 0) {
        FILE *f = freopen(log, "a", stderr);
        f = freopen(log, "a", stdout);
        (void)f;
        execlp("nats-server", "nats-server", "-a", "127.0.0.1", "-p", port, "-m", mport, "-n", name, "-js",
               "-sd", store, "--cluster_name", "chat-it", "--cluster", cluster, "--routes", routes,
               (char *)NULL);
        _exit(127);
    }
    remember_pid(nodes[i].pid);
}

/* Every running node answers /healthz 200 (JetStream current with its meta
 * leader and its streams). */
static int cluster_healthy(long timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    char body[4096];
    do {
        int ok = 1;
        for (int i = 0; i < NNODES; i++)
            if (nodes[i].pid > 0 && http_get(nodes[i].mport, "/healthz", body, sizeof body) != 200)
                ok = 0;
        if (ok)
            return 1;
        sleep_ms(50);
    } while (now_ms() < end);
    return 0;
}

/* The servers, from node first on, comma-separated (NATS_URL). */
static void url_list(char *out, size_t size, int first)
{
    out[0] = '\0';
    for (int k = 0; k < NNODES; k++)
        snprintf(out + strlen(out), size - strlen(out), "%snats://127.0.0.1:%d", k ? "," : "",
                 nodes[(first + k) % NNODES].port);
}

static natsConnection *connect_to(int first, natsOptions **opts, natsConnectionHandler reconnected,
                                  void *closure)
{
    char urls[256];
    url_list(urls, sizeof urls, first);
    const char *list[NNODES];
    char *copy = strdup(urls), *save = NULL;
    int n = 0;
    for (char *t = strtok_r(copy, ",", &save); t && n < NNODES; t = strtok_r(NULL, ",", &save))
        list[n++] = t;
    natsConnection *nc = NULL;
    natsOptions_Create(opts);
    natsOptions_SetServers(*opts, list, n);
    natsOptions_SetNoRandomize(*opts, true);
    natsOptions_SetMaxReconnect(*opts, -1);
    natsOptions_SetReconnectWait(*opts, 100);
    if (reconnected)
        natsOptions_SetReconnectedCB(*opts, reconnected, closure);
    if (natsConnection_Connect(&nc, *opts) != NATS_OK)
        nc = NULL;
    free(copy);
    return nc;
}

/* ---- presence replicas ---- */

struct replica {
    pid_t pid;
    int node; /* the first of its NATS_URL */
    int health;
    char log[512];
};
static struct replica reps[NREPLICAS];

static void replica_start(int k, int node)
{
    struct replica *r = &reps[k];
    r->node = node;
    r->health = free_port();
    snprintf(r->log, sizeof r->log, "%s/presence-%d.log", workdir, k + 1);
    char urls[256], hp[16];
    url_list(urls, sizeof urls, node);
    snprintf(hp, sizeof hp, "%d", r->health);
    r->pid = fork();
    if (r->pid == 0) {
        FILE *f = freopen(r->log, "a", stderr);
        (void)f;
        setenv("NATS_URL", urls, 1);
        setenv("CHAT_STREAM_REPLICAS", "3", 1);
        setenv("PRESENCE_EDGE_TIMEOUT_MS", "5000", 1);
        setenv("PRESENCE_RESYNC_MS", "1000", 1);
        setenv("PRESENCE_GRACE_MS", "0", 1); /* the model: offline as the last session closes */
        setenv("PRESENCE_LIST_IN_REPLY", "0", 1);
        setenv("HEALTH_HOST", "127.0.0.1", 1);
        setenv("HEALTH_PORT", hp, 1);
        setenv("LOG_LEVEL", "info", 1);
        execl(presence_bin, presence_bin, (char *)NULL);
        _exit(127);
    }
    remember_pid(r->pid);
}

/* The first line of r's log holding needle, from the start (copied into line),
 * within timeout_ms: 1, else 0. */
static int log_wait(const struct replica *r, const char *needle, long timeout_ms, char *line, size_t size)
{
    long long end = now_ms() + timeout_ms;
    char buf[4096];
    do {
        FILE *f = fopen(r->log, "r");
        while (f && fgets(buf, sizeof buf, f)) {
            if (strstr(buf, needle)) {
                if (line) {
                    size_t n = strlen(buf) < size - 1 ? strlen(buf) : size - 1;
                    memcpy(line, buf, n);
                    line[n] = '\0';
                }
                fclose(f);
                return 1;
            }
        }
        if (f)
            fclose(f);
        sleep_ms(20);
    } while (now_ms() < end);
    return 0;
}

/* A gauge of r's /metrics, -1 when it does not answer. */
static double metric(const struct replica *r, const char *name)
{
    static char body[65536];
    if (r->pid <= 0 || http_get(r->health, "/metrics", body, sizeof body) != 200)
        return -1;
    for (char *line = strtok(body, "\n"); line; line = strtok(NULL, "\n")) {
        size_t n = strlen(name);
        if (strncmp(line, name, n) == 0 && line[n] == ' ')
            return atof(line + n + 1);
    }
    return -1;
}

/* The index of the one active replica within timeout_ms, or -1 (none, or more
 * than one at the end). */
static int find_active(long timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    do {
        int found = -1, count = 0;
        for (int k = 0; k < NREPLICAS; k++)
            if (reps[k].pid > 0 && metric(&reps[k], "chat_presence_active") == 1) {
                found = k;
                count++;
            }
        if (count == 1)
            return found;
        sleep_ms(50);
    } while (now_ms() < end);
    return -1;
}

/* ---- the model: who each fake edge holds ---- */

struct fedge {
    int index;
    char id[24], boot[24];
    natsConnection *nc;
    natsOptions *opts;
    natsSubscription *replies, *resync, *status;
    char inbox[64];
    pthread_mutex_t mu;
    int *open; /* user numbers of its sessions */
    size_t nopen, cap;
    atomic_int resyncs_answered;
};
static struct fedge edges[NEDGES];

static int u_edge[MAX_USERS]; /* the edge holding the user's session, -1: none */
static unsigned long long u_conn[MAX_USERS];
static int u_status[MAX_USERS];         /* chosen status while connected */
static atomic_int u_replies[MAX_USERS]; /* replies to the last open request */
static long long u_reply_at[MAX_USERS];
static int u_reply_len[MAX_USERS]; /* bytes of the last reply */
static unsigned long long next_conn = 1;
static pthread_mutex_t model_mu = PTHREAD_MUTEX_INITIALIZER; /* u_* and next_conn; before an edge's mu */

static void name_of(char *out, size_t size, int user)
{
    if (user < NSTAY)
        snprintf(out, size, "stay%d", user);
    else if (user < BIG_FIRST)
        snprintf(out, size, "churn%d", user);
    else
        snprintf(out, size, "big%d", user);
}

static void publish_session(struct fedge *e, int open, int user, unsigned long long conn, int resync,
                            const char *reply)
{
    char id[37], name[32];
    uid(id, user);
    name_of(name, sizeof name, user);
    Chat__V1__SessionEvent se = CHAT__V1__SESSION_EVENT__INIT;
    se.kind = open ? CHAT__V1__SESSION_EVENT__KIND__KIND_OPEN : CHAT__V1__SESSION_EVENT__KIND__KIND_CLOSE;
    se.edge_id = e->id;
    se.boot_id = e->boot;
    se.conn_id = conn;
    se.user_id = id;
    se.username = name;
    se.resync = resync;
    uint8_t buf[256];
    size_t n = chat__v1__session_event__pack(&se, buf);
    if (reply)
        natsConnection_PublishRequest(e->nc, "chat.presence.session", reply, buf, (int)n);
    else
        natsConnection_Publish(e->nc, "chat.presence.session", buf, (int)n);
}

/* Opens a session of user on e (as a request when want_reply: replies are
 * counted per user). Caller holds model_mu. */
static void edge_open(struct fedge *e, int user, int want_reply)
{
    pthread_mutex_lock(&e->mu);
    if (e->nopen == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 256;
        e->open = realloc(e->open, e->cap * sizeof *e->open);
    }
    e->open[e->nopen++] = user;
    u_edge[user] = e->index;
    u_conn[user] = next_conn++;
    u_status[user] = CHAT__V1__STATUS__STATUS_ONLINE;
    char reply[96] = "";
    if (want_reply) {
        atomic_store(&u_replies[user], 0);
        snprintf(reply, sizeof reply, "%s.%d", e->inbox, user);
    }
    publish_session(e, 1, user, u_conn[user], 0, want_reply ? reply : NULL);
    pthread_mutex_unlock(&e->mu);
}

/* Closes user's session. Caller holds model_mu. */
static void edge_close(int user)
{
    struct fedge *e = &edges[u_edge[user]];
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < e->nopen; i++)
        if (e->open[i] == user) {
            e->open[i] = e->open[--e->nopen];
            break;
        }
    publish_session(e, 0, user, u_conn[user], 0, NULL);
    u_edge[user] = -1;
    pthread_mutex_unlock(&e->mu);
}

static void set_status(int user, int status)
{
    char id[37];
    uid(id, user);
    Chat__V1__SetStatus ss = CHAT__V1__SET_STATUS__INIT;
    ss.user_id = id;
    ss.status = status;
    uint8_t buf[128];
    size_t n = chat__v1__set_status__pack(&ss, buf);
    u_status[user] = status;
    natsConnection_Publish(edges[u_edge[user]].nc, "chat.presence.set", buf, (int)n);
}

/* As an edge does on a ResyncRequest or a reconnection: every open session
 * again, resync set. */
static void reannounce(struct fedge *e)
{
    pthread_mutex_lock(&model_mu);
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < e->nopen; i++)
        publish_session(e, 1, e->open[i], u_conn[e->open[i]], 1, NULL);
    pthread_mutex_unlock(&e->mu);
    pthread_mutex_unlock(&model_mu);
}

static void on_edge_resync(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct fedge *e = closure;
    Chat__V1__ResyncRequest *rr = chat__v1__resync_request__unpack(NULL, (size_t)natsMsg_GetDataLength(msg),
                                                                   (const uint8_t *)natsMsg_GetData(msg));
    if (rr && (!*rr->edge_id || strcmp(rr->edge_id, e->id) == 0)) {
        reannounce(e);
        atomic_fetch_add(&e->resyncs_answered, 1);
    }
    chat__v1__resync_request__free_unpacked(rr, NULL);
    natsMsg_Destroy(msg);
}

static void on_edge_reconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    reannounce(closure);
}

static void on_edge_reply(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    (void)closure;
    int user = atoi(strrchr(natsMsg_GetSubject(msg), '.') + 1);
    if (user >= 0 && user < MAX_USERS) {
        u_reply_at[user] = now_ms();
        u_reply_len[user] = natsMsg_GetDataLength(msg);
        atomic_fetch_add(&u_replies[user], 1);
    }
    natsMsg_Destroy(msg);
}

static volatile int stop_beating;

/* Heartbeats of every edge, each counting exactly the sessions it announced
 * before it on the same connection (the edge's lock covers both). */
static void *beat(void *arg)
{
    (void)arg;
    while (!stop_beating) {
        for (int i = 0; i < NEDGES; i++) {
            struct fedge *e = &edges[i];
            pthread_mutex_lock(&e->mu);
            Chat__V1__EdgeHeartbeat hb = CHAT__V1__EDGE_HEARTBEAT__INIT;
            hb.edge_id = e->id;
            hb.boot_id = e->boot;
            hb.open_sessions = (uint32_t)e->nopen;
            hb.interval_ms = HEARTBEAT_MS;
            uint8_t buf[128];
            size_t n = chat__v1__edge_heartbeat__pack(&hb, buf);
            natsConnection_Publish(e->nc, "chat.edge.heartbeat", buf, (int)n);
            pthread_mutex_unlock(&e->mu);
        }
        sleep_ms(HEARTBEAT_MS);
    }
    return NULL;
}

static int edges_start(void)
{
    for (int i = 0; i < NEDGES; i++) {
        struct fedge *e = &edges[i];
        e->index = i;
        snprintf(e->id, sizeof e->id, "edge-%d", i + 1);
        snprintf(e->boot, sizeof e->boot, "boot-%d", i + 1);
        pthread_mutex_init(&e->mu, NULL);
        e->nc = connect_to(i, &e->opts, on_edge_reconnected, e);
        if (!e->nc)
            return -1;
        natsInbox *ib = NULL;
        natsInbox_Create(&ib);
        snprintf(e->inbox, sizeof e->inbox, "%s", (const char *)ib);
        natsInbox_Destroy(ib);
        char wild[80];
        snprintf(wild, sizeof wild, "%s.*", e->inbox);
        if (natsConnection_Subscribe(&e->replies, e->nc, wild, on_edge_reply, e) != NATS_OK ||
            natsConnection_Subscribe(&e->resync, e->nc, "chat.presence.resync", on_edge_resync, e) !=
                NATS_OK ||
            natsConnection_SubscribeSync(&e->status, e->nc, "chat.presence.status") != NATS_OK)
            return -1;
        natsSubscription_SetPendingLimits(e->status, -1, -1);
        natsConnection_Flush(e->nc);
    }
    for (int u = 0; u < MAX_USERS; u++)
        u_edge[u] = -1;
    return 0;
}

/* ---- the observer: every PresenceChange and ResyncRequest ---- */

struct rec {
    int user;
    int status;
    int epoch; /* index in epochs */
    uint64_t seq;
    long long at;
};

static natsConnection *obs;
static natsOptions *obs_opts;
static natsSubscription *obs_status, *obs_resync;
static pthread_mutex_t obs_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rec *recs;
static size_t nrecs, recs_cap;
static char epochs[32][48];
static long long epoch_first_at[32];
static int nepochs;
static int nresyncs;
static long long last_resync_at;

static int epoch_index(const char *epoch)
{
    for (int i = 0; i < nepochs; i++)
        if (strcmp(epochs[i], epoch) == 0)
            return i;
    if (nepochs == 32)
        return 31;
    snprintf(epochs[nepochs], sizeof epochs[0], "%s", epoch);
    epoch_first_at[nepochs] = now_ms();
    return nepochs++;
}

static void on_obs_status(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    (void)closure;
    Chat__V1__PresenceChange *pc = chat__v1__presence_change__unpack(NULL, (size_t)natsMsg_GetDataLength(msg),
                                                                     (const uint8_t *)natsMsg_GetData(msg));
    if (pc && pc->info) {
        pthread_mutex_lock(&obs_mu);
        if (nrecs == recs_cap) {
            recs_cap = recs_cap ? recs_cap * 2 : 4096;
            recs = realloc(recs, recs_cap * sizeof *recs);
        }
        recs[nrecs++] = (struct rec){unum(pc->info->user_id), pc->info->status, epoch_index(pc->epoch),
                                     pc->seq, now_ms()};
        pthread_mutex_unlock(&obs_mu);
    }
    chat__v1__presence_change__free_unpacked(pc, NULL);
    natsMsg_Destroy(msg);
}

static void on_obs_resync(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    (void)closure;
    pthread_mutex_lock(&obs_mu);
    nresyncs++;
    last_resync_at = now_ms();
    pthread_mutex_unlock(&obs_mu);
    natsMsg_Destroy(msg);
}

static size_t recs_now(void)
{
    pthread_mutex_lock(&obs_mu);
    size_t n = nrecs;
    pthread_mutex_unlock(&obs_mu);
    return n;
}

static int resyncs_now(void)
{
    pthread_mutex_lock(&obs_mu);
    int n = nresyncs;
    pthread_mutex_unlock(&obs_mu);
    return n;
}

/* Records from index from on: any offline change of a user who stays
 * connected? Returns how many. */
static int stayers_offline(size_t from)
{
    int n = 0;
    pthread_mutex_lock(&obs_mu);
    for (size_t i = from; i < nrecs; i++)
        if (recs[i].user >= 0 && recs[i].user < NSTAY && recs[i].status == CHAT__V1__STATUS__STATUS_OFFLINE) {
            fprintf(stderr, "  stayer %d shown offline (epoch %d seq %llu)\n", recs[i].user, recs[i].epoch,
                    (unsigned long long)recs[i].seq);
            n++;
        }
    pthread_mutex_unlock(&obs_mu);
    return n;
}

/* Every epoch's changes, as heard from index from on, numbered 1, 2, 3...
 * (the observer hears every epoch from its start). Returns the gaps, repeats
 * and wrong starts found. */
static int seq_breaks(size_t from)
{
    uint64_t last[32] = {0};
    int seen[32] = {0}, breaks = 0;
    pthread_mutex_lock(&obs_mu);
    for (size_t i = 0; i < nrecs; i++) {
        int e = recs[i].epoch;
        uint64_t want = seen[e] ? last[e] + 1 : 1;
        if (i >= from && recs[i].seq != want) {
            fprintf(stderr, "  epoch %d: seq %llu, want %llu\n", e, (unsigned long long)recs[i].seq,
                    (unsigned long long)want);
            breaks++;
        }
        seen[e] = 1;
        last[e] = recs[i].seq;
    }
    pthread_mutex_unlock(&obs_mu);
    return breaks;
}

/* The first change heard of an epoch other than old's, after from: its
 * arrival time, or -1 within timeout_ms. */
static long long new_epoch_at(int old, size_t from, long timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    do {
        pthread_mutex_lock(&obs_mu);
        for (size_t i = from; i < nrecs; i++)
            if (recs[i].epoch != old) {
                long long at = recs[i].at;
                pthread_mutex_unlock(&obs_mu);
                return at;
            }
        pthread_mutex_unlock(&obs_mu);
        sleep_ms(5);
    } while (now_ms() < end);
    return -1;
}

static int last_epoch(void)
{
    pthread_mutex_lock(&obs_mu);
    int e = nrecs ? recs[nrecs - 1].epoch : -1;
    pthread_mutex_unlock(&obs_mu);
    return e;
}

/* ---- snapshots, and a copy kept from them ---- */

struct snap {
    char epoch[48];
    uint64_t seq;
    uint32_t chunks;
    size_t users, bytes, max_chunk;
    long long ms;
    signed char *status; /* per user number: 0 absent, else the status */
};

static void snap_free(struct snap *s)
{
    free(s->status);
    memset(s, 0, sizeof *s);
}

/* Asks the active for the online list; 1 when every chunk came, in order,
 * each within CHUNK_MAX, all of one epoch and seq. */
static int snapshot(struct snap *s, long timeout_ms)
{
    memset(s, 0, sizeof *s);
    s->status = calloc(MAX_USERS, 1);
    natsInbox *ib = NULL;
    natsSubscription *sub = NULL;
    natsInbox_Create(&ib);
    natsConnection_SubscribeSync(&sub, obs, (const char *)ib);
    natsSubscription_SetPendingLimits(sub, -1, -1);
    long long t0 = now_ms(), end = t0 + timeout_ms;
    natsConnection_PublishRequest(obs, "chat.presence.snapshot", (const char *)ib, "", 0);
    int ok = 0;
    uint32_t next = 0;
    while (now_ms() < end) {
        natsMsg *m = NULL;
        if (natsSubscription_NextMsg(&m, sub, end - now_ms()) != NATS_OK)
            break;
        if (natsMsg_IsNoResponders(m)) {
            natsMsg_Destroy(m);
            break;
        }
        size_t len = (size_t)natsMsg_GetDataLength(m);
        Chat__V1__PresenceSnapshot *ps =
            chat__v1__presence_snapshot__unpack(NULL, len, (const uint8_t *)natsMsg_GetData(m));
        natsMsg_Destroy(m);
        if (!ps || ps->chunk != next ||
            (next > 0 && (strcmp(ps->epoch, s->epoch) != 0 || ps->seq != s->seq))) {
            chat__v1__presence_snapshot__free_unpacked(ps, NULL);
            break;
        }
        if (next == 0) {
            snprintf(s->epoch, sizeof s->epoch, "%s", ps->epoch);
            s->seq = ps->seq;
            s->chunks = ps->chunks;
        }
        s->bytes += len;
        if (len > s->max_chunk)
            s->max_chunk = len;
        for (size_t i = 0; i < ps->n_users; i++) {
            int u = unum(ps->users[i]->user_id);
            if (u >= 0) {
                s->status[u] = (signed char)ps->users[i]->status;
                s->users++;
            }
        }
        next++;
        int last = next == ps->chunks;
        chat__v1__presence_snapshot__free_unpacked(ps, NULL);
        if (last) {
            ok = 1;
            break;
        }
    }
    s->ms = now_ms() - t0;
    natsSubscription_Destroy(sub);
    natsInbox_Destroy(ib);
    return ok;
}

/* The model's online list: users with a session and a status other than
 * offline. Returns how many users differ between it and status[]. */
static int differs_from_model(const signed char *status, int verbose)
{
    int n = 0;
    pthread_mutex_lock(&model_mu);
    for (int u = 0; u < MAX_USERS; u++) {
        int want = u_edge[u] >= 0 && u_status[u] != CHAT__V1__STATUS__STATUS_OFFLINE ? u_status[u] : 0;
        if (status[u] != want) {
            if (verbose && n < 10)
                fprintf(stderr, "  user %d: want %d, got %d\n", u, want, status[u]);
            n++;
        }
    }
    pthread_mutex_unlock(&model_mu);
    return n;
}

/* An edge's copy of the online list: a snapshot, then every change of its
 * epoch with a greater seq; a new epoch or a gap: a new snapshot. */
struct copy {
    struct snap base;
    uint64_t seq;
    size_t next; /* the next record to apply */
    int resnapshots;
};

static int copy_start(struct copy *c)
{
    memset(c, 0, sizeof *c);
    c->next = recs_now();
    if (!snapshot(&c->base, 5000))
        return 0;
    c->seq = c->base.seq;
    return 1;
}

/* Applies what was heard since; returns 0 when a new snapshot failed.
 * Changes of an older epoch are stale and skipped; epochs are numbered in
 * the order they were first heard. */
static int copy_catch_up(struct copy *c)
{
    for (;;) {
        pthread_mutex_lock(&obs_mu);
        int again = 0, mine = epoch_index(c->base.epoch);
        for (; c->next < nrecs; c->next++) {
            const struct rec *r = &recs[c->next];
            if (r->epoch < mine || (r->epoch == mine && r->seq <= c->seq) || r->user < 0)
                continue;
            if (r->epoch > mine || r->seq > c->seq + 1) {
                again = 1; /* a new epoch, or a gap */
                break;
            }
            c->base.status[r->user] =
                r->status == CHAT__V1__STATUS__STATUS_OFFLINE ? 0 : (signed char)r->status;
            c->seq = r->seq;
        }
        pthread_mutex_unlock(&obs_mu);
        if (!again)
            return 1;
        c->next = recs_now(); /* what comes later is numbered after the snapshot, or within it */
        snap_free(&c->base);
        c->resnapshots++;
        if (!snapshot(&c->base, 5000))
            return 0;
        c->seq = c->base.seq;
    }
}

/* ---- PostgreSQL, with psql ---- */

/* Users of 0..BIG_FIRST-1 whose row's online flag is not the model's: how many
 * (-1 when psql fails). */
static int rows_differ(void)
{
    FILE *p = popen("psql -XAtq -c \"SELECT substr(id::text, 25)::int, online FROM users"
                    " WHERE id::text LIKE '00000000-0000-4000-8000-%' AND substr(id::text, 25)::int < 1000\"",
                    "r");
    if (!p)
        return -1;
    static char seen[BIG_FIRST];
    memset(seen, 0, sizeof seen);
    char line[128];
    int n = 0;
    pthread_mutex_lock(&model_mu);
    while (fgets(line, sizeof line, p)) {
        int u;
        char on;
        if (sscanf(line, "%d|%c", &u, &on) != 2 || u < 0 || u >= BIG_FIRST)
            continue;
        seen[u] = 1;
        int want = u_edge[u] >= 0;
        if ((on == 't') != want)
            n++;
    }
    for (int u = 0; u < BIG_FIRST; u++)
        if (!seen[u] && u_edge[u] >= 0)
            n++; /* connected, no row */
    pthread_mutex_unlock(&model_mu);
    return pclose(p) == 0 ? n : -1;
}

/* ---- queries ---- */

/* Asks for users first..first+n-1; returns how many answers differ from the
 * model (-1: no answer). */
static int query_differs(int first, int n)
{
    char ids[MAX_QUERY][37];
    char *ptrs[MAX_QUERY];
    for (int i = 0; i < n; i++) {
        uid(ids[i], first + i);
        ptrs[i] = ids[i];
    }
    Chat__V1__PresenceQuery q = CHAT__V1__PRESENCE_QUERY__INIT;
    q.n_user_ids = (size_t)n;
    q.user_ids = ptrs;
    size_t len = chat__v1__presence_query__get_packed_size(&q);
    uint8_t *buf = malloc(len);
    chat__v1__presence_query__pack(&q, buf);
    natsMsg *reply = NULL;
    natsStatus s = natsConnection_Request(&reply, obs, "chat.presence.query", buf, (int)len, 3000);
    free(buf);
    if (s != NATS_OK)
        return -1;
    Chat__V1__PresenceList *l = chat__v1__presence_list__unpack(NULL, (size_t)natsMsg_GetDataLength(reply),
                                                                (const uint8_t *)natsMsg_GetData(reply));
    natsMsg_Destroy(reply);
    int bad = 0;
    pthread_mutex_lock(&model_mu);
    for (size_t i = 0; l && i < l->n_users; i++) {
        int u = unum(l->users[i]->user_id);
        if (u < 0)
            continue;
        int want = u_edge[u] >= 0 ? u_status[u] : CHAT__V1__STATUS__STATUS_OFFLINE;
        if ((int)l->users[i]->status != want && bad++ < 5)
            fprintf(stderr, "  query: user %d is %d, want %d\n", u, (int)l->users[i]->status, want);
    }
    pthread_mutex_unlock(&model_mu);
    chat__v1__presence_list__free_unpacked(l, NULL);
    return l ? bad : -1;
}

/* ---- the stream: churners come and go, stayers set away and online ---- */

static volatile int stream_on;
static pthread_t stream_thread;
static atomic_long stream_steps;

static void *stream(void *arg)
{
    (void)arg;
    unsigned seed = 7;
    while (stream_on) {
        int user = CHURN_FIRST + (int)(rand_r(&seed) % NCHURN);
        pthread_mutex_lock(&model_mu);
        if (u_edge[user] < 0)
            edge_open(&edges[user % NEDGES], user, 1);
        else
            edge_close(user);
        long step = atomic_fetch_add(&stream_steps, 1);
        if (step % 25 == 0) {
            int stayer = (int)(step / 25) % NSTAY;
            set_status(stayer, u_status[stayer] == CHAT__V1__STATUS__STATUS_ONLINE
                                   ? CHAT__V1__STATUS__STATUS_AWAY
                                   : CHAT__V1__STATUS__STATUS_ONLINE);
        }
        pthread_mutex_unlock(&model_mu);
        sleep_ms(5);
    }
    return NULL;
}

static void stream_start(void)
{
    stream_on = 1;
    pthread_create(&stream_thread, NULL, stream, NULL);
}

static void stream_stop(void)
{
    stream_on = 0;
    pthread_join(stream_thread, NULL);
    for (int i = 0; i < NEDGES; i++)
        natsConnection_FlushTimeout(edges[i].nc, 2000);
}

/* The first reply to an open request sent after t, by arrival: its time, or -1. */
static long long first_reply_after(long long t, long timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    do {
        long long best = -1;
        for (int u = CHURN_FIRST; u < CHURN_FIRST + NCHURN; u++)
            if (u_reply_at[u] > t && (best < 0 || u_reply_at[u] < best))
                best = u_reply_at[u];
        if (best > 0)
            return best;
        sleep_ms(5);
    } while (now_ms() < end);
    return -1;
}

/* Waits until the active's online list is the model's (things settle after a
 * fault); returns 1, or 0 with the differences printed. */
static int settles(long timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    struct snap s;
    int diff = -1;
    do {
        if (snapshot(&s, 3000)) {
            diff = differs_from_model(s.status, 0);
            if (diff == 0) {
                snap_free(&s);
                return 1;
            }
        }
        snap_free(&s);
        sleep_ms(200);
    } while (now_ms() < end);
    if (snapshot(&s, 3000))
        differs_from_model(s.status, 1);
    snap_free(&s);
    fprintf(stderr, "  %d users differ from the model\n", diff);
    return 0;
}

/* ---- scenarios ---- */

static void test_start(void)
{
    replica_start(0, 0);
    char line[512];
    CHECK(log_wait(&reps[0], "resync requested", 20000, NULL, 0), "first replica: no ResyncRequest");
    CHECK(find_active(5000) == 0, "first replica: not active");
    replica_start(1, 1);
    CHECK(log_wait(&reps[1], "standby synced", 20000, line, sizeof line),
          "second replica: no state transfer");
    CHECK(find_active(1000) == 0, "second replica: the first is no longer the only active one");
    char body[256];
    CHECK(http_get(reps[0].health, "/healthz", body, sizeof body) == 200 &&
              http_get(reps[1].health, "/healthz", body, sizeof body) == 200,
          "healthz: want 200 from the active and the standby");
    CHECK(resyncs_now() == 1, "start: %d ResyncRequests, want the first replica's only", resyncs_now());
}

/* Opens the stayers as requests: one reply each (the standby is silent),
 * empty (PRESENCE_LIST_IN_REPLY=0), after the change it caused. */
static void test_sessions(void)
{
    size_t from = recs_now();
    int ordered = 1;
    for (int u = 0; u < NSTAY; u++) {
        pthread_mutex_lock(&model_mu);
        edge_open(&edges[u % NEDGES], u, 1);
        pthread_mutex_unlock(&model_mu);
        long long end = now_ms() + 3000;
        while (atomic_load(&u_replies[u]) == 0 && now_ms() < end)
            sleep_ms(1);
        if (u % NEDGES == 0) {
            /* the edge that asked has the user's change before the reply */
            natsMsg *m = NULL;
            int found = 0;
            char want[37];
            uid(want, u);
            while (!found && natsSubscription_NextMsg(&m, edges[0].status, 0) == NATS_OK) {
                Chat__V1__PresenceChange *pc = chat__v1__presence_change__unpack(
                    NULL, (size_t)natsMsg_GetDataLength(m), (const uint8_t *)natsMsg_GetData(m));
                found = pc && pc->info && strcmp(pc->info->user_id, want) == 0;
                chat__v1__presence_change__free_unpacked(pc, NULL);
                natsMsg_Destroy(m);
            }
            ordered &= found;
        }
    }
    sleep_ms(300); /* a second reply, if any, would come now */
    int once = 1, empty = 1;
    for (int u = 0; u < NSTAY; u++) {
        once &= atomic_load(&u_replies[u]) == 1;
        empty &= u_reply_len[u] == 0;
    }
    CHECK(once, "session opens: want exactly one reply each (the active's)");
    CHECK(empty, "PRESENCE_LIST_IN_REPLY=0: want empty replies");
    CHECK(ordered, "a reply came before the change its open caused");
    pthread_mutex_lock(&model_mu);
    for (int u = 0; u < NSTAY; u += 3)
        set_status(u, CHAT__V1__STATUS__STATUS_AWAY);
    pthread_mutex_unlock(&model_mu);
    long long end = now_ms() + 3000;
    while (recs_now() - from < NSTAY + NSTAY / 3 && now_ms() < end)
        sleep_ms(5);
    CHECK(recs_now() - from == NSTAY + NSTAY / 3, "want %d changes, got %zu", NSTAY + NSTAY / 3,
          recs_now() - from);
    CHECK(seq_breaks(0) == 0, "changes not numbered one by one");
    struct snap s;
    CHECK(snapshot(&s, 3000), "no snapshot");
    CHECK(differs_from_model(s.status, 1) == 0, "snapshot: not the model's online list");
    pthread_mutex_lock(&obs_mu);
    int same = nrecs && strcmp(s.epoch, epochs[recs[nrecs - 1].epoch]) == 0 && s.seq == recs[nrecs - 1].seq;
    pthread_mutex_unlock(&obs_mu);
    CHECK(same, "snapshot: epoch %s seq %llu, not the last change's", s.epoch, (unsigned long long)s.seq);
    snap_free(&s);
    /* the reply is the same whoever asks: any replica answers queries */
    CHECK(query_differs(0, NSTAY) == 0, "query: stayers not as the model says");
}

/* A replica started while one is active takes its state: no resync window. */
static void test_late_replica(void)
{
    int resyncs = resyncs_now(), e = last_epoch();
    replica_start(2, 2);
    char line[512] = "";
    CHECK(log_wait(&reps[2], "standby synced", 20000, line, sizeof line), "late replica: no state transfer");
    CHECK(strstr(line, "users=30 sessions=30 edges=3") != NULL, "late replica: %s", line);
    sleep_ms(RESYNC_MS);
    CHECK(resyncs_now() == resyncs, "late replica: a ResyncRequest went out");
    CHECK(last_epoch() == e && find_active(1000) == 0, "late replica: the active changed");
}

/* The active dies in the middle of a stream of events. */
static void test_kill_active(void)
{
    stream_start();
    sleep_ms(1000);
    struct copy c;
    CHECK(copy_start(&c), "kill: no snapshot before");
    int active = find_active(2000), e = last_epoch(), resyncs = resyncs_now();
    size_t from = recs_now();
    long long t_kill = now_ms();
    kill(reps[active].pid, SIGKILL);
    child_wait(&reps[active].pid, 5000);
    long long t_change = new_epoch_at(e, from, FAILOVER_MS + 3000);
    long long t_reply = first_reply_after(t_kill + 100, FAILOVER_MS + 3000);
    sleep_ms(1500);
    stream_stop();
    int next = find_active(3000);
    CHECK(next >= 0 && next != active, "kill: no other replica active");
    long long took = t_change < 0 ? -1 : t_change - t_kill;
    printf(
        "figure: takeover after kill -9 of the active: first change of the new epoch %lld ms, first session "
        "reply %lld ms after the kill (PRESENCE_FAILOVER_MS %d)\n",
        took, t_reply < 0 ? -1 : t_reply - t_kill, FAILOVER_MS);
    CHECK(took > 0 && took <= FAILOVER_MS, "kill: the new active published %lld ms after the kill", took);
    CHECK(t_reply > 0 && t_reply - t_kill <= FAILOVER_MS, "kill: session replies back %lld ms after the kill",
          t_reply - t_kill);
    CHECK(stayers_offline(0) == 0, "kill: a connected user was shown offline");
    CHECK(seq_breaks(from) == 0, "kill: changes of an epoch not numbered 1, 2, 3...");
    CHECK(resyncs_now() == resyncs, "kill: %d ResyncRequests after the kill, want none",
          resyncs_now() - resyncs);
    CHECK(settles(5000), "kill: the new active's list is not the model's");
    CHECK(copy_catch_up(&c) && c.resnapshots >= 1 && differs_from_model(c.base.status, 1) == 0,
          "kill: a copy kept from snapshot and changes is not the model's (re-snapshots %d)", c.resnapshots);
    snap_free(&c.base);
    CHECK(query_differs(0, NSTAY) == 0 && query_differs(CHURN_FIRST, NCHURN) == 0,
          "kill: queries not as the model says");
    int rows = -1;
    for (int i = 0; i < 100 && rows != 0; i++) {
        rows = rows_differ();
        if (rows)
            sleep_ms(100);
    }
    CHECK(rows == 0, "kill: %d users rows not as memory", rows);
    replica_start(active, reps[active].node);
    CHECK(log_wait(&reps[active], "standby synced", 20000, NULL, 0),
          "the killed replica, restarted, did not sync");
}

/* SIGTERM: the active hands the lease over at once. */
static void test_graceful(void)
{
    stream_start();
    sleep_ms(500);
    int active = find_active(2000), e = last_epoch();
    size_t from = recs_now();
    long long t0 = now_ms();
    kill(reps[active].pid, SIGTERM);
    long long t_change = new_epoch_at(e, from, FAILOVER_MS + 2000);
    int st = child_wait(&reps[active].pid, 10000);
    sleep_ms(500);
    stream_stop();
    printf("figure: handover after SIGTERM of the active: first change of the new epoch %lld ms after the "
           "signal\n",
           t_change < 0 ? -1 : t_change - t0);
    CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: the active did not exit 0");
    CHECK(t_change > 0 && t_change - t0 < FAILOVER_MS / 2, "SIGTERM: handover took %lld ms", t_change - t0);
    CHECK(stayers_offline(0) == 0, "graceful: a connected user was shown offline");
    CHECK(settles(5000), "graceful: the new active's list is not the model's");
    replica_start(active, reps[active].node);
    CHECK(log_wait(&reps[active], "standby synced", 20000, NULL, 0),
          "the stopped replica, restarted, did not sync");
}

/* The node (0-2) whose nats-server leads the stream of the lease's bucket,
 * from the nodes' /jsz; -1 when none says. */
static int lease_leader_node(void)
{
    static char body[262144];
    for (int i = 0; i < NNODES; i++) {
        if (nodes[i].pid <= 0 || http_get(nodes[i].mport, "/jsz?streams=1", body, sizeof body) != 200)
            continue;
        char *st = strstr(body, "\"name\": \"KV_CHAT_PRESENCE_LEASE\"");
        char *leader = st ? strstr(st, "\"leader\": \"n") : NULL;
        if (leader)
            return leader[strlen("\"leader\": \"n")] - '1';
    }
    return -1;
}

/* A NATS node dies in the middle of a stream and comes back with its store:
 * the one that leads the lease's stream, the worst for presence (nobody can
 * renew or take the lease until another node leads it: nats-server 2.9 waits
 * 4-9 s), and the active's too when they are the same. Edges and replicas on
 * it fail over to the other nodes. Probes (a new session every 100 ms on an
 * edge of another node) measure the longest time without a reply. */
static void test_node_kill(void)
{
    int active = find_active(2000);
    int node = lease_leader_node();
    CHECK(node >= 0, "node kill: no node leads the lease's stream");
    if (node < 0)
        node = reps[active].node;
    stream_start();
    sleep_ms(500);
    long long t0 = now_ms(), last_answer = t0, gap = 0, first_after = -1;
    kill(nodes[node].pid, SIGKILL);
    child_wait(&nodes[node].pid, 5000);
    for (int probe = 850; probe < 1000 && now_ms() < t0 + 12000; probe++) {
        pthread_mutex_lock(&model_mu);
        edge_open(&edges[(node + 1) % NEDGES], probe, 1);
        pthread_mutex_unlock(&model_mu);
        long long end = now_ms() + 100;
        while (atomic_load(&u_replies[probe]) == 0 && now_ms() < end)
            sleep_ms(2);
        while (now_ms() < end) /* one probe every 100 ms */
            sleep_ms(2);
        if (atomic_load(&u_replies[probe])) {
            if (u_reply_at[probe] - last_answer > gap)
                gap = u_reply_at[probe] - last_answer;
            last_answer = u_reply_at[probe];
            if (first_after < 0)
                first_after = last_answer - t0;
        }
    }
    int again = find_active(5000);
    stream_stop();
    printf("figure: NATS node %d killed in a stream (it led the lease's stream; the active was %s): first "
           "session "
           "reply %lld ms after the kill, the longest time without one %lld ms, %s active at the end\n",
           node + 1, reps[active].node == node ? "on it" : "elsewhere", first_after, gap,
           again == active ? "the same replica" : "another replica");
    CHECK(now_ms() - last_answer < 1000, "node kill: session opens no longer answered");
    CHECK(gap <= 10000 + FAILOVER_MS, "node kill: %lld ms without a session reply", gap);
    CHECK(again >= 0, "node kill: no single active replica");
    node_start(node);
    CHECK(cluster_healthy(30000), "node restarted: the cluster is not healthy");
    CHECK(settles(8000), "node kill: the list is not the model's");
    CHECK(stayers_offline(0) == 0, "node kill: a connected user was shown offline");
    CHECK(find_active(3000) >= 0, "node kill: no single active replica");
    CHECK(query_differs(0, NSTAY) == 0 && query_differs(CHURN_FIRST, NCHURN) == 0,
          "node kill: queries not as the model says");
}

static int active_users_reach(size_t want, long timeout_ms, struct snap *s)
{
    long long end = now_ms() + timeout_ms;
    do {
        if (snapshot(s, 10000) && s->users >= want)
            return 1;
        snap_free(s);
        sleep_ms(500);
    } while (now_ms() < end);
    return 0;
}

/* big_n synthetic users announced as session opens over NATS: the online
 * list in chunks, applied with later changes; then a replica takes all of it
 * over, and a takeover with that many users. */
static void test_big(void)
{
    size_t before = 0;
    pthread_mutex_lock(&model_mu);
    for (int u = 0; u < BIG_FIRST; u++)
        before += u_edge[u] >= 0 && u_status[u] != CHAT__V1__STATUS__STATUS_OFFLINE;
    long long t0 = now_ms();
    for (int i = 0; i < big_n; i++)
        edge_open(&edges[i % NEDGES], BIG_FIRST + i, 0);
    pthread_mutex_unlock(&model_mu);
    struct snap s;
    int all = active_users_reach(before + (size_t)big_n, 120000, &s);
    CHECK(all, "big: the active does not list %d users", big_n);
    printf("figure: %d session opens announced and listed by the active in %lld ms\n", big_n, now_ms() - t0);
    snap_free(&s);
    /* the snapshot itself, timed alone */
    struct copy c;
    CHECK(copy_start(&c), "big: no snapshot");
    CHECK(c.base.users == before + (size_t)big_n && c.base.max_chunk <= CHUNK_MAX,
          "big: %zu users in chunks up to %zu bytes", c.base.users, c.base.max_chunk);
    printf(
        "figure: snapshot of %zu online users: %u chunks, %zu bytes (largest %zu), %lld ms from request to "
        "last chunk\n",
        c.base.users, c.base.chunks, c.base.bytes, c.base.max_chunk, c.base.ms);
    /* later changes, applied to the copy by seq */
    pthread_mutex_lock(&model_mu);
    for (int i = 0; i < 300; i++)
        edge_close(BIG_FIRST + i * 7);
    for (int i = 0; i < 100; i++)
        edge_open(&edges[i % NEDGES], BIG_FIRST + i * 7, 0);
    pthread_mutex_unlock(&model_mu);
    CHECK(settles(10000), "big: the list after the changes is not the model's");
    CHECK(copy_catch_up(&c) && c.resnapshots == 0 && differs_from_model(c.base.status, 1) == 0,
          "big: snapshot + later changes is not the model's list (re-snapshots %d)", c.resnapshots);
    snap_free(&c.base);
    /* a replica started in the middle of a stream takes all of it, then applies what it buffered
     * meanwhile (the overlap applied twice)... */
    stream_start();
    sleep_ms(300);
    replica_start(3, 0);
    char line[512] = "";
    CHECK(log_wait(&reps[3], "standby synced", 60000, line, sizeof line),
          "big: the late replica did not sync");
    char *in = strstr(line, "users=");
    if (in)
        in[strcspn(in, "\n")] = '\0';
    printf("figure: state transfer to a replica started late, in a stream of events: %s\n",
           in ? in : "(none)");
    sleep_ms(1000);
    /* ...and is the one to take over when every other replica dies: its roster is then the list */
    int e = last_epoch(), resyncs = resyncs_now();
    size_t from = recs_now();
    long long t_kill = now_ms();
    for (int k = 0; k < 3; k++)
        if (reps[k].pid > 0) {
            kill(reps[k].pid, SIGKILL);
            child_wait(&reps[k].pid, 5000);
        }
    long long t_change = new_epoch_at(e, from, FAILOVER_MS + 5000);
    sleep_ms(1000);
    stream_stop();
    printf("figure: takeover after kill -9 of every other replica, %d users online, by the one started late: "
           "first change of the new epoch %lld ms after the kill\n",
           big_n, t_change < 0 ? -1 : t_change - t_kill);
    CHECK(find_active(3000) == 3, "big: the late replica is not the active one");
    CHECK(t_change > 0 && t_change - t_kill <= FAILOVER_MS + 500, "big: takeover took %lld ms",
          t_change - t_kill);
    CHECK(resyncs_now() == resyncs, "big: ResyncRequests after the kill");
    CHECK(stayers_offline(0) == 0, "big: a connected user was shown offline");
    CHECK(settles(15000), "big: after the takeover the list is not the model's");
    CHECK(query_differs(0, NSTAY) == 0 && query_differs(CHURN_FIRST, NCHURN) == 0,
          "big: queries not as the model says");
}

static void test_shutdown(void)
{
    for (int k = 0; k < NREPLICAS; k++) {
        if (reps[k].pid <= 0)
            continue;
        kill(reps[k].pid, SIGTERM);
        int st = child_wait(&reps[k].pid, 15000);
        CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "replica %d: SIGTERM, want exit 0", k + 1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s PRESENCE_BIN WORKDIR\n", argv[0]);
        return 2;
    }
    presence_bin = argv[1];
    workdir = argv[2];
    if (getenv("HA_USERS"))
        big_n = atoi(getenv("HA_USERS"));
    if (big_n < 1 || big_n > MAX_USERS - BIG_FIRST)
        big_n = 100000;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < NNODES; i++) {
        nodes[i].port = free_port();
        nodes[i].cport = free_port();
        nodes[i].mport = free_port();
    }
    for (int i = 0; i < NNODES; i++)
        node_start(i);
    if (!cluster_healthy(30000) || edges_start() != 0 || !(obs = connect_to(2, &obs_opts, NULL, NULL)) ||
        natsConnection_Subscribe(&obs_status, obs, "chat.presence.status", on_obs_status, NULL) != NATS_OK ||
        natsConnection_Subscribe(&obs_resync, obs, "chat.presence.resync", on_obs_resync, NULL) != NATS_OK) {
        fprintf(stderr, "cannot start or reach the nats-server cluster\n");
        for (int i = 0; i < NNODES; i++)
            if (nodes[i].pid > 0)
                kill(nodes[i].pid, SIGKILL);
        return 2;
    }
    natsSubscription_SetPendingLimits(obs_status, -1, -1);
    natsConnection_Flush(obs);
    pthread_t beater;
    pthread_create(&beater, NULL, beat, NULL);

    test_start();
    if (!failed) {
        test_sessions();
        test_late_replica();
        test_kill_active();
        test_graceful();
        test_node_kill();
        test_big();
    }
    test_shutdown();

    stop_beating = 1;
    pthread_join(beater, NULL);
    for (int k = 0; k < NREPLICAS; k++)
        if (reps[k].pid > 0) {
            kill(reps[k].pid, SIGKILL);
            child_wait(&reps[k].pid, 5000);
        }
    natsSubscription_Destroy(obs_status);
    natsSubscription_Destroy(obs_resync);
    natsConnection_Destroy(obs);
    natsOptions_Destroy(obs_opts);
    for (int i = 0; i < NEDGES; i++) {
        natsSubscription_Destroy(edges[i].replies);
        natsSubscription_Destroy(edges[i].resync);
        natsSubscription_Destroy(edges[i].status);
        natsConnection_Destroy(edges[i].nc);
        natsOptions_Destroy(edges[i].opts);
        free(edges[i].open);
    }
    nats_CloseAndWait(2000);
    for (int i = 0; i < NNODES; i++)
        if (nodes[i].pid > 0) {
            kill(nodes[i].pid, SIGTERM);
            if (child_wait(&nodes[i].pid, 10000) == -1) {
                kill(nodes[i].pid, SIGKILL);
                child_wait(&nodes[i].pid, 5000);
            }
        }
    free(recs);
    printf("presence-ha: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
