/*
 * test_prefetch.c - prefetch: order and values for every buffer size, errors in their positions,
 * END repeated, save/restore at every position with the buffer full (and across buffer sizes and
 * nested prefetches), the byte budget bound, stats, argument checks.
 *
 * Streams are compared as arrays of "records": a value (int64) or an error code, so that a
 * saved-and-restored stream can be checked against the uninterrupted one position by position.
 */
#include "runner.h"

#include <time.h>

typedef struct rec {
    int code;      /* FERRY_OK or the error */
    int64_t value; /* component 0 of the element */
} rec;

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static int64_t value_of(const ferry_element *e) {
    const ferry_tensor *t = ferry_element_get(e, 0);
    ASSERT(t != NULL);
    return *(const int64_t *)ferry_tensor_data(t);
}

/* Map function: value * 1000 plus a random draw in [0, 1000), failing on the indices in `fail`
 * (a -1 terminated list). */
typedef struct fail_list {
    int64_t idx[8];
} fail_list;

static int map_fn(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    const fail_list *f = user;
    int64_t i = ferry_context_index(ctx);
    for (int k = 0; f && f->idx[k] >= 0; k++) {
        if (f->idx[k] == i) {
            ferry_element_free(in);
            return ferry_context_fail(ctx, FERRY_EUSER, "refusing index %lld", (long long)i);
        }
    }
    int64_t v = *(const int64_t *)ferry_tensor_data(ferry_element_get(in, 0));
    ferry_element_free(in);
    ferry_tensor *t;
    int64_t r = (int64_t)(ferry_context_random(ctx) % 1000);
    int rc = ferry_tensor_scalar_i64(ferry_context_runtime(ctx), v * 1000 + r, &t);
    if (rc) return rc;
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out);
}

/* range(0, n) -> map(map_fn, threads) -> prefetch(buffer) */
static ferry_dataset *pipeline(ferry_runtime *rt, int64_t n, const fail_list *fails, int threads, int64_t buffer) {
    ferry_dataset *r, *m, *p;
    ASSERT_OK(ferry_dataset_range(rt, 0, n, 1, NULL, &r));
    ferry_map_options mo = {.num_parallel_calls = threads, .seed = 7};
    ASSERT_OK(ferry_dataset_map(r, map_fn, (void *)fails, &mo, &m));
    ASSERT_OK(ferry_dataset_prefetch(m, buffer, NULL, &p));
    ferry_dataset_unref(r);
    ferry_dataset_unref(m);
    return p;
}

/* Reads up to max records (max < 0: to END); returns how many. Checks that END repeats. */
static size_t drain(ferry_iterator *it, rec *out, long max) {
    size_t n = 0;
    for (;;) {
        if (max >= 0 && (long)n >= max) return n;
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) {
            ASSERT(e == NULL);
            ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
            ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
            return n;
        }
        if (rc == FERRY_OK) {
            out[n].code = FERRY_OK;
            out[n].value = value_of(e);
            ferry_element_free(e);
        } else {
            ASSERT(e == NULL);
            out[n].code = rc;
            out[n].value = 0;
        }
        n++;
    }
}

static void assert_same(const rec *a, const rec *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (a[i].code != b[i].code || a[i].value != b[i].value)
            FAILF("position %zu differs: (%s, %lld) vs (%s, %lld)", i, ferry_error_name(a[i].code),
                  (long long)a[i].value, ferry_error_name(b[i].code), (long long)b[i].value);
    }
}

static int live_threads(ferry_runtime *rt) {
    ferry_runtime_stats s;
    ASSERT_OK(ferry_runtime_stats_get(rt, &s));
    return s.threads_live;
}

/* The prefetch node's stats (the root). */
static ferry_stage_stats root_stats(ferry_iterator *it) {
    ferry_stage_stats s[8];
    size_t n = 0;
    ASSERT_OK(ferry_iterator_stats(it, s, 8, &n));
    ASSERT(n >= 1);
    ASSERT(strcmp(s[0].name, "prefetch") == 0);
    return s[0];
}

/* Waits (a minute at most: a sanitizer build on a loaded machine is slow) until the prefetch
 * buffer is full (the producer refills it once a quarter is gone) or holds the `left` entries
 * still to come. */
static void wait_buffered(ferry_iterator *it, int64_t left) {
    for (int i = 0; i < 120000; i++) {
        ferry_stage_stats s = root_stats(it);
        int64_t full = s.buffer_capacity - (s.buffer_capacity / 4 > 1 ? s.buffer_capacity / 4 : 1);
        if (s.buffered_elements >= (left < full ? left : full)) return;
        sleep_us(500);
    }
    FAILF("the prefetch buffer did not fill");
}

