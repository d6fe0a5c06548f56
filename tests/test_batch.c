/*
 * test_batch.c - batch, padded_batch and unbatch: remainders, bytes rows, shape errors, input
 * errors in every place, padding values and fixed padded shapes, unbatch as batch's inverse,
 * zero-row elements, specs and cardinality, and save/restore at every position.
 */
#include "runner.h"

#include "element_stream.h"

/* ---- helpers ------------------------------------------------------------------------------ */
static ferry_tensor *vec_i64(ferry_runtime *rt, int64_t len, int64_t base) {
    ferry_tensor *t;
    ASSERT_OK(ferry_tensor_create(rt, FERRY_DTYPE_INT64, 1, &len, &t));
    int64_t *d = ferry_tensor_mutable_data(t);
    for (int64_t j = 0; j < len; j++) d[j] = base + j;
    return t;
}

/* ---- batch -------------------------------------------------------------------------------- */
TEST(batch_remainder) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *r, *b, *bd;
    ASSERT_OK(ferry_dataset_range(rt, 0, 10, 1, NULL, &r));
    ASSERT_OK(ferry_dataset_batch(r, 3, NULL, &b));
    ASSERT_OK(ferry_dataset_batch(r, 3, &(ferry_batch_options){.drop_remainder = true}, &bd));
    ASSERT_EQ(ferry_dataset_cardinality(b), 4);
    ASSERT_EQ(ferry_dataset_cardinality(bd), 3);
    ferry_tensor_spec sp;
    ASSERT_OK(ferry_dataset_component_spec(b, 0, &sp));
    ASSERT_EQ(sp.dtype, FERRY_DTYPE_INT64);
    ASSERT_EQ(sp.shape.rank, 1);
    ASSERT_EQ(sp.shape.dims[0], FERRY_UNKNOWN_DIM);
    ASSERT_OK(ferry_dataset_component_spec(bd, 0, &sp));
    ASSERT_EQ(sp.shape.dims[0], 3);
    for (int drop = 0; drop <= 1; drop++) {
        ferry_iterator *it = iter(drop ? bd : b);
        for (int k = 0; k < (drop ? 3 : 4); k++) {
            ferry_element *e = next_ok(it);
            ferry_tensor *t = ferry_element_get(e, 0);
            int64_t want = k < 3 ? 3 : 1;
            ASSERT_EQ(ferry_tensor_rank(t), 1);
            ASSERT_EQ(ferry_tensor_dim(t, 0), want);
            ASSERT_EQ(ferry_tensor_nbytes(t), want * 8);
            for (int64_t j = 0; j < want; j++) ASSERT_EQ(i64_at(e, 0, j), 3 * k + j);
            ferry_element_free(e);
        }
        expect_end(it);
        ferry_iterator_free(it);
    }
    ferry_dataset_unref(b);
    ferry_dataset_unref(bd);
    ferry_dataset_unref(r);
    rt_done(rt);
}

TEST(batch_exact_multiple_and_huge_size) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *r, *b;
    ASSERT_OK(ferry_dataset_range(rt, 0, 9, 1, NULL, &r));
    ASSERT_OK(ferry_dataset_batch(r, 3, &(ferry_batch_options){.drop_remainder = true}, &b));
    ferry_iterator *it = iter(b);
    for (int k = 0; k < 3; k++) {
        ferry_element *e = next_ok(it);
        ASSERT_EQ(i64_at(e, 0, 2), 3 * k + 2);
        ferry_element_free(e);
    }
    expect_end(it);
    ferry_iterator_free(it);
    ferry_dataset_unref(b);
    /* A batch size far above the input: one batch with everything (the output grows). */
    ferry_dataset *big;
    ASSERT_OK(ferry_dataset_range(rt, 0, 100000, 1, NULL, &big));
    ASSERT_OK(ferry_dataset_batch(big, (int64_t)1 << 40, NULL, &b));
    ASSERT_EQ(ferry_dataset_cardinality(b), 1);
    it = iter(b);
    ferry_element *e = next_ok(it);
    ASSERT_EQ(ferry_tensor_dim(ferry_element_get(e, 0), 0), 100000);
    for (int64_t j = 0; j < 100000; j += 9999) ASSERT_EQ(i64_at(e, 0, j), j);
    ferry_element_free(e);
    expect_end(it);
    ferry_iterator_free(it);
    ferry_dataset_unref(b);
    ferry_dataset_unref(big);
    ferry_dataset_unref(r);
    rt_done(rt);
}

/* Element i: float32 [1024] (4 KiB) with values i + j / 2048. */
static int make_wide(ferry_runtime *rt, int64_t i, ferry_element **out) {
    int64_t n = 1024;
    ferry_tensor *t;
    int rc = ferry_tensor_create(rt, FERRY_DTYPE_FLOAT32, 1, &n, &t);
    if (rc) return rc;
    float *f = ferry_tensor_mutable_data(t);
    for (int j = 0; j < 1024; j++) f[j] = (float)i + (float)j / 2048.0f;
    return ferry_element_create(rt, 1, &t, out);
}

