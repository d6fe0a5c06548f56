/*
 * test_interrupt.c - ferry_iterator_options.interrupt: a next blocked on a stage that runs ahead
 * (prefetch, parallel map, map_and_batch, parallel interleave) polls the hook and, once it returns
 * nonzero, returns FERRY_ECANCELED ("interrupted"), as does every later next; save refuses; free
 * joins every thread. A hook that returns 0 changes no element, and it is only ever called by the
 * thread inside next. Restore honours the hook too.
 *
 * No test measures time: the hook counts its calls and decides by the count, and the elements
 * that make the consumer wait wait for states (the stage's cancellation, or the hook's count).
 */
#include "runner.h"

#include <pthread.h>
#include <stdatomic.h>

/* The hook's record: its calls, the call on which it returns 1 (0: never), the thread it expects
 * (the one inside next) and the calls made from any other. */
typedef struct hook_state {
    _Atomic int calls;
    int fire_at;
    pthread_t expect;
    _Atomic int foreign;
} hook_state;

static int hook(void *user) {
    hook_state *h = user;
    if (!pthread_equal(pthread_self(), h->expect)) atomic_fetch_add(&h->foreign, 1);
    int n = atomic_fetch_add(&h->calls, 1) + 1;
    return h->fire_at > 0 && n >= h->fire_at;
}

static void hook_init(hook_state *h, int fire_at) {
    atomic_init(&h->calls, 0);
    atomic_init(&h->foreign, 0);
    h->fire_at = fire_at;
    h->expect = pthread_self();
}

static int64_t value_of(const ferry_element *e) {
    const ferry_tensor *t = ferry_element_get(e, 0);
    ASSERT(t != NULL);
    return *(const int64_t *)ferry_tensor_data(t);
}

/* Map function: element `index` waits (as a slow source would) until its stage is cancelled when
 * index >= *stuck_from; the others pass their value through. */
static int stuck_fn(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    const int64_t *stuck_from = user;
    if (ferry_context_index(ctx) < *stuck_from) {
        *out = in;
        return FERRY_OK;
    }
    ferry_element_free(in);
    while (!ferry_context_cancelled(ctx)) (void)ferry_context_sleep(ctx, 1000000);
    return FERRY_ECANCELED;
}

static const int64_t stuck_all = 0;

/* Interleave's dataset function: range(0, 10) -> map(stuck_fn) inline. */
static int stuck_inner(ferry_context *ctx, const ferry_element *in, ferry_dataset **out, void *user) {
    (void)in;
    (void)user;
    ferry_dataset *r = NULL;
    int rc = ferry_dataset_range(ferry_context_runtime(ctx), 0, 10, 1, NULL, &r);
    if (rc) return rc;
    rc = ferry_dataset_map(r, stuck_fn, (void *)&stuck_all, NULL, out);
    ferry_dataset_unref(r);
    return rc;
}

enum { P_PREFETCH, P_MAP, P_MAP_BATCH, P_INTERLEAVE };

/* A pipeline whose first element never comes, the consumer waiting on a stage that runs ahead. */
static ferry_dataset *stuck_pipeline(ferry_runtime *rt, int kind) {
    ferry_dataset *d;
    ASSERT_OK(ferry_dataset_range(rt, 0, 100, 1, NULL, &d));
    if (kind == P_INTERLEAVE) {
        ferry_interleave_options io = {.cycle_length = 2, .num_parallel_calls = 2};
        CHAIN(d, ferry_dataset_interleave(d, stuck_inner, NULL, &io, OUT));
        return d;
    }
    ferry_map_options mo = {.num_parallel_calls = kind == P_PREFETCH ? 0 : 2};
    CHAIN(d, ferry_dataset_map(d, stuck_fn, (void *)&stuck_all, &mo, OUT));
    if (kind == P_PREFETCH) CHAIN(d, ferry_dataset_prefetch(d, 2, NULL, OUT));
    if (kind == P_MAP_BATCH) CHAIN(d, ferry_dataset_batch(d, 4, NULL, OUT));
    return d;
}

static const char *root_op(ferry_iterator *it) {
    static ferry_stage_stats s[8];
    size_t n = 0;
    ASSERT_OK(ferry_iterator_stats(it, s, 8, &n));
    ASSERT(n >= 1);
    return s[0].op;
}

/* The iterator is interrupted: next refuses at once (no further poll), save refuses, the stats and
 * the report still answer; free joins everything and the runtime ends empty. */
