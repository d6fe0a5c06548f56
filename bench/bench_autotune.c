/*
 * bench_autotune.c - P7: does closed-loop AUTOTUNE find what a grid search finds, and fast?
 *
 * Three pipelines, each built either with fixed knobs (a grid point) or with FERRY_AUTOTUNE on
 * every knob (from cold: the defaults, then the tuner); the consumer takes each element and
 * frees it, so the pipeline is the bottleneck:
 *   cpu    range -> map(computes ~200 us per element, P) -> prefetch(B)
 *   io     range -> map(sleeps 2 ms in nanosleep, as a blocking read would, and computes ~5 us;
 *          P) -> prefetch(B). The sleep is the user's own call, which ferry cannot see.
 *   files  8 TFRecord files (written first to a temporary directory) -> tfrecord with
 *          num_parallel_reads P_I (a parallel interleave) -> map A (sums the record's bytes and
 *          computes ~10 us; P_A) -> map B (~100 us; P_B) -> batch(32) -> prefetch(B)
 * For each: every grid point runs --seconds (after 0.3 s of warm-up) and gives its elements/s,
 * CPU seconds per wall second and peak budget bytes; then, side by side in one process run,
 * --reps times: the best grid point again, and AUTOTUNE from cold for --tune-seconds. For
 * AUTOTUNE: its steady rate (the last 2 s), the first time at which the rate over 0.5 s reached
 * 0.95 of the best point's rerun, CPU/wall, peak budget bytes, the knobs it chose, its
 * decisions, and its verdict (ferry_iterator_report) beside the stage the grid shows to be the
 * limit (from the all-ones point, the knob whose step up gains most).
 * Goals (docs/performance.md, P7): steady >= 0.95 of the best point, reached within 5 s; CPU per
 * wall second <= cpu_budget; peak buffered bytes <= the byte budget; the verdict names the grid's
 * limiting stage.
 *
 * Usage: bench_autotune [--only cpu|io|files] [--seconds S] [--tune-seconds T] [--reps N]
 *                       [--cpu-budget N] [--log]
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ferry.h"

#include "bench_util.h"

#define BUDGET_BYTES ((size_t)64 << 20)
#define NFILES 8
#define RECORDS_PER_FILE 4000
#define RECORD_BYTES 512

/* ---- the work ------------------------------------------------------------------------------ */
static double rounds_per_us = 100; /* cosf rounds per microsecond, measured at the start */

static float burn(float a, int64_t rounds) {
    for (int64_t r = 0; r < rounds; r++) a = cosf(a) + 0.5f;
    return a;
}

static void calibrate(void) {
    volatile float sink = 0;
    int64_t n = 100000;
    double best = 1e9;
    for (int i = 0; i < 5; i++) {
        double t0 = now_s();
        sink += burn((float)i, n);
        double dt = now_s() - t0;
        if (dt < best) best = dt;
    }
    (void)sink;
    rounds_per_us = (double)n / (best * 1e6);
}

typedef struct cost {
    double cpu_us;    /* computed per element */
    int64_t sleep_ns; /* slept per element (nanosleep: a blocking call ferry does not see) */
} cost;

static float elem_seed(const ferry_element *in) {
    const ferry_tensor *t = ferry_element_get(in, 0);
    switch (ferry_tensor_dtype(t)) {
    case FERRY_DTYPE_INT64: return (float)(*(const int64_t *)ferry_tensor_data(t) % 1000);
    case FERRY_DTYPE_FLOAT32: return ((const float *)ferry_tensor_data(t))[0];
    default: { /* bytes: the record's sum */
        const uint8_t *d;
        size_t len;
        if (ferry_tensor_bytes_get(t, 0, &d, &len) != FERRY_OK) return 0;
        uint32_t s = 0;
        for (size_t i = 0; i < len; i++) s += d[i];
        return (float)(s % 1000);
    }
    }
}

/* element -> float32[16] after the cost. */
static int work(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    const cost *c = user;
    float seed = elem_seed(in);
    ferry_element_free(in);
    if (c->sleep_ns) {
        struct timespec ts = {0, (long)c->sleep_ns};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
        }
    }
    const int64_t dims[1] = {16};
    ferry_tensor *o;
    int rc = ferry_tensor_create(ferry_context_runtime(ctx), FERRY_DTYPE_FLOAT32, 1, dims, &o);
    if (rc) return rc;
    float *p = ferry_tensor_mutable_data(o);
    float a = burn(seed * 0.001f, (int64_t)(c->cpu_us * rounds_per_us));
    for (int k = 0; k < 16; k++) p[k] = a + (float)k;
    return ferry_element_create(ferry_context_runtime(ctx), 1, &o, out); /* takes o */
}

