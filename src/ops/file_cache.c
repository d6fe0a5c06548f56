/*
 * file_cache.c - `cache(path)`: the file cache. The first pass that reads its input through to
 * the end writes every element to a cache file; iterators made after the file is committed
 * (later epochs) read the file and never touch the input.
 *
 * Objects
 *   fc_ds   the dataset: input, path. Holds no cache state: the committed file is the state, so
 *           iterators of several datasets, threads or processes may share one path.
 *   fc_it   one pass, in one of three modes:
 *             READ   a valid committed file was found when the iterator was made: elements come
 *                    from it, each checked against its checksum before it is handed out;
 *             WRITE  no valid file: the input passes through and every element is also written
 *                    to a temporary file; at the input's END the file is committed;
 *             PASS   the input passes through and nothing is written (writing failed or was
 *                    given up, or the iterator was restored in the middle of a writing pass).
 *
 * File format (integers little-endian; crc = CRC-32C)
 *   header   "FERRYFC\0" | u32 version (2) | u32 header size | u64 fingerprint of the input
 *            pipeline (ferry__dataset_fingerprint) | u64 content seed (the iteration seed the
 *            input was made with) | u32 ncomp | per component: u32 dtype, i32 rank,
 *            i64 dims[rank] | u32 crc of the header bytes before it
 *   frames   per element: u64 len | payload[len] | u32 crc(u64 element index, len, payload).
 *            The index in the checksum means that a frame moved, lost or repeated fails where it
 *            stands. payload: u32 ncomp | per component: u8 dtype, u8 rank, u16 0, i64 dims[rank],
 *            then the values (numeric: entries * dtype size bytes; bytes: u64 offsets[n + 1]
 *            starting at 0, then the string bytes).
 *   footer   u64 count | u64 K | u64 nindex | u64 offset of element i*K, for i < nindex |
 *            trailer: u64 footer offset | u32 crc(footer bytes and footer offset) | u32 0 |
 *            "FCFOOTER". Written last: a file without a valid trailer is incomplete.
 *
 * Commit: the writer writes to "<path>.tmp.<pid>.<random>" in the same directory (created
 * exclusively), and at the input's END writes the footer, fsyncs, renames over path (atomic) and
 * fsyncs the directory. A reader only ever opens `path`, so it sees a complete file or none.
 * Two writers (threads or processes) on one path each write their own temporary file; the last
 * rename wins and both files are complete and equal. A writer destroyed before END, or that
 * fails to write (ENOSPC, EIO), removes its temporary file and never commits: a partial pass
 * leaves nothing. A process killed mid-pass leaves its temporary file behind (never read).
 *
 * The fingerprint describes the input pipeline (ops, parameters, file names), not the content of
 * the files it reads: after changing input files in place, delete the cache file.
 *
 * Validation: making a READ iterator checks the header (magic, version, checksum, the input's
 * fingerprint, the element spec) and the trailer and footer (checksum, counts, index). Each
 * frame is checked (bounds, checksum with its index, parse, spec) before its element is handed
 * out. A file that is incomplete, stale (another pipeline's fingerprint, another spec, another
 * version) or damaged is never read as data: found at make, the iterator writes a new cache
 * (WRITE); found in the middle of a pass (a bad frame at element i, or an I/O error), the
 * iterator makes the input from its start, writes its first i positions to a new temporary file
 * without handing them out, and goes on in WRITE mode from position i. That replay continues
 * the stream exactly for inputs that repeat themselves pass after pass (the case a cache is
 * for).
 *
 * Errors are not cached: an input error is handed out in its position, and the writer gives up
 * (removes its temporary file, goes on as PASS): a cache never holds error positions, and the
 * next pass meets the error in the input again. A cache that cannot be written (directory
 * missing, disk full, I/O error) leaves the stream intact and is simply not committed; the next
 * pass tries again. The input's END is seen only when the consumer asks for the element after
 * the last one: a consumer that stops at the last element (take(n) of exactly n) never commits.
 *
 * The content seed (as in the memory cache, ops/cache.c): the file holds the input's first pass,
 * and every pass yields exactly that, from the file or made again. The input is always made with
 * one iteration seed: the seed in the file's header when a pass reads the file, else the
 * dataset's content seed, fixed by the first iterator that reaches the cache (its ctx's
 * epoch0_seed, the seed of the file it found, or the seed in the state it is restored from;
 * guarded by mu). So
 * random ops below a file cache draw the same values in every epoch, a pass that rebuilds a lost
 * or damaged file makes the same elements, and a state saved before the file was complete
 * restores exactly in a new process (where later epochs write the file with that seed).
 *
 * Save/restore: every state holds the pass's content seed. READ: the element index; restore
 * validates the file again (its seed included) and seeks to the element with the footer's index
 * (every K-th offset) and a scan of at most K-1 frame headers; a file gone, damaged or made with
 * another seed by then is rebuilt from the input as above, with the state's seed. WRITE/PASS:
 * the index and the input's state; restore continues the input from its state in PASS mode (the
 * elements before it are not available to write).
 *
 * The path is not part of the dataset's salt or fingerprint: moving the cache file to another
 * folder changes no random draw above it, and a state saved with one path restores with another.
 *
 * I/O goes through platform/'s whole transfers (pread/pwrite loops over short transfers, fsync,
 * rename) with the runtime's fault hook for tests (ferry__runtime_set_file_fault): short reads
 * and writes, EIO, ENOSPC. The read buffer and the write buffer are counted in the runtime's
 * budget.
 *
 * Threads: none. An iterator runs on its consumer's thread.
 */
