/*
 * bench_example.c - tf.train.Example parse rate over the Chicago taxi records of the
 * csv_example_gen shards (5091 records, 18 features each), one thread, side by side in one run:
 *
 *   per-record  ferry_example_parse on one serialized record per call (input element and output
 *               element made and freed each call: what map(parse) costs per element)
 *   batch N     ferry_example_parse on a 1-D bytes tensor of N records (the batch fast path, as
 *               after batch(N)): one call makes [N, ...] tensors
 *   map / batch+map   the same through the public pipeline: from_tensor_slices(records) ->
 *               map(parse) vs from_tensor_slices -> batch(N) -> map(parse), inline map
 *
 * for two specs: "fixed" (every feature a FIXED scalar with a default, the usual training spec)
 * and "varlen" (every feature VARLEN with its lengths). records/s and MB/s of serialized input;
 * median of the runs. The records are read once into memory through ferry_dataset_tfrecord.
 *
 * usage: bench_example [data dir (default: ../shared/data next to the source tree)] [runs (7)]
 *                      [batch (256)]
 * Without the data it prints a message and exits 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ferry.h"

#include "bench_util.h"
#include "../tests/taxi_features.h"

#define DIE(...)                                                                                                       \
    do {                                                                                                               \
        fprintf(stderr, __VA_ARGS__);                                                                                  \
        fprintf(stderr, ": %s\n", ferry_last_error());                                                                 \
        exit(1);                                                                                                       \
    } while (0)


static ferry_example_parser *make_parser(ferry_runtime *rt, bool varlen) {
    ferry_tensor *zero_i, *zero_f, *empty;
    const void *p[1] = {""};
    size_t l = 0;
    if (ferry_tensor_scalar_i64(rt, 0, &zero_i) || ferry_tensor_scalar_f32(rt, 0.f, &zero_f) ||
        ferry_tensor_create_bytes(rt, 0, NULL, p, &l, &empty))
        DIE("defaults");
    ferry_example_feature f[18];
    memset(f, 0, sizeof f);
    for (int k = 0; k < 18; k++) {
        f[k].key = taxi[k].key;
        f[k].dtype = taxi[k].dtype;
        if (varlen) {
            f[k].kind = FERRY_EXAMPLE_VARLEN;
            f[k].with_lengths = true;
        } else {
            f[k].default_value = taxi[k].dtype == FERRY_DTYPE_INT64     ? zero_i
                                 : taxi[k].dtype == FERRY_DTYPE_FLOAT32 ? zero_f
                                                                        : empty;
        }
    }
    ferry_example_spec spec = {.num_features = 18, .features = f};
    ferry_example_parser *ps;
    if (ferry_example_parser_create(rt, &spec, &ps)) DIE("parser");
    ferry_tensor_unref(zero_i);
    ferry_tensor_unref(zero_f);
    ferry_tensor_unref(empty);
    return ps;
}

typedef struct data {
    size_t n, bytes;
    ferry_tensor **rec; /* bytes scalars */
    size_t nb;
    ferry_tensor **batch; /* bytes vectors of up to B records */
    ferry_tensor *all;    /* bytes vector of every record */
} data;

/* Parses every record per call; returns seconds. */
static double run_per_record(ferry_runtime *rt, ferry_example_parser *ps, const data *d, int reps) {
    double t0 = now_s();
    for (int r = 0; r < reps; r++)
        for (size_t i = 0; i < d->n; i++) {
            ferry_tensor *t = ferry_tensor_ref(d->rec[i]);
            ferry_element *in, *out;
            if (ferry_element_create(rt, 1, &t, &in) || ferry_example_parse(NULL, in, &out, ps)) DIE("parse");
            ferry_element_free(out);
        }
    return now_s() - t0;
}

