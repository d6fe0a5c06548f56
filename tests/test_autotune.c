/*
 * test_autotune.c - closed-loop AUTOTUNE.
 *
 * The decision (ferry__tuner_window) is fed windows from simulated stages of known cost: the
 * simulation turns the tuner's allocation into a rate and a CPU use, and the test checks where
 * it settles, that it never passes the cpu budget, that it backs out of a change that made
 * things worse, and that buffers stay within the byte budget. Then real pipelines: tuning keeps
 * every element and its order; a map whose calls sleep gets more threads than the cpu budget
 * while the process stays within it; the byte budget holds; the decisions are in
 * ferry_iterator_tuning. Nothing here depends on how fast the machine is: sleeping threads
 * overlap however loaded it is, and CPU per wall second only falls under load.
 */
#include "stream_check.h"

#include "core/core.h"

#include <math.h>
#include <time.h>

/* ---- the decision on simulated stages ------------------------------------------------------- */
/* One stage running ahead, of t seconds per element on a thread, of which c compute; its
 * rate with k threads is rate_of(k) (when set) or k / t, within cpu_budget / c. */
typedef struct sim {
    double t, c;
    double (*rate_of)(int k);
    int par, par_max;
    int64_t buf, buf_max;
    double bytes_per_elem;
    double wait_in, room; /* the buffer's signals */
    double consumer_rate; /* elements/s the consumer takes at most (0: no limit) */
    double consumer_cpu;  /* cores the consumer computes on (a training step), besides the stage */
    double wait_share;    /* of the consumer's time, waiting for the pipeline (0: 0.9, or 0.02
                             when the consumer limits) */
    bool tune_par, tune_buf;
} sim;

/* Feeds the tuner `windows` windows of the simulated stage (node 1 of 2: node 0 is an inline
 * root), applying its moves; returns the CPU per wall second of the worst window. */
static double sim_run(ferry__tuner *tu, sim *s, int budget, int windows) {
    double worst_cpu = 0;
    for (int w = 0; w < windows; w++) {
        double rate = s->rate_of ? s->rate_of(s->par) : s->par / s->t;
        if (!s->rate_of && rate * s->c > budget) rate = budget / s->c;
        bool consumer_limits = s->consumer_rate > 0 && rate >= s->consumer_rate;
        if (consumer_limits) rate = s->consumer_rate;
        double cpu = rate * s->c + s->consumer_cpu;
        if (cpu > worst_cpu) worst_cpu = cpu;
        ferry__mgroup g[3];
        memset(g, 0, sizeof g);
        g[0] = (ferry__mgroup){.owner = -1, .busiest_inline = -1, .t = 1e-7, .c = 1e-7, .k = 1, .kmax = 1};
        g[1] = (ferry__mgroup){.owner = -2, .busiest_inline = -1};
        double busy = rate * s->t / s->par;
        g[2] = (ferry__mgroup){.owner = 1,
                               .busiest_inline = -1,
                               .t = s->t,
                               .c = s->c,
                               .k = s->par,
                               .kmax = 1024,
                               .busy = busy > 1 ? 1 : busy,
                               .cpu_share = s->c / s->t};
        double elems = rate * 0.1;
        ferry__model m = {.g = g,
                          .n = 2,
                          .elems = (int64_t)elems,
                          .wall = 0.1,
                          .wait_share = s->wait_share > 0 ? s->wait_share
                                        : consumer_limits ? 0.02
                                                          : 0.9,
                          .cpu_per_elem = s->c,
                          .bound = fmin(1024 / s->t, budget / s->c),
                          .head = rate,
                          .worst = 1,
                          .any_ahead = true};
        ferry__tune_stage st[2];
        memset(st, 0, sizeof st);
        snprintf(st[0].name, sizeof st[0].name, "range");
        snprintf(st[1].name, sizeof st[1].name, "map");
        st[1] = (ferry__tune_stage){.has_knobs = true,
                                    .tune_par = s->tune_par,
                                    .tune_buf = s->tune_buf,
                                    .measured = true,
                                    .running = rate * s->t,
                                    .queued = 0,
                                    .par = s->par,
                                    .par_max = s->par_max,
                                    .buf = s->buf,
                                    .buf_max = s->buf_max,
                                    .bytes_per_elem = s->bytes_per_elem,
                                    .wait_in_share = s->wait_in,
                                    .room_share = s->room};
        snprintf(st[1].name, sizeof st[1].name, "map");
        ferry__tune_in in = {
            .m = &m, .st = st, .rate = (double)(int64_t)elems / 0.1, .cpu_per_s = cpu, .at_s = 0.1 * w};
        ferry__tune_move mv;
        if (ferry__tuner_window(tu, &in, &mv)) {
            ASSERT_EQ(mv.stage, 1);
            if (mv.par) s->par = mv.par;
            if (mv.buf) s->buf = mv.buf;
        }
    }
    return worst_cpu;
}

