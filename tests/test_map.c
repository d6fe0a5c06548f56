/*
 * test_map.c - map, inline and parallel: the same output (values, order, random draws) for every
 * thread count, relaxed order as a multiset, the output spec check, errors in their positions,
 * reorder windows smaller and larger than the thread count, save/restore at many points with
 * calls in flight (both orders, across thread counts, nested maps restored with warm start, which
 * exercises skip while workers run), empty input, stats, argument checks.
 */
#include "runner.h"

#include <pthread.h>
#include <stdatomic.h>

#include <time.h>

typedef struct rec {
    int code;
    int64_t a, b; /* components 0 and 1 (b = 0 for one-component elements) */
} rec;

static int live_threads(ferry_runtime *rt) {
    ferry_runtime_stats s;
    ASSERT_OK(ferry_runtime_stats_get(rt, &s));
    return s.threads_live;
}

static int64_t comp(const ferry_element *e, size_t i) {
    const ferry_tensor *t = ferry_element_get(e, i);
    return t ? *(const int64_t *)ferry_tensor_data(t) : 0;
}

/* ---- map functions --------------------------------------------------------------------- */
typedef struct fn_opts {
    int64_t fail[8]; /* indices that fail, -1 terminated */
    bool jitter;     /* busy-wait a pseudo-random 0..30 us, so calls finish out of order */
    int64_t slow;    /* this index sleeps 20 ms (-1: none) */
    bool two;        /* output (index, random) instead of value * 1000 + random % 1000 */
} fn_opts;

static void busy_us(int64_t us) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do clock_gettime(CLOCK_MONOTONIC, &b);
    while ((b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000 < us);
}

static int test_fn(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    const fn_opts *o = user;
    int64_t i = ferry_context_index(ctx);
    for (int k = 0; o->fail[k] >= 0; k++) {
        if (o->fail[k] == i) {
            ferry_element_free(in);
            return ferry_context_fail(ctx, FERRY_EUSER, "refusing index %lld", (long long)i);
        }
    }
    if (o->jitter) busy_us((int64_t)((uint64_t)(i * 2654435761u) % 31));
    if (o->slow == i) ferry_context_sleep(ctx, 20000000);
    ferry_runtime *rt = ferry_context_runtime(ctx);
    int64_t v = comp(in, 0);
    ferry_element_free(in);
    uint64_t r = ferry_context_random(ctx);
    ferry_tensor *t[2];
    if (o->two) {
        ASSERT_OK(ferry_tensor_scalar_i64(rt, i, &t[0]));
        ASSERT_OK(ferry_tensor_scalar_i64(rt, (int64_t)(r >> 1), &t[1]));
        return ferry_element_create(rt, 2, t, out);
    }
    ASSERT_OK(ferry_tensor_scalar_i64(rt, v * 1000 + (int64_t)(r % 1000), &t[0]));
    return ferry_element_create(rt, 1, t, out);
}

static const fn_opts plain = {.fail = {-1}, .slow = -1};

static ferry_dataset *map_over(ferry_dataset *in, const fn_opts *o, int threads, bool relaxed, int window) {
    ferry_map_options mo = {
        .num_parallel_calls = threads, .relaxed_order = relaxed, .reorder_window = window, .seed = 11};
    ferry_tensor_spec specs[2] = {{.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 0}},
                                  {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 0}}};
    if (o->two) {
        mo.num_outputs = 2;
        mo.output_specs = specs;
    }
    ferry_dataset *m;
    ASSERT_OK(ferry_dataset_map(in, test_fn, (void *)o, &mo, &m));
    return m;
}

static ferry_dataset *pipeline(ferry_runtime *rt, int64_t n, const fn_opts *o, int threads, bool relaxed, int window) {
    ferry_dataset *r;
    ASSERT_OK(ferry_dataset_range(rt, 0, n, 1, NULL, &r));
    ferry_dataset *m = map_over(r, o, threads, relaxed, window);
    ferry_dataset_unref(r);
    return m;
}

/* Reads up to max records (max < 0: to END, checking that END repeats). */
static size_t drain(ferry_iterator *it, rec *out, long max) {
    size_t n = 0;
    for (;;) {
        if (max >= 0 && (long)n >= max) return n;
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) {
            ASSERT(e == NULL);
            ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
            return n;
        }
        out[n] = (rec){.code = rc};
        if (rc == FERRY_OK) {
            out[n].a = comp(e, 0);
            out[n].b = ferry_element_size(e) > 1 ? comp(e, 1) : 0;
            ferry_element_free(e);
        } else {
            ASSERT(e == NULL);
            const char *msg = ferry_iterator_error(it);
            const char *p = strstr(msg, "refusing index ");
            out[n].a = p ? -1 - atoll(p + 15) : -1000000; /* errors sort first, by index */
        }
        n++;
    }
}

