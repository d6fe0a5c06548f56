/*
 * bench_realwork.c - P1r: does ferry overlap data preparation with a training step as well as a
 * hand-written producer thread does, when both sides do real work?
 *
 * P1 (bench_core.c) burns a calibrated loop on both sides. Here the work is what a user's code
 * does: it touches memory, calls libm and runs a GEMM, so the two sides compete for caches and
 * memory bandwidth as well as for the two cores of the VM, and ferry's own costs (a new tensor
 * per element, the copy into the batch, the handoffs) show up in the figures.
 *
 *   Producer, per element: 256 random Fourier features of a small input. Element i gives 16
 *     input floats from a hash of i; out[k] = cos(dot(w_k, x) + b_k) for k < 256, with W
 *     (256 x 16) and b drawn once at start. About 4 us per element, 1 KB of float32 out.
 *   Consumer, per batch of 64: a training step, the [64,256] batch times a [256,H] weight matrix
 *     (plain C loops), the sum of the outputs as the loss and an update of one weight row. H is
 *     calibrated at start so that one step costs what producing 64 elements costs (medians of
 *     timings of each side alone); --hidden H fixes it instead.
 *
 * Variants, each run --reps times in one process run, round-robin (the starting variant rotates
 * from one repetition to the next, so drift of the machine affects all alike):
 *   sequential      produce 64, step, repeat, in one thread (no overlap);
 *   hand            the reference: a producer pthread fills whole batches into a bounded queue
 *                   of depth 3 (mutex + condition variables), the consumer steps on them;
 *   ferry-inline    range -> map(featurize, inline) -> batch(64) -> prefetch(AUTOTUNE);
 *   ferry-autotune  range -> map(featurize, AUTOTUNE) -> batch(64) -> prefetch(AUTOTUNE), the
 *                   default a user writes;
 *   ferry-1thread   range -> map(featurize, 1 thread) -> batch(64) -> prefetch(2).
 * and the ceilings: the producer alone (64 x batches elements), the consumer alone (batches
 * steps on one batch made at start), and each of them while a second thread keeps the other
 * core busy with the other side's work; and ferry's producer alone (range -> map inline ->
 * batch iterated on one thread), whose difference from the producer alone is ferry's own cost
 * per element. What two threads can do on this machine is then
 *   ideal epoch = max(producer with the other core busy, consumer with the other core busy).
 *
 * Reported per variant: the epoch's wall time (median [min-max]; an epoch includes making and
 * freeing the iterator or the thread), the hand-written thread's throughput relative to it
 * (hand median / variant median: above 1 is faster than the hand-written thread), ideal / time,
 * the process's CPU seconds per epoch and their ratio to the hand-written thread's, the time the
 * training loop spent waiting for its next batch (measured around ferry_iterator_next, around
 * the queue pop, or around the production for the sequential loop), voluntary + involuntary
 * context switches per epoch (getrusage) and the threads ferry started per epoch.
 * Goal: every ferry variant >= 0.98 of the hand-written thread's throughput with CPU seconds
 * <= 1.05x its; the last line gives the verdict.
 *
 * Correctness, cheaply: every variant folds every row of every batch it consumes into a
 * checksum (row order included), and the training loss depends on the same values; both must be
 * equal across all variants and repetitions (same elements, same order), else the exit status
 * is 1.
 *
 * Usage: bench_realwork [--batches N] [--reps N] [--only NAME[,NAME...]] [--hidden H]
 *   --batches  batches per epoch (default 2000; the figures want >= 2000)
 *   --reps     repetitions of every variant (default 3)
 *   --only     sequential, hand, ferry-inline, ferry-autotune, ferry-1thread, ceilings; the
 *              hand-written thread always runs (it is the reference)
 *   --hidden   H of the training step (default: calibrated)
 * For figures: build Release and run on a quiet machine,
 *   build-rel/bench/bench_realwork --batches 2000 --reps 5
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "ferry.h"

#include "bench_util.h"

#define BATCH 64
#define FEAT 256
#define IN_DIM 16
#define HAND_DEPTH 3

static long context_switches(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_nvcsw + ru.ru_nivcsw;
}

/* Median, minimum and maximum of n values (v is sorted in place). */
static double median(double *v, int n, double *lo, double *hi) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    if (lo) *lo = v[0];
    if (hi) *hi = v[n - 1];
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

