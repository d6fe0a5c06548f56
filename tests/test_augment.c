/*
 * test_augment.c - image augmentation (ferry_image_augment, ferry_dataset_image_augment,
 * ferry_image_random_resized_crop_window).
 *
 * The boxes of the random resized crop follow torchvision's distribution (area fraction and
 * log-ratio uniform, the position uniform, the central fallback); each step's pixels are checked
 * against what it is defined to be, computed here another way (the resize of the cut box, the
 * mirror, the padded window, brightness on a constant image, normalisation, float16 and
 * bfloat16 rounding); decoding only the box of a JPEG matches decoding it whole within a stated
 * tolerance, with and without DCT scaling; the map gives the same pixels for 0, 2 and 8 threads
 * and after save/restore, and its failures arrive in their element's position.
 */
#include "runner.h"

#include <math.h>

#if __has_include(<jpeglib.h>) && __has_include(<spng.h>)
#define HAVE_CODECS 1
#include <stdio.h>
/* jpeglib.h needs stdio.h first */
#include <jpeglib.h>
#include <spng.h>
#endif
#include "image_codec.h"


/* A smooth picture (gradients and rings), which JPEG and scaled decoding keep close. */
static void smooth(uint8_t *px, int w, int h, int c) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double r = sqrt((double)(x - w / 3) * (x - w / 3) + (double)(y - h / 2) * (y - h / 2));
            for (int k = 0; k < c; k++)
                px[((size_t)y * w + x) * c + k] =
                    (uint8_t)(127.5 + 60 * sin(r / 9.0 + k) + 50.0 * (k == 0 ? x : y) / (k == 0 ? w : h) - 25);
        }
}

static ferry_tensor *augment(ferry_runtime *rt, const ferry_tensor *img, const ferry_image_augment_options *o,
                             uint64_t seed) {
    ferry_tensor *t;
    ASSERT_OK(ferry_image_augment(rt, img, o, seed, &t));
    return t;
}

static bool same_pixels(const ferry_tensor *a, const ferry_tensor *b) {
    return ferry_tensor_dtype(a) == ferry_tensor_dtype(b) && ferry_tensor_nbytes(a) == ferry_tensor_nbytes(b) &&
           memcmp(ferry_tensor_data(a), ferry_tensor_data(b), ferry_tensor_nbytes(a)) == 0;
}

/* The box of t (uint8 [h, w, c]) as a new tensor. */
static ferry_tensor *cut(ferry_runtime *rt, const ferry_tensor *t, ferry_image_window b) {
    int64_t w = ferry_tensor_dim(t, 1), c = ferry_tensor_dim(t, 2), dims[3] = {b.height, b.width, c};
    ferry_tensor *o;
    ASSERT_OK(ferry_tensor_create(rt, FERRY_DTYPE_UINT8, 3, dims, &o));
    for (int64_t y = 0; y < b.height; y++)
        memcpy((uint8_t *)ferry_tensor_mutable_data(o) + (size_t)(y * b.width * c),
               (const uint8_t *)ferry_tensor_data(t) + (size_t)(((b.y + y) * w + b.x) * c), (size_t)(b.width * c));
    return o;
}

