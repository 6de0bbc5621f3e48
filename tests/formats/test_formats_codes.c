/* Element grids and group fits: E2M1/E4M3 code tables, rounding ties,
 * saturation, 16-bit keeps, degenerate groups, the clipping search. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "bitplan/format.h"
#include "bitplan/half.h"
#include "fmt_testutil.h"

static bp_format fmt(const char *name)
{
    bp_format f;
    if (bp_format_parse(name, &f, NULL) != BP_OK)
        fail_msg("parse %s", name);
    return f;
}

static void test_e2m1_table(void **state)
{
    (void)state;
    static const float table[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6,
                                    -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
    const char *names[] = {"mxfp4", "nvfp4"};
    for (int k = 0; k < 2; k++) {
        bp_format f = fmt(names[k]);
        bp_qparams p = {1.0f, 0.0f};
        for (uint16_t c = 0; c < 16; c++) {
            float v = bp_format_decode(&f, &p, c);
            assert_true(v == table[c]);
            assert_int_equal(signbit(v) != 0, c >= 8);
            assert_int_equal(bp_format_encode(&f, &p, table[c]), c);
        }
        /* Ties go to the even code; saturation at 6. */
        static const struct { float x; float q; } r[] = {
            {0.25f, 0}, {0.26f, 0.5f}, {0.75f, 1}, {1.25f, 1}, {1.75f, 2}, {2.5f, 2},
            {3.5f, 4}, {5.0f, 4}, {5.01f, 6}, {7.0f, 6}, {1e30f, 6}, {-2.5f, -2},
            {-100.0f, -6}, {0.1f, 0},
        };
        for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
            float q = bp_format_decode(&f, &p, bp_format_encode(&f, &p, r[i].x));
            if (q != r[i].q)
                fail_msg("%s: %g -> %g, expected %g", names[k], (double)r[i].x, (double)q,
                         (double)r[i].q);
        }
        /* The scale multiplies. */
        p.scale = 0.25f;
        assert_true(bp_format_decode(&f, &p, 7) == 1.5f);
        assert_int_equal(bp_format_encode(&f, &p, -0.74f), 0xd); /* -3 * 0.25 */
    }
}

static void test_e4m3_table(void **state)
{
    (void)state;
    bp_format f = fmt("fp8_e4m3");
    bp_qparams p = {1.0f, 0.0f};
    static const struct { uint16_t c; float v; } known[] = {
        {0x00, 0.0f},  {0x01, 0x1p-9f}, {0x07, 7 * 0x1p-9f}, {0x08, 0x1p-6f},
        {0x38, 1.0f},  {0x39, 1.125f},  {0x3f, 1.875f},      {0x40, 2.0f},
        {0x7e, 448.0f}, {0x77, 240.0f},  {0xb8, -1.0f},       {0xfe, -448.0f},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        assert_true(bp_format_decode(&f, &p, known[i].c) == known[i].v);
        assert_int_equal(bp_format_encode(&f, &p, known[i].v), known[i].c);
    }
    /* Every non-NaN code survives decode -> encode, and values increase
     * with the code. */
    float prev = -1.0f;
    for (uint16_t c = 0; c < 0x7f; c++) {
        float v = bp_format_decode(&f, &p, c);
        assert_true(v > prev || c == 0);
        prev = v;
        assert_int_equal(bp_format_encode(&f, &p, v), c);
        assert_int_equal(bp_format_encode(&f, &p, -v), c | 0x80);
    }
    /* Round to nearest even, saturate to +-448 (no inf in E4M3). */
    static const struct { float x; float q; } r[] = {
        {1.0625f, 1.0f}, {1.1875f, 1.25f}, {0.3f, 0.3125f}, {464.0f, 448.0f},
        {500.0f, 448.0f}, {1e30f, 448.0f}, {-1e6f, -448.0f}, {0x1p-10f, 0.0f},
        {3 * 0x1p-10f, 2 * 0x1p-9f}, {240.0f, 240.0f}, {248.0f, 256.0f},
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
        float q = bp_format_decode(&f, &p, bp_format_encode(&f, &p, r[i].x));
        if (q != r[i].q)
            fail_msg("e4m3: %g -> %g, expected %g", (double)r[i].x, (double)q,
                     (double)r[i].q);
    }
}

