/*
 * test_example.c - the tf.train.Example / SequenceExample parser and the JSON form.
 *
 * Records are built with a tiny protobuf encoder below (so every wire-format variant is spelled
 * out: packed, unpacked, mixed, empty Features, unknown fields, duplicate keys). Batch parsing is
 * checked against a padded batch made here from per-record parses. Malformed input: every
 * truncation and every single-bit flip of valid records must return an error or a value, never
 * crash (ASan runs these). Real files written by TensorFlow (../shared/data) are parsed through a
 * small TFRecord framing reader in this file, and through ferry's TFRecord dataset + map when
 * those are linked in; both skip with a message when the data is absent.
 */
#include <math.h>
#include <pthread.h>
#include <zlib.h>

#include "runner.h"
#include "taxi_features.h"

#include "core/core.h"

/* ---- tiny protobuf encoder -------------------------------------------------------------- */
typedef struct pb {
    uint8_t *p;
    size_t n, cap;
} pb;

static void pb_raw(pb *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        ASSERT(b->p != NULL);
    }
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void pb_u8(pb *b, uint8_t c) { pb_raw(b, &c, 1); }
static void pb_varint(pb *b, uint64_t v) {
    while (v >= 0x80) {
        pb_u8(b, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    pb_u8(b, (uint8_t)v);
}
static void pb_tag(pb *b, uint32_t field, uint32_t wt) { pb_varint(b, (uint64_t)field << 3 | wt); }
static void pb_lenfield(pb *b, uint32_t field, const void *p, size_t n) {
    pb_tag(b, field, 2);
    pb_varint(b, n);
    pb_raw(b, p, n);
}
static void pb_sub(pb *b, uint32_t field, const pb *sub) { pb_lenfield(b, field, sub->p, sub->n); }
static void pb_free(pb *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}
static void pb_f32le(pb *b, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint8_t t[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
    pb_raw(b, t, 4);
}

/* Feature bodies. mode 0: packed, 1: unpacked, 2: half packed + half unpacked. */
static void feat_i64(pb *feat, const int64_t *v, size_t n, int mode) {
    pb list = {0}, packed = {0};
    size_t split = mode == 0 ? 0 : mode == 1 ? n : n / 2;
    for (size_t i = 0; i < split; i++) {
        pb_tag(&list, 1, 0);
        pb_varint(&list, (uint64_t)v[i]);
    }
    for (size_t i = split; i < n; i++) pb_varint(&packed, (uint64_t)v[i]);
    if (packed.n) pb_sub(&list, 1, &packed);
    pb_sub(feat, 3, &list);
    pb_free(&list);
    pb_free(&packed);
}
static void feat_f32(pb *feat, const float *v, size_t n, int mode) {
    pb list = {0}, packed = {0};
    size_t split = mode == 0 ? 0 : mode == 1 ? n : n / 2;
    for (size_t i = 0; i < split; i++) {
        pb_tag(&list, 1, 5);
        pb_f32le(&list, v[i]);
    }
    for (size_t i = split; i < n; i++) pb_f32le(&packed, v[i]);
    if (packed.n) pb_sub(&list, 1, &packed);
    pb_sub(feat, 2, &list);
    pb_free(&list);
    pb_free(&packed);
}
static void feat_bytes(pb *feat, const char *const *v, const size_t *lens, size_t n) {
    pb list = {0};
    for (size_t i = 0; i < n; i++) pb_lenfield(&list, 1, v[i], lens ? lens[i] : strlen(v[i]));
    pb_sub(feat, 1, &list);
    pb_free(&list);
}
/* Appends a map entry key -> feature (a body, may be empty) to a Features/FeatureLists body. */
static void map_add(pb *features, const char *key, const pb *feature) {
    pb entry = {0};
    pb_lenfield(&entry, 1, key, strlen(key));
    pb_lenfield(&entry, 2, feature->p, feature->n);
    pb_sub(features, 1, &entry);
    pb_free(&entry);
}
static void add_i64(pb *features, const char *key, const int64_t *v, size_t n, int mode) {
    pb f = {0};
    feat_i64(&f, v, n, mode);
    map_add(features, key, &f);
    pb_free(&f);
}
static void add_f32(pb *features, const char *key, const float *v, size_t n, int mode) {
    pb f = {0};
    feat_f32(&f, v, n, mode);
    map_add(features, key, &f);
    pb_free(&f);
}
static void add_bytes(pb *features, const char *key, const char *const *v, const size_t *lens, size_t n) {
    pb f = {0};
    feat_bytes(&f, v, lens, n);
    map_add(features, key, &f);
    pb_free(&f);
}
static void add_empty(pb *features, const char *key) {
    pb f = {0};
    map_add(features, key, &f);
}
/* Example { features = 1 }. */
static pb example_of(const pb *features) {
    pb ex = {0};
    pb_sub(&ex, 1, features);
    return ex;
}

/* ---- helpers ---------------------------------------------------------------------------- */
static ferry_tensor *bytes_scalar(ferry_runtime *rt, const void *p, size_t n) {
    ferry_tensor *t;
    const void *ptrs[1] = {p};
    ASSERT_OK(ferry_tensor_create_bytes(rt, 0, NULL, ptrs, &n, &t));
    return t;
}

static ferry_tensor *bytes_vector(ferry_runtime *rt, pb *recs, size_t n) {
    const void **ptrs = calloc(n + 1, sizeof *ptrs);
    size_t *lens = calloc(n + 1, sizeof *lens);
    for (size_t i = 0; i < n; i++) {
        ptrs[i] = recs[i].p;
        lens[i] = recs[i].n;
    }
    int64_t dim = (int64_t)n;
    ferry_tensor *t;
    ASSERT_OK(ferry_tensor_create_bytes(rt, 1, &dim, ptrs, lens, &t));
    free(ptrs);
    free(lens);
    return t;
}

static char last_msg[FERRY__MSG_MAX];

/* Parses `input` (taken) through the map-function interface with a real callback context. */
static int parse_tensor(ferry_runtime *rt, ferry_example_parser *ps, ferry_tensor *input, ferry_element **out) {
    ferry__status st;
    ferry__status_clear(&st);
    ferry_context ctx;
    ferry__context_init(&ctx, rt, NULL, &st, 0, 0);
    ferry_element *in;
    ASSERT_OK(ferry_element_create(rt, 1, &input, &in));
    *out = NULL;
    int rc = ferry_example_parse(&ctx, in, out, ps);
    snprintf(last_msg, sizeof last_msg, "%s", st.msg);
    if (rc) ASSERT(*out == NULL);
    else ASSERT(*out != NULL);
    return rc;
}

static int parse_pb(ferry_runtime *rt, ferry_example_parser *ps, const pb *rec, ferry_element **out) {
    return parse_tensor(rt, ps, bytes_scalar(rt, rec->p, rec->n), out);
}

static const int64_t *I64(const ferry_element *e, size_t i) {
    const ferry_tensor *t = ferry_element_get(e, i);
    ASSERT(t != NULL);
    ASSERT_EQ(ferry_tensor_dtype(t), FERRY_DTYPE_INT64);
    return ferry_tensor_data(t);
}
static const float *F32(const ferry_element *e, size_t i) {
    const ferry_tensor *t = ferry_element_get(e, i);
    ASSERT(t != NULL);
    ASSERT_EQ(ferry_tensor_dtype(t), FERRY_DTYPE_FLOAT32);
    return ferry_tensor_data(t);
}
static bool bytes_is(const ferry_element *e, size_t i, int64_t k, const void *want, size_t wlen) {
    const uint8_t *p;
    size_t n;
    if (ferry_tensor_bytes_get(ferry_element_get(e, i), k, &p, &n) != FERRY_OK) return false;
    return n == wlen && (n == 0 || memcmp(p, want, n) == 0);
}
static void assert_shape(const ferry_element *e, size_t i, int rank, const int64_t *dims) {
    const ferry_tensor *t = ferry_element_get(e, i);
    ASSERT(t != NULL);
    ASSERT_EQ(ferry_tensor_rank(t), rank);
    for (int d = 0; d < rank; d++) ASSERT_EQ(ferry_tensor_dim(t, d), dims[d]);
}

static bool tensor_eq(const ferry_tensor *a, const ferry_tensor *b) {
    if (ferry_tensor_dtype(a) != ferry_tensor_dtype(b) || ferry_tensor_rank(a) != ferry_tensor_rank(b)) return false;
    for (int d = 0; d < ferry_tensor_rank(a); d++)
        if (ferry_tensor_dim(a, d) != ferry_tensor_dim(b, d)) return false;
    int64_t n = ferry_tensor_num_entries(a);
    if (ferry_tensor_dtype(a) == FERRY_DTYPE_BYTES) {
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *p, *q;
            size_t np, nq;
            ASSERT_OK(ferry_tensor_bytes_get(a, i, &p, &np));
            ASSERT_OK(ferry_tensor_bytes_get(b, i, &q, &nq));
            if (np != nq || (np && memcmp(p, q, np) != 0)) return false;
        }
        return true;
    }
    return memcmp(ferry_tensor_data(a), ferry_tensor_data(b), (size_t)n * ferry_dtype_size(ferry_tensor_dtype(a))) == 0;
}

static bool element_eq(const ferry_element *a, const ferry_element *b) {
    if (ferry_element_size(a) != ferry_element_size(b)) return false;
    for (size_t i = 0; i < ferry_element_size(a); i++)
        if (!tensor_eq(ferry_element_get(a, i), ferry_element_get(b, i))) return false;
    return true;
}

static uint64_t rng_state = 0x1234567887654321ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static size_t rndn(size_t n) { return (size_t)(rnd() % n); }

/* ---- basic values ----------------------------------------------------------------------- */
TEST(fixed_scalars_and_vectors) {
    ferry_runtime *rt = rt_new();
    ferry_example_feature f[3] = {
        {.key = "label", .dtype = FERRY_DTYPE_INT64},
        {.key = "xyz", .dtype = FERRY_DTYPE_FLOAT32, .shape = {1, {3}}},
        {.key = "name", .dtype = FERRY_DTYPE_BYTES},
    };
    ferry_example_spec spec = {.num_features = 3, .features = f};
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    pb feats = {0};
    const char *name[1] = {"cat"};
    add_bytes(&feats, "name", name, NULL, 1);
    int64_t label = 7;
    add_i64(&feats, "label", &label, 1, 0);
    float xyz[3] = {1.5f, -2.25f, 3e30f};
    add_f32(&feats, "xyz", xyz, 3, 0);
    pb ex = example_of(&feats);
    ferry_element *e;
    ASSERT_OK(parse_pb(rt, ps, &ex, &e));
    ASSERT_EQ(ferry_element_size(e), 3);
    assert_shape(e, 0, 0, NULL);
    ASSERT_EQ(I64(e, 0)[0], 7);
    int64_t d3 = 3;
    assert_shape(e, 1, 1, &d3);
    ASSERT(memcmp(F32(e, 1), xyz, sizeof xyz) == 0);
    assert_shape(e, 2, 0, NULL);
    ASSERT(bytes_is(e, 2, 0, "cat", 3));
    ferry_element_free(e);
    pb_free(&feats);
    pb_free(&ex);
    ferry_example_parser_free(ps);
    rt_done(rt);
}

TEST(packed_unpacked_and_mixed) {
    ferry_runtime *rt = rt_new();
    ferry_example_feature f[2] = {
        {.key = "i", .dtype = FERRY_DTYPE_INT64, .shape = {1, {6}}},
        {.key = "f", .dtype = FERRY_DTYPE_FLOAT32, .shape = {1, {6}}},
    };
    ferry_example_spec spec = {.num_features = 2, .features = f};
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    int64_t iv[6] = {0, 1, 127, 128, 300, 1ll << 40};
    float fv[6] = {0.f, -0.f, 1.f, 0.1f, 1e-40f, 65504.f};
    for (int mode = 0; mode < 3; mode++) {
        pb feats = {0};
        add_i64(&feats, "i", iv, 6, mode);
        add_f32(&feats, "f", fv, 6, mode);
        pb ex = example_of(&feats);
        ferry_element *e;
        ASSERT_OK(parse_pb(rt, ps, &ex, &e));
        ASSERT(memcmp(I64(e, 0), iv, sizeof iv) == 0);
        ASSERT(memcmp(F32(e, 1), fv, sizeof fv) == 0);
        ferry_element_free(e);
        pb_free(&feats);
        pb_free(&ex);
    }
    /* Two list fields of the same kind in one Feature concatenate; so do two value fields in one
     * list, packed after unpacked and back. */
    pb list = {0}, packed = {0}, feat = {0}, feats = {0};
    pb_tag(&list, 1, 0);
    pb_varint(&list, 0);
    pb_varint(&packed, 1);
    pb_varint(&packed, 127);
    pb_sub(&list, 1, &packed);
    pb_tag(&list, 1, 0);
    pb_varint(&list, 128);
    pb_sub(&feat, 3, &list);
    pb_free(&list);
    pb_free(&packed);
    pb_varint(&packed, 300);
    pb_varint(&packed, 1ull << 40);
    pb_sub(&list, 1, &packed);
    pb_sub(&feat, 3, &list);
    map_add(&feats, "i", &feat);
    add_f32(&feats, "f", fv, 6, 2);
    pb ex = example_of(&feats);
    ferry_element *e;
    ASSERT_OK(parse_pb(rt, ps, &ex, &e));
    ASSERT(memcmp(I64(e, 0), iv, sizeof iv) == 0);
    ferry_element_free(e);
    pb_free(&list);
    pb_free(&packed);
    pb_free(&feat);
    pb_free(&feats);
    pb_free(&ex);
    ferry_example_parser_free(ps);
    rt_done(rt);
}

TEST(negative_and_extreme_int64) {
    ferry_runtime *rt = rt_new();
    int64_t v[6] = {-1, INT64_MIN, INT64_MAX, -300, 0, -(1ll << 62)};
    ferry_example_feature f[1] = {{.key = "v", .dtype = FERRY_DTYPE_INT64, .kind = FERRY_EXAMPLE_VARLEN}};
    ferry_example_spec spec = {.num_features = 1, .features = f};
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    for (int mode = 0; mode < 3; mode++) {
        pb feats = {0};
        add_i64(&feats, "v", v, 6, mode);
        pb ex = example_of(&feats);
        /* a negative int64 is a 10-byte varint */
        ASSERT(ex.n > 50);
        ferry_element *e;
        ASSERT_OK(parse_pb(rt, ps, &ex, &e));
        int64_t d = 6;
        assert_shape(e, 0, 1, &d);
        ASSERT(memcmp(I64(e, 0), v, sizeof v) == 0);
        ferry_element_free(e);
        pb_free(&feats);
        pb_free(&ex);
    }
    ferry_example_parser_free(ps);
    rt_done(rt);
}

TEST(bytes_with_zero_bytes_and_empty_strings) {
    ferry_runtime *rt = rt_new();
    ferry_example_feature f[1] = {
        {.key = "b", .dtype = FERRY_DTYPE_BYTES, .kind = FERRY_EXAMPLE_VARLEN, .with_lengths = true}};
    ferry_example_spec spec = {.num_features = 1, .features = f};
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    const char *v[3] = {"a\0b", "", "\0\0\xff"};
    size_t lens[3] = {3, 0, 3};
    pb feats = {0};
    add_bytes(&feats, "b", v, lens, 3);
    pb ex = example_of(&feats);
    ferry_element *e;
    ASSERT_OK(parse_pb(rt, ps, &ex, &e));
    ASSERT_EQ(ferry_element_size(e), 2);
    int64_t d = 3;
    assert_shape(e, 0, 1, &d);
    for (int i = 0; i < 3; i++) ASSERT(bytes_is(e, 0, i, v[i], lens[i]));
    assert_shape(e, 1, 0, NULL);
    ASSERT_EQ(I64(e, 1)[0], 3);
    ferry_element_free(e);
    pb_free(&feats);
    pb_free(&ex);
    ferry_example_parser_free(ps);
    rt_done(rt);
}

/* ---- missing values, defaults, empty Features ------------------------------------------- */
TEST(missing_key_default_and_error) {
    ferry_runtime *rt = rt_new();
    ferry_tensor *d_scalar, *d_full, *d_str;
    ASSERT_OK(ferry_tensor_scalar_i64(rt, 42, &d_scalar));
    int64_t two = 2;
    ASSERT_OK(ferry_tensor_create(rt, FERRY_DTYPE_FLOAT32, 1, &two, &d_full));
    float *fd = ferry_tensor_mutable_data(d_full);
    fd[0] = 0.5f;
    fd[1] = -1.f;
    const void *sp[1] = {"dflt"};
    size_t sl = 4;
    ASSERT_OK(ferry_tensor_create_bytes(rt, 0, NULL, sp, &sl, &d_str));
    ferry_example_feature f[4] = {
        {.key = "a", .dtype = FERRY_DTYPE_INT64, .shape = {1, {3}}, .default_value = d_scalar},
        {.key = "b", .dtype = FERRY_DTYPE_FLOAT32, .shape = {1, {2}}, .default_value = d_full},
        {.key = "c", .dtype = FERRY_DTYPE_BYTES, .shape = {2, {1, 2}}, .default_value = d_str},
        {.key = "v", .dtype = FERRY_DTYPE_INT64, .kind = FERRY_EXAMPLE_VARLEN},
    };
    ferry_example_spec spec = {.num_features = 4, .features = f};
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    /* The parser holds its own references. */
    ferry_tensor_unref(d_scalar);
    ferry_tensor_unref(d_full);
    ferry_tensor_unref(d_str);
    pb feats = {0}, ex = example_of(&feats);
    ferry_element *e;
    ASSERT_OK(parse_pb(rt, ps, &ex, &e));
    for (int i = 0; i < 3; i++) ASSERT_EQ(I64(e, 0)[i], 42);
    ASSERT(F32(e, 1)[0] == 0.5f && F32(e, 1)[1] == -1.f);
    int64_t cd[2] = {1, 2};
    assert_shape(e, 2, 2, cd);
    ASSERT(bytes_is(e, 2, 0, "dflt", 4) && bytes_is(e, 2, 1, "dflt", 4));
    int64_t zero = 0;
    assert_shape(e, 3, 1, &zero);
    ferry_element_free(e);
    ferry_example_parser_free(ps);

    /* Without a default, a missing key fails naming it. */
    ferry_example_feature g[2] = {
        {.key = "present", .dtype = FERRY_DTYPE_INT64},
        {.key = "absent_key", .dtype = FERRY_DTYPE_INT64},
    };
    spec = (ferry_example_spec){.num_features = 2, .features = g};
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    int64_t one = 1;
    pb_free(&ex);
    add_i64(&feats, "present", &one, 1, 0);
    ex = example_of(&feats);
    ASSERT_EQ(parse_pb(rt, ps, &ex, &e), FERRY_ENOTFOUND);
    ASSERT_STR_CONTAINS(last_msg, "absent_key");
    ASSERT_STR_CONTAINS(last_msg, "missing");
    /* A VARLEN feature marked required, too. */
    ferry_example_parser_free(ps);
    ferry_example_feature h[1] = {
        {.key = "req", .dtype = FERRY_DTYPE_BYTES, .kind = FERRY_EXAMPLE_VARLEN, .required = true}};
    spec = (ferry_example_spec){.num_features = 1, .features = h};
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    ASSERT_EQ(parse_pb(rt, ps, &ex, &e), FERRY_ENOTFOUND);
    ASSERT_STR_CONTAINS(last_msg, "'req'");
    ferry_example_parser_free(ps);
    pb_free(&feats);
    pb_free(&ex);
    rt_done(rt);
}

TEST(empty_feature) {
    /* A Feature with no kind set: as tf.data, a FIXED feature treats it as missing (default or
     * error), a VARLEN feature as present with 0 values. */
    ferry_runtime *rt = rt_new();
    ferry_tensor *d;
    ASSERT_OK(ferry_tensor_scalar_f32(rt, 9.f, &d));
    ferry_example_feature f[3] = {
        {.key = "fixed_default", .dtype = FERRY_DTYPE_FLOAT32, .default_value = d},
        {.key = "var", .dtype = FERRY_DTYPE_FLOAT32, .kind = FERRY_EXAMPLE_VARLEN, .with_lengths = true},
        {.key = "var_required", .dtype = FERRY_DTYPE_BYTES, .kind = FERRY_EXAMPLE_VARLEN, .required = true},
    };
    ferry_example_spec spec = {.num_features = 3, .features = f};
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    pb feats = {0};
    add_empty(&feats, "fixed_default");
    add_empty(&feats, "var");
    add_empty(&feats, "var_required");
    pb ex = example_of(&feats);
    ferry_element *e;
    ASSERT_OK(parse_pb(rt, ps, &ex, &e));
    ASSERT(F32(e, 0)[0] == 9.f);
    int64_t zero = 0;
    assert_shape(e, 1, 1, &zero);
    ASSERT_EQ(I64(e, 2)[0], 0);
    assert_shape(e, 3, 1, &zero);
    ferry_element_free(e);
    ferry_example_parser_free(ps);
    /* FIXED without a default: the empty Feature is a missing key. */
    ferry_example_feature g[1] = {{.key = "pickup_census_tract", .dtype = FERRY_DTYPE_INT64}};
    spec = (ferry_example_spec){.num_features = 1, .features = g};
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    pb_free(&feats);
    pb_free(&ex);
    add_empty(&feats, "pickup_census_tract");
    ex = example_of(&feats);
    ASSERT_EQ(parse_pb(rt, ps, &ex, &e), FERRY_ENOTFOUND);
    ASSERT_STR_CONTAINS(last_msg, "pickup_census_tract");
    /* A kind set with zero values is not missing: it is a count mismatch. */
    pb_free(&feats);
    pb_free(&ex);
    add_i64(&feats, "pickup_census_tract", NULL, 0, 0);
    ex = example_of(&feats);
    ASSERT_EQ(parse_pb(rt, ps, &ex, &e), FERRY_ETYPE);
    ASSERT_STR_CONTAINS(last_msg, "has 0 values");
    ferry_example_parser_free(ps);
    ferry_tensor_unref(d);
    pb_free(&feats);
    pb_free(&ex);
    rt_done(rt);
}

TEST(wrong_type_and_wrong_count) {
    ferry_runtime *rt = rt_new();
    ferry_example_feature f[1] = {{.key = "age", .dtype = FERRY_DTYPE_INT64, .shape = {1, {3}}}};
    ferry_example_spec spec = {.num_features = 1, .features = f};
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    pb feats = {0};
    float fv[3] = {1, 2, 3};
    add_f32(&feats, "age", fv, 3, 0);
    pb ex = example_of(&feats);
    ferry_element *e;
    ASSERT_EQ(parse_pb(rt, ps, &ex, &e), FERRY_ETYPE);
    ASSERT_STR_CONTAINS(last_msg, "'age'");
    ASSERT_STR_CONTAINS(last_msg, "float_list");
    ASSERT_STR_CONTAINS(last_msg, "int64");
    pb_free(&feats);
    pb_free(&ex);
    int64_t iv[4] = {1, 2, 3, 4};
    for (size_t n = 0; n <= 4; n++) {
        if (n == 3) continue;
        add_i64(&feats, "age", iv, n, (int)(n % 3));
        ex = example_of(&feats);
        ASSERT_EQ(parse_pb(rt, ps, &ex, &e), FERRY_ETYPE);
        char want[64];
        snprintf(want, sizeof want, "'age' has %zu values but its shape [3] needs 3", n);
        ASSERT_STR_CONTAINS(last_msg, want);
        pb_free(&feats);
        pb_free(&ex);
    }
    ferry_example_parser_free(ps);
    /* bytes FIXED count mismatch too */
    ferry_example_feature g[1] = {{.key = "s", .dtype = FERRY_DTYPE_BYTES, .shape = {1, {2}}}};
    spec = (ferry_example_spec){.num_features = 1, .features = g};
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    const char *sv[3] = {"x", "y", "z"};
    add_bytes(&feats, "s", sv, NULL, 3);
    ex = example_of(&feats);
    ASSERT_EQ(parse_pb(rt, ps, &ex, &e), FERRY_ETYPE);
    ASSERT_STR_CONTAINS(last_msg, "has 3 values");
    ferry_example_parser_free(ps);
    pb_free(&feats);
    pb_free(&ex);
    rt_done(rt);
}

TEST(unknown_keys_fields_and_duplicates) {
    ferry_runtime *rt = rt_new();
    ferry_example_feature f[3] = {
        {.key = "x", .dtype = FERRY_DTYPE_INT64},
        {.key = "v", .dtype = FERRY_DTYPE_INT64, .kind = FERRY_EXAMPLE_VARLEN},
        {.key = "k", .dtype = FERRY_DTYPE_FLOAT32},
    };
    ferry_example_spec spec = {.num_features = 3, .features = f};
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    pb feats = {0};
    int64_t a = 1, b = 2, c = 3;
    float fv = 2.5f;
    add_i64(&feats, "x", &a, 1, 0);
    add_i64(&feats, "unknown", &a, 1, 0);
    add_i64(&feats, "x", &b, 1, 1); /* last entry wins */
    add_empty(&feats, "x");         /* ...but an empty Feature does not replace a FIXED one */
    add_i64(&feats, "v", &c, 1, 0);
    add_empty(&feats, "v"); /* for VARLEN it does: 0 values */
    /* unknown fields everywhere: in Features (field 2, varint), in a map entry (field 3,
     * fixed64), in a Feature (field 7, fixed32), in a list (field 2, packed) */
    pb_tag(&feats, 2, 0);
    pb_varint(&feats, 99);
    {
        pb entry = {0}, feat = {0}, list = {0};
        pb_tag(&entry, 3, 1);
        pb_raw(&entry, "12345678", 8);
        pb_lenfield(&entry, 1, "k", 1);
        pb_tag(&feat, 7, 5);
        pb_raw(&feat, "abcd", 4);
        pb_tag(&list, 2, 2);
        pb_varint(&list, 2);
        pb_raw(&list, "zz", 2);
        pb_tag(&list, 1, 5);
        pb_f32le(&list, fv);
        pb_sub(&feat, 2, &list);
        pb_tag(&feat, 9, 0);
        pb_varint(&feat, 5);
        pb_sub(&entry, 2, &feat);
        pb_sub(&feats, 1, &entry);
        pb_free(&entry);
        pb_free(&feat);
        pb_free(&list);
    }
    pb ex = example_of(&feats);
    /* unknown fields in the Example itself, and a second Features field (merged) */
    pb_tag(&ex, 5, 2);
    pb_varint(&ex, 0);
    pb_tag(&ex, 6, 0);
    pb_varint(&ex, 1);
    ferry_element *e;
    ASSERT_OK(parse_pb(rt, ps, &ex, &e));
    ASSERT_EQ(I64(e, 0)[0], 2);
    ASSERT_EQ(ferry_tensor_dim(ferry_element_get(e, 1), 0), 0);
    ASSERT(F32(e, 2)[0] == 2.5f);
    ferry_element_free(e);
    /* Features in two fields merge: a later "x" in a second Features wins. */
    pb feats2 = {0}, ex2;
    int64_t d = 4;
    add_i64(&feats2, "x", &d, 1, 0);
    ex2 = example_of(&feats2);
    pb_raw(&ex, ex2.p, ex2.n);
    ASSERT_OK(parse_pb(rt, ps, &ex, &e));
    ASSERT_EQ(I64(e, 0)[0], 4);
    ferry_element_free(e);
    pb_free(&feats2);
    pb_free(&ex2);
    /* A Feature setting two kinds keeps the last (oneof): int64 then float fails as float. */
    pb_free(&feats);
    pb_free(&ex);
    {
        pb feat = {0};
        feat_i64(&feat, &a, 1, 0);
        feat_f32(&feat, &fv, 1, 0);
        map_add(&feats, "x", &feat);
        pb_free(&feat);
        feat_f32(&feat, &fv, 1, 0);
        feat_i64(&feat, &c, 1, 0);
        map_add(&feats, "k", &feat);
        pb_free(&feat);
    }
    ex = example_of(&feats);
    ASSERT_EQ(parse_pb(rt, ps, &ex, &e), FERRY_ETYPE);
    ASSERT_STR_CONTAINS(last_msg, "'x' holds a float_list");
    ferry_example_parser_free(ps);
    pb_free(&feats);
    pb_free(&ex);
    rt_done(rt);
}

TEST(map_entry_field_order_and_defaults) {
    /* Entry fields in any order; an entry without a value is an empty Feature; without a key,
     * the key "". */
    ferry_runtime *rt = rt_new();
    ferry_example_feature f[2] = {
        {.key = "", .dtype = FERRY_DTYPE_INT64, .kind = FERRY_EXAMPLE_VARLEN},
        {.key = "z", .dtype = FERRY_DTYPE_INT64, .kind = FERRY_EXAMPLE_VARLEN, .required = true},
    };
    ferry_example_spec spec = {.num_features = 2, .features = f};
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    pb feats = {0}, entry = {0}, feat = {0};
    int64_t v[2] = {5, 6};
    feat_i64(&feat, v, 2, 0);
    pb_sub(&entry, 2, &feat); /* value first, then key */
    pb_lenfield(&entry, 1, "z", 1);
    pb_sub(&feats, 1, &entry);
    pb_free(&entry);
    pb_sub(&entry, 2, &feat); /* no key: "" */
    pb_sub(&feats, 1, &entry);
    pb ex = example_of(&feats);
    ferry_element *e;
    ASSERT_OK(parse_pb(rt, ps, &ex, &e));
    ASSERT_EQ(ferry_tensor_dim(ferry_element_get(e, 0), 0), 2);
    ASSERT_EQ(I64(e, 0)[1], 6);
    ASSERT_EQ(ferry_tensor_dim(ferry_element_get(e, 1), 0), 2);
    ferry_element_free(e);
    pb_free(&entry);
    pb_lenfield(&entry, 1, "z", 1); /* key only: an empty Feature, present with 0 values */
    pb_free(&feats);
    pb_sub(&feats, 1, &entry);
    pb_free(&ex);
    ex = example_of(&feats);
    ASSERT_OK(parse_pb(rt, ps, &ex, &e));
    ASSERT_EQ(ferry_tensor_dim(ferry_element_get(e, 1), 0), 0);
    ferry_element_free(e);
    pb_free(&entry);
    pb_free(&feat);
    pb_free(&feats);
    pb_free(&ex);
    ferry_example_parser_free(ps);
    rt_done(rt);
}

/* ---- SequenceExample -------------------------------------------------------------------- */
static ferry_example_parser *seq_parser(ferry_runtime *rt, bool required) {
    static ferry_tensor *pad_tok;
    if (pad_tok) ferry_tensor_unref(pad_tok);
    ASSERT_OK(ferry_tensor_scalar_i64(rt, -7, &pad_tok));
    ferry_example_feature ctxf[2] = {
        {.key = "len", .dtype = FERRY_DTYPE_INT64},
        {.key = "name", .dtype = FERRY_DTYPE_BYTES, .kind = FERRY_EXAMPLE_VARLEN},
    };
    ferry_example_feature lists[4] = {
        {.key = "tok",
         .dtype = FERRY_DTYPE_INT64,
         .with_lengths = true,
         .default_value = pad_tok,
         .required = required},
        {.key = "emb", .dtype = FERRY_DTYPE_FLOAT32, .shape = {1, {2}}},
        {.key = "words", .dtype = FERRY_DTYPE_BYTES, .kind = FERRY_EXAMPLE_VARLEN, .with_lengths = true},
        {.key = "ids", .dtype = FERRY_DTYPE_INT64, .kind = FERRY_EXAMPLE_VARLEN},
    };
    ferry_example_spec spec = {
        .sequence = true, .num_features = 2, .features = ctxf, .num_feature_lists = 4, .feature_lists = lists};
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    ferry_tensor_unref(pad_tok);
    pad_tok = NULL;
    return ps;
}

TEST(sequence_example) {
    ferry_runtime *rt = rt_new();
    ferry_example_parser *ps = seq_parser(rt, false);
    size_t n;
    const ferry_tensor_spec *specs;
    ASSERT_OK(ferry_example_parser_output_specs(ps, &n, &specs));
    ASSERT_EQ(n, 2 + 2 + 1 + 3 + 2);
    const char *names[10] = {
        "len", "name",           "tok", "tok:lengths", "emb", "words", "words:row_lengths", "words:lengths",
        "ids", "ids:row_lengths"};
    for (size_t i = 0; i < n; i++) ASSERT(strcmp(ferry_example_parser_output_name(ps, i), names[i]) == 0);
    ASSERT(ferry_example_parser_output_name(ps, n) == NULL);
    ASSERT_EQ(specs[4].shape.rank, 2);
    ASSERT_EQ(specs[4].shape.dims[0], FERRY_UNKNOWN_DIM);
    ASSERT_EQ(specs[4].shape.dims[1], 2);

    pb ctx = {0}, fls = {0}, seq = {0};
    int64_t len = 3;
    add_i64(&ctx, "len", &len, 1, 0);
    const char *nm[1] = {"seq0"};
    add_bytes(&ctx, "name", nm, NULL, 1);
    pb fl = {0};
    for (int t = 0; t < 3; t++) { /* tok: 3 steps of one int64 */
        pb feat = {0};
        int64_t v = 10 + t;
        feat_i64(&feat, &v, 1, t % 2);
        pb_sub(&fl, 1, &feat);
        pb_free(&feat);
    }
    map_add(&fls, "tok", &fl);
    pb_free(&fl);
    for (int t = 0; t < 2; t++) { /* emb: 2 steps of [2] */
        pb feat = {0};
        float v[2] = {(float)t, (float)t + 0.5f};
        feat_f32(&feat, v, 2, t);
        pb_sub(&fl, 1, &feat);
        pb_free(&feat);
    }
    map_add(&fls, "emb", &fl);
    pb_free(&fl);
    { /* words: steps of 2, 0 (empty Feature), 1 strings */
        pb feat = {0};
        const char *w[2] = {"hello", "world"};
        feat_bytes(&feat, w, NULL, 2);
        pb_sub(&fl, 1, &feat);
        pb_free(&feat);
        pb_sub(&fl, 1, &feat);
        const char *w2[1] = {"!"};
        feat_bytes(&feat, w2, NULL, 1);
        pb_sub(&fl, 1, &feat);
        pb_free(&feat);
        map_add(&fls, "words", &fl);
        pb_free(&fl);
    }
    /* ids absent: T = 0 */
    pb_sub(&seq, 1, &ctx);
    pb_sub(&seq, 2, &fls);
    ferry_element *e;
    ASSERT_OK(parse_pb(rt, ps, &seq, &e));
    ASSERT_EQ(ferry_element_size(e), 10);
    ASSERT_EQ(I64(e, 0)[0], 3);
    ASSERT(bytes_is(e, 1, 0, "seq0", 4));
    int64_t d3 = 3;
    assert_shape(e, 2, 1, &d3);
    ASSERT(I64(e, 2)[0] == 10 && I64(e, 2)[1] == 11 && I64(e, 2)[2] == 12);
    assert_shape(e, 3, 0, NULL);
    ASSERT_EQ(I64(e, 3)[0], 3);
    int64_t d22[2] = {2, 2};
    assert_shape(e, 4, 2, d22);
    ASSERT(F32(e, 4)[0] == 0.f && F32(e, 4)[1] == 0.5f && F32(e, 4)[2] == 1.f && F32(e, 4)[3] == 1.5f);
    assert_shape(e, 5, 1, &d3);
    ASSERT(bytes_is(e, 5, 0, "hello", 5) && bytes_is(e, 5, 1, "world", 5) && bytes_is(e, 5, 2, "!", 1));
    assert_shape(e, 6, 1, &d3);
    ASSERT(I64(e, 6)[0] == 2 && I64(e, 6)[1] == 0 && I64(e, 6)[2] == 1);
    ASSERT_EQ(I64(e, 7)[0], 3);
    int64_t zero = 0;
    assert_shape(e, 8, 1, &zero);
    assert_shape(e, 9, 1, &zero);
    ferry_element_free(e);
    ferry_example_parser_free(ps);

    /* A required feature list that is absent; a step with the wrong count. */
    ps = seq_parser(rt, true);
    pb seq2 = {0};
    pb_sub(&seq2, 1, &ctx);
    ASSERT_EQ(parse_pb(rt, ps, &seq2, &e), FERRY_ENOTFOUND);
    ASSERT_STR_CONTAINS(last_msg, "feature list 'tok'");
    pb fls2 = {0};
    for (int t = 0; t < 3; t++) {
        pb feat = {0};
        int64_t v[2] = {1, 2};
        feat_i64(&feat, v, t == 2 ? 2 : 1, 0);
        pb_sub(&fl, 1, &feat);
        pb_free(&feat);
    }
    map_add(&fls2, "tok", &fl);
    pb_free(&fl);
    pb_sub(&seq2, 2, &fls2);
    ASSERT_EQ(parse_pb(rt, ps, &seq2, &e), FERRY_ETYPE);
    ASSERT_STR_CONTAINS(last_msg, "'tok', step 2 has 2 values");
    ferry_example_parser_free(ps);
    pb_free(&seq2);
    pb_free(&fls2);
    pb_free(&ctx);
    pb_free(&fls);
    pb_free(&seq);
    rt_done(rt);
}

/* ---- batch fast path = padded batch of per-record parses -------------------------------- */
typedef struct padv {
    int64_t i;
    float f;
    const char *s;
} padv;

/* The padded batch of per-record elements, component o, padded with pad. */
static ferry_tensor *padded(ferry_runtime *rt, ferry_element **recs, size_t B, size_t o, padv pad) {
    const ferry_tensor *t0 = ferry_element_get(recs[0], o);
    ferry_dtype dt = ferry_tensor_dtype(t0);
    int rank = ferry_tensor_rank(t0);
    int64_t dims[FERRY_MAX_RANK] = {(int64_t)B};
    for (size_t b = 0; b < B; b++)
        for (int d = 0; d < rank; d++) {
            int64_t x = ferry_tensor_dim(ferry_element_get(recs[b], o), d);
            if (b == 0 || x > dims[d + 1]) dims[d + 1] = x;
        }
    int64_t cells = 1;
    for (int d = 0; d <= rank; d++) cells *= dims[d];
    int64_t inner = cells / (B ? (int64_t)B : 1);
    /* per cell: record b and multi-index; find the source entry or pad */
    const void **ptrs = calloc((size_t)cells + 1, sizeof *ptrs);
    size_t *lens = calloc((size_t)cells + 1, sizeof *lens);
    uint8_t *num = calloc((size_t)cells + 1, 8);
    for (int64_t c = 0; c < cells; c++) {
        size_t b = (size_t)(c / (inner ? inner : 1));
        const ferry_tensor *src = ferry_element_get(recs[b], o);
        int64_t rem = c % (inner ? inner : 1), idx = 0, stride = 1;
        bool inside = true;
        int64_t sub[FERRY_MAX_RANK];
        for (int d = rank - 1; d >= 0; d--) {
            sub[d] = rem % dims[d + 1];
            rem /= dims[d + 1];
        }
        for (int d = rank - 1; d >= 0; d--) {
            int64_t sd = ferry_tensor_dim(src, d);
            if (sub[d] >= sd) inside = false;
            idx += sub[d] * stride;
            stride *= sd;
        }
        if (dt == FERRY_DTYPE_BYTES) {
            if (inside) {
                const uint8_t *p;
                ASSERT_OK(ferry_tensor_bytes_get(src, idx, &p, &lens[c]));
                ptrs[c] = p;
            } else {
                ptrs[c] = pad.s ? pad.s : "";
                lens[c] = strlen(ptrs[c]);
            }
        } else if (dt == FERRY_DTYPE_INT64) {
            int64_t v = inside ? ((const int64_t *)ferry_tensor_data(src))[idx] : pad.i;
            memcpy(num + 8 * c, &v, 8);
        } else {
            float v = inside ? ((const float *)ferry_tensor_data(src))[idx] : pad.f;
            memcpy(num + 4 * c, &v, 4);
        }
    }
    ferry_tensor *t;
    if (dt == FERRY_DTYPE_BYTES) {
        ASSERT_OK(ferry_tensor_create_bytes(rt, rank + 1, dims, ptrs, lens, &t));
    } else {
        ASSERT_OK(ferry_tensor_create(rt, dt, rank + 1, dims, &t));
        memcpy(ferry_tensor_mutable_data(t), num, (size_t)cells * ferry_dtype_size(dt));
    }
    free(ptrs);
    free(lens);
    free(num);
    return t;
}

static void random_example(pb *ex) {
    pb feats = {0};
    int order[6] = {0, 1, 2, 3, 4, 5};
    for (int i = 5; i > 0; i--) {
        int k = (int)rndn((size_t)i + 1), t = order[i];
        order[i] = order[k];
        order[k] = t;
    }
    for (int oi = 0; oi < 6; oi++) {
        int which = order[oi];
        int reps = rndn(10) < 2 ? 2 : 1;
        for (int r = 0; r < reps; r++) {
            if (rndn(10) < 3) continue; /* absent */
            int mode = (int)rndn(3);
            if (rndn(10) == 0) {
                add_empty(&feats, (const char *[]){"a", "b", "c", "d", "e", "f"}[which]);
                continue;
            }
            switch (which) {
            case 0: {
                int64_t v[2] = {(int64_t)rnd(), -(int64_t)rndn(1000)};
                add_i64(&feats, "a", v, 2, mode);
                break;
            }
            case 1: {
                float v = (float)rndn(1000) / 8.f;
                add_f32(&feats, "b", &v, 1, mode);
                break;
            }
            case 2: {
                const char *v[2] = {"x", rndn(2) ? "longer string" : ""};
                add_bytes(&feats, "c", v, NULL, 2);
                break;
            }
            case 3: {
                int64_t v[6];
                size_t n = rndn(7);
                for (size_t i = 0; i < n; i++) v[i] = (int64_t)rndn(100000) - 50000;
                add_i64(&feats, "d", v, n, mode);
                break;
            }
            case 4: {
                const char *pool[4] = {"alpha", "", "be\0ta", "gamma-gamma"};
                const char *v[5];
                size_t lens[5], n = rndn(6);
                for (size_t i = 0; i < n; i++) {
                    size_t k = rndn(4);
                    v[i] = pool[k];
                    lens[i] = k == 2 ? 5 : strlen(pool[k]);
                }
                add_bytes(&feats, "e", v, lens, n);
                break;
            }
            default: {
                float v[4];
                size_t n = rndn(5);
                for (size_t i = 0; i < n; i++) v[i] = (float)rndn(100) - 0.25f;
                add_f32(&feats, "f", v, n, mode);
            }
            }
        }
        if (rndn(8) == 0) add_i64(&feats, "unrelated", (int64_t[]){1}, 1, 0);
    }
    *ex = example_of(&feats);
    pb_free(&feats);
}

static ferry_example_parser *random_parser(ferry_runtime *rt) {
    ferry_tensor *da, *db, *dc, *pd, *pe;
    int64_t two = 2;
    ASSERT_OK(ferry_tensor_create(rt, FERRY_DTYPE_INT64, 1, &two, &da));
    int64_t *a = ferry_tensor_mutable_data(da);
    a[0] = 7;
    a[1] = 8;
    ASSERT_OK(ferry_tensor_scalar_f32(rt, 1.5f, &db));
    const void *zz[1] = {"zz"};
    size_t zl = 2;
    ASSERT_OK(ferry_tensor_create_bytes(rt, 0, NULL, zz, &zl, &dc));
    ASSERT_OK(ferry_tensor_scalar_i64(rt, -1, &pd));
    const void *pp[1] = {"PAD"};
    size_t pl = 3;
    ASSERT_OK(ferry_tensor_create_bytes(rt, 0, NULL, pp, &pl, &pe));
    ferry_example_feature f[6] = {
        {.key = "a", .dtype = FERRY_DTYPE_INT64, .shape = {1, {2}}, .default_value = da},
        {.key = "b", .dtype = FERRY_DTYPE_FLOAT32, .default_value = db},
        {.key = "c", .dtype = FERRY_DTYPE_BYTES, .shape = {1, {2}}, .default_value = dc},
        {.key = "d",
         .dtype = FERRY_DTYPE_INT64,
         .kind = FERRY_EXAMPLE_VARLEN,
         .with_lengths = true,
         .default_value = pd},
        {.key = "e", .dtype = FERRY_DTYPE_BYTES, .kind = FERRY_EXAMPLE_VARLEN, .default_value = pe},
        {.key = "f", .dtype = FERRY_DTYPE_FLOAT32, .kind = FERRY_EXAMPLE_VARLEN, .with_lengths = true},
    };
    ferry_example_spec spec = {.num_features = 6, .features = f};
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    ferry_tensor_unref(da);
    ferry_tensor_unref(db);
    ferry_tensor_unref(dc);
    ferry_tensor_unref(pd);
    ferry_tensor_unref(pe);
    return ps;
}

static void check_batch(ferry_runtime *rt, ferry_example_parser *ps, pb *recs, size_t B, const padv *pads) {
    ferry_element **one = calloc(B + 1, sizeof *one);
    for (size_t b = 0; b < B; b++) {
        int rc = parse_pb(rt, ps, &recs[b], &one[b]);
        if (rc) FAILF("record %zu: %s", b, last_msg);
    }
    ferry_element *batch;
    int rc = parse_tensor(rt, ps, bytes_vector(rt, recs, B), &batch);
    if (rc) FAILF("batch: %s", last_msg);
    size_t nout, nb;
    const ferry_tensor_spec *specs, *bspecs;
    ASSERT_OK(ferry_example_parser_output_specs(ps, &nout, &specs));
    ASSERT_OK(ferry_example_parser_batch_output_specs(ps, &nb, &bspecs));
    ASSERT_EQ(nout, nb);
    ASSERT_EQ(ferry_element_size(batch), nout);
    ferry__status st;
    for (size_t o = 0; o < nout; o++) {
        const char *name = ferry_example_parser_output_name(ps, o);
        padv pad = strstr(name, ":") ? (padv){0, 0.f, NULL} : pads[o];
        for (size_t b = 0; b < B; b++) ASSERT_OK(ferry__spec_check(&specs[o], ferry_element_get(one[b], o), name, &st));
        ASSERT_OK(ferry__spec_check(&bspecs[o], ferry_element_get(batch, o), name, &st));
        if (B == 0) continue;
        ferry_tensor *want = padded(rt, one, B, o, pad);
        if (!tensor_eq(want, ferry_element_get(batch, o)))
            FAILF("output %zu (%s) differs from the padded batch", o, name);
        ferry_tensor_unref(want);
    }
    for (size_t b = 0; b < B; b++) ferry_element_free(one[b]);
    free(one);
    ferry_element_free(batch);
}

TEST(batch_equals_padded_per_record) {
    ferry_runtime *rt = rt_new();
    ferry_example_parser *ps = random_parser(rt);
    padv pads[9] = {{0}, {0}, {0}, {.i = -1}, {0}, {.s = "PAD"}, {0}, {0}, {0}};
    for (int round = 0; round < 60; round++) {
        size_t B = round == 0 ? 0 : round == 1 ? 1 : rndn(40) + 1;
        pb *recs = calloc(B + 1, sizeof *recs);
        for (size_t b = 0; b < B; b++) random_example(&recs[b]);
        check_batch(rt, ps, recs, B, pads);
        for (size_t b = 0; b < B; b++) pb_free(&recs[b]);
        free(recs);
    }
    /* An error in one record fails the whole batch and names the record. */
    pb recs[3] = {{0}};
    random_example(&recs[0]);
    random_example(&recs[2]);
    pb feats = {0};
    float wrong = 1.f;
    add_f32(&feats, "d", &wrong, 1, 0);
    recs[1] = example_of(&feats);
    ferry_element *e;
    ASSERT_EQ(parse_tensor(rt, ps, bytes_vector(rt, recs, 3), &e), FERRY_ETYPE);
    ASSERT_STR_CONTAINS(last_msg, "record 1 of the batch");
    ASSERT_STR_CONTAINS(last_msg, "'d'");
    for (int i = 0; i < 3; i++) pb_free(&recs[i]);
    pb_free(&feats);
    ferry_example_parser_free(ps);
    rt_done(rt);
}

static void random_sequence(pb *seq) {
    pb ctx = {0}, fls = {0};
    int64_t len = (int64_t)rndn(100);
    if (rndn(5)) add_i64(&ctx, "len", &len, 1, 0);
    const char *nm[2] = {"n1", "name two"};
    add_bytes(&ctx, "name", nm, NULL, rndn(3));
    const char *keys[4] = {"tok", "emb", "words", "ids"};
    for (int k = 0; k < 4; k++) {
        if (rndn(6) == 0) continue;
        pb fl = {0};
        size_t T = rndn(5);
        for (size_t t = 0; t < T; t++) {
            pb feat = {0};
            if (k == 0) {
                int64_t v = (int64_t)rndn(50);
                feat_i64(&feat, &v, 1, (int)rndn(3));
            } else if (k == 1) {
                float v[2] = {(float)rndn(9), -(float)rndn(9)};
                feat_f32(&feat, v, 2, (int)rndn(3));
            } else if (k == 2) {
                const char *w[3] = {"a", "bb", ""};
                size_t n = rndn(4);
                if (n) feat_bytes(&feat, w, NULL, n);
            } else {
                int64_t v[3] = {1, -2, 3};
                feat_i64(&feat, v, rndn(4), (int)rndn(3));
            }
            pb_sub(&fl, 1, &feat);
            pb_free(&feat);
        }
        map_add(&fls, keys[k], &fl);
        pb_free(&fl);
    }
    memset(seq, 0, sizeof *seq);
    if (rndn(2)) {
        pb_sub(seq, 2, &fls);
        pb_sub(seq, 1, &ctx);
    } else {
        pb_sub(seq, 1, &ctx);
        pb_sub(seq, 2, &fls);
    }
    pb_free(&ctx);
    pb_free(&fls);
}

TEST(sequence_batch_equals_padded_per_record) {
    ferry_runtime *rt = rt_new();
    ferry_tensor *dlen;
    ASSERT_OK(ferry_tensor_scalar_i64(rt, -100, &dlen));
    ferry_example_parser *ps = seq_parser(rt, false);
    /* context "len" is required in seq_parser; give it a default in a second parser */
    ferry_example_parser_free(ps);
    ferry_tensor *pad_tok;
    ASSERT_OK(ferry_tensor_scalar_i64(rt, -7, &pad_tok));
    ferry_example_feature ctxf[2] = {
        {.key = "len", .dtype = FERRY_DTYPE_INT64, .default_value = dlen},
        {.key = "name", .dtype = FERRY_DTYPE_BYTES, .kind = FERRY_EXAMPLE_VARLEN},
    };
    ferry_example_feature lists[4] = {
        {.key = "tok", .dtype = FERRY_DTYPE_INT64, .with_lengths = true, .default_value = pad_tok},
        {.key = "emb", .dtype = FERRY_DTYPE_FLOAT32, .shape = {1, {2}}},
        {.key = "words", .dtype = FERRY_DTYPE_BYTES, .kind = FERRY_EXAMPLE_VARLEN, .with_lengths = true},
        {.key = "ids", .dtype = FERRY_DTYPE_INT64, .kind = FERRY_EXAMPLE_VARLEN},
    };
    ferry_example_spec spec = {
        .sequence = true, .num_features = 2, .features = ctxf, .num_feature_lists = 4, .feature_lists = lists};
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    ferry_tensor_unref(dlen);
    ferry_tensor_unref(pad_tok);
    padv pads[10] = {{0}, {0}, {.i = -7}, {0}, {0}, {0}, {0}, {0}, {0}, {0}};
    for (int round = 0; round < 60; round++) {
        size_t B = round == 0 ? 1 : rndn(20) + 1;
        pb *recs = calloc(B + 1, sizeof *recs);
        for (size_t b = 0; b < B; b++) random_sequence(&recs[b]);
        check_batch(rt, ps, recs, B, pads);
        for (size_t b = 0; b < B; b++) pb_free(&recs[b]);
        free(recs);
    }
    ferry_example_parser_free(ps);
    rt_done(rt);
}

/* ---- malformed input -------------------------------------------------------------------- */
static pb full_example(void) {
    pb feats = {0};
    int64_t iv[3] = {-1, 300, 5};
    float fv[2] = {1.f, 2.f};
    const char *sv[2] = {"ab", "c"};
    add_i64(&feats, "i", iv, 3, 2);
    add_f32(&feats, "f", fv, 2, 2);
    add_bytes(&feats, "s", sv, NULL, 2);
    add_i64(&feats, "v", iv, 3, 0);
    pb ex = example_of(&feats);
    pb_free(&feats);
    return ex;
}

static ferry_example_parser *full_parser(ferry_runtime *rt) {
    ferry_example_feature f[4] = {
        {.key = "i", .dtype = FERRY_DTYPE_INT64, .shape = {1, {3}}},
        {.key = "f", .dtype = FERRY_DTYPE_FLOAT32, .shape = {1, {2}}},
        {.key = "s", .dtype = FERRY_DTYPE_BYTES, .kind = FERRY_EXAMPLE_VARLEN},
        {.key = "v", .dtype = FERRY_DTYPE_INT64, .kind = FERRY_EXAMPLE_VARLEN},
    };
    ferry_example_spec spec = {.num_features = 4, .features = f};
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    return ps;
}

TEST(every_truncation_fails_cleanly) {
    ferry_runtime *rt = rt_new();
    ferry_example_parser *ps = full_parser(rt);
    pb ex = full_example();
    ferry_element *e;
    ASSERT_OK(parse_pb(rt, ps, &ex, &e));
    ferry_element_free(e);
    for (size_t n = 0; n < ex.n; n++) {
        /* a heap copy of exactly n bytes, so ASan sees any read past the end */
        uint8_t *cut = malloc(n + 1);
        memcpy(cut, ex.p, n);
        pb rec = {cut, n, n};
        int rc = parse_pb(rt, ps, &rec, &e);
        if (n == 0) {
            ASSERT_EQ(rc, FERRY_ENOTFOUND); /* an empty Example: every key missing */
        } else {
            if (rc != FERRY_ECORRUPT) FAILF("truncation at %zu: %s (%s)", n, ferry_error_name(rc), last_msg);
            ASSERT_STR_CONTAINS(last_msg, "corrupt record at byte");
        }
        free(cut);
        /* also through to_json */
        ferry_blob *j = NULL;
        rc = ferry_example_to_json(rt, ex.p, n, &j);
        ASSERT(n == 0 ? rc == FERRY_OK : rc == FERRY_ECORRUPT);
        ferry_blob_free(j);
    }
    pb_free(&ex);
    ferry_example_parser_free(ps);
    rt_done(rt);
}

TEST(every_bit_flip_is_safe) {
    ferry_runtime *rt = rt_new();
    ferry_example_parser *ps = full_parser(rt);
    ferry_example_parser *sq = seq_parser(rt, false);
    pb ex = full_example();
    pb seq;
    random_sequence(&seq);
    pb *srcs[2] = {&ex, &seq};
    for (int s = 0; s < 2; s++) {
        pb *src = srcs[s];
        for (size_t i = 0; i < src->n; i++)
            for (int bit = 0; bit < 8; bit++) {
                uint8_t *cp = malloc(src->n);
                memcpy(cp, src->p, src->n);
                cp[i] ^= (uint8_t)(1u << bit);
                pb rec = {cp, src->n, src->n};
                ferry_element *e;
                int rc = parse_pb(rt, s ? sq : ps, &rec, &e);
                if (rc == FERRY_OK) ferry_element_free(e);
                else ASSERT(rc == FERRY_ECORRUPT || rc == FERRY_ETYPE || rc == FERRY_ENOTFOUND);
                ferry_blob *j = NULL;
                rc = ferry_example_to_json(rt, cp, src->n, &j);
                ASSERT(rc == FERRY_OK || rc == FERRY_ECORRUPT);
                ferry_blob_free(j);
                free(cp);
            }
    }
    pb_free(&ex);
    pb_free(&seq);
    ferry_example_parser_free(ps);
    ferry_example_parser_free(sq);
    rt_done(rt);
}

static void expect_corrupt(ferry_runtime *rt, ferry_example_parser *ps, const uint8_t *p, size_t n,
                           const char *needle) {
    pb rec = {0};
    pb_raw(&rec, p, n);
    ferry_element *e;
    int rc = parse_pb(rt, ps, &rec, &e);
    if (rc != FERRY_ECORRUPT) FAILF("expected FERRY_ECORRUPT (%s), got %s: %s", needle, ferry_error_name(rc), last_msg);
    ASSERT_STR_CONTAINS(last_msg, needle);
    pb_free(&rec);
}

TEST(malformed_wire_data_messages) {
    ferry_runtime *rt = rt_new();
    ferry_example_feature f[1] = {{.key = "k", .dtype = FERRY_DTYPE_INT64, .kind = FERRY_EXAMPLE_VARLEN}};
    ferry_example_spec spec = {.num_features = 1, .features = f};
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    /* varint of 11 bytes as the first tag */
    uint8_t longv[11];
    memset(longv, 0xff, 10);
    longv[10] = 0x01;
    expect_corrupt(rt, ps, longv, 11, "byte 0, reading Example: varint longer than 10 bytes");
    /* truncated tag varint */
    expect_corrupt(rt, ps, (const uint8_t *)"\x80", 1, "varint truncated");
    /* features with wire type 0 */
    expect_corrupt(rt, ps, (const uint8_t *)"\x08\x01", 2, "field 1 has wire type 0, expected 2");
    /* field number 0 */
    expect_corrupt(rt, ps, (const uint8_t *)"\x02\x00", 2, "invalid field tag 2");
    /* group wire type on an unknown field */
    expect_corrupt(rt, ps, (const uint8_t *)"\x13", 1, "unsupported wire type 3");
    /* features length past the end */
    expect_corrupt(rt, ps, (const uint8_t *)"\x0a\x05\x0a\x00", 4,
                   "byte 1, reading Features: length 5 runs past the end (2 bytes left)");
    /* a map entry key with wire type 5 */
    expect_corrupt(rt, ps, (const uint8_t *)"\x0a\x07\x0a\x05\x0d\x6b\x00\x00\x00", 9,
                   "Features map entry: field 1 has wire type 5");
    /* int64_list value with wire type 5; offsets point into the record */
    pb feats = {0}, feat = {0}, list = {0};
    pb_tag(&list, 1, 5);
    pb_raw(&list, "\x01\x02\x03\x04", 4);
    pb_sub(&feat, 3, &list);
    map_add(&feats, "k", &feat);
    pb ex = example_of(&feats);
    expect_corrupt(rt, ps, ex.p, ex.n,
                   "reading int64_list: field 1 has wire type 5, expected 0 (varint) or 2 (packed)");
    pb_free(&feats);
    pb_free(&feat);
    pb_free(&list);
    pb_free(&ex);
    /* packed float length not a multiple of 4 */
    ferry_example_parser_free(ps);
    f[0].dtype = FERRY_DTYPE_FLOAT32;
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps));
    pb_lenfield(&list, 1, "abcde", 5);
    pb_sub(&feat, 2, &list);
    map_add(&feats, "k", &feat);
    ex = example_of(&feats);
    expect_corrupt(rt, ps, ex.p, ex.n, "packed float values: length 5 is not a multiple of 4");
    pb_free(&feats);
    pb_free(&feat);
    pb_free(&list);
    pb_free(&ex);
    /* a Feature whose kind field has wire type 0 */
    pb_tag(&feat, 2, 0);
    pb_varint(&feat, 1);
    map_add(&feats, "k", &feat);
    ex = example_of(&feats);
    expect_corrupt(rt, ps, ex.p, ex.n, "reading Feature: field 2 has wire type 0");
    /* the same in an unknown key is not looked at */
    pb_free(&feats);
    pb_free(&ex);
    map_add(&feats, "other", &feat);
    ex = example_of(&feats);
    ferry_element *e;
    ASSERT_OK(parse_pb(rt, ps, &ex, &e));
    ferry_element_free(e);
    pb_free(&feats);
    pb_free(&feat);
    pb_free(&ex);
    ferry_example_parser_free(ps);
    rt_done(rt);
}

