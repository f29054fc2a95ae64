/* map: a string-keyed hash table with chaining. Keys are copied; values are
 * borrowed pointers. Grows by doubling; no shrinking. Not thread-safe. */
#ifndef MAP_H
#define MAP_H

#include <stddef.h>

struct map_entry {
    struct map_entry *next;
    void *value;
    size_t hash;
    char key[];
};

struct map {
    struct map_entry **slots;
    size_t nslots;
    size_t count;
};

void map_init(struct map *m);
/* Frees the table and the keys, not the values. */
void map_cleanup(struct map *m);
void *map_get(const struct map *m, const char *key);
/* Sets key to value, replacing any previous value. */
void map_put(struct map *m, const char *key, void *value);
/* Removes key; returns its value or NULL. */
void *map_del(struct map *m, const char *key);

/* Iteration: for (e = map_first(m, &i); e; e = map_next(m, e, &i)). Do not
 * modify the map while iterating. */
struct map_entry *map_first(const struct map *m, size_t *i);
struct map_entry *map_next(const struct map *m, struct map_entry *e, size_t *i);

#endif
