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
 *   - Options structs are zero-initialized for defaults and passed by pointer; NULL means all
 *     defaults. Fields are only ever added at the end.
 *   - Every *_free / *_unref accepts NULL and does nothing.
 *   - Thread safety: datasets and tensors are immutable and may be shared by any threads. An
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

/* Returns the library's version string ("MAJOR.MINOR.PATCH"), static storage. Thread-safe. */
FERRY_API const char *ferry_version(void);
/* Returns FERRY_VERSION_NUMBER of the library actually linked. Thread-safe. */
FERRY_API int ferry_version_number(void);

/* ---------------------------------------------------------------------------------------------
 * Status codes
 * ------------------------------------------------------------------------------------------- */
#define FERRY_STATUS_MAP(X)                                                                      \
    X(OK, 0, "success")                                                                          \
    X(END, 1, "end of sequence")                                                                 \
    X(EINVAL, -1, "invalid argument")                                                            \
    X(EMISUSE, -2, "API misuse")                                                                 \
    X(ENOMEM, -3, "out of memory")                                                               \
    X(EIO, -4, "I/O error")                                                                      \
    X(ECANCELED, -5, "operation canceled")                                                       \
    X(ECORRUPT, -6, "corrupt data")                                                              \
    X(ETRUNCATED, -7, "truncated data")                                                          \
    X(EUSER, -8, "error raised by a user function")                                              \
    X(ETYPE, -9, "dtype or shape mismatch")                                                      \
    X(ENOTFOUND, -10, "not found")                                                               \
    X(EOUTOFRANGE, -11, "value out of range")                                                    \
    X(EMISMATCH, -12, "saved state does not match this pipeline")                                \
    X(EVERSION, -13, "unsupported format version")                                               \
    X(EUNSUPPORTED, -14, "operation not supported")                                              \
    X(ETOOLARGE, -15, "too large")                                                               \
    X(EBUDGET, -16, "memory budget exceeded")

typedef enum ferry_status {
#define FERRY__STATUS_ENUM(name, value, text) FERRY_##name = (value),
    FERRY_STATUS_MAP(FERRY__STATUS_ENUM)
#undef FERRY__STATUS_ENUM
} ferry_status;

/* Returns a static description of a status code ("out of memory"); never NULL. */
FERRY_API const char *ferry_strerror(int status);
/* Returns the static name of a status code ("FERRY_ENOMEM"); never NULL. */
FERRY_API const char *ferry_error_name(int status);
/* Returns the message of the last failure on this thread of a function that has no handle to
 * carry it (constructors, tensor functions). Valid until the next ferry call on this thread. */
FERRY_API const char *ferry_last_error(void);

/* ---------------------------------------------------------------------------------------------
 * Runtime: worker threads, the allocator hook and the byte budget. Nothing in ferry is global.
 * ------------------------------------------------------------------------------------------- */
typedef struct ferry_runtime ferry_runtime;

/* The allocator hook, in the shape of lua_Alloc: new_size == 0 frees ptr (returns NULL);
 * ptr == NULL allocates; otherwise reallocates. old_size is the size of ptr's block (0 for NULL).
 * It must be callable from any thread. Returning NULL for a request with new_size > 0 is an
 * allocation failure, which ferry reports as FERRY_ENOMEM. */
typedef void *(*ferry_alloc_fn)(void *user, void *ptr, size_t old_size, size_t new_size);

typedef struct ferry_runtime_options {
    ferry_alloc_fn alloc;  /* NULL: malloc/realloc/free */
    void *alloc_user;      /* passed to alloc */
    size_t memory_budget;  /* bytes of buffered elements, all stages together; 0: half of RAM */
    int cpu_budget;        /* threads that may be busy at once under AUTOTUNE; 0: online cores */
} ferry_runtime_options;

typedef struct ferry_runtime_stats {
    size_t bytes_allocated;     /* bytes live through the allocator hook now */
    int64_t blocks_allocated;   /* blocks live through the allocator hook now */
    size_t budget;              /* the byte budget in force */
    size_t budget_used;         /* buffered element bytes counted now */
    size_t budget_used_peak;    /* highest budget_used seen */
    int threads_live;           /* ferry threads running now */
    int64_t threads_started;    /* ferry threads started since creation */
    int cpu_budget;
} ferry_runtime_stats;

