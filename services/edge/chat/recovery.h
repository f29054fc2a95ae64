/* recovery: the pieces of Socket.IO's connection state recovery that a client
 * hands back (docs/protocol.md §3.8). A CONNECT reply carries a pid: this
 * edge's signed statement "socket <sid> of user <user>, opened on the edge
 * process <boot>, whose deliveries start after stream sequence <start>". A
 * client that lost its connection sends the pid back in its next CONNECT
 * with the offset of the last recoverable event it got (a CHAT_EVENTS stream
 * sequence, as a decimal string). Both are untrusted input: a pid is taken
 * only with a valid signature (HMAC-SHA256 with a key every edge derives from
 * the JWT secret), and only for the user of the token that comes with it.
 * Pure: no I/O, no clock. */
#ifndef RECOVERY_H
#define RECOVERY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "ids.h"

#define RECOVERY_BOOT_LEN 16 /* an edge's boot id */
#define RECOVERY_SID_LEN 20  /* a socket id */
#define RECOVERY_KEY_LEN 32
#define RECOVERY_PID_MAX 128 /* longest pid written, with its NUL */

struct recovery_pid {
    char user_id[IDS_UUID_LEN + 1];
    char boot_id[RECOVERY_BOOT_LEN + 1];
    char sid[RECOVERY_SID_LEN + 1];
    uint64_t start; /* the stream sequence the socket's deliveries follow */
};

/* The pid key of a deployment: derived from its JWT secret. */
void recovery_key(uint8_t key[RECOVERY_KEY_LEN], const char *jwt_secret, size_t len);
/* Writes p as a pid (base64url) into out (RECOVERY_PID_MAX bytes). p's ids
 * must have their exact lengths (user a lowercased uuid). Returns 0, or -1. */
int recovery_pid_write(char out[RECOVERY_PID_MAX], const struct recovery_pid *p,
                       const uint8_t key[RECOVERY_KEY_LEN]);
/* Reads a pid of len bytes. Returns 0 with *p filled when it is well formed
 * and signed with key, -1 otherwise. */
int recovery_pid_read(struct recovery_pid *p, const char *pid, size_t len,
                      const uint8_t key[RECOVERY_KEY_LEN]);
/* Reads an offset: a decimal stream sequence, 1 to 20 digits, no sign, no
 * leading zero, at most UINT64_MAX. Returns 0, or -1. */
int recovery_offset_read(uint64_t *out, const char *s, size_t len);

/* What a CONNECT's payload asks for. */
enum recovery_ask {
    RECOVERY_NONE,    /* no pid: a new session */
    RECOVERY_INVALID, /* a pid or offset that cannot be taken: a new session */
    RECOVERY_ASKED,   /* a valid pid of user_id, *offset set */
};

/* Reads the pid and offset of a CONNECT payload (auth, any JSON or NULL) for
 * the user the token names. A missing offset is the pid's start; an offset
 * before it is the start too (nothing of the session came before). */
enum recovery_ask recovery_connect_read(const json_t *auth, const char *user_id,
                                        const uint8_t key[RECOVERY_KEY_LEN], struct recovery_pid *p,
                                        uint64_t *offset);

#endif