static size_t run_all(ferry_dataset *ds, rec *out, uint64_t seed) {
    ferry_iterator_options o = {.seed = seed};
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, &o, &it));
    size_t n = drain(it, out, -1);
    ferry_iterator_free(it);
    return n;
}

static char where[160]; /* the configuration under test, for failure messages */

static void assert_same(const rec *a, const rec *b, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (a[i].code != b[i].code || a[i].a != b[i].a || a[i].b != b[i].b)
            FAILF("%s (%s): position %zu differs: (%s, %lld, %lld) vs (%s, %lld, %lld)", what, where, i,
                  ferry_error_name(a[i].code), (long long)a[i].a, (long long)a[i].b, ferry_error_name(b[i].code),
                  (long long)b[i].a, (long long)b[i].b);
}

static int rec_cmp(const void *x, const void *y) {
    const rec *a = x, *b = y;
    if (a->a != b->a) return a->a < b->a ? -1 : 1;
    if (a->b != b->b) return a->b < b->b ? -1 : 1;
    return a->code - b->code;
}

static void assert_same_set(const rec *want, rec *got, size_t n, const char *what) {
    rec *w = malloc(n * sizeof *w + 1);
    memcpy(w, want, n * sizeof *w);
    qsort(w, n, sizeof *w, rec_cmp);
    qsort(got, n, sizeof *got, rec_cmp);
    assert_same(w, got, n, what);
    free(w);
}

static const int thread_counts[] = {0, 1, 2, 4, 16};
#define NTC (sizeof thread_counts / sizeof *thread_counts)

/* ---- tests -------------------------------------------------------------------------------- */
/* max_parallel_calls caps the threads (a fixed count above it, and AUTOTUNE), and the report's
 * model: a map that serialises is never told to take more threads. */
static int busy_identity(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)ctx;
    (void)user;
    busy_us(200);
    *out = in;
    return FERRY_OK;
}
static _Atomic int64_t calls_on_consumer;
static int note_thread(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)ctx;
    if (pthread_equal(pthread_self(), *(const pthread_t *)user)) atomic_fetch_add(&calls_on_consumer, 1);
    busy_us(3); /* a batch of 64 costs ~200 us: what the consumer would otherwise help with */
    *out = in;
    return FERRY_OK;
}
TEST(map_max_parallel_calls_caps_threads_and_advice) {
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(&(ferry_runtime_options){.cpu_budget = 4}, &rt));
    int counts[] = {3, FERRY_AUTOTUNE};
    for (int c = 0; c < 2; c++) {
        ferry_dataset *r, *m;
        ASSERT_OK(ferry_dataset_range(rt, 0, 400, 1, NULL, &r));
        ferry_map_options mo = {.num_parallel_calls = counts[c], .max_parallel_calls = 1};
        ASSERT_OK(ferry_dataset_map(r, busy_identity, NULL, &mo, &m));
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(m, NULL, &it));
        ferry_element *e;
        for (int64_t i = 0; i < 400; i++) {
            ASSERT_OK(ferry_iterator_next(it, &e));
            ASSERT_EQ(comp(e, 0), i);
            ferry_element_free(e);
            ferry_stage_stats s[2];
            size_t n;
            ASSERT_OK(ferry_iterator_stats(it, s, 2, &n));
            ASSERT_LE(s[0].parallelism, 1);
        }
        ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
        ferry_report rep;
        ASSERT_OK(ferry_iterator_report(it, &rep));
        printf("  num_parallel_calls %d: %s\n", counts[c], rep.text);
        ASSERT_LE(rep.threads_suggested, 1);
        ferry_iterator_free(it);
        ferry_dataset_unref(m);
        ferry_dataset_unref(r);
    }
    /* fused with a batch, the consumer may stack batches itself while it waits (map_help): not
     * when that would be a second thread calling a function capped at one */
    {
        ferry_dataset *r, *m, *b;
        ASSERT_OK(ferry_dataset_range(rt, 0, 6400, 1, NULL, &r));
        pthread_t consumer = pthread_self();
        ferry_map_options mo = {.num_parallel_calls = 1, .max_parallel_calls = 1};
        ASSERT_OK(ferry_dataset_map(r, note_thread, &consumer, &mo, &m));
        ASSERT_OK(ferry_dataset_batch(m, 64, NULL, &b));
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(b, NULL, &it));
        ferry_element *e;
        int64_t n = 0;
        while (ferry_iterator_next(it, &e) == FERRY_OK) {
            n += ferry_tensor_dim(ferry_element_get(e, 0), 0);
            ferry_element_free(e);
        }
        ASSERT_EQ(n, 6400);
        ASSERT_EQ(atomic_load(&calls_on_consumer), 0);
        ferry_iterator_free(it);
        ferry_dataset_unref(b);
        ferry_dataset_unref(m);
        ferry_dataset_unref(r);
    }
    ferry_dataset *r, *m;
    ASSERT_OK(ferry_dataset_range(rt, 0, 4, 1, NULL, &r));
    ASSERT_EQ(ferry_dataset_map(r, busy_identity, NULL, &(ferry_map_options){.max_parallel_calls = -1}, &m),
              FERRY_EINVAL);
    ASSERT(strstr(ferry_last_error(), "max_parallel_calls") != NULL);
    ASSERT_EQ(ferry_dataset_map(r, busy_identity, NULL, &(ferry_map_options){.max_parallel_calls = 1025}, &m),
              FERRY_EINVAL);
    ferry_dataset_unref(r);
    ASSERT_OK(ferry_runtime_free(rt));
}

