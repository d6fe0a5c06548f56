/*
 * zip.c - `zip(inputs...)`: tuples of the inputs' elements at the same position, components
 * concatenated in input order; ends with the shortest input.
 *
 * Inputs are pulled in order at every position. When an input fails at a position, the inputs
 * after it are still pulled at that position (and their elements or errors dropped), so all
 * inputs stay aligned; the first error is the tuple's error. The first input to end ends the
 * zip for good: the inputs after it are not pulled at that position, and nothing is pulled
 * again. State: the end flag and every input's state in order; skip forwards to every input.
 * Runs on the consumer's thread; no threads or locks.
 */
#include "ops.h"

typedef struct zip_it {
    ferry__iter base;
    bool done;
    size_t n;
    ferry__iter **inputs;
    ferry_element **pulled; /* scratch: one element per input */
} zip_it;

static void zip_drop(zip_it *it, size_t upto) {
    for (size_t i = 0; i < upto; i++) {
        ferry_element_free(it->pulled[i]);
        it->pulled[i] = NULL;
    }
}

static int zip_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    zip_it *it = (zip_it *)it_;
    if (it->done) return FERRY_END;
    int err = FERRY_OK;
    ferry__status tmp;
    for (size_t i = 0; i < it->n; i++) {
        it->pulled[i] = NULL;
        int rc = ferry__iter_next(it->inputs[i], &it->pulled[i], err ? &tmp : st);
        if (rc == FERRY_END) {
            zip_drop(it, i);
            it->done = true;
            return FERRY_END;
        }
        if (rc != FERRY_OK && !err) err = rc;
    }
    if (err) {
        zip_drop(it, it->n);
        return err;
    }
    for (size_t i = 0; i < it->n; i++) {
        if (it->pulled[i]->n != it->inputs[i]->ds->ncomp) {
            size_t got = it->pulled[i]->n;
            zip_drop(it, it->n);
            return ferry__fail(st, FERRY_ETYPE, "zip: input %zu (%s) produced %zu components but declares %zu", i,
                               it->inputs[i]->ds->name, got, it->inputs[i]->ds->ncomp);
        }
    }
    ferry_element *e = ferry__element_new(it_->ctx.rt, it_->ds->ncomp);
    if (!e) {
        zip_drop(it, it->n);
        return ferry__fail(st, FERRY_ENOMEM, "zip: allocating an element failed");
    }
    size_t k = 0;
    for (size_t i = 0; i < it->n; i++) {
        ferry_element *p = it->pulled[i];
        for (uint32_t j = 0; j < p->n; j++) {
            e->t[k++] = p->t[j];
            p->t[j] = NULL;
        }
        ferry_element_free(p);
        it->pulled[i] = NULL;
    }
    FERRY_ASSERT(k == it_->ds->ncomp);
    *out = e;
    return FERRY_OK;
}

static int zip_skip(ferry__iter *it_, int64_t n, int64_t *skipped, ferry__status *st) {
    zip_it *it = (zip_it *)it_;
    *skipped = 0;
    if (it->done) return FERRY_OK;
    int64_t least = n;
    for (size_t i = 0; i < it->n; i++) {
        int64_t s = 0;
        int rc = ferry__iter_skip(it->inputs[i], n, &s, st);
        if (rc) return rc;
        if (s < least) least = s;
    }
    if (least < n) it->done = true;
    *skipped = least;
    return FERRY_OK;
}

static int zip_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    zip_it *it = (zip_it *)it_;
    ferry__w_u8(w, it->done ? 1 : 0);
    for (size_t i = 0; i < it->n; i++) {
        int rc = ferry__iter_save(it->inputs[i], w, st);
        if (rc) return rc;
    }
    return FERRY_OK;
}