#include "ops.h"

#include <errno.h>

#include "base/crc32c.h"

#define FC_VERSION 2u
#define FC_BUF (256u * 1024u)
#define FC_INDEX_EVERY 1024u
#define FC_TRAILER 24
#define FC_MAX_FOOTER ((int64_t)64 << 20)
#define FC_PATH_MAX 4000

static const char fc_magic[8] = {'F', 'E', 'R', 'R', 'Y', 'F', 'C', 0};
static const char fc_end_magic[8] = {'F', 'C', 'F', 'O', 'O', 'T', 'E', 'R'};

enum { MODE_READ = 1, MODE_WRITE = 2, MODE_PASS = 3 };


/* ---- dataset and iterator --------------------------------------------------------------- */
typedef struct fc_ds {
    ferry_dataset base;
    char *path;
    ferry__mutex mu;
    bool seeded;   /* guarded by mu: seed is fixed */
    uint64_t seed; /* the content seed for passes that make the input */
} fc_ds;

typedef struct fc_it {
    ferry__iter base;
    ferry__ictx in_ctx; /* the input's context: base.ctx with the content seed */
    bool no_write;      /* restored under another content seed than the dataset's: a rebuild
                             passes through and writes no file */
    int mode;
    int64_t index;      /* positions handed out */
    ferry__iter *input; /* WRITE / PASS */
    bool ended;
    /* writer */
    int wfd;
    char *tmp;    /* temporary path while writing */
    int64_t woff; /* file offset of wbuf[0] */
    uint8_t *wbuf;
    size_t wlen;
    uint64_t *idx; /* offsets of elements i*K written so far */
    size_t nidx, idx_cap;
    /* reader */
    int rfd;
    int64_t roff;     /* offset of the next frame */
    int64_t data_end; /* offset of the footer */
    int64_t count;    /* elements in the file */
    uint64_t *ridx;   /* the footer's index */
    size_t nridx;
    uint8_t *rbuf;
    size_t rcap;
    int64_t rbase; /* file offset of rbuf[0] */
    size_t rlen;   /* valid bytes in rbuf */
    size_t header_size;
    size_t budget_bytes; /* buffer bytes counted in the budget */
} fc_it;

static ferry_runtime *it_rt(fc_it *it) { return it->base.ctx.rt; }
static const char *it_path(fc_it *it) { return ((const fc_ds *)it->base.ds)->path; }

static void count_buffer(fc_it *it, size_t n) {
    ferry__budget_force(&it_rt(it)->budget, n);
    it->budget_bytes += n;
}

/* ---- header ----------------------------------------------------------------------------- */
/* The header for this dataset's input, in a new buffer. */
static uint8_t *build_header(fc_it *it, uint64_t seed, size_t *size) {
    const ferry_dataset *in = it->base.ds->inputs[0];
    size_t n = 8 + 4 + 4 + 8 + 8 + 4 + 4;
    for (size_t i = 0; i < in->ncomp; i++) n += 8 + 8 * (size_t)FERRY__MAX(in->specs[i].shape.rank, 0);
    uint8_t *h = ferry__alloc(it_rt(it), n);
    if (!h) return NULL;
    size_t k = 0;
    memcpy(h, fc_magic, 8), k = 8;
    ferry__store_le32(h + k, FC_VERSION), k += 4;
    ferry__store_le32(h + k, (uint32_t)n), k += 4;
    ferry__store_le64(h + k, ferry__dataset_fingerprint(in)), k += 8;
    ferry__store_le64(h + k, seed), k += 8;
    ferry__store_le32(h + k, (uint32_t)in->ncomp), k += 4;
    for (size_t i = 0; i < in->ncomp; i++) {
        const ferry_tensor_spec *s = &in->specs[i];
        ferry__store_le32(h + k, (uint32_t)s->dtype), k += 4;
        ferry__store_le32(h + k, (uint32_t)(int32_t)s->shape.rank), k += 4;
        for (int d = 0; d < s->shape.rank; d++) ferry__store_le64(h + k, (uint64_t)s->shape.dims[d]), k += 8;
    }
    ferry__store_le32(h + k, ferry__crc32c(h, k)), k += 4;
    FERRY_ASSERT(k == n);
    *size = n;
    return h;
}

