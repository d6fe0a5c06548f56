/*
 * unbatch.c - `unbatch`: every input element of dim 0 = k becomes k elements, row i of each
 * component (ferry__tensor_row: the rows share the input's bytes, nothing is copied).
 *
 * Objects
 *   unbatch_it  its input iterator, the current input element and the index of its next row,
 *               and `before`: the input's saved state taken just before the current element
 *               was pulled.
 *
 * Threads and locks: none; runs on the consumer's thread and drives its input itself.
 *
 * Order and errors: rows in order, elements in order. An input error is returned in its
 * position. An element whose components disagree on dim 0, or that has a scalar component, is
 * FERRY_ETYPE in its position (one position, as the input element it replaces). Elements with
 * dim 0 == 0 produce nothing. A scalar component is refused at construction when the spec
 * says rank 0 (FERRY_EINVAL), and at run time otherwise.
 *
 * Save/restore: with no current element the state is the input's state. Mid-element it is the
 * row index plus `before`, the input state from before that element: restore makes the input
 * from `before`, pulls the element again and goes on at the row. `before` is refreshed with
 * ferry__iter_save each time an element is pulled (positions and seeds, a few bytes for most
 * inputs), so save never has to look back.
 */
#include "ops.h"

typedef struct unbatch_it {
    ferry__iter base;
    ferry__iter *input;
    ferry_element *cur; /* the element being split, or NULL */
    int64_t rows, idx;  /* its dim 0 and the next row to hand out */
    ferry__writer before;
} unbatch_it;

/* Checks e: every component rank >= 1 and the same dim 0. Sets *rows. */
static int check_rows(const ferry_element *e, size_t nc, int64_t *rows, ferry__status *st) {
    char a[128], b[128];
    if (e->n != nc)
        return ferry__fail(st, FERRY_ETYPE, "unbatch: an input element has %u components but the input's spec has %zu",
                           e->n, nc);
    for (size_t c = 0; c < nc; c++) {
        const ferry_tensor *t = e->t[c];
        if (t->rank < 1)
            return ferry__fail(st, FERRY_ETYPE,
                               "unbatch: component %zu of an input element is a scalar; unbatch needs "
                               "rank >= 1 to split along dim 0",
                               c);
        if (c > 0 && t->dims[0] != *rows) {
            ferry_shape s0 = ferry_tensor_shape(e->t[0]), s1 = ferry_tensor_shape(t);
            return ferry__fail(st, FERRY_ETYPE,
                               "unbatch: components of an input element disagree on dim 0: component 0 has shape %s, "
                               "component %zu has shape %s",
                               ferry__shape_str(&s0, a, sizeof a), c, ferry__shape_str(&s1, b, sizeof b));
        }
        *rows = t->dims[0];
    }
    if (nc == 0) *rows = 0;
    return FERRY_OK;
}

static int emit_row(unbatch_it *it, ferry_element **out, ferry__status *st) {
    size_t nc = it->base.ds->ncomp;
    ferry_element *e = ferry__element_new(it->base.ctx.rt, nc);
    if (!e) return ferry__fail(st, FERRY_ENOMEM, "unbatch: allocating an element failed");
    for (size_t c = 0; c < nc; c++) {
        int rc = ferry__tensor_row(it->cur->t[c], it->idx, &e->t[c], st);
        if (rc) {
            ferry_element_free(e);
            return rc;
        }
    }
    if (++it->idx == it->rows) {
        ferry_element_free(it->cur);
        it->cur = NULL;
    }
    *out = e;
    return FERRY_OK;
}

static int unbatch_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    unbatch_it *it = (unbatch_it *)it_;
    const size_t nc = it_->ds->ncomp;
    while (!it->cur) {
        it->before.size = 0;
        it->before.failed = false;
        int rc = ferry__iter_save(it->input, &it->before, st);
        if (rc) return rc;
        ferry_element *e = NULL;
        rc = ferry__iter_next(it->input, &e, st);
        if (rc) return rc; /* FERRY_END or the input's error in its position */
        int64_t rows = 0;
        rc = check_rows(e, nc, &rows, st);
        if (rc) {
            ferry_element_free(e);
            return rc;
        }
        if (rows == 0) {
            ferry_element_free(e);
            continue;
        }
        it->cur = e;
        it->rows = rows;
        it->idx = 0;
    }
    return emit_row(it, out, st);
}

static int unbatch_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    unbatch_it *it = (unbatch_it *)it_;
    if (!it->cur) {
        ferry__w_u8(w, 0);
        return ferry__iter_save(it->input, w, st);
    }
    ferry__w_u8(w, 1);
    ferry__w_i64(w, it->idx);
    ferry__w_u64(w, it->before.size);
    ferry__w_bytes(w, it->before.data, it->before.size);
    return FERRY_OK;
}

