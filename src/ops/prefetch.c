/*
 * prefetch.c - `prefetch(n)`: one producer task on the runtime's executor runs the input ahead of
 * the consumer into a bounded buffer of n entries.
 *
 * Objects and threads
 *   pf_it owns: the input iterator, a ring of entries, and a stage (the async-stage base of
 *   core.h: its cancel scope, under which the input lives; `mu`, `cv_cons` and the waker; the
 *   anchor list of the input (symbolic state); the knobs) with one producer task on the
 *   runtime's executor: it runs while there is room in the ring, and returns when the ring is
 *   full or the input ended. An entry is an element or an error (code + message): errors travel through the
 *   ring in their positions.
 *   The producer task is the only caller of the input's next/save once it runs; the consumer
 *   (whoever calls next) only reads the ring. The task opens and first runs at the first next,
 *   or at make when the pipeline asks for a warm start.
 *   n == 0 is a pass-through (no ring, no thread, no scope); its state has the same format. So is
 *   a prefetch over an input that runs ahead on tasks of its own (a parallel map, map_and_batch):
 *   n > 0 is added to that input's window instead (ferry__ictx.ahead), AUTOTUNE keeps the
 *   input's own, and each output crosses threads once.
 *
 * The ring (single producer, single consumer, no lock on the hot path)
 *   `tail` (entries written) is stored by the producer, `head` (entries handed out) by the
 *   consumer, both with release stores; entry i lives in ring[i % ring_cap]. Position i of the
 *   stream is entry i: tail == input positions pulled, head == positions handed out.
 *   The producer writes while tail - head < capacity; capacity is n, or under FERRY_AUTOTUNE it
 *   starts at 2 and doubles (up to 64, and never so far that capacity x average element bytes
 *   exceeds a quarter of the byte budget) each time the consumer has to sleep on an empty ring: a bigger ring
 *   absorbs bursts, and lets a consumer that outpaces its producer sleep once per batch.
 *   Waiting follows queue.h: the consumer spins (adaptively, a few us), then sleeps on cv_cons
 *   under `mu` (through ferry__consumer_wait, which polls the iterator's interrupt hook) with
 *   cons_sleeping set by exchange; a producer that finds the ring full sets
 *   prod_sleeping by exchange, re-checks, and returns its worker to the executor. The other side
 *   exchanges the flag back to 0 after publishing and signals the consumer / wakes the task only
 *   when it was set. Both sides batch their
 *   wake-ups (hysteresis): the consumer wakes an idle producer once the ring has drained by a
 *   quarter (the ring stays at least 3/4 full), and a consumer that had to sleep on an empty ring
 *   is woken once a quarter of the ring is filled (cons_target), or the input ended, or the
 *   producer stalls on the budget, or after 1 ms with whatever is there.
 *
 * Budget
 *   Each element's bytes are counted in the runtime budget from just before it enters the ring
 *   until it is handed out (or freed at destroy). When the ring is empty the producer may always
 *   count its one element (force); otherwise it waits for room in the budget, polling its cancel
 *   flag and the ring, and forces as soon as the consumer has emptied the ring (the consumer pokes
 *   the budget's waiters before it waits). So the budget is exceeded by at most one element, by
 *   this producer.
 *
 * Cancellation and destroy
 *   Every wait loops on (condition || cancelled(scope)); the waker locks `mu` and broadcasts
 *   the consumer's condition variable. destroy fires the scope (which also cancels everything
 *   under it, so a producer inside a slow map function returns), closes the task (waiting for a
 *   run in progress to return), frees the entries left
 *   in the ring (releasing their budget), then destroys the input. Lock order: a scope's lock may
 *   be held when the waker takes `mu`; nothing here creates or fires a scope while holding `mu`.
 *
 * Saved state (written by save on the consumer's thread)
 *   i64 absolute position (positions handed out since the start of the iteration) |
 *   the anchor (u64 positions to replay, u64 size, the input's state at the snapshot).
 *   The producer snapshots the input every 64 positions (forced at position 0 when the iterator
 *   is made, before any thread runs); save picks the latest snapshot at or before the consumer's
 *   position, so the restored iterator replays at most ~64 + n positions and then yields exactly
 *   the entries (elements and errors) not handed out yet. An "unordered" input (its order depends
 *   on timing: a relaxed-order op below) is snapshotted at every position instead, since
 *   replaying it would not give the same elements. Pass-through writes replay 0 and the input's
 *   current state.
 *
 * Stats: measured here; parallelism 1; buffer_capacity; buffered elements/bytes (published every
 * 64 entries and at waits); wait_input_ns = consumer blocked on an empty ring; wait_consumer_ns =
 * producer blocked on the budget (a full ring costs no thread: the task is idle); work_ns =
 * producer bookkeeping, timed on one entry in 64 and scaled. Only blocking waits read the clock
 * otherwise. Waits inside a worker (the budget; the consumer side when this prefetch is itself
 * the input of another stage's task) are marked blocked for the executor, so a nested stage
 * always finds a worker.
 */
