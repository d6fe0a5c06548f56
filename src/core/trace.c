/*
 * trace.c - a timeline of what every thread did, as Chrome trace JSON (Perfetto, about:tracing).
 *
 * What is recorded (each a span: start, duration, thread, kind, a name of up to 23 bytes):
 *   - every run of a stage's task on an executor worker ("map run");
 *   - what a stage's threads measured (core/stage.c's ferry__stage_time): its work per chunk,
 *     copying rows into batches, lock waits, its consumer side waiting for input and its threads
 *     waiting for room or for the byte budget;
 *   - the consumer's calls to ferry_iterator_next that were timed and took 2 us or more;
 *   - the consumer's own steps, marked with ferry_trace_step.
 * Where: a ring of fixed-size events per runtime, its size given in bytes
 * (ferry_runtime_options.trace_bytes, or 64 MiB when the FERRY_TRACE environment variable names
 * a file: the runtime then writes the trace there when it is freed). When the ring is full the
 * oldest events go. Off (no ring), every hook is one load and a branch.
 *
 * Threads: a writer takes a slot with one atomic add, fills it, then publishes it by storing the
 * slot's sequence number (release). The reader (ferry_runtime_trace_write) takes the slots whose
 * sequence matches what the ring index says they should hold, so an event being written or
 * overwritten meanwhile is skipped, never torn. Events live in memory from the hook (not counted
 * in the runtime's blocks: the ring lives as long as the runtime).
 */
#include "core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRACE_NEXT_MIN_NS 2000
#define TRACE_NAME 23 /* bytes of a name kept */

/* A slot of the ring. Every field is an atomic word (relaxed) so that a reader racing a writer
 * reads stale or new words, never undefined ones, and then drops the event by its sequence. */
typedef struct trace_event {
    _Atomic uint64_t seq; /* index + 1 once written; 0 while being written */
    _Atomic int64_t ts_ns, dur_ns;
    _Atomic uint64_t meta;    /* tid << 8 | kind */
    _Atomic uint64_t name[3]; /* up to 23 bytes and a NUL */
} trace_event;

/* A plain copy of an event, as read. */
typedef struct trace_rec {
    int64_t ts_ns, dur_ns;
    uint32_t tid;
    uint8_t kind;
    char name[TRACE_NAME + 1];
} trace_rec;

struct ferry__trace {
    trace_event *ev;
    uint64_t cap;
    _Atomic uint64_t next;
    ferry_alloc_fn fn;
    void *user;
    char *path; /* FERRY_TRACE's file, written at ferry_runtime_free (or NULL) */
};

static const char *const kind_names[] = {
    [FERRY__TR_RUN] = "run",
    [FERRY__TR_WORK] = "work",
    [FERRY__TR_ASSEMBLE] = "assemble",
    [FERRY__TR_LOCK] = "lock wait",
    [FERRY__TR_WAIT_INPUT] = "wait for input",
    [FERRY__TR_WAIT_CONSUMER] = "wait for room",
    [FERRY__TR_NEXT] = "next",
    [FERRY__TR_STEP] = "step",
};

/* A small id per thread, the same in every runtime (Chrome's "tid"). */
static _Atomic uint32_t trace_tids;
static _Thread_local uint32_t tl_tid;

static uint32_t my_tid(void) {
    if (!tl_tid) tl_tid = atomic_fetch_add(&trace_tids, 1) + 1;
    return tl_tid;
}

int ferry__trace_open(ferry_runtime *rt, size_t bytes, const char *path, ferry_alloc_fn fn, void *user) {
    uint64_t cap = bytes / sizeof(trace_event);
    if (cap < 16) cap = 16;
    ferry__trace *t = ferry__mem_alloc_bootstrap(fn, user, sizeof *t);
    if (!t) return FERRY_ENOMEM;
    memset(t, 0, sizeof *t);
    t->fn = fn;
    t->user = user;
    t->cap = cap;
    t->ev = ferry__mem_alloc_bootstrap(fn, user, (size_t)cap * sizeof(trace_event));
    if (path) {
        size_t n = strlen(path) + 1;
        t->path = ferry__mem_alloc_bootstrap(fn, user, n);
        if (t->path) memcpy(t->path, path, n);
    }
    if (!t->ev || (path && !t->path)) {
        ferry__mem_free_bootstrap(fn, user, t->ev);
        ferry__mem_free_bootstrap(fn, user, t->path);
        ferry__mem_free_bootstrap(fn, user, t);
        return FERRY_ENOMEM;
    }
    for (uint64_t i = 0; i < cap; i++) atomic_init(&t->ev[i].seq, 0); /* empty */
    atomic_init(&t->next, 0);
    rt->trace = t;
    return FERRY_OK;
}

