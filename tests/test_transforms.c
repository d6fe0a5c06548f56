/*
 * test_transforms.c - the synchronous transformations: filter, take, skip, shard, repeat, zip,
 * concatenate, enumerate and ignore_errors. For each: its semantics against tf.data's, the edge
 * cases (empty input, zero and -1 counts, past the end, remainders), errors at the first, a
 * middle and the last position passing through in order, specs and cardinality, argument
 * checks, and save/restore at every position of small streams (check_stream).
 *
 * The stream checker and the test generator are in stream_check.h: each position renders as text ("3", "'ab'", "(1,[2,3])", "E" for FERRY_EUSER, "E:FERRY_ETYPE" for others).
 */
#include <stdarg.h>

#include "runner.h"

#include "stream_check.h"

/* ---- helpers ----------------------------------------------------------------------------------- */
static ferry_dataset *range_ds(ferry_runtime *rt, int64_t a, int64_t b) {
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_range(rt, a, b, 1, NULL, &ds));
    return ds;
}

static int64_t stage_dropped(ferry_iterator *it, const char *name) {
    ferry_stage_stats st[16];
    size_t n = 0;
    ASSERT_OK(ferry_iterator_stats(it, st, 16, &n));
    for (size_t i = 0; i < n && i < 16; i++)
        if (strcmp(st[i].name, name) == 0) return st[i].errors_dropped;
    FAILF("no stage named %s", name);
}

/* ---- filter ----------------------------------------------------------------------------------- */
typedef struct filt_cfg {
    int64_t fail_value; /* the predicate fails on this value */
    int bad_index, calls;
} filt_cfg;

static int keep_even(ferry_context *ctx, const ferry_element *e, bool *keep, void *user) {
    int64_t v = *(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0));
    filt_cfg *c = user;
    if (c) {
        c->calls++;
        if (ferry_context_index(ctx) != v) c->bad_index++; /* inputs below have value == position */
        if (v == c->fail_value) return ferry_context_fail(ctx, FERRY_EUSER, "bad value %lld", (long long)v);
    }
    *keep = v % 2 == 0;
    return FERRY_OK;
}

static int keep_none(ferry_context *ctx, const ferry_element *e, bool *keep, void *user) {
    (void)ctx, (void)e, (void)user;
    *keep = false;
    return FERRY_OK;
}

static int keep_random(ferry_context *ctx, const ferry_element *e, bool *keep, void *user) {
    (void)e, (void)user;
    *keep = ferry_context_uniform(ctx) < 0.5;
    return FERRY_OK;
}

