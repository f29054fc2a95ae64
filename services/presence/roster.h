/* roster: presence's memory, and every rule that decides who is online. Users
 * with their sessions (edge_id, conn_id), edges with their boot id and last
 * sign of life, each user's chosen status, username and lastSeen, and what the
 * world was last shown of each user (the last PresenceChange published, or
 * heard from the active replica by a standby). Pure: no I/O, no clock, no
 * locking; the caller passes the times, publishes the changes the roster
 * queues and writes the users it marks dirty.
 *
 * The grace period (roster_set_grace): a user whose last session closes does
 * not go offline at once. For grace_ms the roster keeps the user as the world
 * was shown them (status, lastSeen, the row online) and queues nothing; a
 * session of theirs that opens meanwhile takes over silently (a client that
 * recovered its connection on another edge), and otherwise roster_grace_expire
 * sets them offline with last_seen = the time the last session closed. The
 * deadline is on the wall clock (now_ms), the clock the replicas share, so
 * that a replica given the state goes on with the same one. */
#ifndef ROSTER_H
#define ROSTER_H

#include <stddef.h>

/* The chosen status; the values are those of chat.v1.Status. */
enum roster_status {
    ROSTER_ONLINE = 1,
    ROSTER_AWAY = 2,
    ROSTER_OFFLINE = 3,
};

/* A user presence knows of: connected now, or disconnected with a row not yet
 * written. Read-only for callers; valid until the next roster_flush(). */
struct roster_user {
    const char *id;            /* as given (callers normalise uuids first) */
    char *username;            /* never NULL */
    enum roster_status status; /* chosen status */
    long long last_seen_ms;    /* Unix ms of the last change of status (the last
                                  close when offline); 0 = never */
    size_t nsessions;          /* online while > 0 */
    int was_online;            /* users.online as loaded (resync window rule) */
    int offline_pending;       /* last session closed in the resync window (no grace period) */
    int status_pending;        /* status chosen in the resync window before a session came back */
    int dirty;                 /* the row needs writing */
    int in_grace;              /* no session, in the grace period: shown and written as connected */
    long long grace_since_ms;  /* in_grace: Unix ms its last session closed (its lastSeen when offline) */
    enum roster_status shown;  /* what the world was last shown (OFFLINE until a change) */
    long long shown_last_seen_ms;
    struct roster_session *sessions;
};

/* A broadcast to make (PresenceChange): a copy of the user's fields at the time
 * of the change, with the status to announce. Owned by the roster until
 * roster_changes_clear(). */
struct roster_change {
    char *user_id;
    char *username;
    enum roster_status status;
    long long last_seen_ms;
};

/* One answer of roster_query() or roster_online(). Strings are borrowed from the
 * roster (or from the query's ids) until the next roster call. */
struct roster_info {
    const char *user_id;
    const char *username;
    enum roster_status status;
    long long last_seen_ms;
    int known; /* 0: not in memory; the caller asks the database */
};

struct roster;

struct roster *roster_create(void);
/* Accepts NULL. */
void roster_destroy(struct roster *r);
/* The grace period in ms (PRESENCE_GRACE_MS); 0, the default: a user goes
 * offline as their last session closes. */
void roster_set_grace(struct roster *r, long long grace_ms);

/* NULL when unknown. */
struct roster_user *roster_user_get(const struct roster *r, const char *id);

/* A users row as the caller read it from the database. */
struct roster_row {
    const char *id;
    const char *username;
    enum roster_status status;
    long long last_seen_ms; /* 0 = never */
    int online;
};

/* A SessionEvent, with the times it was received at: mono_ms for edge
 * liveness (a monotonic clock), now_ms for last_seen (Unix ms). */
struct roster_event {
    const char *edge_id;
    const char *boot_id;
    unsigned long long conn_id;
    const char *user_id;
    const char *username;
    int resync;
    long long mono_ms;
    long long now_ms;
};

/* An edge's sign of life (heartbeat or session event) at mono_ms. A new boot id
 * for a known edge means it restarted: all its sessions are dropped first, with
 * OFFLINE changes (last_seen = now_ms) for users who lost their last one. */
void roster_edge_seen(struct roster *r, const char *edge_id, const char *boot_id, long long mono_ms,
                      long long now_ms);
/* Drops the sessions of edges silent for more than timeout_ms, and forgets the
 * edges. Returns how many edges were dropped. */
