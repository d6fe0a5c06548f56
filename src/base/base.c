/*
 * base.c - status messages, the allocator hook, the byte budget, random generators, hashing and
 * the state writer/reader. See base.h for the contracts.
 *
 * Allocator: every block carries a 16-byte header holding its payload size, so callers free
 * without remembering sizes while the hook still gets lua_Alloc's (ptr, old_size, new_size).
 * Each thread counts and caches in a shard of its own (see base.h): the runtime's allocator is
 * registered, and a thread's first allocation claims one of its 64 owned shards, recorded in a
 * thread-local (allocator, generation, shard) slot; a thread-exit destructor gives the shard back
 * if that allocator is still registered with that generation, so neither a runtime freed before
 * the thread nor a new runtime at the same address is touched by mistake. With the default hook,
 * freed blocks of up to 512 bytes stay in the shard's magazines (chains linked through the
 * header's second word); full chains move whole between shards through a per-class depot. The
 * per-element blocks of a pipeline (elements, scalar tensors) then cost a pop from a thread's own
 * chain with no locked instruction; blocks that one thread makes and another frees add one short
 * lock per chain of M blocks.
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

int ferry__last_error_prefix(int code, const char *prefix) {
    last_error.code = code;
    ferry__status_prefix(&last_error, "%s", prefix);
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

static inline ferry__alloc_shard *shard_at(ferry__allocator *a, int i) {
    return i < FERRY__ALLOC_SHARDS ? &a->shard[i] : &a->owned[i - FERRY__ALLOC_SHARDS];
}

void ferry__allocator_init(ferry__allocator *a, ferry_alloc_fn fn, void *user) {
    a->fn = fn ? fn : default_alloc;
    a->user = user;
#ifdef FERRY__ASAN
    a->cache = false; /* freed blocks go through ASan's quarantine: stale pointers stay detectable */
#else
    a->cache = fn == NULL;
#endif
    atomic_init(&a->gen, 0);
    a->reg_next = NULL;
    atomic_init(&a->large.lock, 0);
    a->large.n = 0;
    a->large.bytes = 0;
    a->large_limit = a->cache ? FERRY__LARGE_LIMIT : 0;
    atomic_init(&a->owned_mask, 0);
    for (int c = 0; c < FERRY__CACHE_CLASSES; c++) {
        atomic_init(&a->depot[c].lock, 0);
        atomic_init(&a->depot[c].n, 0);
        a->depot[c].chains = NULL;
    }
    for (int i = 0; i < FERRY__ALLOC_SHARDS + FERRY__ALLOC_OWNED; i++) {
        ferry__alloc_shard *s = shard_at(a, i);
        atomic_init(&s->bytes, 0);
        atomic_init(&s->blocks, 0);
        atomic_init(&s->lock, 0);
        memset(s->mag, 0, sizeof s->mag);
    }
}

void ferry__allocator_usage(ferry__allocator *a, int64_t *bytes, int64_t *blocks) {
    int64_t b = 0, n = 0;
    for (int i = 0; i < FERRY__ALLOC_SHARDS + FERRY__ALLOC_OWNED; i++) {
        ferry__alloc_shard *s = shard_at(a, i);
        b += atomic_load_explicit(&s->bytes, memory_order_relaxed);
        n += atomic_load_explicit(&s->blocks, memory_order_relaxed);
    }
    if (bytes) *bytes = b;
    if (blocks) *blocks = n;
}

/* ---- owned shards: the registry and each thread's claims ---- */
/* The registry lists the registered allocators. Its lock is taken when a runtime is made or freed,
 * once by each thread that claims (to arm its exit destructor), when a thread's claim slots are
 * full of claims that may be stale, and when a thread exits: never per allocation. A claim is
 * (allocator, generation, shard); it is live while that allocator is registered with that
 * generation. A thread checks the generation before using a claim (a runtime freed and another
 * made at the same address is a new generation), and touches an allocator it does not allocate
 * from only under the registry lock after finding it registered. */
