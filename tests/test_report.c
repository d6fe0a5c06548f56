/*
 * test_report.c - the verdict (ferry_iterator_report and its JSON form) names what limits a
 * pipeline: a map that computes, a map whose calls sleep (as I/O does), a consumer slower than
 * its pipeline, and stages that all run on the consumer's thread. Also the executor's view of a
 * stage's threads in the stats (thread_ns, cpu_ns), the consumer's wait percentiles, the JSON's
 * syntax, and bad arguments.
 *
 * The costs are far apart (a call computes 300 us or sleeps 2 ms; the consumer sleeps 2 ms or
 * takes nothing), so that the verdict holds on a loaded machine: a busy machine stretches every
 * side alike, and a computing thread that loses half its core still computes far more than one
 * that sleeps.
 */
#include "stream_check.h"

#include "json_check.h"

#include <time.h>

/* Computes for `ns` of this thread's CPU time (not wall time: on a loaded machine a wall-time
 * loop would compute less). */
static void burn_cpu(int64_t ns) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    int64_t end = (int64_t)t.tv_sec * 1000000000 + t.tv_nsec + ns;
    volatile double x = 1.0;
    for (;;) {
        for (int i = 0; i < 2000; i++) x = x * 1.0000001 + 1e-9;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
        if ((int64_t)t.tv_sec * 1000000000 + t.tv_nsec >= end) break;
    }
}

static void sleep_ns(int64_t ns) {
    struct timespec t = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (nanosleep(&t, &t) != 0) {
    }
}

static int map_burn(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)ctx;
    burn_cpu(*(const int64_t *)user);
    *out = in;
    return FERRY_OK;
}

static int map_sleep(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    int rc = ferry_context_sleep(ctx, *(const int64_t *)user);
    if (rc) {
        ferry_element_free(in);
        return rc;
    }
    *out = in;
    return FERRY_OK;
}

static const ferry_tensor_spec scalar_i64 = {FERRY_DTYPE_INT64, {0, {0}}};

/* range(n) -> map(fn(user), threads) [-> prefetch(pf) when pf != 0]. */
static ferry_dataset *pipeline(ferry_runtime *rt, int64_t n, ferry_map_fn fn, const int64_t *user, int threads,
                               int64_t pf) {
    ferry_dataset *r, *m, *p = NULL;
    ASSERT_OK(ferry_dataset_range(rt, 0, n, 1, NULL, &r));
    ferry_map_options mo = {.num_parallel_calls = threads, .num_outputs = 1, .output_specs = &scalar_i64};
    ASSERT_OK(ferry_dataset_map(r, fn, (void *)user, &mo, &m));
    if (pf) ASSERT_OK(ferry_dataset_prefetch(m, pf, NULL, &p));
    ferry_dataset_unref(r);
    if (p) ferry_dataset_unref(m);
    return p ? p : m;
}

/* Iterates to the end, the consumer taking consumer_ns per element; returns the report. */
static ferry_report drain_and_report(ferry_dataset *ds, int64_t consumer_ns, ferry_stage_stats *stats, size_t cap,
                                     size_t *nstats, char *json, size_t json_cap) {
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    ferry_report r;
    ASSERT_OK(ferry_iterator_report(it, &r)); /* before the first next: nothing to say */
    ASSERT_EQ(r.limit, FERRY_LIMIT_UNKNOWN);
    ASSERT_EQ(r.elements, 0);
    ferry_element *e;
    int rc;
    while ((rc = ferry_iterator_next(it, &e)) == FERRY_OK) {
        ferry_element_free(e);
        if (consumer_ns) sleep_ns(consumer_ns);
    }
    ASSERT_EQ(rc, FERRY_END);
    ASSERT_OK(ferry_iterator_report(it, &r));
    printf("  %s (%s): %s\n", ferry_limit_name(r.limit), r.stage >= 0 ? "stage" : "-", r.text);
    fflush(stdout);
    if (stats) ASSERT_OK(ferry_iterator_stats(it, stats, cap, nstats));
    if (json) {
        ferry_blob *b;
        ASSERT_OK(ferry_iterator_report_json(it, &b));
        size_t n = ferry_blob_size(b);
        const char *why = json_check(ferry_blob_data(b), n);
        if (why) FAILF("report JSON invalid: %s: %.*s", why, (int)n, (const char *)ferry_blob_data(b));
        ASSERT(n < json_cap);
        memcpy(json, ferry_blob_data(b), n);
        json[n] = '\0';
        ferry_blob_free(b);
    }
    ferry_iterator_free(it);
    return r;
}

static int find_stage(const ferry_stage_stats *s, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(s[i].name, name) == 0) return (int)i;
    return -1;
}

