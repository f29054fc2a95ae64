/* bucket: a token bucket (rate tokens per second, at most burst in the
 * bucket) and the monotonic clock it runs on. Pure apart from the clock. */
#ifndef BUCKET_H
#define BUCKET_H

struct bucket {
    double tokens;
    long long last_us; /* 0: new (full) */
};

/* Takes one token at now_us; returns 1, or 0 when the bucket is empty. */
int bucket_take(struct bucket *b, double rate, double burst, long long now_us);
/* Microseconds of CLOCK_MONOTONIC. */
long long bucket_now_us(void);

#endif
