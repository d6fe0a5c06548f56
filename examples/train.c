/*
 * train.c - ferry's main demo: a small classifier trained by SGD in plain C, fed by a ferry
 * pipeline, run twice to show what running ahead buys.
 *
 * The data is synthetic and deterministic: sample `id` is a point x in [-1, 1]^RAW_DIM drawn from
 * a hash of id, and its label (one of NUM_CLASSES) is a nonlinear function of x. The pipeline is
 *
 *     range(0, samples) -> shuffle(buffer) -> map(featurize) -> batch(B) -> prefetch
 *
 * where featurize turns an id into (features float32[FEAT_DIM], label int32): it draws the point,
 * jitters it with ferry_context_uniform (augmentation; the same draws for the same element
 * whatever thread runs the call) and maps it through FEAT_DIM random Fourier features
 * cos(w.x + b). That costs about as much CPU as the training step on the batch, an MLP
 * FEAT_DIM -> HIDDEN (ReLU) -> NUM_CLASSES with softmax cross-entropy.
 *
 * Run 1 is sequential: map inline (num_parallel_calls 0) and prefetch 0, so the training thread
 * does all the work. Run 2 uses map(num_parallel_calls = FERRY_AUTOTUNE) and
 * prefetch(FERRY_AUTOTUNE), so the features of the next batches are computed on other cores
 * while the current one trains. Both runs use the same seeds, so the pipeline hands out the same
 * batches in the same order and the two trained models must be bit-for-bit equal: the demo checks
 * that, prints the epoch times, the speedup and ferry's per-stage stats, and names the stage that
 * holds the pipeline back. Run 3 is the yardstick: the same featurize work and the same step fed
 * by a hand-written producer pthread (run_hand); the summary prints its time, ferry's ratio to
 * it, and the ceiling that the machine's cores allow.
 *
 * Every ferry call is checked. An error in the pipeline arrives in position, as ferry delivers
 * it: `--fail-at ID` makes the map call of training sample ID fail, and the training loop gets an
 * error in the position of the batch that holds the sample, with the map function's message
 * (ferry_iterator_error); it reports it, skips that position and trains on, as the iterator goes
 * on after an error (--stop-on-error exits with status 1 there instead). Both runs meet the error
 * in the same position and still end with the same weights. Any other failure prints its message
 * (ferry_last_error) and exits with status 1; a wrong or contradictory flag exits with status 2.
 *
 * Threads: main() is the only thread of the program besides run 3's producer; ferry's worker
 * threads (and, under map_and_batch, main() while it would wait) call featurize, which only
 * reads its `featurizer` (immutable after setup).
 *
 * Seeds: --seed N seeds the data, the model and the pipeline; epoch e's ferry iterator is made
 * with ferry_iterator_options.seed = N * 1000 + e, so each epoch reshuffles and re-draws its
 * augmentation, the same way on every run (`ferry state show` prints that seed: 42000 for
 * epoch 0 of --seed 42).
 *
 * Stopping and resuming: with --checkpoint FILE the parallel run alone is trained and, every
 * --save-every steps, the model, the training progress and the state of the epoch's ferry
 * iterator (ferry_iterator_save: positions and seeds, not data) are written to FILE atomically
 * (temporary file, fsync, rename). The iterator's state is the last part of the file, so
 * `ferry state show FILE` describes it. --stop-after N stops the program after N steps, as a
 * preemption would; --resume FILE continues from the checkpoint, the ferry iterator restored with
 * ferry_iterator_restore, and ends with the same weights, bit for bit, as an uninterrupted run
 * (tests/test_demo_resume.sh checks that).
 *
 * usage: train --help describes every flag (usage() below).
 */
#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ferry.h"

#define RAW_DIM 6
#define FEAT_DIM 256
#define HIDDEN 64
#define NUM_CLASSES 4
#define MAX_STAGES 32

typedef struct config {
    int epochs;
    int64_t samples;      /* training samples per epoch */
    int64_t eval_samples; /* held-out samples, ids after the training ones */
    int64_t batch_size;
    int64_t shuffle_buffer;
    uint64_t seed;
    float learning_rate;
    int cores;          /* the runtime's cpu_budget, for the report */
    bool stop_on_error; /* --stop-on-error: exit at the first pipeline error */
    const char *page;   /* --report-page: the report page of the parallel run, or NULL */
} config;

/* How a pipeline runs ahead. */
typedef struct mode {
    const char *name;
    int map_parallel; /* num_parallel_calls of map */
    int64_t prefetch; /* buffer_size of prefetch */
} mode;

/* ---- failing loudly ------------------------------------------------------------------------ */
static void die(const char *fmt, ...) FERRY_PRINTF(1, 2);
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "train: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* A wrong or contradictory flag: one line naming it, exit status 2. */
static void usage_error(const char *fmt, ...) FERRY_PRINTF(1, 2);
static void usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "train: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'train --help')\n");
    va_end(ap);
    exit(2);
}

/* For calls without a handle: the message is in ferry_last_error(). */
static void check(int rc, const char *what) {
    if (rc != FERRY_OK) die("%s failed: %s: %s", what, ferry_error_name(rc), ferry_last_error());
}

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
static double now_s(void) { return clock_s(CLOCK_MONOTONIC); }
/* CPU time of the whole process (all threads): with the wall time it tells how many cores the
 * run got, which shows when other processes compete for them. */
static double cpu_s(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }

/* ---- the synthetic problem ----------------------------------------------------------------- */
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static float uniform_pm1(uint64_t *s) { /* uniform in [-1, 1) */
    return (float)((double)(splitmix64(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

/* The point and label of sample `id`, independent of the pipeline: the label is a checkerboard
 * on (x0, x1) combined with a ring on (x2, x3); the other coordinates are noise. */
static int make_sample(uint64_t data_seed, int64_t id, float *x) {
    uint64_t s = data_seed ^ ((uint64_t)id * 0xd1b54a32d192ed03ULL);
    for (int i = 0; i < RAW_DIM; i++) x[i] = uniform_pm1(&s);
    int checker = (x[0] * x[1] > 0.0f);
    int ring = (x[2] * x[2] + x[3] * x[3] < 0.5f);
    return checker + 2 * ring;
}

/* What featurize reads: the random Fourier feature projection. Immutable after setup, so that
 * any number of ferry threads may read it. */
typedef struct featurizer {
    uint64_t data_seed;
    int64_t fail_id; /* --fail-at: this sample's map call fails (-1: none) */
    bool augment;
    float jitter;
    float w[FEAT_DIM][RAW_DIM];
    float b[FEAT_DIM];
    float scale;
} featurizer;

static void featurizer_init(featurizer *f, uint64_t seed, bool augment) {
    uint64_t s = seed ^ 0x5eedf00dULL;
    f->data_seed = seed;
    f->fail_id = -1;
    f->augment = augment;
    f->jitter = 0.03f;
    for (int j = 0; j < FEAT_DIM; j++) {
        for (int i = 0; i < RAW_DIM; i++) {
            /* A sum of uniforms is close enough to the Gaussian of an RBF kernel. */
            float g = uniform_pm1(&s) + uniform_pm1(&s) + uniform_pm1(&s);
            f->w[j][i] = 2.0f * g;
        }
        f->b[j] = (float)(3.14159265358979 * (uniform_pm1(&s) + 1.0f));
    }
    f->scale = sqrtf(2.0f / FEAT_DIM);
}

/* The features of sample id into phi[FEAT_DIM], its point jittered by noise[RAW_DIM] (uniform in
 * [-1, 1)) when augmenting; returns its label. The work of featurize, shared with the
 * hand-written reference. */
static int featurize_row(const featurizer *f, int64_t id, const float *noise, float *phi) {
    float x[RAW_DIM];
    int label = make_sample(f->data_seed, id, x);
    if (f->augment)
        for (int i = 0; i < RAW_DIM; i++) x[i] += f->jitter * noise[i];
    for (int j = 0; j < FEAT_DIM; j++) {
        float a = f->b[j];
        for (int i = 0; i < RAW_DIM; i++) a += f->w[j][i] * x[i];
        phi[j] = f->scale * cosf(a);
    }
    return label;
}

/* The map function: id (int64 scalar) -> (features float32[FEAT_DIM], label int32). */
static int featurize(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    const featurizer *f = user;
    *out = NULL;
    const ferry_tensor *idt = ferry_element_get(in, 0);
    if (!idt || ferry_tensor_dtype(idt) != FERRY_DTYPE_INT64 || ferry_tensor_rank(idt) != 0) {
        ferry_element_free(in);
        return ferry_context_fail(ctx, FERRY_ETYPE, "featurize: expected an int64 scalar id");
    }
    int64_t id = *(const int64_t *)ferry_tensor_data(idt);
    ferry_element_free(in);
    if (id == f->fail_id)
        return ferry_context_fail(ctx, FERRY_EUSER, "featurize: sample %" PRId64 " is marked bad (--fail-at)", id);

    float noise[RAW_DIM] = {0};
    if (f->augment)
        for (int i = 0; i < RAW_DIM; i++) noise[i] = (float)(2.0 * ferry_context_uniform(ctx) - 1.0);

    ferry_runtime *rt = ferry_context_runtime(ctx);
    const int64_t dims[1] = {FEAT_DIM};
    ferry_tensor *t[2] = {NULL, NULL};
    int rc = ferry_tensor_create(rt, FERRY_DTYPE_FLOAT32, 1, dims, &t[0]);
    if (rc == FERRY_OK) rc = ferry_tensor_create(rt, FERRY_DTYPE_INT32, 0, NULL, &t[1]);
    if (rc != FERRY_OK) {
        ferry_tensor_unref(t[0]);
        return ferry_context_fail(ctx, rc, "featurize: sample %" PRId64 ": %s", id, ferry_last_error());
    }
    int label = featurize_row(f, id, noise, ferry_tensor_mutable_data(t[0]));
    *(int32_t *)ferry_tensor_mutable_data(t[1]) = label;
    rc = ferry_element_create(rt, 2, t, out); /* takes t[0], t[1] */
    if (rc != FERRY_OK) return ferry_context_fail(ctx, rc, "featurize: %s", ferry_last_error());
    return FERRY_OK;
}

/* ---- the pipeline -------------------------------------------------------------------------- */
/* range(first, first+count) [-> shuffle] -> map(featurize) -> batch -> prefetch. Returns a new
 * reference. */
static ferry_dataset *make_pipeline(ferry_runtime *rt, const config *cfg, const mode *m, featurizer *f, int64_t first,
                                    int64_t count, bool shuffle, bool drop_remainder) {
    ferry_dataset *ds = NULL, *next = NULL;
    check(ferry_dataset_range(rt, first, first + count, 1, NULL, &ds), "ferry_dataset_range");
    if (shuffle) {
        ferry_shuffle_options so = {.seed = 1};
        check(ferry_dataset_shuffle(ds, cfg->shuffle_buffer, &so, &next), "ferry_dataset_shuffle");
        ferry_dataset_unref(ds);
        ds = next;
    }
    const ferry_tensor_spec specs[2] = {
        {.dtype = FERRY_DTYPE_FLOAT32, .shape = {.rank = 1, .dims = {FEAT_DIM}}},
        {.dtype = FERRY_DTYPE_INT32, .shape = {.rank = 0}},
    };
    ferry_map_options mo = {.num_parallel_calls = m->map_parallel, .num_outputs = 2, .output_specs = specs};
    check(ferry_dataset_map(ds, featurize, f, &mo, &next), "ferry_dataset_map");
    ferry_dataset_unref(ds);
    ds = next;
    check(ferry_dataset_batch(ds, cfg->batch_size, &(ferry_batch_options){.drop_remainder = drop_remainder}, &next),
          "ferry_dataset_batch");
    ferry_dataset_unref(ds);
    ds = next;
    check(ferry_dataset_prefetch(ds, m->prefetch, NULL, &next), "ferry_dataset_prefetch");
    ferry_dataset_unref(ds);
    return next;
}

/* The seed of epoch `epoch`'s iterator (epochs are at most 1000): it changes with the epoch, so
 * the shuffle order and the augmentation differ from epoch to epoch but not from run to run. */
static uint64_t epoch_seed(const config *cfg, int epoch) { return cfg->seed * 1000u + (uint64_t)epoch; }

static ferry_iterator *open_epoch(ferry_dataset *ds, const config *cfg, int epoch) {
    ferry_iterator_options io = {.seed = epoch_seed(cfg, epoch)};
    ferry_iterator *it = NULL;
    check(ferry_iterator_create(ds, &io, &it), "ferry_iterator_create");
    return it;
}

/* The next position of the stream: FERRY_OK with a batch in *e, FERRY_END, or an error in this
 * position (message in ferry_iterator_error; the iterator goes on after it). */
static int next_batch(ferry_iterator *it, ferry_element **e, double *wait_s) {
    *e = NULL;
    double t0 = now_s();
    int rc = ferry_iterator_next(it, e);
    *wait_s += now_s() - t0;
    return rc;
}

/* ---- the model: FEAT_DIM -> HIDDEN (ReLU) -> NUM_CLASSES, softmax cross-entropy ------------ */
typedef struct model {
    float w1[FEAT_DIM][HIDDEN], b1[HIDDEN];
    float w2[HIDDEN][NUM_CLASSES], b2[NUM_CLASSES];
} model;

static void model_init(model *mdl, uint64_t seed) {
    uint64_t s = seed ^ 0x40de1ULL;
    memset(mdl, 0, sizeof *mdl);
    float r1 = sqrtf(6.0f / (FEAT_DIM + HIDDEN)), r2 = sqrtf(6.0f / (HIDDEN + NUM_CLASSES));
    for (int i = 0; i < FEAT_DIM; i++)
        for (int j = 0; j < HIDDEN; j++) mdl->w1[i][j] = r1 * uniform_pm1(&s);
    for (int i = 0; i < HIDDEN; i++)
        for (int j = 0; j < NUM_CLASSES; j++) mdl->w2[i][j] = r2 * uniform_pm1(&s);
}

static uint64_t model_checksum(const model *mdl) { /* FNV-1a over the weights' bytes */
    const unsigned char *p = (const unsigned char *)mdl;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < sizeof *mdl; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

/* Checks that a batch is (float32[n, FEAT_DIM], int32[n]) and returns n. */
static int64_t batch_rows(const ferry_element *batch, const float **x, const int32_t **y) {
    const ferry_tensor *tx = ferry_element_get(batch, 0), *ty = ferry_element_get(batch, 1);
    if (ferry_element_size(batch) != 2 || ferry_tensor_dtype(tx) != FERRY_DTYPE_FLOAT32 || ferry_tensor_rank(tx) != 2 ||
        ferry_tensor_dim(tx, 1) != FEAT_DIM || ferry_tensor_dtype(ty) != FERRY_DTYPE_INT32 ||
        ferry_tensor_rank(ty) != 1 || ferry_tensor_dim(ty, 0) != ferry_tensor_dim(tx, 0))
        die("unexpected batch layout");
    *x = ferry_tensor_data(tx);
    *y = ferry_tensor_data(ty);
    return ferry_tensor_dim(tx, 0);
}

typedef struct totals {
    double loss;
    int64_t correct, seen;
} totals;

/* Forward pass of row x into h (hidden activations) and p (class probabilities); returns the
 * cross-entropy loss against label y. */
static float forward(const model *mdl, const float *x, int y, float *h, float *p) {
    for (int j = 0; j < HIDDEN; j++) h[j] = mdl->b1[j];
    for (int i = 0; i < FEAT_DIM; i++) {
        float xi = x[i];
        for (int j = 0; j < HIDDEN; j++) h[j] += xi * mdl->w1[i][j];
    }
    for (int j = 0; j < HIDDEN; j++) h[j] = h[j] > 0.0f ? h[j] : 0.0f;
    float zmax = -INFINITY;
    for (int k = 0; k < NUM_CLASSES; k++) {
        float z = mdl->b2[k];
        for (int j = 0; j < HIDDEN; j++) z += h[j] * mdl->w2[j][k];
        p[k] = z;
        zmax = z > zmax ? z : zmax;
    }
    float sum = 0.0f;
    for (int k = 0; k < NUM_CLASSES; k++) sum += (p[k] = expf(p[k] - zmax));
    for (int k = 0; k < NUM_CLASSES; k++) p[k] /= sum;
    return -logf(p[y] > 1e-30f ? p[y] : 1e-30f);
}

static int argmax(const float *p) {
    int best = 0;
    for (int k = 1; k < NUM_CLASSES; k++)
        if (p[k] > p[best]) best = k;
    return best;
}

/* One SGD step on a batch (mean loss over its rows). */
static void train_step(model *mdl, const float *x, const int32_t *y, int64_t n, float lr, totals *tot) {
    static model grad; /* one thread trains; kept off the stack */
    memset(&grad, 0, sizeof grad);
    float h[HIDDEN], p[NUM_CLASSES], dh[HIDDEN];
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * FEAT_DIM;
        int label = y[r];
        if (label < 0 || label >= NUM_CLASSES) die("label %d out of range", label);
        tot->loss += forward(mdl, xr, label, h, p);
        tot->correct += argmax(p) == label;
        tot->seen++;
        p[label] -= 1.0f; /* dloss/dlogits */
        for (int j = 0; j < HIDDEN; j++) {
            float d = 0.0f;
            for (int k = 0; k < NUM_CLASSES; k++) {
                grad.w2[j][k] += h[j] * p[k];
                d += p[k] * mdl->w2[j][k];
            }
            dh[j] = h[j] > 0.0f ? d : 0.0f;
        }
        for (int k = 0; k < NUM_CLASSES; k++) grad.b2[k] += p[k];
        for (int j = 0; j < HIDDEN; j++) grad.b1[j] += dh[j];
        for (int i = 0; i < FEAT_DIM; i++) {
            float xi = xr[i];
            for (int j = 0; j < HIDDEN; j++) grad.w1[i][j] += xi * dh[j];
        }
    }
    float step = lr / (float)n;
    float *w = (float *)mdl;
    const float *g = (const float *)&grad;
    for (size_t i = 0; i < sizeof *mdl / sizeof(float); i++) w[i] -= step * g[i];
}

/* ---- checkpoints: model + progress + the ferry iterator's state, in one file ------------------ */
typedef struct checkpointing {
    const char *path;    /* --checkpoint: where to save (NULL: never) */
    int64_t save_every;  /* steps between saves */
    int64_t stop_after;  /* stop the program after this many steps in all (0: never) */
    const char *resume;  /* --resume: the checkpoint to start from (NULL: a fresh start) */
    int64_t global_step; /* steps trained so far, over all epochs */
} checkpointing;

#define CKPT_MAGIC 0x54504b4359525246ULL /* "FRRYCKPT" */
#define CKPT_VERSION 2

/* The file: this header, the model, then the ferry iterator's state (ferry_iterator_save) up to
 * the end of the file, where `ferry state show` finds it. */
typedef struct ckpt_header {
    uint64_t magic;
    int32_t epoch;
    int32_t version; /* CKPT_VERSION */
    int64_t epoch_steps, global_step;
    int64_t epoch_errors; /* error positions met in this epoch so far */
    totals tot;
    int64_t samples, batch_size; /* the flags the checkpoint was made with: a resume needs the */
    uint64_t seed;               /* same ones to build the same pipeline */
    uint64_t state_size;         /* bytes of ferry iterator state after the model */
} ckpt_header;

static void save_checkpoint(const checkpointing *ck, const config *cfg, ferry_iterator *it, int epoch,
                            int64_t epoch_steps, int64_t epoch_errors, const totals *tot, const model *mdl) {
    ferry_blob *state = NULL;
    if (ferry_iterator_save(it, &state) != FERRY_OK) die("ferry_iterator_save: %s", ferry_iterator_error(it));
    ckpt_header h = {.magic = CKPT_MAGIC,
                     .epoch = epoch,
                     .version = CKPT_VERSION,
                     .epoch_steps = epoch_steps,
                     .global_step = ck->global_step,
                     .epoch_errors = epoch_errors,
                     .tot = *tot,
                     .samples = cfg->samples,
                     .batch_size = cfg->batch_size,
                     .seed = cfg->seed,
                     .state_size = ferry_blob_size(state)};
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", ck->path);
    FILE *f = fopen(tmp, "wb");
    if (!f) die("cannot write checkpoint %s: %s", tmp, strerror(errno));
    int ok = fwrite(&h, sizeof h, 1, f) == 1 && fwrite(mdl, sizeof *mdl, 1, f) == 1 &&
             fwrite(ferry_blob_data(state), 1, ferry_blob_size(state), f) == ferry_blob_size(state) && fflush(f) == 0 &&
             fsync(fileno(f)) == 0;
    int err = errno;
    if (fclose(f) != 0 && ok) ok = 0, err = errno;
    if (ok && rename(tmp, ck->path) != 0) ok = 0, err = errno;
    if (!ok) die("writing checkpoint %s failed: %s", ck->path, strerror(err));
    ferry_blob_free(state);
}

/* Loads a checkpoint: the model, the progress, and an iterator over ds continuing the epoch. */
static ferry_iterator *load_checkpoint(const char *path, const config *cfg, ferry_dataset *ds, model *mdl,
                                       ckpt_header *h) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open checkpoint %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0) die("cannot read checkpoint %s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) die("cannot read checkpoint %s: it is a directory", path);
    size_t got = fread(h, 1, sizeof *h, f);
    if (got >= 8 && memcmp(h, "FERRYST", 8) == 0)
        die("%s is a ferry iterator state file, not a checkpoint of this demo (made with --checkpoint)", path);
    if (got < 8 || h->magic != CKPT_MAGIC)
        die("%s is not a checkpoint of this demo (it does not begin with \"FRRYCKPT\")", path);
    if (got < sizeof *h || h->version != CKPT_VERSION)
        die("%s is a checkpoint of another version of this demo (format %d, this one reads %d)", path,
            got < sizeof *h ? 0 : h->version, CKPT_VERSION);
    if (h->samples != cfg->samples || h->batch_size != cfg->batch_size || h->seed != cfg->seed)
        die("%s was made with --samples %" PRId64 " --batch %" PRId64 " --seed %" PRIu64
            ", this run has --samples %" PRId64 " --batch %" PRId64 " --seed %" PRIu64
            ": resume with the flags of the run that made it",
            path, h->samples, h->batch_size, h->seed, cfg->samples, cfg->batch_size, cfg->seed);
    if (h->epoch < 0 || h->epoch >= cfg->epochs)
        die("%s is in epoch %d, but this run has --epochs %d: give at least --epochs %d", path, h->epoch + 1,
            cfg->epochs, h->epoch + 1);
    if ((uint64_t)st.st_size != sizeof *h + sizeof *mdl + h->state_size)
        die("checkpoint %s is damaged: %lld bytes, its header says %llu", path, (long long)st.st_size,
            (unsigned long long)(sizeof *h + sizeof *mdl + h->state_size));
    void *state = malloc(h->state_size ? h->state_size : 1);
    if (!state) die("allocating %llu bytes for the iterator state failed", (unsigned long long)h->state_size);
    if (fread(mdl, sizeof *mdl, 1, f) != 1 || fread(state, 1, h->state_size, f) != h->state_size)
        die("reading checkpoint %s failed: %s", path, ferror(f) ? strerror(errno) : "the file is shorter than it was");
    fclose(f);
    ferry_iterator *it = NULL;
    int rc = ferry_iterator_restore(ds, state, h->state_size, NULL, &it);
    if (rc != FERRY_OK)
        die("restoring the ferry iterator of %s: %s (%s)", path, ferry_last_error(), ferry_error_name(rc));
    free(state);
    return it;
}

typedef struct epoch_result {
    double seconds, wait_seconds, cpu_seconds, loss, accuracy;
    int64_t steps;
    int64_t errors; /* error positions met (and skipped) */
    ferry_stage_stats stages[MAX_STAGES];
    size_t nstages;
    ferry_report report;           /* the verdict on the epoch (ferry_iterator_report) */
    ferry_blob *report_json;       /* and as JSON, with --report-page (owned) */
    ferry_tune_decision tuning[8]; /* AUTOTUNE's last decisions (ferry_iterator_tuning) */
    size_t ntuning;
} epoch_result;

/* Trains on every batch of one epoch; fills r (stats are read before the iterator goes). With
 * `resumed` (an iterator restored from a checkpoint) the epoch continues where it stopped, from
 * the progress in *start. An error in a position is reported and skipped: the iterator goes on
 * after it (or, with --stop-on-error, the program exits). Returns false when --stop-after
 * stopped the program mid-epoch. */
static bool train_epoch(ferry_dataset *ds, const config *cfg, int epoch, model *mdl, epoch_result *r, checkpointing *ck,
                        ferry_iterator *resumed, const ckpt_header *start) {
    ferry_blob_free(r->report_json); /* the previous epoch's */
    memset(r, 0, sizeof *r);
    totals tot = {0};
    if (start) {
        tot = start->tot;
        r->steps = start->epoch_steps;
        r->errors = start->epoch_errors;
    }
    double t0 = now_s(), c0 = cpu_s();
    ferry_iterator *it = resumed ? resumed : open_epoch(ds, cfg, epoch);
    ferry_element *batch;
    bool stopped = false;
    int rc;
    while ((rc = next_batch(it, &batch, &r->wait_seconds)) != FERRY_END) {
        if (rc != FERRY_OK) { /* an error in this position; the next call goes on after it */
            int64_t position = r->steps + r->errors;
            r->errors++;
            if (cfg->stop_on_error)
                die("epoch %d, position %" PRId64 ": %s: %s (--stop-on-error)", epoch + 1, position,
                    ferry_error_name(rc), ferry_iterator_error(it));
            printf("  epoch %d, position %" PRId64 " (after %" PRId64 " steps): error %s: %s; skipped, training goes "
                   "on\n",
                   epoch + 1, position, r->steps, ferry_error_name(rc), ferry_iterator_error(it));
            continue;
        }
        const float *x;
        const int32_t *y;
        int64_t n = batch_rows(batch, &x, &y);
        int64_t t_step = ferry_clock_ns();
        train_step(mdl, x, y, n, cfg->learning_rate, &tot);
        ferry_element_free(batch);
        ferry_trace_step(ferry_dataset_runtime(ds), "train step", t_step); /* with FERRY_TRACE set */
        r->steps++;
        ck->global_step++;
        if (ck->path && (ck->global_step % ck->save_every == 0 || ck->global_step == ck->stop_after))
            save_checkpoint(ck, cfg, it, epoch, r->steps, r->errors, &tot, mdl);
        if (ck->stop_after > 0 && ck->global_step == ck->stop_after) {
            stopped = true;
            break;
        }
    }
    if (ferry_iterator_stats(it, r->stages, MAX_STAGES, &r->nstages) != FERRY_OK)
        die("ferry_iterator_stats failed: %s", ferry_iterator_error(it));
    if (r->nstages > MAX_STAGES) r->nstages = MAX_STAGES;
    if (ferry_iterator_report(it, &r->report) != FERRY_OK)
        die("ferry_iterator_report failed: %s", ferry_iterator_error(it));
    if (ferry_iterator_tuning(it, r->tuning, 8, &r->ntuning) != FERRY_OK)
        die("ferry_iterator_tuning failed: %s", ferry_iterator_error(it));
    if (r->ntuning > 8) { /* the last 8 */
        ferry_tune_decision all[32];
        size_t n;
        if (ferry_iterator_tuning(it, all, 32, &n) != FERRY_OK)
            die("ferry_iterator_tuning failed: %s", ferry_iterator_error(it));
        if (n > 32) n = 32;
        memcpy(r->tuning, all + (n - 8), sizeof r->tuning);
        r->ntuning = 8;
    }
    if (cfg->page) {
        ferry_blob_free(r->report_json);
        if (ferry_iterator_report_json(it, &r->report_json) != FERRY_OK)
            die("ferry_iterator_report_json failed: %s", ferry_iterator_error(it));
    }
    ferry_iterator_free(it);
    r->seconds = now_s() - t0;
    r->cpu_seconds = cpu_s() - c0;
    r->loss = tot.seen ? tot.loss / (double)tot.seen : 0.0;
    r->accuracy = tot.seen ? (double)tot.correct / (double)tot.seen : 0.0;
    return !stopped;
}

/* Accuracy on the held-out samples (no augmentation, no shuffle). */
static double evaluate(ferry_dataset *ds, const config *cfg, const model *mdl) {
    ferry_iterator *it = open_epoch(ds, cfg, 0);
    ferry_element *batch;
    double wait = 0.0;
    int64_t correct = 0, seen = 0;
    float h[HIDDEN], p[NUM_CLASSES];
    int rc;
    while ((rc = next_batch(it, &batch, &wait)) != FERRY_END) {
        if (rc != FERRY_OK) die("evaluation: %s: %s", ferry_error_name(rc), ferry_iterator_error(it));
        const float *x;
        const int32_t *y;
        int64_t n = batch_rows(batch, &x, &y);
        for (int64_t r = 0; r < n; r++) {
            forward(mdl, x + r * FEAT_DIM, y[r], h, p);
            correct += argmax(p) == y[r];
            seen++;
        }
        ferry_element_free(batch);
    }
    ferry_iterator_free(it);
    return seen ? (double)correct / (double)seen : 0.0;
}

/* ---- reporting ----------------------------------------------------------------------------- */
/* Prints the stages of the last epoch, the training loop's share of the time, and ferry's
 * verdict on what holds the pipeline back (ferry_iterator_report). */
static void print_stats(const epoch_result *r, int cores) {
    printf("    %-13s %9s %9s %9s %8s %9s %9s %8s %7s %7s %5s\n", "stage", "elements", "work ms", "rows ms", "us/elem",
           "wait in", "wait out", "lock ms", "buffer", "threads", "cpu%");
    for (size_t i = 0; i < r->nstages; i++) {
        const ferry_stage_stats *s = &r->stages[i];
        int64_t own = s->work_ns + s->assemble_ns; /* its own work, and copying rows into batches */
        double per = s->elements_out > 0 ? (double)own * 1e-3 / (double)s->elements_out : 0.0;
        char buf[48], cpu[16] = "-";
        snprintf(buf, sizeof buf, "%" PRId64 "/%" PRId64, s->buffered_elements, s->buffer_capacity);
        if (s->thread_ns > 0) snprintf(cpu, sizeof cpu, "%.0f", 100.0 * (double)s->cpu_ns / (double)s->thread_ns);
        printf("    %-13.13s %9" PRId64 " %9.1f %9.1f %8.2f %9.1f %9.1f %8.1f %7s %7" PRId64 " %5s\n", s->name,
               s->elements_out, (double)s->work_ns * 1e-6, (double)s->assemble_ns * 1e-6, per,
               (double)s->wait_input_ns * 1e-6, (double)s->wait_consumer_ns * 1e-6, (double)s->lock_wait_ns * 1e-6, buf,
               s->parallelism, cpu);
    }
    double waited = r->seconds > 0 ? r->wait_seconds / r->seconds : 0.0;
    double busy = r->seconds > 0 ? r->cpu_seconds / r->seconds : 0.0;
    double train_s = r->seconds - r->wait_seconds;
    printf("    training loop: %.2f s computing, %.2f s (%.0f%%) waiting for batches; %.1f of %d cores busy\n", train_s,
           r->wait_seconds, 100.0 * waited, busy, cores);
    printf("    verdict (%s): %s\n", ferry_limit_name(r->report.limit), r->report.text);
    printf("    wait in next(): p50 %.1f us, p99 %.1f us\n", (double)r->report.wait_p50_ns * 1e-3,
           (double)r->report.wait_p99_ns * 1e-3);
    for (size_t i = 0; i < r->ntuning; i++)
        printf("    AUTOTUNE at %.2f s, %s: %s\n", r->tuning[i].at_s, ferry_tune_outcome_name(r->tuning[i].outcome),
               r->tuning[i].why);
}

typedef struct run_result {
    double seconds, wait_seconds, cpu_seconds, loss, accuracy, test_accuracy;
    uint64_t checksum;
    int64_t errors;          /* error positions met and skipped, over all epochs */
    ferry_blob *report_json; /* the last epoch's report as JSON, with --report-page (owned) */
} run_result;

/* Trains a fresh model (or the one of ck->resume) for cfg->epochs epochs with pipelines running
 * in mode m. Sets *stopped when --stop-after ended the run early. */
static run_result run(ferry_runtime *rt, const config *cfg, const mode *m, featurizer *train_f, featurizer *eval_f,
                      checkpointing *ck, bool *stopped) {
    printf("\n%s: map num_parallel_calls=%s, prefetch %s\n", m->name,
           m->map_parallel == FERRY_AUTOTUNE ? "AUTOTUNE"
           : m->map_parallel == 0            ? "0 (inline)"
                                             : "N",
           m->prefetch == FERRY_AUTOTUNE ? "AUTOTUNE"
           : m->prefetch == 0            ? "0 (none)"
                                         : "N");
    ferry_dataset *train_ds = make_pipeline(rt, cfg, m, train_f, 0, cfg->samples, true, true);
    ferry_dataset *eval_ds = make_pipeline(rt, cfg, m, eval_f, cfg->samples, cfg->eval_samples, false, false);
    static model mdl;
    model_init(&mdl, cfg->seed);
    run_result res = {0};
    epoch_result er = {0};
    int first_epoch = 0;
    ferry_iterator *resumed = NULL;
    ckpt_header start;
    if (ck->resume) {
        resumed = load_checkpoint(ck->resume, cfg, train_ds, &mdl, &start);
        first_epoch = start.epoch;
        ck->global_step = start.global_step;
        if (ck->stop_after > 0 && ck->stop_after <= start.global_step)
            die("--stop-after %" PRId64 ": %s is already at step %" PRId64 "; give a later step", ck->stop_after,
                ck->resume, start.global_step);
        printf("  resumed from %s: epoch %d (iterator seed %" PRIu64 "), step %" PRId64 " of the epoch, %" PRId64
               " steps in all\n",
               ck->resume, start.epoch + 1, epoch_seed(cfg, start.epoch), start.epoch_steps, start.global_step);
    }
    *stopped = false;
    for (int epoch = first_epoch; epoch < cfg->epochs && !*stopped; epoch++) {
        *stopped = !train_epoch(train_ds, cfg, epoch, &mdl, &er, ck, resumed, resumed ? &start : NULL);
        resumed = NULL;
        res.seconds += er.seconds;
        res.wait_seconds += er.wait_seconds;
        res.cpu_seconds += er.cpu_seconds;
        res.errors += er.errors;
        printf("  epoch %d: %6.2f s  %5" PRId64 " steps  loss %.4f  train accuracy %5.1f%%  (waited for data %2.0f%%,"
               " %.1f cores busy)",
               epoch + 1, er.seconds, er.steps, er.loss, 100.0 * er.accuracy,
               er.seconds > 0 ? 100.0 * er.wait_seconds / er.seconds : 0.0,
               er.seconds > 0 ? er.cpu_seconds / er.seconds : 0.0);
        if (er.errors > 0) printf("  %" PRId64 " error position%s skipped", er.errors, er.errors == 1 ? "" : "s");
        printf("\n");
    }
    if (*stopped) {
        printf("  stopped after %" PRId64 " steps; checkpoint in %s (resume with --resume %s; its ferry iterator state:"
               " ferry state show %s)\n",
               ck->global_step, ck->path, ck->path, ck->path);
        ferry_blob_free(er.report_json);
        ferry_dataset_unref(eval_ds);
        ferry_dataset_unref(train_ds);
        return res;
    }
    if (ck->stop_after > 0)
        printf("  --stop-after %" PRId64 " was not reached: the run ended after %" PRId64 " steps\n", ck->stop_after,
               ck->global_step);
    res.loss = er.loss;
    res.report_json = er.report_json; /* the caller's now */
    res.accuracy = er.accuracy;
    printf("  stats of the last epoch (ferry_iterator_stats):\n");
    print_stats(&er, cfg->cores);
    res.test_accuracy = evaluate(eval_ds, cfg, &mdl);
    res.checksum = model_checksum(&mdl);
    printf("  held-out accuracy %.1f%% on %" PRId64 " samples; weights checksum %016" PRIx64 "\n",
           100.0 * res.test_accuracy, cfg->eval_samples, res.checksum);
    ferry_dataset_unref(eval_ds);
    ferry_dataset_unref(train_ds);
    return res;
}


/* ---- the reference: the same work on a hand-written producer thread --------------------------
 * What a careful programmer writes without ferry: one producer pthread that shuffles the ids
 * through a buffer of the same size, featurizes whole batches into preallocated buffers and
 * hands them over through a bounded queue (depth 3, one mutex, two condition variables); the
 * training thread takes a batch, runs the same step and gives the buffer back. Same featurize
 * work, same step, same batch size; the draws differ (a plain splitmix64 instead of ferry's
 * per-element generator), so its model is not bit-identical to ferry's. It is the yardstick for
 * the parallel run on this machine: on 2 cores it is the most that overlapping can buy. */
#define HAND_DEPTH 3

typedef struct hand_batch {
    float *x; /* batch_size x FEAT_DIM */
    int32_t *y;
    int64_t rows;
} hand_batch;

typedef struct hand_queue {
    pthread_mutex_t mu;
    pthread_cond_t ready, room;
    hand_batch buf[HAND_DEPTH + 2]; /* in the queue, being filled, being trained on */
    int order[HAND_DEPTH + 2];      /* ring of filled buffers (indices into buf) */
    bool free_buf[HAND_DEPTH + 2];
    int head, count;
    bool done;
    const config *cfg;
    const featurizer *f;
    uint64_t seed;
} hand_queue;

static void *hand_producer(void *arg) {
    hand_queue *q = arg;
    const config *cfg = q->cfg;
    int64_t n = cfg->samples, bs = cfg->batch_size, cap = cfg->shuffle_buffer < n ? cfg->shuffle_buffer : n;
    int64_t *pool = malloc((size_t)cap * sizeof *pool);
    if (!pool) die("out of memory");
    uint64_t rng = q->seed;
    int64_t next_id = 0, held = 0;
    while (held < cap) pool[held++] = next_id++;
    for (int64_t b = 0; b < n / bs; b++) { /* drop_remainder, as the pipeline */
        pthread_mutex_lock(&q->mu);
        int k = -1;
        while (k < 0) {
            for (int i = 0; i < HAND_DEPTH + 2 && k < 0; i++)
                if (q->free_buf[i] && q->count < HAND_DEPTH) k = i;
            if (k < 0) pthread_cond_wait(&q->room, &q->mu);
        }
        q->free_buf[k] = false;
        pthread_mutex_unlock(&q->mu);
        hand_batch *hb = &q->buf[k];
        for (int64_t r = 0; r < bs; r++) {
            int64_t pick = (int64_t)(splitmix64(&rng) % (uint64_t)held);
            int64_t id = pool[pick];
            if (next_id < n) pool[pick] = next_id++;
            else pool[pick] = pool[--held];
            float noise[RAW_DIM];
            for (int i = 0; i < RAW_DIM; i++) noise[i] = uniform_pm1(&rng);
            hb->y[r] = featurize_row(q->f, id, noise, hb->x + r * FEAT_DIM);
        }
        hb->rows = bs;
        pthread_mutex_lock(&q->mu);
        q->order[(q->head + q->count) % (HAND_DEPTH + 2)] = k;
        q->count++;
        pthread_cond_signal(&q->ready);
        pthread_mutex_unlock(&q->mu);
    }
    pthread_mutex_lock(&q->mu);
    q->done = true;
    pthread_cond_signal(&q->ready);
    pthread_mutex_unlock(&q->mu);
    free(pool);
    return NULL;
}

/* Trains a fresh model for cfg->epochs epochs fed by the hand-written producer thread. */
static run_result run_hand(const config *cfg, const featurizer *f) {
    printf("\nrun 3, reference: hand-written producer pthread + bounded queue (depth %d), same featurize and step\n",
           HAND_DEPTH);
    static hand_queue q;
    static model mdl;
    model_init(&mdl, cfg->seed);
    run_result res = {0};
    for (int i = 0; i < HAND_DEPTH + 2; i++) {
        q.buf[i].x = malloc((size_t)cfg->batch_size * FEAT_DIM * sizeof(float));
        q.buf[i].y = malloc((size_t)cfg->batch_size * sizeof(int32_t));
        if (!q.buf[i].x || !q.buf[i].y) die("out of memory");
    }
    totals tot = {0};
    for (int epoch = 0; epoch < cfg->epochs; epoch++) {
        pthread_mutex_init(&q.mu, NULL);
        pthread_cond_init(&q.ready, NULL);
        pthread_cond_init(&q.room, NULL);
        for (int i = 0; i < HAND_DEPTH + 2; i++) q.free_buf[i] = true;
        q.head = q.count = 0;
        q.done = false;
        q.cfg = cfg;
        q.f = f;
        q.seed = epoch_seed(cfg, epoch) ^ 0x9e3779b97f4a7c15ULL;
        memset(&tot, 0, sizeof tot);
        double t0 = now_s(), c0 = cpu_s(), wait = 0.0;
        int64_t steps = 0;
        pthread_t th;
        if (pthread_create(&th, NULL, hand_producer, &q) != 0) die("pthread_create failed");
        for (;;) {
            double w0 = now_s();
            pthread_mutex_lock(&q.mu);
            while (q.count == 0 && !q.done) pthread_cond_wait(&q.ready, &q.mu);
            if (q.count == 0) {
                pthread_mutex_unlock(&q.mu);
                break;
            }
            int k = q.order[q.head];
            q.head = (q.head + 1) % (HAND_DEPTH + 2);
            q.count--;
            pthread_mutex_unlock(&q.mu);
            wait += now_s() - w0;
            train_step(&mdl, q.buf[k].x, q.buf[k].y, q.buf[k].rows, cfg->learning_rate, &tot);
            steps++;
            pthread_mutex_lock(&q.mu);
            q.free_buf[k] = true;
            pthread_cond_signal(&q.room);
            pthread_mutex_unlock(&q.mu);
        }
        pthread_join(th, NULL);
        pthread_cond_destroy(&q.room);
        pthread_cond_destroy(&q.ready);
        pthread_mutex_destroy(&q.mu);
        double secs = now_s() - t0, cpu = cpu_s() - c0;
        res.seconds += secs;
        res.cpu_seconds += cpu;
        res.loss = tot.seen ? tot.loss / (double)tot.seen : 0.0;
        res.accuracy = tot.seen ? (double)tot.correct / (double)tot.seen : 0.0;
        printf("  epoch %d: %6.2f s  %5" PRId64 " steps  loss %.4f  train accuracy %5.1f%%  (waited for data %2.0f%%,"
               " %.1f cores busy)\n",
               epoch + 1, secs, steps, res.loss, 100.0 * res.accuracy, secs > 0 ? 100.0 * wait / secs : 0.0,
               secs > 0 ? cpu / secs : 0.0);
    }
    for (int i = 0; i < HAND_DEPTH + 2; i++) {
        free(q.buf[i].x);
        free(q.buf[i].y);
    }
    return res;
}

/* ---- main ---------------------------------------------------------------------------------- */
static int64_t parse_int(const char *opt, const char *v, int64_t lo, int64_t hi) {
    char *end = NULL;
    errno = 0;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v) usage_error("%s needs a value: an integer from %" PRId64 " to %" PRId64, opt, lo, hi);
    if (!*v || *end || errno || x < lo || x > hi)
        usage_error("%s %s: expected an integer from %" PRId64 " to %" PRId64, opt, v, lo, hi);
    return x;
}

static const char *parse_file(const char *opt, const char *v) {
    if (!v || !*v) usage_error("%s needs a file name", opt);
    if (strncmp(v, "--", 2) == 0) usage_error("%s needs a file name, not the flag '%s'", opt, v);
    return v;
}

/* --checkpoint FILE: a file (not a directory) in a directory that exists and can be written. */
static void check_checkpoint_path(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        usage_error("--checkpoint %s: that is a directory; name a file, e.g. %s/ck", path, path);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) slash[1] = '\0';
    else *slash = '\0';
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        usage_error("--checkpoint %s: directory %s does not exist", path, dir);
    if (access(dir, W_OK) != 0)
        usage_error("--checkpoint %s: directory %s is not writable: %s", path, dir, strerror(errno));
}

static void usage(void) {
    printf("usage: train [OPTIONS]\n"
           "Trains a small classifier (an MLP on random Fourier features) by SGD on synthetic data\n"
           "fed by a ferry pipeline: range -> shuffle -> map(featurize) -> batch -> prefetch. Without\n"
           "--checkpoint or --resume it trains twice, sequentially and with parallel map and prefetch,\n"
           "checks that both runs end with the same weights, and shows what running ahead bought\n"
           "(times, per-stage stats, the stage that holds the pipeline back).\n"
           "\n"
           "data and training:\n"
           "  --epochs N         passes over the training samples (default 3; 1 with --quick), at most 1000\n"
           "  --samples N        training samples per epoch (default 131072; 16384 with --quick)\n"
           "  --batch N          samples per SGD step (default 64); an epoch's last partial batch is\n"
           "                     dropped\n"
           "  --seed N           seed of the data, the model and the pipeline (default 42); epoch e's\n"
           "                     ferry iterator gets seed N*1000+e, the seed 'ferry state show' prints\n"
           "  --quick            a short run: 1 epoch of 16384 samples, 2048 held out; --epochs and\n"
           "                     --samples given beside it win, in any order\n"
           "  --cpu-budget N     threads ferry's AUTOTUNE may keep busy (ferry_runtime_options.cpu_budget);\n"
           "                     default 0: all cores\n"
           "\n"
           "errors in position:\n"
           "  --fail-at ID       make the map call of training sample ID (0 to samples-1) fail: the\n"
           "                     error arrives in the position of the batch holding it, with the map\n"
           "                     function's message; the demo reports it, skips that position and\n"
           "                     trains on (the iterator goes on after an error), in every epoch\n"
           "  --stop-on-error    exit with status 1 at the first pipeline error instead\n"
           "\n"
           "stopping and resuming (the parallel run only):\n"
           "  --checkpoint FILE  save the model, the training progress and the ferry iterator's state\n"
           "                     to FILE (atomically) every --save-every steps and at --stop-after;\n"
           "                     'ferry state show FILE' describes the iterator's state in it\n"
           "  --save-every N     steps between checkpoints (default 50; needs --checkpoint)\n"
           "  --stop-after N     stop after N steps in all, as a preemption would (needs --checkpoint)\n"
           "  --resume FILE      continue from a checkpoint, given the --samples, --batch and --seed\n"
           "                     it was made with: the run ends with the same weights, bit for bit,\n"
           "                     as one never stopped; add --checkpoint to keep saving\n"
           "  --report-page FILE write the report page (HTML: the parallel run's stages and verdict,\n"
           "                     the timeline of both runs' threads) to FILE\n"
           "  -h, --help         this help\n"
           "\n"
           "example: train --quick --checkpoint /tmp/ck --stop-after 100; train --quick --resume /tmp/ck\n"
           "exit status: 0 success, 1 a failure (its message on stderr), 2 a wrong or contradictory flag\n");
}

int main(int argc, char **argv) {
    config cfg = {.epochs = 3,
                  .samples = 131072,
                  .eval_samples = 8192,
                  .batch_size = 64,
                  .shuffle_buffer = 4096,
                  .seed = 42,
                  .learning_rate = 0.7f};
    int64_t fail_id = -1, epochs = -1, samples = -1, save_every = -1;
    bool quick = false;
    ferry_runtime_options ro = {0};
    checkpointing ck = {.save_every = 50};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quick") == 0) {
            quick = true;
            continue;
        } else if (strcmp(a, "--stop-on-error") == 0) {
            cfg.stop_on_error = true;
            continue;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            return 0;
        } else if (strcmp(a, "--epochs") == 0) {
            epochs = parse_int(a, v, 1, 1000);
        } else if (strcmp(a, "--samples") == 0) {
            samples = parse_int(a, v, 1, INT64_C(1) << 40);
        } else if (strcmp(a, "--batch") == 0) {
            cfg.batch_size = parse_int(a, v, 1, 1 << 20);
        } else if (strcmp(a, "--seed") == 0) {
            cfg.seed = (uint64_t)parse_int(a, v, 0, INT64_MAX);
        } else if (strcmp(a, "--cpu-budget") == 0) {
            ro.cpu_budget = (int)parse_int(a, v, 0, 4096);
        } else if (strcmp(a, "--fail-at") == 0) {
            fail_id = parse_int(a, v, 0, INT64_MAX);
        } else if (strcmp(a, "--checkpoint") == 0) {
            ck.path = parse_file(a, v);
        } else if (strcmp(a, "--save-every") == 0) {
            save_every = parse_int(a, v, 1, INT64_MAX);
        } else if (strcmp(a, "--stop-after") == 0) {
            ck.stop_after = parse_int(a, v, 1, INT64_MAX);
        } else if (strcmp(a, "--resume") == 0) {
            ck.resume = parse_file(a, v);
        } else if (strcmp(a, "--report-page") == 0) {
            cfg.page = parse_file(a, v);
            ro.trace_bytes = (size_t)32 << 20; /* the page's timeline */
        } else {
            usage_error("unknown option '%s'", a);
        }
        i++; /* the flag's value */
    }
    if (quick) {
        cfg.epochs = 1;
        cfg.samples = 16384;
        cfg.eval_samples = 2048;
    }
    if (epochs > 0) cfg.epochs = (int)epochs;
    if (samples > 0) cfg.samples = samples;
    if (save_every > 0) ck.save_every = save_every;

    /* Flags that would do nothing, or contradict each other, are errors. */
    int64_t steps_per_epoch = cfg.samples / cfg.batch_size;
    if (steps_per_epoch == 0)
        usage_error("--batch %" PRId64 " is larger than the %" PRId64 " samples of an epoch: no step would train",
                    cfg.batch_size, cfg.samples);
    if (fail_id >= cfg.samples)
        usage_error("--fail-at %" PRId64 ": no training sample has that id; they are 0 to %" PRId64
                    " (--samples %" PRId64 ")",
                    fail_id, cfg.samples - 1, cfg.samples);
    if (ck.stop_after > 0 && !ck.path)
        usage_error("--stop-after needs --checkpoint FILE: a stopped run continues from its checkpoint");
    if (save_every > 0 && !ck.path) usage_error("--save-every needs --checkpoint FILE");
    if (ck.stop_after > (int64_t)cfg.epochs * steps_per_epoch)
        usage_error("--stop-after %" PRId64 ": the run has only %" PRId64 " steps (%d epoch%s of %" PRId64 ")",
                    ck.stop_after, (int64_t)cfg.epochs * steps_per_epoch, cfg.epochs, cfg.epochs == 1 ? "" : "s",
                    steps_per_epoch);
    if (ck.path) check_checkpoint_path(ck.path);
    if (ck.resume) {
        struct stat st;
        if (stat(ck.resume, &st) != 0) usage_error("--resume %s: %s", ck.resume, strerror(errno));
        if (S_ISDIR(st.st_mode)) usage_error("--resume %s: that is a directory, not a checkpoint file", ck.resume);
    }

    ferry_runtime *rt = NULL;
    check(ferry_runtime_create(&ro, &rt), "ferry_runtime_create");
    ferry_runtime_stats rs;
    check(ferry_runtime_stats_get(rt, &rs), "ferry_runtime_stats_get");
    cfg.cores = rs.cpu_budget;

    static featurizer train_f, eval_f;
    featurizer_init(&train_f, cfg.seed, true);
    featurizer_init(&eval_f, cfg.seed, false);
    train_f.fail_id = fail_id;

    printf("ferry %s training demo: MLP %d random Fourier features -> %d hidden -> %d classes, SGD\n", ferry_version(),
           FEAT_DIM, HIDDEN, NUM_CLASSES);
    printf("data: %" PRId64 " synthetic samples per epoch, %d epoch%s, batch %" PRId64 ", shuffle buffer %" PRId64
           ", %d cores\n",
           cfg.samples, cfg.epochs, cfg.epochs == 1 ? "" : "s", cfg.batch_size, cfg.shuffle_buffer, cfg.cores);
    printf("seed %" PRIu64 ": epoch e's ferry iterator gets seed %" PRIu64 " + e (ferry_iterator_options.seed)\n",
           cfg.seed, epoch_seed(&cfg, 0));
    printf("pipeline: range -> shuffle -> map(featurize) -> batch -> prefetch\n");
    if (fail_id >= 0)
        printf("--fail-at %" PRId64 ": that sample's map call fails; the error arrives in its batch's position%s\n",
               fail_id, cfg.stop_on_error ? " and stops the program (--stop-on-error)" : ", which training skips");

    const mode sequential = {"run 1, sequential", 0, 0};
    const mode parallel = {"run 2, parallel", FERRY_AUTOTUNE, FERRY_AUTOTUNE};
    bool stopped = false;
    if (ck.path || ck.resume) { /* checkpointed training: the parallel run alone */
        run_result c = run(rt, &cfg, &parallel, &train_f, &eval_f, &ck, &stopped);
        ferry_blob_free(c.report_json);
        check(ferry_runtime_free(rt), "ferry_runtime_free");
        if (!stopped) printf("final weights checksum %016" PRIx64 "\n", c.checksum);
        return 0;
    }
    checkpointing none = {.save_every = 1};
    run_result a = run(rt, &cfg, &sequential, &train_f, &eval_f, &none, &stopped);
    none.global_step = 0;
    run_result b = run(rt, &cfg, &parallel, &train_f, &eval_f, &none, &stopped);
    run_result h = run_hand(&cfg, &train_f);
    ferry_blob_free(a.report_json);
    if (cfg.page) { /* the parallel run's last epoch, and the trace of both runs */
        ferry_blob *trace = NULL;
        check(ferry_runtime_trace_json(rt, &trace), "ferry_runtime_trace_json");
        check(ferry_report_page_write(rt, ferry_blob_data(b.report_json), ferry_blob_size(b.report_json),
                                      ferry_blob_data(trace), ferry_blob_size(trace), cfg.page),
              "ferry_report_page_write");
        ferry_blob_free(trace);
        printf("\nreport page: %s (the parallel run's verdict and stages; the timeline of both runs)\n", cfg.page);
    }
    ferry_blob_free(b.report_json);

    check(ferry_runtime_stats_get(rt, &rs), "ferry_runtime_stats_get");
    check(ferry_runtime_free(rt), "ferry_runtime_free");

    printf("\nsummary\n");
    double busy_a = a.seconds > 0 ? a.cpu_seconds / a.seconds : 0.0;
    double busy_b = b.seconds > 0 ? b.cpu_seconds / b.seconds : 0.0;
    printf("  sequential %.2f s (%.1f cores busy), parallel %.2f s (%.1f cores busy): speedup %.2fx\n", a.seconds,
           busy_a, b.seconds, busy_b, b.seconds > 0 ? a.seconds / b.seconds : 0.0);
    /* The ceiling: the training thread's own work (the sequential run's time outside next)
     * cannot shrink, and all the work cannot take less than its CPU time spread over the cores
     * (ferry's consumer works on the pipeline itself while it would wait for a batch). */
    double load = a.wait_seconds, step = a.seconds - a.wait_seconds;
    double spread = (load + step) / cfg.cores;
    double ceiling = step > spread ? step : spread;
    printf("  ceiling on %d core%s: %.2f s (speedup %.2fx): the sequential run spent %.2f s training and %.2f s "
           "loading; no schedule finishes before the training alone or before all the work spread over the "
           "cores\n",
           cfg.cores, cfg.cores == 1 ? "" : "s", ceiling, ceiling > 0 ? a.seconds / ceiling : 0.0, step, load);
    printf("  hand-written producer thread: %.2f s (%.1f cores busy); ferry: %.2f s, %.2f of its speed and %.2f of "
           "the ceiling's\n",
           h.seconds, h.seconds > 0 ? h.cpu_seconds / h.seconds : 0.0, b.seconds,
           b.seconds > 0 ? h.seconds / b.seconds : 0.0, b.seconds > 0 ? ceiling / b.seconds : 0.0);
    if (busy_a < 0.85)
        printf("  note: the sequential run got only %.1f of a core: other programs were using the CPU, so these "
               "times are not a clean measurement\n",
               busy_a);
    printf("  final loss %.6f / %.6f, train accuracy %.2f%% / %.2f%%, held-out accuracy %.2f%% / %.2f%%\n", a.loss,
           b.loss, 100.0 * a.accuracy, 100.0 * b.accuracy, 100.0 * a.test_accuracy, 100.0 * b.test_accuracy);
    printf("  peak buffered bytes %zu of a budget of %zu\n", rs.budget_used_peak, rs.budget);
    if (a.errors > 0 || b.errors > 0)
        printf("  error positions skipped: %" PRId64 " / %" PRId64 " (training went on after each)\n", a.errors,
               b.errors);
    if (a.checksum != b.checksum || a.loss != b.loss || a.test_accuracy != b.test_accuracy || a.errors != b.errors) {
        printf("  MISMATCH: the two runs saw different data (weights %016" PRIx64 " vs %016" PRIx64 ")\n", a.checksum,
               b.checksum);
        return 1;
    }
    printf("  identical models (weights checksum %016" PRIx64 "): same seed, same batches, same order%s\n", a.checksum,
           a.errors > 0 ? ", same error positions" : "");
    return 0;
}