#include "ops.h"

#include "base/queue.h"

#define PF_AUTOTUNE_START 2
#define PF_AUTOTUNE_MAX 64
#define PF_MAX_BUFFER ((int64_t)1 << 20) /* the ring is allocated up front: 32 bytes an entry */
#define PF_ANCHOR_PERIOD 64

typedef struct pf_ds {
    ferry_dataset base;
    int64_t buffer_size; /* > 0, 0 (pass-through) or FERRY_AUTOTUNE */
} pf_ds;

typedef struct pf_entry {
    ferry_element *e;
    ferry__status *err; /* error entries: the message, or NULL when allocating it failed */
    size_t bytes;       /* counted in the budget */
    int code;           /* FERRY_OK or the error */
} pf_entry;

typedef struct pf_it {
    ferry__iter base;
    ferry_runtime *rt;
    ferry__iter *input;
    bool passthrough, autotune;
    int64_t base_pos; /* absolute position of relative position 0 (restored iterators) */

    /* The stage (core.h): scope, mu and cv_cons, the task, the input's anchors, the knobs. Zero
     * in pass-through. */
    ferry__stage sg;
    ferry__status anchor_st; /* why the first snapshot failed (then save fails with it) */
    bool anchor_failed;
    ferry__task task;
    bool started; /* the task is open */
    pf_entry *ring;
    int64_t ring_cap;
    _Atomic int64_t capacity;
    _Atomic bool tuned;         /* capacity set through the knobs: AUTOTUNE growth stops */
    _Atomic int64_t full_since; /* when the producer went idle on a full ring (for the stats) */

    /* Written by the producer. */
    char pad0[64];
    _Atomic int64_t tail;
    _Atomic int64_t end_pos;  /* INT64_MAX until the input ended; then its position count */
    _Atomic int64_t bytes_in; /* bytes ever put in the ring */
    /* Written by the consumer. */
    char pad1[64];
    _Atomic int64_t head;
    _Atomic int64_t bytes_out;
    char pad2[64];
    _Atomic int cons_sleeping;
    _Atomic int64_t cons_target; /* a sleeping consumer wants tail >= this (a batch of entries) */
    _Atomic int prod_stalled;    /* the producer waits for budget with entries in the ring */
    char pad3[64];
    _Atomic int prod_sleeping;
    char pad4[64];

    /* Consumer-private. */
    ferry__spinner c_spin;
    int64_t c_tail; /* last tail seen */
    int64_t pos;    /* positions handed out (pass-through and threaded) */
    /* Producer-private. */
    int64_t p_self_ns;
} pf_it;

