/*
 * tfrecord.c - TFRecord files: the `tfrecord` source (records of a list of files, of a dataset
 * of file names, or of one in-memory file) and the writer.
 *
 * Framing, per record, little-endian (TensorFlow's record_writer.cc):
 *   u64 length | u32 masked_crc32c(length bytes) | data[length] | u32 masked_crc32c(data)
 *
 * Objects
 *   tfr_ds        immutable: options, and where file names come from: an owned array (also the
 *                 memory case: one name, bytes borrowed from the caller), or input 0, a dataset
 *                 of FERRY_DTYPE_BYTES scalars.
 *   tfr_it        the current file (index or name pulled from the input), its stream, and the
 *                 reader's position flags: `resync` (scan for a valid header before the next
 *                 record), `eof_forced` (the file is over after a truncation or a stream failure)
 *                 and `bad` (bad records dropped so far, for max_bad_records).
 *   names_pass    with num_parallel_reads, the file names pass through this 1:1 op, which holds
 *                 the options that the interleave function (open_one) reads: the interleave
 *                 dataset references it as its input, so it outlives every call.
 *   writer        a ferry__ostream plus the first error's message.
 *
 * Reading one record: peek the 12-byte header; check its CRC; check the length against the
 * bytes left in the file (plain files) before allocating; when the whole record is already in
 * the read buffer, check the data CRC there and copy the data once into the element's tensor;
 * otherwise read the data straight into the tensor (the stream bypasses its buffer for big
 * reads). In compressed files, a length above 1 MiB is read into a buffer that starts at 1 MiB
 * and doubles only as the data arrives, so a forged header cannot make us allocate what is not there.
 *
 * Every error moves forward (see ferry.h): data CRC -> next record; length CRC -> consume one
 * byte and resync (scan for the next offset whose header CRC is valid and whose length fits
 * the file); truncation / damaged compressed data / I/O error -> end of this file. Bad records
 * (corrupt, truncated, too large) may be dropped under max_bad_records; the count is state.
 *
 * State: u8 in_file, then the file (array: i64 index; input: the input's state before the
 * current name was pulled, length-prefixed, or the input's current state when between files),
 * i64 offset of the next record in the decompressed stream, u8 resync, i64 bad. A file ended
 * by eof_forced is saved as finished. Restore reopens the file lazily at the first next and
 * seeks there (compressed files inflate up to it).
 *
 * Threads: none of its own; an iterator is used by one thread at a time. With
 * num_parallel_reads the interleave op runs single-file tfrecord iterators on its workers.
 */
#include <string.h>

#include "base/crc32c.h"
#include "io.h"

#define HEADER 12u
#define FOOTER 4u
#define COMPRESSED_CHUNK ((size_t)1 << 20)
#define HARD_MAX_LEN ((uint64_t)1 << 62)

static inline uint32_t masked_crc(const void *p, size_t n) { return ferry__crc32c_mask(ferry__crc32c(p, n)); }

/* ---- dataset and iterator ------------------------------------------------------------- */
typedef struct tfr_ds {
    ferry_dataset base;
    ferry_tfrecord_options o;
    size_t nfiles; /* array mode */
    char **files;
    const uint8_t *mem; /* memory mode: files[0] names it */
    size_t mem_size;
    bool memory;
    ferry__io_fault_fn fault; /* tests */
    void *fault_user;
} tfr_ds;

typedef struct tfr_it {
    ferry__iter base;
    ferry__iter *input; /* input mode */
    ferry__writer snap; /* input mode: the input's state before the current name */
    char *name;         /* input mode: the current file's name; NULL until pulled */
    int64_t file_index; /* array mode: the current file, or the next when !in_file */
    bool in_file;
    bool eof_forced;
    bool resync;
    ferry__stream *s;
    int64_t start_offset; /* where to start once the current file is opened */
    int64_t bad;
} tfr_it;

static bool input_mode(const tfr_ds *ds) { return ds->base.ninputs == 1; }

static const char *cur_name(const tfr_it *it) {
    const tfr_ds *ds = (const tfr_ds *)it->base.ds;
    return input_mode(ds) ? it->name : ds->files[it->file_index];
}

static void file_done(tfr_it *it) {
    ferry__stream_close(it->s);
    it->s = NULL;
    ferry__free(it->base.ctx.rt, it->name);
    it->name = NULL;
    if (it->in_file && !input_mode((const tfr_ds *)it->base.ds)) it->file_index++;
    it->in_file = false;
    it->eof_forced = false;
    it->resync = false;
    it->start_offset = 0;
}

/* Input mode: pulls the next file name into it->name. END, an error element or a wrong type
 * are returned as such (the position is consumed). */
static int pull_name(tfr_it *it, ferry__status *st) {
    ferry_element *e = NULL;
    int rc = ferry__iter_next(it->input, &e, st);
    if (rc == FERRY_END) return rc;
    if (rc) {
        ferry__status_prefix(st, "tfrecord: the file-name input failed");
        return rc;
    }
    ferry_tensor *t = e->n >= 1 ? e->t[0] : NULL;
    if (!t || t->dtype != FERRY_DTYPE_BYTES || t->rank != 0) {
        rc = ferry__fail(st, FERRY_ETYPE,
                         "tfrecord: the file-name input gave a %s tensor of rank %d; file names must be bytes scalars",
                         t ? ferry_dtype_name(t->dtype) : "missing", t ? t->rank : -1);
        ferry_element_free(e);
        return rc;
    }
    size_t len;
    const uint8_t *p = ferry__tensor_str(t, 0, &len);
    if (len == 0 || memchr(p, 0, len)) {
        rc = ferry__fail(st, FERRY_EINVAL, "tfrecord: the file-name input gave %s",
                         len ? "a name with a NUL byte" : "an empty name");
        ferry_element_free(e);
        return rc;
    }
    it->name = ferry__alloc(it->base.ctx.rt, len + 1);
    if (!it->name) {
        ferry_element_free(e);
        return ferry__fail(st, FERRY_ENOMEM, "tfrecord: copying a file name failed");
    }
    memcpy(it->name, p, len);
    it->name[len] = '\0';
    ferry_element_free(e);
    return FERRY_OK;
}

