/*
 * wire.c - the protobuf wire reader's slow paths and messages (see wire.h).
 */
#include "io/wire.h"

#include <stdarg.h>
#include <stdio.h>

int ferry__wire_bad(const ferry__wire *r, const uint8_t *at, const char *what, const char *fmt, ...) {
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return ferry__fail(r->st, FERRY_ECORRUPT, "corrupt record at byte %zu, reading %s: %s", (size_t)(at - r->base),
                       what, why);
}

int ferry__wire_bad_varint(const ferry__wire *r, const uint8_t *p, const uint8_t *end, const char *what) {
    size_t left = (size_t)(end - p);
    if (left < 10) {
        size_t i = 0;
        while (i < left && p[i] >= 0x80) i++;
        if (i == left) return ferry__wire_bad(r, p, what, "varint truncated (%zu bytes left)", left);
    }
    return ferry__wire_bad(r, p, what, "varint longer than 10 bytes");
}

int ferry__wire_skip(const ferry__wire *r, const uint8_t **pp, const uint8_t *end, uint32_t field, uint32_t wt,
                     const char *what) {
    const uint8_t *at = *pp;
    uint64_t v;
    size_t n;
    switch (wt) {
    case 0: return ferry__wire_varint(r, pp, end, &v, what);
    case 1:
    case 5:
        n = wt == 1 ? 8 : 4;
        if ((size_t)(end - at) < n)
            return ferry__wire_bad(r, at, what, "fixed%zu value of field %u truncated (%zu bytes left)", n * 8, field,
                                   (size_t)(end - at));
        *pp = at + n;
        return FERRY_OK;
    case 2: {
        int rc = ferry__wire_len(r, pp, end, &n, what);
        if (rc) return rc;
        *pp += n;
        return FERRY_OK;
    }
    default: return ferry__wire_bad(r, at, what, "field %u has unsupported wire type %u", field, wt);
    }
}