/* ---- waking ------------------------------------------------------------------------------ */
static void pf_wake_consumer(pf_it *it) {
    if (atomic_exchange(&it->cons_sleeping, 0)) {
        ferry__mutex_lock(&it->sg.mu);
        ferry__cond_signal(&it->sg.cv_cons);
        ferry__mutex_unlock(&it->sg.mu);
    }
}

/* An idle producer (it found the ring full) runs again. */
static void pf_wake_producer(pf_it *it) {
    if (atomic_exchange(&it->prod_sleeping, 0)) {
        if (it->base.stats) ferry__stage_idle_full(&it->sg, ferry__now_ns() - atomic_load(&it->full_since));
        ferry__task_wake(&it->task);
    }
}

static void pf_publish_buffered(pf_it *it) {
    ferry__node_stats *s = it->base.stats;
    if (!s) return;
    int64_t t = atomic_load_explicit(&it->tail, memory_order_relaxed);
    int64_t h = atomic_load_explicit(&it->head, memory_order_relaxed);
    int64_t bi = atomic_load_explicit(&it->bytes_in, memory_order_relaxed);
    int64_t bo = atomic_load_explicit(&it->bytes_out, memory_order_relaxed);
    atomic_store_explicit(&s->buffered_elements, t > h ? t - h : 0, memory_order_relaxed);
    atomic_store_explicit(&s->buffered_bytes, bi > bo ? bi - bo : 0, memory_order_relaxed);
    atomic_store_explicit(&s->capacity, atomic_load_explicit(&it->capacity, memory_order_relaxed),
                          memory_order_relaxed);
}

/* ---- producer ---------------------------------------------------------------------------- */
/* The ring is full: true when the producer should return its worker (it set prod_sleeping and
 * the ring is still full: the consumer wakes the task once it has drained a quarter), false when
 * room appeared meanwhile. */
static bool pf_idle_on_full(pf_it *it) {
    pf_publish_buffered(it);                                            /* a full buffer stays visible in the stats */
    if (it->base.stats) atomic_store(&it->full_since, ferry__now_ns()); /* before the flag: the waker reads it */
    atomic_exchange(&it->prod_sleeping, 1);
    int64_t t = atomic_load_explicit(&it->tail, memory_order_relaxed);
    if (t - atomic_load_explicit(&it->head, memory_order_acquire) >=
        atomic_load_explicit(&it->capacity, memory_order_relaxed))
        return true;
    atomic_store(&it->prod_sleeping, 0);
    return false;
}

/* The ring is empty (the consumer took everything, and waits or soon will): the producer may
 * count its one element over the budget. Once that element is in the ring this is false again. */
static bool pf_force_now(void *arg) {
    pf_it *it = arg;
    return atomic_load(&it->head) == atomic_load_explicit(&it->tail, memory_order_relaxed);
}

/* Counts an element's bytes in the budget: 0 at once, 1 after waiting, -1 when cancelled first. */
static int pf_charge(pf_it *it, size_t bytes) {
    ferry__budget *b = &it->rt->budget;
    if (bytes == 0 || ferry__budget_try(b, bytes)) return 0;
    if (pf_force_now(it)) {
        ferry__budget_force(b, bytes);
        return 0;
    }
    int64_t t0 = ferry__now_ns();
    /* A consumer sleeping until a batch is complete must take what is there instead. */
    ferry__mutex_lock(&it->sg.mu);
    atomic_store(&it->prod_stalled, 1);
    if (atomic_load(&it->cons_sleeping)) ferry__cond_signal(&it->sg.cv_cons);
    ferry__mutex_unlock(&it->sg.mu);
    bool blocked = ferry__exec_block_begin(&it->rt->exec);
    int rc = ferry__budget_wait(b, bytes, &it->sg.scope.flag, pf_force_now, it);
    ferry__exec_block_end(&it->rt->exec, blocked, true);
    atomic_store(&it->prod_stalled, 0);
    ferry__stage_time(&it->sg, FERRY__TIME_WAIT_CONSUMER, ferry__now_ns() - t0);
    return rc == FERRY_OK ? 1 : -1;
}