/* Moves to the next file: FERRY_OK (in_file), FERRY_END, or an error in this position. */
static int next_file(tfr_it *it, ferry__status *st) {
    const tfr_ds *ds = (const tfr_ds *)it->base.ds;
    if (!input_mode(ds)) {
        if (it->file_index >= (int64_t)ds->nfiles) return FERRY_END;
        it->in_file = true;
        return FERRY_OK;
    }
    it->snap.size = 0;
    it->snap.failed = false;
    int rc = ferry__iter_save(it->input, &it->snap, st);
    if (rc) return rc;
    rc = pull_name(it, st);
    if (rc) return rc;
    it->in_file = true;
    return FERRY_OK;
}

static int open_current(tfr_it *it, ferry__status *st) {
    const tfr_ds *ds = (const tfr_ds *)it->base.ds;
    ferry__stream_options so = {.compression = ds->o.compression,
                                .buffer_size = ds->o.buffer_size,
                                .fault = ds->fault,
                                .fault_user = ds->fault_user};
    const char *name = cur_name(it);
    int rc = ds->memory ? ferry__stream_open_memory(it->base.ctx.rt, name, ds->mem, ds->mem_size, &so, &it->s, st)
                        : ferry__stream_open(it->base.ctx.rt, name, &so, &it->s, st);
    if (rc) {
        ferry__status_prefix(st, "tfrecord");
        file_done(it);
        return rc;
    }
    if (it->start_offset > 0) {
        int64_t off = it->start_offset;
        rc = ferry__stream_seek(it->s, off, st);
        if (rc) {
            if (rc == FERRY_EOUTOFRANGE) rc = FERRY_ECORRUPT;
            ferry__status_prefix(st,
                                 "tfrecord: cannot resume at the saved offset %lld (the state does not match "
                                 "the file)",
                                 (long long)off);
            st->code = rc;
            file_done(it);
            return rc;
        }
    }
    return FERRY_OK;
}

static bool droppable(int rc) { return rc == FERRY_ECORRUPT || rc == FERRY_ETRUNCATED || rc == FERRY_ETOOLARGE; }

/* A failure of the stream itself (I/O, damaged compressed data): this file is over. */
static int stream_failed(tfr_it *it, int64_t off, int rc, ferry__status *st) {
    it->eof_forced = true;
    ferry__status_prefix(st, "tfrecord: reading the record at offset %lld", (long long)off);
    st->code = rc;
    return rc;
}

static int truncated(tfr_it *it, ferry__status *st, const char *fmt, ...) FERRY_PRINTF(3, 4);
static int truncated(tfr_it *it, ferry__status *st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ferry__failv(st, FERRY_ETRUNCATED, fmt, ap);
    va_end(ap);
    it->eof_forced = true;
    return FERRY_ETRUNCATED;
}

/* Moves past the record at `off` with data length len (whose header was valid). */
static int skip_record(tfr_it *it, int64_t off, uint64_t len, ferry__status *st) {
    int64_t to = off + (int64_t)(HEADER + FOOTER) + (int64_t)len;
    int rc = ferry__stream_seek(it->s, to, st);
    if (rc == FERRY_EOUTOFRANGE)
        return truncated(it, st,
                         "tfrecord: '%s': truncated record at offset %lld: the stream ends before the end of "
                         "its %llu bytes of data",
                         cur_name(it), (long long)off, (unsigned long long)len);
    if (rc) return stream_failed(it, off, rc, st);
    return FERRY_OK;
}

static int new_record(ferry_runtime *rt, size_t n, ferry_tensor **t, ferry__status *st) {
    int rc = ferry__tensor_new_bytes(rt, 0, NULL, n, t, st);
    if (rc == FERRY_OK) ferry__tensor_offsets(*t)[1] = n;
    return rc;
}

/* Reads len data bytes of the record at `off` (header consumed) into a new tensor. */
static int read_data(tfr_it *it, int64_t off, size_t n, ferry_tensor **out, ferry__status *st) {
    ferry_runtime *rt = it->base.ctx.rt;
    ferry__stream *s = it->s;
    size_t got = 0;
    int rc;
    *out = NULL;
    if (ferry__stream_compressed(s) && n > COMPRESSED_CHUNK) {
        /* The length is not checked by a file size: grow as the bytes arrive. */
        size_t cap = COMPRESSED_CHUNK;
        uint8_t *tmp = ferry__alloc(rt, cap);
        if (!tmp) {
            rc = ferry__fail(st, FERRY_ENOMEM,
                             "tfrecord: '%s': allocating %zu bytes for the record at offset %lld failed", cur_name(it),
                             cap, (long long)off);
            int sk = skip_record(it, off, n, st);
            return sk ? sk : rc;
        }
        while (got < n) {
            if (got == cap) {
                size_t ncap = cap > n / 2 ? n : cap * 2;
                uint8_t *nt = ferry__realloc(rt, tmp, ncap);
                if (!nt) {
                    ferry__free(rt, tmp);
                    rc = ferry__fail(st, FERRY_ENOMEM,
                                     "tfrecord: '%s': growing the buffer of the record at offset %lld "
                                     "to %zu bytes failed",
                                     cur_name(it), (long long)off, ncap);
                    int sk = skip_record(it, off, n, st);
                    return sk ? sk : rc;
                }
                tmp = nt;
                cap = ncap;
            }
            size_t r;
            rc = ferry__stream_read(s, tmp + got, cap - got, &r, st);
            got += r;
            if (rc) {
                ferry__free(rt, tmp);
                return stream_failed(it, off, rc, st);
            }
            if (r == 0) break;
        }
        if (got < n) {
            ferry__free(rt, tmp);
            return truncated(it, st,
                             "tfrecord: '%s': truncated record at offset %lld: the stream ends %zu bytes into "
                             "its %zu bytes of data",
                             cur_name(it), (long long)off, got, n);
        }
        rc = new_record(rt, n, out, st);
        if (rc == FERRY_OK) memcpy(ferry__tensor_blob_mut(*out), tmp, n);
        ferry__free(rt, tmp);
        if (rc) { /* move past the footer too, so that the next call reads the next record */
            const uint8_t *fp;
            size_t fa;
            ferry__status ignored;
            if (ferry__stream_peek(s, FOOTER, &fp, &fa, &ignored) == FERRY_OK)
                ferry__stream_consume(s, FERRY__MIN(fa, (size_t)FOOTER));
        }
        return rc;
    }
    rc = new_record(rt, n, out, st);
    if (rc) {
        int sk = skip_record(it, off, n, st);
        return sk ? sk : rc;
    }
    rc = ferry__stream_read(s, ferry__tensor_blob_mut(*out), n, &got, st);
    if (rc == FERRY_OK && got < n)
        rc = truncated(it, st,
                       "tfrecord: '%s': truncated record at offset %lld: the file ends %zu bytes into its %zu "
                       "bytes of data",
                       cur_name(it), (long long)off, got, n);
    else if (rc) rc = stream_failed(it, off, rc, st);
    if (rc) {
        ferry_tensor_unref(*out);
        *out = NULL;
    }
    return rc;
}