/* Creates a runtime. opts: borrowed, may be NULL. Returns FERRY_OK or FERRY_EINVAL/ENOMEM;
 * *out receives a new runtime to free with ferry_runtime_free. Thread-safe. */
FERRY_API int ferry_runtime_create(const ferry_runtime_options *opts, ferry_runtime **out);
/* Frees a runtime. Every dataset, iterator, tensor and element made with it must be gone first:
 * otherwise returns FERRY_EMISUSE and frees nothing. NULL is a no-op returning FERRY_OK. */
FERRY_API int ferry_runtime_free(ferry_runtime *rt);
/* Fills *out with a snapshot of the runtime's counters. Thread-safe. */
FERRY_API int ferry_runtime_stats_get(ferry_runtime *rt, ferry_runtime_stats *out);

/* ---------------------------------------------------------------------------------------------
 * Tensors: dtype, shape and a refcounted immutable buffer. Slices and batch rows share bytes.
 * ------------------------------------------------------------------------------------------- */
#define FERRY_MAX_RANK 8
#define FERRY_UNKNOWN_DIM (-1)

typedef enum ferry_dtype {
    FERRY_DTYPE_INVALID = 0,
    FERRY_BOOL,
    FERRY_INT8,
    FERRY_INT16,
    FERRY_INT32,
    FERRY_INT64,
    FERRY_UINT8,
    FERRY_UINT16,
    FERRY_UINT32,
    FERRY_UINT64,
    FERRY_FLOAT16,
    FERRY_BFLOAT16,
    FERRY_FLOAT32,
    FERRY_FLOAT64,
    FERRY_BYTES, /* a variable-length byte string per entry, like tf.string */
    FERRY_DTYPE_COUNT
} ferry_dtype;

/* Bytes per entry of a numeric dtype (1 for bool); 0 for FERRY_BYTES and invalid dtypes. */
FERRY_API size_t ferry_dtype_size(ferry_dtype dtype);
/* Static name of a dtype ("int64", "bytes"); "invalid" for values out of range. */
FERRY_API const char *ferry_dtype_name(ferry_dtype dtype);

/* A shape: rank -1 means unknown rank; a dim of FERRY_UNKNOWN_DIM means unknown size. */
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

/* Creates a zero-filled tensor of a numeric dtype. dims: borrowed, `rank` entries, each >= 0.
 * *out: a new reference, writable through ferry_tensor_mutable_data until it is shared. */
FERRY_API int ferry_tensor_create(ferry_runtime *rt, ferry_dtype dtype, int rank, const int64_t *dims,
                                  ferry_tensor **out);
/* Wraps caller memory without copying. Takes `data`: release(release_user, data) is called when
 * the last reference goes (release may be NULL for memory that outlives the tensor). nbytes must
 * equal the product of dims times ferry_dtype_size(dtype). Returns a new reference, immutable. */
FERRY_API int ferry_tensor_wrap(ferry_runtime *rt, ferry_dtype dtype, int rank, const int64_t *dims,
                                void *data, size_t nbytes, void (*release)(void *user, void *data),
                                void *release_user, ferry_tensor **out);
/* Creates a FERRY_BYTES tensor by copying n = product(dims) strings. ptrs/lens: borrowed arrays
 * of n entries (ptrs[i] may be NULL when lens[i] == 0). Returns a new reference. */
FERRY_API int ferry_tensor_create_bytes(ferry_runtime *rt, int rank, const int64_t *dims,
                                        const void *const *ptrs, const size_t *lens, ferry_tensor **out);
/* Convenience scalars. Return a new reference. */
FERRY_API int ferry_tensor_scalar_i64(ferry_runtime *rt, int64_t value, ferry_tensor **out);
FERRY_API int ferry_tensor_scalar_f32(ferry_runtime *rt, float value, ferry_tensor **out);
/* Adds a reference; returns t. NULL-safe. Thread-safe. */
FERRY_API ferry_tensor *ferry_tensor_ref(ferry_tensor *t);
/* Drops a reference; frees on the last one. NULL-safe. Thread-safe. */
FERRY_API void ferry_tensor_unref(ferry_tensor *t);

