/* load_util: tokens, uuids, samples, /proc readings and the machine line
 * for chatload (see load_util.h). No network code here. */
#include "load_util.h"

#include <dirent.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

int64_t load_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void load_uuid_of(char out[LOAD_UUID_LEN + 1], uint64_t seed, uint64_t index)
{
    uint64_t x = seed * 0x100000001b3ULL ^ index, a = splitmix64(&x), b = splitmix64(&x);
    unsigned char u[16];
    for (int i = 0; i < 8; i++) {
        u[i] = (unsigned char)(a >> (8 * i));
        u[8 + i] = (unsigned char)(b >> (8 * i));
    }
    u[6] = (unsigned char)((u[6] & 0x0f) | 0x40);
    u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
    snprintf(out, LOAD_UUID_LEN + 1, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
             u[15]);
}

void load_uuid(char out[LOAD_UUID_LEN + 1])
{
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t r = getrandom(b + got, sizeof b - got, 0);
        if (r > 0)
            got += (size_t)r;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, LOAD_UUID_LEN + 1, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

char *load_token(const char *secret, const char *user_id, const char *username)
{
    jwt_t *jwt = NULL;
    char *tok = NULL;
    long now = (long)time(NULL);
    if (jwt_new(&jwt) != 0)
        return NULL;
    if (jwt_add_grant(jwt, "sub", user_id) == 0 && jwt_add_grant(jwt, "username", username) == 0 &&
        jwt_add_grant_int(jwt, "iat", now) == 0 && jwt_add_grant_int(jwt, "exp", now + 86400) == 0 &&
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)) == 0)
        tok = jwt_encode_str(jwt); /* malloc'd by libjwt 1.10: free() */
    jwt_free(jwt);
    return tok;
}

void load_samples_init(struct load_samples *s, size_t cap)
{
    memset(s, 0, sizeof *s);
    s->cap = cap;
    s->v = malloc(cap * sizeof *s->v);
    if (!s->v) {
        fprintf(stderr, "chatload: out of memory for %zu samples\n", cap);
        exit(1);
    }
}

void load_samples_cleanup(struct load_samples *s)
{
    free(s->v);
    memset(s, 0, sizeof *s);
}

void load_samples_add(struct load_samples *s, int64_t ns)
{
    if (s->n == s->cap) {
        s->dropped++;
        return;
    }
    s->v[s->n++] = ns > 0 ? (uint64_t)ns : 0;
    s->sorted = 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

uint64_t load_samples_pct(struct load_samples *s, double p)
{
    if (s->n == 0)
        return 0;
    if (!s->sorted) {
        qsort(s->v, s->n, sizeof *s->v, cmp_u64);
        s->sorted = 1;
    }
    double rank = p / 100.0 * (double)s->n; /* nearest-rank method */
    size_t i = (size_t)rank;
    if ((double)i < rank)
        i++;
    if (i == 0)
        i = 1;
    if (i > s->n)
        i = s->n;
    return s->v[i - 1];
}

/* CPU seconds of one process and its parent's pid, from /proc/PID/stat. */
static int stat_cpu(const char *path, double *cpu_s, long *ppid)
{
    char buf[4096];
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* The name (field 2) may hold spaces: count fields after its ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long utime = 0, stime = 0;
    int field = 2;
    char *save = NULL;
    for (char *tok = strtok_r(p + 1, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 4)
            *ppid = strtol(tok, NULL, 10);
        else if (field == 14)
            utime = strtoull(tok, NULL, 10);
        else if (field == 15) {
            stime = strtoull(tok, NULL, 10);
            break;
        }
    }
    long hz = sysconf(_SC_CLK_TCK);
    *cpu_s = (double)(utime + stime) / (double)(hz > 0 ? hz : 100);
    return 0;
}

int load_proc_read(pid_t pid, struct load_proc *out)
{
    char path[64], buf[512];
    long ppid = 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (stat_cpu(path, &out->cpu_s, &ppid) != 0)
        return -1;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        double c;
        char child[300];
        snprintf(child, sizeof child, "/proc/%s/stat", e->d_name);
        if (stat_cpu(child, &c, &ppid) == 0 && ppid == (long)pid)
            out->cpu_s += c;
    }
    if (d)
        closedir(d);
    out->rss_kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(buf, sizeof buf, f))
        if (strncmp(buf, "VmRSS:", 6) == 0) {
            out->rss_kb = strtol(buf + 6, NULL, 10);
            break;
        }
    fclose(f);
    return out->rss_kb < 0 ? -1 : 0;
}

int load_machine_cpu(double *busy_s, double *softirq_s)
{
    unsigned long long v[10] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (n < 8)
        return -1;
    /* user nice system idle iowait irq softirq steal (guest is in user) */
    long hz = sysconf(_SC_CLK_TCK);
    double tick = 1.0 / (double)(hz > 0 ? hz : 100);
    *busy_s = (double)(v[0] + v[1] + v[2] + v[5] + v[7]) * tick;
    *softirq_s = (double)v[6] * tick;
    return 0;
}

void load_machine(char *buf, size_t cap)
{
    char model[256] = "unknown CPU", line[512];
    long mem_mib = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "model name", 10) == 0) {
                char *c = strchr(line, ':');
                if (c) {
                    c++;
                    while (*c == ' ' || *c == '\t')
                        c++;
                    c[strcspn(c, "\n")] = 0;
                    snprintf(model, sizeof model, "%s", c);
                }
                break;
            }
        fclose(f);
    }
    if ((f = fopen("/proc/meminfo", "r"))) {
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "MemTotal:", 9) == 0) {
                mem_mib = strtol(line + 9, NULL, 10) / 1024;
                break;
            }
        fclose(f);
    }
    struct utsname u;
    if (uname(&u) != 0)
        snprintf(u.release, sizeof u.release, "?");
    snprintf(buf, cap, "%s, %ld cores, Linux %s, %ld MiB", model, sysconf(_SC_NPROCESSORS_ONLN), u.release,
             mem_mib);
}

long load_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    long nr_open = 0;
    FILE *f = fopen("/proc/sys/fs/nr_open", "r");
    if (f) {
        if (fscanf(f, "%ld", &nr_open) != 1)
            nr_open = 0;
        fclose(f);
    }
    if (nr_open > 0 && (rlim_t)nr_open > rl.rlim_max) {
        struct rlimit up = {(rlim_t)nr_open, (rlim_t)nr_open};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0) /* needs CAP_SYS_RESOURCE */
            return nr_open;
    }
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}
