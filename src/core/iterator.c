/*
 * iterator.c - the iterator base (make, save, skip, free, stats flushing), the per-pipeline stats
 * records, anchors for ops that run ahead, and the public iterator API with saved state.
 *
 * A public ferry_iterator owns: a reference to the dataset graph, a root cancel scope, the stats
 * records of every node (ferry__pipe) and the root op iterator. Freeing it fires the root scope
 * (every async op below wakes and stops), then destroys the op tree top-down, each op joining
 * its own threads before destroying its input.
 *
 * The interrupt hook (ferry_iterator_options.interrupt): next publishes the iterator's
 * ferry__interrupt in a thread-local for the length of the call; the consumer-side waits of the
 * stages (ferry__consumer_wait) poll it from there, so only the thread inside next calls it.
 * A nonzero return fires the root scope, as free does first: every stage's wait ends with
 * FERRY_ECANCELED and its threads stop; the op tree stays until free. From then on the
 * iterator is "interrupted" (a flag only the iterating thread reads and writes): next and save
 * refuse at once, before touching the tree.
 *
 * Saved state, version 1 (integers little-endian):
 *   "FERRYST\0" | u32 version | u32 flags (0) | u64 pipeline fingerprint | u64 pipeline seed |
 *   u64 position (elements and errors handed out since the iteration began) | u64 payload size |
 *   payload | u64 FNV-1a of everything before it
 * The payload is the root op's state: each op writes a u32 tag (a hash of its name) and then its
 * own fields and its inputs' states, so a state restored against a different graph fails at the
 * first op that differs, and the fingerprint check catches different parameters first.
 */
#include "core.h"

#include <string.h>

/* ---- iterator base ---------------------------------------------------------------------- */
void *ferry__iter_alloc(ferry_dataset *ds, const ferry__ictx *ctx, const ferry__iter_vtable *vt, size_t size,
                        ferry__status *st) {
    FERRY_ASSERT(size >= sizeof(ferry__iter));
    ferry__iter *it = ferry__alloc(ds->rt, size);
    if (!it) {
        ferry__fail(st, FERRY_ENOMEM, "%s: allocating the iterator failed", ds->name);
        return NULL;
    }
    memset(it, 0, size);
    it->vt = vt;
    it->ds = ds;
    it->ctx = *ctx;
    it->stats = ctx->pipe ? ferry__pipe_node(ctx->pipe, ds) : NULL;
    atomic_fetch_add(&ds->rt->objects, 1);
    return it;
}

void ferry__iter_flush_stats(ferry__iter *it) {
    ferry__node_stats *s = it->stats;
    if (s) {
        if (it->l_elems) atomic_fetch_add_explicit(&s->elements, it->l_elems, memory_order_relaxed);
        if (it->l_bytes) atomic_fetch_add_explicit(&s->bytes, it->l_bytes, memory_order_relaxed);
        if (it->l_errors) atomic_fetch_add_explicit(&s->errors, it->l_errors, memory_order_relaxed);
        if (it->l_total_ns) atomic_fetch_add_explicit(&s->total_ns, it->l_total_ns, memory_order_relaxed);
    }
    it->l_elems = it->l_bytes = it->l_errors = it->l_total_ns = 0;
}

void ferry__iter_release(ferry__iter *it) {
    ferry_runtime *rt = it->ds->rt;
    ferry__iter_flush_stats(it);
    ferry__free(rt, it);
    atomic_fetch_sub(&rt->objects, 1);
}

uint32_t ferry__op_tag(const char *name) {
    uint64_t h = ferry__fnv64(FERRY__FNV_INIT, name, strlen(name));
    return (uint32_t)(h ^ (h >> 32));
}

int ferry__state_expect(ferry_dataset *ds, ferry__reader *state, ferry__status *st) {
    size_t off = ferry__r_offset(state);
    uint32_t tag;
    int rc = ferry__r_u32(state, &tag, st);
    if (rc) return rc;
    if (tag != ds->tag)
        return ferry__fail(st, FERRY_EMISMATCH,
                           "saved state does not match the pipeline: at state offset %zu the pipeline has op "
                           "'%s' but the state holds another op",
                           off, ds->name);
    return FERRY_OK;
}

int ferry__iter_make(ferry_dataset *ds, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                     ferry__status *st) {
    *out = NULL;
    if (ferry__cancelled(ctx->cancel))
        return ferry__fail(st, FERRY_ECANCELED, "%s: iterator is being destroyed", ds->name);
    if (state) {
        int rc = ferry__state_expect(ds, state, st);
        if (rc) return rc;
    }
    ds = ferry__plan_node(ctx->plan, ds); /* a rewrite's replacement keeps the tag */
    return ds->vt->make(ds, ctx, state, out, st);
}

int ferry__iter_save(ferry__iter *it, ferry__writer *w, ferry__status *st) {
    ferry__w_u32(w, it->ds->tag);
    int rc = it->vt->save(it, w, st);
    if (rc == FERRY_OK && w->failed)
        return ferry__fail(st, FERRY_ENOMEM, "%s: growing the state buffer failed", it->ds->name);
    return rc;
}

void ferry__iter_free(ferry__iter *it) {
    if (it) it->vt->destroy(it);
}

