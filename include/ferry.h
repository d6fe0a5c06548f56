/*
 * ferry.h - the whole public API of libferry.
 *
 * ferry builds input pipelines for machine-learning training: a graph of datasets (sources and
 * transformations) whose iterators prepare elements in background threads while the consumer
 * trains on the previous ones. The model is tf.data's.
 *
 * Conventions (every function below follows them):
 *   - Functions return int: FERRY_OK (0) on success, a negative FERRY_E* code on failure, and
 *     ferry_iterator_next returns the positive FERRY_END at the end of the sequence.
 *   - Constructors write the new object through an out-parameter; on failure they write NULL.
 *   - The message of a failure lives on the object that failed (ferry_iterator_error) or, for
 *     constructors and functions without a handle, in a thread-local slot read by
 *     ferry_last_error().
 *   - Ownership words: "borrows" (the caller keeps its reference), "takes" (the callee owns it now,
 *     also on failure), "returns a new reference" (the caller must drop it), "valid until ..."
 *     (a borrowed pointer into an object).
 *   - Every dataset constructor takes an options struct (ferry_<op>_options), zero-initialized for
 *     defaults and passed by pointer; NULL means all defaults. Fields are only ever added at the
 *     end (a program built against an older header must be rebuilt: ferry is 0.x). Every one has
 *     a `name` (at most FERRY_NAME_MAX bytes, no control characters) that the stats and the
 *     report show beside the op (ferry_stage_stats.name and .op), and the trace in place of the
 *     op (its first 23 bytes).
 *   - A callback's `user` pointer that a dataset keeps comes with a `user_free` in the same
 *     options: NULL leaves `user` borrowed (it must outlive the dataset and its iterators);
 *     otherwise the dataset owns it from a successful call on and calls user_free(user) once,
 *     after its last iterator. When the constructor fails, the caller keeps `user`.
 *   - Sentinels have distinct values, so that one passed where another belongs is refused:
 *     FERRY_AUTOTUNE (threads, buffers), FERRY_INFINITE (counts and cardinality: no end),
 *     FERRY_UNKNOWN (cardinality), FERRY_UNKNOWN_RANK and FERRY_UNKNOWN_DIM (shapes).
 *   - Every *_free / *_unref accepts NULL and does nothing.
 *   - "FERRY_EMISUSE for a freed dataset / iterator" below: handles carry a live-object mark that
 *     these checks read; they catch most such misuse, not all (the memory of a freed handle may
 *     have been given to a new object). Never pass a handle after freeing it.
 *   - Thread safety: datasets and tensors are immutable and may be shared by any threads (a
 *     dataset keeps, besides, what AUTOTUNE learnt for its next iterator: see FERRY_AUTOTUNE). An
 *     iterator is used by one thread at a time. A runtime may be used from any thread.
 */
#ifndef FERRY_H
#define FERRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(FERRY_STATIC)
#define FERRY_API
#elif defined(FERRY_BUILDING)
#define FERRY_API __attribute__((visibility("default")))
#else
#define FERRY_API
#endif

#if defined(__GNUC__)
#define FERRY_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define FERRY_PRINTF(a, b)
#endif

/* ---------------------------------------------------------------------------------------------
 * Version
 * ------------------------------------------------------------------------------------------- */
#define FERRY_VERSION_MAJOR 0
#define FERRY_VERSION_MINOR 1
#define FERRY_VERSION_PATCH 0
#define FERRY_VERSION_NUMBER (FERRY_VERSION_MAJOR * 10000 + FERRY_VERSION_MINOR * 100 + FERRY_VERSION_PATCH)
#define FERRY_VERSION_STRING "0.1.0"

/* ferry_version: the version of the library actually linked, "MAJOR.MINOR.PATCH".
 * Returns: the version string; never NULL.
 * Ownership: static storage; nothing to free.
 * Threads: thread-safe. */
FERRY_API const char *ferry_version(void);
/* ferry_version_number: FERRY_VERSION_NUMBER of the library actually linked.
 * Returns: MAJOR * 10000 + MINOR * 100 + PATCH.
 * Ownership: no pointers.
 * Threads: thread-safe. */
FERRY_API int ferry_version_number(void);

/* ---------------------------------------------------------------------------------------------
 * Status codes
 * ------------------------------------------------------------------------------------------- */
#define FERRY_STATUS_MAP(X)                                                                                            \
    X(OK, 0, "success")                                                                                                \
    X(END, 1, "end of sequence")                                                                                       \
    X(EINVAL, -1, "invalid argument")                                                                                  \
    X(EMISUSE, -2, "API misuse")                                                                                       \
    X(ENOMEM, -3, "out of memory")                                                                                     \
    X(EIO, -4, "I/O error")                                                                                            \
    X(ECANCELED, -5, "operation canceled")                                                                             \
    X(ECORRUPT, -6, "corrupt data")                                                                                    \
    X(ETRUNCATED, -7, "truncated data")                                                                                \
    X(EUSER, -8, "error raised by a user function")                                                                    \
    X(ETYPE, -9, "dtype or shape mismatch")                                                                            \
    X(ENOTFOUND, -10, "not found")                                                                                     \
    X(EOUTOFRANGE, -11, "value out of range")                                                                          \
    X(EMISMATCH, -12, "saved state does not match this pipeline")                                                      \
    X(EVERSION, -13, "unsupported format version")                                                                     \
    X(EUNSUPPORTED, -14, "operation not supported")                                                                    \
    X(ETOOLARGE, -15, "too large")                                                                                     \
    X(EBUDGET, -16, "memory budget exceeded")

typedef enum ferry_status {
#define FERRY__STATUS_ENUM(name, value, text) FERRY_##name = (value),
    FERRY_STATUS_MAP(FERRY__STATUS_ENUM)
#undef FERRY__STATUS_ENUM
} ferry_status;

/* ferry_strerror: a description of a status code ("out of memory").
 * Returns: the description; "unknown status code" for a value that is no ferry_status; never NULL.
 * Ownership: static storage; nothing to free.
 * Threads: thread-safe. */
FERRY_API const char *ferry_strerror(int status);
/* ferry_error_name: the name of a status code ("FERRY_ENOMEM").
 * Returns: the name; "FERRY_UNKNOWN" for a value that is no ferry_status; never NULL.
 * Ownership: static storage; nothing to free.
 * Threads: thread-safe. */
FERRY_API const char *ferry_error_name(int status);
/* ferry_last_error: the message of the last failure on this thread of a function that has no handle
 * to carry it (constructors, tensor functions, functions given a NULL handle).
 * Returns: the message; "" when there is none. Never NULL.
 * Ownership: valid until the next ferry call on this thread.
 * Threads: thread-safe; every thread has its own message. */
FERRY_API const char *ferry_last_error(void);

/* ---------------------------------------------------------------------------------------------
 * Runtime: worker threads, the allocator hook and the byte budget. Nothing in ferry is global.
 * ------------------------------------------------------------------------------------------- */
typedef struct ferry_runtime ferry_runtime;
typedef struct ferry_blob ferry_blob; /* bytes made by ferry: a saved state, a JSON report or trace */

/* The allocator hook, in the shape of lua_Alloc: new_size == 0 frees ptr (returns NULL);
 * ptr == NULL allocates; otherwise reallocates. old_size is the size of ptr's block (0 for NULL).
 * It must be callable from any thread. Returning NULL for a request with new_size > 0 is an
 * allocation failure, which ferry reports as FERRY_ENOMEM. */
typedef void *(*ferry_alloc_fn)(void *user, void *ptr, size_t old_size, size_t new_size);

typedef struct ferry_runtime_options {
    ferry_alloc_fn alloc; /* NULL: malloc/realloc/free, with a per-thread cache of small blocks;
                              a hook sees every allocation and free */
    void *alloc_user;     /* passed to alloc */
    size_t memory_budget; /* bytes of buffered elements, all stages together; 0: half of RAM */
    int cpu_budget;       /* cores ferry may keep busy: CPU seconds per wall second of the
                              process (its threads and the consumer's) under AUTOTUNE; threads
                              blocked in calls ferry cannot see (sleeping, I/O) may be more;
                              0: online cores */
    size_t trace_bytes;   /* bytes of memory for a trace of what every thread does (spans of 56
                              bytes; when full, the oldest go), written by
                              ferry_runtime_trace_write. 0: off, unless the environment variable
                              FERRY_TRACE names a file: then 64 MiB, and ferry_runtime_free writes
                              the trace to that file (the process's first runtime; the next ones
                              to FILE.2, FILE.3, ...) */
} ferry_runtime_options;

typedef struct ferry_runtime_stats {
    size_t bytes_allocated;   /* bytes live through the allocator hook now (with the default
                                   allocator, freed blocks of up to 8 KiB are also kept for
                                   reuse, about 96 KiB at most per size class and thread shard
                                   (plus 128 KiB per class shared by all threads), and freed
                                   blocks of 16 KiB to 4 MiB (batches) up to 16 MiB in all, or an
                                   eighth of the memory budget if less; they are not counted here
                                   and go back at ferry_runtime_free) */
    int64_t blocks_allocated; /* blocks live through the allocator hook now */
    size_t budget;            /* the byte budget in force */
    size_t budget_used;       /* buffered element bytes counted now */
    size_t budget_used_peak;  /* highest budget_used seen */
    int threads_live;         /* ferry threads running now */
    int64_t threads_started;  /* ferry threads started since creation */
    int cpu_budget;
    int threads_busy_peak;    /* the most ferry threads working at once since creation (a thread
                                   waiting for another stage or for memory is not working, and a
                                   consumer that works on a stage instead of waiting is): at most
                                   cpu_budget + threads_granted_peak */
    int threads_granted_peak; /* the most threads the autotuner let work beyond cpu_budget at
                                   once, because they were blocked in calls ferry cannot see
                                   (sleeping, I/O) while the process used under cpu_budget - 0.5
                                   cores; 0 when no thread ever waited so */
} ferry_runtime_stats;

/* ferry_runtime_create: creates a runtime with the options in opts (NULL: all defaults).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL out or an opts->cpu_budget outside 0..4096; FERRY_ENOMEM
 *   when the runtime, its locks or its trace cannot be allocated. Message in ferry_last_error.
 * Ownership: borrows opts; *out gets a new runtime to free with ferry_runtime_free (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_runtime_create(const ferry_runtime_options *opts, ferry_runtime **out);
/* ferry_runtime_free: frees a runtime. Everything made with it (datasets, iterators, tensors, elements,
 * blobs, example parsers) must be gone first. When FERRY_TRACE named a file at creation, the trace is
 * written there first.
 * Returns: FERRY_OK (also for NULL, a no-op); FERRY_EMISUSE when objects made with rt are still alive:
 *   then nothing is freed; FERRY_EIO or FERRY_ENOMEM when writing the FERRY_TRACE file fails (the
 *   runtime is freed all the same). Message in ferry_last_error.
 * Ownership: takes rt, except on FERRY_EMISUSE.
 * Threads: no other thread may use rt during or after the call. */
FERRY_API int ferry_runtime_free(ferry_runtime *rt);
/* ferry_runtime_stats_get: fills *out with a snapshot of the runtime's counters.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL argument.
 * Ownership: borrows rt; writes *out.
 * Threads: thread-safe. */
FERRY_API int ferry_runtime_stats_get(ferry_runtime *rt, ferry_runtime_stats *out);
/* ferry_runtime_budget_hold: counts n bytes that the program holds (elements it took from ferry and
 * keeps, such as the batches a language binding hands to its users) against the byte budget, so that
 * ferry's stages buffer less while they are held. It never waits: held bytes may take budget_used
 * over the budget, and then ferry's stages wait (each still makes one element at a time when its
 * consumer would otherwise wait forever, so holding more than the budget slows the pipeline down
 * and does not stop it).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt.
 * Ownership: borrows rt; the caller gives the same n back with ferry_runtime_budget_release.
 * Threads: thread-safe. */
FERRY_API int ferry_runtime_budget_hold(ferry_runtime *rt, size_t n);
/* ferry_runtime_budget_release: gives back n bytes counted by ferry_runtime_budget_hold.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt, or an n above the bytes counted now (nothing is
 *   given back then).
 * Ownership: borrows rt.
 * Threads: thread-safe. */
FERRY_API int ferry_runtime_budget_release(ferry_runtime *rt, size_t n);

/* The trace (ferry_runtime_options.trace_bytes, FERRY_TRACE): every run of a stage's thread, its
 * work per chunk or batch, its waits (for input, for room or budget, for a lock), the consumer's
 * calls to ferry_iterator_next that took 2 us or more, and the steps marked here; as Chrome
 * trace JSON (opens in Perfetto, ui.perfetto.dev, and chrome://tracing). */
/* ferry_clock_ns: a monotonic clock in nanoseconds, the trace's time base.
 * Returns: the time now.
 * Ownership: no pointers.
 * Threads: thread-safe. */
FERRY_API int64_t ferry_clock_ns(void);
/* ferry_trace_step: marks [start_ns, now] on the calling thread as a step named `name`, such as a
 * training step; start_ns comes from ferry_clock_ns. Nothing is recorded when tracing is off.
 * Returns: FERRY_OK (also when tracing is off); FERRY_EINVAL for a NULL argument or a start_ns that is
 *   not a time of ferry_clock_ns before now.
 * Ownership: borrows rt and name (its first 23 bytes are kept).
 * Threads: thread-safe. */
FERRY_API int ferry_trace_step(ferry_runtime *rt, const char *name, int64_t start_ns);
/* ferry_runtime_trace_write: writes the spans recorded so far to path as Chrome trace JSON. path is
 * replaced whole (a temporary file is renamed over it). Spans still being written by running threads
 * are left out.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL argument, an empty path or tracing off for rt;
 *   FERRY_ENOMEM; FERRY_EIO naming the path and the failed step. Message in ferry_last_error.
 * Ownership: borrows rt and path.
 * Threads: thread-safe. */
FERRY_API int ferry_runtime_trace_write(ferry_runtime *rt, const char *path);
/* ferry_runtime_trace_json: the same JSON as ferry_runtime_trace_write, in memory.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL argument or tracing off for rt; FERRY_ENOMEM.
 * Ownership: borrows rt; *out gets a new blob to free with ferry_blob_free (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_runtime_trace_json(ferry_runtime *rt, ferry_blob **out);


/* ---------------------------------------------------------------------------------------------
 * Tensors: dtype, shape and a refcounted immutable buffer. Slices and batch rows share bytes.
 * ------------------------------------------------------------------------------------------- */
#define FERRY_MAX_RANK 8
#define FERRY_UNKNOWN_RANK (-5) /* ferry_shape.rank of a shape whose rank is not known */
#define FERRY_UNKNOWN_DIM (-4)  /* a dim of ferry_shape whose size is not known */

