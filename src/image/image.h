/*
 * image.h - the image layer's internals: one decoder per format behind one call.
 *
 * Each decoder reads the header first, checks the pixel count against the limit, then allocates
 * the output tensor (uint8 [height, width, channels]) and decodes into it. Decoders report
 * through a ferry__status and never print, exit or leave anything allocated on failure.
 */
#ifndef FERRY_IMAGE_H_INTERNAL
#define FERRY_IMAGE_H_INTERNAL

#include "core/core.h"

#define FERRY__IMAGE_MAX_PIXELS_DEFAULT ((int64_t)1 << 26)

/* What a caller asks of a decode. */
typedef struct ferry__image_req {
    int channels;       /* 0 (the image's own), 1, 3 or 4 */
    int64_t max_pixels; /* > 0 */
    bool crop;          /* decode only the window below (in the decoded image's pixels) */
    int64_t y, x, height, width;
    int scale; /* JPEG: decode at scale / 8 (1 to 8; 0 means 8), libjpeg's scaled IDCT */
    /* When set, called once the header is read, with the image's own size, before the window
     * is checked: it may set crop, the window and scale in *req (a copy the decoder then uses).
     * A decoder without scaled decoding (PNG) never calls it. */
    int (*plan)(void *arg, int64_t width, int64_t height, struct ferry__image_req *req, ferry__status *st);
    void *plan_arg;
} ferry__image_req;

/* Checks the decode options decode_image and image_augment share (fn names the caller's function
 * in the message) and fills *req with them. */
int ferry__image_req_make(const char *fn, int channels, int64_t max_pixels, ferry__image_req *req);

/* The first member of an image map's user block: ferry__image_map frees the block with rt. */
typedef struct ferry__image_user {
    ferry_runtime *rt;
    size_t component; /* the component holding the image */
} ferry__image_user;

/* The map of decode_image and image_augment (fn: its public function, op: its default name): in's
 * specs with `spec` at user->component, its options, and `user` (allocated with ferry__calloc,
 * beginning with a ferry__image_user), which the dataset owns from then on, freed also when this
 * fails. */
int ferry__image_map(const char *fn, const char *op, ferry_dataset *in, ferry_map_fn f, ferry__image_user *user,
                     ferry_tensor_spec spec, const char *name, int num_parallel_calls, bool relaxed_order,
                     int reorder_window, uint64_t seed, ferry_dataset **out);

/* The end of an image map function: on rc == FERRY_OK puts img in place of the component and hands
 * `in` on as *out; else frees `in` and fails with "op: element N: why". */
int ferry__image_map_put(ferry_context *ctx, const char *op, size_t component, int rc, const char *why,
                         ferry_tensor *img, ferry_element *in, ferry_element **out);

/* FERRY_OK when the request's window lies inside an image of w x h pixels; else FERRY_EINVAL
 * naming both (fmt: "JPEG", "PNG"). */
int ferry__image_window_check(const ferry__image_req *req, int64_t w, int64_t h, const char *fmt, ferry__status *st);

/* Decodes a JPEG (jpeg.c) or PNG (png.c) image of n bytes into *out. FERRY_EUNSUPPORTED when
 * this build has no decoder for the format. */
int ferry__jpeg_decode(ferry_runtime *rt, const uint8_t *p, size_t n, const ferry__image_req *req, ferry_tensor **out,
                       ferry__status *st);
int ferry__png_decode(ferry_runtime *rt, const uint8_t *p, size_t n, const ferry__image_req *req, ferry_tensor **out,
                      ferry__status *st);
/* Sniffs and decodes (decode.c). */
int ferry__image_decode(ferry_runtime *rt, const uint8_t *p, size_t n, const ferry__image_req *req, ferry_tensor **out,
                        ferry__status *st);

/* Resizes the box (by, bx, bh, bw) of the uint8 image src [h, w, c] (fractional: a box in
 * source pixels, as Pillow's resize(box=)) to dst [oh, ow, c], which the caller allocated. */
int ferry__image_resize_box(ferry_runtime *rt, const uint8_t *src, int64_t h, int64_t w, int64_t c, double by,
                            double bx, double bh, double bw, int64_t oh, int64_t ow, bool area, bool antialias,
                            uint8_t *dst, ferry__status *st);

#endif
