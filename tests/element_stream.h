/*
 * element_stream.h - helpers shared by the batch, cache and shuffle tests: a runtime that must
 * be empty at the end, a generator source whose element i comes from a make() callback (with
 * chosen positions failing with FERRY_EUSER) and a few such makers, small tensor builders and
 * readers, and a stream recorder that reduces every position to its status code and a hash of
 * the element (dtypes, shapes, values, bytes entries), so that a resumed stream is compared with
 * the uninterrupted one position by position (check_resume_everywhere saves at every position).
 * Include after runner.h; everything here is static, and the few helpers that not every test
 * uses are marked unused (runtimes: rt_new and rt_done of runner.h).
 */
#ifndef FERRY_TEST_ELEMENT_STREAM_H
#define FERRY_TEST_ELEMENT_STREAM_H

#include "runner.h"

/* On the helpers that not every includer calls: no -Wunused-function for them. */
#define ELEMENT_STREAM_OPTIONAL __attribute__((unused))

/* ---- runtime and a generator source ------------------------------------------------------- */
/* A generator source: element i = make(rt, i); positions listed in errors fail with EUSER. */
typedef struct src {
    int64_t n; /* elements; -1: endless */
    int (*make)(ferry_runtime *rt, int64_t i, ferry_element **out);
    int64_t errors[8];
    int nerrors;
    int64_t calls;
} src;

static int src_init(ferry_context *ctx, void *user, void **state) {
    (void)ctx;
    *state = user;
    return FERRY_OK;
}

static int src_next(ferry_context *ctx, void *state, ferry_element **out) {
    src *s = state;
    int64_t i = ferry_context_index(ctx);
    s->calls++;
    if (s->n >= 0 && i >= s->n) return FERRY_END;
    for (int k = 0; k < s->nerrors; k++)
        if (s->errors[k] == i) return ferry_context_fail(ctx, FERRY_EUSER, "bad element %lld", (long long)i);
    return s->make(ferry_context_runtime(ctx), i, out);
}

static ferry_dataset *src_dataset(ferry_runtime *rt, src *s, size_t ncomp, const ferry_tensor_spec *specs,
                                  int64_t card) {
    ferry_generator_options o = {
        .init = src_init, .next = src_next, .user = s, .num_components = ncomp, .specs = specs, .cardinality = card};
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_generator(rt, &o, &ds));
    return ds;
}

/* ---- element makers for src --------------------------------------------------------------- */
/* Element i: int64 scalar i. */
ELEMENT_STREAM_OPTIONAL
static int make_scalar(ferry_runtime *rt, int64_t i, ferry_element **out) {
    ferry_tensor *t;
    int rc = ferry_tensor_scalar_i64(rt, i, &t);
    if (rc) return rc;
    return ferry_element_create(rt, 1, &t, out);
}

/* Element i: float32 [250] (1000 bytes) whose first value is i. */
ELEMENT_STREAM_OPTIONAL
static int make_kb(ferry_runtime *rt, int64_t i, ferry_element **out) {
    int64_t n = 250;
    ferry_tensor *t;
    int rc = ferry_tensor_create(rt, FERRY_DTYPE_FLOAT32, 1, &n, &t);
    if (rc) return rc;
    ((float *)ferry_tensor_mutable_data(t))[0] = (float)i;
    return ferry_element_create(rt, 1, &t, out);
}

/* ---- tensors and elements ----------------------------------------------------------------- */
ELEMENT_STREAM_OPTIONAL
static ferry_tensor *str_tensor(ferry_runtime *rt, int rank, const int64_t *dims, const char *const *strs) {
    int64_t n = 1;
    for (int i = 0; i < rank; i++) n *= dims[i];
    const void *ptrs[16];
    size_t lens[16];
    for (int64_t i = 0; i < n; i++) {
        ptrs[i] = strs[i];
        lens[i] = strlen(strs[i]);
    }
    ferry_tensor *t;
    ASSERT_OK(ferry_tensor_create_bytes(rt, rank, dims, ptrs, lens, &t));
    return t;
}

static int64_t i64_at(const ferry_element *e, size_t c, int64_t i) {
    const ferry_tensor *t = ferry_element_get(e, c);
    ASSERT(t != NULL);
    ASSERT_EQ(ferry_tensor_dtype(t), FERRY_DTYPE_INT64);
    ASSERT(i < ferry_tensor_num_entries(t));
    return ((const int64_t *)ferry_tensor_data(t))[i];
}

