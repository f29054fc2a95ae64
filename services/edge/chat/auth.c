/* auth: the token's raw form is checked first, strictly: three base64url
 * segments without padding, a header and claims that are JSON objects
 * without a duplicate key (libjwt parses with "the last duplicate wins", so
 * {"sub":A,"sub":B} would read as B), alg exactly "HS256", no "crit". Then
 * libjwt 1.10 checks the signature, and the claims are read from our own
 * parse with jansson so that every type is checked (libjwt's int getter
 * cannot tell a missing claim from a string). */
#include "auth.h"

#include <jansson.h>
#include <jwt.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

/* Decodes one base64url segment (no padding, nothing outside the alphabet)
 * into a JSON object without duplicate keys; NULL when it is anything else. */
static json_t *segment_json(const char *seg, size_t len)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    if (len == 0 || len % 4 == 1)
        return NULL;
    unsigned char *out = xmalloc(len * 3 / 4 + 3);
    size_t n = 0;
    unsigned bits = 0, acc = 0;
    for (size_t i = 0; i < len; i++) {
        const char *p = memchr(alphabet, seg[i], 64);
        if (!p || !seg[i]) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (unsigned)(p - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    json_t *j = json_loadb((const char *)out, n, JSON_REJECT_DUPLICATES, NULL);
    free(out);
    if (!json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* The token's form: see the file comment. Returns the claims (new
 * reference), or NULL with *why. */
static json_t *raw_check(const char *tok, size_t len, const char **why)
{
    const char *d1 = memchr(tok, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok)) || d2 + 1 == tok + len) {
        *why = "not three segments";
        return NULL;
    }
    json_t *header = segment_json(tok, (size_t)(d1 - tok));
    json_t *claims = segment_json(d1 + 1, (size_t)(d2 - d1 - 1));
    const char *alg = json_string_value(json_object_get(header, "alg"));
    if (!header || !claims)
        *why = "header or claims not a base64url JSON object without duplicate keys";
    else if (!alg || strcmp(alg, "HS256") != 0)
        *why = "algorithm is not HS256";
    else if (json_object_get(header, "crit"))
        *why = "crit header";
    json_decref(header);
    if (*why) {
        json_decref(claims);
        return NULL;
    }
    return claims;
}

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
    char *tokz = NULL;
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
    if (!(claims = raw_check(tok, len, why)))
        goto out;
    tokz = xstrndup(tok, len);
    if (jwt_decode(&jwt, tokz, key, (int)key_len) != 0 || !jwt || jwt_get_alg(jwt) != JWT_ALG_HS256) {
        *why = "bad token or signature";
        goto out;
    }
    long long exp = int_claim(claims, "exp");
    if (exp < 0 || (long long)now - AUTH_LEEWAY_S >= exp) {
        *why = exp < 0 ? "exp missing or not an integer" : "token expired";
        goto out;
    }
    long long nbf = int_claim(claims, "nbf");
    if (nbf == -2 ||
        (nbf > 0 && (long long)now + AUTH_LEEWAY_S < nbf)) { /* now is a real time: no overflow */
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
    /* Any exp a JSON integer can hold is accepted; the lifetime is counted
     * from a bounded one so that no caller's arithmetic can overflow. */
    out->exp = exp - (long long)now > AUTH_MAX_LIFETIME_S ? (long long)now + AUTH_MAX_LIFETIME_S : exp;
    rc = 0;
out:
    json_decref(claims);
    jwt_free(jwt);
    free(tokz);
    return rc;
}
