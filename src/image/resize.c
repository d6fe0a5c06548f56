/*
 * resize.c - resizing uint8 HWC images: bilinear (antialiased when shrinking, or not) and area.
 *
 * Separable, as Pillow's resampling: per axis, every output index gets a run of input indices and
 * their weights, computed once per call: the kernel (bilinear: the triangle 1 - |x| of support 1;
 * area: the box of support 1/2) centred on the output pixel's centre mapped into the input
 * ((i + 0.5) * scale, half-pixel centres, as torchvision, Pillow and TensorFlow 2), stretched by
 * the scale when shrinking with antialias (so every input pixel contributes), normalised to sum
 * to one. Without antialias, bilinear samples the two nearest input pixels per axis (the classic
 * bilinear; aliasing when shrinking by more than 2).
 *
 * Columns first, per output row: the input rows its kernel covers are summed into a float row
 * over the columns the output reads (contiguous values, which the compiler vectorises); then that
 * row's pixels go through the horizontal kernel (three channels held as four floats, one vector
 * per pixel) and are rounded to nearest and clamped. So the pass that reads pixel by pixel works
 * on the output's rows only, and a box (a crop) reads only its own pixels.
 */
#include "image/image.h"

#include <math.h>
#include <string.h>
#ifdef __SSE4_1__
#include <smmintrin.h>
#endif

typedef struct axis {
    int64_t *start; /* first input index per output index */
    int *count;     /* inputs per output index */
    float *w;       /* out x wmax weights */
    int wmax;
} axis;

static double tri(double x) { return x < 0 ? (x > -1 ? 1 + x : 0) : (x < 1 ? 1 - x : 0); }
static double box(double x) { return x >= -0.5 && x < 0.5 ? 1 : 0; }

/* The axis of an output of `out` pixels from the input run [off, off + len) (fractional) of an
 * input of `in` pixels. */
static int axis_make(ferry_runtime *rt, int64_t in, double off, double len, int64_t out, bool area, bool antialias,
                     axis *a) {
    double scale = len / (double)out;
    double fs = (antialias || area) && scale > 1 ? scale : 1.0;
    double support = (area ? 0.5 : 1.0) * fs;
    a->wmax = (int)ceil(support) * 2 + 1;
    /* the kernel reads only the pixels the run touches: a crop then resized, as torchvision's
       resized crops, not the crop's neighbours */
    int64_t first = (int64_t)floor(off), last = (int64_t)ceil(off + len);
    if (first < 0) first = 0;
    if (last > in) last = in;
    a->start = ferry__calloc(rt, (size_t)out, sizeof *a->start);
    a->count = ferry__calloc(rt, (size_t)out, sizeof *a->count);
    a->w = ferry__calloc(rt, (size_t)out * (size_t)a->wmax, sizeof *a->w);
    if (!a->start || !a->count || !a->w) return FERRY_ENOMEM;
    for (int64_t i = 0; i < out; i++) {
        double center = off + ((double)i + 0.5) * scale;
        int64_t lo = (int64_t)floor(center - support + 0.5), hi = (int64_t)floor(center + support + 0.5);
        if (lo < first) lo = first;
        if (hi > last) hi = last;
        if (hi <= lo) { /* the kernel missed every input: the nearest one */
            lo = (int64_t)floor(center);
            if (lo > last - 1) lo = last - 1;
            if (lo < first) lo = first;
            hi = lo + 1;
        }
        if (hi - lo > a->wmax) hi = lo + a->wmax;
        double sum = 0;
        float *w = a->w + (size_t)i * (size_t)a->wmax;
        int n = (int)(hi - lo);
        for (int k = 0; k < n; k++) {
            double x = ((double)(lo + k) + 0.5 - center) / fs;
            double v = area ? box(x) : tri(x);
            w[k] = (float)v;
            sum += v;
        }
        if (sum <= 0) { /* at the edge with a box exactly between samples: take the nearest */
            for (int k = 0; k < n; k++) w[k] = 0;
            int64_t near = (int64_t)floor(center);
            if (near > hi - 1) near = hi - 1;
            if (near < lo) near = lo;
            w[near - lo < n ? near - lo : 0] = 1;
            sum = 1;
        }
        for (int k = 0; k < n; k++) w[k] = (float)(w[k] / sum);
        a->start[i] = lo;
        a->count[i] = n;
    }
    return FERRY_OK;
}

