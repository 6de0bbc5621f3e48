/* Tests for GPTQ act-order with static groups: the column order, the static
 * parameters, equality with natural order where no feedback exists, error
 * against RTN, row-chunk and thread-count invariance, invalid uses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/gptq.h"
#include "quant_testutil.h"

#define R 64
#define C 256
#define T 2048

/* Group formats, per-row formats and the float grids with their own
 * scales: every kind of parameter the static fit must handle. */
static const char *const FORMATS[] = {
    "int3_g128_asym", "int4_g32_sym", "int2_g64_asym", "int3_pc_sym",
    "int4_pc_asym",   "fp8_e4m3",     "mxfp4",         "nvfp4"};
#define NFMT (sizeof FORMATS / sizeof *FORMATS)

typedef struct {
    float *w;
    double *h;
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    double *x = malloc((size_t)T * C * sizeof *x);
    fx->w = malloc(R * C * sizeof *fx->w);
    fx->h = malloc((size_t)C * C * sizeof *fx->h);
    qt_weights(fx->w, R * C, 31);
    qt_inputs(x, T, C, 32);
    qt_hessian(x, T, C, fx->h);
    free(x);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    free(fx->w);
    free(fx->h);
    free(fx);
    return 0;
}

static bp_format fmt(const char *name)
{
    bp_format f;
    bp_error e;
    if (bp_format_parse(name, &f, &e))
        fail_msg("parse %s: %s", name, e.msg);
    return f;
}

static float absmax(const float *w, int64_t n)
{
    float m = 0.0f;
    for (int64_t i = 0; i < n; i++)
        m = fabsf(w[i]) > m ? fabsf(w[i]) : m;
    return m;
}

typedef struct {
    uint16_t *codes;
    bp_qparams *params;
    float *deq;
} result;

static result result_new(int64_t rows, int64_t cols)
{
    size_t n = (size_t)rows * (size_t)cols;
    /* one parameter set per column bounds every format's count */
    result r = {malloc(n * sizeof *r.codes), calloc(n, sizeof *r.params),
                malloc(n * sizeof *r.deq)};
    return r;
}

static void result_free(result *r)
{
    free(r->codes);
    free(r->params);
    free(r->deq);
}

static void quantize(const bp_format *f, const float *w, int64_t rows,
                     int64_t cols, const double *h, unsigned flags, result *r)
{
    bp_error e;
    if (bp_gptq_quantize_ex(f, w, rows, cols, h, cols, cols,
                            BP_GPTQ_DAMP_DEFAULT, flags, r->codes, r->params,
                            NULL, r->deq, &e))
        fail_msg("%s: %s", f->name, e.msg);
}

static void test_perm_orders_by_decreasing_diag(void **state)
{
    fixture *fx = *state;
    /* ties (3.0 at 1 and 4, 0 at 2 and 5) must go by index */
    enum { N = 6 };
    double h[N * N] = {0};
    const double d[N] = {1.0, 3.0, 0.0, 5.0, 3.0, 0.0};
    for (int j = 0; j < N; j++)
        h[j * N + j] = d[j];
    int64_t perm[N];
    bp_error e;
    assert_int_equal(bp_gptq_act_order_perm(h, N, perm, &e), BP_OK);
    const int64_t want[N] = {3, 1, 4, 0, 2, 5};
    for (int i = 0; i < N; i++)
        assert_int_equal(perm[i], want[i]);

    /* the fixture's Hessian: a permutation, diagonal non-increasing, and
     * the factor reports the same order */
    int64_t *p = malloc(C * sizeof *p), *q = malloc(C * sizeof *q);
    unsigned char seen[C] = {0};
    assert_int_equal(bp_gptq_act_order_perm(fx->h, C, p, &e), BP_OK);
    for (int i = 0; i < C; i++) {
        assert_true(p[i] >= 0 && p[i] < C && !seen[p[i]]);
        seen[p[i]] = 1;
        if (i > 0) {
            double a = fx->h[p[i - 1] * C + p[i - 1]], b = fx->h[p[i] * C + p[i]];
            assert_true(a > b || (a == b && p[i - 1] < p[i]));
        }
    }
    bp_gptq_factor *fac = NULL;
    assert_int_equal(bp_gptq_factor_new_ex(fx->h, C, C, BP_GPTQ_DAMP_DEFAULT,
                                           BP_GPTQ_ACT_ORDER, &fac, &e),
                     BP_OK);
    assert_int_equal(bp_gptq_factor_act_order(fac, q), 1);
    assert_memory_equal(p, q, C * sizeof *p);
    bp_gptq_factor_destroy(&fac);
    assert_int_equal(bp_gptq_factor_new(fx->h, C, C, BP_GPTQ_DAMP_DEFAULT,
                                        &fac, &e),
                     BP_OK);
    assert_int_equal(bp_gptq_factor_act_order(fac, q), 0);
    bp_gptq_factor_destroy(&fac);
    free(p);
    free(q);
}

