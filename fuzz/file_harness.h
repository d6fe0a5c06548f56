/*
 * file_harness.h - what the fuzz targets of the file readers (fuzz_text.c, fuzz_fixed_length.c)
 * share: CHECK (abort with file and line), one temporary file per process (in /dev/shm when it
 * exists, else /tmp; rewritten for every input, removed at exit; FUZZ_TMP_NAME names it), gzip /
 * zlib compression of an input, and the list of positions (element bytes or error code) a pass
 * produced, with its comparison. Include after the system headers and ferry.h, with
 * FUZZ_TMP_NAME defined; everything here is static.
 */
#ifndef FERRY_FUZZ_FILE_HARNESS_H
#define FERRY_FUZZ_FILE_HARNESS_H

#ifndef FUZZ_TMP_NAME
#error "define FUZZ_TMP_NAME before including file_harness.h"
#endif

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                                   \
            abort();                                                                                                   \
        }                                                                                                              \
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
        snprintf(tmp_path, sizeof tmp_path, "%s/ferry-fuzz-" FUZZ_TMP_NAME "-XXXXXX", dir);
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

/* ---- one input: the file, the file list, a pass saved midway, its restore ---------------- */
/* Writes the input's bytes to the temporary file as mode (flags bits 0-1) says: 0 plain; 1 / 2
 * gzip / zlib-compressed here (*z: the compressed bytes, malloc'ed, *zn their size); 3 the raw
 * bytes, to be read as GZIP (garbage for the inflater). Returns the compression to read with. */
static ferry_compression write_input(int mode, const uint8_t *data, size_t size, uint8_t **z, size_t *zn) {
    *z = NULL;
    *zn = 0;
    if (mode == 1 || mode == 2) {
        *zn = squeeze(data, size, mode == 1 ? 16 + 9 : 9, z);
        write_tmp(*z, *zn);
        return mode == 1 ? FERRY_COMPRESSION_GZIP : FERRY_COMPRESSION_ZLIB;
    }
    write_tmp(data, size);
    return mode == 3 ? FERRY_COMPRESSION_GZIP : FERRY_COMPRESSION_NONE;
}

/* The file list flags ask for: the file; a missing file after it (bit 4); the file again
 * (bit 3). Returns the count. */
static size_t file_list(uint8_t flags, const char *files[3]) {
    size_t n = 0;
    files[n++] = tmp_path;
    if (flags & 16) files[n++] = missing_path;
    if (flags & 8) files[n++] = tmp_path;
    return n;
}

/* Reads up to max positions (max < 0: to the end) into l, checking each element; the target's. */
typedef void (*drain_fn)(ferry_iterator *it, poslist *l, long max, size_t bound);

/* One pass over ds into *full, saved after k positions: returns the state, *at the positions
 * read when it was saved. */
static ferry_blob *pass_saved_midway(ferry_dataset *ds, drain_fn drain, size_t k, size_t bound, poslist *full,
                                     size_t *at) {
    ferry_iterator *it;
    CHECK(ferry_iterator_create(ds, NULL, &it) == FERRY_OK);
    drain(it, full, (long)k, bound);
    *at = full->n;
    ferry_blob *b;
    CHECK(ferry_iterator_save(it, &b) == FERRY_OK);
    drain(it, full, -1, bound);
    ferry_iterator_free(it);
    return b;
}

/* The state b restored in a new iterator gives exactly full's positions from `at` on. Frees b. */
static void check_restore(ferry_dataset *ds, drain_fn drain, ferry_blob *b, const poslist *full, size_t at,
                          size_t bound) {
    ferry_iterator *r;
    CHECK(ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), NULL, &r) == FERRY_OK);
    poslist tail = {0};
    drain(r, &tail, -1, bound);
    CHECK(tail.n == full->n - at);
    for (size_t i = 0; i < tail.n; i++) CHECK(same(&tail.v[i], &full->v[at + i]));
    ferry_iterator_free(r);
    ferry_blob_free(b);
    poslist_free(&tail);
}

#endif
