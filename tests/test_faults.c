/*
 * test_faults.c - allocation failures and the byte budget.
 *
 * Fault injection: the runtime's allocator hook fails the k-th allocation (k = 1, 2, ...) of a
 * whole scenario (create runtime, build a pipeline with parallel map, batch, shuffle, cache and
 * prefetch, iterate it to the end, free everything). Every run must either succeed or report
 * FERRY_ENOMEM (from a constructor, or as an element error in its position), never crash, and
 * free every block: the hook counts live blocks, which must be 0 at the end. The loop ends at
 * the first k that the scenario completes without reaching.
 *
 * Budget: with a small memory budget and 4 KiB elements, the peak of budget_used stays within
 * the budget plus one element per producing thread, and the output is still complete.
 */
#include <pthread.h>

#include "runner.h"

typedef struct fault_alloc {
    pthread_mutex_t mu;
    long count, fail_at, live;
    bool failed;
} fault_alloc;

static void *fault_fn(void *user, void *ptr, size_t old_size, size_t new_size) {
    fault_alloc *f = user;
    (void)old_size;
    pthread_mutex_lock(&f->mu);
    if (new_size == 0) {
        if (ptr) f->live--;
        pthread_mutex_unlock(&f->mu);
        free(ptr);
        return NULL;
    }
    long n = ++f->count;
    bool fail = n == f->fail_at;
    if (fail) f->failed = true;
    pthread_mutex_unlock(&f->mu);
    if (fail) return NULL;
    void *p = realloc(ptr, new_size);
    if (p && !ptr) {
        pthread_mutex_lock(&f->mu);
        f->live++;
        pthread_mutex_unlock(&f->mu);
    }
    return p;
}

static int map_square(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)user;
    ferry_tensor *t;
    int rc = ferry_tensor_scalar_i64(ferry_context_runtime(ctx), 0, &t);
    if (rc) {
        ferry_element_free(in);
        return rc;
    }
    int64_t v = *(const int64_t *)ferry_tensor_data(ferry_element_get(in, 0));
    *(int64_t *)ferry_tensor_mutable_data(t) = v * v;
    rc = ferry_element_set(in, 0, t);
    if (rc) {
        ferry_element_free(in);
        return rc;
    }
    *out = in;
    return FERRY_OK;
}

#define STEP(call)                                                                                                     \
    do {                                                                                                               \
        int rc_ = (call);                                                                                              \
        if (rc_ != FERRY_OK) {                                                                                         \
            if (rc_ != FERRY_ENOMEM) FAILF("%s: unexpected %s: %s", #call, ferry_error_name(rc_), ferry_last_error()); \
            goto done;                                                                                                 \
        }                                                                                                              \
    } while (0)

/* Runs the scenario once; returns the number of elements and errors seen. */
static void scenario(fault_alloc *f, int threads, int64_t *elements, int64_t *errors) {
    ferry_runtime *rt = NULL;
    ferry_dataset *r = NULL, *m = NULL, *b = NULL, *s = NULL, *c = NULL, *p = NULL;
    ferry_iterator *it = NULL;
    *elements = *errors = 0;
    ferry_runtime_options ro = {.alloc = fault_fn, .alloc_user = f};
    STEP(ferry_runtime_create(&ro, &rt));
    STEP(ferry_dataset_range(rt, 0, 40, 1, NULL, &r));
    ferry_map_options mo = {.num_parallel_calls = threads};
    STEP(ferry_dataset_map(r, map_square, NULL, &mo, &m));
    STEP(ferry_dataset_shuffle(m, 8, NULL, &s));
    STEP(ferry_dataset_batch(s, 3, NULL, &b));
    STEP(ferry_dataset_cache(b, NULL, &c));
    STEP(ferry_dataset_prefetch(c, 2, NULL, &p));
    STEP(ferry_iterator_create(p, NULL, &it));
    for (int guard = 0; guard < 1000; guard++) {
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) break;
        if (rc == FERRY_OK) {
            (*elements)++;
            ferry_element_free(e);
        } else {
            if (rc != FERRY_ENOMEM) FAILF("element error %s: %s", ferry_error_name(rc), ferry_iterator_error(it));
            ASSERT(e == NULL);
            ASSERT(strlen(ferry_iterator_error(it)) > 0);
            (*errors)++;
        }
    }
done:
    ferry_iterator_free(it);
    ferry_dataset_unref(p);
    ferry_dataset_unref(c);
    ferry_dataset_unref(b);
    ferry_dataset_unref(s);
    ferry_dataset_unref(m);
    ferry_dataset_unref(r);
    if (rt) {
        int rc = ferry_runtime_free(rt);
        if (rc != FERRY_OK) FAILF("leak after failing allocation %ld: %s", f->fail_at, ferry_last_error());
    }
}

