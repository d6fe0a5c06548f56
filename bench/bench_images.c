/*
 * bench_images.c - P6: images per second of an ImageNet training input pipeline, ferry against
 * the decode limit of libjpeg-turbo and against PyTorch's DataLoader, on the same files.
 *
 * The files: the photo set of scripts/make_photo_set.py (about 500 JPEGs of the opencv-doc photos,
 * ~400 x 350 on average, quality 90, 4:2:0), in an image-folder layout, read from the folder by
 * every variant that reads files. One untimed pass over the folder first (ferry's image_folder
 * reading every file): a warm page cache for everyone; its bytes, kept in memory, are what the
 * decode limit decodes.
 *
 * Variants, each run --reps times in one process run, round-robin (the starting variant rotates
 * from one repetition to the next, so drift of the machine affects all alike):
 *   limit        the reference: a hand-written loop decodes every file (already in memory) whole
 *                to RGB with libjpeg-turbo on this thread, one decompressor reused, rows straight
 *                into one buffer: the single-core decode rate. The decode limit of the machine
 *                is that rate times two cores (also measured, for information: two threads
 *                taking files from one atomic counter, limit-2t).
 *   ferry-full   image_folder -> image_augment(RANDOM_RESIZED 224 x 224, decode_whole, flip 0.5,
 *                float32, CHW, ImageNet mean and std, AUTOTUNE) -> batch(32) -> prefetch(AUTOTUNE):
 *                every JPEG decoded whole, then the box resized, as torchvision does.
 *   ferry-crop   the same with decode_whole = false: only the box is decoded (rows above it
 *                skipped, its iMCU columns cropped, rows below never decoded), and at a DCT
 *                scale n/8 where the box is at least twice 224 on a side (rare on images of
 *                ~400 x 350).
 *   torch        bench/p6_torch.py as a child process (/usr/bin/python3): ImageFolder (PIL) ->
 *                RandomResizedCrop(224) -> RandomHorizontalFlip -> ToTensor -> Normalize,
 *                DataLoader batch 32 with 0, 1 and 2 workers, one epoch of each per repetition;
 *                the figures are its own (parsed from its lines); skipped, with a message, when
 *                python3 or torch is missing.
 * An epoch is what a training loop sees: making the iterator (ferry's threads; PyTorch's worker
 * processes), every batch, and freeing it. ferry keeps what AUTOTUNE learnt from one iterator of
 * a dataset to the next, so each ferry variant runs one untimed epoch first (its rate is printed:
 * "first epoch"). Also reported: the time to the first batch, the steady rate (the images after
 * the first quarter of the epoch's batches over the time from that batch to the last: the start
 * and the filling of the pipeline left out, and the parallel workers' first batches, which
 * arrive together; none for an epoch of under 8 batches) and CPU seconds per image (ferry: the process's; PyTorch: its process's and
 * its workers').
 *
 * The goals, from the medians: ferry's best / DataLoader's best >= 2.5; ferry-full / decode limit
 * >= 0.9; ferry-crop / decode limit >= 1.2; ferry-crop / ferry-full >= 1.4.
 *
 * PNG (Fashion-MNIST-sized): 28 x 28 grayscale PNGs generated here from a deterministic pattern
 * (a garment-like silhouette with texture on black, encoded with libpng at zlib's default level),
 * decoded from memory on this thread by libspng (the decoder ferry uses), by libpng (the classic
 * API, rows straight into the output) and by ferry_image_decode (libspng and a new tensor per
 * image); round-robin as above.
 *
 * Correctness: the hand-written JPEG loop's pixels equal ferry_image_decode's, image by image
 * (checked once, untimed), and every timed pass must give the same checksum; each ferry epoch
 * must give every image, as float32 [b, 3, 224, 224] batches of b <= 32 with labels in range,
 * and the same checksum of sampled values in every repetition (the augmentation's random draws
 * come from the pipeline seed); ferry_image_augment of the first 64 images with decode_whole
 * true and false and the same seed (the same box and flip) must agree to 0.1 of a normalized
 * value on average (about 6 levels of 255); p6_torch.py checks its own batches and count.
 * PNG: the three decoders' pixel checksums must be equal. Any failure: exit status 1.
 *
 * Usage: bench_images [--dir ROOT] [--reps N] [--limit N] [--png N] [--only NAME[,NAME...]]
 *                     [--map-threads N] [--python PATH] [--torch-script PATH] [--quick]
 *   --dir     the photo set (default build/photos; make it with
 *             /usr/bin/python3 scripts/make_photo_set.py build/photos)
 *   --reps    repetitions of every variant (default 5)
 *   --limit   only the folder's first N images (ImageFolder's order, in every variant)
 *   --png     PNGs in the PNG part (default 10000)
 *   --mnist   the Fashion-MNIST shards of `ferry convert fashion-mnist DIR` whose PNGs the PNG part
 *             decodes (default build/data/fashion-mnist; without them, generated PNGs)
 *   --map-threads  image_augment's num_parallel_calls instead of AUTOTUNE (0: inline), to see
 *             what a fixed count gives
 *   --only    full, crop, torch, png (the decode limit always runs: it is the reference)
 *   --python  the interpreter for p6_torch.py (default /usr/bin/python3)
 *   --quick   a smoke run: --reps 1 --limit 96 --png 2000
 * For figures: build Release and run on a quiet machine, from the source root,
 *   build-rel/bench/bench_images --dir build/photos --reps 5
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef FERRY_HAVE_JPEG
#include <jpeglib.h>
#endif
#ifdef FERRY_HAVE_SPNG
#include <spng.h>
#endif
#ifdef BENCH_HAVE_LIBPNG
#include <png.h>
#endif

#include "ferry.h"

#include "bench_util.h"

#ifndef FERRY_BENCH_SOURCE_DIR
#define FERRY_BENCH_SOURCE_DIR "bench"
#endif

#define BATCH 32
#define SIZE 224
#define CHANNELS 3
#define PIPELINE_SEED 6
#define SAMPLE_STRIDE 1009 /* every 1009th float of a batch is sampled for the checksum */
#define TORCH_MAX_WORKERS 3
#define PNG_SIDE 28
#define COMPARE_IMAGES 64 /* images augmented both ways, to compare decode-and-crop with decode-whole */

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

/* Median, minimum and maximum of n values (v is sorted in place). */
static double median(double *v, int n, double *lo, double *hi) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    if (lo) *lo = v[0];
    if (hi) *hi = v[n - 1];
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t fold_bytes(uint64_t h, const uint8_t *p, size_t n) {
    uint64_t sum = 0, x = 0;
    for (size_t i = 0; i < n; i++) {
        sum += p[i];
        x = x * 31 + p[i];
    }
    return mix64(h ^ sum ^ (x << 1) ^ n);
}

/* ---- the files ------------------------------------------------------------------------------ */
typedef struct photo {
    uint8_t *data;
    size_t len;
    int64_t height, width; /* decoded */
    uint64_t fold;         /* of the decoded pixels: dims and three whole rows (first, middle, last) */
} photo;

