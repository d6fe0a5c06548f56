/*
 * test_executor.c - the runtime's pool (core/executor.c) on its own: tasks run until done, busy
 * workers stay within the cpu budget, a worker blocked on another task does not hold a core, no
 * wake-up is lost, close waits for a running task and drops a queued one, tasks open and close
 * while others run (a stage's parallelism changing), every worker is joined when the last
 * task closes, and a consumer that borrows a core to help stays within the budget and gives its
 * core back while it waits for another stage. Nothing here depends on timing: every test waits for the state it means to check.
 */
#include "runner.h"

#include <pthread.h>
#include <time.h>

#include "core/core.h"

static ferry_runtime *rt_with_budget(int cpu_budget) {
    ferry_runtime_options o = {.cpu_budget = cpu_budget};
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(&o, &rt));
    return rt;
}

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* Polls cond(arg) until it holds; fails after a minute. */
static void wait_until(bool (*cond)(void *), void *arg, const char *what) {
    for (int i = 0; !cond(arg); i++) {
        if (i == 600000) FAILF("waited a minute for %s", what);
        sleep_us(100);
    }
}

static void open_task(ferry_runtime *rt, ferry__task *t, void (*run)(ferry__task *), void *arg) {
    ferry__status st;
    ferry__status_clear(&st);
    int rc = ferry__task_open(&rt->exec, t, run, arg, &st);
    if (rc != FERRY_OK) FAILF("ferry__task_open: %s", st.msg);
}

/* ---- a task that runs a counted amount of work in slices -------------------------------- */
typedef struct counter_task {
    ferry__task task;
    _Atomic int64_t done, runs;
    int64_t target, per_run;
} counter_task;

static void counter_run(ferry__task *t) {
    counter_task *c = t->arg;
    atomic_fetch_add(&c->runs, 1);
    for (int64_t i = 0; i < c->per_run && atomic_load(&c->done) < c->target; i++) atomic_fetch_add(&c->done, 1);
    if (atomic_load(&c->done) < c->target) ferry__task_wake(t); /* more to do: run again */
}

static bool counters_done(void *arg) {
    counter_task *c = arg;
    for (int i = 0; i < 8; i++)
        if (atomic_load(&c[i].done) < c[i].target) return false;
    return true;
}

TEST(tasks_run_until_done_and_workers_are_joined) {
    for (int budget = 1; budget <= 4; budget *= 2) {
        ferry_runtime *rt = rt_with_budget(budget);
        counter_task c[8];
        for (int i = 0; i < 8; i++) {
            atomic_init(&c[i].done, 0);
            atomic_init(&c[i].runs, 0);
            c[i].target = 10000 + 1000 * i;
            c[i].per_run = 7 + i;
            open_task(rt, &c[i].task, counter_run, &c[i]);
        }
        for (int i = 0; i < 8; i++) ferry__task_wake(&c[i].task);
        wait_until(counters_done, c, "every task to finish");
        int workers;
        ferry__exec_counts(&rt->exec, &workers, NULL, NULL);
        ASSERT(workers >= 1 && workers <= budget);
        for (int i = 0; i < 8; i++) {
            ferry__task_close(&c[i].task);
            ASSERT_EQ(atomic_load(&c[i].done), c[i].target);
            ASSERT(atomic_load(&c[i].runs) >= c[i].target / c[i].per_run);
        }
        rt_done(rt); /* threads_live is 0: the last close joined every worker */
    }
}

/* ---- busy workers never exceed the cpu budget ------------------------------------------- */
typedef struct busy_probe {
    ferry__task task[6];
    _Atomic int running, max_running, finished;
    _Atomic int release;
} busy_probe;

static void busy_run(ferry__task *t) {
    busy_probe *p = t->arg;
    int now = atomic_fetch_add(&p->running, 1) + 1;
    int m = atomic_load(&p->max_running);
    while (now > m && !atomic_compare_exchange_weak(&p->max_running, &m, now)) {
    }
    while (!atomic_load(&p->release)) sleep_us(50);
    atomic_fetch_sub(&p->running, 1);
    atomic_fetch_add(&p->finished, 1);
}

