/*
 * stage.c - the async-stage base: what every stage that runs ahead of its consumer is made of
 * (its cancel scope and waker, its lock and its consumer's condition variable, its executor
 * tasks, its input's anchors, its knobs and the accounting of its threads' time). See core.h
 * for the life of a stage; the ops that use it are prefetch.c, map.c and interleave.c.
 *
 * Why one base: each of those ops carried its own copy of this set-up and teardown, in its own
 * order, and each copy had to get the same subtle things right (the waker takes the op's lock
 * under the scope's lock, never the reverse; the scope fires before the tasks close, so that a
 * task blocked in a user call or a budget wait returns; the knobs go before the stage, so that
 * no tuning call reaches a freed stage). Here they are written once.
 *
 * Time accounting: a stage's threads add what they measured to its stats record with
 * ferry__stage_time, relaxed adds to shared counters (a few per chunk or per wait, never per
 * element). ferry__stage_lock times a lock only when it is contended: the uncontended path is one
 * trylock, as before.
 */
#include "core.h"

#include <string.h>

static void stage_waker(void *arg) {
    ferry__stage *s = arg;
    ferry__mutex_lock(&s->mu);
    if (s->on_cancel) s->on_cancel(s->arg);
    ferry__cond_broadcast(&s->cv_cons);
    ferry__mutex_unlock(&s->mu);
}

int ferry__stage_init(ferry__stage *s, ferry__iter *it, int64_t anchor_period, ferry__ictx *ictx, ferry__status *st) {
    const char *op = it->ds->name;
    s->it = it;
    s->rt = it->ctx.rt;
    if (ferry__cancel_init(&s->scope, it->ctx.cancel))
        return ferry__fail(st, FERRY_ENOMEM, "%s: creating its cancel scope failed", op);
    s->scope_ok = true;
    if (ferry__mutex_init(&s->mu)) return ferry__fail(st, FERRY_ENOMEM, "%s: creating a lock failed", op);
    if (ferry__cond_init(&s->cv_cons)) {
        ferry__mutex_destroy(&s->mu);
        return ferry__fail(st, FERRY_ENOMEM, "%s: creating a condition variable failed", op);
    }
    s->sync_ok = true;
    if (anchor_period > 0) {
        int rc = ferry__anchor_init(&s->anchor, s->rt, anchor_period, st);
        if (rc) {
            ferry__status_prefix(st, "%s", op);
            return rc;
        }
        s->anchor_ok = true;
    }
    *ictx = it->ctx;
    ictx->cancel = &s->scope;
    return FERRY_OK;
}

void ferry__stage_ready(ferry__stage *s, void (*on_cancel)(void *arg), void *arg, int parallelism, int64_t capacity,
                        const ferry__knobs *knobs) {
    s->on_cancel = on_cancel;
    s->arg = arg;
    s->waker.fn = stage_waker;
    s->waker.arg = s;
    ferry__cancel_add_waker(&s->scope, &s->waker);
    s->waker_ok = true;
    ferry__node_stats *rec = s->it->stats;
    if (rec) {
        int64_t derive = -1; /* own time is measured here from now on */
        atomic_compare_exchange_strong(&rec->work_ns, &derive, 0);
        atomic_store(&rec->parallelism, parallelism);
        atomic_store(&rec->capacity, capacity);
    }
    if (knobs) {
        s->knobs = *knobs;
        ferry__pipe_knobs_register(s->it->ctx.pipe, rec, &s->knobs);
        s->knobs_on = true;
    }
}

int ferry__stage_task_open(ferry__stage *s, ferry__task *t, void (*run)(ferry__task *), void *arg, ferry__status *st) {
    int rc = ferry__task_open(&s->rt->exec, t, run, arg, st);
    if (rc) {
        ferry__status_prefix(st, "%s", s->it->ds->name);
        return rc;
    }
    t->stage_next = s->tasks;
    t->rec = s->it->stats;
    s->tasks = t;
    return FERRY_OK;
}

void ferry__stage_stop(ferry__stage *s) {
    if (s->knobs_on) {
        ferry__pipe_knobs_unregister(s->it->ctx.pipe, s->it->stats, &s->knobs);
        s->knobs_on = false;
    }
    if (s->scope_ok) ferry__cancel_fire(&s->scope);
    while (s->tasks) {
        ferry__task *t = s->tasks;
        s->tasks = t->stage_next;
        ferry__task_close(t);
    }
    /* A scope above can fire again (an enclosing iterator's destroy) while the op frees what
     * its tasks made: from now on that must not reach the op's hook or its objects. */
    if (s->waker_ok) ferry__cancel_remove_waker(&s->scope, &s->waker);
    s->waker_ok = false;
}

void ferry__stage_fini(ferry__stage *s) {
    if (s->waker_ok) ferry__cancel_remove_waker(&s->scope, &s->waker);
    s->waker_ok = false;
    if (s->anchor_ok) ferry__anchor_fini(&s->anchor);
    s->anchor_ok = false;
    if (s->sync_ok) {
        ferry__cond_destroy(&s->cv_cons);
        ferry__mutex_destroy(&s->mu);
    }
    s->sync_ok = false;
    if (s->scope_ok) ferry__cancel_fini(&s->scope);
    s->scope_ok = false;
}

void ferry__stage_lock(ferry__stage *s, ferry__mutex *mu) {
    if (ferry__mutex_trylock(mu)) return;
    int64_t t0 = ferry__now_ns();
    ferry__mutex_lock(mu);
    ferry__stage_time(s, FERRY__TIME_LOCK, ferry__now_ns() - t0);
}

void ferry__stage_time(const ferry__stage *s, ferry__time_kind kind, int64_t ns) {
    if (s->rt && s->rt->trace && ns > 0) {
        int64_t now = ferry__now_ns();
        ferry__stage_trace(s, kind, now - ns, now);
    }
    ferry__stage_account(s, kind, ns);
}

void ferry__stage_trace(const ferry__stage *s, ferry__time_kind kind, int64_t start_ns, int64_t end_ns) {
    if (s->rt && s->rt->trace && s->it) { /* named as its stats record (map_and_batch's, for its map) */
        const ferry_dataset *ds = s->it->stats ? s->it->stats->ds : s->it->ds;
        ferry__trace_add(s->rt, (ferry__trace_kind)(FERRY__TR_WORK + (int)kind), FERRY__LABEL(ds), start_ns, end_ns);
    }
}

void ferry__stage_idle_full(const ferry__stage *s, int64_t ns) {
    ferry__node_stats *rec = s->it ? s->it->stats : NULL;
    if (rec && ns > 0) atomic_fetch_add_explicit(&rec->idle_full_ns, ns, memory_order_relaxed);
}

void ferry__stage_account(const ferry__stage *s, ferry__time_kind kind, int64_t ns) {
    ferry__node_stats *rec = s->it ? s->it->stats : NULL;
    if (!rec || ns <= 0) return;
    _Atomic int64_t *c;
    switch (kind) {
    case FERRY__TIME_WORK: c = &rec->work_ns; break;
    case FERRY__TIME_ASSEMBLE: c = &rec->assemble_ns; break;
    case FERRY__TIME_LOCK: c = &rec->lock_wait_ns; break;
    case FERRY__TIME_WAIT_INPUT: c = &rec->wait_input_ns; break;
    default: c = &rec->wait_consumer_ns; break;
    }
    atomic_fetch_add_explicit(c, ns, memory_order_relaxed);
}
