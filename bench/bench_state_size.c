/*
 * bench_state_size.c - how big a saved iterator state is, for a few typical pipelines saved in
 * the middle of an epoch (with prefetch buffers full and parallel-map calls in flight), and how
 * long save and restore take. Elements are never stored in a state, so sizes stay small and do
 * not grow with element size or buffer depth.
 *
 * Usage: bench_state_size
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry.h"

#include "bench_util.h"

/* 64 KiB of float32 per element, like a decoded image. */
static int make_image(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)user;
    ferry_element_free(in);
    int64_t dims[3] = {64, 64, 4};
    ferry_tensor *t;
    int rc = ferry_tensor_create(ferry_context_runtime(ctx), FERRY_DTYPE_FLOAT32, 3, dims, &t);
    if (rc) return rc;
    float *d = ferry_tensor_mutable_data(t);
    for (int i = 0; i < 64 * 64 * 4; i++) d[i] = (float)ferry_context_uniform(ctx);
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out);
}

static const ferry_tensor_spec image_spec = {.dtype = FERRY_DTYPE_FLOAT32, .shape = {.rank = 3, .dims = {64, 64, 4}}};

static void report(const char *name, ferry_dataset *ds, int consume) {
    ferry_iterator *it;
    CHECK(ferry_iterator_create(ds, NULL, &it));
    for (int i = 0; i < consume; i++) {
        ferry_element *e;
        CHECK(ferry_iterator_next(it, &e));
        ferry_element_free(e);
    }
    double t0 = now_s();
    ferry_blob *b;
    CHECK(ferry_iterator_save(it, &b));
    double t_save = now_s() - t0;
    t0 = now_s();
    ferry_iterator *r;
    CHECK(ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), NULL, &r));
    ferry_element *e;
    CHECK(ferry_iterator_next(r, &e));
    double t_restore = now_s() - t0;
    ferry_element_free(e);
    printf("| %-58s | %6d | %7zu | %8.3f | %10.3f |\n", name, consume, ferry_blob_size(b), t_save * 1e3,
           t_restore * 1e3);
    ferry_blob_free(b);
    ferry_iterator_free(r);
    ferry_iterator_free(it);
}

int main(void) {
    ferry_runtime *rt;
    CHECK(ferry_runtime_create(NULL, &rt));
    printf("| pipeline (saved mid-epoch) | elements consumed | state bytes | save ms | restore+first ms |\n");
    printf("|---|---|---|---|---|\n");
    ferry_dataset *r, *m, *b, *p, *s, *rep, *c;
    CHECK(ferry_dataset_range(rt, 0, 1 << 20, 1, NULL, &r));

    ferry_map_options mo = {.num_parallel_calls = 4, .num_outputs = 1, .output_specs = &image_spec};
    CHECK(ferry_dataset_map(r, make_image, NULL, &mo, &m));
    CHECK(ferry_dataset_batch(m, 32, &(ferry_batch_options){.drop_remainder = true}, &b));
    CHECK(ferry_dataset_prefetch(b, 8, NULL, &p));
    report("range -> map(4 threads, 64 KiB out) -> batch(32) -> prefetch(8)", p, 10);
    ferry_dataset_unref(p);
    ferry_dataset_unref(b);
    ferry_dataset_unref(m);

    ferry_shuffle_options so = {.seed = 1};
    CHECK(ferry_dataset_shuffle(r, 10000, &so, &s));
    CHECK(ferry_dataset_map(s, make_image, NULL, &mo, &m));
    CHECK(ferry_dataset_batch(m, 32, &(ferry_batch_options){.drop_remainder = true}, &b));
    CHECK(ferry_dataset_prefetch(b, FERRY_AUTOTUNE, NULL, &p));
    report("range -> shuffle(10000) -> map(4 threads) -> batch(32) -> prefetch(AUTOTUNE)", p, 400);
    ferry_dataset_unref(p);
    ferry_dataset_unref(b);
    ferry_dataset_unref(m);
    ferry_dataset_unref(s);

    ferry_dataset *small;
    CHECK(ferry_dataset_range(rt, 0, 5000, 1, NULL, &small));
    CHECK(ferry_dataset_cache(small, NULL, &c));
    CHECK(ferry_dataset_repeat(c, FERRY_INFINITE, NULL, &rep));
    CHECK(ferry_dataset_shuffle(rep, 1000, &so, &s));
    CHECK(ferry_dataset_batch(s, 64, NULL, &b));
    CHECK(ferry_dataset_prefetch(b, 4, NULL, &p));
    report("range(5000) -> cache -> repeat -> shuffle(1000) -> batch(64) -> prefetch(4)", p, 200);
    ferry_dataset_unref(p);
    ferry_dataset_unref(b);
    ferry_dataset_unref(s);
    ferry_dataset_unref(rep);
    ferry_dataset_unref(c);
    ferry_dataset_unref(small);
    ferry_dataset_unref(r);
    CHECK(ferry_runtime_free(rt));
    return 0;
}