/* The producer task: fills the ring while there is room, then returns its worker. */
static void pf_run(ferry__task *task) {
    pf_it *it = task->arg;
    ferry__status st;
    ferry__status_clear(&st);
    int64_t pos = atomic_load_explicit(&it->tail, memory_order_relaxed);
    int64_t self_ns = it->p_self_ns;
    for (int64_t made = 0;; made++) {
        if (ferry__cancelled(&it->sg.scope)) break;
        if (pos - atomic_load_explicit(&it->head, memory_order_acquire) >=
                atomic_load_explicit(&it->capacity, memory_order_relaxed) &&
            pf_idle_on_full(it))
            break;
        if ((made & 15) == 15 && ferry__task_yield_due(task)) { /* others wait for a worker */
            ferry__task_wake(task);
            break;
        }
        ferry_element *e = NULL;
        int rc = ferry__iter_next(it->input, &e, &st);
        bool sample = (pos & 63) == 0;
        int64_t t0 = sample ? ferry__now_ns() : 0;
        if (rc == FERRY_END) {
            atomic_store_explicit(&it->end_pos, pos, memory_order_release);
            pf_publish_buffered(it);
            ferry__mutex_lock(&it->sg.mu); /* the consumer may wait for this, whatever its flag says */
            atomic_store(&it->cons_sleeping, 0);
            ferry__cond_signal(&it->sg.cv_cons);
            ferry__mutex_unlock(&it->sg.mu);
            break;
        }
        if (rc < 0 && e) { /* an input broke the protocol; never hand out data with an error */
            ferry_element_free(e);
            e = NULL;
        }
        if (rc == FERRY_ECANCELED && ferry__cancelled(&it->sg.scope)) break;
        pf_entry en = {.e = e, .err = NULL, .bytes = 0, .code = rc < 0 ? rc : FERRY_OK};
        if (rc < 0) {
            en.err = ferry__alloc(it->rt, sizeof *en.err);
            if (en.err) ferry__status_copy(en.err, &st);
        } else {
            en.bytes = ferry_element_nbytes(e);
            int waited = pf_charge(it, en.bytes);
            if (waited < 0) {
                ferry_element_free(e);
                break;
            }
            if (waited) sample = false; /* a blocking wait is not bookkeeping */
        }
        /* Snapshot before publishing: the consumer can only reach a position whose snapshot,
         * when due, exists (an unordered input must never be replayed). */
        if (pos + 1 >= it->sg.anchor.next_pos) {
            ferry__status ast;
            if (ferry__anchor_take(&it->sg.anchor, it->input, pos + 1, false, &ast) != FERRY_OK)
                it->sg.anchor.next_pos = pos + 1 + it->sg.anchor.period; /* an older snapshot still serves */
        }
        it->ring[pos % it->ring_cap] = en;
        if (en.bytes)
            atomic_store_explicit(&it->bytes_in,
                                  atomic_load_explicit(&it->bytes_in, memory_order_relaxed) + (int64_t)en.bytes,
                                  memory_order_relaxed);
        pos++;
        atomic_store_explicit(&it->tail, pos, memory_order_release);
        if (atomic_fetch_add(&it->cons_sleeping, 0) && pos >= atomic_load(&it->cons_target)) pf_wake_consumer(it);
        if (sample) self_ns += 64 * (ferry__now_ns() - t0);
        if (sample && (pos & 4095) == 1) {
            ferry__stage_account(&it->sg, FERRY__TIME_WORK, self_ns); /* scaled samples: no span */
            self_ns = 0;
        }
    }
    it->p_self_ns = self_ns;
}

static int pf_start(pf_it *it, ferry__status *st) {
    int rc = ferry__stage_task_open(&it->sg, &it->task, pf_run, it, st);
    if (rc) return rc;
    it->started = true;
    ferry__task_wake(&it->task);
    return FERRY_OK;
}

