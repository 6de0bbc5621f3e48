/* Fit, quantize, dequantize and the fused RTN error kernel.
 *
 * Every group is handled by the same three steps in every path: fit (the
 * parameter search), then per element v = code as a float, q = dequantized
 * value, both through the inline helpers of formats_internal.h. The group
 * loops keep BP__LANES independent float accumulators so their result does
 * not depend on vectorization; the per-row errors are summed in double in
 * column order, four rows interleaved so the dependent adds overlap. */
#include <float.h>
#include <omp.h>
#include <stdlib.h>

#include "bitplan/half.h"
#include "formats_internal.h"

#define L BP__LANES

const float bp__alpha[BP__NALPHA] = {
    40 / 40.0f, 39 / 40.0f, 38 / 40.0f, 37 / 40.0f, 36 / 40.0f, 35 / 40.0f,
    34 / 40.0f, 33 / 40.0f, 32 / 40.0f, 31 / 40.0f, 30 / 40.0f, 29 / 40.0f,
    28 / 40.0f, 27 / 40.0f, 26 / 40.0f, 25 / 40.0f,
};

/* The search and the fused row kernel are built for three instruction sets
 * and picked at load time. The operations (and the fixed lane count that
 * orders every float sum) are the same in each, and there is no FMA
 * (-ffp-contract=off), so all three give bit-identical results; wider
 * vectors only make the same arithmetic faster. Everything below the
 * clone is inlined into it. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(BP_NO_CLONES)
#define HOT __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define HOT
#endif
#define INL static inline __attribute__((always_inline))

/* Rows processed together by the fused kernel (independent double sums). */
#define ROW_BLOCK 4

/* Pairwise tree over the lanes, in a fixed order. */
INL float lane_sum(const float *acc)
{
    float t[L];
    for (int l = 0; l < L; l++)
        t[l] = acc[l];
    for (int w = L / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++)
            t[l] = t[l] + t[l + w];
    return t[0];
}

/* ---- group statistics -------------------------------------------------- */

INL void group_minmax(const float *x, int64_t n, float *mn_out, float *mx_out)
{
    float mn[L], mx[L];
    for (int l = 0; l < L; l++)
        mn[l] = mx[l] = x[0];
    int64_t j = 0;
    for (; j + L <= n; j += L)
#pragma GCC unroll 16
        for (int l = 0; l < L; l++) {
            float v = x[j + l];
            mn[l] = v < mn[l] ? v : mn[l];
            mx[l] = v > mx[l] ? v : mx[l];
        }
    for (; j < n; j++) {
        float v = x[j];
        mn[0] = v < mn[0] ? v : mn[0];
        mx[0] = v > mx[0] ? v : mx[0];
    }
    float a = mn[0], b = mx[0];
    for (int l = 1; l < L; l++) {
        a = mn[l] < a ? mn[l] : a;
        b = mx[l] > b ? mx[l] : b;
    }
    *mn_out = a;
    *mx_out = b;
}

INL float group_absmax(const float *x, int64_t n)
{
    float mn, mx;
    group_minmax(x, n, &mn, &mx);
    float a = fabsf(mn), b = fabsf(mx);
    return a > b ? a : b;
}

/* ---- candidate errors (float, fixed lanes) ------------------------------ */

INL float err_sym(const float *x, int64_t n, float s, float inv, float lo,
                            float hi)
{
    float acc[L] = {0};
    int64_t j = 0;
    for (; j + L <= n; j += L)
#pragma GCC unroll 16
        for (int l = 0; l < L; l++) {
            float e = x[j + l] - bp__int_sym_q(bp__int_sym_v(x[j + l], inv, lo, hi), s);
            acc[l] += e * e;
        }
    for (; j < n; j++) {
        float e = x[j] - bp__int_sym_q(bp__int_sym_v(x[j], inv, lo, hi), s);
        acc[0] += e * e;
    }
    return lane_sum(acc);
}

INL float err_asym(const float *x, int64_t n, float s, float inv, float off,
                             float qmax)
{
    float acc[L] = {0};
    int64_t j = 0;
    for (; j + L <= n; j += L)
#pragma GCC unroll 16
        for (int l = 0; l < L; l++) {
            float e = x[j + l] -
                      bp__int_asym_q(bp__int_asym_v(x[j + l], inv, off, qmax), s, off);
            acc[l] += e * e;
        }
    for (; j < n; j++) {
        float e = x[j] - bp__int_asym_q(bp__int_asym_v(x[j], inv, off, qmax), s, off);
        acc[0] += e * e;
    }
    return lane_sum(acc);
}

