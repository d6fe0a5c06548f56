/*
 * cli_tfrecord.c - `ferry tfrecord count|verify|cat|write`: TFRecord files from the shell.
 *
 *   count  [-c C] [--no-crc] FILE...   records per file and in total
 *   verify [-c C] FILE...              checks every CRC; names each file's first bad record
 *   cat    [-c C] [--raw] FILE...      one JSON line per record: the tf.train.Example
 *                                      (ferry_example_to_json), or {"record": "<base64>"}
 *   write  [-c C] [--raw] OUT          JSON lines from stdin (same two forms) to records
 *
 * -c / --compression gzip|zlib|none|auto (default auto: .gz -> gzip, .zz/.zlib -> zlib, else
 * the gzip magic bytes decide). Uses only the public header, like any program on libferry.
 * Exit status: 0 success, 1 bad data or I/O failure, 2 usage error. Messages go to stderr in the
 * forms of cli.h and name the file and the byte offset of a bad record.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "cli.h"
#include "ferry.h"

static const struct subcommand {
    const char *name, *usage, *summary, *what;
} subcommands[] = {
    {"count", "[-c C] [--no-crc] FILE...", "count the records of each file and in all",
     "Counts the records of each file, and in all when there are several; checks every CRC\n"
     "unless --no-crc. A bad record is reported with its file and byte offset, and counting goes\n"
     "on after it (the file's line then says \"(errors)\").\n"},
    {"verify", "[-c C] FILE...", "check every CRC; name each file's first bad record",
     "Checks the framing and both CRCs of every record; prints OK and the record count of each\n"
     "good file, and names each bad file's first bad record (byte offset) and the good records\n"
     "before it.\n"},
    {"cat", "[-c C] [--raw] FILE...", "print each record as one JSON line",
     "Prints each record as one JSON line: its tf.train.Example, or with --raw\n"
     "{\"record\": \"<base64>\"}. A record that is not a tf.train.Example is printed raw and\n"
     "reported.\n"},
    {"write", "[-c C] [--raw] OUT", "write records from JSON lines on stdin to OUT",
     "Writes one record per JSON line read from stdin (the two forms that cat prints) to the\n"
     "file OUT, and says how many it wrote. Compression by default from OUT's name: .gz gzip,\n"
     ".zz zlib, else none.\n"},
};
#define NSUB (sizeof subcommands / sizeof *subcommands)

static const char options_text[] =
    "options:\n"
    "  -c, --compression gzip|zlib|none|auto   the files' compression; default auto: a .gz\n"
    "                                          or .zz name, else the gzip magic bytes decide\n"
    "exit status: 0 success, 1 bad data or I/O error, 2 usage error\n";

bool ferry_cli_tfrecord_help(FILE *f, const char *sub) {
    if (!sub) {
        fprintf(f, "usage: ferry tfrecord SUBCOMMAND [OPTIONS] FILE...\n\nsubcommands:\n");
        for (size_t i = 0; i < NSUB; i++)
            fprintf(f, "  %-6s %-26s %s\n", subcommands[i].name, subcommands[i].usage, subcommands[i].summary);
        fprintf(f, "\n'ferry tfrecord SUBCOMMAND --help' describes one of them.\n\n%s", options_text);
        return true;
    }
    for (size_t i = 0; i < NSUB; i++)
        if (strcmp(sub, subcommands[i].name) == 0) {
            fprintf(f, "usage: ferry tfrecord %s %s\n%s\n%s", subcommands[i].name, subcommands[i].usage,
                    subcommands[i].what, options_text);
            return true;
        }
    return false;
}

typedef enum { COMP_AUTO = -1 } comp_auto;

typedef struct cli_opts {
    const char *cmd; /* "tfrecord count", ... : the prefix of every message */
    int compression; /* ferry_compression or COMP_AUTO */
    bool no_crc;
    bool raw;
    int nargs;
    char **args;
} cli_opts;

