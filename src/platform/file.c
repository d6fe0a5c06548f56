/*
 * file.c - whole-file reads and crash-safe whole-file writes for small files (saved iterator
 * states). The write goes to "<path>.tmp.<pid>" in the same directory, is fsynced, renamed over
 * path, and the directory is fsynced: a process killed at any point leaves the old file or the
 * new one, never a mix (a leftover temporary may remain; it is never read).
 * Also the descriptor and path calls the io layer and the file cache use (open, pread, write,
 * fsync, rename, glob), so that no layer above calls POSIX directly.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
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
    rc = ferry__dir_sync(path);
    if (rc) *step = "fsync of the directory";
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

/* ---- files by descriptor and paths (the io layer's and the file cache's only way to the OS) ---- */
int ferry__fd_open_read(const char *path, int *fd, int64_t *size) {
    *fd = -1;
    int f;
    do {
        f = open(path, O_RDONLY | O_CLOEXEC);
    } while (f < 0 && errno == EINTR);
    if (f < 0) return errno;
    struct stat sb;
    if (fstat(f, &sb) != 0) {
        int e = errno;
        close(f);
        return e;
    }
    if (S_ISDIR(sb.st_mode)) {
        close(f);
        return EISDIR;
    }
    *size = S_ISREG(sb.st_mode) ? (int64_t)sb.st_size : -1;
#if defined(POSIX_FADV_SEQUENTIAL)
    if (S_ISREG(sb.st_mode)) (void)posix_fadvise(f, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
    *fd = f;
    return 0;
}

int ferry__fd_create(const char *path, bool excl, int *fd) {
    int f;
    do {
        f = open(path, O_WRONLY | O_CREAT | (excl ? O_EXCL : O_TRUNC) | O_CLOEXEC, excl ? 0644 : 0666);
    } while (f < 0 && errno == EINTR);
    *fd = f;
    return f < 0 ? errno : 0;
}

int ferry__fd_pread(int fd, void *buf, size_t n, int64_t off, size_t *got) {
    ssize_t r;
    do {
        r = pread(fd, buf, n, (off_t)off);
    } while (r < 0 && errno == EINTR);
    *got = r > 0 ? (size_t)r : 0;
    return r < 0 ? errno : 0;
}

int ferry__fd_write(int fd, const void *buf, size_t n, int64_t off, size_t *put) {
    ssize_t w;
    do {
        w = off < 0 ? write(fd, buf, n) : pwrite(fd, buf, n, (off_t)off);
    } while (w < 0 && errno == EINTR);
    *put = w > 0 ? (size_t)w : 0;
    if (w < 0) return errno;
    return w == 0 && n > 0 ? EIO : 0;
}

int ferry__fd_sync(int fd) {
    if (fsync(fd) == 0 || errno == EINVAL || errno == EROFS || errno == ENOTSUP) return 0;
    return errno;
}

int ferry__fd_close(int fd) { return close(fd) == 0 || errno == EINTR ? 0 : errno; }

int ferry__path_rename(const char *from, const char *to) { return rename(from, to) == 0 ? 0 : errno; }

int ferry__path_unlink(const char *path) { return unlink(path) == 0 ? 0 : errno; }

int ferry__dir_sync(const char *path) {
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir) return ENAMETOOLONG;
    char *slash = strrchr(dir, '/');
    if (slash == dir) dir[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    int rc = 0, dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd) != 0 && errno != EINVAL) rc = errno;
        close(dfd);
    }
    return rc;
}

long ferry__process_id(void) { return (long)getpid(); }

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* A directory glob could not read: a missing one, or a file where the pattern goes on below it,
 * is no match; anything else (no permission, too many open files, an I/O error) fails the glob
 * instead of leaving out what that directory holds. */
static int glob_dir_error(const char *path, int e) {
    (void)path;
    return e != ENOENT && e != ENOTDIR;
}

int ferry__glob(const char *pattern, int (*fn)(void *user, size_t n, const char *const *paths), void *user, int *rc) {
    glob_t g;
    memset(&g, 0, sizeof g);
    int gr = glob(pattern, 0, glob_dir_error, &g);
    if (gr != 0) {
        globfree(&g);
        return gr == GLOB_NOMATCH ? ENOENT : gr == GLOB_NOSPACE ? ENOMEM : EIO;
    }
    /* glob sorts with the locale's collation; sort again bytewise so the order never depends on
     * the environment. */
    qsort(g.gl_pathv, g.gl_pathc, sizeof *g.gl_pathv, cmp_str);
    *rc = fn(user, g.gl_pathc, (const char *const *)g.gl_pathv);
    globfree(&g);
    return 0;
}

/* ---- whole transfers with a fault hook ------------------------------------------------------ */
/* The size to transfer, or a negative errno value from the hook. */
static long fault_size(const ferry__fault *hook, int op, int64_t off, size_t n) {
    size_t most = n < ((size_t)1 << 30) ? n : (size_t)1 << 30;
    if (!hook || !hook->fn) return (long)most;
    long r = hook->fn(hook->user, op, off, n);
    return r > (long)most ? (long)most : r;
}

int ferry__fd_pwrite_all(int fd, int64_t off, const void *p, size_t n, const ferry__fault *hook) {
    const unsigned char *b = p;
    while (n > 0) {
        long want = fault_size(hook, 'w', off, n);
        if (want < 0) return (int)-want;
        if (want == 0) want = 1;
        size_t w;
        int e = ferry__fd_write(fd, b, (size_t)want, off, &w);
        if (e) return e;
        b += w;
        off += (int64_t)w;
        n -= w;
    }
    return 0;
}

int ferry__fd_pread_full(int fd, int64_t off, void *p, size_t n, size_t *got, const ferry__fault *hook) {
    unsigned char *b = p;
    *got = 0;
    while (*got < n) {
        long want = fault_size(hook, 'r', off + (int64_t)*got, n - *got);
        if (want < 0) return (int)-want;
        if (want == 0) want = 1;
        size_t r;
        int e = ferry__fd_pread(fd, b + *got, (size_t)want, off + (int64_t)*got, &r);
        if (e) return e;
        if (r == 0) break;
        *got += r;
    }
    return 0;
}

int ferry__fd_sync_hooked(int fd, const ferry__fault *hook) {
    long h = fault_size(hook, 's', 0, 0);
    if (h < 0) return (int)-h;
    return ferry__fd_sync(fd);
}

int ferry__path_rename_hooked(const char *from, const char *to, const ferry__fault *hook) {
    long h = fault_size(hook, 'n', 0, 0);
    if (h < 0) return (int)-h;
    return ferry__path_rename(from, to);
}
