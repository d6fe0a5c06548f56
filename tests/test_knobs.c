/*
 * test_knobs.c - a running stage's parallelism and buffer moved while it runs (the knobs an
 * autotuner turns, core.h's ferry__knobs): the stream stays exactly the same (values, the
 * per-element random draws, errors and their positions), the stats show the values in force,
 * the knobs are clamped to their limits, and stages that do not run ahead have none. Stages:
 * parallel map, map_and_batch, prefetch, parallel interleave.
 */
#include "stream_check.h"

#include "core/core.h"

/* i -> (i, a random draw), failing at every 97th element. */
static int draw(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)user;
    int64_t i = *(const int64_t *)ferry_tensor_data(ferry_element_get(in, 0));
    ferry_element_free(in);
    if (i % 97 == 5) return ferry_context_fail(ctx, FERRY_EUSER, "element %lld fails", (long long)i);
    const int64_t dims[1] = {2};
    ferry_tensor *t;
    int rc = ferry_tensor_create(ferry_context_runtime(ctx), FERRY_DTYPE_INT64, 1, dims, &t);
    if (rc) return rc;
    int64_t *p = ferry_tensor_mutable_data(t);
    p[0] = i;
    p[1] = (int64_t)(ferry_context_random(ctx) % 100000);
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out); /* takes t */
}

static const ferry_tensor_spec draw_spec = {FERRY_DTYPE_INT64, {1, {2}}};

/* range(n) -> map(draw, 4 threads) [-> batch(8)] -> prefetch(pf). */
static ferry_dataset *pipeline(ferry_runtime *rt, int64_t n, bool batched, int64_t pf) {
    ferry_dataset *r, *m, *b = NULL, *p;
    ASSERT_OK(ferry_dataset_range(rt, 0, n, 1, NULL, &r));
    ferry_map_options mo = {.num_parallel_calls = 4, .num_outputs = 1, .output_specs = &draw_spec};
    ASSERT_OK(ferry_dataset_map(r, draw, NULL, &mo, &m));
    if (batched) ASSERT_OK(ferry_dataset_batch(m, 8, NULL, &b));
    ASSERT_OK(ferry_dataset_prefetch(b ? b : m, pf, NULL, &p));
    ferry_dataset_unref(r);
    ferry_dataset_unref(m);
    ferry_dataset_unref(b);
    return p;
}

/* i -> range(1000 i, 1000 i + 7 (i % 9)): inner datasets of different lengths, some empty. */
static int inner_range(ferry_context *ctx, const ferry_element *in, ferry_dataset **out, void *user) {
    (void)user;
    int64_t i = *(const int64_t *)ferry_tensor_data(ferry_element_get(in, 0));
    return ferry_dataset_range(ferry_context_runtime(ctx), 1000 * i, 1000 * i + 7 * (i % 9), 1, NULL, out);
}

/* range(n) -> interleave(inner_range, cycle 4, block 3, 3 threads) -> map(draw, 4 threads) ->
 * prefetch(pf). */
static ferry_dataset *interleaved(ferry_runtime *rt, int64_t n, int64_t pf) {
    ferry_dataset *r, *il, *m, *p;
    ASSERT_OK(ferry_dataset_range(rt, 0, n, 1, NULL, &r));
    const ferry_tensor_spec scalar = {FERRY_DTYPE_INT64, {0, {0}}};
    ferry_interleave_options io = {
        .cycle_length = 4, .block_length = 3, .num_parallel_calls = 3, .num_outputs = 1, .output_specs = &scalar};
    ASSERT_OK(ferry_dataset_interleave(r, inner_range, NULL, &io, &il));
    ferry_map_options mo = {.num_parallel_calls = 4, .num_outputs = 1, .output_specs = &draw_spec};
    ASSERT_OK(ferry_dataset_map(il, draw, NULL, &mo, &m));
    ASSERT_OK(ferry_dataset_prefetch(m, pf, NULL, &p));
    ferry_dataset_unref(r);
    ferry_dataset_unref(il);
    ferry_dataset_unref(m);
    return p;
}

