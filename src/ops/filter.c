/*
 * filter.c - `filter`: keeps the input elements for which a predicate says keep.
 *
 * The predicate borrows each element and runs on the consumer's thread, with a ferry_context
 * whose index is the element's input position and whose random generator is seeded from
 * mix(mix(iteration seed, salt), input position). Input errors pass through in their position;
 * a failing predicate is an error in that position (its element is dropped). Dropped elements
 * take no output position.
 *
 * State: the input position (for the contexts' indices and seeds) and the input's state. There
 * is no cheap skip: which positions survive is only known by running the predicate. A long run
 * of dropped elements polls cancellation so that destroying the iterator is never held up.
 */
#include "ops.h"

typedef struct filter_ds {
    ferry_dataset base;
    ferry_predicate_fn fn;
    void *user;
} filter_ds;

typedef struct filter_it {
    ferry__iter base;
    ferry__iter *input;
    int64_t pos;      /* input positions pulled */
    uint64_t op_seed; /* mix(iteration seed, salt) */
} filter_it;

static int filter_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    filter_it *it = (filter_it *)it_;
    const filter_ds *ds = (const filter_ds *)it_->ds;
    for (uint32_t dropped = 1;; dropped++) {
        ferry_element *e = NULL;
        int rc = ferry__iter_next(it->input, &e, st);
        if (rc == FERRY_END) return FERRY_END;
        int64_t pos = it->pos++;
        if (rc != FERRY_OK) return rc;
        if (ferry__callback_gate(it_->ctx.cancel, "filter", st)) {
            ferry_element_free(e);
            return FERRY_ECANCELED;
        }
        ferry_context ctx;
        ferry__status_clear(st);
        ferry__context_init(&ctx, it_->ctx.rt, it_->ctx.cancel, st, it->op_seed, pos);
        bool keep = false;
        rc = ds->fn(&ctx, e, &keep, ds->user);
        if (rc == FERRY_OK && keep) {
            *out = e;
            return FERRY_OK;
        }
        ferry_element_free(e);
        if (rc != FERRY_OK) {
            if (rc > 0) rc = FERRY_EUSER;
            if (st->msg[0] == '\0')
                ferry__fail(st, rc, "filter: the predicate failed with %s at input position %lld", ferry_error_name(rc),
                            (long long)pos);
            else ferry__status_prefix(st, "filter: predicate at input position %lld", (long long)pos);
            st->code = rc;
            return rc;
        }
        if ((dropped & 1023) == 0 && ferry__cancelled(it_->ctx.cancel))
            return ferry__fail(st, FERRY_ECANCELED, "filter: iterator is being destroyed");
    }
}

static int filter_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    filter_it *it = (filter_it *)it_;
    ferry__w_i64(w, it->pos);
    return ferry__iter_save(it->input, w, st);
}

static void filter_destroy(ferry__iter *it_) {
    ferry__iter_free(((filter_it *)it_)->input);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable filter_iter_vt = {filter_next, filter_save, NULL, filter_destroy};

static int filter_make(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                       ferry__status *st) {
    filter_it *it = ferry__iter_alloc(ds, ctx, &filter_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    it->op_seed = ferry__mix64(ctx->seed, ds->salt);
    int rc = FERRY_OK;
    if (state) {
        rc = ferry__r_i64(state, &it->pos, st);
        if (!rc && it->pos < 0)
            rc = ferry__fail(st, FERRY_ECORRUPT, "filter: saved input position %lld is negative", (long long)it->pos);
    }
    if (!rc) rc = ferry__iter_make(ds->inputs[0], ctx, state, &it->input, st);
    if (rc) {
        filter_destroy(&it->base);
        return rc;
    }
    *out = &it->base;
    return FERRY_OK;
}

static const ferry__dataset_vtable filter_vt = {.make = filter_make, .destroy = NULL};

int ferry_dataset_filter(ferry_dataset *in, ferry_predicate_fn fn, void *user, const ferry_filter_options *opts,
                         ferry_dataset **out) {
    FERRY__OP_PROLOGUE(in, opts, out);
    FERRY__CHECK_ARG(fn != NULL, FERRY_EINVAL, "%s: argument 'fn' is NULL", __func__);
    int64_t card = in->cardinality == 0 ? 0 : FERRY_UNKNOWN;
    ferry_dataset *ds;
    int rc =
        ferry__dataset_new(in->rt, &filter_vt, "filter", sizeof(filter_ds), 1, &in, in->ncomp, in->specs, card, &ds);
    if (rc) return rc;
    filter_ds *f = (filter_ds *)ds;
    f->fn = fn;
    f->user = user;
    if (opts) ferry__dataset_own_user(ds, user, opts->user_free);
    FERRY__OP_SEAL(ds, opts, out); /* the predicate cannot be hashed portably */
    return FERRY_OK;
}
