/*
 * text.c - `text_lines`: the lines of text files, one FERRY_BYTES scalar per line, as tf.data's
 * TextLineDataset.
 *
 * Objects: text_ds holds copies of the file names and the read options; text_it holds the index
 * of the current file and its open stream (stream.h: buffered, optionally inflating). Files are
 * read one after another; a file is opened when the iterator reaches it and closed at its end.
 *
 * Lines: a line ends at "\n"; one "\r" before it is dropped too. The bytes after the last "\n"
 * are a last line when, after dropping one trailing "\r", they are not empty (TensorFlow's
 * InputBuffer::ReadLine does the same, so "a\n\r" is one line "a"). The scan peeks at the
 * stream's buffer (zero copy) and asks for twice as much whenever a line is longer than what is
 * buffered, so a long line costs amortised linear time; each line is copied once, into its
 * tensor.
 *
 * Errors take one position: a file that cannot be opened, a read error or a damaged compressed
 * stream (the stream names the file and offset) is that position's error, and the next call
 * goes on with the next file (a damaged file cannot be trusted past its first error).
 *
 * Save/restore: (file index, decompressed offset of the next line). Restore validates both: the
 * index is at most the number of files and a nonzero offset must follow a "\n" in that file or
 * be its end (checked by reading around it after seeking); a file the state says was open is
 * reopened and positioned at once, so a bad state fails the restore instead of the stream.
 *
 * Threads: none; the iterator runs on its consumer's thread.
 */
#include "io/stream.h"

#include <string.h>

#define TEXT_MIN_PEEK 4096

typedef struct text_ds {
    ferry_dataset base;
    size_t nfiles;
    char **files;
    ferry_compression compression;
    size_t buffer_size;
} text_ds;

typedef struct text_it {
    ferry__iter base;
    size_t file;        /* index of the current file */
    ferry__stream *s;   /* open stream of `file`, or NULL */
} text_it;

static int open_file(text_it *it, ferry__status *st) {
    const text_ds *ds = (const text_ds *)it->base.ds;
    ferry__stream_options so = {.compression = ds->compression, .buffer_size = ds->buffer_size};
    int rc = ferry__stream_open(it->base.ctx.rt, ds->files[it->file], &so, &it->s, st);
    if (rc) ferry__status_prefix(st, "text_lines");
    return rc;
}

static void close_file(text_it *it) {
    ferry__stream_close(it->s);
    it->s = NULL;
    it->file++;
}

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
static int read_line(text_it *it, ferry_element **out, ferry__status *st) {
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

static int text_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    text_it *it = (text_it *)it_;
    const text_ds *ds = (const text_ds *)it_->ds;
    while (it->file < ds->nfiles) {
        if (!it->s) {
            int rc = open_file(it, st);
            if (rc) {
                it->file++;
                return rc;
            }
        }
        int rc = read_line(it, out, st);
        if (rc == FERRY_OK) return FERRY_OK;
        close_file(it);
        if (rc != FERRY_END) {
            if (strncmp(st->msg, "text_lines", 10) != 0) ferry__status_prefix(st, "text_lines");
            return rc;
        }
    }
    return FERRY_END;
}

static int text_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    FERRY__UNUSED(st);
    text_it *it = (text_it *)it_;
    ferry__w_u64(w, it->file);
    ferry__w_i64(w, it->s ? ferry__stream_offset(it->s) : 0);
    return FERRY_OK;
}

