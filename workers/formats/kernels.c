/* Fit, quantize, dequantize and the fused RTN error kernel.
 *
 * Every group is handled by the same three steps in every path: fit (the
 * parameter search), then per element v = code as a float, q = dequantized
 * value, both through the inline helpers of formats_internal.h. The group
 * loops keep BP__LANES independent float accumulators so their result does
 * not depend on vectorization; the per-row errors are summed in float per
 * block of BP__ERR_BLOCK columns and in double across blocks, also in
 * BP__LANES fixed lanes (err_block, shared by the fused kernel and
 * bp_format_error_rows). */
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

/* The hot loops use GCC vector extensions: one vf is the L lanes of a float
 * accumulator, so lane l of every vector operation is exactly the scalar
 * operation on element l, whatever instructions the clone maps it to (one
 * zmm, two ymm or four xmm). This fixes the summation order by
 * construction and does not depend on the auto-vectorizer. These types
 * never cross a call boundary (everything using them is inlined), so the
 * ABI note GCC gives for 64-byte vectors without AVX-512 does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float vf __attribute__((vector_size(4 * L)));
typedef int32_t vi __attribute__((vector_size(4 * L)));
typedef float vf8 __attribute__((vector_size(4 * L / 2)));
typedef double vd8 __attribute__((vector_size(8 * L / 2)));

INL vf vload(const float *p)
{
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

INL void vstore(float *p, vf v)
{
    memcpy(p, &v, sizeof v);
}

INL vf vsplat(float a)
{
    vf v;
    for (int l = 0; l < L; l++)
        v[l] = a;
    return v;
}

INL vi vsplati(int32_t a)
{
    vi v;
    for (int l = 0; l < L; l++)
        v[l] = a;
    return v;
}

/* m ? a : b per lane (m: all ones or zero, from a vector compare). */
#define VSEL(m, a, b) ((vf)(((m) & (vi)(a)) | (~(m) & (vi)(b))))
#define VSELI(m, a, b) (((m) & (a)) | (~(m) & (b)))

/* a > b ? a : b and a < b ? a : b per lane. Written as a lane loop so GCC
 * sees a float select with the compared operands, which it maps to
 * (v)maxps / (v)minps: their definition (the second operand unless the
 * first is strictly greater / smaller, so a NaN or equal pair gives b) is
 * exactly this select, signed zeros and NaN included. A compare feeding
 * bit operations (VSEL) would stay a compare and a blend. */
INL vf vmaxf(vf a, vf b)
{
    vf r;
    for (int l = 0; l < L; l++)
        r[l] = a[l] > b[l] ? a[l] : b[l];
    return r;
}

INL vf vminf(vf a, vf b)
{
    vf r;
    for (int l = 0; l < L; l++)
        r[l] = a[l] < b[l] ? a[l] : b[l];
    return r;
}

/* Lane masks (all ones / zero) and integer min / max, written as lane
 * loops for the same reason as vmaxf: GCC maps these to one compare or
 * (v)pminsd / (v)pmaxsd in every clone, where the equivalent vector
 * comparison expressions were partly lowered to scalar code. */
INL vi vltf(vf a, vf b)
{
    vi r;
    for (int l = 0; l < L; l++)
        r[l] = a[l] < b[l] ? -1 : 0;
    return r;
}

INL vi veqf(vf a, vf b)
{
    vi r;
    for (int l = 0; l < L; l++)
        r[l] = a[l] == b[l] ? -1 : 0;
    return r;
}

INL vi vlti(vi a, vi b)
{
    vi r;
    for (int l = 0; l < L; l++)
        r[l] = a[l] < b[l] ? -1 : 0;
    return r;
}

INL vi veqi(vi a, int32_t b)
{
    vi r;
    for (int l = 0; l < L; l++)
        r[l] = a[l] == b ? -1 : 0;
    return r;
}

INL vi vmini(vi a, vi b)
{
    vi r;
    for (int l = 0; l < L; l++)
        r[l] = a[l] < b[l] ? a[l] : b[l];
    return r;
}

INL vi vmaxi(vi a, vi b)
{
    vi r;
    for (int l = 0; l < L; l++)
        r[l] = a[l] > b[l] ? a[l] : b[l];
    return r;
}

/* Lane i of v in every lane (one permute, no trip through memory). */
INL vf vlane(vf v, int i)
{
    return __builtin_shuffle(v, vsplati(i));
}

/* ---- group statistics -------------------------------------------------- */

