/*
 * test_core.c - runtime, tensors, elements, status codes, and the range source with save/restore.
 */
#include "runner.h"

TEST(version) {
    ASSERT_EQ(ferry_version_number(), FERRY_VERSION_NUMBER);
    ASSERT(strcmp(ferry_version(), FERRY_VERSION_STRING) == 0);
    ASSERT(strcmp(ferry_error_name(FERRY_ENOMEM), "FERRY_ENOMEM") == 0);
    ASSERT(strcmp(ferry_strerror(FERRY_END), "end of sequence") == 0);
    ASSERT(strcmp(ferry_error_name(-999), "FERRY_UNKNOWN") == 0);
}

TEST(range_basic) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_range(rt, 3, 10, 2, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 4);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    int64_t want[] = {3, 5, 7, 9};
    for (int i = 0; i < 4; i++) {
        ferry_element *e;
        ASSERT_OK(ferry_iterator_next(it, &e));
        ASSERT_EQ(*(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)), want[i]);
        ferry_element_free(e);
    }
    ferry_element *e = NULL;
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
    ASSERT(e == NULL);
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(range_negative_step_and_empty) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_range(rt, 5, 0, -2, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 3);
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_range(rt, 5, 5, 1, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 0);
    ferry_dataset_unref(ds);
    ASSERT_EQ(ferry_dataset_range(rt, 0, 5, 0, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "step");
    ASSERT(ds == NULL);
    rt_done(rt);
}

TEST(range_save_restore) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_range(rt, 0, 100, 1, NULL, &ds));
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    for (int i = 0; i < 37; i++) {
        ferry_element *e;
        ASSERT_OK(ferry_iterator_next(it, &e));
        ferry_element_free(e);
    }
    ferry_blob *b;
    ASSERT_OK(ferry_iterator_save(it, &b));
    ferry_iterator *r;
    ASSERT_OK(ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), NULL, &r));
    ferry_element *e;
    ASSERT_OK(ferry_iterator_next(r, &e));
    ASSERT_EQ(*(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)), 37);
    ferry_element_free(e);
    /* Another pipeline's state is refused. */
    ferry_dataset *other;
    ASSERT_OK(ferry_dataset_range(rt, 0, 101, 1, NULL, &other));
    ferry_iterator *bad = NULL;
    ASSERT_EQ(ferry_iterator_restore(other, ferry_blob_data(b), ferry_blob_size(b), NULL, &bad), FERRY_EMISMATCH);
    ASSERT(bad == NULL);
    /* A flipped byte is refused. */
    uint8_t *copy = malloc(ferry_blob_size(b));
    memcpy(copy, ferry_blob_data(b), ferry_blob_size(b));
    copy[ferry_blob_size(b) / 2] ^= 1;
    ASSERT_EQ(ferry_iterator_restore(ds, copy, ferry_blob_size(b), NULL, &bad), FERRY_ECORRUPT);
    ASSERT_EQ(ferry_iterator_restore(ds, copy, 20, NULL, &bad), FERRY_ETRUNCATED);
    free(copy);
    ferry_blob_free(b);
    ferry_iterator_free(r);
    ferry_iterator_free(it);
    ferry_dataset_unref(other);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

/* A source's scalar element and its tensor share one block: the tensor must still behave as an
 * ordinary refcounted tensor (outlive the element, be replaced in it, be mutable only while
 * nobody else holds it), and every block must go back when the last holder lets go. */
