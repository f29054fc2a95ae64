/* abuse: per-address state lives in a map from the address to its open
 * sessions and its handshake bucket. An entry with no session is dropped once
 * its bucket has refilled, so the table holds only addresses seen recently;
 * it is also capped (ABUSE_MAX_ADDRESSES), past which new addresses are
 * refused rather than tracked without bound. */
#include "abuse.h"

#include <stdlib.h>
#include <time.h>

#include "edge.h"
#include "log.h"
#include "mem.h"

#define ABUSE_MAX_ADDRESSES 200000

struct peer {
    int sessions;
    struct abuse_bucket handshakes;
};

long long abuse_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int abuse_take(struct abuse_bucket *b, double rate, double burst, long long now_us)
{
    if (b->last_us == 0) {
        b->tokens = burst;
    } else {
        b->tokens += (double)(now_us - b->last_us) * rate / 1e6;
        if (b->tokens > burst)
            b->tokens = burst;
    }
    b->last_us = now_us;
    if (b->tokens < 1.0)
        return 0;
    b->tokens -= 1.0;
    return 1;
}

/* Drops idle entries whose bucket is full again (called when the table
 * grows). */
static void sweep(struct edge *e, long long now)
{
    double rate = (double)e->cfg->handshakes_per_s, burst = rate * 2;
    if (rate <= 0)
        rate = burst = 1; /* no bucket: any idle entry goes */
    size_t i;
    struct map_entry *m = map_first(&e->peers, &i);
    while (m) {
        struct map_entry *next = map_next(&e->peers, m, &i);
        struct peer *p = m->value;
        if (p->sessions == 0 &&
            p->handshakes.tokens + (double)(now - p->handshakes.last_us) * rate / 1e6 >= burst) {
            map_del(&e->peers, m->key); /* next stays valid: it is another entry */
            free(p);
        }
        m = next;
    }
}

int abuse_admit(struct edge *e, const char *ip)
{
    if (e->cfg->max_conn_per_ip == 0 && e->cfg->handshakes_per_s == 0)
        return 0; /* off: behind a proxy every client has its address */
    long long now = abuse_now_us();
    struct peer *p = map_get(&e->peers, ip);
    if (!p) {
        if (e->peers.count >= ABUSE_MAX_ADDRESSES / 2)
            sweep(e, now);
        if (e->peers.count >= ABUSE_MAX_ADDRESSES) {
            log_warn("abuse: address table full; refusing %s", ip);
            return -1;
        }
        p = xcalloc(1, sizeof *p);
        map_put(&e->peers, ip, p);
    }
    if (e->cfg->max_conn_per_ip > 0 && p->sessions >= e->cfg->max_conn_per_ip) {
        log_info("abuse: too many sessions from %s (%d)", ip, p->sessions);
        return -1;
    }
    double rate = (double)e->cfg->handshakes_per_s;
    if (rate > 0 && !abuse_take(&p->handshakes, rate, rate * 2, now)) {
        log_info("abuse: handshakes too fast from %s", ip);
        return -1;
    }
    p->sessions++;
    return 0;
}

void abuse_release(struct edge *e, const char *ip)
{
    struct peer *p = map_get(&e->peers, ip);
    if (p && p->sessions > 0)
        p->sessions--;
}

void abuse_cleanup(struct edge *e)
{
    size_t i;
    struct map_entry *m;
    while ((m = map_first(&e->peers, &i)))
        free(map_del(&e->peers, m->key));
    map_cleanup(&e->peers);
}
