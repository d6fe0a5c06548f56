/*
 * queue.c - spin-then-sleep and budget waiting helpers for the async ops; see queue.h.
 */
#include "base/queue.h"

bool ferry__spin_until(bool (*ready)(void *arg), void *arg, int64_t spin_ns) {
    if (ready(arg)) return true;
    if (spin_ns <= 0) return false;
    int64_t end = ferry__now_ns() + spin_ns;
    for (;;) {
        for (int i = 0; i < 32; i++) {
            ferry__cpu_relax();
            if (ready(arg)) return true;
        }
        if (ferry__now_ns() >= end) return ready(arg);
    }
}

bool ferry__spin_adaptive(ferry__spinner *s, bool (*ready)(void *arg), void *arg) {
    if (s->ns <= 0) s->ns = FERRY__SPIN_NS;
    bool ok = ferry__spin_until(ready, arg, s->ns);
    if (ok) s->ns = FERRY__MIN(FERRY__SPIN_MAX_NS, s->ns + s->ns / 2);
    else s->ns = FERRY__MAX(FERRY__SPIN_MIN_NS, s->ns / 2);
    return ok;
}

void ferry__budget_poke(ferry__budget *b) {
    if (atomic_load(&b->waiters) > 0) {
        ferry__mutex_lock(&b->mu);
        ferry__cond_broadcast(&b->cv);
        ferry__mutex_unlock(&b->mu);
    }
}