/* ---- argument checks -------------------------------------------------------------------- */
TEST(parser_create_rejects_bad_specs) {
    ferry_runtime *rt = rt_new();
    ferry_example_parser *ps = (ferry_example_parser *)1;
    ferry_example_feature f[2] = {{.key = "a", .dtype = FERRY_DTYPE_INT64}, {.key = "a", .dtype = FERRY_DTYPE_INT64}};
    ferry_example_spec spec = {.num_features = 2, .features = f};
    ASSERT_EQ(ferry_example_parser_create(rt, &spec, &ps), FERRY_EINVAL);
    ASSERT(ps == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "twice");
    spec.num_features = 1;
    f[0].dtype = FERRY_DTYPE_INT32;
    ASSERT_EQ(ferry_example_parser_create(rt, &spec, &ps), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "dtype is int32");
    f[0].dtype = FERRY_DTYPE_INT64;
    f[0].key = NULL;
    ASSERT_EQ(ferry_example_parser_create(rt, &spec, &ps), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "spec->features[0].key is NULL");
    f[0].key = "a";
    f[0].with_lengths = true;
    ASSERT_EQ(ferry_example_parser_create(rt, &spec, &ps), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "with_lengths");
    f[0].with_lengths = false;
    f[0].kind = FERRY_EXAMPLE_VARLEN;
    f[0].shape.rank = 1;
    f[0].shape.dims[0] = 2;
    ASSERT_EQ(ferry_example_parser_create(rt, &spec, &ps), FERRY_EINVAL);
    f[0].kind = FERRY_EXAMPLE_FIXED;
    f[0].shape.dims[0] = -1;
    ASSERT_EQ(ferry_example_parser_create(rt, &spec, &ps), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "fully known");
    f[0].shape.dims[0] = 3;
    ferry_tensor *d;
    ASSERT_OK(ferry_tensor_scalar_f32(rt, 1.f, &d));
    f[0].default_value = d;
    ASSERT_EQ(ferry_example_parser_create(rt, &spec, &ps), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "default_value is float32");
    ferry_tensor_unref(d);
    int64_t two = 2;
    ASSERT_OK(ferry_tensor_create(rt, FERRY_DTYPE_INT64, 1, &two, &d));
    f[0].default_value = d;
    ASSERT_EQ(ferry_example_parser_create(rt, &spec, &ps), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "default_value has 2 entries; the shape needs 3");
    f[0].kind = FERRY_EXAMPLE_VARLEN;
    f[0].shape.rank = 0;
    ASSERT_EQ(ferry_example_parser_create(rt, &spec, &ps), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "padding value");
    ferry_tensor_unref(d);
    f[0].default_value = NULL;
    spec.num_feature_lists = 1;
    spec.feature_lists = f;
    ASSERT_EQ(ferry_example_parser_create(rt, &spec, &ps), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "sequence");
    spec.sequence = true;
    ASSERT_OK(ferry_example_parser_create(rt, &spec, &ps)); /* the same key in both groups is fine */
    ferry_example_parser_free(ps);
    ASSERT_EQ(ferry_example_parser_create(NULL, &spec, &ps), FERRY_EINVAL);
    ASSERT_EQ(ferry_example_parser_create(rt, NULL, &ps), FERRY_EINVAL);
    ASSERT_EQ(ferry_example_parser_create(rt, &spec, NULL), FERRY_EINVAL);
    ferry_example_parser_free(NULL);
    size_t n;
    const ferry_tensor_spec *specs;
    ASSERT_EQ(ferry_example_parser_output_specs(NULL, &n, &specs), FERRY_EINVAL);
    rt_done(rt);
}

