/*
 * test_statefile.c - saved states as files: round trip, the checks on restore (other pipeline,
 * corrupt, truncated, newer version), `ferry state show`, and the kill test: a child process
 * saves its iterator's state after every element, resuming from the file each time it starts,
 * and is killed with SIGKILL at random moments after it reported its first save; the file that
 * survives every kill must restore to exactly the stream position it names, and that position
 * is the last save the child reported (or the one after it).
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <time.h>

#include "runner.h"

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
    ASSERT_OK(ferry_dataset_range(rt, 0, stop, 1, NULL, &ds));
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

/* Runs `ferry ARGS` through the shell; returns its exit status and its stdout and stderr in out. */
static int run_cli(const char *dir, const char *args, char *out, size_t cap) {
    char cmd[1024], outp[160];
    snprintf(outp, sizeof outp, "%s/cli.txt", dir);
    snprintf(cmd, sizeof cmd, "'%s' %s > '%s' 2>&1", FERRY_CLI_PATH, args, outp);
    int st = system(cmd);
    FILE *f = fopen(outp, "r");
    ASSERT(f != NULL);
    size_t n = fread(out, 1, cap - 1, f);
    fclose(f);
    out[n] = 0;
    ASSERT(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void write_file(const char *path, const void *a, size_t na, const void *b, size_t nb) {
    FILE *f = fopen(path, "wb");
    ASSERT(f != NULL);
    ASSERT_EQ(fwrite(a, 1, na, f), na);
    if (nb) ASSERT_EQ(fwrite(b, 1, nb, f), nb);
    ASSERT_EQ(fclose(f), 0);
}

/* `ferry state show` finds a state at the end of an application's own file (a training
 * checkpoint: its model, then the iterator's state), explains the seed, and for any other file
 * says what it is, with exit status 1 and one line naming the file. */
TEST(show_tells_what_a_file_is) {
    ferry_runtime *rt = rt_new();
    char *dir = tmpdir();
    ferry_dataset *ds = pipeline(rt, 1000);
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(ds, &(ferry_iterator_options){.seed = 42000}, &it));
    for (int i = 0; i < 7; i++) {
        ferry_element *e;
        ASSERT_OK(ferry_iterator_next(it, &e));
        ferry_element_free(e);
    }
    ferry_blob *b;
    ASSERT_OK(ferry_iterator_save(it, &b));
    char path[160], args[400], out[4096];
    /* An application's checkpoint: its own bytes, then the state up to the end of the file. */
    static const char model[] = "MYCKPT01 weights weights weights";
    snprintf(path, sizeof path, "%s/ckpt", dir);
    write_file(path, model, sizeof model, ferry_blob_data(b), ferry_blob_size(b));
    snprintf(args, sizeof args, "state show '%s'", path);
    ASSERT_EQ(run_cli(dir, args, out, sizeof out), 0);
    ASSERT_STR_CONTAINS(out, "position:     7 elements");
    ASSERT_STR_CONTAINS(out, "seed:         42000, the seed the iterator was made with (ferry_iterator_options.seed)");
    ASSERT_STR_CONTAINS(out, "begin with \"MYCKPT01\"");
    ASSERT_STR_CONTAINS(out, "checksum:     ok");
    /* The same file cut short: the state at its end is damaged, and said so. */
    write_file(path, model, sizeof model, ferry_blob_data(b), ferry_blob_size(b) - 3);
    ASSERT_EQ(run_cli(dir, args, out, sizeof out), 1);
    ASSERT_STR_CONTAINS(out, "a damaged one begins at byte");
    /* A state file with a flipped checksum byte. */
    uint8_t *copy = malloc(ferry_blob_size(b));
    memcpy(copy, ferry_blob_data(b), ferry_blob_size(b));
    copy[ferry_blob_size(b) - 1] ^= 1;
    snprintf(path, sizeof path, "%s/state", dir);
    write_file(path, copy, ferry_blob_size(b), NULL, 0);
    free(copy);
    snprintf(args, sizeof args, "state show '%s'", path);
    ASSERT_EQ(run_cli(dir, args, out, sizeof out), 1);
    ASSERT_STR_CONTAINS(out, "a damaged ferry iterator state: state corrupt: checksum mismatch");
    /* Other kinds of files are named, not called corrupt. */
    snprintf(path, sizeof path, "%s/data.tfrecord", dir);
    ferry_tfrecord_writer *w;
    ASSERT_OK(ferry_tfrecord_writer_open(rt, path, NULL, &w));
    ASSERT_OK(ferry_tfrecord_writer_write(w, "a record", 8));
    ASSERT_OK(ferry_tfrecord_writer_close(w));
    snprintf(args, sizeof args, "state show '%s'", path);
    ASSERT_EQ(run_cli(dir, args, out, sizeof out), 1);
    ASSERT_STR_CONTAINS(out, "not a ferry iterator state: a TFRecord file");
    snprintf(path, sizeof path, "%s/notes.txt", dir);
    write_file(path, "hello\nworld\n", 12, NULL, 0);
    snprintf(args, sizeof args, "state show '%s'", path);
    ASSERT_EQ(run_cli(dir, args, out, sizeof out), 1);
    ASSERT_STR_CONTAINS(out, "not a ferry iterator state: a text file");
    /* A directory and a missing file: the operating system's reason, one prefix, one line. */
    snprintf(args, sizeof args, "state show '%s'", dir);
    ASSERT_EQ(run_cli(dir, args, out, sizeof out), 1);
    ASSERT_STR_CONTAINS(out, "ferry state show: ");
    ASSERT_STR_CONTAINS(out, ": Is a directory\n");
    ASSERT(strchr(out, '\n') == out + strlen(out) - 1);
    snprintf(args, sizeof args, "state show '%s/none'", dir);
    ASSERT_EQ(run_cli(dir, args, out, sizeof out), 1);
    ASSERT_STR_CONTAINS(out, "/none: No such file or directory\n");
    /* Usage errors: exit status 2. */
    ASSERT_EQ(run_cli(dir, "state show", out, sizeof out), 2);
    ASSERT_EQ(run_cli(dir, "state show a b", out, sizeof out), 2);
    ASSERT_EQ(run_cli(dir, "state show --help", out, sizeof out), 0);
    ASSERT_STR_CONTAINS(out, "usage: ferry state show FILE");
    ferry_blob_free(b);
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

/* The kill test's child: resumes from path if the file restores, else starts fresh; then, after
 * every element, saves its state to path and reports the position it saved (an int64, written
 * atomically: PIPE_BUF) on fd `report`. Exit codes name what failed before the kill. */
enum {
    CHILD_NO_RUNTIME = 3,
    CHILD_NO_ITERATOR = 4,
    CHILD_NEXT_FAILED = 5,
    CHILD_SAVE_FAILED = 6,
    CHILD_REPORT_FAILED = 7
};

static void kill_child(const char *path, int report) {
    ferry_runtime *rt;
    if (ferry_runtime_create(NULL, &rt)) _exit(CHILD_NO_RUNTIME);
    ferry_dataset *ds = pipeline(rt, 1 << 30);
    ferry_iterator *it;
    if (ferry_iterator_restore_file(ds, path, NULL, &it) != FERRY_OK &&
        ferry_iterator_create(ds, NULL, &it) != FERRY_OK)
        _exit(CHILD_NO_ITERATOR);
    for (;;) {
        ferry_element *e;
        if (ferry_iterator_next(it, &e) != FERRY_OK) _exit(CHILD_NEXT_FAILED);
        int64_t saved = value_of(e) + 1; /* range: the value is the position */
        ferry_element_free(e);
        if (ferry_iterator_save_file(it, path) != FERRY_OK) _exit(CHILD_SAVE_FAILED);
        if (write(report, &saved, sizeof saved) != (ssize_t)sizeof saved) _exit(CHILD_REPORT_FAILED);
    }
}

static const char *child_exit_reason(int code) {
    switch (code) {
    case CHILD_NO_RUNTIME: return "ferry_runtime_create failed";
    case CHILD_NO_ITERATOR: return "neither restore nor create gave an iterator";
    case CHILD_NEXT_FAILED: return "ferry_iterator_next failed";
    case CHILD_SAVE_FAILED: return "ferry_iterator_save_file failed";
    case CHILD_REPORT_FAILED: return "writing to the report pipe failed";
    default: return "unexpected exit";
    }
}

/* Reads one report; returns false at end of file (the child is gone). */
static bool read_report(int fd, int64_t *out) {
    size_t got = 0;
    while (got < sizeof *out) {
        ssize_t n = read(fd, (char *)out + got, sizeof *out - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) FAILF("reading the child's report: %s", strerror(errno));
        if (n == 0) {
            if (got) FAILF("the child's report ends after %zu of %zu bytes", got, sizeof *out);
            return false;
        }
        got += (size_t)n;
    }
    return true;
}

/* Every kill lands while the child is in its saving loop: the parent waits for the child's first
 * report (it resumed and completed a save), then kills it at a random moment 0-3 ms later, so a
 * slow child (a sanitizer, a loaded machine) only makes the test slower, never vacuous. After
 * each kill the file must exist, restore, name a position no older than the last save the child
 * reported (and at most one newer: a save that completed just before its report), and give the
 * element at that position; the next child must resume exactly there. */
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
    unsigned seed = (unsigned)ts.tv_nsec;
    srand(seed);
    int64_t position = 0;       /* of the file, restored and checked after the last kill */
    int64_t saves = 0;          /* saves reported over all children */
    int multi = 0;              /* kills after the child's second save or later */
    int renamed_unreported = 0; /* kills after a save's rename, before the child reported it */
    for (int c = 0; c < cycles; c++) {
        int fds[2];
        ASSERT_EQ(pipe(fds), 0);
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            kill_child(path, fds[1]);
        }
        close(fds[1]);
        int64_t first, last;
        if (!read_report(fds[0], &first)) {
            int status;
            ASSERT_EQ(waitpid(pid, &status, 0), pid);
            if (WIFEXITED(status))
                FAILF("cycle %d: child exited with %d before its first save: %s", c, WEXITSTATUS(status),
                      child_exit_reason(WEXITSTATUS(status)));
            FAILF("cycle %d: child died of signal %d before its first save", c,
                  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        }
        /* It resumed exactly where the last child's file said (a fresh start on the first cycle). */
        if (first != position + 1)
            FAILF("cycle %d (seed %u): the child's first save is position %lld, expected %lld", c, seed,
                  (long long)first, (long long)position + 1);
        struct timespec d = {0, (long)(rand() % 3000) * 1000};
        nanosleep(&d, NULL);
        ASSERT_EQ(kill(pid, SIGKILL), 0);
        int status;
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        if (WIFEXITED(status))
            FAILF("cycle %d: child exited with %d before the kill: %s", c, WEXITSTATUS(status),
                  child_exit_reason(WEXITSTATUS(status)));
        ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        last = first;
        int64_t r;
        while (read_report(fds[0], &r)) {
            if (r != last + 1) FAILF("cycle %d: reports %lld then %lld", c, (long long)last, (long long)r);
            last = r;
        }
        close(fds[0]);
        saves += last - position;
        if (last > first) multi++;

        ferry_iterator *it = NULL;
        int rc = ferry_iterator_restore_file(ds, path, NULL, &it);
        /* Atomic replacement means the file is always whole: it must restore. */
        if (rc != FERRY_OK) FAILF("cycle %d (seed %u): surviving state rejected: %s", c, seed, ferry_last_error());
        ferry_blob *b;
        ASSERT_OK(ferry_state_file_read(rt, path, &b));
        ferry_state_info info;
        ASSERT_OK(ferry_state_info_get(ferry_blob_data(b), ferry_blob_size(b), &info));
        ferry_blob_free(b);
        /* No reported save is lost; at most one more save had renamed its file over path (its
         * directory fsync and the report still to come) when the kill came. */
        if (info.position != last && info.position != last + 1)
            FAILF("cycle %d (seed %u): the file holds position %lld, the child last reported saving %lld", c, seed,
                  (long long)info.position, (long long)last);
        renamed_unreported += info.position == last + 1;
        ferry_element *e;
        ASSERT_OK(ferry_iterator_next(it, &e));
        ASSERT_EQ(value_of(e), info.position);
        ferry_element_free(e);
        ferry_iterator_free(it);
        position = info.position;
    }
    printf("  kill test (seed %u): %d kills, each after the child resumed and saved; %d states restored exactly; "
           "%lld saves in all, %d kills after a child's second save or later, %d after a rename not yet reported; "
           "final position %lld\n",
           seed, cycles, cycles, (long long)saves, multi, renamed_unreported, (long long)position);
    /* What the test claims it covered: every cycle ended with a kill inside the saving loop,
     * and every child made progress, so the file moved forward at every kill. */
    ASSERT(position >= cycles);
    ferry_dataset_unref(ds);
    rmtree(dir);
    rt_done(rt);
}
