/*
 * test_cache.c - the memory cache: later passes read the cache and not the input (zero copy),
 * a partial first pass leaves no cache, one writer among concurrent iterators, cache under
 * repeat, errors never cached, the byte budget (abandoned caching, release on destroy), and
 * save/restore mid-write and mid-read, into the same pipeline and into a new one (empty cache),
 * and exact resume of random inputs under cache -> repeat (memory and file caches, restored into
 * pipelines built anew at every position, with the file kept or gone), whatever the file's path.
 */
#include <pthread.h>

#include "runner.h"

#include "element_stream.h"

/* ---- helpers ------------------------------------------------------------------------------ */
/* Passes that gave up caching for lack of budget (src/ops/cache.c). */
int64_t ferry__cache_abandoned(const ferry_dataset *ds);

/* Element i: (int64 scalar i, bytes scalar "v<i>"). */
static int make_pair(ferry_runtime *rt, int64_t i, ferry_element **out) {
    ferry_tensor *t[2];
    int rc = ferry_tensor_scalar_i64(rt, i, &t[0]);
    if (rc) return rc;
    char buf[32];
    snprintf(buf, sizeof buf, "v%lld", (long long)i);
    const char *strs[1] = {buf};
    t[1] = str_tensor(rt, 0, NULL, strs);
    return ferry_element_create(rt, 2, t, out);
}

static const ferry_tensor_spec pair_specs[2] = {{FERRY_DTYPE_INT64, {.rank = 0}}, {FERRY_DTYPE_BYTES, {.rank = 0}}};
static const ferry_tensor_spec kb_spec = {FERRY_DTYPE_FLOAT32, {.rank = 1, .dims = {250}}};

static ferry_dataset *cached(ferry_dataset *in) {
    ferry_dataset *c;
    ASSERT_OK(ferry_dataset_cache(in, NULL, &c));
    return c;
}

/* Reads a pass of pairs, checking values 0..n-1 in order; returns the data pointer of the
 * int64 component of element `probe` (to compare buffers across passes). */
static const void *read_pairs(ferry_dataset *ds, int64_t n, int64_t probe) {
    ferry_iterator *it = iter(ds);
    const void *p = NULL;
    for (int64_t i = 0; i < n; i++) {
        ferry_element *e = next_ok(it);
        ASSERT_EQ(i64_at(e, 0, 0), i);
        char w[32];
        snprintf(w, sizeof w, "v%lld", (long long)i);
        assert_str(e, 1, 0, w);
        if (i == probe) p = ferry_tensor_data(ferry_element_get(e, 0));
        ferry_element_free(e);
    }
    expect_end(it);
    ferry_iterator_free(it);
    return p;
}

TEST(cache_second_pass_reads_the_cache) {
    ferry_runtime *rt = rt_new();
    src s = {.n = 10, .make = make_pair};
    ferry_dataset *g = src_dataset(rt, &s, 2, pair_specs, 10), *c = cached(g);
    ASSERT_EQ(ferry_dataset_cardinality(c), 10);
    ASSERT(strcmp(ferry_dataset_name(c), "cache") == 0);
    read_pairs(c, 10, 3);
    ASSERT_EQ(s.calls, 11); /* 10 elements and the END */
    const void *p1 = read_pairs(c, 10, 3);
    const void *p2 = read_pairs(c, 10, 3);
    ASSERT_EQ(s.calls, 11); /* the input was not touched again */
    ASSERT(p1 == p2);       /* the same tensors, shared: zero copy */
    ferry_runtime_stats rs;
    ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
    ASSERT(rs.budget_used > 0); /* committed bytes are counted... */
    ferry_dataset_unref(c);
    ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
    ASSERT_EQ(rs.budget_used, 0); /* ...until the dataset goes */
    ferry_dataset_unref(g);
    rt_done(rt);
}

