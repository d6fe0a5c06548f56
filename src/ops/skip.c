/*
 * skip.c - `skip(count)`: the input without its first `count` elements (count FERRY_INFINITE: all
 * of them).
 *
 * As tf.data's skip: elements count, errors do not. An error met while skipping is handed out
 * in its position (it is not dropped and does not use up the count), and the next call goes on
 * skipping. When the input has no error positions (ferry_dataset.no_errors: range, slices, file
 * lists and what only passes them on) the elements are dropped through the input's skip, so a
 * source that can seek skips in O(1); otherwise they are pulled and freed. The cardinality,
 * counting elements as tf.data's, is the input's less count.
 * State: the elements still to drop plus the input's state.
 * Runs on the consumer's thread; no threads or locks.
 */
#include "ops.h"

typedef struct skip_ds {
    ferry_dataset base;
    int64_t count; /* FERRY_INFINITE: all */
} skip_ds;

typedef struct skip_it {
    ferry__iter base;
    ferry__iter *input;
    int64_t pending; /* elements still to drop before the first output */
} skip_it;

/* Drops the pending elements. FERRY_OK when none is left to drop (or the input ended), else an
 * error met on the way (a position of this op's output; pending stays as it is). A failing
 * input skip keeps what it did not drop pending. */
static int skip_pending(skip_it *it, ferry__status *st) {
    if (it->pending <= 0) return FERRY_OK;
    if (it->input->ds->no_errors) {
        int64_t done = 0;
        int rc = ferry__iter_skip(it->input, it->pending, &done, st);
        it->pending = rc ? it->pending - done : 0; /* all dropped, or the input ended first */
        return rc;
    }
    for (uint32_t k = 1; it->pending > 0; k++) {
        ferry_element *e;
        int rc = ferry__iter_next(it->input, &e, st);
        if (rc == FERRY_END) break;
        if (rc < 0) return rc;
        ferry_element_free(e);
        it->pending--;
        if ((k & 1023) == 0 && ferry__cancelled(it->base.ctx.cancel))
            return ferry__fail(st, FERRY_ECANCELED, "skip: the iterator is being destroyed");
    }
    it->pending = 0;
    return FERRY_OK;
}

static int skip_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    skip_it *it = (skip_it *)it_;
    int rc = skip_pending(it, st);
    if (rc) return rc;
    return ferry__iter_next(it->input, out, st);
}

static int skip_skip(ferry__iter *it_, int64_t n, int64_t *skipped, ferry__status *st) {
    skip_it *it = (skip_it *)it_;
    *skipped = 0;
    if (it->pending > 0 && !it->input->ds->no_errors) /* errors met while dropping are positions */
        return ferry__iter_skip_by_next(it_, n, skipped, st);
    int rc = skip_pending(it, st);
    if (rc) return rc;
    return ferry__iter_skip(it->input, n, skipped, st);
}

static int skip_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    skip_it *it = (skip_it *)it_;
    ferry__w_i64(w, it->pending);
    return ferry__iter_save(it->input, w, st);
}

static void skip_destroy(ferry__iter *it_) {
    ferry__iter_free(((skip_it *)it_)->input);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable skip_iter_vt = {skip_next, skip_save, skip_skip, skip_destroy};

static int skip_make(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                     ferry__status *st) {
    skip_it *it = ferry__iter_alloc(ds, ctx, &skip_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    int64_t count = ((const skip_ds *)ds)->count;
    int64_t total = count < 0 ? INT64_MAX : count;
    it->pending = total;
    int rc = FERRY_OK;
    if (state) {
        rc = ferry__r_i64(state, &it->pending, st);
        if (!rc && (it->pending < 0 || it->pending > total))
            rc = ferry__fail(st, FERRY_ECORRUPT, "skip: saved count %lld is outside [0, %lld]", (long long)it->pending,
                             (long long)total);
    }
    if (!rc) rc = ferry__iter_make(ds->inputs[0], ctx, state, &it->input, st);
    if (rc) {
        skip_destroy(&it->base);
        return rc;
    }
    *out = &it->base;
    return FERRY_OK;
}

static const ferry__dataset_vtable skip_vt = {.make = skip_make, .destroy = NULL};

int ferry_dataset_skip(ferry_dataset *in, int64_t count, const ferry_skip_options *opts, ferry_dataset **out) {
    FERRY__OP_PROLOGUE(in, opts, out);
    FERRY__CHECK_ARG(count >= 0 || count == FERRY_INFINITE, FERRY_EINVAL,
                     "%s: argument 'count' is %lld; it must be >= 0 or FERRY_INFINITE (all)", __func__,
                     (long long)count);
    int64_t n = in->cardinality, card;
    if (n == FERRY_INFINITE || n == FERRY_UNKNOWN) card = n;
    else if (count < 0) card = 0;
    else card = n > count ? n - count : 0;
    ferry_dataset *ds;
    int rc = ferry__dataset_new(in->rt, &skip_vt, "skip", sizeof(skip_ds), 1, &in, in->ncomp, in->specs, card, &ds);
    if (rc) return rc;
    ((skip_ds *)ds)->count = count;
    ferry__dataset_hash_i64(ds, count);
    ds->no_errors = in->no_errors;
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}
