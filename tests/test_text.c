/*
 * test_text.c - text_lines and fixed_length_records: line endings ("\n", "\r\n", none at the
 * end), empty lines and files, long lines through a tiny buffer, several files with a missing
 * one in position, GZIP and ZLIB, damaged compressed files; headers, footers, a body that is not
 * a multiple of record_bytes, files shorter than header and footer; save/restore at every
 * position (plain and compressed, across files), skip, and the validation of saved states.
 * Files live in a mkdtemp directory removed at the end.
 */
#include <dirent.h>
#include <sys/stat.h>
#include <zlib.h>

#include "runner.h"

#include "core/core.h"

/* ---- files ------------------------------------------------------------------------------ */
static char tdir[256];

static void tdir_make(void) {
    snprintf(tdir, sizeof tdir, "/tmp/ferry-text-XXXXXX");
    ASSERT(mkdtemp(tdir) != NULL);
}

static void tdir_remove(void) {
    DIR *d = opendir(tdir);
    ASSERT(d != NULL);
    struct dirent *de;
    char p[600];
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", tdir, de->d_name);
        unlink(p);
    }
    closedir(d);
    ASSERT_EQ(rmdir(tdir), 0);
}

/* Writes data to tdir/name, plain or compressed; returns the path (static storage, 8 slots). */
static const char *put_file(const char *name, const void *data, size_t n, ferry_compression c) {
    static char paths[8][400];
    static int next;
    char *path = paths[next++ % 8];
    snprintf(path, 400, "%s/%s", tdir, name);
    if (c == FERRY_COMPRESSION_GZIP) {
        gzFile g = gzopen(path, "wb");
        ASSERT(g != NULL);
        if (n) ASSERT_EQ(gzwrite(g, data, (unsigned)n), (long long)n);
        ASSERT_EQ(gzclose(g), Z_OK);
        return path;
    }
    const void *out = data;
    uLongf zn = 0;
    uint8_t *z = NULL;
    if (c == FERRY_COMPRESSION_ZLIB) {
        zn = compressBound((uLong)n);
        z = malloc(zn);
        ASSERT_EQ(compress2(z, &zn, data, (uLong)n, 6), Z_OK);
        out = z;
        n = zn;
    }
    FILE *f = fopen(path, "wb");
    ASSERT(f != NULL);
    if (n) ASSERT_EQ(fwrite(out, 1, n, f), n);
    fclose(f);
    free(z);
    return path;
}

static void truncate_file(const char *path, long keep) { ASSERT_EQ(truncate(path, keep), 0); }

/* ---- stream capture: each position as a string; errors as "!<code name>" ------------------- */
typedef struct strs {
    char **v;
    size_t n, cap;
} strs;

static void strs_push(strs *s, const char *p, size_t n) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
    }
    char *c = malloc(n + 1);
    memcpy(c, p, n);
    c[n] = '\0';
    s->v[s->n++] = c;
}

static void strs_free(strs *s) {
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static char last_msg[600];

static void drain(ferry_iterator *it, strs *s, long max) {
    for (long i = 0; max < 0 || i < max; i++) {
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) return;
        if (rc != FERRY_OK) {
            snprintf(last_msg, sizeof last_msg, "%s", ferry_iterator_error(it));
            char b[64];
            snprintf(b, sizeof b, "!%s", ferry_error_name(rc));
            strs_push(s, b, strlen(b));
            continue;
        }
        ferry_tensor *t = ferry_element_get(e, 0);
        ASSERT_EQ(ferry_tensor_dtype(t), FERRY_DTYPE_BYTES);
        ASSERT_EQ(ferry_tensor_rank(t), 0);
        const uint8_t *p;
        size_t len;
        ASSERT_OK(ferry_tensor_bytes_get(t, 0, &p, &len));
        strs_push(s, (const char *)p, len);
        ferry_element_free(e);
    }
}

static strs run_all(ferry_dataset *ds) {
    strs s = {0};
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    drain(it, &s, -1);
    ferry_element *e = NULL;
    ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
    ferry_iterator_free(it);
    return s;
}

static void expect_strs(const strs *got, const char *const *want, size_t n, const char *what) {
    if (got->n != n) {
        fprintf(stderr, "%s: got", what);
        for (size_t i = 0; i < got->n; i++) fprintf(stderr, " [%s]", got->v[i]);
        fprintf(stderr, "\n");
        FAILF("%s: expected %zu items, got %zu", what, n, got->n);
    }
    for (size_t i = 0; i < n; i++)
        if (strcmp(got->v[i], want[i]) != 0)
            FAILF("%s: item %zu: expected [%s], got [%s]", what, i, want[i], got->v[i]);
}

