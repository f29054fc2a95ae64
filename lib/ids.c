/* ids: random bytes come from getrandom(2), which never blocks once the
 * kernel pool is initialised. */
#include "ids.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

static void random_bytes(void *p, size_t n)
{
    uint8_t *b = p;
    while (n > 0) {
        ssize_t r = getrandom(b, n, 0);
        if (r <= 0)
            continue; /* EINTR: try again */
        b += r;
        n -= (size_t)r;
    }
}

int ids_uuid_norm(char *out, const char *s, size_t len)
{
    if (len != IDS_UUID_LEN)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return -1;
        } else if (c >= '0' && c <= '9') {
        } else if (c >= 'a' && c <= 'f') {
        } else if (c >= 'A' && c <= 'F') {
            c = (char)(c - 'A' + 'a');
        } else {
            return -1;
        }
        out[i] = c;
    }
    out[len] = '\0';
    return 0;
}

void ids_random(char *out, size_t n)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t raw[64];
    while (n > 0) {
        size_t k = n < sizeof raw ? n : sizeof raw;
        random_bytes(raw, k);
        for (size_t i = 0; i < k; i++)
            *out++ = alphabet[raw[i] & 63];
        n -= k;
    }
    *out = '\0';
}

void ids_uuid7(char *out, long long ms)
{
    uint8_t b[16];
    random_bytes(b, sizeof b);
    for (int i = 0; i < 6; i++)
        b[i] = (uint8_t)((unsigned long long)ms >> (40 - 8 * i));
    b[6] = (uint8_t)(0x70 | (b[6] & 0x0f)); /* version 7 */
    b[8] = (uint8_t)(0x80 | (b[8] & 0x3f)); /* variant 10 */
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

unsigned ids_partition(const char *key, unsigned n)
{
    uint32_t h = 2166136261u;
    for (; *key; key++) {
        h ^= (unsigned char)*key;
        h *= 16777619u;
    }
    return n ? h % n : 0;
}
