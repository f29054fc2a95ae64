/* online: see online.h. The users sit in one dense array (a list is one
 * pass over it; a removal moves the last entry into the hole) indexed by an
 * open-addressing table of positions (linear probing, removal by backward
 * shift), so that neither a change nor a list allocates more than the user's
 * own JSON. */
#include "online.h"

#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "chat_json.h"
#include "chat_wire.h"
#include "ids.h"

#define ID_AT 11 /* {"userId":" : where the id starts in an entry's JSON */

struct entry {
    char *json;    /* {"userId":"<id>","username":...,"status":...,"lastSeen":...} */
    uint32_t len;  /* of json */
    uint32_t hash; /* of the id */
    uint8_t id_len;
};

struct online {
    /* the copy */
    struct entry *users;
    size_t n, cap;
    uint32_t *slots; /* position + 1 in users, 0: free */
    size_t nslots;   /* a power of two, at least twice n */
    size_t bytes;    /* the JSON of every entry */
    unsigned long long gen;
    size_t left_out;
    struct buf scratch;
    /* where it stands */
    int in_step;
    char *epoch; /* "" before the first snapshot */
    uint64_t seq;
    char *retired[ONLINE_RETIRED]; /* epochs left behind, newest at retired_next - 1 */
    unsigned retired_next;
    /* a snapshot on its way */
    int asking;
    uint32_t next_chunk, chunks;
    char *snap_epoch;
    uint64_t snap_seq;
    struct buf buffered; /* the changes heard meanwhile: [uint32 length][packed PresenceChange]... */
};

/* ---------- the index ---------- */

static uint32_t hash_id(const char *id, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)id[i]) * 16777619u;
    return h;
}

static int same_id(const struct entry *e, const char *id, size_t len, uint32_t hash)
{
    return e->hash == hash && e->id_len == len && memcmp(e->json + ID_AT, id, len) == 0;
}

/* The slot holding id, or the free slot where it would go. */
static size_t slot_of(const struct online *o, const char *id, size_t len, uint32_t hash)
{
    size_t mask = o->nslots - 1, i = hash & mask;
    while (o->slots[i] && !same_id(&o->users[o->slots[i] - 1], id, len, hash))
        i = (i + 1) & mask;
    return i;
}

static void rehash(struct online *o, size_t nslots)
{
    free(o->slots);
    o->nslots = nslots;
    o->slots = xcalloc(nslots, sizeof *o->slots);
    size_t mask = nslots - 1;
    for (size_t k = 0; k < o->n; k++) {
        size_t i = o->users[k].hash & mask;
        while (o->slots[i])
            i = (i + 1) & mask;
        o->slots[i] = (uint32_t)(k + 1);
    }
}

/* Frees slot i and moves the entries after it that may not stay behind a
 * free slot (backward shift: no tombstones). */
static void slot_free(struct online *o, size_t i)
{
    size_t mask = o->nslots - 1, j = i;
    o->slots[i] = 0;
    for (;;) {
        j = (j + 1) & mask;
        if (!o->slots[j])
            return;
        size_t home = o->users[o->slots[j] - 1].hash & mask;
        /* j stays unless its home lies cyclically outside (i, j] */
        int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (stays)
            continue;
        o->slots[i] = o->slots[j];
        o->slots[j] = 0;
        i = j;
    }
}

/* Removes the entry in slot i. */
static void entry_remove(struct online *o, size_t i)
{
    size_t pos = o->slots[i] - 1;
    o->bytes -= o->users[pos].len;
    free(o->users[pos].json);
    slot_free(o, i);
    size_t last = o->n - 1;
    if (pos != last) { /* the last entry takes the hole */
        struct entry *m = &o->users[last];
        o->slots[slot_of(o, m->json + ID_AT, m->id_len, m->hash)] = (uint32_t)(pos + 1);
        o->users[pos] = *m;
    }
    o->n--;
    o->gen++;
}

static void clear(struct online *o)
{
    for (size_t k = 0; k < o->n; k++)
        free(o->users[k].json);
    o->n = 0;
    o->bytes = 0;
    if (o->slots)
        memset(o->slots, 0, o->nslots * sizeof *o->slots);
    o->gen++;
}

/* ---------- users ---------- */

/* 1 for an id written as it is (no JSON escape): ID_AT locates it. */
static int plain_id(const char *id, size_t len)
{
    if (len == 0 || len > IDS_UUID_LEN)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (id[i] <= 0x20 || id[i] >= 0x7f || id[i] == '"' || id[i] == '\\')
            return 0;
    return 1;
}

/* What the copy says of p's user from now on: kept (online or away, seen)
 * or not. */
