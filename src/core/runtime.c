/*
 * runtime.c - the runtime object (allocator hook, byte budget, thread accounting), the version
 * and the status-code tables. A runtime is shared by every thread that uses its objects; its
 * counters are atomics and it holds no lock of its own beyond the budget's.
 */
#include "core.h"

#include <string.h>

const char *ferry_version(void) { return FERRY_VERSION_STRING; }
int ferry_version_number(void) { return FERRY_VERSION_NUMBER; }

const char *ferry_strerror(int status) {
    switch (status) {
#define FERRY__STATUS_TEXT(name, value, text)                                                                          \
    case value: return text;
        FERRY_STATUS_MAP(FERRY__STATUS_TEXT)
#undef FERRY__STATUS_TEXT
    }
    return "unknown status code";
}

const char *ferry_error_name(int status) {
    switch (status) {
#define FERRY__STATUS_NAME(name, value, text)                                                                          \
    case value: return "FERRY_" #name;
        FERRY_STATUS_MAP(FERRY__STATUS_NAME)
#undef FERRY__STATUS_NAME
    }
    return "FERRY_UNKNOWN";
}

int ferry_runtime_create(const ferry_runtime_options *opts, ferry_runtime **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    ferry_runtime_options o = {0};
    if (opts) o = *opts;
    FERRY__CHECK_ARG(o.cpu_budget >= 0 && o.cpu_budget <= 4096, FERRY_EINVAL,
                     "%s: options.cpu_budget is %d; it must be 0 (all cores) to 4096", __func__, o.cpu_budget);
    if (o.memory_budget == 0) {
        uint64_t ram = ferry__physical_memory();
        o.memory_budget = ram ? (size_t)(ram / 2) : ((size_t)1 << 30);
    }
    /* The runtime's block holds its allocator (shards and depot, tens of KB): it comes straight
     * from the hook and is then counted on that allocator as its first block. */
    const size_t rt_size = sizeof(ferry_runtime) + 64;
    void *raw = ferry__mem_alloc_bootstrap(o.alloc, o.alloc_user, rt_size);
    if (!raw) return ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the runtime failed", __func__);
    ferry_runtime *rt = (ferry_runtime *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    memset(rt, 0, sizeof *rt);
    ferry__allocator_init(&rt->alloc, o.alloc, o.alloc_user);
    rt->raw = raw;
    atomic_store(&rt->alloc.shard[0].bytes, (int64_t)rt_size);
    atomic_store(&rt->alloc.shard[0].blocks, 1);
    if (ferry__budget_init(&rt->budget, o.memory_budget) != FERRY_OK) {
        ferry__mem_free_bootstrap(o.alloc, o.alloc_user, raw);
        return ferry__set_last_error(FERRY_ENOMEM, "%s: creating the budget lock failed", __func__);
    }
    /* Large blocks kept for reuse stay a small part of what the budget allows buffered. */
    ferry__allocator_set_large_limit(&rt->alloc, rt->budget.limit / 8);
    rt->cpu_budget = o.cpu_budget ? o.cpu_budget : ferry__num_cores();
    if (ferry__exec_init(&rt->exec, rt, rt->cpu_budget) != FERRY_OK) {
        ferry__budget_fini(&rt->budget);
        ferry__mem_free_bootstrap(o.alloc, o.alloc_user, raw);
        return ferry__set_last_error(FERRY_ENOMEM, "%s: creating the executor's locks failed", __func__);
    }
    atomic_init(&rt->budget_held, 0);
    atomic_init(&rt->threads_live, 0);
    atomic_init(&rt->threads_started, 0);
    atomic_init(&rt->objects, 0);
    /* Tracing: asked for, or FERRY_TRACE names the file to write at ferry_runtime_free. */
    const char *env = getenv("FERRY_TRACE");
    bool env_on = env && env[0] != '\0';
    size_t trace_bytes = o.trace_bytes ? o.trace_bytes : env_on ? FERRY__TRACE_ENV_BYTES : 0;
    char path[4096];
    if (env_on) { /* the process's first runtime writes FILE, the next ones FILE.2, FILE.3, ... */
        static _Atomic long traced;
        long k = atomic_fetch_add(&traced, 1) + 1;
        if (k == 1) snprintf(path, sizeof path, "%s", env);
        else snprintf(path, sizeof path, "%s.%ld", env, k);
    }
    if (trace_bytes && ferry__trace_open(rt, trace_bytes, env_on ? path : NULL, o.alloc, o.alloc_user) != FERRY_OK) {
        ferry__exec_fini(&rt->exec);
        ferry__budget_fini(&rt->budget);
        ferry__mem_free_bootstrap(o.alloc, o.alloc_user, raw);
        return ferry__set_last_error(FERRY_ENOMEM, "%s: allocating a trace of %zu bytes failed", __func__, trace_bytes);
    }
    ferry__allocator_register(&rt->alloc); /* threads claim shards of it from now on (see base.h) */
    *out = rt;
    return FERRY_OK;
}

int ferry_runtime_free(ferry_runtime *rt) {
    if (!rt) return FERRY_OK;
    int64_t objects = atomic_load(&rt->objects);
    if (objects != 0)
        return ferry__set_last_error(FERRY_EMISUSE,
                                     "%s: %lld datasets or iterators made with this runtime "
                                     "are still alive; free them first",
                                     __func__, (long long)objects);
    int64_t bytes, blocks;
    ferry__allocator_usage(&rt->alloc, &bytes, &blocks);
    if (blocks != 1)
        return ferry__set_last_error(FERRY_EMISUSE,
                                     "%s: %lld blocks (%lld bytes) made with this runtime are "
                                     "still allocated (tensors or elements not freed); free them first",
                                     __func__, (long long)blocks - 1, (long long)bytes - (long long)(sizeof *rt + 64));
    int rc = FERRY_OK;
    const char *trace_path = ferry__trace_env_path(rt);
    if (trace_path) rc = ferry_runtime_trace_write(rt, trace_path); /* FERRY_TRACE: the user asked */
    ferry__trace_close(rt);
    ferry__exec_fini(&rt->exec);
    ferry__budget_fini(&rt->budget);
    ferry__allocator_unregister(&rt->alloc);
    ferry__allocator_fini(&rt->alloc);
    ferry_alloc_fn fn = rt->alloc.fn;
    void *user = rt->alloc.user, *raw = rt->raw;
    ferry__mem_free_bootstrap(fn, user, raw);
    return rc;
}

int ferry_runtime_stats_get(ferry_runtime *rt, ferry_runtime_stats *out) {
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", __func__);
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    int64_t bytes, blocks;
    ferry__allocator_usage(&rt->alloc, &bytes, &blocks);
    out->bytes_allocated = bytes > 0 ? (size_t)bytes : 0;
    out->blocks_allocated = blocks;
    out->budget = rt->budget.limit;
    out->budget_used = atomic_load(&rt->budget.used);
    out->budget_used_peak = atomic_load(&rt->budget.peak);
    out->threads_live = atomic_load(&rt->threads_live);
    out->threads_started = atomic_load(&rt->threads_started);
    out->cpu_budget = rt->cpu_budget;
    ferry__mutex_lock(&rt->exec.mu);
    out->threads_busy_peak = rt->exec.peak_busy;
    out->threads_granted_peak = rt->exec.peak_extra;
    ferry__mutex_unlock(&rt->exec.mu);
    return FERRY_OK;
}

int ferry_runtime_budget_hold(ferry_runtime *rt, size_t n) {
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", __func__);
    if (n == 0) return FERRY_OK;
    atomic_fetch_add_explicit(&rt->budget_held, n, memory_order_relaxed);
    ferry__budget_force(&rt->budget, n);
    return FERRY_OK;
}

int ferry_runtime_budget_release(ferry_runtime *rt, size_t n) {
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", __func__);
    size_t held = atomic_load_explicit(&rt->budget_held, memory_order_relaxed);
    do {
        FERRY__CHECK_ARG(n <= held, FERRY_EINVAL, "%s: n is %zu bytes, but %zu are held", __func__, n, held);
    } while (!atomic_compare_exchange_weak_explicit(&rt->budget_held, &held, held - n, memory_order_relaxed,
                                                    memory_order_relaxed));
    ferry__budget_release(&rt->budget, n);
    return FERRY_OK;
}

/* Every runtime thread owns an allocator shard while it runs (see base.h). */
static void *rt_thread_main(void *p) {
    ferry__thread *t = p;
    ferry_runtime *rt = t->owner;
    ferry__allocator_claim(&rt->alloc);
    void *r = t->fn(t->arg);
    ferry__allocator_release(&rt->alloc);
    return r;
}

int ferry__rt_thread_start(ferry_runtime *rt, ferry__thread *t, const char *name, void *(*fn)(void *), void *arg,
                           ferry__status *st) {
    atomic_fetch_add(&rt->threads_live, 1);
    t->fn = fn;
    t->arg = arg;
    t->owner = rt;
    int rc = ferry__thread_start(t, name, rt_thread_main, t);
    if (rc != 0) {
        atomic_fetch_sub(&rt->threads_live, 1);
        return ferry__fail(st, FERRY_ENOMEM, "starting thread %s failed: %s", name, strerror(rc));
    }
    atomic_fetch_add(&rt->threads_started, 1);
    return FERRY_OK;
}

void ferry__rt_thread_join(ferry_runtime *rt, ferry__thread *t) {
    if (!t->started) return;
    ferry__thread_join(t);
    atomic_fetch_sub(&rt->threads_live, 1);
}