TEST(filter_basic) {
    ferry_runtime *rt = rt_new();
    filt_cfg c = {.fail_value = -1};
    ferry_dataset *ds = range_ds(rt, 0, 10);
    CHAIN(ds, ferry_dataset_filter(ds, keep_even, &c, NULL, OUT));
    ASSERT(strcmp(ferry_dataset_name(ds), "filter") == 0);
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_UNKNOWN);
    expect_stream(ds, "0 2 4 6 8");
    check_stream(ds, 100, 0);
    ASSERT_EQ(c.bad_index, 0);
    ferry_dataset_unref(ds);
    ds = range_ds(rt, 0, 0);
    CHAIN(ds, ferry_dataset_filter(ds, keep_even, NULL, NULL, OUT));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 0);
    expect_stream(ds, "");
    ferry_dataset_unref(ds);
    ds = range_ds(rt, 0, 5000);
    CHAIN(ds, ferry_dataset_filter(ds, keep_none, NULL, NULL, OUT));
    expect_stream(ds, "");
    ferry_dataset *bad = (ferry_dataset *)1;
    ASSERT_EQ(ferry_dataset_filter(ds, NULL, NULL, NULL, &bad), FERRY_EINVAL);
    ASSERT(bad == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_dataset_filter: argument 'fn'");
    ASSERT_EQ(ferry_dataset_filter(NULL, keep_none, NULL, NULL, &bad), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'in'");
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(filter_errors_in_position) {
    ferry_runtime *rt = rt_new();
    gen_cfg g = {.n = 10, .fail = (1u << 0) | (1u << 5) | (1u << 9)};
    filt_cfg c = {.fail_value = 6};
    ferry_dataset *ds = gen_dataset(rt, &g, 10);
    CHAIN(ds, ferry_dataset_filter(ds, keep_even, &c, NULL, OUT));
    /* 0: input error, 1: dropped, 6: predicate error (its element dropped), 9: input error */
    expect_stream(ds, "E 2 4 E E 8 E");
    ferry_iterator *it = iter_new(ds, 0);
    ferry_element *e = NULL;
    int seen = 0;
    for (int rc; (rc = ferry_iterator_next(it, &e)) != FERRY_END;) {
        if (rc == FERRY_OK) ferry_element_free(e);
        else if (++seen == 3) {
            ASSERT_STR_CONTAINS(ferry_iterator_error(it), "filter");
            ASSERT_STR_CONTAINS(ferry_iterator_error(it), "position 6");
            ASSERT_STR_CONTAINS(ferry_iterator_error(it), "bad value 6");
        }
    }
    ferry_iterator_free(it);
    check_stream(ds, 100, 0);
    ASSERT_EQ(c.bad_index, 0);
    ASSERT_EQ(g.inits, g.finis);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(filter_random_is_reproducible) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *ds = range_ds(rt, 0, 40);
    CHAIN(ds, ferry_dataset_filter(ds, keep_random, NULL, NULL, OUT));
    items a = {0}, b = {0}, d = {0};
    ferry_iterator *it = iter_new(ds, 9);
    collect(it, 100, &a);
    ferry_iterator_free(it);
    it = iter_new(ds, 9);
    collect(it, 100, &b);
    ferry_iterator_free(it);
    it = iter_new(ds, 10);
    collect(it, 100, &d);
    ferry_iterator_free(it);
    ASSERT(a.n > 5 && a.n < 35);
    char *ja = join(&a), *jb = join(&b), *jd = join(&d);
    ASSERT(strcmp(ja, jb) == 0);
    ASSERT(strcmp(ja, jd) != 0);
    free(ja), free(jb), free(jd);
    items_free(&a), items_free(&b), items_free(&d);
    check_stream(ds, 100, 9);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

/* ---- take --------------------------------------------------------------------------------------- */
TEST(take_counts_and_cardinality) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *in = range_ds(rt, 0, 10), *ds;
    struct {
        int64_t count, card;
        const char *want;
    } cases[] = {{3, 3, "0 1 2"},
                 {0, 0, ""},
                 {FERRY_INFINITE, 10, "0 1 2 3 4 5 6 7 8 9"},
                 {20, 10, "0 1 2 3 4 5 6 7 8 9"},
                 {10, 10, "0 1 2 3 4 5 6 7 8 9"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ASSERT_OK(ferry_dataset_take(in, cases[i].count, NULL, &ds));
        ASSERT_EQ(ferry_dataset_cardinality(ds), cases[i].card);
        expect_stream(ds, cases[i].want);
        check_stream(ds, 100, 0);
        ferry_dataset_unref(ds);
    }
    ds = (ferry_dataset *)1;
    ASSERT_EQ(ferry_dataset_take(in, -1, NULL, &ds), FERRY_EINVAL);
    ASSERT(ds == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_dataset_take: argument 'count' is -1");
    ferry_dataset_unref(in);
    gen_cfg inf = {.n = -1}, unk = {.n = 3};
    in = gen_dataset(rt, &inf, FERRY_INFINITE);
    ASSERT_OK(ferry_dataset_take(in, 5, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 5);
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_take(in, FERRY_INFINITE, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_INFINITE);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    in = gen_dataset(rt, &unk, 0);
    ASSERT_OK(ferry_dataset_take(in, 5, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_UNKNOWN);
    expect_stream(ds, "0 1 2");
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(take_stops_pulling) {
    ferry_runtime *rt = rt_new();
    gen_cfg g = {.n = -1};
    ferry_dataset *ds = gen_dataset(rt, &g, FERRY_INFINITE);
    CHAIN(ds, ferry_dataset_take(ds, 3, NULL, OUT));
    expect_stream(ds, "0 1 2");
    ASSERT_EQ(g.nexts, 3); /* END after the third without asking the input */
    ferry_dataset_unref(ds);
    gen_cfg z = {.n = -1};
    ds = gen_dataset(rt, &z, FERRY_INFINITE);
    CHAIN(ds, ferry_dataset_take(ds, 0, NULL, OUT));
    expect_stream(ds, "");
    ASSERT_EQ(z.inits, 0);
    ASSERT_EQ(z.nexts, 0);
    ferry_dataset_unref(ds);
    ASSERT_EQ(g.inits, g.finis);
    rt_done(rt);
}

TEST(take_errors_in_position) {
    ferry_runtime *rt = rt_new();
    gen_cfg g = {.n = 10, .fail = (1u << 0) | (1u << 4) | (1u << 9)};
    ferry_dataset *in = gen_dataset(rt, &g, 10), *ds;
    ASSERT_OK(ferry_dataset_take(in, 10, NULL, &ds));
    expect_stream(ds, "E 1 2 3 E 5 6 7 8 E");
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_take(in, 5, NULL, &ds)); /* as tf.data: errors pass and do not count */
    ASSERT_EQ(ferry_dataset_cardinality(ds), 5);
    expect_stream(ds, "E 1 2 3 E 5 6");
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_take(in, 1, NULL, &ds)); /* an error before the first element */
    expect_stream(ds, "E 1");
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    ASSERT_EQ(g.inits, g.finis);
    rt_done(rt);
}

/* ---- skip --------------------------------------------------------------------------------------- */
TEST(skip_counts_and_cardinality) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *in = range_ds(rt, 0, 10), *ds;
    struct {
        int64_t count, card;
        const char *want;
    } cases[] = {{3, 7, "3 4 5 6 7 8 9"}, {0, 10, "0 1 2 3 4 5 6 7 8 9"}, {9, 1, "9"}, {10, 0, ""}, {20, 0, ""},
                 {FERRY_INFINITE, 0, ""}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ASSERT_OK(ferry_dataset_skip(in, cases[i].count, NULL, &ds));
        ASSERT_EQ(ferry_dataset_cardinality(ds), cases[i].card);
        expect_stream(ds, cases[i].want);
        check_stream(ds, 100, 0);
        ferry_dataset_unref(ds);
    }
    ds = (ferry_dataset *)1;
    ASSERT_EQ(ferry_dataset_skip(in, -3, NULL, &ds), FERRY_EINVAL);
    ASSERT(ds == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_dataset_skip: argument 'count' is -3");
    ferry_dataset_unref(in);
    gen_cfg inf = {.n = -1}, unk = {.n = 3};
    in = gen_dataset(rt, &inf, FERRY_INFINITE);
    ASSERT_OK(ferry_dataset_skip(in, 5, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_INFINITE);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    in = gen_dataset(rt, &unk, 0);
    ASSERT_OK(ferry_dataset_skip(in, 1, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_UNKNOWN);
    expect_stream(ds, "1 2");
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(skip_errors_in_position) {
    ferry_runtime *rt = rt_new();
    gen_cfg g = {.n = 10, .fail = (1u << 0) | (1u << 5) | (1u << 9)};
    ferry_dataset *in = gen_dataset(rt, &g, 10), *ds;
    /* As tf.data: errors met while skipping are handed out and do not count. */
    ASSERT_OK(ferry_dataset_skip(in, 3, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 7);
    expect_stream(ds, "E 4 E 6 7 8 E");
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_skip(in, 6, NULL, &ds)); /* errors at the start and in the middle of the skip */
    expect_stream(ds, "E E 8 E");
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_skip(in, FERRY_INFINITE, NULL, &ds)); /* all elements: only the errors are left */
    expect_stream(ds, "E E E");
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_skip(in, 0, NULL, &ds));
    expect_stream(ds, "E 1 2 3 4 E 6 7 8 E");
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    ASSERT_EQ(g.inits, g.finis);
    rt_done(rt);
}

/* ---- shard -------------------------------------------------------------------------------------- */
TEST(shard_uneven_counts_cover_input) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *in = range_ds(rt, 0, 10);
    const int64_t shard_counts[] = {1, 3, 4, 10, 11};
    for (size_t s = 0; s < sizeof shard_counts / sizeof shard_counts[0]; s++) {
        int64_t k = shard_counts[s];
        int seen[10] = {0};
        for (int64_t idx = 0; idx < k; idx++) {
            ferry_dataset *ds;
            ASSERT_OK(ferry_dataset_shard(in, k, idx, NULL, &ds));
            int64_t want = 10 / k + (idx < 10 % k ? 1 : 0); /* ceil for the first 10 % k shards */
            ASSERT_EQ(ferry_dataset_cardinality(ds), want);
            ferry_iterator *it = iter_new(ds, 0);
            ferry_element *e;
            int64_t got = 0;
            while (ferry_iterator_next(it, &e) == FERRY_OK) {
                int64_t v = *(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0));
                ASSERT_EQ(v % k, idx);
                seen[v]++;
                got++;
                ferry_element_free(e);
            }
            ferry_iterator_free(it);
            ASSERT_EQ(got, want);
            if (k == 3) check_stream(ds, 100, 0);
            ferry_dataset_unref(ds);
        }
        for (int v = 0; v < 10; v++) ASSERT_EQ(seen[v], 1); /* the union is the input, once */
    }
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_shard(in, 3, 1, NULL, &ds));
    expect_stream(ds, "1 4 7");
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(shard_argument_errors) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *in = range_ds(rt, 0, 10), *ds = (ferry_dataset *)1;
    ASSERT_EQ(ferry_dataset_shard(in, 0, 0, NULL, &ds), FERRY_EINVAL);
    ASSERT(ds == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_dataset_shard: argument 'num_shards' is 0");
    ASSERT_EQ(ferry_dataset_shard(in, 3, 3, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "argument 'index' is 3");
    ASSERT_STR_CONTAINS(ferry_last_error(), "[0, 3)");
    ASSERT_EQ(ferry_dataset_shard(in, 3, -1, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "argument 'index' is -1");
    ASSERT_EQ(ferry_dataset_shard(NULL, 3, 0, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'in'");
    ferry_dataset_unref(in);
    gen_cfg inf = {.n = -1};
    in = gen_dataset(rt, &inf, FERRY_INFINITE);
    ASSERT_OK(ferry_dataset_shard(in, 3, 2, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_INFINITE);
    check_stream(ds, 12, 0);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(shard_errors_in_position) {
    ferry_runtime *rt = rt_new();
    gen_cfg g = {.n = 10, .fail = (1u << 0) | (1u << 4) | (1u << 9)};
    ferry_dataset *in = gen_dataset(rt, &g, 10), *ds;
    const char *want[3] = {"E 3 6 E", "1 E 7", "2 5 8"};
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(ferry_dataset_shard(in, 3, i, NULL, &ds));
        ASSERT_EQ(ferry_dataset_cardinality(ds), i == 0 ? 4 : 3);
        expect_stream(ds, want[i]);
        check_stream(ds, 100, 0);
        ferry_dataset_unref(ds);
    }
    ferry_dataset_unref(in);
    ASSERT_EQ(g.inits, g.finis);
    rt_done(rt);
}

/* ---- repeat ------------------------------------------------------------------------------------- */
TEST(repeat_counts_and_cardinality) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *in = range_ds(rt, 0, 3), *ds;
    ASSERT_OK(ferry_dataset_repeat(in, 3, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 9);
    expect_stream(ds, "0 1 2 0 1 2 0 1 2");
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_repeat(in, 1, NULL, &ds));
    expect_stream(ds, "0 1 2");
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_repeat(in, 0, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 0);
    expect_stream(ds, "");
    check_stream(ds, 10, 0);
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_repeat(in, FERRY_INFINITE, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_INFINITE);
    check_stream(ds, 20, 0);
    CHAIN(ds, ferry_dataset_take(ds, 7, NULL, OUT));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 7);
    expect_stream(ds, "0 1 2 0 1 2 0");
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    ds = (ferry_dataset *)1;
    ASSERT_EQ(ferry_dataset_repeat(in, -1, NULL, &ds), FERRY_EINVAL);
    ASSERT(ds == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_dataset_repeat: argument 'count' is -1");
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(repeat_of_empty_input_ends) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *ds = range_ds(rt, 0, 0);
    CHAIN(ds, ferry_dataset_repeat(ds, FERRY_INFINITE, NULL, OUT));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 0);
    expect_stream(ds, "");
    check_stream(ds, 10, 0);
    ferry_dataset_unref(ds);
    /* An input whose emptiness is not known in advance: the first empty epoch ends it. */
    gen_cfg g = {.n = 0};
    ds = gen_dataset(rt, &g, 0);
    CHAIN(ds, ferry_dataset_repeat(ds, FERRY_INFINITE, NULL, OUT));
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_UNKNOWN);
    expect_stream(ds, "");
    ASSERT_EQ(g.inits, 1);
    ASSERT_EQ(g.finis, 1);
    check_stream(ds, 10, 0);
    ferry_dataset_unref(ds);
    /* repeat(0) never makes the input's iterator. */
    gen_cfg z = {.n = 3};
    ds = gen_dataset(rt, &z, 3);
    CHAIN(ds, ferry_dataset_repeat(ds, 0, NULL, OUT));
    expect_stream(ds, "");
    ASSERT_EQ(z.inits, 0);
    ferry_dataset_unref(ds);
    /* A filter that drops everything, repeated forever, also ends. */
    ds = range_ds(rt, 0, 50);
    CHAIN(ds, ferry_dataset_filter(ds, keep_none, NULL, NULL, OUT));
    CHAIN(ds, ferry_dataset_repeat(ds, FERRY_INFINITE, NULL, OUT));
    expect_stream(ds, "");
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(repeat_errors_and_epochs) {
    ferry_runtime *rt = rt_new();
    gen_cfg g = {.n = 4, .fail = (1u << 0) | (1u << 3)};
    ferry_dataset *in = gen_dataset(rt, &g, 4), *ds;
    ASSERT_OK(ferry_dataset_repeat(in, 2, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 8);
    expect_stream(ds, "E 1 2 E E 1 2 E");
    ASSERT_EQ(g.inits, 2); /* one state per epoch */
    ASSERT_EQ(g.finis, 2);
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_repeat(in, 3, NULL, &ds));
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    ASSERT_EQ(g.inits, g.finis);
    /* An epoch of errors only is not empty: repeat goes on. */
    gen_cfg e = {.n = 2, .fail = 3};
    ds = gen_dataset(rt, &e, 2);
    CHAIN(ds, ferry_dataset_repeat(ds, FERRY_INFINITE, NULL, OUT));
    CHAIN(ds, ferry_dataset_take(ds, 5, NULL, OUT)); /* errors do not count: no end, as in tf.data */
    ferry_iterator *it = iter_new(ds, 0);
    items s = {0};
    collect(it, 12, &s);
    ASSERT(!s.ended);
    char *got = join(&s);
    ASSERT(strcmp(got, "E E E E E E E E E E E E") == 0);
    free(got);
    items_free(&s);
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    ASSERT_EQ(e.inits, e.finis);
    rt_done(rt);
}

TEST(repeat_epochs_draw_differently) {
    ferry_runtime *rt = rt_new();
    gen_cfg g = {.n = 4, .kind = GEN_RANDOM};
    ferry_dataset *ds = gen_dataset(rt, &g, 4);
    CHAIN(ds, ferry_dataset_repeat(ds, 3, NULL, OUT));
    items a = {0}, b = {0};
    ferry_iterator *it = iter_new(ds, 5);
    collect(it, 100, &a);
    ferry_iterator_free(it);
    it = iter_new(ds, 5);
    collect(it, 100, &b);
    ferry_iterator_free(it);
    ASSERT_EQ(a.n, 12);
    for (size_t i = 0; i < 12; i++) ASSERT(strcmp(a.v[i], b.v[i]) == 0); /* reproducible */
    for (size_t i = 0; i < 4; i++) {
        ASSERT(strcmp(a.v[i], a.v[i + 4]) != 0); /* epoch 1 differs from epoch 0 */
        ASSERT(strcmp(a.v[i + 4], a.v[i + 8]) != 0);
    }
    items_free(&a), items_free(&b);
    check_stream(ds, 100, 5); /* a restore lands in the right epoch with the right draws */
    ferry_dataset_unref(ds);
    ASSERT_EQ(g.inits, g.finis);
    rt_done(rt);
}

/* ---- zip ---------------------------------------------------------------------------------------- */
TEST(zip_ends_with_shortest) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *in[3] = {range_ds(rt, 0, 5), range_ds(rt, 10, 13), NULL}, *ds;
    ASSERT_OK(ferry_dataset_zip(2, in, NULL, &ds));
    ASSERT(strcmp(ferry_dataset_name(ds), "zip") == 0);
    ASSERT_EQ(ferry_dataset_num_components(ds), 2);
    ASSERT_EQ(ferry_dataset_cardinality(ds), 3);
    expect_stream(ds, "(0,10) (1,11) (2,12)");
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_zip(1, in, NULL, &ds));
    expect_stream(ds, "0 1 2 3 4");
    ferry_dataset_unref(ds);
    ds = (ferry_dataset *)1;
    ASSERT_EQ(ferry_dataset_zip(0, in, NULL, &ds), FERRY_EINVAL);
    ASSERT(ds == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_dataset_zip: argument 'n' is 0");
    ASSERT_EQ(ferry_dataset_zip(3, in, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "inputs[2]");
    ASSERT_EQ(ferry_dataset_zip(2, NULL, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'inputs'");
    /* Cardinality: shortest known, infinite only if all are, unknown otherwise (but 0 wins). */
    gen_cfg inf = {.n = -1}, unk = {.n = 2};
    in[2] = gen_dataset(rt, &inf, FERRY_INFINITE);
    ferry_dataset *pair[2] = {in[2], in[0]};
    ASSERT_OK(ferry_dataset_zip(2, pair, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 5);
    expect_stream(ds, "(0,0) (1,1) (2,2) (3,3) (4,4)");
    ferry_dataset_unref(ds);
    pair[1] = in[2];
    ASSERT_OK(ferry_dataset_zip(2, pair, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_INFINITE);
    ferry_dataset_unref(ds);
    pair[1] = gen_dataset(rt, &unk, 0);
    ASSERT_OK(ferry_dataset_zip(2, pair, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_UNKNOWN);
    expect_stream(ds, "(0,0) (1,1)");
    ferry_dataset_unref(ds);
    ferry_dataset_unref(pair[1]);
    for (int i = 0; i < 3; i++) ferry_dataset_unref(in[i]);
    ASSERT_EQ(inf.inits, inf.finis);
    rt_done(rt);
}

TEST(zip_stops_pulling_after_end) {
    ferry_runtime *rt = rt_new();
    gen_cfg g = {.n = -1};
    ferry_dataset *in[2] = {range_ds(rt, 0, 2), gen_dataset(rt, &g, FERRY_INFINITE)}, *ds;
    ASSERT_OK(ferry_dataset_zip(2, in, NULL, &ds));
    expect_stream(ds, "(0,0) (1,1)");
    ASSERT_EQ(g.nexts, 2); /* the first input ended: the second is not pulled at position 2 */
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in[0]);
    ferry_dataset_unref(in[1]);
    rt_done(rt);
}

TEST(zip_errors_keep_inputs_aligned) {
    ferry_runtime *rt = rt_new();
    gen_cfg a = {.n = 6, .fail = (1u << 0) | (1u << 3)}, b = {.n = 6, .offset = 100, .fail = (1u << 3) | (1u << 5)};
    ferry_dataset *in[2] = {gen_dataset(rt, &a, 6), gen_dataset(rt, &b, 6)}, *ds;
    ASSERT_OK(ferry_dataset_zip(2, in, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 6);
    expect_stream(ds, "E (1,101) (2,102) E (4,104) E");
    ferry_iterator *it = iter_new(ds, 0);
    ferry_element *e = NULL;
    for (int i = 0; i < 3; i++) {
        ferry_iterator_next(it, &e);
        ferry_element_free(e);
        e = NULL;
    }
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_EUSER);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "boom at 3"); /* the first input's error */
    ferry_iterator_free(it);
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in[0]);
    ferry_dataset_unref(in[1]);
    ASSERT_EQ(a.inits, a.finis);
    ASSERT_EQ(b.inits, b.finis);
    rt_done(rt);
}

TEST(zip_bytes_and_tuples) {
    ferry_runtime *rt = rt_new();
    const char *strs[3] = {"a", "bb", ""};
    ferry_tensor *t = bytes_tensor(rt, 3, strs);
    ferry_dataset *s, *ds;
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 1, &t, NULL, &s));
    ferry_tensor_unref(t);
    gen_cfg g = {.n = 5, .kind = GEN_BYTES};
    ferry_dataset *inner[2] = {s, range_ds(rt, 0, 3)};
    ferry_dataset *pair;
    ASSERT_OK(ferry_dataset_zip(2, inner, NULL, &pair));
    ferry_dataset *in[2] = {pair, gen_dataset(rt, &g, 5)};
    ASSERT_OK(ferry_dataset_zip(2, in, NULL, &ds));
    ASSERT_EQ(ferry_dataset_num_components(ds), 3);
    ferry_tensor_spec spec;
    ASSERT_OK(ferry_dataset_component_spec(ds, 2, &spec));
    ASSERT_EQ(spec.dtype, FERRY_DTYPE_BYTES);
    expect_stream(ds, "('a',0,'s0') ('bb',1,'s1') ('',2,'s2')");
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in[1]);
    ferry_dataset_unref(pair);
    ferry_dataset_unref(inner[1]);
    ferry_dataset_unref(s);
    rt_done(rt);
}

/* ---- concatenate -------------------------------------------------------------------------------- */
TEST(concatenate_basic) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *a = range_ds(rt, 0, 3), *b = range_ds(rt, 10, 12), *e = range_ds(rt, 0, 0), *ds;
    ASSERT_OK(ferry_dataset_concatenate(a, b, NULL, &ds));
    ASSERT(strcmp(ferry_dataset_name(ds), "concatenate") == 0);
    ASSERT_EQ(ferry_dataset_cardinality(ds), 5);
    expect_stream(ds, "0 1 2 10 11");
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_concatenate(e, b, NULL, &ds));
    expect_stream(ds, "10 11");
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_concatenate(a, e, NULL, &ds));
    expect_stream(ds, "0 1 2");
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_concatenate(e, e, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 0);
    expect_stream(ds, "");
    check_stream(ds, 10, 0);
    ferry_dataset_unref(ds);
    gen_cfg inf = {.n = -1}, unk = {.n = 2};
    ferry_dataset *gi = gen_dataset(rt, &inf, FERRY_INFINITE), *gu = gen_dataset(rt, &unk, 0);
    ASSERT_OK(ferry_dataset_concatenate(a, gi, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_INFINITE);
    check_stream(ds, 12, 0);
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_concatenate(gu, a, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_UNKNOWN);
    expect_stream(ds, "0 1 0 1 2");
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(gi);
    ferry_dataset_unref(gu);
    ASSERT_EQ(ferry_dataset_concatenate(a, NULL, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_dataset_concatenate: argument 'b'");
    ASSERT_EQ(ferry_dataset_concatenate(NULL, a, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "argument 'a'");
    ferry_dataset_unref(a);
    ferry_dataset_unref(b);
    ferry_dataset_unref(e);
    ASSERT_EQ(inf.inits, inf.finis);
    rt_done(rt);
}

TEST(concatenate_specs) {
    ferry_runtime *rt = rt_new();
    const char *strs[2] = {"x", "y"};
    ferry_tensor *tb = bytes_tensor(rt, 2, strs);
    int64_t d42[2] = {4, 2}, d33[2] = {3, 3}, d32[2] = {2, 2};
    ferry_tensor *t42 = i64_tensor(rt, 2, d42, 0), *t33 = i64_tensor(rt, 2, d33, 100), *t32 = i64_tensor(rt, 2, d32, 0);
    ferry_dataset *sb, *s42, *s33, *r = range_ds(rt, 0, 2), *ds = (ferry_dataset *)1;
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 1, &tb, NULL, &sb));
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 1, &t42, NULL, &s42));
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 1, &t33, NULL, &s33));
    ASSERT_EQ(ferry_dataset_concatenate(r, sb, NULL, &ds), FERRY_ETYPE);
    ASSERT(ds == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "component 0");
    ASSERT_STR_CONTAINS(ferry_last_error(), "int64");
    ASSERT_STR_CONTAINS(ferry_last_error(), "bytes");
    ferry_dataset *zr[2] = {r, r}, *z;
    ASSERT_OK(ferry_dataset_zip(2, zr, NULL, &z));
    ASSERT_EQ(ferry_dataset_concatenate(r, z, NULL, &ds), FERRY_ETYPE);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'a' has 1 components but 'b' has 2");
    ferry_dataset_unref(z);
    /* [2] and [3] rows: dim unknown. */
    ASSERT_OK(ferry_dataset_concatenate(s42, s33, NULL, &ds));
    ferry_tensor_spec spec;
    ASSERT_OK(ferry_dataset_component_spec(ds, 0, &spec));
    ASSERT_EQ(spec.dtype, FERRY_DTYPE_INT64);
    ASSERT_EQ(spec.shape.rank, 1);
    ASSERT_EQ(spec.shape.dims[0], FERRY_UNKNOWN_DIM);
    ASSERT_EQ(ferry_dataset_cardinality(ds), 7);
    expect_stream(ds, "[0,1] [2,3] [4,5] [6,7] [100,101,102] [103,104,105] [106,107,108]");
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    /* Same shapes stay known; scalars and rows: rank unknown. */
    ferry_dataset *s32;
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 1, &t32, NULL, &s32));
    ASSERT_OK(ferry_dataset_concatenate(s42, s32, NULL, &ds));
    ASSERT_OK(ferry_dataset_component_spec(ds, 0, &spec));
    ASSERT_EQ(spec.shape.rank, 1);
    ASSERT_EQ(spec.shape.dims[0], 2);
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_concatenate(r, s42, NULL, &ds));
    ASSERT_OK(ferry_dataset_component_spec(ds, 0, &spec));
    ASSERT_EQ(spec.shape.rank, FERRY_UNKNOWN_RANK);
    expect_stream(ds, "0 1 [0,1] [2,3] [4,5] [6,7]");
    ferry_dataset_unref(ds);
    ferry_dataset_unref(s32);
    ferry_dataset_unref(sb);
    ferry_dataset_unref(s42);
    ferry_dataset_unref(s33);
    ferry_dataset_unref(r);
    ferry_tensor_unref(tb);
    ferry_tensor_unref(t42);
    ferry_tensor_unref(t33);
    ferry_tensor_unref(t32);
    rt_done(rt);
}