/* ---- consumer ---------------------------------------------------------------------------- */
static bool pf_have_input(void *arg) {
    pf_it *it = arg;
    int64_t h = it->pos;
    return atomic_load_explicit(&it->tail, memory_order_acquire) != h ||
           atomic_load_explicit(&it->end_pos, memory_order_acquire) == h || ferry__cancelled(&it->sg.scope);
}

/* Sleeping condition of a consumer waiting for a batch of `batch` entries: they are there, or
 * some are and no more come soon (the input ended or the producer waits for budget). */
static bool pf_have_batch(pf_it *it, int64_t batch) {
    int64_t h = it->pos, t = atomic_load_explicit(&it->tail, memory_order_acquire);
    if (t - h >= batch || ferry__cancelled(&it->sg.scope)) return true;
    int64_t end = atomic_load_explicit(&it->end_pos, memory_order_acquire);
    return end == h || (t > h && (end != INT64_MAX || atomic_load(&it->prod_stalled)));
}

/* Grows the AUTOTUNE capacity when the consumer had to sleep on an empty ring: a bigger ring
 * absorbs bursts when the producer is faster on average, and when it is slower it lets the
 * consumer sleep until a batch of entries is there (one wake-up per batch). */
static void pf_autotune_grow(pf_it *it) {
    int64_t cap = atomic_load_explicit(&it->capacity, memory_order_relaxed);
    if (cap >= PF_AUTOTUNE_MAX || atomic_load_explicit(&it->tuned, memory_order_relaxed)) return;
    int64_t n = atomic_load_explicit(&it->tail, memory_order_relaxed);
    int64_t bytes = atomic_load_explicit(&it->bytes_in, memory_order_relaxed);
    int64_t avg = n > 0 ? bytes / n : 0;
    int64_t want = FERRY__MIN(cap * 2, (int64_t)PF_AUTOTUNE_MAX);
    if (avg > 0) {
        int64_t fit = (int64_t)(it->rt->budget.limit / 4 / (size_t)avg); /* room for other stages */
        want = FERRY__MIN(want, fit);
    }
    if (want > cap) atomic_store_explicit(&it->capacity, want, memory_order_relaxed);
}

/* Waits until entry it->pos exists or the input ended there. Returns FERRY_OK, FERRY_END or
 * FERRY_ECANCELED. */
static int pf_wait_input(pf_it *it, ferry__status *st) {
    int64_t h = it->pos;
    if (atomic_load_explicit(&it->end_pos, memory_order_acquire) == h) return FERRY_END;
    int64_t t0 = ferry__now_ns();
    pf_publish_buffered(it);
    ferry__budget_poke(&it->rt->budget); /* a producer waiting for budget may force now */
    pf_wake_producer(it);
    if (!(ferry__may_spin(it->rt) && ferry__spin_adaptive(&it->c_spin, pf_have_input, it))) {
        bool blocked = ferry__exec_block_begin(&it->rt->exec); /* this consumer may be a worker */
        if (it->autotune) pf_autotune_grow(it);
        /* Sleep until a quarter of the ring is filled, not one entry, so that a producer slower
         * than its consumer pays one wake-up (~25 us) per batch. After 1 ms without a full batch
         * take what is there: a slow producer must not delay the entries it already made. */
        int64_t cap = atomic_load_explicit(&it->capacity, memory_order_relaxed);
        int64_t batch = cap >= 8 ? cap / 4 : 1;
        ferry__mutex_lock(&it->sg.mu);
        atomic_store(&it->cons_target, h + batch);
        for (;;) {
            atomic_exchange(&it->cons_sleeping, 1);
            if (pf_have_batch(it, batch)) break;
            if (batch == 1) {
                (void)ferry__consumer_wait(&it->sg, 0);
            } else if (!ferry__consumer_wait(&it->sg, 1000000)) {
                batch = 1;
                atomic_store(&it->cons_target, h + 1);
            }
        }
        atomic_store(&it->cons_sleeping, 0);
        ferry__mutex_unlock(&it->sg.mu);
        ferry__exec_block_end(&it->rt->exec, blocked, true);
    }
    ferry__stage_time(&it->sg, FERRY__TIME_WAIT_INPUT, ferry__now_ns() - t0);
    it->c_tail = atomic_load_explicit(&it->tail, memory_order_acquire);
    if (it->c_tail != h) return FERRY_OK;
    if (atomic_load_explicit(&it->end_pos, memory_order_acquire) == h) return FERRY_END;
    return ferry__fail(st, FERRY_ECANCELED, "prefetch: the iterator is being destroyed");
}

