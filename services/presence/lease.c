/* lease: see lease.h. nats-server 2.9 expires a stream's messages MaxAge after
 * the time the stream leader stamped them (a timer per store, to the
 * millisecond; measured on a 3-node cluster with R3 file storage: gone 2,008 ms
 * after a 2,000 ms TTL's last write), and keeps one entry per key (History 1),
 * so the key dies ttl after its last renewal and creating it then succeeds.
 * kvStore_Create also succeeds over a delete marker, which is how a holder
 * that stops hands over at once. */
#include "lease.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bucket.h"
#include "log.h"
#include "mem.h"

struct lease {
    struct lease_config cfg;
    struct bus *bus;
    void (*on_change)(void *ctx);
    void *ctx;

    pthread_t thread;
    int running;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    int stop; /* under mu */

    /* The thread's own. */
    jsCtx *js;       /* renewals and attempts: a short wait, so that a slow one is retried */
    jsCtx *js_admin; /* creating or updating the bucket: a raft round on a cluster */
    kvStore *kv;
    int holding;    /* it wrote the key last, as far as it knows */
    uint64_t rev;   /* revision of that write */
    long long next; /* monotonic ms of the next renewal or attempt */

    atomic_llong valid_until; /* monotonic ms; 0: not held */
    atomic_ullong generation;
    atomic_int eager;
};

static long long mono_ms(void)
{
    return bucket_now_us() / 1000;
}

int lease_held(const struct lease *l)
{
    return mono_ms() < atomic_load(&l->valid_until);
}

uint64_t lease_generation(const struct lease *l)
{
    return atomic_load(&l->generation);
}

void lease_set_eager(struct lease *l, int eager)
{
    atomic_store(&l->eager, eager);
}

/* ---- the bucket ---- */

/* A bucket made with another ttl or replica count (the configuration
 * changed): its stream is updated in place. */
static natsStatus update_bucket(struct lease *l)
{
    char stream[128];
    snprintf(stream, sizeof stream, "KV_%s", l->cfg.bucket);
    jsStreamInfo *si = NULL, *after = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, l->js_admin, stream, NULL, &jerr);
    if (s == NATS_OK) {
        si->Config->MaxAge = (int64_t)l->cfg.ttl_ms * 1000000;
        si->Config->Duplicates = si->Config->MaxAge; /* may not exceed MaxAge */
        si->Config->Replicas = l->cfg.replicas;
        s = js_UpdateStream(&after, l->js_admin, si->Config, NULL, &jerr);
    }
    if (s != NATS_OK)
        log_warn("lease bucket %s not updated: %s (code %d)", l->cfg.bucket, natsStatus_GetText(s),
                 (int)jerr);
    jsStreamInfo_Destroy(after);
    jsStreamInfo_Destroy(si);
    return s;
}

static int ensure_bucket(struct lease *l)
{
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = l->cfg.bucket;
    kc.History = 1;
    kc.TTL = (int64_t)l->cfg.ttl_ms * 1000000;
    kc.StorageType = l->cfg.file_storage ? js_FileStorage : js_MemoryStorage;
    kc.Replicas = (int)l->cfg.replicas;
    kvStore_Destroy(l->kv);
    l->kv = NULL;
    kvStore *made = NULL;
    natsStatus s = js_CreateKeyValue(&made, l->js_admin, &kc);
    if (s != NATS_OK)
        s = update_bucket(l);
    kvStore_Destroy(made);
    if (s == NATS_OK) /* the store used from now on waits only ttl/4 */
        s = js_KeyValue(&l->kv, l->js, l->cfg.bucket);
    if (s != NATS_OK) {
        log_warn("lease bucket %s not ready: %s", l->cfg.bucket, natsStatus_GetText(s));
        kvStore_Destroy(l->kv);
        l->kv = NULL;
        return -1;
    }
    log_info("lease bucket %s ready ttl_ms=%ld replicas=%ld", l->cfg.bucket, l->cfg.ttl_ms, l->cfg.replicas);
    return 0;
}

/* ---- holding ---- */

static void changed(struct lease *l)
{
    if (l->on_change)
        l->on_change(l->ctx);
}

static void took(struct lease *l, uint64_t rev, long long sent)
{
    l->holding = 1;
    l->rev = rev;
    atomic_store(&l->valid_until, sent + l->cfg.ttl_ms - l->cfg.ttl_ms / 4);
    l->next = sent + l->cfg.ttl_ms / 4;
}

static void lost(struct lease *l, const char *why)
{
    int was = l->holding;
    l->holding = 0;
    atomic_store(&l->valid_until, 0);
    l->next = mono_ms(); /* try again at once: the key may be free */
    log_warn("lease lost: %s", why);
    if (was)
        changed(l);
}

/* The value of the key now: 1 and *rev when it is ours, 0 when another's,
 * -1 when there is none, -2 when it could not be read. */
static int read_key(struct lease *l, uint64_t *rev)
{
    kvEntry *e = NULL;
    natsStatus s = kvStore_Get(&e, l->kv, l->cfg.key);
    if (s == NATS_NOT_FOUND)
        return -1;
    if (s != NATS_OK)
        return -2;
    int ours = strcmp(kvEntry_ValueString(e), l->cfg.holder) == 0;
    *rev = kvEntry_Revision(e);
    kvEntry_Destroy(e);
    return ours;
}

