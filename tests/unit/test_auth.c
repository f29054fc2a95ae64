/* Unit tests of auth.c: every token shape of docs/architecture.md §Libraries, minted here with
 * libjwt (or by hand where libjwt refuses to make them). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jwt.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/auth.h"
#include "mem.h"

#define NOW 1800000000L
#define UID "0190a0b0-0000-7000-8000-00000000a11c"

static const char secret[] = "unit-test-secret-0123456789abcdef";

/* Mints a token. exp/nbf < 0: claim left out. */
static char *mint(jwt_alg_t alg, const char *key, const char *sub_claim, const char *sub,
                  const char *username, long exp, long nbf)
{
    jwt_t *jwt;
    assert_int_equal(jwt_new(&jwt), 0);
    if (sub)
        jwt_add_grant(jwt, sub_claim, sub);
    if (username)
        jwt_add_grant(jwt, "username", username);
    if (exp >= 0)
        jwt_add_grant_int(jwt, "exp", exp);
    if (nbf >= 0)
        jwt_add_grant_int(jwt, "nbf", nbf);
    assert_int_equal(jwt_set_alg(jwt, alg, (const unsigned char *)key, key ? (int)strlen(key) : 0), 0);
    char *tok = jwt_encode_str(jwt);
    assert_non_null(tok);
    jwt_free(jwt);
    return tok;
}

static int verify(const char *tok, struct auth_claims *c, const char **why)
{
    return auth_verify(c, tok, strlen(tok), (const unsigned char *)secret, strlen(secret), NOW, why);
}

static void expect_refused(char *tok)
{
    struct auth_claims c;
    const char *why = NULL;
    assert_int_equal(verify(tok, &c, &why), -1);
    assert_non_null(why);
    free(tok);
}

static void test_valid(void **state)
{
    (void)state;
    char *tok = mint(JWT_ALG_HS256, secret, "sub", UID, "alice", NOW + 60, NOW - 5);
    struct auth_claims c;
    const char *why = NULL;
    assert_int_equal(verify(tok, &c, &why), 0);
    assert_string_equal(c.user_id, UID);
    assert_string_equal(c.username, "alice");
    assert_int_equal(c.exp, NOW + 60);
    free(tok);
}

static void test_user_id_claim_and_case(void **state)
{
    (void)state;
    char *tok =
        mint(JWT_ALG_HS256, secret, "userId", "0190A0B0-0000-7000-8000-00000000A11C", "bob", NOW + 60, -1);
    struct auth_claims c;
    const char *why = NULL;
    assert_int_equal(verify(tok, &c, &why), 0);
    assert_string_equal(c.user_id, UID); /* lowercased: one subject per user */
    free(tok);
}

static void test_expired_and_nbf(void **state)
{
    (void)state;
    expect_refused(mint(JWT_ALG_HS256, secret, "sub", UID, "a", NOW - 1, -1));
    expect_refused(mint(JWT_ALG_HS256, secret, "sub", UID, "a", NOW, -1)); /* exp is exclusive */
    expect_refused(mint(JWT_ALG_HS256, secret, "sub", UID, "a", NOW + 60, NOW + 30));
    expect_refused(mint(JWT_ALG_HS256, secret, "sub", UID, "a", -1, -1)); /* no exp */
}

static void test_wrong_algorithms(void **state)
{
    (void)state;
    expect_refused(mint(JWT_ALG_HS384, secret, "sub", UID, "a", NOW + 60, -1));
    expect_refused(mint(JWT_ALG_HS512, secret, "sub", UID, "a", NOW + 60, -1));
    expect_refused(mint(JWT_ALG_HS256, "another-secret", "sub", UID, "a", NOW + 60, -1));
}

static void test_alg_none(void **state)
{
    (void)state;
    /* {"alg":"none","typ":"JWT"} . {"sub":UID,"username":"a","exp":1900000000} . (empty) */
    const char *none =
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
        "eyJzdWIiOiIwMTkwYTBiMC0wMDAwLTcwMDAtODAwMC0wMDAwMDAwMGExMWMiLCJ1c2VybmFtZSI6ImEiLCJleHAiOjE5"
        "MDAwMDAwMDB9.";
    expect_refused(xstrdup(none));
}

static void test_bad_claims(void **state)
{
    (void)state;
    expect_refused(mint(JWT_ALG_HS256, secret, "sub", "not-a-uuid", "a", NOW + 60, -1));
    expect_refused(mint(JWT_ALG_HS256, secret, "sub", UID, NULL, NOW + 60, -1)); /* no username */
    expect_refused(mint(JWT_ALG_HS256, secret, "sub", UID, "", NOW + 60, -1));
    expect_refused(mint(JWT_ALG_HS256, secret, "sub", NULL, "a", NOW + 60, -1)); /* no sub */

    /* sub as a number */
    jwt_t *jwt;
    jwt_new(&jwt);
    jwt_add_grant_int(jwt, "sub", 42);
    jwt_add_grant(jwt, "username", "a");
    jwt_add_grant_int(jwt, "exp", NOW + 60);
    jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret));
    expect_refused(jwt_encode_str(jwt));
    jwt_free(jwt);

    /* exp as a string */
    jwt_new(&jwt);
    jwt_add_grant(jwt, "sub", UID);
    jwt_add_grant(jwt, "username", "a");
    jwt_add_grant(jwt, "exp", "1900000000");
    jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret));
    expect_refused(jwt_encode_str(jwt));
    jwt_free(jwt);
}