static const ferry_tensor_spec vec16 = {FERRY_DTYPE_FLOAT32, {1, {16}}};

/* ---- the pipelines --------------------------------------------------------------------------- */
enum { P_CPU, P_IO, P_FILES };
static const char *const pipe_names[] = {"cpu", "io", "files"};

/* Knobs of a run: FERRY_AUTOTUNE everywhere for the tuner's run. */
typedef struct knobs {
    int par[3];  /* cpu/io: par[0] the map; files: interleave, map A, map B */
    int64_t buf; /* the prefetch */
} knobs;

static const cost cost_cpu = {200, 0}, cost_io = {5, 2000000}, cost_a = {10, 0}, cost_b = {100, 0};
static char file_names[NFILES][256];
static const char *file_ptrs[NFILES];

/* The next op over d (an op holds its input: the builder's reference goes). */
#define STEP(call)                                                                                                     \
    do {                                                                                                               \
        ferry_dataset *in_ = d;                                                                                        \
        CHECK(call);                                                                                                   \
        ferry_dataset_unref(in_);                                                                                      \
        d = x;                                                                                                         \
    } while (0)

static ferry_dataset *build(ferry_runtime *rt, int which, const knobs *k) {
    ferry_dataset *d, *x = NULL;
    ferry_map_options mo = {.num_outputs = 1, .output_specs = &vec16};
    if (which == P_FILES) {
        ferry_tfrecord_options to = {.num_parallel_reads = k->par[0]};
        CHECK(ferry_dataset_tfrecord(rt, NFILES, file_ptrs, &to, &d));
        STEP(ferry_dataset_repeat(d, FERRY_INFINITE, NULL, &x));
        mo.num_parallel_calls = k->par[1];
        STEP(ferry_dataset_map(d, work, (void *)&cost_a, &mo, &x));
        mo.num_parallel_calls = k->par[2];
        STEP(ferry_dataset_map(d, work, (void *)&cost_b, &mo, &x));
        STEP(ferry_dataset_batch(d, 32, NULL, &x));
    } else {
        CHECK(ferry_dataset_range(rt, 0, INT64_MAX, 1, NULL, &d));
        mo.num_parallel_calls = k->par[0];
        STEP(ferry_dataset_map(d, work, (void *)(which == P_CPU ? &cost_cpu : &cost_io), &mo, &x));
    }
    STEP(ferry_dataset_prefetch(d, k->buf, NULL, &x));
    return d;
}

static void write_files(void) {
    char dir[] = "/tmp/ferry-bench-autotune-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    ferry_runtime *rt;
    CHECK(ferry_runtime_create(NULL, &rt));
    uint8_t rec[RECORD_BYTES];
    uint32_t x = 12345;
    for (int f = 0; f < NFILES; f++) {
        snprintf(file_names[f], sizeof file_names[f], "%s/part-%d.tfrecord", dir, f);
        file_ptrs[f] = file_names[f];
        ferry_tfrecord_writer *w;
        CHECK(ferry_tfrecord_writer_open(rt, file_names[f], NULL, &w));
        for (int r = 0; r < RECORDS_PER_FILE; r++) {
            for (int i = 0; i < RECORD_BYTES; i++) {
                x = x * 1664525u + 1013904223u;
                rec[i] = (uint8_t)(x >> 24);
            }
            CHECK(ferry_tfrecord_writer_write(w, rec, sizeof rec));
        }
        CHECK(ferry_tfrecord_writer_close(w));
    }
    ferry_runtime_free(rt);
}

static void remove_files(void) {
    for (int f = 0; f < NFILES; f++) unlink(file_names[f]);
    char dir[256];
    snprintf(dir, sizeof dir, "%s", file_names[0]);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        rmdir(dir);
    }
}

/* ---- one run ------------------------------------------------------------------------------ */
#define TL_STEP 0.1
#define TL_MAX 1200

typedef struct run {
    double rate;       /* elements/s over the measured span */
    double cpu_per_s;  /* process CPU seconds per wall second over it */
    size_t peak_bytes; /* the budget's peak */
    double tl[TL_MAX]; /* elements handed out by each TL_STEP from the start */
    int ntl;
    int par[3];
    int64_t buf;
    ferry_report rep;
    ferry_stage_stats stats[16];
    size_t nstats;
    ferry_tune_decision log[32];
    size_t nlog;
} run;

