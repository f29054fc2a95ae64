/* abuse: abuse limits of the edge: Engine.IO sessions and handshakes per
 * client address, and the token bucket that paces each socket's events.
 * Lws thread only. */
#ifndef ABUSE_H
#define ABUSE_H

struct edge;

/* A token bucket: rate tokens per second, at most burst in the bucket. */
struct abuse_bucket {
    double tokens;
    long long last_us; /* 0: new (full) */
};

/* Takes one token; returns 1, or 0 when the bucket is empty. */
int abuse_take(struct abuse_bucket *b, double rate, double burst, long long now_us);
long long abuse_now_us(void);

/* A new session from ip: 0, or -1 when ip already holds EDGE_MAX_CONN_PER_IP
 * sessions or opens them faster than EDGE_HANDSHAKES_PER_S. On 0 the caller
 * must abuse_release(ip) when the session ends. */
int abuse_admit(struct edge *e, const char *ip);
void abuse_release(struct edge *e, const char *ip);
/* Frees the table (shutdown). */
void abuse_cleanup(struct edge *e);

#endif