TEST(batch_output_grows_for_large_batches) {
    ferry_runtime *rt = rt_new();
    /* 2500 rows of 4 KiB: beyond the first allocation of a batch, so the output grows; the
     * full batch and the short one after it must both have the right shape and values. */
    src s = {.n = 3700, .make = make_wide};
    ferry_tensor_spec spec = {FERRY_DTYPE_FLOAT32, {.rank = 1, .dims = {1024}}};
    ferry_dataset *in = src_dataset(rt, &s, 1, &spec, 3700), *b;
    ASSERT_OK(ferry_dataset_batch(in, 2500, NULL, &b));
    ferry_iterator *it = iter(b);
    for (int k = 0; k < 2; k++) {
        ferry_element *e = next_ok(it);
        ferry_tensor *t = ferry_element_get(e, 0);
        int64_t rows = k == 0 ? 2500 : 1200;
        ASSERT_EQ(ferry_tensor_dim(t, 0), rows);
        ASSERT_EQ(ferry_tensor_dim(t, 1), 1024);
        ASSERT_EQ(ferry_tensor_num_entries(t), rows * 1024);
        ASSERT_EQ(ferry_tensor_nbytes(t), rows * 4096);
        const float *f = ferry_tensor_data(t);
        for (int64_t r = 0; r < rows; r += 97) {
            ASSERT(f[r * 1024] == (float)(2500 * k + r));
            ASSERT(f[r * 1024 + 1023] == (float)(2500 * k + r) + 1023.0f / 2048.0f);
        }
        ASSERT(f[(rows - 1) * 1024 + 5] == (float)(2500 * k + rows - 1) + 5.0f / 2048.0f);
        ferry_element_free(e);
    }
    expect_end(it);
    ferry_iterator_free(it);
    ferry_dataset_unref(b);
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(batch_empty_input_and_args) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *r, *b = NULL;
    ASSERT_OK(ferry_dataset_range(rt, 0, 0, 1, NULL, &r));
    ASSERT_OK(ferry_dataset_batch(r, 4, NULL, &b));
    ASSERT_EQ(ferry_dataset_cardinality(b), 0);
    ferry_iterator *it = iter(b);
    expect_end(it);
    ferry_iterator_free(it);
    ferry_dataset_unref(b);
    ASSERT_EQ(ferry_dataset_batch(r, 0, NULL, &b), FERRY_EINVAL);
    ASSERT(b == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "batch_size");
    ASSERT_EQ(ferry_dataset_batch(NULL, 2, NULL, &b), FERRY_EINVAL);
    ASSERT_EQ(ferry_dataset_batch(r, 2, NULL, NULL), FERRY_EINVAL);
    ASSERT_EQ(ferry_dataset_padded_batch(r, -1, NULL, &b), FERRY_EINVAL);
    ASSERT_EQ(ferry_dataset_unbatch(NULL, NULL, &b), FERRY_EINVAL);
    /* unbatch of a scalar spec is refused at construction. */
    ASSERT_EQ(ferry_dataset_unbatch(r, NULL, &b), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "component 0");
    ferry_dataset_unref(r);
    rt_done(rt);
}

TEST(batch_cardinality_propagates) {
    ferry_runtime *rt = rt_new();
    src s_inf = {.n = -1, .make = make_scalar}, s_unk = {.n = 5, .make = make_scalar};
    ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 0}};
    ferry_dataset *inf = src_dataset(rt, &s_inf, 1, &spec, FERRY_INFINITE);
    ferry_dataset *unk = src_dataset(rt, &s_unk, 1, &spec, 0);
    ferry_dataset *a, *b, *c;
    ASSERT_OK(ferry_dataset_batch(inf, 4, NULL, &a));
    ASSERT_OK(ferry_dataset_batch(unk, 4, &(ferry_batch_options){.drop_remainder = true}, &b));
    ASSERT_OK(ferry_dataset_unbatch(a, NULL, &c));
    ASSERT_EQ(ferry_dataset_cardinality(a), FERRY_INFINITE);
    ASSERT_EQ(ferry_dataset_cardinality(b), FERRY_UNKNOWN);
    ASSERT_EQ(ferry_dataset_cardinality(c), FERRY_INFINITE);
    ferry_iterator *it = iter(b);
    ferry_element *e = next_ok(it);
    ASSERT_EQ(i64_at(e, 0, 3), 3);
    ferry_element_free(e);
    expect_end(it); /* the remainder of 1 is dropped */
    ferry_iterator_free(it);
    ferry_dataset_unref(a);
    ferry_dataset_unref(b);
    ferry_dataset_unref(c);
    ferry_dataset_unref(inf);
    ferry_dataset_unref(unk);
    rt_done(rt);
}

/* Element i: (int64 scalar i, bytes vector of i % 3 strings "i.j", float32 [2] {i, -i}). */
static int make_mixed(ferry_runtime *rt, int64_t i, ferry_element **out) {
    ferry_tensor *t[3];
    ASSERT_OK(ferry_tensor_scalar_i64(rt, i, &t[0]));
    char buf[3][48];
    const char *strs[3];
    int64_t n = i % 3;
    for (int j = 0; j < n; j++) {
        snprintf(buf[j], sizeof buf[j], "%lld.%d", (long long)i, j);
        strs[j] = buf[j];
    }
    t[1] = str_tensor(rt, 1, &n, strs);
    int64_t two = 2;
    ASSERT_OK(ferry_tensor_create(rt, FERRY_DTYPE_FLOAT32, 1, &two, &t[2]));
    float *f = ferry_tensor_mutable_data(t[2]);
    f[0] = (float)i;
    f[1] = (float)-i;
    return ferry_element_create(rt, 3, t, out);
}

/* Element i: bytes scalar "s<i>" repeated i times (so lengths differ). */
static int make_str(ferry_runtime *rt, int64_t i, ferry_element **out) {
    char buf[64];
    int k = 0;
    for (int64_t j = 0; j < i && k < 50; j++) k += snprintf(buf + k, sizeof buf - (size_t)k, "s%lld", (long long)i);
    buf[k] = 0;
    const char *strs[1] = {buf};
    ferry_tensor *t = str_tensor(rt, 0, NULL, strs);
    return ferry_element_create(rt, 1, &t, out);
}

