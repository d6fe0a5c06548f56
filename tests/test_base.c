/*
 * test_base.c - base/ and core/ pieces on their own, below any dataset: the byte budget (try,
 * force, release, the peak, a wait that another thread's release ends, a wait that a
 * cancellation or the force flag ends), the cancel tree (firing reaches every scope below and
 * calls their wakers, never the scopes above; removed wakers are not called), the little-endian
 * loads and stores, the random generator's determinism and range, user-given spec checks, and
 * anchors (snapshot, save at the consumer's position, restore there, prune).
 * Every wait here waits for the state it tests (a flag another thread sets), never for time.
 */
#include "stream_check.h"

#include "core/core.h"

/* ---- the byte budget ------------------------------------------------------------------------ */
TEST(budget_counts_within_its_limit) {
    ferry__budget b;
    ASSERT_OK(ferry__budget_init(&b, 100));
    ASSERT_EQ(ferry__budget_try(&b, 60), true);
    ASSERT_EQ(ferry__budget_try(&b, 41), false); /* 101 > 100: not counted */
    ASSERT_EQ(atomic_load(&b.used), 60);
    ASSERT_EQ(ferry__budget_try(&b, 40), true); /* exactly the limit */
    ferry__budget_force(&b, 30);                /* the one element a stage may always hold */
    ASSERT_EQ(atomic_load(&b.used), 130);
    ASSERT_EQ(atomic_load(&b.peak), 130);
    ferry__budget_release(&b, 130);
    ASSERT_EQ(atomic_load(&b.used), 0);
    ASSERT_EQ(atomic_load(&b.peak), 130); /* the peak stays */
    ASSERT_EQ(ferry__budget_try(&b, 0), true);
    ferry__budget_fini(&b);
}

typedef struct budget_waiter {
    ferry__budget *b;
    size_t n;
    const _Atomic int *cancelled, *force;
    _Atomic int started, rc, done;
} budget_waiter;

static bool flag_is_set(void *flag) { return atomic_load((const _Atomic int *)flag) != 0; }

static void *budget_wait_thread(void *arg) {
    budget_waiter *w = arg;
    atomic_store(&w->started, 1);
    atomic_store(&w->rc, ferry__budget_wait(w->b, w->n, w->cancelled, w->force ? flag_is_set : NULL,
                                            (void *)(uintptr_t)w->force));
    atomic_store(&w->done, 1);
    return NULL;
}

static void wait_flag(_Atomic int *flag) {
    while (!atomic_load(flag)) ferry__sleep_ns(100000);
}

TEST(budget_wait_ends_on_release_cancel_or_force) {
    ferry__budget b;
    ASSERT_OK(ferry__budget_init(&b, 100));
    ASSERT_EQ(ferry__budget_try(&b, 100), true);
    /* a release makes room */
    budget_waiter w = {.b = &b, .n = 50};
    ferry__thread t;
    ASSERT_EQ(ferry__thread_start(&t, "budget-waiter", budget_wait_thread, &w), 0);
    wait_flag(&w.started);
    ASSERT_EQ(atomic_load(&w.done), 0); /* 150 > 100: it cannot have counted */
    ferry__budget_release(&b, 60);
    ferry__thread_join(&t);
    ASSERT_EQ(atomic_load(&w.rc), FERRY_OK);
    ASSERT_EQ(atomic_load(&b.used), 90);
    /* a cancellation ends the wait without counting */
    _Atomic int cancelled = 0;
    budget_waiter c = {.b = &b, .n = 50, .cancelled = &cancelled};
    ASSERT_EQ(ferry__thread_start(&t, "budget-waiter", budget_wait_thread, &c), 0);
    wait_flag(&c.started);
    atomic_store(&cancelled, 1);
    ferry__thread_join(&t);
    ASSERT_EQ(atomic_load(&c.rc), FERRY_ECANCELED);
    ASSERT_EQ(atomic_load(&b.used), 90);
    /* the force flag counts the bytes over the limit */
    _Atomic int force = 0;
    budget_waiter f = {.b = &b, .n = 50, .force = &force};
    ASSERT_EQ(ferry__thread_start(&t, "budget-waiter", budget_wait_thread, &f), 0);
    wait_flag(&f.started);
    atomic_store(&force, 1);
    ferry__thread_join(&t);
    ASSERT_EQ(atomic_load(&f.rc), FERRY_OK);
    ASSERT_EQ(atomic_load(&b.used), 140);
    ferry__budget_release(&b, 140);
    ferry__budget_fini(&b);
}

/* ---- the cancel tree ------------------------------------------------------------------------ */
static void count_wake(void *arg) { atomic_fetch_add((_Atomic int *)arg, 1); }