/* ---- writer ----------------------------------------------------------------------------- */
static void writer_abandon(fc_it *it) {
    if (it->wfd >= 0) {
        (void)ferry__fd_close(it->wfd);
        it->wfd = -1;
    }
    if (it->tmp) {
        (void)ferry__path_unlink(it->tmp);
        ferry__free(it_rt(it), it->tmp);
        it->tmp = NULL;
    }
    ferry__free(it_rt(it), it->idx);
    it->idx = NULL;
    it->nidx = it->idx_cap = 0;
    if (it->mode == MODE_WRITE) it->mode = MODE_PASS;
}

static bool w_flush(fc_it *it) {
    if (it->wfd < 0) return false;
    if (it->wlen == 0) return true;
    int e = ferry__fd_pwrite_all(it->wfd, it->woff, it->wbuf, it->wlen, &it_rt(it)->file_fault);
    if (e) {
        writer_abandon(it);
        return false;
    }
    it->woff += (int64_t)it->wlen;
    it->wlen = 0;
    return true;
}

static bool w_append(fc_it *it, const void *p, size_t n) {
    if (it->wfd < 0) return false;
    if (it->wlen + n > FC_BUF) {
        if (!w_flush(it)) return false;
        if (n >= FC_BUF) {
            int e = ferry__fd_pwrite_all(it->wfd, it->woff, p, n, &it_rt(it)->file_fault);
            if (e) {
                writer_abandon(it);
                return false;
            }
            it->woff += (int64_t)n;
            return true;
        }
    }
    memcpy(it->wbuf + it->wlen, p, n);
    it->wlen += n;
    return true;
}

static bool w_u32(fc_it *it, uint32_t v) {
    uint8_t b[4];
    ferry__store_le32(b, v);
    return w_append(it, b, 4);
}

/* Opens a temporary file next to path and writes the header. On failure the iterator is PASS. */
static void writer_open(fc_it *it) {
    ferry_runtime *rt = it_rt(it);
    const char *path = it_path(it);
    it->mode = MODE_PASS;
    if (!it->wbuf) {
        it->wbuf = ferry__alloc(rt, FC_BUF);
        if (!it->wbuf) return;
        count_buffer(it, FC_BUF);
    }
    size_t n = strlen(path) + 64;
    it->tmp = ferry__alloc(rt, n);
    if (!it->tmp) return;
    uint64_t r = ferry__mix64((uint64_t)ferry__now_ns(), (uint64_t)(uintptr_t)it);
    snprintf(it->tmp, n, "%s.tmp.%ld.%016llx", path, ferry__process_id(), (unsigned long long)r);
    if (ferry__fd_create(it->tmp, true, &it->wfd) != 0) {
        it->wfd = -1;
        ferry__free(rt, it->tmp);
        it->tmp = NULL;
        return;
    }
    it->mode = MODE_WRITE;
    it->woff = 0;
    it->wlen = 0;
    size_t hs;
    uint8_t *h = build_header(it, it->in_ctx.seed, &hs);
    if (!h) {
        writer_abandon(it);
        return;
    }
    w_append(it, h, hs);
    ferry__free(rt, h);
}

static int64_t w_offset(const fc_it *it) { return it->woff + (int64_t)it->wlen; }

static size_t tensor_payload(const ferry_tensor *t) {
    size_t n = 4 + 8 * (size_t)t->rank;
    if (t->dtype == FERRY_DTYPE_BYTES) {
        const uint64_t *off = (const uint64_t *)(const void *)t->data;
        n += 8 * ((size_t)t->n + 1) + (size_t)(off[t->n] - off[0]);
    } else {
        n += (size_t)t->n * ferry_dtype_size(t->dtype);
    }
    return n;
}

/* Appends data to the frame (and its checksum). */
static bool frame_put(fc_it *it, uint32_t *crc, const void *p, size_t n) {
    *crc = ferry__crc32c_extend(*crc, p, n);
    return w_append(it, p, n);
}

