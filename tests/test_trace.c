/*
 * test_trace.c - the trace (ferry_runtime_options.trace_bytes, FERRY_TRACE, ferry_trace_step,
 * ferry_runtime_trace_write): off by default, the Chrome trace JSON parses and holds a stage's
 * runs, work and waits on its workers, the consumer's next() waits and marked steps on the
 * consumer's thread, a full ring keeps the newest events, FERRY_TRACE writes the file when the
 * runtime goes, and writing while threads record is safe.
 */
#include "stream_check.h"

#include "json_check.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void sleep_ns(int64_t ns) {
    struct timespec t = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (nanosleep(&t, &t) != 0) {
    }
}

static int map_slow(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)user;
    int rc = ferry_context_sleep(ctx, 200000);
    if (rc) {
        ferry_element_free(in);
        return rc;
    }
    *out = in;
    return FERRY_OK;
}

/* The file's bytes, NUL-terminated (free). */
static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) FAILF("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)size + 1);
    ASSERT(buf != NULL);
    ASSERT_EQ(fread(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    buf[size] = '\0';
    *n = (size_t)size;
    return buf;
}

static size_t count(const char *hay, const char *needle) {
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

static void temp_path(char *buf, size_t cap, const char *tag) {
    snprintf(buf, cap, "/tmp/ferry-test-trace-%ld-%s.json", (long)getpid(), tag);
}

static char *write_and_check(ferry_runtime *rt, const char *tag, size_t *n) {
    char path[256];
    temp_path(path, sizeof path, tag);
    ASSERT_OK(ferry_runtime_trace_write(rt, path));
    char *text = slurp(path, n);
    unlink(path);
    const char *why = json_check(text, *n);
    if (why) FAILF("trace JSON invalid: %s", why);
    return text;
}

TEST(trace_is_off_by_default) {
    ferry_runtime *rt = rt_new();
    ASSERT_EQ(ferry_runtime_trace_write(rt, "/tmp/never-written.json"), FERRY_EINVAL);
    ASSERT(strstr(ferry_last_error(), "tracing is off") != NULL);
    ASSERT_OK(ferry_trace_step(rt, "step", ferry_clock_ns())); /* a no-op, not an error */
    ASSERT_EQ(access("/tmp/never-written.json", F_OK), -1);
    rt_done(rt);
}

TEST(trace_bad_arguments) {
    ferry_runtime_options o = {.trace_bytes = 1 << 16};
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(&o, &rt));
    ASSERT_EQ(ferry_trace_step(NULL, "x", ferry_clock_ns()), FERRY_EINVAL);
    ASSERT(strstr(ferry_last_error(), "'rt'") != NULL);
    ASSERT_EQ(ferry_trace_step(rt, NULL, ferry_clock_ns()), FERRY_EINVAL);
    ASSERT(strstr(ferry_last_error(), "'name'") != NULL);
    ASSERT_EQ(ferry_trace_step(rt, "x", ferry_clock_ns() + 1000000000), FERRY_EINVAL); /* in the future */
    ASSERT(strstr(ferry_last_error(), "start_ns") != NULL);
    ASSERT_EQ(ferry_trace_step(rt, "x", 0), FERRY_EINVAL);
    ASSERT_EQ(ferry_runtime_trace_write(NULL, "/tmp/x.json"), FERRY_EINVAL);
    ASSERT_EQ(ferry_runtime_trace_write(rt, NULL), FERRY_EINVAL);
    ASSERT_EQ(ferry_runtime_trace_write(rt, ""), FERRY_EINVAL);
    ASSERT_EQ(ferry_runtime_trace_write(rt, "/nonexistent-dir/trace.json"), FERRY_EIO);
    ASSERT(strstr(ferry_last_error(), "/nonexistent-dir/trace.json") != NULL);
    rt_done(rt);
}

TEST(trace_holds_stages_waits_and_steps) {
    ferry_runtime_options o = {.trace_bytes = 4 << 20};
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(&o, &rt));
    ferry_dataset *r, *m, *b, *p;
    ASSERT_OK(ferry_dataset_range(rt, 0, 64, 1, NULL, &r));
    static const ferry_tensor_spec spec = {FERRY_DTYPE_INT64, {0, {0}}};
    ferry_map_options mo = {.num_parallel_calls = 2, .num_outputs = 1, .output_specs = &spec};
    ASSERT_OK(ferry_dataset_map(r, map_slow, NULL, &mo, &m));
    ASSERT_OK(ferry_dataset_batch(m, 4, NULL, &b));
    ASSERT_OK(ferry_dataset_prefetch(b, 2, NULL, &p));
    ferry_iterator *it;
    ASSERT_OK(ferry_iterator_create(p, NULL, &it));
    ferry_element *e;
    int steps = 0;
    while (ferry_iterator_next(it, &e) == FERRY_OK) {
        int64_t t0 = ferry_clock_ns();
        ferry_element_free(e);
        sleep_ns(300000); /* the training step */
        ASSERT_OK(ferry_trace_step(rt, "train step", t0));
        steps++;
    }
    ASSERT_EQ(steps, 16);
    ferry_iterator_free(it);
    size_t n;
    char *text = write_and_check(rt, "stages", &n);
    ASSERT_EQ(count(text, "\"name\":\"train step\""), 16);
    ASSERT(count(text, "\"name\":\"map_and_batch run\"") >= 1);
    ASSERT(count(text, "\"name\":\"map_and_batch work\"") >= 1);
    ASSERT(count(text, "\"name\":\"next\"") >= 1); /* the first batch was waited for */
    ASSERT(strstr(text, "\"ferry worker ") != NULL);
    ASSERT(strstr(text, "\"consumer ") != NULL);
    ASSERT(strstr(text, "\"ph\":\"X\"") != NULL);
    ASSERT(strstr(text, "\"dropped\":0") != NULL);
    free(text);
    ferry_dataset_unref(r);
    ferry_dataset_unref(m);
    ferry_dataset_unref(b);
    ferry_dataset_unref(p);
    rt_done(rt);
}

TEST(trace_ring_keeps_the_newest) {
    ferry_runtime_options o = {.trace_bytes = 1}; /* the smallest ring: 16 events */
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(&o, &rt));
    char name[32];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "s%03d", i);
        ASSERT_OK(ferry_trace_step(rt, name, ferry_clock_ns()));
    }
    size_t n;
    char *text = write_and_check(rt, "ring", &n);
    ASSERT_EQ(count(text, "\"cat\":\"step\""), 16);
    ASSERT(strstr(text, "\"s099\"") != NULL);
    ASSERT(strstr(text, "\"s084\"") != NULL);
    ASSERT(strstr(text, "\"s083\"") == NULL);
    ASSERT(strstr(text, "\"dropped\":84") != NULL);
    free(text);
    /* a long name is cut to 23 bytes, and quotes in it are escaped */
    ASSERT_OK(ferry_trace_step(rt, "a \"quoted\" name that is longer than kept", ferry_clock_ns()));
    text = write_and_check(rt, "names", &n);
    ASSERT(strstr(text, "\"a \\\"quoted\\\" name that is\"") != NULL);
    free(text);
    /* the cut falls before a UTF-8 character, not inside it: 22 bytes, then a 2-byte one */
    ASSERT_OK(ferry_trace_step(rt, "aaaaaaaaaaaaaaaaaaaaaa\xc3\xa9 more", ferry_clock_ns()));
    text = write_and_check(rt, "utf8", &n);
    ASSERT(strstr(text, "\"aaaaaaaaaaaaaaaaaaaaaa\"") != NULL);
    free(text);
    rt_done(rt);
}

