/*
 * cli_tfrecord.c - `ferry tfrecord count|cat|verify|write`.
 */
#include <stdio.h>

#include "cli.h"
#include "ferry.h"

int ferry_cli_tfrecord(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "ferry tfrecord: not available in this build\n");
    return 1;
}