TEST(cache_partial_first_pass_is_discarded) {
    ferry_runtime *rt = rt_new();
    src s = {.n = 10, .make = make_pair};
    ferry_dataset *g = src_dataset(rt, &s, 2, pair_specs, 10), *c = cached(g);
    ferry_iterator *it = iter(c);
    for (int i = 0; i < 4; i++) ferry_element_free(next_ok(it));
    ferry_iterator_free(it); /* destroyed early: nothing is committed */
    ferry_runtime_stats rs;
    ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
    ASSERT_EQ(rs.budget_used, 0);
    ASSERT_EQ(s.calls, 4);
    read_pairs(c, 10, 0); /* a full pass from the input, with the right data */
    ASSERT_EQ(s.calls, 4 + 11);
    read_pairs(c, 10, 0);
    ASSERT_EQ(s.calls, 4 + 11);
    ferry_dataset_unref(c);
    ferry_dataset_unref(g);
    rt_done(rt);
}

TEST(cache_concurrent_iterators_one_writer) {
    ferry_runtime *rt = rt_new();
    src s = {.n = 10, .make = make_pair};
    ferry_dataset *g = src_dataset(rt, &s, 2, pair_specs, 10), *c = cached(g);
    ferry_iterator *a = iter(c), *b = iter(c); /* a writes, b passes through */
    for (int64_t i = 0; i < 10; i++) {
        ferry_element *ea = next_ok(a), *eb = next_ok(b);
        ASSERT_EQ(i64_at(ea, 0, 0), i);
        ASSERT_EQ(i64_at(eb, 0, 0), i);
        ferry_element_free(ea);
        ferry_element_free(eb);
    }
    expect_end(b);
    expect_end(a);
    ferry_iterator_free(a);
    ferry_iterator_free(b);
    int64_t calls = s.calls;
    read_pairs(c, 10, 0);
    ASSERT_EQ(s.calls, calls);
    ferry_dataset_unref(c);
    ferry_dataset_unref(g);
    rt_done(rt);
}

TEST(cache_under_repeat) {
    ferry_runtime *rt = rt_new();
    src s = {.n = 10, .make = make_pair};
    ferry_dataset *g = src_dataset(rt, &s, 2, pair_specs, 10), *c = cached(g), *rep;
    ASSERT_OK(ferry_dataset_repeat(c, 3, NULL, &rep));
    ASSERT_EQ(ferry_dataset_cardinality(rep), 30);
    ferry_iterator *it = iter(rep);
    for (int64_t i = 0; i < 30; i++) {
        ferry_element *e = next_ok(it);
        ASSERT_EQ(i64_at(e, 0, 0), i % 10);
        ferry_element_free(e);
    }
    expect_end(it);
    ferry_iterator_free(it);
    ASSERT_EQ(s.calls, 11); /* epochs 2 and 3 came from the cache */
    check_resume_everywhere(rep, 0);
    ferry_dataset_unref(rep);
    ferry_dataset_unref(c);
    ferry_dataset_unref(g);
    rt_done(rt);
}

TEST(cache_errors_are_not_cached) {
    ferry_runtime *rt = rt_new();
    src s = {.n = 6, .make = make_pair, .errors = {3}, .nerrors = 1};
    ferry_dataset *g = src_dataset(rt, &s, 2, pair_specs, 6), *c = cached(g);
    for (int pass = 0; pass < 2; pass++) {
        ferry_iterator *it = iter(c);
        for (int64_t i = 0; i < 6; i++) {
            ferry_element *e = NULL;
            if (i == 3) {
                ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_EUSER);
                ASSERT_STR_CONTAINS(ferry_iterator_error(it), "bad element 3");
                continue;
            }
            e = next_ok(it);
            ASSERT_EQ(i64_at(e, 0, 0), i);
            ferry_element_free(e);
        }
        expect_end(it);
        ferry_iterator_free(it);
        ASSERT_EQ(s.calls, 7 * (pass + 1)); /* every pass reads the input: nothing was committed */
    }
    ferry_runtime_stats rs;
    ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
    ASSERT_EQ(rs.budget_used, 0);
    ferry_dataset_unref(c);
    ferry_dataset_unref(g);
    rt_done(rt);
}

