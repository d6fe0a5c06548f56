/*
 * stream.h - buffered, optionally decompressing readers over files: what every file format of
 * io/ reads through (TFRecord, text lines, fixed-length records); and the matching buffered,
 * optionally compressing writer.
 *
 * A stream reads one file sequentially through a read buffer (default 256 KiB, as tf.data) and,
 * for GZIP/ZLIB, inflates through zlib (a GZIP file may hold several concatenated members; zero
 * padding after the last one is ignored). Offsets are positions in the decompressed byte stream.
 * Errors name the file and the offset: FERRY_EIO (read failed; errno text), FERRY_ECORRUPT
 * (compressed data is invalid), FERRY_ETRUNCATED (compressed stream ends early), FERRY_ENOTFOUND
 * (cannot open). Errors are sticky: once a read failed, every later read of the stream returns
 * the same error (seek to an earlier offset of a compressed stream restarts it and clears it).
 * A stream is used by one thread at a time. Every byte it holds comes from the runtime's
 * allocator (zlib's included).
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
    size_t buffer_size;       /* 0: 256 KiB */
    ferry__io_fault_fn fault; /* tests only */
    void *fault_user;
} ferry__stream_options;

#define FERRY__STREAM_DEFAULT_BUFFER (256u * 1024u)

/* Opens path for reading. opts may be NULL (plain, default buffer). On failure *out is NULL and
 * st names the path. */
int ferry__stream_open(ferry_runtime *rt, const char *path, const ferry__stream_options *opts, ferry__stream **out,
                       ferry__status *st);
/* A stream over size bytes at data (borrowed: valid until the stream is closed), read exactly as
 * a file would be (same buffering, decompression, fault hook). name is used in messages. */
int ferry__stream_open_memory(ferry_runtime *rt, const char *name, const void *data, size_t size,
                              const ferry__stream_options *opts, ferry__stream **out, ferry__status *st);
void ferry__stream_close(ferry__stream *s);
/* Reads up to n bytes; *got < n only at the end of the stream (then *got may be 0). Large reads
 * go straight from the file (or zlib) into buf, bypassing the read buffer. */
int ferry__stream_read(ferry__stream *s, void *buf, size_t n, size_t *got, ferry__status *st);
/* Zero-copy: makes at least min(n, bytes left) bytes contiguous in the buffer (growing it up to
 * n when needed) and points *p at them; *avail gets how many are there (< n only at the end; it
 * may be more than n: everything buffered). The bytes stay valid until the next call on the
 * stream. Does not consume: see ferry__stream_consume. */
int ferry__stream_peek(ferry__stream *s, size_t n, const uint8_t **p, size_t *avail, ferry__status *st);
/* Consumes n bytes that the last peek made available (n <= *avail). */
void ferry__stream_consume(ferry__stream *s, size_t n);
/* Decompressed offset of the next byte to be read. */
int64_t ferry__stream_offset(const ferry__stream *s);
/* Moves to a decompressed offset (for restore): plain files reposition (pread offsets); for
 * compressed ones, go forward by inflating, or restart and inflate up to it. An offset past the
 * end is FERRY_EOUTOFRANGE (naming the file, the offset and the size). */
int ferry__stream_seek(ferry__stream *s, int64_t offset, ferry__status *st);
/* Size of the file on disk, and whether the stream is compressed. Bytes left is known only for
 * plain files: -1 otherwise. */
int64_t ferry__stream_file_size(const ferry__stream *s);
int64_t ferry__stream_bytes_left(const ferry__stream *s);
bool ferry__stream_compressed(const ferry__stream *s);
const char *ferry__stream_path(const ferry__stream *s);

/* ---- writing ----------------------------------------------------------------------------- */
typedef struct ferry__ostream ferry__ostream;

typedef struct ferry__ostream_options {
    ferry_compression compression;
    int level;          /* zlib level 0..9; 0 here means zlib's default (6) */
    size_t buffer_size; /* 0: 256 KiB */
    /* Test hook: called before each write(2); returns the size to write (smaller: a short
     * write), or -1 to fail that write with ENOSPC. */
    ferry__io_fault_fn fault;
    void *fault_user;
} ferry__ostream_options;

/* Creates (truncates) path for writing. */
int ferry__ostream_open(ferry_runtime *rt, const char *path, const ferry__ostream_options *opts, ferry__ostream **out,
                        ferry__status *st);
/* Appends n bytes. After a failure every later call returns the first error again. */
int ferry__ostream_write(ferry__ostream *o, const void *p, size_t n, ferry__status *st);
/* Uncompressed bytes written so far. */
int64_t ferry__ostream_offset(const ferry__ostream *o);
/* Finishes the compressed stream, writes everything out, fsyncs, closes and frees o (always,
 * also on failure). Returns the first error of the stream's life. NULL-safe. */
int ferry__ostream_close(ferry__ostream *o, ferry__status *st);

#endif
