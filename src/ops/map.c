/*
 * map.c - `map(fn)`: applies a user function to every element, inline or on the runtime's
 * executor.
 *
 * Modes
 *   num_parallel_calls 0: inline. next pulls one input element on the caller's thread, calls fn,
 *   checks the output against the spec and returns it. No thread, no lock, no buffer.
 *   N > 0 (FERRY_AUTOTUNE: the runtime's cpu_budget less one core for the consumer, at least
 *   one): N worker tasks on the runtime's executor (core/executor.c), which runs at most
 *   cpu_budget of all stages' tasks at once.
 *
 * Positions, indices and seeds
 *   A "seq" is a position in this iterator's input stream (0 = the first position pulled by this
 *   iterator); every input position takes one seq, errors included. The element index a map
 *   function sees (ferry_context_index) is base_index + seq, where base_index is the absolute
 *   position this iterator started at (0, or the saved position of a restored iterator), and its
 *   random generator is seeded from mix(mix(iteration seed, op salt), options.seed) and that
 *   index: the same draws whichever thread runs the call and whatever the thread count.
 *
 * Parallel design: chunks, a reorder window, and no lock per element
 *   Workers pull CHUNKS of consecutive input elements under `in_mu` (the only lock around the
 *   input), tag them with seqs, run fn outside any lock, and deposit each result (element, error,
 *   or a "dropped" marker, see below) in slots[seq % window] with a release store of the slot's
 *   `ready` = seq. The chunk size adapts per worker to about 20 us of pull + fn time (1 when fn
 *   is slow, up to 64 when it is fast), bounded by window / (2 x threads) and by the byte budget.
 *   A chunk's results are deposited together, but no result is held for long when the input or
 *   fn turns slow: pulling stops once the chunk took MAP_HOLD_NS (50 us), and the results made
 *   are deposited as soon as the calls took that long (so a sudden slow call delays at most
 *   ~50 us worth of results before it); the next chunk is then 1 element. A whole batch to stack
 *   (fusion, below) is the exception: it is pulled and deposited whole.
 *   Workers never pull a seq >= head_pub + window, where head_pub is the consumer's published
 *   head: the window bounds results in flight and finished, independently of the thread count
 *   (tf.data ties both together, so one slow element stalls every thread). The window is the
 *   user's reorder_window, or by default adaptive: room for ~100 us of work per thread (at least
 *   2 threads' worth; a sleeping thread takes ~25 us to wake, more on a loaded machine, so fast
 *   functions need thousands of results of slack while a 1 ms function needs 4 per thread), at
 *   least 4 per thread, at most 4096 slots, and at most a quarter of the byte budget.
 *   The input is pulled under one lock, so when pulling takes most of a call's time more threads
 *   only contend: only about (pull + fn) / pull workers (smoothed, with hysteresis) stay active,
 *   the others park until fn gets slower.
 *   Deterministic order: the consumer hands out seq head, head+1, ... reading slots[head % window]
 *   without a lock (acquire load of `ready`). Relaxed order: a worker also pushes each deposited
 *   run of slots into `done` (a ring of window entries, under `mu`); the consumer pops runs
 *   without a lock and hands results out in completion order; head is then the smallest seq not
 *   handed out ("low"), advanced over a consumer-private `taken` mark per slot.
 *   The consumer publishes head_pub, releases budget and updates stats once per 16 results (and
 *   before it waits), not per element.
 *   Input END at seq p is recorded as end_seq = p (under in_mu); the consumer returns END once
 *   head == end_seq. Input errors and fn errors occupy their seq like elements.
 *
 * Locks and waits (see base/queue.h for the spin-then-sleep and flag protocol)
 *   in_mu: input, next_seq, in_end, drop cursor, anchor snapshots (taken through map_in_lock,
 *   which marks a contended wait blocked for the executor). mu: cv_cons, the done ring's writers,
 *   wake_head, the workers' room_wait and parked flags. Never lock in_mu while holding mu; the
 *   cancel waker locks only mu.
 *   Both sides batch their wake-ups. A consumer that has to sleep waits on cv_cons (flag
 *   cons_sleeping) for its head plus, with a large window, a batch of an eighth of it (the seq
 *   cons_wait_seq); only the worker whose run completes that wait signals. A worker blocking on
 *   room or budget (workers_stalled), END and a 1 ms timeout end a batch wait early. A worker
 *   task without window room spins briefly, then returns its executor worker (room_wait, counter
 *   workers_sleeping, wake_head = the head_pub it needs: half the window, so the consumer wakes
 *   the tasks once per half window, not per result). A parked task (id >= active) returns too,
 *   and map_adapt wakes it when `active` rises. Waits that stay inside a run (the byte budget,
 *   in_mu, the consumer side when this map is the input of another stage's task) are marked
 *   blocked for the executor. The consumer sleeps through ferry__consumer_wait, which polls the
 *   iterator's interrupt hook when it has one, except while the consumer holds in_mu (helping,
 *   or skipping on the input): no hook runs under a lock.
 *
 * Budget
 *   A worker counts a chunk's result bytes with one budget try; if they do not fit, it deposits
 *   result by result, waiting for room, except that the result the consumer waits for (seq ==
 *   head_pub) is counted at once (forced) whatever the budget: otherwise the consumer and the
 *   workers could wait on each other. The consumer releases the bytes of handed-out results in
 *   batches. Peak use: budget + one element (the forced head). Results a worker is still
 *   computing are counted once deposited; a chunk is capped so that all workers' chunks together
 *   stay under an eighth of the budget.
 *
 * Cancellation and destroy
 *   Parallel map owns a cancel scope (child of its ctx's scope; the input lives under it) and a
 *   waker that broadcasts cv_cons. Every wait loops on (condition || cancelled); idle tasks need
 *   no waking. destroy fires the scope, closes the tasks (waiting for runs in progress), frees the
 *   results left in slots (releasing their
 *   budget), destroys the input and frees itself.
 *
 * Saved state (save runs on the consumer's thread between next calls)
 *   i64 low: absolute position of the first input position not yet handed out |
 *   u32 n | n x (u64 offset, u64 length): ranges above low (offsets from low, ascending, disjoint)
 *   that must not be produced again: results already handed out in relaxed order, positions a
 *   relaxed skip dropped, and ranges still pending from the state this iterator was restored
 *   from | the input's state at low as an anchor (u64 replay, u64 size, bytes): inline map writes
 *   replay 0 and its input's state; parallel map writes the latest snapshot the pulling worker
 *   took at or before low (every 64 positions; every position when the input is "unordered",
 *   i.e. timing-dependent, so that nothing is replayed) and how many positions to replay from it.
 *   Relaxed order over an unordered input falls back to input order: positions would not name
 *   the same elements after a restore.
 *   A restored iterator makes its input from the anchor, and workers skip each range on the
 *   input (no fn call) and deposit one "dropped" marker for it. Deterministic state always has
 *   n == 0 or only inherited ranges. The format is the same for every mode and thread count, so
 *   a state restores under any num_parallel_calls and either order.
 *
 * Skip: inline and not-yet-started parallel map forward to the input's skip (fn is not called).
 * Running parallel map discards the results already pulled, then skips the rest on the input
 * under in_mu; relaxed order remembers the skipped input range as a "gap" (saved as a range).
 *
 * Stacking whole batches (fuse_n > 0): the engine of map_and_batch (ops/map_and_batch.c, the
 * op a graph rewrite puts in place of batch over a parallel map; ferry__map_make_batched)
 *   Positions are grouped on a grid of fuse_n seqs starting at `grid` (where batch's batches
 *   start). When fn is cheap (ewma_all x fuse_n <= MAP_FUSE_SLOW_NS), a worker pulls a whole grid
 *   chunk, calls fn on each position and stacks each output into its ferry__stack at once (the
 *   element is freed while in cache), and deposits the chunk as ONE result at its first seq:
 *   RES_BATCH (every position stacked) or RES_ROWS (the stacked prefix before the first failure)
 *   followed by the rest as single results. Otherwise (slow or unknown fn, or next_seq off the
 *   grid) chunks are the usual per-element ones, cut at the next grid start. The consumer side:
 *   ferry__map_next_batch hands a RES_BATCH out whole; anything else goes to `fcur` and
 *   map_and_batch falls back to batching row by row through map_next, which hands out fcur one
 *   position at a time (rows of a stacked result as zero-copy row slices). After such a batch,
 *   map_and_batch calls ferry__map_batch_boundary and the workers move the grid there, so whole batches
 *   come back after the chunks already pulled. The window adapts as usual but never below
 *   fuse_floor (a chunk per worker plus one being handed out). Save inside fcur writes the
 *   position fcur_seq + fcur_i; anchors are pruned at head - fuse_n so that one at or before it
 *   exists. Output, errors and saved state are exactly those of batch over an unfused map.
 *
 * Stats (parallel; map_and_batch's record when stacking): async; parallelism (threads); buffer_capacity = the effective window;
 * buffered = results deposited and not handed out; work_ns = time in fn (per chunk); assemble_ns =
 * stacking rows (sampled); lock_wait_ns = waits for in_mu (blocked, or gone idle until it was
 * free) and for mu;
 * wait_input_ns = consumer blocked; wait_consumer_ns = workers blocked on room or budget.
 */
#include "ops.h"

#include "base/queue.h"

#define MAP_CHUNK_MAX 64
#define MAP_CHUNK_TARGET_NS 20000
#define MAP_HOLD_NS 50000 /* a worker holds pulled or finished results at most this long */
#define MAP_ANCHOR_PERIOD 64
#define MAP_PUBLISH_EVERY 16
#define MAP_MAX_THREADS 1024
#define MAP_MAX_WINDOW (1 << 20)
#define MAP_MAX_OUTPUTS 4096
#define MAP_MAX_RANGES (1 << 20)
#define MAP_MAX_GAPS 16
#define MAP_MAX_OFFSET ((int64_t)1 << 62)
#define MAP_WINDOW_SLOTS 4096       /* slots of the default (adaptive) window */
#define MAP_WINDOW_TARGET_NS 100000 /* work per thread (at least 2) the default window holds */
#define MAP_FUSE_MAX 4096           /* batches up to this many rows are fused into the map */
#define MAP_FUSE_SLOW_NS 250000     /* fused: stack a batch in one worker when its calls take less */
/* The consumer stacks a batch itself instead of waiting when its calls take between these (a
 * cheaper batch does not pay for moving the input's state between two pulling threads: P3 halves
 * when its consumer helps). */
#define MAP_HELP_MAX_NS 1000000
#define MAP_HELP_MIN_NS 50000
#define MAP_HELP_LOCK_NS 20000 /* a thread waits at most this long for another's pull (map_spin_for_in_mu) */

typedef struct map_ds {
    ferry_dataset base;
    ferry_map_fn fn;
    void *user;
    int num_parallel_calls;
    int max_parallel_calls; /* 0: MAP_MAX_THREADS */
    bool relaxed;
    int reorder_window;
    uint64_t seed;
} map_ds;

typedef struct map_range {
    int64_t start, len;
} map_range;

/* A result as a worker builds it and as it sits in a slot (24 bytes: a slot is half a line). */
enum { RES_ELEM = 0, RES_ERR = 1, RES_DROP = 2, RES_BATCH = 3, RES_ROWS = 4 };
typedef struct map_res {
    void *p;      /* RES_ELEM: the element (before fn: the input); RES_ERR: its ferry__status, or
                     NULL when allocating it failed; RES_BATCH: a whole batch (stacked rows);
                     RES_ROWS: stacked rows of a chunk that is not a whole batch (handed out row
                     by row) */
    int64_t aux;  /* RES_ELEM, RES_BATCH, RES_ROWS: bytes counted in the budget; RES_DROP: input
                     positions covered */
    int32_t code; /* RES_ERR: the error; RES_BATCH, RES_ROWS: rows (input positions covered) */
    int32_t kind;
} map_res;

/* The first seq at or below x that is = g (mod n). */
static inline int64_t grid_floor(int64_t x, int64_t g, int64_t n) {
    int64_t r = (x - g) % n;
    return x - (r < 0 ? r + n : r);
}

