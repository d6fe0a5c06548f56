/*
 * test_teardown.c - destroying iterators of async pipelines (parallel map, prefetch) in every
 * state: thousands of create / partial-consume / destroy cycles, destroy while a map function
 * sleeps in ferry_context_sleep(10 s), while the producer is blocked on a full buffer or on the
 * byte budget, before any next, right after END. After every free no ferry thread may be left
 * (ferry_runtime_stats_get().threads_live == 0) and no budget may stay counted.
 *
 * No test sleeps for a state: each waits (polling, with a deadline of a minute) until the state it
 * tests is reached (a callback asleep, a buffer full, the budget used), then acts. Destroy must
 * return well before the 10 s a sleeping callback would take: the bound, DESTROY_MAX_S, is loose
 * enough for a sanitizer build on a loaded machine and tight enough to fail if free waited.
 *
 * FERRY_TEARDOWN_CYCLES sets the cycle count (default 2000, at least 1000), for slow sanitizers.
 */
#include "runner.h"

#include <stdatomic.h>
#include <time.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

#define DESTROY_MAX_S 5.0

/* Polls cond(arg) every millisecond until it holds; fails after a minute. */
static void wait_until(bool (*cond)(void *), void *arg, const char *what) {
    for (int i = 0; !cond(arg); i++) {
        if (i == 60000) FAILF("waited a minute for %s", what);
        sleep_ms(1);
    }
}

static void assert_idle(ferry_runtime *rt) {
    ferry_runtime_stats s;
    ASSERT_OK(ferry_runtime_stats_get(rt, &s));
    ASSERT_EQ(s.threads_live, 0);
    ASSERT_EQ(s.budget_used, 0);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int add_one(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)user;
    int64_t v = *(const int64_t *)ferry_tensor_data(ferry_element_get(in, 0));
    ferry_element_free(in);
    if (ferry_context_index(ctx) % 97 == 13) return ferry_context_fail(ctx, FERRY_EUSER, "unlucky %lld", (long long)v);
    ferry_tensor *t;
    int rc = ferry_tensor_scalar_i64(ferry_context_runtime(ctx), v + 1, &t);
    if (rc) return rc;
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out);
}

/* Sleeps 10 s (cancellable) on the indices >= from; identity otherwise. */
typedef struct sleepy_cfg {
    int64_t from;
    _Atomic int asleep; /* calls in their sleep */
} sleepy_cfg;

static int sleepy(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    sleepy_cfg *c = user;
    if (ferry_context_index(ctx) >= c->from) {
        atomic_fetch_add(&c->asleep, 1);
        int rc = ferry_context_sleep(ctx, 10 * 1000000000LL);
        atomic_fetch_sub(&c->asleep, 1);
        if (rc) {
            ferry_element_free(in);
            return rc;
        }
    }
    *out = in;
    return FERRY_OK;
}

/* 4 KiB elements. */
static int big(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)user;
    ferry_element_free(in);
    int64_t dims[1] = {512};
    ferry_tensor *t;
    int rc = ferry_tensor_create(ferry_context_runtime(ctx), FERRY_DTYPE_INT64, 1, dims, &t);
    if (rc) return rc;
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out);
}

static ferry_dataset *map_of(ferry_dataset *in, ferry_map_fn fn, void *user, int threads, bool relaxed, int window,
                             const ferry_tensor_spec *spec) {
    ferry_map_options o = {.num_parallel_calls = threads,
                           .relaxed_order = relaxed,
                           .reorder_window = window,
                           .num_outputs = spec ? 1 : 0,
                           .output_specs = spec};
    ferry_dataset *m;
    ASSERT_OK(ferry_dataset_map(in, fn, user, &o, &m));
    return m;
}

static ferry_dataset *prefetch_of(ferry_dataset *in, int64_t n) {
    ferry_dataset *p;
    ASSERT_OK(ferry_dataset_prefetch(in, n, NULL, &p));
    return p;
}

static void consume(ferry_iterator *it, long n) {
    for (long i = 0; i < n; i++) {
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) return;
        if (rc == FERRY_OK) ferry_element_free(e);
        else ASSERT_EQ(rc, FERRY_EUSER);
    }
}

static double timed_free(ferry_iterator *it) {
    double t0 = now_s();
    ferry_iterator_free(it);
    return now_s() - t0;
}

