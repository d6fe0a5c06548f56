/*
 * io.h - internal helpers shared by the io/ files and by tests: a dataset over a list of strings
 * (file names), the file-list source that text_lines and fixed_length_records are made of,
 * TFRecord datasets over memory, and test hooks for I/O faults.
 */
#ifndef FERRY_IO_IO_H
#define FERRY_IO_IO_H

#include "core/core.h"
#include "io/stream.h"

/* A source of FERRY_DTYPE_BYTES scalars: the n strings (copied), in the given order, or shuffled each
 * iteration (seed mixed with the iteration seed) or once for all (same_order_each_iteration).
 * op_name: static, the dataset's name ("list_files"). The strings are hashed into the dataset's
 * parameters, so a state saved over another list fails to restore. On failure sets the last
 * error and returns it. */
int ferry__dataset_names(ferry_runtime *rt, const char *op_name, size_t n, const char *const *strings,
                         const ferry_list_files_options *shuffle, ferry_dataset **out);

/* ---- file-list source (files_iter.c) ------------------------------------------------------
 * A dataset that owns copies of its file names and reads them one after another, one open stream
 * at a time; a reader (text_lines, fixed_length_records) supplies only how to read one element of
 * an open file and how to check a restored position. The helper does the rest, the same for every
 * reader: a file is opened when the iterator reaches it; one that cannot be opened is an error
 * position of its own and the next call goes on with the next file; a file ends at FERRY_END or
 * at its first error, which is then that position's error (prefixed with the op's name unless it
 * already starts with it). State: u64 index of the current file, i64 decompressed offset of its
 * stream (0 when no file is open). The dataset is immutable once sealed; an iterator runs on its
 * consumer's thread. */
typedef struct ferry__files_it ferry__files_it;

typedef struct ferry__files_reader {
    const char *name;                  /* static: the op ("text_lines"), the dataset's name and
                                          the prefix of its messages */
    const ferry__iter_vtable *iter_vt; /* static: ferry__files_next, _save and _destroy, and the
                                          op's skip (or NULL) */
    /* Called by next right after it opened a file (not by restore), e.g. to skip a header.
     * NULL: nothing. An error ends the file, as one from read does. */
    int (*begin)(ferry__files_it *it, ferry__status *st);
    /* The next element of the open file it->s: FERRY_OK (*out: a new element), FERRY_END (the file
     * is done) or an error. */
    int (*read)(ferry__files_it *it, ferry_element **out, ferry__status *st);
    /* Restore of a fresh iterator at a saved (file, offset), not yet checked: checks both (see
     * ferry__files_state_ok), sets it->file and, for a nonzero offset, opens the file
     * (ferry__files_open) and positions it->s there at once. */
    int (*restore)(ferry__files_it *it, uint64_t file, int64_t off, ferry__status *st);
} ferry__files_reader;

/* The op's dataset struct starts with this. */
typedef struct ferry__files_ds {
    ferry_dataset base;
    const ferry__files_reader *reader; /* static */
    size_t nfiles;
    char **files; /* nfiles copies, each from the runtime's allocator */
    ferry_compression compression;
    size_t buffer_size; /* of every stream; 0: FERRY__STREAM_DEFAULT_BUFFER */
} ferry__files_ds;

/* The iterator of every file-list dataset (no op adds fields). */
struct ferry__files_it {
    ferry__iter base;
    size_t file;      /* index of the current file */
    ferry__stream *s; /* open stream of `file`, or NULL */
};

/* Checks fn's file-name arguments: files is not NULL when nfiles > 0 and no name is NULL. On
 * failure sets the last error (naming fn) and returns it. */
int ferry__files_check_names(const char *fn, size_t nfiles, const char *const *files);

/* Makes a file-list dataset of `size` bytes (the op's struct, which starts with ferry__files_ds)
 * named reader->name, whose elements are FERRY_DTYPE_BYTES scalars: checks compression and buffer_size
 * (the messages name fn's options), copies the names (checked by ferry__files_check_names) and
 * hashes them and nfiles into the parameters. The caller then sets its own fields, hashes its
 * other parameters and calls ferry__dataset_seal. reader: static; files: borrowed (copied);
 * *out: a new reference. On failure sets the last error, returns it and leaves *out NULL. */
int ferry__files_dataset_new(ferry_runtime *rt, const char *fn, const ferry__files_reader *reader, size_t size,
                             size_t nfiles, const char *const *files, ferry_compression compression, size_t buffer_size,
                             ferry_dataset **out);

/* For ferry__files_reader.restore: whether (file, off) can be a saved position at all: file at
 * most the number of files, off not negative, and 0 past the last file. */
bool ferry__files_state_ok(const ferry__files_ds *ds, uint64_t file, int64_t off);

/* Opens it->file into it->s (which is NULL); an error names the op and the file. */
int ferry__files_open(ferry__files_it *it, ferry__status *st);

/* The iterator vtable's next, save and destroy for every file-list dataset. */
int ferry__files_next(ferry__iter *it, ferry_element **out, ferry__status *st);
int ferry__files_save(ferry__iter *it, ferry__writer *w, ferry__status *st);
void ferry__files_destroy(ferry__iter *it);

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