int ferry__iter_skip(ferry__iter *it, int64_t n, int64_t *skipped, ferry__status *st) {
    *skipped = 0;
    if (n <= 0) return FERRY_OK;
    if (it->vt->skip) return it->vt->skip(it, n, skipped, st);
    return ferry__iter_skip_by_next(it, n, skipped, st);
}

int ferry__iter_skip_by_next(ferry__iter *it, int64_t n, int64_t *skipped, ferry__status *st) {
    *skipped = 0;
    ferry__status tmp;
    while (*skipped < n) {
        ferry_element *e = NULL;
        int rc = it->vt->next(it, &e, &tmp);
        if (rc == FERRY_END) break;
        if (rc == FERRY_ECANCELED && ferry__cancelled(it->ctx.cancel)) return ferry__fail(st, rc, "%s", tmp.msg);
        ferry_element_free(e);
        (*skipped)++;
    }
    return FERRY_OK;
}

/* ---- stats records ---------------------------------------------------------------------- */
static size_t count_nodes(const ferry__plan *plan, ferry_dataset *ds, const ferry_dataset **seen, size_t n,
                          size_t cap) {
    ds = ferry__plan_node(plan, ds);
    for (size_t i = 0; i < n && i < cap; i++) /* cap 0: count every path (an upper bound) */
        if (seen[i] == ds) return n;
    if (seen && n < cap) seen[n] = ds;
    n++;
    for (size_t i = 0; i < ds->ninputs; i++) n = count_nodes(plan, ds->inputs[i], seen, n, cap);
    return n;
}

int ferry__pipe_init(ferry__pipe *p, ferry_runtime *rt, ferry_dataset *root, const ferry__plan *plan,
                     ferry__status *st) {
    p->rt = rt;
    if (ferry__mutex_init(&p->knobs_mu)) return ferry__fail(st, FERRY_ENOMEM, "creating the stats lock failed");
    p->mu_ok = true;
    /* Upper bound first (a DAG may repeat nodes), then the exact list. */
    size_t bound = 0;
    {
        const ferry_dataset *stack[1] = {0};
        bound = count_nodes(plan, root, stack, 0, 0);
    }
    const ferry_dataset **seen = ferry__calloc(rt, bound, sizeof *seen);
    if (!seen) return ferry__fail(st, FERRY_ENOMEM, "allocating the stats records failed");
    size_t n = count_nodes(plan, root, seen, 0, bound);
    p->nodes = ferry__calloc(rt, n, sizeof *p->nodes);
    if (!p->nodes) {
        ferry__free(rt, seen);
        return ferry__fail(st, FERRY_ENOMEM, "allocating the stats records failed");
    }
    p->n = n;
    for (size_t i = 0; i < n; i++) {
        p->nodes[i].ds = seen[i];
        p->nodes[i].parent = -1;
        p->nodes[i].first_input = -1;
        atomic_init(&p->nodes[i].work_ns, -1);
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < seen[i]->ninputs; k++) {
            for (size_t j = 0; j < n; j++) {
                if (seen[j] != ferry__plan_node(plan, seen[i]->inputs[k])) continue;
                if (p->nodes[j].parent < 0) p->nodes[j].parent = (int)i;
                if (k == 0) p->nodes[i].first_input = (int)j;
            }
        }
    }
    ferry__free(rt, seen);
    return FERRY_OK;
}

void ferry__pipe_knobs_register(ferry__pipe *p, ferry__node_stats *rec, ferry__knobs *k) {
    if (!p || !rec || !p->mu_ok) return;
    ferry__mutex_lock(&p->knobs_mu);
    k->serial = ++p->knobs_serial;
    rec->knobs = k;
    ferry__mutex_unlock(&p->knobs_mu);
}

void ferry__pipe_knobs_unregister(ferry__pipe *p, ferry__node_stats *rec, ferry__knobs *k) {
    if (!p || !rec || !p->mu_ok) return;
    ferry__mutex_lock(&p->knobs_mu);
    if (rec->knobs == k) rec->knobs = NULL;
    ferry__mutex_unlock(&p->knobs_mu);
}

int ferry__pipe_set_knobs(ferry__pipe *p, size_t node, int parallelism, int64_t buffer, int *par_max,
                          int64_t *buf_max) {
    if (node >= p->n || !p->mu_ok) return FERRY_ENOTFOUND;
    ferry__mutex_lock(&p->knobs_mu);
    ferry__knobs *k = p->nodes[node].knobs;
    if (k) {
        if (par_max) *par_max = k->parallelism_max;
        if (buf_max) *buf_max = k->buffer_max;
        k->set(k->stage, parallelism, buffer);
    }
    ferry__mutex_unlock(&p->knobs_mu);
    return k ? FERRY_OK : FERRY_ENOTFOUND;
}

int ferry__pipe_knobs_get(ferry__pipe *p, size_t node, ferry__knobs *out) {
    if (node >= p->n || !p->mu_ok) return FERRY_ENOTFOUND;
    ferry__mutex_lock(&p->knobs_mu);
    ferry__knobs *k = p->nodes[node].knobs;
    if (k) *out = *k;
    ferry__mutex_unlock(&p->knobs_mu);
    return k ? FERRY_OK : FERRY_ENOTFOUND;
}

