/*
 * test_image.c - JPEG and PNG decoding (ferry_image_decode, ferry_dataset_decode_image).
 *
 * Images are made here with the libraries' own encoders (libjpeg, libspng), so the expected
 * pixels are known: a PNG decodes to exactly the pixels encoded; a JPEG decodes to exactly what
 * libjpeg's own decoder gives for the same data and color space. Then the channel conversions,
 * damaged data (truncated, flipped bytes, not an image), sizes over the limit refused from the
 * header before a pixel buffer exists, and the map: errors in their element's position, other
 * components passed through, parallel calls giving the same pixels.
 */
#include "runner.h"

#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#if __has_include(<jpeglib.h>) && __has_include(<spng.h>)
#define HAVE_CODECS 1
#include <stdio.h>
/* jpeglib.h needs stdio.h first */
#include <jpeglib.h>
#include <spng.h>
#endif
#include "image_codec.h"

#ifdef HAVE_CODECS
/* A test picture: gradients and a pseudo-random texture, so that every channel differs. */
static void picture(uint8_t *px, int w, int h, int c, uint32_t seed) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++) {
                seed = seed * 1664525u + 1013904223u;
                px[((size_t)y * w + x) * c + k] =
                    (uint8_t)((x * 255 / (w > 1 ? w - 1 : 1)) * (k != 1) + (y * 255 / (h > 1 ? h - 1 : 1)) * (k == 1) +
                              (seed >> 28) * 3 + k * 17);
            }
}

/* libjpeg's own decode of b into color space cs (n components). */
static uint8_t *jpeg_reference(const buf *b, J_COLOR_SPACE cs, int *w, int *h, int *n) {
    struct jpeg_decompress_struct d;
    struct jpeg_error_mgr je;
    d.err = jpeg_std_error(&je);
    jpeg_create_decompress(&d);
    jpeg_mem_src(&d, b->p, (unsigned long)b->n);
    jpeg_read_header(&d, TRUE);
    d.out_color_space = cs;
    jpeg_start_decompress(&d);
    *w = (int)d.output_width, *h = (int)d.output_height, *n = d.output_components;
    uint8_t *px = malloc((size_t)*w * *h * *n);
    while (d.output_scanline < d.output_height) {
        JSAMPROW row = px + (size_t)d.output_scanline * *w * *n;
        jpeg_read_scanlines(&d, &row, 1);
    }
    jpeg_finish_decompress(&d);
    jpeg_destroy_decompress(&d);
    return px;
}

static buf png_encode(const void *px, int w, int h, int color_type, int depth) {
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    struct spng_ihdr ih = {
        .width = (uint32_t)w, .height = (uint32_t)h, .bit_depth = (uint8_t)depth, .color_type = (uint8_t)color_type};
    ASSERT_EQ(spng_set_ihdr(ctx, &ih), 0);
    int ch = color_type == SPNG_COLOR_TYPE_GRAYSCALE         ? 1
             : color_type == SPNG_COLOR_TYPE_GRAYSCALE_ALPHA ? 2
             : color_type == SPNG_COLOR_TYPE_TRUECOLOR       ? 3
                                                             : 4;
    size_t len = (size_t)w * h * ch * (depth / 8);
    ASSERT_EQ(spng_encode_image(ctx, px, len, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE), 0);
    size_t n;
    int e;
    void *out = spng_get_png_buffer(ctx, &n, &e);
    ASSERT_EQ(e, 0);
    spng_ctx_free(ctx);
    return (buf){out, n};
}

static ferry_tensor *decode(ferry_runtime *rt, const buf *b, int channels) {
    ferry_tensor *t;
    ferry_decode_image_options o = {.channels = channels};
    ASSERT_OK(ferry_image_decode(rt, b->p, b->n, &o, &t));
    ASSERT_EQ(ferry_tensor_dtype(t), FERRY_DTYPE_UINT8);
    ASSERT_EQ(ferry_tensor_rank(t), 3);
    return t;
}

static int decode_rc(ferry_runtime *rt, const void *p, size_t n, int64_t max_pixels) {
    ferry_tensor *t = (ferry_tensor *)(uintptr_t)1;
    ferry_decode_image_options o = {.max_pixels = max_pixels};
    int rc = ferry_image_decode(rt, p, n, &o, &t);
    ASSERT(rc != FERRY_OK && t == NULL);
    return rc;
}
#endif

