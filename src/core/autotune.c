/*
 * autotune.c - closed-loop AUTOTUNE: the stages a user gave FERRY_AUTOTUNE get threads and
 * buffers from what the pipeline measures, and a change stays only if throughput rose.
 *
 * Where it runs: on the consumer's thread, inside ferry_iterator_next, at a call that reads the
 * clock anyway (core.h's consumer clock) once a measuring window is over (100 ms and at least
 * 8 elements, or 1 s). No thread of its own; nothing when no stage runs ahead.
 *
 * The executor's workers: a stage's tasks beyond the cpu budget wait for a worker; when some
 * wait while the whole process used under cpu_budget - 0.5 cores (or the machine's cores - 0.5,
 * when fewer: a budget over them is never reached; CPU seconds per wall second,
 * the consumer's included), their threads are blocked in calls the executor cannot see
 * (sleeping, I/O), and the executor is granted that many workers more (ferry__exec_grant); when
 * none waits, the grant shrinks to what the threads at work need beyond the budget; when the
 * process used over the budget, half the grant goes. So the threads a user asked for (or the
 * tuner chose) run, and the CPU stays within the budget, whatever the stages' CPU samples say.
 *
 * Each window: the stats of every stage are read and the snapshot of the window's start taken
 * off (CPU shares from the samples taken inside the window), and report.c's model is built over
 * the window: per group of threads (a stage that runs ahead with the inline stages below it, and
 * the consumer's thread) the thread and CPU seconds per element handed out, its busy share, its
 * share computing, and the linear program's bound (Plumber, MLSys'22).
 *
 * The decision (ferry__tuner_window, on the model alone so that tests can feed it stages of
 * known cost):
 *   BASE   measure the rate at the present setting (two windows), then propose.
 *   propose
 *          the consumer waited under a tenth of the window: it limits; a thread the tuner added
 *          goes back if that costs under 1 % (the training step gets its CPU back); else nothing
 *          to change (STEADY). Else the group that delivers least with its threads (the model's worst):
 *          if its threads were busy and the user gave it AUTOTUNE, the threads the bound asks
 *          for (ceil(bound x t)): a CPU-bound stage one thread a step, never past the cpu budget,
 *          and one more when the bound asks for none but the process leaves a core unused (the
 *          model may be wrong: the trial finds out); a stage whose threads compute less than
 *          half their running time (sleeping or I/O-bound calls, or kept off the cores by other
 *          programs: so say the samples of its threads' CPU, or it ran more threads at once than
 *          the cores the process used) up to twice its threads a step, up to
 *          ferry__autotune_max_threads. Else
 *          a buffer: twice the elements, only where the stage's consumer waited on it (first where
 *          its tasks also waited for room: a burst the buffer could absorb), and only while the
 *          buffers' estimated bytes stay under half the byte budget (the budget itself is hard:
 *          ferry never passes it whatever the setting). Else one more thread for another
 *          AUTOTUNE stage, slowest group first (stages feed each other in bursts that the model,
 *          one group at a time, does not see; the trial decides). Nothing left: STEADY.
 *   TRIAL  the change is applied; one window settles, two are measured. More threads are kept
 *          when the rate rose by 3 % and the process's CPU stayed within the budget; a bigger
 *          buffer (memory only, within half the byte budget, where the consumer waits) unless
 *          the rate fell by 1 % (windows move by a few per cent on a busy machine); else backed out (logged, and
 *          not tried again until something changes).
 *   STEADY the rate is watched; three windows in a row 25 % away from the settled rate mean the
 *          work changed (rates drifted): everything is re-evaluated from BASE.
 * Tuning changes speed, never elements or their order (the knobs' contract, core.h). Each
 * decision goes to a ring of the last 32 (ferry_iterator_tuning); the values chosen show in the
 * stats (parallelism, buffer_capacity). A stage made again (a repeat's next epoch) gets the
 * values chosen for its node again.
 */
#include "core.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define TUNE_WINDOW_NS 100000000      /* a measuring window: at least this long ... */
#define TUNE_WINDOW_MIN_ELEMS 8       /* ... and this many elements, */
#define TUNE_WINDOW_MAX_NS 1000000000 /* unless it has lasted this long (and has 2) */
#define TUNE_TRIAL_WINDOWS 2
#define TUNE_KEEP_GAIN 0.03      /* more threads stay when the rate rose this much */
#define TUNE_BUF_LOSS 0.01       /* a bigger buffer stays unless the rate fell this much */
#define TUNE_CPU_SLACK 0.05      /* of a core: the CPU measured may pass the budget by this */
#define TUNE_CONSUMER_SHARE 0.10 /* the consumer waited less: it limits */
#define TUNE_BUSY 0.5            /* a group whose threads ran less is not short of threads */
#define TUNE_WAIT_SHARE 0.05     /* a buffer grows where its consumer waited this share ... */
#define TUNE_ROOM_SHARE 0.05     /* ... and its threads waited for room this share */
#define TUNE_PLAIN_WAIT 0.8      /* tune_plain: the consumer waited this share ... */
#define TUNE_PLAIN_BUSY 0.95     /* ... on a stage's one thread busy this share */
#define TUNE_DRIFT 0.25
#define TUNE_DRIFT_WINDOWS 3

enum { TUNE_BASE, TUNE_TRIAL, TUNE_STEADY };

