/*
 * stream.c - buffered, optionally decompressing file readers and compressing writers (stream.h).
 *
 * Reader objects
 *   A ferry__stream has a source (a file descriptor read with pread at raw_off, or a borrowed
 *   memory block), an optional zlib inflater with its own input buffer (zin), and the read
 *   buffer `buf` of decompressed bytes: buf[pos, len) are buffered and not yet consumed, and
 *   `off` is the decompressed offset of buf[pos]. Bytes before pos stay in the buffer until the
 *   next refill moves the unconsumed tail to the front, which lets a short seek backwards reuse
 *   them. A read larger than a quarter of the buffer goes straight into the caller's memory
 *   (pread or inflate into it), so big records are copied once.
 *
 * Compressed streams: GZIP accepts several concatenated members (as gzip(1) writes them) and
 * zero padding after the last; ZLIB stops at the end of its one stream. A stream that ends in
 * the middle is FERRY_ETRUNCATED; invalid data is FERRY_ECORRUPT; an empty file is an empty
 * stream. Seeking backwards restarts the inflater from byte 0.
 *
 * Errors are sticky (err/err_st): a failed source cannot be trusted to resume where it failed.
 *
 * Writer objects
 *   A ferry__ostream buffers output (compressed output, when compressing) in `buf` and writes it
 *   with write(2) when full; close finishes the zlib stream, writes the rest, fsyncs and closes.
 *   The first error is kept and returned by every later call and by close.
 *
 * Threads: none. Each object is used by one thread at a time. All memory, zlib's included,
 * comes from the runtime's allocator.
 */
#include "stream.h"

#include <errno.h>
#include <string.h>

#if defined(__has_include)
#if __has_include(<zlib.h>)
#define FERRY_HAVE_ZLIB 1
#include <zlib.h>
#endif
#endif

struct ferry__stream {
    ferry_runtime *rt;
    char *path;
    int fd; /* -1 for a memory source */
    const uint8_t *mem;
    size_t mem_size;
    ferry_compression comp;
    ferry__io_fault_fn fault;
    void *fault_user;
    int64_t file_size;
    int64_t raw_off; /* next source byte to read */
    bool raw_eof;    /* the source returned end of file */
    uint8_t *buf;
    size_t cap, pos, len;
    int64_t off; /* decompressed offset of buf[pos] */
    bool eof;    /* nothing after buf[len] */
    int err;     /* sticky error, with its message in err_st */
    ferry__status err_st;
#ifdef FERRY_HAVE_ZLIB
    z_stream z;
    bool z_ready;
    bool member_done; /* the last inflate ended a member (gzip) or the stream (zlib) */
    int64_t inflated; /* decompressed bytes produced since the start of the file */
    uint8_t *zin;
    size_t zin_cap;
#endif
};

static const char *comp_name(ferry_compression c) {
    return c == FERRY_COMPRESSION_GZIP ? "gzip" : c == FERRY_COMPRESSION_ZLIB ? "zlib" : "plain";
}

static int sticky(ferry__stream *s, ferry__status *st, int code, const char *fmt, ...) FERRY_PRINTF(4, 5);
static int sticky(ferry__stream *s, ferry__status *st, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ferry__failv(&s->err_st, code, fmt, ap);
    va_end(ap);
    s->err = code;
    ferry__status_copy(st, &s->err_st);
    return code;
}

static int report(ferry__stream *s, ferry__status *st) {
    ferry__status_copy(st, &s->err_st);
    return s->err;
}

#ifdef FERRY_HAVE_ZLIB
static voidpf zalloc_rt(voidpf opaque, uInt items, uInt size) {
    ferry_runtime *rt = opaque;
    if (size && items > SIZE_MAX / size) return Z_NULL;
    return ferry__alloc(rt, (size_t)items * size);
}
static void zfree_rt(voidpf opaque, voidpf p) { ferry__free((ferry_runtime *)opaque, p); }
#endif