TEST(parse_rejects_bad_input) {
    ferry_runtime *rt = rt_new();
    ferry_example_parser *ps = full_parser(rt);
    ferry_tensor *t;
    ASSERT_OK(ferry_tensor_scalar_i64(rt, 1, &t));
    ferry_element *e;
    ASSERT_EQ(parse_tensor(rt, ps, t, &e), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(last_msg, "input component 0 is int64 []");
    int64_t dims[2] = {1, 1};
    const void *ptrs[1] = {""};
    size_t lens[1] = {0};
    ASSERT_OK(ferry_tensor_create_bytes(rt, 2, dims, ptrs, lens, &t));
    ASSERT_EQ(parse_tensor(rt, ps, t, &e), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(last_msg, "bytes [1, 1]");
    /* Called without a context: the message goes to ferry_last_error. */
    ferry_element *in;
    pb ex = full_example();
    ex.n -= 1;
    t = bytes_scalar(rt, ex.p, ex.n);
    ASSERT_OK(ferry_element_create(rt, 1, &t, &in));
    ASSERT_EQ(ferry_example_parse(NULL, in, &e, ps), FERRY_ECORRUPT);
    ASSERT_STR_CONTAINS(ferry_last_error(), "parse_example: corrupt record at byte");
    /* Not a parser. */
    int not_a_parser = 0;
    t = bytes_scalar(rt, "", 0);
    ASSERT_OK(ferry_element_create(rt, 1, &t, &in));
    ASSERT_EQ(ferry_example_parse(NULL, in, &e, &not_a_parser), FERRY_EMISUSE);
    pb_free(&ex);
    ferry_example_parser_free(ps);
    rt_done(rt);
}

/* Allocation failures: the Nth allocation fails, for every N until the call succeeds. */
static _Atomic long alloc_budget = -1;
static void *failing_alloc(void *user, void *ptr, size_t old_size, size_t new_size) {
    (void)user;
    (void)old_size;
    if (new_size == 0) {
        free(ptr);
        return NULL;
    }
    if (alloc_budget >= 0 && alloc_budget-- == 0) return NULL;
    return realloc(ptr, new_size);
}

TEST(allocation_failures) {
    ferry_runtime_options o = {.alloc = failing_alloc};
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(&o, &rt));
    pb recs[3];
    for (int i = 0; i < 3; i++) random_example(&recs[i]);
    bool done_create = false, done_parse = false, done_batch = false, done_json = false;
    for (long n = 0; n < 400 && !(done_create && done_parse && done_batch && done_json); n++) {
        ferry_example_parser *ps = NULL;
        alloc_budget = -1;
        ferry_tensor *rec = bytes_scalar(rt, recs[0].p, recs[0].n);
        ferry_tensor *vec = bytes_vector(rt, recs, 3);
        alloc_budget = n;
        int rc = ferry_example_parser_create(rt, &(ferry_example_spec){0}, &ps);
        ferry_example_parser_free(ps);
        ps = NULL;
        alloc_budget = -1;
        ferry_example_parser *full = random_parser(rt);
        ferry_element *e = NULL, *in;
        ASSERT_OK(ferry_element_create(rt, 1, &rec, &in));
        alloc_budget = n;
        rc = ferry_example_parse(NULL, in, &e, full);
        ASSERT(rc == FERRY_OK || rc == FERRY_ENOMEM);
        done_parse |= rc == FERRY_OK;
        alloc_budget = -1;
        ferry_element_free(e);
        ASSERT_OK(ferry_element_create(rt, 1, &vec, &in));
        alloc_budget = n;
        rc = ferry_example_parse(NULL, in, &e, full);
        ASSERT(rc == FERRY_OK || rc == FERRY_ENOMEM);
        done_batch |= rc == FERRY_OK;
        alloc_budget = -1;
        ferry_element_free(e);
        alloc_budget = n;
        ferry_blob *j = NULL, *back = NULL;
        rc = ferry_example_to_json(rt, recs[1].p, recs[1].n, &j);
        ASSERT(rc == FERRY_OK || rc == FERRY_ENOMEM);
        if (rc == FERRY_OK) {
            alloc_budget = n;
            rc = ferry_example_from_json(rt, ferry_blob_data(j), ferry_blob_size(j), &back);
            ASSERT(rc == FERRY_OK || rc == FERRY_ENOMEM);
            done_json |= rc == FERRY_OK;
        }
        ferry_blob_free(j);
        ferry_blob_free(back);
        alloc_budget = n;
        rc = ferry_example_parser_create(
            rt,
            &(ferry_example_spec){.num_features = 1,
                                  .features = &(ferry_example_feature){.key = "k", .dtype = FERRY_DTYPE_BYTES}},
            &ps);
        if (rc != FERRY_OK && rc != FERRY_ENOMEM) FAILF("create with %ld allocations: %s", n, ferry_last_error());
        done_create |= rc == FERRY_OK;
        alloc_budget = -1;
        ferry_example_parser_free(ps);
        ferry_example_parser_free(full);
    }
    ASSERT(done_create && done_parse && done_batch && done_json);
    for (int i = 0; i < 3; i++) pb_free(&recs[i]);
    rt_done(rt);
}

/* One parser, many threads at once (run under TSan): the parser is read-only after creation. */
typedef struct thread_arg {
    ferry_runtime *rt;
    ferry_example_parser *ps;
    pb *recs;
    size_t n;
    ferry_element *want;
    bool ok;
} thread_arg;

static void *parse_thread(void *p) {
    thread_arg *a = p;
    a->ok = true;
    for (int round = 0; round < 50 && a->ok; round++) {
        ferry_tensor *t = bytes_vector(a->rt, a->recs, a->n);
        ferry_element *in, *out = NULL;
        if (ferry_element_create(a->rt, 1, &t, &in) != FERRY_OK) {
            a->ok = false;
            break;
        }
        if (ferry_example_parse(NULL, in, &out, a->ps) != FERRY_OK || !element_eq(out, a->want)) a->ok = false;
        ferry_element_free(out);
    }
    return NULL;
}

TEST(parser_shared_by_threads) {
    ferry_runtime *rt = rt_new();
    ferry_example_parser *ps = random_parser(rt);
    enum { N = 24, THREADS = 4 };
    pb recs[N];
    for (int i = 0; i < N; i++) random_example(&recs[i]);
    ferry_element *want;
    ASSERT_OK(parse_tensor(rt, ps, bytes_vector(rt, recs, N), &want));
    pthread_t th[THREADS];
    thread_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (thread_arg){rt, ps, recs, N, want, false};
        ASSERT_EQ(pthread_create(&th[i], NULL, parse_thread, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        ASSERT(args[i].ok);
    }
    ferry_element_free(want);
    for (int i = 0; i < N; i++) pb_free(&recs[i]);
    ferry_example_parser_free(ps);
    rt_done(rt);
}

/* ---- JSON ------------------------------------------------------------------------------- */
static char *json_of(ferry_runtime *rt, const pb *rec) {
    ferry_blob *b;
    int rc = ferry_example_to_json(rt, rec->p, rec->n, &b);
    if (rc) FAILF("to_json: %s", ferry_last_error());
    char *s = malloc(ferry_blob_size(b) + 1);
    memcpy(s, ferry_blob_data(b), ferry_blob_size(b));
    s[ferry_blob_size(b)] = '\0';
    ferry_blob_free(b);
    return s;
}

static pb json_back(ferry_runtime *rt, const char *s) {
    ferry_blob *b;
    int rc = ferry_example_from_json(rt, s, strlen(s), &b);
    if (rc) FAILF("from_json(%s): %s", s, ferry_last_error());
    pb out = {0};
    pb_raw(&out, ferry_blob_data(b), ferry_blob_size(b));
    ferry_blob_free(b);
    return out;
}

TEST(json_format) {
    ferry_runtime *rt = rt_new();
    pb feats = {0};
    int64_t iv[3] = {1, -2, INT64_MIN};
    add_i64(&feats, "ints", iv, 3, 2);
    float fv[5] = {0.5f, 0.1f, -0.f, NAN, -INFINITY};
    add_f32(&feats, "floats", fv, 5, 0);
    const char *sv[3] = {"caf\xc3\xa9 \"q\"\n", "\x00\x01\xff", ""};
    size_t sl[3] = {strlen(sv[0]), 3, 0};
    add_bytes(&feats, "by\"tes", sv, sl, 3);
    add_empty(&feats, "empty");
    add_i64(&feats, "none", NULL, 0, 0);
    add_i64(&feats, "ints", iv, 1, 0); /* a repeated key: its last value at its last place */
    pb ex = example_of(&feats);
    char *s = json_of(rt, &ex);
    const char *want = "{\"features\": {\"floats\": {\"float\": [0.5, 0.1, -0, \"NaN\", \"-Infinity\"]}, "
                       "\"by\\\"tes\": {\"bytes\": [\"caf\xc3\xa9 \\\"q\\\"\\n\", {\"base64\": \"AAH/\"}, \"\"]}, "
                       "\"empty\": {}, \"none\": {\"int64\": []}, \"ints\": {\"int64\": [1]}}}";
    if (strcmp(s, want) != 0) FAILF("got  %s\nwant %s", s, want);
    free(s);
    pb empty = {0};
    s = json_of(rt, &empty);
    ASSERT(strcmp(s, "{\"features\": {}}") == 0);
    free(s);
    pb_free(&feats);
    pb_free(&ex);
    rt_done(rt);
}

TEST(json_round_trip) {
    ferry_runtime *rt = rt_new();
    ferry_example_parser *ps = random_parser(rt);
    for (int round = 0; round < 300; round++) {
        pb ex;
        random_example(&ex);
        char *s = json_of(rt, &ex);
        pb back = json_back(rt, s);
        /* the same values through the parser (both may fail the same way: duplicates of an
         * empty Feature are the one thing JSON cannot keep, see below) */
        ferry_element *a = NULL, *b = NULL;
        int ra = parse_pb(rt, ps, &ex, &a);
        char ma[FERRY__MSG_MAX];
        snprintf(ma, sizeof ma, "%s", last_msg);
        int rb = parse_pb(rt, ps, &back, &b);
        ASSERT_EQ(ra, rb);
        if (ra == FERRY_OK && !element_eq(a, b)) {
            /* JSON keeps the last entry of a key; the parser skips an empty last entry of a FIXED
             * feature in favour of an earlier one (tf.data). Only that may differ. */
            ASSERT(strstr(s, "{}") != NULL);
        } else if (ra) {
            ASSERT(strcmp(ma, last_msg) == 0 || strstr(s, "{}") != NULL);
        }
        ferry_element_free(a);
        ferry_element_free(b);
        /* the JSON of the canonical bytes is the same JSON */
        char *s2 = json_of(rt, &back);
        if (strcmp(s, s2) != 0) FAILF("%s\n!=\n%s", s, s2);
        free(s);
        free(s2);
        pb_free(&ex);
        pb_free(&back);
    }
    ferry_example_parser_free(ps);
    rt_done(rt);
}

TEST(json_input_forms_and_errors) {
    ferry_runtime *rt = rt_new();
    /* numbers as strings, escapes, surrogate pairs, base64 without padding, whitespace */
    pb b = json_back(rt, " { \"features\" : { \"k\\u00e9\" : { \"int64\" : [ \"-5\", 9223372036854775807 ] } ,"
                         "\"f\": {\"float\": [\"1.5\", 2, \"Infinity\", -1e-3]},"
                         "\"s\": {\"bytes\": [\"\\ud83d\\ude00\\t\\/\", {\"base64\": \"AP8\"}]}, \"e\": {} } }\n");
    char *s = json_of(rt, &b);
    const char *want = "{\"features\": {\"k\xc3\xa9\": {\"int64\": [-5, 9223372036854775807]}, "
                       "\"f\": {\"float\": [1.5, 2, \"Infinity\", -0.001]}, "
                       "\"s\": {\"bytes\": [\"\xf0\x9f\x98\x80\\t/\", {\"base64\": \"AP8=\"}]}, \"e\": {}}}";
    if (strcmp(s, want) != 0) FAILF("got  %s\nwant %s", s, want);
    free(s);
    pb_free(&b);
    b = json_back(rt, "{}");
    ASSERT_EQ(b.n, 0);
    pb_free(&b);
    b = json_back(rt, "{\"features\": {}}");
    ASSERT_EQ(b.n, 2);
    pb_free(&b);
    const char *bad[] = {
        "",
        "{",
        "[]",
        "{\"feature\": {}}",
        "{\"features\": {\"k\": {\"int32\": []}}}",
        "{\"features\": {\"k\": {\"int64\": [1.5]}}}",
        "{\"features\": {\"k\": {\"int64\": [9223372036854775808]}}}",
        "{\"features\": {\"k\": {\"float\": [\"nan\"]}}}",
        "{\"features\": {\"k\": {\"int64\": [1], \"float\": [2]}}}",
        "{\"features\": {\"k\": {\"bytes\": [{\"base64\": \"A\"}]}}}",
        "{\"features\": {\"k\": {\"bytes\": [{\"base64\": \"AA*A\"}]}}}",
        "{\"features\": {\"k\": {\"bytes\": [\"\\ud800\"]}}}",
        "{\"features\": {\"k\": {\"bytes\": [\"a\nb\"]}}}",
        "{\"features\": {\"k\": {\"bytes\": [\"\\q\"]}}}",
        "{\"features\": {\"\\udc00\": {}}}",
        "{\"features\": {}} x",
        "{\"features\": {\"k\": {\"int64\": [1,]}}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ferry_blob *out = (ferry_blob *)1;
        int rc = ferry_example_from_json(rt, bad[i], strlen(bad[i]), &out);
        if (rc != FERRY_EINVAL) FAILF("'%s' gave %s", bad[i], ferry_error_name(rc));
        ASSERT(out == NULL);
        ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_example_from_json: at byte");
    }
    /* every truncation of a valid JSON text fails (and never reads past the end) */
    const char *good =
        "{\"features\": {\"a\": {\"int64\": [1, 2]}, \"b\": {\"bytes\": [\"x\", {\"base64\": \"AA==\"}]}}}";
    for (size_t n = 0; n < strlen(good); n++) {
        char *cut = malloc(n + 1);
        memcpy(cut, good, n);
        ferry_blob *out;
        ASSERT_EQ(ferry_example_from_json(rt, cut, n, &out), FERRY_EINVAL);
        free(cut);
    }
    /* to_json of a non-UTF-8 key is corrupt (proto3 strings are UTF-8) */
    pb feats = {0};
    add_empty(&feats, "\xff");
    pb ex = example_of(&feats);
    ferry_blob *out;
    ASSERT_EQ(ferry_example_to_json(rt, ex.p, ex.n, &out), FERRY_ECORRUPT);
    ASSERT_STR_CONTAINS(ferry_last_error(), "not valid UTF-8");
    ASSERT_EQ(ferry_example_to_json(NULL, ex.p, ex.n, &out), FERRY_EINVAL);
    ASSERT_EQ(ferry_example_from_json(rt, NULL, 3, &out), FERRY_EINVAL);
    pb_free(&feats);
    pb_free(&ex);
    rt_done(rt);
}

/* ---- real files written by TensorFlow --------------------------------------------------- */
#define DATA_DIR FERRY_SOURCE_DIR "/../shared/data/tfrecord"

typedef struct recs {
    pb *r;
    size_t n, cap;
} recs;

/* Minimal TFRecord framing (no CRC check); gzread reads plain and gzip files alike. */
static bool read_records(const char *path, recs *out) {
    gzFile f = gzopen(path, "rb");
    if (!f) return false;
    for (;;) {
        uint8_t hdr[12];
        int got = gzread(f, hdr, 12);
        if (got == 0) break;
        ASSERT_EQ(got, 12);
        uint64_t len = 0;
        for (int i = 0; i < 8; i++) len |= (uint64_t)hdr[i] << (8 * i);
        ASSERT(len < (1u << 30));
        pb rec = {malloc(len + 1), len, len + 1};
        ASSERT_EQ(gzread(f, rec.p, (unsigned)len), (long long)len);
        uint8_t crc[4];
        ASSERT_EQ(gzread(f, crc, 4), 4);
        if (out->n == out->cap) {
            out->cap = out->cap ? 2 * out->cap : 64;
            out->r = realloc(out->r, out->cap * sizeof *out->r);
        }
        out->r[out->n++] = rec;
    }
    gzclose(f);
    return true;
}

static void recs_free(recs *r) {
    for (size_t i = 0; i < r->n; i++) pb_free(&r->r[i]);
    free(r->r);
}

static void need_data(void) {
    if (access(DATA_DIR "/cifar_test_tiny.tfrecord", R_OK) != 0)
        SKIP("no test data at " DATA_DIR " (../shared/data is absent)");
}

/* Parses every record one by one and as one batch; checks that both agree and that JSON round
 * trips to the same values. Returns the per-record elements. */
static ferry_element **parse_all(ferry_runtime *rt, ferry_example_parser *ps, recs *r, const padv *pads) {
    ferry_element **out = calloc(r->n + 1, sizeof *out);
    for (size_t i = 0; i < r->n; i++) {
        if (parse_pb(rt, ps, &r->r[i], &out[i]) != FERRY_OK) FAILF("record %zu: %s", i, last_msg);
        char *s = json_of(rt, &r->r[i]);
        pb back = json_back(rt, s);
        ferry_element *e;
        if (parse_pb(rt, ps, &back, &e) != FERRY_OK) FAILF("record %zu from JSON: %s", i, last_msg);
        if (!element_eq(e, out[i])) FAILF("record %zu differs after the JSON round trip", i);
        ferry_element_free(e);
        pb_free(&back);
        free(s);
    }
    check_batch(rt, ps, r->r, r->n, pads);
    return out;
}

static void free_all(ferry_element **e, size_t n) {
    for (size_t i = 0; i < n; i++) ferry_element_free(e[i]);
    free(e);
}

TEST(real_cifar) {
    need_data();
    ferry_runtime *rt = rt_new();
    recs r = {0};
    ASSERT(read_records(DATA_DIR "/cifar_test_tiny.tfrecord", &r));
    ASSERT_EQ(r.n, 100);
    ferry_example_feature f[3] = {
        {.key = "image", .dtype = FERRY_DTYPE_BYTES},
        {.key = "label", .dtype = FERRY_DTYPE_INT64},
        {.key = "id", .dtype = FERRY_DTYPE_BYTES},
    };
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &(ferry_example_spec){.num_features = 3, .features = f}, &ps));
    padv pads[3] = {{0}};
    ferry_element **e = parse_all(rt, ps, &r, pads);
    int64_t sum = 0;
    for (size_t i = 0; i < r.n; i++) {
        sum += I64(e[i], 1)[0];
        const uint8_t *p;
        size_t n;
        ASSERT_OK(ferry_tensor_bytes_get(ferry_element_get(e[i], 0), 0, &p, &n));
        ASSERT(n > 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0);
        ASSERT_OK(ferry_tensor_bytes_get(ferry_element_get(e[i], 2), 0, &p, &n));
        ASSERT_EQ(n, 10);
    }
    ASSERT_EQ(sum, 401);
    free_all(e, r.n);
    recs_free(&r);
    ferry_example_parser_free(ps);
    rt_done(rt);
}

