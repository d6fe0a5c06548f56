/*
 * example.c - a hand-written parser of tf.train.Example and tf.train.SequenceExample records
 * (protobuf wire format), exposed as a map function, with a batch fast path.
 *
 * Objects
 *   ferry_example_parser  made once from a spec, immutable afterwards: the compiled features
 *                         (key, dtype, kind, shape, default row, padding value), two open-
 *                         addressing hash tables from key to feature (context/Example keys and
 *                         feature_list keys), and the output specs. No lock: any number of
 *                         threads may parse with one parser at once.
 *   slot                  per record and feature: where the winning Feature (or FeatureList)
 *                         body lies in the record. Scratch of one call.
 *
 * How a call runs (on whichever thread calls it; nothing is shared but the read-only parser)
 *   1. scan: each record is walked once at the message level (Example -> Features -> map entry
 *      -> key); a key found in the table records its Feature body and kind in the record's
 *      slot. Later entries overwrite earlier ones (protobuf map semantics: the last wins); for a
 *      FIXED feature an entry whose Feature has no kind is skipped, as tf.data treats it as
 *      missing. Unknown keys and unknown fields are skipped without being decoded.
 *   2. build: for each feature, over all records of the call, a count pass (values, steps and
 *      string bytes, with the type checks) sizes the output exactly, then a decode pass writes
 *      values straight into the output tensor, padding ragged rows. A single record is a batch
 *      of one whose leading dim is dropped at the end, so the per-record and batch outputs are
 *      consistent by construction: batch output == padded_batch(per-record outputs).
 *
 * Wire-format rules: every length is checked against the bytes left before it is used; varints
 * are at most 10 bytes; a known field with the wrong wire type, a truncated value, a length past
 * the end, field number 0 and group wire types are FERRY_ECORRUPT with the byte offset in the
 * record and what was being read. A Feature that sets several kinds keeps the last (oneof); list
 * fields of the same kind that follow each other concatenate (protobuf merge semantics).
 */
#include <string.h>

#include "core/core.h"
#include "io/wire.h"

#define EX_MAGIC 0x45584d50u /* "EXMP" */

enum { KIND_NONE = 0, KIND_BYTES = 1, KIND_FLOAT = 2, KIND_INT64 = 3 };
static const char *const kind_name[4] = {"no value", "bytes_list", "float_list", "int64_list"};

typedef struct ex_feat {
    char *key;
    size_t key_len;
    uint64_t hash;
    ferry_dtype dtype;
    ferry_example_kind kind;
    bool list; /* a feature list of a SequenceExample */
    bool with_lengths, required;
    int rank; /* FIXED: shape of the values (per step for lists) */
    int64_t dims[FERRY_MAX_RANK];
    size_t count;       /* FIXED: entries per value (per step) */
    size_t out;         /* index of the first output */
    ferry_tensor *dflt; /* referenced, or NULL */
    /* FIXED non-list default, expanded to `count` entries (NULL: required). */
    uint8_t *dflt_row;        /* numeric */
    const uint8_t **dflt_ptr; /* bytes */
    size_t *dflt_len;
    size_t dflt_bytes;
    /* Padding value (VARLEN and lists). */
    int64_t pad_i64;
    float pad_f32;
    const uint8_t *pad_b;
    size_t pad_blen;
} ex_feat;

typedef struct ex_table {
    uint32_t mask;
    int32_t *idx; /* -1 empty, else index into parser->f */
} ex_table;

struct ferry_example_parser {
    uint32_t magic;
    _Atomic long refs; /* the caller's, and one per parse_example dataset */
    ferry_runtime *rt;
    bool sequence;
    size_t nf, nl, nfeat; /* features (context), feature lists, both */
    ex_feat *f;
    ex_table ctx_tab, fl_tab;
    size_t nout;
    ferry_tensor_spec *specs, *bspecs;
    const char **names;
    char *name_buf;
};

/* ---- wire-format reading ---------------------------------------------------------------- */
static int wrong_wt(const ferry__wire *r, const uint8_t *at, const char *what, uint32_t field, uint32_t wt,
                    const char *want) {
    return ferry__wire_bad(r, at, what, "field %u has wire type %u, expected %s", field, wt, want);
}

/* A Feature's location in a record: body [p, p + len), winning kind and where its run starts;
 * lb: when the body is exactly one list field (the usual encoding), that list's body, so that
 * decoding goes straight to it. */
typedef struct ex_slot {
    const uint8_t *p;
    size_t len;
    size_t from;
    const uint8_t *lb;
    size_t llen;
    uint8_t kind;
    bool seen;
} ex_slot;

/* ---- Feature values --------------------------------------------------------------------- */
/* Sets s->kind (the winning kind of the Feature body), s->from (the offset of the first field
 * of its final run) and s->lb / s->llen. */
static int feature_kind(const ferry__wire *r, ex_slot *s) {
    const uint8_t *p = s->p, *start = s->p, *end = s->p + s->len;
    s->kind = KIND_NONE;
    s->from = 0;
    s->lb = NULL;
    s->llen = 0;
    /* Fast path: the usual single list field spanning the whole body. */
    if (s->len >= 2 && (p[0] == 0x0a || p[0] == 0x12 || p[0] == 0x1a)) {
        const uint8_t *q = p + 1;
        uint64_t n;
        if (*q < 0x80) {
            n = *q++;
        } else {
            q = ferry__wire_decode(q, end, &n);
        }
        if (q && n == (uint64_t)(end - q)) {
            s->kind = (uint8_t)(p[0] >> 3);
            s->lb = q;
            s->llen = (size_t)n;
            return FERRY_OK;
        }
    }
    while (p < end) {
        const uint8_t *at = p;
        uint32_t field, wt;
        int rc = ferry__wire_tag(r, &p, end, &field, &wt, "Feature");
        if (rc) return rc;
        if (field >= 1 && field <= 3) {
            if (wt != 2) return wrong_wt(r, at, "Feature", field, wt, "2 (length-delimited)");
            if (field != s->kind) {
                s->kind = (uint8_t)field;
                s->from = (size_t)(at - start);
            }
        }
        rc = ferry__wire_skip(r, &p, end, field, wt, "Feature");
        if (rc) return rc;
    }
    return FERRY_OK;
}

/* Finds the next list field of `kind` from *pp; returns 1 with [*lb, *le), 0 at the end, or an
 * error. */
static int next_list(const ferry__wire *r, const uint8_t **pp, const uint8_t *end, uint32_t kind, const uint8_t **lb,
                     const uint8_t **le) {
    while (*pp < end) {
        const uint8_t *at = *pp;
        uint32_t field, wt;
        int rc = ferry__wire_tag(r, pp, end, &field, &wt, "Feature");
        if (rc) return rc;
        if (field == kind) {
            size_t n;
            if (wt != 2) return wrong_wt(r, at, "Feature", field, wt, "2 (length-delimited)");
            rc = ferry__wire_len(r, pp, end, &n, kind_name[kind]);
            if (rc) return rc;
            *lb = *pp;
            *le = *pp + n;
            *pp += n;
            return 1;
        }
        rc = ferry__wire_skip(r, pp, end, field, wt, "Feature");
        if (rc) return rc;
    }
    return 0;
}