static inline bool res_stacked(const map_res *r) { return r->kind == RES_BATCH || r->kind == RES_ROWS; }
static inline size_t res_bytes(const map_res *r) { return r->kind == RES_ELEM || res_stacked(r) ? (size_t)r->aux : 0; }
static inline int64_t res_span(const map_res *r) { return r->kind == RES_DROP ? r->aux : res_stacked(r) ? r->code : 1; }

typedef struct map_slot {
    _Atomic int64_t ready; /* the seq whose result is here; -1 before the first */
    map_res r;
} map_slot;

typedef struct map_it map_it;

typedef struct map_worker {
    map_it *m;
    int id;
    ferry__task task; /* runs map_run on the runtime's executor */
    int64_t chunk;    /* positions per chunk (adapted; kept across runs) */
    ferry__spinner spin;
    /* Under mu: the task returned its worker and waits to be woken. */
    bool room_wait;     /* for window room (head_pub >= wake_head) */
    bool parked;        /* while id >= active */
    bool in_wait;       /* for in_mu, held by another worker (map_in_lock_or_idle) */
    int64_t in_wait_ns; /* when this task began to wait for in_mu (0: it does not); the task's own */
    int64_t idle_ns;    /* when it began to wait for room */
    map_res *items;     /* fused: room for a batch's positions */
    ferry__stack *stk;  /* fused: stacks the rows */
} map_worker;

struct map_it {
    ferry__iter base;
    ferry_runtime *rt;
    const map_ds *ds;
    ferry__iter *input;
    uint64_t op_seed;
    int nthreads;                      /* 0: inline; the tasks opened at the start */
    int tcap;                          /* worker records allocated: the most tasks it may open (> nthreads under
                     FERRY_AUTOTUNE: the autotuner may give it more threads, map_grow) */
    int64_t window;                    /* slots (seq % window); the effective window `win` may be smaller */
    bool win_fixed;                    /* reorder_window given: win == window */
    _Atomic bool par_tuned, win_tuned; /* set through the knobs: map_adapt leaves them alone */
    bool relaxed;
    int64_t base_index;
    map_range *drops; /* ranges not to produce again (from a saved state), ascending */
    size_t ndrops;
    /* map_and_batch fusion (fuse_n > 0 rows per batch, see ferry__map_next_batch): a worker
     * pulls fuse_n positions at a time and deposits them as one RES_BATCH at the chunk's first
     * seq, or, when a position failed or the rows do not stack, as the chunk's single results. */
    int64_t fuse_n;
    int64_t fuse_floor;   /* fused: the window never shrinks below this (room for every worker's
                               chunk and the consumer's) */
    int64_t ahead;        /* seqs added to the window for a prefetch folded into this stage
                               (ferry__ictx.ahead outputs) */
    _Atomic int64_t grid; /* fused: chunks start at seqs = grid (mod fuse_n): where batch's
                               batches start (moved by ferry__map_batch_boundary) */

    /* Input side: under in_mu when parallel. On a line of its own: the puller writes next_seq
     * on every position while the other workers read the fields above on every call. */
    char pad_in0[64];
    int64_t next_seq;
    bool in_end;
    size_t drop_i; /* first drop range not passed */
    char pad_in1[64];

    /* Parallel machinery; flags say what exists, for unwinding a failed make. The stage (core.h)
     * holds the scope, `mu` (deposits in relaxed order, the workers' wait flags) and `cv_cons`,
     * the tasks, the input's anchors and the knobs (map_knobs_set). */
    ferry__stage sg;
    bool in_mu_ok, started;
    ferry__mutex in_mu;
    ferry__status anchor_st;
    bool anchor_failed;
    map_slot *slots;
    map_worker *workers;
    int nworkers;
    map_worker helper; /* the consumer's, when it works instead of waiting (map_help) */
    map_range *done;   /* relaxed: runs of deposited slots, ring of `window` entries */
    int64_t done_r;    /* consumer-private */

    char pad0[64];
    _Atomic int64_t win;                 /* effective window (workers read it) */
    _Atomic int active;                  /* workers that may pull; the others park */
    _Atomic int64_t ewma_all, ewma_pull; /* smoothed ns per element: pull + fn, pull alone */
    char pad5[64];
    _Atomic int64_t head_pub;
    _Atomic int64_t end_seq; /* INT64_MAX until the input ended */
    char pad1[64];
    _Atomic int64_t done_w; /* written under mu */
    char pad2[64];
    _Atomic int cons_sleeping;
    _Atomic int64_t cons_wait_head, cons_wait_seq; /* the head it waits for, and the seq whose
                                                      arrival ends the wait (hysteresis) */
    char pad3[64];
    _Atomic int workers_sleeping;
    _Atomic int64_t wake_head;
    _Atomic int in_users;        /* threads holding or waiting for in_mu */
    _Atomic int in_idle;         /* worker tasks gone idle until in_mu is free */
    _Atomic int workers_stalled; /* waiting for window room or budget (under mu when it rises) */
    char pad4[64];

    /* Consumer-private. */
    int64_t head; /* deterministic: next seq to hand out; relaxed: smallest not handed out */
    int64_t since_pub, last_prune;
    size_t pending_bytes;
    int64_t *taken;    /* relaxed: per slot, span handed out (negative: a dropped marker), 0: not */
    int64_t max_taken; /* relaxed: highest seq marked in taken (bounds the scan in save) */
    ferry__spinner spin;
    map_range cur;                /* relaxed: run being handed out */
    map_range gaps[MAP_MAX_GAPS]; /* relaxed: input ranges skipped directly, ascending */
    int ngaps;
    /* Fused: a result taken from the window and handed out one position at a time (a batch's
     * rows as row slices, or a single result that ferry__map_next_batch could not return). */
    bool fcur_on;
    map_res fcur;
    int64_t fcur_seq, fcur_i;
};

/* ---- the call -------------------------------------------------------------------------- */
static bool map_spec_fits(const ferry_tensor_spec *s, const ferry_tensor *t) {
    if (s->dtype != t->dtype) return false;
    if (s->shape.rank < 0) return true;
    if (s->shape.rank != t->rank) return false;
    for (int i = 0; i < t->rank; i++)
        if (s->shape.dims[i] >= 0 && s->shape.dims[i] != t->dims[i]) return false;
    return true;
}

/* Runs fn on `in` (taken) for element `index`; on success *out is the checked output. On failure
 * st holds a message naming the op and the element. */
static int map_call(map_it *m, ferry__cancel *cancel, ferry_element *in, int64_t index, ferry_element **out,
                    ferry__status *st) {
    const map_ds *ds = m->ds;
    *out = NULL;
    if (ferry__callback_gate(cancel, "map", st)) {
        ferry_element_free(in);
        return FERRY_ECANCELED;
    }
    ferry_context ctx;
    ferry__context_init(&ctx, m->rt, cancel, st, m->op_seed, index);
    st->code = 0;
    st->msg[0] = '\0';
    ferry_element *o = NULL;
    int rc = ds->fn(&ctx, in, &o, ds->user);
    *out = NULL;
    if (rc != FERRY_OK) {
        if (o && o != in) ferry_element_free(o); /* the contract says NULL; do not leak */
        if (rc > 0) {
            return ferry__fail(st, FERRY_EUSER,
                               "map: element %lld: the map function returned %s, which is not a status it may return",
                               (long long)index, ferry_error_name(rc));
        }
        if (st->msg[0] == '\0')
            return ferry__fail(st, rc, "map: element %lld: the map function failed with %s", (long long)index,
                               ferry_error_name(rc));
        ferry__status_prefix(st, "map: element %lld", (long long)index);
        st->code = rc;
        return rc;
    }
    if (!o)
        return ferry__fail(st, FERRY_EUSER, "map: element %lld: the map function returned FERRY_OK without an output",
                           (long long)index);
    const ferry_dataset *d = &ds->base;
    if (o->n != d->ncomp) {
        ferry__fail(st, FERRY_ETYPE, "map: element %lld: the map function returned %u components but the spec has %zu",
                    (long long)index, o->n, d->ncomp);
        ferry_element_free(o);
        return FERRY_ETYPE;
    }
    for (size_t i = 0; i < d->ncomp; i++) {
        const ferry_tensor *t = o->t[i];
        if (t && map_spec_fits(&d->specs[i], t)) continue;
        char what[64];
        snprintf(what, sizeof what, "map: element %lld: output component %zu", (long long)index, i);
        if (!t) ferry__fail(st, FERRY_ETYPE, "%s is missing (NULL tensor)", what);
        else ferry__spec_check(&d->specs[i], t, what, st);
        ferry_element_free(o);
        return FERRY_ETYPE;
    }
    *out = o;
    return FERRY_OK;
}

static void map_res_free(ferry_runtime *rt, map_res *r) {
    if (r->kind == RES_ELEM || res_stacked(r)) ferry_element_free(r->p);
    else if (r->kind == RES_ERR) ferry__free(rt, r->p);
    r->p = NULL;
}

static void map_res_error(ferry_runtime *rt, map_res *r, int code, const ferry__status *st) {
    ferry__status *e = ferry__alloc(rt, sizeof *e);
    if (e) ferry__status_copy(e, st);
    *r = (map_res){.p = e, .code = code, .kind = RES_ERR};
}

/* ---- the input, drop ranges and direct skips (inline, or under in_mu) -------------------- */
/* The drop range at or around next_seq, or NULL. */
static const map_range *map_drop_here(map_it *m) {
    while (m->drop_i < m->ndrops && m->drops[m->drop_i].start + m->drops[m->drop_i].len <= m->next_seq) m->drop_i++;
    if (m->drop_i < m->ndrops && m->drops[m->drop_i].start <= m->next_seq) return &m->drops[m->drop_i];
    return NULL;
}

static void map_set_end(map_it *m) {
    m->in_end = true;
    atomic_store_explicit(&m->end_seq, m->next_seq, memory_order_release);
}

/* Skips the rest of the drop range at next_seq on the input; returns the positions skipped. */
static int map_skip_drop(map_it *m, const map_range *d, int64_t *span, ferry__status *st) {
    int64_t len = d->start + d->len - m->next_seq;
    int rc = ferry__iter_skip(m->input, len, span, st);
    m->drop_i++;
    return rc;
}

/* Skips up to `want` output positions directly on the input, stepping over drop ranges
 * without counting them. */
static int map_input_skip(map_it *m, int64_t want, int64_t *done, ferry__status *st) {
    *done = 0;
    while (*done < want && !m->in_end) {
        const map_range *d = map_drop_here(m);
        int64_t sk = 0;
        if (d) {
            int64_t len = d->start + d->len - m->next_seq;
            int rc = map_skip_drop(m, d, &sk, st);
            m->next_seq += sk;
            if (rc) return rc;
            if (sk < len) map_set_end(m);
            continue;
        }
        int64_t lim = want - *done;
        if (m->drop_i < m->ndrops) lim = FERRY__MIN(lim, m->drops[m->drop_i].start - m->next_seq);
        int rc = ferry__iter_skip(m->input, lim, &sk, st);
        m->next_seq += sk;
        *done += sk;
        if (rc) return rc;
        if (sk < lim) map_set_end(m);
    }
    return FERRY_OK;
}

/* ---- inline ------------------------------------------------------------------------------ */
static int map_next_inline(map_it *m, ferry_element **out, ferry__status *st) {
    for (;;) {
        if (m->in_end) return FERRY_END;
        const map_range *d = map_drop_here(m);
        if (d) {
            int64_t len = d->start + d->len - m->next_seq, sk = 0;
            int rc = map_skip_drop(m, d, &sk, st);
            m->next_seq += sk;
            if (rc) return rc;
            if (sk < len) map_set_end(m);
            continue;
        }
        ferry_element *e = NULL;
        int rc = ferry__iter_next(m->input, &e, st);
        if (rc == FERRY_END) {
            map_set_end(m);
            return FERRY_END;
        }
        int64_t index = m->base_index + m->next_seq++;
        if (rc < 0) {
            ferry_element_free(e);
            return rc;
        }
        return map_call(m, m->base.ctx.cancel, e, index, out, st);
    }
}

