/*
 * core.h - the objects every op is made of, and the protocols between them.
 *
 * Objects
 *   ferry_runtime   allocator hook, byte budget, thread accounting, cpu budget. Thread-safe.
 *   ferry_tensor    dtype, shape, and storage owned by a "base" tensor (inline after the struct,
 *                   or wrapped caller memory); slices reference their base. Immutable once shared.
 *   ferry_element   fixed-arity array of tensor references; one owner at a time.
 *   ferry_dataset   immutable description (op name, inputs, element spec, cardinality, a hash of
 *                   its parameters). Ops embed `ferry_dataset` as their first member.
 *   ferry__iter     the running state of one op in one pass. Ops embed it as first member.
 *   ferry__cancel   a node of the cancellation tree: cancelling a scope sets the flag on it and on
 *                   every scope below it and calls every registered waker.
 *   ferry__pipe     per root iterator: the stats record of every dataset node.
 *
 * Iterator protocol (every op implements it; see ops/range.c for the smallest example)
 *   make   ds->vt->make(ds, ctx, state, &it, st): a fresh iterator (state == NULL) or one that
 *          continues from `state`, the bytes its save wrote. The generic ferry__iter_make frames
 *          every op's state with a tag of the op's name and checks it on restore.
 *   next   it->vt->next(it, &e, st): FERRY_OK with an element, FERRY_END, or an error with st
 *          filled. After an error the iterator must still work: the next call goes on with the
 *          next position. An error takes a position in the stream like an element does.
 *          ferry__iter_next sets *out to NULL before the call, and an op writes *out only with
 *          FERRY_OK: after END or an error *out is NULL, whatever it held before (a caller that
 *          reuses one variable across calls never sees the element it already freed).
 *   save   it->vt->save(it, w, st): writes the position after the last element returned by next,
 *          such that make(ds, ctx, state) yields exactly the rest of the stream. Called on the
 *          consumer's thread between next calls. An op whose producer threads drive its input
 *          must not call its input's save from the consumer thread: it uses ferry__anchor.
 *   skip   optional: it->vt->skip(it, n, &skipped, st) drops n positions cheaply (range,
 *          slices and 1:1 ops forward it); NULL means next-and-free.
 *   destroy it->vt->destroy(it): fire its own cancel scope (if it has one), join its threads,
 *          destroy its inputs, free itself. Must return promptly whatever the threads are doing.
 *
 * Threads and locks
 *   The consumer of an iterator is one thread at a time. An async op (prefetch, parallel map)
 *   owns a cancel scope that is a child of its ctx scope, and its threads are the only callers
 *   of its input's next. Every wait in an async op loops on (condition || cancelled) and
 *   registers a waker with its scope, so cancel wakes it. Lock order: a cancel scope's lock may
 *   be held while a waker takes an op's mutex, never the other way round: never create or fire
 *   a cancel scope while holding an op mutex.
 *
 * Seeds
 *   ctx->seed is the iteration seed: the pipeline seed, mixed by repeat with the epoch number.
 *   Ops mix it with ds->salt (structural: the op's name and place) and their own seed option.
 */
#ifndef FERRY_CORE_H
#define FERRY_CORE_H

#include "base/base.h"

/* ---- executor: the runtime's one pool of threads that run ahead (core/executor.c) -------- */
typedef struct ferry__exec ferry__exec;
typedef struct ferry__task ferry__task;
struct ferry__exec_worker;

/* A client of the executor: one unit of an async stage's parallelism. */
struct ferry__task {
    void (*run)(ferry__task *t); /* does work until none is left for now, or a yield is due */
    void *arg;                   /* the stage's */
    ferry__exec *x;
    _Atomic int state;      /* idle, queued, running, notified, closing, closed */
    ferry__list node;       /* in the ready queue (under the executor's mu) */
    int64_t slice_start_ns; /* when this run began (the worker's) */
    int64_t queued_ns;      /* when it was last queued (under the executor's mu) */
    bool open;
    ferry__task *stage_next;       /* the next task of the same stage (ferry__stage_task_open) */
    struct ferry__node_stats *rec; /* the stage's stats record: runs are timed into it (or NULL) */
};

struct ferry__exec {
    ferry_runtime *rt;
    ferry__mutex mu;
    ferry__cond cv_work; /* idle workers */
    ferry__cond cv_done; /* closers waiting for a running task to return */
    ferry__cond cv_core; /* workers back from a blocked wait, waiting for a free core */
    ferry__list ready;
    _Atomic int queued;   /* tasks in ready (read by spinning workers without mu) */
    _Atomic int spinning; /* workers spinning for a task */
    int max_busy;         /* the cpu budget */
    int extra;            /* running workers granted over it (ferry__exec_grant) */
    int64_t epoch_ns;     /* when it was made: run start times are kept relative to it */
    int clients;          /* open tasks */
    int nworkers, starting, idle, busy, blocked, core_waiters;
    int blocked_borrowers; /* of `blocked`: threads with a borrowed core (not workers) */
    int peak_busy;         /* the most busy workers seen (for tests and stats) */
    int peak_extra;        /* the most workers granted over the budget at once */
    struct ferry__exec_worker *workers;
};

/* A task that keeps running while others are queued returns after this much (and wakes itself). */
#define FERRY__TASK_SLICE_NS 2000000

int ferry__exec_init(ferry__exec *x, ferry_runtime *rt, int max_busy);
/* No task may be open. */
void ferry__exec_fini(ferry__exec *x);
/* Opens t (IDLE) with its run function; starts the first worker when there is none. Returns
 * FERRY_OK or FERRY_ENOMEM (message in st). */
int ferry__task_open(ferry__exec *x, ferry__task *t, void (*run)(ferry__task *), void *arg, ferry__status *st);
/* Makes t run (again) soon: a wake while it runs makes it run once more after it returns, so a
 * stage calls wake after it changes what run looks at, and never loses one. Any thread; cheap
 * when t is already queued or notified (one atomic load). */
void ferry__task_wake(ferry__task *t);
/* In run: true when other tasks wait and this run has used its time slice; the run should then
 * call ferry__task_wake(t) and return. Call it between chunks of work (never per element): it is
 * also where a long run's share of CPU time is sampled for the stats. */
bool ferry__task_yield_due(ferry__task *t);
/* After close returns, run is not running and is never called again. Closing the last open task
 * stops and joins every worker. Not from t's own run. NULL-safe for a task never opened. */
void ferry__task_close(ferry__task *t);
/* Around a wait inside a run for something other than the run's own work (the byte budget,
 * another stage's output, a slow read): a blocked worker does not count against the cpu budget
 * and another may start. begin returns whether the calling thread is a worker of x (false on
 * other threads: then both calls do nothing); pass its result to end. end waits for a free core
 * when wait_for_core; pass false when the caller holds a lock that running tasks may take. */
bool ferry__exec_block_begin(ferry__exec *x);
void ferry__exec_block_end(ferry__exec *x, bool blocked, bool wait_for_core);
/* A thread that is not one of x's workers (a consumer that would otherwise wait) borrows a core
 * to do a stage's work itself. Returns 0 when no core is free under the cpu budget; 1 when it
 * borrowed one: the thread then counts as busy, and as one of x's workers for block_begin/end,
 * until ferry__exec_unborrow(x, 1); 2 when the thread holds a core already (a worker of x). A
 * worker of another runtime's pool gets 0. Pass the result to unborrow. */