TEST(batch_bytes_rows) {
    ferry_runtime *rt = rt_new();
    ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_BYTES, .shape = {.rank = 0}};
    src s = {.n = 7, .make = make_str};
    ferry_dataset *in = src_dataset(rt, &s, 1, &spec, 7), *b;
    ASSERT_OK(ferry_dataset_batch(in, 4, NULL, &b));
    ferry_iterator *it = iter(b);
    for (int k = 0; k < 2; k++) {
        ferry_element *e = next_ok(it);
        ferry_tensor *t = ferry_element_get(e, 0);
        ASSERT_EQ(ferry_tensor_dtype(t), FERRY_DTYPE_BYTES);
        int64_t rows = k == 0 ? 4 : 3;
        ASSERT_EQ(ferry_tensor_dim(t, 0), rows);
        for (int64_t j = 0; j < rows; j++) {
            ferry_element *want;
            ASSERT_OK(make_str(rt, 4 * k + j, &want));
            const uint8_t *p;
            size_t len;
            ASSERT_OK(ferry_tensor_bytes_get(ferry_element_get(want, 0), 0, &p, &len));
            char w[64];
            memcpy(w, p, len);
            w[len] = 0;
            assert_str(e, 0, j, w);
            ferry_element_free(want);
        }
        ferry_element_free(e);
    }
    expect_end(it);
    ferry_iterator_free(it);
    ferry_dataset_unref(b);
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(batch_bytes_vectors_and_mixed_components) {
    ferry_runtime *rt = rt_new();
    ferry_tensor_spec specs[3] = {{FERRY_DTYPE_INT64, {.rank = 0}},
                                  {FERRY_DTYPE_BYTES, {.rank = 1, .dims = {FERRY_UNKNOWN_DIM}}},
                                  {FERRY_DTYPE_FLOAT32, {.rank = 1, .dims = {2}}}};
    /* Positions 3, 4, 5 have 0, 1, 2 strings: batch(1) keeps them; batch(3) mixes lengths. */
    src s = {.n = 9, .make = make_mixed};
    ferry_dataset *in = src_dataset(rt, &s, 3, specs, 9), *b;
    ASSERT_OK(ferry_dataset_batch(in, 1, NULL, &b));
    ferry_tensor_spec sp;
    ASSERT_OK(ferry_dataset_component_spec(b, 2, &sp));
    ASSERT_EQ(sp.shape.rank, 2);
    ASSERT_EQ(sp.shape.dims[1], 2);
    ferry_iterator *it = iter(b);
    for (int64_t i = 0; i < 9; i++) {
        ferry_element *e = next_ok(it);
        ASSERT_EQ(i64_at(e, 0, 0), i);
        ferry_tensor *t = ferry_element_get(e, 1);
        ASSERT_EQ(ferry_tensor_rank(t), 2);
        ASSERT_EQ(ferry_tensor_dim(t, 1), i % 3);
        for (int j = 0; j < i % 3; j++) {
            char w[48];
            snprintf(w, sizeof w, "%lld.%d", (long long)i, j);
            assert_str(e, 1, j, w);
        }
        const float *f = ferry_tensor_data(ferry_element_get(e, 2));
        ASSERT_EQ((int)f[0], i);
        ASSERT_EQ((int)f[1], -i);
        ferry_element_free(e);
    }
    expect_end(it);
    ferry_iterator_free(it);
    ferry_dataset_unref(b);
    /* Rows of 0, 1, 2 strings do not stack: every batch of 3 is FERRY_ETYPE naming component 1. */
    ASSERT_OK(ferry_dataset_batch(in, 3, NULL, &b));
    it = iter(b);
    for (int k = 0; k < 3; k++) {
        ferry_element *e = NULL;
        ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_ETYPE);
        ASSERT_STR_CONTAINS(ferry_iterator_error(it), "component 1");
        ASSERT_STR_CONTAINS(ferry_iterator_error(it), "[0]");
        ASSERT_STR_CONTAINS(ferry_iterator_error(it), "[1]");
    }
    expect_end(it);
    ferry_iterator_free(it);
    ferry_dataset_unref(b);
    ferry_dataset_unref(in);
    rt_done(rt);
}

/* Element i: int64 vector of length len(i) with values 10 i + j. */
static const int64_t shape_lens[] = {2, 2, 3, 2, 2, 2, 1, 1};
static int make_lens(ferry_runtime *rt, int64_t i, ferry_element **out) {
    ferry_tensor *t = vec_i64(rt, shape_lens[i % 8], 10 * i);
    return ferry_element_create(rt, 1, &t, out);
}

TEST(batch_shape_mismatch_is_etype_in_position) {
    ferry_runtime *rt = rt_new();
    ferry_tensor_spec spec = {FERRY_DTYPE_INT64, {.rank = 1, .dims = {FERRY_UNKNOWN_DIM}}};
    src s = {.n = 8, .make = make_lens};
    ferry_dataset *in = src_dataset(rt, &s, 1, &spec, 8), *b;
    ASSERT_OK(ferry_dataset_batch(in, 3, NULL, &b));
    ferry_iterator *it = iter(b);
    ferry_element *e = NULL;
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_ETYPE); /* rows of [2], [2], [3] */
    ASSERT(e == NULL);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "batch: component 0");
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "[2] in row 0");
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "[3] in row 2");
    e = next_ok(it); /* the whole failed batch was consumed: positions 3, 4, 5 */
    ASSERT_EQ(i64_at(e, 0, 0), 30);
    ASSERT_EQ(i64_at(e, 0, 5), 51);
    ferry_element_free(e);
    e = next_ok(it); /* 6, 7: a short last batch of [1] rows */
    ASSERT_EQ(ferry_tensor_dim(ferry_element_get(e, 0), 0), 2);
    ASSERT_EQ(i64_at(e, 0, 1), 70);
    ferry_element_free(e);
    expect_end(it);
    ferry_iterator_free(it);
    ferry_dataset_unref(b);
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(batch_input_errors_replace_the_batch) {
    ferry_runtime *rt = rt_new();
    ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 0}};
    /* Errors at the first, a middle and the last position. */
    src s = {.n = 10, .make = make_scalar, .errors = {0, 4, 9}, .nerrors = 3};
    ferry_dataset *in = src_dataset(rt, &s, 1, &spec, 10), *b;
    ASSERT_OK(ferry_dataset_batch(in, 3, NULL, &b));
    ferry_iterator *it = iter(b);
    ferry_element *e = NULL;
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_EUSER);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "bad element 0");
    e = next_ok(it);
    ASSERT_EQ(i64_at(e, 0, 0), 1);
    ASSERT_EQ(i64_at(e, 0, 2), 3);
    ferry_element_free(e);
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_EUSER); /* position 4 */
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "bad element 4");
    e = next_ok(it);
    ASSERT_EQ(i64_at(e, 0, 0), 5);
    ferry_element_free(e);
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_EUSER); /* 8 collected, then 9 fails: 8 is dropped */
    expect_end(it);
    ferry_iterator_free(it);
    check_resume_everywhere(b, 0);
    ferry_dataset_unref(b);
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(batch_resume_everywhere) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *r, *b;
    ASSERT_OK(ferry_dataset_range(rt, 0, 23, 1, NULL, &r));
    for (int drop = 0; drop <= 1; drop++) {
        ASSERT_OK(ferry_dataset_batch(r, 5, &(ferry_batch_options){.drop_remainder = drop}, &b));
        check_resume_everywhere(b, 0);
        ferry_dataset_unref(b);
    }
    ferry_tensor_spec specs[3] = {{FERRY_DTYPE_INT64, {.rank = 0}},
                                  {FERRY_DTYPE_BYTES, {.rank = 1, .dims = {FERRY_UNKNOWN_DIM}}},
                                  {FERRY_DTYPE_FLOAT32, {.rank = 1, .dims = {2}}}};
    src s = {.n = 30, .make = make_mixed, .errors = {7, 12}, .nerrors = 2};
    ferry_dataset *in = src_dataset(rt, &s, 3, specs, 30);
    ASSERT_OK(ferry_dataset_batch(in, 3, NULL, &b)); /* shape errors and input errors mixed */
    check_resume_everywhere(b, 0);
    ferry_dataset_unref(b);
    ferry_dataset_unref(in);
    ferry_dataset_unref(r);
    rt_done(rt);
}