static void axis_free(ferry_runtime *rt, axis *a) {
    ferry__free(rt, a->start);
    ferry__free(rt, a->count);
    ferry__free(rt, a->w);
}

/* Four floats: one pixel of three or four channels (GCC's and Clang's vector extension, which
 * compiles to one SSE register and its instructions). */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

/* One output row from the float row t (pixels of c4 floats, c of them used) through ax. */
static void row_pass(const axis *ax, const float *t, int64_t first, int64_t ow, int64_t c, int64_t c4, uint8_t *d) {
    if (c4 == 4) {
        const v4f half = {0.5f, 0.5f, 0.5f, 0.5f};
        for (int64_t x = 0; x < ow; x++) {
            const float *wt = ax->w + (size_t)x * (size_t)ax->wmax;
            const float *s = t + (size_t)(ax->start[x] - first) * 4;
            v4f acc = half;
            for (int j = 0; j < ax->count[x]; j++) {
                v4f px;
                memcpy(&px, s + (size_t)j * 4, sizeof px);
                acc += wt[j] * px;
            }
#ifdef __SSE4_1__
            /* truncated (acc + 0.5 rounded down), then packed to bytes with saturation: the clamp
               to [0, 255]; four bytes stored at once, the fourth overwritten by the next pixel
               (the row's last pixel byte by byte: nothing past the row is written) */
            __m128i q = _mm_cvttps_epi32((__m128)acc);
            q = _mm_packus_epi16(_mm_packus_epi32(q, q), q);
            uint32_t word = (uint32_t)_mm_cvtsi128_si32(q);
            if (c == 4 || x + 1 < ow) memcpy(d + x * c, &word, 4);
            else
                for (int64_t k = 0; k < c; k++) d[x * c + k] = (uint8_t)(word >> (8 * k));
#else
            const v4f zero = {0, 0, 0, 0}, top = {255, 255, 255, 255};
            v4i over = acc > top; /* lane-wise clamps: a comparison gives all-ones lanes */
            acc = (v4f)(((v4i)acc & (acc > zero) & ~over) | ((v4i)top & over));
            v4i q = __builtin_convertvector(acc, v4i); /* truncation: acc + 0.5 rounded down */
            for (int64_t k = 0; k < c; k++) d[x * c + k] = (uint8_t)q[k];
#endif
        }
        return;
    }
    for (int64_t x = 0; x < ow; x++) {
        const float *wt = ax->w + (size_t)x * (size_t)ax->wmax;
        const float *s = t + (size_t)(ax->start[x] - first) * (size_t)c;
        for (int64_t k = 0; k < c; k++) { /* any number of channels, one at a time */
            float acc = 0.5f;
            for (int j = 0; j < ax->count[x]; j++) acc += wt[j] * s[(size_t)j * (size_t)c + (size_t)k];
            d[x * c + k] = (uint8_t)(acc < 0 ? 0 : acc > 255 ? 255 : acc);
        }
    }
}

