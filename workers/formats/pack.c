/* Packed on-disk layout (docs/formats.md): codes row by row, LSB-first bit
 * streams padded to whole bytes per row, then the parameter arrays.
 * Multi-byte numbers are little-endian. */
#include <float.h>

#include "bitplan/half.h"
#include "formats_internal.h"

static uint64_t row_code_bytes(const bp_format *f, int64_t cols)
{
    uint64_t bits = (uint64_t)cols * (uint64_t)f->bits;
    return bits / 8 + (bits % 8 != 0);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static int is_f16_value(float v)
{
    return isfinite(v) && fabsf(v) <= BP__F16_MAX && bp__f16_round(v) == v;
}

static int is_nonfinite16(const bp_format *f, uint16_t c)
{
    uint16_t e = f->kind == BP_FMT_F16 ? 0x7c00u : 0x7f80u;
    return (c & e) == e;
}

/* The stored parameter bytes of one group. Returns 0 when p is not exactly
 * representable in the on-disk precision. */
static int encode_param(const bp_format *f, const bp_qparams *p, float tp, uint16_t *a,
                        uint16_t *b)
{
    switch (f->kind) {
    case BP_FMT_INT:
        if (!is_f16_value(p->scale) || (f->asym && !is_f16_value(p->offset)) ||
            (!f->asym && p->offset != 0.0f))
            return 0;
        *a = bp_f32_to_f16(p->scale);
        *b = f->asym ? bp_f32_to_f16(p->offset) : 0;
        return 1;
    case BP_FMT_FP8_E4M3:
        if (!is_f16_value(p->scale) || p->offset != 0.0f)
            return 0;
        *a = bp_f32_to_f16(p->scale);
        return 1;
    case BP_FMT_MXFP4: {
        uint32_t u = bp__fbits(p->scale), e;
        if (u == 0x00400000u)
            e = 0;
        else if ((u & 0x807fffffu) == 0 && (u >> 23) >= 1)
            e = u >> 23;
        else
            return 0;
        if (e > BP__E8M0_MAX_CODE || p->offset != 0.0f)
            return 0;
        *a = (uint16_t)e;
        return 1;
    }
    case BP_FMT_NVFP4: {
        if (p->offset != 0.0f || !(p->scale >= 0.0f))
            return 0;
        float bs = tp > 0.0f ? bp__e4m3_round(p->scale / tp) : 0.0f;
        if (bs * tp != p->scale)
            return 0;
        *a = bp__e4m3_code(bs);
        return 1;
    }
    case BP_FMT_F16:
    case BP_FMT_BF16: return 1;
    }
    return 0;
}

static int code_ok(const bp_format *f, uint16_t c)
{
    switch (f->kind) {
    case BP_FMT_INT: return c <= (uint16_t)((1u << f->bits) - 1u);
    case BP_FMT_FP8_E4M3: return c <= 0xffu && !bp__e4m3_is_nan(c);
    case BP_FMT_MXFP4:
    case BP_FMT_NVFP4: return c <= 0xfu;
    case BP_FMT_F16:
    case BP_FMT_BF16: return !is_nonfinite16(f, c);
    }
    return 0;
}

int bp_format_pack(const bp_format *f, int64_t rows, int64_t cols, const uint16_t *codes,
                   const bp_qparams *params, float tensor_param, uint8_t *out, size_t out_len,
                   bp_error *err)
{
    if (!bp__format_valid(f))
        return bp_error_set(err, BP_EINVAL, "pack: not a registry format");
    uint64_t need = bp_format_bytes(f, rows, cols);
    if (!need)
        return bp_error_set(err, BP_EUNSUPPORTED, "pack %s: cannot store %lld x %lld", f->name,
                            (long long)rows, (long long)cols);
    int needp = f->kind != BP_FMT_F16 && f->kind != BP_FMT_BF16;
    if (!codes || !out || (needp && !params))
        return bp_error_set(err, BP_EINVAL, "pack %s: NULL buffer", f->name);
    if ((uint64_t)out_len != need)
        return bp_error_set(err, BP_EINVAL, "pack %s: output is %zu bytes, layout needs %llu",
                            f->name, out_len, (unsigned long long)need);
    if (f->kind == BP_FMT_NVFP4 && !(tensor_param >= 0.0f && tensor_param <= FLT_MAX))
        return bp_error_set(err, BP_EINVAL, "pack %s: tensor scale %g not finite >= 0",
                            f->name, (double)tensor_param);

    uint64_t rb = row_code_bytes(f, cols);
    int bits = f->bits;
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *c = codes + r * cols;
        uint8_t *o = out + (uint64_t)r * rb;
        uint64_t acc = 0;
        int nb = 0;
        for (int64_t j = 0; j < cols; j++) {
            if (!code_ok(f, c[j]))
                return bp_error_set(err, BP_EINVAL, "pack %s: row %lld col %lld: bad code 0x%x",
                                    f->name, (long long)r, (long long)j, c[j]);
            acc |= (uint64_t)c[j] << nb;
            nb += bits;
            while (nb >= 8) {
                *o++ = (uint8_t)acc;
                acc >>= 8;
                nb -= 8;
            }
        }
        if (nb > 0)
            *o++ = (uint8_t)acc;
    }

    if (!needp)
        return BP_OK;
    int64_t gpr = bp_format_groups_per_row(f, cols);
    uint64_t ng = (uint64_t)rows * (uint64_t)gpr;
    uint8_t *pa = out + (uint64_t)rows * rb;
    for (uint64_t i = 0; i < ng; i++) {
        uint16_t a = 0, b = 0;
        if (!encode_param(f, &params[i], tensor_param, &a, &b))
            return bp_error_set(err, BP_EINVAL,
                                "pack %s: row %lld group %lld: parameters (%g, %g) not at "
                                "on-disk precision",
                                f->name, (long long)(i / (uint64_t)gpr),
                                (long long)(i % (uint64_t)gpr), (double)params[i].scale,
                                (double)params[i].offset);
        switch (f->kind) {
        case BP_FMT_INT:
            put16(pa + 2 * i, a);
            if (f->asym)
                put16(pa + 2 * ng + 2 * i, b);
            break;
        case BP_FMT_FP8_E4M3: put16(pa + 2 * i, a); break;
        default: pa[i] = (uint8_t)a; break;
        }
    }
    if (f->kind == BP_FMT_NVFP4) {
        uint32_t u = bp__fbits(tensor_param);
        uint8_t *t = pa + ng;
        for (int k = 0; k < 4; k++)
            t[k] = (uint8_t)(u >> (8 * k));
    }
    return BP_OK;
}