/* ---- the decision ---------------------------------------------------------------------------- */
static void set_why(char *dst, size_t cap, const char *fmt, ...) FERRY_PRINTF(3, 4);
static void set_why(char *dst, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
}

static void tune_log(ferry__tuner *t, const ferry__tune_in *in, int stage, ferry_tune_outcome o, int p0, int p1,
                     int64_t b0, int64_t b1, double r0, double r1, const char *fmt, ...) FERRY_PRINTF(11, 12);
static void tune_log(ferry__tuner *t, const ferry__tune_in *in, int stage, ferry_tune_outcome o, int p0, int p1,
                     int64_t b0, int64_t b1, double r0, double r1, const char *fmt, ...) {
    ferry_tune_decision *d = &t->log[t->nlog % FERRY__TUNE_LOG];
    t->nlog++;
    memset(d, 0, sizeof *d);
    d->at_s = in->at_s;
    d->stage = stage;
    d->outcome = o;
    d->parallelism_before = p0;
    d->parallelism_after = p1;
    d->buffer_before = b0;
    d->buffer_after = b1;
    d->rate_before = r0;
    d->rate_after = r1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->why, sizeof d->why, fmt, ap);
    va_end(ap);
}

int ferry__tuner_init(ferry__tuner *t, ferry_runtime *rt, size_t n, int cpu_budget, size_t byte_budget) {
    memset(t, 0, sizeof *t);
    if (!rt) return FERRY_EINVAL;
    t->rt = rt;
    t->n = n;
    t->cpu_budget = cpu_budget > 0 ? cpu_budget : 1;
    t->byte_budget = byte_budget;
    t->phase = TUNE_BASE;
    t->tried = n ? ferry__calloc(rt, n, sizeof *t->tried) : NULL;
    t->set = n ? ferry__calloc(rt, n, sizeof *t->set) : NULL;
    return n && (!t->tried || !t->set) ? FERRY_ENOMEM : FERRY_OK;
}

void ferry__tuner_fini(ferry__tuner *t) {
    if (t->rt) {
        ferry__free(t->rt, t->tried);
        ferry__free(t->rt, t->set);
    }
    t->tried = NULL;
    t->set = NULL;
}

int ferry__tune_grant(const ferry__tune_stage *st, size_t n, int granted, double cpu_per_s, int cpu_budget) {
    double waiting = 0, most = 0, working = 0;
    for (size_t i = 0; i < n; i++) {
        if (!st[i].has_knobs) continue;
        most += st[i].par;
        waiting += st[i].queued;
        working += st[i].running;
    }
    int want = granted;
    if (waiting >= 0.5 && cpu_per_s < (double)cpu_budget - 0.5) {
        want = granted + (int)ceil(waiting);
    } else if (waiting < 0.5) {
        /* no task waits: keep what the threads at work need beyond the cores, no more (a
         * blocked stage that ended or was backed out gives its workers back) */
        int need = (int)ceil(working - 1e-9) - cpu_budget;
        if (need < want) want = need > 0 ? need : 0;
    }
    if (cpu_per_s > (double)cpu_budget + TUNE_CPU_SLACK) want = granted / 2;
    return want < (int)most ? want : (int)most;
}

/* A group whose threads compute less than half their running time: more of them overlap more
 * waiting (the trial checks that the process stays within the cpu budget). Unlike the verdict's
 * ferry__mgroup_waits, time ready but without a core counts as waiting here: the verdict says
 * why a stage is slow (a machine short of cores is not I/O), the tuner asks whether more threads
 * of its own can overlap more, which the trial then measures. */
static bool tune_waits(const ferry__tune_stage *s, const ferry__mgroup *g, const ferry__tune_in *in) {
    return (s->measured && g->cpu_share < 0.5) || s->running > 1.5 * in->cpu_per_s + 0.5;
}

/* The change to try for the window's model, or false (nothing pays: STEADY). */
/* A stage's name for a decision's `why`: at most 20 bytes, cut before a UTF-8 character. */
static const char *short_name(const char *name, char out[24]) {
    size_t n = strnlen(name, 20);
    if (n == 20)
        while (n > 0 && ((unsigned char)name[n] & 0xC0) == 0x80) n--;
    memcpy(out, name, n);
    out[n] = '\0';
    return out;
}