#define CLAIM_SLOTS 4    /* allocators a thread holds shards of at once (the one used last first) */
#define CLAIM_RETRY 4096 /* uses of the shared shards between two tries to claim, after a failure */

typedef struct claim {
    ferry__allocator *a;
    uint64_t gen;
    uint32_t idx;
} claim;

typedef struct thread_claims {
    claim slot[CLAIM_SLOTS];
    ferry__allocator *miss; /* no owned shard was free in `miss` (generation miss_gen) */
    uint64_t miss_gen;
    uint32_t miss_left; /* uses of the shared shards before trying again */
    bool armed;         /* the exit destructor will run */
    bool exited;        /* it ran (or cannot): claim nothing more */
} thread_claims;

static _Thread_local thread_claims tl_claims;
static ferry__mutex registry_mu = FERRY__MUTEX_INITIALIZER;
static ferry__allocator *registry; /* under registry_mu */
static int exit_key_state;         /* under registry_mu: 0 not made, 1 made, -1 failed */
static ferry__thread_key exit_key;
static _Atomic uint64_t next_gen = 1;

void ferry__allocator_register(ferry__allocator *a) {
    ferry__mutex_lock(&registry_mu);
    atomic_store_explicit(&a->gen, atomic_fetch_add(&next_gen, 1), memory_order_relaxed);
    a->reg_next = registry;
    registry = a;
    ferry__mutex_unlock(&registry_mu);
}

void ferry__allocator_unregister(ferry__allocator *a) {
    ferry__mutex_lock(&registry_mu);
    for (ferry__allocator **p = &registry; *p; p = &(*p)->reg_next)
        if (*p == a) {
            *p = a->reg_next;
            break;
        }
    a->reg_next = NULL;
    atomic_store_explicit(&a->gen, 0, memory_order_relaxed);
    ferry__mutex_unlock(&registry_mu);
}

/* Under registry_mu: whether c is still a claim on a registered allocator. */
static bool claim_live(const claim *c) {
    for (ferry__allocator *p = registry; p; p = p->reg_next)
        if (p == c->a) return atomic_load_explicit(&p->gen, memory_order_relaxed) == c->gen;
    return false;
}

static void give_back(const claim *c) {
    /* release: our shard's chains and counters go to its next owner */
    atomic_fetch_and_explicit(&c->a->owned_mask, ~((uint64_t)1 << c->idx), memory_order_release);
}

static void thread_exit(void *arg) {
    thread_claims *t = arg;
    t->exited = true;
    bool any = false;
    for (int i = 0; i < CLAIM_SLOTS; i++) any |= t->slot[i].a != NULL;
    if (!any) return; /* a runtime worker released its shard itself */
    ferry__mutex_lock(&registry_mu);
    for (int i = 0; i < CLAIM_SLOTS; i++)
        if (t->slot[i].a && claim_live(&t->slot[i])) give_back(&t->slot[i]);
    ferry__mutex_unlock(&registry_mu);
    memset(t->slot, 0, sizeof t->slot);
}

/* Arranges for thread_exit to run when the calling thread ends. */
static bool arm_exit(thread_claims *t) {
    ferry__mutex_lock(&registry_mu);
    if (exit_key_state == 0) exit_key_state = ferry__thread_key_create(&exit_key, thread_exit) == 0 ? 1 : -1;
    bool ok = exit_key_state > 0;
    ferry__mutex_unlock(&registry_mu);
    if (ok) ok = ferry__thread_key_set(&exit_key, t) == 0;
    t->armed = ok;
    t->exited = !ok; /* without the destructor a claim would never be given back */
    return ok;
}

/* A slot for a new claim on a: an empty one, or one of an earlier generation of a (that
 * allocator is gone: nothing to give back). Otherwise drops the stale claims and tries again.
 * Returns -1 when the thread holds live claims on CLAIM_SLOTS other allocators. */
