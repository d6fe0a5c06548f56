/*
 * test_tfrecord.c - TFRecord reading and writing, the read stream under it, and list_files.
 *
 * Byte-exact framing against the reference vectors; round trips for none / gzip / zlib with
 * empty and 1 MB records; every single-bit flip of a small file detected and never a wrong
 * record; truncation at every byte of the last record; a forged 2^40-byte header refused
 * without allocating it (counting allocator); dropping bad records with a limit; save/restore
 * at every position (plain, gzip, several files, errors in the stream, the file-name-dataset
 * form); I/O faults (short reads, EIO); list_files with shuffle; parallel reads; the real files
 * in ../shared/data/tfrecord (skipped when absent). Each test uses its own temporary folder.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <zlib.h>

#include "base/crc32c.h"
#include "io/io.h"
#include "runner.h"

/* ---- helpers ---------------------------------------------------------------------------- */
static char tmpdir[256];

static void tmp_make(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ferry_tfr_XXXXXX");
    ASSERT(mkdtemp(tmpdir) != NULL);
}

static void tmp_clean(void) {
    DIR *d = opendir(tmpdir);
    if (!d) return;
    struct dirent *de;
    char p[512];
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", tmpdir, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tmpdir);
}

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) & 3;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

/* Record i of a test set: deterministic bytes of length lens[i]. */
static uint8_t *make_record(int i, size_t len) {
    uint8_t *p = malloc(len ? len : 1);
    uint32_t x = 2166136261u ^ (uint32_t)i;
    for (size_t k = 0; k < len; k++) {
        x = x * 16777619u + 0x9e37u;
        p[k] = (uint8_t)(x >> 13);
    }
    return p;
}

typedef struct recset {
    int n;
    size_t len[64];
    uint8_t *data[64];
} recset;

static void recset_init(recset *r, int n, const size_t *lens) {
    r->n = n;
    for (int i = 0; i < n; i++) {
        r->len[i] = lens[i];
        r->data[i] = make_record(i * 7919 + (int)lens[i], lens[i]);
    }
}

static void recset_free(recset *r) {
    for (int i = 0; i < r->n; i++) free(r->data[i]);
}

static void write_file(ferry_runtime *rt, const char *path, ferry_compression c, const recset *r) {
    ferry_tfrecord_writer_options o = {.compression = c};
    ferry_tfrecord_writer *w;
    ASSERT_OK(ferry_tfrecord_writer_open(rt, path, &o, &w));
    for (int i = 0; i < r->n; i++) ASSERT_OK(ferry_tfrecord_writer_write(w, r->data[i], r->len[i]));
    ASSERT_OK(ferry_tfrecord_writer_close(w));
}

static uint8_t *read_whole(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    ASSERT(f != NULL);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)n + 1);
    ASSERT_EQ(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return p;
}

static void write_whole(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    ASSERT(f != NULL);
    ASSERT_EQ(fwrite(p, 1, n, f), n);
    fclose(f);
}

/* One position of a stream: an element's bytes or an error. */
typedef struct item {
    int rc;
    size_t len;
    uint8_t *data;
    char msg[512];
} item;

typedef struct seq {
    int n;
    item *it;
} seq;

static void seq_free(seq *s) {
    for (int i = 0; i < s->n; i++) free(s->it[i].data);
    free(s->it);
    s->n = 0;
    s->it = NULL;
}

/* Collects up to `max` positions (or all, until END, when max < 0); at most `bound` in total. */
static seq collect(ferry_iterator *it, int max, int bound) {
    seq s = {0, calloc((size_t)bound + 1, sizeof(item))};
    while (max < 0 || s.n < max) {
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) break;
        if (s.n >= bound) FAILF("more than %d positions: the reader does not make progress", bound);
        item *x = &s.it[s.n++];
        x->rc = rc;
        if (rc == FERRY_OK) {
            ASSERT(e != NULL);
            ferry_tensor *t = ferry_element_get(e, 0);
            ASSERT_EQ(ferry_tensor_dtype(t), FERRY_DTYPE_BYTES);
            ASSERT_EQ(ferry_tensor_rank(t), 0);
            const uint8_t *p;
            ASSERT_OK(ferry_tensor_bytes_get(t, 0, &p, &x->len));
            x->data = malloc(x->len ? x->len : 1);
            memcpy(x->data, p, x->len);
            ferry_element_free(e);
        } else {
            ASSERT(e == NULL);
            snprintf(x->msg, sizeof x->msg, "%s", ferry_iterator_error(it));
        }
    }
    return s;
}

static seq read_ds(ferry_dataset *ds, int bound) {
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    seq s = collect(it, -1, bound);
    ferry_element *e = NULL;
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
    ferry_iterator_free(it);
    return s;
}

static void assert_seq_is_recset(const seq *s, const recset *r) {
    ASSERT_EQ(s->n, r->n);
    for (int i = 0; i < r->n; i++) {
        if (s->it[i].rc != FERRY_OK) FAILF("position %d: %s: %s", i, ferry_error_name(s->it[i].rc), s->it[i].msg);
        ASSERT_EQ(s->it[i].len, r->len[i]);
        ASSERT(memcmp(s->it[i].data, r->data[i], r->len[i]) == 0);
    }
}

static void assert_same_seq(const seq *a, int from, const seq *b) {
    ASSERT_EQ(a->n - from, b->n);
    for (int i = 0; i < b->n; i++) {
        const item *x = &a->it[from + i], *y = &b->it[i];
        if (x->rc != y->rc)
            FAILF("position %d: %s vs %s (%s | %s)", from + i, ferry_error_name(x->rc), ferry_error_name(y->rc), x->msg,
                  y->msg);
        if (x->rc == FERRY_OK) {
            ASSERT_EQ(x->len, y->len);
            ASSERT(memcmp(x->data, y->data, x->len) == 0);
        } else if (strcmp(x->msg, y->msg) != 0) {
            FAILF("position %d: messages differ: '%s' vs '%s'", from + i, x->msg, y->msg);
        }
    }
}

static ferry_dataset *tfr_ds(ferry_runtime *rt, int n, const char *const *files, const ferry_tfrecord_options *o) {
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_tfrecord(rt, (size_t)n, files, o, &ds));
    return ds;
}

static int64_t dropped_of(ferry_iterator *it, const char *name) {
    ferry_stage_stats st[16];
    size_t n;
    ASSERT_OK(ferry_iterator_stats(it, st, 16, &n));
    for (size_t i = 0; i < n && i < 16; i++)
        if (strcmp(st[i].name, name) == 0) return st[i].errors_dropped;
    FAILF("no stage named %s", name);
    return -1;
}

/* ---- framing ---------------------------------------------------------------------------- */
TEST(writer_matches_reference_vectors) {
    tmp_make();
    ferry_runtime *rt = rt_new();
    ferry_tfrecord_writer *w;
    ASSERT_OK(ferry_tfrecord_writer_open(rt, tmp_path("v.tfrecord"), NULL, &w));
    ASSERT_OK(ferry_tfrecord_writer_write(w, NULL, 0));
    ASSERT_OK(ferry_tfrecord_writer_write(w, "hello", 5));
    ASSERT_STR_CONTAINS(ferry_tfrecord_writer_error(w), "");
    ASSERT_OK(ferry_tfrecord_writer_close(w));
    static const uint8_t want[] = {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x29, 0x03, 0x98, 0x07, 0xd8,
                                   0xea, 0x82, 0xa2, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xea, 0xb2,
                                   0x04, 0x3e, 'h',  'e',  'l',  'l',  'o',  0xbb, 0x1f, 0x1c, 0x19};
    size_t n;
    uint8_t *got = read_whole(tmp_path("v.tfrecord"), &n);
    ASSERT_EQ(n, sizeof want);
    ASSERT(memcmp(got, want, n) == 0);
    /* And the reader gives them back. */
    const char *f[1] = {tmp_path("v.tfrecord")};
    ferry_dataset *ds = tfr_ds(rt, 1, f, NULL);
    seq s = read_ds(ds, 10);
    ASSERT_EQ(s.n, 2);
    ASSERT_EQ(s.it[0].rc, FERRY_OK);
    ASSERT_EQ(s.it[0].len, 0);
    ASSERT_EQ(s.it[1].len, 5);
    ASSERT(memcmp(s.it[1].data, "hello", 5) == 0);
    seq_free(&s);
    ferry_dataset_unref(ds);
    /* The same bytes from memory, without a file. */
    ASSERT_OK(ferry__dataset_tfrecord_memory(rt, "vectors", want, sizeof want, NULL, &ds));
    s = read_ds(ds, 10);
    ASSERT_EQ(s.n, 2);
    ASSERT_EQ(s.it[1].rc, FERRY_OK);
    seq_free(&s);
    ferry_dataset_unref(ds);
    free(got);
    rt_done(rt);
    tmp_clean();
}