static bool two_running(void *arg) { return atomic_load(&((busy_probe *)arg)->running) == 2; }
static bool six_finished(void *arg) { return atomic_load(&((busy_probe *)arg)->finished) == 6; }

TEST(busy_workers_stay_within_the_cpu_budget) {
    ferry_runtime *rt = rt_with_budget(2);
    busy_probe p;
    memset(&p, 0, sizeof p);
    for (int i = 0; i < 6; i++) open_task(rt, &p.task[i], busy_run, &p);
    for (int i = 0; i < 6; i++) ferry__task_wake(&p.task[i]);
    wait_until(two_running, &p, "two tasks to run");
    sleep_us(20000); /* time for a third worker to start, were one allowed to */
    ASSERT_EQ(atomic_load(&p.max_running), 2);
    int workers;
    ferry__exec_counts(&rt->exec, &workers, NULL, NULL);
    ASSERT_LE(workers, 2);
    atomic_store(&p.release, 1);
    wait_until(six_finished, &p, "every task to finish");
    ASSERT_EQ(atomic_load(&p.max_running), 2);
    for (int i = 0; i < 6; i++) ferry__task_close(&p.task[i]);
    rt_done(rt);
}

/* ---- a worker blocked on another task does not hold the only core ----------------------- */
typedef struct chain {
    ferry_runtime *rt;
    ferry__task waiter, maker;
    ferry__mutex mu;
    ferry__cond cv;
    bool made, waited;
    _Atomic int max_busy_seen;
} chain;

static void maker_run(ferry__task *t) {
    chain *c = t->arg;
    int busy;
    ferry__exec_counts(&c->rt->exec, NULL, &busy, NULL);
    atomic_store(&c->max_busy_seen, busy);
    ferry__mutex_lock(&c->mu);
    c->made = true;
    ferry__cond_broadcast(&c->cv);
    ferry__mutex_unlock(&c->mu);
}

static void waiter_run(ferry__task *t) {
    chain *c = t->arg;
    ferry__task_wake(&c->maker); /* needs a worker while this one waits */
    bool blocked = ferry__exec_block_begin(&c->rt->exec);
    ASSERT(blocked);
    ferry__mutex_lock(&c->mu);
    while (!c->made) ferry__cond_wait(&c->cv, &c->mu);
    c->waited = true;
    ferry__mutex_unlock(&c->mu);
    ferry__exec_block_end(&c->rt->exec, blocked, true);
}

static bool chain_done(void *arg) {
    chain *c = arg;
    ferry__mutex_lock(&c->mu);
    bool d = c->waited;
    ferry__mutex_unlock(&c->mu);
    return d;
}

TEST(a_blocked_worker_lets_another_run) {
    ferry_runtime *rt = rt_with_budget(1);
    chain c;
    memset(&c, 0, sizeof c);
    c.rt = rt;
    ASSERT_EQ(ferry__mutex_init(&c.mu), 0);
    ASSERT_EQ(ferry__cond_init(&c.cv), 0);
    open_task(rt, &c.waiter, waiter_run, &c);
    open_task(rt, &c.maker, maker_run, &c);
    ferry__task_wake(&c.waiter);
    wait_until(chain_done, &c, "the waiting task to see the other's work");
    ASSERT_EQ(atomic_load(&c.max_busy_seen), 1); /* the waiter was not counted busy */
    ASSERT(!ferry__exec_block_begin(&rt->exec)); /* not a worker: nothing to mark */
    ferry__task_close(&c.waiter);
    ferry__task_close(&c.maker);
    ferry__cond_destroy(&c.cv);
    ferry__mutex_destroy(&c.mu);
    rt_done(rt);
}

/* ---- no lost wake-up: a stream of small pieces of work, each announced by one wake ------- */
typedef struct stream {
    ferry__task task;
    _Atomic int64_t posted, taken;
} stream;

static void stream_run(ferry__task *t) {
    stream *s = t->arg;
    /* Takes what is posted and returns: a post after the load below must cause another run. */
    int64_t p = atomic_load(&s->posted);
    if (atomic_load(&s->taken) < p) atomic_store(&s->taken, p);
}

