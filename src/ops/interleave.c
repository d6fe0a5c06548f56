/*
 * interleave.c - `interleave` (and, through ferry__dataset_interleave_named, `flat_map`): every
 * input element is turned into a dataset by a user function, and the elements of up to
 * cycle_length of those inner datasets are interleaved, block_length at a time, round-robin.
 *
 * Order (tf.data's InterleaveDataset, exactly): the consumer walks a cycle of `cycle` slots. At
 * slot ci: an open inner stream hands out its next position (element or error) and, after
 * `block` of them, the cycle moves on; a stream that ends is closed and the cycle moves on
 * without output; an empty slot takes the next input element (the inner dataset is made and
 * read at once, in the same slot); once the input has ended, empty slots are passed over, and
 * the stream ends when no slot is open. This state machine (slots, ci, block index, next input
 * position) is the same in every mode, so the deterministic output does not depend on the
 * thread count.
 *
 * Errors take positions. An input element that is an error, a dataset function that fails or
 * returns a dataset whose element spec does not fit (FERRY_ETYPE), or an inner iterator that
 * cannot be made, all become an "error stream": a stream of exactly one position, that error.
 * Errors of an inner iterator are positions of that stream and the stream goes on after them.
 *
 * Modes
 *   inline (num_parallel_calls 0): the consumer thread pulls the input, calls the function and
 *   reads the inner iterators itself. No threads, no locks.
 *   parallel (N > 0, or FERRY_AUTOTUNE: the rule every AUTOTUNE stage shares,
 *   ferry__autotune_threads; the default cycle length stays the cpu budget): N worker tasks
 *   on the runtime's executor open streams ahead of the consumer (pull the input in order,
 *   call the function, make the inner iterator) into a FIFO of pending streams, and read the open
 *   streams into per-stream ring buffers, several files at once. The consumer runs the state
 *   machine above, taking streams from the FIFO and positions from the rings (waiting when the
 *   one it needs is empty). With relaxed_order the consumer instead takes from whichever open
 *   slot has something ready, filling empty slots from the FIFO at once.
 *   At most 2 * cycle streams are open at a time (cycle in slots, up to cycle pending).
 *
 * Threads and locks (parallel): `mu` guards the slots array, the pending FIFO, every stream's
 * ring, counters and flags, and the worker/consumer flags. A worker marks a stream `busy` while
 * it drives its inner iterator outside the lock (one thread per inner iterator at a time), and
 * `input_busy` while it pulls the input and opens a stream outside the lock. Inner iterators
 * and datasets are made and destroyed outside `mu` (they may create or finish cancel scopes
 * under ours; a scope's lock is taken before `mu`, never after). Workers are tasks on the
 * runtime's executor (core/executor.c): a task with nothing to do marks itself idle and returns
 * its worker, and poke_workers wakes one idle task when work appears; while the budget is full
 * a task instead polls on work_cv every millisecond (a wait marked blocked for the executor).
 * `mu`, the consumer's condition variable, the cancel scope (a child of ctx->cancel) and the
 * tasks are the stage's (the async-stage base of core.h); its waker sets `stop` and broadcasts
 * work_cv and the consumer's, so destroy fires the scope, closes the tasks (waiting for runs in
 * progress) and frees, promptly. Stats: work_ns = reading the streams and opening them (the
 * function calls), lock_wait_ns = waits for a contended `mu`, wait_consumer_ns = polling while
 * the budget is full, wait_input_ns = the consumer's waits. The consumer sleeps through
 * ferry__consumer_wait, which polls the iterator's interrupt hook (without `mu`) when it has one.
 *
 * Memory: every buffered element is counted in the runtime's budget. A worker reads a stream
 * only while the budget has room, or when the consumer waits on that stream (relaxed: on any
 * stream, and that one is empty): then it forces the count rather than deadlock. A worker stops
 * reading at the first element that does not fit, so the overshoot is at most one element per
 * worker.
 *
 * Save/restore, without element data. The state is
 *   next_k (input positions the state machine has taken), input_end, ci, block index,
 *   oldest_k (the smallest input position of a stream still in a slot, or next_k),
 *   the input's state at oldest_k (an anchor: the input runs ahead of oldest_k, in every mode,
 *   so the thread that pulls it snapshots its state every few positions), and per slot:
 *   EMPTY | EXHAUSTED (delivered everything; its next visit ends it) | FRESH k (not read yet:
 *   reopened from scratch) | LIVE k, consumed, the inner iterator's state at `consumed`.
 * Inline, an inner iterator is at the consumer's position and saves itself directly (written in
 * the anchor format with nothing to replay). In parallel mode workers run ahead, so every
 * stream has its own anchor, fed by the worker that drives it (a snapshot when the stream is
 * made and every INNER_PERIOD positions, pruned by the consumer): save writes the snapshot at
 * or before the consumer's position in that stream and the count to replay from it. Restore
 * rebuilds the input from its anchor at oldest_k, re-pulls the input positions up to next_k
 * (skipping those whose streams are closed), calls the function again for the LIVE/FRESH slots
 * and restores each inner iterator from its state, replaying at most INNER_PERIOD positions. The
 * format is the same in every mode, so a state saved with threads restores inline and back
 * (num_parallel_calls is not part of the fingerprint; relaxed_order is). The cost of a restore
 * is the input positions between oldest_k and next_k (cheap file names, as a rule) plus one
 * function call per open slot.
 *
 * Element spec: options.output_specs, or the spec of the dataset made for the first input
 * element, found when the interleave is built (that builds an iterator over the input, pulls its
 * first element and calls the function once). Every inner dataset is checked against it when it
 * is made; when the declared spec is more precise than an inner dataset's, its elements are
 * checked one by one.
 */
#include "ops.h"

#define ILV_INNER_PERIOD 32 /* inner positions between anchor snapshots (parallel) */
#define ILV_OUTER_PERIOD 8  /* input positions between anchor snapshots */
#define ILV_BATCH 16        /* positions a worker reads per turn on one stream */
/* ... or fewer: a turn ends once it took this long, so that what is read is handed on instead
 * of waiting behind a slow inner dataset. */
#define ILV_HOLD_NS 50000
#define ILV_MAX_CYCLE 4096
#define ILV_MAX_THREADS 256

enum { SLOT_EMPTY = 0, SLOT_EXHAUSTED = 1, SLOT_FRESH = 2, SLOT_LIVE = 3 };

typedef struct ilv_ds {
    ferry_dataset base;
    const char *api;
    ferry_dataset_fn fn;
    void *user;
    int cycle, block;
    int threads; /* 0 inline, N, or FERRY_AUTOTUNE */
    bool relaxed;
} ilv_ds;

/* One buffered position of a stream (parallel mode). */
typedef struct ilv_item {
    ferry_element *e;   /* rc == FERRY_OK */
    ferry__status *err; /* rc < 0 */
    int rc;             /* FERRY_OK, FERRY_END or an error code */
    size_t bytes;       /* counted in the budget */
} ilv_item;

typedef struct ilv_stream {
    int64_t k;          /* input position it was made from (-1: restored EXHAUSTED) */
    ferry_dataset *ds;  /* the inner dataset (reference), NULL for an error stream */
    ferry__iter *inner; /* NULL for an error stream */
    bool check;         /* check elements against the op's spec */
    ferry__status *err; /* error stream: its one position */
    bool err_done;      /* error stream: delivered (the stream is at its end) */
    int64_t produced;   /* positions read from inner (parallel: by the worker that drives it) */
    int64_t consumed;   /* positions handed to the consumer */
    /* parallel only; guarded by the op's mu */
    ilv_item *ring;
    int cap, head, count;
    bool done; /* END is in the ring: nothing more to read */
    bool busy; /* a worker is driving inner */
    bool has_anchor;
    ferry__anchor anchor;
    ferry__plan plan;        /* the rewrites of ds (planned per stream: ds is new); rt NULL: none */
    struct ilv_stream *next; /* pending FIFO */
} ilv_stream;

