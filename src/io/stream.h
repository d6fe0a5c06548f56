/*
 * stream.h - buffered, optionally decompressing readers over files: what every file format of
 * io/ reads through (TFRecord, text lines, fixed-length records).
 *
 * A stream reads one file sequentially through a read buffer (default 256 KiB, as tf.data) and,
 * for GZIP/ZLIB, inflates through zlib. Offsets are positions in the decompressed byte stream.
 * Errors name the file and the offset: FERRY_EIO (read failed; errno text), FERRY_ECORRUPT
 * (compressed data is invalid), FERRY_ETRUNCATED (compressed stream ends early), FERRY_ENOTFOUND
 * (cannot open). A stream is used by one thread at a time.
 *
 * Fault injection: tests set ferry__stream_options.fault to make reads short or fail with EIO,
 * so the readers above are tested against them without a broken disk.
 */
#ifndef FERRY_IO_STREAM_H
#define FERRY_IO_STREAM_H

#include "core/core.h"

typedef struct ferry__stream ferry__stream;

/* Test hook: called before each read(2) with the raw file offset and the size asked for; returns
 * the size to ask for (smaller: a short read), or -1 to fail that read with EIO. NULL: none. */
typedef long (*ferry__io_fault_fn)(void *user, int64_t raw_offset, size_t want);

typedef struct ferry__stream_options {
    ferry_compression compression;
    size_t buffer_size;          /* 0: 256 KiB */
    ferry__io_fault_fn fault;    /* tests only */
    void *fault_user;
} ferry__stream_options;

int ferry__stream_open(ferry_runtime *rt, const char *path, const ferry__stream_options *opts, ferry__stream **out,
                       ferry__status *st);
void ferry__stream_close(ferry__stream *s);
/* Reads up to n bytes; *got < n only at the end of the stream (then *got may be 0). */
int ferry__stream_read(ferry__stream *s, void *buf, size_t n, size_t *got, ferry__status *st);
/* Zero-copy: makes at least min(n, bytes left) bytes contiguous in the buffer (growing it up to
 * n when needed) and points *p at them; *avail gets how many are there (< n only at the end).
 * The bytes stay valid until the next call on the stream. Does not consume: see
 * ferry__stream_consume. */
int ferry__stream_peek(ferry__stream *s, size_t n, const uint8_t **p, size_t *avail, ferry__status *st);
void ferry__stream_consume(ferry__stream *s, size_t n);
/* Decompressed offset of the next byte to be read. */
int64_t ferry__stream_offset(const ferry__stream *s);
/* Moves to a decompressed offset (for restore): lseek for plain files; for compressed ones,
 * restart and inflate up to it. */
int ferry__stream_seek(ferry__stream *s, int64_t offset, ferry__status *st);
/* Size of the file on disk, and whether the stream is compressed. Bytes left is known only for
 * plain files: -1 otherwise. */
int64_t ferry__stream_file_size(const ferry__stream *s);
int64_t ferry__stream_bytes_left(const ferry__stream *s);
const char *ferry__stream_path(const ferry__stream *s);

#endif
