/*
 * test_rewrite.c - graph rewrites (core/rewrite.c): map -> batch runs as one map_and_batch stage.
 *
 * For each rewrite: the stream (values, per-element random draws, error codes, messages and
 * positions) is the same with and without it (ferry_iterator_options.no_rewrites), for thread
 * counts 1..4 and AUTOTUNE, batch sizes that do and do not divide the input, drop_remainder,
 * errors at the first, a middle and the last position, rows that do not stack, empty inputs;
 * a state saved at every position with the rewrite restores without it and the other way round;
 * the stats show which graph ran; pipelines the rule must leave alone are left alone.
 */
#include "stream_check.h"

typedef struct fail_set {
    int64_t fail[4];  /* positions whose call fails (-1: none) */
    int64_t shape[4]; /* positions whose output has 3 entries instead of 2 (rows do not stack) */
} fail_set;

static bool in_set(const int64_t *s, int64_t i) {
    for (int k = 0; k < 4; k++)
        if (s[k] == i) return true;
    return false;
}

/* i -> [i, random % 1000] (int64), or an error, or [i, r, 0]. */
static int feat(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    const fail_set *fs = user;
    int64_t i = *(const int64_t *)ferry_tensor_data(ferry_element_get(in, 0));
    ferry_element_free(in);
    if (in_set(fs->fail, i)) return ferry_context_fail(ctx, FERRY_EUSER, "element %lld is bad", (long long)i);
    int64_t dims[1] = {in_set(fs->shape, i) ? 3 : 2};
    ferry_tensor *t;
    int rc = ferry_tensor_create(ferry_context_runtime(ctx), FERRY_DTYPE_INT64, 1, dims, &t);
    if (rc) return rc;
    int64_t *p = ferry_tensor_mutable_data(t);
    p[0] = i;
    p[1] = (int64_t)(ferry_context_random(ctx) % 1000);
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out); /* takes t */
}

static const ferry_tensor_spec feat_spec = {FERRY_DTYPE_INT64, {1, {FERRY_UNKNOWN_DIM}}};

static ferry_dataset *mapped(ferry_runtime *rt, int64_t n, int threads, const fail_set *fs) {
    ferry_dataset *r, *m;
    ASSERT_OK(ferry_dataset_range(rt, 0, n, 1, NULL, &r));
    ferry_map_options mo = {.num_parallel_calls = threads, .num_outputs = 1, .output_specs = &feat_spec};
    ASSERT_OK(ferry_dataset_map(r, feat, (void *)fs, &mo, &m));
    ferry_dataset_unref(r);
    return m;
}

static ferry_dataset *map_batch(ferry_runtime *rt, int64_t n, int threads, int64_t bs, bool drop, const fail_set *fs) {
    ferry_dataset *m = mapped(rt, n, threads, fs), *b;
    ASSERT_OK(ferry_dataset_batch(m, bs, &(ferry_batch_options){.drop_remainder = drop}, &b));
    ferry_dataset_unref(m);
    return b;
}

static ferry_iterator *open_it(ferry_dataset *ds, bool rewrites) {
    ferry_iterator_options o = {.seed = 7, .no_rewrites = !rewrites};
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, &o, &it));
    return it;
}

/* Items with the error message appended, so that messages are compared too. */
static void collect_msgs(ferry_iterator *it, int64_t max, items *s) {
    for (int64_t i = 0; i < max; i++) {
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) {
            s->ended = true;
            return;
        }
        char buf[100], item[ITEM_MAX];
        render(buf, sizeof buf, rc, e);
        snprintf(item, sizeof item, "%s%s%.120s", buf, rc < 0 ? "|" : "", rc < 0 ? ferry_iterator_error(it) : "");
        items_push(s, item);
        ferry_element_free(e);
    }
}

static void assert_same_items(const items *a, const items *b, const char *what) {
    if (a->n != b->n) FAILF("%s: %zu positions with rewrites, %zu without", what, a->n, b->n);
    ASSERT_EQ(a->ended, b->ended);
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            FAILF("%s: position %zu is \"%s\" with rewrites and \"%s\" without", what, i, a->v[i], b->v[i]);
}