TEST(concatenate_errors_in_position) {
    ferry_runtime *rt = rt_new();
    gen_cfg a = {.n = 3, .fail = 1u << 0}, b = {.n = 3, .offset = 10, .fail = 1u << 2};
    ferry_dataset *ga = gen_dataset(rt, &a, 3), *gb = gen_dataset(rt, &b, 0), *ds;
    ASSERT_OK(ferry_dataset_concatenate(ga, gb, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_UNKNOWN);
    expect_stream(ds, "E 1 2 10 11 E");
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(ga);
    ferry_dataset_unref(gb);
    ASSERT_EQ(a.inits, a.finis);
    ASSERT_EQ(b.inits, b.finis);
    rt_done(rt);
}

/* ---- enumerate ---------------------------------------------------------------------------------- */
TEST(enumerate_counts_positions) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *ds = range_ds(rt, 5, 8);
    CHAIN(ds, ferry_dataset_enumerate(ds, &(ferry_enumerate_options){.start = 10}, OUT));
    ASSERT(strcmp(ferry_dataset_name(ds), "enumerate") == 0);
    ASSERT_EQ(ferry_dataset_num_components(ds), 2);
    ASSERT_EQ(ferry_dataset_cardinality(ds), 3);
    ferry_tensor_spec spec;
    ASSERT_OK(ferry_dataset_component_spec(ds, 0, &spec));
    ASSERT_EQ(spec.dtype, FERRY_DTYPE_INT64);
    ASSERT_EQ(spec.shape.rank, 0);
    expect_stream(ds, "(10,5) (11,6) (12,7)");
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    /* Errors use up their number. */
    gen_cfg g = {.n = 5, .fail = (1u << 0) | (1u << 2) | (1u << 4)};
    ds = gen_dataset(rt, &g, 5);
    CHAIN(ds, ferry_dataset_enumerate(ds, &(ferry_enumerate_options){.start = -2}, OUT));
    expect_stream(ds, "E (-1,1) E (1,3) E");
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    ASSERT_EQ(g.inits, g.finis);
    /* Tuples keep their components after the counter. */
    ferry_dataset *zr[2] = {range_ds(rt, 0, 2), range_ds(rt, 7, 9)};
    ASSERT_OK(ferry_dataset_zip(2, zr, NULL, &ds));
    CHAIN(ds, ferry_dataset_enumerate(ds, NULL, OUT));
    expect_stream(ds, "(0,0,7) (1,1,8)");
    ferry_dataset_unref(ds);
    ferry_dataset_unref(zr[0]);
    ferry_dataset_unref(zr[1]);
    ASSERT_EQ(ferry_dataset_enumerate(NULL, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_dataset_enumerate: argument 'in'");
    rt_done(rt);
}

/* ---- ignore_errors ------------------------------------------------------------------------------ */
TEST(ignore_errors_drops_and_counts) {
    ferry_runtime *rt = rt_new();
    gen_cfg g = {.n = 10, .fail = (1u << 0) | (1u << 5) | (1u << 9)};
    ferry_dataset *ds = gen_dataset(rt, &g, 10);
    CHAIN(ds, ferry_dataset_ignore_errors(ds, NULL, OUT));
    ASSERT(strcmp(ferry_dataset_name(ds), "ignore_errors") == 0);
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_UNKNOWN);
    expect_stream(ds, "1 2 3 4 6 7 8");
    ferry_iterator *it = iter_new(ds, 0);
    items s = {0};
    collect(it, 100, &s);
    ASSERT_EQ(s.n, 7);
    ASSERT_EQ(stage_dropped(it, "ignore_errors"), 3);
    ferry_iterator_free(it);
    items_free(&s);
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    ASSERT_EQ(g.inits, g.finis);
    /* Nothing but errors: an empty stream, every error counted. */
    gen_cfg all = {.n = 5, .fail = 0x1f};
    ds = gen_dataset(rt, &all, 5);
    CHAIN(ds, ferry_dataset_ignore_errors(ds, NULL, OUT));
    it = iter_new(ds, 0);
    ferry_element *e = NULL;
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
    ASSERT_EQ(stage_dropped(it, "ignore_errors"), 5);
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    /* Cardinality: 0 and infinite are kept. */
    ds = range_ds(rt, 0, 0);
    CHAIN(ds, ferry_dataset_ignore_errors(ds, NULL, OUT));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 0);
    CHAIN(ds, ferry_dataset_repeat(ds, FERRY_INFINITE, NULL, OUT));
    CHAIN(ds, ferry_dataset_ignore_errors(ds, NULL, OUT));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 0);
    ferry_dataset_unref(ds);
    ds = range_ds(rt, 0, 3);
    CHAIN(ds, ferry_dataset_repeat(ds, FERRY_INFINITE, NULL, OUT));
    CHAIN(ds, ferry_dataset_ignore_errors(ds, NULL, OUT));
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_INFINITE);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

