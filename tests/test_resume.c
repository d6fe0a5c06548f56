/*
 * test_resume.c - the exact-resume property: for random pipelines over the core ops and random
 * save points, the elements handed out before a save followed by those of an iterator restored
 * from it equal the uninterrupted stream: same values (including the per-element random draws of
 * map functions), same order (shuffle included), same errors in the same positions.
 *
 * Every state is restored into a pipeline built anew from the same description, as a new process
 * would (memory caches empty; cache files as the saving iterator left them, or deleted), and
 * every other one also into the dataset it was saved from. Pipelines cover the memory and the
 * file cache (saved while the file is being written and while it is read), ignore_errors, and
 * errors under batch (a map that fails on some values, then batch, with or without
 * ignore_errors between them).
 *
 * Pipelines are built from a seeded description so a failure prints a reproducible recipe.
 * FERRY_RESUME_PIPELINES scales the number of pipelines (default gives >= 4,000 save points over
 * thread counts 0, 1, 2 and 8).
 */
#include <stdarg.h>
#include <sys/stat.h>

#include "runner.h"

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rnext(rng *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static int rbelow(rng *r, int n) { return (int)(rnext(r) % (uint64_t)n); }

#define CHECK(call)                                                                                                    \
    do {                                                                                                               \
        int rc_ = (call);                                                                                              \
        if (rc_ != FERRY_OK)                                                                                           \
            FAILF("%s: %s (%s)\nrecipe: %s", #call, ferry_last_error(), ferry_error_name(rc_), recipe);                \
    } while (0)

static char recipe[2048];

static void note(const char *fmt, ...) FERRY_PRINTF(1, 2);
static void note(const char *fmt, ...) {
    size_t k = strlen(recipe);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(recipe + k, sizeof recipe - k, fmt, ap);
    va_end(ap);
}

/* Map: every int64 value v becomes v * 1000 + (a per-element random draw % 1000); fails on
 * elements whose first value is 7 mod 23 (when errors are enabled). */
static int map_fn(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    bool errors = user != NULL;
    ferry_runtime *rt = ferry_context_runtime(ctx);
    size_t n = ferry_element_size(in);
    ferry_tensor *outs[8];
    int64_t first = 0;
    for (size_t c = 0; c < n; c++) {
        ferry_tensor *t = ferry_element_get(in, c);
        ferry_shape s = ferry_tensor_shape(t);
        int rc = ferry_tensor_create(rt, FERRY_DTYPE_INT64, s.rank, s.dims, &outs[c]);
        if (rc) {
            for (size_t k = 0; k < c; k++) ferry_tensor_unref(outs[k]);
            ferry_element_free(in);
            return rc;
        }
        const int64_t *src = ferry_tensor_data(t);
        int64_t *dst = ferry_tensor_mutable_data(outs[c]);
        for (int64_t i = 0; i < ferry_tensor_num_entries(t); i++) {
            if (c == 0 && i == 0) first = src[0];
            dst[i] = src[i] * 1000 + (int64_t)(ferry_context_random(ctx) % 1000);
        }
    }
    ferry_element_free(in);
    if (errors && ((first % 23) + 23) % 23 == 7) {
        for (size_t k = 0; k < n; k++) ferry_tensor_unref(outs[k]);
        return ferry_context_fail(ctx, FERRY_EUSER, "value %lld is unlucky", (long long)first);
    }
    return ferry_element_create(rt, n, outs, out);
}

static int keep_fn(ferry_context *ctx, const ferry_element *e, bool *keep, void *user) {
    (void)ctx;
    (void)user;
    const int64_t *v = ferry_tensor_data(ferry_element_get(e, 0));
    *keep = ferry_tensor_num_entries(ferry_element_get(e, 0)) == 0 || (v[0] % 3) != 1;
    return FERRY_OK;
}

/* A digest of an element (or of an error code) for stream comparison. */
static uint64_t digest(ferry_element *e, int rc) {
    uint64_t h = 1469598103934665603ull;
    if (rc != FERRY_OK) return (uint64_t)(uint32_t)rc * 0x9e3779b97f4a7c15ull;
    for (size_t c = 0; c < ferry_element_size(e); c++) {
        ferry_tensor *t = ferry_element_get(e, c);
        int64_t meta[2 + FERRY_MAX_RANK] = {ferry_tensor_dtype(t), ferry_tensor_rank(t)};
        for (int d = 0; d < ferry_tensor_rank(t); d++) meta[2 + d] = ferry_tensor_dim(t, d);
        const uint8_t *p = (const uint8_t *)meta;
        for (size_t i = 0; i < sizeof meta; i++) h = (h ^ p[i]) * 1099511628211ull;
        p = ferry_tensor_data(t);
        for (size_t i = 0; p && i < ferry_tensor_nbytes(t); i++) h = (h ^ p[i]) * 1099511628211ull;
    }
    return h;
}

static ferry_dataset *chain(ferry_dataset *in, ferry_dataset *next) {
    ferry_dataset_unref(in);
    return next;
}

/* The cache files of the pipeline being built (one per file cache op). */
static char cache_dir[64];
static char cache_files[8][96];
static int ncache_files;

static void remove_cache_files(void) {
    for (int i = 0; i < ncache_files; i++) (void)unlink(cache_files[i]);
}

/* Builds a random pipeline (the same one for the same rng state). */
static ferry_dataset *build(ferry_runtime *rt, rng *r, int threads) {
    recipe[0] = 0;
    ncache_files = 0;
    ferry_dataset *ds, *o;
    int64_t n = rbelow(r, 60);
    CHECK(ferry_dataset_range(rt, 0, n, 1, NULL, &ds));
    note("range(%lld)", (long long)n);
    int depth = 1 + rbelow(r, 5);
    bool batched = false;
    for (int d = 0; d < depth; d++) {
        int op = rbelow(r, 17);
        switch (op) {
        case 0:
        case 1: {
            ferry_map_options mo = {
                .num_parallel_calls = threads, .reorder_window = 1 + rbelow(r, 20), .seed = (uint64_t)rbelow(r, 3)};
            bool errors = rbelow(r, 2);
            CHECK(ferry_dataset_map(ds, map_fn, errors ? (void *)1 : NULL, &mo, &o));
            note(" -> map(threads %d, window %d, errors %d)", threads, mo.reorder_window, errors);
            break;
        }
        case 2:
            CHECK(ferry_dataset_filter(ds, keep_fn, NULL, NULL, &o));
            note(" -> filter");
            break;
        case 3:
            if (batched) {
                CHECK(ferry_dataset_unbatch(ds, NULL, &o));
                batched = false;
                note(" -> unbatch");
            } else {
                int64_t b = 1 + rbelow(r, 7);
                bool drop = rbelow(r, 2);
                CHECK(ferry_dataset_batch(ds, b, &(ferry_batch_options){.drop_remainder = drop}, &o));
                batched = true;
                note(" -> batch(%lld, %d)", (long long)b, drop);
            }
            break;
        case 4: {
            ferry_shuffle_options so = {.seed = (uint64_t)rbelow(r, 5), .fill_before_first = rbelow(r, 2)};
            int64_t b = 1 + rbelow(r, 16);
            CHECK(ferry_dataset_shuffle(ds, b, &so, &o));
            note(" -> shuffle(%lld, fill %d)", (long long)b, so.fill_before_first);
            break;
        }
        case 5:
            CHECK(ferry_dataset_repeat(ds, 1 + rbelow(r, 3), NULL, &o));
            note(" -> repeat");
            break;
        case 6: {
            int64_t k = rbelow(r, 40);
            CHECK(ferry_dataset_take(ds, k, NULL, &o));
            note(" -> take(%lld)", (long long)k);
            break;
        }
        case 7: {
            int64_t k = rbelow(r, 10);
            CHECK(ferry_dataset_skip(ds, k, NULL, &o));
            note(" -> skip(%lld)", (long long)k);
            break;
        }
        case 8: {
            int64_t s = 1 + rbelow(r, 4);
            int64_t i = rbelow(r, (int)s);
            CHECK(ferry_dataset_shard(ds, s, i, NULL, &o));
            note(" -> shard(%lld, %lld)", (long long)s, (long long)i);
            break;
        }
        case 9: {
            int64_t k = rbelow(r, 5) == 0 ? 0 : (rbelow(r, 2) ? FERRY_AUTOTUNE : 1 + rbelow(r, 8));
            CHECK(ferry_dataset_prefetch(ds, k, NULL, &o));
            note(" -> prefetch(%lld)", (long long)k);
            break;
        }
        case 10:
            CHECK(ferry_dataset_cache(ds, NULL, &o));
            note(" -> cache");
            break;
        case 14: {
            char *path = cache_files[ncache_files++];
            snprintf(path, sizeof cache_files[0], "%s/c%d", cache_dir, d);
            CHECK(ferry_dataset_cache(ds, &(ferry_cache_options){.path = path}, &o));
            note(" -> cache(file)");
            break;
        }
        case 15:
        case 16: {
            /* errors under batch: a failing map, then batch, maybe with ignore_errors between */
            ferry_map_options mo = {.num_parallel_calls = threads};
            CHECK(ferry_dataset_map(ds, map_fn, (void *)1, &mo, &o));
            ds = chain(ds, o);
            bool ignore = op == 16;
            if (ignore) {
                CHECK(ferry_dataset_ignore_errors(ds, NULL, &o));
                ds = chain(ds, o);
            }
            int64_t b = 1 + rbelow(r, 5);
            CHECK(ferry_dataset_batch(ds, b, NULL, &o));
            batched = true;
            note(" -> map(threads %d, errors 1)%s -> batch(%lld)", threads, ignore ? " -> ignore_errors" : "",
                 (long long)b);
            break;
        }
        case 11:
            CHECK(ferry_dataset_ignore_errors(ds, NULL, &o));
            note(" -> ignore_errors");
            break;
        case 12:
            if (batched) {
                CHECK(ferry_dataset_prefetch(ds, 2, NULL, &o));
                note(" -> prefetch(2)");
            } else {
                CHECK(ferry_dataset_enumerate(ds, &(ferry_enumerate_options){.start = 100}, &o));
                note(" -> enumerate");
            }
            break;
        default: {
            if (batched) {
                CHECK(ferry_dataset_prefetch(ds, 1, NULL, &o));
                note(" -> prefetch(1)");
                break;
            }
            ferry_dataset *other;
            CHECK(ferry_dataset_range(rt, 1000, 1000 + rbelow(r, 10), 1, NULL, &other));
            if (ferry_dataset_num_components(ds) == 1) {
                CHECK(ferry_dataset_concatenate(ds, other, NULL, &o));
                note(" -> concatenate(range)");
            } else {
                ferry_dataset *in[2] = {ds, other};
                CHECK(ferry_dataset_zip(2, in, NULL, &o));
                note(" -> zip(range)");
            }
            ferry_dataset_unref(other);
            break;
        }
        }
        ds = chain(ds, o);
    }
    return ds;
}

/* Reads the whole stream of `it` into digests (bounded). */
static int drain(ferry_iterator *it, uint64_t *out, int cap) {
    int n = 0;
    for (;;) {
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) break;
        if (n >= cap) FAILF("stream longer than %d\nrecipe: %s", cap, recipe);
        out[n++] = digest(e, rc);
        ferry_element_free(e);
    }
    return n;
}

/* Restores state b into ds and compares the rest with full[k..n). */
static void check_restore(ferry_dataset *ds, ferry_blob *b, const uint64_t *full, int k, int n, uint64_t *got, int cap,
                          const char *into) {
    ferry_iterator *r2;
    CHECK(ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), NULL, &r2));
    int m = drain(r2, got, cap);
    ferry_iterator_free(r2);
    if (k + m != n)
        FAILF("save at %d of %d, restored into %s: the stream has %d elements, want %d\nrecipe: %s", k, n, into, m,
              n - k, recipe);
    for (int i = 0; i < m; i++)
        if (got[i] != full[k + i])
            FAILF("save at %d of %d, restored into %s: element %d differs\nrecipe: %s", k, n, into, k + i, recipe);
}

