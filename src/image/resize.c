/*
 * resize.c - resizing uint8 HWC images: bilinear (antialiased when shrinking, or not) and area.
 *
 * Separable, as Pillow's resampling: per axis, every output index gets a run of input indices and
 * their weights, computed once per call: the kernel (bilinear: the triangle 1 - |x| of support 1;
 * area: the box of support 1/2) centred on the output pixel's centre mapped into the input
 * ((i + 0.5) * scale, half-pixel centres, as torchvision, Pillow and TensorFlow 2), stretched by
 * the scale when shrinking with antialias (so every input pixel contributes), normalised to sum
 * 1. Rows first into a float buffer [H, w, C], then columns into the output, rounded to nearest
 * and clamped. Without antialias, bilinear samples the two nearest input pixels per axis (the
 * classic bilinear; aliasing when shrinking by more than 2).
 */
#include "image/image.h"

#include <math.h>
#include <string.h>

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

int ferry__image_resize_box(ferry_runtime *rt, const uint8_t *src, int64_t h, int64_t w, int64_t c, double by,
                            double bx, double bh, double bw, int64_t oh, int64_t ow, bool area, bool antialias,
                            uint8_t *dst, ferry__status *st) {
    axis ax = {0}, ay = {0};
    float *tmp = NULL;
    int rc = axis_make(rt, w, bx, bw, ow, area, antialias, &ax);
    if (!rc) rc = axis_make(rt, h, by, bh, oh, area, antialias, &ay);
    /* only the input rows the output's rows read go through the row pass */
    int64_t y0 = rc ? 0 : ay.start[0], y1 = rc ? 0 : ay.start[0] + ay.count[0];
    for (int64_t y = 1; !rc && y < oh; y++) {
        if (ay.start[y] < y0) y0 = ay.start[y];
        if (ay.start[y] + ay.count[y] > y1) y1 = ay.start[y] + ay.count[y];
    }
    if (!rc) {
        tmp = ferry__alloc(rt, (size_t)(y1 - y0) * (size_t)ow * (size_t)c * sizeof *tmp);
        if (!tmp) rc = FERRY_ENOMEM;
    }
    if (rc) {
        rc = ferry__fail(st, rc, "resize: allocating its tables for %lld x %lld pixels failed", (long long)oh,
                         (long long)ow);
    } else {
        for (int64_t y = y0; y < y1; y++) /* rows: [y1 - y0, w, c] -> [y1 - y0, ow, c] */
            for (int64_t x = 0; x < ow; x++) {
                const float *wt = ax.w + (size_t)x * (size_t)ax.wmax;
                const uint8_t *s = src + ((size_t)y * (size_t)w + (size_t)ax.start[x]) * (size_t)c;
                float *t = tmp + ((size_t)(y - y0) * (size_t)ow + (size_t)x) * (size_t)c;
                for (int64_t k = 0; k < c; k++) {
                    float acc = 0;
                    for (int j = 0; j < ax.count[x]; j++) acc += wt[j] * (float)s[(size_t)j * (size_t)c + (size_t)k];
                    t[k] = acc;
                }
            }
        size_t line = (size_t)ow * (size_t)c;
        for (int64_t y = 0; y < oh; y++) { /* columns: [y1 - y0, ow, c] -> [oh, ow, c] */
            const float *wt = ay.w + (size_t)y * (size_t)ay.wmax;
            const float *t = tmp + (size_t)(ay.start[y] - y0) * line;
            uint8_t *d = dst + (size_t)y * line;
            for (size_t i = 0; i < line; i++) {
                float acc = 0;
                for (int j = 0; j < ay.count[y]; j++) acc += wt[j] * t[(size_t)j * line + i];
                float v = floorf(acc + 0.5f);
                d[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
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
