/*
 * batch.c - `batch` and `padded_batch`: n consecutive input elements become one element whose
 * components are the rows stacked along a new leading dimension.
 *
 * Objects
 *   batch_ds   the dataset: batch size, drop_remainder, and for padded_batch the padded shape
 *              and the padding scalar (a tensor reference) of every component.
 *   batch_it   the iterator: its input iterator, per-component column builders reused from one
 *              batch to the next, and an `ended` flag.
 *
 * Threads and locks: none. batch is synchronous: it pulls its input only inside next, on the
 * consumer's thread, so its state is the input's state plus `ended` (no element data), and skip
 * is the default next-and-free.
 *
 * Order and errors (as tf.data)
 *   - Every batch holds n consecutive input elements in input order; the last one is smaller
 *     unless drop_remainder, which drops it (and returns END).
 *   - An input error in the middle of a batch is returned in place of that batch: the rows
 *     collected so far are dropped and the next call starts a new batch with the element after
 *     the failed one.
 *   - Rows whose dtypes or shapes disagree (batch), or that exceed a fixed padded dim
 *     (padded_batch), make the batch an FERRY_ETYPE error naming the component and the shapes;
 *     the whole batch of input elements is consumed first, as tf.data does, so the positions
 *     after it are the same as without the error.
 *
 * The hot path (batch of numeric components) copies each row into the output as it arrives and
 * frees the input element at once: no per-row bookkeeping beyond the shape compare and the copy.
 * The output tensors are allocated once per batch with room for n rows (shrunk for a short last
 * batch); for very large batch sizes they grow geometrically instead. FERRY_DTYPE_BYTES components
 * keep a reference to each row's tensor and are concatenated (offsets + blob) at the end.
 */
#include "ops.h"

/* Output tensors start with room for at most this many bytes, then grow (huge batch sizes). */
#define BATCH_INITIAL_BYTES ((size_t)4 << 20)

typedef struct batch_ds {
    ferry_dataset base;
    int64_t n;
    bool drop;
    bool padded;
    ferry_shape *pshapes;   /* padded_batch: per component; rank FERRY_UNKNOWN_RANK: pad every dim to the longest */
    ferry_tensor **pvalues; /* padded_batch: per component scalar reference, or NULL (zero / "") */
} batch_ds;

/* One component's builder during a batch. */
typedef struct batch_col {
    ferry_tensor *out;   /* numeric: the output tensor being filled (unshared until handed out) */
    ferry_tensor **rows; /* bytes: references to the row tensors */
    int64_t cap;         /* rows that fit in out (numeric) or rows (bytes) */
    int64_t rows_cap;    /* allocated entries of rows (kept from batch to batch) */
    int64_t held;        /* rows copied (numeric) or referenced (bytes) in this batch */
    size_t rowbytes;     /* numeric: bytes of one row */
    int64_t row_n;       /* numeric: entries of one row */
    size_t blob;         /* bytes: string bytes so far */
    ferry_dtype dtype;   /* of row 0 */
    int rank;            /* of row 0 */
    int64_t dims[FERRY_MAX_RANK];
} batch_col;

/* The row stacker (ops.h): the column builders of one batch in progress. */
struct ferry__stack {
    ferry_runtime *rt;
    int64_t n; /* rows of a full batch */
    size_t nc; /* components */
    batch_col cols[];
};

typedef struct batch_it {
    ferry__iter base;
    ferry__iter *input;
    bool ended;
    ferry__stack *stk;    /* batch */
    ferry_element **rows; /* padded_batch: the collected input elements */
    int64_t rows_cap;
} batch_it;

/* ---- helpers ------------------------------------------------------------------------------ */
static ferry_shape shape_of(int rank, const int64_t *dims) {
    ferry_shape s = {.rank = rank};
    for (int i = 0; i < rank; i++) s.dims[i] = dims[i];
    return s;
}

static int64_t initial_cap(int64_t n, size_t rowbytes) {
    if (rowbytes == 0) return n;
    int64_t fit = (int64_t)(BATCH_INITIAL_BYTES / rowbytes);
    if (fit < 16) fit = 16;
    return n < fit ? n : fit;
}

/* Grows a numeric output tensor (still unshared, storage inline) to hold `cap` rows. */
static int grow_numeric(ferry_runtime *rt, batch_col *c, int64_t cap, ferry__status *st) {
    if ((uint64_t)cap > (SIZE_MAX / 2) / (c->rowbytes ? c->rowbytes : 1))
        return ferry__fail(st, FERRY_ETOOLARGE, "batch: a batch of %lld rows of %zu bytes is too large", (long long)cap,
                           c->rowbytes);
    size_t bytes = (size_t)cap * c->rowbytes;
    ferry_tensor *t = ferry__realloc(rt, c->out, sizeof *t + bytes);
    if (!t) return ferry__fail(st, FERRY_ENOMEM, "batch: growing a batch to %zu bytes failed", bytes);
    t->data = (uint8_t *)(t + 1);
    c->out = t;
    c->cap = cap;
    return FERRY_OK;
}