static bool log_has(const ferry__tuner *tu, ferry_tune_outcome o) {
    ferry_tune_decision d[FERRY__TUNE_LOG];
    size_t n;
    ferry__tuner_log(tu, d, FERRY__TUNE_LOG, &n);
    for (size_t i = 0; i < n; i++)
        if (d[i].outcome == o) return true;
    return false;
}

TEST(cpu_bound_stage_gets_the_budgets_cores) {
    ferry_runtime *rt = rt_new();
    ferry__tuner tu;
    ASSERT_OK(ferry__tuner_init(&tu, rt, 2, 4, 1 << 20));
    sim s = {.t = 1e-3, .c = 1e-3, .par = 1, .par_max = 32, .buf = 16, .buf_max = 64, .tune_par = true};
    double cpu = sim_run(&tu, &s, 4, 60);
    ASSERT_EQ(s.par, 4);        /* one thread per core of the budget, no more */
    ASSERT_LE(cpu, 4.0 + 1e-9); /* never past the budget */
    ASSERT_EQ(log_has(&tu, FERRY_TUNE_KEPT), true);
    ASSERT_EQ(log_has(&tu, FERRY_TUNE_SETTLED), true);
    ferry__tuner_fini(&tu);
    rt_done(rt);
}

static bool log_says(const ferry__tuner *tu, ferry_tune_outcome o, const char *words) {
    ferry_tune_decision d[FERRY__TUNE_LOG];
    size_t n;
    ferry__tuner_log(tu, d, FERRY__TUNE_LOG, &n);
    for (size_t i = 0; i < n; i++)
        if (d[i].outcome == o && strstr(d[i].why, words)) return true;
    return false;
}

/* A short epoch (fewer windows than a trial takes): one busy thread, the consumer waiting, a core
 * unused: the second thread comes at the first measured window, without a trial; not when the
 * consumer computes, and not a third one. */
TEST(plain_case_gets_its_second_thread_at_once) {
    ferry_runtime *rt = rt_new();
    ferry__tuner tu;
    ASSERT_OK(ferry__tuner_init(&tu, rt, 2, 2, 1 << 20));
    sim s = {.t = 1e-3, .c = 1e-3, .par = 1, .par_max = 32, .buf = 16, .buf_max = 64, .tune_par = true};
    int w = 0;
    while (s.par == 1 && w < 10) sim_run(&tu, &s, 2, 1), w++;
    ASSERT_EQ(s.par, 2);
    ASSERT_LE(w, 2); /* the first window after the settling one */
    ASSERT_EQ(log_says(&tu, FERRY_TUNE_KEPT, "no trial"), true);
    sim_run(&tu, &s, 2, 40);
    ASSERT_EQ(s.par, 2); /* the budget's two cores */
    ferry__tuner_fini(&tu);
    /* four cores: the second thread at once, the third and fourth by trials */
    ASSERT_OK(ferry__tuner_init(&tu, rt, 2, 4, 1 << 20));
    s.par = 1;
    sim_run(&tu, &s, 4, 2);
    ASSERT_EQ(s.par, 2);
    sim_run(&tu, &s, 4, 60);
    ASSERT_EQ(s.par, 4);
    ferry_tune_decision d[FERRY__TUNE_LOG];
    size_t n, plain = 0;
    ferry__tuner_log(&tu, d, FERRY__TUNE_LOG, &n);
    for (size_t i = 0; i < n; i++) plain += strstr(d[i].why, "no trial") != NULL;
    ASSERT_EQ(plain, 1); /* 2 -> 3 and 3 -> 4 were trials */
    ferry__tuner_fini(&tu);
    /* a consumer that computes (waits 30 %): measured by trials, not at once */
    ASSERT_OK(ferry__tuner_init(&tu, rt, 2, 2, 1 << 20));
    sim c = {.t = 1e-3,
             .c = 1e-3,
             .par = 1,
             .par_max = 32,
             .buf = 16,
             .buf_max = 64,
             .tune_par = true,
             .wait_share = 0.3,
             .consumer_cpu = 0.7};
    sim_run(&tu, &c, 2, 2);
    ASSERT_EQ(c.par, 1);
    ASSERT_EQ(log_says(&tu, FERRY_TUNE_KEPT, "no trial"), false);
    ferry__tuner_fini(&tu);
    rt_done(rt);
}

