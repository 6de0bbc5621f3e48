/* Tests for GPTQ: on-grid outputs, error below RTN, identity Hessian,
 * dead inputs, a naive reference, invalid inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/gptq.h"
#include "quant_testutil.h"

#define R 64
#define C 256
#define T 2048

typedef struct {
    float *w;
    double *x, *h;
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    fx->w = malloc(R * C * sizeof *fx->w);
    fx->x = malloc((size_t)T * C * sizeof *fx->x);
    fx->h = malloc((size_t)C * C * sizeof *fx->h);
    qt_weights(fx->w, R * C, 11);
    qt_inputs(fx->x, T, C, 12);
    qt_hessian(fx->x, T, C, fx->h);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    free(fx->w);
    free(fx->x);
    free(fx->h);
    free(fx);
    return 0;
}

static bp_format fmt(const char *name)
{
    bp_format f;
    bp_error e;
    int rc = bp_format_parse(name, &f, &e);
    if (rc)
        fail_msg("parse %s: %s", name, e.msg);
    return f;
}

static float absmax(const float *w, int64_t n)
{
    float m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fabsf(w[i]) > m ? fabsf(w[i]) : m;
    return m;
}

/* RTN deq + hfull of the RTN weights. */
static double rtn_hfull(const bp_format *f, const float *w, const double *h,
                        uint16_t *codes, bp_qparams *params, float *deq)
{
    bp_error e;
    float tp = bp_format_tensor_param(f, absmax(w, R * C));
    assert_int_equal(bp_format_quantize_rows(f, w, R, C, tp, codes, params, &e),
                     BP_OK);
    bp_format_dequantize_rows(f, codes, params, R, C, deq);
    double acc = 0.0;
    assert_int_equal(bp_quant_hfull_rows(w, deq, R, C, h, NULL, &acc, &e), BP_OK);
    return acc;
}

static void test_gptq_on_grid_every_format(void **state)
{
    fixture *fx = *state;
    bp_format menu[256];
    size_t nf = bp_format_menu(menu, 256);
    assert_true(nf > 0 && nf <= 256);
    uint16_t *codes = malloc(R * C * sizeof *codes);
    bp_qparams *params = malloc(R * C * sizeof *params);
    float *deq = malloc(R * C * sizeof *deq);
    float *deq2 = malloc(R * C * sizeof *deq2);
    uint16_t *codes2 = malloc(R * C * sizeof *codes2);
    bp_qparams *params2 = malloc(R * C * sizeof *params2);
    for (size_t i = 0; i < nf; i++) {
        const bp_format *f = &menu[i];
        if (!bp_format_supports(f, R, C))
            continue;
        bp_error e;
        float tp = -1;
        int rc = bp_gptq_quantize(f, fx->w, R, C, fx->h, C, C,
                                  BP_GPTQ_DAMP_DEFAULT, codes, params, &tp,
                                  deq, &e);
        if (rc)
            fail_msg("%s: %s", f->name, e.msg);
        assert_true(tp >= 0);
        /* dequantize(codes, params) is exactly the returned weights */
        bp_format_dequantize_rows(f, codes, params, R, C, deq2);
        assert_memory_equal(deq, deq2, R * C * sizeof *deq);
        /* every code is a representable value: in range, and re-encoding
         * its value under the same parameters gives the same value */
        int64_t gpr = bp_format_groups_per_row(f, C);
        for (int r = 0; r < R; r++)
            for (int j = 0; j < C; j++) {
                uint16_t c = codes[r * C + j];
                if (f->bits < 16)
                    assert_true(c < (1u << f->bits));
                const bp_qparams *p =
                    params + r * gpr + (f->group ? j / f->group : 0);
                float v = bp_format_decode(f, p, c);
                assert_true(isfinite(v));
                assert_true(bp_format_decode(f, p, bp_format_encode(f, p, v)) == v);
            }
        /* packing works unchanged: pack, unpack, same dequantized values */
        uint64_t nb = bp_format_bytes(f, R, C);
        uint8_t *buf = malloc(nb);
        float tp2 = -1;
        rc = bp_format_pack(f, R, C, codes, params, tp, buf, nb, &e);
        if (rc)
            fail_msg("%s: pack: %s", f->name, e.msg);
        rc = bp_format_unpack(f, R, C, buf, nb, codes2, params2, &tp2, &e);
        if (rc)
            fail_msg("%s: unpack: %s", f->name, e.msg);
        bp_format_dequantize_rows(f, codes2, params2, R, C, deq2);
        assert_memory_equal(deq, deq2, R * C * sizeof *deq);
        free(buf);
    }
    free(codes);
    free(params);
    free(deq);
    free(deq2);
    free(codes2);
    free(params2);
}

