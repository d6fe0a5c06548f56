/*
 * shuffle.c - `shuffle(buffer_size)`: each output is drawn uniformly at random from a buffer of
 * up to buffer_size input elements, and its slot is refilled from the input (tf.data's
 * algorithm).
 *
 * Objects
 *   shuffle_ds  buffer size, seed, same_order_each_epoch, fill_before_first.
 *   shuffle_it  the input iterator, the buffer (slots of element + input position + counted
 *               bytes), the random generator, the input position (positions pulled, errors
 *               included) and an anchor list of input snapshots.
 *
 * Threads and locks: none of its own. shuffle runs on the consumer's thread and drives its
 * input itself (the anchor's mutex is uncontended).
 *
 * Randomness: the generator is seeded from mix(mix(seed, salt), same_order_each_epoch ?
 * pipeline seed : iteration seed). repeat gives every epoch its own iteration seed, so
 * shuffle().repeat() reshuffles each epoch, the same way on every run; same_order_each_epoch
 * gives every epoch of one pipeline seed the same order.
 *
 * Filling: by default (fill_before_first = false) each next pulls at most two input elements
 * while the buffer is not full, so the first element comes after two input reads and an epoch
 * never starts with a stall while buffer_size elements are read (tf.data's "Filling up shuffle
 * buffer"). The buffer grows by one per output until it is full; from then on the order is the
 * same process as tf.data's. The price: the first ~buffer_size outputs are drawn from a smaller
 * window, so the start of an epoch is less mixed (an element among the first outputs comes from
 * at most about twice its output index into the input). fill_before_first = true fills the whole
 * buffer before the first output: tf.data's order and its start-up stall.
 *
 * Memory: buffered element bytes are counted in the runtime's budget when an element enters,
 * reserved 16 KiB ahead and given back in 16 KiB steps (so this stage counts at most 32 KiB more
 * than it holds, and the budget's shared counter is touched once per 16 KiB, not per element). When the budget refuses an element, the element is counted anyway (forced:
 * it has already been read) and filling stops; while the budget is over its limit the buffer is
 * not refilled, outputs are drawn from what is there. So the budget caps the buffer, nothing
 * ever waits, and this stage takes at most one element beyond the limit. The order then depends
 * on the memory left to this stage: under budget pressure it is only as deterministic as that
 * pressure.
 *
 * Errors: an input error is returned at once, in the position it is read; it never enters the
 * buffer (as tf.data).
 *
 * Save/restore without element data: every buffered element is known by its input position.
 * The state is the generator's state, the input position, whether the input ended, the position
 * held by each slot, and an anchor: an input snapshot at or before the oldest buffered
 * position (ferry__anchor_take every 64 input positions, pruned to the oldest buffered
 * position). Restore makes the input from the snapshot, skips to the oldest buffered position
 * and then replays the input up to the saved input position, keeping the elements whose
 * positions are in the saved buffer (each into its slot) and dropping the others. So restoring
 * a shuffle re-reads its input from the oldest buffered element: a span bounded by how long an
 * element stays in the buffer (about buffer_size x ln(buffer_size) positions), while the saved
 * state stays small (8 bytes per slot plus the input's snapshot).
 */
#include "ops.h"

#include <stdlib.h>

#define SHUFFLE_ANCHOR_PERIOD 64

typedef struct shuffle_ds {
    ferry_dataset base;
    int64_t buffer_size;
    uint64_t seed;
    bool same_order;
    bool fill_first;
} shuffle_ds;

typedef struct shuffle_slot {
    ferry_element *e;
    int64_t pos;  /* input position of e */
    size_t bytes; /* counted in the budget */
} shuffle_slot;

typedef struct shuffle_it {
    ferry__iter base;
    ferry__iter *input;
    shuffle_slot *buf;
    int64_t count, cap; /* slots in use, slots allocated (<= buffer_size) */
    int64_t in_pos;     /* input positions pulled */
    bool ended;         /* the input returned END */
    ferry__rng rng;
    ferry__anchor anchor;
    bool anchor_ready;
    int64_t next_prune;
    size_t held;   /* budget bytes of the buffered elements */
    size_t credit; /* bytes counted in the budget beyond `held` (reserved in chunks) */
} shuffle_it;