static int free_slot(thread_claims *t, ferry__allocator *a) {
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < CLAIM_SLOTS; i++)
            if (!t->slot[i].a || t->slot[i].a == a) return i;
        if (pass) break;
        ferry__mutex_lock(&registry_mu);
        for (int i = 0; i < CLAIM_SLOTS; i++)
            if (!claim_live(&t->slot[i])) t->slot[i].a = NULL;
        ferry__mutex_unlock(&registry_mu);
    }
    return -1;
}

/* Moves slot i to the front (the fast path looks at slot 0 only). */
static void slot_to_front(thread_claims *t, int i) {
    claim c = t->slot[i];
    memmove(&t->slot[1], &t->slot[0], (size_t)i * sizeof(claim));
    t->slot[0] = c;
}

/* Claims a free owned shard of a (gen: a's generation, not 0) into slot 0. */
static ferry__alloc_shard *claim_new(thread_claims *t, ferry__allocator *a, uint64_t gen) {
    if (t->exited || (!t->armed && !arm_exit(t))) return NULL;
    int i = free_slot(t, a);
    if (i < 0) return NULL;
    uint64_t m = atomic_load_explicit(&a->owned_mask, memory_order_relaxed);
    while (m != UINT64_MAX) {
        uint32_t idx = (uint32_t)__builtin_ctzll(~m);
        /* acquire: the previous owner's chains and counters are ours now */
        if (atomic_compare_exchange_weak_explicit(&a->owned_mask, &m, m | ((uint64_t)1 << idx), memory_order_acquire,
                                                  memory_order_relaxed)) {
            t->slot[i] = (claim){a, gen, idx};
            slot_to_front(t, i);
            return &a->owned[idx];
        }
    }
    return NULL;
}

/* The owned shard of the calling thread in a, claimed now if need be; NULL: use a shared one. */
static ferry__alloc_shard *owned_shard_slow(ferry__allocator *a) {
    thread_claims *t = &tl_claims;
    uint64_t gen = atomic_load_explicit(&a->gen, memory_order_relaxed);
    if (gen == 0) return NULL;
    for (int i = 1; i < CLAIM_SLOTS; i++)
        if (t->slot[i].a == a && t->slot[i].gen == gen) {
            slot_to_front(t, i);
            return &a->owned[t->slot[0].idx];
        }
    if (t->miss == a && t->miss_gen == gen && --t->miss_left > 0) return NULL;
    ferry__alloc_shard *s = claim_new(t, a, gen);
    if (s) {
        if (t->miss == a) t->miss = NULL;
    } else {
        t->miss = a;
        t->miss_gen = gen;
        t->miss_left = CLAIM_RETRY;
    }
    return s;
}

static inline ferry__alloc_shard *owned_shard(ferry__allocator *a) {
    const claim *c = &tl_claims.slot[0];
    if (c->a == a && c->gen == atomic_load_explicit(&a->gen, memory_order_relaxed)) return &a->owned[c->idx];
    return owned_shard_slow(a);
}

void ferry__allocator_claim(ferry__allocator *a) { (void)owned_shard(a); }

void ferry__allocator_release(ferry__allocator *a) {
    thread_claims *t = &tl_claims;
    uint64_t gen = atomic_load_explicit(&a->gen, memory_order_relaxed);
    for (int i = 0; i < CLAIM_SLOTS; i++)
        if (gen && t->slot[i].a == a && t->slot[i].gen == gen) {
            give_back(&t->slot[i]);
            memmove(&t->slot[i], &t->slot[i + 1], (size_t)(CLAIM_SLOTS - 1 - i) * sizeof(claim));
            t->slot[CLAIM_SLOTS - 1].a = NULL;
            return;
        }
}

/* ---- shared shards ---- */
static _Thread_local char shard_anchor;

static inline ferry__alloc_shard *my_shard(ferry__allocator *a) {
    uintptr_t x = (uintptr_t)&shard_anchor;
    x ^= x >> 12;
    x ^= x >> 20;
    return &a->shard[x % FERRY__ALLOC_SHARDS];
}

/* Held for a few instructions; a holder preempted inside them must not make the others spin a
 * whole time slice, so a waiter yields its core after a short spin. */