typedef enum ferry_dtype {
    FERRY_DTYPE_INVALID = 0,
    FERRY_DTYPE_BOOL,
    FERRY_DTYPE_INT8,
    FERRY_DTYPE_INT16,
    FERRY_DTYPE_INT32,
    FERRY_DTYPE_INT64,
    FERRY_DTYPE_UINT8,
    FERRY_DTYPE_UINT16,
    FERRY_DTYPE_UINT32,
    FERRY_DTYPE_UINT64,
    FERRY_DTYPE_FLOAT16,
    FERRY_DTYPE_BFLOAT16,
    FERRY_DTYPE_FLOAT32,
    FERRY_DTYPE_FLOAT64,
    FERRY_DTYPE_BYTES, /* a variable-length byte string per entry, like tf.string */
    FERRY_DTYPE_COUNT
} ferry_dtype;

/* ferry_dtype_size: bytes per entry of a numeric dtype (1 for bool).
 * Returns: the size; 0 for FERRY_DTYPE_BYTES and invalid dtypes.
 * Ownership: no pointers.
 * Threads: thread-safe. */
FERRY_API size_t ferry_dtype_size(ferry_dtype dtype);
/* ferry_dtype_name: the name of a dtype ("int64", "bytes").
 * Returns: the name; "invalid" for values out of range. Never NULL.
 * Ownership: static storage; nothing to free.
 * Threads: thread-safe. */
FERRY_API const char *ferry_dtype_name(ferry_dtype dtype);

/* A shape: rank FERRY_UNKNOWN_RANK means unknown rank; a dim of FERRY_UNKNOWN_DIM means unknown size. */
typedef struct ferry_shape {
    int rank;
    int64_t dims[FERRY_MAX_RANK];
} ferry_shape;

/* What a dataset declares about one component of its elements. */
typedef struct ferry_tensor_spec {
    ferry_dtype dtype;
    ferry_shape shape;
} ferry_tensor_spec;

typedef struct ferry_tensor ferry_tensor;

/* ferry_tensor_create: creates a zero-filled tensor of a numeric dtype with `rank` dims, each >= 0. It
 * is writable through ferry_tensor_mutable_data until it is shared.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt or out, a rank outside 0..FERRY_MAX_RANK, NULL dims
 *   with rank > 0, a negative dim, or FERRY_DTYPE_BYTES or an invalid dtype; FERRY_ETOOLARGE when the size
 *   overflows; FERRY_ENOMEM. Message in ferry_last_error.
 * Ownership: borrows rt and dims (`rank` entries); *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_tensor_create(ferry_runtime *rt, ferry_dtype dtype, int rank, const int64_t *dims,
                                  ferry_tensor **out);
/* ferry_tensor_wrap: wraps caller memory as an immutable tensor, without copying. nbytes must equal
 * the product of dims times ferry_dtype_size(dtype).
 * Returns: FERRY_OK; FERRY_EINVAL for a bad rt, out, rank, dims or dtype (as ferry_tensor_create), an
 *   nbytes that does not match, or NULL data with nbytes > 0; FERRY_ETOOLARGE; FERRY_ENOMEM.
 * Ownership: takes `data`, also on failure: release(release_user, data) is called when the last
 *   reference goes (release may be NULL for memory that outlives the tensor); borrows rt and dims;
 *   *out gets a new reference (NULL on failure).
 * Threads: thread-safe; release runs on the thread that drops the last reference. */
FERRY_API int ferry_tensor_wrap(ferry_runtime *rt, ferry_dtype dtype, int rank, const int64_t *dims, void *data,
                                size_t nbytes, void (*release)(void *user, void *data), void *release_user,
                                ferry_tensor **out);
/* ferry_tensor_create_bytes: creates a FERRY_DTYPE_BYTES tensor by copying n = product(dims) strings
 * (ptrs[i] may be NULL when lens[i] == 0).
 * Returns: FERRY_OK; FERRY_EINVAL for a bad rt, out, rank or dims (as ferry_tensor_create), NULL ptrs
 *   or lens with n > 0, or a NULL ptrs[i] with lens[i] > 0; FERRY_ETOOLARGE; FERRY_ENOMEM.
 * Ownership: borrows rt, dims and the arrays ptrs and lens (n entries each); *out gets a new
 *   reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_tensor_create_bytes(ferry_runtime *rt, int rank, const int64_t *dims, const void *const *ptrs,
                                        const size_t *lens, ferry_tensor **out);
/* ferry_tensor_scalar_i64: a convenience int64 scalar holding value.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt or out; FERRY_ENOMEM.
 * Ownership: borrows rt; *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_tensor_scalar_i64(ferry_runtime *rt, int64_t value, ferry_tensor **out);
/* ferry_tensor_scalar_f32: a convenience float32 scalar holding value.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt or out; FERRY_ENOMEM.
 * Ownership: borrows rt; *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_tensor_scalar_f32(ferry_runtime *rt, float value, ferry_tensor **out);
/* ferry_tensor_ref: adds a reference to t.
 * Returns: t (NULL for NULL).
 * Ownership: the caller owns the new reference and drops it with ferry_tensor_unref.
 * Threads: thread-safe. */
FERRY_API ferry_tensor *ferry_tensor_ref(ferry_tensor *t);
/* ferry_tensor_unref: drops a reference to t; the last one frees it. NULL is a no-op.
 * Returns: nothing.
 * Ownership: takes the caller's reference.
 * Threads: thread-safe. */
FERRY_API void ferry_tensor_unref(ferry_tensor *t);

/* ferry_tensor_dtype: the dtype of t.
 * Returns: the dtype; FERRY_DTYPE_INVALID for NULL.
 * Ownership: borrows t.
 * Threads: thread-safe. */
FERRY_API ferry_dtype ferry_tensor_dtype(const ferry_tensor *t);
/* ferry_tensor_rank: the number of dims of t (0 for a scalar).
 * Returns: the rank; FERRY_UNKNOWN_RANK for NULL.
 * Ownership: borrows t.
 * Threads: thread-safe. */
FERRY_API int ferry_tensor_rank(const ferry_tensor *t);
/* ferry_tensor_dim: the size of dimension i of t.
 * Returns: the size; -1 when t is NULL or i is out of range.
 * Ownership: borrows t.
 * Threads: thread-safe. */
FERRY_API int64_t ferry_tensor_dim(const ferry_tensor *t, int i);
/* ferry_tensor_shape: the shape of t (dims past its rank are 0).
 * Returns: the shape, by value; rank FERRY_UNKNOWN_RANK for NULL.
 * Ownership: borrows t.
 * Threads: thread-safe. */
FERRY_API ferry_shape ferry_tensor_shape(const ferry_tensor *t);
/* ferry_tensor_num_entries: the number of entries of t (product of dims; 1 for a scalar).
 * Returns: the count; 0 for NULL.
 * Ownership: borrows t.
 * Threads: thread-safe. */
FERRY_API int64_t ferry_tensor_num_entries(const ferry_tensor *t);
/* ferry_tensor_nbytes: bytes t's values take: entries * dtype size, or for FERRY_DTYPE_BYTES the string
 * bytes plus 8 bytes of offset per entry. This is what the memory budget counts.
 * Returns: the size; 0 for NULL.
 * Ownership: borrows t.
 * Threads: thread-safe. */
FERRY_API size_t ferry_tensor_nbytes(const ferry_tensor *t);
/* ferry_tensor_data: the values of a numeric tensor, row-major.
 * Returns: a read-only pointer; NULL for FERRY_DTYPE_BYTES or a NULL t.
 * Ownership: borrows t; the pointer is valid while the caller holds a reference.
 * Threads: thread-safe. */
FERRY_API const void *ferry_tensor_data(const ferry_tensor *t);
/* ferry_tensor_mutable_data: a writable pointer to t's values, to fill a tensor made by
 * ferry_tensor_create before it is shared.
 * Returns: the pointer; NULL when t is NULL, shared (more than one reference to it or to its buffer),
 *   wrapped, or FERRY_DTYPE_BYTES.
 * Ownership: borrows t; the pointer is valid while the caller holds its only reference.
 * Threads: thread-safe; only the holder of the only reference may write. */
FERRY_API void *ferry_tensor_mutable_data(ferry_tensor *t);
/* ferry_tensor_bytes_get: entry i (row-major over all dims) of a FERRY_DTYPE_BYTES tensor.
 * Returns: FERRY_OK with *data and *len set; FERRY_EINVAL for a NULL argument, another dtype or i out of
 *   range (then *data is NULL and *len 0).
 * Ownership: borrows t; *data is valid while the caller holds a reference to t.
 * Threads: thread-safe. */
FERRY_API int ferry_tensor_bytes_get(const ferry_tensor *t, int64_t i, const uint8_t **data, size_t *len);
/* ferry_tensor_slice: rows [start, start+count) of t along dim 0, sharing bytes with t. Requires
 * rank >= 1.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL argument, a scalar t or rows out of range; FERRY_ENOMEM.
 * Ownership: borrows t; *out gets a new reference (NULL on failure), which keeps t's bytes alive.
 * Threads: thread-safe. */
FERRY_API int ferry_tensor_slice(ferry_tensor *t, int64_t start, int64_t count, ferry_tensor **out);

/* ---------------------------------------------------------------------------------------------
 * Elements: fixed-arity tuples of tensors. An element has exactly one owner.
 * ------------------------------------------------------------------------------------------- */
typedef struct ferry_element ferry_element;

/* ferry_element_create: creates an element of n tensors (at most 4096).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt or out, NULL tensors with n > 0, n over 4096 or a NULL
 *   tensors[i]; FERRY_ENOMEM. Message in ferry_last_error.
 * Ownership: takes the n references in tensors[] (also on failure, except when n is over 4096);
 *   borrows rt; *out must be freed with ferry_element_free (NULL on failure).
 * Threads: thread-safe; the element then has one owner. */
FERRY_API int ferry_element_create(ferry_runtime *rt, size_t n, ferry_tensor *const *tensors, ferry_element **out);
/* ferry_element_free: frees an element and drops its tensor references. NULL is a no-op.
 * Returns: nothing.
 * Ownership: takes e.
 * Threads: one thread at a time per element (its owner's). */
FERRY_API void ferry_element_free(ferry_element *e);
/* ferry_element_size: the number of components of e.
 * Returns: the count; 0 for NULL.
 * Ownership: borrows e.
 * Threads: one thread at a time per element. */
FERRY_API size_t ferry_element_size(const ferry_element *e);
/* ferry_element_get: component i of e.
 * Returns: the tensor; NULL when e is NULL or i is out of range.
 * Ownership: the tensor is borrowed: valid until the element is freed or component i is replaced
 *   (ferry_tensor_ref keeps it longer).
 * Threads: one thread at a time per element. */
FERRY_API ferry_tensor *ferry_element_get(const ferry_element *e, size_t i);
/* ferry_element_set: replaces component i of e with t and drops the reference to the old tensor.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL e or t, or i out of range.
 * Ownership: takes t (also on failure); borrows e.
 * Threads: one thread at a time per element. */
FERRY_API int ferry_element_set(ferry_element *e, size_t i, ferry_tensor *t);
/* ferry_element_nbytes: the sum of ferry_tensor_nbytes over e's components.
 * Returns: the size; 0 for NULL.
 * Ownership: borrows e.
 * Threads: one thread at a time per element. */
FERRY_API size_t ferry_element_nbytes(const ferry_element *e);


/* ---------------------------------------------------------------------------------------------
 * Callback context: what a map function, predicate or generator can ask of ferry.
 * ------------------------------------------------------------------------------------------- */
typedef struct ferry_context ferry_context;

/* ferry_context_runtime: the runtime, to allocate output tensors with.
 * Returns: the runtime; NULL for a NULL ctx.
 * Ownership: borrows ctx (valid only during the callback it was given to); the runtime is borrowed.
 * Threads: from the callback that was given ctx. */
FERRY_API ferry_runtime *ferry_context_runtime(ferry_context *ctx);
/* ferry_context_index: the position of the current element in this op's input stream for this
 * iteration (0-based; -1 in a generator's init).
 * Returns: the position; -1 for a NULL ctx.
 * Ownership: borrows ctx.
 * Threads: from the callback that was given ctx. */
FERRY_API int64_t ferry_context_index(ferry_context *ctx);
/* ferry_context_random: the next 64 random bits of a generator seeded from the pipeline seed, the op
 * and the element's index: the same for the same element whichever thread runs the call.
 * Returns: the bits; 0 for a NULL ctx.
 * Ownership: borrows ctx.
 * Threads: from the callback that was given ctx. */
FERRY_API uint64_t ferry_context_random(ferry_context *ctx);
/* ferry_context_uniform: a uniform double in [0, 1) from the generator of ferry_context_random.
 * Returns: the value; 0.0 for a NULL ctx.
 * Ownership: borrows ctx.
 * Threads: from the callback that was given ctx. */
FERRY_API double ferry_context_uniform(ferry_context *ctx);
/* ferry_context_cancelled: whether the iterator that runs this call is being destroyed: a slow
 * callback should return (any status) soon after this turns true.
 * Returns: true once cancelled; false for a NULL ctx.
 * Ownership: borrows ctx.
 * Threads: from the callback that was given ctx. */
FERRY_API bool ferry_context_cancelled(ferry_context *ctx);
/* ferry_context_sleep: sleeps up to ns nanoseconds, returning early on cancellation. A callback that
 * waits (for I/O, a device, a rate limit) should wait here: the sleep does not count against the
 * runtime's cpu_budget, so other calls run meanwhile.
 * Returns: FERRY_OK after the full time (at once for ns <= 0); FERRY_ECANCELED on cancellation.
 * Ownership: borrows ctx (NULL: a plain sleep).
 * Threads: from the callback that was given ctx. */
FERRY_API int ferry_context_sleep(ferry_context *ctx, int64_t ns);
/* ferry_context_fail: records a message for the failure the callback is about to return, so that a
 * callback can `return ferry_context_fail(ctx, FERRY_EUSER, "bad label %d", v);`.
 * Returns: status; FERRY_EUSER when status is not negative.
 * Ownership: borrows ctx and fmt; nothing is recorded when either is NULL.
 * Threads: from the callback that was given ctx. */
FERRY_API int ferry_context_fail(ferry_context *ctx, int status, const char *fmt, ...) FERRY_PRINTF(3, 4);

/* A map function. It owns `in`: on FERRY_OK it writes the result to *out (which may be `in`
 * itself, changed or not); on failure it frees what it owns, `in` included, leaves *out NULL and
 * returns the code, which reaches the consumer in this element's position. Called from worker
 * threads under parallel map: it must be thread-safe with respect to `user`. When a batch runs
 * right over a parallel map (one map_and_batch stage), the thread that calls
 * ferry_iterator_next may run it too, on whole batches, instead of waiting: it must not wait for
 * the consumer's progress. */
