/* guard: see guard.h. Ids are compared lowercased (ids_uuid_norm), as
 * PostgreSQL prints them. The cache of known ids is shared by the partition
 * workers (one mutex, held for lookups only, never during a query); each
 * partition's quota is its worker's alone. */
#include "guard.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ids.h"
#include "mem.h"
#include "quota.h"
#include "seen.h"

/* Known ids per generation: two generations of 32,768 ids are a few MB. */
#define SEEN_PER_GEN 32768

struct guard {
    struct guard_config cfg;
    pthread_mutex_t seen_mu;
    struct seen *seen;
    struct quota **quotas; /* one per partition; NULL without a quota */
    unsigned partitions;
};

typedef char uuid_str[IDS_UUID_LEN + 1];

struct guard *guard_create(const struct guard_config *cfg, unsigned partitions)
{
    struct guard *g = xcalloc(1, sizeof *g);
    g->cfg = *cfg;
    pthread_mutex_init(&g->seen_mu, NULL);
    g->seen = seen_create(SEEN_PER_GEN);
    g->partitions = partitions;
    g->quotas = xcalloc(partitions, sizeof *g->quotas);
    struct quota_limits lim = {cfg->per_min, cfg->per_day};
    for (unsigned i = 0; i < partitions && (cfg->per_min > 0 || cfg->per_day > 0); i++)
        g->quotas[i] = quota_create(&lim);
    return g;
}

void guard_destroy(struct guard *g)
{
    if (!g)
        return;
    for (unsigned i = 0; i < g->partitions; i++)
        quota_destroy(g->quotas[i]);
    free(g->quotas);
    seen_destroy(g->seen);
    pthread_mutex_destroy(&g->seen_mu);
    free(g);
}

void guard_taken(struct guard *g, unsigned partition)
{
    if (partition < g->partitions && g->quotas[partition])
        quota_reset(g->quotas[partition]);
}

/* Marks the sends whose recipient was never seen. One query for the
 * recipients the cache does not hold. */
static int check_recipients(struct guard *g, struct store *st, const struct store_msg *in, int n,
                            enum guard_verdict *verdict)
{
    uuid_str *ids = xcalloc((size_t)n, sizeof *ids);
    const char **ask = xcalloc((size_t)n, sizeof *ask);
    int *which = xcalloc((size_t)n, sizeof *which), *known = xcalloc((size_t)n, sizeof *known);
    int na = 0, rc = 0;
    pthread_mutex_lock(&g->seen_mu);
    for (int i = 0; i < n; i++) {
        ids_uuid_norm(ids[i], in[i].recipient, strlen(in[i].recipient));
        if (!seen_has(g->seen, ids[i])) {
            which[na] = i;
            ask[na++] = ids[i];
        }
    }
    pthread_mutex_unlock(&g->seen_mu);
    if (na > 0 && (rc = store_known_users(st, ask, na, known)) == 0) {
        pthread_mutex_lock(&g->seen_mu);
        for (int j = 0; j < na; j++)
            if (known[j])
                seen_add(g->seen, ask[j]);
        pthread_mutex_unlock(&g->seen_mu);
        for (int j = 0; j < na; j++)
            if (!known[j])
                verdict[which[j]] = GUARD_UNKNOWN_RECIPIENT;
    }
    free(ids);
    free(ask);
    free(which);
    free(known);
    return rc;
}

/* Loads the day counts of the senders this partition's quota does not hold
 * (one query), then charges each send still allowed, in order. */
static int check_quota(struct guard *g, struct quota *q, struct store *st, const struct store_msg *in, int n,
                       long long now_ms, enum guard_verdict *verdict, long long *retry_ms)
{
    uuid_str *ids = xcalloc((size_t)n, sizeof *ids);
    const char **ask = xcalloc((size_t)n, sizeof *ask);
    long *counts = xcalloc((size_t)n, sizeof *counts);
    int na = 0, rc = 0;
    for (int i = 0; i < n; i++) {
        ids_uuid_norm(ids[i], in[i].sender, strlen(in[i].sender));
        if (!quota_needs_load(q, ids[i]))
            continue;
        int dup = 0;
        for (int j = 0; j < na && !dup; j++)
            dup = strcmp(ask[j], ids[i]) == 0;
        if (!dup)
            ask[na++] = ids[i];
    }
    char day[11];
    if (na > 0 && guard_count_day(g, now_ms, day) && (rc = store_quota_counts(st, ask, na, day, counts)) == 0)
        for (int j = 0; j < na; j++)
            quota_load(q, ask[j], counts[j], now_ms);
    for (int i = 0; rc == 0 && i < n; i++) {
        if (verdict[i] != GUARD_OK)
            continue;
        long long wait = quota_take(q, ids[i], now_ms);
        if (wait > 0) {
            verdict[i] = GUARD_QUOTA;
            retry_ms[i] = wait;
        }
    }
    free(ids);
    free(ask);
    free(counts);
    return rc;
}

int guard_check(struct guard *g, unsigned partition, struct store *st, const struct store_msg *in, int n,
                long long now_ms, enum guard_verdict *verdict, long long *retry_ms)
{
    for (int i = 0; i < n; i++) {
        verdict[i] = GUARD_OK;
        retry_ms[i] = 0;
    }
    if (g->cfg.require_known && check_recipients(g, st, in, n, verdict) != 0)
        return -1;
    struct quota *q = partition < g->partitions ? g->quotas[partition] : NULL;
    if (q && check_quota(g, q, st, in, n, now_ms, verdict, retry_ms) != 0)
        return -1;
    return 0;
}

void guard_refund(struct guard *g, unsigned partition, const char *sender, long long now_ms)
{
    struct quota *q = partition < g->partitions ? g->quotas[partition] : NULL;
    uuid_str id;
    if (q && ids_uuid_norm(id, sender, strlen(sender)) == 0)
        quota_refund(q, id, now_ms);
}

const char *guard_count_day(const struct guard *g, long long now_ms, char *buf)
{
    if (g->cfg.per_day <= 0)
        return NULL;
    quota_day(buf, now_ms);
    return buf;
}