INL void group_minmax(const float *x, int64_t n, float *mn_out, float *mx_out)
{
    vf vmn = vsplat(x[0]), vmx = vmn;
    int64_t j = 0;
    for (; j + L <= n; j += L) {
        vf v = vload(x + j);
        vmn = vminf(v, vmn);
        vmx = vmaxf(v, vmx);
    }
    float mn[L], mx[L];
    memcpy(mn, &vmn, sizeof mn);
    memcpy(mx, &vmx, sizeof mx);
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

/* ---- candidate passes (float, fixed lanes) ------------------------------ */

/* ---- element kernels, L lanes at a time --------------------------------
 * Each is the vector form of a scalar helper of formats_internal.h with the
 * same result for every input, NaN and signed zeros included: the same
 * operations in the same order (the clamps a > b ? a : b and a < b ? a : b
 * become vmaxf / vminf, i.e. maxps / minps), except the int code, below. */

/* The bit pattern of magic + rne(clamp(y, lo, hi)). lo and hi are
 * integers, so clamping after rounding gives the same code, and rounding
 * first lets the clamp be an integer min / max on the bit patterns of
 * y + magic, off the float add pipes that bound the passes (about 7 %
 * faster than maxps / minps). For |y| < 2^22, y + magic is magic + rne(y)
 * exactly; a larger y gives a pattern above magic + hi (positive sums of
 * at least 2^24) or below magic + lo (sums under 2^23, negative ones
 * included), so it clamps as it should. (vf)t - magic is then the code,
 * bit for bit as (clamp(y) + magic) - magic (never -0). */
INL vi v_code_bits(vf y, vi ilo, vi ihi)
{
    return vmini(vmaxi((vi)(y + vsplat(BP__RNE_MAGIC)), ilo), ihi);
}

/* The bit patterns of magic + c, the bounds of v_code_bits. */
INL vi v_code_lim(vf c)
{
    return (vi)(c + vsplat(BP__RNE_MAGIC));
}

INL vf v_int_sym_q(vf x, vf inv, vf lo, vf hi, vf s)
{
    vi t = v_code_bits(x * inv, v_code_lim(lo), v_code_lim(hi));
    return s * ((vf)t - vsplat(BP__RNE_MAGIC));
}

INL vf v_int_asym_q(vf x, vf inv, vf off, vf qmax, vf s)
{
    vi t = v_code_bits((x - off) * inv, v_code_lim(vsplat(0.0f)), v_code_lim(qmax));
    return s * ((vf)t - vsplat(BP__RNE_MAGIC)) + off;
}

/* bp__e2m1_q: scale * copysign(e2m1_round(|x| * inv), x). */
INL vf v_e2m1_q(vf x, vf inv, vf s)
{
    const vi sign = vsplati((int32_t)0x80000000u);
    const vi cap = vsplati(0x41000000 /* 8.0f */), elo = vsplati(0 + 127);
    const vf six = vsplat(BP__E2M1_MAX);
    vi xb = (vi)x;
    vf a = (vf)(xb & ~sign) * inv;
    vi u = vmini((vi)a, cap);
    vi e = vmaxi(u >> 23, elo);
    vf m = (vf)(((e + (23 - 1)) << 23) | vsplati(0x400000));
    vf r = ((vf)u + m) - m;
    r = vminf(r, six);
    r = (vf)(((vi)r & ~sign) | (xb & sign));
    return s * r;
}

typedef float vf4 __attribute__((vector_size(16)));
typedef float vf2 __attribute__((vector_size(8)));

/* The lane_sum tree on a vector: t[l] + t[l + w] for w = L/2 .. 1, each
 * level one add of the two halves. */
INL float vsum(vf acc)
{
    vf8 a8, b8;
    memcpy(&a8, &acc, sizeof a8);
    memcpy(&b8, (const char *)&acc + sizeof a8, sizeof b8);
    a8 = a8 + b8;
    vf4 a4, b4;
    memcpy(&a4, &a8, sizeof a4);
    memcpy(&b4, (const char *)&a8 + sizeof a4, sizeof b4);
    a4 = a4 + b4;
    vf2 a2, b2;
    memcpy(&a2, &a4, sizeof a2);
    memcpy(&b2, (const char *)&a4 + sizeof a2, sizeof b2);
    a2 = a2 + b2;
    return a2[0] + a2[1];
}

/* The lane sum of an accumulator after the last m (< L) elements' squared
 * errors x - q have been added to lanes 0 .. m-1. */
INL float vlane_sum(vf acc, const float *x, const float *q, int64_t m)
{
    if (m > 0) {
        float a[L];
        memcpy(a, &acc, sizeof a);
        for (int64_t l = 0; l < m; l++) {
            float e = x[l] - q[l];
            a[l] += e * e;
        }
        memcpy(&acc, a, sizeof a);
    }
    return vsum(acc);
}

/* The lane sums of L accumulators at once: lane i of the result is
 * accumulator i's lanes summed by exactly vsum's tree (l += l + w for
 * w = 8, 4, 2, 1), with the additions of all accumulators done together:
 * each level adds the two halves of pairs of vectors, packed two to one
 * by shuffles, so 15 adds and 30 shuffles replace 16 dependent chains. */
INL vf vsum16(const vf *a)
{
    const vi lo1 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
             hi1 = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
             lo2 = {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
             hi2 = {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},
             lo3 = {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
             hi3 = {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},
             lo4 = {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},
             hi4 = {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31};
    vf v[8], w[4], x[2];
    /* v[g]: halves = groups g, g + 8; w[g]: quarters = g, g+4, g+8, g+12;
     * x[g]: eighths = g, g + 2, ..., g + 14; the result in group order. */
    for (int g = 0; g < 8; g++)
        v[g] = __builtin_shuffle(a[g], a[g + 8], lo1) + __builtin_shuffle(a[g], a[g + 8], hi1);
    for (int g = 0; g < 4; g++)
        w[g] = __builtin_shuffle(v[g], v[g + 4], lo2) + __builtin_shuffle(v[g], v[g + 4], hi2);
    for (int g = 0; g < 2; g++)
        x[g] = __builtin_shuffle(w[g], w[g + 2], lo3) + __builtin_shuffle(w[g], w[g + 2], hi3);
    return __builtin_shuffle(x[0], x[1], lo4) + __builtin_shuffle(x[0], x[1], hi4);
}

/* The last r < L elements of pass_int, into lanes 0 .. r - 1 of acc. */
INL vf pass_int_tail(vf acc, const float *x, int64_t r, vf vinv, vf voff, vf vlo, vf vhi,
                     const int asym)
{
    float a[L], inv = vinv[0], off = voff[0], lo = vlo[0], hi = vhi[0];
    memcpy(a, &acc, sizeof a);
    for (int64_t l = 0; l < r; l++) {
        float y = asym ? (x[l] - off) * inv : x[l] * inv;
        float v = y > lo ? y : lo;
        v = v < hi ? v : hi;
        v = (v + BP__RNE_MAGIC) - BP__RNE_MAGIC;
        float e = y - v;
        a[l] += e * e;
    }
    memcpy(&acc, a, sizeof a);
    return acc;
}

/* One pass of an int candidate over a group, in code units: sum_j (y - v)^2
 * with y = (x - off) * inv (sym: x * inv) and v = rne(clamp(y, lo, hi)),
 * in float, element j into lane j mod L, lanes reduced by vsum. The last
 * n mod L elements go to lanes 0 .. with the same scalar operations. */
INL vf pass_int(const float *x, int64_t n, vf vinv, vf voff, vf vlo, vf vhi, const int asym)
{
    const vf magic = vsplat(BP__RNE_MAGIC);
    vf acc = vsplat(0.0f);
    const vi ilo = v_code_lim(vlo), ihi = v_code_lim(vhi);
    int64_t j = 0;
    for (; j + L <= n; j += L) {
        vf xv = vload(x + j);
        vf y = asym ? (xv - voff) * vinv : xv * vinv;
        vf e = y - ((vf)v_code_bits(y, ilo, ihi) - magic);
        acc += e * e;
    }
    return j < n ? pass_int_tail(acc, x + j, n - j, vinv, voff, vlo, vhi, asym) : acc;
}

/* pass_int of three candidates (parameter lanes 0) over the same group,
 * sharing the loads: the same operations per candidate. */
INL void pass_int3(const float *x, int64_t n, const vf *vinv, const vf *voff, vf vlo, vf vhi,
                   const int asym, vf *out)
{
    const vf magic = vsplat(BP__RNE_MAGIC);
    vf a0 = vsplat(0.0f), a1 = a0, a2 = a0;
    const vi ilo = v_code_lim(vlo), ihi = v_code_lim(vhi);
    int64_t j = 0;
    for (; j + L <= n; j += L) {
        vf xv = vload(x + j);
        vf y0 = asym ? (xv - voff[0]) * vinv[0] : xv * vinv[0];
        vf y1 = asym ? (xv - voff[1]) * vinv[1] : xv * vinv[1];
        vf y2 = asym ? (xv - voff[2]) * vinv[2] : xv * vinv[2];
        vf e0 = y0 - ((vf)v_code_bits(y0, ilo, ihi) - magic);
        vf e1 = y1 - ((vf)v_code_bits(y1, ilo, ihi) - magic);
        vf e2 = y2 - ((vf)v_code_bits(y2, ilo, ihi) - magic);
        a0 += e0 * e0;
        a1 += e1 * e1;
        a2 += e2 * e2;
    }
    if (j < n) {
        a0 = pass_int_tail(a0, x + j, n - j, vinv[0], voff[0], vlo, vhi, asym);
        a1 = pass_int_tail(a1, x + j, n - j, vinv[1], voff[1], vlo, vhi, asym);
        a2 = pass_int_tail(a2, x + j, n - j, vinv[2], voff[2], vlo, vhi, asym);
    }
    out[0] = a0;
    out[1] = a1;
    out[2] = a2;
}

INL float pass_e2m1(const float *x, int64_t n, float s, float inv, float *q, const int store)
{
    vf acc = vsplat(0.0f), vs = vsplat(s), vinv = vsplat(inv);
    int64_t j = 0;
    for (; j + L <= n; j += L) {
        vf xv = vload(x + j);
        vf qv = v_e2m1_q(xv, vinv, vs);
        if (store)
            vstore(q + j, qv);
        vf e = xv - qv;
        acc += e * e;
    }
    float t[L];
    for (int64_t l = 0; j + l < n; l++) {
        t[l] = bp__e2m1_q(x[j + l], s, inv);
        if (store)
            q[j + l] = t[l];
    }
    return vlane_sum(acc, x + j, t, n - j);
}

/* ---- fits --------------------------------------------------------------- */

static inline float int_lo(int bits) { return -(float)(1 << (bits - 1)); }
static inline float int_hi(int bits) { return (float)((1 << (bits - 1)) - 1); }
static inline float int_qmax(int bits) { return (float)((1 << bits) - 1); }

/* The int clipping search (docs/formats.md, "Clipping grid"): candidates
 * on the grid alpha_k = (40 - k) / 40, k = 0..15, visited by a fixed
 * schedule of four (most grouped formats, fixed_centre), a per-group walk
 * (the other grouped formats) or coarse to fine (per-row formats). "Best" is the smallest search error so far, ties going to the
 * smaller k (the larger alpha).
 *
 * The search error of a candidate is measured in code units, where the
 * pass is cheapest: s^2 * sum_j (y_j - v_j)^2 with y = (x - offset) / scale
 * (times inv, as quantization computes it) and v its clamped, rounded code;
 * the float sum uses the fixed lanes of pass_int. A candidate whose scale
 * rounds to 0 has error +inf (only fully degenerate groups, where every
 * candidate is the same, end on one).
 *
 * Before a candidate's pass, a lower bound of its error is computed from
 * the group's min and max elements with the pass's own operations: float
 * addition and multiplication of non-negative terms are monotone, so the
 * pass cannot return less, and a candidate whose bound cannot win is
 * skipped without changing the choice.
 *
 * Symmetric: the signed value of largest magnitude m maps to code
 * -2^(b-1) (so the scale is negative when m > 0), shrunk by alpha.
 * Asymmetric: the range [mn, mx] shrunk by alpha about its centre; scale =
 * range / (2^b - 1), offset = low end, both rounded to fp16 before the
 * error of the candidate is measured. */

/* Which side of the centre a probe tries first: +1 toward more clipping
 * (2-bit formats, whose best alpha is usually small), -1 toward less. */
static inline int probe_dir(int bits) { return bits <= 2 ? 1 : -1; }

/* Where the walk of a grouped format starts, per bit width, group size and
 * symmetry: the start that gave the lowest total error of the step-1 walk
 * below on Gaussian weights with rare outliers (docs/formats.md), which is
 * about the median best k, so the walk is short. */
static inline int walk_start(int bits, int asym, int group)
{
    /* [asym][bits 2, 3, 4, 5][group 32, 64, 128]; 6- and 8-bit start at 0. */
    static const signed char k0[2][4][3] = {
        {{7, 8, 10}, {5, 6, 9}, {2, 3, 5}, {0, 0, 2}},
        {{11, 13, 13}, {4, 6, 8}, {2, 2, 3}, {0, 0, 2}},
    };
    if (bits < 2 || bits > 5)
        return 0;
    int gi = group <= 32 ? 0 : group <= 64 ? 1 : 2;
    return k0[asym != 0][bits - 2][gi];
}

/* The centre kc of the fixed schedule (docs/formats.md): kc - 2, kc, kc + 2,
 * then one probe placed by the parabola through their errors. Four
 * candidates and four lockstep steps for every group, against the walk's
 * block-wide longest walk (6-10 steps). -1: the format keeps the walk,
 * because four candidates cost it more than +0.3 % error (symmetric 2-bit
 * and 3-bit g64 / g128, whose best k spreads widest) or because its walk
 * is already about that short (5 bits and up). */
static inline int fixed_centre(int bits, int asym, int group)
{
    /* [asym][bits 2, 3, 4][group 32, 64, 128]; each in 2 .. 13. */
    static const signed char kc[2][3][3] = {
        {{-1, -1, -1}, {3, -1, -1}, {2, 2, 4}},
        {{11, 12, 13}, {3, 5, 7}, {2, 2, 3}},
    };
    if (bits < 2 || bits > 4)
        return -1;
    int gi = group <= 32 ? 0 : group <= 64 ? 1 : 2;
    return kc[asym != 0][bits - 2][gi];
}

/* Phases of a group's search (vector lanes hold one group each):
 *   W_FWD   probe c + step * dir; a win walks on (grouped formats) or ends
 *           the step; otherwise try W_BWD
 *   W_BWD   probe c - step * dir (dir flipped); a win walks on or ends the
 *           step; otherwise the step ends
 *   W_WALK  keep probing one step further while each probe wins
 * Per-row formats start with a step of 2, whose end starts a step of 1
 * around the best (W_FWD, dir reset); grouped formats start with the step
 * of 1. The end of a step of 1 ends the search (W_DONE). A probe outside
 * the grid, or skipped by its bound, counts as not winning. */
enum { W_FWD, W_BWD, W_WALK, W_DONE };

/* ---- the search for L groups at once ------------------------------------
 * The search runs for up to L groups side by side, lane i of every vector
 * below belonging to group i: the candidate parameters and bounds are
 * computed for all groups with vector operations (lane i is exactly the
 * scalar operation on group i), and only the passes run group by group.
 * A group's choices therefore do not depend on which other groups share
 * its block. */

INL vi vbits(vf v) { return (vi)v; }

/* bp__round_mini on L lanes (a >= 0). */
INL vf v_round_mini(vf a, int mbits, int emin, int32_t cap)
{
    vi u = vmini(vbits(a), vsplati(cap));
    vi e = vmaxi(u >> 23, vsplati(emin + 127));
    vf m = (vf)(((e + (23 - mbits)) << 23) | vsplati(0x400000));
    return ((vf)u + m) - m;
}

INL vf v_f16_round(vf x)
{
    const vi sign = vsplati((int32_t)0x80000000u);
    const vf fmax = vsplat(BP__F16_MAX);
    vf r = v_round_mini((vf)(vbits(x) & ~sign), 10, -14, 0x48000000);
    r = vminf(r, fmax);
    return (vf)((vbits(r) & ~sign) | (vbits(x) & sign));
}

INL vf v_inv(vf s)
{
    const vf zero = vsplat(0.0f), one = vsplat(1.0f);
    vi nz = ~veqf(s, zero);
    vf d = VSEL(nz, s, one);
    vf r = one / d;
    return VSEL(nz, r, zero);
}

/* The code of y (already scaled) as a float: clamp to [lo, hi], then RNE. */
INL vf v_code(vf y, vf lo, vf hi)
{
    const vf magic = vsplat(BP__RNE_MAGIC);
    vf v = vmaxf(y, lo);
    v = vminf(v, hi);
    return (v + magic) - magic;
}

/* The running state of the search of a block of up to L groups, lane i
 * for group i: the group statistics the candidates derive from, and the
 * best candidate so far (search error, scale, offset, k; k = -1 before
 * the first visit). */
typedef struct int_blk {
    vf mn, mx, m, r;
    vf best, bs, bo;
    vi bi;
} int_blk;

/* Visit candidate k in every lane of ok, keeping the best: returns the
 * lanes where it won. */
/* Parameters of candidate k in every lane: scale s, offset o, 1/s. */
INL void cand_params(const int asym, vi k, const int_blk *b, vf vqmax, vf clo, vf *s, vf *o,
                     vf *inv)
{
    const vf half = vsplat(0.5f), one = vsplat(1.0f), forty = vsplat(40.0f);
    /* alpha_k = (40 - k) / 40, as the table holds it. */
    vf a = __builtin_convertvector(40 - k, vf) / forty;
    if (asym) {
        *s = v_f16_round(a * b->r / vqmax);
        *o = v_f16_round(b->m + half * (one - a) * b->r);
    } else {
        *s = v_f16_round(a * b->m / clo);
        *o = vsplat(0.0f);
    }
    *inv = v_inv(s[0]);
}

/* The search error of candidate (k, s, o) from its lane sums acc (+inf
 * when s is 0), kept as the best in the lanes of ok where it wins: returns
 * those lanes. */
INL vi keep(int_blk *b, vi k, vi ok, vf s, vf o, vf e, vf *err)
{
    const vf zero = vsplat(0.0f);
    e = VSEL(~veqf((vf)(vbits(s) & vsplati(0x7fffffff)), zero), e, vsplat(INFINITY));
    if (err)
        *err = e;
    vi first = vlti(b->bi, vsplati(0)), kfirst = vlti(k, b->bi);
    vi won = ok & (first | vltf(e, b->best) | (veqf(e, b->best) & kfirst));
    b->best = VSEL(won, e, b->best);
    b->bs = VSEL(won, s, b->bs);
    b->bo = VSEL(won, o, b->bo);
    b->bi = VSELI(won, k, b->bi);
    return won;
}

/* Visit candidate k in every lane of ok, keeping the best: returns the
 * lanes where it won. */
INL vi visit(const int asym, const float *x, int64_t g, vi k, vi ok, int_blk *b, vf vqmax,
             vf clo, vf chi)
{
    vf s, o, inv;
    cand_params(asym, k, b, vqmax, clo, &s, &o, &inv);
    vf s2 = s * s;
    vf y0 = asym ? (b->mn - o) * inv : b->mn * inv, y1 = asym ? (b->mx - o) * inv : b->mx * inv;
    vf e0 = y0 - v_code(y0, clo, chi), e1 = y1 - v_code(y1, clo, chi);
    vf bound = s2 * (g > 1 ? e0 * e0 + e1 * e1 : e0 * e0);
    vi first = vlti(b->bi, vsplati(0)), kfirst = vlti(k, b->bi);
    ok &= first | vltf(bound, b->best) | (veqf(bound, b->best) & kfirst);
    /* The passes of the groups whose candidate may win; the branch per
     * group is on a lane of a register, and the accumulators stay in
     * registers (constant indices after unrolling). */
    vf acc[L];
#pragma GCC unroll 16
    for (int i = 0; i < L; i++) {
        acc[i] = vsplat(0.0f);
        if (ok[i])
            acc[i] = pass_int(x + i * g, g, vlane(inv, i), vlane(o, i), clo, chi, asym);
    }
    return keep(b, k, ok, s, o, s2 * vsum16(acc), NULL);
}

/* Visit candidates k[0], k[1], k[2] in that order in every lane of ok,
 * unpruned, with one pass per group over the three (the same sums as three
 * visits); their search errors go to err[]. */
INL void visit3(const int asym, const float *x, int64_t g, const vi *k, vi ok, int_blk *b,
                vf vqmax, vf clo, vf chi, vf *err)
{
    vf s[3], o[3], inv[3];
    for (int c = 0; c < 3; c++)
        cand_params(asym, k[c], b, vqmax, clo, &s[c], &o[c], &inv[c]);
    vf acc[3][L];
#pragma GCC unroll 16
    for (int i = 0; i < L; i++) {
        vf li[3] = {vlane(inv[0], i), vlane(inv[1], i), vlane(inv[2], i)},
           lo[3] = {vlane(o[0], i), vlane(o[1], i), vlane(o[2], i)}, r[3];
        r[0] = r[1] = r[2] = vsplat(0.0f);
        if (ok[i])
            pass_int3(x + i * g, g, li, lo, clo, chi, asym, r);
        acc[0][i] = r[0];
        acc[1][i] = r[1];
        acc[2][i] = r[2];
    }
    for (int c = 0; c < 3; c++)
        keep(b, k[c], ok, s[c], o[c], (s[c] * s[c]) * vsum16(acc[c]), &err[c]);
}

/* Lane i of the result: min (max) over the lanes of a[i] (b[i]), by the
 * shuffles of vsum16 (min and max are exact, so the order is free). */
INL void vminmax16(const vf *a, const vf *b, vf *mn, vf *mx)
{
    const vi lo1 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
             hi1 = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
             lo2 = {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
             hi2 = {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},
             lo3 = {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
             hi3 = {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},
             lo4 = {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},
             hi4 = {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31};
    vf v[8], w[4], x[2], p[8], q[4], r[2];
    for (int g = 0; g < 8; g++) {
        v[g] = vminf(__builtin_shuffle(a[g], a[g + 8], lo1), __builtin_shuffle(a[g], a[g + 8], hi1));
        p[g] = vmaxf(__builtin_shuffle(b[g], b[g + 8], lo1), __builtin_shuffle(b[g], b[g + 8], hi1));
    }
    for (int g = 0; g < 4; g++) {
        w[g] = vminf(__builtin_shuffle(v[g], v[g + 4], lo2), __builtin_shuffle(v[g], v[g + 4], hi2));
        q[g] = vmaxf(__builtin_shuffle(p[g], p[g + 4], lo2), __builtin_shuffle(p[g], p[g + 4], hi2));
    }
    for (int g = 0; g < 2; g++) {
        x[g] = vminf(__builtin_shuffle(w[g], w[g + 2], lo3), __builtin_shuffle(w[g], w[g + 2], hi3));
        r[g] = vmaxf(__builtin_shuffle(q[g], q[g + 2], lo3), __builtin_shuffle(q[g], q[g + 2], hi3));
    }
    *mn = vminf(__builtin_shuffle(x[0], x[1], lo4), __builtin_shuffle(x[0], x[1], hi4));
    *mx = vmaxf(__builtin_shuffle(r[0], r[1], lo4), __builtin_shuffle(r[0], r[1], hi4));
}

/* Min and max of each of nb <= L groups of g elements, lane i for group
 * i, 0 in the lanes from nb on. */
INL void block_minmax(const float *x, int64_t g, int nb, vf *mn, vf *mx)
{
    if (g % L != 0) {
        float mna[L] = {0}, mxa[L] = {0};
        for (int i = 0; i < nb; i++)
            group_minmax(x + i * g, g, &mna[i], &mxa[i]);
        *mn = vload(mna);
        *mx = vload(mxa);
        return;
    }
    vf a[L], b[L];
#pragma GCC unroll 16
    for (int i = 0; i < L; i++) {
        vf lo = vsplat(0.0f), hi = lo;
        if (i < nb) {
            const float *xi = x + i * g;
            lo = vload(xi);
            hi = lo;
            for (int64_t j = L; j < g; j += L) {
                vf v = vload(xi + j);
                lo = vminf(v, lo);
                hi = vmaxf(v, hi);
            }
        }
        a[i] = lo;
        b[i] = hi;
    }
    vminmax16(a, b, mn, mx);
}

/* The fourth candidate of the fixed schedule, from the errors ea, eb, ec
 * of kc - 2, kc, kc + 2 and the best of them bi: t = the vertex of the
 * parabola through the three, as an offset from kc clamped to [-kc, 4]
 * (the end toward the lower edge when the three are not convex or not
 * finite): toward less clipping as far as alpha = 1, so a group that the
 * unclipped grid fits exactly gets there, but at most 4 toward more, where
 * the extrapolation misleads; probe kc + rne(t) clamped to the grid, or,
 * when that point was visited
 * already, the neighbour of bi on the side of t (the other neighbour at an
 * end of the grid). */
INL vi parabola_probe(int kc, vf ea, vf eb, vf ec, vi bi)
{
    const vf four = vsplat(4.0f), mkc = vsplat((float)-kc), one = vsplat(1.0f),
             magic = vsplat(BP__RNE_MAGIC);
    const vi vkc = vsplati(kc), unit = vsplati(1), top = vsplati(BP__NALPHA - 1);
    vf den = (ea + ec) - (eb + eb), num = ea - ec;
    vi convex = vltf(vsplat(0.0f), den) & ~vltf(vsplat(FLT_MAX), den);
    vf t = num / VSEL(convex, den, one);
    t = vminf(vmaxf(t, mkc), four);
    t = VSEL(convex, t, VSEL(vltf(ea, ec), mkc, four));
    vi k = vkc + __builtin_convertvector((t + magic) - magic, vi);
    k = vmaxi(vmini(k, top), vsplati(0));
    vi seen = veqi(k, kc) | veqi(k, kc - 2) | veqi(k, kc + 2);
    vi nbk = VSELI(vltf(t, __builtin_convertvector(bi - vkc, vf)), bi - unit, bi + unit);
    nbk = VSELI(vlti(nbk, vsplati(0)) | vlti(top, nbk), bi + bi - nbk, nbk);
    return VSELI(seen, nbk, k);
}

/* Fit groups x[i*g .. (i+1)*g), i < nb <= L: scale and offset of each into
 * s[i], o[i]. group is the format's group size: > 0 selects the walk, 0
 * the per-row schedule. */
INL void search_int(int bits, const int asym, int group, const float *x, int64_t g, int nb,
                    float *s_out, float *o_out)
{
    const int grouped = group > 0;
    const vf vqmax = vsplat(int_qmax(bits)), zero = vsplat(0.0f);
    const vf clo = asym ? zero : vsplat(int_lo(bits)), chi = asym ? vqmax : vsplat(int_hi(bits));
    const vi vd = vsplati(probe_dir(bits)), none = vsplati(0), walks = vsplati(grouped ? -1 : 0);
    int_blk b;
    block_minmax(x, g, nb, &b.mn, &b.mx);
    if (asym) {
        /* Keep mx - mn finite; fp16 parameters saturate far below this. */
        const vf lim = vsplat(0x1p30f), nlim = vsplat(-0x1p30f);
        vf cmn = vmaxf(b.mn, nlim), cmx = vminf(b.mx, lim);
        cmn = vminf(cmn, lim);
        cmx = vmaxf(cmx, nlim);
        b.m = cmn;
        b.r = cmx - cmn;
    } else {
        b.m = VSEL(vltf(b.mx, zero - b.mn), b.mn, b.mx);
        b.r = zero;
    }
    vi live;
    for (int l = 0; l < L; l++)
        live[l] = l < nb ? -1 : 0;
    b.best = vsplat(INFINITY);
    b.bs = zero;
    b.bo = zero;
    b.bi = vsplati(-1);
    const int kc = grouped ? fixed_centre(bits, asym, group) : -1;
    if (kc >= 0) {
        /* Unpruned: the probe below needs all three errors. */
        const vi k3[3] = {vsplati(kc), vsplati(kc + 2), vsplati(kc - 2)};
        vf e3[3];
        visit3(asym, x, g, k3, live, &b, vqmax, clo, chi, e3);
        visit(asym, x, g, parabola_probe(kc, e3[2], e3[0], e3[1], b.bi), live, &b, vqmax, clo,
              chi);
    } else if (grouped) {
        visit(asym, x, g, vsplati(walk_start(bits, asym, group)), live, &b, vqmax, clo, chi);
    } else {
        for (int k = 0; k < BP__NALPHA; k += BP__COARSE_STEP)
            visit(asym, x, g, vsplati(k), live, &b, vqmax, clo, chi);
    }
    vi c = b.bi, step = vsplati(grouped ? 1 : 2), dir = vd;
    vi ph = VSELI(live & vsplati(kc >= 0 ? 0 : -1), vsplati(W_FWD), vsplati(W_DONE));
    for (;;) {
        vi act = ~veqi(ph, W_DONE);
        int any = 0;
        for (int l = 0; l < L; l++)
            any |= act[l];
        if (!any)
            break;
        vi k = c + step * dir;
        vi inr = ~vlti(k, vsplati(0)) & vlti(k, vsplati(BP__NALPHA));
        vi won = visit(asym, x, g, VSELI(inr, k, c), act & inr, &b, vqmax, clo, chi);
        vi isf = veqi(ph, W_FWD), isb = veqi(ph, W_BWD), isw = veqi(ph, W_WALK);
        vi to_walk = won & (isf | isb) & walks;
        vi to_bwd = ~won & isf;
        vi to_next = (~won & (isb | isw)) | (won & (isf | isb) & ~walks);
        c = VSELI(won, k, c);
        ph = VSELI(to_walk, vsplati(W_WALK), ph);
        ph = VSELI(to_bwd, vsplati(W_BWD), ph);
        dir = VSELI(to_bwd, none - dir, dir);
        vi two = veqi(step, 2);
        vi st2 = to_next & two, end = to_next & ~two;
        ph = VSELI(st2, vsplati(W_FWD), ph);
        ph = VSELI(end, vsplati(W_DONE), ph);
        c = VSELI(st2, b.bi, c);
        dir = VSELI(st2, vd, dir);
        step = VSELI(st2, vsplati(1), step);
    }
    for (int i = 0; i < nb; i++) {
        s_out[i] = b.bs[i];
        o_out[i] = b.bo[i];
    }
}

INL void fit_int(int bits, int asym, int group, const float *x, int64_t n, bp_qparams *p)
{
    float s, o;
    search_int(bits, asym, group, x, n, 1, &s, &o);
    p->scale = s;
    p->offset = o;
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
    p->offset = 0.0f;
    if (e < BP__E8M0_MAX_CODE && amax > 0.0f) {
        float s2 = bp__e8m0_value((uint32_t)e + 1u);
        float e1 = pass_e2m1(x, n, s, bp__inv(s), NULL, 0);
        float e2 = pass_e2m1(x, n, s2, bp__inv(s2), NULL, 0);
        if (e2 < e1)
            s = s2;
    }
    p->scale = s;
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

/* Fit one group. */
INL void fit(const bp_format *f, const float *x, int64_t n, float tp, bp_qparams *p)
{
    switch (f->kind) {
    case BP_FMT_INT: fit_int(f->bits, f->asym, f->group, x, n, p); return;
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

int64_t bp__group_len(const bp_format *f, int64_t cols)
{
    return f->group > 0 ? f->group : cols;
}

/* Lane i: max |x| over group i (g a multiple of L, nb <= L groups; 0 in
 * the lanes from nb on). Equal to group_absmax for every input without
 * NaN. */
INL vf block_absmax(const float *x, int64_t g, int nb)
{
    const vi nosign = vsplati(0x7fffffff);
    vf a[L];
#pragma GCC unroll 16
    for (int i = 0; i < L; i++) {
        vf m = vsplat(0.0f);
        if (i < nb)
            for (int64_t j = 0; j < g; j += L)
                m = vmaxf((vf)(vbits(vload(x + i * g + j)) & nosign), m);
        a[i] = m;
    }
    vf mn, mx;
    vminmax16(a, a, &mn, &mx);
    return mx;
}

/* fit_mxfp4 / fit_nvfp4 for nb <= L groups at once (g a multiple of L),
 * lane i for group i, with the same operations: the scales of both
 * formats as vectors, and mxfp4's two candidate passes for all groups
 * before their lane sums are reduced together (vsum16, the same tree as
 * the per-group sum). */
INL void fit_fp4_block(bp_format_kind kind, const float *x, int64_t g, int nb, float tp,
                       float *s_out)
{
    vf amax = block_absmax(x, g, nb), sc;
    if (kind == BP_FMT_NVFP4) {
        if (!(tp > 0.0f) || !(tp <= FLT_MAX)) {
            sc = vsplat(0.0f);
        } else {
            vf vtp = vsplat(tp);
            vf bs = v_round_mini((amax / vsplat(BP__E2M1_MAX)) / vtp, 3, -6, 0x44000000);
            bs = vminf(bs, vsplat(BP__E4M3_MAX));
            sc = bs * vtp;
        }
    } else {
        vi e = (vbits(amax) >> 23) - 2;
        e = vmini(vmaxi(e, vsplati(0)), vsplati(BP__E8M0_MAX_CODE));
        vi zero_code = veqi(e, 0);
        sc = VSEL(zero_code, (vf)vsplati(0x00400000), (vf)(e << 23));
        vf s2 = (vf)((e + 1) << 23);
        vi tries = vlti(e, vsplati(BP__E8M0_MAX_CODE)) & vltf(vsplat(0.0f), amax);
        vf inv1 = v_inv(sc), inv2 = v_inv(s2);
        vf a1[L], a2[L];
#pragma GCC unroll 16
        for (int i = 0; i < L; i++) {
            vf c1 = vsplat(0.0f), c2 = c1;
            if (tries[i]) {
                vf vs1 = vlane(sc, i), vi1 = vlane(inv1, i), vs2 = vlane(s2, i),
                   vi2 = vlane(inv2, i);
                for (int64_t j = 0; j < g; j += L) {
                    vf xv = vload(x + i * g + j);
                    vf d1 = xv - v_e2m1_q(xv, vi1, vs1), d2 = xv - v_e2m1_q(xv, vi2, vs2);
                    c1 += d1 * d1;
                    c2 += d2 * d2;
                }
            }
            a1[i] = c1;
            a2[i] = c2;
        }
        vf e1 = vsum16(a1), e2 = vsum16(a2);
        sc = VSEL(tries & vltf(e2, e1), s2, sc);
    }
    for (int i = 0; i < nb; i++)
        s_out[i] = sc[i];
}

/* Parameters of every group of one row: s[k], o[k] for group k. The int
 * search runs L groups at a time. */
INL void fit_row(const bp_format *f, const float *x, int64_t cols, float tp, float *s, float *o)
{
    int64_t g = bp__group_len(f, cols), ng = cols / g;
    if (f->kind == BP_FMT_INT) {
        for (int64_t b0 = 0; b0 < ng; b0 += L) {
            int nb = ng - b0 < L ? (int)(ng - b0) : L;
            search_int(f->bits, f->asym, f->group, x + b0 * g, g, nb, s + b0, o + b0);
        }
        return;
    }
    if ((f->kind == BP_FMT_MXFP4 || f->kind == BP_FMT_NVFP4) && g % L == 0) {
        for (int64_t b0 = 0; b0 < ng; b0 += L) {
            int nb = ng - b0 < L ? (int)(ng - b0) : L;
            fit_fp4_block(f->kind, x + b0 * g, g, nb, tp, s + b0);
            for (int i = 0; i < nb; i++)
                o[b0 + i] = 0.0f;
        }
        return;
    }
    for (int64_t k = 0; k < ng; k++) {
        bp_qparams p = {0.0f, 0.0f};
        fit(f, x + k * g, g, tp, &p);
        s[k] = p.scale;
        o[k] = p.offset;
    }
}

/* ---- dequantized values ------------------------------------------------ */

/* Dequantized values of columns [j0, j0 + n) of a row whose groups (of g
 * columns) have parameters s[], o[]: the same helpers as quantize +
 * dequantize, L lanes at a time (g is a multiple of L for every grouped
 * format), the last n mod L columns through the scalar helpers. */
INL void qdq_span(const bp_format *f, const float *x, int64_t j0, int64_t n, int64_t g,
                  const float *s, const float *o, float *q)
{
    int64_t j = 0;
    if (f->kind == BP_FMT_F16 || f->kind == BP_FMT_BF16) {
        for (; j < n; j++)
            q[j] = f->kind == BP_FMT_F16 ? bp__f16_round(x[j]) : bp__bf16_round(x[j]);
        return;
    }
    if (f->kind == BP_FMT_FP8_E4M3) {
        /* One group per row (g = cols). */
        float sc = s[0], inv = bp__inv(sc);
        for (; j < n; j++)
            q[j] = bp__e4m3_q(x[j], sc, inv);
        return;
    }
    const int asym = f->asym;
    const float lo = f->kind == BP_FMT_INT ? (asym ? 0.0f : int_lo(f->bits)) : 0.0f;
    const float hi = f->kind == BP_FMT_INT ? (asym ? int_qmax(f->bits) : int_hi(f->bits)) : 0.0f;
    /* Group by group, so the reciprocal is taken once per group. */
    while (j < n) {
        int64_t k = (j0 + j) / g, end = (k + 1) * g - j0;
        end = end < n ? end : n;
        float sc = s[k], inv = bp__inv(sc), off = o[k];
        vf vs = vsplat(sc), vinv = vsplat(inv), voff = vsplat(off);
        for (; j + L <= end; j += L) {
            vf xv = vload(x + j), qv;
            switch (f->kind) {
            case BP_FMT_INT:
                qv = asym ? v_int_asym_q(xv, vinv, voff, vsplat(hi), vs)
                          : v_int_sym_q(xv, vinv, vsplat(lo), vsplat(hi), vs);
                break;
            default: qv = v_e2m1_q(xv, vinv, vs); break;
            }
            vstore(q + j, qv);
        }
        for (; j < end; j++) {
            switch (f->kind) {
            case BP_FMT_INT:
                q[j] = asym ? bp__int_asym_q(bp__int_asym_v(x[j], inv, off, hi), sc, off)
                            : bp__int_sym_q(bp__int_sym_v(x[j], inv, lo, hi), sc);
                break;
            default: q[j] = bp__e2m1_q(x[j], sc, inv); break;
            }
        }
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

/* ---- per-row error -----------------------------------------------------
 * docs/formats.md, "Per-row error": e = w - q in float; per block of
 * BP__ERR_BLOCK columns, e * e (and colw * (e * e)) summed in float, column
 * j into lane j mod L; each block's lanes then added to L double lanes;
 * the double lanes reduced in a fixed pairwise tree at the end of the row. */

typedef struct row_acc {
    vd8 s0, s1, w0, w1; /* double lanes 0..7 and 8..15 of sse and wsse */
} row_acc;

INL vd8 vcvt_lo(vf v)
{
    vf8 h;
    memcpy(&h, &v, sizeof h);
    return __builtin_convertvector(h, vd8);
}

INL vd8 vcvt_hi(vf v)
{
    vf8 h;
    memcpy(&h, (const char *)&v + sizeof h, sizeof h);
    return __builtin_convertvector(h, vd8);
}

/* One block of n <= BP__ERR_BLOCK columns. */
INL void err_block(const float *x, const float *q, const float *cw, int64_t n, row_acc *ra)
{
    vf a = vsplat(0.0f), b = a;
    int64_t j = 0;
    for (; j + L <= n; j += L) {
        vf e = vload(x + j) - vload(q + j);
        e = e * e;
        a += e;
        if (cw)
            b += vload(cw + j) * e;
    }
    if (j < n) {
        float ta[L], tb[L];
        memcpy(ta, &a, sizeof ta);
        memcpy(tb, &b, sizeof tb);
        for (int64_t l = 0; j + l < n; l++) {
            float e = x[j + l] - q[j + l];
            e = e * e;
            ta[l] += e;
            if (cw)
                tb[l] += cw[j + l] * e;
        }
        memcpy(&a, ta, sizeof a);
        memcpy(&b, tb, sizeof b);
    }
    ra->s0 += vcvt_lo(a);
    ra->s1 += vcvt_hi(a);
    if (cw) {
        ra->w0 += vcvt_lo(b);
        ra->w1 += vcvt_hi(b);
    }
}

/* Pairwise tree over the L double lanes, in a fixed order. */
INL double lane_sum_d(vd8 lo, vd8 hi)
{
    double t[L];
    memcpy(t, &lo, sizeof lo);
    memcpy(t + L / 2, &hi, sizeof hi);
    for (int w = L / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++)
            t[l] = t[l] + t[l + w];
    return t[0];
}

INL void row_done(const row_acc *ra, int has_colw, double *sse, double *wsse)
{
    *sse = lane_sum_d(ra->s0, ra->s1);
    if (has_colw)
        *wsse = lane_sum_d(ra->w0, ra->w1);
}

HOT static void err_row(const float *w, const float *q, int64_t cols, const float *colw,
                        double *sse, double *wsse)
{
    row_acc ra = {{0}, {0}, {0}, {0}};
    for (int64_t j = 0; j < cols; j += BP__ERR_BLOCK) {
        int64_t n = cols - j < BP__ERR_BLOCK ? cols - j : BP__ERR_BLOCK;
        err_block(w + j, q + j, colw ? colw + j : NULL, n, &ra);
    }
    row_done(&ra, colw != NULL, sse, wsse);
}

/* Fit, dequantize and measure one row. q: NULL, or cols floats for the
 * dequantized row; ps: 2 * groups-per-row floats of scratch. Without q the
 * dequantized values go block by block through a small buffer, still in
 * cache when the block's error is summed. */
HOT static void rtn_row(const bp_format *f, const float *w, int64_t cols, float tp,
                        const float *colw, double *sse, double *wsse, float *q, float *ps)
{
    int64_t g = bp__group_len(f, cols), ng = cols / g;
    float *s = ps, *o = ps + ng;
    fit_row(f, w, cols, tp, s, o);
    float buf[BP__ERR_BLOCK];
    row_acc ra = {{0}, {0}, {0}, {0}};
    for (int64_t j = 0; j < cols; j += BP__ERR_BLOCK) {
        int64_t n = cols - j < BP__ERR_BLOCK ? cols - j : BP__ERR_BLOCK;
        float *qb = q ? q + j : buf;
        qdq_span(f, w + j, j, n, g, s, o, qb);
        err_block(w + j, qb, colw ? colw + j : NULL, n, &ra);
    }
    row_done(&ra, colw != NULL, sse, wsse);
}

void bp_format_error_rows(const float *w, const float *wq, int64_t nrows, int64_t cols,
                          const float *colw, double *sse, double *wsse)
{
    if (!w || !wq || !sse || nrows < 1 || cols < 1)
        return;
#pragma omp parallel for schedule(static) if (nrows > 1 && !omp_in_parallel())
    for (int64_t r = 0; r < nrows; r++) {
        double t = NAN;
        err_row(w + r * cols, wq + r * cols, cols, colw, &sse[r], &t);
        if (wsse)
            wsse[r] = colw ? t : NAN;
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
    /* Called from inside a parallel region (the sweep runs one block per
     * thread), the work stays on the calling thread: a nested region would
     * get one thread anyway, and would cost a team set-up per call. */
    int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (nt > nrows)
        nt = (int)nrows;
    /* Per thread: the parameters of a row's groups, rounded up to a 64-byte
     * multiple so no two threads write the same cache line. */
    int64_t ng = bp_format_groups_per_row(f, cols);
    size_t pn = ((size_t)ng * 2 + 15) / 16 * 16;
    float *scratch = malloc((size_t)nt * pn * sizeof *scratch);
    if (!scratch)
        return bp_error_set(err, BP_ENOMEM, "format %s: out of memory for %lld columns",
                            f->name, (long long)cols);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *mine = scratch + (size_t)omp_get_thread_num() * pn;
        double t = 0.0;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < nrows; r++)
            rtn_row(f, w + r * cols, cols, tensor_param, colw, &sse[r], colw ? &wsse[r] : &t,
                    qdq ? qdq + r * cols : NULL, mine);
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
