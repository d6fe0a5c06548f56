/*
 * train.c - ferry's main demo: a classifier of Fashion-MNIST images trained by SGD in plain C, fed
 * by a ferry pipeline that reads, decodes and augments the images, run twice to show what running
 * ahead buys.
 *
 * The data are the TFRecord shards that `ferry convert fashion-mnist DIR` writes (--data DIR;
 * by default data/fashion-mnist beside this program): DIR/train.tfrecord-* (60,000 records, in
 * the order of the original files) and DIR/test.tfrecord-* (10,000), each record a
 * tf.train.Example with `image` (bytes: a 28x28 8-bit grayscale PNG) and `label` (int64, 0 to 9).
 * The training pipeline is
 *
 *     list_files -> tfrecord -> take(samples) -> shuffle(buffer) -> parse_example(image, label)
 *         -> image_augment(decode the PNG, a random 28x28 window of the image padded by 2 pixels,
 *            float32 normalised by the data set's mean and std) -> batch(B) -> prefetch
 *
 * and the test pipeline the same without shuffle and without the random window (the whole
 * image). There is no left-right flip: it cost this model 0.6 points of test accuracy
 * (FLIP_PROBABILITY). The model is an MLP 784 -> HIDDEN (ReLU) -> 10 with softmax cross-entropy,
 * trained on the main thread by SGD with momentum, its learning rate decaying to 0 on a cosine
 * over the run; 8 epochs reach about 86 % test accuracy. HIDDEN is sized so that on two cores
 * the training step and the pipeline cost about the same per image: the demo measures both before
 * it trains (the pipeline iterated alone, without training; the step alone on batches that
 * pipeline made) and prints them; with HIDDEN 112, each takes about 14 to 15 us of CPU per
 * image on the 2-core x86-64 machine it was sized on.
 *
 * Run 1 is sequential: parse_example and image_augment inline (num_parallel_calls 0) and prefetch
 * 0, so the training thread does all the work. Run 2 gives both maps num_parallel_calls =
 * FERRY_AUTOTUNE and prefetch FERRY_AUTOTUNE, so the images of the next batches are decoded on
 * other cores while the current one trains. Both runs use the same seeds, so the pipeline hands
 * out the same batches in the same order, augmented the same way (image_augment draws from each
 * element's own generator), and the two trained models must be bit-for-bit equal: the demo checks
 * that, prints the epoch times, the speedup, ferry's per-stage stats, and ferry's verdict on what
 * holds the pipeline back (ferry_iterator_report). Run 3 is the yardstick: the same work, done by
 * a hand-written producer pthread (run_hand) that reads the TFRecord files itself, parses the
 * Examples by hand and decodes and augments each image with ferry's single-image call
 * ferry_image_augment; the summary prints its time, ferry's ratio to it, and the ceiling that the
 * machine's cores allow.
 *
 * Progress: while an epoch trains, a line with its steps, images/s, loss and time left is redrawn
 * in place when stdout is a terminal; otherwise (a log) a plain line is printed every few seconds.
 *
 * Every ferry call is checked. An error in the pipeline arrives in position, as ferry delivers
 * it: `--fail-at N` numbers the training records in file order (enumerate, before shuffle) and
 * adds a map after shuffle that fails for record N, and the training loop gets an error in the
 * position of the batch that holds that record, with the map's message (ferry_iterator_error);
 * it reports it, skips that position and trains on, as the iterator goes on after an error
 * (--stop-on-error exits with status 1 there instead). Both runs meet the error in the same
 * position and still end with the same weights. Missing data prints the command that makes it;
 * any other failure prints its message (ferry_last_error) and exits with status 1; a wrong or
 * contradictory flag exits with status 2.
 *
 * Threads: main() is the only thread of the program besides run 3's producer; ferry's worker
 * threads (and, under map_and_batch, main() while it would wait) run the maps, which only read
 * what was set up before the pipeline was made (the parser, the --fail-at position).
 *
 * Seeds: --seed N seeds the model and the pipeline; epoch e's ferry iterator is made with
 * ferry_iterator_options.seed = N * 1000 + e, so each epoch reshuffles and re-draws its
 * augmentation, the same way on every run (`ferry state show` prints that seed: 42000 for
 * epoch 0 of --seed 42).
 *
 * Stopping and resuming: with --checkpoint FILE the parallel run alone is trained and, every
 * --save-every steps, the model (weights and momentum), the training progress and the state of
 * the epoch's ferry iterator (ferry_iterator_save: positions and seeds, not data) are written to
 * FILE atomically (temporary file, fsync, rename). The iterator's state is the last part of the
 * file, so `ferry state show FILE` describes it. --stop-after N stops the program after N steps,
 * as a preemption would; --resume FILE continues from the checkpoint, the ferry iterator restored
 * with ferry_iterator_restore, and ends with the same weights, bit for bit, as an uninterrupted
 * run (tests/test_demo_resume.sh checks that).
 *
 * usage: train --help describes every flag (usage() below).
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include <errno.h>
#include <glob.h>
#include <pthread.h>
#include <inttypes.h>
#include <limits.h>
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

#define IMAGE_SIDE 28
#define PIXELS (IMAGE_SIDE * IMAGE_SIDE)
#define HIDDEN 112 /* the step then costs about what the pipeline does per image (see above) */
#define NUM_CLASSES 10
#define TRAIN_RECORDS 60000 /* Fashion-MNIST's training set */
#define TEST_RECORDS 10000
#define PIXEL_MEAN 0.2860f /* of the training images, on [0, 1] */
#define PIXEL_STD 0.3530f
#define CROP_PADDING 2
/* Left-right flips (0.5 is the usual choice) cost this MLP 0.6 points of test accuracy after 8
 * epochs (86.4 % -> 85.9 % with --seed 42, 86.7 % -> 86.0 % with 7), so the demo does not flip.
 * The random window costs it 2 points too (88.6 % without, --seed 42), but it stays: it is the
 * augmentation that shows image_augment at work. */
#define FLIP_PROBABILITY 0.0
#define MAX_STAGES 32

typedef struct config {
    const char *data; /* --data: the directory of the shards */
    char train_glob[4200], test_glob[4200];
    int epochs;
    int64_t samples;      /* training images per epoch: the first ones of the shards */
    int64_t eval_samples; /* test images evaluated: the first ones of the test shard */
    int64_t measure;      /* images the pipeline and the step are timed on, alone */
    int64_t batch_size;
    int64_t shuffle_buffer;
    uint64_t seed;
    float learning_rate, momentum;
    int64_t fail_at;    /* --fail-at: this record's position fails (-1: none) */
    int cores;          /* the runtime's cpu_budget, for the report */
    bool stop_on_error; /* --stop-on-error: exit at the first pipeline error */
    bool tty;           /* stdout is a terminal: progress redrawn in place */
    const char *page;   /* --report-page: the report page of the parallel run, or NULL */
} config;

/* How a pipeline runs ahead. */
typedef struct mode {
    const char *name;
    int map_parallel; /* num_parallel_calls of parse_example and image_augment */
    int64_t prefetch; /* buffer_size of prefetch */
} mode;

