/*
 * augment.c - image augmentation in one pass per step: crop (centre, random with padding, random
 * resized), flips, brightness and contrast, and the output's dtype, normalisation and layout; as
 * a direct call (ferry_image_augment) and as a map (ferry_dataset_image_augment).
 *
 * Random numbers come from one generator per image, seeded by the caller (the map seeds it with
 * the element's first ferry_context_random draw), drawn in a fixed order: the crop's, then the
 * flips', then brightness's and contrast's, each only when its step is on. So an element gets
 * the same augmentation on any thread and after save/restore.
 *
 * Random resized crop from a JPEG decodes only the box: once the header is read (the decoder
 * calls plan_box with the image's size), the box is drawn, the DCT scale chosen and the window
 * set to the box's pixels at that scale, rounded outwards; the resize then reads the exact
 * (fractional) box inside the window, so the geometry is the same as a whole decode's. A PNG, a
 * decoded input or decode_whole decode the whole image and resize the box from it.
 *
 * The last step reads the cropped (and resized) uint8 pixels once and writes the output: flips
 * are the order it reads them in (a row backwards, the rows bottom up), brightness, contrast,
 * normalisation and the dtype are one lookup per value (a table per channel of what each of the
 * 256 values becomes), and a window that leaves the image (padding, a centre crop larger than
 * the image) reads zeros.
 */
#include "image/image.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#define AUG_ATTEMPTS 10

/* The options, checked and with their defaults filled in. */
typedef struct aug {
    ferry__image_req req; /* decoding an encoded input */
    ferry_image_crop crop;
    int64_t height, width;
    double scale_min, scale_max, log_ratio_min, log_ratio_max, ratio_min, ratio_max;
    bool decode_whole;
    int64_t padding;
    bool area, antialias;
    double flip, vflip, brightness, contrast;
    ferry_dtype dtype;
    bool chw;
    float mean[4], inv_std[4];
} aug;

