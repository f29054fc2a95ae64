/* seen: see seen.h. A map's values are unused: presence is the key. */
#include "seen.h"

#include <stdlib.h>

#include "map.h"
#include "mem.h"

#define PRESENT ((void *)1)

struct seen {
    struct map young, old;
    size_t per_gen;
};

struct seen *seen_create(size_t per_gen)
{
    struct seen *s = xcalloc(1, sizeof *s);
    map_init(&s->young);
    map_init(&s->old);
    s->per_gen = per_gen ? per_gen : 1;
    return s;
}

void seen_destroy(struct seen *s)
{
    if (!s)
        return;
    map_cleanup(&s->young);
    map_cleanup(&s->old);
    free(s);
}

void seen_add(struct seen *s, const char *id)
{
    if (map_get(&s->young, id))
        return;
    if (s->young.count >= s->per_gen) { /* young is full: it becomes old, old goes */
        map_cleanup(&s->old);
        s->old = s->young;
        map_init(&s->young);
    }
    map_put(&s->young, id, PRESENT);
}

int seen_has(struct seen *s, const char *id)
{
    if (map_get(&s->young, id))
        return 1;
    if (!map_get(&s->old, id))
        return 0;
    map_del(&s->old, id);
    seen_add(s, id);
    return 1;
}

size_t seen_count(const struct seen *s)
{
    return s->young.count + s->old.count;
}