/* Reads the whole stream; with `turn`, moves every stage's knobs every 37 positions. Returns
 * how many times a knob was set. */
static int64_t read_stream(ferry_dataset *ds, bool turn, items *out) {
    ferry_iterator *it;
    ferry_iterator_options o = {.seed = 11};
    ASSERT_OK(ferry_iterator_create(ds, &o, &it));
    ferry__pipe *pipe = ferry__iterator_pipe(it);
    const int pars[] = {1, 3, 2, 4, 1, 9};
    const int64_t bufs[] = {1, 3, 16, 1000000, 64, 2};
    int64_t sets = 0;
    for (int64_t pos = 0;; pos++) {
        if (turn && pos % 37 == 0) {
            int step = (int)(pos / 37);
            for (size_t node = 0; node < pipe->n; node++) {
                int pmax = 0;
                int64_t bmax = 0;
                int par = pars[step % 6];
                int64_t buf = bufs[(step + (int)node) % 6];
                int rc = ferry__pipe_set_knobs(pipe, node, par, buf, &pmax, &bmax);
                if (rc == FERRY_ENOTFOUND) continue;
                ASSERT_OK(rc);
                sets++;
                ferry__node_stats *s = &pipe->nodes[node];
                int64_t want_par = par < pmax ? par : pmax;
                if (pmax > 1 && atomic_load(&s->parallelism) != 0) ASSERT_EQ(atomic_load(&s->parallelism), want_par);
                ASSERT_LE(atomic_load(&s->capacity), bmax);
            }
        }
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) break;
        char buf[ITEM_MAX];
        render(buf, sizeof buf, rc, e);
        items_push(out, buf);
        ferry_element_free(e);
    }
    out->ended = true;
    /* only the stages that run ahead have knobs (read after the stream: the stages are still there) */
    for (size_t node = 0; node < pipe->n; node++) {
        const char *name = pipe->nodes[node].ds->name;
        bool has = ferry__pipe_set_knobs(pipe, node, 0, 0, NULL, NULL) == FERRY_OK;
        bool ahead = strcmp(name, "map") == 0 || strcmp(name, "map_and_batch") == 0 ||
                     strcmp(name, "interleave") == 0 ||
                     (strcmp(name, "prefetch") == 0 &&
                      atomic_load(&pipe->nodes[node].work_ns) >= 0); /* measured: not a pass-through */
        if (has != ahead) FAILF("node %zu (%s): knobs %s", node, name, has ? "present" : "missing");
    }
    ferry_iterator_free(it);
    return sets;
}

static void check_same_under_turning(ferry_dataset *ds, const char *what) {
    items ref = {0}, got = {0};
    read_stream(ds, false, &ref);
    int64_t sets = read_stream(ds, true, &got);
    ASSERT(sets > 0);
    ASSERT_EQ(ref.n, got.n);
    expect_same(&ref, 0, &got, what, 0);
    items_free(&ref);
    items_free(&got);
}

TEST(knobs_move_while_running_and_change_nothing_but_speed) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *a = pipeline(rt, 3000, false, 8);
    check_same_under_turning(a, "range -> map(4) -> prefetch(8)");
    ferry_dataset *b = pipeline(rt, 3001, true, 4);
    check_same_under_turning(b, "range -> map(4) -> batch(8) -> prefetch(4) (map_and_batch)");
    ferry_dataset *c = pipeline(rt, 2000, false, FERRY_AUTOTUNE); /* prefetch adds no stage here */
    check_same_under_turning(c, "range -> map(4) -> prefetch(AUTOTUNE)");
    ferry_dataset *d = interleaved(rt, 300, 5);
    check_same_under_turning(d, "range -> interleave(3) -> map(4) -> prefetch(5)");
    ferry_dataset_unref(a);
    ferry_dataset_unref(b);
    ferry_dataset_unref(c);
    ferry_dataset_unref(d);
    ferry_runtime_stats s;
    ASSERT_OK(ferry_runtime_stats_get(rt, &s));
    ASSERT_LE(s.threads_busy_peak, s.cpu_budget + s.threads_granted_peak);
    rt_done(rt);
}