/* ---- parallel: consumer side helpers ------------------------------------------------------ */
/* in_mu, held while pulling the input. A worker that has to wait for it waits for another
 * worker's pull, which may itself wait for a stage below (a prefetch's task): the wait is
 * marked blocked for the executor, or the stage below could find no worker. Once it holds
 * in_mu it waits for a free core: the running tasks never need in_mu without being blocked
 * themselves (they come through here), so they give the cores back. */
static void map_in_lock(map_it *m) {
    bool blocked = atomic_fetch_add(&m->in_users, 1) > 0 && ferry__exec_block_begin(&m->rt->exec);
    ferry__stage_lock(&m->sg, &m->in_mu);
    ferry__exec_block_end(&m->rt->exec, blocked, true);
}

static void map_in_unlock(map_it *m) {
    ferry__mutex_unlock(&m->in_mu);
    atomic_fetch_sub(&m->in_users, 1);
    atomic_thread_fence(memory_order_seq_cst); /* against map_in_lock_or_idle's recheck */
    if (atomic_load(&m->in_idle) > 0) {
        /* One worker task that found in_mu taken went idle: it may pull now. */
        ferry__mutex_lock(&m->sg.mu);
        for (int i = 0; i < m->nworkers; i++) {
            map_worker *w = &m->workers[i];
            if (!w->in_wait) continue;
            w->in_wait = false;
            atomic_fetch_sub(&m->in_idle, 1);
            ferry__task_wake(&w->task);
            break;
        }
        ferry__mutex_unlock(&m->sg.mu);
    }
}

static bool map_slot_ready(map_it *m, int64_t q) {
    return atomic_load_explicit(&m->slots[q % m->window].ready, memory_order_acquire) == q;
}

/* in_mu is taken: another thread pulls a chunk (e_pull a position). Waits for it as long as that
 * pull takes (twice the measured pull of a batch, at most MAP_HELP_LOCK_NS) rather than go to
 * sleep, since a wake-up costs more (~23 us here); never under a one-core budget. The consumer
 * (`helper`) gives up as soon as its head is ready. true once it holds in_mu. */
static bool map_spin_for_in_mu(map_it *m, bool helper) {
    int64_t e_pull = atomic_load_explicit(&m->ewma_pull, memory_order_relaxed);
    int64_t limit = FERRY__MIN(2 * e_pull * FERRY__MAX(m->fuse_n, 1), (int64_t)MAP_HELP_LOCK_NS);
    if (!ferry__may_spin(m->rt) || limit <= 0) return false;
    int64_t t0 = ferry__now_ns();
    bool got = false;
    for (int i = 1; !got; i++) {
        for (int k = 0; k < 16; k++) ferry__cpu_relax();
        /* Loads only while it is held: a failing trylock writes the lock's line, which the
         * puller's own fields share. */
        if (atomic_load_explicit(&m->in_users, memory_order_relaxed) == 0 && (got = ferry__mutex_trylock(&m->in_mu)))
            break;
        if ((helper && map_slot_ready(m, m->head)) || ferry__cancelled(&m->sg.scope)) break;
        if ((i & 15) == 0 && ferry__now_ns() - t0 > limit) break;
    }
    ferry__stage_time(&m->sg, FERRY__TIME_LOCK, ferry__now_ns() - t0);
    return got;
}

/* A worker task takes in_mu if it is free. If another thread holds it (pulling, which may mean
 * waiting for a stage below), a map_and_batch task first waits about as long as a batch's pull
 * (map_spin_for_in_mu: cheaper than a wake-up), then, as any task, goes idle instead of blocking
 * a thread: the next unlock wakes it. Returns false then. So a map's tasks that contend for its
 * one input cost threads only while they work, and the pool never starts threads to replace ones
 * that only wait for a lock. */
static bool map_in_lock_or_idle(map_it *m, map_worker *w) {
    if (ferry__mutex_trylock(&m->in_mu) || (m->fuse_n && map_spin_for_in_mu(m, false))) {
        atomic_fetch_add(&m->in_users, 1);
        if (w->in_wait_ns) { /* woken by the unlock that ended its wait */
            ferry__stage_time(&m->sg, FERRY__TIME_LOCK, ferry__now_ns() - w->in_wait_ns);
            w->in_wait_ns = 0;
        }
        return true;
    }
    if (!w->in_wait_ns) w->in_wait_ns = ferry__now_ns();
    ferry__mutex_lock(&m->sg.mu);
    w->in_wait = true;
    atomic_fetch_add(&m->in_idle, 1);
    ferry__mutex_unlock(&m->sg.mu);
    atomic_thread_fence(memory_order_seq_cst);          /* against map_in_unlock's check */
    if (!ferry__mutex_trylock(&m->in_mu)) return false; /* the holder's unlock wakes this task */
    ferry__mutex_lock(&m->sg.mu);
    if (w->in_wait) { /* not woken meanwhile: take the flag back */
        w->in_wait = false;
        atomic_fetch_sub(&m->in_idle, 1);
    }
    ferry__mutex_unlock(&m->sg.mu);
    atomic_fetch_add(&m->in_users, 1);
    ferry__stage_time(&m->sg, FERRY__TIME_LOCK, ferry__now_ns() - w->in_wait_ns);
    w->in_wait_ns = 0;
    return true;
}

/* Cancellation wakes the consumer; a worker task waiting for room or parked is idle (destroy
 * closes it), and one in a budget wait polls the scope. */
static void map_stat_add(_Atomic int64_t *s, int64_t v) {
    if (v) atomic_fetch_add_explicit(s, v, memory_order_relaxed);
}

/* Wakes the worker tasks that wait for room (every one: wake_head is the least they need).
 * Under mu. */
static void map_wake_room_waiters(map_it *m) {
    atomic_store(&m->wake_head, INT64_MAX);
    int64_t now = 0;
    for (int i = 0; i < m->nworkers; i++) {
        map_worker *w = &m->workers[i];
        if (!w->room_wait) continue;
        w->room_wait = false;
        atomic_fetch_sub(&m->workers_sleeping, 1);
        atomic_fetch_sub(&m->workers_stalled, 1);
        if (m->base.stats) {
            if (!now) now = ferry__now_ns();
            ferry__stage_idle_full(&m->sg, now - w->idle_ns);
        }
        ferry__task_wake(&w->task);
    }
}

/* Wakes the parked worker tasks that may pull again (id < active). Under mu. */
static void map_unpark(map_it *m) {
    int active = atomic_load(&m->active);
    for (int i = 0; i < m->nworkers; i++) {
        map_worker *w = &m->workers[i];
        if (!w->parked || w->id >= active) continue;
        w->parked = false;
        ferry__task_wake(&w->task);
    }
}


/* Publishes the consumer's head, releases the bytes of handed-out results and wakes workers
 * waiting for room once they have it. */
static void map_publish_head(map_it *m) {
    atomic_store_explicit(&m->head_pub, m->head, memory_order_release);
    if (m->pending_bytes) ferry__budget_release(&m->rt->budget, m->pending_bytes);
    ferry__node_stats *s = m->base.stats;
    if (s && m->since_pub) {
        map_stat_add(&s->buffered_elements, -m->since_pub);
        map_stat_add(&s->buffered_bytes, -(int64_t)m->pending_bytes);
    }
    m->since_pub = 0;
    m->pending_bytes = 0;
    if (m->head - m->last_prune >= MAP_ANCHOR_PERIOD) {
        /* fused: a save may still come from inside the last batch taken (rows handed out one by
         * one), so keep the snapshot at or before its start */
        ferry__anchor_prune(&m->sg.anchor, m->head - m->fuse_n);
        m->last_prune = m->head;
    }
    if (atomic_fetch_add(&m->workers_sleeping, 0) > 0 && m->head >= atomic_load(&m->wake_head)) {
        ferry__mutex_lock(&m->sg.mu);
        map_wake_room_waiters(m);
        ferry__mutex_unlock(&m->sg.mu);
    }
}

static void map_account(map_it *m, const map_res *r) {
    m->since_pub++;
    m->pending_bytes += res_bytes(r);
    if (m->since_pub >= MAP_PUBLISH_EVERY || m->fuse_n || m->pending_bytes >= (size_t)1 << 16) map_publish_head(m);
}

static bool map_det_ready(void *arg) {
    map_it *m = arg;
    int64_t h = m->head;
    return map_slot_ready(m, h) || atomic_load_explicit(&m->end_seq, memory_order_acquire) <= h ||
           ferry__cancelled(&m->sg.scope);
}

/* Sleeping condition of the deterministic consumer waiting for a batch: its head is ready and so
 * is cons_wait_seq (a batch of results is there), or the input ended before that seq, or a worker
 * stalls (the window is full or the budget is: no more results come until the consumer takes
 * some). Checked under mu. */
static bool map_det_batch_ready(void *arg) {
    map_it *m = arg;
    int64_t h = m->head, t = atomic_load_explicit(&m->cons_wait_seq, memory_order_relaxed);
    int64_t end = atomic_load_explicit(&m->end_seq, memory_order_acquire);
    if (end <= h || ferry__cancelled(&m->sg.scope)) return true;
    return map_slot_ready(m, h) && (end <= t || map_slot_ready(m, t) || atomic_load(&m->workers_stalled) > 0);
}

/* A worker is about to block on window room or budget: a consumer sleeping for a batch must
 * take what is there instead. */
static void map_stall_begin(map_it *m) {
    ferry__mutex_lock(&m->sg.mu);
    atomic_fetch_add(&m->workers_stalled, 1);
    if (atomic_load(&m->cons_sleeping)) ferry__cond_signal(&m->sg.cv_cons);
    ferry__mutex_unlock(&m->sg.mu);
}

static void map_stall_end(map_it *m) { atomic_fetch_sub(&m->workers_stalled, 1); }

static bool map_rel_ready(void *arg) {
    map_it *m = arg;
    return atomic_load_explicit(&m->done_w, memory_order_acquire) != m->done_r ||
           atomic_load_explicit(&m->end_seq, memory_order_acquire) <= m->head || ferry__cancelled(&m->sg.scope);
}

static bool map_help(map_it *m);

/* Blocks until map_det_ready / map_rel_ready, or works on a chunk itself (map_help) and returns
 * to look again; FERRY_ECANCELED when cancelled instead. */
static int map_wait_results(map_it *m, ferry__status *st) {
    map_publish_head(m);
    ferry__budget_poke(&m->rt->budget); /* a worker holding our head may be waiting for budget */
    bool (*ready)(void *) = m->relaxed ? map_rel_ready : map_det_ready;
    int64_t t0 = ferry__now_ns();
    if (map_help(m)) return FERRY_OK; /* worked on a chunk instead of waiting: look again */
    if (!(ferry__may_spin(m->rt) && ferry__spin_adaptive(&m->spin, ready, m))) {
        /* Sleep until a batch is ready (an eighth of a large window), not one result: with fast
         * functions this keeps wake-ups (~25 us each) rare. The batch wait gives up after 1 ms
         * (a slow call inside the batch must not hold back the results before it for long). */
        int64_t win = atomic_load_explicit(&m->win, memory_order_relaxed);
        int64_t batch = !m->relaxed && win >= 256 ? win / 8 : 0;
        if (batch && m->fuse_n) { /* fused: results start on the chunk grid; wait for a chunk start */
            int64_t g = atomic_load_explicit(&m->grid, memory_order_relaxed);
            batch = grid_floor(m->head, g, m->fuse_n) + FERRY__MAX(1, win / 2 / m->fuse_n) * m->fuse_n - m->head;
        }
        bool blocked = ferry__exec_block_begin(&m->rt->exec); /* this consumer may be a worker */
        ferry__mutex_lock(&m->sg.mu);
        atomic_store(&m->cons_wait_head, m->head);
        atomic_store(&m->cons_wait_seq, m->head + batch);
        for (;;) {
            atomic_exchange(&m->cons_sleeping, 1);
            if (batch ? map_det_batch_ready(m) : ready(m)) break;
            if (!batch) {
                (void)ferry__consumer_wait(&m->sg, 0);
            } else if (!ferry__consumer_wait(&m->sg, 1000000)) {
                batch = 0;
                atomic_store(&m->cons_wait_seq, m->head);
            }
        }
        atomic_store(&m->cons_sleeping, 0);
        ferry__mutex_unlock(&m->sg.mu);
        ferry__exec_block_end(&m->rt->exec, blocked, true);
    }
    ferry__stage_time(&m->sg, FERRY__TIME_WAIT_INPUT, ferry__now_ns() - t0);
    if (ferry__cancelled(&m->sg.scope)) return ferry__fail(st, FERRY_ECANCELED, "map: the iterator is being destroyed");
    return FERRY_OK;
}