static void apply_info(struct online *o, const Chat__V1__PresenceInfo *p)
{
    if (!p || !p->user_id)
        return;
    size_t len = strlen(p->user_id);
    if (!plain_id(p->user_id, len)) {
        o->left_out++;
        return;
    }
    uint32_t hash = hash_id(p->user_id, len);
    if (!o->slots)
        rehash(o, 16);
    size_t i = slot_of(o, p->user_id, len, hash);
    int keep = (p->status == CHAT__V1__STATUS__STATUS_ONLINE || p->status == CHAT__V1__STATUS__STATUS_AWAY) &&
               chat_json_presence_seen(p);
    o->scratch.len = 0;
    if (keep && (!p->username || strlen(p->username) > AUTH_MAX_USERNAME ||
                 chat_wire_presence_info(&o->scratch, p) != 0)) {
        o->left_out++;
        keep = 0;
    }
    if (!keep) {
        if (o->slots[i])
            entry_remove(o, i);
        return;
    }
    char *json = xmalloc(o->scratch.len);
    memcpy(json, o->scratch.data, o->scratch.len);
    if (o->slots[i]) { /* replaced */
        struct entry *e = &o->users[o->slots[i] - 1];
        o->bytes -= e->len;
        free(e->json);
        e->json = json;
        e->len = (uint32_t)o->scratch.len;
        o->bytes += e->len;
        o->gen++;
        return;
    }
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 64;
        o->users = xrealloc(o->users, o->cap * sizeof *o->users);
    }
    o->users[o->n] = (struct entry){json, (uint32_t)o->scratch.len, hash, (uint8_t)len};
    o->slots[i] = (uint32_t)(++o->n);
    o->bytes += o->scratch.len;
    o->gen++;
    if (o->n * 2 > o->nslots)
        rehash(o, o->nslots * 2);
}

/* ---------- epochs ---------- */

static int retired(const struct online *o, const char *epoch)
{
    for (unsigned k = 0; k < ONLINE_RETIRED; k++)
        if (o->retired[k] && strcmp(o->retired[k], epoch) == 0)
            return 1;
    return 0;
}

static void retire(struct online *o, const char *epoch)
{
    if (!*epoch || retired(o, epoch))
        return;
    unsigned k = o->retired_next++ % ONLINE_RETIRED;
    free(o->retired[k]);
    o->retired[k] = xstrdup(epoch);
}

/* ---------- changes ---------- */

static void give_up_snapshot(struct online *o)
{
    o->asking = 0;
    o->buffered.len = 0;
    free(o->snap_epoch);
    o->snap_epoch = NULL;
}

/* A change while in step (or replayed after a snapshot). */
static enum online_verdict step(struct online *o, const Chat__V1__PresenceChange *pc, const char **why)
{
    const char *epoch = pc->epoch ? pc->epoch : "";
    if (strcmp(epoch, o->epoch) != 0) {
        if (retired(o, epoch))
            return ONLINE_SKIPPED;
        o->in_step = 0;
        *why = "epoch";
        return ONLINE_AGAIN;
    }
    if (pc->seq <= o->seq)
        return ONLINE_SKIPPED;
    if (pc->seq != o->seq + 1) {
        o->in_step = 0;
        *why = "gap";
        return ONLINE_AGAIN;
    }
    o->seq = pc->seq;
    apply_info(o, pc->info);
    return ONLINE_APPLIED;
}

enum online_verdict online_change(struct online *o, const Chat__V1__PresenceChange *pc, const char **why)
{
    *why = "";
    if (o->asking) {
        size_t n = chat__v1__presence_change__get_packed_size(pc);
        if (o->buffered.len + 4 + n > ONLINE_MAX_BUFFERED) {
            give_up_snapshot(o);
            *why = "overflow";
            return ONLINE_AGAIN;
        }
        uint32_t len = (uint32_t)n;
        buf_append(&o->buffered, &len, sizeof len);
        buf_reserve(&o->buffered, n);
        chat__v1__presence_change__pack(pc, (uint8_t *)o->buffered.data + o->buffered.len);
        o->buffered.len += n;
        return ONLINE_BUFFERED;
    }
    if (!o->in_step)
        return ONLINE_SKIPPED;
    return step(o, pc, why);
}

/* ---------- snapshots ---------- */

void online_asked(struct online *o)
{
    give_up_snapshot(o);
    o->asking = 1;
    o->in_step = 0;
    o->next_chunk = 0;
}

void online_lost(struct online *o)
{
    give_up_snapshot(o);
    o->in_step = 0;
}

/* The snapshot is whole: the copy is at its epoch and seq, then takes what
 * was buffered. */