static bool stream_caught_up(void *arg) {
    stream *s = arg;
    return atomic_load(&s->taken) == atomic_load(&s->posted);
}

TEST(no_wake_up_is_lost) {
    for (int budget = 1; budget <= 2; budget++) {
        ferry_runtime *rt = rt_with_budget(budget);
        stream s;
        atomic_init(&s.posted, 0);
        atomic_init(&s.taken, 0);
        open_task(rt, &s.task, stream_run, &s);
        for (int i = 0; i < 200000; i++) {
            atomic_fetch_add(&s.posted, 1);
            ferry__task_wake(&s.task);
            if (i % 1000 == 999) wait_until(stream_caught_up, &s, "the task to take every post");
        }
        wait_until(stream_caught_up, &s, "the task to take every post");
        ferry__task_close(&s.task);
        rt_done(rt);
    }
}

/* ---- close waits for a running task; a queued task closed never runs ------------------- */
typedef struct gate {
    ferry__task task;
    _Atomic int entered, release, returned, runs;
} gate;

static void gate_run(ferry__task *t) {
    gate *g = t->arg;
    atomic_fetch_add(&g->runs, 1);
    atomic_store(&g->entered, 1);
    while (!atomic_load(&g->release)) sleep_us(100);
    sleep_us(2000); /* a close that did not wait would return within this */
    atomic_store(&g->returned, 1);
}

static bool gate_entered(void *arg) { return atomic_load(&((gate *)arg)->entered) == 1; }

typedef struct closer {
    ferry__task *task;
    _Atomic int done;
} closer;

static void *close_thread(void *arg) {
    closer *c = arg;
    ferry__task_close(c->task);
    atomic_store(&c->done, 1);
    return NULL;
}

TEST(close_waits_for_a_running_task_and_drops_a_queued_one) {
    ferry_runtime *rt = rt_with_budget(1);
    gate a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    open_task(rt, &a.task, gate_run, &a);
    open_task(rt, &b.task, gate_run, &b);
    ferry__task_wake(&a.task);
    wait_until(gate_entered, &a, "the first task to run");
    ferry__task_wake(&b.task);  /* queued behind a on the only core */
    ferry__task_wake(&a.task);  /* notified while running: would run again after it returns */
    ferry__task_close(&b.task); /* queued: returns at once, b never runs */
    ASSERT_EQ(atomic_load(&b.runs), 0);
    closer c = {.task = &a.task};
    atomic_init(&c.done, 0);
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, close_thread, &c), 0);
    sleep_us(5000);
    ASSERT_EQ(atomic_load(&c.done), 0); /* a still runs: close waits */
    atomic_store(&a.release, 1);
    pthread_join(th, NULL);
    ASSERT_EQ(atomic_load(&a.returned), 1);
    ASSERT_EQ(atomic_load(&a.runs), 1); /* closed while notified: never ran again */
    ASSERT_EQ(atomic_load(&b.runs), 0);
    rt_done(rt);
}

/* ---- tasks open and close while others run (parallelism changing), many cycles ---------- */
static bool counter_done(void *arg) {
    counter_task *c = arg;
    return atomic_load(&c->done) >= c->target;
}

TEST(tasks_open_and_close_while_others_run) {
    ferry_runtime *rt = rt_with_budget(2);
    counter_task steady;
    atomic_init(&steady.done, 0);
    atomic_init(&steady.runs, 0);
    steady.target = INT64_MAX;
    steady.per_run = 100;
    open_task(rt, &steady.task, counter_run, &steady);
    ferry__task_wake(&steady.task);
    for (int cycle = 0; cycle < 500; cycle++) {
        counter_task extra[3];
        int n = 1 + cycle % 3;
        for (int i = 0; i < n; i++) {
            atomic_init(&extra[i].done, 0);
            atomic_init(&extra[i].runs, 0);
            extra[i].target = cycle % 2 ? 1000 : INT64_MAX; /* finished or still running at close */
            extra[i].per_run = 10;
            open_task(rt, &extra[i].task, counter_run, &extra[i]);
            ferry__task_wake(&extra[i].task);
        }
        if (cycle % 2)
            for (int i = 0; i < n; i++) wait_until(counter_done, &extra[i], "a task to finish");
        for (int i = 0; i < n; i++) ferry__task_close(&extra[i].task);
    }
    int64_t before = atomic_load(&steady.done);
    /* the steady task still runs after all that */
    for (int i = 0; atomic_load(&steady.done) == before; i++) {
        if (i == 600000) FAILF("the steady task stopped running");
        sleep_us(100);
    }
    ferry__task_close(&steady.task);
    rt_done(rt);
}