TEST(sniff_and_names) {
    const uint8_t jpg[] = {0xFF, 0xD8, 0xFF, 0xE0}, png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    ASSERT_EQ(ferry_image_sniff(jpg, sizeof jpg), FERRY_IMAGE_FORMAT_JPEG);
    ASSERT_EQ(ferry_image_sniff(png, sizeof png), FERRY_IMAGE_FORMAT_PNG);
    ASSERT_EQ(ferry_image_sniff(png, 7), FERRY_IMAGE_FORMAT_UNKNOWN);
    ASSERT_EQ(ferry_image_sniff("GIF89a", 6), FERRY_IMAGE_FORMAT_UNKNOWN);
    ASSERT_EQ(ferry_image_sniff(NULL, 8), FERRY_IMAGE_FORMAT_UNKNOWN);
    ASSERT(strcmp(ferry_image_format_name(FERRY_IMAGE_FORMAT_JPEG), "jpeg") == 0);
    ASSERT(strcmp(ferry_image_format_name(FERRY_IMAGE_FORMAT_PNG), "png") == 0);
    ASSERT(strcmp(ferry_image_format_name((ferry_image_format)99), "unknown") == 0);
}

#ifdef HAVE_CODECS
TEST(jpeg_decodes_as_libjpeg_does) {
    ferry_runtime *rt = rt_new();
    int w = 37, h = 23;
    uint8_t *src = malloc((size_t)w * h * 3);
    picture(src, w, h, 3, 7);
    buf b = jpeg_encode(src, w, h, 3, 90);
    struct {
        int channels;
        J_COLOR_SPACE cs;
    } cases[] = {{0, JCS_RGB}, {3, JCS_RGB}, {1, JCS_GRAYSCALE}, {4, JCS_EXT_RGBA}};
    for (size_t k = 0; k < 4; k++) {
        int rw, rh, rn;
        uint8_t *ref = jpeg_reference(&b, cases[k].cs, &rw, &rh, &rn);
        ferry_tensor *t = decode(rt, &b, cases[k].channels);
        ASSERT_EQ(ferry_tensor_dim(t, 0), h);
        ASSERT_EQ(ferry_tensor_dim(t, 1), w);
        ASSERT_EQ(ferry_tensor_dim(t, 2), rn);
        ASSERT_EQ(ferry_tensor_nbytes(t), (size_t)rw * rh * rn);
        ASSERT(memcmp(ferry_tensor_data(t), ref, ferry_tensor_nbytes(t)) == 0);
        ferry_tensor_unref(t);
        free(ref);
    }
    /* A grayscale JPEG: one channel of its own; three repeat it. */
    uint8_t *gray = malloc((size_t)w * h);
    picture(gray, w, h, 1, 9);
    buf g = jpeg_encode(gray, w, h, 1, 95);
    ferry_tensor *t1 = decode(rt, &g, 0), *t3 = decode(rt, &g, 3);
    ASSERT_EQ(ferry_tensor_dim(t1, 2), 1);
    ASSERT_EQ(ferry_tensor_dim(t3, 2), 3);
    const uint8_t *p1 = ferry_tensor_data(t1), *p3 = ferry_tensor_data(t3);
    for (int i = 0; i < w * h; i++) ASSERT(p3[3 * i] == p1[i] && p3[3 * i + 1] == p1[i] && p3[3 * i + 2] == p1[i]);
    ferry_tensor_unref(t1);
    ferry_tensor_unref(t3);
    free(g.p);
    free(gray);
    free(b.p);
    free(src);
    rt_done(rt);
}