TEST(real_squad) {
    need_data();
    ferry_runtime *rt = rt_new();
    recs r = {0};
    ASSERT(read_records(DATA_DIR "/squad_v_small.tfrecord", &r));
    ASSERT_EQ(r.n, 50);
    ferry_example_feature f[4] = {
        {.key = "answers/text", .dtype = FERRY_DTYPE_BYTES, .kind = FERRY_EXAMPLE_VARLEN, .with_lengths = true},
        {.key = "answers/answer_start", .dtype = FERRY_DTYPE_INT64, .kind = FERRY_EXAMPLE_VARLEN, .required = true},
        {.key = "question", .dtype = FERRY_DTYPE_BYTES},
        {.key = "context", .dtype = FERRY_DTYPE_BYTES},
    };
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &(ferry_example_spec){.num_features = 4, .features = f}, &ps));
    padv pads[5] = {{0}};
    ferry_element **e = parse_all(rt, ps, &r, pads);
    int64_t texts = 0, starts = 0, sum = 0;
    for (size_t i = 0; i < r.n; i++) {
        texts += I64(e[i], 1)[0];
        const ferry_tensor *st = ferry_element_get(e[i], 2);
        starts += ferry_tensor_dim(st, 0);
        for (int64_t k = 0; k < ferry_tensor_dim(st, 0); k++) sum += I64(e[i], 2)[k];
    }
    ASSERT_EQ(texts, 165);
    ASSERT_EQ(starts, 165);
    ASSERT_EQ(sum, 55563);
    free_all(e, r.n);
    recs_free(&r);
    ferry_example_parser_free(ps);
    rt_done(rt);
}