static bool tune_propose(ferry__tuner *t, const ferry__tune_in *in, ferry__tune_move *mv) {
    char nb[24];
    const ferry__model *m = in->m;
    if (m->wait_share < TUNE_CONSUMER_SHARE) {
        /* The consumer limits: a thread the tuner added (while the consumer still waited) goes
         * back if that costs nothing, leaving the consumer (the training step) its CPU. */
        for (size_t i = 0; i < t->n; i++) {
            const ferry__tune_stage *s = &in->st[i];
            if (!s->tune_par || !(t->set[i] & 1) || s->par <= 1 || (t->tried[i] & 4)) continue;
            *mv = (ferry__tune_move){.stage = (int)i, .par = s->par - 1, .from_par = s->par, .from_buf = s->buf};
            set_why(mv->why, sizeof mv->why, "%s: %d -> %d threads (the consumer limits: its CPU back)",
                    short_name(s->name, nb), s->par, s->par - 1);
            return true;
        }
        if (!t->said_consumer)
            tune_log(t, in, -1, FERRY_TUNE_SETTLED, 0, 0, 0, 0, in->rate, in->rate,
                     "the consumer limits (it waited %.0f%% of the time): nothing to change", 100.0 * m->wait_share);
        t->said_consumer = true;
        return false;
    }
    t->said_consumer = false;
    t->shares_cores = false;
    double budget = (double)t->cpu_budget;
    int w = m->worst;
    if (w >= 0 && (size_t)w < t->n) {
        const ferry__mgroup *g = &m->g[1 + w];
        const ferry__tune_stage *s = &in->st[w];
        int k = s->par;
        if (s->tune_par && !(t->tried[w] & 1) && k < s->par_max && g->t > 0 && g->busy >= TUNE_BUSY) {
            /* Not computing most of the time: blocked (or kept off the cores by other programs,
             * which more threads of its own do not worsen): so say the samples of its threads' CPU,
             * or its threads ran at once more than the cores the whole process used. */
            bool waits = tune_waits(s, g, in);
            double need = isfinite(m->bound) ? ceil(m->bound * g->t - 1e-9) : (double)k + 1;
            int target;
            if (waits) {
                target = (int)fmin(fmax(need, k + 1.0), 2.0 * k);
            } else {
                /* One thread a step toward the bound (a climb that stops where a step no longer
                 * pays), never past the cpu budget; and one more when the bound asks for none but
                 * the process leaves a core unused (the model may be wrong: the trial finds out). */
                double per_thread = g->k > 0 ? g->c * in->rate / g->k : 1.0;
                bool room = in->cpu_per_s + fmin(per_thread, 1.0) <= budget + TUNE_CPU_SLACK;
                /* Past the free cores, its new thread computes only where the consumer leaves a
                 * core: a consumer that computes most of the time (a training step) would share
                 * the cores with it and lose what the stage gains (the demo's map_and_batch:
                 * 1 -> 2 threads measured no faster, every epoch). */
                bool shares = !room && m->wait_share < 0.5;
                t->shares_cores = shares && need > k;
                target = ((need > k && !shares) || room) && k < t->cpu_budget ? k + 1 : k;
            }
            target = FERRY__MIN(target, s->par_max);
            if (target > k) {
                *mv = (ferry__tune_move){.stage = w, .par = target, .from_par = k, .from_buf = s->buf};
                set_why(mv->why, sizeof mv->why, "%s: %d -> %d threads (%s, %.0f%% busy)", short_name(s->name, nb), k,
                        target, waits ? "computing under half the time" : "CPU-bound", fmin(100.0 * g->busy, 999.0));
                return true;
            }
        }
    }
    /* A buffer where its consumer waits (first where its tasks also waited for room: a burst
     * the buffer would absorb). */
    double bytes = 0;
    for (size_t i = 0; i < t->n; i++)
        if (in->st[i].has_knobs) bytes += (double)in->st[i].buf * in->st[i].bytes_per_elem;
    int best = -1;
    for (size_t i = 0; i < t->n; i++) {
        const ferry__tune_stage *s = &in->st[i];
        if (!s->tune_buf || (t->tried[i] & 2) || s->buf <= 0 || s->buf >= s->buf_max) continue;
        if (s->wait_in_share < TUNE_WAIT_SHARE) continue;
        double more = (double)(FERRY__MIN(2 * s->buf, s->buf_max) - s->buf) * s->bytes_per_elem;
        if (t->byte_budget && bytes + more > 0.5 * (double)t->byte_budget) continue;
        double score = s->wait_in_share * (s->room_share >= TUNE_ROOM_SHARE ? 2.0 : 1.0);
        const ferry__tune_stage *b = best >= 0 ? &in->st[best] : NULL;
        if (!b || score > b->wait_in_share * (b->room_share >= TUNE_ROOM_SHARE ? 2.0 : 1.0)) best = (int)i;
    }
    if (best >= 0) {
        const ferry__tune_stage *s = &in->st[best];
        *mv = (ferry__tune_move){
            .stage = best, .buf = FERRY__MIN(2 * s->buf, s->buf_max), .from_par = s->par, .from_buf = s->buf};
        set_why(mv->why, sizeof mv->why,
                "%s: buffer %lld -> %lld (its consumer waited %.0f%%, its threads waited for room %.0f%%)",
                short_name(s->name, nb), (long long)s->buf, (long long)mv->buf, 100.0 * s->wait_in_share,
                100.0 * s->room_share);
        return true;
    }
    /* Another AUTOTUNE stage's threads, slowest group first: stages feed each other in bursts,
     * and the model sees one group at a time (the trial decides). */
    int other = -1;
    double other_rate = INFINITY;
    for (size_t i = 0; i < t->n; i++) {
        const ferry__tune_stage *s = &in->st[i];
        const ferry__mgroup *g = &m->g[1 + i];
        if ((int)i == w || !s->tune_par || (t->tried[i] & 1) || s->par >= s->par_max || g->owner < 0 || g->t <= 0)
            continue;
        bool waits = tune_waits(s, g, in);
        if (!waits && s->par >= t->cpu_budget) continue;
        if (g->k / g->t < other_rate) {
            other_rate = g->k / g->t;
            other = (int)i;
        }
    }
    if (other >= 0) {
        const ferry__tune_stage *s = &in->st[other];
        *mv = (ferry__tune_move){.stage = other, .par = s->par + 1, .from_par = s->par, .from_buf = s->buf};
        set_why(mv->why, sizeof mv->why, "%s: %d -> %d threads (to try: it feeds or takes from the slowest stage)",
                short_name(s->name, nb), s->par, s->par + 1);
        return true;
    }
    if (!t->said_steady) {
        const char *why = "no stage that the user gave FERRY_AUTOTUNE is short of threads or buffer";
        if (w >= 0 && (size_t)w < t->n && m->g[1 + w].busy < TUNE_BUSY)
            why = "the slowest stage's threads are not busy";
        else if (w >= 0 && (size_t)w < t->n && in->st[w].tune_par && in->st[w].par >= in->st[w].par_max)
            why = "the slowest stage has the most threads it may have";
        else if (w >= 0 && (size_t)w < t->n && in->st[w].tune_par && (t->tried[w] & 1))
            why = "more threads for the slowest stage were tried and did not pay";
        else if (w >= 0 && (size_t)w < t->n && in->st[w].tune_par && t->shares_cores)
            why = "a thread more would share the cores with the consumer, which computes most of the time";
        else if (w >= 0 && (size_t)w < t->n && in->st[w].tune_par) why = "the cpu budget is spent";
        tune_log(t, in, w, FERRY_TUNE_SETTLED, 0, 0, 0, 0, in->rate, in->rate, "%s", why);
    }
    t->said_steady = true;
    return false;
}