/* Writes element e as frame number it->index. On failure the writer is abandoned. */
static void writer_put(fc_it *it, const ferry_element *e) {
    if (it->mode != MODE_WRITE) return;
    int64_t i = it->index;
    if ((uint64_t)i % FC_INDEX_EVERY == 0) {
        if (it->nidx == it->idx_cap) {
            size_t cap = it->idx_cap ? 2 * it->idx_cap : 16;
            uint64_t *x = ferry__realloc(it_rt(it), it->idx, cap * sizeof *x);
            if (!x) {
                writer_abandon(it);
                return;
            }
            it->idx = x;
            it->idx_cap = cap;
        }
        it->idx[it->nidx++] = (uint64_t)w_offset(it);
    }
    size_t len = 4;
    for (uint32_t c = 0; c < e->n; c++) len += tensor_payload(e->t[c]);
    uint8_t b[8];
    uint32_t crc = 0;
    ferry__store_le64(b, (uint64_t)i);
    crc = ferry__crc32c_extend(crc, b, 8);
    ferry__store_le64(b, (uint64_t)len);
    bool ok = frame_put(it, &crc, b, 8);
    ferry__store_le32(b, e->n);
    ok = ok && frame_put(it, &crc, b, 4);
    for (uint32_t c = 0; ok && c < e->n; c++) {
        const ferry_tensor *t = e->t[c];
        uint8_t h[4] = {(uint8_t)t->dtype, (uint8_t)t->rank, 0, 0};
        ok = frame_put(it, &crc, h, 4);
        for (int d = 0; ok && d < t->rank; d++) {
            ferry__store_le64(b, (uint64_t)t->dims[d]);
            ok = frame_put(it, &crc, b, 8);
        }
        if (!ok) break;
        if (t->dtype == FERRY_DTYPE_BYTES) {
            const uint64_t *off = (const uint64_t *)(const void *)t->data;
            for (int64_t k = 0; ok && k <= t->n; k++) {
                ferry__store_le64(b, off[k] - off[0]);
                ok = frame_put(it, &crc, b, 8);
            }
            if (ok) ok = frame_put(it, &crc, t->blob + off[0], (size_t)(off[t->n] - off[0]));
        } else {
            ok = frame_put(it, &crc, t->data, (size_t)t->n * ferry_dtype_size(t->dtype));
        }
    }
    if (ok) ok = w_u32(it, crc);
    (void)ok; /* a failed append has abandoned the writer */
}

/* Writes the footer, fsyncs and renames over path. Always leaves the writer closed. */
static void writer_commit(fc_it *it) {
    if (it->mode != MODE_WRITE) return;
    int64_t footer = w_offset(it);
    uint32_t crc = 0;
    uint8_t b[8];
    bool ok = true;
#define FOOT_U64(v)                                                                                                    \
    do {                                                                                                               \
        ferry__store_le64(b, (uint64_t)(v));                                                                           \
        crc = ferry__crc32c_extend(crc, b, 8);                                                                         \
        ok = ok && w_append(it, b, 8);                                                                                 \
    } while (0)
    FOOT_U64(it->index);
    FOOT_U64(FC_INDEX_EVERY);
    FOOT_U64(it->nidx);
    for (size_t i = 0; i < it->nidx; i++) FOOT_U64(it->idx[i]);
    FOOT_U64(footer);
#undef FOOT_U64
    ok = ok && w_u32(it, crc) && w_u32(it, 0) && w_append(it, fc_end_magic, 8) && w_flush(it);
    if (!ok) return; /* abandoned */
    int e = ferry__fd_sync_hooked(it->wfd, &it_rt(it)->file_fault);
    int ce = ferry__fd_close(it->wfd);
    if (ce && !e) e = ce;
    it->wfd = -1;
    if (!e) e = ferry__path_rename_hooked(it->tmp, it_path(it), &it_rt(it)->file_fault);
    if (e) {
        writer_abandon(it);
        return;
    }
    (void)ferry__dir_sync(it_path(it)); /* the cache is complete either way; this makes it durable */
    ferry__free(it_rt(it), it->tmp);
    it->tmp = NULL;
    ferry__free(it_rt(it), it->idx);
    it->idx = NULL;
    it->nidx = it->idx_cap = 0;
    it->mode = MODE_PASS;
}

/* ---- reader ----------------------------------------------------------------------------- */
static void reader_close(fc_it *it) {
    if (it->rfd >= 0) (void)ferry__fd_close(it->rfd);
    it->rfd = -1;
    ferry__free(it_rt(it), it->ridx);
    it->ridx = NULL;
    it->nridx = 0;
    it->rlen = 0;
}

