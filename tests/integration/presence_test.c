/* presence_test: the real chat-presence binary against a real nats-server
 * (started here on a free port, so that it can be restarted) and a throwaway
 * PostgreSQL (started by run.sh: DATABASE_URL, the PG* variables and PG_DIR).
 * This program plays the edges: it sends SessionEvents, heartbeats, SetStatus
 * and queries as nats.c + protobuf-c messages, listens to chat.presence.status
 * and chat.presence.resync, reads rows back with psql, kills and restarts the
 * service, and takes NATS and PostgreSQL away. The service runs with
 * PRESENCE_GRACE_MS=0 (offline as the last session closes) but for the last
 * scenarios: two replicas with a grace period, one killed while a user is in
 * it, or given it by a state transfer. Every wait is bounded. Prints
 * "presence: N passed, M failed"; exits 1 on any failure.
 * usage: presence_test PRESENCE_BIN WORKDIR (logs and nats.pid go there) */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#include "chat.pb-c.h"

#define EDGE_TIMEOUT_MS 1500
#define RESYNC_MS 1000
#define MAX_QUERY 5
#define GRACE_MS 4000 /* PRESENCE_GRACE_MS of the grace scenarios */

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

static natsConnection *nc;
static natsSubscription *status_sub, *resync_sub;
static const char *presence_bin, *workdir;
static pid_t presence_pid = -1, nats_pid = -1;
static int nats_port;
static char nats_url[64];

static long long now_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
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

/* ---- the service process ---- */

/* Starts chat-presence, its log appended to WORKDIR/log; grace: its
 * PRESENCE_GRACE_MS, failover: its PRESENCE_FAILOVER_MS (NULL: the default). */