/* ---- source ----------------------------------------------------------------------------- */
/* Reads up to want bytes of the raw source at raw_off. *got == 0 only at the end. */
static int raw_read(ferry__stream *s, uint8_t *dst, size_t want, size_t *got, ferry__status *st) {
    *got = 0;
    if (want == 0 || s->raw_eof) return FERRY_OK;
    size_t ask = want;
    if (s->fault) {
        long r = s->fault(s->fault_user, s->raw_off, want);
        if (r < 0)
            return sticky(s, st, FERRY_EIO, "reading '%s' at byte %lld: %s", s->path, (long long)s->raw_off,
                          strerror(EIO));
        if ((size_t)r < ask) ask = r > 0 ? (size_t)r : 1;
    }
    if (s->fd < 0) {
        size_t left = s->raw_off < (int64_t)s->mem_size ? s->mem_size - (size_t)s->raw_off : 0;
        size_t n = FERRY__MIN(ask, left);
        if (n) memcpy(dst, s->mem + s->raw_off, n);
        *got = n;
    } else {
        int e = ferry__fd_pread(s->fd, dst, ask, s->raw_off, got);
        if (e)
            return sticky(s, st, FERRY_EIO, "reading '%s' at byte %lld: %s", s->path, (long long)s->raw_off,
                          strerror(e));
    }
    if (*got == 0) s->raw_eof = true;
    s->raw_off += (int64_t)*got;
    return FERRY_OK;
}

#ifdef FERRY_HAVE_ZLIB
/* Inflates into dst (n > 0 bytes of room) until at least one byte is produced, the stream ends
 * (s->eof) or it fails. *produced gets the bytes written. */
static int inflate_some(ferry__stream *s, uint8_t *dst, size_t n, size_t *produced, ferry__status *st) {
    *produced = 0;
    if (s->err) return report(s, st);
    if (n > UINT32_MAX) n = UINT32_MAX;
    for (;;) {
        if (s->z.avail_in == 0 && !s->raw_eof) {
            size_t got;
            int rc = raw_read(s, s->zin, s->zin_cap, &got, st);
            if (rc) return rc;
            s->z.next_in = s->zin;
            s->z.avail_in = (uInt)got;
        }
        if (s->member_done) {
            if (s->comp == FERRY_COMPRESSION_ZLIB) {
                s->eof = true;
                return FERRY_OK;
            }
            /* gzip: zero padding may follow the last member; anything else starts a new one. */
            while (s->z.avail_in && *s->z.next_in == 0) {
                s->z.next_in++;
                s->z.avail_in--;
            }
            if (s->z.avail_in == 0) {
                if (s->raw_eof) {
                    s->eof = true;
                    return FERRY_OK;
                }
                continue;
            }
            inflateReset(&s->z);
            s->member_done = false;
        }
        s->z.next_out = dst;
        s->z.avail_out = (uInt)n;
        int zr = inflate(&s->z, Z_NO_FLUSH);
        *produced = n - s->z.avail_out;
        s->inflated += (int64_t)*produced;
        int64_t at = s->inflated; /* decompressed offset of the first byte not produced */
        /* Bytes produced before a failure are good data: hand them out now and fail at the next
         * call (the error sticks), so the failure always lands at the same decompressed offset,
         * however the output was cut into calls (restore depends on it). */
        ferry__status ignored;
        ferry__status *est = *produced ? &ignored : st;
        switch (zr) {
        case Z_STREAM_END:
            s->member_done = true;
            if (*produced) return FERRY_OK;
            break;
        case Z_OK:
            if (*produced) return FERRY_OK;
            break;
        case Z_BUF_ERROR:
            if (*produced) return FERRY_OK;
            if (s->z.avail_in == 0 && s->raw_eof) {
                if (s->raw_off == 0) { /* an empty file is an empty stream */
                    s->eof = true;
                    return FERRY_OK;
                }
                return sticky(s, st, FERRY_ETRUNCATED,
                              "'%s': the %s stream ends early: the file stops after %lld compressed bytes, in the "
                              "middle of the compressed data (decompressed offset %lld)",
                              s->path, comp_name(s->comp), (long long)s->raw_off, (long long)at);
            }
            break;
        case Z_MEM_ERROR:
            sticky(s, est, FERRY_ENOMEM, "'%s': zlib ran out of memory at decompressed offset %lld", s->path,
                   (long long)at);
            return *produced ? FERRY_OK : s->err;
        default: /* Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR */
            sticky(s, est, FERRY_ECORRUPT,
                   "'%s': invalid %s data near compressed byte %lld (decompressed offset %lld): %s", s->path,
                   comp_name(s->comp), (long long)(s->raw_off - (int64_t)s->z.avail_in), (long long)at,
                   s->z.msg ? s->z.msg : "zlib error");
            return *produced ? FERRY_OK : s->err;
        }
    }
}
#endif

