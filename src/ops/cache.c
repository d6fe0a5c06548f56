/*
 * cache.c - `cache`: the public entry point, and the memory cache (path NULL or "").
 * A non-empty path is a file cache (ferry__dataset_file_cache, ops/file_cache.c).
 *
 * The memory cache belongs to the DATASET, as tf.data's does: the first iterator that reads its
 * input through to END commits the element list to the dataset; iterators made after that
 * (later epochs, including the ones repeat makes for every epoch) read the list and never touch
 * the input.
 *
 * Objects
 *   cache_ds  the dataset, with the cache: a mutex, the committed list (ncomp tensor references
 *             per element, immutable once committed), its budget bytes, and whether an iterator
 *             is writing.
 *   cache_it  one pass, in one of three modes:
 *               READ   the cache was committed when the iterator was made: element k is a new
 *                      element referencing the cached tensors (zero copy);
 *               WRITE  no cache yet and no other writer: passes the input through and stages a
 *                      reference to every element's tensors; at END it commits the list;
 *               PASS   passes the input through without caching (another iterator is writing,
 *                      this pass gave up caching, or it was restored mid-pass).
 *
 * Threads and locks: ds->mu guards committed/writer; it is taken when an iterator is made, when
 * a writer commits or gives up, never on the per-element path. The committed list is written
 * once under the mutex and only read afterwards, by iterators that saw it under the mutex.
 * Each iterator is used by one thread at a time.
 *
 * What is never cached
 *   - A partial pass: a writer destroyed before END (or restored mid-pass) discards what it
 *     staged, so the cache is either complete or absent.
 *   - Errors: an input error is passed through in its position, and the writer discards what it
 *     staged and goes on as PASS: a cache never holds an error position (a later pass re-reads
 *     the input and meets the error again, as it would without cache).
 *   - What does not fit: staged and committed bytes are counted in the runtime budget with
 *     ferry__budget_try; when an element does not fit, the writer releases what it staged and
 *     goes on as PASS for the rest of the pass (the abandonment is counted in the dataset and the
 *     node's stats show no cached bytes). The committed bytes stay counted until the dataset is
 *     destroyed.
 *
 * The content seed: what a cache holds is the first pass over its input, and every later pass
 *   yields exactly that, whether it reads the cache or has to make the input again (the cache is
 *   not complete yet, was given up for lack of budget, or lives in another process that saved
 *   the state). So the input is always made with one iteration seed, the dataset's content seed:
 *   fixed by the first iterator that reaches the cache (the seed in the state it is restored
 *   from, or its ctx's epoch0_seed: the iteration seed of the first epoch of every enclosing
 *   repeat, which every epoch and every process knows) and kept for the dataset's life (guarded
 *   by mu). With one pipeline seed the content seed is therefore the same in every process,
 *   whether or not a saved state reached the cache. Random ops below a cache
 *   draw the same values in every epoch, as tf.data's cache freezes them, and a restore
 *   recomputes them exactly. (A state saved under another dataset's content seed, e.g. from an
 *   iterator of another pipeline seed, restores its own pass with its own seed and reads no
 *   cache it did not make.)
 *
 * Save/restore: every state holds the content seed.
 *   READ: the index k. Restored where the dataset has its cache (same process, after commit), it
 *         reads from k; otherwise (a new process) it makes the input with the content seed and
 *         pulls the first k positions again (the cache held no errors, so positions are
 *         elements): as the writer, staging them, when no other iterator writes, so that the
 *         cache is complete at the end of this pass; otherwise it skips them and passes through.
 *   WRITE / PASS: the number of positions passed and the input's state (made with the content
 *         seed); restored as PASS (a partial pass is not cached; later iterators build the cache
 *         with the same seed).
 */
#include "ops.h"

enum { CACHE_READ = 0, CACHE_WRITE = 1, CACHE_PASS = 2 };

