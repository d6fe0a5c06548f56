/*
 * cli_report.c - `ferry report page REPORT.json [TRACE.json] -o PAGE.html`: the report page (one
 * self-contained HTML file: the pipeline's graph, the verdict, the trace's timeline) from a
 * report written by ferry_iterator_report_json and a trace written by ferry_runtime_trace_write
 * (or FERRY_TRACE). The files are read whole; the page shows a file that is not JSON as
 * unreadable rather than failing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char page_usage[] = "usage: ferry report page REPORT.json [TRACE.json] -o PAGE.html\n";

bool ferry_cli_report_help(FILE *f, const char *sub) {
    if (sub && strcmp(sub, "page") != 0) return false;
    if (!sub) fprintf(f, "usage: ferry report SUBCOMMAND ...\n\nsubcommands:\n  page   write the report page\n\n");
    else fputs(page_usage, f);
    fprintf(f, "'page' writes PAGE.html: one self-contained HTML file (no network, no external script) with\n"
               "the pipeline as a graph of its stages (rate, threads, buffer, waits, CPU share), ferry's\n"
               "verdict on what limits it, and, given TRACE.json, the timeline of every thread. REPORT.json\n"
               "is what ferry_iterator_report_json returns, written to a file; TRACE.json what\n"
               "ferry_runtime_trace_write (or FERRY_TRACE=TRACE.json in the environment) writes.\n"
               "exit status: 0 written, 1 a file unreadable or the page not written, 2 usage error\n");
    return true;
}

/* The bytes of path (malloc'ed, NUL added) or NULL with a message printed. */
static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ferry_cli_error("report", "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    bool oom = !buf;
    while (buf) {
        if (len + 1 >= cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                oom = true;
                break;
            }
            buf = b;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - 1 - len, f);
        len += got;
        if (got == 0) break;
    }
    bool bad = ferror(f) != 0;
    fclose(f);
    if (oom || bad) {
        ferry_cli_error("report", "%s: %s", path, bad ? "read error" : "out of memory");
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    *n = len;
    return buf;
}

int ferry_cli_report(int argc, char **argv) {
    /* This command's own runtime traces nothing: FERRY_TRACE left in the environment would
     * have it write an empty trace over the file the page is made from. */
    unsetenv("FERRY_TRACE");
    if (ferry_cli_wants_help(argc, argv, 1)) {
        ferry_cli_report_help(stdout, argc > 1 && strcmp(argv[1], "page") == 0 ? "page" : NULL);
        return FERRY_CLI_OK;
    }
    if (argc < 2) return ferry_cli_usage_error("report", "missing the subcommand: page");
    if (strcmp(argv[1], "page") != 0) return ferry_cli_usage_error("report", "unknown subcommand '%s'", argv[1]);
    const char *files[2] = {NULL, NULL}, *out = NULL;
    int nfiles = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "-o") == 0) {
            if (i + 1 >= argc) return ferry_cli_usage_error("report", "-o needs the page's file name");
            out = argv[++i];
        } else if (nfiles < 2) {
            files[nfiles++] = argv[i];
        } else {
            return ferry_cli_usage_error("report", "unexpected argument '%s'", argv[i]);
        }
    }
    if (nfiles == 0) return ferry_cli_usage_error("report", "missing REPORT.json");
    if (!out) return ferry_cli_usage_error("report", "missing -o PAGE.html");
    size_t rn = 0, tn = 0;
    char *report = read_all(files[0], &rn);
    if (!report) return FERRY_CLI_FAILED;
    char *trace = NULL;
    if (files[1] && !(trace = read_all(files[1], &tn))) {
        free(report);
        return FERRY_CLI_FAILED;
    }
    ferry_runtime *rt;
    int rc = ferry_runtime_create(NULL, &rt);
    if (rc == FERRY_OK) {
        rc = ferry_report_page_write(rt, report, rn, trace, tn, out);
        if (rc != FERRY_OK) ferry_cli_error("report", "%s", ferry_cli_reason(ferry_last_error()));
        ferry_runtime_free(rt);
    } else {
        ferry_cli_error("report", "%s", ferry_cli_reason(ferry_last_error()));
    }
    free(report);
    free(trace);
    if (rc != FERRY_OK) return FERRY_CLI_FAILED;
    printf("wrote %s\n", out);
    return FERRY_CLI_OK;
}