typedef struct ilv_it {
    ferry__iter base;
    int cycle, block, nthreads;
    bool parallel, relaxed;
    uint64_t op_seed;
    ferry__iter *outer;
    ferry__anchor outer_anchor;
    bool outer_anchor_ok;
    int64_t pulled; /* input positions pulled (inline: by the consumer; parallel: under input_busy) */
    /* the consumer's state machine */
    ilv_stream **slots;
    int ci, bi, nopen;
    int64_t next_k;
    bool input_end;
    /* parallel */
    /* The stage (core.h): the scope the input and the streams live under, `mu`, the consumer's
     * `cv_cons`, the waker (ilv_cancel) and the tasks. */
    ferry__stage sg;
    bool started, work_cv_ok;
    ferry__cond work_cv;
    struct ilv_task *tasks;
    int nstarted;
    ilv_stream *pend_head, *pend_tail;
    int npend, nlive;
    bool input_busy, input_done;
    ilv_stream *want; /* the stream the consumer waits on */
    bool want_any;    /* relaxed: the consumer waits on any stream */
    bool want_stream; /* the consumer waits for a new stream */
    bool cons_waiting;
    int idle;    /* tasks that returned with nothing to do (each has its `idle` set) */
    int polling; /* tasks polling on work_cv while the budget is full */
    bool stop;
    size_t ring_cap;
    /* The knobs (ilv_knobs_set), under mu: tasks with an index under `active` work, the others
     * stay idle; a stream's ring holds at most ring_limit (<= ring_cap) positions. */
    int active;
    int ring_limit;
    int64_t nbuffered, bbuffered; /* elements and bytes in all rings (for the stats) */
    _Atomic int ci_hint;          /* the consumer's ci, for workers to read the next slots first */
} ilv_it;

/* One unit of parallelism: a task on the executor. */
typedef struct ilv_task {
    ferry__task task;
    ilv_it *it;
    int id;
    bool idle; /* under mu */
} ilv_task;

/* ---- specs ------------------------------------------------------------------------------ */
/* Does dataset d's spec fit the op's? *check: its elements must be checked one by one. */
static int spec_fit(const ferry_dataset *op, const ferry_dataset *d, int64_t k, bool *check, ferry__status *st) {
    *check = false;
    if (d->ncomp != op->ncomp)
        return ferry__fail(st, FERRY_ETYPE,
                           "%s: the dataset made for input element %lld has %zu components; the elements of this "
                           "%s have %zu",
                           op->name, (long long)k, d->ncomp, op->name, op->ncomp);
    for (size_t i = 0; i < op->ncomp; i++) {
        const ferry_tensor_spec *a = &op->specs[i], *b = &d->specs[i];
        char sa[96], sb[96];
        if (a->dtype != b->dtype)
            return ferry__fail(st, FERRY_ETYPE,
                               "%s: component %zu of the dataset made for input element %lld is %s; expected %s",
                               op->name, i, (long long)k, ferry_dtype_name(b->dtype), ferry_dtype_name(a->dtype));
        if (a->shape.rank < 0) continue;
        if (b->shape.rank < 0) {
            *check = true;
            continue;
        }
        bool bad = a->shape.rank != b->shape.rank;
        for (int j = 0; !bad && j < a->shape.rank; j++) {
            if (a->shape.dims[j] < 0) continue;
            if (b->shape.dims[j] < 0) *check = true;
            else if (b->shape.dims[j] != a->shape.dims[j]) bad = true;
        }
        if (bad)
            return ferry__fail(st, FERRY_ETYPE,
                               "%s: component %zu of the dataset made for input element %lld has shape %s; expected %s",
                               op->name, i, (long long)k, ferry__shape_str(&b->shape, sb, sizeof sb),
                               ferry__shape_str(&a->shape, sa, sizeof sa));
    }
    return FERRY_OK;
}

static int check_element(const ferry_dataset *op, ferry_element *e, ferry__status *st) {
    if (e->n != op->ncomp)
        return ferry__fail(st, FERRY_ETYPE, "%s: an inner element has %u components; expected %zu", op->name, e->n,
                           op->ncomp);
    for (size_t i = 0; i < op->ncomp; i++) {
        int rc = ferry__spec_check(&op->specs[i], e->t[i], "inner element component", st);
        if (rc) {
            ferry__status_prefix(st, "%s", op->name);
            return rc;
        }
    }
    return FERRY_OK;
}

/* ---- streams ---------------------------------------------------------------------------- */
static ferry__cancel *inner_scope(ilv_it *it) { return it->parallel ? &it->sg.scope : it->base.ctx.cancel; }

static ferry__ictx inner_ctx(ilv_it *it, int64_t k) {
    ferry__ictx c = it->base.ctx;
    c.cancel = inner_scope(it);
    c.seed = ferry__mix64(it->op_seed, (uint64_t)k);
    return c;
}

/* Plans the rewrites of stream s's new inner dataset d (as the outer graph's were planned) and
 * points c at the plan. A plan that cannot be made only means no rewrite. */
static void stream_plan(ilv_it *it, ilv_stream *s, ferry_dataset *d, ferry__ictx *c) {
    const ferry__plan *outer = it->base.ctx.plan;
    ferry__plan_fini(&s->plan);
    ferry__status ignored;
    if (ferry__plan_build(&s->plan, it->base.ctx.rt, d, outer && outer->enabled, &ignored) != FERRY_OK)
        s->plan = (ferry__plan){.rt = it->base.ctx.rt};
    c->plan = &s->plan;
}

static ilv_stream *stream_alloc(ilv_it *it) {
    ferry_runtime *rt = it->base.ctx.rt;
    ilv_stream *s = ferry__calloc(rt, 1, sizeof *s);
    if (!s) return NULL;
    s->k = -1;
    if (it->parallel) {
        s->cap = (int)it->ring_cap;
        s->ring = ferry__calloc(rt, (size_t)s->cap, sizeof *s->ring);
        if (!s->ring) {
            ferry__free(rt, s);
            return NULL;
        }
    }
    return s;
}

static void item_clear(ferry_runtime *rt, ilv_item *x) {
    ferry_element_free(x->e);
    ferry__free(rt, x->err);
    ferry__budget_release(&rt->budget, x->bytes);
    memset(x, 0, sizeof *x);
}

/* Frees a stream and everything it holds. Never called with mu held (inner may finish scopes). */
static void stream_free(ilv_it *it, ilv_stream *s) {
    if (!s) return;
    ferry_runtime *rt = it->base.ctx.rt;
    for (int i = 0; i < s->count; i++) item_clear(rt, &s->ring[(s->head + i) % s->cap]);
    ferry__free(rt, s->ring);
    ferry__iter_free(s->inner);
    ferry__plan_fini(&s->plan);
    ferry_dataset_unref(s->ds);
    ferry__free(rt, s->err);
    if (s->has_anchor) ferry__anchor_fini(&s->anchor);
    ferry__free(rt, s);
}

/* Turns s into an error stream carrying st (copied). */
static void stream_set_error(ilv_it *it, ilv_stream *s, const ferry__status *st) {
    ferry_runtime *rt = it->base.ctx.rt;
    ferry__iter_free(s->inner);
    s->inner = NULL;
    ferry__plan_fini(&s->plan);
    ferry_dataset_unref(s->ds);
    s->ds = NULL;
    if (!s->err) s->err = ferry__alloc(rt, sizeof *s->err);
    if (s->err) ferry__status_copy(s->err, st);
    s->err_done = false;
    s->done = true;
}

