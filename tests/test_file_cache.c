/*
 * test_file_cache.c - cache(path): the first full pass writes the file, later passes read it
 * without touching the input (counted); a partial pass leaves nothing; stale, damaged (bytes
 * flipped at many offsets) and truncated files are rebuilt and never read as data; errors are
 * not cached; two writers on one path (threads and processes) leave a valid file; save/restore
 * in the middle of a writing pass and of a reading pass (across the footer's index blocks); and
 * I/O faults (short writes, ENOSPC, EIO, failed fsync and rename).
 *
 * The input is "rec", a source defined here with the internal op API: element i is
 * (int64 i, float32[3], bytes[2] of varying lengths, bytes scalar), with errors at chosen
 * positions and a counter of next calls. Files live in a mkdtemp directory removed at the end.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

#include "runner.h"

#include "core/core.h"
#include "ops/ops.h"

/* ---- temporary directory ---------------------------------------------------------------- */
static char tdir[256];
static char cpath[300];

static void tdir_make_in(const char *base) {
    snprintf(tdir, sizeof tdir, "%s/ferry-fc-XXXXXX", base);
    ASSERT(mkdtemp(tdir) != NULL);
    snprintf(cpath, sizeof cpath, "%s/cache.bin", tdir);
}

static void tdir_make(void) { tdir_make_in("/tmp"); }

/* Files in the directory, other than the cache itself (temporaries). */
static int count_others(void) {
    DIR *d = opendir(tdir);
    ASSERT(d != NULL);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        if (strcmp(de->d_name, "cache.bin") == 0) continue;
        n++;
    }
    closedir(d);
    return n;
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

static bool file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

static long file_size(const char *p) {
    struct stat sb;
    ASSERT_EQ(stat(p, &sb), 0);
    return (long)sb.st_size;
}

