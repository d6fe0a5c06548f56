/*
 * test_statefile.c - saved states as files: round trip, the checks on restore (other pipeline,
 * corrupt, truncated, newer version), `ferry state show`, and the kill test: a child process
 * saves its iterator's state after every element, resuming from the file each time it starts,
 * and is killed with SIGKILL at random moments; every file that survives must restore to exactly
 * the stream position it names (or be rejected: a wrong stream is never accepted).
 */
#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>

#include "runner.h"

static ferry_runtime *rt_new(void) {
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(NULL, &rt));
    return rt;
}

static void rt_done(ferry_runtime *rt) {
    int rc = ferry_runtime_free(rt);
    if (rc != FERRY_OK) FAILF("runtime not empty: %s", ferry_last_error());
}

static char *tmpdir(void) {
    static char buf[64];
    snprintf(buf, sizeof buf, "/tmp/ferry-statefile-XXXXXX");
    ASSERT(mkdtemp(buf) != NULL);
    return buf;
}

static void rmtree(const char *dir) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ASSERT_EQ(system(cmd), 0);
}

static int64_t value_of(ferry_element *e) { return *(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0)); }

/* The pipeline every test here uses; a different `stop` makes a different pipeline. */
static ferry_dataset *pipeline(ferry_runtime *rt, int64_t stop) {
    ferry_dataset *ds;
    ASSERT_OK(ferry_dataset_range(rt, 0, stop, 1, &ds));
    return ds;
}

TEST(file_round_trip_and_show) {
    ferry_runtime *rt = rt_new();
    char *dir = tmpdir();
    char path[128];
    snprintf(path, sizeof path, "%s/state", dir);
    ferry_dataset *ds = pipeline(rt, 1000);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    for (int i = 0; i < 123; i++) {
        ferry_element *e;
        ASSERT_OK(ferry_iterator_next(it, &e));
        ferry_element_free(e);
    }
    ASSERT_OK(ferry_iterator_save_file(it, path));
    ferry_blob *b;
    ASSERT_OK(ferry_state_file_read(rt, path, &b));
    ferry_state_info info;
    ASSERT_OK(ferry_state_info_get(ferry_blob_data(b), ferry_blob_size(b), &info));
    ASSERT_EQ(info.position, 123);
    ASSERT_EQ(info.fingerprint, ferry_dataset_fingerprint(ds));
    ASSERT_EQ(info.size, ferry_blob_size(b));
    ferry_blob_free(b);
    ferry_iterator *r;
    ASSERT_OK(ferry_iterator_restore_file(ds, path, NULL, &r));
    ferry_element *e;
    ASSERT_OK(ferry_iterator_next(r, &e));
    ASSERT_EQ(value_of(e), 123);
    ferry_element_free(e);
    /* The CLI shows it. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "'%s' state show '%s' > '%s/show.txt' 2>&1", FERRY_CLI_PATH, path, dir);
    ASSERT_EQ(system(cmd), 0);
    char out[2048] = {0};
    char showp[160];
    snprintf(showp, sizeof showp, "%s/show.txt", dir);
    FILE *f = fopen(showp, "r");
    ASSERT(f != NULL);
    size_t n = fread(out, 1, sizeof out - 1, f);
    fclose(f);
    out[n] = 0;
    ASSERT_STR_CONTAINS(out, "position:     123 elements");
    ASSERT_STR_CONTAINS(out, "checksum:     ok");
    snprintf(cmd, sizeof cmd, "'%s' state show '%s/show.txt' > /dev/null 2>&1", FERRY_CLI_PATH, dir);
    ASSERT(system(cmd) != 0); /* not a state: refused */
    ferry_iterator_free(r);
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    rmtree(dir);
    rt_done(rt);
}

