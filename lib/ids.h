/* ids: identifiers: uuid validation (normalised to lowercase, so NATS subjects
 * and database keys agree), random base64url ids for sessions and sockets, and
 * UUIDv7 for message ids. */
#ifndef IDS_H
#define IDS_H

#include <stddef.h>

#define IDS_UUID_LEN 36

/* Copies a canonical 8-4-4-4-12 hex uuid of exactly len bytes into out
 * (IDS_UUID_LEN + 1 bytes), lowercased. Returns 0, or -1 if it is not one. */
int ids_uuid_norm(char *out, const char *s, size_t len);
/* Writes n random base64url characters and a NUL into out (n + 1 bytes). */
void ids_random(char *out, size_t n);
/* Writes a UUIDv7 (RFC 9562) for the Unix time ms into out (37 bytes). */
void ids_uuid7(char *out, long long ms);
/* The partition (0..n-1) of a key: FNV-1a, the same in every process. */
unsigned ids_partition(const char *key, unsigned n);

#endif