/* ---- options --------------------------------------------------------------------------------- */
static int aug_make(const char *fn, const ferry_image_augment_options *opts, aug *a) {
    ferry_image_augment_options o = {0};
    if (opts) o = *opts;
    memset(a, 0, sizeof *a);
    int rc = ferry__image_req_make(fn, o.channels, o.max_pixels, &a->req);
    if (rc) return rc;
    FERRY__CHECK_ARG(o.crop >= FERRY_IMAGE_CROP_NONE && o.crop <= FERRY_IMAGE_CROP_RANDOM_RESIZED, FERRY_EINVAL,
                     "%s: opts->crop is %d; it must be one of FERRY_IMAGE_CROP_NONE, _CENTER, _RANDOM, "
                     "_RANDOM_RESIZED",
                     fn, (int)o.crop);
    if (o.crop == FERRY_IMAGE_CROP_NONE)
        FERRY__CHECK_ARG((o.height == 0 && o.width == 0) || (o.height >= 1 && o.width >= 1), FERRY_EINVAL,
                         "%s: opts->height and width are %lld and %lld; with FERRY_IMAGE_CROP_NONE give both (>= "
                         "1) or neither",
                         fn, (long long)o.height, (long long)o.width);
    else
        FERRY__CHECK_ARG(o.height >= 1 && o.width >= 1, FERRY_EINVAL,
                         "%s: opts->height and width are %lld and %lld; a crop needs both >= 1", fn,
                         (long long)o.height, (long long)o.width);
    FERRY__CHECK_ARG(o.height <= (1 << 24) && o.width <= (1 << 24), FERRY_EINVAL,
                     "%s: the size %lld x %lld is over 2^24 on a side", fn, (long long)o.height, (long long)o.width);
    if (o.scale_min == 0 && o.scale_max == 0) o.scale_min = 0.08, o.scale_max = 1.0;
    if (o.ratio_min == 0 && o.ratio_max == 0) o.ratio_min = 3.0 / 4.0, o.ratio_max = 4.0 / 3.0;
    FERRY__CHECK_ARG(o.scale_min > 0 && o.scale_min <= o.scale_max && o.scale_max <= 1, FERRY_EINVAL,
                     "%s: opts->scale_min and scale_max are %g and %g; they must be 0 < min <= max <= 1", fn,
                     o.scale_min, o.scale_max);
    FERRY__CHECK_ARG(o.ratio_min > 0 && o.ratio_min <= o.ratio_max && isfinite(o.ratio_max), FERRY_EINVAL,
                     "%s: opts->ratio_min and ratio_max are %g and %g; they must be 0 < min <= max", fn, o.ratio_min,
                     o.ratio_max);
    FERRY__CHECK_ARG(o.padding >= 0 && o.padding <= (1 << 24), FERRY_EINVAL,
                     "%s: opts->padding is %lld; it must be 0 to 2^24", fn, (long long)o.padding);
    FERRY__CHECK_ARG(o.resize == FERRY_RESIZE_BILINEAR || o.resize == FERRY_RESIZE_AREA, FERRY_EINVAL,
                     "%s: opts->resize is %d; it must be FERRY_RESIZE_BILINEAR or FERRY_RESIZE_AREA", fn,
                     (int)o.resize);
    FERRY__CHECK_ARG(o.flip >= 0 && o.flip <= 1 && o.vertical_flip >= 0 && o.vertical_flip <= 1, FERRY_EINVAL,
                     "%s: opts->flip and vertical_flip are %g and %g; probabilities are in [0, 1]", fn, o.flip,
                     o.vertical_flip);
    FERRY__CHECK_ARG(o.brightness >= 0 && o.contrast >= 0 && isfinite(o.brightness) && isfinite(o.contrast),
                     FERRY_EINVAL, "%s: opts->brightness and contrast are %g and %g; they must be >= 0", fn,
                     o.brightness, o.contrast);
    if (o.dtype == FERRY_DTYPE_INVALID) o.dtype = FERRY_DTYPE_UINT8;
    FERRY__CHECK_ARG(o.dtype == FERRY_DTYPE_UINT8 || o.dtype == FERRY_DTYPE_FLOAT32 || o.dtype == FERRY_DTYPE_FLOAT16 ||
                         o.dtype == FERRY_DTYPE_BFLOAT16,
                     FERRY_EINVAL, "%s: opts->dtype is %s; it must be uint8, float32, float16 or bfloat16", fn,
                     ferry_dtype_name(o.dtype));
    for (int k = 0; k < 4; k++) {
        FERRY__CHECK_ARG(o.std[k] >= 0 && isfinite(o.std[k]) && isfinite(o.mean[k]), FERRY_EINVAL,
                         "%s: opts->mean[%d] and std[%d] are %g and %g; std must be >= 0 (0 means 1)", fn, k, k,
                         (double)o.mean[k], (double)o.std[k]);
        a->mean[k] = o.mean[k];
        a->inv_std[k] = o.std[k] > 0 ? 1.0f / o.std[k] : 1.0f;
    }
    a->crop = o.crop;
    a->height = o.height, a->width = o.width;
    a->scale_min = o.scale_min, a->scale_max = o.scale_max;
    a->ratio_min = o.ratio_min, a->ratio_max = o.ratio_max;
    a->log_ratio_min = log(o.ratio_min), a->log_ratio_max = log(o.ratio_max);
    a->decode_whole = o.decode_whole;
    a->padding = o.padding;
    a->area = o.resize == FERRY_RESIZE_AREA;
    a->antialias = true;
    a->flip = o.flip, a->vflip = o.vertical_flip;
    a->brightness = o.brightness, a->contrast = o.contrast;
    a->dtype = o.dtype;
    a->chw = o.chw;
    return FERRY_OK;
}

/* ---- the random resized crop's box ------------------------------------------------------------ */
static double uniform_in(ferry__rng *r, double lo, double hi) { return lo + (hi - lo) * ferry__rng_uniform(r); }

/* torchvision's RandomResizedCrop.get_params: up to 10 draws of area and log-ratio, the first
 * box that fits placed uniformly; else the central box with the ratio clamped to the range. */