static inline void spin_lock(_Atomic int *l) {
    while (atomic_exchange_explicit(l, 1, memory_order_acquire)) {
        for (int i = 0; atomic_load_explicit(l, memory_order_relaxed); i++) {
            if (i < 64) ferry__cpu_relax();
            else ferry__thread_yield();
        }
    }
}

static inline void spin_unlock(_Atomic int *l) { atomic_store_explicit(l, 0, memory_order_release); }

/* Counter updates. An owned shard has one writer, its owner: a plain load + store is exact
 * (readers only need each value to be atomic) and costs no locked instruction. A shared shard
 * takes atomic adds. */
static inline void count_owned(ferry__alloc_shard *s, int64_t bytes, int64_t blocks) {
    atomic_store_explicit(&s->bytes, atomic_load_explicit(&s->bytes, memory_order_relaxed) + bytes,
                          memory_order_relaxed);
    atomic_store_explicit(&s->blocks, atomic_load_explicit(&s->blocks, memory_order_relaxed) + blocks,
                          memory_order_relaxed);
}

static inline void count_shared(ferry__alloc_shard *s, int64_t bytes, int64_t blocks) {
    atomic_fetch_add_explicit(&s->bytes, bytes, memory_order_relaxed);
    if (blocks) atomic_fetch_add_explicit(&s->blocks, blocks, memory_order_relaxed);
}

static inline void count(ferry__allocator *a, ferry__alloc_shard *owned, int64_t bytes, int64_t blocks) {
    if (owned) count_owned(owned, bytes, blocks);
    else count_shared(my_shard(a), bytes, blocks);
}

/* ---- the small-block cache (default hook only): magazines and the depot ---- */
/* The link of a cached block lives in the second half of its header; the link from a chain to the
 * next one in the depot lives in the first payload word of the chain's head. */
static inline void **link_of(uint8_t *block) { return (void **)(void *)(block + 8); }
static inline void **chain_link_of(uint8_t *head) { return (void **)(void *)(head + HDR); }

/* Block sizes of the classes, header included: 64-byte steps to 512, then four per doubling. */
/* clang-format off */
#define CLASS_BLOCKS(X)                                                                                                \
    X(64) X(128) X(192) X(256) X(320) X(384) X(448) X(512)                                                             \
    X(640) X(768) X(896) X(1024) X(1280) X(1536) X(1792) X(2048)                                                       \
    X(2560) X(3072) X(3584) X(4096) X(5120) X(6144) X(7168) X(8192)
/* clang-format on */
#define BLOCK_OF(b) b,
#define MAG_M_OF(b) FERRY__MAG_M(b),
#define DEPOT_OF(b) FERRY__DEPOT_BYTES / (FERRY__MAG_M(b) * (b)),
static const uint16_t class_block[FERRY__CACHE_CLASSES] = {CLASS_BLOCKS(BLOCK_OF)};
static const uint16_t mag_m[FERRY__CACHE_CLASSES] = {CLASS_BLOCKS(MAG_M_OF)};
static const uint16_t depot_max[FERRY__CACHE_CLASSES] = {CLASS_BLOCKS(DEPOT_OF)};
_Static_assert(sizeof class_block / sizeof class_block[0] == FERRY__CACHE_CLASSES, "one entry per class");
_Static_assert(HDR == 16, "FERRY__CACHE_MAX counts a 16-byte header");

/* A cached block of class c, header included. */
static inline size_t class_block_size(int c) { return class_block[c]; }

static void free_chain(ferry__allocator *a, int c, uint8_t *b) {
    while (b) {
        uint8_t *next = *link_of(b);
        a->fn(a->user, b, class_block_size(c), 0);
        b = next;
    }
}

/* Returns false when the depot of class c is full (the caller frees the chain). */
static bool depot_put(ferry__allocator *a, int c, uint8_t *chain) {
    ferry__alloc_depot *d = &a->depot[c];
    bool ok = false;
    spin_lock(&d->lock);
    uint32_t n = atomic_load_explicit(&d->n, memory_order_relaxed);
    if (n < depot_max[c]) {
        *chain_link_of(chain) = d->chains;
        d->chains = chain;
        atomic_store_explicit(&d->n, n + 1, memory_order_relaxed);
        ok = true;
    }
    spin_unlock(&d->lock);
    return ok;
}

