/*
 * test_shuffle.c - shuffle: a permutation, seeds, reshuffling per epoch under repeat,
 * same_order_each_epoch, the first element after O(1) input reads (and after a full buffer with
 * fill_before_first), buffer 1 as the identity, the byte budget capping the buffer, input errors
 * in their positions, small saved state, and save/restore at every position (mid-buffer).
 */
#include "runner.h"

#include "element_stream.h"

/* ---- helpers ------------------------------------------------------------------------------ */
static const ferry_tensor_spec scalar_spec = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 0}};

static ferry_dataset *shuffled_range(ferry_runtime *rt, int64_t n, int64_t buffer, const ferry_shuffle_options *o) {
    ferry_dataset *r, *s;
    ASSERT_OK(ferry_dataset_range(rt, 0, n, 1, NULL, &r));
    ASSERT_OK(ferry_dataset_shuffle(r, buffer, o, &s));
    ferry_dataset_unref(r);
    return s;
}

/* Reads ds to END with iterator seed `seed` into vals (int64 scalars); returns the count. */
static int read_values(ferry_dataset *ds, uint64_t seed, int64_t *vals, int cap) {
    ferry_iterator_options o = {.seed = seed};
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, &o, &it));
    int n = 0;
    for (;;) {
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) break;
        if (rc != FERRY_OK) FAILF("next returned %s: %s", ferry_error_name(rc), ferry_iterator_error(it));
        ASSERT(n < cap);
        vals[n++] = i64_at(e, 0, 0);
        ferry_element_free(e);
    }
    ferry_iterator_free(it);
    return n;
}

static void assert_permutation(const int64_t *vals, int n, int64_t from) {
    static char seen[4096];
    ASSERT(n <= 4096);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < n; i++) {
        int64_t v = vals[i] - from;
        if (v < 0 || v >= n || seen[v]) FAILF("value %lld at %d is out of range or repeated", (long long)vals[i], i);
        seen[v] = 1;
    }
}

static bool same(const int64_t *a, const int64_t *b, int n) { return memcmp(a, b, (size_t)n * sizeof *a) == 0; }

static bool identity(const int64_t *a, int n) {
    for (int i = 0; i < n; i++)
        if (a[i] != i) return false;
    return true;
}

TEST(shuffle_is_a_permutation) {
    ferry_runtime *rt = rt_new();
    static int64_t v[1000];
    for (int fill = 0; fill <= 1; fill++) {
        ferry_shuffle_options o = {.fill_before_first = fill};
        ferry_dataset *s = shuffled_range(rt, 1000, 64, &o);
        ASSERT_EQ(ferry_dataset_cardinality(s), 1000);
        ferry_tensor_spec sp;
        ASSERT_OK(ferry_dataset_component_spec(s, 0, &sp));
        ASSERT_EQ(sp.dtype, FERRY_DTYPE_INT64);
        ASSERT_EQ(sp.shape.rank, 0);
        ASSERT_EQ(read_values(s, 7, v, 1000), 1000);
        assert_permutation(v, 1000, 0);
        ASSERT(!identity(v, 1000));
        /* Displacement is bounded by the buffer: an element never comes out before it is read. */
        for (int i = 0; i < 1000; i++) ASSERT_LE(v[i], fill ? i + 64 : 2 * i + 1);
        ferry_dataset_unref(s);
    }
    /* A buffer larger than the input, and an empty input. */
    ferry_dataset *s = shuffled_range(rt, 50, 1000000, NULL);
    ASSERT_EQ(read_values(s, 1, v, 1000), 50);
    assert_permutation(v, 50, 0);
    ferry_dataset_unref(s);
    s = shuffled_range(rt, 0, 10, NULL);
    ASSERT_EQ(read_values(s, 1, v, 1000), 0);
    ferry_dataset_unref(s);
    rt_done(rt);
}