static ferry_dataset *lines(ferry_runtime *rt, size_t n, const char *const *files, ferry_compression c, size_t buf) {
    ferry_text_line_options o = {.compression = c, .buffer_size = buf};
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_text_lines(rt, n, files, &o, &ds));
    return ds;
}

/* Every position: save, restore, and compare the rest with the uninterrupted stream. */
static void save_restore_all(ferry_dataset *ds) {
    strs full = run_all(ds);
    for (size_t p = 0; p <= full.n; p++) {
        ferry_iterator *it;
        ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
        strs got = {0};
        drain(it, &got, (long)p);
        ferry_blob *b;
        ASSERT_OK(ferry_iterator_save(it, &b));
        ferry_iterator_free(it);
        ferry_iterator *r;
        int rc = ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), NULL, &r);
        if (rc) FAILF("restore at %zu: %s", p, ferry_last_error());
        drain(r, &got, -1);
        ferry_iterator_free(r);
        ferry_blob_free(b);
        char what[64];
        snprintf(what, sizeof what, "restored at %zu", p);
        expect_strs(&got, (const char *const *)full.v, full.n, what);
        strs_free(&got);
    }
    strs_free(&full);
}

/* ---- text lines ------------------------------------------------------------------------- */
typedef struct line_case {
    const char *data;
    size_t n;
    const char *want[6];
    size_t nwant;
} line_case;

#define LC(s, ...)                                                                                                     \
    { s, sizeof(s) - 1, {__VA_ARGS__}, sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *) }
#define LC0(s)                                                                                                         \
    { s, sizeof(s) - 1, {NULL}, 0 }

static const line_case line_cases[] = {
    LC("a\nbb\n\nccc", "a", "bb", "", "ccc"),
    LC("x\r\ny\r\n", "x", "y"),
    LC("p\r\nq\nr\r", "p", "q", "r"),
    LC("a\n", "a"),
    LC0(""),
    LC("\n", ""),
    LC("\n\n", "", ""),
    LC("\r\n\r\n", "", ""),
    LC("a\n\r", "a"),
    LC0("\r"),
    LC("a\rb\n", "a\rb"),
    LC("one line, no newline", "one line, no newline"),
    LC("\n\nlast", "", "", "last"),
    LC("t\tab\x01\xff\n", "t\tab\x01\xff"),
};

TEST(text_lines_endings_and_edges) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    ferry_compression comps[] = {FERRY_COMPRESSION_NONE, FERRY_COMPRESSION_GZIP, FERRY_COMPRESSION_ZLIB};
    size_t bufs[] = {0, 1, 3};
    for (size_t k = 0; k < sizeof line_cases / sizeof line_cases[0]; k++) {
        const line_case *lc = &line_cases[k];
        for (int c = 0; c < 3; c++) {
            const char *path = put_file("f.txt", lc->data, lc->n, comps[c]);
            for (int b = 0; b < 3; b++) {
                ferry_dataset *ds = lines(rt, 1, &path, comps[c], bufs[b]);
                strs got = run_all(ds);
                char what[96];
                snprintf(what, sizeof what, "case %zu compression %d buffer %zu", k, c, bufs[b]);
                expect_strs(&got, lc->want, lc->nwant, what);
                strs_free(&got);
                if (b == 1) save_restore_all(ds);
                ferry_dataset_unref(ds);
            }
        }
    }
    rt_done(rt);
    tdir_remove();
}