/* Static groups: the parameters are exactly the ones fitted on the original
 * weights in natural order (groups with dead columns read as 0, per-row
 * formats on the raw row), the codes decode through them to the returned
 * weights, and every group's codes use only its own parameters. */
static void test_static_params_from_original_weights(void **state)
{
    fixture *fx = *state;
    double *h = malloc((size_t)C * C * sizeof *h);
    memcpy(h, fx->h, (size_t)C * C * sizeof *h);
    /* two dead inputs, one inside the first group */
    const int dead[2] = {5, 200};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < C; i++)
            h[dead[k] * C + i] = h[i * C + dead[k]] = 0.0;
    result r = result_new(R, C);
    float *deq2 = malloc(R * C * sizeof *deq2);
    float *row = malloc(C * sizeof *row);
    for (size_t i = 0; i < NFMT; i++) {
        bp_format f = fmt(FORMATS[i]);
        quantize(&f, fx->w, R, C, h, BP_GPTQ_ACT_ORDER, &r);
        float tp = bp_format_tensor_param(&f, absmax(fx->w, R * C));
        int64_t gpr = bp_format_groups_per_row(&f, C);
        int64_t g = f.group > 0 ? f.group : C;
        for (int64_t rr = 0; rr < R; rr++) {
            memcpy(row, fx->w + rr * C, C * sizeof *row);
            if (f.group > 0)
                row[dead[0]] = row[dead[1]] = 0.0f;
            for (int64_t k = 0; k < gpr; k++) {
                bp_qparams want;
                bp_format_fit_group(&f, row + k * g, g, tp, &want);
                const bp_qparams *got = &r.params[rr * gpr + k];
                if (memcmp(&want, got, sizeof want))
                    fail_msg("%s row %lld group %lld: params (%g, %g), fit "
                             "on the original weights gives (%g, %g)",
                             f.name, (long long)rr, (long long)k,
                             (double)got->scale, (double)got->offset,
                             (double)want.scale, (double)want.offset);
            }
        }
        bp_format_dequantize_rows(&f, r.codes, r.params, R, C, deq2);
        if (memcmp(deq2, r.deq, R * C * sizeof *deq2))
            fail_msg("%s: codes do not decode through the static params to "
                     "the returned weights", f.name);
        /* the act-order result is not the natural-order one (feedback in a
         * different order really happened) */
        result n = result_new(R, C);
        quantize(&f, fx->w, R, C, h, 0, &n);
        assert_true(memcmp(n.codes, r.codes, R * C * sizeof *n.codes) != 0);
        result_free(&n);
    }
    free(row);
    free(deq2);
    free(h);
    result_free(&r);
}

/* With a diagonal H the feedback matrix is the identity: natural-order
 * groups are fitted on unchanged weights too, so a diagonal that already
 * decreases (identity permutation) must give natural order bit for bit,
 * dead tail columns included. */
static void test_decreasing_diagonal_equals_natural(void **state)
{
    fixture *fx = *state;
    double *h = calloc((size_t)C * C, sizeof *h);
    for (int j = 0; j < C; j++)
        h[j * C + j] = j < C - 3 ? 1000.0 - 3.0 * j : 0.0;
    int64_t perm[C];
    bp_error e;
    assert_int_equal(bp_gptq_act_order_perm(h, C, perm, &e), BP_OK);
    for (int j = 0; j < C; j++)
        assert_int_equal(perm[j], j);
    result a = result_new(R, C), b = result_new(R, C);
    for (size_t i = 0; i < NFMT; i++) {
        bp_format f = fmt(FORMATS[i]);
        int64_t np = R * bp_format_groups_per_row(&f, C);
        quantize(&f, fx->w, R, C, h, 0, &a);
        quantize(&f, fx->w, R, C, h, BP_GPTQ_ACT_ORDER, &b);
        if (memcmp(a.codes, b.codes, R * C * sizeof *a.codes) ||
            memcmp(a.params, b.params, (size_t)np * sizeof *a.params) ||
            memcmp(a.deq, b.deq, R * C * sizeof *a.deq))
            fail_msg("%s: act-order differs from natural order", f.name);
    }
    result_free(&a);
    result_free(&b);
    free(h);
}