/* Opens path and checks header, footer and index. Returns true when the file is a valid cache
 * of this input (the iterator then holds it open, and *seed is the content seed in its header),
 * false otherwise (nothing held). */
static bool reader_open(fc_it *it, uint64_t *seed) {
    ferry_runtime *rt = it_rt(it);
    int64_t size = 0;
    if (ferry__fd_open_read(it_path(it), &it->rfd, &size) != 0) {
        it->rfd = -1;
        return false;
    }
    size_t hs = 0, got;
    uint8_t *want = NULL, *have = NULL, *foot = NULL;
    bool ok = size >= 0; /* a regular file */
    if (!ok) size = 0;
    if (ok) want = build_header(it, 0, &hs); /* for its size: the file's seed is read below */
    ok = want && size >= (int64_t)hs + 24 + FC_TRAILER;
    if (ok) have = ferry__alloc(rt, hs);
    ok = ok && have && ferry__fd_pread_full(it->rfd, 0, have, hs, &got, &it_rt(it)->file_fault) == 0 && got == hs;
    if (ok) {
        *seed = ferry__load_le64(have + 24);
        ferry__free(rt, want);
        want = build_header(it, *seed, &hs);
        ok = want && memcmp(have, want, hs) == 0;
    }
    uint8_t tr[FC_TRAILER];
    ok = ok && ferry__fd_pread_full(it->rfd, size - FC_TRAILER, tr, FC_TRAILER, &got, &it_rt(it)->file_fault) == 0 &&
         got == FC_TRAILER && memcmp(tr + 16, fc_end_magic, 8) == 0 && ferry__load_le32(tr + 12) == 0;
    int64_t foff = ok ? (int64_t)ferry__load_le64(tr) : 0;
    int64_t fsize = size - FC_TRAILER - foff; /* footer bytes before the trailer's offset field */
    ok = ok && foff >= (int64_t)hs && fsize >= 24 && fsize <= FC_MAX_FOOTER && (fsize - 24) % 8 == 0;
    if (ok) foot = ferry__alloc(rt, (size_t)fsize + 8);
    ok = ok && foot && ferry__fd_pread_full(it->rfd, foff, foot, (size_t)fsize, &got, &it_rt(it)->file_fault) == 0 &&
         got == (size_t)fsize;
    if (ok) {
        memcpy(foot + fsize, tr, 8); /* the footer offset is covered by the checksum */
        ok = ferry__crc32c(foot, (size_t)fsize + 8) == ferry__load_le32(tr + 8);
    }
    if (ok) {
        uint64_t count = ferry__load_le64(foot), every = ferry__load_le64(foot + 8), nidx = ferry__load_le64(foot + 16);
        ok = every == FC_INDEX_EVERY && nidx == (uint64_t)(fsize - 24) / 8 && count <= (uint64_t)INT64_MAX &&
             nidx == (count + every - 1) / every;
        if (ok && nidx > 0) {
            it->ridx = ferry__calloc(rt, (size_t)nidx, sizeof *it->ridx);
            ok = it->ridx != NULL;
            for (uint64_t i = 0; ok && i < nidx; i++) {
                it->ridx[i] = ferry__load_le64(foot + 24 + 8 * i);
                uint64_t lo = i == 0 ? hs : it->ridx[i - 1] + 1;
                ok = (i > 0 || it->ridx[0] == hs) && it->ridx[i] >= lo && it->ridx[i] < (uint64_t)foff;
            }
        }
        if (ok) {
            it->nridx = (size_t)nidx;
            it->count = (int64_t)count;
            it->data_end = foff;
            it->header_size = hs;
            it->roff = (int64_t)hs;
            it->rlen = 0;
            ok = count > 0 || foff == (int64_t)hs;
        }
    }
    ferry__free(rt, want);
    ferry__free(rt, have);
    ferry__free(rt, foot);
    if (!ok) reader_close(it);
    return ok;
}

/* Makes bytes [roff, roff + n) contiguous in rbuf. Returns 0, or -1 for a frame that runs past
 * the data or a read that fails. */
static int rd_ensure(fc_it *it, size_t n, const uint8_t **p) {
    if (it->roff >= it->rbase && (uint64_t)(it->roff - it->rbase) + n <= it->rlen) {
        *p = it->rbuf + (it->roff - it->rbase);
        return 0;
    }
    if ((int64_t)n > it->data_end - it->roff) return -1;
    size_t want = FERRY__MAX(n, (size_t)FC_BUF);
    if ((int64_t)want > it->data_end - it->roff) want = (size_t)(it->data_end - it->roff);
    if (want > it->rcap) {
        uint8_t *b = ferry__realloc(it_rt(it), it->rbuf, want);
        if (!b) return -1;
        count_buffer(it, want - it->rcap);
        it->rbuf = b;
        it->rcap = want;
    }
    size_t got;
    it->rlen = 0;
    if (ferry__fd_pread_full(it->rfd, it->roff, it->rbuf, want, &got, &it_rt(it)->file_fault) != 0 || got != want)
        return -1;
    it->rbase = it->roff;
    it->rlen = want;
    *p = it->rbuf;
    return 0;
}

