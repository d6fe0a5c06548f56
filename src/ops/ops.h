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