TEST(teardown_thousands_of_cycles) {
    long cycles = 2000;
    const char *env = getenv("FERRY_TEARDOWN_CYCLES");
    if (env && atol(env) > 0) cycles = atol(env) < 1000 ? 1000 : atol(env);
    ferry_runtime *rt = rt_new_budget(0);
    ferry_dataset *r;
    ASSERT_OK(ferry_dataset_range(rt, 0, 1000000, 1, NULL, &r));
    ferry_dataset *pipes[5];
    for (int i = 0; i < 4; i++) {
        ferry_dataset *m = map_of(r, add_one, NULL, 2 + i % 2, i >= 2, i == 1 ? 4 : 0, NULL);
        pipes[i] = prefetch_of(m, i % 2 ? 3 : FERRY_AUTOTUNE);
        ferry_dataset_unref(m);
    }
    { /* batch fused into a parallel map, prefetch(AUTOTUNE) passing through */
        ferry_dataset *m = map_of(r, add_one, NULL, 2, false, 0, NULL), *b;
        ASSERT_OK(ferry_dataset_batch(m, 8, NULL, &b));
        pipes[4] = prefetch_of(b, FERRY_AUTOTUNE);
        ferry_dataset_unref(b);
        ferry_dataset_unref(m);
    }
    double t0 = now_s();
    for (long c = 0; c < cycles; c++) {
        ferry_iterator_options o = {.seed = (uint64_t)c, .warm_start = (c % 3) == 0};
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(pipes[c % 5], &o, &it));
        consume(it, (long)(rnd() % 65));
        if (c % 50 == 7) {
            ferry_blob *b;
            ASSERT_OK(ferry_iterator_save(it, &b));
            ferry_blob_free(b);
        }
        ferry_iterator_free(it);
        assert_idle(rt);
    }
    printf("  %ld cycles in %.2f s\n", cycles, now_s() - t0);
    for (int i = 0; i < 5; i++) ferry_dataset_unref(pipes[i]);
    ferry_dataset_unref(r);
    rt_done(rt);
}

TEST(teardown_nested_async_cycles) {
    ferry_runtime *rt = rt_new_budget(0);
    ferry_dataset *r;
    ASSERT_OK(ferry_dataset_range(rt, 0, 1000000, 1, NULL, &r));
    ferry_dataset *m1 = map_of(r, add_one, NULL, 2, false, 0, NULL);
    ferry_dataset *p1 = prefetch_of(m1, 2);
    ferry_dataset *m2 = map_of(p1, add_one, NULL, 3, true, 8, NULL);
    ferry_dataset *p2 = prefetch_of(m2, FERRY_AUTOTUNE);
    for (long c = 0; c < 300; c++) {
        ferry_iterator_options o = {.warm_start = c % 2 == 0};
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(p2, &o, &it));
        consume(it, (long)(rnd() % 200));
        ferry_iterator_free(it);
        assert_idle(rt);
    }
    ferry_dataset_unref(p2);
    ferry_dataset_unref(m2);
    ferry_dataset_unref(p1);
    ferry_dataset_unref(m1);
    ferry_dataset_unref(r);
    rt_done(rt);
}

static bool sleeping(void *arg) { return atomic_load(&((sleepy_cfg *)arg)->asleep) > 0; }

TEST(teardown_while_map_function_sleeps) {
    ferry_runtime *rt = rt_new_budget(0);
    ferry_dataset *r;
    ASSERT_OK(ferry_dataset_range(rt, 0, 100, 1, NULL, &r));
    sleepy_cfg cfg = {.from = 1}; /* index 0 is quick; every later call sleeps */
    struct {
        int threads;
        int64_t prefetch; /* -2: none */
        const char *what;
    } cases[] = {
        {0, 4, "prefetch over inline map"},
        {2, -2, "parallel map"},
        {2, 4, "prefetch over parallel map"},
        {4, FERRY_AUTOTUNE, "prefetch(AUTOTUNE) over 4-thread map"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ferry_dataset *ds = map_of(r, sleepy, &cfg, cases[i].threads, false, 0, NULL);
        if (cases[i].prefetch != -2) {
            ferry_dataset *p = prefetch_of(ds, cases[i].prefetch);
            ferry_dataset_unref(ds);
            ds = p;
        }
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
        consume(it, 1); /* the producers now sleep in index 1 and up */
        wait_until(sleeping, &cfg, "a call asleep");
        double t = timed_free(it);
        printf("  %s: destroy took %.1f ms\n", cases[i].what, t * 1e3);
        ASSERT(t < DESTROY_MAX_S);
        ASSERT_EQ(atomic_load(&cfg.asleep), 0);
        assert_idle(rt);
        /* The same with a warm start and no next at all. */
        ferry_iterator_options o = {.warm_start = true};
        cfg.from = 0;
        ASSERT_OK(ferry_iterator_create(ds, &o, &it));
        wait_until(sleeping, &cfg, "a call asleep");
        t = timed_free(it);
        ASSERT(t < DESTROY_MAX_S);
        ASSERT_EQ(atomic_load(&cfg.asleep), 0);
        assert_idle(rt);
        cfg.from = 1;
        ferry_dataset_unref(ds);
    }
    ferry_dataset_unref(r);
    rt_done(rt);
}

/* Once ferry_iterator_free has begun (its cancellation fired), no new user call may start: free
 * waits for the calls already running and for nothing else. The callbacks here sleep without
 * polling cancellation, as most user code does; each notes whether cancellation had already
 * fired when it began. ferry checks just before every call, so only a call that passed that
 * check in the instant before free fired may see it (at most one per thread that calls user
 * code; the exact rule is tested without races in test_sources.c,
 * no_call_starts_once_cancelled), and no call begins after free returned. */
typedef struct late_calls {
    _Atomic int started, late;
} late_calls;

static void late_note(ferry_context *ctx, late_calls *c) {
    atomic_fetch_add(&c->started, 1);
    if (ferry_context_cancelled(ctx)) atomic_fetch_add(&c->late, 1);
    sleep_ms(3); /* does not poll cancellation */
}

static int late_gen_next(ferry_context *ctx, void *state, ferry_element **out) {
    late_note(ctx, state);
    ferry_tensor *t;
    int rc = ferry_tensor_scalar_i64(ferry_context_runtime(ctx), ferry_context_index(ctx), &t);
    if (rc) return rc;
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out);
}

