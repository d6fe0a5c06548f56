/*
 * image_codec.h - test helpers for the image tests: images as tensors, and encoded images made
 * with the codecs' own encoders (libjpeg here), so that the expected pixels are known. Include after runner.h, with
 * HAVE_CODECS defined where jpeglib.h (after stdio.h) is included.
 */
#ifndef FERRY_TEST_IMAGE_CODEC_H
#define FERRY_TEST_IMAGE_CODEC_H

/* A uint8 [h, w, c] tensor holding px. */
__attribute__((unused)) static ferry_tensor *image_of(ferry_runtime *rt, int h, int w, int c, const uint8_t *px) {
    int64_t dims[3] = {h, w, c};
    ferry_tensor *t;
    ASSERT_OK(ferry_tensor_create(rt, FERRY_DTYPE_UINT8, 3, dims, &t));
    memcpy(ferry_tensor_mutable_data(t), px, (size_t)h * w * c);
    return t;
}

#ifdef HAVE_CODECS
/* Encoded bytes, malloc'd. */
typedef struct buf {
    uint8_t *p;
    size_t n;
} buf;

/* px (h rows of w pixels of c = 1 or 3 channels) as a baseline JPEG of the given quality. */
__attribute__((unused)) static buf jpeg_encode(const uint8_t *px, int w, int h, int c, int quality) {
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr je;
    ci.err = jpeg_std_error(&je);
    jpeg_create_compress(&ci);
    unsigned char *out = NULL;
    unsigned long n = 0;
    jpeg_mem_dest(&ci, &out, &n);
    ci.image_width = (JDIMENSION)w;
    ci.image_height = (JDIMENSION)h;
    ci.input_components = c;
    ci.in_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, quality, TRUE);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)ci.next_scanline * w * c);
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    buf b = {malloc(n), n};
    memcpy(b.p, out, n);
    free(out);
    return b;
}
#endif

#endif
