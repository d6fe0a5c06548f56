/*
 * cli_state.c - `ferry state show FILE`: what a saved iterator state holds (format version,
 * pipeline fingerprint, seed, position, sizes), after checking its framing and checksum.
 *
 * A state is found in three kinds of files: a state file (ferry_iterator_save_file, or the bytes
 * of ferry_iterator_save written as they are); an application's own file that ends with such a
 * state (a training checkpoint holding its model, then the iterator's state, as examples/train.c
 * writes it); and nothing else. For any other file the command says what the file is (a TFRecord
 * file, a ferry cache file, text, ...) instead of calling it corrupt. The framing it looks for
 * is the documented one (docs/resume.md): a state begins with "FERRYST\0" and runs to the end of
 * its bytes; ferry_state_info_get checks the rest.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static const char state_magic[8] = {'F', 'E', 'R', 'R', 'Y', 'S', 'T', 0};
static const char cache_magic[8] = {'F', 'E', 'R', 'R', 'Y', 'F', 'C', 0};
#define HEAD_BYTES 4096
#define TAIL_MAX ((size_t)64 << 20) /* an embedded state is searched for in the last 64 MiB */

static const char show_usage[] = "usage: ferry state show FILE\n";

bool ferry_cli_state_help(FILE *f, const char *sub) {
    if (sub && strcmp(sub, "show") != 0) return false;
    if (!sub)
        fprintf(
            f, "usage: ferry state SUBCOMMAND FILE\n\nsubcommands:\n  show FILE   describe a saved iterator state\n\n");
    else fputs(show_usage, f);
    fprintf(f, "'show' checks the state's framing and checksum and prints its format version, the\n"
               "fingerprint of the pipeline it was saved from, the iterator's seed, its position (elements\n"
               "handed out before the save) and its size. FILE is a state file\n"
               "(ferry_iterator_save_file), or a file of an application's own that ends with a state\n"
               "(a training checkpoint, such as examples/train.c's --checkpoint). For another kind of\n"
               "file it says what the file is.\n"
               "exit status: 0 a valid state, 1 no valid state in FILE or FILE unreadable, 2 usage error\n");
    return true;
}

/* Prints the description of a valid state; `offset` > 0 when it follows other bytes of `path`. */
static void print_state(const char *path, const ferry_state_info *info, size_t offset, const unsigned char *head,
                        size_t head_len) {
    printf("file:         %s\n", path);
    if (offset > 0) {
        printf("              its last %zu bytes are a ferry iterator state, after %zu bytes of\n"
               "              another format",
               info->size, offset);
        size_t n = head_len < 8 ? head_len : 8, printable = 0;
        while (printable < n && head[printable] >= 0x20 && head[printable] < 0x7f) printable++;
        if (printable >= 4) printf(" (they begin with \"%.*s\")", (int)printable, (const char *)head);
        printf("\n");
    }
    printf("format:       ferry iterator state, version %" PRIu32 "\n", info->version);
    printf("pipeline:     fingerprint %016" PRIx64 " (ferry_dataset_fingerprint): restoring needs a pipeline\n"
           "              with the same fingerprint\n",
           info->fingerprint);
    printf("seed:         %" PRIu64 ", the seed the iterator was made with (ferry_iterator_options.seed):\n"
           "              its shuffles and random draws derive from it; a restored iterator keeps it\n",
           info->seed);
    printf("position:     %" PRId64 " elements handed out before the save (an error counts as one)\n", info->position);
    printf("size:         %zu bytes (%zu of per-op state)\n", info->size, info->payload_size);
    printf("checksum:     ok\n");
}

/* A reader of one record, to tell a TFRecord file (CRCs checked) from other data. */
static bool has_tfrecord(ferry_runtime *rt, const char *path, ferry_compression c) {
    ferry_tfrecord_options o = {.compression = c, .max_record_size = (uint64_t)1 << 28};
    ferry_dataset *ds = NULL;
    ferry_iterator *it = NULL;
    bool ok = false;
    if (ferry_dataset_tfrecord(rt, 1, &path, &o, &ds) == FERRY_OK && ferry_iterator_create(ds, NULL, &it) == FERRY_OK) {
        ferry_element *e;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_OK) ferry_element_free(e);
        ok = rc == FERRY_OK;
    }
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    return ok;
}

static bool looks_like_text(const unsigned char *p, size_t n) {
    size_t odd = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == 0) return false;
        if (p[i] < 0x20 && p[i] != '\n' && p[i] != '\r' && p[i] != '\t') odd++;
    }
    return n > 0 && odd * 50 < n;
}

/* What a file without a state at its start is, when it is a kind the tool knows; NULL if not. */
static const char *file_kind(ferry_runtime *rt, const char *path, const unsigned char *head, size_t n, size_t size,
                             char *buf, size_t cap) {
    if (size == 0) return "an empty file";
    if (n >= 8 && memcmp(head, cache_magic, 8) == 0)
        return "a ferry cache file (written by ferry_dataset_cache with a file name)";
    if (n >= 2 && head[0] == 0x1f && head[1] == 0x8b)
        return has_tfrecord(rt, path, FERRY_COMPRESSION_GZIP)
                   ? "a GZIP-compressed TFRecord file (see 'ferry tfrecord count --help')"
                   : "gzip-compressed data";
    if (n >= 2 && head[0] == 0x78 && ((unsigned)head[0] << 8 | head[1]) % 31 == 0 &&
        has_tfrecord(rt, path, FERRY_COMPRESSION_ZLIB))
        return "a ZLIB-compressed TFRecord file (see 'ferry tfrecord count --help')";
    if (n >= 16 && has_tfrecord(rt, path, FERRY_COMPRESSION_NONE))
        return "a TFRecord file (see 'ferry tfrecord count --help')";
    if (looks_like_text(head, n)) {
        size_t len = strcspn((const char *)head, "\r\n");
        if (len > n) len = n;
        if (len > 48) len = 48;
        snprintf(buf, cap, "a text file (its first line begins \"%.*s\")", (int)len, (const char *)head);
        return buf;
    }
    return NULL;
}

