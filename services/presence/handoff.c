/* handoff: see handoff.h. Chunks are cut by the packed size of each entry, so
 * that a chunk never passes HANDOFF_CHUNK_BYTES; the count of chunks is known
 * only once every entry is placed, so they are packed last. */
#include "handoff.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.pb-c.h"
#include "map.h"

/* Room for a chunk's own fields (epoch, seq, chunk, chunks, not_ready). */
#define HEADER_RESERVE 256

static size_t varint_len(size_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Packed size of a message as a repeated field of its parent (tag + length). */
static size_t entry_size(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    return 1 + varint_len(n) + n;
}

static void pack_into(struct buf *b, const ProtobufCMessage *m)
{
    buf_init(b);
    size_t n = protobuf_c_message_get_packed_size(m);
    buf_reserve(b, n ? n : 1);
    protobuf_c_message_pack(m, (uint8_t *)b->data);
    b->len = n;
}

void handoff_chunks_cleanup(struct handoff_chunks *c)
{
    for (size_t i = 0; i < c->n; i++)
        buf_cleanup(&c->bufs[i]);
    free(c->bufs);
    c->bufs = NULL;
    c->n = 0;
}

/* Cuts n entries of the given packed sizes into chunks of at most budget
 * bytes (first_extra more taken by chunk 0); starts[k] is chunk k's first
 * entry, starts[count] = n. Returns the count (at least 1). */
static size_t cut(size_t **starts, const size_t *sizes, size_t n, size_t first_extra)
{
    size_t cap = 4, count = 0, used = first_extra;
    *starts = xmalloc(cap * sizeof **starts);
    (*starts)[count++] = 0;
    for (size_t i = 0; i < n; i++) {
        if (used + sizes[i] > HANDOFF_CHUNK_BYTES - HEADER_RESERVE && i > (*starts)[count - 1]) {
            if (count + 2 > cap) /* this chunk's start and the final end */
                *starts = xrealloc(*starts, (cap *= 2) * sizeof **starts);
            (*starts)[count++] = i;
            used = 0;
        }
        used += sizes[i];
    }
    (*starts)[count] = n;
    return count;
}

/* ---- the online list ---- */

void handoff_snapshot(struct handoff_chunks *out, const struct roster_info *infos, size_t n,
                      const char *epoch, uint64_t seq)
{
    Chat__V1__PresenceInfo *pbs = xmalloc((n ? n : 1) * sizeof *pbs);
    Chat__V1__PresenceInfo **ptrs = xmalloc((n ? n : 1) * sizeof *ptrs);
    size_t *sizes = xmalloc((n ? n : 1) * sizeof *sizes);
    for (size_t i = 0; i < n; i++) {
        chat__v1__presence_info__init(&pbs[i]);
        pbs[i].user_id = (char *)infos[i].user_id;
        pbs[i].username = (char *)infos[i].username;
        pbs[i].status = (Chat__V1__Status)infos[i].status;
        pbs[i].last_seen_ms = infos[i].last_seen_ms;
        ptrs[i] = &pbs[i];
        sizes[i] = entry_size(&pbs[i].base);
    }
    size_t *starts;
    size_t count = cut(&starts, sizes, n, strlen(epoch));
    out->bufs = xcalloc(count, sizeof *out->bufs);
    out->n = count;
    for (size_t k = 0; k < count; k++) {
        Chat__V1__PresenceSnapshot snap = CHAT__V1__PRESENCE_SNAPSHOT__INIT;
        snap.epoch = (char *)epoch;
        snap.seq = seq;
        snap.chunk = (uint32_t)k;
        snap.chunks = (uint32_t)count;
        snap.n_users = starts[k + 1] - starts[k];
        snap.users = ptrs + starts[k];
        pack_into(&out->bufs[k], &snap.base);
    }
    free(starts);
    free(sizes);
    free(ptrs);
    free(pbs);
}

/* ---- a replica's roster ---- */

struct exporter {
    struct map edge_index; /* edge id -> index + 1 */
    Chat__V1__PresenceEdge *edges;
    Chat__V1__PresenceEdge **edge_ptrs;
    size_t nedges, edges_cap;
    Chat__V1__PresenceUser *users;
    size_t nusers, users_cap;
    Chat__V1__PresenceSession *sessions; /* one array for every user's */
    size_t nsessions, sessions_cap;
    size_t *first_session; /* per user: its first entry in sessions */
};

static void export_edge(void *ctx, const char *edge_id, const char *boot_id)
{
    struct exporter *x = ctx;
    if (x->nedges == x->edges_cap) {
        x->edges_cap = x->edges_cap ? x->edges_cap * 2 : 16;
        x->edges = xrealloc(x->edges, x->edges_cap * sizeof *x->edges);
    }
    Chat__V1__PresenceEdge *e = &x->edges[x->nedges++];
    chat__v1__presence_edge__init(e);
    e->edge_id = (char *)edge_id;
    e->boot_id = (char *)boot_id;
    map_put(&x->edge_index, edge_id, (void *)(uintptr_t)x->nedges);
}

static void export_session(void *ctx, const char *edge_id, unsigned long long conn_id)
{
    struct exporter *x = ctx;
    if (x->nsessions == x->sessions_cap) {
        x->sessions_cap = x->sessions_cap ? x->sessions_cap * 2 : 64;
        x->sessions = xrealloc(x->sessions, x->sessions_cap * sizeof *x->sessions);
    }
    Chat__V1__PresenceSession *s = &x->sessions[x->nsessions++];
    chat__v1__presence_session__init(s);
    s->edge = (uint32_t)((uintptr_t)map_get(&x->edge_index, edge_id) - 1);
    s->conn_id = conn_id;
}

static void export_user(void *ctx, const struct roster_user *u)
{
    struct exporter *x = ctx;
    if (x->nusers == x->users_cap) {
        x->users_cap = x->users_cap ? x->users_cap * 2 : 64;
        x->users = xrealloc(x->users, x->users_cap * sizeof *x->users);
        x->first_session = xrealloc(x->first_session, x->users_cap * sizeof *x->first_session);
    }
    Chat__V1__PresenceUser *pu = &x->users[x->nusers];
    chat__v1__presence_user__init(pu);
    pu->user_id = (char *)u->id;
    pu->username = u->username;
    pu->status = (Chat__V1__Status)u->status;
    pu->last_seen_ms = u->last_seen_ms;
    pu->was_online = u->was_online ? 1 : 0;
    pu->grace_since_ms = u->in_grace ? u->grace_since_ms : 0;
    x->first_session[x->nusers++] = x->nsessions;
    roster_user_sessions(u, export_session, x);
}

void handoff_state(struct handoff_chunks *out, const struct roster *r, const char *epoch, uint64_t seq)
{
    struct exporter x = {0};
    map_init(&x.edge_index);
    roster_each_edge(r, export_edge, &x);
    roster_each_user(r, export_user, &x);
    /* The sessions array has stopped moving: point the users at theirs. */
    Chat__V1__PresenceSession **sess_ptrs = xmalloc((x.nsessions ? x.nsessions : 1) * sizeof *sess_ptrs);
    for (size_t i = 0; i < x.nsessions; i++)
        sess_ptrs[i] = &x.sessions[i];
    Chat__V1__PresenceUser **user_ptrs = xmalloc((x.nusers ? x.nusers : 1) * sizeof *user_ptrs);
    size_t *sizes = xmalloc((x.nusers ? x.nusers : 1) * sizeof *sizes);
    for (size_t i = 0; i < x.nusers; i++) {
        size_t end = i + 1 < x.nusers ? x.first_session[i + 1] : x.nsessions;
        x.users[i].n_sessions = end - x.first_session[i];
        x.users[i].sessions = sess_ptrs + x.first_session[i];
        user_ptrs[i] = &x.users[i];
        sizes[i] = entry_size(&x.users[i].base);
    }
    x.edge_ptrs = xmalloc((x.nedges ? x.nedges : 1) * sizeof *x.edge_ptrs);
    size_t edges_size = strlen(epoch);
    for (size_t i = 0; i < x.nedges; i++) {
        x.edge_ptrs[i] = &x.edges[i];
        edges_size += entry_size(&x.edges[i].base);
    }
    size_t *starts;
    size_t count = cut(&starts, sizes, x.nusers, edges_size);
    out->bufs = xcalloc(count, sizeof *out->bufs);
    out->n = count;
    for (size_t k = 0; k < count; k++) {
        Chat__V1__PresenceState st = CHAT__V1__PRESENCE_STATE__INIT;
        st.epoch = (char *)epoch;
        st.seq = seq;
        st.chunk = (uint32_t)k;
        st.chunks = (uint32_t)count;
        if (k == 0) {
            st.n_edges = x.nedges;
            st.edges = x.edge_ptrs;
        }
        st.n_users = starts[k + 1] - starts[k];
        st.users = user_ptrs + starts[k];
        pack_into(&out->bufs[k], &st.base);
    }
    free(starts);
    free(sizes);
    free(user_ptrs);
    free(sess_ptrs);
    free(x.edge_ptrs);
    free(x.edges);
    free(x.users);
    free(x.sessions);
    free(x.first_session);
    map_cleanup(&x.edge_index);
}

void handoff_not_ready(struct handoff_chunks *out, const char *epoch)
{
    Chat__V1__PresenceState st = CHAT__V1__PRESENCE_STATE__INIT;
    st.epoch = (char *)epoch;
    st.chunks = 1;
    st.not_ready = 1;
    out->bufs = xcalloc(1, sizeof *out->bufs);
    out->n = 1;
    pack_into(&out->bufs[0], &st.base);
}

/* ---- receiving ---- */

struct handoff_import {
    struct roster *r;
    long long mono_ms;
    char **edge_ids; /* chunk 0's edges, by index */
    size_t nedges;
    char *epoch;
    uint64_t seq;
    uint32_t next, chunks;
};

struct handoff_import *handoff_import_create(long long mono_ms)
{
    struct handoff_import *im = xcalloc(1, sizeof *im);
    im->r = roster_create();
    im->mono_ms = mono_ms;
    return im;
}

void handoff_import_destroy(struct handoff_import *im)
{
    if (!im)
        return;
    roster_destroy(im->r);
    for (size_t i = 0; i < im->nedges; i++)
        free(im->edge_ids[i]);
    free(im->edge_ids);
    free(im->epoch);
    free(im);
}

static void import_user(struct handoff_import *im, const Chat__V1__PresenceUser *pu)
{
    enum roster_status st = (enum roster_status)pu->status;
    if (st != ROSTER_AWAY && st != ROSTER_OFFLINE)
        st = ROSTER_ONLINE;
    struct roster_row row = {pu->user_id, pu->username, st, pu->last_seen_ms, pu->was_online};
    struct roster_user *u = roster_import_user(im->r, &row);
    for (size_t k = 0; k < pu->n_sessions; k++) {
        const Chat__V1__PresenceSession *s = pu->sessions[k];
        if (s->edge < im->nedges)
            roster_import_session(im->r, u, im->edge_ids[s->edge], s->conn_id);
    }
    if (u->nsessions == 0 && pu->grace_since_ms > 0) /* the same deadline as on the active */
        roster_import_grace(im->r, u, pu->grace_since_ms);
    else if (u->nsessions == 0) /* an offline user the active may not have written yet */
        roster_mark_dirty(im->r, u->id);
}

int handoff_import_add(struct handoff_import *im, const void *data, size_t len, int *not_ready)
{
    *not_ready = 0;
    Chat__V1__PresenceState *st = chat__v1__presence_state__unpack(NULL, len, data);
    int rc = -1;
    if (!st)
        return -1;
    if (st->not_ready) {
        *not_ready = 1;
        goto out;
    }
    if (st->chunk != im->next || st->chunks == 0 || (im->next > 0 && st->chunks != im->chunks) ||
        (im->epoch && strcmp(im->epoch, st->epoch) != 0))
        goto out;
    if (st->chunk == 0) {
        im->epoch = xstrdup(st->epoch);
        im->seq = st->seq;
        im->chunks = st->chunks;
        im->edge_ids = xmalloc((st->n_edges ? st->n_edges : 1) * sizeof *im->edge_ids);
        for (size_t i = 0; i < st->n_edges; i++) {
            roster_import_edge(im->r, st->edges[i]->edge_id, st->edges[i]->boot_id, im->mono_ms);
            im->edge_ids[im->nedges++] = xstrdup(st->edges[i]->edge_id);
        }
    }
    for (size_t i = 0; i < st->n_users; i++)
        if (*st->users[i]->user_id)
            import_user(im, st->users[i]);
    im->next++;
    rc = im->next == im->chunks ? 1 : 0;
out:
    chat__v1__presence_state__free_unpacked(st, NULL);
    return rc;
}

struct roster *handoff_import_take(struct handoff_import *im, char *epoch, size_t epoch_size, uint64_t *seq)
{
    struct roster *r = im->r;
    im->r = roster_create();
    roster_shown_all(r);
    snprintf(epoch, epoch_size, "%s", im->epoch ? im->epoch : "");
    *seq = im->seq;
    return r;
}