/* Float buffers start on a 64-byte line: the GEMM's speed depends on where its rows start, and
 * malloc's placement differs from one variant's epoch to the next (run to run, a step took
 * 150 us or 300 us for the same H), which would be measured as a difference between variants. */
static float *xalloc_floats(size_t n) {
    void *p = aligned_alloc(64, (n * sizeof(float) + 63) & ~(size_t)63);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A uniform float in [-1, 1) from the hash of key. */
static float hash_uniform(uint64_t key) { return (float)((double)(mix64(key) >> 11) * 0x1p-53 * 2.0 - 1.0); }

/* ---- the producer's work: random Fourier features ------------------------------------------- */
static float rff_w[FEAT][IN_DIM];
static float rff_b[FEAT];

static void rff_init(void) {
    const double two_pi = 6.283185307179586;
    for (int k = 0; k < FEAT; k++) {
        for (int j = 0; j < IN_DIM; j++) {
            /* Box-Muller: a standard normal from two uniforms */
            uint64_t key = 0x5eed0000ull + (uint64_t)(k * IN_DIM + j) * 2;
            double u1 = ((double)(mix64(key) >> 11) + 1.0) * 0x1p-53, u2 = (double)(mix64(key + 1) >> 11) * 0x1p-53;
            rff_w[k][j] = (float)(sqrt(-2.0 * log(u1)) * cos(two_pi * u2));
        }
        rff_b[k] = (float)((double)(mix64(0xb1a5ull + (uint64_t)k) >> 11) * 0x1p-53 * two_pi);
    }
}

/* Element `index` -> 256 float32 features. Not inlined: every variant runs the same code. */
static __attribute__((noinline)) void featurize(int64_t index, float *restrict out) {
    float x[IN_DIM];
    for (int j = 0; j < IN_DIM; j++) x[j] = hash_uniform((uint64_t)index * IN_DIM + (uint64_t)j);
    for (int k = 0; k < FEAT; k++) {
        float d = rff_b[k];
        for (int j = 0; j < IN_DIM; j++) d += rff_w[k][j] * x[j];
        out[k] = cosf(d);
    }
}

/* The 64 elements of batch b into out[64][256]. */
static void produce_batch(int64_t b, float *out) {
    for (int i = 0; i < BATCH; i++) featurize(b * BATCH + i, out + (size_t)i * FEAT);
}

/* ---- the consumer's work: a training step --------------------------------------------------- */
typedef struct model {
    int hidden;
    float *w;       /* [256][hidden] */
    float *y;       /* [64][hidden] */
    double loss;    /* sum of every step's loss */
    uint64_t check; /* the consumed features, row by row */
    int64_t steps;
} model;

static void model_init(model *m, int hidden) {
    m->hidden = hidden;
    m->w = xalloc_floats((size_t)FEAT * (size_t)hidden);
    m->y = xalloc_floats((size_t)BATCH * (size_t)hidden);
    for (size_t i = 0; i < (size_t)FEAT * (size_t)hidden; i++) m->w[i] = hash_uniform(0x77ull << 40 | i) * 0.0625f;
    m->loss = 0.0;
    m->check = 0;
    m->steps = 0;
}

static void model_free(model *m) {
    free(m->w);
    free(m->y);
}

/* Folds the batch into the checksum: every row's bits summed and xored, rows mixed in order. */
static uint64_t fold_batch(uint64_t check, const float *x) {
    for (int i = 0; i < BATCH; i++) {
        uint32_t bits[FEAT];
        memcpy(bits, x + (size_t)i * FEAT, sizeof bits);
        uint64_t sum = 0;
        uint32_t xr = 0;
        for (int k = 0; k < FEAT; k++) {
            sum += bits[k];
            xr ^= bits[k];
        }
        check = mix64(check ^ sum ^ (uint64_t)xr << 32);
    }
    return check;
}

/* y = x W, the loss, and a small update of one row of W. Not inlined: every variant runs the same
 * code, so the loss is bit-equal when the batches are. */
static __attribute__((noinline)) void train_step(model *m, const float *restrict x) {
    const int hidden = m->hidden;
    float *restrict w = m->w;
    float *restrict y = m->y;
    for (int i = 0; i < BATCH; i++) {
        float *restrict yi = y + (size_t)i * (size_t)hidden;
        const float *xi = x + (size_t)i * FEAT;
        for (int h = 0; h < hidden; h++) yi[h] = 0.0f;
        for (int k = 0; k < FEAT; k++) {
            const float a = xi[k];
            const float *restrict wk = w + (size_t)k * (size_t)hidden;
            for (int h = 0; h < hidden; h++) yi[h] += a * wk[h];
        }
    }
    float loss = 0.0f;
    for (size_t i = 0; i < (size_t)BATCH * (size_t)hidden; i++) loss += y[i];
    float *row = w + (size_t)(m->steps % FEAT) * (size_t)hidden;
    for (int h = 0; h < hidden; h++) row[h] -= 1e-6f * y[h];
    m->loss += loss;
    m->steps++;
}

static void consume(model *m, const float *x) {
    m->check = fold_batch(m->check, x);
    train_step(m, x);
}

/* ---- one epoch of a variant ---------------------------------------------------------------- */
typedef struct epoch {
    double wall, cpu, wait; /* seconds */
    double switches;        /* context switches */
    double threads;         /* threads ferry started */
    uint64_t check;
    double loss;
} epoch;

typedef struct meter {
    double wall, cpu;
    long switches;
    int64_t threads;
} meter;

/* Median [lo, hi] over n epochs of the double field at `offset`. */
static double epoch_median(const epoch *e, long n, size_t offset, double *lo, double *hi) {
    double *col = xmalloc(sizeof(double) * (size_t)n);
    for (long r = 0; r < n; r++) memcpy(&col[r], (const char *)&e[r] + offset, sizeof(double));
    double m = median(col, (int)n, lo, hi);
    free(col);
    return m;
}

static ferry_runtime *rt;

static int64_t ferry_threads_started(void) {
    ferry_runtime_stats st;
    CHECK(ferry_runtime_stats_get(rt, &st));
    return st.threads_started;
}

static meter meter_now(void) {
    meter mt = {.switches = context_switches(), .threads = ferry_threads_started(), .cpu = cpu_s()};
    mt.wall = now_s();
    return mt;
}

static void meter_stop(const meter *start, const model *m, epoch *out) {
    double wall = now_s(), cpu = cpu_s();
    out->wall = wall - start->wall;
    out->cpu = cpu - start->cpu;
    out->switches = (double)(context_switches() - start->switches);
    out->threads = (double)(ferry_threads_started() - start->threads);
    out->check = m->check;
    out->loss = m->loss;
}

static void run_sequential(int64_t batches, int hidden, epoch *out) {
    model m;
    model_init(&m, hidden);
    float *buf = xalloc_floats((size_t)BATCH * FEAT);
    double wait = 0.0;
    meter start = meter_now();
    for (int64_t b = 0; b < batches; b++) {
        double t0 = now_s();
        produce_batch(b, buf);
        wait += now_s() - t0;
        consume(&m, buf);
    }
    meter_stop(&start, &m, out);
    out->wait = wait;
    free(buf);
    model_free(&m);
}

/* The hand-written reference: HAND_DEPTH filled batches queued at most, plus the one the consumer
 * works on, so HAND_DEPTH + 1 buffers. */
typedef struct hand_queue {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    float *buf[HAND_DEPTH + 1];
    int64_t produced, taken, total;
} hand_queue;

static void *hand_producer(void *arg) {
    hand_queue *q = arg;
    for (int64_t b = 0; b < q->total; b++) {
        pthread_mutex_lock(&q->mu);
        while (q->produced - q->taken >= HAND_DEPTH) pthread_cond_wait(&q->not_full, &q->mu);
        pthread_mutex_unlock(&q->mu);
        /* buffer b % (DEPTH+1) is neither queued nor the consumer's: b - taken < DEPTH */
        produce_batch(b, q->buf[b % (HAND_DEPTH + 1)]);
        pthread_mutex_lock(&q->mu);
        q->produced++;
        pthread_cond_signal(&q->not_empty);
        pthread_mutex_unlock(&q->mu);
    }
    return NULL;
}

static void run_hand(int64_t batches, int hidden, epoch *out) {
    model m;
    model_init(&m, hidden);
    hand_queue q = {.total = batches};
    for (int i = 0; i <= HAND_DEPTH; i++) q.buf[i] = xalloc_floats((size_t)BATCH * FEAT);
    pthread_mutex_init(&q.mu, NULL);
    pthread_cond_init(&q.not_empty, NULL);
    pthread_cond_init(&q.not_full, NULL);
    double wait = 0.0;
    meter start = meter_now();
    pthread_t th;
    if (pthread_create(&th, NULL, hand_producer, &q) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        exit(1);
    }
    for (int64_t b = 0; b < batches; b++) {
        double t0 = now_s();
        pthread_mutex_lock(&q.mu);
        while (q.produced == q.taken) pthread_cond_wait(&q.not_empty, &q.mu);
        q.taken++; /* the previous batch's buffer is free from here on */
        pthread_cond_signal(&q.not_full);
        pthread_mutex_unlock(&q.mu);
        wait += now_s() - t0;
        consume(&m, q.buf[b % (HAND_DEPTH + 1)]);
    }
    pthread_join(th, NULL);
    meter_stop(&start, &m, out);
    out->wait = wait;
    pthread_mutex_destroy(&q.mu);
    pthread_cond_destroy(&q.not_empty);
    pthread_cond_destroy(&q.not_full);
    for (int i = 0; i <= HAND_DEPTH; i++) free(q.buf[i]);
    model_free(&m);
}

/* The map function: int64 scalar index -> a new float32 [256] tensor of its features. */
static int map_featurize(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)user;
    int64_t index = *(const int64_t *)ferry_tensor_data(ferry_element_get(in, 0));
    const int64_t dims[1] = {FEAT};
    ferry_tensor *t;
    int rc = ferry_tensor_create(ferry_context_runtime(ctx), FERRY_DTYPE_FLOAT32, 1, dims, &t);
    if (rc == FERRY_OK) {
        featurize(index, ferry_tensor_mutable_data(t));
        rc = ferry_element_set(in, 0, t);
    }
    if (rc != FERRY_OK) {
        ferry_element_free(in);
        return rc;
    }
    *out = in;
    return FERRY_OK;
}

