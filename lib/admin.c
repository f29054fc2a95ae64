/* admin: a deliberately tiny HTTP/1.0-style responder: reads at most one
 * request head (bounded size, 2 s timeout), answers, closes. */
#include "admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

static int listen_fd = -1;
static pthread_t thread;
static atomic_int stopping;
static int (*is_healthy)(void *);
static void *healthy_closure;

static void respond(int fd, const char *status, const char *ctype, const char *body)
{
    char head[256];
    size_t len = strlen(body);
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, ctype, len);
    if (write(fd, head, (size_t)n) == n && len)
        (void)!write(fd, body, len);
}

static void serve(int fd)
{
    char req[4096];
    size_t got = 0;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (got < sizeof req - 1) {
        ssize_t r = read(fd, req + got, sizeof req - 1 - got);
        if (r <= 0)
            return;
        got += (size_t)r;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
            break;
    }
    req[got] = '\0';
    if (strncmp(req, "GET ", 4) != 0) {
        respond(fd, "405 Method Not Allowed", "text/plain", "method not allowed\n");
        return;
    }
    const char *path = req + 4;
    size_t plen = strcspn(path, " ?\r\n");
    if (plen == 8 && strncmp(path, "/healthz", 8) == 0) {
        if (is_healthy(healthy_closure))
            respond(fd, "200 OK", "application/json", "{\"status\":\"ok\"}\n");
        else
            respond(fd, "503 Service Unavailable", "application/json", "{\"status\":\"unavailable\"}\n");
    } else if (plen == 8 && strncmp(path, "/metrics", 8) == 0) {
        char *text = metrics_render();
        respond(fd, "200 OK", "text/plain; version=0.0.4", text);
        free(text);
    } else {
        respond(fd, "404 Not Found", "text/plain", "not found\n");
    }
}

static void *admin_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&stopping)) {
        struct pollfd p = {listen_fd, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0)
            continue;
        int fd = accept(listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        serve(fd);
        close(fd);
    }
    return NULL;
}

int admin_start(const char *host, long port, int (*healthy)(void *closure), void *closure)
{
    if (port <= 0)
        return 0;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        log_error("admin: bad listen address %s", host);
        return -1;
    }
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(listen_fd, 16) != 0) {
        log_error("admin: cannot listen on %s:%ld: %s", host, port, strerror(errno));
        if (listen_fd >= 0)
            close(listen_fd);
        listen_fd = -1;
        return -1;
    }
    is_healthy = healthy;
    healthy_closure = closure;
    pthread_create(&thread, NULL, admin_main, NULL);
    log_info("health and metrics on http://%s:%ld/healthz and /metrics", host, port);
    return 0;
}

void admin_stop(void)
{
    if (listen_fd < 0)
        return;
    atomic_store(&stopping, 1);
    pthread_join(thread, NULL);
    close(listen_fd);
    listen_fd = -1;
}
