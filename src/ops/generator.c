/*
 * generator.c - the `generator` source: elements produced by user callbacks.
 *
 * Each iterator owns one generator state: init runs at the iterator's first next (so making or
 * restoring an iterator calls no user code), next runs once per position, and fini runs exactly
 * once for every successful init: when next reports FERRY_END, or when the iterator is
 * destroyed. Every call gets a ferry_context whose index is the position (-1 for init), whose
 * random generator is seeded from mix(mix(iteration seed, dataset salt), index), and whose
 * cancellation flag is the iterator's scope.
 *
 * Errors: a failing next is that position's error and the iterator goes on calling next for the
 * following positions; an output that does not match the declared specs is FERRY_ETYPE in its
 * position. A failing init is the error of position 0 and then the stream ends (retrying it
 * would loop forever under ignore_errors).
 *
 * Save/restore: a generator cannot seek, so the state is the number of positions produced and
 * whether the stream has ended. Restore makes a fresh state at the first next and replays that
 * many next calls, discarding their outputs. This is exact for generators that are
 * deterministic given their context (index and random draws), and costs one call per position.
 *
 * Runs on whichever thread calls next; no threads or locks of its own.
 */
#include "ops.h"

typedef struct gen_ds {
    ferry_dataset base;
    ferry_generator_options opts; /* specs pointer not kept: base.specs holds the copy */
} gen_ds;

typedef struct gen_it {
    ferry__iter base;
    void *state;      /* the user's state, valid while `live` */
    bool live;        /* init succeeded and fini has not run */
    bool ended;       /* END seen or init failed: no more user calls */
    int64_t pos;      /* positions produced (elements and errors), replayed ones included */
    int64_t replay;   /* positions still to replay after a restore, before the next output */
    uint64_t op_seed; /* mix(iteration seed, salt) */
} gen_it;

static void gen_finish(gen_it *it) {
    const gen_ds *ds = (const gen_ds *)it->base.ds;
    if (it->live && ds->opts.fini) ds->opts.fini(it->state, ds->opts.user);
    it->live = false;
    it->state = NULL;
}

/* Calls the user's next for position it->pos and checks its output. Returns FERRY_OK (element in
 * *out), FERRY_END, or an error for this position (st filled). */
static int gen_call(gen_it *it, ferry_element **out, ferry__status *st) {
    const ferry_dataset *ds_ = it->base.ds;
    const gen_ds *ds = (const gen_ds *)ds_;
    if (ferry__callback_gate(it->base.ctx.cancel, "generator", st)) return FERRY_ECANCELED;
    ferry_context ctx;
    ferry__status_clear(st);
    ferry__context_init(&ctx, it->base.ctx.rt, it->base.ctx.cancel, st, it->op_seed, it->pos);
    ferry_element *e = NULL;
    int rc = ds->opts.next(&ctx, it->state, &e);
    if (rc == FERRY_END) {
        ferry_element_free(e);
        return FERRY_END;
    }
    if (rc != FERRY_OK) {
        ferry_element_free(e); /* protocol: nothing comes with an error */
        if (rc > 0) {
            return ferry__fail(st, FERRY_EUSER, "generator: next returned the unknown status %d at position %lld", rc,
                               (long long)it->pos);
        }
        if (st->msg[0] == '\0')
            return ferry__fail(st, rc, "generator: next failed with %s at position %lld", ferry_error_name(rc),
                               (long long)it->pos);
        st->code = rc;
        ferry__status_prefix(st, "generator: next at position %lld", (long long)it->pos);
        return rc;
    }
    if (!e)
        return ferry__fail(st, FERRY_EUSER, "generator: next returned FERRY_OK without an element at position %lld",
                           (long long)it->pos);
    if (e->n != ds_->ncomp) {
        size_t got = e->n;
        ferry_element_free(e);
        return ferry__fail(st, FERRY_ETYPE,
                           "generator: next returned %zu components at position %lld but the specs declare %zu", got,
                           (long long)it->pos, ds_->ncomp);
    }
    for (size_t i = 0; i < ds_->ncomp; i++) {
        char what[64];
        if (!e->t[i]) {
            ferry_element_free(e);
            return ferry__fail(st, FERRY_ETYPE, "generator: output component %zu is NULL at position %lld", i,
                               (long long)it->pos);
        }
        snprintf(what, sizeof what, "generator output component %zu at position %lld", i, (long long)it->pos);
        rc = ferry__spec_check(&ds_->specs[i], e->t[i], what, st);
        if (rc) {
            ferry_element_free(e);
            return rc;
        }
    }
    *out = e;
    return FERRY_OK;
}

/* Runs init, then replays the positions a restore asked for. Returns FERRY_OK when the generator
 * is ready for position it->pos, FERRY_END when it ended during the replay, or init's error. */