/* ---- map_and_batch fusion ----------------------------------------------------------------- */
/* batch right over a parallel map runs fused (the map's workers stack whole batches). The output,
 * the errors, their positions and the saved state must be those of the unfused pipeline (inline
 * map): checked for batch sizes that do and do not divide the input, drop_remainder, function
 * errors at the first, middle and last positions (which shift later batch boundaries), rows that
 * do not stack, and save/restore at every position, within and across the two modes. */
typedef struct fuse_case {
    int64_t errors[6], mismatch[4];
    int nerrors, nmismatch;
} fuse_case;

/* Element i of the input (range): (int64 10 i, bytes "s<i>" + a per-element random draw,
 * float32 vector of 2 values, or 3 at a mismatch position); errors fail with EUSER. */
static int fuse_fn(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    const fuse_case *fc = user;
    int64_t i = *(const int64_t *)ferry_tensor_data(ferry_element_get(in, 0));
    ferry_element_free(in);
    for (int k = 0; k < fc->nerrors; k++)
        if (fc->errors[k] == i) return ferry_context_fail(ctx, FERRY_EUSER, "fn failed at %lld", (long long)i);
    ferry_runtime *rt = ferry_context_runtime(ctx);
    ferry_tensor *t[3];
    ASSERT_OK(ferry_tensor_scalar_i64(rt, 10 * i, &t[0]));
    char buf[64];
    snprintf(buf, sizeof buf, "s%lld/%llu", (long long)i, (unsigned long long)(ferry_context_random(ctx) % 1000));
    const char *strs[1] = {buf};
    t[1] = str_tensor(rt, 0, NULL, strs);
    int64_t len = 2;
    for (int k = 0; k < fc->nmismatch; k++)
        if (fc->mismatch[k] == i) len = 3;
    ASSERT_OK(ferry_tensor_create(rt, FERRY_DTYPE_FLOAT32, 1, &len, &t[2]));
    float *f = ferry_tensor_mutable_data(t[2]);
    for (int64_t j = 0; j < len; j++) f[j] = (float)(i * 100 + j);
    return ferry_element_create(rt, 3, t, out);
}

static ferry_dataset *fuse_pipeline(ferry_runtime *rt, int64_t n, fuse_case *fc, int threads, int64_t b, bool drop) {
    static const ferry_tensor_spec specs[3] = {{FERRY_DTYPE_INT64, {.rank = 0}},
                                               {FERRY_DTYPE_BYTES, {.rank = 0}},
                                               {FERRY_DTYPE_FLOAT32, {.rank = 1, .dims = {FERRY_UNKNOWN_DIM}}}};
    ferry_dataset *r, *m, *out;
    ASSERT_OK(ferry_dataset_range(rt, 0, n, 1, NULL, &r));
    ferry_map_options mo = {.num_parallel_calls = threads, .num_outputs = 3, .output_specs = specs};
    ASSERT_OK(ferry_dataset_map(r, fuse_fn, fc, &mo, &m));
    ASSERT_OK(ferry_dataset_batch(m, b, &(ferry_batch_options){.drop_remainder = drop}, &out));
    ferry_dataset_unref(m);
    ferry_dataset_unref(r);
    return out;
}

/* Saves `from` after every position and restores the state into `into` (same graph, other
 * map thread count): the tail must be the reference's. */
static void check_cross_restore(ferry_dataset *from, ferry_dataset *into, const stream *ref) {
    static stream got;
    for (int p = 0; p <= ref->n; p++) {
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(from, NULL, &it));
        for (int i = 0; i < p; i++) {
            ferry_element *e = NULL;
            ASSERT_EQ(ferry_iterator_next(it, &e), ref->code[i]);
            ferry_element_free(e);
        }
        ferry_blob *b;
        ASSERT_OK(ferry_iterator_save(it, &b));
        ferry_iterator_free(it);
        ferry_iterator *r;
        if (ferry_iterator_restore(into, ferry_blob_data(b), ferry_blob_size(b), NULL, &r) != FERRY_OK)
            FAILF("cross restore at %d: %s", p, ferry_last_error());
        drain(r, &got);
        assert_tail(ref, p, &got, "cross-restored");
        ferry_iterator_free(r);
        ferry_blob_free(b);
    }
}

