/*
 * example_json.c - tf.train.Example to and from one line of JSON, without a spec (for
 * `ferry tfrecord cat` and `ferry tfrecord write`).
 *
 *   {"features": {"key": {"int64": [1, -2]} | {"float": [0.5, "NaN"]} |
 *                        {"bytes": ["utf-8 text", {"base64": "AAE="}]} | {}}}
 *
 * to_json walks the whole record and checks every byte of it (unlike the parser in example.c,
 * which decodes only the features it is asked for); a key given twice is written once, with its
 * last value, at the place of its last entry (protobuf map semantics). Floats are written with
 * the fewest significant digits (6 to 9) that read back to the same float, so from_json(to_json(x))
 * parses to the same values as x. from_json writes the canonical encoding: entries in JSON order,
 * packed numbers, a Feature with no kind for {}.
 *
 * Both functions are pure: no shared state, any thread. Every byte goes through the runtime's
 * allocator; the result is a ferry_blob owning its buffer.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "io/wire.h"

/* ---- growable output buffer ------------------------------------------------------------- */
typedef struct jbuf {
    ferry_runtime *rt;
    uint8_t *p;
    size_t n, cap;
    bool failed;
} jbuf;

static bool jb_reserve(jbuf *b, size_t more) {
    if (b->failed) return false;
    if (more <= b->cap - b->n) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->n < more) {
        if (cap > SIZE_MAX / 2) {
            b->failed = true;
            return false;
        }
        cap *= 2;
    }
    uint8_t *q = ferry__realloc(b->rt, b->p, cap);
    if (!q) {
        b->failed = true;
        return false;
    }
    b->p = q;
    b->cap = cap;
    return true;
}

static void jb_put(jbuf *b, const void *p, size_t n) {
    if (n && jb_reserve(b, n)) {
        memcpy(b->p + b->n, p, n);
        b->n += n;
    }
}

static void jb_s(jbuf *b, const char *s) { jb_put(b, s, strlen(s)); }
static void jb_c(jbuf *b, uint8_t c) { jb_put(b, &c, 1); }

static void jb_varint(jbuf *b, uint64_t v) {
    uint8_t t[10];
    size_t n = 0;
    while (v >= 0x80) {
        t[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    t[n++] = (uint8_t)v;
    jb_put(b, t, n);
}

static size_t varint_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static void jb_free(jbuf *b) {
    ferry__free(b->rt, b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* Hands the buffer to a new blob. */
static int jb_blob(jbuf *b, const char *fn, ferry_blob **out) {
    if (b->failed) {
        jb_free(b);
        return ferry__set_last_error(FERRY_ENOMEM, "%s: out of memory", fn);
    }
    if (!b->p && !jb_reserve(b, 1)) return ferry__set_last_error(FERRY_ENOMEM, "%s: out of memory", fn);
    ferry_blob *blob = ferry__blob_new(b->rt, b->p, b->n);
    if (!blob) {
        jb_free(b);
        return ferry__set_last_error(FERRY_ENOMEM, "%s: out of memory", fn);
    }
    *out = blob;
    return FERRY_OK;
}

/* ---- to_json: the record read with io/wire.h (every byte checked) ---------------------------- */
#define TJ "ferry_example_to_json"

/* ---- JSON writing helpers --------------------------------------------------------------- */
/* Length of the valid UTF-8 sequence at p (1-4), or 0. */
static size_t utf8_seq(const uint8_t *p, size_t n) {
    uint8_t c = p[0];
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) return n >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (n < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80) return 0;
        if (c == 0xe0 && p[1] < 0xa0) return 0;  /* overlong */
        if (c == 0xed && p[1] >= 0xa0) return 0; /* surrogate */
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (n < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80) return 0;
        if (c == 0xf0 && p[1] < 0x90) return 0;
        if (c == 0xf4 && p[1] >= 0x90) return 0;
        return 4;
    }
    return 0;
}

static bool utf8_valid(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq(p + i, n - i);
        if (!k) return false;
        i += k;
    }
    return true;
}

/* A JSON string of valid UTF-8 bytes. */
static void jb_str(jbuf *b, const uint8_t *p, size_t n) {
    static const char hex[] = "0123456789abcdef";
    jb_c(b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        jb_put(b, p + run, i - run);
        run = i + 1;
        switch (c) {
        case '"': jb_s(b, "\\\""); break;
        case '\\': jb_s(b, "\\\\"); break;
        case '\n': jb_s(b, "\\n"); break;
        case '\t': jb_s(b, "\\t"); break;
        case '\r': jb_s(b, "\\r"); break;
        case '\b': jb_s(b, "\\b"); break;
        case '\f': jb_s(b, "\\f"); break;
        default: {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            jb_put(b, e, 6);
        }
        }
    }
    jb_put(b, p + run, n - run);
    jb_c(b, '"');
}

static void jb_base64(jbuf *b, const uint8_t *p, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    jb_c(b, '"');
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        char o[4] = {tab[v >> 18], tab[(v >> 12) & 63], tab[(v >> 6) & 63], tab[v & 63]};
        jb_put(b, o, 4);
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        char o[4] = {tab[v >> 18], tab[(v >> 12) & 63], '=', '='};
        jb_put(b, o, 4);
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        char o[4] = {tab[v >> 18], tab[(v >> 12) & 63], tab[(v >> 6) & 63], '='};
        jb_put(b, o, 4);
    }
    jb_c(b, '"');
}