TEST(roundtrip_none_gzip_zlib) {
    tmp_make();
    ferry_runtime *rt = rt_new();
    size_t lens[] = {0, 1, 5, 0, 1000, 300 * 1024, 1 << 20, 12, 0, 65536, 3};
    recset r;
    recset_init(&r, (int)(sizeof lens / sizeof lens[0]), lens);
    ferry_compression cs[3] = {FERRY_COMPRESSION_NONE, FERRY_COMPRESSION_GZIP, FERRY_COMPRESSION_ZLIB};
    const char *names[3] = {"r.tfrecord", "r.tfrecord.gz", "r.tfrecord.zz"};
    size_t bufs[3] = {0, 64, 4096};
    for (int c = 0; c < 3; c++) {
        write_file(rt, tmp_path(names[c]), cs[c], &r);
        size_t n;
        uint8_t *raw = read_whole(tmp_path(names[c]), &n);
        if (cs[c] == FERRY_COMPRESSION_GZIP) ASSERT(raw[0] == 0x1f && raw[1] == 0x8b);
        if (cs[c] == FERRY_COMPRESSION_ZLIB) ASSERT((raw[0] * 256 + raw[1]) % 31 == 0 && (raw[0] & 0x0f) == 8);
        free(raw);
        for (int b = 0; b < 3; b++) {
            ferry_tfrecord_options o = {.compression = cs[c], .buffer_size = bufs[b]};
            const char *f[1] = {tmp_path(names[c])};
            ferry_dataset *ds = tfr_ds(rt, 1, f, &o);
            seq s = read_ds(ds, 100);
            assert_seq_is_recset(&s, &r);
            seq_free(&s);
            ferry_dataset_unref(ds);
        }
    }
    /* The gzip file is a standard gzip stream: zlib's own reader decompresses it to the plain
     * file's bytes. */
    size_t plain_n;
    uint8_t *plain = read_whole(tmp_path(names[0]), &plain_n);
    gzFile gz = gzopen(tmp_path(names[1]), "rb");
    ASSERT(gz != NULL);
    uint8_t *un = malloc(plain_n + 16);
    ASSERT_EQ(gzread(gz, un, (unsigned)plain_n + 16), (int)plain_n);
    gzclose(gz);
    ASSERT(memcmp(un, plain, plain_n) == 0);
    free(un);
    free(plain);
    recset_free(&r);
    rt_done(rt);
    tmp_clean();
}

TEST(gzip_concatenated_members_and_padding) {
    tmp_make();
    ferry_runtime *rt = rt_new();
    size_t l1[] = {3, 0, 100}, l2[] = {7, 2000};
    recset a, b;
    recset_init(&a, 3, l1);
    recset_init(&b, 2, l2);
    write_file(rt, tmp_path("a.gz"), FERRY_COMPRESSION_GZIP, &a);
    write_file(rt, tmp_path("b.gz"), FERRY_COMPRESSION_GZIP, &b);
    size_t na, nb;
    uint8_t *pa = read_whole(tmp_path("a.gz"), &na), *pb = read_whole(tmp_path("b.gz"), &nb);
    uint8_t *cat = malloc(na + nb + 64);
    memcpy(cat, pa, na);
    memcpy(cat + na, pb, nb);
    memset(cat + na + nb, 0, 64);
    write_whole(tmp_path("ab.gz"), cat, na + nb + 64);
    ferry_tfrecord_options o = {.compression = FERRY_COMPRESSION_GZIP};
    const char *f[1] = {tmp_path("ab.gz")};
    ferry_dataset *ds = tfr_ds(rt, 1, f, &o);
    seq s = read_ds(ds, 20);
    ASSERT_EQ(s.n, 5);
    for (int i = 0; i < 5; i++) {
        const recset *r = i < 3 ? &a : &b;
        int k = i < 3 ? i : i - 3;
        ASSERT_EQ(s.it[i].rc, FERRY_OK);
        ASSERT_EQ(s.it[i].len, r->len[k]);
        ASSERT(memcmp(s.it[i].data, r->data[k], r->len[k]) == 0);
    }
    seq_free(&s);
    ferry_dataset_unref(ds);
    /* Garbage after the members is damaged data: an error after the records, then the end. */
    memset(cat + na + nb, 0x55, 8);
    write_whole(tmp_path("ab.gz"), cat, na + nb + 8);
    ds = tfr_ds(rt, 1, f, &o);
    s = read_ds(ds, 20);
    ASSERT_EQ(s.n, 6);
    ASSERT_EQ(s.it[5].rc, FERRY_ECORRUPT);
    ASSERT_STR_CONTAINS(s.it[5].msg, "ab.gz");
    seq_free(&s);
    ferry_dataset_unref(ds);
    free(cat);
    free(pa);
    free(pb);
    recset_free(&a);
    recset_free(&b);
    rt_done(rt);
    tmp_clean();
}

TEST(empty_file_and_no_files) {
    tmp_make();
    ferry_runtime *rt = rt_new();
    write_whole(tmp_path("empty"), "", 0);
    ferry_compression cs[3] = {FERRY_COMPRESSION_NONE, FERRY_COMPRESSION_GZIP, FERRY_COMPRESSION_ZLIB};
    for (int c = 0; c < 3; c++) {
        ferry_tfrecord_options o = {.compression = cs[c]};
        const char *f[2] = {tmp_path("empty"), tmp_path("empty")};
        ferry_dataset *ds = tfr_ds(rt, 2, f, &o);
        seq s = read_ds(ds, 5);
        ASSERT_EQ(s.n, 0);
        seq_free(&s);
        ferry_dataset_unref(ds);
    }
    ferry_dataset *ds = tfr_ds(rt, 0, NULL, NULL);
    ASSERT_EQ(ferry_dataset_cardinality(ds), 0);
    seq s = read_ds(ds, 5);
    ASSERT_EQ(s.n, 0);
    seq_free(&s);
    ferry_dataset_unref(ds);
    rt_done(rt);
    tmp_clean();
}

/* ---- corruption --------------------------------------------------------------------------- */
/* Every returned record must be one of the originals, in order (a subsequence), and never a
 * record with other bytes. */
static void assert_subsequence(const seq *s, const recset *r, int *errors) {
    int k = 0;
    *errors = 0;
    for (int i = 0; i < s->n; i++) {
        if (s->it[i].rc != FERRY_OK) {
            (*errors)++;
            continue;
        }
        while (k < r->n && !(r->len[k] == s->it[i].len && memcmp(r->data[k], s->it[i].data, r->len[k]) == 0)) k++;
        if (k == r->n) FAILF("position %d returned a record that is not an original one (%zu bytes)", i, s->it[i].len);
        k++;
    }
}