int ferry__exec_borrow(ferry__exec *x);
void ferry__exec_unborrow(ferry__exec *x, int token);
/* Adds delta (may be negative) to the workers that may run over the cpu budget: the autotuner
 * grants them to stages whose threads are blocked most of the time (their calls sleep or wait on
 * I/O where the executor cannot see it), so that such a stage may hold more threads than cores
 * while the CPU they use stays within the budget. Grants are summed over their givers; each
 * giver takes back what it granted. Any thread. */
void ferry__exec_grant(ferry__exec *x, int delta);
/* Workers started, running a task, blocked (for tests and stats). */
void ferry__exec_counts(ferry__exec *x, int *workers, int *busy, int *blocked);

/* ---- the trace (core/trace.c) -----------------------------------------------------------
 * Spans recorded in a per-runtime ring when tracing is on (rt->trace != NULL), written as
 * Chrome trace JSON by ferry_runtime_trace_write. Any thread; off, each hook is a load and a
 * branch. */
typedef struct ferry__trace ferry__trace;
#define FERRY__TRACE_ENV_BYTES ((size_t)64 << 20) /* the ring when only FERRY_TRACE asks for one */
typedef enum ferry__trace_kind {                  /* keep WORK.. in the order of ferry__time_kind */
                                 FERRY__TR_RUN,   /* a run of a stage's task on a worker */
                                 FERRY__TR_WORK,  /* the ferry__time_kind values, in that order */
                                 FERRY__TR_ASSEMBLE,
                                 FERRY__TR_LOCK,
                                 FERRY__TR_WAIT_INPUT,
                                 FERRY__TR_WAIT_CONSUMER,
                                 FERRY__TR_NEXT, /* a call to ferry_iterator_next */
                                 FERRY__TR_STEP, /* ferry_trace_step */
} ferry__trace_kind;
/* Makes rt's ring of about `bytes` (and remembers path, FERRY_TRACE's file, when not NULL),
 * through the hook fn (not counted as the runtime's blocks). FERRY_OK or FERRY_ENOMEM. */
int ferry__trace_open(ferry_runtime *rt, size_t bytes, const char *path, ferry_alloc_fn fn, void *user);
void ferry__trace_close(ferry_runtime *rt);
/* FERRY_TRACE's file for rt, or NULL. */
const char *ferry__trace_env_path(const ferry_runtime *rt);
/* Records [start_ns, end_ns] of `kind` on the calling thread, named `name` (its first 23 bytes;
 * copied). No-op when tracing is off. */
void ferry__trace_add(ferry_runtime *rt, ferry__trace_kind kind, const char *name, int64_t start_ns, int64_t end_ns);
/* A timed call to the public next (kept when it took 2 us or more). */
void ferry__trace_next(ferry_runtime *rt, int64_t start_ns, int64_t end_ns);

/* ---- runtime ---------------------------------------------------------------------------- */
struct ferry_runtime {
    ferry__allocator alloc; /* first: the block is 64-byte aligned for its shards */
    void *raw;              /* the block as allocated (rt is rounded up inside it) */
    ferry__budget budget;
    _Atomic size_t budget_held; /* of budget.used: ferry_runtime_budget_hold's bytes */
    int cpu_budget;
    ferry__exec exec;
    _Atomic int threads_live;
    _Atomic int64_t threads_started;
    _Atomic int64_t objects; /* live datasets and iterators */
    ferry__trace *trace;     /* NULL: tracing off */
    ferry__fault file_fault; /* the file cache's I/O fault hook (tests; set while no iterator of
                                this runtime runs: ferry__runtime_set_file_fault) */
};
/* Sets the runtime's file I/O fault hook (platform.h, ferry__fault; fn NULL: none). Tests only;
 * call while no iterator of rt runs. */
static inline void ferry__runtime_set_file_fault(ferry_runtime *rt, ferry__fault_fn fn, void *user) {
    rt->file_fault = (ferry__fault){fn, user};
}

/* Whether a waiting thread may spin before it sleeps: not under a one-core budget, where the
 * spin would take the one core that the budget gives the pipeline (or the training step's). */
static inline bool ferry__may_spin(const ferry_runtime *rt) { return rt->cpu_budget > 1; }

static inline void *ferry__alloc(ferry_runtime *rt, size_t n) { return ferry__mem_alloc(&rt->alloc, n); }
static inline void *ferry__calloc(ferry_runtime *rt, size_t n, size_t size) {
    return ferry__mem_calloc(&rt->alloc, n, size);
}
static inline void *ferry__realloc(ferry_runtime *rt, void *p, size_t n) {
    return ferry__mem_realloc(&rt->alloc, p, n);
}
static inline void ferry__free(ferry_runtime *rt, void *p) { ferry__mem_free(&rt->alloc, p); }

/* Starts a named ferry thread counted in the runtime stats. Returns FERRY_OK or FERRY_ENOMEM
 * (message in st). */
int ferry__rt_thread_start(ferry_runtime *rt, ferry__thread *t, const char *name, void *(*fn)(void *), void *arg,
                           ferry__status *st);
void ferry__rt_thread_join(ferry_runtime *rt, ferry__thread *t);
/* Worker threads an AUTOTUNE stage starts: the cpu budget less one core for the consumer (the
 * training step), at least 1, so busy threads never outnumber the cores. */
static inline int ferry__autotune_threads(const ferry_runtime *rt) {
    return rt->cpu_budget > 1 ? rt->cpu_budget - 1 : 1;
}
/* The most threads the autotuner gives an AUTOTUNE stage that can grow (parallel map): eight
 * per core of the budget, at least 16. Only a stage whose threads it measured to be blocked
 * most of the time (sleeping or I/O-bound calls) gets more than the budget. */
static inline int ferry__autotune_max_threads(const ferry_runtime *rt) {
    return rt->cpu_budget * 8 > 16 ? rt->cpu_budget * 8 : 16;
}

/* ---- tensors and elements --------------------------------------------------------------- */
struct ferry_tensor {
    _Atomic int refs;
    ferry_dtype dtype;
    int rank;
    int64_t dims[FERRY_MAX_RANK];
    int64_t n;     /* entries */
    size_t nbytes; /* what the budget counts (see ferry_tensor_nbytes) */
    ferry_runtime *rt;
    ferry_tensor *base;                      /* reference to the tensor that owns the storage, or NULL: this one */
    uint8_t *data;                           /* numeric: first value; bytes: uint64 offsets[n+1] into blob */
    const uint8_t *blob;                     /* bytes only: string data */
    void (*release)(void *user, void *data); /* wrapped storage */
    void *release_user, *release_data;
    bool wrapped;
    void *block; /* non-NULL: this tensor lives in an element's block
                              (ferry__element_new_single); its last reference frees the block */
};

/* A new tensor with uninitialized numeric storage inline. dims borrowed; entries checked for
 * overflow. Sets st on failure. */
int ferry__tensor_new(ferry_runtime *rt, ferry_dtype dtype, int rank, const int64_t *dims, ferry_tensor **out,
                      ferry__status *st);