/* Scans forward from the current offset for a header with a valid CRC (and, in plain files, a
 * length that fits). Leaves the stream there, or at the end. */
static int resync(tfr_it *it, ferry__status *st) {
    ferry__stream *s = it->s;
    for (;;) {
        int64_t off = ferry__stream_offset(s);
        const uint8_t *p;
        size_t avail;
        int rc = ferry__stream_peek(s, HEADER, &p, &avail, st);
        if (rc) return stream_failed(it, off, rc, st);
        if (avail < HEADER) {
            ferry__stream_consume(s, avail);
            return FERRY_OK;
        }
        int64_t left = ferry__stream_bytes_left(s);
        size_t last = avail - HEADER;
        for (size_t i = 0; i <= last; i++) {
            if (ferry__load_le32(p + i + 8) != masked_crc(p + i, 8)) continue;
            if (left >= 0) {
                uint64_t after = (uint64_t)left - i - HEADER;
                if ((uint64_t)left < i + HEADER + FOOTER || ferry__load_le64(p + i) > after - FOOTER) continue;
            }
            ferry__stream_consume(s, i);
            return FERRY_OK;
        }
        ferry__stream_consume(s, last + 1);
    }
}

/* Reads one record of the open file: FERRY_OK, FERRY_END (file over) or an error, after which
 * the position has moved forward. */
static int read_one(tfr_it *it, ferry_element **out, ferry__status *st) {
    const tfr_ds *ds = (const tfr_ds *)it->base.ds;
    ferry_runtime *rt = it->base.ctx.rt;
    ferry__stream *s = it->s;
    if (it->eof_forced) return FERRY_END;
    int rc;
    if (it->resync) {
        rc = resync(it, st);
        it->resync = false;
        if (rc) return rc;
    }
    const bool check = !ds->o.skip_crc_check;
    int64_t off = ferry__stream_offset(s);
    const uint8_t *p;
    size_t avail;
    rc = ferry__stream_peek(s, HEADER, &p, &avail, st);
    if (rc) return stream_failed(it, off, rc, st);
    if (avail == 0) return FERRY_END;
    if (avail < HEADER)
        return truncated(it, st,
                         "tfrecord: '%s': truncated record at offset %lld: the file ends %zu bytes into its "
                         "12-byte header",
                         cur_name(it), (long long)off, avail);
    uint64_t len = ferry__load_le64(p);
    if (check) {
        uint32_t stored = ferry__load_le32(p + 8), computed = masked_crc(p, 8);
        if (stored != computed) {
            ferry__stream_consume(s, 1);
            it->resync = true;
            if (off == 0)
                return ferry__fail(st, FERRY_ECORRUPT,
                                   "tfrecord: '%s' is not a TFRecord file (or it is compressed: check the compression "
                                   "option): the header CRC of the record at offset 0 does not match (stored %08x, "
                                   "computed %08x)",
                                   cur_name(it), stored, computed);
            return ferry__fail(st, FERRY_ECORRUPT,
                               "tfrecord: '%s': corrupted length in the record at offset %lld: its header CRC does not "
                               "match (stored %08x, computed %08x); scanning forward for the next valid record",
                               cur_name(it), (long long)off, stored, computed);
        }
    }
    int64_t left = ferry__stream_bytes_left(s);
    if (left >= 0 && ((uint64_t)left < HEADER + FOOTER || len > (uint64_t)left - HEADER - FOOTER))
        return truncated(it, st,
                         "tfrecord: '%s': truncated record at offset %lld: its header claims %llu bytes of "
                         "data, but only %lld bytes follow the header in the file (%llu needed with the CRC)",
                         cur_name(it), (long long)off, (unsigned long long)len, (long long)left - (long long)HEADER,
                         (unsigned long long)len + FOOTER);
    if (len > HARD_MAX_LEN) {
        it->eof_forced = true;
        return ferry__fail(st, FERRY_ETOOLARGE,
                           "tfrecord: '%s': the record at offset %lld is too large: its header "
                           "claims %llu bytes",
                           cur_name(it), (long long)off, (unsigned long long)len);
    }
    if (ds->o.max_record_size && len > ds->o.max_record_size) {
        rc = skip_record(it, off, len, st);
        if (rc) return rc;
        return ferry__fail(st, FERRY_ETOOLARGE,
                           "tfrecord: '%s': the record at offset %lld is too large: %llu bytes, over max_record_size "
                           "(%llu); skipped",
                           cur_name(it), (long long)off, (unsigned long long)len,
                           (unsigned long long)ds->o.max_record_size);
    }
    size_t n = (size_t)len;
    ferry_tensor *t = NULL;
    uint32_t stored;
    if (avail >= HEADER + FOOTER && n <= avail - HEADER - FOOTER) {
        /* The whole record is buffered: check it in place, copy it once. */
        const uint8_t *d = p + HEADER;
        stored = ferry__load_le32(d + n);
        if (check) {
            uint32_t computed = masked_crc(d, n);
            if (stored != computed) {
                ferry__stream_consume(s, HEADER + n + FOOTER);
                return ferry__fail(st, FERRY_ECORRUPT,
                                   "tfrecord: '%s': corrupted data in the record at offset %lld (%zu bytes): its data "
                                   "CRC does not match (stored %08x, computed %08x)",
                                   cur_name(it), (long long)off, n, stored, computed);
            }
        }
        rc = new_record(rt, n, &t, st);
        ferry__stream_consume(s, HEADER + n + FOOTER);
        if (rc) return rc;
        memcpy(ferry__tensor_blob_mut(t), d, n);
    } else {
        ferry__stream_consume(s, HEADER);
        rc = read_data(it, off, n, &t, st);
        if (rc) return rc;
        rc = ferry__stream_peek(s, FOOTER, &p, &avail, st);
        if (rc == FERRY_OK && avail < FOOTER)
            rc = truncated(it, st,
                           "tfrecord: '%s': truncated record at offset %lld: the file ends %zu bytes into its "
                           "4-byte data CRC",
                           cur_name(it), (long long)off, avail);
        else if (rc) rc = stream_failed(it, off, rc, st);
        if (rc) {
            ferry_tensor_unref(t);
            return rc;
        }
        stored = ferry__load_le32(p);
        ferry__stream_consume(s, FOOTER);
        if (check) {
            uint32_t computed = masked_crc(ferry__tensor_blob_mut(t), n);
            if (stored != computed) {
                ferry_tensor_unref(t);
                return ferry__fail(st, FERRY_ECORRUPT,
                                   "tfrecord: '%s': corrupted data in the record at offset %lld (%zu bytes): its data "
                                   "CRC does not match (stored %08x, computed %08x)",
                                   cur_name(it), (long long)off, n, stored, computed);
            }
        }
    }
    ferry_element *e = ferry__element_new(rt, 1);
    if (!e) {
        ferry_tensor_unref(t);
        return ferry__fail(st, FERRY_ENOMEM, "tfrecord: allocating an element failed");
    }
    e->t[0] = t;
    *out = e;
    return FERRY_OK;
}