/* Appends decompressed bytes at buf[len] (at least one unless the stream ends). */
static int fill(ferry__stream *s, ferry__status *st) {
    size_t room = s->cap - s->len;
    FERRY_ASSERT(room > 0);
    size_t got = 0;
    int rc;
#ifdef FERRY_HAVE_ZLIB
    if (s->comp != FERRY_COMPRESSION_NONE) rc = inflate_some(s, s->buf + s->len, room, &got, st);
    else
#endif
    {
        rc = raw_read(s, s->buf + s->len, room, &got, st);
        if (rc == FERRY_OK && got == 0) s->eof = true;
    }
    s->len += got;
    return rc;
}

/* Makes len - pos >= want unless the stream ends first. */
static int ensure(ferry__stream *s, size_t want, ferry__status *st) {
    if (s->len - s->pos >= want) return FERRY_OK;
    if (s->err) return report(s, st);
    if (want > s->cap - s->pos) {
        if (s->pos) {
            memmove(s->buf, s->buf + s->pos, s->len - s->pos);
            s->len -= s->pos;
            s->pos = 0;
        }
        if (want > s->cap) {
            uint8_t *nb = ferry__realloc(s->rt, s->buf, want);
            if (!nb)
                return ferry__fail(st, FERRY_ENOMEM, "'%s': growing the read buffer to %zu bytes failed", s->path,
                                   want);
            s->buf = nb;
            s->cap = want;
        }
    }
    while (s->len - s->pos < want && !s->eof) {
        int rc = fill(s, st);
        if (rc) return rc;
    }
    return FERRY_OK;
}

/* ---- public (internal) API -------------------------------------------------------------- */
/* FERRY_OK when this build can `verb` ("read", "write") files compressed with c; else an error
 * naming path. */
static int check_compression(const char *path, ferry_compression c, const char *verb, ferry__status *st) {
    if (c != FERRY_COMPRESSION_NONE && c != FERRY_COMPRESSION_GZIP && c != FERRY_COMPRESSION_ZLIB)
        return ferry__fail(st, FERRY_EINVAL, "'%s': unknown compression %d", path, (int)c);
#ifndef FERRY_HAVE_ZLIB
    if (c != FERRY_COMPRESSION_NONE)
        return ferry__fail(st, FERRY_EUNSUPPORTED, "'%s': this build of ferry has no zlib, so it cannot %s %s files",
                           path, verb, comp_name(c));
#else
    (void)verb;
#endif
    return FERRY_OK;
}

