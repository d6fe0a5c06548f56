/*
 * cli_state.c - `ferry state show FILE`: what a saved iterator state holds (format version,
 * pipeline fingerprint and seed, position, sizes), after checking its framing and checksum.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ferry.h"

int ferry_cli_state(int argc, char **argv) {
    if (argc != 3 || strcmp(argv[1], "show") != 0) {
        fprintf(stderr, "usage: ferry state show FILE\n");
        return 2;
    }
    ferry_runtime *rt;
    if (ferry_runtime_create(NULL, &rt) != FERRY_OK) {
        fprintf(stderr, "ferry state: %s\n", ferry_last_error());
        return 1;
    }
    ferry_blob *b = NULL;
    ferry_state_info info;
    int rc = ferry_state_file_read(rt, argv[2], &b);
    if (rc == FERRY_OK) rc = ferry_state_info_get(ferry_blob_data(b), ferry_blob_size(b), &info);
    if (rc != FERRY_OK) {
        fprintf(stderr, "ferry state: %s: %s (%s)\n", argv[2], ferry_last_error(), ferry_error_name(rc));
    } else {
        printf("file:         %s\n", argv[2]);
        printf("format:       ferry iterator state, version %u\n", info.version);
        printf("pipeline:     fingerprint %016" PRIx64 ", seed %" PRIu64 "\n", info.fingerprint, info.seed);
        printf("position:     %" PRId64 " elements handed out before the save\n", info.position);
        printf("size:         %zu bytes (%zu of per-op state)\n", info.size, info.payload_size);
        printf("checksum:     ok\n");
    }
    ferry_blob_free(b);
    ferry_runtime_free(rt);
    return rc == FERRY_OK ? 0 : 1;
}
