/*
 * report.c - the verdict: which stage limits an iterator's throughput, why, what to change, and
 * what that would gain (ferry_iterator_report, and its JSON form).
 *
 * The model (after Plumber, MLSys'22: measured per-stage rates and a linear program over the
 * cores), from the stats records and the consumer's clock (core.h):
 *   - N elements handed out in W seconds of wall time since the first next; the consumer spent
 *     I of them inside next (sampled) and W - I in its own code (the training step).
 *   - Each stage that runs ahead (prefetch, parallel map, map_and_batch, parallel interleave)
 *     is a group: its k threads and the inline stages below it, down to the next stage that
 *     runs ahead, whose next() its threads call. The executor timed the group's runs (T, less
 *     the waits for room or budget, which are the consumer's doing) and sampled their CPU time
 *     (C) and its waits for a core (Q). Per element handed out, the group needs t = T / N of thread time and c = C / N of CPU.
 *     With k threads it can deliver k / t elements per second; its threads were busy
 *     u = T / (k W) of the time, computing C / T of that and waiting for a core Q / T.
 *   - The consumer's thread is a group too: the training step (W - I) plus the inline stages
 *     above the first stage that runs ahead (B, their own time in next).
 * The verdict:
 *   - nothing runs ahead and the inline stages take over a tenth of the wall time: they limit
 *     (FERRY_LIMIT_INLINE), the slowest one named;
 *   - the consumer waited under a tenth of the wall time: the training step limits
 *     (FERRY_LIMIT_CONSUMER), and the pipeline keeps up;
 *   - else the group with the lowest k / t, if its threads were busy over half the time:
 *     FERRY_LIMIT_STAGE_CPU when they computed or waited for a core most of it,
 *     FERRY_LIMIT_STAGE_WAIT when they were mostly blocked (I/O, sleeping calls: more threads
 *     than cores help);
 *   - else FERRY_LIMIT_MACHINE: the consumer waits though no stage's threads were busy, so the
 *     threads did not get the cores.
 * The bound (the linear program's optimum, solved in closed form): the most elements per second
 * r such that the consumer's thread keeps up (r (W - I + B) / N <= 1), the CPU of every group
 * and of the consumer fits the cpu budget (r (sum c + (W - I + B) / N) <= cpu_budget), and no
 * group needs more threads than it may have (r t <= its largest parallelism: 1 for a prefetch).
 * A group that waits needs threads for its wall time and cores only for its CPU. The threads
 * suggested for the limiting stage are r t, rounded up (for a stage that waits, at most four
 * times what it has: how far more threads pay against a disk or a server is not measured). The headspace is what the groups deliver
 * with their present threads if the consumer took nothing: min(k / t) over the groups, and
 * within the cpu budget.
 *
 * Everything here reads counters; nothing is changed. Call on the thread that iterates.
 */
#include "core.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define REPORT_MIN_NS 1000000 /* less than 1 ms of iteration: too little to say anything */
#define REPORT_WAIT_SHARE 0.10
#define REPORT_BUSY 0.5
#define REPORT_WAIT_GROWTH 4.0

static const char *const limit_names[] = {"unknown", "consumer", "stage_cpu", "stage_wait", "inline", "machine"};

/* The nearest ancestor of node i that runs ahead, or -1. */
static int owner_of(const ferry_stage_stats *s, const ferry__pipe *pipe, int i) {
    for (int p = pipe->nodes[i].parent; p >= 0; p = pipe->nodes[p].parent)
        if (s[p].thread_ns > 0 || s[p].parallelism > 0) return p;
    return -1;
}

static int64_t own_ns(const ferry_stage_stats *s) { return s->work_ns + s->assemble_ns + s->lock_wait_ns; }

static void add_text(char *buf, size_t cap, const char *fmt, ...) FERRY_PRINTF(3, 4);
static void add_text(char *buf, size_t cap, const char *fmt, ...) {
    size_t n = strlen(buf);
    if (n + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, cap - n, fmt, ap);
    va_end(ap);
}

/* A duration in words: "850 ns", "12.3 us", "4.56 ms", "1.23 s". */
static void fmt_time(char *out, size_t cap, double s) {
    if (s < 1e-6) snprintf(out, cap, "%.0f ns", s * 1e9);
    else if (s < 1e-3) snprintf(out, cap, "%.1f us", s * 1e6);
    else if (s < 1.0) snprintf(out, cap, "%.2f ms", s * 1e3);
    else snprintf(out, cap, "%.2f s", s);
}