static void flip_byte(const char *p, long off) {
    int fd = open(p, O_RDWR);
    ASSERT(fd >= 0);
    uint8_t b;
    ASSERT_EQ(pread(fd, &b, 1, off), 1);
    b ^= 0x5a;
    ASSERT_EQ(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

/* ---- rec: a test source ------------------------------------------------------------------ */
typedef struct rec_ds {
    ferry_dataset base;
    int64_t n, err_at, mult;
} rec_ds;

typedef struct rec_it {
    ferry__iter base;
    int64_t i;
} rec_it;

static _Atomic long rec_calls;

/* Element i, or NULL when an allocation fails (allocation-failure tests). */
static ferry_element *rec_element(ferry_runtime *rt, int64_t i) {
    ferry_tensor *t[4] = {NULL, NULL, NULL, NULL};
    int64_t d3 = 3, d2 = 2;
    char s0[32], s1[64];
    snprintf(s0, sizeof s0, "s%lld", (long long)i);
    memset(s1, 'x', sizeof s1);
    const void *ptrs[2] = {s0, s1};
    size_t lens[2] = {strlen(s0), (size_t)(i % 9)};
    const void *p3 = "";
    size_t l3 = 0;
    if (ferry_tensor_scalar_i64(rt, i, &t[0]) || ferry_tensor_create(rt, FERRY_DTYPE_FLOAT32, 1, &d3, &t[1]) ||
        ferry_tensor_create_bytes(rt, 1, &d2, ptrs, lens, &t[2]) ||
        ferry_tensor_create_bytes(rt, 0, NULL, &p3, &l3, &t[3])) {
        for (int k = 0; k < 4; k++) ferry_tensor_unref(t[k]);
        return NULL;
    }
    float *f = ferry_tensor_mutable_data(t[1]);
    f[0] = (float)i, f[1] = (float)i + 0.5f, f[2] = -(float)i;
    ferry_element *e;
    if (ferry_element_create(rt, 4, t, &e)) return NULL;
    return e;
}

static int rec_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    rec_it *it = (rec_it *)it_;
    const rec_ds *ds = (const rec_ds *)it_->ds;
    atomic_fetch_add(&rec_calls, 1);
    if (it->i >= ds->n) return FERRY_END;
    int64_t pos = it->i++;
    if (pos == ds->err_at) return ferry__fail(st, FERRY_EIO, "rec: error at %lld", (long long)pos);
    *out = rec_element(it_->ctx.rt, pos * ds->mult);
    return *out ? FERRY_OK : ferry__fail(st, FERRY_ENOMEM, "rec: allocating element %lld failed", (long long)pos);
}

static int rec_save(ferry__iter *it, ferry__writer *w, ferry__status *st) {
    (void)st;
    ferry__w_i64(w, ((rec_it *)it)->i);
    return FERRY_OK;
}

static void rec_destroy(ferry__iter *it) { ferry__iter_release(it); }
static const ferry__iter_vtable rec_iter_vt = {rec_next, rec_save, NULL, rec_destroy};

static int rec_make(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                    ferry__status *st) {
    rec_it *it = ferry__iter_alloc(ds, ctx, &rec_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    if (state) {
        int rc = ferry__r_i64(state, &it->i, st);
        if (rc) {
            ferry__iter_release(&it->base);
            return rc;
        }
    }
    *out = &it->base;
    return FERRY_OK;
}

static const ferry__dataset_vtable rec_vt = {.make = rec_make};

static ferry_dataset *rec(ferry_runtime *rt, int64_t n, int64_t err_at, int64_t mult) {
    ferry_tensor_spec specs[4] = {{FERRY_DTYPE_INT64, {.rank = 0}},
                                  {FERRY_DTYPE_FLOAT32, {.rank = 1, .dims = {3}}},
                                  {FERRY_DTYPE_BYTES, {.rank = 1, .dims = {2}}},
                                  {FERRY_DTYPE_BYTES, {.rank = 0}}};
    ferry_dataset *ds;
    ASSERT_OK(ferry__dataset_new(rt, &rec_vt, "rec", sizeof(rec_ds), 0, NULL, 4, specs, n, &ds));
    rec_ds *r = (rec_ds *)ds;
    r->n = n, r->err_at = err_at, r->mult = mult;
    ferry__dataset_hash_i64(ds, n);
    ferry__dataset_hash_i64(ds, err_at);
    ferry__dataset_hash_i64(ds, mult);
    ferry__dataset_seal(ds);
    return ds;
}

/* ---- checking streams ------------------------------------------------------------------- */
/* Checks that e is rec element v, exactly. */
static void check_rec(const ferry_element *e, int64_t v) {
    ASSERT_EQ(ferry_element_size(e), 4);
    ASSERT_EQ(*(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)), v);
    const float *f = ferry_tensor_data(ferry_element_get(e, 1));
    ASSERT(f[0] == (float)v && f[1] == (float)v + 0.5f && f[2] == -(float)v);
    const ferry_tensor *t = ferry_element_get(e, 2);
    ASSERT_EQ(ferry_tensor_rank(t), 1);
    ASSERT_EQ(ferry_tensor_dim(t, 0), 2);
    const uint8_t *p;
    size_t len;
    char s0[32];
    snprintf(s0, sizeof s0, "s%lld", (long long)v);
    ASSERT_OK(ferry_tensor_bytes_get(t, 0, &p, &len));
    ASSERT(len == strlen(s0) && memcmp(p, s0, len) == 0);
    ASSERT_OK(ferry_tensor_bytes_get(t, 1, &p, &len));
    ASSERT_EQ(len, v % 9);
    for (size_t k = 0; k < len; k++) ASSERT_EQ(p[k], 'x');
    ASSERT_OK(ferry_tensor_bytes_get(ferry_element_get(e, 3), 0, &p, &len));
    ASSERT_EQ(len, 0);
    ASSERT_EQ(ferry_tensor_rank(ferry_element_get(e, 3)), 0);
}

/* Reads positions [from, to) (to < 0: to the end, checking END) and checks them against
 * rec(n, err_at, mult). */
static void expect_positions(ferry_iterator *it, int64_t from, int64_t to, int64_t n, int64_t err_at, int64_t mult) {
    int64_t stop = to < 0 ? n : to;
    for (int64_t i = from; i < stop; i++) {
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (i == err_at) {
            if (rc != FERRY_EIO) FAILF("position %lld: expected FERRY_EIO, got %s", (long long)i, ferry_error_name(rc));
            ASSERT_STR_CONTAINS(ferry_iterator_error(it), "rec: error at");
            continue;
        }
        if (rc != FERRY_OK)
            FAILF("position %lld: got %s: %s", (long long)i, ferry_error_name(rc), ferry_iterator_error(it));
        check_rec(e, i * mult);
        ferry_element_free(e);
    }
    if (to < 0) {
        ferry_element *e = NULL;
        ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
        ASSERT_EQ(ferry_iterator_next(it, &e), FERRY_END);
    }
}

/* One full pass over ds; returns the input's next calls during it. */
static long full_pass(ferry_dataset *ds, int64_t n, int64_t err_at, int64_t mult) {
    long before = atomic_load(&rec_calls);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    expect_positions(it, 0, -1, n, err_at, mult);
    ferry_iterator_free(it);
    return atomic_load(&rec_calls) - before;
}

static ferry_dataset *cache_of(ferry_dataset *in) {
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_cache(in, &(ferry_cache_options){.path = cpath}, &ds));
    return ds;
}