TEST(batch_fused_with_parallel_map_matches_unfused) {
    ferry_runtime *rt = rt_new();
    const int64_t n = 41;
    fuse_case cases[] = {
        {.nerrors = 0},
        {.errors = {0}, .nerrors = 1},
        {.errors = {17}, .nerrors = 1},
        {.errors = {40}, .nerrors = 1},
        {.errors = {3, 4, 11, 25, 26, 39}, .nerrors = 6},
        {.mismatch = {6, 30}, .nmismatch = 2},
        {.errors = {9, 22}, .nerrors = 2, .mismatch = {14, 15}, .nmismatch = 2},
    };
    static const int64_t sizes[] = {1, 3, 5, 8, 41, 64};
    static stream ref, got;
    int combos = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            for (int drop = 0; drop <= 1; drop++) {
                ferry_dataset *unfused = fuse_pipeline(rt, n, &cases[c], 0, sizes[k], drop);
                ferry_iterator *it;
                ASSERT_OK(ferry_iterator_create(unfused, NULL, &it));
                drain(it, &ref);
                ferry_iterator_free(it);
                for (int threads = 1; threads <= 4; threads *= 2) {
                    ferry_dataset *fused = fuse_pipeline(rt, n, &cases[c], threads, sizes[k], drop);
                    ASSERT_OK(ferry_iterator_create(fused, NULL, &it));
                    drain(it, &got);
                    ferry_iterator_free(it);
                    assert_tail(&ref, 0, &got, "fused");
                    if (threads == 2 && (sizes[k] == 3 || sizes[k] == 8)) {
                        check_resume_everywhere(fused, 0);
                        check_cross_restore(fused, unfused, &ref);
                        check_cross_restore(unfused, fused, &ref);
                    }
                    ferry_dataset_unref(fused);
                    combos++;
                }
                ferry_dataset_unref(unfused);
            }
        }
    }
    printf("  %d fused pipelines equal to their unfused reference\n", combos);
    rt_done(rt);
}

/* ---- padded_batch ------------------------------------------------------------------------- */
/* Element i: (int64 vector of i % 4 values 10 i + j, bytes vector of i % 3 strings "i.j"). */
static int make_ragged(ferry_runtime *rt, int64_t i, ferry_element **out) {
    ferry_tensor *t[2];
    t[0] = vec_i64(rt, i % 4, 10 * i);
    char buf[3][48];
    const char *strs[3];
    int64_t n = i % 3;
    for (int j = 0; j < n; j++) {
        snprintf(buf[j], sizeof buf[j], "%lld.%d", (long long)i, j);
        strs[j] = buf[j];
    }
    t[1] = str_tensor(rt, 1, &n, strs);
    return ferry_element_create(rt, 2, t, out);
}

static const ferry_tensor_spec ragged_specs[2] = {{FERRY_DTYPE_INT64, {.rank = 1, .dims = {FERRY_UNKNOWN_DIM}}},
                                                  {FERRY_DTYPE_BYTES, {.rank = 1, .dims = {FERRY_UNKNOWN_DIM}}}};