INL float err_e2m1(const float *x, int64_t n, float s, float inv)
{
    float acc[L] = {0};
    int64_t j = 0;
    for (; j + L <= n; j += L)
#pragma GCC unroll 16
        for (int l = 0; l < L; l++) {
            float e = x[j + l] - bp__e2m1_q(x[j + l], s, inv);
            acc[l] += e * e;
        }
    for (; j < n; j++) {
        float e = x[j] - bp__e2m1_q(x[j], s, inv);
        acc[0] += e * e;
    }
    return lane_sum(acc);
}

/* ---- fits --------------------------------------------------------------- */

static inline float int_lo(int bits) { return -(float)(1 << (bits - 1)); }
static inline float int_hi(int bits) { return (float)((1 << (bits - 1)) - 1); }
static inline float int_qmax(int bits) { return (float)((1 << bits) - 1); }

/* The search visits alpha = 1 first and then smaller ones, keeping the
 * first strictly smallest error. Before running candidate k's loop it
 * computes a lower bound of that loop's result: the float sum of the
 * squared errors of the group's min and max elements under candidate k,
 * with the loop's own operations. Float addition of non-negative terms is
 * monotone, so the loop's lane sum can never be below that bound; when
 * bound >= best, candidate k cannot win and is skipped. The choice is
 * therefore exactly the exhaustive one, only cheaper (for 5..8 bits the
 * bound usually rules out most clipped candidates). */

/* Symmetric: the signed value of largest magnitude m maps to code
 * -2^(b-1) (so the scale is negative when m > 0), shrunk by alpha. */
INL void fit_int_sym(int bits, const float *x, int64_t n, bp_qparams *p)
{
    float mn, mx;
    group_minmax(x, n, &mn, &mx);
    float m = -mn > mx ? mn : mx;
    float lo = int_lo(bits), hi = int_hi(bits);
    float s[BP__NALPHA], inv[BP__NALPHA];
    for (int k = 0; k < BP__NALPHA; k++) {
        s[k] = bp__f16_round(bp__alpha[k] * m / lo);
        inv[k] = bp__inv(s[k]);
    }
    float best = INFINITY;
    int bi = 0;
    for (int k = 0; k < BP__NALPHA; k++) {
        float e0 = mn - bp__int_sym_q(bp__int_sym_v(mn, inv[k], lo, hi), s[k]);
        float e1 = mx - bp__int_sym_q(bp__int_sym_v(mx, inv[k], lo, hi), s[k]);
        float bound = n > 1 ? e0 * e0 + e1 * e1 : e0 * e0;
        if (!(bound < best))
            continue;
        float e = err_sym(x, n, s[k], inv[k], lo, hi);
        if (e < best) {
            best = e;
            bi = k;
        }
    }
    p->scale = s[bi];
    p->offset = 0.0f;
}

/* Asymmetric: the range [mn, mx] shrunk by alpha about its centre; scale =
 * range / (2^b - 1), offset = low end, both rounded to fp16 before the
 * error of the candidate is measured. */
INL void fit_int_asym(int bits, const float *x, int64_t n, bp_qparams *p)
{
    float mn, mx;
    group_minmax(x, n, &mn, &mx);
    /* Keep mx - mn finite; fp16 parameters saturate far below this. */
    const float lim = 0x1p30f;
    float cmn = mn > -lim ? mn : -lim, cmx = mx < lim ? mx : lim;
    cmn = cmn < lim ? cmn : lim;
    cmx = cmx > -lim ? cmx : -lim;
    float r = cmx - cmn;
    float qmax = int_qmax(bits);
    float s[BP__NALPHA], inv[BP__NALPHA], o[BP__NALPHA];
    for (int k = 0; k < BP__NALPHA; k++) {
        float a = bp__alpha[k];
        s[k] = bp__f16_round(a * r / qmax);
        o[k] = bp__f16_round(cmn + 0.5f * (1.0f - a) * r);
        inv[k] = bp__inv(s[k]);
    }
    float best = INFINITY;
    int bi = 0;
    for (int k = 0; k < BP__NALPHA; k++) {
        float e0 = mn - bp__int_asym_q(bp__int_asym_v(mn, inv[k], o[k], qmax), s[k], o[k]);
        float e1 = mx - bp__int_asym_q(bp__int_asym_v(mx, inv[k], o[k], qmax), s[k], o[k]);
        float bound = n > 1 ? e0 * e0 + e1 * e1 : e0 * e0;
        if (!(bound < best))
            continue;
        float e = err_asym(x, n, s[k], inv[k], o[k], qmax);
        if (e < best) {
            best = e;
            bi = k;
        }
    }
    p->scale = s[bi];
    p->offset = o[bi];
}

