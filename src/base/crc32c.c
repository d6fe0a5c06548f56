/*
 * crc32c.c - CRC-32C in hardware (SSE4.2, three interleaved streams) and in software
 * (slicing-by-8), chosen at run time. See crc32c.h for the contract.
 *
 * Three streams: a buffer is cut into blocks of 3 x LONG bytes (then 3 x SHORT for the tail);
 * each third is run through its own crc32 chain starting at 0, so the three chains proceed in
 * parallel in the CPU. CRCs are linear, so the CRC of (A, B) is the CRC of A "extended by |B|
 * zero bytes" xor the CRC of B from 0; extending by a fixed number of zero bytes is a 32x32 bit
 * matrix over GF(2), applied with four 256-entry tables (zeros_long / zeros_short). This is Mark
 * Adler's construction (crc32c.c, zlib's crc32_combine).
 *
 * Initialisation: the tables (8 x 256 for slicing, 2 x 4 x 256 for the zero operators) and the
 * choice of implementation are made once. `state` goes 0 -> 1 (one thread builds) -> 2 (ready,
 * release); other threads spin on it with acquire loads, so readers always see full tables.
 */
#include "crc32c.h"

#include "base/endian.h"

#include <stdatomic.h>
#include <string.h>

#include "platform/platform.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FERRY_CRC_X86 1
#include <nmmintrin.h>
#endif

#define POLY 0x82f63b78u
#define LONG_BLOCK 8192 /* must be a power of two */
#define SHORT_BLOCK 256 /* must be a power of two */

static uint32_t slice[8][256];
static uint32_t zeros_long[4][256];
static uint32_t zeros_short[4][256];
static bool have_hw;
static _Atomic int state;

/* ---- GF(2) matrices for "append zeros" ------------------------------------------------- */
static uint32_t gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    while (vec) {
        if (vec & 1) sum ^= *mat;
        vec >>= 1;
        mat++;
    }
    return sum;
}

static void gf2_square(uint32_t *square, const uint32_t *mat) {
    for (int n = 0; n < 32; n++) square[n] = gf2_times(mat, mat[n]);
}

/* The operator that appends len zero bytes (len a power of two) to a raw CRC register. */
static void zeros_op(uint32_t *even, size_t len) {
    uint32_t odd[32];
    odd[0] = POLY; /* one zero bit */
    uint32_t row = 1;
    for (int n = 1; n < 32; n++) {
        odd[n] = row;
        row <<= 1;
    }
    gf2_square(even, odd); /* two bits */
    gf2_square(odd, even); /* four bits */
    /* Each square doubles: the first gives one byte, then two bytes, ... until len is used up. */
    do {
        gf2_square(even, odd);
        len >>= 1;
        if (len == 0) return;
        gf2_square(odd, even);
        len >>= 1;
    } while (len);
    memcpy(even, odd, sizeof odd);
}

static void zeros_tables(uint32_t tab[4][256], size_t len) {
    uint32_t op[32];
    zeros_op(op, len);
    for (uint32_t n = 0; n < 256; n++) {
        tab[0][n] = gf2_times(op, n);
        tab[1][n] = gf2_times(op, n << 8);
        tab[2][n] = gf2_times(op, n << 16);
        tab[3][n] = gf2_times(op, n << 24);
    }
}

static inline uint32_t zeros_apply(uint32_t tab[4][256], uint32_t crc) {
    return tab[0][crc & 0xff] ^ tab[1][(crc >> 8) & 0xff] ^ tab[2][(crc >> 16) & 0xff] ^ tab[3][crc >> 24];
}

static void build_tables(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        slice[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = slice[0][n];
        for (int k = 1; k < 8; k++) {
            c = slice[0][c & 0xff] ^ (c >> 8);
            slice[k][n] = c;
        }
    }
    zeros_tables(zeros_long, LONG_BLOCK);
    zeros_tables(zeros_short, SHORT_BLOCK);
#ifdef FERRY_CRC_X86
    __builtin_cpu_init();
    have_hw = __builtin_cpu_supports("sse4.2") != 0;
#else
    have_hw = false;
#endif
}

static inline void ensure_tables(void) {
    if (atomic_load_explicit(&state, memory_order_acquire) == 2) return;
    int expected = 0;
    if (atomic_compare_exchange_strong_explicit(&state, &expected, 1, memory_order_acq_rel, memory_order_acquire)) {
        build_tables();
        atomic_store_explicit(&state, 2, memory_order_release);
        return;
    }
    while (atomic_load_explicit(&state, memory_order_acquire) != 2) ferry__cpu_relax();
}

