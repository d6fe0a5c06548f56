/*
 * fixed_length.c - `fixed_length_records`: files made of a header, records of a fixed size and a
 * footer; one FERRY_DTYPE_BYTES scalar per record, as tf.data's FixedLengthRecordDataset.
 *
 * Objects: a file-list source (io.h, files_iter.c): fl_ds adds the sizes to the copies of the
 * file names and the read options, and the iterator holds the index of the current file and its
 * open stream (stream.h). files_iter.c walks the list (files are read one after another, opened
 * when the iterator reaches them) and saves the position; this file skips a header once a file
 * is opened, reads records, skips records and checks a restored offset.
 *
 * Reading one file: skip header_bytes (read and dropped, so compressed files work too), then
 * peek record_bytes + footer_bytes ahead (twice that when the read buffer is smaller than two
 * records, so that a refill brings at least one record): while that many bytes are there, the
 * first record_bytes are a record. When fewer are left, the stream has ended and what is left is the
 * footer plus what the body could not fill: nothing (the file is done), a partial record (one
 * FERRY_ECORRUPT error naming the file, the body length and the offset of the partial record,
 * after the file's whole records), or less than the footer (the file is shorter than header and
 * footer: FERRY_ECORRUPT). The same look-ahead works for plain and compressed files, so no file
 * size is needed; tf.data rejects a plain file with a partial record before reading it, ferry
 * hands out the whole records first and reports the rest in its position.
 *
 * Errors take one position and end their file (files_iter.c): open failures, read errors,
 * damaged compressed streams (messages from stream.h name the file and the offset), the shape
 * errors above.
 *
 * Save/restore: (file index, decompressed offset of the next record), written and read by
 * files_iter.c; offset 0 means the file is not started (its header not yet skipped). Restore
 * (fl_restore) validates: index at most the number of files, offset 0 or header_bytes + k *
 * record_bytes, and within the file (the file is reopened and positioned at once, so a bad state
 * fails the restore rather than the stream).
 *
 * Threads: none; the iterator runs on its consumer's thread.
 */
#include "io/io.h"

#include <string.h>

#define FL_MAX_RECORD ((int64_t)1 << 30)
#define FL_MAX_HEADER ((int64_t)1 << 40)
#define FL_SKIP_CHUNK ((size_t)64 * 1024)

typedef struct fl_ds {
    ferry__files_ds f;
    int64_t record, header, footer;
} fl_ds;

/* Reads and drops the header of the file just opened. */
static int skip_header(ferry__files_it *it, ferry__status *st) {
    const fl_ds *ds = (const fl_ds *)it->base.ds;
    int64_t left = ds->header;
    while (left > 0) {
        const uint8_t *p;
        size_t avail;
        size_t want = (size_t)FERRY__MIN(left, (int64_t)FL_SKIP_CHUNK);
        int rc = ferry__stream_peek(it->s, want, &p, &avail, st);
        if (rc) return rc;
        size_t take = (size_t)FERRY__MIN((int64_t)avail, left);
        if (take == 0)
            return ferry__fail(st, FERRY_ECORRUPT,
                               "fixed_length_records: '%s' is %lld bytes long, shorter than its header (%lld bytes) "
                               "and footer (%lld bytes)",
                               ds->f.files[it->file], (long long)ferry__stream_offset(it->s), (long long)ds->header,
                               (long long)ds->footer);
        ferry__stream_consume(it->s, take);
        left -= (int64_t)take;
    }
    return FERRY_OK;
}

/* The next record of the open file: FERRY_OK, FERRY_END (the file is done), or an error. */
static int read_record(ferry__files_it *it, ferry_element **out, ferry__status *st) {
    const fl_ds *ds = (const fl_ds *)it->base.ds;
    size_t rb = (size_t)ds->record, need = (size_t)(ds->record + ds->footer);
    const uint8_t *p;
    size_t avail;
    /* A read buffer smaller than two records would be refilled for every record: then ask for
     * two (the stream grows its buffer to that once). */
    size_t buf = ds->f.buffer_size ? ds->f.buffer_size : FERRY__STREAM_DEFAULT_BUFFER;
    size_t want = buf / 2 >= need ? need : 2 * need;
    int rc = ferry__stream_peek(it->s, want, &p, &avail, st);
    /* A stream that fails (damaged compressed data, I/O error) still hands out the bytes it made
     * before the failure: a record complete before it is a record, wherever the read stopped,
     * so the error lands at the same position however the stream was read (or restored). */
    if (rc && avail < need) return rc;
    if (avail >= need) {
        ferry_tensor *t;
        rc = ferry__tensor_new_bytes(it->base.ctx.rt, 0, NULL, rb, &t, st);
        if (rc) return rc;
        ferry__tensor_offsets(t)[1] = rb;
        memcpy(ferry__tensor_blob_mut(t), p, rb);
        ferry_element *e = ferry__element_new(it->base.ctx.rt, 1);
        if (!e) {
            ferry_tensor_unref(t);
            return ferry__fail(st, FERRY_ENOMEM, "fixed_length_records: allocating an element failed");
        }
        e->t[0] = t;
        ferry__stream_consume(it->s, rb);
        *out = e;
        return FERRY_OK;
    }
    /* The stream has ended: avail bytes are left, the footer included. */
    int64_t off = ferry__stream_offset(it->s);
    int64_t total = off + (int64_t)avail;
    int64_t body = total - ds->header - ds->footer;
    const char *path = ds->f.files[it->file];
    if (body < 0)
        return ferry__fail(st, FERRY_ECORRUPT,
                           "fixed_length_records: '%s' is %lld bytes long, shorter than its header (%lld bytes) and "
                           "footer (%lld bytes)",
                           path, (long long)total, (long long)ds->header, (long long)ds->footer);
    if ((int64_t)avail == ds->footer) return FERRY_END;
    ferry__stream_consume(it->s, avail);
    return ferry__fail(st, FERRY_ECORRUPT,
                       "fixed_length_records: '%s': the body (%lld bytes between the %lld-byte header and the "
                       "%lld-byte footer) is not a multiple of record_bytes %lld: the record at offset %lld has "
                       "only %lld bytes",
                       path, (long long)body, (long long)ds->header, (long long)ds->footer, (long long)ds->record,
                       (long long)off, (long long)((int64_t)avail - ds->footer));
}