/* Whether a stage named `name` ran (has a stats record). */
static bool has_stage(ferry_iterator *it, const char *name) {
    ferry_stage_stats st[16];
    size_t n = 0;
    ASSERT_OK(ferry_iterator_stats(it, st, 16, &n));
    for (size_t i = 0; i < n && i < 16; i++)
        if (strcmp(st[i].name, name) == 0) return true;
    return false;
}

static void full_stream(ferry_dataset *ds, bool rewrites, items *s) {
    ferry_iterator *it = open_it(ds, rewrites);
    collect_msgs(it, 100000, s);
    ASSERT(s->ended);
    ferry_iterator_free(it);
}

/* Save at every position under one setting, restore under the other, compare with the
 * uninterrupted stream. */
static void check_cross_restore(ferry_dataset *ds, const items *full, bool save_rewrites) {
    for (size_t k = 0; k <= full->n; k++) {
        ferry_iterator *it = open_it(ds, save_rewrites);
        items pre = {0};
        collect_msgs(it, (int64_t)k, &pre);
        ASSERT_EQ(pre.n, k);
        ferry_blob *b;
        ASSERT_OK(ferry_iterator_save(it, &b));
        ferry_iterator_free(it);
        items_free(&pre);
        ferry_iterator_options o = {.seed = 7, .no_rewrites = save_rewrites};
        ferry_iterator *r;
        ASSERT_OK(ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), &o, &r));
        ferry_blob_free(b);
        items rest = {0};
        collect_msgs(r, 100000, &rest);
        ASSERT(rest.ended);
        ASSERT_EQ(k + rest.n, full->n);
        expect_same(full, k, &rest, save_rewrites ? "saved fused, restored unfused" : "saved unfused, restored fused",
                    k);
        items_free(&rest);
        ferry_iterator_free(r);
    }
}

static void check_pipeline(ferry_runtime *rt, int64_t n, int threads, int64_t bs, bool drop, const fail_set *fs,
                           bool cross) {
    ferry_dataset *ds = map_batch(rt, n, threads, bs, drop, fs);
    char what[128];
    snprintf(what, sizeof what, "range(%lld) -> map(%d) -> batch(%lld, drop %d)", (long long)n, threads, (long long)bs,
             (int)drop);
    items a = {0}, b = {0};
    full_stream(ds, true, &a);
    full_stream(ds, false, &b);
    assert_same_items(&a, &b, what);
    if (cross) {
        check_cross_restore(ds, &a, true);
        check_cross_restore(ds, &a, false);
    }
    items_free(&a);
    items_free(&b);
    ferry_dataset_unref(ds);
}

static const fail_set no_fail = {{-1, -1, -1, -1}, {-1, -1, -1, -1}};

TEST(map_and_batch_same_stream_as_written) {
    ferry_runtime *rt = rt_new();
    const int threads[] = {1, 2, 4, FERRY_AUTOTUNE};
    const int64_t sizes[] = {0, 1, 7, 64, 100};
    const int64_t batches[] = {1, 3, 8, 200};
    for (size_t t = 0; t < 4; t++)
        for (size_t s = 0; s < 5; s++)
            for (size_t b = 0; b < 4; b++)
                for (int drop = 0; drop < 2; drop++)
                    check_pipeline(rt, sizes[s], threads[t], batches[b], drop, &no_fail, false);
    rt_done(rt);
}

TEST(map_and_batch_errors_in_position) {
    ferry_runtime *rt = rt_new();
    const fail_set sets[] = {
        {{0, -1, -1, -1}, {-1, -1, -1, -1}},  /* the first position */
        {{99, -1, -1, -1}, {-1, -1, -1, -1}}, /* the last position (100 elements) */
        {{5, 6, 40, -1}, {-1, -1, -1, -1}},   /* the middle, two in a row */
        {{-1, -1, -1, -1}, {9, 63, -1, -1}},  /* rows that do not stack */
        {{17, -1, -1, -1}, {18, 0, -1, -1}},  /* both, and a bad row first */
    };
    const int threads[] = {1, 3, FERRY_AUTOTUNE};
    for (size_t f = 0; f < sizeof sets / sizeof *sets; f++)
        for (size_t t = 0; t < 3; t++)
            for (int drop = 0; drop < 2; drop++) {
                check_pipeline(rt, 100, threads[t], 8, drop, &sets[f], false);
                check_pipeline(rt, 100, threads[t], 7, drop, &sets[f], false);
            }
    rt_done(rt);
}