/* ---- the last close joins the workers; a new task afterwards starts them again ---------- */
TEST(workers_stop_with_the_last_task_and_start_again) {
    ferry_runtime *rt = rt_with_budget(2);
    for (int round = 0; round < 200; round++) {
        counter_task c;
        atomic_init(&c.done, 0);
        atomic_init(&c.runs, 0);
        c.target = 100;
        c.per_run = 10;
        open_task(rt, &c.task, counter_run, &c);
        ferry_runtime_stats s;
        ASSERT_OK(ferry_runtime_stats_get(rt, &s));
        ASSERT(s.threads_live >= 1); /* open starts the first worker */
        ferry__task_wake(&c.task);
        if (round % 2) wait_until(counter_done, &c, "the task to finish");
        ferry__task_close(&c.task);
        ASSERT_OK(ferry_runtime_stats_get(rt, &s));
        ASSERT_EQ(s.threads_live, 0);
    }
    rt_done(rt);
}

/* ---- a task never runs on two workers at once, whoever wakes it ------------------------- */
typedef struct solo {
    ferry__task task;
    _Atomic int in_run, overlaps;
    _Atomic int64_t runs;
} solo;

static void solo_run(ferry__task *t) {
    solo *s = t->arg;
    if (atomic_exchange(&s->in_run, 1) != 0) atomic_fetch_add(&s->overlaps, 1);
    atomic_fetch_add(&s->runs, 1);
    for (volatile int i = 0; i < 200; i++) {
    }
    if (atomic_load(&s->runs) % 3 == 0) ferry__task_wake(t); /* sometimes wake itself */
    atomic_store(&s->in_run, 0);
}

typedef struct wakers {
    solo *tasks;
    int n;
    _Atomic int stop;
} wakers;

static void *wake_thread(void *arg) {
    wakers *w = arg;
    for (unsigned i = 0; !atomic_load(&w->stop); i++) ferry__task_wake(&w->tasks[i % (unsigned)w->n].task);
    return NULL;
}

TEST(a_task_never_runs_twice_at_once) {
    ferry_runtime *rt = rt_with_budget(4);
    solo s[6];
    memset(s, 0, sizeof s);
    for (int i = 0; i < 6; i++) open_task(rt, &s[i].task, solo_run, &s[i]);
    wakers w = {.tasks = s, .n = 6};
    atomic_init(&w.stop, 0);
    pthread_t th[3];
    for (int i = 0; i < 3; i++) ASSERT_EQ(pthread_create(&th[i], NULL, wake_thread, &w), 0);
    for (int i = 0; i < 6; i++)
        for (int k = 0; atomic_load(&s[i].runs) < 2000; k++) {
            if (k == 600000) FAILF("task %d stopped running", i);
            sleep_us(100);
        }
    /* close every task while the wakers still wake them: a wake after close does nothing */
    for (int i = 0; i < 6; i++) {
        ferry__task_close(&s[i].task);
        ASSERT_EQ(atomic_load(&s[i].in_run), 0);
        ASSERT_EQ(atomic_load(&s[i].overlaps), 0);
    }
    atomic_store(&w.stop, 1);
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    rt_done(rt);
}

/* ---- whole pipelines on the executor ------------------------------------------------------ */
static int add_one(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)user;
    int64_t v = *(const int64_t *)ferry_tensor_data(ferry_element_get(in, 0));
    ferry_element_free(in); /* the function owns its input */
    ferry_tensor *t;
    int rc = ferry_tensor_scalar_i64(ferry_context_runtime(ctx), v + 1, &t);
    if (rc) return rc;
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out); /* takes t */
}