TEST(map_same_output_for_every_thread_count) {
    ferry_runtime *rt = rt_new();
    fn_opts o = plain;
    o.jitter = true;
    enum { N = 2000 };
    rec *want = calloc(N, sizeof *want), *got = calloc(N, sizeof *got);
    for (size_t t = 0; t < NTC; t++) {
        ferry_dataset *ds = pipeline(rt, N, &o, thread_counts[t], false, 0);
        ASSERT_EQ(ferry_dataset_cardinality(ds), N);
        ASSERT_EQ(run_all(ds, t == 0 ? want : got, 5), N);
        if (t == 0) {
            for (int i = 0; i < N; i++) ASSERT_EQ(want[i].a / 1000, i);
        } else {
            assert_same(want, got, N, "deterministic");
        }
        ASSERT_EQ(live_threads(rt), 0);
        ferry_dataset_unref(ds);
    }
    /* Another iteration seed or op seed changes the draws (and only the draws). */
    ferry_dataset *ds = pipeline(rt, N, &o, 2, false, 0);
    ASSERT_EQ(run_all(ds, got, 6), N);
    int differ = 0;
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(got[i].a / 1000, i);
        differ += got[i].a != want[i].a;
    }
    ASSERT(differ > N / 2);
    ferry_dataset_unref(ds);
    free(want);
    free(got);
    rt_done(rt);
}

TEST(map_relaxed_order_same_multiset) {
    ferry_runtime *rt = rt_new();
    fn_opts o = plain;
    o.jitter = true;
    enum { N = 3000 };
    rec *want = calloc(N, sizeof *want), *got = calloc(N, sizeof *got);
    ferry_dataset *ref = pipeline(rt, N, &o, 0, false, 0);
    ASSERT_EQ(run_all(ref, want, 1), N);
    ferry_dataset_unref(ref);
    for (size_t t = 1; t < NTC; t++) {
        for (int w = 0; w <= 7; w += 7) {
            ferry_dataset *ds = pipeline(rt, N, &o, thread_counts[t], true, w);
            ASSERT_EQ(run_all(ds, got, 1), N);
            assert_same_set(want, got, N, "relaxed");
            ferry_dataset_unref(ds);
        }
    }
    free(want);
    free(got);
    rt_done(rt);
}

TEST(map_random_draws_independent_of_threads) {
    ferry_runtime *rt = rt_new();
    fn_opts o = plain;
    o.two = true;
    o.jitter = true;
    enum { N = 1000 };
    rec *want = calloc(N, sizeof *want), *got = calloc(N, sizeof *got);
    for (size_t t = 0; t < NTC; t++) {
        ferry_dataset *ds = pipeline(rt, N, &o, thread_counts[t], false, 0);
        ASSERT_EQ(run_all(ds, t == 0 ? want : got, 99), N);
        if (t == 0) {
            for (int i = 0; i < N; i++) ASSERT_EQ(want[i].a, i); /* ferry_context_index */
        } else {
            assert_same(want, got, N, "draws");
        }
        ferry_dataset_unref(ds);
        ds = pipeline(rt, N, &o, thread_counts[t], true, 0);
        ASSERT_EQ(run_all(ds, got, 99), N);
        assert_same_set(want, got, N, "relaxed draws");
        ferry_dataset_unref(ds);
    }
    free(want);
    free(got);
    rt_done(rt);
}

static int to_float_on_even(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)user;
    if (ferry_context_index(ctx) % 2) {
        *out = in;
        return FERRY_OK;
    }
    ferry_element_free(in);
    ferry_tensor *t;
    int rc = ferry_tensor_scalar_f32(ferry_context_runtime(ctx), 1.5f, &t);
    if (rc) return rc;
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out);
}

static int identity(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)ctx;
    (void)user;
    *out = in;
    return FERRY_OK;
}

