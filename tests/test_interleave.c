/*
 * test_interleave.c - interleave and flat_map: tf.data's order for cycle/block combinations
 * (sequences written out by hand, and a reference model over many random cases), the same output
 * for 0/1/2/4 threads, relaxed order as a multiset, inner datasets of different lengths and
 * empty ones, errors from the input, the dataset function and inner iterators in position, spec
 * checks, the byte budget, cancellation mid-stream, and save/restore at every position (inline and
 * parallel, and across thread counts).
 *
 * The inner datasets are "tseq", a source defined here with the internal op API: values
 * start + i*step for i < n, errors at chosen positions, an optional per-element sleep that polls
 * cancellation, and a counter of next calls.
 */
#include "runner.h"

#include "core/core.h"

/* ---- tseq: a test source ---------------------------------------------------------------- */
#define TSEQ_MAX_ERR 4
typedef struct tseq_cfg {
    int64_t start, step, n;
    int64_t err_at[TSEQ_MAX_ERR]; /* positions that are errors (FERRY_EIO); -1: none */
    int64_t sleep_ns;             /* per element, polling cancellation */
    bool unknown_shape;           /* declare FERRY_UNKNOWN_RANK */
    int64_t vector_at;            /* this position is a [2] vector instead of a scalar (-1: none) */
} tseq_cfg;

typedef struct tseq_ds {
    ferry_dataset base;
    tseq_cfg cfg;
} tseq_ds;

typedef struct tseq_it {
    ferry__iter base;
    int64_t i;
} tseq_it;

static _Atomic long tseq_calls;

static int tseq_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    tseq_it *it = (tseq_it *)it_;
    const tseq_cfg *c = &((const tseq_ds *)it_->ds)->cfg;
    atomic_fetch_add(&tseq_calls, 1);
    if (it->i >= c->n) return FERRY_END;
    if (c->sleep_ns) {
        int64_t end = ferry__now_ns() + c->sleep_ns;
        while (ferry__now_ns() < end) {
            if (ferry__cancelled(it_->ctx.cancel)) return ferry__fail(st, FERRY_ECANCELED, "tseq: cancelled");
            ferry__sleep_ns(200000);
        }
    }
    int64_t pos = it->i++;
    for (int k = 0; k < TSEQ_MAX_ERR; k++)
        if (c->err_at[k] == pos) return ferry__fail(st, FERRY_EIO, "tseq: error at position %lld", (long long)pos);
    int64_t v = c->start + pos * c->step;
    ferry_tensor *t;
    if (pos == c->vector_at) {
        int64_t d = 2;
        int rc = ferry__tensor_new(it_->ctx.rt, FERRY_DTYPE_INT64, 1, &d, &t, st);
        if (rc) return rc;
        ((int64_t *)(void *)t->data)[0] = v;
        ((int64_t *)(void *)t->data)[1] = v;
    } else {
        int rc = ferry__tensor_new(it_->ctx.rt, FERRY_DTYPE_INT64, 0, NULL, &t, st);
        if (rc) return rc;
        memcpy(t->data, &v, 8);
    }
    ferry_element *e = ferry__element_new(it_->ctx.rt, 1);
    if (!e) {
        ferry_tensor_unref(t);
        return ferry__fail(st, FERRY_ENOMEM, "tseq: allocating an element failed");
    }
    e->t[0] = t;
    *out = e;
    return FERRY_OK;
}

static int tseq_save(ferry__iter *it, ferry__writer *w, ferry__status *st) {
    (void)st;
    ferry__w_i64(w, ((tseq_it *)it)->i);
    return FERRY_OK;
}

static void tseq_destroy(ferry__iter *it) { ferry__iter_release(it); }

static const ferry__iter_vtable tseq_iter_vt = {tseq_next, tseq_save, NULL, tseq_destroy};

static int tseq_make(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                     ferry__status *st) {
    tseq_it *it = ferry__iter_alloc(ds, ctx, &tseq_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    if (state) {
        int rc = ferry__r_i64(state, &it->i, st);
        if (rc == FERRY_OK && (it->i < 0 || it->i > ((tseq_ds *)ds)->cfg.n))
            rc = ferry__fail(st, FERRY_ECORRUPT, "tseq: bad index");
        if (rc) {
            ferry__iter_release(&it->base);
            return rc;
        }
    }
    *out = &it->base;
    return FERRY_OK;
}

static const ferry__dataset_vtable tseq_vt = {.make = tseq_make};

/* NULL when the allocation fails. */
static ferry_dataset *tseq_try(ferry_runtime *rt, const tseq_cfg *c) {
    ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = c->unknown_shape ? FERRY_UNKNOWN_RANK : 0}};
    ferry_dataset *ds;
    if (ferry__dataset_new(rt, &tseq_vt, "tseq", sizeof(tseq_ds), 0, NULL, 1, &spec, c->n, &ds)) return NULL;
    ((tseq_ds *)ds)->cfg = *c;
    ferry__dataset_hash(ds, c, sizeof *c);
    ferry__dataset_seal(ds);
    return ds;
}