TEST(every_bit_flip_is_detected) {
    ferry_runtime *rt = rt_new();
    tmp_make();
    size_t lens[] = {10, 0, 25};
    recset r;
    recset_init(&r, 3, lens);
    write_file(rt, tmp_path("f"), FERRY_COMPRESSION_NONE, &r);
    size_t n;
    uint8_t *orig = read_whole(tmp_path("f"), &n);
    ASSERT_EQ(n, 16 * 3 + 35);
    uint8_t *buf = malloc(n);
    for (size_t bit = 0; bit < n * 8; bit++) {
        memcpy(buf, orig, n);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        for (int mode = 0; mode < 2; mode++) { /* fail on bad records, or drop them all */
            ferry_tfrecord_options o = {.max_bad_records = mode ? FERRY_INFINITE : 0};
            ferry_dataset *ds;
            ASSERT_OK(ferry__dataset_tfrecord_memory(rt, "flipped.tfrecord", buf, n, &o, &ds));
            ferry_iterator *it;
            ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
            seq s = collect(it, -1, 8);
            int errors;
            assert_subsequence(&s, &r, &errors);
            int returned = s.n - errors;
            int64_t dropped = dropped_of(it, "tfrecord");
            if (mode == 0) {
                if (errors == 0) FAILF("flip of bit %zu was not detected", bit);
                ASSERT_LE(errors, 2); /* one bad record: at most k + 1 failing reads */
                ASSERT_EQ(dropped, 0);
                for (int i = 0; i < s.n; i++)
                    if (s.it[i].rc != FERRY_OK) ASSERT_STR_CONTAINS(s.it[i].msg, "flipped.tfrecord");
            } else {
                ASSERT_EQ(errors, 0);
                ASSERT(dropped >= 1 && dropped <= 2);
                ASSERT_LE(returned, 2);
            }
            seq_free(&s);
            ferry_iterator_free(it);
            ferry_dataset_unref(ds);
        }
    }
    free(buf);
    free(orig);
    recset_free(&r);
    rt_done(rt);
    tmp_clean();
}

TEST(bit_flips_in_gzip_never_give_a_wrong_record) {
    ferry_runtime *rt = rt_new();
    tmp_make();
    size_t lens[] = {10, 0, 25};
    recset r;
    recset_init(&r, 3, lens);
    write_file(rt, tmp_path("f.gz"), FERRY_COMPRESSION_GZIP, &r);
    size_t n;
    uint8_t *orig = read_whole(tmp_path("f.gz"), &n);
    uint8_t *buf = malloc(n);
    int detected = 0;
    for (size_t bit = 0; bit < n * 8; bit++) {
        memcpy(buf, orig, n);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ferry_tfrecord_options o = {.compression = FERRY_COMPRESSION_GZIP};
        ferry_dataset *ds;
        ASSERT_OK(ferry__dataset_tfrecord_memory(rt, "f.gz", buf, n, &o, &ds));
        seq s = read_ds(ds, 8);
        int errors;
        assert_subsequence(&s, &r, &errors);
        detected += errors > 0;
        seq_free(&s);
        ferry_dataset_unref(ds);
    }
    /* Flips in the gzip header's time stamp or OS byte change nothing; most flips are caught. */
    ASSERT(detected > (int)(n * 8) / 2);
    free(buf);
    free(orig);
    recset_free(&r);
    rt_done(rt);
    tmp_clean();
}

TEST(truncation_at_every_byte_of_the_last_record) {
    ferry_runtime *rt = rt_new();
    tmp_make();
    size_t lens[] = {10, 0, 25};
    recset r;
    recset_init(&r, 3, lens);
    write_file(rt, tmp_path("f"), FERRY_COMPRESSION_NONE, &r);
    size_t n;
    uint8_t *orig = read_whole(tmp_path("f"), &n);
    size_t last = 16 + 10 + 16;
    for (size_t cut = last; cut < n; cut++) {
        write_whole(tmp_path("cut.tfrecord"), orig, cut);
        const char *f[1] = {tmp_path("cut.tfrecord")};
        ferry_dataset *ds = tfr_ds(rt, 1, f, NULL);
        seq s = read_ds(ds, 8);
        if (cut == last) {
            ASSERT_EQ(s.n, 2); /* cut exactly between records: a shorter, valid file */
        } else {
            ASSERT_EQ(s.n, 3);
            ASSERT_EQ(s.it[2].rc, FERRY_ETRUNCATED);
            ASSERT_STR_CONTAINS(s.it[2].msg, "cut.tfrecord");
            ASSERT_STR_CONTAINS(s.it[2].msg, "offset 42");
            ASSERT_STR_CONTAINS(s.it[2].msg, "truncated");
        }
        ASSERT_EQ(s.it[0].rc, FERRY_OK);
        ASSERT_EQ(s.it[1].rc, FERRY_OK);
        seq_free(&s);
        ferry_dataset_unref(ds);
    }
    /* The same inside a gzip file: the records are compressed whole, the cut is in the data. */
    for (size_t cut = last + 1; cut < n; cut++) {
        gzFile gz = gzopen(tmp_path("cut.gz"), "wb");
        ASSERT_EQ(gzwrite(gz, orig, (unsigned)cut), (int)cut);
        gzclose(gz);
        ferry_tfrecord_options o = {.compression = FERRY_COMPRESSION_GZIP};
        const char *f[1] = {tmp_path("cut.gz")};
        ferry_dataset *ds = tfr_ds(rt, 1, f, &o);
        seq s = read_ds(ds, 8);
        ASSERT_EQ(s.n, 3);
        ASSERT_EQ(s.it[2].rc, FERRY_ETRUNCATED);
        ASSERT_STR_CONTAINS(s.it[2].msg, "offset 42");
        seq_free(&s);
        ferry_dataset_unref(ds);
    }
    /* And a gzip stream cut at every compressed byte: truncation, never a wrong record. */
    write_file(rt, tmp_path("whole.gz"), FERRY_COMPRESSION_GZIP, &r);
    size_t gn;
    uint8_t *g = read_whole(tmp_path("whole.gz"), &gn);
    for (size_t cut = 1; cut < gn; cut++) {
        ferry_tfrecord_options o = {.compression = FERRY_COMPRESSION_GZIP};
        ferry_dataset *ds;
        ASSERT_OK(ferry__dataset_tfrecord_memory(rt, "whole.gz", g, cut, &o, &ds));
        seq s = read_ds(ds, 8);
        int errors;
        assert_subsequence(&s, &r, &errors);
        ASSERT_EQ(errors, 1);
        ASSERT_EQ(s.it[s.n - 1].rc, FERRY_ETRUNCATED);
        ASSERT_STR_CONTAINS(s.it[s.n - 1].msg, "whole.gz");
        seq_free(&s);
        ferry_dataset_unref(ds);
    }
    free(g);
    free(orig);
    recset_free(&r);
    rt_done(rt);
    tmp_clean();
}

/* A counting allocator: live bytes, peak and the largest single request. */
typedef struct counting {
    _Atomic int64_t live, peak, largest;
} counting;

static void *counting_alloc(void *user, void *ptr, size_t old_size, size_t new_size) {
    counting *c = user;
    if (new_size == 0) {
        free(ptr);
        atomic_fetch_sub(&c->live, (int64_t)old_size);
        return NULL;
    }
    if ((int64_t)new_size > atomic_load(&c->largest)) atomic_store(&c->largest, (int64_t)new_size);
    void *p = realloc(ptr, new_size);
    if (!p) return NULL;
    int64_t now =
        atomic_fetch_add(&c->live, (int64_t)new_size - (int64_t)old_size) + (int64_t)new_size - (int64_t)old_size;
    if (now > atomic_load(&c->peak)) atomic_store(&c->peak, now);
    return p;
}

static void forge_header(uint8_t *h, uint64_t len) {
    for (int i = 0; i < 8; i++) h[i] = (uint8_t)(len >> (8 * i));
    uint32_t m = ferry__crc32c_mask(ferry__crc32c(h, 8));
    for (int i = 0; i < 4; i++) h[8 + i] = (uint8_t)(m >> (8 * i));
}

