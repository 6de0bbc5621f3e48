/* Inline kernels shared by the fit, quantize, dequantize and fused-error
 * paths of bp_formats. Every dequantized value is computed by exactly one of
 * these helpers, so the fused sweep path and quantize + dequantize agree bit
 * for bit. Not a public header. */
#ifndef BP_FORMATS_INTERNAL_H
#define BP_FORMATS_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bitplan/format.h"

/* Clipping grid for the int formats: alpha_k = (40 - k) / 40, k = 0..15.
 * Grouped formats walk it from a per-bit-width start; per-row formats
 * search it coarse to fine from every BP__COARSE_STEP-th point
 * (docs/formats.md, "Clipping grid"). */
#define BP__NALPHA 16
#define BP__COARSE_STEP 4
/* Independent float accumulators in the group loops. A fixed lane count
 * fixes the summation order, so the result does not depend on whether (or
 * how wide) the compiler vectorizes. */
#define BP__LANES 16
/* 1.5 * 2^23: (v + M) - M rounds |v| < 2^22 to an integer, ties to even. */
#define BP__RNE_MAGIC 12582912.0f
/* Columns per float block of the per-row error (docs/formats.md). */
#define BP__ERR_BLOCK 128

#define BP__F16_MAX 65504.0f
#define BP__E4M3_MAX 448.0f
#define BP__E2M1_MAX 6.0f
/* Largest E8M0 exponent bitplan writes: 6 * 2^(252-127) stays finite in
 * fp32, 6 * 2^(253-127) would not. */
#define BP__E8M0_MAX_CODE 252

extern const float bp__alpha[BP__NALPHA];

static inline uint32_t bp__fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float bp__bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round a (>= 0 or +NaN) to the grid of a minifloat with mbits mantissa
 * bits whose smallest normal exponent is emin (below it the step stays
 * 2^(emin - mbits): subnormals), ties to even, after clamping a to the
 * float whose bits are `cap` (a power of two above the format's largest
 * value, so saturation happens after rounding). The magic constant
 * 1.5 * 2^(e + 23 - mbits) has an ulp equal to the grid step of a's binade,
 * so one float add rounds and one subtract restores. The clamp is done on
 * the bit pattern (monotonic for a >= 0; a NaN clamps to cap) because GCC
 * vectorizes that form and not the float compare feeding bit operations. */
static inline float bp__round_mini(float a, int mbits, int emin, int32_t cap)
{
    int32_t u = (int32_t)bp__fbits(a);
    u = u < cap ? u : cap;
    int32_t e = u >> 23;
    int32_t lo = emin + 127;
    e = e > lo ? e : lo;
    float m = bp__bitsf(((uint32_t)(e + 23 - mbits) << 23) | 0x400000u);
    float b = bp__bitsf((uint32_t)u);
    return (b + m) - m;
}

/* RNE to fp16, saturating at +-65504 instead of overflowing to infinity.
 * Equals bp_f16_to_f32(bp_f32_to_f16(x)) for every finite |x| <= 65504. */
static inline float bp__f16_round(float x)
{
    float r = bp__round_mini(fabsf(x), 10, -14, 0x48000000 /* 2^17 */);
    r = r < BP__F16_MAX ? r : BP__F16_MAX;
    return copysignf(r, x);
}

/* RNE to bf16, saturating at the largest finite bf16. */
static inline float bp__bf16_round(float x)
{
    uint32_t u = bp__fbits(x);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    if ((u & 0x7fffffffu) == 0x7f800000u)
        u = (u & 0x80000000u) | 0x7f7f0000u;
    return bp__bitsf(u);
}

/* a >= 0 to the E4M3 grid (OCP FP8: bias 7, subnormal step 2^-9), RNE,
 * saturating at 448. */
static inline float bp__e4m3_round(float a)
{
    float r = bp__round_mini(a, 3, -6, 0x44000000 /* 512 */);
    return r < BP__E4M3_MAX ? r : BP__E4M3_MAX;
}

/* a >= 0 to the E2M1 grid {0,.5,1,1.5,2,3,4,6}, RNE, saturating at 6. */
static inline float bp__e2m1_round(float a)
{
    float r = bp__round_mini(a, 1, 0, 0x41000000 /* 8 */);
    return r < BP__E2M1_MAX ? r : BP__E2M1_MAX;
}