TEST(png_decodes_exactly_with_its_channels) {
    ferry_runtime *rt = rt_new();
    int w = 19, h = 11;
    int types[] = {SPNG_COLOR_TYPE_GRAYSCALE, SPNG_COLOR_TYPE_GRAYSCALE_ALPHA, SPNG_COLOR_TYPE_TRUECOLOR,
                   SPNG_COLOR_TYPE_TRUECOLOR_ALPHA};
    for (int k = 0; k < 4; k++) {
        int c = k + 1;
        uint8_t *src = malloc((size_t)w * h * c);
        picture(src, w, h, c, 11 + k);
        buf b = png_encode(src, w, h, types[k], 8);
        ferry_tensor *t = decode(rt, &b, 0);
        ASSERT_EQ(ferry_tensor_dim(t, 0), h);
        ASSERT_EQ(ferry_tensor_dim(t, 1), w);
        ASSERT_EQ(ferry_tensor_dim(t, 2), c); /* its own channels */
        ASSERT(memcmp(ferry_tensor_data(t), src, (size_t)w * h * c) == 0);
        ferry_tensor_unref(t);
        /* converted: RGB drops or adds alpha, gray is the rounded luma, RGBA adds 255 */
        ferry_tensor *g = decode(rt, &b, 1), *rgb = decode(rt, &b, 3), *rgba = decode(rt, &b, 4);
        const uint8_t *pg = ferry_tensor_data(g), *p3 = ferry_tensor_data(rgb), *p4 = ferry_tensor_data(rgba);
        for (int i = 0; i < w * h; i++) {
            const uint8_t *s = src + (size_t)i * c;
            uint8_t r = c >= 3 ? s[0] : s[0], gg = c >= 3 ? s[1] : s[0], bb = c >= 3 ? s[2] : s[0];
            uint8_t a = c == 2 ? s[1] : c == 4 ? s[3] : 255;
            ASSERT_EQ(pg[i], (uint8_t)((299u * r + 587u * gg + 114u * bb + 500u) / 1000u));
            ASSERT(p3[3 * i] == r && p3[3 * i + 1] == gg && p3[3 * i + 2] == bb);
            ASSERT(p4[4 * i] == r && p4[4 * i + 1] == gg && p4[4 * i + 2] == bb && p4[4 * i + 3] == a);
        }
        ferry_tensor_unref(g);
        ferry_tensor_unref(rgb);
        ferry_tensor_unref(rgba);
        free(b.p);
        free(src);
    }
    /* 16-bit gray: the high byte of every sample. */
    uint16_t s16[6 * 4];
    for (int i = 0; i < 24; i++) s16[i] = (uint16_t)(i * 2741 + 17);
    buf b16 = png_encode(s16, 6, 4, SPNG_COLOR_TYPE_GRAYSCALE, 16); /* host-endian samples */
    ferry_tensor *t = decode(rt, &b16, 1);
    for (int i = 0; i < 24; i++) ASSERT_EQ(((const uint8_t *)ferry_tensor_data(t))[i], (uint8_t)(s16[i] >> 8));
    ferry_tensor_unref(t);
    free(b16.p);
    rt_done(rt);
}

/* The window's pixels against the full decode's, cut: a JPEG window may differ in its first and
 * last column (chroma upsampling has no neighbour there), by up to 38 levels on this picture's
 * noisy chroma (measured; JPEG_EDGE leaves some room); every other pixel is equal. PNG: equal
 * everywhere. */
#define JPEG_EDGE 48
static void check_window(ferry_runtime *rt, const buf *b, int channels, ferry_image_window win, bool exact) {
    ferry_tensor *full = decode(rt, b, channels), *part;
    ASSERT_OK(
        ferry_image_decode_window(rt, b->p, b->n, &win, &(ferry_decode_image_options){.channels = channels}, &part));
    int64_t c = ferry_tensor_dim(full, 2), fw = ferry_tensor_dim(full, 1);
    ASSERT_EQ(ferry_tensor_dim(part, 0), win.height);
    ASSERT_EQ(ferry_tensor_dim(part, 1), win.width);
    ASSERT_EQ(ferry_tensor_dim(part, 2), c);
    const uint8_t *f = ferry_tensor_data(full), *q = ferry_tensor_data(part);
    for (int64_t r = 0; r < win.height; r++)
        for (int64_t x = 0; x < win.width; x++)
            for (int64_t k = 0; k < c; k++) {
                int a = f[((win.y + r) * fw + win.x + x) * c + k], g = q[(r * win.width + x) * c + k];
                bool edge = x < 1 || x >= win.width - 1;
                if (exact || !edge) ASSERT_EQ(g, a);
                else ASSERT_LE(abs(g - a), JPEG_EDGE);
            }
    ferry_tensor_unref(full);
    ferry_tensor_unref(part);
}