TEST(huge_length_is_refused_without_allocating) {
    tmp_make();
    counting c = {0};
    ferry_runtime_options ro = {.alloc = counting_alloc, .alloc_user = &c};
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(&ro, &rt));
    /* A valid record, then a header claiming 2^40 bytes followed by 100 bytes. */
    uint8_t file[16 + 3 + 12 + 100];
    forge_header(file, 3);
    memcpy(file + 12, "abc", 3);
    uint32_t m = ferry__crc32c_mask(ferry__crc32c("abc", 3));
    for (int i = 0; i < 4; i++) file[15 + i] = (uint8_t)(m >> (8 * i));
    forge_header(file + 19, (uint64_t)1 << 40);
    memset(file + 31, 0x42, 100);
    write_whole(tmp_path("huge.tfrecord"), file, sizeof file);
    gzFile gz = gzopen(tmp_path("huge.gz"), "wb");
    gzwrite(gz, file, sizeof file);
    gzclose(gz);
    const char *names[2] = {"huge.tfrecord", "huge.gz"};
    for (int k = 0; k < 2; k++) {
        ferry_tfrecord_options o = {.compression = k ? FERRY_COMPRESSION_GZIP : FERRY_COMPRESSION_NONE};
        const char *f[1] = {tmp_path(names[k])};
        ferry_dataset *ds = tfr_ds(rt, 1, f, &o);
        seq s = read_ds(ds, 5);
        ASSERT_EQ(s.n, 2);
        ASSERT_EQ(s.it[0].rc, FERRY_OK);
        ASSERT_EQ(s.it[1].rc, FERRY_ETRUNCATED);
        ASSERT_STR_CONTAINS(s.it[1].msg, names[k]);
        ASSERT_STR_CONTAINS(s.it[1].msg, "offset 19");
        seq_free(&s);
        ferry_dataset_unref(ds);
    }
    /* Nothing near 2^40: the largest block is the read buffer or the first 1 MiB chunk. */
    ASSERT_LE(atomic_load(&c.largest), 2 << 20);
    ASSERT_LE(atomic_load(&c.peak), 4 << 20);
    /* max_record_size: a valid record over the limit is too large, and skipped over. */
    uint8_t two[2 * 16 + 10 + 3];
    forge_header(two, 10);
    memset(two + 12, 'x', 10);
    m = ferry__crc32c_mask(ferry__crc32c(two + 12, 10));
    for (int i = 0; i < 4; i++) two[22 + i] = (uint8_t)(m >> (8 * i));
    forge_header(two + 26, 3);
    memcpy(two + 38, "abc", 3);
    m = ferry__crc32c_mask(ferry__crc32c("abc", 3));
    for (int i = 0; i < 4; i++) two[41 + i] = (uint8_t)(m >> (8 * i));
    ferry_tfrecord_options o = {.max_record_size = 5};
    ferry_dataset *ds;
    ASSERT_OK(ferry__dataset_tfrecord_memory(rt, "two", two, sizeof two, &o, &ds));
    seq s = read_ds(ds, 5);
    ASSERT_EQ(s.n, 2);
    ASSERT_EQ(s.it[0].rc, FERRY_ETOOLARGE);
    ASSERT_STR_CONTAINS(s.it[0].msg, "too large");
    ASSERT_EQ(s.it[1].rc, FERRY_OK);
    ASSERT_EQ(s.it[1].len, 3);
    seq_free(&s);
    ferry_dataset_unref(ds);
    rt_done(rt);
    tmp_clean();
}

/* Five records; record 1's data and record 3's length are damaged. */
static uint8_t *damaged_file(const recset *r, size_t *n) {
    ferry_runtime *rt = rt_new();
    write_file(rt, tmp_path("d"), FERRY_COMPRESSION_NONE, r);
    rt_done(rt);
    uint8_t *p = read_whole(tmp_path("d"), n);
    size_t off = 0;
    for (int i = 0; i < r->n; i++) {
        if (i == 1) p[off + 12] ^= 0x01;
        if (i == 3) p[off + 2] ^= 0x40;
        off += 16 + r->len[i];
    }
    return p;
}

TEST(bad_records_fail_or_are_dropped_with_a_limit) {
    tmp_make();
    size_t lens[] = {20, 30, 40, 50, 60};
    recset r;
    recset_init(&r, 5, lens);
    size_t n;
    uint8_t *p = damaged_file(&r, &n);
    write_whole(tmp_path("bad.tfrecord"), p, n);
    ferry_runtime *rt = rt_new();
    const char *f[1] = {tmp_path("bad.tfrecord")};
    struct {
        int64_t max_bad;
        int want_n, want_errors;
        int64_t want_dropped;
    } cases[] = {{0, 5, 2, 0}, {1, 4, 1, 1}, {2, 3, 0, 2}, {FERRY_INFINITE, 3, 0, 2}, {100, 3, 0, 2}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        ferry_tfrecord_options o = {.max_bad_records = cases[k].max_bad};
        ferry_dataset *ds = tfr_ds(rt, 1, f, &o);
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
        seq s = collect(it, -1, 10);
        ASSERT_EQ(s.n, cases[k].want_n);
        int errors;
        assert_subsequence(&s, &r, &errors);
        ASSERT_EQ(errors, cases[k].want_errors);
        ASSERT_EQ(dropped_of(it, "tfrecord"), cases[k].want_dropped);
        if (cases[k].max_bad == 0) {
            ASSERT_EQ(s.it[1].rc, FERRY_ECORRUPT);
            ASSERT_STR_CONTAINS(s.it[1].msg, "corrupted data");
            ASSERT_STR_CONTAINS(s.it[1].msg, "offset 36");
            ASSERT_EQ(s.it[3].rc, FERRY_ECORRUPT);
            ASSERT_STR_CONTAINS(s.it[3].msg, "corrupted length");
            ASSERT_STR_CONTAINS(s.it[3].msg, "offset 138");
            ASSERT_EQ(s.it[4].len, 60); /* resynchronised on record 4 */
        }
        if (cases[k].max_bad == 1) {
            ASSERT_EQ(s.it[2].rc, FERRY_ECORRUPT); /* the second bad record is over the limit */
            ASSERT_STR_CONTAINS(s.it[2].msg, "corrupted length");
        }
        seq_free(&s);
        ferry_iterator_free(it);
        ferry_dataset_unref(ds);
    }
    free(p);
    recset_free(&r);
    rt_done(rt);
    tmp_clean();
}

TEST(garbage_file_ends_quickly) {
    ferry_runtime *rt = rt_new();
    uint8_t *g = malloc(200000);
    uint32_t x = 12345;
    for (size_t i = 0; i < 200000; i++) {
        x = x * 1103515245u + 12345u;
        g[i] = (uint8_t)(x >> 16);
    }
    for (int mode = 0; mode < 3; mode++) {
        ferry_tfrecord_options o = {.max_bad_records = mode == 0 ? 0 : FERRY_INFINITE,
                                    .compression = mode == 2 ? FERRY_COMPRESSION_GZIP : FERRY_COMPRESSION_NONE};
        ferry_dataset *ds;
        ASSERT_OK(ferry__dataset_tfrecord_memory(rt, "garbage.bin", g, 200000, &o, &ds));
        seq s = read_ds(ds, 4);
        if (mode == 0) {
            ASSERT(s.n >= 1);
            ASSERT_EQ(s.it[0].rc, FERRY_ECORRUPT);
            ASSERT_STR_CONTAINS(s.it[0].msg, "not a TFRecord file");
            ASSERT_STR_CONTAINS(s.it[0].msg, "garbage.bin");
        } else {
            ASSERT_EQ(s.n, 0);
        }
        seq_free(&s);
        ferry_dataset_unref(ds);
    }
    free(g);
    rt_done(rt);
}

TEST(skip_crc_check_reads_damaged_data) {
    tmp_make();
    size_t lens[] = {20, 30, 40};
    recset r;
    recset_init(&r, 3, lens);
    ferry_runtime *rt = rt_new();
    write_file(rt, tmp_path("c"), FERRY_COMPRESSION_NONE, &r);
    size_t n;
    uint8_t *p = read_whole(tmp_path("c"), &n);
    p[16 + 20 + 12 + 5] ^= 0xff; /* data of record 1 */
    p[16 + 20 + 8] ^= 0xff;      /* header CRC of record 1 */
    ferry_tfrecord_options o = {.skip_crc_check = true};
    ferry_dataset *ds;
    ASSERT_OK(ferry__dataset_tfrecord_memory(rt, "c", p, n, &o, &ds));
    seq s = read_ds(ds, 5);
    ASSERT_EQ(s.n, 3);
    ASSERT_EQ(s.it[1].rc, FERRY_OK);
    ASSERT(memcmp(s.it[1].data, r.data[1], 30) != 0);
    seq_free(&s);
    ferry_dataset_unref(ds);
    free(p);
    recset_free(&r);
    rt_done(rt);
    tmp_clean();
}

