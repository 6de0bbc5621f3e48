/* bitplan proto: limits, names, UTF-8 policy and the wire error-code table. */
#include <stdio.h>
#include <string.h>

#include "proto_internal.h"

void bp_proto_limits_default(bp_proto_limits *lim)
{
    if (!lim)
        return;
    memset(lim, 0, sizeof *lim);
    lim->max_header_bytes = BP_PROTO_DEF_MAX_HEADER_BYTES;
    lim->max_frame_bytes = BP_PROTO_DEF_MAX_FRAME_BYTES;
    lim->max_bin_frames = BP_PROTO_DEF_MAX_BIN_FRAMES;
    lim->max_name_bytes = BP_PROTO_DEF_MAX_NAME_BYTES;
    lim->max_text_bytes = BP_PROTO_DEF_MAX_TEXT_BYTES;
    lim->max_job_spec_bytes = BP_PROTO_DEF_MAX_JOB_SPEC_BYTES;
    lim->max_plan_bytes = BP_PROTO_DEF_MAX_PLAN_BYTES;
    lim->max_jobs = BP_PROTO_DEF_MAX_JOBS;
    lim->max_depth = BP_PROTO_DEF_MAX_DEPTH;
    lim->max_nodes = BP_PROTO_DEF_MAX_NODES;
}

void bp__proto_limits_resolve(const bp_proto_limits *in, bp_proto_limits *out)
{
    bp_proto_limits d;
    bp_proto_limits_default(&d);
    if (!in) {
        *out = d;
        return;
    }
    *out = *in;
#define DEF(f) if (out->f == 0) out->f = d.f
    DEF(max_header_bytes);
    DEF(max_frame_bytes);
    DEF(max_bin_frames);
    DEF(max_name_bytes);
    DEF(max_text_bytes);
    DEF(max_job_spec_bytes);
    DEF(max_plan_bytes);
    DEF(max_jobs);
    DEF(max_nodes);
#undef DEF
    if (out->max_depth <= 0)
        out->max_depth = d.max_depth;
    if (out->max_depth > 64)
        out->max_depth = 64; /* wire_check's own ceiling */
    if (out->max_bin_frames > BP_PROTO_MAX_BIN)
        out->max_bin_frames = BP_PROTO_MAX_BIN;
}

bp_str bp_str_c(const char *s)
{
    bp_str r = {s, s ? strlen(s) : 0};
    return r;
}

bool bp__utf8_ok(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned lo = 0x80, hi = 0xbf; /* allowed range of the 2nd byte */
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            if (c == 0xe0)
                lo = 0xa0; /* overlong */
            else if (c == 0xed)
                hi = 0x9f; /* surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            if (c == 0xf0)
                lo = 0x90; /* overlong */
            else if (c == 0xf4)
                hi = 0x8f; /* > U+10FFFF */
        } else {
            return false; /* continuation byte, 0xc0/0xc1 overlong, 0xf5.. */
        }
        if (len - i - 1 < n)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= n; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
        i += n + 1;
    }
    return true;
}

const char *bp__show(const char *s, size_t len, char *buf, size_t cap)
{
    size_t o = 0;
    size_t shown = len < 40 ? len : 40;
    if (cap < 8) {
        if (cap)
            buf[0] = '\0';
        return buf;
    }
    for (size_t i = 0; i < shown && s; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
            if (o + 1 >= cap - 4)
                break;
            buf[o++] = (char)c;
        } else {
            if (o + 4 >= cap - 4)
                break;
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
        }
    }
    if (shown < len && o + 3 < cap) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

const char *bp__mp_type_name(int type)
{
    switch (type) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "boolean";
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return "unsigned integer";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "negative integer";
    case MSGPACK_OBJECT_FLOAT32: return "float32";
    case MSGPACK_OBJECT_FLOAT64: return "float64";
    case MSGPACK_OBJECT_STR: return "string";
    case MSGPACK_OBJECT_ARRAY: return "array";
    case MSGPACK_OBJECT_MAP: return "map";
    case MSGPACK_OBJECT_BIN: return "bin";
    case MSGPACK_OBJECT_EXT: return "ext";
    }
    return "unknown";
}

size_t bp_wire_dtype_size(bp_wire_dtype d)
{
    switch (d) {
    case BP_WIRE_F32: return 4;
    case BP_WIRE_F64: return 8;
    case BP_WIRE_U8: return 1;
    case BP_WIRE_U16: return 2;
    case BP_WIRE_I64: return 8;
    }
    return 0;
}

const char *bp_wire_dtype_name(bp_wire_dtype d)
{
    switch (d) {
    case BP_WIRE_F32: return "f32";
    case BP_WIRE_F64: return "f64";
    case BP_WIRE_U8: return "u8";
    case BP_WIRE_U16: return "u16";
    case BP_WIRE_I64: return "i64";
    }
    return "?";
}

/* The wire codes are part of the protocol: never renumber, only append. */
static const struct {
    int bp;
    int32_t wire;
    const char *name;
} wire_codes[] = {
    {BP_OK, 0, "ok"},
    {BP_EINVAL, 1, "invalid_argument"},
    {BP_EIO, 2, "io"},
    {BP_EFORMAT, 3, "malformed_input"},
    {BP_ENOMEM, 4, "out_of_memory"},
    {BP_EUNSUPPORTED, 5, "unsupported"},
    {BP_EINFEASIBLE, 6, "infeasible"},
    {BP_ESOLVER, 7, "solver_failure"},
    {BP_ETIMEOUT, 8, "timeout"},
    {BP_ENOTFOUND, 9, "not_found"},
    {BP_EMISMATCH, 10, "mismatch"},
    {BP_ECANCELED, 11, "canceled"},
    {BP_EPROTO, 12, "protocol_error"},
};
#define WIRE_INTERNAL 99

int32_t bp_proto_wire_code(int bp_code)
{
    for (size_t i = 0; i < sizeof wire_codes / sizeof wire_codes[0]; i++)
        if (wire_codes[i].bp == bp_code)
            return wire_codes[i].wire;
    return WIRE_INTERNAL;
}

int bp_proto_bp_code(int32_t wire_code)
{
    for (size_t i = 0; i < sizeof wire_codes / sizeof wire_codes[0]; i++)
        if (wire_codes[i].wire == wire_code)
            return wire_codes[i].bp;
    return BP_EIO;
}

const char *bp_proto_wire_code_name(int32_t wire_code)
{
    for (size_t i = 0; i < sizeof wire_codes / sizeof wire_codes[0]; i++)
        if (wire_codes[i].wire == wire_code)
            return wire_codes[i].name;
    if (wire_code == WIRE_INTERNAL)
        return "internal";
    return "unknown";
}