/* fp16 scale = absmax / 448 rounded to fp16 and then up to the next fp16
 * when rounding went down, so the largest element never saturates (this
 * also turns a scale that underflows fp16 into the smallest subnormal). */
INL void fit_fp8(const float *x, int64_t n, bp_qparams *p)
{
    float amax = group_absmax(x, n);
    float s = amax / BP__E4M3_MAX;
    float s16 = bp__f16_round(s);
    if (s16 < s && s16 < BP__F16_MAX)
        s16 = bp_f16_to_f32((uint16_t)(bp_f32_to_f16(s16) + 1u));
    p->scale = s16;
    p->offset = 0.0f;
}

/* E8M0 exponent per OCP MX: 2^(floor(log2 amax) - 2), so amax lands in
 * [4, 8) on the E2M1 scale (values above 6 saturate). The next exponent up
 * (no saturation, coarser steps) is also tried; the lower error wins, ties
 * keep the standard exponent. */
INL void fit_mxfp4(const float *x, int64_t n, bp_qparams *p)
{
    float amax = group_absmax(x, n);
    int32_t e = (int32_t)(bp__fbits(amax) >> 23) - 2; /* biased; amax >= 0 */
    e = e > 0 ? e : 0;
    e = e < BP__E8M0_MAX_CODE ? e : BP__E8M0_MAX_CODE;
    float s = bp__e8m0_value((uint32_t)e);
    if (e < BP__E8M0_MAX_CODE && amax > 0.0f) {
        float s2 = bp__e8m0_value((uint32_t)e + 1u);
        float e1 = err_e2m1(x, n, s, bp__inv(s));
        float e2 = err_e2m1(x, n, s2, bp__inv(s2));
        if (e2 < e1)
            s = s2;
    }
    p->scale = s;
    p->offset = 0.0f;
}

/* Block scale e4m3((block amax / 6) / tensor_scale), times the fp32 tensor
 * scale. A tensor scale that is zero, negative or not finite gives zero
 * blocks (the callers validate it; this only keeps the arithmetic safe). */
INL void fit_nvfp4(const float *x, int64_t n, float tp, bp_qparams *p)
{
    p->offset = 0.0f;
    if (!(tp > 0.0f) || !(tp <= FLT_MAX)) {
        p->scale = 0.0f;
        return;
    }
    float amax = group_absmax(x, n);
    float bs = bp__e4m3_round((amax / BP__E2M1_MAX) / tp);
    p->scale = bs * tp;
}

INL void fit(const bp_format *f, const float *x, int64_t n, float tp,
                       bp_qparams *p)
{
    switch (f->kind) {
    case BP_FMT_INT:
        if (f->asym)
            fit_int_asym(f->bits, x, n, p);
        else
            fit_int_sym(f->bits, x, n, p);
        return;
    case BP_FMT_FP8_E4M3: fit_fp8(x, n, p); return;
    case BP_FMT_MXFP4: fit_mxfp4(x, n, p); return;
    case BP_FMT_NVFP4: fit_nvfp4(x, n, tp, p); return;
    case BP_FMT_F16:
    case BP_FMT_BF16: p->scale = 0.0f; p->offset = 0.0f; return;
    }
}

void bp_format_fit_group(const bp_format *f, const float *x, int64_t n,
                         float tensor_param, bp_qparams *out)
{
    if (!out)
        return;
    out->scale = 0.0f;
    out->offset = 0.0f;
    if (!bp__format_valid(f) || !x || n < 1)
        return;
    fit(f, x, n, tensor_param, out);
}

/* ---- dequantized group (fused path) ------------------------------------ */