static const int64_t buffers[] = {0, 1, 3, FERRY_AUTOTUNE};

TEST(prefetch_order_and_values) {
    ferry_runtime *rt = rt_new_budget(0);
    rec *want = calloc(1000, sizeof *want), *got = calloc(1000, sizeof *got);
    for (int threads = 0; threads <= 2; threads += 2) {
        for (size_t b = 0; b < sizeof buffers / sizeof *buffers; b++) {
            ferry_dataset *ds = pipeline(rt, 1000, NULL, threads, buffers[b]);
            ASSERT_EQ(ferry_dataset_cardinality(ds), 1000);
            ferry_iterator *it;
            ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
            size_t n = drain(it, got, -1);
            ASSERT_EQ(n, 1000);
            if (b == 0 && threads == 0) memcpy(want, got, 1000 * sizeof *want);
            for (size_t i = 0; i < n; i++) {
                ASSERT_EQ(got[i].code, FERRY_OK);
                ASSERT_EQ(got[i].value / 1000, (int64_t)i);
            }
            assert_same(want, got, 1000);
            ferry_iterator_free(it);
            ASSERT_EQ(live_threads(rt), 0);
            ferry_dataset_unref(ds);
        }
    }
    free(want);
    free(got);
    rt_done(rt);
}

TEST(prefetch_plain_range_and_empty) {
    ferry_runtime *rt = rt_new_budget(0);
    for (size_t b = 0; b < sizeof buffers / sizeof *buffers; b++) {
        for (int64_t n = 0; n <= 5; n += 5) {
            ferry_dataset *r, *p;
            ASSERT_OK(ferry_dataset_range(rt, 10, 10 + n, 1, NULL, &r));
            ASSERT_OK(ferry_dataset_prefetch(r, buffers[b], NULL, &p));
            ferry_iterator *it;
            ASSERT_OK(ferry_iterator_create(p, NULL, &it));
            rec got[8];
            ASSERT_EQ(drain(it, got, -1), n);
            for (int64_t i = 0; i < n; i++) ASSERT_EQ(got[i].value, 10 + i);
            ferry_iterator_free(it);
            ferry_dataset_unref(p);
            ferry_dataset_unref(r);
        }
    }
    rt_done(rt);
}

TEST(prefetch_errors_in_position) {
    ferry_runtime *rt = rt_new_budget(0);
    fail_list f = {{0, 25, 49, -1}};
    for (int threads = 0; threads <= 2; threads += 2) {
        for (size_t b = 0; b < sizeof buffers / sizeof *buffers; b++) {
            ferry_dataset *ds = pipeline(rt, 50, &f, threads, buffers[b]);
            ferry_iterator *it;
            ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
            for (int64_t i = 0; i < 50; i++) {
                ferry_element *e = NULL;
                int rc = ferry_iterator_next(it, &e);
                if (i == 0 || i == 25 || i == 49) {
                    ASSERT_EQ(rc, FERRY_EUSER);
                    ASSERT(e == NULL);
                    char want[64];
                    snprintf(want, sizeof want, "refusing index %lld", (long long)i);
                    ASSERT_STR_CONTAINS(ferry_iterator_error(it), want);
                    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "map");
                } else {
                    ASSERT_OK(rc);
                    ASSERT_EQ(value_of(e) / 1000, i);
                    ferry_element_free(e);
                }
            }
            ferry_element *e = NULL;
            ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
            ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
            ferry_iterator_free(it);
            ferry_dataset_unref(ds);
        }
    }
    rt_done(rt);
}

/* Saves after k positions (buffer full), restores, and checks the concatenation. */
static void save_restore_at(ferry_runtime *rt, ferry_dataset *ds, ferry_dataset *restore_ds, const rec *want,
                            size_t total, size_t k, int64_t buffer, bool warm) {
    rec *got = calloc(total + 1, sizeof *got);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    ASSERT_EQ(drain(it, got, (long)k), k);
    if (buffer > 0 && k > 0) wait_buffered(it, (int64_t)(total - k));
    ferry_blob *b;
    ASSERT_OK(ferry_iterator_save(it, &b));
    ferry_iterator_free(it);
    ferry_iterator_options o = {.warm_start = warm};
    ferry_iterator *r;
    int rc = ferry_iterator_restore(restore_ds, ferry_blob_data(b), ferry_blob_size(b), &o, &r);
    if (rc) FAILF("restore at %zu: %s", k, ferry_last_error());
    ferry_blob_free(b);
    size_t n = drain(r, got + k, -1);
    ASSERT_EQ(k + n, total);
    assert_same(want, got, total);
    ferry_iterator_free(r);
    (void)rt;
    free(got);
}

