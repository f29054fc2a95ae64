/* http: see http.h. */
#include "http.h"

#include <stdlib.h>
#include <string.h>

void http_reset(struct http_conn *h)
{
    free(h->origin);
    buf_cleanup(&h->body);
    memset(h, 0, sizeof *h);
}

/* Sets h->origin to the request's Origin when allowed lets it in. */
static void cors_check(struct lws *wsi, struct http_conn *h, const char *allowed)
{
    char origin[256];
    free(h->origin);
    h->origin = NULL;
    if (!*allowed || lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) <= 0)
        return;
    for (const char *c = origin; *c; c++)
        if ((unsigned char)*c < 0x21 || (unsigned char)*c > 0x7e)
            return; /* never echo control characters into a header */
    size_t olen = strlen(origin);
    if (strcmp(allowed, "*") != 0) {
        const char *p = allowed;
        int ok = 0;
        while (*p && !ok) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            while (n > 0 && p[0] == ' ')
                p++, n--;
            while (n > 0 && p[n - 1] == ' ')
                n--;
            ok = n == olen && memcmp(p, origin, n) == 0;
            p = comma ? comma + 1 : p + n;
        }
        if (!ok)
            return;
    }
    h->origin = xstrdup(origin);
}

void http_begin(struct lws *wsi, struct http_conn *h, const char *allowed)
{
    http_reset(h);
    cors_check(wsi, h, allowed);
    /* Say "connection: close" back when the client asked for it: clients with
     * a keep-alive pool (Node >= 19) otherwise reuse a socket we close. */
    char conn[32];
    if (lws_hdr_copy(wsi, conn, sizeof conn, WSI_TOKEN_CONNECTION) > 0) {
        for (char *c = conn; *c; c++)
            *c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
        if (strstr(conn, "close"))
            h->close_after = 1;
    }
}

int http_respond_body(struct lws *wsi, struct http_conn *h, unsigned int status, const char *ctype)
{
    h->status = status;
    h->ctype = ctype;
    h->phase = 1;
    lws_callback_on_writable(wsi);
    return 0;
}

int http_respond(struct lws *wsi, struct http_conn *h, unsigned int status, const char *ctype,
                 const void *body, size_t len)
{
    h->body.len = 0;
    buf_append(&h->body, body, len);
    return http_respond_body(wsi, h, status, ctype);
}

static int add(struct lws *wsi, const char *name, const char *value, unsigned char **p, unsigned char *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name, (const unsigned char *)value,
                                       (int)strlen(value), p, end);
}

static int write_headers(struct lws *wsi, struct http_conn *h)
{
    unsigned char hdr[LWS_PRE + 1024], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;
    if (lws_add_http_common_headers(wsi, h->status, h->ctype, (lws_filepos_t)h->body.len, &p, end) ||
        add(wsi, "cache-control:", "no-store", &p, end))
        return -1;
    if (h->origin) {
        if (add(wsi, "access-control-allow-origin:", h->origin, &p, end) ||
            add(wsi, "access-control-allow-credentials:", "true", &p, end) ||
            add(wsi, "vary:", "Origin", &p, end))
            return -1;
        if (h->preflight && (add(wsi, "access-control-allow-methods:", "GET, POST, OPTIONS", &p, end) ||
                             add(wsi, "access-control-allow-headers:", "content-type", &p, end) ||
                             add(wsi, "access-control-max-age:", "86400", &p, end)))
            return -1;
    }
    if (h->close_after && add(wsi, "connection:", "close", &p, end))
        return -1;
    return lws_finalize_write_http_header(wsi, start, &p, end);
}

static int complete(struct lws *wsi, struct http_conn *h)
{
    int close_after = h->close_after;
    http_reset(h);
    if (close_after || lws_http_transaction_completed(wsi))
        return HTTP_CLOSE;
    return HTTP_DONE;
}

int http_write(struct lws *wsi, struct http_conn *h)
{
    if (h->phase == 1) {
        if (write_headers(wsi, h))
            return HTTP_CLOSE;
        h->phase = 2;
        if (h->body.len == 0)
            return complete(wsi, h);
        lws_callback_on_writable(wsi);
        return HTTP_MORE;
    }
    if (h->phase == 2) {
        /* lws_write needs LWS_PRE bytes of headroom before the data. */
        unsigned char *out = xmalloc(LWS_PRE + h->body.len);
        memcpy(out + LWS_PRE, h->body.data, h->body.len);
        int n = lws_write(wsi, out + LWS_PRE, h->body.len, LWS_WRITE_HTTP_FINAL);
        free(out);
        if (n < (int)h->body.len)
            return HTTP_CLOSE;
        return complete(wsi, h);
    }
    return HTTP_MORE;
}

int http_origin_ok(struct lws *wsi, const char *allowed)
{
    struct http_conn tmp = {0};
    if (!*allowed || lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) <= 0)
        return 1; /* no policy, or not a browser */
    cors_check(wsi, &tmp, allowed);
    int ok = tmp.origin != NULL;
    free(tmp.origin);
    return ok;
}

long long http_content_length(struct lws *wsi)
{
    char clen[64];
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH);
    if (n <= 0)
        return -1;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0)
        return -2;
    if (n >= (int)sizeof clen || lws_hdr_copy(wsi, clen, sizeof clen, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0)
        return -2;
    long long value = -1;
    for (char *p = clen; *p;) {
        while (*p == ' ')
            p++;
        size_t digits = strspn(p, "0123456789");
        if (digits == 0 || digits > 15)
            return -2;
        long long v = strtoll(p, NULL, 10);
        p += digits;
        while (*p == ' ')
            p++;
        if (*p && *p++ != ',')
            return -2;
        if (value >= 0 && v != value)
            return -2;
        value = v;
    }
    return value;
}
