/*
 * fuzz_fixed_length.c - fuzz target for fixed_length_records (src/io/fixed_length.c) and the
 * decompressing stream under it, reading real files.
 *
 * Input: [flags][sizes][k][bytes]. sizes: record_bytes = 1 + (low 4 bits), header_bytes and
 * footer_bytes = 0..3 and 0..3 (bits 4-5, 6-7) scaled by flags bit 5 (x 5). The bytes are
 * written to a temporary file (in /dev/shm when it exists, else /tmp; one per process, rewritten
 * for every input, removed at exit) and read with options from flags: bits 0-1: 0 plain; 1 / 2:
 * the bytes gzip / zlib-compressed by this target and read with that compression; 3: the raw
 * bytes read as GZIP (garbage for the inflater). bit 2: a read buffer of 1, 3, 16 or 100 bytes
 * (bits 6-7 pick it), else 4 KiB. bit 3: the file twice in the list. bit 4: a missing file
 * between them.
 *
 * Checks, besides the sanitizers: every position is a bytes scalar of record_bytes bytes or an
 * error with a message; the stream ends within a bound of positions; when the content is known
 * (all modes but 3) the positions equal a reference (a file shorter than header + footer is one
 * FERRY_ECORRUPT; otherwise its whole records, then one FERRY_ECORRUPT if the body leaves a
 * partial record); the pass saves its state after k positions (k from the third byte) and goes
 * on; the state restored in a new iterator gives exactly the rest of that pass. Everything made
 * is freed: the runtime must be empty at the end.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "ferry.h"

#define CHECK(cond)                                                                              \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "fuzz_fixed_length.c:%d: check failed: %s\n", __LINE__, #cond);              \
            abort();                                                                             \
        }                                                                                        \
    } while (0)

/* ---- the temporary file ------------------------------------------------------------------- */
static char tmp_path[128];
static char missing_path[160];

static void remove_tmp(void) {
    if (tmp_path[0]) unlink(tmp_path);
}

static void write_tmp(const uint8_t *p, size_t n) {
    if (!tmp_path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(tmp_path, sizeof tmp_path, "%s/ferry-fuzz-fixed-XXXXXX", dir);
        int fd = mkstemp(tmp_path);
        CHECK(fd >= 0);
        close(fd);
        snprintf(missing_path, sizeof missing_path, "%s.missing", tmp_path);
        atexit(remove_tmp);
    }
    int fd = open(tmp_path, O_WRONLY | O_TRUNC);
    CHECK(fd >= 0);
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, p + done, n - done);
        CHECK(w > 0);
        done += (size_t)w;
    }
    close(fd);
}

/* gzip or zlib compression of p (a 512-byte window and the smallest state: fast to set up, and
 * any inflater reads it); *out malloc'ed. */
static size_t squeeze(const uint8_t *p, size_t n, int window_bits, uint8_t **out) {
    z_stream z;
    memset(&z, 0, sizeof z);
    CHECK(deflateInit2(&z, 1, Z_DEFLATED, window_bits, 1, Z_DEFAULT_STRATEGY) == Z_OK);
    size_t cap = deflateBound(&z, (uLong)n) + 32;
    *out = malloc(cap);
    CHECK(*out != NULL);
    z.next_in = (Bytef *)(uintptr_t)p;
    z.avail_in = (uInt)n;
    z.next_out = *out;
    z.avail_out = (uInt)cap;
    CHECK(deflate(&z, Z_FINISH) == Z_STREAM_END);
    size_t got = cap - z.avail_out;
    deflateEnd(&z);
    return got;
}

/* ---- positions -------------------------------------------------------------------------- */
typedef struct pos {
    int rc;
    uint8_t *p; /* line bytes (malloc'ed), NULL for errors */
    size_t len;
} pos;

typedef struct poslist {
    pos *v;
    size_t n, cap;
} poslist;

static void push(poslist *l, int rc, const uint8_t *p, size_t len) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        CHECK(l->v != NULL);
    }
    pos *x = &l->v[l->n++];
    x->rc = rc;
    x->len = len;
    x->p = NULL;
    if (rc == FERRY_OK) {
        x->p = malloc(len ? len : 1);
        CHECK(x->p != NULL);
        if (len) memcpy(x->p, p, len);
    }
}

