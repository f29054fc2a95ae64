/* http: the HTTP side of a connection, shared by long-polling (polling.c) and
 * the plain routes a server adds (site.c): one response at a time written
 * from HTTP_WRITEABLE (headers in one call, body in the next, as lws wants),
 * the CORS policy (EDGE_CORS_ORIGINS: empty, "*" or a list of exact origins,
 * an allowed origin echoed with credentials), "Connection: close" honoured. */
#ifndef HTTP_H
#define HTTP_H

#include <libwebsockets.h>
#include <stddef.h>

#include "mem.h"

struct http_conn {
    struct buf body; /* a POST body as it arrives, then the response body */
    unsigned int status;
    const char *ctype;
    int phase;       /* 0: nothing to write, 1: headers due, 2: body due */
    int close_after; /* close the connection after this response */
    int preflight;   /* a CORS preflight: add the Allow-* headers */
    char *origin;    /* the allowed CORS origin to echo, or NULL */
};

/* Forgets the response and the request (frees what it holds). */
void http_reset(struct http_conn *h);
/* Starts a request: reset, CORS origin under allowed, close_after when the
 * client said "Connection: close". */
void http_begin(struct lws *wsi, struct http_conn *h, const char *allowed);
/* Queues a response (body copied) and asks for HTTP_WRITEABLE. Returns 0. */
int http_respond(struct lws *wsi, struct http_conn *h, unsigned int status, const char *ctype,
                 const void *body, size_t len);
/* The same with body already in h->body. */
int http_respond_body(struct lws *wsi, struct http_conn *h, unsigned int status, const char *ctype);
enum { HTTP_MORE = 0, HTTP_DONE = 1, HTTP_CLOSE = -1 };
/* HTTP_WRITEABLE with a response queued: writes the next part. HTTP_DONE once
 * the response is out and the connection waits for the next request (h is
 * reset), HTTP_CLOSE when the connection must close, else HTTP_MORE. */
int http_write(struct lws *wsi, struct http_conn *h);
/* 1 when a WebSocket upgrade may proceed under allowed: no policy, no Origin
 * header (not a browser), or an allowed origin. */
int http_origin_ok(struct lws *wsi, const char *allowed);
/* The request's Content-Length: -1 when there is none (a chunked body: lws
 * 4.1 reads Content-Length bodies only), -2 when it is not one: anything but
 * digits, several that differ (lws joins repeated headers with ','), or a
 * Transfer-Encoding beside it (lws would read the body by Content-Length and
 * parse the rest as a new request). A caller closes the connection after
 * answering either. */
long long http_content_length(struct lws *wsi);

#endif
