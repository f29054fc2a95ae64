/* wheel: one hashed timing wheel for every per-session and per-request timer
 * of the edge (pings, pong deadlines, connect and upgrade timeouts, token
 * expiries, request timeouts). lws 4.1.6 keeps its timers in one sorted list,
 * so each lws_sul_schedule walks the timers due earlier: with a ping timer per
 * session that is O(sessions) per ping, and it was most of the edge's CPU
 * during connect storms. Here scheduling and cancelling are O(1).
 *
 * Resolution is WHEEL_TICK_US. No timer fires late: each fires at its due
 * time rounded down to a tick (so at most a tick early), plus whatever the
 * loop itself takes to wake up. Protocol deadlines (pong, connect, upgrade,
 * token expiry, request timeouts) are exact in that sense. A periodic timer
 * scheduled with WHEEL_EARLY (the next ping, a liveness check) may fire up to
 * its slack early (1/16 of its delay, at most WHEEL_MAX_SLACK ticks): timers
 * whose windows overlap fire together, so 100,000 sessions cost about ten
 * wakeups a second, not one per tick. The pure part (schedule, cancel,
 * advance) takes the time as an argument; wheel_lws_* drive it from one lws
 * timer on the service thread. */
#ifndef WHEEL_H
#define WHEEL_H

#include <stddef.h>
#include <stdint.h>

#define WHEEL_TICK_US 5000 /* 5 ms */
#define WHEEL_SLOTS 4096   /* a revolution: 20.48 s; later timers wait for theirs */
#define WHEEL_MAX_SLACK 20 /* ticks: 100 ms */

struct wheel_timer;
typedef void (*wheel_cb)(struct wheel_timer *t);

/* Embedded in its owner (lws_container_of finds the owner in the callback).
 * Zeroed memory is a timer that is not scheduled. */
struct wheel_timer {
    struct wheel_timer *next;
    struct wheel_timer **pprev; /* NULL when not scheduled */
    int64_t early;              /* first tick it may fire at */
    int64_t late;               /* the tick it is due at: its slot */
    wheel_cb cb;
};

struct wheel {
    struct wheel_timer *slots[WHEEL_SLOTS];
    int64_t cursor; /* every slot up to this tick has been served */
    size_t count;   /* timers scheduled */
    void *lws;      /* wheel_lws_*: the lws_sul driving it */
};

/* An empty wheel; now_us: the clock the caller will pass to advance. */
void wheel_init(struct wheel *w, int64_t now_us);
/* How a timer may fire: WHEEL_EXACT at its due tick; WHEEL_EARLY anywhere in
 * its slack before it (never after). */
enum { WHEEL_EXACT = 0, WHEEL_EARLY = 1 };

/* (Re)schedules t to call cb in delay_us (>= 0) from now_us; how is
 * WHEEL_EXACT or WHEEL_EARLY. */
void wheel_schedule(struct wheel *w, struct wheel_timer *t, wheel_cb cb, int64_t now_us, int64_t delay_us,
                    int how);
/* Unschedules t; nothing happens when it is not scheduled. */
void wheel_cancel(struct wheel *w, struct wheel_timer *t);
/* Fires every timer that is due at now_us (callbacks may schedule and cancel
 * any timer). Returns the number fired. */
size_t wheel_advance(struct wheel *w, int64_t now_us);
/* When the next advance has work: microseconds from now_us (0 = now), or -1
 * when the wheel is empty. */
int64_t wheel_next_us(const struct wheel *w, int64_t now_us);

/* ---- on the lws service thread ---- */
struct lws_context;
/* Binds the wheel to ctx's timers: the edge's one wheel. */
void wheel_lws_init(struct wheel *w, struct lws_context *ctx);
/* wheel_schedule with lws's clock, waking the loop as needed. (wheel_cancel
 * needs no clock: the lws timer may then wake once for nothing.) */
void wheel_lws_schedule(struct wheel *w, struct wheel_timer *t, wheel_cb cb, int64_t delay_us, int how);
/* Stops the lws timer (timers left scheduled never fire). */
void wheel_lws_cleanup(struct wheel *w);

#endif
