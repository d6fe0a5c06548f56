/*
 * files.c - file lists: ferry_dataset_list_files (glob), and the internal "names" source it is
 * made of (a list of strings handed out as FERRY_DTYPE_BYTES scalars, optionally shuffled).
 *
 * The dataset owns a copy of the strings, sorted or in the caller's order, and is immutable. An
 * iterator holds its position and, when shuffling, the permutation of this iteration, drawn at
 * make from (seed, dataset salt, iteration seed) with Fisher-Yates: restore redraws the same
 * permutation and continues at the saved position, so state is one integer. No threads, no
 * locks. The glob is done once, when the dataset is made (cardinality is then known); the
 * matched names are hashed into the dataset's parameters, so a state saved against another
 * directory content fails with FERRY_EMISMATCH instead of reading the wrong files.
 */
#include "io.h"

#include <errno.h>
#include <string.h>

typedef struct names_ds {
    ferry_dataset base;
    size_t n;
    char **s; /* n strings, each from the runtime's allocator */
    size_t *len;
    bool shuffle, same_order;
    uint64_t seed;
} names_ds;

typedef struct names_it {
    ferry__iter base;
    int64_t next; /* strings handed out so far */
    size_t *perm; /* shuffle: the order of this iteration; NULL: identity */
} names_it;

static int names_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    names_it *it = (names_it *)it_;
    const names_ds *ds = (const names_ds *)it_->ds;
    if (it->next >= (int64_t)ds->n) return FERRY_END;
    size_t i = it->perm ? it->perm[it->next] : (size_t)it->next;
    ferry_tensor *t;
    int rc = ferry__tensor_new_bytes(it_->ctx.rt, 0, NULL, ds->len[i], &t, st);
    if (rc) return rc;
    memcpy(ferry__tensor_blob_mut(t), ds->s[i], ds->len[i]);
    ferry__tensor_offsets(t)[1] = ds->len[i];
    ferry_element *e = ferry__element_new(it_->ctx.rt, 1);
    if (!e) {
        ferry_tensor_unref(t);
        return ferry__fail(st, FERRY_ENOMEM, "%s: allocating an element failed", it_->ds->name);
    }
    e->t[0] = t;
    it->next++;
    *out = e;
    return FERRY_OK;
}

static int names_skip(ferry__iter *it_, int64_t n, int64_t *skipped, ferry__status *st) {
    FERRY__UNUSED(st);
    names_it *it = (names_it *)it_;
    int64_t left = (int64_t)((const names_ds *)it_->ds)->n - it->next;
    *skipped = n < left ? n : left;
    it->next += *skipped;
    return FERRY_OK;
}

static int names_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    FERRY__UNUSED(st);
    ferry__w_i64(w, ((names_it *)it_)->next);
    return FERRY_OK;
}