typedef int (*ferry_map_fn)(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user);

/* A predicate for filter: borrows e, writes *keep. Returns FERRY_OK or an error code. */
typedef int (*ferry_predicate_fn)(ferry_context *ctx, const ferry_element *e, bool *keep, void *user);

/* ---------------------------------------------------------------------------------------------
 * Datasets: immutable, refcounted descriptions. Building one starts no thread.
 * ------------------------------------------------------------------------------------------- */
typedef struct ferry_dataset ferry_dataset;

/* A knob (threads, buffer) set from what the pipeline measures, changed while it runs and kept
 * only where throughput rose (ferry_iterator_tuning). What an iterator's tuner kept, and what it
 * tried and backed out of, carries to the next iterator of the same pipeline (the next epoch's):
 * it starts from those values and does not try those moves again until the rates drift. */
#define FERRY_AUTOTUNE (-1)
/* A count without end (repeat forever, take or skip all) and the cardinality of an endless
 * dataset. */
#define FERRY_INFINITE (-2)
/* The cardinality of a dataset whose length cannot be known before iterating. */
#define FERRY_UNKNOWN (-3)
/* The longest `name` an options struct may give, in bytes. */
#define FERRY_NAME_MAX 63

/* ferry_dataset_ref: adds a reference to ds.
 * Returns: ds (NULL for NULL).
 * Ownership: the caller owns the new reference and drops it with ferry_dataset_unref.
 * Threads: thread-safe. */
FERRY_API ferry_dataset *ferry_dataset_ref(ferry_dataset *ds);
/* ferry_dataset_unref: drops a reference to ds; the last one frees it and drops its inputs.
 * Iterators hold their own reference, so a dataset may be dropped while they run. NULL is a no-op.
 * Returns: nothing.
 * Ownership: takes the caller's reference.
 * Threads: thread-safe. */
FERRY_API void ferry_dataset_unref(ferry_dataset *ds);
/* ferry_dataset_name: the name given in ds's options, or its op's when none was.
 * Returns: the name; "" for NULL.
 * Ownership: borrows ds; valid while ds lives.
 * Threads: thread-safe. */
FERRY_API const char *ferry_dataset_name(const ferry_dataset *ds);
/* ferry_dataset_op: the name of ds's op ("range", "map", ...).
 * Returns: the op; "" for NULL.
 * Ownership: static storage; nothing to free.
 * Threads: thread-safe. */
FERRY_API const char *ferry_dataset_op(const ferry_dataset *ds);
/* ferry_dataset_num_components: the number of components in each element of ds.
 * Returns: the count; 0 for NULL.
 * Ownership: borrows ds.
 * Threads: thread-safe. */
FERRY_API size_t ferry_dataset_num_components(const ferry_dataset *ds);
/* ferry_dataset_component_spec: the spec (dtype and shape) that ds declares for component i.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL argument or i out of range; FERRY_EMISUSE for a dataset
 *   already freed.
 * Ownership: borrows ds; writes *out.
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_component_spec(const ferry_dataset *ds, size_t i, ferry_tensor_spec *out);
/* ferry_dataset_cardinality: the number of elements of ds.
 * Returns: the count, FERRY_INFINITE, or FERRY_UNKNOWN (also for NULL).
 * Ownership: borrows ds.
 * Threads: thread-safe. */
FERRY_API int64_t ferry_dataset_cardinality(const ferry_dataset *ds);
/* ferry_dataset_runtime: the runtime ds belongs to.
 * Returns: the runtime; NULL for NULL.
 * Ownership: borrows ds; the runtime is borrowed.
 * Threads: thread-safe. */
FERRY_API ferry_runtime *ferry_dataset_runtime(const ferry_dataset *ds);

/* Every transformation below borrows its input dataset(s) and returns a new reference; on failure
 * *out is NULL and the message is in ferry_last_error. A dataset already freed, passed as input, is
 * FERRY_EMISUSE where it can be detected. Every constructor borrows its options (NULL: defaults)
 * and refuses, with FERRY_EINVAL, a `name` longer than FERRY_NAME_MAX bytes or holding a control
 * character; it is not listed again below. */

/* Sources. */
typedef struct ferry_range_options {
    const char *name; /* shown in stats, the report and the trace; NULL: the op */
} ferry_range_options;
/* ferry_dataset_range: the int64 scalars start, start+step, ... up to stop (exclusive); step may be
 * negative.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt or out or a step of 0; FERRY_ENOMEM.
 * Ownership: borrows rt; *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_range(ferry_runtime *rt, int64_t start, int64_t stop, int64_t step,
                                  const ferry_range_options *opts, ferry_dataset **out);
typedef struct ferry_from_tensor_slices_options {
    const char *name; /* shown in stats, the report and the trace; NULL: the op */
} ferry_from_tensor_slices_options;
/* ferry_dataset_from_tensor_slices: one element per row of n tensors (1 to 4096) sliced along dim 0;
 * all must have the same dim 0. Elements share the tensors' bytes.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt, tensors or out, n out of range, a NULL tensor, one of
 *   another runtime, a scalar, or dims 0 that differ; FERRY_ENOMEM.
 * Ownership: borrows tensors (the dataset takes its own references); *out gets a new reference (NULL on
 *   failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_from_tensor_slices(ferry_runtime *rt, size_t n, ferry_tensor *const *tensors,
                                               const ferry_from_tensor_slices_options *opts, ferry_dataset **out);
typedef struct ferry_from_tensors_options {
    const char *name; /* shown in stats, the report and the trace; NULL: the op */
} ferry_from_tensors_options;
/* ferry_dataset_from_tensors: one element made of the n tensors (1 to 4096).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt, tensors or out, n out of range, a NULL tensor or one of
 *   another runtime; FERRY_ENOMEM.
 * Ownership: borrows tensors (the dataset takes its own references); *out gets a new reference (NULL on
 *   failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_from_tensors(ferry_runtime *rt, size_t n, ferry_tensor *const *tensors,
                                         const ferry_from_tensors_options *opts, ferry_dataset **out);

/* A generator: elements produced by callbacks, one state per iterator.
 *   init  (NULL allowed: the state is NULL) makes a fresh state at the iterator's first next; it
 *         runs with ferry_context_index == -1. On failure it must leave nothing to free (fini is
 *         not called); its error takes position 0 and the stream ends after it.
 *   next  (required) produces the element of position ferry_context_index(ctx): FERRY_OK with
 *         *out (owned by ferry from then on), FERRY_END, or an error code (use
 *         ferry_context_fail for a message) that becomes the error of that position; the
 *         iterator goes on calling next for the following positions. An output whose components
 *         do not match `specs` is a FERRY_ETYPE error in its position, naming the component.
 *         ferry_context_random is seeded from the pipeline seed, the op and the position (and
 *         the epoch under repeat); a slow next should poll ferry_context_cancelled.
 *   fini  (NULL allowed) frees the state: exactly once per successful init, when next returns
 *         FERRY_END or when the iterator is freed, whichever comes first.
 * Save/restore: the generator cannot seek, so the saved state is the number of positions
 * produced. A restored iterator makes a fresh state with init at its first next and replays
 * that many next calls, discarding their outputs: restore is exact when next is deterministic
 * given its context and state, and costs one call per position already produced.
 * Callbacks run on the thread that pulls the iterator (the consumer's, or a ferry thread under
 * prefetch), one call at a time per iterator; `user` is shared by every iterator of the dataset,
 * so callbacks must be thread-safe with respect to it when several iterators run at once. */