static int late_gen_init(ferry_context *ctx, void *user, void **state) {
    (void)ctx;
    *state = user;
    return FERRY_OK;
}

static int late_map(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    late_note(ctx, user);
    *out = in;
    return FERRY_OK;
}

static int late_pred(ferry_context *ctx, const ferry_element *e, bool *keep, void *user) {
    (void)e;
    late_note(ctx, user);
    *keep = true;
    return FERRY_OK;
}

static int late_inner(ferry_context *ctx, const ferry_element *e, ferry_dataset **out, void *user) {
    late_note(ctx, user);
    int64_t v = *(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0));
    return ferry_dataset_range(ferry_context_runtime(ctx), v, v + 2, 1, NULL, out);
}

TEST(teardown_starts_no_callback_after_cancel) {
    ferry_runtime *rt = rt_new_budget(0);
    ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 0}};
    for (int kind = 0; kind < 5; kind++) {
        for (int trial = 0; trial < 6; trial++) {
            late_calls c = {0};
            ferry_generator_options go = {.init = late_gen_init,
                                          .next = late_gen_next,
                                          .user = &c,
                                          .num_components = 1,
                                          .specs = &spec,
                                          .cardinality = FERRY_UNKNOWN};
            ferry_dataset *ds, *next;
            ASSERT_OK(ferry_dataset_generator(rt, &go, &ds));
            if (kind == 0 || kind == 1) { /* generator -> map (2 threads or inline) -> prefetch */
                next = map_of(ds, late_map, &c, kind == 0 ? 2 : 0, false, 0, NULL);
            } else if (kind == 2) { /* generator -> filter -> prefetch */
                ASSERT_OK(ferry_dataset_filter(ds, late_pred, &c, NULL, &next));
            } else { /* generator -> interleave (2 threads) / flat_map -> prefetch */
                if (kind == 3) {
                    ferry_interleave_options io = {.cycle_length = 2,
                                                   .block_length = 1,
                                                   .num_parallel_calls = 2,
                                                   .num_outputs = 1,
                                                   .output_specs = &spec};
                    ASSERT_OK(ferry_dataset_interleave(ds, late_inner, &c, &io, &next));
                } else {
                    ASSERT_OK(ferry_dataset_flat_map(
                        ds, late_inner, &c, &(ferry_flat_map_options){.num_outputs = 1, .output_specs = &spec}, &next));
                }
            }
            ferry_dataset_unref(ds);
            ds = prefetch_of(next, 4);
            ferry_dataset_unref(next);
            ferry_iterator *it;
            ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
            consume(it, 1 + trial);
            ferry_iterator_free(it);
            int after = atomic_load(&c.started);
            ASSERT_LE(atomic_load(&c.late), 3); /* the map's or interleave's 2 workers, the prefetch thread */
            assert_idle(rt);
            ASSERT_EQ(atomic_load(&c.started), after); /* nothing runs once free returned */
            ferry_dataset_unref(ds);
        }
    }
    rt_done(rt);
}

static ferry_stage_stats root_stats(ferry_iterator *it) {
    ferry_stage_stats s;
    size_t n;
    ASSERT_OK(ferry_iterator_stats(it, &s, 1, &n));
    return s;
}
static bool prefetch_full(void *it) { return root_stats(it).buffered_elements == 2; }
/* A parallel map holds a full window of results (the workers then wait for room). */
static bool window_full(void *it) {
    ferry_stage_stats s = root_stats(it);
    return s.buffered_elements >= s.buffer_capacity;
}

