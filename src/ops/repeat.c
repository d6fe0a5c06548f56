/*
 * repeat.c - `repeat(count)`: the input `count` times over (count FERRY_INFINITE: forever, 0: nothing).
 *
 * Every epoch runs a new input iterator, made when the epoch's first position is pulled, with
 * the iteration seed mix(seed, epoch): per-epoch randomness (a reshuffle, a random map) differs
 * between epochs and is the same on every run and after a restore. (The context's epoch0_seed
 * is mixed with 0 in every epoch: a cache below makes its content with it.) An epoch that ends without a
 * single position (elements and errors both count) ends the repeat, so repeating an empty input
 * forever is an empty stream, not a hang. Errors pass through in their position.
 *
 * State: the epoch number, whether the epoch's iterator exists, whether the epoch has produced a
 * position yet, whether the stream ended, and the epoch iterator's state. Skip forwards to the
 * epoch iterator and moves across epochs. Runs on the consumer's thread; no threads or locks.
 */
#include "ops.h"

typedef struct repeat_ds {
    ferry_dataset base;
    int64_t count; /* FERRY_INFINITE: forever */
} repeat_ds;

typedef struct repeat_it {
    ferry__iter base;
    ferry__iter *input; /* the current epoch's iterator, or NULL between epochs */
    int64_t epoch;
    bool nonempty; /* the current epoch produced at least one position */
    bool done;
} repeat_it;

enum { F_DONE = 1, F_INPUT = 2, F_NONEMPTY = 4 };

/* Makes the iterator of it->epoch, or sets done when there is none. state: NULL for a fresh one. */
static int repeat_open(repeat_it *it, ferry__reader *state, ferry__status *st) {
    const repeat_ds *ds = (const repeat_ds *)it->base.ds;
    if (ds->count >= 0 && it->epoch >= ds->count) {
        it->done = true;
        return FERRY_OK;
    }
    ferry__ictx ctx = it->base.ctx;
    ctx.seed = ferry__mix64(it->base.ctx.seed, (uint64_t)it->epoch);
    ctx.epoch0_seed = ferry__mix64(it->base.ctx.epoch0_seed, 0);
    int rc = ferry__iter_make(it->base.ds->inputs[0], &ctx, state, &it->input, st);
    if (rc) return rc;
    if (!state) it->nonempty = false;
    return FERRY_OK;
}

/* The current epoch ended: moves to the next one, or ends the stream after an empty epoch. */
static void repeat_epoch_end(repeat_it *it) {
    ferry__iter_free(it->input);
    it->input = NULL;
    if (!it->nonempty) {
        it->done = true;
        return;
    }
    it->epoch++;
    it->nonempty = false;
}

static int repeat_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    repeat_it *it = (repeat_it *)it_;
    for (;;) {
        if (it->done) return FERRY_END;
        if (!it->input) {
            int rc = repeat_open(it, NULL, st);
            if (rc) return rc;
            if (it->done) return FERRY_END;
        }
        int rc = ferry__iter_next(it->input, out, st);
        if (rc != FERRY_END) {
            it->nonempty = true;
            return rc;
        }
        repeat_epoch_end(it); /* at most two rounds: a new epoch yields a position or is empty */
    }
}

static int repeat_skip(ferry__iter *it_, int64_t n, int64_t *skipped, ferry__status *st) {
    repeat_it *it = (repeat_it *)it_;
    *skipped = 0;
    while (*skipped < n && !it->done) {
        if (!it->input) {
            int rc = repeat_open(it, NULL, st);
            if (rc) return rc;
            if (it->done) break;
        }
        int64_t s = 0;
        int rc = ferry__iter_skip(it->input, n - *skipped, &s, st);
        *skipped += s;
        if (s > 0) it->nonempty = true;
        if (rc) return rc;
        if (*skipped < n) repeat_epoch_end(it);
        if (ferry__cancelled(it_->ctx.cancel))
            return ferry__fail(st, FERRY_ECANCELED, "repeat: iterator is being destroyed");
    }
    return FERRY_OK;
}

static int repeat_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    repeat_it *it = (repeat_it *)it_;
    ferry__w_i64(w, it->epoch);
    ferry__w_u8(w, (uint8_t)((it->done ? F_DONE : 0) | (it->input ? F_INPUT : 0) | (it->nonempty ? F_NONEMPTY : 0)));
    if (it->input) return ferry__iter_save(it->input, w, st);
    return FERRY_OK;
}

static void repeat_destroy(ferry__iter *it_) {
    ferry__iter_free(((repeat_it *)it_)->input);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable repeat_iter_vt = {repeat_next, repeat_save, repeat_skip, repeat_destroy};

static int repeat_make(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                       ferry__status *st) {
    repeat_it *it = ferry__iter_alloc(ds, ctx, &repeat_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    int64_t count = ((const repeat_ds *)ds)->count;
    int rc = FERRY_OK;
    if (state) {
        uint8_t flags = 0;
        rc = ferry__r_i64(state, &it->epoch, st);
        if (!rc) rc = ferry__r_u8(state, &flags, st);
        if (!rc) {
            bool has_input = flags & F_INPUT;
            if (flags > 7 || it->epoch < 0 || (count >= 0 && it->epoch > count) ||
                (has_input && ((flags & F_DONE) || (count >= 0 && it->epoch >= count))))
                rc = ferry__fail(st, FERRY_ECORRUPT, "repeat: saved epoch %lld with flags %u is invalid for count %lld",
                                 (long long)it->epoch, (unsigned)flags, (long long)count);
            it->done = flags & F_DONE;
            it->nonempty = flags & F_NONEMPTY;
            if (!rc && has_input) rc = repeat_open(it, state, st);
        }
    }
    if (rc) {
        repeat_destroy(&it->base);
        return rc;
    }
    *out = &it->base;
    return FERRY_OK;
}

static const ferry__dataset_vtable repeat_vt = {.make = repeat_make, .destroy = NULL};

int ferry_dataset_repeat(ferry_dataset *in, int64_t count, const ferry_repeat_options *opts, ferry_dataset **out) {
    FERRY__OP_PROLOGUE(in, opts, out);
    FERRY__CHECK_ARG(count >= 0 || count == FERRY_INFINITE, FERRY_EINVAL,
                     "%s: argument 'count' is %lld; it must be >= 0 or FERRY_INFINITE (forever)", __func__,
                     (long long)count);
    int64_t n = in->cardinality, card;
    if (count == 0 || n == 0) card = 0;
    else if (n == FERRY_INFINITE) card = FERRY_INFINITE;
    else if (n == FERRY_UNKNOWN) card = FERRY_UNKNOWN; /* an unknown input may turn out empty */
    else if (count < 0) card = FERRY_INFINITE;
    else if (n > INT64_MAX / count) card = FERRY_UNKNOWN; /* too many to count in int64 */
    else card = n * count;
    ferry_dataset *ds;
    int rc =
        ferry__dataset_new(in->rt, &repeat_vt, "repeat", sizeof(repeat_ds), 1, &in, in->ncomp, in->specs, card, &ds);
    if (rc) return rc;
    ((repeat_ds *)ds)->count = count;
    ferry__dataset_hash_i64(ds, count);
    ds->no_errors = in->no_errors;
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}