typedef struct ferry_generator_options {
    const char *name; /* shown in stats, the report and the trace; NULL: the op */
    int (*init)(ferry_context *ctx, void *user, void **state);
    int (*next)(ferry_context *ctx, void *state, ferry_element **out);
    void (*fini)(void *state, void *user);
    void *user;
    void (*user_free)(void *user);  /* NULL: user is borrowed; else the dataset owns it and calls
                                         this once after its last iterator */
    size_t num_components;          /* required */
    const ferry_tensor_spec *specs; /* borrowed, num_components entries; required */
    int64_t cardinality;            /* 0 means FERRY_UNKNOWN; FERRY_INFINITE if endless */
} ferry_generator_options;
/* ferry_dataset_generator: makes a generator dataset (callbacks as described above). Required in opts:
 * next, num_components (1 to 4096) and specs.
 * Returns: FERRY_OK; FERRY_EINVAL naming a missing or invalid field (also for a NULL rt, opts or out, a
 *   spec with an invalid dtype, rank or dim, or a cardinality below 0 other than FERRY_INFINITE and
 *   FERRY_UNKNOWN); FERRY_ENOMEM.
 * Ownership: borrows rt and opts (specs copied); opts->user is kept until the dataset's last reference
 *   goes, then opts->user_free(user) is called when set (when this call fails the caller keeps user);
 *   *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_generator(ferry_runtime *rt, const ferry_generator_options *opts, ferry_dataset **out);


/* map. */
typedef struct ferry_map_options {
    const char *name;                      /* shown in stats, the report and the trace; NULL: the op */
    int num_parallel_calls;                /* 0: inline on the caller's thread; N > 0 threads; FERRY_AUTOTUNE */
    bool relaxed_order;                    /* true: hand results out as they finish (not deterministic) */
    int reorder_window;                    /* results in flight and finished at most; 0: default */
    size_t num_outputs;                    /* 0: outputs have the input's spec */
    const ferry_tensor_spec *output_specs; /* borrowed, num_outputs entries; outputs are checked */
    uint64_t seed;                         /* mixed into the per-element random generators */
    void (*user_free)(void *user);         /* NULL, or called with `user` once when the dataset is
                                        freed (after its last iterator): the dataset then owns
                                        user. When ferry_dataset_map fails the caller keeps it. */
    /* 0: no cap. N: the most threads the map runs (num_parallel_calls above N runs N), the most
     * AUTOTUNE gives it, and the most the report counts on when it predicts what more threads
     * would gain: 1 for a function that runs one call at a time whatever the threads (one that
     * holds a process-wide lock, such as Python's GIL). */
    int max_parallel_calls;
} ferry_map_options;
/* ferry_dataset_map: applies fn to every element of in, inline on the thread that pulls the iterator
 * (num_parallel_calls 0) or on the runtime's executor (N threads, or FERRY_AUTOTUNE; at most
 * max_parallel_calls when set). Results come in
 * input order unless relaxed_order. fn's errors reach the consumer in their element's position; so
 * does an output that does not match the output specs (FERRY_ETYPE) and FERRY_OK without an output or
 * a positive return code (FERRY_EUSER).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL in, fn or out, num_parallel_calls other than FERRY_AUTOTUNE
 *   or 0 to 1024, max_parallel_calls outside 0 to 1024, reorder_window above 2^20, num_outputs above
 *   4096, NULL output_specs with num_outputs > 0, or an invalid output spec; FERRY_EMISUSE for a freed
 *   in; FERRY_ENOMEM.
 * Ownership: borrows in and opts (output_specs copied); user is kept until the dataset's last reference
 *   goes (then opts->user_free(user) is called, when set); when this call fails the caller keeps user;
 *   *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_map(ferry_dataset *in, ferry_map_fn fn, void *user, const ferry_map_options *opts,
                                ferry_dataset **out);
typedef struct ferry_filter_options {
    const char *name;              /* shown in stats, the report and the trace; NULL: the op */
    void (*user_free)(void *user); /* NULL: user is borrowed; else the dataset owns it and calls
                                        this once after its last iterator */
} ferry_filter_options;
/* ferry_dataset_filter: the elements of in for which fn writes *keep = true. fn runs on the thread that
 * pulls the iterator. Input errors pass through in their position; a failing fn is an error in its
 * element's position (the element is dropped; a positive code becomes FERRY_EUSER).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL in, fn or out; FERRY_EMISUSE for a freed in; FERRY_ENOMEM.
 * Ownership: borrows in and opts; user is kept until the dataset's last reference goes, then
 *   opts->user_free(user) is called when set (when this call fails the caller keeps user); *out gets a
 *   new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_filter(ferry_dataset *in, ferry_predicate_fn fn, void *user,
                                   const ferry_filter_options *opts, ferry_dataset **out);

/* Batching. */
typedef struct ferry_batch_options {
    const char *name;    /* shown in stats, the report and the trace; NULL: the op */
    bool drop_remainder; /* drop the last batch when it is short */
} ferry_batch_options;
/* ferry_dataset_batch: stacks batch_size consecutive elements of in into one, along a new dim 0; the
 * last, shorter batch is dropped when opts->drop_remainder. A row whose dtype or shape differs from the
 * batch's first row is a FERRY_ETYPE error in the batch's position. A batch right over a parallel map
 * with the default reorder window and input order runs fused with it (tf.data's map_and_batch; one
 * "map_and_batch" stage in the stats): the output, the errors and their positions, and the saved state
 * are exactly those of the unfused pipeline.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL in or out, a batch_size below 1, or a component of rank
 *   FERRY_MAX_RANK; FERRY_EMISUSE for a freed in; FERRY_ENOMEM.
 * Ownership: borrows in and opts; *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_batch(ferry_dataset *in, int64_t batch_size, const ferry_batch_options *opts,
                                  ferry_dataset **out);
typedef struct ferry_padded_batch_options {
    const char *name;    /* shown in stats, the report and the trace; NULL: the op */
    bool drop_remainder; /* drop the last batch when it is short */
    /* Per component (num_components entries) or NULL: pad every dim to the batch's longest.
     * A dim of FERRY_UNKNOWN_DIM pads to the longest in the batch; a fixed dim pads to that size
     * and an element longer than it is an error. Borrowed. */
    const ferry_shape *padded_shapes;
    /* Per component scalar tensors of the component's dtype, or NULL entries / NULL array: zero
     * (empty string for bytes). Borrowed. */
    ferry_tensor *const *padding_values;
} ferry_padded_batch_options;
/* ferry_dataset_padded_batch: batch that pads each component's dims as opts says (NULL: to the
 * batch's longest) with its padding value. A row longer than a fixed padded dim, or of another dtype or
 * rank than the batch's first row, is a FERRY_ETYPE error in the batch's position.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL in or out, a batch_size below 1, a padded shape of bad rank
 *   or dims or smaller than the component's known shape, a component of rank FERRY_MAX_RANK, or a
 *   padding value that is not a scalar of the component's dtype; FERRY_EMISUSE for a freed in;
 *   FERRY_ENOMEM.
 * Ownership: borrows in and opts (shapes copied; the dataset takes its own references to the padding
 *   values); *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_padded_batch(ferry_dataset *in, int64_t batch_size, const ferry_padded_batch_options *opts,
                                         ferry_dataset **out);
typedef struct ferry_unbatch_options {
    const char *name; /* shown in stats, the report and the trace; NULL: the op */
} ferry_unbatch_options;
/* ferry_dataset_unbatch: splits every component along dim 0 into rows. All components must agree on
 * dim 0: an element where they do not, or with a scalar component, is a FERRY_ETYPE error in its
 * position.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL in or out, a component declared scalar, or declared dims 0
 *   that differ; FERRY_EMISUSE for a freed in; FERRY_ENOMEM.
 * Ownership: borrows in and opts; *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_unbatch(ferry_dataset *in, const ferry_unbatch_options *opts, ferry_dataset **out);

/* shuffle. */
typedef struct ferry_shuffle_options {
    const char *name;           /* shown in stats, the report and the trace; NULL: the op */
    uint64_t seed;              /* mixed with the pipeline seed */
    bool same_order_each_epoch; /* false (default): reshuffle every iteration, as tf.data */
    bool fill_before_first;     /* false (default): fill the buffer progressively so an
                                        epoch starts without a stall; true: tf.data's full fill */
} ferry_shuffle_options;
/* ferry_dataset_shuffle: the elements of in in random order, drawn from a buffer of buffer_size
 * elements, as tf.data's shuffle (opts: when the order changes and how the buffer fills).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL in or out or a buffer_size below 1; FERRY_EMISUSE for a
 *   freed in; FERRY_ENOMEM.
 * Ownership: borrows in and opts (may be NULL: defaults); *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_shuffle(ferry_dataset *in, int64_t buffer_size, const ferry_shuffle_options *opts,
                                    ferry_dataset **out);

/* Counting and combining. */
typedef struct ferry_repeat_options {
    const char *name; /* shown in stats, the report and the trace; NULL: the op */
} ferry_repeat_options;
/* ferry_dataset_repeat: the elements of in, count times over (FERRY_INFINITE: forever).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL in or out or a count below 0 other than FERRY_INFINITE; FERRY_EMISUSE for a freed
 *   in; FERRY_ENOMEM.
 * Ownership: borrows in and opts; *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_repeat(ferry_dataset *in, int64_t count, const ferry_repeat_options *opts,
                                   ferry_dataset **out);
typedef struct ferry_take_options {
    const char *name; /* shown in stats, the report and the trace; NULL: the op */
} ferry_take_options;
/* ferry_dataset_take: the input up to its count-th element (FERRY_INFINITE: all). As tf.data's take,
 * elements count and errors do not: an error passes through in its position without using up the
 * count.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL in or out or a count below 0 other than FERRY_INFINITE;
 *   FERRY_EMISUSE for a freed in; FERRY_ENOMEM.
 * Ownership: borrows in and opts; *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_take(ferry_dataset *in, int64_t count, const ferry_take_options *opts, ferry_dataset **out);
typedef struct ferry_skip_options {
    const char *name; /* shown in stats, the report and the trace; NULL: the op */
} ferry_skip_options;
/* ferry_dataset_skip: the input without its first count elements (FERRY_INFINITE: all). As tf.data's skip,
 * an error met while skipping is handed out in its position and does not count. Skipping over range
 * and slices costs O(1).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL in or out or a count below 0 other than FERRY_INFINITE;
 *   FERRY_EMISUSE for a freed in; FERRY_ENOMEM.
 * Ownership: borrows in and opts; *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_skip(ferry_dataset *in, int64_t count, const ferry_skip_options *opts, ferry_dataset **out);
typedef struct ferry_shard_options {
    const char *name; /* shown in stats, the report and the trace; NULL: the op */
} ferry_shard_options;
/* ferry_dataset_shard: every num_shards-th position of in, starting at index. Unlike tf.data (where
 * every shard's iterator meets every error of the input), an error is a position: it goes to exactly
 * one shard, so the shards together hand out each element and each error once (docs/differences.md).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL in or out, num_shards below 1, or index outside
 *   [0, num_shards); FERRY_EMISUSE for a freed in; FERRY_ENOMEM.
 * Ownership: borrows in and opts; *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_shard(ferry_dataset *in, int64_t num_shards, int64_t index, const ferry_shard_options *opts,
                                  ferry_dataset **out);
typedef struct ferry_zip_options {
    const char *name; /* shown in stats, the report and the trace; NULL: the op */
} ferry_zip_options;
/* ferry_dataset_zip: tuples of the components of n inputs (1 to 4096), in input order, ending with the
 * shortest input.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL inputs or out, n out of range, a NULL input, or inputs of
 *   different runtimes; FERRY_EMISUSE for a freed input; FERRY_ENOMEM.
 * Ownership: borrows opts, the array inputs and its datasets; *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_zip(size_t n, ferry_dataset *const *inputs, const ferry_zip_options *opts,
                                ferry_dataset **out);
typedef struct ferry_concatenate_options {
    const char *name; /* shown in stats, the report and the trace; NULL: the op */
} ferry_concatenate_options;
/* ferry_dataset_concatenate: a's elements, then b's. Their specs must be compatible: the same number
 * of components, of the same dtypes (where shapes differ, the output's dims are unknown).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL argument or datasets of different runtimes; FERRY_ETYPE
 *   when the numbers of components or their dtypes differ; FERRY_EMISUSE for a freed input;
 *   FERRY_ENOMEM.
 * Ownership: borrows a, b and opts; *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_concatenate(ferry_dataset *a, ferry_dataset *b, const ferry_concatenate_options *opts,
                                        ferry_dataset **out);
typedef struct ferry_enumerate_options {
    const char *name; /* shown in stats, the report and the trace; NULL: the op */
    int64_t start;    /* the first counter value */
} ferry_enumerate_options;
/* ferry_dataset_enumerate: prepends an int64 scalar counter starting at opts->start:
 * (i, components...).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL in or out or an input of 4096 or more components;
 *   FERRY_EMISUSE for a freed in; FERRY_ENOMEM.
 * Ownership: borrows in and opts; *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_enumerate(ferry_dataset *in, const ferry_enumerate_options *opts, ferry_dataset **out);
typedef struct ferry_ignore_errors_options {
    const char *name; /* shown in stats, the report and the trace; NULL: the op */
} ferry_ignore_errors_options;
/* ferry_dataset_ignore_errors: drops the positions of in whose production failed; counts them in the
 * stats (errors_dropped).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL in or out; FERRY_EMISUSE for a freed in; FERRY_ENOMEM.
 * Ownership: borrows in and opts; *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_ignore_errors(ferry_dataset *in, const ferry_ignore_errors_options *opts,
                                          ferry_dataset **out);

/* Running ahead. */
typedef struct ferry_prefetch_options {
    const char *name; /* shown in stats, the report and the trace; NULL: the op */
} ferry_prefetch_options;
/* ferry_dataset_prefetch: runs in ahead in the background, keeping up to buffer_size elements ready:
 * N elements, 0 = no buffer (pass-through), or FERRY_AUTOTUNE. Over an input that already runs ahead
 * on its own threads (a parallel map, or a batch fused into one), prefetch adds no thread: N widens
 * the map's reorder window by N outputs, and AUTOTUNE leaves the window as the map tunes it.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL in or out or a buffer_size other than FERRY_AUTOTUNE or
 *   0 to 2^20; FERRY_EMISUSE for a freed in; FERRY_ENOMEM.
 * Ownership: borrows in and opts; *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_prefetch(ferry_dataset *in, int64_t buffer_size, const ferry_prefetch_options *opts,
                                     ferry_dataset **out);
typedef struct ferry_cache_options {
    const char *name; /* shown in stats, the report and the trace; NULL: the op */
    const char *path; /* NULL or "": in memory; else a file cache at this path */
} ferry_cache_options;
/* ferry_dataset_cache: opts->path NULL or "": caches in memory (counted against the budget). Otherwise
 * a file cache at path (not part of the pipeline's fingerprint: the file may move). Every pass gives the
 * elements of the first pass over the input, random draws included (its seed is kept with the cache
 * and in saved states), so a restored iterator goes on exactly, in a new process too.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL in or out or a path longer than 4000 bytes; FERRY_EMISUSE
 *   for a freed in; FERRY_ENOMEM.
 * Ownership: borrows in and opts (path copied); *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_cache(ferry_dataset *in, const ferry_cache_options *opts, ferry_dataset **out);


/* ---------------------------------------------------------------------------------------------
 * Iterators: one pass over a dataset.
 * ------------------------------------------------------------------------------------------- */
typedef struct ferry_iterator ferry_iterator;

typedef struct ferry_iterator_options {
    uint64_t seed;    /* the pipeline seed; the same seed gives the same stream */
    bool warm_start;  /* start background work at creation instead of at the first next */
    bool no_rewrites; /* run the graph as written. By default, when an iterator is made, a
                            batch right over a parallel map in input order runs as one
                            map_and_batch stage (workers stack whole batches; the stats show
                            one "map_and_batch" entry). Output, errors in position and saved
                            state are the same either way, and a state saved with rewrites
                            restores without them. */
    /* A poll for a caller that must be able to stop a blocked ferry_iterator_next (a binding that
     * released its interpreter's lock, on Ctrl-C). interrupt(interrupt_user) is called by the
     * thread inside ferry_iterator_next, never by ferry's own threads and never under a lock of
     * ferry's, about every 20 ms while that call waits for a stage that runs ahead (prefetch,
     * parallel map, map_and_batch, parallel interleave); not while a user callback runs on that
     * thread (an inline map), nor while it does a stage's work itself (pulls a parallel map's
     * input to stack a batch or to skip positions). A nonzero return cancels the iterator: its
     * background work stops as in ferry_iterator_free, this call and every later
     * ferry_iterator_next return FERRY_ECANCELED ("interrupted"), ferry_iterator_save refuses
     * (FERRY_ECANCELED), and only ferry_iterator_free, ferry_iterator_error and the stats and
     * report calls remain useful. */
    int (*interrupt)(void *user); /* NULL: none */
    void *interrupt_user;         /* passed to interrupt; borrowed: it must outlive the iterator */
} ferry_iterator_options;

/* ferry_iterator_create: makes an iterator, one pass over ds; opts->seed is the pipeline seed, and
 * opts->interrupt (when not NULL) is polled while ferry_iterator_next waits (see the options).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL ds or out; FERRY_EMISUSE for a freed ds; FERRY_ENOMEM
 *   (also when a thread cannot be started). Message in ferry_last_error.
 * Ownership: borrows ds (the iterator takes its own reference) and opts (may be NULL); *out is freed
 *   with ferry_iterator_free (NULL on failure).
 * Threads: thread-safe with respect to ds. */
FERRY_API int ferry_iterator_create(ferry_dataset *ds, const ferry_iterator_options *opts, ferry_iterator **out);
/* ferry_iterator_next: produces the next element. After an error the iterator can be called again
 * and goes on with the next element; after FERRY_END, every call returns FERRY_END. While it waits
 * for a stage that runs ahead it calls the options' interrupt hook, if any, about every 20 ms.
 * Returns: FERRY_OK with *out set; FERRY_END at the end of the sequence; or the error code of the
 *   element in this position (whatever the stage that failed returned: FERRY_EIO, FERRY_ECORRUPT,
 *   FERRY_ETYPE, FERRY_EUSER, FERRY_ENOMEM, ...), with ferry_iterator_error telling which stage failed
 *   and why; FERRY_ECANCELED ("ferry_iterator_next: interrupted") once the interrupt hook returned
 *   nonzero, in that call and at once in every later one; FERRY_EINVAL for a NULL argument;
 *   FERRY_EMISUSE for an iterator already freed, or when another thread is inside
 *   ferry_iterator_next on the same iterator.
 * Ownership: borrows it; *out is owned by the caller (free with ferry_element_free); NULL unless
 *   FERRY_OK.
 * Threads: one thread at a time per iterator. */
FERRY_API int ferry_iterator_next(ferry_iterator *it, ferry_element **out);
/* ferry_iterator_error: the message of the last failure of this iterator.
 * Returns: the message; "" when none or for NULL.
 * Ownership: borrows it; valid until the next call on the iterator.
 * Threads: one thread at a time per iterator. */
FERRY_API const char *ferry_iterator_error(const ferry_iterator *it);
/* ferry_iterator_free: cancels all background work, waits for it to stop and frees the iterator.
 * Returns promptly even while a producer sits in a slow callback that polls ferry_context_cancelled.
 * An interrupted iterator (see ferry_iterator_options.interrupt) is freed the same way. NULL is a
 * no-op.
 * Returns: nothing.
 * Ownership: takes it (and drops its reference to the dataset).
 * Threads: one thread at a time per iterator; no other call on it may be in progress. */
FERRY_API void ferry_iterator_free(ferry_iterator *it);

/* Per-stage counters, one entry per dataset node of the pipeline (depth-first, root first). */
typedef struct ferry_stage_stats {
    char name[FERRY_NAME_MAX + 1]; /* the name given in the op's options, else the op */
    char op[24];                   /* the op: "map", "prefetch", ... */
    int node;                      /* index of this entry */
    int input;                     /* index of its first input, or -1 */
    int64_t elements_out;          /* elements handed to this stage's consumer */
    int64_t bytes_out;
    int64_t errors_out;     /* errors handed to the consumer */
    int64_t errors_dropped; /* ignore_errors: errors dropped */
    /* Where the stage's time went, in nanoseconds summed over its threads. Stages that run
     * ahead (prefetch, parallel map, map_and_batch, parallel interleave) measure them on their
     * threads; for an inline stage, its own time is sampled as the time in its next() less its
     * inputs' and shows as work_ns (as assemble_ns for batch and padded_batch). */
    int64_t work_ns;           /* its own work: user function calls, parsing, bookkeeping */
    int64_t assemble_ns;       /* copying rows into batches */
    int64_t lock_wait_ns;      /* its threads waiting for a lock another of its threads held */
    int64_t wait_input_ns;     /* its consumer side waiting for what its threads make */
    int64_t wait_consumer_ns;  /* its threads waiting, while they hold them, for room or for the
                                    byte budget (the consumer takes too little) */
    int64_t thread_ns;         /* wall time its own threads ran for it (the inline stages below
                                    it included, blocked waits included); 0 for inline stages */
    int64_t cpu_ns;            /* CPU time of those threads in that time (estimated from runs
                                    sampled about once per 10 ms per thread) */
    int64_t cpu_wait_ns;       /* of thread_ns, the time they were ready to run but waited for a
                                    core (other threads or programs had them; Linux only, else 0);
                                    thread_ns - cpu_ns - cpu_wait_ns is time they were blocked */
    int64_t buffered_elements; /* in its buffer now */
    int64_t buffered_bytes;
    int64_t buffer_capacity; /* elements; 0 for stages without a buffer */
    int64_t parallelism;     /* threads working for it; 0 = inline */
    int64_t idle_full_ns;    /* its tasks sat idle, holding no thread, because its buffer was
                                    full (summed over tasks; the consumer takes less than they
                                    make); not part of thread_ns */
} ferry_stage_stats;

