/*
 * base.h - the common ground every layer above stands on:
 *   - ferry__status: a code plus a message, filled by whoever fails and carried up unchanged;
 *   - the allocator (one hook, every byte counted, the place where tests inject failures);
 *   - the byte budget (buffered element bytes, with waiting for room);
 *   - seeded random generators and hashing; intrusive lists; a growable byte writer and a
 *     bounds-checked byte reader (used for saved iterator state).
 *
 * Threads: the allocator and the budget are thread-safe (the allocator: per-thread shards, atomics
 * and short locks, see below; the budget: atomics, and a mutex and a condition variable for
 * waiters). Everything else is used by one thread at a time.
 */
#ifndef FERRY_BASE_H
#define FERRY_BASE_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ferry.h"
#include "base/endian.h"
#include "platform/platform.h"

/* Internal invariants: never compiled out (tests and CI must see them). */
#define FERRY_ASSERT(cond)                                                                                             \
    do {                                                                                                               \
        if (!(cond)) ferry__assert_fail(#cond, __FILE__, __LINE__);                                                    \
    } while (0)
_Noreturn void ferry__assert_fail(const char *expr, const char *file, int line);

#define FERRY__MIN(a, b) ((a) < (b) ? (a) : (b))
#define FERRY__MAX(a, b) ((a) > (b) ? (a) : (b))
#define FERRY__UNUSED(x) ((void)(x))
#define FERRY__CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* ---- status ----------------------------------------------------------------------------- */
#define FERRY__MSG_MAX 512
typedef struct ferry__status {
    int code;
    char msg[FERRY__MSG_MAX];
} ferry__status;

/* Sets st (if not NULL) to code and a formatted message; returns code. */
int ferry__fail(ferry__status *st, int code, const char *fmt, ...) FERRY_PRINTF(3, 4);
int ferry__failv(ferry__status *st, int code, const char *fmt, va_list ap) FERRY_PRINTF(3, 0);
/* Prefixes st->msg with "what: " (for context as an error travels up). */
void ferry__status_prefix(ferry__status *st, const char *fmt, ...) FERRY_PRINTF(2, 3);
void ferry__status_copy(ferry__status *dst, const ferry__status *src);
static inline void ferry__status_clear(ferry__status *st) {
    st->code = 0;
    st->msg[0] = '\0';
}
/* Thread-local last error for functions without a handle; returns code. */
int ferry__set_last_error(int code, const char *fmt, ...) FERRY_PRINTF(2, 3);
/* Puts "prefix: " before the last error's message (a call made for another says whose call it
 * was) and sets its code; returns code. The message may not be passed to ferry__set_last_error as
 * an argument: it would be formatted into itself. */
int ferry__last_error_prefix(int code, const char *prefix);
void ferry__clear_last_error(void);

/* ---- allocator -------------------------------------------------------------------------- */
/* Live bytes and blocks are counted per shard (one cache line of counters each), and readers add
 * the shards up. A registered allocator (the runtime's) has FERRY__ALLOC_OWNED owned shards: the
 * first allocation or free by a thread claims one (runtime worker threads claim theirs when they
 * start), and the thread keeps it until it exits or calls ferry__allocator_release. Its owner alone
 * writes an owned shard, so its counters are a plain load and store and its cache needs no lock.
 * A thread that finds no free owned shard (more than FERRY__ALLOC_OWNED threads at once), and
 * every thread of an unregistered allocator, uses one of FERRY__ALLOC_SHARDS shared shards chosen
 * by hashing the thread: atomic counters and a spin lock around its cache.
 *
 * With the default hook, each shard keeps freed small blocks (payload up to FERRY__CACHE_MAX
 * bytes) in Bonwick's magazines. A cached block, its 16-byte header included, is a whole number
 * of 64-byte cache lines and, when the cache made it, starts on one (one that ferry__mem_realloc
 * resized may not): blocks travel between threads (made by a worker, freed by the consumer,
 * reused by either), and two blocks that shared a line would make two threads that each write
 * their own block miss on every element. The size classes are 64-byte steps up to 512 bytes,
 * then four steps per doubling up to 8 KiB (640, 768, 896, 1024, 1280, ...): a row of a few KiB
 * (a feature vector, a small decoded image) is made and freed per element too, and malloc's
 * per-thread cache stops at about 1 KiB, above which every free takes its arena's lock.
 * Per class a shard has a loaded chain and two full chains (previous and spare) of M blocks
 * (M = FERRY__MAG_M: about FERRY__MAG_BYTES of blocks, 4 to 256). A free pushes on the loaded
 * chain; a full loaded chain becomes the previous one, the previous one the spare, and a spare
 * goes whole to the allocator's depot (one short lock per M blocks; the depot keeps at most
 * FERRY__DEPOT_BYTES per class, and frees what does not fit). An allocation pops the loaded
 * chain, else takes the previous chain, the spare, a full chain from the depot, else calls the
 * hook. A thread keeps up to 3 M blocks of a class, so a worker that pulls a batch of up to 2 M
 * rows (256 elements of up to ~110 bytes, 50 of 1 KiB), then frees them as it stacks them, never
 * touches the depot: two threads doing that at once would otherwise trade chains through it and
 * miss the cache on every block. Blocks made by a worker and freed by the consumer go back to
 * the worker a chain at a time, never through malloc.
 * A custom hook sees every allocation and free (no cache: tests that fail the k-th allocation
 * and users that trace memory rely on it). Under AddressSanitizer there is no cache (its
 * quarantine keeps use-after-free of small blocks detectable). */
#define FERRY__ALLOC_SHARDS 16
#define FERRY__CACHE_GRAIN 64 /* block sizes, header included, are multiples of it */
#define FERRY__CACHE_BLOCK_MAX 8192
#define FERRY__CACHE_MAX (FERRY__CACHE_BLOCK_MAX - 16)
#define FERRY__CACHE_CLASSES 24 /* 8 of 64-byte steps to 512, then 4 per doubling to 8192 */
#define FERRY__MAG_BYTES 32768
#define FERRY__MAG_M(block) FERRY__MAX(4, FERRY__MIN(256, FERRY__MAG_BYTES / (block)))
#define FERRY__DEPOT_BYTES (128 * 1024)

/* One size class of a shard's cache. Chains link blocks through their headers and end in NULL. */
typedef struct ferry__alloc_mag {
    void *loaded; /* n blocks (0 to M) */
    void *prev;   /* NULL or exactly M blocks */
    void *spare;  /* NULL or exactly M blocks: a second full chain kept before the depot */
    uint32_t n;
} ferry__alloc_mag;

typedef struct ferry__alloc_shard {
    _Alignas(64) _Atomic int64_t bytes;
    _Atomic int64_t blocks;
    _Atomic int lock; /* shared shards only */
    ferry__alloc_mag mag[FERRY__CACHE_CLASSES];
} ferry__alloc_shard;

/* Full chains of one class, linked through the first payload word of each chain's head block. */
typedef struct ferry__alloc_depot {
    _Alignas(64) _Atomic int lock;
    _Atomic uint32_t n; /* written under the lock; read without it to skip an empty depot */
    void *chains;
} ferry__alloc_depot;

#define FERRY__ALLOC_OWNED 64

/* Large blocks (FERRY__LARGE_MIN to FERRY__LARGE_MAX bytes: batches, decoded images) that the
 * default hook would hand back to malloc are kept for reuse, most recent first, up to large_limit
 * bytes in all: a batch freed by the consumer becomes the next batch a worker fills. malloc would
 * give it back to the system (a trim, or munmap for big blocks) and the next batch would fault its
 * pages in again, which cost as much as copying the rows into it. Blocks between the two caches
 * (8 to 16 KiB) go to malloc. */
#define FERRY__LARGE_MIN ((size_t)16 << 10)
#define FERRY__LARGE_MAX ((size_t)4 << 20)
#define FERRY__LARGE_LIMIT ((size_t)16 << 20)
#define FERRY__LARGE_SLOTS 16

typedef struct ferry__alloc_large {
    _Alignas(64) _Atomic int lock;
    uint32_t n;   /* blocks kept, oldest first */
    size_t bytes; /* their capacities, summed */
    void *block[FERRY__LARGE_SLOTS];
    size_t cap[FERRY__LARGE_SLOTS];
} ferry__alloc_large;

typedef struct ferry__allocator {
    ferry_alloc_fn fn;
    void *user;
    bool cache;
    _Atomic uint64_t gen;              /* 0: not registered; else unique to this registration */
    struct ferry__allocator *reg_next; /* the registry's list (under its lock) */
    _Atomic uint64_t owned_mask;       /* owned shards claimed */
    ferry__alloc_depot depot[FERRY__CACHE_CLASSES];
    ferry__alloc_large large;
    size_t large_limit; /* bytes of large blocks kept at most (0: none) */
    ferry__alloc_shard shard[FERRY__ALLOC_SHARDS];
    ferry__alloc_shard owned[FERRY__ALLOC_OWNED];
} ferry__allocator;

void ferry__allocator_init(ferry__allocator *a, ferry_alloc_fn fn, void *user);
/* Makes a's owned shards claimable (the runtime's allocator; not a short-lived one on the stack).
 * A thread's claim outlives neither a's registration nor the thread: unregister a before
 * ferry__allocator_fini, with no allocation in progress; a thread still holding a claim then
 * forgets it (at its exit or its next claim) without touching a. */
void ferry__allocator_register(ferry__allocator *a);
void ferry__allocator_unregister(ferry__allocator *a);
/* The calling thread claims an owned shard of a registered a now rather than at its first
 * allocation (a no-op when it holds one, or none is free), and gives it back. A thread that
 * exits gives its shards back anyway; a runtime worker calls both around its work. */
void ferry__allocator_claim(ferry__allocator *a);
void ferry__allocator_release(ferry__allocator *a);
/* Returns every cached block (shards and depot) to the hook (no allocation may be in progress). */
void ferry__allocator_fini(ferry__allocator *a);
/* Lowers the bytes of large blocks kept for reuse (no effect without the block cache). */
void ferry__allocator_set_large_limit(ferry__allocator *a, size_t limit);
/* Every library allocation. Returns NULL on failure (the hook said no, or size overflowed). */
void *ferry__mem_alloc(ferry__allocator *a, size_t size);
void *ferry__mem_calloc(ferry__allocator *a, size_t n, size_t size);
/* Reallocates p (NULL allowed) to size; on failure returns NULL and p stays valid. */
void *ferry__mem_realloc(ferry__allocator *a, void *p, size_t size);
void ferry__mem_free(ferry__allocator *a, void *p);
/* Size of a block from ferry__mem_alloc. */
size_t ferry__mem_size(const void *p);
/* The payload bytes a block made by a for `size` bytes has room for: its size class less the
 * header with the cache, else size. */
size_t ferry__mem_capacity(const ferry__allocator *a, size_t size);
/* Live bytes and blocks (sums of the shards; exact when no allocation is in progress). Cached
 * free blocks are not live. */
void ferry__allocator_usage(ferry__allocator *a, int64_t *bytes, int64_t *blocks);
char *ferry__mem_strdup(ferry__allocator *a, const char *s);
/* The runtime's own block, which holds its allocator: size bytes with the header every block
 * carries, straight from the hook fn (NULL: the default), counted nowhere (the runtime counts it
 * on its allocator once that exists), so that no allocator has to live on the stack. */
void *ferry__mem_alloc_bootstrap(ferry_alloc_fn fn, void *user, size_t size);
void ferry__mem_free_bootstrap(ferry_alloc_fn fn, void *user, void *p);

/* ---- byte budget ------------------------------------------------------------------------ */
typedef struct ferry__cancel ferry__cancel;

typedef struct ferry__budget {
    size_t limit;
    _Atomic size_t used;
    _Atomic size_t peak;
    _Atomic int waiters;
    ferry__mutex mu;
    ferry__cond cv;
} ferry__budget;

int ferry__budget_init(ferry__budget *b, size_t limit);
void ferry__budget_fini(ferry__budget *b);
/* Counts n bytes if they fit under the limit; returns true if counted. */
bool ferry__budget_try(ferry__budget *b, size_t n);
/* Counts n bytes whether or not they fit (the one element a stage may always hold). */
void ferry__budget_force(ferry__budget *b, size_t n);
/* Waits until n bytes fit under the budget and counts them, or counts them anyway (forced) as
 * soon as force(arg) returns true (force may be NULL). `cancelled` (may be NULL) and force are
 * polled whenever the budget changes and at least every millisecond; ferry__budget_poke wakes
 * the waiters at once. Returns FERRY_OK, or FERRY_ECANCELED (nothing counted) once *cancelled is
 * nonzero. */
int ferry__budget_wait(ferry__budget *b, size_t n, const _Atomic int *cancelled, bool (*force)(void *arg), void *arg);
void ferry__budget_release(ferry__budget *b, size_t n);

/* ---- random generators and hashing ------------------------------------------------------ */
/* xoshiro256** seeded through splitmix64: 32 bytes of state, saved and restored as 4 u64. */
typedef struct ferry__rng {
    uint64_t s[4];
} ferry__rng;
void ferry__rng_seed(ferry__rng *r, uint64_t seed);
uint64_t ferry__rng_next(ferry__rng *r);
/* Uniform integer in [0, n), n > 0, without modulo bias. */
uint64_t ferry__rng_below(ferry__rng *r, uint64_t n);
double ferry__rng_uniform(ferry__rng *r);
/* Mixes two 64-bit values into one well-spread value (for seeds). */
uint64_t ferry__mix64(uint64_t a, uint64_t b);
/* FNV-1a 64 over bytes, continuing from h (start with FERRY__FNV_INIT). */
#define FERRY__FNV_INIT 0xcbf29ce484222325ull
uint64_t ferry__fnv64(uint64_t h, const void *p, size_t n);

/* ---- intrusive doubly linked list (libuv's queue.h, as functions) ----------------------- */
typedef struct ferry__list {
    struct ferry__list *prev, *next;
} ferry__list;
static inline void ferry__list_init(ferry__list *h) { h->prev = h->next = h; }
static inline bool ferry__list_empty(const ferry__list *h) { return h->next == h; }
static inline void ferry__list_push_back(ferry__list *h, ferry__list *n) {
    n->next = h;
    n->prev = h->prev;
    h->prev->next = n;
    h->prev = n;
}
static inline void ferry__list_remove(ferry__list *n) {
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

/* ---- byte writer / reader (little-endian; used by saved state) -------------------------- */
typedef struct ferry__writer {
    ferry__allocator *a;
    uint8_t *data;
    size_t size, cap;
    bool failed; /* an allocation failed: everything after is dropped; check at the end */
} ferry__writer;

void ferry__writer_init(ferry__writer *w, ferry__allocator *a);
void ferry__writer_fini(ferry__writer *w);
void ferry__w_bytes(ferry__writer *w, const void *p, size_t n);
void ferry__w_u8(ferry__writer *w, uint8_t v);
void ferry__w_u32(ferry__writer *w, uint32_t v);
void ferry__w_u64(ferry__writer *w, uint64_t v);
static inline void ferry__w_i64(ferry__writer *w, int64_t v) { ferry__w_u64(w, (uint64_t)v); }
/* A length-prefixed string. */
void ferry__w_str(ferry__writer *w, const char *s);
/* Text: printf-formatted, no terminating NUL (text writers: JSON, reports). */
void ferry__w_printf(ferry__writer *w, const char *fmt, ...) FERRY_PRINTF(2, 3);
/* s as a JSON string: quoted, with '"', '\\' and control characters escaped (bytes >= 0x80
 * are copied: s is UTF-8). */
void ferry__w_json_str(ferry__writer *w, const char *s);

typedef struct ferry__reader {
    const uint8_t *p, *end;
    size_t start_off; /* offset of p's origin in the original input, for messages */
    const uint8_t *origin;
} ferry__reader;

void ferry__reader_init(ferry__reader *r, const void *data, size_t size);
/* Each returns FERRY_OK or FERRY_ETRUNCATED (with a message naming the offset in st). */
int ferry__r_bytes(ferry__reader *r, void *out, size_t n, ferry__status *st);
int ferry__r_u8(ferry__reader *r, uint8_t *v, ferry__status *st);
int ferry__r_u32(ferry__reader *r, uint32_t *v, ferry__status *st);
int ferry__r_u64(ferry__reader *r, uint64_t *v, ferry__status *st);
int ferry__r_i64(ferry__reader *r, int64_t *v, ferry__status *st);
/* Reads a string written by ferry__w_str into buf (cap bytes incl. NUL). */
int ferry__r_str(ferry__reader *r, char *buf, size_t cap, ferry__status *st);
static inline size_t ferry__r_offset(const ferry__reader *r) { return (size_t)(r->p - r->origin); }
static inline size_t ferry__r_left(const ferry__reader *r) { return (size_t)(r->end - r->p); }

#endif