/* The training demo's shape: a CPU-bound stage on one thread and a consumer that computes most
 * of the time, 1.7 of 2 cores busy. A second thread would share the cores with the consumer:
 * not tried. Before a consumer that mostly waits, the same stage's thread is tried. */
TEST(no_thread_that_would_share_the_cores_with_a_computing_consumer) {
    ferry_runtime *rt = rt_new();
    ferry__tuner tu;
    ASSERT_OK(ferry__tuner_init(&tu, rt, 2, 2, 1 << 20));
    sim s = {.t = 250e-6,
             .c = 250e-6,
             .par = 1,
             .par_max = 32,
             .buf = 16,
             .buf_max = 64,
             .tune_par = true,
             .consumer_cpu = 0.7,
             .wait_share = 0.34};
    sim_run(&tu, &s, 2, 30);
    ASSERT_EQ(s.par, 1);
    ASSERT_EQ(log_has(&tu, FERRY_TUNE_KEPT) || log_has(&tu, FERRY_TUNE_BACKED_OUT), false); /* no trial */
    ASSERT(log_says(&tu, FERRY_TUNE_SETTLED, "share the cores with the consumer"));
    ferry__tuner_fini(&tu);
    ASSERT_OK(ferry__tuner_init(&tu, rt, 2, 2, 1 << 20));
    s.par = 1;
    s.consumer_cpu = 0.1;
    s.wait_share = 0.9;
    sim_run(&tu, &s, 2, 30);
    ASSERT_EQ(log_has(&tu, FERRY_TUNE_BACKED_OUT), true); /* tried (and over the budget here) */
    ferry__tuner_fini(&tu);
    rt_done(rt);
}

TEST(blocked_stage_gets_more_threads_than_cores) {
    ferry_runtime *rt = rt_new();
    ferry__tuner tu;
    ASSERT_OK(ferry__tuner_init(&tu, rt, 2, 2, 1 << 20));
    /* 2 ms a call, 20 us of it computing: 16 threads use 0.16 cores */
    sim s = {.t = 2e-3, .c = 2e-5, .par = 1, .par_max = 16, .buf = 16, .buf_max = 64, .tune_par = true};
    sim_run(&tu, &s, 2, 60);
    ASSERT_EQ(s.par, 16); /* doubled to its most: 1, 2, 4, 8, 16 */
    ferry__tuner_fini(&tu);
    rt_done(rt);
}

/* Threads contend past two: three are slower than two. */
static double contended(int k) { return k == 1 ? 1000 : k == 2 ? 1900 : 1500 - 50 * k; }