static double run_batch(ferry_runtime *rt, ferry_example_parser *ps, const data *d, int reps) {
    double t0 = now_s();
    for (int r = 0; r < reps; r++)
        for (size_t i = 0; i < d->nb; i++) {
            ferry_tensor *t = ferry_tensor_ref(d->batch[i]);
            ferry_element *in, *out;
            if (ferry_element_create(rt, 1, &t, &in) || ferry_example_parse(NULL, in, &out, ps)) DIE("parse batch");
            ferry_element_free(out);
        }
    return now_s() - t0;
}

static double run_pipeline(ferry_runtime *rt, ferry_example_parser *ps, const data *d, int reps, int64_t batch) {
    ferry_dataset *src, *rep, *b = NULL, *parsed;
    if (ferry_dataset_from_tensor_slices(rt, 1, &d->all, NULL, &src) || ferry_dataset_repeat(src, reps, NULL, &rep))
        DIE("pipeline");
    if (batch > 0 && ferry_dataset_batch(rep, batch, NULL, &b)) DIE("batch");
    if (ferry_dataset_parse_example(b ? b : rep, ps, NULL, &parsed)) DIE("parse_example");
    ferry_iterator *it;
    if (ferry_iterator_create(parsed, NULL, &it)) DIE("iterator");
    double t0 = now_s();
    ferry_element *e;
    int rc;
    while ((rc = ferry_iterator_next(it, &e)) == FERRY_OK) ferry_element_free(e);
    double t = now_s() - t0;
    if (rc != FERRY_END) {
        fprintf(stderr, "pipeline: %s\n", ferry_iterator_error(it));
        exit(1);
    }
    ferry_iterator_free(it);
    ferry_dataset_unref(parsed);
    ferry_dataset_unref(b);
    ferry_dataset_unref(rep);
    ferry_dataset_unref(src);
    return t;
}

static void load(ferry_runtime *rt, const char *dir, data *d, int64_t B) {
    char paths[12][1024];
    const char *files[12];
    for (int s = 0; s < 12; s++) {
        snprintf(paths[s], sizeof paths[s], "%s/tfrecord/csv_example_gen/data_tfrecord-%05d-of-00012.gz", dir, s);
        files[s] = paths[s];
    }
    ferry_tfrecord_options o = {.compression = FERRY_COMPRESSION_GZIP};
    ferry_dataset *ds;
    ferry_iterator *it;
    if (ferry_dataset_tfrecord(rt, 12, files, &o, &ds) || ferry_iterator_create(ds, NULL, &it)) DIE("tfrecord");
    size_t cap = 8192;
    d->rec = malloc(cap * sizeof *d->rec);
    ferry_element *e;
    int rc;
    while ((rc = ferry_iterator_next(it, &e)) == FERRY_OK) {
        if (d->n == cap) d->rec = realloc(d->rec, (cap *= 2) * sizeof *d->rec);
        d->rec[d->n] = ferry_tensor_ref(ferry_element_get(e, 0));
        d->bytes += ferry_tensor_nbytes(d->rec[d->n]) - 8;
        d->n++;
        ferry_element_free(e);
    }
    if (rc != FERRY_END) {
        fprintf(stderr, "reading: %s\n", ferry_iterator_error(it));
        exit(1);
    }
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    const void **ptrs = malloc(d->n * sizeof *ptrs);
    size_t *lens = malloc(d->n * sizeof *lens);
    for (size_t i = 0; i < d->n; i++) {
        const uint8_t *p;
        if (ferry_tensor_bytes_get(d->rec[i], 0, &p, &lens[i])) DIE("bytes_get");
        ptrs[i] = p;
    }
    d->nb = (d->n + (size_t)B - 1) / (size_t)B;
    d->batch = malloc(d->nb * sizeof *d->batch);
    for (size_t b = 0; b < d->nb; b++) {
        int64_t k = (int64_t)(d->n - b * (size_t)B < (size_t)B ? d->n - b * (size_t)B : (size_t)B);
        if (ferry_tensor_create_bytes(rt, 1, &k, ptrs + b * (size_t)B, lens + b * (size_t)B, &d->batch[b]))
            DIE("batch tensor");
    }
    int64_t all = (int64_t)d->n;
    if (ferry_tensor_create_bytes(rt, 1, &all, ptrs, lens, &d->all)) DIE("all");
    free(ptrs);
    free(lens);
}