/* Int64List: values go to out[k] while k < cap; *k counts all. out NULL: count only. */
static int list_i64(const ferry__wire *r, const uint8_t *p, const uint8_t *end, int64_t *out, size_t cap, size_t *k) {
    size_t n = *k;
    /* Fast path: one packed field spanning the list, with a one-byte length (the usual case). */
    if (out && end - p >= 2 && p[0] == 0x0a && p[1] < 0x80 && p[1] == end - p - 2) {
        const uint8_t *q = p + 2;
        while (q < end) {
            uint64_t v;
            if (*q < 0x80) {
                v = *q++;
            } else {
                const uint8_t *q2 = ferry__wire_decode(q, end, &v);
                if (!q2) return ferry__wire_bad_varint(r, q, end, "packed int64 values");
                q = q2;
            }
            if (n < cap) out[n] = (int64_t)v;
            n++;
        }
        *k = n;
        return FERRY_OK;
    }
    while (p < end) {
        const uint8_t *at = p;
        uint32_t field, wt;
        int rc = ferry__wire_tag(r, &p, end, &field, &wt, "int64_list");
        if (rc) return rc;
        if (field != 1) {
            rc = ferry__wire_skip(r, &p, end, field, wt, "int64_list");
            if (rc) return rc;
            continue;
        }
        if (wt == 0) {
            uint64_t v;
            rc = ferry__wire_varint(r, &p, end, &v, "int64 value");
            if (rc) return rc;
            if (n < cap) out[n] = (int64_t)v;
            n++;
        } else if (wt == 2) {
            size_t len;
            rc = ferry__wire_len(r, &p, end, &len, "packed int64 values");
            if (rc) return rc;
            const uint8_t *q = p, *qe = p + len;
            p = qe;
            if (!out) {
                for (; q < qe; q++) n += *q < 0x80;
                continue;
            }
            while (q < qe) {
                uint64_t v;
                if (*q < 0x80) {
                    v = *q++;
                } else {
                    const uint8_t *q2 = ferry__wire_decode(q, qe, &v);
                    if (!q2) return ferry__wire_bad_varint(r, q, qe, "packed int64 values");
                    q = q2;
                }
                if (n < cap) out[n] = (int64_t)v;
                n++;
            }
        } else {
            return wrong_wt(r, at, "int64_list", field, wt, "0 (varint) or 2 (packed)");
        }
    }
    *k = n;
    return FERRY_OK;
}

static inline float f32_le(const uint8_t *p) {
    uint32_t u = ferry__load_le32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* FloatList: as list_i64. */
static int list_f32(const ferry__wire *r, const uint8_t *p, const uint8_t *end, float *out, size_t cap, size_t *k) {
    size_t n = *k;
    /* Fast path: one packed field spanning the list, with a one-byte length. */
    if (end - p >= 2 && p[0] == 0x0a && p[1] < 0x80 && p[1] == end - p - 2 && p[1] % 4 == 0) {
        size_t m = p[1] / 4;
        if (out && n < cap) {
            size_t w = FERRY__MIN(m, cap - n);
            for (size_t i = 0; i < w; i++) out[n + i] = f32_le(p + 2 + 4 * i);
        }
        *k = n + m;
        return FERRY_OK;
    }
    while (p < end) {
        const uint8_t *at = p;
        uint32_t field, wt;
        int rc = ferry__wire_tag(r, &p, end, &field, &wt, "float_list");
        if (rc) return rc;
        if (field != 1) {
            rc = ferry__wire_skip(r, &p, end, field, wt, "float_list");
            if (rc) return rc;
            continue;
        }
        if (wt == 5) {
            if (end - p < 4)
                return ferry__wire_bad(r, p, "float value", "truncated (%zu bytes left)", (size_t)(end - p));
            if (n < cap) out[n] = f32_le(p);
            n++;
            p += 4;
        } else if (wt == 2) {
            size_t len;
            const uint8_t *lat = p;
            rc = ferry__wire_len(r, &p, end, &len, "packed float values");
            if (rc) return rc;
            if (len % 4)
                return ferry__wire_bad(r, lat, "packed float values", "length %zu is not a multiple of 4", len);
            size_t m = len / 4;
            if (out && n < cap) {
                size_t w = FERRY__MIN(m, cap - n);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
                memcpy(out + n, p, w * 4);
#else
                for (size_t i = 0; i < w; i++) out[n + i] = f32_le(p + 4 * i);
#endif
            }
            n += m;
            p += len;
        } else {
            return wrong_wt(r, at, "float_list", field, wt, "5 (fixed32) or 2 (packed)");
        }
    }
    *k = n;
    return FERRY_OK;
}

/* Where strings go: entry i's end offset into off[i + 1], bytes into blob. */
typedef struct bytes_out {
    uint64_t *off;
    uint8_t *blob;
    size_t i, pos;
} bytes_out;

static inline void bo_put(bytes_out *bo, const uint8_t *p, size_t n) {
    if (n) memcpy(bo->blob + bo->pos, p, n);
    bo->pos += n;
    bo->off[++bo->i] = bo->pos;
}

/* BytesList: bo NULL counts values (*k) and bytes (*bytes); otherwise writes while k < cap. */
static int list_bytes(const ferry__wire *r, const uint8_t *p, const uint8_t *end, bytes_out *bo, size_t cap, size_t *k,
                      size_t *bytes) {
    size_t n = *k;
    while (p < end) {
        const uint8_t *at = p;
        uint32_t field, wt;
        int rc = ferry__wire_tag(r, &p, end, &field, &wt, "bytes_list");
        if (rc) return rc;
        if (field != 1) {
            rc = ferry__wire_skip(r, &p, end, field, wt, "bytes_list");
            if (rc) return rc;
            continue;
        }
        if (wt != 2) return wrong_wt(r, at, "bytes_list", field, wt, "2 (length-delimited)");
        size_t len;
        rc = ferry__wire_len(r, &p, end, &len, "bytes value");
        if (rc) return rc;
        if (bo) {
            if (n < cap) bo_put(bo, p, len);
        } else {
            *bytes += len;
        }
        n++;
        p += len;
    }
    *k = n;
    return FERRY_OK;
}

/* Counts a Feature's values (and string bytes). */
static int feat_count(const ferry__wire *r, const ex_slot *s, size_t *n, size_t *bytes) {
    *n = 0;
    *bytes = 0;
    if (s->kind == KIND_NONE) return FERRY_OK;
    const uint8_t *p = s->p + s->from, *end = s->p + s->len, *lb, *le;
    int rc;
    if (s->lb) {
        if (s->kind == KIND_INT64) return list_i64(r, s->lb, s->lb + s->llen, NULL, 0, n);
        if (s->kind == KIND_FLOAT) return list_f32(r, s->lb, s->lb + s->llen, NULL, 0, n);
        return list_bytes(r, s->lb, s->lb + s->llen, NULL, 0, n, bytes);
    }
    while ((rc = next_list(r, &p, end, s->kind, &lb, &le)) == 1) {
        if (s->kind == KIND_INT64) rc = list_i64(r, lb, le, NULL, 0, n);
        else if (s->kind == KIND_FLOAT) rc = list_f32(r, lb, le, NULL, 0, n);
        else rc = list_bytes(r, lb, le, NULL, 0, n, bytes);
        if (rc) return rc;
    }
    return rc;
}

/* Decodes a Feature's values into out (numeric: `cap` entries of the kind's type; bytes: bo);
 * *n gets the number of values, which may exceed cap (nothing past cap is written). */
static int feat_decode(const ferry__wire *r, const ex_slot *s, void *out, bytes_out *bo, size_t cap, size_t *n) {
    *n = 0;
    if (s->kind == KIND_NONE) return FERRY_OK;
    const uint8_t *p = s->p + s->from, *end = s->p + s->len, *lb, *le;
    size_t unused = 0;
    int rc;
    if (s->lb) {
        if (s->kind == KIND_INT64) return list_i64(r, s->lb, s->lb + s->llen, out, cap, n);
        if (s->kind == KIND_FLOAT) return list_f32(r, s->lb, s->lb + s->llen, out, cap, n);
        return list_bytes(r, s->lb, s->lb + s->llen, bo, cap, n, &unused);
    }
    while ((rc = next_list(r, &p, end, s->kind, &lb, &le)) == 1) {
        if (s->kind == KIND_INT64) rc = list_i64(r, lb, le, out, cap, n);
        else if (s->kind == KIND_FLOAT) rc = list_f32(r, lb, le, out, cap, n);
        else rc = list_bytes(r, lb, le, bo, cap, n, &unused);
        if (rc) return rc;
    }
    return rc;
}

/* Next step (a Feature) of a FeatureList body: 1 with the step in *s, 0 at the end. */
static int next_step(const ferry__wire *r, const uint8_t **pp, const uint8_t *end, ex_slot *s) {
    while (*pp < end) {
        const uint8_t *at = *pp;
        uint32_t field, wt;
        int rc = ferry__wire_tag(r, pp, end, &field, &wt, "FeatureList");
        if (rc) return rc;
        if (field == 1) {
            size_t n;
            if (wt != 2) return wrong_wt(r, at, "FeatureList", field, wt, "2 (length-delimited)");
            rc = ferry__wire_len(r, pp, end, &n, "Feature");
            if (rc) return rc;
            s->p = *pp;
            s->len = n;
            s->seen = true;
            *pp += n;
            rc = feature_kind(r, s);
            return rc ? rc : 1;
        }
        rc = ferry__wire_skip(r, pp, end, field, wt, "FeatureList");
        if (rc) return rc;
    }
    return 0;
}

/* ---- key lookup ------------------------------------------------------------------------- */
/* Hash of a key: 8-byte loads, the tail as one overlapping load (no byte loop, whose narrow
 * stores followed by a wide load would stall store forwarding). */
static inline uint64_t key_hash(const uint8_t *p, size_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (n * 0xff51afd7ed558ccdull), v;
    if (n > 8) {
        const uint8_t *end = p + n;
        while (end - p > 8) {
            memcpy(&v, p, 8);
            h = (h ^ v) * 0xff51afd7ed558ccdull;
            h ^= h >> 32;
            p += 8;
        }
        memcpy(&v, end - 8, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + n - 4, 4);
        v = (uint64_t)a << 32 | b;
    } else if (n > 0) {
        v = (uint64_t)p[0] << 16 | (uint64_t)p[n >> 1] << 8 | p[n - 1];
    } else {
        v = 0;
    }
    h = (h ^ v) * 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 29);
}