/* A knob may be moved by another thread than the consumer's while it reads. */
typedef struct turner {
    ferry__pipe *pipe;
    _Atomic int stop;
    int64_t sets;
} turner;

static void *turner_main(void *arg) {
    turner *t = arg;
    for (int k = 0; !atomic_load(&t->stop); k++) {
        for (size_t node = 0; node < t->pipe->n; node++)
            if (ferry__pipe_set_knobs(t->pipe, node, 1 + k % 4, 1 + (k * 7) % 50, NULL, NULL) == FERRY_OK) t->sets++;
        struct timespec d = {0, 20000};
        nanosleep(&d, NULL);
    }
    return NULL;
}

TEST(knobs_moved_from_another_thread) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *ds = pipeline(rt, 5000, true, 6);
    items ref = {0};
    read_stream(ds, false, &ref);
    for (int rep = 0; rep < 3; rep++) {
        ferry_iterator *it;
        ferry_iterator_options o = {.seed = 11};
        ASSERT_OK(ferry_iterator_create(ds, &o, &it));
        turner t = {.pipe = ferry__iterator_pipe(it)};
        pthread_t th;
        ASSERT_EQ(pthread_create(&th, NULL, turner_main, &t), 0);
        items got = {0};
        collect(it, 100000, &got);
        atomic_store(&t.stop, 1);
        pthread_join(th, NULL);
        ASSERT_EQ(ref.n, got.n);
        expect_same(&ref, 0, &got, "knobs moved by another thread", (size_t)rep);
        items_free(&got);
        ferry_iterator_free(it);
    }
    items_free(&ref);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

/* Lowering an interleave's parallelism while its tasks poll a full budget: the tasks that must
 * stop hand their wake-up on to one that may work, so the stream never stalls (a stall here
 * would hang until ctest's timeout). */
TEST(interleave_parallelism_lowered_under_a_full_budget) {
    ferry_runtime_options ro = {.memory_budget = 256}; /* about two elements: tasks poll on it */
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(&ro, &rt));
    ferry_dataset *ds = interleaved(rt, 200, 0);
    items ref = {0};
    read_stream(ds, false, &ref);
    for (int rep = 0; rep < 5; rep++) {
        ferry_iterator *it;
        ferry_iterator_options o = {.seed = 11};
        ASSERT_OK(ferry_iterator_create(ds, &o, &it));
        ferry__pipe *pipe = ferry__iterator_pipe(it);
        items got = {0};
        for (int64_t pos = 0;; pos++) {
            if (pos % 5 == 0)
                for (size_t node = 0; node < pipe->n; node++)
                    if (strcmp(pipe->nodes[node].ds->name, "interleave") == 0)
                        ASSERT_OK(ferry__pipe_set_knobs(pipe, node, (pos / 5) % 2 ? 3 : 1, 0, NULL, NULL));
            ferry_element *e = NULL;
            int rc = ferry_iterator_next(it, &e);
            if (rc == FERRY_END) break;
            char buf[ITEM_MAX];
            render(buf, sizeof buf, rc, e);
            items_push(&got, buf);
            ferry_element_free(e);
        }
        ASSERT_EQ(ref.n, got.n);
        expect_same(&ref, 0, &got, "interleave parallelism moved under a full budget", (size_t)rep);
        items_free(&got);
        ferry_iterator_free(it);
    }
    items_free(&ref);
    ferry_dataset_unref(ds);
    rt_done(rt);
}