TEST(text_lines_files_in_order_and_errors) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    const char *f1 = put_file("1.txt", "a\nb\n", 4, FERRY_COMPRESSION_NONE);
    char p1[400];
    snprintf(p1, sizeof p1, "%s", f1);
    const char *f3 = put_file("3.txt", "c\n\nd", 4, FERRY_COMPRESSION_NONE);
    char p3[400], missing[400];
    snprintf(p3, sizeof p3, "%s", f3);
    snprintf(missing, sizeof missing, "%s/missing.txt", tdir);
    const char *files[] = {p1, missing, p3, p1};
    ferry_dataset *ds = lines(rt, 4, files, FERRY_COMPRESSION_NONE, 0);
    ASSERT_EQ(ferry_dataset_cardinality(ds), FERRY_UNKNOWN);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    strs got = {0};
    drain(it, &got, 3);
    ASSERT_STR_CONTAINS(last_msg, "missing.txt");
    drain(it, &got, -1);
    ferry_iterator_free(it);
    const char *want[] = {"a", "b", "!FERRY_ENOTFOUND", "c", "", "d", "a", "b"};
    expect_strs(&got, want, 8, "files");
    strs_free(&got);
    save_restore_all(ds);
    ferry_dataset_unref(ds);
    /* No files: an empty dataset. */
    ASSERT_OK(ferry_dataset_text_lines(rt, 0, NULL, NULL, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 0);
    got = run_all(ds);
    ASSERT_EQ(got.n, 0);
    strs_free(&got);
    ferry_dataset_unref(ds);
    /* Arguments. */
    ASSERT_EQ(ferry_dataset_text_lines(rt, 2, NULL, NULL, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "files");
    const char *nulls[] = {p1, NULL};
    ASSERT_EQ(ferry_dataset_text_lines(rt, 2, nulls, NULL, &ds), FERRY_EINVAL);
    ferry_text_line_options bad = {.compression = (ferry_compression)9};
    ASSERT_EQ(ferry_dataset_text_lines(rt, 1, files, &bad, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "compression");
    ASSERT_EQ(ferry_dataset_text_lines(NULL, 1, files, NULL, &ds), FERRY_EINVAL);
    ASSERT_EQ(ferry_dataset_text_lines(rt, 1, files, NULL, NULL), FERRY_EINVAL);
    rt_done(rt);
    tdir_remove();
}

TEST(text_lines_long_lines_and_gzip_damage) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    size_t big = 1 << 20;
    char *data = malloc(3 * big + 16);
    size_t n = 0;
    memset(data, 'q', big), n = big;
    data[n++] = '\n';
    data[n++] = 'z';
    data[n++] = '\n';
    memset(data + n, 'w', 2 * big), n += 2 * big; /* a last long line without newline */
    ferry_compression comps[] = {FERRY_COMPRESSION_NONE, FERRY_COMPRESSION_GZIP};
    for (int c = 0; c < 2; c++) {
        const char *path = put_file("big.txt", data, n, comps[c]);
        for (size_t buf = 0; buf <= 64; buf += 64) {
            ferry_dataset *ds = lines(rt, 1, &path, comps[c], buf);
            strs got = run_all(ds);
            ASSERT_EQ(got.n, 3);
            ASSERT_EQ(strlen(got.v[0]), big);
            ASSERT(strcmp(got.v[1], "z") == 0);
            ASSERT_EQ(strlen(got.v[2]), 2 * big);
            ASSERT(got.v[2][0] == 'w' && got.v[2][2 * big - 1] == 'w');
            strs_free(&got);
            ferry_dataset_unref(ds);
        }
    }
    free(data);
    /* A truncated gzip file: its lines up to the damage, one error, then the next file. */
    char text[4000];
    size_t tn = 0;
    for (int i = 0; i < 300; i++) tn += (size_t)snprintf(text + tn, sizeof text - tn, "%d\n", i);
    char gz[400], ok[400];
    snprintf(gz, sizeof gz, "%s", put_file("cut.gz", text, tn, FERRY_COMPRESSION_GZIP));
    snprintf(ok, sizeof ok, "%s", put_file("ok.gz", "after\n", 6, FERRY_COMPRESSION_GZIP));
    struct stat sb;
    ASSERT_EQ(stat(gz, &sb), 0);
    truncate_file(gz, (long)sb.st_size - 12);
    const char *files[] = {gz, ok};
    ferry_dataset *ds = lines(rt, 2, files, FERRY_COMPRESSION_GZIP, 64);
    strs got = run_all(ds);
    ASSERT(got.n >= 3);
    ASSERT(strcmp(got.v[got.n - 1], "after") == 0);
    ASSERT(strcmp(got.v[got.n - 2], "!FERRY_ETRUNCATED") == 0);
    for (size_t i = 0; i + 2 < got.n; i++) {
        char b[32];
        snprintf(b, sizeof b, "%zu", i);
        ASSERT(strcmp(got.v[i], b) == 0);
    }
    strs_free(&got);
    ferry_dataset_unref(ds);
    /* A plain file read as gzip: one FERRY_ECORRUPT error naming the file. */
    const char *plain = put_file("plain.txt", "not gzip\n", 9, FERRY_COMPRESSION_NONE);
    ds = lines(rt, 1, &plain, FERRY_COMPRESSION_GZIP, 0);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    got = (strs){0};
    drain(it, &got, -1);
    ASSERT_EQ(got.n, 1);
    ASSERT(strcmp(got.v[0], "!FERRY_ECORRUPT") == 0);
    ASSERT_STR_CONTAINS(last_msg, "plain.txt");
    strs_free(&got);
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    rt_done(rt);
    tdir_remove();
}

TEST(text_lines_save_restore_every_line) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    char a[400], b[400], c[400];
    snprintf(a, sizeof a, "%s", put_file("a.txt", "l0\r\nl1\n\nl3\nl4", 14, FERRY_COMPRESSION_NONE));
    snprintf(b, sizeof b, "%s", put_file("b.txt", "", 0, FERRY_COMPRESSION_NONE));
    snprintf(c, sizeof c, "%s", put_file("c.txt", "m0\nm1\n\r\n", 8, FERRY_COMPRESSION_NONE));
    const char *files[] = {a, b, c, a};
    ferry_dataset *ds = lines(rt, 4, files, FERRY_COMPRESSION_NONE, 4);
    const char *want[] = {"l0", "l1", "", "l3", "l4", "m0", "m1", "", "l0", "l1", "", "l3", "l4"};
    strs got = run_all(ds);
    expect_strs(&got, want, 13, "three files");
    strs_free(&got);
    save_restore_all(ds);
    ferry_dataset_unref(ds);
    /* The same through gzip and zlib. */
    ferry_compression comps[] = {FERRY_COMPRESSION_GZIP, FERRY_COMPRESSION_ZLIB};
    for (int k = 0; k < 2; k++) {
        snprintf(a, sizeof a, "%s", put_file("a.z", "l0\r\nl1\n\nl3\nl4", 14, comps[k]));
        snprintf(b, sizeof b, "%s", put_file("b.z", "", 0, comps[k]));
        snprintf(c, sizeof c, "%s", put_file("c.z", "m0\nm1\n\r\n", 8, comps[k]));
        ds = lines(rt, 4, files, comps[k], 0);
        got = run_all(ds);
        expect_strs(&got, want, 13, "compressed");
        strs_free(&got);
        save_restore_all(ds);
        ferry_dataset_unref(ds);
    }
    rt_done(rt);
    tdir_remove();
}