void ferry__trace_close(ferry_runtime *rt) {
    ferry__trace *t = rt->trace;
    if (!t) return;
    rt->trace = NULL;
    ferry__mem_free_bootstrap(t->fn, t->user, t->path);
    ferry__mem_free_bootstrap(t->fn, t->user, t->ev);
    ferry__mem_free_bootstrap(t->fn, t->user, t);
}

const char *ferry__trace_env_path(const ferry_runtime *rt) { return rt->trace ? rt->trace->path : NULL; }

void ferry__trace_add(ferry_runtime *rt, ferry__trace_kind kind, const char *name, int64_t start_ns, int64_t end_ns) {
    ferry__trace *t = rt->trace;
    if (!t) return;
    uint64_t i = atomic_fetch_add_explicit(&t->next, 1, memory_order_relaxed);
    trace_event *e = &t->ev[i % t->cap];
    atomic_store_explicit(&e->seq, 0, memory_order_relaxed);
    atomic_thread_fence(memory_order_release); /* a reader that sees the new fields sees seq 0 first */
    atomic_store_explicit(&e->ts_ns, start_ns, memory_order_relaxed);
    atomic_store_explicit(&e->dur_ns, end_ns > start_ns ? end_ns - start_ns : 0, memory_order_relaxed);
    atomic_store_explicit(&e->meta, (uint64_t)my_tid() << 8 | (uint64_t)kind, memory_order_relaxed);
    char buf[3 * 8] = {0};
    size_t n = name ? strlen(name) : 0;
    if (n > TRACE_NAME) { /* cut before a UTF-8 character, not inside one */
        n = TRACE_NAME;
        while (n > 0 && ((unsigned char)name[n] & 0xC0) == 0x80) n--;
    }
    memcpy(buf, name ? name : "", n);
    for (int k = 0; k < 3; k++) {
        uint64_t word;
        memcpy(&word, buf + 8 * k, 8);
        atomic_store_explicit(&e->name[k], word, memory_order_relaxed);
    }
    atomic_store_explicit(&e->seq, i + 1, memory_order_release);
}

void ferry__trace_next(ferry_runtime *rt, int64_t start_ns, int64_t end_ns) {
    if (end_ns - start_ns >= TRACE_NEXT_MIN_NS) ferry__trace_add(rt, FERRY__TR_NEXT, "next", start_ns, end_ns);
}

int64_t ferry_clock_ns(void) { return ferry__now_ns(); }

int ferry_trace_step(ferry_runtime *rt, const char *name, int64_t start_ns) {
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", __func__);
    FERRY__CHECK_ARG(name != NULL, FERRY_EINVAL, "%s: argument 'name' is NULL", __func__);
    int64_t now = ferry__now_ns();
    FERRY__CHECK_ARG(start_ns > 0 && start_ns <= now, FERRY_EINVAL,
                     "%s: start_ns %lld is not a time of ferry_clock_ns before now (%lld)", __func__,
                     (long long)start_ns, (long long)now);
    ferry__trace_add(rt, FERRY__TR_STEP, name, start_ns, now);
    return FERRY_OK;
}

/* Reads event i of the ring into *r; false when the slot holds another event now, or one being
 * written. */
static bool read_event(const ferry__trace *t, uint64_t i, trace_rec *r) {
    trace_event *e = &t->ev[i % t->cap];
    if (atomic_load_explicit(&e->seq, memory_order_acquire) != i + 1) return false;
    r->ts_ns = atomic_load_explicit(&e->ts_ns, memory_order_relaxed);
    r->dur_ns = atomic_load_explicit(&e->dur_ns, memory_order_relaxed);
    uint64_t meta = atomic_load_explicit(&e->meta, memory_order_relaxed);
    r->tid = (uint32_t)(meta >> 8);
    r->kind = (uint8_t)(meta & 0xff);
    char buf[3 * 8];
    for (int k = 0; k < 3; k++) {
        uint64_t word = atomic_load_explicit(&e->name[k], memory_order_relaxed);
        memcpy(buf + 8 * k, &word, 8);
    }
    memcpy(r->name, buf, TRACE_NAME);
    r->name[TRACE_NAME] = '\0';
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&e->seq, memory_order_relaxed) == i + 1; /* not overwritten meanwhile */
}