TEST(teardown_while_blocked_on_full_buffer_or_window) {
    ferry_runtime *rt = rt_new_budget(0);
    ferry_dataset *r;
    ASSERT_OK(ferry_dataset_range(rt, 0, 1000000, 1, NULL, &r));
    ferry_dataset *p = prefetch_of(r, 2);
    ferry_dataset *m = map_of(r, add_one, NULL, 3, false, 4, NULL);
    ferry_dataset *mr = map_of(r, add_one, NULL, 3, true, 4, NULL);
    ferry_dataset *pm = prefetch_of(m, 3);
    ferry_dataset *all[] = {p, m, mr, pm};
    for (int i = 0; i < 4; i++) {
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(all[i], NULL, &it));
        consume(it, 1);
        if (i == 0) wait_until(prefetch_full, it, "a full prefetch buffer"); /* the producer sleeps */
        else wait_until(window_full, it, "a full reorder window");
        double t = timed_free(it);
        ASSERT(t < DESTROY_MAX_S);
        assert_idle(rt);
    }
    for (int i = 0; i < 4; i++) ferry_dataset_unref(all[i]);
    ferry_dataset_unref(r);
    rt_done(rt);
}

static bool budget_nearly_full(void *rt) {
    ferry_runtime_stats rs;
    ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
    return rs.budget_used >= 3 * 4096;
}

TEST(teardown_while_blocked_on_budget) {
    ferry_runtime *rt = rt_new_budget(16 * 1024);
    ferry_dataset *r;
    ASSERT_OK(ferry_dataset_range(rt, 0, 100000, 1, NULL, &r));
    ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 1, .dims = {512}}};
    ferry_dataset *inline_big = map_of(r, big, NULL, 0, false, 0, &spec);
    ferry_dataset *par_big = map_of(r, big, NULL, 2, false, 64, &spec);
    ferry_dataset *rel_big = map_of(r, big, NULL, 2, true, 64, &spec);
    ferry_dataset *p1 = prefetch_of(inline_big, 64);
    ferry_dataset *p2 = prefetch_of(par_big, 64);
    ferry_dataset *all[] = {p1, p2, par_big, rel_big};
    for (int i = 0; i < 4; i++) {
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(all[i], NULL, &it));
        consume(it, 2);
        wait_until(budget_nearly_full, rt, "the budget to fill"); /* 16 KiB hold 4 elements */
        ferry_runtime_stats rs;
        double t = timed_free(it);
        ASSERT(t < DESTROY_MAX_S);
        assert_idle(rt);
        ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
        ASSERT_LE(rs.budget_used_peak, 16 * 1024 + 3 * 4096);
    }
    for (int i = 0; i < 4; i++) ferry_dataset_unref(all[i]);
    ferry_dataset_unref(inline_big);
    ferry_dataset_unref(r);
    rt_done(rt);
}

TEST(teardown_before_first_next_and_after_end) {
    ferry_runtime *rt = rt_new_budget(0);
    ferry_dataset *r;
    ASSERT_OK(ferry_dataset_range(rt, 0, 300, 1, NULL, &r));
    ferry_dataset *m = map_of(r, add_one, NULL, 2, false, 0, NULL);
    ferry_dataset *mr = map_of(r, add_one, NULL, 3, true, 0, NULL);
    ferry_dataset *pm = prefetch_of(m, FERRY_AUTOTUNE);
    ferry_dataset *pr = prefetch_of(mr, 5);
    ferry_dataset *all[] = {m, mr, pm, pr};
    for (int i = 0; i < 4; i++) {
        for (int warm = 0; warm < 2; warm++) {
            ferry_iterator_options o = {.warm_start = warm};
            ferry_iterator *it;
            ASSERT_OK(ferry_iterator_create(all[i], &o, &it));
            ferry_runtime_stats s;
            ASSERT_OK(ferry_runtime_stats_get(rt, &s));
            ASSERT(warm ? s.threads_live > 0 : s.threads_live == 0);
            ferry_iterator_free(it); /* before any next */
            assert_idle(rt);
            ASSERT_OK(ferry_iterator_create(all[i], &o, &it));
            consume(it, 1000);
            ferry_element *e = NULL;
            ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
            ferry_iterator_free(it); /* right after END */
            assert_idle(rt);
        }
    }
    for (int i = 0; i < 4; i++) ferry_dataset_unref(all[i]);
    ferry_dataset_unref(r);
    rt_done(rt);
}
