/*
 * file.c - whole-file reads and crash-safe whole-file writes for small files (saved iterator
 * states). The write goes to "<path>.tmp.<pid>" in the same directory, is fsynced, renamed over
 * path, and the directory is fsynced: a process killed at any point leaves the old file or the
 * new one, never a mix (a leftover temporary may remain; it is never read).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "platform.h"

static int write_all(int fd, const void *data, size_t n) {
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int ferry__file_write_atomic(const char *path, const void *data, size_t n, const char **step) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        *step = "building the temporary name";
        return ENAMETOOLONG;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        *step = "creating the temporary file";
        return errno;
    }
    int rc = write_all(fd, data, n);
    if (rc) *step = "writing the temporary file";
    if (!rc && fsync(fd) != 0) {
        rc = errno;
        *step = "fsync of the temporary file";
    }
    if (close(fd) != 0 && !rc) {
        rc = errno;
        *step = "closing the temporary file";
    }
    if (!rc && rename(tmp, path) != 0) {
        rc = errno;
        *step = "renaming the temporary file over the target";
    }
    if (rc) {
        unlink(tmp);
        return rc;
    }
    /* Make the rename durable. */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) dir[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd) != 0 && errno != EINVAL) rc = errno, *step = "fsync of the directory";
        close(dfd);
    }
    return rc;
}

int ferry__file_size(const char *path, size_t *size) {
    struct stat sb;
    if (stat(path, &sb) != 0) return errno;
    if (!S_ISREG(sb.st_mode)) return EISDIR;
    *size = (size_t)sb.st_size;
    return 0;
}

int ferry__file_read_exact(const char *path, void *buf, size_t n) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    char *p = buf;
    size_t left = n;
    int rc = 0;
    while (left > 0) {
        ssize_t r = read(fd, p, left);
        if (r < 0) {
            if (errno == EINTR) continue;
            rc = errno;
            break;
        }
        if (r == 0) {
            rc = EAGAIN; /* the file shrank while being read */
            break;
        }
        p += r;
        left -= (size_t)r;
    }
    close(fd);
    return rc;
}