TEST(prefetch_save_restore_every_position) {
    ferry_runtime *rt = rt_new_budget(0);
    fail_list f = {{3, 77, 199, -1}};
    ferry_dataset *ds = pipeline(rt, 200, &f, 0, 8);
    rec want[200];
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    ASSERT_EQ(drain(it, want, -1), 200);
    ferry_iterator_free(it);
    ASSERT_EQ(want[77].code, FERRY_EUSER);
    for (size_t k = 0; k <= 200; k++) save_restore_at(rt, ds, ds, want, 200, k, 8, false);
    ASSERT_EQ(live_threads(rt), 0);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(prefetch_save_restore_parallel_map_and_other_sizes) {
    ferry_runtime *rt = rt_new_budget(0);
    fail_list f = {{0, 130, -1}};
    ferry_dataset *ds = pipeline(rt, 300, &f, 2, FERRY_AUTOTUNE);
    ferry_dataset *pass = pipeline(rt, 300, &f, 0, 0);
    ferry_dataset *big = pipeline(rt, 300, &f, 3, 50); /* folded into the map: no ring */
    ferry_dataset *ring = pipeline(rt, 300, &f, 0, 8); /* over an inline map: a ring */
    rec want[300];
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(pass, NULL, &it));
    ASSERT_EQ(drain(it, want, -1), 300);
    ferry_iterator_free(it);
    size_t points[] = {0, 1, 2, 63, 64, 65, 129, 130, 131, 200, 299, 300};
    for (size_t i = 0; i < sizeof points / sizeof *points; i++) {
        save_restore_at(rt, ds, ds, want, 300, points[i], 4, i % 2 == 0);
        save_restore_at(rt, ds, pass, want, 300, points[i], 4, false);       /* into pass-through */
        save_restore_at(rt, pass, big, want, 300, points[i], 0, i % 2 == 1); /* from pass-through */
        save_restore_at(rt, big, ds, want, 300, points[i], 50, true);
        save_restore_at(rt, ring, big, want, 300, points[i], 8, false); /* across the fold */
        save_restore_at(rt, big, ring, want, 300, points[i], 0, i % 2 == 0);
    }
    ferry_dataset_unref(ring);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(pass);
    ferry_dataset_unref(big);
    ASSERT_EQ(live_threads(rt), 0);
    rt_done(rt);
}

TEST(prefetch_nested_save_restore) {
    /* prefetch(prefetch(map(range))): the outer restore replays the inner one through skip. */
    ferry_runtime *rt = rt_new_budget(0);
    ferry_dataset *inner = pipeline(rt, 400, NULL, 2, 16);
    ferry_dataset *outer;
    ASSERT_OK(ferry_dataset_prefetch(inner, 5, NULL, &outer));
    rec want[400];
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(outer, NULL, &it));
    ASSERT_EQ(drain(it, want, -1), 400);
    ferry_iterator_free(it);
    for (size_t k = 0; k <= 400; k += 37) {
        save_restore_at(rt, outer, outer, want, 400, k, 5, false);
        save_restore_at(rt, outer, outer, want, 400, k, 5, true);
    }
    ferry_dataset_unref(outer);
    ferry_dataset_unref(inner);
    rt_done(rt);
}

/* 4 KiB elements: 512 int64 filled with the input value. */
static int big_fn(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)user;
    int64_t v = *(const int64_t *)ferry_tensor_data(ferry_element_get(in, 0));
    ferry_element_free(in);
    int64_t dims[1] = {512};
    ferry_tensor *t;
    int rc = ferry_tensor_create(ferry_context_runtime(ctx), FERRY_DTYPE_INT64, 1, dims, &t);
    if (rc) return rc;
    int64_t *d = ferry_tensor_mutable_data(t);
    for (int i = 0; i < 512; i++) d[i] = v;
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out);
}