typedef struct cache_ds {
    ferry_dataset base;
    ferry__mutex mu;
    bool committed;        /* guarded by mu; the fields below are immutable once it is true */
    bool writer;           /* an iterator is writing (guarded by mu) */
    bool seeded;           /* guarded by mu: seed is fixed */
    uint64_t seed;         /* the content seed: the iteration seed the input is made with */
    ferry_tensor **cached; /* ncached * ncomp references */
    int64_t ncached;
    size_t cached_bytes;       /* counted in the budget */
    _Atomic int64_t abandoned; /* passes that gave up caching for lack of budget */
} cache_ds;

typedef struct cache_it {
    ferry__iter base;
    int mode;
    uint64_t seed;               /* the content seed of this pass */
    ferry__iter *input;          /* WRITE / PASS */
    bool ended;                  /* WRITE / PASS: the input returned END */
    int64_t pos;                 /* positions handed out in this pass */
    ferry_tensor *const *cached; /* READ */
    int64_t ncached;             /* READ */
    ferry_tensor **staged;       /* WRITE: nstaged * ncomp references */
    int64_t nstaged, cap;
    size_t staged_bytes; /* WRITE: counted in the budget */
} cache_it;

static void publish_stats(cache_it *it, int64_t elements, size_t bytes) {
    ferry__node_stats *s = it->base.stats;
    if (!s) return;
    atomic_store_explicit(&s->buffered_elements, elements, memory_order_relaxed);
    atomic_store_explicit(&s->buffered_bytes, (int64_t)bytes, memory_order_relaxed);
}

/* WRITE -> PASS: drop what was staged and let another iterator write. */
static void stop_writing(cache_it *it, bool for_budget) {
    cache_ds *ds = (cache_ds *)it->base.ds;
    ferry_runtime *rt = it->base.ctx.rt;
    size_t nc = it->base.ds->ncomp;
    for (int64_t i = 0; i < it->nstaged * (int64_t)nc; i++) ferry_tensor_unref(it->staged[i]);
    ferry__free(rt, it->staged);
    ferry__budget_release(&rt->budget, it->staged_bytes);
    it->staged = NULL;
    it->nstaged = it->cap = 0;
    it->staged_bytes = 0;
    ferry__mutex_lock(&ds->mu);
    ds->writer = false;
    ferry__mutex_unlock(&ds->mu);
    if (for_budget) atomic_fetch_add_explicit(&ds->abandoned, 1, memory_order_relaxed);
    it->mode = CACHE_PASS;
    publish_stats(it, 0, 0);
}

static void commit(cache_it *it) {
    cache_ds *ds = (cache_ds *)it->base.ds;
    ferry__mutex_lock(&ds->mu);
    FERRY_ASSERT(!ds->committed && ds->writer);
    ds->cached = it->staged;
    ds->ncached = it->nstaged;
    ds->cached_bytes = it->staged_bytes;
    ds->committed = true;
    ds->writer = false;
    ferry__mutex_unlock(&ds->mu);
    publish_stats(it, it->nstaged, it->staged_bytes);
    it->staged = NULL;
    it->nstaged = it->cap = 0;
    it->staged_bytes = 0;
    it->mode = CACHE_PASS;
}

/* Stages references to e's tensors. Returns false when caching must stop (budget or memory). */
static bool stage(cache_it *it, const ferry_element *e) {
    ferry_runtime *rt = it->base.ctx.rt;
    size_t nc = it->base.ds->ncomp;
    if (e->n != nc) return false;
    size_t bytes = ferry_element_nbytes(e);
    if (!ferry__budget_try(&rt->budget, bytes)) return false;
    if (it->nstaged == it->cap) {
        int64_t cap = it->cap ? it->cap * 2 : 64;
        void *p = (uint64_t)cap <= SIZE_MAX / sizeof(ferry_tensor *) / (nc ? nc : 1)
                      ? ferry__realloc(rt, it->staged, (size_t)cap * (nc ? nc : 1) * sizeof(ferry_tensor *))
                      : NULL;
        if (!p) {
            ferry__budget_release(&rt->budget, bytes);
            return false;
        }
        it->staged = p;
        it->cap = cap;
    }
    ferry_tensor **dst = it->staged + it->nstaged * (int64_t)nc;
    for (size_t c = 0; c < nc; c++) dst[c] = ferry_tensor_ref(e->t[c]);
    it->nstaged++;
    it->staged_bytes += bytes;
    return true;
}

