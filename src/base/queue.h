/*
 * queue.h - the waiting helpers that the async ops (prefetch, parallel map) share.
 *
 * Handing work between threads costs ~50 ns when the other side is spinning and ~23 us when it
 * sleeps on a condition variable (a futex wake plus a reschedule on this class of machine). The
 * async ops therefore use one pattern everywhere:
 *   1. publish with a release store (a ring tail, a slot's sequence number, a consumer head);
 *   2. read the other side's "I sleep" flag with a read-modify-write (exchange / fetch_add 0),
 *      and lock + signal only when it is set, so a steady stream costs no system call;
 *   3. a waiter first spins for up to FERRY__SPIN_NS (ferry__spin_until), then locks the op's
 *      mutex, sets its flag with a read-modify-write, re-checks its condition and sleeps.
 * Both sides use read-modify-writes on the same flag, so the flag's modification order decides
 * which side sees the other: either the waiter sees the published data or the publisher sees the
 * flag (no lost wake-up, and no fences, which ThreadSanitizer does not model).
 *
 * The budget helpers extend base.h's byte budget for stages that must sometimes exceed it: the
 * element at the head of an ordered stage must never wait (or the pipeline deadlocks), so its
 * producer waits "until the bytes fit or I am at the head".
 *
 * Threads: everything here is thread-safe; no state of its own.
 */
#ifndef FERRY_QUEUE_H
#define FERRY_QUEUE_H

#include "base/base.h"

/* How long a waiter spins before it sleeps: adaptive per waiter (ferry__spinner), between MIN and
 * MAX, starting at SPIN_NS. About a wake-up's cost: spinning longer wastes a core that another
 * stage may need (machines with few cores run more ferry threads than cores). */
#define FERRY__SPIN_NS 2000
#define FERRY__SPIN_MIN_NS 250
#define FERRY__SPIN_MAX_NS 8000

/* Spins with ferry__cpu_relax until ready(arg) returns true or about spin_ns nanoseconds have
 * passed (the clock is read once per 32 polls). Returns the last value of ready(arg). */
bool ferry__spin_until(bool (*ready)(void *arg), void *arg, int64_t spin_ns);

/* One waiter's spin budget, used by one thread only: a spin that ends with the condition met
 * lengthens the next one (x 1.5, up to FERRY__SPIN_MAX_NS), one that ends in sleep halves it (down
 * to FERRY__SPIN_MIN_NS): a waiter whose partner answers fast keeps spinning, one whose partner is
 * slow stops burning a core. Zero-initialized means FERRY__SPIN_NS. */
typedef struct ferry__spinner {
    int64_t ns;
} ferry__spinner;

/* ferry__spin_until with the spinner's budget, adapting it. */
bool ferry__spin_adaptive(ferry__spinner *s, bool (*ready)(void *arg), void *arg);

/* Wakes every thread waiting in ferry__budget_wait so that it
 * re-checks its force condition. Cheap (one atomic load) when nobody waits. */
void ferry__budget_poke(ferry__budget *b);

#endif
