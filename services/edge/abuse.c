/* abuse: per-address state lives in a map from the address to its open
 * sessions and its handshake bucket. An entry with no session is dropped once
 * its bucket has refilled, so the table holds only addresses seen recently;
 * it is also capped (ABUSE_MAX_ADDRESSES), past which new addresses are
 * refused rather than tracked without bound. */
#include "abuse.h"

#include <stdlib.h>

#include "bucket.h"
#include "log.h"
#include "mem.h"

#define ABUSE_MAX_ADDRESSES 200000

struct peer {
    int sessions;
    struct bucket handshakes;
};

void abuse_init(struct abuse *a, long max_conn_per_ip, long handshakes_per_s)
{
    a->max_conn_per_ip = max_conn_per_ip;
    a->handshakes_per_s = handshakes_per_s;
    map_init(&a->peers);
}

/* Drops idle entries whose bucket is full again (called when the table
 * grows). */
static void sweep(struct abuse *a, long long now)
{
    double rate = (double)a->handshakes_per_s, burst = rate * 2;
    if (rate <= 0)
        rate = burst = 1; /* no bucket: any idle entry goes */
    size_t i;
    struct map_entry *m = map_first(&a->peers, &i);
    while (m) {
        struct map_entry *next = map_next(&a->peers, m, &i);
        struct peer *p = m->value;
        if (p->sessions == 0 &&
            p->handshakes.tokens + (double)(now - p->handshakes.last_us) * rate / 1e6 >= burst) {
            map_del(&a->peers, m->key); /* next stays valid: it is another entry */
            free(p);
        }
        m = next;
    }
}

int abuse_admit(void *ctx, const char *ip)
{
    struct abuse *a = ctx;
    if (a->max_conn_per_ip == 0 && a->handshakes_per_s == 0)
        return 0; /* off: behind a proxy every client has its address */
    long long now = bucket_now_us();
    struct peer *p = map_get(&a->peers, ip);
    if (!p) {
        if (a->peers.count >= ABUSE_MAX_ADDRESSES / 2)
            sweep(a, now);
        if (a->peers.count >= ABUSE_MAX_ADDRESSES) {
            log_limited(LOG_WARN, "abuse: address table full; refusing %s", ip);
            return -1;
        }
        p = xcalloc(1, sizeof *p);
        map_put(&a->peers, ip, p);
    }
    if (a->max_conn_per_ip > 0 && p->sessions >= a->max_conn_per_ip) {
        log_limited(LOG_INFO, "abuse: too many sessions from %s (%d)", ip, p->sessions);
        return -1;
    }
    double rate = (double)a->handshakes_per_s;
    if (rate > 0 && !bucket_take(&p->handshakes, rate, rate * 2, now)) {
        log_limited(LOG_INFO, "abuse: handshakes too fast from %s", ip);
        return -1;
    }
    p->sessions++;
    return 0;
}

void abuse_release(void *ctx, const char *ip)
{
    struct abuse *a = ctx;
    struct peer *p = map_get(&a->peers, ip);
    if (p && p->sessions > 0)
        p->sessions--;
}

void abuse_cleanup(struct abuse *a)
{
    size_t i;
    struct map_entry *m;
    while ((m = map_first(&a->peers, &i)))
        free(map_del(&a->peers, m->key));
    map_cleanup(&a->peers);
}