/* Calls the dataset function for input position k on e (borrowed) and checks the result. */
static int call_fn(ilv_it *it, int64_t k, const ferry_element *e, ferry_dataset **out, bool *check, ferry__status *st) {
    const ilv_ds *ds = (const ilv_ds *)it->base.ds;
    const char *name = it->base.ds->name;
    ferry_runtime *rt = it->base.ctx.rt;
    *out = NULL;
    if (ferry__callback_gate(inner_scope(it), name, st)) return FERRY_ECANCELED;
    ferry_context ctx;
    ferry__status_clear(st);
    ferry__context_init(&ctx, rt, inner_scope(it), st, it->op_seed, k);
    ferry_dataset *d = NULL;
    int rc = ds->fn(&ctx, e, &d, ds->user);
    *out = NULL;
    if (rc != FERRY_OK) {
        ferry_dataset_unref(d);
        if (rc > 0) rc = FERRY_EUSER;
        if (st->msg[0] == '\0')
            return ferry__fail(st, rc, "%s: the dataset function failed with %s for input element %lld", name,
                               ferry_error_name(rc), (long long)k);
        st->code = rc;
        ferry__status_prefix(st, "%s: the dataset function failed for input element %lld", name, (long long)k);
        return rc;
    }
    if (!d)
        return ferry__fail(st, FERRY_EUSER,
                           "%s: the dataset function returned FERRY_OK but no dataset for input "
                           "element %lld",
                           name, (long long)k);
    if (d->rt != rt) {
        ferry_dataset_unref(d);
        return ferry__fail(st, FERRY_EINVAL,
                           "%s: the dataset function returned a dataset of another runtime for input element %lld",
                           name, (long long)k);
    }
    rc = spec_fit(it->base.ds, d, k, check, st);
    if (rc) {
        ferry_dataset_unref(d);
        return rc;
    }
    *out = d;
    return FERRY_OK;
}

/* Opens s for input position k from the input's result (rc_in; e taken; in_st its error). Any
 * failure makes s an error stream: opening never fails as a whole. Runs without mu. */
static void stream_open(ilv_it *it, ilv_stream *s, int64_t k, int rc_in, ferry_element *e, const ferry__status *in_st) {
    ferry__status st;
    s->k = k;
    if (rc_in != FERRY_OK) {
        ferry__status_copy(&st, in_st);
        st.code = rc_in;
        stream_set_error(it, s, &st);
        return;
    }
    bool check = false;
    ferry_dataset *d = NULL;
    int rc = call_fn(it, k, e, &d, &check, &st);
    ferry_element_free(e);
    if (rc) {
        stream_set_error(it, s, &st);
        return;
    }
    ferry__ictx c = inner_ctx(it, k);
    ferry__iter *inner = NULL;
    stream_plan(it, s, d, &c);
    rc = ferry__iter_make(d, &c, NULL, &inner, &st);
    if (rc == FERRY_OK && it->parallel) {
        rc = ferry__anchor_init(&s->anchor, it->base.ctx.rt, ILV_INNER_PERIOD, &st);
        if (rc == FERRY_OK) {
            s->has_anchor = true;
            rc = ferry__anchor_take(&s->anchor, inner, 0, true, &st);
        }
    }
    if (rc) {
        ferry__iter_free(inner);
        ferry_dataset_unref(d);
        ferry__status_prefix(&st, "%s: making the iterator for input element %lld", it->base.ds->name, (long long)k);
        stream_set_error(it, s, &st);
        return;
    }
    s->ds = d;
    s->inner = inner;
    s->check = check;
}

/* ---- parallel plumbing ------------------------------------------------------------------ */
/* Cancellation (the stage's waker, under mu; it also wakes the consumer). */
static void ilv_cancel(void *arg) {
    ilv_it *it = arg;
    it->stop = true;
    ferry__cond_broadcast(&it->work_cv);
}

static bool budget_room(ferry_runtime *rt) {
    return atomic_load_explicit(&rt->budget.used, memory_order_relaxed) < rt->budget.limit;
}

/* A worker may read s: it has room, and the budget has room too, or the consumer waits on s (or,
 * relaxed, on any stream and s is empty): then the budget is overdrawn rather than deadlocked. */
static bool drivable(const ilv_it *it, const ilv_stream *s) {
    if (!s || !s->inner || s->done || s->busy || s->count >= FERRY__MIN(s->cap, it->ring_limit)) return false;
    return ((s == it->want || it->want_any) && s->count == 0) || budget_room(it->base.ctx.rt);
}

/* Publishes the ring occupancy in the node's stats. Caller holds mu. */
static void note_buffered(ilv_it *it, int64_t elems, int64_t bytes) {
    it->nbuffered += elems;
    it->bbuffered += bytes;
    if (it->base.stats) {
        atomic_store_explicit(&it->base.stats->buffered_elements, it->nbuffered, memory_order_relaxed);
        atomic_store_explicit(&it->base.stats->buffered_bytes, it->bbuffered, memory_order_relaxed);
    }
}

/* Picks a stream for a worker to read (marks it busy), or NULL. Caller holds mu. */
static ilv_stream *pick_stream(ilv_it *it) {
    ilv_stream *best = NULL;
    int ci = atomic_load_explicit(&it->ci_hint, memory_order_relaxed);
    if (drivable(it, it->want)) best = it->want;
    for (int i = 0; !best && i < it->cycle; i++) {
        ilv_stream *s = it->slots[(ci + i) % it->cycle];
        if (drivable(it, s) && s->count == 0) best = s;
    }
    for (int i = 0; !best && i < it->cycle; i++) {
        ilv_stream *s = it->slots[(ci + i) % it->cycle];
        if (drivable(it, s) && (!best || s->count < best->count)) best = s;
    }
    for (ilv_stream *s = it->pend_head; !best && s; s = s->next)
        if (drivable(it, s)) best = s;
    if (best) best->busy = true;
    return best;
}

static bool can_open(const ilv_it *it) { return !it->input_busy && !it->input_done && it->nlive < 2 * it->cycle; }

/* Reads up to a batch of positions from s into its ring (fewer when reading takes over
 * ILV_HOLD_NS). Called with mu held; returns with it held; drops it while reading. */
static void drive_stream(ilv_it *it, ilv_stream *s) {
    ferry_runtime *rt = it->base.ctx.rt;
    ilv_item local[ILV_BATCH];
    int room = FERRY__MIN(s->cap, it->ring_limit) - s->count;
    if (room > ILV_BATCH) room = ILV_BATCH;
    ferry__mutex_unlock(&it->sg.mu);
    int n = 0;
    bool ended = false;
    int64_t t0 = ferry__now_ns();
    while (n < room && !ferry__cancelled(&it->sg.scope)) {
        if (n > 0 && !budget_room(rt)) break;
        if (n > 0 && ferry__now_ns() - t0 > ILV_HOLD_NS) break;
        ilv_item *x = &local[n];
        memset(x, 0, sizeof *x);
        ferry__status st;
        int rc = ferry__anchor_take(&s->anchor, s->inner, s->produced, false, &st);
        ferry_element *e = NULL;
        if (rc == FERRY_OK) rc = ferry__iter_next(s->inner, &e, &st);
        if (rc == FERRY_END) {
            x->rc = FERRY_END;
            n++;
            ended = true;
            break;
        }
        s->produced++;
        if (rc == FERRY_OK && s->check) {
            rc = check_element(it->base.ds, e, &st);
            if (rc) {
                ferry_element_free(e);
                e = NULL;
            }
        }
        x->rc = rc;
        if (rc == FERRY_OK) {
            x->e = e;
            x->bytes = ferry_element_nbytes(e);
        } else {
            x->err = ferry__alloc(rt, sizeof *x->err);
            if (x->err) ferry__status_copy(x->err, &st);
        }
        n++;
        if (!ferry__budget_try(&rt->budget, x->bytes)) {
            /* Over budget: keep this one (the one element of overshoot a worker may hold). */
            ferry__budget_force(&rt->budget, x->bytes);
            break;
        }
    }
    ferry__stage_time(&it->sg, FERRY__TIME_WORK, ferry__now_ns() - t0);
    ferry__stage_lock(&it->sg, &it->sg.mu);
    int64_t bytes = 0;
    for (int i = 0; i < n; i++) {
        s->ring[(s->head + s->count++) % s->cap] = local[i];
        bytes += (int64_t)local[i].bytes;
    }
    note_buffered(it, ended ? n - 1 : n, bytes);
    if (ended) s->done = true;
    s->busy = false;
    if (it->cons_waiting && n > 0) ferry__cond_signal(&it->sg.cv_cons);
}

/* Pulls the next input position and opens a stream for it. Called with mu held and input_busy
 * just set; returns with mu held. */