TEST(real_penguin_gzip) {
    need_data();
    ferry_runtime *rt = rt_new();
    recs r = {0};
    ASSERT(read_records(DATA_DIR "/penguin_eval.tfrecord.gz", &r));
    ASSERT_EQ(r.n, 100);
    ferry_example_feature f[5] = {
        {.key = "species", .dtype = FERRY_DTYPE_INT64},
        {.key = "body_mass_g", .dtype = FERRY_DTYPE_FLOAT32},
        {.key = "culmen_depth_mm", .dtype = FERRY_DTYPE_FLOAT32},
        {.key = "culmen_length_mm", .dtype = FERRY_DTYPE_FLOAT32},
        {.key = "flipper_length_mm", .dtype = FERRY_DTYPE_FLOAT32},
    };
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &(ferry_example_spec){.num_features = 5, .features = f}, &ps));
    padv pads[5] = {{0}};
    ferry_element **e = parse_all(rt, ps, &r, pads);
    int64_t sum = 0;
    for (size_t i = 0; i < r.n; i++) {
        sum += I64(e[i], 0)[0];
        for (size_t k = 1; k < 5; k++) ASSERT(isfinite(F32(e[i], k)[0]));
    }
    ASSERT_EQ(sum, 84);
    free_all(e, r.n);
    recs_free(&r);
    ferry_example_parser_free(ps);
    rt_done(rt);
}

