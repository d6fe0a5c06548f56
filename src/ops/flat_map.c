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

int ferry_dataset_flat_map(ferry_dataset *in, ferry_dataset_fn fn, void *user, const ferry_flat_map_options *opts,
                           ferry_dataset **out) {
    ferry_interleave_options o = {
        .name = opts ? opts->name : NULL,
        .cycle_length = 1,
        .block_length = 1,
        .num_parallel_calls = 0,
        .relaxed_order = false,
        .num_outputs = opts ? opts->num_outputs : 0,
        .output_specs = opts ? opts->output_specs : NULL,
        .user_free = opts ? opts->user_free : NULL,
    };
    return ferry__dataset_interleave_named(__func__, "flat_map", in, fn, user, &o, out);
}