TEST(cache_over_budget_passes_through) {
    ferry_runtime_options ro = {.memory_budget = 5500};
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(&ro, &rt));
    src s = {.n = 10, .make = make_kb};
    ferry_dataset *g = src_dataset(rt, &s, 1, &kb_spec, 10), *c = cached(g);
    for (int pass = 0; pass < 2; pass++) {
        ferry_iterator *it = iter(c);
        for (int64_t i = 0; i < 10; i++) {
            ferry_element *e = next_ok(it);
            ASSERT_EQ((int64_t)((const float *)ferry_tensor_data(ferry_element_get(e, 0)))[0], i);
            ferry_element_free(e);
        }
        expect_end(it);
        ferry_iterator_free(it);
        ASSERT_EQ(ferry__cache_abandoned(c), pass + 1);
        ASSERT_EQ(s.calls, 11 * (pass + 1));
        ferry_runtime_stats rs;
        ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
        ASSERT_EQ(rs.budget_used, 0);
        ASSERT_LE(rs.budget_used_peak, 5500);
    }
    ferry_dataset_unref(c);
    ferry_dataset_unref(g);
    /* Within the budget it caches: 5 elements of 1000 bytes. */
    src s5 = {.n = 5, .make = make_kb};
    g = src_dataset(rt, &s5, 1, &kb_spec, 5);
    c = cached(g);
    ferry_iterator *it = iter(c);
    for (int i = 0; i < 5; i++) ferry_element_free(next_ok(it));
    expect_end(it);
    ferry_iterator_free(it);
    ASSERT_EQ(ferry__cache_abandoned(c), 0);
    ferry_runtime_stats rs;
    ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
    ASSERT_EQ(rs.budget_used, 5000);
    ferry_dataset_unref(c);
    ferry_dataset_unref(g);
    rt_done(rt);
}

TEST(cache_empty_input) {
    ferry_runtime *rt = rt_new();
    src s = {.n = 0, .make = make_pair};
    ferry_dataset *g = src_dataset(rt, &s, 2, pair_specs, 0), *c = cached(g);
    for (int pass = 0; pass < 3; pass++) {
        ferry_iterator *it = iter(c);
        expect_end(it);
        ferry_iterator_free(it);
    }
    ASSERT_EQ(s.calls, 1); /* the first pass committed an empty cache */
    ferry_dataset_unref(c);
    ferry_dataset *bad = NULL;
    ASSERT_EQ(ferry_dataset_cache(NULL, NULL, &bad), FERRY_EINVAL);
    ASSERT_EQ(ferry_dataset_cache(g, NULL, NULL), FERRY_EINVAL);
    ASSERT_OK(ferry_dataset_cache(g, NULL, &bad)); /* "" is the memory cache too */
    ASSERT(strcmp(ferry_dataset_name(bad), "cache") == 0);
    ferry_dataset_unref(bad);
    ferry_dataset_unref(g);
    rt_done(rt);
}

/* Saves at every position p of a pass of `a` and restores both into `a` and into `b`, an
 * identical pipeline whose cache is empty (as in a new process). */
static void check_resume_both(ferry_dataset *a, ferry_dataset *b, const stream *ref) {
    static stream got;
    for (int p = 0; p <= ref->n; p++) {
        ferry_iterator *it = iter(a);
        for (int i = 0; i < p; i++) {
            ferry_element *e = NULL;
            ASSERT_EQ(ferry_iterator_next(it, &e), ref->code[i]);
            ferry_element_free(e);
        }
        ferry_blob *bl;
        ASSERT_OK(ferry_iterator_save(it, &bl));
        for (int k = 0; k < 2; k++) {
            ferry_iterator *r;
            if (ferry_iterator_restore(k ? b : a, ferry_blob_data(bl), ferry_blob_size(bl), NULL, &r) != FERRY_OK)
                FAILF("restore at %d: %s", p, ferry_last_error());
            drain(r, &got);
            assert_tail(ref, p, &got, k ? "restored into a new pipeline" : "restored");
            ferry_iterator_free(r);
        }
        drain(it, &got);
        assert_tail(ref, p, &got, "original after save");
        ferry_iterator_free(it);
        ferry_blob_free(bl);
    }
}

