/* auth: libjwt 1.10 decodes and checks the signature; the claims are then read
 * as JSON with jansson so that every type is checked (libjwt's int getter
 * cannot tell a missing claim from a string). */
#include "auth.h"

#include <jansson.h>
#include <jwt.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

/* A JSON integer claim, or -1 when absent; -2 when present but not a positive
 * integer. */
static long long int_claim(json_t *claims, const char *name)
{
    json_t *v = json_object_get(claims, name);
    if (!v)
        return -1;
    if (!json_is_integer(v) || json_integer_value(v) <= 0)
        return -2;
    return json_integer_value(v);
}

int auth_verify(struct auth_claims *out, const char *tok, size_t len, const unsigned char *key,
                size_t key_len, time_t now, const char **why)
{
    jwt_t *jwt = NULL;
    json_t *claims = NULL;
    char *tokz = NULL, *grants = NULL;
    int rc = -1;

    *why = NULL;
    if (!key || key_len == 0) {
        *why = "no key"; /* a NULL key means no signature check in libjwt */
        return -1;
    }
    if (len == 0 || len > AUTH_MAX_TOKEN || memchr(tok, '\0', len)) {
        *why = "token empty, too long or with NUL";
        return -1;
    }
    tokz = xstrndup(tok, len);
    if (jwt_decode(&jwt, tokz, key, (int)key_len) != 0 || !jwt) {
        *why = "bad token or signature";
        goto out;
    }
    if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
        *why = "algorithm is not HS256";
        goto out;
    }
    grants = jwt_get_grants_json(jwt, NULL);
    claims = grants ? json_loads(grants, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (!json_is_object(claims)) {
        *why = "claims are not an object";
        goto out;
    }
    long long exp = int_claim(claims, "exp");
    if (exp < 0 || (long long)now >= exp + AUTH_LEEWAY_S) {
        *why = exp < 0 ? "exp missing or not an integer" : "token expired";
        goto out;
    }
    long long nbf = int_claim(claims, "nbf");
    if (nbf == -2 || (nbf > 0 && (long long)now + AUTH_LEEWAY_S < nbf)) {
        *why = "token not yet valid (nbf)";
        goto out;
    }
    json_t *sub = json_object_get(claims, "sub");
    if (!sub)
        sub = json_object_get(claims, "userId");
    if (!json_is_string(sub) ||
        ids_uuid_norm(out->user_id, json_string_value(sub), json_string_length(sub))) {
        *why = "sub/userId is not a uuid string";
        goto out;
    }
    json_t *name = json_object_get(claims, "username");
    size_t nlen = json_string_length(name);
    if (!json_is_string(name) || nlen == 0 || nlen > AUTH_MAX_USERNAME ||
        memchr(json_string_value(name), '\0', nlen)) {
        *why = "username missing, empty or too long";
        goto out;
    }
    memcpy(out->username, json_string_value(name), nlen + 1);
    out->exp = exp;
    rc = 0;
out:
    json_decref(claims);
    free(grants);
    jwt_free(jwt);
    free(tokz);
    return rc;
}