static int parse_compression(const char *s) {
    if (strcmp(s, "gzip") == 0 || strcmp(s, "GZIP") == 0) return FERRY_COMPRESSION_GZIP;
    if (strcmp(s, "zlib") == 0 || strcmp(s, "ZLIB") == 0) return FERRY_COMPRESSION_ZLIB;
    if (strcmp(s, "none") == 0 || strcmp(s, "") == 0) return FERRY_COMPRESSION_NONE;
    if (strcmp(s, "auto") == 0) return COMP_AUTO;
    return -2;
}

/* Returns 0, or FERRY_CLI_USAGE after printing a usage error. */
static int parse_opts(int argc, char **argv, cli_opts *o, bool allow_no_crc, bool allow_raw) {
    o->compression = COMP_AUTO;
    o->args = calloc((size_t)argc + 1, sizeof *o->args);
    if (!o->args) {
        ferry_cli_error(o->cmd, "out of memory");
        return FERRY_CLI_FAILED;
    }
    bool only_files = false;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!only_files && strcmp(a, "--") == 0) {
            only_files = true;
        } else if (!only_files && (strcmp(a, "-c") == 0 || strcmp(a, "--compression") == 0)) {
            if (i + 1 >= argc)
                return ferry_cli_usage_error(o->cmd, "option %s needs a value: gzip, zlib, none or auto", a);
            o->compression = parse_compression(argv[++i]);
            if (o->compression == -2)
                return ferry_cli_usage_error(o->cmd, "unknown compression '%s'; use gzip, zlib, none or auto", argv[i]);
        } else if (!only_files && strncmp(a, "--compression=", 14) == 0) {
            o->compression = parse_compression(a + 14);
            if (o->compression == -2)
                return ferry_cli_usage_error(o->cmd, "unknown compression '%s'; use gzip, zlib, none or auto", a + 14);
        } else if (!only_files && allow_no_crc && strcmp(a, "--no-crc") == 0) {
            o->no_crc = true;
        } else if (!only_files && allow_raw && strcmp(a, "--raw") == 0) {
            o->raw = true;
        } else if (!only_files && a[0] == '-' && a[1] != '\0') {
            return ferry_cli_usage_error(o->cmd, "unknown option '%s'", a);
        } else {
            o->args[o->nargs++] = argv[i];
        }
    }
    return 0;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static ferry_compression guess_compression(const char *path) {
    if (ends_with(path, ".gz") || ends_with(path, ".gzip")) return FERRY_COMPRESSION_GZIP;
    if (ends_with(path, ".zz") || ends_with(path, ".zlib")) return FERRY_COMPRESSION_ZLIB;
    FILE *f = fopen(path, "rb");
    if (!f) return FERRY_COMPRESSION_NONE; /* the reader reports the open failure */
    unsigned char m[2] = {0, 0};
    size_t n = fread(m, 1, 2, f);
    fclose(f);
    if (n == 2 && m[0] == 0x1f && m[1] == 0x8b) return FERRY_COMPRESSION_GZIP;
    return FERRY_COMPRESSION_NONE;
}

static ferry_compression compression_for(const cli_opts *o, const char *path) {
    return o->compression == COMP_AUTO ? guess_compression(path) : (ferry_compression)o->compression;
}

/* An iterator over the records of one file; on failure prints why (a file that cannot be
 * opened is named with the operating system's reason) and returns nonzero. */
static int open_reader(ferry_runtime *rt, const cli_opts *o, const char *path, ferry_iterator **it) {
    int err = ferry_cli_check_readable(path);
    if (err) {
        ferry_cli_error(o->cmd, "%s: %s", path, strerror(err));
        return FERRY_EIO;
    }
    ferry_tfrecord_options to = {.compression = compression_for(o, path), .skip_crc_check = o->no_crc};
    ferry_dataset *ds;
    int rc = ferry_dataset_tfrecord(rt, 1, &path, &to, &ds);
    if (rc) {
        ferry_cli_error(o->cmd, "%s: %s", path, ferry_cli_reason(ferry_last_error()));
        return rc;
    }
    rc = ferry_iterator_create(ds, NULL, it);
    ferry_dataset_unref(ds);
    if (rc) ferry_cli_error(o->cmd, "%s: %s", path, ferry_cli_reason(ferry_last_error()));
    return rc;
}