/* range(64 x batches) -> map(featurize, map_threads) -> batch(64) -> prefetch(prefetch). */
static ferry_dataset *make_ferry(int64_t batches, int map_threads, int64_t prefetch) {
    static const ferry_tensor_spec feat_spec = {.dtype = FERRY_DTYPE_FLOAT32, .shape = {.rank = 1, .dims = {FEAT}}};
    ferry_dataset *r, *m, *b, *p;
    CHECK(ferry_dataset_range(rt, 0, batches * BATCH, 1, NULL, &r));
    ferry_map_options mo = {.num_parallel_calls = map_threads, .num_outputs = 1, .output_specs = &feat_spec};
    CHECK(ferry_dataset_map(r, map_featurize, NULL, &mo, &m));
    CHECK(ferry_dataset_batch(m, BATCH, NULL, &b));
    CHECK(ferry_dataset_prefetch(b, prefetch, NULL, &p));
    ferry_dataset_unref(r);
    ferry_dataset_unref(m);
    ferry_dataset_unref(b);
    return p;
}

static void run_ferry(ferry_dataset *ds, int64_t batches, int hidden, epoch *out) {
    model m;
    model_init(&m, hidden);
    double wait = 0.0;
    int64_t n = 0;
    meter start = meter_now();
    ferry_iterator *it;
    CHECK(ferry_iterator_create(ds, NULL, &it));
    for (;;) {
        ferry_element *e;
        double t0 = now_s();
        int rc = ferry_iterator_next(it, &e);
        wait += now_s() - t0;
        if (rc == FERRY_END) break;
        if (rc != FERRY_OK) {
            fprintf(stderr, "next failed: %s: %s\n", ferry_error_name(rc), ferry_iterator_error(it));
            exit(1);
        }
        const ferry_tensor *t = ferry_element_get(e, 0);
        if (ferry_tensor_dtype(t) != FERRY_DTYPE_FLOAT32 || ferry_tensor_rank(t) != 2 ||
            ferry_tensor_dim(t, 0) != BATCH || ferry_tensor_dim(t, 1) != FEAT) {
            fprintf(stderr, "batch %lld: not a float32 [%d,%d] tensor\n", (long long)n, BATCH, FEAT);
            exit(1);
        }
        consume(&m, ferry_tensor_data(t));
        ferry_element_free(e);
        n++;
    }
    ferry_iterator_free(it);
    meter_stop(&start, &m, out);
    out->wait = wait;
    model_free(&m);
    if (n != batches) {
        fprintf(stderr, "ferry gave %lld batches, want %lld\n", (long long)n, (long long)batches);
        exit(1);
    }
}