/* The first window of a measurement leaves no doubt: one thread of a CPU-bound stage computing
 * all the time, the consumer waiting on it (TUNE_PLAIN_WAIT of the time) and a whole core of the
 * budget unused. The second thread is kept without a trial: a trial takes five windows, longer
 * than a short epoch (500 images at 1,000 a second), and an epoch per iterator would never get
 * it; the trials decide every later step. */
static bool tune_plain(ferry__tuner *t, const ferry__tune_in *in, ferry__tune_move *mv) {
    const ferry__model *m = in->m;
    int w = m->worst;
    if (m->wait_share < TUNE_PLAIN_WAIT || w < 0 || (size_t)w >= t->n) return false;
    const ferry__mgroup *g = &m->g[1 + w];
    const ferry__tune_stage *s = &in->st[w];
    if (!s->tune_par || s->par != 1 || s->par_max < 2 || t->cpu_budget < 2 || (t->tried[w] & 1) || g->t <= 0 ||
        g->busy < TUNE_PLAIN_BUSY || tune_waits(s, g, in) ||
        in->cpu_per_s + 1.0 > (double)t->cpu_budget + TUNE_CPU_SLACK)
        return false;
    char nb[24];
    *mv = (ferry__tune_move){.stage = w, .par = 2, .from_par = 1, .from_buf = s->buf};
    set_why(mv->why, sizeof mv->why,
            "%s: 1 -> 2 threads (CPU-bound, %.0f%% busy, the consumer waiting %.0f%%, a core unused: no trial)",
            short_name(s->name, nb), fmin(100.0 * g->busy, 999.0), 100.0 * m->wait_share);
    tune_log(t, in, w, FERRY_TUNE_KEPT, 1, 2, s->buf, s->buf, in->rate, in->rate, "%s", mv->why);
    t->set[w] |= 1;
    return true;
}

static bool tune_start_trial(ferry__tuner *t, const ferry__tune_in *in, ferry__tune_move *mv) {
    if (!tune_propose(t, in, mv)) {
        t->phase = TUNE_STEADY;
        t->steady_n = 0;
        t->steady_sum = 0;
        t->drift = 0;
        return false;
    }
    t->said_steady = false;
    t->trial = *mv;
    t->phase = TUNE_TRIAL;
    t->settle = 1;
    t->trial_windows = 0;
    t->trial_elems = 0;
    t->trial_wall = 0;
    t->trial_cpu = 0;
    return true;
}

void ferry__tuner_unapplied(ferry__tuner *t) {
    t->phase = TUNE_BASE;
    t->settle = 1;
    t->trial_windows = 0;
    t->trial_elems = t->trial_wall = 0;
}