/* Grows an array of pointers to hold at least `need` entries (at most n unless need is more).
 * Returns the new array, or NULL with st set (the old array stays valid). */
static void *grow_ptrs(ferry_runtime *rt, void *old, int64_t *cap, int64_t need, int64_t n, ferry__status *st) {
    int64_t nc = *cap ? *cap : 16;
    while (nc < need) nc = nc > INT64_MAX / 2 ? need : nc * 2;
    if (nc > n) nc = n;
    if (nc < need) nc = need;
    if ((uint64_t)nc > SIZE_MAX / sizeof(void *)) {
        ferry__fail(st, FERRY_ETOOLARGE, "batch: a batch of %lld rows is too large", (long long)nc);
        return NULL;
    }
    void *p = ferry__realloc(rt, old, (size_t)nc * sizeof(void *));
    if (!p) {
        ferry__fail(st, FERRY_ENOMEM, "batch: growing the row list to %lld entries failed", (long long)nc);
        return NULL;
    }
    *cap = nc;
    return p;
}

/* Drops whatever the column builders hold (after an error or a dropped remainder). */
void ferry__stack_reset(ferry__stack *s) {
    for (size_t c = 0; c < s->nc; c++) {
        batch_col *col = &s->cols[c];
        if (col->out) {
            ferry_tensor_unref(col->out);
            col->out = NULL;
        }
        if (col->dtype == FERRY_DTYPE_BYTES)
            for (int64_t i = 0; i < col->held; i++) ferry_tensor_unref(col->rows[i]);
        col->held = 0;
    }
}

/* Sets up column c from row 0's tensor t. */
static int col_start(ferry__stack *s, size_t c, ferry_tensor *t, ferry__status *st) {
    ferry_runtime *rt = s->rt;
    batch_col *col = &s->cols[c];
    col->out = NULL;
    col->held = 0;
    col->dtype = t->dtype;
    col->rank = t->rank;
    memcpy(col->dims, t->dims, sizeof col->dims);
    col->blob = 0;
    if (t->rank + 1 > FERRY_MAX_RANK)
        return ferry__fail(st, FERRY_ETYPE,
                           "batch: component %zu has rank %d; batching it needs rank %d, above the "
                           "maximum %d",
                           c, t->rank, t->rank + 1, FERRY_MAX_RANK);
    if (t->dtype == FERRY_DTYPE_BYTES) {
        if (!col->rows) {
            ferry_tensor **rows = grow_ptrs(rt, col->rows, &col->rows_cap, 1, s->n, st);
            if (!rows) return st->code;
            col->rows = rows;
        }
        col->cap = col->rows_cap;
        col->rows[0] = ferry_tensor_ref(t);
        col->blob = t->nbytes - (size_t)t->n * 8;
        col->held = 1;
        return FERRY_OK;
    }
    col->rowbytes = t->nbytes;
    col->row_n = t->n;
    int64_t cap = initial_cap(s->n, col->rowbytes);
    int64_t dims[FERRY_MAX_RANK];
    dims[0] = cap;
    for (int i = 0; i < t->rank; i++) dims[i + 1] = t->dims[i];
    int rc = ferry__tensor_new(rt, t->dtype, t->rank + 1, dims, &col->out, st);
    if (rc) return rc;
    col->cap = cap;
    memcpy(col->out->data, t->data, col->rowbytes);
    col->held = 1;
    return FERRY_OK;
}

/* FERRY_OK when row k's tensor t of column c matches row 0; else FERRY_ETYPE naming both. */
static int col_check(const batch_col *col, size_t c, int64_t k, const ferry_tensor *t, ferry__status *st) {
    if (t->dtype == col->dtype && t->rank == col->rank &&
        (col->rank == 0 || memcmp(t->dims, col->dims, (size_t)col->rank * sizeof(int64_t)) == 0))
        return FERRY_OK;
    char a[128], b[128];
    ferry_shape s0 = shape_of(col->rank, col->dims), s1 = shape_of(t->rank, t->dims);
    return ferry__fail(st, FERRY_ETYPE,
                       "batch: component %zu is %s %s in row 0 of the batch but %s %s in row %lld; every row of a "
                       "batch must have the same dtype and shape (padded_batch pads variable shapes)",
                       c, ferry_dtype_name(col->dtype), ferry__shape_str(&s0, a, sizeof a), ferry_dtype_name(t->dtype),
                       ferry__shape_str(&s1, b, sizeof b), (long long)k);
}

/* Makes room for row k in column c. */
static int col_reserve(ferry__stack *s, batch_col *col, int64_t k, ferry__status *st) {
    if (k < col->cap) return FERRY_OK;
    ferry_runtime *rt = s->rt;
    if (col->dtype == FERRY_DTYPE_BYTES) {
        ferry_tensor **rows = grow_ptrs(rt, col->rows, &col->rows_cap, k + 1, s->n, st);
        if (!rows) return st->code;
        col->rows = rows;
        col->cap = col->rows_cap;
        return FERRY_OK;
    }
    int64_t cap = col->cap <= s->n / 2 ? col->cap * 2 : s->n;
    return grow_numeric(rt, col, cap < k + 1 ? k + 1 : cap, st);
}