/* One event as a Chrome "complete" event; times in microseconds from t0. */
static void write_event(ferry__writer *w, const trace_rec *e, int64_t t0, bool comma) {
    const char *name = e->name;
    const char *kind =
        e->kind < sizeof kind_names / sizeof kind_names[0] && kind_names[e->kind] ? kind_names[e->kind] : "?";
    char full[TRACE_NAME + 32];
    if (e->kind == FERRY__TR_STEP || e->kind == FERRY__TR_NEXT) snprintf(full, sizeof full, "%s", name);
    else snprintf(full, sizeof full, "%s %s", name, kind);
    ferry__w_printf(w, "%s{\"name\":", comma ? ",\n" : "");
    ferry__w_json_str(w, full);
    ferry__w_printf(w, ",\"cat\":\"%s\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,\"pid\":1,\"tid\":%u}", kind,
                    (double)(e->ts_ns - t0) * 1e-3, (double)e->dur_ns * 1e-3, e->tid);
}

/* The trace as JSON text in *w (check w->failed). FERRY_OK or FERRY_ENOMEM (message: fn). */
static int trace_json(ferry_runtime *rt, ferry__writer *w, const char *fn) {
    ferry__trace *t = rt->trace;
    uint64_t end = atomic_load_explicit(&t->next, memory_order_acquire);
    uint64_t begin = end > t->cap ? end - t->cap : 0;
    /* Threads: a name each (a worker ran tasks; any other thread is the consumer's side). */
    uint32_t max_tid = 0;
    int64_t t0 = INT64_MAX;
    for (uint64_t i = begin; i < end; i++) {
        trace_rec e;
        if (!read_event(t, i, &e)) continue;
        if (e.tid > max_tid) max_tid = e.tid;
        if (e.ts_ns < t0) t0 = e.ts_ns;
    }
    if (t0 == INT64_MAX) t0 = 0;
    uint8_t *role = max_tid ? ferry__calloc(rt, (size_t)max_tid + 1, 1) : NULL;
    if (max_tid && !role) return ferry__set_last_error(FERRY_ENOMEM, "%s: out of memory", fn);
    ferry__w_printf(w,
                    "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"producer\":\"ferry %s\",\"dropped\":%llu},"
                    "\"traceEvents\":[\n",
                    ferry_version(), (unsigned long long)begin);
    bool comma = false;
    for (uint64_t i = begin; i < end; i++) {
        trace_rec e;
        if (!read_event(t, i, &e)) continue;
        if (role && e.tid <= max_tid) role[e.tid] |= e.kind == FERRY__TR_RUN ? 1 : 2;
        write_event(w, &e, t0, comma);
        comma = true;
    }
    for (uint32_t tid = 1; tid <= max_tid; tid++) {
        if (!role || !role[tid]) continue;
        ferry__w_printf(w,
                        "%s{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":%u,\"args\":{\"name\":\"%s %u\"}}",
                        comma ? ",\n" : "", tid, (role[tid] & 1) ? "ferry worker" : "consumer", tid);
        comma = true;
    }
    ferry__w_printf(w, "%s{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"args\":{\"name\":\"ferry\"}}\n]}\n",
                    comma ? ",\n" : "");
    ferry__free(rt, role);
    if (w->failed) return ferry__set_last_error(FERRY_ENOMEM, "%s: out of memory for the JSON text", fn);
    return FERRY_OK;
}

static int trace_check(ferry_runtime *rt, const char *fn) {
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", fn);
    if (!rt->trace)
        return ferry__set_last_error(FERRY_EINVAL,
                                     "%s: tracing is off for this runtime; set ferry_runtime_options.trace_bytes, or "
                                     "FERRY_TRACE in the environment",
                                     fn);
    return FERRY_OK;
}

int ferry_runtime_trace_json(ferry_runtime *rt, ferry_blob **out) {
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    int rc = trace_check(rt, __func__);
    if (rc) return rc;
    ferry__writer w;
    ferry__writer_init(&w, &rt->alloc);
    rc = trace_json(rt, &w, __func__);
    ferry_blob *b = rc ? NULL : ferry__blob_new(rt, w.data, w.size);
    if (!b) {
        ferry__writer_fini(&w);
        return rc ? rc : ferry__set_last_error(FERRY_ENOMEM, "%s: out of memory", __func__);
    }
    *out = b;
    return FERRY_OK;
}

int ferry_runtime_trace_write(ferry_runtime *rt, const char *path) {
    int rc = trace_check(rt, __func__);
    if (rc) return rc;
    FERRY__CHECK_ARG(path != NULL && path[0] != '\0', FERRY_EINVAL, "%s: argument 'path' is NULL or empty", __func__);
    ferry__writer w;
    ferry__writer_init(&w, &rt->alloc);
    rc = trace_json(rt, &w, __func__);
    if (rc) {
        ferry__writer_fini(&w);
        return rc;
    }
    const char *step = "";
    int err = ferry__file_write_atomic(path, w.data, w.size, &step);
    ferry__writer_fini(&w);
    if (err) return ferry__set_last_error(FERRY_EIO, "%s: %s: %s failed: %s", __func__, path, step, strerror(err));
    return FERRY_OK;
}