FERRY_API ferry_dtype ferry_tensor_dtype(const ferry_tensor *t);
FERRY_API int ferry_tensor_rank(const ferry_tensor *t);
/* Size of dimension i, or -1 when i is out of range. */
FERRY_API int64_t ferry_tensor_dim(const ferry_tensor *t, int i);
FERRY_API ferry_shape ferry_tensor_shape(const ferry_tensor *t);
/* Number of entries (product of dims; 1 for a scalar). */
FERRY_API int64_t ferry_tensor_num_entries(const ferry_tensor *t);
/* Bytes the tensor's values take: entries * dtype size, or for FERRY_BYTES the string bytes plus
 * 8 bytes of offset per entry. This is what the memory budget counts. */
FERRY_API size_t ferry_tensor_nbytes(const ferry_tensor *t);
/* Pointer to the values of a numeric tensor, row-major; NULL for FERRY_BYTES. Valid while the
 * caller holds a reference. */
FERRY_API const void *ferry_tensor_data(const ferry_tensor *t);
/* Writable pointer, or NULL when the tensor is shared (more than one reference to it or to its
 * buffer), wrapped, or FERRY_BYTES. */
FERRY_API void *ferry_tensor_mutable_data(ferry_tensor *t);
/* Entry i (row-major over all dims) of a FERRY_BYTES tensor. *data valid while the caller holds a
 * reference. Returns FERRY_EINVAL for another dtype or i out of range. */
FERRY_API int ferry_tensor_bytes_get(const ferry_tensor *t, int64_t i, const uint8_t **data, size_t *len);
/* Rows [start, start+count) along dim 0, sharing bytes with t. t: borrowed. Returns a new
 * reference. Requires rank >= 1. */
FERRY_API int ferry_tensor_slice(ferry_tensor *t, int64_t start, int64_t count, ferry_tensor **out);

/* ---------------------------------------------------------------------------------------------
 * Elements: fixed-arity tuples of tensors. An element has exactly one owner.
 * ------------------------------------------------------------------------------------------- */
typedef struct ferry_element ferry_element;

/* Creates an element of n tensors. Takes the n references in tensors[] (also on failure).
 * *out must be freed with ferry_element_free. */
FERRY_API int ferry_element_create(ferry_runtime *rt, size_t n, ferry_tensor *const *tensors, ferry_element **out);
/* Frees an element and drops its tensor references. NULL-safe. */
FERRY_API void ferry_element_free(ferry_element *e);
/* Number of components. */
FERRY_API size_t ferry_element_size(const ferry_element *e);
/* Component i, borrowed: valid until the element is freed or component i is replaced. NULL when
 * i is out of range. */
FERRY_API ferry_tensor *ferry_element_get(const ferry_element *e, size_t i);
/* Replaces component i. Takes t; drops the reference to the old tensor. */
FERRY_API int ferry_element_set(ferry_element *e, size_t i, ferry_tensor *t);
/* Sum of ferry_tensor_nbytes over the components. */
FERRY_API size_t ferry_element_nbytes(const ferry_element *e);

/* ---------------------------------------------------------------------------------------------
 * Callback context: what a map function, predicate or generator can ask of ferry.
 * ------------------------------------------------------------------------------------------- */
typedef struct ferry_context ferry_context;

/* The runtime, to allocate output tensors with. */
FERRY_API ferry_runtime *ferry_context_runtime(ferry_context *ctx);
/* Position of the current element in this op's input stream for this iteration (0-based). */
FERRY_API int64_t ferry_context_index(ferry_context *ctx);
/* Next 64 random bits of a generator seeded from the pipeline seed, the op and the element's
 * index: the same for the same element whichever thread runs the call. */
FERRY_API uint64_t ferry_context_random(ferry_context *ctx);
/* A uniform double in [0, 1) from the same generator. */
FERRY_API double ferry_context_uniform(ferry_context *ctx);
/* True once the iterator that runs this call is being destroyed: a slow callback should return
 * (any status) soon after. */
FERRY_API bool ferry_context_cancelled(ferry_context *ctx);
/* Sleeps up to ns nanoseconds, returning early with FERRY_ECANCELED on cancellation. */
FERRY_API int ferry_context_sleep(ferry_context *ctx, int64_t ns);
/* Records a message for the failure the callback is about to return; returns `status` so that a
 * callback can `return ferry_context_fail(ctx, FERRY_EUSER, "bad label %d", v);`. */