static int stream_new(ferry_runtime *rt, const char *path, const ferry__stream_options *opts, ferry__stream **out,
                      ferry__status *st) {
    ferry__stream_options o = {0};
    if (opts) o = *opts;
    int rc = check_compression(path, o.compression, "read", st);
    if (rc) return rc;
    ferry__stream *s = ferry__calloc(rt, 1, sizeof *s);
    if (!s) return ferry__fail(st, FERRY_ENOMEM, "'%s': allocating a stream failed", path);
    s->rt = rt;
    s->fd = -1;
    s->comp = o.compression;
    s->fault = o.fault;
    s->fault_user = o.fault_user;
    s->cap = o.buffer_size ? o.buffer_size : FERRY__STREAM_DEFAULT_BUFFER;
    s->path = ferry__mem_strdup(&rt->alloc, path);
    s->buf = ferry__alloc(rt, s->cap);
    if (!s->path || !s->buf) {
        size_t cap = s->cap;
        ferry__stream_close(s);
        return ferry__fail(st, FERRY_ENOMEM, "'%s': allocating a read buffer of %zu bytes failed", path, cap);
    }
#ifdef FERRY_HAVE_ZLIB
    if (s->comp != FERRY_COMPRESSION_NONE) {
        s->zin_cap = FERRY__MIN(s->cap, (size_t)256 * 1024);
        s->zin = ferry__alloc(rt, s->zin_cap);
        s->z.zalloc = zalloc_rt;
        s->z.zfree = zfree_rt;
        s->z.opaque = rt;
        int wbits = s->comp == FERRY_COMPRESSION_GZIP ? 16 + MAX_WBITS : MAX_WBITS;
        if (!s->zin || inflateInit2(&s->z, wbits) != Z_OK) {
            ferry__stream_close(s);
            return ferry__fail(st, FERRY_ENOMEM, "'%s': setting up zlib failed", path);
        }
        s->z_ready = true;
    }
#endif
    *out = s;
    return FERRY_OK;
}

int ferry__stream_open(ferry_runtime *rt, const char *path, const ferry__stream_options *opts, ferry__stream **out,
                       ferry__status *st) {
    *out = NULL;
    ferry__stream *s = NULL;
    int rc = stream_new(rt, path, opts, &s, st);
    if (rc) return rc;
    int e = ferry__fd_open_read(path, &s->fd, &s->file_size);
    if (e) {
        ferry__stream_close(s);
        if (e == EISDIR) return ferry__fail(st, FERRY_ENOTFOUND, "cannot open '%s': it is a directory", path);
        if (e == EIO || e == EOVERFLOW) /* opened, but its size could not be read */
            return ferry__fail(st, FERRY_EIO, "cannot stat '%s': %s", path, strerror(e));
        return ferry__fail(st, FERRY_ENOTFOUND, "cannot open '%s': %s", path, strerror(e));
    }
    *out = s;
    return FERRY_OK;
}

int ferry__stream_open_memory(ferry_runtime *rt, const char *name, const void *data, size_t size,
                              const ferry__stream_options *opts, ferry__stream **out, ferry__status *st) {
    *out = NULL;
    ferry__stream *s = NULL;
    int rc = stream_new(rt, name, opts, &s, st);
    if (rc) return rc;
    s->mem = size ? data : (const uint8_t *)"";
    s->mem_size = size;
    s->file_size = (int64_t)size;
    *out = s;
    return FERRY_OK;
}

void ferry__stream_close(ferry__stream *s) {
    if (!s) return;
    ferry_runtime *rt = s->rt;
    if (s->fd >= 0) (void)ferry__fd_close(s->fd);
#ifdef FERRY_HAVE_ZLIB
    if (s->z_ready) inflateEnd(&s->z);
    ferry__free(rt, s->zin);
#endif
    ferry__free(rt, s->buf);
    ferry__free(rt, s->path);
    ferry__free(rt, s);
}

int ferry__stream_peek(ferry__stream *s, size_t n, const uint8_t **p, size_t *avail, ferry__status *st) {
    int rc = ensure(s, n, st);
    *p = s->buf + s->pos;
    *avail = s->len - s->pos;
    return rc;
}

void ferry__stream_consume(ferry__stream *s, size_t n) {
    FERRY_ASSERT(n <= s->len - s->pos);
    s->pos += n;
    s->off += (int64_t)n;
}