static void jb_i64(jbuf *b, int64_t v) {
    char t[24];
    size_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        t[sizeof t - 1 - n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) t[sizeof t - 1 - n++] = '-';
    jb_put(b, t + sizeof t - n, n);
}

static void jb_f32(jbuf *b, float f) {
    if (isnan(f)) {
        jb_s(b, "\"NaN\"");
        return;
    }
    if (isinf(f)) {
        jb_s(b, f < 0 ? "\"-Infinity\"" : "\"Infinity\"");
        return;
    }
    char t[48];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(t, sizeof t, "%.*g", prec, (double)f);
        float back = strtof(t, NULL);
        if (memcmp(&back, &f, sizeof f) == 0) break;
    }
    jb_s(b, t);
}

/* ---- to_json ---------------------------------------------------------------------------- */
typedef struct jentry {
    const uint8_t *key, *val;
    size_t klen, vlen;
    uint64_t hash;
    bool keep;
} jentry;

static int feature_json(const ferry__wire *w, jbuf *b, const uint8_t *p, size_t len) {
    const uint8_t *start = p, *end = p + len;
    uint32_t kind = 0;
    size_t from = 0;
    while (p < end) {
        const uint8_t *at = p;
        uint32_t field, wt;
        int rc = ferry__wire_tag(w, &p, end, &field, &wt, "Feature");
        if (rc) return rc;
        if (field >= 1 && field <= 3) {
            if (wt != 2) return ferry__wire_bad(w, at, "Feature", "field %u has wire type %u, expected 2", field, wt);
            if (field != kind) {
                kind = field;
                from = (size_t)(at - start);
            }
        }
        rc = ferry__wire_skip(w, &p, end, field, wt, "Feature");
        if (rc) return rc;
    }
    if (kind == 0) {
        jb_s(b, "{}");
        return FERRY_OK;
    }
    static const char *const head[4] = {"", "{\"bytes\": [", "{\"float\": [", "{\"int64\": ["};
    static const char *const lname[4] = {"", "bytes_list", "float_list", "int64_list"};
    jb_s(b, head[kind]);
    bool first = true;
    p = start + from;
    while (p < end) {
        uint32_t field, wt;
        int rc = ferry__wire_tag(w, &p, end, &field, &wt, "Feature");
        if (rc) return rc;
        if (field != kind) {
            rc = ferry__wire_skip(w, &p, end, field, wt, "Feature");
            if (rc) return rc;
            continue;
        }
        size_t n;
        rc = ferry__wire_len(w, &p, end, &n, lname[kind]);
        if (rc) return rc;
        const uint8_t *q = p, *qe = p + n;
        p = qe;
        while (q < qe) {
            const uint8_t *at = q;
            rc = ferry__wire_tag(w, &q, qe, &field, &wt, lname[kind]);
            if (rc) return rc;
            if (field != 1) {
                rc = ferry__wire_skip(w, &q, qe, field, wt, lname[kind]);
                if (rc) return rc;
                continue;
            }
            if (kind == 1) {
                if (wt != 2) return ferry__wire_bad(w, at, "bytes_list", "field 1 has wire type %u, expected 2", wt);
                size_t m;
                rc = ferry__wire_len(w, &q, qe, &m, "bytes value");
                if (rc) return rc;
                if (!first) jb_s(b, ", ");
                first = false;
                if (utf8_valid(q, m)) {
                    jb_str(b, q, m);
                } else {
                    jb_s(b, "{\"base64\": ");
                    jb_base64(b, q, m);
                    jb_c(b, '}');
                }
                q += m;
            } else if (kind == 2) {
                size_t m = 4;
                const uint8_t *vp = q;
                if (wt == 2) {
                    rc = ferry__wire_len(w, &q, qe, &m, "packed float values");
                    if (rc) return rc;
                    if (m % 4)
                        return ferry__wire_bad(w, at, "packed float values", "length %zu is not a multiple of 4", m);
                    vp = q;
                } else if (wt != 5) {
                    return ferry__wire_bad(w, at, "float_list", "field 1 has wire type %u, expected 5 or 2", wt);
                } else if (qe - q < 4) {
                    return ferry__wire_bad(w, q, "float value", "truncated (%zu bytes left)", (size_t)(qe - q));
                }
                for (size_t i = 0; i < m; i += 4) {
                    uint32_t u = (uint32_t)vp[i] | (uint32_t)vp[i + 1] << 8 | (uint32_t)vp[i + 2] << 16 |
                                 (uint32_t)vp[i + 3] << 24;
                    float f;
                    memcpy(&f, &u, 4);
                    if (!first) jb_s(b, ", ");
                    first = false;
                    jb_f32(b, f);
                }
                q = vp + m;
            } else {
                if (wt == 0) {
                    uint64_t v;
                    rc = ferry__wire_varint(w, &q, qe, &v, "int64 value");
                    if (rc) return rc;
                    if (!first) jb_s(b, ", ");
                    first = false;
                    jb_i64(b, (int64_t)v);
                } else if (wt == 2) {
                    size_t m;
                    rc = ferry__wire_len(w, &q, qe, &m, "packed int64 values");
                    if (rc) return rc;
                    const uint8_t *ve = q + m;
                    while (q < ve) {
                        uint64_t v;
                        rc = ferry__wire_varint(w, &q, ve, &v, "packed int64 values");
                        if (rc) return rc;
                        if (!first) jb_s(b, ", ");
                        first = false;
                        jb_i64(b, (int64_t)v);
                    }
                } else {
                    return ferry__wire_bad(w, at, "int64_list", "field 1 has wire type %u, expected 0 or 2", wt);
                }
            }
        }
    }
    jb_s(b, "]}");
    return FERRY_OK;
}