/* ferry_iterator_stats: copies up to cap stage entries into out and the number of stages into *count.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL it or count, or a NULL out with cap > 0; FERRY_EMISUSE for
 *   an iterator already freed. Message on the iterator (ferry_last_error for a NULL or freed it).
 * Ownership: borrows it; writes out[0..cap) and *count.
 * Threads: from the thread that iterates. */
FERRY_API int ferry_iterator_stats(ferry_iterator *it, ferry_stage_stats *out, size_t cap, size_t *count);

/* What limits an iterator's throughput (ferry_report.limit). */
typedef enum ferry_limit {
    FERRY_LIMIT_UNKNOWN = 0, /* too little measured yet (under 2 elements or 1 ms) */
    FERRY_LIMIT_CONSUMER,    /* the consumer (the training step): the pipeline keeps up */
    FERRY_LIMIT_STAGE_CPU,   /* a stage that runs ahead, its threads computing all the time */
    FERRY_LIMIT_STAGE_WAIT,  /* a stage that runs ahead, its threads mostly waiting (I/O, sleeping
                                calls): more threads than cores pay */
    FERRY_LIMIT_INLINE,      /* no stage runs ahead: every stage runs in the consumer's next() */
    FERRY_LIMIT_MACHINE,     /* the consumer waits, yet no stage's threads were busy half the time:
                                they did not get the cores */
} ferry_limit;

/* The verdict on an iterator, from what it measured since its first next (up to FERRY_END). */
typedef struct ferry_report {
    ferry_limit limit;
    int stage;          /* the stage that limits (an index of ferry_iterator_stats), or -1 */
    int busiest_inline; /* of the stages running inline on `stage`'s threads (or on the
                                   consumer's), the one with the most own time; or -1 */
    double seconds;     /* wall time since the first next */
    int64_t elements;   /* handed out */
    double elements_per_s;
    double consumer_wait_share; /* share of the wall time the consumer waited in next() */
    int64_t wait_p50_ns;        /* time in next(): median and 99th percentile (sampled, to about */
    int64_t wait_p99_ns;        /* 12 %: buckets of a quarter of a power of two) */
    double headspace_per_s;     /* elements/s the pipeline could deliver with its present threads
                                   if the consumer took nothing (0: unknown) */
    double bound_per_s;         /* elements/s with the cpu budget's cores put where they pay
                                   most, the consumer's own time included (0: unknown) */
    int threads_suggested;      /* threads for `stage` that would reach bound_per_s, or 0 */
    char text[1024];            /* the verdict in words: what limits, why, what to change and the
                                   predicted gain */
} ferry_report;

/* ferry_iterator_report: fills *out with the verdict on it (see ferry_report).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL argument; FERRY_EMISUSE for an iterator already freed;
 *   FERRY_ENOMEM. Message on the iterator (ferry_last_error for a NULL or freed it).
 * Ownership: borrows it; writes *out.
 * Threads: from the thread that iterates. */
FERRY_API int ferry_iterator_report(ferry_iterator *it, ferry_report *out);
/* ferry_iterator_report_json: the report and every stage's stats as one JSON object (UTF-8, no NUL):
 * keys limit, stage, busiest_inline, stage_name, verdict, elements, seconds, elements_per_s,
 * headspace_per_s, bound_per_s, threads_suggested, cpu_budget, consumer {wait_share, wait_p50_ns,
 * wait_p99_ns}, autotune [the decisions of ferry_iterator_tuning, each with the ferry_tune_decision
 * fields, outcome as its name] and stages [{node, input, parent, name and the ferry_stage_stats
 * fields}].
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL argument; FERRY_EMISUSE for an iterator already freed;
 *   FERRY_ENOMEM. Message on the iterator (ferry_last_error for a NULL or freed it).
 * Ownership: borrows it; *out gets a new blob to free with ferry_blob_free (NULL on failure).
 * Threads: from the thread that iterates. */
FERRY_API int ferry_iterator_report_json(ferry_iterator *it, ferry_blob **out);
/* ferry_limit_name: the JSON name of a limit ("consumer", "stage_cpu", ...).
 * Returns: the name; "invalid" for other values. Never NULL.
 * Ownership: static storage; nothing to free.
 * Threads: thread-safe. */
FERRY_API const char *ferry_limit_name(ferry_limit limit);
/* What became of one autotuner decision (ferry_tune_decision.outcome). */
typedef enum ferry_tune_outcome {
    FERRY_TUNE_KEPT = 0,   /* applied and kept: more threads raised throughput 3 %, or a bigger
                              buffer did not lower it by 1 % */
    FERRY_TUNE_BACKED_OUT, /* applied and undone (more threads did not raise throughput 3 % or
                              the CPU used passed the cpu budget; a bigger buffer lowered it 1 %),
                              not tried again until something changes */
    FERRY_TUNE_SETTLED,    /* nothing left to change: the consumer limits, or no change pays */
    FERRY_TUNE_DRIFT,      /* the rate drifted from the settled one: everything re-evaluated */
} ferry_tune_outcome;

/* One decision of the closed-loop autotuner. Stages given FERRY_AUTOTUNE get threads and buffer
 * from what the pipeline measures; each change is applied, measured, and kept only if the
 * elements handed out per second rose (3 % for more threads; a bigger buffer, which costs memory
 * only, stays unless they fell 1 %; see docs/design.md). Tuning changes speed, never the elements
 * or their order. */
typedef struct ferry_tune_decision {
    double at_s; /* seconds since the first next */
    int stage;   /* index of ferry_iterator_stats, or -1 */
    ferry_tune_outcome outcome;
    int parallelism_before, parallelism_after; /* threads (equal when the buffer moved) */
    int64_t buffer_before, buffer_after;       /* elements */
    double rate_before, rate_after;            /* elements/s handed out, measured before and with it */
    char why[160];                             /* in words */
} ferry_tune_decision;

/* ferry_iterator_tuning: copies the autotuner's last decisions (up to 32, oldest first) into out (up
 * to cap) and their number into *count; 0 when no stage asked for FERRY_AUTOTUNE. The values chosen
 * show in ferry_iterator_stats (parallelism, buffer_capacity).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL it or count, or a NULL out with cap > 0; FERRY_EMISUSE for
 *   an iterator already freed. Message on the iterator (ferry_last_error for a NULL or freed it).
 * Ownership: borrows it; writes out[0..cap) and *count.
 * Threads: from the thread that iterates. */
FERRY_API int ferry_iterator_tuning(ferry_iterator *it, ferry_tune_decision *out, size_t cap, size_t *count);
/* ferry_tune_outcome_name: the name of an outcome: "kept", "backed_out", "settled", "drift".
 * Returns: the name; "invalid" for other values. Never NULL.
 * Ownership: static storage; nothing to free.
 * Threads: thread-safe. */
FERRY_API const char *ferry_tune_outcome_name(ferry_tune_outcome outcome);

/* ferry_report_page_write: writes the report page to path (replaced whole): one self-contained HTML
 * file (no network, no external script) with the pipeline as a graph of its stages (rate, threads,
 * buffer, waits, CPU share), the verdict in words and the trace's timeline, one row per thread.
 * report_json is the text of ferry_iterator_report_json; trace_json that of ferry_runtime_trace_json
 * (or a file of ferry_runtime_trace_write), or NULL with trace_len 0 for none. A text that is not JSON
 * shows on the page as unreadable.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt or report_json, a NULL trace_json with trace_len > 0,
 *   or a NULL or empty path; FERRY_ENOMEM; FERRY_EIO naming the path and the failed step. Message in
 *   ferry_last_error.
 * Ownership: borrows rt, report_json (report_len bytes), trace_json (trace_len bytes) and path.
 * Threads: thread-safe. */
FERRY_API int ferry_report_page_write(ferry_runtime *rt, const char *report_json, size_t report_len,
                                      const char *trace_json, size_t trace_len, const char *path);

/* ---------------------------------------------------------------------------------------------
 * Saving and restoring iterators
 * ------------------------------------------------------------------------------------------- */
/* ferry_blob_data: the bytes of a blob (a saved state, a JSON report or trace, ...).
 * Returns: a pointer to ferry_blob_size(b) bytes; NULL for NULL.
 * Ownership: borrows b; the bytes are valid until the blob is freed.
 * Threads: thread-safe. */
FERRY_API const void *ferry_blob_data(const ferry_blob *b);
/* ferry_blob_size: the number of bytes of a blob.
 * Returns: the size; 0 for NULL.
 * Ownership: borrows b.
 * Threads: thread-safe. */
FERRY_API size_t ferry_blob_size(const ferry_blob *b);
/* ferry_blob_free: frees a blob. NULL is a no-op.
 * Returns: nothing.
 * Ownership: takes b.
 * Threads: thread-safe; once per blob. */
FERRY_API void ferry_blob_free(ferry_blob *b);

/* ferry_iterator_save: writes the state of `it` (the position after the last element handed out) to
 * a new blob. Elements computed ahead are not stored: they are recomputed after restore.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL argument; FERRY_EMISUSE for an iterator already freed;
 *   FERRY_ECANCELED for an iterator that its interrupt hook cancelled (its position is lost: save
 *   before); FERRY_ENOMEM. Message on the iterator (ferry_last_error for a NULL or freed it).
 * Ownership: borrows it; *out gets a new blob to free with ferry_blob_free (NULL on failure).
 * Threads: from the thread that iterates. */
FERRY_API int ferry_iterator_save(ferry_iterator *it, ferry_blob **out);
/* ferry_iterator_restore: makes an iterator over ds that continues from a saved state, with the
 * state's pipeline seed (opts->seed must be 0 or that seed). The other options apply as in
 * ferry_iterator_create (opts->interrupt included).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL ds, state or out; FERRY_EMISUSE for a freed ds;
 *   FERRY_EMISMATCH for a state of another pipeline or another seed; FERRY_ECORRUPT / FERRY_ETRUNCATED
 *   for a damaged state; FERRY_EVERSION for a format this library does not read (newer, or the old
 *   version 1); FERRY_ENOMEM; or the error of a stage that cannot resume (such as a file that cannot be
 *   opened again). Message in ferry_last_error.
 * Ownership: borrows ds (the iterator takes its own reference), state (size bytes) and opts (may be
 *   NULL); *out is freed with ferry_iterator_free (NULL on failure).
 * Threads: thread-safe with respect to ds. */
FERRY_API int ferry_iterator_restore(ferry_dataset *ds, const void *state, size_t size,
                                     const ferry_iterator_options *opts, ferry_iterator **out);


/* ---------------------------------------------------------------------------------------------
 * Files and compression (shared by the file formats below)
 * ------------------------------------------------------------------------------------------- */
typedef enum ferry_compression {
    FERRY_COMPRESSION_NONE = 0,
    FERRY_COMPRESSION_GZIP, /* RFC 1952, the whole stream (tf.data "GZIP") */
    FERRY_COMPRESSION_ZLIB, /* RFC 1950, the whole stream (tf.data "ZLIB") */
} ferry_compression;

/* ==== section: tfrecord ==== */
/* File lists. */
typedef struct ferry_list_files_options {
    const char *name;               /* shown in stats, the report and the trace; NULL: the op */
    bool shuffle;                   /* false (default): file names in sorted (strcmp) order */
    uint64_t seed;                  /* shuffle seed, mixed with the pipeline seed */
    bool same_order_each_iteration; /* with shuffle: false (default) draws a new order every
                                        iteration (each epoch under repeat), as tf.data; true keeps
                                        the order that `seed` alone gives */
} ferry_list_files_options;
/* ferry_dataset_list_files: the files matching a glob(3) pattern, matched once, now: a dataset of
 * FERRY_DTYPE_BYTES scalars (the paths). A state saved while other files matched does not restore
 * (FERRY_EMISMATCH).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt, pattern or out, or an empty pattern; FERRY_ENOTFOUND
 *   (naming the pattern) when nothing matches; FERRY_EIO when a directory cannot be read; FERRY_ENOMEM.
 * Ownership: borrows rt, pattern and opts (may be NULL); *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_list_files(ferry_runtime *rt, const char *pattern, const ferry_list_files_options *opts,
                                       ferry_dataset **out);

/* TFRecord files: every record is one element, a FERRY_DTYPE_BYTES scalar holding its bytes.
 * Framing (TensorFlow's): u64 length, u32 masked CRC-32C of the length, data, u32 masked CRC-32C
 * of the data; little-endian. Errors name the file, the byte offset of the record (in the
 * decompressed stream) and the kind: "corrupted length" (header CRC mismatch), "corrupted data"
 * (data CRC mismatch), "truncated" (FERRY_ETRUNCATED: the file ends inside a record), "too
 * large" (FERRY_ETOOLARGE), "not a TFRecord file" (bad header CRC at offset 0). Corruption is
 * FERRY_ECORRUPT. A record's length is checked against the bytes left in the file before
 * anything is allocated; in compressed files memory grows only as the data actually arrives.
 * Every error takes one position and the reader always moves forward: after a data CRC mismatch
 * it goes on with the next record; after a length CRC mismatch it scans forward for the next
 * offset whose 12-byte header has a valid CRC; after truncation, a damaged compressed stream or
 * an I/O error (FERRY_EIO) it goes on with the next file. So a file with k bad records costs at
 * most k+1 errors. A file that cannot be opened is one FERRY_ENOTFOUND error in its position.
 * Saved state: the file (index, or the file-name input's state), the decompressed offset of the
 * next record and the count of skipped records; restore reopens the file and seeks (compressed
 * files are inflated up to the offset). */
typedef struct ferry_tfrecord_options {
    const char *name; /* shown in stats, the report and the trace; NULL: the op */
    ferry_compression compression;
    size_t buffer_size;       /* read buffer per open file; 0: 256 KiB */
    int num_parallel_reads;   /* 0: files one after another, inline. N > 0 or FERRY_AUTOTUNE:
                                    N files read at once by a parallel interleave (deterministic
                                    order: one record from each open file in turn) */
    int64_t max_bad_records;  /* 0: every bad record (corrupt, truncated, too large) is an
                                    error in its position; N > 0: drop the first N bad records
                                    in output order over all files (also with
                                    num_parallel_reads), counted in the stage's errors_dropped,
                                    then errors again; FERRY_INFINITE: drop all */
    bool skip_crc_check;      /* false (default): check both CRCs of every record */
    uint64_t max_record_size; /* 0: no limit but the file; else longer records are bad
                                    (FERRY_ETOOLARGE) and skipped over */
} ferry_tfrecord_options;

