/*
 * base.c - status messages, the allocator hook, the byte budget, random generators, hashing and
 * the state writer/reader. See base.h for the contracts.
 *
 * Allocator: every block carries a 16-byte header holding its payload size, so callers free
 * without remembering sizes while the hook still gets lua_Alloc's (ptr, old_size, new_size).
 * With the default hook, freed blocks of up to 512 bytes stay in a per-shard free list (linked
 * through the header's second word) and the next allocation of their size class on a thread of
 * that shard takes them back: the per-element blocks of a pipeline (elements, scalar tensors)
 * then cost a lock-free-in-practice pop instead of a malloc, and never cross cores when one
 * thread both makes and frees them.
 * Budget: `used` is an atomic counter updated lock-free; the mutex and condition variable only
 * serve waiters, and a release takes the lock only when someone waits.
 */
#include "base.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

_Noreturn void ferry__assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "ferry: internal invariant broken: %s (%s:%d)\n", expr, file, line);
    abort();
}

/* ---- status ----------------------------------------------------------------------------- */
int ferry__failv(ferry__status *st, int code, const char *fmt, va_list ap) {
    if (st) {
        st->code = code;
        vsnprintf(st->msg, sizeof st->msg, fmt, ap);
    }
    return code;
}

int ferry__fail(ferry__status *st, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ferry__failv(st, code, fmt, ap);
    va_end(ap);
    return code;
}

void ferry__status_prefix(ferry__status *st, const char *fmt, ...) {
    char pre[128], old[FERRY__MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, st->msg, sizeof old);
    size_t k = strlen(pre);
    if (k > sizeof st->msg - 3) k = sizeof st->msg - 3;
    memcpy(st->msg, pre, k);
    st->msg[k] = ':';
    st->msg[k + 1] = ' ';
    size_t rest = strnlen(old, sizeof old - 1);
    if (rest > sizeof st->msg - k - 3) rest = sizeof st->msg - k - 3;
    memcpy(st->msg + k + 2, old, rest);
    st->msg[k + 2 + rest] = '\0';
}

void ferry__status_copy(ferry__status *dst, const ferry__status *src) {
    if (dst == src) return;
    dst->code = src->code;
    memcpy(dst->msg, src->msg, sizeof dst->msg);
}

static _Thread_local ferry__status last_error;

int ferry__set_last_error(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ferry__failv(&last_error, code, fmt, ap);
    va_end(ap);
    return code;
}

void ferry__clear_last_error(void) { ferry__status_clear(&last_error); }

const char *ferry_last_error(void) { return last_error.msg; }

/* ---- allocator -------------------------------------------------------------------------- */
#define HDR 16

#if defined(__SANITIZE_ADDRESS__)
#define FERRY__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FERRY__ASAN 1
#endif
#endif

static void *default_alloc(void *user, void *ptr, size_t old_size, size_t new_size) {
    (void)user;
    (void)old_size;
    if (new_size == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, new_size);
}

void ferry__allocator_init(ferry__allocator *a, ferry_alloc_fn fn, void *user) {
    a->fn = fn ? fn : default_alloc;
    a->user = user;
#ifdef FERRY__ASAN
    a->cache = false; /* freed blocks go through ASan's quarantine: stale pointers stay detectable */
#else
    a->cache = fn == NULL;
#endif
    atomic_init(&a->owned_mask, 0);
    for (int i = 0; i < FERRY__ALLOC_SHARDS + FERRY__ALLOC_OWNED; i++) {
        ferry__alloc_shard *s = i < FERRY__ALLOC_SHARDS ? &a->shard[i] : &a->owned[i - FERRY__ALLOC_SHARDS];
        atomic_init(&s->bytes, 0);
        atomic_init(&s->blocks, 0);
        atomic_init(&s->lock, 0);
        for (int c = 0; c < FERRY__CACHE_CLASSES; c++) {
            s->count[c] = 0;
            s->head[c] = NULL;
        }
    }
}

/* The link of a cached block lives in the second half of its header. */
static inline void **link_of(uint8_t *block) { return (void **)(void *)(block + 8); }