static ferry_image_window rrc_box(const aug *a, ferry__rng *r, int64_t h, int64_t w) {
    double area = (double)h * (double)w;
    for (int i = 0; i < AUG_ATTEMPTS; i++) {
        double target = area * uniform_in(r, a->scale_min, a->scale_max);
        double ratio = exp(uniform_in(r, a->log_ratio_min, a->log_ratio_max));
        /* Python's round: halves to even (nearbyint in the default rounding mode) */
        int64_t bw = (int64_t)nearbyint(sqrt(target * ratio)), bh = (int64_t)nearbyint(sqrt(target / ratio));
        if (bw > 0 && bw <= w && bh > 0 && bh <= h) {
            int64_t y = (int64_t)ferry__rng_below(r, (uint64_t)(h - bh + 1));
            int64_t x = (int64_t)ferry__rng_below(r, (uint64_t)(w - bw + 1));
            return (ferry_image_window){y, x, bh, bw};
        }
    }
    double in_ratio = (double)w / (double)h;
    int64_t bw = w, bh = h;
    if (in_ratio < a->ratio_min) bh = (int64_t)nearbyint((double)w / a->ratio_min);
    else if (in_ratio > a->ratio_max) bw = (int64_t)nearbyint((double)h * a->ratio_max);
    if (bh < 1) bh = 1;
    if (bw < 1) bw = 1;
    if (bh > h) bh = h;
    if (bw > w) bw = w;
    return (ferry_image_window){(h - bh) / 2, (w - bw) / 2, bh, bw};
}

int ferry_image_random_resized_crop_window(int64_t height, int64_t width, const ferry_image_augment_options *opts,
                                           uint64_t seed, ferry_image_window *window) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(window != NULL, FERRY_EINVAL, "%s: argument 'window' is NULL", __func__);
    memset(window, 0, sizeof *window);
    FERRY__CHECK_ARG(height >= 1 && width >= 1, FERRY_EINVAL, "%s: the image is %lld x %lld; both must be >= 1",
                     __func__, (long long)height, (long long)width);
    ferry_image_augment_options o = {0};
    if (opts) o = *opts;
    o.crop = FERRY_IMAGE_CROP_RANDOM_RESIZED, o.height = o.width = 1; /* only the ranges matter */
    aug a;
    int rc = aug_make(__func__, &o, &a);
    if (rc) return rc;
    ferry__rng r;
    ferry__rng_seed(&r, seed);
    *window = rrc_box(&a, &r, height, width);
    return FERRY_OK;
}

/* ---- decoding only the box ---------------------------------------------------------------------- */
typedef struct box_plan {
    const aug *a;
    ferry__rng *rng;
    double by, bx, bh, bw; /* the box inside the decoded window, in its pixels */
} box_plan;

static int64_t scaled(int64_t v, int n) { return (v * n + 7) / 8; } /* libjpeg's output size at n/8 */

/* Draws the box in the image's own pixels, picks the DCT scale n/8 (the smallest that keeps the
 * box at least the output's size, when it is at least twice that) and sets the window to the
 * box's pixels at that scale, rounded outwards. */
static int plan_box(void *arg, int64_t w, int64_t h, ferry__image_req *req, ferry__status *st) {
    (void)st;
    box_plan *p = arg;
    ferry_image_window b = rrc_box(p->a, p->rng, h, w);
    int n = 8;
    if (b.height >= 2 * p->a->height && b.width >= 2 * p->a->width)
        for (n = 1; n < 8; n++)
            if ((double)b.height * n >= 8.0 * (double)p->a->height && (double)b.width * n >= 8.0 * (double)p->a->width)
                break;
    double f = n / 8.0, fy0 = (double)b.y * f, fx0 = (double)b.x * f;
    double fy1 = (double)(b.y + b.height) * f, fx1 = (double)(b.x + b.width) * f;
    int64_t sh = scaled(h, n), sw = scaled(w, n);
    int64_t y0 = (int64_t)floor(fy0), x0 = (int64_t)floor(fx0);
    int64_t y1 = (int64_t)ceil(fy1), x1 = (int64_t)ceil(fx1);
    if (y1 > sh) y1 = sh;
    if (x1 > sw) x1 = sw;
    if (y1 <= y0) y1 = y0 + 1;
    if (x1 <= x0) x1 = x0 + 1;
    req->crop = true;
    req->scale = n;
    req->y = y0, req->x = x0, req->height = y1 - y0, req->width = x1 - x0;
    p->by = fy0 - (double)y0, p->bx = fx0 - (double)x0;
    p->bh = fy1 - fy0, p->bw = fx1 - fx0;
    return FERRY_OK;
}

