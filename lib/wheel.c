/* wheel: see wheel.h. A timer sits in the slot of its due ("late") tick.
 * Serving tick T fires the timers of the slots up to T whose due tick has come
 * (the others belong to a later revolution), then looks WHEEL_MAX_SLACK slots
 * ahead for timers whose early tick has come: those fire now too, inside their
 * window, so that close periodic timers share one wakeup. */
#include "wheel.h"

#include <stdint.h>
#include <string.h>

#define MASK (WHEEL_SLOTS - 1)

static void unlink_timer(struct wheel_timer *t)
{
    *t->pprev = t->next;
    if (t->next)
        t->next->pprev = t->pprev;
    t->next = NULL;
    t->pprev = NULL;
}

static void push(struct wheel_timer **head, struct wheel_timer *t)
{
    t->next = *head;
    if (t->next)
        t->next->pprev = &t->next;
    t->pprev = head;
    *head = t;
}

void wheel_init(struct wheel *w, int64_t now_us)
{
    memset(w, 0, sizeof *w);
    w->cursor = now_us / WHEEL_TICK_US;
}

void wheel_schedule(struct wheel *w, struct wheel_timer *t, wheel_cb cb, int64_t now_us, int64_t delay_us,
                    int how)
{
    wheel_cancel(w, t);
    if (delay_us < 0)
        delay_us = 0;
    /* Rounded down: at most a tick early, never late. */
    int64_t late = (now_us + delay_us) / WHEEL_TICK_US;
    if (late <= w->cursor)
        late = w->cursor + 1; /* served ticks are behind us */
    int64_t slack = 0;
    if (how == WHEEL_EARLY) {
        slack = delay_us / WHEEL_TICK_US / 16;
        if (slack > WHEEL_MAX_SLACK)
            slack = WHEEL_MAX_SLACK;
    }
    t->late = late;
    t->early = late - slack;
    t->cb = cb;
    push(&w->slots[late & MASK], t);
    w->count++;
}

void wheel_cancel(struct wheel *w, struct wheel_timer *t)
{
    if (!t->pprev)
        return;
    unlink_timer(t);
    w->count--;
}

/* Moves the timers of slot s that pass the test to the expired list. */
static void collect(struct wheel *w, size_t s, int64_t now_tick, int by_early, struct wheel_timer **expired)
{
    struct wheel_timer *t = w->slots[s];
    while (t) {
        struct wheel_timer *next = t->next;
        if ((by_early ? t->early : t->late) <= now_tick) {
            unlink_timer(t);
            push(expired, t);
        }
        t = next;
    }
}

size_t wheel_advance(struct wheel *w, int64_t now_us)
{
    int64_t now_tick = now_us / WHEEL_TICK_US;
    if (now_tick <= w->cursor)
        return 0;
    struct wheel_timer *expired = NULL;
    int64_t from = w->cursor + 1;
    if (now_tick - from >= WHEEL_SLOTS)
        from = now_tick - WHEEL_SLOTS + 1; /* one revolution visits every slot */
    for (int64_t k = from; k <= now_tick; k++)
        collect(w, (size_t)(k & MASK), now_tick, 0, &expired);
    for (int64_t k = now_tick + 1; k <= now_tick + WHEEL_MAX_SLACK; k++)
        collect(w, (size_t)(k & MASK), now_tick, 1, &expired);
    w->cursor = now_tick;
    size_t fired = 0;
    while (expired) { /* a callback may cancel a timer still in this list */
        struct wheel_timer *t = expired;
        unlink_timer(t);
        w->count--;
        fired++;
        t->cb(t);
    }
    return fired;
}

int64_t wheel_next_us(const struct wheel *w, int64_t now_us)
{
    if (w->count == 0)
        return -1;
    int64_t best = INT64_MAX;
    for (int64_t k = w->cursor + 1; k <= w->cursor + WHEEL_SLOTS && best > k; k++)
        for (const struct wheel_timer *t = w->slots[k & MASK]; t; t = t->next)
            if (t->late < best)
                best = t->late;
    int64_t us = best * WHEEL_TICK_US - now_us;
    return us > 0 ? us : 0;
}
