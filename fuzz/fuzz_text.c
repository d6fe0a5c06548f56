/*
 * fuzz_text.c - fuzz target for text_lines (src/io/text.c) and the decompressing stream under
 * it, reading real files.
 *
 * Input: [flags][k][bytes]. The bytes are written to a temporary file (in /dev/shm when it
 * exists, else /tmp; one file per process, rewritten for every input, removed at exit), and read
 * with options from flags: bits 0-1: 0 plain; 1 / 2: the bytes gzip / zlib-compressed by this
 * target and read with that compression; 3: the raw bytes read as GZIP (garbage for the
 * inflater). bit 2: a small read buffer of 1 to 512 bytes (bits 5-7 pick it), else 4 KiB (the
 * default 256 KiB costs a large allocation per stream, which slows the fuzzer down for no new
 * paths). bit 3: the file twice in the list. bit 4: a missing file between them.
 *
 * Checks, besides the sanitizers: every position is a bytes scalar without "\n" or an error with
 * a message; the stream ends within a bound of positions; when the content is known (all modes
 * but 3) the lines equal a reference splitter (TensorFlow's ReadLine: "\n" ends a line, one
 * "\r" before it or at the end of the file is dropped, an empty last line is no line); the pass
 * saves its state after k positions (k from the second byte) and goes on; the state restored in
 * a new iterator gives exactly the rest of that pass. Everything made is freed: the runtime must
 * be empty at the end.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "ferry.h"

#define FUZZ_TMP_NAME "text"
#include "file_harness.h"

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
            CHECK(len == 0 || memchr(p, '\n', len) == NULL);
            push(l, rc, p, len);
            ferry_element_free(e);
        } else {
            CHECK(rc < 0 && e == NULL && ferry_iterator_error(it)[0] != '\0');
            push(l, rc, NULL, 0);
        }
        CHECK(l->n <= bound);
    }
}

/* The reference splitter: TensorFlow's InputBuffer::ReadLine over the whole content. */
static void reference_lines(const uint8_t *p, size_t n, poslist *out) {
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\n') continue;
        size_t len = i - start;
        if (len && p[i - 1] == '\r') len--;
        push(out, FERRY_OK, p + start, len);
        start = i + 1;
    }
    size_t len = n - start;
    if (len && p[n - 1] == '\r') len--;
    if (len) push(out, FERRY_OK, p + start, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    uint8_t flags = data[0], kbyte = data[1];
    data += 2;
    size -= 2;
    int mode = flags & 3;
    uint8_t *z;
    size_t zn;
    ferry_text_line_options o = {0};
    o.compression = write_input(mode, data, size, &z, &zn);
    static const size_t small[8] = {1, 2, 3, 7, 16, 64, 100, 512};
    o.buffer_size = (flags & 4) ? small[flags >> 5] : 4096;
    const char *files[3];
    size_t nfiles = file_list(flags, files);

    ferry_runtime *rt;
    CHECK(ferry_runtime_create(NULL, &rt) == FERRY_OK);
    ferry_dataset *ds;
    CHECK(ferry_dataset_text_lines(rt, nfiles, files, &o, &ds) == FERRY_OK);
    size_t bound = nfiles * (1100 * (size + zn) + 16);
    /* One pass, saved after k positions (k from the k byte, modulo a bound of the length). */
    size_t k = kbyte % (size + zn + 2);
    poslist full = {0};
    ferry_blob *b = pass_saved_midway(ds, drain, k, bound, &full, &k);

    if (mode != 3) {
        poslist want = {0};
        reference_lines(data, size, &want);
        size_t one = want.n;
        if (flags & 16) push(&want, FERRY_ENOTFOUND, NULL, 0);
        if (flags & 8)
            for (size_t i = 0; i < one; i++) push(&want, FERRY_OK, want.v[i].p, want.v[i].len);
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
