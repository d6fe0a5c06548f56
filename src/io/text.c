/*
 * text.c - `text_lines`: the lines of text files, one FERRY_DTYPE_BYTES scalar per line, as tf.data's
 * TextLineDataset.
 *
 * Objects: a file-list source (io.h, files_iter.c): the dataset holds copies of the file names
 * and the read options, the iterator the index of the current file and its open stream
 * (stream.h: buffered, optionally inflating). files_iter.c walks the list (files are read one
 * after another, opened when the iterator reaches them and closed at their end) and saves the
 * position; this file reads lines from an open file and checks a restored offset.
 *
 * Lines: a line ends at "\n"; one "\r" before it is dropped too. The bytes after the last "\n"
 * are a last line when, after dropping one trailing "\r", they are not empty (TensorFlow's
 * InputBuffer::ReadLine does the same, so "a\n\r" is one line "a"). The scan peeks at the
 * stream's buffer (zero copy) and asks for twice as much whenever a line is longer than what is
 * buffered, so a long line costs amortised linear time; each line is copied once, into its
 * tensor.
 *
 * Errors take one position (files_iter.c): a file that cannot be opened, a read error or a
 * damaged compressed stream (the stream names the file and offset) is that position's error, and
 * the next call goes on with the next file (a damaged file cannot be trusted past its first error).
 *
 * Save/restore: (file index, decompressed offset of the next line), written and read by
 * files_iter.c. Restore (text_restore) validates both: the index is at most the number of files
 * and a nonzero offset must follow a "\n" in that file or be its end (checked by reading around
 * it after seeking); a file the state says was open is reopened and positioned at once, so a bad
 * state fails the restore instead of the stream.
 *
 * Threads: none; the iterator runs on its consumer's thread.
 */
#include "io/io.h"

#include <string.h>

#define TEXT_MIN_PEEK 4096

static int make_line(ferry_runtime *rt, const uint8_t *p, size_t len, ferry_element **out, ferry__status *st) {
    ferry_tensor *t;
    int rc = ferry__tensor_new_bytes(rt, 0, NULL, len, &t, st);
    if (rc) return rc;
    ferry__tensor_offsets(t)[1] = len;
    if (len) memcpy(ferry__tensor_blob_mut(t), p, len);
    ferry_element *e = ferry__element_new(rt, 1);
    if (!e) {
        ferry_tensor_unref(t);
        return ferry__fail(st, FERRY_ENOMEM, "text_lines: allocating an element failed");
    }
    e->t[0] = t;
    *out = e;
    return FERRY_OK;
}

/* The next line of the open file: FERRY_OK, FERRY_END (no more lines in it), or an error. */
static int read_line(ferry__files_it *it, ferry_element **out, ferry__status *st) {
    size_t want = 1, scanned = 0;
    for (;;) {
        const uint8_t *p;
        size_t avail;
        int rc = ferry__stream_peek(it->s, want, &p, &avail, st);
        /* A stream that fails still hands out the bytes it made before the failure: a line
         * complete before it is a line, wherever the read stopped, so the error lands at the same
         * position however the stream was read (or restored). */
        const uint8_t *nl = scanned < avail ? memchr(p + scanned, '\n', avail - scanned) : NULL;
        if (rc && !nl) return rc;
        if (nl) {
            size_t len = (size_t)(nl - p);
            size_t keep = len > 0 && p[len - 1] == '\r' ? len - 1 : len;
            rc = make_line(it->base.ctx.rt, p, keep, out, st);
            if (rc == FERRY_OK) ferry__stream_consume(it->s, len + 1);
            return rc;
        }
        if (avail < want) { /* end of the stream: the rest is the last line */
            size_t keep = avail > 0 && p[avail - 1] == '\r' ? avail - 1 : avail;
            if (keep == 0) {
                ferry__stream_consume(it->s, avail);
                return FERRY_END;
            }
            rc = make_line(it->base.ctx.rt, p, keep, out, st);
            if (rc == FERRY_OK) ferry__stream_consume(it->s, avail);
            return rc;
        }
        scanned = avail;
        if (avail > SIZE_MAX / 2)
            return ferry__fail(st, FERRY_ETOOLARGE, "text_lines: '%s': a line at offset %lld is too long",
                               ferry__stream_path(it->s), (long long)ferry__stream_offset(it->s));
        want = FERRY__MAX(2 * avail, (size_t)TEXT_MIN_PEEK);
    }
}

/* Positions the restored iterator at (file, offset), checking that offset starts a line. */
static int text_restore(ferry__files_it *it, uint64_t file, int64_t off, ferry__status *st) {
    const ferry__files_ds *ds = (const ferry__files_ds *)it->base.ds;
    if (!ferry__files_state_ok(ds, file, off))
        return ferry__fail(st, FERRY_ECORRUPT, "text_lines: state corrupt: file %llu offset %lld (there are %zu files)",
                           (unsigned long long)file, (long long)off, ds->nfiles);
    it->file = (size_t)file;
    if (off == 0) return FERRY_OK;
    int rc = ferry__files_open(it, st);
    if (!rc) rc = ferry__stream_seek(it->s, off - 1, st);
    const uint8_t *p;
    size_t avail = 0;
    if (!rc) rc = ferry__stream_peek(it->s, 2, &p, &avail, st);
    /* A line starts after a "\n", or the offset is the end of the file (after a last line
     * without one). */
    if (!rc && (avail < 1 || (p[0] != '\n' && avail != 1)))
        rc = ferry__fail(st, FERRY_ECORRUPT, "text_lines: state corrupt: offset %lld of '%s' does not start a line",
                         (long long)off, ds->files[file]);
    if (!rc) ferry__stream_consume(it->s, 1);
    if (rc) {
        if (rc != FERRY_ECORRUPT) ferry__status_prefix(st, "text_lines: restoring");
        return rc == FERRY_EOUTOFRANGE ? FERRY_ECORRUPT : rc;
    }
    return FERRY_OK;
}

static const ferry__iter_vtable text_iter_vt = {ferry__files_next, ferry__files_save, NULL, ferry__files_destroy};
static const ferry__files_reader text_reader = {"text_lines", &text_iter_vt, NULL, read_line, text_restore};

int ferry_dataset_text_lines(ferry_runtime *rt, size_t nfiles, const char *const *files,
                             const ferry_text_line_options *opts, ferry_dataset **out) {
    const char *fn = __func__;
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", fn);
    *out = NULL;
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", fn);
    int rc = ferry__files_check_names(fn, nfiles, files);
    if (!rc && opts) rc = ferry__check_name(fn, opts->name);
    if (rc) return rc;
    ferry_text_line_options o = {0};
    if (opts) o = *opts;
    ferry_dataset *ds;
    rc = ferry__files_dataset_new(rt, fn, &text_reader, sizeof(ferry__files_ds), nfiles, files, o.compression,
                                  o.buffer_size, &ds);
    if (rc) return rc;
    ferry__dataset_hash_i64(ds, o.compression);
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}
