/*
 * bench_core.c - the engine's four benchmarks, each run side by side with its reference in one
 * process run, reporting medians over repetitions and ratios to the ideal.
 *
 *   P1 overlap: the producer burns 50 us of CPU per element (a calibrated loop), batch 32, the
 *      consumer burns 1.6 ms per batch, 320 batches. Ideal: max(producer total, consumer total).
 *      Reference: a hand-written producer thread with a bounded queue of batches.
 *      ferry: range -> map(burn, inline) -> batch(32) -> prefetch(AUTOTUNE).
 *   P2 latency: the map sleeps 200 us per element (like a slow read), parallel map, same
 *      consumer. Ideal: the consumer's total (the sleeps overlap).
 *      ferry: range -> map(sleep, 16 threads) -> batch(32) -> prefetch(AUTOTUNE); also unfused.
 *   P3 overhead: range -> map(identity, parallel) -> batch(256) -> prefetch(AUTOTUNE), elements/s;
 *      references: the map inline, and the parallel map unfused (a fixed reorder window keeps
 *      batch from fusing into the map, so every element crosses threads on its own).
 *   P4 start: time from ferry_iterator_create to the first batch of the P3 pipeline.
 *
 * Usage: bench_core [--reps N] [--only P1|P2|P3|P4]
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry.h"

#include "bench_util.h"

static volatile uint64_t sink;
static double loops_per_us;

static void burn_loops(uint64_t n) {
    uint64_t x = sink;
    for (uint64_t i = 0; i < n; i++) x = x * 6364136223846793005ull + 1442695040888963407ull;
    sink = x;
}

static void burn_us(double us) { burn_loops((uint64_t)(us * loops_per_us)); }

static void calibrate(void) {
    uint64_t n = 1000000;
    double best = 1e9;
    for (int i = 0; i < 7; i++) {
        double t0 = now_s();
        burn_loops(n);
        double t = now_s() - t0;
        if (t < best) best = t;
    }
    loops_per_us = (double)n / (best * 1e6);
}

/* ---- map functions ---------------------------------------------------------------------- */
static int map_burn(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)ctx;
    burn_us(*(const double *)user);
    *out = in;
    return FERRY_OK;
}

static int map_sleep(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    int64_t ns = (int64_t)(*(const double *)user * 1000.0);
    int rc = ferry_context_sleep(ctx, ns);
    if (rc != FERRY_OK) {
        ferry_element_free(in);
        return rc;
    }
    *out = in;
    return FERRY_OK;
}

static int map_identity(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)ctx;
    (void)user;
    *out = in;
    return FERRY_OK;
}

/* range(n) -> map(fn, threads) -> batch(b) -> prefetch(AUTOTUNE). A parallel map followed by
 * batch runs fused (map_and_batch) unless `unfused`: a fixed reorder window turns fusion off. */
static ferry_dataset *make_pipeline_opt(ferry_runtime *rt, int64_t n, ferry_map_fn fn, void *user, int threads,
                                        int64_t batch, int64_t prefetch, bool unfused) {
    ferry_dataset *r, *m, *b, *p;
    CHECK(ferry_dataset_range(rt, 0, n, 1, NULL, &r));
    ferry_map_options mo = {.num_parallel_calls = threads, .reorder_window = unfused ? 4096 : 0};
    CHECK(ferry_dataset_map(r, fn, user, &mo, &m));
    CHECK(ferry_dataset_batch(m, batch, NULL, &b));
    CHECK(ferry_dataset_prefetch(b, prefetch, NULL, &p));
    ferry_dataset_unref(r);
    ferry_dataset_unref(m);
    ferry_dataset_unref(b);
    return p;
}

static ferry_dataset *make_pipeline(ferry_runtime *rt, int64_t n, ferry_map_fn fn, void *user, int threads,
                                    int64_t batch, int64_t prefetch) {
    return make_pipeline_opt(rt, n, fn, user, threads, batch, prefetch, false);
}

