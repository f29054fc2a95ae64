/* map: FNV-1a hashed chains; the table doubles when count passes nslots. */
#include "map.h"

#include <stdlib.h>
#include <string.h>

#include "mem.h"

static size_t hash_str(const char *s)
{
    size_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

void map_init(struct map *m)
{
    m->nslots = 16;
    m->slots = xcalloc(m->nslots, sizeof *m->slots);
    m->count = 0;
}

void map_cleanup(struct map *m)
{
    for (size_t i = 0; i < m->nslots; i++) {
        struct map_entry *e = m->slots[i];
        while (e) {
            struct map_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->slots);
    m->slots = NULL;
    m->nslots = m->count = 0;
}

static struct map_entry **find(const struct map *m, const char *key, size_t h)
{
    struct map_entry **pe = &m->slots[h & (m->nslots - 1)];
    while (*pe && ((*pe)->hash != h || strcmp((*pe)->key, key) != 0))
        pe = &(*pe)->next;
    return pe;
}

void *map_get(const struct map *m, const char *key)
{
    struct map_entry *e = *find(m, key, hash_str(key));
    return e ? e->value : NULL;
}

static void grow(struct map *m)
{
    size_t n = m->nslots * 2;
    struct map_entry **slots = xcalloc(n, sizeof *slots);
    for (size_t i = 0; i < m->nslots; i++) {
        struct map_entry *e = m->slots[i];
        while (e) {
            struct map_entry *next = e->next;
            e->next = slots[e->hash & (n - 1)];
            slots[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(m->slots);
    m->slots = slots;
    m->nslots = n;
}

void map_put(struct map *m, const char *key, void *value)
{
    size_t h = hash_str(key);
    struct map_entry **pe = find(m, key, h);
    if (*pe) {
        (*pe)->value = value;
        return;
    }
    size_t klen = strlen(key);
    struct map_entry *e = xmalloc(sizeof *e + klen + 1);
    memcpy(e->key, key, klen + 1);
    e->hash = h;
    e->value = value;
    e->next = NULL;
    *pe = e;
    if (++m->count > m->nslots)
        grow(m);
}

void *map_del(struct map *m, const char *key)
{
    struct map_entry **pe = find(m, key, hash_str(key));
    struct map_entry *e = *pe;
    if (!e)
        return NULL;
    void *v = e->value;
    *pe = e->next;
    free(e);
    m->count--;
    return v;
}

struct map_entry *map_first(const struct map *m, size_t *i)
{
    for (*i = 0; *i < m->nslots; (*i)++)
        if (m->slots[*i])
            return m->slots[*i];
    return NULL;
}

struct map_entry *map_next(const struct map *m, struct map_entry *e, size_t *i)
{
    if (e->next)
        return e->next;
    for ((*i)++; *i < m->nslots; (*i)++)
        if (m->slots[*i])
            return m->slots[*i];
    return NULL;
}