static void map_advance_low(map_it *m) {
    for (;;) {
        if (m->ngaps && m->gaps[0].start == m->head) {
            m->head += m->gaps[0].len;
            m->ngaps--;
            memmove(m->gaps, m->gaps + 1, (size_t)m->ngaps * sizeof *m->gaps);
            continue;
        }
        int64_t *t = &m->taken[m->head % m->window];
        if (*t == 0) break;
        m->head += *t > 0 ? *t : -*t;
        *t = 0;
    }
}

/* Takes the next result: FERRY_OK with *r and *seq, FERRY_END, or FERRY_ECANCELED. Dropped
 * markers are returned too (kind RES_DROP). */
static int map_take(map_it *m, map_res *r, int64_t *seq, ferry__status *st) {
    if (!m->relaxed) {
        for (;;) {
            int64_t h = m->head;
            map_slot *s = &m->slots[h % m->window];
            if (atomic_load_explicit(&s->ready, memory_order_acquire) == h) {
                *r = s->r;
                *seq = h;
                m->head = h + res_span(r);
                map_account(m, r);
                return FERRY_OK;
            }
            if (atomic_load_explicit(&m->end_seq, memory_order_acquire) <= h) {
                if (m->since_pub) map_publish_head(m);
                return FERRY_END;
            }
            int rc = map_wait_results(m, st);
            if (rc) return rc;
        }
    }
    for (;;) {
        if (m->cur.len > 0) {
            int64_t q = m->cur.start++;
            m->cur.len--;
            map_slot *s = &m->slots[q % m->window];
            FERRY_ASSERT(atomic_load_explicit(&s->ready, memory_order_acquire) == q);
            *r = s->r;
            *seq = q;
            m->taken[q % m->window] = r->kind == RES_DROP ? -r->aux : 1;
            if (q > m->max_taken) m->max_taken = q;
            map_advance_low(m);
            map_account(m, r);
            return FERRY_OK;
        }
        if (atomic_load_explicit(&m->done_w, memory_order_acquire) != m->done_r) {
            m->cur = m->done[m->done_r % m->window];
            m->done_r++;
            continue;
        }
        if (atomic_load_explicit(&m->end_seq, memory_order_acquire) <= m->head) {
            if (m->since_pub) map_publish_head(m);
            return FERRY_END;
        }
        int rc = map_wait_results(m, st);
        if (rc) return rc;
    }
}

/* ---- parallel: workers -------------------------------------------------------------------- */
typedef struct map_head_arg {
    map_it *m;
    int64_t seq;
} map_head_arg;

static bool map_at_head(void *arg) {
    map_head_arg *a = arg;
    return atomic_load(&a->m->head_pub) >= a->seq;
}

static bool map_room_ready(void *arg) {
    map_head_arg *a = arg;
    return atomic_load_explicit(&a->m->head_pub, memory_order_acquire) >= a->seq || ferry__cancelled(&a->m->sg.scope);
}

/* Room for the next chunk is there (head_pub >= need) after a short adaptive spin: true. Else
 * the worker's task goes idle until the consumer's head reaches `need` (map_publish_head wakes
 * it; it counts as stalled meanwhile) and this returns false, as it does once cancelled. */
static bool map_room_or_idle(map_it *m, map_worker *w, int64_t need) {
    map_head_arg a = {m, need};
    if (ferry__may_spin(m->rt) && ferry__spin_adaptive(&w->spin, map_room_ready, &a))
        return !ferry__cancelled(&m->sg.scope);
    map_stall_begin(m);
    ferry__mutex_lock(&m->sg.mu);
    if (need < atomic_load(&m->wake_head)) atomic_store(&m->wake_head, need);
    atomic_fetch_add(&m->workers_sleeping, 1);
    if (atomic_load(&m->head_pub) >= need || ferry__cancelled(&m->sg.scope)) {
        atomic_fetch_sub(&m->workers_sleeping, 1);
        ferry__mutex_unlock(&m->sg.mu);
        map_stall_end(m);
        return !ferry__cancelled(&m->sg.scope);
    }
    w->room_wait = true;
    w->idle_ns = ferry__now_ns();
    ferry__mutex_unlock(&m->sg.mu);
    return false;
}

/* Worker `id` is not needed now (id >= active): its task goes idle until map_adapt raises
 * `active` (true), unless that happened meanwhile or the input ended (false: go on). */
static bool map_park(map_it *m, map_worker *w) {
    ferry__mutex_lock(&m->sg.mu);
    bool park =
        w->id >= atomic_load(&m->active) && !ferry__cancelled(&m->sg.scope) && atomic_load(&m->end_seq) == INT64_MAX;
    w->parked = park;
    ferry__mutex_unlock(&m->sg.mu);
    if (park && w->in_wait_ns) { /* woken from a wait for in_mu only to park: that wait ended */
        ferry__stage_time(&m->sg, FERRY__TIME_LOCK, ferry__now_ns() - w->in_wait_ns);
        w->in_wait_ns = 0;
    }
    return park;
}

/* Puts n results for seqs s0.. in their slots and tells the consumer. */
static void map_publish(map_it *m, int64_t s0, const map_res *items, int64_t n) {
    int64_t bytes = 0;
    for (int64_t i = 0; i < n; i++) {
        map_slot *s = &m->slots[(s0 + i) % m->window];
        s->r = items[i];
        bytes += (int64_t)res_bytes(&items[i]);
        atomic_store_explicit(&s->ready, s0 + i, memory_order_release);
    }
    ferry__node_stats *st = m->base.stats;
    if (st) {
        map_stat_add(&st->buffered_elements, n);
        map_stat_add(&st->buffered_bytes, bytes);
    }
    if (m->relaxed) {
        ferry__stage_lock(&m->sg, &m->sg.mu);
        int64_t w = atomic_load_explicit(&m->done_w, memory_order_relaxed);
        m->done[w % m->window] = (map_range){s0, n};
        atomic_store_explicit(&m->done_w, w + 1, memory_order_release);
        if (atomic_load(&m->cons_sleeping)) ferry__cond_signal(&m->sg.cv_cons);
        ferry__mutex_unlock(&m->sg.mu);
    } else if (atomic_fetch_add(&m->cons_sleeping, 0)) {
        /* Wake the consumer when this run completes what it waits for: the seq ending its wait,
         * or its head once that seq is there (runs land out of order) or a worker stalls. */
        int64_t want = atomic_load(&m->cons_wait_seq), head = atomic_load(&m->cons_wait_head);
        if ((want >= s0 && want < s0 + n) ||
            (head >= s0 && head < s0 + n && (map_slot_ready(m, want) || atomic_load(&m->workers_stalled) > 0))) {
            ferry__mutex_lock(&m->sg.mu);
            ferry__cond_signal(&m->sg.cv_cons);
            ferry__mutex_unlock(&m->sg.mu);
        }
    }
}

/* Counts the chunk's bytes in the budget (waiting for room, or at once when `force`) and
 * deposits it. false when cancelled (the rest of the chunk is freed). */
static bool map_deposit(map_it *m, int64_t s0, map_res *items, int64_t k, bool force) {
    ferry__budget *b = &m->rt->budget;
    size_t total = 0;
    for (int64_t i = 0; i < k; i++) total += res_bytes(&items[i]);
    if (force && total > 0 && !ferry__budget_try(b, total)) ferry__budget_force(b, total);
    if (total == 0 || force || ferry__budget_try(b, total)) {
        map_publish(m, s0, items, k);
        return true;
    }
    int64_t i = 0;
    while (i < k) {
        int64_t j = i;
        while (j < k && (res_bytes(&items[j]) == 0 || ferry__budget_try(b, res_bytes(&items[j])))) j++;
        if (j > i) {
            map_publish(m, s0 + i, items + i, j - i);
            i = j;
            continue;
        }
        /* items[i] does not fit: wait for room, unless the consumer waits for it. */
        map_head_arg a = {m, s0 + i};
        int64_t t0 = ferry__now_ns();
        map_stall_begin(m);
        bool blocked = ferry__exec_block_begin(&m->rt->exec);
        int rc = ferry__budget_wait(b, res_bytes(&items[i]), &m->sg.scope.flag, map_at_head, &a);
        ferry__exec_block_end(&m->rt->exec, blocked, true);
        map_stall_end(m);
        ferry__stage_time(&m->sg, FERRY__TIME_WAIT_CONSUMER, ferry__now_ns() - t0);
        if (rc) {
            for (; i < k; i++) map_res_free(m->rt, &items[i]);
            return false;
        }
        map_publish(m, s0 + i, items + i, 1);
        i++;
    }
    return true;
}

/* Snapshots the input at next_seq when a period mark is reached (or always when forced). Taken
 * right after a pull, before the results are deposited, so that the snapshot at the position the
 * consumer reaches always exists (an unordered input must never be replayed). Caller holds in_mu
 * (or no worker runs). */
static void map_snapshot(map_it *m, bool force) {
    if (!force && m->next_seq < m->sg.anchor.next_pos) return;
    ferry__status ast;
    if (ferry__anchor_take(&m->sg.anchor, m->input, m->next_seq, force, &ast) != FERRY_OK)
        m->sg.anchor.next_pos = m->next_seq + m->sg.anchor.period; /* an older snapshot still serves */
}

/* Pulls up to k input positions (caller holds in_mu). A dropped range ends the chunk, and so does
 * a pull that made the chunk take longer than MAP_HOLD_NS since t0 (unless `whole`: a batch to
 * stack): what is pulled is handed on instead of waiting for a slow input. */
static int64_t map_pull(map_it *m, map_res *items, int64_t k, bool whole, int64_t t0, bool *ended, bool *cancelled,
                        ferry__status *st) {
    int64_t i = 0;
    while (i < k && !m->in_end) {
        if (!whole && i > 0 && ferry__now_ns() - t0 > MAP_HOLD_NS) break;
        int64_t seq = m->next_seq;
        const map_range *d = m->ndrops ? map_drop_here(m) : NULL;
        if (d) {
            int64_t len = d->start + d->len - seq, sk = 0;
            int rc = map_skip_drop(m, d, &sk, st);
            if (rc) {
                *cancelled = true;
                break;
            }
            m->next_seq += sk;
            if (sk > 0) items[i++] = (map_res){.aux = sk, .kind = RES_DROP};
            if (sk < len) {
                map_set_end(m);
                *ended = true;
            }
            map_snapshot(m, false);
            break;
        }
        ferry_element *e = NULL;
        int rc = ferry__iter_next(m->input, &e, st);
        if (rc == FERRY_END) {
            map_set_end(m);
            *ended = true;
            break;
        }
        if (rc < 0 && e) {
            ferry_element_free(e);
            e = NULL;
        }
        if (rc == FERRY_ECANCELED && ferry__cancelled(&m->sg.scope)) {
            *cancelled = true;
            break;
        }
        if (rc < 0) map_res_error(m->rt, &items[i], rc, st);
        else items[i] = (map_res){.p = e, .kind = RES_ELEM};
        m->next_seq = seq + 1;
        i++;
        map_snapshot(m, false);
    }
    return i;
}

static void map_wake_end(map_it *m) {
    ferry__mutex_lock(&m->sg.mu);
    ferry__cond_signal(&m->sg.cv_cons);
    ferry__mutex_unlock(&m->sg.mu);
}