TEST(random_resized_crop_boxes_follow_the_distribution) {
    /* an image where every draw fits: area fraction and log-ratio uniform, the place uniform */
    ferry_image_augment_options o = {.scale_min = 0.1, .scale_max = 0.5};
    enum { N = 40000 };
    int area_bins[4] = {0}, ratio_bins[4] = {0}, x_bins[4] = {0};
    for (uint64_t s = 0; s < N; s++) {
        ferry_image_window b;
        ASSERT_OK(ferry_image_random_resized_crop_window(1000, 1000, &o, s, &b));
        ASSERT(b.y >= 0 && b.x >= 0 && b.height >= 1 && b.width >= 1 && b.y + b.height <= 1000 &&
               b.x + b.width <= 1000);
        double frac = (double)b.height * b.width / 1e6, lr = log((double)b.width / b.height);
        ASSERT(frac > 0.098 && frac < 0.502);
        ASSERT(lr > log(0.75) - 0.01 && lr < log(4.0 / 3) + 0.01);
        int ab = (int)((frac - 0.1) / 0.1), rb = (int)((lr - log(0.75)) / (log(16.0 / 9) / 4));
        area_bins[ab < 0 ? 0 : ab > 3 ? 3 : ab]++;
        ratio_bins[rb < 0 ? 0 : rb > 3 ? 3 : rb]++;
        int xb = 1000 - b.width ? (int)(4.0 * b.x / (1000 - b.width + 1)) : 0;
        x_bins[xb > 3 ? 3 : xb]++;
        ferry_image_window again;
        ASSERT_OK(ferry_image_random_resized_crop_window(1000, 1000, &o, s, &again));
        ASSERT(memcmp(&b, &again, sizeof b) == 0); /* the seed decides */
    }
    for (int i = 0; i < 4; i++) { /* each quarter 25 % +- 1.5 % (over 6 standard deviations) */
        ASSERT(fabs(area_bins[i] / (double)N - 0.25) < 0.015);
        ASSERT(fabs(ratio_bins[i] / (double)N - 0.25) < 0.015);
        ASSERT(fabs(x_bins[i] / (double)N - 0.25) < 0.015);
    }
    /* the default ranges on a 4:3 photo: inside, and the area fraction within [0.08, 1] */
    for (uint64_t s = 0; s < 2000; s++) {
        ferry_image_window b;
        ASSERT_OK(ferry_image_random_resized_crop_window(375, 500, NULL, s, &b));
        ASSERT(b.y + b.height <= 375 && b.x + b.width <= 500);
        double frac = (double)b.height * b.width / (375.0 * 500);
        ASSERT(frac > 0.075 && frac <= 1.0);
    }
    /* a strip no box of ratio up to 4/3 and area over 8 % fits: the central box, ratio clamped */
    ferry_image_window b;
    ASSERT_OK(ferry_image_random_resized_crop_window(10, 1000, NULL, 7, &b));
    ASSERT_EQ(b.height, 10);
    ASSERT_EQ(b.width, 13); /* round(10 * 4/3) */
    ASSERT_EQ(b.y, 0);
    ASSERT_EQ(b.x, (1000 - 13) / 2);
    ASSERT_OK(ferry_image_random_resized_crop_window(1000, 10, NULL, 7, &b));
    ASSERT_EQ(b.width, 10);
    ASSERT_EQ(b.height, 13); /* round(10 / (3/4)) */
    /* bad arguments */
    ASSERT_EQ(ferry_image_random_resized_crop_window(0, 5, NULL, 1, &b), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "the image is 0 x 5");
    ASSERT_EQ(ferry_image_random_resized_crop_window(
                  5, 5, &(ferry_image_augment_options){.scale_min = 0.5, .scale_max = 0.2}, 1, &b),
              FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "opts->scale_min and scale_max are 0.5 and 0.2");
    ASSERT_EQ(ferry_image_random_resized_crop_window(5, 5, NULL, 1, NULL), FERRY_EINVAL);
}

