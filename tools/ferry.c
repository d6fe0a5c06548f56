/*
 * ferry.c - the `ferry` command-line tool: help, `version`, and dispatch to the commands of
 * cli.h (state, tfrecord, report, convert). How every command prints help and errors is written
 * in cli.h.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ferry.h"

static void usage(FILE *f) {
    fprintf(f, "usage: ferry COMMAND [ARGS]\n"
               "Inspects what ferry reads and writes: saved iterator states, TFRecord files and reports;\n"
               "converts datasets to TFRecord files.\n"
               "\n"
               "commands:\n"
               "  version                            print the version of the ferry library\n"
               "  state show FILE                    describe a saved iterator state (position, seed,\n"
               "                                     pipeline fingerprint), or say what FILE is instead\n"
               "  tfrecord count|verify|cat|write    count, check, print and write TFRecord files\n"
               "  report page REPORT [TRACE] -o OUT  write the report page (HTML: graph, verdict, timeline)\n"
               "  convert idx|fashion-mnist ...      convert IDX datasets (MNIST, Fashion-MNIST) to TFRecord\n"
               "                                     shards of tf.train.Example and to image folders\n"
               "  help [COMMAND [SUBCOMMAND]]        this help, or a command's\n"
               "\n"
               "'ferry COMMAND --help' and 'ferry help COMMAND' describe a command and its options.\n"
               "exit status: 0 success, 1 failure (bad data, I/O error), 2 usage error\n");
}

static void version_help(FILE *f) {
    fprintf(f, "usage: ferry version\n"
               "Prints the version of the ferry library the tool is built with, e.g. 'ferry 0.1.0'.\n");
}

/* ferry help [COMMAND [SUBCOMMAND]] */
static int help(int argc, char **argv) {
    if (argc < 3) {
        usage(stdout);
        return FERRY_CLI_OK;
    }
    const char *cmd = argv[2], *sub = argc > 3 ? argv[3] : NULL;
    if (argc > 4) return ferry_cli_usage_error("help", "too many arguments: help takes a command and a subcommand");
    bool ok;
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "help") == 0) {
        if (sub) return ferry_cli_usage_error(cmd, "'%s' has no subcommands", cmd);
        if (strcmp(cmd, "version") == 0) version_help(stdout);
        else usage(stdout);
        ok = true;
    } else if (strcmp(cmd, "state") == 0) {
        ok = ferry_cli_state_help(stdout, sub);
    } else if (strcmp(cmd, "tfrecord") == 0) {
        ok = ferry_cli_tfrecord_help(stdout, sub);
    } else if (strcmp(cmd, "report") == 0) {
        ok = ferry_cli_report_help(stdout, sub);
    } else if (strcmp(cmd, "convert") == 0) {
        ok = ferry_cli_convert_help(stdout, sub);
    } else {
        return ferry_cli_usage_error(
            "help", "unknown command '%s'; the commands are version, state, tfrecord, report and convert", cmd);
    }
    if (!ok) return ferry_cli_usage_error(cmd, "unknown subcommand '%s'", sub);
    return FERRY_CLI_OK;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "ferry: missing the command: version, state, tfrecord, report or convert (see 'ferry help')\n");
        return FERRY_CLI_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) return help(argc, argv);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        if (ferry_cli_wants_help(argc, argv, 2)) {
            version_help(stdout);
            return FERRY_CLI_OK;
        }
        if (argc > 2) return ferry_cli_usage_error("version", "unexpected argument '%s'", argv[2]);
        printf("ferry %s\n", ferry_version());
        return FERRY_CLI_OK;
    }
    if (strcmp(cmd, "state") == 0) return ferry_cli_state(argc - 1, argv + 1);
    if (strcmp(cmd, "tfrecord") == 0) return ferry_cli_tfrecord(argc - 1, argv + 1);
    if (strcmp(cmd, "report") == 0) return ferry_cli_report(argc - 1, argv + 1);
    if (strcmp(cmd, "convert") == 0) return ferry_cli_convert(argc - 1, argv + 1);
    fprintf(stderr,
            "ferry: unknown command '%s'; the commands are version, state, tfrecord, report and convert (see 'ferry "
            "help')\n",
            cmd);
    return FERRY_CLI_USAGE;
}