/* After a chunk of k positions that took t_pull (under in_mu) and t_all (pull + fn) and made
 * `bytes` of results: adapts this worker's chunk size, the default window and the number of
 * active workers. The shared estimates are smoothed; concurrent updates may lose one sample. */
static void map_adapt(map_it *m, int64_t *chunk, int64_t k, int64_t t_pull, int64_t t_all, size_t bytes) {
    if (k <= 0) return;
    int64_t t = FERRY__MAX(m->nthreads, atomic_load_explicit(&m->active, memory_order_relaxed));
    int64_t per = t_all / k, avg_bytes = (int64_t)(bytes / (size_t)k);
    int64_t e_all = atomic_load_explicit(&m->ewma_all, memory_order_relaxed);
    int64_t e_pull = atomic_load_explicit(&m->ewma_pull, memory_order_relaxed);
    e_all = e_all ? e_all + (t_all / k - e_all) / 4 : t_all / k;
    e_pull = e_pull ? e_pull + (t_pull / k - e_pull) / 4 : t_pull / k;
    atomic_store_explicit(&m->ewma_all, e_all, memory_order_relaxed);
    atomic_store_explicit(&m->ewma_pull, e_pull, memory_order_relaxed);
    size_t limit = m->rt->budget.limit;
    int64_t win = atomic_load_explicit(&m->win, memory_order_relaxed);
    if (!m->win_fixed && !atomic_load_explicit(&m->win_tuned, memory_order_relaxed)) {
        int64_t w = e_all > 0 ? FERRY__MAX(t, 2) * MAP_WINDOW_TARGET_NS / e_all : m->window;
        if (avg_bytes > 0) w = FERRY__MIN(w, (int64_t)(limit / 4 / (size_t)avg_bytes));
        w = FERRY__MAX(w, FERRY__MAX(4 * t, 16));
        w = FERRY__MAX(w, m->fuse_floor);
        w = FERRY__MIN(w + m->ahead, m->window);
        if (w != win) {
            atomic_store_explicit(&m->win, w, memory_order_relaxed);
            win = w;
            if (m->base.stats) atomic_store_explicit(&m->base.stats->capacity, w, memory_order_relaxed);
        }
    }
    int64_t cap = FERRY__MIN((int64_t)MAP_CHUNK_MAX, FERRY__MAX(1, win / (2 * t)));
    if (avg_bytes > 0) cap = FERRY__MIN(cap, FERRY__MAX(1, (int64_t)(limit / (size_t)(8 * t)) / avg_bytes));
    int64_t want = per > 0 ? MAP_CHUNK_TARGET_NS / per : cap;
    want = FERRY__MAX(1, FERRY__MIN(want, cap));
    *chunk = FERRY__MIN(want, 2 * *chunk);
    if (t > 1 && !atomic_load_explicit(&m->par_tuned, memory_order_relaxed)) {
        /* Pulls are serial: at most (pull + fn) / pull workers can be kept busy. The count
         * moves only when the ratio is 3/4 past the next integer (no flapping). */
        int old = atomic_load_explicit(&m->active, memory_order_relaxed);
        int64_t r4 = e_pull > 0 ? 4 * e_all / e_pull : 4 * t; /* 4 x (pull + fn) / pull */
        int64_t a = old;
        if (r4 >= 4 * (int64_t)old + 3) a = FERRY__MIN(t, (r4 + 1) / 4);
        else if (r4 <= 4 * (int64_t)old - 3) a = FERRY__MAX(1, (r4 + 3) / 4);
        if (a != old) {
            atomic_store(&m->active, (int)a);
            if (a > old) {
                ferry__mutex_lock(&m->sg.mu);
                map_unpark(m);
                ferry__mutex_unlock(&m->sg.mu);
            }
        }
    }
}

/* Fused: runs fn on the chunk's k pulled positions and stacks each output into the worker's
 * batch as soon as it is made (then frees it at once, while it is still in cache). Rows stack
 * while every position before them did; from the first failure (an error, or a row that does
 * not stack) on, positions stay single results, and batch decides on them row by row exactly as
 * over an unfused map. *head gets the stacked rows, *nstacked their count (0: none): RES_BATCH
 * when the whole chunk stacked, else RES_ROWS. *bytes: the bytes of everything made. */
static void map_chunk_fused(map_it *m, map_worker *w, int64_t s0, map_res *items, int64_t k, map_res *head,
                            int64_t *nstacked, size_t *bytes, int64_t *assemble_ns, ferry__status *st) {
    int64_t stacked = 0;
    ferry__status tmp;
    /* Stacking a row is timed for one row in 64 and counted for the 64 (rows of a batch cost
     * alike): two clock reads per row would cost more than a cheap row's copy. */
    int64_t asm_ns = 0;
    for (int64_t i = 0; i < k; i++) {
        map_res *r = &items[i];
        if (r->kind != RES_ELEM) continue;
        ferry_element *o;
        int rc = map_call(m, &m->sg.scope, r->p, m->base_index + s0 + i, &o, st);
        if (rc) {
            map_res_error(m->rt, r, rc, st);
            continue;
        }
        if (stacked == i) {
            bool timed = (i & 63) == 0;
            int64_t ta = timed ? ferry__now_ns() : 0;
            int src = ferry__stack_add(w->stk, i, o, &tmp);
            if (timed) asm_ns += FERRY__MIN(64, k - i) * (ferry__now_ns() - ta);
            if (src == FERRY_OK) {
                ferry_element_free(o);
                r->p = NULL;
                stacked++;
                continue;
            }
        }
        r->p = o;
        r->aux = (int64_t)ferry_element_nbytes(o);
        *bytes += (size_t)r->aux;
    }
    *nstacked = 0;
    *assemble_ns = asm_ns;
    if (stacked == 0) {
        ferry__stack_reset(w->stk);
        return;
    }
    ferry_element *b;
    int64_t tf = ferry__now_ns();
    int frc = ferry__stack_finish(w->stk, stacked, &b, &tmp);
    *assemble_ns += ferry__now_ns() - tf;
    if (frc != FERRY_OK) {
        /* The rows are gone: each of their positions reports the failure. */
        for (int64_t i = 0; i < stacked; i++) {
            ferry__status e;
            ferry__fail(&e, tmp.code, "map: element %lld: %s", (long long)(m->base_index + s0 + i), tmp.msg);
            map_res_error(m->rt, &items[i], tmp.code, &e);
        }
        return;
    }
    *nstacked = stacked;
    *head = (map_res){.p = b,
                      .aux = (int64_t)ferry_element_nbytes(b),
                      .code = (int32_t)stacked,
                      .kind = stacked == k ? RES_BATCH : RES_ROWS};
    *bytes += (size_t)head->aux;
}

/* Deposits a fused chunk: the stacked rows (if any) as one result, then the single results.
 * false when cancelled (what was not deposited is freed). */
static bool map_deposit_chunk(map_it *m, int64_t s0, map_res *items, int64_t k, map_res *head, int64_t nstacked,
                              bool force) {
    if (nstacked > 0 && !map_deposit(m, s0, head, 1, force)) {
        for (int64_t i = nstacked; i < k; i++) map_res_free(m->rt, &items[i]);
        return false;
    }
    return nstacked >= k || map_deposit(m, s0 + nstacked, items + nstacked, k - nstacked, force);
}

/* Under in_mu: the next chunk. *stack: a whole batch to stack (fused); *n: the positions it may
 * take, or 0 when the window has no room for it, and then *need is the head_pub at which to try
 * again (half the window free: one wake-up per half window). */
static void map_next_chunk(map_it *m, int64_t chunk, bool *stack, int64_t *n, int64_t *need) {
    int64_t to_grid = 0;
    *stack = false;
    if (m->fuse_n) {
        /* Fused: a chunk on the batch grid is stacked whole when fn is known to be cheap (a
         * batch's calls under MAP_FUSE_SLOW_NS) or when one worker pulls anyway (one thread, or
         * pulling is the bottleneck): there is no one to share a batch with. Otherwise
         * positions go out one by one in chunks that stop at the grid, so that stacking can
         * resume aligned. */
        int64_t e_all = atomic_load_explicit(&m->ewma_all, memory_order_relaxed);
        int64_t g = atomic_load_explicit(&m->grid, memory_order_relaxed);
        to_grid = grid_floor(m->next_seq, g, m->fuse_n) + m->fuse_n - m->next_seq;
        *stack = to_grid == m->fuse_n && e_all > 0 &&
                 (e_all * m->fuse_n <= MAP_FUSE_SLOW_NS || atomic_load_explicit(&m->active, memory_order_relaxed) == 1);
    }
    int64_t want = *stack ? m->fuse_n : 1;
    int64_t win = atomic_load_explicit(&m->win, memory_order_relaxed);
    int64_t room = atomic_load_explicit(&m->head_pub, memory_order_acquire) + win - m->next_seq;
    if (room < want) {
        *n = 0;
        *need = m->next_seq - win + FERRY__MAX(FERRY__MIN(FERRY__MAX(chunk, want), win), win / 2);
        return;
    }
    *n = *stack ? m->fuse_n : FERRY__MIN(chunk, room);
    if (m->fuse_n && !*stack) *n = FERRY__MIN(*n, to_grid);
}

/* Calls fn on the k positions pulled at s0 (stacked whole when `stack`), deposits the results
 * and adapts. t0: when the pull began. force: count the results in the budget whatever it
 * holds (the consumer helping: it cannot wait for itself). false when cancelled (what was not
 * deposited is freed). */
static bool map_work(map_it *m, map_worker *w, int64_t s0, map_res *items, int64_t k, bool stack, int64_t t0,
                     bool force, ferry__status *st) {
    int64_t t1 = ferry__now_ns();
    size_t bytes = 0;
    map_res head;
    int64_t nstacked = 0, asm_ns = 0;
    if (stack) map_chunk_fused(m, w, s0, items, k, &head, &nstacked, &bytes, &asm_ns, st);
    /* Unstacked: results go out in order as soon as the calls before them took MAP_HOLD_NS (a
     * call that is suddenly slow does not hold back the ones already made). */
    int64_t sent = 0, t_sent = t1, t_dep = 0; /* t_dep: time in early deposits (not work) */
    for (int64_t i = 0; !stack && i < k; i++) {
        map_res *r = &items[i];
        if (r->kind == RES_ELEM) {
            ferry_element *o;
            int rc = map_call(m, &m->sg.scope, r->p, m->base_index + s0 + i, &o, st);
            if (rc) {
                map_res_error(m->rt, r, rc, st);
            } else {
                r->p = o;
                r->aux = (int64_t)ferry_element_nbytes(o);
                bytes += (size_t)r->aux;
            }
        }
        if (i + 1 < k) {
            int64_t t = ferry__now_ns();
            if (t - t_sent > MAP_HOLD_NS) {
                if (!map_deposit(m, s0 + sent, items + sent, i + 1 - sent, force)) {
                    for (int64_t j = i + 1; j < k; j++) map_res_free(m->rt, &items[j]);
                    return false;
                }
                sent = i + 1;
                t_sent = ferry__now_ns();
                t_dep += t_sent - t;
            }
        }
    }
    int64_t t2 = ferry__now_ns() - t_dep;
    asm_ns = FERRY__MIN(asm_ns, t2 - t1);
    ferry__stage_account(&m->sg, FERRY__TIME_WORK, t2 - t1 - asm_ns);
    ferry__stage_account(&m->sg, FERRY__TIME_ASSEMBLE, asm_ns); /* sampled: no span of its own */
    ferry__stage_trace(&m->sg, FERRY__TIME_WORK, t1, t2);
    map_adapt(m, &w->chunk, k, t1 - t0, t2 - t0, bytes);
    return map_deposit_chunk(m, s0 + sent, items + sent, k - sent, &head, nstacked, force);
}

/* Under in_mu: pulls the chunk of n positions (map_next_chunk's), releases in_mu, calls fn on
 * it and deposits the results (force: see map_work). false when cancelled. */