/* Restores from a hand-made state payload (file index, offset) through the op's make. */
static int restore_raw(ferry_dataset *ds, uint64_t file, int64_t off, ferry__status *st) {
    uint8_t buf[16];
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(file >> (8 * i));
    for (int i = 0; i < 8; i++) buf[8 + i] = (uint8_t)((uint64_t)off >> (8 * i));
    ferry__reader r;
    ferry__reader_init(&r, buf, sizeof buf);
    ferry__cancel c;
    ASSERT_OK(ferry__cancel_init(&c, NULL));
    ferry__ictx ctx = {.rt = ds->rt, .cancel = &c};
    ferry__iter *it = NULL;
    int rc = ds->vt->make(ds, &ctx, &r, &it, st);
    ferry__iter_free(it);
    ferry__cancel_fini(&c);
    return rc;
}

TEST(text_lines_state_validation) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    const char *path = put_file("s.txt", "ab\ncd\nef", 8, FERRY_COMPRESSION_NONE);
    ferry_dataset *ds = lines(rt, 1, &path, FERRY_COMPRESSION_NONE, 0);
    ferry__status st;
    ASSERT_OK(restore_raw(ds, 0, 0, &st));
    ASSERT_OK(restore_raw(ds, 0, 3, &st));
    ASSERT_OK(restore_raw(ds, 0, 6, &st));
    ASSERT_OK(restore_raw(ds, 0, 8, &st)); /* the end, after a last line without newline */
    ASSERT_OK(restore_raw(ds, 1, 0, &st));
    ASSERT_EQ(restore_raw(ds, 0, 2, &st), FERRY_ECORRUPT);
    ASSERT_STR_CONTAINS(st.msg, "does not start a line");
    ASSERT_EQ(restore_raw(ds, 0, 9, &st), FERRY_ECORRUPT);
    ASSERT_EQ(restore_raw(ds, 2, 0, &st), FERRY_ECORRUPT);
    ASSERT_EQ(restore_raw(ds, 1, 5, &st), FERRY_ECORRUPT);
    ASSERT_EQ(restore_raw(ds, 0, -4, &st), FERRY_ECORRUPT);
    ferry_dataset_unref(ds);
    rt_done(rt);
    tdir_remove();
}