static void test_gptq_beats_rtn(void **state)
{
    fixture *fx = *state;
    static const char *names[] = {"int4_g128_asym", "int3_g64_sym",
                                  "int2_pc_asym",   "mxfp4",
                                  "nvfp4",          "fp8_e4m3"};
    uint16_t *codes = malloc(R * C * sizeof *codes);
    bp_qparams *params = malloc(R * C * sizeof *params);
    float *deq = malloc(R * C * sizeof *deq);
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        bp_format f = fmt(names[i]);
        double rtn = rtn_hfull(&f, fx->w, fx->h, codes, params, deq);
        double g = -1.0;
        bp_error e;
        int rc = bp_gptq_error(&f, fx->w, R, C, fx->h, C, C,
                               BP_GPTQ_DAMP_DEFAULT, &g, NULL, &e);
        if (rc)
            fail_msg("%s: %s", names[i], e.msg);
        print_message("%-16s hfull rtn %.6e gptq %.6e ratio %.3f\n", names[i],
                      rtn, g, g / rtn);
        assert_true(g >= 0 && g <= rtn);
        if (f.kind == BP_FMT_INT && f.bits <= 3)
            assert_true(g < 0.8 * rtn);
    }
    free(codes);
    free(params);
    free(deq);
}

/* Diagonal H (identity or any positive diagonal): U is diagonal, no error
 * feeds back, parameters are fitted on unchanged weights, so GPTQ is RTN
 * exactly, for every format, whatever the damping. */
static void test_gptq_diagonal_h_is_rtn(void **state)
{
    fixture *fx = *state;
    double *h = calloc((size_t)C * C, sizeof *h);
    uint16_t *c1 = malloc(R * C * sizeof *c1), *c2 = malloc(R * C * sizeof *c2);
    bp_qparams *p1 = malloc(R * C * sizeof *p1), *p2 = malloc(R * C * sizeof *p2);
    float *d1 = malloc(R * C * sizeof *d1), *d2 = malloc(R * C * sizeof *d2);
    bp_format menu[256];
    size_t nf = bp_format_menu(menu, 256);
    for (int variant = 0; variant < 2; variant++) {
        qt_rng rng = {99};
        for (int j = 0; j < C; j++)
            h[j * C + j] = variant == 0 ? 1.0 : 0.1 + 10.0 * qt_unif(&rng);
        for (size_t i = 0; i < nf; i++) {
            const bp_format *f = &menu[i];
            if (!bp_format_supports(f, R, C))
                continue;
            bp_error e;
            assert_int_equal(bp_gptq_quantize(f, fx->w, R, C, h, C, C, 0.01, c1,
                                              p1, NULL, d1, &e), BP_OK);
            rtn_hfull(f, fx->w, h, c2, p2, d2);
            int64_t np = R * bp_format_groups_per_row(f, C);
            if (memcmp(c1, c2, R * C * sizeof *c1) ||
                memcmp(p1, p2, (size_t)np * sizeof *p1) ||
                memcmp(d1, d2, R * C * sizeof *d1))
                fail_msg("%s: GPTQ with diagonal H differs from RTN", f->name);
        }
    }
    free(h);
    free(c1);
    free(c2);
    free(p1);
    free(p2);
    free(d1);
    free(d2);
}

