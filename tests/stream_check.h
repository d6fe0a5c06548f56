/*
 * stream_check.h - helpers shared by the op tests: a generic stream checker (reads a dataset's
 * whole stream as comparable items, checks its cardinality, saves and restores at every
 * position, chains save/restore after every element, and skips every k) and small dataset
 * builders. Include after runner.h; everything here is static.
 */
#ifndef FERRY_TEST_STREAM_CHECK_H
#define FERRY_TEST_STREAM_CHECK_H

#include <stdarg.h>
#include <stdatomic.h>

#include "runner.h"

#define ITEM_MAX 256

/* Not every test uses every helper. */
#define SC_FN __attribute__((unused))

typedef struct items {
    char (*v)[ITEM_MAX];
    size_t n, cap;
    bool ended; /* FERRY_END was seen (not the max cut) */
} items;

static size_t appendf(char *buf, size_t cap, size_t k, const char *fmt, ...) FERRY_PRINTF(4, 5);
static SC_FN size_t appendf(char *buf, size_t cap, size_t k, const char *fmt, ...) {
    if (k >= cap) return k;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + k, cap - k, fmt, ap);
    va_end(ap);
    return w < 0 ? k : k + (size_t)w;
}

static SC_FN size_t render_tensor(char *buf, size_t cap, size_t k, const ferry_tensor *t) {
    int64_t n = ferry_tensor_num_entries(t);
    bool vec = ferry_tensor_rank(t) > 0;
    if (vec) k = appendf(buf, cap, k, "[");
    for (int64_t i = 0; i < n; i++) {
        if (i) k = appendf(buf, cap, k, ",");
        switch (ferry_tensor_dtype(t)) {
        case FERRY_DTYPE_INT64:
            k = appendf(buf, cap, k, "%lld", (long long)((const int64_t *)ferry_tensor_data(t))[i]);
            break;
        case FERRY_DTYPE_INT32: k = appendf(buf, cap, k, "%d", ((const int32_t *)ferry_tensor_data(t))[i]); break;
        case FERRY_DTYPE_FLOAT32:
            k = appendf(buf, cap, k, "%g", (double)((const float *)ferry_tensor_data(t))[i]);
            break;
        case FERRY_DTYPE_BYTES: {
            const uint8_t *p;
            size_t len;
            ASSERT_OK(ferry_tensor_bytes_get(t, i, &p, &len));
            k = appendf(buf, cap, k, "'%.*s'", (int)len, (const char *)p);
            break;
        }
        default: k = appendf(buf, cap, k, "<%s>", ferry_dtype_name(ferry_tensor_dtype(t))); break;
        }
    }
    if (vec) k = appendf(buf, cap, k, "]");
    return k;
}

static SC_FN void render(char *buf, size_t cap, int rc, const ferry_element *e) {
    size_t k = 0;
    if (rc == FERRY_EUSER) {
        snprintf(buf, cap, "E");
        return;
    }
    if (rc < 0) {
        snprintf(buf, cap, "E:%s", ferry_error_name(rc));
        return;
    }
    size_t n = ferry_element_size(e);
    if (n != 1) k = appendf(buf, cap, k, "(");
    for (size_t i = 0; i < n; i++) {
        if (i) k = appendf(buf, cap, k, ",");
        k = render_tensor(buf, cap, k, ferry_element_get(e, i));
    }
    if (n != 1) appendf(buf, cap, k, ")");
}

static SC_FN void items_push(items *s, const char *item) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        ASSERT(s->v != NULL);
    }
    snprintf(s->v[s->n++], ITEM_MAX, "%s", item);
}

static SC_FN void items_free(items *s) {
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* Pulls up to max positions (or to the end) from it into s. */
static SC_FN void collect(ferry_iterator *it, int64_t max, items *s) {
    for (int64_t i = 0; i < max; i++) {
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) {
            ASSERT(e == NULL);
            ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END); /* END stays END */
            s->ended = true;
            return;
        }
        if (rc < 0) {
            ASSERT(e == NULL);
            ASSERT(ferry_iterator_error(it)[0] != '\0'); /* every error carries a message */
        }
        char buf[ITEM_MAX];
        render(buf, sizeof buf, rc, e);
        items_push(s, buf);
        ferry_element_free(e);
    }
}

static SC_FN char *join(const items *s) {
    size_t cap = 1 + s->n * ITEM_MAX;
    char *out = malloc(cap);
    ASSERT(out != NULL);
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < s->n; i++) k = appendf(out, cap, k, "%s%s", i ? " " : "", s->v[i]);
    return out;
}

static SC_FN ferry_iterator *iter_new(ferry_dataset *ds, uint64_t seed) {
    ferry_iterator_options o = {.seed = seed};
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, &o, &it));
    return it;
}

/* Asserts that the whole stream of ds (seed 0) renders as `want` (items joined by spaces). */
static SC_FN void expect_stream(ferry_dataset *ds, const char *want) {
    ferry_iterator *it = iter_new(ds, 0);
    items s = {0};
    collect(it, 10000, &s);
    ASSERT(s.ended);
    char *got = join(&s);
    if (strcmp(got, want) != 0) FAILF("stream of %s: got \"%s\", want \"%s\"", ferry_dataset_name(ds), got, want);
    free(got);
    items_free(&s);
    ferry_iterator_free(it);
}