/* On correlated inputs act-order GPTQ must beat plain rounding in the
 * output error it minimizes. */
static void test_error_below_rtn(void **state)
{
    fixture *fx = *state;
    result r = result_new(R, C), n = result_new(R, C);
    uint16_t *codes = malloc(R * C * sizeof *codes);
    bp_qparams *params = malloc(R * C * sizeof *params);
    float *rtn = malloc(R * C * sizeof *rtn);
    bp_error e;
    for (size_t i = 0; i < NFMT; i++) {
        bp_format f = fmt(FORMATS[i]);
        float tp = bp_format_tensor_param(&f, absmax(fx->w, R * C));
        assert_int_equal(bp_format_quantize_rows(&f, fx->w, R, C, tp, codes,
                                                 params, &e),
                         BP_OK);
        bp_format_dequantize_rows(&f, codes, params, R, C, rtn);
        quantize(&f, fx->w, R, C, fx->h, BP_GPTQ_ACT_ORDER, &r);
        quantize(&f, fx->w, R, C, fx->h, 0, &n);
        double e_rtn = 0, e_act = 0, e_nat = 0;
        assert_int_equal(bp_quant_hfull_rows(fx->w, rtn, R, C, fx->h, NULL,
                                             &e_rtn, &e), BP_OK);
        assert_int_equal(bp_quant_hfull_rows(fx->w, r.deq, R, C, fx->h, NULL,
                                             &e_act, &e), BP_OK);
        assert_int_equal(bp_quant_hfull_rows(fx->w, n.deq, R, C, fx->h, NULL,
                                             &e_nat, &e), BP_OK);
        print_message("%-16s hfull rtn %.4e natural %.4e act-order %.4e\n",
                      f.name, e_rtn, e_nat, e_act);
        if (!(e_act < e_rtn))
            fail_msg("%s: act-order GPTQ error %g not below RTN %g", f.name,
                     e_act, e_rtn);
        /* the metric entry point agrees with quantize + hfull */
        double m;
        assert_int_equal(bp_gptq_error_ex(&f, fx->w, R, C, fx->h, C, C,
                                          BP_GPTQ_DAMP_DEFAULT,
                                          BP_GPTQ_ACT_ORDER, &m, NULL, &e),
                         BP_OK);
        assert_memory_equal(&m, &e_act, sizeof m);
    }
    free(codes);
    free(params);
    free(rtn);
    result_free(&r);
    result_free(&n);
}

/* Rows are independent: row chunks of one tensor give one call's bytes. */
static void test_row_chunks(void **state)
{
    fixture *fx = *state;
    bp_error e;
    bp_gptq_factor *fac = NULL;
    assert_int_equal(bp_gptq_factor_new_ex(fx->h, C, C, BP_GPTQ_DAMP_DEFAULT,
                                           BP_GPTQ_ACT_ORDER, &fac, &e),
                     BP_OK);
    result a = result_new(R, C), b = result_new(R, C);
    for (size_t i = 0; i < NFMT; i++) {
        bp_format f = fmt(FORMATS[i]);
        float tp = bp_format_tensor_param(&f, absmax(fx->w, R * C));
        int64_t gpr = bp_format_groups_per_row(&f, C);
        assert_int_equal(bp_gptq_quantize_rows(&f, fac, fx->w, R, C, tp,
                                               a.codes, a.params, a.deq, &e),
                         BP_OK);
        const int64_t split = 23;
        assert_int_equal(bp_gptq_quantize_rows(&f, fac, fx->w, split, C, tp,
                                               b.codes, b.params, b.deq, &e),
                         BP_OK);
        assert_int_equal(bp_gptq_quantize_rows(&f, fac, fx->w + split * C,
                                               R - split, C, tp,
                                               b.codes + split * C,
                                               b.params + split * gpr,
                                               b.deq + split * C, &e),
                         BP_OK);
        if (memcmp(a.codes, b.codes, R * C * sizeof *a.codes) ||
            memcmp(a.params, b.params, (size_t)(R * gpr) * sizeof *a.params) ||
            memcmp(a.deq, b.deq, R * C * sizeof *a.deq))
            fail_msg("%s: row chunks differ from one call", f.name);
    }
    bp_gptq_factor_destroy(&fac);
    result_free(&a);
    result_free(&b);
}