bool ferry__crc32c_hw_available(void) {
    ensure_tables();
    return have_hw;
}


/* ---- software: slicing-by-8 ------------------------------------------------------------- */
uint32_t ferry__crc32c_sw(uint32_t crc, const void *buf, size_t n) {
    ensure_tables();
    const uint8_t *p = buf;
    uint32_t c = crc ^ 0xffffffffu;
    while (n && ((uintptr_t)p & 7)) {
        c = slice[0][(c ^ *p++) & 0xff] ^ (c >> 8);
        n--;
    }
    while (n >= 8) {
        uint64_t w = ferry__load_le64(p) ^ c;
        c = slice[7][w & 0xff] ^ slice[6][(w >> 8) & 0xff] ^ slice[5][(w >> 16) & 0xff] ^ slice[4][(w >> 24) & 0xff] ^
            slice[3][(w >> 32) & 0xff] ^ slice[2][(w >> 40) & 0xff] ^ slice[1][(w >> 48) & 0xff] ^ slice[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) c = slice[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

/* ---- hardware: SSE4.2, three streams ---------------------------------------------------- */
#ifdef FERRY_CRC_X86
__attribute__((target("sse4.2"))) uint32_t ferry__crc32c_hw(uint32_t crc, const void *buf, size_t n) {
    ensure_tables();
    const uint8_t *p = buf;
    uint64_t c0 = crc ^ 0xffffffffu;
    while (n && ((uintptr_t)p & 7)) {
        c0 = _mm_crc32_u8((uint32_t)c0, *p++);
        n--;
    }
    while (n >= 3 * LONG_BLOCK) {
        uint64_t c1 = 0, c2 = 0;
        const uint8_t *end = p + LONG_BLOCK;
        do {
            c0 = _mm_crc32_u64(c0, ferry__load_le64(p));
            c1 = _mm_crc32_u64(c1, ferry__load_le64(p + LONG_BLOCK));
            c2 = _mm_crc32_u64(c2, ferry__load_le64(p + 2 * LONG_BLOCK));
            c0 = _mm_crc32_u64(c0, ferry__load_le64(p + 8));
            c1 = _mm_crc32_u64(c1, ferry__load_le64(p + 8 + LONG_BLOCK));
            c2 = _mm_crc32_u64(c2, ferry__load_le64(p + 8 + 2 * LONG_BLOCK));
            p += 16;
        } while (p < end);
        c0 = zeros_apply(zeros_long, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = zeros_apply(zeros_long, (uint32_t)c0) ^ (uint32_t)c2;
        p += 2 * LONG_BLOCK;
        n -= 3 * LONG_BLOCK;
    }
    while (n >= 3 * SHORT_BLOCK) {
        uint64_t c1 = 0, c2 = 0;
        const uint8_t *end = p + SHORT_BLOCK;
        do {
            c0 = _mm_crc32_u64(c0, ferry__load_le64(p));
            c1 = _mm_crc32_u64(c1, ferry__load_le64(p + SHORT_BLOCK));
            c2 = _mm_crc32_u64(c2, ferry__load_le64(p + 2 * SHORT_BLOCK));
            p += 8;
        } while (p < end);
        c0 = zeros_apply(zeros_short, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = zeros_apply(zeros_short, (uint32_t)c0) ^ (uint32_t)c2;
        p += 2 * SHORT_BLOCK;
        n -= 3 * SHORT_BLOCK;
    }
    while (n >= 8) {
        c0 = _mm_crc32_u64(c0, ferry__load_le64(p));
        p += 8;
        n -= 8;
    }
    while (n--) c0 = _mm_crc32_u8((uint32_t)c0, *p++);
    return (uint32_t)c0 ^ 0xffffffffu;
}
#else
uint32_t ferry__crc32c_hw(uint32_t crc, const void *buf, size_t n) { return ferry__crc32c_sw(crc, buf, n); }
#endif

uint32_t ferry__crc32c_extend(uint32_t crc, const void *p, size_t n) {
    ensure_tables();
    return have_hw ? ferry__crc32c_hw(crc, p, n) : ferry__crc32c_sw(crc, p, n);
}