TEST(crops_are_the_resize_of_the_box_or_the_padded_window) {
    ferry_runtime *rt = rt_new();
    int h = 45, w = 60, c = 3;
    uint8_t *px = malloc((size_t)h * w * c);
    smooth(px, w, h, c);
    ferry_tensor *img = image_of(rt, h, w, c, px);
    /* random resized crop: the box the window function names, cut and resized */
    ferry_image_augment_options rrc = {.crop = FERRY_IMAGE_CROP_RANDOM_RESIZED, .height = 16, .width = 20};
    for (uint64_t s = 0; s < 20; s++) {
        ferry_image_window b;
        ASSERT_OK(ferry_image_random_resized_crop_window(h, w, &rrc, s, &b));
        ferry_tensor *box = cut(rt, img, b), *want, *got = augment(rt, img, &rrc, s);
        ASSERT_OK(ferry_image_resize(rt, box, 16, 20, NULL, &want));
        ASSERT(same_pixels(got, want));
        ferry_tensor_unref(box);
        ferry_tensor_unref(want);
        ferry_tensor_unref(got);
    }
    /* no crop, a size: the resize */
    ferry_tensor *want, *got = augment(rt, img, &(ferry_image_augment_options){.height = 20, .width = 30}, 1);
    ASSERT_OK(ferry_image_resize(rt, img, 20, 30, NULL, &want));
    ASSERT(same_pixels(got, want));
    ferry_tensor_unref(want);
    ferry_tensor_unref(got);
    /* no options: the image as it is */
    got = augment(rt, img, NULL, 1);
    ASSERT(same_pixels(got, img));
    ferry_tensor_unref(got);
    /* centre crop: round half to even as torchvision ((45 - 20) / 2 = 12.5 -> 12; (60 - 21) / 2 = 19.5 -> 20) */
    got =
        augment(rt, img, &(ferry_image_augment_options){.crop = FERRY_IMAGE_CROP_CENTER, .height = 20, .width = 21}, 1);
    want = cut(rt, img, (ferry_image_window){12, 20, 20, 21});
    ASSERT(same_pixels(got, want));
    ferry_tensor_unref(want);
    ferry_tensor_unref(got);
    /* a centre crop larger than the image: the image in the middle, zeros around it */
    got =
        augment(rt, img, &(ferry_image_augment_options){.crop = FERRY_IMAGE_CROP_CENTER, .height = 49, .width = 60}, 1);
    const uint8_t *g = ferry_tensor_data(got);
    for (int y = 0; y < 49; y++)
        for (int x = 0; x < 60 * c; x++)
            ASSERT_EQ(g[(size_t)y * 60 * c + x], y < 2 || y >= 47 ? 0 : px[(size_t)(y - 2) * 60 * c + x]);
    ferry_tensor_unref(got);
    /* random crop with padding: a window of the padded image, every placement reached */
    int seen[9][9] = {{0}};
    ferry_image_augment_options rc = {.crop = FERRY_IMAGE_CROP_RANDOM, .height = h, .width = w, .padding = 4};
    for (uint64_t s = 0; s < 2000; s++) {
        got = augment(rt, img, &rc, s);
        g = ferry_tensor_data(got);
        int found = 0;
        for (int dy = -4; dy <= 4 && !found; dy++)
            for (int dx = -4; dx <= 4 && !found; dx++) {
                bool ok = true;
                for (int y = 0; y < h && ok; y++)
                    for (int x = 0; x < w && ok; x++)
                        for (int k = 0; k < c && ok; k++) {
                            int sy = y + dy, sx = x + dx;
                            int v = sy < 0 || sy >= h || sx < 0 || sx >= w ? 0 : px[((size_t)sy * w + sx) * c + k];
                            ok = g[((size_t)y * w + x) * c + k] == v;
                        }
                if (ok) seen[dy + 4][dx + 4]++, found = 1;
            }
        ASSERT(found);
        ferry_tensor_unref(got);
    }
    for (int i = 0; i < 81; i++) ASSERT(seen[i / 9][i % 9] > 0);
    /* a window larger than the padded image is an error naming both */
    ferry_tensor *none = (ferry_tensor *)(uintptr_t)1;
    ASSERT_EQ(ferry_image_augment(rt, img,
                                  &(ferry_image_augment_options){
                                      .crop = FERRY_IMAGE_CROP_RANDOM, .height = 50, .width = 10, .padding = 2},
                                  1, &none),
              FERRY_EINVAL);
    ASSERT(none == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "the crop of 50 x 10 is larger than the image of 45 x 60 padded by 2");
    ferry_tensor_unref(img);
    free(px);
    rt_done(rt);
}

/* binary16 of x in [0, 65504], rounded to nearest even, computed in double: the reference */
static uint16_t f16_ref(double x) {
    if (x == 0) return 0;
    int e = (int)floor(log2(x));
    if (e < -14) e = -14;                                             /* subnormal: the smallest exponent's step */
    double step = ldexp(1.0, e - 10), q = x / step, r = nearbyint(q); /* the default mode: half to even */
    double v = r * step;
    if (v >= ldexp(1.0, 16)) return 0x7c00;
    int ve = v == 0 ? -15 : (int)floor(log2(v));
    if (ve < -14) return (uint16_t)(v / ldexp(1.0, -24)); /* subnormal */
    return (uint16_t)(((ve + 15) << 10) | (uint16_t)(v / ldexp(1.0, ve - 10) - 1024));
}