TEST(backs_out_of_a_change_that_made_it_worse) {
    ferry_runtime *rt = rt_new();
    ferry__tuner tu;
    ASSERT_OK(ferry__tuner_init(&tu, rt, 2, 4, 1 << 20));
    sim s = {.t = 1e-3,
             .c = 1e-3,
             .rate_of = contended,
             .par = 1,
             .par_max = 32,
             .buf = 16,
             .buf_max = 64,
             .tune_par = true};
    sim_run(&tu, &s, 4, 60);
    ASSERT_EQ(s.par, 2);
    ASSERT_EQ(log_has(&tu, FERRY_TUNE_BACKED_OUT), true);
    ferry_tune_decision d[FERRY__TUNE_LOG];
    size_t n;
    ferry__tuner_log(&tu, d, FERRY__TUNE_LOG, &n);
    bool saw = false;
    for (size_t i = 0; i < n; i++)
        if (d[i].outcome == FERRY_TUNE_BACKED_OUT) {
            ASSERT_EQ(d[i].parallelism_before, 2);
            ASSERT_EQ(d[i].parallelism_after, 3);
            ASSERT_EQ(d[i].rate_after < d[i].rate_before, true);
            saw = true;
        }
    ASSERT_EQ(saw, true);
    ferry__tuner_fini(&tu);
    rt_done(rt);
}

/* A blocked stage whose threads each still compute 0.3 of a core: past 6 threads the process
 * would use more than a budget of 2. */
static double rate_03(int k) { return k * 500.0; }

TEST(never_passes_the_cpu_budget) {
    ferry_runtime *rt = rt_new();
    ferry__tuner tu;
    ASSERT_OK(ferry__tuner_init(&tu, rt, 2, 2, 1 << 20));
    sim s = {
        .t = 2e-3, .c = 6e-4, .rate_of = rate_03, .par = 1, .par_max = 64, .buf = 16, .buf_max = 64, .tune_par = true};
    sim_run(&tu, &s, 2, 80);
    ASSERT_EQ(s.par, 4); /* 1, 2, 4 kept; 8 would use 2.4 cores: backed out */
    ASSERT_EQ(log_has(&tu, FERRY_TUNE_BACKED_OUT), true);
    ferry__tuner_fini(&tu);
    rt_done(rt);
}

TEST(buffers_grow_where_the_consumer_waits_within_the_byte_budget) {
    ferry_runtime *rt = rt_new();
    ferry__tuner tu;
    size_t bytes = 1 << 20;
    ASSERT_OK(ferry__tuner_init(&tu, rt, 2, 2, bytes));
    /* threads busy under half the time: no more threads; the consumer waits and the threads
     * wait for room: a bigger buffer; 16 KiB elements: at most 32 of them in half a MiB */
    sim s = {.t = 1e-3,
             .c = 1e-3,
             .rate_of = NULL,
             .par = 8,
             .par_max = 8,
             .buf = 2,
             .buf_max = 4096,
             .bytes_per_elem = 16384,
             .wait_in = 0.3,
             .room = 0.3,
             .tune_par = true,
             .tune_buf = true};
    /* each bigger buffer pays: the simulated rate is the threads' (fixed), so make it rise */
    for (int round = 0; round < 40; round++) {
        int64_t before = s.buf;
        sim_run(&tu, &s, 64, 1);
        if (s.buf > before) s.t *= 0.9; /* the buffer made it faster */
    }
    ASSERT_EQ(s.buf, 32);
    ASSERT_LE((double)s.buf * s.bytes_per_elem, 0.5 * (double)bytes);
    ferry__tuner_fini(&tu);
    rt_done(rt);
}

/* Threads added while the consumer waited go back once it limits, as long as that costs nothing:
 * the consumer takes 2500/s, a thread delivers 1000/s. */