/* A ratio in words: "1.56x", "12x". */
static void fmt_ratio(char *out, size_t cap, double x) {
    if (x < 10) snprintf(out, cap, "%.2fx", x);
    else snprintf(out, cap, "%.0fx", x);
}

static int64_t percentile(const ferry__consumer_clock *c, double q) {
    int64_t total = 0;
    for (int b = 0; b < FERRY__WAIT_BUCKETS; b++) total += c->hist[b];
    if (total == 0) return 0;
    int64_t want = (int64_t)ceil(q * (double)total), run = 0;
    for (int b = 0; b < FERRY__WAIT_BUCKETS; b++) {
        run += c->hist[b];
        if (run >= want) { /* the middle of the bucket */
            int64_t lo = ferry__wait_bucket_lower(b);
            int64_t hi = b + 1 < FERRY__WAIT_BUCKETS ? ferry__wait_bucket_lower(b + 1) : lo * 2;
            return b == 0 ? 32 : (lo + hi) / 2;
        }
    }
    return 0;
}

/* The groups, the bound and the headspace (core.h, ferry__model). */
void ferry__model_build(ferry__model *m, ferry__mgroup *g, const ferry_stage_stats *s, size_t n, ferry__pipe *pipe,
                        double wall, double in_next, int cpu_budget_) {
    memset(m, 0, sizeof *m);
    m->g = g;
    m->n = n;
    m->worst = -1;
    memset(g, 0, (n + 1) * sizeof *g);
    if (in_next > wall) in_next = wall;
    int64_t elems = n ? s[0].elements_out : 0;
    /* Groups: g[0] the consumer's thread, g[1 + i] the stage i if it runs ahead. */
    g[0].owner = -1;
    g[0].busiest_inline = -1;
    g[0].k = g[0].kmax = 1;
    double inline_top = 0.0; /* own time of the inline stages on the consumer's thread */
    for (size_t i = 0; i < n; i++) {
        ferry__mgroup *gi = &g[1 + i];
        gi->owner = -2; /* not a group */
        gi->busiest_inline = -1;
        if (s[i].thread_ns > 0 || s[i].parallelism > 0) {
            m->any_ahead = true;
            gi->owner = (int)i;
            gi->k = s[i].parallelism > 0 ? (double)s[i].parallelism : 1.0;
            /* the most threads its op runs if asked (1 for prefetch), from its knobs while it
             * runs; else its present count */
            ferry__knobs kn;
            if (ferry__pipe_knobs_get(pipe, i, &kn) == FERRY_OK && kn.parallelism_limit > 0)
                gi->kmax = kn.parallelism_limit;
            else gi->kmax = gi->k;
            double run = (double)(s[i].thread_ns - s[i].wait_consumer_ns) * 1e-9;
            if (run < 0) run = 0;
            double cpu = (double)s[i].cpu_ns * 1e-9, runq = (double)s[i].cpu_wait_ns * 1e-9;
            if (cpu > run) cpu = run;
            gi->runq_share = run > 0 ? fmin(runq / run, 1.0 - cpu / run) : 0.0;
            gi->t = elems > 0 ? run / (double)elems : 0.0;
            gi->c = elems > 0 ? cpu / (double)elems : 0.0;
            gi->busy = wall > 0 ? run / (gi->k * wall) : 0.0;
            gi->cpu_share = run > 0 ? cpu / run : 0.0;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (g[1 + i].owner >= 0) continue; /* a stage that runs ahead: its own group */
        int o = owner_of(s, pipe, (int)i);
        ferry__mgroup *go = o < 0 ? &g[0] : &g[1 + o];
        int64_t own = own_ns(&s[i]);
        if (o < 0) inline_top += (double)own * 1e-9;
        if (own > go->inline_ns) {
            go->inline_ns = own;
            go->busiest_inline = (int)i;
        }
    }
    double consumer_own = wall - in_next; /* the training step and the user's code */
    if (consumer_own < 0) consumer_own = 0;
    double waited = in_next - inline_top;
    if (waited < 0) waited = 0;
    m->elems = elems;
    m->wall = wall;
    m->inline_top = inline_top;
    m->consumer_own = consumer_own;
    m->waited = waited;
    m->wait_share = wall > 0 ? waited / wall : 0.0;
    if (elems > 0) {
        g[0].t = (consumer_own + inline_top) / (double)elems;
        g[0].c = g[0].t;
    }

    /* The bound and the headspace. */
    double cpu_budget = cpu_budget_ > 0 ? (double)cpu_budget_ : 1.0;
    double bound = g[0].t > 0 ? 1.0 / g[0].t : INFINITY;
    double cpu_sum = g[0].c, cpu_producers = inline_top / (elems > 0 ? (double)elems : 1.0);
    double head = inline_top > 0 && elems > 0 ? (double)elems / inline_top : INFINITY;
    double worst_rate = INFINITY;
    for (size_t i = 0; i < n; i++) {
        const ferry__mgroup *gi = &g[1 + i];
        if (gi->owner < 0 || gi->t <= 0) continue;
        cpu_sum += gi->c;
        cpu_producers += gi->c;
        bound = fmin(bound, gi->kmax / gi->t);
        head = fmin(head, gi->k / gi->t);
        if (gi->k / gi->t < worst_rate) {
            worst_rate = gi->k / gi->t;
            m->worst = (int)i;
        }
    }
    if (cpu_sum > 0) bound = fmin(bound, cpu_budget / cpu_sum);
    if (cpu_producers > 0) head = fmin(head, cpu_budget / cpu_producers);
    m->cpu_per_elem = cpu_sum;
    m->bound = bound;
    m->head = head;
}

/* The stages' stats and the report; *stats_out (may be NULL) gets the stats
 * array (freed by the caller). */
static int report_build(ferry_iterator *it, ferry_report *r, ferry_stage_stats **stats_out, size_t *n_out,
                        ferry__status *st) {
    memset(r, 0, sizeof *r);
    r->stage = -1;
    r->busiest_inline = -1;
    ferry_runtime *rt = ferry__iterator_runtime(it);
    ferry__pipe *pipe = ferry__iterator_pipe(it);
    size_t n = pipe->n;
    ferry_stage_stats *s = n ? ferry__calloc(rt, n, sizeof *s) : NULL;
    ferry__mgroup *g = ferry__calloc(rt, n + 1, sizeof *g);
    if ((n && !s) || !g) {
        ferry__free(rt, s);
        ferry__free(rt, g);
        return ferry__fail(st, FERRY_ENOMEM, "allocating the report's tables failed");
    }
    ferry_iterator_stats(it, s, n, &n);

    const ferry__consumer_clock *clk = ferry__iterator_clock(it);
    int64_t until = clk->end_ns ? clk->end_ns : ferry__now_ns(); /* an ended pass: up to its end */
    double wall = clk->first_ns ? (double)(until - clk->first_ns) * 1e-9 : 0.0;
    double in_next = (double)clk->in_next_ns * 1e-9;
    int64_t elems = n ? s[0].elements_out : 0;
    r->seconds = wall;
    r->elements = elems;
    r->elements_per_s = wall > 0 ? (double)elems / wall : 0.0;
    r->wait_p50_ns = percentile(clk, 0.50);
    r->wait_p99_ns = percentile(clk, 0.99);

    ferry__model m;
    ferry__model_build(&m, g, s, n, pipe, wall, in_next, rt->cpu_budget);
    double inline_top = m.inline_top, consumer_own = m.consumer_own, waited = m.waited;
    bool any_ahead = m.any_ahead;
    double cpu_budget = rt->cpu_budget > 0 ? (double)rt->cpu_budget : 1.0;
    r->consumer_wait_share = m.wait_share;
    r->bound_per_s = isfinite(m.bound) ? m.bound : 0.0;
    r->headspace_per_s = isfinite(m.head) ? m.head : 0.0;

    /* The verdict. */
    char a[32], b[32], c[32];
    if (elems < 2 || wall * 1e9 < REPORT_MIN_NS) {
        r->limit = FERRY_LIMIT_UNKNOWN;
        snprintf(r->text, sizeof r->text, "too little measured yet: %lld elements in %.3f s", (long long)elems, wall);
    } else if (!any_ahead && inline_top > REPORT_WAIT_SHARE * wall) {
        r->limit = FERRY_LIMIT_INLINE;
        /* Run ahead on other threads, the stages leave the consumer its own time per element,
         * within the cpu budget. */
        double per = consumer_own / (double)elems, all = (consumer_own + inline_top) / (double)elems;
        r->bound_per_s = fmin(per > 0 ? 1.0 / per : INFINITY, cpu_budget / all);
        r->stage = g[0].busiest_inline;
        fmt_time(a, sizeof a, inline_top / (double)elems);
        fmt_time(b, sizeof b, consumer_own / (double)elems);
        snprintf(r->text, sizeof r->text,
                 "every stage runs on the consumer's thread: the pipeline takes %s per element (%.0f%% of the "
                 "time) besides the consumer's %s",
                 a, 100.0 * inline_top / wall, b);
        if (r->stage >= 0)
            add_text(r->text, sizeof r->text, ", most of it in stage %d '%s'", r->stage, s[r->stage].name);
        add_text(r->text, sizeof r->text,
                 "; give the map num_parallel_calls (FERRY_AUTOTUNE) and end the pipeline with a prefetch, so "
                 "that it runs ahead while the consumer works");
        if (r->bound_per_s > r->elements_per_s * 1.05) {
            fmt_ratio(c, sizeof c, r->bound_per_s / r->elements_per_s);
            add_text(r->text, sizeof r->text, " (predicted: up to %.0f elements/s on %d cores, %s)", r->bound_per_s,
                     (int)cpu_budget, c);
        }
    } else if (r->consumer_wait_share < REPORT_WAIT_SHARE) {
        r->limit = FERRY_LIMIT_CONSUMER;
        fmt_time(a, sizeof a, consumer_own / (double)elems);
        snprintf(r->text, sizeof r->text,
                 "the consumer limits throughput and the pipeline keeps up: the consumer takes %s per element "
                 "and waited %.1f%% of the time for the next one",
                 a, 100.0 * r->consumer_wait_share);
        if (r->headspace_per_s > 0) {
            fmt_ratio(b, sizeof b, r->headspace_per_s / r->elements_per_s);
            add_text(r->text, sizeof r->text, "; the pipeline could deliver %.0f elements/s (%s what it takes)",
                     r->headspace_per_s, b);
        }
    } else {
        int worst = m.worst;
        const ferry__mgroup *gw = worst >= 0 ? &g[1 + worst] : NULL;
        if (!gw || gw->busy < REPORT_BUSY) {
            r->limit = FERRY_LIMIT_MACHINE;
            snprintf(r->text, sizeof r->text,
                     "the consumer waited %.0f%% of the time, yet no stage's threads were busy half of it (the "
                     "busiest: %s at %.0f%%): its threads did not get the cores; other programs may be using "
                     "them, or cpu_budget (%d) is more than the machine has",
                     100.0 * r->consumer_wait_share, gw ? s[worst].name : "none", gw ? 100.0 * gw->busy : 0.0,
                     (int)cpu_budget);
            r->stage = worst;
        } else {
            r->stage = worst;
            r->busiest_inline = gw->busiest_inline;
            /* blocked (neither computing nor waiting for a core) most of the time */
            bool waits = ferry__mgroup_waits(gw);
            r->limit = waits ? FERRY_LIMIT_STAGE_WAIT : FERRY_LIMIT_STAGE_CPU;
            /* Threads for the bound; a stage that waits gets at most REPORT_WAIT_GROWTH times its
             * threads per verdict (what more would give is not measured: a disk or a server may
             * saturate first). The predicted rate is what those threads give within the bound. */
            double need = ceil(r->bound_per_s * gw->t - 1e-9);
            if (waits) need = fmin(need, REPORT_WAIT_GROWTH * gw->k);
            else need = fmin(need, fmax(cpu_budget, gw->k)); /* computing threads beyond the cores only queue */
            need = fmax(fmin(need, gw->kmax), gw->k);
            r->threads_suggested = (int)need;
            double predicted = fmin(r->bound_per_s, need / gw->t);
            fmt_time(a, sizeof a, gw->t);         /* thread time per element */
            fmt_time(b, sizeof b, gw->t / gw->k); /* per element, with its threads */
            fmt_time(c, sizeof c, waited / (double)elems);
            snprintf(r->text, sizeof r->text,
                     "stage %d '%s' limits throughput: %s, %s of thread time per element on %d thread%s (%s per "
                     "element), its threads busy %.0f%% of the time and computing %.0f%% of that; the consumer "
                     "waited %.0f%% of the time (%s per element)",
                     worst, s[worst].name, waits ? "it waits (I/O or sleeping calls)" : "it is CPU-bound", a,
                     (int)gw->k, gw->k == 1 ? "" : "s", b, 100.0 * gw->busy, 100.0 * gw->cpu_share,
                     100.0 * r->consumer_wait_share, c);
            if (gw->runq_share > 0.10)
                add_text(r->text, sizeof r->text,
                         "; its threads also waited for a core %.0f%% of the time (other threads or programs had "
                         "them)",
                         100.0 * gw->runq_share);
            if (gw->busiest_inline >= 0 && gw->inline_ns > 0 && s[worst].thread_ns > 0 &&
                (double)gw->inline_ns > 0.5 * (double)s[worst].thread_ns)
                add_text(r->text, sizeof r->text, "; most of its threads' time is in stage %d '%s' below it",
                         gw->busiest_inline, s[gw->busiest_inline].name);
            if (r->threads_suggested > (int)gw->k)
                add_text(r->text, sizeof r->text, "; give it %d threads%s", r->threads_suggested,
                         waits ? " (they wait, so more threads than cores pay)" : "");
            else if (gw->k >= gw->kmax)
                add_text(r->text, sizeof r->text, "; it has the most threads it may have: make its work cheaper");
            else
                add_text(r->text, sizeof r->text,
                         "; the cpu budget (%d) is spent: make its work cheaper or raise cpu_budget", (int)cpu_budget);
            if (predicted > r->elements_per_s * 1.05) {
                fmt_ratio(a, sizeof a, predicted / r->elements_per_s);
                add_text(r->text, sizeof r->text, " (predicted: up to %.0f elements/s, %s)", predicted, a);
            }
        }
    }
    ferry__free(rt, g);
    if (stats_out) {
        *stats_out = s;
        *n_out = n;
    } else {
        ferry__free(rt, s);
    }
    return FERRY_OK;
}

int ferry_iterator_report(ferry_iterator *it, ferry_report *out) {
    int crc = ferry__check_iterator(it, __func__);
    if (crc) return crc;
    ferry__status *st = ferry__iterator_status(it);
    if (!out) return ferry__fail(st, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    int rc = report_build(it, out, NULL, NULL, st);
    if (rc) ferry__status_prefix(st, __func__);
    return rc;
}

const char *ferry_limit_name(ferry_limit limit) {
    if ((int)limit < 0 || (size_t)limit >= sizeof limit_names / sizeof limit_names[0]) return "invalid";
    return limit_names[limit];
}

static void json_num(ferry__writer *w, const char *key, double v, bool comma) {
    ferry__w_printf(w, "\"%s\":", key);
    if (isfinite(v)) ferry__w_printf(w, "%.9g", v);
    else ferry__w_printf(w, "null");
    if (comma) ferry__w_printf(w, ",");
}

int ferry_iterator_report_json(ferry_iterator *it, ferry_blob **out) {
    if (out) *out = NULL;
    int crc = ferry__check_iterator(it, __func__);
    if (crc) return crc;
    ferry__status *st = ferry__iterator_status(it);
    if (!out) return ferry__fail(st, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    ferry_runtime *rt = ferry__iterator_runtime(it);
    ferry_report r;
    ferry_stage_stats *s = NULL;
    size_t n = 0;
    int rc = report_build(it, &r, &s, &n, st);
    if (rc) {
        ferry__status_prefix(st, __func__);
        return rc;
    }
    ferry__writer w;
    ferry__writer_init(&w, &rt->alloc);
    ferry__w_printf(&w, "{\"limit\":\"%s\",\"stage\":%d,\"busiest_inline\":%d,", ferry_limit_name(r.limit), r.stage,
                    r.busiest_inline);
    ferry__w_printf(&w, "\"stage_name\":");
    ferry__w_json_str(&w, r.stage >= 0 ? s[r.stage].name : "");
    ferry__w_printf(&w, ",\"verdict\":");
    ferry__w_json_str(&w, r.text);
    ferry__w_printf(&w, ",\"elements\":%lld,", (long long)r.elements);
    json_num(&w, "seconds", r.seconds, true);
    json_num(&w, "elements_per_s", r.elements_per_s, true);
    json_num(&w, "headspace_per_s", r.headspace_per_s, true);
    json_num(&w, "bound_per_s", r.bound_per_s, true);
    ferry__w_printf(&w, "\"threads_suggested\":%d,\"cpu_budget\":%d,", r.threads_suggested, rt->cpu_budget);
    ferry__w_printf(&w, "\"consumer\":{");
    json_num(&w, "wait_share", r.consumer_wait_share, true);
    ferry__w_printf(&w, "\"wait_p50_ns\":%lld,\"wait_p99_ns\":%lld},\"autotune\":[", (long long)r.wait_p50_ns,
                    (long long)r.wait_p99_ns);
    ferry_tune_decision log[FERRY__TUNE_LOG];
    size_t nlog = 0;
    ferry__tuner_log(ferry__autotune_tuner(ferry__iterator_autotune(it)), log, FERRY__TUNE_LOG, &nlog);
    for (size_t i = 0; i < nlog && i < FERRY__TUNE_LOG; i++) {
        const ferry_tune_decision *d = &log[i];
        ferry__w_printf(&w, "%s{", i ? "," : "");
        json_num(&w, "at_s", d->at_s, true);
        ferry__w_printf(&w,
                        "\"stage\":%d,\"outcome\":\"%s\",\"parallelism_before\":%d,\"parallelism_after\":%d,"
                        "\"buffer_before\":%lld,\"buffer_after\":%lld,",
                        d->stage, ferry_tune_outcome_name(d->outcome), d->parallelism_before, d->parallelism_after,
                        (long long)d->buffer_before, (long long)d->buffer_after);
        json_num(&w, "rate_before", d->rate_before, true);
        json_num(&w, "rate_after", d->rate_after, true);
        ferry__w_printf(&w, "\"why\":");
        ferry__w_json_str(&w, d->why);
        ferry__w_printf(&w, "}");
    }
    ferry__w_printf(&w, "],\"stages\":[");
    for (size_t i = 0; i < n; i++) {
        const ferry_stage_stats *x = &s[i];
        ferry__w_printf(&w, "%s{\"node\":%d,\"input\":%d,\"parent\":%d,\"name\":", i ? "," : "", x->node, x->input,
                        ferry__iterator_pipe(it)->nodes[i].parent);
        ferry__w_json_str(&w, x->name);
        ferry__w_printf(&w, ",\"op\":");
        ferry__w_json_str(&w, x->op);
        ferry__w_printf(
            &w,
            ",\"elements_out\":%lld,\"bytes_out\":%lld,\"errors_out\":%lld,\"errors_dropped\":%lld,"
            "\"work_ns\":%lld,\"assemble_ns\":%lld,\"lock_wait_ns\":%lld,\"wait_input_ns\":%lld,"
            "\"wait_consumer_ns\":%lld,\"idle_full_ns\":%lld,\"thread_ns\":%lld,\"cpu_ns\":%lld,\"cpu_wait_ns\":%lld,"
            "\"buffered_elements\":%lld,"
            "\"buffered_bytes\":%lld,\"buffer_capacity\":%lld,\"parallelism\":%lld}",
            (long long)x->elements_out, (long long)x->bytes_out, (long long)x->errors_out, (long long)x->errors_dropped,
            (long long)x->work_ns, (long long)x->assemble_ns, (long long)x->lock_wait_ns, (long long)x->wait_input_ns,
            (long long)x->wait_consumer_ns, (long long)x->idle_full_ns, (long long)x->thread_ns, (long long)x->cpu_ns,
            (long long)x->cpu_wait_ns, (long long)x->buffered_elements, (long long)x->buffered_bytes,
            (long long)x->buffer_capacity, (long long)x->parallelism);
    }
    ferry__w_printf(&w, "]}\n");
    ferry__free(rt, s);
    if (w.failed) {
        ferry__writer_fini(&w);
        return ferry__fail(st, FERRY_ENOMEM, "%s: allocating the JSON text failed", __func__);
    }
    ferry_blob *b = ferry__blob_new(rt, w.data, w.size);
    if (!b) {
        ferry__writer_fini(&w);
        return ferry__fail(st, FERRY_ENOMEM, "%s: allocating the blob failed", __func__);
    }
    *out = b;
    return FERRY_OK;
}
