/*
 * test_sources.c - the in-memory sources (from_tensor_slices, from_tensors) and the generator:
 * values, shared bytes, specs, cardinality, argument checks, errors in position, the generator's
 * state lifecycle and contexts, and save/restore at every position of small streams.
 *
 * The stream checker below (render, collect, check_stream) is generic over datasets: it renders
 * each position as text ("3", "'ab'", "(1,[2,3])", "E" for FERRY_EUSER, "E:FERRY_ETYPE" for other
 * errors) and compares streams as lists of such items.
 */
#include <stdarg.h>

#include <pthread.h>
#include <sched.h>

#include "runner.h"

#include "core/core.h" /* generator cancellation is checked through the internal iterator API */

#include "stream_check.h"

/* ---- from_tensor_slices / from_tensors -------------------------------------------------------- */
TEST(slices_rows_share_bytes) {
    ferry_runtime *rt = rt_new();
    int64_t dims[2] = {4, 2};
    ferry_tensor *t[2];
    t[0] = i64_tensor(rt, 2, dims, 0);
    const char *strs[4] = {"a", "", "ccc", "dd"};
    t[1] = bytes_tensor(rt, 4, strs);
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 2, t, NULL, &ds));
    ASSERT(strcmp(ferry_dataset_name(ds), "from_tensor_slices") == 0);
    ASSERT_EQ(ferry_dataset_cardinality(ds), 4);
    ASSERT_EQ(ferry_dataset_num_components(ds), 2);
    ferry_tensor_spec spec;
    ASSERT_OK(ferry_dataset_component_spec(ds, 0, &spec));
    ASSERT_EQ(spec.dtype, FERRY_DTYPE_INT64);
    ASSERT_EQ(spec.shape.rank, 1);
    ASSERT_EQ(spec.shape.dims[0], 2);
    ASSERT_OK(ferry_dataset_component_spec(ds, 1, &spec));
    ASSERT_EQ(spec.dtype, FERRY_DTYPE_BYTES);
    ASSERT_EQ(spec.shape.rank, 0);
    const int64_t *base = ferry_tensor_data(t[0]);
    /* The dataset holds its own references: the caller's can go now. */
    ferry_tensor_unref(t[0]);
    ferry_tensor_unref(t[1]);
    ferry_iterator *it = iter_new(ds, 0);
    ferry_element *e;
    ASSERT_OK(ferry_iterator_next(it, &e));
    ferry_element_free(e);
    ASSERT_OK(ferry_iterator_next(it, &e)); /* the second row */
    ASSERT(ferry_tensor_data(ferry_element_get(e, 0)) == (const void *)(base + 2));
    ASSERT_EQ(ferry_tensor_nbytes(ferry_element_get(e, 0)), 16);
    const uint8_t *p;
    size_t len;
    ASSERT_OK(ferry_tensor_bytes_get(ferry_element_get(e, 1), 0, &p, &len));
    ASSERT_EQ(len, 0);
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    /* The row outlives the iterator and the dataset. */
    ASSERT_EQ(((const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)))[1], 3);
    ferry_element_free(e);
    rt_done(rt);
}

TEST(slices_stream_and_restore) {
    ferry_runtime *rt = rt_new();
    int64_t dims[2] = {5, 2};
    ferry_tensor *t[2];
    t[0] = i64_tensor(rt, 2, dims, 10);
    const char *strs[5] = {"zero", "one", "", "three", "four"};
    t[1] = bytes_tensor(rt, 5, strs);
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 2, t, NULL, &ds));
    expect_stream(ds, "([10,11],'zero') ([12,13],'one') ([14,15],'') ([16,17],'three') ([18,19],'four')");
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 1, &t[1], NULL, &ds));
    expect_stream(ds, "'zero' 'one' '' 'three' 'four'");
    ferry_dataset_unref(ds);
    ferry_tensor_unref(t[0]);
    ferry_tensor_unref(t[1]);
    rt_done(rt);
}