static void test_gptq_dead_columns(void **state)
{
    fixture *fx = *state;
    static const int dead[] = {0, 10, 77, 128, 200, 255};
    double *x = malloc((size_t)T * C * sizeof *x);
    double *h = malloc((size_t)C * C * sizeof *h);
    memcpy(x, fx->x, (size_t)T * C * sizeof *x);
    for (int t = 0; t < T; t++)
        for (size_t k = 0; k < sizeof dead / sizeof *dead; k++)
            x[(size_t)t * C + dead[k]] = 0.0;
    qt_hessian(x, T, C, h);
    bp_gptq_factor *fac = NULL;
    bp_error e;
    assert_int_equal(bp_gptq_factor_new(h, C, C, 0.01, &fac, &e), BP_OK);
    assert_int_equal(bp_gptq_factor_dead(fac), 6);
    assert_int_equal(bp_gptq_factor_cols(fac), C);

    uint16_t *codes = malloc(R * C * sizeof *codes);
    bp_qparams *params = malloc(R * C * sizeof *params);
    float *deq = malloc(R * C * sizeof *deq);
    static const char *names[] = {"int4_g128_asym", "int3_g64_sym",
                                  "int2_pc_asym", "nvfp4"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        bp_format f = fmt(names[i]);
        float tp = bp_format_tensor_param(&f, absmax(fx->w, R * C));
        assert_int_equal(bp_gptq_quantize_rows(&f, fac, fx->w, R, C, tp, codes,
                                               params, deq, &e), BP_OK);
        /* dead weights were zeroed: each holds the value 0 rounds to */
        int64_t gpr = bp_format_groups_per_row(&f, C);
        for (int r = 0; r < R; r++)
            for (size_t k = 0; k < sizeof dead / sizeof *dead; k++) {
                int j = dead[k];
                const bp_qparams *p = params + r * gpr + (f.group ? j / f.group : 0);
                assert_true(deq[r * C + j] ==
                            bp_format_decode(&f, p, bp_format_encode(&f, p, 0.0f)));
            }
        double g = 0.0, rtn;
        assert_int_equal(bp_quant_hfull_rows(fx->w, deq, R, C, h, NULL, &g, &e),
                         BP_OK);
        rtn = rtn_hfull(&f, fx->w, h, codes, params, deq);
        assert_true(isfinite(g) && g <= rtn);
    }
    bp_gptq_factor_destroy(&fac);
    bp_gptq_factor_destroy(&fac); /* safe twice */
    assert_null(fac);

    /* all inputs dead: H = 0 becomes I, GPTQ of all-zero weights */
    memset(h, 0, (size_t)C * C * sizeof *h);
    bp_format f = fmt("int4_g128_asym");
    assert_int_equal(bp_gptq_quantize(&f, fx->w, R, C, h, C, C, 0.01, codes,
                                      params, NULL, deq, &e), BP_OK);
    for (int i = 0; i < R * C; i++)
        assert_true(fabsf(deq[i]) < 1e-3f);
    free(codes);
    free(params);
    free(deq);
    free(x);
    free(h);
}

/* Naive unblocked GPTQ in double with U from the textbook route
 * (Cholesky, inverse, Cholesky of the inverse), for int formats with group
 * parameters fitted like the module does. The lazy blocks and the reversed
 * Cholesky must agree with it up to float rounding. */
