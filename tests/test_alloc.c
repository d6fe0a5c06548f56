/*
 * test_alloc.c - the allocator's owned shards, magazines and depot (src/base/base.c).
 *
 * Blocks made on one thread and freed on another, more threads than owned shards, a thread that
 * exits holding a shard, a thread that outlives the runtime it claimed a shard of, and the depot
 * handing whole chains from a freeing thread to an allocating one. Threads meet through mutexes,
 * condition variables and barriers, never through sleeps, so nothing here depends on timing.
 *
 * With the default hook the cache is on (off under AddressSanitizer); the runtime tests check
 * the counters either way. The tests that count hook calls use an allocator of their own with a
 * counting hook and switch its cache on by hand, so that they run the same in every build.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "runner.h"

#include "core/core.h"

static void stats_of(ferry_runtime *rt, int64_t *blocks, int64_t *bytes) {
    ferry_runtime_stats s;
    ASSERT_OK(ferry_runtime_stats_get(rt, &s));
    *blocks = s.blocks_allocated;
    *bytes = (int64_t)s.bytes_allocated;
}

static int owned_count(ferry__allocator *a) { return __builtin_popcountll(atomic_load(&a->owned_mask)); }

static void start(pthread_t *t, void *(*fn)(void *), void *arg) { ASSERT_EQ(pthread_create(t, NULL, fn, arg), 0); }
static void join(pthread_t t) { ASSERT_EQ(pthread_join(t, NULL), 0); }

/* Sizes of every class, 0 and some large blocks: size of the i-th block. */
static size_t mixed_size(uint64_t i) {
    uint64_t x = i * 0x9e3779b97f4a7c15ull;
    x ^= x >> 29;
    return (size_t)(x % 700);
}

/* Writes a stamp into p (as much as fits) and checks it back. */
static void stamp(void *p, size_t size, uint64_t v) { memcpy(p, &v, size < 8 ? size : 8); }
static void check_stamp(const void *p, size_t size, uint64_t v) {
    uint64_t got = 0, want = 0;
    memcpy(&got, p, size < 8 ? size : 8);
    memcpy(&want, &v, size < 8 ? size : 8);
    if (got != want)
        FAILF("block %p (size %zu) holds %llx, want %llx", p, size, (unsigned long long)got, (unsigned long long)want);
}

/* ---- a bounded queue of pointer batches (one producer, one consumer) ---- */
#define BATCH 256
#define QCAP 16
typedef struct queue {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    void *slot[QCAP][BATCH];
    int len[QCAP];
    int head, count;
    bool done;
} queue;

static void queue_init(queue *q) {
    memset(q, 0, sizeof *q);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
}