bool ferry__tuner_window(ferry__tuner *t, const ferry__tune_in *in, ferry__tune_move *mv) {
    const ferry__model *m = in->m;
    t->windows++;
    if (t->settle > 0) {
        t->settle--;
        return false;
    }
    if (m->elems < 2 || m->wall <= 0) return false;
    switch (t->phase) {
    case TUNE_BASE: /* two windows, as the trial's */
        if (t->trial_windows == 0 && tune_plain(t, in, mv)) {
            t->settle = 1; /* then the base is measured at the new setting */
            return true;
        }
        t->trial_elems += (double)m->elems;
        t->trial_wall += m->wall;
        if (++t->trial_windows < TUNE_TRIAL_WINDOWS) return false;
        t->base_rate = t->trial_elems / t->trial_wall;
        return tune_start_trial(t, in, mv);
    case TUNE_TRIAL: {
        t->trial_elems += (double)m->elems;
        t->trial_wall += m->wall;
        t->trial_cpu += in->cpu_per_s * m->wall;
        if (++t->trial_windows < TUNE_TRIAL_WINDOWS) return false;
        double r1 = t->trial_elems / t->trial_wall, cpu = t->trial_cpu / t->trial_wall;
        const ferry__tune_move *tr = &t->trial;
        int p1 = tr->par ? tr->par : tr->from_par;
        int64_t b1 = tr->buf ? tr->buf : tr->from_buf;
        bool cpu_ok = cpu <= (double)t->cpu_budget + TUNE_CPU_SLACK || tr->par == 0 || tr->par < tr->from_par;
        /* More threads must pay 3 %; a bigger buffer (memory only, within half the byte budget,
         * and only where the consumer waits) stays unless it cost 1 %: the windows move by a few
         * per cent on a busy machine, and small real gains would be backed out by chance. */
        /* a thread taken back (fewer threads, the consumer limiting) stays on the same terms */
        bool down = tr->par && tr->par < tr->from_par;
        double need = tr->par && !down ? 1.0 + TUNE_KEEP_GAIN : 1.0 - TUNE_BUF_LOSS;
        if (r1 >= t->base_rate * need && cpu_ok) {
            tune_log(t, in, tr->stage, FERRY_TUNE_KEPT, tr->from_par, p1, tr->from_buf, b1, t->base_rate, r1, "%s",
                     tr->why);
            memset(t->tried, 0, t->n * sizeof *t->tried);
            t->set[tr->stage] |= tr->par ? 1 : 2;
            if (down) t->tried[tr->stage] |= 1; /* not raised again until the rates drift */
            /* a kept buffer or thread taken back may have cost up to 1 %: the base never sinks */
            t->base_rate = tr->par && !down ? r1 : fmax(t->base_rate, r1);
            return tune_start_trial(t, in, mv);
        }
        if (cpu_ok)
            tune_log(t, in, tr->stage, FERRY_TUNE_BACKED_OUT, tr->from_par, p1, tr->from_buf, b1, t->base_rate, r1,
                     "%s; %s", tr->why, tr->par ? "throughput did not rise" : "throughput fell");
        else
            tune_log(t, in, tr->stage, FERRY_TUNE_BACKED_OUT, tr->from_par, p1, tr->from_buf, b1, t->base_rate, r1,
                     "%s; it used %.2f cores, over the cpu budget", tr->why, cpu);
        t->tried[tr->stage] |= down ? 4 : tr->par ? 1 : 2;
        /* the values before, and a knob the tuner had not set goes back to the stage's own
         * adaptation (tune_apply) */
        *mv = (ferry__tune_move){.stage = tr->stage,
                                 .par = tr->par ? tr->from_par : 0,
                                 .buf = tr->buf ? tr->from_buf : 0,
                                 .from_par = p1,
                                 .from_buf = b1,
                                 .undo = true,
                                 .hand_back_par = tr->par && !(t->set[tr->stage] & 1),
                                 .hand_back_buf = tr->buf && !(t->set[tr->stage] & 2)};
        t->phase = TUNE_BASE;
        t->settle = 1;
        t->trial_windows = 0;
        t->trial_elems = t->trial_wall = 0;
        return true;
    }
    default: /* TUNE_STEADY */
        if (t->steady_n < TUNE_DRIFT_WINDOWS) {
            t->steady_sum += in->rate;
            if (++t->steady_n == TUNE_DRIFT_WINDOWS) t->steady_rate = t->steady_sum / TUNE_DRIFT_WINDOWS;
            return false;
        }
        if (fabs(in->rate / t->steady_rate - 1.0) > TUNE_DRIFT) t->drift++;
        else t->drift = 0;
        if (t->drift < TUNE_DRIFT_WINDOWS) return false;
        tune_log(t, in, -1, FERRY_TUNE_DRIFT, 0, 0, 0, 0, t->steady_rate, in->rate,
                 "the rate drifted from %.0f to %.0f elements/s: re-evaluating", t->steady_rate, in->rate);
        memset(t->tried, 0, t->n * sizeof *t->tried);
        t->said_steady = t->said_consumer = false;
        t->base_rate = in->rate;
        return tune_start_trial(t, in, mv);
    }
}

/* ---- on an iterator ------------------------------------------------------------------------ */
/* What an iterator's tuner keeps between windows. */
typedef struct node_snap {
    int64_t elements, bytes, wait_in, wait_cons, idle_full, thread, srun, scpu, srunq, work, assemble, lock, queued;
} node_snap;

struct ferry__autotune {
    ferry_iterator *it;
    ferry_runtime *rt;
    ferry__tuner tuner;
    size_t n;
    ferry_stage_stats *now; /* this window's stats (then the difference) */
    node_snap *snap;        /* at the window's start */
    ferry__mgroup *groups;
    ferry__tune_stage *st;
    uint64_t *stage_seen; /* the knobs' serial each node had when last set */
    int *chosen_par;      /* what the tuner set per node (0: nothing) */
    int64_t *chosen_buf;
    int granted; /* executor workers granted over the cpu budget, in all */
    int cores;   /* online cores */
    int64_t win_start_ns, in_next0, first_ns, proc_cpu0;
    bool started;
    bool whole;      /* made completely: what it learns goes to the dataset's memo when it ends */
    uint64_t key;    /* the pipeline's: its root dataset's salt */
    uint64_t *memo0; /* each node's memo word when this tuner started */
};

