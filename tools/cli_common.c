/*
 * cli_common.c - what the `ferry` tool's commands share: the one-line usage and runtime error
 * formats of cli.h, and the checks that give a file's operating-system reason before the
 * library reads it.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

int ferry_cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ferry %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'ferry %s --help')\n", cmd);
    va_end(ap);
    return FERRY_CLI_USAGE;
}

void ferry_cli_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ferry %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

const char *ferry_cli_reason(const char *message) {
    if (!message) return "";
    const char *p = message;
    if (!(isalpha((unsigned char)*p) || *p == '_')) return message;
    while (isalnum((unsigned char)*p) || *p == '_') p++;
    return p[0] == ':' && p[1] == ' ' && p[2] ? p + 2 : message;
}

int ferry_cli_check_readable(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return errno;
    if (S_ISDIR(st.st_mode)) return EISDIR;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return errno;
    close(fd);
    return 0;
}

bool ferry_cli_wants_help(int argc, char **argv, int first) {
    for (int i = first; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) return false;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return true;
    }
    return false;
}