static void test_gptq_matches_naive_reference(void **state)
{
    fixture *fx = *state;
    double *a = malloc((size_t)C * C * sizeof *a);
    memcpy(a, fx->h, (size_t)C * C * sizeof *a);
    double md = 0;
    for (int j = 0; j < C; j++)
        md += a[j * C + j];
    md = 0.01 * md / C;
    for (int j = 0; j < C; j++)
        a[j * C + j] += md;
    assert_int_equal(LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', C, a, C), 0);
    assert_int_equal(LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'L', C, a, C), 0);
    for (int i = 0; i < C; i++) /* symmetrize from the lower triangle */
        for (int j = i + 1; j < C; j++)
            a[i * C + j] = a[j * C + i];
    assert_int_equal(LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', C, a, C), 0);

    static const char *names[] = {"int3_g64_sym", "int2_pc_asym"};
    uint16_t *codes = malloc(R * C * sizeof *codes);
    bp_qparams *params = malloc(R * C * sizeof *params);
    float *deq = malloc(R * C * sizeof *deq);
    float *ref = malloc(R * C * sizeof *ref);
    double *wr = malloc(C * sizeof *wr);
    float *tmp = malloc(C * sizeof *tmp);
    for (size_t i = 0; i < 2; i++) {
        bp_format f = fmt(names[i]);
        bp_error e;
        assert_int_equal(bp_gptq_quantize(&f, fx->w, R, C, fx->h, C, C, 0.01,
                                          codes, params, NULL, deq, &e), BP_OK);
        int same = 0;
        for (int r = 0; r < R; r++) {
            bp_qparams p;
            for (int j = 0; j < C; j++)
                wr[j] = fx->w[r * C + j];
            if (!f.group)
                bp_format_fit_group(&f, fx->w + r * C, C, 0, &p);
            for (int j = 0; j < C; j++) {
                if (f.group && j % f.group == 0) {
                    for (int k = 0; k < f.group; k++)
                        tmp[k] = (float)wr[j + k];
                    bp_format_fit_group(&f, tmp, f.group, 0, &p);
                }
                float q = bp_format_decode(&f, &p,
                                           bp_format_encode(&f, &p, (float)wr[j]));
                ref[r * C + j] = q;
                /* float vs double working weights can move a group scale by
                 * an ulp or flip a rounding tie: compare values to 1e-4 */
                same += fabsf(q - deq[r * C + j]) <= 1e-4f * fabsf(q) + 1e-30f;
                double err = (wr[j] - q) / a[j * C + j];
                for (int k = j + 1; k < C; k++)
                    wr[k] -= err * a[j * C + k];
            }
        }
        double g = 0, gr = 0;
        assert_int_equal(bp_quant_hfull_rows(fx->w, deq, R, C, fx->h, NULL, &g,
                                             &e), BP_OK);
        assert_int_equal(bp_quant_hfull_rows(fx->w, ref, R, C, fx->h, NULL, &gr,
                                             &e), BP_OK);
        print_message("%-14s same values %.4f, hfull %.6e vs naive %.6e\n",
                      names[i], (double)same / (R * C), g, gr);
        assert_true(same >= 0.99 * R * C);
        assert_true(fabs(g - gr) <= 0.05 * gr);
    }
    free(a);
    free(codes);
    free(params);
    free(deq);
    free(ref);
    free(wr);
    free(tmp);
}

static void test_gptq_row_chunks(void **state)
{
    fixture *fx = *state;
    bp_format f = fmt("nvfp4");
    bp_error e;
    uint16_t *c1 = malloc(R * C * sizeof *c1), *c2 = malloc(R * C * sizeof *c2);
    bp_qparams *p1 = malloc(R * C * sizeof *p1), *p2 = malloc(R * C * sizeof *p2);
    float tp = 0;
    assert_int_equal(bp_gptq_quantize(&f, fx->w, R, C, fx->h, C, C, 0.01, c1,
                                      p1, &tp, NULL, &e), BP_OK);
    bp_gptq_factor *fac = NULL;
    assert_int_equal(bp_gptq_factor_new(fx->h, C, C, 0.01, &fac, &e), BP_OK);
    int64_t gpr = bp_format_groups_per_row(&f, C);
    int cuts[] = {0, 5, 6, 40, R};
    double acc = 0.0, whole = 0.0, rows[R];
    for (int k = 0; k < 4; k++) {
        int r0 = cuts[k], n = cuts[k + 1] - cuts[k];
        assert_int_equal(bp_gptq_quantize_rows(&f, fac, fx->w + r0 * C, n, C, tp,
                                               c2 + r0 * C, p2 + r0 * gpr, NULL,
                                               &e), BP_OK);
        assert_int_equal(bp_gptq_error_rows(&f, fac, fx->h, fx->w + r0 * C, n,
                                            C, tp, rows + r0, &acc, NULL, &e),
                         BP_OK);
    }
    assert_memory_equal(c1, c2, R * C * sizeof *c1);
    assert_memory_equal(p1, p2, R * gpr * sizeof *p1);
    assert_int_equal(bp_gptq_error(&f, fx->w, R, C, fx->h, C, C, 0.01, &whole,
                                   NULL, &e), BP_OK);
    assert_memory_equal(&acc, &whole, sizeof acc);
    bp_gptq_factor_destroy(&fac);
    free(c1);
    free(c2);
    free(p1);
    free(p2);
}

static void test_gptq_invalid_inputs(void **state)
{
    fixture *fx = *state;
    bp_format f = fmt("int4_g128_asym");
    uint16_t *codes = malloc(R * C * sizeof *codes);
    bp_qparams *params = malloc(R * C * sizeof *params);
    double *h = malloc((size_t)C * C * sizeof *h);
    float *w = malloc(R * C * sizeof *w);
    bp_error e;
#define Q(hh, hr, hc, ww, rows, cols, damp)                                  \
    bp_gptq_quantize(&f, ww, rows, cols, hh, hr, hc, damp, codes, params,   \
                     NULL, NULL, &e)

    memcpy(h, fx->h, (size_t)C * C * sizeof *h);
    h[3 * C + 7] = NAN;
    assert_int_equal(Q(h, C, C, fx->w, R, C, 0.01), BP_EINVAL);
    assert_non_null(strstr(e.msg, "not finite"));
    memcpy(h, fx->h, (size_t)C * C * sizeof *h);
    /* non-square, cols mismatch */
    assert_int_equal(Q(h, C, C - 1, fx->w, R, C, 0.01), BP_EINVAL);
    assert_int_equal(Q(h, 128, 128, fx->w, R, C, 0.01), BP_EINVAL);
    assert_non_null(strstr(e.msg, "columns"));
    bp_gptq_factor *fac = NULL;
    assert_int_equal(bp_gptq_factor_new(h, C, C - 1, 0.01, &fac, &e), BP_EINVAL);
    assert_null(fac);
    double *h128 = calloc(128 * 128, sizeof *h128);
    for (int j = 0; j < 128; j++)
        h128[j * 128 + j] = 1.0;
    assert_int_equal(bp_gptq_factor_new(h128, 128, 128, 0.01, &fac, &e), BP_OK);
    free(h128);
    assert_int_equal(bp_gptq_quantize_rows(&f, fac, fx->w, R, C, 0, codes,
                                           params, NULL, &e), BP_EINVAL);
    bp_gptq_factor_destroy(&fac);
    /* shapes and pointers */
    assert_int_equal(Q(h, C, C, fx->w, 0, C, 0.01), BP_EINVAL);
    assert_int_equal(Q(h, C, C, NULL, R, C, 0.01), BP_EINVAL);
    assert_int_equal(Q(NULL, C, C, fx->w, R, C, 0.01), BP_EINVAL);
    assert_int_equal(bp_gptq_quantize(NULL, fx->w, R, C, h, C, C, 0.01, codes,
                                      params, NULL, NULL, &e), BP_EINVAL);
    /* 250 columns: g128 cannot store it */
    assert_int_equal(Q(h, 250, 250, fx->w, R, 250, 0.01), BP_EINVAL);
    /* damping */
    assert_int_equal(Q(h, C, C, fx->w, R, C, NAN), BP_EINVAL);
    assert_int_equal(Q(h, C, C, fx->w, R, C, -0.5), BP_EINVAL);
    /* NaN weight */
    memcpy(w, fx->w, R * C * sizeof *w);
    w[9 * C + 1] = INFINITY;
    assert_int_equal(Q(h, C, C, w, R, C, 0.01), BP_EINVAL);
    assert_non_null(strstr(e.msg, "[9, 1]"));
    /* negative diagonal, asymmetric */
    h[4 * C + 4] = -1.0;
    assert_int_equal(Q(h, C, C, fx->w, R, C, 0.01), BP_EINVAL);
    assert_non_null(strstr(e.msg, "negative"));
    memcpy(h, fx->h, (size_t)C * C * sizeof *h);
    h[2 * C + 100] += 0.5 * sqrt(h[2 * C + 2] * h[100 * C + 100]);
    assert_int_equal(Q(h, C, C, fx->w, R, C, 0.01), BP_EINVAL);
    assert_non_null(strstr(e.msg, "symmetric"));
    /* indefinite: strong negative eigenvalue that damping cannot fix */
    memset(h, 0, (size_t)C * C * sizeof *h);
    for (int j = 0; j < C; j++)
        h[j * C + j] = 1.0;
    h[0 * C + 1] = h[1 * C + 0] = 3.0;
    assert_int_equal(Q(h, C, C, fx->w, R, C, 0.01), BP_EFORMAT);
    assert_non_null(strstr(e.msg, "positive definite"));
    /* rank-deficient but PSD without damping: singular -> error, with the
     * default damping -> fine */
    memset(h, 0, (size_t)C * C * sizeof *h);
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++)
            h[i * C + j] = 1.0; /* rank one */
    assert_int_equal(Q(h, C, C, fx->w, R, C, 0.0), BP_EFORMAT);
    assert_int_equal(Q(h, C, C, fx->w, R, C, 0.01), BP_OK);
    assert_int_equal(bp_gptq_error(&f, fx->w, R, C, h, C, C, 0.01, NULL, NULL,
                                   &e), BP_EINVAL);
    /* huge weights: the feedback overflows float; reported, never a crash */
    for (int i = 0; i < R * C; i++)
        w[i] = (i % 2 ? 1e38f : -1e38f) * (float)(1 + i % 3);
    int rc = bp_gptq_quantize(&f, w, R, C, fx->h, C, C, 0.01, codes, params,
                              NULL, NULL, &e);
    print_message("huge weights: %s %s\n", bp_error_name(rc), e.msg);
    assert_true(rc == BP_OK || rc == BP_EFORMAT);
    /* NULL bp_error is accepted */
    assert_int_equal(bp_gptq_quantize(&f, fx->w, R, C, h, C, C - 1, 0.01, codes,
                                      params, NULL, NULL, NULL), BP_EINVAL);
#undef Q
    free(codes);
    free(params);
    free(h);
    free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gptq_on_grid_every_format),
        cmocka_unit_test(test_gptq_beats_rtn),
        cmocka_unit_test(test_gptq_diagonal_h_is_rtn),
        cmocka_unit_test(test_gptq_dead_columns),
        cmocka_unit_test(test_gptq_matches_naive_reference),
        cmocka_unit_test(test_gptq_row_chunks),
        cmocka_unit_test(test_gptq_invalid_inputs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