INL void qdq_params(const bp_format *f, const bp_qparams *p, const float *x,
                              int64_t n, float *q)
{
    float s = p->scale, inv = bp__inv(s), o = p->offset;
    switch (f->kind) {
    case BP_FMT_INT:
        if (f->asym) {
            float qmax = int_qmax(f->bits);
            for (int64_t j = 0; j < n; j++)
                q[j] = bp__int_asym_q(bp__int_asym_v(x[j], inv, o, qmax), s, o);
        } else {
            float lo = int_lo(f->bits), hi = int_hi(f->bits);
            for (int64_t j = 0; j < n; j++)
                q[j] = bp__int_sym_q(bp__int_sym_v(x[j], inv, lo, hi), s);
        }
        return;
    case BP_FMT_FP8_E4M3:
        for (int64_t j = 0; j < n; j++)
            q[j] = bp__e4m3_q(x[j], s, inv);
        return;
    case BP_FMT_MXFP4:
    case BP_FMT_NVFP4:
        for (int64_t j = 0; j < n; j++)
            q[j] = bp__e2m1_q(x[j], s, inv);
        return;
    case BP_FMT_F16:
        for (int64_t j = 0; j < n; j++)
            q[j] = bp__f16_round(x[j]);
        return;
    case BP_FMT_BF16:
        for (int64_t j = 0; j < n; j++)
            q[j] = bp__bf16_round(x[j]);
        return;
    }
}

int64_t bp__group_len(const bp_format *f, int64_t cols)
{
    return f->group > 0 ? f->group : cols;
}

HOT static void qdq_row(const bp_format *f, const float *x, int64_t cols, float tp, float *q)
{
    int64_t g = bp__group_len(f, cols);
    bp_qparams p = {0.0f, 0.0f};
    for (int64_t j = 0; j < cols; j += g) {
        fit(f, x + j, g, tp, &p);
        qdq_params(f, &p, x + j, g, q + j);
    }
}

/* ---- codes ------------------------------------------------------------- */

static inline uint16_t int_mask(int bits) { return (uint16_t)((1u << bits) - 1u); }

static inline int32_t sext(uint16_t c, int bits)
{
    int32_t v = c & int_mask(bits);
    return (v & (1 << (bits - 1))) ? v - (1 << bits) : v;
}

uint16_t bp_format_encode(const bp_format *f, const bp_qparams *p, float x)
{
    if (!bp__format_valid(f))
        return 0;
    if (f->kind == BP_FMT_F16)
        return bp_f32_to_f16(bp__f16_round(x));
    if (f->kind == BP_FMT_BF16)
        return bp_f32_to_bf16(bp__bf16_round(x));
    if (!p)
        return 0;
    float s = p->scale, inv = bp__inv(s);
    switch (f->kind) {
    case BP_FMT_INT:
        if (f->asym)
            return (uint16_t)(int32_t)bp__int_asym_v(x, inv, p->offset, int_qmax(f->bits));
        return (uint16_t)((uint32_t)(int32_t)bp__int_sym_v(x, inv, int_lo(f->bits),
                                                           int_hi(f->bits)) &
                          int_mask(f->bits));
    case BP_FMT_FP8_E4M3:
        return bp__e4m3_code(copysignf(bp__e4m3_round(fabsf(x) * inv), x));
    case BP_FMT_MXFP4:
    case BP_FMT_NVFP4:
        return bp__e2m1_code(copysignf(bp__e2m1_round(fabsf(x) * inv), x));
    case BP_FMT_F16: return bp_f32_to_f16(bp__f16_round(x));
    case BP_FMT_BF16: return bp_f32_to_bf16(bp__bf16_round(x));
    }
    return 0;
}

float bp_format_decode(const bp_format *f, const bp_qparams *p, uint16_t code)
{
    if (!bp__format_valid(f) || (!p && f->kind != BP_FMT_F16 && f->kind != BP_FMT_BF16))
        return NAN;
    switch (f->kind) {
    case BP_FMT_INT:
        if (f->asym)
            return bp__int_asym_q((float)(code & int_mask(f->bits)), p->scale, p->offset);
        return bp__int_sym_q((float)sext(code, f->bits), p->scale);
    case BP_FMT_FP8_E4M3: return p->scale * bp__e4m3_value(code & 0xffu);
    case BP_FMT_MXFP4:
    case BP_FMT_NVFP4: return p->scale * bp__e2m1_value(code & 0xfu);
    case BP_FMT_F16: return bp_f16_to_f32(code);
    case BP_FMT_BF16: return bp_bf16_to_f32(code);
    }
    return NAN;
}

/* Codes of one group under already-fitted params: the same v as the fused
 * path, converted to the stored bit pattern. */