TEST(window_decode_matches_the_full_decode_cut) {
    ferry_runtime *rt = rt_new();
    int w = 67, h = 45;
    uint8_t *src = malloc((size_t)w * h * 4);
    picture(src, w, h, 3, 17);
    buf j = jpeg_encode(src, w, h, 3, 90);
    ferry_image_window wins[] = {{0, 0, 45, 67}, {16, 16, 16, 32}, {5, 7, 20, 30}, {44, 66, 1, 1}, {0, 33, 45, 34}};
    for (size_t k = 0; k < sizeof wins / sizeof wins[0]; k++) {
        check_window(rt, &j, 3, wins[k], false);
        check_window(rt, &j, 1, wins[k], false);
    }
    picture(src, w, h, 4, 19);
    buf p = png_encode(src, w, h, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, 8);
    for (size_t k = 0; k < sizeof wins / sizeof wins[0]; k++) {
        check_window(rt, &p, 0, wins[k], true);
        check_window(rt, &p, 3, wins[k], true);
    }
    /* a window outside the image, or none */
    ferry_tensor *t;
    ferry_image_window out = {40, 60, 10, 10};
    ASSERT_EQ(ferry_image_decode_window(rt, j.p, j.n, &out, NULL, &t), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(),
                        "JPEG: the window (y 40, x 60, height 10, width 10) is not inside the image of 67 x 45");
    ASSERT_EQ(ferry_image_decode_window(rt, p.p, p.n, &out, NULL, &t), FERRY_EINVAL);
    ASSERT_EQ(ferry_image_decode_window(rt, p.p, p.n, NULL, NULL, &t), FERRY_EINVAL);
    ASSERT_EQ(ferry_image_decode_window(rt, p.p, p.n, &(ferry_image_window){0, 0, 0, 5}, NULL, &t), FERRY_EINVAL);
    free(j.p);
    free(p.p);
    free(src);
    rt_done(rt);
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

TEST(damaged_data_is_an_error_never_pixels) {
    ferry_runtime *rt = rt_new();
    int w = 64, h = 48;
    uint8_t *src = malloc((size_t)w * h * 3);
    picture(src, w, h, 3, 3);
    buf j = jpeg_encode(src, w, h, 3, 90), p = png_encode(src, w, h, SPNG_COLOR_TYPE_TRUECOLOR, 8);
    /* truncated: the data stops inside the image */
    int rc = decode_rc(rt, j.p, j.n / 2, 0);
    ASSERT(rc == FERRY_ETRUNCATED || rc == FERRY_ECORRUPT);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_image_decode: JPEG: ");
    rc = decode_rc(rt, p.p, p.n - 20, 0);
    ASSERT(rc == FERRY_ETRUNCATED || rc == FERRY_ECORRUPT);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_image_decode: PNG: ");
    /* a flipped byte in the PNG's image data: its chunk's CRC fails */
    uint8_t *q = malloc(p.n);
    memcpy(q, p.p, p.n);
    q[p.n - 30] ^= 0x40;
    ASSERT_EQ(decode_rc(rt, q, p.n, 0), FERRY_ECORRUPT);
    free(q);
    /* garbage where the JPEG's scan data is */
    q = malloc(j.n);
    memcpy(q, j.p, j.n);
    for (size_t i = j.n / 3; i < j.n - 2; i++) q[i] = 0xFF;
    ASSERT(decode_rc(rt, q, j.n, 0) != FERRY_OK);
    free(q);
    /* not an image, and no data */
    ASSERT_EQ(decode_rc(rt, "GIF89a....", 10, 0), FERRY_EUNSUPPORTED);
    ASSERT_STR_CONTAINS(ferry_last_error(), "not a JPEG or PNG image: 10 bytes starting with 47 49 46 38 39 61 2e 2e");
    ASSERT_EQ(decode_rc(rt, j.p, 0, 0), FERRY_EINVAL);
    ferry_tensor *t;
    ASSERT_EQ(ferry_image_decode(rt, j.p, j.n, &(ferry_decode_image_options){.channels = 2}, &t), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "opts->channels is 2");
    free(j.p);
    free(p.p);
    free(src);
    rt_done(rt);
}

TEST(sizes_over_the_limit_are_refused_from_the_header) {
    ferry_runtime *rt = rt_new();
    int w = 16, h = 16;
    uint8_t src[16 * 16 * 3];
    picture(src, w, h, 3, 5);
    buf j = jpeg_encode(src, w, h, 3, 90), p = png_encode(src, w, h, SPNG_COLOR_TYPE_TRUECOLOR, 8);
    ASSERT_EQ(decode_rc(rt, j.p, j.n, 255), FERRY_ETOOLARGE); /* 256 pixels */
    ASSERT_STR_CONTAINS(ferry_last_error(), "JPEG of 16 x 16 pixels is over the limit of 255 pixels");
    ASSERT_EQ(decode_rc(rt, p.p, p.n, 255), FERRY_ETOOLARGE);
    ASSERT_STR_CONTAINS(ferry_last_error(), "PNG of 16 x 16 pixels is over the limit of 255 pixels");
    /* Headers that claim huge images (decompression bombs): 60000 x 60000 and 100000 x 100000. */
    ferry_runtime_stats before, after;
    ASSERT_OK(ferry_runtime_stats_get(rt, &before));
    for (size_t i = 0; i + 8 < j.n; i++)
        if (j.p[i] == 0xFF && j.p[i + 1] == 0xC0) { /* SOF0: length, precision, height, width */
            j.p[i + 5] = 60000 >> 8, j.p[i + 6] = 60000 & 255, j.p[i + 7] = 60000 >> 8, j.p[i + 8] = 60000 & 255;
            break;
        }
    ASSERT_EQ(decode_rc(rt, j.p, j.n, 0), FERRY_ETOOLARGE);
    ASSERT_STR_CONTAINS(ferry_last_error(), "JPEG of 60000 x 60000 pixels is over the limit of 67108864 pixels");
    ASSERT_EQ(be32(p.p + 12), 0x49484452u); /* "IHDR" */
    put_be32(p.p + 16, 100000);
    put_be32(p.p + 20, 100000);
    put_be32(p.p + 29, (uint32_t)crc32(0, p.p + 12, 17)); /* a valid header */
    ASSERT_EQ(decode_rc(rt, p.p, p.n, 0), FERRY_ETOOLARGE);
    ASSERT_STR_CONTAINS(ferry_last_error(), "PNG of 100000 x 100000 pixels is over the limit");
    ASSERT_OK(ferry_runtime_stats_get(rt, &after));
    ASSERT_LE(after.bytes_allocated, before.bytes_allocated + 4096); /* no pixel buffer */
    free(j.p);
    free(p.p);
    rt_done(rt);
}

TEST(decode_image_map_keeps_positions_and_other_components) {
    ferry_runtime *rt = rt_new();
    int w = 24, h = 16;
    uint8_t src[24 * 16 * 3];
    picture(src, w, h, 3, 21);
    buf j = jpeg_encode(src, w, h, 3, 90), p = png_encode(src, w, h, SPNG_COLOR_TYPE_TRUECOLOR, 8);
    const void *ptrs[5] = {j.p, p.p, "not an image", p.p, j.p};
    size_t lens[5] = {j.n, p.n, 12, p.n, j.n / 3};
    int64_t n5 = 5;
    ferry_tensor *imgs, *labels;
    ASSERT_OK(ferry_tensor_create_bytes(rt, 1, &n5, ptrs, lens, &imgs));
    ASSERT_OK(ferry_tensor_create(rt, FERRY_DTYPE_INT64, 1, &n5, &labels));
    for (int i = 0; i < 5; i++) ((int64_t *)ferry_tensor_mutable_data(labels))[i] = 100 + i;
    ferry_tensor *both[2] = {imgs, labels};
    ferry_tensor *want_j = decode(rt, &j, 3), *want_p = decode(rt, &p, 3);
    for (int par = 0; par <= 2; par += 2) {
        ferry_dataset *ds;
        ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 2, both, NULL, &ds));
        CHAIN(ds, ferry_dataset_decode_image(
                      ds, &(ferry_decode_image_options){.channels = 3, .num_parallel_calls = par}, OUT));
        ASSERT(strcmp(ferry_dataset_name(ds), "decode_image") == 0);
        ferry_tensor_spec spec;
        ASSERT_OK(ferry_dataset_component_spec(ds, 0, &spec));
        ASSERT(spec.dtype == FERRY_DTYPE_UINT8 && spec.shape.rank == 3 && spec.shape.dims[2] == 3);
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
        int want_rc[5] = {FERRY_OK, FERRY_OK, FERRY_EUNSUPPORTED, FERRY_OK, FERRY_ETRUNCATED};
        for (int i = 0; i < 5; i++) {
            ferry_element *e;
            int rc = ferry_iterator_next(it, &e);
            if (i == 4) ASSERT(rc == FERRY_ETRUNCATED || rc == FERRY_ECORRUPT); /* the last element fails too */
            else ASSERT_EQ(rc, want_rc[i]);
            if (rc) {
                char at[32];
                snprintf(at, sizeof at, "element %d: ", i);
                ASSERT_STR_CONTAINS(ferry_iterator_error(it), at);
                continue;
            }
            const ferry_tensor *want = i == 0 ? want_j : want_p;
            ASSERT_EQ(ferry_tensor_nbytes(ferry_element_get(e, 0)), ferry_tensor_nbytes(want));
            ASSERT(memcmp(ferry_tensor_data(ferry_element_get(e, 0)), ferry_tensor_data(want),
                          ferry_tensor_nbytes(want)) == 0);
            ASSERT_EQ(*(const int64_t *)ferry_tensor_data(ferry_element_get(e, 1)), 100 + i); /* passed through */
            ferry_element_free(e);
        }
        ferry_element *e;
        ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
        ferry_iterator_free(it);
        ferry_dataset_unref(ds);
    }
    /* bad arguments */
    ferry_dataset *ds, *out = NULL;
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 2, both, NULL, &ds));
    ASSERT_EQ(ferry_dataset_decode_image(ds, &(ferry_decode_image_options){.component = 2}, &out), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "opts->component is 2; the input has 2 components");
    ASSERT_EQ(ferry_dataset_decode_image(ds, &(ferry_decode_image_options){.component = 1}, &out), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "component 1 is declared int64 of rank 0; it must be a bytes scalar");
    /* a refusal of the map it is made of says whose call it was */
    ASSERT_EQ(ferry_dataset_decode_image(ds, &(ferry_decode_image_options){.num_parallel_calls = -7}, &out),
              FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(),
                        "ferry_dataset_decode_image: ferry_dataset_map: options.num_parallel_calls");
    ASSERT(out == NULL);
    ferry_dataset_unref(ds);
    ferry_tensor_unref(want_j);
    ferry_tensor_unref(want_p);
    ferry_tensor_unref(imgs);
    ferry_tensor_unref(labels);
    free(j.p);
    free(p.p);
    rt_done(rt);
}
#else
TEST(codecs_missing) { SKIP("libjpeg or libspng headers are not installed"); }
#endif