/* ---- save / restore ------------------------------------------------------------------------ */
static void check_restore_everywhere(ferry_dataset *ds, int bound) {
    seq full = read_ds(ds, bound);
    for (int k = 0; k <= full.n; k++) {
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
        seq head = collect(it, k, bound);
        ASSERT_EQ(head.n, k);
        ferry_blob *b;
        ASSERT_OK(ferry_iterator_save(it, &b));
        ferry_iterator *r;
        ASSERT_OK(ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), NULL, &r));
        seq tail = collect(r, -1, bound);
        assert_same_seq(&full, k, &tail);
        /* The original iterator goes on identically too. */
        seq rest = collect(it, -1, bound);
        assert_same_seq(&full, k, &rest);
        seq_free(&head);
        seq_free(&tail);
        seq_free(&rest);
        ferry_blob_free(b);
        ferry_iterator_free(r);
        ferry_iterator_free(it);
    }
    seq_free(&full);
}

TEST(save_restore_at_every_position) {
    tmp_make();
    ferry_runtime *rt = rt_new();
    size_t lens[] = {20, 30, 40, 50, 60};
    recset r;
    recset_init(&r, 5, lens);
    size_t n;
    uint8_t *p = damaged_file(&r, &n);
    write_whole(tmp_path("bad.tfrecord"), p, n);
    size_t l2[] = {0, 300000, 7, 1 << 20, 5};
    recset big;
    recset_init(&big, 5, l2);
    write_file(rt, tmp_path("big.tfrecord"), FERRY_COMPRESSION_NONE, &big);
    write_file(rt, tmp_path("big.gz"), FERRY_COMPRESSION_GZIP, &big);
    write_file(rt, tmp_path("big.zz"), FERRY_COMPRESSION_ZLIB, &big);
    gzFile gz = gzopen(tmp_path("bad.gz"), "wb");
    gzwrite(gz, p, (unsigned)n);
    gzclose(gz);
    const char *plain[4] = {tmp_path("big.tfrecord"), tmp_path("bad.tfrecord"), tmp_path("missing.tfrecord"),
                            tmp_path("big.tfrecord")};
    for (int64_t max_bad = 0; max_bad <= 1; max_bad++) {
        ferry_tfrecord_options o = {.max_bad_records = max_bad, .buffer_size = 4096};
        ferry_dataset *ds = tfr_ds(rt, 4, plain, &o);
        check_restore_everywhere(ds, 40);
        ferry_dataset_unref(ds);
    }
    const char *gzf[2] = {tmp_path("big.gz"), tmp_path("bad.gz")};
    ferry_tfrecord_options og = {.compression = FERRY_COMPRESSION_GZIP};
    ferry_dataset *ds = tfr_ds(rt, 2, gzf, &og);
    check_restore_everywhere(ds, 40);
    ferry_dataset_unref(ds);
    const char *zzf[1] = {tmp_path("big.zz")};
    ferry_tfrecord_options oz = {.compression = FERRY_COMPRESSION_ZLIB, .buffer_size = 1000};
    ds = tfr_ds(rt, 1, zzf, &oz);
    check_restore_everywhere(ds, 40);
    ferry_dataset_unref(ds);
    free(p);
    recset_free(&r);
    recset_free(&big);
    rt_done(rt);
    tmp_clean();
}

/* With num_parallel_reads the limit is one count over all files, applied in output order: the
 * same positions as reading with no limit, minus the first max_bad error positions. */
TEST(bad_record_limit_is_global_under_parallel_reads) {
    tmp_make();
    size_t lens[] = {20, 30, 40, 50, 60};
    recset r;
    recset_init(&r, 5, lens);
    size_t n;
    uint8_t *p = damaged_file(&r, &n); /* 2 bad records per file */
    write_whole(tmp_path("bad.tfrecord"), p, n);
    ferry_runtime *rt = rt_new();
    const char *f[3] = {tmp_path("bad.tfrecord"), tmp_path("bad.tfrecord"), tmp_path("bad.tfrecord")};
    for (int reads = 1; reads <= 3; reads++) {
        ferry_tfrecord_options o0 = {.num_parallel_reads = reads};
        ferry_dataset *all = tfr_ds(rt, 3, f, &o0);
        seq ref = read_ds(all, 60);
        int bad = 0;
        for (int i = 0; i < ref.n; i++) bad += ref.it[i].rc != FERRY_OK;
        ASSERT_EQ(bad, 6);
        for (int64_t max_bad = -1; max_bad <= 7; max_bad++) {
            ferry_tfrecord_options o = {.num_parallel_reads = reads,
                                        .max_bad_records = max_bad < 0 ? FERRY_INFINITE : max_bad};
            ferry_dataset *ds = tfr_ds(rt, 3, f, &o);
            ferry_iterator *it;
            ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
            seq s = collect(it, -1, 60);
            int64_t want_drop = max_bad < 0 || max_bad > 6 ? 6 : max_bad;
            if (max_bad != 0) ASSERT_EQ(dropped_of(it, "tfrecord_bad_records"), want_drop);
            ASSERT_EQ(s.n, ref.n - (int)want_drop);
            int j = 0, skipped = 0; /* s is ref without its first want_drop errors */
            for (int i = 0; i < ref.n; i++) {
                if (ref.it[i].rc != FERRY_OK && skipped < want_drop) {
                    skipped++;
                    continue;
                }
                ASSERT_EQ(s.it[j].rc, ref.it[i].rc);
                ASSERT_EQ(s.it[j].len, ref.it[i].len);
                j++;
            }
            seq_free(&s);
            ferry_iterator_free(it);
            if (max_bad == 3) check_restore_everywhere(ds, 60);
            ferry_dataset_unref(ds);
        }
        seq_free(&ref);
        ferry_dataset_unref(all);
    }
    free(p);
    recset_free(&r);
    rt_done(rt);
    tmp_clean();
}

TEST(restore_validates_state) {
    tmp_make();
    ferry_runtime *rt = rt_new();
    size_t lens[] = {20, 30};
    recset r;
    recset_init(&r, 2, lens);
    write_file(rt, tmp_path("a"), FERRY_COMPRESSION_NONE, &r);
    const char *f[1] = {tmp_path("a")};
    ferry_dataset *ds = tfr_ds(rt, 1, f, NULL);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    seq h = collect(it, 1, 5);
    ferry_blob *b;
    ASSERT_OK(ferry_iterator_save(it, &b));
    size_t sz = ferry_blob_size(b);
    uint8_t *st = malloc(sz);
    /* The payload ends the state, before its 8-byte checksum: u32 op tag, u8 in_file, i64 file
     * index, i64 offset, u8 resync, i64 bad (30 bytes). */
    ASSERT(sz > 38);
    size_t base = sz - 8 - 30;
    struct {
        size_t at;
        uint8_t v;
        const char *what;
    } edits[] = {
        {base + 4, 7, "in_file"}, {base + 5, 9, "file index"}, {base + 21, 2, "resync"}, {base + 22 + 7, 0x80, "bad"}};
    for (size_t k = 0; k < sizeof edits / sizeof edits[0]; k++) {
        memcpy(st, ferry_blob_data(b), sz);
        st[edits[k].at] = edits[k].v;
        uint64_t sum = ferry__fnv64(FERRY__FNV_INIT, st, sz - 8);
        for (int i = 0; i < 8; i++) st[sz - 8 + (size_t)i] = (uint8_t)(sum >> (8 * i));
        ferry_iterator *bad = NULL;
        int rc = ferry_iterator_restore(ds, st, sz, NULL, &bad);
        if (rc != FERRY_ECORRUPT) FAILF("edit %zu: %s: %s", k, ferry_error_name(rc), ferry_last_error());
        ASSERT_STR_CONTAINS(ferry_last_error(), edits[k].what);
        ASSERT(bad == NULL);
    }
    /* An offset past the end of the file: the first next says so, then the stream ends. */
    memcpy(st, ferry_blob_data(b), sz);
    st[base + 13 + 2] = 0x10;
    uint64_t sum = ferry__fnv64(FERRY__FNV_INIT, st, sz - 8);
    for (int i = 0; i < 8; i++) st[sz - 8 + (size_t)i] = (uint8_t)(sum >> (8 * i));
    ferry_iterator *far;
    ASSERT_OK(ferry_iterator_restore(ds, st, sz, NULL, &far));
    seq s = collect(far, -1, 5);
    ASSERT_EQ(s.n, 1);
    ASSERT_EQ(s.it[0].rc, FERRY_ECORRUPT);
    ASSERT_STR_CONTAINS(s.it[0].msg, "past the end");
    seq_free(&s);
    ferry_iterator_free(far);
    free(st);
    seq_free(&h);
    ferry_blob_free(b);
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    recset_free(&r);
    rt_done(rt);
    tmp_clean();
}

