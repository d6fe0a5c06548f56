/*
 * ferry.c - the `ferry` command-line tool: dispatches to the subcommands of cli.h.
 * The tool uses only the public header, like any program built on libferry.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ferry.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ferry <command> [args]\n"
            "commands:\n"
            "  version                         print the library version\n"
            "  state show FILE                 describe a saved iterator state\n"
            "  tfrecord count|cat|verify|write  TFRecord files (see ferry tfrecord --help)\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("ferry %s\n", ferry_version());
        return 0;
    }
    if (strcmp(argv[1], "state") == 0) return ferry_cli_state(argc - 1, argv + 1);
    if (strcmp(argv[1], "tfrecord") == 0) return ferry_cli_tfrecord(argc - 1, argv + 1);
    fprintf(stderr, "ferry: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