/* ---- ceilings: each side alone, and with the other core busy with the other side's work ----- */
enum { SIDE_PRODUCER, SIDE_CONSUMER };

typedef struct spinner {
    atomic_int started, stop;
    int side; /* the side the spinner runs */
    int hidden;
    const float *batch;
} spinner;

static volatile float sink;

static void *spin_main(void *arg) {
    spinner *s = arg;
    model m;
    model_init(&m, s->hidden);
    float *buf = xalloc_floats((size_t)BATCH * FEAT);
    atomic_store(&s->started, 1);
    for (int64_t b = 0; !atomic_load_explicit(&s->stop, memory_order_relaxed); b++) {
        if (s->side == SIDE_PRODUCER) produce_batch(b, buf);
        else consume(&m, s->batch);
    }
    sink = buf[0] + (float)m.loss;
    free(buf);
    model_free(&m);
    return NULL;
}

/* Seconds for one epoch's worth of `side` on this thread, with the other core idle (busy false)
 * or running the other side's work. batch0 is the batch the consumer steps on. */
static double time_side(int side, bool busy, int64_t batches, int hidden, const float *batch0) {
    spinner s = {.side = side == SIDE_PRODUCER ? SIDE_CONSUMER : SIDE_PRODUCER, .hidden = hidden, .batch = batch0};
    atomic_init(&s.started, 0);
    atomic_init(&s.stop, 0);
    pthread_t th;
    if (busy) {
        if (pthread_create(&th, NULL, spin_main, &s) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            exit(1);
        }
        while (!atomic_load(&s.started)) {
        }
    }
    model m;
    model_init(&m, hidden);
    float *buf = xalloc_floats((size_t)BATCH * FEAT);
    double t0 = now_s();
    for (int64_t b = 0; b < batches; b++) {
        if (side == SIDE_PRODUCER) produce_batch(b, buf);
        else consume(&m, batch0);
    }
    double t = now_s() - t0;
    sink = buf[0] + (float)m.loss;
    free(buf);
    model_free(&m);
    if (busy) {
        atomic_store(&s.stop, 1);
        pthread_join(th, NULL);
    }
    return t;
}