/* The tf.data pattern map(parse).ignore_errors().batch(n): batch reuses one element variable
 * across its row loop, and the op below it must never see the row batch already freed when the
 * next position is an error (it once freed it a second time). Every kind of error source: a
 * map inline and on threads, a map behind prefetch, a filter predicate, a generator. */
static const int64_t bad_values[] = {0, 5, 9, 12};

static bool is_bad(int64_t v) {
    for (size_t i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++)
        if (bad_values[i] == v) return true;
    return false;
}

static int fail_bad_map(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)user;
    int64_t v = *(const int64_t *)ferry_tensor_data(ferry_element_get(in, 0));
    if (is_bad(v)) {
        ferry_element_free(in);
        return ferry_context_fail(ctx, FERRY_EUSER, "bad value %lld", (long long)v);
    }
    *out = in;
    return FERRY_OK;
}

static int fail_bad_pred(ferry_context *ctx, const ferry_element *e, bool *keep, void *user) {
    (void)user;
    int64_t v = *(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0));
    if (is_bad(v)) return ferry_context_fail(ctx, FERRY_EUSER, "bad value %lld", (long long)v);
    *keep = true;
    return FERRY_OK;
}

TEST(ignore_errors_under_batch) {
    ferry_runtime *rt = rt_new();
    const char *want = "[1,2,3] [4,6,7] [8,10,11] [13]";
    for (int source = 0; source < 6; source++) {
        ferry_dataset *ds;
        gen_cfg g = {.n = 14, .fail = (1u << 0) | (1u << 5) | (1u << 9) | (1u << 12)};
        if (source == 5) {
            ds = gen_dataset(rt, &g, 14);
        } else {
            ds = range_ds(rt, 0, 14);
            ferry_map_options mo = {.num_parallel_calls = source == 1 ? 2 : 0};
            if (source == 4) CHAIN(ds, ferry_dataset_filter(ds, fail_bad_pred, NULL, NULL, OUT));
            else CHAIN(ds, ferry_dataset_map(ds, fail_bad_map, NULL, &mo, OUT));
            if (source == 2) CHAIN(ds, ferry_dataset_prefetch(ds, 2, NULL, OUT));
            if (source == 3) CHAIN(ds, ferry_dataset_prefetch(ds, FERRY_AUTOTUNE, NULL, OUT));
        }
        CHAIN(ds, ferry_dataset_ignore_errors(ds, NULL, OUT));
        CHAIN(ds, ferry_dataset_batch(ds, 3, NULL, OUT));
        expect_stream(ds, want);
        check_stream(ds, 100, 0);
        /* drop_remainder, and errors at the first and the last position of a batch */
        CHAIN(ds, ferry_dataset_unbatch(ds, NULL, OUT));
        CHAIN(ds, ferry_dataset_batch(ds, 2, &(ferry_batch_options){.drop_remainder = true}, OUT));
        expect_stream(ds, "[1,2] [3,4] [6,7] [8,10] [11,13]");
        ferry_dataset_unref(ds);
    }
    rt_done(rt);
}

