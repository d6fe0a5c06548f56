/*
 * fuzz_image.c - fuzz target for the JPEG and PNG decoders (src/image/).
 *
 * The first byte of an input chooses the channels asked for (0, 1, 3 or 4), whether a small
 * pixel limit applies (4096 pixels) and whether only a window (rows 1-2, columns 2-4) is decoded
 * (ferry_image_decode_window), or whether the image goes through ferry_image_augment's random
 * resized crop to 8 x 8 (which decodes only the box of a JPEG, at a DCT scale when the box is
 * 16 or more on both sides; the seed from the first byte); the rest is the encoded image.
 * Checked: a decode either fails
 * with a message and no tensor, or gives a uint8 [height, width, channels] tensor of exactly
 * height x width x channels bytes, within the limit and with the channels asked for (or 1 to 4
 * for the image's own). Everything made is freed: the runtime's allocator must hold no block of
 * this input at the end (checked through the runtime stats).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry.h"

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "fuzz_image.c:%d: check failed: %s\n", __LINE__, #cond);                                   \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

static ferry_runtime *rt;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!rt) CHECK(ferry_runtime_create(NULL, &rt) == FERRY_OK);
    if (size < 2) return 0;
    static const int channels[4] = {0, 1, 3, 4};
    ferry_decode_image_options o = {.channels = channels[data[0] & 3], .max_pixels = (data[0] & 4) ? 4096 : 0};
    ferry_runtime_stats before, after;
    CHECK(ferry_runtime_stats_get(rt, &before) == FERRY_OK);
    ferry_tensor *t = NULL;
    ferry_image_window win = {1, 2, 2, 3};
    bool window = (data[0] & 8) != 0;
    bool augment = !window && (data[0] & 16) != 0;
    int rc;
    if (augment) {
        const void *p = data + 1;
        size_t n = size - 1;
        ferry_tensor *bytes;
        CHECK(ferry_tensor_create_bytes(rt, 0, NULL, &p, &n, &bytes) == FERRY_OK);
        ferry_image_augment_options ao = {.channels = o.channels,
                                          .max_pixels = o.max_pixels,
                                          .crop = FERRY_IMAGE_CROP_RANDOM_RESIZED,
                                          .height = 8,
                                          .width = 8,
                                          .flip = 0.5};
        rc = ferry_image_augment(rt, bytes, &ao, data[0] >> 5, &t);
        ferry_tensor_unref(bytes);
    } else {
        rc = window ? ferry_image_decode_window(rt, data + 1, size - 1, &win, &o, &t)
                    : ferry_image_decode(rt, data + 1, size - 1, &o, &t);
    }
    if (rc != FERRY_OK) {
        CHECK(t == NULL);
        CHECK(ferry_last_error()[0] != '\0');
    } else {
        CHECK(ferry_tensor_dtype(t) == FERRY_DTYPE_UINT8 && ferry_tensor_rank(t) == 3);
        int64_t h = ferry_tensor_dim(t, 0), w = ferry_tensor_dim(t, 1), c = ferry_tensor_dim(t, 2);
        CHECK(h > 0 && w > 0 && c >= 1 && c <= 4);
        if (window) CHECK(h == win.height && w == win.width);
        if (augment) CHECK(h == 8 && w == 8);
        if (o.channels) CHECK(c == o.channels);
        CHECK(h * w <= (o.max_pixels ? o.max_pixels : (int64_t)1 << 26));
        CHECK(ferry_tensor_nbytes(t) == (size_t)(h * w * c));
        const uint8_t *px = ferry_tensor_data(t);
        unsigned sum = 0;
        for (size_t i = 0; i < ferry_tensor_nbytes(t); i++) sum += px[i]; /* every byte readable */
        (void)sum;
        ferry_tensor_unref(t);
    }
    CHECK(ferry_runtime_stats_get(rt, &after) == FERRY_OK);
    CHECK(after.blocks_allocated == before.blocks_allocated);
    return 0;
}