/* ---- file lists --------------------------------------------------------------------------- */
TEST(list_files_sorted_shuffled_and_read) {
    tmp_make();
    ferry_runtime *rt = rt_new();
    char name[64];
    recset rs[8];
    for (int i = 0; i < 8; i++) {
        size_t lens[2] = {(size_t)i + 1, 100};
        recset_init(&rs[i], 2, lens);
        snprintf(name, sizeof name, "part-%d.tfrecord", 7 - i);
        write_file(rt, tmp_path(name), FERRY_COMPRESSION_NONE, &rs[i]);
    }
    write_whole(tmp_path("notes.txt"), "x", 1);
    char pattern[512];
    snprintf(pattern, sizeof pattern, "%s/*.tfrecord", tmpdir);
    ferry_dataset *lf;
    ASSERT_OK(ferry_dataset_list_files(rt, pattern, NULL, &lf));
    ASSERT_EQ(ferry_dataset_cardinality(lf), 8);
    seq s = read_ds(lf, 20);
    ASSERT_EQ(s.n, 8);
    for (int i = 0; i < 8; i++) {
        snprintf(name, sizeof name, "part-%d.tfrecord", i);
        ASSERT_EQ(s.it[i].len, strlen(tmp_path(name)));
        ASSERT(memcmp(s.it[i].data, tmp_path(name), s.it[i].len) == 0);
    }
    seq_free(&s);
    /* All records through tfrecord_files, file by file in sorted order. */
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_tfrecord_files(lf, NULL, &ds));
    s = read_ds(ds, 40);
    ASSERT_EQ(s.n, 16);
    for (int i = 0; i < 8; i++) ASSERT_EQ(s.it[2 * i].len, 8 - i);
    seq_free(&s);
    check_restore_everywhere(ds, 40);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(lf);
    /* Shuffled: a permutation; the same seed gives the same order; a new iteration seed a new one,
     * unless same_order_each_iteration. */
    ferry_list_files_options so = {.shuffle = true, .seed = 42};
    ASSERT_OK(ferry_dataset_list_files(rt, pattern, &so, &lf));
    char orders[6][8];
    for (int k = 0; k < 6; k++) {
        ferry_iterator_options io = {.seed = (uint64_t)(k / 2)};
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(lf, &io, &it));
        seq x = collect(it, -1, 20);
        ASSERT_EQ(x.n, 8);
        bool seen[8] = {false};
        for (int i = 0; i < 8; i++) {
            char c = (char)x.it[i].data[x.it[i].len - strlen(".tfrecord") - 1];
            orders[k][i] = c;
            ASSERT(c >= '0' && c <= '7' && !seen[c - '0']);
            seen[c - '0'] = true;
        }
        seq_free(&x);
        ferry_iterator_free(it);
    }
    ASSERT(memcmp(orders[0], orders[1], 8) == 0);
    ASSERT(memcmp(orders[2], orders[3], 8) == 0);
    ASSERT(memcmp(orders[0], orders[2], 8) != 0 || memcmp(orders[0], orders[4], 8) != 0);
    ASSERT(memcmp(orders[0], "01234567", 8) != 0 || memcmp(orders[2], "01234567", 8) != 0);
    ASSERT_OK(ferry_dataset_tfrecord_files(lf, NULL, &ds));
    check_restore_everywhere(ds, 40);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(lf);
    so.same_order_each_iteration = true;
    ASSERT_OK(ferry_dataset_list_files(rt, pattern, &so, &lf));
    char fixed[2][8];
    for (int k = 0; k < 2; k++) {
        ferry_iterator_options io = {.seed = (uint64_t)k * 1000 + 1};
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(lf, &io, &it));
        seq x = collect(it, -1, 20);
        for (int i = 0; i < 8; i++) fixed[k][i] = (char)x.it[i].data[x.it[i].len - strlen(".tfrecord") - 1];
        seq_free(&x);
        ferry_iterator_free(it);
    }
    ASSERT(memcmp(fixed[0], fixed[1], 8) == 0);
    ferry_dataset_unref(lf);
    /* No match. */
    snprintf(pattern, sizeof pattern, "%s/*.nothing", tmpdir);
    ASSERT_EQ(ferry_dataset_list_files(rt, pattern, NULL, &lf), FERRY_ENOTFOUND);
    ASSERT_STR_CONTAINS(ferry_last_error(), "*.nothing");
    ASSERT(lf == NULL);
    for (int i = 0; i < 8; i++) recset_free(&rs[i]);
    rt_done(rt);
    tmp_clean();
}

TEST(tfrecord_files_with_bad_names) {
    tmp_make();
    ferry_runtime *rt = rt_new();
    size_t lens[] = {4, 5};
    recset r;
    recset_init(&r, 2, lens);
    write_file(rt, tmp_path("ok.tfrecord"), FERRY_COMPRESSION_NONE, &r);
    const void *names[3] = {tmp_path("ok.tfrecord"), tmp_path("nope.tfrecord"), tmp_path("ok.tfrecord")};
    size_t nlens[3] = {strlen(names[0]), strlen(names[1]), strlen(names[2])};
    int64_t dim = 3;
    ferry_tensor *t;
    ASSERT_OK(ferry_tensor_create_bytes(rt, 1, &dim, names, nlens, &t));
    ferry_dataset *sl;
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 1, &t, NULL, &sl));
    ferry_tensor_unref(t);
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_tfrecord_files(sl, NULL, &ds));
    seq s = read_ds(ds, 10);
    ASSERT_EQ(s.n, 5);
    ASSERT_EQ(s.it[2].rc, FERRY_ENOTFOUND);
    ASSERT_STR_CONTAINS(s.it[2].msg, "nope.tfrecord");
    ASSERT_EQ(s.it[4].len, 5);
    seq_free(&s);
    check_restore_everywhere(ds, 10);
    ferry_dataset_unref(ds);
    /* A dataset that is not of bytes scalars is refused at once. */
    ferry_dataset *rg;
    ASSERT_OK(ferry_dataset_range(rt, 0, 3, 1, NULL, &rg));
    ASSERT_EQ(ferry_dataset_tfrecord_files(rg, NULL, &ds), FERRY_ETYPE);
    ASSERT_STR_CONTAINS(ferry_last_error(), "filenames");
    ferry_dataset_unref(rg);
    ferry_dataset_unref(sl);
    recset_free(&r);
    rt_done(rt);
    tmp_clean();
}