TEST(flips_colour_and_outputs) {
    ferry_runtime *rt = rt_new();
    int h = 16, w = 16, c = 3;
    uint8_t px[16 * 16 * 3];
    for (int i = 0; i < h * w * c; i++) px[i] = (uint8_t)(i * 7 / 3); /* every value 0..255 appears */
    ferry_tensor *img = image_of(rt, h, w, c, px);
    /* flips: the mirror, left-right and up-down */
    ferry_tensor *lr = augment(rt, img, &(ferry_image_augment_options){.flip = 1}, 5);
    ferry_tensor *ud = augment(rt, img, &(ferry_image_augment_options){.vertical_flip = 1}, 5);
    const uint8_t *a = ferry_tensor_data(lr), *b = ferry_tensor_data(ud);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++) {
                ASSERT_EQ(a[(y * w + x) * c + k], px[(y * w + (w - 1 - x)) * c + k]);
                ASSERT_EQ(b[(y * w + x) * c + k], px[((h - 1 - y) * w + x) * c + k]);
            }
    ferry_tensor_unref(lr);
    ferry_tensor_unref(ud);
    /* a probability of one half: about half of the images flipped */
    int flipped = 0;
    for (uint64_t s = 0; s < 1000; s++) {
        ferry_tensor *t = augment(rt, img, &(ferry_image_augment_options){.flip = 0.5}, s);
        flipped += !same_pixels(t, img);
        ferry_tensor_unref(t);
    }
    ASSERT(flipped > 400 && flipped < 600);
    /* brightness on a constant image: value times a factor in [0.5, 1.5], both ends reached;
       contrast leaves a constant image as it is (its mean is itself) */
    uint8_t flat[8 * 8];
    memset(flat, 100, sizeof flat);
    ferry_tensor *gray = image_of(rt, 8, 8, 1, flat);
    int lo = 255, hi = 0;
    for (uint64_t s = 0; s < 500; s++) {
        ferry_tensor *t = augment(rt, gray, &(ferry_image_augment_options){.brightness = 0.5, .contrast = 0.8}, s);
        const uint8_t *v = ferry_tensor_data(t);
        for (int i = 1; i < 64; i++) ASSERT_EQ(v[i], v[0]);
        lo = v[0] < lo ? v[0] : lo, hi = v[0] > hi ? v[0] : hi;
        ferry_tensor_unref(t);
    }
    ASSERT(lo >= 50 && lo < 55 && hi <= 150 && hi > 145);
    /* contrast on two values: pulled towards or pushed from their mean, clamped */
    uint8_t two[2] = {50, 150};
    ferry_tensor *pair = image_of(rt, 1, 2, 1, two);
    for (uint64_t s = 0; s < 100; s++) {
        ferry_tensor *t = augment(rt, pair, &(ferry_image_augment_options){.contrast = 0.5}, s);
        const uint8_t *v = ferry_tensor_data(t);
        ASSERT(v[0] + v[1] >= 199 && v[0] + v[1] <= 201); /* symmetric about the mean 100 */
        ASSERT(v[0] >= 25 && v[0] <= 75);
        ferry_tensor_unref(t);
    }
    ferry_tensor_unref(pair);
    ferry_tensor_unref(gray);
    /* float32, normalised, HWC and CHW */
    ferry_image_augment_options f = {.dtype = FERRY_DTYPE_FLOAT32, .mean = {0.5f, 0.25f, 0}, .std = {0.5f, 2, 0}};
    ferry_tensor *hwc = augment(rt, img, &f, 1);
    f.chw = true;
    ferry_tensor *chw = augment(rt, img, &f, 1);
    ASSERT_EQ(ferry_tensor_dim(chw, 0), 3);
    ASSERT_EQ(ferry_tensor_dim(chw, 1), 16);
    const float *fh = ferry_tensor_data(hwc), *fc = ferry_tensor_data(chw);
    float mean[3] = {0.5f, 0.25f, 0}, inv[3] = {2, 0.5f, 1};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++) {
                float want = ((float)px[(y * w + x) * c + k] * (1.0f / 255.0f) - mean[k]) * inv[k];
                ASSERT(fh[(y * w + x) * c + k] == want);
                ASSERT(fc[(k * h + y) * w + x] == want);
            }
    ferry_tensor_unref(hwc);
    ferry_tensor_unref(chw);
    /* float16 and bfloat16: the float32 value rounded to nearest even */
    ferry_tensor *f32 = augment(rt, img, &(ferry_image_augment_options){.dtype = FERRY_DTYPE_FLOAT32}, 1);
    ferry_tensor *f16 = augment(rt, img, &(ferry_image_augment_options){.dtype = FERRY_DTYPE_FLOAT16}, 1);
    ferry_tensor *bf = augment(rt, img, &(ferry_image_augment_options){.dtype = FERRY_DTYPE_BFLOAT16}, 1);
    ASSERT_EQ(ferry_tensor_dtype(f16), FERRY_DTYPE_FLOAT16);
    const float *v32 = ferry_tensor_data(f32);
    const uint16_t *v16 = ferry_tensor_data(f16), *vb = ferry_tensor_data(bf);
    for (int i = 0; i < h * w * c; i++) {
        ASSERT_EQ(v16[i], f16_ref(v32[i]));
        uint32_t bits;
        memcpy(&bits, &v32[i], 4);
        uint32_t lo16 = bits & 0xffff, up = bits >> 16;
        uint16_t want = (uint16_t)(lo16 > 0x8000 || (lo16 == 0x8000 && (up & 1)) ? up + 1 : up);
        ASSERT_EQ(vb[i], want);
    }
    ASSERT_EQ(f16_ref(1.0), 0x3c00); /* the reference itself */
    ASSERT_EQ(f16_ref(65504), 0x7bff);
    ferry_tensor_unref(f32);
    ferry_tensor_unref(f16);
    ferry_tensor_unref(bf);
    /* bad options, each named */
    ferry_tensor *none;
    struct {
        ferry_image_augment_options o;
        const char *msg;
    } bad[] = {
        {{.crop = FERRY_IMAGE_CROP_CENTER}, "a crop needs both >= 1"},
        {{.height = 5}, "give both (>= 1) or neither"},
        {{.flip = 1.5}, "opts->flip and vertical_flip are 1.5 and 0"},
        {{.brightness = -1}, "opts->brightness and contrast are -1 and 0"},
        {{.dtype = FERRY_DTYPE_INT32}, "opts->dtype is int32"},
        {{.std = {0, -1}}, "opts->mean[1] and std[1] are 0 and -1"},
        {{.crop = (ferry_image_crop)9}, "opts->crop is 9"},
        {{.ratio_min = 2, .ratio_max = 1}, "opts->ratio_min and ratio_max are 2 and 1"},
        {{.channels = 2}, "opts->channels is 2"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ASSERT_EQ(ferry_image_augment(rt, img, &bad[i].o, 1, &none), FERRY_EINVAL);
        ASSERT_STR_CONTAINS(ferry_last_error(), bad[i].msg);
    }
    int64_t d1 = 4;
    ferry_tensor *ints;
    ASSERT_OK(ferry_tensor_create(rt, FERRY_DTYPE_INT32, 1, &d1, &ints));
    ASSERT_EQ(ferry_image_augment(rt, ints, NULL, 1, &none), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "the image is int32 of rank 1");
    ferry_tensor_unref(ints);
    /* five channels: not an image (and resize, which takes any number, keeps a constant) */
    uint8_t five[6 * 7 * 5];
    memset(five, 9, sizeof five);
    ferry_tensor *img5 = image_of(rt, 6, 7, 5, five), *r5;
    ASSERT_EQ(ferry_image_augment(rt, img5, &(ferry_image_augment_options){.dtype = FERRY_DTYPE_FLOAT32}, 1, &none),
              FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "the image has 5 channels; an image has 1 to 4");
    ASSERT_OK(ferry_image_resize(rt, img5, 3, 11, NULL, &r5));
    for (size_t i = 0; i < ferry_tensor_nbytes(r5); i++) ASSERT_EQ(((const uint8_t *)ferry_tensor_data(r5))[i], 9);
    ferry_tensor_unref(r5);
    ferry_tensor_unref(img5);
    ferry_tensor_unref(img);
    rt_done(rt);
}

