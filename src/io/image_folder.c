/*
 * image_folder.c - ferry_dataset_image_folder: root/CLASS/FILE images as (encoded bytes, label),
 * as torchvision's ImageFolder and Keras' image_dataset_from_directory lay them out.
 *
 * At make time the directory is listed once (platform's glob, two levels below root): files
 * whose name ends in .jpg, .jpeg or .png (any case) directly in a subdirectory of root; class
 * names are the subdirectories that hold one, sorted bytewise (strcmp), labels 0, 1, ... in that
 * order; the samples are ordered by label, then by file name. The dataset owns the paths and
 * class names, hashes them into its parameters (a state saved against another listing fails
 * with FERRY_EMISMATCH) and is then immutable. An iterator reads file `next` whole (its size
 * first, then the bytes) on the thread that pulls it: a file that cannot be opened or read is
 * one error in its position, naming the path; the iteration goes on. State: one integer; skip
 * is O(1). Decoding is a separate map (ferry_dataset_decode_image), so that it runs in parallel
 * where the reading need not.
 */
#include "io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define FOLDER_MAX_FILE ((size_t)1 << 30)

typedef struct folder_ds {
    ferry_dataset base;
    size_t n, nclasses;
    char **paths;    /* n, ordered by label then name */
    int64_t *labels; /* n */
    char **classes;  /* nclasses, sorted */
} folder_ds;

typedef struct folder_it {
    ferry__iter base;
    int64_t next;
} folder_it;

static int folder_next(ferry__iter *it_, ferry_element **out, ferry__status *st) {
    folder_it *it = (folder_it *)it_;
    const folder_ds *ds = (const folder_ds *)it_->ds;
    if (it->next >= (int64_t)ds->n) return FERRY_END;
    size_t i = (size_t)it->next++;
    ferry_runtime *rt = it_->ctx.rt;
    const char *path = ds->paths[i];
    size_t size;
    int e = ferry__file_size(path, &size);
    if (e) return ferry__fail(st, e == ENOENT ? FERRY_ENOTFOUND : FERRY_EIO, "image_folder: %s: %s", path, strerror(e));
    if (size > FOLDER_MAX_FILE)
        return ferry__fail(st, FERRY_ETOOLARGE, "image_folder: %s: %zu bytes, over the limit of %zu", path, size,
                           FOLDER_MAX_FILE);
    ferry_tensor *img, *label;
    int rc = ferry__tensor_new_bytes(rt, 0, NULL, size, &img, st);
    if (rc) return rc;
    ferry__tensor_offsets(img)[1] = size;
    e = size ? ferry__file_read_exact(path, ferry__tensor_blob_mut(img), size) : 0;
    if (e) {
        ferry_tensor_unref(img);
        return ferry__fail(st, e == ENOENT ? FERRY_ENOTFOUND : FERRY_EIO, "image_folder: %s: %s", path,
                           e == EAGAIN ? "the file shrank while it was read" : strerror(e));
    }
    rc = ferry__tensor_new(rt, FERRY_DTYPE_INT64, 0, NULL, &label, st);
    if (rc) {
        ferry_tensor_unref(img);
        return rc;
    }
    *(int64_t *)ferry_tensor_mutable_data(label) = ds->labels[i];
    ferry_element *el = ferry__element_new(rt, 2);
    if (!el) {
        ferry_tensor_unref(img);
        ferry_tensor_unref(label);
        return ferry__fail(st, FERRY_ENOMEM, "image_folder: allocating an element failed");
    }
    el->t[0] = img;
    el->t[1] = label;
    *out = el;
    return FERRY_OK;
}

static int folder_skip(ferry__iter *it_, int64_t n, int64_t *skipped, ferry__status *st) {
    FERRY__UNUSED(st);
    folder_it *it = (folder_it *)it_;
    int64_t left = (int64_t)((const folder_ds *)it_->ds)->n - it->next;
    *skipped = n < left ? n : left;
    it->next += *skipped;
    return FERRY_OK;
}

static int folder_save(ferry__iter *it_, ferry__writer *w, ferry__status *st) {
    FERRY__UNUSED(st);
    ferry__w_i64(w, ((folder_it *)it_)->next);
    return FERRY_OK;
}

static void folder_destroy(ferry__iter *it_) { ferry__iter_release(it_); }

static const ferry__iter_vtable folder_iter_vt = {folder_next, folder_save, folder_skip, folder_destroy};

