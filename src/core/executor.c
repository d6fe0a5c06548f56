/*
 * executor.c - the runtime's one pool of threads that run ahead (after zstd's POOL and libuv's
 * threadpool: small, one mutex, a ready queue; with run-to-yield tasks instead of one-shot jobs).
 *
 * Objects
 *   ferry__exec (one per runtime, embedded in it) owns the worker threads, the ready queue and
 *   the count of open tasks. ferry__task is a client: an async stage (prefetch, parallel map,
 *   parallel interleave) embeds one task per unit of parallelism and gives it a run function.
 *
 * A task's life
 *   open -> IDLE. wake: IDLE -> QUEUED (pushed on the ready queue, a worker signalled or
 *   started); a worker pops it: QUEUED -> RUNNING and calls run(task). run does work while there
 *   is some and returns when there is none for now (its buffer is full, its input is exhausted)
 *   or when ferry__task_yield_due says that others wait. A wake while it runs sets NOTIFIED, and
 *   the worker queues it again when run returns: a condition that changes between run's last
 *   check and its return is never lost (the libdispatch / tokio "notified" bit). close waits for
 *   a running task to return and removes a queued one: after close, run is never called again.
 *   The state word is changed with compare-exchange; queue and counters under `mu`.
 *
 * Threads
 *   Workers start on demand: a wake that finds no idle or spinning worker starts one, as long as
 *   the workers that are not blocked stay within the cpu budget. A worker with nothing to do spins
 *   for the next task as long as its adaptive spinner (base/queue.h) has measured spinning to pay,
 *   then sleeps on cv_work. A waker signals only when no worker spins (the spinner re-checks the
 *   queue under `mu` before it sleeps, so no wake-up is lost). A task that waits on something
 *   other than its own work (the byte budget, a slow read) marks the wait with
 *   ferry__exec_block_begin/end: a blocked worker does not count against the cpu budget, and
 *   another may start meanwhile; when the wait ends, the worker waits for a free core (cv_core)
 *   before it goes on, ahead of queued tasks, so busy workers stay within the budget. The
 *   autotuner may grant more (ferry__exec_grant) for stages whose threads it measured to be
 *   blocked most of the time (sleeping or I/O-bound calls the executor cannot see): their threads
 *   count as busy here, but they use a fraction of a core each. (A caller
 *   holding a lock that running tasks may need goes on at once instead, briefly over.) When the last task closes, the closer stops and joins every
 *   worker: no thread outlives the iterators that used it (threads_live returns to 0).
 *
 * Accounting: each run of a stage's task is timed into the stage's stats record (run_ns), and
 * a worker reads its thread's scheduler account (CPU time, time ready but waiting for a core)
 * around a run that starts 10 ms or more after its last sample, and every 10 ms inside a long
 * run (ferry__task_yield_due); what the account says of each sampled span goes to
 * the run's stage (exec_acct). So the report can tell a stage whose threads compute
 * from one whose threads are blocked (I/O, sleeping callbacks) or were kept off the cores.
 *
 * Lock order: `mu` is the innermost lock. A task's run is called with no executor lock held,
 * and the executor never calls into an op while holding `mu`; ops may call wake and
 * block_begin/end while holding their own mutex (op mutex before `mu`, never the reverse), but
 * never close (it waits).
 */
#include "core.h"

#include "base/queue.h"

#include <string.h>

/* A worker reads its thread's scheduler account (two system calls, ~3 us here) about once per
 * this many ns of wall time, for the stages' shares of computing, waiting for a core and being
 * blocked. At 1 ms the reads cost a producer thread ~0.5 %, measurable in P1r's inline pipeline;
 * at 10 ms a pass of 100 ms still gets ten samples. */
#define EXEC_CPU_SAMPLE_NS 10000000

enum { TASK_IDLE, TASK_QUEUED, TASK_RUNNING, TASK_NOTIFIED, TASK_CLOSING, TASK_CLOSED };