/* Runs the pipeline for warm + measure seconds; measures the last `measure`. */
static void run_once(int which, const knobs *k, int cpu_budget, double warm, double measure, run *r) {
    memset(r, 0, sizeof *r);
    ferry_runtime_options ro = {.memory_budget = BUDGET_BYTES, .cpu_budget = cpu_budget};
    ferry_runtime *rt;
    CHECK(ferry_runtime_create(&ro, &rt));
    ferry_dataset *ds = build(rt, which, k);
    ferry_iterator *it;
    CHECK(ferry_iterator_create(ds, NULL, &it));
    double t0 = now_s(), tm = t0 + warm, tend = tm + measure, m0 = 0, c0 = 0;
    int64_t n = 0, nm = 0;
    bool in_measure = false;
    int next_tl = 1;
    for (;;) {
        ferry_element *e;
        int rc = ferry_iterator_next(it, &e);
        if (rc != FERRY_OK) {
            fprintf(stderr, "%s: next failed: %s\n", pipe_names[which], ferry_iterator_error(it));
            exit(1);
        }
        ferry_element_free(e);
        n++;
        double t = now_s();
        while (next_tl < TL_MAX && t >= t0 + next_tl * TL_STEP) r->tl[next_tl++] = (double)n;
        if (!in_measure && t >= tm) {
            in_measure = true;
            m0 = t;
            c0 = cpu_s();
            nm = n;
        }
        if (t >= tend) {
            r->rate = (double)(n - nm) / (t - m0);
            r->cpu_per_s = (cpu_s() - c0) / (t - m0);
            break;
        }
    }
    r->ntl = next_tl;
    CHECK(ferry_iterator_report(it, &r->rep));
    CHECK(ferry_iterator_stats(it, r->stats, 16, &r->nstats));
    if (r->nstats > 16) r->nstats = 16;
    CHECK(ferry_iterator_tuning(it, r->log, 32, &r->nlog));
    if (r->nlog > 32) r->nlog = 32;
    ferry_runtime_stats rs;
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    CHECK(ferry_runtime_stats_get(rt, &rs));
    r->peak_bytes = rs.budget_used_peak;
    ferry_runtime_free(rt);
}

/* The stats node of each knob (par[0..2], then the prefetch), walking inputs from the root. */
static void knob_nodes(int which, const run *r, int nodes[4]) {
    for (int i = 0; i < 4; i++) nodes[i] = -1;
    int maps = 0;
    for (int i = 0; i >= 0 && i < (int)r->nstats; i = r->stats[i].input) {
        const char *nm = r->stats[i].name;
        if (!strcmp(nm, "prefetch")) nodes[3] = i;
        else if (!strcmp(nm, "map") || !strcmp(nm, "map_and_batch")) {
            if (which == P_FILES) nodes[maps == 0 ? 2 : 1] = i;
            else nodes[0] = i;
            maps++;
        } else if (which == P_FILES && (!strcmp(nm, "interleave") || !strcmp(nm, "tfrecord")) && nodes[0] < 0)
            nodes[0] = i;
    }
}

static const char *knob_label(int which, int i) {
    static const char *const files_labels[] = {"tfrecord reads (interleave)", "map A", "map B", "prefetch"};
    if (which == P_FILES) return files_labels[i];
    return i == 3 ? "prefetch" : "map";
}

/* ---- the grid ----------------------------------------------------------------------------- */
typedef struct point {
    knobs k;
    double rate, cpu;
    size_t peak;
} point;

static int grid_points(int which, point *pts) {
    int n = 0;
    if (which == P_CPU) {
        const int ps[] = {1, 2, 3, 4};
        const int64_t bs[] = {1, 2, 8};
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 3; b++) pts[n++].k = (knobs){{ps[a], 0, 0}, bs[b]};
    } else if (which == P_IO) {
        const int ps[] = {1, 2, 4, 8, 16};
        const int64_t bs[] = {1, 8};
        for (int a = 0; a < 5; a++)
            for (int b = 0; b < 2; b++) pts[n++].k = (knobs){{ps[a], 0, 0}, bs[b]};
    } else {
        const int pi[] = {1, 2}, pa[] = {1, 2}, pb[] = {1, 2, 3};
        const int64_t bs[] = {1, 4};
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++)
                for (int c = 0; c < 3; c++)
                    for (int d = 0; d < 2; d++) pts[n++].k = (knobs){{pi[a], pa[b], pb[c]}, bs[d]};
    }
    return n;
}