void ferry__allocator_fini(ferry__allocator *a) {
    for (int i = 0; i < FERRY__ALLOC_SHARDS + FERRY__ALLOC_OWNED; i++) {
        ferry__alloc_shard *s = i < FERRY__ALLOC_SHARDS ? &a->shard[i] : &a->owned[i - FERRY__ALLOC_SHARDS];
        for (int c = 0; c < FERRY__CACHE_CLASSES; c++) {
            uint8_t *b = s->head[c];
            while (b) {
                uint8_t *next = *link_of(b);
                a->fn(a->user, b, (size_t)(c + 1) * FERRY__CACHE_GRAIN + HDR, 0);
                b = next;
            }
            s->head[c] = NULL;
            s->count[c] = 0;
        }
    }
}

static _Thread_local char shard_anchor;

static inline ferry__alloc_shard *my_shard(ferry__allocator *a) {
    uintptr_t x = (uintptr_t)&shard_anchor;
    x ^= x >> 12;
    x ^= x >> 20;
    return &a->shard[x % FERRY__ALLOC_SHARDS];
}


void ferry__allocator_usage(ferry__allocator *a, int64_t *bytes, int64_t *blocks) {
    int64_t b = 0, n = 0;
    for (int i = 0; i < FERRY__ALLOC_SHARDS + FERRY__ALLOC_OWNED; i++) {
        ferry__alloc_shard *s = i < FERRY__ALLOC_SHARDS ? &a->shard[i] : &a->owned[i - FERRY__ALLOC_SHARDS];
        b += atomic_load_explicit(&s->bytes, memory_order_relaxed);
        n += atomic_load_explicit(&s->blocks, memory_order_relaxed);
    }
    if (bytes) *bytes = b;
    if (blocks) *blocks = n;
}

/* ---- the small-block cache (default hook only) ---- */
/* The owned shard of this thread, if it claimed one of `a`. */
static _Thread_local struct {
    ferry__allocator *a;
    int idx;
} tl_owned;

void ferry__allocator_claim(ferry__allocator *a) {
    if (!a->cache || tl_owned.a) return;
    uint32_t m = atomic_load_explicit(&a->owned_mask, memory_order_relaxed);
    while (m != UINT32_MAX) {
        int i = __builtin_ctz(~m);
        /* acquire: the previous owner's free lists and counters are ours now */
        if (atomic_compare_exchange_weak_explicit(&a->owned_mask, &m, m | (1u << i), memory_order_acquire,
                                                  memory_order_relaxed)) {
            tl_owned.a = a;
            tl_owned.idx = i;
            return;
        }
    }
}

void ferry__allocator_release(ferry__allocator *a) {
    if (tl_owned.a != a) return;
    atomic_fetch_and_explicit(&a->owned_mask, ~(1u << tl_owned.idx), memory_order_release);
    tl_owned.a = NULL;
}

/* The shard the calling thread uses for the cache: its owned one (no lock), or a shared one. */
static inline ferry__alloc_shard *cache_shard(ferry__allocator *a, bool *owned) {
    if (tl_owned.a == a) {
        *owned = true;
        return &a->owned[tl_owned.idx];
    }
    *owned = false;
    return my_shard(a);
}
/* Held for a few instructions; a holder preempted inside them must not make the others spin a
 * whole time slice, so a waiter yields its core after a short spin. */
static inline void shard_lock(ferry__alloc_shard *s) {
    while (atomic_exchange_explicit(&s->lock, 1, memory_order_acquire)) {
        for (int i = 0; atomic_load_explicit(&s->lock, memory_order_relaxed); i++) {
            if (i < 64) ferry__cpu_relax();
            else ferry__thread_yield();
        }
    }
}

static inline void shard_unlock(ferry__alloc_shard *s) { atomic_store_explicit(&s->lock, 0, memory_order_release); }

/* Counter updates. An owned shard has one writer, its owner: a plain load + store is exact
 * (readers only need each value to be atomic) and costs no locked instruction. A shared shard
 * takes atomic adds, under the cache's lock or not. */