/* The 16-bit keeps equal the common/ conversions (RNE) and saturate
 * instead of overflowing. */
static void test_16bit_keeps(void **state)
{
    (void)state;
    bp_format h = fmt("f16"), b = fmt("bf16");
    tu_rng r = {7};
    for (int i = 0; i < 200000; i++) {
        uint32_t u = (uint32_t)tu_next(&r);
        float x;
        memcpy(&x, &u, 4);
        if (!isfinite(x))
            continue;
        uint16_t ch = bp_format_encode(&h, NULL, x);
        if (fabsf(x) < 65504.0f)
            assert_int_equal(ch, bp_f32_to_f16(x));
        else
            assert_int_equal(ch & 0x7fff, 0x7bff);
        uint16_t cb = bp_format_encode(&b, NULL, x);
        float back = bp_bf16_to_f32(bp_f32_to_bf16(x));
        if (isfinite(back))
            assert_int_equal(cb, bp_f32_to_bf16(x));
        else
            assert_int_equal(cb & 0x7fff, 0x7f7f);
        /* Smaller magnitudes, where subnormals live. */
        float y = x * 0x1p-100f;
        if (fabsf(y) < 65504.0f)
            assert_int_equal(bp_format_encode(&h, NULL, y), bp_f32_to_f16(y));
        assert_true(bp_format_decode(&h, NULL, ch) == bp_f16_to_f32(ch));
    }
    /* Exhaustive over f16: every value is kept exactly. */
    for (uint32_t c = 0; c < 0x10000u; c++) {
        if ((c & 0x7c00u) == 0x7c00u)
            continue;
        float v = bp_f16_to_f32((uint16_t)c);
        uint16_t e = bp_format_encode(&h, NULL, v);
        assert_true(bp_f16_to_f32(e) == v);
        /* Midpoints between neighbours tie to even. */
        if ((c & 0x7fffu) < 0x7bffu) {
            float nx = bp_f16_to_f32((uint16_t)(c + 1));
            float mid = (float)(((double)v + (double)nx) / 2);
            assert_int_equal(bp_format_encode(&h, NULL, mid), bp_f32_to_f16(mid));
        }
    }
}

static double group_err(const bp_format *f, const bp_qparams *p, const float *x, int n)
{
    double s = 0;
    for (int j = 0; j < n; j++) {
        double d = (double)x[j] - bp_format_decode(f, p, bp_format_encode(f, p, x[j]));
        s += d * d;
    }
    return s;
}

/* The error of the alpha = 1 candidate, recomputed independently. */
static double alpha1_err(const bp_format *f, const float *x, int n)
{
    float mn = x[0], mx = x[0];
    for (int j = 1; j < n; j++) {
        mn = fminf(mn, x[j]);
        mx = fmaxf(mx, x[j]);
    }
    bp_qparams p = {0, 0};
    if (f->asym) {
        p.scale = bp_f16_to_f32(bp_f32_to_f16((mx - mn) / (float)((1 << f->bits) - 1)));
        p.offset = bp_f16_to_f32(bp_f32_to_f16(mn));
    } else {
        float m = -mn > mx ? mn : mx;
        p.scale = bp_f16_to_f32(bp_f32_to_f16(m / -(float)(1 << (f->bits - 1))));
    }
    return group_err(f, &p, x, n);
}