int ferry__stream_read(ferry__stream *s, void *buf, size_t n, size_t *got, ferry__status *st) {
    uint8_t *dst = buf;
    size_t done = FERRY__MIN(n, s->len - s->pos);
    if (done) {
        memcpy(dst, s->buf + s->pos, done);
        ferry__stream_consume(s, done);
    }
    int rc = FERRY_OK;
    while (done < n && !s->eof) {
        if (s->err) {
            rc = report(s, st);
            break;
        }
        size_t rest = n - done;
        if (rest >= s->cap / 4) { /* large: straight into the caller's memory */
            size_t r = 0;
            s->pos = s->len = 0;
#ifdef FERRY_HAVE_ZLIB
            if (s->comp != FERRY_COMPRESSION_NONE) rc = inflate_some(s, dst + done, rest, &r, st);
            else
#endif
            {
                rc = raw_read(s, dst + done, rest, &r, st);
                if (rc == FERRY_OK && r == 0) s->eof = true;
            }
            done += r;
            s->off += (int64_t)r;
            if (rc) break;
        } else {
            rc = ensure(s, 1, st);
            if (rc) break;
            size_t take = FERRY__MIN(rest, s->len - s->pos);
            memcpy(dst + done, s->buf + s->pos, take);
            ferry__stream_consume(s, take);
            done += take;
        }
    }
    *got = done;
    return rc;
}

int64_t ferry__stream_offset(const ferry__stream *s) { return s->off; }
int64_t ferry__stream_file_size(const ferry__stream *s) { return s->file_size; }
bool ferry__stream_compressed(const ferry__stream *s) { return s->comp != FERRY_COMPRESSION_NONE; }
const char *ferry__stream_path(const ferry__stream *s) { return s->path; }

int64_t ferry__stream_bytes_left(const ferry__stream *s) {
    if (s->comp != FERRY_COMPRESSION_NONE || s->file_size < 0) return -1;
    return s->off < s->file_size ? s->file_size - s->off : 0;
}

int ferry__stream_seek(ferry__stream *s, int64_t offset, ferry__status *st) {
    if (offset < 0)
        return ferry__fail(st, FERRY_EINVAL, "'%s': cannot seek to negative offset %lld", s->path, (long long)offset);
    int64_t window_start = s->off - (int64_t)s->pos;
    int64_t window_end = s->off + (int64_t)(s->len - s->pos);
    if (offset >= window_start && offset <= window_end && !(s->err && offset == window_end)) {
        s->pos = (size_t)(offset - window_start);
        s->off = offset;
        return FERRY_OK;
    }
    if (s->comp == FERRY_COMPRESSION_NONE) {
        if (s->file_size >= 0 && offset > s->file_size)
            return ferry__fail(st, FERRY_EOUTOFRANGE, "'%s': offset %lld is past the end of the file (%lld bytes)",
                               s->path, (long long)offset, (long long)s->file_size);
        s->pos = s->len = 0;
        s->off = s->raw_off = offset;
        s->eof = s->raw_eof = false;
        s->err = 0;
        return FERRY_OK;
    }
#ifdef FERRY_HAVE_ZLIB
    if (offset < s->off || s->err) { /* restart from the first compressed byte */
        inflateReset(&s->z);
        s->z.avail_in = 0;
        s->member_done = false;
        s->inflated = 0;
        s->pos = s->len = 0;
        s->off = s->raw_off = 0;
        s->eof = s->raw_eof = false;
        s->err = 0;
    }
    while (s->off < offset) {
        if (s->len == s->pos) {
            s->pos = s->len = 0;
            int rc = ensure(s, 1, st);
            if (rc) return rc;
            if (s->eof && s->len == 0)
                return ferry__fail(st, FERRY_EOUTOFRANGE,
                                   "'%s': offset %lld is past the end of the decompressed stream (%lld bytes)", s->path,
                                   (long long)offset, (long long)s->off);
        }
        size_t take = (size_t)FERRY__MIN((int64_t)(s->len - s->pos), offset - s->off);
        ferry__stream_consume(s, take);
    }
    return FERRY_OK;
#else
    return ferry__fail(st, FERRY_EUNSUPPORTED, "'%s': no zlib in this build", s->path);
#endif
}

