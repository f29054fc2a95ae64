/* bucket: see bucket.h. */
#include "bucket.h"

#include <time.h>

long long bucket_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int bucket_take(struct bucket *b, double rate, double burst, long long now_us)
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
