/*
 * shard.c - `shard(num_shards, index)`: the input positions p with p % num_shards == index.
 *
 * As in tf.data, when num_shards does not divide the input, shards below the remainder get one
 * more element (ceil) and the others floor; the shards together are the input. The positions
 * between two of this shard's are dropped through the input's skip, so over a seekable source
 * (range, slices) each element costs O(1) whatever num_shards is. Errors belong to the position
 * they take: an error at another shard's position is dropped with it.
 *
 * State: input positions consumed plus the input's state. Runs on the consumer's thread.
 */
#include "ops.h"

typedef struct shard_ds {
    ferry_dataset base;
    int64_t num_shards, index;
} shard_ds;

typedef struct shard_it {
    ferry__iter base;
    ferry__iter *input;
    int64_t pos; /* input positions consumed (pulled or skipped) */
} shard_it;

/* Input positions to drop before this shard's next position. */
static int64_t shard_gap(const shard_it *it) {
    const shard_ds *ds = (const shard_ds *)it->base.ds;
    int64_t r = it->pos % ds->num_shards;
    return (ds->index - r + ds->num_shards) % ds->num_shards;
}

static int shard_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    shard_it *it = (shard_it *)it_;
    int64_t gap = shard_gap(it);
    if (gap > 0) {
        int64_t s = 0;
        int rc = ferry__iter_skip(it->input, gap, &s, st);
        it->pos += s;
        if (rc) return rc;
        if (s < gap) return FERRY_END;
    }
    int rc = ferry__iter_next(it->input, out, st);
    if (rc != FERRY_END) it->pos++;
    return rc;
}

static int shard_skip(ferry__iter *it_, int64_t n, int64_t *skipped, ferry__status *st) {
    shard_it *it = (shard_it *)it_;
    const shard_ds *ds = (const shard_ds *)it_->ds;
    int64_t k = ds->num_shards;
    *skipped = 0;
    if (n <= 0) return FERRY_OK;
    int64_t gap = shard_gap(it);
    /* Input positions up to and including this shard's n-th next position, capped. */
    int64_t need;
    if (n - 1 > (INT64_MAX - gap - 1) / k) need = INT64_MAX;
    else need = gap + (n - 1) * k + 1;
    int64_t s = 0;
    int rc = ferry__iter_skip(it->input, need, &s, st);
    it->pos += s;
    /* This shard's positions among the s dropped: gap, gap + k, ... */
    *skipped = s <= gap ? 0 : 1 + (s - gap - 1) / k;
    if (*skipped > n) *skipped = n;
    return rc;
}

static int shard_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    shard_it *it = (shard_it *)it_;
    ferry__w_i64(w, it->pos);
    return ferry__iter_save(it->input, w, st);
}

static void shard_destroy(ferry__iter *it_) {
    ferry__iter_free(((shard_it *)it_)->input);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable shard_iter_vt = {shard_next, shard_save, shard_skip, shard_destroy};

static int shard_make(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                      ferry__status *st) {
    shard_it *it = ferry__iter_alloc(ds, ctx, &shard_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    int rc = FERRY_OK;
    if (state) {
        rc = ferry__r_i64(state, &it->pos, st);
        if (!rc && it->pos < 0)
            rc = ferry__fail(st, FERRY_ECORRUPT, "shard: saved input position %lld is negative", (long long)it->pos);
    }
    if (!rc) rc = ferry__iter_make(ds->inputs[0], ctx, state, &it->input, st);
    if (rc) {
        shard_destroy(&it->base);
        return rc;
    }
    *out = &it->base;
    return FERRY_OK;
}

static const ferry__dataset_vtable shard_vt = {.make = shard_make, .destroy = NULL};

int ferry_dataset_shard(ferry_dataset *in, int64_t num_shards, int64_t index, const ferry_shard_options *opts,
                        ferry_dataset **out) {
    FERRY__OP_PROLOGUE(in, opts, out);
    FERRY__CHECK_ARG(num_shards >= 1, FERRY_EINVAL, "%s: argument 'num_shards' is %lld; it must be >= 1", __func__,
                     (long long)num_shards);
    FERRY__CHECK_ARG(index >= 0 && index < num_shards, FERRY_EINVAL,
                     "%s: argument 'index' is %lld; it must be in [0, num_shards) = [0, %lld)", __func__,
                     (long long)index, (long long)num_shards);
    int64_t n = in->cardinality, card;
    if (n < 0) card = n;
    else card = n / num_shards + (index < n % num_shards ? 1 : 0);
    ferry_dataset *ds;
    int rc = ferry__dataset_new(in->rt, &shard_vt, "shard", sizeof(shard_ds), 1, &in, in->ncomp, in->specs, card, &ds);
    if (rc) return rc;
    shard_ds *s = (shard_ds *)ds;
    s->num_shards = num_shards;
    s->index = index;
    ferry__dataset_hash_i64(ds, num_shards);
    ferry__dataset_hash_i64(ds, index);
    ds->no_errors = in->no_errors;
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}
