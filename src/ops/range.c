/*
 * range.c - the `range` source: int64 scalars start, start+step, ... before stop.
 *
 * The smallest op, and the model for the others: a dataset struct embedding ferry_dataset, an
 * iterator struct embedding ferry__iter, and the five protocol functions. State is the index of
 * the next value, so save/restore and skip are O(1). No threads, no locks.
 */
#include "ops.h"

typedef struct range_ds {
    ferry_dataset base;
    int64_t start, stop, step;
} range_ds;

typedef struct range_it {
    ferry__iter base;
    int64_t next_index; /* values handed out so far */
    int64_t count;      /* values in total */
} range_it;

static int range_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    range_it *it = (range_it *)it_;
    const range_ds *ds = (const range_ds *)it_->ds;
    if (it->next_index >= it->count) return FERRY_END;
    ferry_element *e;
    int rc = ferry__element_new_single(it_->ctx.rt, FERRY_DTYPE_INT64, 0, NULL, &e, st);
    if (rc) return rc;
    int64_t v = ds->start + it->next_index * ds->step;
    memcpy(e->t[0]->data, &v, sizeof v);
    it->next_index++;
    *out = e;
    return FERRY_OK;
}

static int range_skip(ferry__iter *it_, int64_t n, int64_t *skipped, ferry__status *st) {
    FERRY__UNUSED(st);
    range_it *it = (range_it *)it_;
    int64_t left = it->count - it->next_index;
    *skipped = n < left ? n : left;
    it->next_index += *skipped;
    return FERRY_OK;
}

static int range_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    FERRY__UNUSED(st);
    ferry__w_i64(w, ((range_it *)it_)->next_index);
    return FERRY_OK;
}

static void range_destroy(ferry__iter *it) { ferry__iter_release(it); }

static const ferry__iter_vtable range_iter_vt = {range_next, range_save, range_skip, range_destroy};

static int range_make(ferry_dataset *ds_, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                      ferry__status *st) {
    const range_ds *ds = (const range_ds *)ds_;
    range_it *it = ferry__iter_alloc(ds_, ctx, &range_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    it->count = ds_->cardinality;
    if (state) {
        int rc = ferry__r_i64(state, &it->next_index, st);
        if (rc == FERRY_OK && (it->next_index < 0 || it->next_index > it->count))
            rc = ferry__fail(st, FERRY_ECORRUPT, "range: saved index %lld is outside [0, %lld]",
                             (long long)it->next_index, (long long)it->count);
        if (rc) {
            ferry__iter_release(&it->base);
            return rc;
        }
    }
    (void)ds;
    *out = &it->base;
    return FERRY_OK;
}

static const ferry__dataset_vtable range_vt = {.make = range_make, .destroy = NULL};

int ferry_dataset_range(ferry_runtime *rt, int64_t start, int64_t stop, int64_t step, const ferry_range_options *opts,
                        ferry_dataset **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", __func__);
    FERRY__CHECK_ARG(step != 0, FERRY_EINVAL, "%s: argument 'step' is 0; it must be nonzero", __func__);
    int rc = opts ? ferry__check_name(__func__, opts->name) : FERRY_OK;
    if (rc) return rc;
    /* Count in unsigned 128-bit-free arithmetic: ceil((stop - start) / step) when positive. */
    int64_t count = 0;
    if ((step > 0 && stop > start) || (step < 0 && stop < start)) {
        uint64_t span = step > 0 ? (uint64_t)stop - (uint64_t)start : (uint64_t)start - (uint64_t)stop;
        uint64_t s = step > 0 ? (uint64_t)step : (uint64_t)0 - (uint64_t)step;
        count = (int64_t)((span - 1) / s + 1);
    }
    ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 0}};
    ferry_dataset *ds;
    rc = ferry__dataset_new(rt, &range_vt, "range", sizeof(range_ds), 0, NULL, 1, &spec, count, &ds);
    if (rc) return rc;
    range_ds *r = (range_ds *)ds;
    r->start = start;
    r->stop = stop;
    r->step = step;
    ferry__dataset_hash_i64(ds, start);
    ferry__dataset_hash_i64(ds, stop);
    ferry__dataset_hash_i64(ds, step);
    ds->no_errors = true;
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}
