/* log: one line per event on stderr: time, level, service, message with
 * key=value context. The level is checked before formatting. Never log message
 * bodies or credentials. */
#ifndef LOG_H
#define LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

extern enum log_level log_min_level;

/* Sets the service name and the level ("debug", "info", "warn", "error").
 * Returns -1 for an unknown level name (the level is then left unchanged). */
int log_init(const char *service, const char *level);
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_at(lvl, ...)                                                                                     \
    do {                                                                                                     \
        if ((lvl) >= log_min_level)                                                                          \
            log_write((lvl), __VA_ARGS__);                                                                   \
    } while (0)
/* A line a peer can cause at will (a refused connection, a refused request):
 * at most one a second from one call site; the next line says how many were
 * left out. Not thread-safe per call site: use it on one thread. */
struct log_limit {
    long long last_ms;
    unsigned long skipped;
};
int log_limit_pass(struct log_limit *l);
#define log_limited(lvl, ...)                                                                                \
    do {                                                                                                     \
        static struct log_limit limit_;                                                                      \
        if ((lvl) >= log_min_level && log_limit_pass(&limit_))                                               \
            log_write((lvl), __VA_ARGS__);                                                                   \
    } while (0)

#define log_debug(...) log_at(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_at(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_at(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_at(LOG_ERROR, __VA_ARGS__)

#endif