TEST(file_rejections) {
    ferry_runtime *rt = rt_new();
    char *dir = tmpdir();
    char path[128];
    snprintf(path, sizeof path, "%s/state", dir);
    ferry_dataset *ds = pipeline(rt, 1000), *other = pipeline(rt, 999);
    ferry_iterator *it, *r = NULL;
    ASSERT_OK(ferry_iterator_create(ds, NULL, &it));
    ASSERT_OK(ferry_iterator_save_file(it, path));
    ASSERT_EQ(ferry_iterator_restore_file(other, path, NULL, &r), FERRY_EMISMATCH);
    ASSERT_STR_CONTAINS(ferry_last_error(), path);
    ASSERT(r == NULL);
    char missing[160];
    snprintf(missing, sizeof missing, "%s/none", dir);
    ASSERT_EQ(ferry_iterator_restore_file(ds, missing, NULL, &r), FERRY_ENOTFOUND);
    ASSERT_STR_CONTAINS(ferry_last_error(), missing);
    /* Every truncation and every bit flip of the file is rejected. */
    ferry_blob *b;
    ASSERT_OK(ferry_state_file_read(rt, path, &b));
    size_t n = ferry_blob_size(b);
    uint8_t *copy = malloc(n);
    for (size_t cut = 0; cut < n; cut++) {
        int rc = ferry_iterator_restore(ds, ferry_blob_data(b), cut, NULL, &r);
        ASSERT(rc == FERRY_ETRUNCATED || rc == FERRY_ECORRUPT);
        ASSERT(r == NULL);
    }
    for (size_t bit = 0; bit < n * 8; bit++) {
        memcpy(copy, ferry_blob_data(b), n);
        copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        int rc = ferry_iterator_restore(ds, copy, n, NULL, &r);
        if (rc == FERRY_OK) FAILF("flip of bit %zu accepted", bit);
        ASSERT(r == NULL);
    }
    /* A newer format version is refused as such. */
    memcpy(copy, ferry_blob_data(b), n);
    copy[8] = 99;
    ASSERT_EQ(ferry_iterator_restore(ds, copy, n, NULL, &r), FERRY_EVERSION);
    ASSERT_STR_CONTAINS(ferry_last_error(), "newer");
    free(copy);
    ferry_blob_free(b);
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    ferry_dataset_unref(other);
    rmtree(dir);
    rt_done(rt);
}

/* The child: resume from path if it restores, else start fresh; then save after every element. */
static void kill_child(const char *path) {
    ferry_runtime *rt;
    if (ferry_runtime_create(NULL, &rt)) _exit(3);
    ferry_dataset *ds = pipeline(rt, 1 << 30);
    ferry_iterator *it;
    if (ferry_iterator_restore_file(ds, path, NULL, &it) != FERRY_OK && ferry_iterator_create(ds, NULL, &it) != FERRY_OK)
        _exit(4);
    for (;;) {
        ferry_element *e;
        if (ferry_iterator_next(it, &e) != FERRY_OK) _exit(5);
        ferry_element_free(e);
        if (ferry_iterator_save_file(it, path) != FERRY_OK) _exit(6);
    }
}

TEST(kill_while_saving) {
    const char *env = getenv("FERRY_KILL_CYCLES");
    int cycles = env && atoi(env) > 0 ? atoi(env) : 1000;
    char *dir = tmpdir();
    char path[128];
    snprintf(path, sizeof path, "%s/state", dir);
    ferry_runtime *rt = rt_new();
    ferry_dataset *ds = pipeline(rt, 1 << 30);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    srand((unsigned)ts.tv_nsec);
    int restored = 0, absent = 0;
    int64_t last_position = 0;
    for (int c = 0; c < cycles; c++) {
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) kill_child(path);
        struct timespec d = {0, (long)(rand() % 3000) * 1000};
        nanosleep(&d, NULL);
        kill(pid, SIGKILL);
        int status;
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        if (WIFEXITED(status)) FAILF("child exited with %d before the kill", WEXITSTATUS(status));
        ferry_iterator *it = NULL;
        int rc = ferry_iterator_restore_file(ds, path, NULL, &it);
        if (rc == FERRY_ENOTFOUND) {
            absent++;
            continue;
        }
        /* Atomic replacement means a surviving file is always whole: it must restore. */
        if (rc != FERRY_OK) FAILF("cycle %d: surviving state rejected: %s", c, ferry_last_error());
        ferry_blob *b;
        ASSERT_OK(ferry_state_file_read(rt, path, &b));
        ferry_state_info info;
        ASSERT_OK(ferry_state_info_get(ferry_blob_data(b), ferry_blob_size(b), &info));
        ferry_blob_free(b);
        ASSERT(info.position >= last_position); /* resumed runs never go back */
        last_position = info.position;
        ferry_element *e;
        ASSERT_OK(ferry_iterator_next(it, &e));
        ASSERT_EQ(value_of(e), info.position);
        ferry_element_free(e);
        ferry_iterator_free(it);
        restored++;
    }
    printf("  kill test: %d kills, %d states restored exactly, %d before the first save, final position %lld\n",
           cycles, restored, absent, (long long)last_position);
    ASSERT(restored > 0);
    ferry_dataset_unref(ds);
    rmtree(dir);
    rt_done(rt);
}