TEST(padded_batch_pads_to_longest) {
    ferry_runtime *rt = rt_new();
    src s = {.n = 8, .make = make_ragged};
    ferry_dataset *in = src_dataset(rt, &s, 2, ragged_specs, 8), *b;
    ferry_tensor *pv[2];
    ASSERT_OK(ferry_tensor_scalar_i64(rt, -1, &pv[0]));
    const char *pad[1] = {"<pad>"};
    pv[1] = str_tensor(rt, 0, NULL, pad);
    ferry_padded_batch_options o = {.padding_values = pv};
    ASSERT_OK(ferry_dataset_padded_batch(in, 3, &o, &b));
    ferry_tensor_unref(pv[0]); /* the dataset keeps its own references */
    ferry_tensor_unref(pv[1]);
    ASSERT_EQ(ferry_dataset_cardinality(b), 3);
    ferry_tensor_spec sp;
    ASSERT_OK(ferry_dataset_component_spec(b, 0, &sp));
    ASSERT_EQ(sp.shape.rank, 2);
    ASSERT_EQ(sp.shape.dims[0], FERRY_UNKNOWN_DIM);
    ASSERT_EQ(sp.shape.dims[1], FERRY_UNKNOWN_DIM);
    ferry_iterator *it = iter(b);
    for (int k = 0; k < 3; k++) {
        ferry_element *e = next_ok(it);
        int64_t rows = k < 2 ? 3 : 2;
        int64_t w0 = 0, w1 = 0;
        for (int64_t r = 0; r < rows; r++) {
            int64_t i = 3 * k + r;
            if (i % 4 > w0) w0 = i % 4;
            if (i % 3 > w1) w1 = i % 3;
        }
        ferry_tensor *t0 = ferry_element_get(e, 0), *t1 = ferry_element_get(e, 1);
        ASSERT_EQ(ferry_tensor_dim(t0, 0), rows);
        ASSERT_EQ(ferry_tensor_dim(t0, 1), w0);
        ASSERT_EQ(ferry_tensor_dim(t1, 0), rows);
        ASSERT_EQ(ferry_tensor_dim(t1, 1), w1);
        for (int64_t r = 0; r < rows; r++) {
            int64_t i = 3 * k + r;
            for (int64_t j = 0; j < w0; j++) ASSERT_EQ(i64_at(e, 0, r * w0 + j), j < i % 4 ? 10 * i + j : -1);
            for (int64_t j = 0; j < w1; j++) {
                char w[48];
                snprintf(w, sizeof w, "%lld.%lld", (long long)i, (long long)j);
                assert_str(e, 1, r * w1 + j, j < i % 3 ? w : "<pad>");
            }
        }
        ferry_element_free(e);
    }
    expect_end(it);
    ferry_iterator_free(it);
    ferry_dataset_unref(b);
    /* Default padding: zeros and empty strings. */
    ASSERT_OK(ferry_dataset_padded_batch(in, 4, &(ferry_padded_batch_options){.drop_remainder = true}, &b));
    ASSERT_EQ(ferry_dataset_cardinality(b), 2);
    ASSERT_OK(ferry_dataset_component_spec(b, 1, &sp));
    ASSERT_EQ(sp.shape.dims[0], 4);
    it = iter(b);
    ferry_element *e = next_ok(it); /* rows 0..3: lengths 0,1,2,3 and 0,1,2,0 strings */
    ASSERT_EQ(ferry_tensor_dim(ferry_element_get(e, 0), 1), 3);
    int64_t want[12] = {0, 0, 0, 10, 0, 0, 20, 21, 0, 30, 31, 32};
    for (int j = 0; j < 12; j++) ASSERT_EQ(i64_at(e, 0, j), want[j]);
    const char *wants[8] = {"", "", "1.0", "", "2.0", "2.1", "", ""};
    for (int j = 0; j < 8; j++) assert_str(e, 1, j, wants[j]);
    ferry_element_free(e);
    ferry_element_free(next_ok(it));
    expect_end(it);
    ferry_iterator_free(it);
    ferry_dataset_unref(b);
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(padded_batch_fixed_shapes) {
    ferry_runtime *rt = rt_new();
    src s = {.n = 8, .make = make_ragged};
    ferry_dataset *in = src_dataset(rt, &s, 2, ragged_specs, 8), *b;
    ferry_shape ps[2] = {{.rank = 1, .dims = {2}}, {.rank = 1, .dims = {FERRY_UNKNOWN_DIM}}};
    ferry_padded_batch_options o = {.padded_shapes = ps};
    ASSERT_OK(ferry_dataset_padded_batch(in, 2, &o, &b));
    ferry_tensor_spec sp;
    ASSERT_OK(ferry_dataset_component_spec(b, 0, &sp));
    ASSERT_EQ(sp.shape.dims[1], 2);
    ferry_iterator *it = iter(b);
    ferry_element *e = next_ok(it); /* rows 0, 1: lengths 0, 1 padded to 2 */
    ASSERT_EQ(ferry_tensor_dim(ferry_element_get(e, 0), 1), 2);
    int64_t want[4] = {0, 0, 10, 0};
    for (int j = 0; j < 4; j++) ASSERT_EQ(i64_at(e, 0, j), want[j]);
    ASSERT_EQ(ferry_tensor_dim(ferry_element_get(e, 1), 1), 1);
    ferry_element_free(e);
    /* Rows 2, 3: row 3 has 3 values > 2: FERRY_ETYPE in position, naming the component. */
    e = NULL;
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_ETYPE);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "component 0");
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "[3] in row 1");
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "padded shape [2]");
    e = next_ok(it); /* rows 4, 5 go on */
    ASSERT_EQ(i64_at(e, 0, 2), 50);
    ferry_element_free(e);
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_ETYPE); /* row 7 has 3 values */
    expect_end(it);
    ferry_iterator_free(it);
    ferry_dataset_unref(b);
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(padded_batch_rank2_values_exact) {
    ferry_runtime *rt = rt_new();
    /* Two float32 matrices [1,2] and [2,1], padded to the longest: [2, 2, 2] with pad 9. */
    int64_t d0[2] = {1, 2}, d1[2] = {2, 1};
    ferry_tensor *a, *c;
    ASSERT_OK(ferry_tensor_create(rt, FERRY_DTYPE_FLOAT32, 2, d0, &a));
    ASSERT_OK(ferry_tensor_create(rt, FERRY_DTYPE_FLOAT32, 2, d1, &c));
    float *pa = ferry_tensor_mutable_data(a), *pc = ferry_tensor_mutable_data(c);
    pa[0] = 1, pa[1] = 2, pc[0] = 3, pc[1] = 4;
    ferry_element *ea, *ec;
    ASSERT_OK(ferry_element_create(rt, 1, &a, &ea));
    ASSERT_OK(ferry_element_create(rt, 1, &c, &ec));
    ferry_dataset *ta, *tc, *cat, *b;
    ferry_tensor *ta_t = ferry_tensor_ref(ferry_element_get(ea, 0)), *tc_t = ferry_tensor_ref(ferry_element_get(ec, 0));
    ASSERT_OK(ferry_dataset_from_tensors(rt, 1, &ta_t, NULL, &ta));
    ASSERT_OK(ferry_dataset_from_tensors(rt, 1, &tc_t, NULL, &tc));
    ferry_tensor_unref(ta_t);
    ferry_tensor_unref(tc_t);
    ferry_element_free(ea);
    ferry_element_free(ec);
    ASSERT_OK(ferry_dataset_concatenate(ta, tc, NULL, &cat));
    ferry_tensor *pv;
    ASSERT_OK(ferry_tensor_scalar_f32(rt, 9.0f, &pv));
    ferry_padded_batch_options o = {.padding_values = &pv};
    ASSERT_OK(ferry_dataset_padded_batch(cat, 2, &o, &b));
    ferry_tensor_unref(pv);
    ferry_iterator *it = iter(b);
    ferry_element *e = next_ok(it);
    ferry_tensor *t = ferry_element_get(e, 0);
    ASSERT_EQ(ferry_tensor_rank(t), 3);
    ASSERT_EQ(ferry_tensor_dim(t, 1), 2);
    ASSERT_EQ(ferry_tensor_dim(t, 2), 2);
    const float *f = ferry_tensor_data(t);
    float want[8] = {1, 2, 9, 9, 3, 9, 4, 9};
    for (int j = 0; j < 8; j++) ASSERT_EQ((int)f[j], (int)want[j]);
    ferry_element_free(e);
    expect_end(it);
    ferry_iterator_free(it);
    ferry_dataset_unref(b);
    ferry_dataset_unref(cat);
    ferry_dataset_unref(ta);
    ferry_dataset_unref(tc);
    rt_done(rt);
}

