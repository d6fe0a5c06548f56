/*
 * ignore_errors.c - `ignore_errors`: the input's elements without its error positions.
 *
 * Every error the input hands out is dropped and counted in this stage's `errors_dropped`
 * (an atomic add on the shared stats record; errors are rare, so no batching). The one error
 * that is never dropped is the cancellation of the iterator itself: otherwise an input that
 * keeps failing would hold up its destruction (every dropped error checks the flag).
 * State: the input's state (the dropped count is a statistic, not state). There is no cheap
 * skip: which positions are errors is only known by pulling them.
 * Runs on the consumer's thread; no threads or locks.
 */
#include "ops.h"

typedef struct ignore_it {
    ferry__iter base;
    ferry__iter *input;
} ignore_it;

static int ignore_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    ignore_it *it = (ignore_it *)it_;
    for (;;) {
        int rc = ferry__iter_next(it->input, out, st);
        if (rc >= 0) return rc;
        if (ferry__cancelled(it_->ctx.cancel)) {
            if (rc == FERRY_ECANCELED) return rc;
            return ferry__fail(st, FERRY_ECANCELED, "ignore_errors: iterator is being destroyed");
        }
        if (*out) { /* an input broke the protocol: nothing comes with an error */
            ferry_element_free(*out);
            *out = NULL;
        }
        if (it_->stats) atomic_fetch_add_explicit(&it_->stats->dropped, 1, memory_order_relaxed);
    }
}

static int ignore_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    return ferry__iter_save(((ignore_it *)it_)->input, w, st);
}

static void ignore_destroy(ferry__iter *it_) {
    ferry__iter_free(((ignore_it *)it_)->input);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable ignore_iter_vt = {ignore_next, ignore_save, NULL, ignore_destroy};

static int ignore_make(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                       ferry__status *st) {
    ignore_it *it = ferry__iter_alloc(ds, ctx, &ignore_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    int rc = ferry__iter_make(ds->inputs[0], ctx, state, &it->input, st);
    if (rc) {
        ignore_destroy(&it->base);
        return rc;
    }
    *out = &it->base;
    return FERRY_OK;
}

static const ferry__dataset_vtable ignore_vt = {.make = ignore_make, .destroy = NULL};

int ferry_dataset_ignore_errors(ferry_dataset *in, const ferry_ignore_errors_options *opts, ferry_dataset **out) {
    FERRY__OP_PROLOGUE(in, opts, out);
    /* Known: nothing from nothing, and an endless input never ends. Otherwise errors may drop
     * any number of positions. */
    int64_t n = in->cardinality;
    int64_t card = (n == 0 || n == FERRY_INFINITE) ? n : FERRY_UNKNOWN;
    ferry_dataset *ds;
    int rc = ferry__dataset_new(in->rt, &ignore_vt, "ignore_errors", sizeof(ferry_dataset), 1, &in, in->ncomp,
                                in->specs, card, &ds);
    if (rc) return rc;
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}