static SC_FN void expect_same(const items *full, size_t from, const items *rest, const char *what, size_t k) {
    for (size_t i = 0; i < rest->n; i++) {
        ASSERT(from + i < full->n);
        if (strcmp(full->v[from + i], rest->v[i]) != 0)
            FAILF("%s at %zu: position %zu is \"%s\", the uninterrupted stream has \"%s\"", what, k, from + i,
                  rest->v[i], full->v[from + i]);
    }
}

/* The generic check: the first `max` positions of ds under `seed` are
 *   - consistent with the declared cardinality;
 *   - the same after save at EVERY position k and restore (prefix before the save plus the
 *     stream of the restored iterator), with the saving iterator freed before the restore;
 *   - the same along a chain that saves and restores after every position;
 *   - the same as skip(k) for every k (which exercises the ops' skip paths). */
static SC_FN void check_stream(ferry_dataset *ds, int64_t max, uint64_t seed) {
    items full = {0};
    ferry_iterator *it = iter_new(ds, seed);
    collect(it, max, &full);
    ferry_iterator_free(it);
    int64_t card = ferry_dataset_cardinality(ds);
    int64_t oks = 0; /* positions that are elements */
    for (size_t i = 0; i < full.n; i++) oks += full.v[i][0] != 'E';
    if (card >= 0) {
        /* Cardinality counts positions when none fails; take counts elements (as tf.data), so an
         * error under it adds a position. */
        if (card < oks) FAILF("cardinality %lld, but %lld elements came", (long long)card, (long long)oks);
        if (card + ((int64_t)full.n - oks) < max) ASSERT(full.ended); /* a finite stream ends */
        if (full.ended && oks == (int64_t)full.n) ASSERT_EQ(card, (int64_t)full.n);
        if (full.ended) ASSERT(card <= (int64_t)full.n);
    } else if (card == FERRY_INFINITE) {
        ASSERT(!full.ended);
    }
    int64_t n = (int64_t)full.n;
    for (int64_t k = 0; k <= n; k++) {
        it = iter_new(ds, seed);
        items pre = {0};
        collect(it, k, &pre);
        ASSERT_EQ((int64_t)pre.n, k);
        expect_same(&full, 0, &pre, "prefix before save", (size_t)k);
        ferry_blob *b, *b2;
        ASSERT_OK(ferry_iterator_save(it, &b));
        ASSERT_OK(ferry_iterator_save(it, &b2)); /* saving changes nothing */
        ASSERT_EQ(ferry_blob_size(b), ferry_blob_size(b2));
        ASSERT(memcmp(ferry_blob_data(b), ferry_blob_data(b2), ferry_blob_size(b)) == 0);
        ferry_blob_free(b2);
        ferry_iterator_free(it);
        ferry_iterator *r;
        ASSERT_OK(ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), NULL, &r));
        ferry_blob_free(b);
        items rest = {0};
        collect(r, max - k, &rest);
        ferry_iterator_free(r);
        ASSERT_EQ((int64_t)rest.n, n - k);
        ASSERT_EQ(rest.ended, full.ended);
        expect_same(&full, (size_t)k, &rest, "restore after save", (size_t)k);
        items_free(&pre);
        items_free(&rest);
    }
    /* A chain of save/free/restore after every position. */
    it = iter_new(ds, seed);
    items chain = {0};
    for (int64_t k = 0; k < max; k++) {
        size_t before = chain.n;
        collect(it, 1, &chain);
        ferry_blob *b;
        ASSERT_OK(ferry_iterator_save(it, &b));
        ferry_iterator_free(it);
        ASSERT_OK(ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), NULL, &it));
        ferry_blob_free(b);
        if (chain.n == before) break;
    }
    ferry_iterator_free(it);
    ASSERT_EQ(chain.n, full.n);
    ASSERT_EQ(chain.ended, full.ended);
    expect_same(&full, 0, &chain, "chain of restores", 0);
    items_free(&chain);
    /* skip(k) for every k up to the number of elements and one past it: the stream without its
     * first k elements, the errors among them kept in place (tf.data's skip). */
    for (int64_t k = 0; k <= oks + 1; k++) {
        ferry_dataset *sk;
        ASSERT_OK(ferry_dataset_skip(ds, k, NULL, &sk));
        items want = {0};
        int64_t dropped = 0;
        for (size_t i = 0; i < full.n; i++) {
            if (full.v[i][0] != 'E' && dropped < k) dropped++;
            else items_push(&want, full.v[i]);
        }
        it = iter_new(sk, seed);
        items rest = {0};
        collect(it, (int64_t)want.n + (full.ended ? 1 : 0), &rest); /* ended: END comes next */
        ferry_iterator_free(it);
        ASSERT_EQ(rest.n, want.n);
        if (full.ended) ASSERT(rest.ended);
        expect_same(&want, 0, &rest, "skip", (size_t)k);
        items_free(&rest);
        items_free(&want);
        ferry_dataset_unref(sk);
    }
    items_free(&full);
}

