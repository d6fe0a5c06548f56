/*
 * dataset.c - the dataset base shared by every op: construction, references, the element spec,
 * and the parameter hash that makes pipeline fingerprints and per-op seeds.
 *
 * A dataset is immutable after ferry__dataset_seal, so any thread may read it (but for the
 * autotuner's memo, atomics: core.h). Its reference
 * count is atomic; the last unref frees it and drops its inputs.
 */
#include "core.h"

#include <string.h>

int ferry__dataset_new(ferry_runtime *rt, const ferry__dataset_vtable *vt, const char *name, size_t size,
                       size_t ninputs, ferry_dataset *const *inputs, size_t ncomp, const ferry_tensor_spec *specs,
                       int64_t cardinality, ferry_dataset **out) {
    *out = NULL;
    FERRY_ASSERT(size >= sizeof(ferry_dataset));
    ferry_dataset *ds = ferry__alloc(rt, size);
    if (!ds) return ferry__set_last_error(FERRY_ENOMEM, "ferry_dataset_%s: allocating the dataset failed", name);
    memset(ds, 0, size);
    ds->inputs = ninputs ? ferry__calloc(rt, ninputs, sizeof *ds->inputs) : NULL;
    ds->specs = ncomp ? ferry__calloc(rt, ncomp, sizeof *ds->specs) : NULL;
    if ((ninputs && !ds->inputs) || (ncomp && !ds->specs)) {
        ferry__free(rt, ds->inputs);
        ferry__free(rt, ds->specs);
        ferry__free(rt, ds);
        return ferry__set_last_error(FERRY_ENOMEM, "ferry_dataset_%s: allocating the dataset failed", name);
    }
    ds->vt = vt;
    atomic_init(&ds->magic, FERRY__MAGIC_DATASET);
    atomic_init(&ds->refs, 1);
    ds->rt = rt;
    ds->name = name;
    ds->tag = ferry__op_tag(name);
    ds->ninputs = ninputs;
    int depth = 0;
    for (size_t i = 0; i < ninputs; i++) {
        ds->inputs[i] = ferry_dataset_ref(inputs[i]);
        depth = FERRY__MAX(depth, inputs[i]->depth + 1);
        if (inputs[i]->unordered) ds->unordered = true;
    }
    ds->depth = depth;
    ds->ncomp = ncomp;
    if (ncomp) memcpy(ds->specs, specs, ncomp * sizeof *specs);
    ds->cardinality = cardinality;
    ds->params = FERRY__FNV_INIT;
    atomic_fetch_add(&rt->objects, 1);
    *out = ds;
    return FERRY_OK;
}

void ferry__dataset_hash(ferry_dataset *ds, const void *p, size_t n) { ds->params = ferry__fnv64(ds->params, p, n); }

void ferry__dataset_hash_i64(ferry_dataset *ds, int64_t v) {
    uint8_t b[8];
    ferry__store_le64(b, (uint64_t)v);
    ferry__dataset_hash(ds, b, 8);
}

static uint64_t hash_specs(uint64_t h, const ferry_dataset *ds) {
    for (size_t i = 0; i < ds->ncomp; i++) {
        int64_t v[2 + FERRY_MAX_RANK] = {ds->specs[i].dtype, ds->specs[i].shape.rank};
        for (int d = 0; d < FERRY_MAX_RANK && d < ds->specs[i].shape.rank; d++) v[2 + d] = ds->specs[i].shape.dims[d];
        for (size_t k = 0; k < 2 + FERRY_MAX_RANK; k++) {
            uint8_t b[8];
            ferry__store_le64(b, (uint64_t)v[k]);
            h = ferry__fnv64(h, b, 8);
        }
    }
    return h;
}

void ferry__dataset_seal(ferry_dataset *ds) {
    uint64_t h = ferry__fnv64(FERRY__FNV_INIT, ds->name, strlen(ds->name));
    h = ferry__mix64(h, ds->params);
    h = ferry__mix64(h, (uint64_t)ds->depth);
    for (size_t i = 0; i < ds->ninputs; i++) h = ferry__mix64(h, ds->inputs[i]->salt + i);
    ds->salt = h;
}