static inline int table_find(const ferry_example_parser *ps, const ex_table *t, const uint8_t *key, size_t n) {
    if (!t->idx) return -1;
    uint64_t h = key_hash(key, n);
    for (uint32_t i = (uint32_t)h & t->mask;; i = (i + 1) & t->mask) {
        int32_t x = t->idx[i];
        if (x < 0) return -1;
        const ex_feat *f = &ps->f[x];
        if (f->hash == h && f->key_len == n && (n == 0 || memcmp(f->key, key, n) == 0)) return x;
    }
}

/* ---- scanning a record ------------------------------------------------------------------ */
/* Walks a Features (lists false) or FeatureLists (lists true) body and fills the slots of known
 * keys. slots: the record's row, indexed by feature. */
static int scan_map(const ferry_example_parser *ps, const ferry__wire *r, const uint8_t *p, const uint8_t *end,
                    bool lists, ex_slot *slots) {
    const ex_table *tab = lists ? &ps->fl_tab : &ps->ctx_tab;
    const char *what = lists ? "FeatureLists" : "Features";
    const char *ewhat = lists ? "FeatureLists map entry" : "Features map entry";
    while (p < end) {
        const uint8_t *at = p;
        uint32_t field = 1, wt = 2;
        int rc;
        if (*p == 0x0a) {
            p++;
        } else {
            rc = ferry__wire_tag(r, &p, end, &field, &wt, what);
            if (rc) return rc;
            if (field != 1) {
                rc = ferry__wire_skip(r, &p, end, field, wt, what);
                if (rc) return rc;
                continue;
            }
            if (wt != 2) return wrong_wt(r, at, what, field, wt, "2 (length-delimited)");
        }
        size_t n;
        rc = ferry__wire_len(r, &p, end, &n, ewhat);
        if (rc) return rc;
        const uint8_t *q = p, *qe = p + n;
        p = qe;
        const uint8_t *key = q, *val = q;
        size_t klen = 0, vlen = 0;
        /* Fast path: the canonical entry, key field (short key) then value field, nothing else. */
        if (n >= 4 && q[0] == 0x0a && q[1] < 0x80 && (size_t)q[1] + 3 <= n && q[2 + q[1]] == 0x12) {
            const uint8_t *v = q + 3 + q[1];
            uint64_t vl = 0;
            if (v < qe && *v < 0x80) {
                vl = *v++;
            } else {
                v = ferry__wire_decode(v, qe, &vl);
            }
            if (v && vl == (uint64_t)(qe - v)) {
                key = q + 2;
                klen = q[1];
                val = v;
                vlen = (size_t)vl;
                q = qe; /* done: skip the general loop */
            }
        }
        while (q < qe) {
            const uint8_t *fat = q;
            rc = ferry__wire_tag(r, &q, qe, &field, &wt, ewhat);
            if (rc) return rc;
            if (field == 1 || field == 2) {
                if (wt != 2) return wrong_wt(r, fat, ewhat, field, wt, "2 (length-delimited)");
                size_t len;
                rc = ferry__wire_len(r, &q, qe, &len, field == 1 ? "map key" : (lists ? "FeatureList" : "Feature"));
                if (rc) return rc;
                if (field == 1) {
                    key = q;
                    klen = len;
                } else {
                    val = q;
                    vlen = len;
                }
                q += len;
            } else {
                rc = ferry__wire_skip(r, &q, qe, field, wt, ewhat);
                if (rc) return rc;
            }
        }
        int x = table_find(ps, tab, key, klen);
        if (x < 0) continue;
        const ex_feat *f = &ps->f[x];
        ex_slot *s = &slots[x];
        if (lists) {
            s->p = val;
            s->len = vlen;
            s->seen = true;
            continue;
        }
        ex_slot fs = {.p = val, .len = vlen, .seen = true};
        rc = feature_kind(r, &fs);
        if (rc) return rc;
        if (fs.kind == KIND_NONE && f->kind == FERRY_EXAMPLE_FIXED) continue; /* missing, as tf.data */
        *s = fs;
    }
    return FERRY_OK;
}

static int scan_record(const ferry_example_parser *ps, const ferry__wire *r, const uint8_t *p, size_t len,
                       ex_slot *slots) {
    const uint8_t *end = p + len;
    const char *what = ps->sequence ? "SequenceExample" : "Example";
    while (p < end) {
        const uint8_t *at = p;
        uint32_t field, wt;
        int rc = ferry__wire_tag(r, &p, end, &field, &wt, what);
        if (rc) return rc;
        bool known = field == 1 || (ps->sequence && field == 2);
        if (!known) {
            rc = ferry__wire_skip(r, &p, end, field, wt, what);
            if (rc) return rc;
            continue;
        }
        if (wt != 2) return wrong_wt(r, at, what, field, wt, "2 (length-delimited)");
        size_t n;
        const char *sub = field == 2 ? "FeatureLists" : ps->sequence ? "context Features" : "Features";
        rc = ferry__wire_len(r, &p, end, &n, sub);
        if (rc) return rc;
        rc = scan_map(ps, r, p, p + n, field == 2, slots);
        if (rc) return rc;
        p += n;
    }
    return FERRY_OK;
}

/* ---- building outputs ------------------------------------------------------------------- */
typedef struct job {
    const ferry_example_parser *ps;
    ferry__status *st;
    size_t B;
    const ferry_tensor *in; /* bytes tensor of the records */
    ex_slot *slots;         /* B x nfeat */
    int64_t *c1, *c2;       /* B scratch counters */
    size_t *by;             /* B scratch byte counts */
    ferry_tensor **outs;    /* nout */
    size_t cur;             /* record being worked on, for messages */
    ferry__wire r;
} job;

static inline ex_slot *slot_at(job *j, size_t b, size_t fi) { return &j->slots[b * j->ps->nfeat + fi]; }

static inline void set_record(job *j, size_t b) {
    size_t len;
    j->cur = b;
    j->r.base = ferry__tensor_str(j->in, (int64_t)b, &len);
}

