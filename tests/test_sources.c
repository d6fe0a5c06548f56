/*
 * test_sources.c - the in-memory sources (from_tensor_slices, from_tensors) and the generator:
 * values, shared bytes, specs, cardinality, argument checks, errors in position, the generator's
 * state lifecycle and contexts, and save/restore at every position of small streams.
 *
 * The stream checker below (render, collect, check_stream) is generic over datasets: it renders
 * each position as text ("3", "'ab'", "(1,[2,3])", "E" for FERRY_EUSER, "E:FERRY_ETYPE" for other
 * errors) and compares streams as lists of such items.
 */
#include <stdarg.h>

#include "runner.h"

#include "core/core.h" /* generator cancellation is checked through the internal iterator API */

/* ---- stream checker ----------------------------------------------------------------------- */
#define ITEM_MAX 256

typedef struct items {
    char (*v)[ITEM_MAX];
    size_t n, cap;
    bool ended; /* FERRY_END was seen (not the max cut) */
} items;

static ferry_runtime *rt_new(void) {
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(NULL, &rt));
    return rt;
}

static void rt_done(ferry_runtime *rt) {
    int rc = ferry_runtime_free(rt);
    if (rc != FERRY_OK) FAILF("runtime not empty: %s", ferry_last_error());
}

static size_t appendf(char *buf, size_t cap, size_t k, const char *fmt, ...) FERRY_PRINTF(4, 5);
static size_t appendf(char *buf, size_t cap, size_t k, const char *fmt, ...) {
    if (k >= cap) return k;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + k, cap - k, fmt, ap);
    va_end(ap);
    return w < 0 ? k : k + (size_t)w;
}