static ferry_dataset *tseq(ferry_runtime *rt, const tseq_cfg *c) {
    ferry_dataset *ds = tseq_try(rt, c);
    if (!ds) FAILF("making tseq failed: %s", ferry_last_error());
    return ds;
}

static tseq_cfg cfg_n(int64_t start, int64_t n) {
    tseq_cfg c = {.start = start, .step = 1, .n = n, .err_at = {-1, -1, -1, -1}, .vector_at = -1};
    return c;
}

/* ---- the dataset function --------------------------------------------------------------- */
#define MAX_IN 64
typedef struct fn_cfg {
    int64_t len[MAX_IN];       /* inner length per input value */
    int64_t inner_err[MAX_IN]; /* inner error position, or -1 */
    bool fail[MAX_IN];         /* the function fails for this input value */
    bool wrong_dtype[MAX_IN];  /* returns a float32 dataset */
    bool odd_shape[MAX_IN];    /* inner declares unknown rank and yields a vector at position 1 */
    int64_t mult;              /* start = value * mult */
    int64_t step;              /* 0: constant values (as tf.data's repeat example) */
    int64_t sleep_ns;
    _Atomic long calls;
} fn_cfg;

static void fn_cfg_init(fn_cfg *c) {
    memset(c, 0, sizeof *c);
    for (int i = 0; i < MAX_IN; i++) c->inner_err[i] = -1;
    c->mult = 100;
    c->step = 1;
}

static int make_inner(ferry_context *ctx, const ferry_element *in, ferry_dataset **out, void *user) {
    fn_cfg *c = user;
    atomic_fetch_add(&c->calls, 1);
    int64_t v = *(const int64_t *)ferry_tensor_data(ferry_element_get(in, 0));
    if (v < 0 || v >= MAX_IN) return ferry_context_fail(ctx, FERRY_EINVAL, "value %lld out of range", (long long)v);
    if (c->fail[v]) return ferry_context_fail(ctx, FERRY_EUSER, "fn refuses %lld", (long long)v);
    ferry_runtime *rt = ferry_context_runtime(ctx);
    if (c->wrong_dtype[v]) {
        ferry_tensor *t;
        ASSERT_OK(ferry_tensor_scalar_f32(rt, 1.0f, &t));
        int rc = ferry_dataset_from_tensors(rt, 1, &t, NULL, out);
        ferry_tensor_unref(t);
        return rc;
    }
    tseq_cfg tc = cfg_n(v * c->mult, c->len[v]);
    tc.step = c->step;
    tc.err_at[0] = c->inner_err[v];
    tc.sleep_ns = c->sleep_ns;
    if (c->odd_shape[v]) {
        tc.unknown_shape = true;
        tc.vector_at = 1;
    }
    *out = tseq_try(rt, &tc);
    return *out ? FERRY_OK : ferry_context_fail(ctx, FERRY_ENOMEM, "making the inner dataset failed");
}

/* ---- stream capture --------------------------------------------------------------------- */
typedef struct item {
    int rc;
    int64_t v;
} item;

typedef struct items {
    item *v;
    size_t n, cap;
} items;

static void items_push(items *s, int rc, int64_t v) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        ASSERT(s->v != NULL);
    }
    s->v[s->n++] = (item){rc, v};
}

/* Reads up to max positions (all when max < 0) from it. */
static void drain(ferry_iterator *it, items *s, long max) {
    for (long i = 0; max < 0 || i < max; i++) {
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) return;
        if (rc == FERRY_OK) {
            ferry_tensor *t = ferry_element_get(e, 0);
            ASSERT_EQ(ferry_tensor_rank(t), 0);
            items_push(s, 0, *(const int64_t *)ferry_tensor_data(t));
            ferry_element_free(e);
        } else {
            ASSERT(e == NULL);
            ASSERT(ferry_iterator_error(it)[0] != '\0');
            items_push(s, rc, 0);
        }
    }
}

static items run_all(ferry_dataset *ds) {
    items s = {0};
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    drain(it, &s, -1);
    ferry_element *e = NULL;
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
    ferry_iterator_free(it);
    return s;
}

static void expect_items(const items *got, const item *want, size_t n, const char *what) {
    if (got->n != n) {
        fprintf(stderr, "%s: got %zu items:", what, got->n);
        for (size_t i = 0; i < got->n; i++) fprintf(stderr, " %s%lld", got->v[i].rc ? "E" : "", (long long)got->v[i].v);
        fprintf(stderr, "\n");
        FAILF("%s: expected %zu items, got %zu", what, n, got->n);
    }
    for (size_t i = 0; i < n; i++) {
        if (got->v[i].rc != want[i].rc || (want[i].rc == 0 && got->v[i].v != want[i].v))
            FAILF("%s: item %zu: expected (%d, %lld), got (%d, %lld)", what, i, want[i].rc, (long long)want[i].v,
                  got->v[i].rc, (long long)got->v[i].v);
    }
}

static int cmp_item(const void *a, const void *b) {
    const item *x = a, *y = b;
    if (x->rc != y->rc) return x->rc < y->rc ? -1 : 1;
    if (x->v != y->v) return x->v < y->v ? -1 : 1;
    return 0;
}