/* The budget is counted in chunks of this many bytes, not per element: two shared atomics per
 * element would bounce a cache line between the threads that pull and release. */
#define SHUFFLE_BUDGET_CHUNK ((size_t)16 << 10)

static int grow_buf(shuffle_it *it, int64_t need, ferry__status *st) {
    const shuffle_ds *ds = (const shuffle_ds *)it->base.ds;
    int64_t nc = it->cap ? it->cap : 64;
    while (nc < need) nc = nc > INT64_MAX / 2 ? need : nc * 2;
    if (nc > ds->buffer_size) nc = ds->buffer_size;
    if (nc < need) nc = need;
    if ((uint64_t)nc > SIZE_MAX / sizeof(shuffle_slot))
        return ferry__fail(st, FERRY_ETOOLARGE, "shuffle: a buffer of %lld slots is too large", (long long)nc);
    shuffle_slot *b = ferry__realloc(it->base.ctx.rt, it->buf, (size_t)nc * sizeof *b);
    if (!b) return ferry__fail(st, FERRY_ENOMEM, "shuffle: growing the buffer to %lld slots failed", (long long)nc);
    it->buf = b;
    it->cap = nc;
    return FERRY_OK;
}

static int64_t min_buffered(const shuffle_it *it) {
    int64_t m = it->in_pos;
    for (int64_t i = 0; i < it->count; i++)
        if (it->buf[i].pos < m) m = it->buf[i].pos;
    return m;
}

/* Pulls the next input position into *e (NULL for END) with the anchor bookkeeping. */
static int pull(shuffle_it *it, ferry_element **e, ferry__status *st) {
    const shuffle_ds *ds = (const shuffle_ds *)it->base.ds;
    *e = NULL;
    if (it->in_pos >= it->anchor.next_pos) {
        int rc = ferry__anchor_take(&it->anchor, it->input, it->in_pos, false, st);
        if (rc) return rc;
    }
    if (it->in_pos >= it->next_prune) {
        ferry__anchor_prune(&it->anchor, min_buffered(it));
        it->next_prune = it->in_pos + FERRY__MAX(SHUFFLE_ANCHOR_PERIOD, ds->buffer_size);
    }
    int rc = ferry__iter_next(it->input, e, st);
    if (rc == FERRY_END) {
        it->ended = true;
        return FERRY_OK;
    }
    it->in_pos++;
    return rc;
}

/* Puts e (input position pos) into slot `slot` == count, counting its bytes. Returns true when
 * the budget refused it (it was forced in). */
static bool put(shuffle_it *it, ferry_element *e, int64_t pos) {
    ferry_runtime *rt = it->base.ctx.rt;
    size_t bytes = ferry_element_nbytes(e);
    bool refused = false;
    if (bytes <= it->credit) {
        it->credit -= bytes;
    } else if (ferry__budget_try(&rt->budget, bytes - it->credit + SHUFFLE_BUDGET_CHUNK)) {
        it->credit = SHUFFLE_BUDGET_CHUNK;
    } else {
        refused = !ferry__budget_try(&rt->budget, bytes - it->credit);
        if (refused) ferry__budget_force(&rt->budget, bytes - it->credit);
        it->credit = 0;
    }
    shuffle_slot *s = &it->buf[it->count++];
    s->e = e;
    s->pos = pos;
    s->bytes = bytes;
    it->held += bytes;
    return refused;
}

static void publish_stats(shuffle_it *it) {
    ferry__node_stats *s = it->base.stats;
    if (!s) return;
    atomic_store_explicit(&s->buffered_elements, it->count, memory_order_relaxed);
    atomic_store_explicit(&s->buffered_bytes, (int64_t)it->held, memory_order_relaxed);
}