FERRY_API int ferry_context_fail(ferry_context *ctx, int status, const char *fmt, ...) FERRY_PRINTF(3, 4);

/* A map function. It owns `in`: on FERRY_OK it writes the result to *out (which may be `in`
 * itself, changed or not); on failure it frees what it owns, `in` included, leaves *out NULL and
 * returns the code, which reaches the consumer in this element's position. Called from worker
 * threads under parallel map: it must be thread-safe with respect to `user`. */
typedef int (*ferry_map_fn)(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user);

/* A predicate for filter: borrows e, writes *keep. Returns FERRY_OK or an error code. */
typedef int (*ferry_predicate_fn)(ferry_context *ctx, const ferry_element *e, bool *keep, void *user);

/* ---------------------------------------------------------------------------------------------
 * Datasets: immutable, refcounted descriptions. Building one starts no thread.
 * ------------------------------------------------------------------------------------------- */
typedef struct ferry_dataset ferry_dataset;

#define FERRY_AUTOTUNE (-1)
#define FERRY_INFINITE (-1)         /* cardinality of an endless dataset */
#define FERRY_UNKNOWN (-2)          /* cardinality that cannot be known before iterating */

/* Adds a reference; returns ds. NULL-safe. Thread-safe. */
FERRY_API ferry_dataset *ferry_dataset_ref(ferry_dataset *ds);
/* Drops a reference. NULL-safe. Thread-safe. */
FERRY_API void ferry_dataset_unref(ferry_dataset *ds);
/* Static name of the op ("range", "map", ...). */
FERRY_API const char *ferry_dataset_name(const ferry_dataset *ds);
/* Number of components in each element. */
FERRY_API size_t ferry_dataset_num_components(const ferry_dataset *ds);
/* The spec of component i, or FERRY_EINVAL when i is out of range. */
FERRY_API int ferry_dataset_component_spec(const ferry_dataset *ds, size_t i, ferry_tensor_spec *out);
/* Number of elements, FERRY_INFINITE or FERRY_UNKNOWN. */
FERRY_API int64_t ferry_dataset_cardinality(const ferry_dataset *ds);
/* The runtime the dataset belongs to (borrowed). */
FERRY_API ferry_runtime *ferry_dataset_runtime(const ferry_dataset *ds);

/* Every transformation below borrows its input dataset(s) and returns a new reference. */

/* Sources. */
/* Scalars int64 start, start+step, ... up to stop (exclusive). step != 0. */
FERRY_API int ferry_dataset_range(ferry_runtime *rt, int64_t start, int64_t stop, int64_t step, ferry_dataset **out);
/* Slices n tensors along dim 0; all must have the same dim 0. tensors: borrowed (references are
 * taken). Elements share the tensors' bytes. */
FERRY_API int ferry_dataset_from_tensor_slices(ferry_runtime *rt, size_t n, ferry_tensor *const *tensors,
                                               ferry_dataset **out);
/* One element made of the n tensors (borrowed; references taken). */
FERRY_API int ferry_dataset_from_tensors(ferry_runtime *rt, size_t n, ferry_tensor *const *tensors,
                                         ferry_dataset **out);

/* A generator: init makes a fresh state for each iteration (NULL allowed), next produces one
 * element (FERRY_OK, FERRY_END or an error that becomes that element's error), fini frees the
 * state. A restored iterator replays the generator from its start (it cannot seek). */
typedef struct ferry_generator_options {
    int (*init)(ferry_context *ctx, void *user, void **state);
    int (*next)(ferry_context *ctx, void *state, ferry_element **out);
    void (*fini)(void *state, void *user);
    void *user;
    size_t num_components;            /* required */
    const ferry_tensor_spec *specs;   /* borrowed, num_components entries; required */
    int64_t cardinality;              /* 0 means FERRY_UNKNOWN; use FERRY_INFINITE if endless */
} ferry_generator_options;
FERRY_API int ferry_dataset_generator(ferry_runtime *rt, const ferry_generator_options *opts, ferry_dataset **out);

