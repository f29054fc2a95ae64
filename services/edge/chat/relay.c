/* relay: see relay.h. The wake function is the only thing called off the
 * loop's thread (server_wake: lws_cancel_service, which lws documents as
 * thread-safe). */
#include "relay.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"

struct relay {
    pthread_mutex_t mu;
    pthread_cond_t taken; /* the loop took the queue, or the relay stopped */
    void (*wake)(void *ctx);
    void *wake_ctx;
    struct relay_item *head, *tail;
    size_t bytes, max_bytes;
    unsigned long dropped;
    int wake_pending;
    int stopped;
};

struct relay *relay_create(void (*wake)(void *ctx), void *wake_ctx, size_t max_bytes)
{
    struct relay *r = xcalloc(1, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->taken, NULL);
    r->wake = wake;
    r->wake_ctx = wake_ctx;
    r->max_bytes = max_bytes;
    return r;
}

void relay_destroy(struct relay *r)
{
    if (!r)
        return;
    struct relay_item *it = r->head;
    while (it) {
        struct relay_item *next = it->next;
        free(it);
        it = next;
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->taken);
    free(r);
}

static int push(struct relay *r, enum relay_kind kind, const char *key, const void *data, size_t len,
                int wait)
{
    struct relay_item *it = xmalloc(sizeof *it + len);
    it->next = NULL;
    it->kind = kind;
    snprintf(it->key, sizeof it->key, "%s", key);
    it->len = len;
    memcpy(it->data, data, len);

    pthread_mutex_lock(&r->mu);
    /* An item bigger than the bound waits for an empty queue, not forever. */
    while (wait && !r->stopped && r->bytes > 0 && r->bytes + len > r->max_bytes)
        pthread_cond_wait(&r->taken, &r->mu);
    if (r->stopped || (r->bytes + len > r->max_bytes && !(wait && r->bytes == 0))) {
        unsigned long dropped = ++r->dropped;
        pthread_mutex_unlock(&r->mu);
        free(it);
        if ((dropped & (dropped - 1)) == 0) /* 1, 2, 4, 8...: no log flood */
            log_warn("relay queue full: dropped=%lu", dropped);
        return -1;
    }
    if (r->tail)
        r->tail->next = it;
    else
        r->head = it;
    r->tail = it;
    r->bytes += len;
    /* Woken under the lock: once relay_stop() returns, no thread can still be
     * about to wake a loop (which may be destroyed after it). */
    if (!r->wake_pending)
        r->wake(r->wake_ctx);
    r->wake_pending = 1;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

int relay_push(struct relay *r, enum relay_kind kind, const char *key, const void *data, size_t len)
{
    return push(r, kind, key, data, len, 0);
}

int relay_push_wait(struct relay *r, enum relay_kind kind, const char *key, const void *data, size_t len)
{
    return push(r, kind, key, data, len, 1);
}

struct relay_item *relay_take(struct relay *r)
{
    pthread_mutex_lock(&r->mu);
    struct relay_item *it = r->head;
    r->head = r->tail = NULL;
    r->bytes = 0;
    r->wake_pending = 0;
    pthread_cond_broadcast(&r->taken);
    pthread_mutex_unlock(&r->mu);
    return it;
}

void relay_stop(struct relay *r)
{
    pthread_mutex_lock(&r->mu);
    r->stopped = 1;
    pthread_cond_broadcast(&r->taken);
    pthread_mutex_unlock(&r->mu);
}
