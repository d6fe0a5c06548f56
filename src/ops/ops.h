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

#endif