static uint64_t bytes_hash(const uint8_t *p, size_t n) { return ferry__fnv64(FERRY__FNV_INIT, p, n); }

/* Collects the map entries of every Features field of the Example. */
static int collect_entries(const ferry__wire *w, ferry_runtime *rt, const uint8_t *p, const uint8_t *end, jentry **out,
                           size_t *count) {
    jentry *v = NULL;
    size_t n = 0, cap = 0;
    int rc = FERRY_OK;
    while (!rc && p < end) {
        const uint8_t *at = p;
        uint32_t field, wt;
        rc = ferry__wire_tag(w, &p, end, &field, &wt, "Example");
        if (rc) break;
        if (field != 1) {
            rc = ferry__wire_skip(w, &p, end, field, wt, "Example");
            continue;
        }
        if (wt != 2) {
            rc = ferry__wire_bad(w, at, "Example", "field 1 has wire type %u, expected 2", wt);
            break;
        }
        size_t len;
        rc = ferry__wire_len(w, &p, end, &len, "Features");
        if (rc) break;
        const uint8_t *q = p, *qe = p + len;
        p = qe;
        while (!rc && q < qe) {
            const uint8_t *eat = q;
            rc = ferry__wire_tag(w, &q, qe, &field, &wt, "Features");
            if (rc) break;
            if (field != 1) {
                rc = ferry__wire_skip(w, &q, qe, field, wt, "Features");
                continue;
            }
            if (wt != 2) {
                rc = ferry__wire_bad(w, eat, "Features", "field 1 has wire type %u, expected 2", wt);
                break;
            }
            size_t elen;
            rc = ferry__wire_len(w, &q, qe, &elen, "Features map entry");
            if (rc) break;
            const uint8_t *r = q, *re = q + elen;
            q = re;
            jentry e = {.key = r, .val = r};
            while (!rc && r < re) {
                const uint8_t *fat = r;
                rc = ferry__wire_tag(w, &r, re, &field, &wt, "Features map entry");
                if (rc) break;
                if (field == 1 || field == 2) {
                    if (wt != 2) {
                        rc = ferry__wire_bad(w, fat, "Features map entry", "field %u has wire type %u, expected 2",
                                             field, wt);
                        break;
                    }
                    size_t m;
                    rc = ferry__wire_len(w, &r, re, &m, field == 1 ? "map key" : "Feature");
                    if (rc) break;
                    if (field == 1) {
                        if (!utf8_valid(r, m)) {
                            rc = ferry__wire_bad(w, r, "map key", "the key is not valid UTF-8");
                            break;
                        }
                        e.key = r;
                        e.klen = m;
                    } else {
                        e.val = r;
                        e.vlen = m;
                    }
                    r += m;
                } else {
                    rc = ferry__wire_skip(w, &r, re, field, wt, "Features map entry");
                }
            }
            if (rc) break;
            if (n == cap) {
                size_t nc = cap ? 2 * cap : 16;
                jentry *nv = ferry__realloc(rt, v, nc * sizeof *nv);
                if (!nv) {
                    rc = ferry__set_last_error(FERRY_ENOMEM, TJ ": out of memory");
                    break;
                }
                v = nv;
                cap = nc;
            }
            e.hash = bytes_hash(e.key, e.klen);
            v[n++] = e;
        }
    }
    if (rc) {
        ferry__free(rt, v);
        return rc;
    }
    *out = v;
    *count = n;
    return FERRY_OK;
}