TEST(threads_go_back_when_the_consumer_limits) {
    ferry_runtime *rt = rt_new();
    ferry__tuner tu;
    ASSERT_OK(ferry__tuner_init(&tu, rt, 2, 4, 1 << 20));
    sim s = {.t = 1e-3,
             .c = 1e-3,
             .par = 1,
             .par_max = 32,
             .buf = 16,
             .buf_max = 64,
             .tune_par = true,
             .consumer_rate = 2500};
    sim_run(&tu, &s, 4, 80);
    ASSERT_EQ(s.par, 3); /* 1 -> 2 -> 3 kept; 4 never tried (the consumer limits at 3); 3 -> 2 backed out */
    ferry_tune_decision d[FERRY__TUNE_LOG];
    size_t n;
    ferry__tuner_log(&tu, d, FERRY__TUNE_LOG, &n);
    bool back = false;
    for (size_t i = 0; i < n; i++)
        if (d[i].outcome == FERRY_TUNE_BACKED_OUT && d[i].parallelism_before == 3 && d[i].parallelism_after == 2)
            back = true;
    ASSERT_EQ(back, true);
    ferry__tuner_fini(&tu);
    rt_done(rt);
}

TEST(consumer_bound_pipeline_is_left_alone) {
    ferry_runtime *rt = rt_new();
    ferry__tuner tu;
    ASSERT_OK(ferry__tuner_init(&tu, rt, 2, 4, 1 << 20));
    ferry__mgroup g[3] = {{.owner = -1, .t = 1e-3, .c = 1e-3, .k = 1, .kmax = 1},
                          {.owner = -2},
                          {.owner = 1, .t = 1e-4, .c = 1e-4, .k = 1, .kmax = 1024, .busy = 0.1, .cpu_share = 1}};
    ferry__model m = {.g = g, .n = 2, .elems = 100, .wall = 0.1, .wait_share = 0.02, .bound = 1000, .worst = 1};
    ferry__tune_stage st[2] = {{.par = 0}, {.has_knobs = true, .tune_par = true, .par = 1, .par_max = 32}};
    ferry__tune_in in = {.m = &m, .st = st, .rate = 1000, .cpu_per_s = 1.1};
    ferry__tune_move mv;
    for (int w = 0; w < 20; w++) ASSERT_EQ(ferry__tuner_window(&tu, &in, &mv), false);
    ASSERT_EQ(log_has(&tu, FERRY_TUNE_SETTLED), true);
    ferry__tuner_fini(&tu);
    rt_done(rt);
}

TEST(grant_follows_the_process_cpu) {
    ferry__tune_stage st[2] = {{.par = 0}, {.has_knobs = true, .par = 16, .running = 2, .queued = 13.6}};
    /* tasks wait for workers, the process uses 0.1 cores: grant them */
    ASSERT_EQ(ferry__tune_grant(st, 2, 0, 0.1, 2), 14);
    /* all running: nothing more */
    st[1].running = 16;
    st[1].queued = 0.1;
    ASSERT_EQ(ferry__tune_grant(st, 2, 14, 0.3, 2), 14);
    /* the process used more than the budget: half goes */
    ASSERT_EQ(ferry__tune_grant(st, 2, 14, 2.3, 2), 7);
    /* tasks wait, but the process is near the budget: held */
    st[1].running = 2;
    st[1].queued = 10;
    ASSERT_EQ(ferry__tune_grant(st, 2, 7, 1.8, 2), 7);
    /* never more than the stages' threads */
    ASSERT_EQ(ferry__tune_grant(st, 2, 15, 0.1, 2), 16);
    /* the blocked stage calmed down: 3 threads at work, none waits: 1 over the budget is enough */
    st[1].running = 3;
    st[1].queued = 0;
    ASSERT_EQ(ferry__tune_grant(st, 2, 14, 0.1, 2), 1);
    /* no runtime: refused */
    ferry__tuner tu;
    ASSERT_EQ(ferry__tuner_init(&tu, NULL, 2, 2, 0), FERRY_EINVAL);
    ferry__tuner_fini(&tu);
}

/* ---- real pipelines ------------------------------------------------------------------------- */
static void sleep_ns(int64_t ns) {
    struct timespec t = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (nanosleep(&t, &t) != 0) {
    }
}