static void zip_destroy(ferry__iter *it_) {
    zip_it *it = (zip_it *)it_;
    ferry_runtime *rt = it_->ds->rt;
    for (size_t i = 0; it->inputs && i < it->n; i++) ferry__iter_free(it->inputs[i]);
    ferry__free(rt, it->inputs);
    ferry__free(rt, it->pulled);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable zip_iter_vt = {zip_next, zip_save, zip_skip, zip_destroy};

static int zip_make(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                    ferry__status *st) {
    zip_it *it = ferry__iter_alloc(ds, ctx, &zip_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    it->inputs = ferry__calloc(ds->rt, ds->ninputs, sizeof *it->inputs);
    it->pulled = ferry__calloc(ds->rt, ds->ninputs, sizeof *it->pulled);
    int rc = FERRY_OK;
    if (!it->inputs || !it->pulled) rc = ferry__fail(st, FERRY_ENOMEM, "zip: allocating the iterator failed");
    else it->n = ds->ninputs;
    if (!rc && state) {
        uint8_t done = 0;
        rc = ferry__r_u8(state, &done, st);
        if (!rc && done > 1)
            rc = ferry__fail(st, FERRY_ECORRUPT, "zip: saved end flag is %u, not 0 or 1", (unsigned)done);
        it->done = done == 1;
    }
    for (size_t i = 0; !rc && i < it->n; i++) rc = ferry__iter_make(ds->inputs[i], ctx, state, &it->inputs[i], st);
    if (rc) {
        zip_destroy(&it->base);
        return rc;
    }
    *out = &it->base;
    return FERRY_OK;
}

static const ferry__dataset_vtable zip_vt = {.make = zip_make, .destroy = NULL};

int ferry_dataset_zip(size_t n, ferry_dataset *const *inputs, const ferry_zip_options *opts, ferry_dataset **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    FERRY__CHECK_ARG(n >= 1 && n <= 4096, FERRY_EINVAL, "%s: argument 'n' is %zu; it must be 1 to 4096", __func__, n);
    FERRY__CHECK_ARG(inputs != NULL, FERRY_EINVAL, "%s: argument 'inputs' is NULL", __func__);
    if (opts) {
        int rc = ferry__check_name(__func__, opts->name);
        if (rc) return rc;
    }
    size_t ncomp = 0;
    for (size_t i = 0; i < n; i++) {
        char arg[32];
        snprintf(arg, sizeof arg, "inputs[%zu]", i);
        int rc = ferry__check_dataset(inputs[i], __func__, arg);
        if (rc) return rc;
        FERRY__CHECK_ARG(inputs[i]->rt == inputs[0]->rt, FERRY_EINVAL,
                         "%s: inputs[%zu] belongs to another runtime than inputs[0]", __func__, i);
        ncomp += inputs[i]->ncomp;
    }
    ferry_runtime *rt = inputs[0]->rt;
    ferry_tensor_spec *specs = ncomp ? ferry__calloc(rt, ncomp, sizeof *specs) : NULL;
    if (ncomp && !specs) return ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the specs failed", __func__);
    /* Cardinality: the shortest known length; unknown unless a known 0 settles it. */
    int64_t finite = -1;
    bool unknown = false;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t c = inputs[i]->cardinality;
        if (c == FERRY_UNKNOWN) unknown = true;
        else if (c >= 0 && (finite < 0 || c < finite)) finite = c;
        for (size_t j = 0; j < inputs[i]->ncomp; j++) specs[k++] = inputs[i]->specs[j];
    }
    int64_t card = finite == 0 ? 0 : unknown ? FERRY_UNKNOWN : finite >= 0 ? finite : FERRY_INFINITE;
    ferry_dataset *ds;
    int rc = ferry__dataset_new(rt, &zip_vt, "zip", sizeof(ferry_dataset), n, inputs, ncomp, specs, card, &ds);
    ferry__free(rt, specs);
    if (rc) return rc;
    ferry__dataset_hash_i64(ds, (int64_t)n);
    ds->no_errors = true;
    for (size_t i = 0; i < n; i++) ds->no_errors = ds->no_errors && inputs[i]->no_errors;
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}