/* Marks the last entry of every key to be kept. */
static int dedupe(ferry_runtime *rt, jentry *v, size_t n) {
    if (n == 0) return FERRY_OK;
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    size_t *tab = ferry__alloc(rt, cap * sizeof *tab);
    if (!tab) return ferry__set_last_error(FERRY_ENOMEM, TJ ": out of memory");
    for (size_t i = 0; i < cap; i++) tab[i] = SIZE_MAX;
    for (size_t i = n; i-- > 0;) {
        jentry *e = &v[i];
        size_t h = (size_t)e->hash & (cap - 1);
        e->keep = true;
        for (; tab[h] != SIZE_MAX; h = (h + 1) & (cap - 1)) {
            const jentry *g = &v[tab[h]];
            if (g->hash == e->hash && g->klen == e->klen && (e->klen == 0 || memcmp(g->key, e->key, e->klen) == 0)) {
                e->keep = false;
                break;
            }
        }
        if (e->keep) tab[h] = i;
    }
    ferry__free(rt, tab);
    return FERRY_OK;
}

int ferry_example_to_json(ferry_runtime *rt, const void *data, size_t len, ferry_blob **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, TJ ": argument 'out' is NULL");
    *out = NULL;
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, TJ ": argument 'rt' is NULL");
    FERRY__CHECK_ARG(data != NULL || len == 0, FERRY_EINVAL, TJ ": argument 'data' is NULL with len %zu", len);
    const uint8_t *p = data;
    ferry__status wst; /* the wire reader's message, given to the caller with this function's name */
    ferry__status_clear(&wst);
    ferry__wire w = {p, &wst};
    jentry *v = NULL;
    size_t n = 0;
    int rc = collect_entries(&w, rt, p, p ? p + len : p, &v, &n);
    if (!rc) rc = dedupe(rt, v, n);
    jbuf b = {.rt = rt};
    if (!rc) {
        jb_s(&b, "{\"features\": {");
        bool first = true;
        for (size_t i = 0; !rc && i < n; i++) {
            if (!v[i].keep) continue;
            if (!first) jb_s(&b, ", ");
            first = false;
            jb_str(&b, v[i].key, v[i].klen);
            jb_s(&b, ": ");
            rc = feature_json(&w, &b, v[i].val, v[i].vlen);
        }
        jb_s(&b, "}}");
    }
    ferry__free(rt, v);
    if (rc) {
        jb_free(&b);
        if (wst.code == rc) ferry__set_last_error(rc, TJ ": %s", wst.msg);
        return rc;
    }
    return jb_blob(&b, TJ, out);
}