/* A new FERRY_DTYPE_BYTES tensor with room for offsets (n+1, offsets[0] = 0 set) and blob_size bytes
 * of string data; the caller fills offsets (ferry__tensor_offsets) and blob
 * (ferry__tensor_blob_mut) and must leave offsets[n] == blob_size. */
int ferry__tensor_new_bytes(ferry_runtime *rt, int rank, const int64_t *dims, size_t blob_size, ferry_tensor **out,
                            ferry__status *st);
static inline uint64_t *ferry__tensor_offsets(ferry_tensor *t) { return (uint64_t *)(void *)t->data; }
static inline uint8_t *ferry__tensor_blob_mut(ferry_tensor *t) { return (uint8_t *)t->blob; }
/* Entry i of a bytes tensor, no checks. */
static inline const uint8_t *ferry__tensor_str(const ferry_tensor *t, int64_t i, size_t *len) {
    const uint64_t *off = (const uint64_t *)(const void *)t->data;
    *len = (size_t)(off[i + 1] - off[i]);
    return t->blob + off[i];
}
/* Row i along dim 0 of t (rank >= 1): a tensor of shape dims[1:] sharing t's bytes. No range
 * check (callers check i < dims[0]). */
int ferry__tensor_row(ferry_tensor *t, int64_t i, ferry_tensor **out, ferry__status *st);
/* Product of dims with overflow check; returns -1 on overflow or a negative dim. */
int64_t ferry__num_entries(int rank, const int64_t *dims);
/* "[3, ?, 4]" into buf. */
const char *ferry__shape_str(const ferry_shape *s, char *buf, size_t cap);
/* FERRY_OK if t fits spec (dtype equal, rank equal unless unknown, known dims equal); else
 * FERRY_ETYPE with a message naming `what` (e.g. "map output 1"). */
int ferry__spec_check(const ferry_tensor_spec *spec, const ferry_tensor *t, const char *what, ferry__status *st);
/* Checks a spec a user gave (field[i] of fn's options): a valid dtype (FERRY_DTYPE_INVALID is
 * not one), rank FERRY_UNKNOWN_RANK or 0 to FERRY_MAX_RANK, dims >= 0 or FERRY_UNKNOWN_DIM. FERRY_OK, or
 * FERRY_EINVAL with the last error naming fn, the field and the value. */
int ferry__spec_validate(const ferry_tensor_spec *s, const char *fn, const char *field, size_t i);

struct ferry_element {
    ferry_runtime *rt;
    uint32_t n;
    ferry_tensor *own; /* a tensor sharing this element's block, or NULL: the element holds one
                          extra reference to it, dropped last by ferry_element_free */
    ferry_tensor *t[];
};

/* A new element with n NULL components. */
ferry_element *ferry__element_new(ferry_runtime *rt, size_t n);
/* A new element of one new numeric tensor (storage uninitialized), both in one block: the
 * sources' per-element path (one allocation instead of two). The tensor is an ordinary tensor
 * (it may be shared, outlive the element, be replaced in it). Sets st on failure. */
int ferry__element_new_single(ferry_runtime *rt, ferry_dtype dtype, int rank, const int64_t *dims, ferry_element **out,
                              ferry__status *st);

/* ---- cancellation tree ------------------------------------------------------------------ */
typedef struct ferry__waker {
    void (*fn)(void *arg);
    void *arg;
    ferry__list node;
} ferry__waker;

struct ferry__cancel {
    _Atomic int flag;
    struct ferry__cancel *parent;
    ferry__mutex mu; /* guards children and wakers */
    ferry__list children;
    ferry__list wakers;
    ferry__list node; /* in parent's children */
};

/* Makes c a child of parent (NULL: a root). A child of a cancelled scope starts cancelled. */
int ferry__cancel_init(ferry__cancel *c, ferry__cancel *parent);
/* Detaches from the parent and frees locks. No waker may remain registered. */
void ferry__cancel_fini(ferry__cancel *c);
/* Sets the flag on c and all scopes below it and calls their wakers (again on every fire: a
 * waker only wakes, so this is harmless). The flags never clear; thread-safe. */
void ferry__cancel_fire(ferry__cancel *c);
static inline bool ferry__cancelled(const ferry__cancel *c) {
    return c && atomic_load_explicit(&c->flag, memory_order_acquire);
}
void ferry__cancel_add_waker(ferry__cancel *c, ferry__waker *w);
void ferry__cancel_remove_waker(ferry__cancel *c, ferry__waker *w);

/* ---- callback context ------------------------------------------------------------------- */
struct ferry_context {
    ferry_runtime *rt;
    int64_t index;
    uint64_t seed; /* the op's seed; the generator is seeded from it and index on first use */
    bool rng_ready;
    ferry__rng rng;
    ferry__cancel *cancel;
    ferry__status *st;
};

/* The gate before every user callback (map, filter, generator, dataset functions): FERRY_OK, or,
 * once `cancel` has fired, FERRY_ECANCELED with a message naming `op`, and the callback must not
 * be called. Destroying an iterator then waits at most for the calls already running. */
static inline int ferry__callback_gate(const ferry__cancel *cancel, const char *op, ferry__status *st) {
    if (!ferry__cancelled(cancel)) return FERRY_OK;
    return ferry__fail(st, FERRY_ECANCELED, "%s: the iterator is being destroyed; no new call starts", op);
}

/* Prepares a context for one call: seed = mix(op_seed, index). */
void ferry__context_init(ferry_context *ctx, ferry_runtime *rt, ferry__cancel *cancel, ferry__status *st,
                         uint64_t op_seed, int64_t index);

/* ---- datasets --------------------------------------------------------------------------- */
typedef struct ferry__iter ferry__iter;
typedef struct ferry__pipe ferry__pipe;
typedef struct ferry__plan ferry__plan;
typedef struct ferry__knobs ferry__knobs;

typedef struct ferry__ictx {
    ferry_runtime *rt;
    ferry__cancel *cancel;   /* the scope this iterator lives in (borrowed) */
    ferry__pipe *pipe;       /* stats records of the root iterator (borrowed) */
    uint64_t seed;           /* iteration seed: the pipeline seed mixed with enclosing epoch numbers */
    uint64_t pipeline_seed;  /* the pipeline seed alone (ferry_iterator_options.seed) */
    uint64_t epoch0_seed;    /* the iteration seed as it is in the first epoch of every enclosing
                              repeat: what a cache's content is made with, so that it is known in
                              every epoch and in a new process, whatever a saved state holds */
    bool warm_start;         /* start threads at make instead of at the first next */
    const ferry__plan *plan; /* the graph rewrites of this pass (borrowed; NULL: none) */
    int64_t ahead;           /* outputs a prefetch right above, folded into this stage, asks it to
                              hold ahead of its consumer besides its own window. Only a stage
                              that runs ahead (plan node's runs_ahead) is given one, and it makes
                              its own input with 0. */
} ferry__ictx;