static pid_t presence_spawn(const char *log, const char *grace, const char *failover)
{
    pid_t pid = fork();
    if (pid == 0) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", workdir, log);
        FILE *f = freopen(path, "a", stderr);
        (void)f;
        setenv("NATS_URL", nats_url, 1);
        setenv("PRESENCE_EDGE_TIMEOUT_MS", "1500", 1);
        setenv("PRESENCE_RESYNC_MS", "1000", 1);
        setenv("PRESENCE_MAX_QUERY", "5", 1);
        setenv("PRESENCE_GRACE_MS", grace, 1);
        if (failover)
            setenv("PRESENCE_FAILOVER_MS", failover, 1);
        setenv("PRESENCE_LIST_IN_REPLY", "1", 1); /* the lists in the replies are checked here */
        setenv("LOG_LEVEL", "debug", 1);
        execl(presence_bin, presence_bin, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void presence_start(void)
{
    presence_pid = presence_spawn("presence.log", "0", NULL);
}

/* The size of WORKDIR/log (0 when missing): where a new life's lines start. */
static long log_size(const char *log)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", workdir, log);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

/* Waits up to timeout_ms for a line of WORKDIR/log after offset from that
 * holds needle: 1, else 0. */
static int log_wait(const char *log, long from, const char *needle, long timeout_ms)
{
    char path[512], line[4096];
    snprintf(path, sizeof path, "%s/%s", workdir, log);
    long long end = now_ms(CLOCK_MONOTONIC) + timeout_ms;
    do {
        FILE *f = fopen(path, "r");
        int found = 0;
        if (f && fseek(f, from, SEEK_SET) == 0)
            while (!found && fgets(line, sizeof line, f))
                found = strstr(line, needle) != NULL;
        if (f)
            fclose(f);
        if (found)
            return 1;
        sleep_ms(20);
    } while (now_ms(CLOCK_MONOTONIC) < end);
    return 0;
}

/* Waits up to ms for *pid to exit; returns its wait status, -1 on timeout. */
static int child_wait(pid_t *pid, long ms)
{
    for (long t = 0; t < ms; t += 20) {
        int st;
        if (waitpid(*pid, &st, WNOHANG) == *pid) {
            *pid = -1;
            return st;
        }
        sleep_ms(20);
    }
    return -1;
}

static int presence_wait(long ms)
{
    return child_wait(&presence_pid, ms);
}

/* ---- nats-server ---- */

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

static int port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* Starts nats-server (JetStream: presence's lease) on nats_port; its pid goes to WORKDIR/nats.pid so that
 * run.sh can stop it if this program dies. Returns 0 once it accepts. */
static int nats_start(void)
{
    char port[16], path[512], store[512];
    snprintf(port, sizeof port, "%d", nats_port);
    snprintf(store, sizeof store, "%s/js", workdir); /* the lease's bucket survives a restart */
    nats_pid = fork();
    if (nats_pid == 0) {
        snprintf(path, sizeof path, "%s/nats.log", workdir);
        FILE *f = freopen(path, "a", stderr);
        f = freopen(path, "a", stdout);
        (void)f;
        execlp("nats-server", "nats-server", "-a", "127.0.0.1", "-p", port, "-js", "-sd", store,
               (char *)NULL);
        _exit(127);
    }
    snprintf(path, sizeof path, "%s/nats.pid", workdir);
    FILE *pf = fopen(path, "w");
    if (pf) {
        fprintf(pf, "%d\n", (int)nats_pid);
        fclose(pf);
    }
    for (int i = 0; i < 250; i++) {
        if (port_open(nats_port))
            return 0;
        sleep_ms(20);
    }
    return -1;
}

static void nats_stop(void)
{
    if (nats_pid > 0) {
        kill(nats_pid, SIGTERM);
        if (child_wait(&nats_pid, 5000) == -1) {
            kill(nats_pid, SIGKILL);
            child_wait(&nats_pid, 5000);
        }
    }
}

/* ---- fake edges: heartbeats from a thread while alive ---- */

struct edge {
    const char *id;
    char boot[32];
    int beating;
    unsigned open_sessions; /* what its heartbeats say: counted by the grace scenarios only (0 before) */
};

static struct edge edges[] = {
    {"edge-1", "boot-1a", 1, 0}, {"edge-2", "boot-2a", 1, 0}, {"edge-3", "boot-3a", 1, 0}};
static pthread_mutex_t edges_mu = PTHREAD_MUTEX_INITIALIZER;
static volatile int stop_beating;

static void send_heartbeat(const char *id, const char *boot, unsigned open_sessions)
{
    Chat__V1__EdgeHeartbeat hb = CHAT__V1__EDGE_HEARTBEAT__INIT;
    hb.edge_id = (char *)id;
    hb.boot_id = (char *)boot;
    hb.open_sessions = open_sessions;
    hb.interval_ms = 300;
    uint8_t buf[256];
    size_t n = chat__v1__edge_heartbeat__pack(&hb, buf);
    natsConnection_Publish(nc, "chat.edge.heartbeat", buf, (int)n);
}

static void *beat(void *arg)
{
    (void)arg;
    while (!stop_beating) {
        pthread_mutex_lock(&edges_mu);
        for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
            if (edges[i].beating)
                send_heartbeat(edges[i].id, edges[i].boot, edges[i].open_sessions);
        pthread_mutex_unlock(&edges_mu);
        sleep_ms(300);
    }
    return NULL;
}

/* ---- requests ---- */

/* Sends a SessionEvent; with want_reply, as a request whose PresenceList is
 * returned (NULL on timeout; free with chat__v1__presence_list__free_unpacked). */
static Chat__V1__PresenceList *session(int open, struct edge *e, unsigned long long conn, const char *user,
                                       const char *name, int resync, int want_reply)
{
    Chat__V1__SessionEvent se = CHAT__V1__SESSION_EVENT__INIT;
    se.kind = open ? CHAT__V1__SESSION_EVENT__KIND__KIND_OPEN : CHAT__V1__SESSION_EVENT__KIND__KIND_CLOSE;
    se.edge_id = (char *)e->id;
    pthread_mutex_lock(&edges_mu);
    char boot[32];
    snprintf(boot, sizeof boot, "%s", e->boot);
    pthread_mutex_unlock(&edges_mu);
    se.boot_id = boot;
    se.conn_id = conn;
    se.user_id = (char *)user;
    se.username = (char *)name;
    se.resync = resync;
    uint8_t buf[512];
    size_t n = chat__v1__session_event__pack(&se, buf);
    if (!want_reply) {
        natsConnection_Publish(nc, "chat.presence.session", buf, (int)n);
        natsConnection_Flush(nc);
        return NULL;
    }
    natsMsg *reply = NULL;
    if (natsConnection_Request(&reply, nc, "chat.presence.session", buf, (int)n, 3000) != NATS_OK)
        return NULL;
    Chat__V1__PresenceList *l = chat__v1__presence_list__unpack(NULL, (size_t)natsMsg_GetDataLength(reply),
                                                                (const uint8_t *)natsMsg_GetData(reply));
    natsMsg_Destroy(reply);
    return l;
}

static void set_status(const char *user, Chat__V1__Status st)
{
    Chat__V1__SetStatus ss = CHAT__V1__SET_STATUS__INIT;
    ss.user_id = (char *)user;
    ss.status = st;
    uint8_t buf[256];
    size_t n = chat__v1__set_status__pack(&ss, buf);
    natsConnection_Publish(nc, "chat.presence.set", buf, (int)n);
    natsConnection_Flush(nc);
}

static Chat__V1__PresenceList *query(const char **ids, size_t n)
{
    Chat__V1__PresenceQuery q = CHAT__V1__PRESENCE_QUERY__INIT;
    q.n_user_ids = n;
    q.user_ids = (char **)ids;
    uint8_t buf[4096];
    size_t len = chat__v1__presence_query__pack(&q, buf);
    natsMsg *reply = NULL;
    if (natsConnection_Request(&reply, nc, "chat.presence.query", buf, (int)len, 3000) != NATS_OK)
        return NULL;
    Chat__V1__PresenceList *l = chat__v1__presence_list__unpack(NULL, (size_t)natsMsg_GetDataLength(reply),
                                                                (const uint8_t *)natsMsg_GetData(reply));
    natsMsg_Destroy(reply);
    return l;
}

/* The entry of user in l, or NULL. */
static const Chat__V1__PresenceInfo *find(const Chat__V1__PresenceList *l, const char *user)
{
    for (size_t i = 0; l && i < l->n_users; i++)
        if (strcmp(l->users[i]->user_id, user) == 0)
            return l->users[i];
    return NULL;
}

/* ---- chat.presence.status, with a backlog so that waiting for one user does
 * not lose another's change ---- */

struct change {
    char user[64], name[64];
    int status;
    long long last_seen;
    long long at; /* monotonic ms when received */
};

static struct change backlog[512];
static size_t nbacklog;

static void pull(long timeout_ms)
{
    natsMsg *m = NULL;
    if (natsSubscription_NextMsg(&m, status_sub, timeout_ms) != NATS_OK)
        return;
    Chat__V1__PresenceChange *pc = chat__v1__presence_change__unpack(NULL, (size_t)natsMsg_GetDataLength(m),
                                                                     (const uint8_t *)natsMsg_GetData(m));
    if (pc && pc->info && nbacklog < sizeof backlog / sizeof backlog[0]) {
        struct change *c = &backlog[nbacklog++];
        snprintf(c->user, sizeof c->user, "%s", pc->info->user_id);
        snprintf(c->name, sizeof c->name, "%s", pc->info->username);
        c->status = pc->info->status;
        c->last_seen = pc->info->last_seen_ms;
        c->at = now_ms(CLOCK_MONOTONIC);
    }
    chat__v1__presence_change__free_unpacked(pc, NULL);
    natsMsg_Destroy(m);
}

static int take(const char *user, struct change *out)
{
    for (size_t i = 0; i < nbacklog; i++) {
        if (strcmp(backlog[i].user, user) == 0) {
            if (out)
                *out = backlog[i];
            memmove(&backlog[i], &backlog[i + 1], (nbacklog - i - 1) * sizeof backlog[0]);
            nbacklog--;
            return 1;
        }
    }
    return 0;
}

/* The next change of user within timeout_ms: 1 and *out, or 0. */
static int expect_change(const char *user, long timeout_ms, struct change *out)
{
    long long end = now_ms(CLOCK_MONOTONIC) + timeout_ms;
    for (;;) {
        if (take(user, out))
            return 1;
        long long left = end - now_ms(CLOCK_MONOTONIC);
        if (left <= 0)
            return 0;
        pull(left);
    }
}

/* How many changes of user arrive within ms (they are consumed). */
static int count_changes(const char *user, long ms)
{
    long long end = now_ms(CLOCK_MONOTONIC) + ms;
    long long left;
    while ((left = end - now_ms(CLOCK_MONOTONIC)) > 0)
        pull(left);
    int n = 0;
    while (take(user, NULL))
        n++;
    return n;
}

static void drain_changes(void)
{
    natsMsg *m = NULL;
    while (natsSubscription_NextMsg(&m, status_sub, 100) == NATS_OK)
        natsMsg_Destroy(m);
    nbacklog = 0;
}

/* Waits for a ResyncRequest; copies its boot id. */
static int expect_resync(long timeout_ms, char *boot, size_t size)
{
    natsMsg *m = NULL;
    if (natsSubscription_NextMsg(&m, resync_sub, timeout_ms) != NATS_OK)
        return 0;
    Chat__V1__ResyncRequest *rr = chat__v1__resync_request__unpack(NULL, (size_t)natsMsg_GetDataLength(m),
                                                                   (const uint8_t *)natsMsg_GetData(m));
    int ok = rr && *rr->presence_boot_id;
    if (ok)
        snprintf(boot, size, "%s", rr->presence_boot_id);
    chat__v1__resync_request__free_unpacked(rr, NULL);
    natsMsg_Destroy(m);
    return ok;
}

/* ---- the users table, read with psql ---- */

/* "username|status|online|last_seen_ms" of user, or "" when there is no row. */
static void row_of(const char *user, char *out, size_t size)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "psql -XAtq -c \"SELECT username || '|' || status || '|' || online || '|' || "
             "COALESCE(floor(extract(epoch FROM last_seen) * 1000)::bigint, 0) FROM users WHERE id = '%s'\"",
             user);
    out[0] = '\0';
    FILE *p = popen(cmd, "r");
    if (!p)
        return;
    if (!fgets(out, (int)size, p))
        out[0] = '\0';
    out[strcspn(out, "\n")] = '\0';
    pclose(p);
}

static int pg_ctl(const char *args);

/* SELECT count(*) FROM users WHERE <where>; -1 when psql fails. */
static int count_rows(const char *where)
{
    size_t size = strlen(where) + 128;
    char *cmd = malloc(size), out[64] = "";
    snprintf(cmd, size, "psql -XAtq -c \"SELECT count(*) FROM users WHERE %s\"", where);
    FILE *p = popen(cmd, "r");
    free(cmd);
    if (!p)
        return -1;
    if (!fgets(out, sizeof out, p))
        out[0] = '\0';
    int st = pclose(p);
    return st == 0 && out[0] ? atoi(out) : -1;
}

/* A psql session holding a lock on users in an open transaction: presence can
 * still read the table, but its writes wait until unlock_users(). Returns the
 * session once the lock is granted, or NULL. */
static FILE *lock_users(void)
{
    FILE *f = popen("psql -XAtq -v ON_ERROR_STOP=1 >/dev/null", "w");
    if (!f)
        return NULL;
    fputs("BEGIN;\nLOCK TABLE users IN SHARE ROW EXCLUSIVE MODE;\n", f);
    fflush(f);
    for (int i = 0; i < 250; i++) {
        char out[64] = "";
        FILE *q =
            popen("psql -XAtq -c \"SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                  " WHERE c.relname = 'users' AND l.mode = 'ShareRowExclusiveLock' AND l.granted\"",
                  "r");
        if (q) {
            if (!fgets(out, sizeof out, q))
                out[0] = '\0';
            pclose(q);
        }
        if (atoi(out) == 1)
            return f;
        sleep_ms(20);
    }
    pclose(f);
    return NULL;
}

static void unlock_users(FILE *f)
{
    if (!f)
        return;
    fputs("COMMIT;\n", f);
    pclose(f);
}

/* An id list for SQL: ('id','id',...) of burst users first..first+n-1. */
static void id_list(char *out, size_t size, int first, int n)
{
    size_t len = 0;
    out[len++] = '(';
    for (int i = 0; i < n && len + 45 < size; i++) {
        char id[37];
        uid(id, first + i);
        len += (size_t)snprintf(out + len, size - len, "%s'%s'", i ? "," : "", id);
    }
    snprintf(out + len, size - len, ")");
}

/* Sends an open for each burst user first..first+n-1 (conn = the user number) as
 * a request whose reply comes to _burst.<i> (i from 0). */
static void open_requests(struct edge *e, int first, int n, int base)
{
    for (int i = 0; i < n; i++) {
        char user[37], name[32], reply[64];
        uid(user, first + i);
        snprintf(name, sizeof name, "burst%d", first + i);
        snprintf(reply, sizeof reply, "_burst.%d", base + i);
        Chat__V1__SessionEvent se = CHAT__V1__SESSION_EVENT__INIT;
        se.kind = CHAT__V1__SESSION_EVENT__KIND__KIND_OPEN;
        se.edge_id = (char *)e->id;
        se.boot_id = e->boot;
        se.conn_id = (unsigned long long)(first + i);
        se.user_id = user;
        se.username = name;
        uint8_t buf[512];
        size_t len = chat__v1__session_event__pack(&se, buf);
        natsConnection_PublishRequest(nc, "chat.presence.session", reply, buf, (int)len);
    }
    natsConnection_Flush(nc);
}

/* Waits for n replies on sub (bounded); got[i] = 1 for the reply to _burst.<i>,
 * own[i] = 1 when that list holds burst user first+i. Returns how many came. */
static int collect_replies(natsSubscription *sub, int first, int n, char *got, char *own, long timeout_ms)
{
    long long end = now_ms(CLOCK_MONOTONIC) + timeout_ms;
    int count = 0;
    while (count < n) {
        long long left = end - now_ms(CLOCK_MONOTONIC);
        natsMsg *m = NULL;
        if (left <= 0 || natsSubscription_NextMsg(&m, sub, left) != NATS_OK)
            break;
        int i = atoi(strrchr(natsMsg_GetSubject(m), '.') + 1);
        Chat__V1__PresenceList *l = chat__v1__presence_list__unpack(NULL, (size_t)natsMsg_GetDataLength(m),
                                                                    (const uint8_t *)natsMsg_GetData(m));
        if (i >= 0 && i < n && !got[i]) {
            char user[37];
            uid(user, first + i);
            got[i] = 1;
            own[i] = find(l, user) != NULL;
            count++;
        }
        chat__v1__presence_list__free_unpacked(l, NULL);
        natsMsg_Destroy(m);
    }
    return count;
}

/* Reads chat.presence.status until n changes of burst users first..first+n-1
 * with status st came (bounded); order[k] = the k-th one's user number. Changes
 * of other users go to the backlog. Returns how many came. */
static int collect_burst_changes(int first, int n, int st, int *order, long timeout_ms,
                                 int (*on_first)(const char *user))
{
    long long end = now_ms(CLOCK_MONOTONIC) + timeout_ms;
    int count = 0;
    while (count < n) {
        long long left = end - now_ms(CLOCK_MONOTONIC);
        natsMsg *m = NULL;
        if (left <= 0 || natsSubscription_NextMsg(&m, status_sub, left) != NATS_OK)
            break;
        Chat__V1__PresenceChange *pc = chat__v1__presence_change__unpack(
            NULL, (size_t)natsMsg_GetDataLength(m), (const uint8_t *)natsMsg_GetData(m));
        int k = -1;
        if (pc && pc->info && strncmp(pc->info->user_id, "00000000-0000-4000-8000-", 24) == 0)
            k = atoi(pc->info->user_id + 24) - first;
        if (k >= 0 && k < n && (int)pc->info->status == st) {
            if (count == 0 && on_first)
                on_first(pc->info->user_id);
            order[count++] = first + k;
        } else if (pc && pc->info && nbacklog < sizeof backlog / sizeof backlog[0]) {
            struct change *c = &backlog[nbacklog++];
            snprintf(c->user, sizeof c->user, "%s", pc->info->user_id);
            snprintf(c->name, sizeof c->name, "%s", pc->info->username);
            c->status = pc->info->status;
            c->last_seen = pc->info->last_seen_ms;
            c->at = now_ms(CLOCK_MONOTONIC);
        }
        chat__v1__presence_change__free_unpacked(pc, NULL);
        natsMsg_Destroy(m);
    }
    return count;
}

static int first_row_ok; /* set by row_written: the first broadcast's row, read at once */

static int row_written(const char *user)
{
    char row[256];
    row_of(user, row, sizeof row);
    first_row_ok = strncmp(row, "burst", 5) == 0 && strstr(row, "|online|true|") != NULL;
    return first_row_ok;
}

/* Closes burst users first..first+n-1 and waits for their offline broadcasts. */
static int close_burst(struct edge *e, int first, int n)
{
    for (int i = 0; i < n; i++) {
        char user[37];
        uid(user, first + i);
        session(0, e, (unsigned long long)(first + i), user, "", 0, 0);
    }
    int *order = calloc((size_t)n, sizeof *order);
    int got = collect_burst_changes(first, n, CHAT__V1__STATUS__STATUS_OFFLINE, order, 10000, NULL);
    free(order);
    return got;
}

#define BURST_FIRST 1000
#define BURST_N 300

/* Many users connect at once while presence's write is held up: nothing is
 * published before the rows are committed; then every request is answered
 * with a list holding its user, every online broadcast comes in the order the
 * opens were sent, and whoever gets the first one can read its row. */
static void test_burst(void)
{
    natsSubscription *replies = NULL;
    CHECK(natsConnection_SubscribeSync(&replies, nc, "_burst.*") == NATS_OK, "burst: no reply subscription");
    natsConnection_Flush(nc);
    FILE *lock = lock_users();
    CHECK(lock != NULL, "burst: could not lock the users table");
    open_requests(&edges[0], BURST_FIRST, BURST_N, 0);
    char got[BURST_N] = {0}, own[BURST_N] = {0};
    int order[BURST_N];
    /* while the write waits: no reply and no broadcast of the burst */
    CHECK(collect_replies(replies, BURST_FIRST, BURST_N, got, own, 500) == 0,
          "burst: a reply went out before its row was committed");
    CHECK(collect_burst_changes(BURST_FIRST, BURST_N, CHAT__V1__STATUS__STATUS_ONLINE, order, 300, NULL) == 0,
          "burst: a broadcast went out before its row was committed");
    unlock_users(lock);

    int nrep = collect_replies(replies, BURST_FIRST, BURST_N, got, own, 10000);
    CHECK(nrep == BURST_N, "burst: %d of %d requests answered", nrep, BURST_N);
    int nown = 0;
    for (int i = 0; i < BURST_N; i++)
        nown += own[i];
    CHECK(nown == nrep, "burst: %d of %d replies lack their own user", nrep - nown, nrep);
    first_row_ok = 0;
    int nch = collect_burst_changes(BURST_FIRST, BURST_N, CHAT__V1__STATUS__STATUS_ONLINE, order, 10000,
                                    row_written);
    CHECK(nch == BURST_N, "burst: %d of %d online broadcasts", nch, BURST_N);
    CHECK(first_row_ok, "burst: the first broadcast's row was not readable when it came");
    int in_order = 1;
    for (int k = 0; k < nch; k++)
        in_order &= order[k] == BURST_FIRST + k;
    CHECK(in_order, "burst: online broadcasts not in the order of the opens");
    char ids[BURST_N * 40 + 8], where[BURST_N * 40 + 64];
    id_list(ids, sizeof ids, BURST_FIRST, BURST_N);
    snprintf(where, sizeof where, "online AND username LIKE 'burst%%' AND id IN %s", ids);
    CHECK(count_rows(where) == BURST_N, "burst: not every row written online");
    CHECK(close_burst(&edges[0], BURST_FIRST, BURST_N) == BURST_N, "burst: not every user went offline");
    natsSubscription_Destroy(replies);
}

/* More events than presence queues while its write is held up: the callbacks
 * wait (nats.c keeps the rest), nothing is dropped, order is kept. */
static void test_backpressure(void)
{
    enum { NSETS = 10000 };
    char user[37];
    uid(user, 2000);
    Chat__V1__PresenceList *l = session(1, &edges[0], 2000, user, "toggler", 0, 1);
    chat__v1__presence_list__free_unpacked(l, NULL);
    struct change c;
    CHECK(expect_change(user, 2000, &c) && c.status == CHAT__V1__STATUS__STATUS_ONLINE, "toggler: no online");
    FILE *lock = lock_users();
    CHECK(lock != NULL, "backpressure: could not lock the users table");
    for (int i = 0; i < NSETS; i++) {
        Chat__V1__SetStatus ss = CHAT__V1__SET_STATUS__INIT;
        ss.user_id = user;
        ss.status = i % 2 ? CHAT__V1__STATUS__STATUS_ONLINE : CHAT__V1__STATUS__STATUS_AWAY;
        uint8_t buf[256];
        size_t n = chat__v1__set_status__pack(&ss, buf);
        natsConnection_Publish(nc, "chat.presence.set", buf, (int)n);
    }
    natsSubscription *replies = NULL;
    natsConnection_SubscribeSync(&replies, nc, "_burst.*");
    open_requests(&edges[0], 2001, 1, 0); /* behind all of them */
    unlock_users(lock);
    char got[1] = {0}, own[1] = {0};
    CHECK(collect_replies(replies, 2001, 1, got, own, 10000) == 1 && own[0],
          "backpressure: the open behind %d events was not answered", NSETS);
    /* every toggle broadcast, alternating, in order */
    int n = 0, alternating = 1;
    long long end = now_ms(CLOCK_MONOTONIC) + 10000;
    while (n < NSETS) {
        long long left = end - now_ms(CLOCK_MONOTONIC);
        natsMsg *m = NULL;
        if (left <= 0 || natsSubscription_NextMsg(&m, status_sub, left) != NATS_OK)
            break;
        Chat__V1__PresenceChange *pc = chat__v1__presence_change__unpack(
            NULL, (size_t)natsMsg_GetDataLength(m), (const uint8_t *)natsMsg_GetData(m));
        if (pc && pc->info && strcmp(pc->info->user_id, user) == 0) {
            int want = n % 2 ? CHAT__V1__STATUS__STATUS_ONLINE : CHAT__V1__STATUS__STATUS_AWAY;
            alternating &= (int)pc->info->status == want;
            n++;
        }
        chat__v1__presence_change__free_unpacked(pc, NULL);
        natsMsg_Destroy(m);
    }
    CHECK(n == NSETS && alternating, "backpressure: %d of %d status broadcasts (in order: %d)", n, NSETS,
          alternating);
    char row[256];
    row_of(user, row, sizeof row);
    CHECK(strncmp(row, "toggler|online|true|", 20) == 0, "backpressure: row '%s'", row);
    session(0, &edges[0], 2000, user, "", 0, 0);
    CHECK(expect_change(user, 2000, &c) && c.status == CHAT__V1__STATUS__STATUS_OFFLINE,
          "toggler: no offline");
    CHECK(close_burst(&edges[0], 2001, 1) == 1, "backpressure: the last user did not go offline");
    natsSubscription_Destroy(replies);
}

/* Usernames travel to PostgreSQL inside array literals: quotes, backslashes,
 * commas, braces and the word NULL stay what they are. */
static void test_odd_usernames(void)
{
    static const char *const names[] = {"o\"neil", "back\\slash", "a,b", "{c}", "NULL", "  sp  "};
    enum { N = sizeof names / sizeof names[0] };
    for (int i = 0; i < N; i++) {
        char user[37];
        uid(user, 3000 + i);
        session(1, &edges[0], (unsigned long long)(3000 + i), user, names[i], 0, 0);
    }
    for (int i = 0; i < N; i++) {
        char user[37], row[256], want[256];
        uid(user, 3000 + i);
        struct change c;
        CHECK(expect_change(user, 3000, &c) && strcmp(c.name, names[i]) == 0, "odd name %d: no broadcast", i);
        row_of(user, row, sizeof row);
        snprintf(want, sizeof want, "%s|online|true|%lld", names[i], c.last_seen);
        CHECK(strcmp(row, want) == 0, "odd name %d: row '%s', want '%s'", i, row, want);
        session(0, &edges[0], (unsigned long long)(3000 + i), user, "", 0, 0);
        CHECK(expect_change(user, 3000, &c) && c.status == CHAT__V1__STATUS__STATUS_OFFLINE,
              "odd name %d: no offline", i);
    }
}

/* PostgreSQL stops in the middle of a burst: every request is still answered
 * and every change broadcast (memory is the truth); the rows are written once
 * the database is back. */
static void test_outage_mid_burst(void)
{
    enum { FIRST = 4000, N = 200 };
    natsSubscription *replies = NULL;
    CHECK(natsConnection_SubscribeSync(&replies, nc, "_burst.*") == NATS_OK, "outage burst: no subscription");
    natsConnection_Flush(nc);
    open_requests(&edges[0], FIRST, N / 2, 0);
    CHECK(pg_ctl("-m fast stop") == 0, "pg_ctl stop failed");
    open_requests(&edges[0], FIRST + N / 2, N / 2, N / 2);
    char got[N] = {0}, own[N] = {0};
    int order[N];
    int nrep = collect_replies(replies, FIRST, N, got, own, 10000);
    int nown = 0;
    for (int i = 0; i < N; i++)
        nown += own[i];
    CHECK(nrep == N && nown == N, "outage burst: %d of %d answered, %d with their user", nrep, N, nown);
    int nch = collect_burst_changes(FIRST, N, CHAT__V1__STATUS__STATUS_ONLINE, order, 10000, NULL);
    int in_order = 1;
    for (int k = 0; k < nch; k++)
        in_order &= order[k] == FIRST + k;
    CHECK(nch == N && in_order, "outage burst: %d of %d online broadcasts (in order: %d)", nch, N, in_order);
    CHECK(close_burst(&edges[0], FIRST, N / 2) == N / 2, "outage burst: closes not broadcast");
    CHECK(pg_ctl("start") == 0, "pg_ctl start failed");
    char where[N * 40 + 256];
    /* the first half closed (offline, last_seen set), the second half online */
    char half1[N * 40 / 2 + 8], half2[N * 40 / 2 + 8];
    id_list(half1, sizeof half1, FIRST, N / 2);
    id_list(half2, sizeof half2, FIRST + N / 2, N / 2);
    snprintf(where, sizeof where,
             "username LIKE 'burst%%' AND ((id IN %s AND NOT online AND last_seen IS NOT NULL)"
             " OR (id IN %s AND online AND last_seen IS NOT NULL))",
             half1, half2);
    int rows = -1;
    for (int i = 0; i < 80 && rows != N; i++) { /* the re-dial backoff is at most 5 s */
        sleep_ms(100);
        rows = count_rows(where);
    }
    CHECK(rows == N, "outage burst: %d of %d rows right once the database is back", rows, N);
    CHECK(close_burst(&edges[0], FIRST + N / 2, N / 2) == N / 2, "outage burst: second half not offline");
    natsSubscription_Destroy(replies);
}

/* ---- scenarios ---- */

static char u1[37], u2[37], u3[37], u4[37], u5[37], u6[37], u7[37], u8[37], nobody[37];

static void test_connect(void)
{
    long long before = now_ms(CLOCK_REALTIME);
    Chat__V1__PresenceList *l = session(1, &edges[0], 1, u1, "alice", 0, 1);
    long long after = now_ms(CLOCK_REALTIME);
    CHECK(l != NULL, "open: no reply");
    const Chat__V1__PresenceInfo *me = find(l, u1);
    CHECK(me && me->status == CHAT__V1__STATUS__STATUS_ONLINE && strcmp(me->username, "alice") == 0 &&
              me->last_seen_ms >= before - 5 && me->last_seen_ms <= after + 5,
          "open: reply list lacks alice online with lastSeen the time she came online");
    chat__v1__presence_list__free_unpacked(l, NULL);
    struct change c;
    CHECK(expect_change(u1, 2000, &c) && c.status == CHAT__V1__STATUS__STATUS_ONLINE &&
              strcmp(c.name, "alice") == 0 && c.last_seen >= before - 5 && c.last_seen <= after + 5,
          "open: no online broadcast for alice with lastSeen now");
    char row[256], want[256];
    row_of(u1, row, sizeof row);
    snprintf(want, sizeof want, "alice|online|true|%lld", c.last_seen);
    CHECK(strcmp(row, want) == 0, "open: row is '%s', want '%s'", row, want);
}

static void test_two_sessions(void)
{
    Chat__V1__PresenceList *l = session(1, &edges[0], 2, u2, "bob", 0, 1);
    CHECK(l && find(l, u1) && find(l, u2), "bob's list lacks alice or bob");
    chat__v1__presence_list__free_unpacked(l, NULL);
    l = session(1, &edges[1], 2, u2, "bob", 0, 1); /* same conn id, other edge */
    chat__v1__presence_list__free_unpacked(l, NULL);
    CHECK(count_changes(u2, 500) == 1, "two opens: want exactly one online broadcast");
    session(0, &edges[0], 2, u2, "", 0, 0);
    CHECK(count_changes(u2, 500) == 0, "closing one of two sessions broadcast something");
    long long before = now_ms(CLOCK_REALTIME);
    l = session(0, &edges[1], 2, u2, "", 0, 1); /* a close as a request: empty list */
    CHECK(l && l->n_users == 0, "close request: want an empty list");
    chat__v1__presence_list__free_unpacked(l, NULL);
    long long after = now_ms(CLOCK_REALTIME);
    struct change c;
    int got = expect_change(u2, 2000, &c);
    CHECK(got && c.status == CHAT__V1__STATUS__STATUS_OFFLINE && c.last_seen >= before - 5 &&
              c.last_seen <= after + 5,
          "last close: want offline with last_seen now (got=%d status=%d)", got, got ? c.status : -1);
    char row[256], want[256];
    row_of(u2, row, sizeof row);
    snprintf(want, sizeof want, "bob|online|false|%lld", got ? c.last_seen : -1);
    CHECK(strcmp(row, want) == 0, "last close: row '%s', want '%s'", row, want);
    session(0, &edges[1], 99, u2, "", 0, 0); /* unknown close */
    CHECK(count_changes(u2, 300) == 0, "unknown close broadcast something");
}

static void test_set_status(void)
{
    long long before = now_ms(CLOCK_REALTIME);
    set_status(u1, CHAT__V1__STATUS__STATUS_AWAY);
    struct change c;
    CHECK(expect_change(u1, 2000, &c) && c.status == CHAT__V1__STATUS__STATUS_AWAY &&
              c.last_seen >= before - 5 && c.last_seen <= now_ms(CLOCK_REALTIME) + 5,
          "set away: no broadcast with lastSeen the time of the change");
    char row[256];
    row_of(u1, row, sizeof row);
    CHECK(strncmp(row, "alice|away|true|", 16) == 0, "set away: row '%s'", row);
    set_status(u2, CHAT__V1__STATUS__STATUS_AWAY); /* bob has no session */
    set_status(u1, (Chat__V1__Status)7);           /* no such status */
    CHECK(count_changes(u2, 300) == 0 && count_changes(u1, 0) == 0, "ignored set broadcast something");
    Chat__V1__PresenceList *l = session(1, &edges[0], 3, u3, "carol", 0, 1);
    const Chat__V1__PresenceInfo *a = find(l, u1);
    CHECK(a && a->status == CHAT__V1__STATUS__STATUS_AWAY, "list: alice is not away");
    chat__v1__presence_list__free_unpacked(l, NULL);
    long long away_at = c.last_seen;
    set_status(u1, CHAT__V1__STATUS__STATUS_OFFLINE); /* invisible */
    CHECK(expect_change(u1, 2000, &c) && c.status == CHAT__V1__STATUS__STATUS_OFFLINE &&
              c.last_seen >= away_at,
          "invisible: want offline with lastSeen the time of the change");
    l = session(1, &edges[0], 4, u3, "carol", 0, 1);
    CHECK(l && !find(l, u1) && find(l, u3), "invisible alice is in the list");
    chat__v1__presence_list__free_unpacked(l, NULL);
    set_status(u1, CHAT__V1__STATUS__STATUS_ONLINE);
    CHECK(expect_change(u1, 2000, &c) && c.status == CHAT__V1__STATUS__STATUS_ONLINE, "back online: nothing");
    session(0, &edges[0], 3, u3, "", 0, 0);
    session(0, &edges[0], 4, u3, "", 0, 0);
    CHECK(expect_change(u3, 2000, &c) && c.status == CHAT__V1__STATUS__STATUS_ONLINE &&
              expect_change(u3, 2000, &c) && c.status == CHAT__V1__STATUS__STATUS_OFFLINE,
          "carol: want online then offline");
}

static void test_query(void)
{
    /* Users never seen (an unknown uuid, not a uuid at all) are left out;
     * the others are answered in request order, duplicates kept. */
    const char *ids[] = {u1, nobody, u2, u1, "not-a-uuid"};
    Chat__V1__PresenceList *l = query(ids, 5);
    CHECK(l && l->n_users == 3, "query: want 3 answers (the never seen left out)");
    if (l && l->n_users == 3) {
        const char *want_ids[] = {u1, u2, u1};
        for (int i = 0; i < 3; i++)
            CHECK(strcmp(l->users[i]->user_id, want_ids[i]) == 0 && l->users[i]->last_seen_ms > 0,
                  "query: answer %d is for %s", i, l->users[i]->user_id);
        CHECK(l->users[0]->status == CHAT__V1__STATUS__STATUS_ONLINE &&
                  strcmp(l->users[0]->username, "alice") == 0,
              "query: alice");
        CHECK(l->users[2]->status == CHAT__V1__STATUS__STATUS_ONLINE, "query: duplicate alice");
        char row[256];
        row_of(u2, row, sizeof row);
        const char *ls = strrchr(row, '|');
        CHECK(l->users[1]->status == CHAT__V1__STATUS__STATUS_OFFLINE &&
                  strcmp(l->users[1]->username, "bob") == 0 && ls &&
                  l->users[1]->last_seen_ms == atoll(ls + 1) && l->users[1]->last_seen_ms > 0,
              "query: bob (from the database) wants offline, last_seen of row '%s'", row);
    }
    chat__v1__presence_list__free_unpacked(l, NULL);
    const char *many[MAX_QUERY + 1] = {u1, u1, u1, u1, u1, u1};
    l = query(many, MAX_QUERY + 1);
    CHECK(l && l->n_users == 0, "query over PRESENCE_MAX_QUERY: want an empty list");
    chat__v1__presence_list__free_unpacked(l, NULL);
}

static void test_edge_timeout(void)
{
    struct edge *e = &edges[1];
    Chat__V1__PresenceList *l = session(1, e, 10, u4, "dan", 0, 1);
    chat__v1__presence_list__free_unpacked(l, NULL);
    pthread_mutex_lock(&edges_mu);
    e->beating = 0;
    pthread_mutex_unlock(&edges_mu);
    long long last_life = now_ms(CLOCK_MONOTONIC); /* the open, or the heartbeat just before */
    struct change c;
    CHECK(expect_change(u4, 2000, &c) && c.status == CHAT__V1__STATUS__STATUS_ONLINE, "dan: no online");
    int got = expect_change(u4, EDGE_TIMEOUT_MS + 2000, &c);
    long long waited = got ? c.at - last_life : -1;
    CHECK(got && c.status == CHAT__V1__STATUS__STATUS_OFFLINE, "silent edge: dan not dropped");
    /* > the timeout after the last sign of life, and at most one tick (+ slack) late */
    CHECK(got && waited >= EDGE_TIMEOUT_MS - 350 && waited <= EDGE_TIMEOUT_MS + 700,
          "silent edge dropped after %lld ms, want about %d", waited, EDGE_TIMEOUT_MS);
    char row[256];
    row_of(u4, row, sizeof row);
    CHECK(strncmp(row, "dan|online|false|", 17) == 0, "silent edge: row '%s'", row);
    pthread_mutex_lock(&edges_mu);
    e->beating = 1;
    pthread_mutex_unlock(&edges_mu);
}

static void test_boot_change(void)
{
    struct edge *e = &edges[2];
    Chat__V1__PresenceList *l = session(1, e, 1, u5, "erin", 0, 1);
    chat__v1__presence_list__free_unpacked(l, NULL);
    struct change c;
    CHECK(expect_change(u5, 2000, &c) && c.status == CHAT__V1__STATUS__STATUS_ONLINE, "erin: no online");
    pthread_mutex_lock(&edges_mu);
    snprintf(e->boot, sizeof e->boot, "boot-3b");
    pthread_mutex_unlock(&edges_mu);
    long long t0 = now_ms(CLOCK_MONOTONIC);
    send_heartbeat(e->id, "boot-3b", 0);
    int got = expect_change(u5, 1000, &c);
    CHECK(got && c.status == CHAT__V1__STATUS__STATUS_OFFLINE && c.at - t0 < 500,
          "new boot id: erin not dropped at once");
}

static void test_bad_input(void)
{
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0x0f, 0x08, 0x96, 0x01, 0x12};
    const char *subjects[] = {"chat.presence.session", "chat.presence.set", "chat.presence.query",
                              "chat.edge.heartbeat"};
    for (int i = 0; i < 4; i++) {
        natsConnection_Publish(nc, subjects[i], junk, sizeof junk);
        natsConnection_Publish(nc, subjects[i], "", 0);
        natsMsg *r = NULL;
        natsStatus s = natsConnection_Request(&r, nc, subjects[i], junk, sizeof junk, 300);
        CHECK(s == NATS_TIMEOUT, "junk on %s was answered (%s)", subjects[i], natsStatus_GetText(s));
        natsMsg_Destroy(r);
    }
    /* well-formed protobuf, bad fields */
    Chat__V1__PresenceList *l = session(1, &edges[0], 50, "not-a-uuid", "x", 0, 0);
    chat__v1__presence_list__free_unpacked(l, NULL);
    struct edge noid = {"", "b", 1, 0};
    session(1, &noid, 51, u6, "x", 0, 0);
    CHECK(count_changes(u6, 300) == 0, "a session event without edge id was applied");
    const char *ids[] = {u1};
    l = query(ids, 1);
    CHECK(l && l->n_users == 1 && l->users[0]->status == CHAT__V1__STATUS__STATUS_ONLINE,
          "presence does not answer after junk");
    chat__v1__presence_list__free_unpacked(l, NULL);
}