/* ---- fixed-length records --------------------------------------------------------------- */
/* A file of header h, k records of r bytes (record i: bytes 'A' + (seed + i) % 26), extra bytes
 * of a partial record, and footer f. */
static size_t fl_data(uint8_t *buf, int h, int k, int r, int extra, int f, int seed) {
    size_t n = 0;
    for (int i = 0; i < h; i++) buf[n++] = 'h';
    for (int i = 0; i < k; i++)
        for (int j = 0; j < r; j++) buf[n++] = (uint8_t)('A' + (seed + i) % 26);
    for (int i = 0; i < extra; i++) buf[n++] = 'x';
    for (int i = 0; i < f; i++) buf[n++] = 'f';
    return n;
}

static void fl_want(char **want, size_t *n, int k, int r, int seed) {
    for (int i = 0; i < k; i++) {
        want[*n] = malloc((size_t)r + 1);
        memset(want[*n], 'A' + (seed + i) % 26, (size_t)r);
        want[*n][r] = '\0';
        (*n)++;
    }
}

static ferry_dataset *fixed(ferry_runtime *rt, size_t n, const char *const *files, int r, int h, int f,
                            ferry_compression c, size_t buf) {
    ferry_fixed_length_options o = {
        .record_bytes = r, .header_bytes = h, .footer_bytes = f, .compression = c, .buffer_size = buf};
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_fixed_length_records(rt, n, files, &o, &ds));
    return ds;
}

TEST(fixed_length_header_footer_remainder) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    uint8_t buf[4096];
    ferry_compression comps[] = {FERRY_COMPRESSION_NONE, FERRY_COMPRESSION_GZIP, FERRY_COMPRESSION_ZLIB};
    int shapes[][3] = {{0, 0, 4}, {3, 2, 4}, {7, 0, 1}, {0, 5, 3}, {10, 9, 16}};
    for (int c = 0; c < 3; c++) {
        for (int s = 0; s < 5; s++) {
            int h = shapes[s][0], f = shapes[s][1], r = shapes[s][2];
            char p1[400], p2[400], p3[400], p4[400];
            size_t n = fl_data(buf, h, 5, r, 0, f, 0);
            snprintf(p1, sizeof p1, "%s", put_file("1.bin", buf, n, comps[c]));
            n = fl_data(buf, h, 3, r, r > 1 ? r - 1 : 0, f, 10); /* a partial record (unless r == 1) */
            snprintf(p2, sizeof p2, "%s", put_file("2.bin", buf, n, comps[c]));
            n = fl_data(buf, h, 0, r, 0, f, 0);
            snprintf(p3, sizeof p3, "%s", put_file("3.bin", buf, n, comps[c]));
            snprintf(p4, sizeof p4, "%s", put_file("4.bin", buf, (size_t)(h + f > 0 ? h + f - 1 : 0), comps[c]));
            const char *files[] = {p1, p2, p3, p4, p1};
            char *want[32];
            size_t nw = 0;
            fl_want(want, &nw, 5, r, 0);
            fl_want(want, &nw, 3, r, 10);
            if (r > 1) want[nw++] = strdup("!FERRY_ECORRUPT");
            if (h + f > 0) want[nw++] = strdup("!FERRY_ECORRUPT");
            fl_want(want, &nw, 5, r, 0);
            for (size_t bsz = 0; bsz <= 2; bsz += 2) {
                ferry_dataset *ds = fixed(rt, 5, files, r, h, f, comps[c], bsz);
                ferry_iterator *it;
                ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
                strs got = {0};
                for (size_t i = 0; i < nw; i++) {
                    drain(it, &got, 1);
                    if (strcmp(got.v[i], "!FERRY_ECORRUPT") == 0) {
                        if (i == 8 && r > 1) {
                            ASSERT_STR_CONTAINS(last_msg, "2.bin");
                            ASSERT_STR_CONTAINS(last_msg, "not a multiple of record_bytes");
                            char off[64];
                            snprintf(off, sizeof off, "offset %d", h + 3 * r);
                            ASSERT_STR_CONTAINS(last_msg, off);
                        } else {
                            ASSERT_STR_CONTAINS(last_msg, "4.bin");
                            ASSERT_STR_CONTAINS(last_msg, "shorter than its header");
                        }
                    }
                }
                ferry_element *e = NULL;
                ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
                ferry_iterator_free(it);
                char what[96];
                snprintf(what, sizeof what, "compression %d shape %d buffer %zu", c, s, bsz);
                expect_strs(&got, (const char *const *)want, nw, what);
                strs_free(&got);
                if (bsz == 0 && (s == 1 || c == 0)) save_restore_all(ds);
                ferry_dataset_unref(ds);
            }
            for (size_t i = 0; i < nw; i++) free(want[i]);
        }
    }
    rt_done(rt);
    tdir_remove();
}

