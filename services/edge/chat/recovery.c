/* recovery: see recovery.h. A pid is 77 bytes in base64url without padding:
 *   [0]       version 1
 *   [1..16]   the user id (a uuid, as its 16 bytes)
 *   [17..32]  the boot id of the edge process that opened the socket
 *   [33..52]  the socket id
 *   [53..60]  start, big-endian
 *   [61..76]  HMAC-SHA256 of bytes 0..60, first 16 bytes */
#include "recovery.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#define PID_VERSION 1
#define PID_BODY 61
#define PID_MAC 16
#define PID_BYTES (PID_BODY + PID_MAC)
#define PID_CHARS ((PID_BYTES * 4 + 2) / 3) /* base64url, no padding: 103 */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void recovery_key(uint8_t key[RECOVERY_KEY_LEN], const char *jwt_secret, size_t len)
{
    static const char label[] = "chat-edge connection state recovery pid v1";
    unsigned int n = RECOVERY_KEY_LEN;
    HMAC(EVP_sha256(), jwt_secret, (int)len, (const unsigned char *)label, sizeof label - 1, key, &n);
}

static void mac(uint8_t out[PID_MAC], const uint8_t *body, const uint8_t key[RECOVERY_KEY_LEN])
{
    uint8_t full[32];
    unsigned int n = sizeof full;
    HMAC(EVP_sha256(), key, RECOVERY_KEY_LEN, body, PID_BODY, full, &n);
    memcpy(out, full, PID_MAC);
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* An id of exactly n base64url characters. */
static int id_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!s[i] || !strchr(b64, s[i]))
            return 0;
    return s[n] == '\0';
}

int recovery_pid_write(char out[RECOVERY_PID_MAX], const struct recovery_pid *p,
                       const uint8_t key[RECOVERY_KEY_LEN])
{
    uint8_t raw[PID_BYTES];
    char uuid[IDS_UUID_LEN + 1];
    if (ids_uuid_norm(uuid, p->user_id, strlen(p->user_id)) != 0 || !id_ok(p->boot_id, RECOVERY_BOOT_LEN) ||
        !id_ok(p->sid, RECOVERY_SID_LEN))
        return -1;
    raw[0] = PID_VERSION;
    for (size_t i = 0, j = 1; i < IDS_UUID_LEN; i++) {
        if (uuid[i] == '-')
            continue;
        raw[j++] = (uint8_t)(hexval(uuid[i]) << 4 | hexval(uuid[i + 1]));
        i++;
    }
    memcpy(raw + 17, p->boot_id, RECOVERY_BOOT_LEN);
    memcpy(raw + 33, p->sid, RECOVERY_SID_LEN);
    for (int i = 0; i < 8; i++)
        raw[53 + i] = (uint8_t)(p->start >> (56 - 8 * i));
    mac(raw + PID_BODY, raw, key);
    size_t o = 0;
    for (size_t i = 0; i < PID_BYTES; i += 3) {
        uint32_t v = (uint32_t)raw[i] << 16;
        size_t left = PID_BYTES - i;
        if (left > 1)
            v |= (uint32_t)raw[i + 1] << 8;
        if (left > 2)
            v |= raw[i + 2];
        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        if (left > 1)
            out[o++] = b64[v >> 6 & 63];
        if (left > 2)
            out[o++] = b64[v & 63];
    }
    out[o] = '\0';
    return 0;
}

static int b64val(unsigned char c)
{
    const char *p = c ? strchr(b64, c) : NULL;
    return p ? (int)(p - b64) : -1;
}

int recovery_pid_read(struct recovery_pid *p, const char *pid, size_t len,
                      const uint8_t key[RECOVERY_KEY_LEN])
{
    uint8_t raw[PID_BYTES];
    if (len != PID_CHARS)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64val((unsigned char)pid[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == PID_BYTES)
                return -1;
            raw[o++] = (uint8_t)(acc >> bits);
        }
    }
    /* 103 characters carry 618 bits: the 2 left over must be zero (one
     * spelling per pid). */
    if (o != PID_BYTES || (acc & ((1u << bits) - 1)) != 0)
        return -1;
    uint8_t want[PID_MAC];
    mac(want, raw, key);
    if (CRYPTO_memcmp(want, raw + PID_BODY, PID_MAC) != 0 || raw[0] != PID_VERSION)
        return -1;
    static const char hex[] = "0123456789abcdef";
    char *u = p->user_id;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *u++ = '-';
        *u++ = hex[raw[1 + i] >> 4];
        *u++ = hex[raw[1 + i] & 15];
    }
    *u = '\0';
    memcpy(p->boot_id, raw + 17, RECOVERY_BOOT_LEN);
    p->boot_id[RECOVERY_BOOT_LEN] = '\0';
    memcpy(p->sid, raw + 33, RECOVERY_SID_LEN);
    p->sid[RECOVERY_SID_LEN] = '\0';
    p->start = 0;
    for (int i = 0; i < 8; i++)
        p->start = p->start << 8 | raw[53 + i];
    /* Signed by an edge: the ids are what an edge writes, but a pid is
     * checked like any input. */
    return id_ok(p->boot_id, RECOVERY_BOOT_LEN) && id_ok(p->sid, RECOVERY_SID_LEN) ? 0 : -1;
}

int recovery_offset_read(uint64_t *out, const char *s, size_t len)
{
    if (len == 0 || len > 20 || (s[0] == '0' && len > 1))
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

enum recovery_ask recovery_connect_read(const json_t *auth, const char *user_id,
                                        const uint8_t key[RECOVERY_KEY_LEN], struct recovery_pid *p,
                                        uint64_t *offset)
{
    const json_t *pid = json_is_object(auth) ? json_object_get(auth, "pid") : NULL;
    if (!pid || json_is_null(pid))
        return RECOVERY_NONE;
    if (!json_is_string(pid) ||
        recovery_pid_read(p, json_string_value(pid), json_string_length(pid), key) != 0 ||
        strcmp(p->user_id, user_id) != 0)
        return RECOVERY_INVALID;
    const json_t *off = json_object_get(auth, "offset");
    *offset = p->start;
    if (off && !json_is_null(off)) {
        uint64_t v;
        if (!json_is_string(off) ||
            recovery_offset_read(&v, json_string_value(off), json_string_length(off)) != 0)
            return RECOVERY_INVALID;
        if (v > p->start)
            *offset = v;
    }
    return RECOVERY_ASKED;
}