TEST(map_output_spec_checked) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *r;
    ASSERT_OK(ferry_dataset_range(rt, 0, 20, 1, NULL, &r));
    for (int t = 0; t <= 3; t += 3) {
        /* No output spec: outputs must match the input's (int64 scalar). */
        ferry_map_options mo = {.num_parallel_calls = t};
        ferry_dataset *m;
        ASSERT_OK(ferry_dataset_map(r, to_float_on_even, NULL, &mo, &m));
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(m, NULL, &it));
        for (int64_t i = 0; i < 20; i++) {
            ferry_element *e = NULL;
            int rc = ferry_iterator_next(it, &e);
            if (i % 2 == 0) {
                ASSERT_EQ(rc, FERRY_ETYPE);
                ASSERT_STR_CONTAINS(ferry_iterator_error(it), "component 0");
                ASSERT_STR_CONTAINS(ferry_iterator_error(it), "float32");
                char want[32];
                snprintf(want, sizeof want, "element %lld", (long long)i);
                ASSERT_STR_CONTAINS(ferry_iterator_error(it), want);
            } else {
                ASSERT_OK(rc);
                ASSERT_EQ(comp(e, 0), i);
                ferry_element_free(e);
            }
        }
        ferry_element *e;
        ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
        ferry_iterator_free(it);
        ferry_dataset_unref(m);
        /* Declared specs: a shape mismatch and a component-count mismatch. */
        ferry_tensor_spec vec = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 1, .dims = {3}}};
        mo.num_outputs = 1;
        mo.output_specs = &vec;
        ASSERT_OK(ferry_dataset_map(r, identity, NULL, &mo, &m));
        ferry_tensor_spec got;
        ASSERT_OK(ferry_dataset_component_spec(m, 0, &got));
        ASSERT_EQ(got.shape.rank, 1);
        ASSERT_OK(ferry_iterator_create(m, NULL, &it));
        ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_ETYPE);
        ASSERT_STR_CONTAINS(ferry_iterator_error(it), "shape");
        ferry_iterator_free(it);
        ferry_dataset_unref(m);
        ferry_tensor_spec two[2] = {{.dtype = FERRY_DTYPE_INT64}, {.dtype = FERRY_DTYPE_INT64}};
        mo.num_outputs = 2;
        mo.output_specs = two;
        ASSERT_OK(ferry_dataset_map(r, identity, NULL, &mo, &m));
        ASSERT_EQ(ferry_dataset_num_components(m), 2);
        ASSERT_OK(ferry_iterator_create(m, NULL, &it));
        ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_ETYPE);
        ASSERT_STR_CONTAINS(ferry_iterator_error(it), "components");
        ferry_iterator_free(it);
        ferry_dataset_unref(m);
    }
    ferry_dataset_unref(r);
    rt_done(rt);
}

TEST(map_errors_in_position) {
    ferry_runtime *rt = rt_new();
    fn_opts o = plain;
    o.fail[0] = 0;
    o.fail[1] = 500;
    o.fail[2] = 999;
    o.fail[3] = -1;
    o.jitter = true;
    enum { N = 1000 };
    rec *want = calloc(N, sizeof *want), *got = calloc(N, sizeof *got);
    for (size_t t = 0; t < NTC; t++) {
        ferry_dataset *ds = pipeline(rt, N, &o, thread_counts[t], false, 0);
        ASSERT_EQ(run_all(ds, got, 3), N);
        for (int i = 0; i < N; i++) {
            if (i == 0 || i == 500 || i == 999) {
                ASSERT_EQ(got[i].code, FERRY_EUSER);
                ASSERT_EQ(got[i].a, -1 - i); /* the message names the index */
            } else {
                ASSERT_EQ(got[i].code, FERRY_OK);
                ASSERT_EQ(got[i].a / 1000, i);
            }
        }
        if (t == 0) memcpy(want, got, N * sizeof *got);
        assert_same(want, got, N, "errors");
        ferry_dataset_unref(ds);
        ds = pipeline(rt, N, &o, thread_counts[t], true, 0);
        ASSERT_EQ(run_all(ds, got, 3), N);
        assert_same_set(want, got, N, "relaxed errors");
        ferry_dataset_unref(ds);
    }
    /* Errors of the input travel through a parallel map in their positions too. */
    ferry_dataset *inner = pipeline(rt, N, &o, 0, false, 0);
    ferry_map_options mo = {.num_parallel_calls = 3};
    ferry_dataset *outer;
    ASSERT_OK(ferry_dataset_map(inner, identity, NULL, &mo, &outer));
    ASSERT_EQ(run_all(outer, got, 3), N);
    assert_same(want, got, N, "input errors");
    ferry_dataset_unref(outer);
    ferry_dataset_unref(inner);
    free(want);
    free(got);
    rt_done(rt);
}

TEST(map_reorder_windows) {
    ferry_runtime *rt = rt_new();
    fn_opts o = plain;
    o.jitter = true;
    o.slow = 77;
    enum { N = 600 };
    rec *want = calloc(N, sizeof *want), *got = calloc(N, sizeof *got);
    ferry_dataset *ref = pipeline(rt, N, &o, 0, false, 0);
    ASSERT_EQ(run_all(ref, want, 2), N);
    ferry_dataset_unref(ref);
    const int windows[] = {1, 2, 3, 8, 1000};
    for (size_t w = 0; w < sizeof windows / sizeof *windows; w++) {
        for (int t = 1; t <= 8; t *= 8) {
            ferry_dataset *ds = pipeline(rt, N, &o, t, false, windows[w]);
            ASSERT_EQ(run_all(ds, got, 2), N);
            assert_same(want, got, N, "window");
            ferry_dataset_unref(ds);
            ds = pipeline(rt, N, &o, t, true, windows[w]);
            ASSERT_EQ(run_all(ds, got, 2), N);
            assert_same_set(want, got, N, "relaxed window");
            ferry_dataset_unref(ds);
        }
    }
    free(want);
    free(got);
    rt_done(rt);
}