static int pf_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    pf_it *it = (pf_it *)it_;
    if (it->passthrough) {
        int rc = ferry__iter_next(it->input, out, st);
        if (rc != FERRY_END) it->pos++;
        return rc;
    }
    if (!it->started) {
        int rc = pf_start(it, st);
        if (rc) return rc;
    }
    int64_t h = it->pos;
    if (h == it->c_tail) {
        it->c_tail = atomic_load_explicit(&it->tail, memory_order_acquire);
        if (h == it->c_tail) {
            int rc = pf_wait_input(it, st);
            if (rc) return rc;
        }
    }
    pf_entry en = it->ring[h % it->ring_cap];
    it->pos = h + 1;
    atomic_store_explicit(&it->head, h + 1, memory_order_release);
    if (en.bytes) {
        ferry__budget_release(&it->rt->budget, en.bytes);
        atomic_store_explicit(&it->bytes_out,
                              atomic_load_explicit(&it->bytes_out, memory_order_relaxed) + (int64_t)en.bytes,
                              memory_order_relaxed);
    }
    int64_t cap = atomic_load_explicit(&it->capacity, memory_order_relaxed);
    if (it->c_tail - (h + 1) <= cap - FERRY__MAX(1, cap / 4)) pf_wake_producer(it);
    if (((h + 1) & (PF_ANCHOR_PERIOD - 1)) == 0) {
        ferry__anchor_prune(&it->sg.anchor, h + 1);
        pf_publish_buffered(it);
    }
    if (en.code == FERRY_OK) {
        *out = en.e;
        return FERRY_OK;
    }
    if (en.err) {
        ferry__status_copy(st, en.err);
        ferry__free(it->rt, en.err);
    } else {
        ferry__fail(st, en.code, "prefetch: the input failed at position %lld with %s (message lost: out of memory)",
                    (long long)(it->base_pos + h), ferry_error_name(en.code));
    }
    return en.code;
}

static int pf_skip(ferry__iter *it_, int64_t n, int64_t *skipped, ferry__status *st) {
    pf_it *it = (pf_it *)it_;
    *skipped = 0;
    if (it->passthrough || !it->started) {
        /* Nothing runs ahead: skip the input itself (cheap for sources that seek). */
        int rc = ferry__iter_skip(it->input, n, skipped, st);
        it->pos += *skipped;
        if (!it->passthrough) {
            it->c_tail = it->pos;
            atomic_store(&it->tail, it->pos);
            atomic_store(&it->head, it->pos);
            if (*skipped < n) atomic_store(&it->end_pos, it->pos);
            ferry__status ast;
            if (ferry__anchor_take(&it->sg.anchor, it->input, it->pos, true, &ast) == FERRY_OK)
                ferry__anchor_prune(&it->sg.anchor, it->pos);
        }
        return rc;
    }
    while (*skipped < n) {
        ferry_element *e = NULL;
        ferry__status tmp;
        int rc = pf_next(it_, &e, &tmp);
        if (rc == FERRY_END) break;
        if (rc == FERRY_ECANCELED && ferry__cancelled(&it->sg.scope)) return ferry__fail(st, rc, "%s", tmp.msg);
        ferry_element_free(e);
        (*skipped)++;
    }
    return FERRY_OK;
}