static void test_clipping_never_worse(void **state)
{
    (void)state;
    bp_format m[64];
    size_t nf = bp_format_menu(m, 64);
    tu_rng r = {11};
    int improved = 0, total = 0;
    for (size_t i = 0; i < nf; i++) {
        if (m[i].kind != BP_FMT_INT)
            continue;
        for (int t = 0; t < 200; t++) {
            float x[128];
            int n = 32 << (t % 3);
            for (int j = 0; j < n; j++)
                x[j] = tu_gauss(&r) * (j == t % n ? 6.0f : 1.0f);
            bp_qparams p;
            bp_format_fit_group(&m[i], x, n, 0.0f, &p);
            assert_true(isfinite(p.scale) && isfinite(p.offset));
            double e = group_err(&m[i], &p, x, n), e1 = alpha1_err(&m[i], x, n);
            /* Per-row formats always try alpha = 1; grouped formats start
             * their walk elsewhere, so only the per-row ones promise it. */
            if (m[i].group == 0 && !(e <= e1 * (1 + 1e-5)))
                fail_msg("%s: clipped error %g above alpha=1 error %g", m[i].name, e, e1);
            improved += e < e1 * 0.999;
            total++;
        }
    }
    /* With an outlier per group, clipping must actually help often. */
    assert_true(improved > total / 10);
}

/* The documented search, recomputed here: grid alpha_k = (40-k)/40,
 * fp16-rounded candidates, search error s^2 * sum (y - v)^2 in code units
 * (y = (x - o) / s as x times 1/s, v its clamped, rounded code; float sum
 * over 16 lanes, j mod 16, reduced pairwise; +inf when s is 0).
 * Per-row formats: k = 0, 4, 8, 12, then around the best c: c + 2d, and
 * c - 2d only if c + 2d did not win; then the same with 1. Grouped formats
 * with a centre kc: kc, kc + 2, kc - 2, then one probe from the parabola
 * through their errors. Other grouped formats: start at the k0 of their
 * bit width, group size and symmetry, then with step 1 only: probe c + d,
 * else c - d, and walk on in the winning direction while each probe wins.
 * d = +1 for 2-bit formats, -1 otherwise; the smallest error wins,
 * ties go to the smaller k. The library prunes candidates with a bound; the
 * choice must equal this unpruned one. */
static float lane_err(const bp_format *f, const float *x, int n, float s, float o)
{
    float acc[16] = {0};
    float inv = s != 0 ? 1.0f / s : 0.0f;
    for (int j = 0; j < n; j++) {
        float y, v;
        if (f->asym) {
            y = (x[j] - o) * inv;
            v = fminf(fmaxf(y, 0.0f), (float)((1 << f->bits) - 1));
        } else {
            y = x[j] * inv;
            v = fminf(fmaxf(y, -(float)(1 << (f->bits - 1))), (float)((1 << (f->bits - 1)) - 1));
        }
        float e = y - nearbyintf(v);
        acc[j % 16] += e * e;
    }
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++)
            acc[l] = acc[l] + acc[l + w];
    return s != 0 ? (s * s) * acc[0] : INFINITY;
}

/* docs/formats.md's table of k0: [asym][bits 2..5][group 32, 64, 128]. */
static int walk_start(const bp_format *f)
{
    static const int k0[2][4][3] = {
        {{7, 8, 10}, {5, 6, 9}, {2, 3, 5}, {0, 0, 2}},
        {{11, 13, 13}, {4, 6, 8}, {2, 2, 3}, {0, 0, 2}},
    };
    if (f->bits > 5)
        return 0;
    return k0[f->asym][f->bits - 2][f->group == 32 ? 0 : f->group == 64 ? 1 : 2];
}

/* docs/formats.md's table of kc: [asym][bits 2..4][group 32, 64, 128],
 * -1 for the formats that walk. */
static int fixed_centre(const bp_format *f)
{
    static const int kc[2][3][3] = {
        {{-1, -1, -1}, {3, -1, -1}, {2, 2, 4}},
        {{11, 12, 13}, {3, 5, 7}, {2, 2, 3}},
    };
    if (f->bits > 4)
        return -1;
    return kc[f->asym][f->bits - 2][f->group == 32 ? 0 : f->group == 64 ? 1 : 2];
}

/* The fourth point of the fixed schedule, as docs/formats.md states it:
 * t = (ea - ec) / ((ea + ec) - (eb + eb)) clamped to [-kc, 4] when that
 * denominator is positive and finite, else -kc if ea < ec, else 4; probe
 * kc + rne(t) clamped to 0..15, unless that is kc - 2, kc or kc + 2: then
 * the neighbour of the best b on the side of t (b - 1 if t < b - kc), or
 * the other neighbour when that one is off the grid. *how says which. */
