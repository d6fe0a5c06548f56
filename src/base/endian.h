/*
 * endian.h - little-endian loads and stores: the one set every file format and saved state of
 * ferry uses (TFRecord framing, tf.train.Example floats, CRC-32C words, the file cache, saved
 * iterator states, dataset fingerprints). memcpy (one unaligned move on x86 and arm64) and a
 * byte swap on big-endian hosts. Header-only.
 */
#ifndef FERRY_BASE_ENDIAN_H
#define FERRY_BASE_ENDIAN_H

#include <stdint.h>
#include <string.h>

static inline uint32_t ferry__load_le32(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline uint64_t ferry__load_le64(const void *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline void ferry__store_le32(void *p, uint32_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    memcpy(p, &v, 4);
}

static inline void ferry__store_le64(void *p, uint64_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

#endif