static void open_next(ilv_it *it) {
    ferry_runtime *rt = it->base.ctx.rt;
    ferry__mutex_unlock(&it->sg.mu);
    int64_t t0 = ferry__now_ns();
    ilv_stream *s = stream_alloc(it);
    ferry__status st;
    ferry_element *e = NULL;
    int rc = FERRY_ENOMEM;
    if (s) {
        rc = ferry__anchor_take(&it->outer_anchor, it->outer, it->pulled, false, &st);
        if (rc == FERRY_OK) rc = ferry__iter_next(it->outer, &e, &st);
        if (rc != FERRY_END) {
            int64_t k = it->pulled++;
            stream_open(it, s, k, rc, e, &st);
        }
    }
    ferry__stage_time(&it->sg, FERRY__TIME_WORK, ferry__now_ns() - t0);
    ferry__stage_lock(&it->sg, &it->sg.mu);
    it->input_busy = false;
    if (!s) {
        /* Out of memory for a small struct: let the consumer or a later turn retry. */
        ferry__cond_timedwait(&it->work_cv, &it->sg.mu, 1000000);
        return;
    }
    if (rc == FERRY_END) {
        it->input_done = true;
        ferry__mutex_unlock(&it->sg.mu);
        stream_free(it, s);
        ferry__mutex_lock(&it->sg.mu);
    } else {
        if (it->pend_tail) it->pend_tail->next = s;
        else it->pend_head = s;
        it->pend_tail = s;
        it->npend++;
        it->nlive++;
    }
    (void)rt;
    if (it->cons_waiting) ferry__cond_signal(&it->sg.cv_cons);
}

static void wake_idle_worker(ilv_it *it);

static void ilv_run(ferry__task *task) {
    ilv_task *t = task->arg;
    ilv_it *it = t->it;
    ferry_runtime *rt = it->base.ctx.rt;
    ferry__mutex_lock(&it->sg.mu);
    while (!it->stop && !ferry__cancelled(&it->sg.scope)) {
        if (ferry__task_yield_due(task)) {
            ferry__task_wake(task);
            break;
        }
        if (t->id >= it->active) { /* not needed now (the knobs): idle until raised */
            t->idle = true;
            it->idle++;
            wake_idle_worker(it); /* a poke meant for the work may have woken this one */
            break;
        }
        bool open_first = it->want_stream && can_open(it);
        ilv_stream *s = open_first ? NULL : pick_stream(it);
        if (s) {
            drive_stream(it, s);
            continue;
        }
        if (can_open(it)) {
            it->input_busy = true;
            open_next(it);
            continue;
        }
        if (budget_room(rt)) { /* nothing to do: return the worker until poke_workers */
            t->idle = true;
            it->idle++;
            break;
        }
        it->polling++;
        int64_t t0 = ferry__now_ns();
        bool blocked = ferry__exec_block_begin(&rt->exec);
        ferry__cond_timedwait(&it->work_cv, &it->sg.mu, 1000000);
        it->polling--;
        ferry__stage_time(&it->sg, FERRY__TIME_WAIT_CONSUMER, ferry__now_ns() - t0);
        if (blocked) { /* wait for a core without mu: the tasks that hold the cores need it */
            ferry__mutex_unlock(&it->sg.mu);
            ferry__exec_block_end(&rt->exec, blocked, true);
            ferry__mutex_lock(&it->sg.mu);
        }
    }
    ferry__mutex_unlock(&it->sg.mu);
}

static int start_workers(ilv_it *it, ferry__status *st) {
    it->started = true;
    for (int i = 0; i < it->nthreads; i++) {
        it->tasks[i].it = it;
        it->tasks[i].id = i;
        int rc = ferry__stage_task_open(&it->sg, &it->tasks[i].task, ilv_run, &it->tasks[i], st);
        if (rc) {
            if (it->nstarted > 0) break; /* go on with fewer */
            it->started = false;
            return rc;
        }
        ferry__mutex_lock(&it->sg.mu); /* the knobs read it from another thread */
        it->nstarted++;
        ferry__mutex_unlock(&it->sg.mu);
    }
    for (int i = 0; i < it->nstarted; i++) ferry__task_wake(&it->tasks[i].task);
    ferry__mutex_lock(&it->sg.mu);
    if (it->base.stats) atomic_store(&it->base.stats->parallelism, FERRY__MIN(it->active, it->nstarted));
    ferry__mutex_unlock(&it->sg.mu);
    return FERRY_OK;
}

/* Wakes one idle task that may work (index under `active`), if any. Caller holds mu. */
static void wake_idle_worker(ilv_it *it) {
    if (it->idle == 0) return;
    for (int i = 0; i < it->nstarted && i < it->active; i++)
        if (it->tasks[i].idle) {
            it->tasks[i].idle = false;
            it->idle--;
            ferry__task_wake(&it->tasks[i].task);
            return;
        }
}

/* Wakes a worker when one sleeps. Caller holds mu. */
static void poke_workers(ilv_it *it) {
    if (it->polling > 0) {
        ferry__cond_signal(&it->work_cv);
        return;
    }
    wake_idle_worker(it);
}

static void cons_wait(ilv_it *it) {
    int64_t t0 = ferry__now_ns();
    it->cons_waiting = true;
    poke_workers(it);
    /* This consumer may be an executor worker (a stage above runs on it): the wait is blocked. */
    bool blocked = ferry__exec_block_begin(&it->base.ctx.rt->exec);
    (void)ferry__consumer_wait(&it->sg, 0);
    if (blocked) { /* wait for a core without mu: the tasks that hold the cores need it */
        ferry__mutex_unlock(&it->sg.mu);
        ferry__exec_block_end(&it->base.ctx.rt->exec, blocked, true);
        ferry__mutex_lock(&it->sg.mu);
    }
    it->cons_waiting = false;
    ferry__stage_time(&it->sg, FERRY__TIME_WAIT_INPUT, ferry__now_ns() - t0);
}

static int cancelled_rc(ilv_it *it, ferry__status *st) {
    return ferry__fail(st, FERRY_ECANCELED, "%s: iterator is being destroyed", it->base.ds->name);
}

/* Takes item x out of s's ring. Caller holds mu. */
static ilv_item ring_pop(ilv_it *it, ilv_stream *s) {
    ilv_item x = s->ring[s->head];
    memset(&s->ring[s->head], 0, sizeof x);
    s->head = (s->head + 1) % s->cap;
    s->count--;
    if (x.rc != FERRY_END) note_buffered(it, -1, -(int64_t)x.bytes);
    if (s->count <= FERRY__MIN(s->cap, it->ring_limit) / 2) poke_workers(it);
    return x;
}

/* Hands item x to the consumer. */
static int deliver(ilv_it *it, ilv_item *x, ferry_element **out, ferry__status *st) {
    ferry_runtime *rt = it->base.ctx.rt;
    ferry__budget_release(&rt->budget, x->bytes);
    int rc = x->rc;
    if (rc == FERRY_OK) {
        *out = x->e;
    } else if (x->err) {
        ferry__status_copy(st, x->err);
        st->code = rc;
        ferry__free(rt, x->err);
    } else {
        ferry__fail(st, rc, "%s: an inner iterator failed with %s (no memory for its message)", it->base.ds->name,
                    ferry_error_name(rc));
    }
    return rc;
}

/* ---- consumer ------------------------------------------------------------------------------ */
/* The next position of stream s: FERRY_OK, an error, or FERRY_END. */
static int stream_pop(ilv_it *it, ilv_stream *s, ferry_element **out, ferry__status *st) {
    if (!s->inner) {
        if (s->err_done) return FERRY_END;
        s->err_done = true;
        s->consumed++;
        if (s->err) {
            ferry__status_copy(st, s->err);
            return s->err->code < 0 ? s->err->code : FERRY_EUSER;
        }
        return ferry__fail(st, FERRY_ENOMEM, "%s: an input element failed (no memory for its message)",
                           it->base.ds->name);
    }
    if (!it->parallel) {
        ferry_element *e = NULL;
        int rc = ferry__iter_next(s->inner, &e, st);
        if (rc == FERRY_END) return FERRY_END;
        s->consumed++;
        s->produced++;
        if (rc == FERRY_OK && s->check) {
            rc = check_element(it->base.ds, e, st);
            if (rc) {
                ferry_element_free(e);
                return rc;
            }
        }
        if (rc == FERRY_OK) *out = e;
        return rc;
    }
    ferry__mutex_lock(&it->sg.mu);
    while (s->count == 0) {
        if (it->stop || ferry__cancelled(&it->sg.scope)) {
            it->want = NULL;
            ferry__mutex_unlock(&it->sg.mu);
            return cancelled_rc(it, st);
        }
        it->want = s;
        cons_wait(it);
    }
    it->want = NULL;
    ilv_item x = ring_pop(it, s);
    if (x.rc != FERRY_END) s->consumed++;
    if (s->has_anchor && (s->consumed & (ILV_INNER_PERIOD - 1)) == 0) {
        ferry__mutex_unlock(&it->sg.mu);
        ferry__anchor_prune(&s->anchor, s->consumed);
    } else {
        ferry__mutex_unlock(&it->sg.mu);
    }
    if (x.rc == FERRY_END) return FERRY_END;
    return deliver(it, &x, out, st);
}