/* ferry_dataset_tfrecord: the records of nfiles files, in order (as above). Files are opened when the
 * iterator reaches them.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt or out, NULL files with nfiles > 0, a NULL or empty file
 *   name, or an invalid option (compression; num_parallel_reads other than FERRY_AUTOTUNE or 0 to 256;
 *   max_bad_records below 0 other than FERRY_INFINITE; buffer_size other than 0 or 16 bytes to 1 GiB);
 *   FERRY_ENOMEM.
 * Ownership: borrows rt, files (copied) and opts (may be NULL); *out gets a new reference (NULL on
 *   failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_tfrecord(ferry_runtime *rt, size_t nfiles, const char *const *files,
                                     const ferry_tfrecord_options *opts, ferry_dataset **out);
/* ferry_dataset_tfrecord_files: the records of each file named by `filenames`, a dataset of
 * FERRY_DTYPE_BYTES scalars (e.g. ferry_dataset_list_files); an element of another type is a FERRY_ETYPE
 * error in its position.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL filenames or out, or an invalid option (as
 *   ferry_dataset_tfrecord); FERRY_ETYPE when filenames does not declare one FERRY_DTYPE_BYTES component of
 *   rank 0 (or of unknown rank); FERRY_EMISUSE for a freed filenames; FERRY_ENOMEM.
 * Ownership: borrows filenames (the dataset takes its own reference) and opts (may be NULL); *out gets
 *   a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_tfrecord_files(ferry_dataset *filenames, const ferry_tfrecord_options *opts,
                                           ferry_dataset **out);

/* Writing TFRecord files, byte-identical to TensorFlow's TFRecordWriter (uncompressed; GZIP and
 * ZLIB files are standard streams that TensorFlow reads). A writer is used by one thread at a
 * time. */
typedef struct ferry_tfrecord_writer ferry_tfrecord_writer;
typedef struct ferry_tfrecord_writer_options {
    ferry_compression compression;
    int compression_level; /* 1..9; 0: zlib's default */
} ferry_tfrecord_writer_options;
/* ferry_tfrecord_writer_open: creates or truncates path, to write TFRecord records to.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt or out, a NULL or empty path, or an invalid compression
 *   or compression_level; FERRY_EUNSUPPORTED for GZIP or ZLIB in a build of ferry without zlib;
 *   FERRY_ENOTFOUND (no such directory); FERRY_EIO; FERRY_ENOMEM. Message in ferry_last_error.
 * Ownership: borrows rt, path and opts (may be NULL); *out is closed with ferry_tfrecord_writer_close
 *   (NULL on failure).
 * Threads: thread-safe; the writer is then used by one thread at a time. */
FERRY_API int ferry_tfrecord_writer_open(ferry_runtime *rt, const char *path, const ferry_tfrecord_writer_options *opts,
                                         ferry_tfrecord_writer **out);
/* ferry_tfrecord_writer_write: appends one record of len bytes. After an I/O error every later call
 * returns that first error again.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL w, or NULL data with len > 0; FERRY_EIO. Message in
 *   ferry_tfrecord_writer_error (ferry_last_error for a NULL w).
 * Ownership: borrows w and data (len bytes; may be NULL when len is 0).
 * Threads: one thread at a time per writer. */
FERRY_API int ferry_tfrecord_writer_write(ferry_tfrecord_writer *w, const void *data, size_t len);
/* ferry_tfrecord_writer_error: the message of the writer's latest failure (once an I/O error
 * happened, that error's).
 * Returns: the message; "" when none or for NULL.
 * Ownership: borrows w; the message is valid until the writer is closed.
 * Threads: one thread at a time per writer. */
FERRY_API const char *ferry_tfrecord_writer_error(const ferry_tfrecord_writer *w);
/* ferry_tfrecord_writer_close: flushes, fsyncs, closes and frees the writer (always, also on failure).
 * Returns: FERRY_OK (also for NULL); otherwise the first I/O error of the writer's life (FERRY_EIO),
 *   met by an earlier write or by this call. Message in ferry_last_error.
 * Ownership: takes w.
 * Threads: one thread at a time per writer. */
FERRY_API int ferry_tfrecord_writer_close(ferry_tfrecord_writer *w);
/* ==== end section: tfrecord ==== */


/* ==== section: example ==== */
/* tf.train.Example and tf.train.SequenceExample parsing, as map functions.
 *
 * A parser is made once from a spec (the features to extract) and is then immutable: any number
 * of threads may call ferry_example_parse with it at once. It reads the protobuf wire format as
 * tf.data's fast parser does: packed and unpacked repeated numbers (mixed too), unknown
 * fields and unknown keys skipped, a key given twice: the last entry wins (except that, as in
 * tf.data, a Feature with no kind set does not replace an earlier value of a FIXED feature).
 *
 * Outputs, per feature in spec order (context/Example features first, then feature lists); the
 * "+ ..." outputs exist only when asked for with `with_lengths`, and come right after the values:
 *
 *   feature                     one serialized record (input: bytes scalar)
 *   FIXED, shape S              values [S]
 *   VARLEN                      values [n]                    + int64 scalar n
 *   feature list, FIXED S       values [T, S]                 + int64 scalar T
 *   feature list, VARLEN        values [N] (all steps' values, in order) and int64 row lengths [T]
 *                                                             + int64 scalar T
 *
 * Batch fast path: when the input's component 0 is a 1-D bytes tensor of B records (the output
 * of batch), every output gets a leading dim B, and the result is exactly what
 * ferry_dataset_padded_batch would make of the per-record outputs above: ragged dims are padded
 * to the longest in the batch, values with the feature's default_value (a scalar) or zero / the
 * empty string, lengths with 0. FIXED features (not lists) need no padding: [B, S].
 *
 * Missing values (as tf.data): a FIXED feature whose key is absent, or whose Feature has no kind
 * set, takes default_value, and without one the record fails with FERRY_ENOTFOUND naming the key.
 * A VARLEN feature whose key is absent, or whose Feature is empty, has 0 values (FERRY_ENOTFOUND
 * when `required`). An absent feature list has T = 0 steps (FERRY_ENOTFOUND when `required`);
 * a step (a Feature) with no kind set has 0 values.
 *
 * Errors (in the element's position, message naming the key or the byte offset in the record):
 * FERRY_ETYPE when a Feature holds another type than the spec's dtype (both named) or when a FIXED
 * feature has the wrong number of values (expected and actual counts named); FERRY_ECORRUPT for
 * malformed wire data (bad varint, length past the end, wrong wire type), naming the offset and
 * what was being read; FERRY_EINVAL when the input is not a bytes scalar or vector. In a batch,
 * a failing record fails the whole batch, and the message names the record's index. */
typedef enum ferry_example_kind {
    FERRY_EXAMPLE_FIXED = 0, /* exactly product(shape) values */
    FERRY_EXAMPLE_VARLEN,    /* any number of values, 1-D */
} ferry_example_kind;

typedef struct ferry_example_feature {
    const char *key;   /* the feature's key (copied at parser creation); required */
    ferry_dtype dtype; /* FERRY_DTYPE_INT64, FERRY_DTYPE_FLOAT32 or FERRY_DTYPE_BYTES */
    ferry_example_kind kind;
    ferry_shape shape; /* FIXED: shape of the values (of each step, for a feature list),
                                    every dim known; rank 0 (zero-init): a scalar. VARLEN: rank 0 */
    /* FIXED feature (not a list): the value of a missing key, of the dtype, with product(shape)
     * entries or one (repeated to fill the shape); NULL: a missing key is an error.
     * VARLEN features and feature lists: a scalar of the dtype used as padding value in batch
     * output; NULL: zero / the empty string. Borrowed: the parser takes its own reference. */
    ferry_tensor *default_value;
    bool with_lengths; /* VARLEN feature or feature list: also output the count (see above) */
    bool required;     /* VARLEN feature or feature list: a missing key is an error */
} ferry_example_feature;

typedef struct ferry_example_spec {
    bool sequence; /* false: tf.train.Example; true: SequenceExample */
    size_t num_features;
    const ferry_example_feature *features;      /* Example features, or SequenceExample context */
    size_t num_feature_lists;                   /* SequenceExample only */
    const ferry_example_feature *feature_lists; /* SequenceExample feature_lists */
} ferry_example_spec;

typedef struct ferry_example_parser ferry_example_parser;

/* ferry_example_parser_create: makes a parser for `spec`. Keys must be unique within features and
 * within feature_lists; only a SequenceExample spec has feature lists. The parser counts as a live
 * object of rt until freed.
 * Returns: FERRY_OK; FERRY_EINVAL naming the field at fault (a NULL rt, spec or out; a NULL key, a bad
 *   dtype, kind, shape or default_value; a key given twice; more than 4096 features, feature lists or
 *   outputs); FERRY_ENOMEM. Message in ferry_last_error.
 * Ownership: borrows spec (keys copied; the parser takes its own references to the default tensors);
 *   *out is freed with ferry_example_parser_free (NULL on failure).
 * Threads: thread-safe; the parser is then immutable and may be used by any threads at once. */
FERRY_API int ferry_example_parser_create(ferry_runtime *rt, const ferry_example_spec *spec,
                                          ferry_example_parser **out);
/* ferry_example_parser_free: drops the caller's parser; it is freed when the datasets made with it by
 * ferry_dataset_parse_example (which keep their own reference) are gone too. NULL is a no-op.
 * Returns: nothing.
 * Ownership: takes the caller's parser.
 * Threads: once no other thread uses the parser. */
FERRY_API void ferry_example_parser_free(ferry_example_parser *parser);

/* ferry_example_parse: a ferry_map_fn (user = the parser). Parses component 0 of `in`, a FERRY_DTYPE_BYTES
 * scalar (one serialized record) or 1-D tensor (a batch of records; see "Batch fast path"); other
 * components are dropped. The outputs are described above.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL out or an input whose component 0 is missing or not a
 *   bytes scalar or vector; FERRY_EMISUSE when `parser` is not a parser; FERRY_ENOTFOUND, FERRY_ETYPE
 *   or FERRY_ECORRUPT for a record in error (see "Missing values" and "Errors" above); FERRY_ETOOLARGE
 *   for an output or a batch too large; FERRY_ENOMEM. The message is set through ferry_context_fail,
 *   or, when ctx is NULL (a direct call), goes to ferry_last_error().
 * Ownership: takes `in` (also on failure); borrows ctx and parser; *out gets a new element (NULL on
 *   failure).
 * Threads: thread-safe. */
FERRY_API int ferry_example_parse(ferry_context *ctx, ferry_element *in, ferry_element **out, void *parser);

/* ferry_example_parser_output_specs: the specs of the outputs for one record per call (scalar input).
 * Returns: FERRY_OK with *n outputs in *specs; FERRY_EINVAL for a NULL n or specs, or a parser that is
 *   not one (then *n is 0 and *specs NULL).
 * Ownership: borrows parser; *specs is valid until the parser is freed.
 * Threads: thread-safe. */
FERRY_API int ferry_example_parser_output_specs(const ferry_example_parser *parser, size_t *n,
                                                const ferry_tensor_spec **specs);
/* ferry_example_parser_batch_output_specs: the specs of the outputs for 1-D input (a batch of
 * records): those of ferry_example_parser_output_specs with a leading dim of unknown size.
 * Returns: FERRY_OK with *n outputs in *specs; FERRY_EINVAL for a NULL n or specs, or a parser that is
 *   not one (then *n is 0 and *specs NULL).
 * Ownership: borrows parser; *specs is valid until the parser is freed.
 * Threads: thread-safe. */
FERRY_API int ferry_example_parser_batch_output_specs(const ferry_example_parser *parser, size_t *n,
                                                      const ferry_tensor_spec **specs);
/* ferry_example_parser_output_name: the name of output i: the key, or "key:lengths" /
 * "key:row_lengths" for the extra outputs.
 * Returns: the name; NULL when parser is NULL or i is out of range.
 * Ownership: borrows parser; the name is valid until the parser is freed.
 * Threads: thread-safe. */
FERRY_API const char *ferry_example_parser_output_name(const ferry_example_parser *parser, size_t i);

typedef struct ferry_parse_example_options {
    const char *name;       /* shown in stats, the report and the trace; NULL: the op */
    int num_parallel_calls; /* as ferry_map_options */
    bool relaxed_order;     /* as ferry_map_options */
    int reorder_window;     /* as ferry_map_options */
} ferry_parse_example_options;
/* ferry_dataset_parse_example: map(ferry_example_parse) over `in` with the parser's output specs: the
 * per-record specs when in's component 0 is a bytes scalar, the batch specs when it is 1-D; the map
 * options are opts's. The op is "map" in stats; its default name is "parse_example".
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL in or out, a parser that is not one or belongs to another
 *   runtime, or an `in` whose component 0 is not declared a bytes scalar or vector; FERRY_EMISUSE for a
 *   freed in; otherwise as ferry_dataset_map.
 * Ownership: borrows in, opts (may be NULL) and `parser`: the dataset keeps its own reference to the
 *   parser, so the caller may free its own at once; *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_parse_example(ferry_dataset *in, ferry_example_parser *parser,
                                          const ferry_parse_example_options *opts, ferry_dataset **out);

/* ferry_example_to_json: the JSON form of one serialized tf.train.Example, one line without a newline:
 *   {"features": {"key": {"int64": [1, -2]}, "f": {"float": [0.5, "NaN"]},
 *                 "b": {"bytes": ["text", {"base64": "AAE="}]}, "empty": {}}}
 * Keys in wire order (a repeated key: its last entry, at its last place); bytes values as
 * strings when valid UTF-8, else {"base64": ...}; floats with 9 significant digits (exact round
 * trip), "NaN" / "Infinity" / "-Infinity" for non-finite ones. Unknown fields are left out.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt or out, or NULL data with len > 0; FERRY_ECORRUPT
 *   (message with the byte offset) for malformed input; FERRY_ENOMEM. Message in ferry_last_error.
 * Ownership: borrows rt and data (len bytes); *out gets a new blob to free with ferry_blob_free (NULL
 *   on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_example_to_json(ferry_runtime *rt, const void *data, size_t len, ferry_blob **out);
/* ferry_example_from_json: the reverse of ferry_example_to_json: serializes the JSON of one Example
 * (as above; numbers may also be given as strings, "int64" values as integers only) into the
 * Example's wire bytes, packed encoding. Unknown members are an error.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt or out, NULL json with len > 0, or bad JSON (message
 *   with the byte offset); FERRY_ENOMEM. Message in ferry_last_error.
 * Ownership: borrows rt and json (len bytes); *out gets a new blob holding the bytes, to free with
 *   ferry_blob_free (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_example_from_json(ferry_runtime *rt, const char *json, size_t len, ferry_blob **out);
/* ==== end section: example ==== */