static void test_restart(void)
{
    struct edge *e = &edges[0];
    char boot2[64] = "";
    Chat__V1__PresenceList *l = session(1, e, 20, u6, "frank", 0, 1);
    chat__v1__presence_list__free_unpacked(l, NULL);
    l = session(1, e, 21, u7, "gina", 0, 1);
    chat__v1__presence_list__free_unpacked(l, NULL);
    struct change c;
    CHECK(expect_change(u6, 2000, &c) && expect_change(u7, 2000, &c), "frank, gina: no online");
    natsMsg *m = NULL;
    while (natsSubscription_NextMsg(&m, resync_sub, 50) == NATS_OK) /* the first start's */
        natsMsg_Destroy(m);

    kill(presence_pid, SIGKILL);
    CHECK(presence_wait(5000) != -1, "kill -9: presence did not die");
    /* while presence is down, gina's socket closes: the close goes nowhere */
    session(0, e, 21, u7, "", 0, 0);
    drain_changes();

    presence_start();
    CHECK(expect_resync(5000, boot2, sizeof boot2), "restart: no ResyncRequest");
    /* edge-1 re-announces what it still holds: alice (conn 1) as a request,
     * frank as a plain publish */
    l = session(1, e, 1, u1, "alice", 1, 1);
    CHECK(l && find(l, u1), "resync request: list lacks alice");
    chat__v1__presence_list__free_unpacked(l, NULL);
    session(1, e, 20, u6, "frank", 1, 0);
    int gina = expect_change(u7, RESYNC_MS + 2000, &c);
    CHECK(gina && c.status == CHAT__V1__STATUS__STATUS_OFFLINE && c.last_seen > 0,
          "after the resync window: gina not set offline");
    CHECK(count_changes(u1, 300) == 0 && count_changes(u6, 0) == 0, "resynced users flapped");
    char row[256];
    row_of(u7, row, sizeof row);
    CHECK(strncmp(row, "gina|online|false|", 18) == 0, "gina's row '%s'", row);
    row_of(u1, row, sizeof row);
    CHECK(strncmp(row, "alice|online|true|", 18) == 0, "alice's row '%s'", row);
    const char *ids[] = {u1, u6, u7};
    l = query(ids, 3);
    CHECK(l && l->n_users == 3 && l->users[0]->status == CHAT__V1__STATUS__STATUS_ONLINE &&
              l->users[1]->status == CHAT__V1__STATUS__STATUS_ONLINE &&
              l->users[2]->status == CHAT__V1__STATUS__STATUS_OFFLINE,
          "after restart: query wants alice, frank online and gina offline");
    chat__v1__presence_list__free_unpacked(l, NULL);
}