TEST(prefetch_budget_bound) {
    const size_t budget = 64 * 1024, elem = 4096;
    for (int threads = 0; threads <= 2; threads += 2) {
        for (int b = 0; b < 2; b++) {
            ferry_runtime *rt = rt_new_budget(budget);
            ferry_dataset *r, *m, *p;
            ASSERT_OK(ferry_dataset_range(rt, 0, 300, 1, NULL, &r));
            ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 1, .dims = {512}}};
            ferry_map_options mo = {.num_parallel_calls = threads, .num_outputs = 1, .output_specs = &spec};
            ASSERT_OK(ferry_dataset_map(r, big_fn, NULL, &mo, &m));
            ASSERT_OK(ferry_dataset_prefetch(m, b ? 64 : FERRY_AUTOTUNE, NULL, &p));
            ferry_iterator *it;
            ASSERT_OK(ferry_iterator_create(p, NULL, &it));
            for (int64_t i = 0; i < 300; i++) {
                ferry_element *e;
                ASSERT_OK(ferry_iterator_next(it, &e));
                ASSERT_EQ(ferry_tensor_nbytes(ferry_element_get(e, 0)), elem);
                ASSERT_EQ(((const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)))[511], i);
                ferry_element_free(e);
                if (i % 50 == 0) sleep_us(5000); /* let the producers hit the budget */
            }
            ferry_element *e;
            ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
            ferry_stage_stats s = root_stats(it);
            if (threads) {
                /* over a parallel map: the map's window is the buffer, no thread here; a buffer of
                 * 64 widens the window by 64 */
                ASSERT_EQ(s.buffer_capacity, 0);
                ferry_stage_stats all[4];
                size_t n = 0;
                ASSERT_OK(ferry_iterator_stats(it, all, 4, &n));
                ASSERT(n >= 2 && strcmp(all[1].name, "map") == 0);
                if (b) ASSERT(all[1].buffer_capacity >= 64);
            } else {
                ASSERT(s.buffer_capacity >= 1);
                ASSERT_LE(s.buffer_capacity, 64);
            }
            ferry_iterator_free(it);
            ferry_runtime_stats rs;
            ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
            size_t producers = 1 + (size_t)threads; /* the prefetch thread and the map workers */
            printf("  threads %d buffer %s: budget peak %zu of %zu\n", threads, b ? "64" : "AUTOTUNE",
                   rs.budget_used_peak, budget);
            ASSERT_LE(rs.budget_used_peak, budget + producers * elem);
            ASSERT_EQ(rs.budget_used, 0);
            ferry_dataset_unref(p);
            ferry_dataset_unref(m);
            ferry_dataset_unref(r);
            rt_done(rt);
        }
    }
}

/* Bytes the consumer holds (ferry_runtime_budget_hold, as the Python binding does for the batches
 * its users keep) count against the budget: with the whole budget held the pipeline still runs
 * (each stage makes one element at a time instead of waiting forever), the held bytes show in
 * budget_used, and releasing more than is held is refused. */
TEST(prefetch_budget_held_by_the_consumer) {
    const size_t budget = 64 * 1024, elem = 4096;
    for (int threads = 0; threads <= 2; threads += 2) {
        ferry_runtime *rt = rt_new_budget(budget);
        ASSERT_OK(ferry_runtime_budget_hold(rt, budget));
        ferry_runtime_stats rs;
        ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
        ASSERT_EQ(rs.budget_used, budget);
        ferry_dataset *r, *m, *p;
        ASSERT_OK(ferry_dataset_range(rt, 0, 100, 1, NULL, &r));
        ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 1, .dims = {512}}};
        ferry_map_options mo = {.num_parallel_calls = threads, .num_outputs = 1, .output_specs = &spec};
        ASSERT_OK(ferry_dataset_map(r, big_fn, NULL, &mo, &m));
        ASSERT_OK(ferry_dataset_prefetch(m, 16, NULL, &p));
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(p, NULL, &it));
        ferry_element *kept[100];
        for (int64_t i = 0; i < 100; i++) { /* the consumer keeps every element and holds its bytes */
            ASSERT_OK(ferry_iterator_next(it, &kept[i]));
            ASSERT_EQ(((const int64_t *)ferry_tensor_data(ferry_element_get(kept[i], 0)))[511], i);
            ASSERT_OK(ferry_runtime_budget_hold(rt, elem));
        }
        ferry_element *e;
        ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
        ferry_iterator_free(it);
        ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
        ASSERT_EQ(rs.budget_used, budget + 100 * elem);
        ASSERT_EQ(ferry_runtime_budget_release(rt, budget + 100 * elem + 1), FERRY_EINVAL);
        ASSERT(strstr(ferry_last_error(), "held") != NULL);
        for (int i = 0; i < 100; i++) {
            ferry_element_free(kept[i]);
            ASSERT_OK(ferry_runtime_budget_release(rt, elem));
        }
        ASSERT_OK(ferry_runtime_budget_release(rt, budget));
        ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
        ASSERT_EQ(rs.budget_used, 0);
        ASSERT_EQ(ferry_runtime_budget_hold(NULL, 1), FERRY_EINVAL);
        ASSERT_EQ(ferry_runtime_budget_release(NULL, 1), FERRY_EINVAL);
        ferry_dataset_unref(p);
        ferry_dataset_unref(m);
        ferry_dataset_unref(r);
        rt_done(rt);
    }
}