TEST(trace_environment_variable_writes_at_free) {
    char path[256];
    temp_path(path, sizeof path, "env");
    unlink(path);
    ASSERT_EQ(setenv("FERRY_TRACE", path, 1), 0);     /* this test runs in a process of its own */
    ferry_runtime *rt = rt_new(), *second = rt_new(); /* the second writes FILE.2 */
    ASSERT_OK(ferry_trace_step(rt, "from env", ferry_clock_ns()));
    ASSERT_OK(ferry_trace_step(second, "second runtime", ferry_clock_ns()));
    ASSERT_EQ(access(path, F_OK), -1);
    rt_done(rt);
    rt_done(second);
    char path2[300];
    snprintf(path2, sizeof path2, "%s.2", path);
    size_t n2;
    char *text2 = slurp(path2, &n2);
    unlink(path2);
    ASSERT(json_check(text2, n2) == NULL);
    ASSERT(strstr(text2, "\"second runtime\"") != NULL && strstr(text2, "\"from env\"") == NULL);
    free(text2);
    size_t n;
    char *text = slurp(path, &n);
    unlink(path);
    ASSERT(json_check(text, n) == NULL);
    ASSERT(strstr(text, "\"from env\"") != NULL);
    free(text);
    /* a file that cannot be written: the runtime is still freed, and says why */
    ASSERT_EQ(setenv("FERRY_TRACE", "/nonexistent-dir/t.json", 1), 0);
    ferry_runtime *rt2;
    ASSERT_OK(ferry_runtime_create(NULL, &rt2));
    ASSERT_EQ(ferry_runtime_free(rt2), FERRY_EIO);
    ASSERT(strstr(ferry_last_error(), "/nonexistent-dir/t.json") != NULL);
    unsetenv("FERRY_TRACE");
}

typedef struct stepper {
    ferry_runtime *rt;
    _Atomic int stop;
} stepper;

static void *step_loop(void *arg) {
    stepper *s = arg;
    while (!atomic_load(&s->stop)) ASSERT_OK(ferry_trace_step(s->rt, "busy", ferry_clock_ns()));
    return NULL;
}

/* Threads record while the trace is written, and the ring wraps meanwhile: every file parses. */
TEST(trace_written_while_threads_record) {
    ferry_runtime_options o = {.trace_bytes = 64 * 56};
    ferry_runtime *rt;
    ASSERT_OK(ferry_runtime_create(&o, &rt));
    stepper s = {.rt = rt};
    atomic_init(&s.stop, 0);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) ASSERT_EQ(pthread_create(&th[i], NULL, step_loop, &s), 0);
    for (int k = 0; k < 50; k++) {
        size_t n;
        free(write_and_check(rt, "busy", &n));
    }
    atomic_store(&s.stop, 1);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    rt_done(rt);
}