/* user_free: the dataset owns `user` and frees it once, after its last iterator; a failed
 * ferry_dataset_map leaves it with the caller. */
typedef struct owned_user {
    int64_t add;
    int frees;
} owned_user;

static int add_owned(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    const owned_user *u = user;
    int64_t v = *(const int64_t *)ferry_tensor_data(ferry_element_get(in, 0));
    ferry_element_free(in);
    ferry_tensor *t;
    int rc = ferry_tensor_scalar_i64(ferry_context_runtime(ctx), v + u->add, &t);
    if (rc) return rc;
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out);
}

static void owned_free(void *user) { ((owned_user *)user)->frees++; }

TEST(map_user_free_runs_once_after_the_last_iterator) {
    ferry_runtime *rt = rt_new();
    for (int threads = 0; threads <= 2; threads += 2) {
        owned_user u = {.add = 100};
        ferry_dataset *r, *m;
        ASSERT_OK(ferry_dataset_range(rt, 0, 50, 1, NULL, &r));
        ferry_map_options o = {.num_parallel_calls = threads, .user_free = owned_free};
        ASSERT_OK(ferry_dataset_map(r, add_owned, &u, &o, &m));
        ferry_dataset_unref(r);
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(m, NULL, &it));
        ferry_dataset_unref(m); /* the iterator keeps the graph */
        ASSERT_EQ(u.frees, 0);
        ferry_element *e;
        ASSERT_OK(ferry_iterator_next(it, &e));
        ASSERT_EQ(*(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)), 100);
        ferry_element_free(e);
        ASSERT_EQ(u.frees, 0);
        ferry_iterator_free(it);
        ASSERT_EQ(u.frees, 1);
        /* A failing constructor does not take it. */
        owned_user v = {0};
        ASSERT_OK(ferry_dataset_range(rt, 0, 5, 1, NULL, &r));
        ferry_map_options bad = {.num_parallel_calls = -7, .user_free = owned_free};
        ASSERT_EQ(ferry_dataset_map(r, add_owned, &v, &bad, &m), FERRY_EINVAL);
        ASSERT_EQ(v.frees, 0);
        ferry_dataset_unref(r);
    }
    rt_done(rt);
}

TEST(map_empty_input) {
    ferry_runtime *rt = rt_new();
    for (size_t t = 0; t < NTC; t++) {
        for (int relaxed = 0; relaxed < 2; relaxed++) {
            ferry_dataset *ds = pipeline(rt, 0, &plain, thread_counts[t], relaxed, 0);
            ASSERT_EQ(ferry_dataset_cardinality(ds), 0);
            ferry_iterator *it;
            ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
            ferry_element *e = NULL;
            ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
            ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
            ASSERT(e == NULL);
            ferry_blob *b;
            ASSERT_OK(ferry_iterator_save(it, &b));
            ferry_iterator_free(it);
            ASSERT_OK(ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), NULL, &it));
            ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
            ferry_iterator_free(it);
            ferry_blob_free(b);
            ferry_dataset_unref(ds);
        }
    }
    rt_done(rt);
}

/* Consumes k records, saves (calls in flight), restores into `into` (optionally warm) and
 * drains. Deterministic: the concatenation equals `want`; relaxed: the same multiset. */
static void save_restore_check(ferry_dataset *from, ferry_dataset *into, const rec *want, size_t n, size_t k,
                               bool relaxed, bool warm) {
    rec *got = calloc(n + 1, sizeof *got);
    ferry_iterator_options o = {.seed = 42, .warm_start = warm};
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(from, &o, &it));
    ASSERT_EQ(drain(it, got, (long)k), k);
    ferry_blob *b;
    ASSERT_OK(ferry_iterator_save(it, &b));
    ferry_iterator_free(it);
    ferry_iterator *r;
    int rc = ferry_iterator_restore(into, ferry_blob_data(b), ferry_blob_size(b), &o, &r);
    if (rc) FAILF("restore after %zu: %s", k, ferry_last_error());
    /* A second save right away (nothing consumed) must describe the same position. */
    ferry_blob *b2;
    ASSERT_OK(ferry_iterator_save(r, &b2));
    ferry_iterator_free(r);
    ferry_blob_free(b);
    ASSERT_OK(ferry_iterator_restore(into, ferry_blob_data(b2), ferry_blob_size(b2), &o, &r));
    ferry_blob_free(b2);
    size_t m = drain(r, got + k, -1);
    ferry_iterator_free(r);
    if (k + m != n) FAILF("restored after %zu (relaxed %d): %zu + %zu records, want %zu", k, relaxed, k, m, n);
    if (relaxed) assert_same_set(want, got, n, "relaxed restore");
    else assert_same(want, got, n, "restore");
    free(got);
}