static int times_three_slowly(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)user;
    int64_t v = *(const int64_t *)ferry_tensor_data(ferry_element_get(in, 0));
    ferry_element_free(in); /* the function owns its input */
    volatile uint64_t x = (uint64_t)v;
    for (int i = 0; i < 2000; i++) x = x * 6364136223846793005ull + 1;
    ferry_tensor *t;
    int rc = ferry_tensor_scalar_i64(ferry_context_runtime(ctx), 3 * v + (int64_t)(x & 0), &t);
    if (rc) return rc;
    return ferry_element_create(ferry_context_runtime(ctx), 1, &t, out); /* takes t */
}

/* range -> map(AUTOTUNE) -> map(AUTOTUNE) -> batch(32) -> prefetch(AUTOTUNE), and with a
 * prefetch(2) between the maps: every element in order whatever the cpu budget, and the busy
 * workers never more than the budget (the second map's workers wait on the first map as
 * blocked, then wait for a core before they go on). */
TEST(pipelines_stay_within_the_cpu_budget_and_give_the_same_output) {
    int64_t want_sum = 0;
    for (int64_t i = 0; i < 3000; i++) want_sum += 3 * (i + 1);
    int budgets[] = {1, 2, 4, 8, 16};
    for (int b = 0; b < 5; b++) {
        for (int mid = 0; mid < 2; mid++) {
            ferry_runtime *rt = rt_with_budget(budgets[b]);
            ferry_dataset *r, *m1, *p1 = NULL, *m2, *bt, *pf;
            ferry_map_options mo = {.num_parallel_calls = FERRY_AUTOTUNE};
            ASSERT_OK(ferry_dataset_range(rt, 0, 3000, 1, NULL, &r));
            ASSERT_OK(ferry_dataset_map(r, add_one, NULL, &mo, &m1));
            if (mid) ASSERT_OK(ferry_dataset_prefetch(m1, 2, NULL, &p1));
            ASSERT_OK(ferry_dataset_map(mid ? p1 : m1, times_three_slowly, NULL, &mo, &m2));
            ASSERT_OK(ferry_dataset_batch(m2, 32, NULL, &bt));
            ASSERT_OK(ferry_dataset_prefetch(bt, FERRY_AUTOTUNE, NULL, &pf));
            ferry_iterator *it;
            ASSERT_OK(ferry_iterator_create(pf, NULL, &it));
            int64_t sum = 0, n = 0, prev = -1;
            ferry_element *e;
            while (ferry_iterator_next(it, &e) == FERRY_OK) {
                const ferry_tensor *t = ferry_element_get(e, 0);
                const int64_t *v = ferry_tensor_data(t);
                for (int64_t i = 0; i < ferry_tensor_num_entries(t); i++) {
                    if (!(v[i] > prev))
                        FAILF("budget %d mid %d: element %lld is %lld after %lld", budgets[b], mid, (long long)n,
                              (long long)v[i], (long long)prev);
                    prev = v[i];
                    sum += v[i];
                    n++;
                }
                ferry_element_free(e);
            }
            ASSERT_EQ(n, 3000);
            ASSERT_EQ(sum, want_sum);
            int peak;
            ferry__mutex_lock(&rt->exec.mu);
            peak = rt->exec.peak_busy;
            ferry__mutex_unlock(&rt->exec.mu);
            ASSERT_LE(peak, budgets[b]);
            ferry_iterator_free(it);
            ferry_dataset *all[] = {pf, bt, m2, p1, m1, r};
            for (int i = 0; i < 6; i++)
                if (all[i]) ferry_dataset_unref(all[i]);
            rt_done(rt);
        }
    }
}

/* A stage that runs ahead, destroyed from inside another stage's run: repeat frees each epoch's
 * parallel map from the prefetch's task. The closing worker must not hold the only core while
 * the map's workers wait for one. */