static void text_destroy(ferry__iter *it_) {
    text_it *it = (text_it *)it_;
    ferry__stream_close(it->s);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable text_iter_vt = {text_next, text_save, NULL, text_destroy};

/* Positions the restored iterator at (file, offset), checking that offset starts a line. */
static int text_restore(text_it *it, ferry__reader *state, ferry__status *st) {
    const text_ds *ds = (const text_ds *)it->base.ds;
    uint64_t file;
    int64_t off;
    int rc = ferry__r_u64(state, &file, st);
    if (!rc) rc = ferry__r_i64(state, &off, st);
    if (rc) return rc;
    if (file > ds->nfiles || off < 0 || (file == ds->nfiles && off != 0))
        return ferry__fail(st, FERRY_ECORRUPT, "text_lines: state corrupt: file %llu offset %lld (there are %zu files)",
                           (unsigned long long)file, (long long)off, ds->nfiles);
    it->file = (size_t)file;
    if (off == 0) return FERRY_OK;
    rc = open_file(it, st);
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

static int text_make(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                     ferry__status *st) {
    text_it *it = ferry__iter_alloc(ds, ctx, &text_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    if (state) {
        int rc = text_restore(it, state, st);
        if (rc) {
            text_destroy(&it->base);
            return rc;
        }
    }
    *out = &it->base;
    return FERRY_OK;
}

static void text_ds_destroy(ferry_dataset *ds_) {
    text_ds *ds = (text_ds *)ds_;
    for (size_t i = 0; ds->files && i < ds->nfiles; i++) ferry__free(ds_->rt, ds->files[i]);
    ferry__free(ds_->rt, ds->files);
}

static const ferry__dataset_vtable text_vt = {text_make, text_ds_destroy};

int ferry_dataset_text_lines(ferry_runtime *rt, size_t nfiles, const char *const *files,
                             const ferry_text_line_options *opts, ferry_dataset **out) {
    static const char *fn = "ferry_dataset_text_lines";
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", fn);
    *out = NULL;
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", fn);
    FERRY__CHECK_ARG(nfiles == 0 || files != NULL, FERRY_EINVAL, "%s: argument 'files' is NULL with nfiles %zu", fn,
                     nfiles);
    for (size_t i = 0; i < nfiles; i++)
        FERRY__CHECK_ARG(files[i] != NULL, FERRY_EINVAL, "%s: files[%zu] is NULL", fn, i);
    ferry_text_line_options o = {0};
    if (opts) o = *opts;
    FERRY__CHECK_ARG(o.compression == FERRY_COMPRESSION_NONE || o.compression == FERRY_COMPRESSION_GZIP ||
                         o.compression == FERRY_COMPRESSION_ZLIB,
                     FERRY_EINVAL, "%s: options.compression is %d; use FERRY_COMPRESSION_NONE, _GZIP or _ZLIB", fn,
                     (int)o.compression);
    FERRY__CHECK_ARG(o.buffer_size <= ((size_t)1 << 30), FERRY_EINVAL,
                     "%s: options.buffer_size is %zu; at most 1 GiB (0: 256 KiB)", fn, o.buffer_size);
    ferry_tensor_spec spec = {.dtype = FERRY_BYTES, .shape = {.rank = 0}};
    ferry_dataset *ds;
    int rc = ferry__dataset_new(rt, &text_vt, "text_lines", sizeof(text_ds), 0, NULL, 1, &spec,
                                nfiles == 0 ? 0 : FERRY_UNKNOWN, &ds);
    if (rc) return rc;
    text_ds *t = (text_ds *)ds;
    t->compression = o.compression;
    t->buffer_size = o.buffer_size;
    if (nfiles) {
        t->files = ferry__calloc(rt, nfiles, sizeof *t->files);
        if (!t->files) {
            ferry_dataset_unref(ds);
            return ferry__set_last_error(FERRY_ENOMEM, "%s: copying the file names failed", fn);
        }
    }
    t->nfiles = nfiles;
    for (size_t i = 0; i < nfiles; i++) {
        t->files[i] = ferry__mem_strdup(&rt->alloc, files[i]);
        if (!t->files[i]) {
            ferry_dataset_unref(ds);
            return ferry__set_last_error(FERRY_ENOMEM, "%s: copying the file names failed", fn);
        }
        ferry__dataset_hash(ds, files[i], strlen(files[i]) + 1);
    }
    ferry__dataset_hash_i64(ds, (int64_t)nfiles);
    ferry__dataset_hash_i64(ds, o.compression);
    ferry__dataset_seal(ds);
    *out = ds;
    return FERRY_OK;
}