TEST(cache_resume_mid_write_and_mid_read) {
    ferry_runtime *rt = rt_new();
    src sa = {.n = 12, .make = make_pair}, sb = {.n = 12, .make = make_pair};
    ferry_dataset *ga = src_dataset(rt, &sa, 2, pair_specs, 12), *a = cached(ga);
    ferry_dataset *gb = src_dataset(rt, &sb, 2, pair_specs, 12), *b = cached(gb);
    static stream ref;
    ferry_iterator *it = iter(ga);
    drain(it, &ref);
    ferry_iterator_free(it);
    /* Mid-write: save at every position of the first pass over `a` (the writer) and restore
     * into `b`; the writer commits a's cache at its END. */
    ferry_iterator *w = iter(a);
    for (int p = 0; p <= ref.n; p++) {
        ferry_blob *bl;
        ASSERT_OK(ferry_iterator_save(w, &bl));
        ferry_iterator *r;
        ASSERT_OK(ferry_iterator_restore(b, ferry_blob_data(bl), ferry_blob_size(bl), NULL, &r));
        static stream got;
        drain(r, &got);
        assert_tail(&ref, p, &got, "restored mid-write");
        ferry_iterator_free(r);
        ferry_blob_free(bl);
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(w, &e);
        ASSERT_EQ(rc, p < ref.n ? FERRY_OK : FERRY_END);
        ferry_element_free(e);
    }
    ferry_iterator_free(w); /* committed `a` at its END */
    /* The restored passes into `b` passed through: b has no cache yet (a new pass reads the
     * input; it is dropped early, so b stays without a cache). */
    int64_t calls = sb.calls;
    it = iter(b);
    ferry_element_free(next_ok(it));
    ferry_iterator_free(it);
    ASSERT_EQ(sb.calls, calls + 1);
    calls = sa.calls;
    check_resume_both(a, b, &ref); /* mid-read: from a's cache, and by replay where none */
    ASSERT_EQ(sa.calls, calls);    /* restoring into a read its cache only */
    ferry_dataset_unref(a);
    ferry_dataset_unref(b);
    ferry_dataset_unref(ga);
    ferry_dataset_unref(gb);
    rt_done(rt);
}

TEST(cache_resume_with_errors_and_fresh_pipelines) {
    ferry_runtime *rt = rt_new();
    src sa = {.n = 9, .make = make_pair, .errors = {0, 4, 8}, .nerrors = 3};
    ferry_dataset *ga = src_dataset(rt, &sa, 2, pair_specs, 9), *a = cached(ga);
    check_resume_everywhere(a, 0); /* never committed: every pass writes or passes through */
    ferry_dataset_unref(a);
    ferry_dataset_unref(ga);
    rt_done(rt);
}

typedef struct pass_arg {
    ferry_dataset *ds;
    int passes;
    int bad;
} pass_arg;

static void *pass_thread(void *p) {
    pass_arg *a = p;
    for (int k = 0; k < a->passes; k++) {
        ferry_iterator *it;
        if (ferry_iterator_create(a->ds, NULL, &it) != FERRY_OK) {
            a->bad++;
            continue;
        }
        int64_t i = 0;
        ferry_element *e;
        /* Some passes stop early: a partial pass must never leave a wrong cache. */
        int64_t stop = (k % 3 == 2) ? 137 : -1;
        while (i != stop && ferry_iterator_next(it, &e) == FERRY_OK) {
            if (*(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)) != i) a->bad++;
            ferry_element_free(e);
            i++;
        }
        if (stop < 0 && i != 500) a->bad++;
        ferry_iterator_free(it);
    }
    return NULL;
}