#ifdef HAVE_CODECS
static ferry_tensor *bytes_of(ferry_runtime *rt, const buf *b) {
    const void *p = b->p;
    ferry_tensor *t;
    ASSERT_OK(ferry_tensor_create_bytes(rt, 0, NULL, &p, &b->n, &t));
    return t;
}

/* mean and largest absolute difference of two uint8 tensors of one shape */
static void diff(const ferry_tensor *a, const ferry_tensor *b, double *mean, int *max) {
    ASSERT_EQ(ferry_tensor_nbytes(a), ferry_tensor_nbytes(b));
    const uint8_t *p = ferry_tensor_data(a), *q = ferry_tensor_data(b);
    size_t n = ferry_tensor_nbytes(a);
    double sum = 0;
    *max = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)p[i] - (int)q[i]);
        sum += d;
        *max = d > *max ? d : *max;
    }
    *mean = sum / (double)n;
}

TEST(decoding_only_the_box_matches_decoding_it_whole) {
    ferry_runtime *rt = rt_new();
    int w = 400, h = 300;
    uint8_t *px = malloc((size_t)w * h * 3);
    smooth(px, w, h, 3);
    buf j = jpeg_encode(px, w, h, 3, 92);
    ferry_tensor *enc = bytes_of(rt, &j);
    /* boxes under twice the output: no DCT scaling, the window decode's tolerance (edge columns);
       boxes over twice: a scaled decode, resampled from fewer pixels */
    struct {
        int out;
        double scale_min, scale_max, mean_tol;
        int max_tol;
    } cases[] = {{160, 0.3, 0.6, 0.05, 8}, {48, 0.3, 1.0, 1.2, 12}};
    for (int ci = 0; ci < 2; ci++) {
        double worst_mean = 0;
        int worst_max = 0;
        for (uint64_t s = 0; s < 30; s++) {
            ferry_image_augment_options o = {.crop = FERRY_IMAGE_CROP_RANDOM_RESIZED,
                                             .height = cases[ci].out,
                                             .width = cases[ci].out,
                                             .scale_min = cases[ci].scale_min,
                                             .scale_max = cases[ci].scale_max,
                                             .flip = 0.5};
            ferry_tensor *part = augment(rt, enc, &o, s);
            o.decode_whole = true;
            ferry_tensor *whole = augment(rt, enc, &o, s);
            ASSERT_EQ(ferry_tensor_dim(part, 0), cases[ci].out);
            ASSERT_EQ(ferry_tensor_dim(part, 2), 3);
            double mean;
            int max;
            diff(part, whole, &mean, &max);
            if (mean > cases[ci].mean_tol || max > cases[ci].max_tol)
                FAILF("case %d seed %llu: mean difference %.3f, largest %d (tolerances %.1f, %d)", ci,
                      (unsigned long long)s, mean, max, cases[ci].mean_tol, cases[ci].max_tol);
            worst_mean = mean > worst_mean ? mean : worst_mean;
            worst_max = max > worst_max ? max : worst_max;
            ferry_tensor_unref(part);
            ferry_tensor_unref(whole);
        }
        fprintf(stderr, "decode-and-crop vs whole, output %d: worst mean difference %.3f, largest %d\n", cases[ci].out,
                worst_mean, worst_max);
    }
    /* the whole decode path is the decode, cut and resized */
    ferry_image_augment_options o = {
        .crop = FERRY_IMAGE_CROP_RANDOM_RESIZED, .height = 64, .width = 64, .decode_whole = true};
    ferry_tensor *dec, *got = augment(rt, enc, &o, 3), *want;
    ASSERT_OK(ferry_image_decode(rt, j.p, j.n, NULL, &dec));
    ferry_image_window b;
    ASSERT_OK(ferry_image_random_resized_crop_window(h, w, &o, 3, &b));
    ferry_tensor *box = cut(rt, dec, b);
    ASSERT_OK(ferry_image_resize(rt, box, 64, 64, NULL, &want));
    ASSERT(same_pixels(got, want));
    ferry_tensor_unref(box);
    ferry_tensor_unref(want);
    ferry_tensor_unref(got);
    ferry_tensor_unref(dec);
    /* cut short below the window: still an error (the rest is read when the data does not end
       with the end-of-image marker), for any box */
    buf cut6 = {j.p, j.n * 6 / 10};
    ferry_tensor *short6 = bytes_of(rt, &cut6), *top;
    int rc6 = ferry_image_decode_window(rt, cut6.p, cut6.n, &(ferry_image_window){0, 0, 16, 16}, NULL, &top);
    ASSERT(rc6 == FERRY_ETRUNCATED || rc6 == FERRY_ECORRUPT);
    ASSERT(top == NULL);
    for (uint64_t s = 0; s < 50; s++) {
        ferry_tensor *none6;
        ferry_image_augment_options o6 = {
            .crop = FERRY_IMAGE_CROP_RANDOM_RESIZED, .height = 32, .width = 32, .scale_min = 0.08, .scale_max = 0.1};
        int r = ferry_image_augment(rt, short6, &o6, s, &none6);
        ASSERT(r == FERRY_ETRUNCATED || r == FERRY_ECORRUPT);
    }
    ferry_tensor_unref(short6);
    ASSERT_OK(ferry_image_decode_window(rt, j.p, j.n, &(ferry_image_window){0, 0, 16, 16}, NULL, &top));
    ferry_tensor_unref(top);
    /* damaged data: the decoder's reason */
    buf cutj = {j.p, j.n / 2};
    ferry_tensor *half = bytes_of(rt, &cutj), *none;
    int rc = ferry_image_augment(
        rt, half, &(ferry_image_augment_options){.crop = FERRY_IMAGE_CROP_RANDOM_RESIZED, .height = 32, .width = 32}, 1,
        &none);
    ASSERT(rc == FERRY_ETRUNCATED || rc == FERRY_ECORRUPT);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_image_augment: JPEG: ");
    ferry_tensor_unref(half);
    ferry_tensor_unref(enc);
    free(j.p);
    free(px);
    rt_done(rt);
}