TEST(map_and_batch_state_restores_across_the_rewrite) {
    ferry_runtime *rt = rt_new();
    const fail_set fs = {{4, 22, -1, -1}, {11, -1, -1, -1}};
    check_pipeline(rt, 50, 2, 4, false, &fs, true);
    check_pipeline(rt, 50, 3, 8, true, &fs, true);
    check_pipeline(rt, 30, FERRY_AUTOTUNE, 7, false, &no_fail, true);
    check_pipeline(rt, 0, 2, 4, false, &no_fail, true);
    /* the generic checks (save at every position, save/restore chains, skip k) on the fused graph */
    ferry_dataset *ds = map_batch(rt, 45, 2, 4, false, &fs);
    check_stream(ds, 1000, 3);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(map_and_batch_stats_show_the_graph_that_ran) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *ds = map_batch(rt, 40, 2, 8, false, &no_fail);
    ferry_iterator *it = open_it(ds, true);
    items s = {0};
    collect_msgs(it, 1000, &s);
    ASSERT_EQ(s.n, 5);
    ASSERT(has_stage(it, "map_and_batch"));
    ASSERT(!has_stage(it, "map"));
    ASSERT(!has_stage(it, "batch"));
    ferry_stage_stats st[8];
    size_t n = 0;
    ASSERT_OK(ferry_iterator_stats(it, st, 8, &n));
    ASSERT_EQ(n, 2);                  /* map_and_batch <- range */
    ASSERT_EQ(st[0].elements_out, 5); /* batches, not rows */
    ASSERT_EQ(st[0].parallelism, 2);
    ASSERT(st[0].work_ns > 0);      /* the function calls, measured on the workers */
    ASSERT(st[0].assemble_ns >= 0); /* stacking rows, when whole batches were stacked */
    ferry_iterator_free(it);
    items_free(&s);
    it = open_it(ds, false);
    ASSERT(!has_stage(it, "map_and_batch"));
    ASSERT(has_stage(it, "map"));
    ASSERT(has_stage(it, "batch"));
    collect_msgs(it, 1000, &s);
    ASSERT_OK(ferry_iterator_stats(it, st, 8, &n));
    ASSERT_EQ(n, 3); /* batch <- map <- range */
    ASSERT(strcmp(st[0].name, "batch") == 0);
    ASSERT_EQ(st[0].work_ns, 0); /* an inline batch's own time is copying rows */
    ASSERT(st[0].assemble_ns >= 0);
    ASSERT_EQ(st[1].assemble_ns, 0);
    items_free(&s);
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

/* The rule leaves alone what it cannot fuse exactly: an inline map, relaxed order, a reorder
 * window, padded_batch. */
TEST(map_and_batch_only_where_it_applies) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *r, *m, *b;
    ASSERT_OK(ferry_dataset_range(rt, 0, 20, 1, NULL, &r));
    ferry_map_options cases[] = {
        {.num_parallel_calls = 0, .num_outputs = 1, .output_specs = &feat_spec},
        {.num_parallel_calls = 2, .relaxed_order = true, .num_outputs = 1, .output_specs = &feat_spec},
        {.num_parallel_calls = 2, .reorder_window = 16, .num_outputs = 1, .output_specs = &feat_spec},
    };
    for (size_t c = 0; c < 3; c++) {
        ASSERT_OK(ferry_dataset_map(r, feat, (void *)&no_fail, &cases[c], &m));
        ASSERT_OK(ferry_dataset_batch(m, 4, NULL, &b));
        ferry_iterator *it = open_it(b, true);
        ASSERT(!has_stage(it, "map_and_batch"));
        ASSERT(has_stage(it, "batch"));
        ferry_iterator_free(it);
        ferry_dataset_unref(b);
        ferry_dataset_unref(m);
    }
    ASSERT_OK(ferry_dataset_map(r, feat, (void *)&no_fail, &cases[1], &m));
    ferry_dataset_unref(m);
    ferry_map_options par = {.num_parallel_calls = 2, .num_outputs = 1, .output_specs = &feat_spec};
    ASSERT_OK(ferry_dataset_map(r, feat, (void *)&no_fail, &par, &m));
    ASSERT_OK(ferry_dataset_padded_batch(m, 4, NULL, &b));
    ferry_iterator *it = open_it(b, true);
    ASSERT(!has_stage(it, "map_and_batch"));
    ferry_iterator_free(it);
    ferry_dataset_unref(b);
    ferry_dataset_unref(m);
    ferry_dataset_unref(r);
    rt_done(rt);
}