TEST(fixed_length_skip_state_and_arguments) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    uint8_t buf[4096];
    char p1[400], p2[400];
    size_t n = fl_data(buf, 4, 50, 8, 0, 3, 0);
    snprintf(p1, sizeof p1, "%s", put_file("1.bin", buf, n, FERRY_COMPRESSION_NONE));
    n = fl_data(buf, 4, 20, 8, 5, 3, 7);
    snprintf(p2, sizeof p2, "%s", put_file("2.bin", buf, n, FERRY_COMPRESSION_NONE));
    const char *files[] = {p1, p2, p1};
    ferry_dataset *ds = fixed(rt, 3, files, 8, 4, 3, FERRY_COMPRESSION_NONE, 0);
    strs full = run_all(ds);
    ASSERT_EQ(full.n, 50 + 20 + 1 + 50);
    /* skip k then next equals position k, for many k (seeks within plain files). */
    for (int64_t k = 0; k <= (int64_t)full.n; k += 3) {
        ferry__cancel c;
        ASSERT_OK(ferry__cancel_init(&c, NULL));
        ferry__ictx ctx = {.rt = rt, .cancel = &c};
        ferry__iter *it;
        ferry__status st;
        ASSERT_OK(ferry__iter_make(ds, &ctx, NULL, &it, &st));
        int64_t skipped = 0;
        ASSERT_OK(ferry__iter_skip(it, k, &skipped, &st));
        ASSERT_EQ(skipped, k);
        ferry_element *e = NULL;
        int rc = ferry__iter_next(it, &e, &st);
        if (k == (int64_t)full.n) {
            ASSERT_EQ(rc, FERRY_END);
        } else if (full.v[k][0] == '!') {
            ASSERT_EQ(rc, FERRY_ECORRUPT);
        } else {
            ASSERT_OK(rc);
            const uint8_t *p;
            size_t len;
            ASSERT_OK(ferry_tensor_bytes_get(ferry_element_get(e, 0), 0, &p, &len));
            ASSERT(len == 8 && memcmp(p, full.v[k], 8) == 0);
            ferry_element_free(e);
        }
        ferry__iter_free(it);
        ferry__cancel_fini(&c);
    }
    strs_free(&full);
    /* States: offsets must be 0 or header + k * record, within the file. */
    ferry__status st;
    ASSERT_OK(restore_raw(ds, 0, 0, &st));
    ASSERT_OK(restore_raw(ds, 0, 4, &st));
    ASSERT_OK(restore_raw(ds, 0, 12, &st));
    ASSERT_OK(restore_raw(ds, 3, 0, &st));
    ASSERT_EQ(restore_raw(ds, 0, 2, &st), FERRY_ECORRUPT);
    ASSERT_EQ(restore_raw(ds, 0, 13, &st), FERRY_ECORRUPT);
    ASSERT_EQ(restore_raw(ds, 0, 4 + 8 * 1000, &st), FERRY_ECORRUPT);
    ASSERT_EQ(restore_raw(ds, 4, 0, &st), FERRY_ECORRUPT);
    ASSERT_EQ(restore_raw(ds, 3, 4, &st), FERRY_ECORRUPT);
    ferry_dataset_unref(ds);
    /* Arguments. */
    ferry_fixed_length_options o = {.record_bytes = 0};
    ASSERT_EQ(ferry_dataset_fixed_length_records(rt, 1, files, &o, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "record_bytes");
    ASSERT_EQ(ferry_dataset_fixed_length_records(rt, 1, files, NULL, &ds), FERRY_EINVAL);
    o = (ferry_fixed_length_options){.record_bytes = 4, .header_bytes = -1};
    ASSERT_EQ(ferry_dataset_fixed_length_records(rt, 1, files, &o, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "header_bytes");
    o = (ferry_fixed_length_options){.record_bytes = 4, .footer_bytes = -1};
    ASSERT_EQ(ferry_dataset_fixed_length_records(rt, 1, files, &o, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "footer_bytes");
    o = (ferry_fixed_length_options){.record_bytes = 4};
    ASSERT_OK(ferry_dataset_fixed_length_records(rt, 0, NULL, &o, &ds));
    ASSERT_EQ(ferry_dataset_cardinality(ds), 0);
    ferry_dataset_unref(ds);
    rt_done(rt);
    tdir_remove();
}

/* ---- text files through a parallel interleave ------------------------------------------- */
static int open_lines(ferry_context *ctx, const ferry_element *in, ferry_dataset **out, void *user) {
    (void)user;
    const uint8_t *p;
    size_t len;
    int rc = ferry_tensor_bytes_get(ferry_element_get(in, 0), 0, &p, &len);
    if (rc) return ferry_context_fail(ctx, rc, "not a file name");
    char path[512];
    snprintf(path, sizeof path, "%.*s", (int)len, (const char *)p);
    const char *files[1] = {path};
    return ferry_dataset_text_lines(ferry_context_runtime(ctx), 1, files, NULL, out);
}

TEST(text_lines_interleaved_files) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    char names[3][400];
    snprintf(names[0], 400, "%s", put_file("a.txt", "a0\na1\na2\na3\n", 12, FERRY_COMPRESSION_NONE));
    snprintf(names[1], 400, "%s", put_file("b.txt", "b0\nb1\n", 6, FERRY_COMPRESSION_NONE));
    snprintf(names[2], 400, "%s", put_file("c.txt", "c0\nc1\nc2\n", 9, FERRY_COMPRESSION_NONE));
    const void *ptrs[4] = {names[0], names[1], "/nonexistent/ferry.txt", names[2]};
    size_t lens[4] = {strlen(names[0]), strlen(names[1]), strlen("/nonexistent/ferry.txt"), strlen(names[2])};
    int64_t n = 4;
    ferry_tensor *t;
    ASSERT_OK(ferry_tensor_create_bytes(rt, 1, &n, ptrs, lens, &t));
    ferry_dataset *files;
    ASSERT_OK(ferry_dataset_from_tensor_slices(rt, 1, &t, NULL, &files));
    ferry_tensor_unref(t);
    /* cycle 2, block 2: a0 a1 | b0 b1 | a2 a3 | b: end, missing file takes its slot: error |
     * a: end, c0 c1 | c2. */
    const char *want[] = {"a0", "a1", "b0", "b1", "a2", "a3", "!FERRY_ENOTFOUND", "c0", "c1", "c2"};
    for (int threads = 0; threads <= 3; threads += 3) {
        ferry_tensor_spec spec = {.dtype = FERRY_DTYPE_BYTES, .shape = {.rank = 0}};
        ferry_interleave_options o = {.cycle_length = 2,
                                      .block_length = 2,
                                      .num_parallel_calls = threads,
                                      .num_outputs = 1,
                                      .output_specs = &spec};
        ferry_dataset *ds;
        ASSERT_OK(ferry_dataset_interleave(files, open_lines, NULL, &o, &ds));
        strs got = run_all(ds);
        expect_strs(&got, want, sizeof want / sizeof want[0], "interleaved files");
        strs_free(&got);
        save_restore_all(ds);
        ferry_dataset_unref(ds);
    }
    ferry_dataset_unref(files);
    rt_done(rt);
    tdir_remove();
}

/* A damaged compressed stream: the lines (records) complete before the damage come out, then one
 * error, at the same position whatever the buffer size and after a restore at any position. */
TEST(damaged_gzip_error_position_is_stable) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    char text[8000];
    size_t tn = 0;
    for (int i = 0; i < 600; i++) tn += (size_t)snprintf(text + tn, sizeof text - tn, "%d\n", i * 7919 % 10007);
    char gz[400];
    snprintf(gz, sizeof gz, "%s", put_file("dmg.gz", text, tn, FERRY_COMPRESSION_GZIP));
    struct stat sb;
    ASSERT_EQ(stat(gz, &sb), 0);
    FILE *f = fopen(gz, "r+b");
    ASSERT(f != NULL);
    for (long off = sb.st_size / 2; off < sb.st_size / 2 + 6; off++) {
        ASSERT_EQ(fseek(f, off, SEEK_SET), 0);
        ASSERT_EQ(fputc(0xff, f), 0xff);
    }
    fclose(f);
    const char *files[1] = {gz};
    size_t bufs[] = {0, 1, 7, 64, 300};
    strs first = {0};
    for (int b = 0; b < 5; b++) {
        ferry_dataset *ds = lines(rt, 1, files, FERRY_COMPRESSION_GZIP, bufs[b]);
        strs got = run_all(ds);
        ASSERT(got.n >= 2);
        ASSERT(got.v[got.n - 1][0] == '!');
        if (b == 0) first = got;
        else {
            expect_strs(&got, (const char *const *)first.v, first.n, "buffer size");
            strs_free(&got);
        }
        if (b == 2) save_restore_all(ds);
        ferry_dataset_unref(ds);
    }
    strs_free(&first);
    /* The same file as fixed-length records of 3 bytes. */
    for (int b = 0; b < 5; b++) {
        ferry_dataset *ds = fixed(rt, 1, files, 3, 2, 1, FERRY_COMPRESSION_GZIP, bufs[b]);
        strs got = run_all(ds);
        ASSERT(got.n >= 2);
        ASSERT(got.v[got.n - 1][0] == '!');
        if (b == 0) first = got;
        else {
            expect_strs(&got, (const char *const *)first.v, first.n, "fixed, buffer size");
            strs_free(&got);
        }
        if (b == 1) save_restore_all(ds);
        ferry_dataset_unref(ds);
    }
    strs_free(&first);
    rt_done(rt);
    tdir_remove();
}