TEST(a_stage_destroyed_inside_another_run_does_not_hold_the_core) {
    int budgets[] = {1, 2};
    for (int b = 0; b < 2; b++) {
        ferry_runtime *rt = rt_with_budget(budgets[b]);
        ferry_dataset *r, *m, *rep, *pf;
        ferry_map_options mo = {.num_parallel_calls = 3};
        ASSERT_OK(ferry_dataset_range(rt, 0, 40, 1, NULL, &r));
        ASSERT_OK(ferry_dataset_map(r, add_one, NULL, &mo, &m));
        ASSERT_OK(ferry_dataset_repeat(m, 25, NULL, &rep));
        ASSERT_OK(ferry_dataset_prefetch(rep, 2, NULL, &pf));
        for (int round = 0; round < 20; round++) {
            ferry_iterator *it;
            ASSERT_OK(ferry_iterator_create(pf, NULL, &it));
            int64_t n = 0, sum = 0;
            ferry_element *e;
            while (ferry_iterator_next(it, &e) == FERRY_OK) {
                sum += *(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0));
                n++;
                ferry_element_free(e);
            }
            ASSERT_EQ(n, 25 * 40);
            ASSERT_EQ(sum, 25 * (40 * 41 / 2));
            ferry_iterator_free(it);
        }
        ferry_dataset *all[] = {pf, rep, m, r};
        for (int i = 0; i < 4; i++) ferry_dataset_unref(all[i]);
        rt_done(rt);
    }
}

/* ---- borrowing a core: a consumer that works instead of waiting ------------------------- */
typedef struct hold_task {
    ferry__task task;
    _Atomic int running, release, ran;
} hold_task;

/* Holds its core until told to let go. */
static void hold_run(ferry__task *t) {
    hold_task *h = t->arg;
    atomic_store(&h->running, 1);
    while (!atomic_load(&h->release)) sleep_us(50);
    atomic_store(&h->running, 0);
    atomic_fetch_add(&h->ran, 1);
}

static bool hold_running(void *arg) { return atomic_load(&((hold_task *)arg)->running) != 0; }
static bool hold_ran(void *arg) { return atomic_load(&((hold_task *)arg)->ran) > 0; }

static int busy_now(ferry_runtime *rt) {
    int busy = 0;
    ferry__exec_counts(&rt->exec, NULL, &busy, NULL);
    return busy;
}

static bool pool_idle(void *arg) { return busy_now(arg) == 0; }

TEST(a_borrowed_core_counts_against_the_budget) {
    ferry_runtime *rt = rt_with_budget(1);
    hold_task h;
    memset(&h, 0, sizeof h);
    open_task(rt, &h.task, hold_run, &h);
    ferry__task_wake(&h.task);
    wait_until(hold_running, &h, "the task to hold the only core");
    ASSERT_EQ(ferry__exec_borrow(&rt->exec), 0); /* no core free */
    atomic_store(&h.release, 1);
    wait_until(hold_ran, &h, "the task to let go");
    wait_until(pool_idle, rt, "the worker to give its core back"); /* it does after the run returns */
    int token = ferry__exec_borrow(&rt->exec);
    ASSERT_EQ(token, 1);
    ASSERT_EQ(busy_now(rt), 1);
    ASSERT_EQ(ferry__exec_borrow(&rt->exec), 2); /* the borrower holds a core already */
    /* While the borrower holds the only core, a woken task waits for it... */
    atomic_store(&h.release, 0);
    atomic_store(&h.ran, 0);
    ferry__task_wake(&h.task);
    for (int i = 0; i < 100; i++) {
        ASSERT(!hold_running(&h));
        sleep_us(100);
    }
    /* ...and runs once it is given back. */
    ferry__exec_unborrow(&rt->exec, token);
    wait_until(hold_running, &h, "the task to get the core back");
    ASSERT_EQ(busy_now(rt), 1);
    atomic_store(&h.release, 1);
    wait_until(hold_ran, &h, "the task to finish");
    ASSERT_LE(rt->exec.peak_busy, 1);
    ferry__task_close(&h.task);
    rt_done(rt);
}

/* A borrower that waits for another stage marks the wait blocked, which gives the core to the
 * task it waits for (else, on a 1-core budget, neither could go on). */