TEST(shuffle_seeds) {
    ferry_runtime *rt = rt_new();
    static int64_t a[200], b[200];
    ferry_shuffle_options o1 = {.seed = 1}, o2 = {.seed = 2};
    ferry_dataset *s1 = shuffled_range(rt, 200, 50, &o1), *s1b = shuffled_range(rt, 200, 50, &o1),
                  *s2 = shuffled_range(rt, 200, 50, &o2);
    ASSERT_EQ(read_values(s1, 5, a, 200), 200);
    ASSERT_EQ(read_values(s1, 5, b, 200), 200);
    ASSERT(same(a, b, 200)); /* same seeds: same order */
    ASSERT_EQ(read_values(s1b, 5, b, 200), 200);
    ASSERT(same(a, b, 200)); /* an identical pipeline built again: same order */
    ASSERT_EQ(read_values(s2, 5, b, 200), 200);
    ASSERT(!same(a, b, 200)); /* another op seed */
    ASSERT_EQ(read_values(s1, 6, b, 200), 200);
    ASSERT(!same(a, b, 200)); /* another pipeline seed */
    ferry_dataset_unref(s1);
    ferry_dataset_unref(s1b);
    ferry_dataset_unref(s2);
    rt_done(rt);
}

TEST(shuffle_reshuffles_each_epoch_under_repeat) {
    ferry_runtime *rt = rt_new();
    static int64_t a[300], b[300];
    for (int same_order = 0; same_order <= 1; same_order++) {
        ferry_shuffle_options o = {.seed = 3, .same_order_each_epoch = same_order};
        ferry_dataset *s = shuffled_range(rt, 100, 100, &o), *rep;
        ASSERT_OK(ferry_dataset_repeat(s, 3, NULL, &rep));
        ASSERT_EQ(ferry_dataset_cardinality(rep), 300);
        ASSERT_EQ(read_values(rep, 11, a, 300), 300);
        for (int e = 0; e < 3; e++) assert_permutation(a + 100 * e, 100, 0);
        if (same_order) {
            ASSERT(same(a, a + 100, 100));
            ASSERT(same(a, a + 200, 100));
        } else {
            ASSERT(!same(a, a + 100, 100));
            ASSERT(!same(a + 100, a + 200, 100));
        }
        ASSERT_EQ(read_values(rep, 11, b, 300), 300);
        ASSERT(same(a, b, 300)); /* reproducible, every epoch */
        /* Two iterators with different pipeline seeds: different orders, also with
         * same_order_each_epoch (it fixes the order across epochs, not across seeds); the same
         * pipeline seed: the same order. */
        ASSERT_EQ(read_values(s, 1, a, 300), 100);
        ASSERT_EQ(read_values(s, 2, b, 300), 100);
        ASSERT(!same(a, b, 100));
        ASSERT_EQ(read_values(s, 1, b, 300), 100);
        ASSERT(same(a, b, 100));
        ferry_dataset_unref(rep);
        ferry_dataset_unref(s);
    }
    rt_done(rt);
}

TEST(shuffle_first_element_after_few_reads) {
    ferry_runtime *rt = rt_new();
    for (int fill = 0; fill <= 1; fill++) {
        src s = {.n = 1000, .make = make_scalar};
        ferry_dataset *g = src_dataset(rt, &s, 1, &scalar_spec, 1000), *sh;
        ferry_shuffle_options o = {.fill_before_first = fill};
        ASSERT_OK(ferry_dataset_shuffle(g, 500, &o, &sh));
        ferry_iterator *it = iter(sh);
        ASSERT_EQ(s.calls, 0); /* making the iterator reads nothing */
        ferry_element *e = next_ok(it);
        if (fill) ASSERT_EQ(s.calls, 500);
        else ASSERT_LE(s.calls, 2);
        ferry_element_free(e);
        /* The buffer then fills by one per output: after 10 outputs at most 20 reads. */
        for (int i = 1; i < 10; i++) ferry_element_free(next_ok(it));
        if (!fill) ASSERT_LE(s.calls, 20);
        ferry_iterator_free(it);
        ferry_dataset_unref(sh);
        ferry_dataset_unref(g);
    }
    rt_done(rt);
}

TEST(shuffle_buffer_one_is_identity) {
    ferry_runtime *rt = rt_new();
    static int64_t v[100];
    for (int fill = 0; fill <= 1; fill++) {
        ferry_shuffle_options o = {.seed = 9, .fill_before_first = fill};
        ferry_dataset *s = shuffled_range(rt, 100, 1, &o);
        ASSERT_EQ(read_values(s, 4, v, 100), 100);
        ASSERT(identity(v, 100));
        ferry_dataset_unref(s);
    }
    ferry_dataset *r, *s = NULL;
    ASSERT_OK(ferry_dataset_range(rt, 0, 10, 1, NULL, &r));
    ASSERT_EQ(ferry_dataset_shuffle(r, 0, NULL, &s), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "buffer_size");
    ASSERT(s == NULL);
    ASSERT_EQ(ferry_dataset_shuffle(NULL, 4, NULL, &s), FERRY_EINVAL);
    ferry_dataset_unref(r);
    rt_done(rt);
}