static int cache_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    cache_it *it = (cache_it *)it_;
    const size_t nc = it_->ds->ncomp;
    if (it->mode == CACHE_READ) {
        if (it->pos >= it->ncached) return FERRY_END;
        ferry_element *e = ferry__element_new(it_->ctx.rt, nc);
        if (!e) return ferry__fail(st, FERRY_ENOMEM, "cache: allocating an element failed");
        ferry_tensor *const *src = it->cached + it->pos * (int64_t)nc;
        for (size_t c = 0; c < nc; c++) e->t[c] = ferry_tensor_ref(src[c]);
        it->pos++;
        *out = e;
        return FERRY_OK;
    }
    if (it->ended) return FERRY_END;
    int rc = ferry__iter_next(it->input, out, st);
    if (rc == FERRY_END) {
        it->ended = true;
        if (it->mode == CACHE_WRITE) commit(it);
        return FERRY_END;
    }
    it->pos++;
    if (rc < 0) {
        if (it->mode == CACHE_WRITE) stop_writing(it, false); /* never cache an error position */
        return rc;
    }
    if (it->mode == CACHE_WRITE && !stage(it, *out)) stop_writing(it, true);
    return FERRY_OK;
}

static int cache_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    cache_it *it = (cache_it *)it_;
    ferry__w_u8(w, it->mode == CACHE_READ ? 0 : it->ended ? 2 : 1);
    ferry__w_i64(w, it->pos);
    ferry__w_u64(w, it->seed);
    return it->mode == CACHE_READ ? FERRY_OK : ferry__iter_save(it->input, w, st);
}