TEST(a_borrower_waiting_for_a_task_gives_its_core) {
    ferry_runtime *rt = rt_with_budget(1);
    hold_task h;
    memset(&h, 0, sizeof h);
    atomic_store(&h.release, 1); /* runs at once and finishes */
    open_task(rt, &h.task, hold_run, &h);
    int token = ferry__exec_borrow(&rt->exec);
    ASSERT_EQ(token, 1);
    ferry__task_wake(&h.task);
    bool blocked = ferry__exec_block_begin(&rt->exec);
    ASSERT(blocked);
    /* the core is given: the task's worker may hold it already (0 or 1, never 2); that the task
     * runs at all on a 1-core budget while the borrower waits is the proof */
    ASSERT_LE(busy_now(rt), 1);
    wait_until(hold_ran, &h, "the task to run while the borrower waits");
    ferry__exec_block_end(&rt->exec, blocked, true);
    ASSERT_EQ(busy_now(rt), 1);
    ferry__exec_unborrow(&rt->exec, token);
    ASSERT_EQ(busy_now(rt), 0);
    ASSERT(!ferry__exec_block_begin(&rt->exec)); /* no longer counted as one of the pool's */
    ASSERT_LE(rt->exec.peak_busy, 1);
    ferry__task_close(&h.task);
    rt_done(rt);
}

/* ---- the async-stage base (core/stage.c) ------------------------------------------------- */
/* A stage whose tasks sleep on the consumer's condition variable until the stage is cancelled:
 * what a producer waiting for room does. */
typedef struct sleeper_stage {
    ferry_dataset ds;
    ferry__iter it;
    ferry__stage sg;
    ferry__task task[2];
    _Atomic int asleep, returned, hooks;
    bool hook_held_mu;
} sleeper_stage;

static void sleeper_run(ferry__task *t) {
    sleeper_stage *p = t->arg;
    ferry__mutex_lock(&p->sg.mu);
    atomic_fetch_add(&p->asleep, 1);
    while (!ferry__cancelled(&p->sg.scope)) ferry__cond_wait(&p->sg.cv_cons, &p->sg.mu);
    ferry__mutex_unlock(&p->sg.mu);
    atomic_fetch_add(&p->returned, 1);
}

static void sleeper_hook(void *arg) {
    sleeper_stage *p = arg;
    /* Called by the waker with mu held: another thread cannot take it now. */
    p->hook_held_mu = !ferry__mutex_trylock(&p->sg.mu);
    if (!p->hook_held_mu) ferry__mutex_unlock(&p->sg.mu);
    atomic_fetch_add(&p->hooks, 1);
}

static bool two_asleep(void *arg) { return atomic_load(&((sleeper_stage *)arg)->asleep) == 2; }
static bool two_returned(void *arg) { return atomic_load(&((sleeper_stage *)arg)->returned) == 2; }

static void sleeper_init(sleeper_stage *p, ferry_runtime *rt, ferry__cancel *parent, ferry__node_stats *rec) {
    memset(p, 0, sizeof *p);
    p->ds.name = "sleeper";
    p->it.ds = &p->ds;
    p->it.ctx.rt = rt;
    p->it.ctx.cancel = parent;
    p->it.stats = rec;
}

/* Sets the stage up as an op's make does and puts both tasks to sleep in it. */
static void sleeper_start(sleeper_stage *p, int64_t anchor_period, void (*hook)(void *)) {
    ferry__status st;
    ferry__ictx ictx;
    ASSERT_OK(ferry__stage_init(&p->sg, &p->it, anchor_period, &ictx, &st));
    ASSERT(ictx.cancel == &p->sg.scope); /* the input is made under the stage's scope */
    ASSERT(ictx.rt == p->it.ctx.rt);
    ASSERT_EQ(p->sg.anchor_ok, anchor_period > 0);
    ferry__stage_ready(&p->sg, hook, p, 2, 0, NULL);
    for (int i = 0; i < 2; i++) {
        ASSERT_OK(ferry__stage_task_open(&p->sg, &p->task[i], sleeper_run, p, &st));
        ferry__task_wake(&p->task[i]);
    }
    wait_until(two_asleep, p, "both tasks to sleep in the stage");
}

