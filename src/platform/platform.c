/*
 * platform.c - POSIX threads, clocks and machine facts behind the wrappers of platform.h.
 * No state: every function acts on the objects it is handed.
 */
#define _GNU_SOURCE
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void check(int rc, const char *what) {
    if (rc != 0) {
        /* A lock call failing on an initialized object is a broken invariant, not user input. */
        fprintf(stderr, "ferry: %s failed: %s\n", what, strerror(rc));
        abort();
    }
}

int ferry__mutex_init(ferry__mutex *m) { return pthread_mutex_init(&m->m, NULL); }
void ferry__mutex_destroy(ferry__mutex *m) { check(pthread_mutex_destroy(&m->m), "pthread_mutex_destroy"); }
void ferry__mutex_lock(ferry__mutex *m) { check(pthread_mutex_lock(&m->m), "pthread_mutex_lock"); }
bool ferry__mutex_trylock(ferry__mutex *m) {
    int rc = pthread_mutex_trylock(&m->m);
    if (rc == EBUSY) return false;
    check(rc, "pthread_mutex_trylock");
    return true;
}

void ferry__mutex_unlock(ferry__mutex *m) { check(pthread_mutex_unlock(&m->m), "pthread_mutex_unlock"); }

int ferry__cond_init(ferry__cond *c) {
    pthread_condattr_t a;
    int rc = pthread_condattr_init(&a);
    if (rc != 0) return rc;
    rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    if (rc == 0) rc = pthread_cond_init(&c->c, &a);
    pthread_condattr_destroy(&a);
    return rc;
}
void ferry__cond_destroy(ferry__cond *c) { check(pthread_cond_destroy(&c->c), "pthread_cond_destroy"); }
void ferry__cond_wait(ferry__cond *c, ferry__mutex *m) { check(pthread_cond_wait(&c->c, &m->m), "pthread_cond_wait"); }

bool ferry__cond_timedwait(ferry__cond *c, ferry__mutex *m, int64_t ns) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t t = (int64_t)ts.tv_nsec + (ns > 0 ? ns : 0);
    ts.tv_sec += (time_t)(t / 1000000000);
    ts.tv_nsec = (long)(t % 1000000000);
    int rc = pthread_cond_timedwait(&c->c, &m->m, &ts);
    if (rc == ETIMEDOUT) return false;
    check(rc, "pthread_cond_timedwait");
    return true;
}
void ferry__cond_signal(ferry__cond *c) { check(pthread_cond_signal(&c->c), "pthread_cond_signal"); }
void ferry__cond_broadcast(ferry__cond *c) { check(pthread_cond_broadcast(&c->c), "pthread_cond_broadcast"); }

int ferry__thread_start(ferry__thread *t, const char *name, void *(*fn)(void *), void *arg) {
    t->started = false;
    int rc = pthread_create(&t->t, NULL, fn, arg);
    if (rc != 0) return rc;
    t->started = true;
    if (name) {
        char buf[16];
        snprintf(buf, sizeof buf, "%s", name);
        (void)pthread_setname_np(t->t, buf);
    }
    return 0;
}

void ferry__thread_join(ferry__thread *t) {
    if (!t->started) return;
    check(pthread_join(t->t, NULL), "pthread_join");
    t->started = false;
}

int ferry__thread_key_create(ferry__thread_key *k, void (*dtor)(void *)) { return pthread_key_create(&k->k, dtor); }
int ferry__thread_key_set(ferry__thread_key *k, void *value) { return pthread_setspecific(k->k, value); }

int64_t ferry__now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t ferry__thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t ferry__process_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int ferry__thread_sched_open(void) {
#ifdef __linux__
    return open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
#else
    return -1;
#endif
}

void ferry__thread_sched_read(int fd, int64_t *cpu_ns, int64_t *runq_ns) {
    /* The CPU time from the thread's clock: schedstat's first field is brought up to date only
     * at ticks and switches, so a running thread would read up to a tick (4 ms) behind. Its
     * second field (time waiting on a run queue) changes only when the thread is switched in,
     * so it is current whenever the thread itself reads it. */
    *cpu_ns = ferry__thread_cpu_ns();
    *runq_ns = 0;
    if (fd >= 0) {
        char buf[96];
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        long long run, wait;
        if (n > 0) {
            buf[n] = '\0';
            if (sscanf(buf, "%lld %lld", &run, &wait) == 2) *runq_ns = wait;
        }
    }
}

void ferry__thread_sched_close(int fd) {
    if (fd >= 0) close(fd);
}

void ferry__thread_yield(void) { (void)sched_yield(); }

void ferry__sleep_ns(int64_t ns) {
    if (ns <= 0) return;
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int ferry__num_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n >= 1 ? (int)n : 1;
}

uint64_t ferry__physical_memory(void) {
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || size <= 0) return 0;
    return (uint64_t)pages * (uint64_t)size;
}