static int record_of(ferry_element *e, const uint8_t **p, size_t *len) {
    return ferry_tensor_bytes_get(ferry_element_get(e, 0), 0, p, len);
}

/* ---- base64 ------------------------------------------------------------------------------ */
static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void print_base64(FILE *f, const uint8_t *p, size_t n) {
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        fputc(b64[v >> 18], f);
        fputc(b64[(v >> 12) & 63], f);
        fputc(b64[(v >> 6) & 63], f);
        fputc(b64[v & 63], f);
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        fputc(b64[v >> 18], f);
        fputc(b64[(v >> 12) & 63], f);
        fputc(i + 1 < n ? b64[(v >> 6) & 63] : '=', f);
        fputc('=', f);
    }
}

static int b64_value(int c) {
    const char *q = c ? strchr(b64, c) : NULL;
    return q ? (int)(q - b64) : -1;
}

/* Decodes base64 (padding optional) into out (room for n*3/4 + 3 bytes); -1 on bad input. */
static long decode_base64(const char *s, size_t n, uint8_t *out) {
    long k = 0;
    uint32_t acc = 0;
    int bits = 0;
    size_t i = 0;
    for (; i < n && s[i] != '='; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (uint8_t)(acc >> bits);
        }
    }
    for (; i < n; i++)
        if (s[i] != '=') return -1;
    return k;
}

/* {"record": "<base64>"} -> bytes. Returns the length or -1. */
static long parse_raw_line(const char *line, uint8_t *out) {
    const char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    if (*p++ != '{') return -1;
    while (*p == ' ' || *p == '\t') p++;
    if (strncmp(p, "\"record\"", 8) != 0) return -1;
    p += 8;
    while (*p == ' ' || *p == '\t') p++;
    if (*p++ != ':') return -1;
    while (*p == ' ' || *p == '\t') p++;
    if (*p++ != '"') return -1;
    const char *end = strchr(p, '"');
    if (!end) return -1;
    long n = decode_base64(p, (size_t)(end - p), out);
    p = end + 1;
    while (*p == ' ' || *p == '\t') p++;
    if (*p++ != '}') return -1;
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
    return *p ? -1 : n;
}

/* ---- commands ---------------------------------------------------------------------------- */
static int cmd_count(ferry_runtime *rt, const cli_opts *o) {
    int status = 0;
    long long total = 0;
    for (int i = 0; i < o->nargs; i++) {
        ferry_iterator *it;
        if (open_reader(rt, o, o->args[i], &it)) {
            status = 1;
            continue;
        }
        long long n = 0;
        bool bad = false;
        for (;;) {
            ferry_element *e;
            int rc = ferry_iterator_next(it, &e);
            if (rc == FERRY_END) break;
            if (rc == FERRY_OK) {
                n++;
                ferry_element_free(e);
            } else {
                ferry_cli_error(o->cmd, "%s", ferry_cli_reason(ferry_iterator_error(it)));
                bad = true;
            }
        }
        ferry_iterator_free(it);
        printf("%s\t%lld%s\n", o->args[i], n, bad ? "\t(errors)" : "");
        total += n;
        if (bad) status = 1;
    }
    if (o->nargs > 1) printf("total\t%lld\n", total);
    return status;
}