static int folder_make(ferry_dataset *ds_, const ferry__ictx *ctx, ferry__reader *state, ferry__iter **out,
                       ferry__status *st) {
    const folder_ds *ds = (const folder_ds *)ds_;
    folder_it *it = ferry__iter_alloc(ds_, ctx, &folder_iter_vt, sizeof *it, st);
    if (!it) return st->code;
    if (state) {
        int rc = ferry__r_i64(state, &it->next, st);
        if (rc == FERRY_OK && (it->next < 0 || it->next > (int64_t)ds->n))
            rc = ferry__fail(st, FERRY_ECORRUPT, "image_folder: saved position %lld is outside [0, %zu]",
                             (long long)it->next, ds->n);
        if (rc) {
            folder_destroy(&it->base);
            return rc;
        }
    }
    *out = &it->base;
    return FERRY_OK;
}

static void folder_ds_destroy(ferry_dataset *ds_) {
    folder_ds *ds = (folder_ds *)ds_;
    for (size_t i = 0; ds->paths && i < ds->n; i++) ferry__free(ds_->rt, ds->paths[i]);
    for (size_t i = 0; ds->classes && i < ds->nclasses; i++) ferry__free(ds_->rt, ds->classes[i]);
    ferry__free(ds_->rt, ds->paths);
    ferry__free(ds_->rt, ds->labels);
    ferry__free(ds_->rt, ds->classes);
}

static const ferry__dataset_vtable folder_vt = {.make = folder_make, .destroy = folder_ds_destroy};

/* ---- listing --------------------------------------------------------------------------------- */
static bool is_image_name(const char *name) {
    static const char *const ext[] = {".jpg", ".jpeg", ".png"};
    size_t n = strlen(name);
    for (size_t k = 0; k < 3; k++) {
        size_t e = strlen(ext[k]);
        if (n <= e) continue;
        bool same = true;
        for (size_t i = 0; i < e && same; i++) {
            char c = name[n - e + i];
            same = (c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c) == ext[k][i];
        }
        if (same) return true;
    }
    return false;
}

typedef struct entry {
    const char *path, *cls, *file; /* path borrowed from the glob; cls and file point into copies */
    size_t cls_len;
} entry;

typedef struct listing {
    ferry_runtime *rt;
    const char *root;
    const char *name;
    ferry_dataset **out;
} listing;

static int cmp_cls(const char *a, size_t an, const char *b, size_t bn) {
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : (an > bn) - (an < bn);
}

static int cmp_entry(const void *x, const void *y) {
    const entry *a = x, *b = y;
    int c = cmp_cls(a->cls, a->cls_len, b->cls, b->cls_len);
    return c ? c : strcmp(a->file, b->file);
}

