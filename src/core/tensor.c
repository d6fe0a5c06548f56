/*
 * tensor.c - tensors and elements.
 *
 * A tensor's storage is owned by a "base" tensor: inline right after the struct (one allocation
 * per tensor, so a scalar costs one block), or caller memory wrapped with a release callback.
 * A slice is a tensor whose `base` holds a reference to the owner and whose data pointer points
 * into it, so slices and batch rows share bytes. FERRY_DTYPE_BYTES storage is uint64 offsets[n+1]
 * followed by the string bytes; a slice points into the owner's offsets.
 *
 * Reference counts are C11 atomics: tensors are immutable once shared and may be read by any
 * thread. Elements are plain arrays of references with one owner at a time.
 */
#include "core.h"

#include <string.h>

/* Added to the reference count of a tensor in an element's block while the element lives: the
 * element's hold on the block, apart from the ordinary references (so the count of those stays
 * readable, and the last of either frees the block). */
#define TENSOR_HOLD (1 << 30)

/* Drops `n` from a tensor's count; true when that was all of it. Whoever holds all of the count
 * is its only holder: no other thread can add to it without holding a reference, so a load
 * replaces the read-modify-write, whose locked instruction waits for every store before it (a
 * freshly written row, say) to leave the store buffer. The acquire pairs with the release of any
 * reference dropped before. */
static inline bool refs_drop(_Atomic int *refs, int n) {
    if (atomic_load_explicit(refs, memory_order_acquire) == n) return true;
    return atomic_fetch_sub_explicit(refs, n, memory_order_acq_rel) == n;
}

static const struct {
    const char *name;
    size_t size;
} dtype_info[FERRY_DTYPE_COUNT] = {
    [FERRY_DTYPE_INVALID] = {"invalid", 0}, [FERRY_DTYPE_BOOL] = {"bool", 1},
    [FERRY_DTYPE_INT8] = {"int8", 1},       [FERRY_DTYPE_INT16] = {"int16", 2},
    [FERRY_DTYPE_INT32] = {"int32", 4},     [FERRY_DTYPE_INT64] = {"int64", 8},
    [FERRY_DTYPE_UINT8] = {"uint8", 1},     [FERRY_DTYPE_UINT16] = {"uint16", 2},
    [FERRY_DTYPE_UINT32] = {"uint32", 4},   [FERRY_DTYPE_UINT64] = {"uint64", 8},
    [FERRY_DTYPE_FLOAT16] = {"float16", 2}, [FERRY_DTYPE_BFLOAT16] = {"bfloat16", 2},
    [FERRY_DTYPE_FLOAT32] = {"float32", 4}, [FERRY_DTYPE_FLOAT64] = {"float64", 8},
    [FERRY_DTYPE_BYTES] = {"bytes", 0},
};

size_t ferry_dtype_size(ferry_dtype dtype) {
    if ((int)dtype <= 0 || dtype >= FERRY_DTYPE_COUNT) return 0;
    return dtype_info[dtype].size;
}

const char *ferry_dtype_name(ferry_dtype dtype) {
    if ((int)dtype < 0 || dtype >= FERRY_DTYPE_COUNT) return "invalid";
    return dtype_info[dtype].name;
}

int64_t ferry__num_entries(int rank, const int64_t *dims) {
    int64_t n = 1;
    for (int i = 0; i < rank; i++) {
        if (dims[i] < 0) return -1;
        if (dims[i] != 0 && n > INT64_MAX / dims[i]) return -1;
        n *= dims[i];
    }
    return n;
}

const char *ferry__shape_str(const ferry_shape *s, char *buf, size_t cap) {
    if (s->rank < 0) {
        snprintf(buf, cap, "<unknown rank>");
        return buf;
    }
    size_t k = 0;
    k += (size_t)snprintf(buf + k, cap - k, "[");
    for (int i = 0; i < s->rank && k < cap; i++) {
        if (s->dims[i] < 0) k += (size_t)snprintf(buf + k, cap - k, "%s?", i ? ", " : "");
        else k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)s->dims[i]);
    }
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

