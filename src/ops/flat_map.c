/*
 * flat_map.c - `flat_map`: every input element becomes a dataset (a user function) and their
 * elements follow one another, dataset after dataset, in input order.
 *
 * It is interleave with a cycle of one slot, blocks of one element and no threads (see
 * interleave.c for the order, the errors in position and the saved state), published under its
 * own op name so that stats, saved states and fingerprints say "flat_map". Runs on the
 * consumer's thread; no threads or locks of its own.
 */
#include "ops.h"

int ferry_dataset_flat_map(ferry_dataset *in, ferry_dataset_fn fn, void *user, size_t num_outputs,
                           const ferry_tensor_spec *output_specs, ferry_dataset **out) {
    ferry_interleave_options o = {
        .cycle_length = 1,
        .block_length = 1,
        .num_parallel_calls = 0,
        .relaxed_order = false,
        .num_outputs = num_outputs,
        .output_specs = output_specs,
    };
    return ferry__dataset_interleave_named("ferry_dataset_flat_map", "flat_map", in, fn, user, &o, out);
}