TEST(prefetch_stats_and_warm_start) {
    ferry_runtime *rt = rt_new_budget(0);
    ferry_dataset *ds = pipeline(rt, 100, NULL, 0, 6);
    ferry_iterator_options o = {.warm_start = true};
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, &o, &it));
    ASSERT_EQ(live_threads(rt), 1); /* started at creation */
    ferry_stage_stats s;
    for (int i = 0; i < 120000 && root_stats(it).buffered_elements < 6; i++) sleep_us(500);
    s = root_stats(it);
    ASSERT_EQ(s.buffer_capacity, 6);
    ASSERT_EQ(s.parallelism, 1);
    ASSERT_EQ(s.buffered_elements, 6);
    ASSERT_EQ(s.buffered_bytes, 6 * 8);
    rec got[100];
    ASSERT_EQ(drain(it, got, -1), 100);
    s = root_stats(it);
    ASSERT_EQ(s.elements_out, 100);
    ASSERT(s.work_ns >= 0);
    ASSERT_EQ(s.assemble_ns, 0);
    ferry_iterator_free(it);
    ASSERT_EQ(live_threads(rt), 0);
    /* Lazy start: no thread before the first next. */
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    ASSERT_EQ(live_threads(rt), 0);
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(prefetch_autotune_grows_within_cap) {
    ferry_runtime *rt = rt_new_budget(0);
    ferry_dataset *r, *p;
    ASSERT_OK(ferry_dataset_range(rt, 0, 5000, 1, NULL, &r));
    ASSERT_OK(ferry_dataset_prefetch(r, FERRY_AUTOTUNE, NULL, &p));
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(p, NULL, &it));
    for (int64_t i = 0; i < 5000; i++) {
        ferry_element *e;
        ASSERT_OK(ferry_iterator_next(it, &e));
        ASSERT_EQ(value_of(e), i);
        ferry_element_free(e);
        if (i % 500 == 0) sleep_us(2000); /* bursts: the buffer fills, then drains */
    }
    ferry_stage_stats s = root_stats(it);
    ASSERT(s.buffer_capacity >= 2);
    ASSERT_LE(s.buffer_capacity, 64);
    printf("  autotuned capacity %lld\n", (long long)s.buffer_capacity);
    ferry_iterator_free(it);
    ferry_dataset_unref(p);
    ferry_dataset_unref(r);
    rt_done(rt);
}

TEST(prefetch_bad_arguments_and_corrupt_state) {
    ferry_runtime *rt = rt_new_budget(0);
    ferry_dataset *r, *p = NULL;
    ASSERT_OK(ferry_dataset_range(rt, 0, 10, 1, NULL, &r));
    ASSERT_EQ(ferry_dataset_prefetch(r, -2, NULL, &p), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "buffer_size");
    ASSERT(p == NULL);
    ASSERT_EQ(ferry_dataset_prefetch(NULL, 1, NULL, &p), FERRY_EINVAL);
    ASSERT_EQ(ferry_dataset_prefetch(r, 1, NULL, NULL), FERRY_EINVAL);
    ASSERT_OK(ferry_dataset_prefetch(r, 4, NULL, &p));
    ASSERT(strcmp(ferry_dataset_name(p), "prefetch") == 0);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(p, NULL, &it));
    ferry_element *e;
    ASSERT_OK(ferry_iterator_next(it, &e));
    ferry_element_free(e);
    ferry_blob *b;
    ASSERT_OK(ferry_iterator_save(it, &b));
    /* Restoring every truncation of the state fails cleanly (the checksum catches most). */
    for (size_t n = 0; n < ferry_blob_size(b); n++) {
        ferry_iterator *bad = NULL;
        ASSERT(ferry_iterator_restore(p, ferry_blob_data(b), n, NULL, &bad) != FERRY_OK);
        ASSERT(bad == NULL);
    }
    ferry_blob_free(b);
    ferry_iterator_free(it);
    ferry_dataset_unref(p);
    ferry_dataset_unref(r);
    rt_done(rt);
}