static int missing(job *j, const ex_feat *f) {
    return ferry__fail(j->st, FERRY_ENOTFOUND, "%s '%s' is missing and %s", f->list ? "feature list" : "feature",
                       f->key, f->kind == FERRY_EXAMPLE_FIXED && !f->list ? "has no default_value" : "is required");
}

static const ferry_dtype kind_dtype[4] = {FERRY_DTYPE_INVALID, FERRY_DTYPE_BYTES, FERRY_DTYPE_FLOAT32,
                                          FERRY_DTYPE_INT64};

static int kind_mismatch(job *j, const ex_feat *f, uint8_t kind, int64_t step) {
    char where[48] = "";
    if (step >= 0) snprintf(where, sizeof where, ", step %lld", (long long)step);
    return ferry__fail(j->st, FERRY_ETYPE, "feature '%s'%s holds a %s but the spec's dtype is %s", f->key, where,
                       kind_name[kind], ferry_dtype_name(f->dtype));
}

static inline int check_kind(job *j, const ex_feat *f, uint8_t kind, int64_t step) {
    if (kind == KIND_NONE || kind_dtype[kind] == f->dtype) return FERRY_OK;
    return kind_mismatch(j, f, kind, step);
}

static int count_mismatch(job *j, const ex_feat *f, size_t got, int64_t step) {
    char where[48] = "", shape[96];
    ferry_shape s = {.rank = f->rank};
    memcpy(s.dims, f->dims, sizeof s.dims);
    if (step >= 0) snprintf(where, sizeof where, ", step %lld", (long long)step);
    return ferry__fail(j->st, FERRY_ETYPE, "feature '%s'%s has %zu values but its shape %s needs %zu", f->key, where,
                       got, ferry__shape_str(&s, shape, sizeof shape), f->count);
}

static int new_tensor(job *j, ferry_dtype dt, int rank, const int64_t *dims, size_t blob, ferry_tensor **out) {
    if (dt == FERRY_DTYPE_BYTES) return ferry__tensor_new_bytes(j->ps->rt, rank, dims, blob, out, j->st);
    return ferry__tensor_new(j->ps->rt, dt, rank, dims, out, j->st);
}

static inline bool add_ok(size_t *acc, size_t v) { return !__builtin_add_overflow(*acc, v, acc); }
static inline bool mul_ok(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }

static int too_large(job *j, const ex_feat *f) {
    return ferry__fail(j->st, FERRY_ETOOLARGE, "feature '%s': the output is too large", f->key);
}

/* Writes n padding entries of f's pad value at numeric pointer d (entry index k). */
static void pad_numeric(const ex_feat *f, void *d, size_t k, size_t n) {
    if (f->dtype == FERRY_DTYPE_INT64) {
        int64_t *x = (int64_t *)d + k;
        for (size_t i = 0; i < n; i++) x[i] = f->pad_i64;
    } else {
        float *x = (float *)d + k;
        for (size_t i = 0; i < n; i++) x[i] = f->pad_f32;
    }
}

static void pad_bytes(const ex_feat *f, bytes_out *bo, size_t n) {
    for (size_t i = 0; i < n; i++) bo_put(bo, f->pad_b, f->pad_blen);
}

static int lengths_tensor(job *j, const int64_t *v, size_t n, int rank, const int64_t *dims, ferry_tensor **out) {
    int rc = ferry__tensor_new(j->ps->rt, FERRY_DTYPE_INT64, rank, dims, out, j->st);
    if (rc) return rc;
    if (n) memcpy((*out)->data, v, n * sizeof *v);
    return FERRY_OK;
}

/* FIXED feature of an Example / context: [B, S]. */
static int build_fixed(job *j, const ex_feat *f, size_t fi) {
    int64_t dims[FERRY_MAX_RANK];
    dims[0] = (int64_t)j->B;
    memcpy(dims + 1, f->dims, (size_t)f->rank * sizeof *dims);
    size_t cnt = f->count;
    ferry_tensor *t;
    int rc;
    if (f->dtype != FERRY_DTYPE_BYTES) {
        size_t es = ferry_dtype_size(f->dtype);
        rc = new_tensor(j, f->dtype, f->rank + 1, dims, 0, &t);
        if (rc) return rc;
        j->outs[f->out] = t;
        for (size_t b = 0; b < j->B; b++) {
            ex_slot *s = slot_at(j, b, fi);
            uint8_t *row = t->data + b * cnt * es;
            set_record(j, b);
            if (!s->seen) {
                if (!f->dflt_row) return missing(j, f);
                memcpy(row, f->dflt_row, cnt * es);
                continue;
            }
            size_t n;
            rc = check_kind(j, f, s->kind, -1);
            if (!rc) rc = feat_decode(&j->r, s, row, NULL, cnt, &n);
            if (!rc && n != cnt) rc = count_mismatch(j, f, n, -1);
            if (rc) return rc;
        }
        return FERRY_OK;
    }
    size_t total = 0;
    for (size_t b = 0; b < j->B; b++) {
        ex_slot *s = slot_at(j, b, fi);
        set_record(j, b);
        size_t n, by = 0;
        if (!s->seen) {
            if (!f->dflt_ptr) return missing(j, f);
            by = f->dflt_bytes;
        } else {
            rc = check_kind(j, f, s->kind, -1);
            if (!rc) rc = feat_count(&j->r, s, &n, &by);
            if (!rc && n != cnt) rc = count_mismatch(j, f, n, -1);
            if (rc) return rc;
        }
        if (!add_ok(&total, by)) return too_large(j, f);
    }
    rc = new_tensor(j, FERRY_DTYPE_BYTES, f->rank + 1, dims, total, &t);
    if (rc) return rc;
    j->outs[f->out] = t;
    bytes_out bo = {ferry__tensor_offsets(t), ferry__tensor_blob_mut(t), 0, 0};
    for (size_t b = 0; b < j->B; b++) {
        ex_slot *s = slot_at(j, b, fi);
        set_record(j, b);
        if (!s->seen) {
            for (size_t i = 0; i < cnt; i++) bo_put(&bo, f->dflt_ptr[i], f->dflt_len[i]);
            continue;
        }
        size_t n;
        rc = feat_decode(&j->r, s, NULL, &bo, cnt, &n);
        if (rc) return rc;
    }
    return FERRY_OK;
}

/* VARLEN feature of an Example / context: [B, max n] padded (+ lengths [B]). */
static int build_varlen(job *j, const ex_feat *f, size_t fi) {
    size_t max = 0, sum_n = 0, sum_by = 0;
    int rc;
    for (size_t b = 0; b < j->B; b++) {
        ex_slot *s = slot_at(j, b, fi);
        set_record(j, b);
        size_t n = 0, by = 0;
        if (!s->seen) {
            if (f->required) return missing(j, f);
        } else {
            rc = check_kind(j, f, s->kind, -1);
            if (!rc) rc = feat_count(&j->r, s, &n, &by);
            if (rc) return rc;
        }
        j->c1[b] = (int64_t)n;
        max = FERRY__MAX(max, n);
        sum_n += n;
        if (!add_ok(&sum_by, by)) return too_large(j, f);
    }
    int64_t dims[2] = {(int64_t)j->B, (int64_t)max};
    size_t blob = 0, cells;
    if (f->dtype == FERRY_DTYPE_BYTES) {
        size_t padb;
        if (!mul_ok(j->B, max, &cells) || !mul_ok(cells - sum_n, f->pad_blen, &padb)) return too_large(j, f);
        blob = sum_by;
        if (!add_ok(&blob, padb)) return too_large(j, f);
    }
    ferry_tensor *t;
    rc = new_tensor(j, f->dtype, 2, dims, blob, &t);
    if (rc) return rc;
    j->outs[f->out] = t;
    bytes_out bo = {NULL, NULL, 0, 0};
    if (f->dtype == FERRY_DTYPE_BYTES) bo = (bytes_out){ferry__tensor_offsets(t), ferry__tensor_blob_mut(t), 0, 0};
    size_t es = ferry_dtype_size(f->dtype);
    for (size_t b = 0; b < j->B; b++) {
        ex_slot *s = slot_at(j, b, fi);
        set_record(j, b);
        size_t n = 0;
        if (f->dtype == FERRY_DTYPE_BYTES) {
            if (s->seen) rc = feat_decode(&j->r, s, NULL, &bo, max, &n);
            if (rc) return rc;
            n = FERRY__MIN(n, max);
            pad_bytes(f, &bo, max - n);
        } else {
            uint8_t *row = t->data + b * max * es;
            if (s->seen) rc = feat_decode(&j->r, s, row, NULL, max, &n);
            if (rc) return rc;
            n = FERRY__MIN(n, max);
            pad_numeric(f, row, n, max - n);
        }
        j->c1[b] = (int64_t)n;
    }
    if (f->with_lengths) return lengths_tensor(j, j->c1, j->B, 1, dims, &j->outs[f->out + 1]);
    return FERRY_OK;
}