static void test_tampered_and_garbage(void **state)
{
    (void)state;
    char *tok = mint(JWT_ALG_HS256, secret, "sub", UID, "alice", NOW + 60, -1);
    char *dot = strchr(tok, '.');
    dot[3] = dot[3] == 'A' ? 'B' : 'A'; /* flip one payload character */
    expect_refused(tok);
    expect_refused(xstrdup("garbage"));
    expect_refused(xstrdup("a.b.c"));
    expect_refused(xstrdup("...."));

    struct auth_claims c;
    const char *why;
    assert_int_equal(auth_verify(&c, "", 0, (const unsigned char *)secret, strlen(secret), NOW, &why), -1);
    char *big = xmalloc(AUTH_MAX_TOKEN + 2);
    memset(big, 'a', AUTH_MAX_TOKEN + 1);
    big[AUTH_MAX_TOKEN + 1] = '\0';
    expect_refused(big);
}

/* base64url of n bytes, no padding, appended to out. */
static void b64url(char *out, const unsigned char *in, size_t n)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *o = out + strlen(out);
    for (size_t i = 0; i < n; i += 3) {
        unsigned v =
            (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        *o++ = a[v >> 18 & 63];
        *o++ = a[v >> 12 & 63];
        if (i + 1 < n)
            *o++ = a[v >> 6 & 63];
        if (i + 2 < n)
            *o++ = a[v & 63];
    }
    *o = '\0';
}

/* A token signed with the secret over header.claims as given (pad: "=" added
 * to the claims segment before signing): the shapes libjwt would take. */
static char *forge(const char *header, const char *claims, int pad)
{
    char *tok = xcalloc(1, 4096);
    b64url(tok, (const unsigned char *)header, strlen(header));
    strcat(tok, ".");
    b64url(tok, (const unsigned char *)claims, strlen(claims));
    if (pad)
        strcat(tok, "=");
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)tok, strlen(tok), mac, &maclen);
    strcat(tok, ".");
    b64url(tok, mac, maclen);
    return tok;
}

#define CLAIMS "\"sub\":\"" UID "\",\"username\":\"a\""
#define H256 "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

static void test_strict_form(void **state)
{
    (void)state;
    struct auth_claims c;
    const char *why = NULL;
    char *ok = forge(H256, "{" CLAIMS ",\"exp\":1800000060}", 0);
    assert_int_equal(verify(ok, &c, &why), 0); /* the forge makes good tokens too */
    free(ok);
    /* duplicate claims: libjwt alone would take the last one */
    expect_refused(
        forge(H256, "{\"sub\":\"0190a0b0-0000-7000-8000-000000000b0b\"," CLAIMS ",\"exp\":1800000060}", 0));
    expect_refused(forge(H256, "{" CLAIMS ",\"exp\":1700000000,\"exp\":1800000060}", 0));
    expect_refused(forge("{\"alg\":\"HS256\",\"alg\":\"HS256\"}", "{" CLAIMS ",\"exp\":1800000060}", 0));
    /* alg exactly HS256; no crit; no padding */
    expect_refused(forge("{\"alg\":\"hs256\"}", "{" CLAIMS ",\"exp\":1800000060}", 0));
    expect_refused(
        forge("{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}", "{" CLAIMS ",\"exp\":1800000060}", 0));
    expect_refused(forge(H256, "{" CLAIMS ",\"exp\":1800000060}", 1));
    /* not JSON objects */
    expect_refused(forge(H256, "[1,2]", 0));
    expect_refused(forge("\"HS256\"", "{" CLAIMS ",\"exp\":1800000060}", 0));
}

static void test_huge_exp(void **state)
{
    (void)state;
    struct auth_claims c;
    const char *why = NULL;
    char *tok = forge(H256, "{" CLAIMS ",\"exp\":9223372036854775807}", 0);
    assert_int_equal(verify(tok, &c, &why), 0); /* valid, and bounded for every caller */
    assert_true(c.exp == NOW + AUTH_MAX_LIFETIME_S);
    assert_true((c.exp - NOW) * 1000000LL > 0);
    free(tok);
}

static void test_no_key_never_verifies(void **state)
{
    (void)state;
    char *tok = mint(JWT_ALG_HS256, secret, "sub", UID, "alice", NOW + 60, -1);
    struct auth_claims c;
    const char *why;
    assert_int_equal(auth_verify(&c, tok, strlen(tok), NULL, 0, NOW, &why), -1);
    assert_int_equal(auth_verify(&c, tok, strlen(tok), (const unsigned char *)"", 0, NOW, &why), -1);
    free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_user_id_claim_and_case),
        cmocka_unit_test(test_expired_and_nbf),
        cmocka_unit_test(test_wrong_algorithms),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_bad_claims),
        cmocka_unit_test(test_tampered_and_garbage),
        cmocka_unit_test(test_no_key_never_verifies),
        cmocka_unit_test(test_strict_form),
        cmocka_unit_test(test_huge_exp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