/* ---- a test generator ----------------------------------------------------------------------- */
enum { GEN_VALUE, GEN_RANDOM, GEN_BYTES, GEN_BAD_DTYPE, GEN_BAD_ARITY, GEN_SLOW };

typedef struct gen_cfg {
    int64_t n;     /* positions before END; -1: forever */
    uint64_t fail; /* bit i: position i fails with FERRY_EUSER (i < 64) */
    int kind;
    int64_t offset; /* GEN_VALUE: value = offset + position */
    int64_t bad_at; /* GEN_BAD_*: the position with the wrong output */
    bool fail_init;
    int inits, finis, nexts, bad_index, saw_cancel;
    _Atomic int running; /* GEN_SLOW: a call is waiting for cancellation */
} gen_cfg;

typedef struct gen_state {
    gen_cfg *cfg;
    int64_t i;
} gen_state;

static SC_FN int tgen_init(ferry_context *ctx, void *user, void **state) {
    gen_cfg *c = user;
    if (ferry_context_index(ctx) != -1) c->bad_index++;
    if (c->fail_init) return ferry_context_fail(ctx, FERRY_EIO, "cannot open the test source");
    gen_state *s = calloc(1, sizeof *s);
    ASSERT(s != NULL);
    s->cfg = c;
    c->inits++;
    *state = s;
    return FERRY_OK;
}

static SC_FN int tgen_next(ferry_context *ctx, void *state, ferry_element **out) {
    gen_state *s = state;
    gen_cfg *c = s->cfg;
    c->nexts++;
    int64_t i = s->i++;
    if (ferry_context_index(ctx) != i) c->bad_index++;
    if (c->n >= 0 && i >= c->n) return FERRY_END;
    if (i < 64 && ((c->fail >> i) & 1)) return ferry_context_fail(ctx, FERRY_EUSER, "boom at %lld", (long long)i);
    ferry_runtime *rt = ferry_context_runtime(ctx);
    ferry_tensor *t[2];
    size_t n = 1;
    if (c->kind == GEN_SLOW) {
        atomic_store(&c->running, 1);
        while (!ferry_context_cancelled(ctx)) ferry_context_sleep(ctx, 1000000);
        c->saw_cancel++;
        return FERRY_ECANCELED;
    }
    if (c->kind == GEN_BYTES) {
        char buf[32];
        snprintf(buf, sizeof buf, "s%lld", (long long)i);
        const void *p = buf;
        size_t len = strlen(buf);
        ASSERT_OK(ferry_tensor_create_bytes(rt, 0, NULL, &p, &len, &t[0]));
    } else if (c->kind == GEN_BAD_DTYPE && i == c->bad_at) {
        ASSERT_OK(ferry_tensor_scalar_f32(rt, 1.5f, &t[0]));
    } else {
        int64_t v = c->kind == GEN_RANDOM ? (int64_t)(ferry_context_random(ctx) >> 1) : c->offset + i;
        ASSERT_OK(ferry_tensor_scalar_i64(rt, v, &t[0]));
        if (c->kind == GEN_BAD_ARITY && i == c->bad_at) {
            ASSERT_OK(ferry_tensor_scalar_i64(rt, v, &t[1]));
            n = 2;
        }
    }
    return ferry_element_create(rt, n, t, out);
}

static SC_FN void tgen_fini(void *state, void *user) {
    gen_state *s = state;
    gen_cfg *c = user;
    ASSERT(s->cfg == c);
    c->finis++;
    free(s);
}

static SC_FN ferry_dataset *gen_dataset(ferry_runtime *rt, gen_cfg *c, int64_t declared) {
    ferry_tensor_spec spec = {.dtype = c->kind == GEN_BYTES ? FERRY_DTYPE_BYTES : FERRY_DTYPE_INT64,
                              .shape = {.rank = 0}};
    ferry_generator_options o = {.init = tgen_init,
                                 .next = tgen_next,
                                 .fini = tgen_fini,
                                 .user = c,
                                 .num_components = 1,
                                 .specs = &spec,
                                 .cardinality = declared};
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_generator(rt, &o, &ds));
    return ds;
}

static SC_FN ferry_tensor *i64_tensor(ferry_runtime *rt, int rank, const int64_t *dims, int64_t first) {
    ferry_tensor *t;
    ASSERT_OK(ferry_tensor_create(rt, FERRY_DTYPE_INT64, rank, dims, &t));
    int64_t *d = ferry_tensor_mutable_data(t);
    for (int64_t i = 0; i < ferry_tensor_num_entries(t); i++) d[i] = first + i;
    return t;
}

static SC_FN ferry_tensor *bytes_tensor(ferry_runtime *rt, int64_t n, const char *const *strs) {
    const void *ptrs[16];
    size_t lens[16];
    ASSERT(n <= 16);
    for (int64_t i = 0; i < n; i++) {
        ptrs[i] = strs[i];
        lens[i] = strlen(strs[i]);
    }
    ferry_tensor *t;
    ASSERT_OK(ferry_tensor_create_bytes(rt, 1, &n, ptrs, lens, &t));
    return t;
}

#endif