static uint8_t *depot_take(ferry__allocator *a, int c) {
    ferry__alloc_depot *d = &a->depot[c];
    if (atomic_load_explicit(&d->n, memory_order_relaxed) == 0) return NULL;
    spin_lock(&d->lock);
    uint8_t *chain = d->chains;
    if (chain) {
        d->chains = *chain_link_of(chain);
        atomic_store_explicit(&d->n, atomic_load_explicit(&d->n, memory_order_relaxed) - 1, memory_order_relaxed);
    }
    spin_unlock(&d->lock);
    return chain;
}

/* A cached block of class c, or NULL (the caller asks the hook). */
static inline uint8_t *mag_pop(ferry__allocator *a, ferry__alloc_mag *m, int c) {
    uint8_t *b = m->loaded;
    if (!b) {
        if (m->prev) {
            b = m->prev;
            m->prev = m->spare;
            m->spare = NULL;
        } else if (!(b = depot_take(a, c))) {
            return NULL;
        }
        m->n = mag_m[c];
    }
    m->loaded = *link_of(b);
    m->n--;
    return b;
}

/* Caches b. Returns NULL, or a full chain the depot had no room for: the caller frees it (outside
 * any shard lock). */
static inline uint8_t *mag_push(ferry__allocator *a, ferry__alloc_mag *m, int c, uint8_t *b) {
    uint8_t *spill = NULL;
    if (m->n == mag_m[c]) {
        if (m->spare && !depot_put(a, c, m->spare)) spill = m->spare;
        m->spare = m->prev;
        m->prev = m->loaded;
        m->loaded = NULL;
        m->n = 0;
    }
    *link_of(b) = m->loaded;
    m->loaded = b;
    m->n++;
    return spill;
}

/* ---- large blocks kept for reuse (default hook only) ---- */
/* A large block's capacity (payload bytes it has room for) lives in the second word of its
 * header, set wherever such a block is made (ferry__mem_alloc, ferry__mem_realloc). */
static inline size_t large_cap(const uint8_t *b) {
    size_t c;
    memcpy(&c, b + 8, sizeof c);
    return c;
}
static inline void set_large_cap(uint8_t *b, size_t cap) { memcpy(b + 8, &cap, sizeof cap); }

static inline bool large_eligible(const ferry__allocator *a, size_t size) {
    return a->large_limit > 0 && size >= FERRY__LARGE_MIN && size <= FERRY__LARGE_MAX;
}

/* A kept block with room for size bytes and not a quarter more, most recent first, or NULL. */
static uint8_t *large_take(ferry__allocator *a, size_t size) {
    ferry__alloc_large *l = &a->large;
    uint8_t *b = NULL;
    spin_lock(&l->lock);
    for (uint32_t i = l->n; i-- > 0;) {
        if (l->cap[i] < size || l->cap[i] > size + size / 4) continue;
        b = l->block[i];
        l->bytes -= l->cap[i];
        memmove(&l->block[i], &l->block[i + 1], (l->n - 1 - i) * sizeof l->block[0]);
        memmove(&l->cap[i], &l->cap[i + 1], (l->n - 1 - i) * sizeof l->cap[0]);
        l->n--;
        break;
    }
    spin_unlock(&l->lock);
    return b;
}

/* Keeps b (capacity cap) as the most recent block, dropping the oldest ones beyond the limits;
 * what is dropped goes back to the hook outside the lock. */
