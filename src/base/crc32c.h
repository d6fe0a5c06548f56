/*
 * crc32c.h - CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of TFRecord
 * framing, and the masking TensorFlow applies to stored CRCs.
 *
 * Two implementations give the same values: SSE4.2's crc32 instruction over three interleaved
 * streams (the instruction has a latency of three cycles and a throughput of one, so three
 * independent chains keep it busy; their results are joined with precomputed "append n zero
 * bytes" operators), and a portable slicing-by-8 table version. ferry__crc32c_extend picks the
 * hardware one at run time when the CPU has it. Tables are built once, on first use, by
 * whichever thread gets there first (the others spin until it is done); after that every
 * function is pure and thread-safe.
 *
 * Values follow the usual convention: ferry__crc32c("123456789", 9) == 0xe3069283, and
 * ferry__crc32c_extend(ferry__crc32c(a), b) == ferry__crc32c(a followed by b).
 */
#ifndef FERRY_BASE_CRC32C_H
#define FERRY_BASE_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CRC-32C of n bytes continuing from crc (0 to start). Hardware when available. */
uint32_t ferry__crc32c_extend(uint32_t crc, const void *p, size_t n);
static inline uint32_t ferry__crc32c(const void *p, size_t n) { return ferry__crc32c_extend(0, p, n); }

/* The portable slicing-by-8 implementation (always available). */
uint32_t ferry__crc32c_sw(uint32_t crc, const void *p, size_t n);
/* The SSE4.2 three-stream implementation; only call when ferry__crc32c_hw_available(). */
uint32_t ferry__crc32c_hw(uint32_t crc, const void *p, size_t n);
bool ferry__crc32c_hw_available(void);

/* TensorFlow's masking of stored CRCs (a CRC of data that holds CRCs is then less degenerate). */
#define FERRY__CRC32C_MASK_DELTA 0xa282ead8u
static inline uint32_t ferry__crc32c_mask(uint32_t c) { return ((c >> 15) | (c << 17)) + FERRY__CRC32C_MASK_DELTA; }
static inline uint32_t ferry__crc32c_unmask(uint32_t m) {
    uint32_t r = m - FERRY__CRC32C_MASK_DELTA;
    return (r >> 17) | (r << 15);
}

#endif
