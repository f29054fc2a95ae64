/* log: the single writer of log lines. A line is built in a stack buffer and
 * written with one write(2), so lines from several threads never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum log_level log_min_level = LOG_INFO;
static char service_name[32] = "chat";
static int json_format; /* LOG_FORMAT=json: one JSON object per line */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_init(const char *service, const char *level)
{
    snprintf(service_name, sizeof service_name, "%s", service);
    const char *format = getenv("LOG_FORMAT");
    json_format = format && strcmp(format, "json") == 0;
    for (int i = 0; i < 4; i++) {
        if (level && strcmp(level, level_names[i]) == 0) {
            log_min_level = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_write(enum log_level level, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                     level_names[level], service_name);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    while (len > 0 && line[len - 1] == '\n')
        len--;
    if (json_format) {
        /* {"time":..,"level":..,"service":..,"msg":..}: the text after the
         * prefix, JSON-escaped (control bytes as \u00XX). */
        char out[sizeof line * 6 + 128];
        size_t o = (size_t)snprintf(out, sizeof out,
                                    "{\"time\":\"%.24s\",\"level\":\"%s\",\"service\":\"%s\",\"msg\":\"",
                                    line, level_names[level], service_name);
        for (size_t i = (size_t)n; i < len && o < sizeof out - 8; i++) {
            unsigned char c = (unsigned char)line[i];
            if (c == '"' || c == '\\') {
                out[o++] = '\\';
                out[o++] = (char)c;
            } else if (c < 0x20) {
                o += (size_t)snprintf(out + o, 7, "\\u%04x", c);
            } else {
                out[o++] = (char)c;
            }
        }
        memcpy(out + o, "\"}\n", 3);
        ssize_t w = write(STDERR_FILENO, out, o + 3);
        (void)w;
        return;
    }
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

int log_limit_pass(struct log_limit *l)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (l->last_ms && now - l->last_ms < 1000) {
        l->skipped++;
        return 0;
    }
    if (l->skipped)
        log_write(LOG_WARN, "(%lu lines like the next one were left out in the last second)", l->skipped);
    l->last_ms = now;
    l->skipped = 0;
    return 1;
}