/* Iterates all batches, burning consumer_us per batch; returns seconds and element count. */
static double run_epoch(ferry_dataset *ds, double consumer_us, int64_t *elements) {
    double t0 = now_s();
    ferry_iterator *it;
    CHECK(ferry_iterator_create(ds, NULL, &it));
    int64_t n = 0;
    for (;;) {
        ferry_element *e;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) break;
        if (rc != FERRY_OK) {
            fprintf(stderr, "next failed: %s\n", ferry_iterator_error(it));
            exit(1);
        }
        n += ferry_tensor_dim(ferry_element_get(e, 0), 0);
        ferry_element_free(e);
        if (consumer_us > 0) burn_us(consumer_us);
    }
    ferry_iterator_free(it);
    if (elements) *elements = n;
    return now_s() - t0;
}

/* ---- hand-written producer thread (the P1 reference) ------------------------------------ */
typedef struct handq {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t produced, consumed, total, cap;
    double per_elem_us;
    int batch;
} handq;

static void *hand_producer(void *arg) {
    handq *q = arg;
    for (int64_t i = 0; i < q->total; i++) {
        for (int k = 0; k < q->batch; k++) burn_us(q->per_elem_us);
        pthread_mutex_lock(&q->mu);
        while (q->produced - q->consumed >= q->cap) pthread_cond_wait(&q->cv, &q->mu);
        q->produced++;
        pthread_cond_broadcast(&q->cv);
        pthread_mutex_unlock(&q->mu);
    }
    return NULL;
}

static double run_hand(int64_t batches, int batch, double per_elem_us, double consumer_us) {
    handq q = {.total = batches, .cap = 4, .per_elem_us = per_elem_us, .batch = batch};
    pthread_mutex_init(&q.mu, NULL);
    pthread_cond_init(&q.cv, NULL);
    double t0 = now_s();
    pthread_t th;
    pthread_create(&th, NULL, hand_producer, &q);
    for (int64_t i = 0; i < batches; i++) {
        pthread_mutex_lock(&q.mu);
        while (q.produced == q.consumed) pthread_cond_wait(&q.cv, &q.mu);
        q.consumed++;
        pthread_cond_broadcast(&q.cv);
        pthread_mutex_unlock(&q.mu);
        burn_us(consumer_us);
    }
    pthread_join(th, NULL);
    double t = now_s() - t0;
    pthread_mutex_destroy(&q.mu);
    pthread_cond_destroy(&q.cv);
    return t;
}

static void p1(ferry_runtime *rt, int reps) {
    const int64_t batches = 320, batch = 32;
    double per_elem = 50.0, consumer = 1600.0;
    double ideal = fmax(batches * batch * per_elem, batches * consumer) * 1e-6;
    double *tf = calloc((size_t)reps, sizeof *tf), *th = calloc((size_t)reps, sizeof *th);
    ferry_dataset *ds = make_pipeline(rt, batches * batch, map_burn, &per_elem, 0, batch, FERRY_AUTOTUNE);
    ferry_dataset *seq = make_pipeline(rt, batches * batch, map_burn, &per_elem, 0, batch, 0);
    double tseq = run_epoch(seq, consumer, NULL);
    for (int r = 0; r < reps; r++) {
        th[r] = run_hand(batches, (int)batch, per_elem, consumer);
        tf[r] = run_epoch(ds, consumer, NULL);
    }
    double mf = bench_median(tf, reps), mh = bench_median(th, reps);
    printf("P1 overlap    ideal %.1f ms | no prefetch %.1f ms | hand-written thread %.1f ms (ideal/t %.3f) | "
           "ferry %.1f ms (ideal/t %.3f, goal >= 0.98)\n",
           ideal * 1e3, tseq * 1e3, mh * 1e3, ideal / mh, mf * 1e3, ideal / mf);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(seq);
    free(tf);
    free(th);
}

