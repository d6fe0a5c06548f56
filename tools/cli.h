/*
 * cli.h - the subcommands of the `ferry` tool. Each lives in its own file and uses only the
 * public header; each returns the process exit status (0 ok, 1 failure, 2 usage).
 */
#ifndef FERRY_CLI_H
#define FERRY_CLI_H

int ferry_cli_state(int argc, char **argv);    /* ferry state show FILE */
int ferry_cli_tfrecord(int argc, char **argv); /* ferry tfrecord count|cat|verify|write ... */

#endif