/* ---- tests ------------------------------------------------------------------------------ */
TEST(file_cache_second_pass_reads_file) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    ferry_dataset *in = rec(rt, 50, -1, 1);
    ferry_dataset *ds = cache_of(in);
    ASSERT(strcmp(ferry_dataset_name(ds), "cache") == 0);
    ASSERT_EQ(ferry_dataset_cardinality(ds), 50);
    ASSERT(!file_exists(cpath));
    ASSERT_EQ(full_pass(ds, 50, -1, 1), 51);
    ASSERT(file_exists(cpath));
    ASSERT_EQ(count_others(), 0);
    for (int epoch = 0; epoch < 3; epoch++) ASSERT_EQ(full_pass(ds, 50, -1, 1), 0);
    /* Another dataset object over an equal pipeline shares the file. */
    ferry_dataset *in2 = rec(rt, 50, -1, 1);
    ferry_dataset *ds2 = cache_of(in2);
    ASSERT_EQ(full_pass(ds2, 50, -1, 1), 0);
    /* repeat over the cache: epoch 1 writes, the others read. */
    unlink(cpath);
    ferry_dataset *rep;
    ASSERT_OK(ferry_dataset_repeat(ds, 3, NULL, &rep));
    long before = atomic_load(&rec_calls);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(rep, NULL, &it));
    for (int e = 0; e < 3; e++) expect_positions(it, 0, 50, 50, -1, 1);
    ferry_element *el = NULL;
    ASSERT_EQ(ferry_iterator_next(it, &el), FERRY_END);
    ferry_iterator_free(it);
    ASSERT_EQ(atomic_load(&rec_calls) - before, 51);
    ferry_runtime_stats rs;
    ASSERT_OK(ferry_runtime_stats_get(rt, &rs));
    ASSERT_EQ(rs.budget_used, 0);
    ferry_dataset_unref(rep);
    ferry_dataset_unref(ds2);
    ferry_dataset_unref(in2);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    rt_done(rt);
    tdir_remove();
}

TEST(file_cache_empty_input) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    ferry_dataset *in = rec(rt, 0, -1, 1);
    ferry_dataset *ds = cache_of(in);
    ASSERT_EQ(full_pass(ds, 0, -1, 1), 1);
    ASSERT(file_exists(cpath));
    ASSERT_EQ(full_pass(ds, 0, -1, 1), 0);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    rt_done(rt);
    tdir_remove();
}

TEST(file_cache_partial_pass_leaves_nothing) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    ferry_dataset *in = rec(rt, 30, -1, 1);
    ferry_dataset *ds = cache_of(in);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    expect_positions(it, 0, 12, 30, -1, 1);
    ASSERT_EQ(count_others(), 1); /* its temporary file */
    ferry_iterator_free(it);
    ASSERT(!file_exists(cpath));
    ASSERT_EQ(count_others(), 0);
    /* All elements but not END: still nothing committed. */
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    expect_positions(it, 0, 30, 30, -1, 1);
    ferry_iterator_free(it);
    ASSERT(!file_exists(cpath));
    ASSERT_EQ(count_others(), 0);
    ASSERT_EQ(full_pass(ds, 30, -1, 1), 31);
    ASSERT_EQ(full_pass(ds, 30, -1, 1), 0);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    rt_done(rt);
    tdir_remove();
}