static size_t render_tensor(char *buf, size_t cap, size_t k, const ferry_tensor *t) {
    int64_t n = ferry_tensor_num_entries(t);
    bool vec = ferry_tensor_rank(t) > 0;
    if (vec) k = appendf(buf, cap, k, "[");
    for (int64_t i = 0; i < n; i++) {
        if (i) k = appendf(buf, cap, k, ",");
        switch (ferry_tensor_dtype(t)) {
        case FERRY_INT64: k = appendf(buf, cap, k, "%lld", (long long)((const int64_t *)ferry_tensor_data(t))[i]); break;
        case FERRY_INT32: k = appendf(buf, cap, k, "%d", ((const int32_t *)ferry_tensor_data(t))[i]); break;
        case FERRY_FLOAT32: k = appendf(buf, cap, k, "%g", (double)((const float *)ferry_tensor_data(t))[i]); break;
        case FERRY_BYTES: {
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

static void render(char *buf, size_t cap, int rc, const ferry_element *e) {
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

static void items_push(items *s, const char *item) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        ASSERT(s->v != NULL);
    }
    snprintf(s->v[s->n++], ITEM_MAX, "%s", item);
}

static void items_free(items *s) {
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* Pulls up to max positions (or to the end) from it into s. */
static void collect(ferry_iterator *it, int64_t max, items *s) {
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

static char *join(const items *s) {
    size_t cap = 1 + s->n * ITEM_MAX;
    char *out = malloc(cap);
    ASSERT(out != NULL);
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < s->n; i++) k = appendf(out, cap, k, "%s%s", i ? " " : "", s->v[i]);
    return out;
}

static ferry_iterator *iter_new(ferry_dataset *ds, uint64_t seed) {
    ferry_iterator_options o = {.seed = seed};
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, &o, &it));
    return it;
}

/* Asserts that the whole stream of ds (seed 0) renders as `want` (items joined by spaces). */
static void expect_stream(ferry_dataset *ds, const char *want) {
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

static void expect_same(const items *full, size_t from, const items *rest, const char *what, size_t k) {
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
static void check_stream(ferry_dataset *ds, int64_t max, uint64_t seed) {
    items full = {0};
    ferry_iterator *it = iter_new(ds, seed);
    collect(it, max, &full);
    ferry_iterator_free(it);
    int64_t card = ferry_dataset_cardinality(ds);
    if (card >= 0) {
        if (card < max) ASSERT(full.ended);
        if (full.ended) ASSERT_EQ(card, (int64_t)full.n);
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
    /* skip(k) for every k up to the end and one past it. */
    for (int64_t k = 0; k <= n + 1; k++) {
        ferry_dataset *sk;
        ASSERT_OK(ferry_dataset_skip(ds, k, &sk));
        it = iter_new(sk, seed);
        items rest = {0};
        collect(it, max - (k < n ? k : n), &rest);
        ferry_iterator_free(it);
        ASSERT_EQ((int64_t)rest.n, k < n ? n - k : 0);
        expect_same(&full, (size_t)(k < n ? k : n), &rest, "skip", (size_t)k);
        items_free(&rest);
        ferry_dataset_unref(sk);
    }
    items_free(&full);
}

/* ---- a test generator ----------------------------------------------------------------------- */
enum { GEN_VALUE, GEN_RANDOM, GEN_BYTES, GEN_BAD_DTYPE, GEN_BAD_ARITY, GEN_SLOW };

typedef struct gen_cfg {
    int64_t n;      /* positions before END; -1: forever */
    uint64_t fail;  /* bit i: position i fails with FERRY_EUSER (i < 64) */
    int kind;
    int64_t offset; /* GEN_VALUE: value = offset + position */
    int64_t bad_at; /* GEN_BAD_*: the position with the wrong output */
    bool fail_init;
    int inits, finis, nexts, bad_index, saw_cancel;
} gen_cfg;

typedef struct gen_state {
    gen_cfg *cfg;
    int64_t i;
} gen_state;

static int tgen_init(ferry_context *ctx, void *user, void **state) {
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

static int tgen_next(ferry_context *ctx, void *state, ferry_element **out) {
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

static void tgen_fini(void *state, void *user) {
    gen_state *s = state;
    gen_cfg *c = user;
    ASSERT(s->cfg == c);
    c->finis++;
    free(s);
}

static ferry_dataset *gen_dataset(ferry_runtime *rt, gen_cfg *c, int64_t declared) {
    ferry_tensor_spec spec = {.dtype = c->kind == GEN_BYTES ? FERRY_BYTES : FERRY_INT64, .shape = {.rank = 0}};
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

static ferry_tensor *i64_tensor(ferry_runtime *rt, int rank, const int64_t *dims, int64_t first) {
    ferry_tensor *t;
    ASSERT_OK(ferry_tensor_create(rt, FERRY_INT64, rank, dims, &t));
    int64_t *d = ferry_tensor_mutable_data(t);
    for (int64_t i = 0; i < ferry_tensor_num_entries(t); i++) d[i] = first + i;
    return t;
}

static ferry_tensor *bytes_tensor(ferry_runtime *rt, int64_t n, const char *const *strs) {
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

/* ---- from_tensor_slices / from_tensors -------------------------------------------------------- */
TEST(slices_rows_share_bytes) {
    ferry_runtime *rt = rt_new();
    int64_t dims[2] = {4, 2};
    ferry_tensor *t[2];
    t[0] = i64_tensor(rt, 2, dims, 0);
    const char *strs[4] = {"a", "", "ccc", "dd"};
    t[1] = bytes_tensor(rt, 4, strs);
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 2, t, &ds));
    ASSERT(strcmp(ferry_dataset_name(ds), "from_tensor_slices") == 0);
    ASSERT_EQ(ferry_dataset_cardinality(ds), 4);
    ASSERT_EQ(ferry_dataset_num_components(ds), 2);
    ferry_tensor_spec spec;
    ASSERT_OK(ferry_dataset_component_spec(ds, 0, &spec));
    ASSERT_EQ(spec.dtype, FERRY_INT64);
    ASSERT_EQ(spec.shape.rank, 1);
    ASSERT_EQ(spec.shape.dims[0], 2);
    ASSERT_OK(ferry_dataset_component_spec(ds, 1, &spec));
    ASSERT_EQ(spec.dtype, FERRY_BYTES);
    ASSERT_EQ(spec.shape.rank, 0);
    const int64_t *base = ferry_tensor_data(t[0]);
    /* The dataset holds its own references: the caller's can go now. */
    ferry_tensor_unref(t[0]);
    ferry_tensor_unref(t[1]);
    ferry_iterator *it = iter_new(ds, 0);
    ferry_element *e;
    ASSERT_OK(ferry_iterator_next(it, &e));
    ferry_element_free(e);
    ASSERT_OK(ferry_iterator_next(it, &e)); /* the second row */
    ASSERT(ferry_tensor_data(ferry_element_get(e, 0)) == (const void *)(base + 2));
    ASSERT_EQ(ferry_tensor_nbytes(ferry_element_get(e, 0)), 16);
    const uint8_t *p;
    size_t len;
    ASSERT_OK(ferry_tensor_bytes_get(ferry_element_get(e, 1), 0, &p, &len));
    ASSERT_EQ(len, 0);
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    /* The row outlives the iterator and the dataset. */
    ASSERT_EQ(((const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)))[1], 3);
    ferry_element_free(e);
    rt_done(rt);
}

TEST(slices_stream_and_restore) {
    ferry_runtime *rt = rt_new();
    int64_t dims[2] = {5, 2};
    ferry_tensor *t[2];
    t[0] = i64_tensor(rt, 2, dims, 10);
    const char *strs[5] = {"zero", "one", "", "three", "four"};
    t[1] = bytes_tensor(rt, 5, strs);
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 2, t, &ds));
    expect_stream(ds, "([10,11],'zero') ([12,13],'one') ([14,15],'') ([16,17],'three') ([18,19],'four')");
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 1, &t[1], &ds));
    expect_stream(ds, "'zero' 'one' '' 'three' 'four'");
    ferry_dataset_unref(ds);
    ferry_tensor_unref(t[0]);
    ferry_tensor_unref(t[1]);
    rt_done(rt);
}

TEST(slices_empty_and_rank3) {
    ferry_runtime *rt = rt_new();
    int64_t dims[3] = {0, 3, 2};
    ferry_tensor *t = i64_tensor(rt, 3, dims, 0);
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 1, &t, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 0);
    ferry_tensor_spec spec;
    ASSERT_OK(ferry_dataset_component_spec(ds, 0, &spec));
    ASSERT_EQ(spec.shape.rank, 2);
    ASSERT_EQ(spec.shape.dims[0], 3);
    ASSERT_EQ(spec.shape.dims[1], 2);
    expect_stream(ds, "");
    check_stream(ds, 10, 0);
    ferry_dataset_unref(ds);
    ferry_tensor_unref(t);
    dims[0] = 2;
    t = i64_tensor(rt, 3, dims, 0);
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 1, &t, &ds));
    expect_stream(ds, "[0,1,2,3,4,5] [6,7,8,9,10,11]");
    ferry_dataset_unref(ds);
    ferry_tensor_unref(t);
    rt_done(rt);
}