typedef struct photo_set {
    photo *p;
    int64_t n;
    size_t nclasses;
    size_t bytes, max_pixels_bytes;
    double mean_w, mean_h;
} photo_set;

static ferry_runtime *rt;

/* image_folder(root), cut to its first `limit` images when limit > 0. */
static ferry_dataset *make_folder(const char *root, int64_t limit, size_t *nclasses) {
    ferry_dataset *f, *t;
    int rc = ferry_dataset_image_folder(rt, root, NULL, &f);
    if (rc != FERRY_OK) {
        fprintf(stderr, "%s\nmake the photo set with: /usr/bin/python3 scripts/make_photo_set.py %s\n",
                ferry_last_error(), root);
        exit(1);
    }
    if (nclasses) *nclasses = ferry_image_folder_num_classes(f);
    if (limit <= 0) return f;
    CHECK(ferry_dataset_take(f, limit, NULL, &t));
    ferry_dataset_unref(f);
    return t;
}

/* The untimed pass: every file read through ferry's image_folder (the page cache warms) and its
 * bytes kept. */
static void load_photos(const char *root, int64_t limit, photo_set *s) {
    ferry_dataset *ds = make_folder(root, limit, &s->nclasses);
    ferry_iterator *it;
    CHECK(ferry_iterator_create(ds, NULL, &it));
    int64_t cap = 0;
    s->n = 0;
    s->p = NULL;
    ferry_element *e;
    int rc;
    while ((rc = ferry_iterator_next(it, &e)) != FERRY_END) {
        if (rc != FERRY_OK) {
            fprintf(stderr, "reading %s: %s\n", root, ferry_iterator_error(it));
            exit(1);
        }
        const uint8_t *data;
        size_t len;
        CHECK(ferry_tensor_bytes_get(ferry_element_get(e, 0), 0, &data, &len));
        if (s->n == cap) {
            cap = cap ? 2 * cap : 512;
            s->p = realloc(s->p, sizeof *s->p * (size_t)cap);
            if (!s->p) {
                fprintf(stderr, "out of memory\n");
                exit(1);
            }
        }
        photo *ph = &s->p[s->n++];
        memset(ph, 0, sizeof *ph);
        ph->data = xmalloc(len);
        memcpy(ph->data, data, len);
        ph->len = len;
        s->bytes += len;
        ferry_element_free(e);
    }
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
}

/* ---- the decode limit: libjpeg-turbo by hand ------------------------------------------------ */
#ifdef FERRY_HAVE_JPEG
typedef struct hand_jpeg {
    struct jpeg_decompress_struct d;
    struct jpeg_error_mgr err;
    jmp_buf jump;
    uint8_t *buf;
    size_t cap;
} hand_jpeg;

static void hand_jpeg_exit(j_common_ptr c) {
    hand_jpeg *h = (hand_jpeg *)(void *)c; /* d is the first member */
    longjmp(h->jump, 1);
}

static void hand_jpeg_init(hand_jpeg *h, size_t cap) {
    memset(h, 0, sizeof *h);
    h->d.err = jpeg_std_error(&h->err);
    h->err.error_exit = hand_jpeg_exit;
    jpeg_create_decompress(&h->d);
    h->buf = xmalloc(cap);
    h->cap = cap;
}

static void hand_jpeg_free(hand_jpeg *h) {
    jpeg_destroy_decompress(&h->d);
    free(h->buf);
}

/* Decodes one JPEG whole to RGB into h->buf, libjpeg's defaults otherwise (as ferry's decoder):
 * returns the fold of the pixels (as photo.fold), 0 on failure. */
static uint64_t hand_jpeg_decode(hand_jpeg *h, const uint8_t *p, size_t n) {
    if (setjmp(h->jump)) {
        jpeg_abort_decompress(&h->d);
        return 0;
    }
    jpeg_mem_src(&h->d, p, (unsigned long)n);
    jpeg_read_header(&h->d, TRUE);
    h->d.out_color_space = JCS_RGB;
    jpeg_start_decompress(&h->d);
    size_t stride = (size_t)h->d.output_width * CHANNELS, rows = h->d.output_height;
    if (stride * rows > h->cap || h->d.output_components != CHANNELS) {
        jpeg_abort_decompress(&h->d);
        return 0;
    }
    while (h->d.output_scanline < h->d.output_height) {
        JSAMPROW r[16];
        JDIMENSION k, at = h->d.output_scanline, left = h->d.output_height - at;
        for (k = 0; k < 16 && k < left; k++) r[k] = h->buf + (size_t)(at + k) * stride;
        if (jpeg_read_scanlines(&h->d, r, k) == 0) {
            jpeg_abort_decompress(&h->d);
            return 0;
        }
    }
    jpeg_finish_decompress(&h->d);
    if (h->err.num_warnings) return 0;
    const uint8_t *b = h->buf;
    uint64_t f = mix64(((uint64_t)h->d.output_height << 32) | h->d.output_width);
    f = fold_bytes(f, b, stride);
    f = fold_bytes(f, b + rows / 2 * stride, stride);
    return fold_bytes(f, b + (rows - 1) * stride, stride) | 1;
}
#endif

/* ferry_image_decode of every file: its size, and the same fold of its pixels (untimed). */
static void reference_decode(photo_set *s) {
    double sw = 0, sh = 0;
    ferry_decode_image_options o = {.channels = CHANNELS};
    for (int64_t i = 0; i < s->n; i++) {
        photo *ph = &s->p[i];
        ferry_tensor *t;
        CHECK(ferry_image_decode(rt, ph->data, ph->len, &o, &t));
        ph->height = ferry_tensor_dim(t, 0);
        ph->width = ferry_tensor_dim(t, 1);
        size_t stride = (size_t)ph->width * CHANNELS, rows = (size_t)ph->height;
        const uint8_t *b = ferry_tensor_data(t);
        uint64_t f = mix64(((uint64_t)ph->height << 32) | (uint64_t)ph->width);
        f = fold_bytes(f, b, stride);
        f = fold_bytes(f, b + rows / 2 * stride, stride);
        ph->fold = fold_bytes(f, b + (rows - 1) * stride, stride) | 1;
        if (ferry_tensor_nbytes(t) > s->max_pixels_bytes) s->max_pixels_bytes = ferry_tensor_nbytes(t);
        sw += (double)ph->width;
        sh += (double)ph->height;
        ferry_tensor_unref(t);
    }
    s->mean_w = sw / (double)s->n;
    s->mean_h = sh / (double)s->n;
}