static void poslist_free(poslist *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i].p);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static bool same(const pos *a, const pos *b) {
    return a->rc == b->rc && a->len == b->len && (a->rc != FERRY_OK || a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

static size_t expect_len; /* record_bytes of the current input */

static void drain(ferry_iterator *it, poslist *l, long max, size_t bound) {
    for (long i = 0; max < 0 || i < max; i++) {
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) {
            CHECK(e == NULL);
            return;
        }
        if (rc == FERRY_OK) {
            CHECK(e != NULL && ferry_element_size(e) == 1);
            const ferry_tensor *t = ferry_element_get(e, 0);
            CHECK(ferry_tensor_dtype(t) == FERRY_BYTES && ferry_tensor_rank(t) == 0);
            const uint8_t *p;
            size_t len;
            CHECK(ferry_tensor_bytes_get(t, 0, &p, &len) == FERRY_OK);
            CHECK(len == expect_len);
            push(l, rc, p, len);
            ferry_element_free(e);
        } else {
            CHECK(rc < 0 && e == NULL && ferry_iterator_error(it)[0] != '\0');
            push(l, rc, NULL, 0);
        }
        CHECK(l->n <= bound);
    }
}

/* The reference: the positions one file with this content gives. */
static void reference_records(const uint8_t *p, size_t n, size_t rb, size_t hb, size_t fb, poslist *out) {
    if (n < hb + fb) {
        push(out, FERRY_ECORRUPT, NULL, 0);
        return;
    }
    size_t body = n - hb - fb;
    for (size_t i = 0; i + rb <= body; i += rb) push(out, FERRY_OK, p + hb + i, rb);
    if (body % rb) push(out, FERRY_ECORRUPT, NULL, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    uint8_t flags = data[0], sizes = data[1], kbyte = data[2];
    data += 3;
    size -= 3;
    int mode = flags & 3;
    size_t scale = (flags & 32) ? 5 : 1;
    size_t rb = 1 + (sizes & 15), hb = ((sizes >> 4) & 3) * scale, fb = ((sizes >> 6) & 3) * scale;
    expect_len = rb;
    uint8_t *z = NULL;
    size_t zn = 0;
    ferry_fixed_length_options o = {
        .record_bytes = (int64_t)rb, .header_bytes = (int64_t)hb, .footer_bytes = (int64_t)fb};
    if (mode == 1 || mode == 2) {
        zn = squeeze(data, size, mode == 1 ? 16 + 9 : 9, &z);
        write_tmp(z, zn);
        o.compression = mode == 1 ? FERRY_COMPRESSION_GZIP : FERRY_COMPRESSION_ZLIB;
    } else {
        write_tmp(data, size);
        o.compression = mode == 3 ? FERRY_COMPRESSION_GZIP : FERRY_COMPRESSION_NONE;
    }
    static const size_t small[4] = {1, 3, 16, 100};
    o.buffer_size = (flags & 4) ? small[flags >> 6] : 4096;
    const char *files[3];
    size_t nfiles = 0;
    files[nfiles++] = tmp_path;
    if (flags & 16) files[nfiles++] = missing_path;
    if (flags & 8) files[nfiles++] = tmp_path;

    ferry_runtime *rt;
    CHECK(ferry_runtime_create(NULL, &rt) == FERRY_OK);
    ferry_dataset *ds;
    CHECK(ferry_dataset_fixed_length_records(rt, nfiles, files, &o, &ds) == FERRY_OK);
    size_t bound = nfiles * (1100 * (size + zn) + 16);
    /* One pass, saved after k positions (k from the k byte, modulo a bound of the length). */
    size_t k = kbyte % (size + zn + 2);
    ferry_iterator *it;
    CHECK(ferry_iterator_create(ds, NULL, &it) == FERRY_OK);
    poslist full = {0};
    drain(it, &full, (long)k, bound);
    k = full.n;
    ferry_blob *b;
    CHECK(ferry_iterator_save(it, &b) == FERRY_OK);
    drain(it, &full, -1, bound);
    ferry_iterator_free(it);

    if (mode != 3) {
        poslist want = {0};
        reference_records(data, size, rb, hb, fb, &want);
        size_t one = want.n;
        if (flags & 16) push(&want, FERRY_ENOTFOUND, NULL, 0);
        if (flags & 8)
            for (size_t i = 0; i < one; i++) push(&want, want.v[i].rc, want.v[i].p, want.v[i].len);
        CHECK(full.n == want.n);
        for (size_t i = 0; i < full.n; i++) CHECK(same(&full.v[i], &want.v[i]));
        poslist_free(&want);
    }

    ferry_iterator *r;
    CHECK(ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), NULL, &r) == FERRY_OK);
    poslist tail = {0};
    drain(r, &tail, -1, bound);
    CHECK(tail.n == full.n - k);
    for (size_t i = 0; i < tail.n; i++) CHECK(same(&tail.v[i], &full.v[k + i]));
    ferry_iterator_free(r);
    ferry_blob_free(b);
    ferry_dataset_unref(ds);
    CHECK(ferry_runtime_free(rt) == FERRY_OK);
    poslist_free(&full);
    poslist_free(&tail);
    free(z);
    return 0;
}