/* map. */
typedef struct ferry_map_options {
    int num_parallel_calls;          /* 0: inline on the caller's thread; N > 0 threads; FERRY_AUTOTUNE */
    bool relaxed_order;              /* true: hand results out as they finish (not deterministic) */
    int reorder_window;              /* results in flight and finished at most; 0: default */
    size_t num_outputs;              /* 0: outputs have the input's spec */
    const ferry_tensor_spec *output_specs; /* borrowed, num_outputs entries; outputs are checked */
    uint64_t seed;                   /* mixed into the per-element random generators */
} ferry_map_options;
FERRY_API int ferry_dataset_map(ferry_dataset *in, ferry_map_fn fn, void *user, const ferry_map_options *opts,
                                ferry_dataset **out);
FERRY_API int ferry_dataset_filter(ferry_dataset *in, ferry_predicate_fn fn, void *user, ferry_dataset **out);

/* Batching. */
FERRY_API int ferry_dataset_batch(ferry_dataset *in, int64_t batch_size, bool drop_remainder, ferry_dataset **out);
typedef struct ferry_padded_batch_options {
    /* Per component (num_components entries) or NULL: pad every dim to the batch's longest.
     * A dim of FERRY_UNKNOWN_DIM pads to the longest in the batch; a fixed dim pads to that size
     * and an element longer than it is an error. Borrowed. */
    const ferry_shape *padded_shapes;
    /* Per component scalar tensors of the component's dtype, or NULL entries / NULL array: zero
     * (empty string for bytes). Borrowed. */
    ferry_tensor *const *padding_values;
} ferry_padded_batch_options;
FERRY_API int ferry_dataset_padded_batch(ferry_dataset *in, int64_t batch_size, bool drop_remainder,
                                         const ferry_padded_batch_options *opts, ferry_dataset **out);
/* Splits every component along dim 0 into rows (all components must agree on dim 0). */
FERRY_API int ferry_dataset_unbatch(ferry_dataset *in, ferry_dataset **out);

/* shuffle. */
typedef struct ferry_shuffle_options {
    uint64_t seed;                   /* mixed with the pipeline seed */
    bool same_order_each_epoch;      /* false (default): reshuffle every iteration, as tf.data */
    bool fill_before_first;          /* false (default): fill the buffer progressively so an
                                        epoch starts without a stall; true: tf.data's full fill */
} ferry_shuffle_options;
FERRY_API int ferry_dataset_shuffle(ferry_dataset *in, int64_t buffer_size, const ferry_shuffle_options *opts,
                                    ferry_dataset **out);

/* Counting and combining. count -1: forever. */
FERRY_API int ferry_dataset_repeat(ferry_dataset *in, int64_t count, ferry_dataset **out);
/* count -1: all. */
FERRY_API int ferry_dataset_take(ferry_dataset *in, int64_t count, ferry_dataset **out);
FERRY_API int ferry_dataset_skip(ferry_dataset *in, int64_t count, ferry_dataset **out);
/* Every num_shards-th element starting at index. */
FERRY_API int ferry_dataset_shard(ferry_dataset *in, int64_t num_shards, int64_t index, ferry_dataset **out);
/* Tuples of the inputs' components, ending with the shortest input. inputs: borrowed array. */
FERRY_API int ferry_dataset_zip(size_t n, ferry_dataset *const *inputs, ferry_dataset **out);
/* a's elements, then b's; specs must be compatible. */
FERRY_API int ferry_dataset_concatenate(ferry_dataset *a, ferry_dataset *b, ferry_dataset **out);
/* Prepends an int64 scalar counter starting at start: (i, components...). */
FERRY_API int ferry_dataset_enumerate(ferry_dataset *in, int64_t start, ferry_dataset **out);
/* Drops elements whose production failed; counts them in the stats (errors_dropped). */
FERRY_API int ferry_dataset_ignore_errors(ferry_dataset *in, ferry_dataset **out);

/* Running ahead. buffer_size: N elements, 0 = no buffer (pass-through), FERRY_AUTOTUNE. */
FERRY_API int ferry_dataset_prefetch(ferry_dataset *in, int64_t buffer_size, ferry_dataset **out);
/* path NULL or "": cache in memory (counted against the budget). Otherwise a file cache. */
FERRY_API int ferry_dataset_cache(ferry_dataset *in, const char *path, ferry_dataset **out);

