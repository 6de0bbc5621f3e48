/* Fit, quantize, dequantize and the fused RTN error kernel.
 *
 * Every group is handled by the same three steps in every path: fit (the
 * parameter search), then per element v = code as a float, q = dequantized
 * value, both through the inline helpers of formats_internal.h. The group
 * loops keep BP__LANES independent float accumulators so their result does
 * not depend on vectorization; the per-row errors are summed in double, also
 * in BP__LANES fixed lanes (row_err, shared by the fused kernel and
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

/* +0 in every lane, hidden from the optimizer: with a known zero GCC turns
 * vmaxf(v, 0) back into a compare and a masking move (two instructions);
 * with an opaque operand it stays one maxps. The value is the same. */
INL vf vzero_opaque(void)
{
    float z = 0.0f;
#if defined(__x86_64__) || defined(__i386__)
    __asm__("" : "+x"(z));
#endif
    return vsplat(z);
}

INL vf vminf(vf a, vf b)
{
    vf r;
    for (int l = 0; l < L; l++)
        r[l] = a[l] < b[l] ? a[l] : b[l];
    return r;
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
 * Each is the vector form of a scalar helper of formats_internal.h, with the
 * same operations in the same order (the clamps a > b ? a : b and
 * a < b ? a : b become vmaxf / vminf, i.e. maxps / minps, with the same
 * result for every input, NaN and signed zeros included). */

INL vf v_int_sym_q(vf x, vf inv, vf lo, vf hi, vf s)
{
    const vf magic = vsplat(BP__RNE_MAGIC);
    vf v = x * inv;
    v = vmaxf(v, lo);
    v = vminf(v, hi);
    v = (v + magic) - magic;
    return s * v;
}

INL vf v_int_asym_q(vf x, vf inv, vf off, vf qmax, vf s)
{
    const vf magic = vsplat(BP__RNE_MAGIC), zero = vzero_opaque();
    vf v = (x - off) * inv;
    v = vmaxf(v, zero);
    v = vminf(v, qmax);
    v = (v + magic) - magic;
    return s * v + off;
}

/* bp__e2m1_q: scale * copysign(e2m1_round(|x| * inv), x). */
INL vf v_e2m1_q(vf x, vf inv, vf s)
{
    const vi sign = vsplati((int32_t)0x80000000u);
    const vi cap = vsplati(0x41000000 /* 8.0f */), elo = vsplati(0 + 127);
    const vf six = vsplat(BP__E2M1_MAX);
    vi xb = (vi)x;
    vf a = (vf)(xb & ~sign) * inv;
    vi u = (vi)a;
    u = VSELI(u < cap, u, cap);
    vi e = u >> 23;
    e = VSELI(e > elo, e, elo);
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

/* One pass of a candidate over a group: the squared error sum_j (x - q)^2 in
 * float, element j into lane j mod L, lanes reduced by vsum. With
 * store = 1 the dequantized values are also written to q (callers pass a
 * literal, so each use compiles to one straight loop). The last n mod L
 * elements go through the scalar helpers, which compute the same values. */
INL float pass_sym(const float *x, int64_t n, float s, float inv, float lo, float hi,
                   float *q, const int store)
{
    vf acc = vsplat(0.0f), vs = vsplat(s), vinv = vsplat(inv), vlo = vsplat(lo),
       vhi = vsplat(hi);
    int64_t j = 0;
    for (; j + L <= n; j += L) {
        vf xv = vload(x + j);
        vf qv = v_int_sym_q(xv, vinv, vlo, vhi, vs);
        if (store)
            vstore(q + j, qv);
        vf e = xv - qv;
        acc += e * e;
    }
    float t[L];
    for (int64_t l = 0; j + l < n; l++) {
        t[l] = bp__int_sym_q(bp__int_sym_v(x[j + l], inv, lo, hi), s);
        if (store)
            q[j + l] = t[l];
    }
    return vlane_sum(acc, x + j, t, n - j);
}

INL float pass_asym(const float *x, int64_t n, float s, float inv, float off, float qmax,
                    float *q, const int store)
{
    vf acc = vsplat(0.0f), vs = vsplat(s), vinv = vsplat(inv), voff = vsplat(off),
       vq = vsplat(qmax);
    int64_t j = 0;
    for (; j + L <= n; j += L) {
        vf xv = vload(x + j);
        vf qv = v_int_asym_q(xv, vinv, voff, vq, vs);
        if (store)
            vstore(q + j, qv);
        vf e = xv - qv;
        acc += e * e;
    }
    float t[L];
    for (int64_t l = 0; j + l < n; l++) {
        t[l] = bp__int_asym_q(bp__int_asym_v(x[j + l], inv, off, qmax), s, off);
        if (store)
            q[j + l] = t[l];
    }
    return vlane_sum(acc, x + j, t, n - j);
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
 * on the grid alpha_k = (40 - k) / 40, k = 0..15, visited coarse to fine:
 * k = 0, 4, 8, 12; then, around the best c, c + 2d and (only if that did
 * not become the best) c - 2d; then the same with steps of 1 around the new
 * best (d = probe_dir(bits); at most 8 of the 16 candidates). "Best" is the
 * smallest search error so far, ties going to the smaller k (the larger
 * alpha).
 * Before a candidate's pass, a lower bound of the pass's result is
 * computed: the float sum of the squared errors of the group's min and max
 * elements under that candidate, with the pass's own operations. Float
 * addition of non-negative terms is monotone, so the pass cannot return
 * less; a candidate whose bound cannot win is skipped. Skipping never
 * changes the choice (nor, therefore, which candidates the refinement
 * visits), only the cost. k = 0 is always run.
 *
 * Symmetric: the signed value of largest magnitude m maps to code
 * -2^(b-1) (so the scale is negative when m > 0), shrunk by alpha.
 * Asymmetric: the range [mn, mx] shrunk by alpha about its centre; scale =
 * range / (2^b - 1), offset = low end, both rounded to fp16 before the
 * error of the candidate is measured.
 *
 * A group's search is a short chain of dependent steps (each pass's result
 * decides the next), so the row kernel runs step it of many groups before
 * step it + 1 of any: the groups' chains are independent and overlap in the
 * core. The state below carries a group from step to step. With store, each
 * pass also writes its dequantized values, into whichever of q and tmp does
 * not hold the best candidate's; the winner ends in q. */
#define NVISIT (BP__NALPHA / BP__COARSE_STEP + 4)

/* Which side of the centre a refinement step tries first: +1 toward more
 * clipping (2-bit formats, whose best alpha is usually small), -1 toward
 * less. The other side is tried only when the first did not win, which
 * (for an error that is unimodal in alpha) cannot lose the minimum. */
static inline int probe_dir(int bits) { return bits <= 2 ? 1 : -1; }

typedef struct gstate {
    float mn, mx; /* group min and max (the bound's elements) */
    float m, r;   /* sym: signed largest-magnitude value; asym: clamped min, range */
    float best, bs, bo; /* best search error, its scale and offset */
    int bi, c;    /* best k (-1 before the first pass); refinement centre */
    int inq;      /* store: 1 when the best candidate's values are in q */
} gstate;

INL void int_init(int asym, const float *x, int64_t n, gstate *st)
{
    group_minmax(x, n, &st->mn, &st->mx);
    if (asym) {
        /* Keep mx - mn finite; fp16 parameters saturate far below this. */
        const float lim = 0x1p30f;
        float cmn = st->mn > -lim ? st->mn : -lim, cmx = st->mx < lim ? st->mx : lim;
        cmn = cmn < lim ? cmn : lim;
        cmx = cmx > -lim ? cmx : -lim;
        st->m = cmn;
        st->r = cmx - cmn;
    } else {
        st->m = -st->mn > st->mx ? st->mn : st->mx;
        st->r = 0.0f;
    }
    st->best = INFINITY;
    st->bs = st->bo = 0.0f;
    st->bi = -1;
    st->c = 0;
    st->inq = 0;
}

/* Step it (0 .. NVISIT-1) of one group's search. */
INL void int_step(int bits, int asym, const float *x, int64_t n, gstate *st, int it, float *q,
                  float *tmp, const int store)
{
    int k;
    if (it < BP__NALPHA / BP__COARSE_STEP) {
        k = it * BP__COARSE_STEP;
    } else {
        int f = it - BP__NALPHA / BP__COARSE_STEP; /* 0..3 */
        int step = (f < 2 ? BP__COARSE_STEP / 2 : BP__COARSE_STEP / 4) * probe_dir(bits);
        if ((f & 1) == 0) {
            st->c = st->bi;
            k = st->c + step;
        } else {
            if (st->bi != st->c) /* the first probe won: the other side cannot */
                return;
            k = st->c - step;
        }
        if (k < 0 || k >= BP__NALPHA)
            return;
    }
    float lo = int_lo(bits), hi = int_hi(bits), qmax = int_qmax(bits);
    float a = bp__alpha[k], s, o, inv, e0, e1;
    if (asym) {
        s = bp__f16_round(a * st->r / qmax);
        o = bp__f16_round(st->m + 0.5f * (1.0f - a) * st->r);
        inv = bp__inv(s);
        e0 = st->mn - bp__int_asym_q(bp__int_asym_v(st->mn, inv, o, qmax), s, o);
        e1 = st->mx - bp__int_asym_q(bp__int_asym_v(st->mx, inv, o, qmax), s, o);
    } else {
        s = bp__f16_round(a * st->m / lo);
        o = 0.0f;
        inv = bp__inv(s);
        e0 = st->mn - bp__int_sym_q(bp__int_sym_v(st->mn, inv, lo, hi), s);
        e1 = st->mx - bp__int_sym_q(bp__int_sym_v(st->mx, inv, lo, hi), s);
    }
    if (st->bi >= 0) {
        float bound = n > 1 ? e0 * e0 + e1 * e1 : e0 * e0;
        if (!(bound < st->best || (bound == st->best && k < st->bi)))
            return;
    }
    float *dst = store ? (st->inq ? tmp : q) : NULL;
    float e = asym ? pass_asym(x, n, s, inv, o, qmax, dst, store)
                   : pass_sym(x, n, s, inv, lo, hi, dst, store);
    if (st->bi < 0 || e < st->best || (e == st->best && k < st->bi)) {
        st->best = e;
        st->bi = k;
        st->bs = s;
        st->bo = o;
        st->inq = dst == q;
    }
}

INL void int_finish(const gstate *st, int64_t n, bp_qparams *p, float *q, const float *tmp,
                    const int store)
{
    p->scale = st->bs;
    p->offset = st->bo;
    if (store && !st->inq)
        memcpy(q, tmp, (size_t)n * sizeof *q);
}

/* One group's search (with store: q and tmp n floats each). */
INL void fit_int(int bits, int asym, const float *x, int64_t n, bp_qparams *p, float *q,
                 float *tmp, const int store)
{
    gstate st;
    int_init(asym, x, n, &st);
    for (int it = 0; it < NVISIT; it++)
        int_step(bits, asym, x, n, &st, it, q, tmp, store);
    int_finish(&st, n, p, q, tmp, store);
}

/* ---- the search for L groups at once ------------------------------------
 * The row kernel runs the same search for L groups of a row side by side,
 * lane i of every vector below belonging to group i: the candidate
 * parameters, bounds and bookkeeping are computed for all L groups with the
 * same operations int_step applies to one group (bp__f16_round, bp__inv and
 * the int helpers written out for vectors), and only the passes themselves
 * run group by group. The choices are therefore exactly fit_int's. */

INL vi vbits(vf v) { return (vi)v; }

/* bp__round_mini on L lanes (a >= 0). */
INL vf v_round_mini(vf a, int mbits, int emin, int32_t cap)
{
    vi u = vbits(a), vcap = vsplati(cap), lo = vsplati(emin + 127);
    u = VSELI(u < vcap, u, vcap);
    vi e = u >> 23;
    e = VSELI(e > lo, e, lo);
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
    vi nz = s != zero;
    vf d = VSEL(nz, s, one);
    vf r = one / d;
    return VSEL(nz, r, zero);
}

INL vf v_int_sym_v(vf x, vf inv, vf lo, vf hi)
{
    const vf magic = vsplat(BP__RNE_MAGIC);
    vf v = x * inv;
    v = vmaxf(v, lo);
    v = vminf(v, hi);
    return (v + magic) - magic;
}

INL vf v_int_asym_v(vf x, vf inv, vf off, vf qmax)
{
    const vf magic = vsplat(BP__RNE_MAGIC), zero = vsplat(0.0f);
    vf v = (x - off) * inv;
    v = vmaxf(v, zero);
    v = vminf(v, qmax);
    return (v + magic) - magic;
}

/* Every group of a row (cols a multiple of g): q[cols] receives the
 * dequantized row, tmp[cols] is scratch. Same choices as fit_int. */
INL void fit_int_row(int bits, int asym, const float *x, int64_t cols, int64_t g, float *q,
                     float *tmp)
{
    const vf vlo = vsplat(int_lo(bits)), vhi = vsplat(int_hi(bits)),
             vqmax = vsplat(int_qmax(bits)), zero = vsplat(0.0f), half = vsplat(0.5f),
             one = vsplat(1.0f), forty = vsplat(40.0f), inf = vsplat(INFINITY);
    const vi ones = vsplati(-1), none = vsplati(0);
    int64_t ng = cols / g;
    for (int64_t b0 = 0; b0 < ng; b0 += L) {
        int nb = ng - b0 < L ? (int)(ng - b0) : L;
        const float *xb = x + b0 * g;
        float *qb = q + b0 * g, *tb = tmp + b0 * g;
        gstate st;
        float mna[L] = {0}, mxa[L] = {0}, ma[L] = {0}, ra[L] = {0};
        for (int i = 0; i < nb; i++) {
            int_init(asym, xb + i * g, g, &st);
            mna[i] = st.mn;
            mxa[i] = st.mx;
            ma[i] = st.m;
            ra[i] = st.r;
        }
        vf mn = vload(mna), mx = vload(mxa), m = vload(ma), r = vload(ra);
        vi live, bi = vsplati(-1), c = none, inq = none;
        for (int l = 0; l < L; l++)
            live[l] = l < nb ? -1 : 0;
        vf best = inf, bs = zero, bo = zero;
        for (int it = 0; it < NVISIT; it++) {
            vi k, ok = live;
            if (it < BP__NALPHA / BP__COARSE_STEP) {
                k = vsplati(it * BP__COARSE_STEP);
            } else {
                int f = it - BP__NALPHA / BP__COARSE_STEP;
                int step =
                    (f < 2 ? BP__COARSE_STEP / 2 : BP__COARSE_STEP / 4) * probe_dir(bits);
                if ((f & 1) == 0) {
                    c = bi;
                    k = c + step;
                } else {
                    ok &= bi == c;
                    k = c - step;
                }
                ok &= (k >= 0) & (k < BP__NALPHA);
            }
            /* alpha_k = (40 - k) / 40, as the table holds it. */
            vf a = __builtin_convertvector(40 - k, vf) / forty;
            vf s, o, inv, e0, e1;
            if (asym) {
                s = v_f16_round(a * r / vqmax);
                o = v_f16_round(m + half * (one - a) * r);
                inv = v_inv(s);
                e0 = mn - (s * v_int_asym_v(mn, inv, o, vqmax) + o);
                e1 = mx - (s * v_int_asym_v(mx, inv, o, vqmax) + o);
            } else {
                s = v_f16_round(a * m / vlo);
                o = zero;
                inv = v_inv(s);
                e0 = mn - s * v_int_sym_v(mn, inv, vlo, vhi);
                e1 = mx - s * v_int_sym_v(mx, inv, vlo, vhi);
            }
            vf bound = g > 1 ? e0 * e0 + e1 * e1 : e0 * e0;
            vi first = bi < 0;
            ok &= first | (bound < best) | ((bound == best) & (k < bi));
            /* The passes, group by group, from plain arrays (reading
             * vector lanes one at a time is slow). */
            float sa[L], ia[L], oa[L], ea[L];
            int32_t oka[L], qa[L];
            memcpy(sa, &s, sizeof sa);
            memcpy(ia, &inv, sizeof ia);
            memcpy(oa, &o, sizeof oa);
            memcpy(oka, &ok, sizeof oka);
            memcpy(qa, &inq, sizeof qa);
            /* The groups whose candidate is not pruned, listed without a
             * branch per group: whether a group is pruned is close to a
             * coin toss, and a mispredicted branch per group costs about
             * as much as a quarter of a pass. */
            int idx[L], cnt = 0;
            for (int i = 0; i < L; i++) {
                ea[i] = INFINITY;
                idx[cnt] = i;
                cnt += oka[i] != 0;
            }
            for (int t = 0; t < cnt; t++) {
                int i = idx[t];
                const float *xi = xb + i * g;
                float *dst = (qa[i] ? tb : qb) + i * g;
                ea[i] = asym ? pass_asym(xi, g, sa[i], ia[i], oa[i], int_qmax(bits), dst, 1)
                             : pass_sym(xi, g, sa[i], ia[i], int_lo(bits), int_hi(bits), dst, 1);
            }
            vf e = vload(ea);
            vi better = ok & (first | (e < best) | ((e == best) & (k < bi)));
            best = VSEL(better, e, best);
            bs = VSEL(better, s, bs);
            bo = VSEL(better, o, bo);
            bi = VSELI(better, k, bi);
            inq = VSELI(better, VSELI(inq != 0, none, ones), inq);
        }
        int32_t qa[L];
        memcpy(qa, &inq, sizeof qa);
        for (int i = 0; i < nb; i++)
            if (!qa[i])
                memcpy(qb + i * g, tb + i * g, (size_t)g * sizeof *q);
    }
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
 * keep the standard exponent. Returns 1 when q (with store) was written. */
INL int fit_mxfp4(const float *x, int64_t n, bp_qparams *p, float *q, float *tmp,
                  const int store)
{
    float amax = group_absmax(x, n);
    int32_t e = (int32_t)(bp__fbits(amax) >> 23) - 2; /* biased; amax >= 0 */
    e = e > 0 ? e : 0;
    e = e < BP__E8M0_MAX_CODE ? e : BP__E8M0_MAX_CODE;
    float s = bp__e8m0_value((uint32_t)e);
    p->offset = 0.0f;
    if (e < BP__E8M0_MAX_CODE && amax > 0.0f) {
        float s2 = bp__e8m0_value((uint32_t)e + 1u);
        float e1 = pass_e2m1(x, n, s, bp__inv(s), q, store);
        float e2 = pass_e2m1(x, n, s2, bp__inv(s2), tmp, store);
        if (e2 < e1) {
            s = s2;
            if (store)
                memcpy(q, tmp, (size_t)n * sizeof *q);
        }
        p->scale = s;
        return 1;
    }
    p->scale = s;
    return 0;
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

/* Fit one group. With store, q[0..n) may receive the fitted group's
 * dequantized values as a by-product of the search (tmp: n floats of
 * scratch); returns 1 when it did. */
INL int fit(const bp_format *f, const float *x, int64_t n, float tp, bp_qparams *p, float *q,
            float *tmp, const int store)
{
    switch (f->kind) {
    case BP_FMT_INT:
        fit_int(f->bits, f->asym, x, n, p, q, tmp, store);
        return 1;
    case BP_FMT_FP8_E4M3: fit_fp8(x, n, p); return 0;
    case BP_FMT_MXFP4: return fit_mxfp4(x, n, p, q, tmp, store);
    case BP_FMT_NVFP4: fit_nvfp4(x, n, tp, p); return 0;
    case BP_FMT_F16:
    case BP_FMT_BF16: p->scale = 0.0f; p->offset = 0.0f; return 0;
    }
    return 0;
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
    fit(f, x, n, tensor_param, out, NULL, NULL, 0);
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

/* One row: fit every group and write its dequantized values to q[cols]
 * (tmp: cols floats of scratch). */
INL void qdq_row(const bp_format *f, const float *x, int64_t cols, float tp, float *q,
                 float *tmp)
{
    int64_t g = bp__group_len(f, cols);
    if (f->kind == BP_FMT_INT) {
        fit_int_row(f->bits, f->asym, x, cols, g, q, tmp);
        return;
    }
    bp_qparams p = {0.0f, 0.0f};
    for (int64_t j = 0; j < cols; j += g)
        if (!fit(f, x + j, g, tp, &p, q + j, tmp + j, 1))
            qdq_params(f, &p, x + j, g, q + j);
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
            fit(f, x, g, tensor_param, p, NULL, NULL, 0);
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

/* ---- per-row error ----------------------------------------------------- */

/* Pairwise tree over double lanes, in a fixed order. */
INL double lane_sum_d(const double *acc)
{
    double t[L];
    for (int l = 0; l < L; l++)
        t[l] = acc[l];
    for (int w = L / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++)
            t[l] = t[l] + t[l + w];
    return t[0];
}

/* The squared error of one row in double: d = (double)w[j] - (double)q[j],
 * d * d (and colw[j] * (d * d)) added to lane j mod L, lanes reduced by
 * lane_sum_d. */
INL vd8 vcvt8(const float *p)
{
    vf8 v;
    memcpy(&v, p, sizeof v);
    return __builtin_convertvector(v, vd8);
}

INL void row_err(const float *w, const float *q, int64_t cols, const float *colw,
                 double *sse, double *wsse)
{
    vd8 a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0};
    int64_t j = 0;
    if (colw) {
        for (; j + L <= cols; j += L) {
            vd8 d0 = vcvt8(w + j) - vcvt8(q + j), d1 = vcvt8(w + j + L / 2) - vcvt8(q + j + L / 2);
            d0 = d0 * d0;
            d1 = d1 * d1;
            a0 += d0;
            a1 += d1;
            b0 += vcvt8(colw + j) * d0;
            b1 += vcvt8(colw + j + L / 2) * d1;
        }
    } else {
        for (; j + L <= cols; j += L) {
            vd8 d0 = vcvt8(w + j) - vcvt8(q + j), d1 = vcvt8(w + j + L / 2) - vcvt8(q + j + L / 2);
            a0 += d0 * d0;
            a1 += d1 * d1;
        }
    }
    double a[L], b[L];
    memcpy(a, &a0, sizeof a0);
    memcpy(a + L / 2, &a1, sizeof a1);
    memcpy(b, &b0, sizeof b0);
    memcpy(b + L / 2, &b1, sizeof b1);
    for (int l = 0; j < cols; j++, l++) {
        double d = (double)w[j] - (double)q[j];
        d = d * d;
        a[l] += d;
        if (colw)
            b[l] += (double)colw[j] * d;
    }
    *sse = lane_sum_d(a);
    if (colw)
        *wsse = lane_sum_d(b);
}

HOT static void err_row(const float *w, const float *q, int64_t cols, const float *colw,
                        double *sse, double *wsse)
{
    row_err(w, q, cols, colw, sse, wsse);
}

/* Fit, dequantize and measure one row; q and tmp: cols floats each. */
HOT static void rtn_row(const bp_format *f, const float *w, int64_t cols, float tp,
                        const float *colw, double *sse, double *wsse, float *q, float *tmp)
{
    qdq_row(f, w, cols, tp, q, tmp);
    row_err(w, q, cols, colw, sse, wsse);
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
    /* Per thread: a row of dequantized values (unless qdq is given) and a
     * row of search scratch, each rounded up to a 64-byte multiple so no
     * two threads write the same cache line. */
    size_t qn = qdq ? 0 : ((size_t)cols + 15) / 16 * 16, tn = ((size_t)cols + 15) / 16 * 16;
    float *scratch = malloc((size_t)nt * (qn + tn) * sizeof *scratch);
    if (!scratch)
        return bp_error_set(err, BP_ENOMEM, "format %s: out of memory for %lld columns",
                            f->name, (long long)cols);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *mine = scratch + (size_t)omp_get_thread_num() * (qn + tn);
        float *tmp = mine + qn;
        double t = 0.0;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < nrows; r++)
            rtn_row(f, w + r * cols, cols, tensor_param, colw, &sse[r], colw ? &wsse[r] : &t,
                    qdq ? qdq + r * cols : mine, tmp);
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