/* Parses one element payload. Returns FERRY_OK or -1 (malformed). */
static int parse_payload(fc_it *it, const uint8_t *p, size_t len, ferry_element **out) {
    const ferry_dataset *ds = it->base.ds;
    ferry_runtime *rt = it_rt(it);
    const uint8_t *end = p + len;
    if (len < 4 || ferry__load_le32(p) != ds->ncomp) return -1;
    p += 4;
    ferry_element *e = ferry__element_new(rt, ds->ncomp);
    if (!e) return -1;
    ferry__status st;
    for (size_t c = 0; c < ds->ncomp; c++) {
        if (end - p < 4) goto fail;
        ferry_dtype dt = (ferry_dtype)p[0];
        int rank = p[1];
        p += 4;
        if ((int)dt <= 0 || dt >= FERRY_DTYPE_COUNT || rank > FERRY_MAX_RANK || end - p < 8 * rank) goto fail;
        int64_t dims[FERRY_MAX_RANK];
        for (int d = 0; d < rank; d++) dims[d] = (int64_t)ferry__load_le64(p + 8 * d);
        p += 8 * rank;
        int64_t n = ferry__num_entries(rank, dims);
        if (n < 0) goto fail;
        ferry_tensor *t = NULL;
        if (dt == FERRY_DTYPE_BYTES) {
            if ((uint64_t)(end - p) / 8 < (uint64_t)n + 1) goto fail;
            const uint8_t *offs = p;
            p += 8 * ((size_t)n + 1);
            uint64_t blob = ferry__load_le64(offs + 8 * (size_t)n);
            if (ferry__load_le64(offs) != 0 || blob > (uint64_t)(end - p)) goto fail;
            for (int64_t k = 0; k < n; k++)
                if (ferry__load_le64(offs + 8 * k) > ferry__load_le64(offs + 8 * (k + 1))) goto fail;
            if (ferry__tensor_new_bytes(rt, rank, dims, (size_t)blob, &t, &st)) goto fail;
            uint64_t *o = ferry__tensor_offsets(t);
            for (int64_t k = 0; k <= n; k++) o[k] = ferry__load_le64(offs + 8 * k);
            memcpy(ferry__tensor_blob_mut(t), p, (size_t)blob);
            p += blob;
        } else {
            size_t sz = ferry_dtype_size(dt);
            if ((uint64_t)n > (uint64_t)(end - p) / sz) goto fail;
            if (ferry__tensor_new(rt, dt, rank, dims, &t, &st)) goto fail;
            memcpy(t->data, p, (size_t)n * sz);
            p += (size_t)n * sz;
        }
        e->t[c] = t;
        if (ferry__spec_check(&ds->specs[c], t, "cached element", &st)) goto fail;
    }
    if (p != end) goto fail;
    *out = e;
    return FERRY_OK;
fail:
    ferry_element_free(e);
    return -1;
}

/* The element at roff (number it->index). Returns FERRY_OK, FERRY_END, or -1 (damaged). */
static int reader_next(fc_it *it, ferry_element **out) {
    if (it->index >= it->count) return it->roff == it->data_end ? FERRY_END : -1;
    const uint8_t *p;
    if (rd_ensure(it, 8, &p)) return -1;
    uint64_t len = ferry__load_le64(p);
    if (len > (uint64_t)(it->data_end - it->roff) || (uint64_t)(it->data_end - it->roff) - len < 12) return -1;
    if (rd_ensure(it, (size_t)len + 12, &p)) return -1;
    uint8_t b[8];
    ferry__store_le64(b, (uint64_t)it->index);
    uint32_t crc = ferry__crc32c_extend(0, b, 8);
    crc = ferry__crc32c_extend(crc, p, (size_t)len + 8);
    if (crc != ferry__load_le32(p + 8 + len)) return -1;
    if (parse_payload(it, p + 8, (size_t)len, out)) return -1;
    it->roff += (int64_t)len + 12;
    return FERRY_OK;
}