static int cmd_verify(ferry_runtime *rt, const cli_opts *o) {
    int status = 0;
    for (int i = 0; i < o->nargs; i++) {
        ferry_iterator *it;
        if (open_reader(rt, o, o->args[i], &it)) {
            status = 1;
            continue;
        }
        long long n = 0;
        bool bad = false;
        for (;;) {
            ferry_element *e;
            int rc = ferry_iterator_next(it, &e);
            if (rc == FERRY_END) break;
            if (rc != FERRY_OK) {
                ferry_cli_error(o->cmd, "%s", ferry_cli_reason(ferry_iterator_error(it)));
                bad = true;
                break;
            }
            n++;
            ferry_element_free(e);
        }
        ferry_iterator_free(it);
        if (bad) {
            printf("%s\tBAD after %lld good records\n", o->args[i], n);
            status = 1;
        } else {
            printf("%s\tOK\t%lld records\n", o->args[i], n);
        }
    }
    return status;
}

static int cmd_cat(ferry_runtime *rt, const cli_opts *o) {
    int status = 0;
    for (int i = 0; i < o->nargs; i++) {
        ferry_iterator *it;
        if (open_reader(rt, o, o->args[i], &it)) {
            status = 1;
            continue;
        }
        long long index = 0;
        for (;; index++) {
            ferry_element *e;
            int rc = ferry_iterator_next(it, &e);
            if (rc == FERRY_END) break;
            if (rc != FERRY_OK) {
                ferry_cli_error(o->cmd, "%s", ferry_cli_reason(ferry_iterator_error(it)));
                status = 1;
                continue;
            }
            const uint8_t *p;
            size_t len;
            record_of(e, &p, &len);
            ferry_blob *json = NULL;
            if (!o->raw && ferry_example_to_json(rt, p, len, &json) == FERRY_OK) {
                fwrite(ferry_blob_data(json), 1, ferry_blob_size(json), stdout);
                fputc('\n', stdout);
                ferry_blob_free(json);
            } else {
                if (!o->raw) {
                    ferry_cli_error(o->cmd, "%s: record %lld is not a tf.train.Example (%s); printed raw", o->args[i],
                                    index, ferry_cli_reason(ferry_last_error()));
                    status = 1;
                }
                fputs("{\"record\": \"", stdout);
                print_base64(stdout, p, len);
                fputs("\"}\n", stdout);
            }
            ferry_element_free(e);
        }
        ferry_iterator_free(it);
    }
    if (fflush(stdout) != 0) {
        ferry_cli_error(o->cmd, "writing the output: %s", strerror(errno));
        status = 1;
    }
    return status;
}

static int cmd_write(ferry_runtime *rt, const cli_opts *o) {
    const char *out = o->args[0];
    ferry_tfrecord_writer_options wo = {.compression = o->compression == COMP_AUTO
                                                           ? (ends_with(out, ".gz")   ? FERRY_COMPRESSION_GZIP
                                                              : ends_with(out, ".zz") ? FERRY_COMPRESSION_ZLIB
                                                                                      : FERRY_COMPRESSION_NONE)
                                                           : (ferry_compression)o->compression};
    ferry_tfrecord_writer *w;
    if (ferry_tfrecord_writer_open(rt, out, &wo, &w)) {
        ferry_cli_error(o->cmd, "%s", ferry_cli_reason(ferry_last_error()));
        return FERRY_CLI_FAILED;
    }
    if (isatty(STDIN_FILENO))
        fprintf(stderr,
                "ferry tfrecord write: reading JSON lines from the terminal, one record each; end with Ctrl-D\n");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long long lineno = 0, written = 0;
    int status = 0;
    uint8_t *raw = NULL;
    size_t raw_cap = 0;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
        if (n == 0) continue;
        int rc;
        if (o->raw) {
            if (raw_cap < (size_t)n) {
                free(raw);
                raw_cap = (size_t)n;
                raw = malloc(raw_cap);
                if (!raw) {
                    ferry_cli_error(o->cmd, "out of memory");
                    status = 1;
                    break;
                }
            }
            long len = parse_raw_line(line, raw);
            if (len < 0) {
                ferry_cli_error(o->cmd, "stdin line %lld: expected {\"record\": \"<base64>\"}", lineno);
                status = 1;
                break;
            }
            rc = ferry_tfrecord_writer_write(w, raw, (size_t)len);
        } else {
            ferry_blob *b;
            rc = ferry_example_from_json(rt, line, (size_t)n, &b);
            if (rc) {
                ferry_cli_error(o->cmd, "stdin line %lld: %s", lineno, ferry_cli_reason(ferry_last_error()));
                status = 1;
                break;
            }
            rc = ferry_tfrecord_writer_write(w, ferry_blob_data(b), ferry_blob_size(b));
            ferry_blob_free(b);
        }
        if (rc) {
            ferry_cli_error(o->cmd, "%s", ferry_cli_reason(ferry_tfrecord_writer_error(w)));
            status = 1;
            break;
        }
        written++;
    }
    free(line);
    free(raw);
    if (ferry_tfrecord_writer_close(w)) {
        ferry_cli_error(o->cmd, "%s", ferry_cli_reason(ferry_last_error()));
        status = 1;
    }
    if (status == 0)
        fprintf(stderr, "ferry tfrecord write: %lld record%s written to %s\n", written, written == 1 ? "" : "s", out);
    else
        ferry_cli_error(o->cmd, "%s keeps the %lld record%s written before the error", out, written,
                        written == 1 ? "" : "s");
    return status;
}