static int tfr_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    tfr_it *it = (tfr_it *)it_;
    const tfr_ds *ds = (const tfr_ds *)it_->ds;
    for (;;) {
        if (!it->in_file) {
            int rc = next_file(it, st);
            if (rc) return rc;
        }
        if (input_mode(ds) && !it->name) { /* restored inside a file: pull its name again */
            int rc = pull_name(it, st);
            if (rc) {
                if (rc == FERRY_END)
                    rc = ferry__fail(st, FERRY_ECORRUPT,
                                     "tfrecord: restoring: the file-name input has no file at the "
                                     "saved position");
                file_done(it);
                return rc;
            }
        }
        if (!it->s) {
            int rc = open_current(it, st);
            if (rc) return rc;
        }
        for (;;) {
            int rc = read_one(it, out, st);
            if (rc == FERRY_OK) return rc;
            if (rc == FERRY_END) break;
            if (droppable(rc) && (ds->o.max_bad_records < 0 || it->bad < ds->o.max_bad_records)) {
                it->bad++;
                if (it_->stats) atomic_fetch_add_explicit(&it_->stats->dropped, 1, memory_order_relaxed);
                continue;
            }
            return rc;
        }
        file_done(it);
    }
}

static int tfr_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    tfr_it *it = (tfr_it *)it_;
    const tfr_ds *ds = (const tfr_ds *)it_->ds;
    bool in_file = it->in_file && !it->eof_forced;
    ferry__w_u8(w, in_file ? 1 : 0);
    if (!input_mode(ds)) {
        ferry__w_i64(w, it->in_file && !in_file ? it->file_index + 1 : it->file_index);
    } else if (in_file) {
        ferry__w_u64(w, it->snap.size);
        ferry__w_bytes(w, it->snap.data, it->snap.size);
    } else {
        int rc = ferry__iter_save(it->input, w, st);
        if (rc) return rc;
    }
    ferry__w_i64(w, !in_file ? 0 : it->s ? ferry__stream_offset(it->s) : it->start_offset);
    ferry__w_u8(w, in_file && it->resync ? 1 : 0);
    ferry__w_i64(w, it->bad);
    return FERRY_OK;
}