static void encode_group(const bp_format *f, const bp_qparams *p, const float *x, int64_t n,
                         uint16_t *c)
{
    float s = p->scale, inv = bp__inv(s);
    switch (f->kind) {
    case BP_FMT_INT:
        if (f->asym) {
            float qmax = int_qmax(f->bits);
            for (int64_t j = 0; j < n; j++)
                c[j] = (uint16_t)(int32_t)bp__int_asym_v(x[j], inv, p->offset, qmax);
        } else {
            float lo = int_lo(f->bits), hi = int_hi(f->bits);
            uint32_t mask = int_mask(f->bits);
            for (int64_t j = 0; j < n; j++)
                c[j] = (uint16_t)((uint32_t)(int32_t)bp__int_sym_v(x[j], inv, lo, hi) & mask);
        }
        return;
    default:
        for (int64_t j = 0; j < n; j++)
            c[j] = bp_format_encode(f, p, x[j]);
        return;
    }
}

/* ---- row kernels ------------------------------------------------------- */

static int check_args(const bp_format *f, const void *a, const void *b, int64_t nrows,
                      int64_t cols, float tp, bp_error *err)
{
    if (!bp__format_valid(f))
        return bp_error_set(err, BP_EINVAL, "format: not a registry format");
    if (!a || !b)
        return bp_error_set(err, BP_EINVAL, "format %s: NULL buffer", f->name);
    if (nrows < 0 || cols < 1)
        return bp_error_set(err, BP_EINVAL, "format %s: bad shape %lld x %lld", f->name,
                            (long long)nrows, (long long)cols);
    if (!bp_format_supports(f, nrows > 0 ? nrows : 1, cols))
        return bp_error_set(err, BP_EUNSUPPORTED,
                            "format %s: cannot store rows of %lld columns (group %d)",
                            f->name, (long long)cols, f->group);
    if (f->kind == BP_FMT_NVFP4 && !(tp >= 0.0f && tp <= FLT_MAX))
        return bp_error_set(err, BP_EINVAL,
                            "format %s: tensor scale %g is not a finite value >= 0", f->name,
                            (double)tp);
    return BP_OK;
}

int bp_format_quantize_rows(const bp_format *f, const float *w, int64_t nrows, int64_t cols,
                            float tensor_param, uint16_t *codes, bp_qparams *params,
                            bp_error *err)
{
    int rc = check_args(f, w, codes, nrows, cols, tensor_param, err);
    if (rc)
        return rc;
    if (!params)
        return bp_error_set(err, BP_EINVAL, "format %s: NULL params", f->name);
    /* Weights come from files: report the first non-finite one rather
     * than writing codes for it. */
    for (int64_t r = 0; r < nrows; r++) {
        uint32_t bad = 0;
        const float *x = w + r * cols;
        for (int64_t j = 0; j < cols; j++)
            bad |= (bp__fbits(x[j]) & 0x7f800000u) == 0x7f800000u;
        if (bad)
            return bp_error_set(err, BP_EINVAL, "format %s: row %lld: non-finite weight",
                                f->name, (long long)r);
    }
    int64_t g = bp__group_len(f, cols), gpr = bp_format_groups_per_row(f, cols);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < nrows; r++) {
        for (int64_t k = 0; k < gpr; k++) {
            const float *x = w + r * cols + k * g;
            bp_qparams *p = params + r * gpr + k;
            fit(f, x, g, tensor_param, p);
            encode_group(f, p, x, g, codes + r * cols + k * g);
        }
    }
    return BP_OK;
}

void bp_format_dequantize_rows(const bp_format *f, const uint16_t *codes,
                               const bp_qparams *params, int64_t nrows, int64_t cols,
                               float *out)
{
    if (!bp__format_valid(f) || !codes || !out || nrows < 1 || cols < 1)
        return;
    int needp = f->kind != BP_FMT_F16 && f->kind != BP_FMT_BF16;
    if (needp && !params)
        return;
    int64_t g = bp__group_len(f, cols), gpr = bp_format_groups_per_row(f, cols);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < nrows; r++) {
        for (int64_t k = 0; k < gpr; k++) {
            const uint16_t *c = codes + r * cols + k * g;
            float *o = out + r * cols + k * g;
            const bp_qparams *p = needp ? params + r * gpr + k : NULL;
            for (int64_t j = 0; j < g; j++)
                o[j] = bp_format_decode(f, p, c[j]);
        }
    }
}

/* Squared errors of nr rows in double, column order within each row; four
 * rows at a time so four dependent add chains run side by side. Each row's
 * sum is the same serial sum whichever branch handles it. */
