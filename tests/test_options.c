/*
 * test_options.c - what every op constructor's options struct promises: a `name` that the stats,
 * the report and the trace show, checked on the way in; a `user_free` that runs exactly once,
 * after the dataset's last iterator, and never when the constructor failed; NULL options as
 * defaults; sentinels that are refused where another belongs.
 */
#include "runner.h"

#include <stdatomic.h>

static int64_t drain_count(ferry_dataset *ds) {
    ferry_iterator *it;
    if (ferry_iterator_create(ds, NULL, &it)) return -1;
    int64_t n = 0;
    ferry_element *e;
    int rc;
    while ((rc = ferry_iterator_next(it, &e)) != FERRY_END) {
        if (rc == FERRY_OK) ferry_element_free(e);
        n++;
    }
    ferry_iterator_free(it);
    return n;
}

static int identity(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)ctx, (void)user;
    *out = in;
    return FERRY_OK;
}

static int keep_even(ferry_context *ctx, const ferry_element *e, bool *keep, void *user) {
    (void)ctx, (void)user;
    *keep = *(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)) % 2 == 0;
    return FERRY_OK;
}

/* ---- names -------------------------------------------------------------------------------- */
TEST(every_constructor_takes_a_name) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *r, *ds;
    ASSERT_OK(ferry_dataset_range(rt, 0, 8, 1, &(ferry_range_options){.name = "ids"}, &r));
    ASSERT(strcmp(ferry_dataset_name(r), "ids") == 0);
    ASSERT(strcmp(ferry_dataset_op(r), "range") == 0);
    struct {
        int rc;
        ferry_dataset *ds;
        const char *name, *op;
    } made[16];
    size_t n = 0;
#define MADE(call, nm, o)                                                                                              \
    do {                                                                                                               \
        made[n].rc = (call);                                                                                           \
        made[n].ds = ds;                                                                                               \
        made[n].name = nm;                                                                                             \
        made[n++].op = o;                                                                                              \
    } while (0)
    MADE(ferry_dataset_map(r, identity, NULL, &(ferry_map_options){.name = "m"}, &ds), "m", "map");
    MADE(ferry_dataset_filter(r, keep_even, NULL, &(ferry_filter_options){.name = "f"}, &ds), "f", "filter");
    MADE(ferry_dataset_batch(r, 3, &(ferry_batch_options){.name = "b"}, &ds), "b", "batch");
    MADE(ferry_dataset_padded_batch(r, 3, &(ferry_padded_batch_options){.name = "pb"}, &ds), "pb", "padded_batch");
    MADE(ferry_dataset_shuffle(r, 4, &(ferry_shuffle_options){.name = "s"}, &ds), "s", "shuffle");
    MADE(ferry_dataset_repeat(r, 2, &(ferry_repeat_options){.name = "r"}, &ds), "r", "repeat");
    MADE(ferry_dataset_take(r, 2, &(ferry_take_options){.name = "t"}, &ds), "t", "take");
    MADE(ferry_dataset_skip(r, 2, &(ferry_skip_options){.name = "k"}, &ds), "k", "skip");
    MADE(ferry_dataset_shard(r, 3, 1, &(ferry_shard_options){.name = "sh"}, &ds), "sh", "shard");
    MADE(ferry_dataset_zip(1, &r, &(ferry_zip_options){.name = "z"}, &ds), "z", "zip");
    MADE(ferry_dataset_concatenate(r, r, &(ferry_concatenate_options){.name = "c"}, &ds), "c", "concatenate");
    MADE(ferry_dataset_enumerate(r, &(ferry_enumerate_options){.name = "e", .start = 5}, &ds), "e", "enumerate");
    MADE(ferry_dataset_ignore_errors(r, &(ferry_ignore_errors_options){.name = "i"}, &ds), "i", "ignore_errors");
    MADE(ferry_dataset_prefetch(r, 2, &(ferry_prefetch_options){.name = "p"}, &ds), "p", "prefetch");
    MADE(ferry_dataset_cache(r, &(ferry_cache_options){.name = "mem"}, &ds), "mem", "cache");