static void names_destroy(ferry__iter *it_) {
    names_it *it = (names_it *)it_;
    ferry__free(it_->ctx.rt, it->perm);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable names_iter_vt = {names_next, names_save, names_skip, names_destroy};

static int names_make(ferry_dataset *ds_, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                      ferry__status *st) {
    const names_ds *ds = (const names_ds *)ds_;
    names_it *it = ferry__iter_alloc(ds_, ctx, &names_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    int rc = FERRY_OK;
    if (ds->shuffle && ds->n > 1) {
        it->perm = ferry__calloc(ctx->rt, ds->n, sizeof *it->perm);
        if (!it->perm) {
            rc = ferry__fail(st, FERRY_ENOMEM, "%s: allocating the file order failed", ds_->name);
        } else {
            ferry__rng r;
            uint64_t seed = ferry__mix64(ds->seed, ds_->salt);
            if (!ds->same_order) seed = ferry__mix64(seed, ctx->seed);
            ferry__rng_seed(&r, seed);
            for (size_t i = 0; i < ds->n; i++) it->perm[i] = i;
            for (size_t i = ds->n - 1; i > 0; i--) {
                size_t j = (size_t)ferry__rng_below(&r, (uint64_t)i + 1);
                size_t tmp = it->perm[i];
                it->perm[i] = it->perm[j];
                it->perm[j] = tmp;
            }
        }
    }
    if (rc == FERRY_OK && state) {
        rc = ferry__r_i64(state, &it->next, st);
        if (rc == FERRY_OK && (it->next < 0 || it->next > (int64_t)ds->n))
            rc = ferry__fail(st, FERRY_ECORRUPT, "%s: saved position %lld is outside [0, %zu]", ds_->name,
                             (long long)it->next, ds->n);
    }
    if (rc) {
        names_destroy(&it->base);
        return rc;
    }
    *out = &it->base;
    return FERRY_OK;
}

static void names_ds_destroy(ferry_dataset *ds_) {
    names_ds *ds = (names_ds *)ds_;
    if (ds->s)
        for (size_t i = 0; i < ds->n; i++) ferry__free(ds_->rt, ds->s[i]);
    ferry__free(ds_->rt, ds->s);
    ferry__free(ds_->rt, ds->len);
}

static const ferry__dataset_vtable names_vt = {.make = names_make, .destroy = names_ds_destroy};

int ferry__dataset_names(ferry_runtime *rt, const char *op_name, size_t n, const char *const *strings,
                         const ferry_list_files_options *shuffle, ferry_dataset **out) {
    *out = NULL;
    ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_BYTES, .shape = {.rank = 0}};
    ferry_dataset *d;
    int rc = ferry__dataset_new(rt, &names_vt, op_name, sizeof(names_ds), 0, NULL, 1, &spec, (int64_t)n, &d);
    if (rc) return rc;
    names_ds *ds = (names_ds *)d;
    ds->s = n ? ferry__calloc(rt, n, sizeof *ds->s) : NULL;
    ds->len = n ? ferry__calloc(rt, n, sizeof *ds->len) : NULL;
    ds->n = n;
    if (n && (!ds->s || !ds->len)) {
        ds->n = 0;
        ferry_dataset_unref(d);
        return ferry__set_last_error(FERRY_ENOMEM, "ferry_dataset_%s: allocating %zu names failed", op_name, n);
    }
    for (size_t i = 0; i < n; i++) {
        ds->s[i] = ferry__mem_strdup(&rt->alloc, strings[i]);
        if (!ds->s[i]) {
            ferry_dataset_unref(d);
            return ferry__set_last_error(FERRY_ENOMEM, "ferry_dataset_%s: copying the names failed", op_name);
        }
        ds->len[i] = strlen(strings[i]);
        ferry__dataset_hash(d, strings[i], ds->len[i] + 1);
    }
    if (shuffle) {
        ds->shuffle = shuffle->shuffle;
        ds->same_order = shuffle->same_order_each_iteration;
        ds->seed = shuffle->seed;
    }
    uint8_t flags = (uint8_t)((ds->shuffle ? 1 : 0) | (ds->same_order ? 2 : 0));
    ferry__dataset_hash(d, &flags, 1);
    ferry__dataset_hash_i64(d, (int64_t)ds->seed);
    d->no_errors = true;
    ferry__dataset_seal(d);
    *out = d;
    return FERRY_OK;
}

typedef struct list_files_arg {
    ferry_runtime *rt;
    const ferry_list_files_options *opts;
    ferry_dataset **out;
} list_files_arg;

static int list_files_make(void *user, size_t n, const char *const *paths) {
    list_files_arg *a = user;
    return ferry__dataset_names(a->rt, "list_files", n, paths, a->opts, a->out);
}

int ferry_dataset_list_files(ferry_runtime *rt, const char *pattern, const ferry_list_files_options *opts,
                             ferry_dataset **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", __func__);
    FERRY__CHECK_ARG(pattern != NULL, FERRY_EINVAL, "%s: argument 'pattern' is NULL", __func__);
    FERRY__CHECK_ARG(pattern[0] != '\0', FERRY_EINVAL, "%s: argument 'pattern' is empty", __func__);
    int rc = opts ? ferry__check_name(__func__, opts->name) : FERRY_OK;
    if (rc) return rc;
    list_files_arg a = {rt, opts, out};
    int e = ferry__glob(pattern, list_files_make, &a, &rc);
    if (e == ENOENT)
        return ferry__set_last_error(FERRY_ENOTFOUND, "%s: no file matches the pattern '%s'", __func__, pattern);
    if (e == ENOMEM) return ferry__set_last_error(FERRY_ENOMEM, "%s: out of memory matching '%s'", __func__, pattern);
    if (e)
        return ferry__set_last_error(FERRY_EIO, "%s: reading a directory failed while matching '%s'", __func__,
                                     pattern);
    if (!rc && opts) ferry__dataset_set_label(*out, opts->name);
    return rc;
}
