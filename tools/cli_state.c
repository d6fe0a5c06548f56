/*
 * cli_state.c - `ferry state show FILE`: what a saved iterator state holds.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ferry.h"

int ferry_cli_state(int argc, char **argv) {
    if (argc < 3 || strcmp(argv[1], "show") != 0) {
        fprintf(stderr, "usage: ferry state show FILE\n");
        return 2;
    }
    fprintf(stderr, "ferry state: not available in this build\n");
    return 1;
}