/* Sleeps *user ns in the user's own blocking call (ferry cannot see it), then passes the element. */
static int map_sleep(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)ctx;
    sleep_ns(*(const int64_t *)user);
    *out = in;
    return FERRY_OK;
}

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double wall_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static ferry_dataset *sleeping_pipeline(ferry_runtime *rt, int64_t n, const int64_t *sleep, int64_t pf) {
    ferry_dataset *r, *m, *p;
    ASSERT_OK(ferry_dataset_range(rt, 0, n, 1, NULL, &r));
    ferry_map_options mo = {.num_parallel_calls = FERRY_AUTOTUNE};
    ASSERT_OK(ferry_dataset_map(r, map_sleep, (void *)sleep, &mo, &m));
    ASSERT_OK(ferry_dataset_prefetch(m, pf, NULL, &p));
    ferry_dataset_unref(r);
    ferry_dataset_unref(m);
    return p;
}

TEST(sleeping_map_gets_more_threads_than_cores_and_keeps_its_order) {
    ferry_runtime_options ro = {.cpu_budget = 2};
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(&ro, &rt));
    int64_t sleep = 1000000; /* 1 ms */
    int64_t n = 30000;
    ferry_dataset *p = sleeping_pipeline(rt, n, &sleep, FERRY_AUTOTUNE);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(p, NULL, &it));
    double w0 = wall_now(), c0 = cpu_now();
    int64_t i = 0, most = 0;
    ferry_stage_stats s[4];
    size_t cnt;
    for (;; i++) {
        ferry_element *e;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) break;
        ASSERT_OK(rc);
        ASSERT_EQ(*(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)), i); /* order kept */
        ferry_element_free(e);
        if ((i & 255) == 0) {
            ASSERT_OK(ferry_iterator_stats(it, s, 4, &cnt));
            for (size_t k = 0; k < cnt && k < 4; k++)
                if (!strcmp(s[k].name, "map") && s[k].parallelism > most) most = s[k].parallelism;
            if (most > 2 * ro.cpu_budget) break; /* what this test waits for */
        }
    }
    double wall = wall_now() - w0, cpu = cpu_now() - c0;
    if (most <= 2 * ro.cpu_budget) { /* say what the tuner decided before failing */
        ferry_tune_decision dd[32];
        size_t nd = 0;
        ASSERT_OK(ferry_iterator_tuning(it, dd, 32, &nd));
        for (size_t k = 0; k < nd && k < 32; k++)
            fprintf(stderr, "  %.2f s %s: %s (%.0f -> %.0f/s)\n", dd[k].at_s, ferry_tune_outcome_name(dd[k].outcome),
                    dd[k].why, dd[k].rate_before, dd[k].rate_after);
        fprintf(stderr, "  process CPU/wall %.2f over %.1f s\n", cpu / wall, wall);
    }
    ASSERT_EQ(most > 2 * ro.cpu_budget, true); /* blocked threads beyond the cores */
    ASSERT_LE(cpu / wall, 2.1);                /* the process within its budget */
    ferry_tune_decision d[32];
    ASSERT_OK(ferry_iterator_tuning(it, d, 32, &cnt));
    ASSERT_EQ(cnt >= 2, true);
    bool kept = false;
    for (size_t k = 0; k < cnt && k < 32; k++)
        kept |= d[k].outcome == FERRY_TUNE_KEPT && d[k].parallelism_after > d[k].parallelism_before;
    ASSERT_EQ(kept, true);
    ASSERT_STR_CONTAINS(d[0].why, "map");
    ferry_blob *json;
    ASSERT_OK(ferry_iterator_report_json(it, &json));
    ASSERT_STR_CONTAINS((const char *)ferry_blob_data(json), "\"autotune\":[");
    ferry_blob_free(json);
    ferry_iterator_free(it);
    /* The dataset's next iterator (the next epoch's) starts where this one's tuner got to: the
     * map's threads it kept (at least 4: 1 -> 2 -> 4 were kept before 8 was tried), not the
     * starting cpu_budget - 1. */
    ASSERT_OK(ferry_iterator_create(p, NULL, &it));
    int64_t par = 0;
    for (i = 0; i < 4 && par <= ro.cpu_budget; i++) {
        ferry_element *e;
        ASSERT_OK(ferry_iterator_next(it, &e));
        ASSERT_EQ(*(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)), i);
        ferry_element_free(e);
        ASSERT_OK(ferry_iterator_stats(it, s, 4, &cnt));
        for (size_t k = 0; k < cnt && k < 4; k++)
            if (!strcmp(s[k].name, "map")) par = s[k].parallelism;
    }
    ASSERT_EQ(par > ro.cpu_budget, true);
    ferry_iterator_free(it);
    ferry_dataset_unref(p);
    rt_done(rt);
}