static int shuffle_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    shuffle_it *it = (shuffle_it *)it_;
    const shuffle_ds *ds = (const shuffle_ds *)it_->ds;
    int64_t pulls = ds->fill_first ? INT64_MAX : 2;
    ferry__budget *budget = &it_->ctx.rt->budget;
    for (int64_t p = 0; p < pulls && it->count < ds->buffer_size && !it->ended; p++) {
        /* Over the limit (an element was forced in): sample from what is there. */
        size_t used = atomic_load_explicit(&budget->used, memory_order_relaxed);
        if (it->count > 0 && used - FERRY__MIN(used, it->credit) > budget->limit) break; /* credit is ours, unused */
        if (it->count == it->cap) {
            int rc = grow_buf(it, it->count + 1, st);
            if (rc) {
                if (it->count > 0) break; /* sample from what is there */
                return rc;
            }
        }
        ferry_element *e;
        int64_t pos = it->in_pos;
        int rc = pull(it, &e, st);
        if (rc) return rc;          /* an input error, in its position */
        if (!e) break;              /* END */
        if (put(it, e, pos)) break; /* the budget refused it: it caps the buffer */
    }
    if (it->count == 0) {
        publish_stats(it);
        return FERRY_END;
    }
    int64_t j = (int64_t)ferry__rng_below(&it->rng, (uint64_t)it->count);
    shuffle_slot s = it->buf[j];
    it->buf[j] = it->buf[--it->count];
    it->held -= s.bytes;
    it->credit += s.bytes;
    if (atomic_load_explicit(&budget->used, memory_order_relaxed) > budget->limit) {
        ferry__budget_release(budget, it->credit); /* over the limit: give back at once */
        it->credit = 0;
    } else if (it->credit > 2 * SHUFFLE_BUDGET_CHUNK) {
        ferry__budget_release(budget, it->credit - SHUFFLE_BUDGET_CHUNK);
        it->credit = SHUFFLE_BUDGET_CHUNK;
    }
    publish_stats(it);
    *out = s.e;
    return FERRY_OK;
}

static int shuffle_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    shuffle_it *it = (shuffle_it *)it_;
    for (int i = 0; i < 4; i++) ferry__w_u64(w, it->rng.s[i]);
    ferry__w_i64(w, it->in_pos);
    ferry__w_u8(w, it->ended ? 1 : 0);
    ferry__w_i64(w, it->count);
    for (int64_t i = 0; i < it->count; i++) ferry__w_i64(w, it->buf[i].pos);
    return ferry__anchor_write(&it->anchor, min_buffered(it), w, st);
}

