/*
 * jpeg.c - JPEG decoding through libjpeg-turbo's libjpeg API.
 *
 * libjpeg reports a fatal error by calling error_exit, which by default prints and exits: here
 * it formats the message and longjmps back into ferry__jpeg_decode, which destroys the
 * decompressor and returns the message as a status. Warnings (corrupt data that libjpeg would
 * repair, "Premature end of JPEG file" when the data stops early) are errors too: the first is
 * kept, and a decode that had one fails, so damaged data never comes out as pixels (a window's
 * decode reads no further than it needs when the data ends with the end-of-image marker: damage
 * below the window is then not seen; data cut short always is). Nothing is printed:
 * output_message does nothing.
 *
 * The pixel count is checked after jpeg_read_header, before jpeg_start_decompress allocates
 * libjpeg's buffers and before the output tensor exists. libjpeg allocates its own working memory
 * with malloc (not through the runtime's hook); the output tensor goes through the hook.
 */
#include "image/image.h"

#include <stdio.h>
#include <string.h>

#ifdef FERRY_HAVE_JPEG
#include <jpeglib.h>
#include <jerror.h>
#include <setjmp.h>

/* A progressive JPEG's scans are each a pass over the whole image: more than this many (a
 * handful is usual) is refused, as libjpeg-turbo's own fuzzers do (TJPARAM_SCANLIMIT), so that a
 * small file cannot keep a decoder busy for minutes. */
#define JPEG_MAX_SCANS 500

typedef struct jpeg_err {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    int code; /* the status of a longjmp: 0 for libjpeg's own errors (corrupt or truncated) */
    char msg[JMSG_LENGTH_MAX];
    int warned; /* a warning was issued: the decode fails */
    int eof;    /* ... and it was "premature end of file" */
} jpeg_err;

static void jpeg_fail_exit(j_common_ptr c) {
    jpeg_err *e = (jpeg_err *)(void *)c->err;
    (*c->err->format_message)(c, e->msg);
    e->eof = c->err->msg_code == JWRN_JPEG_EOF;
    longjmp(e->jump, 1);
}

static void jpeg_note(j_common_ptr c, int level) {
    jpeg_err *e = (jpeg_err *)(void *)c->err;
    if (level >= 0 || e->warned) return; /* trace messages; or a later warning */
    (*c->err->format_message)(c, e->msg);
    e->warned = 1;
    e->eof = c->err->msg_code == JWRN_JPEG_EOF;
}

static void jpeg_quiet(j_common_ptr c) { (void)c; }

static void jpeg_progress(j_common_ptr c) {
    struct jpeg_decompress_struct *d = (struct jpeg_decompress_struct *)(void *)c;
    if (!d->progressive_mode || d->input_scan_number <= JPEG_MAX_SCANS) return;
    jpeg_err *e = (jpeg_err *)(void *)c->err;
    snprintf(e->msg, sizeof e->msg, "a progressive image of more than %d scans", JPEG_MAX_SCANS);
    e->code = FERRY_ETOOLARGE;
    longjmp(e->jump, 1);
}

/* What the decode keeps across a longjmp lives here, not in automatic variables. */
typedef struct jpeg_job {
    struct jpeg_decompress_struct d;
    jpeg_err err;
    struct jpeg_progress_mgr progress;
    ferry_tensor *t;
    uint8_t *row; /* a window's decoded row (its iMCU columns) */
    bool created;
    bool tail_ok; /* the data ends with the end-of-image marker (FF D9) */
} jpeg_job;

static int jpeg_warned(jpeg_job *j, ferry__status *st) {
    return ferry__fail(st, j->err.eof ? FERRY_ETRUNCATED : FERRY_ECORRUPT, "JPEG: %s", j->err.msg);
}

/* Decodes only req's window: the rows above it skipped (jpeg_skip_scanlines: their entropy data
 * is read, not their pixels), the iMCU columns that hold it decoded (jpeg_crop_scanline), the
 * window's own columns copied out; the rows below are never decoded (the decode is aborted). */