/* Adds row k (room reserved, shape checked) of column c. */
static inline void col_add(batch_col *col, int64_t k, ferry_tensor *t) {
    if (col->dtype == FERRY_DTYPE_BYTES) {
        col->rows[k] = ferry_tensor_ref(t);
        col->blob += t->nbytes - (size_t)t->n * 8;
    } else {
        uint8_t *dst = col->out->data + (size_t)k * col->rowbytes;
        switch (col->rowbytes) { /* scalar fast paths: constant-size copies */
        case 8: memcpy(dst, t->data, 8); break;
        case 4: memcpy(dst, t->data, 4); break;
        case 2: memcpy(dst, t->data, 2); break;
        case 1: *dst = *t->data; break;
        default: memcpy(dst, t->data, col->rowbytes); break;
        }
    }
    col->held = k + 1;
}

/* Concatenates the k bytes rows of column c into one tensor [k, dims...]. */
static int col_finish_bytes(ferry__stack *s, batch_col *col, int64_t k, ferry_tensor **out, ferry__status *st) {
    int64_t dims[FERRY_MAX_RANK];
    dims[0] = k;
    for (int i = 0; i < col->rank; i++) dims[i + 1] = col->dims[i];
    ferry_tensor *t;
    int rc = ferry__tensor_new_bytes(s->rt, col->rank + 1, dims, col->blob, &t, st);
    if (rc) return rc;
    uint64_t *off = ferry__tensor_offsets(t);
    uint8_t *blob = ferry__tensor_blob_mut(t);
    uint64_t at = 0;
    int64_t e = 0;
    for (int64_t r = 0; r < k; r++) {
        const ferry_tensor *row = col->rows[r];
        const uint64_t *ro = (const uint64_t *)(const void *)row->data;
        uint64_t base = ro[0], len = ro[row->n] - ro[0];
        if (len) memcpy(blob + at, row->blob + base, (size_t)len);
        for (int64_t i = 1; i <= row->n; i++) off[e + i] = at + (ro[i] - base);
        e += row->n;
        at += len;
    }
    FERRY_ASSERT(at == col->blob);
    *out = t;
    return FERRY_OK;
}

/* ---- batch -------------------------------------------------------------------------------- */
static int arity_check(const ferry_element *e, size_t nc, const char *op, ferry__status *st) {
    if (e->n == nc) return FERRY_OK;
    return ferry__fail(st, FERRY_ETYPE, "%s: an input element has %u components but the input's spec has %zu", op, e->n,
                       nc);
}

/* ---- the stacker ---------------------------------------------------------------------------- */
int ferry__stack_new(ferry_runtime *rt, size_t ncomp, int64_t n, ferry__stack **out, ferry__status *st) {
    ferry__stack *s = ferry__alloc(rt, sizeof *s + ncomp * sizeof(batch_col));
    if (!s) return ferry__fail(st, FERRY_ENOMEM, "batch: allocating the row builders failed");
    s->rt = rt;
    s->n = n;
    s->nc = ncomp;
    memset(s->cols, 0, ncomp * sizeof(batch_col));
    *out = s;
    return FERRY_OK;
}

void ferry__stack_free(ferry__stack *s) {
    if (!s) return;
    ferry__stack_reset(s);
    for (size_t c = 0; c < s->nc; c++) ferry__free(s->rt, s->cols[c].rows);
    ferry__free(s->rt, s);
}

int ferry__stack_add(ferry__stack *s, int64_t k, const ferry_element *e, ferry__status *st) {
    const size_t nc = s->nc;
    batch_col *cols = s->cols;
    int bad = arity_check(e, nc, "batch", st);
    if (k == 0) {
        for (size_t c = 0; !bad && c < nc; c++) bad = col_start(s, c, e->t[c], st);
    } else {
        for (size_t c = 0; !bad && c < nc; c++) bad = col_check(&cols[c], c, k, e->t[c], st);
        for (size_t c = 0; !bad && c < nc; c++) bad = col_reserve(s, &cols[c], k, st);
        if (!bad)
            for (size_t c = 0; c < nc; c++) col_add(&cols[c], k, e->t[c]);
    }
    return bad;
}