TEST(a_stage_is_cancelled_woken_and_closed_in_one_call) {
    ferry_runtime *rt = rt_with_budget(4);
    ferry__cancel root;
    ASSERT_OK(ferry__cancel_init(&root, NULL));
    static sleeper_stage p;
    sleeper_init(&p, rt, &root, NULL);
    sleeper_start(&p, 16, sleeper_hook);
    ferry__stage_stop(&p.sg); /* fires the scope: the waker wakes both; then closes them */
    ASSERT_EQ(atomic_load(&p.returned), 2);
    ASSERT_EQ(atomic_load(&p.hooks), 1);
    ASSERT(p.hook_held_mu);
    ASSERT(ferry__cancelled(&p.sg.scope));
    ASSERT(!ferry__cancelled(&root)); /* a child's cancel does not reach its parent */
    ferry__stage_stop(&p.sg);         /* idempotent */
    ferry__stage_fini(&p.sg);
    ferry__cancel_fini(&root);
    rt_done(rt); /* the last task closed: every worker joined */
}

/* Destroying an enclosing iterator fires a scope above the stage: its tasks wake by themselves. */
TEST(a_stage_wakes_when_a_scope_above_it_fires) {
    ferry_runtime *rt = rt_with_budget(2);
    ferry__cancel root;
    ASSERT_OK(ferry__cancel_init(&root, NULL));
    static sleeper_stage p;
    sleeper_init(&p, rt, &root, NULL);
    sleeper_start(&p, 0, NULL);
    ferry__cancel_fire(&root);
    wait_until(two_returned, &p, "both tasks to return after the parent scope fired");
    ferry__stage_stop(&p.sg);
    ferry__stage_fini(&p.sg);
    ferry__cancel_fini(&root);
    rt_done(rt);
}

/* A stage that was never set up (a make that failed before it) unwinds as a no-op, and the
 * time it measures lands in the columns its record says. */
TEST(a_stage_unwinds_from_any_point_and_accounts_time) {
    ferry_runtime *rt = rt_with_budget(2);
    ferry__stage zero;
    memset(&zero, 0, sizeof zero);
    ferry__stage_stop(&zero);
    ferry__stage_fini(&zero);
    ferry__stage_time(&zero, FERRY__TIME_WORK, 5); /* no record: nothing to do */

    ferry__node_stats rec;
    memset(&rec, 0, sizeof rec);
    atomic_store(&rec.work_ns, -1); /* inline until a stage says it measures */
    static sleeper_stage p;
    sleeper_init(&p, rt, NULL, &rec);
    ferry__status st;
    ferry__ictx ictx;
    ASSERT_OK(ferry__stage_init(&p.sg, &p.it, 0, &ictx, &st));
    ASSERT_EQ(atomic_load(&rec.work_ns), -1);
    ferry__stage_ready(&p.sg, NULL, NULL, 3, 40, NULL);
    ASSERT_EQ(atomic_load(&rec.work_ns), 0);
    ASSERT_EQ(atomic_load(&rec.parallelism), 3);
    ASSERT_EQ(atomic_load(&rec.capacity), 40);
    ferry__stage_time(&p.sg, FERRY__TIME_WORK, 100);
    ferry__stage_time(&p.sg, FERRY__TIME_ASSEMBLE, 20);
    ferry__stage_time(&p.sg, FERRY__TIME_LOCK, 3);
    ferry__stage_time(&p.sg, FERRY__TIME_WAIT_INPUT, 7);
    ferry__stage_time(&p.sg, FERRY__TIME_WAIT_CONSUMER, 11);
    ferry__stage_time(&p.sg, FERRY__TIME_WORK, -4); /* a clock step back adds nothing */
    ferry__stage_lock(&p.sg, &p.sg.mu);             /* free: no wait counted */
    ferry__mutex_unlock(&p.sg.mu);
    ASSERT_EQ(atomic_load(&rec.work_ns), 100);
    ASSERT_EQ(atomic_load(&rec.assemble_ns), 20);
    ASSERT_EQ(atomic_load(&rec.lock_wait_ns), 3);
    ASSERT_EQ(atomic_load(&rec.wait_input_ns), 7);
    ASSERT_EQ(atomic_load(&rec.wait_consumer_ns), 11);
    ferry__stage_stop(&p.sg);
    ferry__stage_fini(&p.sg);
    rt_done(rt);
}