static void expect_same_multiset(const items *got, const items *want, const char *what) {
    ASSERT_EQ(got->n, want->n);
    item *a = malloc(got->n * sizeof *a + 1), *b = malloc(want->n * sizeof *b + 1);
    memcpy(a, got->v, got->n * sizeof *a);
    memcpy(b, want->v, want->n * sizeof *b);
    qsort(a, got->n, sizeof *a, cmp_item);
    qsort(b, want->n, sizeof *b, cmp_item);
    for (size_t i = 0; i < got->n; i++)
        if (cmp_item(&a[i], &b[i]) != 0) FAILF("%s: multisets differ at sorted item %zu", what, i);
    free(a);
    free(b);
}

static ferry_dataset *interleave(ferry_dataset *in, fn_cfg *c, int cycle, int block, int threads, bool relaxed) {
    ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 0}};
    ferry_interleave_options o = {.cycle_length = cycle,
                                  .block_length = block,
                                  .num_parallel_calls = threads,
                                  .relaxed_order = relaxed,
                                  .num_outputs = 1,
                                  .output_specs = &spec};
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_interleave(in, make_inner, c, &o, &ds));
    return ds;
}

/* Like interleave() but returns NULL when construction fails (allocation-failure tests). */
static ferry_dataset *interleave_or_null(ferry_dataset *in, fn_cfg *c, int cycle, int block, int threads) {
    ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 0}};
    ferry_interleave_options o = {.cycle_length = cycle,
                                  .block_length = block,
                                  .num_parallel_calls = threads,
                                  .num_outputs = 1,
                                  .output_specs = &spec};
    ferry_dataset *ds = NULL;
    if (ferry_dataset_interleave(in, make_inner, c, &o, &ds) != FERRY_OK) return NULL;
    return ds;
}

/* Reads up to max positions, accepting any error (allocation-failure tests); stops at END. */
static void drain_lenient(ferry_iterator *it, items *s, long max) {
    for (long i = 0; i < max; i++) {
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) return;
        ASSERT(rc != FERRY_OK || e != NULL);
        ASSERT(rc == FERRY_OK || e == NULL);
        items_push(s, rc, 0);
        ferry_element_free(e);
    }
}

/* ---- the reference model (tf.data's InterleaveDataset, written independently of the op) ---- */
/* Stream of input k as items: outer error, function failure, wrong dtype -> one error. */
static items model_stream(const fn_cfg *c, int64_t k, int64_t outer_err) {
    items s = {0};
    if (k == outer_err) {
        items_push(&s, FERRY_EIO, 0);
        return s;
    }
    if (c->fail[k]) {
        items_push(&s, FERRY_EUSER, 0);
        return s;
    }
    if (c->wrong_dtype[k]) {
        items_push(&s, FERRY_ETYPE, 0);
        return s;
    }
    for (int64_t i = 0; i < c->len[k]; i++) {
        if (i == c->inner_err[k]) items_push(&s, FERRY_EIO, 0);
        else if (c->odd_shape[k] && i == 1) items_push(&s, FERRY_ETYPE, 0);
        else items_push(&s, 0, k * c->mult + i * c->step);
    }
    return s;
}

static items model(const fn_cfg *c, int64_t ninputs, int64_t outer_err, int cycle, int block) {
    items out = {0};
    items *cur = calloc((size_t)cycle, sizeof *cur);
    size_t *pos = calloc((size_t)cycle, sizeof *pos);
    bool *open = calloc((size_t)cycle, sizeof *open);
    int64_t next_in = 0;
    int nopen = 0, ci = 0, bi = 0;
    bool end_in = false;
    while (!end_in || nopen > 0) {
        if (open[ci]) {
            if (pos[ci] < cur[ci].n) {
                item x = cur[ci].v[pos[ci]++];
                items_push(&out, x.rc, x.v);
                if (++bi == block) {
                    bi = 0;
                    ci = (ci + 1) % cycle;
                }
            } else {
                free(cur[ci].v);
                open[ci] = false;
                nopen--;
                bi = 0;
                ci = (ci + 1) % cycle;
            }
        } else if (!end_in) {
            if (next_in >= ninputs) {
                end_in = true;
            } else {
                cur[ci] = model_stream(c, next_in++, outer_err);
                pos[ci] = 0;
                open[ci] = true;
                nopen++;
            }
        } else {
            bi = 0;
            ci = (ci + 1) % cycle;
        }
    }
    free(cur);
    free(pos);
    free(open);
    return out;
}