static void large_put(ferry__allocator *a, uint8_t *b, size_t cap) {
    ferry__alloc_large *l = &a->large;
    uint8_t *drop[FERRY__LARGE_SLOTS + 1];
    size_t dcap[FERRY__LARGE_SLOTS + 1];
    int nd = 0;
    spin_lock(&l->lock);
    if (cap > a->large_limit) {
        drop[nd] = b;
        dcap[nd++] = cap;
    } else {
        while (l->n > 0 && (l->n == FERRY__LARGE_SLOTS || l->bytes + cap > a->large_limit)) {
            drop[nd] = l->block[0];
            dcap[nd++] = l->cap[0];
            l->bytes -= l->cap[0];
            memmove(&l->block[0], &l->block[1], (l->n - 1) * sizeof l->block[0]);
            memmove(&l->cap[0], &l->cap[1], (l->n - 1) * sizeof l->cap[0]);
            l->n--;
        }
        l->block[l->n] = b;
        l->cap[l->n++] = cap;
        l->bytes += cap;
    }
    spin_unlock(&l->lock);
    for (int i = 0; i < nd; i++) a->fn(a->user, drop[i], dcap[i] + HDR, 0);
}

void ferry__allocator_set_large_limit(ferry__allocator *a, size_t limit) {
    if (a->large_limit > 0) a->large_limit = FERRY__MIN(limit, FERRY__LARGE_LIMIT);
}

void ferry__allocator_fini(ferry__allocator *a) {
    for (uint32_t i = 0; i < a->large.n; i++) a->fn(a->user, a->large.block[i], a->large.cap[i] + HDR, 0);
    a->large.n = 0;
    a->large.bytes = 0;
    for (int i = 0; i < FERRY__ALLOC_SHARDS + FERRY__ALLOC_OWNED; i++) {
        ferry__alloc_shard *s = shard_at(a, i);
        for (int c = 0; c < FERRY__CACHE_CLASSES; c++) {
            free_chain(a, c, s->mag[c].loaded);
            free_chain(a, c, s->mag[c].prev);
            free_chain(a, c, s->mag[c].spare);
        }
        memset(s->mag, 0, sizeof s->mag);
    }
    for (int c = 0; c < FERRY__CACHE_CLASSES; c++) {
        uint8_t *chain = a->depot[c].chains;
        while (chain) {
            uint8_t *next = *chain_link_of(chain);
            free_chain(a, c, chain);
            chain = next;
        }
        a->depot[c].chains = NULL;
        atomic_store_explicit(&a->depot[c].n, 0, memory_order_relaxed);
    }
}

/* Capacity the hook is asked for: small payloads are rounded up to their class so that any
 * cached block of a class fits any request of that class. */
static inline int class_of(size_t size) {
    unsigned b = (unsigned)(size + HDR - 1); /* size <= FERRY__CACHE_MAX: b < 8192 */
    if (b < 512) return (int)(b / FERRY__CACHE_GRAIN);
    int e = 31 - __builtin_clz(b); /* 9 to 12: b in [2^e, 2^(e+1)), cut in four steps of 2^(e-2) */
    return 8 + (e - 9) * 4 + (int)((b >> (e - 2)) & 3);
}

/* The payload a block for `size` bytes has room for (what the hook is asked for, less HDR). */
static inline size_t block_cap(const ferry__allocator *a, size_t size) {
    if (!a->cache || size > FERRY__CACHE_MAX) return size;
    return class_block_size(class_of(size)) - HDR;
}

size_t ferry__mem_capacity(const ferry__allocator *a, size_t size) { return block_cap(a, size); }

void *ferry__mem_alloc(ferry__allocator *a, size_t size) {
    if (size > SIZE_MAX - HDR) return NULL;
    ferry__alloc_shard *own = owned_shard(a);
    uint8_t *b = NULL;
    if (a->cache && size <= FERRY__CACHE_MAX) {
        int c = class_of(size);
        if (own) {
            b = mag_pop(a, &own->mag[c], c);
        } else {
            ferry__alloc_shard *s = my_shard(a);
            spin_lock(&s->lock);
            b = mag_pop(a, &s->mag[c], c);
            spin_unlock(&s->lock);
        }
    }
    bool large = large_eligible(a, size);
    if (large) b = large_take(a, size);
    if (!b) {
        if (a->cache && size <= FERRY__CACHE_MAX && a->fn == default_alloc) /* a line-aligned block */
            b = aligned_alloc(FERRY__CACHE_GRAIN, class_block_size(class_of(size)));
        else b = a->fn(a->user, NULL, 0, block_cap(a, size) + HDR);
        if (!b) return NULL;
        if (large) set_large_cap(b, size);
    }
    count(a, own, (int64_t)size, 1);
    memcpy(b, &size, sizeof size);
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
    if (large_eligible(a, size)) set_large_cap(b, size);
    count(a, owned_shard(a), (int64_t)size - (int64_t)old, 0);
    return b + HDR;
}