/* E4M3 code (sign in bit 7) of a signed value already on the grid. */
static inline uint16_t bp__e4m3_code(float v)
{
    uint32_t s = (bp__fbits(v) >> 31) << 7;
    float r = fabsf(v);
    if (r < 0x1p-6f)
        return (uint16_t)(s | (uint32_t)(r * 512.0f));
    uint32_t u = bp__fbits(r);
    uint32_t e = (u >> 23) - 120u; /* float bias 127 -> E4M3 bias 7 */
    return (uint16_t)(s | (e << 3) | ((u >> 20) & 7u));
}

static inline float bp__e4m3_value(uint16_t c)
{
    uint32_t e = (c >> 3) & 15u, m = c & 7u;
    float v = e ? bp__bitsf(((e + 120u) << 23) | (m << 20)) : (float)m * 0x1p-9f;
    return (c & 0x80u) ? -v : v;
}

static inline int bp__e4m3_is_nan(uint16_t c)
{
    return (c & 0x7fu) == 0x7fu;
}

/* E2M1 code (sign in bit 3) of a signed value already on the grid. */
static inline uint16_t bp__e2m1_code(float v)
{
    uint32_t s = (bp__fbits(v) >> 31) << 3;
    float r = fabsf(v);
    if (r < 1.0f)
        return (uint16_t)(s | (uint32_t)(r * 2.0f));
    uint32_t u = bp__fbits(r);
    uint32_t e = (u >> 23) - 126u; /* float bias 127 -> E2M1 bias 1 */
    return (uint16_t)(s | (e << 1) | ((u >> 22) & 1u));
}

static inline float bp__e2m1_value(uint16_t c)
{
    uint32_t e = (c >> 1) & 3u, m = c & 1u;
    float v = e ? bp__bitsf(((e + 126u) << 23) | (m << 22)) : (float)m * 0.5f;
    return (c & 0x8u) ? -v : v;
}

/* 2^(code - 127) for an E8M0 code 0..254 (code 0 is the fp32 subnormal
 * 2^-127). */
static inline float bp__e8m0_value(uint32_t code)
{
    return code ? bp__bitsf(code << 23) : bp__bitsf(0x00400000u);
}

/* The reciprocal every path multiplies by: 0 for a zero scale, so zero
 * groups give zero codes without dividing by zero. */
static inline float bp__inv(float scale)
{
    /* Divide unconditionally (by 1 for a zero scale) so loops vectorize. */
    float d = scale != 0.0f ? scale : 1.0f;
    float r = 1.0f / d;
    return scale != 0.0f ? r : 0.0f;
}

/* ---- int grid ---------------------------------------------------------- */

/* Signed code as a float in [lo, hi]: clamp first (NaN-safe: a NaN goes to
 * lo) so the magic rounding always sees |v| < 2^22. */
static inline float bp__int_sym_v(float x, float inv, float lo, float hi)
{
    float v = x * inv;
    v = v > lo ? v : lo;
    v = v < hi ? v : hi;
    return (v + BP__RNE_MAGIC) - BP__RNE_MAGIC;
}

static inline float bp__int_asym_v(float x, float inv, float off, float qmax)
{
    float v = (x - off) * inv;
    v = v > 0.0f ? v : 0.0f;
    v = v < qmax ? v : qmax;
    return (v + BP__RNE_MAGIC) - BP__RNE_MAGIC;
}

static inline float bp__int_sym_q(float v, float scale)
{
    return scale * v;
}

static inline float bp__int_asym_q(float v, float scale, float off)
{
    return scale * v + off;
}

/* ---- fp element grids -------------------------------------------------- */

static inline float bp__e4m3_q(float x, float scale, float inv)
{
    float r = bp__e4m3_round(fabsf(x) * inv);
    return scale * copysignf(r, x);
}

static inline float bp__e2m1_q(float x, float scale, float inv)
{
    float r = bp__e2m1_round(fabsf(x) * inv);
    return scale * copysignf(r, x);
}

/* ---- shared non-inline helpers ----------------------------------------- */

/* 1 when f is one of the registry's combinations (format.c). */
int bp__format_valid(const bp_format *f);

/* Elements per parameter group of a row of `cols` (cols for per-row). */
int64_t bp__group_len(const bp_format *f, int64_t cols);

#endif
