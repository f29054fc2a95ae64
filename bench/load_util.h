/* load_util: what chatload mints and measures with, none of it network code:
 * HS256 tokens, random uuids, latency samples and their percentiles, the
 * /proc figures of server processes, and a line naming the machine. */
#ifndef LOAD_UTIL_H
#define LOAD_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define LOAD_UUID_LEN 36

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t load_now_ns(void);

/* A random (version 4) uuid, lower case, NUL-terminated in out. */
void load_uuid(char out[LOAD_UUID_LEN + 1]);
/* The same shape, the same for the same (seed, index): users another run
 * (chatload seed) wrote conversations for. */
void load_uuid_of(char out[LOAD_UUID_LEN + 1], uint64_t seed, uint64_t index);

/* An HS256 JWT {sub, username, iat, exp = now + 1 day} signed with secret.
 * Returns a malloc'd string (the caller frees it), or NULL. */
char *load_token(const char *secret, const char *user_id, const char *username);

/* A bounded set of latency samples (ns). Past cap, samples are counted in
 * dropped, not kept. */
struct load_samples {
    uint64_t *v;
    size_t n, cap;
    uint64_t dropped;
    int sorted;
};

void load_samples_init(struct load_samples *s, size_t cap);
void load_samples_cleanup(struct load_samples *s);
void load_samples_add(struct load_samples *s, int64_t ns);
/* The p-th percentile (0 < p <= 100) in ns: the smallest sample with at
 * least p % of the samples at or below it; 0 when there is none. Sorts the
 * samples the first time. */
uint64_t load_samples_pct(struct load_samples *s, double p);

/* One reading of a process: resident set (kB) and CPU time used so far
 * (user + system, seconds) by it and its live children (PostgreSQL's
 * backends are the postmaster's children). Returns 0, or -1 when the process
 * is gone. */
struct load_proc {
    long rss_kb;
    double cpu_s;
};
int load_proc_read(pid_t pid, struct load_proc *out);

/* CPU time the whole machine has spent so far (every core, seconds), from
 * /proc/stat: busy = user + nice + system + irq + steal, and softirq apart
 * (loopback TCP is mostly softirq work, charged to no process). Returns 0, or
 * -1 when unreadable. */
int load_machine_cpu(double *busy_s, double *softirq_s);

/* "AMD EPYC, 2 cores, Linux 6.1.0, 24105 MiB" into buf. */
void load_machine(char *buf, size_t cap);

/* Raises RLIMIT_NOFILE as far as it goes (the hard limit, and past it up to
 * fs.nr_open when allowed). Returns the soft limit now in force. */
long load_raise_nofile(void);

#endif