/* FIXED feature list: [B, max T, S] padded (+ lengths [B]). */
static int build_list_fixed(job *j, const ex_feat *f, size_t fi) {
    size_t maxT = 0, sumT = 0, sum_by = 0, cnt = f->count;
    int rc;
    for (size_t b = 0; b < j->B; b++) {
        ex_slot *s = slot_at(j, b, fi);
        set_record(j, b);
        size_t T = 0;
        if (!s->seen) {
            if (f->required) return missing(j, f);
        } else {
            const uint8_t *p = s->p, *end = s->p + s->len;
            ex_slot step;
            while ((rc = next_step(&j->r, &p, end, &step)) == 1) {
                rc = check_kind(j, f, step.kind, (int64_t)T);
                if (!rc && f->dtype == FERRY_DTYPE_BYTES) {
                    size_t n, by;
                    rc = feat_count(&j->r, &step, &n, &by);
                    if (!rc && n != cnt) rc = count_mismatch(j, f, n, (int64_t)T);
                    if (!rc && !add_ok(&sum_by, by)) rc = too_large(j, f);
                }
                if (rc) return rc;
                T++;
            }
            if (rc) return rc;
        }
        j->c1[b] = (int64_t)T;
        maxT = FERRY__MAX(maxT, T);
        sumT += T;
    }
    int64_t dims[FERRY_MAX_RANK];
    dims[0] = (int64_t)j->B;
    dims[1] = (int64_t)maxT;
    memcpy(dims + 2, f->dims, (size_t)f->rank * sizeof *dims);
    size_t blob = 0;
    if (f->dtype == FERRY_DTYPE_BYTES) {
        size_t cells, padb;
        if (!mul_ok(j->B, maxT, &cells) || !mul_ok(cells - sumT, cnt, &cells) || !mul_ok(cells, f->pad_blen, &padb))
            return too_large(j, f);
        blob = sum_by;
        if (!add_ok(&blob, padb)) return too_large(j, f);
    }
    ferry_tensor *t;
    rc = new_tensor(j, f->dtype, f->rank + 2, dims, blob, &t);
    if (rc) return rc;
    j->outs[f->out] = t;
    bytes_out bo = {NULL, NULL, 0, 0};
    if (f->dtype == FERRY_DTYPE_BYTES) bo = (bytes_out){ferry__tensor_offsets(t), ferry__tensor_blob_mut(t), 0, 0};
    size_t es = ferry_dtype_size(f->dtype);
    for (size_t b = 0; b < j->B; b++) {
        ex_slot *s = slot_at(j, b, fi);
        set_record(j, b);
        size_t T = 0;
        if (s->seen) {
            const uint8_t *p = s->p, *end = s->p + s->len;
            ex_slot step;
            while (T < maxT && (rc = next_step(&j->r, &p, end, &step)) == 1) {
                size_t n;
                if (f->dtype == FERRY_DTYPE_BYTES) {
                    rc = feat_decode(&j->r, &step, NULL, &bo, cnt, &n);
                } else {
                    rc = check_kind(j, f, step.kind, (int64_t)T);
                    if (!rc) rc = feat_decode(&j->r, &step, t->data + (b * maxT + T) * cnt * es, NULL, cnt, &n);
                    if (!rc && n != cnt) rc = count_mismatch(j, f, n, (int64_t)T);
                }
                if (rc) return rc;
                T++;
            }
            if (rc < 0) return rc;
        }
        if (f->dtype == FERRY_DTYPE_BYTES) pad_bytes(f, &bo, (maxT - T) * cnt);
        else pad_numeric(f, t->data, (b * maxT + T) * cnt, (maxT - T) * cnt);
    }
    if (f->with_lengths) return lengths_tensor(j, j->c1, j->B, 1, dims, &j->outs[f->out + 1]);
    return FERRY_OK;
}

/* VARLEN feature list: values [B, max N] and row lengths [B, max T], padded (+ lengths [B]). */
static int build_list_varlen(job *j, const ex_feat *f, size_t fi) {
    size_t maxT = 0, maxN = 0, sumN = 0, sum_by = 0;
    int rc;
    for (size_t b = 0; b < j->B; b++) {
        ex_slot *s = slot_at(j, b, fi);
        set_record(j, b);
        size_t T = 0, N = 0;
        if (!s->seen) {
            if (f->required) return missing(j, f);
        } else {
            const uint8_t *p = s->p, *end = s->p + s->len;
            ex_slot step;
            while ((rc = next_step(&j->r, &p, end, &step)) == 1) {
                size_t n, by;
                rc = check_kind(j, f, step.kind, (int64_t)T);
                if (!rc) rc = feat_count(&j->r, &step, &n, &by);
                if (!rc && !add_ok(&sum_by, by)) rc = too_large(j, f);
                if (rc) return rc;
                N += n;
                T++;
            }
            if (rc) return rc;
        }
        j->c1[b] = (int64_t)T;
        j->c2[b] = (int64_t)N;
        maxT = FERRY__MAX(maxT, T);
        maxN = FERRY__MAX(maxN, N);
        sumN += N;
    }
    int64_t vdims[2] = {(int64_t)j->B, (int64_t)maxN}, rdims[2] = {(int64_t)j->B, (int64_t)maxT};
    size_t blob = 0;
    if (f->dtype == FERRY_DTYPE_BYTES) {
        size_t cells, padb;
        if (!mul_ok(j->B, maxN, &cells) || !mul_ok(cells - sumN, f->pad_blen, &padb)) return too_large(j, f);
        blob = sum_by;
        if (!add_ok(&blob, padb)) return too_large(j, f);
    }
    ferry_tensor *t, *rl;
    rc = new_tensor(j, f->dtype, 2, vdims, blob, &t);
    if (rc) return rc;
    j->outs[f->out] = t;
    rc = ferry__tensor_new(j->ps->rt, FERRY_DTYPE_INT64, 2, rdims, &rl, j->st);
    if (rc) return rc;
    j->outs[f->out + 1] = rl;
    int64_t *rows = (int64_t *)(void *)rl->data;
    bytes_out bo = {NULL, NULL, 0, 0};
    if (f->dtype == FERRY_DTYPE_BYTES) bo = (bytes_out){ferry__tensor_offsets(t), ferry__tensor_blob_mut(t), 0, 0};
    size_t es = ferry_dtype_size(f->dtype);
    for (size_t b = 0; b < j->B; b++) {
        ex_slot *s = slot_at(j, b, fi);
        set_record(j, b);
        size_t T = 0, pos = 0;
        if (s->seen) {
            const uint8_t *p = s->p, *end = s->p + s->len;
            ex_slot step;
            while (T < maxT && (rc = next_step(&j->r, &p, end, &step)) == 1) {
                size_t n;
                if (f->dtype == FERRY_DTYPE_BYTES) rc = feat_decode(&j->r, &step, NULL, &bo, maxN - pos, &n);
                else rc = feat_decode(&j->r, &step, t->data + (b * maxN + pos) * es, NULL, maxN - pos, &n);
                if (rc) return rc;
                n = FERRY__MIN(n, maxN - pos);
                rows[b * maxT + T] = (int64_t)n;
                pos += n;
                T++;
            }
            if (rc < 0) return rc;
        }
        for (size_t k = T; k < maxT; k++) rows[b * maxT + k] = 0;
        if (f->dtype == FERRY_DTYPE_BYTES) pad_bytes(f, &bo, maxN - pos);
        else pad_numeric(f, t->data, b * maxN + pos, maxN - pos);
    }
    if (f->with_lengths) return lengths_tensor(j, j->c1, j->B, 1, vdims, &j->outs[f->out + 2]);
    return FERRY_OK;
}