/* pg_ctl on run.sh's cluster (PG_DIR), as its owner. */
static int pg_ctl(const char *args)
{
    char cmd[1024];
    const char *dir = getenv("PG_DIR"), *port = getenv("PGPORT");
    if (!dir || !port)
        return -1;
    snprintf(
        cmd, sizeof cmd,
        "%s \"$(pg_config --bindir)/pg_ctl\" -D '%s/pg/data' -l '%s/pg/server.log' -w -t 30 %s >/dev/null",
        getuid() == 0 ? "runuser -u postgres --" : "", dir, dir, args);
    if (strstr(args, "start")) {
        char opts[512];
        snprintf(opts, sizeof opts, " -o \"-p %s -k %s/pg -c listen_addresses=127.0.0.1 -c fsync=off\"", port,
                 dir);
        strncat(cmd, opts, sizeof cmd - strlen(cmd) - 1);
    }
    return system(cmd);
}

/* PostgreSQL goes away: presence keeps serving from memory, and writes the rows
 * once the database is back. */
static void test_postgres_outage(void)
{
    CHECK(pg_ctl("-m fast stop") == 0, "pg_ctl stop failed");
    Chat__V1__PresenceList *l = session(1, &edges[0], 30, u8, "hank", 0, 1);
    CHECK(l && find(l, u8) && find(l, u1), "database down: open not answered");
    chat__v1__presence_list__free_unpacked(l, NULL);
    struct change c;
    CHECK(expect_change(u8, 2000, &c) && c.status == CHAT__V1__STATUS__STATUS_ONLINE,
          "database down: no online");
    session(0, &edges[0], 30, u8, "", 0, 0);
    int got = expect_change(u8, 2000, &c);
    CHECK(got && c.status == CHAT__V1__STATUS__STATUS_OFFLINE, "database down: no offline");
    const char *ids[] = {u1, u8};
    l = query(ids, 2);
    CHECK(l && l->n_users == 2 && l->users[0]->status == CHAT__V1__STATUS__STATUS_ONLINE &&
              l->users[1]->status == CHAT__V1__STATUS__STATUS_OFFLINE &&
              strcmp(l->users[1]->username, "hank") == 0,
          "database down: query not served from memory");
    chat__v1__presence_list__free_unpacked(l, NULL);
    sleep_ms(1500); /* a few failed dials: the backoff grows */
    CHECK(pg_ctl("start") == 0, "pg_ctl start failed");
    char row[256] = "", want[256];
    snprintf(want, sizeof want, "hank|online|false|%lld", got ? c.last_seen : -1);
    for (int i = 0; i < 80 && strcmp(row, want) != 0; i++) { /* backoff is at most 5 s */
        sleep_ms(100);
        row_of(u8, row, sizeof row);
    }
    CHECK(strcmp(row, want) == 0, "database back: row '%s', want '%s'", row, want);
}