TEST(slices_argument_errors) {
    ferry_runtime *rt = rt_new();
    int64_t d4 = 4, d3 = 3;
    ferry_tensor *t[3];
    t[0] = i64_tensor(rt, 1, &d4, 0);
    t[1] = i64_tensor(rt, 1, &d3, 0);
    ASSERT_OK(ferry_tensor_scalar_i64(rt, 7, &t[2]));
    ferry_dataset *ds = (ferry_dataset *)1;
    ASSERT_EQ(ferry_dataset_from_tensor_slices(rt, 2, t, &ds), FERRY_EINVAL);
    ASSERT(ds == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_dataset_from_tensor_slices");
    ASSERT_STR_CONTAINS(ferry_last_error(), "tensors[1]");
    ASSERT_STR_CONTAINS(ferry_last_error(), "size 3");
    ASSERT_STR_CONTAINS(ferry_last_error(), "has 4");
    ferry_tensor *s[2] = {t[0], t[2]};
    ASSERT_EQ(ferry_dataset_from_tensor_slices(rt, 2, s, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "tensors[1] is a scalar");
    ASSERT_EQ(ferry_dataset_from_tensor_slices(rt, 0, t, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'n'");
    ASSERT_EQ(ferry_dataset_from_tensor_slices(rt, 1, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'tensors'");
    ferry_tensor *nul[1] = {NULL};
    ASSERT_EQ(ferry_dataset_from_tensor_slices(rt, 1, nul, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "tensors[0] is NULL");
    ASSERT_EQ(ferry_dataset_from_tensor_slices(NULL, 1, t, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'rt'");
    ASSERT_EQ(ferry_dataset_from_tensor_slices(rt, 1, t, NULL), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'out'");
    ASSERT_EQ(ferry_dataset_from_tensors(rt, 0, t, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_dataset_from_tensors");
    /* A tensor of another runtime is refused. */
    ferry_runtime *rt2 = rt_new();
    ASSERT_EQ(ferry_dataset_from_tensors(rt2, 1, t, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "another runtime");
    rt_done(rt2);
    for (int i = 0; i < 3; i++) ferry_tensor_unref(t[i]);
    rt_done(rt);
}

TEST(from_tensors_one_element) {
    ferry_runtime *rt = rt_new();
    int64_t dims[2] = {2, 3};
    ferry_tensor *t[2];
    t[0] = i64_tensor(rt, 2, dims, 1);
    const char *strs[2] = {"x", "yz"};
    t[1] = bytes_tensor(rt, 2, strs);
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_from_tensors(rt, 2, t, &ds));
    ASSERT(strcmp(ferry_dataset_name(ds), "from_tensors") == 0);
    ASSERT_EQ(ferry_dataset_cardinality(ds), 1);
    ferry_tensor_spec spec;
    ASSERT_OK(ferry_dataset_component_spec(ds, 0, &spec));
    ASSERT_EQ(spec.shape.rank, 2);
    ASSERT_EQ(spec.shape.dims[0], 2);
    ASSERT_EQ(spec.shape.dims[1], 3);
    expect_stream(ds, "([1,2,3,4,5,6],['x','yz'])");
    ferry_iterator *it = iter_new(ds, 0);
    ferry_element *e;
    ASSERT_OK(ferry_iterator_next(it, &e));
    ASSERT(ferry_element_get(e, 0) == t[0]); /* the very tensor, shared */
    ferry_element_free(e);
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
    ferry_iterator_free(it);
    check_stream(ds, 10, 0);
    ferry_dataset_unref(ds);
    ferry_tensor_unref(t[0]);
    ferry_tensor_unref(t[1]);
    rt_done(rt);
}

TEST(slices_restore_rejects_bad_state) {
    ferry_runtime *rt = rt_new();
    int64_t d = 3;
    ferry_tensor *t = i64_tensor(rt, 1, &d, 0);
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 1, &t, &ds));
    ferry_iterator *it = iter_new(ds, 0);
    ferry_blob *b;
    ASSERT_OK(ferry_iterator_save(it, &b));
    ferry_iterator_free(it);
    /* Patch the saved index (the payload ends with it, just before the u64 checksum) to 4 > 3
     * and fix the checksum, so that the op itself must refuse it. */
    size_t size = ferry_blob_size(b);
    uint8_t *copy = malloc(size);
    memcpy(copy, ferry_blob_data(b), size);
    ASSERT_EQ(copy[size - 16], 0);
    copy[size - 16] = 4;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < size - 8; i++) {
        h ^= copy[i];
        h *= 0x100000001b3ull;
    }
    for (int i = 0; i < 8; i++) copy[size - 8 + (size_t)i] = (uint8_t)(h >> (8 * i));
    ferry_iterator *r = NULL;
    ASSERT_EQ(ferry_iterator_restore(ds, copy, size, NULL, &r), FERRY_ECORRUPT);
    ASSERT(r == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "from_tensor_slices: saved index 4");
    free(copy);
    ferry_blob_free(b);
    ferry_dataset_unref(ds);
    ferry_tensor_unref(t);
    rt_done(rt);
}

/* ---- generator -------------------------------------------------------------------------------- */
TEST(generator_values_and_lifecycle) {
    ferry_runtime *rt = rt_new();
    gen_cfg c = {.n = 5, .offset = 100};
    ferry_dataset *ds = gen_dataset(rt, &c, 5);
    ASSERT(strcmp(ferry_dataset_name(ds), "generator") == 0);
    ASSERT_EQ(ferry_dataset_cardinality(ds), 5);
    ASSERT_EQ(c.inits, 0); /* building runs no user code */
    ferry_iterator *it = iter_new(ds, 0);
    ASSERT_EQ(c.inits, 0); /* nor does making an iterator */
    items s = {0};
    collect(it, 100, &s);
    char *got = join(&s);
    ASSERT(strcmp(got, "100 101 102 103 104") == 0);
    free(got);
    items_free(&s);
    ASSERT_EQ(c.inits, 1);
    ASSERT_EQ(c.finis, 1); /* fini runs at END, before the iterator goes */
    ASSERT_EQ(c.nexts, 6);
    ferry_iterator_free(it);
    ASSERT_EQ(c.finis, 1);
    /* An iterator freed mid-stream runs fini; one never pulled runs neither. */
    it = iter_new(ds, 0);
    ferry_element *e;
    ASSERT_OK(ferry_iterator_next(it, &e));
    ferry_element_free(e);
    ferry_iterator_free(it);
    ASSERT_EQ(c.inits, 2);
    ASSERT_EQ(c.finis, 2);
    it = iter_new(ds, 0);
    ferry_iterator_free(it);
    ASSERT_EQ(c.inits, 2);
    ASSERT_EQ(c.finis, 2);
    ASSERT_EQ(c.bad_index, 0);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(generator_errors_in_position) {
    ferry_runtime *rt = rt_new();
    gen_cfg c = {.n = 10, .fail = (1u << 0) | (1u << 5) | (1u << 9)};
    ferry_dataset *ds = gen_dataset(rt, &c, 0);
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_UNKNOWN);
    expect_stream(ds, "E 1 2 3 4 E 6 7 8 E");
    ferry_iterator *it = iter_new(ds, 0);
    ferry_element *e = NULL;
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_EUSER);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "generator");
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "position 0");
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "boom at 0");
    ferry_iterator_free(it);
    check_stream(ds, 100, 0);
    ASSERT_EQ(c.inits, c.finis);
    ASSERT_EQ(c.bad_index, 0);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(generator_checks_outputs) {
    ferry_runtime *rt = rt_new();
    gen_cfg c = {.n = 5, .kind = GEN_BAD_DTYPE, .bad_at = 2};
    ferry_dataset *ds = gen_dataset(rt, &c, 5);
    expect_stream(ds, "0 1 E:FERRY_ETYPE 3 4");
    ferry_iterator *it = iter_new(ds, 0);
    ferry_element *e = NULL;
    for (int i = 0; i < 2; i++) {
        ASSERT_OK(ferry_iterator_next(it, &e));
        ferry_element_free(e);
    }
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_ETYPE);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "component 0");
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "float32");
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "int64");
    ferry_iterator_free(it);
    check_stream(ds, 100, 0);
    ferry_dataset_unref(ds);
    gen_cfg c2 = {.n = 4, .kind = GEN_BAD_ARITY, .bad_at = 3};
    ds = gen_dataset(rt, &c2, 0);
    expect_stream(ds, "0 1 2 E:FERRY_ETYPE");
    ferry_dataset_unref(ds);
    ASSERT_EQ(c.inits, c.finis);
    ASSERT_EQ(c2.inits, c2.finis);
    rt_done(rt);
}

TEST(generator_init_failure_ends_stream) {
    ferry_runtime *rt = rt_new();
    gen_cfg c = {.n = 5, .fail_init = true};
    ferry_dataset *ds = gen_dataset(rt, &c, 0);
    ferry_iterator *it = iter_new(ds, 0);
    ferry_element *e = NULL;
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_EIO);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "generator: init");
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "cannot open the test source");
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
    ferry_iterator_free(it);
    ASSERT_EQ(c.inits, 0);
    ASSERT_EQ(c.finis, 0); /* fini never runs for a failed init */
    ASSERT_EQ(c.nexts, 0);
    expect_stream(ds, "E:FERRY_EIO");
    check_stream(ds, 10, 0);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(generator_save_restore_replays) {
    ferry_runtime *rt = rt_new();
    gen_cfg c = {.n = 12, .fail = (1u << 0) | (1u << 6) | (1u << 11), .offset = 7};
    ferry_dataset *ds = gen_dataset(rt, &c, 12);
    check_stream(ds, 100, 3);
    ASSERT_EQ(c.inits, c.finis); /* no state leaked over dozens of iterators */
    ASSERT(c.inits > 12);
    ASSERT_EQ(c.bad_index, 0);   /* replayed calls see the right positions */
    /* Replay cost: a restore at position 8 calls next 8 times before the next output. */
    ferry_iterator *it = iter_new(ds, 3);
    for (int i = 0; i < 8; i++) {
        ferry_element *e = NULL;
        ferry_iterator_next(it, &e);
        ferry_element_free(e);
    }
    ferry_blob *b;
    ASSERT_OK(ferry_iterator_save(it, &b));
    ferry_iterator_free(it);
    int before = c.nexts;
    ferry_iterator *r;
    ASSERT_OK(ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), NULL, &r));
    ASSERT_EQ(c.nexts, before); /* nothing runs until the first next */
    ferry_element *e;
    ASSERT_OK(ferry_iterator_next(r, &e));
    ASSERT_EQ(*(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)), 15);
    ferry_element_free(e);
    ASSERT_EQ(c.nexts, before + 9);
    ferry_iterator_free(r);
    ferry_blob_free(b);
    ASSERT_EQ(c.inits, c.finis);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(generator_infinite_and_random) {
    ferry_runtime *rt = rt_new();
    gen_cfg c = {.n = -1, .kind = GEN_RANDOM};
    ferry_dataset *ds = gen_dataset(rt, &c, FERRY_INFINITE);
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_INFINITE);
    check_stream(ds, 20, 42);
    /* Same seed, same draws; another seed, other draws; positions draw differently. */
    items a = {0}, b = {0}, d = {0};
    ferry_iterator *it = iter_new(ds, 42);
    collect(it, 8, &a);
    ferry_iterator_free(it);
    it = iter_new(ds, 42);
    collect(it, 8, &b);
    ferry_iterator_free(it);
    it = iter_new(ds, 43);
    collect(it, 8, &d);
    ferry_iterator_free(it);
    for (int i = 0; i < 8; i++) {
        ASSERT(strcmp(a.v[i], b.v[i]) == 0);
        ASSERT(strcmp(a.v[i], d.v[i]) != 0);
        if (i) ASSERT(strcmp(a.v[i], a.v[i - 1]) != 0);
    }
    items_free(&a);
    items_free(&b);
    items_free(&d);
    ASSERT_EQ(c.inits, c.finis);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(generator_bytes) {
    ferry_runtime *rt = rt_new();
    gen_cfg c = {.n = 4, .kind = GEN_BYTES, .fail = 1u << 2};
    ferry_dataset *ds = gen_dataset(rt, &c, 4);
    expect_stream(ds, "'s0' 's1' E 's3'");
    check_stream(ds, 10, 0);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(generator_option_errors) {
    ferry_runtime *rt = rt_new();
    ferry_tensor_spec spec = {.dtype = FERRY_INT64, .shape = {.rank = 0}};
    gen_cfg c = {.n = 1};
    ferry_generator_options o = {.next = tgen_next, .num_components = 1, .specs = &spec, .user = &c};
    ferry_dataset *ds = (ferry_dataset *)1;
    ASSERT_EQ(ferry_dataset_generator(rt, NULL, &ds), FERRY_EINVAL);
    ASSERT(ds == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'opts'");
    ferry_generator_options bad = o;
    bad.next = NULL;
    ASSERT_EQ(ferry_dataset_generator(rt, &bad, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "options.next");
    bad = o;
    bad.num_components = 0;
    ASSERT_EQ(ferry_dataset_generator(rt, &bad, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "options.num_components");
    bad = o;
    bad.specs = NULL;
    ASSERT_EQ(ferry_dataset_generator(rt, &bad, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "options.specs");
    bad = o;
    bad.cardinality = -7;
    ASSERT_EQ(ferry_dataset_generator(rt, &bad, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "options.cardinality");
    ferry_tensor_spec bad_spec = {.dtype = (ferry_dtype)99};
    bad = o;
    bad.specs = &bad_spec;
    ASSERT_EQ(ferry_dataset_generator(rt, &bad, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "options.specs[0].dtype");
    bad_spec = (ferry_tensor_spec){.dtype = FERRY_INT64, .shape = {.rank = 1, .dims = {-5}}};
    ASSERT_EQ(ferry_dataset_generator(rt, &bad, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "options.specs[0].shape.dims[0]");
    ASSERT_EQ(ferry_dataset_generator(NULL, &o, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'rt'");
    /* Without init the state is NULL; with a declared unknown-dim spec any size fits. */
    ASSERT_OK(ferry_dataset_generator(rt, &o, &ds));
    ferry_dataset_unref(ds);
    rt_done(rt);
}

static int null_state_next(ferry_context *ctx, void *state, ferry_element **out) {
    if (state != NULL) return ferry_context_fail(ctx, FERRY_EUSER, "state is not NULL");
    int64_t i = ferry_context_index(ctx);
    if (i >= 3) return FERRY_END;
    int64_t d = i + 1;
    ferry_tensor *t;
    ASSERT_OK(ferry_tensor_create(ferry_context_runtime(ctx), FERRY_INT64, 1, &d, &t));
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out);
}

TEST(generator_without_init_and_unknown_dims) {
    ferry_runtime *rt = rt_new();
    ferry_tensor_spec spec = {.dtype = FERRY_INT64, .shape = {.rank = 1, .dims = {FERRY_UNKNOWN_DIM}}};
    ferry_generator_options o = {.next = null_state_next, .num_components = 1, .specs = &spec, .cardinality = 3};
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_generator(rt, &o, &ds));
    expect_stream(ds, "[0] [0,0] [0,0,0]");
    check_stream(ds, 10, 0);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(generator_sees_cancellation) {
    ferry_runtime *rt = rt_new();
    gen_cfg c = {.n = -1, .kind = GEN_SLOW};
    ferry_dataset *ds = gen_dataset(rt, &c, FERRY_INFINITE);
    ferry__cancel cancel;
    ASSERT_OK(ferry__cancel_init(&cancel, NULL));
    ferry__ictx ctx = {.rt = rt, .cancel = &cancel, .seed = 1};
    ferry__status st;
    ferry__iter *it;
    ASSERT_OK(ferry__iter_make(ds, &ctx, NULL, &it, &st));
    ferry__cancel_fire(&cancel);
    ferry_element *e = NULL;
    ASSERT_EQ(ferry__iter_next(it, &e, &st), FERRY_ECANCELED);
    ASSERT(e == NULL);
    ASSERT_EQ(c.saw_cancel, 1);
    ferry__iter_free(it);
    ASSERT_EQ(c.inits, 1);
    ASSERT_EQ(c.finis, 1);
    ferry__cancel_fini(&cancel);
    ferry_dataset_unref(ds);
    rt_done(rt);
}