#undef TJ

/* ---- from_json -------------------------------------------------------------------------- */
#define FJ "ferry_example_from_json"

typedef struct jp {
    const char *s, *p, *end;
    ferry_runtime *rt;
} jp;

static int jerr(const jp *j, const char *fmt, ...) FERRY_PRINTF(2, 3);
static int jerr(const jp *j, const char *fmt, ...) {
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return ferry__set_last_error(FERRY_EINVAL, FJ ": at byte %zu: %s", (size_t)(j->p - j->s), why);
}

static void jws(jp *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

/* Skips whitespace and consumes c if it is next. */
static bool jeat(jp *j, char c) {
    jws(j);
    if (j->p < j->end && *j->p == c) {
        j->p++;
        return true;
    }
    return false;
}

static int jexpect(jp *j, char c, const char *what) {
    if (jeat(j, c)) return FERRY_OK;
    if (j->p >= j->end) return jerr(j, "expected '%c' (%s), got the end of the input", c, what);
    return jerr(j, "expected '%c' (%s), got '%c'", c, what, *j->p);
}

static int hex4(jp *j, uint32_t *v) {
    if (j->end - j->p < 4) return jerr(j, "truncated \\u escape");
    uint32_t x = 0;
    for (int i = 0; i < 4; i++) {
        char c = j->p[i];
        uint32_t d;
        if (c >= '0' && c <= '9') d = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') d = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') d = (uint32_t)(c - 'A' + 10);
        else return jerr(j, "bad hex digit '%c' in a \\u escape", c);
        x = x << 4 | d;
    }
    j->p += 4;
    *v = x;
    return FERRY_OK;
}

