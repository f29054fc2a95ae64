/* site: small HTTP routes. Static files are served only from below
 * EDGE_STATIC_DIR: the path must be made of safe characters, with no ".."
 * segment, and resolve (realpath) inside the folder. */
#include "site.h"

#include <jansson.h>
#include <jwt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat.h"
#include "edge.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "polling.h"

#define LOGIN_MAX_BODY 1024
#define DEV_TOKEN_TTL_S (24 * 3600)

int site_dev_secret(const char *secret)
{
    return strncmp(secret, "dev-", 4) == 0;
}

static const char *mime_of(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "application/javascript"},
        {".mjs", "application/javascript"},
        {".css", "text/css"},
        {".json", "application/json"},
        {".map", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return "application/octet-stream";
}

static int safe_path(const char *p)
{
    if (p[0] != '/' || strstr(p, "..") || strstr(p, "//"))
        return 0;
    for (; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '/' ||
              *p == '.' || *p == '-' || *p == '_'))
            return 0;
    return 1;
}

static int serve_static(struct lws *wsi, struct ws_pss *pss, struct edge *e, const char *path)
{
    char root[PATH_MAX], want[PATH_MAX * 2], real[PATH_MAX];
    if (!*e->cfg->static_dir || !realpath(e->cfg->static_dir, root) || !safe_path(path))
        return polling_respond(wsi, pss, HTTP_STATUS_NOT_FOUND, "text/plain", "not found\n", 10);
    snprintf(want, sizeof want, "%s%s", root, strcmp(path, "/") == 0 ? "/index.html" : path);
    size_t rlen = strlen(root);
    if (!realpath(want, real) || strncmp(real, root, rlen) != 0 || (real[rlen] != '/' && real[rlen] != '\0'))
        return polling_respond(wsi, pss, HTTP_STATUS_NOT_FOUND, "text/plain", "not found\n", 10);
    int n = lws_serve_http_file(wsi, real, mime_of(real), NULL, 0);
    if (n < 0)
        return -1;
    if (n > 0 && lws_http_transaction_completed(wsi))
        return -1;
    return 0;
}

static int health(struct lws *wsi, struct ws_pss *pss, struct edge *e)
{
    int ok = e->conformance || bus_connected(&e->bus);
    const char *body = ok ? "{\"status\":\"ok\"}\n" : "{\"status\":\"unavailable\",\"nats\":false}\n";
    return polling_respond(wsi, pss, ok ? HTTP_STATUS_OK : HTTP_STATUS_SERVICE_UNAVAILABLE,
                           "application/json", body, strlen(body));
}

static int metrics(struct lws *wsi, struct ws_pss *pss, struct edge *e)
{
    size_t polling = 0, websocket = 0, i;
    for (struct map_entry *m = map_first(&e->sessions, &i); m; m = map_next(&e->sessions, m, &i))
        if (((struct session *)m->value)->transport == SESSION_POLLING)
            polling++;
        else
            websocket++;
    metrics_set("chat_edge_sessions", "transport=\"polling\"", (double)polling);
    metrics_set("chat_edge_sessions", "transport=\"websocket\"", (double)websocket);
    if (e->bus.nc) {
        natsStatistics *st = NULL;
        uint64_t reconnects = 0;
        if (natsStatistics_Create(&st) == NATS_OK && natsConnection_GetStats(e->bus.nc, st) == NATS_OK)
            natsStatistics_GetCounts(st, NULL, NULL, NULL, NULL, &reconnects);
        natsStatistics_Destroy(st);
        metrics_set("chat_edge_nats_reconnects_total", NULL, (double)reconnects);
        metrics_set("chat_edge_nats_connected", NULL, bus_connected(&e->bus));
    }
    char *text = metrics_render();
    int rc = polling_respond(wsi, pss, HTTP_STATUS_OK, "text/plain; version=0.0.4", text, strlen(text));
    free(text);
    return rc;
}