/* ---- tests ------------------------------------------------------------------------------ */
TEST(interleave_order_by_hand) {
    /* inputs 0..3, fn = range(i*10, i*10 + n_i) with n = 3, 5, 0, 2; cycle 2, block 2:
     *   slot0 <- 0: 0 1 | slot1 <- 1: 10 11 | slot0: 2, end | slot1: 12 13 | slot0 <- 2: empty |
     *   slot1: 14, end | slot0 <- 3: 30 31 | slot1: input ended | slot0: end. */
    static const item want[] = {{0, 0}, {0, 1}, {0, 10}, {0, 11}, {0, 2}, {0, 12}, {0, 13}, {0, 14}, {0, 30}, {0, 31}};
    int threads[] = {0, 1, 2, 4};
    for (int t = 0; t < 4; t++) {
        ferry_runtime *rt = rt_new();
        static fn_cfg c;
        fn_cfg_init(&c);
        c.mult = 10;
        c.len[0] = 3, c.len[1] = 5, c.len[2] = 0, c.len[3] = 2;
        ferry_dataset *in, *ds;
        ASSERT_OK(ferry_dataset_range(rt, 0, 4, 1, NULL, &in));
        ds = interleave(in, &c, 2, 2, threads[t], false);
        ASSERT(strcmp(ferry_dataset_name(ds), "interleave") == 0);
        ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_UNKNOWN);
        items got = run_all(ds);
        expect_items(&got, want, sizeof want / sizeof want[0], "cycle 2 block 2");
        free(got.v);
        ferry_dataset_unref(ds);
        ferry_dataset_unref(in);
        rt_done(rt);
    }
}

TEST(interleave_tf_doc_example) {
    /* tf.data's documentation: range(1, 6).interleave(lambda x: repeat(x, 6), cycle_length=2,
     * block_length=4) -> 1111 2222 11 22 3333 4444 33 44 5555 55. */
    static const int64_t want_v[] = {1, 1, 1, 1, 2, 2, 2, 2, 1, 1, 2, 2, 3, 3, 3,
                                     3, 4, 4, 4, 4, 3, 3, 4, 4, 5, 5, 5, 5, 5, 5};
    item want[30];
    for (int i = 0; i < 30; i++) want[i] = (item){0, want_v[i]};
    for (int t = 0; t < 3; t++) {
        ferry_runtime *rt = rt_new();
        static fn_cfg c;
        fn_cfg_init(&c);
        c.mult = 1;
        c.step = 0;
        for (int i = 1; i <= 5; i++) c.len[i] = 6;
        ferry_dataset *in, *ds;
        ASSERT_OK(ferry_dataset_range(rt, 1, 6, 1, NULL, &in));
        ds = interleave(in, &c, 2, 4, t == 2 ? 3 : t, false);
        items got = run_all(ds);
        expect_items(&got, want, 30, "tf doc example");
        free(got.v);
        ferry_dataset_unref(ds);
        ferry_dataset_unref(in);
        rt_done(rt);
    }
}

/* Random cases: every cycle/block combination against the model, for 0, 1, 2 and 4 threads;
 * relaxed order gives the same multiset. Lengths include 0; some errors in every position kind. */
TEST(interleave_matches_model) {
    ferry_runtime *rt = rt_new();
    static fn_cfg c;
    uint64_t x = 12345;
    for (int round = 0; round < 24; round++) {
        fn_cfg_init(&c);
        int64_t n = 1 + (int64_t)(round % 9);
        for (int64_t i = 0; i < n; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            c.len[i] = (int64_t)((x >> 33) % 7); /* 0..6 */
            if (round % 3 == 1 && (x >> 20) % 4 == 0) c.inner_err[i] = (int64_t)((x >> 40) % 4);
            if (round % 4 == 2 && (x >> 24) % 5 == 0) c.fail[i] = true;
        }
        int64_t outer_err = round % 5 == 3 ? n / 2 : -1;
        int cycle = 1 + round % 4, block = 1 + (round / 4) % 3;
        items want = model(&c, n, outer_err, cycle, block);
        tseq_cfg oc = cfg_n(0, n);
        oc.err_at[0] = outer_err;
        ferry_dataset *in = tseq(rt, &oc);
        int threads[] = {0, 1, 2, 4};
        for (int t = 0; t < 4; t++) {
            ferry_dataset *ds = interleave(in, &c, cycle, block, threads[t], false);
            items got = run_all(ds);
            char what[64];
            snprintf(what, sizeof what, "round %d cycle %d block %d threads %d", round, cycle, block, threads[t]);
            expect_items(&got, want.v, want.n, what);
            free(got.v);
            ferry_dataset_unref(ds);
        }
        ferry_dataset *rx = interleave(in, &c, cycle, block, 2, true);
        items got = run_all(rx);
        expect_same_multiset(&got, &want, "relaxed");
        free(got.v);
        ferry_dataset_unref(rx);
        ferry_dataset_unref(in);
        free(want.v);
    }
    rt_done(rt);
}