int ferry__stack_finish(ferry__stack *s, int64_t k, ferry_element **out, ferry__status *st) {
    const size_t nc = s->nc;
    int rc = FERRY_OK;
    ferry_element *b = ferry__element_new(s->rt, nc);
    if (!b) {
        ferry__stack_reset(s);
        return ferry__fail(st, FERRY_ENOMEM, "batch: allocating an element failed");
    }
    for (size_t c = 0; c < nc; c++) {
        batch_col *col = &s->cols[c];
        if (col->dtype == FERRY_DTYPE_BYTES) {
            if (!rc) rc = col_finish_bytes(s, col, k, &b->t[c], st);
            continue;
        }
        ferry_tensor *t = col->out;
        col->out = NULL;
        /* The tensor was made for cap rows (and may have grown): set the shape to k rows. */
        t->dims[0] = k;
        t->n = col->row_n * k;
        t->nbytes = (size_t)k * col->rowbytes;
        if (k < col->cap) { /* a short batch: give the spare room back */
            ferry_tensor *r = ferry__realloc(s->rt, t, sizeof *t + t->nbytes);
            if (r) {
                t = r;
                t->data = (uint8_t *)(t + 1);
            }
        }
        b->t[c] = t;
    }
    ferry__stack_reset(s); /* drops the bytes rows' references; numeric outputs were moved out */
    if (rc) {
        ferry_element_free(b);
        return rc;
    }
    *out = b;
    return FERRY_OK;
}

/* ---- batch -------------------------------------------------------------------------------- */
int ferry__batch_rows(ferry__stack *s, int64_t n, bool drop, ferry__pull_fn pull, void *arg, bool *ended,
                      ferry_element **out, ferry__status *st) {
    ferry_element *e = NULL;
    int rc = pull(arg, &e, st);
    if (rc == FERRY_END) {
        *ended = true;
        return FERRY_END;
    }
    if (rc < 0) return rc;
    /* bad: the first shape (or allocation) failure of this batch, its message in bst (st is
     * the input's while the batch is read). The columns are released at once; the rest of the
     * batch is still consumed, then bad is returned in its place. */
    ferry__status bst;
    int bad = ferry__stack_add(s, 0, e, &bst);
    if (bad) ferry__stack_reset(s);
    ferry_element_free(e);
    int64_t k = 1;
    for (; k < n; k++) {
        rc = pull(arg, &e, st);
        if (rc == FERRY_END) {
            *ended = true;
            break;
        }
        if (rc < 0) { /* the input's error replaces this batch; its rows are dropped */
            ferry__stack_reset(s);
            return rc;
        }
        if (!bad && (bad = ferry__stack_add(s, k, e, &bst)) != FERRY_OK) ferry__stack_reset(s);
        ferry_element_free(e);
    }
    if (k < n && drop) { /* tf.data drops a short last batch before looking at its rows */
        ferry__stack_reset(s);
        return FERRY_END;
    }
    if (bad) {
        ferry__status_copy(st, &bst);
        return bad;
    }
    return ferry__stack_finish(s, k, out, st);
}

static int batch_pull(void *arg, ferry_element **out, ferry__status *st) { return ferry__iter_next(arg, out, st); }

static int batch_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    batch_it *it = (batch_it *)it_;
    const batch_ds *ds = (const batch_ds *)it_->ds;
    if (it->ended) return FERRY_END;
    return ferry__batch_rows(it->stk, ds->n, ds->drop, batch_pull, it->input, &it->ended, out, st);
}

/* ---- padded_batch ------------------------------------------------------------------------- */
/* Copies a numeric row with dims d (rank r) into a block padded to dims p. */
static void copy_padded(uint8_t *dst, const int64_t *p, const uint8_t *src, const int64_t *d, int r, size_t es) {
    if (r == 0) {
        memcpy(dst, src, es);
        return;
    }
    for (int i = 0; i < r; i++)
        if (d[i] == 0) return;
    size_t run = (size_t)d[r - 1] * es;
    int64_t idx[FERRY_MAX_RANK] = {0};
    for (;;) {
        size_t off = 0;
        for (int i = 0; i < r - 1; i++) off = off * (size_t)p[i] + (size_t)idx[i];
        off *= (size_t)p[r - 1];
        memcpy(dst + off * es, src, run);
        src += run;
        int i = r - 2;
        while (i >= 0 && ++idx[i] == d[i]) idx[i--] = 0;
        if (i < 0) break;
    }
}