/* ---------------------------------------------------------------------------------------------
 * Iterators: one pass over a dataset.
 * ------------------------------------------------------------------------------------------- */
typedef struct ferry_iterator ferry_iterator;

typedef struct ferry_iterator_options {
    uint64_t seed;       /* the pipeline seed; the same seed gives the same stream */
    bool warm_start;     /* start background work at creation instead of at the first next */
} ferry_iterator_options;

/* Makes an iterator. ds: borrowed (a reference is taken). opts: borrowed, may be NULL.
 * *out: free with ferry_iterator_free. Thread-safe with respect to ds. */
FERRY_API int ferry_iterator_create(ferry_dataset *ds, const ferry_iterator_options *opts, ferry_iterator **out);
/* Produces the next element: FERRY_OK with *out owned by the caller, FERRY_END (then again
 * FERRY_END), or an error code for the element in this position, with ferry_iterator_error
 * telling which stage failed and why. After an error the iterator can be called again and goes
 * on with the next element. */
FERRY_API int ferry_iterator_next(ferry_iterator *it, ferry_element **out);
/* The message of the last failure of this iterator; "" when none. Valid until the next call on
 * the iterator. */
FERRY_API const char *ferry_iterator_error(const ferry_iterator *it);
/* Cancels all background work, wakes every blocked thread, joins them and frees everything.
 * Returns promptly even while a producer sits in a slow callback that polls
 * ferry_context_cancelled. NULL-safe. */
FERRY_API void ferry_iterator_free(ferry_iterator *it);

/* Per-stage counters, one entry per dataset node of the pipeline (depth-first, root first). */
typedef struct ferry_stage_stats {
    char name[24];               /* the op: "map", "prefetch", ... */
    int node;                    /* index of this entry */
    int input;                   /* index of its first input, or -1 */
    int64_t elements_out;        /* elements handed to this stage's consumer */
    int64_t bytes_out;
    int64_t errors_out;          /* errors handed to the consumer */
    int64_t errors_dropped;      /* ignore_errors: errors dropped */
    int64_t self_ns;             /* time spent in this stage's own work (estimated by sampling
                                    for inline stages; measured for worker threads) */
    int64_t wait_input_ns;       /* time this stage's consumer side waited for its producers */
    int64_t wait_consumer_ns;    /* time its producers waited for room (consumer too slow) */
    int64_t buffered_elements;   /* in its buffer now */
    int64_t buffered_bytes;
    int64_t buffer_capacity;     /* elements; 0 for stages without a buffer */
    int64_t parallelism;         /* threads working for it; 0 = inline */
} ferry_stage_stats;

/* Copies up to cap entries into out and the number of stages into *count. Call from the thread
 * that iterates. */
FERRY_API int ferry_iterator_stats(ferry_iterator *it, ferry_stage_stats *out, size_t cap, size_t *count);

/* ---------------------------------------------------------------------------------------------
 * Saving and restoring iterators
 * ------------------------------------------------------------------------------------------- */
typedef struct ferry_blob ferry_blob;
FERRY_API const void *ferry_blob_data(const ferry_blob *b);
FERRY_API size_t ferry_blob_size(const ferry_blob *b);
FERRY_API void ferry_blob_free(ferry_blob *b);

/* Writes the state of `it` (the position after the last element handed out) to a new blob.
 * Elements computed ahead are not stored: they are recomputed after restore. */
FERRY_API int ferry_iterator_save(ferry_iterator *it, ferry_blob **out);
/* Makes an iterator over ds that continues from a saved state (borrowed bytes). Fails with
 * FERRY_EMISMATCH for a state of another pipeline, FERRY_ECORRUPT / FERRY_ETRUNCATED for a
 * damaged one, FERRY_EVERSION for a newer format. */
FERRY_API int ferry_iterator_restore(ferry_dataset *ds, const void *state, size_t size,
                                     const ferry_iterator_options *opts, ferry_iterator **out);

/* ---------------------------------------------------------------------------------------------
 * Files and compression (shared by the file formats below)
 * ------------------------------------------------------------------------------------------- */
typedef enum ferry_compression {
    FERRY_COMPRESSION_NONE = 0,
    FERRY_COMPRESSION_GZIP,  /* RFC 1952, the whole stream (tf.data "GZIP") */
    FERRY_COMPRESSION_ZLIB,  /* RFC 1950, the whole stream (tf.data "ZLIB") */
} ferry_compression;