/* The hand-written loop's full pixels against ferry_image_decode's, image by image. */
static int verify_hand_decode(const photo_set *s) {
#ifdef FERRY_HAVE_JPEG
    hand_jpeg h;
    hand_jpeg_init(&h, s->max_pixels_bytes);
    ferry_decode_image_options o = {.channels = CHANNELS};
    int bad = 0;
    for (int64_t i = 0; i < s->n; i++) {
        const photo *ph = &s->p[i];
        ferry_tensor *t;
        CHECK(ferry_image_decode(rt, ph->data, ph->len, &o, &t));
        uint64_t f = hand_jpeg_decode(&h, ph->data, ph->len);
        if (f != ph->fold || memcmp(h.buf, ferry_tensor_data(t), ferry_tensor_nbytes(t)) != 0) {
            fprintf(stderr, "MISMATCH: image %lld: the hand-written decode differs from ferry_image_decode\n",
                    (long long)i);
            bad++;
        }
        ferry_tensor_unref(t);
    }
    hand_jpeg_free(&h);
    return bad;
#else
    (void)s;
    return 0;
#endif
}

typedef struct result {
    double wall, cpu, steady, startup; /* seconds; steady: images per second */
    uint64_t check;
} result;

/* One pass of the hand-written loop on this thread. */
static void run_limit(const photo_set *s, result *out) {
#ifdef FERRY_HAVE_JPEG
    hand_jpeg h;
    hand_jpeg_init(&h, s->max_pixels_bytes);
    uint64_t check = 0;
    double c0 = cpu_s(), t0 = now_s();
    for (int64_t i = 0; i < s->n; i++) check = mix64(check ^ hand_jpeg_decode(&h, s->p[i].data, s->p[i].len));
    out->wall = now_s() - t0;
    out->cpu = cpu_s() - c0;
    out->check = check;
    out->steady = (double)s->n / out->wall;
    hand_jpeg_free(&h);
#else
    (void)s;
    memset(out, 0, sizeof *out);
#endif
}

/* Two threads, files taken in turn from one counter; each file's fold kept in its place. */
typedef struct limit2 {
    const photo_set *s;
    atomic_llong next;
    uint64_t *folds;
} limit2;

static void *limit2_main(void *arg) {
    limit2 *l = arg;
#ifdef FERRY_HAVE_JPEG
    hand_jpeg h;
    hand_jpeg_init(&h, l->s->max_pixels_bytes);
    for (long long i; (i = atomic_fetch_add(&l->next, 1)) < l->s->n;)
        l->folds[i] = hand_jpeg_decode(&h, l->s->p[i].data, l->s->p[i].len);
    hand_jpeg_free(&h);
#else
    (void)l;
#endif
    return NULL;
}

static void run_limit2(const photo_set *s, result *out) {
    limit2 l = {.s = s, .folds = xcalloc((size_t)s->n, sizeof(uint64_t))};
    atomic_init(&l.next, 0);
    double c0 = cpu_s(), t0 = now_s();
    pthread_t th;
    if (pthread_create(&th, NULL, limit2_main, &l) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        exit(1);
    }
    limit2_main(&l);
    pthread_join(th, NULL);
    out->wall = now_s() - t0;
    out->cpu = cpu_s() - c0;
    out->steady = (double)s->n / out->wall;
    uint64_t check = 0;
    for (int64_t i = 0; i < s->n; i++) check = mix64(check ^ l.folds[i]);
    out->check = check;
    free(l.folds);
}

/* ---- ferry's pipelines ---------------------------------------------------------------------- */
static int map_threads = FERRY_AUTOTUNE;

static ferry_image_augment_options augment_options(bool decode_whole) {
    return (ferry_image_augment_options){
        .num_parallel_calls = map_threads,
        .channels = CHANNELS,
        .crop = FERRY_IMAGE_CROP_RANDOM_RESIZED,
        .height = SIZE,
        .width = SIZE,
        .decode_whole = decode_whole,
        .flip = 0.5,
        .dtype = FERRY_DTYPE_FLOAT32,
        .chw = true,
        .mean = {0.485f, 0.456f, 0.406f},
        .std = {0.229f, 0.224f, 0.225f},
    };
}

static ferry_dataset *make_pipeline(const char *root, int64_t limit, bool decode_whole) {
    ferry_image_augment_options o = augment_options(decode_whole);
    ferry_dataset *f = make_folder(root, limit, NULL), *a, *b, *p;
    CHECK(ferry_dataset_image_augment(f, &o, &a));
    CHECK(ferry_dataset_batch(a, BATCH, NULL, &b));
    CHECK(ferry_dataset_prefetch(b, FERRY_AUTOTUNE, NULL, &p));
    ferry_dataset_unref(f);
    ferry_dataset_unref(a);
    ferry_dataset_unref(b);
    return p;
}

/* Decode-and-crop against decode-whole, image by image with the same seed (the same box and
 * flip): the mean absolute difference of the normalized values over the first `count` images
 * (the largest of one image in *worst). Untimed. */
static double compare_crop_full(const photo_set *s, int64_t count, double *worst) {
    ferry_image_augment_options full = augment_options(true), crop = augment_options(false);
    double sum = 0, n = 0;
    *worst = 0;
    for (int64_t i = 0; i < count && i < s->n; i++) {
        const void *ptr = s->p[i].data;
        size_t len = s->p[i].len;
        ferry_tensor *bytes, *a, *b;
        CHECK(ferry_tensor_create_bytes(rt, 0, NULL, &ptr, &len, &bytes));
        CHECK(ferry_image_augment(rt, bytes, &full, (uint64_t)i + 1, &a));
        CHECK(ferry_image_augment(rt, bytes, &crop, (uint64_t)i + 1, &b));
        const float *va = ferry_tensor_data(a), *vb = ferry_tensor_data(b);
        int64_t k = ferry_tensor_num_entries(a);
        if (k != (int64_t)CHANNELS * SIZE * SIZE || ferry_tensor_num_entries(b) != k) {
            fprintf(stderr, "ferry_image_augment: image %lld: %lld and %lld values, want %d\n", (long long)i,
                    (long long)k, (long long)ferry_tensor_num_entries(b), CHANNELS * SIZE * SIZE);
            exit(1);
        }
        double d = 0;
        for (int64_t j = 0; j < k; j++) d += fabs((double)va[j] - (double)vb[j]);
        if (d / (double)k > *worst) *worst = d / (double)k;
        sum += d;
        n += (double)k;
        ferry_tensor_unref(a);
        ferry_tensor_unref(b);
        ferry_tensor_unref(bytes);
    }
    return n > 0 ? sum / n : 0;
}