/* Smallest input position of a stream in a slot that is not EXHAUSTED, or next_k. */
static int64_t oldest_k(const ilv_it *it) {
    int64_t m = it->next_k;
    for (int i = 0; i < it->cycle; i++) {
        const ilv_stream *s = it->slots[i];
        if (s && s->k >= 0 && s->k < m && !(s->inner == NULL && s->err_done)) m = s->k;
    }
    return m;
}

/* Closes the stream in slot i (it has ended for the consumer). */
static void close_slot(ilv_it *it, int i) {
    ilv_stream *s = it->slots[i];
    if (it->parallel) ferry__mutex_lock(&it->sg.mu);
    it->slots[i] = NULL;
    it->nopen--;
    if (it->parallel) {
        it->nlive--;
        poke_workers(it);
        ferry__mutex_unlock(&it->sg.mu);
    }
    stream_free(it, s);
    ferry__anchor_prune(&it->outer_anchor, oldest_k(it));
}

/* Next stream for an empty slot, in input order: *s NULL at the end of the input. Inline: pull
 * and open here; parallel: take it from the pending FIFO. */
static int take_stream(ilv_it *it, ilv_stream **out, ferry__status *st) {
    *out = NULL;
    if (!it->parallel) {
        ilv_stream *s = stream_alloc(it);
        if (!s) return ferry__fail(st, FERRY_ENOMEM, "%s: allocating a stream failed", it->base.ds->name);
        ferry_element *e = NULL;
        int rc = ferry__anchor_take(&it->outer_anchor, it->outer, it->pulled, false, st);
        if (rc) {
            stream_free(it, s);
            return rc;
        }
        rc = ferry__iter_next(it->outer, &e, st);
        if (rc == FERRY_END) {
            stream_free(it, s);
            return FERRY_OK;
        }
        int64_t k = it->pulled++;
        stream_open(it, s, k, rc, e, st);
        *out = s;
        return FERRY_OK;
    }
    ferry__mutex_lock(&it->sg.mu);
    while (!it->pend_head) {
        if (it->input_done) {
            ferry__mutex_unlock(&it->sg.mu);
            return FERRY_OK;
        }
        if (it->stop || ferry__cancelled(&it->sg.scope)) {
            it->want_stream = false;
            ferry__mutex_unlock(&it->sg.mu);
            return cancelled_rc(it, st);
        }
        it->want_stream = true;
        cons_wait(it);
    }
    it->want_stream = false;
    ilv_stream *s = it->pend_head;
    it->pend_head = s->next;
    if (!it->pend_head) it->pend_tail = NULL;
    s->next = NULL;
    it->npend--;
    ferry__mutex_unlock(&it->sg.mu);
    *out = s;
    return FERRY_OK;
}

static void advance(ilv_it *it) {
    it->bi = 0;
    it->ci = (it->ci + 1) % it->cycle;
    if (it->parallel) atomic_store_explicit(&it->ci_hint, it->ci, memory_order_relaxed);
}

static int next_ordered(ilv_it *it, ferry_element **out, ferry__status *st) {
    for (;;) {
        ilv_stream *s = it->slots[it->ci];
        if (s) {
            int rc = stream_pop(it, s, out, st);
            if (rc == FERRY_ECANCELED && it->parallel && ferry__cancelled(&it->sg.scope)) return rc;
            if (rc != FERRY_END) {
                if (++it->bi >= it->block) advance(it);
                return rc;
            }
            close_slot(it, it->ci);
            advance(it);
        } else if (!it->input_end) {
            int rc = take_stream(it, &s, st);
            if (rc) return rc;
            if (!s) {
                it->input_end = true;
                continue;
            }
            if (it->parallel) ferry__mutex_lock(&it->sg.mu);
            it->slots[it->ci] = s;
            if (it->parallel) ferry__mutex_unlock(&it->sg.mu);
            it->nopen++;
            it->next_k++;
        } else {
            if (it->nopen == 0) return FERRY_END;
            advance(it);
        }
    }
}

/* relaxed_order: the first open slot (from ci on) with something ready. */
static int next_relaxed(ilv_it *it, ferry_element **out, ferry__status *st) {
    ferry__mutex_lock(&it->sg.mu);
    for (;;) {
        for (int j = 0; j < it->cycle && it->pend_head; j++) {
            if (it->slots[j]) continue;
            ilv_stream *s = it->pend_head;
            it->pend_head = s->next;
            if (!it->pend_head) it->pend_tail = NULL;
            s->next = NULL;
            it->npend--;
            it->slots[j] = s;
            it->nopen++;
            it->next_k++;
        }
        int found = -1;
        for (int off = 0; off < it->cycle && found < 0; off++) {
            int j = (it->ci + off) % it->cycle;
            ilv_stream *s = it->slots[j];
            if (s && (!s->inner || s->count > 0)) found = j;
        }
        if (found >= 0) {
            ilv_stream *s = it->slots[found];
            int rc;
            if (!s->inner) {
                if (!s->err_done) {
                    ferry__mutex_unlock(&it->sg.mu);
                    it->ci = (found + 1) % it->cycle;
                    return stream_pop(it, s, out, st);
                }
                rc = FERRY_END;
            } else {
                ilv_item x = ring_pop(it, s);
                rc = x.rc;
                if (rc != FERRY_END) {
                    s->consumed++;
                    bool prune = (s->consumed & (ILV_INNER_PERIOD - 1)) == 0;
                    ferry__mutex_unlock(&it->sg.mu);
                    if (prune) ferry__anchor_prune(&s->anchor, s->consumed);
                    it->ci = (found + 1) % it->cycle;
                    return deliver(it, &x, out, st);
                }
            }
            /* END of this stream: close it and look again. */
            it->slots[found] = NULL;
            it->nopen--;
            it->nlive--;
            poke_workers(it);
            ferry__mutex_unlock(&it->sg.mu);
            stream_free(it, s);
            ferry__anchor_prune(&it->outer_anchor, oldest_k(it));
            ferry__mutex_lock(&it->sg.mu);
            continue;
        }
        if (it->nopen == 0 && !it->pend_head && it->input_done) {
            it->input_end = true;
            ferry__mutex_unlock(&it->sg.mu);
            return FERRY_END;
        }
        if (it->stop || ferry__cancelled(&it->sg.scope)) {
            ferry__mutex_unlock(&it->sg.mu);
            return cancelled_rc(it, st);
        }
        it->want_any = true;
        cons_wait(it);
        it->want_any = false;
    }
}

static int ilv_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    ilv_it *it = (ilv_it *)it_;
    if (it->parallel && !it->started) {
        int rc = start_workers(it, st);
        if (rc) return rc;
    }
    if (it->relaxed) return next_relaxed(it, out, st);
    return next_ordered(it, out, st);
}

/* ---- save ------------------------------------------------------------------------------- */
/* Writes an inner iterator's state in the anchor format (nothing to replay). Inline mode. */
static int write_direct(ilv_it *it, ferry__iter *inner, ferry__writer *w, ferry__status *st) {
    return ferry__anchor_write_now(inner, it->base.ctx.rt, w, it->base.ds->name, st);
}

