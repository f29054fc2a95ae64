/* fuzz_jwt: libFuzzer target for JWT verification (auth.c on libjwt). Byte 0
 * picks how the rest of the input reaches auth_verify with a fixed key:
 *   0  the whole token;
 *   1  the header segment (base64url of the input) of a token signed with
 *      the key, whose payload is valid;
 *   2  the payload segment (base64url of the input) of a signed token with a
 *      valid HS256 header, so the claim checks see any JSON;
 *   3  the payload segment as raw text (not base64url), signed: libjwt's
 *      base64 decoder gets the junk;
 *   4  the header segment as raw text, signed.
 * Byte 0 / 5 picks the signature: HMAC with SHA-256, -384 or -512 (libcrypto,
 * which libjwt itself uses), so a token whose header names HS384 or HS512
 * passes libjwt and reaches auth.c's own algorithm check. An accepted token
 * must yield claims that keep auth.h's promises. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/auth.h"
#include "mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW 1800000000L

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_jwt: check failed: %s (line %d)\n", #cond, __LINE__);                      \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

static const char key[] = "fuzz-secret-0123456789abcdef0123";
static const char header_json[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
static const char claims_json[] =
    "{\"sub\":\"0190A0B0-0000-7000-8000-00000000A11C\",\"username\":\"alice\",\"exp\":1900000000}";

/* RFC 7515 §2: base64url without padding. */
static void b64url(struct buf *out, const uint8_t *p, size_t n)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned long v = (unsigned long)p[i] << 16 | (unsigned long)p[i + 1] << 8 | p[i + 2];
        char q[4] = {a[v >> 18 & 63], a[v >> 12 & 63], a[v >> 6 & 63], a[v & 63]};
        buf_append(out, q, 4);
    }
    if (n - i == 1) {
        unsigned long v = (unsigned long)p[i] << 16;
        char q[2] = {a[v >> 18 & 63], a[v >> 12 & 63]};
        buf_append(out, q, 2);
    } else if (n - i == 2) {
        unsigned long v = (unsigned long)p[i] << 16 | (unsigned long)p[i + 1] << 8;
        char q[3] = {a[v >> 18 & 63], a[v >> 12 & 63], a[v >> 6 & 63]};
        buf_append(out, q, 3);
    }
}

/* Appends one segment: raw bytes, or their base64url. */
static void segment(struct buf *tok, const void *p, size_t n, int raw)
{
    if (raw)
        buf_append(tok, p, n);
    else
        b64url(tok, p, n);
}

/* tok holds "header.payload": appends "." and its HMAC signature. */
static void sign(struct buf *tok, const EVP_MD *md)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    buf_reserve(tok, 0); /* so data is not NULL */
    CHECK(HMAC(md, key, (int)strlen(key), (const unsigned char *)tok->data, tok->len, mac, &mac_len));
    buf_putc(tok, '.');
    b64url(tok, mac, mac_len);
}

static void verify(const char *tok, size_t len)
{
    struct auth_claims c;
    const char *why = NULL;
    /* An exact-size heap copy: auth_verify must not read past len. */
    char *t = xmalloc(len);
    if (len)
        memcpy(t, tok, len);
    int rc = auth_verify(&c, t, len, (const unsigned char *)key, strlen(key), NOW, &why);
    free(t);
    if (rc != 0) {
        CHECK(rc == -1 && why != NULL);
        return;
    }
    CHECK(strlen(c.user_id) == IDS_UUID_LEN);
    for (size_t i = 0; i < IDS_UUID_LEN; i++)
        CHECK(!(c.user_id[i] >= 'A' && c.user_id[i] <= 'F'));
    size_t n = strlen(c.username);
    CHECK(n >= 1 && n <= AUTH_MAX_USERNAME);
    CHECK(c.exp > NOW);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int mode = data[0] % 5;
    int hash = data[0] / 5 % 3;
    const uint8_t *in = data + 1;
    size_t n = size - 1;
    if (mode == 0) {
        verify((const char *)in, n);
        return 0;
    }
    struct buf tok;
    buf_init(&tok);
    if (mode == 1 || mode == 4)
        segment(&tok, in, n, mode == 4);
    else
        b64url(&tok, (const uint8_t *)header_json, strlen(header_json));
    buf_putc(&tok, '.');
    if (mode == 2 || mode == 3)
        segment(&tok, in, n, mode == 3);
    else
        b64url(&tok, (const uint8_t *)claims_json, strlen(claims_json));
    sign(&tok, hash == 0 ? EVP_sha256() : hash == 1 ? EVP_sha384() : EVP_sha512());
    verify(tok.data, tok.len);
    buf_cleanup(&tok);
    return 0;
}