TEST(file_cache_stale_fingerprint_rebuilt) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    ferry_dataset *a = rec(rt, 20, -1, 1), *b = rec(rt, 25, -1, 3);
    ferry_dataset *ca = cache_of(a), *cb = cache_of(b);
    ASSERT_EQ(full_pass(ca, 20, -1, 1), 21);
    ASSERT_EQ(full_pass(ca, 20, -1, 1), 0);
    /* Same path, another pipeline: the file is stale; b's own values come out and are cached. */
    ASSERT_EQ(full_pass(cb, 25, -1, 3), 26);
    ASSERT_EQ(full_pass(cb, 25, -1, 3), 0);
    ASSERT_EQ(full_pass(ca, 20, -1, 1), 21);
    /* Same input, another element spec declared downstream cannot happen; a file of another
     * format version is stale too. */
    flip_byte(cpath, 8); /* version */
    ASSERT_EQ(full_pass(ca, 20, -1, 1), 21);
    ASSERT_EQ(full_pass(ca, 20, -1, 1), 0);
    ferry_dataset_unref(ca);
    ferry_dataset_unref(cb);
    ferry_dataset_unref(a);
    ferry_dataset_unref(b);
    rt_done(rt);
    tdir_remove();
}

TEST(file_cache_corrupt_bytes_rebuilt) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    const int64_t n = 40;
    ferry_dataset *in = rec(rt, n, -1, 1);
    ferry_dataset *ds = cache_of(in);
    ASSERT_EQ(full_pass(ds, n, -1, 1), n + 1);
    long size = file_size(cpath);
    long offs[] = {0,         5,         13,        20,        30,         45,        60,
                   61,        100,       size / 3,  size / 2,  size - 200, size - 60, size - 40,
                   size - 30, size - 24, size - 20, size - 12, size - 5,   size - 1};
    for (size_t k = 0; k < sizeof offs / sizeof offs[0]; k++) {
        if (offs[k] < 0 || offs[k] >= size) continue;
        flip_byte(cpath, offs[k]);
        /* Whatever was damaged, the stream is exactly right, and the file is rewritten. */
        long calls = full_pass(ds, n, -1, 1);
        if (calls == 0) FAILF("flipping byte %ld of %ld went unnoticed", offs[k], size);
        ASSERT_EQ(full_pass(ds, n, -1, 1), 0);
        ASSERT_EQ(file_size(cpath), size);
        ASSERT_EQ(count_others(), 0);
    }
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    rt_done(rt);
    tdir_remove();
}

TEST(file_cache_truncated_rebuilt) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    const int64_t n = 40;
    ferry_dataset *in = rec(rt, n, -1, 1);
    ferry_dataset *ds = cache_of(in);
    ASSERT_EQ(full_pass(ds, n, -1, 1), n + 1);
    long size = file_size(cpath);
    long cuts[] = {0, 1, 7, 30, size / 2, size - 25, size - 24, size - 8, size - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        ASSERT_EQ(truncate(cpath, cuts[k]), 0);
        ASSERT(full_pass(ds, n, -1, 1) > 0);
        ASSERT_EQ(file_size(cpath), size);
        ASSERT_EQ(full_pass(ds, n, -1, 1), 0);
    }
    /* Extra bytes appended after the trailer: no trailer at the end, rebuilt. */
    int fd = open(cpath, O_WRONLY | O_APPEND);
    ASSERT(fd >= 0);
    ASSERT_EQ(write(fd, "junk", 4), 4);
    close(fd);
    ASSERT(full_pass(ds, n, -1, 1) > 0);
    ASSERT_EQ(full_pass(ds, n, -1, 1), 0);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    rt_done(rt);
    tdir_remove();
}

TEST(file_cache_errors_not_cached) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    ferry_dataset *in = rec(rt, 10, 3, 1);
    ferry_dataset *ds = cache_of(in);
    ASSERT_EQ(full_pass(ds, 10, 3, 1), 11);
    ASSERT(!file_exists(cpath));
    ASSERT_EQ(count_others(), 0);
    ASSERT_EQ(full_pass(ds, 10, 3, 1), 11); /* the error is met again in the input */
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    rt_done(rt);
    tdir_remove();
}

typedef struct pass_arg {
    ferry_dataset *ds;
    int64_t n;
} pass_arg;

static void *pass_thread(void *p) {
    pass_arg *a = p;
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(a->ds, NULL, &it));
    expect_positions(it, 0, -1, a->n, -1, 1);
    ferry_iterator_free(it);
    return NULL;
}

