/* Test helper for tests/proto: builds msgpack frames from a compact text
 * notation, so hostile messages read like what they are.
 *
 *   {v:1, t:'status', id:7, job:'j1'}   map with bare-identifier keys
 *   [1, -2, 1.5, 2.5f, nil, true]       array; 'f' suffix = float32
 *   'a\xff'                             string with \xNN escapes
 *   S(300)                              string of 300 'a'
 *   A(5)                                array of 5 zeros
 *   nan, inf, -inf                      float64 specials
 *   #dd ff ff ff ff                     raw hex; "91*33" repeats a byte
 *   {...} ## 00                         value followed by raw hex bytes
 *
 * Header-only (static functions); test code, so malformed notation aborts. */
#ifndef BP_PROTO_TEST_UTIL_H
#define BP_PROTO_TEST_UTIL_H

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

typedef struct tu_parser {
    const char *p;
    msgpack_packer *pk;
    msgpack_sbuffer *sb;
} tu_parser;

static void tu_die(const char *what, const char *at)
{
    fprintf(stderr, "test notation error: %s at '%.20s'\n", what, at);
    abort();
}

static void tu_ws(tu_parser *s)
{
    while (*s->p && isspace((unsigned char)*s->p))
        s->p++;
}

/* Items in the container starting at p (just after the opening bracket). */
static uint32_t tu_count(const char *p)
{
    int depth = 0;
    uint32_t n = 0;
    int any = 0;
    for (; *p; p++) {
        char c = *p;
        if (c == '\'') {
            for (p++; *p && *p != '\''; p++)
                if (*p == '\\' && p[1])
                    p++;
            any = 1;
            continue;
        }
        if (c == '{' || c == '[' || c == '(') {
            depth++;
            any = 1;
        } else if (c == '}' || c == ']' || c == ')') {
            if (depth == 0)
                return any ? n + 1 : 0;
            depth--;
        } else if (c == ',' && depth == 0) {
            n++;
        } else if (!isspace((unsigned char)c)) {
            any = 1;
        }
    }
    tu_die("unterminated container", p);
    return 0;
}

static void tu_hex(tu_parser *s)
{
    for (;;) {
        tu_ws(s);
        if (!isxdigit((unsigned char)s->p[0]))
            return;
        char h[3] = {s->p[0], s->p[1], 0};
        unsigned char b = (unsigned char)strtoul(h, NULL, 16);
        s->p += 2;
        unsigned long rep = 1;
        if (*s->p == '*') {
            char *end;
            rep = strtoul(s->p + 1, &end, 10);
            s->p = end;
        }
        for (unsigned long i = 0; i < rep; i++)
            msgpack_sbuffer_write(s->sb, (const char *)&b, 1);
    }
}

static void tu_value(tu_parser *s)
{
    tu_ws(s);
    const char *p = s->p;
    if (*p == '{' || *p == '[') {
        int map = *p == '{';
        uint32_t n = tu_count(p + 1);
        if (map)
            msgpack_pack_map(s->pk, n);
        else
            msgpack_pack_array(s->pk, n);
        s->p++;
        for (uint32_t i = 0; i < n; i++) {
            tu_value(s);
            if (map) {
                tu_ws(s);
                if (*s->p != ':')
                    tu_die("expected ':'", s->p);
                s->p++;
                tu_value(s);
            }
            tu_ws(s);
            if (*s->p == ',')
                s->p++;
        }
        tu_ws(s);
        if (*s->p != (map ? '}' : ']'))
            tu_die("expected closing bracket", s->p);
        s->p++;
        return;
    }
    if (*p == '\'') {
        size_t cap = strlen(p), n = 0;
        char *buf = malloc(cap + 1);
        for (p++; *p && *p != '\''; p++) {
            if (*p == '\\' && p[1] == 'x') {
                char h[3] = {p[2], p[3], 0};
                buf[n++] = (char)strtoul(h, NULL, 16);
                p += 3;
            } else {
                buf[n++] = *p;
            }
        }
        if (*p != '\'')
            tu_die("unterminated string", s->p);
        msgpack_pack_str(s->pk, n);
        msgpack_pack_str_body(s->pk, buf, n);
        free(buf);
        s->p = p + 1;
        return;
    }
    if ((p[0] == 'S' || p[0] == 'A') && p[1] == '(') {
        char *end;
        size_t n = strtoull(p + 2, &end, 10);
        if (*end != ')')
            tu_die("expected ')'", end);
        if (p[0] == 'S') {
            char *buf = malloc(n + 1);
            memset(buf, 'a', n);
            msgpack_pack_str(s->pk, n);
            msgpack_pack_str_body(s->pk, buf, n);
            free(buf);
        } else {
            msgpack_pack_array(s->pk, n);
            for (size_t i = 0; i < n; i++)
                msgpack_pack_uint8(s->pk, 0);
        }
        s->p = end + 1;
        return;
    }
#define KW(word, action)                                                      \
    if (strncmp(p, word, strlen(word)) == 0 && !isalnum((unsigned char)p[strlen(word)]) && \
        p[strlen(word)] != '_') {                                             \
        action;                                                               \
        s->p += strlen(word);                                                 \
        return;                                                               \
    }
    KW("nil", msgpack_pack_nil(s->pk))
    KW("true", msgpack_pack_true(s->pk))
    KW("false", msgpack_pack_false(s->pk))
    KW("nan", msgpack_pack_double(s->pk, NAN))
    KW("inf", msgpack_pack_double(s->pk, INFINITY))
    KW("-inf", msgpack_pack_double(s->pk, -INFINITY))
#undef KW
    if (isdigit((unsigned char)*p) || *p == '-') {
        const char *q = p + (*p == '-');
        while (isdigit((unsigned char)*q))
            q++;
        if (*q == '.' || *q == 'e') {
            char *end;
            double d = strtod(p, &end);
            if (*end == 'f') {
                msgpack_pack_float(s->pk, (float)d);
                end++;
            } else {
                msgpack_pack_double(s->pk, d);
            }
            s->p = end;
        } else if (*p == '-') {
            char *end;
            msgpack_pack_int64(s->pk, strtoll(p, &end, 10));
            s->p = end;
        } else {
            char *end;
            msgpack_pack_uint64(s->pk, strtoull(p, &end, 10));
            s->p = end;
        }
        return;
    }
    if (isalpha((unsigned char)*p) || *p == '_') {
        const char *q = p;
        while (isalnum((unsigned char)*q) || *q == '_')
            q++;
        msgpack_pack_str(s->pk, (size_t)(q - p));
        msgpack_pack_str_body(s->pk, p, (size_t)(q - p));
        s->p = q;
        return;
    }
    tu_die("unexpected character", p);
}

/* Encode notation into sb (cleared first). */
static void tu_build(msgpack_sbuffer *sb, const char *notation)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    tu_parser s = {notation, &pk, sb};
    tu_ws(&s);
    if (*s.p == '#') {
        s.p++;
        tu_hex(&s);
    } else {
        tu_value(&s);
        tu_ws(&s);
        if (s.p[0] == '#' && s.p[1] == '#') {
            s.p += 2;
            tu_hex(&s);
        }
    }
    tu_ws(&s);
    if (*s.p)
        tu_die("trailing notation", s.p);
}

#endif