static int gen_start(gen_it *it, ferry__status *st) {
    const gen_ds *ds = (const gen_ds *)it->base.ds;
    if (ds->opts.init) {
        if (ferry__callback_gate(it->base.ctx.cancel, "generator", st)) return FERRY_ECANCELED;
        ferry_context ctx;
        ferry__status_clear(st);
        ferry__context_init(&ctx, it->base.ctx.rt, it->base.ctx.cancel, st, it->op_seed, -1);
        void *state = NULL;
        int rc = ds->opts.init(&ctx, ds->opts.user, &state);
        if (rc != FERRY_OK) {
            if (rc > 0) rc = FERRY_EUSER;
            if (st->msg[0] == '\0') ferry__fail(st, rc, "generator: init failed with %s", ferry_error_name(rc));
            else ferry__status_prefix(st, "generator: init");
            st->code = rc;
            return rc;
        }
        it->state = state;
    }
    it->live = true;
    /* Replay: positions [pos - replay, pos) were produced before the save. */
    int64_t target = it->pos;
    it->pos -= it->replay;
    ferry__status tmp;
    while (it->replay > 0) {
        if (ferry__cancelled(it->base.ctx.cancel))
            return ferry__fail(st, FERRY_ECANCELED, "generator: iterator is being destroyed");
        ferry_element *e = NULL;
        int rc = gen_call(it, &e, &tmp);
        ferry_element_free(e);
        it->replay--;
        it->pos++;
        if (rc == FERRY_END) {
            it->pos = target;
            it->replay = 0;
            return FERRY_END;
        }
    }
    return FERRY_OK;
}

static int gen_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    gen_it *it = (gen_it *)it_;
    if (it->ended) return FERRY_END;
    if (!it->live) {
        int rc = gen_start(it, st);
        if (rc == FERRY_END) {
            it->ended = true;
            gen_finish(it);
            return FERRY_END;
        }
        if (rc == FERRY_ECANCELED && ferry__cancelled(it_->ctx.cancel)) return rc;
        if (rc) { /* init failed: the error takes position 0 and the stream ends */
            it->ended = true;
            it->pos++;
            gen_finish(it);
            return rc;
        }
    }
    int rc = gen_call(it, out, st);
    if (rc == FERRY_END) {
        it->ended = true;
        gen_finish(it);
        return FERRY_END;
    }
    if (rc == FERRY_ECANCELED && ferry__cancelled(it_->ctx.cancel)) return rc; /* no call: no position */
    it->pos++;
    return rc;
}

static int gen_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    FERRY__UNUSED(st);
    gen_it *it = (gen_it *)it_;
    ferry__w_i64(w, it->pos);
    ferry__w_u8(w, it->ended ? 1 : 0);
    return FERRY_OK;
}

static void gen_destroy(ferry__iter *it_) {
    gen_finish((gen_it *)it_);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable gen_iter_vt = {gen_next, gen_save, NULL, gen_destroy};

static int gen_make(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                    ferry__status *st) {
    gen_it *it = ferry__iter_alloc(ds, ctx, &gen_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    it->op_seed = ferry__mix64(ctx->seed, ds->salt);
    if (state) {
        int64_t pos = 0;
        uint8_t ended = 0;
        int rc = ferry__r_i64(state, &pos, st);
        if (!rc) rc = ferry__r_u8(state, &ended, st);
        if (!rc && (pos < 0 || ended > 1))
            rc = ferry__fail(st, FERRY_ECORRUPT, "generator: saved position %lld / end flag %u is invalid",
                             (long long)pos, (unsigned)ended);
        if (rc) {
            ferry__iter_release(&it->base);
            return rc;
        }
        it->pos = pos;
        it->ended = ended != 0;
        it->replay = ended ? 0 : pos;
    }
    *out = &it->base;
    return FERRY_OK;
}

static const ferry__dataset_vtable gen_vt = {.make = gen_make, .destroy = NULL};


int ferry_dataset_generator(ferry_runtime *rt, const ferry_generator_options *opts, ferry_dataset **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", __func__);
    FERRY__CHECK_ARG(opts != NULL, FERRY_EINVAL,
                     "%s: argument 'opts' is NULL; options.next, num_components and specs "
                     "are required",
                     __func__);
    FERRY__CHECK_ARG(opts->next != NULL, FERRY_EINVAL, "%s: options.next is NULL; it is required", __func__);
    int rc = ferry__check_name(__func__, opts->name);
    if (rc) return rc;
    FERRY__CHECK_ARG(opts->num_components >= 1 && opts->num_components <= 4096, FERRY_EINVAL,
                     "%s: options.num_components is %zu; it is required and must be 1 to 4096", __func__,
                     opts->num_components);
    FERRY__CHECK_ARG(opts->specs != NULL, FERRY_EINVAL,
                     "%s: options.specs is NULL; it is required (num_components entries)", __func__);
    FERRY__CHECK_ARG(opts->cardinality >= 0 || opts->cardinality == FERRY_INFINITE ||
                         opts->cardinality == FERRY_UNKNOWN,
                     FERRY_EINVAL,
                     "%s: options.cardinality is %lld; it must be >= 0 (0: unknown), "
                     "FERRY_INFINITE or FERRY_UNKNOWN",
                     __func__, (long long)opts->cardinality);
    for (size_t i = 0; i < opts->num_components; i++) {
        rc = ferry__spec_validate(&opts->specs[i], __func__, "options.specs", i);
        if (rc) return rc;
    }
    int64_t card = opts->cardinality == 0 ? FERRY_UNKNOWN : opts->cardinality;
    ferry_dataset *ds;
    rc = ferry__dataset_new(rt, &gen_vt, "generator", sizeof(gen_ds), 0, NULL, opts->num_components, opts->specs, card,
                            &ds);
    if (rc) return rc;
    gen_ds *g = (gen_ds *)ds;
    g->opts = *opts;
    g->opts.specs = NULL;
    g->opts.name = NULL; /* the label holds a copy */
    /* Callbacks cannot be hashed portably; the specs are hashed by the fingerprint. */
    ferry__dataset_hash_i64(ds, (int64_t)opts->num_components);
    ferry__dataset_hash_i64(ds, card);
    ferry__dataset_own_user(ds, opts->user, opts->user_free);
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}