void ferry__mem_free(ferry__allocator *a, void *p) {
    if (!p) return;
    size_t size = ferry__mem_size(p);
    uint8_t *b = (uint8_t *)p - HDR;
    ferry__alloc_shard *own = owned_shard(a);
    count(a, own, -(int64_t)size, -1);
    if (a->cache && size <= FERRY__CACHE_MAX) {
        int c = class_of(size);
        uint8_t *spill;
        if (own) {
            spill = mag_push(a, &own->mag[c], c, b);
        } else {
            ferry__alloc_shard *s = my_shard(a);
            spin_lock(&s->lock);
            spill = mag_push(a, &s->mag[c], c, b);
            spin_unlock(&s->lock);
        }
        free_chain(a, c, spill);
        return;
    }
    if (large_eligible(a, size)) {
        large_put(a, b, large_cap(b));
        return;
    }
    a->fn(a->user, b, block_cap(a, size) + HDR, 0);
}

void *ferry__mem_alloc_bootstrap(ferry_alloc_fn fn, void *user, size_t size) {
    if (size > SIZE_MAX - HDR) return NULL;
    uint8_t *b = (fn ? fn : default_alloc)(user, NULL, 0, size + HDR);
    if (!b) return NULL;
    memcpy(b, &size, sizeof size);
    return b + HDR;
}

void ferry__mem_free_bootstrap(ferry_alloc_fn fn, void *user, void *p) {
    if (!p) return;
    size_t size = ferry__mem_size(p);
    (fn ? fn : default_alloc)(user, (uint8_t *)p - HDR, size + HDR, 0);
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

int ferry__budget_wait(ferry__budget *b, size_t n, const _Atomic int *cancelled, bool (*force)(void *arg), void *arg) {
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
        if (force && force(arg)) {
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
    ferry__store_le32(b, v);
    ferry__w_bytes(w, b, 4);
}

void ferry__w_u64(ferry__writer *w, uint64_t v) {
    uint8_t b[8];
    ferry__store_le64(b, v);
    ferry__w_bytes(w, b, 8);
}

void ferry__w_str(ferry__writer *w, const char *s) {
    size_t n = strlen(s);
    ferry__w_u32(w, (uint32_t)n);
    ferry__w_bytes(w, s, n);
}

void ferry__w_printf(ferry__writer *w, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        w->failed = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        ferry__w_bytes(w, small, (size_t)n);
        return;
    }
    char *big = ferry__mem_alloc(w->a, (size_t)n + 1);
    if (!big) {
        w->failed = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    ferry__w_bytes(w, big, (size_t)n);
    ferry__mem_free(w->a, big);
}

void ferry__w_json_str(ferry__writer *w, const char *s) {
    ferry__w_u8(w, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            uint8_t esc[2] = {'\\', *p};
            ferry__w_bytes(w, esc, 2);
        } else if (*p < 0x20) {
            ferry__w_printf(w, "\\u%04x", *p);
        } else {
            ferry__w_u8(w, *p);
        }
    }
    ferry__w_u8(w, '"');
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
    *v = ferry__load_le32(b);
    return FERRY_OK;
}

int ferry__r_u64(ferry__reader *r, uint64_t *v, ferry__status *st) {
    uint8_t b[8] = {0};
    int rc = ferry__r_bytes(r, b, 8, st);
    if (rc) return rc;
    *v = ferry__load_le64(b);
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