#undef MADE
    for (size_t i = 0; i < n; i++) {
        ASSERT_OK(made[i].rc);
        ASSERT(strcmp(ferry_dataset_name(made[i].ds), made[i].name) == 0);
        ASSERT(strcmp(ferry_dataset_op(made[i].ds), made[i].op) == 0);
        ASSERT(drain_count(made[i].ds) >= 0);
        ferry_dataset_unref(made[i].ds);
    }
    /* No name: the op's. The enumerate start moved into its options. */
    ASSERT_OK(ferry_dataset_enumerate(r, NULL, &ds));
    ASSERT(strcmp(ferry_dataset_name(ds), "enumerate") == 0);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(r);
    rt_done(rt);
}

TEST(names_are_checked) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *r, *ds = NULL;
    ASSERT_OK(ferry_dataset_range(rt, 0, 8, 1, NULL, &r));
    char longest[FERRY_NAME_MAX + 2];
    memset(longest, 'a', sizeof longest);
    longest[FERRY_NAME_MAX] = '\0';
    ASSERT_OK(ferry_dataset_take(r, 1, &(ferry_take_options){.name = longest}, &ds));
    ASSERT_EQ(strlen(ferry_dataset_name(ds)), FERRY_NAME_MAX);
    ferry_dataset_unref(ds);
    longest[FERRY_NAME_MAX] = 'a';
    longest[FERRY_NAME_MAX + 1] = '\0';
    ASSERT_EQ(ferry_dataset_take(r, 1, &(ferry_take_options){.name = longest}, &ds), FERRY_EINVAL);
    ASSERT(ds == NULL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_dataset_take: opts->name is longer than 63 bytes");
    ASSERT_EQ(ferry_dataset_map(r, identity, NULL, &(ferry_map_options){.name = "two\nlines"}, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_dataset_map: opts->name has a control character (0x0a) at byte 3");
    ASSERT_EQ(ferry_dataset_range(rt, 0, 1, 1, &(ferry_range_options){.name = "\t"}, &ds), FERRY_EINVAL);
    ASSERT_EQ(ferry_dataset_tfrecord(rt, 0, NULL, &(ferry_tfrecord_options){.name = "\x7f"}, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "ferry_dataset_tfrecord: opts->name");
    /* UTF-8 names pass as they are. */
    ASSERT_OK(ferry_dataset_take(r, 1,
                                 &(ferry_take_options){.name = "d\xc3\xa9"
                                                               "codage"},
                                 &ds));
    ASSERT(strcmp(ferry_dataset_name(ds), "d\xc3\xa9"
                                          "codage") == 0);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(r);
    rt_done(rt);
}

TEST(stats_report_and_trace_show_the_name) {
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(&(ferry_runtime_options){.trace_bytes = 1 << 20}, &rt));
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_range(rt, 0, 64, 1, &(ferry_range_options){.name = "ids"}, &ds));
    CHAIN(ds,
          ferry_dataset_map(ds, identity, NULL, &(ferry_map_options){.name = "decode", .num_parallel_calls = 2}, OUT));
    CHAIN(ds, ferry_dataset_prefetch(ds, 4, &(ferry_prefetch_options){.name = "ahead"}, OUT));
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, &(ferry_iterator_options){.no_rewrites = true}, &it));
    ferry_element *e;
    for (int i = 0; i < 64; i++) {
        ASSERT_OK(ferry_iterator_next(it, &e));
        ferry_element_free(e);
    }
    ferry_stage_stats st[8];
    size_t n;
    ASSERT_OK(ferry_iterator_stats(it, st, 8, &n));
    ASSERT_EQ(n, 3);
    ASSERT(strcmp(st[0].name, "ahead") == 0 && strcmp(st[0].op, "prefetch") == 0);
    ASSERT(strcmp(st[1].name, "decode") == 0 && strcmp(st[1].op, "map") == 0);
    ASSERT(strcmp(st[2].name, "ids") == 0 && strcmp(st[2].op, "range") == 0);
    ferry_blob *json;
    ASSERT_OK(ferry_iterator_report_json(it, &json));
    char *text = strndup(ferry_blob_data(json), ferry_blob_size(json));
    ASSERT_STR_CONTAINS(text, "\"name\":\"decode\",\"op\":\"map\"");
    free(text);
    ferry_blob_free(json);
    ferry_iterator_free(it);
    ASSERT_OK(ferry_runtime_trace_json(rt, &json));
    text = strndup(ferry_blob_data(json), ferry_blob_size(json));
    ASSERT_STR_CONTAINS(text, "\"name\":\"decode work\""); /* the map's spans */
    free(text);
    ferry_blob_free(json);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(a_fused_stage_shows_both_names) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_range(rt, 0, 64, 1, NULL, &ds));
    CHAIN(ds,
          ferry_dataset_map(ds, identity, NULL, &(ferry_map_options){.name = "decode", .num_parallel_calls = 2}, OUT));
    CHAIN(ds, ferry_dataset_batch(ds, 8, NULL, OUT));
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    ferry_stage_stats st[8];
    size_t n;
    ASSERT_OK(ferry_iterator_stats(it, st, 8, &n));
    ASSERT_EQ(n, 2);
    ASSERT(strcmp(st[0].op, "map_and_batch") == 0);
    ASSERT(strcmp(st[0].name, "decode+batch") == 0);
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(a_name_is_not_part_of_the_fingerprint) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *a, *b;
    ASSERT_OK(ferry_dataset_range(rt, 0, 50, 1, NULL, &a));
    CHAIN(a, ferry_dataset_map(a, identity, NULL, &(ferry_map_options){.name = "before"}, OUT));
    ASSERT_OK(ferry_dataset_range(rt, 0, 50, 1, &(ferry_range_options){.name = "ids"}, &b));
    CHAIN(b, ferry_dataset_map(b, identity, NULL, &(ferry_map_options){.name = "after"}, OUT));
    ASSERT_EQ(ferry_dataset_fingerprint(a), ferry_dataset_fingerprint(b));
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(a, NULL, &it));
    ferry_element *e;
    for (int i = 0; i < 7; i++) {
        ASSERT_OK(ferry_iterator_next(it, &e));
        ferry_element_free(e);
    }
    ferry_blob *state;
    ASSERT_OK(ferry_iterator_save(it, &state));
    ferry_iterator_free(it);
    ASSERT_OK(ferry_iterator_restore(b, ferry_blob_data(state), ferry_blob_size(state), NULL, &it));
    ASSERT_OK(ferry_iterator_next(it, &e)); /* renamed stages: the state still fits */
    ASSERT_EQ(*(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)), 7);
    ferry_element_free(e);
    ferry_iterator_free(it);
    ferry_blob_free(state);
    ferry_dataset_unref(a);
    ferry_dataset_unref(b);
    rt_done(rt);
}