/* ---- the last step: flips, colour, dtype and layout ------------------------------------------- */
static uint16_t to_f16(float f) { /* IEEE binary16, rounded to nearest even */
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, e = (x >> 23) & 0xffu, m = x & 0x7fffffu;
    if (e == 0xff) return (uint16_t)(sign | 0x7c00u | (m ? 0x200u : 0));
    int32_t ne = (int32_t)e - 127 + 15;
    if (ne >= 31) return (uint16_t)(sign | 0x7c00u);
    if (ne <= 0) { /* subnormal or zero */
        if (ne < -10) return (uint16_t)sign;
        m |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - ne), hm = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (hm & 1))) hm++;
        return (uint16_t)(sign | hm);
    }
    uint32_t hm = m >> 13, rem = m & 0x1fffu, hv = sign | ((uint32_t)ne << 10) | hm;
    if (rem > 0x1000u || (rem == 0x1000u && (hm & 1))) hv++; /* a carry into the exponent is right */
    return (uint16_t)hv;
}

static uint16_t to_bf16(float f) { /* the high half of binary32, rounded to nearest even */
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* NaN stays NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

/* What the last step reads: rows [oy, oy + oh) and columns [ox, ox + ow) of src [sh, sw, c],
 * zeros outside it. */
typedef struct view {
    const uint8_t *src;
    int64_t sh, sw, c, oy, ox, oh, ow;
} view;

static bool is_alpha(int64_t c, int64_t k) { return (c == 2 && k == 1) || (c == 4 && k == 3); }

static inline float clamp255(float v) { return v < 0 ? 0 : v > 255 ? 255 : v; }

/* Row y of the view (upside down with fy) as c-value pixels: a pointer into src when the row is
 * inside it, else the row gathered into line with zeros where it leaves the image. */
static const uint8_t *view_row(const view *v, int64_t y, bool fy, uint8_t *line) {
    int64_t c = v->c, sy = v->oy + (fy ? v->oh - 1 - y : y);
    size_t n = (size_t)v->ow * (size_t)c;
    if (sy < 0 || sy >= v->sh) {
        memset(line, 0, n);
        return line;
    }
    const uint8_t *row = v->src + (size_t)sy * (size_t)v->sw * (size_t)c;
    if (v->ox >= 0 && v->ox + v->ow <= v->sw) return row + (size_t)v->ox * (size_t)c;
    /* columns [x0, x1) of the output are inside the image; zeros either side */
    int64_t x0 = v->ox < 0 ? -v->ox : 0, x1 = v->sw - v->ox < v->ow ? v->sw - v->ox : v->ow;
    memset(line, 0, n);
    if (x1 > x0)
        memcpy(line + (size_t)x0 * (size_t)c, row + (size_t)(v->ox + x0) * (size_t)c, (size_t)(x1 - x0) * (size_t)c);
    return line;
}

/* The mean luma of the view after brightness (contrast's centre). */
static float mean_luma(const view *v, float bright, uint8_t *line) {
    double sum = 0;
    for (int64_t y = 0; y < v->oh; y++) {
        const uint8_t *r = view_row(v, y, false, line);
        for (int64_t x = 0; x < v->ow; x++, r += v->c)
            sum += v->c >= 3 ? 0.299f * clamp255(r[0] * bright) + 0.587f * clamp255(r[1] * bright) +
                                   0.114f * clamp255(r[2] * bright)
                             : clamp255(r[0] * bright);
    }
    return (float)(sum / ((double)v->oh * (double)v->ow));
}

/* Colour, normalisation and the dtype depend only on a value and its channel: one table per
 * channel of what each of the 256 values becomes, then every value is a lookup. */
typedef union lut {
    uint8_t u8[4][256];
    uint16_t u16[4][256];
    float f32[4][256];
} lut;

static void lut_fill(const aug *a, int64_t c, float bright, float contrast, float centre, lut *t) {
    for (int64_t k = 0; k < c; k++)
        for (int i = 0; i < 256; i++) {
            float val = (float)i;
            if (!is_alpha(c, k)) {
                if (bright != 1.0f) val = clamp255(val * bright);
                if (contrast != 1.0f) val = clamp255(contrast * val + (1.0f - contrast) * centre);
            }
            float f = (val * (1.0f / 255.0f) - a->mean[k]) * a->inv_std[k];
            switch (a->dtype) {
            case FERRY_DTYPE_UINT8: t->u8[k][i] = (uint8_t)(val + 0.5f); break;
            case FERRY_DTYPE_FLOAT16: t->u16[k][i] = to_f16(f); break;
            case FERRY_DTYPE_BFLOAT16: t->u16[k][i] = to_bf16(f); break;
            default: t->f32[k][i] = f; break;
            }
        }
}

static void finish(const aug *a, const view *v, bool fx, bool fy, const lut *t, uint8_t *line, ferry_tensor *out) {
    int64_t oh = v->oh, ow = v->ow, c = v->c;
    uint8_t *d8 = ferry_tensor_mutable_data(out);
    uint16_t *d16 = (uint16_t *)(void *)d8;
    float *d32 = (float *)(void *)d8;
    size_t plane = (size_t)oh * (size_t)ow;
    for (int64_t y = 0; y < oh; y++) {
        const uint8_t *r = view_row(v, y, fy, line);
        for (int64_t k = 0; k < c; k++) {
            /* HWC: value (x, k) at (y * ow + x) * c + k; CHW: at k * plane + y * ow + x; the
               source read backwards for a left-right flip */
            size_t at =
                a->chw ? (size_t)k * plane + (size_t)y * (size_t)ow : ((size_t)y * (size_t)ow) * (size_t)c + (size_t)k;
            size_t step = a->chw ? 1 : (size_t)c;
            const uint8_t *s = r + k + (fx ? (size_t)(ow - 1) * (size_t)c : 0);
            ptrdiff_t sc = fx ? -(ptrdiff_t)c : (ptrdiff_t)c;
            if (a->dtype == FERRY_DTYPE_UINT8)
                for (int64_t x = 0; x < ow; x++) d8[at + (size_t)x * step] = t->u8[k][s[x * sc]];
            else if (a->dtype == FERRY_DTYPE_FLOAT32)
                for (int64_t x = 0; x < ow; x++) d32[at + (size_t)x * step] = t->f32[k][s[x * sc]];
            else
                for (int64_t x = 0; x < ow; x++) d16[at + (size_t)x * step] = t->u16[k][s[x * sc]];
        }
    }
}

/* ---- one image ----------------------------------------------------------------------------------- */
static int augment(ferry_runtime *rt, const aug *a, const ferry_tensor *image, uint64_t seed, ferry_tensor **out,
                   ferry__status *st) {
    *out = NULL;
    ferry__rng rng;
    ferry__rng_seed(&rng, seed);
    ferry_tensor *decoded = NULL, *resized = NULL;
    const ferry_tensor *img = image;
    int rc = FERRY_OK;
    bool have_box = false;
    uint8_t *line = NULL; /* a row of the output's pixels (view_row) */
    box_plan plan = {.a = a, .rng = &rng};
    if (ferry_tensor_dtype(image) == FERRY_DTYPE_BYTES) {
        const uint8_t *p = NULL;
        size_t n = 0;
        if (ferry_tensor_rank(image) != 0 || ferry_tensor_bytes_get(image, 0, &p, &n) != FERRY_OK)
            return ferry__fail(st, FERRY_EINVAL, "the image is a bytes tensor of rank %d; an encoded image is a scalar",
                               ferry_tensor_rank(image));
        ferry__image_req req = a->req;
        if (a->crop == FERRY_IMAGE_CROP_RANDOM_RESIZED && !a->decode_whole &&
            ferry_image_sniff(p, n) == FERRY_IMAGE_FORMAT_JPEG) {
            req.plan = plan_box, req.plan_arg = &plan;
            have_box = true;
        }
        rc = ferry__image_decode(rt, p, n, &req, &decoded, st);
        if (rc) return rc;
        img = decoded;
    } else if (ferry_tensor_dtype(image) != FERRY_DTYPE_UINT8 || ferry_tensor_rank(image) != 3 ||
               ferry_tensor_dim(image, 0) < 1 || ferry_tensor_dim(image, 1) < 1 || ferry_tensor_dim(image, 2) < 1) {
        return ferry__fail(st, FERRY_EINVAL,
                           "the image is %s of rank %d; it must be an encoded image (a bytes scalar) or uint8 "
                           "[height, width, channels], none of them 0",
                           ferry_dtype_name(ferry_tensor_dtype(image)), ferry_tensor_rank(image));
    } else if (ferry_tensor_dim(image, 2) > 4) {
        return ferry__fail(st, FERRY_EINVAL, "the image has %lld channels; an image has 1 to 4",
                           (long long)ferry_tensor_dim(image, 2));
    }
    int64_t h = ferry_tensor_dim(img, 0), w = ferry_tensor_dim(img, 1), c = ferry_tensor_dim(img, 2);
    view v = {.src = ferry_tensor_data(img), .sh = h, .sw = w, .c = c, .oh = h, .ow = w};

    /* 1. crop */
    if (a->crop == FERRY_IMAGE_CROP_RANDOM_RESIZED || (a->crop == FERRY_IMAGE_CROP_NONE && a->height > 0)) {
        if (!have_box) {
            ferry_image_window b = {0, 0, h, w};
            if (a->crop == FERRY_IMAGE_CROP_RANDOM_RESIZED) b = rrc_box(a, &rng, h, w);
            plan.by = (double)b.y, plan.bx = (double)b.x, plan.bh = (double)b.height, plan.bw = (double)b.width;
        }
        int64_t dims[3] = {a->height, a->width, c};
        rc = ferry__tensor_new(rt, FERRY_DTYPE_UINT8, 3, dims, &resized, st);
        if (!rc)
            rc = ferry__image_resize_box(rt, v.src, h, w, c, plan.by, plan.bx, plan.bh, plan.bw, a->height, a->width,
                                         a->area, a->antialias, ferry_tensor_mutable_data(resized), st);
        if (rc) goto done;
        v = (view){.src = ferry_tensor_data(resized),
                   .sh = a->height,
                   .sw = a->width,
                   .c = c,
                   .oh = a->height,
                   .ow = a->width};
    } else if (a->crop == FERRY_IMAGE_CROP_CENTER) {
        int64_t dy = h - a->height, dx = w - a->width;
        /* torchvision: round((size - crop) / 2), half to even; a larger crop is padded first */
        v.oy = dy >= 0 ? dy / 2 + ((dy & 1) && ((dy / 2) & 1)) : -((-dy) / 2);
        v.ox = dx >= 0 ? dx / 2 + ((dx & 1) && ((dx / 2) & 1)) : -((-dx) / 2);
        v.oh = a->height, v.ow = a->width;
    } else if (a->crop == FERRY_IMAGE_CROP_RANDOM) {
        int64_t ph = h + 2 * a->padding, pw = w + 2 * a->padding;
        if (a->height > ph || a->width > pw) {
            rc = ferry__fail(
                st, FERRY_EINVAL, "the crop of %lld x %lld is larger than the image of %lld x %lld padded by %lld",
                (long long)a->height, (long long)a->width, (long long)h, (long long)w, (long long)a->padding);
            goto done;
        }
        v.oy = (int64_t)ferry__rng_below(&rng, (uint64_t)(ph - a->height + 1)) - a->padding;
        v.ox = (int64_t)ferry__rng_below(&rng, (uint64_t)(pw - a->width + 1)) - a->padding;
        v.oh = a->height, v.ow = a->width;
    }

    /* 2. flips, 3. colour */
    bool fx = a->flip > 0 && ferry__rng_uniform(&rng) < a->flip;
    bool fy = a->vflip > 0 && ferry__rng_uniform(&rng) < a->vflip;
    float bright = 1.0f, contrast = 1.0f, centre = 0;
    if (a->brightness > 0) bright = (float)uniform_in(&rng, fmax(0.0, 1.0 - a->brightness), 1.0 + a->brightness);
    line = ferry__alloc(rt, (size_t)v.ow * (size_t)c);
    if (!line) {
        rc = ferry__fail(st, FERRY_ENOMEM, "allocating a row of %lld pixels failed", (long long)v.ow);
        goto done;
    }
    if (a->contrast > 0) {
        contrast = (float)uniform_in(&rng, fmax(0.0, 1.0 - a->contrast), 1.0 + a->contrast);
        centre = mean_luma(&v, bright, line);
    }

    /* 4. the output; the resized image is it when nothing else changes */
    bool same = !fx && !fy && bright == 1.0f && contrast == 1.0f && a->dtype == FERRY_DTYPE_UINT8 &&
                (!a->chw || c == 1) && v.oy == 0 && v.ox == 0 && v.oh == v.sh && v.ow == v.sw;
    if (same && resized) {
        *out = resized;
        resized = NULL;
        goto done;
    }
    if (same && decoded) {
        *out = decoded;
        decoded = NULL;
        goto done;
    }
    int64_t dims[3] = {v.oh, v.ow, c};
    if (a->chw) dims[0] = c, dims[1] = v.oh, dims[2] = v.ow;
    rc = ferry__tensor_new(rt, a->dtype, 3, dims, out, st);
    if (!rc) {
        lut *t = ferry__alloc(rt, sizeof *t);
        if (t) {
            lut_fill(a, c, bright, contrast, centre, t);
            finish(a, &v, fx, fy, t, line, *out);
            ferry__free(rt, t);
        } else {
            rc = ferry__fail(st, FERRY_ENOMEM, "allocating the value tables failed");
            ferry_tensor_unref(*out);
            *out = NULL;
        }
    }
done:
    ferry__free(rt, line);
    ferry_tensor_unref(decoded);
    ferry_tensor_unref(resized);
    return rc;
}

int ferry_image_augment(ferry_runtime *rt, const ferry_tensor *image, const ferry_image_augment_options *opts,
                        uint64_t seed, ferry_tensor **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", __func__);
    FERRY__CHECK_ARG(image != NULL, FERRY_EINVAL, "%s: argument 'image' is NULL", __func__);
    aug a;
    int rc = aug_make(__func__, opts, &a);
    if (rc) return rc;
    ferry__status st;
    rc = augment(rt, &a, image, seed, out, &st);
    if (rc) return ferry__set_last_error(rc, "%s: %s", __func__, st.msg);
    return FERRY_OK;
}

/* ---- the map ------------------------------------------------------------------------------------ */
typedef struct aug_user {
    ferry__image_user base;
    aug a;
} aug_user;

static int augment_fn(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    const aug_user *u = user;
    ferry_tensor *img = NULL;
    ferry__status st;
    int rc = augment(u->base.rt, &u->a, ferry_element_get(in, u->base.component), ferry_context_random(ctx), &img, &st);
    return ferry__image_map_put(ctx, "image_augment", u->base.component, rc, st.msg, img, in, out);
}

/* The settings the output's spec does not show, hashed into the map's seed: part of the
 * fingerprint (a file cache made with other settings is not reused) and so of the per-element
 * generators. Left out: the dtype and the layout (the spec has them) and decode_whole (the same
 * pixels to a tolerance: the same boxes either way). */
static uint64_t aug_hash(const aug *a, uint64_t seed) {
    uint64_t v[] = {(uint64_t)a->req.channels, (uint64_t)a->req.max_pixels, (uint64_t)a->crop, (uint64_t)a->height,
                    (uint64_t)a->width,        (uint64_t)a->padding,        (uint64_t)a->area};
    double d[] = {a->scale_min, a->scale_max, a->ratio_min,  a->ratio_max,
                  a->flip,      a->vflip,     a->brightness, a->contrast};
    uint64_t h = ferry__fnv64(FERRY__FNV_INIT, v, sizeof v);
    h = ferry__fnv64(h, d, sizeof d);
    h = ferry__fnv64(h, a->mean, sizeof a->mean);
    h = ferry__fnv64(h, a->inv_std, sizeof a->inv_std);
    return ferry__mix64(h, seed);
}

int ferry_dataset_image_augment(ferry_dataset *in, const ferry_image_augment_options *opts, ferry_dataset **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    int rc = ferry__check_dataset(in, __func__, "in");
    if (rc) return rc;
    aug a;
    rc = aug_make(__func__, opts, &a);
    if (rc) return rc;
    size_t comp = opts ? opts->component : 0;
    FERRY__CHECK_ARG(comp < in->ncomp, FERRY_EINVAL, "%s: opts->component is %zu; the input has %zu components",
                     __func__, comp, in->ncomp);
    const ferry_tensor_spec *s = &in->specs[comp];
    bool bytes = s->dtype == FERRY_DTYPE_BYTES && (s->shape.rank == 0 || s->shape.rank == FERRY_UNKNOWN_RANK);
    bool pixels = s->dtype == FERRY_DTYPE_UINT8 && (s->shape.rank == 3 || s->shape.rank == FERRY_UNKNOWN_RANK);
    FERRY__CHECK_ARG(!pixels || s->shape.rank != 3 || s->shape.dims[2] <= 4, FERRY_EINVAL,
                     "%s: component %zu is declared with %lld channels; an image has 1 to 4", __func__, comp,
                     (long long)s->shape.dims[2]);
    FERRY__CHECK_ARG(bytes || pixels, FERRY_EINVAL,
                     "%s: component %zu is declared %s of rank %d; it must be a bytes scalar (an encoded image) or "
                     "uint8 [height, width, channels]",
                     __func__, comp, ferry_dtype_name(s->dtype), s->shape.rank);
    int64_t oh = a.height ? a.height : FERRY_UNKNOWN_DIM, ow = a.width ? a.width : FERRY_UNKNOWN_DIM;
    int64_t oc = bytes ? (a.req.channels ? a.req.channels : FERRY_UNKNOWN_DIM)
                       : (s->shape.rank == 3 ? s->shape.dims[2] : FERRY_UNKNOWN_DIM);
    if (pixels && a.crop == FERRY_IMAGE_CROP_NONE && !a.height && s->shape.rank == 3)
        oh = s->shape.dims[0], ow = s->shape.dims[1];
    aug_user *u = ferry__calloc(in->rt, 1, sizeof *u);
    if (!u) return ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the map's options failed", __func__);
    *u = (aug_user){.base = {.rt = in->rt, .component = comp}, .a = a};
    ferry_tensor_spec spec = {.dtype = a.dtype, .shape = {3, {oh, ow, oc}}};
    if (a.chw) spec.shape = (ferry_shape){3, {oc, oh, ow}};
    return ferry__image_map(__func__, "image_augment", in, augment_fn, &u->base, spec, opts ? opts->name : NULL,
                            opts ? opts->num_parallel_calls : 0, opts && opts->relaxed_order,
                            opts ? opts->reorder_window : 0, aug_hash(&a, opts ? opts->seed : 0), out);
}