int site_request(struct lws *wsi, struct ws_pss *pss, struct edge *e, const char *path)
{
    char *uri;
    int ulen;
    int method = lws_http_get_uri_and_method(wsi, &uri, &ulen);
    pss->role = WS_ROLE_NONE;
    pss->body.len = 0;
    pss->close_after = 0;
    free(pss->origin);
    pss->origin = NULL;
    pss->preflight = 0;
    if (method == LWSHUMETH_GET && strcmp(path, "/healthz") == 0)
        return health(wsi, pss, e);
    if (method == LWSHUMETH_GET && strcmp(path, "/metrics") == 0)
        return metrics(wsi, pss, e);
    if (method == LWSHUMETH_POST && strcmp(path, "/dev/login") == 0 && e->dev_login) {
        char clen[24];
        if (lws_hdr_copy(wsi, clen, sizeof clen, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0 ||
            strtoul(clen, NULL, 10) > LOGIN_MAX_BODY) {
            pss->close_after = 1;
            return polling_respond(wsi, pss, HTTP_STATUS_REQ_ENTITY_TOO_LARGE, "text/plain", "bad length\n",
                                   11);
        }
        pss->role = WS_ROLE_LOGIN;
        if (strtoul(clen, NULL, 10) == 0)
            return site_body_done(wsi, pss, e);
        return 0;
    }
    if (method == LWSHUMETH_GET)
        return serve_static(wsi, pss, e, path);
    pss->close_after = 1;
    return polling_respond(wsi, pss, HTTP_STATUS_NOT_FOUND, "text/plain", "not found\n", 10);
}

int site_body(struct lws *wsi, struct ws_pss *pss, const void *in, size_t len)
{
    (void)wsi;
    if (pss->body.len + len > LOGIN_MAX_BODY)
        return -1;
    buf_append(&pss->body, in, len);
    return 0;
}

/* The same user name always gets the same user id (a name-based uuid), so a
 * returning demo user finds their history. */
static void name_uuid(char *out, const char *name)
{
    uint64_t h1 = 1469598103934665603ULL, h2 = 7809847782465536322ULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h1 = (h1 ^ *p) * 1099511628211ULL;
        h2 = (h2 ^ *p) * 0x100000001b3ULL + 0x9e3779b97f4a7c15ULL;
    }
    h1 = (h1 & 0xffffffffffff0fffULL) | 0x0000000000008000ULL; /* version 8 */
    h2 = (h2 & 0x3fffffffffffffffULL) | 0x8000000000000000ULL; /* variant 10 */
    snprintf(out, 37, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(h1 >> 32), (unsigned)((h1 >> 16) & 0xffff),
             (unsigned)(h1 & 0xffff), (unsigned)(h2 >> 48), (unsigned long long)(h2 & 0xffffffffffffULL));
}

int site_body_done(struct lws *wsi, struct ws_pss *pss, struct edge *e)
{
    if (pss->role != WS_ROLE_LOGIN)
        return 0;
    pss->role = WS_ROLE_NONE;
    json_t *req =
        json_loadb(pss->body.data ? pss->body.data : "", pss->body.len, JSON_REJECT_DUPLICATES, NULL);
    json_t *name = json_object_get(req, "username");
    size_t nlen = json_string_length(name);
    int ok = json_is_string(name) && nlen >= 1 && nlen <= 32;
    for (const char *p = ok ? json_string_value(name) : ""; ok && *p; p++)
        ok = (unsigned char)*p >= 0x20 && *p != 0x7f;
    if (!ok) {
        json_decref(req);
        const char *msg = "{\"error\":\"username must be 1 to 32 printable characters\"}";
        return polling_respond(wsi, pss, HTTP_STATUS_BAD_REQUEST, "application/json", msg, strlen(msg));
    }
    char id[37];
    name_uuid(id, json_string_value(name));
    jwt_t *jwt = NULL;
    char *tok = NULL;
    if (jwt_new(&jwt) == 0 && jwt_add_grant(jwt, "sub", id) == 0 &&
        jwt_add_grant(jwt, "username", json_string_value(name)) == 0 &&
        jwt_add_grant_int(jwt, "exp", (long)time(NULL) + DEV_TOKEN_TTL_S) == 0 &&
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)e->cfg->jwt_secret,
                    (int)strlen(e->cfg->jwt_secret)) == 0)
        tok = jwt_encode_str(jwt);
    jwt_free(jwt);
    json_t *res = json_pack("{s:s,s:s,s:O}", "token", tok ? tok : "", "userId", id, "username", name);
    free(tok);
    char *text = json_dumps(res, JSON_COMPACT);
    log_warn("dev login user=%s (EDGE_DEV_LOGIN is on: never in production)", id);
    int rc = polling_respond(wsi, pss, HTTP_STATUS_OK, "application/json", text, strlen(text));
    free(text);
    json_decref(res);
    json_decref(req);
    return rc;
}