TEST(parallel_reads_interleave_files) {
    tmp_make();
    ferry_runtime *rt = rt_new();
    const char *f[4];
    char name[32];
    recset rs[4];
    for (int i = 0; i < 4; i++) {
        size_t lens[3] = {(size_t)(10 * i + 1), (size_t)(10 * i + 2), (size_t)(10 * i + 3)};
        recset_init(&rs[i], 3, lens);
        snprintf(name, sizeof name, "p%d.tfrecord", i);
        f[i] = strdup(tmp_path(name));
        write_file(rt, f[i], FERRY_COMPRESSION_NONE, &rs[i]);
    }
    for (int threads = 1; threads <= 2; threads++) {
        ferry_tfrecord_options o = {.num_parallel_reads = threads * 2};
        ferry_dataset *ds = tfr_ds(rt, 4, f, &o);
        seq s = read_ds(ds, 30);
        ASSERT_EQ(s.n, 12);
        /* cycle 2 (threads 1) or 4: round robin over the open files, one record at a time */
        int cyc = threads * 2;
        int k = 0;
        for (int g = 0; g < 4; g += cyc)
            for (int rec = 0; rec < 3; rec++)
                for (int file = g; file < g + cyc; file++) {
                    ASSERT_EQ(s.it[k].rc, FERRY_OK);
                    ASSERT_EQ(s.it[k].len, rs[file].len[rec]);
                    ASSERT(memcmp(s.it[k].data, rs[file].data[rec], rs[file].len[rec]) == 0);
                    k++;
                }
        seq_free(&s);
        check_restore_everywhere(ds, 30);
        ferry_dataset_unref(ds);
    }
    ferry_tfrecord_options o = {.num_parallel_reads = FERRY_AUTOTUNE};
    ferry_dataset *ds = tfr_ds(rt, 4, f, &o);
    seq s = read_ds(ds, 30);
    ASSERT_EQ(s.n, 12);
    seq_free(&s);
    /* Freed mid-stream while the workers read ahead: returns, leaks nothing. */
    for (int k = 0; k < 3; k++) {
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
        s = collect(it, k, 30);
        seq_free(&s);
        ferry_iterator_free(it);
    }
    ferry_dataset_unref(ds);
    for (int i = 0; i < 4; i++) {
        recset_free(&rs[i]);
        free((void *)f[i]);
    }
    rt_done(rt);
    tmp_clean();
}

/* ---- I/O faults ------------------------------------------------------------------------------ */
static long short_reads(void *user, int64_t off, size_t want) {
    (void)user;
    return (long)FERRY__MIN(want, (size_t)(1 + (off * 7) % 13));
}

typedef struct eio_at {
    int64_t at;
} eio_at;

static long eio_once_past(void *user, int64_t off, size_t want) {
    eio_at *e = user;
    if (off >= e->at) return -1;
    return (long)FERRY__MIN(want, (size_t)(e->at - off));
}

TEST(io_faults_short_reads_and_eio) {
    tmp_make();
    ferry_runtime *rt = rt_new();
    size_t lens[] = {0, 100, 5000, 3, 70000};
    recset r;
    recset_init(&r, 5, lens);
    write_file(rt, tmp_path("a"), FERRY_COMPRESSION_NONE, &r);
    write_file(rt, tmp_path("a.gz"), FERRY_COMPRESSION_GZIP, &r);
    for (int c = 0; c < 2; c++) {
        ferry_tfrecord_options o = {.compression = c ? FERRY_COMPRESSION_GZIP : FERRY_COMPRESSION_NONE,
                                    .buffer_size = 1024};
        const char *f[2] = {tmp_path(c ? "a.gz" : "a"), tmp_path(c ? "a.gz" : "a")};
        ferry_dataset *ds = tfr_ds(rt, 1, f, &o);
        ASSERT_OK(ferry__tfrecord_set_fault(ds, short_reads, NULL));
        seq s = read_ds(ds, 20);
        assert_seq_is_recset(&s, &r);
        seq_free(&s);
        ferry_dataset_unref(ds);
        /* EIO in the middle of the first file: an error naming the file, then the next file. */
        eio_at e = {c ? 100 : 5200};
        ds = tfr_ds(rt, 2, f, &o);
        ASSERT_OK(ferry__tfrecord_set_fault(ds, eio_once_past, &e));
        s = read_ds(ds, 20);
        recset twice = r; /* borrowed pointers: not freed */
        for (int i = 0; i < r.n; i++) {
            twice.len[r.n + i] = r.len[i];
            twice.data[r.n + i] = r.data[i];
        }
        twice.n = 2 * r.n;
        int errors;
        assert_subsequence(&s, &twice, &errors);
        ASSERT_EQ(errors, 2); /* once per file */
        int first_err = -1;
        for (int i = 0; i < s.n; i++)
            if (s.it[i].rc != FERRY_OK && first_err < 0) first_err = i;
        ASSERT_EQ(s.it[first_err].rc, FERRY_EIO);
        ASSERT_STR_CONTAINS(s.it[first_err].msg, f[0]);
        ASSERT_STR_CONTAINS(s.it[first_err].msg, "Input/output error");
        seq_free(&s);
        ferry_dataset_unref(ds);
    }
    recset_free(&r);
    rt_done(rt);
    tmp_clean();
}

static long nospace(void *user, int64_t off, size_t want) {
    int64_t *limit = user;
    if (off >= *limit) return -1;
    return (long)FERRY__MIN(want, (size_t)(*limit - off));
}

TEST(writer_errors) {
    tmp_make();
    ferry_runtime *rt = rt_new();
    ferry_tfrecord_writer *w = NULL;
    ASSERT_EQ(ferry_tfrecord_writer_open(rt, "/nonexistent-dir/x.tfrecord", NULL, &w), FERRY_ENOTFOUND);
    ASSERT_STR_CONTAINS(ferry_last_error(), "/nonexistent-dir/x.tfrecord");
    ASSERT(w == NULL);
    ASSERT_EQ(ferry_tfrecord_writer_open(NULL, "x", NULL, &w), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "'rt'");
    ferry_tfrecord_writer_options bad = {.compression = (ferry_compression)9};
    ASSERT_EQ(ferry_tfrecord_writer_open(rt, tmp_path("x"), &bad, &w), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "compression");
    ASSERT_EQ(ferry_tfrecord_writer_close(NULL), FERRY_OK);
    ASSERT_EQ(ferry_tfrecord_writer_write(NULL, "a", 1), FERRY_EINVAL);
    /* ENOSPC after 1000 bytes: the error comes at a write or at close, and sticks. */
    for (int c = 0; c < 2; c++) {
        int64_t limit = 1000;
        ferry_tfrecord_writer_options o = {.compression = c ? FERRY_COMPRESSION_GZIP : FERRY_COMPRESSION_NONE};
        ASSERT_OK(ferry__tfrecord_writer_open_faulty(rt, tmp_path("full"), &o, nospace, &limit, &w));
        uint8_t *rec = make_record(1, 100000);
        int rc = FERRY_OK;
        for (int i = 0; i < 20 && rc == FERRY_OK; i++) rc = ferry_tfrecord_writer_write(w, rec, 100000);
        if (rc) {
            ASSERT_EQ(rc, FERRY_EIO);
            ASSERT_STR_CONTAINS(ferry_tfrecord_writer_error(w), "No space left");
            ASSERT_EQ(ferry_tfrecord_writer_write(w, "a", 1), FERRY_EIO);
        }
        ASSERT_EQ(ferry_tfrecord_writer_close(w), FERRY_EIO);
        ASSERT_STR_CONTAINS(ferry_last_error(), "full");
        free(rec);
    }
    rt_done(rt);
    tmp_clean();
}