static int ilv_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    ilv_it *it = (ilv_it *)it_;
    int64_t ok = oldest_k(it);
    ferry__w_i64(w, it->next_k);
    ferry__w_u8(w, it->input_end ? 1 : 0);
    ferry__w_u32(w, (uint32_t)it->ci);
    ferry__w_u32(w, (uint32_t)it->bi);
    ferry__w_i64(w, ok);
    int rc = ferry__anchor_write(&it->outer_anchor, ok, w, st);
    if (rc) return rc;
    ferry__w_u32(w, (uint32_t)it->cycle);
    for (int i = 0; i < it->cycle; i++) {
        ilv_stream *s = it->slots[i];
        if (!s) {
            ferry__w_u8(w, SLOT_EMPTY);
        } else if (!s->inner) {
            if (s->err_done || s->k < 0) {
                ferry__w_u8(w, SLOT_EXHAUSTED);
            } else {
                ferry__w_u8(w, SLOT_FRESH);
                ferry__w_i64(w, s->k);
            }
        } else {
            ferry__w_u8(w, SLOT_LIVE);
            ferry__w_i64(w, s->k);
            ferry__w_i64(w, s->consumed);
            rc = it->parallel ? ferry__anchor_write(&s->anchor, s->consumed, w, st) : write_direct(it, s->inner, w, st);
            if (rc) {
                ferry__status_prefix(st, "%s: saving the stream of input element %lld", it->base.ds->name,
                                     (long long)s->k);
                return rc;
            }
        }
    }
    return FERRY_OK;
}

/* ---- knobs ------------------------------------------------------------------------------ */
/* The knobs (ferry__knobs.set): parallelism = the tasks that may work (the others go idle as they
 * come back; raising wakes them), buffer = the positions buffered over all `cycle` streams (each
 * stream's ring holds buffer / cycle, at least 1, at most what its ring has room for). Output and
 * order do not change: the consumer's state machine alone decides them. */
static void ilv_knobs_set(void *stage, int parallelism, int64_t buffer) {
    ilv_it *it = stage;
    ferry__mutex_lock(&it->sg.mu);
    if (parallelism > 0) {
        it->active = FERRY__MIN(parallelism, it->nthreads);
        if (it->base.stats) atomic_store(&it->base.stats->parallelism, it->active);
    }
    if (buffer > 0) {
        int64_t per = FERRY__MAX((int64_t)1, FERRY__MIN(buffer / it->cycle, (int64_t)it->ring_cap));
        it->ring_limit = (int)per;
        if (it->base.stats) atomic_store(&it->base.stats->capacity, per * it->cycle);
    }
    for (int i = 0; i < it->nstarted && i < it->active; i++) poke_workers(it); /* room or workers came */
    ferry__mutex_unlock(&it->sg.mu);
}

/* ---- make / restore --------------------------------------------------------------------- */
static void ilv_destroy(ferry__iter *it_) {
    ilv_it *it = (ilv_it *)it_;
    ferry__stage_stop(&it->sg);
    if (it->sg.sync_ok) note_buffered(it, -it->nbuffered, -it->bbuffered); /* threads joined: no lock needed */
    for (int i = 0; it->slots && i < it->cycle; i++) stream_free(it, it->slots[i]);
    while (it->pend_head) {
        ilv_stream *s = it->pend_head;
        it->pend_head = s->next;
        stream_free(it, s);
    }
    ferry__iter_free(it->outer);
    if (it->outer_anchor_ok) ferry__anchor_fini(&it->outer_anchor);
    ferry__stage_fini(&it->sg);
    if (it->work_cv_ok) ferry__cond_destroy(&it->work_cv); /* the waker (ilv_cancel) is gone */
    ferry_runtime *rt = it->base.ctx.rt;
    ferry__free(rt, it->slots);
    ferry__free(rt, it->tasks);
    ferry__iter_release(&it->base);
}

typedef struct saved_slot {
    int kind;
    int64_t k, consumed;
    ferry__reader state; /* LIVE: the inner state in the anchor format */
} saved_slot;

/* Skips the input from it->pulled to position `to` (snapshotting on the way). */
static int input_skip_to(ilv_it *it, int64_t to, ferry__status *st) {
    while (it->pulled < to) {
        int rc = ferry__anchor_take(&it->outer_anchor, it->outer, it->pulled, false, st);
        if (rc) return rc;
        int64_t want = to - it->pulled, got = 0;
        if (want > ILV_OUTER_PERIOD) want = ILV_OUTER_PERIOD;
        rc = ferry__iter_skip(it->outer, want, &got, st);
        if (rc) return rc;
        it->pulled += got;
        if (got < want)
            return ferry__fail(st, FERRY_ECORRUPT,
                               "%s: state corrupt or input changed: the input ended at position %lld, before the "
                               "saved position %lld",
                               it->base.ds->name, (long long)it->pulled, (long long)to);
    }
    return FERRY_OK;
}

