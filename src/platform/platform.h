/*
 * platform.h - the only layer that calls POSIX directly: mutexes, condition variables, threads,
 * clocks, files and machine facts. Everything above uses these wrappers, so that a port or a fault
 * injector has one place to change.
 *
 * Lock errors from pthread on a correctly initialized mutex are broken invariants, so the lock
 * wrappers abort on them (FERRY_ASSERT); everything that can fail for resource reasons
 * (thread creation, mutex init) returns a status instead.
 */
#ifndef FERRY_PLATFORM_H
#define FERRY_PLATFORM_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ferry__cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define ferry__cpu_relax() __asm__ __volatile__("yield")
#else
#define ferry__cpu_relax() ((void)0)
#endif

typedef struct ferry__mutex {
    pthread_mutex_t m;
} ferry__mutex;
/* For a mutex with static storage (needs no ferry__mutex_init and is never destroyed). */
/* clang-format off */
#define FERRY__MUTEX_INITIALIZER {PTHREAD_MUTEX_INITIALIZER}
/* clang-format on */

typedef struct ferry__cond {
    pthread_cond_t c;
} ferry__cond;

typedef struct ferry__thread {
    pthread_t t;
    bool started;
    /* For a caller that starts threads through a trampoline of its own (the runtime does). */
    void *(*fn)(void *);
    void *arg, *owner;
} ferry__thread;

int ferry__mutex_init(ferry__mutex *m);
void ferry__mutex_destroy(ferry__mutex *m);
void ferry__mutex_lock(ferry__mutex *m);
/* Locks m if no one holds it: true when locked. */
bool ferry__mutex_trylock(ferry__mutex *m);
void ferry__mutex_unlock(ferry__mutex *m);

/* Condition variables use CLOCK_MONOTONIC for timed waits. */
int ferry__cond_init(ferry__cond *c);
void ferry__cond_destroy(ferry__cond *c);
void ferry__cond_wait(ferry__cond *c, ferry__mutex *m);
/* Waits at most ns nanoseconds; returns true when woken or spuriously, false on timeout. */
bool ferry__cond_timedwait(ferry__cond *c, ferry__mutex *m, int64_t ns);
void ferry__cond_signal(ferry__cond *c);
void ferry__cond_broadcast(ferry__cond *c);

/* Starts a thread named `name` (at most 15 characters show in top -H). Returns 0 or an errno
 * value. */
int ferry__thread_start(ferry__thread *t, const char *name, void *(*fn)(void *), void *arg);
void ferry__thread_join(ferry__thread *t);

/* A thread-exit destructor: once a thread has set a non-NULL value with ferry__thread_key_set,
 * dtor(value) runs on that thread when it ends (returns from its start function or exits through
 * pthread_exit; not for a thread that returns from main or calls exit(), whose process ends).
 * Keys are few (PTHREAD_KEYS_MAX) and never deleted: create one per purpose, once. Both return 0
 * or an errno value. */
typedef struct ferry__thread_key {
    pthread_key_t k;
} ferry__thread_key;
int ferry__thread_key_create(ferry__thread_key *k, void (*dtor)(void *));
int ferry__thread_key_set(ferry__thread_key *k, void *value);

/* Monotonic wall clock in nanoseconds (vDSO, ~20 ns). */
int64_t ferry__now_ns(void);
/* CPU time of the calling thread in nanoseconds (a system call: use per batch, not per element). */
int64_t ferry__thread_cpu_ns(void);
/* CPU time of the whole process (every thread) in nanoseconds (a system call). */
int64_t ferry__process_cpu_ns(void);
/* The calling thread's CPU time (its CPU clock), and its time spent ready to run but waiting
 * for a core (Linux: /proc/thread-self/schedstat). ferry__thread_sched_open returns a descriptor
 * for the calling thread (-1 where there is none), to read from that thread only and close with
 * ferry__thread_sched_close before it exits. ferry__thread_sched_read falls back to the CPU
 * clock (and a wait of 0) on -1 or a failed read. A system call: sample it, never per element. */