/* ==== section: text and fixed-length records ==== */
/* Text files: every line is one element, a FERRY_DTYPE_BYTES scalar without its line ending ("\n" or
 * "\r\n"), as tf.data's TextLineDataset: empty lines are kept, a last line without a newline is
 * included, an empty file gives no elements (and, as TensorFlow's reader, a "\r" alone at the
 * very end of a file is dropped with the line ending it would have been). Files are read one
 * after another, in order, opened when the iterator reaches them. Errors take one position and
 * end their file (the next call goes on with the next file): FERRY_ENOTFOUND (cannot open),
 * FERRY_EIO, FERRY_ECORRUPT / FERRY_ETRUNCATED (damaged compressed stream); messages name the
 * file and the byte offset. Saved state: the file index and the decompressed offset of the next
 * line (compressed files are inflated up to it on restore). */
typedef struct ferry_text_line_options {
    const char *name; /* shown in stats, the report and the trace; NULL: the op */
    ferry_compression compression;
    size_t buffer_size; /* read buffer per open file; 0: 256 KiB */
} ferry_text_line_options;
/* ferry_dataset_text_lines: the lines of nfiles text files, in order, as described above.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt or out, NULL files with nfiles > 0, a NULL file name,
 *   an invalid compression, or a buffer_size above 1 GiB; FERRY_ENOMEM.
 * Ownership: borrows rt, files (copied) and opts (may be NULL); *out gets a new reference (NULL on
 *   failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_text_lines(ferry_runtime *rt, size_t nfiles, const char *const *files,
                                       const ferry_text_line_options *opts, ferry_dataset **out);

/* Fixed-length records: every file is header_bytes, then records of record_bytes each, then
 * footer_bytes; every record is one element, a FERRY_DTYPE_BYTES scalar of record_bytes bytes, as
 * tf.data's FixedLengthRecordDataset. With compression the sizes count decompressed bytes, and
 * the footer is recognised at the end of the stream by reading record_bytes + footer_bytes
 * ahead. A file whose body (between header and footer) is not a multiple of record_bytes gives
 * its whole records and then one FERRY_ECORRUPT error naming the file, the body length and the
 * offset of the partial record (tf.data refuses such a file); a file shorter than its header
 * and footer is one FERRY_ECORRUPT error. Other errors as text lines. Saved state: the file
 * index and the decompressed offset of the next record. */
typedef struct ferry_fixed_length_options {
    const char *name;     /* shown in stats, the report and the trace; NULL: the op */
    int64_t record_bytes; /* required: 1 to 2^30 */
    int64_t header_bytes; /* skipped at the start of every file; 0 to 2^40 */
    int64_t footer_bytes; /* skipped at the end of every file; 0 to 2^30 */
    ferry_compression compression;
    size_t buffer_size; /* read buffer per open file; 0: 256 KiB */
} ferry_fixed_length_options;
/* ferry_dataset_fixed_length_records: the records of nfiles files, in order, as described above.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt, opts or out, NULL files with nfiles > 0, a NULL file
 *   name, record_bytes outside 1 to 2^30, header_bytes outside 0 to 2^40, footer_bytes outside 0 to
 *   2^30, an invalid compression, or a buffer_size above 1 GiB; FERRY_ENOMEM.
 * Ownership: borrows rt, files (copied) and opts (required: record_bytes); *out gets a new reference
 *   (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_fixed_length_records(ferry_runtime *rt, size_t nfiles, const char *const *files,
                                                 const ferry_fixed_length_options *opts, ferry_dataset **out);
/* ==== end section: text and fixed-length records ==== */

/* ==== section: interleave and flat_map ==== */
/* Makes the dataset for one input element: borrows `in` (valid during the call), writes a new
 * reference to *out. Returns FERRY_OK or an error, which reaches the consumer in the position of
 * that input element. Called from executor workers under parallel interleave (thread-safe with
 * respect to `user`), and again for the open inputs when an iterator is restored, so it must
 * make the same dataset for the same element. The datasets it returns must have the same element
 * spec for every input (checked: a mismatch is a FERRY_ETYPE error in that input's position). */
typedef int (*ferry_dataset_fn)(ferry_context *ctx, const ferry_element *in, ferry_dataset **out, void *user);

typedef struct ferry_interleave_options {
    const char *name;                      /* shown in stats, the report and the trace; NULL: the op */
    int cycle_length;                      /* inputs open at once; 0: 1 when sequential, else the thread count */
    int block_length;                      /* consecutive elements taken from one input; 0: 1 */
    int num_parallel_calls;                /* 0: inline; N threads; FERRY_AUTOTUNE */
    bool relaxed_order;                    /* true: take from whichever input is ready (not deterministic) */
    size_t num_outputs;                    /* 0: taken from the first dataset made (checked for the rest) */
    const ferry_tensor_spec *output_specs; /* borrowed */
    void (*user_free)(void *user);         /* NULL: user is borrowed; else the dataset owns it and calls
                                        this once after its last iterator */
} ferry_interleave_options;
/* ferry_dataset_interleave: tf.data's interleave: cycle_length input elements are open at once (each
 * turned into a dataset by fn), block_length consecutive elements are taken from each in turn,
 * round-robin; when one ends, the next input element takes its slot. The order is tf.data's and,
 * unless relaxed_order, the same for every num_parallel_calls. With num_parallel_calls > 0 (or
 * FERRY_AUTOTUNE: the runtime's cpu_budget less one core for the consumer, at least 1, as for map; the
 * default cycle_length is then the cpu_budget) the next inputs are opened and the open datasets read
 * ahead on the runtime's executor, several files at once; their buffers count in the memory budget.
 * Errors (of the input, of fn, of an inner iterator) take one position each and iteration goes on.
 * With num_outputs 0 the element spec comes from the dataset made for the first input element: this
 * call then iterates the input once to its first element and calls fn once (an empty input gives a
 * dataset of 0 components and no elements). A saved state holds positions only: restore pulls the
 * open input elements again and calls fn for them. Cardinality: FERRY_UNKNOWN (0 for an empty input).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL in, fn or out, or an option out of range
 *   (num_parallel_calls other than FERRY_AUTOTUNE or 0 to 256, cycle_length above 4096, block_length
 *   above 2^20, num_outputs above 4096, NULL or invalid output_specs); FERRY_EMISUSE for a freed in;
 *   FERRY_ENOMEM; with num_outputs 0, the error of the input's first element or of fn for it (FERRY_EUSER
 *   when fn returns a positive code or no dataset, FERRY_EINVAL for a dataset of another runtime).
 * Ownership: borrows in and opts (NULL: cycle 1, block 1, inline, spec from the first dataset); user is
 *   kept until the dataset's last reference goes, then opts->user_free(user) is called when set (when
 *   this call fails the caller keeps user); *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_interleave(ferry_dataset *in, ferry_dataset_fn fn, void *user,
                                       const ferry_interleave_options *opts, ferry_dataset **out);
typedef struct ferry_flat_map_options {
    const char *name;                      /* shown in stats, the report and the trace; NULL: the op */
    size_t num_outputs;                    /* 0: taken from the first dataset made (checked for the rest) */
    const ferry_tensor_spec *output_specs; /* borrowed */
    void (*user_free)(void *user);         /* NULL: user is borrowed; else the dataset owns it and calls
                                        this once after its last iterator */
} ferry_flat_map_options;
/* ferry_dataset_flat_map: interleave with cycle_length 1, block_length 1 and no threads: every
 * dataset in order, input after input (tf.data's flat_map). Same errors and state as interleave; the
 * op is named "flat_map" in stats.
 * Returns: as ferry_dataset_interleave.
 * Ownership: as ferry_dataset_interleave; output_specs (num_outputs entries) is copied.
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_flat_map(ferry_dataset *in, ferry_dataset_fn fn, void *user,
                                     const ferry_flat_map_options *opts, ferry_dataset **out);
/* ==== end section: interleave and flat_map ==== */

/* ==== section: image ==== */
/* Image decoding, as map functions (tf.io.decode_image, decode_jpeg, decode_png): JPEG through
 * libjpeg-turbo, PNG through libspng. An image decodes to a FERRY_DTYPE_UINT8 tensor
 * [height, width, channels] (HWC), rows top to bottom, pixels left to right. 16-bit PNG samples
 * are cut to their high 8 bits; a PNG's transparency (tRNS) becomes its alpha channel.
 *
 * Channels: 0 gives the image's own (JPEG: 1 for grayscale, 3 otherwise; PNG: 1 gray, 2 gray and
 * alpha, 3 RGB or palette, 4 with alpha); 1, 3 or 4 converts: gray to RGB repeats the gray value,
 * RGB to gray is libjpeg's luminance for JPEG and (299 R + 587 G + 114 B) / 1000, rounded, for
 * PNG, alpha is added as 255 or dropped.
 *
 * Errors (each names the format and the decoder's reason): FERRY_EUNSUPPORTED for data that is
 * neither JPEG nor PNG (the message shows its first bytes), for a CMYK JPEG, or for a format this
 * build of ferry has no decoder for; FERRY_ETOOLARGE for an image of more than max_pixels
 * pixels, found from its header before any pixel buffer is allocated; FERRY_ETRUNCATED for data
 * that ends inside the image; FERRY_ECORRUPT for anything else the decoder refuses, warnings
 * included: corrupt data is never handed on as pixels (so an image with "extraneous bytes before
 * marker", which PIL and TensorFlow accept, is an error here); a progressive JPEG of more than
 * 500 scans is FERRY_ETOOLARGE. The decoders never print or exit. */
typedef enum ferry_image_format {
    FERRY_IMAGE_FORMAT_UNKNOWN = 0,
    FERRY_IMAGE_FORMAT_JPEG,
    FERRY_IMAGE_FORMAT_PNG,
} ferry_image_format;

typedef struct ferry_decode_image_options {
    const char *name;       /* shown in stats, the report and the trace; NULL: "decode_image" */
    int channels;           /* 0 (the image's own), 1, 3 or 4, as above */
    int64_t max_pixels;     /* height x width at most; 0: 2^26 (67 M pixels) */
    size_t component;       /* ferry_dataset_decode_image: the component holding the encoded image
                               (a bytes scalar); the others pass through unchanged */
    int num_parallel_calls; /* ferry_dataset_decode_image: as ferry_map_options */
    bool relaxed_order;     /* as ferry_map_options */
    int reorder_window;     /* as ferry_map_options */
} ferry_decode_image_options;

/* ferry_image_sniff: the format of an encoded image, from its first bytes (JPEG: FF D8 FF; PNG: the
 * 8-byte PNG signature).
 * Returns: FERRY_IMAGE_FORMAT_JPEG, FERRY_IMAGE_FORMAT_PNG, or FERRY_IMAGE_FORMAT_UNKNOWN (also for
 *   NULL data or too few bytes).
 * Ownership: borrows data (len bytes).
 * Threads: thread-safe. */
FERRY_API ferry_image_format ferry_image_sniff(const void *data, size_t len);
/* ferry_image_format_name: "jpeg", "png" or "unknown".
 * Returns: the name; "unknown" for values out of range. Never NULL.
 * Ownership: static storage; nothing to free.
 * Threads: thread-safe. */
FERRY_API const char *ferry_image_format_name(ferry_image_format format);
/* ferry_image_decode: decodes one JPEG or PNG image (the format sniffed) into a new uint8 tensor
 * [height, width, channels].
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt or out, NULL or empty data, or channels other than
 *   0, 1, 3 or 4, or a negative max_pixels; otherwise as "Errors" above; FERRY_ENOMEM. Message in
 *   ferry_last_error.
 * Ownership: borrows rt, data (len bytes) and opts (may be NULL; only channels and max_pixels are
 *   read); *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_image_decode(ferry_runtime *rt, const void *data, size_t len,
                                 const ferry_decode_image_options *opts, ferry_tensor **out);
/* A window of an image, in pixels: rows [y, y + height), columns [x, x + width). */
typedef struct ferry_image_window {
    int64_t y, x, height, width;
} ferry_image_window;
/* ferry_image_decode_window: ferry_image_decode of only a window of the image (tf.image's
 * decode_and_crop_jpeg). A JPEG decodes only what the window needs: the rows above it are skipped
 * without computing their pixels (jpeg_skip_scanlines), only the iMCU columns that hold it are
 * decoded (jpeg_crop_scanline), and the rows below it are not decoded at all when the data ends
 * with the end-of-image marker (data that does not is read to its end, so that a truncated image
 * is an error whatever the window; damaged entropy data below the window of an image that does
 * end with the marker goes unseen, as its pixels are never computed). Its pixels are
 * those of the full decode cut to the window, but in the window's first and last column, where
 * chroma upsampling lacks its neighbours and they may differ (tests/test_image.c measures up to 38
 * levels on noisy chroma). A PNG is decoded whole (each row depends on the one above), then cut.
 * Returns: as ferry_image_decode (max_pixels bounds the whole image, not the window: a small window of
 *   a larger image is FERRY_ETOOLARGE); FERRY_EINVAL also for a NULL window or one not inside the
 *   image (found from the header, naming both).
 * Ownership: borrows rt, data (len bytes), window and opts (may be NULL); *out gets a new reference
 *   (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_image_decode_window(ferry_runtime *rt, const void *data, size_t len,
                                        const ferry_image_window *window, const ferry_decode_image_options *opts,
                                        ferry_tensor **out);
/* ferry_dataset_decode_image: a map that decodes component opts->component of every element of in (a
 * bytes scalar holding a JPEG or PNG image) into a uint8 tensor [height, width, channels], as
 * ferry_image_decode, leaving the other components as they are. An image that fails is an error
 * in its element's position, with the element's index and the decoder's reason; the elements
 * after it go on. The op is "map" in stats; its default name is "decode_image".
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL in or out, opts->component out of range or declared other
 *   than a bytes scalar (bytes of unknown rank are accepted, and an element whose component is not
 *   a scalar is a FERRY_ETYPE error in its position), channels other than 0, 1, 3 or 4, or a
 *   negative max_pixels; FERRY_EMISUSE for a freed in; otherwise as ferry_dataset_map.
 * Ownership: borrows in and opts (may be NULL: component 0, the image's channels, inline); *out gets
 *   a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_decode_image(ferry_dataset *in, const ferry_decode_image_options *opts,
                                         ferry_dataset **out);

/* Resizing. Bilinear and area as torchvision, Pillow and TensorFlow 2 compute them: half-pixel
 * centres, separable, and when shrinking with antialias (the default) every input pixel
 * contributes through the kernel stretched by the scale (Pillow's resampling; torchvision's
 * antialias=True). Area averages the input pixels each output pixel covers (a 2x shrink is the
 * 2x2 mean). Results are rounded to nearest. */