/* ---- save / destroy ---------------------------------------------------------------------- */
static int pf_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    pf_it *it = (pf_it *)it_;
    ferry__w_i64(w, it->base_pos + it->pos);
    if (it->passthrough) return ferry__anchor_write_now(it->input, it->rt, w, "prefetch", st);
    if (it->anchor_failed) {
        ferry__status_copy(st, &it->anchor_st);
        ferry__status_prefix(st, "prefetch: saving the input's state failed");
        return st->code;
    }
    int rc = ferry__anchor_write(&it->sg.anchor, it->pos, w, st);
    if (rc) ferry__status_prefix(st, "prefetch");
    return rc;
}

/* The knobs (ferry__knobs.set): buffer = the ring's capacity (up to the ring allocated); one
 * producer task, so parallelism stays 1. Raising it wakes the producer. */
static void pf_knobs_set(void *stage, int parallelism, int64_t buffer) {
    pf_it *it = stage;
    (void)parallelism;
    if (buffer < 0) atomic_store(&it->tuned, false); /* its own AUTOTUNE growth again */
    if (buffer <= 0) return;
    int64_t cap = FERRY__MIN(buffer, it->ring_cap);
    atomic_store(&it->tuned, true);
    int64_t old = atomic_exchange(&it->capacity, cap);
    if (it->base.stats) atomic_store(&it->base.stats->capacity, cap);
    if (cap > old) pf_wake_producer(it);
}

static void pf_destroy(ferry__iter *it_) {
    pf_it *it = (pf_it *)it_;
    ferry__stage_stop(&it->sg); /* no run after this: p_self_ns is ours */
    ferry__stage_account(&it->sg, FERRY__TIME_WORK, it->p_self_ns);
    if (it->ring) {
        int64_t t = atomic_load(&it->tail);
        for (int64_t i = it->pos; i < t; i++) {
            pf_entry *en = &it->ring[i % it->ring_cap];
            if (en->bytes) ferry__budget_release(&it->rt->budget, en->bytes);
            ferry_element_free(en->e);
            ferry__free(it->rt, en->err);
        }
        ferry__free(it->rt, it->ring);
    }
    if (it->base.stats && !it->passthrough) {
        atomic_store(&it->base.stats->buffered_elements, 0);
        atomic_store(&it->base.stats->buffered_bytes, 0);
    }
    ferry__iter_free(it->input);
    ferry__stage_fini(&it->sg);
    ferry__iter_release(&it->base);
}

static const ferry__iter_vtable pf_iter_vt = {pf_next, pf_save, pf_skip, pf_destroy};