static int check_pipelines(int threads, int pipelines, uint64_t seed0) {
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(NULL, &rt));
    snprintf(cache_dir, sizeof cache_dir, "/tmp/ferry-resume-XXXXXX");
    ASSERT(mkdtemp(cache_dir) != NULL);
    enum { CAP = 4096, TRIES = 40 };
    uint64_t *full = malloc(CAP * sizeof *full), *got = malloc(CAP * sizeof *got);
    int points = 0;
    for (int p = 0; p < pipelines; p++) {
        const rng r0 = {seed0 * 1000003u + (uint64_t)p * 7919u + (uint64_t)threads};
        rng r = r0;
        ferry_dataset *ds = build(rt, &r, threads);
        ferry_iterator_options io = {.seed = 1 + rnext(&r) % 1000};
        ferry_iterator *it;
        CHECK(ferry_iterator_create(ds, &io, &it));
        int n = drain(it, full, CAP);
        ferry_iterator_free(it);
        /* Save points: all of them for short streams, a random sample otherwise. */
        int tries = n + 1 <= TRIES ? n + 1 : TRIES;
        for (int t = 0; t < tries; t++) {
            int k = n + 1 <= TRIES ? t : rbelow(&r, n + 1);
            /* The saving iterator runs over ds (caches filled) or over a pipeline built anew, with
             * the cache files present or not (then it is saved while it writes them). */
            bool fresh_save = rbelow(&r, 2);
            if (ncache_files && rbelow(&r, 2)) remove_cache_files();
            rng rb = r0;
            ferry_dataset *src = fresh_save ? build(rt, &rb, threads) : ferry_dataset_ref(ds);
            CHECK(ferry_iterator_create(src, &io, &it));
            for (int i = 0; i < k; i++) {
                ferry_element *e = NULL;
                int rc = ferry_iterator_next(it, &e);
                if (rc == FERRY_END) FAILF("ended early at %d of %d\nrecipe: %s", i, n, recipe);
                if (digest(e, rc) != full[i]) FAILF("nondeterministic stream at %d\nrecipe: %s", i, recipe);
                ferry_element_free(e);
            }
            ferry_blob *b;
            CHECK(ferry_iterator_save(it, &b));
            ferry_iterator_free(it);
            ferry_dataset_unref(src);
            if (ncache_files && rbelow(&r, 3) == 0) remove_cache_files();
            rb = r0;
            ferry_dataset *fresh = build(rt, &rb, threads); /* as a new process would */
            check_restore(fresh, b, full, k, n, got, CAP, "a pipeline built anew");
            ferry_dataset_unref(fresh);
            if (t % 2 == 0) check_restore(ds, b, full, k, n, got, CAP, "the dataset it was saved from");
            ferry_blob_free(b);
            points++;
        }
        ferry_dataset_unref(ds);
        remove_cache_files();
    }
    free(full);
    free(got);
    ASSERT_EQ(rmdir(cache_dir), 0);
    int rc = ferry_runtime_free(rt);
    if (rc != FERRY_OK) FAILF("runtime not empty: %s", ferry_last_error());
    return points;
}

static int scale(int dflt) {
    const char *e = getenv("FERRY_RESUME_PIPELINES");
    return e && atoi(e) > 0 ? atoi(e) : dflt;
}

TEST(resume_property_threads_0) { printf("  threads 0: %d save points\n", check_pipelines(0, scale(100), 1)); }
TEST(resume_property_threads_1) { printf("  threads 1: %d save points\n", check_pipelines(1, scale(70), 2)); }
TEST(resume_property_threads_2) { printf("  threads 2: %d save points\n", check_pipelines(2, scale(70), 3)); }
TEST(resume_property_threads_8) { printf("  threads 8: %d save points\n", check_pipelines(8, scale(60), 4)); }
