/*
 * enumerate.c - `enumerate(start)`: (start + position, components...) with an int64 scalar
 * counter in front.
 *
 * The counter counts positions, so an error uses up its number like an element does (as tf.data's
 * zip of a range with the input). The input's tensors move into the new element without copies.
 * State: positions passed plus the input's state; skip forwards to the input's skip.
 * Runs on the consumer's thread; no threads or locks.
 */
#include "ops.h"

typedef struct enumerate_ds {
    ferry_dataset base;
    int64_t start;
} enumerate_ds;

typedef struct enumerate_it {
    ferry__iter base;
    ferry__iter *input;
    int64_t pos; /* input positions passed */
} enumerate_it;

static int enumerate_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    enumerate_it *it = (enumerate_it *)it_;
    ferry_element *in = NULL;
    int rc = ferry__iter_next(it->input, &in, st);
    if (rc == FERRY_END) return rc;
    int64_t pos = it->pos++;
    if (rc != FERRY_OK) return rc;
    ferry_tensor *t;
    rc = ferry__tensor_new(it_->ctx.rt, FERRY_DTYPE_INT64, 0, NULL, &t, st);
    if (rc) {
        ferry_element_free(in);
        ferry__status_prefix(st, "enumerate");
        return rc;
    }
    /* Wraps around past INT64_MAX instead of overflowing. */
    int64_t v = (int64_t)((uint64_t)((const enumerate_ds *)it_->ds)->start + (uint64_t)pos);
    memcpy(t->data, &v, sizeof v);
    ferry_element *e = ferry__element_new(it_->ctx.rt, (size_t)in->n + 1);
    if (!e) {
        ferry_tensor_unref(t);
        ferry_element_free(in);
        return ferry__fail(st, FERRY_ENOMEM, "enumerate: allocating an element failed");
    }
    e->t[0] = t;
    for (uint32_t i = 0; i < in->n; i++) {
        e->t[i + 1] = in->t[i];
        in->t[i] = NULL;
    }
    ferry_element_free(in);
    *out = e;
    return FERRY_OK;
}

static int enumerate_skip(ferry__iter *it_, int64_t n, int64_t *skipped, ferry__status *st) {
    enumerate_it *it = (enumerate_it *)it_;
    int rc = ferry__iter_skip(it->input, n, skipped, st);
    it->pos += *skipped;
    return rc;
}

static int enumerate_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    enumerate_it *it = (enumerate_it *)it_;
    ferry__w_i64(w, it->pos);
    return ferry__iter_save(it->input, w, st);
}

static void enumerate_destroy(ferry__iter *it_) {
    ferry__iter_free(((enumerate_it *)it_)->input);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable enumerate_iter_vt = {enumerate_next, enumerate_save, enumerate_skip, enumerate_destroy};

static int enumerate_make(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                          ferry__status *st) {
    enumerate_it *it = ferry__iter_alloc(ds, ctx, &enumerate_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    int rc = FERRY_OK;
    if (state) {
        rc = ferry__r_i64(state, &it->pos, st);
        if (!rc && it->pos < 0)
            rc = ferry__fail(st, FERRY_ECORRUPT, "enumerate: saved position %lld is negative", (long long)it->pos);
    }
    if (!rc) rc = ferry__iter_make(ds->inputs[0], ctx, state, &it->input, st);
    if (rc) {
        enumerate_destroy(&it->base);
        return rc;
    }
    *out = &it->base;
    return FERRY_OK;
}

static const ferry__dataset_vtable enumerate_vt = {.make = enumerate_make, .destroy = NULL};

int ferry_dataset_enumerate(ferry_dataset *in, const ferry_enumerate_options *opts, ferry_dataset **out) {
    FERRY__OP_PROLOGUE(in, opts, out);
    FERRY__CHECK_ARG(in->ncomp < 4096, FERRY_EINVAL, "%s: the input has %zu components; at most 4095", __func__,
                     in->ncomp);
    int64_t start = opts ? opts->start : 0;
    ferry_tensor_spec specs_local[16];
    ferry_tensor_spec *specs = specs_local;
    if (in->ncomp + 1 > 16) {
        specs = ferry__calloc(in->rt, in->ncomp + 1, sizeof *specs);
        if (!specs) return ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the specs failed", __func__);
    }
    memset(&specs[0], 0, sizeof specs[0]);
    specs[0].dtype = FERRY_DTYPE_INT64;
    specs[0].shape.rank = 0;
    for (size_t i = 0; i < in->ncomp; i++) specs[i + 1] = in->specs[i];
    ferry_dataset *ds;
    int rc = ferry__dataset_new(in->rt, &enumerate_vt, "enumerate", sizeof(enumerate_ds), 1, &in, in->ncomp + 1, specs,
                                in->cardinality, &ds);
    if (specs != specs_local) ferry__free(in->rt, specs);
    if (rc) return rc;
    ((enumerate_ds *)ds)->start = start;
    ferry__dataset_hash_i64(ds, start);
    ds->no_errors = in->no_errors;
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}