uint64_t ferry__dataset_fingerprint(const ferry_dataset *ds) {
    uint64_t h = hash_specs(ds->salt, ds);
    for (size_t i = 0; i < ds->ninputs; i++) h = ferry__mix64(h, ferry__dataset_fingerprint(ds->inputs[i]));
    return h;
}

int ferry__check_dataset(const ferry_dataset *ds, const char *fn, const char *arg) {
    if (!ds) return ferry__set_last_error(FERRY_EINVAL, "%s: argument '%s' is NULL", fn, arg);
    if (atomic_load(&((ferry_dataset *)ds)->magic) != FERRY__MAGIC_DATASET ||
        atomic_load(&((ferry_dataset *)ds)->refs) <= 0)
        return ferry__set_last_error(FERRY_EMISUSE,
                                     "%s: argument '%s' is not a live dataset (it was freed, or it is not a "
                                     "ferry_dataset)",
                                     fn, arg);
    return FERRY_OK;
}

ferry_dataset *ferry_dataset_ref(ferry_dataset *ds) {
    if (ds) atomic_fetch_add_explicit(&ds->refs, 1, memory_order_relaxed);
    return ds;
}

void ferry_dataset_unref(ferry_dataset *ds) {
    if (!ds) return;
    if (atomic_fetch_sub_explicit(&ds->refs, 1, memory_order_acq_rel) != 1) return;
    ferry_runtime *rt = ds->rt;
    if (ds->vt->destroy) ds->vt->destroy(ds);
    if (ds->user_free) ds->user_free(ds->user_owned);
    for (size_t i = 0; i < ds->ninputs; i++) ferry_dataset_unref(ds->inputs[i]);
    ferry__free(rt, ds->inputs);
    ferry__free(rt, ds->specs);
    atomic_store(&ds->magic, FERRY__MAGIC_DEAD);
    ferry__free(rt, ds);
    atomic_fetch_sub(&rt->objects, 1);
}

const char *ferry_dataset_name(const ferry_dataset *ds) { return ds ? FERRY__LABEL(ds) : ""; }
const char *ferry_dataset_op(const ferry_dataset *ds) { return ds ? ds->name : ""; }

int ferry__check_name(const char *fn, const char *name) {
    if (!name) return FERRY_OK;
    size_t n = strnlen(name, FERRY_NAME_MAX + 1);
    if (n > FERRY_NAME_MAX)
        return ferry__set_last_error(FERRY_EINVAL, "%s: opts->name is longer than %d bytes", fn, FERRY_NAME_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return ferry__set_last_error(FERRY_EINVAL, "%s: opts->name has a control character (0x%02x) at byte %zu",
                                         fn, (unsigned)(unsigned char)name[i], i);
    return FERRY_OK;
}

void ferry__dataset_set_label(ferry_dataset *ds, const char *name) {
    size_t n = name ? strnlen(name, FERRY_NAME_MAX) : 0;
    if (n == FERRY_NAME_MAX) /* cut before a UTF-8 character, not inside one */
        while (n > 0 && ((unsigned char)name[n] & 0xC0) == 0x80) n--;
    memcpy(ds->label, name ? name : "", n);
    ds->label[n] = '\0';
}

void ferry__dataset_own_user(ferry_dataset *ds, void *user, void (*user_free)(void *user)) {
    ds->user_owned = user;
    ds->user_free = user_free;
}
size_t ferry_dataset_num_components(const ferry_dataset *ds) { return ds ? ds->ncomp : 0; }
int64_t ferry_dataset_cardinality(const ferry_dataset *ds) { return ds ? ds->cardinality : FERRY_UNKNOWN; }
ferry_runtime *ferry_dataset_runtime(const ferry_dataset *ds) { return ds ? ds->rt : NULL; }

int ferry_dataset_component_spec(const ferry_dataset *ds, size_t i, ferry_tensor_spec *out) {
    int rc = ferry__check_dataset(ds, __func__, "ds");
    if (rc) return rc;
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    FERRY__CHECK_ARG(i < ds->ncomp, FERRY_EINVAL, "%s: component %zu is out of range; the dataset has %zu", __func__, i,
                     ds->ncomp);
    *out = ds->specs[i];
    return FERRY_OK;
}