/* Looks for a valid state that runs to the end of the file. Returns its offset, or 0 with
 * *near set to the reason the last candidate was refused (NULL when none began there). */
static size_t find_embedded(FILE *f, size_t size, ferry_state_info *info, char *near, size_t cap, size_t *near_offset) {
    size_t len = size < TAIL_MAX ? size : TAIL_MAX, start = size - len;
    near[0] = 0;
    unsigned char *buf = malloc(len ? len : 1);
    if (!buf) return 0;
    size_t found = 0;
    if (fseek(f, (long)start, SEEK_SET) == 0 && fread(buf, 1, len, f) == len) {
        for (size_t off = 0; off + 8 <= len; off++) { /* offset 0 of the file has no magic here */
            if (buf[off] != 'F' || memcmp(buf + off, state_magic, 8) != 0) continue;
            if (ferry_state_info_get(buf + off, len - off, info) == FERRY_OK) {
                found = start + off;
                break;
            }
            snprintf(near, cap, "%s", ferry_cli_reason(ferry_last_error()));
            *near_offset = start + off;
        }
    }
    free(buf);
    return found;
}

static int show(const char *path) {
    const char *cmd = "state show";
    int err = ferry_cli_check_readable(path);
    if (err) {
        ferry_cli_error(cmd, "%s: %s", path, strerror(err));
        return FERRY_CLI_FAILED;
    }
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0) {
        ferry_cli_error(cmd, "%s: %s", path, strerror(errno));
        if (f) fclose(f);
        return FERRY_CLI_FAILED;
    }
    size_t size = (size_t)st.st_size;
    unsigned char head[HEAD_BYTES];
    size_t n = fread(head, 1, sizeof head, f);
    ferry_runtime *rt;
    if (ferry_runtime_create(NULL, &rt) != FERRY_OK) {
        ferry_cli_error(cmd, "%s", ferry_cli_reason(ferry_last_error()));
        fclose(f);
        return FERRY_CLI_FAILED;
    }
    int status = FERRY_CLI_FAILED;
    ferry_state_info info;
    if (n >= 8 && memcmp(head, state_magic, 8) == 0) { /* a state file */
        ferry_blob *b = NULL;
        int rc = ferry_state_file_read(rt, path, &b);
        if (rc == FERRY_OK) rc = ferry_state_info_get(ferry_blob_data(b), ferry_blob_size(b), &info);
        if (rc == FERRY_OK) {
            print_state(path, &info, 0, head, n);
            status = FERRY_CLI_OK;
        } else if (rc == FERRY_EVERSION) {
            ferry_cli_error(cmd, "%s: a ferry iterator state of a newer format: %s", path,
                            ferry_cli_reason(ferry_last_error()));
        } else {
            ferry_cli_error(cmd, "%s: a damaged ferry iterator state: %s", path, ferry_cli_reason(ferry_last_error()));
        }
        ferry_blob_free(b);
    } else {
        char kind_buf[128], near[512] = "";
        size_t near_offset = 0, offset = 0;
        const char *kind = file_kind(rt, path, head, n, size, kind_buf, sizeof kind_buf);
        if (!kind) offset = find_embedded(f, size, &info, near, sizeof near, &near_offset);
        if (kind) {
            ferry_cli_error(cmd, "%s: not a ferry iterator state: %s", path, kind);
        } else if (offset > 0) {
            print_state(path, &info, offset, head, n);
            status = FERRY_CLI_OK;
        } else if (near[0]) {
            ferry_cli_error(cmd, "%s: not a ferry iterator state; a damaged one begins at byte %zu: %s", path,
                            near_offset, near);
        } else {
            char begin[80] = "";
            size_t k = 0;
            for (size_t i = 0; i < n && i < 8; i++)
                k += (size_t)snprintf(begin + k, sizeof begin - k, " %02x", head[i]);
            ferry_cli_error(cmd,
                            "%s: not a ferry iterator state: %zu bytes of an unknown format (first bytes%s), "
                            "with no state at their end",
                            path, size, begin);
        }
    }
    fclose(f);
    ferry_runtime_free(rt);
    return status;
}

int ferry_cli_state(int argc, char **argv) {
    if (argc < 2) return ferry_cli_usage_error("state", "missing the subcommand: show");
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        ferry_cli_state_help(stdout, NULL);
        return FERRY_CLI_OK;
    }
    if (strcmp(sub, "show") != 0)
        return ferry_cli_usage_error("state", "unknown subcommand '%s'; the only one is show", sub);
    if (ferry_cli_wants_help(argc, argv, 2)) {
        ferry_cli_state_help(stdout, "show");
        return FERRY_CLI_OK;
    }
    const char *file = NULL;
    int nfiles = 0;
    bool only_files = false;
    for (int i = 2; i < argc; i++) {
        if (!only_files && strcmp(argv[i], "--") == 0) {
            only_files = true;
        } else if (!only_files && argv[i][0] == '-' && argv[i][1] != '\0') {
            return ferry_cli_usage_error("state show", "unknown option '%s'", argv[i]);
        } else {
            file = argv[i];
            nfiles++;
        }
    }
    if (nfiles == 0) return ferry_cli_usage_error("state show", "missing the file to describe");
    if (nfiles > 1) return ferry_cli_usage_error("state show", "takes one file, got %d", nfiles);
    return show(file);
}