void ferry__pipe_fini(ferry__pipe *p) {
    if (p->mu_ok) ferry__mutex_destroy(&p->knobs_mu);
    p->mu_ok = false;
    if (!p->nodes) return;
    ferry__free(p->rt, p->nodes);
    p->nodes = NULL;
}

ferry__node_stats *ferry__pipe_node(ferry__pipe *p, const ferry_dataset *ds) {
    for (size_t i = 0; i < p->n; i++)
        if (p->nodes[i].ds == ds) return &p->nodes[i];
    return NULL;
}

/* ---- anchors ---------------------------------------------------------------------------- */
int ferry__anchor_init(ferry__anchor *a, ferry_runtime *rt, int64_t period, ferry__status *st) {
    memset(a, 0, sizeof *a);
    a->rt = rt;
    a->period = period > 0 ? period : 64;
    if (ferry__mutex_init(&a->mu)) return ferry__fail(st, FERRY_ENOMEM, "creating an anchor lock failed");
    return FERRY_OK;
}

void ferry__anchor_fini(ferry__anchor *a) {
    for (size_t i = 0; i < a->n; i++) ferry__free(a->rt, a->snaps[i].data);
    ferry__free(a->rt, a->snaps);
    ferry__mutex_destroy(&a->mu);
    a->snaps = NULL;
    a->n = a->cap = 0;
}

/* Drops snapshots before the latest one at or before pos. Caller holds a->mu. */
static void prune_locked(ferry__anchor *a, int64_t pos) {
    size_t keep = 0;
    for (size_t i = 0; i < a->n; i++)
        if (a->snaps[i].pos <= pos) keep = i;
    if (keep == 0) return;
    for (size_t i = 0; i < keep; i++) ferry__free(a->rt, a->snaps[i].data);
    memmove(a->snaps, a->snaps + keep, (a->n - keep) * sizeof *a->snaps);
    a->n -= keep;
}

int ferry__anchor_take(ferry__anchor *a, ferry__iter *input, int64_t pos, bool force, ferry__status *st) {
    int64_t t0 = 0;
    if (!force) {
        /* Expensive positions (batches of decoded images) make a long replay after restore even
         * within one period: also snapshot when 2 ms passed. But a state that is costly to write
         * (a large shuffle buffer) is written at most once per 32 times its cost, whatever the
         * period or the clock, so that snapshots take at most ~3 % of the driving thread; a
         * restore then replays at most that long.
         * (Period 1, an input that cannot be replayed, is snapshotted at every position.) */
        t0 = ferry__now_ns();
        int64_t since = t0 - a->last_ns;
        if (since < 2000000 && pos < a->next_pos) return FERRY_OK;
        if (a->period > 1 && since < 32 * a->save_ns) {
            a->next_pos = pos + a->period; /* look again a period later, not at every position */
            return FERRY_OK;
        }
    }
    ferry__writer w;
    ferry__writer_init(&w, &a->rt->alloc);
    int rc = ferry__iter_save(input, &w, st);
    if (t0) {
        int64_t cost = ferry__now_ns() - t0;
        a->save_ns = a->save_ns ? a->save_ns + (cost - a->save_ns) / 4 : cost;
    }
    if (rc) {
        ferry__writer_fini(&w);
        return rc;
    }
    ferry__mutex_lock(&a->mu);
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 4;
        ferry__anchor_snap *s = ferry__realloc(a->rt, a->snaps, cap * sizeof *s);
        if (!s) {
            ferry__mutex_unlock(&a->mu);
            ferry__writer_fini(&w);
            return ferry__fail(st, FERRY_ENOMEM, "%s: growing the anchor list failed", input->ds->name);
        }
        a->snaps = s;
        a->cap = cap;
    }
    a->snaps[a->n].pos = pos;
    a->snaps[a->n].data = w.data;
    a->snaps[a->n].size = w.size;
    a->n++;
    ferry__mutex_unlock(&a->mu);
    a->next_pos = pos + a->period;
    a->last_ns = ferry__now_ns();
    return FERRY_OK;
}

void ferry__anchor_prune(ferry__anchor *a, int64_t consumer_pos) {
    ferry__mutex_lock(&a->mu);
    prune_locked(a, consumer_pos);
    ferry__mutex_unlock(&a->mu);
}

int ferry__anchor_write(ferry__anchor *a, int64_t consumer_pos, ferry__writer *w, ferry__status *st) {
    ferry__mutex_lock(&a->mu);
    prune_locked(a, consumer_pos);
    if (a->n == 0 || a->snaps[0].pos > consumer_pos) {
        ferry__mutex_unlock(&a->mu);
        return ferry__fail(st, FERRY_EMISUSE, "no input snapshot at or before position %lld (internal)",
                           (long long)consumer_pos);
    }
    ferry__w_u64(w, (uint64_t)(consumer_pos - a->snaps[0].pos));
    ferry__w_u64(w, a->snaps[0].size);
    ferry__w_bytes(w, a->snaps[0].data, a->snaps[0].size);
    ferry__mutex_unlock(&a->mu);
    return FERRY_OK;
}