typedef struct ferry__dataset_vtable {
    /* See "Iterator protocol" above. state: NULL for a fresh iterator. *out is a new iterator
     * made with ferry__iter_alloc. */
    int (*make)(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out, ferry__status *st);
    /* Frees what the op added to the dataset (not the base, not input references). May be NULL. */
    void (*destroy)(ferry_dataset *ds);
    /* A rewrite rule, offered this node by the pass that plans an iterator (core/rewrite.c).
     * inputs: what runs in place of ds->inputs (rewritten already). Sets *out to a new dataset
     * that replaces ds in this pass (output, errors in position and saved state identical), or
     * leaves it NULL. A failure only means no rewrite. May be NULL. */
    void (*rewrite)(ferry_dataset *ds, ferry_dataset *const *inputs, ferry_dataset **out);
} ferry__dataset_vtable;

/* Live-object marks: set when a public object is made, overwritten just before it is freed, so
 * that a call given a freed (or foreign) handle fails with FERRY_EMISUSE instead of acting on
 * it (freed blocks stay mapped in ferry's allocator cache; this is a misuse check, not a
 * guarantee). */
#define FERRY__MAGIC_DATASET 0x46445331u  /* "FDS1" */
#define FERRY__MAGIC_ITERATOR 0x46495431u /* "FIT1" */
#define FERRY__MAGIC_DEAD 0xdeadf00du

struct ferry_dataset {
    const ferry__dataset_vtable *vt;
    _Atomic uint32_t magic; /* FERRY__MAGIC_DATASET while it lives */
    _Atomic long refs;
    ferry_runtime *rt;
    const char *name;               /* the op, static */
    char label[FERRY_NAME_MAX + 1]; /* the name given in the op's options; "" for none (FERRY__LABEL) */
    void (*user_free)(void *user);  /* set by ferry__dataset_own_user: called with user_owned after */
    void *user_owned;               /* destroy, when the last reference goes */
    size_t ninputs;
    ferry_dataset **inputs; /* references */
    size_t ncomp;
    ferry_tensor_spec *specs;
    int64_t cardinality;
    int depth;       /* 0 for sources */
    uint64_t params; /* hash of the op's parameters (ferry__dataset_hash_*) */
    uint64_t salt;   /* structural: name, depth, params and the inputs' salts */
    uint32_t tag;    /* names the op in saved state: a hash of `name`, or for a node made
                                  by a rewrite, the tag of the node it replaces */
    bool no_errors;  /* no position can be an error, save running out of memory: sources
                                  that cannot fail (range, slices, file-name lists) and ops that
                                  only pass their inputs' positions on set it, so that skip and
                                  take may drop positions without looking at them */
    bool runs_ahead; /* its iterators hand out what workers of their own made ahead of
                                  the consumer (parallel map, map_and_batch): a prefetch(AUTOTUNE)
                                  right above would only add a handoff */
    bool assembles;  /* inline, its own time is copying rows into batches (batch,
                                  padded_batch): the stats show it as assembling, not work */
    /* What the autotuner learnt about this node's stage, kept for the dataset's next iterator
     * (each epoch's, as a tf.data user iterates a dataset once per epoch): the threads and
     * buffer it chose (0: none), the knobs it set and the moves it backed out of (the tuner's
     * `set` and `tried` bits), packed in one word (autotune.c's memo_pack) so that a reader sees
     * one tuner's whole memo, and the pipeline it was learnt in (its root's salt): another
     * pipeline over the same node ignores it. The one mutable part of a dataset: atomics, written
     * when an iterator's tuner ends (only where it learnt something), read when the next one
     * starts. Two pipelines writing at once may leave a key and a word of different tuners: that
     * costs tuning, never elements. A node made by a rewrite keeps it on the node it replaces
     * (tune_home). */
    _Atomic uint64_t memo, memo_key;
    ferry_dataset *tune_home; /* NULL: this node (borrowed: the rewritten node references it) */
    bool unordered;           /* element order depends on thread timing (a relaxed-order op here
                                  or below; inherited from the inputs by ferry__dataset_new): an
                                  op that replays this input from an anchor snapshots it at every
                                  position, since replaying "the next n" is not reproducible */
};

/* Allocates an op's dataset struct of `size` bytes (zeroed; base first), takes references to
 * the inputs and copies the specs. The op then sets params with ferry__dataset_hash and calls
 * ferry__dataset_seal, which computes salt. On failure writes the last error and returns it. */
int ferry__dataset_new(ferry_runtime *rt, const ferry__dataset_vtable *vt, const char *name, size_t size,
                       size_t ninputs, ferry_dataset *const *inputs, size_t ncomp, const ferry_tensor_spec *specs,
                       int64_t cardinality, ferry_dataset **out);
/* The name stats, the report, the trace and messages show for ds: its label, else its op. */
#define FERRY__LABEL(ds) ((ds)->label[0] ? (ds)->label : (ds)->name)
/* Checks an options struct's `name` (NULL allowed): at most FERRY_NAME_MAX bytes, no control
 * character. FERRY_OK, or FERRY_EINVAL with the last error naming fn. */
int ferry__check_name(const char *fn, const char *name);
/* Copies a name checked by ferry__check_name (NULL or "": none) into ds->label; a longer one
 * (a fused stage's) is cut to FERRY_NAME_MAX bytes at a UTF-8 character boundary. */
void ferry__dataset_set_label(ferry_dataset *ds, const char *name);
/* The dataset owns `user` from now: user_free(user) runs once its last reference goes (after
 * the op's destroy). A NULL user_free leaves user borrowed. */
void ferry__dataset_own_user(ferry_dataset *ds, void *user, void (*user_free)(void *user));
/* Ends an op's constructor: the label from opts, the salt, *out. */
#define FERRY__OP_SEAL(ds, opts, out)                                                                                  \
    do {                                                                                                               \
        ferry__dataset_set_label((ds), (opts) ? (opts)->name : NULL);                                                  \
        ferry__dataset_seal(ds);                                                                                       \
        *(out) = (ds);                                                                                                 \
    } while (0)
/* Mixes n bytes of parameters into ds->params (call before seal). */
void ferry__dataset_hash(ferry_dataset *ds, const void *p, size_t n);
void ferry__dataset_hash_i64(ferry_dataset *ds, int64_t v);
void ferry__dataset_seal(ferry_dataset *ds);
/* A fingerprint of the whole graph under ds (names, parameters, specs), equal across processes. */
uint64_t ferry__dataset_fingerprint(const ferry_dataset *ds);
/* Checks a public dataset argument: returns FERRY_OK or sets the last error (EMISUSE/EINVAL) naming
 * `arg` of function `fn`. */
int ferry__check_dataset(const ferry_dataset *ds, const char *fn, const char *arg);
/* FERRY_OK, or FERRY_EINVAL (NULL) / FERRY_EMISUSE (not a live iterator) with the last error set
 * naming fn. */
int ferry__check_iterator(const ferry_iterator *it, const char *fn);

/* ---- iterators -------------------------------------------------------------------------- */
typedef struct ferry__node_stats ferry__node_stats;

typedef struct ferry__iter_vtable {
    int (*next)(ferry__iter *it, ferry_element **out, ferry__status *st);
    int (*save)(ferry__iter *it, ferry__writer *w, ferry__status *st);
    int (*skip)(ferry__iter *it, int64_t n, int64_t *skipped, ferry__status *st); /* may be NULL */
    void (*destroy)(ferry__iter *it);
} ferry__iter_vtable;