static int check_shape_args(ferry_runtime *rt, int rank, const int64_t *dims, const char *fn, int64_t *n) {
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", fn);
    FERRY__CHECK_ARG(rank >= 0 && rank <= FERRY_MAX_RANK, FERRY_EINVAL, "%s: argument 'rank' is %d; it must be 0 to %d",
                     fn, rank, FERRY_MAX_RANK);
    FERRY__CHECK_ARG(rank == 0 || dims != NULL, FERRY_EINVAL, "%s: argument 'dims' is NULL with rank %d", fn, rank);
    for (int i = 0; i < rank; i++)
        FERRY__CHECK_ARG(dims[i] >= 0, FERRY_EINVAL, "%s: dims[%d] is %lld; dims must be >= 0", fn, i,
                         (long long)dims[i]);
    *n = ferry__num_entries(rank, dims);
    FERRY__CHECK_ARG(*n >= 0, FERRY_ETOOLARGE, "%s: the product of dims overflows int64", fn);
    return FERRY_OK;
}

static void init_header(ferry_tensor *t, ferry_runtime *rt, ferry_dtype dtype, int rank, const int64_t *dims,
                        int64_t n) {
    atomic_init(&t->refs, 1);
    t->dtype = dtype;
    t->rank = rank;
    for (int i = 0; i < rank; i++) t->dims[i] = dims[i];
    if (rank < FERRY_MAX_RANK) memset(t->dims + rank, 0, (size_t)(FERRY_MAX_RANK - rank) * sizeof t->dims[0]);
    t->n = n;
    t->rt = rt;
    t->base = NULL;
    t->blob = NULL;
    t->release = NULL;
    t->release_user = t->release_data = NULL;
    t->wrapped = false;
    t->block = NULL;
}

int ferry__tensor_new(ferry_runtime *rt, ferry_dtype dtype, int rank, const int64_t *dims, ferry_tensor **out,
                      ferry__status *st) {
    *out = NULL;
    int64_t n = ferry__num_entries(rank, dims);
    size_t es = ferry_dtype_size(dtype);
    if (n < 0 || es == 0 || (uint64_t)n > (SIZE_MAX - sizeof(ferry_tensor) - 16) / es)
        return ferry__fail(st, FERRY_ETOOLARGE, "tensor of %s with %lld entries is too large", ferry_dtype_name(dtype),
                           (long long)n);
    size_t nbytes = (size_t)n * es;
    ferry_tensor *t = ferry__alloc(rt, sizeof *t + nbytes);
    if (!t)
        return ferry__fail(st, FERRY_ENOMEM, "allocating a %s tensor of %zu bytes failed", ferry_dtype_name(dtype),
                           nbytes);
    init_header(t, rt, dtype, rank, dims, n);
    t->data = (uint8_t *)(t + 1);
    t->nbytes = nbytes;
    *out = t;
    return FERRY_OK;
}

int ferry__tensor_new_bytes(ferry_runtime *rt, int rank, const int64_t *dims, size_t blob_size, ferry_tensor **out,
                            ferry__status *st) {
    *out = NULL;
    int64_t n = ferry__num_entries(rank, dims);
    if (n < 0 || (uint64_t)n > (SIZE_MAX / 2) / 8 ||
        blob_size > SIZE_MAX / 2 - (size_t)(n + 1) * 8 - sizeof(ferry_tensor))
        return ferry__fail(st, FERRY_ETOOLARGE, "bytes tensor with %lld entries and %zu bytes is too large",
                           (long long)n, blob_size);
    size_t offs = (size_t)(n + 1) * 8;
    ferry_tensor *t = ferry__alloc(rt, sizeof *t + offs + blob_size);
    if (!t) return ferry__fail(st, FERRY_ENOMEM, "allocating a bytes tensor of %zu bytes failed", offs + blob_size);
    init_header(t, rt, FERRY_DTYPE_BYTES, rank, dims, n);
    t->data = (uint8_t *)(t + 1);
    t->blob = t->data + offs;
    ferry__tensor_offsets(t)[0] = 0;
    t->nbytes = blob_size + (size_t)n * 8;
    *out = t;
    return FERRY_OK;
}

