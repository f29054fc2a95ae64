/* quota: see quota.h. Times are Unix milliseconds; a UTC day is
 * floor(ms / 86,400,000). */
#include "quota.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "map.h"
#include "mem.h"

#define MS_PER_MIN 60000LL
#define MS_PER_DAY 86400000LL
#define SWEEP_MIN 1024

struct sender {
    double tokens;     /* minute bucket */
    long long last_ms; /* last refill (and last use) */
    long long day;     /* UTC day of day_count */
    long day_count;    /* sends stored that day */
    char id[];
};

struct quota {
    struct quota_limits lim;
    struct map senders; /* id -> struct sender */
    size_t sweep_at;
};

struct quota *quota_create(const struct quota_limits *lim)
{
    struct quota *q = xcalloc(1, sizeof *q);
    q->lim = *lim;
    map_init(&q->senders);
    q->sweep_at = SWEEP_MIN;
    return q;
}

static void free_senders(struct quota *q)
{
    size_t i;
    for (struct map_entry *e = map_first(&q->senders, &i); e; e = map_next(&q->senders, e, &i))
        free(e->value);
    map_cleanup(&q->senders);
}

void quota_reset(struct quota *q)
{
    free_senders(q);
    map_init(&q->senders);
    q->sweep_at = SWEEP_MIN;
}

void quota_destroy(struct quota *q)
{
    if (!q)
        return;
    free_senders(q);
    free(q);
}

static void refill(const struct quota *q, struct sender *s, long long now_ms)
{
    if (q->lim.per_min > 0 && now_ms > s->last_ms) {
        s->tokens += (double)(now_ms - s->last_ms) * (double)q->lim.per_min / (double)MS_PER_MIN;
        if (s->tokens > (double)q->lim.per_min)
            s->tokens = (double)q->lim.per_min;
    }
    if (now_ms > s->last_ms)
        s->last_ms = now_ms;
    if (now_ms / MS_PER_DAY != s->day) { /* a new day: nobody else stored for it while this owner held on */
        s->day = now_ms / MS_PER_DAY;
        s->day_count = 0;
    }
}

/* Idle a minute: its bucket is full again and its day count is in
 * PostgreSQL; forgetting it costs one load when it sends again. */
static void sweep(struct quota *q, long long now_ms)
{
    size_t i, n = 0;
    struct sender **gone = xcalloc(q->senders.count ? q->senders.count : 1, sizeof *gone);
    for (struct map_entry *e = map_first(&q->senders, &i); e; e = map_next(&q->senders, e, &i)) {
        struct sender *s = e->value;
        if (now_ms - s->last_ms >= MS_PER_MIN)
            gone[n++] = s;
    }
    for (size_t k = 0; k < n; k++) {
        map_del(&q->senders, gone[k]->id);
        free(gone[k]);
    }
    free(gone);
    q->sweep_at = q->senders.count * 2 > SWEEP_MIN ? q->senders.count * 2 : SWEEP_MIN;
}

static struct sender *sender_get(struct quota *q, const char *id, long long now_ms)
{
    struct sender *s = map_get(&q->senders, id);
    if (s)
        return s;
    if (q->senders.count >= q->sweep_at)
        sweep(q, now_ms);
    size_t len = strlen(id);
    s = xcalloc(1, sizeof *s + len + 1);
    memcpy(s->id, id, len + 1);
    s->tokens = (double)q->lim.per_min;
    s->last_ms = now_ms;
    s->day = now_ms / MS_PER_DAY;
    map_put(&q->senders, s->id, s);
    return s;
}

int quota_needs_load(struct quota *q, const char *sender)
{
    return q->lim.per_day > 0 && !map_get(&q->senders, sender);
}

void quota_load(struct quota *q, const char *sender, long count, long long now_ms)
{
    struct sender *s = sender_get(q, sender, now_ms);
    refill(q, s, now_ms);
    s->day_count = count;
}

long long quota_take(struct quota *q, const char *sender, long long now_ms)
{
    if (q->lim.per_min <= 0 && q->lim.per_day <= 0)
        return 0;
    struct sender *s = sender_get(q, sender, now_ms);
    refill(q, s, now_ms);
    long long wait = 0;
    if (q->lim.per_min > 0 && s->tokens < 1.0)
        wait = (long long)((1.0 - s->tokens) * (double)MS_PER_MIN / (double)q->lim.per_min) + 1;
    if (q->lim.per_day > 0 && s->day_count >= q->lim.per_day) {
        long long midnight = (s->day + 1) * MS_PER_DAY - now_ms;
        if (midnight > wait)
            wait = midnight;
    }
    if (wait > 0)
        return wait;
    if (q->lim.per_min > 0)
        s->tokens -= 1.0;
    s->day_count++;
    return 0;
}

void quota_refund(struct quota *q, const char *sender, long long now_ms)
{
    struct sender *s = map_get(&q->senders, sender);
    if (!s)
        return;
    refill(q, s, now_ms);
    if (q->lim.per_min > 0 && s->tokens + 1.0 <= (double)q->lim.per_min)
        s->tokens += 1.0;
    if (s->day_count > 0)
        s->day_count--;
}

size_t quota_senders(const struct quota *q)
{
    return q->senders.count;
}

void quota_day(char *out, long long now_ms)
{
    time_t t = (time_t)(now_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    if (strftime(out, 11, "%Y-%m-%d", &tm) == 0)
        out[0] = '\0';
}