TEST(range_element_tensor_outlives_its_element) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *r;
    ASSERT_OK(ferry_dataset_range(rt, 7, 10, 1, NULL, &r));
    ferry_runtime_stats st;
    ASSERT_OK(ferry_runtime_stats_get(rt, &st));
    int64_t baseline = st.blocks_allocated;
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(r, NULL, &it));
    ferry_element *e;
    ASSERT_OK(ferry_iterator_next(it, &e));
    ferry_tensor *t = ferry_element_get(e, 0);
    ASSERT(ferry_tensor_mutable_data(t) != NULL); /* the element's alone */
    ferry_tensor_ref(t);
    ASSERT(ferry_tensor_mutable_data(t) == NULL); /* shared */
    ferry_element_free(e);
    ASSERT_EQ(*(const int64_t *)ferry_tensor_data(t), 7); /* outlives the element */
    int64_t *w = ferry_tensor_mutable_data(t);            /* ours alone again */
    ASSERT(w != NULL);
    *w = 70;
    ferry_tensor_unref(t);
    /* Replaced in its element: the old tensor goes with the element's block. */
    ASSERT_OK(ferry_iterator_next(it, &e));
    ferry_tensor *old = ferry_element_get(e, 0);
    ferry_tensor_ref(old);
    ferry_tensor *nt;
    ASSERT_OK(ferry_tensor_scalar_i64(rt, 80, &nt));
    ASSERT_OK(ferry_element_set(e, 0, nt));
    ASSERT_EQ(*(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)), 80);
    ASSERT_EQ(*(const int64_t *)ferry_tensor_data(old), 8);
    ferry_tensor_unref(old);
    ferry_element_free(e);
    ASSERT_OK(ferry_iterator_next(it, &e));
    ferry_element_free(e); /* plain use */
    ferry_iterator_free(it);
    ASSERT_OK(ferry_runtime_stats_get(rt, &st));
    ASSERT_EQ(st.blocks_allocated, baseline); /* every block of the elements went back */
    ferry_dataset_unref(r);
    rt_done(rt);
}

TEST(tensor_slice_shares_bytes) {
    ferry_runtime *rt = rt_new();
    int64_t dims[2] = {4, 3};
    ferry_tensor *t;
    ASSERT_OK(ferry_tensor_create(rt, FERRY_DTYPE_FLOAT32, 2, dims, &t));
    float *d = ferry_tensor_mutable_data(t);
    ASSERT(d != NULL);
    for (int i = 0; i < 12; i++) d[i] = (float)i;
    ferry_tensor *s;
    ASSERT_OK(ferry_tensor_slice(t, 1, 2, &s));
    ASSERT(ferry_tensor_mutable_data(t) == NULL); /* shared now */
    ASSERT_EQ(ferry_tensor_dim(s, 0), 2);
    ASSERT(ferry_tensor_data(s) == (const void *)(d + 3));
    ASSERT_EQ(ferry_tensor_nbytes(s), 24);
    ferry_tensor_unref(t);
    ASSERT_EQ((int)((const float *)ferry_tensor_data(s))[5], 8);
    ferry_tensor_unref(s);
    const void *ptrs[3] = {"ab", "", "xyz"};
    size_t lens[3] = {2, 0, 3};
    int64_t n = 3;
    ASSERT_OK(ferry_tensor_create_bytes(rt, 1, &n, ptrs, lens, &t));
    ASSERT_OK(ferry_tensor_slice(t, 1, 2, &s));
    const uint8_t *p;
    size_t len;
    ASSERT_OK(ferry_tensor_bytes_get(s, 1, &p, &len));
    ASSERT_EQ(len, 3);
    ASSERT(memcmp(p, "xyz", 3) == 0);
    ASSERT_EQ(ferry_tensor_bytes_get(s, 2, &p, &len), FERRY_EINVAL);
    ferry_tensor_unref(s);
    ferry_tensor_unref(t);
    rt_done(rt);
}

TEST(runtime_free_refuses_live_objects) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_range(rt, 0, 1, 1, NULL, &ds));
    ASSERT_EQ(ferry_runtime_free(rt), FERRY_EMISUSE);
    ASSERT_STR_CONTAINS(ferry_last_error(), "still alive");
    ferry_dataset_unref(ds);
    rt_done(rt);
}

/* A handle that is not a live dataset (here: zeroed memory of a dataset's size, as a foreign or
 * stale pointer may be) is refused with FERRY_EMISUSE by its live-object mark, not used. */