TEST(file_cache_concurrent_writers) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    const int64_t n = 3000;
    ferry_dataset *in = rec(rt, n, -1, 1);
    ferry_dataset *ds = cache_of(in);
    /* Threads: two writers at once, and a third that may start reading midway. */
    for (int round = 0; round < 3; round++) {
        unlink(cpath);
        pthread_t t[3];
        pass_arg a = {ds, n};
        for (int i = 0; i < 3; i++) ASSERT_EQ(pthread_create(&t[i], NULL, pass_thread, &a), 0);
        for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
        ASSERT(file_exists(cpath));
        ASSERT_EQ(count_others(), 0);
        ASSERT_EQ(full_pass(ds, n, -1, 1), 0);
    }
    /* Processes: a child and the parent write the same path at the same time. */
    unlink(cpath);
    fflush(NULL);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        ferry_runtime *crt = rt_new();
        ferry_dataset *cin = rec(crt, n, -1, 1);
        ferry_dataset *cds = cache_of(cin);
        pass_arg a = {cds, n};
        pass_thread(&a);
        ferry_dataset_unref(cds);
        ferry_dataset_unref(cin);
        _exit(ferry_runtime_free(crt) == FERRY_OK ? 0 : 3);
    }
    pass_arg a = {ds, n};
    pass_thread(&a);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ASSERT_EQ(count_others(), 0);
    ASSERT_EQ(full_pass(ds, n, -1, 1), 0);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    rt_done(rt);
    tdir_remove();
}

/* Saves after p positions and restores; the rest must follow exactly. Returns the input calls
 * of the restored part. */
static long save_restore_at(ferry_dataset *ds, int64_t p, int64_t n, int64_t err_at) {
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    expect_positions(it, 0, p, n, err_at, 1);
    ferry_blob *b;
    ASSERT_OK(ferry_iterator_save(it, &b));
    ferry_iterator_free(it);
    long before = atomic_load(&rec_calls);
    ferry_iterator *r;
    int rc = ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), NULL, &r);
    if (rc) FAILF("restore at %lld: %s", (long long)p, ferry_last_error());
    ferry_blob_free(b);
    expect_positions(r, p, -1, n, err_at, 1);
    ferry_iterator_free(r);
    return atomic_load(&rec_calls) - before;
}

TEST(file_cache_save_restore_mid_write) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    const int64_t n = 25;
    ferry_dataset *in = rec(rt, n, 7, 1);
    ferry_dataset *ds = cache_of(in);
    for (int64_t p = 0; p <= n; p++) {
        long calls = save_restore_at(ds, p, n, 7);
        ASSERT_EQ(calls, n - p + 1);
        ASSERT(!file_exists(cpath));
        ASSERT_EQ(count_others(), 0);
    }
    ferry_dataset *in2 = rec(rt, n, -1, 1);
    ferry_dataset *ds2 = cache_of(in2);
    for (int64_t p = 0; p <= n; p += 5) {
        save_restore_at(ds2, p, n, -1);
        ASSERT(!file_exists(cpath)); /* the restored pass does not write */
    }
    ferry_dataset_unref(ds2);
    ferry_dataset_unref(in2);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    rt_done(rt);
    tdir_remove();
}

TEST(file_cache_save_restore_mid_read) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    const int64_t n = 2600; /* three blocks of the footer's index */
    ferry_dataset *in = rec(rt, n, -1, 1);
    ferry_dataset *ds = cache_of(in);
    ASSERT_EQ(full_pass(ds, n, -1, 1), n + 1);
    int64_t ps[] = {0, 1, 2, 97, 500, 1022, 1023, 1024, 1025, 2047, 2048, 2049, 2599, 2600};
    for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++) ASSERT_EQ(save_restore_at(ds, ps[k], n, -1), 0);
    /* The file vanishes between save and restore: rebuilt from the input, stream exact. */
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    expect_positions(it, 0, 1500, n, -1, 1);
    ferry_blob *b;
    ASSERT_OK(ferry_iterator_save(it, &b));
    ferry_iterator_free(it);
    unlink(cpath);
    ferry_iterator *r;
    ASSERT_OK(ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), NULL, &r));
    expect_positions(r, 1500, -1, n, -1, 1);
    ferry_iterator_free(r);
    ferry_blob_free(b);
    ASSERT(file_exists(cpath)); /* the rebuild wrote all of it */
    ASSERT_EQ(full_pass(ds, n, -1, 1), 0);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    rt_done(rt);
    tdir_remove();
}