/* A worker thread; records are linked so that the last close can join the set it stopped. */
typedef struct ferry__exec_worker {
    ferry__thread thread;
    ferry__exec *x;
    bool stop;    /* under mu */
    bool entered; /* under mu: it runs its loop (until then it counts in `starting`) */
    struct ferry__exec_worker *next;
} exec_worker;

int ferry__exec_init(ferry__exec *x, ferry_runtime *rt, int max_busy) {
    memset(x, 0, sizeof *x);
    x->rt = rt;
    x->max_busy = max_busy > 0 ? max_busy : 1;
    x->epoch_ns = ferry__now_ns();
    ferry__list_init(&x->ready);
    atomic_init(&x->queued, 0);
    atomic_init(&x->spinning, 0);
    if (ferry__mutex_init(&x->mu)) return FERRY_ENOMEM;
    if (ferry__cond_init(&x->cv_work)) goto fail_mu;
    if (ferry__cond_init(&x->cv_done)) goto fail_work;
    if (ferry__cond_init(&x->cv_core)) goto fail_done;
    return FERRY_OK;
fail_done:
    ferry__cond_destroy(&x->cv_done);
fail_work:
    ferry__cond_destroy(&x->cv_work);
fail_mu:
    ferry__mutex_destroy(&x->mu);
    return FERRY_ENOMEM;
}

void ferry__exec_fini(ferry__exec *x) {
    FERRY_ASSERT(x->clients == 0 && x->workers == NULL);
    ferry__cond_destroy(&x->cv_core);
    ferry__cond_destroy(&x->cv_done);
    ferry__cond_destroy(&x->cv_work);
    ferry__mutex_destroy(&x->mu);
}

/* ---- workers ------------------------------------------------------------------------------ */
static bool exec_has_work(void *arg) {
    ferry__exec *x = arg;
    return atomic_load_explicit(&x->queued, memory_order_acquire) > 0;
}

/* After run returned: IDLE, queued again (notified), or closed (a closer waits). Under mu. */
static void exec_after_run(ferry__exec *x, ferry__task *t) {
    int s = TASK_RUNNING;
    if (atomic_compare_exchange_strong(&t->state, &s, TASK_IDLE)) return;
    if (s == TASK_NOTIFIED) {
        atomic_store(&t->state, TASK_QUEUED);
        t->queued_ns = ferry__now_ns();
        ferry__list_push_back(&x->ready, &t->node);
        atomic_fetch_add(&x->queued, 1);
        return;
    }
    FERRY_ASSERT(s == TASK_CLOSING);
    atomic_store(&t->state, TASK_CLOSED);
    ferry__cond_broadcast(&x->cv_done);
}

static void exec_dispatch(ferry__exec *x);

/* A worker's accounting window: one run of a stage's task (or 10 ms of a long one),
 * between two reads of the thread's scheduler account. Whether a run is sampled is decided when
 * it starts (EXEC_CPU_SAMPLE_NS since the last sample), never by how it ends: keeping only windows
 * that ended a certain way would bias the shares (say, toward runs that blocked). */
typedef struct exec_acct {
    ferry__node_stats *rec;           /* the sampled run's stage; NULL: no window open */
    int fd;                           /* the worker's scheduler account */
    int64_t read_ns, cpu_ns, runq_ns; /* when the account was last read, and what it said */
    int64_t last_ns;                  /* when the last window closed */
} exec_acct;

static void acct_open(exec_acct *a, ferry__node_stats *rec, int64_t now) {
    a->rec = rec;
    a->read_ns = now;
    ferry__thread_sched_read(a->fd, &a->cpu_ns, &a->runq_ns);
}

/* Closes the window at `now` (inside or at the end of a run of a->rec, whose record is valid):
 * the wall time since the last read, and what the account says of it, go to rec's samples. The
 * next window, when the run goes on, starts here. */