TEST(report_names_a_map_that_computes) {
    ferry_runtime *rt = rt_new();
    const int64_t cost = 300000;
    ferry_dataset *ds = pipeline(rt, 300, map_burn, &cost, 1, 4); /* the prefetch folds into the map */
    ferry_stage_stats s[8];
    size_t n = 0;
    char json[8192];
    ferry_report r = drain_and_report(ds, 0, s, 8, &n, json, sizeof json);
    int map = find_stage(s, n, "map");
    ASSERT(map >= 0);
    ASSERT_EQ(r.limit, FERRY_LIMIT_STAGE_CPU);
    ASSERT_EQ(r.stage, map);
    ASSERT_EQ(r.elements, 300);
    ASSERT(r.consumer_wait_share > 0.5);
    ASSERT(strstr(r.text, "'map'") != NULL);
    ASSERT(strstr(r.text, "CPU-bound") != NULL);
    /* its one thread ran all the time and computed most of it */
    ASSERT(s[map].thread_ns >= 300 * cost);
    ASSERT(s[map].cpu_ns + s[map].cpu_wait_ns > s[map].thread_ns / 2); /* computing, or kept off a core */
    ASSERT(s[map].cpu_ns <= s[map].thread_ns);
    /* the consumer waited for every element: its median wait is about a call's cost */
    ASSERT(r.wait_p50_ns > cost / 4);
    ASSERT(r.wait_p99_ns >= r.wait_p50_ns);
    ASSERT(r.headspace_per_s > 0 && r.bound_per_s >= r.headspace_per_s * 0.5);
    ASSERT(strstr(json, "\"limit\":\"stage_cpu\"") != NULL);
    ASSERT(strstr(json, "\"stage_name\":\"map\"") != NULL);
    ASSERT(strstr(json, "\"name\":\"range\"") != NULL);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(report_names_a_map_whose_calls_wait) {
    ferry_runtime *rt = rt_new();
    const int64_t cost = 2000000;
    ferry_dataset *ds = pipeline(rt, 100, map_sleep, &cost, 2, FERRY_AUTOTUNE);
    ferry_stage_stats s[8];
    size_t n = 0;
    char json[8192];
    ferry_report r = drain_and_report(ds, 0, s, 8, &n, json, sizeof json);
    int map = find_stage(s, n, "map");
    ASSERT(map >= 0);
    ASSERT_EQ(r.limit, FERRY_LIMIT_STAGE_WAIT);
    ASSERT_EQ(r.stage, map);
    ASSERT(r.threads_suggested > 2); /* waiting threads: more than the cores pay */
    ASSERT(strstr(r.text, "waits") != NULL);
    ASSERT(s[map].thread_ns >= 100 * cost / 2);
    ASSERT(s[map].cpu_ns + s[map].cpu_wait_ns < s[map].thread_ns / 3); /* blocked */
    ASSERT(strstr(json, "\"limit\":\"stage_wait\"") != NULL);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(report_names_a_slow_consumer) {
    ferry_runtime *rt = rt_new();
    const int64_t cost = 0;
    /* 200 steps of 5 ms: a start-up of up to 100 ms (threads starting on a loaded machine) is
     * still under a tenth of the time */
    ferry_dataset *ds = pipeline(rt, 200, map_burn, &cost, 1, 4);
    ferry_report r = drain_and_report(ds, 5000000, NULL, 0, NULL, NULL, 0);
    ASSERT_EQ(r.limit, FERRY_LIMIT_CONSUMER);
    ASSERT_EQ(r.stage, -1);
    ASSERT(r.consumer_wait_share < 0.10);
    ASSERT(r.headspace_per_s > r.elements_per_s); /* the pipeline keeps up, with room */
    ASSERT(strstr(r.text, "keeps up") != NULL);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(report_names_inline_stages) {
    ferry_runtime *rt = rt_new();
    const int64_t cost = 200000;
    ferry_dataset *ds = pipeline(rt, 200, map_burn, &cost, 0, 0);
    ferry_stage_stats s[8];
    size_t n = 0;
    char json[8192];
    ferry_report r = drain_and_report(ds, 0, s, 8, &n, json, sizeof json);
    ASSERT_EQ(r.limit, FERRY_LIMIT_INLINE);
    ASSERT_EQ(r.stage, find_stage(s, n, "map"));
    ASSERT(strstr(r.text, "num_parallel_calls") != NULL);
    ASSERT_EQ(s[0].thread_ns, 0); /* nothing ran on ferry's threads */
    ASSERT(strstr(json, "\"limit\":\"inline\"") != NULL);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

TEST(report_bad_arguments_and_names) {
    ferry_runtime *rt = rt_new();
    ferry_report r;
    ASSERT_EQ(ferry_iterator_report(NULL, &r), FERRY_EINVAL);
    ASSERT(strstr(ferry_last_error(), "'it'") != NULL);
    ferry_blob *b = (ferry_blob *)1;
    ASSERT_EQ(ferry_iterator_report_json(NULL, &b), FERRY_EINVAL);
    ASSERT(b == NULL);
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_range(rt, 0, 3, 1, NULL, &ds));
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    ASSERT_EQ(ferry_iterator_report(it, NULL), FERRY_EINVAL);
    ASSERT(strstr(ferry_iterator_error(it), "'out'") != NULL);
    ASSERT_EQ(ferry_iterator_report_json(it, NULL), FERRY_EINVAL);
    ASSERT_OK(ferry_iterator_report_json(it, &b)); /* nothing measured: still valid JSON */
    ASSERT(json_check(ferry_blob_data(b), ferry_blob_size(b)) == NULL);
    ASSERT(memmem(ferry_blob_data(b), ferry_blob_size(b), "\"limit\":\"unknown\"", 17) != NULL);
    ferry_blob_free(b);
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    ASSERT(strcmp(ferry_limit_name(FERRY_LIMIT_MACHINE), "machine") == 0);
    ASSERT(strcmp(ferry_limit_name((ferry_limit)99), "invalid") == 0);
    ASSERT(strcmp(ferry_limit_name((ferry_limit)-1), "invalid") == 0);
    rt_done(rt);
}

/* The JSON checker itself rejects what is not JSON (so that the tests above can fail). */
TEST(json_checker_rejects_bad_text) {
    const char *bad[] = {"", "{", "{\"a\":}", "[1,]", "{\"a\" 1}", "\"\\x\"", "01", "1.", "nul", "[1] 2", "{'a':1}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (json_check(bad[i], strlen(bad[i])) == NULL) FAILF("accepted %s", bad[i]);
    const char *good[] = {"{}", "[]", "{\"a\":[1,-2.5e3,true,false,null,\"x\\u00e9\\n\"]}", " 0 "};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        if (json_check(good[i], strlen(good[i])) != NULL) FAILF("rejected %s", good[i]);
}