static inline void account_shard(ferry__alloc_shard *s, bool owned, int64_t bytes, int64_t blocks) {
    if (owned) {
        atomic_store_explicit(&s->bytes, atomic_load_explicit(&s->bytes, memory_order_relaxed) + bytes,
                              memory_order_relaxed);
        atomic_store_explicit(&s->blocks, atomic_load_explicit(&s->blocks, memory_order_relaxed) + blocks,
                              memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&s->bytes, bytes, memory_order_relaxed);
    if (blocks) atomic_fetch_add_explicit(&s->blocks, blocks, memory_order_relaxed);
}

static inline void account(ferry__allocator *a, int64_t bytes, int64_t blocks) {
    account_shard(my_shard(a), false, bytes, blocks);
}

/* Capacity the hook is asked for: small payloads are rounded up to their class so that any
 * cached block of a class fits any request of that class. */
static inline size_t block_cap(const ferry__allocator *a, size_t size) {
    if (!a->cache || size > FERRY__CACHE_MAX) return size;
    return size == 0 ? FERRY__CACHE_GRAIN : (size + FERRY__CACHE_GRAIN - 1) / FERRY__CACHE_GRAIN * FERRY__CACHE_GRAIN;
}

static inline int class_of(size_t size) { return size == 0 ? 0 : (int)((size - 1) / FERRY__CACHE_GRAIN); }

void *ferry__mem_alloc(ferry__allocator *a, size_t size) {
    if (size > SIZE_MAX - HDR) return NULL;
    if (a->cache && size <= FERRY__CACHE_MAX) {
        bool owned;
        ferry__alloc_shard *s = cache_shard(a, &owned);
        int c = class_of(size);
        if (!owned) shard_lock(s);
        uint8_t *b = s->head[c];
        if (b) {
            s->head[c] = *link_of(b);
            s->count[c]--;
        }
        if (!owned) shard_unlock(s);
        account_shard(s, owned, (int64_t)size, 1);
        if (!b) {
            b = a->fn(a->user, NULL, 0, block_cap(a, size) + HDR);
            if (!b) {
                account(a, -(int64_t)size, -1);
                return NULL;
            }
        }
        memcpy(b, &size, sizeof size);
        return b + HDR;
    }
    uint8_t *b = a->fn(a->user, NULL, 0, size + HDR);
    if (!b) return NULL;
    memcpy(b, &size, sizeof size);
    account(a, (int64_t)size, 1);
    return b + HDR;
}

void *ferry__mem_calloc(ferry__allocator *a, size_t n, size_t size) {
    if (size && n > SIZE_MAX / size) return NULL;
    void *p = ferry__mem_alloc(a, n * size);
    if (p) memset(p, 0, n * size);
    return p;
}

size_t ferry__mem_size(const void *p) {
    size_t s;
    memcpy(&s, (const uint8_t *)p - HDR, sizeof s);
    return s;
}

void *ferry__mem_realloc(ferry__allocator *a, void *p, size_t size) {
    if (!p) return ferry__mem_alloc(a, size);
    if (size > SIZE_MAX - HDR) return NULL;
    size_t old = ferry__mem_size(p);
    uint8_t *b = a->fn(a->user, (uint8_t *)p - HDR, block_cap(a, old) + HDR, block_cap(a, size) + HDR);
    if (!b) return NULL;
    memcpy(b, &size, sizeof size);
    account(a, (int64_t)size - (int64_t)old, 0);
    return b + HDR;
}

void ferry__mem_free(ferry__allocator *a, void *p) {
    if (!p) return;
    size_t size = ferry__mem_size(p);
    uint8_t *b = (uint8_t *)p - HDR;
    if (a->cache && size <= FERRY__CACHE_MAX) {
        bool owned, keep;
        ferry__alloc_shard *s = cache_shard(a, &owned);
        int c = class_of(size);
        if (!owned) shard_lock(s);
        keep = s->count[c] < FERRY__CACHE_CLASS_BYTES / ((c + 1) * FERRY__CACHE_GRAIN);
        if (keep) {
            *link_of(b) = s->head[c];
            s->head[c] = b;
            s->count[c]++;
        }
        if (!owned) shard_unlock(s);
        account_shard(s, owned, -(int64_t)size, -1);
        if (keep) return;
        a->fn(a->user, b, block_cap(a, size) + HDR, 0);
        return;
    }
    account(a, -(int64_t)size, -1);
    a->fn(a->user, b, size + HDR, 0);
}

char *ferry__mem_strdup(ferry__allocator *a, const char *s) {
    size_t n = strlen(s) + 1;
    char *d = ferry__mem_alloc(a, n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ---- budget ----------------------------------------------------------------------------- */
int ferry__budget_init(ferry__budget *b, size_t limit) {
    b->limit = limit;
    atomic_init(&b->used, 0);
    atomic_init(&b->peak, 0);
    atomic_init(&b->waiters, 0);
    int rc = ferry__mutex_init(&b->mu);
    if (rc) return FERRY_ENOMEM;
    if (ferry__cond_init(&b->cv)) {
        ferry__mutex_destroy(&b->mu);
        return FERRY_ENOMEM;
    }
    return FERRY_OK;
}

void ferry__budget_fini(ferry__budget *b) {
    ferry__cond_destroy(&b->cv);
    ferry__mutex_destroy(&b->mu);
}

static void note_peak(ferry__budget *b, size_t now) {
    size_t peak = atomic_load_explicit(&b->peak, memory_order_relaxed);
    while (now > peak &&
           !atomic_compare_exchange_weak_explicit(&b->peak, &peak, now, memory_order_relaxed, memory_order_relaxed)) {
    }
}

bool ferry__budget_try(ferry__budget *b, size_t n) {
    size_t used = atomic_load_explicit(&b->used, memory_order_relaxed);
    for (;;) {
        if (used > b->limit || n > b->limit - used) return false;
        if (atomic_compare_exchange_weak_explicit(&b->used, &used, used + n, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            note_peak(b, used + n);
            return true;
        }
    }
}

void ferry__budget_force(ferry__budget *b, size_t n) {
    size_t now = atomic_fetch_add_explicit(&b->used, n, memory_order_relaxed) + n;
    note_peak(b, now);
}

int ferry__budget_wait(ferry__budget *b, size_t n, const _Atomic int *cancelled, const _Atomic int *force_now) {
    if (ferry__budget_try(b, n)) return FERRY_OK;
    ferry__mutex_lock(&b->mu);
    atomic_fetch_add(&b->waiters, 1);
    int rc = FERRY_OK;
    for (;;) {
        if (ferry__budget_try(b, n)) break;
        if (cancelled && atomic_load(cancelled)) {
            rc = FERRY_ECANCELED;
            break;
        }
        if (force_now && atomic_load(force_now)) {
            ferry__budget_force(b, n);
            break;
        }
        ferry__cond_timedwait(&b->cv, &b->mu, 1000000);
    }
    atomic_fetch_sub(&b->waiters, 1);
    ferry__mutex_unlock(&b->mu);
    return rc;
}

void ferry__budget_release(ferry__budget *b, size_t n) {
    if (n == 0) return;
    size_t old = atomic_fetch_sub_explicit(&b->used, n, memory_order_release);
    FERRY_ASSERT(old >= n);
    if (atomic_load(&b->waiters) > 0) {
        ferry__mutex_lock(&b->mu);
        ferry__cond_broadcast(&b->cv);
        ferry__mutex_unlock(&b->mu);
    }
}

/* ---- random ----------------------------------------------------------------------------- */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void ferry__rng_seed(ferry__rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t ferry__rng_next(ferry__rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t ferry__rng_below(ferry__rng *r, uint64_t n) {
    FERRY_ASSERT(n > 0);
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    for (;;) {
        uint64_t v = ferry__rng_next(r);
        if (v < limit) return v % n;
    }
}

double ferry__rng_uniform(ferry__rng *r) { return (double)(ferry__rng_next(r) >> 11) * 0x1.0p-53; }

uint64_t ferry__mix64(uint64_t a, uint64_t b) {
    uint64_t x = a ^ (b * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull);
    return splitmix64(&x);
}

uint64_t ferry__fnv64(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ---- writer / reader -------------------------------------------------------------------- */
void ferry__writer_init(ferry__writer *w, ferry__allocator *a) {
    w->a = a;
    w->data = NULL;
    w->size = w->cap = 0;
    w->failed = false;
}

void ferry__writer_fini(ferry__writer *w) {
    ferry__mem_free(w->a, w->data);
    w->data = NULL;
    w->size = w->cap = 0;
}

void ferry__w_bytes(ferry__writer *w, const void *p, size_t n) {
    if (w->failed || n == 0) return;
    if (w->cap - w->size < n) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap - w->size < n) {
            if (cap > SIZE_MAX / 2) {
                w->failed = true;
                return;
            }
            cap *= 2;
        }
        uint8_t *d = ferry__mem_realloc(w->a, w->data, cap);
        if (!d) {
            w->failed = true;
            return;
        }
        w->data = d;
        w->cap = cap;
    }
    memcpy(w->data + w->size, p, n);
    w->size += n;
}

void ferry__w_u8(ferry__writer *w, uint8_t v) { ferry__w_bytes(w, &v, 1); }

void ferry__w_u32(ferry__writer *w, uint32_t v) {
    uint8_t b[4];
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
    ferry__w_bytes(w, b, 4);
}

void ferry__w_u64(ferry__writer *w, uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    ferry__w_bytes(w, b, 8);
}

void ferry__w_str(ferry__writer *w, const char *s) {
    size_t n = strlen(s);
    ferry__w_u32(w, (uint32_t)n);
    ferry__w_bytes(w, s, n);
}

void ferry__reader_init(ferry__reader *r, const void *data, size_t size) {
    r->origin = r->p = data;
    r->end = r->p + size;
    r->start_off = 0;
}

int ferry__r_bytes(ferry__reader *r, void *out, size_t n, ferry__status *st) {
    if ((size_t)(r->end - r->p) < n)
        return ferry__fail(st, FERRY_ETRUNCATED, "state truncated: needed %zu bytes at offset %zu, %zu left", n,
                           ferry__r_offset(r), ferry__r_left(r));
    if (n) memcpy(out, r->p, n);
    r->p += n;
    return FERRY_OK;
}

int ferry__r_u8(ferry__reader *r, uint8_t *v, ferry__status *st) { return ferry__r_bytes(r, v, 1, st); }

int ferry__r_u32(ferry__reader *r, uint32_t *v, ferry__status *st) {
    uint8_t b[4] = {0};
    int rc = ferry__r_bytes(r, b, 4, st);
    if (rc) return rc;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return FERRY_OK;
}

int ferry__r_u64(ferry__reader *r, uint64_t *v, ferry__status *st) {
    uint8_t b[8] = {0};
    int rc = ferry__r_bytes(r, b, 8, st);
    if (rc) return rc;
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--) x = (x << 8) | b[i];
    *v = x;
    return FERRY_OK;
}

int ferry__r_i64(ferry__reader *r, int64_t *v, ferry__status *st) {
    uint64_t u;
    int rc = ferry__r_u64(r, &u, st);
    if (rc == FERRY_OK) *v = (int64_t)u;
    return rc;
}

int ferry__r_str(ferry__reader *r, char *buf, size_t cap, ferry__status *st) {
    uint32_t n;
    int rc = ferry__r_u32(r, &n, st);
    if (rc) return rc;
    if ((size_t)n >= cap)
        return ferry__fail(st, FERRY_ECORRUPT, "state corrupt: string of %u bytes at offset %zu exceeds %zu", n,
                           ferry__r_offset(r), cap - 1);
    rc = ferry__r_bytes(r, buf, n, st);
    if (rc) return rc;
    buf[n] = '\0';
    return FERRY_OK;
}
