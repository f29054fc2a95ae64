/* auth: HS256 JWT verification (docs/architecture.md §Libraries): the key is
 * always passed (a NULL key would skip the signature), the algorithm is
 * pinned to HS256 (the header says exactly "HS256", no "crit"), the segments
 * are strict base64url, a duplicate key anywhere refuses the token, exp is
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
/* exp further than this from now counts as this far (100 years): a lifetime
 * in microseconds stays far from overflowing. */
#define AUTH_MAX_LIFETIME_S (100LL * 366 * 24 * 3600)

struct auth_claims {
    char user_id[IDS_UUID_LEN + 1]; /* sub, or userId; lowercased uuid */
    char username[AUTH_MAX_USERNAME + 1];
    long long exp; /* Unix seconds, at most now + AUTH_MAX_LIFETIME_S */
};

/* Verifies tok (len bytes) against key. Returns 0 with *out filled, or -1 with
 * *why set to static text for the log (never shown to the client). */
int auth_verify(struct auth_claims *out, const char *tok, size_t len, const unsigned char *key,
                size_t key_len, time_t now, const char **why);

#endif