/* NATS goes away for longer than the edge timeout: presence was deaf, the edges
 * were not dead, so nobody goes offline; the ResyncRequest is sent again. */
static void test_nats_outage(void)
{
    natsMsg *m = NULL;
    while (natsSubscription_NextMsg(&m, resync_sub, 50) == NATS_OK)
        natsMsg_Destroy(m);
    drain_changes();
    nats_stop();
    sleep_ms(EDGE_TIMEOUT_MS + 1000);
    CHECK(nats_start() == 0, "nats-server restart failed");
    char boot[64];
    CHECK(expect_resync(5000, boot, sizeof boot), "after a NATS outage: no new ResyncRequest");
    /* As an edge does on a ResyncRequest: announce what it holds now. Presence
     * drops what is not announced again by the end of the window. */
    chat__v1__presence_list__free_unpacked(session(1, &edges[0], 1, u1, "alice", 1, 0), NULL);
    CHECK(count_changes(u1, EDGE_TIMEOUT_MS + 1000) == 0, "after a NATS outage: alice flapped");
    const char *ids[] = {u1};
    Chat__V1__PresenceList *l = query(ids, 1);
    CHECK(l && l->n_users == 1 && l->users[0]->status == CHAT__V1__STATUS__STATUS_ONLINE,
          "after a NATS outage: alice not online");
    chat__v1__presence_list__free_unpacked(l, NULL);
}