/* fl_skip: whole records of plain files are skipped by seeking; otherwise next-and-free. */
static int fl_skip(ferry__iter *it_, int64_t n, int64_t *skipped, ferry__status *st) {
    ferry__files_it *it = (ferry__files_it *)it_;
    const fl_ds *ds = (const fl_ds *)it_->ds;
    *skipped = 0;
    while (*skipped < n) {
        if (it->s && !ferry__stream_compressed(it->s)) {
            int64_t left = ferry__stream_bytes_left(it->s) - ds->footer;
            int64_t whole = left > 0 ? left / ds->record : 0;
            if (whole > 1) {
                int64_t k = FERRY__MIN(whole - 1, n - *skipped);
                int rc = ferry__stream_seek(it->s, ferry__stream_offset(it->s) + k * ds->record, st);
                if (rc) return rc;
                *skipped += k;
                continue;
            }
        }
        ferry_element *e = NULL;
        ferry__status tmp;
        int rc = ferry__files_next(it_, &e, &tmp);
        if (rc == FERRY_END) break;
        ferry_element_free(e);
        (*skipped)++;
    }
    return FERRY_OK;
}

static int fl_restore(ferry__files_it *it, uint64_t file, int64_t off, ferry__status *st) {
    const fl_ds *ds = (const fl_ds *)it->base.ds;
    bool ok = ferry__files_state_ok(&ds->f, file, off);
    if (ok && off != 0) ok = off >= ds->header && (off - ds->header) % ds->record == 0;
    if (!ok)
        return ferry__fail(st, FERRY_ECORRUPT,
                           "fixed_length_records: state corrupt: file %llu offset %lld (%zu files, header %lld, "
                           "record %lld bytes)",
                           (unsigned long long)file, (long long)off, ds->f.nfiles, (long long)ds->header,
                           (long long)ds->record);
    it->file = (size_t)file;
    if (off == 0) return FERRY_OK;
    int rc = ferry__files_open(it, st);
    if (!rc) rc = ferry__stream_seek(it->s, off, st);
    if (rc == FERRY_EOUTOFRANGE) {
        ferry__status_prefix(st, "fixed_length_records: state corrupt");
        rc = FERRY_ECORRUPT;
    }
    return rc;
}

static const ferry__iter_vtable fl_iter_vt = {ferry__files_next, ferry__files_save, fl_skip, ferry__files_destroy};
static const ferry__files_reader fl_reader = {"fixed_length_records", &fl_iter_vt, skip_header, read_record,
                                              fl_restore};

int ferry_dataset_fixed_length_records(ferry_runtime *rt, size_t nfiles, const char *const *files,
                                       const ferry_fixed_length_options *opts, ferry_dataset **out) {
    const char *fn = __func__;
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", fn);
    *out = NULL;
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", fn);
    FERRY__CHECK_ARG(opts != NULL, FERRY_EINVAL, "%s: argument 'opts' is NULL; options.record_bytes is required", fn);
    int rc = ferry__files_check_names(fn, nfiles, files);
    if (!rc) rc = ferry__check_name(fn, opts->name);
    if (rc) return rc;
    ferry_fixed_length_options o = *opts;
    FERRY__CHECK_ARG(o.record_bytes > 0 && o.record_bytes <= FL_MAX_RECORD, FERRY_EINVAL,
                     "%s: options.record_bytes is %lld; it must be 1 to %lld", fn, (long long)o.record_bytes,
                     (long long)FL_MAX_RECORD);
    FERRY__CHECK_ARG(o.header_bytes >= 0 && o.header_bytes <= FL_MAX_HEADER, FERRY_EINVAL,
                     "%s: options.header_bytes is %lld; it must be 0 to %lld", fn, (long long)o.header_bytes,
                     (long long)FL_MAX_HEADER);
    FERRY__CHECK_ARG(o.footer_bytes >= 0 && o.footer_bytes <= FL_MAX_RECORD, FERRY_EINVAL,
                     "%s: options.footer_bytes is %lld; it must be 0 to %lld", fn, (long long)o.footer_bytes,
                     (long long)FL_MAX_RECORD);
    ferry_dataset *ds;
    rc = ferry__files_dataset_new(rt, fn, &fl_reader, sizeof(fl_ds), nfiles, files, o.compression, o.buffer_size, &ds);
    if (rc) return rc;
    fl_ds *f = (fl_ds *)ds;
    f->record = o.record_bytes;
    f->header = o.header_bytes;
    f->footer = o.footer_bytes;
    ferry__dataset_hash_i64(ds, o.record_bytes);
    ferry__dataset_hash_i64(ds, o.header_bytes);
    ferry__dataset_hash_i64(ds, o.footer_bytes);
    ferry__dataset_hash_i64(ds, o.compression);
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}
