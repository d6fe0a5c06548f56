/*
 * fuzz_tfrecord.c - fuzz target for the TFRecord reader (and the decompressing stream under it)
 * over an in-memory file.
 *
 * Input: [flags][k][file bytes]. flags bit 0: skip CRC checks; bits 1-2: compression (0 none,
 * 1 gzip, 2 zlib, 3 none); bit 3: drop every bad record; bit 4: max_bad_records 1; bit 5: a
 * 16-byte read buffer (every buffer edge case); bit 6: max_record_size 64.
 *
 * Checks, besides the sanitizers: the reader ends within a bound of positions (it always moves
 * forward: a bad record never makes it loop); every position is an element holding one bytes
 * scalar or an error with a message; and save after k positions (k from the second byte),
 * restore, and the rest of the stream equals the uninterrupted one (codes and record bytes).
 * Everything made is freed: the runtime must be empty at the end.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"

/* abort() with the line, so that a report says which check failed. */
#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "fuzz_tfrecord.c:%d: check failed: %s\n", __LINE__, #cond);                                \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

typedef struct pos {
    int rc;
    uint64_t h;
} pos;

typedef struct poslist {
    pos *p;
    size_t n, cap;
} poslist;

static void push(poslist *l, int rc, uint64_t h) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->p = realloc(l->p, l->cap * sizeof *l->p);
        CHECK(l->p != NULL);
    }
    l->p[l->n].rc = rc;
    l->p[l->n].h = h;
    l->n++;
}

/* Reads up to max positions (all when max < 0) into l; aborts past bound. */
static void drain(ferry_iterator *it, poslist *l, long max, size_t bound) {
    for (long i = 0; max < 0 || i < max; i++) {
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) {
            CHECK(e == NULL);
            return;
        }
        uint64_t h = 0;
        if (rc == FERRY_OK) {
            CHECK(e != NULL && ferry_element_size(e) == 1);
            const uint8_t *p;
            size_t len;
            CHECK(ferry_tensor_bytes_get(ferry_element_get(e, 0), 0, &p, &len) == FERRY_OK);
            h = ferry__fnv64(FERRY__FNV_INIT, p, len) ^ len;
            ferry_element_free(e);
        } else {
            CHECK(e == NULL && ferry_iterator_error(it)[0] != '\0');
        }
        push(l, rc, h);
        CHECK(l->n <= bound); /* else: no forward progress */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    uint8_t flags = data[0], kbyte = data[1];
    data += 2;
    size -= 2;
    ferry_tfrecord_options o = {0};
    o.skip_crc_check = flags & 1;
    int c = (flags >> 1) & 3;
    o.compression = c == 1 ? FERRY_COMPRESSION_GZIP : c == 2 ? FERRY_COMPRESSION_ZLIB : FERRY_COMPRESSION_NONE;
    o.max_bad_records = (flags & 8) ? FERRY_INFINITE : (flags & 16) ? 1 : 0;
    o.buffer_size = (flags & 32) ? 16 : 0;
    o.max_record_size = (flags & 64) ? 64 : 0;
    ferry_runtime *rt;
    CHECK(ferry_runtime_create(NULL, &rt) == FERRY_OK);
    ferry_dataset *ds;
    CHECK(ferry__dataset_tfrecord_memory(rt, "fuzz.tfrecord", size ? data : NULL, size, &o, &ds) == FERRY_OK);
    /* deflate expands at most ~1032:1; a position consumes at least one byte. */
    size_t bound = 1100 * size + 16;
    ferry_iterator *it;
    CHECK(ferry_iterator_create(ds, NULL, &it) == FERRY_OK);
    poslist full = {0};
    drain(it, &full, -1, bound);
    ferry_iterator_free(it);

    size_t k = full.n ? kbyte % (full.n + 1) : 0;
    CHECK(ferry_iterator_create(ds, NULL, &it) == FERRY_OK);
    poslist head = {0};
    drain(it, &head, (long)k, bound);
    CHECK(head.n == k);
    for (size_t i = 0; i < k; i++) CHECK(head.p[i].rc == full.p[i].rc && head.p[i].h == full.p[i].h);
    ferry_blob *b;
    CHECK(ferry_iterator_save(it, &b) == FERRY_OK);
    ferry_iterator *r;
    CHECK(ferry_iterator_restore(ds, ferry_blob_data(b), ferry_blob_size(b), NULL, &r) == FERRY_OK);
    poslist tail = {0};
    drain(r, &tail, -1, bound);
    CHECK(tail.n == full.n - k);
    for (size_t i = 0; i < tail.n; i++) CHECK(tail.p[i].rc == full.p[k + i].rc && tail.p[i].h == full.p[k + i].h);
    ferry_iterator_free(r);
    ferry_blob_free(b);
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    CHECK(ferry_runtime_free(rt) == FERRY_OK);
    free(full.p);
    free(head.p);
    free(tail.p);
    return 0;
}