/* Seconds for one epoch of range -> map inline -> batch on this thread, no consumer work: the
 * producer's side of ferry-inline, to set beside the hand-written producer alone. */
static double time_ferry_producer(ferry_dataset *ds, int64_t batches) {
    double t0 = now_s();
    ferry_iterator *it;
    CHECK(ferry_iterator_create(ds, NULL, &it));
    int64_t n = 0;
    ferry_element *e;
    while (ferry_iterator_next(it, &e) == FERRY_OK) {
        sink = ((const float *)ferry_tensor_data(ferry_element_get(e, 0)))[0];
        ferry_element_free(e);
        n++;
    }
    ferry_iterator_free(it);
    double t = now_s() - t0;
    if (n != batches) {
        fprintf(stderr, "ferry's producer gave %lld batches, want %lld\n", (long long)n, (long long)batches);
        exit(1);
    }
    return t;
}

/* ---- calibration ---------------------------------------------------------------------------- */
#define CAL_SAMPLES 101

static double time_produce(float *buf) {
    double t[CAL_SAMPLES];
    for (int i = 0; i < CAL_SAMPLES; i++) {
        double t0 = now_s();
        produce_batch(i, buf);
        t[i] = now_s() - t0;
    }
    return median(t, CAL_SAMPLES, NULL, NULL);
}

static double time_step(int hidden, const float *batch0) {
    model m;
    model_init(&m, hidden);
    double t[CAL_SAMPLES];
    consume(&m, batch0);
    for (int i = 0; i < CAL_SAMPLES; i++) {
        double t0 = now_s();
        consume(&m, batch0);
        t[i] = now_s() - t0;
    }
    model_free(&m);
    return median(t, CAL_SAMPLES, NULL, NULL);
}