typedef enum ferry_resize_method {
    FERRY_RESIZE_BILINEAR = 0,
    FERRY_RESIZE_AREA,
} ferry_resize_method;
typedef struct ferry_resize_options {
    ferry_resize_method method;
    bool no_antialias; /* bilinear: sample the two nearest pixels per axis even when shrinking */
} ferry_resize_options;
/* ferry_image_resize: a new uint8 [height, width, channels] tensor, `image` resized as above.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt, image or out, an image that is not uint8 [h, w, c]
 *   with every dim above 0, a height or width outside 1 to 2^24, or an unknown method;
 *   FERRY_ETOOLARGE; FERRY_ENOMEM. Message in ferry_last_error.
 * Ownership: borrows rt, image and opts (may be NULL: bilinear, antialiased); *out gets a new
 *   reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_image_resize(ferry_runtime *rt, const ferry_tensor *image, int64_t height, int64_t width,
                                 const ferry_resize_options *opts, ferry_tensor **out);
/* Augmentation: one map (FFCV's and DALI's fused decode-crop-resize, with torchvision's and
 * tf.image's semantics) that takes an image through these steps, each optional, in this order,
 * drawing its random numbers from the element's generator (ferry_context_random): the same
 * element gets the same augmentation whichever thread runs it and after save/restore.
 *
 * Input: component opts->component of every element, either encoded (a bytes scalar holding a
 * JPEG or PNG, decoded here as ferry_image_decode with opts->channels and opts->max_pixels) or
 * decoded (uint8 [height, width, channels]).
 *   1. crop (opts->crop), to an output of opts->height x opts->width:
 *      FERRY_IMAGE_CROP_NONE: the whole image, resized to height x width (both 0: not resized).
 *      FERRY_IMAGE_CROP_CENTER: the central height x width window (torchvision's CenterCrop: its
 *        top is round((image height - height) / 2)); where the image is smaller, zeros.
 *      FERRY_IMAGE_CROP_RANDOM: the image padded with opts->padding zero pixels on every side, then
 *        a height x width window placed uniformly in it (torchvision's RandomCrop(size, padding)).
 *      FERRY_IMAGE_CROP_RANDOM_RESIZED: torchvision's RandomResizedCrop: up to 10 attempts each
 *        draw an area fraction uniform in [scale_min, scale_max] and an aspect ratio (width /
 *        height) log-uniform in [ratio_min, ratio_max]; the first box that fits in the image is
 *        placed uniformly; after 10 misses, the largest central box whose ratio is clamped to the
 *        range. The box is resized to height x width (opts->resize, antialiased). From a JPEG only
 *        the box is decoded (its rows and iMCU columns, as ferry_image_decode_window), at the DCT
 *        scale n/8 (libjpeg's scaled decoding) of the smallest n that keeps the box at least the
 *        output's size, when the box is at least twice that size; opts->decode_whole decodes
 *        the whole image first instead. Both take the same box; their pixels differ a little
 *        (tests/test_augment.c: on a smooth picture, a mean of 0.01 levels and at most 4 without
 *        DCT scaling, a mean under 1 and at most 7 with it).
 *   2. flips: left-right with probability opts->flip (0.5 is RandomHorizontalFlip), up-down with
 *      probability opts->vertical_flip.
 *   3. colour (torchvision's ColorJitter, in a fixed order where it draws one: brightness, then
 *      contrast): every value times a factor
 *      uniform in [max(0, 1 - brightness), 1 + brightness]; then blended with the image's mean
 *      luma (0.299 R + 0.587 G + 0.114 B) by a factor c uniform in [max(0, 1 - contrast), 1 +
 *      contrast]: c * value + (1 - c) * mean. Each step clamped to [0, 255]; an alpha channel (the
 *      second of two, the fourth of four) is left as it is.
 *   4. output (opts->dtype): uint8 (values rounded), or float32, float16 or bfloat16 (rounded to
 *      nearest even) as (value / 255 - mean[k]) / std[k] for channel k (ToTensor then Normalize;
 *      a std of 0 means 1); [height, width, channels], or [channels, height, width] with opts->chw.
 * A failure (an image that does not decode, a component that is not an image, a RANDOM window
 * larger than the padded image) is an error in the element's position naming it; the elements
 * after it go on. The op is "map" in stats; its default name is "image_augment". */
typedef enum ferry_image_crop {
    FERRY_IMAGE_CROP_NONE = 0,
    FERRY_IMAGE_CROP_CENTER,
    FERRY_IMAGE_CROP_RANDOM,
    FERRY_IMAGE_CROP_RANDOM_RESIZED,
} ferry_image_crop;
typedef struct ferry_image_augment_options {
    const char *name;            /* shown in stats, the report and the trace; NULL: "image_augment" */
    size_t component;            /* the component holding the image (0 by default) */
    int num_parallel_calls;      /* as ferry_map_options */
    bool relaxed_order;          /* as ferry_map_options */
    int reorder_window;          /* as ferry_map_options */
    int channels;                /* an encoded input: as ferry_decode_image_options (0: its own) */
    int64_t max_pixels;          /* an encoded input: as ferry_decode_image_options (0: 2^26) */
    ferry_image_crop crop;       /* step 1 */
    int64_t height, width;       /* the output's size; required (>= 1) except for CROP_NONE */
    double scale_min, scale_max; /* CROP_RANDOM_RESIZED: both 0 mean 0.08 and 1 */
    double ratio_min, ratio_max; /* CROP_RANDOM_RESIZED: both 0 mean 3/4 and 4/3 */
    bool decode_whole;           /* CROP_RANDOM_RESIZED from a JPEG: decode it whole, then crop */
    int64_t padding;             /* CROP_RANDOM: zero pixels added on every side first */
    ferry_resize_method resize;  /* CROP_NONE and CROP_RANDOM_RESIZED */
    double flip;                 /* step 2: probability of a left-right flip, in [0, 1] */
    double vertical_flip;        /* step 2: probability of an up-down flip, in [0, 1] */
    double brightness;           /* step 3: >= 0 (0: none) */
    double contrast;             /* step 3: >= 0 (0: none) */
    ferry_dtype dtype;           /* step 4: FERRY_DTYPE_UINT8 (also 0), FLOAT32, FLOAT16 or BFLOAT16 */
    bool chw;                    /* step 4: [channels, height, width] */
    float mean[4], std[4];       /* step 4, float outputs, per channel: all 0 mean 0 and 1 */
    /* the map: mixed into the element's generator with the settings the output's spec does not
       show (changing mean, std, resize or padding changes the draws; the dtype, the layout and
       decode_whole do not) */
    uint64_t seed;
} ferry_image_augment_options;
/* ferry_image_augment: the augmentation above applied to one image, its random numbers drawn
 * from a generator seeded with `seed` (the map seeds it from the element's generator).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt, image or out, bad options (as for
 *   ferry_dataset_image_augment) or an image that is neither a bytes scalar nor uint8 [h, w, c]
 *   with every dim above 0 and 1 to 4 channels; a decoder's code (as ferry_image_decode) naming its reason;
 *   FERRY_ETOOLARGE; FERRY_ENOMEM. Message in ferry_last_error.
 * Ownership: borrows rt, image and opts (may be NULL: the image unchanged, as uint8); *out gets a
 *   new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_image_augment(ferry_runtime *rt, const ferry_tensor *image, const ferry_image_augment_options *opts,
                                  uint64_t seed, ferry_tensor **out);
/* ferry_image_random_resized_crop_window: the box that CROP_RANDOM_RESIZED picks (as above) in an
 * image of height x width pixels, with opts' scale and ratio, from a generator seeded with seed.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL window, a height or width below 1, or a scale or
 *   ratio range that is not 0 < min <= max (scale max <= 1). Message in ferry_last_error.
 * Ownership: borrows opts (may be NULL: the default ranges); writes *window.
 * Threads: thread-safe. */
FERRY_API int ferry_image_random_resized_crop_window(int64_t height, int64_t width,
                                                     const ferry_image_augment_options *opts, uint64_t seed,
                                                     ferry_image_window *window);
/* ferry_dataset_image_augment: a map applying ferry_image_augment to component opts->component
 * of every element of in, leaving the others as they are (a bytes scalar or a uint8 tensor of
 * rank 3 or unknown rank is accepted; the output's spec has the dtype, layout and, where known,
 * the size and channels above).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL in or out, a component out of range or declared
 *   neither bytes nor uint8 (or with more than 4 channels), a height or width below 1 (or, for CROP_NONE, only one of them),
 *   a crop, resize or dtype not listed, a probability outside [0, 1], a negative brightness,
 *   contrast or padding, a scale or ratio range that is not 0 < min <= max (scale max <= 1), a
 *   std below 0, channels or max_pixels as ferry_dataset_decode_image; as ferry_dataset_map.
 *   Message in ferry_last_error.
 * Ownership: borrows in and opts (may be NULL: component 0 unchanged, as uint8); *out gets a new
 *   reference.
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_image_augment(ferry_dataset *in, const ferry_image_augment_options *opts,
                                          ferry_dataset **out);
/* An image folder: root/CLASS/FILE, as torchvision's ImageFolder and Keras'
 * image_dataset_from_directory. Listed once, when the dataset is made: files whose name ends in
 * .jpg, .jpeg or .png (any case) directly in a subdirectory of root (hidden ones, deeper ones and
 * others are left out). Class names are those subdirectories, sorted bytewise (strcmp), labels
 * 0, 1, ... in that order; the elements are (the file's bytes: a FERRY_DTYPE_BYTES scalar, the label:
 * an int64 scalar), ordered by label, then by file name. Files are read whole when the iterator
 * reaches them; one that cannot be read is an error in its position (FERRY_ENOTFOUND, FERRY_EIO,
 * FERRY_ETOOLARGE over 1 GiB, FERRY_ENOMEM), naming the path, and the iteration goes on. Decode with ferry_dataset_decode_image. Saved state:
 * the position (a state saved while other files were listed fails with FERRY_EMISMATCH). */
typedef struct ferry_image_folder_options {
    const char *name; /* shown in stats, the report and the trace; NULL: the op */
} ferry_image_folder_options;
/* ferry_dataset_image_folder: the images under root, as described above.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt or out, or a NULL, empty or over 4000-byte root;
 *   FERRY_ENOTFOUND (naming root) when no image file is found; FERRY_EIO when a directory cannot be
 *   read; FERRY_ENOMEM.
 * Ownership: borrows rt, root and opts (may be NULL); *out gets a new reference (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_dataset_image_folder(ferry_runtime *rt, const char *root, const ferry_image_folder_options *opts,
                                         ferry_dataset **out);
/* ferry_image_folder_num_classes: the number of classes of an image folder dataset.
 * Returns: the count; 0 for NULL or a dataset that is not an image folder.
 * Ownership: borrows ds.
 * Threads: thread-safe. */
FERRY_API size_t ferry_image_folder_num_classes(const ferry_dataset *ds);
/* ferry_image_folder_class: the class name of `label` in an image folder dataset.
 * Returns: the name; NULL for NULL, a dataset that is not an image folder, or a label out of range.
 * Ownership: borrows ds; the name is valid while ds lives.
 * Threads: thread-safe. */
FERRY_API const char *ferry_image_folder_class(const ferry_dataset *ds, int64_t label);
/* ==== end section: image ==== */

/* ==== section: state files ==== */
/* What a saved state says of itself (ferry_state_info_get; `ferry state show`). */
typedef struct ferry_state_info {
    uint32_t version;     /* state format version */
    uint64_t fingerprint; /* of the pipeline it was saved from (ferry_dataset_fingerprint) */
    uint64_t seed;        /* pipeline seed */
    int64_t position;     /* elements and errors handed out before the save */
    size_t size;          /* bytes in all */
    size_t payload_size;  /* bytes of per-op state */
} ferry_state_info;

/* ferry_state_info_get: checks a saved state's framing and checksum and fills *out with what it says
 * of itself.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL out, or NULL state with size > 0; FERRY_ECORRUPT,
 *   FERRY_ETRUNCATED or FERRY_EVERSION for a state that fails the checks. Message in ferry_last_error.
 * Ownership: borrows state (size bytes); writes *out.
 * Threads: thread-safe. */
FERRY_API int ferry_state_info_get(const void *state, size_t size, ferry_state_info *out);
/* ferry_dataset_fingerprint: a fingerprint of the dataset graph (ops, parameters, specs): equal in
 * every process that builds the same pipeline. Callback functions are not part of it (only their
 * options).
 * Returns: the fingerprint; 0 for NULL.
 * Ownership: borrows ds.
 * Threads: thread-safe. */
FERRY_API uint64_t ferry_dataset_fingerprint(const ferry_dataset *ds);
/* ferry_iterator_save_file: saves the state of `it` to `path` crash-safely: a process killed at any
 * moment leaves either the old file or the new one (the state is written to a temporary file in the
 * same directory, which is then renamed over path).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL it or a NULL or empty path; FERRY_EMISUSE for an iterator
 *   already freed; FERRY_ECANCELED for an iterator that its interrupt hook cancelled; FERRY_ENOMEM;
 *   FERRY_EIO naming the path and the failed step. Message on the iterator (ferry_last_error for a
 *   NULL or freed it).

 * Ownership: borrows it and path.
 * Threads: from the thread that iterates. */
FERRY_API int ferry_iterator_save_file(ferry_iterator *it, const char *path);
/* ferry_iterator_restore_file: ferry_iterator_restore from a file written by ferry_iterator_save_file.
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL ds or out, or a NULL or empty path; FERRY_EMISUSE for a
 *   freed ds; FERRY_ENOTFOUND when path does not exist; FERRY_EIO when it cannot be read;
 *   FERRY_ETOOLARGE for a file over 4 GiB; FERRY_ENOMEM; the errors of ferry_iterator_restore for the
 *   state it holds (FERRY_EMISMATCH, FERRY_ECORRUPT, FERRY_ETRUNCATED, FERRY_EVERSION, or the error of a
 *   stage that cannot resume). Errors name the path (ferry_last_error).

 * Ownership: as ferry_iterator_restore; borrows path.
 * Threads: thread-safe with respect to ds. */
FERRY_API int ferry_iterator_restore_file(ferry_dataset *ds, const char *path, const ferry_iterator_options *opts,
                                          ferry_iterator **out);
/* ferry_state_file_read: reads a whole state file into a new blob (for inspection with
 * ferry_state_info_get).
 * Returns: FERRY_OK; FERRY_EINVAL for a NULL rt or out, or a NULL or empty path; FERRY_ENOTFOUND when
 *   path does not exist; FERRY_EIO when it cannot be read (or changes while being read);
 *   FERRY_ETOOLARGE for a file over 4 GiB; FERRY_ENOMEM. Message, naming the path, in ferry_last_error.
 * Ownership: borrows rt (the blob is allocated with it) and path; *out gets a new blob to free with
 *   ferry_blob_free (NULL on failure).
 * Threads: thread-safe. */
FERRY_API int ferry_state_file_read(ferry_runtime *rt, const char *path, ferry_blob **out);

/* ==== end section: state files ==== */

#ifdef __cplusplus
}
#endif
#endif /* FERRY_H */
