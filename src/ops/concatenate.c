/*
 * concatenate.c - `concatenate(a, b)`: every position of a, then every position of b.
 *
 * The two inputs must have the same number of components with the same dtypes; the shape of
 * each component is the most specific shape both fit (a dim that differs becomes unknown, a rank
 * that differs makes the rank unknown). b's iterator is made when a ends. Errors pass through
 * in their position. State: which input runs, whether its iterator exists, and its state; skip
 * forwards to the running input and moves on to b. Runs on the consumer's thread.
 */
#include "ops.h"

typedef struct concat_it {
    ferry__iter base;
    ferry__iter *input; /* the running input's iterator; NULL until b's is made */
    int which;          /* 0: a, 1: b */
} concat_it;

/* Makes the iterator of input `which` (fresh when state is NULL). */
static int concat_open(concat_it *it, ferry__reader *state, ferry__status *st) {
    return ferry__iter_make(it->base.ds->inputs[it->which], &it->base.ctx, state, &it->input, st);
}

static int concat_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    concat_it *it = (concat_it *)it_;
    for (;;) {
        if (!it->input) {
            int rc = concat_open(it, NULL, st);
            if (rc) return rc;
        }
        int rc = ferry__iter_next(it->input, out, st);
        if (rc != FERRY_END || it->which == 1) return rc;
        ferry__iter_free(it->input);
        it->input = NULL;
        it->which = 1;
    }
}

static int concat_skip(ferry__iter *it_, int64_t n, int64_t *skipped, ferry__status *st) {
    concat_it *it = (concat_it *)it_;
    *skipped = 0;
    for (;;) {
        if (!it->input) {
            int rc = concat_open(it, NULL, st);
            if (rc) return rc;
        }
        int64_t s = 0;
        int rc = ferry__iter_skip(it->input, n - *skipped, &s, st);
        *skipped += s;
        if (rc || *skipped == n || it->which == 1) return rc;
        ferry__iter_free(it->input);
        it->input = NULL;
        it->which = 1;
    }
}

static int concat_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    concat_it *it = (concat_it *)it_;
    ferry__w_u8(w, (uint8_t)it->which);
    ferry__w_u8(w, it->input ? 1 : 0);
    return it->input ? ferry__iter_save(it->input, w, st) : FERRY_OK;
}

static void concat_destroy(ferry__iter *it_) {
    ferry__iter_free(((concat_it *)it_)->input);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable concat_iter_vt = {concat_next, concat_save, concat_skip, concat_destroy};

static int concat_make(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                       ferry__status *st) {
    concat_it *it = ferry__iter_alloc(ds, ctx, &concat_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    int rc = FERRY_OK;
    uint8_t which = 0, has_input = 1;
    if (state) {
        rc = ferry__r_u8(state, &which, st);
        if (!rc) rc = ferry__r_u8(state, &has_input, st);
        if (!rc && (which > 1 || has_input > 1 || (which == 0 && !has_input)))
            rc = ferry__fail(st, FERRY_ECORRUPT, "concatenate: saved input %u / iterator flag %u is invalid",
                             (unsigned)which, (unsigned)has_input);
    }
    it->which = which;
    if (!rc && has_input) rc = concat_open(it, state, st);
    if (rc) {
        concat_destroy(&it->base);
        return rc;
    }
    *out = &it->base;
    return FERRY_OK;
}

static const ferry__dataset_vtable concat_vt = {.make = concat_make, .destroy = NULL};

int ferry_dataset_concatenate(ferry_dataset *a, ferry_dataset *b, const ferry_concatenate_options *opts,
                              ferry_dataset **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    int rc = ferry__check_dataset(a, __func__, "a");
    if (!rc) rc = ferry__check_dataset(b, __func__, "b");
    if (!rc && opts) rc = ferry__check_name(__func__, opts->name);
    if (rc) return rc;
    FERRY__CHECK_ARG(a->rt == b->rt, FERRY_EINVAL, "%s: 'a' and 'b' belong to different runtimes", __func__);
    FERRY__CHECK_ARG(a->ncomp == b->ncomp, FERRY_ETYPE, "%s: 'a' has %zu components but 'b' has %zu; they must match",
                     __func__, a->ncomp, b->ncomp);
    for (size_t i = 0; i < a->ncomp; i++)
        FERRY__CHECK_ARG(a->specs[i].dtype == b->specs[i].dtype, FERRY_ETYPE,
                         "%s: component %zu is %s in 'a' but %s in 'b'; dtypes must match", __func__, i,
                         ferry_dtype_name(a->specs[i].dtype), ferry_dtype_name(b->specs[i].dtype));
    ferry_tensor_spec *specs = a->ncomp ? ferry__calloc(a->rt, a->ncomp, sizeof *specs) : NULL;
    if (a->ncomp && !specs) return ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the specs failed", __func__);
    for (size_t i = 0; i < a->ncomp; i++) {
        const ferry_shape *x = &a->specs[i].shape, *y = &b->specs[i].shape;
        specs[i].dtype = a->specs[i].dtype;
        if (x->rank < 0 || x->rank != y->rank) {
            specs[i].shape.rank = FERRY_UNKNOWN_RANK;
            continue;
        }
        specs[i].shape.rank = x->rank;
        for (int d = 0; d < x->rank; d++)
            specs[i].shape.dims[d] = x->dims[d] == y->dims[d] ? x->dims[d] : FERRY_UNKNOWN_DIM;
    }
    int64_t na = a->cardinality, nb = b->cardinality, card;
    if (na == FERRY_INFINITE || nb == FERRY_INFINITE) card = FERRY_INFINITE;
    else if (na == FERRY_UNKNOWN || nb == FERRY_UNKNOWN) card = FERRY_UNKNOWN;
    else if (na > INT64_MAX - nb) card = FERRY_UNKNOWN;
    else card = na + nb;
    ferry_dataset *inputs[2] = {a, b}, *ds;
    rc = ferry__dataset_new(a->rt, &concat_vt, "concatenate", sizeof(ferry_dataset), 2, inputs, a->ncomp, specs, card,
                            &ds);
    ferry__free(a->rt, specs);
    if (rc) return rc;
    ds->no_errors = a->no_errors && b->no_errors;
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}
