/*
 * handoff.h - a source and a map function that make a test hang (until the runner's alarm)
 * when an op holds ready elements back instead of handing them on.
 *
 * Position `slow_at` takes 5 ms (a real sleep, so it is slow however the machine is loaded); every
 * later position waits until the consumer has received position slow_at (at most 10 s, then it
 * notes a stall and goes on). An op that keeps slow_at in a local batch while it produces the
 * next position therefore stalls; one that hands on what is ready after a slow position never
 * does. No timing is measured: the wait is on the consumer's progress.
 * Include after runner.h; everything here is static.
 */
#ifndef FERRY_TEST_HANDOFF_H
#define FERRY_TEST_HANDOFF_H

#include <stdatomic.h>
#include <time.h>

#include "runner.h"

typedef struct handoff {
    int64_t n, slow_at;
    _Atomic int64_t received; /* positions the consumer has received */
    _Atomic int stalls;
} handoff;

/* The behaviour of position k (see above); FERRY_ECANCELED when the iterator is destroyed. */
static int handoff_wait(ferry_context *ctx, handoff *h, int64_t k) {
    if (k == h->slow_at) {
        struct timespec d = {0, 5 * 1000 * 1000};
        nanosleep(&d, NULL);
    } else if (k > h->slow_at) {
        /* after a stall, no more waiting: the test fails once instead of timing out */
        for (int i = 0; atomic_load(&h->received) <= h->slow_at && !atomic_load(&h->stalls); i++) {
            if (i == 50000) {
                atomic_fetch_add(&h->stalls, 1);
                break;
            }
            int rc = ferry_context_sleep(ctx, 200 * 1000);
            if (rc) return rc;
        }
    }
    return FERRY_OK;
}

static int handoff_init(ferry_context *ctx, void *user, void **state) {
    (void)ctx;
    *state = user;
    return FERRY_OK;
}

static int handoff_next(ferry_context *ctx, void *state, ferry_element **out) {
    handoff *h = state;
    int64_t k = ferry_context_index(ctx);
    if (k >= h->n) return FERRY_END;
    int rc = handoff_wait(ctx, h, k);
    if (rc) return rc;
    ferry_tensor *t;
    rc = ferry_tensor_scalar_i64(ferry_context_runtime(ctx), k, &t);
    if (rc) return rc;
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out);
}

static const ferry_tensor_spec handoff_spec = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 0}};

/* A generator source of n int64 scalars 0..n-1 behaving as above. */
__attribute__((unused)) static ferry_dataset *handoff_source(ferry_runtime *rt, handoff *h) {
    ferry_generator_options o = {.init = handoff_init,
                                 .next = handoff_next,
                                 .user = h,
                                 .num_components = 1,
                                 .specs = &handoff_spec,
                                 .cardinality = h->n};
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_generator(rt, &o, &ds));
    return ds;
}

/* A map function behaving as above on its element index (identity otherwise). */
__attribute__((unused)) static int handoff_map(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    int rc = handoff_wait(ctx, user, ferry_context_index(ctx));
    if (rc) {
        ferry_element_free(in);
        return rc;
    }
    *out = in;
    return FERRY_OK;
}

/* Reads ds to its end, counting what arrives in h->received; every position is OK and in order,
 * and nothing stalled. */
static void handoff_consume(ferry_dataset *ds, handoff *h) {
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    atomic_store(&h->received, 0);
    atomic_store(&h->stalls, 0);
    for (int64_t i = 0;; i++) {
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) {
            ASSERT_EQ(i, h->n);
            break;
        }
        ASSERT_OK(rc);
        ASSERT_EQ(*(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)), i);
        ferry_element_free(e);
        atomic_fetch_add(&h->received, 1);
    }
    ferry_iterator_free(it);
    ASSERT_EQ(atomic_load(&h->stalls), 0);
}

#endif