/* ---- resizing -------------------------------------------------------------------------------- */

static ferry_tensor *resized(ferry_runtime *rt, ferry_tensor *t, int h, int w, ferry_resize_method m, bool no_aa) {
    ferry_tensor *out;
    ASSERT_OK(ferry_image_resize(rt, t, h, w, &(ferry_resize_options){.method = m, .no_antialias = no_aa}, &out));
    ASSERT_EQ(ferry_tensor_dim(out, 0), h);
    ASSERT_EQ(ferry_tensor_dim(out, 1), w);
    ASSERT_EQ(ferry_tensor_dim(out, 2), ferry_tensor_dim(t, 2));
    return out;
}

TEST(resize_bilinear_and_area_as_the_references_compute_them) {
    ferry_runtime *rt = rt_new();
    /* the same size: the same pixels, either method */
    uint8_t px[12 * 10 * 3];
    picture(px, 10, 12, 3, 23);
    ferry_tensor *img = image_of(rt, 12, 10, 3, px);
    for (int m = 0; m < 2; m++) {
        ferry_tensor *same = resized(rt, img, 12, 10, (ferry_resize_method)m, false);
        ASSERT(memcmp(ferry_tensor_data(same), px, sizeof px) == 0);
        ferry_tensor_unref(same);
    }
    /* a 2x shrink by area is the rounded mean of each 2x2 block */
    ferry_tensor *half = resized(rt, img, 6, 5, FERRY_RESIZE_AREA, false);
    const uint8_t *hp = ferry_tensor_data(half);
    for (int y = 0; y < 6; y++)
        for (int x = 0; x < 5; x++)
            for (int k = 0; k < 3; k++) {
                int sum = 0;
                for (int dy = 0; dy < 2; dy++)
                    for (int dx = 0; dx < 2; dx++) sum += px[((2 * y + dy) * 10 + 2 * x + dx) * 3 + k];
                ASSERT_LE(abs(hp[(y * 5 + x) * 3 + k] - (sum + 2) / 4), 1); /* float rounding of .5 */
            }
    ferry_tensor_unref(half);
    ferry_tensor_unref(img);
    /* a 2x bilinear stretch of [0, 100]: 0, 25, 75, 100 (half-pixel centres, edges clamped) */
    uint8_t two[2] = {0, 100};
    img = image_of(rt, 1, 2, 1, two);
    ferry_tensor *wide = resized(rt, img, 1, 4, FERRY_RESIZE_BILINEAR, false);
    const uint8_t *wp = ferry_tensor_data(wide);
    ASSERT(wp[0] == 0 && wp[1] == 25 && wp[2] == 75 && wp[3] == 100);
    ferry_tensor_unref(wide);
    ferry_tensor_unref(img);
    /* a constant image stays constant */
    uint8_t flat[9 * 7 * 4];
    memset(flat, 77, sizeof flat);
    img = image_of(rt, 9, 7, 4, flat);
    int sizes[][2] = {{3, 2}, {20, 31}, {1, 1}, {9, 14}};
    for (size_t k = 0; k < 4; k++)
        for (int m = 0; m < 2; m++) {
            ferry_tensor *r = resized(rt, img, sizes[k][0], sizes[k][1], (ferry_resize_method)m, false);
            const uint8_t *rp = ferry_tensor_data(r);
            for (size_t i = 0; i < ferry_tensor_nbytes(r); i++) ASSERT_EQ(rp[i], 77);
            ferry_tensor_unref(r);
        }
    ferry_tensor_unref(img);
    /* stripes of one pixel shrunk 4x: antialiased, every output averages them (no aliasing); the
     * two-tap bilinear sees only some of them */
    uint8_t stripes[1 * 64];
    for (int i = 0; i < 64; i++) stripes[i] = (uint8_t)(i % 2 ? 255 : 0);
    img = image_of(rt, 1, 64, 1, stripes);
    ferry_tensor *aa = resized(rt, img, 1, 16, FERRY_RESIZE_BILINEAR, false);
    ferry_tensor *na = resized(rt, img, 1, 16, FERRY_RESIZE_BILINEAR, true);
    const uint8_t *ap = ferry_tensor_data(aa), *np = ferry_tensor_data(na);
    for (int i = 1; i < 15; i++) ASSERT(ap[i] >= 120 && ap[i] <= 135);
    ASSERT_EQ(np[5], 128); /* centre 22: the two taps 21 and 22, half each */
    ferry_tensor_unref(aa);
    ferry_tensor_unref(na);
    /* bad arguments */
    ferry_tensor *t = NULL;
    ASSERT_EQ(ferry_image_resize(rt, img, 0, 4, NULL, &t), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_image_resize: the size 0 x 4 is outside");
    ASSERT_EQ(ferry_image_resize(rt, img, 4, 4, &(ferry_resize_options){.method = (ferry_resize_method)7}, &t),
              FERRY_EINVAL);
    ferry_tensor *i64;
    ASSERT_OK(ferry_tensor_scalar_i64(rt, 3, &i64));
    ASSERT_EQ(ferry_image_resize(rt, i64, 4, 4, NULL, &t), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "argument 'image' is int64 of rank 0");
    ASSERT(t == NULL);
    ferry_tensor_unref(i64);
    ferry_tensor_unref(img);
    rt_done(rt);
}

/* ---- the image folder ------------------------------------------------------------------------ */
static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    ASSERT(f != NULL);
    ASSERT_EQ(fwrite(p, 1, n, f), n);
    fclose(f);
}