size_t roster_edge_expire(struct roster *r, long long mono_ms, long long timeout_ms, long long now_ms);
/* Counts every edge as heard from at mono_ms: presence itself was deaf (NATS
 * outage), which says nothing about the edges. */
void roster_edge_touch_all(struct roster *r, long long mono_ms);
/* An edge's heartbeat says it holds open_sessions sockets (call after
 * roster_edge_seen of the same heartbeat). Returns 1 and remembers it when that
 * is not the number of sessions the roster holds for the edge (an event was
 * lost), else 0; unknown edge: 0. The events of one edge come in order with its
 * heartbeats, so in-flight events never count as a disagreement. */
int roster_edge_count(struct roster *r, const char *edge_id, unsigned long open_sessions);
/* The edges whose last heartbeat disagreed: *out (malloc'd; free it) holds
 * their ids, borrowed until the next roster call. Returns the count. */
size_t roster_mismatched_edges(const struct roster *r, const char ***out);

/* Session open. Counts as a sign of life of the edge (roster_edge_seen). A user
 * not in memory is created from row (the database's copy; NULL = a new user:
 * ONLINE, never seen). A first session queues an ONLINE change and makes the
 * chosen status ONLINE, unless it is quiet: the resync window is open and
 * resync is set or the row said online. A change sets last_seen = now_ms (the
 * time the user came online); a quiet open keeps the row's, or takes now_ms
 * when there is none. A first session of a user in the grace period ends it
 * and changes nothing else: no change queued, the status and last_seen the
 * user had go on. A known session is left as it is
 * (idempotent); a known session of another user is moved. An empty username
 * keeps the previous one. Returns 1 for a user's first session, else 0. */
int roster_open(struct roster *r, const struct roster_event *ev, const struct roster_row *row);
/* Session close; also a sign of life of the edge. Unknown sessions are ignored
 * (returns -1). The last session of a user (returns 1) sets last_seen = now_ms
 * and queues an OFFLINE change, or, with a grace period, starts it at now_ms
 * (nothing queued); otherwise returns 0. Every other way a user loses their
 * last session (an edge restarted or silent, a resync window's end) does the
 * same. */
int roster_close(struct roster *r, const struct roster_event *ev);

/* Sets the chosen status of a connected user at now_ms (its lastSeen) and
 * queues a change with it. Returns -1 (nothing done) when the user has no
 * session, except in the resync window: an edge sends a status only for a
 * socket it holds, whose session is not re-announced yet; the status is kept
 * for it and published when that session comes back (or forgotten at the end
 * of the window if none does). */
int roster_set_status(struct roster *r, const char *user_id, enum roster_status status, long long now_ms);

/* The resync window after a start: quiet opens (see roster_open). */
void roster_resync_begin(struct roster *r);
/* The same window for the sessions of n edges only (a new active replica
 * re-learns the edges whose heartbeat disagreed with it). */
void roster_resync_begin_edges(struct roster *r, const char *const *edge_ids, size_t n);
/* Ends the window: sessions not re-announced are removed, and users left with
 * no session go offline (broadcast, unless quiet: then the caller settles what
 * the world sees with roster_reconcile). */
void roster_resync_end(struct roster *r, long long now_ms, int quiet);
int roster_resyncing(const struct roster *r);
/* End of the window: a user the database says is online. If presence has no
 * record of them (nobody re-announced a session; a user in the grace period
 * counts as a record), they are added offline
 * (last_seen = now_ms, dirty) with an OFFLINE change (none when quiet: the
 * world was not shown them online) and 1 is returned; else 0. */
int roster_sweep_user(struct roster *r, const struct roster_row *row, long long now_ms, int quiet);

/* Ends the grace period of the users whose last session closed grace_ms or
 * more before now_ms: each goes offline (last_seen = that close, dirty) with
 * an OFFLINE change, the users whose grace started first first. Nothing
 * while a resync window is open: a session it re-learns may still come back
 * (they go at its end or after). Returns how many went offline. Costs the
 * number of users in the grace period, not of the roster. */
size_t roster_grace_expire(struct roster *r, long long now_ms);
/* Users in the grace period now. */
size_t roster_ngrace(const struct roster *r);

/* ---- what the world was shown (active and standby replicas) ---- */