TEST(map_save_restore_many_points) {
    ferry_runtime *rt = rt_new();
    fn_opts o = plain;
    o.fail[0] = 5;
    o.fail[1] = 140;
    o.fail[2] = -1;
    o.jitter = true;
    enum { N = 300 };
    rec want[N];
    ferry_dataset *ref = pipeline(rt, N, &o, 0, false, 0);
    ASSERT_EQ(run_all(ref, want, 42), N);
    const size_t points[] = {0, 1, 5, 6, 63, 64, 65, 100, 140, 141, 200, 299, 300};
    const int threads[] = {0, 2, 8};
    for (int t = 0; t < 3; t++) {
        for (int relaxed = 0; relaxed < 2; relaxed++) {
            ferry_dataset *ds = pipeline(rt, N, &o, threads[t], relaxed, relaxed ? 16 : 0);
            ferry_dataset *other = pipeline(rt, N, &o, threads[(t + 1) % 3], !relaxed, 0);
            for (size_t p = 0; p < sizeof points / sizeof *points; p++) {
                bool rel = relaxed && threads[t] > 0;
                snprintf(where, sizeof where, "threads %d, relaxed %d, after %zu", threads[t], relaxed, points[p]);
                save_restore_check(ds, ds, want, N, points[p], rel, p % 2 == 1);
                /* Across thread counts and orders: the state format is the same. */
                bool other_rel = !relaxed && threads[(t + 1) % 3] > 0;
                save_restore_check(ds, other, want, N, points[p], rel || other_rel, false);
                save_restore_check(ds, ref, want, N, points[p], rel, false);
            }
            ferry_dataset_unref(other);
            ferry_dataset_unref(ds);
        }
    }
    ferry_dataset_unref(ref);
    ASSERT_EQ(live_threads(rt), 0);
    rt_done(rt);
}

TEST(map_nested_restore_with_running_workers) {
    /* map(map(range)) with both parallel: restoring the outer one replays the inner one with
     * skip; with warm start the inner workers already run when skip arrives. */
    ferry_runtime *rt = rt_new();
    fn_opts o = plain;
    o.jitter = true;
    o.fail[0] = 250;
    o.fail[1] = -1;
    enum { N = 500 };
    rec want[N];
    for (int inner_relaxed = 0; inner_relaxed < 2; inner_relaxed++) {
        for (int outer_relaxed = 0; outer_relaxed < 2; outer_relaxed++) {
            ferry_dataset *inner = pipeline(rt, N, &o, 3, inner_relaxed, 0);
            ferry_map_options mo = {.num_parallel_calls = 2, .relaxed_order = outer_relaxed, .reorder_window = 8};
            ferry_dataset *outer;
            ASSERT_OK(ferry_dataset_map(inner, identity, NULL, &mo, &outer));
            ferry_dataset *ref_inner = pipeline(rt, N, &o, 0, false, 0);
            ferry_dataset *ref;
            mo.num_parallel_calls = 0;
            ASSERT_OK(ferry_dataset_map(ref_inner, identity, NULL, &mo, &ref));
            ASSERT_EQ(run_all(ref, want, 42), N);
            bool rel = inner_relaxed || outer_relaxed;
            for (size_t k = 0; k <= N; k += 71) {
                snprintf(where, sizeof where, "inner relaxed %d, outer relaxed %d, after %zu, warm", inner_relaxed,
                         outer_relaxed, k);
                save_restore_check(outer, outer, want, N, k, rel, true);
                where[strlen(where) - 6] = '\0';
                save_restore_check(outer, outer, want, N, k, rel, false);
                strcat(where, ", into inline");
                save_restore_check(outer, ref, want, N, k, rel, false);
            }
            ferry_dataset_unref(ref);
            ferry_dataset_unref(ref_inner);
            ferry_dataset_unref(outer);
            ferry_dataset_unref(inner);
        }
    }
    rt_done(rt);
}