static void acct_close(exec_acct *a, int64_t now) {
    int64_t cpu, runq;
    ferry__thread_sched_read(a->fd, &cpu, &runq);
    int64_t wall = now - a->read_ns;
    int64_t dc = FERRY__MIN(cpu - a->cpu_ns, wall); /* the two clocks are read a little apart */
    int64_t dq = FERRY__MIN(runq - a->runq_ns, wall - FERRY__MAX(dc, (int64_t)0));
    if (wall > 0 && dc >= 0 && dq >= 0) {
        atomic_fetch_add_explicit(&a->rec->sample_run_ns, wall, memory_order_relaxed);
        atomic_fetch_add_explicit(&a->rec->sample_cpu_ns, dc, memory_order_relaxed);
        atomic_fetch_add_explicit(&a->rec->sample_runq_ns, dq, memory_order_relaxed);
    }
    a->read_ns = now;
    a->cpu_ns = cpu;
    a->runq_ns = runq;
    a->last_ns = now;
}

/* The calling worker's window (rec NULL on other threads). */
static _Thread_local exec_acct tl_acct;

/* The executor whose worker the calling thread is (NULL on other threads). */
static _Thread_local ferry__exec *tl_exec;
static _Thread_local bool tl_borrowed; /* tl_exec is borrowed (ferry__exec_borrow), not a worker's */

static void *exec_worker_main(void *arg) {
    exec_worker *w = arg;
    ferry__exec *x = w->x;
    tl_exec = x;
    ferry__spinner spin = {0};
    tl_acct.fd = ferry__thread_sched_open(); /* closed below, before the thread ends */
    ferry__mutex_lock(&x->mu);
    if (!w->stop) x->starting--; /* a stopped one was taken off the count by the closer */
    w->entered = true;
    for (;;) {
        if (w->stop) {
            /* The counts of idle and spinning workers may have made a waker trust this one with
             * a task that a new client queued: hand it on before leaving. */
            if (!ferry__list_empty(&x->ready)) exec_dispatch(x);
            break;
        }
        /* A worker coming back from a blocked wait gets the next free core first. */
        if (ferry__list_empty(&x->ready) || x->busy + x->core_waiters >= x->max_busy + x->extra) {
            if (!ferry__list_empty(&x->ready)) { /* over the cpu budget: wait for a busy one */
                x->idle++;
                ferry__cond_wait(&x->cv_work, &x->mu);
                x->idle--;
                continue;
            }
            /* Spin outside the lock while spinning has paid, then sleep. */
            atomic_fetch_add(&x->spinning, 1);
            ferry__mutex_unlock(&x->mu);
            if (x->max_busy > 1) ferry__spin_adaptive(&spin, exec_has_work, x);
            ferry__mutex_lock(&x->mu);
            atomic_fetch_sub(&x->spinning, 1);
            if (!ferry__list_empty(&x->ready) || w->stop) continue;
            x->idle++;
            ferry__cond_wait(&x->cv_work, &x->mu);
            x->idle--;
            continue;
        }
        ferry__list *n = x->ready.next;
        ferry__list_remove(n);
        atomic_fetch_sub(&x->queued, 1);
        ferry__task *t = FERRY__CONTAINER_OF(n, ferry__task, node);
        atomic_store(&t->state, TASK_RUNNING);
        if (++x->busy > x->peak_busy) x->peak_busy = x->busy;
        if (!ferry__list_empty(&x->ready)) exec_dispatch(x); /* more queued: pass the word on */
        ferry__mutex_unlock(&x->mu);
        ferry__node_stats *rec = t->rec;
        exec_acct *acct = &tl_acct;
        t->slice_start_ns = ferry__now_ns();
        if (rec && t->slice_start_ns - acct->last_ns >= EXEC_CPU_SAMPLE_NS) acct_open(acct, rec, t->slice_start_ns);
        if (rec) atomic_fetch_add_explicit(&rec->queued_ns, t->slice_start_ns - t->queued_ns, memory_order_relaxed);
        if (rec) {
            atomic_fetch_add_explicit(&rec->runs_live_start, t->slice_start_ns - x->epoch_ns, memory_order_relaxed);
            atomic_fetch_add_explicit(&rec->runs_live, 1, memory_order_relaxed);
        }
        t->run(t);
        if (rec) { /* t and its record stay valid until exec_after_run: a closer waits for it */
            int64_t end = ferry__now_ns(), dt = end - t->slice_start_ns;
            atomic_fetch_add_explicit(&rec->run_ns, dt, memory_order_relaxed);
            atomic_fetch_sub_explicit(&rec->runs_live, 1, memory_order_relaxed);
            atomic_fetch_sub_explicit(&rec->runs_live_start, t->slice_start_ns - x->epoch_ns, memory_order_relaxed);
            if (acct->rec) {
                acct_close(acct, end);
                acct->rec = NULL;
            }
            if (x->rt->trace) ferry__trace_add(x->rt, FERRY__TR_RUN, FERRY__LABEL(rec->ds), t->slice_start_ns, end);
        }
        ferry__mutex_lock(&x->mu);
        x->busy--;
        if (x->core_waiters > 0) ferry__cond_signal(&x->cv_core);
        exec_after_run(x, t);
        if (!ferry__list_empty(&x->ready) && x->idle > 0 && atomic_load(&x->spinning) == 0)
            ferry__cond_signal(&x->cv_work); /* a waiter held back by the cpu budget */
    }
    ferry__mutex_unlock(&x->mu);
    ferry__thread_sched_close(tl_acct.fd);
    tl_acct.rec = NULL;
    return NULL;
}