static int jpeg_window(jpeg_job *j, ferry_runtime *rt, const ferry__image_req *req, int c, ferry__status *st) {
    struct jpeg_decompress_struct *d = &j->d;
    JDIMENSION xoff = (JDIMENSION)req->x, cols = (JDIMENSION)req->width;
    jpeg_crop_scanline(d, &xoff, &cols);
    if (req->y > 0 && jpeg_skip_scanlines(d, (JDIMENSION)req->y) != (JDIMENSION)req->y)
        return ferry__fail(st, FERRY_ETRUNCATED, "JPEG: the data ends before row %lld", (long long)req->y);
    if (j->err.warned) return jpeg_warned(j, st);
    int64_t dims[3] = {req->height, req->width, c};
    int rc = ferry__tensor_new(rt, FERRY_DTYPE_UINT8, 3, dims, &j->t, st);
    if (rc) return rc;
    j->row = ferry__alloc(rt, (size_t)d->output_width * (size_t)c);
    if (!j->row) return ferry__fail(st, FERRY_ENOMEM, "JPEG: allocating a row of %u pixels failed", d->output_width);
    uint8_t *px = ferry_tensor_mutable_data(j->t);
    size_t skip = (size_t)(req->x - (int64_t)xoff) * (size_t)c, line = (size_t)req->width * (size_t)c;
    for (int64_t r = 0; r < req->height; r++) {
        JSAMPROW row = j->row;
        if (jpeg_read_scanlines(d, &row, 1) != 1)
            return ferry__fail(st, FERRY_ETRUNCATED, "JPEG: the data ends at row %lld", (long long)(req->y + r));
        if (j->err.warned) return jpeg_warned(j, st);
        memcpy(px + (size_t)r * line, j->row + skip, line);
    }
    /* The rows below the window are not needed, and not decoded when the data ends with the
     * end-of-image marker. Data that does not may be cut short below the window: then the rest is
     * read (entropy-decoded, not output), so that a truncated image is an error whatever the
     * window, as a whole decode would say. */
    if (j->tail_ok) {
        jpeg_abort_decompress(d);
        return FERRY_OK;
    }
    JDIMENSION left = d->output_height - d->output_scanline;
    /* all but the last row skipped (libjpeg skips a skip to the very end without reading), then
       the last row read: the data is read to its end */
    if (left > 1 && jpeg_skip_scanlines(d, left - 1) != left - 1)
        return ferry__fail(st, FERRY_ETRUNCATED, "JPEG: the data ends at row %u of %u", d->output_scanline,
                           d->output_height);
    if (j->err.warned) return jpeg_warned(j, st);
    JSAMPROW last = j->row;
    if (left > 0 && jpeg_read_scanlines(d, &last, 1) != 1)
        return ferry__fail(st, FERRY_ETRUNCATED, "JPEG: the data ends at row %u of %u", d->output_scanline,
                           d->output_height);
    if (j->err.warned) return jpeg_warned(j, st);
    jpeg_finish_decompress(d);
    if (j->err.warned) return jpeg_warned(j, st);
    return FERRY_OK;
}