TEST(padded_batch_argument_checks) {
    ferry_runtime *rt = rt_new();
    src s = {.n = 8, .make = make_ragged};
    ferry_dataset *in = src_dataset(rt, &s, 2, ragged_specs, 8), *b = NULL;
    /* A padding value of the wrong dtype names the component. */
    ferry_tensor *pv[2] = {NULL, NULL};
    ASSERT_OK(ferry_tensor_scalar_f32(rt, 1.0f, &pv[0]));
    ferry_padded_batch_options o = {.padding_values = pv};
    ASSERT_EQ(ferry_dataset_padded_batch(in, 2, &o, &b), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "padding_values[0]");
    ASSERT_STR_CONTAINS(ferry_last_error(), "float32");
    ASSERT(b == NULL);
    ferry_tensor_unref(pv[0]);
    /* A non-scalar padding value. */
    pv[0] = NULL;
    pv[1] = vec_i64(rt, 2, 0);
    ASSERT_EQ(ferry_dataset_padded_batch(in, 2, &o, &b), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "padding_values[1]");
    ferry_tensor_unref(pv[1]);
    /* A padded shape of another rank. */
    ferry_shape ps[2] = {{.rank = 2, .dims = {3, 3}}, {.rank = 1, .dims = {FERRY_UNKNOWN_DIM}}};
    ferry_padded_batch_options o2 = {.padded_shapes = ps};
    ASSERT_EQ(ferry_dataset_padded_batch(in, 2, &o2, &b), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "padded_shapes[0]");
    ps[0] = (ferry_shape){.rank = 1, .dims = {-5}};
    ASSERT_EQ(ferry_dataset_padded_batch(in, 2, &o2, &b), FERRY_EINVAL);
    ferry_dataset_unref(in);
    /* A fixed padded dim smaller than a known input dim. */
    ferry_dataset *r, *rb;
    ASSERT_OK(ferry_dataset_range(rt, 0, 10, 1, NULL, &r));
    ASSERT_OK(ferry_dataset_batch(r, 4, &(ferry_batch_options){.drop_remainder = true}, &rb)); /* [4] */
    ferry_shape small = {.rank = 1, .dims = {3}};
    ferry_padded_batch_options o3 = {.padded_shapes = &small};
    ASSERT_EQ(ferry_dataset_padded_batch(rb, 2, &o3, &b), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "smaller");
    ferry_dataset_unref(rb);
    ferry_dataset_unref(r);
    rt_done(rt);
}

TEST(padded_batch_resume_everywhere) {
    ferry_runtime *rt = rt_new();
    src s = {.n = 20, .make = make_ragged, .errors = {5}, .nerrors = 1};
    ferry_dataset *in = src_dataset(rt, &s, 2, ragged_specs, 20), *b;
    ferry_shape ps[2] = {{.rank = 1, .dims = {3}}, {.rank = 1, .dims = {FERRY_UNKNOWN_DIM}}};
    ferry_padded_batch_options o = {.padded_shapes = ps};
    ASSERT_OK(ferry_dataset_padded_batch(in, 3, &o, &b)); /* input errors and too-long rows */
    check_resume_everywhere(b, 0);
    ferry_dataset_unref(b);
    ASSERT_OK(ferry_dataset_padded_batch(in, 4, &(ferry_padded_batch_options){.drop_remainder = true}, &b));
    check_resume_everywhere(b, 0);
    ferry_dataset_unref(b);
    ferry_dataset_unref(in);
    rt_done(rt);
}

/* ---- unbatch ------------------------------------------------------------------------------ */
TEST(unbatch_inverts_batch) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *r, *b, *u;
    ASSERT_OK(ferry_dataset_range(rt, 0, 10, 1, NULL, &r));
    ASSERT_OK(ferry_dataset_batch(r, 3, NULL, &b));
    ASSERT_OK(ferry_dataset_unbatch(b, NULL, &u));
    ferry_tensor_spec sp;
    ASSERT_OK(ferry_dataset_component_spec(u, 0, &sp));
    ASSERT_EQ(sp.shape.rank, 0);
    ASSERT_EQ(ferry_dataset_cardinality(u), FERRY_UNKNOWN); /* dim 0 of the batches is unknown */
    ferry_iterator *it = iter(u);
    for (int64_t i = 0; i < 10; i++) {
        ferry_element *e = next_ok(it);
        ASSERT_EQ(ferry_tensor_rank(ferry_element_get(e, 0)), 0);
        ASSERT_EQ(i64_at(e, 0, 0), i);
        ferry_element_free(e);
    }
    expect_end(it);
    ferry_iterator_free(it);
    ferry_dataset_unref(u);
    ferry_dataset_unref(b);
    /* drop_remainder gives a known dim 0, so a known cardinality. */
    ASSERT_OK(ferry_dataset_batch(r, 3, &(ferry_batch_options){.drop_remainder = true}, &b));
    ASSERT_OK(ferry_dataset_unbatch(b, NULL, &u));
    ASSERT_EQ(ferry_dataset_cardinality(u), 9);
    check_resume_everywhere(u, 0);
    ferry_dataset_unref(u);
    ferry_dataset_unref(b);
    ferry_dataset_unref(r);
    /* Bytes and mixed components round-trip too. */
    ferry_tensor_spec specs[3] = {{FERRY_DTYPE_INT64, {.rank = 0}},
                                  {FERRY_DTYPE_BYTES, {.rank = 1, .dims = {FERRY_UNKNOWN_DIM}}},
                                  {FERRY_DTYPE_FLOAT32, {.rank = 1, .dims = {2}}}};
    src s = {.n = 9, .make = make_mixed};
    ferry_dataset *in = src_dataset(rt, &s, 3, specs, 9);
    ASSERT_OK(ferry_dataset_batch(in, 1, NULL, &b));
    ASSERT_OK(ferry_dataset_unbatch(b, NULL, &u));
    static stream direct, round;
    it = iter(in);
    drain(it, &direct);
    ferry_iterator_free(it);
    it = iter(u);
    drain(it, &round);
    ferry_iterator_free(it);
    assert_tail(&direct, 0, &round, "unbatch(batch(x))");
    ferry_dataset_unref(u);
    ferry_dataset_unref(b);
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(unbatch_shares_bytes) {
    ferry_runtime *rt = rt_new();
    ferry_tensor *t = vec_i64(rt, 6, 100);
    const void *data = ferry_tensor_data(t);
    ferry_dataset *ft, *u;
    ASSERT_OK(ferry_dataset_from_tensors(rt, 1, &t, NULL, &ft));
    ferry_tensor_unref(t);
    ASSERT_OK(ferry_dataset_unbatch(ft, NULL, &u));
    ASSERT_EQ(ferry_dataset_cardinality(u), 6);
    ferry_iterator *it = iter(u);
    for (int i = 0; i < 6; i++) {
        ferry_element *e = next_ok(it);
        ASSERT(ferry_tensor_data(ferry_element_get(e, 0)) == (const void *)((const int64_t *)data + i));
        ASSERT_EQ(i64_at(e, 0, 0), 100 + i);
        ferry_element_free(e);
    }
    expect_end(it);
    ferry_iterator_free(it);
    ferry_dataset_unref(u);
    ferry_dataset_unref(ft);
    rt_done(rt);
}