/* Parses B records of `in` into outs (nout tensors with a leading dim B). */
static int parse_records(const ferry_example_parser *ps, const ferry_tensor *in, size_t B, ferry_tensor **outs,
                         ferry__status *st) {
    enum { STACK_SLOTS = 64, STACK_B = 8 };
    ex_slot slot_buf[STACK_SLOTS];
    int64_t c_buf[2 * STACK_B];
    size_t by_buf[STACK_B];
    job j = {.ps = ps, .st = st, .B = B, .in = in, .outs = outs, .r = {.st = st}};
    void *heap = NULL;
    size_t nslots;
    if (!mul_ok(B, ps->nfeat, &nslots) || nslots > SIZE_MAX / 64)
        return ferry__fail(st, FERRY_ETOOLARGE, "a batch of %zu records is too large", B);
    if (nslots <= STACK_SLOTS && B <= STACK_B) {
        j.slots = slot_buf;
        j.c1 = c_buf;
        j.c2 = c_buf + STACK_B;
        j.by = by_buf;
    } else {
        size_t sz = nslots * sizeof(ex_slot) + B * (2 * sizeof(int64_t) + sizeof(size_t));
        heap = ferry__alloc(ps->rt, sz ? sz : 1);
        if (!heap) return ferry__fail(st, FERRY_ENOMEM, "allocating scratch for %zu records failed", B);
        j.slots = heap;
        j.c1 = (int64_t *)(void *)(j.slots + nslots);
        j.c2 = j.c1 + B;
        j.by = (size_t *)(void *)(j.c2 + B);
    }
    memset(j.slots, 0, nslots * sizeof(ex_slot));
    int rc = FERRY_OK;
    for (size_t b = 0; b < B && !rc; b++) {
        size_t len;
        const uint8_t *p = ferry__tensor_str(in, (int64_t)b, &len);
        j.cur = b;
        j.r.base = p;
        rc = scan_record(ps, &j.r, p, len, j.slots + b * ps->nfeat);
    }
    for (size_t fi = 0; fi < ps->nfeat && !rc; fi++) {
        const ex_feat *f = &ps->f[fi];
        if (!f->list) rc = f->kind == FERRY_EXAMPLE_FIXED ? build_fixed(&j, f, fi) : build_varlen(&j, f, fi);
        else rc = f->kind == FERRY_EXAMPLE_FIXED ? build_list_fixed(&j, f, fi) : build_list_varlen(&j, f, fi);
    }
    if (rc && B > 1) ferry__status_prefix(st, "record %zu of the batch", j.cur);
    ferry__free(ps->rt, heap);
    return rc;
}

static const char *input_desc(const ferry_tensor *t, char *buf, size_t cap) {
    char s[96];
    ferry_shape sh = ferry_tensor_shape(t);
    snprintf(buf, cap, "%s %s", ferry_dtype_name(t->dtype), ferry__shape_str(&sh, s, sizeof s));
    return buf;
}

int ferry_example_parse(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    ferry_example_parser *ps = user;
    ferry__status st;
    ferry__status_clear(&st);
    int rc = FERRY_OK;
    ferry_element *e = NULL;
    if (out) *out = NULL;
    if (!out) {
        rc = ferry__fail(&st, FERRY_EINVAL, "argument 'out' is NULL");
    } else if (!ps || ps->magic != EX_MAGIC) {
        rc = ferry__fail(&st, FERRY_EMISUSE, "the user pointer is not a ferry_example_parser");
    } else if (!in || ferry_element_size(in) == 0 || !in->t[0]) {
        rc = ferry__fail(&st, FERRY_EINVAL, "the input element has no component 0");
    } else {
        const ferry_tensor *t = in->t[0];
        char d[128];
        if (t->dtype != FERRY_DTYPE_BYTES || t->rank > 1)
            rc = ferry__fail(&st, FERRY_EINVAL,
                             "input component 0 is %s; it must be a bytes scalar (one record) or vector (a batch)",
                             input_desc(t, d, sizeof d));
        e = rc ? NULL : ferry__element_new(ps->rt, ps->nout);
        if (!rc && !e) rc = ferry__fail(&st, FERRY_ENOMEM, "allocating the output element failed");
        if (!rc) {
            size_t B = t->rank == 0 ? 1 : (size_t)t->dims[0];
            rc = parse_records(ps, t, B, e->t, &st);
            if (!rc && t->rank == 0) {
                for (size_t i = 0; i < ps->nout; i++) { /* drop the leading dim of 1 */
                    ferry_tensor *o = e->t[i];
                    memmove(o->dims, o->dims + 1, (size_t)(o->rank - 1) * sizeof o->dims[0]);
                    o->dims[--o->rank] = 0;
                }
            }
        }
    }
    if (rc) {
        ferry_element_free(e);
        ferry_element_free(in);
        ferry__status_prefix(&st, "parse_example");
        if (ctx) return ferry_context_fail(ctx, rc, "%s", st.msg);
        return ferry__set_last_error(rc, "%s", st.msg);
    }
    ferry_element_free(in);
    *out = e;
    return FERRY_OK;
}

/* ---- parser construction ---------------------------------------------------------------- */
static void parser_destroy(ferry_example_parser *ps) {
    for (size_t i = 0; i < ps->nfeat; i++) {
        ex_feat *f = &ps->f[i];
        ferry__free(ps->rt, f->key);
        ferry__free(ps->rt, f->dflt_row);
        ferry__free(ps->rt, (void *)f->dflt_ptr);
        ferry__free(ps->rt, f->dflt_len);
        ferry_tensor_unref(f->dflt);
    }
    ferry__free(ps->rt, ps->f);
    ferry__free(ps->rt, ps->ctx_tab.idx);
    ferry__free(ps->rt, ps->fl_tab.idx);
    ferry__free(ps->rt, ps->specs);
    ferry__free(ps->rt, ps->bspecs);
    ferry__free(ps->rt, (void *)ps->names);
    ferry__free(ps->rt, ps->name_buf);
    ps->magic = 0;
    ferry__free(ps->rt, ps);
}

void ferry_example_parser_free(ferry_example_parser *parser) {
    if (parser && atomic_fetch_sub_explicit(&parser->refs, 1, memory_order_acq_rel) == 1) parser_destroy(parser);
}

/* The user_free of a parse_example dataset: drops its reference to the parser. */
static void parser_unref(void *parser) { ferry_example_parser_free(parser); }

#define FN "ferry_example_parser_create"