/* ---- user_free ------------------------------------------------------------------------------ */
typedef struct owned {
    atomic_int freed;
} owned;

static void owned_free(void *user) { atomic_fetch_add(&((owned *)user)->freed, 1); }

static int open_range(ferry_context *ctx, const ferry_element *in, ferry_dataset **out, void *user) {
    (void)user;
    int64_t v = *(const int64_t *)ferry_tensor_data(ferry_element_get(in, 0));
    return ferry_dataset_range(ferry_context_runtime(ctx), 0, v, 1, NULL, out);
}

static int gen_next(ferry_context *ctx, void *state, ferry_element **out) {
    (void)state;
    int64_t i = ferry_context_index(ctx);
    if (i >= 5) return FERRY_END;
    ferry_tensor *t;
    int rc = ferry_tensor_scalar_i64(ferry_context_runtime(ctx), i, &t);
    if (rc) return rc;
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out); /* takes t */
}

static const ferry_tensor_spec i64_scalar = {FERRY_DTYPE_INT64, {0, {0}}};

/* Makes one dataset of each kind that keeps `user`, owning it. */
static int make_owner(ferry_runtime *rt, ferry_dataset *r, int kind, owned *u, ferry_dataset **out) {
    switch (kind) {
    case 0: return ferry_dataset_map(r, identity, u, &(ferry_map_options){.user_free = owned_free}, out);
    case 1: return ferry_dataset_filter(r, keep_even, u, &(ferry_filter_options){.user_free = owned_free}, out);
    case 2:
        return ferry_dataset_interleave(
            r, open_range, u,
            &(ferry_interleave_options){.cycle_length = 2, .num_parallel_calls = 2, .user_free = owned_free}, out);
    case 3:
        return ferry_dataset_flat_map(
            r, open_range, u,
            &(ferry_flat_map_options){.num_outputs = 1, .output_specs = &i64_scalar, .user_free = owned_free}, out);
    default:
        return ferry_dataset_generator(
            rt,
            &(ferry_generator_options){
                .next = gen_next, .user = u, .user_free = owned_free, .num_components = 1, .specs = &i64_scalar},
            out);
    }
}

