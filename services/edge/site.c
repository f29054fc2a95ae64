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

#include "log.h"
#include "mem.h"
#include "metrics.h"

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

static int not_found(struct lws *wsi, struct http_conn *h)
{
    return http_respond(wsi, h, HTTP_STATUS_NOT_FOUND, "text/plain", "not found\n", 10);
}

static int serve_static(struct lws *wsi, struct http_conn *h, struct site *site, const char *path)
{
    char root[PATH_MAX], want[PATH_MAX * 2], real[PATH_MAX];
    if (!*site->static_dir || !realpath(site->static_dir, root) || !safe_path(path))
        return not_found(wsi, h);
    snprintf(want, sizeof want, "%s%s", root, strcmp(path, "/") == 0 ? "/index.html" : path);
    size_t rlen = strlen(root);
    if (!realpath(want, real) || strncmp(real, root, rlen) != 0 || (real[rlen] != '/' && real[rlen] != '\0'))
        return not_found(wsi, h);
    int n = lws_serve_http_file(wsi, real, mime_of(real), NULL, 0);
    if (n < 0)
        return -1;
    if (n > 0 && lws_http_transaction_completed(wsi))
        return -1;
    return 0;
}

static int health(struct lws *wsi, struct http_conn *h, struct site *site)
{
    int ok = !site->healthy || site->healthy(site->ctx);
    const char *body = ok ? "{\"status\":\"ok\"}\n" : "{\"status\":\"unavailable\",\"nats\":false}\n";
    return http_respond(wsi, h, ok ? HTTP_STATUS_OK : HTTP_STATUS_SERVICE_UNAVAILABLE, "application/json",
                        body, strlen(body));
}

static int metrics(struct lws *wsi, struct http_conn *h, struct site *site)
{
    if (site->gauges)
        site->gauges(site->ctx);
    char *text = metrics_render();
    int rc = http_respond(wsi, h, HTTP_STATUS_OK, "text/plain; version=0.0.4", text, strlen(text));
    free(text);
    return rc;
}

static int login(void *ctx, struct lws *wsi, struct http_conn *h);

static int request(void *ctx, struct lws *wsi, struct http_conn *h, const char *path, int *want_body)
{
    struct site *site = ctx;
    char *uri;
    int ulen;
    int method = lws_http_get_uri_and_method(wsi, &uri, &ulen);
    if (method == LWSHUMETH_GET && strcmp(path, "/healthz") == 0)
        return health(wsi, h, site);
    if (method == LWSHUMETH_GET && strcmp(path, "/metrics") == 0)
        return metrics(wsi, h, site);
    if (method == LWSHUMETH_GET && strcmp(path, "/dev/login") == 0 && site->dev_login) {
        /* The demo page asks whether to offer the dev login (404 when it is off). */
        static const char on[] = "{\"devLogin\":true}";
        return http_respond(wsi, h, HTTP_STATUS_OK, "application/json", on, sizeof on - 1);
    }
    if (method == LWSHUMETH_POST && strcmp(path, "/dev/login") == 0 && site->dev_login) {
        long long clen = http_content_length(wsi);
        if (clen == -2) {
            h->close_after = 1;
            return http_respond(wsi, h, HTTP_STATUS_BAD_REQUEST, "text/plain", "bad framing\n", 12);
        }
        if (clen < 0 || clen > LOGIN_MAX_BODY) {
            h->close_after = 1;
            return http_respond(wsi, h, HTTP_STATUS_REQ_ENTITY_TOO_LARGE, "text/plain", "bad length\n", 11);
        }
        if (clen == 0)
            return login(ctx, wsi, h);
        *want_body = 1;
        return 0;
    }
    if (method == LWSHUMETH_GET)
        return serve_static(wsi, h, site, path);
    h->close_after = 1;
    return not_found(wsi, h);
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

static int login(void *ctx, struct lws *wsi, struct http_conn *h)
{
    struct site *site = ctx;
    json_t *req = json_loadb(h->body.data ? h->body.data : "", h->body.len, JSON_REJECT_DUPLICATES, NULL);
    json_t *name = json_object_get(req, "username");
    size_t nlen = json_string_length(name);
    int ok = json_is_string(name) && nlen >= 1 && nlen <= 32;
    for (const char *p = ok ? json_string_value(name) : ""; ok && *p; p++)
        ok = (unsigned char)*p >= 0x20 && *p != 0x7f;
    if (!ok) {
        json_decref(req);
        const char *msg = "{\"error\":\"username must be 1 to 32 printable characters\"}";
        return http_respond(wsi, h, HTTP_STATUS_BAD_REQUEST, "application/json", msg, strlen(msg));
    }
    char id[37];
    name_uuid(id, json_string_value(name));
    jwt_t *jwt = NULL;
    char *tok = NULL;
    if (jwt_new(&jwt) == 0 && jwt_add_grant(jwt, "sub", id) == 0 &&
        jwt_add_grant(jwt, "username", json_string_value(name)) == 0 &&
        jwt_add_grant_int(jwt, "exp", (long)time(NULL) + DEV_TOKEN_TTL_S) == 0 &&
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)site->jwt_secret,
                    (int)strlen(site->jwt_secret)) == 0)
        tok = jwt_encode_str(jwt);
    jwt_free(jwt);
    json_t *res = json_pack("{s:s,s:s,s:O}", "token", tok ? tok : "", "userId", id, "username", name);
    free(tok);
    char *text = json_dumps(res, JSON_COMPACT);
    log_warn("dev login user=%s (EDGE_DEV_LOGIN is on: never in production)", id);
    int rc = http_respond(wsi, h, HTTP_STATUS_OK, "application/json", text, strlen(text));
    free(text);
    json_decref(res);
    json_decref(req);
    return rc;
}

const struct server_routes site_routes = {
    .request = request,
    .body_done = login,
    .max_body = LOGIN_MAX_BODY,
};