/* One epoch; exits on a failed element, a wrong shape or count. */
static void run_ferry(ferry_dataset *ds, const photo_set *s, result *out) {
    const size_t per_image = (size_t)CHANNELS * SIZE * SIZE;
    ferry_iterator_options io = {.seed = PIPELINE_SEED};
    uint64_t check = 0;
    /* steady: from the arrival of batch `mark` (a quarter into the epoch) to the last */
    int64_t n = 0, batches = 0, mark = (s->n + BATCH - 1) / BATCH / 4, at_mark = 0;
    double c0 = cpu_s(), t0 = now_s(), t_first = t0, t_mark = t0, t_last = t0;
    ferry_iterator *it;
    CHECK(ferry_iterator_create(ds, &io, &it));
    ferry_element *e;
    int rc;
    while ((rc = ferry_iterator_next(it, &e)) != FERRY_END) {
        if (rc != FERRY_OK) {
            fprintf(stderr, "ferry: image %lld: %s (%s)\n", (long long)n, ferry_iterator_error(it),
                    ferry_error_name(rc));
            exit(1);
        }
        const ferry_tensor *x = ferry_element_get(e, 0), *y = ferry_element_get(e, 1);
        int64_t b = ferry_tensor_dim(x, 0);
        if (ferry_element_size(e) != 2 || ferry_tensor_dtype(x) != FERRY_DTYPE_FLOAT32 || ferry_tensor_rank(x) != 4 ||
            b < 1 || b > BATCH || ferry_tensor_dim(x, 1) != CHANNELS || ferry_tensor_dim(x, 2) != SIZE ||
            ferry_tensor_dim(x, 3) != SIZE || ferry_tensor_dtype(y) != FERRY_DTYPE_INT64 || ferry_tensor_rank(y) != 1 ||
            ferry_tensor_dim(y, 0) != b) {
            fprintf(stderr, "ferry: batch at image %lld: not (float32 [b<=%d, %d, %d, %d], int64 [b])\n", (long long)n,
                    BATCH, CHANNELS, SIZE, SIZE);
            exit(1);
        }
        const int64_t *labels = ferry_tensor_data(y);
        for (int64_t i = 0; i < b; i++) {
            if (labels[i] < 0 || labels[i] >= (int64_t)s->nclasses) {
                fprintf(stderr, "ferry: image %lld: label %lld of %zu classes\n", (long long)(n + i),
                        (long long)labels[i], s->nclasses);
                exit(1);
            }
            check = mix64(check ^ (uint64_t)labels[i]);
        }
        const float *v = ferry_tensor_data(x);
        size_t count = (size_t)b * per_image;
        for (size_t i = 0; i < count; i += SAMPLE_STRIDE) {
            uint32_t bits;
            memcpy(&bits, &v[i], sizeof bits);
            check = check * 0x100000001b3ull ^ bits;
        }
        ferry_element_free(e);
        t_last = now_s();
        if (batches == 0) t_first = t_last;
        n += b;
        if (batches++ == mark) t_mark = t_last, at_mark = n;
    }
    ferry_iterator_free(it);
    out->wall = now_s() - t0;
    out->cpu = cpu_s() - c0;
    out->startup = t_first - t0;
    /* under 8 batches, the parallel workers' first batches are most of the epoch: no steady rate */
    out->steady = batches >= 8 && t_last > t_mark ? (double)(n - at_mark) / (t_last - t_mark) : NAN;
    out->check = check;
    if (n != s->n) {
        fprintf(stderr, "ferry gave %lld images, want %lld\n", (long long)n, (long long)s->n);
        exit(1);
    }
}

/* ---- PyTorch, as a child process ------------------------------------------------------------ */
typedef struct torch_run {
    int workers;
    double rate, steady, cpu_per_image, startup;
    int64_t images;
} torch_run;

/* s in single quotes for sh. */
static void shell_quote(char *out, size_t cap, const char *s) {
    size_t k = 0;
    out[k++] = '\'';
    for (; *s && k + 5 < cap; s++) {
        if (*s == '\'') {
            memcpy(out + k, "'\\''", 4);
            k += 4;
        } else {
            out[k++] = *s;
        }
    }
    out[k++] = '\'';
    out[k] = '\0';
}

static bool field(const char *line, const char *key, double *v) {
    char pat[64];
    snprintf(pat, sizeof pat, " %s=", key);
    const char *p = strstr(line, pat);
    if (!p) return false;
    char *end;
    *v = strtod(p + strlen(pat), &end);
    return end != p + strlen(pat);
}

/* One repetition of p6_torch.py (an epoch per worker count): 0 and the runs in out; 3 when torch
 * is missing (reason in skip); else 1. */
static int run_torch(const char *python, const char *script, const char *root, int64_t limit, long rotate,
                     torch_run *out, int *nout, char *skip, size_t skip_cap) {
    char qp[4200], qs[4200], qr[4200], cmd[13000];
    shell_quote(qp, sizeof qp, python);
    shell_quote(qs, sizeof qs, script);
    shell_quote(qr, sizeof qr, root);
    snprintf(cmd, sizeof cmd, "%s %s --dir %s --reps 1 --rotate %ld --limit %lld", qp, qs, qr, rotate,
             (long long)limit);
    fflush(stdout);
    FILE *f = popen(cmd, "r");
    if (!f) {
        snprintf(skip, skip_cap, "popen failed: %s", strerror(errno));
        return 3;
    }
    char line[1024];
    *nout = 0;
    while (fgets(line, sizeof line, f)) {
        double w, v;
        if (strncmp(line, "skip:", 5) == 0) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(skip, skip_cap, "%.400s", line + 6);
        } else if (strncmp(line, "torch ", 6) == 0 && field(line, "workers", &w) && *nout < TORCH_MAX_WORKERS) {
            torch_run *r = &out[(*nout)++];
            memset(r, 0, sizeof *r);
            r->workers = (int)w;
            if (field(line, "images", &v)) r->images = (int64_t)v;
            if (!field(line, "images_per_s", &r->rate) || !field(line, "steady_images_per_s", &r->steady) ||
                !field(line, "cpu_s_per_image", &r->cpu_per_image) || !field(line, "startup_s", &r->startup)) {
                fprintf(stderr, "p6_torch.py: a line without its fields: %s", line);
                pclose(f);
                return 1;
            }
        }
    }
    int st = pclose(f);
    int code = st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (code == 3) return 3;
    if (code != 0) {
        fprintf(stderr, "p6_torch.py failed (exit status %d): %s\n", code, cmd);
        return 1;
    }
    return 0;
}

/* ---- PNG: libspng, libpng, ferry ------------------------------------------------------------ */
typedef struct png_set {
    uint8_t **data;
    size_t *len;
    int64_t n;
    size_t bytes;
} png_set;

/* Image i of the PNG part: a garment-like silhouette (a body and two sleeves of random sizes)
 * with a textured fill on black, as Fashion-MNIST's. */
static void png_pattern(int64_t i, uint8_t *px) {
    uint64_t r = mix64((uint64_t)i * 0x51ull + 7);
    int top = 3 + (int)(r % 5), bottom = 22 + (int)(r >> 8) % 5, half = 5 + (int)(r >> 16) % 4;
    int sleeve = (int)(r >> 24) % 3 * 3, sleeve_len = 6 + (int)(r >> 32) % 8;
    int base = 90 + (int)(r >> 40) % 140, stripes = (int)(r >> 48) % 4;
    for (int y = 0; y < PNG_SIDE; y++)
        for (int x = 0; x < PNG_SIDE; x++) {
            int dx = x < 14 ? 13 - x : x - 14, w = half + (y - top) / 6;
            bool body = y >= top && y <= bottom && dx <= w;
            bool arm = sleeve && y >= top + 1 && y < top + sleeve_len && dx > w && dx <= w + sleeve;
            int v = 0;
            if (body || arm) {
                uint64_t n = mix64(((uint64_t)i << 16) ^ (uint64_t)(y * PNG_SIDE + x));
                v = base + (int)(n % 41) - 20 + (stripes && (y / stripes) % 2 ? 25 : 0) - (dx == w ? 40 : 0);
                v = v < 1 ? 1 : v > 255 ? 255 : v;
            }
            px[y * PNG_SIDE + x] = (uint8_t)v;
        }
}