/* ---- allocation failures ---------------------------------------------------------------- */
typedef struct failing_alloc {
    _Atomic long n;
    long fail_at;
} failing_alloc;

static void *failing_alloc_fn(void *user, void *ptr, size_t old, size_t size) {
    failing_alloc *f = user;
    (void)old;
    if (size == 0) {
        free(ptr);
        return NULL;
    }
    if (atomic_fetch_add(&f->n, 1) + 1 == f->fail_at) return NULL;
    return realloc(ptr, size);
}

/* Reads ds with a save/restore after 3 positions, accepting any error. */
static void lenient_pass(ferry_dataset *ds) {
    ferry_iterator *it, *r;
    if (ferry_iterator_create(ds, NULL, &it) != FERRY_OK) return;
    for (int i = 0; i < 100; i++) {
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        ASSERT((rc == FERRY_OK) == (e != NULL));
        ferry_element_free(e);
        if (rc == FERRY_END) break;
        ferry_blob *b;
        if (i == 3 && ferry_iterator_save(it, &b) == FERRY_OK) {
            if (ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), NULL, &r) == FERRY_OK) {
                for (int j = 0; j < 100; j++) {
                    ferry_element *x = NULL;
                    int rr = ferry_iterator_next(r, &x);
                    ferry_element_free(x);
                    if (rr == FERRY_END) break;
                }
                ferry_iterator_free(r);
            }
            ferry_blob_free(b);
        }
    }
    ferry_iterator_free(it);
}