/* PRESENCE_LIST_IN_REPLY=1 (set here; the default is 0) with more users online than fit in
 * a NATS message: a session open is still answered, with an empty list, not
 * left to time out. The edge that holds them goes silent after, and they go. */
static void test_list_too_big(void)
{
    enum { FIRST = 100000, N = 20000 };
    struct edge big = {"edge-big", "boot-big", 0, 0};
    for (int i = 0; i < N; i++) {
        char user[37], name[32];
        uid(user, FIRST + i);
        snprintf(name, sizeof name, "crowd%d", i);
        Chat__V1__SessionEvent se = CHAT__V1__SESSION_EVENT__INIT;
        se.kind = CHAT__V1__SESSION_EVENT__KIND__KIND_OPEN;
        se.edge_id = (char *)big.id;
        se.boot_id = big.boot;
        se.conn_id = (unsigned long long)i + 1;
        se.user_id = user;
        se.username = name;
        uint8_t buf[512];
        size_t len = chat__v1__session_event__pack(&se, buf);
        natsConnection_Publish(nc, "chat.presence.session", buf, (int)len);
    }
    char user[37];
    uid(user, FIRST + N);
    Chat__V1__PresenceList *l = session(1, &big, N + 1, user, "one-more", 0, 1);
    CHECK(l && l->n_users == 0, "list over the max payload: want an empty list (got %s)",
          l ? "a list" : "nothing");
    chat__v1__presence_list__free_unpacked(l, NULL);
    const char *ids[] = {user};
    l = query(ids, 1);
    CHECK(l && l->n_users == 1 && l->users[0]->status == CHAT__V1__STATUS__STATUS_ONLINE,
          "list over the max payload: the user is not online");
    chat__v1__presence_list__free_unpacked(l, NULL);
    /* edge-big sends no heartbeat: its sessions go after the edge timeout */
    int gone = 0;
    for (int i = 0; i < 100 && !gone; i++) {
        l = query(ids, 1);
        gone = l && l->n_users == 1 && l->users[0]->status == CHAT__V1__STATUS__STATUS_OFFLINE;
        chat__v1__presence_list__free_unpacked(l, NULL);
        if (!gone)
            sleep_ms(100);
    }
    CHECK(gone, "the silent edge's %d users were not dropped", N + 1);
    drain_changes();
}