TEST(shuffle_budget_caps_the_buffer) {
    ferry_runtime_options ro = {.memory_budget = 10000}; /* ten 1000-byte elements */
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(&ro, &rt));
    src s = {.n = 300, .make = make_kb};
    ferry_tensor_spec spec = {FERRY_DTYPE_FLOAT32, {.rank = 1, .dims = {250}}};
    for (int fill = 0; fill <= 1; fill++) {
        s.calls = 0;
        ferry_dataset *g = src_dataset(rt, &s, 1, &spec, 300), *sh;
        ferry_shuffle_options o = {.fill_before_first = fill};
        ASSERT_OK(ferry_dataset_shuffle(g, 100, &o, &sh));
        ferry_iterator *it = iter(sh);
        static int64_t v[300];
        int n = 0;
        ferry_element *e;
        while (ferry_iterator_next(it, &e) == FERRY_OK) {
            ASSERT(n < 300);
            v[n++] = (int64_t)((const float *)ferry_tensor_data(ferry_element_get(e, 0)))[0];
            ferry_element_free(e);
            ferry_runtime_stats rs;
            ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
            ASSERT_LE(rs.budget_used, 10000 + 1000);
        }
        ASSERT_EQ(n, 300);
        assert_permutation(v, 300, 0);
        ASSERT(!identity(v, 300));
        int in_order = 0; /* neighbours in input order: a buffer that stopped refilling makes most */
        for (int i = 1; i < 300; i++) in_order += v[i] == v[i - 1] + 1;
        ASSERT_LE(in_order, 100);
        ferry_runtime_stats rs;
        ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
        ASSERT_LE(rs.budget_used_peak, 10000 + 1000); /* the budget plus one element */
        ASSERT(rs.budget_used_peak >= 9000);          /* and the buffer did grow to it */
        ferry_iterator_free(it);
        ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
        ASSERT_EQ(rs.budget_used, 0);
        ferry_dataset_unref(sh);
        ferry_dataset_unref(g);
    }
    rt_done(rt);
}

TEST(shuffle_input_errors_in_position) {
    ferry_runtime *rt = rt_new();
    src s = {.n = 40, .make = make_scalar, .errors = {0, 17, 39}, .nerrors = 3};
    ferry_dataset *g = src_dataset(rt, &s, 1, &scalar_spec, 40), *sh;
    ASSERT_OK(ferry_dataset_shuffle(g, 8, NULL, &sh));
    ferry_iterator *it = iter(sh);
    ferry_element *e = NULL;
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_EUSER); /* read at once, returned at once */
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "bad element 0");
    int errors = 1, n = 0;
    static char seen[40];
    for (;;) {
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) break;
        if (rc == FERRY_EUSER) {
            errors++;
            continue;
        }
        ASSERT_OK(rc);
        int64_t v = i64_at(e, 0, 0);
        ASSERT(v > 0 && v < 40 && v != 17 && v != 39 && !seen[v]);
        seen[v] = 1;
        n++;
        ferry_element_free(e);
    }
    ASSERT_EQ(errors, 3);
    ASSERT_EQ(n, 37);
    ferry_iterator_free(it);
    check_resume_everywhere(sh, 21);
    ferry_dataset_unref(sh);
    ferry_dataset_unref(g);
    rt_done(rt);
}

TEST(shuffle_resume_everywhere) {
    ferry_runtime *rt = rt_new();
    for (int fill = 0; fill <= 1; fill++) {
        ferry_shuffle_options o = {.seed = 77, .fill_before_first = fill};
        /* A skipping input (range) and a replaying one (generator). */
        ferry_dataset *s = shuffled_range(rt, 60, 8, &o);
        check_resume_everywhere(s, 5);
        ferry_dataset_unref(s);
        src g = {.n = 50, .make = make_scalar, .errors = {3, 30}, .nerrors = 2};
        ferry_dataset *gd = src_dataset(rt, &g, 1, &scalar_spec, 50), *sh;
        ASSERT_OK(ferry_dataset_shuffle(gd, 6, &o, &sh));
        check_resume_everywhere(sh, 5);
        ferry_dataset_unref(sh);
        ferry_dataset_unref(gd);
    }
    rt_done(rt);
}

