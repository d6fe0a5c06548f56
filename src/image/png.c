/*
 * png.c - PNG decoding through libspng.
 *
 * The header (IHDR) is read first and the pixel count checked before anything the size of the
 * image is allocated; libspng's own limits bound each side (2^24) and the ancillary chunks it
 * keeps (64 MiB in all), so a file cannot make it allocate more than the image it describes.
 * CRCs are checked on every chunk.
 *
 * Most images decode straight into the output through libspng's RGBA8 or, for a gray image of
 * up to 8 bits asked for one channel, G8 format (16-bit samples lose their low byte, tRNS
 * becomes alpha); the requested channels are then taken from RGBA8: RGB as is, gray as
 * (299 R + 587 G + 114 B + 500) / 1000 (exact for gray sources, whose R = G = B).
 */
#include "image/image.h"

#include <string.h>

#ifdef FERRY_HAVE_SPNG
#include <spng.h>

#define PNG_MAX_SIDE (1u << 24)
#define PNG_CHUNK_LIMIT ((size_t)64 << 20)

static int png_error(int e, ferry__status *st) {
    int code = e == SPNG_EOF ? FERRY_ETRUNCATED : FERRY_ECORRUPT;
    return ferry__fail(st, code, "PNG: %s", spng_strerror(e));
}

static uint8_t luma(const uint8_t *p) { return (uint8_t)((299u * p[0] + 587u * p[1] + 114u * p[2] + 500u) / 1000u); }

/* The channels of the image itself: gray 1, gray + alpha 2, RGB or palette 3, with alpha 4. */
static int png_own_channels(spng_ctx *ctx, const struct spng_ihdr *h) {
    struct spng_trns trns;
    bool alpha = spng_get_trns(ctx, &trns) == 0;
    switch (h->color_type) {
    case SPNG_COLOR_TYPE_GRAYSCALE: return alpha ? 2 : 1;
    case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA: return 2;
    case SPNG_COLOR_TYPE_TRUECOLOR_ALPHA: return 4;
    default: return alpha ? 4 : 3;
    }
}

static int png_run(spng_ctx *ctx, ferry_runtime *rt, const uint8_t *p, size_t n, const ferry__image_req *req,
                   ferry_tensor **out, uint8_t **tmp, ferry__status *st) {
    int e = spng_set_png_buffer(ctx, p, n);
    if (!e) e = spng_set_image_limits(ctx, PNG_MAX_SIDE, PNG_MAX_SIDE);
    if (!e) e = spng_set_chunk_limits(ctx, PNG_CHUNK_LIMIT, PNG_CHUNK_LIMIT);
    if (e) return png_error(e, st);
    struct spng_ihdr h;
    e = spng_get_ihdr(ctx, &h);
    if (e) return png_error(e, st);
    int64_t w = h.width, ht = h.height;
    if (w * ht > req->max_pixels)
        return ferry__fail(st, FERRY_ETOOLARGE,
                           "PNG of %lld x %lld pixels is over the limit of %lld pixels (max_pixels)", (long long)w,
                           (long long)ht, (long long)req->max_pixels);
    if (req->crop) {
        int rc = ferry__image_window_check(req, w, ht, "PNG", st);
        if (rc) return rc;
    }
    int own = png_own_channels(ctx, &h);
    int c = req->channels ? req->channels : own;
    int64_t dims[3] = {ht, w, c};
    int rc = ferry__tensor_new(rt, FERRY_DTYPE_UINT8, 3, dims, out, st);
    if (rc) return rc;
    uint8_t *px = ferry_tensor_mutable_data(*out);
    size_t npx = (size_t)w * (size_t)ht, size;
    if (c == 1 && own == 1 && h.bit_depth <= 8) { /* gray into gray: straight */
        e = spng_decoded_image_size(ctx, SPNG_FMT_G8, &size);
        if (!e && size != npx) e = SPNG_EINTERNAL;
        if (!e) e = spng_decode_image(ctx, px, size, SPNG_FMT_G8, 0);
        return e ? png_error(e, st) : FERRY_OK;
    }
    e = spng_decoded_image_size(ctx, SPNG_FMT_RGBA8, &size);
    if (!e && size != npx * 4) e = SPNG_EINTERNAL;
    if (e) return png_error(e, st);
    uint8_t *rgba = px;
    if (c != 4) {
        rgba = *tmp = ferry__alloc(rt, size);
        if (!rgba) return ferry__fail(st, FERRY_ENOMEM, "PNG: allocating %zu bytes for the pixels failed", size);
    }
    e = spng_decode_image(ctx, rgba, size, SPNG_FMT_RGBA8, SPNG_DECODE_TRNS);
    if (e) return png_error(e, st);
    for (size_t i = 0; c != 4 && i < npx; i++) {
        const uint8_t *s = rgba + 4 * i;
        if (c == 3) memcpy(px + 3 * i, s, 3);
        else if (c == 2) px[2 * i] = luma(s), px[2 * i + 1] = s[3];
        else px[i] = luma(s);
    }
    return FERRY_OK;
}

int ferry__png_decode(ferry_runtime *rt, const uint8_t *p, size_t n, const ferry__image_req *req, ferry_tensor **out,
                      ferry__status *st) {
    *out = NULL;
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) return ferry__fail(st, FERRY_ENOMEM, "PNG: allocating the decoder failed");
    uint8_t *tmp = NULL;
    int rc = png_run(ctx, rt, p, n, req, out, &tmp, st);
    spng_ctx_free(ctx);
    ferry__free(rt, tmp);
    if (rc == FERRY_OK && req->crop) { /* decoded whole (PNG rows depend on the ones above): cut */
        ferry_tensor *whole = *out;
        int64_t c = ferry_tensor_dim(whole, 2), dims[3] = {req->height, req->width, c};
        rc = ferry__tensor_new(rt, FERRY_DTYPE_UINT8, 3, dims, out, st);
        if (rc == FERRY_OK) {
            const uint8_t *s = ferry_tensor_data(whole);
            uint8_t *d = ferry_tensor_mutable_data(*out);
            size_t sl = (size_t)ferry_tensor_dim(whole, 1) * (size_t)c, line = (size_t)req->width * (size_t)c;
            for (int64_t r = 0; r < req->height; r++)
                memcpy(d + (size_t)r * line, s + (size_t)(req->y + r) * sl + (size_t)req->x * (size_t)c, line);
        } else {
            *out = NULL;
        }
        ferry_tensor_unref(whole);
    }
    if (rc) {
        ferry_tensor_unref(*out);
        *out = NULL;
    }
    return rc;
}

#else

int ferry__png_decode(ferry_runtime *rt, const uint8_t *p, size_t n, const ferry__image_req *req, ferry_tensor **out,
                      ferry__status *st) {
    (void)rt, (void)p, (void)n, (void)req;
    *out = NULL;
    return ferry__fail(st, FERRY_EUNSUPPORTED, "PNG: this build of ferry has no PNG decoder (libspng)");
}

#endif