static void run_faults(int threads) {
    fault_alloc f = {.fail_at = 0};
    pthread_mutex_init(&f.mu, NULL);
    int64_t elements, errors;
    scenario(&f, threads, &elements, &errors);
    ASSERT_EQ(elements, 14);
    ASSERT_EQ(errors, 0);
    ASSERT_EQ(f.live, 0);
    long total = f.count, runs = 0, failures_seen = 0;
    for (long k = 1;; k++) {
        f.count = 0;
        f.fail_at = k;
        f.failed = false;
        scenario(&f, threads, &elements, &errors);
        if (f.live != 0) FAILF("%ld blocks leaked after failing allocation %ld", f.live, k);
        runs++;
        if (!f.failed) break;
        failures_seen++;
        if (k > total * 3 + 1000) FAILF("allocation count does not converge (%ld)", k);
    }
    printf("  threads %d: %ld allocations in a clean run, %ld runs with one failing allocation each\n", threads, total,
           failures_seen);
    pthread_mutex_destroy(&f.mu);
}

TEST(alloc_failure_at_every_site_inline) { run_faults(0); }
TEST(alloc_failure_at_every_site_parallel) { run_faults(2); }

/* ---- budget ----------------------------------------------------------------------------- */
static int map_big(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)user;
    int64_t v = *(const int64_t *)ferry_tensor_data(ferry_element_get(in, 0));
    ferry_element_free(in);
    int64_t dims[1] = {512}; /* 4 KiB */
    ferry_tensor *t;
    int rc = ferry_tensor_create(ferry_context_runtime(ctx), FERRY_DTYPE_INT64, 1, dims, &t);
    if (rc) return rc;
    int64_t *d = ferry_tensor_mutable_data(t);
    for (int i = 0; i < 512; i++) d[i] = v;
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out);
}

static void budget_case(int threads, int64_t shuffle, int64_t prefetch) {
    size_t budget = 64 * 1024, elem = 4096;
    ferry_runtime_options ro = {.memory_budget = budget};
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(&ro, &rt));
    ferry_dataset *r, *m, *s, *p;
    ASSERT_OK(ferry_dataset_range(rt, 0, 500, 1, NULL, &r));
    ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 1, .dims = {512}}};
    ferry_map_options mo = {
        .num_parallel_calls = threads, .reorder_window = 64, .num_outputs = 1, .output_specs = &spec};
    ASSERT_OK(ferry_dataset_map(r, map_big, NULL, &mo, &m));
    ASSERT_OK(ferry_dataset_shuffle(m, shuffle, NULL, &s));
    ASSERT_OK(ferry_dataset_prefetch(s, prefetch, NULL, &p));
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(p, NULL, &it));
    int64_t n = 0, sum = 0;
    for (;;) {
        ferry_element *e;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) break;
        ASSERT_OK(rc);
        sum += ((const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)))[0];
        n++;
        ferry_element_free(e);
    }
    ASSERT_EQ(n, 500);
    ASSERT_EQ(sum, 499 * 500 / 2);
    ferry_runtime_stats rs;
    ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
    int producers = (threads > 0 ? threads : 0) + 1 /* prefetch */ + 1 /* shuffle on the consumer side */;
    printf("  threads %d shuffle %lld prefetch %lld: peak %zu bytes, budget %zu, bound %zu\n", threads,
           (long long)shuffle, (long long)prefetch, rs.budget_used_peak, budget, budget + (size_t)producers * elem);
    ASSERT_LE(rs.budget_used_peak, budget + (size_t)producers * elem);
    ASSERT(rs.budget_used_peak > 0);
    ferry_iterator_free(it);
    ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
    ASSERT_EQ(rs.budget_used, 0);
    ferry_dataset_unref(p);
    ferry_dataset_unref(s);
    ferry_dataset_unref(m);
    ferry_dataset_unref(r);
    ASSERT_OK(ferry_runtime_free(rt));
}

TEST(budget_never_exceeded) {
    budget_case(0, 100, 32);
    budget_case(2, 100, 32);
    budget_case(4, 10, FERRY_AUTOTUNE);
    budget_case(8, 1000, 64);
}