static int round_hidden(double h) {
    int r = (int)(h / 16.0 + 0.5) * 16; /* rows of W and y of whole 64-byte lines */
    return r < 16 ? 16 : r > 8192 ? 8192 : r;
}

/* ---- driver --------------------------------------------------------------------------------- */
enum { V_SEQ, V_HAND, V_INLINE, V_AUTO, V_ONE, V_CEIL, NITEMS };
#define NCEIL 5
#define NVARIANTS V_CEIL

static const char *const item_names[NITEMS] = {"sequential",     "hand",          "ferry-inline",
                                               "ferry-autotune", "ferry-1thread", "ceilings"};

static bool is_ferry(int v) { return v == V_INLINE || v == V_AUTO || v == V_ONE; }

static ferry_dataset *make_variant(int v, int64_t batches) {
    switch (v) {
    case V_INLINE: return make_ferry(batches, 0, FERRY_AUTOTUNE);
    case V_AUTO: return make_ferry(batches, FERRY_AUTOTUNE, FERRY_AUTOTUNE);
    case V_ONE: return make_ferry(batches, 1, 2);
    default: return NULL;
    }
}

static void run_variant(int v, ferry_dataset *ds, int64_t batches, int hidden, epoch *out) {
    if (v == V_SEQ) run_sequential(batches, hidden, out);
    else if (v == V_HAND) run_hand(batches, hidden, out);
    else run_ferry(ds, batches, hidden, out);
}

static bool parse_only(char *list, bool *selected) {
    for (char *name = strtok(list, ","); name; name = strtok(NULL, ",")) {
        int found = -1;
        for (int v = 0; v < NITEMS; v++)
            if (strcmp(name, item_names[v]) == 0) found = v;
        if (found < 0) return false;
        selected[found] = true;
    }
    return true;
}

static bool parse_int(const char *s, long lo, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo) return false;
    *out = v;
    return true;
}

static void usage(void) {
    fprintf(stderr, "usage: bench_realwork [--batches N] [--reps N] [--only NAME[,NAME...]] [--hidden H]\n"
                    "  NAME: sequential, hand, ferry-inline, ferry-autotune, ferry-1thread, ceilings\n");
    exit(2);
}

