/*
 * rewrite.c - the pass that plans graph rewrites when an iterator is made.
 *
 * Datasets are immutable and shared between iterators (and threads), so a rewrite never edits
 * the graph. The pass walks the graph from the root, inputs before the nodes that read them, and
 * offers each node to its op's rule (ferry__dataset_vtable.rewrite) together with the inputs
 * that will run in place of its own (already rewritten). A rule may return a new dataset that
 * replaces the node for this pass; the plan records (node -> replacement) and holds the
 * replacement. ferry__iter_make then runs the replacement wherever the node is made (every
 * epoch of a repeat, every stage below), and the stats records list the nodes that run.
 *
 * The rules live with their ops (map -> batch becomes map_and_batch: ops/map_and_batch.c); they
 * may only replace a node by one whose output, errors in position and saved state are those of
 * the node it replaces. The replacement keeps the replaced node's state tag, so a state saved
 * with rewrites restores without them and the other way round.
 *
 * Cost: one visit per node (a DAG's shared nodes are visited once), at iterator creation only.
 */
#include "core.h"

/* The nodes visited so far (grown as needed: a DAG's shared nodes are visited once). */
typedef struct plan_seen_set {
    const ferry_dataset **v;
    size_t n, cap;
} plan_seen_set;

static bool plan_seen(const plan_seen_set *seen, const ferry_dataset *ds) {
    for (size_t i = 0; i < seen->n; i++)
        if (seen->v[i] == ds) return true;
    return false;
}

static int plan_add(ferry__plan *p, ferry_dataset *from, ferry_dataset *to, ferry__status *st) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 4;
        ferry_dataset **f = ferry__realloc(p->rt, p->from, cap * sizeof *f);
        if (f) p->from = f;
        ferry_dataset **t = f ? ferry__realloc(p->rt, p->to, cap * sizeof *t) : NULL;
        if (!t) {
            ferry_dataset_unref(to);
            return ferry__fail(st, FERRY_ENOMEM, "planning graph rewrites: out of memory");
        }
        p->to = t;
        p->cap = cap;
    }
    p->from[p->n] = from;
    p->to[p->n] = to;
    p->n++;
    return FERRY_OK;
}

/* Visits ds after its inputs. */
static int plan_visit(ferry__plan *p, ferry_dataset *ds, plan_seen_set *seen, ferry__status *st) {
    if (plan_seen(seen, ds)) return FERRY_OK;
    if (seen->n == seen->cap) {
        size_t cap = seen->cap ? 2 * seen->cap : 16;
        const ferry_dataset **v = ferry__realloc(p->rt, seen->v, cap * sizeof *v);
        if (!v) return ferry__fail(st, FERRY_ENOMEM, "planning graph rewrites: out of memory");
        seen->v = v;
        seen->cap = cap;
    }
    seen->v[seen->n++] = ds;
    for (size_t i = 0; i < ds->ninputs; i++) {
        int rc = plan_visit(p, ds->inputs[i], seen, st);
        if (rc) return rc;
    }
    if (!ds->vt->rewrite) return FERRY_OK;
    ferry_dataset *local[4] = {0}, **in = local;
    if (ds->ninputs > 4) {
        in = ferry__calloc(p->rt, ds->ninputs, sizeof *in);
        if (!in) return ferry__fail(st, FERRY_ENOMEM, "planning graph rewrites: out of memory");
    }
    for (size_t i = 0; i < ds->ninputs; i++) in[i] = ferry__plan_node(p, ds->inputs[i]);
    ferry_dataset *to = NULL;
    ds->vt->rewrite(ds, in, &to);
    if (in != local) ferry__free(p->rt, in);
    if (!to) return FERRY_OK;
    to->tag = ds->tag;
    return plan_add(p, ds, to, st);
}

int ferry__plan_build(ferry__plan *p, ferry_runtime *rt, ferry_dataset *root, bool enabled, ferry__status *st) {
    *p = (ferry__plan){.rt = rt, .enabled = enabled};
    if (!enabled) return FERRY_OK;
    plan_seen_set seen = {0};
    int rc = plan_visit(p, root, &seen, st);
    ferry__free(rt, seen.v);
    if (rc) ferry__plan_fini(p);
    return rc;
}

void ferry__plan_fini(ferry__plan *p) {
    if (!p->rt) return;
    for (size_t i = 0; i < p->n; i++) ferry_dataset_unref(p->to[i]);
    ferry__free(p->rt, p->from);
    ferry__free(p->rt, p->to);
    *p = (ferry__plan){.rt = p->rt, .enabled = p->enabled};
}

ferry_dataset *ferry__plan_node(const ferry__plan *plan, ferry_dataset *ds) {
    if (plan)
        for (size_t i = 0; i < plan->n; i++)
            if (plan->from[i] == ds) return plan->to[i];
    return ds;
}
