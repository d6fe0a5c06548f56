/*
 * take.c - `take(count)`: the input up to its `count`-th element (count FERRY_INFINITE: all of it).
 *
 * As tf.data's take: elements count, errors do not. An error passes through in its position and
 * does not use up the count, so take(n) hands out n elements (and the errors among them) when the
 * input has n. Once `count` elements are out the input is not pulled again. The cardinality is
 * min(count, the input's), counting elements, as tf.data's; an error adds a position to it.
 * State: elements taken plus the input's state. Skip forwards to the input's skip (cheap where
 * the input's is), bounded by what is left to take, when the input has no error positions
 * (ferry_dataset.no_errors); otherwise it pulls, so that errors are not counted.
 * Runs on the consumer's thread; no threads or locks.
 */
#include "ops.h"

typedef struct take_ds {
    ferry_dataset base;
    int64_t count; /* FERRY_INFINITE: all */
} take_ds;

typedef struct take_it {
    ferry__iter base;
    ferry__iter *input;
    int64_t taken;
} take_it;

static int64_t take_left(const take_it *it) {
    int64_t count = ((const take_ds *)it->base.ds)->count;
    return count < 0 ? INT64_MAX : count - it->taken;
}

static int take_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    take_it *it = (take_it *)it_;
    if (take_left(it) <= 0) {
        /* the input is not pulled again: its counts kept on this thread go to its stats now,
           not when the iterator is freed (stats read at the end of an epoch count them) */
        ferry__iter_flush_stats(it->input);
        return FERRY_END;
    }
    int rc = ferry__iter_next(it->input, out, st);
    if (rc == FERRY_OK && it->taken < INT64_MAX) it->taken++;
    return rc;
}

static int take_skip(ferry__iter *it_, int64_t n, int64_t *skipped, ferry__status *st) {
    take_it *it = (take_it *)it_;
    if (!it->input->ds->no_errors) return ferry__iter_skip_by_next(it_, n, skipped, st);
    int64_t left = take_left(it);
    int rc = ferry__iter_skip(it->input, n < left ? n : left, skipped, st);
    if (it->taken <= INT64_MAX - *skipped) it->taken += *skipped;
    return rc;
}

static int take_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    take_it *it = (take_it *)it_;
    ferry__w_i64(w, it->taken);
    return ferry__iter_save(it->input, w, st);
}

static void take_destroy(ferry__iter *it_) {
    ferry__iter_free(((take_it *)it_)->input);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable take_iter_vt = {take_next, take_save, take_skip, take_destroy};

static int take_make(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                     ferry__status *st) {
    take_it *it = ferry__iter_alloc(ds, ctx, &take_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    int64_t count = ((const take_ds *)ds)->count;
    int rc = FERRY_OK;
    if (state) {
        rc = ferry__r_i64(state, &it->taken, st);
        if (!rc && (it->taken < 0 || (count >= 0 && it->taken > count)))
            rc = ferry__fail(st, FERRY_ECORRUPT, "take: saved count %lld is outside [0, %lld]", (long long)it->taken,
                             (long long)(count >= 0 ? count : INT64_MAX));
    }
    if (!rc) rc = ferry__iter_make(ds->inputs[0], ctx, state, &it->input, st);
    if (rc) {
        take_destroy(&it->base);
        return rc;
    }
    *out = &it->base;
    return FERRY_OK;
}

static const ferry__dataset_vtable take_vt = {.make = take_make, .destroy = NULL};

int ferry_dataset_take(ferry_dataset *in, int64_t count, const ferry_take_options *opts, ferry_dataset **out) {
    FERRY__OP_PROLOGUE(in, opts, out);
    FERRY__CHECK_ARG(count >= 0 || count == FERRY_INFINITE, FERRY_EINVAL,
                     "%s: argument 'count' is %lld; it must be >= 0 or FERRY_INFINITE (all)", __func__,
                     (long long)count);
    int64_t n = in->cardinality, card;
    if (count < 0) card = n;
    else if (n == FERRY_UNKNOWN) card = FERRY_UNKNOWN;
    else if (n == FERRY_INFINITE) card = count;
    else card = FERRY__MIN(n, count);
    ferry_dataset *ds;
    int rc = ferry__dataset_new(in->rt, &take_vt, "take", sizeof(take_ds), 1, &in, in->ncomp, in->specs, card, &ds);
    if (rc) return rc;
    ((take_ds *)ds)->count = count;
    ferry__dataset_hash_i64(ds, count);
    ds->no_errors = in->no_errors;
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}