/* Starts one worker. Under mu. */
static int exec_start_worker(ferry__exec *x, ferry__status *st) {
    exec_worker *w = ferry__calloc(x->rt, 1, sizeof *w);
    if (!w) return ferry__fail(st, FERRY_ENOMEM, "executor: allocating a worker failed");
    w->x = x;
    int rc = ferry__rt_thread_start(x->rt, &w->thread, "ferry-worker", exec_worker_main, w, st);
    if (rc) {
        ferry__free(x->rt, w);
        return rc;
    }
    w->next = x->workers;
    x->workers = w;
    x->nworkers++;
    x->starting++;
    return FERRY_OK;
}

/* Makes sure a queued task gets a worker: signal a sleeping one unless one spins, or start one
 * while the workers that are not blocked stay within the cpu budget. Under mu. */
static void exec_dispatch(ferry__exec *x) {
    /* A spinning worker, or one just started, takes the task on its own. */
    if (atomic_load(&x->spinning) > 0 || x->starting > 0) return;
    if (x->idle > 0) {
        ferry__cond_signal(&x->cv_work);
        return;
    }
    if (x->nworkers - (x->blocked - x->blocked_borrowers) < x->max_busy + x->extra) { /* a borrower is no worker */
        ferry__status st;
        (void)exec_start_worker(x, &st); /* the workers there take the task in their turn */
    }
}

/* ---- tasks -------------------------------------------------------------------------------- */
int ferry__task_open(ferry__exec *x, ferry__task *t, void (*run)(ferry__task *), void *arg, ferry__status *st) {
    memset(t, 0, sizeof *t);
    t->x = x;
    t->run = run;
    t->arg = arg;
    atomic_init(&t->state, TASK_IDLE);
    ferry__list_init(&t->node);
    ferry__mutex_lock(&x->mu);
    int rc = FERRY_OK;
    /* A task must always have a worker to run it: the first is started here, where its failure
     * can be reported, not at a wake. */
    if (x->nworkers == 0) rc = exec_start_worker(x, st);
    if (rc == FERRY_OK) {
        x->clients++;
        t->open = true;
    }
    ferry__mutex_unlock(&x->mu);
    return rc;
}