/* ---- pipelines of several ops ------------------------------------------------------------------- */
TEST(composed_pipeline_restores_everywhere) {
    ferry_runtime *rt = rt_new();
    gen_cfg g = {.n = 9, .fail = (1u << 1) | (1u << 7), .kind = GEN_RANDOM};
    ferry_dataset *ds = range_ds(rt, 0, 20);
    CHAIN(ds, ferry_dataset_shard(ds, 3, 1, NULL, OUT)); /* 1 4 7 10 13 16 19 */
    CHAIN(ds, ferry_dataset_repeat(ds, 2, NULL, OUT));
    ferry_dataset *zin[2] = {ds, gen_dataset(rt, &g, 9)}, *z;
    ASSERT_OK(ferry_dataset_zip(2, zin, NULL, &z));
    ferry_dataset_unref(zin[0]);
    ferry_dataset_unref(zin[1]);
    ds = z;
    CHAIN(ds, ferry_dataset_enumerate(ds, &(ferry_enumerate_options){.start = 100}, OUT));
    CHAIN(ds, ferry_dataset_skip(ds, 1, NULL, OUT));
    CHAIN(ds, ferry_dataset_take(ds, 7, NULL, OUT));
    ferry_dataset *tail = range_ds(rt, 0, 2);
    CHAIN(tail, ferry_dataset_enumerate(tail, &(ferry_enumerate_options){.start = -1}, OUT));
    ferry_dataset *zz[2] = {tail, range_ds(rt, 50, 53)};
    ferry_dataset *tail2;
    ASSERT_OK(ferry_dataset_zip(2, zz, NULL, &tail2));
    ferry_dataset_unref(zz[0]);
    ferry_dataset_unref(zz[1]);
    CHAIN(ds, ferry_dataset_concatenate(ds, tail2, NULL, OUT));
    ferry_dataset_unref(tail2);
    CHAIN(ds, ferry_dataset_repeat(ds, 2, NULL, OUT));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 18);
    check_stream(ds, 100, 77);
    CHAIN(ds, ferry_dataset_ignore_errors(ds, NULL, OUT));
    check_stream(ds, 100, 77);
    ferry_dataset_unref(ds);
    ASSERT_EQ(g.inits, g.finis);
    rt_done(rt);
}

/* A stage that take stops pulling counts every element it handed out by the end of the
 * iteration, before the iterator is freed (its counts were kept on the thread until then). */
TEST(take_leaves_its_input_counted) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_range(rt, 0, 1000, 1, NULL, &ds));
    CHAIN(ds, ferry_dataset_take(ds, 100, NULL, OUT));
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    ferry_element *e;
    int n = 0;
    while (ferry_iterator_next(it, &e) == FERRY_OK) ferry_element_free(e), n++;
    ASSERT_EQ(n, 100);
    ferry_stage_stats s[2];
    size_t cnt;
    ASSERT_OK(ferry_iterator_stats(it, s, 2, &cnt));
    ASSERT_EQ(cnt, 2);
    ASSERT_EQ(s[0].elements_out, 100); /* take */
    ASSERT_EQ(s[1].elements_out, 100); /* range */
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    rt_done(rt);
}