static int jpeg_run(jpeg_job *j, ferry_runtime *rt, const uint8_t *p, size_t n, const ferry__image_req *req,
                    ferry__status *st) {
    struct jpeg_decompress_struct *d = &j->d;
    int rc0;
    jpeg_create_decompress(d);
    j->created = true;
    j->progress.progress_monitor = jpeg_progress;
    d->progress = &j->progress;
    jpeg_mem_src(d, p, (unsigned long)n);
    jpeg_read_header(d, TRUE);
    if (j->err.warned) return jpeg_warned(j, st);
    int64_t w = d->image_width, h = d->image_height;
    if (w * h > req->max_pixels)
        return ferry__fail(st, FERRY_ETOOLARGE,
                           "JPEG of %lld x %lld pixels is over the limit of %lld pixels (max_pixels)", (long long)w,
                           (long long)h, (long long)req->max_pixels);
    if (d->jpeg_color_space == JCS_CMYK || d->jpeg_color_space == JCS_YCCK)
        return ferry__fail(st, FERRY_EUNSUPPORTED, "JPEG: CMYK images are not supported (%lld x %lld)", (long long)w,
                           (long long)h);
    ferry__image_req r = *req; /* what the plan, if any, decides */
    if (r.plan && (rc0 = r.plan(r.plan_arg, w, h, &r, st)) != FERRY_OK) return rc0;
    int c = r.channels ? r.channels : d->num_components == 1 ? 1 : 3;
    d->out_color_space = c == 1 ? JCS_GRAYSCALE : c == 3 ? JCS_RGB : JCS_EXT_RGBA;
    if (r.scale > 0 && r.scale < 8) d->scale_num = (unsigned)r.scale, d->scale_denom = 8;
    jpeg_calc_output_dimensions(d);
    if (r.crop && (rc0 = ferry__image_window_check(&r, d->output_width, d->output_height, "JPEG", st)) != FERRY_OK)
        return rc0;
    jpeg_start_decompress(d);
    if (j->err.warned) return jpeg_warned(j, st);
    if ((int)d->output_components != c)
        return ferry__fail(st, FERRY_ECORRUPT, "JPEG: the decoder gave %d channels, not %d", d->output_components, c);
    if (r.crop) return jpeg_window(j, rt, &r, c, st);
    int64_t dims[3] = {d->output_height, d->output_width, c};
    int rc = ferry__tensor_new(rt, FERRY_DTYPE_UINT8, 3, dims, &j->t, st);
    if (rc) return rc;
    uint8_t *px = ferry_tensor_mutable_data(j->t);
    size_t stride = (size_t)dims[1] * (size_t)c;
    while (d->output_scanline < d->output_height) {
        JSAMPROW row = px + (size_t)d->output_scanline * stride;
        if (jpeg_read_scanlines(d, &row, 1) != 1) break;
        if (j->err.warned) return jpeg_warned(j, st);
    }
    if (d->output_scanline < d->output_height)
        return ferry__fail(st, FERRY_ETRUNCATED, "JPEG: the data ends at row %u of %u", d->output_scanline,
                           d->output_height);
    jpeg_finish_decompress(d);
    if (j->err.warned) return jpeg_warned(j, st);
    return FERRY_OK;
}

int ferry__jpeg_decode(ferry_runtime *rt, const uint8_t *p, size_t n, const ferry__image_req *req, ferry_tensor **out,
                       ferry__status *st) {
    *out = NULL;
    jpeg_job *j = ferry__calloc(rt, 1, sizeof *j);
    if (!j) return ferry__fail(st, FERRY_ENOMEM, "JPEG: allocating the decoder failed");
    j->d.err = jpeg_std_error(&j->err.pub);
    j->err.pub.error_exit = jpeg_fail_exit;
    j->err.pub.emit_message = jpeg_note;
    j->err.pub.output_message = jpeg_quiet;
    j->tail_ok = n >= 2 && p[n - 2] == 0xFF && p[n - 1] == 0xD9;
    int rc;
    if (setjmp(j->err.jump))
        rc = ferry__fail(st,
                         j->err.code  ? j->err.code
                         : j->err.eof ? FERRY_ETRUNCATED
                                      : FERRY_ECORRUPT,
                         "JPEG: %s", j->err.msg);
    else rc = jpeg_run(j, rt, p, n, req, st);
    if (j->created) jpeg_destroy_decompress(&j->d);
    ferry__free(rt, j->row);
    if (rc) ferry_tensor_unref(j->t);
    else *out = j->t;
    ferry__free(rt, j);
    return rc;
}

#else

int ferry__jpeg_decode(ferry_runtime *rt, const uint8_t *p, size_t n, const ferry__image_req *req, ferry_tensor **out,
                       ferry__status *st) {
    (void)rt, (void)p, (void)n, (void)req;
    *out = NULL;
    return ferry__fail(st, FERRY_EUNSUPPORTED, "JPEG: this build of ferry has no JPEG decoder (libjpeg-turbo)");
}

#endif