static void unbatch_destroy(ferry__iter *it_) {
    unbatch_it *it = (unbatch_it *)it_;
    ferry__iter_free(it->input);
    ferry_element_free(it->cur);
    ferry__writer_fini(&it->before);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable unbatch_iter_vt = {unbatch_next, unbatch_save, NULL, unbatch_destroy};

/* Restores mid-element: the input from `before`, then the element again, then the row. */
static int restore_mid(unbatch_it *it, ferry__reader *state, ferry__status *st) {
    ferry_dataset *ds = it->base.ds;
    int64_t idx;
    uint64_t size;
    int rc = ferry__r_i64(state, &idx, st);
    if (!rc) rc = ferry__r_u64(state, &size, st);
    if (rc) return rc;
    if (size > ferry__r_left(state) || idx < 1)
        return ferry__fail(st, FERRY_ECORRUPT,
                           "unbatch: saved state corrupt at offset %zu: row %lld, input state of "
                           "%llu bytes with %zu left",
                           ferry__r_offset(state), (long long)idx, (unsigned long long)size, ferry__r_left(state));
    ferry__reader sub = *state;
    sub.end = sub.p + size;
    ferry__w_bytes(&it->before, sub.p, (size_t)size);
    if (it->before.failed) return ferry__fail(st, FERRY_ENOMEM, "unbatch: copying the saved input state failed");
    rc = ferry__iter_make(ds->inputs[0], &it->base.ctx, &sub, &it->input, st);
    if (rc) return rc;
    if (sub.p != sub.end)
        return ferry__fail(st, FERRY_ECORRUPT,
                           "unbatch: saved state corrupt: %zu unread bytes in the input state at "
                           "offset %zu",
                           (size_t)(sub.end - sub.p), ferry__r_offset(&sub));
    state->p = sub.end;
    ferry_element *e = NULL;
    rc = ferry__iter_next(it->input, &e, st);
    if (rc) {
        if (rc == FERRY_END || rc > 0)
            return ferry__fail(st, FERRY_ECORRUPT,
                               "unbatch: restoring: the input ended where the saved state expects "
                               "the element being split (the input is not deterministic?)");
        ferry__status_prefix(st, "unbatch: restoring: the input failed on the element being split");
        return rc;
    }
    int64_t rows = 0;
    rc = check_rows(e, ds->ncomp, &rows, st);
    if (!rc && idx >= rows)
        rc = ferry__fail(st, FERRY_ECORRUPT,
                         "unbatch: restoring: the saved row %lld is not below the element's %lld "
                         "rows",
                         (long long)idx, (long long)rows);
    if (rc) {
        ferry_element_free(e);
        return rc;
    }
    it->cur = e;
    it->rows = rows;
    it->idx = idx;
    return FERRY_OK;
}

static int unbatch_make(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                        ferry__status *st) {
    unbatch_it *it = ferry__iter_alloc(ds, ctx, &unbatch_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    ferry__writer_init(&it->before, &ctx->rt->alloc);
    int rc = FERRY_OK;
    uint8_t mid = 0;
    if (state) {
        rc = ferry__r_u8(state, &mid, st);
        if (!rc && mid > 1)
            rc = ferry__fail(st, FERRY_ECORRUPT, "unbatch: saved state corrupt: flag %u at offset %zu", mid,
                             ferry__r_offset(state) - 1);
    }
    if (!rc) rc = mid ? restore_mid(it, state, st) : ferry__iter_make(ds->inputs[0], ctx, state, &it->input, st);
    if (rc) {
        unbatch_destroy(&it->base);
        return rc;
    }
    *out = &it->base;
    return FERRY_OK;
}

static const ferry__dataset_vtable unbatch_vt = {.make = unbatch_make, .destroy = NULL};

int ferry_dataset_unbatch(ferry_dataset *in, const ferry_unbatch_options *opts, ferry_dataset **out) {
    FERRY__OP_PROLOGUE(in, opts, out);
    ferry_runtime *rt = in->rt;
    size_t nc = in->ncomp;
    int64_t rows = -1; /* dim 0 shared by every component when all are known, else -1 */
    bool known = nc > 0;
    for (size_t c = 0; c < nc; c++) {
        const ferry_tensor_spec *s = &in->specs[c];
        FERRY__CHECK_ARG(s->shape.rank != 0, FERRY_EINVAL,
                         "%s: component %zu is a scalar (rank 0); unbatch needs rank >= 1", __func__, c);
        int64_t d = s->shape.rank > 0 ? s->shape.dims[0] : -1;
        if (d < 0) {
            known = false;
        } else if (rows >= 0 && d != rows) {
            return ferry__set_last_error(FERRY_EINVAL,
                                         "%s: component %zu has dim 0 of %lld but an earlier "
                                         "component has %lld; all components must agree on dim 0",
                                         __func__, c, (long long)d, (long long)rows);
        } else {
            rows = d;
        }
    }
    ferry_tensor_spec *specs = nc ? ferry__calloc(rt, nc, sizeof *specs) : NULL;
    if (nc && !specs) return ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the specs failed", __func__);
    for (size_t c = 0; c < nc; c++) {
        const ferry_tensor_spec *s = &in->specs[c];
        specs[c].dtype = s->dtype;
        specs[c].shape.rank = s->shape.rank < 0 ? FERRY_UNKNOWN_RANK : s->shape.rank - 1;
        for (int d = 1; d < s->shape.rank; d++) specs[c].shape.dims[d - 1] = s->shape.dims[d];
    }
    /* As tf.data: known when every component's dim 0 is known; infinite and unknown propagate. */
    int64_t card = FERRY_UNKNOWN;
    if (in->cardinality < 0) card = in->cardinality;
    else if (known && (rows == 0 || in->cardinality <= INT64_MAX / rows)) card = in->cardinality * rows;
    ferry_dataset *ds;
    int rc = ferry__dataset_new(rt, &unbatch_vt, "unbatch", sizeof(ferry_dataset), 1, &in, nc, specs, card, &ds);
    ferry__free(rt, specs);
    if (rc) return rc;
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}