static void put_utf8(jbuf *b, uint32_t cp) {
    uint8_t t[4];
    size_t n;
    if (cp < 0x80) {
        t[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        t[0] = (uint8_t)(0xc0 | cp >> 6);
        t[1] = (uint8_t)(0x80 | (cp & 63));
        n = 2;
    } else if (cp < 0x10000) {
        t[0] = (uint8_t)(0xe0 | cp >> 12);
        t[1] = (uint8_t)(0x80 | ((cp >> 6) & 63));
        t[2] = (uint8_t)(0x80 | (cp & 63));
        n = 3;
    } else {
        t[0] = (uint8_t)(0xf0 | cp >> 18);
        t[1] = (uint8_t)(0x80 | ((cp >> 12) & 63));
        t[2] = (uint8_t)(0x80 | ((cp >> 6) & 63));
        t[3] = (uint8_t)(0x80 | (cp & 63));
        n = 4;
    }
    jb_put(b, t, n);
}

/* A JSON string, decoded, appended to out (which is reset first). */
static int jstring(jp *j, jbuf *out) {
    out->n = 0;
    int rc = jexpect(j, '"', "a string");
    if (rc) return rc;
    for (;;) {
        const char *run = j->p;
        while (j->p < j->end && *j->p != '"' && *j->p != '\\' && (uint8_t)*j->p >= 0x20) j->p++;
        jb_put(out, run, (size_t)(j->p - run));
        if (j->p >= j->end) return jerr(j, "unterminated string");
        char c = *j->p;
        if (c == '"') {
            j->p++;
            return out->failed ? ferry__set_last_error(FERRY_ENOMEM, FJ ": out of memory") : FERRY_OK;
        }
        if (c != '\\') return jerr(j, "control character 0x%02x in a string", (unsigned)(uint8_t)c);
        j->p++;
        if (j->p >= j->end) return jerr(j, "truncated escape");
        c = *j->p++;
        switch (c) {
        case '"': jb_c(out, '"'); break;
        case '\\': jb_c(out, '\\'); break;
        case '/': jb_c(out, '/'); break;
        case 'b': jb_c(out, '\b'); break;
        case 'f': jb_c(out, '\f'); break;
        case 'n': jb_c(out, '\n'); break;
        case 'r': jb_c(out, '\r'); break;
        case 't': jb_c(out, '\t'); break;
        case 'u': {
            uint32_t cp;
            rc = hex4(j, &cp);
            if (rc) return rc;
            if (cp >= 0xdc00 && cp <= 0xdfff) return jerr(j, "lone low surrogate \\u%04x", cp);
            if (cp >= 0xd800 && cp <= 0xdbff) {
                uint32_t lo;
                if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
                    return jerr(j, "high surrogate \\u%04x without a low one", cp);
                j->p += 2;
                rc = hex4(j, &lo);
                if (rc) return rc;
                if (lo < 0xdc00 || lo > 0xdfff) return jerr(j, "high surrogate followed by \\u%04x", lo);
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            put_utf8(out, cp);
            break;
        }
        default: j->p--; return jerr(j, "unknown escape '\\%c'", c);
        }
    }
}

static bool name_is(const jbuf *b, const char *s) {
    size_t n = strlen(s);
    return b->n == n && memcmp(b->p, s, n) == 0;
}

/* A number token ([-+0-9.eE]) into buf; returns its length, 0 when there is none. */
static size_t jtoken(jp *j, char *buf, size_t cap) {
    jws(j);
    size_t n = 0;
    while (j->p + n < j->end && n + 1 < cap) {
        char c = j->p[n];
        if (!((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E')) break;
        buf[n] = c;
        n++;
    }
    buf[n] = '\0';
    return n;
}

static bool parse_i64(const char *s, size_t n, int64_t *out) {
    size_t i = 0;
    bool neg = false;
    if (i < n && s[i] == '-') {
        neg = true;
        i++;
    }
    if (i == n) return false;
    uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (lim - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)((uint64_t)0 - v) : (int64_t)v;
    return true;
}

static bool parse_f32(const char *s, float *out) {
    if (strcmp(s, "NaN") == 0) {
        *out = NAN;
        return true;
    }
    if (strcmp(s, "Infinity") == 0 || strcmp(s, "-Infinity") == 0) {
        *out = s[0] == '-' ? -INFINITY : INFINITY;
        return true;
    }
    if (!*s) return false;
    for (const char *c = s; *c; c++)
        if (!((*c >= '0' && *c <= '9') || *c == '-' || *c == '+' || *c == '.' || *c == 'e' || *c == 'E')) return false;
    char *e;
    *out = strtof(s, &e);
    return *e == '\0';
}

static int b64_val(uint8_t c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

/* Decodes base64 (padding optional) from in to out (reset first). */
static int base64_decode(jp *j, const jbuf *in, jbuf *out) {
    out->n = 0;
    size_t n = in->n;
    while (n > 0 && in->p[n - 1] == '=') n--;
    if (in->n - n > 2 || n % 4 == 1) return jerr(j, "bad base64 length");
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_val(in->p[i]);
        if (v < 0) return jerr(j, "bad base64 character '%c'", in->p[i]);
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            jb_c(out, (uint8_t)(acc >> bits));
            acc &= (1u << bits) - 1;
        }
    }
    return out->failed ? ferry__set_last_error(FERRY_ENOMEM, FJ ": out of memory") : FERRY_OK;
}

typedef struct jscratch {
    jbuf name, str, str2, vals;
} jscratch;

/* One feature object into *kind (0 for {}) and the list payload in sc->vals. */
static int jfeature(jp *j, jscratch *sc, uint32_t *kind) {
    *kind = 0;
    sc->vals.n = 0;
    int rc = jexpect(j, '{', "a Feature object");
    if (rc) return rc;
    if (jeat(j, '}')) return FERRY_OK;
    rc = jstring(j, &sc->name);
    if (rc) return rc;
    if (name_is(&sc->name, "bytes")) *kind = 1;
    else if (name_is(&sc->name, "float")) *kind = 2;
    else if (name_is(&sc->name, "int64")) *kind = 3;
    else
        return jerr(j, "a Feature holds \"int64\", \"float\" or \"bytes\", not \"%.*s\"",
                    (int)FERRY__MIN(sc->name.n, 64), sc->name.p ? (const char *)sc->name.p : "");
    rc = jexpect(j, ':', "after a member name");
    if (!rc) rc = jexpect(j, '[', "a list of values");
    if (rc) return rc;
    if (!jeat(j, ']')) {
        for (;;) {
            char tok[80];
            jws(j);
            if (*kind == 1) {
                const jbuf *val = &sc->str;
                if (j->p < j->end && *j->p == '{') {
                    j->p++;
                    rc = jstring(j, &sc->name);
                    if (!rc && !name_is(&sc->name, "base64")) rc = jerr(j, "expected the member \"base64\"");
                    if (!rc) rc = jexpect(j, ':', "after a member name");
                    if (!rc) rc = jstring(j, &sc->str2);
                    if (!rc) rc = base64_decode(j, &sc->str2, &sc->str);
                    if (!rc) rc = jexpect(j, '}', "the end of a base64 object");
                } else {
                    rc = jstring(j, &sc->str);
                }
                if (rc) return rc;
                jb_c(&sc->vals, 0x0a);
                jb_varint(&sc->vals, val->n);
                jb_put(&sc->vals, val->p, val->n);
            } else {
                bool quoted = j->p < j->end && *j->p == '"';
                const char *at = j->p;
                size_t n;
                if (quoted) {
                    rc = jstring(j, &sc->str);
                    if (rc) return rc;
                    n = FERRY__MIN(sc->str.n, sizeof tok - 1);
                    if (sc->str.n >= sizeof tok) return jerr(j, "number string too long");
                    if (n) memcpy(tok, sc->str.p, n);
                    tok[n] = '\0';
                } else {
                    n = jtoken(j, tok, sizeof tok);
                    if (n == 0) return jerr(j, "expected a number");
                    j->p += n;
                }
                if (*kind == 3) {
                    int64_t v;
                    if (!parse_i64(tok, n, &v)) {
                        j->p = at;
                        return jerr(j, "'%s' is not an int64", tok);
                    }
                    jb_varint(&sc->vals, (uint64_t)v);
                } else {
                    float f;
                    if (!parse_f32(tok, &f)) {
                        j->p = at;
                        return jerr(j, "'%s' is not a float", tok);
                    }
                    uint32_t u;
                    memcpy(&u, &f, 4);
                    uint8_t le[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
                    jb_put(&sc->vals, le, 4);
                }
            }
            if (jeat(j, ']')) break;
            rc = jexpect(j, ',', "between values");
            if (rc) return rc;
        }
    }
    if (sc->vals.failed) return ferry__set_last_error(FERRY_ENOMEM, FJ ": out of memory");
    return jexpect(j, '}', "the end of a Feature object (one member only)");
}

/* Appends one map entry (key in sc->name... copied by the caller into key) to features. */
static void put_entry(jbuf *features, const jbuf *key, uint32_t kind, const jbuf *vals) {
    size_t list = 0;
    if (kind == 1) list = vals->n;
    else if (kind && vals->n) list = 1 + varint_size(vals->n) + vals->n;
    size_t feat = kind ? 1 + varint_size(list) + list : 0;
    size_t entry = 1 + varint_size(key->n) + key->n + 1 + varint_size(feat) + feat;
    jb_c(features, 0x0a);
    jb_varint(features, entry);
    jb_c(features, 0x0a);
    jb_varint(features, key->n);
    jb_put(features, key->p, key->n);
    jb_c(features, 0x12);
    jb_varint(features, feat);
    if (!kind) return;
    jb_c(features, (uint8_t)(kind << 3 | 2));
    jb_varint(features, list);
    if (kind == 1) {
        jb_put(features, vals->p, vals->n);
    } else if (vals->n) {
        jb_c(features, 0x0a);
        jb_varint(features, vals->n);
        jb_put(features, vals->p, vals->n);
    }
}

int ferry_example_from_json(ferry_runtime *rt, const char *json, size_t len, ferry_blob **out) {
    ferry__clear_last_error();
    FERRY__CHECK_ARG(out != NULL, FERRY_EINVAL, FJ ": argument 'out' is NULL");
    *out = NULL;
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, FJ ": argument 'rt' is NULL");
    FERRY__CHECK_ARG(json != NULL || len == 0, FERRY_EINVAL, FJ ": argument 'json' is NULL with len %zu", len);
    jp j = {json, json, json + len, rt};
    jscratch sc = {{.rt = rt}, {.rt = rt}, {.rt = rt}, {.rt = rt}};
    jbuf key = {.rt = rt}, features = {.rt = rt};
    bool has_features = false;
    int rc = jexpect(&j, '{', "the Example object");
    if (!rc && !jeat(&j, '}')) {
        for (;;) {
            rc = jstring(&j, &sc.name);
            if (rc) break;
            if (!name_is(&sc.name, "features")) {
                rc = jerr(&j, "unknown member \"%.*s\"; an Example has only \"features\"",
                          (int)FERRY__MIN(sc.name.n, 64), sc.name.p ? (const char *)sc.name.p : "");
                break;
            }
            has_features = true;
            rc = jexpect(&j, ':', "after a member name");
            if (!rc) rc = jexpect(&j, '{', "the features object");
            if (rc) break;
            if (!jeat(&j, '}')) {
                for (;;) {
                    rc = jstring(&j, &key);
                    if (!rc && !utf8_valid(key.p, key.n)) rc = jerr(&j, "a feature key must be valid UTF-8");
                    if (!rc) rc = jexpect(&j, ':', "after a feature key");
                    uint32_t kind = 0;
                    if (!rc) rc = jfeature(&j, &sc, &kind);
                    if (rc) break;
                    put_entry(&features, &key, kind, &sc.vals);
                    if (jeat(&j, '}')) break;
                    rc = jexpect(&j, ',', "between features");
                    if (rc) break;
                }
            }
            if (rc) break;
            if (jeat(&j, '}')) break;
            rc = jexpect(&j, ',', "between members");
            if (rc) break;
        }
    }
    if (!rc) {
        jws(&j);
        if (j.p != j.end) rc = jerr(&j, "unexpected text after the Example object");
    }
    jbuf ex = {.rt = rt};
    if (!rc && has_features) {
        jb_c(&ex, 0x0a);
        jb_varint(&ex, features.n);
        jb_put(&ex, features.p, features.n);
        if (features.failed) ex.failed = true;
    }
    jb_free(&sc.name);
    jb_free(&sc.str);
    jb_free(&sc.str2);
    jb_free(&sc.vals);
    jb_free(&key);
    jb_free(&features);
    if (rc) {
        jb_free(&ex);
        return rc;
    }
    return jb_blob(&ex, FJ, out);
}