struct ferry__iter {
    const ferry__iter_vtable *vt;
    ferry_dataset *ds; /* borrowed: the root iterator holds a reference to the graph */
    ferry__ictx ctx;
    ferry__node_stats *stats; /* shared by every iterator of the same node in this pipe */
    /* Local counters, flushed into stats every 64 calls and at destroy (one writer each). */
    uint32_t calls, flushes;
    bool time_all; /* calls are slow: time every one instead of one in 32 */
    int64_t l_elems, l_bytes, l_errors, l_total_ns;
};

/* Allocates an op's iterator struct of `size` bytes (zeroed; base first) for ds under ctx. */
void *ferry__iter_alloc(ferry_dataset *ds, const ferry__ictx *ctx, const ferry__iter_vtable *vt, size_t size,
                        ferry__status *st);
/* Frees the struct from ferry__iter_alloc (flushes the counters). Ops call it last in destroy. */
void ferry__iter_release(ferry__iter *it);

/* Makes an iterator for ds (reading and checking the op tag when state != NULL). */
int ferry__iter_make(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                     ferry__status *st);
/* Writes the op tag and the op's state. */
int ferry__iter_save(ferry__iter *it, ferry__writer *w, ferry__status *st);
/* Destroys an iterator (NULL-safe). */
void ferry__iter_free(ferry__iter *it);
/* Drops n positions (errors count as positions); *skipped gets how many were dropped before
 * END. Uses vt->skip when present. */
int ferry__iter_skip(ferry__iter *it, int64_t n, int64_t *skipped, ferry__status *st);
/* The same by calling it->vt->next n times (for an op whose skip cannot forward). */
int ferry__iter_skip_by_next(ferry__iter *it, int64_t n, int64_t *skipped, ferry__status *st);

void ferry__iter_flush_stats(ferry__iter *it);

/* The hot-path wrapper: counts elements, bytes and errors and times one call in 32. */
static inline int ferry__iter_next(ferry__iter *it, ferry_element **out, ferry__status *st) {
    int rc;
    *out = NULL; /* a caller may look at *out after any return: it never holds a stale pointer */
    if (!it->time_all && (++it->calls & 31) != 0) {
        rc = it->vt->next(it, out, st);
    } else {
        /* One call in 32 is timed and counts for 32; once calls take over 20 us (batches of
         * real work), every call is timed so that one preempted sample cannot skew the sum. */
        int64_t t0 = ferry__now_ns();
        rc = it->vt->next(it, out, st);
        int64_t dt = ferry__now_ns() - t0;
        it->l_total_ns += it->time_all ? dt : 32 * dt;
        it->time_all = dt > 20000;
        if ((++it->flushes & 1) == 0) ferry__iter_flush_stats(it);
    }
    if (rc == FERRY_END) ferry__iter_flush_stats(it);
    if (rc == FERRY_OK) {
        it->l_elems++;
        it->l_bytes += (int64_t)ferry_element_nbytes(*out);
    } else if (rc < 0) {
        it->l_errors++;
    }
    return rc;
}

/* ---- stats records ---------------------------------------------------------------------- */
struct ferry__node_stats {
    const ferry_dataset *ds;
    int parent; /* index of the consumer node, -1 for the root */
    int first_input;
    _Atomic int64_t elements, bytes, errors, dropped;
    _Atomic int64_t total_ns; /* time in next() seen by the consumer (sampled) */
    /* Where a stage's own time went (ns). A stage that runs ahead measures them on its threads
     * (ferry__stage_time); work_ns -1 means an inline stage: its own time is derived as its
     * total less its inputs' and counts as work, or as assembling for an op that sets
     * ferry_dataset.assembles. */
    _Atomic int64_t work_ns, assemble_ns, lock_wait_ns;
    _Atomic int64_t wait_input_ns, wait_consumer_ns;
    _Atomic int64_t idle_full_ns; /* its tasks idle, holding no thread, for want of room */
    _Atomic int64_t queued_ns;    /* its tasks queued, waiting for a worker (summed over tasks) */
    /* The executor's view of a stage that runs ahead: wall time of its tasks' runs (inline
     * stages below included), and the wall and CPU time of the runs it sampled (a run of a
     * worker that sampled none for 10 ms: reading a thread's scheduler account costs ~3 us): CPU
     * time, and time ready to run but waiting for a core. */
    _Atomic int64_t run_ns, sample_run_ns, sample_cpu_ns, sample_runq_ns;
    _Atomic int64_t runs_live, runs_live_start; /* runs in progress, and their start times (from
                                                   the executor's epoch_ns) summed: a reader adds
                                                   live x (now - epoch) - start to run_ns */
    _Atomic int64_t buffered_elements, buffered_bytes, capacity, parallelism;
    struct ferry__knobs *knobs; /* the running stage's, or NULL (under the pipe's knobs_mu) */
};

struct ferry__pipe {
    ferry_runtime *rt;
    size_t n;
    ferry__node_stats *nodes;
    ferry__mutex knobs_mu; /* guards every record's `knobs` and the calls through them */
    uint64_t knobs_serial; /* registrations so far (under knobs_mu) */
    bool mu_ok;
};

/* ---- knobs: what may be moved while a stage runs ------------------------------------------
 * A stage that runs ahead registers its knobs in its stats record; an autotuner (or a test)
 * moves them through ferry__pipe_set_knobs while the stage runs. Tuning changes speed, never
 * elements or their order. */
struct ferry__knobs {
    /* Sets the parallelism (tasks that may work) and the buffer (results the stage may hold
     * ahead of its consumer), each clamped to [1, its max]; 0 leaves one as it is. A knob set
     * this way is no longer adapted by the stage itself; -1 hands it back to the stage's own
     * adaptation (where it has one) from the value it has. Called under the pipe's knobs_mu,
     * from any thread. */
    void (*set)(void *stage, int parallelism, int64_t buffer);
    void *stage;
    int parallelism_max; /* what `set` accepts: the tasks this iterator opened */
    int64_t buffer_max;
    int parallelism_limit; /* the most the op runs if its user asks (for the report's advice) */
    bool tune_parallelism; /* the user asked FERRY_AUTOTUNE: the autotuner may move them */
    bool tune_buffer;
    uint64_t serial; /* set at registration: which stage of the node this is (a stage
                                made again, as by a repeat, gets a new one; its address may be
                                the old one's) */
};
/* Registers k as rec's knobs (replacing any: the newest iterator of a node, as a repeat's next
 * epoch, is the one to tune) and unregisters it. Unregister before the stage is freed: no call
 * through k starts after it returns. p and rec may be NULL (no stats: nothing to do). */
void ferry__pipe_knobs_register(ferry__pipe *p, ferry__node_stats *rec, ferry__knobs *k);
void ferry__pipe_knobs_unregister(ferry__pipe *p, ferry__node_stats *rec, ferry__knobs *k);
/* Moves the knobs of stats record `node` (see ferry__knobs.set). FERRY_ENOTFOUND when that node
 * has none now (not a stage that runs ahead, or not running). *par_max and *buf_max (may be
 * NULL) get the limits. */