/* i -> 16 KiB of float32. */
static int map_big(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)user;
    int64_t v = *(const int64_t *)ferry_tensor_data(ferry_element_get(in, 0));
    ferry_element_free(in);
    const int64_t dims[1] = {4096};
    ferry_tensor *t;
    int rc = ferry_tensor_create(ferry_context_runtime(ctx), FERRY_DTYPE_FLOAT32, 1, dims, &t);
    if (rc) return rc;
    float *f = ferry_tensor_mutable_data(t);
    for (int k = 0; k < 4096; k++) f[k] = (float)v;
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out);
}

TEST(tuned_pipeline_keeps_the_byte_budget_and_every_element) {
    size_t budget = 256 << 10;
    ferry_runtime_options ro = {.cpu_budget = 2, .memory_budget = budget};
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(&ro, &rt));
    ferry_dataset *r, *m, *p;
    ASSERT_OK(ferry_dataset_range(rt, 0, 20000, 1, NULL, &r));
    static const ferry_tensor_spec spec = {FERRY_DTYPE_FLOAT32, {1, {4096}}};
    ferry_map_options mo = {.num_parallel_calls = FERRY_AUTOTUNE, .num_outputs = 1, .output_specs = &spec};
    ASSERT_OK(ferry_dataset_map(r, map_big, NULL, &mo, &m));
    ASSERT_OK(ferry_dataset_prefetch(m, FERRY_AUTOTUNE, NULL, &p));
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(p, NULL, &it));
    int64_t i = 0;
    for (;; i++) {
        ferry_element *e;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) break;
        ASSERT_OK(rc);
        ASSERT_EQ((int64_t)((const float *)ferry_tensor_data(ferry_element_get(e, 0)))[4095], i);
        ferry_element_free(e);
        if ((i & 63) == 0) sleep_ns(200000); /* a consumer that is sometimes slow */
    }
    ASSERT_EQ(i, 20000);
    ferry_runtime_stats rs;
    ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
    ASSERT_LE(rs.budget_used_peak, budget + 16384 + 64); /* the budget, and the one element forced */
    ferry_iterator_free(it);
    ferry_dataset_unref(p);
    ferry_dataset_unref(m);
    ferry_dataset_unref(r);
    rt_done(rt);
}

TEST(tuning_log_arguments) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *r;
    ASSERT_OK(ferry_dataset_range(rt, 0, 10, 1, NULL, &r));
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(r, NULL, &it));
    size_t n = 99;
    ferry_tune_decision d[2];
    ASSERT_OK(ferry_iterator_tuning(it, d, 2, &n));
    ASSERT_EQ(n, 0); /* nothing asked for AUTOTUNE */
    ASSERT_EQ(ferry_iterator_tuning(NULL, d, 2, &n), FERRY_EINVAL);
    ASSERT_EQ(ferry_iterator_tuning(it, d, 2, NULL), FERRY_EINVAL);
    ASSERT_EQ(ferry_iterator_tuning(it, NULL, 2, &n), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_iterator_error(it), "out");
    ASSERT_OK(ferry_iterator_tuning(it, NULL, 0, &n));
    ASSERT_STR_CONTAINS(ferry_tune_outcome_name(FERRY_TUNE_BACKED_OUT), "backed_out");
    ASSERT_STR_CONTAINS(ferry_tune_outcome_name((ferry_tune_outcome)42), "invalid");
    ferry_iterator_free(it);
    ferry_dataset_unref(r);
    rt_done(rt);
}
