/*
 * wire.h - the one protobuf wire-format reader of ferry (tf.train.Example parsing, and its JSON
 * form): varints, tags, lengths and skipping unknown fields, every byte checked against the end
 * of its message. A failure is FERRY_ECORRUPT with a message naming the byte offset from the
 * record's start and what was being read ("corrupt record at byte 17, reading feature 'x': varint
 * truncated (2 bytes left)"). The common one-byte varint is inline; the rest is in wire.c.
 */
#ifndef FERRY_IO_WIRE_H
#define FERRY_IO_WIRE_H

#include "core/core.h"

typedef struct ferry__wire {
    const uint8_t *base; /* the record's first byte, for offsets in messages */
    ferry__status *st;   /* where a failure's message goes */
} ferry__wire;

/* FERRY_ECORRUPT with "corrupt record at byte <at - base>, reading <what>: <fmt...>" in r->st. */
int ferry__wire_bad(const ferry__wire *r, const uint8_t *at, const char *what, const char *fmt, ...) FERRY_PRINTF(4, 5);
/* Decodes the varint of up to 10 bytes at p into *v: returns the byte after it, or NULL when it
 * is truncated or longer (no message: for loops that report with ferry__wire_bad_varint). */
static inline const uint8_t *ferry__wire_decode(const uint8_t *p, const uint8_t *end, uint64_t *v) {
    uint64_t x = 0;
    *v = 0;
    for (unsigned s = 0; s < 70 && p < end; s += 7) {
        uint8_t b = *p++;
        x |= (uint64_t)(b & 0x7f) << s;
        if (b < 0x80) {
            *v = x;
            return p;
        }
    }
    return NULL;
}

/* FERRY_ECORRUPT for the varint at p that ferry__wire_decode refused: truncated, or too long. */
int ferry__wire_bad_varint(const ferry__wire *r, const uint8_t *p, const uint8_t *end, const char *what);

static inline int ferry__wire_varint(const ferry__wire *r, const uint8_t **pp, const uint8_t *end, uint64_t *v,
                                     const char *what) {
    const uint8_t *p = *pp;
    if (p < end && *p < 0x80) {
        *v = *p;
        *pp = p + 1;
        return FERRY_OK;
    }
    const uint8_t *q = ferry__wire_decode(p, end, v);
    if (!q) return ferry__wire_bad_varint(r, p, end, what);
    *pp = q;
    return FERRY_OK;
}

/* A field tag: its number (1 to 2^29 - 1) and wire type. */
static inline int ferry__wire_tag(const ferry__wire *r, const uint8_t **pp, const uint8_t *end, uint32_t *field,
                                  uint32_t *wt, const char *what) {
    const uint8_t *at = *pp;
    uint64_t tag;
    *field = *wt = 0;
    int rc = ferry__wire_varint(r, pp, end, &tag, what);
    if (rc) return rc;
    if (tag >> 32 || (tag >> 3) == 0)
        return ferry__wire_bad(r, at, what, "invalid field tag %llu", (unsigned long long)tag);
    *field = (uint32_t)(tag >> 3);
    *wt = (uint32_t)(tag & 7);
    return FERRY_OK;
}

/* A length, checked to fit in what is left of the message. */
static inline int ferry__wire_len(const ferry__wire *r, const uint8_t **pp, const uint8_t *end, size_t *len,
                                  const char *what) {
    const uint8_t *at = *pp;
    uint64_t n;
    *len = 0;
    int rc = ferry__wire_varint(r, pp, end, &n, what);
    if (rc) return rc;
    if (n > (uint64_t)(end - *pp))
        return ferry__wire_bad(r, at, what, "length %llu runs past the end (%zu bytes left)", (unsigned long long)n,
                               (size_t)(end - *pp));
    *len = (size_t)n;
    return FERRY_OK;
}

/* Skips the value of a field of wire type wt (0, 1, 2 or 5; groups are not supported). */
int ferry__wire_skip(const ferry__wire *r, const uint8_t **pp, const uint8_t *end, uint32_t field, uint32_t wt,
                     const char *what);

#endif