int ferry__image_resize_box(ferry_runtime *rt, const uint8_t *src, int64_t h, int64_t w, int64_t c, double by,
                            double bx, double bh, double bw, int64_t oh, int64_t ow, bool area, bool antialias,
                            uint8_t *dst, ferry__status *st) {
    axis ax = {0}, ay = {0};
    float *tmp = NULL;
    int rc = axis_make(rt, w, bx, bw, ow, area, antialias, &ax);
    if (!rc) rc = axis_make(rt, h, by, bh, oh, area, antialias, &ay);
    /* the input columns the output's columns read */
    int64_t x0 = rc ? 0 : ax.start[0], x1 = rc ? 0 : ax.start[0] + ax.count[0];
    for (int64_t x = 1; !rc && x < ow; x++) {
        if (ax.start[x] < x0) x0 = ax.start[x];
        if (ax.start[x] + ax.count[x] > x1) x1 = ax.start[x] + ax.count[x];
    }
    /* three channels are kept as four floats, so that a pixel is one vector */
    int64_t c4 = c == 3 ? 4 : c;
    size_t span = (size_t)(x1 - x0) * (size_t)c, tline = (size_t)(x1 - x0) * (size_t)c4;
    if (!rc) {
        tmp = ferry__alloc(rt, (span + tline) * sizeof *tmp);
        if (!tmp) rc = FERRY_ENOMEM;
    }
    if (rc) {
        rc = ferry__fail(st, rc, "resize: allocating its tables for %lld x %lld pixels failed", (long long)oh,
                         (long long)ow);
    } else {
        /* columns first, over contiguous runs of values (vectorised), then rows: the pass that
           reads pixel by pixel works on the output's rows only */
        float *acc = tmp, *t = tmp + span;
        size_t stride = (size_t)w * (size_t)c;
        for (int64_t y = 0; y < oh; y++) {
            const float *wt = ay.w + (size_t)y * (size_t)ay.wmax;
            const uint8_t *s0 = src + (size_t)ay.start[y] * stride + (size_t)x0 * (size_t)c;
            for (size_t i = 0; i < span; i++) acc[i] = 0;
            for (int j = 0; j < ay.count[y]; j++) {
                const uint8_t *s = s0 + (size_t)j * stride;
                float wj = wt[j];
                for (size_t i = 0; i < span; i++) acc[i] += wj * (float)s[i];
            }
            if (c == 3) {
                for (size_t p = 0; p < (size_t)(x1 - x0); p++) {
                    t[4 * p] = acc[3 * p], t[4 * p + 1] = acc[3 * p + 1], t[4 * p + 2] = acc[3 * p + 2];
                    t[4 * p + 3] = 0;
                }
                row_pass(&ax, t, x0, ow, c, c4, dst + (size_t)y * (size_t)ow * (size_t)c);
            } else {
                row_pass(&ax, acc, x0, ow, c, c4, dst + (size_t)y * (size_t)ow * (size_t)c);
            }
        }
    }
    ferry__free(rt, tmp);
    axis_free(rt, &ax);
    axis_free(rt, &ay);
    return rc;
}

static int image_resize(ferry_runtime *rt, const ferry_tensor *img, int64_t oh, int64_t ow, bool area, bool antialias,
                        ferry_tensor **out, ferry__status *st) {
    *out = NULL;
    int64_t h = ferry_tensor_dim(img, 0), w = ferry_tensor_dim(img, 1), c = ferry_tensor_dim(img, 2);
    int64_t dims[3] = {oh, ow, c};
    int rc = ferry__tensor_new(rt, FERRY_DTYPE_UINT8, 3, dims, out, st); /* first: its size is checked */
    if (rc) return rc;
    rc = ferry__image_resize_box(rt, ferry_tensor_data(img), h, w, c, 0, 0, (double)h, (double)w, oh, ow, area,
                                 antialias, ferry_tensor_mutable_data(*out), st);
    if (rc) {
        ferry_tensor_unref(*out);
        *out = NULL;
    }
    return rc;
}

int ferry_image_resize(ferry_runtime *rt, const ferry_tensor *image, int64_t height, int64_t width,
                       const ferry_resize_options *opts, ferry_tensor **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", __func__);
    FERRY__CHECK_ARG(image != NULL, FERRY_EINVAL, "%s: argument 'image' is NULL", __func__);
    FERRY__CHECK_ARG(ferry_tensor_dtype(image) == FERRY_DTYPE_UINT8 && ferry_tensor_rank(image) == 3 &&
                         ferry_tensor_dim(image, 0) > 0 && ferry_tensor_dim(image, 1) > 0 &&
                         ferry_tensor_dim(image, 2) > 0,
                     FERRY_EINVAL,
                     "%s: argument 'image' is %s of rank %d; it must be uint8 [height, width, channels], "
                     "none of them 0",
                     __func__, ferry_dtype_name(ferry_tensor_dtype(image)), ferry_tensor_rank(image));
    FERRY__CHECK_ARG(height >= 1 && height <= (1 << 24) && width >= 1 && width <= (1 << 24), FERRY_EINVAL,
                     "%s: the size %lld x %lld is outside 1 to 2^24 on a side", __func__, (long long)height,
                     (long long)width);
    ferry_resize_options o = {0};
    if (opts) o = *opts;
    FERRY__CHECK_ARG(o.method == FERRY_RESIZE_BILINEAR || o.method == FERRY_RESIZE_AREA, FERRY_EINVAL,
                     "%s: opts->method is %d; it must be FERRY_RESIZE_BILINEAR or FERRY_RESIZE_AREA", __func__,
                     (int)o.method);
    ferry__status st;
    int rc = image_resize(rt, image, height, width, o.method == FERRY_RESIZE_AREA, !o.no_antialias, out, &st);
    if (rc) return ferry__set_last_error(rc, "%s: %s", __func__, st.msg);
    return FERRY_OK;
}