TEST(map_stats) {
    ferry_runtime *rt = rt_new();
    fn_opts o = plain;
    o.jitter = true;
    ferry_dataset *ds = pipeline(rt, 500, &o, 3, false, 40);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    rec got[500];
    ASSERT_EQ(drain(it, got, -1), 500);
    ferry_stage_stats s[4];
    size_t n;
    ASSERT_OK(ferry_iterator_stats(it, s, 4, &n));
    ASSERT_EQ(n, 2);
    ASSERT(strcmp(s[0].name, "map") == 0);
    ASSERT_EQ(s[0].parallelism, 3);
    ASSERT_EQ(s[0].buffer_capacity, 40);
    ASSERT_EQ(s[0].elements_out, 500);
    ASSERT(s[0].work_ns > 500 * 1000); /* the jitter alone is ~15 us per call */
    ASSERT_EQ(s[0].assemble_ns, 0);    /* nothing is batched */
    ASSERT(s[0].lock_wait_ns >= 0);
    ASSERT_EQ(s[0].buffered_elements, 0);
    ASSERT(strcmp(s[1].name, "range") == 0);
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(map_bad_arguments) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *r, *m = NULL;
    ASSERT_OK(ferry_dataset_range(rt, 0, 10, 1, NULL, &r));
    ASSERT_EQ(ferry_dataset_map(r, NULL, NULL, NULL, &m), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'fn'");
    ferry_map_options mo = {.num_parallel_calls = -2};
    ASSERT_EQ(ferry_dataset_map(r, identity, NULL, &mo, &m), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "num_parallel_calls");
    mo = (ferry_map_options){.reorder_window = -1};
    ASSERT_EQ(ferry_dataset_map(r, identity, NULL, &mo, &m), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "reorder_window");
    mo = (ferry_map_options){.num_outputs = 1};
    ASSERT_EQ(ferry_dataset_map(r, identity, NULL, &mo, &m), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "output_specs");
    ferry_tensor_spec bad = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 9}};
    mo.output_specs = &bad;
    ASSERT_EQ(ferry_dataset_map(r, identity, NULL, &mo, &m), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "rank");
    ASSERT_EQ(ferry_dataset_map(NULL, identity, NULL, NULL, &m), FERRY_EINVAL);
    ASSERT_EQ(ferry_dataset_map(r, identity, NULL, NULL, NULL), FERRY_EINVAL);
    ASSERT(m == NULL);
    mo = (ferry_map_options){.num_parallel_calls = FERRY_AUTOTUNE};
    ASSERT_OK(ferry_dataset_map(r, identity, NULL, &mo, &m));
    ASSERT(strcmp(ferry_dataset_name(m), "map") == 0);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(m, NULL, &it));
    rec got[10];
    ASSERT_EQ(drain(it, got, -1), 10);
    for (int i = 0; i < 10; i++) ASSERT_EQ(got[i].a, i);
    ferry_stage_stats s[2];
    size_t n;
    ASSERT_OK(ferry_iterator_stats(it, s, 2, &n));
    ferry_runtime_stats rs;
    ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
    ASSERT_EQ(s[0].parallelism, rs.cpu_budget > 1 ? rs.cpu_budget - 1 : 1); /* AUTOTUNE: a core left to the consumer */
    ferry_iterator_free(it);
    ferry_dataset_unref(m);
    ferry_dataset_unref(r);
    rt_done(rt);
}

TEST(map_corrupt_state_refused) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *ds = pipeline(rt, 100, &plain, 2, true, 0);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    rec got[10];
    ASSERT_EQ(drain(it, got, 10), 10);
    ferry_blob *b;
    ASSERT_OK(ferry_iterator_save(it, &b));
    ferry_iterator_free(it);
    for (size_t n = 0; n < ferry_blob_size(b); n++) {
        ferry_iterator *bad = NULL;
        ASSERT(ferry_iterator_restore(ds, ferry_blob_data(b), n, NULL, &bad) != FERRY_OK);
        ASSERT(bad == NULL);
    }
    ferry_blob_free(b);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

/* skip while workers run: shard and skip over a parallel map call its skip repeatedly; the
 * deterministic output matches the inline one, the relaxed one has the right size, no
 * duplicates, and stays so across save/restore (its state then holds skipped gaps). */
