/*
 * test_core.c - runtime, tensors, elements, status codes, and the range source with save/restore.
 */
#include "runner.h"

static ferry_runtime *rt_new(void) {
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(NULL, &rt));
    return rt;
}

static void rt_done(ferry_runtime *rt) {
    int rc = ferry_runtime_free(rt);
    if (rc != FERRY_OK) FAILF("runtime not empty: %s", ferry_last_error());
}

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
    ASSERT_OK(ferry_dataset_range(rt, 3, 10, 2, &ds));
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
    ASSERT_OK(ferry_dataset_range(rt, 5, 0, -2, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 3);
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_range(rt, 5, 5, 1, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 0);
    ferry_dataset_unref(ds);
    ASSERT_EQ(ferry_dataset_range(rt, 0, 5, 0, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "step");
    ASSERT(ds == NULL);
    rt_done(rt);
}

TEST(range_save_restore) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_range(rt, 0, 100, 1, &ds));
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
    ASSERT_OK(ferry_dataset_range(rt, 0, 101, 1, &other));
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
    ASSERT_OK(ferry_dataset_range(rt, 7, 10, 1, &r));
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
    int64_t *w = ferry_tensor_mutable_data(t);        /* ours alone again */
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
    ASSERT_OK(ferry_tensor_create(rt, FERRY_FLOAT32, 2, dims, &t));
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
    ASSERT_OK(ferry_dataset_range(rt, 0, 1, 1, &ds));
    ASSERT_EQ(ferry_runtime_free(rt), FERRY_EMISUSE);
    ASSERT_STR_CONTAINS(ferry_last_error(), "still alive");
    ferry_dataset_unref(ds);
    rt_done(rt);
}