TEST(shuffle_resume_past_anchor_periods) {
    ferry_runtime *rt = rt_new();
    /* 300 positions: several anchor periods of 64, and a shuffle inside a shuffle (the inner
     * one's state is an anchor snapshot of the outer one), and epochs under repeat. */
    ferry_shuffle_options oi = {.seed = 1}, oo = {.seed = 2};
    ferry_dataset *inner = shuffled_range(rt, 150, 16, &oi), *outer, *rep;
    ASSERT_OK(ferry_dataset_shuffle(inner, 10, &oo, &outer));
    ASSERT_OK(ferry_dataset_repeat(outer, 2, NULL, &rep));
    check_resume_everywhere(rep, 12);
    ferry_dataset_unref(rep);
    ferry_dataset_unref(outer);
    ferry_dataset_unref(inner);
    rt_done(rt);
}

TEST(shuffle_state_holds_no_elements) {
    ferry_runtime *rt = rt_new();
    src s = {.n = 2000, .make = make_kb};
    ferry_tensor_spec spec = {FERRY_DTYPE_FLOAT32, {.rank = 1, .dims = {250}}};
    ferry_dataset *g = src_dataset(rt, &s, 1, &spec, 2000), *sh;
    ASSERT_OK(ferry_dataset_shuffle(g, 500, NULL, &sh));
    ferry_iterator *it = iter(sh);
    static float want[1500];
    for (int i = 0; i < 1000; i++) {
        ferry_element *e = next_ok(it);
        ferry_element_free(e);
    }
    ferry_blob *b;
    ASSERT_OK(ferry_iterator_save(it, &b));
    /* 500 buffered elements of 1000 bytes, saved as positions: 8 bytes per slot plus a little. */
    ASSERT_LE(ferry_blob_size(b), 500 * 8 + 256);
    for (int i = 0; i < 1000; i++) {
        ferry_element *e = next_ok(it);
        want[i] = ((const float *)ferry_tensor_data(ferry_element_get(e, 0)))[0];
        ferry_element_free(e);
    }
    expect_end(it);
    ferry_iterator_free(it);
    ferry_iterator *r;
    ASSERT_OK(ferry_iterator_restore(sh, ferry_blob_data(b), ferry_blob_size(b), NULL, &r));
    for (int i = 0; i < 1000; i++) {
        ferry_element *e = next_ok(r);
        ASSERT_EQ((int64_t)((const float *)ferry_tensor_data(ferry_element_get(e, 0)))[0], (int64_t)want[i]);
        ferry_element_free(e);
    }
    expect_end(r);
    ferry_iterator_free(r);
    ferry_blob_free(b);
    ferry_runtime_stats rs;
    ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
    ASSERT_EQ(rs.budget_used, 0);
    ferry_dataset_unref(sh);
    ferry_dataset_unref(g);
    rt_done(rt);
}

TEST(shuffle_over_prefetch_then_batch_resume_everywhere) {
    ferry_runtime *rt = rt_new();
    /* The input runs ahead on a thread (prefetch's anchors under shuffle's), and a batch above
     * it: save/restore at every position of the whole chain. */
    ferry_dataset *r, *p, *s, *b;
    ASSERT_OK(ferry_dataset_range(rt, 0, 90, 1, NULL, &r));
    ASSERT_OK(ferry_dataset_prefetch(r, 8, NULL, &p));
    ferry_shuffle_options o = {.seed = 4};
    ASSERT_OK(ferry_dataset_shuffle(p, 12, &o, &s));
    ASSERT_OK(ferry_dataset_batch(s, 4, NULL, &b));
    check_resume_everywhere(s, 3);
    check_resume_everywhere(b, 3);
    ferry_dataset_unref(b);
    ferry_dataset_unref(s);
    ferry_dataset_unref(p);
    ferry_dataset_unref(r);
    rt_done(rt);
}
