/*
 * fuzz_fixed_length.c - fuzz target for fixed_length_records (src/io/fixed_length.c) and the
 * decompressing stream under it, reading real files.
 *
 * Input: [flags][sizes][k][bytes]. sizes: record_bytes = 1 + (low 4 bits), header_bytes and
 * footer_bytes = 0..3 and 0..3 (bits 4-5, 6-7) scaled by flags bit 5 (x 5). The bytes are
 * written to a temporary file (in /dev/shm when it exists, else /tmp; one per process, rewritten
 * for every input, removed at exit) and read with options from flags: bits 0-1: 0 plain; 1 / 2:
 * the bytes gzip / zlib-compressed by this target and read with that compression; 3: the raw
 * bytes read as GZIP (garbage for the inflater). bit 2: a read buffer of 1, 3, 16 or 100 bytes
 * (bits 6-7 pick it), else 4 KiB. bit 3: the file twice in the list. bit 4: a missing file
 * between them.
 *
 * Checks, besides the sanitizers: every position is a bytes scalar of record_bytes bytes or an
 * error with a message; the stream ends within a bound of positions; when the content is known
 * (all modes but 3) the positions equal a reference (a file shorter than header + footer is one
 * FERRY_ECORRUPT; otherwise its whole records, then one FERRY_ECORRUPT if the body leaves a
 * partial record); the pass saves its state after k positions (k from the third byte) and goes
 * on; the state restored in a new iterator gives exactly the rest of that pass. Everything made
 * is freed: the runtime must be empty at the end.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "ferry.h"

#define FUZZ_TMP_NAME "fixed"
#include "file_harness.h"

static size_t expect_len; /* record_bytes of the current input */

static void drain(ferry_iterator *it, poslist *l, long max, size_t bound) {
    for (long i = 0; max < 0 || i < max; i++) {
        ferry_element *e = NULL;
        int rc = ferry_iterator_next(it, &e);
        if (rc == FERRY_END) {
            CHECK(e == NULL);
            return;
        }
        if (rc == FERRY_OK) {
            CHECK(e != NULL && ferry_element_size(e) == 1);
            const ferry_tensor *t = ferry_element_get(e, 0);
            CHECK(ferry_tensor_dtype(t) == FERRY_DTYPE_BYTES && ferry_tensor_rank(t) == 0);
            const uint8_t *p;
            size_t len;
            CHECK(ferry_tensor_bytes_get(t, 0, &p, &len) == FERRY_OK);
            CHECK(len == expect_len);
            push(l, rc, p, len);
            ferry_element_free(e);
        } else {
            CHECK(rc < 0 && e == NULL && ferry_iterator_error(it)[0] != '\0');
            push(l, rc, NULL, 0);
        }
        CHECK(l->n <= bound);
    }
}

/* The reference: the positions one file with this content gives. */
static void reference_records(const uint8_t *p, size_t n, size_t rb, size_t hb, size_t fb, poslist *out) {
    if (n < hb + fb) {
        push(out, FERRY_ECORRUPT, NULL, 0);
        return;
    }
    size_t body = n - hb - fb;
    for (size_t i = 0; i + rb <= body; i += rb) push(out, FERRY_OK, p + hb + i, rb);
    if (body % rb) push(out, FERRY_ECORRUPT, NULL, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    uint8_t flags = data[0], sizes = data[1], kbyte = data[2];
    data += 3;
    size -= 3;
    int mode = flags & 3;
    size_t scale = (flags & 32) ? 5 : 1;
    size_t rb = 1 + (sizes & 15), hb = ((sizes >> 4) & 3) * scale, fb = ((sizes >> 6) & 3) * scale;
    expect_len = rb;
    uint8_t *z;
    size_t zn;
    ferry_fixed_length_options o = {
        .record_bytes = (int64_t)rb, .header_bytes = (int64_t)hb, .footer_bytes = (int64_t)fb};
    o.compression = write_input(mode, data, size, &z, &zn);
    static const size_t small[4] = {1, 3, 16, 100};
    o.buffer_size = (flags & 4) ? small[flags >> 6] : 4096;
    const char *files[3];
    size_t nfiles = file_list(flags, files);

    ferry_runtime *rt;
    CHECK(ferry_runtime_create(NULL, &rt) == FERRY_OK);
    ferry_dataset *ds;
    CHECK(ferry_dataset_fixed_length_records(rt, nfiles, files, &o, &ds) == FERRY_OK);
    size_t bound = nfiles * (1100 * (size + zn) + 16);
    /* One pass, saved after k positions (k from the k byte, modulo a bound of the length). */
    size_t k = kbyte % (size + zn + 2);
    poslist full = {0};
    ferry_blob *b = pass_saved_midway(ds, drain, k, bound, &full, &k);

    if (mode != 3) {
        poslist want = {0};
        reference_records(data, size, rb, hb, fb, &want);
        size_t one = want.n;
        if (flags & 16) push(&want, FERRY_ENOTFOUND, NULL, 0);
        if (flags & 8)
            for (size_t i = 0; i < one; i++) push(&want, want.v[i].rc, want.v[i].p, want.v[i].len);
        CHECK(full.n == want.n);
        for (size_t i = 0; i < full.n; i++) CHECK(same(&full.v[i], &want.v[i]));
        poslist_free(&want);
    }

    check_restore(ds, drain, b, &full, k, bound);
    ferry_dataset_unref(ds);
    CHECK(ferry_runtime_free(rt) == FERRY_OK);
    poslist_free(&full);
    free(z);
    return 0;
}
