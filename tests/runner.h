/*
 * runner.h - ferry's test runner (after libuv's test/runner.c).
 *
 * TEST(name) { ... } registers a test. main() runs every test in its own forked process with an
 * alarm of FERRY_TEST_TIMEOUT seconds (default 120), so a crash or a deadlock fails that test
 * alone; `./test_x name` runs one test in-process (for a debugger). Assertions are never compiled
 * out and print both values. The last line is "N passed, N failed, N skipped".
 * A test may call SKIP("why") to be counted as skipped.
 */
#ifndef FERRY_TEST_RUNNER_H
#define FERRY_TEST_RUNNER_H

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ferry.h"

typedef void (*ferry_test_fn)(void);
struct ferry_test_entry {
    const char *name;
    ferry_test_fn fn;
};
#define FERRY_TEST_MAX 512
static struct ferry_test_entry ferry_tests[FERRY_TEST_MAX];
static int ferry_test_count;

#define TEST(name)                                                                                                     \
    static void test_##name(void);                                                                                     \
    __attribute__((constructor)) static void register_##name(void) {                                                   \
        if (ferry_test_count < FERRY_TEST_MAX)                                                                         \
            ferry_tests[ferry_test_count++] = (struct ferry_test_entry){#name, test_##name};                           \
    }                                                                                                                  \
    static void test_##name(void)

#define FERRY_TEST_SKIP_CODE 77

#define SKIP(why)                                                                                                      \
    do {                                                                                                               \
        fprintf(stderr, "  skipped: %s\n", why);                                                                       \
        exit(FERRY_TEST_SKIP_CODE);                                                                                    \
    } while (0)

#define FAILF(...)                                                                                                     \
    do {                                                                                                               \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                                                \
        fprintf(stderr, __VA_ARGS__);                                                                                  \
        fprintf(stderr, "\n");                                                                                         \
        abort();                                                                                                       \
    } while (0)

#define ASSERT(cond)                                                                                                   \
    do {                                                                                                               \
        if (!(cond)) FAILF("assertion failed: %s", #cond);                                                             \
    } while (0)

#define ASSERT_EQ(a, b)                                                                                                \
    do {                                                                                                               \
        long long a_ = (long long)(a), b_ = (long long)(b);                                                            \
        if (a_ != b_) FAILF("expected %s == %s, got %lld and %lld", #a, #b, a_, b_);                                   \
    } while (0)

#define ASSERT_NE(a, b)                                                                                                \
    do {                                                                                                               \
        long long a_ = (long long)(a), b_ = (long long)(b);                                                            \
        if (a_ == b_) FAILF("expected %s != %s, both are %lld", #a, #b, a_);                                           \
    } while (0)

#define ASSERT_LE(a, b)                                                                                                \
    do {                                                                                                               \
        long long a_ = (long long)(a), b_ = (long long)(b);                                                            \
        if (!(a_ <= b_)) FAILF("expected %s <= %s, got %lld and %lld", #a, #b, a_, b_);                                \
    } while (0)

#define ASSERT_STR_CONTAINS(hay, needle)                                                                               \
    do {                                                                                                               \
        const char *h_ = (hay), *n_ = (needle);                                                                        \
        if (!h_ || !strstr(h_, n_)) FAILF("expected \"%s\" to contain \"%s\"", h_ ? h_ : "(null)", n_);                \
    } while (0)

/* Asserts that a ferry call returns FERRY_OK, printing the last error otherwise. */
#define ASSERT_OK(call)                                                                                                \
    do {                                                                                                               \
        int rc_ = (call);                                                                                              \
        if (rc_ != FERRY_OK) FAILF("%s returned %s: %s", #call, ferry_error_name(rc_), ferry_last_error());            \
    } while (0)

static int ferry_test_run_one(const struct ferry_test_entry *t, int timeout) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        alarm((unsigned)timeout);
        t->fn();
        fflush(stdout);
        _exit(0);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == FERRY_TEST_SKIP_CODE) return 2;
    if (WIFSIGNALED(status))
        fprintf(stderr, "  %s: killed by signal %d%s\n", t->name, WTERMSIG(status),
                WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
    else fprintf(stderr, "  %s: exit status %d\n", t->name, WEXITSTATUS(status));
    return 1;
}

/* ---- runtimes: every test makes and checks its runtimes the same way ------------------------ */
/* A runtime with the default options, or with a byte budget (0: the default). */
/* Applies a one-input transformation and drops the caller's reference to the input. */
#define CHAIN(var, call)                                                                                               \
    do {                                                                                                               \
        ferry_dataset *next_;                                                                                          \
        ASSERT_OK(call);                                                                                               \
        ferry_dataset_unref(var);                                                                                      \
        var = next_;                                                                                                   \
    } while (0)
#define OUT (&next_)

__attribute__((unused)) static ferry_runtime *rt_new_budget(size_t budget) {
    ferry_runtime_options o = {.memory_budget = budget};
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(budget ? &o : NULL, &rt));
    return rt;
}
__attribute__((unused)) static ferry_runtime *rt_new(void) { return rt_new_budget(0); }
/* Frees rt, failing the test unless no thread of it runs and no object of it is alive. */
__attribute__((unused)) static void rt_done(ferry_runtime *rt) {
    ferry_runtime_stats s;
    ASSERT_OK(ferry_runtime_stats_get(rt, &s));
    ASSERT_EQ(s.threads_live, 0);
    int rc = ferry_runtime_free(rt);
    if (rc != FERRY_OK) FAILF("runtime not empty: %s", ferry_last_error());
}

int main(int argc, char **argv) {
    int timeout = 120;
    const char *env = getenv("FERRY_TEST_TIMEOUT");
    if (env && atoi(env) > 0) timeout = atoi(env);
    if (argc > 1) {
        for (int i = 0; i < ferry_test_count; i++)
            if (strcmp(ferry_tests[i].name, argv[1]) == 0) {
                ferry_tests[i].fn();
                printf("%s: ok\n", argv[1]);
                return 0;
            }
        fprintf(stderr, "no test named %s\n", argv[1]);
        return 2;
    }
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < ferry_test_count; i++) {
        int r = ferry_test_run_one(&ferry_tests[i], timeout);
        printf("%s %s\n", r == 0 ? "ok  " : r == 2 ? "skip" : "FAIL", ferry_tests[i].name);
        if (r == 0) passed++;
        else if (r == 2) skipped++;
        else failed++;
    }
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}

#endif