TEST(slices_empty_and_rank3) {
    ferry_runtime *rt = rt_new();
    int64_t dims[3] = {0, 3, 2};
    ferry_tensor *t = i64_tensor(rt, 3, dims, 0);
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 1, &t, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 0);
    ferry_tensor_spec spec;
    ASSERT_OK(ferry_dataset_component_spec(ds, 0, &spec));
    ASSERT_EQ(spec.shape.rank, 2);
    ASSERT_EQ(spec.shape.dims[0], 3);
    ASSERT_EQ(spec.shape.dims[1], 2);
    expect_stream(ds, "");
    check_stream(ds, 10, 0);
    ferry_dataset_unref(ds);
    ferry_tensor_unref(t);
    dims[0] = 2;
    t = i64_tensor(rt, 3, dims, 0);
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 1, &t, NULL, &ds));
    expect_stream(ds, "[0,1,2,3,4,5] [6,7,8,9,10,11]");
    ferry_dataset_unref(ds);
    ferry_tensor_unref(t);
    rt_done(rt);
}

TEST(slices_argument_errors) {
    ferry_runtime *rt = rt_new();
    int64_t d4 = 4, d3 = 3;
    ferry_tensor *t[3];
    t[0] = i64_tensor(rt, 1, &d4, 0);
    t[1] = i64_tensor(rt, 1, &d3, 0);
    ASSERT_OK(ferry_tensor_scalar_i64(rt, 7, &t[2]));
    ferry_dataset *ds = (ferry_dataset *)1;
    ASSERT_EQ(ferry_dataset_from_tensor_slices(rt, 2, t, NULL, &ds), FERRY_EINVAL);
    ASSERT(ds == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_dataset_from_tensor_slices");
    ASSERT_STR_CONTAINS(ferry_last_error(), "tensors[1]");
    ASSERT_STR_CONTAINS(ferry_last_error(), "size 3");
    ASSERT_STR_CONTAINS(ferry_last_error(), "has 4");
    ferry_tensor *s[2] = {t[0], t[2]};
    ASSERT_EQ(ferry_dataset_from_tensor_slices(rt, 2, s, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "tensors[1] is a scalar");
    ASSERT_EQ(ferry_dataset_from_tensor_slices(rt, 0, t, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'n'");
    ASSERT_EQ(ferry_dataset_from_tensor_slices(rt, 1, NULL, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'tensors'");
    ferry_tensor *nul[1] = {NULL};
    ASSERT_EQ(ferry_dataset_from_tensor_slices(rt, 1, nul, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "tensors[0] is NULL");
    ASSERT_EQ(ferry_dataset_from_tensor_slices(NULL, 1, t, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'rt'");
    ASSERT_EQ(ferry_dataset_from_tensor_slices(rt, 1, t, NULL, NULL), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'out'");
    ASSERT_EQ(ferry_dataset_from_tensors(rt, 0, t, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_dataset_from_tensors");
    /* A tensor of another runtime is refused. */
    ferry_runtime *rt2 = rt_new();
    ASSERT_EQ(ferry_dataset_from_tensors(rt2, 1, t, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "another runtime");
    rt_done(rt2);
    for (int i = 0; i < 3; i++) ferry_tensor_unref(t[i]);
    rt_done(rt);
}

TEST(from_tensors_one_element) {
    ferry_runtime *rt = rt_new();
    int64_t dims[2] = {2, 3};
    ferry_tensor *t[2];
    t[0] = i64_tensor(rt, 2, dims, 1);
    const char *strs[2] = {"x", "yz"};
    t[1] = bytes_tensor(rt, 2, strs);
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_from_tensors(rt, 2, t, NULL, &ds));
    ASSERT(strcmp(ferry_dataset_name(ds), "from_tensors") == 0);
    ASSERT_EQ(ferry_dataset_cardinality(ds), 1);
    ferry_tensor_spec spec;
    ASSERT_OK(ferry_dataset_component_spec(ds, 0, &spec));
    ASSERT_EQ(spec.shape.rank, 2);
    ASSERT_EQ(spec.shape.dims[0], 2);
    ASSERT_EQ(spec.shape.dims[1], 3);
    expect_stream(ds, "([1,2,3,4,5,6],['x','yz'])");
    ferry_iterator *it = iter_new(ds, 0);
    ferry_element *e;
    ASSERT_OK(ferry_iterator_next(it, &e));
    ASSERT(ferry_element_get(e, 0) == t[0]); /* the very tensor, shared */
    ferry_element_free(e);
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
    ferry_iterator_free(it);
    check_stream(ds, 10, 0);
    ferry_dataset_unref(ds);
    ferry_tensor_unref(t[0]);
    ferry_tensor_unref(t[1]);
    rt_done(rt);
}

TEST(slices_restore_rejects_bad_state) {
    ferry_runtime *rt = rt_new();
    int64_t d = 3;
    ferry_tensor *t = i64_tensor(rt, 1, &d, 0);
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 1, &t, NULL, &ds));
    ferry_iterator *it = iter_new(ds, 0);
    ferry_blob *b;
    ASSERT_OK(ferry_iterator_save(it, &b));
    ferry_iterator_free(it);
    /* Patch the saved index (the payload ends with it, just before the u64 checksum) to 4 > 3
     * and fix the checksum, so that the op itself must refuse it. */
    size_t size = ferry_blob_size(b);
    uint8_t *copy = malloc(size);
    memcpy(copy, ferry_blob_data(b), size);
    ASSERT_EQ(copy[size - 16], 0);
    copy[size - 16] = 4;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < size - 8; i++) {
        h ^= copy[i];
        h *= 0x100000001b3ull;
    }
    for (int i = 0; i < 8; i++) copy[size - 8 + (size_t)i] = (uint8_t)(h >> (8 * i));
    ferry_iterator *r = NULL;
    ASSERT_EQ(ferry_iterator_restore(ds, copy, size, NULL, &r), FERRY_ECORRUPT);
    ASSERT(r == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "from_tensor_slices: saved index 4");
    free(copy);
    ferry_blob_free(b);
    ferry_dataset_unref(ds);
    ferry_tensor_unref(t);
    rt_done(rt);
}

/* ---- generator -------------------------------------------------------------------------------- */
TEST(generator_values_and_lifecycle) {
    ferry_runtime *rt = rt_new();
    gen_cfg c = {.n = 5, .offset = 100};
    ferry_dataset *ds = gen_dataset(rt, &c, 5);
    ASSERT(strcmp(ferry_dataset_name(ds), "generator") == 0);
    ASSERT_EQ(ferry_dataset_cardinality(ds), 5);
    ASSERT_EQ(c.inits, 0); /* building runs no user code */
    ferry_iterator *it = iter_new(ds, 0);
    ASSERT_EQ(c.inits, 0); /* nor does making an iterator */
    items s = {0};
    collect(it, 100, &s);
    char *got = join(&s);
    ASSERT(strcmp(got, "100 101 102 103 104") == 0);
    free(got);
    items_free(&s);
    ASSERT_EQ(c.inits, 1);
    ASSERT_EQ(c.finis, 1); /* fini runs at END, before the iterator goes */
    ASSERT_EQ(c.nexts, 6);
    ferry_iterator_free(it);
    ASSERT_EQ(c.finis, 1);
    /* An iterator freed mid-stream runs fini; one never pulled runs neither. */
    it = iter_new(ds, 0);
    ferry_element *e;
    ASSERT_OK(ferry_iterator_next(it, &e));
    ferry_element_free(e);
    ferry_iterator_free(it);
    ASSERT_EQ(c.inits, 2);
    ASSERT_EQ(c.finis, 2);
    it = iter_new(ds, 0);
    ferry_iterator_free(it);
    ASSERT_EQ(c.inits, 2);
    ASSERT_EQ(c.finis, 2);
    ASSERT_EQ(c.bad_index, 0);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(generator_errors_in_position) {
    ferry_runtime *rt = rt_new();
    gen_cfg c = {.n = 10, .fail = (1u << 0) | (1u << 5) | (1u << 9)};
    ferry_dataset *ds = gen_dataset(rt, &c, 0);
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_UNKNOWN);
    expect_stream(ds, "E 1 2 3 4 E 6 7 8 E");
    ferry_iterator *it = iter_new(ds, 0);
    ferry_element *e = NULL;
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_EUSER);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "generator");
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "position 0");
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "boom at 0");
    ferry_iterator_free(it);
    check_stream(ds, 100, 0);
    ASSERT_EQ(c.inits, c.finis);
    ASSERT_EQ(c.bad_index, 0);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(generator_checks_outputs) {
    ferry_runtime *rt = rt_new();
    gen_cfg c = {.n = 5, .kind = GEN_BAD_DTYPE, .bad_at = 2};
    ferry_dataset *ds = gen_dataset(rt, &c, 5);
    expect_stream(ds, "0 1 E:FERRY_ETYPE 3 4");
    ferry_iterator *it = iter_new(ds, 0);
    ferry_element *e = NULL;
    for (int i = 0; i < 2; i++) {
        ASSERT_OK(ferry_iterator_next(it, &e));
        ferry_element_free(e);
    }
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_ETYPE);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "component 0");
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "float32");
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "int64");
    ferry_iterator_free(it);
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    gen_cfg c2 = {.n = 4, .kind = GEN_BAD_ARITY, .bad_at = 3};
    ds = gen_dataset(rt, &c2, 0);
    expect_stream(ds, "0 1 2 E:FERRY_ETYPE");
    ferry_dataset_unref(ds);
    ASSERT_EQ(c.inits, c.finis);
    ASSERT_EQ(c2.inits, c2.finis);
    rt_done(rt);
}

TEST(generator_init_failure_ends_stream) {
    ferry_runtime *rt = rt_new();
    gen_cfg c = {.n = 5, .fail_init = true};
    ferry_dataset *ds = gen_dataset(rt, &c, 0);
    ferry_iterator *it = iter_new(ds, 0);
    ferry_element *e = NULL;
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_EIO);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "generator: init");
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "cannot open the test source");
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
    ferry_iterator_free(it);
    ASSERT_EQ(c.inits, 0);
    ASSERT_EQ(c.finis, 0); /* fini never runs for a failed init */
    ASSERT_EQ(c.nexts, 0);
    expect_stream(ds, "E:FERRY_EIO");
    check_stream(ds, 10, 0);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(generator_save_restore_replays) {
    ferry_runtime *rt = rt_new();
    gen_cfg c = {.n = 12, .fail = (1u << 0) | (1u << 6) | (1u << 11), .offset = 7};
    ferry_dataset *ds = gen_dataset(rt, &c, 12);
    check_stream(ds, 100, 3);
    ASSERT_EQ(c.inits, c.finis); /* no state leaked over dozens of iterators */
    ASSERT(c.inits > 12);
    ASSERT_EQ(c.bad_index, 0); /* replayed calls see the right positions */
    /* Replay cost: a restore at position 8 calls next 8 times before the next output. */
    ferry_iterator *it = iter_new(ds, 3);
    for (int i = 0; i < 8; i++) {
        ferry_element *e = NULL;
        ferry_iterator_next(it, &e);
        ferry_element_free(e);
    }
    ferry_blob *b;
    ASSERT_OK(ferry_iterator_save(it, &b));
    ferry_iterator_free(it);
    int before = c.nexts;
    ferry_iterator *r;
    ASSERT_OK(ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), NULL, &r));
    ASSERT_EQ(c.nexts, before); /* nothing runs until the first next */
    ferry_element *e;
    ASSERT_OK(ferry_iterator_next(r, &e));
    ASSERT_EQ(*(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)), 15);
    ferry_element_free(e);
    ASSERT_EQ(c.nexts, before + 9);
    ferry_iterator_free(r);
    ferry_blob_free(b);
    ASSERT_EQ(c.inits, c.finis);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(generator_infinite_and_random) {
    ferry_runtime *rt = rt_new();
    gen_cfg c = {.n = -1, .kind = GEN_RANDOM};
    ferry_dataset *ds = gen_dataset(rt, &c, FERRY_INFINITE);
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_INFINITE);
    check_stream(ds, 20, 42);
    /* Same seed, same draws; another seed, other draws; positions draw differently. */
    items a = {0}, b = {0}, d = {0};
    ferry_iterator *it = iter_new(ds, 42);
    collect(it, 8, &a);
    ferry_iterator_free(it);
    it = iter_new(ds, 42);
    collect(it, 8, &b);
    ferry_iterator_free(it);
    it = iter_new(ds, 43);
    collect(it, 8, &d);
    ferry_iterator_free(it);
    for (int i = 0; i < 8; i++) {
        ASSERT(strcmp(a.v[i], b.v[i]) == 0);
        ASSERT(strcmp(a.v[i], d.v[i]) != 0);
        if (i) ASSERT(strcmp(a.v[i], a.v[i - 1]) != 0);
    }
    items_free(&a);
    items_free(&b);
    items_free(&d);
    ASSERT_EQ(c.inits, c.finis);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(generator_bytes) {
    ferry_runtime *rt = rt_new();
    gen_cfg c = {.n = 4, .kind = GEN_BYTES, .fail = 1u << 2};
    ferry_dataset *ds = gen_dataset(rt, &c, 4);
    expect_stream(ds, "'s0' 's1' E 's3'");
    check_stream(ds, 10, 0);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(generator_option_errors) {
    ferry_runtime *rt = rt_new();
    ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 0}};
    gen_cfg c = {.n = 1};
    ferry_generator_options o = {.next = tgen_next, .num_components = 1, .specs = &spec, .user = &c};
    ferry_dataset *ds = (ferry_dataset *)1;
    ASSERT_EQ(ferry_dataset_generator(rt, NULL, &ds), FERRY_EINVAL);
    ASSERT(ds == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'opts'");
    ferry_generator_options bad = o;
    bad.next = NULL;
    ASSERT_EQ(ferry_dataset_generator(rt, &bad, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "options.next");
    bad = o;
    bad.num_components = 0;
    ASSERT_EQ(ferry_dataset_generator(rt, &bad, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "options.num_components");
    bad = o;
    bad.specs = NULL;
    ASSERT_EQ(ferry_dataset_generator(rt, &bad, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "options.specs");
    bad = o;
    bad.cardinality = -7;
    ASSERT_EQ(ferry_dataset_generator(rt, &bad, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "options.cardinality");
    ferry_tensor_spec bad_spec = {.dtype = (ferry_dtype)99};
    bad = o;
    bad.specs = &bad_spec;
    ASSERT_EQ(ferry_dataset_generator(rt, &bad, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "options.specs[0].dtype");
    bad_spec = (ferry_tensor_spec){.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 1, .dims = {-5}}};
    ASSERT_EQ(ferry_dataset_generator(rt, &bad, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "options.specs[0].shape.dims[0]");
    ASSERT_EQ(ferry_dataset_generator(NULL, &o, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'rt'");
    /* Without init the state is NULL; with a declared unknown-dim spec any size fits. */
    ASSERT_OK(ferry_dataset_generator(rt, &o, &ds));
    ferry_dataset_unref(ds);
    rt_done(rt);
}

static int null_state_next(ferry_context *ctx, void *state, ferry_element **out) {
    if (state != NULL) return ferry_context_fail(ctx, FERRY_EUSER, "state is not NULL");
    int64_t i = ferry_context_index(ctx);
    if (i >= 3) return FERRY_END;
    int64_t d = i + 1;
    ferry_tensor *t;
    ASSERT_OK(ferry_tensor_create(ferry_context_runtime(ctx), FERRY_DTYPE_INT64, 1, &d, &t));
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out);
}

TEST(generator_without_init_and_unknown_dims) {
    ferry_runtime *rt = rt_new();
    ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 1, .dims = {FERRY_UNKNOWN_DIM}}};
    ferry_generator_options o = {.next = null_state_next, .num_components = 1, .specs = &spec, .cardinality = 3};
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_generator(rt, &o, &ds));
    expect_stream(ds, "[0] [0,0] [0,0,0]");
    check_stream(ds, 10, 0);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

static void *fire_when_running(void *arg) {
    void **a = arg;
    gen_cfg *c = a[0];
    while (!atomic_load(&c->running)) sched_yield(); /* the generator's call has begun */
    ferry__cancel_fire(a[1]);
    return NULL;
}

TEST(generator_sees_cancellation) {
    ferry_runtime *rt = rt_new();
    gen_cfg c = {.n = -1, .kind = GEN_SLOW};
    ferry_dataset *ds = gen_dataset(rt, &c, FERRY_INFINITE);
    ferry__cancel cancel;
    ferry__ictx ctx = {.rt = rt, .cancel = &cancel, .seed = 1};
    ferry__status st;
    ferry__iter *it;
    ferry_element *e = NULL;
    /* Cancelled before the first next: no user call starts at all (not even init). */
    ASSERT_OK(ferry__cancel_init(&cancel, NULL));
    ASSERT_OK(ferry__iter_make(ds, &ctx, NULL, &it, &st));
    ferry__cancel_fire(&cancel);
    ASSERT_EQ(ferry__iter_next(it, &e, &st), FERRY_ECANCELED);
    ASSERT(e == NULL);
    ASSERT_STR_CONTAINS(st.msg, "no new call starts");
    ferry__iter_free(it);
    ASSERT_EQ(c.inits, 0);
    ASSERT_EQ(c.nexts, 0);
    ASSERT_EQ(c.finis, 0);
    ferry__cancel_fini(&cancel);
    /* Cancelled while next runs: the call sees it, returns, and fini runs once. */
    ASSERT_OK(ferry__cancel_init(&cancel, NULL));
    ASSERT_OK(ferry__iter_make(ds, &ctx, NULL, &it, &st));
    void *arg[2] = {&c, &cancel};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, fire_when_running, arg), 0);
    ASSERT_EQ(ferry__iter_next(it, &e, &st), FERRY_ECANCELED);
    ASSERT_EQ(pthread_join(th, NULL), 0);
    ASSERT(e == NULL);
    ASSERT_EQ(c.saw_cancel, 1);
    ferry__iter_free(it);
    ASSERT_EQ(c.inits, 1);
    ASSERT_EQ(c.finis, 1);
    ferry__cancel_fini(&cancel);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

/* Cancellation that fires while a user call runs (here: inside the generator's next for element
 * 2) starts no later user call: not the map function, predicate or dataset function on that
 * element, not the generator's next for element 3. The calls that had begun finish. No race: the
 * cancellation fires inside a call, and the checks are on which calls ran. */
typedef struct cancel_probe {
    ferry__cancel *root;
    _Atomic int64_t max_gen, max_fn; /* highest index each kind of call saw, -1: none */
} cancel_probe;

static void probe_note(_Atomic int64_t *max, int64_t i) {
    int64_t m = atomic_load(max);
    while (i > m && !atomic_compare_exchange_weak(max, &m, i)) {
    }
}

static int probe_next(ferry_context *ctx, void *state, ferry_element **out) {
    cancel_probe *p = state;
    int64_t i = ferry_context_index(ctx);
    probe_note(&p->max_gen, i);
    if (i == 2) ferry__cancel_fire(p->root);
    ferry_tensor *t;
    int rc = ferry_tensor_scalar_i64(ferry_context_runtime(ctx), i, &t);
    if (rc) return rc;
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out);
}

static int probe_init(ferry_context *ctx, void *user, void **state) {
    (void)ctx;
    *state = user;
    return FERRY_OK;
}

static int64_t probe_value(const ferry_element *e) {
    return *(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0));
}

static int probe_map(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)ctx;
    probe_note(&((cancel_probe *)user)->max_fn, probe_value(in));
    *out = in;
    return FERRY_OK;
}

