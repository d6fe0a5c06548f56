/*
 * files_iter.c - the file-list source (io.h) that text_lines and fixed_length_records are made
 * of: a dataset owning copies of its file names, and an iterator that walks them in order with
 * one open stream (stream.h) at a time. The reader (ferry__files_reader) knows its file format;
 * this file knows the list.
 *
 * Positions: every element the reader hands out is one; so is a file that cannot be opened (the
 * next call goes on with the next file), and so is the first error inside a file, which ends it
 * (a damaged file cannot be trusted past its first error). An error is prefixed with the op's
 * name unless it already starts with it.
 *
 * Save/restore: (u64 file index, i64 decompressed offset of the open stream, 0 when none is
 * open). Restore reads the pair and hands it to the reader, which checks it for its format and
 * reopens and positions the file at once, so that a bad state fails the restore instead of a
 * later next.
 *
 * Threads: none; the dataset is immutable once sealed and an iterator runs on its consumer's
 * thread.
 */
#include "io.h"

#include <string.h>

static void close_file(ferry__files_it *it) {
    ferry__stream_close(it->s);
    it->s = NULL;
    it->file++;
}

int ferry__files_open(ferry__files_it *it, ferry__status *st) {
    const ferry__files_ds *ds = (const ferry__files_ds *)it->base.ds;
    ferry__stream_options so = {.compression = ds->compression, .buffer_size = ds->buffer_size};
    int rc = ferry__stream_open(it->base.ctx.rt, ds->files[it->file], &so, &it->s, st);
    if (rc) ferry__status_prefix(st, "%s", ds->reader->name);
    return rc;
}

int ferry__files_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    ferry__files_it *it = (ferry__files_it *)it_;
    const ferry__files_ds *ds = (const ferry__files_ds *)it_->ds;
    const ferry__files_reader *r = ds->reader;
    while (it->file < ds->nfiles) {
        int rc = FERRY_OK;
        if (!it->s) {
            rc = ferry__files_open(it, st);
            if (rc) {
                it->file++;
                return rc;
            }
            if (r->begin) rc = r->begin(it, st);
        }
        if (rc == FERRY_OK) rc = r->read(it, out, st);
        if (rc == FERRY_OK) return FERRY_OK;
        close_file(it);
        if (rc != FERRY_END) {
            if (strncmp(st->msg, r->name, strlen(r->name)) != 0) ferry__status_prefix(st, "%s", r->name);
            return rc;
        }
    }
    return FERRY_END;
}

int ferry__files_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    FERRY__UNUSED(st);
    ferry__files_it *it = (ferry__files_it *)it_;
    ferry__w_u64(w, it->file);
    ferry__w_i64(w, it->s ? ferry__stream_offset(it->s) : 0);
    return FERRY_OK;
}

void ferry__files_destroy(ferry__iter *it_) {
    ferry__files_it *it = (ferry__files_it *)it_;
    ferry__stream_close(it->s);
    ferry__iter_release(it_);
}

bool ferry__files_state_ok(const ferry__files_ds *ds, uint64_t file, int64_t off) {
    return file <= ds->nfiles && off >= 0 && !(file == ds->nfiles && off != 0);
}

static int files_make(ferry_dataset *ds_, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                      ferry__status *st) {
    const ferry__files_reader *r = ((const ferry__files_ds *)ds_)->reader;
    ferry__files_it *it = ferry__iter_alloc(ds_, ctx, r->iter_vt, sizeof *it, st);
    if (!it) return st->code;
    if (state) {
        uint64_t file;
        int64_t off;
        int rc = ferry__r_u64(state, &file, st);
        if (!rc) rc = ferry__r_i64(state, &off, st);
        if (!rc) rc = r->restore(it, file, off, st);
        if (rc) {
            ferry__files_destroy(&it->base);
            return rc;
        }
    }
    *out = &it->base;
    return FERRY_OK;
}

static void files_ds_destroy(ferry_dataset *ds_) {
    ferry__files_ds *ds = (ferry__files_ds *)ds_;
    for (size_t i = 0; ds->files && i < ds->nfiles; i++) ferry__free(ds_->rt, ds->files[i]);
    ferry__free(ds_->rt, ds->files);
}

static const ferry__dataset_vtable files_vt = {.make = files_make, .destroy = files_ds_destroy};

int ferry__files_check_names(const char *fn, size_t nfiles, const char *const *files) {
    FERRY__CHECK_ARG(nfiles == 0 || files != NULL, FERRY_EINVAL, "%s: argument 'files' is NULL with nfiles %zu", fn,
                     nfiles);
    for (size_t i = 0; i < nfiles; i++)
        FERRY__CHECK_ARG(files[i] != NULL, FERRY_EINVAL, "%s: files[%zu] is NULL", fn, i);
    return FERRY_OK;
}

int ferry__files_dataset_new(ferry_runtime *rt, const char *fn, const ferry__files_reader *reader, size_t size,
                             size_t nfiles, const char *const *files, ferry_compression compression, size_t buffer_size,
                             ferry_dataset **out) {
    *out = NULL;
    FERRY__CHECK_ARG(compression == FERRY_COMPRESSION_NONE || compression == FERRY_COMPRESSION_GZIP ||
                         compression == FERRY_COMPRESSION_ZLIB,
                     FERRY_EINVAL, "%s: options.compression is %d; use FERRY_COMPRESSION_NONE, _GZIP or _ZLIB", fn,
                     (int)compression);
    FERRY__CHECK_ARG(buffer_size <= ((size_t)1 << 30), FERRY_EINVAL,
                     "%s: options.buffer_size is %zu; at most 1 GiB (0: 256 KiB)", fn, buffer_size);
    FERRY_ASSERT(size >= sizeof(ferry__files_ds));
    ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_BYTES, .shape = {.rank = 0}};
    ferry_dataset *d;
    int rc =
        ferry__dataset_new(rt, &files_vt, reader->name, size, 0, NULL, 1, &spec, nfiles == 0 ? 0 : FERRY_UNKNOWN, &d);
    if (rc) return rc;
    ferry__files_ds *ds = (ferry__files_ds *)d;
    ds->reader = reader;
    ds->compression = compression;
    ds->buffer_size = buffer_size;
    if (nfiles) {
        ds->files = ferry__calloc(rt, nfiles, sizeof *ds->files);
        if (!ds->files) {
            ferry_dataset_unref(d);
            return ferry__set_last_error(FERRY_ENOMEM, "%s: copying the file names failed", fn);
        }
    }
    ds->nfiles = nfiles;
    for (size_t i = 0; i < nfiles; i++) {
        ds->files[i] = ferry__mem_strdup(&rt->alloc, files[i]);
        if (!ds->files[i]) {
            ferry_dataset_unref(d);
            return ferry__set_last_error(FERRY_ENOMEM, "%s: copying the file names failed", fn);
        }
        ferry__dataset_hash(d, files[i], strlen(files[i]) + 1);
    }
    ferry__dataset_hash_i64(d, (int64_t)nfiles);
    *out = d;
    return FERRY_OK;
}