static void snap_take(ferry__autotune *a, const ferry_stage_stats *s, ferry__pipe *p) {
    for (size_t i = 0; i < a->n; i++) {
        const ferry__node_stats *r = &p->nodes[i];
        a->snap[i] = (node_snap){.elements = s[i].elements_out,
                                 .bytes = s[i].bytes_out,
                                 .wait_in = s[i].wait_input_ns,
                                 .wait_cons = s[i].wait_consumer_ns,
                                 .idle_full = s[i].idle_full_ns,
                                 .thread = s[i].thread_ns,
                                 .srun = atomic_load(&r->sample_run_ns),
                                 .scpu = atomic_load(&r->sample_cpu_ns),
                                 .srunq = atomic_load(&r->sample_runq_ns),
                                 .queued = atomic_load(&r->queued_ns),
                                 .work = s[i].work_ns,
                                 .assemble = s[i].assemble_ns,
                                 .lock = s[i].lock_wait_ns};
    }
}

/* One node's memo in one word: threads (16 bits), the set and tried bits (8 each), the buffer
 * (32 bits; knobs are clamped far below). */
static uint64_t memo_pack(int par, uint8_t set, uint8_t tried, int64_t buf) {
    uint64_t p = par > 0 ? (uint64_t)FERRY__MIN(par, 0xFFFF) : 0;
    uint64_t b = buf > 0 ? (uint64_t)FERRY__MIN(buf, (int64_t)0xFFFFFFFF) : 0;
    return p | (uint64_t)set << 16 | (uint64_t)tried << 24 | b << 32;
}

/* The dataset node that keeps what the tuner learnt of pipe node i (ferry_dataset.memo). */
static ferry_dataset *tune_home(ferry__pipe *p, size_t i) {
    ferry_dataset *ds = (ferry_dataset *)(uintptr_t)p->nodes[i].ds; /* the memo is its mutable part */
    return ds->tune_home ? ds->tune_home : ds;
}

int ferry__autotune_new(ferry_iterator *it, ferry__autotune **out) {
    *out = NULL;
    ferry__pipe *p = ferry__iterator_pipe(it);
    ferry_runtime *rt = ferry__iterator_runtime(it);
    bool any = false;
    for (size_t i = 0; i < p->n && !any; i++) {
        ferry__knobs k;
        any = ferry__pipe_knobs_get(p, i, &k) == FERRY_OK;
    }
    if (!any) return FERRY_OK;
    ferry__autotune *a = ferry__calloc(rt, 1, sizeof *a);
    if (!a) return FERRY_ENOMEM;
    a->it = it;
    a->rt = rt;
    a->cores = ferry__num_cores();
    a->n = p->n;
    size_t n = p->n;
    a->now = ferry__calloc(rt, n, sizeof *a->now);
    a->snap = ferry__calloc(rt, n, sizeof *a->snap);
    a->groups = ferry__calloc(rt, n + 1, sizeof *a->groups);
    a->st = ferry__calloc(rt, n, sizeof *a->st);
    a->stage_seen = ferry__calloc(rt, n, sizeof *a->stage_seen);
    a->chosen_par = ferry__calloc(rt, n, sizeof *a->chosen_par);
    a->chosen_buf = ferry__calloc(rt, n, sizeof *a->chosen_buf);
    a->memo0 = ferry__calloc(rt, n, sizeof *a->memo0);
    if (!a->now || !a->snap || !a->groups || !a->st || !a->stage_seen || !a->chosen_par || !a->chosen_buf ||
        !a->memo0 || ferry__tuner_init(&a->tuner, rt, n, rt->cpu_budget, rt->budget.limit) != FERRY_OK) {
        ferry__autotune_free(a);
        return FERRY_ENOMEM;
    }
    /* What earlier iterators of the dataset learnt: the knobs they chose are set at the first
     * tick, and the moves they backed out of are not tried again until the rates drift. */
    a->key = p->nodes[0].ds->salt; /* the root, depth-first first */
    for (size_t i = 0; i < n; i++) {
        ferry_dataset *home = tune_home(p, i);
        uint64_t w = atomic_load_explicit(&home->memo, memory_order_relaxed);
        if (atomic_load_explicit(&home->memo_key, memory_order_relaxed) != a->key) w = 0;
        a->memo0[i] = w;
        a->chosen_par[i] = (int)(w & 0xFFFF);
        a->tuner.set[i] = (uint8_t)(w >> 16);
        a->tuner.tried[i] = (uint8_t)(w >> 24);
        a->chosen_buf[i] = (int64_t)(w >> 32);
    }
    a->whole = true;
    *out = a;
    return FERRY_OK;
}

void ferry__autotune_free(ferry__autotune *a) {
    if (!a) return;
    if (a->whole) { /* for the dataset's next iterator */
        ferry__pipe *p = ferry__iterator_pipe(a->it);
        const ferry__tune_move *tr = a->tuner.phase == TUNE_TRIAL ? &a->tuner.trial : NULL;
        for (size_t i = 0; i < a->n; i++) {
            ferry_dataset *home = tune_home(p, i);
            int par = a->chosen_par[i];
            int64_t buf = a->chosen_buf[i];
            if (tr && (size_t)tr->stage == i) { /* a trial not judged yet: what it started from */
                if (tr->par) par = (a->tuner.set[i] & 1) ? tr->from_par : 0;
                if (tr->buf) buf = (a->tuner.set[i] & 2) ? tr->from_buf : 0;
            }
            uint64_t w = memo_pack(par, a->tuner.set[i], a->tuner.tried[i], buf);
            if (w == a->memo0[i]) continue; /* learnt nothing here: leave another tuner's memo */
            atomic_store_explicit(&home->memo_key, a->key, memory_order_relaxed);
            atomic_store_explicit(&home->memo, w, memory_order_relaxed);
        }
    }
    if (a->granted) ferry__exec_grant(&a->rt->exec, -a->granted);
    ferry__tuner_fini(&a->tuner);
    ferry_runtime *rt = a->rt;
    ferry__free(rt, a->now);
    ferry__free(rt, a->snap);
    ferry__free(rt, a->groups);
    ferry__free(rt, a->st);
    ferry__free(rt, a->stage_seen);
    ferry__free(rt, a->chosen_par);
    ferry__free(rt, a->chosen_buf);
    ferry__free(rt, a->memo0);
    ferry__free(rt, a);
}

