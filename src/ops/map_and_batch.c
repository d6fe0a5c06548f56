/*
 * map_and_batch.c - `map_and_batch`: batch(n) over a parallel map, run as one stage.
 *
 * No constructor makes it: the rewrite rule below (batch's vtable.rewrite, run by the pass of
 * core/rewrite.c when an iterator is made) puts it in place of a batch right over a parallel map
 * in input order with the default window, as tf.data's map_and_batch_fusion does. Unfused, rows
 * cross from the map's workers to the consumer one by one, and the consumer frees what a worker
 * allocated; here a worker calls the function on a whole batch's positions and stacks each
 * output into the batch as soon as it is made (while it is still in cache), and the consumer
 * takes whole batches. Positions, per-element seeds, errors and saved state are exactly those of
 * batch over map (the engine is the map's own, ferry__map_make_batched):
 *   - an error in a batch's positions, or rows that do not stack, are handed out as batch would;
 *     the map then has no whole batch at that position, and this op batches row by row through
 *     the map's next (ferry__batch_rows, the code batch itself runs) until the map's workers have
 *     moved their batch boundaries after it (ferry__map_batch_boundary);
 *   - the state is batch's (its `ended` flag) followed by the map's, each under its op's tag, so
 *     that a state saved with the rewrite restores without it and the other way round.
 *
 * Objects: mab_ds holds references to the map and the batch it replaces (their parameters, user
 * data and specs live there), its input is the map's input. mab_it: the map's iterator, the
 * stacker for row-by-row batches and the `ended` flag. Threads: the map's workers, on the
 * runtime's executor; next, save and destroy run on the consumer's thread.
 * Stats: one record ("map_and_batch"): batches out, and the map's worker measurements.
 */
#include "ops.h"

typedef struct mab_ds {
    ferry_dataset base;
    ferry_dataset *map;   /* reference: the map replaced */
    ferry_dataset *batch; /* reference: the batch replaced */
    int64_t n;
    bool drop;
} mab_ds;

typedef struct mab_it {
    ferry__iter base;
    ferry__iter *map;  /* the map's iterator (whole batches when fused) */
    ferry__stack *stk; /* row-by-row batches */
    bool fused;
    bool ended;
} mab_it;

/* Positions of the map, one by one, past the counting wrapper (this op's record counts batches). */
static int mab_pull(void *arg, ferry_element **out, ferry__status *st) {
    ferry__iter *map = arg;
    *out = NULL;
    return map->vt->next(map, out, st);
}

static int mab_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    mab_it *it = (mab_it *)it_;
    const mab_ds *ds = (const mab_ds *)it_->ds;
    if (it->ended) return FERRY_END;
    if (it->fused) {
        int64_t rows = 0;
        ferry_element *b = NULL;
        int rc = ferry__map_next_batch(it->map, &b, &rows, st);
        if (rc == FERRY_END) it->ended = true;
        if (rc) return rc;
        if (b) {
            if (rows < ds->n) { /* only the input's end makes a short batch */
                it->ended = true;
                if (ds->drop) {
                    ferry_element_free(b);
                    return FERRY_END;
                }
            }
            *out = b;
            return FERRY_OK;
        }
    }
    int rc = ferry__batch_rows(it->stk, ds->n, ds->drop, mab_pull, it->map, &it->ended, out, st);
    if (it->fused && rc != FERRY_END) ferry__map_batch_boundary(it->map);
    return rc;
}

/* batch's state: its `ended` flag, then its input's (the map's, under the map's tag). */
static int mab_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    mab_it *it = (mab_it *)it_;
    ferry__w_u8(w, it->ended ? 1 : 0);
    return ferry__iter_save(it->map, w, st);
}

static void mab_destroy(ferry__iter *it_) {
    mab_it *it = (mab_it *)it_;
    ferry__iter_free(it->map);
    ferry__stack_free(it->stk);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable mab_iter_vt = {mab_next, mab_save, NULL, mab_destroy};

static int mab_make(ferry_dataset *ds_, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                    ferry__status *st) {
    const mab_ds *ds = (const mab_ds *)ds_;
    mab_it *it = ferry__iter_alloc(ds_, ctx, &mab_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    int rc = ferry__stack_new(ctx->rt, ds_->ncomp, ds->n, &it->stk, st);
    if (!rc && state) {
        uint8_t ended;
        rc = ferry__r_u8(state, &ended, st);
        if (!rc && ended > 1)
            rc = ferry__fail(st, FERRY_ECORRUPT, "batch: saved state corrupt: flag %u at offset %zu", ended,
                             ferry__r_offset(state) - 1);
        it->ended = ended == 1;
    }
    if (!rc) rc = ferry__map_make_batched(ds->map, ds_, ds->n, ctx, state, &it->map, st);
    if (rc) {
        mab_destroy(&it->base);
        return rc;
    }
    it->fused = ferry__map_is_fused(it->map);
    *out = &it->base;
    return FERRY_OK;
}

static void mab_ds_destroy(ferry_dataset *ds_) {
    mab_ds *ds = (mab_ds *)ds_;
    ferry_dataset_unref(ds->map);
    ferry_dataset_unref(ds->batch);
}

static const ferry__dataset_vtable mab_vt = {.make = mab_make, .destroy = mab_ds_destroy};

void ferry__map_and_batch_rewrite(ferry_dataset *batch, int64_t n, bool drop, ferry_dataset *const *inputs,
                                  ferry_dataset **out) {
    *out = NULL;
    ferry_dataset *map = inputs[0];
    if (!ferry__map_fusable(map, n)) return;
    ferry_dataset *ds;
    if (ferry__dataset_new(batch->rt, &mab_vt, "map_and_batch", sizeof(mab_ds), 1, &map->inputs[0], batch->ncomp,
                           batch->specs, batch->cardinality, &ds) != FERRY_OK) {
        ferry__clear_last_error(); /* no rewrite: the graph runs as written */
        return;
    }
    mab_ds *m = (mab_ds *)ds;
    m->map = ferry_dataset_ref(map);
    m->batch = ferry_dataset_ref(batch);
    m->n = n;
    m->drop = drop;
    ds->unordered = batch->unordered;
    ds->no_errors = batch->no_errors;
    ds->runs_ahead = true;
    ds->params = batch->params;
    ds->tune_home = batch;                  /* what the tuner learns outlives this iterator's fused node */
    if (map->label[0] || batch->label[0]) { /* the names the user gave, both */
        char label[2 * FERRY_NAME_MAX + 2];
        snprintf(label, sizeof label, "%s+%s", FERRY__LABEL(map), FERRY__LABEL(batch));
        ferry__dataset_set_label(ds, label);
    }
    ferry__dataset_seal(ds);
    *out = ds;
}