int ferry__anchor_write_now(ferry__iter *input, ferry_runtime *rt, ferry__writer *w, const char *op,
                            ferry__status *st) {
    ferry__writer sub;
    ferry__writer_init(&sub, &rt->alloc);
    int rc = ferry__iter_save(input, &sub, st);
    if (rc == FERRY_OK && sub.failed) rc = ferry__fail(st, FERRY_ENOMEM, "%s: growing the state buffer failed", op);
    if (rc == FERRY_OK) {
        ferry__w_u64(w, 0);
        ferry__w_u64(w, sub.size);
        ferry__w_bytes(w, sub.data, sub.size);
    }
    ferry__writer_fini(&sub);
    return rc;
}

int ferry__anchor_restore(ferry_dataset *input, const ferry__ictx *ctx, ferry__reader *r, ferry__iter **out,
                          int64_t *replayed, ferry__status *st) {
    *out = NULL;
    uint64_t replay, size;
    int rc = ferry__r_u64(r, &replay, st);
    if (!rc) rc = ferry__r_u64(r, &size, st);
    if (rc) return rc;
    if (size > ferry__r_left(r) || replay > (uint64_t)INT64_MAX)
        return ferry__fail(st, FERRY_ECORRUPT,
                           "state corrupt: input snapshot at offset %zu claims %llu bytes, %zu left",
                           ferry__r_offset(r), (unsigned long long)size, ferry__r_left(r));
    ferry__reader sub = *r;
    sub.end = sub.p + size;
    rc = ferry__iter_make(input, ctx, &sub, out, st);
    if (rc) return rc;
    if (sub.p != sub.end) {
        ferry__iter_free(*out);
        *out = NULL;
        return ferry__fail(st, FERRY_ECORRUPT, "state corrupt: %zu unread bytes in the input snapshot at offset %zu",
                           (size_t)(sub.end - sub.p), ferry__r_offset(&sub));
    }
    r->p = sub.end;
    int64_t skipped = 0;
    rc = ferry__iter_skip(*out, (int64_t)replay, &skipped, st);
    if (rc) {
        ferry__iter_free(*out);
        *out = NULL;
        return rc;
    }
    if (replayed) *replayed = skipped;
    return FERRY_OK;
}

/* ---- the interrupt hook ------------------------------------------------------------------ */
struct ferry__interrupt {
    int (*fn)(void *user); /* NULL: the iterator has no hook */
    void *user;
    ferry__cancel *root; /* the iterator's root scope, fired when fn returns nonzero */
    int64_t poll_ns;     /* when the next poll is due in this call to next (0: not waiting yet) */
    bool fired;          /* fn returned nonzero: the iterator is interrupted */
};

static _Thread_local ferry__interrupt *interrupt_now; /* the hook of the next in progress here */

ferry__interrupt *ferry__interrupt_swap(ferry__interrupt *ir) {
    ferry__interrupt *old = interrupt_now;
    interrupt_now = ir;
    return old;
}

static bool scope_under(const ferry__cancel *c, const ferry__cancel *root) {
    while (c->parent) c = c->parent;
    return c == root;
}

bool ferry__consumer_wait(ferry__stage *s, int64_t timeout_ns) {
    ferry__interrupt *ir = interrupt_now;
    if (!ir || ir->fired || !scope_under(&s->scope, ir->root)) {
        if (timeout_ns > 0) return ferry__cond_timedwait(&s->cv_cons, &s->mu, timeout_ns);
        ferry__cond_wait(&s->cv_cons, &s->mu);
        return true;
    }
    int64_t now = ferry__now_ns();
    if (ir->poll_ns == 0) ir->poll_ns = now + FERRY__INTERRUPT_POLL_NS;
    int64_t left = ir->poll_ns - now;
    if (timeout_ns > 0 && timeout_ns < left) return ferry__cond_timedwait(&s->cv_cons, &s->mu, timeout_ns);
    if (left > 0 && ferry__cond_timedwait(&s->cv_cons, &s->mu, left)) return true;
    /* The hook may take long (a binding takes its interpreter's lock): never under mu. Firing
     * takes the scopes' locks and then the stages' (this one's too). */
    ferry__mutex_unlock(&s->mu);
    if (ir->fn(ir->user) != 0) {
        ir->fired = true;
        ferry__cancel_fire(ir->root);
    }
    ir->poll_ns = ferry__now_ns() + FERRY__INTERRUPT_POLL_NS;
    ferry__mutex_lock(&s->mu);
    return true;
}

/* ---- public iterator -------------------------------------------------------------------- */
struct ferry_iterator {
    _Atomic uint32_t magic; /* FERRY__MAGIC_ITERATOR while it lives */
    ferry_runtime *rt;
    ferry_dataset *ds;
    ferry__plan plan;
    ferry__pipe pipe;
    ferry__cancel cancel;
    ferry__iter *root;
    ferry__status st;
    uint64_t seed;
    int64_t position; /* positions handed out (elements and errors) since the pass began */
    _Atomic int busy;
    ferry__consumer_clock clock; /* the consumer's side of next, for the report */
    int64_t created_ns;
    ferry__autotune *tune; /* the closed-loop autotuner, or NULL (no stage asked) */
    int tune_looks;        /* windows left in which to look for stages to tune */
    ferry__interrupt intr; /* the options' interrupt hook (fn NULL: none) */
};

