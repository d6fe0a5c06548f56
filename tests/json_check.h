/*
 * json_check.h - a strict JSON validator for tests of what ferry writes as JSON (the report, the
 * trace): RFC 8259 syntax (objects, arrays, strings with their escapes, numbers, true, false,
 * null), nesting up to 64 levels, nothing after the value but whitespace. Returns NULL when the
 * text is valid, else a static message naming the byte offset. Include after runner.h.
 */
#ifndef FERRY_TEST_JSON_CHECK_H
#define FERRY_TEST_JSON_CHECK_H

#include <stddef.h>
#include <stdio.h>
#include <string.h>

typedef struct json_cur {
    const char *p, *start, *end;
    char msg[128];
} json_cur;

static void json_ws(json_cur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int json_bad(json_cur *c, const char *what) {
    snprintf(c->msg, sizeof c->msg, "%s at byte %zu", what, (size_t)(c->p - c->start));
    return -1;
}

static int json_value(json_cur *c, int depth);

static int json_string(json_cur *c) {
    c->p++; /* the opening quote */
    while (c->p < c->end && *c->p != '"') {
        unsigned char ch = (unsigned char)*c->p;
        if (ch < 0x20) return json_bad(c, "control character in a string");
        if (ch == '\\') {
            c->p++;
            if (c->p >= c->end) return json_bad(c, "truncated escape");
            if (*c->p == 'u') {
                for (int i = 0; i < 4; i++) {
                    c->p++;
                    if (c->p >= c->end || !strchr("0123456789abcdefABCDEF", *c->p))
                        return json_bad(c, "bad \\u escape");
                }
            } else if (!strchr("\"\\/bfnrt", *c->p)) {
                return json_bad(c, "bad escape");
            }
        }
        c->p++;
    }
    if (c->p >= c->end) return json_bad(c, "unterminated string");
    c->p++;
    return 0;
}

static int json_number(json_cur *c) {
    const char *s = c->p;
    if (c->p < c->end && *c->p == '-') c->p++;
    if (c->p >= c->end || *c->p < '0' || *c->p > '9') return json_bad(c, "bad number");
    if (*c->p == '0') c->p++;
    else
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        if (c->p >= c->end || *c->p < '0' || *c->p > '9') return json_bad(c, "bad fraction");
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-')) c->p++;
        if (c->p >= c->end || *c->p < '0' || *c->p > '9') return json_bad(c, "bad exponent");
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
    }
    return c->p > s ? 0 : json_bad(c, "bad number");
}

static int json_word(json_cur *c, const char *w) {
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0) return json_bad(c, "unexpected character");
    c->p += n;
    return 0;
}

static int json_value(json_cur *c, int depth) {
    if (depth > 64) return json_bad(c, "nesting too deep");
    json_ws(c);
    if (c->p >= c->end) return json_bad(c, "value expected");
    char ch = *c->p;
    if (ch == '{' || ch == '[') {
        char close = ch == '{' ? '}' : ']';
        c->p++;
        json_ws(c);
        if (c->p < c->end && *c->p == close) {
            c->p++;
            return 0;
        }
        for (;;) {
            json_ws(c);
            if (ch == '{') {
                if (c->p >= c->end || *c->p != '"') return json_bad(c, "object key expected");
                if (json_string(c)) return -1;
                json_ws(c);
                if (c->p >= c->end || *c->p != ':') return json_bad(c, "':' expected");
                c->p++;
            }
            if (json_value(c, depth + 1)) return -1;
            json_ws(c);
            if (c->p < c->end && *c->p == ',') {
                c->p++;
                continue;
            }
            if (c->p < c->end && *c->p == close) {
                c->p++;
                return 0;
            }
            return json_bad(c, "',' or a closing bracket expected");
        }
    }
    if (ch == '"') return json_string(c);
    if (ch == 't') return json_word(c, "true");
    if (ch == 'f') return json_word(c, "false");
    if (ch == 'n') return json_word(c, "null");
    return json_number(c);
}

/* NULL when text[0..n) is one valid JSON value; else why not (valid until the next call). */
static __attribute__((unused)) const char *json_check(const char *text, size_t n) {
    static json_cur c;
    c.p = c.start = text;
    c.end = text + n;
    c.msg[0] = '\0';
    if (json_value(&c, 0)) return c.msg;
    json_ws(&c);
    if (c.p != c.end) {
        json_bad(&c, "text after the value");
        return c.msg;
    }
    return NULL;
}

#endif