int main(int argc, char **argv) {
    char dflt[1024];
    const char *dir = argc > 1 ? argv[1] : NULL;
    if (!dir) { /* <source tree>/bench/bench_example.c -> <source tree>/../shared/data */
        snprintf(dflt, sizeof dflt, "%s", __FILE__);
        char *slash = strrchr(dflt, '/');
        if (slash) *slash = '\0';
        slash = strrchr(dflt, '/');
        if (slash) *slash = '\0';
        size_t k = strlen(dflt);
        snprintf(dflt + k, sizeof dflt - k, "/../shared/data");
        dir = dflt;
    }
    int runs = argc > 2 ? atoi(argv[2]) : 7;
    int64_t B = argc > 3 ? atol(argv[3]) : 256;
    if (runs <= 0 || runs > 100 || B <= 0) {
        fprintf(stderr, "usage: bench_example [data dir] [runs] [batch]\n");
        return 2;
    }
    char probe[1200];
    snprintf(probe, sizeof probe, "%s/tfrecord/csv_example_gen/data_tfrecord-00000-of-00012.gz", dir);
    if (access(probe, R_OK) != 0) {
        printf("bench_example: skipped: no data at %s\n", dir);
        return 0;
    }
    ferry_runtime *rt;
    if (ferry_runtime_create(NULL, &rt)) DIE("runtime");
    data d = {0};
    load(rt, dir, &d, B);
    int reps = 20; /* about 100k records per timed run */
    double mb = (double)d.bytes * reps / 1e6, recs = (double)d.n * reps;
    printf("bench_example: %zu records, %.1f bytes/record avg, 18 features; %d runs x %d passes, median\n", d.n,
           (double)d.bytes / (double)d.n, runs, reps);
    printf("%-8s %-22s %14s %10s %12s\n", "spec", "mode", "records/s", "MB/s", "ns/record");
    for (int v = 0; v < 2; v++) {
        ferry_example_parser *ps = make_parser(rt, v == 1);
        double t[4][100];
        run_per_record(rt, ps, &d, 2); /* warm */
        run_batch(rt, ps, &d, 2);
        for (int r = 0; r < runs; r++) {
            t[0][r] = run_per_record(rt, ps, &d, reps);
            t[1][r] = run_batch(rt, ps, &d, reps);
            t[2][r] = run_pipeline(rt, ps, &d, reps, 0);
            t[3][r] = run_pipeline(rt, ps, &d, reps, B);
        }
        char label[4][48];
        snprintf(label[0], sizeof label[0], "per-record");
        snprintf(label[1], sizeof label[1], "batch %lld", (long long)B);
        snprintf(label[2], sizeof label[2], "map(parse)");
        snprintf(label[3], sizeof label[3], "batch %lld+map(parse)", (long long)B);
        for (int m = 0; m < 4; m++) {
            double s = bench_median(t[m], runs);
            printf("%-8s %-22s %14.0f %10.1f %12.1f\n", v ? "varlen" : "fixed", label[m], recs / s, mb / s,
                   1e9 * s / recs);
        }
        ferry_example_parser_free(ps);
    }
    for (size_t i = 0; i < d.n; i++) ferry_tensor_unref(d.rec[i]);
    for (size_t b = 0; b < d.nb; b++) ferry_tensor_unref(d.batch[b]);
    ferry_tensor_unref(d.all);
    free(d.rec);
    free(d.batch);
    if (ferry_runtime_free(rt)) DIE("runtime_free");
    return 0;
}