static void iterator_close(ferry_iterator *it) {
    ferry_runtime *rt = it->rt;
    ferry__cancel_fire(&it->cancel);
    ferry__iter_free(it->root);
    ferry__autotune_free(it->tune);
    ferry__cancel_fini(&it->cancel);
    ferry__pipe_fini(&it->pipe);
    ferry__plan_fini(&it->plan);
    ferry_dataset_unref(it->ds);
    atomic_store(&it->magic, FERRY__MAGIC_DEAD);
    ferry__free(rt, it);
}

static int iterator_open(ferry_dataset *ds, const ferry_iterator_options *opts, ferry__reader *state, uint64_t seed,
                         ferry_iterator **out, const char *fn) {
    ferry_runtime *rt = ds->rt;
    ferry_iterator *it = ferry__calloc(rt, 1, sizeof *it);
    if (!it) return ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the iterator failed", fn);
    atomic_init(&it->magic, FERRY__MAGIC_ITERATOR);
    it->rt = rt;
    it->seed = seed;
    it->created_ns = ferry__now_ns();
    it->ds = ferry_dataset_ref(ds);
    it->intr.fn = opts ? opts->interrupt : NULL;
    it->intr.user = opts ? opts->interrupt_user : NULL;
    it->intr.root = &it->cancel;
    ferry__status st;
    if (ferry__cancel_init(&it->cancel, NULL)) {
        ferry_dataset_unref(it->ds);
        ferry__free(rt, it);
        return ferry__set_last_error(FERRY_ENOMEM, "%s: creating the cancel scope failed", fn);
    }
    /* A plan that cannot be made (out of memory) only means no rewrite: the graph runs as written. */
    if (ferry__plan_build(&it->plan, rt, ds, !(opts && opts->no_rewrites), &st) != FERRY_OK)
        it->plan = (ferry__plan){.rt = rt};
    int rc = ferry__pipe_init(&it->pipe, rt, ds, &it->plan, &st);
    if (!rc) {
        ferry__ictx ctx = {.rt = rt,
                           .cancel = &it->cancel,
                           .pipe = &it->pipe,
                           .seed = seed,
                           .pipeline_seed = seed,
                           .epoch0_seed = seed,
                           .warm_start = opts && opts->warm_start,
                           .plan = &it->plan};
        rc = ferry__iter_make(ds, &ctx, state, &it->root, &st);
    }
    if (rc == FERRY_OK && state && state->p != state->end) {
        ferry__fail(&st, FERRY_ECORRUPT, "state corrupt: %zu bytes left over after the pipeline's state",
                    (size_t)(state->end - state->p));
        rc = FERRY_ECORRUPT;
    }
    if (rc) {
        iterator_close(it);
        return ferry__set_last_error(rc, "%s: %s", fn, st.msg);
    }
    /* The autotuner, if a stage runs ahead (it moves the knobs of stages given FERRY_AUTOTUNE,
     * and grants the executor workers for any stage's blocked threads; stages that register
     * their knobs only once they run are looked for in the first windows too). Without memory
     * for it the pipeline runs untuned. */
    (void)ferry__autotune_new(it, &it->tune);
    it->tune_looks = it->tune ? 0 : 8;
    atomic_fetch_add(&rt->objects, 1);
    *out = it;
    return FERRY_OK;
}

int ferry_iterator_create(ferry_dataset *ds, const ferry_iterator_options *opts, ferry_iterator **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    int rc = ferry__check_dataset(ds, __func__, "ds");
    if (rc) return rc;
    return iterator_open(ds, opts, NULL, opts ? opts->seed : 0, out, __func__);
}

