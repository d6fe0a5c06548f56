/*
 * ops.h - what op files share: the core protocol plus small helpers for checking arguments of
 * transformation constructors. Op files include only this header (and never each other).
 */
#ifndef FERRY_OPS_H
#define FERRY_OPS_H

#include <string.h>

#include "core/core.h"

/* Common prologue of a transformation constructor: clears the last error, checks `out` and the
 * input dataset. Returns from the calling function on failure. */
#define FERRY__OP_PROLOGUE(fn, in, out)                                                          \
    do {                                                                                         \
        ferry__clear_last_error();                                                               \
        FERRY__CHECK_ARG((out) != NULL, FERRY_EINVAL, fn ": argument 'out' is NULL");             \
        *(out) = NULL;                                                                           \
        int op_rc_ = ferry__check_dataset((in), fn, "in");                                       \
        if (op_rc_) return op_rc_;                                                               \
    } while (0)

/* batch.c: the row stacker behind batch, shared with the parallel map that builds whole batches
 * for a batch right above it (map_and_batch fusion). One thread at a time. */
typedef struct ferry__stack ferry__stack;
/* A stacker for rows of `ncomp` components, batches of up to n rows. */
int ferry__stack_new(ferry_runtime *rt, size_t ncomp, int64_t n, ferry__stack **out, ferry__status *st);
void ferry__stack_free(ferry__stack *s);
/* Adds e (borrowed) as row k (0, 1, ... in order; row 0 starts a batch). On a failure (arity,
 * dtype or shape unlike row 0's, memory) returns the error with batch's message and adds
 * nothing; rows 0..k-1 stay (finish them, or reset; a failed row 0 needs a reset). */
int ferry__stack_add(ferry__stack *s, int64_t k, const ferry_element *e, ferry__status *st);
/* The batch of the k rows added: *out a new element. Resets the stacker either way. */
int ferry__stack_finish(ferry__stack *s, int64_t k, ferry_element **out, ferry__status *st);
/* Drops the rows held. */
void ferry__stack_reset(ferry__stack *s);

/* map.c: map_and_batch fusion. batch_make sets ictx.fuse_batch for its map input when
 * ferry__batch_fuses; the map's workers then stack whole batches (ferry__map_is_fused). */
bool ferry__map_is_fused(const ferry__iter *it);
/* ds is a map with worker threads (num_parallel_calls != 0). */
bool ferry__map_is_parallel(const ferry_dataset *ds);
/* ds is a map whose iterators fuse with a batch of n rows above it (unless restored from a
 * state that carries relaxed-order ranges). */
bool ferry__map_would_fuse(const ferry_dataset *ds, int64_t n);
/* batch.c: ds is a batch fused into the parallel map below it. */
bool ferry__batch_fuses(const ferry_dataset *ds);
/* Returned by ferry__map_next_batch when no whole batch starts at the map's position. */
#define FERRY__NOT_BATCH 1000 /* positive, unlike errors, and not FERRY_END */
/* The next whole batch of a fused map: FERRY_OK with *out and *rows (fewer than the batch size
 * only at the input's end), FERRY_END, an error (cancellation), or FERRY__NOT_BATCH: an error
 * inside a batch shifted the batch boundaries, and the caller batches row by row with the map's
 * ordinary next (which hands out single rows of the stacked batches). */
int ferry__map_next_batch(ferry__iter *it, ferry_element **out, int64_t *rows, ferry__status *st);
/* batch tells its fused map that its next batch starts at the map's position (after a batch it
 * made row by row: an error inside a batch moved the boundaries); the workers then align their
 * chunks to it, so whole batches come back. */
void ferry__map_batch_boundary(ferry__iter *it);

/* interleave.c: interleave published under another op name and API name (flat_map uses it). */
int ferry__dataset_interleave_named(const char *api, const char *name, ferry_dataset *in, ferry_dataset_fn fn,
                                    void *user, const ferry_interleave_options *opts, ferry_dataset **out);

/* file_cache.c: the file cache behind ferry_dataset_cache for a non-empty path. Borrows `in` and
 * `path`; *out: a new reference. Sets the last error on failure. */
int ferry__dataset_file_cache(ferry_dataset *in, const char *path, ferry_dataset **out);

/* file_cache.c: test hook for the cache file I/O. Before each operation `fault(user, op, offset,
 * size)` returns the size to use (smaller: a short read or write), or a negative errno value to
 * fail it (-EIO, -ENOSPC). op: 'r' read, 'w' write, 's' fsync, 'n' rename. NULL removes the hook.
 * Process-wide; tests only. */
typedef long (*ferry__file_cache_fault_fn)(void *user, int op, int64_t offset, size_t size);
void ferry__file_cache_set_fault(ferry__file_cache_fault_fn fault, void *user);

#endif