/* Element i: (int64 vector of i % 3 values, int64 vector of i % 3 values, or 1 for i == 7). */
static int make_rows(ferry_runtime *rt, int64_t i, ferry_element **out) {
    ferry_tensor *t[2];
    t[0] = vec_i64(rt, i % 3, 10 * i);
    t[1] = vec_i64(rt, i == 7 ? 2 : i % 3, 0);
    int64_t *d = ferry_tensor_mutable_data(t[1]);
    for (int64_t j = 0; j < ferry_tensor_num_entries(t[1]); j++) d[j] = -(10 * i + j);
    return ferry_element_create(rt, 2, t, out);
}

TEST(unbatch_zero_rows_and_mismatch) {
    ferry_runtime *rt = rt_new();
    ferry_tensor_spec specs[2] = {{FERRY_DTYPE_INT64, {.rank = 1, .dims = {FERRY_UNKNOWN_DIM}}},
                                  {FERRY_DTYPE_INT64, {.rank = 1, .dims = {FERRY_UNKNOWN_DIM}}}};
    src s = {.n = 10, .make = make_rows, .errors = {4}, .nerrors = 1};
    ferry_dataset *in = src_dataset(rt, &s, 2, specs, 10), *u;
    ASSERT_OK(ferry_dataset_unbatch(in, NULL, &u));
    ferry_iterator *it = iter(u);
    /* i=0: nothing; 1: 1 row; 2: 2 rows; 3: nothing; 4: error; 5: 2 rows; 6: nothing; 7: mismatch
     * (1 vs 2 rows); 8: 2 rows; 9: nothing. */
    int64_t want[] = {10, 20, 21, -4, 50, 51, -7, 80, 81};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        ferry_element *e = NULL;
        if (want[k] < 0) {
            int rc = ferry_iterator_next(it, &e);
            ASSERT_EQ(rc, want[k] == -4 ? FERRY_EUSER : FERRY_ETYPE);
            if (want[k] == -7) {
                ASSERT_STR_CONTAINS(ferry_iterator_error(it), "dim 0");
                ASSERT_STR_CONTAINS(ferry_iterator_error(it), "component 1");
            }
            continue;
        }
        e = next_ok(it);
        ASSERT_EQ(i64_at(e, 0, 0), want[k]);
        ASSERT_EQ(i64_at(e, 1, 0), -want[k]);
        ferry_element_free(e);
    }
    expect_end(it);
    ferry_iterator_free(it);
    check_resume_everywhere(u, 0);
    ferry_dataset_unref(u);
    ferry_dataset_unref(in);
    /* A scalar met at run time (the spec's rank is unknown) is FERRY_ETYPE in its position. */
    ferry_tensor_spec unk = {FERRY_DTYPE_INT64, {.rank = FERRY_UNKNOWN_RANK}};
    src sc = {.n = 2, .make = make_scalar};
    in = src_dataset(rt, &sc, 1, &unk, 2);
    ASSERT_OK(ferry_dataset_unbatch(in, NULL, &u));
    it = iter(u);
    ferry_element *e = NULL;
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_ETYPE);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "scalar");
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_ETYPE);
    expect_end(it);
    ferry_iterator_free(it);
    ferry_dataset_unref(u);
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(unbatch_of_batch_resume_everywhere) {
    ferry_runtime *rt = rt_new();
    ferry_tensor_spec specs[3] = {{FERRY_DTYPE_INT64, {.rank = 0}},
                                  {FERRY_DTYPE_BYTES, {.rank = 1, .dims = {FERRY_UNKNOWN_DIM}}},
                                  {FERRY_DTYPE_FLOAT32, {.rank = 1, .dims = {2}}}};
    src s = {.n = 24, .make = make_mixed, .errors = {2, 13}, .nerrors = 2};
    ferry_dataset *in = src_dataset(rt, &s, 3, specs, 24), *b, *u, *b2;
    ASSERT_OK(ferry_dataset_padded_batch(in, 4, NULL, &b));
    ASSERT_OK(ferry_dataset_unbatch(b, NULL, &u));
    ASSERT_OK(ferry_dataset_batch(u, 3, NULL, &b2));
    check_resume_everywhere(u, 0);
    check_resume_everywhere(b2, 0);
    ferry_dataset_unref(b2);
    ferry_dataset_unref(u);
    ferry_dataset_unref(b);
    ferry_dataset_unref(in);
    rt_done(rt);
}