TEST(cache_shared_by_threads) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *r, *c, *p;
    ASSERT_OK(ferry_dataset_range(rt, 0, 500, 1, NULL, &r));
    ASSERT_OK(ferry_dataset_prefetch(r, 4, NULL, &p)); /* an input with its own thread */
    c = cached(p);
    pthread_t th[4];
    pass_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (pass_arg){.ds = c, .passes = 12};
        ASSERT_EQ(pthread_create(&th[i], NULL, pass_thread, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ASSERT_EQ(args[i].bad, 0);
    }
    ferry_runtime_stats rs;
    ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
    ASSERT_EQ(rs.budget_used, 500 * 8); /* one committed cache of 500 int64 scalars */
    ferry_dataset_unref(c);
    ferry_dataset_unref(p);
    ferry_dataset_unref(r);
    rt_done(rt);
}

/* ---- resume through a cache, into a freshly built pipeline ---------------------------------- */
/* What a cache holds is its input's first pass, random draws included, and later epochs give
 * exactly that: a state saved at any position and restored into a pipeline built anew (as a new
 * process would, with the memory cache empty and the cache file as the save left it, or gone)
 * goes on with exactly the uninterrupted stream. */
static int draw(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)user;
    ferry_element_free(in);
    ferry_tensor *t;
    int rc = ferry_tensor_scalar_i64(ferry_context_runtime(ctx), (int64_t)(ferry_context_random(ctx) % 1000), &t);
    if (rc) return rc;
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out);
}

/* range(10) -> map(draw) or shuffle(10) -> cache(path) [-> concatenate(range(3))] -> repeat(3).
 * With the tail, a state saved in it holds no cache iterator: the content seed must still be
 * the same in the new process. */
static ferry_dataset *random_cached(ferry_runtime *rt, bool shuffle, const char *path, bool tail) {
    ferry_dataset *r, *x, *c, *out;
    ASSERT_OK(ferry_dataset_range(rt, 0, 10, 1, NULL, &r));
    if (shuffle) ASSERT_OK(ferry_dataset_shuffle(r, 10, NULL, &x));
    else ASSERT_OK(ferry_dataset_map(r, draw, NULL, NULL, &x));
    ASSERT_OK(ferry_dataset_cache(x, &(ferry_cache_options){.path = path}, &c));
    if (tail) {
        ferry_dataset *t, *cc;
        ASSERT_OK(ferry_dataset_range(rt, 100, 103, 1, NULL, &t));
        ASSERT_OK(ferry_dataset_concatenate(c, t, NULL, &cc));
        ferry_dataset_unref(t);
        ferry_dataset_unref(c);
        c = cc;
    }
    ASSERT_OK(ferry_dataset_repeat(c, 3, NULL, &out));
    ferry_dataset_unref(r);
    ferry_dataset_unref(x);
    ferry_dataset_unref(c);
    return out;
}