int ferry_tensor_create(ferry_runtime *rt, ferry_dtype dtype, int rank, const int64_t *dims, ferry_tensor **out) {
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    int64_t n;
    int rc = check_shape_args(rt, rank, dims, __func__, &n);
    if (rc) return rc;
    FERRY__CHECK_ARG(ferry_dtype_size(dtype) > 0, FERRY_EINVAL,
                     "%s: dtype %d is not a numeric dtype (use ferry_tensor_create_bytes for bytes)", __func__,
                     (int)dtype);
    ferry__status st;
    rc = ferry__tensor_new(rt, dtype, rank, dims, out, &st);
    if (rc) return ferry__set_last_error(rc, "%s: %s", __func__, st.msg);
    memset((*out)->data, 0, (*out)->nbytes);
    return FERRY_OK;
}

int ferry_tensor_wrap(ferry_runtime *rt, ferry_dtype dtype, int rank, const int64_t *dims, void *data, size_t nbytes,
                      void (*release)(void *user, void *data), void *release_user, ferry_tensor **out) {
    int64_t n;
    int rc = FERRY_OK;
    if (out) *out = NULL;
    if (!out) rc = ferry__set_last_error(FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    if (!rc) rc = check_shape_args(rt, rank, dims, __func__, &n);
    size_t es = ferry_dtype_size(dtype);
    if (!rc && es == 0)
        rc = ferry__set_last_error(FERRY_EINVAL, "%s: dtype %d is not a numeric dtype", __func__, (int)dtype);
    if (!rc && (uint64_t)n > SIZE_MAX / es) rc = ferry__set_last_error(FERRY_ETOOLARGE, "%s: too large", __func__);
    if (!rc && nbytes != (size_t)n * es)
        rc = ferry__set_last_error(FERRY_EINVAL, "%s: nbytes is %zu but the shape and dtype need %zu", __func__, nbytes,
                                   (size_t)n * es);
    if (!rc && data == NULL && nbytes > 0)
        rc = ferry__set_last_error(FERRY_EINVAL, "%s: argument 'data' is NULL", __func__);
    ferry_tensor *t = NULL;
    if (!rc) {
        t = ferry__alloc(rt, sizeof *t);
        if (!t) rc = ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the tensor failed", __func__);
    }
    if (rc) {
        if (release) release(release_user, data); /* takes `data` (even NULL), also on failure */
        return rc;
    }
    init_header(t, rt, dtype, rank, dims, n);
    t->data = data;
    t->nbytes = nbytes;
    t->release = release;
    t->release_user = release_user;
    t->release_data = data;
    t->wrapped = true;
    *out = t;
    return FERRY_OK;
}

int ferry_tensor_create_bytes(ferry_runtime *rt, int rank, const int64_t *dims, const void *const *ptrs,
                              const size_t *lens, ferry_tensor **out) {
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    int64_t n;
    int rc = check_shape_args(rt, rank, dims, __func__, &n);
    if (rc) return rc;
    FERRY__CHECK_ARG(n == 0 || (ptrs != NULL && lens != NULL), FERRY_EINVAL,
                     "%s: arguments 'ptrs' and 'lens' must not be NULL for %lld entries", __func__, (long long)n);
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        FERRY__CHECK_ARG(ptrs[i] != NULL || lens[i] == 0, FERRY_EINVAL, "%s: ptrs[%lld] is NULL with lens[%lld] = %zu",
                         __func__, (long long)i, (long long)i, lens[i]);
        FERRY__CHECK_ARG(lens[i] <= SIZE_MAX / 4 - total, FERRY_ETOOLARGE, "%s: too large", __func__);
        total += lens[i];
    }
    ferry__status st;
    ferry_tensor *t;
    rc = ferry__tensor_new_bytes(rt, rank, dims, total, &t, &st);
    if (rc) return ferry__set_last_error(rc, "%s: %s", __func__, st.msg);
    uint64_t *off = ferry__tensor_offsets(t);
    uint8_t *blob = ferry__tensor_blob_mut(t);
    size_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        if (lens[i]) memcpy(blob + k, ptrs[i], lens[i]);
        k += lens[i];
        off[i + 1] = k;
    }
    *out = t;
    return FERRY_OK;
}