static int compile_feature(ferry_example_parser *ps, const ferry_example_feature *in, bool list, size_t i, ex_feat *f) {
    const char *grp = list ? "feature_lists" : "features";
    if (!in->key) return ferry__set_last_error(FERRY_EINVAL, FN ": spec->%s[%zu].key is NULL", grp, i);
    if (in->dtype != FERRY_DTYPE_INT64 && in->dtype != FERRY_DTYPE_FLOAT32 && in->dtype != FERRY_DTYPE_BYTES)
        return ferry__set_last_error(FERRY_EINVAL,
                                     FN ": spec->%s[%zu] ('%s'): dtype is %s; it must be int64, float32 or bytes", grp,
                                     i, in->key, ferry_dtype_name(in->dtype));
    if (in->kind != FERRY_EXAMPLE_FIXED && in->kind != FERRY_EXAMPLE_VARLEN)
        return ferry__set_last_error(FERRY_EINVAL, FN ": spec->%s[%zu] ('%s'): kind %d is not FIXED or VARLEN", grp, i,
                                     in->key, (int)in->kind);
    bool fixed = in->kind == FERRY_EXAMPLE_FIXED;
    int max_rank = FERRY_MAX_RANK - (list ? 2 : 1);
    if (fixed && (in->shape.rank < 0 || in->shape.rank > max_rank))
        return ferry__set_last_error(FERRY_EINVAL, FN ": spec->%s[%zu] ('%s'): shape rank %d is outside [0, %d]", grp,
                                     i, in->key, in->shape.rank, max_rank);
    if (!fixed && in->shape.rank != 0)
        return ferry__set_last_error(
            FERRY_EINVAL, FN ": spec->%s[%zu] ('%s'): a VARLEN feature has no shape (rank must be 0)", grp, i, in->key);
    if (fixed && !list && (in->with_lengths || in->required))
        return ferry__set_last_error(FERRY_EINVAL,
                                     FN ": spec->%s[%zu] ('%s'): with_lengths and required apply to VARLEN features "
                                        "and feature lists (a FIXED feature is required unless it has a default_value)",
                                     grp, i, in->key);
    f->key_len = strlen(in->key);
    f->key = ferry__alloc(ps->rt, f->key_len + 1);
    if (!f->key) return ferry__set_last_error(FERRY_ENOMEM, FN ": out of memory");
    memcpy(f->key, in->key, f->key_len + 1);
    f->hash = key_hash((const uint8_t *)f->key, f->key_len);
    f->dtype = in->dtype;
    f->kind = in->kind;
    f->list = list;
    f->with_lengths = in->with_lengths;
    f->required = in->required;
    f->rank = fixed ? in->shape.rank : 0;
    f->count = 1;
    for (int d = 0; d < f->rank; d++) {
        if (in->shape.dims[d] < 0)
            return ferry__set_last_error(FERRY_EINVAL,
                                         FN ": spec->%s[%zu] ('%s'): shape dim %d is %lld; FIXED "
                                            "shapes must be fully known",
                                         grp, i, in->key, d, (long long)in->shape.dims[d]);
        f->dims[d] = in->shape.dims[d];
    }
    int64_t cnt = ferry__num_entries(f->rank, f->dims);
    if (cnt < 0 || cnt > (int64_t)1 << 40)
        return ferry__set_last_error(FERRY_EINVAL, FN ": spec->%s[%zu] ('%s'): shape is too large", grp, i, in->key);
    f->count = (size_t)cnt;
    const ferry_tensor *d = in->default_value;
    if (!d) return FERRY_OK;
    if (d->dtype != in->dtype)
        return ferry__set_last_error(FERRY_EINVAL, FN ": spec->%s[%zu] ('%s'): default_value is %s, the dtype is %s",
                                     grp, i, in->key, ferry_dtype_name(d->dtype), ferry_dtype_name(in->dtype));
    f->dflt = ferry_tensor_ref(in->default_value);
    if (!fixed || list) {
        if (d->n != 1)
            return ferry__set_last_error(FERRY_EINVAL,
                                         FN ": spec->%s[%zu] ('%s'): default_value (the padding value) must have "
                                            "one entry, it has %lld",
                                         grp, i, in->key, (long long)d->n);
        if (d->dtype == FERRY_DTYPE_INT64) memcpy(&f->pad_i64, d->data, 8);
        else if (d->dtype == FERRY_DTYPE_FLOAT32) memcpy(&f->pad_f32, d->data, 4);
        else f->pad_b = ferry__tensor_str(d, 0, &f->pad_blen);
        return FERRY_OK;
    }
    if ((size_t)d->n != f->count && d->n != 1)
        return ferry__set_last_error(FERRY_EINVAL,
                                     FN ": spec->%s[%zu] ('%s'): default_value has %lld entries; the shape needs %zu "
                                        "(or give one, repeated)",
                                     grp, i, in->key, (long long)d->n, f->count);
    size_t cntz = f->count;
    if (d->dtype != FERRY_DTYPE_BYTES) {
        size_t es = ferry_dtype_size(d->dtype);
        f->dflt_row = ferry__alloc(ps->rt, cntz * es + 1);
        if (!f->dflt_row) return ferry__set_last_error(FERRY_ENOMEM, FN ": out of memory");
        for (size_t k = 0; k < cntz; k++) memcpy(f->dflt_row + k * es, d->data + (d->n == 1 ? 0 : k) * es, es);
        return FERRY_OK;
    }
    f->dflt_ptr = ferry__calloc(ps->rt, cntz + 1, sizeof *f->dflt_ptr);
    f->dflt_len = ferry__calloc(ps->rt, cntz + 1, sizeof *f->dflt_len);
    if (!f->dflt_ptr || !f->dflt_len) return ferry__set_last_error(FERRY_ENOMEM, FN ": out of memory");
    for (size_t k = 0; k < cntz; k++) {
        f->dflt_ptr[k] = ferry__tensor_str(d, d->n == 1 ? 0 : (int64_t)k, &f->dflt_len[k]);
        f->dflt_bytes += f->dflt_len[k];
    }
    return FERRY_OK;
}

static int build_table(ferry_example_parser *ps, ex_table *t, size_t first, size_t n, const char *grp) {
    if (n == 0) return FERRY_OK;
    uint32_t cap = 8;
    while (cap < 2 * n) cap *= 2;
    t->idx = ferry__alloc(ps->rt, cap * sizeof *t->idx);
    if (!t->idx) return ferry__set_last_error(FERRY_ENOMEM, FN ": out of memory");
    t->mask = cap - 1;
    for (uint32_t i = 0; i < cap; i++) t->idx[i] = -1;
    for (size_t k = first; k < first + n; k++) {
        const ex_feat *f = &ps->f[k];
        uint32_t i = (uint32_t)f->hash & t->mask;
        for (; t->idx[i] >= 0; i = (i + 1) & t->mask) {
            const ex_feat *g = &ps->f[t->idx[i]];
            if (g->key_len == f->key_len && memcmp(g->key, f->key, f->key_len) == 0)
                return ferry__set_last_error(FERRY_EINVAL, FN ": spec->%s has the key '%s' twice", grp, f->key);
        }
        t->idx[i] = (int32_t)k;
    }
    return FERRY_OK;
}