static bool map_pull_and_work(map_it *m, map_worker *w, map_res *items, int64_t n, bool stack, bool force,
                              ferry__status *st) {
    int64_t t0 = ferry__now_ns();
    int64_t s0 = m->next_seq;
    bool ended = false, cancelled = false;
    int64_t k = map_pull(m, items, n, stack, t0, &ended, &cancelled, st);
    map_in_unlock(m);
    if (cancelled) {
        for (int64_t i = 0; i < k; i++) map_res_free(m->rt, &items[i]);
        return false;
    }
    if (!map_work(m, w, s0, items, k, stack, t0, force, st)) return false;
    if (ended) map_wake_end(m);
    return true;
}

/* A worker's task: pulls chunks, calls fn and deposits results while there is room in the
 * window; returns its worker to the executor when it must wait for room, is parked, the input
 * ended, it was cancelled, or its time slice is up while other tasks wait. Nothing pulled is
 * kept across runs (only the adapted chunk size). */
static void map_run(ferry__task *task) {
    map_worker *w = task->arg;
    map_it *m = w->m;
    ferry__status st;
    ferry__status_clear(&st);
    map_res local[MAP_CHUNK_MAX];
    map_res *items = m->fuse_n ? w->items : local;
    for (;;) {
        if (ferry__task_yield_due(task)) {
            ferry__task_wake(task);
            return;
        }
        if (w->id >= atomic_load_explicit(&m->active, memory_order_relaxed) && map_park(m, w)) return;
        if (!map_in_lock_or_idle(m, w)) return;
        bool stack;
        int64_t n, need;
        for (;;) {
            if (ferry__cancelled(&m->sg.scope) || m->in_end) {
                map_in_unlock(m);
                return;
            }
            map_next_chunk(m, w->chunk, &stack, &n, &need);
            if (n > 0) break;
            map_in_unlock(m);
            if (!map_room_or_idle(m, w, need)) return;
            if (!map_in_lock_or_idle(m, w)) return;
        }
        if (!map_pull_and_work(m, w, items, n, stack, false, &st)) return;
    }
}

/* map_and_batch's consumer would wait for its head: instead of sleeping it stacks the next whole
 * batch itself, on its own core that would otherwise idle, when one is free to take (in_mu is
 * free or a worker's pull ends within about that pull's length, map_spin_for_in_mu; the window
 * has room; the byte budget is under half full; the cpu budget has a core free:
 * ferry__exec_borrow) and the function is measured cheap but not trivial (a batch's calls between
 * MAP_HELP_MIN_NS and MAP_HELP_MAX_NS, so that the consumer is back within a millisecond and the
 * help pays for moving the input's state between threads, and at least twice the serial pull, so
 * that two pullers do not just take turns at in_mu). On a 2-core
 * machine a training thread that helps while it waits gets the work of both cores, as no fixed
 * producer thread can. A plain map never does this: its results go out one by one, and a call
 * of unknown length on the consumer's thread could hold back results that are ready.
 * Returns true when it did a batch, or when its head became ready while it waited for in_mu
 * (the caller looks again either way). */
static bool map_help(map_it *m) {
    map_worker *w = &m->helper;
    ferry__budget *b = &m->rt->budget;
    if (!m->fuse_n || ferry__cancelled(&m->sg.scope) || atomic_load(&b->used) > b->limit / 2) return false;
    /* A helper is one more thread calling fn: not over max_parallel_calls (a function that
     * serialises would only make the two take turns) */
    if (m->ds->max_parallel_calls > 0 && m->nthreads >= m->ds->max_parallel_calls) return false;
    /* Only a whole batch known to be cheap but not trivial, and only when the calls, not the
     * serial pulls, are the work (else a second puller only takes turns at in_mu): decided before
     * in_mu is touched, so that a consumer that will not help never waits for it. */
    int64_t e_all = atomic_load_explicit(&m->ewma_all, memory_order_relaxed);
    int64_t e_pull = atomic_load_explicit(&m->ewma_pull, memory_order_relaxed);
    if (e_all * m->fuse_n < MAP_HELP_MIN_NS || e_all * m->fuse_n > MAP_HELP_MAX_NS || e_all < 2 * e_pull) return false;
    /* Only the user's own thread helps, on its own core: a stage's task waiting here (a prefetch
     * over this map) gives its core back instead, as its parallelism was set without it. */
    int core = ferry__exec_borrow(&m->rt->exec);
    if (core != 1) {
        ferry__exec_unborrow(&m->rt->exec, core);
        return false;
    }
    /* A worker pulling holds in_mu: wait for its pull on this core, which would otherwise idle. */
    if (!ferry__mutex_trylock(&m->in_mu) && !map_spin_for_in_mu(m, true)) {
        ferry__exec_unborrow(&m->rt->exec, core);
        return map_slot_ready(m, m->head); /* it came meanwhile: look again */
    }
    atomic_fetch_add(&m->in_users, 1);
    bool stack = false;
    int64_t n = 0, need;
    if (!m->in_end && !ferry__cancelled(&m->sg.scope)) map_next_chunk(m, w->chunk, &stack, &n, &need);
    if (!stack) n = 0; /* only a whole batch */
    if (n == 0) {
        map_in_unlock(m);
        ferry__exec_unborrow(&m->rt->exec, core);
        return false;
    }
    ferry__status st;
    ferry__status_clear(&st);
    /* It holds in_mu: no interrupt hook until the pull is done (core.h). */
    ferry__interrupt *ir = ferry__interrupt_swap(NULL);
    bool done = map_pull_and_work(m, w, w->items, n, stack, true, &st); /* fused: items hold a batch */
    ferry__interrupt_swap(ir);
    ferry__exec_unborrow(&m->rt->exec, core);
    return done;
}

/* The knobs (ferry__knobs.set): parallelism = the workers that may pull (the others park),
 * buffer = the effective reorder window. Lowering either takes effect as workers come back for
 * their next chunk; raising wakes the parked workers or those waiting for room. Output and order
 * do not change: positions are assigned under in_mu whoever pulls them. */
static int map_open_workers(map_it *m, int upto, ferry__status *st);

/* Opens worker tasks up to n (at most tcap) in a map that has started, and wakes them; each new
 * worker of a fused map gets its batch's room first. What fails to open or allocate stops the
 * growth there: the map runs on with the tasks it has. Under mu. */
static void map_grow(map_it *m, int n) {
    n = FERRY__MIN(n, m->tcap);
    if (m->nworkers == 0 || n <= m->nworkers || ferry__cancelled(&m->sg.scope)) return;
    int from = m->nworkers;
    ferry__status st;
    ferry__status_clear(&st);
    for (int i = from; m->fuse_n && i < n; i++) {
        map_worker *mw = &m->workers[i];
        if (!mw->items) mw->items = ferry__calloc(m->rt, (size_t)m->fuse_n, sizeof(map_res));
        if (!mw->items || (!mw->stk && ferry__stack_new(m->rt, m->ds->base.ncomp, m->fuse_n, &mw->stk, &st))) {
            n = i;
            break;
        }
    }
    (void)map_open_workers(m, n, &st);
    for (int i = from; i < m->nworkers; i++) ferry__task_wake(&m->workers[i].task);
}

static void map_knobs_set(void *stage, int parallelism, int64_t buffer) {
    map_it *m = stage;
    ferry__node_stats *s = m->base.stats;
    if (parallelism < 0) atomic_store(&m->par_tuned, false); /* map_adapt's again */
    if (buffer < 0) atomic_store(&m->win_tuned, false);
    if (parallelism > 0) {
        ferry__mutex_lock(&m->sg.mu);
        if (parallelism > m->nworkers) map_grow(m, parallelism);
        int a = FERRY__MIN(parallelism, m->nworkers > 0 ? m->nworkers : m->nthreads);
        int old = atomic_load(&m->active);
        atomic_store(&m->par_tuned, true);
        atomic_store(&m->active, a);
        if (s) atomic_store(&s->parallelism, a);
        /* More workers than the default window has room for would wait for room: unless the
         * window is the user's or set through the knobs, give each of them room. */
        if (a > old && !m->win_fixed && !atomic_load(&m->win_tuned) && buffer <= 0) {
            int64_t need = (m->fuse_n ? m->fuse_n * ((int64_t)a + 2) : 4 * (int64_t)a) + m->ahead;
            int64_t w = atomic_load(&m->win);
            if (need > w) {
                w = FERRY__MIN(need, m->window);
                atomic_store(&m->win, w);
                if (s) atomic_store(&s->capacity, w);
                map_wake_room_waiters(m);
            }
        }
        map_unpark(m);
        ferry__mutex_unlock(&m->sg.mu);
    }
    if (buffer > 0) {
        /* the effective window, as the stats show it (a folded prefetch's room included) */
        int64_t w = FERRY__MIN(FERRY__MAX(buffer, FERRY__MAX(m->fuse_floor, 1) + m->ahead), m->window);
        atomic_store(&m->win_tuned, true);
        atomic_store(&m->win, w);
        if (s) atomic_store(&s->capacity, w);
        ferry__mutex_lock(&m->sg.mu);
        map_wake_room_waiters(m);
        ferry__mutex_unlock(&m->sg.mu);
    }
}

/* Opens worker tasks nworkers .. upto - 1 (not woken). Under mu (the knobs open more from
 * another thread: map_grow). */
static int map_open_workers(map_it *m, int upto, ferry__status *st) {
    int rc = FERRY_OK;
    for (int i = m->nworkers; i < upto; i++) {
        map_worker *w = &m->workers[i];
        w->m = m;
        w->id = i;
        w->chunk = 1;
        rc = ferry__stage_task_open(&m->sg, &w->task, map_run, w, st);
        if (rc) break;
        m->nworkers = i + 1;
    }
    return rc;
}

/* Opens one executor task per thread and wakes them. */
static int map_start(map_it *m, ferry__status *st) {
    ferry__mutex_lock(&m->sg.mu);
    int rc = map_open_workers(m, m->nthreads, st);
    int opened = m->nworkers; /* the knobs may open more from another thread: they wake theirs */
    if (opened > 0 && opened < m->nthreads) atomic_store(&m->active, FERRY__MIN(atomic_load(&m->active), opened));
    ferry__mutex_unlock(&m->sg.mu);
    if (opened == 0) return rc;
    m->started = true; /* with fewer tasks than asked when some failed to open */
    for (int i = 0; i < opened; i++) ferry__task_wake(&m->workers[i].task);
    return FERRY_OK;
}

/* ---- fused: handing out whole batches, or rows ---------------------------------------------- */
static int map_res_error_out(map_it *m, map_res *r, int64_t seq, ferry__status *st) {
    if (r->p) {
        ferry__status_copy(st, r->p);
        ferry__free(m->rt, r->p);
    } else {
        ferry__fail(st, r->code, "map: element %lld failed with %s (message lost: out of memory)",
                    (long long)(m->base_index + seq), ferry_error_name(r->code));
    }
    return r->code;
}

static void map_fcur_set(map_it *m, const map_res *r, int64_t seq) {
    m->fcur = *r;
    m->fcur_seq = seq;
    m->fcur_i = 0;
    m->fcur_on = true;
}

/* The next position of fcur: a row of its batch (row slices sharing the batch's bytes), or the
 * single result itself. */
static int map_fcur_next(map_it *m, ferry_element **out, ferry__status *st) {
    map_res *r = &m->fcur;
    if (!res_stacked(r)) {
        m->fcur_on = false;
        if (r->kind == RES_ELEM) {
            *out = r->p;
            return FERRY_OK;
        }
        return map_res_error_out(m, r, m->fcur_seq, st);
    }
    ferry_element *b = r->p;
    int64_t i = m->fcur_i++;
    if (m->fcur_i == r->code) m->fcur_on = false;
    ferry_element *e = ferry__element_new(m->rt, b->n);
    int rc = e ? FERRY_OK
               : ferry__fail(st, FERRY_ENOMEM, "map: element %lld: allocating a row failed",
                             (long long)(m->base_index + m->fcur_seq + i));
    for (uint32_t c = 0; !rc && c < b->n; c++) rc = ferry__tensor_row(b->t[c], i, &e->t[c], st);
    if (!m->fcur_on) ferry_element_free(b); /* the rows hold references to its tensors */
    if (rc) {
        ferry_element_free(e);
        return rc;
    }
    *out = e;
    return FERRY_OK;
}