int ferry_tensor_scalar_i64(ferry_runtime *rt, int64_t value, ferry_tensor **out) {
    int rc = ferry_tensor_create(rt, FERRY_DTYPE_INT64, 0, NULL, out);
    if (rc == FERRY_OK) memcpy((*out)->data, &value, sizeof value);
    return rc;
}

int ferry_tensor_scalar_f32(ferry_runtime *rt, float value, ferry_tensor **out) {
    int rc = ferry_tensor_create(rt, FERRY_DTYPE_FLOAT32, 0, NULL, out);
    if (rc == FERRY_OK) memcpy((*out)->data, &value, sizeof value);
    return rc;
}

ferry_tensor *ferry_tensor_ref(ferry_tensor *t) {
    if (t) atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

void ferry_tensor_unref(ferry_tensor *t) {
    while (t) {
        if (!refs_drop(&t->refs, 1)) return;
        ferry_tensor *base = t->base;
        if (t->release) t->release(t->release_user, t->release_data);
        ferry__free(t->rt, t->block ? t->block : t);
        t = base; /* drop the slice's reference to its owner without recursion */
    }
}

ferry_dtype ferry_tensor_dtype(const ferry_tensor *t) { return t ? t->dtype : FERRY_DTYPE_INVALID; }
int ferry_tensor_rank(const ferry_tensor *t) { return t ? t->rank : FERRY_UNKNOWN_RANK; }
int64_t ferry_tensor_dim(const ferry_tensor *t, int i) { return (t && i >= 0 && i < t->rank) ? t->dims[i] : -1; }

ferry_shape ferry_tensor_shape(const ferry_tensor *t) {
    ferry_shape s = {.rank = FERRY_UNKNOWN_RANK};
    if (!t) return s;
    s.rank = t->rank;
    for (int i = 0; i < FERRY_MAX_RANK; i++) s.dims[i] = i < t->rank ? t->dims[i] : 0;
    return s;
}

int64_t ferry_tensor_num_entries(const ferry_tensor *t) { return t ? t->n : 0; }
size_t ferry_tensor_nbytes(const ferry_tensor *t) { return t ? t->nbytes : 0; }
const void *ferry_tensor_data(const ferry_tensor *t) { return (t && t->dtype != FERRY_DTYPE_BYTES) ? t->data : NULL; }

void *ferry_tensor_mutable_data(ferry_tensor *t) {
    if (!t || t->dtype == FERRY_DTYPE_BYTES || t->base || t->wrapped) return NULL;
    if ((atomic_load_explicit(&t->refs, memory_order_acquire) & ~TENSOR_HOLD) != 1) return NULL;
    return t->data;
}

int ferry_tensor_bytes_get(const ferry_tensor *t, int64_t i, const uint8_t **data, size_t *len) {
    if (data) *data = NULL;
    if (len) *len = 0;
    FERRY__CHECK_ARG(t != NULL, FERRY_EINVAL, "%s: argument 't' is NULL", __func__);
    FERRY__CHECK_ARG(data != NULL && len != NULL, FERRY_EINVAL, "%s: arguments 'data' and 'len' must not be NULL",
                     __func__);
    FERRY__CHECK_ARG(t->dtype == FERRY_DTYPE_BYTES, FERRY_EINVAL, "%s: the tensor is %s, not bytes", __func__,
                     ferry_dtype_name(t->dtype));
    FERRY__CHECK_ARG(i >= 0 && i < t->n, FERRY_EINVAL, "%s: index %lld is out of range [0, %lld)", __func__,
                     (long long)i, (long long)t->n);
    *data = ferry__tensor_str(t, i, len);
    return FERRY_OK;
}

int ferry_tensor_slice(ferry_tensor *t, int64_t start, int64_t count, ferry_tensor **out) {
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    FERRY__CHECK_ARG(t != NULL, FERRY_EINVAL, "%s: argument 't' is NULL", __func__);
    FERRY__CHECK_ARG(t->rank >= 1, FERRY_EINVAL, "%s: the tensor is a scalar; slicing needs rank >= 1", __func__);
    FERRY__CHECK_ARG(start >= 0 && count >= 0 && start <= t->dims[0] && count <= t->dims[0] - start, FERRY_EINVAL,
                     "%s: rows [%lld, %lld) are out of range for dim 0 of size %lld", __func__, (long long)start,
                     (long long)(start + count), (long long)t->dims[0]);
    ferry_tensor *s = ferry__alloc(t->rt, sizeof *s);
    if (!s) return ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the slice failed", __func__);
    int64_t dims[FERRY_MAX_RANK];
    memcpy(dims, t->dims, sizeof dims);
    dims[0] = count;
    int64_t row = t->dims[0] ? t->n / t->dims[0] : 0;
    init_header(s, t->rt, t->dtype, t->rank, dims, row * count);
    s->base = ferry_tensor_ref(t->base ? t->base : t);
    if (t->dtype == FERRY_DTYPE_BYTES) {
        s->data = t->data + (size_t)(start * row) * 8;
        s->blob = t->blob;
        const uint64_t *off = (const uint64_t *)(const void *)s->data;
        s->nbytes = (size_t)(off[s->n] - off[0]) + (size_t)s->n * 8;
    } else {
        size_t es = ferry_dtype_size(t->dtype);
        s->data = t->data + (size_t)(start * row) * es;
        s->nbytes = (size_t)s->n * es;
    }
    *out = s;
    return FERRY_OK;
}

int ferry__tensor_row(ferry_tensor *t, int64_t i, ferry_tensor **out, ferry__status *st) {
    *out = NULL;
    ferry_tensor *s = ferry__alloc(t->rt, sizeof *s);
    if (!s) return ferry__fail(st, FERRY_ENOMEM, "allocating a tensor row failed");
    int64_t row = t->dims[0] ? t->n / t->dims[0] : 0;
    init_header(s, t->rt, t->dtype, t->rank - 1, t->dims + 1, row);
    s->base = ferry_tensor_ref(t->base ? t->base : t);
    if (t->dtype == FERRY_DTYPE_BYTES) {
        s->data = t->data + (size_t)(i * row) * 8;
        s->blob = t->blob;
        const uint64_t *off = (const uint64_t *)(const void *)s->data;
        s->nbytes = (size_t)(off[row] - off[0]) + (size_t)row * 8;
    } else {
        size_t es = ferry_dtype_size(t->dtype);
        s->data = t->data + (size_t)(i * row) * es;
        s->nbytes = (size_t)row * es;
    }
    *out = s;
    return FERRY_OK;
}

int ferry__spec_validate(const ferry_tensor_spec *s, const char *fn, const char *field, size_t i) {
    FERRY__CHECK_ARG((int)s->dtype > (int)FERRY_DTYPE_INVALID && s->dtype < FERRY_DTYPE_COUNT, FERRY_EINVAL,
                     "%s: %s[%zu].dtype is %d, not a ferry_dtype", fn, field, i, (int)s->dtype);
    FERRY__CHECK_ARG(s->shape.rank == FERRY_UNKNOWN_RANK || (s->shape.rank >= 0 && s->shape.rank <= FERRY_MAX_RANK),
                     FERRY_EINVAL, "%s: %s[%zu].shape.rank is %d; it must be FERRY_UNKNOWN_RANK or 0 to %d", fn, field,
                     i, s->shape.rank, FERRY_MAX_RANK);
    for (int d = 0; d < s->shape.rank; d++)
        FERRY__CHECK_ARG(s->shape.dims[d] >= 0 || s->shape.dims[d] == FERRY_UNKNOWN_DIM, FERRY_EINVAL,
                         "%s: %s[%zu].shape.dims[%d] is %lld; it must be >= 0 or FERRY_UNKNOWN_DIM", fn, field, i, d,
                         (long long)s->shape.dims[d]);
    return FERRY_OK;
}

int ferry__spec_check(const ferry_tensor_spec *spec, const ferry_tensor *t, const char *what, ferry__status *st) {
    char a[96], b[96];
    if (spec->dtype != FERRY_DTYPE_INVALID && t->dtype != spec->dtype)
        return ferry__fail(st, FERRY_ETYPE, "%s is %s but the spec says %s", what, ferry_dtype_name(t->dtype),
                           ferry_dtype_name(spec->dtype));
    if (spec->shape.rank < 0) return FERRY_OK;
    bool ok = spec->shape.rank == t->rank;
    for (int i = 0; ok && i < t->rank; i++) ok = spec->shape.dims[i] < 0 || spec->shape.dims[i] == t->dims[i];
    if (!ok) {
        ferry_shape ts = ferry_tensor_shape(t);
        return ferry__fail(st, FERRY_ETYPE, "%s has shape %s but the spec says %s", what,
                           ferry__shape_str(&ts, a, sizeof a), ferry__shape_str(&spec->shape, b, sizeof b));
    }
    return FERRY_OK;
}

/* ---- elements --------------------------------------------------------------------------- */
ferry_element *ferry__element_new(ferry_runtime *rt, size_t n) {
    ferry_element *e = ferry__alloc(rt, sizeof *e + n * sizeof(ferry_tensor *));
    if (!e) return NULL;
    e->rt = rt;
    e->n = (uint32_t)n;
    e->own = NULL;
    for (size_t i = 0; i < n; i++) e->t[i] = NULL;
    return e;
}

int ferry__element_new_single(ferry_runtime *rt, ferry_dtype dtype, int rank, const int64_t *dims, ferry_element **out,
                              ferry__status *st) {
    *out = NULL;
    int64_t n = ferry__num_entries(rank, dims);
    size_t es = ferry_dtype_size(dtype);
    const size_t head = (sizeof(ferry_element) + sizeof(ferry_tensor *) + 15) & ~(size_t)15;
    if (n < 0 || es == 0 || (uint64_t)n > (SIZE_MAX - head - sizeof(ferry_tensor) - 16) / es)
        return ferry__fail(st, FERRY_ETOOLARGE, "tensor of %s with %lld entries is too large", ferry_dtype_name(dtype),
                           (long long)n);
    size_t nbytes = (size_t)n * es;
    uint8_t *block = ferry__alloc(rt, head + sizeof(ferry_tensor) + nbytes);
    if (!block)
        return ferry__fail(st, FERRY_ENOMEM, "allocating an element with a %s tensor of %zu bytes failed",
                           ferry_dtype_name(dtype), nbytes);
    ferry_element *e = (ferry_element *)(void *)block;
    ferry_tensor *t = (ferry_tensor *)(void *)(block + head);
    init_header(t, rt, dtype, rank, dims, n);
    atomic_init(&t->refs, 1 + TENSOR_HOLD); /* the element's component, and its hold on the block */
    t->data = (uint8_t *)(t + 1);
    t->nbytes = nbytes;
    t->block = block;
    e->rt = rt;
    e->n = 1;
    e->own = t;
    e->t[0] = t;
    *out = e;
    return FERRY_OK;
}

int ferry_element_create(ferry_runtime *rt, size_t n, ferry_tensor *const *tensors, ferry_element **out) {
    int rc = FERRY_OK;
    if (!out) rc = ferry__set_last_error(FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    else *out = NULL;
    if (!rc && !rt) rc = ferry__set_last_error(FERRY_EINVAL, "%s: argument 'rt' is NULL", __func__);
    if (!rc && n > 0 && !tensors) rc = ferry__set_last_error(FERRY_EINVAL, "%s: argument 'tensors' is NULL", __func__);
    if (!rc && n > 4096) rc = ferry__set_last_error(FERRY_EINVAL, "%s: n is %zu; at most 4096", __func__, n);
    for (size_t i = 0; !rc && i < n; i++)
        if (!tensors[i]) rc = ferry__set_last_error(FERRY_EINVAL, "%s: tensors[%zu] is NULL", __func__, i);
    ferry_element *e = NULL;
    if (!rc) {
        e = ferry__element_new(rt, n);
        if (!e) rc = ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the element failed", __func__);
    }
    if (rc) {
        for (size_t i = 0; tensors && i < n && n <= 4096; i++) ferry_tensor_unref(tensors[i]);
        return rc;
    }
    for (size_t i = 0; i < n; i++) e->t[i] = tensors[i];
    *out = e;
    return FERRY_OK;
}

void ferry_element_free(ferry_element *e) {
    if (!e) return;
    ferry_tensor *own = e->own;
    /* A source's element whose one tensor nobody else holds (the common case): no thread can
     * take a new reference to it without holding one, so a load replaces two atomic
     * read-modify-writes (the acquire pairs with the release of any reference dropped before). */
    if (own && e->n == 1 && e->t[0] == own &&
        atomic_load_explicit(&own->refs, memory_order_acquire) == TENSOR_HOLD + 1) {
        ferry__free(own->rt, e);
        return;
    }
    for (uint32_t i = 0; i < e->n; i++) ferry_tensor_unref(e->t[i]);
    if (!own) {
        ferry__free(e->rt, e);
    } else if (refs_drop(&own->refs, TENSOR_HOLD)) {
        ferry__free(own->rt, e); /* nobody else holds the tensor: the block (e included) goes */
    }
}

size_t ferry_element_size(const ferry_element *e) { return e ? e->n : 0; }
ferry_tensor *ferry_element_get(const ferry_element *e, size_t i) { return (e && i < e->n) ? e->t[i] : NULL; }

int ferry_element_set(ferry_element *e, size_t i, ferry_tensor *t) {
    if (!e || i >= e->n || !t) {
        ferry_tensor_unref(t);
        if (!e) return ferry__set_last_error(FERRY_EINVAL, "%s: argument 'e' is NULL", __func__);
        if (!t) return ferry__set_last_error(FERRY_EINVAL, "%s: argument 't' is NULL", __func__);
        return ferry__set_last_error(FERRY_EINVAL, "%s: index %zu is out of range [0, %u)", __func__, i, e->n);
    }
    ferry_tensor *old = e->t[i];
    /* The element's own tensor that only this component holds (a map function replacing its
     * input, the common case): the element keeps its hold, so the count becomes the hold alone,
     * and nobody else can be reading it. */
    if (old == e->own && atomic_load_explicit(&old->refs, memory_order_acquire) == TENSOR_HOLD + 1)
        atomic_store_explicit(&old->refs, TENSOR_HOLD, memory_order_release);
    else ferry_tensor_unref(old);
    e->t[i] = t;
    return FERRY_OK;
}

size_t ferry_element_nbytes(const ferry_element *e) {
    size_t n = 0;
    if (!e) return 0;
    for (uint32_t i = 0; i < e->n; i++) n += e->t[i] ? e->t[i]->nbytes : 0;
    return n;
}