static void p2(ferry_runtime *rt, int reps) {
    const int64_t batches = 320, batch = 32;
    double sleep_us = 200.0, consumer = 1600.0;
    double ideal = batches * consumer * 1e-6;
    double *tf = calloc((size_t)reps, sizeof *tf), *tu = calloc((size_t)reps, sizeof *tu);
    ferry_dataset *ds = make_pipeline(rt, batches * batch, map_sleep, &sleep_us, 16, batch, FERRY_AUTOTUNE);
    ferry_dataset *un = make_pipeline_opt(rt, batches * batch, map_sleep, &sleep_us, 16, batch, FERRY_AUTOTUNE, true);
    for (int r = 0; r < reps; r++) {
        tf[r] = run_epoch(ds, consumer, NULL);
        tu[r] = run_epoch(un, consumer, NULL);
    }
    double mf = bench_median(tf, reps), mu = bench_median(tu, reps);
    printf("P2 latency    ideal %.1f ms | ferry (16 threads) %.1f ms (ideal/t %.3f, goal >= 0.95) | unfused %.1f ms "
           "(ideal/t %.3f)\n",
           ideal * 1e3, mf * 1e3, ideal / mf, mu * 1e3, ideal / mu);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(un);
    free(tf);
    free(tu);
}

static void p3(ferry_runtime *rt, int reps) {
    const int64_t n = 20 * 1000 * 1000;
    double *rate = calloc((size_t)reps, sizeof *rate), *rate1 = calloc((size_t)reps, sizeof *rate1);
    double *rate2 = calloc((size_t)reps, sizeof *rate2);
    ferry_dataset *ds = make_pipeline(rt, n, map_identity, NULL, FERRY_AUTOTUNE, 256, FERRY_AUTOTUNE);
    ferry_dataset *inl = make_pipeline(rt, n, map_identity, NULL, 0, 256, FERRY_AUTOTUNE);
    const int64_t n_un = n / 4; /* the unfused reference is slow: a quarter of the elements */
    ferry_dataset *un = make_pipeline_opt(rt, n_un, map_identity, NULL, FERRY_AUTOTUNE, 256, FERRY_AUTOTUNE, true);
    for (int r = 0; r < reps; r++) {
        int64_t got;
        double t = run_epoch(ds, 0, &got);
        if (got != n) {
            fprintf(stderr, "P3: got %lld elements, want %lld\n", (long long)got, (long long)n);
            exit(1);
        }
        rate[r] = (double)n / t;
        t = run_epoch(inl, 0, &got);
        rate1[r] = (double)n / t;
        t = run_epoch(un, 0, &got);
        rate2[r] = (double)n_un / t;
    }
    double m = bench_median(rate, reps), m1 = bench_median(rate1, reps), m2 = bench_median(rate2, reps);
    printf("P3 overhead   ferry parallel map %.1f M elements/s (goal >= 20) | inline map %.1f M elements/s | "
           "parallel map unfused %.1f M elements/s\n",
           m / 1e6, m1 / 1e6, m2 / 1e6);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(inl);
    ferry_dataset_unref(un);
    free(rate);
    free(rate1);
    free(rate2);
}

static void p4(ferry_runtime *rt, int reps) {
    int n = reps * 20;
    double *t = calloc((size_t)n, sizeof *t);
    ferry_dataset *ds = make_pipeline(rt, 1 << 20, map_identity, NULL, FERRY_AUTOTUNE, 256, FERRY_AUTOTUNE);
    for (int r = 0; r < n; r++) {
        double t0 = now_s();
        ferry_iterator *it;
        CHECK(ferry_iterator_create(ds, NULL, &it));
        ferry_element *e;
        CHECK(ferry_iterator_next(it, &e));
        t[r] = now_s() - t0;
        ferry_element_free(e);
        ferry_iterator_free(it);
    }
    double m = bench_median(t, n);
    printf("P4 start      first batch after %.3f ms (median of %d, goal <= 1 ms)\n", m * 1e3, n);
    ferry_dataset_unref(ds);
    free(t);
}

int main(int argc, char **argv) {
    int reps = 5;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
        else {
            fprintf(stderr, "usage: bench_core [--reps N] [--only P1|P2|P3|P4]\n");
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    calibrate();
    ferry_runtime *rt;
    CHECK(ferry_runtime_create(NULL, &rt));
    printf("ferry %s, %d reps, calibrated %.0f loops/us\n", ferry_version(), reps, loops_per_us);
    if (!only || strcmp(only, "P1") == 0) p1(rt, reps);
    if (!only || strcmp(only, "P2") == 0) p2(rt, reps);
    if (!only || strcmp(only, "P3") == 0) p3(rt, reps);
    if (!only || strcmp(only, "P4") == 0) p4(rt, reps);
    CHECK(ferry_runtime_free(rt));
    return 0;
}