TEST(cancel_fires_down_the_tree_never_up) {
    ferry__cancel root, a, b, a1;
    ASSERT_OK(ferry__cancel_init(&root, NULL));
    ASSERT_OK(ferry__cancel_init(&a, &root));
    ASSERT_OK(ferry__cancel_init(&b, &root));
    ASSERT_OK(ferry__cancel_init(&a1, &a));
    _Atomic int n_root = 0, n_a = 0, n_a1 = 0, n_b = 0, n_gone = 0;
    ferry__waker w_root = {.fn = count_wake, .arg = (void *)&n_root}, w_a = {.fn = count_wake, .arg = (void *)&n_a};
    ferry__waker w_a1 = {.fn = count_wake, .arg = (void *)&n_a1}, w_b = {.fn = count_wake, .arg = (void *)&n_b};
    ferry__waker w_gone = {.fn = count_wake, .arg = (void *)&n_gone};
    ferry__cancel_add_waker(&root, &w_root);
    ferry__cancel_add_waker(&a, &w_a);
    ferry__cancel_add_waker(&a1, &w_a1);
    ferry__cancel_add_waker(&a1, &w_gone);
    ferry__cancel_add_waker(&b, &w_b);
    ferry__cancel_remove_waker(&a1, &w_gone);
    ferry__cancel_fire(&a);
    ASSERT_EQ(ferry__cancelled(&a), true);
    ASSERT_EQ(ferry__cancelled(&a1), true);
    ASSERT_EQ(ferry__cancelled(&root), false); /* never up */
    ASSERT_EQ(ferry__cancelled(&b), false);    /* nor sideways */
    ASSERT_EQ(atomic_load(&n_a), 1);
    ASSERT_EQ(atomic_load(&n_a1), 1);
    ASSERT_EQ(atomic_load(&n_gone), 0); /* removed: not called */
    ASSERT_EQ(atomic_load(&n_root) + atomic_load(&n_b), 0);
    ferry__cancel_fire(&a); /* the flags stay; the wakers are called again (a waker only wakes) */
    ASSERT_EQ(ferry__cancelled(&a1), true);
    ASSERT_EQ(atomic_load(&n_a), 2);
    ASSERT_EQ(atomic_load(&n_a1), 2);
    ASSERT_EQ(ferry__cancelled(&root), false);
    ferry__cancel_fire(&root); /* reaches every scope below it */
    ASSERT_EQ(ferry__cancelled(&b), true);
    ASSERT_EQ(atomic_load(&n_root), 1);
    ASSERT_EQ(atomic_load(&n_b), 1);
    ASSERT_EQ(atomic_load(&n_a), 3);
    ASSERT_EQ(atomic_load(&n_a1), 3);
    ASSERT_EQ(atomic_load(&n_gone), 0);
    ferry__cancel_remove_waker(&root, &w_root);
    ferry__cancel_remove_waker(&a, &w_a);
    ferry__cancel_remove_waker(&a1, &w_a1);
    ferry__cancel_remove_waker(&b, &w_b);
    ferry__cancel_fini(&a1);
    ferry__cancel_fini(&a);
    ferry__cancel_fini(&b);
    ferry__cancel_fini(&root);
    ASSERT_EQ(ferry__cancelled(NULL), false);
}

/* ---- byte order ----------------------------------------------------------------------------- */
TEST(little_endian_loads_and_stores) {
    uint8_t b[12] = {0};
    ferry__store_le32(b + 1, 0x11223344u); /* unaligned on purpose */
    ASSERT_EQ(b[1], 0x44);
    ASSERT_EQ(b[4], 0x11);
    ASSERT_EQ(ferry__load_le32(b + 1), 0x11223344u);
    ferry__store_le64(b + 3, 0x0102030405060708ull);
    ASSERT_EQ(b[3], 0x08);
    ASSERT_EQ(b[10], 0x01);
    ASSERT_EQ(ferry__load_le64(b + 3), 0x0102030405060708ull);
    const uint8_t tf[8] = {0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80}; /* a TFRecord length */
    ASSERT_EQ(ferry__load_le64(tf), 0x8000000000000010ull);
}