int ferry_cli_tfrecord(int argc, char **argv) {
    if (argc < 2) return ferry_cli_usage_error("tfrecord", "missing the subcommand: count, verify, cat or write");
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        if (strcmp(sub, "help") == 0 && argc > 2) {
            if (ferry_cli_tfrecord_help(stdout, argv[2])) return FERRY_CLI_OK;
            return ferry_cli_usage_error(
                "tfrecord", "unknown subcommand '%s'; the subcommands are count, verify, cat and write", argv[2]);
        }
        ferry_cli_tfrecord_help(stdout, NULL);
        return FERRY_CLI_OK;
    }
    static const char *const prefixes[NSUB] = {"tfrecord count", "tfrecord verify", "tfrecord cat", "tfrecord write"};
    size_t k = 0;
    while (k < NSUB && strcmp(sub, subcommands[k].name) != 0) k++;
    if (k == NSUB)
        return ferry_cli_usage_error("tfrecord",
                                     "unknown subcommand '%s'; the subcommands are count, verify, cat and write", sub);
    if (ferry_cli_wants_help(argc, argv, 2)) {
        ferry_cli_tfrecord_help(stdout, sub);
        return FERRY_CLI_OK;
    }
    bool is_count = k == 0, is_verify = k == 1, is_cat = k == 2, is_write = k == 3;
    cli_opts o = {.cmd = prefixes[k]};
    int rc = parse_opts(argc, argv, &o, is_count, is_cat || is_write);
    if (rc == 0 && is_write && o.nargs != 1)
        rc = o.nargs == 0 ? ferry_cli_usage_error(o.cmd, "missing the output file")
                          : ferry_cli_usage_error(o.cmd, "takes one output file, got %d", o.nargs);
    if (rc == 0 && !is_write && o.nargs == 0) rc = ferry_cli_usage_error(o.cmd, "missing the files to read");
    if (rc) {
        free(o.args);
        return rc;
    }
    ferry_runtime *rt;
    if (ferry_runtime_create(NULL, &rt)) {
        ferry_cli_error(o.cmd, "%s", ferry_cli_reason(ferry_last_error()));
        free(o.args);
        return FERRY_CLI_FAILED;
    }
    int status = is_count    ? cmd_count(rt, &o)
                 : is_verify ? cmd_verify(rt, &o)
                 : is_cat    ? cmd_cat(rt, &o)
                             : cmd_write(rt, &o);
    ferry_runtime_free(rt);
    free(o.args);
    return status;
}
