/* history: the answers to message:history (chat.query.messages) and to
 * conversation:list (chat.query.conversations), queue group "messaging", for
 * chat-messaging: both kinds share one queue, its limits and the pool. nats.c's callback only decodes, checks
 * and queues a query in a histq (bounded, fair between users, per-user
 * limits); a pool of workers, each with its own PostgreSQL connection, runs
 * the queries. A refusal is answered at once: a full queue "unavailable", a
 * user over its limits "rate_limited". A query whose asker has given up
 * (HistoryQuery.timeout_ms, ConversationQuery.timeout_ms, since it
 * arrived) is dropped before it runs,
 * unanswered. */
#ifndef HISTORY_H
#define HISTORY_H

#include <nats/nats.h>

struct history_config {
    const char *database_url;
    const char *app; /* application_name of the connections */
    long conns;      /* workers, one PostgreSQL connection each */
    long queue;      /* queued queries, all users together */
    long per_user;   /* queued + running per user; 0: no limit */
    long per_s;      /* per user per second, burst twice that; 0: no limit */
    long timeout_ms; /* when a query says none */
};

struct history;

/* Starts the workers (they connect when the first query comes) and
 * subscribes on nc. cfg is borrowed for the life of the history. Returns
 * NULL after logging when the subscription fails. */
struct history *history_start(const struct history_config *cfg, natsConnection *nc);
/* Unsubscribes, answers what is still queued with "unavailable", joins the
 * workers, closes their connections. Accepts NULL. */
void history_stop(struct history *h);

#endif