int ferry__pipe_set_knobs(ferry__pipe *p, size_t node, int parallelism, int64_t buffer, int *par_max, int64_t *buf_max);
/* The knobs of stats record `node` (a copy), without moving them. FERRY_ENOTFOUND when that
 * node has none now. */
int ferry__pipe_knobs_get(ferry__pipe *p, size_t node, ferry__knobs *out);
/* The stats records of a public iterator (internal: for tests and the autotuner). */
ferry__pipe *ferry__iterator_pipe(ferry_iterator *it);

/* ---- the model (report.c): what each group of threads costs per element -------------------
 * Built from stats (cumulative, for the report; or the difference of two snapshots, for the
 * autotuner's window) and the consumer's time in next; see report.c's design note. */
typedef struct ferry__mgroup {
    int owner;          /* the stage that runs ahead, or -1 for the consumer's thread; -2: none */
    int busiest_inline; /* the inline stage of the group with the most own time, or -1 */
    int64_t inline_ns;  /* that stage's own time */
    double t, c;        /* thread and CPU seconds per element handed out */
    double k, kmax;     /* threads now, and the most its op runs if asked */
    double busy;        /* share of its threads' wall time spent running */
    double cpu_share;   /* CPU / running time */
    double runq_share;  /* waiting for a core / running time */
} ferry__mgroup;
/* Its threads were blocked (neither computing nor waiting for a core) most of their time: the
 * verdict's test (the autotuner's tune_waits also counts waiting for a core as waiting). */
static inline bool ferry__mgroup_waits(const ferry__mgroup *g) { return g->cpu_share + g->runq_share < 0.5; }
typedef struct ferry__model {
    ferry__mgroup *g; /* n + 1: g[0] the consumer's thread, g[1 + i] stage i (owner -2: inline) */
    size_t n;
    int64_t elems; /* handed out by the root */
    double wall, inline_top, consumer_own, waited, wait_share;
    double cpu_per_elem; /* CPU seconds per element, every group and the consumer */
    double bound, head;  /* elements/s: the linear program's bound and the headspace (may be inf) */
    int worst;           /* the stage whose group delivers least with its present threads, or -1 */
    bool any_ahead;
} ferry__model;
/* Fills m from stats s[0..n) (of pipe's nodes) over `wall` seconds in which the consumer spent
 * in_next in next(); g: room for n + 1 groups. */
void ferry__model_build(ferry__model *m, ferry__mgroup *g, const ferry_stage_stats *s, size_t n, ferry__pipe *pipe,
                        double wall, double in_next, int cpu_budget);

/* ---- closed-loop AUTOTUNE (autotune.c) ----------------------------------------------------- */
#define FERRY__TUNE_LOG 32
/* A stage as the tuner sees it over a window. */
typedef struct ferry__tune_stage {
    char name[FERRY_NAME_MAX + 1];
    bool has_knobs, tune_par, tune_buf;
    bool measured;        /* its threads' CPU was sampled in the window */
    double running;       /* its tasks running at once, on average over the window */
    double queued;        /* its tasks waiting for a worker at once, on average */
    int par, par_max;     /* threads now, and the most its knobs take */
    int64_t buf, buf_max; /* buffer (elements) now, and the most */
    double bytes_per_elem;
    double wait_in_share; /* its consumer side waited on it: share of the window */
    double room_share;    /* its threads waited for room or budget: share of their time */
} ferry__tune_stage;
typedef struct ferry__tune_in {
    const ferry__model *m;       /* over the window */
    const ferry__tune_stage *st; /* m->n */
    double rate;                 /* elements handed out per second */
    double cpu_per_s;            /* CPU seconds per second of the whole process (ferry's threads
                                     and the consumer's: what the cpu budget bounds) */
    double at_s;                 /* since the first next */
} ferry__tune_in;
/* A change: stage's parallelism and buffer (0: leave; -1: back to the stage's own adaptation,
 * as before the tuner set it). */
typedef struct ferry__tune_move {
    int stage, par;
    int64_t buf;
    int from_par;
    int64_t from_buf;
    bool undo;
    bool hand_back_par, hand_back_buf; /* an undo: back to the stage's own adaptation after */
    char why[160];
} ferry__tune_move;
typedef struct ferry__tuner {
    ferry_runtime *rt;
    size_t n;
    int cpu_budget;
    size_t byte_budget;
    int phase, settle, trial_windows, steady_n, drift;
    int64_t windows;
    double base_rate, trial_elems, trial_wall, trial_cpu, steady_sum, steady_rate;
    ferry__tune_move trial;
    uint8_t *tried; /* per stage, backed out: 1 more threads, 2 a bigger buffer, 4 fewer threads */
    uint8_t *set;   /* per stage: 1 threads, 2 buffer set by the tuner (kept) */
    bool said_consumer, said_steady;
    bool shares_cores; /* the last proposal left out a thread that would share the consumer's cores */
    ferry_tune_decision log[FERRY__TUNE_LOG];
    size_t nlog; /* decisions made (the ring holds the last FERRY__TUNE_LOG) */
} ferry__tuner;
int ferry__tuner_init(ferry__tuner *t, ferry_runtime *rt, size_t n, int cpu_budget, size_t byte_budget);
void ferry__tuner_fini(ferry__tuner *t);
/* Feeds the tuner one window's measurements; true when *mv is to be applied to the knobs. */
bool ferry__tuner_window(ferry__tuner *t, const ferry__tune_in *in, ferry__tune_move *mv);
/* The move just returned could not be applied (its stage was gone): measure again from BASE. */
void ferry__tuner_unapplied(ferry__tuner *t);
/* The last decisions, oldest first (t may be NULL: none). */
int ferry__tuner_log(const ferry__tuner *t, ferry_tune_decision *out, size_t cap, size_t *count);
const char *ferry__tune_outcome_name(ferry_tune_outcome o);
/* The executor workers to grant over the cpu budget (ferry__exec_grant) after a window: more
 * while tasks wait for a worker (queued, on average half a task or more over the window) and
 * the process used under cpu_budget - 0.5 cores; when none waits, no more than the threads at
 * work need beyond the budget; half as many when the process used over the budget; never more
 * than the stages' threads. `granted` is what is granted now; st: n stages. */
int ferry__tune_grant(const ferry__tune_stage *st, size_t n, int granted, double cpu_per_s, int cpu_budget);
/* An iterator's tuner: NULL in *out when no stage asked for FERRY_AUTOTUNE. Ticked on the
 * thread that iterates with the time of a call to next. */
typedef struct ferry__autotune ferry__autotune;
int ferry__autotune_new(ferry_iterator *it, ferry__autotune **out);
void ferry__autotune_free(ferry__autotune *a);
void ferry__autotune_tick(ferry__autotune *a, int64_t now);
const ferry__tuner *ferry__autotune_tuner(const ferry__autotune *a);
const ferry__autotune *ferry__iterator_autotune(const ferry_iterator *it);

/* ---- the consumer's clock: time in ferry_iterator_next, for the report -------------------
 * The public next times one call in FERRY__CLOCK_SAMPLE (every call for the 64 calls after
 * one that took over 20 us: batches of real work, or waits among quick calls), adding the sampled time, weighted, to in_next_ns and to a histogram of log-spaced
 * buckets (four per power of two from 64 ns; the last holds everything from ~30 s). Written by
 * the thread that iterates only; read by the report on the same thread. */