/* The Chicago taxi features (taxi_features.h) of the csv_example_gen shards are read as VARLEN
 * (empty Features give 0 values), and the ones that are never empty as FIXED. */
#define NTAXI (sizeof taxi / sizeof taxi[0])

TEST(real_csv_example_gen_shards) {
    need_data();
    ferry_runtime *rt = rt_new();
    recs r = {0};
    for (int s = 0; s < 12; s++) {
        char path[512];
        snprintf(path, sizeof path, DATA_DIR "/csv_example_gen/data_tfrecord-%05d-of-00012.gz", s);
        ASSERT(read_records(path, &r));
    }
    ASSERT_EQ(r.n, 5091);
    /* The keys really are these 18 (from the JSON of the first record). */
    char *s = json_of(rt, &r.r[0]);
    for (size_t k = 0; k < NTAXI; k++) {
        char q[64];
        snprintf(q, sizeof q, "\"%s\": ", taxi[k].key);
        ASSERT_STR_CONTAINS(s, q);
    }
    ASSERT_STR_CONTAINS(s, "\"pickup_census_tract\": {}");
    free(s);
    ferry_example_feature f[NTAXI];
    memset(f, 0, sizeof f);
    for (size_t k = 0; k < NTAXI; k++)
        f[k] = (ferry_example_feature){
            .key = taxi[k].key, .dtype = taxi[k].dtype, .kind = FERRY_EXAMPLE_VARLEN, .with_lengths = true};
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &(ferry_example_spec){.num_features = NTAXI, .features = f}, &ps));
    padv pads[2 * NTAXI];
    memset(pads, 0, sizeof pads);
    ferry_element **e = parse_all(rt, ps, &r, pads);
    int64_t empty_tract = 0, values = 0;
    for (size_t i = 0; i < r.n; i++) {
        empty_tract += I64(e[i], 2 * 7 + 1)[0] == 0;
        for (size_t k = 0; k < NTAXI; k++) {
            ASSERT_LE(I64(e[i], 2 * k + 1)[0], 1);
            values += I64(e[i], 2 * k + 1)[0];
        }
    }
    ASSERT_EQ(empty_tract, 5091);
    ASSERT(values > 5091 * 10);
    free_all(e, r.n);
    ferry_example_parser_free(ps);
    /* FIXED with a default for the empty one: the default fills in. */
    ferry_tensor *dflt;
    ASSERT_OK(ferry_tensor_scalar_i64(rt, -1, &dflt));
    ferry_example_feature g[2] = {
        {.key = "pickup_census_tract", .dtype = FERRY_DTYPE_INT64, .default_value = dflt},
        {.key = "trip_start_hour", .dtype = FERRY_DTYPE_INT64},
    };
    ASSERT_OK(ferry_example_parser_create(rt, &(ferry_example_spec){.num_features = 2, .features = g}, &ps));
    ferry_tensor_unref(dflt);
    ferry_element *b;
    ASSERT_OK(parse_tensor(rt, ps, bytes_vector(rt, r.r, r.n), &b));
    const int64_t *tract = I64(b, 0), *hour = I64(b, 1);
    for (size_t i = 0; i < r.n; i++) {
        ASSERT_EQ(tract[i], -1);
        ASSERT(hour[i] >= 0 && hour[i] < 24);
    }
    ferry_element_free(b);
    ferry_example_parser_free(ps);
    recs_free(&r);
    rt_done(rt);
}