static void tfr_destroy(ferry__iter *it_) {
    tfr_it *it = (tfr_it *)it_;
    ferry__stream_close(it->s);
    ferry__free(it_->ctx.rt, it->name);
    ferry__iter_free(it->input);
    ferry__writer_fini(&it->snap);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable tfr_iter_vt = {tfr_next, tfr_save, NULL, tfr_destroy};

static int restore_state(tfr_it *it, const ferry__ictx *ctx, ferry__reader *r, ferry__status *st) {
    const tfr_ds *ds = (const tfr_ds *)it->base.ds;
    uint8_t in_file, rs;
    int rc = ferry__r_u8(r, &in_file, st);
    if (rc) return rc;
    if (in_file > 1) return ferry__fail(st, FERRY_ECORRUPT, "tfrecord: state corrupt: in_file flag is %u", in_file);
    if (!input_mode(ds)) {
        rc = ferry__r_i64(r, &it->file_index, st);
        if (rc) return rc;
        int64_t max = (int64_t)ds->nfiles - (in_file ? 1 : 0);
        if (it->file_index < 0 || it->file_index > max)
            return ferry__fail(st, FERRY_ECORRUPT, "tfrecord: state corrupt: file index %lld is outside [0, %lld]",
                               (long long)it->file_index, (long long)max);
    } else if (in_file) {
        uint64_t size;
        rc = ferry__r_u64(r, &size, st);
        if (rc) return rc;
        if (size > ferry__r_left(r))
            return ferry__fail(st, FERRY_ETRUNCATED,
                               "tfrecord: state truncated: the file-name input's state claims "
                               "%llu bytes, %zu left",
                               (unsigned long long)size, ferry__r_left(r));
        ferry__reader sub = *r;
        sub.end = sub.p + size;
        rc = ferry__iter_make(ds->base.inputs[0], ctx, &sub, &it->input, st);
        if (rc) return rc;
        if (sub.p != sub.end)
            return ferry__fail(st, FERRY_ECORRUPT,
                               "tfrecord: state corrupt: %zu unread bytes in the file-name input's "
                               "state",
                               (size_t)(sub.end - sub.p));
        ferry__w_bytes(&it->snap, r->p, (size_t)size);
        if (it->snap.failed) return ferry__fail(st, FERRY_ENOMEM, "tfrecord: copying the state failed");
        r->p += size;
    } else {
        rc = ferry__iter_make(ds->base.inputs[0], ctx, r, &it->input, st);
        if (rc) return rc;
    }
    rc = ferry__r_i64(r, &it->start_offset, st);
    if (!rc) rc = ferry__r_u8(r, &rs, st);
    if (!rc) rc = ferry__r_i64(r, &it->bad, st);
    if (rc) return rc;
    if (it->start_offset < 0 || (!in_file && it->start_offset != 0))
        return ferry__fail(st, FERRY_ECORRUPT, "tfrecord: state corrupt: offset %lld", (long long)it->start_offset);
    if (rs > 1 || (rs && !in_file))
        return ferry__fail(st, FERRY_ECORRUPT, "tfrecord: state corrupt: resync flag is %u", rs);
    if (it->bad < 0 || (ds->o.max_bad_records >= 0 && it->bad > ds->o.max_bad_records))
        return ferry__fail(st, FERRY_ECORRUPT, "tfrecord: state corrupt: %lld bad records dropped, the limit is %lld",
                           (long long)it->bad, (long long)ds->o.max_bad_records);
    it->in_file = in_file;
    it->resync = rs;
    return FERRY_OK;
}

static int tfr_make(ferry_dataset *ds_, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                    ferry__status *st) {
    const tfr_ds *ds = (const tfr_ds *)ds_;
    tfr_it *it = ferry__iter_alloc(ds_, ctx, &tfr_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    ferry__writer_init(&it->snap, &ctx->rt->alloc);
    int rc = FERRY_OK;
    if (state) {
        rc = restore_state(it, ctx, state, st);
    } else if (input_mode(ds)) {
        rc = ferry__iter_make(ds_->inputs[0], ctx, NULL, &it->input, st);
    }
    if (rc) {
        tfr_destroy(&it->base);
        return rc;
    }
    *out = &it->base;
    return FERRY_OK;
}

static void tfr_ds_destroy(ferry_dataset *ds_) {
    tfr_ds *ds = (tfr_ds *)ds_;
    if (ds->files)
        for (size_t i = 0; i < ds->nfiles; i++) ferry__free(ds_->rt, ds->files[i]);
    ferry__free(ds_->rt, ds->files);
}

static const ferry__dataset_vtable tfr_vt = {.make = tfr_make, .destroy = tfr_ds_destroy};

static const ferry_tensor_spec record_spec = {.dtype = FERRY_DTYPE_BYTES, .shape = {.rank = 0}};

static int check_options(const char *fn, const ferry_tfrecord_options *opts, ferry_tfrecord_options *o) {
    memset(o, 0, sizeof *o);
    if (opts) *o = *opts;
    FERRY__CHECK_ARG(o->compression == FERRY_COMPRESSION_NONE || o->compression == FERRY_COMPRESSION_GZIP ||
                         o->compression == FERRY_COMPRESSION_ZLIB,
                     FERRY_EINVAL, "%s: options.compression is %d; it must be FERRY_COMPRESSION_NONE, _GZIP or _ZLIB",
                     fn, (int)o->compression);
    FERRY__CHECK_ARG(o->num_parallel_reads >= 0 || o->num_parallel_reads == FERRY_AUTOTUNE, FERRY_EINVAL,
                     "%s: options.num_parallel_reads is %d; it must be >= 0 or FERRY_AUTOTUNE", fn,
                     o->num_parallel_reads);
    FERRY__CHECK_ARG(o->num_parallel_reads <= 256, FERRY_EINVAL,
                     "%s: options.num_parallel_reads is %d; it must be at most 256", fn, o->num_parallel_reads);
    FERRY__CHECK_ARG(o->max_bad_records >= 0 || o->max_bad_records == FERRY_INFINITE, FERRY_EINVAL,
                     "%s: options.max_bad_records is %lld; it must be >= 0, or FERRY_INFINITE for no limit", fn,
                     (long long)o->max_bad_records);
    FERRY__CHECK_ARG(o->buffer_size == 0 || (o->buffer_size >= 16 && o->buffer_size <= ((size_t)1 << 30)), FERRY_EINVAL,
                     "%s: options.buffer_size is %zu; it must be 0 (256 KiB) or 16 bytes to 1 GiB", fn, o->buffer_size);
    return ferry__check_name(fn, o->name);
}

static void hash_options(ferry_dataset *d, const ferry_tfrecord_options *o) {
    ferry__dataset_hash_i64(d, (int64_t)o->compression);
    ferry__dataset_hash_i64(d, o->max_bad_records);
    ferry__dataset_hash_i64(d, o->skip_crc_check ? 1 : 0);
    ferry__dataset_hash_i64(d, (int64_t)o->max_record_size);
}

static int tfr_new(ferry_runtime *rt, size_t nfiles, const char *const *files, ferry_dataset *input,
                   const ferry_tfrecord_options *o, ferry_dataset **out) {
    ferry_dataset *d;
    int rc = ferry__dataset_new(rt, &tfr_vt, "tfrecord", sizeof(tfr_ds), input ? 1 : 0, input ? &input : NULL, 1,
                                &record_spec, input || nfiles ? FERRY_UNKNOWN : 0, &d);
    if (rc) return rc;
    tfr_ds *ds = (tfr_ds *)d;
    ds->o = *o;
    ds->o.name = NULL; /* the caller's; the label holds a copy */
    ds->o.num_parallel_reads = 0;
    if (nfiles) {
        ds->files = ferry__calloc(rt, nfiles, sizeof *ds->files);
        if (!ds->files) {
            ferry_dataset_unref(d);
            return ferry__set_last_error(FERRY_ENOMEM, "ferry_dataset_tfrecord: allocating the file list failed");
        }
        ds->nfiles = nfiles;
        for (size_t i = 0; i < nfiles; i++) {
            ds->files[i] = ferry__mem_strdup(&rt->alloc, files[i]);
            if (!ds->files[i]) {
                ferry_dataset_unref(d);
                return ferry__set_last_error(FERRY_ENOMEM, "ferry_dataset_tfrecord: copying the file names failed");
            }
            ferry__dataset_hash(d, files[i], strlen(files[i]) + 1);
        }
    }
    hash_options(d, o);
    ferry__dataset_seal(d);
    *out = d;
    return FERRY_OK;
}

/* ---- parallel reads: interleave over the file names ---------------------------------- */
typedef struct names_pass_ds {
    ferry_dataset base;
    ferry_tfrecord_options o;
} names_pass_ds;

typedef struct names_pass_it {
    ferry__iter base;
    ferry__iter *input;
} names_pass_it;

static int pass_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    names_pass_it *it = (names_pass_it *)it_;
    int rc = ferry__iter_next(it->input, out, st);
    if (rc) return rc;
    const ferry_tensor *t = (*out)->n >= 1 ? (*out)->t[0] : NULL;
    if (!t || t->dtype != FERRY_DTYPE_BYTES || t->rank != 0) {
        rc = ferry__fail(st, FERRY_ETYPE,
                         "tfrecord: the file-name input gave a %s tensor of rank %d; file names must be bytes scalars",
                         t ? ferry_dtype_name(t->dtype) : "missing", t ? t->rank : -1);
        ferry_element_free(*out);
        *out = NULL;
    }
    return rc;
}

static int pass_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    return ferry__iter_save(((names_pass_it *)it_)->input, w, st);
}