ELEMENT_STREAM_OPTIONAL
static void assert_str(const ferry_element *e, size_t c, int64_t i, const char *want) {
    const uint8_t *p;
    size_t len;
    ASSERT_OK(ferry_tensor_bytes_get(ferry_element_get(e, c), i, &p, &len));
    if (len != strlen(want) || memcmp(p, want, len) != 0)
        FAILF("entry %lld of component %zu is \"%.*s\", expected \"%s\"", (long long)i, c, (int)len, (const char *)p,
              want);
}

/* ---- streams: status codes and element hashes, position by position ----------------------- */
/* A hash of an element's dtypes, shapes and values (bytes entries included). */
static uint64_t sig(const ferry_element *e) {
    uint64_t h = 1469598103934665603ull;
#define MIX(v) (h = (h ^ (uint64_t)(v)) * 1099511628211ull)
    for (size_t c = 0; c < ferry_element_size(e); c++) {
        const ferry_tensor *t = ferry_element_get(e, c);
        MIX(ferry_tensor_dtype(t));
        MIX(ferry_tensor_rank(t));
        for (int d = 0; d < ferry_tensor_rank(t); d++) MIX(ferry_tensor_dim(t, d));
        if (ferry_tensor_dtype(t) == FERRY_DTYPE_BYTES) {
            for (int64_t i = 0; i < ferry_tensor_num_entries(t); i++) {
                const uint8_t *p;
                size_t len;
                ASSERT_OK(ferry_tensor_bytes_get(t, i, &p, &len));
                MIX(len);
                for (size_t k = 0; k < len; k++) MIX(p[k]);
            }
        } else {
            const uint8_t *p = ferry_tensor_data(t);
            for (size_t k = 0; k < ferry_tensor_nbytes(t); k++) MIX(p[k]);
        }
    }
#undef MIX
    return h;
}

#define MAXPOS 512
typedef struct stream {
    int n;
    int code[MAXPOS];
    uint64_t sig[MAXPOS];
} stream;

/* Reads `it` to END (at most MAXPOS positions) into s. */
static void drain(ferry_iterator *it, stream *s) {
    s->n = 0;
    for (;;) {
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) break;
        ASSERT(s->n < MAXPOS);
        s->code[s->n] = rc;
        s->sig[s->n] = rc == FERRY_OK ? sig(e) : 0;
        if (rc != FERRY_OK) ASSERT(e == NULL);
        ferry_element_free(e);
        s->n++;
    }
}

static void assert_tail(const stream *ref, int from, const stream *got, const char *what) {
    if (got->n != ref->n - from) FAILF("%s at %d: %d positions, expected %d", what, from, got->n, ref->n - from);
    for (int i = 0; i < got->n; i++) {
        if (got->code[i] != ref->code[from + i] || got->sig[i] != ref->sig[from + i])
            FAILF("%s at %d: position %d differs (code %d vs %d)", what, from, from + i, got->code[i],
                  ref->code[from + i]);
    }
}

/* Saves after every position p and checks that both the restored iterator and the original
 * one go on with exactly the uninterrupted stream. */
static void check_resume_everywhere(ferry_dataset *ds, uint64_t seed) {
    ferry_iterator_options o = {.seed = seed};
    static stream ref, got;
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, &o, &it));
    drain(it, &ref);
    ferry_iterator_free(it);
    for (int p = 0; p <= ref.n; p++) {
        ASSERT_OK(ferry_iterator_create(ds, &o, &it));
        for (int i = 0; i < p; i++) {
            ferry_element *e = NULL;
            ASSERT_EQ(ferry_iterator_next(it, &e), ref.code[i]);
            ferry_element_free(e);
        }
        ferry_blob *b;
        ASSERT_OK(ferry_iterator_save(it, &b));
        ferry_iterator *r;
        if (ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), &o, &r) != FERRY_OK)
            FAILF("restore at %d: %s", p, ferry_last_error());
        drain(r, &got);
        assert_tail(&ref, p, &got, "restored");
        drain(it, &got);
        assert_tail(&ref, p, &got, "original after save");
        ferry_iterator_free(r);
        ferry_iterator_free(it);
        ferry_blob_free(b);
    }
}

/* ---- iterators ---------------------------------------------------------------------------- */
static ferry_iterator *iter(ferry_dataset *ds) {
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    return it;
}

static ferry_element *next_ok(ferry_iterator *it) {
    ferry_element *e = NULL;
    int rc = ferry_iterator_next(it, &e);
    if (rc != FERRY_OK) FAILF("next returned %s: %s", ferry_error_name(rc), ferry_iterator_error(it));
    return e;
}

static void expect_end(ferry_iterator *it) {
    ferry_element *e = NULL;
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
    ASSERT(e == NULL);
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
}

#endif