/* ---- make -------------------------------------------------------------------------------- */
static int pf_make(ferry_dataset *ds_, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                   ferry__status *st) {
    const pf_ds *ds = (const pf_ds *)ds_;
    pf_it *it = ferry__iter_alloc(ds_, ctx, &pf_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    it->rt = ds_->rt;
    /* Over an input that already runs ahead on its own tasks and hands out what they made (a
     * parallel map, or a batch fused into one), this prefetch folds into it: a buffer of n asks
     * the input for room for n more outputs ahead (ictx.ahead), AUTOTUNE leaves its window as
     * it is, and no second task runs. A second task would only add a handoff (~23 us whenever
     * a side sleeps) and keep the consumer from helping the input's workers while it waits. */
    bool runs_ahead = ferry__plan_node(ctx->plan, ds_->inputs[0])->runs_ahead;
    it->passthrough = ds->buffer_size == 0 || runs_ahead;
    it->autotune = ds->buffer_size == FERRY_AUTOTUNE && !it->passthrough;
    atomic_init(&it->end_pos, INT64_MAX);
    int rc = FERRY_OK;
    if (state) {
        rc = ferry__r_i64(state, &it->base_pos, st);
        if (rc == FERRY_OK && it->base_pos < 0)
            rc = ferry__fail(st, FERRY_ECORRUPT, "prefetch: saved position %lld is negative", (long long)it->base_pos);
        if (rc) goto fail;
    }
    ferry__ictx ictx = *ctx;
    ictx.ahead = it->passthrough && ds->buffer_size > 0 ? ds->buffer_size : 0;
    if (!it->passthrough) {
        /* An unordered input (a relaxed-order op below) cannot be replayed: snapshot it at every
         * position, so that restore replays nothing. */
        int64_t period = ds_->inputs[0]->unordered ? 1 : PF_ANCHOR_PERIOD;
        if ((rc = ferry__stage_init(&it->sg, &it->base, period, &ictx, st)) != FERRY_OK) goto fail;
        it->ring_cap = it->autotune ? PF_AUTOTUNE_MAX : ds->buffer_size;
        atomic_init(&it->capacity, it->autotune ? PF_AUTOTUNE_START : ds->buffer_size);
        it->ring = ferry__calloc(it->rt, (size_t)it->ring_cap, sizeof *it->ring);
        if (!it->ring) {
            rc = ferry__fail(st, FERRY_ENOMEM, "prefetch: allocating a buffer of %lld entries failed",
                             (long long)it->ring_cap);
            goto fail;
        }
    }
    if (state) rc = ferry__anchor_restore(ds_->inputs[0], &ictx, state, &it->input, NULL, st);
    else rc = ferry__iter_make(ds_->inputs[0], &ictx, NULL, &it->input, st);
    if (rc) goto fail;
    if (!it->passthrough) {
        /* The snapshot every save can fall back on, taken before any thread drives the input. */
        if (ferry__anchor_take(&it->sg.anchor, it->input, 0, true, &it->anchor_st) != FERRY_OK) {
            it->anchor_failed = true;
            it->sg.anchor.next_pos = INT64_MAX; /* do not retry on every element */
        }
        ferry__knobs k = {.set = pf_knobs_set,
                          .stage = it,
                          .parallelism_max = 1,
                          .buffer_max = it->ring_cap,
                          .parallelism_limit = 1,
                          .tune_buffer = it->autotune};
        ferry__stage_ready(&it->sg, NULL, NULL, 1, atomic_load(&it->capacity), &k);
        if (ctx->warm_start && (rc = pf_start(it, st)) != FERRY_OK) goto fail;
    }
    *out = &it->base;
    return FERRY_OK;
fail:
    pf_destroy(&it->base);
    return rc;
}

static const ferry__dataset_vtable pf_vt = {.make = pf_make, .destroy = NULL};

int ferry_dataset_prefetch(ferry_dataset *in, int64_t buffer_size, const ferry_prefetch_options *opts,
                           ferry_dataset **out) {
    FERRY__OP_PROLOGUE(in, opts, out);
    FERRY__CHECK_ARG(buffer_size == FERRY_AUTOTUNE || (buffer_size >= 0 && buffer_size <= PF_MAX_BUFFER), FERRY_EINVAL,
                     "%s: argument 'buffer_size' is %lld; it must be FERRY_AUTOTUNE (-1) or "
                     "0 to %lld",
                     __func__, (long long)buffer_size, (long long)PF_MAX_BUFFER);
    ferry_dataset *ds;
    int rc = ferry__dataset_new(in->rt, &pf_vt, "prefetch", sizeof(pf_ds), 1, &in, in->ncomp, in->specs,
                                in->cardinality, &ds);
    if (rc) return rc;
    ((pf_ds *)ds)->buffer_size = buffer_size;
    /* The buffer size is a performance knob, not part of the stream: it stays out of the hash so
     * that a state saved with one size restores with another (the state format is the same). */
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}