static void test_shutdown(void)
{
    kill(presence_pid, SIGTERM);
    int st = presence_wait(10000);
    CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: want exit 0 (status %d)", st);
}

/* ---- the grace period: replicas a and b with PRESENCE_GRACE_MS ---- */

static pid_t rep_pid[2] = {-1, -1};
static const char *const rep_log[2] = {"presence-a.log", "presence-b.log"};
static long rep_from[2]; /* where the current life of each starts in its log */

/* Starts replica k (the shortest PRESENCE_FAILOVER_MS); returns 1 once its
 * log has ready_line. */
static int rep_start(int k, const char *ready_line)
{
    char grace[16];
    snprintf(grace, sizeof grace, "%d", GRACE_MS);
    rep_from[k] = log_size(rep_log[k]);
    rep_pid[k] = presence_spawn(rep_log[k], grace, "1000");
    return log_wait(rep_log[k], rep_from[k], ready_line, 10000);
}

static void rep_kill(int k)
{
    kill(rep_pid[k], SIGKILL);
    CHECK(child_wait(&rep_pid[k], 5000) != -1, "kill -9: replica %d did not die", k);
}

/* The one answer of a query about user: its status, with its lastSeen in
 * *last_seen; -1 when there is no such answer. */
static int query_one(const char *user, long long *last_seen)
{
    const char *ids[] = {user};
    Chat__V1__PresenceList *l = query(ids, 1);
    int st = l && l->n_users == 1 ? (int)l->users[0]->status : -1;
    if (st != -1 && last_seen)
        *last_seen = l->users[0]->last_seen_ms;
    chat__v1__presence_list__free_unpacked(l, NULL);
    return st;
}

/* The grace scenarios' sessions of e, as its heartbeats count them: a new
 * active re-learns an edge whose count disagrees with its roster, and these
 * fake edges do not re-announce. Counted once presence has the event (after
 * its reply; or under the edges' lock with a publish on the connection the
 * heartbeats take), so that a heartbeat never counts an event not sent yet;
 * one that counts an event sent just before is right at presence too. */
static void count_session(struct edge *e, int delta)
{
    pthread_mutex_lock(&edges_mu);
    e->open_sessions += (unsigned)delta;
    pthread_mutex_unlock(&edges_mu);
}

/* Opens a session of a new user (conn = its number) and takes its online;
 * returns that online's lastSeen, or -1. */
static long long grace_user(int n, char *user, const char *name, struct edge *e)
{
    uid(user, n);
    chat__v1__presence_list__free_unpacked(session(1, e, (unsigned long long)n, user, name, 0, 1), NULL);
    count_session(e, 1);
    struct change c;
    int got = expect_change(user, 2000, &c) && c.status == CHAT__V1__STATUS__STATUS_ONLINE;
    CHECK(got, "grace: %s did not come online", name);
    return got ? c.last_seen : -1;
}

/* Closes user's session n as a request: once it returns (the active's reply),
 * the active has applied it. *before and *after bracket it (Unix ms). */
static void grace_close(int n, const char *user, struct edge *e, long long *before, long long *after)
{
    *before = now_ms(CLOCK_REALTIME);
    Chat__V1__PresenceList *l = session(0, e, (unsigned long long)n, user, "", 0, 1);
    *after = now_ms(CLOCK_REALTIME);
    count_session(e, -1);
    CHECK(l != NULL, "grace: the close of %s was not answered", user);
    chat__v1__presence_list__free_unpacked(l, NULL);
}

/* The next change of user within timeout_ms must be its offline, GRACE_MS
 * after closed (monotonic ms) at the earliest and at most late_ms after that,
 * with a lastSeen in [from, to]; then nothing more for 1 s; the row says the
 * same. */
static void expect_grace_offline(const char *what, const char *user, const char *name, long long closed,
                                 long long from, long long to, long late_ms)
{
    struct change c;
    int got = expect_change(user, GRACE_MS + late_ms + 2000, &c);
    long long waited = got ? c.at - closed : -1;
    CHECK(got && c.status == CHAT__V1__STATUS__STATUS_OFFLINE, "%s: no offline (got %d, status %d)", what,
          got, got ? c.status : -1);
    CHECK(got && waited >= GRACE_MS - 20 && waited <= GRACE_MS + late_ms,
          "%s: offline %lld ms after the close, want %d to %ld", what, waited, GRACE_MS, GRACE_MS + late_ms);
    CHECK(got && c.last_seen >= from && c.last_seen <= to, "%s: lastSeen %lld, want the close (%lld to %lld)",
          what, got ? c.last_seen : -1, from, to);
    CHECK(count_changes(user, 1000) == 0, "%s: more than one change after the close", what);
    char row[256], want[256];
    row_of(user, row, sizeof row);
    snprintf(want, sizeof want, "%s|online|false|%lld", name, got ? c.last_seen : -1);
    CHECK(strcmp(row, want) == 0, "%s: row '%s', want '%s'", what, row, want);
    long long ls = -1;
    CHECK(query_one(user, &ls) == CHAT__V1__STATUS__STATUS_OFFLINE && got && ls == c.last_seen,
          "%s: a query does not answer offline with the broadcast lastSeen", what);
}

/* A user who comes back within the grace period: nothing is broadcast, not at
 * the close, not at the return, not when the grace would have ended; queries
 * and the row say online all along, with the lastSeen of the online. */
static char came_back[2][37]; /* the users of grace_within and grace_takeover_back */

static void grace_within(void)
{
    char *user = came_back[0], row[256], want[256];
    long long online_at = grace_user(9001, user, "gracie", &edges[0]), before, after, ls = -1;
    long long closed = now_ms(CLOCK_MONOTONIC);
    grace_close(9001, user, &edges[0], &before, &after);
    CHECK(query_one(user, &ls) == CHAT__V1__STATUS__STATUS_ONLINE && ls == online_at,
          "within the grace: a query does not say online as before (lastSeen %lld, want %lld)", ls,
          online_at);
    snprintf(want, sizeof want, "gracie|online|true|%lld", online_at);
    row_of(user, row, sizeof row);
    CHECK(strcmp(row, want) == 0, "within the grace: row '%s', want '%s'", row, want);
    sleep_ms(GRACE_MS / 2); /* the user's connection is down this long */
    Chat__V1__PresenceList *l = session(1, &edges[1], 9002, user, "gracie", 0, 1);
    count_session(&edges[1], 1);
    const Chat__V1__PresenceInfo *me = find(l, user);
    CHECK(me && me->status == CHAT__V1__STATUS__STATUS_ONLINE && me->last_seen_ms == online_at,
          "back within the grace: the reply's list does not show the user as before");
    chat__v1__presence_list__free_unpacked(l, NULL);
    long long wait = closed + GRACE_MS + 1000 - now_ms(CLOCK_MONOTONIC);
    CHECK(count_changes(user, wait > 0 ? wait : 0) == 0, "within the grace: a change was broadcast");
    CHECK(query_one(user, &ls) == CHAT__V1__STATUS__STATUS_ONLINE && ls == online_at,
          "after the grace: a query does not say online as before");
    row_of(user, row, sizeof row);
    CHECK(strcmp(row, want) == 0, "after the grace: row '%s', want '%s'", row, want);
}