/* The world was shown this change of user_id: published by this replica, or
 * heard on chat.presence.status from the active one. When it is what the
 * roster says, the roster takes its lastSeen (the clock of the replica that
 * published it, and the one its row holds). A user the roster does not hold
 * is kept (no session, not dirty) while shown online or away, so that a
 * takeover can tell the world otherwise. The world told that a user in the
 * grace period is offline (the active's grace ended first) ends it here too,
 * with no change queued. A user with no session, nothing to write and shown
 * offline is forgotten. */
void roster_shown(struct roster *r, const char *user_id, const char *username, enum roster_status status,
                  long long last_seen_ms);
/* Every user whose public status (the chosen one while connected or in the
 * grace period, else OFFLINE) is not what the world was shown gets a change
 * with it (marked dirty); where they agree the roster takes the shown
 * lastSeen, as roster_shown does. Returns the number of changes queued. */
size_t roster_reconcile(struct roster *r);
/* Takes every user's public status as what the world was shown (after a
 * resync window, or a state transfer, that rebuilt the roster from it). */
void roster_shown_all(struct roster *r);

/* The changes queued since the last roster_changes_clear(), oldest first. */
size_t roster_changes(const struct roster *r, const struct roster_change **out);
void roster_changes_clear(struct roster *r);

/* Calls save with the dirty users, oldest mark first, at most max (> 0) per
 * call; a 0 return makes all n users of that call clean (save writes them all
 * or none). Stops at the first failure (the store is down). Then forgets the
 * clean users with no session: pointers to them die here. Returns the number
 * of users still dirty. */
size_t roster_flush(struct roster *r, size_t max,
                    int (*save)(void *ctx, const struct roster_user *const *users, size_t n), void *ctx);
/* A standby's flush: the n oldest dirty users count as written (the active
 * writes them) and, with forget, are forgotten like roster_flush does.
 * Returns the number of users still dirty. */
size_t roster_settle(struct roster *r, size_t n, int forget);
/* Forgets every user with no session, nothing to write and shown offline.
 * Returns how many. */
size_t roster_forget_idle(struct roster *r);
size_t roster_ndirty(const struct roster *r);
/* Marks a known user's row for writing; -1 when unknown. */
int roster_mark_dirty(struct roster *r, const char *user_id);

/* ---- state transfer between replicas ---- */

void roster_each_edge(const struct roster *r, void (*cb)(void *ctx, const char *edge_id, const char *boot_id),
                      void *ctx);
/* Every user the roster holds, connected or not. */
void roster_each_user(const struct roster *r, void (*cb)(void *ctx, const struct roster_user *u), void *ctx);
void roster_user_sessions(const struct roster_user *u,
                          void (*cb)(void *ctx, const char *edge_id, unsigned long long conn_id), void *ctx);
/* Building a roster from another replica's: edges first (heard at mono_ms),
 * then users (from row: username, chosen status, last_seen, was_online; not
 * dirty), each followed by its sessions (-1 when the edge is unknown or the
 * session exists) or, for a user in the grace period, the time its last
 * session closed (-1 when it has a session). Then roster_shown_all. */
void roster_import_edge(struct roster *r, const char *edge_id, const char *boot_id, long long mono_ms);
struct roster_user *roster_import_user(struct roster *r, const struct roster_row *row);
int roster_import_session(struct roster *r, struct roster_user *u, const char *edge_id,
                          unsigned long long conn_id);
int roster_import_grace(struct roster *r, struct roster_user *u, long long since_ms);

/* One answer per id in order (duplicates kept): a connected user, or one in the
 * grace period, has their chosen status; a known user without session is
 * OFFLINE with their last_seen; others are OFFLINE, "", 0 and known = 0. With
 * shown (a standby), a known user is answered as the world was shown them
 * instead: what the active published, whatever this roster may have missed.
 * out holds n entries. */
void roster_query(const struct roster *r, const char *const *ids, size_t n, struct roster_info *out,
                  int shown);
/* Every connected user (or in the grace period) whose chosen status is not
 * OFFLINE (invisible users are left out). *out is malloc'd (free it); returns
 * the count. */
size_t roster_online(const struct roster *r, struct roster_info **out);

/* A number that changes whenever roster_online()'s answer may have changed (a
 * session added or removed, a status or username set), so that callers can
 * keep what they built from the list until it does. */
unsigned long long roster_online_gen(const struct roster *r);

/* Counts, for logs and tests. */
size_t roster_nusers(const struct roster *r);
size_t roster_nsessions(const struct roster *r);
size_t roster_nedges(const struct roster *r);

#endif