TEST(interleave_errors_in_position) {
    ferry_runtime *rt = rt_new();
    static fn_cfg c;
    fn_cfg_init(&c);
    c.mult = 10;
    for (int i = 0; i < 4; i++) c.len[i] = 3;
    c.fail[1] = true;        /* the function fails for input 1 */
    c.inner_err[0] = 1;      /* inner 0 fails at its position 1 */
    c.wrong_dtype[3] = true; /* input 3 makes a float32 dataset */
    tseq_cfg oc = cfg_n(0, 5);
    oc.err_at[0] = 2; /* the input itself fails at position 2 */
    ferry_dataset *in = tseq(rt, &oc);
    c.len[4] = 2;
    /* cycle 2 block 1: slot0 <- 0: 0 | slot1 <- 1: E(fn) | slot0: E(inner) | slot1: end | slot0: 2 |
     * slot1 <- 2: E(input) | slot0: end | slot1: end | slot0 <- 3: E(dtype) | slot1 <- 4: 40 |
     * slot0: end | slot1: 41 | end. The model must agree with this hand-written sequence. */
    items want = model(&c, 5, 2, 2, 1);
    static const item hand[] = {{0, 0},         {FERRY_EUSER, 0}, {FERRY_EIO, 0}, {0, 2},
                                {FERRY_EIO, 0}, {FERRY_ETYPE, 0}, {0, 40},        {0, 41}};
    expect_items(&want, hand, sizeof hand / sizeof hand[0], "model");
    for (int t = 0; t < 3; t++) {
        ferry_dataset *ds = interleave(in, &c, 2, 1, t, false);
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
        items got = {0};
        for (size_t i = 0; i < want.n; i++) {
            drain(it, &got, 1);
            if (got.v[i].rc == FERRY_EUSER) ASSERT_STR_CONTAINS(ferry_iterator_error(it), "fn refuses 1");
            if (got.v[i].rc == FERRY_EUSER) ASSERT_STR_CONTAINS(ferry_iterator_error(it), "input element 1");
            if (got.v[i].rc == FERRY_ETYPE) ASSERT_STR_CONTAINS(ferry_iterator_error(it), "float32");
            if (got.v[i].rc == FERRY_EIO) ASSERT_STR_CONTAINS(ferry_iterator_error(it), "tseq: error at position");
        }
        ferry_element *e = NULL;
        ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
        expect_items(&got, want.v, want.n, "errors");
        free(got.v);
        ferry_iterator_free(it);
        ferry_dataset_unref(ds);
    }
    free(want.v);
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(interleave_element_spec_checks) {
    ferry_runtime *rt = rt_new();
    static fn_cfg c;
    fn_cfg_init(&c);
    for (int i = 0; i < 3; i++) c.len[i] = 3;
    c.odd_shape[1] = true; /* declares unknown rank; position 1 is a vector */
    ferry_dataset *in;
    ASSERT_OK(ferry_dataset_range(rt, 0, 3, 1, NULL, &in));
    items want = model(&c, 3, -1, 1, 1);
    for (int t = 0; t < 2; t++) {
        ferry_dataset *ds = interleave(in, &c, 1, 1, t * 2, false);
        items got = run_all(ds);
        expect_items(&got, want.v, want.n, "odd shape");
        ASSERT_EQ(got.v[4].rc, FERRY_ETYPE);
        free(got.v);
        ferry_dataset_unref(ds);
    }
    free(want.v);
    /* num_outputs 0: the spec comes from the first dataset made. */
    ferry_dataset *ds;
    ferry_interleave_options o = {.cycle_length = 2};
    long calls = atomic_load(&c.calls);
    ASSERT_OK(ferry_dataset_interleave(in, make_inner, &c, &o, &ds));
    ASSERT_EQ(atomic_load(&c.calls), calls + 1);
    ASSERT_EQ(ferry_dataset_num_components(ds), 1);
    ferry_tensor_spec sp;
    ASSERT_OK(ferry_dataset_component_spec(ds, 0, &sp));
    ASSERT_EQ(sp.dtype, FERRY_DTYPE_INT64);
    ASSERT_EQ(sp.shape.rank, 0);
    ferry_dataset_unref(ds);
    /* ... which fails when the first input element fails. */
    c.fail[0] = true;
    ASSERT_EQ(ferry_dataset_interleave(in, make_inner, &c, &o, &ds), FERRY_EUSER);
    ASSERT(ds == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "output_specs");
    ASSERT_STR_CONTAINS(ferry_last_error(), "fn refuses 0");
    /* Argument checks. */
    ASSERT_EQ(ferry_dataset_interleave(in, NULL, &c, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'fn'");
    ferry_interleave_options bad = {.cycle_length = -3};
    ASSERT_EQ(ferry_dataset_interleave(in, make_inner, &c, &bad, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "cycle_length");
    bad = (ferry_interleave_options){.num_parallel_calls = -7};
    ASSERT_EQ(ferry_dataset_interleave(in, make_inner, &c, &bad, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "num_parallel_calls");
    bad = (ferry_interleave_options){.num_outputs = 1};
    ASSERT_EQ(ferry_dataset_interleave(in, make_inner, &c, &bad, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "output_specs");
    ASSERT_EQ(ferry_dataset_interleave(NULL, make_inner, &c, NULL, &ds), FERRY_EINVAL);
    ASSERT_EQ(ferry_dataset_interleave(in, make_inner, &c, NULL, NULL), FERRY_EINVAL);
    /* An empty input: no components, no elements. */
    ferry_dataset *empty;
    ASSERT_OK(ferry_dataset_range(rt, 0, 0, 1, NULL, &empty));
    ASSERT_OK(ferry_dataset_interleave(empty, make_inner, &c, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 0);
    items got = run_all(ds);
    ASSERT_EQ(got.n, 0);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(empty);
    ferry_dataset_unref(in);
    rt_done(rt);
}

/* Save after every position, restore (inline and parallel, crossing thread counts), and compare
 * the rest with the uninterrupted stream. */
static void save_restore_all(ferry_dataset *a, ferry_dataset *b, bool relaxed) {
    items full = run_all(a);
    for (size_t p = 0; p <= full.n; p++) {
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(a, NULL, &it));
        items got = {0};
        drain(it, &got, (long)p);
        ASSERT_EQ(got.n, p);
        ferry_blob *blob;
        ASSERT_OK(ferry_iterator_save(it, &blob));
        /* The original goes on unharmed after a save. */
        drain(it, &got, 3);
        ferry_iterator_free(it);
        got.n = p;
        ferry_iterator *r;
        int rc = ferry_iterator_restore(b, ferry_blob_data(blob), ferry_blob_size(blob), NULL, &r);
        if (rc) FAILF("restore at %zu: %s", p, ferry_last_error());
        drain(r, &got, -1);
        ferry_iterator_free(r);
        ferry_blob_free(blob);
        char what[64];
        snprintf(what, sizeof what, "restored at %zu", p);
        if (relaxed) expect_same_multiset(&got, &full, what);
        else expect_items(&got, full.v, full.n, what);
        free(got.v);
    }
    free(full.v);
}

TEST(interleave_save_restore_every_position) {
    ferry_runtime *rt = rt_new();
    static fn_cfg c;
    fn_cfg_init(&c);
    int64_t lens[] = {3, 0, 5, 1, 4, 2, 0, 6, 2};
    for (int i = 0; i < 9; i++) c.len[i] = lens[i];
    c.inner_err[4] = 2;
    c.fail[5] = true;
    tseq_cfg oc = cfg_n(0, 9);
    oc.err_at[0] = 6;
    ferry_dataset *in = tseq(rt, &oc);
    int combos[][2] = {{2, 2}, {3, 1}, {1, 1}, {4, 3}};
    for (int k = 0; k < 4; k++) {
        int cycle = combos[k][0], block = combos[k][1];
        ferry_dataset *seq = interleave(in, &c, cycle, block, 0, false);
        ferry_dataset *par = interleave(in, &c, cycle, block, 2, false);
        ferry_dataset *par4 = interleave(in, &c, cycle, block, 4, false);
        save_restore_all(seq, seq, false);
        save_restore_all(par, par, false);
        save_restore_all(seq, par4, false);
        save_restore_all(par4, seq, false);
        ferry_dataset *rx = interleave(in, &c, cycle, block, 2, true);
        save_restore_all(rx, rx, true);
        ferry_dataset_unref(rx);
        ferry_dataset_unref(seq);
        ferry_dataset_unref(par);
        ferry_dataset_unref(par4);
    }
    ferry_dataset_unref(in);
    rt_done(rt);
}

/* Long inner streams so that parallel snapshots are pruned and replays cross snapshot periods. */
TEST(interleave_save_restore_long_streams) {
    ferry_runtime *rt = rt_new();
    static fn_cfg c;
    fn_cfg_init(&c);
    c.mult = 1000;
    for (int i = 0; i < 6; i++) c.len[i] = 70 + 13 * i;
    ferry_dataset *in;
    ASSERT_OK(ferry_dataset_range(rt, 0, 6, 1, NULL, &in));
    ferry_dataset *par = interleave(in, &c, 3, 5, 3, false);
    ferry_dataset *seq = interleave(in, &c, 3, 5, 0, false);
    items full = run_all(seq);
    ASSERT_EQ(full.n, 6 * 70 + 13 * 15);
    for (size_t p = 0; p <= full.n; p += 7) {
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(par, NULL, &it));
        items got = {0};
        drain(it, &got, (long)p);
        ferry_blob *blob;
        ASSERT_OK(ferry_iterator_save(it, &blob));
        ferry_iterator_free(it);
        ferry_iterator *r;
        ASSERT_OK(ferry_iterator_restore(p % 2 ? seq : par, ferry_blob_data(blob), ferry_blob_size(blob), NULL, &r));
        drain(r, &got, -1);
        ferry_iterator_free(r);
        ferry_blob_free(blob);
        expect_items(&got, full.v, full.n, "long streams");
        free(got.v);
    }
    free(full.v);
    ferry_dataset_unref(par);
    ferry_dataset_unref(seq);
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(interleave_state_mismatch_refused) {
    ferry_runtime *rt = rt_new();
    static fn_cfg c;
    fn_cfg_init(&c);
    for (int i = 0; i < 4; i++) c.len[i] = 4;
    ferry_dataset *in;
    ASSERT_OK(ferry_dataset_range(rt, 0, 4, 1, NULL, &in));
    ferry_dataset *a = interleave(in, &c, 2, 1, 0, false);
    ferry_dataset *b = interleave(in, &c, 3, 1, 0, false);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(a, NULL, &it));
    items got = {0};
    drain(it, &got, 5);
    ferry_blob *blob;
    ASSERT_OK(ferry_iterator_save(it, &blob));
    ferry_iterator *r = NULL;
    ASSERT_EQ(ferry_iterator_restore(b, ferry_blob_data(blob), ferry_blob_size(blob), NULL, &r), FERRY_EMISMATCH);
    ASSERT(r == NULL);
    ferry_blob_free(blob);
    ferry_iterator_free(it);
    free(got.v);
    ferry_dataset_unref(a);
    ferry_dataset_unref(b);
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(interleave_cancel_mid_stream) {
    ferry_runtime *rt = rt_new();
    static fn_cfg c;
    fn_cfg_init(&c);
    for (int i = 0; i < 8; i++) c.len[i] = 1000;
    c.sleep_ns = 2000000; /* 2 ms per element: workers are mostly asleep in inner next */
    ferry_dataset *in;
    ASSERT_OK(ferry_dataset_range(rt, 0, 8, 1, NULL, &in));
    for (int t = 1; t <= 4; t *= 2) {
        ferry_dataset *ds = interleave(in, &c, 4, 2, t, t == 4);
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
        items got = {0};
        drain(it, &got, 5);
        ASSERT_EQ(got.n, 5);
        int64_t t0 = ferry__now_ns();
        ferry_iterator_free(it); /* must join workers stuck in slow inner reads */
        (void)t0;
        ferry_runtime_stats rs;
        ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
        ASSERT_EQ(rs.threads_live, 0);
        ASSERT_EQ(rs.budget_used, 0);
        free(got.v);
        ferry_dataset_unref(ds);
    }
    /* Freed before the first next, and with warm start. */
    ferry_dataset *ds = interleave(in, &c, 4, 2, 2, false);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    ferry_iterator_free(it);
    ferry_iterator_options wo = {.warm_start = true};
    ASSERT_OK(ferry_iterator_create(ds, &wo, &it));
    ferry__sleep_ns(5000000);
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(interleave_budget_no_deadlock) {
    /* A budget of 64 bytes holds 8 int64 scalars: workers must force into empty rings and never
     * deadlock; the peak stays under the budget plus one element per worker. */
    ferry_runtime *rt = rt_new_budget(64);
    static fn_cfg c;
    fn_cfg_init(&c);
    for (int i = 0; i < 10; i++) c.len[i] = 50;
    ferry_dataset *in;
    ASSERT_OK(ferry_dataset_range(rt, 0, 10, 1, NULL, &in));
    ferry_dataset *seq = interleave(in, &c, 4, 3, 0, false);
    ferry_dataset *par = interleave(in, &c, 4, 3, 4, false);
    items want = run_all(seq);
    items got = run_all(par);
    expect_items(&got, want.v, want.n, "small budget");
    ferry_runtime_stats rs;
    ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
    ASSERT_LE(rs.budget_used_peak, 64 + 4 * 8);
    ASSERT_EQ(rs.budget_used, 0);
    free(want.v);
    free(got.v);
    ferry_dataset_unref(seq);
    ferry_dataset_unref(par);
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(interleave_autotune_and_stats) {
    ferry_runtime *rt = rt_new();
    static fn_cfg c;
    fn_cfg_init(&c);
    for (int i = 0; i < 5; i++) c.len[i] = 20;
    ferry_dataset *in;
    ASSERT_OK(ferry_dataset_range(rt, 0, 5, 1, NULL, &in));
    ferry_dataset *auto_ds = interleave(in, &c, 3, 2, FERRY_AUTOTUNE, false);
    ferry_dataset *seq = interleave(in, &c, 3, 2, 0, false);
    items want = run_all(seq);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(auto_ds, NULL, &it));
    items got = {0};
    drain(it, &got, -1);
    expect_items(&got, want.v, want.n, "autotune");
    ferry_stage_stats ss[4];
    size_t n = 0;
    ASSERT_OK(ferry_iterator_stats(it, ss, 4, &n));
    ASSERT_EQ(n, 2);
    ASSERT(strcmp(ss[0].name, "interleave") == 0);
    ASSERT_EQ(ss[0].elements_out, 100);
    ferry_runtime_stats rs;
    ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
    /* every AUTOTUNE stage leaves one core to the consumer: cpu_budget - 1 workers, at least 1 */
    ASSERT_EQ(ss[0].parallelism, rs.cpu_budget > 1 ? rs.cpu_budget - 1 : 1);
    ASSERT(ss[0].buffer_capacity > 0);
    ASSERT_EQ(ss[0].buffered_elements, 0); /* everything was handed out */
    ASSERT_EQ(ss[0].buffered_bytes, 0);
    ferry_iterator_free(it);
    free(want.v);
    free(got.v);
    ferry_dataset_unref(auto_ds);
    ferry_dataset_unref(seq);
    ferry_dataset_unref(in);
    rt_done(rt);
}

TEST(flat_map_order_errors_and_restore) {
    ferry_runtime *rt = rt_new();
    static fn_cfg c;
    fn_cfg_init(&c);
    c.mult = 10;
    c.len[0] = 2, c.len[1] = 0, c.len[2] = 3, c.len[3] = 1;
    c.inner_err[2] = 1;
    c.fail[4] = true;
    c.len[5] = 2;
    ferry_dataset *in, *ds;
    ASSERT_OK(ferry_dataset_range(rt, 0, 6, 1, NULL, &in));
    ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 0}};
    ASSERT_OK(ferry_dataset_flat_map(in, make_inner, &c,
                                     &(ferry_flat_map_options){.num_outputs = 1, .output_specs = &spec}, &ds));
    ASSERT(strcmp(ferry_dataset_name(ds), "flat_map") == 0);
    static const item want[] = {{0, 0},  {0, 1},           {0, 20}, {FERRY_EIO, 0}, {0, 22},
                                {0, 30}, {FERRY_EUSER, 0}, {0, 50}, {0, 51}};
    items got = run_all(ds);
    expect_items(&got, want, sizeof want / sizeof want[0], "flat_map");
    free(got.v);
    save_restore_all(ds, ds, false);
    /* num_outputs 0 takes the spec from the first dataset. */
    ferry_dataset *ds2;
    ASSERT_OK(ferry_dataset_flat_map(in, make_inner, &c, NULL, &ds2));
    ASSERT_EQ(ferry_dataset_num_components(ds2), 1);
    got = run_all(ds2);
    expect_items(&got, want, sizeof want / sizeof want[0], "flat_map probed");
    free(got.v);
    ferry_dataset *bad;
    ASSERT_EQ(ferry_dataset_flat_map(in, NULL, &c, NULL, &bad), FERRY_EINVAL);
    ASSERT(bad == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_dataset_flat_map");
    ferry_dataset_unref(ds2);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    rt_done(rt);
}

/* ---- allocation failures ---------------------------------------------------------------- */
/* Fails exactly the fail_at-th allocation request (new blocks and growths), passes the rest. */
typedef struct failing_alloc {
    _Atomic long n;
    long fail_at;
} failing_alloc;

static void *failing_alloc_fn(void *user, void *ptr, size_t old, size_t size) {
    failing_alloc *f = user;
    (void)old;
    if (size == 0) {
        free(ptr);
        return NULL;
    }
    if (atomic_fetch_add(&f->n, 1) + 1 == f->fail_at) return NULL;
    return realloc(ptr, size);
}

/* Every single allocation failure, anywhere from building the pipeline to freeing it, leaves no
 * crash, no hang and nothing allocated. */
TEST(interleave_allocation_failures) {
    static fn_cfg c;
    fn_cfg_init(&c);
    for (int i = 0; i < 5; i++) c.len[i] = 3 + i;
    c.fail[2] = true;
    for (int threads = 0; threads <= 2; threads += 2) {
        long total = 0;
        for (long k = 1;; k++) {
            static failing_alloc fa;
            atomic_store(&fa.n, 0);
            fa.fail_at = k;
            ferry_runtime_options ro = {.alloc = failing_alloc_fn, .alloc_user = &fa};
            ferry_runtime *rt;
            if (ferry_runtime_create(&ro, &rt) != FERRY_OK) continue;
            ferry_dataset *in = NULL, *ds = NULL;
            ferry_iterator *it = NULL, *r = NULL;
            ferry_blob *b = NULL;
            if (ferry_dataset_range(rt, 0, 5, 1, NULL, &in) == FERRY_OK) ds = interleave_or_null(in, &c, 2, 2, threads);
            if (ds && ferry_iterator_create(ds, NULL, &it) == FERRY_OK) {
                items got = {0};
                drain_lenient(it, &got, 3);
                if (ferry_iterator_save(it, &b) == FERRY_OK &&
                    ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), NULL, &r) == FERRY_OK)
                    drain_lenient(r, &got, 200);
                drain_lenient(it, &got, 200);
                free(got.v);
            }
            ferry_iterator_free(r);
            ferry_iterator_free(it);
            ferry_blob_free(b);
            ferry_dataset_unref(ds);
            ferry_dataset_unref(in);
            rt_done(rt);
            if (k > atomic_load(&fa.n)) { /* the whole run needed fewer allocations: done */
                total = k;
                break;
            }
        }
        ASSERT(total > 20);
    }
}

/* A parallel interleave hands on what a worker has read once a read was slow, instead of holding
 * it until a batch of positions is read (tests/handoff.h: later positions wait for the consumer). */
#include "handoff.h"

static int handoff_inner(ferry_context *ctx, const ferry_element *e, ferry_dataset **out, void *user) {
    (void)e;
    *out = handoff_source(ferry_context_runtime(ctx), user);
    return FERRY_OK;
}

TEST(interleave_hands_on_what_is_read) {
    ferry_runtime *rt = rt_new();
    for (int threads = 1; threads <= 2; threads++) {
        handoff h = {.n = 40, .slow_at = 3};
        ferry_dataset *r, *ds;
        ASSERT_OK(ferry_dataset_range(rt, 0, 1, 1, NULL, &r));
        ferry_interleave_options o = {
            .cycle_length = 1, .num_parallel_calls = threads, .num_outputs = 1, .output_specs = &handoff_spec};
        ASSERT_OK(ferry_dataset_interleave(r, handoff_inner, &h, &o, &ds));
        handoff_consume(ds, &h);
        ferry_dataset_unref(ds);
        ferry_dataset_unref(r);
    }
    rt_done(rt);
}