/* A user who does not come back: offline once, GRACE_MS after the close,
 * lastSeen the close; nothing, and online in queries and the row, before. */
static void grace_past(void)
{
    char user[37], row[256], want[256];
    long long online_at = grace_user(9003, user, "gone", &edges[0]), before, after, ls = -1;
    long long closed = now_ms(CLOCK_MONOTONIC);
    grace_close(9003, user, &edges[0], &before, &after);
    CHECK(count_changes(user, GRACE_MS - 500) == 0, "past the grace: a change before the grace passed");
    CHECK(query_one(user, &ls) == CHAT__V1__STATUS__STATUS_ONLINE && ls == online_at,
          "past the grace: a query during it does not say online");
    snprintf(want, sizeof want, "gone|online|true|%lld", online_at);
    row_of(user, row, sizeof row);
    CHECK(strcmp(row, want) == 0, "past the grace: row during it '%s', want '%s'", row, want);
    expect_grace_offline("past the grace", user, "gone", closed, before - 5, after + 5, 600);
}

/* The active is killed while a user is in the grace period: the standby,
 * once active, ends it at the same deadline, with one offline. */
static void grace_takeover(int active)
{
    char user[37];
    grace_user(9004, user, "left", &edges[0]);
    long long closed = now_ms(CLOCK_MONOTONIC), before, after;
    grace_close(9004, user, &edges[0], &before, &after);
    sleep_ms(300); /* the standby hears the close too */
    rep_kill(active);
    /* the standby's own clock took the close: within a few ms of the active's */
    expect_grace_offline("takeover in the grace", user, "left", closed, before - 5, after + 300, 1500);
}

/* The active is killed while a user is in the grace period, and the user
 * comes back before anyone is active again: nothing is broadcast about them. */
static void grace_takeover_back(int active)
{
    char *user = came_back[1], row[256], want[256];
    long long online_at = grace_user(9005, user, "back", &edges[0]), before, after, ls = -1;
    long long closed = now_ms(CLOCK_MONOTONIC);
    grace_close(9005, user, &edges[0], &before, &after);
    sleep_ms(300);
    rep_kill(active);
    sleep_ms(500); /* the client reconnects while no replica is active */
    Chat__V1__SessionEvent se = CHAT__V1__SESSION_EVENT__INIT;
    se.kind = CHAT__V1__SESSION_EVENT__KIND__KIND_OPEN;
    se.edge_id = (char *)edges[2].id;
    se.conn_id = 9006;
    se.user_id = user;
    se.username = "back";
    uint8_t buf[512];
    pthread_mutex_lock(&edges_mu); /* the open and the count, in that order, before any heartbeat */
    se.boot_id = edges[2].boot;
    natsConnection_Publish(nc, "chat.presence.session", buf, (int)chat__v1__session_event__pack(&se, buf));
    edges[2].open_sessions++;
    pthread_mutex_unlock(&edges_mu);
    long long wait = closed + GRACE_MS + 1500 - now_ms(CLOCK_MONOTONIC);
    CHECK(count_changes(user, wait > 0 ? wait : 0) == 0, "back during the takeover: a change was broadcast");
    CHECK(log_wait(rep_log[!active], rep_from[!active], "took over", 100),
          "back during the takeover: no takeover logged");
    CHECK(query_one(user, &ls) == CHAT__V1__STATUS__STATUS_ONLINE && ls == online_at,
          "back during the takeover: a query does not say online as before");
    snprintf(want, sizeof want, "back|online|true|%lld", online_at);
    row_of(user, row, sizeof row);
    CHECK(strcmp(row, want) == 0, "back during the takeover: row '%s', want '%s'", row, want);
}

/* A replica started while a user is in the grace period takes it with the
 * state, then takes over: the offline comes at the same deadline, once. */
static void grace_transfer(int active)
{
    char user[37];
    grace_user(9007, user, "moved", &edges[0]);
    long long closed = now_ms(CLOCK_MONOTONIC), before, after;
    grace_close(9007, user, &edges[0], &before, &after);
    CHECK(rep_start(!active, "standby synced"), "transfer: the new replica did not sync");
    rep_kill(active);
    expect_grace_offline("transfer in the grace", user, "moved", closed, before - 5, after + 5, 1500);
}

static void test_grace(void)
{
    CHECK(rep_start(0, "resync requested"), "grace: replica a not active");
    /* the users the earlier tests left online in the table go offline first */
    CHECK(log_wait(rep_log[0], rep_from[0], "resync done", RESYNC_MS + 10000),
          "grace: replica a's resync not done");
    drain_changes();
    grace_within();
    grace_past();
    CHECK(rep_start(1, "standby synced"), "grace: replica b did not sync");
    grace_takeover(0); /* b active */
    CHECK(rep_start(0, "standby synced"), "grace: replica a, restarted, did not sync");
    grace_takeover_back(1); /* a active */
    grace_transfer(0);      /* b active */
    /* The users who came back: never a change since, online to the end. */
    for (int k = 0; k < 2; k++) {
        long long ls;
        CHECK(count_changes(came_back[k], 1000) == 0, "grace: %s, back, got a change later", came_back[k]);
        CHECK(query_one(came_back[k], &ls) == CHAT__V1__STATUS__STATUS_ONLINE,
              "grace: %s, back, not online at the end", came_back[k]);
    }
    kill(rep_pid[1], SIGTERM);
    int st = child_wait(&rep_pid[1], 10000);
    CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "grace: SIGTERM, want exit 0 (status %d)", st);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s PRESENCE_BIN WORKDIR\n", argv[0]);
        return 2;
    }
    presence_bin = argv[1];
    workdir = argv[2];
    nats_port = free_port();
    snprintf(nats_url, sizeof nats_url, "nats://127.0.0.1:%d", nats_port);
    natsOptions *opts = NULL;
    if (nats_start() != 0 || natsOptions_Create(&opts) != NATS_OK ||
        natsOptions_SetURL(opts, nats_url) != NATS_OK || natsOptions_SetMaxReconnect(opts, -1) != NATS_OK ||
        natsOptions_SetReconnectWait(opts, 100) != NATS_OK || natsConnection_Connect(&nc, opts) != NATS_OK ||
        natsConnection_SubscribeSync(&status_sub, nc, "chat.presence.status") != NATS_OK ||
        natsConnection_SubscribeSync(&resync_sub, nc, "chat.presence.resync") != NATS_OK) {
        fprintf(stderr, "cannot start or reach nats-server at %s\n", nats_url);
        nats_stop();
        return 2;
    }
    natsConnection_Flush(nc);
    uid(u1, 1), uid(u2, 2), uid(u3, 3), uid(u4, 4), uid(u5, 5), uid(u6, 6), uid(u7, 7), uid(u8, 8);
    uid(nobody, 99);

    pthread_t beater;
    pthread_create(&beater, NULL, beat, NULL);
    presence_start();
    char boot[64];
    int up = expect_resync(10000, boot, sizeof boot);
    CHECK(up, "start: no ResyncRequest within 10 s");
    if (up) {
        test_connect();
        test_two_sessions();
        test_set_status();
        test_query();
        test_edge_timeout();
        test_boot_change();
        test_bad_input();
        test_burst();
        test_backpressure();
        test_odd_usernames();
        test_restart();
        test_postgres_outage();
        test_outage_mid_burst();
        test_nats_outage();
        test_list_too_big();
        test_shutdown();
        test_grace();
    }
    stop_beating = 1;
    pthread_join(beater, NULL);
    if (presence_pid > 0) {
        kill(presence_pid, SIGKILL);
        presence_wait(5000);
    }
    for (int k = 0; k < 2; k++)
        if (rep_pid[k] > 0) {
            kill(rep_pid[k], SIGKILL);
            child_wait(&rep_pid[k], 5000);
        }
    natsSubscription_Destroy(status_sub);
    natsSubscription_Destroy(resync_sub);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(opts);
    nats_CloseAndWait(2000);
    nats_stop();
    printf("presence: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