static int build_outputs(ferry_example_parser *ps) {
    size_t nout = 0, names = 0;
    for (size_t i = 0; i < ps->nfeat; i++) {
        ex_feat *f = &ps->f[i];
        f->out = nout;
        size_t k = 1 + (f->list && f->kind == FERRY_EXAMPLE_VARLEN) +
                   ((f->list || f->kind == FERRY_EXAMPLE_VARLEN) && f->with_lengths);
        nout += k;
        names += k * (f->key_len + sizeof ":row_lengths");
    }
    if (nout > 4096) return ferry__set_last_error(FERRY_EINVAL, FN ": the spec makes %zu outputs; at most 4096", nout);
    ps->nout = nout;
    ps->specs = ferry__calloc(ps->rt, nout + 1, sizeof *ps->specs);
    ps->bspecs = ferry__calloc(ps->rt, nout + 1, sizeof *ps->bspecs);
    ps->names = ferry__calloc(ps->rt, nout + 1, sizeof *ps->names);
    ps->name_buf = ferry__alloc(ps->rt, names + 1);
    if (!ps->specs || !ps->bspecs || !ps->names || !ps->name_buf)
        return ferry__set_last_error(FERRY_ENOMEM, FN ": out of memory");
    char *nb = ps->name_buf;
    for (size_t i = 0; i < ps->nfeat; i++) {
        const ex_feat *f = &ps->f[i];
        size_t o = f->out;
        ferry_tensor_spec *s = &ps->specs[o];
        s->dtype = f->dtype;
        if (!f->list && f->kind == FERRY_EXAMPLE_FIXED) {
            s->shape.rank = f->rank;
            memcpy(s->shape.dims, f->dims, sizeof f->dims);
        } else if (f->list && f->kind == FERRY_EXAMPLE_FIXED) {
            s->shape.rank = f->rank + 1;
            s->shape.dims[0] = FERRY_UNKNOWN_DIM;
            memcpy(s->shape.dims + 1, f->dims, (size_t)f->rank * sizeof f->dims[0]);
        } else {
            s->shape.rank = 1;
            s->shape.dims[0] = FERRY_UNKNOWN_DIM;
        }
        const char *sfx[3] = {"", NULL, NULL};
        size_t k = 1;
        if (f->list && f->kind == FERRY_EXAMPLE_VARLEN) {
            ps->specs[o + k] = (ferry_tensor_spec){.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 1, .dims = {-1}}};
            sfx[k++] = ":row_lengths";
        }
        if ((f->list || f->kind == FERRY_EXAMPLE_VARLEN) && f->with_lengths) {
            ps->specs[o + k] = (ferry_tensor_spec){.dtype = FERRY_DTYPE_INT64, .shape = {.rank = 0}};
            sfx[k++] = ":lengths";
        }
        for (size_t m = 0; m < k; m++) {
            ps->names[o + m] = nb;
            memcpy(nb, f->key, f->key_len);
            nb += f->key_len;
            size_t sl = strlen(sfx[m]);
            memcpy(nb, sfx[m], sl + 1);
            nb += sl + 1;
        }
    }
    for (size_t o = 0; o < nout; o++) {
        const ferry_tensor_spec *s = &ps->specs[o];
        ferry_tensor_spec *b = &ps->bspecs[o];
        b->dtype = s->dtype;
        b->shape.rank = s->shape.rank + 1;
        b->shape.dims[0] = FERRY_UNKNOWN_DIM;
        memcpy(b->shape.dims + 1, s->shape.dims, (size_t)s->shape.rank * sizeof s->shape.dims[0]);
    }
    return FERRY_OK;
}

int ferry_example_parser_create(ferry_runtime *rt, const ferry_example_spec *spec, ferry_example_parser **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, FN ": argument 'out' is NULL");
    *out = NULL;
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, FN ": argument 'rt' is NULL");
    FERRY__CHECK_ARG(spec != NULL, FERRY_EINVAL, FN ": argument 'spec' is NULL");
    FERRY__CHECK_ARG(spec->num_features == 0 || spec->features, FERRY_EINVAL,
                     FN ": spec->features is NULL with num_features %zu", spec->num_features);
    FERRY__CHECK_ARG(spec->num_feature_lists == 0 || spec->feature_lists, FERRY_EINVAL,
                     FN ": spec->feature_lists is NULL with num_feature_lists %zu", spec->num_feature_lists);
    FERRY__CHECK_ARG(spec->sequence || spec->num_feature_lists == 0, FERRY_EINVAL,
                     FN ": spec->num_feature_lists is %zu but spec->sequence is false (only a SequenceExample has "
                        "feature lists)",
                     spec->num_feature_lists);
    FERRY__CHECK_ARG(spec->num_features <= 4096 && spec->num_feature_lists <= 4096, FERRY_EINVAL,
                     FN ": at most 4096 features and 4096 feature lists");
    ferry_example_parser *ps = ferry__calloc(rt, 1, sizeof *ps);
    if (!ps) return ferry__set_last_error(FERRY_ENOMEM, FN ": out of memory");
    ps->magic = EX_MAGIC;
    atomic_init(&ps->refs, 1);
    ps->rt = rt;
    ps->sequence = spec->sequence;
    ps->nf = spec->num_features;
    ps->nl = spec->num_feature_lists;
    ps->nfeat = ps->nf + ps->nl;
    ps->f = ferry__calloc(rt, ps->nfeat + 1, sizeof *ps->f);
    int rc = ps->f ? FERRY_OK : ferry__set_last_error(FERRY_ENOMEM, FN ": out of memory");
    for (size_t i = 0; !rc && i < ps->nfeat; i++) {
        bool list = i >= ps->nf;
        rc = compile_feature(ps, list ? &spec->feature_lists[i - ps->nf] : &spec->features[i], list,
                             list ? i - ps->nf : i, &ps->f[i]);
    }
    if (!rc) rc = build_table(ps, &ps->ctx_tab, 0, ps->nf, "features");
    if (!rc) rc = build_table(ps, &ps->fl_tab, ps->nf, ps->nl, "feature_lists");
    if (!rc) rc = build_outputs(ps);
    if (rc) {
        if (ps->f) parser_destroy(ps);
        else ferry__free(rt, ps);
        return rc;
    }
    *out = ps;
    return FERRY_OK;
}

#undef FN

int ferry_example_parser_output_specs(const ferry_example_parser *parser, size_t *n, const ferry_tensor_spec **specs) {
    if (n) *n = 0;
    if (specs) *specs = NULL;
    FERRY__CHECK_ARG(parser != NULL && parser->magic == EX_MAGIC, FERRY_EINVAL, "%s: argument 'parser' is not a parser",
                     __func__);
    FERRY__CHECK_ARG(n != NULL && specs != NULL, FERRY_EINVAL, "%s: arguments 'n' and 'specs' must not be NULL",
                     __func__);
    *n = parser->nout;
    *specs = parser->specs;
    return FERRY_OK;
}

int ferry_example_parser_batch_output_specs(const ferry_example_parser *parser, size_t *n,
                                            const ferry_tensor_spec **specs) {
    if (n) *n = 0;
    if (specs) *specs = NULL;
    FERRY__CHECK_ARG(parser != NULL && parser->magic == EX_MAGIC, FERRY_EINVAL, "%s: argument 'parser' is not a parser",
                     __func__);
    FERRY__CHECK_ARG(n != NULL && specs != NULL, FERRY_EINVAL, "%s: arguments 'n' and 'specs' must not be NULL",
                     __func__);
    *n = parser->nout;
    *specs = parser->bspecs;
    return FERRY_OK;
}

const char *ferry_example_parser_output_name(const ferry_example_parser *parser, size_t i) {
    if (!parser || parser->magic != EX_MAGIC || i >= parser->nout) return NULL;
    return parser->names[i];
}

int ferry_dataset_parse_example(ferry_dataset *in, ferry_example_parser *parser,
                                const ferry_parse_example_options *opts, ferry_dataset **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, "%s: argument 'out' is NULL", __func__);
    *out = NULL;
    int rc = ferry__check_dataset(in, __func__, "in");
    if (rc) return rc;
    FERRY__CHECK_ARG(parser != NULL && parser->magic == EX_MAGIC, FERRY_EINVAL, "%s: argument 'parser' is not a parser",
                     __func__);
    FERRY__CHECK_ARG(parser->rt == in->rt, FERRY_EINVAL, "%s: the parser and the dataset belong to different runtimes",
                     __func__);
    FERRY__CHECK_ARG(in->ncomp >= 1 && in->specs[0].dtype == FERRY_DTYPE_BYTES &&
                         (in->specs[0].shape.rank == 0 || in->specs[0].shape.rank == 1),
                     FERRY_EINVAL, "%s: the input's component 0 must be a bytes scalar or vector", __func__);
    ferry_map_options o = {.name = "parse_example"};
    if (opts) {
        if (opts->name && opts->name[0]) o.name = opts->name;
        o.num_parallel_calls = opts->num_parallel_calls;
        o.relaxed_order = opts->relaxed_order;
        o.reorder_window = opts->reorder_window;
    }
    o.num_outputs = parser->nout;
    o.output_specs = in->specs[0].shape.rank == 0 ? parser->specs : parser->bspecs;
    o.user_free = parser_unref;
    atomic_fetch_add_explicit(&parser->refs, 1, memory_order_relaxed);
    rc = ferry_dataset_map(in, ferry_example_parse, parser, &o, out);
    if (rc) {
        ferry_example_parser_free(parser);             /* the map does not own it when it fails */
        return ferry__last_error_prefix(rc, __func__); /* its message names ferry_dataset_map */
    }
    return FERRY_OK;
}
