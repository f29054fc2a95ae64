/* histq: see histq.h. A user's state lives while it has queries queued or
 * running, or its bucket is still refilling; idle users are swept when the
 * table has doubled since the last sweep, so its size follows the users of
 * the last few seconds. */
#include "histq.h"

#include <stdlib.h>
#include <string.h>

#include "map.h"
#include "mem.h"

struct hq_node {
    struct hq_node *next;
    void *item;
};

struct hq_user {
    struct hq_user *ring_next; /* in the round-robin ring while queued > 0 */
    struct hq_node *head, *tail;
    long queued, running;
    double tokens; /* per_s bucket */
    long long last_ms;
    char id[];
};

struct histq {
    struct histq_limits lim;
    struct map users;                      /* id -> struct hq_user */
    struct hq_user *ring_head, *ring_tail; /* users with queued queries, in turn order */
    size_t queued;
    size_t sweep_at; /* sweep idle users when the table reaches this size */
};

#define SWEEP_MIN 1024

struct histq *histq_create(const struct histq_limits *lim)
{
    struct histq *q = xcalloc(1, sizeof *q);
    q->lim = *lim;
    map_init(&q->users);
    q->sweep_at = SWEEP_MIN;
    return q;
}

void histq_destroy(struct histq *q, void (*free_item)(void *item))
{
    if (!q)
        return;
    size_t i;
    for (struct map_entry *e = map_first(&q->users, &i); e; e = map_next(&q->users, e, &i)) {
        struct hq_user *u = e->value;
        for (struct hq_node *n = u->head, *next; n; n = next) {
            next = n->next;
            if (free_item)
                free_item(n->item);
            free(n);
        }
        free(u);
    }
    map_cleanup(&q->users);
    free(q);
}

static double burst(const struct histq *q)
{
    return 2.0 * (double)q->lim.per_s;
}

static void refill(const struct histq *q, struct hq_user *u, long long now_ms)
{
    if (q->lim.per_s <= 0)
        return;
    if (now_ms > u->last_ms)
        u->tokens += (double)(now_ms - u->last_ms) * (double)q->lim.per_s / 1000.0;
    if (u->tokens > burst(q))
        u->tokens = burst(q);
    u->last_ms = now_ms;
}

/* Idle: nothing queued or running, and a bucket that is full again. */
static int idle(const struct histq *q, struct hq_user *u, long long now_ms)
{
    if (u->queued || u->running)
        return 0;
    refill(q, u, now_ms);
    return q->lim.per_s <= 0 || u->tokens >= burst(q);
}

static void sweep(struct histq *q, long long now_ms)
{
    size_t i, n = 0;
    struct hq_user **gone = xcalloc(q->users.count ? q->users.count : 1, sizeof *gone);
    for (struct map_entry *e = map_first(&q->users, &i); e; e = map_next(&q->users, e, &i))
        if (idle(q, e->value, now_ms))
            gone[n++] = e->value;
    for (size_t k = 0; k < n; k++) {
        map_del(&q->users, gone[k]->id);
        free(gone[k]);
    }
    free(gone);
    q->sweep_at = q->users.count * 2 > SWEEP_MIN ? q->users.count * 2 : SWEEP_MIN;
}

static struct hq_user *user_get(struct histq *q, const char *id, long long now_ms)
{
    struct hq_user *u = map_get(&q->users, id);
    if (u)
        return u;
    if (q->users.count >= q->sweep_at)
        sweep(q, now_ms);
    size_t len = strlen(id);
    u = xcalloc(1, sizeof *u + len + 1);
    memcpy(u->id, id, len + 1);
    u->tokens = burst(q);
    u->last_ms = now_ms;
    map_put(&q->users, u->id, u);
    return u;
}

enum histq_verdict histq_push(struct histq *q, const char *user, void *item, long long now_ms,
                              long long *retry_ms)
{
    struct hq_user *u = user_get(q, user, now_ms);
    *retry_ms = 0;
    refill(q, u, now_ms);
    if (q->lim.per_s > 0 && u->tokens < 1.0) {
        *retry_ms = (long long)((1.0 - u->tokens) * 1000.0 / (double)q->lim.per_s) + 1;
        return HISTQ_USER_RATE;
    }
    if (q->lim.per_user > 0 && u->queued + u->running >= q->lim.per_user)
        return HISTQ_USER_BUSY;
    if (q->queued >= (size_t)q->lim.max_queued)
        return HISTQ_FULL;
    if (q->lim.per_s > 0)
        u->tokens -= 1.0;
    struct hq_node *n = xcalloc(1, sizeof *n);
    n->item = item;
    if (u->tail)
        u->tail->next = n;
    else
        u->head = n;
    u->tail = n;
    if (u->queued++ == 0) { /* joins the ring at the back: its turn comes after the others' */
        if (q->ring_tail)
            q->ring_tail->ring_next = u;
        else
            q->ring_head = u;
        q->ring_tail = u;
    }
    q->queued++;
    return HISTQ_OK;
}

void *histq_pop(struct histq *q, const char **user)
{
    struct hq_user *u = q->ring_head;
    if (!u)
        return NULL;
    q->ring_head = u->ring_next;
    if (!q->ring_head)
        q->ring_tail = NULL;
    u->ring_next = NULL;
    struct hq_node *n = u->head;
    u->head = n->next;
    if (!u->head)
        u->tail = NULL;
    void *item = n->item;
    free(n);
    q->queued--;
    u->running++;
    if (--u->queued > 0) { /* more to do: back of the line */
        if (q->ring_tail)
            q->ring_tail->ring_next = u;
        else
            q->ring_head = u;
        q->ring_tail = u;
    }
    *user = u->id;
    return item;
}

void histq_done(struct histq *q, const char *user, long long now_ms)
{
    struct hq_user *u = map_get(&q->users, user);
    if (!u || u->running <= 0)
        return;
    u->running--;
    if (idle(q, u, now_ms)) {
        map_del(&q->users, u->id);
        free(u);
    }
}

size_t histq_queued(const struct histq *q)
{
    return q->queued;
}

size_t histq_users(const struct histq *q)
{
    return q->users.count;
}
