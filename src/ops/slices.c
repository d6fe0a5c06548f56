/*
 * slices.c - the in-memory sources `from_tensor_slices` and `from_tensors`.
 *
 * Both datasets hold references to the caller's tensors (taken at construction, dropped when the
 * dataset goes), so the bytes live as long as any dataset or element needs them.
 *   from_tensor_slices: element i is row i along dim 0 of every tensor; each row is a view that
 *                       shares the tensor's bytes (ferry__tensor_row), numeric or FERRY_DTYPE_BYTES.
 *   from_tensors:       a single element holding new references to the tensors themselves.
 * One iterator serves both: its state is the index of the next element, so save/restore and
 * skip are O(1). No threads, no locks; the dataset is immutable after construction.
 */
#include "ops.h"

typedef struct slices_ds {
    ferry_dataset base;
    size_t n;
    ferry_tensor **tensors; /* references */
    bool whole;             /* from_tensors: one element of the whole tensors */
} slices_ds;

typedef struct slices_it {
    ferry__iter base;
    int64_t next_index; /* elements handed out (or skipped) so far */
    int64_t count;
} slices_it;

static int slices_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    slices_it *it = (slices_it *)it_;
    const slices_ds *ds = (const slices_ds *)it_->ds;
    if (it->next_index >= it->count) return FERRY_END;
    ferry_element *e = ferry__element_new(it_->ctx.rt, ds->n);
    if (!e) return ferry__fail(st, FERRY_ENOMEM, "%s: allocating an element failed", it_->ds->name);
    for (size_t i = 0; i < ds->n; i++) {
        if (ds->whole) {
            e->t[i] = ferry_tensor_ref(ds->tensors[i]);
        } else {
            int rc = ferry__tensor_row(ds->tensors[i], it->next_index, &e->t[i], st);
            if (rc) {
                ferry_element_free(e);
                ferry__status_prefix(st, "%s", it_->ds->name);
                return rc;
            }
        }
    }
    it->next_index++;
    *out = e;
    return FERRY_OK;
}

static int slices_skip(ferry__iter *it_, int64_t n, int64_t *skipped, ferry__status *st) {
    FERRY__UNUSED(st);
    slices_it *it = (slices_it *)it_;
    int64_t left = it->count - it->next_index;
    *skipped = n < left ? n : left;
    it->next_index += *skipped;
    return FERRY_OK;
}

static int slices_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    FERRY__UNUSED(st);
    ferry__w_i64(w, ((slices_it *)it_)->next_index);
    return FERRY_OK;
}

static void slices_destroy(ferry__iter *it) { ferry__iter_release(it); }

static const ferry__iter_vtable slices_iter_vt = {slices_next, slices_save, slices_skip, slices_destroy};