/* ---- writer ----------------------------------------------------------------------------- */
struct ferry__ostream {
    ferry_runtime *rt;
    char *path;
    int fd;
    ferry_compression comp;
    ferry__io_fault_fn fault;
    void *fault_user;
    uint8_t *buf; /* bytes waiting to be written: compressed when compressing */
    size_t cap, len;
    int64_t off;     /* uncompressed bytes accepted */
    int64_t raw_off; /* bytes written to the file */
    int err;
    ferry__status err_st;
#ifdef FERRY_HAVE_ZLIB
    z_stream z;
    bool z_ready;
#endif
};

static int o_sticky(ferry__ostream *o, ferry__status *st, int code, const char *fmt, ...) FERRY_PRINTF(4, 5);
static int o_sticky(ferry__ostream *o, ferry__status *st, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ferry__failv(&o->err_st, code, fmt, ap);
    va_end(ap);
    o->err = code;
    ferry__status_copy(st, &o->err_st);
    return code;
}

static int raw_write(ferry__ostream *o, const uint8_t *p, size_t n, ferry__status *st) {
    while (n) {
        size_t ask = n;
        if (o->fault) {
            long r = o->fault(o->fault_user, o->raw_off, n);
            if (r < 0)
                return o_sticky(o, st, FERRY_EIO, "writing '%s' at byte %lld: %s", o->path, (long long)o->raw_off,
                                strerror(ENOSPC));
            if ((size_t)r < ask) ask = r > 0 ? (size_t)r : 1;
        }
        size_t w;
        int e = ferry__fd_write(o->fd, p, ask, -1, &w);
        if (e)
            return o_sticky(o, st, FERRY_EIO, "writing '%s' at byte %lld: %s", o->path, (long long)o->raw_off,
                            strerror(e));
        p += w;
        n -= w;
        o->raw_off += (int64_t)w;
    }
    return FERRY_OK;
}

static int o_flush_buf(ferry__ostream *o, ferry__status *st) {
    int rc = raw_write(o, o->buf, o->len, st);
    o->len = 0;
    return rc;
}

#ifdef FERRY_HAVE_ZLIB
/* Runs deflate over (p, n) with `flush`, writing out full output buffers. */
static int o_deflate(ferry__ostream *o, const uint8_t *p, size_t n, int flush, ferry__status *st) {
    o->z.next_in = (Bytef *)(uintptr_t)p;
    for (;;) {
        size_t chunk = FERRY__MIN(n, (size_t)UINT32_MAX);
        o->z.avail_in = (uInt)chunk;
        bool last = chunk == n;
        do {
            if (o->len == o->cap) {
                int rc = o_flush_buf(o, st);
                if (rc) return rc;
            }
            o->z.next_out = o->buf + o->len;
            o->z.avail_out = (uInt)(o->cap - o->len);
            int zr = deflate(&o->z, last ? flush : Z_NO_FLUSH);
            o->len = o->cap - o->z.avail_out;
            if (zr == Z_STREAM_END) return FERRY_OK;
            if (zr != Z_OK && zr != Z_BUF_ERROR)
                return o_sticky(o, st, FERRY_EIO, "compressing '%s': zlib error %d", o->path, zr);
        } while (o->z.avail_in > 0 || (last && flush != Z_NO_FLUSH) || o->z.avail_out == 0);
        n -= chunk;
        if (last) return FERRY_OK;
    }
}
#endif

