/*
 * cli.h - the subcommands of the `ferry` tool and what they share. Each command lives in its own
 * file and uses only the public header, like any program built on libferry.
 *
 * How the tool speaks, everywhere:
 *   - help: `ferry help [COMMAND [SUBCOMMAND]]`, `ferry COMMAND --help` and
 *     `ferry COMMAND SUBCOMMAND --help` print to stdout and exit 0;
 *   - a usage error prints one line to stderr, "ferry CMD: what was wrong (see 'ferry CMD
 *     --help')", and exits 2;
 *   - a runtime error prints "ferry CMD: " once, then the cause (the file, the byte offset, the
 *     operating system's reason where there is one), and the command exits 1.
 */
#ifndef FERRY_CLI_H
#define FERRY_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "ferry.h"

enum { FERRY_CLI_OK = 0, FERRY_CLI_FAILED = 1, FERRY_CLI_USAGE = 2 };

/* Subcommands: argv[0] is the command's name ("state", "tfrecord", ...); each returns the exit status. */
int ferry_cli_state(int argc, char **argv);    /* ferry state show FILE */
int ferry_cli_tfrecord(int argc, char **argv); /* ferry tfrecord count|verify|cat|write ... */
int ferry_cli_report(int argc, char **argv);   /* ferry report page REPORT.json [TRACE.json] -o PAGE */
int ferry_cli_convert(int argc, char **argv);  /* ferry convert idx|fashion-mnist ... */

/* Help of a command (sub NULL: all of it) to f. Returns false when `sub` is not one of its
 * subcommands (nothing printed). */
bool ferry_cli_state_help(FILE *f, const char *sub);
bool ferry_cli_tfrecord_help(FILE *f, const char *sub);
bool ferry_cli_report_help(FILE *f, const char *sub);
bool ferry_cli_convert_help(FILE *f, const char *sub);

/* Prints "ferry <cmd>: <message> (see 'ferry <cmd> --help')" on stderr; returns FERRY_CLI_USAGE. */
int ferry_cli_usage_error(const char *cmd, const char *fmt, ...) FERRY_PRINTF(2, 3);
/* Prints "ferry <cmd>: <message>" on stderr. */
void ferry_cli_error(const char *cmd, const char *fmt, ...) FERRY_PRINTF(2, 3);
/* A library message without the name of the function or op it starts with ("tfrecord: ",
 * "ferry_state_file_read: "): the tool's own prefix already says what ran. */
const char *ferry_cli_reason(const char *message);
/* 0 when path names a file that can be opened for reading, else the errno that says why not
 * (EISDIR for a directory). */
int ferry_cli_check_readable(const char *path);
/* Whether argv[first..argc) asks for help (-h or --help before a "--"). */
bool ferry_cli_wants_help(int argc, char **argv, int first);

#endif