static void queue_push(queue *q, void **p, int n, bool done) {
    pthread_mutex_lock(&q->mu);
    while (q->count == QCAP) pthread_cond_wait(&q->cv, &q->mu);
    int i = (q->head + q->count) % QCAP;
    memcpy(q->slot[i], p, (size_t)n * sizeof *p);
    q->len[i] = n;
    q->count++;
    q->done = done;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* Returns the number of pointers copied to p; 0 at the end. */
static int queue_pop(queue *q, void **p) {
    pthread_mutex_lock(&q->mu);
    while (q->count == 0 && !q->done) pthread_cond_wait(&q->cv, &q->mu);
    int n = 0;
    if (q->count) {
        n = q->len[q->head];
        memcpy(p, q->slot[q->head], (size_t)n * sizeof *p);
        q->head = (q->head + 1) % QCAP;
        q->count--;
        pthread_cond_broadcast(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return n;
}

/* ---- one thread allocates, another frees ---- */
#define CROSS_BLOCKS 1000000

typedef struct cross {
    ferry_runtime *rt;
    queue q;
    int64_t freed;
} cross;

static void *cross_producer(void *arg) {
    cross *x = arg;
    void *batch[BATCH];
    int n = 0;
    for (uint64_t i = 0; i < CROSS_BLOCKS; i++) {
        size_t size = mixed_size(i);
        void *p = ferry__alloc(x->rt, size);
        ASSERT(p != NULL);
        ASSERT_EQ(ferry__mem_size(p), size);
        stamp(p, size, i);
        batch[n++] = p;
        if (n == BATCH || i + 1 == CROSS_BLOCKS) {
            queue_push(&x->q, batch, n, i + 1 == CROSS_BLOCKS);
            n = 0;
        }
    }
    return NULL;
}

static void *cross_consumer(void *arg) {
    cross *x = arg;
    void *batch[BATCH];
    int n;
    uint64_t i = 0;
    while ((n = queue_pop(&x->q, batch)) > 0)
        for (int k = 0; k < n; k++, i++) {
            size_t size = mixed_size(i);
            ASSERT_EQ(ferry__mem_size(batch[k]), size);
            check_stamp(batch[k], size, i);
            ferry__free(x->rt, batch[k]);
        }
    x->freed = (int64_t)i;
    return NULL;
}

/* Cached blocks (the default hook) start on a cache line and fill whole lines, header included:
 * blocks that move between threads never share a line with another thread's block. */
TEST(cached_blocks_own_their_cache_lines) {
    ferry_runtime *rt = rt_new();
    if (!rt->alloc.cache) {
        ferry_runtime_free(rt);
        SKIP("no block cache in this build (AddressSanitizer)");
    }
    enum { N = 160 };
    void *p[N];
    for (int round = 0; round < 2; round++) { /* fresh from the hook, then from the cache */
        for (int i = 0; i < N; i++) {
            size_t n = (size_t)(i * 51 + 1); /* 1 to 8110 bytes: every class */
            p[i] = ferry__mem_alloc(&rt->alloc, n);
            ASSERT(p[i] != NULL);
            ASSERT_EQ(((uintptr_t)p[i] - 16) % FERRY__CACHE_GRAIN, 0);
            memset(p[i], 0xab, n);
        }
        for (int i = 0; i < N; i++) ferry__mem_free(&rt->alloc, p[i]);
    }
    ASSERT_OK(ferry_runtime_free(rt));
}

/* The size classes: every payload up to FERRY__CACHE_MAX gets a block of whole lines that holds
 * it with its header, wasting at most a line or a quarter of it; FERRY__CACHE_CLASSES of them. */
TEST(size_classes_fit_tightly) {
    ferry_runtime *rt = rt_new();
    if (!rt->alloc.cache) {
        ferry_runtime_free(rt);
        SKIP("no block cache in this build (AddressSanitizer)");
    }
    size_t prev = 0;
    int classes = 0;
    for (size_t n = 0; n <= FERRY__CACHE_MAX; n++) {
        size_t block = ferry__mem_capacity(&rt->alloc, n) + 16;
        ASSERT_EQ(block % FERRY__CACHE_GRAIN, 0);
        ASSERT(block >= n + 16);
        ASSERT(block <= n + 16 + FERRY__MAX((size_t)FERRY__CACHE_GRAIN - 1, (n + 16) / 4));
        ASSERT(block >= prev);
        if (block != prev) classes++;
        prev = block;
    }
    ASSERT_EQ(prev, FERRY__CACHE_BLOCK_MAX);
    ASSERT_EQ(classes, FERRY__CACHE_CLASSES);
    ASSERT_EQ(ferry__mem_capacity(&rt->alloc, FERRY__CACHE_MAX + 1), FERRY__CACHE_MAX + 1); /* not cached */
    /* a block freed is the next one of its class handed out, whatever size in the class asks */
    void *a = ferry__mem_alloc(&rt->alloc, 1000);
    ASSERT(a != NULL);
    ferry__mem_free(&rt->alloc, a);
    void *b = ferry__mem_alloc(&rt->alloc, ferry__mem_capacity(&rt->alloc, 1000));
    ASSERT(b == a);
    ferry__mem_free(&rt->alloc, b);
    ASSERT_OK(ferry_runtime_free(rt));
}

TEST(cross_thread_million_blocks) {
    cross *x = calloc(1, sizeof *x);
    ASSERT(x != NULL);
    x->rt = rt_new();
    queue_init(&x->q);
    int64_t blocks0, bytes0, blocks, bytes;
    stats_of(x->rt, &blocks0, &bytes0);
    pthread_t p, c;
    start(&p, cross_producer, x);
    start(&c, cross_consumer, x);
    join(p);
    join(c);
    ASSERT_EQ(x->freed, CROSS_BLOCKS);
    stats_of(x->rt, &blocks, &bytes);
    ASSERT_EQ(blocks, blocks0);
    ASSERT_EQ(bytes, bytes0);
    rt_done(x->rt);
    free(x);
}

/* ---- more user threads than owned shards ---- */
#define MANY_THREADS (FERRY__ALLOC_OWNED + 16)
#define MANY_HELD 64
#define MANY_OPS 5000

typedef struct many {
    ferry_runtime *rt;
    pthread_barrier_t claimed, go;
} many;

static void *many_thread(void *arg) {
    many *m = arg;
    void *held[MANY_HELD];
    for (int i = 0; i < MANY_HELD; i++) ASSERT((held[i] = ferry__alloc(m->rt, mixed_size((uint64_t)i))) != NULL);
    pthread_barrier_wait(&m->claimed); /* every thread holds a shard, or found none free */
    pthread_barrier_wait(&m->go);
    for (int i = 0; i < MANY_OPS; i++) {
        int k = i % MANY_HELD;
        ferry__free(m->rt, held[k]);
        ASSERT((held[k] = ferry__alloc(m->rt, mixed_size((uint64_t)i * 7))) != NULL);
    }
    for (int i = 0; i < MANY_HELD; i++) ferry__free(m->rt, held[i]);
    return NULL;
}

TEST(more_threads_than_owned_shards) {
    many m;
    m.rt = rt_new();
    ASSERT_EQ(pthread_barrier_init(&m.claimed, NULL, MANY_THREADS + 1), 0);
    ASSERT_EQ(pthread_barrier_init(&m.go, NULL, MANY_THREADS + 1), 0);
    int64_t blocks0, bytes0, blocks, bytes;
    stats_of(m.rt, &blocks0, &bytes0);
    uint64_t mask0 = atomic_load(&m.rt->alloc.owned_mask);
    pthread_t t[MANY_THREADS];
    for (int i = 0; i < MANY_THREADS; i++) start(&t[i], many_thread, &m);
    pthread_barrier_wait(&m.claimed);
    ASSERT_EQ(owned_count(&m.rt->alloc), FERRY__ALLOC_OWNED); /* all taken: the rest share */
    stats_of(m.rt, &blocks, &bytes);
    ASSERT_EQ(blocks, blocks0 + (int64_t)MANY_THREADS * MANY_HELD);
    pthread_barrier_wait(&m.go);
    for (int i = 0; i < MANY_THREADS; i++) join(t[i]);
    /* each thread gave its shard back when it exited */
    ASSERT_EQ(atomic_load(&m.rt->alloc.owned_mask), mask0);
    stats_of(m.rt, &blocks, &bytes);
    ASSERT_EQ(blocks, blocks0);
    ASSERT_EQ(bytes, bytes0);
    pthread_barrier_destroy(&m.claimed);
    pthread_barrier_destroy(&m.go);
    rt_done(m.rt);
}

/* ---- a thread exits holding a shard; another takes it over ---- */
typedef struct handover {
    ferry_runtime *rt;
    void *freed;   /* the block the first thread freed last */
    void *got;     /* the second thread's first block of that class */
    uint64_t mask; /* owned_mask as the thread saw it after its first allocation */
    bool keep;     /* the second thread keeps its block (freed by the test) */
} handover;

static void *handover_thread(void *arg) {
    handover *h = arg;
    void *p = ferry__alloc(h->rt, 100);
    ASSERT(p != NULL);
    h->mask = atomic_load(&h->rt->alloc.owned_mask);
    h->got = p;
    if (!h->keep) {
        h->freed = p;
        ferry__free(h->rt, p);
    }
    return NULL; /* exits holding its shard */
}

TEST(exited_thread_shard_is_taken_over) {
    handover h = {0};
    h.rt = rt_new();
    int64_t blocks0, bytes0, blocks, bytes;
    stats_of(h.rt, &blocks0, &bytes0);
    uint64_t mask0 = atomic_load(&h.rt->alloc.owned_mask);
    pthread_t t;
    start(&t, handover_thread, &h);
    join(t);
    uint64_t first = h.mask & ~mask0;
    ASSERT_EQ(__builtin_popcountll(first), 1);
    ASSERT_EQ(atomic_load(&h.rt->alloc.owned_mask), mask0); /* given back at exit */
    void *freed = h.freed;
    h.keep = true;
    start(&t, handover_thread, &h);
    join(t);
    ASSERT_EQ(h.mask & ~mask0, first);             /* the same shard, claimed again */
    if (h.rt->alloc.cache) ASSERT(h.got == freed); /* with the block cached in it */
    stats_of(h.rt, &blocks, &bytes);
    ASSERT_EQ(blocks, blocks0 + 1);
    ferry__free(h.rt, h.got);
    stats_of(h.rt, &blocks, &bytes);
    ASSERT_EQ(blocks, blocks0);
    ASSERT_EQ(bytes, bytes0);
    rt_done(h.rt);
}

/* ---- a thread outlives the runtime it holds a shard of ---- */
typedef struct stale {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ferry_runtime *rt;
    int step; /* the test sets odd steps, the thread the even ones */
    uint64_t mask;
} stale;

static void stale_wait(stale *s, int step) {
    pthread_mutex_lock(&s->mu);
    while (s->step != step) pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

static void stale_set(stale *s, int step) {
    pthread_mutex_lock(&s->mu);
    s->step = step;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void churn(ferry_runtime *rt, int n) {
    void *held[64] = {0};
    for (int i = 0; i < n; i++) {
        int k = i % 64;
        ferry__free(rt, held[k]);
        ASSERT((held[k] = ferry__alloc(rt, mixed_size((uint64_t)i))) != NULL);
    }
    for (int k = 0; k < 64; k++) ferry__free(rt, held[k]);
}

static void *stale_thread(void *arg) {
    stale *s = arg;
    stale_wait(s, 1);
    churn(s->rt, 5000); /* claims a shard of the first runtime */
    s->mask = atomic_load(&s->rt->alloc.owned_mask);
    stale_set(s, 2);
    stale_wait(s, 3); /* the first runtime is freed, a second one made */
    churn(s->rt, 5000);
    s->mask = atomic_load(&s->rt->alloc.owned_mask);
    stale_set(s, 4);
    return NULL; /* exits holding a live claim and a stale one */
}

TEST(thread_outlives_runtime) {
    /* round 0: the second runtime is made right after the first is freed (often at its address);
     * round 1: another runtime is made in between, so the second one lands elsewhere */
    for (int round = 0; round < 2; round++) {
        stale s = {0};
        pthread_mutex_init(&s.mu, NULL);
        pthread_cond_init(&s.cv, NULL);
        pthread_t t;
        start(&t, stale_thread, &s);
        s.rt = rt_new();
        uint64_t mask0 = atomic_load(&s.rt->alloc.owned_mask);
        stale_set(&s, 1);
        stale_wait(&s, 2);
        ASSERT_EQ(__builtin_popcountll(s.mask & ~mask0), 1);
        rt_done(s.rt); /* the thread's claim on it is stale now */
        ferry_runtime *between = round ? rt_new() : NULL;
        s.rt = rt_new();
        mask0 = atomic_load(&s.rt->alloc.owned_mask);
        int64_t blocks0, bytes0, blocks, bytes;
        stats_of(s.rt, &blocks0, &bytes0);
        stale_set(&s, 3);
        stale_wait(&s, 4);
        ASSERT_EQ(__builtin_popcountll(s.mask & ~mask0), 1); /* claimed anew */
        stats_of(s.rt, &blocks, &bytes);
        ASSERT_EQ(blocks, blocks0);
        ASSERT_EQ(bytes, bytes0);
        join(t);
        /* the exit destructor gave the live claim back and left the freed runtime alone */
        ASSERT_EQ(atomic_load(&s.rt->alloc.owned_mask), mask0);
        rt_done(s.rt);
        if (between) rt_done(between);
        pthread_mutex_destroy(&s.mu);
        pthread_cond_destroy(&s.cv);
    }
}

/* ---- one thread, more live runtimes than claim slots ---- */
#define RUNTIMES 6

static void *many_runtimes_thread(void *arg) {
    ferry_runtime **rt = arg;
    void *p[RUNTIMES];
    for (int i = 0; i < RUNTIMES; i++) ASSERT((p[i] = ferry__alloc(rt[i], 40)) != NULL);
    /* the first runtimes got a shard; the later ones share, with exact counters all the same */
    int claimed = 0;
    for (int i = 0; i < RUNTIMES; i++) claimed += owned_count(&rt[i]->alloc);
    ASSERT(claimed >= 1 && claimed < RUNTIMES);
    ASSERT_EQ(owned_count(&rt[0]->alloc), 1);
    ASSERT_EQ(owned_count(&rt[RUNTIMES - 1]->alloc), 0);
    for (int i = 0; i < RUNTIMES; i++) {
        int64_t blocks, bytes;
        stats_of(rt[i], &blocks, &bytes);
        ASSERT_EQ(blocks, 2); /* the runtime's own block and p[i] */
        ferry__free(rt[i], p[i]);
    }
    /* free the first runtime: the last one gets its slot at the next try */
    ASSERT_OK(ferry_runtime_free(rt[0]));
    rt[0] = NULL;
    churn(rt[RUNTIMES - 1], 20000);
    ASSERT_EQ(owned_count(&rt[RUNTIMES - 1]->alloc), 1);
    return NULL; /* gives back the shards of the live runtimes */
}

TEST(more_runtimes_than_claim_slots) {
    ferry_runtime *rt[RUNTIMES];
    for (int i = 0; i < RUNTIMES; i++) rt[i] = rt_new();
    pthread_t t;
    start(&t, many_runtimes_thread, rt);
    join(t);
    for (int i = 1; i < RUNTIMES; i++) {
        ASSERT_EQ(owned_count(&rt[i]->alloc), 0);
        rt_done(rt[i]);
    }
}

/* ---- an allocator of the tests' own, with a counting hook and the cache on ---- */
static _Atomic int64_t hook_live, hook_allocs;

static void *counting_hook(void *user, void *ptr, size_t old_size, size_t new_size) {
    (void)user;
    (void)old_size;
    if (new_size == 0) {
        if (ptr) atomic_fetch_sub(&hook_live, 1);
        free(ptr);
        return NULL;
    }
    void *p = realloc(ptr, new_size);
    if (p && !ptr) {
        atomic_fetch_add(&hook_live, 1);
        atomic_fetch_add(&hook_allocs, 1);
    }
    return p;
}

static ferry__allocator counted;

static void counted_init(bool reg) {
    ferry__allocator_init(&counted, counting_hook, NULL);
    counted.cache = true; /* a custom hook turns it off; here it is what is tested */
    if (reg) ferry__allocator_register(&counted);
}

static void counted_fini(void) {
    int64_t bytes, blocks;
    ferry__allocator_usage(&counted, &bytes, &blocks);
    ASSERT_EQ(blocks, 0);
    ASSERT_EQ(bytes, 0);
    ferry__allocator_unregister(&counted);
    ferry__allocator_fini(&counted);
    ASSERT_EQ(atomic_load(&hook_live), 0);
}

/* Blocks of the smallest class (one cache line with the header): M blocks a chain, and the
 * depot's capacity in chains. */
#define SMALL 32
#define SMALL_BLOCK FERRY__CACHE_GRAIN
#define SMALL_M FERRY__MAG_M(SMALL_BLOCK)
#define SMALL_DEPOT (FERRY__DEPOT_BYTES / (SMALL_M * SMALL_BLOCK))
#define DEPOT_BLOCKS 20000

typedef struct depot_run {
    void **p;
    int off, n; /* alloc_all fills p[off .. off+n) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int step;
} depot_run;

static void *alloc_all(void *arg) {
    depot_run *d = arg;
    for (int i = d->off; i < d->off + d->n; i++) ASSERT((d->p[i] = ferry__mem_alloc(&counted, SMALL)) != NULL);
    return NULL;
}

/* Frees every block, then holds its shard until step 2. */
static void *free_all_and_wait(void *arg) {
    depot_run *d = arg;
    for (int i = d->off; i < d->off + d->n; i++) ferry__mem_free(&counted, d->p[i]);
    pthread_mutex_lock(&d->mu);
    d->step = 1;
    pthread_cond_broadcast(&d->cv);
    while (d->step != 2) pthread_cond_wait(&d->cv, &d->mu);
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

/* One thread makes DEPOT_BLOCKS blocks and exits; thread *f frees them all and waits, holding
 * its shard, until depot_release. */
static void depot_fill(depot_run *d, pthread_t *f) {
    memset(d, 0, sizeof *d);
    d->n = DEPOT_BLOCKS;
    d->p = calloc(DEPOT_BLOCKS, sizeof *d->p);
    ASSERT(d->p != NULL);
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    pthread_t t;
    start(&t, alloc_all, d);
    join(t);
    ASSERT_EQ(atomic_load(&hook_live), DEPOT_BLOCKS);
    start(f, free_all_and_wait, d);
    pthread_mutex_lock(&d->mu);
    while (d->step != 1) pthread_cond_wait(&d->cv, &d->mu);
    pthread_mutex_unlock(&d->mu);
    /* the freeing thread keeps a loaded chain and two full ones (previous and spare); full chains
     * before those went to the depot until it was full */
    ASSERT_EQ(atomic_load(&counted.depot[0].n), SMALL_DEPOT);
}

static void depot_release(depot_run *d, pthread_t f) {
    pthread_mutex_lock(&d->mu);
    d->step = 2;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    join(f);
    free(d->p);
}

/* Blocks made on one thread and freed on another: whole chains wait in the depot (up to its
 * bound; the rest go back to the hook), and a third thread takes them without calling the hook. */
TEST(depot_hands_chains_across_threads) {
    counted_init(true);
    depot_run d;
    pthread_t t, f;
    depot_fill(&d, &f);
    int64_t kept = DEPOT_BLOCKS % SMALL_M + 2 * SMALL_M;
    ASSERT_EQ(atomic_load(&hook_live), SMALL_DEPOT * SMALL_M + kept);
    /* while the freeing thread still holds its shard, another thread takes the depot's chains */
    int64_t allocs0 = atomic_load(&hook_allocs);
    d.n = SMALL_DEPOT * SMALL_M;
    start(&t, alloc_all, &d);
    join(t);
    ASSERT_EQ(atomic_load(&hook_allocs), allocs0);
    ASSERT_EQ(atomic_load(&counted.depot[0].n), 0);
    d.off = d.n;
    d.n = 1;
    start(&t, alloc_all, &d); /* the depot is empty now: this one comes from the hook */
    join(t);
    ASSERT_EQ(atomic_load(&hook_allocs), allocs0 + 1);
    for (int i = 0; i <= SMALL_DEPOT * SMALL_M; i++) ferry__mem_free(&counted, d.p[i]);
    depot_release(&d, f);
    counted_fini();
}

/* Large blocks (batches) go back to a kept list, not to the hook: the next allocation of about
 * the same size takes the most recent one; the list drops its oldest blocks beyond its byte
 * limit, never reuses a block much larger than asked for, and fini returns what it keeps. */
TEST(large_blocks_are_kept_for_reuse) {
    counted_init(true);
    counted.large_limit = 1000 * 1000;
    const size_t K = 300 * 1000;
    void *p[3];
    for (int i = 0; i < 3; i++) ASSERT((p[i] = ferry__mem_alloc(&counted, K)) != NULL);
    ASSERT_EQ(atomic_load(&hook_live), 3);
    for (int i = 0; i < 3; i++) ferry__mem_free(&counted, p[i]);
    ASSERT_EQ(atomic_load(&hook_live), 3); /* 900 kB kept, under the limit */
    int64_t allocs0 = atomic_load(&hook_allocs);
    void *q = ferry__mem_alloc(&counted, K - 1000); /* fits the most recent one */
    ASSERT(q == p[2]);
    ASSERT_EQ(atomic_load(&hook_allocs), allocs0);
    ASSERT_EQ(ferry__mem_size(q), K - 1000);
    memset(q, 1, K - 1000);
    void *small = ferry__mem_alloc(&counted, K / 2); /* 300 kB blocks are too large for it */
    ASSERT_EQ(atomic_load(&hook_allocs), allocs0 + 1);
    ferry__mem_free(&counted, small); /* 150 kB + 600 kB kept */
    ASSERT_EQ(atomic_load(&hook_live), 4);
    ferry__mem_free(&counted, q); /* 1,050 kB would pass the limit: the oldest (p[0]) goes */
    ASSERT_EQ(atomic_load(&hook_live), 3);
    ASSERT_EQ(counted.large.n, 3);
    void *big = ferry__mem_alloc(&counted, 2 * 1000 * 1000); /* over the limit: never kept */
    ferry__mem_free(&counted, big);
    ASSERT_EQ(atomic_load(&hook_live), 3);
    void *row = ferry__mem_alloc(&counted, 8 << 10); /* under FERRY__LARGE_MIN: malloc's */
    ASSERT_EQ(atomic_load(&hook_live), 4);
    ferry__mem_free(&counted, row);
    ASSERT_EQ(atomic_load(&hook_live), 3);
    counted_fini(); /* fini hands the kept blocks back: hook_live is 0 */
}

/* fini returns the blocks of the depot, of live threads' shards and of exited ones. */
TEST(fini_with_blocks_in_the_depot) {
    counted_init(true);
    depot_run d;
    pthread_t f;
    depot_fill(&d, &f);
    /* mixed classes from this thread too, in its own shard */
    void *p[300];
    for (int i = 0; i < 300; i++) ASSERT((p[i] = ferry__mem_alloc(&counted, mixed_size((uint64_t)i))) != NULL);
    for (int i = 0; i < 300; i++) ferry__mem_free(&counted, p[i]);
    ASSERT(atomic_load(&hook_live) > 0);
    counted_fini();       /* the freeing thread still holds its (now stale) claim */
    depot_release(&d, f); /* its exit leaves the unregistered allocator alone */
}

/* An unregistered allocator: every thread uses the shared shards, cache and depot included. */
#define SHARED_THREADS 4

static void *shared_thread(void *arg) {
    (void)arg;
    void *held[128] = {0};
    for (int i = 0; i < 50000; i++) {
        int k = i % 128;
        ferry__mem_free(&counted, held[k]);
        ASSERT((held[k] = ferry__mem_alloc(&counted, mixed_size((uint64_t)i))) != NULL);
    }
    for (int k = 0; k < 128; k++) ferry__mem_free(&counted, held[k]);
    return NULL;
}

TEST(unregistered_allocator_uses_shared_shards) {
    counted_init(false);
    pthread_t t[SHARED_THREADS];
    for (int i = 0; i < SHARED_THREADS; i++) start(&t[i], shared_thread, NULL);
    for (int i = 0; i < SHARED_THREADS; i++) join(t[i]);
    ASSERT_EQ(atomic_load(&counted.owned_mask), 0);
    counted_fini();
}

/* The runtime's allocator (shards and depot) lives in the runtime's block, never on the caller's
 * stack: creating, using and freeing a runtime works on a thread with a 32 KiB stack (less than the allocator itself). */
static void *small_stack_main(void *arg) {
    int *ok = arg;
    ferry_runtime *rt;
    if (ferry_runtime_create(NULL, &rt) != FERRY_OK) return NULL;
    ferry_dataset *ds;
    ferry_iterator *it;
    int64_t n = 0;
    if (ferry_dataset_range(rt, 0, 100, 1, NULL, &ds) == FERRY_OK) {
        if (ferry_iterator_create(ds, NULL, &it) == FERRY_OK) {
            ferry_element *e;
            while (ferry_iterator_next(it, &e) == FERRY_OK) {
                ferry_element_free(e);
                n++;
            }
            ferry_iterator_free(it);
        }
        ferry_dataset_unref(ds);
    }
    *ok = n == 100 && ferry_runtime_free(rt) == FERRY_OK;
    return NULL;
}

TEST(runtime_on_a_small_stack) {
    pthread_attr_t attr;
    ASSERT_EQ(pthread_attr_init(&attr), 0);
    ASSERT_EQ(pthread_attr_setstacksize(&attr, 32 * 1024), 0);
    int ok = 0;
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, &attr, small_stack_main, &ok), 0);
    pthread_join(t, NULL);
    pthread_attr_destroy(&attr);
    ASSERT_EQ(ok, 1);
}
