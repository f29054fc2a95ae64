/* mem: allocation that never returns NULL (aborts on OOM: a service that
 * cannot allocate cannot answer anyone, and no caller checks) and a
 * growable byte buffer. No I/O, no globals: usable from the pure codecs. */
#ifndef MEM_H
#define MEM_H

#include <stddef.h>

/* The struct of type T whose member m is at p. */
#define container_of(p, T, m) ((T *)(void *)((char *)(p)-offsetof(T, m)))

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* A growable buffer. buf_init() leaves it empty with no allocation;
 * buf_cleanup() frees it and leaves it empty again. data is not NUL-terminated
 * unless buf_cstr() is called. */
struct buf {
    char *data;
    size_t len;
    size_t cap;
};

void buf_init(struct buf *b);
void buf_cleanup(struct buf *b);
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *data, size_t len);
void buf_putc(struct buf *b, char c);
void buf_puts(struct buf *b, const char *s);
/* Appends the decimal form of v. */
void buf_putu64(struct buf *b, unsigned long long v);
/* Returns data as a NUL-terminated string (the NUL is not counted in len). */
const char *buf_cstr(struct buf *b);
/* Hands the allocation to the caller (free() it) and leaves b empty. */
char *buf_steal(struct buf *b, size_t *len);

#endif