/* The first stop_after positions of the pipeline as bytes, in order: "#;" then the pixels and
 * the label for an element, "E<code>;" for an error. */
static char *drain(ferry_iterator *it, size_t stop_after, size_t *len) {
    size_t cap = 1 << 20, n = 0;
    char *out = malloc(cap);
    ferry_element *e;
    int rc;
    size_t pos = 0;
    while (pos < stop_after && (rc = ferry_iterator_next(it, &e)) != FERRY_END) {
        char head[64];
        int hn;
        const ferry_tensor *t = rc ? NULL : ferry_element_get(e, 0);
        hn = rc ? snprintf(head, sizeof head, "E%d;", rc) : snprintf(head, sizeof head, "#;");
        size_t need = (size_t)hn + (t ? ferry_tensor_nbytes(t) + 8 : 0);
        while (n + need > cap) out = realloc(out, cap *= 2);
        memcpy(out + n, head, (size_t)hn);
        n += (size_t)hn;
        if (t) {
            memcpy(out + n, ferry_tensor_data(t), ferry_tensor_nbytes(t));
            n += ferry_tensor_nbytes(t);
            int64_t label = *(const int64_t *)ferry_tensor_data(ferry_element_get(e, 1));
            memcpy(out + n, &label, 8);
            n += 8;
            ferry_element_free(e);
        }
        pos++;
    }
    *len = n;
    return out;
}