void ferry__task_wake(ferry__task *t) {
    int s = atomic_load(&t->state);
    for (;;) {
        if (s == TASK_RUNNING) {
            if (!atomic_compare_exchange_weak(&t->state, &s, TASK_NOTIFIED)) continue;
            return;
        }
        if (s != TASK_IDLE) return; /* queued, notified, closing or closed: it runs (or never will) */
        /* IDLE -> QUEUED and the push happen together under mu, so that close (under mu) sees a
         * queued task in the queue, never one on its way there. */
        ferry__exec *x = t->x;
        ferry__mutex_lock(&x->mu);
        s = TASK_IDLE;
        bool queued = atomic_compare_exchange_strong(&t->state, &s, TASK_QUEUED);
        if (queued) {
            t->queued_ns = ferry__now_ns();
            ferry__list_push_back(&x->ready, &t->node);
            atomic_fetch_add(&x->queued, 1);
            exec_dispatch(x);
        }
        ferry__mutex_unlock(&x->mu);
        if (queued || s != TASK_RUNNING) return;
        /* it started running meanwhile: notify it */
    }
}

bool ferry__task_yield_due(ferry__task *t) {
    exec_acct *a = &tl_acct;
    if (t->rec && a->rec == t->rec) { /* a sampled run: a long one is sampled 10 ms at a time */
        int64_t now = ferry__now_ns();
        if (now - a->read_ns >= EXEC_CPU_SAMPLE_NS) acct_close(a, now);
    } else if (t->rec && !a->rec && tl_exec && !tl_borrowed) { /* a long unsampled run: from here */
        int64_t now = ferry__now_ns();
        if (now - a->last_ns >= EXEC_CPU_SAMPLE_NS) acct_open(a, t->rec, now);
    }
    if (atomic_load_explicit(&t->x->queued, memory_order_relaxed) == 0) return false;
    return ferry__now_ns() - t->slice_start_ns > FERRY__TASK_SLICE_NS;
}

void ferry__task_close(ferry__task *t) {
    if (!t->open) return;
    ferry__exec *x = t->x;
    ferry__mutex_lock(&x->mu);
    for (;;) {
        int s = atomic_load(&t->state);
        if (s == TASK_IDLE) {
            if (atomic_compare_exchange_strong(&t->state, &s, TASK_CLOSED)) break;
        } else if (s == TASK_QUEUED) {
            /* Only workers (under mu) move a queued task on, and we hold mu. */
            ferry__list_remove(&t->node);
            atomic_fetch_sub(&x->queued, 1);
            atomic_store(&t->state, TASK_CLOSED);
            break;
        } else if (s == TASK_RUNNING || s == TASK_NOTIFIED) {
            atomic_compare_exchange_strong(&t->state, &s, TASK_CLOSING);
        } else if (s == TASK_CLOSING) {
            /* Closed from inside another run (a repeat or an interleave freeing an input that
             * runs ahead): the running task may itself wait for a core, so this wait must not
             * hold one. The core is taken back without waiting (the closer holds no lock that
             * matters here, but it must finish the destroy it is in). */
            bool in_worker = tl_exec == x;
            if (in_worker) {
                x->blocked++;
                if (tl_borrowed) x->blocked_borrowers++;
                x->busy--;
                if (x->core_waiters > 0) ferry__cond_signal(&x->cv_core);
                else if (!ferry__list_empty(&x->ready)) exec_dispatch(x);
            }
            ferry__cond_wait(&x->cv_done, &x->mu);
            if (in_worker) {
                x->blocked--;
                if (tl_borrowed) x->blocked_borrowers--;
                x->busy++;
            }
        } else {
            break;
        }
    }
    t->open = false;
    exec_worker *stopped = NULL;
    if (--x->clients == 0) {
        /* The last task: stop every worker and join them below, outside the lock (a new task may
         * open meanwhile and start workers of its own). */
        stopped = x->workers;
        for (exec_worker *w = stopped; w; w = w->next) {
            if (!w->entered) x->starting--;
            w->stop = true;
        }
        x->workers = NULL;
        x->nworkers = 0;
        ferry__cond_broadcast(&x->cv_work);
    }
    ferry__mutex_unlock(&x->mu);
    while (stopped) {
        exec_worker *next = stopped->next;
        ferry__rt_thread_join(x->rt, &stopped->thread);
        ferry__free(x->rt, stopped);
        stopped = next;
    }
}