/* ---- failing loudly ------------------------------------------------------------------------ */
static _Noreturn void die(const char *fmt, ...) FERRY_PRINTF(1, 2);
static _Noreturn void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "train: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* A wrong or contradictory flag: one line naming it, exit status 2. */
static _Noreturn void usage_error(const char *fmt, ...) FERRY_PRINTF(1, 2);
static _Noreturn void usage_error(const char *fmt, ...) {
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
/* CPU time of the calling thread: what its own work cost, whatever else the machine ran. */
static double thread_cpu_s(void) { return clock_s(CLOCK_THREAD_CPUTIME_ID); }

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static float uniform_pm1(uint64_t *s) { /* uniform in [-1, 1) */
    return (float)((double)(splitmix64(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

/* ---- the data ------------------------------------------------------------------------------ */
/* The directory this program lies in (for the default --data and the ferry tool beside it). */
static void program_dir(const char *argv0, char *dir, size_t cap) {
    char self[4096] = "";
    if (strchr(argv0, '/')) {
        snprintf(self, sizeof self, "%s", argv0);
    } else { /* found through PATH */
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        self[n > 0 ? n : 0] = '\0';
    }
    char *slash = strrchr(self, '/');
    if (!slash) snprintf(dir, cap, ".");
    else if (slash == self) snprintf(dir, cap, "/");
    else snprintf(dir, cap, "%.*s", (int)(slash - self), self);
}

/* The paths matching pattern into *out, sorted (glob's order, as list_files'); false when none. */
static bool find_files(const char *pattern, glob_t *out) {
    if (glob(pattern, 0, NULL, out) == 0) return true;
    globfree(out);
    return false;
}

/* Both sets of shards must be there; if not, the message names the command that makes them. */
static void check_data(const config *cfg, const char *bindir) {
    const char *patterns[2] = {cfg->train_glob, cfg->test_glob};
    for (int i = 0; i < 2; i++) {
        glob_t g;
        if (!find_files(patterns[i], &g))
            die("no Fashion-MNIST data in %s (nothing matches %s); make it with:\n    %s/ferry convert fashion-mnist "
                "%s\nor name the directory that holds it with --data DIR",
                cfg->data, patterns[i], bindir, cfg->data);
        globfree(&g);
    }
}

/* --fail-at: after enumerate numbered the records (in file order) and shuffle mixed them, a map
 * that fails for the record numbered `*bad` and hands the others on without their number. */
static int fail_at(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    const int64_t *bad = user;
    *out = NULL;
    const ferry_tensor *number = ferry_element_get(in, 0);
    ferry_tensor *record = ferry_element_get(in, 1);
    if (!number || !record || ferry_tensor_dtype(number) != FERRY_DTYPE_INT64) {
        ferry_element_free(in);
        return ferry_context_fail(ctx, FERRY_ETYPE, "fail_at: expected (int64 number, record)");
    }
    int64_t position = *(const int64_t *)ferry_tensor_data(number);
    if (position == *bad) {
        ferry_element_free(in);
        return ferry_context_fail(ctx, FERRY_EUSER,
                                  "record %" PRId64 " of the training shards is marked bad (--fail-at)", position);
    }
    ferry_tensor *keep = ferry_tensor_ref(record);
    ferry_element_free(in);
    int rc = ferry_element_create(ferry_context_runtime(ctx), 1, &keep, out); /* takes keep */
    if (rc != FERRY_OK) return ferry_context_fail(ctx, rc, "fail_at: %s", ferry_last_error());
    return FERRY_OK;
}

/* What image_augment does: for training, decode, a random window of the padded image (and a flip
 * with FLIP_PROBABILITY); for the test, decode only. Both normalise to float32 [28, 28, 1]. m is
 * NULL for the hand-written reference, which calls ferry_image_augment itself. */
static ferry_image_augment_options augment_options(const mode *m, bool train) {
    ferry_image_augment_options ao = {
        .num_parallel_calls = m ? m->map_parallel : 0,
        .channels = 1,
        .crop = train ? FERRY_IMAGE_CROP_RANDOM : FERRY_IMAGE_CROP_NONE,
        .height = train ? IMAGE_SIDE : 0,
        .width = train ? IMAGE_SIDE : 0,
        .padding = train ? CROP_PADDING : 0,
        .flip = train ? FLIP_PROBABILITY : 0.0,
        .dtype = FERRY_DTYPE_FLOAT32,
        .mean = {PIXEL_MEAN},
        .std = {PIXEL_STD},
    };
    return ao;
}

/* ---- the pipeline -------------------------------------------------------------------------- */
/* After a constructor made *next from ds: checks it, drops ds, returns *next. */
static ferry_dataset *then(ferry_dataset *ds, int rc, ferry_dataset *const *next, const char *what) {
    check(rc, what);
    ferry_dataset_unref(ds);
    return *next;
}

/* list_files -> tfrecord -> take(count) [-> enumerate] [-> shuffle] [-> map(fail_at)] ->
 * parse_example -> image_augment -> batch -> prefetch (the training pipeline shuffles; with
 * --fail-at it numbers the records and fails one). Returns a new reference. */
static ferry_dataset *make_pipeline(ferry_runtime *rt, const config *cfg, const mode *m, bool train) {
    ferry_dataset *ds = NULL, *next = NULL;
    check(ferry_dataset_list_files(rt, train ? cfg->train_glob : cfg->test_glob, NULL, &ds),
          "ferry_dataset_list_files");
    ds = then(ds, ferry_dataset_tfrecord_files(ds, NULL, &next), &next, "ferry_dataset_tfrecord_files");
    ds = then(ds, ferry_dataset_take(ds, train ? cfg->samples : cfg->eval_samples, NULL, &next), &next,
              "ferry_dataset_take");
    bool fail = train && cfg->fail_at >= 0;
    if (fail) ds = then(ds, ferry_dataset_enumerate(ds, NULL, &next), &next, "ferry_dataset_enumerate");
    if (train) {
        ferry_shuffle_options so = {.seed = 1};
        ds = then(ds, ferry_dataset_shuffle(ds, cfg->shuffle_buffer, &so, &next), &next, "ferry_dataset_shuffle");
    }
    if (fail) {
        const ferry_tensor_spec record = {.dtype = FERRY_DTYPE_BYTES, .shape = {.rank = 0}};
        ferry_map_options fo = {.name = "fail_at", .num_outputs = 1, .output_specs = &record};
        ds = then(ds, ferry_dataset_map(ds, fail_at, (void *)&cfg->fail_at, &fo, &next), &next, "ferry_dataset_map");
    }
    const ferry_example_feature features[2] = {
        {.key = "image", .dtype = FERRY_DTYPE_BYTES, .kind = FERRY_EXAMPLE_FIXED},
        {.key = "label", .dtype = FERRY_DTYPE_INT64, .kind = FERRY_EXAMPLE_FIXED},
    };
    const ferry_example_spec spec = {.num_features = 2, .features = features};
    ferry_example_parser *parser = NULL;
    check(ferry_example_parser_create(rt, &spec, &parser), "ferry_example_parser_create");
    ferry_parse_example_options po = {.num_parallel_calls = m->map_parallel};
    ds = then(ds, ferry_dataset_parse_example(ds, parser, &po, &next), &next, "ferry_dataset_parse_example");
    ferry_example_parser_free(parser); /* the dataset keeps its own reference */
    ferry_image_augment_options ao = augment_options(m, train);
    ds = then(ds, ferry_dataset_image_augment(ds, &ao, &next), &next, "ferry_dataset_image_augment");
    ds = then(ds, ferry_dataset_batch(ds, cfg->batch_size, &(ferry_batch_options){.drop_remainder = train}, &next),
              &next, "ferry_dataset_batch");
    return then(ds, ferry_dataset_prefetch(ds, m->prefetch, NULL, &next), &next, "ferry_dataset_prefetch");
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

/* Checks that a batch is (float32[n, 28, 28, 1], int64[n]) and returns n. */
static int64_t batch_rows(const ferry_element *batch, const float **x, const int64_t **y) {
    const ferry_tensor *tx = ferry_element_get(batch, 0), *ty = ferry_element_get(batch, 1);
    if (ferry_element_size(batch) != 2 || ferry_tensor_dtype(tx) != FERRY_DTYPE_FLOAT32 || ferry_tensor_rank(tx) < 2 ||
        ferry_tensor_num_entries(tx) != ferry_tensor_dim(tx, 0) * PIXELS ||
        ferry_tensor_dtype(ty) != FERRY_DTYPE_INT64 || ferry_tensor_rank(ty) != 1 ||
        ferry_tensor_dim(ty, 0) != ferry_tensor_dim(tx, 0))
        die("unexpected batch layout");
    *x = ferry_tensor_data(tx);
    *y = ferry_tensor_data(ty);
    return ferry_tensor_dim(tx, 0);
}

/* ---- the model: 784 -> HIDDEN (ReLU) -> 10, softmax cross-entropy, SGD with momentum ---------- */
typedef struct model {
    float w1[PIXELS][HIDDEN], b1[HIDDEN];
    float w2[HIDDEN][NUM_CLASSES], b2[NUM_CLASSES];
} model;

/* What training changes: the weights and their momentum (both in checkpoints). */
typedef struct learner {
    model w, v;
} learner;

static void learner_init(learner *l, uint64_t seed) {
    uint64_t s = seed ^ 0x40de1ULL;
    memset(l, 0, sizeof *l);
    /* He's uniform initialisation for the ReLU layer, Glorot's for the output layer. */
    float r1 = sqrtf(6.0f / PIXELS), r2 = sqrtf(6.0f / (HIDDEN + NUM_CLASSES));
    for (int i = 0; i < PIXELS; i++)
        for (int j = 0; j < HIDDEN; j++) l->w.w1[i][j] = r1 * uniform_pm1(&s);
    for (int i = 0; i < HIDDEN; i++)
        for (int j = 0; j < NUM_CLASSES; j++) l->w.w2[i][j] = r2 * uniform_pm1(&s);
}

static uint64_t model_checksum(const model *mdl) { /* FNV-1a over the weights' bytes */
    const unsigned char *p = (const unsigned char *)mdl;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < sizeof *mdl; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

typedef struct totals {
    double loss;
    int64_t correct, seen;
} totals;

/* The hidden activations h[HIDDEN] of image x: ReLU(b1 + x W1), as HIDDEN-wide multiply-adds
 * (vectorised by the compiler), one per pixel. */
static void hidden_layer(const model *mdl, const float *x, float *h) {
    float acc[HIDDEN];
    memcpy(acc, mdl->b1, sizeof acc);
    for (int i = 0; i < PIXELS; i++) {
        const float xi = x[i], *w = mdl->w1[i];
        for (int j = 0; j < HIDDEN; j++) acc[j] += xi * w[j];
    }
    for (int j = 0; j < HIDDEN; j++) h[j] = acc[j] > 0.0f ? acc[j] : 0.0f;
}

/* The class probabilities p[NUM_CLASSES] from the hidden activations h; returns the
 * cross-entropy loss against label y. */
static float output_layer(const model *mdl, const float *h, int y, float *p) {
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

/* The learning rate of step `step` (counted over all epochs): cosine decay from
 * cfg->learning_rate to 0 over the run, the same in every run and after a resume. */
static float learning_rate(const config *cfg, int64_t step) {
    int64_t total = (int64_t)cfg->epochs * (cfg->samples / cfg->batch_size);
    double done = total > 0 ? (double)step / (double)total : 0.0;
    return (float)(cfg->learning_rate * 0.5 * (1.0 + cos(3.14159265358979 * (done < 1.0 ? done : 1.0))));
}

/* One SGD step with momentum on a batch of n images x[n][PIXELS] (mean loss over its rows):
 * v = momentum v + g, w -= lr v, with lr the rate of step `step`. The forward pass and the
 * backward pass through the output layer go image by image and keep each image's hidden
 * gradient; then each row of W1 gets its gradient summed over the batch and is updated at once,
 * so W1 and its momentum are read and written once per batch, not once per image. One thread
 * trains at a time (the buffers are static). */
static void train_step(learner *l, const float *x, const int64_t *y, int64_t n, const config *cfg, int64_t step,
                       totals *tot) {
    static float *dhs; /* n x HIDDEN: the gradients of the hidden activations */
    static int64_t rows;
    if (n > rows) {
        free(dhs);
        if (!(dhs = malloc((size_t)n * HIDDEN * sizeof(float))))
            die("out of memory for a batch of %" PRId64 " images", n);
        rows = n;
    }
    model *w = &l->w, *v = &l->v;
    float gw2[HIDDEN][NUM_CLASSES] = {{0}}, gb2[NUM_CLASSES] = {0}, gb1[HIDDEN] = {0}, h[HIDDEN], p[NUM_CLASSES];
    for (int64_t r = 0; r < n; r++) {
        float *dh = dhs + r * HIDDEN;
        int64_t label = y[r];
        if (label < 0 || label >= NUM_CLASSES) die("label %" PRId64 " out of range", label);
        hidden_layer(w, x + r * PIXELS, h);
        tot->loss += output_layer(w, h, (int)label, p);
        tot->correct += argmax(p) == label;
        tot->seen++;
        p[label] -= 1.0f; /* dloss/dlogits */
        for (int k = 0; k < NUM_CLASSES; k++) gb2[k] += p[k];
        for (int j = 0; j < HIDDEN; j++) {
            float d = 0.0f;
            for (int k = 0; k < NUM_CLASSES; k++) {
                gw2[j][k] += h[j] * p[k];
                d += p[k] * w->w2[j][k];
            }
            dh[j] = h[j] > 0.0f ? d : 0.0f;
            gb1[j] += dh[j];
        }
    }
    const float scale = 1.0f / (float)n, lr = learning_rate(cfg, step), mu = cfg->momentum;
    for (int i = 0; i < PIXELS; i++) {
        float g[HIDDEN] = {0};
        for (int64_t r = 0; r < n; r++) {
            const float xi = x[r * PIXELS + i], *dh = dhs + r * HIDDEN;
            for (int j = 0; j < HIDDEN; j++) g[j] += xi * dh[j];
        }
        float *wi = w->w1[i], *vi = v->w1[i];
        for (int j = 0; j < HIDDEN; j++) {
            vi[j] = mu * vi[j] + scale * g[j];
            wi[j] -= lr * vi[j];
        }
    }
    for (int j = 0; j < HIDDEN; j++) {
        v->b1[j] = mu * v->b1[j] + scale * gb1[j];
        w->b1[j] -= lr * v->b1[j];
        for (int k = 0; k < NUM_CLASSES; k++) {
            v->w2[j][k] = mu * v->w2[j][k] + scale * gw2[j][k];
            w->w2[j][k] -= lr * v->w2[j][k];
        }
    }
    for (int k = 0; k < NUM_CLASSES; k++) {
        v->b2[k] = mu * v->b2[k] + scale * gb2[k];
        w->b2[k] -= lr * v->b2[k];
    }
}

/* ---- progress ------------------------------------------------------------------------------ */
/* One epoch's progress line: redrawn in place on a terminal (at most 10 times a second), a plain
 * line every PROGRESS_EVERY_S seconds otherwise. */
#define PROGRESS_EVERY_S 5.0

typedef struct progress {
    bool tty;
    int epoch, epochs;
    int64_t steps_total; /* steps the epoch will have */
    int64_t steps0;      /* steps done when this process started it (a resumed epoch) */
    double t0, last;
    bool drawn; /* a line is on the terminal, to be cleared */
} progress;

static void progress_start(progress *pg, const config *cfg, int epoch, int64_t steps0) {
    *pg = (progress){.tty = cfg->tty,
                     .epoch = epoch,
                     .epochs = cfg->epochs,
                     .steps_total = cfg->samples / cfg->batch_size,
                     .steps0 = steps0,
                     .t0 = now_s()};
    pg->last = pg->t0;
}

static void progress_show(progress *pg, int64_t steps, int64_t batch_size, const totals *tot) {
    double t = now_s();
    if (t - pg->last < (pg->tty ? 0.1 : PROGRESS_EVERY_S)) return;
    pg->last = t;
    double rate = (double)(steps - pg->steps0) / (t - pg->t0); /* steps per second */
    double eta = rate > 0 ? (double)(pg->steps_total - steps) / rate : 0.0;
    double loss = tot->seen ? tot->loss / (double)tot->seen : 0.0;
    if (pg->tty) {
        char bar[21];
        int filled = pg->steps_total > 0 ? (int)(20 * steps / pg->steps_total) : 0;
        for (int i = 0; i < 20; i++) bar[i] = i < filled ? '#' : '.';
        bar[20] = '\0';
        printf("\r\033[K  epoch %d/%d [%s] %5" PRId64 "/%" PRId64 " steps  %6.0f images/s  loss %.4f  ETA %.1f s",
               pg->epoch + 1, pg->epochs, bar, steps, pg->steps_total, rate * (double)batch_size, loss, eta);
        pg->drawn = true;
    } else {
        printf("  epoch %d/%d: %" PRId64 "/%" PRId64 " steps, %.0f images/s, loss %.4f, ETA %.1f s\n", pg->epoch + 1,
               pg->epochs, steps, pg->steps_total, rate * (double)batch_size, loss, eta);
    }
    fflush(stdout);
}

/* Clears the progress line (before any other output). */
static void progress_clear(progress *pg) {
    if (!pg->drawn) return;
    printf("\r\033[K");
    pg->drawn = false;
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
#define CKPT_VERSION 4

/* The file: this header, the learner (weights and momentum), then the ferry iterator's state
 * (ferry_iterator_save) up to the end of the file, where `ferry state show` finds it. */
typedef struct ckpt_header {
    uint64_t magic;
    int32_t epoch;
    int32_t version; /* CKPT_VERSION */
    int64_t epoch_steps, global_step;
    int64_t epoch_errors; /* error positions met in this epoch so far */
    totals tot;
    int64_t samples, batch_size; /* the flags the checkpoint was made with: a resume needs the */
    uint64_t seed;               /* same ones to build the same pipeline */
    int32_t epochs;              /* and the epochs, which set the learning rate's schedule */
    int32_t hidden;              /* HIDDEN of the program that wrote it */
    int64_t fail_at;             /* --fail-at (-1: none): the record that fails is part of the stream */
    uint64_t state_size;         /* bytes of ferry iterator state after the learner */
} ckpt_header;

static void save_checkpoint(const checkpointing *ck, const config *cfg, ferry_iterator *it, int epoch,
                            int64_t epoch_steps, int64_t epoch_errors, const totals *tot, const learner *l) {
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
                     .epochs = cfg->epochs,
                     .hidden = HIDDEN,
                     .fail_at = cfg->fail_at,
                     .state_size = ferry_blob_size(state)};
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", ck->path);
    FILE *f = fopen(tmp, "wb");
    if (!f) die("cannot write checkpoint %s: %s", tmp, strerror(errno));
    int ok = fwrite(&h, sizeof h, 1, f) == 1 && fwrite(l, sizeof *l, 1, f) == 1 &&
             fwrite(ferry_blob_data(state), 1, ferry_blob_size(state), f) == ferry_blob_size(state) && fflush(f) == 0 &&
             fsync(fileno(f)) == 0;
    int err = errno;
    if (fclose(f) != 0 && ok) ok = 0, err = errno;
    if (ok && rename(tmp, ck->path) != 0) ok = 0, err = errno;
    if (!ok) die("writing checkpoint %s failed: %s", ck->path, strerror(err));
    ferry_blob_free(state);
}

/* Loads a checkpoint: the learner, the progress, and an iterator over ds continuing the epoch. */
static ferry_iterator *load_checkpoint(const char *path, const config *cfg, ferry_dataset *ds, learner *l,
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
    if (h->hidden != HIDDEN)
        die("%s holds a model with %d hidden units, this demo's has %d: it was made by another build", path, h->hidden,
            HIDDEN);
    if (h->samples != cfg->samples || h->batch_size != cfg->batch_size || h->seed != cfg->seed ||
        h->epochs != cfg->epochs)
        die("%s was made with --samples %" PRId64 " --batch %" PRId64 " --seed %" PRIu64 " --epochs %d"
            ", this run has --samples %" PRId64 " --batch %" PRId64 " --seed %" PRIu64 " --epochs %d"
            ": resume with the flags of the run that made it (the epochs set the learning rate's schedule)",
            path, h->samples, h->batch_size, h->seed, h->epochs, cfg->samples, cfg->batch_size, cfg->seed, cfg->epochs);
    if (h->fail_at != cfg->fail_at) {
        char was[32] = "no --fail-at", is[32] = "no --fail-at";
        if (h->fail_at >= 0) snprintf(was, sizeof was, "--fail-at %" PRId64, h->fail_at);
        if (cfg->fail_at >= 0) snprintf(is, sizeof is, "--fail-at %" PRId64, cfg->fail_at);
        die("%s was made with %s, this run has %s: resume with the flags of the run that made it", path, was, is);
    }
    if (h->epoch < 0 || h->epoch >= cfg->epochs) die("checkpoint %s is damaged: it is in epoch %d", path, h->epoch + 1);
    if ((uint64_t)st.st_size != sizeof *h + sizeof *l + h->state_size)
        die("checkpoint %s is damaged: %lld bytes, its header says %llu", path, (long long)st.st_size,
            (unsigned long long)(sizeof *h + sizeof *l + h->state_size));
    void *state = malloc(h->state_size ? h->state_size : 1);
    if (!state) die("allocating %llu bytes for the iterator state failed", (unsigned long long)h->state_size);
    if (fread(l, sizeof *l, 1, f) != 1 || fread(state, 1, h->state_size, f) != h->state_size)
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
static bool train_epoch(ferry_dataset *ds, const config *cfg, int epoch, learner *l, epoch_result *r, checkpointing *ck,
                        ferry_iterator *resumed, const ckpt_header *start) {
    ferry_blob_free(r->report_json); /* the previous epoch's */
    memset(r, 0, sizeof *r);
    totals tot = {0};
    if (start) {
        tot = start->tot;
        r->steps = start->epoch_steps;
        r->errors = start->epoch_errors;
    }
    progress pg;
    progress_start(&pg, cfg, epoch, r->steps);
    double t0 = now_s(), c0 = cpu_s();
    ferry_iterator *it = resumed ? resumed : open_epoch(ds, cfg, epoch);
    ferry_element *batch;
    bool stopped = false;
    int rc;
    while ((rc = next_batch(it, &batch, &r->wait_seconds)) != FERRY_END) {
        if (rc != FERRY_OK) { /* an error in this position; the next call goes on after it */
            int64_t position = r->steps + r->errors;
            r->errors++;
            progress_clear(&pg);
            if (cfg->stop_on_error)
                die("epoch %d, position %" PRId64 ": %s: %s (--stop-on-error)", epoch + 1, position,
                    ferry_error_name(rc), ferry_iterator_error(it));
            printf("  epoch %d, position %" PRId64 " (after %" PRId64 " steps): error %s: %s; skipped, training goes "
                   "on\n",
                   epoch + 1, position, r->steps, ferry_error_name(rc), ferry_iterator_error(it));
            continue;
        }
        const float *x;
        const int64_t *y;
        int64_t n = batch_rows(batch, &x, &y);
        int64_t t_step = ferry_clock_ns();
        train_step(l, x, y, n, cfg, ck->global_step, &tot);
        ferry_element_free(batch);
        ferry_trace_step(ferry_dataset_runtime(ds), "train step", t_step); /* with FERRY_TRACE set */
        r->steps++;
        ck->global_step++;
        progress_show(&pg, r->steps, cfg->batch_size, &tot);
        if (ck->path && (ck->global_step % ck->save_every == 0 || ck->global_step == ck->stop_after))
            save_checkpoint(ck, cfg, it, epoch, r->steps, r->errors, &tot, l);
        if (ck->stop_after > 0 && ck->global_step == ck->stop_after) {
            stopped = true;
            break;
        }
    }
    progress_clear(&pg);
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

/* Accuracy on the test images (no augmentation, no shuffle). */
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
        const int64_t *y;
        int64_t n = batch_rows(batch, &x, &y);
        for (int64_t r = 0; r < n; r++) {
            if (y[r] < 0 || y[r] >= NUM_CLASSES) die("test label %" PRId64 " out of range", y[r]);
            hidden_layer(mdl, x + r * PIXELS, h);
            output_layer(mdl, h, (int)y[r], p);
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

static void print_epoch(int epoch, double secs, int64_t steps, double loss, double accuracy, double wait, double cpu) {
    printf("  epoch %d: %6.2f s  %5" PRId64 " steps  loss %.4f  train accuracy %5.1f%%  (waited for data %2.0f%%,"
           " %.1f cores busy)",
           epoch + 1, secs, steps, loss, 100.0 * accuracy, secs > 0 ? 100.0 * wait / secs : 0.0,
           secs > 0 ? cpu / secs : 0.0);
}

/* Trains a fresh model (or the one of ck->resume) for cfg->epochs epochs with pipelines running
 * in mode m. Sets *stopped when --stop-after ended the run early. */
static run_result run(ferry_runtime *rt, const config *cfg, const mode *m, checkpointing *ck, bool *stopped) {
    printf("\n%s: parse_example and image_augment num_parallel_calls=%s, prefetch %s\n", m->name,
           m->map_parallel == FERRY_AUTOTUNE ? "AUTOTUNE"
           : m->map_parallel == 0            ? "0 (inline)"
                                             : "N",
           m->prefetch == FERRY_AUTOTUNE ? "AUTOTUNE"
           : m->prefetch == 0            ? "0 (none)"
                                         : "N");
    fflush(stdout);
    ferry_dataset *train_ds = make_pipeline(rt, cfg, m, true);
    ferry_dataset *eval_ds = make_pipeline(rt, cfg, m, false);
    static learner l;
    learner_init(&l, cfg->seed);
    run_result res = {0};
    epoch_result er = {0};
    int first_epoch = 0;
    ferry_iterator *resumed = NULL;
    ckpt_header start;
    if (ck->resume) {
        resumed = load_checkpoint(ck->resume, cfg, train_ds, &l, &start);
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
        *stopped = !train_epoch(train_ds, cfg, epoch, &l, &er, ck, resumed, resumed ? &start : NULL);
        resumed = NULL;
        res.seconds += er.seconds;
        res.wait_seconds += er.wait_seconds;
        res.cpu_seconds += er.cpu_seconds;
        res.errors += er.errors;
        print_epoch(epoch, er.seconds, er.steps, er.loss, er.accuracy, er.wait_seconds, er.cpu_seconds);
        if (er.errors > 0) printf("  %" PRId64 " error position%s skipped", er.errors, er.errors == 1 ? "" : "s");
        printf("\n");
        fflush(stdout);
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
    res.test_accuracy = evaluate(eval_ds, cfg, &l.w);
    res.checksum = model_checksum(&l.w);
    printf("  test accuracy %.2f%% on %" PRId64 " images; weights checksum %016" PRIx64 "\n", 100.0 * res.test_accuracy,
           cfg->eval_samples, res.checksum);
    ferry_dataset_unref(eval_ds);
    ferry_dataset_unref(train_ds);
    return res;
}

/* ---- the pipeline and the step, each alone -------------------------------------------------- */
/* Microseconds per image. Both run on the calling thread alone, so its CPU time is their cost
 * even while other programs share the machine. */
typedef struct costs {
    int64_t images;
    double pipeline_cpu, pipeline_wall;
    double step_cpu, step_wall;
} costs;

/* The sequential training pipeline iterated without training, timed over cfg->measure images
 * after as many first ones (files open, buffers allocated, the shuffle buffer filled as it is for
 * most of an epoch), then the training step alone on the first batches it made (a scratch model,
 * cycling through them) for as many images. */
static costs measure_costs(ferry_runtime *rt, const config *cfg, const mode *sequential) {
    enum { KEEP = 16 };
    ferry_element *keep[KEEP] = {NULL};
    int nkeep = 0;
    costs c = {0};
    printf("\nmeasuring on %" PRId64 " images: the pipeline alone (iterated without training, after %" PRId64
           " images to warm up), then the training step alone\n",
           cfg->measure, cfg->measure);
    fflush(stdout);
    ferry_dataset *ds = make_pipeline(rt, cfg, sequential, true);
    ferry_iterator *it = open_epoch(ds, cfg, 0);
    ferry_element *batch;
    double t0 = 0.0, c0 = 0.0, wait = 0.0;
    int64_t warm = cfg->measure; /* the epoch's start, where shuffle fills its buffer, is not timed */
    int rc;
    while (c.images < cfg->measure && (rc = next_batch(it, &batch, &wait)) != FERRY_END) {
        if (rc != FERRY_OK) continue; /* --fail-at's position */
        const float *x;
        const int64_t *y;
        int64_t n = batch_rows(batch, &x, &y);
        if (warm > 0) warm -= n;
        else if (t0 == 0.0) t0 = now_s(), c0 = thread_cpu_s();
        else c.images += n;
        if (nkeep < KEEP) keep[nkeep++] = batch;
        else ferry_element_free(batch);
    }
    double wall = now_s() - t0, cpu = thread_cpu_s() - c0;
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    if (c.images == 0) {
        printf("  too few training images to time anything alone (--samples %" PRId64 ")\n", cfg->samples);
        for (int i = 0; i < nkeep; i++) ferry_element_free(keep[i]);
        return c;
    }
    c.pipeline_wall = wall * 1e6 / (double)c.images;
    c.pipeline_cpu = cpu * 1e6 / (double)c.images;

    static learner scratch;
    learner_init(&scratch, cfg->seed);
    totals tot = {0};
    int64_t done = 0;
    t0 = now_s(), c0 = thread_cpu_s();
    for (int i = 0; done < c.images; i = (i + 1) % nkeep) {
        const float *x;
        const int64_t *y;
        int64_t n = batch_rows(keep[i], &x, &y);
        train_step(&scratch, x, y, n, cfg, 0, &tot);
        done += n;
    }
    c.step_cpu = (thread_cpu_s() - c0) * 1e6 / (double)done;
    c.step_wall = (now_s() - t0) * 1e6 / (double)done;
    for (int i = 0; i < nkeep; i++) ferry_element_free(keep[i]);
    printf("  the pipeline alone: %.1f us of CPU per image (%.1f us wall)\n", c.pipeline_cpu, c.pipeline_wall);
    printf("  the training step alone: %.1f us of CPU per image (%.1f us wall)\n", c.step_cpu, c.step_wall);
    return c;
}

/* ---- the reference: the same work on a hand-written producer thread --------------------------
 * What a careful programmer writes without ferry: one producer pthread that reads the TFRecord
 * files itself (stdio, both CRCs checked as ferry does), shuffles the records through a buffer of
 * the same size, parses each Example by hand, decodes and augments its image with
 * ferry_image_augment (the call the pipeline's map makes, on one image) into preallocated batch
 * buffers, and hands whole batches over through a bounded queue (depth 3, one mutex, two
 * condition variables); the training thread takes a batch, runs the same step and gives the
 * buffer back. Same work, same step, same batch size; the draws differ (a plain splitmix64
 * instead of ferry's per-element generators), so its model is not bit-identical to ferry's, and
 * --fail-at does not apply to it. It is the yardstick for the parallel run on this machine: on 2
 * cores it is the most that overlapping can buy. */
#define HAND_DEPTH 3

/* CRC-32C (Castagnoli), eight bytes a step (slicing-by-8), as TFRecord framing needs. */
static uint32_t crc_table[8][256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

static uint32_t crc32c(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (; n >= 8; n -= 8, p += 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^ crc_table[5][(lo >> 16) & 0xff] ^
            crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
    }
    while (n--) c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

static uint32_t masked_crc(const uint8_t *p, size_t n) {
    uint32_t c = crc32c(p, n);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The records of the training shards, one after another. */
typedef struct record_reader {
    glob_t *files;
    size_t file;
    FILE *f;
    char *iobuf;
} record_reader;

/* The next record into *buf (grown as needed); false at the end of the last file. */
static bool read_record(record_reader *r, uint8_t **buf, size_t *cap, size_t *len) {
    uint8_t head[12], tail[4];
    for (;;) {
        if (!r->f) {
            if (r->file >= r->files->gl_pathc) return false;
            const char *path = r->files->gl_pathv[r->file++];
            if (!(r->f = fopen(path, "rb"))) die("reference: cannot open %s: %s", path, strerror(errno));
            setvbuf(r->f, r->iobuf, _IOFBF, 256 << 10);
        }
        size_t got = fread(head, 1, sizeof head, r->f);
        if (got == 0 && feof(r->f)) {
            fclose(r->f);
            r->f = NULL;
            continue;
        }
        if (got != sizeof head || le32(head + 8) != masked_crc(head, 8))
            die("reference: %s: a damaged record header", r->files->gl_pathv[r->file - 1]);
        uint64_t n = (uint64_t)le32(head) | (uint64_t)le32(head + 4) << 32;
        if (n > (64u << 20)) die("reference: %s: a record of %" PRIu64 " bytes", r->files->gl_pathv[r->file - 1], n);
        if (n > *cap) {
            free(*buf);
            *cap = (size_t)n * 2;
            if (!(*buf = malloc(*cap))) die("out of memory");
        }
        if (fread(*buf, 1, (size_t)n, r->f) != n || fread(tail, 1, 4, r->f) != 4 ||
            le32(tail) != masked_crc(*buf, (size_t)n))
            die("reference: %s: a damaged or truncated record", r->files->gl_pathv[r->file - 1]);
        *len = (size_t)n;
        return true;
    }
}

/* A protobuf wire-format cursor: just what a tf.train.Example with one bytes and one int64
 * feature needs. */
typedef struct wire {
    const uint8_t *p, *end;
} wire;

static uint64_t wire_varint(wire *w) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && w->p < w->end; shift += 7) {
        uint8_t b = *w->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
    }
    die("reference: a malformed Example (bad varint)");
}

/* The next field: its number and wire type; a length-delimited one's bytes in *sub. False at
 * the end. */
static bool wire_field(wire *w, int *field, int *type, wire *sub) {
    if (w->p >= w->end) return false;
    uint64_t key = wire_varint(w);
    *field = (int)(key >> 3);
    *type = (int)(key & 7);
    if (*type == 0) {
        sub->p = w->p;
        wire_varint(w);
        sub->end = w->p;
    } else if (*type == 2) {
        uint64_t n = wire_varint(w);
        if (n > (uint64_t)(w->end - w->p)) die("reference: a malformed Example (length past the end)");
        sub->p = w->p;
        sub->end = w->p += n;
    } else if (*type == 1 || *type == 5) {
        size_t n = *type == 1 ? 8 : 4;
        if (n > (size_t)(w->end - w->p)) die("reference: a malformed Example (field past the end)");
        sub->p = w->p;
        sub->end = w->p += n;
    } else {
        die("reference: a malformed Example (wire type %d)", *type);
    }
    return true;
}

/* The image bytes and the label of a serialized Example. */
static void parse_record(const uint8_t *rec, size_t len, const uint8_t **png, size_t *png_len, int64_t *label) {
    wire ex = {rec, rec + len}, features, entry, part, list, value;
    int f, t;
    bool have_image = false, have_label = false;
    while (wire_field(&ex, &f, &t, &features)) {
        if (f != 1 || t != 2) continue;
        while (wire_field(&features, &f, &t, &entry)) {
            if (f != 1 || t != 2) continue;
            wire key = {NULL, NULL}, feature = {NULL, NULL};
            while (wire_field(&entry, &f, &t, &part)) {
                if (f == 1 && t == 2) key = part;
                if (f == 2 && t == 2) feature = part;
            }
            size_t klen = (size_t)(key.end - key.p);
            bool is_image = klen == 5 && memcmp(key.p, "image", 5) == 0;
            bool is_label = klen == 5 && memcmp(key.p, "label", 5) == 0;
            while ((is_image || is_label) && wire_field(&feature, &f, &t, &list)) {
                if (is_image && f == 1 && t == 2) { /* BytesList */
                    while (wire_field(&list, &f, &t, &value))
                        if (f == 1 && t == 2)
                            *png = value.p, *png_len = (size_t)(value.end - value.p), have_image = true;
                } else if (is_label && f == 3 && t == 2) { /* Int64List */
                    while (wire_field(&list, &f, &t, &value)) {
                        if (f == 1 && t == 0) *label = (int64_t)wire_varint(&value), have_label = true;
                        else if (f == 1 && t == 2) /* packed */
                            while (value.p < value.end) *label = (int64_t)wire_varint(&value), have_label = true;
                    }
                }
            }
        }
    }
    if (!have_image || !have_label) die("reference: an Example without %s", have_image ? "label" : "image");
}

typedef struct hand_batch {
    float *x; /* batch_size x PIXELS */
    int64_t *y;
    int64_t rows;
} hand_batch;

typedef struct hand_slot { /* a record in the shuffle buffer */
    uint8_t *data;
    size_t len, cap;
} hand_slot;

typedef struct hand_queue {
    pthread_mutex_t mu;
    pthread_cond_t ready, room;
    hand_batch buf[HAND_DEPTH + 2]; /* in the queue, being filled, being trained on */
    int order[HAND_DEPTH + 2];      /* ring of filled buffers (indices into buf) */
    bool free_buf[HAND_DEPTH + 2];
    int head, count;
    bool done;
    const config *cfg;
    ferry_runtime *rt;
    glob_t *files;
    uint64_t seed;
} hand_queue;

/* Decodes and augments one record's image into x[PIXELS] (the map's work on one element). */
static int64_t hand_image(hand_queue *q, const ferry_image_augment_options *ao, const hand_slot *s, uint64_t seed,
                          float *x) {
    const uint8_t *png = NULL;
    size_t png_len = 0;
    int64_t label = 0;
    parse_record(s->data, s->len, &png, &png_len, &label);
    ferry_tensor *encoded = NULL, *image = NULL;
    const void *ptrs[1] = {png};
    check(ferry_tensor_create_bytes(q->rt, 0, NULL, ptrs, &png_len, &encoded), "ferry_tensor_create_bytes");
    check(ferry_image_augment(q->rt, encoded, ao, seed, &image), "ferry_image_augment");
    if (ferry_tensor_num_entries(image) != PIXELS) die("reference: an image that is not 28x28");
    memcpy(x, ferry_tensor_data(image), PIXELS * sizeof(float));
    ferry_tensor_unref(image);
    ferry_tensor_unref(encoded);
    return label;
}

static void *hand_producer(void *arg) {
    hand_queue *q = arg;
    const config *cfg = q->cfg;
    int64_t n = cfg->samples, bs = cfg->batch_size, cap = cfg->shuffle_buffer < n ? cfg->shuffle_buffer : n;
    ferry_image_augment_options ao = augment_options(NULL, true);
    record_reader rd = {.files = q->files, .iobuf = malloc(256 << 10)};
    hand_slot *pool = calloc((size_t)cap, sizeof *pool);
    if (!pool || !rd.iobuf) die("out of memory");
    uint64_t rng = q->seed;
    int64_t read = 0, held = 0;
    while (held < cap && read_record(&rd, &pool[held].data, &pool[held].cap, &pool[held].len)) held++, read++;
    for (int64_t b = 0; b < n / bs && held > 0; b++) { /* drop_remainder, as the pipeline */
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
        int64_t r = 0;
        for (; r < bs && held > 0; r++) {
            int64_t pick = (int64_t)(splitmix64(&rng) % (uint64_t)held);
            hb->y[r] = hand_image(q, &ao, &pool[pick], splitmix64(&rng), hb->x + r * PIXELS);
            if (read < n && read_record(&rd, &pool[pick].data, &pool[pick].cap, &pool[pick].len)) {
                read++;
            } else { /* the last slot's record moves into this one */
                hand_slot t = pool[pick];
                pool[pick] = pool[--held];
                pool[held] = t;
            }
        }
        hb->rows = r;
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
    if (rd.f) fclose(rd.f);
    for (int64_t i = 0; i < cap; i++) free(pool[i].data);
    free(pool);
    free(rd.iobuf);
    return NULL;
}

/* Trains a fresh model for cfg->epochs epochs fed by the hand-written producer thread. */
static run_result run_hand(ferry_runtime *rt, const config *cfg) {
    printf("\nrun 3, reference: hand-written producer pthread + bounded queue (depth %d): its own TFRecord reader "
           "and Example parser, ferry_image_augment per image, the same step\n",
           HAND_DEPTH);
    fflush(stdout);
    static hand_queue q;
    static learner l;
    learner_init(&l, cfg->seed);
    crc_init();
    static glob_t files;
    if (!find_files(cfg->train_glob, &files)) die("reference: nothing matches %s", cfg->train_glob);
    run_result res = {0};
    for (int i = 0; i < HAND_DEPTH + 2; i++) {
        q.buf[i].x = malloc((size_t)cfg->batch_size * PIXELS * sizeof(float));
        q.buf[i].y = malloc((size_t)cfg->batch_size * sizeof(int64_t));
        if (!q.buf[i].x || !q.buf[i].y) die("out of memory");
    }
    totals tot = {0};
    int64_t global_step = 0;
    for (int epoch = 0; epoch < cfg->epochs; epoch++) {
        pthread_mutex_init(&q.mu, NULL);
        pthread_cond_init(&q.ready, NULL);
        pthread_cond_init(&q.room, NULL);
        for (int i = 0; i < HAND_DEPTH + 2; i++) q.free_buf[i] = true;
        q.head = q.count = 0;
        q.done = false;
        q.cfg = cfg;
        q.rt = rt;
        q.files = &files;
        q.seed = epoch_seed(cfg, epoch) ^ 0x9e3779b97f4a7c15ULL;
        memset(&tot, 0, sizeof tot);
        progress pg;
        progress_start(&pg, cfg, epoch, 0);
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
            train_step(&l, q.buf[k].x, q.buf[k].y, q.buf[k].rows, cfg, global_step++, &tot);
            steps++;
            progress_show(&pg, steps, cfg->batch_size, &tot);
            pthread_mutex_lock(&q.mu);
            q.free_buf[k] = true;
            pthread_cond_signal(&q.room);
            pthread_mutex_unlock(&q.mu);
        }
        pthread_join(th, NULL);
        pthread_cond_destroy(&q.room);
        pthread_cond_destroy(&q.ready);
        pthread_mutex_destroy(&q.mu);
        progress_clear(&pg);
        double secs = now_s() - t0, cpu = cpu_s() - c0;
        res.seconds += secs;
        res.cpu_seconds += cpu;
        res.loss = tot.seen ? tot.loss / (double)tot.seen : 0.0;
        res.accuracy = tot.seen ? (double)tot.correct / (double)tot.seen : 0.0;
        print_epoch(epoch, secs, steps, res.loss, res.accuracy, wait, cpu);
        printf("\n");
        fflush(stdout);
    }
    for (int i = 0; i < HAND_DEPTH + 2; i++) {
        free(q.buf[i].x);
        free(q.buf[i].y);
    }
    globfree(&files);
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

static void usage(const char *bindir) {
    printf("usage: train [OPTIONS]\n"
           "Trains a Fashion-MNIST classifier (an MLP 784 -> %d -> 10) by SGD, fed by a ferry pipeline:\n"
           "tfrecord -> shuffle -> parse_example -> image_augment (decode the PNG, random crop,\n"
           "normalise) -> batch -> prefetch. Without --checkpoint or --resume it first times the\n"
           "pipeline and the step alone, then trains twice, sequentially and with parallel maps and\n"
           "prefetch, checks that both runs end with the same weights, shows what running ahead\n"
           "bought (times, per-stage stats, ferry's verdict on what holds the pipeline back) and\n"
           "compares with a hand-written producer thread doing the same work.\n"
           "\n"
           "data and training:\n"
           "  --data DIR         the shards of 'ferry convert fashion-mnist DIR', DIR/train.tfrecord-*\n"
           "                     and DIR/test.tfrecord-* (default %s/data/fashion-mnist)\n"
           "  --epochs N         passes over the training images (default 8; 1 with --quick), at most\n"
           "                     1000; the learning rate decays to 0 over them (a cosine)\n"
           "  --samples N        training images per epoch: the first N of the %d (default all;\n"
           "                     8192 with --quick); the test uses %d images (2048 with --quick)\n"
           "  --batch N          images per SGD step (default 64); an epoch's last partial batch is\n"
           "                     dropped\n"
           "  --seed N           seed of the model and the pipeline (default 42); epoch e's ferry\n"
           "                     iterator gets seed N*1000+e, the seed 'ferry state show' prints\n"
           "  --quick            a short run: 1 epoch of 8192 images, 2048 test images; --epochs and\n"
           "                     --samples given beside it win, in any order\n"
           "  --cpu-budget N     threads ferry's AUTOTUNE may keep busy (ferry_runtime_options.cpu_budget);\n"
           "                     default 0: all cores\n"
           "\n"
           "errors in position:\n"
           "  --fail-at N        make the record at position N (0 to samples-1) of the training shards\n"
           "                     fail: the error arrives in the position of the batch holding it, with\n"
           "                     the message of the map that failed; the demo reports it, skips that\n"
           "                     position and trains on (the iterator goes on after an error), in\n"
           "                     every epoch\n"
           "  --stop-on-error    exit with status 1 at the first pipeline error instead\n"
           "\n"
           "stopping and resuming (the parallel run only):\n"
           "  --checkpoint FILE  save the model, the training progress and the ferry iterator's state\n"
           "                     to FILE (atomically) every --save-every steps and at --stop-after;\n"
           "                     'ferry state show FILE' describes the iterator's state in it\n"
           "  --save-every N     steps between checkpoints (default 50; needs --checkpoint)\n"
           "  --stop-after N     stop after N steps in all, as a preemption would (needs --checkpoint)\n"
           "  --resume FILE      continue from a checkpoint, given the --samples, --batch, --seed and\n"
           "                     --epochs it was made with: the run ends with the same weights, bit\n"
           "                     for bit, as one never stopped; add --checkpoint to keep saving\n"
           "\n"
           "seeing inside:\n"
           "  --report-page FILE write the report page (HTML: the parallel run's stages and verdict,\n"
           "                     the timeline of both runs' threads) to FILE\n"
           "  FERRY_TRACE=trace.json train ...  writes a Chrome trace of every ferry thread and\n"
           "                     training step (open it in ui.perfetto.dev or chrome://tracing)\n"
           "  -h, --help         this help\n"
           "\n"
           "Progress is redrawn in place on a terminal, printed as a line every %.0f s otherwise.\n"
           "example: train --quick --checkpoint /tmp/ck --stop-after 100; train --quick --resume /tmp/ck\n"
           "exit status: 0 success, 1 a failure (its message on stderr; missing data names the command\n"
           "that makes it), 2 a wrong or contradictory flag\n",
           HIDDEN, bindir, TRAIN_RECORDS, TEST_RECORDS, PROGRESS_EVERY_S);
}

int main(int argc, char **argv) {
    config cfg = {.epochs = 8,
                  .samples = TRAIN_RECORDS,
                  .eval_samples = TEST_RECORDS,
                  .measure = 12800,
                  .batch_size = 64,
                  .shuffle_buffer = 10000,
                  .seed = 42,
                  .learning_rate = 0.02f,
                  .momentum = 0.9f,
                  .fail_at = -1};
    char bindir[4096], default_data[4200];
    program_dir(argc > 0 ? argv[0] : "train", bindir, sizeof bindir);
    snprintf(default_data, sizeof default_data, "%s/data/fashion-mnist", bindir);
    cfg.data = default_data;
    int64_t epochs = -1, samples = -1, save_every = -1;
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
            usage(bindir);
            return 0;
        } else if (strcmp(a, "--data") == 0) {
            if (!v || !*v) usage_error("--data needs a directory");
            if (strncmp(v, "--", 2) == 0) usage_error("--data needs a directory, not the flag '%s'", v);
            if (strlen(v) > 4000) usage_error("--data: a directory name of at most 4000 bytes");
            cfg.data = v;
        } else if (strcmp(a, "--epochs") == 0) {
            epochs = parse_int(a, v, 1, 1000);
        } else if (strcmp(a, "--samples") == 0) {
            samples = parse_int(a, v, 1, TRAIN_RECORDS);
        } else if (strcmp(a, "--batch") == 0) {
            cfg.batch_size = parse_int(a, v, 1, 1 << 20);
        } else if (strcmp(a, "--seed") == 0) {
            cfg.seed = (uint64_t)parse_int(a, v, 0, INT64_MAX / 1000);
        } else if (strcmp(a, "--cpu-budget") == 0) {
            ro.cpu_budget = (int)parse_int(a, v, 0, 4096);
        } else if (strcmp(a, "--fail-at") == 0) {
            cfg.fail_at = parse_int(a, v, 0, INT64_MAX);
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
        cfg.samples = 8192;
        cfg.eval_samples = 2048;
        cfg.measure = 2048;
    }
    if (epochs > 0) cfg.epochs = (int)epochs;
    if (samples > 0) cfg.samples = samples;
    if (save_every > 0) ck.save_every = save_every;
    if (cfg.measure > cfg.samples / 2) cfg.measure = cfg.samples / 2;

    /* Flags that would do nothing, or contradict each other, are errors. */
    int64_t steps_per_epoch = cfg.samples / cfg.batch_size;
    if (steps_per_epoch == 0)
        usage_error("--batch %" PRId64 " is larger than the %" PRId64 " images of an epoch: no step would train",
                    cfg.batch_size, cfg.samples);
    if (cfg.fail_at >= cfg.samples)
        usage_error("--fail-at %" PRId64 ": no training record has that position; they are 0 to %" PRId64
                    " (--samples %" PRId64 ")",
                    cfg.fail_at, cfg.samples - 1, cfg.samples);
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
    /* the shards' pattern is part of the pipeline (its seeds included): the same directory
       named two ways (relative, absolute, through a link) gives the same shuffle */
    static char data_real[PATH_MAX];
    if (realpath(cfg.data, data_real)) cfg.data = data_real;
    snprintf(cfg.train_glob, sizeof cfg.train_glob, "%s/train.tfrecord-*", cfg.data);
    snprintf(cfg.test_glob, sizeof cfg.test_glob, "%s/test.tfrecord-*", cfg.data);
    check_data(&cfg, bindir);
    cfg.tty = isatty(STDOUT_FILENO);

    ferry_runtime *rt = NULL;
    check(ferry_runtime_create(&ro, &rt), "ferry_runtime_create");
    ferry_runtime_stats rs;
    check(ferry_runtime_stats_get(rt, &rs), "ferry_runtime_stats_get");
    cfg.cores = rs.cpu_budget;

    printf("ferry %s training demo: Fashion-MNIST, MLP %d -> %d hidden (ReLU) -> %d classes, SGD lr %g momentum %g\n",
           ferry_version(), PIXELS, HIDDEN, NUM_CLASSES, (double)cfg.learning_rate, (double)cfg.momentum);
    printf("data: %s: %" PRId64 " training images per epoch, %d epoch%s, batch %" PRId64 ", shuffle buffer %" PRId64
           "; %" PRId64 " test images; %d cores\n",
           cfg.data, cfg.samples, cfg.epochs, cfg.epochs == 1 ? "" : "s", cfg.batch_size, cfg.shuffle_buffer,
           cfg.eval_samples, cfg.cores);
    printf("seed %" PRIu64 ": epoch e's ferry iterator gets seed %" PRIu64 " + e (ferry_iterator_options.seed)\n",
           cfg.seed, epoch_seed(&cfg, 0));
    char flip[64] = "no flip";
    if (FLIP_PROBABILITY > 0) snprintf(flip, sizeof flip, "a left-right flip with probability %g", FLIP_PROBABILITY);
    printf("pipeline: list_files -> tfrecord -> take -> %sshuffle -> %sparse_example -> image_augment (PNG decode, "
           "random %dx%d crop of the image padded by %d, %s, float32 normalised) -> batch -> prefetch\n",
           cfg.fail_at >= 0 ? "enumerate -> " : "", cfg.fail_at >= 0 ? "map(fail_at) -> " : "", IMAGE_SIDE, IMAGE_SIDE,
           CROP_PADDING, flip);
    if (cfg.fail_at >= 0)
        printf("--fail-at %" PRId64 ": that record fails; the error arrives in its batch's position%s\n", cfg.fail_at,
               cfg.stop_on_error ? " and stops the program (--stop-on-error)" : ", which training skips");
    fflush(stdout);

    const mode sequential = {"run 1, sequential", 0, 0};
    const mode parallel = {"run 2, parallel", FERRY_AUTOTUNE, FERRY_AUTOTUNE};
    bool stopped = false;
    if (ck.path || ck.resume) { /* checkpointed training: the parallel run alone */
        run_result c = run(rt, &cfg, &parallel, &ck, &stopped);
        ferry_blob_free(c.report_json);
        check(ferry_runtime_free(rt), "ferry_runtime_free");
        if (!stopped) printf("final weights checksum %016" PRIx64 "\n", c.checksum);
        return 0;
    }
    double t_all = now_s();
    costs cost = measure_costs(rt, &cfg, &sequential);
    checkpointing none = {.save_every = 1};
    run_result a = run(rt, &cfg, &sequential, &none, &stopped);
    none.global_step = 0;
    run_result b = run(rt, &cfg, &parallel, &none, &stopped);
    run_result h = run_hand(rt, &cfg);
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
    if (cost.images > 0)
        printf("  per image, each alone on one thread: the pipeline %.1f us, the training step %.1f us (CPU time)\n",
               cost.pipeline_cpu, cost.step_cpu);
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
    printf("  final loss %.6f / %.6f, train accuracy %.2f%% / %.2f%%, test accuracy %.2f%% / %.2f%% (%" PRId64
           " images)\n",
           a.loss, b.loss, 100.0 * a.accuracy, 100.0 * b.accuracy, 100.0 * a.test_accuracy, 100.0 * b.test_accuracy,
           cfg.eval_samples);
    printf("  peak buffered bytes %zu of a budget of %zu\n", rs.budget_used_peak, rs.budget);
    printf("  total %.1f s\n", now_s() - t_all);
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