/* ---- through the pipeline: TFRecord dataset -> map(parse) / batch -> map(parse) ---------- */
static ferry_dataset *taxi_records(ferry_runtime *rt) {
    char paths[12][512];
    const char *files[12];
    for (int s = 0; s < 12; s++) {
        snprintf(paths[s], sizeof paths[s], DATA_DIR "/csv_example_gen/data_tfrecord-%05d-of-00012.gz", s);
        files[s] = paths[s];
    }
    ferry_tfrecord_options o = {.compression = FERRY_COMPRESSION_GZIP};
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_tfrecord(rt, 12, files, &o, &ds));
    return ds;
}

static ferry_example_parser *taxi_parser(ferry_runtime *rt) {
    ferry_example_feature f[NTAXI];
    memset(f, 0, sizeof f);
    for (size_t k = 0; k < NTAXI; k++)
        f[k] = (ferry_example_feature){
            .key = taxi[k].key, .dtype = taxi[k].dtype, .kind = FERRY_EXAMPLE_VARLEN, .with_lengths = true};
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &(ferry_example_spec){.num_features = NTAXI, .features = f}, &ps));
    return ps;
}

TEST(pipeline_batch_parse_equals_padded_batch_of_parse) {
    need_data();
    ferry_runtime *rt = rt_new();
    ferry_example_parser *ps = taxi_parser(rt);
    ferry_dataset *rds = taxi_records(rt), *per, *padded_ds, *batched, *fast;
    ferry_parse_example_options mo = {.num_parallel_calls = 2};
    ASSERT_OK(ferry_dataset_parse_example(rds, ps, &mo, &per));
    ASSERT_EQ(ferry_dataset_num_components(per), 2 * NTAXI);
    ASSERT_OK(ferry_dataset_padded_batch(per, 100, NULL, &padded_ds));
    ASSERT_OK(ferry_dataset_batch(rds, 100, NULL, &batched));
    ASSERT_OK(ferry_dataset_parse_example(batched, ps, &mo, &fast));
    ferry_tensor_spec sp;
    ASSERT_OK(ferry_dataset_component_spec(fast, 0, &sp));
    ASSERT_EQ(sp.shape.rank, 2);
    ferry_iterator *a, *b;
    ASSERT_OK(ferry_iterator_create(padded_ds, NULL, &a));
    ASSERT_OK(ferry_iterator_create(fast, NULL, &b));
    int64_t rows = 0, hours = 0, hour_values = 0;
    for (;;) {
        ferry_element *x = NULL, *y = NULL;
        int ra = ferry_iterator_next(a, &x), rb = ferry_iterator_next(b, &y);
        if (ra != FERRY_OK && ra != FERRY_END) FAILF("padded: %s", ferry_iterator_error(a));
        if (rb != FERRY_OK && rb != FERRY_END) FAILF("fast: %s", ferry_iterator_error(b));
        ASSERT_EQ(ra, rb);
        if (ra == FERRY_END) break;
        if (!element_eq(x, y)) FAILF("batch at row %lld differs", (long long)rows);
        const ferry_tensor *h = ferry_element_get(y, 2 * 15), *hl = ferry_element_get(y, 2 * 15 + 1);
        for (int64_t i = 0; i < ferry_tensor_dim(hl, 0); i++) {
            hour_values += I64(y, 2 * 15 + 1)[i];
            if (I64(y, 2 * 15 + 1)[i]) hours += ((const int64_t *)ferry_tensor_data(h))[i * ferry_tensor_dim(h, 1)];
        }
        rows += ferry_tensor_dim(ferry_element_get(y, 0), 0);
        ferry_element_free(x);
        ferry_element_free(y);
    }
    ASSERT_EQ(rows, 5091);
    /* the same hours as the test's own reader gives */
    recs r = {0};
    for (int s = 0; s < 12; s++) {
        char path[512];
        snprintf(path, sizeof path, DATA_DIR "/csv_example_gen/data_tfrecord-%05d-of-00012.gz", s);
        ASSERT(read_records(path, &r));
    }
    int64_t want = 0, want_values = 0;
    for (size_t i = 0; i < r.n; i++) {
        ferry_element *e;
        ASSERT_OK(parse_pb(rt, ps, &r.r[i], &e));
        want_values += I64(e, 2 * 15 + 1)[0];
        if (I64(e, 2 * 15 + 1)[0]) want += I64(e, 2 * 15)[0];
        ferry_element_free(e);
    }
    ASSERT_EQ(hours, want);
    ASSERT_EQ(hour_values, want_values);
    recs_free(&r);
    ferry_iterator_free(a);
    ferry_iterator_free(b);
    ferry_dataset_unref(per);
    ferry_dataset_unref(padded_ds);
    ferry_dataset_unref(batched);
    ferry_dataset_unref(fast);
    ferry_dataset_unref(rds);
    ferry_example_parser_free(ps);
    rt_done(rt);
}