TEST(map_skip_while_running) {
    ferry_runtime *rt = rt_new();
    fn_opts o = plain;
    o.jitter = true;
    o.fail[0] = 9;
    o.fail[1] = 2001;
    o.fail[2] = -1;
    enum { N = 3000 };
    rec *want = calloc(N, sizeof *want), *got = calloc(N, sizeof *got);
    ferry_dataset *ref_m = pipeline(rt, N, &o, 0, false, 0);
    ferry_dataset *ref;
    ASSERT_OK(ferry_dataset_shard(ref_m, 4, 1, NULL, &ref));
    size_t nwant = run_all(ref, want, 8);
    ASSERT_EQ(nwant, N / 4);
    for (int relaxed = 0; relaxed < 2; relaxed++) {
        for (int warm = 0; warm < 2; warm++) {
            ferry_dataset *m = pipeline(rt, N, &o, 3, relaxed, relaxed ? 64 : 0);
            ferry_dataset *sh, *sk;
            ASSERT_OK(ferry_dataset_shard(m, 4, 1, NULL, &sh));
            ASSERT_OK(ferry_dataset_skip(m, 100, NULL, &sk));
            ferry_iterator_options io = {.seed = 8, .warm_start = warm};
            ferry_iterator *it;
            ASSERT_OK(ferry_iterator_create(sh, &io, &it));
            size_t n = drain(it, got, 300);
            ferry_blob *b;
            ASSERT_OK(ferry_iterator_save(it, &b));
            ferry_iterator_free(it);
            ASSERT_OK(ferry_iterator_restore(sh, ferry_blob_data(b), ferry_blob_size(b), &io, &it));
            ferry_blob_free(b);
            n += drain(it, got + n, -1);
            ferry_iterator_free(it);
            ASSERT_EQ(n, nwant);
            if (!relaxed) {
                assert_same(want, got, n, "shard");
            } else {
                qsort(got, n, sizeof *got, rec_cmp);
                for (size_t i = 1; i < n; i++) ASSERT(rec_cmp(&got[i - 1], &got[i]) != 0); /* no duplicates */
            }
            ASSERT_OK(ferry_iterator_create(sk, &io, &it));
            n = drain(it, got, 10);
            ASSERT_OK(ferry_iterator_save(it, &b));
            ferry_iterator_free(it);
            ASSERT_OK(ferry_iterator_restore(sk, ferry_blob_data(b), ferry_blob_size(b), &io, &it));
            ferry_blob_free(b);
            n += drain(it, got + n, -1);
            ferry_iterator_free(it);
            ASSERT_EQ(n, N - 100);
            qsort(got, n, sizeof *got, rec_cmp);
            for (size_t i = 1; i < n; i++) ASSERT(rec_cmp(&got[i - 1], &got[i]) != 0);
            ferry_dataset_unref(sk);
            ferry_dataset_unref(sh);
            ferry_dataset_unref(m);
        }
    }
    ferry_dataset_unref(ref);
    ferry_dataset_unref(ref_m);
    free(want);
    free(got);
    rt_done(rt);
}

/* A relaxed map skipped far ahead while running remembers the skipped input ranges ("gaps")
 * until its low mark passes them; states saved meanwhile carry them. */
TEST(map_relaxed_gaps_survive_restore) {
    ferry_runtime *rt = rt_new();
    fn_opts o = plain;
    o.jitter = true;
    o.slow = 1025; /* in flight while the consumer skips past it */
    enum { N = 5000, K = 50 };
    for (int round = 0; round < 3; round++) {
        ferry_dataset *m = pipeline(rt, N, &o, 2, true, 256);
        ferry_dataset *sh;
        ASSERT_OK(ferry_dataset_shard(m, K, round, NULL, &sh));
        rec got[N / K + 1];
        size_t n = 0;
        ferry_iterator_options io = {.warm_start = true};
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(sh, &io, &it));
        for (;;) {
            size_t k = drain(it, got + n, 3);
            n += k;
            ferry_blob *b;
            ASSERT_OK(ferry_iterator_save(it, &b));
            ferry_iterator_free(it);
            ASSERT_OK(ferry_iterator_restore(sh, ferry_blob_data(b), ferry_blob_size(b), &io, &it));
            ferry_blob_free(b);
            if (k < 3) break;
        }
        ferry_iterator_free(it);
        ASSERT_EQ(n, N / K);
        qsort(got, n, sizeof *got, rec_cmp);
        for (size_t i = 0; i < n; i++) {
            ASSERT_EQ(got[i].code, FERRY_OK);
            ASSERT(got[i].a / 1000 >= 0 && got[i].a / 1000 < N);
            if (i) ASSERT(got[i - 1].a / 1000 != got[i].a / 1000); /* no element twice */
        }
        ferry_dataset_unref(sh);
        ferry_dataset_unref(m);
    }
    rt_done(rt);
}

/* A parallel map hands on what is ready: a slow input position or a slow call ends the chunk's
 * hold on the results before it (tests/handoff.h: the next positions wait for the consumer). */
#include "handoff.h"

TEST(map_hands_on_results_behind_a_slow_position) {
    ferry_runtime *rt = rt_new();
    for (int threads = 1; threads <= 2; threads++) {
        /* the input turns slow at position 300 */
        handoff h = {.n = 400, .slow_at = 300};
        ferry_dataset *src = handoff_source(rt, &h);
        ferry_map_options o = {.num_parallel_calls = threads};
        ferry_dataset *ds;
        ASSERT_OK(ferry_dataset_map(src, identity, NULL, &o, &ds));
        handoff_consume(ds, &h);
        ferry_dataset_unref(ds);
        ferry_dataset_unref(src);
        /* the function turns slow at element 300, in the middle of a chunk */
        handoff hf = {.n = 400, .slow_at = 300};
        ferry_dataset *r;
        ASSERT_OK(ferry_dataset_range(rt, 0, 400, 1, NULL, &r));
        ASSERT_OK(ferry_dataset_map(r, handoff_map, &hf, &o, &ds));
        handoff_consume(ds, &hf);
        ferry_dataset_unref(ds);
        ferry_dataset_unref(r);
    }
    rt_done(rt);
}