static int restore_state(ilv_it *it, ferry__reader *r, ferry__status *st) {
    ferry_dataset *in = it->base.ds->inputs[0];
    const char *name = it->base.ds->name;
    int64_t next_k, ok;
    uint8_t input_end;
    uint32_t ci, bi, cycle;
    int rc = ferry__r_i64(r, &next_k, st);
    if (!rc) rc = ferry__r_u8(r, &input_end, st);
    if (!rc) rc = ferry__r_u32(r, &ci, st);
    if (!rc) rc = ferry__r_u32(r, &bi, st);
    if (!rc) rc = ferry__r_i64(r, &ok, st);
    if (rc) return rc;
    if (next_k < 0 || ok < 0 || ok > next_k || ci >= (uint32_t)it->cycle || bi >= (uint32_t)it->block || input_end > 1)
        return ferry__fail(st, FERRY_ECORRUPT,
                           "%s: state corrupt: positions next=%lld oldest=%lld, cycle index %u, block index %u out "
                           "of range (cycle %d, block %d)",
                           name, (long long)next_k, (long long)ok, ci, bi, it->cycle, it->block);
    /* The input, at oldest_k. */
    ferry__reader peek = *r;
    uint64_t replay = 0;
    rc = ferry__r_u64(&peek, &replay, st);
    if (rc) return rc;
    ferry__ictx octx = it->base.ctx;
    octx.cancel = inner_scope(it);
    int64_t replayed = 0;
    rc = ferry__anchor_restore(in, &octx, r, &it->outer, &replayed, st);
    if (rc) return rc;
    if ((uint64_t)replayed != replay)
        return ferry__fail(st, FERRY_ECORRUPT, "%s: state corrupt or input changed: the input ended while replaying",
                           name);
    it->pulled = ok;
    rc = ferry__anchor_take(&it->outer_anchor, it->outer, ok, true, st);
    if (rc) return rc;
    rc = ferry__r_u32(r, &cycle, st);
    if (rc) return rc;
    if (cycle != (uint32_t)it->cycle)
        return ferry__fail(st, FERRY_ECORRUPT, "%s: state corrupt: cycle of %u slots, the pipeline has %d", name, cycle,
                           it->cycle);
    saved_slot *ss = ferry__calloc(it->base.ctx.rt, (size_t)it->cycle, sizeof *ss);
    if (!ss) return ferry__fail(st, FERRY_ENOMEM, "%s: allocating restore slots failed", name);
    for (int i = 0; i < it->cycle && !rc; i++) {
        uint8_t kind;
        rc = ferry__r_u8(r, &kind, st);
        if (rc) break;
        ss[i].kind = kind;
        if (kind == SLOT_EMPTY || kind == SLOT_EXHAUSTED) continue;
        if (kind != SLOT_FRESH && kind != SLOT_LIVE) {
            rc = ferry__fail(st, FERRY_ECORRUPT, "%s: state corrupt: slot %d has kind %u", name, i, kind);
            break;
        }
        rc = ferry__r_i64(r, &ss[i].k, st);
        if (rc) break;
        if (ss[i].k < ok || ss[i].k >= next_k) {
            rc = ferry__fail(st, FERRY_ECORRUPT,
                             "%s: state corrupt: slot %d holds input position %lld, outside [%lld, %lld)", name, i,
                             (long long)ss[i].k, (long long)ok, (long long)next_k);
            break;
        }
        for (int j = 0; j < i; j++)
            if ((ss[j].kind == SLOT_FRESH || ss[j].kind == SLOT_LIVE) && ss[j].k == ss[i].k)
                rc = ferry__fail(st, FERRY_ECORRUPT, "%s: state corrupt: input position %lld is in two slots", name,
                                 (long long)ss[i].k);
        if (rc || kind == SLOT_FRESH) continue;
        rc = ferry__r_i64(r, &ss[i].consumed, st);
        if (rc) break;
        if (ss[i].consumed < 0) {
            rc = ferry__fail(st, FERRY_ECORRUPT, "%s: state corrupt: negative position in slot %d", name, i);
            break;
        }
        /* The inner state, in the anchor format: u64 replay, u64 size, bytes. */
        ss[i].state = *r;
        uint64_t rp, size;
        rc = ferry__r_u64(r, &rp, st);
        if (!rc) rc = ferry__r_u64(r, &size, st);
        if (rc) break;
        if (size > ferry__r_left(r)) {
            rc = ferry__fail(st, FERRY_ETRUNCATED, "%s: state truncated: slot %d claims %llu bytes, %zu left", name, i,
                             (unsigned long long)size, ferry__r_left(r));
            break;
        }
        r->p += size;
        ss[i].state.end = r->p;
    }
    /* Re-pull the input positions of the open slots, in input order. */
    int64_t pos = ok;
    while (!rc) {
        int best = -1;
        for (int i = 0; i < it->cycle; i++)
            if ((ss[i].kind == SLOT_FRESH || ss[i].kind == SLOT_LIVE) && ss[i].k >= pos &&
                (best < 0 || ss[i].k < ss[best].k))
                best = i;
        if (best < 0) break;
        saved_slot *sv = &ss[best];
        rc = input_skip_to(it, sv->k, st);
        if (rc) break;
        ilv_stream *s = stream_alloc(it);
        if (!s) {
            rc = ferry__fail(st, FERRY_ENOMEM, "%s: allocating a stream failed", name);
            break;
        }
        it->slots[best] = s;
        it->nopen++;
        ferry_element *e = NULL;
        ferry__status est;
        rc = ferry__anchor_take(&it->outer_anchor, it->outer, it->pulled, false, st);
        if (rc) break;
        int irc = ferry__iter_next(it->outer, &e, &est);
        if (irc == FERRY_END) {
            rc = ferry__fail(st, FERRY_ECORRUPT,
                             "%s: input changed: it ended at position %lld, which the state holds open", name,
                             (long long)sv->k);
            break;
        }
        it->pulled++;
        pos = sv->k + 1;
        if (sv->kind == SLOT_FRESH) {
            stream_open(it, s, sv->k, irc, e, &est);
            continue;
        }
        s->k = sv->k;
        if (irc != FERRY_OK) {
            rc = ferry__fail(st, FERRY_ECORRUPT,
                             "%s: input changed: position %lld was an element and is now an error: %s", name,
                             (long long)sv->k, est.msg);
            break;
        }
        bool check = false;
        rc = call_fn(it, sv->k, e, &s->ds, &check, st);
        ferry_element_free(e);
        if (rc) break;
        s->check = check;
        ferry__ictx c = inner_ctx(it, sv->k);
        uint64_t want_replay = 0;
        {
            ferry__reader p2 = sv->state;
            ferry__r_u64(&p2, &want_replay, st);
        }
        int64_t got = 0;
        stream_plan(it, s, s->ds, &c);
        rc = ferry__anchor_restore(s->ds, &c, &sv->state, &s->inner, &got, st);
        if (rc) break;
        if (sv->state.p != sv->state.end || (uint64_t)got != want_replay) {
            rc = ferry__fail(st, FERRY_ECORRUPT,
                             "%s: state corrupt or input changed: the stream of input position %lld could not be "
                             "restored to position %lld",
                             name, (long long)sv->k, (long long)sv->consumed);
            break;
        }
        s->consumed = s->produced = sv->consumed;
        if (it->parallel) {
            rc = ferry__anchor_init(&s->anchor, it->base.ctx.rt, ILV_INNER_PERIOD, st);
            if (rc) break;
            s->has_anchor = true;
            rc = ferry__anchor_take(&s->anchor, s->inner, s->produced, true, st);
        }
    }
    if (!rc) rc = input_skip_to(it, next_k, st);
    for (int i = 0; !rc && i < it->cycle; i++) {
        if (ss[i].kind != SLOT_EXHAUSTED) continue;
        ilv_stream *s = stream_alloc(it);
        if (!s) {
            rc = ferry__fail(st, FERRY_ENOMEM, "%s: allocating a stream failed", name);
            break;
        }
        s->err_done = true;
        s->done = true;
        it->slots[i] = s;
        it->nopen++;
    }
    ferry__free(it->base.ctx.rt, ss);
    if (rc) return rc;
    it->next_k = next_k;
    it->input_end = input_end != 0;
    it->ci = (int)ci;
    it->bi = (int)bi;
    it->nlive = it->nopen;
    return FERRY_OK;
}

static const ferry__iter_vtable ilv_iter_vt = {ilv_next, ilv_save, NULL, ilv_destroy};