static void renew(struct lease *l)
{
    long long sent = mono_ms();
    uint64_t rev = 0;
    natsStatus s = kvStore_Update(&rev, l->kv, l->cfg.key, l->cfg.holder, (int)strlen(l->cfg.holder), l->rev);
    if (s == NATS_OK) {
        took(l, rev, sent);
        return;
    }
    /* A renewal whose answer was lost may have been written: look. */
    int r = read_key(l, &rev);
    if (r == 1) {
        l->rev = rev;
        l->next = mono_ms(); /* write again now, knowing the revision */
    } else if (r == 0) {
        lost(l, "another replica holds it");
    } else if (r == -1 && kvStore_Create(&rev, l->kv, l->cfg.key, l->cfg.holder,
                                         (int)strlen(l->cfg.holder)) == NATS_OK) {
        took(l, rev, sent); /* still valid: nobody can have held it meanwhile */
    } else {
        l->next = mono_ms() + 50; /* NATS unreachable now: retry while still valid */
    }
}

/* No responders on the bucket's subjects: its stream was deleted (a NATS
 * server restarted without its store), or it is electing a leader after a
 * node died (4-9 s with nats-server 2.9). Only the first needs it made again. */
static int bucket_gone(struct lease *l)
{
    char stream[128];
    snprintf(stream, sizeof stream, "KV_%s", l->cfg.bucket);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, l->js_admin, stream, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    return s != NATS_OK && jerr == JSStreamNotFoundErr;
}

static void attempt(struct lease *l)
{
    long long sent = mono_ms();
    uint64_t rev = 0;
    int r = read_key(l, &rev);
    if (r == -1) {
        natsStatus s = kvStore_Create(&rev, l->kv, l->cfg.key, l->cfg.holder, (int)strlen(l->cfg.holder));
        if (s == NATS_OK) {
            took(l, rev, sent);
            atomic_fetch_add(&l->generation, 1);
            log_info("lease taken holder=%s", l->cfg.holder);
            changed(l);
            return;
        }
        if (s == NATS_NO_RESPONDERS && bucket_gone(l)) { /* else: its stream elects a leader */
            kvStore_Destroy(l->kv);
            l->kv = NULL;
        }
    }
    long long period = atomic_load(&l->eager) ? l->cfg.poll_ms : l->cfg.ttl_ms / 2;
    l->next = mono_ms() + period;
}

/* ---- the thread ---- */

static void wait_until(struct lease *l, long long when)
{
    long long now = mono_ms();
    if (when <= now)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long ns = (long long)ts.tv_nsec + (when - now) * 1000000;
    ts.tv_sec += (time_t)(ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    pthread_mutex_lock(&l->mu);
    while (!l->stop && pthread_cond_timedwait(&l->wake, &l->mu, &ts) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&l->mu);
}

static int stopping(struct lease *l)
{
    pthread_mutex_lock(&l->mu);
    int stop = l->stop;
    pthread_mutex_unlock(&l->mu);
    return stop;
}

static void *lease_main(void *arg)
{
    struct lease *l = arg;
    while (!stopping(l)) {
        long long now = mono_ms();
        if (l->holding && !lease_held(l))
            lost(l, "not renewed in time");
        if (!l->kv && (!bus_connected(l->bus) || ensure_bucket(l) != 0)) {
            wait_until(l, now + 250);
            continue;
        }
        if (now >= l->next) {
            if (l->holding)
                renew(l);
            else
                attempt(l);
        }
        long long when = l->next;
        long long valid = atomic_load(&l->valid_until);
        if (l->holding && valid < when)
            when = valid;
        wait_until(l, when);
    }
    return NULL;
}

struct lease *lease_create(const struct lease_config *cfg, struct bus *bus, void (*on_change)(void *ctx),
                           void *ctx)
{
    struct lease *l = xcalloc(1, sizeof *l);
    l->cfg = *cfg;
    l->bus = bus;
    l->on_change = on_change;
    l->ctx = ctx;
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->wake, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&l->valid_until, 0);
    atomic_init(&l->generation, 0);
    atomic_init(&l->eager, 0);
    return l;
}

int lease_start(struct lease *l)
{
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = l->cfg.ttl_ms / 4; /* a renewal that takes longer is retried */
    natsStatus s = natsConnection_JetStream(&l->js, l->bus->nc, &jo);
    jo.Wait = 5000;
    if (s == NATS_OK)
        s = natsConnection_JetStream(&l->js_admin, l->bus->nc, &jo);
    if (s != NATS_OK) {
        log_error("jetstream context: %s", natsStatus_GetText(s));
        return -1;
    }
    int err = pthread_create(&l->thread, NULL, lease_main, l);
    if (err != 0) {
        log_error("lease thread: %s", strerror(err));
        return -1;
    }
    l->running = 1;
    return 0;
}

void lease_stop(struct lease *l, int release)
{
    if (!l || !l->running)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_signal(&l->wake);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    l->running = 0;
    if (release && l->kv && lease_held(l)) {
        atomic_store(&l->valid_until, 0);
        natsStatus s = kvStore_Delete(l->kv, l->cfg.key);
        if (s == NATS_OK)
            log_info("lease released");
        else
            log_warn("lease not released: %s", natsStatus_GetText(s));
    }
    /* They hold the connection: gone before it closes. */
    kvStore_Destroy(l->kv);
    l->kv = NULL;
    jsCtx_Destroy(l->js);
    jsCtx_Destroy(l->js_admin);
    l->js = l->js_admin = NULL;
}

void lease_destroy(struct lease *l)
{
    if (!l)
        return;
    kvStore_Destroy(l->kv); /* when never stopped */
    jsCtx_Destroy(l->js);
    jsCtx_Destroy(l->js_admin);
    pthread_cond_destroy(&l->wake);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
