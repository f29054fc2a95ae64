/* seen: the user ids messaging knows to exist (they have a row in presence's
 * users table), so that a message to a known recipient costs no query.
 * Bounded: two generations of at most per_gen ids each. Ids are added to the
 * young one; when it is full the old one is dropped and the young one
 * becomes old; an id found in the old one moves to the young one, so the ids
 * in use stay. Nothing is ever cached as unknown: a user may connect for the
 * first time at any moment. Pure and not thread-safe. */
#ifndef SEEN_H
#define SEEN_H

#include <stddef.h>

struct seen;

struct seen *seen_create(size_t per_gen);
void seen_destroy(struct seen *s);
/* 1 when id is in the set. */
int seen_has(struct seen *s, const char *id);
/* Adds id (copied). */
void seen_add(struct seen *s, const char *id);
/* Ids held now (at most 2 * per_gen). */
size_t seen_count(const struct seen *s);

#endif