bool ferry__map_is_fused(const ferry__iter *it) { return ((const map_it *)it)->fuse_n > 0; }

void ferry__map_batch_boundary(ferry__iter *it_) {
    map_it *m = (map_it *)it_;
    int64_t pos = m->fcur_on ? m->fcur_seq + m->fcur_i : m->head;
    int64_t g = pos % m->fuse_n;
    if (g != atomic_load_explicit(&m->grid, memory_order_relaxed))
        atomic_store_explicit(&m->grid, g, memory_order_relaxed);
}

int ferry__map_next_batch(ferry__iter *it_, ferry_element **out, int64_t *rows, ferry__status *st) {
    map_it *m = (map_it *)it_;
    *out = NULL;
    *rows = 0;
    if (m->fcur_on) return FERRY_OK;
    if (!m->started) {
        int rc = map_start(m, st);
        if (rc) return rc;
    }
    for (;;) {
        map_res r;
        int64_t seq;
        int rc = map_take(m, &r, &seq, st);
        if (rc) return rc;
        if (r.kind == RES_DROP) continue;
        if (r.kind == RES_BATCH) {
            *out = r.p;
            *rows = r.code;
            return FERRY_OK;
        }
        map_fcur_set(m, &r, seq);
        return FERRY_OK;
    }
}

/* ---- protocol ---------------------------------------------------------------------------- */
static int map_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    map_it *m = (map_it *)it_;
    if (m->nthreads == 0) return map_next_inline(m, out, st);
    if (!m->started) {
        int rc = map_start(m, st);
        if (rc) return rc;
    }
    for (;;) {
        if (m->fcur_on) return map_fcur_next(m, out, st);
        map_res r;
        int64_t seq;
        int rc = map_take(m, &r, &seq, st);
        if (rc) return rc;
        if (r.kind == RES_DROP) continue;
        if (res_stacked(&r)) {
            map_fcur_set(m, &r, seq);
            continue;
        }
        if (r.kind == RES_ELEM) {
            *out = r.p;
            return FERRY_OK;
        }
        return map_res_error_out(m, &r, seq, st);
    }
}

static bool map_is_drop_start(const map_it *m, int64_t s, int64_t *len) {
    size_t lo = 0, hi = m->ndrops;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (m->drops[mid].start < s) lo = mid + 1;
        else hi = mid;
    }
    if (lo < m->ndrops && m->drops[lo].start == s) {
        *len = m->drops[lo].len;
        return true;
    }
    return false;
}

/* Outputs (elements and errors) pulled in [head, pulled) and not handed out yet. */
static int64_t map_outputs_pending(const map_it *m, int64_t pulled) {
    int64_t n = 0, s = m->head;
    int g = 0;
    while (s < pulled) {
        int64_t len;
        if (g < m->ngaps && m->gaps[g].start == s) {
            s += m->gaps[g++].len;
            continue;
        }
        if (map_is_drop_start(m, s, &len)) {
            s += len;
            continue;
        }
        if (!m->relaxed || m->taken[s % m->window] == 0) n++;
        s++;
    }
    return n;
}

static int map_skip(ferry__iter *it_, int64_t n, int64_t *skipped, ferry__status *st) {
    map_it *m = (map_it *)it_;
    *skipped = 0;
    if (n <= 0) return FERRY_OK;
    if (m->fuse_n && m->started) { /* rows may be half handed out: go position by position */
        ferry__status tmp;
        while (*skipped < n) {
            ferry_element *e = NULL;
            int rc = map_next(it_, &e, &tmp);
            if (rc == FERRY_END) break;
            if (rc == FERRY_ECANCELED && ferry__cancelled(&m->sg.scope)) return ferry__fail(st, rc, "%s", tmp.msg);
            ferry_element_free(e);
            (*skipped)++;
        }
        return FERRY_OK;
    }
    if (m->nthreads == 0 || !m->started) {
        /* Nothing runs ahead: skip on the input, without calling fn. */
        int rc = m->in_end ? FERRY_OK : map_input_skip(m, n, skipped, st);
        if (m->nthreads > 0) {
            m->head = m->next_seq;
            atomic_store(&m->head_pub, m->head);
            map_snapshot(m, true);
            ferry__anchor_prune(&m->sg.anchor, m->head);
            m->last_prune = m->head;
        }
        return rc;
    }
    /* Running: skip on the input what nobody pulled yet, discard what was pulled. */
    ferry__interrupt *ir = ferry__interrupt_swap(NULL); /* no interrupt hook under in_mu (core.h) */
    map_in_lock(m);
    int64_t pulled = m->next_seq;
    int64_t pending = map_outputs_pending(m, pulled);
    int64_t direct = 0;
    int rc = FERRY_OK;
    if (n > pending && !m->in_end && (!m->relaxed || m->ngaps < MAP_MAX_GAPS)) {
        rc = map_input_skip(m, n - pending, &direct, st);
        map_snapshot(m, true);
    }
    int64_t new_next = m->next_seq;
    map_in_unlock(m);
    ferry__interrupt_swap(ir);
    if (rc) return rc;
    *skipped = direct;
    if (m->relaxed && new_next > pulled) {
        m->gaps[m->ngaps++] = (map_range){pulled, new_next - pulled};
        map_advance_low(m);
    }
    while (m->relaxed ? *skipped < n : m->head < pulled && (*skipped < n || new_next > pulled)) {
        map_res r;
        int64_t seq;
        rc = map_take(m, &r, &seq, st);
        if (rc == FERRY_END) break;
        if (rc) return rc;
        if (r.kind == RES_DROP) continue;
        map_res_free(m->rt, &r);
        (*skipped)++;
    }
    if (!m->relaxed && m->head == pulled && new_next > pulled) m->head = new_next;
    map_publish_head(m);
    return FERRY_OK;
}

static int map_range_cmp(const void *a, const void *b) {
    const map_range *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

static int map_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    map_it *m = (map_it *)it_;
    int64_t low = m->nthreads == 0 ? m->next_seq : m->fcur_on ? m->fcur_seq + m->fcur_i : m->head;
    size_t cap = m->ndrops + (size_t)m->ngaps + (m->relaxed ? (size_t)m->window : 0);
    map_range *rs = cap ? ferry__calloc(m->rt, cap, sizeof *rs) : NULL;
    if (cap && !rs) return ferry__fail(st, FERRY_ENOMEM, "map: allocating the saved ranges failed");
    size_t n = 0;
    for (size_t i = 0; i < m->ndrops; i++)
        if (m->drops[i].start >= low) rs[n++] = m->drops[i];
    for (int i = 0; i < m->ngaps; i++) rs[n++] = m->gaps[i];
    if (m->relaxed && m->nthreads > 0)
        for (int64_t s = low; s <= m->max_taken && s < low + m->window; s++)
            if (m->taken[s % m->window] > 0) rs[n++] = (map_range){s, m->taken[s % m->window]};
    if (n > 1) qsort(rs, n, sizeof *rs, map_range_cmp);
    size_t k = 0; /* merge overlaps: a relaxed skip's gap may contain inherited ranges */
    for (size_t i = 0; i < n; i++) {
        if (k > 0 && rs[i].start <= rs[k - 1].start + rs[k - 1].len) {
            int64_t end = FERRY__MAX(rs[k - 1].start + rs[k - 1].len, rs[i].start + rs[i].len);
            rs[k - 1].len = end - rs[k - 1].start;
        } else {
            rs[k++] = rs[i];
        }
    }
    n = k;
    ferry__w_i64(w, m->base_index + low);
    ferry__w_u32(w, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        ferry__w_u64(w, (uint64_t)(rs[i].start - low));
        ferry__w_u64(w, (uint64_t)rs[i].len);
    }
    ferry__free(m->rt, rs);
    if (m->nthreads == 0) return ferry__anchor_write_now(m->input, m->rt, w, "map", st);
    if (m->anchor_failed) {
        ferry__status_copy(st, &m->anchor_st);
        ferry__status_prefix(st, "map: saving the input's state failed");
        return st->code;
    }
    int rc = ferry__anchor_write(&m->sg.anchor, low, w, st);
    if (rc) ferry__status_prefix(st, "map");
    return rc;
}

static void map_destroy(ferry__iter *it_) {
    map_it *m = (map_it *)it_;
    ferry__stage_stop(&m->sg);
    if (m->slots) {
        /* Results deposited and not handed out: deterministic, seq >= head; relaxed, seq >= low
         * and not marked taken (the marks cover [low, low + window)). */
        size_t bytes = 0;
        int64_t count = 0;
        for (int64_t i = 0; i < m->window; i++) {
            map_slot *s = &m->slots[i];
            int64_t q = atomic_load(&s->ready);
            if (q < m->head || (m->relaxed && m->taken[q % m->window] != 0)) continue;
            bytes += res_bytes(&s->r);
            count++;
            map_res_free(m->rt, &s->r);
        }
        if (bytes + m->pending_bytes) ferry__budget_release(&m->rt->budget, bytes + m->pending_bytes);
        if (m->base.stats) {
            map_stat_add(&m->base.stats->buffered_elements, -(count + m->since_pub));
            map_stat_add(&m->base.stats->buffered_bytes, -(int64_t)(bytes + m->pending_bytes));
        }
    }
    if (m->fcur_on) map_res_free(m->rt, &m->fcur);
    for (int i = 0; m->workers && i < m->tcap; i++) {
        ferry__free(m->rt, m->workers[i].items);
        ferry__stack_free(m->workers[i].stk);
    }
    ferry__free(m->rt, m->helper.items);
    ferry__stack_free(m->helper.stk);
    ferry__iter_free(m->input);
    if (m->in_mu_ok) ferry__mutex_destroy(&m->in_mu);
    ferry__stage_fini(&m->sg);
    ferry__free(m->rt, m->slots);
    ferry__free(m->rt, m->workers);
    ferry__free(m->rt, m->done);
    ferry__free(m->rt, m->taken);
    ferry__free(m->rt, m->drops);
    ferry__iter_release(&m->base);
}

static const ferry__iter_vtable map_iter_vt = {map_next, map_save, map_skip, map_destroy};

/* ---- make -------------------------------------------------------------------------------- */
static int map_read_state(map_it *m, ferry__reader *r, int64_t *low, ferry__status *st) {
    uint32_t n;
    int rc = ferry__r_i64(r, low, st);
    if (!rc) rc = ferry__r_u32(r, &n, st);
    if (rc) return rc;
    if (*low < 0) return ferry__fail(st, FERRY_ECORRUPT, "map: saved position %lld is negative", (long long)*low);
    if (n > MAP_MAX_RANGES || (size_t)n * 16 > ferry__r_left(r))
        return ferry__fail(st, FERRY_ECORRUPT, "map: saved state claims %u dropped ranges at offset %zu", n,
                           ferry__r_offset(r));
    if (n == 0) return FERRY_OK;
    m->drops = ferry__calloc(m->rt, n, sizeof *m->drops);
    if (!m->drops) return ferry__fail(st, FERRY_ENOMEM, "map: allocating %u saved ranges failed", n);
    int64_t prev_end = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t off, len;
        size_t at = ferry__r_offset(r);
        if ((rc = ferry__r_u64(r, &off, st)) || (rc = ferry__r_u64(r, &len, st))) return rc;
        if (len == 0 || off > (uint64_t)MAP_MAX_OFFSET || len > (uint64_t)MAP_MAX_OFFSET || (int64_t)off < prev_end)
            return ferry__fail(st, FERRY_ECORRUPT,
                               "map: saved range %u at offset %zu (%llu, %llu) is empty, too large or out of order", i,
                               at, (unsigned long long)off, (unsigned long long)len);
        m->drops[i] = (map_range){(int64_t)off, (int64_t)len};
        prev_end = (int64_t)(off + len);
    }
    m->ndrops = n;
    return FERRY_OK;
}