TEST(user_free_runs_once_after_the_last_iterator) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *r;
    ASSERT_OK(ferry_dataset_range(rt, 0, 6, 1, NULL, &r));
    for (int kind = 0; kind < 5; kind++) {
        owned u = {0};
        ferry_dataset *ds;
        ASSERT_OK(make_owner(rt, r, kind, &u, &ds));
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
        ferry_element *e;
        ASSERT_OK(ferry_iterator_next(it, &e));
        ferry_element_free(e);
        ferry_dataset *extra = ferry_dataset_ref(ds);
        ferry_dataset_unref(ds);
        ferry_dataset_unref(extra); /* the iterator still holds the dataset */
        ASSERT_EQ(atomic_load(&u.freed), 0);
        ASSERT_OK(ferry_iterator_next(it, &e)); /* and still uses user */
        ferry_element_free(e);
        ferry_iterator_free(it);
        ASSERT_EQ(atomic_load(&u.freed), 1);
    }
    ferry_dataset_unref(r);
    rt_done(rt);
}

TEST(a_failed_constructor_leaves_user_with_the_caller) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *r, *ds = NULL;
    ASSERT_OK(ferry_dataset_range(rt, 0, 6, 1, NULL, &r));
    owned u = {0};
    ASSERT_EQ(
        ferry_dataset_map(r, identity, &u, &(ferry_map_options){.user_free = owned_free, .reorder_window = -1}, &ds),
        FERRY_EINVAL);
    ASSERT_EQ(
        ferry_dataset_filter(r, keep_even, &u, &(ferry_filter_options){.user_free = owned_free, .name = "\n"}, &ds),
        FERRY_EINVAL);
    ASSERT_EQ(ferry_dataset_interleave(r, open_range, &u,
                                       &(ferry_interleave_options){.block_length = -1, .user_free = owned_free}, &ds),
              FERRY_EINVAL);
    ASSERT_EQ(ferry_dataset_flat_map(r, NULL, &u, &(ferry_flat_map_options){.user_free = owned_free}, &ds),
              FERRY_EINVAL);
    ASSERT_EQ(
        ferry_dataset_generator(
            rt, &(ferry_generator_options){.next = gen_next, .user = &u, .user_free = owned_free, .num_components = 0},
            &ds),
        FERRY_EINVAL);
    ASSERT(ds == NULL);
    ASSERT_EQ(atomic_load(&u.freed), 0);
    ferry_dataset_unref(r);
    rt_done(rt);
}

