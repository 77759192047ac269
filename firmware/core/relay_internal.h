/* relay_internal.h - what relay.c and provision.c share; not part of the API. */
#ifndef RELAY_INTERNAL_H
#define RELAY_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Freestanding: memcpy and memset are the only library calls, and every C platform has them
 * (GCC emits them by itself anyway). No <string.h>: the lx106 toolchain ships no libc. */
void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memset(void *dst, int c, size_t n);
#if defined(__GNUC__)
#define memcpy(d, s, n) __builtin_memcpy((d), (s), (n))
#define memset(d, c, n) __builtin_memset((d), (c), (n))
#endif

/* ---- small bounded text writer (no libc), behind every relay_format_* ---- */

typedef struct {
    char *buf;
    size_t cap;
    size_t len; /* length of the full text, may exceed cap */
} writer_t;

static inline void w_bytes(writer_t *w, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (w->cap > 0 && w->len + 1 < w->cap) {
            w->buf[w->len] = s[i];
        }
        w->len++;
    }
}

static inline void w_str(writer_t *w, const char *s) {
    size_t n = 0;
    while (s[n] != '\0') {
        n++;
    }
    w_bytes(w, s, n);
}

/* Platform strings are copied up to a bound and with only printable, space-free ASCII so that
 * a line stays one parseable line whatever the platform hands in. */
static inline void w_token(writer_t *w, const char *s, size_t max) {
    if (s == NULL || s[0] == '\0') {
        w_str(w, "-");
        return;
    }
    for (size_t i = 0; i < max && s[i] != '\0'; i++) {
        char c = s[i];
        if (c <= ' ' || c > '~') {
            c = '?';
        }
        w_bytes(w, &c, 1);
    }
}

static inline void w_u64(writer_t *w, uint64_t v) {
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + (v % 10u));
        v /= 10u;
    } while (v != 0 && n < sizeof tmp);
    while (n > 0) {
        w_bytes(w, &tmp[--n], 1);
    }
}

static inline void w_kv(writer_t *w, const char *key, uint64_t v) {
    w_str(w, " ");
    w_str(w, key);
    w_str(w, "=");
    w_u64(w, v);
}

static inline size_t w_finish(writer_t *w) {
    if (w->cap > 0) {
        w->buf[w->len < w->cap ? w->len : w->cap - 1] = '\0';
    }
    return w->len;
}

#endif /* RELAY_INTERNAL_H */