TEST(pipeline_real_files_sums) {
    need_data();
    ferry_runtime *rt = rt_new();
    struct {
        const char *file;
        ferry_compression comp;
        const char *key;
        ferry_example_kind kind;
        int64_t records, values, sum;
    } cases[3] = {
        {"/cifar_test_tiny.tfrecord", FERRY_COMPRESSION_NONE, "label", FERRY_EXAMPLE_FIXED, 100, 100, 401},
        {"/squad_v_small.tfrecord", FERRY_COMPRESSION_NONE, "answers/answer_start", FERRY_EXAMPLE_VARLEN, 50, 165,
         55563},
        {"/penguin_eval.tfrecord.gz", FERRY_COMPRESSION_GZIP, "species", FERRY_EXAMPLE_FIXED, 100, 100, 84},
    };
    for (int c = 0; c < 3; c++) {
        char path[512];
        snprintf(path, sizeof path, DATA_DIR "%s", cases[c].file);
        const char *files[1] = {path};
        ferry_tfrecord_options o = {.compression = cases[c].comp};
        ferry_dataset *rds, *parsed;
        ASSERT_OK(ferry_dataset_tfrecord(rt, 1, files, &o, &rds));
        ferry_example_feature f = {.key = cases[c].key, .dtype = FERRY_DTYPE_INT64, .kind = cases[c].kind};
        ferry_example_parser *ps;
        ASSERT_OK(ferry_example_parser_create(rt, &(ferry_example_spec){.num_features = 1, .features = &f}, &ps));
        ASSERT_OK(ferry_dataset_parse_example(rds, ps, NULL, &parsed));
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(parsed, NULL, &it));
        int64_t n = 0, values = 0, sum = 0;
        ferry_element *e;
        int rc;
        while ((rc = ferry_iterator_next(it, &e)) == FERRY_OK) {
            const ferry_tensor *t = ferry_element_get(e, 0);
            for (int64_t i = 0; i < ferry_tensor_num_entries(t); i++) sum += ((const int64_t *)ferry_tensor_data(t))[i];
            values += ferry_tensor_num_entries(t);
            n++;
            ferry_element_free(e);
        }
        if (rc != FERRY_END) FAILF("%s: %s", cases[c].file, ferry_iterator_error(it));
        ASSERT_EQ(n, cases[c].records);
        ASSERT_EQ(values, cases[c].values);
        ASSERT_EQ(sum, cases[c].sum);
        ferry_iterator_free(it);
        ferry_dataset_unref(parsed);
        ferry_dataset_unref(rds);
        ferry_example_parser_free(ps);
    }
    rt_done(rt);
}

TEST(pipeline_error_in_its_position) {
    /* A corrupt record fails in its own position, with the parser's message, and the iterator
     * goes on; save/restore resumes at the same place. */
    ferry_runtime *rt = rt_new();
    ferry_example_parser *ps = full_parser(rt);
    pb good = full_example();
    enum { N = 20 };
    const void *ptrs[N];
    size_t lens[N];
    for (int i = 0; i < N; i++) {
        ptrs[i] = good.p;
        lens[i] = i % 7 == 3 ? good.n - 1 : good.n;
    }
    int64_t n = N;
    ferry_tensor *t;
    ASSERT_OK(ferry_tensor_create_bytes(rt, 1, &n, ptrs, lens, &t));
    ferry_dataset *src, *parsed;
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 1, &t, NULL, &src));
    ferry_tensor_unref(t);
    for (int par = 0; par <= 2; par += 2) {
        ferry_parse_example_options mo = {.num_parallel_calls = par};
        ASSERT_OK(ferry_dataset_parse_example(src, ps, &mo, &parsed));
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(parsed, NULL, &it));
        ferry_blob *saved = NULL;
        for (int i = 0; i < N; i++) {
            ferry_element *e = NULL;
            int rc = ferry_iterator_next(it, &e);
            if (i % 7 == 3) {
                ASSERT_EQ(rc, FERRY_ECORRUPT);
                ASSERT_STR_CONTAINS(ferry_iterator_error(it), "parse_example: corrupt record at byte");
            } else {
                ASSERT_OK(rc);
                ASSERT_EQ(I64(e, 0)[1], 300);
                ferry_element_free(e);
            }
            if (i == 8) ASSERT_OK(ferry_iterator_save(it, &saved));
        }
        ferry_element *e = NULL;
        ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
        ferry_iterator_free(it);
        ASSERT_OK(ferry_iterator_restore(parsed, ferry_blob_data(saved), ferry_blob_size(saved), NULL, &it));
        for (int i = 9; i < N; i++) {
            int rc = ferry_iterator_next(it, &e);
            ASSERT_EQ(rc, i % 7 == 3 ? FERRY_ECORRUPT : FERRY_OK);
            ferry_element_free(e);
            e = NULL;
        }
        ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
        ferry_iterator_free(it);
        ferry_blob_free(saved);
        ferry_dataset_unref(parsed);
    }
    /* A dataset whose component 0 is not bytes is refused at construction. */
    ferry_dataset *r;
    ASSERT_OK(ferry_dataset_range(rt, 0, 3, 1, NULL, &r));
    ASSERT_EQ(ferry_dataset_parse_example(r, ps, NULL, &parsed), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "bytes scalar or vector");
    ferry_dataset_unref(r);
    ferry_dataset_unref(src);
    pb_free(&good);
    ferry_example_parser_free(ps);
    rt_done(rt);
}