/* Nested: the rewrite applies below repeat and prefetch (each epoch makes it again), and to a
 * map that another stage also reads (a DAG: zip of the batch and the batch's own map). */
static int inner_ds(ferry_context *ctx, const ferry_element *in, ferry_dataset **out, void *user) {
    (void)ctx;
    ferry_runtime *rt = user;
    int64_t k = *(const int64_t *)ferry_tensor_data(ferry_element_get(in, 0));
    ferry_dataset *m = mapped(rt, 10 + k, 2, &no_fail);
    int rc = ferry_dataset_batch(m, 3, NULL, out);
    ferry_dataset_unref(m);
    return rc;
}

TEST(map_and_batch_inside_other_stages) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *b = map_batch(rt, 23, 2, 4, false, &no_fail), *rep, *pf, *z, *m2, *b2;
    ASSERT_OK(ferry_dataset_repeat(b, 3, NULL, &rep));
    ASSERT_OK(ferry_dataset_prefetch(rep, 2, NULL, &pf));
    items a = {0}, c = {0};
    full_stream(pf, true, &a);
    full_stream(pf, false, &c);
    ASSERT_EQ(a.n, 18);
    assert_same_items(&a, &c, "batch inside repeat inside prefetch");
    ferry_iterator *it = open_it(pf, true);
    ASSERT(has_stage(it, "map_and_batch"));
    ferry_iterator_free(it);
    check_cross_restore(pf, &a, true);
    check_cross_restore(pf, &a, false);
    items_free(&a);
    items_free(&c);
    /* a DAG: zip(batch(map), batch(map)) over the same map node */
    m2 = mapped(rt, 16, 2, &no_fail);
    ASSERT_OK(ferry_dataset_batch(m2, 4, NULL, &b2));
    ferry_dataset *pair[2] = {b2, b2};
    ASSERT_OK(ferry_dataset_zip(2, pair, NULL, &z));
    a = (items){0};
    c = (items){0};
    full_stream(z, true, &a);
    full_stream(z, false, &c);
    ASSERT_EQ(a.n, 4);
    assert_same_items(&a, &c, "zip of one batch twice");
    items_free(&a);
    items_free(&c);
    /* interleave: every inner dataset is planned on its own */
    ferry_dataset *keys, *ilv;
    ASSERT_OK(ferry_dataset_range(rt, 0, 4, 1, NULL, &keys));
    ferry_interleave_options io = {.cycle_length = 2, .num_parallel_calls = 2};
    ASSERT_OK(ferry_dataset_interleave(keys, inner_ds, rt, &io, &ilv));
    a = (items){0};
    c = (items){0};
    full_stream(ilv, true, &a);
    full_stream(ilv, false, &c);
    ASSERT_EQ(a.n, 4 + 4 + 4 + 5);
    assert_same_items(&a, &c, "batch over map inside interleave");
    items_free(&a);
    items_free(&c);
    ferry_dataset_unref(ilv);
    ferry_dataset_unref(keys);
    ferry_dataset_unref(z);
    ferry_dataset_unref(b2);
    ferry_dataset_unref(m2);
    ferry_dataset_unref(pf);
    ferry_dataset_unref(rep);
    ferry_dataset_unref(b);
    rt_done(rt);
}
