/*
 * statefile.c - saved iterator states as files: crash-safe writes (platform/file.c: temporary
 * file, fsync, rename, directory fsync) and reads with every framing check of
 * ferry_iterator_restore. Runs on the caller's thread; no locks of its own.
 */
#include <errno.h>
#include <string.h>

#include "core.h"

int ferry_iterator_save_file(ferry_iterator *it, const char *path) {
    int crc = ferry__check_iterator(it, "ferry_iterator_save_file");
    if (crc) return crc;
    ferry__status *st = ferry__iterator_status(it);
    if (!path || !*path) return ferry__fail(st, FERRY_EINVAL, "ferry_iterator_save_file: argument 'path' is empty");
    ferry_blob *b;
    int rc = ferry_iterator_save(it, &b);
    if (rc) return rc;
    const char *step = "";
    int err = ferry__file_write_atomic(path, ferry_blob_data(b), ferry_blob_size(b), &step);
    ferry_blob_free(b);
    if (err)
        return ferry__fail(st, FERRY_EIO, "ferry_iterator_save_file: %s: %s failed: %s",
                           path, step, strerror(err));
    return FERRY_OK;
}

int ferry_state_file_read(ferry_runtime *rt, const char *path, ferry_blob **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "ferry_state_file_read: argument 'out' is NULL");
    *out = NULL;
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "ferry_state_file_read: argument 'rt' is NULL");
    FERRY__CHECK_ARG(path != NULL && *path, FERRY_EINVAL, "ferry_state_file_read: argument 'path' is empty");
    size_t size;
    int err = ferry__file_size(path, &size);
    if (err)
        return ferry__set_last_error(err == ENOENT ? FERRY_ENOTFOUND : FERRY_EIO, "ferry_state_file_read: %s: %s",
                                     path, strerror(err));
    if (size > ((size_t)1 << 32))
        return ferry__set_last_error(FERRY_ETOOLARGE, "ferry_state_file_read: %s: %zu bytes is too large for a state",
                                     path, size);
    void *data = ferry__alloc(rt, size ? size : 1);
    if (!data) return ferry__set_last_error(FERRY_ENOMEM, "ferry_state_file_read: %s: allocating %zu bytes failed", path, size);
    err = ferry__file_read_exact(path, data, size);
    if (err) {
        ferry__free(rt, data);
        return ferry__set_last_error(FERRY_EIO, "ferry_state_file_read: %s: %s", path,
                                     err == EAGAIN ? "the file changed while being read" : strerror(err));
    }
    ferry_blob *b = ferry__blob_new(rt, data, size);
    if (!b) {
        ferry__free(rt, data);
        return ferry__set_last_error(FERRY_ENOMEM, "ferry_state_file_read: allocating the blob failed");
    }
    *out = b;
    return FERRY_OK;
}

int ferry_iterator_restore_file(ferry_dataset *ds, const char *path, const ferry_iterator_options *opts,
                                ferry_iterator **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "ferry_iterator_restore_file: argument 'out' is NULL");
    *out = NULL;
    int rc = ferry__check_dataset(ds, "ferry_iterator_restore_file", "ds");
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