TEST(foreign_dataset_handle_is_refused) {
    ferry_runtime *rt = rt_new();
    _Alignas(16) unsigned char fake[512] = {0};
    ferry_iterator *it = (ferry_iterator *)&fake; /* anything non-NULL: must stay untouched */
    ASSERT_EQ(ferry_iterator_create((ferry_dataset *)fake, NULL, &it), FERRY_EMISUSE);
    ASSERT_EQ(it == NULL, true);
    ASSERT_STR_CONTAINS(ferry_last_error(), "not a live dataset");
    ferry_dataset *m;
    ASSERT_EQ(ferry_dataset_take((ferry_dataset *)fake, 1, NULL, &m), FERRY_EMISUSE);
    rt_done(rt);
}

TEST(foreign_iterator_handle_is_refused) {
    _Alignas(16) unsigned char fake[1024] = {0};
    ferry_element *e = (ferry_element *)&fake;
    ASSERT_EQ(ferry_iterator_next((ferry_iterator *)fake, &e), FERRY_EMISUSE);
    ASSERT_EQ(e == NULL, true);
    ASSERT_STR_CONTAINS(ferry_last_error(), "not a live iterator");
    size_t n;
    ASSERT_EQ(ferry_iterator_stats((ferry_iterator *)fake, NULL, 0, &n), FERRY_EMISUSE);
    ferry_report r;
    ASSERT_EQ(ferry_iterator_report((ferry_iterator *)fake, &r), FERRY_EMISUSE);
    ferry_blob *b;
    ASSERT_EQ(ferry_iterator_save((ferry_iterator *)fake, &b), FERRY_EMISUSE);
    ferry_iterator_free((ferry_iterator *)fake); /* not an iterator: left alone */
    for (size_t i = 0; i < sizeof fake; i++) ASSERT_EQ(fake[i], 0);
}

/* Every function that writes a pointer through an out-parameter writes NULL there when it fails,
 * whichever argument was wrong (the header's convention): a caller that frees *out after a
 * failure never frees garbage. Each call below is wrong in one argument; *out starts as junk. */