#if defined(BENCH_HAVE_LIBPNG) && defined(FERRY_HAVE_SPNG)
typedef struct membuf {
    uint8_t *p;
    size_t len, cap, at;
} membuf;

static void png_mem_write(png_structp png, png_bytep data, size_t n) {
    membuf *m = png_get_io_ptr(png);
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->p = realloc(m->p, m->cap);
        if (!m->p) png_error(png, "out of memory");
    }
    memcpy(m->p + m->len, data, n);
    m->len += n;
}

static void png_mem_flush(png_structp png) { (void)png; }

static void png_mem_read(png_structp png, png_bytep data, size_t n) {
    membuf *m = png_get_io_ptr(png);
    if (n > m->len - m->at) png_error(png, "read past the end");
    memcpy(data, m->p + m->at, n);
    m->at += n;
}

static void make_pngs(int64_t n, png_set *s) {
    s->n = n;
    s->data = xcalloc((size_t)n, sizeof *s->data);
    s->len = xcalloc((size_t)n, sizeof *s->len);
    s->bytes = 0;
    uint8_t px[PNG_SIDE * PNG_SIDE];
    for (int64_t i = 0; i < n; i++) {
        png_pattern(i, px);
        membuf m = {0};
        png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
        png_infop info = png ? png_create_info_struct(png) : NULL;
        if (!info || setjmp(png_jmpbuf(png))) {
            fprintf(stderr, "libpng: encoding PNG %lld failed\n", (long long)i);
            exit(1);
        }
        png_set_write_fn(png, &m, png_mem_write, png_mem_flush);
        png_set_IHDR(png, info, PNG_SIDE, PNG_SIDE, 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_write_info(png, info);
        for (int y = 0; y < PNG_SIDE; y++) png_write_row(png, px + y * PNG_SIDE);
        png_write_end(png, NULL);
        png_destroy_write_struct(&png, &info);
        s->data[i] = m.p;
        s->len[i] = m.len;
        s->bytes += m.len;
    }
}

/* The PNGs of the Fashion-MNIST shards in dir (`ferry convert fashion-mnist DIR`: the test
 * shard's 10,000, then the training shards'), at most n, read through ferry (list_files ->
 * tfrecord -> parse_example). False when dir holds no shards. */
static bool mnist_pngs(const char *dir, int64_t n, png_set *s) {
    char pattern[4200];
    snprintf(pattern, sizeof pattern, "%s/*.tfrecord-*", dir);
    ferry_runtime *mrt;
    CHECK(ferry_runtime_create(NULL, &mrt));
    ferry_dataset *ds[3] = {0};
    const ferry_example_feature f = {.key = "image", .dtype = FERRY_DTYPE_BYTES, .kind = FERRY_EXAMPLE_FIXED};
    const ferry_example_spec spec = {.num_features = 1, .features = &f};
    ferry_example_parser *parser;
    if (ferry_dataset_list_files(mrt, pattern, NULL, &ds[0]) != FERRY_OK) { /* sorted: test first */
        ferry_runtime_free(mrt);
        return false;
    }
    CHECK(ferry_dataset_tfrecord_files(ds[0], NULL, &ds[1]));
    CHECK(ferry_example_parser_create(mrt, &spec, &parser));
    CHECK(ferry_dataset_parse_example(ds[1], parser, NULL, &ds[2]));
    ferry_example_parser_free(parser);
    ferry_iterator *it;
    CHECK(ferry_iterator_create(ds[2], NULL, &it));
    s->n = 0;
    s->data = xcalloc((size_t)n, sizeof *s->data);
    s->len = xcalloc((size_t)n, sizeof *s->len);
    s->bytes = 0;
    ferry_element *e;
    int rc;
    while (s->n < n && (rc = ferry_iterator_next(it, &e)) != FERRY_END) {
        CHECK(rc);
        const uint8_t *p;
        size_t len;
        CHECK(ferry_tensor_bytes_get(ferry_element_get(e, 0), 0, &p, &len));
        s->data[s->n] = malloc(len);
        if (!s->data[s->n]) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        memcpy(s->data[s->n], p, len);
        s->len[s->n++] = len;
        s->bytes += len;
        ferry_element_free(e);
    }
    ferry_iterator_free(it);
    for (int i = 2; i >= 0; i--) ferry_dataset_unref(ds[i]);
    CHECK(ferry_runtime_free(mrt));
    return s->n > 0;
}

static void free_pngs(png_set *s) {
    for (int64_t i = 0; i < s->n; i++) free(s->data[i]);
    free(s->data);
    free(s->len);
}

/* libspng: 0 and the pixels in px, else -1. */
static int spng_gray(const uint8_t *p, size_t n, uint8_t *px) {
    spng_ctx *ctx = spng_ctx_new(0);
    size_t size;
    int e = ctx ? spng_set_png_buffer(ctx, p, n) : -1;
    if (!e) e = spng_decoded_image_size(ctx, SPNG_FMT_G8, &size);
    if (!e && size != PNG_SIDE * PNG_SIDE) e = -1;
    if (!e) e = spng_decode_image(ctx, px, size, SPNG_FMT_G8, 0);
    spng_ctx_free(ctx);
    return e ? -1 : 0;
}

/* libpng, the classic API: 0 and the pixels in px, else -1. */
static int libpng_gray(const uint8_t *p, size_t n, uint8_t *px) {
    membuf m = {.p = (uint8_t *)(uintptr_t)p, .len = n};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    png_set_read_fn(png, &m, png_mem_read);
    png_read_info(png, info);
    if (png_get_image_width(png, info) != PNG_SIDE || png_get_image_height(png, info) != PNG_SIDE ||
        png_get_bit_depth(png, info) != 8 || png_get_color_type(png, info) != PNG_COLOR_TYPE_GRAY) {
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    for (int y = 0; y < PNG_SIDE; y++) png_read_row(png, px + y * PNG_SIDE, NULL);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    return 0;
}
#endif

enum { PNG_SPNG, PNG_LIBPNG, PNG_FERRY, NPNG };
static const char *const png_names[NPNG] = {"libspng", "libpng", "ferry_image_decode"};

/* One pass of decoder `which` over the set. */
static void run_png(int which, const png_set *s, result *out) {
#if defined(BENCH_HAVE_LIBPNG) && defined(FERRY_HAVE_SPNG)
    uint8_t px[PNG_SIDE * PNG_SIDE];
    ferry_decode_image_options o = {.channels = 1};
    uint64_t check = 0;
    double c0 = cpu_s(), t0 = now_s();
    for (int64_t i = 0; i < s->n; i++) {
        int rc = 0;
        if (which == PNG_SPNG) {
            rc = spng_gray(s->data[i], s->len[i], px);
            if (!rc) check = fold_bytes(check, px, sizeof px);
        } else if (which == PNG_LIBPNG) {
            rc = libpng_gray(s->data[i], s->len[i], px);
            if (!rc) check = fold_bytes(check, px, sizeof px);
        } else {
            ferry_tensor *t;
            rc = ferry_image_decode(rt, s->data[i], s->len[i], &o, &t);
            if (rc == FERRY_OK) {
                if (ferry_tensor_nbytes(t) == sizeof px) check = fold_bytes(check, ferry_tensor_data(t), sizeof px);
                else rc = -1;
                ferry_tensor_unref(t);
            }
        }
        if (rc) {
            fprintf(stderr, "%s: PNG %lld failed to decode\n", png_names[which], (long long)i);
            exit(1);
        }
    }
    out->wall = now_s() - t0;
    out->cpu = cpu_s() - c0;
    out->steady = (double)s->n / out->wall;
    out->check = check;
#else
    (void)which, (void)s;
    memset(out, 0, sizeof *out);
#endif
}

/* ---- driver --------------------------------------------------------------------------------- */
enum { V_LIMIT, V_LIMIT2, V_FULL, V_CROP, V_TORCH, V_PNG, NITEMS };
static const char *const item_names[NITEMS] = {"limit", "limit-2t", "full", "crop", "torch", "png"};

static bool parse_only(char *list, bool *selected) {
    for (char *name = strtok(list, ","); name; name = strtok(NULL, ",")) {
        int found = -1;
        for (int v = V_FULL; v < NITEMS; v++)
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
    fprintf(stderr,
            "usage: bench_images [--dir ROOT] [--reps N] [--limit N] [--png N] [--mnist DIR] [--only NAME[,NAME...]]\n"
            "                    [--map-threads N] [--python PATH] [--torch-script PATH] [--quick]\n"
            "  NAME: full, crop, torch, png (the decode limit always runs)\n");
    exit(2);
}

/* Median [min-max] of column `field` (offset into result) over reps. */
static double res_median(const result *r, long reps, size_t offset, double *lo, double *hi) {
    double *col = xmalloc(sizeof(double) * (size_t)reps);
    for (long i = 0; i < reps; i++) memcpy(&col[i], (const char *)&r[i] + offset, sizeof(double));
    double m = median(col, (int)reps, lo, hi);
    free(col);
    return m;
}

typedef struct summary {
    double rate, rlo, rhi;   /* images per second over the epoch: n / wall */
    double steady, slo, shi; /* after the first batch */
    double cpu_per_image, startup;
} summary;

static summary summarize(const result *r, long reps, int64_t n) {
    summary s;
    double *col = xmalloc(sizeof(double) * (size_t)reps);
    for (long i = 0; i < reps; i++) col[i] = (double)n / r[i].wall;
    s.rate = median(col, (int)reps, &s.rlo, &s.rhi);
    for (long i = 0; i < reps; i++) col[i] = r[i].cpu / (double)n;
    s.cpu_per_image = median(col, (int)reps, NULL, NULL);
    free(col);
    s.steady = res_median(r, reps, offsetof(result, steady), &s.slo, &s.shi);
    s.startup = res_median(r, reps, offsetof(result, startup), NULL, NULL);
    return s;
}

static void print_row(const char *name, const summary *s, bool steady, double ref_rate, const char *ref_name) {
    char range[64], st[64], su[32];
    snprintf(range, sizeof range, "%.1f [%.1f-%.1f]", s->rate, s->rlo, s->rhi);
    if (steady && s->steady == s->steady) snprintf(st, sizeof st, "%.1f [%.1f-%.1f]", s->steady, s->slo, s->shi);
    else snprintf(st, sizeof st, "-");
    if (steady) snprintf(su, sizeof su, "%.1f", s->startup * 1e3);
    else snprintf(su, sizeof su, "-");
    printf("%-22s %26s %26s %10s %12.3f %9.3f %s\n", name, range, st, su, s->cpu_per_image * 1e3,
           ref_rate > 0 ? s->rate / ref_rate : NAN, ref_name);
}

static void goal_line(const char *what, double num, double den, double goal, bool *pass, bool *any) {
    if (!(num > 0) || !(den > 0)) {
        printf("  %-44s n/a\n", what);
        return;
    }
    double r = num / den;
    bool ok = r >= goal;
    *pass = *pass && ok;
    *any = true;
    printf("  %-44s %6.3f  goal >= %.1f  %s\n", what, r, goal, ok ? "met" : "NOT MET");
}

int main(int argc, char **argv) {
    long reps = 5, limit = 0, npng = 10000;
    const char *mnist = "build/data/fashion-mnist"; /* --mnist: Fashion-MNIST shards, if there */
    const char *root = "build/photos", *python = "/usr/bin/python3";
    const char *script = FERRY_BENCH_SOURCE_DIR "/p6_torch.py";
    bool selected[NITEMS] = {false}, only = false, quick = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
            continue;
        }
        if (i + 1 >= argc) usage();
        if (strcmp(argv[i], "--dir") == 0) root = argv[++i];
        else if (strcmp(argv[i], "--reps") == 0) {
            if (!parse_int(argv[++i], 1, &reps)) usage();
        } else if (strcmp(argv[i], "--limit") == 0) {
            if (!parse_int(argv[++i], 1, &limit)) usage();
        } else if (strcmp(argv[i], "--map-threads") == 0) {
            long t;
            if (!parse_int(argv[++i], 0, &t) || t > 1024) usage();
            map_threads = (int)t;
        } else if (strcmp(argv[i], "--mnist") == 0) {
            mnist = argv[++i];
        } else if (strcmp(argv[i], "--png") == 0) {
            if (!parse_int(argv[++i], 1, &npng)) usage();
        } else if (strcmp(argv[i], "--only") == 0) {
            if (!parse_only(argv[++i], selected)) usage();
            only = true;
        } else if (strcmp(argv[i], "--python") == 0) python = argv[++i];
        else if (strcmp(argv[i], "--torch-script") == 0) script = argv[++i];
        else usage();
    }
    if (quick) {
        reps = 1;
        if (limit == 0) limit = 96;
        if (npng == 10000) npng = 2000;
    }
    for (int v = 0; v < NITEMS; v++)
        if (!only) selected[v] = true;
    selected[V_LIMIT] = selected[V_LIMIT2] = true;

#ifndef FERRY_HAVE_JPEG
    printf("bench_images: this build has no libjpeg-turbo; P6 needs it\n");
    return 0;
#endif
    CHECK(ferry_runtime_create(NULL, &rt));
    ferry_runtime_stats rst;
    CHECK(ferry_runtime_stats_get(rt, &rst));

    photo_set ps = {0};
    load_photos(root, limit, &ps);
    reference_decode(&ps);
    int bad = verify_hand_decode(&ps);
    char threads_name[16] = "AUTOTUNE";
    if (map_threads != FERRY_AUTOTUNE) snprintf(threads_name, sizeof threads_name, "%d", map_threads);
    printf("ferry %s, P6 images per second: %s, %lld JPEGs in %zu classes, mean %.0f x %.0f pixels, %.1f KB; "
           "batch %d of %d x %d float32 CHW; image_augment threads %s; %ld reps; cpu_budget %d\n",
           ferry_version(), root, (long long)ps.n, ps.nclasses, ps.mean_w, ps.mean_h,
           (double)ps.bytes / (double)ps.n / 1000.0, BATCH, SIZE, SIZE, threads_name, reps, rst.cpu_budget);
    printf("hand-written libjpeg-turbo decode: pixels equal to ferry_image_decode's for %lld of %lld images\n",
           (long long)(ps.n - bad), (long long)ps.n);
    fflush(stdout);

    /* torch: is it there at all? */
    char torch_skip[512] = "";
    if (selected[V_TORCH] && access(python, X_OK) != 0)
        snprintf(torch_skip, sizeof torch_skip, "%s: %s", python, strerror(errno));
    else if (selected[V_TORCH] && access(script, R_OK) != 0)
        snprintf(torch_skip, sizeof torch_skip, "%s: %s", script, strerror(errno));
    if (torch_skip[0]) selected[V_TORCH] = false;

    png_set pngs = {0};
#if defined(BENCH_HAVE_LIBPNG) && defined(FERRY_HAVE_SPNG)
    const char *png_source = "generated (garment-like silhouettes)";
    if (selected[V_PNG] && mnist && mnist_pngs(mnist, npng, &pngs)) png_source = mnist;
    else if (selected[V_PNG]) make_pngs(npng, &pngs);
#else
    if (selected[V_PNG]) {
        printf("PNG part skipped: this build has no %s\n",
#ifndef FERRY_HAVE_SPNG
               "libspng"
#else
               "libpng (libpng-dev)"
#endif
        );
        selected[V_PNG] = false;
    }
#endif

    ferry_dataset *pipe_full = selected[V_FULL] ? make_pipeline(root, limit, true) : NULL;
    ferry_dataset *pipe_crop = selected[V_CROP] ? make_pipeline(root, limit, false) : NULL;

    /* Untimed first epochs: AUTOTUNE learns, first-call costs are paid. */
    result first_full = {0}, first_crop = {0}, scratch;
    if (pipe_full) run_ferry(pipe_full, &ps, &first_full);
    if (pipe_crop) run_ferry(pipe_crop, &ps, &first_crop);
    run_limit(&ps, &scratch);

    result *res = xcalloc((size_t)(NITEMS * reps), sizeof *res);
    result *png_res = xcalloc((size_t)(NPNG * reps), sizeof *png_res);
    torch_run(*tr)[TORCH_MAX_WORKERS] = xcalloc((size_t)reps, sizeof *tr);
    int ntorch = 0;
    for (long r = 0; r < reps; r++) {
        for (int j = 0; j < NITEMS; j++) {
            int v = (int)((j + r) % NITEMS);
            if (!selected[v]) continue;
            result *out = &res[v * reps + r];
            switch (v) {
            case V_LIMIT: run_limit(&ps, out); break;
            case V_LIMIT2: run_limit2(&ps, out); break;
            case V_FULL: run_ferry(pipe_full, &ps, out); break;
            case V_CROP: run_ferry(pipe_crop, &ps, out); break;
            case V_TORCH: {
                int n = 0;
                int rc = run_torch(python, script, root, ps.n, r, tr[r], &n, torch_skip, sizeof torch_skip);
                if (rc == 3) {
                    if (!torch_skip[0]) snprintf(torch_skip, sizeof torch_skip, "p6_torch.py cannot run");
                    selected[V_TORCH] = false;
                } else if (rc != 0) {
                    return 1;
                } else {
                    for (int k = 0; k < n; k++)
                        if (tr[r][k].images != ps.n) {
                            fprintf(stderr, "p6_torch.py: %lld images, want %lld\n", (long long)tr[r][k].images,
                                    (long long)ps.n);
                            return 1;
                        }
                    if (r == 0) ntorch = n;
                    else if (n != ntorch) {
                        fprintf(stderr, "p6_torch.py: %d runs, %d before\n", n, ntorch);
                        return 1;
                    }
                }
                break;
            }
            case V_PNG:
                for (int k = 0; k < NPNG; k++) {
                    int w = (int)((k + r) % NPNG);
                    run_png(w, &pngs, &png_res[w * reps + r]);
                }
                break;
            default: break;
            }
        }
    }

    /* Correctness across repetitions and variants: the hand-written loops must fold the pixels that
     * were found equal to ferry_image_decode's. */
    uint64_t limit_check = 0;
    for (int64_t i = 0; i < ps.n; i++) limit_check = mix64(limit_check ^ ps.p[i].fold);
    for (int v = 0; v < NITEMS; v++) {
        if (!selected[v] || v == V_TORCH || v == V_PNG) continue;
        uint64_t want = v == V_FULL ? first_full.check : v == V_CROP ? first_crop.check : limit_check;
        for (long r = 0; r < reps; r++)
            if (res[v * reps + r].check != want) {
                fprintf(stderr, "MISMATCH: %s rep %ld: checksum %016llx, want %016llx\n", item_names[v], r,
                        (unsigned long long)res[v * reps + r].check, (unsigned long long)want);
                bad++;
            }
    }
    double crop_vs_full = NAN, crop_worst = NAN;
    if (pipe_full && pipe_crop) {
        crop_vs_full = compare_crop_full(&ps, COMPARE_IMAGES, &crop_worst);
        /* 0.1 of a normalized value is about 6 levels of 255 */
        if (!(crop_vs_full < 0.1)) {
            fprintf(stderr,
                    "MISMATCH: decode-and-crop differs from decode-whole by %.3f on average (worst image %.3f)\n",
                    crop_vs_full, crop_worst);
            bad++;
        }
    }
    uint64_t png_check[NPNG] = {0};
    if (selected[V_PNG])
        for (int k = 0; k < NPNG; k++) {
            png_check[k] = png_res[k * reps].check;
            for (long r = 0; r < reps; r++)
                if (png_res[k * reps + r].check != png_res[PNG_SPNG * reps].check) {
                    fprintf(stderr, "MISMATCH: PNG %s rep %ld: checksum %016llx, libspng %016llx\n", png_names[k], r,
                            (unsigned long long)png_res[k * reps + r].check,
                            (unsigned long long)png_res[PNG_SPNG * reps].check);
                    bad++;
                }
        }

    /* The table. */
    summary sm[NITEMS];
    for (int v = 0; v < NITEMS; v++)
        if (selected[v] && v != V_TORCH && v != V_PNG) sm[v] = summarize(&res[v * reps], reps, ps.n);
    double limit_rate = 2.0 * sm[V_LIMIT].rate;
    printf("\n%-22s %26s %26s %10s %12s %9s\n", "variant", "images/s median [min-max]", "steady images/s", "startup ms",
           "CPU ms/image", "/limit");
    summary lim2x = sm[V_LIMIT];
    lim2x.rate *= 2, lim2x.rlo *= 2, lim2x.rhi *= 2;
    print_row("limit (1 core)", &sm[V_LIMIT], false, limit_rate, "");
    print_row("decode limit (x2)", &lim2x, false, limit_rate, "(the reference)");
    print_row("limit-2t (measured)", &sm[V_LIMIT2], false, limit_rate, "");
    double ferry_best = 0, ferry_best_steady = 0;
    if (selected[V_FULL]) {
        print_row("ferry-full", &sm[V_FULL], true, limit_rate, "");
        ferry_best = fmax(ferry_best, sm[V_FULL].rate);
        ferry_best_steady = fmax(ferry_best_steady, sm[V_FULL].steady);
    }
    if (selected[V_CROP]) {
        print_row("ferry-crop", &sm[V_CROP], true, limit_rate, "");
        ferry_best = fmax(ferry_best, sm[V_CROP].rate);
        ferry_best_steady = fmax(ferry_best_steady, sm[V_CROP].steady);
    }
    double torch_best = 0, torch_best_steady = 0;
    if (selected[V_TORCH]) {
        for (int k = 0; k < ntorch; k++) {
            result *col = xcalloc((size_t)reps, sizeof *col);
            for (long r = 0; r < reps; r++) {
                /* the child rotates its order: find this worker count's run */
                const torch_run *t = NULL;
                for (int q = 0; q < ntorch; q++)
                    if (tr[r][q].workers == tr[0][k].workers) t = &tr[r][q];
                if (!t) {
                    fprintf(stderr, "p6_torch.py: rep %ld has no run with %d workers\n", r, tr[0][k].workers);
                    return 1;
                }
                col[r].wall = (double)ps.n / t->rate;
                col[r].cpu = t->cpu_per_image * (double)ps.n;
                col[r].steady = t->steady;
                col[r].startup = t->startup;
            }
            summary ts = summarize(col, reps, ps.n);
            free(col);
            char name[48];
            snprintf(name, sizeof name, "torch workers=%d", tr[0][k].workers);
            print_row(name, &ts, true, limit_rate, "");
            torch_best = fmax(torch_best, ts.rate);
            torch_best_steady = fmax(torch_best_steady, ts.steady);
        }
    } else {
        printf("%-22s skipped: %s\n", "torch", torch_skip[0] ? torch_skip : "not selected");
    }
    printf("(images/s: images over the epoch's wall time, iterator made and freed included; steady: from the\n"
           " batch a quarter into the epoch to the last; startup ms: from making the iterator to the first batch;\n"
           " CPU ms/image: process CPU (PyTorch: with its workers); /limit: over the decode limit, 2 x the\n"
           " one-core hand-written decode)\n");
    if (selected[V_FULL] || selected[V_CROP]) {
        printf("first epochs (untimed):");
        if (selected[V_FULL]) printf(" ferry-full %.1f images/s", (double)ps.n / first_full.wall);
        if (selected[V_CROP]) printf(" ferry-crop %.1f images/s", (double)ps.n / first_crop.wall);
        CHECK(ferry_runtime_stats_get(rt, &rst));
        printf("; ferry's threads: %lld started in all, at most %d working at once (cpu_budget %d)\n",
               (long long)rst.threads_started, rst.threads_busy_peak, rst.cpu_budget);
    }

    if (selected[V_PNG]) {
        summary psm[NPNG];
        printf("\nPNG, %lld images of %d x %d gray (%s), %.0f bytes on average, decoded from memory on one "
               "thread\n",
               (long long)pngs.n, PNG_SIDE, PNG_SIDE, png_source, (double)pngs.bytes / (double)pngs.n);
        printf("%-22s %26s %12s %9s\n", "decoder", "images/s median [min-max]", "CPU us/image", "/libpng");
        for (int k = 0; k < NPNG; k++) psm[k] = summarize(&png_res[k * reps], reps, pngs.n);
        for (int k = 0; k < NPNG; k++) {
            char range[64];
            snprintf(range, sizeof range, "%.0f [%.0f-%.0f]", psm[k].rate, psm[k].rlo, psm[k].rhi);
            printf("%-22s %26s %12.2f %9.3f\n", png_names[k], range, psm[k].cpu_per_image * 1e6,
                   psm[k].rate / psm[PNG_LIBPNG].rate);
        }
        printf("checksums of the decoded pixels: %s (%016llx)\n",
               png_check[PNG_SPNG] == png_check[PNG_LIBPNG] && png_check[PNG_SPNG] == png_check[PNG_FERRY]
                   ? "equal for libspng, libpng and ferry"
                   : "MISMATCH",
               (unsigned long long)png_check[PNG_SPNG]);
    }

    printf("\nchecks: %s", bad ? "FAILED" : "passed");
    if (!bad) {
        printf(" (hand decode = ferry_image_decode; every repetition the same checksum");
        if (crop_vs_full == crop_vs_full)
            printf("; decode-and-crop within %.4f of decode-whole on average, %.4f for the worst image", crop_vs_full,
                   crop_worst);
        printf(")");
    }
    printf("\ngoals (medians):\n");
    bool pass = true, any = false;
    goal_line("ferry best / DataLoader best", ferry_best, torch_best, 2.5, &pass, &any);
    if (ferry_best_steady > 0 && torch_best_steady > 0)
        printf("  %-44s %6.3f  (for information)\n", "  steady: ferry best / DataLoader best",
               ferry_best_steady / torch_best_steady);
    goal_line("ferry-full / decode limit", selected[V_FULL] ? sm[V_FULL].rate : 0, limit_rate, 0.9, &pass, &any);
    goal_line("ferry-crop / decode limit", selected[V_CROP] ? sm[V_CROP].rate : 0, limit_rate, 1.2, &pass, &any);
    goal_line("ferry-crop / ferry-full", selected[V_CROP] ? sm[V_CROP].rate : 0, selected[V_FULL] ? sm[V_FULL].rate : 0,
              1.4, &pass, &any);
    printf("verdict: %s\n", !any ? "no goal measured" : pass ? "MET" : "NOT MET");

    ferry_dataset_unref(pipe_full);
    ferry_dataset_unref(pipe_crop);
    for (int64_t i = 0; i < ps.n; i++) free(ps.p[i].data);
    free(ps.p);
    free(res);
    free(png_res);
    free(tr);
#if defined(BENCH_HAVE_LIBPNG) && defined(FERRY_HAVE_SPNG)
    if (pngs.n) free_pngs(&pngs);
#endif
    CHECK(ferry_runtime_free(rt));
    return bad ? 1 : 0;
}