/* Sets node i's knobs as mv says (an undo hands a knob the tuner had not set back to the
 * stage) and records the values for the node's next stage (a repeat's next epoch). False when
 * the node has no stage now (between epochs): nothing was set. */
static bool tune_apply(ferry__autotune *a, ferry__pipe *p, const ferry__tune_move *mv) {
    size_t i = (size_t)mv->stage;
    bool ok = ferry__pipe_set_knobs(p, i, mv->par, mv->buf, NULL, NULL) == FERRY_OK;
    /* A move not applied (the stage is between epochs) is measured again from BASE: only an
     * undo is recorded anyway, so that the next stage does not get the value backed out of. */
    if (ok || mv->undo) {
        if (mv->par) a->chosen_par[i] = mv->hand_back_par ? 0 : mv->par;
        if (mv->buf) a->chosen_buf[i] = mv->hand_back_buf ? 0 : mv->buf;
    }
    if (!ok) return false;
    if (mv->hand_back_par || mv->hand_back_buf)
        (void)ferry__pipe_set_knobs(p, i, mv->hand_back_par ? -1 : 0, mv->hand_back_buf ? -1 : 0, NULL, NULL);
    ferry__knobs k;
    if (ferry__pipe_knobs_get(p, i, &k) == FERRY_OK) a->stage_seen[i] = k.serial;
    return true;
}