int main(int argc, char **argv) {
    long batches = 2000, reps = 3, hidden_opt = 0;
    bool selected[NITEMS] = {false};
    bool only = false;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) usage();
        if (strcmp(argv[i], "--batches") == 0) {
            if (!parse_int(argv[++i], 1, &batches)) usage();
        } else if (strcmp(argv[i], "--reps") == 0) {
            if (!parse_int(argv[++i], 1, &reps)) usage();
        } else if (strcmp(argv[i], "--hidden") == 0) {
            if (!parse_int(argv[++i], 1, &hidden_opt)) usage();
        } else if (strcmp(argv[i], "--only") == 0) {
            if (!parse_only(argv[++i], selected)) usage();
            only = true;
        } else {
            usage();
        }
    }
    for (int v = 0; v < NITEMS; v++)
        if (!only) selected[v] = true;
    selected[V_HAND] = true;

    rff_init();
    CHECK(ferry_runtime_create(NULL, &rt));
    ferry_runtime_stats rst;
    CHECK(ferry_runtime_stats_get(rt, &rst));

    /* Calibrate H: one step should cost what producing one batch costs. */
    float *batch0 = xalloc_floats((size_t)BATCH * FEAT);
    /* Warm up first: timed right after start, the step ran at half the speed it had a second
     * later (the host brings the vCPU up to speed), and H came out half of what balances. */
    for (double t0 = now_s(); now_s() - t0 < 0.5;) produce_batch(0, batch0);
    double t_prod = time_produce(batch0);
    produce_batch(0, batch0);
    int hidden = (int)hidden_opt;
    if (hidden == 0) {
        hidden = 64;
        for (int round = 0; round < 3; round++) hidden = round_hidden(hidden * t_prod / time_step(hidden, batch0));
    }
    double t_step = time_step(hidden, batch0);

    printf("ferry %s, P1r real work: batch %d, %ld batches per epoch, %ld reps, cpu_budget %d\n", ferry_version(),
           BATCH, batches, reps, rst.cpu_budget);
    printf("producer %.2f us per element (%.1f us per batch of %d, random Fourier features %d -> %d), consumer %.1f us "
           "per step (GEMM [%d,%d] x [%d,%d]); medians of %d timings of each alone\n",
           t_prod * 1e6 / BATCH, t_prod * 1e6, BATCH, IN_DIM, FEAT, t_step * 1e6, BATCH, FEAT, FEAT, hidden,
           CAL_SAMPLES);
    fflush(stdout);

    ferry_dataset *ds[NITEMS] = {NULL};
    for (int v = 0; v < NVARIANTS; v++)
        if (selected[v] && is_ferry(v)) ds[v] = make_variant(v, batches);

    /* Warm-up (not counted): every variant once over a short epoch. */
    for (int v = 0; v < NVARIANTS; v++) {
        if (!selected[v]) continue;
        int64_t wb = batches < 50 ? batches : 50;
        ferry_dataset *wds = make_variant(v, wb);
        epoch e;
        run_variant(v, wds, wb, hidden, &e);
        ferry_dataset_unref(wds);
    }

    epoch *res = calloc((size_t)(NVARIANTS * reps), sizeof *res);
    /* [rep][producer, consumer, p busy, c busy, ferry's producer alone] */
    double *ceil_t = calloc((size_t)(NCEIL * reps), sizeof *ceil_t);
    ferry_dataset *ferry_producer = selected[V_CEIL] ? make_ferry(batches, 0, 0) : NULL;
    if (!res || !ceil_t) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (long r = 0; r < reps; r++) {
        for (int j = 0; j < NITEMS; j++) {
            int v = (int)((j + r) % NITEMS);
            if (!selected[v]) continue;
            if (v == V_CEIL) {
                double *c = ceil_t + NCEIL * r;
                c[0] = time_side(SIDE_PRODUCER, false, batches, hidden, batch0);
                c[1] = time_side(SIDE_CONSUMER, false, batches, hidden, batch0);
                c[2] = time_side(SIDE_PRODUCER, true, batches, hidden, batch0);
                c[3] = time_side(SIDE_CONSUMER, true, batches, hidden, batch0);
                c[4] = time_ferry_producer(ferry_producer, batches);
            } else {
                run_variant(v, ds[v], batches, hidden, &res[v * reps + r]);
            }
        }
    }

    /* Correctness: the same features in the same order, and the same training loss. */
    int bad = 0;
    const epoch *ref = &res[V_HAND * reps];
    for (int v = 0; v < NVARIANTS; v++) {
        if (!selected[v]) continue;
        for (long r = 0; r < reps; r++) {
            const epoch *e = &res[v * reps + r];
            if (e->check != ref->check || e->loss != ref->loss) {
                fprintf(stderr, "MISMATCH: %s rep %ld: checksum %016llx loss %.17g, hand: %016llx loss %.17g\n",
                        item_names[v], r, (unsigned long long)e->check, e->loss, (unsigned long long)ref->check,
                        ref->loss);
                bad++;
            }
        }
    }

    double ideal = 0.0;
    if (selected[V_CEIL]) {
        double m4[NCEIL], lo[NCEIL], hi[NCEIL], *col = xmalloc(sizeof(double) * (size_t)reps);
        for (int k = 0; k < NCEIL; k++) {
            for (long r = 0; r < reps; r++) col[r] = ceil_t[NCEIL * r + k];
            m4[k] = median(col, (int)reps, &lo[k], &hi[k]);
        }
        free(col);
        ideal = fmax(m4[2], m4[3]);
        printf("ceilings (ms per epoch, median [min-max]): producer alone %.1f [%.1f-%.1f], consumer alone %.1f "
               "[%.1f-%.1f]; with the other core busy: producer %.1f [%.1f-%.1f], consumer %.1f [%.1f-%.1f]; "
               "ideal epoch %.1f ms\n",
               m4[0] * 1e3, lo[0] * 1e3, hi[0] * 1e3, m4[1] * 1e3, lo[1] * 1e3, hi[1] * 1e3, m4[2] * 1e3, lo[2] * 1e3,
               hi[2] * 1e3, m4[3] * 1e3, lo[3] * 1e3, hi[3] * 1e3, ideal * 1e3);
        printf(
            "ferry's producer alone (range -> map inline -> batch, on this thread): %.1f ms [%.1f-%.1f], %+.0f ns per "
            "element over the producer alone\n",
            m4[4] * 1e3, lo[4] * 1e3, hi[4] * 1e3, (m4[4] - m4[0]) * 1e9 / (double)(batches * BATCH));
        ferry_dataset_unref(ferry_producer);
    }

    /* Medians per variant. */
    double wall[NVARIANTS], wlo[NVARIANTS], whi[NVARIANTS], cpu[NVARIANTS], wait[NVARIANTS], sw[NVARIANTS],
        thr[NVARIANTS];
    for (int v = 0; v < NVARIANTS; v++) {
        if (!selected[v]) continue;
        const epoch *e = &res[v * reps];
        wall[v] = epoch_median(e, reps, offsetof(epoch, wall), &wlo[v], &whi[v]);
        cpu[v] = epoch_median(e, reps, offsetof(epoch, cpu), NULL, NULL);
        wait[v] = epoch_median(e, reps, offsetof(epoch, wait), NULL, NULL);
        sw[v] = epoch_median(e, reps, offsetof(epoch, switches), NULL, NULL);
        thr[v] = epoch_median(e, reps, offsetof(epoch, threads), NULL, NULL);
    }

    printf("\n%-15s %27s %8s %8s %8s %8s %11s %10s %7s\n", "variant", "epoch ms median [min-max]", "hand/t", "ideal/t",
           "CPU s", "CPU/hand", "wait ms", "ctx sw", "threads");
    for (int v = 0; v < NVARIANTS; v++) {
        if (!selected[v]) continue;
        char range[64], ideal_s[16];
        snprintf(range, sizeof range, "%.1f [%.1f-%.1f]", wall[v] * 1e3, wlo[v] * 1e3, whi[v] * 1e3);
        if (ideal > 0) snprintf(ideal_s, sizeof ideal_s, "%.3f", ideal / wall[v]);
        else snprintf(ideal_s, sizeof ideal_s, "-");
        printf("%-15s %27s %8.3f %8s %8.3f %8.3f %11.1f %10.0f %7.0f\n", item_names[v], range, wall[V_HAND] / wall[v],
               ideal_s, cpu[v], cpu[v] / cpu[V_HAND], wait[v] * 1e3, sw[v], thr[v]);
    }
    printf("(hand/t: the hand-written thread's median epoch over the variant's, i.e. the variant's throughput\n"
           " relative to it; CPU s: process CPU seconds per epoch; wait ms: the training loop's total wait for its\n"
           " next batch per epoch; ctx sw: voluntary + involuntary context switches per epoch; threads: started\n"
           " by ferry per epoch)\n");

    printf("\nchecksums: %s (features %016llx, loss %.9g)\n",
           bad ? "MISMATCH" : "equal across all variants and repetitions", (unsigned long long)ref->check, ref->loss);

    char verdict[512] = "";
    size_t len = 0;
    bool any = false, pass = true;
    for (int v = 0; v < NVARIANTS; v++) {
        if (!selected[v] || !is_ferry(v)) continue;
        any = true;
        double tr = wall[V_HAND] / wall[v], cr = cpu[v] / cpu[V_HAND];
        bool ok = tr >= 0.98 && cr <= 1.05;
        pass = pass && ok;
        len += (size_t)snprintf(verdict + len, sizeof verdict - len, "%s%s %.3f / %.3f%s", len ? ", " : "",
                                item_names[v], tr, cr, ok ? "" : " (miss)");
    }
    if (any)
        printf("verdict: %s - goal: every ferry variant >= 0.98 of the hand-written thread's throughput with CPU <= "
               "1.05x; throughput / CPU ratios: %s\n",
               pass ? "MET" : "NOT MET", verdict);
    else printf("verdict: no ferry variant ran\n");

    for (int v = 0; v < NITEMS; v++) ferry_dataset_unref(ds[v]);
    free(res);
    free(ceil_t);
    free(batch0);
    CHECK(ferry_runtime_free(rt));
    return bad ? 1 : 0;
}