static int padded_component(batch_it *it, size_t c, int64_t k, ferry_tensor **out, ferry__status *st) {
    const batch_ds *ds = (const batch_ds *)it->base.ds;
    ferry_runtime *rt = it->base.ctx.rt;
    const ferry_shape *ps = &ds->pshapes[c];
    const ferry_tensor *t0 = it->rows[0]->t[c];
    int r = ps->rank >= 0 ? ps->rank : t0->rank;
    char a[128], b[128];
    if (r + 1 > FERRY_MAX_RANK)
        return ferry__fail(st, FERRY_ETYPE,
                           "padded_batch: component %zu has rank %d; batching it needs rank %d, above "
                           "the maximum %d",
                           c, r, r + 1, FERRY_MAX_RANK);
    int64_t p[FERRY_MAX_RANK];
    for (int d = 0; d < r; d++) p[d] = ps->rank >= 0 && ps->dims[d] >= 0 ? ps->dims[d] : 0;
    for (int64_t i = 0; i < k; i++) {
        const ferry_tensor *t = it->rows[i]->t[c];
        ferry_shape ts = shape_of(t->rank, t->dims);
        if (t->dtype != t0->dtype)
            return ferry__fail(st, FERRY_ETYPE,
                               "padded_batch: component %zu is %s in row 0 of the batch but %s in row %lld", c,
                               ferry_dtype_name(t0->dtype), ferry_dtype_name(t->dtype), (long long)i);
        if (t->rank != r) {
            ferry_shape want = ps->rank >= 0 ? *ps : shape_of(t0->rank, t0->dims);
            return ferry__fail(st, FERRY_ETYPE,
                               "padded_batch: component %zu has shape %s in row %lld of the batch but rank %d is "
                               "needed (%s %s)",
                               c, ferry__shape_str(&ts, a, sizeof a), (long long)i, r,
                               ps->rank >= 0 ? "padded shape" : "row 0 has", ferry__shape_str(&want, b, sizeof b));
        }
        for (int d = 0; d < r; d++) {
            if (ps->rank >= 0 && ps->dims[d] >= 0) {
                if (t->dims[d] > ps->dims[d])
                    return ferry__fail(st, FERRY_ETYPE,
                                       "padded_batch: component %zu has shape %s in row %lld of the batch, longer "
                                       "than its padded shape %s in dim %d",
                                       c, ferry__shape_str(&ts, a, sizeof a), (long long)i,
                                       ferry__shape_str(ps, b, sizeof b), d);
            } else if (t->dims[d] > p[d]) {
                p[d] = t->dims[d];
            }
        }
    }
    int64_t dims[FERRY_MAX_RANK];
    dims[0] = k;
    for (int d = 0; d < r; d++) dims[d + 1] = p[d];
    int64_t per = ferry__num_entries(r, p);
    if (per < 0 || (per > 0 && k > INT64_MAX / per))
        return ferry__fail(st, FERRY_ETOOLARGE, "padded_batch: component %zu: the padded batch is too large", c);
    const ferry_tensor *pad = ds->pvalues[c];
    ferry_tensor *o;
    int rc;
    if (t0->dtype != FERRY_DTYPE_BYTES) {
        size_t es = ferry_dtype_size(t0->dtype);
        if (pad && pad->dtype != t0->dtype)
            return ferry__fail(st, FERRY_ETYPE, "padded_batch: component %zu is %s but its padding value is %s", c,
                               ferry_dtype_name(t0->dtype), ferry_dtype_name(pad->dtype));
        rc = ferry__tensor_new(rt, t0->dtype, r + 1, dims, &o, st);
        if (rc) return rc;
        bool zero = true;
        if (pad)
            for (size_t i = 0; i < es; i++) zero = zero && pad->data[i] == 0;
        if (zero) {
            memset(o->data, 0, o->nbytes);
        } else {
            for (int64_t i = 0; i < o->n; i++) memcpy(o->data + (size_t)i * es, pad->data, es);
        }
        size_t block = (size_t)per * es;
        for (int64_t i = 0; i < k; i++) {
            const ferry_tensor *t = it->rows[i]->t[c];
            copy_padded(o->data + (size_t)i * block, p, t->data, t->dims, r, es);
        }
        *out = o;
        return FERRY_OK;
    }
    /* Bytes: entry by entry in output order, each from its row or the padding string. */
    const uint8_t *pstr = (const uint8_t *)"";
    size_t plen = 0;
    if (pad) {
        if (pad->dtype != FERRY_DTYPE_BYTES)
            return ferry__fail(st, FERRY_ETYPE, "padded_batch: component %zu is bytes but its padding value is %s", c,
                               ferry_dtype_name(pad->dtype));
        pstr = ferry__tensor_str(pad, 0, &plen);
    }
    size_t blob = 0;
    for (int64_t i = 0; i < k; i++) {
        const ferry_tensor *t = it->rows[i]->t[c];
        blob += t->nbytes - (size_t)t->n * 8 + (size_t)(per - t->n) * plen;
    }
    rc = ferry__tensor_new_bytes(rt, r + 1, dims, blob, &o, st);
    if (rc) return rc;
    uint64_t *off = ferry__tensor_offsets(o);
    uint8_t *dst = ferry__tensor_blob_mut(o);
    uint64_t at = 0;
    int64_t e = 0;
    for (int64_t i = 0; i < k; i++) {
        const ferry_tensor *t = it->rows[i]->t[c];
        int64_t idx[FERRY_MAX_RANK] = {0};
        for (int64_t j = 0; j < per; j++) {
            bool inside = true;
            int64_t src = 0;
            for (int d = 0; d < r; d++) {
                inside = inside && idx[d] < t->dims[d];
                src = src * t->dims[d] + idx[d];
            }
            const uint8_t *s = pstr;
            size_t len = plen;
            if (inside) s = ferry__tensor_str(t, src, &len);
            if (len) memcpy(dst + at, s, len);
            at += len;
            off[++e] = at;
            for (int d = r - 1; d >= 0; d--) {
                if (++idx[d] < p[d]) break;
                idx[d] = 0;
            }
        }
    }
    FERRY_ASSERT(at == blob);
    *out = o;
    return FERRY_OK;
}