#define FERRY__CLOCK_SAMPLE 16
#define FERRY__WAIT_BUCKETS 116
typedef struct ferry__consumer_clock {
    int64_t first_ns;   /* when the first next began (0: none yet) */
    int64_t end_ns;     /* when next first returned FERRY_END (0: not yet) */
    int64_t in_next_ns; /* time in next, sampled and weighted */
    int64_t hist[FERRY__WAIT_BUCKETS];
    uint32_t calls;
    uint32_t time_all; /* calls left to time all of (set to 64 by a call over 20 us) */
    bool first_timed;
} ferry__consumer_clock;
/* Bucket b holds times in [lower(b), lower(b + 1)): b = 4 (e - 6) + the quarter of [2^e, 2^(e+1))
 * for e >= 6; times under 64 ns go to bucket 0. */
static inline int ferry__wait_bucket(int64_t ns) {
    if (ns < 64) return 0;
    uint64_t v = (uint64_t)ns;
    int e = 63 - __builtin_clzll(v);
    int b = 4 * (e - 6) + (int)((v >> (e - 2)) & 3);
    return b < FERRY__WAIT_BUCKETS ? b : FERRY__WAIT_BUCKETS - 1;
}
static inline int64_t ferry__wait_bucket_lower(int b) {
    if (b <= 0) return 0;
    int e = 6 + b / 4;
    return ((int64_t)(4 + b % 4)) << (e - 2);
}
void ferry__consumer_clock_add(ferry__consumer_clock *c, int64_t ns);
const ferry__consumer_clock *ferry__iterator_clock(const ferry_iterator *it);

/* Records for every node that runs: the graph from root with the plan's replacements (plan may
 * be NULL). */
int ferry__pipe_init(ferry__pipe *p, ferry_runtime *rt, ferry_dataset *root, const ferry__plan *plan,
                     ferry__status *st);
void ferry__pipe_fini(ferry__pipe *p);
/* The record of ds, or NULL for a dataset that is not in the graph (one made while iterating,
 * as by flat_map): iterators with no record count nothing. */
ferry__node_stats *ferry__pipe_node(ferry__pipe *p, const ferry_dataset *ds);

/* ---- graph rewrites (rewrite.c) ---------------------------------------------------------
 * When an iterator is made, a pass over its dataset graph offers every node, inputs first, to
 * its op's rewrite rule (vtable.rewrite) and records the replacements in a plan. Datasets are
 * immutable and shared, so the graph is not changed: ferry__iter_make runs a node's replacement
 * in its place, and the stats records follow the plan. A replacement keeps the replaced node's
 * state tag and writes the same state, so a state restores with and without rewrites. */
struct ferry__plan {
    ferry_runtime *rt;
    bool enabled; /* false: the graph runs as written (no_rewrites) */
    size_t n, cap;
    ferry_dataset **from, **to; /* from: borrowed (the graph holds it); to: references */
};
/* Plans the rewrites of the graph at root (none when !enabled). */
int ferry__plan_build(ferry__plan *p, ferry_runtime *rt, ferry_dataset *root, bool enabled, ferry__status *st);
void ferry__plan_fini(ferry__plan *p);
/* What runs in place of ds (ds itself when not replaced). plan may be NULL. */
ferry_dataset *ferry__plan_node(const ferry__plan *plan, ferry_dataset *ds);
/* The op tag of ds (saved state names each op by it). */
uint32_t ferry__op_tag(const char *name);
/* Reads a saved op tag and checks that it names ds's op. */
int ferry__state_expect(ferry_dataset *ds, ferry__reader *state, ferry__status *st);

/* ---- anchors: symbolic state for ops that run ahead --------------------------------------
 * An op whose input runs ahead of its consumer (prefetch, parallel map) cannot ask its input for
 * the state at the consumer's position. Instead the thread that drives the input snapshots the
 * input's state every so often (ferry__anchor_take, with the input position it was taken at);
 * save writes the latest snapshot at or before the consumer's position plus the number of
 * positions to replay from it; restore makes the input from the snapshot and skips that many.
 * Snapshots are small (positions and seeds), so this is cheap; replay is bounded by the
 * snapshot period (64 positions or 2 ms of production, whichever comes first) plus the op's
 * buffer. */
typedef struct ferry__anchor_snap {
    int64_t pos;
    uint8_t *data;
    size_t size;
} ferry__anchor_snap;

typedef struct ferry__anchor {
    ferry_runtime *rt;
    ferry__mutex mu;           /* guards snaps: the producer adds, the consumer prunes/reads */
    ferry__anchor_snap *snaps; /* ascending pos */
    size_t n, cap;
    int64_t period; /* take a snapshot every `period` input positions */
    int64_t next_pos;
    int64_t last_ns; /* when the last snapshot was taken */
    int64_t save_ns; /* what writing one costs (smoothed) */
} ferry__anchor;

int ferry__anchor_init(ferry__anchor *a, ferry_runtime *rt, int64_t period, ferry__status *st);
void ferry__anchor_fini(ferry__anchor *a);
/* Called by the thread that drives `input`, when the input is at position `pos` (positions
 * pulled so far). Snapshots when pos is at or past the next period mark or 2 ms passed since the
 * last snapshot, provided that was at least 32 times a snapshot's cost ago (period > 1), or when
 * force. */
int ferry__anchor_take(ferry__anchor *a, ferry__iter *input, int64_t pos, bool force, ferry__status *st);
/* Called at save time with the consumer's position: writes the snapshot and the replay count;
 * forgets snapshots older than the one used. */
int ferry__anchor_write(ferry__anchor *a, int64_t consumer_pos, ferry__writer *w, ferry__status *st);
/* For an op whose input is not running ahead now (inline, or a pass-through): writes the input's
 * state as it is, in ferry__anchor_write's format (nothing to replay), so that
 * ferry__anchor_restore reads either. `op` names the op in messages. */
int ferry__anchor_write_now(ferry__iter *input, ferry_runtime *rt, ferry__writer *w, const char *op, ferry__status *st);
/* Consumer side: forgets snapshots that no save can need any more (call every `period`). */
void ferry__anchor_prune(ferry__anchor *a, int64_t consumer_pos);
/* Reads what ferry__anchor_write wrote, makes the input iterator from it and replays to the
 * saved consumer position; *replayed (may be NULL) gets the positions replayed before END. */
int ferry__anchor_restore(ferry_dataset *input, const ferry__ictx *ctx, ferry__reader *r, ferry__iter **out,
                          int64_t *replayed, ferry__status *st);