static int parabola_probe(int kc, const float *err, int b, int *how)
{
    float ea = err[kc - 2], eb = err[kc], ec = err[kc + 2];
    float den = (ea + ec) - (eb + eb), t;
    if (den > 0.0f && den <= FLT_MAX)
        t = fminf(fmaxf((ea - ec) / den, (float)-kc), 4.0f);
    else
        t = ea < ec ? (float)-kc : 4.0f;
    int k = kc + (int)nearbyintf(t);
    k = k < 0 ? 0 : k > 15 ? 15 : k;
    *how = 0;
    if (k == kc || k == kc - 2 || k == kc + 2) {
        k = t < (float)(b - kc) ? b - 1 : b + 1;
        if (k < 0 || k > 15)
            k = 2 * b - k;
        *how = 1;
    }
    return k;
}

static void cand(const bp_format *f, int k, float mn, float mx, float *s, float *o)
{
    float a = (float)(40 - k) / 40.0f;
    *o = 0;
    if (f->asym) {
        float rg = mx - mn;
        *s = bp_f16_to_f32(bp_f32_to_f16(a * rg / (float)((1 << f->bits) - 1)));
        *o = bp_f16_to_f32(bp_f32_to_f16(mn + 0.5f * (1.0f - a) * rg));
    } else {
        float mm = -mn > mx ? mn : mx;
        *s = bp_f16_to_f32(bp_f32_to_f16(a * mm / -(float)(1 << (f->bits - 1))));
    }
}

static void test_search_is_documented(void **state)
{
    (void)state;
    bp_format m[64];
    size_t nf = bp_format_menu(m, 64);
    tu_rng r = {17};
    int visited_all = 0, total = 0, walked = 0, probes[2] = {0, 0}, fixed_total = 0,
        fixed_found = 0;
    for (size_t i = 0; i < nf; i++) {
        bp_format *f = &m[i];
        if (f->kind != BP_FMT_INT)
            continue;
        int grouped = f->group > 0;
        for (int t = 0; t < 300; t++) {
            float x[128];
            int n = t % 7 == 0 ? 1 + t % 50 : 32 << (t % 3);
            for (int j = 0; j < n; j++)
                x[j] = tu_gauss(&r) * (tu_next(&r) % 50 == 0 ? 5.0f : 1.0f) + (t % 5 == 0);
            float mn = x[0], mx = x[0];
            for (int j = 1; j < n; j++) {
                mn = fminf(mn, x[j]);
                mx = fmaxf(mx, x[j]);
            }
            float err[16];
            int seen[16] = {0};
            for (int k = 0; k < 16; k++) {
                float s, o;
                cand(f, k, mn, mx, &s, &o);
                err[k] = lane_err(f, x, n, s, o);
            }
            int best = -1;
#define VISIT(kk, won)                                                              \
    do {                                                                            \
        int k_ = (kk);                                                              \
        won = 0;                                                                    \
        if (k_ >= 0 && k_ < 16) {                                                   \
            seen[k_] = 1;                                                           \
            if (best < 0 || err[k_] < err[best] || (err[k_] == err[best] && k_ < best)) { \
                best = k_;                                                          \
                won = 1;                                                            \
            }                                                                       \
        }                                                                           \
    } while (0)
            int won, d = f->bits <= 2 ? 1 : -1, kc = grouped ? fixed_centre(f) : -1;
            if (kc >= 0) {
                int how;
                VISIT(kc, won);
                VISIT(kc + 2, won);
                VISIT(kc - 2, won);
                VISIT(parabola_probe(kc, err, best, &how), won);
                probes[how]++;
            } else if (grouped) {
                VISIT(walk_start(f), won);
            } else {
                for (int k = 0; k < 16; k += 4)
                    VISIT(k, won);
            }
            for (int step = grouped ? 1 : 2; kc < 0 && step >= 1; step--) {
                int c = best, dir = d;
                VISIT(c + step * dir, won);
                if (!won) {
                    dir = -d;
                    VISIT(c + step * dir, won);
                }
                while (won && grouped) {
                    VISIT(best + step * dir, won);
                    walked += won;
                }
            }
#undef VISIT
            int nseen = 0;
            for (int k = 0; k < 16; k++)
                nseen += seen[k];
            assert_true(grouped || nseen <= 8);
            assert_true(kc < 0 || nseen == 4);
            /* The exhaustive minimum is found most of the time. */
            int ex = 0;
            for (int k = 1; k < 16; k++)
                if (err[k] < err[ex])
                    ex = k;
            visited_all += err[best] == err[ex];
            total++;
            fixed_found += kc >= 0 && err[best] == err[ex];
            fixed_total += kc >= 0;
            float bs, bo;
            cand(f, best, mn, mx, &bs, &bo);
            bp_qparams p;
            bp_format_fit_group(f, x, n, 0.0f, &p);
            if (p.scale != bs || p.offset != bo)
                fail_msg("%s n=%d t=%d: search chose (%g, %g), documented (%g, %g)", f->name, n,
                         t, (double)p.scale, (double)p.offset, (double)bs, (double)bo);
        }
    }
    /* The walks happen, and they find the grid's minimum most of the
     * time. */
    assert_true(walked > 0);
    assert_true(visited_all > total * 8 / 10);
    /* Both kinds of fourth probe happen, and four points suffice often. */
    assert_true(probes[0] > 0 && probes[1] > 0);
    assert_true(fixed_found > fixed_total * 7 / 10);
    print_message("exhaustive minimum found: %d / %d (fixed schedule %d / %d); probes %d / %d\n",
                  visited_all, total, fixed_found, fixed_total, probes[0], probes[1]);
}