static int pass_skip(ferry__iter *it_, int64_t n, int64_t *skipped, ferry__status *st) {
    return ferry__iter_skip(((names_pass_it *)it_)->input, n, skipped, st);
}

static void pass_destroy(ferry__iter *it_) {
    ferry__iter_free(((names_pass_it *)it_)->input);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable pass_iter_vt = {pass_next, pass_save, pass_skip, pass_destroy};

static int pass_make(ferry_dataset *ds_, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                     ferry__status *st) {
    names_pass_it *it = ferry__iter_alloc(ds_, ctx, &pass_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    int rc = ferry__iter_make(ds_->inputs[0], ctx, state, &it->input, st);
    if (rc) {
        ferry__iter_release(&it->base);
        return rc;
    }
    *out = &it->base;
    return FERRY_OK;
}

static const ferry__dataset_vtable pass_vt = {.make = pass_make, .destroy = NULL};

/* The interleave function: a single-file tfrecord dataset for one file name. */
static int open_one(ferry_context *ctx, const ferry_element *in, ferry_dataset **out, void *user) {
    const names_pass_ds *pd = user;
    ferry_runtime *rt = ferry_context_runtime(ctx);
    const ferry_tensor *t = in->n >= 1 ? in->t[0] : NULL;
    if (!t || t->dtype != FERRY_DTYPE_BYTES || t->rank != 0)
        return ferry_context_fail(ctx, FERRY_ETYPE, "tfrecord: file names must be bytes scalars");
    size_t len;
    const uint8_t *p = ferry__tensor_str(t, 0, &len);
    if (len == 0 || memchr(p, 0, len))
        return ferry_context_fail(ctx, FERRY_EINVAL, "tfrecord: the file-name input gave %s",
                                  len ? "a name with a NUL byte" : "an empty name");
    char *name = ferry__alloc(rt, len + 1);
    if (!name) return ferry_context_fail(ctx, FERRY_ENOMEM, "tfrecord: copying a file name failed");
    memcpy(name, p, len);
    name[len] = '\0';
    const char *names[1] = {name};
    int rc = tfr_new(rt, 1, names, NULL, &pd->o, out);
    ferry__free(rt, name);
    if (rc) return ferry_context_fail(ctx, rc, "%s", ferry_last_error());
    return FERRY_OK;
}

/* ---- parallel reads: one bad-record limit over all files ---------------------------------
 * Under num_parallel_reads each file's reader reports every bad record as an error in its
 * position, and this 1:1 op above the interleave drops the first max_bad_records of them (all,
 * with FERRY_INFINITE) in output order: one limit for the whole dataset as without parallel
 * reads, and the same records dropped whatever the threads' timing. State: i64 dropped so far,
 * the input's. */
typedef struct badlim_ds {
    ferry_dataset base;
    int64_t max;
} badlim_ds;

typedef struct badlim_it {
    ferry__iter base;
    ferry__iter *input;
    int64_t dropped;
} badlim_it;

static int badlim_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    badlim_it *it = (badlim_it *)it_;
    int64_t max = ((const badlim_ds *)it_->ds)->max;
    for (;;) {
        int rc = ferry__iter_next(it->input, out, st);
        if (rc >= 0 || !droppable(rc) || (max >= 0 && it->dropped >= max) || ferry__cancelled(it_->ctx.cancel))
            return rc;
        it->dropped++;
        if (it_->stats) atomic_fetch_add_explicit(&it_->stats->dropped, 1, memory_order_relaxed);
    }
}

static int badlim_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    badlim_it *it = (badlim_it *)it_;
    ferry__w_i64(w, it->dropped);
    return ferry__iter_save(it->input, w, st);
}