static int ilv_make(ferry_dataset *ds_, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                    ferry__status *st) {
    const ilv_ds *ds = (const ilv_ds *)ds_;
    ferry_runtime *rt = ctx->rt;
    ilv_it *it = ferry__iter_alloc(ds_, ctx, &ilv_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    it->cycle = ds->cycle;
    it->block = ds->block;
    /* AUTOTUNE: a task per stream of the cycle, of which the default works at first (the
     * autotuner may set more to work) */
    int start = ds->threads == FERRY_AUTOTUNE ? ferry__autotune_threads(rt) : ds->threads;
    it->nthreads = ds->threads == FERRY_AUTOTUNE ? FERRY__MAX(start, it->cycle) : ds->threads;
    if (it->nthreads > ILV_MAX_THREADS) it->nthreads = ILV_MAX_THREADS;
    if (start > it->nthreads) start = it->nthreads;
    it->parallel = it->nthreads > 0;
    it->relaxed = it->parallel && ds->relaxed;
    it->op_seed = ferry__mix64(ctx->seed, ds_->salt);
    it->ring_cap = (size_t)FERRY__MAX(2 * ILV_BATCH, ds->block);
    int rc = FERRY_OK;
    it->slots = ferry__calloc(rt, (size_t)it->cycle, sizeof *it->slots);
    if (!it->slots) rc = ferry__fail(st, FERRY_ENOMEM, "%s: allocating %d slots failed", ds_->name, it->cycle);
    if (!rc && ferry__anchor_init(&it->outer_anchor, rt, ILV_OUTER_PERIOD, st) == FERRY_OK) it->outer_anchor_ok = true;
    else if (!rc) rc = st->code;
    if (!rc && it->parallel) {
        it->tasks = ferry__calloc(rt, (size_t)it->nthreads, sizeof *it->tasks);
        if (!it->tasks) rc = ferry__fail(st, FERRY_ENOMEM, "%s: allocating its tasks failed", ds_->name);
        ferry__ictx sctx; /* what inner_scope gives: the stage's scope */
        if (!rc) rc = ferry__stage_init(&it->sg, &it->base, 0, &sctx, st);
        if (!rc) {
            if (ferry__cond_init(&it->work_cv))
                rc = ferry__fail(st, FERRY_ENOMEM, "%s: creating a condition variable failed", ds_->name);
            else it->work_cv_ok = true;
        }
        /* Ready at once: no thread runs before start_workers, and a restore makes streams under
         * the scope. */
        it->active = start;
        it->ring_limit = (int)it->ring_cap;
        ferry__knobs k = {.set = ilv_knobs_set,
                          .stage = it,
                          .parallelism_max = it->nthreads,
                          .parallelism_limit = ILV_MAX_THREADS,
                          .buffer_max = (int64_t)it->ring_cap * it->cycle,
                          .tune_parallelism = ds->threads == FERRY_AUTOTUNE,
                          .tune_buffer = ds->threads == FERRY_AUTOTUNE};
        if (!rc) ferry__stage_ready(&it->sg, ilv_cancel, it, start, k.buffer_max, &k);
    }
    if (!rc) {
        if (state) {
            rc = restore_state(it, state, st);
        } else {
            ferry__ictx octx = *ctx;
            octx.cancel = inner_scope(it);
            rc = ferry__iter_make(ds_->inputs[0], &octx, NULL, &it->outer, st);
            if (!rc) rc = ferry__anchor_take(&it->outer_anchor, it->outer, 0, true, st);
        }
    }
    if (!rc && it->parallel && ctx->warm_start) rc = start_workers(it, st);
    if (rc) {
        ilv_destroy(&it->base);
        return rc;
    }
    *out = &it->base;
    return FERRY_OK;
}

static const ferry__dataset_vtable ilv_vt = {.make = ilv_make, .destroy = NULL};

/* ---- construction ----------------------------------------------------------------------- */
/* Finds the element spec from the dataset made for the input's first element. */
static int probe_spec(const char *api, ferry_dataset *in, ferry_dataset_fn fn, void *user, ferry_tensor_spec **specs,
                      size_t *n) {
    ferry_runtime *rt = in->rt;
    *specs = NULL;
    *n = 0;
    ferry__cancel c;
    if (ferry__cancel_init(&c, NULL))
        return ferry__set_last_error(FERRY_ENOMEM, "%s: creating a cancel scope failed", api);
    ferry__ictx ctx = {.rt = rt, .cancel = &c, .pipe = NULL, .seed = 0, .warm_start = false};
    ferry__status st;
    ferry__iter *itr = NULL;
    ferry_element *e = NULL;
    ferry_dataset *d = NULL;
    int rc = ferry__iter_make(in, &ctx, NULL, &itr, &st);
    if (rc == FERRY_OK) rc = ferry__iter_next(itr, &e, &st);
    if (rc == FERRY_END) {
        rc = FERRY_OK; /* an empty input: no elements, no components */
    } else if (rc == FERRY_OK) {
        ferry_context fctx;
        ferry__status_clear(&st);
        ferry__context_init(&fctx, rt, &c, &st, 0, 0);
        rc = fn(&fctx, e, &d, user);
        if (rc > 0) rc = FERRY_EUSER;
        if (rc == FERRY_OK && !d) rc = ferry__fail(&st, FERRY_EUSER, "it returned FERRY_OK but no dataset");
        if (rc == FERRY_OK && d->rt != rt)
            rc = ferry__fail(&st, FERRY_EINVAL, "it returned a dataset of another runtime");
        if (rc == FERRY_OK && d->ncomp > 0) {
            *specs = ferry__calloc(rt, d->ncomp, sizeof **specs);
            if (!*specs) rc = ferry__fail(&st, FERRY_ENOMEM, "allocating specs failed");
            else memcpy(*specs, d->specs, d->ncomp * sizeof **specs);
        }
        if (rc == FERRY_OK) *n = d->ncomp;
        else if (st.msg[0] == '\0') ferry__fail(&st, rc, "it failed with %s", ferry_error_name(rc));
        if (rc) ferry__status_prefix(&st, "the dataset function, called for the input's first element");
    }
    ferry_element_free(e);
    ferry_dataset_unref(d);
    ferry__cancel_fire(&c);
    ferry__iter_free(itr);
    ferry__cancel_fini(&c);
    if (rc)
        return ferry__set_last_error(rc,
                                     "%s: options.num_outputs is 0, so the element spec is taken from the dataset made "
                                     "for the first input element, which failed (pass output_specs instead): %s",
                                     api, st.msg);
    return FERRY_OK;
}

static int check_specs(const char *api, size_t n, const ferry_tensor_spec *specs) {
    for (size_t i = 0; i < n; i++) {
        int rc = ferry__spec_validate(&specs[i], api, "options.output_specs", i);
        if (rc) return rc;
    }
    return FERRY_OK;
}

int ferry__dataset_interleave_named(const char *api, const char *name, ferry_dataset *in, ferry_dataset_fn fn,
                                    void *user, const ferry_interleave_options *opts, ferry_dataset **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", api);
    *out = NULL;
    int rc = ferry__check_dataset(in, api, "in");
    if (!rc && opts) rc = ferry__check_name(api, opts->name);
    if (rc) return rc;
    FERRY__CHECK_ARG(fn != NULL, FERRY_EINVAL, "%s: argument 'fn' is NULL", api);
    ferry_interleave_options o = {0};
    if (opts) o = *opts;
    FERRY__CHECK_ARG(o.num_parallel_calls == FERRY_AUTOTUNE ||
                         (o.num_parallel_calls >= 0 && o.num_parallel_calls <= ILV_MAX_THREADS),
                     FERRY_EINVAL,
                     "%s: options.num_parallel_calls is %d; it must be 0 (inline), 1 to %d or FERRY_AUTOTUNE", api,
                     o.num_parallel_calls, ILV_MAX_THREADS);
    FERRY__CHECK_ARG(o.cycle_length >= 0 && o.cycle_length <= ILV_MAX_CYCLE, FERRY_EINVAL,
                     "%s: options.cycle_length is %d; it must be 0 (default) to %d", api, o.cycle_length,
                     ILV_MAX_CYCLE);
    FERRY__CHECK_ARG(o.block_length >= 0 && o.block_length <= (1 << 20), FERRY_EINVAL,
                     "%s: options.block_length is %d; it must be 0 (default: 1) to %d", api, o.block_length, 1 << 20);
    FERRY__CHECK_ARG(o.num_outputs == 0 || o.output_specs != NULL, FERRY_EINVAL,
                     "%s: options.output_specs is NULL with num_outputs %zu", api, o.num_outputs);
    FERRY__CHECK_ARG(o.num_outputs <= 4096, FERRY_EINVAL, "%s: options.num_outputs is %zu; at most 4096", api,
                     o.num_outputs);
    rc = check_specs(api, o.num_outputs, o.output_specs);
    if (rc) return rc;
    ferry_runtime *rt = in->rt;
    int threads = o.num_parallel_calls == FERRY_AUTOTUNE ? rt->cpu_budget : o.num_parallel_calls;
    int cycle = o.cycle_length ? o.cycle_length : (threads > 0 ? FERRY__MIN(threads, ILV_MAX_CYCLE) : 1);
    int block = o.block_length ? o.block_length : 1;
    ferry_tensor_spec *probed = NULL;
    size_t ncomp = o.num_outputs;
    const ferry_tensor_spec *specs = o.output_specs;
    if (ncomp == 0) {
        rc = probe_spec(api, in, fn, user, &probed, &ncomp);
        if (rc) return rc;
        specs = probed;
    }
    int64_t card = in->cardinality == 0 ? 0 : FERRY_UNKNOWN;
    ferry_dataset *ds;
    rc = ferry__dataset_new(rt, &ilv_vt, name, sizeof(ilv_ds), 1, &in, ncomp, specs, card, &ds);
    ferry__free(rt, probed);
    if (rc) return rc;
    ilv_ds *d = (ilv_ds *)ds;
    d->api = api;
    d->fn = fn;
    d->user = user;
    d->cycle = cycle;
    d->block = block;
    d->threads = o.num_parallel_calls;
    d->relaxed = o.relaxed_order;
    /* With relaxed order over threads, the order of this op's output depends on timing: ops
     * above it (prefetch, parallel map) must snapshot it at every position, never replay it. */
    if (o.relaxed_order && threads != 0) ds->unordered = true;
    /* The function pointer is not hashed (it differs across processes); the thread count is not
     * either (deterministic output does not depend on it), so states and caches carry over. */
    ferry__dataset_hash_i64(ds, cycle);
    ferry__dataset_hash_i64(ds, block);
    ferry__dataset_hash_i64(ds, o.relaxed_order && threads > 0);
    ferry__dataset_own_user(ds, user, o.user_free);
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}

int ferry_dataset_interleave(ferry_dataset *in, ferry_dataset_fn fn, void *user, const ferry_interleave_options *opts,
                             ferry_dataset **out) {
    return ferry__dataset_interleave_named(__func__, "interleave", in, fn, user, opts, out);
}