/* ==== section: tfrecord (src/io/tfrecord.c, src/io/files.c) ==== */
/* ==== end section: tfrecord ==== */

/* ==== section: example (src/io/example.c) ==== */
/* ==== end section: example ==== */

/* ==== section: text and fixed-length records (src/io/text.c, src/io/fixed_length.c) ==== */
/* ==== end section: text and fixed-length records ==== */

/* ==== section: interleave and flat_map (src/ops/interleave.c, src/ops/flat_map.c) ==== */
/* Makes the dataset for one input element: borrows `in` (valid during the call), writes a new
 * reference to *out. Returns FERRY_OK or an error, which reaches the consumer in the position of
 * that input element. Called from worker threads under parallel interleave. The datasets it
 * returns must have the same element spec for every input (checked). */
typedef int (*ferry_dataset_fn)(ferry_context *ctx, const ferry_element *in, ferry_dataset **out, void *user);

typedef struct ferry_interleave_options {
    int cycle_length;           /* inputs open at once; 0: 1 when sequential, else the thread count */
    int block_length;           /* consecutive elements taken from one input; 0: 1 */
    int num_parallel_calls;     /* 0: inline; N threads; FERRY_AUTOTUNE */
    bool relaxed_order;         /* true: take from whichever input is ready (not deterministic) */
    size_t num_outputs;         /* 0: taken from the first dataset made (checked for the rest) */
    const ferry_tensor_spec *output_specs; /* borrowed */
} ferry_interleave_options;
FERRY_API int ferry_dataset_interleave(ferry_dataset *in, ferry_dataset_fn fn, void *user,
                                       const ferry_interleave_options *opts, ferry_dataset **out);
/* interleave with cycle_length 1: every dataset in order. */
FERRY_API int ferry_dataset_flat_map(ferry_dataset *in, ferry_dataset_fn fn, void *user, size_t num_outputs,
                                     const ferry_tensor_spec *output_specs, ferry_dataset **out);
/* ==== end section: interleave and flat_map ==== */

/* ==== section: state files (src/core/statefile.c) ==== */
/* What a saved state says of itself (ferry_state_info_get; `ferry state show`). */
typedef struct ferry_state_info {
    uint32_t version;        /* state format version */
    uint64_t fingerprint;    /* of the pipeline it was saved from (ferry_dataset_fingerprint) */
    uint64_t seed;           /* pipeline seed */
    int64_t position;        /* elements and errors handed out before the save */
    size_t size;             /* bytes in all */
    size_t payload_size;     /* bytes of per-op state */
} ferry_state_info;

/* Checks a saved state's framing and checksum and fills *out. state: borrowed. Returns FERRY_OK,
 * FERRY_ECORRUPT, FERRY_ETRUNCATED or FERRY_EVERSION (message in ferry_last_error). */
FERRY_API int ferry_state_info_get(const void *state, size_t size, ferry_state_info *out);
/* A fingerprint of the dataset graph (ops, parameters, specs): equal in every process that
 * builds the same pipeline. Callback functions are not part of it (only their options). */
FERRY_API uint64_t ferry_dataset_fingerprint(const ferry_dataset *ds);
/* Saves the state of `it` to `path` crash-safely: written to a temporary file in the same
 * directory, fsynced, renamed over path, and the directory fsynced. A process killed at any
 * moment leaves either the old file or the new one. Errors name the path (message on it). */
FERRY_API int ferry_iterator_save_file(ferry_iterator *it, const char *path);
/* ferry_iterator_restore from a file written by ferry_iterator_save_file. Errors name the path
 * (ferry_last_error). */
FERRY_API int ferry_iterator_restore_file(ferry_dataset *ds, const char *path, const ferry_iterator_options *opts,
                                          ferry_iterator **out);
/* Reads a whole state file into a new blob (for inspection with ferry_state_info_get). rt gives
 * the allocator. */
FERRY_API int ferry_state_file_read(ferry_runtime *rt, const char *path, ferry_blob **out);
/* ==== end section: state files ==== */

#ifdef __cplusplus
}
#endif
#endif /* FERRY_H */