static void rows_free(batch_it *it, int64_t k) {
    for (int64_t i = 0; i < k; i++) ferry_element_free(it->rows[i]);
}

static int padded_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    batch_it *it = (batch_it *)it_;
    const batch_ds *ds = (const batch_ds *)it_->ds;
    if (it->ended) return FERRY_END;
    const size_t nc = it_->ds->ncomp;
    int64_t k = 0;
    while (k < ds->n) {
        ferry_element *e = NULL;
        int rc = ferry__iter_next(it->input, &e, st);
        if (rc == FERRY_END) {
            it->ended = true;
            break;
        }
        if (rc < 0) {
            rows_free(it, k);
            return rc;
        }
        if (k >= it->rows_cap) {
            ferry_element **rows = grow_ptrs(it_->ctx.rt, it->rows, &it->rows_cap, k + 1, ds->n, st);
            if (rows) it->rows = rows;
            else rc = st->code;
            if (rc) {
                ferry_element_free(e);
                rows_free(it, k);
                return rc;
            }
        }
        it->rows[k++] = e;
    }
    if (k == 0 || (k < ds->n && ds->drop)) {
        rows_free(it, k);
        return FERRY_END;
    }
    int rc = FERRY_OK;
    for (int64_t i = 0; !rc && i < k; i++)
        if (it->rows[i]->n != nc)
            rc = ferry__fail(st, FERRY_ETYPE,
                             "padded_batch: input element has %u components but the input's spec has %zu",
                             it->rows[i]->n, nc);
    ferry_element *b = NULL;
    if (!rc) {
        b = ferry__element_new(it_->ctx.rt, nc);
        if (!b) rc = ferry__fail(st, FERRY_ENOMEM, "padded_batch: allocating an element failed");
    }
    for (size_t c = 0; !rc && c < nc; c++) rc = padded_component(it, c, k, &b->t[c], st);
    rows_free(it, k);
    if (rc) {
        ferry_element_free(b);
        return rc;
    }
    *out = b;
    return FERRY_OK;
}

/* ---- protocol ----------------------------------------------------------------------------- */
static int batch_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    batch_it *it = (batch_it *)it_;
    ferry__w_u8(w, it->ended ? 1 : 0);
    return ferry__iter_save(it->input, w, st);
}

static void batch_destroy(ferry__iter *it_) {
    batch_it *it = (batch_it *)it_;
    ferry_runtime *rt = it_->ctx.rt;
    ferry__iter_free(it->input);
    ferry__stack_free(it->stk);
    ferry__free(rt, it->rows);
    ferry__iter_release(it_);
}

static const ferry__iter_vtable batch_iter_vt = {batch_next, batch_save, NULL, batch_destroy};
static const ferry__iter_vtable padded_iter_vt = {padded_next, batch_save, NULL, batch_destroy};

