/*
 * cancel.c - the cancellation tree and the callback context.
 *
 * Every public iterator owns a root scope; every async op owns a child scope of the scope it was
 * made in. Firing a scope sets the flag on it and on all scopes below it, then calls their
 * wakers (each waker takes its op's mutex and broadcasts), so a thread blocked anywhere upstream
 * wakes and sees the flag. A scope made under a fired one starts fired, so a repeat that makes
 * its next epoch's iterator during teardown cannot escape.
 *
 * Locks: a scope's mutex guards its children and wakers lists. Firing holds the scope's mutex
 * while it recurses into children (parent before child) and calls wakers (scope before op).
 */
#include "core.h"

#include <string.h>

int ferry__cancel_init(ferry__cancel *c, ferry__cancel *parent) {
    atomic_init(&c->flag, 0);
    c->parent = parent;
    ferry__list_init(&c->children);
    ferry__list_init(&c->wakers);
    ferry__list_init(&c->node);
    if (ferry__mutex_init(&c->mu) != 0) return FERRY_ENOMEM;
    if (parent) {
        ferry__mutex_lock(&parent->mu);
        ferry__list_push_back(&parent->children, &c->node);
        if (atomic_load(&parent->flag)) atomic_store(&c->flag, 1);
        ferry__mutex_unlock(&parent->mu);
    }
    return FERRY_OK;
}

void ferry__cancel_fini(ferry__cancel *c) {
    if (c->parent) {
        ferry__mutex_lock(&c->parent->mu);
        ferry__list_remove(&c->node);
        ferry__mutex_unlock(&c->parent->mu);
    }
    FERRY_ASSERT(ferry__list_empty(&c->wakers));
    FERRY_ASSERT(ferry__list_empty(&c->children));
    ferry__mutex_destroy(&c->mu);
}

void ferry__cancel_fire(ferry__cancel *c) {
    ferry__mutex_lock(&c->mu);
    atomic_store_explicit(&c->flag, 1, memory_order_release);
    for (ferry__list *n = c->children.next; n != &c->children; n = n->next)
        ferry__cancel_fire(FERRY__CONTAINER_OF(n, ferry__cancel, node));
    for (ferry__list *n = c->wakers.next; n != &c->wakers; n = n->next) {
        ferry__waker *w = FERRY__CONTAINER_OF(n, ferry__waker, node);
        w->fn(w->arg);
    }
    ferry__mutex_unlock(&c->mu);
}

void ferry__cancel_add_waker(ferry__cancel *c, ferry__waker *w) {
    ferry__mutex_lock(&c->mu);
    ferry__list_push_back(&c->wakers, &w->node);
    ferry__mutex_unlock(&c->mu);
}

void ferry__cancel_remove_waker(ferry__cancel *c, ferry__waker *w) {
    ferry__mutex_lock(&c->mu);
    ferry__list_remove(&w->node);
    ferry__mutex_unlock(&c->mu);
}

/* ---- context ---------------------------------------------------------------------------- */
void ferry__context_init(ferry_context *ctx, ferry_runtime *rt, ferry__cancel *cancel, ferry__status *st,
                         uint64_t op_seed, int64_t index) {
    ctx->rt = rt;
    ctx->index = index;
    ctx->seed = op_seed; /* mixed with the index on first use of the generator */
    ctx->rng_ready = false;
    ctx->cancel = cancel;
    ctx->st = st;
}

ferry_runtime *ferry_context_runtime(ferry_context *ctx) { return ctx ? ctx->rt : NULL; }
int64_t ferry_context_index(ferry_context *ctx) { return ctx ? ctx->index : -1; }

static ferry__rng *ctx_rng(ferry_context *ctx) {
    if (!ctx->rng_ready) {
        ferry__rng_seed(&ctx->rng, ferry__mix64(ctx->seed, (uint64_t)ctx->index));
        ctx->rng_ready = true;
    }
    return &ctx->rng;
}

uint64_t ferry_context_random(ferry_context *ctx) { return ctx ? ferry__rng_next(ctx_rng(ctx)) : 0; }
double ferry_context_uniform(ferry_context *ctx) { return ctx ? ferry__rng_uniform(ctx_rng(ctx)) : 0.0; }
bool ferry_context_cancelled(ferry_context *ctx) { return ctx && ferry__cancelled(ctx->cancel); }

/* A sleeping callback (waiting for I/O, a device, a rate limit) does not hold a core: on an
 * executor worker the sleep is marked blocked, and another worker may run meanwhile. */
int ferry_context_sleep(ferry_context *ctx, int64_t ns) {
    int64_t end = ferry__now_ns() + ns;
    bool blocked = ctx && ctx->rt && ns > 0 && ferry__exec_block_begin(&ctx->rt->exec);
    int rc;
    for (;;) {
        if (ctx && ferry__cancelled(ctx->cancel)) {
            rc = FERRY_ECANCELED;
            break;
        }
        int64_t left = end - ferry__now_ns();
        if (left <= 0) {
            rc = FERRY_OK;
            break;
        }
        ferry__sleep_ns(left < 2000000 ? left : 2000000);
    }
    /* A callback may hold a lock of its own that other calls wait for: go on at once. */
    if (ctx && ctx->rt) ferry__exec_block_end(&ctx->rt->exec, blocked, false);
    return rc;
}

int ferry_context_fail(ferry_context *ctx, int status, const char *fmt, ...) {
    if (status >= 0) status = FERRY_EUSER;
    if (ctx && ctx->st && fmt) {
        va_list ap;
        va_start(ap, fmt);
        ferry__failv(ctx->st, status, fmt, ap);
        va_end(ap);
    }
    return status;
}