static enum online_verdict snapshot_done(struct online *o, const char **why)
{
    if (strcmp(o->epoch, o->snap_epoch) != 0) {
        retire(o, o->epoch); /* the snapshot came from a later active */
        free(o->epoch);
        o->epoch = o->snap_epoch;
        o->snap_epoch = NULL;
    }
    o->seq = o->snap_seq;
    o->in_step = 1;
    struct buf pending = o->buffered;
    buf_init(&o->buffered);
    give_up_snapshot(o);
    enum online_verdict v = ONLINE_IN_STEP;
    for (size_t at = 0; at + 4 <= pending.len;) {
        uint32_t len;
        memcpy(&len, pending.data + at, sizeof len);
        at += sizeof len;
        Chat__V1__PresenceChange *pc =
            chat__v1__presence_change__unpack(NULL, len, (const uint8_t *)pending.data + at);
        at += len;
        if (pc && step(o, pc, why) == ONLINE_AGAIN)
            v = ONLINE_AGAIN;
        chat__v1__presence_change__free_unpacked(pc, NULL);
        if (v == ONLINE_AGAIN)
            break;
    }
    buf_cleanup(&pending);
    return v;
}

enum online_verdict online_chunk(struct online *o, const Chat__V1__PresenceSnapshot *s, const char **why)
{
    *why = "";
    const char *epoch = s->epoch ? s->epoch : "";
    if (!o->asking) {
        *why = "chunk";
        return ONLINE_AGAIN;
    }
    if (o->next_chunk == 0) {
        if (s->chunk != 0 || s->chunks == 0) {
            give_up_snapshot(o);
            *why = "chunk";
            return ONLINE_AGAIN;
        }
        o->chunks = s->chunks;
        o->snap_epoch = xstrdup(epoch);
        o->snap_seq = s->seq;
        clear(o); /* out of step since the request: nobody reads it meanwhile */
    } else if (s->chunk != o->next_chunk || s->chunks != o->chunks || s->seq != o->snap_seq ||
               strcmp(epoch, o->snap_epoch) != 0) {
        give_up_snapshot(o);
        *why = "chunk";
        return ONLINE_AGAIN;
    }
    for (size_t i = 0; i < s->n_users; i++)
        apply_info(o, s->users[i]);
    if (++o->next_chunk < o->chunks)
        return ONLINE_MORE;
    return snapshot_done(o, why);
}

/* ---------- the rest ---------- */

struct online *online_create(void)
{
    struct online *o = xcalloc(1, sizeof *o);
    o->epoch = xstrdup("");
    buf_init(&o->scratch);
    buf_init(&o->buffered);
    return o;
}

void online_destroy(struct online *o)
{
    if (!o)
        return;
    clear(o);
    free(o->users);
    free(o->slots);
    buf_cleanup(&o->scratch);
    give_up_snapshot(o);
    buf_cleanup(&o->buffered);
    for (unsigned k = 0; k < ONLINE_RETIRED; k++)
        free(o->retired[k]);
    free(o->epoch);
    free(o);
}

int online_in_step(const struct online *o)
{
    return o->in_step;
}

int online_asking(const struct online *o)
{
    return o->asking;
}

size_t online_count(const struct online *o)
{
    return o->n;
}

unsigned long long online_gen(const struct online *o)
{
    return o->gen;
}

const char *online_epoch(const struct online *o)
{
    return o->epoch;
}

uint64_t online_seq(const struct online *o)
{
    return o->seq;
}

size_t online_left_out(const struct online *o)
{
    return o->left_out;
}

void online_write(const struct online *o, struct buf *b, const char *event)
{
    buf_reserve(b, 8 + strlen(event) + o->bytes + o->n);
    buf_puts(b, "2[\"");
    buf_puts(b, event); /* our own names: nothing to escape */
    buf_puts(b, "\",[");
    for (size_t k = 0; k < o->n; k++) {
        if (k)
            buf_putc(b, ',');
        buf_append(b, o->users[k].json, o->users[k].len);
    }
    buf_puts(b, "]]");
}

const char *online_get(const struct online *o, const char *id, size_t *len)
{
    size_t n = strlen(id);
    if (!o->nslots || n == 0 || n > 255)
        return NULL;
    uint32_t h = hash_id(id, n);
    uint32_t at = o->slots[slot_of(o, id, n, h)];
    if (!at)
        return NULL;
    *len = o->users[at - 1].len;
    return o->users[at - 1].json;
}

void online_write_only(const struct online *o, struct buf *b, const char *event, const char *const *ids,
                       size_t n)
{
    buf_puts(b, "2[\"");
    buf_puts(b, event);
    buf_puts(b, "\",[");
    int first = 1;
    for (size_t k = 0; k < n; k++) {
        size_t len;
        const char *json = online_get(o, ids[k], &len);
        if (!json)
            continue;
        if (!first)
            buf_putc(b, ',');
        first = 0;
        buf_append(b, json, len);
    }
    buf_puts(b, "]]");
}
