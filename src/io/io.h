/*
 * io.h - internal helpers shared by the io/ files and by tests: a dataset over a list of strings
 * (file names), TFRecord datasets over memory, and test hooks for I/O faults.
 */
#ifndef FERRY_IO_IO_H
#define FERRY_IO_IO_H

#include "core/core.h"
#include "io/stream.h"

/* A source of FERRY_BYTES scalars: the n strings (copied), in the given order, or shuffled each
 * iteration (seed mixed with the iteration seed) or once for all (same_order_each_iteration).
 * op_name: static, the dataset's name ("list_files"). The strings are hashed into the dataset's
 * parameters, so a state saved over another list fails to restore. On failure sets the last
 * error and returns it. */
int ferry__dataset_names(ferry_runtime *rt, const char *op_name, size_t n, const char *const *strings,
                         const ferry_list_files_options *shuffle, ferry_dataset **out);

/* A TFRecord dataset over one in-memory file (`data`, borrowed: valid while the dataset and its
 * iterators live); `name` is used in messages. opts as ferry_dataset_tfrecord (num_parallel_reads
 * must be 0). Sets the last error on failure. */
int ferry__dataset_tfrecord_memory(ferry_runtime *rt, const char *name, const void *data, size_t size,
                                   const ferry_tfrecord_options *opts, ferry_dataset **out);

/* Test hook: every stream opened by iterators of `ds` (a dataset made by ferry_dataset_tfrecord
 * without parallel reads, or ferry__dataset_tfrecord_memory) gets this fault function. Set it
 * before making iterators. Returns FERRY_EINVAL for another kind of dataset. */
int ferry__tfrecord_set_fault(ferry_dataset *ds, ferry__io_fault_fn fault, void *user);

/* ferry_tfrecord_writer_open with a test hook on every write(2) (see ferry__ostream_options). */
int ferry__tfrecord_writer_open_faulty(ferry_runtime *rt, const char *path, const ferry_tfrecord_writer_options *opts,
                                       ferry__io_fault_fn fault, void *user, ferry_tfrecord_writer **out);

#endif
