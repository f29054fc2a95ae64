/* auth: HS256 JWT verification (docs/architecture.md §Libraries): the key is always passed (a
 * NULL key would skip the signature), the algorithm is pinned to HS256, exp is
 * required and nbf honoured, claims are type-checked. No I/O; the caller
 * passes the time. */
#ifndef AUTH_H
#define AUTH_H

#include <stddef.h>
#include <time.h>

#include "ids.h"

#define AUTH_MAX_TOKEN 4096
#define AUTH_MAX_USERNAME 128
#define AUTH_LEEWAY_S 0 /* clock skew tolerated on exp/nbf */

struct auth_claims {
    char user_id[IDS_UUID_LEN + 1]; /* sub, or userId; lowercased uuid */
    char username[AUTH_MAX_USERNAME + 1];
    long long exp; /* Unix seconds */
};

/* Verifies tok (len bytes) against key. Returns 0 with *out filled, or -1 with
 * *why set to static text for the log (never shown to the client). */
int auth_verify(struct auth_claims *out, const char *tok, size_t len, const unsigned char *key,
                size_t key_len, time_t now, const char **why);

#endif