/* All-zero, constant, single-spike and tiny groups: finite params, no NaN,
 * zero or tiny error. */
static void test_degenerate_groups(void **state)
{
    (void)state;
    bp_format m[64];
    size_t nf = bp_format_menu(m, 64);
    for (size_t i = 0; i < nf; i++) {
        bp_format *f = &m[i];
        float zero[32] = {0}, cst[32], spike[32] = {0}, tiny[32], neg[32];
        for (int j = 0; j < 32; j++) {
            cst[j] = 0.37f;
            tiny[j] = (j % 3 - 1) * 1e-30f;
            neg[j] = -0.5f - 0.01f * (float)j;
        }
        spike[5] = -3.0f;
        const float *groups[] = {zero, cst, spike, tiny, neg};
        double rel = f->kind == BP_FMT_MXFP4 || f->kind == BP_FMT_NVFP4 ? 0.1
                     : f->kind == BP_FMT_BF16                          ? 0x1p-8
                                                                       : 1e-3;
        for (int g = 0; g < 5; g++) {
            float amax = 0;
            for (int j = 0; j < 32; j++)
                amax = fmaxf(amax, fabsf(groups[g][j]));
            float tp = bp_format_tensor_param(f, amax);
            bp_qparams p;
            bp_format_fit_group(f, groups[g], 32, tp, &p);
            assert_true(isfinite(p.scale));
            assert_true(isfinite(p.offset));
            for (int j = 0; j < 32; j++) {
                float q = bp_format_decode(f, &p, bp_format_encode(f, &p, groups[g][j]));
                assert_true(isfinite(q));
                if (g == 0)
                    assert_true(q == 0.0f);
                if ((g == 1 || g == 2) && !(fabs(q - groups[g][j]) <= rel * amax + 1e-6))
                    fail_msg("%s: group %d: %g -> %g", f->name, g, (double)groups[g][j],
                             (double)q);
                if (g == 3)
                    assert_true(fabsf(q) <= 1e-29f);
            }
        }
        /* Through the row kernels too: one row per group kind. */
        if (!bp_format_supports(f, 5, 32))
            continue;
        float w[5 * 32];
        for (int g = 0; g < 5; g++)
            memcpy(w + 32 * g, groups[g], sizeof zero);
        double sse[5];
        float tp = bp_format_tensor_param(f, 3.0f);
        assert_int_equal(bp_format_rtn_error_rows(f, w, 5, 32, tp, NULL, sse, NULL, NULL, NULL),
                         BP_OK);
        assert_true(sse[0] == 0.0);
        for (int g = 0; g < 5; g++)
            assert_true(isfinite(sse[g]));
    }
}

