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
#define FERRY__OP_PROLOGUE(in, opts, out)                                                                              \
    do {                                                                                                               \
        ferry__clear_last_error();                                                                                     \
        FERRY__CHECK_ARG((out) != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);                         \
        *(out) = NULL;                                                                                                 \
        int op_rc_ = ferry__check_dataset((in), __func__, "in");                                                       \
        if (!op_rc_ && (opts)) op_rc_ = ferry__check_name(__func__, (opts)->name);                                     \
        if (op_rc_) return op_rc_;                                                                                     \
    } while (0)

/* batch.c: the row stacker behind batch, shared with map_and_batch (whose map workers stack whole
 * batches). One thread at a time. */
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

/* batch.c: a batch of up to n rows pulled one by one with pull(arg, ...) (a position: an element,
 * END or an error), exactly as batch makes one: an input error replaces the batch (its rows are
 * dropped), rows that do not stack make it an ETYPE error once the batch's positions are read,
 * and a short last batch is dropped when drop. *ended is set when the input ended. */
typedef int (*ferry__pull_fn)(void *arg, ferry_element **out, ferry__status *st);
int ferry__batch_rows(ferry__stack *s, int64_t n, bool drop, ferry__pull_fn pull, void *arg, bool *ended,
                      ferry_element **out, ferry__status *st);

/* map.c: the parallel map engine that stacks whole batches, for map_and_batch. */
/* ds is a parallel map in input order with the default window: map_and_batch may replace a
 * batch of n rows over it. */
bool ferry__map_fusable(const ferry_dataset *ds, int64_t n);
/* An iterator of the map `map` (state: its saved state, tag first, or NULL) whose workers stack
 * batches of n rows when that pays; its records go to `node`'s stats. Its next hands out single
 * positions (rows of stacked batches as row slices). */
int ferry__map_make_batched(ferry_dataset *map, ferry_dataset *node, int64_t n, const ferry__ictx *ctx,
                            ferry__reader *state, ferry__iter **out, ferry__status *st);
/* The iterator stacks whole batches (false when restored from a state with relaxed ranges). */
bool ferry__map_is_fused(const ferry__iter *it);
/* The next whole batch: FERRY_OK with *out and *rows (fewer than n only at the input's end), or
 * FERRY_OK with *out NULL when no whole batch starts at this position (an error inside a batch
 * moved the boundaries: the caller batches row by row with the iterator's next), FERRY_END, or
 * an error (cancellation). */
int ferry__map_next_batch(ferry__iter *it, ferry_element **out, int64_t *rows, ferry__status *st);
/* The caller's next batch starts at the iterator's position (after a batch made row by row); the
 * workers align their chunks to it, so whole batches come back. */
void ferry__map_batch_boundary(ferry__iter *it);

/* map_and_batch.c: the rewrite rule of batch (its vtable's rewrite): a batch of n rows over a
 * fusable map becomes one map_and_batch node. */
void ferry__map_and_batch_rewrite(ferry_dataset *batch, int64_t n, bool drop, ferry_dataset *const *inputs,
                                  ferry_dataset **out);

/* interleave.c: interleave published under another op name and API name (flat_map uses it). */
int ferry__dataset_interleave_named(const char *api, const char *name, ferry_dataset *in, ferry_dataset_fn fn,
                                    void *user, const ferry_interleave_options *opts, ferry_dataset **out);

/* file_cache.c: the file cache behind ferry_dataset_cache for a non-empty path. Borrows `in` and
 * `path`; *out: a new reference. Sets the last error on failure. */
int ferry__dataset_file_cache(ferry_dataset *in, const char *path, const char *name, ferry_dataset **out);


#endif