bool ferry__exec_block_begin(ferry__exec *x) {
    if (tl_exec != x) return false;
    ferry__mutex_lock(&x->mu);
    x->blocked++;
    if (tl_borrowed) x->blocked_borrowers++;
    x->busy--;
    if (x->core_waiters > 0) ferry__cond_signal(&x->cv_core);
    else if (!ferry__list_empty(&x->ready)) exec_dispatch(x);
    ferry__mutex_unlock(&x->mu);
    return true;
}

void ferry__exec_block_end(ferry__exec *x, bool blocked, bool wait_for_core) {
    if (!blocked) return;
    ferry__mutex_lock(&x->mu);
    x->blocked--;
    if (tl_borrowed) x->blocked_borrowers--;
    /* Busy workers stay within the cpu budget: wait for a core, unless the caller holds a lock
     * that the running tasks may need. */
    while (wait_for_core && x->busy >= x->max_busy + x->extra) {
        x->core_waiters++;
        ferry__cond_wait(&x->cv_core, &x->mu);
        x->core_waiters--;
    }
    if (++x->busy > x->peak_busy) x->peak_busy = x->busy;
    ferry__mutex_unlock(&x->mu);
}

int ferry__exec_borrow(ferry__exec *x) {
    if (tl_exec == x) return 2; /* a worker (or a borrower) holds its core already */
    if (tl_exec) return 0;      /* a worker of another runtime's pool: keep its marks right */
    ferry__mutex_lock(&x->mu);
    bool ok = x->busy + x->core_waiters < x->max_busy + x->extra;
    if (ok && ++x->busy > x->peak_busy) x->peak_busy = x->busy;
    ferry__mutex_unlock(&x->mu);
    if (!ok) return 0;
    /* Until unborrow the thread counts as one of x's: its waits for other stages are marked
     * blocked (ferry__exec_block_begin) and give the core back, or a task it waits for could
     * find none. */
    tl_exec = x;
    tl_borrowed = true;
    return 1;
}

void ferry__exec_unborrow(ferry__exec *x, int token) {
    if (token != 1) return;
    tl_exec = NULL;
    tl_borrowed = false;
    ferry__mutex_lock(&x->mu);
    x->busy--;
    if (x->core_waiters > 0) ferry__cond_signal(&x->cv_core);
    else if (!ferry__list_empty(&x->ready) && x->idle > 0 && atomic_load(&x->spinning) == 0)
        ferry__cond_signal(&x->cv_work); /* a task held back by the cpu budget */
    else if (!ferry__list_empty(&x->ready)) exec_dispatch(x);
    ferry__mutex_unlock(&x->mu);
}

void ferry__exec_grant(ferry__exec *x, int delta) {
    if (delta == 0) return;
    ferry__mutex_lock(&x->mu);
    x->extra += delta;
    FERRY_ASSERT(x->extra >= 0);
    if (x->extra > x->peak_extra) x->peak_extra = x->extra;
    if (delta > 0) {
        /* Workers held back by the old limit may go on, and a queued task may need a new one. */
        if (x->core_waiters > 0) ferry__cond_broadcast(&x->cv_core);
        if (!ferry__list_empty(&x->ready)) {
            if (x->idle > 0) ferry__cond_broadcast(&x->cv_work);
            exec_dispatch(x);
        }
    }
    ferry__mutex_unlock(&x->mu);
}

void ferry__exec_counts(ferry__exec *x, int *workers, int *busy, int *blocked) {
    ferry__mutex_lock(&x->mu);
    if (workers) *workers = x->nworkers;
    if (busy) *busy = x->busy;
    if (blocked) *blocked = x->blocked;
    ferry__mutex_unlock(&x->mu);
}
