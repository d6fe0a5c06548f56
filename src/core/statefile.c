/*
 * statefile.c - saved iterator states as files: crash-safe writes (platform/file.c: temporary
 * file, fsync, rename, directory fsync) and reads with every framing check of
 * ferry_iterator_restore. Runs on the caller's thread; no locks of its own.
 */
#include <errno.h>
#include <string.h>

#include "core.h"

int ferry_iterator_save_file(ferry_iterator *it, const char *path) {
    int crc = ferry__check_iterator(it, __func__);
    if (crc) return crc;
    ferry__status *st = ferry__iterator_status(it);
    if (!path || !*path) return ferry__fail(st, FERRY_EINVAL, "%s: argument 'path' is empty", __func__);
    ferry_blob *b;
    int rc = ferry_iterator_save(it, &b);
    if (rc) return rc;
    const char *step = "";
    int err = ferry__file_write_atomic(path, ferry_blob_data(b), ferry_blob_size(b), &step);
    ferry_blob_free(b);
    if (err) return ferry__fail(st, FERRY_EIO, "%s: %s: %s failed: %s", __func__, path, step, strerror(err));
    return FERRY_OK;
}

int ferry_state_file_read(ferry_runtime *rt, const char *path, ferry_blob **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", __func__);
    FERRY__CHECK_ARG(path != NULL && *path, FERRY_EINVAL, "%s: argument 'path' is empty", __func__);
    size_t size;
    int err = ferry__file_size(path, &size);
    if (err)
        return ferry__set_last_error(err == ENOENT ? FERRY_ENOTFOUND : FERRY_EIO, "%s: %s: %s", __func__, path,
                                     strerror(err));
    if (size > ((size_t)1 << 32))
        return ferry__set_last_error(FERRY_ETOOLARGE, "%s: %s: %zu bytes is too large for a state", __func__, path,
                                     size);
    void *data = ferry__alloc(rt, size ? size : 1);
    if (!data) return ferry__set_last_error(FERRY_ENOMEM, "%s: %s: allocating %zu bytes failed", __func__, path, size);
    err = ferry__file_read_exact(path, data, size);
    if (err) {
        ferry__free(rt, data);
        return ferry__set_last_error(FERRY_EIO, "%s: %s: %s", __func__, path,
                                     err == EAGAIN ? "the file changed while being read" : strerror(err));
    }
    ferry_blob *b = ferry__blob_new(rt, data, size);
    if (!b) {
        ferry__free(rt, data);
        return ferry__set_last_error(FERRY_ENOMEM, "%s: allocating the blob failed", __func__);
    }
    *out = b;
    return FERRY_OK;
}

int ferry_iterator_restore_file(ferry_dataset *ds, const char *path, const ferry_iterator_options *opts,
                                ferry_iterator **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    int rc = ferry__check_dataset(ds, __func__, "ds");
    if (rc) return rc;
    ferry_blob *b;
    rc = ferry_state_file_read(ds->rt, path, &b);
    if (rc) return rc;
    rc = ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), opts, out);
    ferry_blob_free(b);
    if (rc) {
        char msg[FERRY__MSG_MAX];
        snprintf(msg, sizeof msg, "%s", ferry_last_error());
        return ferry__set_last_error(rc, "%s (file %s)", msg, path);
    }
    return FERRY_OK;
}
