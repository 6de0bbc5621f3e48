/* Tests for the hdiag and hfull error metrics against direct definitions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/gptq.h"
#include "quant_testutil.h"

#define R 64
#define C 256
#define T 2048

typedef struct {
    float *w, *wq;
    double *x, *h;
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    fx->w = malloc(R * C * sizeof *fx->w);
    fx->wq = malloc(R * C * sizeof *fx->wq);
    fx->x = malloc((size_t)T * C * sizeof *fx->x);
    fx->h = malloc((size_t)C * C * sizeof *fx->h);
    qt_weights(fx->w, R * C, 1);
    qt_rng rng = {2};
    for (int i = 0; i < R * C; i++) /* a coarse "quantization" */
        fx->wq[i] = fx->w[i] + (float)(0.003 * qt_gauss(&rng));
    qt_inputs(fx->x, T, C, 3);
    qt_hessian(fx->x, T, C, fx->h);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    free(fx->w);
    free(fx->wq);
    free(fx->x);
    free(fx->h);
    free(fx);
    return 0;
}

static void test_hfull_equals_output_error(void **state)
{
    fixture *fx = *state;
    /* Direct: ||dW X^T||_F^2, the squared output error over the tokens. */
    double direct = 0.0;
    double *rowref = calloc(R, sizeof *rowref);
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            double y = 0.0;
            for (int j = 0; j < C; j++)
                y += ((double)fx->w[r * C + j] - (double)fx->wq[r * C + j]) *
                     fx->x[(size_t)t * C + j];
            rowref[r] += y * y;
        }
    for (int r = 0; r < R; r++)
        direct += rowref[r];

    double rows[R], acc = 0.0;
    bp_error e;
    assert_int_equal(bp_quant_hfull_rows(fx->w, fx->wq, R, C, fx->h, rows,
                                         &acc, &e), BP_OK);
    assert_true(fabs(acc - direct) <= 1e-9 * direct);
    for (int r = 0; r < R; r++)
        assert_true(fabs(rows[r] - rowref[r]) <= 1e-9 * rowref[r]);

    /* Chunks of 7, 1, 20, rest with one accumulator: bit-identical total. */
    double acc2 = 0.0;
    int cuts[] = {0, 7, 8, 28, R};
    for (int k = 0; k < 4; k++)
        assert_int_equal(bp_quant_hfull_rows(fx->w + cuts[k] * C,
                                             fx->wq + cuts[k] * C,
                                             cuts[k + 1] - cuts[k], C, fx->h,
                                             NULL, &acc2, &e), BP_OK);
    assert_memory_equal(&acc, &acc2, sizeof acc);
    free(rowref);
}

static void test_hdiag_weighted_columns(void **state)
{
    fixture *fx = *state;
    double ref = 0.0;
    for (int j = 0; j < C; j++) {
        double col = 0.0;
        for (int r = 0; r < R; r++) {
            double d = (double)fx->w[r * C + j] - (double)fx->wq[r * C + j];
            col += d * d;
        }
        ref += fx->h[j * C + j] * col;
    }
    double acc = 0.0, acc2 = 0.0;
    double diag[C];
    for (int j = 0; j < C; j++)
        diag[j] = fx->h[j * C + j];
    bp_error e;
    assert_int_equal(bp_quant_hdiag_rows(fx->w, fx->wq, R, C, fx->h, C + 1,
                                         NULL, &acc, &e), BP_OK);
    assert_int_equal(bp_quant_hdiag_rows(fx->w, fx->wq, R, C, diag, 1, NULL,
                                         &acc2, &e), BP_OK);
    assert_true(fabs(acc - ref) <= 1e-12 * ref);
    assert_memory_equal(&acc, &acc2, sizeof acc);
    /* hfull <= hdiag is not a law, but both are positive and of the same
     * order on this data; hdiag ignores the correlations. */
    double hf = 0.0;
    assert_int_equal(bp_quant_hfull_rows(fx->w, fx->wq, R, C, fx->h, NULL, &hf,
                                         &e), BP_OK);
    assert_true(hf > 0 && acc > 0);
}

static void test_metric_invalid_inputs(void **state)
{
    fixture *fx = *state;
    bp_error e;
    double acc = 0.0;
    assert_int_equal(bp_quant_hfull_rows(NULL, fx->wq, R, C, fx->h, NULL, &acc,
                                         &e), BP_EINVAL);
    assert_int_equal(bp_quant_hfull_rows(fx->w, fx->wq, R, 0, fx->h, NULL, &acc,
                                         &e), BP_EINVAL);
    assert_int_equal(bp_quant_hdiag_rows(fx->w, fx->wq, R, C, fx->h, 0, NULL,
                                         &acc, &e), BP_EINVAL);
    double *h = malloc((size_t)C * C * sizeof *h);
    memcpy(h, fx->h, (size_t)C * C * sizeof *h);
    h[5 * C + 9] = NAN;
    assert_int_equal(bp_quant_hfull_rows(fx->w, fx->wq, R, C, h, NULL, &acc,
                                         &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "H[5][9]"));
    h[5 * C + 5] = INFINITY;
    assert_int_equal(bp_quant_hdiag_rows(fx->w, fx->wq, R, C, h, C + 1, NULL,
                                         &acc, &e), BP_EINVAL);
    free(h);
    float *w = malloc(R * C * sizeof *w);
    memcpy(w, fx->w, R * C * sizeof *w);
    w[3 * C + 4] = NAN;
    assert_int_equal(bp_quant_hdiag_rows(w, fx->wq, R, C, fx->h, C + 1, NULL,
                                         &acc, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "[3, 4]"));
    free(w);
    assert_true(acc == 0.0); /* failures leave the accumulator alone */
    /* zero rows is a valid empty range */
    assert_int_equal(bp_quant_hfull_rows(fx->w, fx->wq, 0, C, fx->h, NULL, &acc,
                                         &e), BP_OK);
    assert_true(acc == 0.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hfull_equals_output_error),
        cmocka_unit_test(test_hdiag_weighted_columns),
        cmocka_unit_test(test_metric_invalid_inputs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
