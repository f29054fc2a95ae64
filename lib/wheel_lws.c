/* wheel_lws: the edge's wheel driven by one lws timer on the service thread
 * (wheel.h). The lws timer is set for the earliest late tick; serving it
 * fires what is due and sets it again. */
#include <libwebsockets.h>
#include <stdlib.h>

#include "mem.h"
#include "wheel.h"

struct wheel_lws {
    lws_sorted_usec_list_t sul;
    struct lws_context *ctx;
    struct wheel *w;
    int64_t armed; /* the tick the lws timer is set for, -1 = none */
};

static void on_sul(lws_sorted_usec_list_t *sul);

static void arm(struct wheel_lws *l, int64_t now_us)
{
    int64_t us = wheel_next_us(l->w, now_us);
    if (us < 0) {
        lws_sul_cancel(&l->sul);
        l->armed = -1;
        return;
    }
    l->armed = (now_us + us) / WHEEL_TICK_US;
    lws_sul_schedule(l->ctx, 0, &l->sul, on_sul, us ? us : 1);
}

static void on_sul(lws_sorted_usec_list_t *sul)
{
    struct wheel_lws *l = lws_container_of(sul, struct wheel_lws, sul);
    l->armed = -1;
    int64_t now = lws_now_usecs();
    wheel_advance(l->w, now);
    arm(l, lws_now_usecs());
}

void wheel_lws_init(struct wheel *w, struct lws_context *ctx)
{
    wheel_init(w, lws_now_usecs());
    struct wheel_lws *l = xcalloc(1, sizeof *l);
    l->ctx = ctx;
    l->w = w;
    l->armed = -1;
    w->lws = l;
}

void wheel_lws_schedule(struct wheel *w, struct wheel_timer *t, wheel_cb cb, int64_t delay_us, int how)
{
    struct wheel_lws *l = w->lws;
    int64_t now = lws_now_usecs();
    wheel_schedule(w, t, cb, now, delay_us, how);
    if (l->armed < 0 || t->late < l->armed) {
        l->armed = t->late;
        int64_t us = t->late * WHEEL_TICK_US - now;
        lws_sul_schedule(l->ctx, 0, &l->sul, on_sul, us > 0 ? us : 1);
    }
}

void wheel_lws_cleanup(struct wheel *w)
{
    struct wheel_lws *l = w->lws;
    if (!l)
        return;
    lws_sul_cancel(&l->sul);
    free(l);
    w->lws = NULL;
}