/* ---- the async-stage base (stage.c) ------------------------------------------------------
 * What every stage that runs ahead of its consumer (prefetch, parallel map and map_and_batch,
 * parallel interleave; later decode, device copy, MPI receive) is made of, in one place:
 *   - a cancel scope, child of the scope the stage was made in: its input and its calls live
 *     under it, and destroy fires it first;
 *   - `mu` and `cv_cons`: the lock of the stage's shared state and its consumer's sleep, with a
 *     waker that cancel calls: it runs the stage's on_cancel hook and broadcasts cv_cons under
 *     mu, so that every wait looping on (condition || cancelled) ends;
 *   - its executor tasks, opened through the stage and closed by ferry__stage_stop: no op starts
 *     threads of its own;
 *   - when asked for, the anchor list of its input (symbolic state for save, see above);
 *   - its knobs, registered in its stats record while it runs;
 *   - the accounting of its threads' time: work, assembling rows, lock waits, waits for input
 *     and waits for its consumer (room or budget), in its stats record.
 * Life: ferry__stage_init (scope, lock, anchor) -> the op makes its input under the ictx that
 * init filled -> ferry__stage_ready (waker, stats, knobs) -> tasks opened as needed ->
 * ferry__stage_stop (knobs off, scope fired, every task closed: no run is in progress or comes
 * after) -> the op frees what its tasks made -> ferry__stage_fini. Each step records what it
 * made, so stop and fini unwind a make that failed at any point (a zeroed stage is valid). */
typedef enum ferry__time_kind {
    FERRY__TIME_WORK,          /* the stage's own work: calls, decoding, bookkeeping */
    FERRY__TIME_ASSEMBLE,      /* copying rows into batches */
    FERRY__TIME_LOCK,          /* waiting for a lock held by another thread of the stage */
    FERRY__TIME_WAIT_INPUT,    /* its consumer side waiting for what its threads make */
    FERRY__TIME_WAIT_CONSUMER, /* its threads waiting for room or for the byte budget */
} ferry__time_kind;

typedef struct ferry__stage {
    /* Read on every element by the stage's threads (the scope's flag, the anchor's next mark):
     * kept off the lines that the consumer's sleeps and wake-ups write. */
    ferry__iter *it; /* the op's iterator (its ctx, ds and stats record) */
    ferry_runtime *rt;
    ferry__cancel scope;
    ferry__anchor anchor;
    char pad0[64]; /* (padding, not alignment: blocks are 16-byte aligned) */
    ferry__mutex mu;
    ferry__cond cv_cons;
    char pad1[64];
    ferry__waker waker;
    ferry__knobs knobs;
    void (*on_cancel)(void *arg); /* called by the waker under mu (may be NULL) */
    void *arg;
    ferry__task *tasks; /* opened, linked through stage_next */
    bool scope_ok, sync_ok, anchor_ok, waker_ok, knobs_on;
} ferry__stage;

/* Makes the scope (a child of it's ctx scope), mu, cv_cons and, when anchor_period > 0, the
 * anchor list. *ictx gets it's ctx with the stage's scope: the op makes its input with it.
 * Returns FERRY_OK or FERRY_ENOMEM with a message naming the op. */
int ferry__stage_init(ferry__stage *s, ferry__iter *it, int64_t anchor_period, ferry__ictx *ictx, ferry__status *st);
/* Once the input is made: registers the waker (on_cancel(arg), may be NULL, runs in it under
 * mu), marks the stats record as measured here with the stage's parallelism and buffer
 * capacity, and registers the knobs (borrowed copy; NULL: none). */
void ferry__stage_ready(ferry__stage *s, void (*on_cancel)(void *arg), void *arg, int parallelism, int64_t capacity,
                        const ferry__knobs *knobs);
/* Opens t on the runtime's executor (see ferry__task_open) as one of the stage's tasks. */
int ferry__stage_task_open(ferry__stage *s, ferry__task *t, void (*run)(ferry__task *), void *arg, ferry__status *st);
/* Unregisters the knobs, fires the scope, closes every task and removes the waker (so that a
 * scope above firing later never reaches the op's hook). Idempotent. Not from a task. */
void ferry__stage_stop(ferry__stage *s);
/* Frees the anchor list, the lock and the scope (and removes the waker if stop did not run).
 * After stop. */
void ferry__stage_fini(ferry__stage *s);
/* Takes mu (or another lock of the stage), counting the time spent waiting for it when another
 * thread holds it. */
void ferry__stage_lock(ferry__stage *s, ferry__mutex *mu);
/* Adds ns of kind, just ended, to the stage's stats record (nothing without one), and to the
 * trace as the span [now - ns, now] when tracing is on. Any thread. */
void ferry__stage_time(const ferry__stage *s, ferry__time_kind kind, int64_t ns);
/* The two halves: only the stats (for sampled or scaled times, which are no span), and only
 * the trace (a span whose time the stats get otherwise). */
void ferry__stage_account(const ferry__stage *s, ferry__time_kind kind, int64_t ns);
/* Its tasks sat idle (returned their workers) for ns because its buffer was full. */
void ferry__stage_idle_full(const ferry__stage *s, int64_t ns);
void ferry__stage_trace(const ferry__stage *s, ferry__time_kind kind, int64_t start_ns, int64_t end_ns);

/* ---- the consumer's interrupt hook (iterator.c) -------------------------------------------
 * ferry_iterator_next publishes its iterator's hook (ferry_iterator_options.interrupt) in a
 * thread-local for the length of the call, so that the thread inside next polls it and no
 * worker ever does. A stage's consumer side sleeps through ferry__consumer_wait: without a hook
 * (or for a stage of another iterator, one made inside a callback) it is the plain wait; with
 * one it wakes every FERRY__INTERRUPT_POLL_NS, drops s->mu, calls the hook, and a nonzero return
 * fires the iterator's root scope, so that the caller's loop on (condition || cancelled) ends as
 * on destroy. Polling never happens under a lock of ferry's. */
typedef struct ferry__interrupt ferry__interrupt;
#define FERRY__INTERRUPT_POLL_NS 20000000
/* Waits on s->cv_cons; the caller holds s->mu, and holds it again on return. timeout_ns > 0: false
 * once that long passed (ferry__cond_timedwait); else true: woken, or after a poll of the hook
 * (the caller looks at its condition again). */
bool ferry__consumer_wait(ferry__stage *s, int64_t timeout_ns);
/* Sets the hook the calling thread polls (NULL: none) and returns the one before it. A consumer
 * that works on a stage's chunk itself holds that stage's input lock meanwhile: it polls nothing. */
ferry__interrupt *ferry__interrupt_swap(ferry__interrupt *ir);

/* A blob owning `data` (a block from ferry__alloc(rt, ...)); NULL on allocation failure (then
 * the caller still owns data). */
ferry_blob *ferry__blob_new(ferry_runtime *rt, void *data, size_t size);
/* The public iterator's message slot and runtime (for functions in other core files). */
ferry__status *ferry__iterator_status(ferry_iterator *it);
ferry_runtime *ferry__iterator_runtime(ferry_iterator *it);

/* Checks the framing of a public saved state and sets *payload to the root op's state. */
int ferry__state_parse_header(const void *state, size_t size, ferry_state_info *info, ferry__reader *payload,
                              ferry__status *st);

/* ---- checks for public entry points -----------------------------------------------------
 * Public functions set the thread-local last error via these and return the code. */
#define FERRY__CHECK_ARG(cond, code, ...)                                                                              \
    do {                                                                                                               \
        if (!(cond)) return ferry__set_last_error((code), __VA_ARGS__);                                                \
    } while (0)

#endif