TEST(text_and_fixed_allocation_failures) {
    tdir_make();
    char plain[400], gz[400];
    snprintf(plain, sizeof plain, "%s", put_file("p.txt", "l0\nl1\r\n\nl3\nlast", 16, FERRY_COMPRESSION_NONE));
    snprintf(gz, sizeof gz, "%s", put_file("g.gz", "g0\ng1\ng2\n", 9, FERRY_COMPRESSION_GZIP));
    const char *files[2] = {plain, gz};
    long k = 1;
    for (;; k++) {
        static failing_alloc fa;
        atomic_store(&fa.n, 0);
        fa.fail_at = k;
        ferry_runtime_options ro = {.alloc = failing_alloc_fn, .alloc_user = &fa};
        ferry_runtime *rt;
        if (ferry_runtime_create(&ro, &rt) != FERRY_OK) continue;
        ferry_dataset *ds;
        ferry_text_line_options to = {.buffer_size = 4};
        if (ferry_dataset_text_lines(rt, 2, files, &to, &ds) == FERRY_OK) {
            lenient_pass(ds);
            ferry_dataset_unref(ds);
        }
        to.compression = FERRY_COMPRESSION_GZIP;
        if (ferry_dataset_text_lines(rt, 1, files + 1, &to, &ds) == FERRY_OK) {
            lenient_pass(ds);
            ferry_dataset_unref(ds);
        }
        ferry_fixed_length_options fo = {.record_bytes = 3, .header_bytes = 1, .footer_bytes = 2, .buffer_size = 2};
        if (ferry_dataset_fixed_length_records(rt, 2, files, &fo, &ds) == FERRY_OK) {
            lenient_pass(ds);
            ferry_dataset_unref(ds);
        }
        rt_done(rt);
        if (atomic_load(&fa.n) < k) break;
    }
    ASSERT(k > 100);
    tdir_remove();
}
