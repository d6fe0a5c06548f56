/*
 * bench_tfrecord.c - TFRecord read throughput with CRC checks, from the page cache, one thread,
 * side by side with the raw costs it is made of, measured in the same run:
 *   tfrecord   ferry_dataset_tfrecord + iterator, every element made and freed, both CRCs checked
 *   read(2)    pread of the whole file in 256 KiB blocks into one buffer (the kernel's copy)
 *   memcpy     100 KB blocks from a file-sized source into one destination
 *   crc32c hw  SSE4.2 three-stream CRC over the same 100 KB blocks (memory-bound), over one
 *              cache-resident block (the instruction's speed), and the software fallback
 * GB/s = 1e9 bytes per second of record data (tfrecord) or of bytes touched; median of the runs.
 *
 * usage: bench_tfrecord [MB (default 256)] [runs (default 7)] [record KB (default 100)]
 * The file is written to $TMPDIR (default /tmp), read once to warm the page cache, and removed.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/crc32c.h"
#include "ferry.h"

#include "bench_util.h"

static volatile uint32_t sink;

int main(int argc, char **argv) {
    size_t mb = argc > 1 ? (size_t)atol(argv[1]) : 256;
    int runs = argc > 2 ? atoi(argv[2]) : 7;
    size_t rec = (argc > 3 ? (size_t)atol(argv[3]) : 100) * 1000;
    if (mb == 0 || runs <= 0 || runs > 100 || rec == 0) {
        fprintf(stderr, "usage: bench_tfrecord [MB] [runs] [record KB]\n");
        return 2;
    }
    size_t nrec = mb * 1000 * 1000 / rec;
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char path[512];
    snprintf(path, sizeof path, "%s/ferry_bench_%d.tfrecord", dir, (int)getpid());

    ferry_runtime *rt;
    if (ferry_runtime_create(NULL, &rt)) return 1;
    uint8_t *payload = malloc(rec);
    for (size_t i = 0; i < rec; i++) payload[i] = (uint8_t)(i * 131 + (i >> 9));
    ferry_tfrecord_writer *w;
    if (ferry_tfrecord_writer_open(rt, path, NULL, &w)) {
        fprintf(stderr, "%s\n", ferry_last_error());
        return 1;
    }
    for (size_t i = 0; i < nrec; i++) {
        payload[0] = (uint8_t)i;
        if (ferry_tfrecord_writer_write(w, payload, rec)) {
            fprintf(stderr, "%s\n", ferry_tfrecord_writer_error(w));
            return 1;
        }
    }
    if (ferry_tfrecord_writer_close(w)) {
        fprintf(stderr, "%s\n", ferry_last_error());
        return 1;
    }
    size_t fsize = nrec * (rec + 16);

    /* Warm the page cache and keep a copy of the file as the memcpy/CRC source. */
    uint8_t *file = malloc(fsize);
    int fd = open(path, O_RDONLY);
    size_t got = 0;
    while (got < fsize) {
        ssize_t r = pread(fd, file + got, fsize - got, (off_t)got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    if (got != fsize) {
        fprintf(stderr, "short read of %s\n", path);
        return 1;
    }

    double t_tfr[100], t_read[100], t_cpy[100], t_hw[100], t_sw[100], t_hot[100];
    uint8_t *dst = malloc(rec);
    uint8_t *blk = malloc(256 * 1024);
    const char *files[1] = {path};
    for (int r = 0; r < runs; r++) {
        /* tfrecord */
        ferry_dataset *ds;
        ferry_iterator *it;
        if (ferry_dataset_tfrecord(rt, 1, files, NULL, &ds) || ferry_iterator_create(ds, NULL, &it)) {
            fprintf(stderr, "%s\n", ferry_last_error());
            return 1;
        }
        size_t n = 0;
        double t0 = now_s();
        for (;;) {
            ferry_element *e;
            int rc = ferry_iterator_next(it, &e);
            if (rc == FERRY_END) break;
            if (rc) {
                fprintf(stderr, "%s\n", ferry_iterator_error(it));
                return 1;
            }
            n++;
            ferry_element_free(e);
        }
        t_tfr[r] = (double)(n * rec) / (now_s() - t0) / 1e9;
        ferry_iterator_free(it);
        ferry_dataset_unref(ds);
        if (n != nrec) {
            fprintf(stderr, "read %zu records, wrote %zu\n", n, nrec);
            return 1;
        }
        /* read(2) */
        t0 = now_s();
        for (size_t off = 0; off < fsize; off += 256 * 1024) {
            size_t want = fsize - off < 256 * 1024 ? fsize - off : 256 * 1024;
            if (pread(fd, blk, want, (off_t)off) != (ssize_t)want) return 1;
        }
        t_read[r] = (double)fsize / (now_s() - t0) / 1e9;
        /* memcpy */
        t0 = now_s();
        for (size_t i = 0; i < nrec; i++) memcpy(dst, file + i * (rec + 16) + 12, rec);
        sink = dst[rec / 2];
        t_cpy[r] = (double)(nrec * rec) / (now_s() - t0) / 1e9;
        /* crc32c */
        uint32_t c = 0;
        t0 = now_s();
        for (size_t i = 0; i < nrec; i++) c ^= ferry__crc32c(file + i * (rec + 16) + 12, rec);
        t_hw[r] = (double)(nrec * rec) / (now_s() - t0) / 1e9;
        sink = c;
        /* crc32c over one cache-resident 100 KB block: the instruction's own speed */
        size_t reps = nrec;
        t0 = now_s();
        for (size_t i = 0; i < reps; i++) c ^= ferry__crc32c(file + 12, rec);
        t_hot[r] = (double)(reps * rec) / (now_s() - t0) / 1e9;
        size_t nsw = nrec / 8 ? nrec / 8 : 1;
        t0 = now_s();
        for (size_t i = 0; i < nsw; i++) c ^= ferry__crc32c_sw(0, file + i * (rec + 16) + 12, rec);
        t_sw[r] = (double)(nsw * rec) / (now_s() - t0) / 1e9;
        sink = c;
    }
    printf("file: %s, %zu records of %zu bytes (%.1f MB), %d runs, one thread, page cache\n", path, nrec, rec,
           (double)fsize / 1e6, runs);
    printf("  tfrecord read + CRC checks         %6.2f GB/s (median)\n", bench_median(t_tfr, runs));
    printf("  raw pread 256 KiB blocks           %6.2f GB/s\n", bench_median(t_read, runs));
    printf("  raw memcpy 100 KB blocks           %6.2f GB/s\n", bench_median(t_cpy, runs));
    const char *impl = ferry__crc32c_hw_available() ? "sse4.2 x3" : "software ";
    printf("  raw crc32c %s 100 KB blocks %6.2f GB/s\n", impl, bench_median(t_hw, runs));
    printf("  raw crc32c %s one hot block %6.2f GB/s\n", impl, bench_median(t_hot, runs));
    printf("  raw crc32c slicing-by-8            %6.2f GB/s\n", bench_median(t_sw, runs));
    close(fd);
    unlink(path);
    free(file);
    free(dst);
    free(blk);
    free(payload);
    return ferry_runtime_free(rt) == FERRY_OK ? 0 : 1;
}
