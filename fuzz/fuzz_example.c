/*
 * fuzz_example.c - fuzz target for the tf.train.Example / SequenceExample parser and the JSON
 * form (src/io/example.c, src/io/example_json.c).
 *
 * Each input is used four ways, with fixed specs whose keys are short ("a".."f", "t", "w") so
 * that the fuzzer finds them:
 *   1. as one serialized Example and as one SequenceExample (per-record path);
 *   2. as a batch of the same record twice (batch fast path); checked: the batch fails exactly
 *      when the record fails, and otherwise both rows of every output equal the per-record
 *      output (no padding is needed between two equal records);
 *   3. through ferry_example_to_json; when it succeeds, from_json of that text must succeed and
 *      its to_json must give the same text (the JSON form is a fixed point);
 *   4. as JSON text for ferry_example_from_json; when it succeeds, to_json of the result must
 *      succeed.
 * Every error must come with a message. Everything made is freed: the runtime's allocator must
 * be back to its own block at the end of each input (checked through the runtime stats).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry.h"

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "fuzz_example.c:%d: check failed: %s\n", __LINE__, #cond);                                 \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

static ferry_runtime *rt;
static ferry_example_parser *ex_parser, *seq_parser;
static int64_t base_blocks;

static void setup(void) {
    CHECK(ferry_runtime_create(NULL, &rt) == FERRY_OK);
    ferry_tensor *d2, *dpad, *dstr;
    int64_t two = 2;
    CHECK(ferry_tensor_create(rt, FERRY_DTYPE_INT64, 1, &two, &d2) == FERRY_OK);
    CHECK(ferry_tensor_scalar_i64(rt, -1, &dpad) == FERRY_OK);
    const void *p[1] = {"pad"};
    size_t l = 3;
    CHECK(ferry_tensor_create_bytes(rt, 0, NULL, p, &l, &dstr) == FERRY_OK);
    ferry_example_feature f[6] = {
        {.key = "a", .dtype = FERRY_DTYPE_INT64, .shape = {1, {2}}, .default_value = d2},
        {.key = "b", .dtype = FERRY_DTYPE_FLOAT32},
        {.key = "c", .dtype = FERRY_DTYPE_BYTES, .default_value = dstr},
        {.key = "d",
         .dtype = FERRY_DTYPE_INT64,
         .kind = FERRY_EXAMPLE_VARLEN,
         .with_lengths = true,
         .default_value = dpad},
        {.key = "e", .dtype = FERRY_DTYPE_BYTES, .kind = FERRY_EXAMPLE_VARLEN, .default_value = dstr},
        {.key = "f", .dtype = FERRY_DTYPE_FLOAT32, .kind = FERRY_EXAMPLE_VARLEN},
    };
    ferry_example_spec spec = {.num_features = 6, .features = f};
    CHECK(ferry_example_parser_create(rt, &spec, &ex_parser) == FERRY_OK);
    ferry_example_feature ctx[2] = {
        {.key = "a", .dtype = FERRY_DTYPE_INT64, .kind = FERRY_EXAMPLE_VARLEN},
        {.key = "c", .dtype = FERRY_DTYPE_BYTES, .default_value = dstr},
    };
    ferry_example_feature lists[4] = {
        {.key = "t", .dtype = FERRY_DTYPE_INT64, .with_lengths = true, .default_value = dpad},
        {.key = "w", .dtype = FERRY_DTYPE_BYTES, .kind = FERRY_EXAMPLE_VARLEN, .with_lengths = true},
        {.key = "f", .dtype = FERRY_DTYPE_FLOAT32, .shape = {1, {2}}},
        {.key = "d", .dtype = FERRY_DTYPE_INT64, .kind = FERRY_EXAMPLE_VARLEN, .default_value = dpad},
    };
    ferry_example_spec sspec = {
        .sequence = true, .num_features = 2, .features = ctx, .num_feature_lists = 4, .feature_lists = lists};
    CHECK(ferry_example_parser_create(rt, &sspec, &seq_parser) == FERRY_OK);
    ferry_tensor_unref(d2);
    ferry_tensor_unref(dpad);
    ferry_tensor_unref(dstr);
    ferry_runtime_stats s;
    CHECK(ferry_runtime_stats_get(rt, &s) == FERRY_OK);
    base_blocks = s.blocks_allocated;
}

static ferry_element *record_element(const uint8_t *data, size_t size, int copies) {
    ferry_tensor *t;
    const void *ptrs[2] = {data, data};
    size_t lens[2] = {size, size};
    int64_t n = copies;
    CHECK(ferry_tensor_create_bytes(rt, copies ? 1 : 0, &n, ptrs, lens, &t) == FERRY_OK);
    ferry_element *e;
    CHECK(ferry_element_create(rt, 1, &t, &e) == FERRY_OK);
    return e;
}

/* Entry i of t equals entry j of u. */
static int entry_eq(const ferry_tensor *t, int64_t i, const ferry_tensor *u, int64_t j) {
    if (ferry_tensor_dtype(t) == FERRY_DTYPE_BYTES) {
        const uint8_t *p, *q;
        size_t n, m;
        CHECK(ferry_tensor_bytes_get(t, i, &p, &n) == FERRY_OK);
        CHECK(ferry_tensor_bytes_get(u, j, &q, &m) == FERRY_OK);
        return n == m && (n == 0 || memcmp(p, q, n) == 0);
    }
    size_t es = ferry_dtype_size(ferry_tensor_dtype(t));
    return memcmp((const uint8_t *)ferry_tensor_data(t) + (size_t)i * es,
                  (const uint8_t *)ferry_tensor_data(u) + (size_t)j * es, es) == 0;
}