/* Moves the reader to element i (restore). Returns true on success. */
static bool reader_seek(fc_it *it, int64_t i) {
    if (i < 0 || i > it->count) return false;
    if (i == it->count) {
        it->roff = it->data_end;
        return true;
    }
    size_t slot = (size_t)((uint64_t)i / FC_INDEX_EVERY);
    it->roff = (int64_t)it->ridx[slot];
    for (int64_t k = (int64_t)slot * FC_INDEX_EVERY; k < i; k++) {
        uint8_t b[8];
        size_t got;
        if (ferry__fd_pread_full(it->rfd, it->roff, b, 8, &got, &it_rt(it)->file_fault) != 0 || got != 8) return false;
        uint64_t len = ferry__load_le64(b);
        if (len > (uint64_t)(it->data_end - it->roff) || (uint64_t)(it->data_end - it->roff) - len < 12) return false;
        it->roff += (int64_t)len + 12;
    }
    it->rlen = 0;
    return true;
}

/* ---- modes ------------------------------------------------------------------------------ */
/* The cache cannot be read (from element `skip` on): make the input from its start, write its
 * first `skip` positions to a new temporary file without handing them out, and go on in WRITE
 * mode (or PASS when writing is impossible). */
static int rebuild_from_input(fc_it *it, int64_t skip, ferry__status *st) {
    reader_close(it);
    ferry__iter_free(it->input);
    it->input = NULL;
    int rc = ferry__iter_make(it->base.ds->inputs[0], &it->in_ctx, NULL, &it->input, st);
    if (rc) return rc;
    int64_t saved = it->index;
    it->index = 0;
    if (it->no_write) it->mode = MODE_PASS;
    else writer_open(it);
    if (it->mode == MODE_PASS) {
        int64_t got = 0;
        rc = ferry__iter_skip(it->input, skip, &got, st);
        it->index = saved;
        return rc;
    }
    while (it->index < skip) {
        ferry_element *e = NULL;
        ferry__status tmp;
        rc = ferry__iter_next(it->input, &e, &tmp);
        if (rc == FERRY_END) break;
        if (rc == FERRY_ECANCELED && ferry__cancelled(it->base.ctx.cancel)) {
            it->index = saved;
            return ferry__fail(st, rc, "%s", tmp.msg);
        }
        if (rc == FERRY_OK) writer_put(it, e);
        else writer_abandon(it); /* an error position: not cacheable */
        ferry_element_free(e);
        it->index++;
    }
    it->index = saved;
    return FERRY_OK;
}

static int fc_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    fc_it *it = (fc_it *)it_;
    if (it->ended) return FERRY_END;
    if (it->mode == MODE_READ) {
        int rc = reader_next(it, out);
        if (rc == FERRY_OK) {
            it->index++;
            return FERRY_OK;
        }
        if (rc == FERRY_END) {
            it->ended = true;
            return FERRY_END;
        }
        /* Damaged or unreadable from here on: never hand out its data; rebuild. */
        rc = rebuild_from_input(it, it->index, st);
        if (rc) return rc;
    }
    ferry_element *e = NULL;
    int rc = ferry__iter_next(it->input, &e, st);
    if (rc == FERRY_END) {
        writer_commit(it);
        it->ended = true;
        return FERRY_END;
    }
    if (rc == FERRY_OK) writer_put(it, e);
    else if (it->mode == MODE_WRITE) writer_abandon(it);
    it->index++;
    *out = e;
    return rc;
}

static int fc_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    fc_it *it = (fc_it *)it_;
    ferry__w_u8(w, it->mode == MODE_READ ? MODE_READ : MODE_PASS);
    ferry__w_u8(w, it->ended ? 1 : 0);
    ferry__w_i64(w, it->index);
    ferry__w_u64(w, it->in_ctx.seed);
    if (it->mode != MODE_READ) return ferry__iter_save(it->input, w, st);
    return FERRY_OK;
}