TEST(image_folder_lists_classes_and_files_in_order) {
    char root[256];
    snprintf(root, sizeof root, "/tmp/ferry_img_XXXXXX");
    ASSERT(mkdtemp(root) != NULL);
    char path[512];
    const char *dirs[] = {"cat", "dog", "a-b", "empty"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", root, dirs[i]);
        mkdir(path, 0755);
    }
    /* contents: each file's own bytes, so that order and content are checked together */
    const char *files[] = {"cat/b.png", "cat/a.jpg", "dog/c.PNG", "a-b/x.jpeg", "cat/notes.txt", "readme.jpg"};
    for (size_t i = 0; i < 6; i++) {
        snprintf(path, sizeof path, "%s/%s", root, files[i]);
        write_file(path, files[i], strlen(files[i]));
    }
    snprintf(path, sizeof path, "%s/dog/folder.jpg", root); /* a directory, not an image */
    mkdir(path, 0755);
    ferry_runtime *rt = rt_new();
    ferry_dataset *ds;
    char slashed[300];
    snprintf(slashed, sizeof slashed, "%s//", root); /* trailing slashes are the same root */
    ASSERT_OK(ferry_dataset_image_folder(rt, slashed, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 4);
    ASSERT(strcmp(ferry_image_folder_class(ds, 2), "dog") == 0);
    uint64_t fp = ferry_dataset_fingerprint(ds);
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_image_folder(rt, root, &(ferry_image_folder_options){.name = "pets"}, &ds));
    ASSERT_EQ(ferry_dataset_fingerprint(ds), fp);
    ASSERT_EQ(ferry_dataset_cardinality(ds), 4);
    ASSERT_EQ(ferry_image_folder_num_classes(ds), 3);
    ASSERT(strcmp(ferry_image_folder_class(ds, 0), "a-b") == 0); /* strcmp order: '-' < 'c' */
    ASSERT(strcmp(ferry_image_folder_class(ds, 1), "cat") == 0);
    ASSERT(strcmp(ferry_image_folder_class(ds, 2), "dog") == 0);
    ASSERT(ferry_image_folder_class(ds, 3) == NULL);
    ASSERT(strcmp(ferry_dataset_name(ds), "pets") == 0);
    const char *want[4] = {"a-b/x.jpeg", "cat/a.jpg", "cat/b.png", "dog/c.PNG"};
    int64_t want_label[4] = {0, 1, 1, 2};
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    ferry_blob *state = NULL;
    for (int i = 0; i < 4; i++) {
        if (i == 2) ASSERT_OK(ferry_iterator_save(it, &state));
        ferry_element *e;
        ASSERT_OK(ferry_iterator_next(it, &e));
        const uint8_t *p;
        size_t n;
        ASSERT_OK(ferry_tensor_bytes_get(ferry_element_get(e, 0), 0, &p, &n));
        ASSERT(n == strlen(want[i]) && memcmp(p, want[i], n) == 0);
        ASSERT_EQ(*(const int64_t *)ferry_tensor_data(ferry_element_get(e, 1)), want_label[i]);
        ferry_element_free(e);
    }
    ferry_element *e;
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
    ferry_iterator_free(it);
    /* restored at 2; then a file gone since the listing is an error in its position */
    snprintf(path, sizeof path, "%s/cat/b.png", root);
    unlink(path);
    ASSERT_OK(ferry_iterator_restore(ds, ferry_blob_data(state), ferry_blob_size(state), NULL, &it));
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_ENOTFOUND);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "cat/b.png");
    ASSERT_OK(ferry_iterator_next(it, &e));
    ASSERT_EQ(*(const int64_t *)ferry_tensor_data(ferry_element_get(e, 1)), 2);
    ferry_element_free(e);
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
    ferry_iterator_free(it);
    ferry_blob_free(state);
    ferry_dataset_unref(ds);
    /* nothing to list */
    snprintf(path, sizeof path, "%s/empty", root);
    ASSERT_EQ(ferry_dataset_image_folder(rt, path, NULL, &ds), FERRY_ENOTFOUND);
    ASSERT_STR_CONTAINS(ferry_last_error(), "empty");
    ASSERT(ds == NULL);
    ASSERT_EQ(ferry_dataset_image_folder(rt, "", NULL, &ds), FERRY_EINVAL);
    rt_done(rt);
    for (size_t i = 0; i < 6; i++) {
        snprintf(path, sizeof path, "%s/%s", root, files[i]);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/dog/folder.jpg", root);
    rmdir(path);
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", root, dirs[i]);
        rmdir(path);
    }
    rmdir(root);
}
