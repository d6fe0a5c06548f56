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

int ferry__image_req_make(const char *fn, int channels, int64_t max_pixels, ferry__image_req *req) {
    FERRY__CHECK_ARG(channels == 0 || channels == 1 || channels == 3 || channels == 4, FERRY_EINVAL,
                     "%s: opts->channels is %d; it must be 0 (the image's own), 1, 3 or 4", fn, channels);
    FERRY__CHECK_ARG(max_pixels >= 0, FERRY_EINVAL, "%s: opts->max_pixels is %lld; it must be >= 0 (0: %lld)", fn,
                     (long long)max_pixels, (long long)FERRY__IMAGE_MAX_PIXELS_DEFAULT);
    memset(req, 0, sizeof *req);
    req->channels = channels;
    req->max_pixels = max_pixels ? max_pixels : FERRY__IMAGE_MAX_PIXELS_DEFAULT;
    return FERRY_OK;
}

/* Checks the options a decode reads; fills req. */
static int image_req(const char *fn, const ferry_decode_image_options *opts, ferry__image_req *req) {
    return ferry__image_req_make(fn, opts ? opts->channels : 0, opts ? opts->max_pixels : 0, req);
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

/* ---- the maps ------------------------------------------------------------------------------- */
static void image_user_free(void *u) {
    ferry__image_user *b = u;
    ferry__free(b->rt, b);
}

int ferry__image_map(const char *fn, const char *op, ferry_dataset *in, ferry_map_fn f, ferry__image_user *user,
                     ferry_tensor_spec spec, const char *name, int num_parallel_calls, bool relaxed_order,
                     int reorder_window, uint64_t seed, ferry_dataset **out) {
    ferry_tensor_spec *specs = ferry__calloc(in->rt, in->ncomp, sizeof *specs);
    if (!specs) {
        image_user_free(user);
        return ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the map's options failed", fn);
    }
    memcpy(specs, in->specs, in->ncomp * sizeof *specs);
    specs[user->component] = spec;
    ferry_map_options mo = {.name = name && name[0] ? name : op,
                            .num_parallel_calls = num_parallel_calls,
                            .relaxed_order = relaxed_order,
                            .reorder_window = reorder_window,
                            .num_outputs = in->ncomp,
                            .output_specs = specs,
                            .user_free = image_user_free,
                            .seed = seed};
    int rc = ferry_dataset_map(in, f, user, &mo, out);
    ferry__free(in->rt, specs);
    if (rc) {
        image_user_free(user);                   /* the map does not own it when it fails */
        return ferry__last_error_prefix(rc, fn); /* its message names ferry_dataset_map */
    }
    return FERRY_OK;
}

int ferry__image_map_put(ferry_context *ctx, const char *op, size_t component, int rc, const char *why,
                         ferry_tensor *img, ferry_element *in, ferry_element **out) {
    if (rc == FERRY_OK) {
        rc = ferry_element_set(in, component, img); /* takes img */
        why = "replacing the component failed";
    }
    if (rc) {
        ferry_element_free(in);
        return ferry_context_fail(ctx, rc, "%s: element %lld: %s", op, (long long)ferry_context_index(ctx), why);
    }
    *out = in;
    return FERRY_OK;
}

typedef struct decode_user {
    ferry__image_user base;
    ferry__image_req req;
} decode_user;

static int decode_fn(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    const decode_user *d = user;
    ferry_tensor *src = ferry_element_get(in, d->base.component);
    const uint8_t *p = NULL;
    size_t n = 0;
    int rc = src ? ferry_tensor_bytes_get(src, 0, &p, &n) : FERRY_EINVAL;
    if (rc || ferry_tensor_rank(src) != 0) {
        char why[64];
        snprintf(why, sizeof why, "component %zu is not a bytes scalar", d->base.component);
        return ferry__image_map_put(ctx, "decode_image", d->base.component, FERRY_ETYPE, why, NULL, in, out);
    }
    ferry_tensor *img = NULL;
    ferry__status st;
    rc = ferry__image_decode(d->base.rt, p, n, &d->req, &img, &st);
    return ferry__image_map_put(ctx, "decode_image", d->base.component, rc, st.msg, img, in, out);
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
    decode_user *u = ferry__calloc(in->rt, 1, sizeof *u);
    if (!u) return ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the map's options failed", __func__);
    *u = (decode_user){.base = {.rt = in->rt, .component = comp}, .req = req};
    ferry_tensor_spec spec = {
        .dtype = FERRY_DTYPE_UINT8,
        .shape = {3, {FERRY_UNKNOWN_DIM, FERRY_UNKNOWN_DIM, req.channels ? req.channels : FERRY_UNKNOWN_DIM}}};
    /* the decode's settings, part of the fingerprint through the map's seed (decode_fn draws no
       random numbers): a file cache made with other settings is not reused */
    return ferry__image_map(__func__, "decode_image", in, decode_fn, &u->base, spec, opts ? opts->name : NULL,
                            opts ? opts->num_parallel_calls : 0, opts && opts->relaxed_order,
                            opts ? opts->reorder_window : 0, (uint64_t)req.channels << 56 ^ (uint64_t)req.max_pixels,
                            out);
}