static int probe_pred(ferry_context *ctx, const ferry_element *e, bool *keep, void *user) {
    (void)ctx;
    probe_note(&((cancel_probe *)user)->max_fn, probe_value(e));
    *keep = true;
    return FERRY_OK;
}

static int probe_inner(ferry_context *ctx, const ferry_element *e, ferry_dataset **out, void *user) {
    probe_note(&((cancel_probe *)user)->max_fn, probe_value(e));
    return ferry_dataset_range(ferry_context_runtime(ctx), 0, 1, 1, NULL, out);
}

TEST(no_call_starts_once_cancelled) {
    ferry_runtime *rt = rt_new();
    ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 0}};
    for (int kind = 0; kind < 6; kind++) {
        ferry__cancel root;
        ASSERT_OK(ferry__cancel_init(&root, NULL));
        cancel_probe p = {.root = &root};
        atomic_store(&p.max_gen, -1);
        atomic_store(&p.max_fn, -1);
        ferry_generator_options go = {.init = probe_init,
                                      .next = probe_next,
                                      .user = &p,
                                      .num_components = 1,
                                      .specs = &spec,
                                      .cardinality = FERRY_INFINITE};
        ferry_dataset *g, *ds = NULL;
        ASSERT_OK(ferry_dataset_generator(rt, &go, &g));
        ferry_map_options mo = {.num_parallel_calls = kind == 1 ? 2 : 0};
        ferry_interleave_options io = {
            .cycle_length = 1, .num_parallel_calls = kind == 4 ? 2 : 0, .num_outputs = 1, .output_specs = &spec};
        if (kind <= 1) ASSERT_OK(ferry_dataset_map(g, probe_map, &p, &mo, &ds)); /* inline, 2 threads */
        else if (kind == 2) ASSERT_OK(ferry_dataset_filter(g, probe_pred, &p, NULL, &ds));
        else if (kind <= 4) ASSERT_OK(ferry_dataset_interleave(g, probe_inner, &p, &io, &ds));
        else ds = ferry_dataset_ref(g); /* the generator alone */
        ferry__ictx ctx = {.rt = rt, .cancel = &root, .seed = 1};
        ferry__status st;
        ferry__iter *it;
        ASSERT_OK(ferry__iter_make(ds, &ctx, NULL, &it, &st));
        int rc = FERRY_OK;
        for (int i = 0; i < 100 && rc != FERRY_ECANCELED; i++) {
            ferry_element *e = NULL;
            rc = ferry__iter_next(it, &e, &st);
            ferry_element_free(e);
        }
        ASSERT_EQ(rc, FERRY_ECANCELED);
        ferry__iter_free(it);
        if (atomic_load(&p.max_gen) != 2 || atomic_load(&p.max_fn) >= 2)
            FAILF("kind %d: the generator's last call was for element %lld and the function's for %lld; once "
                  "cancelled in element 2's call, nothing may start (want 2 and below 2)",
                  kind, (long long)atomic_load(&p.max_gen), (long long)atomic_load(&p.max_fn));
        ferry__cancel_fini(&root);
        ferry_dataset_unref(ds);
        ferry_dataset_unref(g);
    }
    rt_done(rt);
}