/* ---- fault injection -------------------------------------------------------------------- */
typedef struct fault_cfg {
    int op;     /* which op is affected */
    long limit; /* short transfers of at most this many bytes (0: none) */
    int err;    /* errno to fail with at or after `at` */
    int64_t at; /* file offset at which the error starts */
    _Atomic long hits;
} fault_cfg;

static long fault_fn(void *user, int op, int64_t offset, size_t size) {
    fault_cfg *c = user;
    if (op != c->op) return (long)size;
    atomic_fetch_add(&c->hits, 1);
    if (c->err && offset + (int64_t)size > c->at) return -c->err;
    if (c->limit && (long)size > c->limit) return c->limit;
    return (long)size;
}

TEST(file_cache_io_faults) {
    tdir_make();
    ferry_runtime *rt = rt_new();
    const int64_t n = 60;
    ferry_dataset *in = rec(rt, n, -1, 1);
    ferry_dataset *ds = cache_of(in);
    static fault_cfg f;
    /* Short writes: the file is still complete. */
    f = (fault_cfg){.op = 'w', .limit = 7};
    ferry__runtime_set_file_fault(rt, fault_fn, &f);
    ASSERT_EQ(full_pass(ds, n, -1, 1), n + 1);
    ASSERT(atomic_load(&f.hits) > 10);
    ferry__runtime_set_file_fault(rt, NULL, NULL);
    ASSERT_EQ(full_pass(ds, n, -1, 1), 0);
    long size = file_size(cpath);
    /* ENOSPC and EIO while writing: stream intact, nothing committed, no temporary left. */
    int errs[] = {ENOSPC, EIO};
    int64_t ats[] = {0, 100, size - 10};
    for (int e = 0; e < 2; e++) {
        for (int a = 0; a < 3; a++) {
            unlink(cpath);
            f = (fault_cfg){.op = 'w', .err = errs[e], .at = ats[a]};
            ferry__runtime_set_file_fault(rt, fault_fn, &f);
            ASSERT_EQ(full_pass(ds, n, -1, 1), n + 1);
            ferry__runtime_set_file_fault(rt, NULL, NULL);
            ASSERT(!file_exists(cpath));
            ASSERT_EQ(count_others(), 0);
        }
    }
    /* fsync or rename failing: no commit. */
    int ops[] = {'s', 'n'};
    for (int k = 0; k < 2; k++) {
        f = (fault_cfg){.op = ops[k], .err = EIO, .at = -1};
        ferry__runtime_set_file_fault(rt, fault_fn, &f);
        ASSERT_EQ(full_pass(ds, n, -1, 1), n + 1);
        ferry__runtime_set_file_fault(rt, NULL, NULL);
        ASSERT(!file_exists(cpath));
        ASSERT_EQ(count_others(), 0);
    }
    ASSERT_EQ(full_pass(ds, n, -1, 1), n + 1);
    /* Short reads: still read from the file. */
    f = (fault_cfg){.op = 'r', .limit = 5};
    ferry__runtime_set_file_fault(rt, fault_fn, &f);
    ASSERT_EQ(full_pass(ds, n, -1, 1), 0);
    /* EIO while reading in the middle of the file: the rest comes from the input, exactly. */
    f = (fault_cfg){.op = 'r', .err = EIO, .at = size / 2};
    ferry__runtime_set_file_fault(rt, fault_fn, &f);
    ASSERT(full_pass(ds, n, -1, 1) > 0);
    ferry__runtime_set_file_fault(rt, NULL, NULL);
    ASSERT_EQ(full_pass(ds, n, -1, 1), 0);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    rt_done(rt);
    tdir_remove();
}