#define JUNK ((void *)(uintptr_t)0x5a5a5a5a)
static int not_nulled;
#define EXPECT_NULLED(type, call_with_out)                                                                             \
    do {                                                                                                               \
        type *out_ = JUNK;                                                                                             \
        int rc_ = (call_with_out);                                                                                     \
        if (rc_ >= 0) FAILF("%s succeeded", #call_with_out);                                                           \
        if (out_ != NULL) {                                                                                            \
            fprintf(stderr, "%s failed with %s but left *out unchanged\n", #call_with_out, ferry_error_name(rc_));     \
            not_nulled++;                                                                                              \
        }                                                                                                              \
    } while (0)

static int pass_map(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)ctx;
    (void)user;
    *out = in;
    return FERRY_OK;
}
static int pass_pred(ferry_context *ctx, const ferry_element *e, bool *keep, void *user) {
    (void)ctx;
    (void)e;
    (void)user;
    *keep = true;
    return FERRY_OK;
}
static int pass_inner(ferry_context *ctx, const ferry_element *e, ferry_dataset **out, void *user) {
    (void)e;
    (void)user;
    return ferry_dataset_range(ferry_context_runtime(ctx), 0, 1, 1, NULL, out);
}

TEST(failing_functions_write_null) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_range(rt, 0, 4, 1, NULL, &ds));
    int64_t dims[1] = {-3}, two = 2;
    const char *nofile[1] = {"/nonexistent/ferry-test"};
    ferry_runtime_options bad_rt = {.cpu_budget = -5};
    EXPECT_NULLED(ferry_runtime, ferry_runtime_create(&bad_rt, &out_));
    EXPECT_NULLED(ferry_tensor, ferry_tensor_create(rt, FERRY_DTYPE_INT64, 1, dims, &out_));
    EXPECT_NULLED(ferry_tensor, ferry_tensor_create(NULL, FERRY_DTYPE_INT64, 0, NULL, &out_));
    EXPECT_NULLED(ferry_tensor, ferry_tensor_wrap(rt, FERRY_DTYPE_INT64, 1, &two, NULL, 16, NULL, NULL, &out_));
    EXPECT_NULLED(ferry_tensor, ferry_tensor_create_bytes(rt, 1, dims, NULL, NULL, &out_));
    EXPECT_NULLED(ferry_tensor, ferry_tensor_scalar_i64(NULL, 1, &out_));
    EXPECT_NULLED(ferry_tensor, ferry_tensor_scalar_f32(NULL, 1, &out_));
    EXPECT_NULLED(ferry_tensor, ferry_tensor_slice(NULL, 0, 1, &out_));
    EXPECT_NULLED(const uint8_t, ferry_tensor_bytes_get(NULL, 0, &out_, &(size_t){0}));
    EXPECT_NULLED(ferry_element, ferry_element_create(NULL, 1, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_range(rt, 0, 1, 0, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_from_tensor_slices(rt, 0, NULL, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_from_tensors(NULL, 0, NULL, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_generator(rt, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_map(ds, NULL, NULL, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_filter(ds, NULL, NULL, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_filter(NULL, pass_pred, NULL, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_batch(ds, 0, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_padded_batch(ds, 0, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_unbatch(ds, NULL, &out_)); /* scalars cannot be unbatched */
    EXPECT_NULLED(ferry_dataset, ferry_dataset_shuffle(ds, 0, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_repeat(ds, -3, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_take(ds, -3, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_skip(ds, -3, NULL, &out_));
    /* Another sentinel where a count belongs is refused. */
    EXPECT_NULLED(ferry_dataset, ferry_dataset_repeat(ds, FERRY_AUTOTUNE, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_take(ds, FERRY_AUTOTUNE, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_prefetch(ds, FERRY_INFINITE, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_shard(ds, 2, 2, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_zip(0, NULL, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_concatenate(ds, NULL, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_enumerate(NULL, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_ignore_errors(NULL, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_prefetch(ds, -5, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_cache(NULL, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_interleave(ds, NULL, NULL, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_flat_map(NULL, pass_inner, NULL, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_list_files(rt, "/nonexistent/ferry-*", NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_tfrecord(rt, 1, NULL, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_tfrecord_files(ds, NULL, &out_)); /* int64, not names */
    EXPECT_NULLED(ferry_dataset, ferry_dataset_parse_example(ds, NULL, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_text_lines(rt, 1, NULL, NULL, &out_));
    EXPECT_NULLED(ferry_dataset, ferry_dataset_fixed_length_records(rt, 1, nofile, NULL, &out_));
    EXPECT_NULLED(ferry_tfrecord_writer, ferry_tfrecord_writer_open(rt, nofile[0], NULL, &out_));
    EXPECT_NULLED(ferry_example_parser, ferry_example_parser_create(rt, NULL, &out_));
    EXPECT_NULLED(const ferry_tensor_spec, ferry_example_parser_output_specs(NULL, &(size_t){0}, &out_));
    EXPECT_NULLED(const ferry_tensor_spec, ferry_example_parser_batch_output_specs(NULL, &(size_t){0}, &out_));
    EXPECT_NULLED(ferry_blob, ferry_example_to_json(rt, "\xff", 1, &out_));
    EXPECT_NULLED(ferry_blob, ferry_example_from_json(rt, "{", 1, &out_));
    EXPECT_NULLED(ferry_blob, ferry_state_file_read(rt, nofile[0], &out_));
    EXPECT_NULLED(ferry_iterator, ferry_iterator_create(NULL, NULL, &out_));
    EXPECT_NULLED(ferry_iterator, ferry_iterator_restore(ds, "x", 1, NULL, &out_));
    EXPECT_NULLED(ferry_iterator, ferry_iterator_restore_file(ds, nofile[0], NULL, &out_));
    EXPECT_NULLED(ferry_blob, ferry_iterator_save(NULL, &out_));
    EXPECT_NULLED(ferry_element, ferry_iterator_next(NULL, &out_));
    /* A map with a NULL function or a bad option, on a good input. */
    ferry_map_options mo = {.num_parallel_calls = -7};
    EXPECT_NULLED(ferry_dataset, ferry_dataset_map(ds, pass_map, NULL, &mo, &out_));
    ASSERT_EQ(not_nulled, 0);
    ferry_dataset_unref(ds);
    rt_done(rt);
}