static void parse_both_ways(ferry_example_parser *ps, const uint8_t *data, size_t size) {
    ferry_element *one = NULL, *two = NULL;
    int r1 = ferry_example_parse(NULL, record_element(data, size, 0), &one, ps);
    if (r1) CHECK(ferry_last_error()[0] != '\0');
    int r2 = ferry_example_parse(NULL, record_element(data, size, 2), &two, ps);
    if (r2) CHECK(ferry_last_error()[0] != '\0');
    CHECK((r1 == FERRY_OK) == (r2 == FERRY_OK));
    if (r1 == FERRY_OK) {
        size_t nout;
        const ferry_tensor_spec *specs;
        CHECK(ferry_example_parser_output_specs(ps, &nout, &specs) == FERRY_OK);
        CHECK(ferry_element_size(one) == nout && ferry_element_size(two) == nout);
        for (size_t o = 0; o < nout; o++) {
            const ferry_tensor *s = ferry_element_get(one, o), *b = ferry_element_get(two, o);
            CHECK(ferry_tensor_dtype(s) == specs[o].dtype && ferry_tensor_rank(s) == specs[o].shape.rank);
            CHECK(ferry_tensor_rank(b) == ferry_tensor_rank(s) + 1 && ferry_tensor_dim(b, 0) == 2);
            for (int d = 0; d < ferry_tensor_rank(s); d++) CHECK(ferry_tensor_dim(b, d + 1) == ferry_tensor_dim(s, d));
            int64_t n = ferry_tensor_num_entries(s);
            for (int64_t i = 0; i < n; i++) CHECK(entry_eq(s, i, b, i) && entry_eq(s, i, b, n + i));
        }
    }
    ferry_element_free(one);
    ferry_element_free(two);
}

static void json_ways(const uint8_t *data, size_t size) {
    ferry_blob *j = NULL;
    int rc = ferry_example_to_json(rt, data, size, &j);
    if (rc == FERRY_OK) {
        ferry_blob *back = NULL, *j2 = NULL;
        rc = ferry_example_from_json(rt, ferry_blob_data(j), ferry_blob_size(j), &back);
        if (rc) fprintf(stderr, "from_json(to_json(x)) failed: %s\n", ferry_last_error());
        CHECK(rc == FERRY_OK);
        CHECK(ferry_example_to_json(rt, ferry_blob_data(back), ferry_blob_size(back), &j2) == FERRY_OK);
        CHECK(ferry_blob_size(j2) == ferry_blob_size(j) &&
              memcmp(ferry_blob_data(j2), ferry_blob_data(j), ferry_blob_size(j)) == 0);
        ferry_blob_free(back);
        ferry_blob_free(j2);
    } else {
        CHECK(rc == FERRY_ECORRUPT && ferry_last_error()[0] != '\0');
    }
    ferry_blob_free(j);
    ferry_blob *ex = NULL;
    rc = ferry_example_from_json(rt, (const char *)data, size, &ex);
    if (rc == FERRY_OK) {
        ferry_blob *again = NULL;
        CHECK(ferry_example_to_json(rt, ferry_blob_data(ex), ferry_blob_size(ex), &again) == FERRY_OK);
        ferry_blob_free(again);
    } else {
        CHECK(rc == FERRY_EINVAL && ferry_last_error()[0] != '\0');
    }
    ferry_blob_free(ex);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!rt) setup();
    parse_both_ways(ex_parser, data, size);
    parse_both_ways(seq_parser, data, size);
    json_ways(data, size);
    ferry_runtime_stats s;
    CHECK(ferry_runtime_stats_get(rt, &s) == FERRY_OK);
    CHECK(s.blocks_allocated == base_blocks);
    return 0;
}