static void check_interrupted(ferry_runtime *rt, ferry_iterator *it, hook_state *h) {
    int calls = atomic_load(&h->calls);
    ferry_element *e = NULL;
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_ECANCELED);
    ASSERT(e == NULL);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "ferry_iterator_next: interrupted");
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_ECANCELED);
    ASSERT_EQ(atomic_load(&h->calls), calls);
    ferry_blob *b = NULL;
    ASSERT_EQ(ferry_iterator_save(it, &b), FERRY_ECANCELED);
    ASSERT(b == NULL);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "interrupted");
    size_t n = 0;
    ASSERT_OK(ferry_iterator_stats(it, NULL, 0, &n));
    ASSERT(n >= 1);
    ferry_report rep;
    ASSERT_OK(ferry_iterator_report(it, &rep));
    ASSERT_EQ(atomic_load(&h->foreign), 0);
    ferry_iterator_free(it);
    rt_done(rt);
}

static void interrupt_stuck(int kind, const char *want_root) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *d = stuck_pipeline(rt, kind);
    hook_state h;
    hook_init(&h, 4); /* 0 three times, then 1 */
    ferry_iterator_options o = {.interrupt = hook, .interrupt_user = &h};
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(d, &o, &it));
    ferry_dataset_unref(d);
    ASSERT(strcmp(root_op(it), want_root) == 0);
    ferry_element *e = NULL;
    int rc = ferry_iterator_next(it, &e);
    if (rc != FERRY_ECANCELED) FAILF("next returned %s: %s", ferry_error_name(rc), ferry_iterator_error(it));
    ASSERT(e == NULL);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "interrupted");
    ASSERT_EQ(atomic_load(&h.calls), 4); /* polled until it said so, and not after */
    check_interrupted(rt, it, &h);
}

TEST(interrupt_prefetch) { interrupt_stuck(P_PREFETCH, "prefetch"); }
TEST(interrupt_parallel_map) { interrupt_stuck(P_MAP, "map"); }
TEST(interrupt_map_and_batch) { interrupt_stuck(P_MAP_BATCH, "map_and_batch"); }
TEST(interrupt_parallel_interleave) { interrupt_stuck(P_INTERLEAVE, "interleave"); }

/* Map function: value * 3; element 500 waits until the hook was called twice, so that the
 * consumer surely waits on the stage (and polls) in the middle of the stream. */
static int gated_fn(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    hook_state *h = user;
    int64_t v = value_of(in);
    ferry_element_free(in);
    if (ferry_context_index(ctx) == 500)
        while (atomic_load(&h->calls) < 2)
            if (ferry_context_sleep(ctx, 1000000)) return FERRY_ECANCELED;
    ferry_tensor *t;
    int rc = ferry_tensor_scalar_i64(ferry_context_runtime(ctx), v * 3, &t);
    if (rc) return rc;
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out);
}

/* range(0, 1000) -> map(gated_fn, threads) -> prefetch(2), read to the end with a hook that
 * always returns 0: every element, in order. */
static void read_gated(int threads) {
    ferry_runtime *rt = rt_new();
    hook_state h;
    hook_init(&h, 0);
    ferry_dataset *d;
    ASSERT_OK(ferry_dataset_range(rt, 0, 1000, 1, NULL, &d));
    ferry_map_options mo = {.num_parallel_calls = threads};
    CHAIN(d, ferry_dataset_map(d, gated_fn, &h, &mo, OUT));
    CHAIN(d, ferry_dataset_prefetch(d, 2, NULL, OUT));
    ferry_iterator_options o = {.interrupt = hook, .interrupt_user = &h};
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(d, &o, &it));
    ferry_dataset_unref(d);
    int64_t n = 0;
    for (;;) {
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) break;
        if (rc != FERRY_OK)
            FAILF("position %lld: %s: %s", (long long)n, ferry_error_name(rc), ferry_iterator_error(it));
        ASSERT_EQ(value_of(e), 3 * n);
        ferry_element_free(e);
        n++;
    }
    ASSERT_EQ(n, 1000);
    ferry_element *e = NULL;
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
    ASSERT(atomic_load(&h.calls) >= 2);
    ASSERT_EQ(atomic_load(&h.foreign), 0);
    ferry_blob *b = NULL;
    ASSERT_OK(ferry_iterator_save(it, &b));
    ferry_blob_free(b);
    ferry_iterator_free(it);
    rt_done(rt);
}

TEST(interrupt_hook_zero_parallel_map) { read_gated(2); }
TEST(interrupt_hook_zero_prefetch) { read_gated(0); }

/* The hook runs on the thread inside next, here not the test's main thread. */
typedef struct reader_arg {
    hook_state h;
    int threads;
} reader_arg;