/* fp8 rows never saturate their largest element (the scale is rounded up
 * to fp16); a row whose scale underflows fp16 still works. */
static void test_fp8_row_scale(void **state)
{
    (void)state;
    bp_format f = fmt("fp8_e4m3");
    float x[64];
    tu_rng r = {3};
    for (int t = 0; t < 1000; t++) {
        float sc = (float)exp2(40.0 * tu_unif(&r) - 30.0);
        for (int j = 0; j < 64; j++)
            x[j] = tu_gauss(&r) * sc;
        bp_qparams p;
        bp_format_fit_group(&f, x, 64, 0.0f, &p);
        assert_true(p.scale > 0.0f);
        assert_true(bp_f16_to_f32(bp_f32_to_f16(p.scale)) == p.scale);
        for (int j = 0; j < 64; j++) {
            uint16_t c = bp_format_encode(&f, &p, x[j]);
            assert_true((c & 0x7f) != 0x7f);
            float q = bp_format_decode(&f, &p, c);
            double tol = fmax(fabs(x[j]) * 0x1p-4, p.scale * 0x1p-10) * (1 + 1e-6);
            if (fabs(q - x[j]) > tol)
                fail_msg("fp8: %g -> %g (scale %g)", (double)x[j], (double)q, (double)p.scale);
        }
    }
    float small[4] = {1e-12f, -2e-12f, 0, 5e-13f};
    bp_qparams p;
    bp_format_fit_group(&f, small, 4, 0.0f, &p);
    assert_true(p.scale > 0.0f);
}

/* mxfp4's scale is the standard E8M0 exponent or the one above it,
 * whichever has the lower error. */
static void test_mxfp4_scale_choice(void **state)
{
    (void)state;
    bp_format f = fmt("mxfp4");
    tu_rng r = {5};
    int bumped = 0;
    for (int t = 0; t < 500; t++) {
        float x[32];
        for (int j = 0; j < 32; j++)
            x[j] = tu_gauss(&r);
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        bp_qparams p;
        bp_format_fit_group(&f, x, 32, 0.0f, &p);
        int e2;
        frexpf(amax, &e2);
        float std = ldexpf(1.0f, e2 - 1 - 2);
        assert_true(p.scale == std || p.scale == 2 * std);
        bp_qparams ps = {std, 0};
        assert_true(group_err(&f, &p, x, 32) <= group_err(&f, &ps, x, 32) * (1 + 1e-5));
        bumped += p.scale != std;
    }
    assert_true(bumped > 0);
}

/* nvfp4: block scale = e4m3(amax / 6 / tensor scale). */
static void test_nvfp4_block_scale(void **state)
{
    (void)state;
    bp_format f = fmt("nvfp4");
    float x[16];
    for (int j = 0; j < 16; j++)
        x[j] = 0.1f * (float)(j - 8);
    float tp = bp_format_tensor_param(&f, 2.0f);
    bp_qparams p;
    bp_format_fit_group(&f, x, 16, tp, &p);
    /* amax 0.8: 0.8 / 6 / (2 / 2688) = 179.2 -> E4M3 176 */
    assert_true(p.scale == 176.0f * tp);
    bp_format_fit_group(&f, x, 16, 0.0f, &p);
    assert_true(p.scale == 0.0f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e2m1_table),
        cmocka_unit_test(test_e4m3_table),
        cmocka_unit_test(test_16bit_keeps),
        cmocka_unit_test(test_clipping_never_worse),
        cmocka_unit_test(test_search_is_documented),
        cmocka_unit_test(test_degenerate_groups),
        cmocka_unit_test(test_fp8_row_scale),
        cmocka_unit_test(test_mxfp4_scale_choice),
        cmocka_unit_test(test_nvfp4_block_scale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