TEST(argument_checks) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *ds = NULL;
    const char *f[2] = {"a", NULL};
    ASSERT_EQ(ferry_dataset_tfrecord(rt, 2, f, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "files[1]");
    ASSERT_EQ(ferry_dataset_tfrecord(rt, 1, NULL, NULL, &ds), FERRY_EINVAL);
    ASSERT_EQ(ferry_dataset_tfrecord(NULL, 1, f, NULL, &ds), FERRY_EINVAL);
    ferry_tfrecord_options o = {.max_bad_records = -1};
    ASSERT_EQ(ferry_dataset_tfrecord(rt, 1, f, &o, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "max_bad_records");
    o = (ferry_tfrecord_options){.num_parallel_reads = -5};
    ASSERT_EQ(ferry_dataset_tfrecord(rt, 1, f, &o, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "num_parallel_reads");
    o = (ferry_tfrecord_options){.compression = (ferry_compression)7};
    ASSERT_EQ(ferry_dataset_tfrecord(rt, 1, f, &o, &ds), FERRY_EINVAL);
    ASSERT(ds == NULL);
    ASSERT_EQ(ferry_dataset_tfrecord_files(NULL, NULL, &ds), FERRY_EINVAL);
    ASSERT_EQ(ferry_dataset_list_files(rt, NULL, NULL, &ds), FERRY_EINVAL);
    ASSERT_EQ(ferry_dataset_list_files(rt, "", NULL, &ds), FERRY_EINVAL);
    /* A missing file is an error in its position, and the next file goes on. */
    ASSERT_OK(ferry_dataset_tfrecord(rt, 1, f, NULL, &ds));
    seq s = read_ds(ds, 3);
    ASSERT_EQ(s.n, 1);
    ASSERT_EQ(s.it[0].rc, FERRY_ENOTFOUND);
    ASSERT_STR_CONTAINS(s.it[0].msg, "'a'");
    seq_free(&s);
    ferry_dataset_unref(ds);
    rt_done(rt);
}

/* ---- real files --------------------------------------------------------------------------- */
#define DATA FERRY_SOURCE_DIR "/../shared/data/tfrecord"

static int64_t count_records(ferry_dataset *ds) {
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    int64_t n = 0;
    for (;;) {
        ferry_element *e;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) break;
        if (rc != FERRY_OK) FAILF("record %lld: %s: %s", (long long)n, ferry_error_name(rc), ferry_iterator_error(it));
        ferry_element_free(e);
        n++;
    }
    ferry_iterator_free(it);
    return n;
}

TEST(real_files_from_tensorflow) {
    struct stat sb;
    if (stat(DATA, &sb) != 0) SKIP("../shared/data/tfrecord is absent (it is not part of the repository)");
    ferry_runtime *rt = rt_new();
    struct {
        const char *file;
        ferry_compression c;
        int64_t n;
    } files[] = {{DATA "/cifar_test_tiny.tfrecord", FERRY_COMPRESSION_NONE, 100},
                 {DATA "/squad_v_small.tfrecord", FERRY_COMPRESSION_NONE, 50},
                 {DATA "/penguin_eval.tfrecord.gz", FERRY_COMPRESSION_GZIP, 100}};
    for (size_t i = 0; i < 3; i++) {
        ferry_tfrecord_options o = {.compression = files[i].c};
        const char *f[1] = {files[i].file};
        ferry_dataset *ds = tfr_ds(rt, 1, f, &o);
        ASSERT_EQ(count_records(ds), files[i].n);
        ferry_dataset_unref(ds);
    }
    ferry_dataset *lf;
    ASSERT_OK(ferry_dataset_list_files(rt, DATA "/csv_example_gen/data_tfrecord-*-of-00012.gz", NULL, &lf));
    ASSERT_EQ(ferry_dataset_cardinality(lf), 12);
    for (int par = 0; par <= 3; par += 3) {
        ferry_tfrecord_options o = {.compression = FERRY_COMPRESSION_GZIP, .num_parallel_reads = par};
        ferry_dataset *ds;
        ASSERT_OK(ferry_dataset_tfrecord_files(lf, &o, &ds));
        ASSERT_EQ(count_records(ds), 5091);
        ferry_dataset_unref(ds);
    }
    /* A gzip file read as plain is "not a TFRecord file", naming it. */
    const char *f[1] = {DATA "/penguin_eval.tfrecord.gz"};
    ferry_dataset *ds = tfr_ds(rt, 1, f, NULL);
    seq s = read_ds(ds, 10);
    ASSERT(s.n >= 1);
    ASSERT_EQ(s.it[0].rc, FERRY_ECORRUPT);
    ASSERT_STR_CONTAINS(s.it[0].msg, "penguin_eval.tfrecord.gz");
    ASSERT_STR_CONTAINS(s.it[0].msg, "not a TFRecord file");
    seq_free(&s);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(lf);
    rt_done(rt);
}

/* ---- the stream layer under every file format ------------------------------------------- */
TEST(stream_contract) {
    tmp_make();
    ferry_runtime *rt = rt_new();
    enum { N = 100000 };
    uint8_t *data = make_record(3, N);
    ferry_compression cs[3] = {FERRY_COMPRESSION_NONE, FERRY_COMPRESSION_GZIP, FERRY_COMPRESSION_ZLIB};
    for (int c = 0; c < 3; c++) {
        ferry__status st;
        ferry__ostream_options oo = {.compression = cs[c], .buffer_size = 100};
        ferry__ostream *o;
        ASSERT_OK(ferry__ostream_open(rt, tmp_path("s"), &oo, &o, &st));
        for (size_t k = 0; k < N; k += 777)
            ASSERT_OK(ferry__ostream_write(o, data + k, FERRY__MIN((size_t)777, N - k), &st));
        ASSERT_EQ(ferry__ostream_offset(o), N);
        ASSERT_OK(ferry__ostream_close(o, &st));
        for (int mem = 0; mem < 2; mem++) {
            size_t raw_n = 0;
            uint8_t *raw = mem ? read_whole(tmp_path("s"), &raw_n) : NULL;
            ferry__stream_options so = {.compression = cs[c], .buffer_size = 64};
            ferry__stream *s;
            if (mem) ASSERT_OK(ferry__stream_open_memory(rt, "mem", raw, raw_n, &so, &s, &st));
            else ASSERT_OK(ferry__stream_open(rt, tmp_path("s"), &so, &s, &st));
            ASSERT_EQ(ferry__stream_compressed(s), c != 0);
            ASSERT_EQ(ferry__stream_bytes_left(s), c ? -1 : N);
            const uint8_t *p;
            size_t avail;
            ASSERT_OK(ferry__stream_peek(s, 1000, &p, &avail, &st)); /* grows past the 64-byte buffer */
            ASSERT(avail >= 1000);
            ASSERT(memcmp(p, data, 1000) == 0);
            ferry__stream_consume(s, 10);
            ASSERT_EQ(ferry__stream_offset(s), 10);
            uint8_t *buf = malloc(N);
            size_t got;
            ASSERT_OK(ferry__stream_read(s, buf, 50000, &got, &st));
            ASSERT_EQ(got, 50000);
            ASSERT(memcmp(buf, data + 10, 50000) == 0);
            ASSERT_OK(ferry__stream_seek(s, 5, &st)); /* backwards: restart (compressed) */
            ASSERT_OK(ferry__stream_read(s, buf, N, &got, &st));
            ASSERT_EQ(got, N - 5);
            ASSERT(memcmp(buf, data + 5, N - 5) == 0);
            ASSERT_OK(ferry__stream_read(s, buf, 10, &got, &st));
            ASSERT_EQ(got, 0);
            ASSERT_OK(ferry__stream_peek(s, 12, &p, &avail, &st));
            ASSERT_EQ(avail, 0);
            ASSERT_OK(ferry__stream_seek(s, 77777, &st)); /* forwards */
            ASSERT_OK(ferry__stream_read(s, buf, 3, &got, &st));
            ASSERT(memcmp(buf, data + 77777, 3) == 0);
            ASSERT_OK(ferry__stream_seek(s, N, &st));
            ASSERT_EQ(ferry__stream_seek(s, N + 1, &st), FERRY_EOUTOFRANGE);
            ASSERT_STR_CONTAINS(st.msg, "past the end");
            free(buf);
            ferry__stream_close(s);
            free(raw);
        }
    }
    ferry__status st;
    ferry__stream *s = NULL;
    ASSERT_EQ(ferry__stream_open(rt, tmp_path("none"), NULL, &s, &st), FERRY_ENOTFOUND);
    ASSERT_STR_CONTAINS(st.msg, "none");
    ASSERT(s == NULL);
    ASSERT_EQ(ferry__stream_open(rt, tmpdir, NULL, &s, &st), FERRY_ENOTFOUND);
    ASSERT_STR_CONTAINS(st.msg, "directory");
    free(data);
    rt_done(rt);
    tmp_clean();
}