static void *reader(void *arg) {
    reader_arg *a = arg;
    a->h.expect = pthread_self();
    ferry_runtime *rt = rt_new();
    ferry_dataset *d;
    ASSERT_OK(ferry_dataset_range(rt, 0, 1000, 1, NULL, &d));
    ferry_map_options mo = {.num_parallel_calls = a->threads};
    CHAIN(d, ferry_dataset_map(d, gated_fn, &a->h, &mo, OUT));
    CHAIN(d, ferry_dataset_prefetch(d, 4, NULL, OUT));
    ferry_iterator_options o = {.interrupt = hook, .interrupt_user = &a->h};
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(d, &o, &it));
    ferry_dataset_unref(d);
    int64_t n = 0;
    ferry_element *e = NULL;
    while (ferry_iterator_next(it, &e) == FERRY_OK) {
        ASSERT_EQ(value_of(e), 3 * n);
        ferry_element_free(e);
        n++;
    }
    ASSERT_EQ(n, 1000);
    ferry_iterator_free(it);
    rt_done(rt);
    return NULL;
}

TEST(interrupt_hook_thread) {
    for (int threads = 0; threads <= 4; threads += 4) {
        reader_arg a;
        hook_init(&a.h, 0);
        a.threads = threads;
        pthread_t t;
        ASSERT_EQ(pthread_create(&t, NULL, reader, &a), 0);
        ASSERT_EQ(pthread_join(t, NULL), 0);
        ASSERT(atomic_load(&a.h.calls) >= 2);
        ASSERT_EQ(atomic_load(&a.h.foreign), 0);
    }
}

/* A restored iterator polls the hook of the options it was restored with. */
TEST(interrupt_restore) {
    ferry_runtime *rt = rt_new();
    static const int64_t stuck_from = 10;
    ferry_dataset *d;
    ASSERT_OK(ferry_dataset_range(rt, 0, 100, 1, NULL, &d));
    /* Inline under prefetch: each element is handed on as it is made (a parallel map's chunk
     * would hold 5..9 behind the call that never returns). */
    CHAIN(d, ferry_dataset_map(d, stuck_fn, (void *)&stuck_from, NULL, OUT));
    CHAIN(d, ferry_dataset_prefetch(d, 2, NULL, OUT));
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(d, NULL, &it));
    ferry_element *e = NULL;
    for (int64_t i = 0; i < 5; i++) {
        ASSERT_OK(ferry_iterator_next(it, &e));
        ASSERT_EQ(value_of(e), i);
        ferry_element_free(e);
    }
    ferry_blob *b = NULL;
    ASSERT_OK(ferry_iterator_save(it, &b));
    ferry_iterator_free(it);

    hook_state h;
    hook_init(&h, 2);
    ferry_iterator_options o = {.interrupt = hook, .interrupt_user = &h};
    ASSERT_OK(ferry_iterator_restore(d, ferry_blob_data(b), ferry_blob_size(b), &o, &it));
    ferry_blob_free(b);
    ferry_dataset_unref(d);
    for (int64_t i = 5; i < stuck_from; i++) {
        ASSERT_OK(ferry_iterator_next(it, &e));
        ASSERT_EQ(value_of(e), i);
        ferry_element_free(e);
    }
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_ECANCELED);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "interrupted");
    ASSERT_EQ(atomic_load(&h.calls), 2);
    check_interrupted(rt, it, &h);
}

/* Inline ops above the stage that waits (ones that loop over errors or fill buffers) end too. */
TEST(interrupt_inline_ops_above) {
    ferry_runtime *rt = rt_new();
    static const int64_t stuck_from = 20;
    ferry_dataset *d;
    ASSERT_OK(ferry_dataset_range(rt, 0, 100, 1, NULL, &d));
    CHAIN(d, ferry_dataset_map(d, stuck_fn, (void *)&stuck_from, NULL, OUT));
    CHAIN(d, ferry_dataset_prefetch(d, 2, NULL, OUT));
    CHAIN(d, ferry_dataset_ignore_errors(d, NULL, OUT));
    CHAIN(d, ferry_dataset_shuffle(d, 8, NULL, OUT));
    CHAIN(d, ferry_dataset_batch(d, 3, NULL, OUT));
    CHAIN(d, ferry_dataset_repeat(d, 2, NULL, OUT));
    hook_state h;
    hook_init(&h, 3);
    ferry_iterator_options o = {.interrupt = hook, .interrupt_user = &h};
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(d, &o, &it));
    ferry_dataset_unref(d);
    int rc, batches = 0;
    ferry_element *e = NULL;
    while ((rc = ferry_iterator_next(it, &e)) == FERRY_OK) {
        ferry_element_free(e);
        batches++;
    }
    if (rc != FERRY_ECANCELED) FAILF("next returned %s: %s", ferry_error_name(rc), ferry_iterator_error(it));
    ASSERT_LE(batches, 6); /* 20 elements came, in batches of 3 */
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "interrupted");
    ASSERT_EQ(atomic_load(&h.calls), 3);
    check_interrupted(rt, it, &h);
}