static void rows_error(const float *w, const float *q, int64_t nr, int64_t cols,
                       const float *colw, double *sse, double *wsse)
{
    int64_t i = 0;
    for (; i + 4 <= nr; i += 4) {
        const float *w0 = w + i * cols, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
        const float *q0 = q + i * cols, *q1 = q0 + cols, *q2 = q1 + cols, *q3 = q2 + cols;
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        if (colw) {
            double t0 = 0, t1 = 0, t2 = 0, t3 = 0;
            for (int64_t j = 0; j < cols; j++) {
                double c = colw[j];
                double d0 = (double)w0[j] - (double)q0[j];
                double d1 = (double)w1[j] - (double)q1[j];
                double d2 = (double)w2[j] - (double)q2[j];
                double d3 = (double)w3[j] - (double)q3[j];
                d0 *= d0;
                d1 *= d1;
                d2 *= d2;
                d3 *= d3;
                s0 += d0;
                s1 += d1;
                s2 += d2;
                s3 += d3;
                t0 += c * d0;
                t1 += c * d1;
                t2 += c * d2;
                t3 += c * d3;
            }
            wsse[i] = t0;
            wsse[i + 1] = t1;
            wsse[i + 2] = t2;
            wsse[i + 3] = t3;
        } else {
            for (int64_t j = 0; j < cols; j++) {
                double d0 = (double)w0[j] - (double)q0[j];
                double d1 = (double)w1[j] - (double)q1[j];
                double d2 = (double)w2[j] - (double)q2[j];
                double d3 = (double)w3[j] - (double)q3[j];
                s0 += d0 * d0;
                s1 += d1 * d1;
                s2 += d2 * d2;
                s3 += d3 * d3;
            }
        }
        sse[i] = s0;
        sse[i + 1] = s1;
        sse[i + 2] = s2;
        sse[i + 3] = s3;
    }
    for (; i < nr; i++) {
        const float *wr = w + i * cols, *qr = q + i * cols;
        double s = 0, t = 0;
        for (int64_t j = 0; j < cols; j++) {
            double d = (double)wr[j] - (double)qr[j];
            d *= d;
            s += d;
            if (colw)
                t += (double)colw[j] * d;
        }
        sse[i] = s;
        if (colw)
            wsse[i] = t;
    }
}

int bp_format_rtn_error_rows(const bp_format *f, const float *w, int64_t nrows, int64_t cols,
                             float tensor_param, const float *colw, double *sse, double *wsse,
                             float *qdq, bp_error *err)
{
    int rc = check_args(f, w, sse, nrows, cols, tensor_param, err);
    if (rc)
        return rc;
    if (colw && !wsse)
        return bp_error_set(err, BP_EINVAL, "format %s: colw given without wsse", f->name);
    if (colw) {
        for (int64_t j = 0; j < cols; j++)
            if (!(colw[j] >= 0.0f && colw[j] <= FLT_MAX))
                return bp_error_set(err, BP_EINVAL,
                                    "format %s: column weight %lld is %g, not finite >= 0",
                                    f->name, (long long)j, (double)colw[j]);
    }
    if (nrows == 0)
        return BP_OK;
    int nt = omp_get_max_threads();
    float *scratch = NULL;
    if (!qdq) {
        scratch = malloc((size_t)nt * ROW_BLOCK * (size_t)cols * sizeof *scratch);
        if (!scratch)
            return bp_error_set(err, BP_ENOMEM, "format %s: out of memory for %lld columns",
                                f->name, (long long)cols);
    }
    int64_t nblk = (nrows + ROW_BLOCK - 1) / ROW_BLOCK;
#pragma omp parallel num_threads(nt)
    {
        float *mine = scratch ? scratch + (size_t)omp_get_thread_num() * ROW_BLOCK * cols : NULL;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < nblk; b++) {
            int64_t r0 = b * ROW_BLOCK;
            int64_t nr = nrows - r0 < ROW_BLOCK ? nrows - r0 : ROW_BLOCK;
            float *qb = qdq ? qdq + r0 * cols : mine;
            for (int64_t i = 0; i < nr; i++)
                qdq_row(f, w + (r0 + i) * cols, cols, tensor_param, qb + i * cols);
            rows_error(w + r0 * cols, qb, nr, cols, colw, sse + r0, colw ? wsse + r0 : NULL);
        }
    }
    free(scratch);
    if (wsse && !colw)
        for (int64_t r = 0; r < nrows; r++)
            wsse[r] = NAN;
    /* Every dequantized value is finite for finite input, so a non-finite
     * sum means a non-finite weight. */
    for (int64_t r = 0; r < nrows; r++)
        if (!isfinite(sse[r]))
            return bp_error_set(err, BP_EINVAL, "format %s: row %lld: non-finite weight",
                                f->name, (long long)r);
    return BP_OK;
}