static int map_parallel_init(map_it *m, ferry__ictx *ictx, ferry__status *st) {
    /* An unordered input cannot be replayed: snapshot it at every position (replay 0). */
    int64_t period = m->ds->base.inputs[0]->unordered ? 1 : MAP_ANCHOR_PERIOD;
    int rc = ferry__stage_init(&m->sg, &m->base, period, ictx, st);
    if (rc) return rc;
    if (ferry__mutex_init(&m->in_mu)) return ferry__fail(st, FERRY_ENOMEM, "map: creating a lock failed");
    m->in_mu_ok = true;
    size_t w = (size_t)m->window;
    m->slots = ferry__calloc(m->rt, w, sizeof *m->slots);
    m->workers = ferry__calloc(m->rt, (size_t)m->tcap, sizeof *m->workers);
    if (m->relaxed) {
        m->done = ferry__calloc(m->rt, w, sizeof *m->done);
        m->taken = ferry__calloc(m->rt, w, sizeof *m->taken);
    }
    if (!m->slots || !m->workers || (m->relaxed && (!m->done || !m->taken)))
        return ferry__fail(st, FERRY_ENOMEM, "map: allocating a reorder window of %zu results failed", w);
    for (size_t i = 0; i < w; i++) atomic_init(&m->slots[i].ready, -1);
    m->helper = (map_worker){.m = m, .id = -1, .chunk = 1};
    for (int i = -1; m->fuse_n && i < m->nthreads; i++) {
        map_worker *mw = i < 0 ? &m->helper : &m->workers[i];
        mw->items = ferry__calloc(m->rt, (size_t)m->fuse_n, sizeof(map_res));
        if (!mw->items) return ferry__fail(st, FERRY_ENOMEM, "map: allocating a batch's results failed");
        int src = ferry__stack_new(m->rt, m->ds->base.ncomp, m->fuse_n, &mw->stk, st);
        if (src) return src;
    }
    return FERRY_OK;
}

/* A map iterator; fuse_batch > 0: for map_and_batch (ferry__map_make_batched), whose node
 * `stats_node` gets this iterator's records. */
static int map_make_impl(ferry_dataset *ds_, const ferry__ictx *ctx, ferry__reader *state, int64_t fuse_batch,
                         ferry_dataset *stats_node, ferry__iter **out, ferry__status *st) {
    const map_ds *ds = (const map_ds *)ds_;
    map_it *m = ferry__iter_alloc(ds_, ctx, &map_iter_vt, sizeof *m, st);
    if (!m) return st->code;
    if (stats_node) m->base.stats = ctx->pipe ? ferry__pipe_node(ctx->pipe, stats_node) : NULL;
    m->rt = ds_->rt;
    m->ds = ds;
    int t = ds->num_parallel_calls == FERRY_AUTOTUNE ? ferry__autotune_threads(m->rt) : ds->num_parallel_calls;
    /* max_parallel_calls caps every count: a function that serialises (Python's GIL) gains
     * nothing from more threads, and the report must not promise it would */
    int limit = ds->max_parallel_calls > 0 ? ds->max_parallel_calls : MAP_MAX_THREADS;
    m->nthreads = FERRY__MIN(t, limit);
    bool tune = ds->num_parallel_calls == FERRY_AUTOTUNE;
    m->tcap = tune ? FERRY__MIN(FERRY__MAX(m->nthreads, ferry__autotune_max_threads(m->rt)), limit) : m->nthreads;
    /* Over an input whose order already depends on timing, positions do not identify elements
     * after a restore, so the handed-out set of relaxed order could not be saved: such a map
     * hands results out in input order (which is timing-dependent anyway). */
    m->relaxed = ds->relaxed && m->nthreads > 0 && !ds_->inputs[0]->unordered;
    m->win_fixed = ds->reorder_window > 0;
    m->window = m->win_fixed ? ds->reorder_window : FERRY__MAX(4 * (int64_t)m->tcap, MAP_WINDOW_SLOTS);
    /* Default window: start small (fn's cost is unknown), adapt after the first chunks. */
    atomic_init(&m->win, m->win_fixed ? m->window : FERRY__MIN(m->window, FERRY__MAX(8 * (int64_t)m->nthreads, 64)));
    atomic_init(&m->active, m->nthreads);
    m->op_seed = ferry__mix64(ferry__mix64(ctx->seed, ds_->salt), ds->seed);
    atomic_init(&m->end_seq, INT64_MAX);
    atomic_init(&m->wake_head, INT64_MAX);
    int rc = FERRY_OK;
    if (state && (rc = map_read_state(m, state, &m->base_index, st)) != FERRY_OK) goto fail;
    /* map_and_batch: whole batches need input order, the default window and no ranges to drop
     * (a state saved in relaxed order may carry some: then rows go out one by one). The
     * adaptive window keeps room for a chunk per worker plus the one being handed out
     * (fuse_floor), and has slots for twice that. */
    int64_t floor = fuse_batch * (FERRY__MAX(m->nthreads, 1) + 2); /* + the consumer's (map_help) */
    if (fuse_batch > 0 && ferry__map_fusable(ds_, fuse_batch) && m->nthreads > 0 && !m->relaxed && m->ndrops == 0 &&
        2 * floor <= MAP_MAX_WINDOW) {
        m->fuse_n = fuse_batch;
        m->fuse_floor = floor;
        m->window = FERRY__MAX(m->window, 2 * floor);
        /* room for a batch per thread the autotuner may add */
        if (m->tcap > m->nthreads)
            m->window = FERRY__MAX(m->window, FERRY__MIN(fuse_batch * ((int64_t)m->tcap + 2), MAP_MAX_WINDOW / 2));
        atomic_store(&m->win, FERRY__MAX(atomic_load(&m->win), floor));
    }
    /* A prefetch(n) right above folded into this stage: room for n more outputs (rows of n
     * batches when batching) ahead of the consumer, in the window and its slots. */
    if (ctx->ahead > 0 && m->nthreads > 0) {
        m->ahead = FERRY__MIN(ctx->ahead * FERRY__MAX(fuse_batch, 1), (int64_t)MAP_MAX_WINDOW);
        m->window += m->ahead;
        atomic_store(&m->win, atomic_load(&m->win) + m->ahead);
    }
    ferry__ictx ictx = *ctx;
    ictx.ahead = 0;
    if (m->nthreads > 0 && (rc = map_parallel_init(m, &ictx, st)) != FERRY_OK) goto fail;
    if (state) rc = ferry__anchor_restore(ds_->inputs[0], &ictx, state, &m->input, NULL, st);
    else rc = ferry__iter_make(ds_->inputs[0], &ictx, NULL, &m->input, st);
    if (rc) goto fail;
    if (m->nthreads > 0) {
        /* The snapshot every save can fall back on, taken before any worker drives the input. */
        if (ferry__anchor_take(&m->sg.anchor, m->input, 0, true, &m->anchor_st) != FERRY_OK) {
            m->anchor_failed = true;
            m->sg.anchor.next_pos = INT64_MAX;
        }
        ferry__knobs k = {.set = map_knobs_set,
                          .stage = m,
                          .parallelism_max = m->tcap,
                          .buffer_max = m->window,
                          .parallelism_limit = limit,
                          .tune_parallelism = tune,
                          .tune_buffer = tune && !m->win_fixed};
        ferry__stage_ready(&m->sg, NULL, NULL, m->nthreads, atomic_load(&m->win), &k);
        if (ctx->warm_start && (rc = map_start(m, st)) != FERRY_OK) goto fail;
    }
    *out = &m->base;
    return FERRY_OK;
fail:
    map_destroy(&m->base);
    return rc;
}

static int map_make(ferry_dataset *ds_, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                    ferry__status *st) {
    return map_make_impl(ds_, ctx, state, 0, NULL, out, st);
}

int ferry__map_make_batched(ferry_dataset *map, ferry_dataset *node, int64_t n, const ferry__ictx *ctx,
                            ferry__reader *state, ferry__iter **out, ferry__status *st) {
    *out = NULL;
    if (state) {
        int rc = ferry__state_expect(map, state, st);
        if (rc) return rc;
    }
    return map_make_impl(map, ctx, state, n, node, out, st);
}

static const ferry__dataset_vtable map_vt = {.make = map_make, .destroy = NULL};

bool ferry__map_fusable(const ferry_dataset *ds, int64_t n) {
    if (ds->vt != &map_vt) return false;
    const map_ds *m = (const map_ds *)ds;
    return m->num_parallel_calls != 0 && !m->relaxed && m->reorder_window == 0 && n > 0 && n <= MAP_FUSE_MAX;
}


int ferry_dataset_map(ferry_dataset *in, ferry_map_fn fn, void *user, const ferry_map_options *opts,
                      ferry_dataset **out) {
    FERRY__OP_PROLOGUE(in, opts, out);
    FERRY__CHECK_ARG(fn != NULL, FERRY_EINVAL, "%s: argument 'fn' is NULL", __func__);
    ferry_map_options o = {0};
    if (opts) o = *opts;
    FERRY__CHECK_ARG(o.num_parallel_calls == FERRY_AUTOTUNE ||
                         (o.num_parallel_calls >= 0 && o.num_parallel_calls <= MAP_MAX_THREADS),
                     FERRY_EINVAL, "%s: options.num_parallel_calls is %d; it must be FERRY_AUTOTUNE (-1) or 0 to %d",
                     __func__, o.num_parallel_calls, MAP_MAX_THREADS);
    FERRY__CHECK_ARG(o.max_parallel_calls >= 0 && o.max_parallel_calls <= MAP_MAX_THREADS, FERRY_EINVAL,
                     "%s: options.max_parallel_calls is %d; it must be 0 (no cap) to %d", __func__,
                     o.max_parallel_calls, MAP_MAX_THREADS);
    FERRY__CHECK_ARG(o.reorder_window >= 0 && o.reorder_window <= MAP_MAX_WINDOW, FERRY_EINVAL,
                     "%s: options.reorder_window is %d; it must be 0 (default) to %d", __func__, o.reorder_window,
                     MAP_MAX_WINDOW);
    FERRY__CHECK_ARG(o.num_outputs <= MAP_MAX_OUTPUTS, FERRY_EINVAL, "%s: options.num_outputs is %zu; at most %d",
                     __func__, o.num_outputs, MAP_MAX_OUTPUTS);
    FERRY__CHECK_ARG(o.num_outputs == 0 || o.output_specs != NULL, FERRY_EINVAL,
                     "%s: options.output_specs is NULL with num_outputs %zu", __func__, o.num_outputs);
    for (size_t i = 0; i < o.num_outputs; i++) {
        int rc = ferry__spec_validate(&o.output_specs[i], __func__, "options.output_specs", i);
        if (rc) return rc;
    }
    size_t ncomp = o.num_outputs ? o.num_outputs : in->ncomp;
    const ferry_tensor_spec *specs = o.num_outputs ? o.output_specs : in->specs;
    ferry_dataset *ds;
    int rc = ferry__dataset_new(in->rt, &map_vt, "map", sizeof(map_ds), 1, &in, ncomp, specs, in->cardinality, &ds);
    if (rc) return rc;
    map_ds *m = (map_ds *)ds;
    m->fn = fn;
    m->user = user;
    m->num_parallel_calls = o.num_parallel_calls;
    m->max_parallel_calls = o.max_parallel_calls;
    m->relaxed = o.relaxed_order;
    m->reorder_window = o.reorder_window;
    m->seed = o.seed;
    /* Thread count, window and order are performance knobs: they stay out of the hash, so that a
     * state restores under other settings (the state format is the same for all of them). The
     * seed changes the values, and the output spec is in the fingerprint. */
    ds->unordered = in->unordered || (o.relaxed_order && o.num_parallel_calls != 0);
    ds->runs_ahead = o.num_parallel_calls != 0;
    ferry__dataset_hash(ds, &o.seed, sizeof o.seed);
    ferry__dataset_hash_i64(ds, (int64_t)o.num_outputs);
    ferry__dataset_own_user(ds, user, o.user_free);
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}