TEST(file_cache_arguments) {
    ferry_runtime *rt = rt_new();
    ferry_dataset *in = rec(rt, 3, -1, 1), *ds = NULL;
    char *longp = malloc(5000);
    memset(longp, 'a', 4999);
    longp[4999] = '\0';
    ASSERT_EQ(ferry_dataset_cache(in, &(ferry_cache_options){.path = longp}, &ds), FERRY_EINVAL);
    ASSERT_STR_CONTAINS(ferry_last_error(), "path");
    ASSERT(ds == NULL);
    free(longp);
    /* A directory that does not exist: the stream passes through, nothing is written. */
    ASSERT_OK(ferry_dataset_cache(in, &(ferry_cache_options){.path = "/nonexistent-ferry-dir/x/cache.bin"}, &ds));
    ASSERT_EQ(full_pass(ds, 3, -1, 1), 4);
    ASSERT_EQ(full_pass(ds, 3, -1, 1), 4);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    rt_done(rt);
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

/* Builds the cache dataset and runs a writing pass, then a reading pass with a save/restore in
 * the middle, accepting any error; nothing may crash or stay allocated. */
static long one_failing_run(long k, bool prewrite) {
    static failing_alloc fa;
    atomic_store(&fa.n, 0);
    fa.fail_at = k;
    ferry_runtime_options ro = {.alloc = failing_alloc_fn, .alloc_user = &fa};
    ferry_runtime *rt;
    if (ferry_runtime_create(&ro, &rt) != FERRY_OK) return k + 1;
    unlink(cpath);
    if (prewrite) { /* a committed cache to read, made without faults */
        ferry_runtime *ok = rt_new();
        ferry_dataset *in = rec(ok, 30, -1, 1), *ds = cache_of(in);
        ASSERT_EQ(full_pass(ds, 30, -1, 1), 31);
        ferry_dataset_unref(ds);
        ferry_dataset_unref(in);
        rt_done(ok);
    }
    ferry_dataset *in = NULL, *ds = NULL;
    ferry_iterator *it = NULL, *r = NULL;
    ferry_blob *b = NULL;
    ferry_tensor_spec specs[4] = {{FERRY_DTYPE_INT64, {.rank = 0}},
                                  {FERRY_DTYPE_FLOAT32, {.rank = 1, .dims = {3}}},
                                  {FERRY_DTYPE_BYTES, {.rank = 1, .dims = {2}}},
                                  {FERRY_DTYPE_BYTES, {.rank = 0}}};
    if (ferry__dataset_new(rt, &rec_vt, "rec", sizeof(rec_ds), 0, NULL, 4, specs, 30, &in) == FERRY_OK) {
        rec_ds *rd = (rec_ds *)in;
        rd->n = 30, rd->err_at = -1, rd->mult = 1;
        ferry__dataset_hash_i64(in, 30);
        ferry__dataset_hash_i64(in, -1);
        ferry__dataset_hash_i64(in, 1);
        ferry__dataset_seal(in);
        if (ferry_dataset_cache(in, &(ferry_cache_options){.path = cpath}, &ds) != FERRY_OK) ds = NULL;
    }
    for (int pass = 0; ds && pass < 2; pass++) {
        if (ferry_iterator_create(ds, NULL, &it) != FERRY_OK) break;
        for (int i = 0; i < 200; i++) {
            ferry_element *e = NULL;
            int rc = ferry_iterator_next(it, &e);
            ferry_element_free(e);
            if (rc == FERRY_END) break;
            if (i == 10 && ferry_iterator_save(it, &b) == FERRY_OK) {
                if (ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), NULL, &r) == FERRY_OK) {
                    for (int j = 0; j < 200; j++) {
                        ferry_element *x = NULL;
                        int rr = ferry_iterator_next(r, &x);
                        ferry_element_free(x);
                        if (rr == FERRY_END) break;
                    }
                }
                ferry_iterator_free(r);
                r = NULL;
                ferry_blob_free(b);
                b = NULL;
            }
        }
        ferry_iterator_free(it);
        it = NULL;
    }
    ferry_dataset_unref(ds);
    ferry_dataset_unref(in);
    rt_done(rt);
    ASSERT_EQ(count_others(), 0);
    return atomic_load(&fa.n);
}

TEST(file_cache_allocation_failures) {
    /* About a thousand runs, each committing a file: on tmpfs when there is one (fsync is free). */
    tdir_make_in(access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    for (int prewrite = 0; prewrite < 2; prewrite++) {
        long k = 1;
        for (;; k++)
            if (one_failing_run(k, prewrite) < k) break;
        ASSERT(k > 20);
    }
    tdir_remove();
}
