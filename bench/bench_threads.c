/*
 * bench_threads.c - does ferry keep within its cpu budget when its consumer only waits?
 *
 * The pipeline is the one a user writes with every knob on AUTOTUNE:
 *     range -> map(A, AUTOTUNE) -> map(B, AUTOTUNE) -> batch(64) -> prefetch(AUTOTUNE)
 * where A computes 64 cosines per element (about 1.5 us) and B 16 (about 0.4 us), and the
 * consumer takes each batch and frees it: it only waits, so the pipeline is the bottleneck and
 * every busy core is ferry's. For cpu_budget 1, 2 and 8 (on this machine's cores whatever they
 * are), one process run measures per epoch: wall seconds, process CPU seconds, CPU seconds per
 * wall second (the cores kept busy), the most ferry threads working at once
 * (ferry_runtime_stats.threads_busy_peak), the most alive at once (sampled every 16 batches: a
 * thread that waits for another stage does not count as working, so another may start) and the
 * threads started, elements per second. Medians of --reps epochs.
 * Goals: cpu_budget 1 keeps at most 1 core busy (CPU/wall <= 1.05, the consumer's waiting
 * included); no budget has more ferry threads working at once than it allows, plus those the
 * executor was granted beyond it (ferry_runtime_stats.threads_granted_peak: granted while tasks
 * waited for a worker and the process used under min(budget, cores) - 0.5 cores, as the header
 * says).
 *
 * Usage: bench_threads [--reps N] [--elements N]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry.h"

#include "bench_util.h"

/* i (int64 scalar) -> float32[16]: `rounds` cosines per output entry, from the element's index. */
static int work(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    int rounds = *(const int *)user;
    const ferry_tensor *t = ferry_element_get(in, 0);
    float seed = ferry_tensor_dtype(t) == FERRY_DTYPE_INT64 ? (float)*(const int64_t *)ferry_tensor_data(t)
                                                            : ((const float *)ferry_tensor_data(t))[0];
    ferry_element_free(in);
    const int64_t dims[1] = {16};
    ferry_tensor *o;
    int rc = ferry_tensor_create(ferry_context_runtime(ctx), FERRY_DTYPE_FLOAT32, 1, dims, &o);
    if (rc) return rc;
    float *p = ferry_tensor_mutable_data(o);
    for (int k = 0; k < 16; k++) {
        float a = seed * 0.001f + (float)k;
        for (int r = 0; r < rounds / 16; r++) a = cosf(a) + 0.5f;
        p[k] = a;
    }
    return ferry_element_create(ferry_context_runtime(ctx), 1, &o, out); /* takes o */
}

typedef struct result {
    double wall, cpu, busy, rate;
    int max_live, busy_peak, granted_peak;
    int64_t started;
} result;

static result run_budget(int budget, int64_t n, int reps) {
    ferry_runtime_options ro = {.cpu_budget = budget};
    ferry_runtime *rt;
    CHECK(ferry_runtime_create(&ro, &rt));
    static int heavy = 64, light = 16;
    const ferry_tensor_spec spec = {FERRY_DTYPE_FLOAT32, {1, {16}}};
    ferry_dataset *r, *a, *b, *bt, *p;
    CHECK(ferry_dataset_range(rt, 0, n, 1, NULL, &r));
    ferry_map_options mo = {.num_parallel_calls = FERRY_AUTOTUNE, .num_outputs = 1, .output_specs = &spec};
    CHECK(ferry_dataset_map(r, work, &heavy, &mo, &a));
    CHECK(ferry_dataset_map(a, work, &light, &mo, &b));
    CHECK(ferry_dataset_batch(b, 64, NULL, &bt));
    CHECK(ferry_dataset_prefetch(bt, FERRY_AUTOTUNE, NULL, &p));
    double *wall = calloc((size_t)reps, sizeof *wall), *cpu = calloc((size_t)reps, sizeof *cpu);
    result res = {0};
    for (int k = 0; k < reps; k++) {
        ferry_runtime_stats s0, s;
        CHECK(ferry_runtime_stats_get(rt, &s0));
        double t0 = now_s(), c0 = cpu_s();
        ferry_iterator *it;
        CHECK(ferry_iterator_create(p, NULL, &it));
        int64_t got = 0;
        for (;;) {
            ferry_element *e;
            int rc = ferry_iterator_next(it, &e);
            if (rc == FERRY_END) break;
            CHECK(rc);
            got += ferry_tensor_dim(ferry_element_get(e, 0), 0);
            ferry_element_free(e);
            if ((got & 1023) == 0) { /* every 16th batch */
                CHECK(ferry_runtime_stats_get(rt, &s));
                if (s.threads_live > res.max_live) res.max_live = s.threads_live;
            }
        }
        ferry_iterator_free(it);
        wall[k] = now_s() - t0;
        cpu[k] = cpu_s() - c0;
        CHECK(ferry_runtime_stats_get(rt, &s));
        res.started += s.threads_started - s0.threads_started;
        res.busy_peak = s.threads_busy_peak;
        res.granted_peak = s.threads_granted_peak;
        if (got != n) {
            fprintf(stderr, "got %lld elements, want %lld\n", (long long)got, (long long)n);
            exit(1);
        }
    }
    double busy[64];
    for (int k = 0; k < reps && k < 64; k++) busy[k] = cpu[k] / wall[k];
    res.busy = bench_median(busy, reps < 64 ? reps : 64);
    res.wall = bench_median(wall, reps);
    res.cpu = bench_median(cpu, reps);
    res.rate = (double)n / res.wall;
    res.started /= reps;
    free(wall);
    free(cpu);
    ferry_dataset_unref(p);
    ferry_dataset_unref(bt);
    ferry_dataset_unref(b);
    ferry_dataset_unref(a);
    ferry_dataset_unref(r);
    CHECK(ferry_runtime_free(rt));
    return res;
}

int main(int argc, char **argv) {
    int reps = 5;
    int64_t n = 200000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--elements") == 0 && i + 1 < argc) n = atoll(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_threads [--reps N] [--elements N]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 64 || n < 64) {
        fprintf(stderr, "bench_threads: --reps 1..64, --elements >= 64\n");
        return 2;
    }
    printf("ferry %s: range -> map(64 cos, AUTOTUNE) -> map(16 cos, AUTOTUNE) -> batch(64) -> prefetch(AUTOTUNE),\n"
           "%lld elements, the consumer only waits; medians of %d epochs\n\n",
           ferry_version(), (long long)n, reps);
    printf("%-10s %9s %9s %10s %12s %8s %12s %10s %12s\n", "cpu_budget", "wall s", "CPU s", "CPU/wall", "max working",
           "granted", "max alive", "started", "elements/s");
    const int budgets[] = {1, 2, 8};
    bool ok = true;
    for (int b = 0; b < 3; b++) {
        result r = run_budget(budgets[b], n, reps);
        printf("%-10d %9.3f %9.3f %10.2f %12d %8d %12d %10lld %12.0f\n", budgets[b], r.wall, r.cpu, r.busy, r.busy_peak,
               r.granted_peak, r.max_live, (long long)r.started, r.rate);
        if (budgets[b] == 1 && r.busy > 1.05) ok = false;
        if (r.busy_peak > budgets[b] + r.granted_peak) ok = false;
    }
    printf("\nverdict: %s - goal: cpu_budget 1 keeps CPU/wall <= 1.05 while the consumer only waits, and no "
           "budget has more ferry threads working at once than it allows (plus those granted)\n",
           ok ? "MET" : "NOT MET");
    return 0;
}