void ferry__autotune_tick(ferry__autotune *a, int64_t now) {
    ferry_iterator *it = a->it;
    const ferry__consumer_clock *clk = ferry__iterator_clock(it);
    ferry__pipe *p = ferry__iterator_pipe(it);
    if (!a->started) {
        size_t cnt;
        ferry_iterator_stats(it, a->now, a->n, &cnt);
        snap_take(a, a->now, p);
        a->win_start_ns = now;
        a->in_next0 = clk->in_next_ns;
        a->proc_cpu0 = ferry__process_cpu_ns();
        a->first_ns = clk->first_ns ? clk->first_ns : now;
        a->started = true;
        for (size_t i = 0; i < a->n; i++) { /* what earlier iterators chose, at once */
            ferry__knobs k;
            if ((a->chosen_par[i] || a->chosen_buf[i]) && ferry__pipe_knobs_get(p, i, &k) == FERRY_OK &&
                k.serial != a->stage_seen[i]) {
                ferry__pipe_set_knobs(p, i, a->chosen_par[i], a->chosen_buf[i], NULL, NULL);
                a->stage_seen[i] = k.serial;
            }
        }
        return;
    }
    int64_t dt = now - a->win_start_ns;
    if (dt < TUNE_WINDOW_NS || a->n == 0) return;
    size_t cnt;
    ferry_iterator_stats(it, a->now, a->n, &cnt);
    int64_t elems = a->now[0].elements_out - a->snap[0].elements;
    if ((elems < TUNE_WINDOW_MIN_ELEMS && dt < TUNE_WINDOW_MAX_NS) || elems < 2) return;
    /* The window's stats: counters less the snapshot; CPU shares from the window's samples. */
    ferry_stage_stats *s = a->now;
    double wall = (double)dt * 1e-9;
    for (size_t i = 0; i < a->n; i++) {
        const ferry__node_stats *r = &p->nodes[i];
        node_snap *o = &a->snap[i], cur = {.srun = atomic_load(&r->sample_run_ns),
                                           .scpu = atomic_load(&r->sample_cpu_ns),
                                           .srunq = atomic_load(&r->sample_runq_ns)};
        node_snap nx = {.elements = s[i].elements_out,
                        .bytes = s[i].bytes_out,
                        .wait_in = s[i].wait_input_ns,
                        .wait_cons = s[i].wait_consumer_ns,
                        .idle_full = s[i].idle_full_ns,
                        .thread = s[i].thread_ns,
                        .srun = cur.srun,
                        .scpu = cur.scpu,
                        .srunq = cur.srunq,
                        .queued = atomic_load(&r->queued_ns),
                        .work = s[i].work_ns,
                        .assemble = s[i].assemble_ns,
                        .lock = s[i].lock_wait_ns};
        int64_t thread = nx.thread - o->thread, srun = nx.srun - o->srun;
        double cpu_r = 0, runq_r = 0;
        if (srun > 0) {
            cpu_r = (double)(nx.scpu - o->scpu) / (double)srun;
            runq_r = (double)(nx.srunq - o->srunq) / (double)srun;
        } else if (s[i].thread_ns > 0) { /* no sample inside the window: the pass's shares */
            cpu_r = (double)s[i].cpu_ns / (double)s[i].thread_ns;
            runq_r = (double)s[i].cpu_wait_ns / (double)s[i].thread_ns;
        }
        ferry__tune_stage *ts = &a->st[i];
        ts->bytes_per_elem = nx.elements > 0 ? (double)nx.bytes / (double)nx.elements : 0.0;
        s[i].elements_out = nx.elements - o->elements;
        s[i].bytes_out = nx.bytes - o->bytes;
        s[i].wait_input_ns = nx.wait_in - o->wait_in;
        s[i].wait_consumer_ns = nx.wait_cons - o->wait_cons;
        s[i].idle_full_ns = nx.idle_full - o->idle_full;
        s[i].thread_ns = thread;
        s[i].work_ns = nx.work - o->work;
        s[i].assemble_ns = nx.assemble - o->assemble;
        s[i].lock_wait_ns = nx.lock - o->lock;
        s[i].cpu_ns = (int64_t)((double)thread * fmin(fmax(cpu_r, 0.0), 1.0));
        s[i].cpu_wait_ns = (int64_t)((double)thread * fmin(fmax(runq_r, 0.0), 1.0));
        ts->queued = (double)(nx.queued - o->queued) * 1e-9 / wall;
        *o = nx;
        /* The knobs now; a stage made again (a repeat's next epoch) gets the chosen values. */
        ferry__knobs k;
        ts->has_knobs = ferry__pipe_knobs_get(p, i, &k) == FERRY_OK;
        if (ts->has_knobs && k.serial != a->stage_seen[i] && (a->chosen_par[i] || a->chosen_buf[i])) {
            ferry__pipe_set_knobs(p, i, a->chosen_par[i], a->chosen_buf[i], NULL, NULL);
            a->stage_seen[i] = k.serial;
        }
        ts->tune_par = ts->has_knobs && k.tune_parallelism;
        ts->tune_buf = ts->has_knobs && k.tune_buffer;
        ts->par = (int)atomic_load(&r->parallelism);
        if (ts->par <= 0 && ts->has_knobs) ts->par = 1;
        ts->par_max = ts->has_knobs ? k.parallelism_max : ts->par;
        ts->buf = atomic_load(&r->capacity);
        ts->buf_max = ts->has_knobs ? k.buffer_max : ts->buf;
        ts->measured = srun > 0;
        ts->running = (double)thread * 1e-9 / wall;
        ts->wait_in_share = (double)s[i].wait_input_ns * 1e-9 / wall;
        /* its tasks' time waiting for room, holding a thread or not, per task and wall second */
        ts->room_share = (double)(s[i].wait_consumer_ns + s[i].idle_full_ns) * 1e-9 / (wall * FERRY__MAX(ts->par, 1));
        snprintf(ts->name, sizeof ts->name, "%s", s[i].name);
    }
    double in_next = (double)(clk->in_next_ns - a->in_next0) * 1e-9;
    a->in_next0 = clk->in_next_ns;
    a->win_start_ns = now;
    int64_t proc_cpu = ferry__process_cpu_ns();
    double cpu_per_s = (double)(proc_cpu - a->proc_cpu0) * 1e-9 / wall;
    a->proc_cpu0 = proc_cpu;
    ferry__model m;
    ferry__model_build(&m, a->groups, s, a->n, p, wall, in_next, a->rt->cpu_budget);
    ferry__tune_in in = {.m = &m,
                         .st = a->st,
                         .rate = (double)elems / wall,
                         .cpu_per_s = cpu_per_s,
                         .at_s = (double)(now - a->first_ns) * 1e-9};
    /* Tasks waiting for a worker while the process leaves cores unused: their threads are
     * blocked in calls the executor cannot see (sleeping, I/O), so the executor may run more
     * of them (ferry__tune_grant): the threads every stage's user, or the tuner, gave it. */
    bool tunable = false;
    for (size_t i = 0; i < a->n; i++) tunable |= a->st[i].tune_par || a->st[i].tune_buf;
    /* the cores the process can use: a budget over the machine's cores is never reached */
    int cores = FERRY__MIN(a->rt->cpu_budget, FERRY__MAX(a->cores, 1));
    int grant = ferry__tune_grant(a->st, a->n, a->granted, cpu_per_s, cores);
    if (grant != a->granted) {
        ferry__exec_grant(&a->rt->exec, grant - a->granted);
        a->granted = grant;
    }
    ferry__tune_move mv;
    if (tunable && ferry__tuner_window(&a->tuner, &in, &mv) && !tune_apply(a, p, &mv) && !mv.undo)
        ferry__tuner_unapplied(&a->tuner); /* the trial would measure nothing */
}

const ferry__tuner *ferry__autotune_tuner(const ferry__autotune *a) { return a ? &a->tuner : NULL; }

int ferry__tuner_log(const ferry__tuner *t, ferry_tune_decision *out, size_t cap, size_t *count) {
    size_t have = t ? (t->nlog < FERRY__TUNE_LOG ? t->nlog : FERRY__TUNE_LOG) : 0;
    *count = have;
    for (size_t i = 0; i < have && i < cap; i++) out[i] = t->log[(t->nlog - have + i) % FERRY__TUNE_LOG];
    return FERRY_OK;
}

static const char *const outcome_names[] = {"kept", "backed_out", "settled", "drift"};

const char *ferry__tune_outcome_name(ferry_tune_outcome o) {
    return (int)o >= 0 && (size_t)o < sizeof outcome_names / sizeof outcome_names[0] ? outcome_names[o] : "invalid";
}