int ferry__thread_sched_open(void);
void ferry__thread_sched_read(int fd, int64_t *cpu_ns, int64_t *runq_ns);
void ferry__thread_sched_close(int fd);
/* Sleeps ns nanoseconds (no cancellation; see ferry_context_sleep for the cancellable one). */
void ferry__sleep_ns(int64_t ns);
/* Gives the core to another runnable thread (a spinning waiter whose partner may be preempted). */
void ferry__thread_yield(void);

/* Online CPU cores (>= 1). */
int ferry__num_cores(void);
/* Physical memory in bytes (0 when unknown). */
uint64_t ferry__physical_memory(void);

/* Whole small files. Return 0 or an errno value; *step names the step that failed. */
int ferry__file_write_atomic(const char *path, const void *data, size_t n, const char **step);
int ferry__file_size(const char *path, size_t *size);
/* Reads exactly n bytes (EAGAIN if the file is shorter now). */
int ferry__file_read_exact(const char *path, void *buf, size_t n);

/* Files by descriptor and paths. Each returns 0 or an errno value; EINTR is retried. */
/* Opens path for reading; *size: its size for a regular file, else -1. EISDIR for a directory. */
int ferry__fd_open_read(const char *path, int *fd, int64_t *size);
/* Creates path for writing: truncating it, or with excl failing with EEXIST when it exists. */
int ferry__fd_create(const char *path, bool excl, int *fd);
/* Reads up to n bytes at off; *got == 0 only at the end of the file. */
int ferry__fd_pread(int fd, void *buf, size_t n, int64_t off, size_t *got);
/* Writes up to n bytes at off (off < 0: at the file offset); *put > 0 bytes written on success. */
int ferry__fd_write(int fd, const void *buf, size_t n, int64_t off, size_t *put);
/* fsync; a file that cannot be synced (EINVAL, EROFS, ENOTSUP: a pipe, a read-only mount) is done. */
int ferry__fd_sync(int fd);
int ferry__fd_close(int fd);
int ferry__path_rename(const char *from, const char *to);
int ferry__path_unlink(const char *path);
/* fsyncs the directory that holds path; 0 or an errno value (EINVAL: cannot be synced, done). */
int ferry__dir_sync(const char *path);

/* Whole transfers with a fault hook (for tests of what a writer or reader does when the disk
 * fails). Before each operation hook->fn(user, op, offset, size) returns the size to use
 * (smaller: a short read or write) or a negative errno value to fail it (-EIO, -ENOSPC); op: 'r'
 * read, 'w' write, 's' fsync, 'n' rename. A NULL hook or fn: no faults. The hook belongs to an
 * object (a runtime), never to the process. */
typedef long (*ferry__fault_fn)(void *user, int op, int64_t offset, size_t size);
typedef struct ferry__fault {
    ferry__fault_fn fn;
    void *user;
} ferry__fault;
/* Writes all n bytes at off, over short writes. 0 or an errno value. */
int ferry__fd_pwrite_all(int fd, int64_t off, const void *p, size_t n, const ferry__fault *hook);
/* Reads up to n bytes at off; *got < n only at the end of the file. 0 or an errno value. */
int ferry__fd_pread_full(int fd, int64_t off, void *p, size_t n, size_t *got, const ferry__fault *hook);
int ferry__fd_sync_hooked(int fd, const ferry__fault *hook);
int ferry__path_rename_hooked(const char *from, const char *to, const ferry__fault *hook);
long ferry__process_id(void);
/* Matches a glob pattern and calls fn with the paths sorted bytewise (*rc gets fn's result).
 * Returns 0, ENOENT when nothing matches, ENOMEM, or EIO (a directory could not be read). */
int ferry__glob(const char *pattern, int (*fn)(void *user, size_t n, const char *const *paths), void *user, int *rc);

#endif