static void shuffle_destroy(ferry__iter *it_) {
    shuffle_it *it = (shuffle_it *)it_;
    ferry_runtime *rt = it_->ctx.rt;
    ferry__iter_free(it->input);
    for (int64_t i = 0; i < it->count; i++) ferry_element_free(it->buf[i].e); /* NULL-safe */
    ferry__budget_release(&rt->budget, it->held + it->credit);
    ferry__free(rt, it->buf);
    if (it->anchor_ready) ferry__anchor_fini(&it->anchor);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable shuffle_iter_vt = {shuffle_next, shuffle_save, NULL, shuffle_destroy};

typedef struct pos_slot {
    int64_t pos, slot;
} pos_slot;

static int cmp_pos(const void *a, const void *b) {
    int64_t x = ((const pos_slot *)a)->pos, y = ((const pos_slot *)b)->pos;
    return (x > y) - (x < y);
}

/* Restores from state: see the top comment. */
static int shuffle_restore(shuffle_it *it, ferry__reader *state, ferry__status *st) {
    const shuffle_ds *ds = (const shuffle_ds *)it->base.ds;
    ferry_runtime *rt = it->base.ctx.rt;
    int rc = FERRY_OK;
    for (int i = 0; !rc && i < 4; i++) rc = ferry__r_u64(state, &it->rng.s[i], st);
    int64_t in_pos = 0, count = 0;
    uint8_t ended = 0;
    if (!rc) rc = ferry__r_i64(state, &in_pos, st);
    if (!rc) rc = ferry__r_u8(state, &ended, st);
    if (!rc) rc = ferry__r_i64(state, &count, st);
    if (rc) return rc;
    if (in_pos < 0 || ended > 1 || count < 0 || count > ds->buffer_size || count > in_pos ||
        (uint64_t)count > ferry__r_left(state) / 8 || (it->rng.s[0] | it->rng.s[1] | it->rng.s[2] | it->rng.s[3]) == 0)
        return ferry__fail(
            st, FERRY_ECORRUPT,
            "shuffle: saved state corrupt before offset %zu: input position %lld, %lld buffered of %lld, "
            "ended flag %u",
            ferry__r_offset(state), (long long)in_pos, (long long)count, (long long)ds->buffer_size, ended);
    pos_slot *order = count ? ferry__calloc(rt, (size_t)count, sizeof *order) : NULL;
    if (count && !order) return ferry__fail(st, FERRY_ENOMEM, "shuffle: allocating the restore list failed");
    for (int64_t i = 0; i < count; i++) {
        rc = ferry__r_i64(state, &order[i].pos, st);
        if (rc) goto done;
        order[i].slot = i;
        if (order[i].pos < 0 || order[i].pos >= in_pos) {
            rc = ferry__fail(st, FERRY_ECORRUPT,
                             "shuffle: saved state corrupt: slot %lld holds input position %lld, "
                             "outside [0, %lld)",
                             (long long)i, (long long)order[i].pos, (long long)in_pos);
            goto done;
        }
    }
    if (count) qsort(order, (size_t)count, sizeof *order, cmp_pos);
    for (int64_t i = 1; i < count; i++)
        if (order[i].pos == order[i - 1].pos) {
            rc = ferry__fail(st, FERRY_ECORRUPT, "shuffle: saved state corrupt: input position %lld is in two slots",
                             (long long)order[i].pos);
            goto done;
        }
    int64_t start = count ? order[0].pos : in_pos;
    /* The anchor's replay count, to check that the snapshot really reaches `start`. */
    uint64_t replay = 0;
    {
        ferry__reader peek = *state;
        rc = ferry__r_u64(&peek, &replay, st);
        if (rc) goto done;
    }
    int64_t replayed = 0;
    rc = ferry__anchor_restore(it->base.ds->inputs[0], &it->base.ctx, state, &it->input, &replayed, st);
    if (rc) goto done;
    if ((uint64_t)replayed != replay || replay > (uint64_t)start) {
        rc = ferry__fail(st, FERRY_ECORRUPT,
                         "shuffle: restoring: the input ended after %lld of the %llu positions "
                         "before its oldest buffered element (or the state is corrupt)",
                         (long long)replayed, (unsigned long long)replay);
        goto done;
    }
    it->in_pos = start;
    rc = ferry__anchor_take(&it->anchor, it->input, start, true, st);
    if (!rc && count) rc = grow_buf(it, count, st);
    if (rc) goto done;
    /* Slots get their positions now and their elements as the replay reaches them; destroy
     * frees whichever are filled if the replay fails. */
    for (int64_t i = 0; i < count; i++) {
        it->buf[order[i].slot].e = NULL;
        it->buf[order[i].slot].pos = order[i].pos;
        it->buf[order[i].slot].bytes = 0;
    }
    it->count = count;
    /* Replay [start, in_pos): keep the buffered positions, drop the rest. */
    int64_t k = 0;
    while (it->in_pos < in_pos) {
        ferry_element *e = NULL;
        int64_t pos = it->in_pos;
        ferry__status est;
        ferry__status_clear(&est);
        int r = pull(it, &e, &est);
        if (it->ended) {
            rc = ferry__fail(st, FERRY_ECORRUPT,
                             "shuffle: restoring: the input ended at position %lld, before the "
                             "saved position %lld (the input is not deterministic?)",
                             (long long)pos, (long long)in_pos);
            break;
        }
        if (it->in_pos == pos || (r == FERRY_ECANCELED && ferry__cancelled(it->base.ctx.cancel))) {
            /* no position consumed (a snapshot failed) or the iterator is being destroyed */
            ferry_element_free(e);
            rc = ferry__fail(st, r, "shuffle: restoring: %s", est.msg);
            break;
        }
        if (k < count && order[k].pos == pos) {
            if (r != FERRY_OK) {
                rc = ferry__fail(st, FERRY_ECORRUPT,
                                 "shuffle: restoring: input position %lld failed on replay (%s) "
                                 "but the saved buffer holds an element there (the input is not deterministic?)",
                                 (long long)pos, est.msg);
                break;
            }
            size_t bytes = ferry_element_nbytes(e);
            if (!ferry__budget_try(&rt->budget, bytes)) ferry__budget_force(&rt->budget, bytes);
            shuffle_slot *s = &it->buf[order[k].slot];
            s->e = e;
            s->bytes = bytes;
            it->held += bytes;
            k++;
        } else {
            ferry_element_free(e);
        }
    }
    if (!rc) FERRY_ASSERT(k == count);
    it->ended = ended == 1;
done:
    ferry__free(rt, order);
    return rc;
}

static int shuffle_make(ferry_dataset *ds_, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                        ferry__status *st) {
    const shuffle_ds *ds = (const shuffle_ds *)ds_;
    shuffle_it *it = ferry__iter_alloc(ds_, ctx, &shuffle_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    int rc = ferry__anchor_init(&it->anchor, ctx->rt, SHUFFLE_ANCHOR_PERIOD, st);
    it->anchor_ready = rc == FERRY_OK;
    it->next_prune = FERRY__MAX(SHUFFLE_ANCHOR_PERIOD, ds->buffer_size);
    if (!rc && state) {
        rc = shuffle_restore(it, state, st);
    } else if (!rc) {
        uint64_t seed = ferry__mix64(ferry__mix64(ds->seed, ds_->salt),
                                     ds->same_order ? ferry__mix64(ctx->pipeline_seed, 0x5eed) : ctx->seed);
        ferry__rng_seed(&it->rng, seed);
        rc = ferry__iter_make(ds_->inputs[0], ctx, NULL, &it->input, st);
        /* The snapshot at position 0, so that a save before the first pull has an anchor. */
        if (!rc) rc = ferry__anchor_take(&it->anchor, it->input, 0, true, st);
    }
    if (rc) {
        shuffle_destroy(&it->base);
        return rc;
    }
    if (it->base.stats) atomic_store_explicit(&it->base.stats->capacity, ds->buffer_size, memory_order_relaxed);
    publish_stats(it);
    *out = &it->base;
    return FERRY_OK;
}

static const ferry__dataset_vtable shuffle_vt = {.make = shuffle_make, .destroy = NULL};

int ferry_dataset_shuffle(ferry_dataset *in, int64_t buffer_size, const ferry_shuffle_options *opts,
                          ferry_dataset **out) {
    FERRY__OP_PROLOGUE(in, opts, out);
    FERRY__CHECK_ARG(buffer_size >= 1, FERRY_EINVAL, "%s: argument 'buffer_size' is %lld; it must be >= 1", __func__,
                     (long long)buffer_size);
    ferry_shuffle_options o = {0};
    if (opts) o = *opts;
    ferry_dataset *ds;
    int rc = ferry__dataset_new(in->rt, &shuffle_vt, "shuffle", sizeof(shuffle_ds), 1, &in, in->ncomp, in->specs,
                                in->cardinality, &ds);
    if (rc) return rc;
    shuffle_ds *s = (shuffle_ds *)ds;
    s->buffer_size = buffer_size;
    s->seed = o.seed;
    s->same_order = o.same_order_each_epoch;
    s->fill_first = o.fill_before_first;
    ferry__dataset_hash_i64(ds, buffer_size);
    ferry__dataset_hash_i64(ds, (int64_t)o.seed);
    ferry__dataset_hash_i64(ds, o.same_order_each_epoch);
    ferry__dataset_hash_i64(ds, o.fill_before_first);
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}