static void fc_destroy(ferry__iter *it_) {
    fc_it *it = (fc_it *)it_;
    ferry_runtime *rt = it_rt(it);
    writer_abandon(it);
    reader_close(it);
    ferry__iter_free(it->input);
    ferry__free(rt, it->wbuf);
    ferry__free(rt, it->rbuf);
    ferry__budget_release(&rt->budget, it->budget_bytes);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable fc_iter_vt = {fc_next, fc_save, NULL, fc_destroy};

/* The dataset's content seed: fixed by the first caller, then returned to every later one. */
static uint64_t fc_content_seed(fc_ds *ds, uint64_t seed) {
    ferry__mutex_lock(&ds->mu);
    if (!ds->seeded) {
        ds->seeded = true;
        ds->seed = seed;
    }
    seed = ds->seed;
    ferry__mutex_unlock(&ds->mu);
    return seed;
}

static int fc_make(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                   ferry__status *st) {
    fc_ds *fds = (fc_ds *)ds;
    fc_it *it = ferry__iter_alloc(ds, ctx, &fc_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    it->wfd = -1;
    it->rfd = -1;
    it->in_ctx = *ctx;
    int rc = FERRY_OK;
    uint64_t file_seed = 0;
    if (!state) {
        if (reader_open(it, &file_seed)) {
            it->mode = MODE_READ;
            it->in_ctx.seed = it->in_ctx.epoch0_seed = file_seed; /* a damaged file is rebuilt with its seed */
            (void)fc_content_seed(fds, file_seed);
        } else {
            it->in_ctx.seed = it->in_ctx.epoch0_seed = fc_content_seed(fds, ctx->epoch0_seed);
            rc = ferry__iter_make(ds->inputs[0], &it->in_ctx, NULL, &it->input, st);
            if (!rc) writer_open(it);
        }
    } else {
        uint8_t mode, ended;
        int64_t index;
        uint64_t seed;
        rc = ferry__r_u8(state, &mode, st);
        if (!rc) rc = ferry__r_u8(state, &ended, st);
        if (!rc) rc = ferry__r_i64(state, &index, st);
        if (!rc) rc = ferry__r_u64(state, &seed, st);
        if (!rc && ((mode != MODE_READ && mode != MODE_PASS) || ended > 1 || index < 0))
            rc = ferry__fail(st, FERRY_ECORRUPT, "cache: state corrupt: mode %u, index %lld", mode, (long long)index);
        if (!rc) {
            it->index = index;
            it->ended = ended != 0;
            it->in_ctx.seed = it->in_ctx.epoch0_seed = seed;
            it->no_write = fc_content_seed(fds, seed) != seed; /* never replace the dataset's file */
            if (mode == MODE_PASS) {
                it->mode = MODE_PASS;
                rc = ferry__iter_make(ds->inputs[0], &it->in_ctx, state, &it->input, st);
            } else if (reader_open(it, &file_seed) && file_seed == seed && reader_seek(it, index)) {
                it->mode = MODE_READ;
            } else {
                rc = rebuild_from_input(it, index, st);
            }
        }
    }
    if (rc) {
        fc_destroy(&it->base);
        return rc;
    }
    *out = &it->base;
    return FERRY_OK;
}

static void fc_ds_destroy(ferry_dataset *ds) {
    ferry__mutex_destroy(&((fc_ds *)ds)->mu);
    ferry__free(ds->rt, ((fc_ds *)ds)->path);
}

static void fc_ds_destroy_nolock(ferry_dataset *ds) { ferry__free(ds->rt, ((fc_ds *)ds)->path); }

static const ferry__dataset_vtable fc_vt = {.make = fc_make, .destroy = fc_ds_destroy};
static const ferry__dataset_vtable fc_vt_nolock = {.make = fc_make,
                                                   .destroy = fc_ds_destroy_nolock}; /* before the lock exists */

int ferry__dataset_file_cache(ferry_dataset *in, const char *path, const char *name, ferry_dataset **out) {
    *out = NULL;
    FERRY__CHECK_ARG(path && path[0], FERRY_EINVAL, "ferry_dataset_cache: argument 'path' is empty");
    size_t n = strlen(path);
    FERRY__CHECK_ARG(n <= FC_PATH_MAX, FERRY_EINVAL,
                     "ferry_dataset_cache: argument 'path' is %zu bytes long; at most %d", n, FC_PATH_MAX);
    ferry_dataset *ds;
    int rc = ferry__dataset_new(in->rt, &fc_vt_nolock, "cache", sizeof(fc_ds), 1, &in, in->ncomp, in->specs,
                                in->cardinality, &ds);
    if (rc) return rc;
    fc_ds *d = (fc_ds *)ds;
    d->path = ferry__mem_strdup(&in->rt->alloc, path);
    if (!d->path) {
        ferry_dataset_unref(ds);
        return ferry__set_last_error(FERRY_ENOMEM, "ferry_dataset_cache: copying the path failed");
    }
    if (ferry__mutex_init(&d->mu)) {
        ferry_dataset_unref(ds);
        return ferry__set_last_error(FERRY_ENOMEM, "ferry_dataset_cache: creating the cache lock failed");
    }
    ds->vt = &fc_vt;                    /* from here on, destroying it destroys the lock */
    ferry__dataset_hash(ds, "file", 4); /* not the path: see "The path is not part of ..." above */
    ferry__dataset_set_label(ds, name);
    ferry__dataset_seal(ds);
    *out = ds;
    return FERRY_OK;
}