/* ---- random generator ------------------------------------------------------------------------ */
TEST(rng_is_deterministic_and_in_range) {
    ferry__rng a, b;
    ferry__rng_seed(&a, 42);
    ferry__rng_seed(&b, 42);
    for (int i = 0; i < 1000; i++) ASSERT_EQ(ferry__rng_next(&a), ferry__rng_next(&b));
    int64_t hist[7] = {0};
    for (int i = 0; i < 70000; i++) {
        uint64_t v = ferry__rng_below(&a, 7);
        ASSERT_LE(v, 6);
        hist[v]++;
    }
    for (int i = 0; i < 7; i++) ASSERT_EQ(hist[i] > 9000 && hist[i] < 11000, true); /* ~10000 each */
    for (int i = 0; i < 1000; i++) {
        double u = ferry__rng_uniform(&a);
        ASSERT_EQ(u >= 0.0 && u < 1.0, true);
    }
    ferry__rng_seed(&b, 43);
    ferry__rng_seed(&a, 42);
    ASSERT_NE(ferry__rng_next(&a), ferry__rng_next(&b));
}

/* ---- user-given specs ----------------------------------------------------------------------- */
TEST(spec_validation_names_the_field) {
    ferry_tensor_spec ok = {FERRY_DTYPE_FLOAT32, {2, {FERRY_UNKNOWN_DIM, 3}}};
    ASSERT_OK(ferry__spec_validate(&ok, "f", "options.output_specs", 0));
    ferry_tensor_spec any_rank = {FERRY_DTYPE_INT64, {FERRY_UNKNOWN_RANK, {0}}};
    ASSERT_OK(ferry__spec_validate(&any_rank, "f", "options.output_specs", 0));
    ferry_tensor_spec no_dtype = {FERRY_DTYPE_INVALID, {0, {0}}};
    ASSERT_EQ(ferry__spec_validate(&no_dtype, "ferry_dataset_map", "options.output_specs", 2), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_dataset_map: options.output_specs[2].dtype is 0");
    ferry_tensor_spec deep = {FERRY_DTYPE_INT64, {FERRY_MAX_RANK + 1, {0}}};
    ASSERT_EQ(ferry__spec_validate(&deep, "g", "options.specs", 1), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "options.specs[1].shape.rank");
    ferry_tensor_spec neg = {FERRY_DTYPE_INT64, {1, {-7}}};
    ASSERT_EQ(ferry__spec_validate(&neg, "g", "options.specs", 0), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "dims[0] is -7");
}

/* ---- anchors ------------------------------------------------------------------------------- */
static int64_t next_value(ferry__iter *it) {
    ferry_element *e = NULL;
    ferry__status st;
    int rc = ferry__iter_next(it, &e, &st);
    if (rc) return rc == FERRY_END ? -1 : -2;
    int64_t v = *(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0));
    ferry_element_free(e);
    return v;
}

/* The driving thread runs ahead of the consumer; a save at the consumer's position writes the
 * latest snapshot at or before it and the positions to replay; restore lands exactly there, and
 * pruning keeps what a later save needs. */
TEST(anchor_restores_the_consumer_position_from_a_snapshot) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_range(rt, 0, 1000, 1, NULL, &ds));
    ferry__cancel root;
    ASSERT_OK(ferry__cancel_init(&root, NULL));
    ferry__ictx ictx = {.rt = rt, .cancel = &root};
    ferry__status st;
    ferry__iter *in;
    ASSERT_OK(ferry__iter_make(ds, &ictx, NULL, &in, &st));
    ferry__anchor a;
    ASSERT_OK(ferry__anchor_init(&a, rt, 16, &st));
    ASSERT_OK(ferry__anchor_take(&a, in, 0, true, &st));
    for (int64_t pos = 1; pos <= 300; pos++) {
        ASSERT_EQ(next_value(in), pos - 1);
        ASSERT_OK(ferry__anchor_take(&a, in, pos, false, &st));
    }
    ASSERT(a.n >= 2);
    int64_t consumers[] = {0, 5, 150, 299, 300};
    for (size_t k = 0; k < sizeof consumers / sizeof consumers[0]; k++) {
        int64_t c = consumers[k];
        ferry__writer w;
        ferry__writer_init(&w, &rt->alloc);
        if (k == 3) ferry__anchor_prune(&a, 150); /* a save at 150 was the last one that could need older */
        ASSERT_OK(ferry__anchor_write(&a, c, &w, &st));
        ASSERT(!w.failed);
        ferry__reader r;
        ferry__reader_init(&r, w.data, w.size);
        ferry__iter *back;
        int64_t replayed = -1;
        ASSERT_OK(ferry__anchor_restore(ds, &ictx, &r, &back, &replayed, &st));
        ASSERT(replayed >= 0 && replayed <= c);
        ASSERT_EQ(next_value(back), c); /* exactly the consumer's next */
        ferry__iter_free(back);
        ferry__writer_fini(&w);
    }
    ferry__anchor_fini(&a);
    ferry__iter_free(in);
    ferry__cancel_fini(&root);
    ferry_dataset_unref(ds);
    rt_done(rt);
}