static int slices_make(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                       ferry__status *st) {
    slices_it *it = ferry__iter_alloc(ds, ctx, &slices_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    it->count = ds->cardinality;
    if (state) {
        int rc = ferry__r_i64(state, &it->next_index, st);
        if (rc == FERRY_OK && (it->next_index < 0 || it->next_index > it->count))
            rc = ferry__fail(st, FERRY_ECORRUPT, "%s: saved index %lld is outside [0, %lld]", ds->name,
                             (long long)it->next_index, (long long)it->count);
        if (rc) {
            ferry__iter_release(&it->base);
            return rc;
        }
    }
    *out = &it->base;
    return FERRY_OK;
}

static void slices_ds_destroy(ferry_dataset *ds_) {
    slices_ds *ds = (slices_ds *)ds_;
    for (size_t i = 0; i < ds->n; i++) ferry_tensor_unref(ds->tensors[i]);
    ferry__free(ds_->rt, ds->tensors);
}

static const ferry__dataset_vtable slices_vt = {.make = slices_make, .destroy = slices_ds_destroy};

/* Shared constructor. `fn` names the public function in messages. */
static int make_tensor_source(ferry_runtime *rt, size_t n, ferry_tensor *const *tensors, bool whole, const char *name,
                              const char *fn, ferry_dataset **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", fn);
    *out = NULL;
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", fn);
    FERRY__CHECK_ARG(n >= 1 && n <= 4096, FERRY_EINVAL, "%s: argument 'n' is %zu; it must be 1 to 4096", fn, n);
    FERRY__CHECK_ARG(tensors != NULL, FERRY_EINVAL, "%s: argument 'tensors' is NULL", fn);
    int rc = ferry__check_name(fn, name);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++) {
        const ferry_tensor *t = tensors[i];
        FERRY__CHECK_ARG(t != NULL, FERRY_EINVAL, "%s: tensors[%zu] is NULL", fn, i);
        FERRY__CHECK_ARG(t->rt == rt, FERRY_EINVAL, "%s: tensors[%zu] was made with another runtime", fn, i);
        if (whole) continue;
        FERRY__CHECK_ARG(t->rank >= 1, FERRY_EINVAL,
                         "%s: tensors[%zu] is a scalar; slicing along dim 0 needs rank >= 1", fn, i);
        FERRY__CHECK_ARG(t->dims[0] == tensors[0]->dims[0], FERRY_EINVAL,
                         "%s: tensors[%zu] has dim 0 of size %lld but tensors[0] has %lld; all must be equal", fn, i,
                         (long long)t->dims[0], (long long)tensors[0]->dims[0]);
    }
    ferry_tensor_spec specs_local[16] = {0};
    ferry_tensor_spec *specs = specs_local;
    if (n > 16) {
        specs = ferry__calloc(rt, n, sizeof *specs);
        if (!specs) return ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the specs failed", fn);
    }
    for (size_t i = 0; i < n; i++) {
        const ferry_tensor *t = tensors[i];
        int skip = whole ? 0 : 1;
        memset(&specs[i], 0, sizeof specs[i]);
        specs[i].dtype = t->dtype;
        specs[i].shape.rank = t->rank - skip;
        for (int d = skip; d < t->rank; d++) specs[i].shape.dims[d - skip] = t->dims[d];
    }
    int64_t card = whole ? 1 : tensors[0]->dims[0];
    const char *op = whole ? "from_tensors" : "from_tensor_slices";
    ferry_dataset *ds;
    rc = ferry__dataset_new(rt, &slices_vt, op, sizeof(slices_ds), 0, NULL, n, specs, card, &ds);
    if (specs != specs_local) ferry__free(rt, specs);
    if (rc) return rc;
    slices_ds *s = (slices_ds *)ds;
    s->tensors = ferry__calloc(rt, n, sizeof *s->tensors);
    if (!s->tensors) {
        ferry_dataset_unref(ds); /* n is still 0: destroy frees nothing */
        return ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the tensor list failed", fn);
    }
    s->n = n;
    s->whole = whole;
    for (size_t i = 0; i < n; i++) s->tensors[i] = ferry_tensor_ref(tensors[i]);
    /* Parameters: the count and the shapes (the specs hash covers them only for the row shape);
     * the values are not hashed, so that a large tensor costs nothing to describe. */
    ferry__dataset_hash_i64(ds, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        ferry__dataset_hash_i64(ds, tensors[i]->dtype);
        ferry__dataset_hash_i64(ds, tensors[i]->rank);
        for (int d = 0; d < tensors[i]->rank; d++) ferry__dataset_hash_i64(ds, tensors[i]->dims[d]);
    }
    ds->no_errors = true;
    ferry__dataset_set_label(ds, name);
    ferry__dataset_seal(ds);
    *out = ds;
    return FERRY_OK;
}

int ferry_dataset_from_tensor_slices(ferry_runtime *rt, size_t n, ferry_tensor *const *tensors,
                                     const ferry_from_tensor_slices_options *opts, ferry_dataset **out) {
    return make_tensor_source(rt, n, tensors, false, opts ? opts->name : NULL, __func__, out);
}

int ferry_dataset_from_tensors(ferry_runtime *rt, size_t n, ferry_tensor *const *tensors,
                               const ferry_from_tensors_options *opts, ferry_dataset **out) {
    return make_tensor_source(rt, n, tensors, true, opts ? opts->name : NULL, __func__, out);
}
