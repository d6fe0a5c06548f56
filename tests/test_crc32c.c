/*
 * test_crc32c.c - CRC-32C: published vectors, hardware against software at every length and
 * alignment (so the three-stream combination is checked across its block boundaries), extend
 * composition, TensorFlow's masking, and first use from many threads at once.
 */
#include <pthread.h>

#include "base/crc32c.h"
#include "runner.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint8_t rnd8(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint8_t)(rng_state >> 24);
}

TEST(crc32c_vectors) {
    ASSERT_EQ(ferry__crc32c("123456789", 9), 0xe3069283u);
    ASSERT_EQ(ferry__crc32c_sw(0, "123456789", 9), 0xe3069283u);
    ASSERT_EQ(ferry__crc32c("", 0), 0);
    /* RFC 3720 (iSCSI) B.4 */
    uint8_t b[32];
    memset(b, 0, sizeof b);
    ASSERT_EQ(ferry__crc32c(b, 32), 0x8a9136aau);
    memset(b, 0xff, sizeof b);
    ASSERT_EQ(ferry__crc32c(b, 32), 0x62a8ab43u);
    for (int i = 0; i < 32; i++) b[i] = (uint8_t)i;
    ASSERT_EQ(ferry__crc32c(b, 32), 0x46dd794eu);
    ASSERT_EQ(ferry__crc32c_sw(0, b, 32), 0x46dd794eu);
    for (int i = 0; i < 32; i++) b[i] = (uint8_t)(31 - i);
    ASSERT_EQ(ferry__crc32c(b, 32), 0x113fdb5cu);
    if (ferry__crc32c_hw_available()) {
        ASSERT_EQ(ferry__crc32c_hw(0, "123456789", 9), 0xe3069283u);
        ASSERT_EQ(ferry__crc32c_hw(0, b, 32), 0x113fdb5cu);
    } else {
        fprintf(stderr, "  note: no SSE4.2 on this CPU; only the software CRC was checked\n");
    }
}

TEST(crc32c_masking_matches_tfrecord_vectors) {
    /* REFERENCE.md: an empty record is 0000000000000000 29039807 d8ea82a2. */
    uint8_t len0[8] = {0};
    uint32_t m = ferry__crc32c_mask(ferry__crc32c(len0, 8));
    uint8_t want[4] = {0x29, 0x03, 0x98, 0x07};
    for (int i = 0; i < 4; i++) ASSERT_EQ((m >> (8 * i)) & 0xff, want[i]);
    m = ferry__crc32c_mask(ferry__crc32c("", 0));
    uint8_t want_data[4] = {0xd8, 0xea, 0x82, 0xa2};
    for (int i = 0; i < 4; i++) ASSERT_EQ((m >> (8 * i)) & 0xff, want_data[i]);
    /* "hello": 0500000000000000 eab2043e 68656c6c6f bb1f1c19 */
    uint8_t len5[8] = {5, 0, 0, 0, 0, 0, 0, 0};
    ASSERT_EQ(ferry__crc32c_mask(ferry__crc32c(len5, 8)), 0x3e04b2eau);
    ASSERT_EQ(ferry__crc32c_mask(ferry__crc32c("hello", 5)), 0x191c1fbbu);
    for (uint32_t c = 0; c < 100000; c += 7)
        ASSERT_EQ(ferry__crc32c_unmask(ferry__crc32c_mask(c * 2654435761u)), c * 2654435761u);
}

TEST(crc32c_hw_equals_sw_all_lengths_and_alignments) {
    if (!ferry__crc32c_hw_available()) SKIP("no SSE4.2 on this CPU");
    enum { N = 3 * 8192 * 2 + 3 * 256 * 3 + 100 };
    uint8_t *buf = malloc(N + 16);
    for (size_t i = 0; i < N + 16; i++) buf[i] = rnd8();
    for (size_t align = 0; align < 8; align++)
        for (size_t n = 0; n < 2000; n++)
            ASSERT_EQ(ferry__crc32c_hw(0, buf + align, n), ferry__crc32c_sw(0, buf + align, n));
    /* Around every block boundary of the three-stream loops. */
    size_t sizes[] = {3 * 256 - 1,
                      3 * 256,
                      3 * 256 + 1,
                      3 * 8192 - 8,
                      3 * 8192 - 1,
                      3 * 8192,
                      3 * 8192 + 1,
                      3 * 8192 + 3 * 256 + 7,
                      2 * 3 * 8192,
                      2 * 3 * 8192 + 3 * 256 * 3 + 99,
                      N};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
        for (size_t align = 0; align < 8; align++) {
            uint32_t seed = (uint32_t)k * 0x1234567u;
            ASSERT_EQ(ferry__crc32c_hw(seed, buf + align, sizes[k]), ferry__crc32c_sw(seed, buf + align, sizes[k]));
        }
    free(buf);
}

TEST(crc32c_extend_composes) {
    enum { N = 100000 };
    uint8_t *buf = malloc(N);
    for (size_t i = 0; i < N; i++) buf[i] = rnd8();
    uint32_t whole = ferry__crc32c(buf, N);
    size_t cuts[] = {0, 1, 7, 8, 255, 4096, 24576, 50000, N - 1, N};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        uint32_t a = ferry__crc32c(buf, cuts[k]);
        ASSERT_EQ(ferry__crc32c_extend(a, buf + cuts[k], N - cuts[k]), whole);
        uint32_t s = ferry__crc32c_sw(0, buf, cuts[k]);
        ASSERT_EQ(ferry__crc32c_sw(s, buf + cuts[k], N - cuts[k]), whole);
    }
    free(buf);
}

static void *first_use(void *arg) {
    uint32_t *out = arg;
    *out = ferry__crc32c("123456789", 9);
    return NULL;
}

TEST(crc32c_first_use_from_many_threads) {
    /* Each test runs in a fresh process: this is the first use of the tables. */
    pthread_t t[8];
    uint32_t r[8];
    for (int i = 0; i < 8; i++) ASSERT_EQ(pthread_create(&t[i], NULL, first_use, &r[i]), 0);
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        ASSERT_EQ(r[i], 0xe3069283u);
    }
}