TEST(cache_resume_into_fresh_pipeline_is_exact) {
    ferry_runtime *rt = rt_new();
    char dir[] = "/tmp/ferry-cache-XXXXXX";
    ASSERT(mkdtemp(dir) != NULL);
    char path[64];
    snprintf(path, sizeof path, "%s/c", dir);
    ferry_iterator_options o = {.seed = 7};
    for (int v = 0; v < 12; v++) {
        bool shuffle = v & 1, file = (v >> 1) % 3 >= 1, remove_file = (v >> 1) % 3 == 2, tail = v >= 6;
        int per = tail ? 13 : 10, total = 3 * per;
        static stream ref, got;
        (void)unlink(path);
        ferry_dataset *ds = random_cached(rt, shuffle, file ? path : NULL, tail);
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(ds, &o, &it));
        drain(it, &ref);
        ferry_iterator_free(it);
        ferry_dataset_unref(ds);
        ASSERT_EQ(ref.n, total);
        for (int e = 1; e < 3; e++) /* later epochs repeat the first: the cache froze it */
            for (int i = 0; i < per; i++) ASSERT_EQ(ref.sig[per * e + i], ref.sig[i]);
        char what[160];
        snprintf(what, sizeof what, "%s -> cache%s%s -> repeat", shuffle ? "shuffle" : "map(draw)",
                 !file         ? ""
                 : remove_file ? "(file, removed before the restore)"
                               : "(file)",
                 tail ? " -> concatenate(range)" : "");
        for (int p = 0; p <= total; p++) {
            (void)unlink(path);
            ds = random_cached(rt, shuffle, file ? path : NULL, tail);
            ASSERT_OK(ferry_iterator_create(ds, &o, &it));
            for (int i = 0; i < p; i++) {
                ferry_element *e = NULL;
                ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_OK);
                ferry_element_free(e);
            }
            ferry_blob *b;
            ASSERT_OK(ferry_iterator_save(it, &b));
            ferry_iterator_free(it);
            ferry_dataset_unref(ds);
            if (remove_file) (void)unlink(path);
            ds = random_cached(rt, shuffle, file ? path : NULL, tail); /* built anew: an empty memory cache */
            ferry_iterator *r;
            if (ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), &o, &r) != FERRY_OK)
                FAILF("%s, restore at %d: %s", what, p, ferry_last_error());
            ferry_blob_free(b);
            drain(r, &got);
            assert_tail(&ref, p, &got, what);
            ferry_iterator_free(r);
            ferry_dataset_unref(ds);
        }
    }
    (void)unlink(path);
    ASSERT_EQ(rmdir(dir), 0);
    rt_done(rt);
}

/* The cache file's place is not part of the pipeline: moving cache(path) to another folder
 * changes no random draw above it, and a state saved with one path restores with the other. */
TEST(cache_path_changes_no_draw) {
    ferry_runtime *rt = rt_new();
    char dir[] = "/tmp/ferry-cache-XXXXXX";
    ASSERT(mkdtemp(dir) != NULL);
    char pa[64], pb[64];
    snprintf(pa, sizeof pa, "%s/a", dir);
    snprintf(pb, sizeof pb, "%s/b", dir);
    ferry_dataset *ds[2];
    for (int k = 0; k < 2; k++) {
        ferry_dataset *r, *c;
        ASSERT_OK(ferry_dataset_range(rt, 0, 20, 1, NULL, &r));
        ASSERT_OK(ferry_dataset_cache(r, &(ferry_cache_options){.path = k ? pb : pa}, &c));
        ASSERT_OK(ferry_dataset_map(c, draw, NULL, NULL, &ds[k]));
        ferry_dataset_unref(r);
        ferry_dataset_unref(c);
    }
    ASSERT_EQ(ferry_dataset_fingerprint(ds[0]), ferry_dataset_fingerprint(ds[1]));
    static stream sa, sb, rest;
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds[0], NULL, &it));
    drain(it, &sa);
    ferry_iterator_free(it);
    ASSERT_OK(ferry_iterator_create(ds[1], NULL, &it));
    drain(it, &sb);
    ferry_iterator_free(it);
    assert_tail(&sa, 0, &sb, "cache at another path");
    ASSERT_OK(ferry_iterator_create(ds[0], NULL, &it));
    for (int i = 0; i < 7; i++) {
        ferry_element *e = NULL;
        ASSERT_OK(ferry_iterator_next(it, &e));
        ferry_element_free(e);
    }
    ferry_blob *b;
    ASSERT_OK(ferry_iterator_save(it, &b));
    ferry_iterator_free(it);
    ASSERT_OK(ferry_iterator_restore(ds[1], ferry_blob_data(b), ferry_blob_size(b), NULL, &it));
    ferry_blob_free(b);
    drain(it, &rest);
    ferry_iterator_free(it);
    assert_tail(&sa, 7, &rest, "restored with the cache at another path");
    for (int k = 0; k < 2; k++) ferry_dataset_unref(ds[k]);
    ASSERT_EQ(unlink(pa), 0);
    ASSERT_EQ(unlink(pb), 0);
    ASSERT_EQ(rmdir(dir), 0);
    rt_done(rt);
}