static void badlim_destroy(ferry__iter *it_) {
    ferry__iter_free(((badlim_it *)it_)->input);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable badlim_iter_vt = {badlim_next, badlim_save, NULL, badlim_destroy};

static int badlim_make(ferry_dataset *ds_, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                       ferry__status *st) {
    badlim_it *it = ferry__iter_alloc(ds_, ctx, &badlim_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    int64_t max = ((const badlim_ds *)ds_)->max;
    int rc = FERRY_OK;
    if (state) {
        rc = ferry__r_i64(state, &it->dropped, st);
        if (!rc && (it->dropped < 0 || (max >= 0 && it->dropped > max)))
            rc = ferry__fail(st, FERRY_ECORRUPT, "tfrecord: saved state corrupt: %lld bad records dropped, limit %lld",
                             (long long)it->dropped, (long long)max);
    }
    if (!rc) rc = ferry__iter_make(ds_->inputs[0], ctx, state, &it->input, st);
    if (rc) {
        badlim_destroy(&it->base);
        return rc;
    }
    *out = &it->base;
    return FERRY_OK;
}

static const ferry__dataset_vtable badlim_vt = {.make = badlim_make, .destroy = NULL};

/* Takes a reference to `names` (a dataset of bytes scalars) and returns the interleave. */
static int parallel_reads(const char *fn, ferry_dataset *names, const ferry_tfrecord_options *o, ferry_dataset **out) {
    ferry_dataset *d;
    int rc = ferry__dataset_new(names->rt, &pass_vt, "tfrecord_files", sizeof(names_pass_ds), 1, &names, 1,
                                &record_spec, names->cardinality, &d);
    if (rc) return rc;
    ((names_pass_ds *)d)->o = *o;
    ((names_pass_ds *)d)->o.name = NULL; /* the caller's; the label holds a copy */
    ((names_pass_ds *)d)->o.num_parallel_reads = 0;
    ((names_pass_ds *)d)->o.max_bad_records = 0; /* every bad record in its position: badlim decides */
    hash_options(d, o);
    ferry__dataset_seal(d);
    ferry_interleave_options io = {0};
    io.cycle_length = o->num_parallel_reads > 0 ? o->num_parallel_reads : 0;
    io.block_length = 1;
    io.num_parallel_calls = o->num_parallel_reads;
    io.num_outputs = 1;
    io.output_specs = &record_spec;
    ferry_dataset *il;
    rc = ferry_dataset_interleave(d, open_one, d, &io, &il);
    ferry_dataset_unref(d);
    if (rc) {
        char pre[96];
        snprintf(pre, sizeof pre, "%s: making the parallel interleave failed", fn);
        return ferry__last_error_prefix(rc, pre);
    }
    if (o->max_bad_records == 0) {
        *out = il;
        return FERRY_OK;
    }
    int64_t card = il->cardinality == 0 || il->cardinality == FERRY_INFINITE ? il->cardinality : FERRY_UNKNOWN;
    rc = ferry__dataset_new(names->rt, &badlim_vt, "tfrecord_bad_records", sizeof(badlim_ds), 1, &il, 1, &record_spec,
                            card, &d);
    ferry_dataset_unref(il);
    if (rc) return rc;
    ((badlim_ds *)d)->max = o->max_bad_records;
    ferry__dataset_hash_i64(d, o->max_bad_records);
    ferry__dataset_seal(d);
    *out = d;
    return FERRY_OK;
}

/* ---- public ---------------------------------------------------------------------------- */
int ferry_dataset_tfrecord(ferry_runtime *rt, size_t nfiles, const char *const *files,
                           const ferry_tfrecord_options *opts, ferry_dataset **out) {
    const char *fn = __func__;
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", fn);
    *out = NULL;
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", fn);
    FERRY__CHECK_ARG(nfiles == 0 || files != NULL, FERRY_EINVAL, "%s: argument 'files' is NULL with nfiles %zu", fn,
                     nfiles);
    for (size_t i = 0; i < nfiles; i++)
        FERRY__CHECK_ARG(files[i] != NULL && files[i][0] != '\0', FERRY_EINVAL, "%s: files[%zu] is %s", fn, i,
                         files[i] ? "empty" : "NULL");
    ferry_tfrecord_options o;
    int rc = check_options(fn, opts, &o);
    if (rc) return rc;
    if (o.num_parallel_reads == 0) {
        rc = tfr_new(rt, nfiles, files, NULL, &o, out);
    } else {
        ferry_dataset *names;
        rc = ferry__dataset_names(rt, "file_names", nfiles, files, NULL, &names);
        if (rc) return rc;
        rc = parallel_reads(fn, names, &o, out);
        ferry_dataset_unref(names);
    }
    if (!rc) ferry__dataset_set_label(*out, o.name);
    return rc;
}

int ferry_dataset_tfrecord_files(ferry_dataset *filenames, const ferry_tfrecord_options *opts, ferry_dataset **out) {
    const char *fn = __func__;
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", fn);
    *out = NULL;
    int rc = ferry__check_dataset(filenames, fn, "filenames");
    if (rc) return rc;
    FERRY__CHECK_ARG(filenames->ncomp == 1 && filenames->specs[0].dtype == FERRY_DTYPE_BYTES &&
                         filenames->specs[0].shape.rank <= 0,
                     FERRY_ETYPE,
                     "%s: argument 'filenames' must be a dataset of bytes scalars; it has %zu components, "
                     "the first of dtype %s and rank %d",
                     fn, filenames->ncomp, filenames->ncomp ? ferry_dtype_name(filenames->specs[0].dtype) : "none",
                     filenames->ncomp ? filenames->specs[0].shape.rank : 0);
    ferry_tfrecord_options o;
    rc = check_options(fn, opts, &o);
    if (rc) return rc;
    if (o.num_parallel_reads == 0) rc = tfr_new(filenames->rt, 0, NULL, filenames, &o, out);
    else rc = parallel_reads(fn, filenames, &o, out);
    if (!rc) ferry__dataset_set_label(*out, o.name);
    return rc;
}

int ferry__dataset_tfrecord_memory(ferry_runtime *rt, const char *name, const void *data, size_t size,
                                   const ferry_tfrecord_options *opts, ferry_dataset **out) {
    static const char fn[] = "ferry__dataset_tfrecord_memory";
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL && rt != NULL && name != NULL && name[0] && (data != NULL || size == 0), FERRY_EINVAL,
                     "%s: bad arguments", fn);
    *out = NULL;
    ferry_tfrecord_options o;
    int rc = check_options(fn, opts, &o);
    if (rc) return rc;
    FERRY__CHECK_ARG(o.num_parallel_reads == 0, FERRY_EINVAL, "%s: num_parallel_reads must be 0", fn);
    const char *names[1] = {name};
    rc = tfr_new(rt, 1, names, NULL, &o, out);
    if (rc) return rc;
    tfr_ds *ds = (tfr_ds *)*out;
    ds->memory = true;
    ds->mem = data;
    ds->mem_size = size;
    return FERRY_OK;
}

int ferry__tfrecord_set_fault(ferry_dataset *ds, ferry__io_fault_fn fault, void *user) {
    if (!ds || ds->vt != &tfr_vt) return FERRY_EINVAL;
    ((tfr_ds *)ds)->fault = fault;
    ((tfr_ds *)ds)->fault_user = user;
    return FERRY_OK;
}

/* ---- writer ---------------------------------------------------------------------------- */
struct ferry_tfrecord_writer {
    ferry_runtime *rt;
    ferry__ostream *o;
    ferry__status st;
};

int ferry__tfrecord_writer_open_faulty(ferry_runtime *rt, const char *path, const ferry_tfrecord_writer_options *opts,
                                       ferry__io_fault_fn fault, void *user, ferry_tfrecord_writer **out) {
    static const char fn[] = "ferry_tfrecord_writer_open";
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", fn);
    *out = NULL;
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", fn);
    FERRY__CHECK_ARG(path != NULL && path[0] != '\0', FERRY_EINVAL, "%s: argument 'path' is %s", fn,
                     path ? "empty" : "NULL");
    ferry_tfrecord_writer_options wo = {0};
    if (opts) wo = *opts;
    FERRY__CHECK_ARG(wo.compression == FERRY_COMPRESSION_NONE || wo.compression == FERRY_COMPRESSION_GZIP ||
                         wo.compression == FERRY_COMPRESSION_ZLIB,
                     FERRY_EINVAL, "%s: options.compression is %d; it must be FERRY_COMPRESSION_NONE, _GZIP or _ZLIB",
                     fn, (int)wo.compression);
    FERRY__CHECK_ARG(wo.compression_level >= 0 && wo.compression_level <= 9, FERRY_EINVAL,
                     "%s: options.compression_level is %d; it must be 0 (default) to 9", fn, wo.compression_level);
    ferry_tfrecord_writer *w = ferry__calloc(rt, 1, sizeof *w);
    if (!w) return ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the writer failed", fn);
    w->rt = rt;
    ferry__ostream_options oo = {
        .compression = wo.compression, .level = wo.compression_level, .fault = fault, .fault_user = user};
    ferry__status st;
    int rc = ferry__ostream_open(rt, path, &oo, &w->o, &st);
    if (rc) {
        ferry__free(rt, w);
        return ferry__set_last_error(rc, "%s: %s", fn, st.msg);
    }
    *out = w;
    return FERRY_OK;
}

int ferry_tfrecord_writer_open(ferry_runtime *rt, const char *path, const ferry_tfrecord_writer_options *opts,
                               ferry_tfrecord_writer **out) {
    return ferry__tfrecord_writer_open_faulty(rt, path, opts, NULL, NULL, out);
}

int ferry_tfrecord_writer_write(ferry_tfrecord_writer *w, const void *data, size_t len) {
    if (!w) return ferry__set_last_error(FERRY_EINVAL, "%s: argument 'w' is NULL", __func__);
    if (!data && len)
        return ferry__fail(&w->st, FERRY_EINVAL, "%s: argument 'data' is NULL with len %zu", __func__, len);
    uint8_t h[HEADER], f[FOOTER];
    ferry__store_le64(h, (uint64_t)len);
    ferry__store_le32(h + 8, masked_crc(h, 8));
    ferry__store_le32(f, masked_crc(data, len));
    ferry__status st;
    int rc = ferry__ostream_write(w->o, h, HEADER, &st);
    if (!rc && len) rc = ferry__ostream_write(w->o, data, len, &st);
    if (!rc) rc = ferry__ostream_write(w->o, f, FOOTER, &st);
    if (rc) {
        ferry__status_prefix(&st, __func__);
        ferry__status_copy(&w->st, &st);
        ferry__set_last_error(rc, "%s", st.msg);
    }
    return rc;
}

const char *ferry_tfrecord_writer_error(const ferry_tfrecord_writer *w) { return w ? w->st.msg : ""; }

int ferry_tfrecord_writer_close(ferry_tfrecord_writer *w) {
    if (!w) return FERRY_OK;
    ferry__status st;
    ferry__status_clear(&st);
    int rc = ferry__ostream_close(w->o, &st);
    ferry__free(w->rt, w);
    if (rc) return ferry__set_last_error(rc, "%s: %s", __func__, st.msg);
    return FERRY_OK;
}
