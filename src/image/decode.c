/*
 * decode.c - decode_image: the format sniffed from the first bytes, then the format's decoder;
 * as a direct call (ferry_image_decode) and as a map over a dataset (ferry_dataset_decode_image).
 *
 * The map is an ordinary ferry_dataset_map of decode_fn, so it runs inline or on the executor
 * like any map, its errors take their element's position, and it is tuned, traced and reported
 * as a map named "decode_image". Its options live in a small block the dataset owns (user_free).
 */
#include "image/image.h"

#include <stdio.h>
#include <string.h>

static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

ferry_image_format ferry_image_sniff(const void *data, size_t len) {
    const uint8_t *p = data;
    if (!p) return FERRY_IMAGE_FORMAT_UNKNOWN;
    if (len >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return FERRY_IMAGE_FORMAT_JPEG;
    if (len >= 8 && memcmp(p, png_sig, 8) == 0) return FERRY_IMAGE_FORMAT_PNG;
    return FERRY_IMAGE_FORMAT_UNKNOWN;
}

const char *ferry_image_format_name(ferry_image_format format) {
    switch (format) {
    case FERRY_IMAGE_FORMAT_JPEG: return "jpeg";
    case FERRY_IMAGE_FORMAT_PNG: return "png";
    default: return "unknown";
    }
}

int ferry__image_decode(ferry_runtime *rt, const uint8_t *p, size_t n, const ferry__image_req *req, ferry_tensor **out,
                        ferry__status *st) {
    *out = NULL;
    switch (ferry_image_sniff(p, n)) {
    case FERRY_IMAGE_FORMAT_JPEG: return ferry__jpeg_decode(rt, p, n, req, out, st);
    case FERRY_IMAGE_FORMAT_PNG: return ferry__png_decode(rt, p, n, req, out, st);
    default: break;
    }
    char head[3 * 8 + 1] = "";
    for (size_t i = 0; i < n && i < 8; i++) snprintf(head + 3 * i, sizeof head - 3 * i, "%02x ", p[i]);
    if (n) head[3 * (n < 8 ? n : 8) - 1] = '\0';
    return ferry__fail(st, FERRY_EUNSUPPORTED, "not a JPEG or PNG image: %zu bytes starting with %s", n,
                       n ? head : "nothing");
}

int ferry__image_window_check(const ferry__image_req *req, int64_t w, int64_t h, const char *fmt, ferry__status *st) {
    if (req->y >= 0 && req->x >= 0 && req->height >= 1 && req->width >= 1 && req->y <= h - req->height &&
        req->x <= w - req->width)
        return FERRY_OK;
    return ferry__fail(st, FERRY_EINVAL,
                       "%s: the window (y %lld, x %lld, height %lld, width %lld) is not inside the image of %lld x "
                       "%lld pixels",
                       fmt, (long long)req->y, (long long)req->x, (long long)req->height, (long long)req->width,
                       (long long)w, (long long)h);
}

/* Checks the options a decode reads; fills req. */
static int image_req(const char *fn, const ferry_decode_image_options *opts, ferry__image_req *req) {
    ferry_decode_image_options o = {0};
    if (opts) o = *opts;
    FERRY__CHECK_ARG(o.channels == 0 || o.channels == 1 || o.channels == 3 || o.channels == 4, FERRY_EINVAL,
                     "%s: opts->channels is %d; it must be 0 (the image's own), 1, 3 or 4", fn, o.channels);
    FERRY__CHECK_ARG(o.max_pixels >= 0, FERRY_EINVAL, "%s: opts->max_pixels is %lld; it must be >= 0 (0: %lld)", fn,
                     (long long)o.max_pixels, (long long)FERRY__IMAGE_MAX_PIXELS_DEFAULT);
    memset(req, 0, sizeof *req);
    req->channels = o.channels;
    req->max_pixels = o.max_pixels ? o.max_pixels : FERRY__IMAGE_MAX_PIXELS_DEFAULT;
    return FERRY_OK;
}

static int decode_public(const char *fn, ferry_runtime *rt, const void *data, size_t len,
                         const ferry_image_window *window, const ferry_decode_image_options *opts, ferry_tensor **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", fn);
    *out = NULL;
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", fn);
    FERRY__CHECK_ARG(data != NULL && len > 0, FERRY_EINVAL, "%s: argument 'data' is %s", fn, data ? "empty" : "NULL");
    ferry__image_req req;
    int rc = image_req(fn, opts, &req);
    if (rc) return rc;
    if (window) {
        req.crop = true;
        req.y = window->y, req.x = window->x, req.height = window->height, req.width = window->width;
    }
    ferry__status st;
    rc = ferry__image_decode(rt, data, len, &req, out, &st);
    if (rc) return ferry__set_last_error(rc, "%s: %s", fn, st.msg);
    return FERRY_OK;
}

int ferry_image_decode_window(ferry_runtime *rt, const void *data, size_t len, const ferry_image_window *window,
                              const ferry_decode_image_options *opts, ferry_tensor **out) {
    if (!window) {
        ferry__clear_last_error();
        if (out) *out = NULL;
        return ferry__set_last_error(FERRY_EINVAL, "%s: argument 'window' is NULL", __func__);
    }
    return decode_public(__func__, rt, data, len, window, opts, out);
}

int ferry_image_decode(ferry_runtime *rt, const void *data, size_t len, const ferry_decode_image_options *opts,
                       ferry_tensor **out) {
    return decode_public(__func__, rt, data, len, NULL, opts, out);
}

/* ---- the map --------------------------------------------------------------------------------- */
typedef struct decode_user {
    ferry_runtime *rt;
    ferry__image_req req;
    size_t component;
} decode_user;

static void decode_user_free(void *u) {
    decode_user *d = u;
    ferry__free(d->rt, d);
}

static int decode_fn(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    const decode_user *d = user;
    ferry_tensor *src = ferry_element_get(in, d->component);
    const uint8_t *p = NULL;
    size_t n = 0;
    int rc = src ? ferry_tensor_bytes_get(src, 0, &p, &n) : FERRY_EINVAL;
    if (rc || ferry_tensor_rank(src) != 0) {
        ferry_element_free(in);
        return ferry_context_fail(ctx, FERRY_ETYPE, "decode_image: element %lld: component %zu is not a bytes scalar",
                                  (long long)ferry_context_index(ctx), d->component);
    }
    ferry_tensor *img;
    ferry__status st;
    rc = ferry__image_decode(d->rt, p, n, &d->req, &img, &st);
    if (rc) {
        ferry_element_free(in);
        return ferry_context_fail(ctx, rc, "decode_image: element %lld: %s", (long long)ferry_context_index(ctx),
                                  st.msg);
    }
    rc = ferry_element_set(in, d->component, img); /* takes img */
    if (rc) {
        ferry_element_free(in);
        return ferry_context_fail(ctx, rc, "decode_image: element %lld: replacing the component failed",
                                  (long long)ferry_context_index(ctx));
    }
    *out = in;
    return FERRY_OK;
}

int ferry_dataset_decode_image(ferry_dataset *in, const ferry_decode_image_options *opts, ferry_dataset **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    int rc = ferry__check_dataset(in, __func__, "in");
    if (rc) return rc;
    ferry__image_req req;
    rc = image_req(__func__, opts, &req);
    if (rc) return rc;
    size_t comp = opts ? opts->component : 0;
    FERRY__CHECK_ARG(comp < in->ncomp, FERRY_EINVAL, "%s: opts->component is %zu; the input has %zu components",
                     __func__, comp, in->ncomp);
    const ferry_tensor_spec *s = &in->specs[comp];
    FERRY__CHECK_ARG(s->dtype == FERRY_DTYPE_BYTES && (s->shape.rank == 0 || s->shape.rank == FERRY_UNKNOWN_RANK),
                     FERRY_EINVAL, "%s: component %zu is declared %s of rank %d; it must be a bytes scalar", __func__,
                     comp, ferry_dtype_name(s->dtype), s->shape.rank);
    ferry_tensor_spec *specs = ferry__calloc(in->rt, in->ncomp, sizeof *specs);
    decode_user *u = ferry__calloc(in->rt, 1, sizeof *u);
    if (!specs || !u) {
        ferry__free(in->rt, specs);
        ferry__free(in->rt, u);
        return ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the map's options failed", __func__);
    }
    memcpy(specs, in->specs, in->ncomp * sizeof *specs);
    specs[comp] = (ferry_tensor_spec){
        .dtype = FERRY_DTYPE_UINT8,
        .shape = {3, {FERRY_UNKNOWN_DIM, FERRY_UNKNOWN_DIM, req.channels ? req.channels : FERRY_UNKNOWN_DIM}}};
    *u = (decode_user){.rt = in->rt, .req = req, .component = comp};
    ferry_map_options mo = {.name = opts && opts->name && opts->name[0] ? opts->name : "decode_image",
                            .num_parallel_calls = opts ? opts->num_parallel_calls : 0,
                            .relaxed_order = opts && opts->relaxed_order,
                            .reorder_window = opts ? opts->reorder_window : 0,
                            .num_outputs = in->ncomp,
                            .output_specs = specs,
                            .user_free = decode_user_free,
                            /* the decode's settings, part of the fingerprint through the map's
                               seed (decode_fn draws no random numbers): a file cache made with
                               other settings is not reused */
                            .seed = (uint64_t)req.channels << 56 ^ (uint64_t)req.max_pixels};
    rc = ferry_dataset_map(in, decode_fn, u, &mo, out);
    ferry__free(in->rt, specs);
    if (rc) {
        decode_user_free(u);                           /* the map does not own it when it fails */
        return ferry__last_error_prefix(rc, __func__); /* its message names ferry_dataset_map */
    }
    return FERRY_OK;
}