TEST(parse_example_keeps_its_own_parser) {
    ferry_runtime *rt = rt_new();
    ferry_example_feature f = {.key = "x", .dtype = FERRY_DTYPE_INT64, .kind = FERRY_EXAMPLE_VARLEN};
    ferry_example_parser *ps;
    ASSERT_OK(ferry_example_parser_create(rt, &(ferry_example_spec){.num_features = 1, .features = &f}, &ps));
    ferry_blob *rec;
    const char *json = "{\"features\": {\"x\": {\"int64\": [1, 2, 3]}}}";
    ASSERT_OK(ferry_example_from_json(rt, json, strlen(json), &rec));
    ferry_tensor *t;
    ASSERT_OK(ferry_tensor_create_bytes(rt, 0, NULL, &(const void *){ferry_blob_data(rec)},
                                        &(size_t){ferry_blob_size(rec)}, &t));
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_from_tensors(rt, 1, &t, NULL, &ds));
    ferry_tensor_unref(t);
    ferry_blob_free(rec);
    CHAIN(ds, ferry_dataset_parse_example(ds, ps, NULL, OUT));
    ferry_example_parser_free(ps); /* the dataset holds its own reference */
    ASSERT(strcmp(ferry_dataset_name(ds), "parse_example") == 0);
    ASSERT(strcmp(ferry_dataset_op(ds), "map") == 0);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    ferry_element *e;
    ASSERT_OK(ferry_iterator_next(it, &e));
    ASSERT_EQ(ferry_tensor_num_entries(ferry_element_get(e, 0)), 3);
    ASSERT_EQ(((const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)))[2], 3);
    ferry_element_free(e);
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    rt_done(rt); /* refuses to finish while the parser is alive */
}

/* ---- sentinels ------------------------------------------------------------------------------ */
TEST(sentinels_are_distinct_and_refused_where_another_belongs) {
    int64_t s[] = {FERRY_AUTOTUNE, FERRY_INFINITE, FERRY_UNKNOWN, FERRY_UNKNOWN_DIM, FERRY_UNKNOWN_RANK};
    for (size_t i = 0; i < 5; i++)
        for (size_t j = i + 1; j < 5; j++) ASSERT_NE(s[i], s[j]);
    ferry_runtime *rt = rt_new();
    ferry_dataset *r, *ds = NULL;
    ASSERT_OK(ferry_dataset_range(rt, 0, 6, 1, NULL, &r));
    ASSERT_EQ(ferry_dataset_repeat(r, FERRY_AUTOTUNE, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "FERRY_INFINITE (forever)");
    ASSERT_EQ(ferry_dataset_skip(r, FERRY_UNKNOWN, NULL, &ds), FERRY_EINVAL);
    ASSERT_EQ(ferry_dataset_prefetch(r, FERRY_INFINITE, NULL, &ds), FERRY_EINVAL);
    ASSERT_EQ(ferry_dataset_map(r, identity, NULL, &(ferry_map_options){.num_parallel_calls = FERRY_INFINITE}, &ds),
              FERRY_EINVAL);
    ferry_tensor_spec bad = {FERRY_DTYPE_INT64, {1, {FERRY_UNKNOWN_RANK}}};
    ASSERT_EQ(ferry_dataset_map(r, identity, NULL, &(ferry_map_options){.num_outputs = 1, .output_specs = &bad}, &ds),
              FERRY_EINVAL);
    bad.shape.rank = FERRY_UNKNOWN_DIM;
    ASSERT_EQ(ferry_dataset_map(r, identity, NULL, &(ferry_map_options){.num_outputs = 1, .output_specs = &bad}, &ds),
              FERRY_EINVAL);
    ASSERT(ds == NULL);
    ASSERT_OK(ferry_dataset_repeat(r, FERRY_INFINITE, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_INFINITE);
    CHAIN(ds, ferry_dataset_take(ds, 20, NULL, OUT));
    ASSERT_EQ(drain_count(ds), 20);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(r);
    rt_done(rt);
}