int bp_format_unpack(const bp_format *f, int64_t rows, int64_t cols, const uint8_t *in,
                     size_t len, uint16_t *codes, bp_qparams *params, float *tensor_param,
                     bp_error *err)
{
    if (!bp__format_valid(f))
        return bp_error_set(err, BP_EINVAL, "unpack: not a registry format");
    uint64_t need = bp_format_bytes(f, rows, cols);
    if (!need)
        return bp_error_set(err, BP_EUNSUPPORTED, "unpack %s: cannot store %lld x %lld",
                            f->name, (long long)rows, (long long)cols);
    int needp = f->kind != BP_FMT_F16 && f->kind != BP_FMT_BF16;
    if (!in || !codes || (needp && !params))
        return bp_error_set(err, BP_EINVAL, "unpack %s: NULL buffer", f->name);
    if ((uint64_t)len != need)
        return bp_error_set(err, BP_EFORMAT, "unpack %s: %zu bytes, a %lld x %lld tensor needs %llu",
                            f->name, len, (long long)rows, (long long)cols,
                            (unsigned long long)need);

    uint64_t rb = row_code_bytes(f, cols);
    int bits = f->bits;
    uint32_t mask = (bits == 16) ? 0xffffu : (1u << bits) - 1u;
    for (int64_t r = 0; r < rows; r++) {
        uint16_t *c = codes + r * cols;
        const uint8_t *p = in + (uint64_t)r * rb;
        uint64_t acc = 0;
        int nb = 0;
        for (int64_t j = 0; j < cols; j++) {
            while (nb < bits) {
                acc |= (uint64_t)*p++ << nb;
                nb += 8;
            }
            c[j] = (uint16_t)(acc & mask);
            acc >>= bits;
            nb -= bits;
            if (!code_ok(f, c[j]))
                return bp_error_set(err, BP_EFORMAT,
                                    "unpack %s: row %lld col %lld: code 0x%x is not a finite "
                                    "value",
                                    f->name, (long long)r, (long long)j, c[j]);
        }
        if (acc != 0)
            return bp_error_set(err, BP_EFORMAT, "unpack %s: row %lld: padding bits not zero",
                                f->name, (long long)r);
    }

    float tp = 0.0f;
    int64_t gpr = bp_format_groups_per_row(f, cols);
    uint64_t ng = (uint64_t)rows * (uint64_t)gpr;
    const uint8_t *pa = in + (uint64_t)rows * rb;
    if (f->kind == BP_FMT_NVFP4) {
        const uint8_t *t = pa + ng;
        uint32_t u = (uint32_t)t[0] | ((uint32_t)t[1] << 8) | ((uint32_t)t[2] << 16) |
                     ((uint32_t)t[3] << 24);
        tp = bp__bitsf(u);
        if (!(tp >= 0.0f && tp <= FLT_MAX))
            return bp_error_set(err, BP_EFORMAT,
                                "unpack %s: tensor scale %g is not a finite value >= 0",
                                f->name, (double)tp);
    }
    if (tensor_param)
        *tensor_param = tp;
    if (!needp) {
        if (params)
            for (int64_t r = 0; r < rows; r++)
                params[r].scale = params[r].offset = 0.0f;
        return BP_OK;
    }
    for (uint64_t i = 0; i < ng; i++) {
        bp_qparams q = {0.0f, 0.0f};
        const char *bad = NULL;
        switch (f->kind) {
        case BP_FMT_INT:
            q.scale = bp_f16_to_f32(get16(pa + 2 * i));
            if (f->asym)
                q.offset = bp_f16_to_f32(get16(pa + 2 * ng + 2 * i));
            if (!isfinite(q.scale) || !isfinite(q.offset))
                bad = "fp16 scale or offset is not finite";
            break;
        case BP_FMT_FP8_E4M3:
            q.scale = bp_f16_to_f32(get16(pa + 2 * i));
            if (!isfinite(q.scale))
                bad = "fp16 scale is not finite";
            break;
        case BP_FMT_MXFP4:
            if (pa[i] == 0xffu)
                bad = "E8M0 scale 0xff is NaN";
            else if (pa[i] > BP__E8M0_MAX_CODE)
                bad = "E8M0 scale above 2^125 overflows fp32 values";
            else
                q.scale = bp__e8m0_value(pa[i]);
            break;
        case BP_FMT_NVFP4:
            if (bp__e4m3_is_nan(pa[i]))
                bad = "E4M3 block scale is NaN";
            else if (pa[i] & 0x80u)
                bad = "E4M3 block scale is negative";
            else {
                q.scale = bp__e4m3_value(pa[i]) * tp;
                if (!(fabsf(q.scale) * BP__E2M1_MAX <= FLT_MAX))
                    bad = "block scale times tensor scale overflows fp32 values";
            }
            break;
        default: break;
        }
        if (bad)
            return bp_error_set(err, BP_EFORMAT, "unpack %s: row %lld group %lld: %s", f->name,
                                (long long)(i / (uint64_t)gpr), (long long)(i % (uint64_t)gpr),
                                bad);
        params[i] = q;
    }
    return BP_OK;
}