int ferry_iterator_next(ferry_iterator *it, ferry_element **out) {
    if (out) *out = NULL;
    int crc = ferry__check_iterator(it, __func__);
    if (crc) return crc;
    if (!out) return ferry__fail(&it->st, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    int expected = 0;
    if (!atomic_compare_exchange_strong(&it->busy, &expected, 1))
        return FERRY_EMISUSE; /* another thread is inside next: leave its message alone */
    if (it->intr.fired) {
        atomic_store(&it->busy, 0);
        return ferry__fail(&it->st, FERRY_ECANCELED, "%s: interrupted", __func__);
    }
    ferry__consumer_clock *c = &it->clock;
    int64_t t0 = 0;
    bool timed = c->time_all || (++c->calls & (FERRY__CLOCK_SAMPLE - 1)) == 0 || c->first_ns == 0;
    if (timed) {
        t0 = ferry__now_ns();
        if (c->first_ns == 0) c->first_ns = t0;
    }
    ferry__interrupt *outer = NULL;
    if (it->intr.fn) {
        it->intr.poll_ns = 0;
        outer = ferry__interrupt_swap(&it->intr); /* a next inside a callback has its own */
    }
    int rc = ferry__iter_next(it->root, out, &it->st);
    if (it->intr.fn) {
        ferry__interrupt_swap(outer);
        if (it->intr.fired) { /* whatever the stage returned: the iterator is cancelled */
            ferry_element_free(*out);
            *out = NULL;
            atomic_store(&it->busy, 0);
            return ferry__fail(&it->st, FERRY_ECANCELED, "%s: interrupted", __func__);
        }
    }
    if (timed) {
        int64_t t1 = ferry__now_ns();
        ferry__consumer_clock_add(c, t1 - t0);
        if (it->rt->trace) ferry__trace_next(it->rt, t0, t1);
        if (it->tune) {
            ferry__autotune_tick(it->tune, t1);
        } else if (it->tune_looks > 0 && t1 - c->first_ns >= (int64_t)(9 - it->tune_looks) * 100000000) {
            it->tune_looks--;
            (void)ferry__autotune_new(it, &it->tune);
        }
    }
    if (rc == FERRY_END && c->end_ns == 0) c->end_ns = ferry__now_ns();
    if (rc != FERRY_END) it->position++;
    if (rc >= 0) {
        it->st.code = rc;
        it->st.msg[0] = '\0';
    } else {
        it->st.code = rc;
        if (*out) { /* an op broke the protocol; never hand out data with an error */
            ferry_element_free(*out);
            *out = NULL;
        }
    }
    atomic_store(&it->busy, 0);
    return rc;
}

const char *ferry_iterator_error(const ferry_iterator *it) { return it ? it->st.msg : ""; }

ferry__pipe *ferry__iterator_pipe(ferry_iterator *it) { return &it->pipe; }
const ferry__consumer_clock *ferry__iterator_clock(const ferry_iterator *it) { return &it->clock; }
const ferry__autotune *ferry__iterator_autotune(const ferry_iterator *it) { return it->tune; }

int ferry_iterator_tuning(ferry_iterator *it, ferry_tune_decision *out, size_t cap, size_t *count) {
    int crc = ferry__check_iterator(it, __func__);
    if (crc) return crc;
    if (!count) return ferry__fail(&it->st, FERRY_EINVAL, "%s: argument 'count' is NULL", __func__);
    if (cap > 0 && !out)
        return ferry__fail(&it->st, FERRY_EINVAL, "%s: argument 'out' is NULL with cap %zu", __func__, cap);
    return ferry__tuner_log(ferry__autotune_tuner(it->tune), out, cap, count);
}

const char *ferry_tune_outcome_name(ferry_tune_outcome outcome) { return ferry__tune_outcome_name(outcome); }

/* Timed calls count for FERRY__CLOCK_SAMPLE calls each, unless every call is timed: for 64
 * calls after one over 20 us (batches of real work, where two clock reads are nothing and one
 * preempted sample must not count for sixteen; or waits among quick calls, which a sample would
 * miss or count sixteen times). */
void ferry__consumer_clock_add(ferry__consumer_clock *c, int64_t ns) {
    int64_t weight = c->time_all || !c->first_timed ? 1 : FERRY__CLOCK_SAMPLE;
    c->first_timed = true;
    c->in_next_ns += weight * ns;
    c->hist[ferry__wait_bucket(ns)] += weight;
    if (ns > 20000) c->time_all = 64;
    else if (c->time_all) c->time_all--;
}

int ferry__check_iterator(const ferry_iterator *it, const char *fn) {
    if (!it) return ferry__set_last_error(FERRY_EINVAL, "%s: argument 'it' is NULL", fn);
    if (atomic_load(&((ferry_iterator *)it)->magic) != FERRY__MAGIC_ITERATOR)
        return ferry__set_last_error(FERRY_EMISUSE,
                                     "%s: argument 'it' is not a live iterator (it was freed, or it is not a "
                                     "ferry_iterator)",
                                     fn);
    return FERRY_OK;
}

void ferry_iterator_free(ferry_iterator *it) {
    if (!it || atomic_load(&it->magic) != FERRY__MAGIC_ITERATOR) return; /* freed twice: nothing to do */
    ferry_runtime *rt = it->rt;
    iterator_close(it);
    atomic_fetch_sub(&rt->objects, 1);
}

int ferry_iterator_stats(ferry_iterator *it, ferry_stage_stats *out, size_t cap, size_t *count) {
    int crc = ferry__check_iterator(it, __func__);
    if (crc) return crc;
    if (!count) return ferry__fail(&it->st, FERRY_EINVAL, "%s: argument 'count' is NULL", __func__);
    if (cap > 0 && !out)
        return ferry__fail(&it->st, FERRY_EINVAL, "%s: argument 'out' is NULL with cap %zu", __func__, cap);
    ferry__iter_flush_stats(it->root);
    ferry__pipe *p = &it->pipe;
    *count = p->n;
    for (size_t i = 0; i < p->n && i < cap; i++) {
        ferry__node_stats *s = &p->nodes[i];
        ferry_stage_stats *o = &out[i];
        memset(o, 0, sizeof *o);
        snprintf(o->name, sizeof o->name, "%s", FERRY__LABEL(s->ds));
        snprintf(o->op, sizeof o->op, "%s", s->ds->name);
        o->node = (int)i;
        o->input = s->first_input;
        o->elements_out = atomic_load(&s->elements);
        o->bytes_out = atomic_load(&s->bytes);
        o->errors_out = atomic_load(&s->errors);
        o->errors_dropped = atomic_load(&s->dropped);
        int64_t work = atomic_load(&s->work_ns);
        o->assemble_ns = atomic_load(&s->assemble_ns);
        if (work < 0) { /* inline: its own time is its time in next() less its inputs' */
            work = atomic_load(&s->total_ns);
            for (size_t j = 0; j < p->n; j++)
                if (p->nodes[j].parent == (int)i) work -= atomic_load(&p->nodes[j].total_ns);
            if (work < 0) work = 0;
            if (s->ds->assembles) {
                o->assemble_ns += work;
                work = 0;
            }
        }
        o->work_ns = work;
        o->lock_wait_ns = atomic_load(&s->lock_wait_ns);
        o->wait_input_ns = atomic_load(&s->wait_input_ns);
        o->wait_consumer_ns = atomic_load(&s->wait_consumer_ns);
        o->idle_full_ns = atomic_load(&s->idle_full_ns);
        o->thread_ns = atomic_load(&s->run_ns);
        int64_t live = atomic_load(&s->runs_live), live_start = atomic_load(&s->runs_live_start);
        if (live > 0) { /* runs in progress count up to now (the two loads may tear: clamped) */
            int64_t now = ferry__now_ns(), more = live * (now - it->rt->exec.epoch_ns) - live_start;
            if (more > 0 && more <= live * (now - it->created_ns)) o->thread_ns += more;
        }
        int64_t srun = atomic_load(&s->sample_run_ns), scpu = atomic_load(&s->sample_cpu_ns);
        int64_t srunq = atomic_load(&s->sample_runq_ns);
        o->cpu_ns = srun > 0 ? (int64_t)((double)o->thread_ns * ((double)scpu / (double)srun)) : 0;
        o->cpu_wait_ns = srun > 0 ? (int64_t)((double)o->thread_ns * ((double)srunq / (double)srun)) : 0;
        /* the samples' clocks are read a little apart: keep the parts within the whole */
        o->cpu_ns = FERRY__MAX((int64_t)0, FERRY__MIN(o->cpu_ns, o->thread_ns));
        o->cpu_wait_ns = FERRY__MAX((int64_t)0, FERRY__MIN(o->cpu_wait_ns, o->thread_ns - o->cpu_ns));
        o->buffered_elements = atomic_load(&s->buffered_elements);
        o->buffered_bytes = atomic_load(&s->buffered_bytes);
        o->buffer_capacity = atomic_load(&s->capacity);
        o->parallelism = atomic_load(&s->parallelism);
    }
    return FERRY_OK;
}

/* ---- saved state ------------------------------------------------------------------------ */
struct ferry_blob {
    ferry_runtime *rt;
    size_t size;
    uint8_t *data;
};

ferry_blob *ferry__blob_new(ferry_runtime *rt, void *data, size_t size) {
    ferry_blob *b = ferry__alloc(rt, sizeof *b);
    if (!b) return NULL;
    b->rt = rt;
    b->data = data;
    b->size = size;
    return b;
}

ferry__status *ferry__iterator_status(ferry_iterator *it) { return &it->st; }
ferry_runtime *ferry__iterator_runtime(ferry_iterator *it) { return it->rt; }

const void *ferry_blob_data(const ferry_blob *b) { return b ? b->data : NULL; }
size_t ferry_blob_size(const ferry_blob *b) { return b ? b->size : 0; }
void ferry_blob_free(ferry_blob *b) {
    if (!b) return;
    ferry__free(b->rt, b->data);
    ferry__free(b->rt, b);
}

static const char state_magic[8] = {'F', 'E', 'R', 'R', 'Y', 'S', 'T', 0};
#define STATE_VERSION 2u /* 2: cache states hold their content seed; take and skip count elements */
#define STATE_HEADER 48

int ferry_iterator_save(ferry_iterator *it, ferry_blob **out) {
    if (out) *out = NULL;
    int crc = ferry__check_iterator(it, __func__);
    if (crc) return crc;
    if (!out) return ferry__fail(&it->st, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    if (it->intr.fired)
        return ferry__fail(&it->st, FERRY_ECANCELED,
                           "%s: the iterator was interrupted (its interrupt hook returned nonzero) and its stages "
                           "stopped: there is no position to save; save before, or restore from an earlier state",
                           __func__);
    ferry__writer w;
    ferry__writer_init(&w, &it->rt->alloc);
    ferry__w_bytes(&w, state_magic, 8);
    ferry__w_u32(&w, STATE_VERSION);
    ferry__w_u32(&w, 0);
    ferry__w_u64(&w, ferry__dataset_fingerprint(it->ds));
    ferry__w_u64(&w, it->seed);
    ferry__w_u64(&w, (uint64_t)it->position);
    ferry__w_u64(&w, 0); /* payload size, patched below */
    ferry__status st;
    int rc = ferry__iter_save(it->root, &w, &st);
    if (rc == FERRY_OK && w.failed) rc = ferry__fail(&st, FERRY_ENOMEM, "growing the state buffer failed");
    if (rc == FERRY_OK) {
        uint64_t payload = w.size - STATE_HEADER;
        ferry__store_le64(w.data + STATE_HEADER - 8, payload);
        ferry__w_u64(&w, ferry__fnv64(FERRY__FNV_INIT, w.data, w.size));
        if (w.failed) rc = ferry__fail(&st, FERRY_ENOMEM, "growing the state buffer failed");
    }
    ferry_blob *b = NULL;
    if (rc == FERRY_OK) {
        b = ferry__alloc(it->rt, sizeof *b);
        if (!b) rc = ferry__fail(&st, FERRY_ENOMEM, "allocating the state blob failed");
    }
    if (rc) {
        ferry__writer_fini(&w);
        ferry__status_prefix(&st, __func__);
        ferry__status_copy(&it->st, &st);
        return rc;
    }
    b->rt = it->rt;
    b->data = w.data;
    b->size = w.size;
    *out = b;
    return FERRY_OK;
}

int ferry__state_parse_header(const void *state, size_t size, ferry_state_info *info, ferry__reader *payload,
                              ferry__status *st) {
    const uint8_t *p = state;
    if (size < 8 || memcmp(p, state_magic, 8) != 0)
        return ferry__fail(st, FERRY_ECORRUPT, "not a ferry iterator state (bad magic at offset 0)");
    if (size < STATE_HEADER + 8)
        return ferry__fail(st, FERRY_ETRUNCATED, "state truncated: %zu bytes, the header alone needs %d", size,
                           STATE_HEADER + 8);
    ferry__reader r;
    ferry__reader_init(&r, state, size);
    r.p += 8;
    uint32_t version = 0, flags = 0;
    uint64_t fingerprint = 0, seed = 0, position = 0, payload_size = 0;
    ferry__r_u32(&r, &version, st);
    ferry__r_u32(&r, &flags, st);
    ferry__r_u64(&r, &fingerprint, st);
    ferry__r_u64(&r, &seed, st);
    ferry__r_u64(&r, &position, st);
    ferry__r_u64(&r, &payload_size, st);
    if (version > STATE_VERSION)
        return ferry__fail(st, FERRY_EVERSION, "state format version %u is newer than this library's %u; upgrade ferry",
                           version, STATE_VERSION);
    if (version == 1)
        return ferry__fail(st, FERRY_EVERSION,
                           "state format version 1 was written by ferry 0.1 before the cache kept "
                           "its content seed and take and skip counted elements; this library reads version %u: "
                           "start the pass again",
                           STATE_VERSION);
    if (version == 0 || flags != 0 || position > (uint64_t)INT64_MAX)
        return ferry__fail(st, FERRY_ECORRUPT, "state corrupt: bad version, flags or position in the header");
    if (payload_size != size - STATE_HEADER - 8) {
        if (payload_size > size - STATE_HEADER - 8)
            return ferry__fail(st, FERRY_ETRUNCATED,
                               "state truncated: payload of %llu bytes but only %zu follow the header",
                               (unsigned long long)payload_size, size - STATE_HEADER - 8);
        return ferry__fail(st, FERRY_ECORRUPT, "state corrupt: payload of %llu bytes but %zu follow the header",
                           (unsigned long long)payload_size, size - STATE_HEADER - 8);
    }
    uint64_t sum = ferry__load_le64(p + size - 8);
    if (sum != ferry__fnv64(FERRY__FNV_INIT, p, size - 8))
        return ferry__fail(st, FERRY_ECORRUPT, "state corrupt: checksum mismatch over %zu bytes", size - 8);
    if (info) {
        info->version = version;
        info->fingerprint = fingerprint;
        info->seed = seed;
        info->position = (int64_t)position;
        info->size = size;
        info->payload_size = (size_t)payload_size;
    }
    if (payload) {
        ferry__reader_init(payload, state, size - 8);
        payload->p += STATE_HEADER;
    }
    return FERRY_OK;
}

int ferry_state_info_get(const void *state, size_t size, ferry_state_info *out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(state != NULL || size == 0, FERRY_EINVAL, "%s: argument 'state' is NULL", __func__);
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    ferry__status st;
    int rc = ferry__state_parse_header(state, size, out, NULL, &st);
    if (rc) return ferry__set_last_error(rc, "%s: %s", __func__, st.msg);
    return FERRY_OK;
}

uint64_t ferry_dataset_fingerprint(const ferry_dataset *ds) { return ds ? ferry__dataset_fingerprint(ds) : 0; }

int ferry_iterator_restore(ferry_dataset *ds, const void *state, size_t size, const ferry_iterator_options *opts,
                           ferry_iterator **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    int rc = ferry__check_dataset(ds, __func__, "ds");
    if (rc) return rc;
    FERRY__CHECK_ARG(state != NULL, FERRY_EINVAL, "%s: argument 'state' is NULL", __func__);
    ferry__status st;
    ferry_state_info info;
    ferry__reader r;
    rc = ferry__state_parse_header(state, size, &info, &r, &st);
    if (rc) return ferry__set_last_error(rc, "%s: %s", __func__, st.msg);
    uint64_t fp = info.fingerprint, seed = info.seed;
    uint64_t mine = ferry__dataset_fingerprint(ds);
    if (fp != mine)
        return ferry__set_last_error(FERRY_EMISMATCH,
                                     "%s: the state was saved from another pipeline (fingerprint "
                                     "%016llx, this pipeline is %016llx)",
                                     __func__, (unsigned long long)fp, (unsigned long long)mine);
    if (opts && opts->seed != 0 && opts->seed != seed)
        return ferry__set_last_error(FERRY_EMISMATCH, "%s: options.seed is %llu but the state was saved with seed %llu",
                                     __func__, (unsigned long long)opts->seed, (unsigned long long)seed);
    rc = iterator_open(ds, opts, &r, seed, out, __func__);
    if (rc == FERRY_OK) (*out)->position = info.position;
    return rc;
}