static int batch_make(ferry_dataset *ds_, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                      ferry__status *st) {
    const batch_ds *ds = (const batch_ds *)ds_;
    batch_it *it = ferry__iter_alloc(ds_, ctx, ds->padded ? &padded_iter_vt : &batch_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    int rc = FERRY_OK;
    if (!ds->padded) rc = ferry__stack_new(ctx->rt, ds_->ncomp, ds->n, &it->stk, st);
    if (!rc && state) {
        uint8_t ended;
        rc = ferry__r_u8(state, &ended, st);
        if (!rc && ended > 1)
            rc = ferry__fail(st, FERRY_ECORRUPT, "%s: saved state corrupt: flag %u at offset %zu", ds_->name, ended,
                             ferry__r_offset(state) - 1);
        it->ended = ended == 1;
    }
    if (!rc) rc = ferry__iter_make(ds_->inputs[0], ctx, state, &it->input, st);
    if (rc) {
        batch_destroy(&it->base);
        return rc;
    }
    *out = &it->base;
    return FERRY_OK;
}

static void batch_ds_destroy(ferry_dataset *ds_) {
    batch_ds *ds = (batch_ds *)ds_;
    if (ds->pvalues)
        for (size_t c = 0; c < ds_->ncomp; c++) ferry_tensor_unref(ds->pvalues[c]);
    ferry__free(ds_->rt, ds->pvalues);
    ferry__free(ds_->rt, ds->pshapes);
}

/* Rewrite rule: batch over a parallel map in input order -> map_and_batch. */
static void batch_rewrite(ferry_dataset *ds_, ferry_dataset *const *inputs, ferry_dataset **out) {
    const batch_ds *ds = (const batch_ds *)ds_;
    if (!ds->padded) ferry__map_and_batch_rewrite(ds_, ds->n, ds->drop, inputs, out);
}

static const ferry__dataset_vtable batch_vt = {
    .make = batch_make, .destroy = batch_ds_destroy, .rewrite = batch_rewrite};

static int64_t batch_cardinality(int64_t in, int64_t n, bool drop) {
    if (in < 0) return in; /* FERRY_INFINITE and FERRY_UNKNOWN propagate */
    return drop ? in / n : in / n + (in % n != 0);
}

int ferry_dataset_batch(ferry_dataset *in, int64_t batch_size, const ferry_batch_options *opts, ferry_dataset **out) {
    FERRY__OP_PROLOGUE(in, opts, out);
    bool drop_remainder = opts && opts->drop_remainder;
    FERRY__CHECK_ARG(batch_size >= 1, FERRY_EINVAL, "%s: argument 'batch_size' is %lld; it must be >= 1", __func__,
                     (long long)batch_size);
    ferry_runtime *rt = in->rt;
    size_t nc = in->ncomp;
    ferry_tensor_spec *specs = nc ? ferry__calloc(rt, nc, sizeof *specs) : NULL;
    if (nc && !specs) return ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the specs failed", __func__);
    for (size_t c = 0; c < nc; c++) {
        const ferry_tensor_spec *s = &in->specs[c];
        if (s->shape.rank >= FERRY_MAX_RANK) {
            ferry__free(rt, specs);
            return ferry__set_last_error(FERRY_EINVAL,
                                         "%s: component %zu has rank %d; a batch of it would have "
                                         "rank %d, above the maximum %d",
                                         __func__, c, s->shape.rank, s->shape.rank + 1, FERRY_MAX_RANK);
        }
        specs[c].dtype = s->dtype;
        specs[c].shape.rank = s->shape.rank < 0 ? FERRY_UNKNOWN_RANK : s->shape.rank + 1;
        if (s->shape.rank >= 0) {
            specs[c].shape.dims[0] = drop_remainder ? batch_size : FERRY_UNKNOWN_DIM;
            for (int d = 0; d < s->shape.rank; d++) specs[c].shape.dims[d + 1] = s->shape.dims[d];
        }
    }
    ferry_dataset *ds;
    int rc = ferry__dataset_new(rt, &batch_vt, "batch", sizeof(batch_ds), 1, &in, nc, specs,
                                batch_cardinality(in->cardinality, batch_size, drop_remainder), &ds);
    ferry__free(rt, specs);
    if (rc) return rc;
    batch_ds *b = (batch_ds *)ds;
    b->n = batch_size;
    b->drop = drop_remainder;
    ferry__dataset_hash_i64(ds, batch_size);
    ferry__dataset_hash_i64(ds, drop_remainder);
    ds->assembles = true;
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}

int ferry_dataset_padded_batch(ferry_dataset *in, int64_t batch_size, const ferry_padded_batch_options *opts,
                               ferry_dataset **out) {
    FERRY__OP_PROLOGUE(in, opts, out);
    bool drop_remainder = opts && opts->drop_remainder;
    FERRY__CHECK_ARG(batch_size >= 1, FERRY_EINVAL, "%s: argument 'batch_size' is %lld; it must be >= 1", __func__,
                     (long long)batch_size);
    ferry_runtime *rt = in->rt;
    const size_t nc = in->ncomp;
    char a[128], b[128];
    /* Check everything before allocating. */
    for (size_t c = 0; c < nc; c++) {
        const ferry_tensor_spec *s = &in->specs[c];
        if (opts && opts->padded_shapes) {
            const ferry_shape *ps = &opts->padded_shapes[c];
            FERRY__CHECK_ARG(ps->rank == FERRY_UNKNOWN_RANK || (ps->rank >= 0 && ps->rank < FERRY_MAX_RANK),
                             FERRY_EINVAL,
                             "%s: options.padded_shapes[%zu].rank is %d; it must be "
                             "FERRY_UNKNOWN_RANK or 0 to %d",
                             __func__, c, ps->rank, FERRY_MAX_RANK - 1);
            for (int d = 0; d < ps->rank; d++)
                FERRY__CHECK_ARG(ps->dims[d] >= 0 || ps->dims[d] == FERRY_UNKNOWN_DIM, FERRY_EINVAL,
                                 "%s: options.padded_shapes[%zu].dims[%d] is %lld; it must be "
                                 ">= 0 or FERRY_UNKNOWN_DIM",
                                 __func__, c, d, (long long)ps->dims[d]);
            if (ps->rank >= 0 && s->shape.rank >= 0) {
                FERRY__CHECK_ARG(ps->rank == s->shape.rank, FERRY_EINVAL,
                                 "%s: options.padded_shapes[%zu] is %s, rank %d, but component "
                                 "%zu has shape %s, rank %d",
                                 __func__, c, ferry__shape_str(ps, a, sizeof a), ps->rank, c,
                                 ferry__shape_str(&s->shape, b, sizeof b), s->shape.rank);
                for (int d = 0; d < ps->rank; d++)
                    FERRY__CHECK_ARG(
                        ps->dims[d] < 0 || s->shape.dims[d] < 0 || ps->dims[d] >= s->shape.dims[d], FERRY_EINVAL,
                        "%s: options.padded_shapes[%zu] is %s, smaller than "
                        "component %zu's shape %s in dim %d",
                        __func__, c, ferry__shape_str(ps, a, sizeof a), c, ferry__shape_str(&s->shape, b, sizeof b), d);
            }
        }
        FERRY__CHECK_ARG(s->shape.rank < FERRY_MAX_RANK, FERRY_EINVAL,
                         "%s: component %zu has rank %d; a batch of it would have rank %d, "
                         "above the maximum %d",
                         __func__, c, s->shape.rank, s->shape.rank + 1, FERRY_MAX_RANK);
        if (opts && opts->padding_values && opts->padding_values[c]) {
            const ferry_tensor *pv = opts->padding_values[c];
            FERRY__CHECK_ARG(pv->rank == 0, FERRY_EINVAL,
                             "%s: options.padding_values[%zu] has rank %d; it must be a scalar", __func__, c, pv->rank);
            FERRY__CHECK_ARG(s->dtype == FERRY_DTYPE_INVALID || pv->dtype == s->dtype, FERRY_EINVAL,
                             "%s: options.padding_values[%zu] is %s but component %zu is %s", __func__, c,
                             ferry_dtype_name(pv->dtype), c, ferry_dtype_name(s->dtype));
        }
    }
    ferry_tensor_spec *specs = nc ? ferry__calloc(rt, nc, sizeof *specs) : NULL;
    ferry_shape *pshapes = nc ? ferry__calloc(rt, nc, sizeof *pshapes) : NULL;
    ferry_tensor **pvalues = nc ? ferry__calloc(rt, nc, sizeof *pvalues) : NULL;
    if (nc && (!specs || !pshapes || !pvalues)) {
        ferry__free(rt, specs);
        ferry__free(rt, pshapes);
        ferry__free(rt, pvalues);
        return ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the options failed", __func__);
    }
    for (size_t c = 0; c < nc; c++) {
        const ferry_tensor_spec *s = &in->specs[c];
        ferry_shape ps = {.rank = FERRY_UNKNOWN_RANK};
        if (opts && opts->padded_shapes) ps = opts->padded_shapes[c];
        for (int d = ps.rank < 0 ? 0 : ps.rank; d < FERRY_MAX_RANK; d++) ps.dims[d] = 0;
        pshapes[c] = ps;
        int r = ps.rank >= 0 ? ps.rank : s->shape.rank;
        specs[c].dtype = s->dtype;
        specs[c].shape.rank = r < 0 ? FERRY_UNKNOWN_RANK : r + 1;
        if (r >= 0) {
            specs[c].shape.dims[0] = drop_remainder ? batch_size : FERRY_UNKNOWN_DIM;
            for (int d = 0; d < r; d++) {
                int64_t v = FERRY_UNKNOWN_DIM;
                if (ps.rank >= 0 && ps.dims[d] >= 0) v = ps.dims[d];
                else if (s->shape.rank >= 0) v = s->shape.dims[d]; /* every row has it: the longest too */
                specs[c].shape.dims[d + 1] = v;
            }
        }
        if (opts && opts->padding_values && opts->padding_values[c])
            pvalues[c] = ferry_tensor_ref(opts->padding_values[c]);
    }
    ferry_dataset *ds;
    int rc = ferry__dataset_new(rt, &batch_vt, "padded_batch", sizeof(batch_ds), 1, &in, nc, specs,
                                batch_cardinality(in->cardinality, batch_size, drop_remainder), &ds);
    ferry__free(rt, specs);
    if (rc) {
        for (size_t c = 0; c < nc; c++) ferry_tensor_unref(pvalues[c]);
        ferry__free(rt, pvalues);
        ferry__free(rt, pshapes);
        return rc;
    }
    batch_ds *bd = (batch_ds *)ds;
    bd->n = batch_size;
    bd->drop = drop_remainder;
    bd->padded = true;
    bd->pshapes = pshapes;
    bd->pvalues = pvalues;
    ferry__dataset_hash_i64(ds, batch_size);
    ferry__dataset_hash_i64(ds, drop_remainder);
    for (size_t c = 0; c < nc; c++) {
        ferry__dataset_hash_i64(ds, pshapes[c].rank);
        for (int d = 0; d < pshapes[c].rank; d++) ferry__dataset_hash_i64(ds, pshapes[c].dims[d]);
        const ferry_tensor *pv = pvalues[c];
        ferry__dataset_hash_i64(ds, pv ? pv->dtype : 0);
        if (pv && pv->dtype == FERRY_DTYPE_BYTES) {
            size_t len;
            const uint8_t *s = ferry__tensor_str(pv, 0, &len);
            ferry__dataset_hash_i64(ds, (int64_t)len);
            ferry__dataset_hash(ds, s, len);
        } else if (pv) {
            ferry__dataset_hash(ds, pv->data, ferry_dtype_size(pv->dtype));
        }
    }
    ds->assembles = true;
    FERRY__OP_SEAL(ds, opts, out);
    return FERRY_OK;
}