int ferry__ostream_open(ferry_runtime *rt, const char *path, const ferry__ostream_options *opts, ferry__ostream **out,
                        ferry__status *st) {
    *out = NULL;
    ferry__ostream_options o = {0};
    if (opts) o = *opts;
    int rc = check_compression(path, o.compression, "write", st);
    if (rc) return rc;
    if (o.level < 0 || o.level > 9)
        return ferry__fail(st, FERRY_EINVAL, "'%s': compression level %d is outside 0..9", path, o.level);
    ferry__ostream *w = ferry__calloc(rt, 1, sizeof *w);
    if (!w) return ferry__fail(st, FERRY_ENOMEM, "'%s': allocating a writer failed", path);
    w->rt = rt;
    w->fd = -1;
    w->comp = o.compression;
    w->fault = o.fault;
    w->fault_user = o.fault_user;
    w->cap = o.buffer_size ? o.buffer_size : FERRY__STREAM_DEFAULT_BUFFER;
    w->path = ferry__mem_strdup(&rt->alloc, path);
    w->buf = ferry__alloc(rt, w->cap);
    if (!w->path || !w->buf) {
        ferry__ostream_close(w, NULL);
        return ferry__fail(st, FERRY_ENOMEM, "'%s': allocating a write buffer of %zu bytes failed", path, w->cap);
    }
#ifdef FERRY_HAVE_ZLIB
    if (w->comp != FERRY_COMPRESSION_NONE) {
        w->z.zalloc = zalloc_rt;
        w->z.zfree = zfree_rt;
        w->z.opaque = rt;
        int wbits = w->comp == FERRY_COMPRESSION_GZIP ? 16 + MAX_WBITS : MAX_WBITS;
        if (deflateInit2(&w->z, o.level ? o.level : Z_DEFAULT_COMPRESSION, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY) !=
            Z_OK) {
            ferry__ostream_close(w, NULL);
            return ferry__fail(st, FERRY_ENOMEM, "'%s': setting up zlib failed", path);
        }
        w->z_ready = true;
    }
#endif
    int fd, e = ferry__fd_create(path, false, &fd);
    if (e) {
        ferry__ostream_close(w, NULL);
        return ferry__fail(st, e == ENOENT || e == ENOTDIR ? FERRY_ENOTFOUND : FERRY_EIO, "cannot create '%s': %s",
                           path, strerror(e));
    }
    w->fd = fd;
    *out = w;
    return FERRY_OK;
}

int ferry__ostream_write(ferry__ostream *o, const void *p, size_t n, ferry__status *st) {
    if (o->err) {
        ferry__status_copy(st, &o->err_st);
        return o->err;
    }
    int rc = FERRY_OK;
#ifdef FERRY_HAVE_ZLIB
    if (o->comp != FERRY_COMPRESSION_NONE) {
        rc = o_deflate(o, p, n, Z_NO_FLUSH, st);
    } else
#endif
        if (o->len + n <= o->cap) {
        memcpy(o->buf + o->len, p, n);
        o->len += n;
    } else {
        rc = o_flush_buf(o, st);
        if (rc == FERRY_OK) {
            if (n >= o->cap) {
                rc = raw_write(o, p, n, st);
            } else {
                memcpy(o->buf, p, n);
                o->len = n;
            }
        }
    }
    if (rc == FERRY_OK) o->off += (int64_t)n;
    return rc;
}

int64_t ferry__ostream_offset(const ferry__ostream *o) { return o->off; }

int ferry__ostream_close(ferry__ostream *o, ferry__status *st) {
    if (!o) return FERRY_OK;
    ferry__status tmp;
    if (!st) st = &tmp;
    int rc = o->err;
    if (rc) ferry__status_copy(st, &o->err_st);
    if (o->fd >= 0) {
#ifdef FERRY_HAVE_ZLIB
        if (rc == FERRY_OK && o->z_ready) rc = o_deflate(o, NULL, 0, Z_FINISH, st);
#endif
        if (rc == FERRY_OK) rc = o_flush_buf(o, st);
        int e = rc == FERRY_OK ? ferry__fd_sync(o->fd) : 0;
        if (e) rc = o_sticky(o, st, FERRY_EIO, "syncing '%s': %s", o->path, strerror(e));
        e = ferry__fd_close(o->fd);
        if (e && rc == FERRY_OK) rc = o_sticky(o, st, FERRY_EIO, "closing '%s': %s", o->path, strerror(e));
    }
#ifdef FERRY_HAVE_ZLIB
    if (o->z_ready) deflateEnd(&o->z);
#endif
    ferry_runtime *rt = o->rt;
    ferry__free(rt, o->buf);
    ferry__free(rt, o->path);
    ferry__free(rt, o);
    return rc;
}