/* Large enough (2^18 weights, 1024 columns) for the OpenMP row loops and
 * OpenBLAS's threaded gemm to really run in parallel. */
static void test_thread_count_invariance(void **state)
{
    (void)state;
    enum { RB = 256, CB = 1024, TB = 1536 };
    float *w = malloc((size_t)RB * CB * sizeof *w);
    double *x = malloc((size_t)TB * CB * sizeof *x);
    double *h = malloc((size_t)CB * CB * sizeof *h);
    qt_weights(w, (int64_t)RB * CB, 41);
    qt_inputs(x, TB, CB, 42);
    qt_hessian(x, TB, CB, h);
    free(x);
    result a = result_new(RB, CB), b = result_new(RB, CB);
    static const char *const names[] = {"int3_g128_asym", "int3_pc_sym",
                                        "nvfp4"};
    static const int threads[][2] = {{2, 2}, {1, 2}, {2, 1}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        bp_format f = fmt(names[i]);
        int64_t np = RB * bp_format_groups_per_row(&f, CB);
        omp_set_num_threads(1);
        openblas_set_num_threads(1);
        quantize(&f, w, RB, CB, h, BP_GPTQ_ACT_ORDER, &a);
        for (size_t k = 0; k < sizeof threads / sizeof *threads; k++) {
            omp_set_num_threads(threads[k][0]);
            openblas_set_num_threads(threads[k][1]);
            quantize(&f, w, RB, CB, h, BP_GPTQ_ACT_ORDER, &b);
            if (memcmp(a.codes, b.codes, (size_t)RB * CB * sizeof *a.codes) ||
                memcmp(a.params, b.params, (size_t)np * sizeof *a.params) ||
                memcmp(a.deq, b.deq, (size_t)RB * CB * sizeof *a.deq))
                fail_msg("%s: omp %d blas %d differs from 1/1 threads",
                         names[i], threads[k][0], threads[k][1]);
        }
    }
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
    result_free(&a);
    result_free(&b);
    free(w);
    free(h);
}

static void test_invalid_uses(void **state)
{
    fixture *fx = *state;
    bp_error e;
    bp_gptq_factor *fac = NULL;
    assert_int_equal(bp_gptq_factor_new_ex(fx->h, C, C, BP_GPTQ_DAMP_DEFAULT,
                                           2u, &fac, &e),
                     BP_EINVAL);
    assert_null(fac);
    int64_t perm[4];
    double bad[16] = {0};
    bad[5] = NAN;
    assert_int_equal(bp_gptq_act_order_perm(bad, 4, perm, &e), BP_EINVAL);
    assert_int_equal(bp_gptq_act_order_perm(NULL, 4, perm, &e), BP_EINVAL);
    assert_int_equal(bp_gptq_act_order_perm(bad, 0, perm, &e), BP_EINVAL);

    /* the mixed-format pass has no act-order form: refused, not ignored */
    assert_int_equal(bp_gptq_factor_new_ex(fx->h, C, C, BP_GPTQ_DAMP_DEFAULT,
                                           BP_GPTQ_ACT_ORDER, &fac, &e),
                     BP_OK);
    bp_format fm[2] = {fmt("int4_g128_asym"), fmt("int3_g128_asym")};
    float tps[2] = {0.0f, 0.0f};
    result r = result_new(R, C);
    assert_int_equal(bp_gptq_quantize_col_blocks(fac, fx->w, R, C, C / 2, fm,
                                                 tps, r.codes, r.params, NULL,
                                                 &e),
                     BP_EINVAL);
    assert_non_null(strstr(e.msg, "act-order"));
    bp_gptq_factor_destroy(&fac);
    result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_perm_orders_by_decreasing_diag,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_static_params_from_original_weights, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_decreasing_diagonal_equals_natural, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_below_rtn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_row_chunks, setup, teardown),
        cmocka_unit_test(test_thread_count_invariance),
        cmocka_unit_test_setup_teardown(test_invalid_uses, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