static void print_knobs(int which, const knobs *k) {
    if (which == P_FILES)
        printf("reads %d, map A %d, map B %d, prefetch %lld", k->par[0], k->par[1], k->par[2], (long long)k->buf);
    else printf("map %d, prefetch %lld", k->par[0], (long long)k->buf);
}

/* The first time (s) from which 0.5 s of the timeline ran at >= target elements/s; -1: never. */
static double time_to(const run *r, double target) {
    int w = (int)(0.5 / TL_STEP + 0.5);
    for (int i = 0; i + w < r->ntl; i++)
        if ((r->tl[i + w] - r->tl[i]) / (w * TL_STEP) >= target) return i * TL_STEP;
    return -1;
}

int main(int argc, char **argv) {
    double seconds = 1.5, tune_seconds = 8;
    int reps = 3, only = -1, cpu_budget = 0;
    bool show_log = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--tune-seconds") && i + 1 < argc) tune_seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cpu-budget") && i + 1 < argc) cpu_budget = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--log")) show_log = true;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            i++;
            for (int p = 0; p < 3; p++)
                if (!strcmp(argv[i], pipe_names[p])) only = p;
            if (only < 0) {
                fprintf(stderr, "--only takes cpu, io or files\n");
                return 2;
            }
        } else {
            fprintf(stderr, "usage: bench_autotune [--only cpu|io|files] [--seconds S] [--tune-seconds T] [--reps N] "
                            "[--cpu-budget N] [--log]\n");
            return 2;
        }
    }
    if (reps < 1 || seconds <= 0 || tune_seconds < 3) {
        fprintf(stderr, "bench_autotune: --reps >= 1, --seconds > 0, --tune-seconds >= 3\n");
        return 2;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpu_budget <= 0) cpu_budget = (int)cores;
    calibrate();
    write_files();
    printf("P7: grid search vs AUTOTUNE from cold; %ld cores, cpu_budget %d, byte budget %zu MiB; "
           "grid points %.1f s each, AUTOTUNE runs %.1f s, %d reps\n",
           cores, cpu_budget, BUDGET_BYTES >> 20, seconds, tune_seconds, reps);
    point pts[32];
    for (int which = 0; which < 3; which++) {
        if (only >= 0 && which != only) continue;
        printf("\n== %s: %s\n", pipe_names[which],
               which == P_CPU ? "range -> map(200 us CPU) -> prefetch"
               : which == P_IO
                   ? "range -> map(2 ms nanosleep + 5 us CPU) -> prefetch"
                   : "8 files -> tfrecord(parallel reads) -> map A (10 us) -> map B (100 us) -> batch 32 -> prefetch");
        int np = grid_points(which, pts), best = 0;
        run *r = malloc(sizeof *r);
        if (!r) return 1;
        for (int i = 0; i < np; i++) {
            run_once(which, &pts[i].k, cpu_budget, 0.3, seconds, r);
            pts[i].rate = r->rate;
            pts[i].cpu = r->cpu_per_s;
            pts[i].peak = r->peak_bytes;
            if (pts[i].rate > pts[best].rate) best = i;
            printf("  grid  ");
            print_knobs(which, &pts[i].k);
            printf(": %8.0f elements/s, CPU/wall %.2f, peak %.0f KiB\n", pts[i].rate, pts[i].cpu,
                   (double)pts[i].peak / 1024);
            fflush(stdout);
        }
        /* The grid's limit: from the all-ones point (pts[0], smallest buffer), the knob whose
         * step up (others held) gains most. */
        int limit_knob = -1;
        double gain_best = 0;
        for (int kn = 0; kn < 3; kn++) {
            for (int i = 0; i < np; i++) {
                knobs a = pts[0].k, b = pts[i].k;
                bool only_this = b.buf == a.buf;
                for (int j = 0; j < 3; j++)
                    if (j != kn && b.par[j] != a.par[j]) only_this = false;
                if (!only_this || b.par[kn] <= a.par[kn]) continue;
                /* the next value up only */
                bool next = true;
                for (int q = 0; q < np; q++) {
                    knobs c = pts[q].k;
                    bool same = c.buf == a.buf;
                    for (int j = 0; j < 3; j++)
                        if (j != kn && c.par[j] != a.par[j]) same = false;
                    if (same && c.par[kn] > a.par[kn] && c.par[kn] < b.par[kn]) next = false;
                }
                if (!next) continue;
                double gain = pts[i].rate / pts[0].rate;
                if (gain > gain_best) {
                    gain_best = gain;
                    limit_knob = kn;
                }
            }
        }
        printf("  best grid point: ");
        print_knobs(which, &pts[best].k);
        printf(" at %.0f elements/s; the grid's limit: %s (a step up from all-ones gains %.2fx)\n", pts[best].rate,
               limit_knob >= 0 ? knob_label(which, limit_knob) : "none", gain_best);

        double rb[16], ra[16], ratio[16], tt[16], cpu_a[16];
        size_t peak_a = 0;
        int named = 0;
        knobs at = {{FERRY_AUTOTUNE, FERRY_AUTOTUNE, FERRY_AUTOTUNE}, FERRY_AUTOTUNE};
        int nr = reps > 16 ? 16 : reps;
        for (int rep = 0; rep < nr; rep++) {
            run_once(which, &pts[best].k, cpu_budget, 0.3, seconds, r);
            rb[rep] = r->rate;
            run_once(which, &at, cpu_budget, tune_seconds - 2.0, 2.0, r);
            ra[rep] = r->rate;
            cpu_a[rep] = r->cpu_per_s;
            ratio[rep] = ra[rep] / rb[rep];
            tt[rep] = time_to(r, 0.95 * rb[rep]);
            if (r->peak_bytes > peak_a) peak_a = r->peak_bytes;
            int nodes[4];
            knob_nodes(which, r, nodes);
            bool ok = limit_knob >= 0 && r->rep.stage >= 0 && r->rep.stage == nodes[limit_knob];
            named += ok;
            printf("  rep %d: best grid point %.0f/s, AUTOTUNE steady %.0f/s (%.3f), 0.95 reached at %s%.1f s, "
                   "CPU/wall %.2f, peak %.0f KiB; chose",
                   rep + 1, rb[rep], ra[rep], ratio[rep], tt[rep] < 0 ? "never " : "", tt[rep] < 0 ? 0 : tt[rep],
                   cpu_a[rep], (double)r->peak_bytes / 1024);
            for (int kn = 0; kn < 4; kn++) {
                if (nodes[kn] < 0) continue;
                const ferry_stage_stats *s = &r->stats[nodes[kn]];
                if (kn < 3) printf(" %s %lld", knob_label(which, kn), (long long)s->parallelism);
                else if (s->buffer_capacity > 0) printf(" prefetch %lld", (long long)s->buffer_capacity);
                else printf(" prefetch folded into the stage below");
            }
            printf("\n    verdict: %s [%s]\n", r->rep.text,
                   ok ? "names the grid's limit" : "does NOT name the grid's limit");
            if (show_log || rep == 0) {
                for (size_t d = 0; d < r->nlog; d++) {
                    const ferry_tune_decision *x = &r->log[d];
                    printf("    %5.2f s %-10s %s (%.0f -> %.0f/s)\n", x->at_s, ferry_tune_outcome_name(x->outcome),
                           x->why, x->rate_before, x->rate_after);
                }
            }
            fflush(stdout);
        }
        double lo = ratio[0], hi = ratio[0], tmax = tt[0];
        for (int i = 0; i < nr; i++) {
            lo = fmin(lo, ratio[i]);
            hi = fmax(hi, ratio[i]);
            if (tt[i] < 0 || (tmax >= 0 && tt[i] > tmax)) tmax = tt[i] < 0 ? -1 : tt[i];
        }
        double mr = bench_median(ratio, nr), mt = bench_median(tt, nr), mc = bench_median(cpu_a, nr);
        char worst[32];
        if (tmax < 0) snprintf(worst, sizeof worst, "never in one rep");
        else snprintf(worst, sizeof worst, "%.1f s", tmax);
        printf("  %s summary: AUTOTUNE / best grid point median %.3f (range %.3f-%.3f); 0.95 reached: median %.1f s, "
               "worst %s; CPU/wall median %.2f (budget %d); peak %.0f KiB of %zu MiB; the verdict names the grid's "
               "limit in %d of %d\n",
               pipe_names[which], mr, lo, hi, mt, worst, mc, cpu_budget, (double)peak_a / 1024, BUDGET_BYTES >> 20,
               named, nr);
        free(r);
    }
    remove_files();
    return 0;
}