static int folder_build(void *user, size_t n, const char *const *paths) {
    listing *L = user;
    ferry_runtime *rt = L->rt;
    entry *en = n ? ferry__calloc(rt, n, sizeof *en) : NULL;
    if (n && !en) return ferry__set_last_error(FERRY_ENOMEM, "ferry_dataset_image_folder: listing %zu files failed", n);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        /* .../CLASS/FILE: from the last two slashes (glob may write the root differently) */
        const char *slash = strrchr(paths[i], '/');
        if (!slash || slash == paths[i] || !is_image_name(slash + 1)) continue;
        const char *cls = slash - 1;
        while (cls > paths[i] && cls[-1] != '/') cls--;
        size_t size;
        if (slash == cls || ferry__file_size(paths[i], &size) != 0) continue; /* not a regular file */
        en[m++] = (entry){.path = paths[i], .cls = cls, .cls_len = (size_t)(slash - cls), .file = slash + 1};
    }
    if (m == 0) {
        ferry__free(rt, en);
        return ferry__set_last_error(FERRY_ENOTFOUND,
                                     "ferry_dataset_image_folder: no .jpg, .jpeg or .png file in a subdirectory of "
                                     "'%s'",
                                     L->root);
    }
    qsort(en, m, sizeof *en, cmp_entry);
    size_t nc = 1;
    for (size_t i = 1; i < m; i++) nc += cmp_cls(en[i].cls, en[i].cls_len, en[i - 1].cls, en[i - 1].cls_len) != 0;
    ferry_tensor_spec specs[2] = {{.dtype = FERRY_DTYPE_BYTES, .shape = {.rank = 0}},
                                  {.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 0}}};
    ferry_dataset *d;
    int rc = ferry__dataset_new(rt, &folder_vt, "image_folder", sizeof(folder_ds), 0, NULL, 2, specs, (int64_t)m, &d);
    if (rc) {
        ferry__free(rt, en);
        return rc;
    }
    folder_ds *ds = (folder_ds *)d;
    ds->paths = ferry__calloc(rt, m, sizeof *ds->paths);
    ds->labels = ferry__calloc(rt, m, sizeof *ds->labels);
    ds->classes = ferry__calloc(rt, nc, sizeof *ds->classes);
    rc = ds->paths && ds->labels && ds->classes ? FERRY_OK : FERRY_ENOMEM;
    if (rc == FERRY_OK) ds->n = m, ds->nclasses = nc;
    int64_t label = -1;
    for (size_t i = 0; rc == FERRY_OK && i < m; i++) {
        if (i == 0 || cmp_cls(en[i].cls, en[i].cls_len, en[i - 1].cls, en[i - 1].cls_len) != 0) {
            char *c = ferry__alloc(rt, en[i].cls_len + 1);
            if (!c) {
                rc = FERRY_ENOMEM;
                break;
            }
            memcpy(c, en[i].cls, en[i].cls_len);
            c[en[i].cls_len] = '\0';
            ds->classes[++label] = c;
            ferry__dataset_hash(d, c, en[i].cls_len + 1);
        }
        ds->paths[i] = ferry__mem_strdup(&rt->alloc, en[i].path);
        if (!ds->paths[i]) rc = FERRY_ENOMEM;
        else ferry__dataset_hash(d, en[i].file, strlen(en[i].file) + 1);
        ds->labels[i] = label;
        ferry__dataset_hash_i64(d, label); /* which class each file is in, not only the names */
    }
    ferry__dataset_hash_i64(d, (int64_t)m);
    ferry__dataset_hash_i64(d, (int64_t)nc);
    ferry__free(rt, en);
    if (rc) {
        ferry_dataset_unref(d);
        return ferry__set_last_error(rc, "ferry_dataset_image_folder: copying %zu paths failed", m);
    }
    d->no_errors = false;
    FERRY__OP_SEAL(d, L, L->out);
    return FERRY_OK;
}

int ferry_dataset_image_folder(ferry_runtime *rt, const char *root, const ferry_image_folder_options *opts,
                               ferry_dataset **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", __func__);
    FERRY__CHECK_ARG(root != NULL && root[0] != '\0', FERRY_EINVAL, "%s: argument 'root' is %s", __func__,
                     root ? "empty" : "NULL");
    size_t rn = strlen(root);
    FERRY__CHECK_ARG(rn <= 4000, FERRY_EINVAL, "%s: argument 'root' is %zu bytes long; at most 4000", __func__, rn);
    int rc = opts ? ferry__check_name(__func__, opts->name) : FERRY_OK;
    if (rc) return rc;
    /* root with glob's special characters escaped, a slash, then "*" "/" "*" */
    char pattern[2 * 4000 + 8];
    size_t k = 0;
    for (size_t i = 0; i < rn; i++) {
        if (strchr("*?[\\", root[i])) pattern[k++] = '\\';
        pattern[k++] = root[i];
    }
    while (rn > 1 && root[rn - 1] == '/') rn--, k--; /* one slash between root and CLASS */
    memcpy(pattern + k, "/*/*", 5);
    listing L = {.rt = rt, .root = root, .name = opts ? opts->name : NULL, .out = out};
    int e = ferry__glob(pattern, folder_build, &L, &rc);
    if (e == ENOENT)
        return ferry__set_last_error(FERRY_ENOTFOUND, "%s: no file in a subdirectory of '%s'", __func__, root);
    if (e == ENOMEM) return ferry__set_last_error(FERRY_ENOMEM, "%s: out of memory listing '%s'", __func__, root);
    if (e) return ferry__set_last_error(FERRY_EIO, "%s: reading a directory under '%s' failed", __func__, root);
    return rc;
}

const char *ferry_image_folder_class(const ferry_dataset *ds, int64_t label) {
    if (!ds || ds->vt != &folder_vt) return NULL;
    const folder_ds *f = (const folder_ds *)ds;
    return label >= 0 && (size_t)label < f->nclasses ? f->classes[label] : NULL;
}

size_t ferry_image_folder_num_classes(const ferry_dataset *ds) {
    return ds && ds->vt == &folder_vt ? ((const folder_ds *)ds)->nclasses : 0;
}