TEST(the_map_is_the_same_on_any_thread_count_and_after_restore) {
    ferry_runtime *rt = rt_new();
    enum { N = 40 };
    buf imgs[4];
    for (int i = 0; i < 4; i++) {
        int w = 96 + 32 * i, h = 80 + 16 * i;
        uint8_t *px = malloc((size_t)w * h * 3);
        smooth(px, w, h, 3);
        imgs[i] = jpeg_encode(px, w, h, 3, 85);
        free(px);
    }
    const void *ptrs[N];
    size_t lens[N];
    int64_t labels[N], n = N;
    for (int i = 0; i < N; i++) ptrs[i] = imgs[i % 4].p, lens[i] = imgs[i % 4].n, labels[i] = i;
    lens[0] = 10;       /* the first element is damaged */
    ptrs[N - 1] = "xx"; /* and the last is not an image */
    lens[N - 1] = 2;
    ferry_tensor *t[2];
    ASSERT_OK(ferry_tensor_create_bytes(rt, 1, &n, ptrs, lens, &t[0]));
    ASSERT_OK(ferry_tensor_create(rt, FERRY_DTYPE_INT64, 1, &n, &t[1]));
    memcpy(ferry_tensor_mutable_data(t[1]), labels, sizeof labels);
    char *want = NULL;
    size_t want_len = 0;
    int threads[] = {0, 2, 8};
    for (int ti = 0; ti < 3; ti++) {
        ferry_dataset *ds;
        ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 2, t, NULL, &ds));
        ferry_image_augment_options o = {.crop = FERRY_IMAGE_CROP_RANDOM_RESIZED,
                                         .height = 32,
                                         .width = 32,
                                         .flip = 0.5,
                                         .brightness = 0.4,
                                         .contrast = 0.4,
                                         .dtype = FERRY_DTYPE_FLOAT32,
                                         .chw = true,
                                         .mean = {0.485f, 0.456f, 0.406f},
                                         .std = {0.229f, 0.224f, 0.225f},
                                         .num_parallel_calls = threads[ti]};
        CHAIN(ds, ferry_dataset_image_augment(ds, &o, OUT));
        ASSERT(strcmp(ferry_dataset_name(ds), "image_augment") == 0);
        ferry_tensor_spec spec;
        ASSERT_OK(ferry_dataset_component_spec(ds, 0, &spec));
        ASSERT(spec.dtype == FERRY_DTYPE_FLOAT32 && spec.shape.rank == 3 && spec.shape.dims[1] == 32 &&
               spec.shape.dims[2] == 32 && spec.shape.dims[0] == FERRY_UNKNOWN_DIM);
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(ds, &(ferry_iterator_options){.seed = 11}, &it));
        size_t len;
        char *got = drain(it, SIZE_MAX, &len);
        ferry_iterator_free(it);
        ASSERT_STR_CONTAINS(got, "E"); /* errors are in the stream */
        if (!want) {
            want = got, want_len = len;
            ASSERT(len > 30 * 32 * 32 * 3 * 4);
            ASSERT(memcmp(got, "E", 1) == 0); /* position 0 failed */
        } else {
            ASSERT_EQ(len, want_len);
            ASSERT(memcmp(got, want, len) == 0);
            free(got);
        }
        /* stopped after 17 elements, saved, restored: the rest as uninterrupted */
        ASSERT_OK(ferry_iterator_create(ds, &(ferry_iterator_options){.seed = 11}, &it));
        size_t first_len;
        char *first = drain(it, 17, &first_len);
        ferry_blob *state;
        ASSERT_OK(ferry_iterator_save(it, &state));
        ferry_iterator_free(it);
        ASSERT_OK(ferry_iterator_restore(ds, ferry_blob_data(state), ferry_blob_size(state),
                                         &(ferry_iterator_options){.seed = 11}, &it));
        ferry_blob_free(state);
        size_t rest_len;
        char *rest = drain(it, SIZE_MAX, &rest_len);
        ferry_iterator_free(it);
        ASSERT(first_len < want_len && memcmp(first, want, first_len) == 0);
        ASSERT_EQ(first_len + rest_len, want_len);
        ASSERT(memcmp(rest, want + first_len, rest_len) == 0);
        free(first);
        free(rest);
        ferry_dataset_unref(ds);
    }
    /* the errors name their element and the decoder's reason */
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 2, t, NULL, &ds));
    CHAIN(ds, ferry_dataset_image_augment(ds, &(ferry_image_augment_options){.height = 8, .width = 8}, OUT));
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    ferry_element *e;
    int rc = ferry_iterator_next(it, &e);
    ASSERT(rc == FERRY_ETRUNCATED || rc == FERRY_ECORRUPT);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "image_augment: element 0: JPEG: ");
    for (int i = 1; i < N - 1; i++) {
        ASSERT_OK(ferry_iterator_next(it, &e));
        ASSERT_EQ(*(const int64_t *)ferry_tensor_data(ferry_element_get(e, 1)), i);
        ferry_element_free(e);
    }
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_EUNSUPPORTED);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "image_augment: element 39: not a JPEG or PNG image");
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
    ferry_iterator_free(it);
    /* bad arguments */
    ferry_dataset *out = NULL;
    ASSERT_EQ(ferry_dataset_image_augment(ds, &(ferry_image_augment_options){.component = 1}, &out), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "component 1 is declared int64 of rank 0");
    ASSERT_EQ(ferry_dataset_image_augment(ds, &(ferry_image_augment_options){.component = 3}, &out), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "opts->component is 3; the input has 2 components");
    ASSERT_EQ(ferry_dataset_image_augment(ds, &(ferry_image_augment_options){.num_parallel_calls = -9}, &out),
              FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_dataset_image_augment: ferry_dataset_map: ");
    ASSERT(out == NULL);
    ferry_dataset_unref(ds);
    ferry_tensor_unref(t[0]);
    ferry_tensor_unref(t[1]);
    free(want);
    for (int i = 0; i < 4; i++) free(imgs[i].p);
    rt_done(rt);
}
#else
TEST(codecs_missing) { SKIP("libjpeg or libspng headers are not installed"); }
#endif