static void cache_destroy(ferry__iter *it_) {
    cache_it *it = (cache_it *)it_;
    if (it->mode == CACHE_WRITE) stop_writing(it, false); /* a partial pass is never cached */
    ferry__iter_free(it->input);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable cache_iter_vt = {cache_next, cache_save, NULL, cache_destroy};

/* Restored from a READ state without this process's cache: makes the input with the content seed
 * and pulls the first `pos` positions again, staging them when this pass writes the cache. */
static int cache_replay(cache_it *it, const ferry__ictx *ctx, int64_t pos, ferry__status *st) {
    int rc = ferry__iter_make(it->base.ds->inputs[0], ctx, NULL, &it->input, st);
    if (rc) return rc;
    int64_t got = 0;
    if (it->mode == CACHE_PASS) {
        rc = ferry__iter_skip(it->input, pos, &got, st);
    } else {
        while (got < pos) {
            ferry_element *e;
            ferry__status ist;
            rc = ferry__iter_next(it->input, &e, &ist);
            if (rc == FERRY_END) break;
            if (rc < 0) { /* an input that is not the same pass after pass: the state cannot hold */
                return ferry__fail(st, FERRY_ECORRUPT,
                                   "cache: restoring: position %lld of the input was an "
                                   "element when the state was saved and is now an error (%s); an input that "
                                   "changes between passes cannot be cached exactly",
                                   (long long)got, ist.msg);
            }
            if (it->mode == CACHE_WRITE && !stage(it, e)) stop_writing(it, true);
            ferry_element_free(e);
            got++;
        }
        rc = FERRY_OK;
    }
    if (!rc && got != pos)
        rc = ferry__fail(st, FERRY_ECORRUPT,
                         "cache: restoring: the input ended after %lld elements, before the "
                         "saved position %lld",
                         (long long)got, (long long)pos);
    it->pos = pos;
    return rc;
}

static int cache_make(ferry_dataset *ds_, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                      ferry__status *st) {
    cache_ds *ds = (cache_ds *)ds_;
    cache_it *it = ferry__iter_alloc(ds_, ctx, &cache_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    uint8_t mode = 0;
    int64_t pos = 0;
    uint64_t seed = ctx->epoch0_seed;
    int rc = FERRY_OK;
    if (state) {
        rc = ferry__r_u8(state, &mode, st);
        if (!rc) rc = ferry__r_i64(state, &pos, st);
        if (!rc) rc = ferry__r_u64(state, &seed, st);
        if (!rc && (mode > 2 || pos < 0))
            rc = ferry__fail(st, FERRY_ECORRUPT, "cache: saved state corrupt before offset %zu: mode %u, position %lld",
                             ferry__r_offset(state), mode, (long long)pos);
    }
    if (!rc) {
        ferry__mutex_lock(&ds->mu);
        if (!ds->seeded) {
            ds->seeded = true;
            ds->seed = seed;
        }
        if (!state) seed = ds->seed;
        it->seed = seed;
        bool mine = seed == ds->seed; /* the dataset's cache holds this pass */
        if (ds->committed && mine) {
            it->cached = ds->cached;
            it->ncached = ds->ncached;
        }
        bool can_write = mine && !ds->committed && !ds->writer;
        if (ds->committed && mine && (!state || mode == 0)) {
            it->mode = CACHE_READ;
        } else if (can_write && (!state || mode == 0)) {
            ds->writer = true;
            it->mode = CACHE_WRITE;
        } else {
            it->mode = CACHE_PASS;
        }
        ferry__mutex_unlock(&ds->mu);
    }
    ferry__ictx ictx = *ctx;
    ictx.seed = ictx.epoch0_seed = it->seed;
    if (!rc && it->mode == CACHE_READ) {
        it->pos = pos;
        if (pos > it->ncached)
            rc = ferry__fail(st, FERRY_ECORRUPT, "cache: saved position %lld is past the %lld cached elements",
                             (long long)pos, (long long)it->ncached);
        publish_stats(it, it->ncached, ds->cached_bytes);
    } else if (!rc && state && mode == 0) {
        rc = cache_replay(it, &ictx, pos, st);
    } else if (!rc) {
        it->pos = pos;
        it->ended = mode == 2;
        rc = ferry__iter_make(ds_->inputs[0], &ictx, state, &it->input, st);
    }
    if (rc) {
        cache_destroy(&it->base);
        return rc;
    }
    *out = &it->base;
    return FERRY_OK;
}

static void cache_ds_destroy(ferry_dataset *ds_) {
    cache_ds *ds = (cache_ds *)ds_;
    ferry_runtime *rt = ds_->rt;
    if (ds->committed) {
        for (int64_t i = 0; i < ds->ncached * (int64_t)ds_->ncomp; i++) ferry_tensor_unref(ds->cached[i]);
        ferry__free(rt, ds->cached);
        ferry__budget_release(&rt->budget, ds->cached_bytes);
    }
    ferry__mutex_destroy(&ds->mu);
}

static const ferry__dataset_vtable cache_vt = {.make = cache_make, .destroy = cache_ds_destroy};
static const ferry__dataset_vtable cache_vt_nolock = {.make = cache_make, .destroy = NULL}; /* mutex init failed */

int ferry_dataset_cache(ferry_dataset *in, const ferry_cache_options *opts, ferry_dataset **out) {
    FERRY__OP_PROLOGUE(in, opts, out);
    const char *path = opts ? opts->path : NULL;
    const char *name = opts ? opts->name : NULL;
    if (path && path[0]) return ferry__dataset_file_cache(in, path, name, out);
    ferry_dataset *ds;
    int rc = ferry__dataset_new(in->rt, &cache_vt, "cache", sizeof(cache_ds), 1, &in, in->ncomp, in->specs,
                                in->cardinality, &ds);
    if (rc) return rc;
    cache_ds *c = (cache_ds *)ds;
    if (ferry__mutex_init(&c->mu)) {
        ds->vt = &cache_vt_nolock;
        ferry_dataset_unref(ds);
        return ferry__set_last_error(FERRY_ENOMEM, "%s: creating the cache lock failed", __func__);
    }
    atomic_init(&c->abandoned, 0);
    ferry__dataset_hash(ds, "memory", 6);
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}

/* Passes that gave up caching for lack of budget (for tests and reports). */
int64_t ferry__cache_abandoned(const ferry_dataset *ds);
int64_t ferry__cache_abandoned(const ferry_dataset *ds) {
    if (!ds || ds->vt != &cache_vt) return 0;
    return atomic_load(&((cache_ds *)(void *)(uintptr_t)ds)->abandoned);
}
