/* The module's blocked Cholesky against LAPACK, on sizes that are not
 * multiples of the block, and its failure reporting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../workers/quant/quant_internal.h"
#include "quant_testutil.h"

static void spd(double *a, int n, uint64_t seed)
{
    int t = n + 50;
    double *x = malloc((size_t)t * n * sizeof *x);
    qt_inputs(x, t, n, seed);
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, n, t, 1.0, x, n, 0.0, a,
                n);
    for (int i = 0; i < n; i++) {
        a[(size_t)i * n + i] += 1e-3;
        for (int j = i + 1; j < n; j++)
            a[(size_t)i * n + j] = a[(size_t)j * n + i];
    }
    free(x);
}

static void test_chol_matches_lapack(void **state)
{
    (void)state;
    static const int sizes[] = {1, 7, BP__CHOL_NB, BP__CHOL_NB + 1, 600};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        int n = sizes[s];
        double *a = malloc((size_t)n * n * sizeof *a);
        double *b = malloc((size_t)n * n * sizeof *b);
        spd(a, n, 100 + s);
        memcpy(b, a, (size_t)n * n * sizeof *a);
        assert_int_equal(bp__chol_lower(a, n), 0);
        assert_int_equal(LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', n, b, n), 0);
        double maxrel = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j <= i; j++) {
                double d = fabs(a[(size_t)i * n + j] - b[(size_t)i * n + j]);
                double sc = sqrt(fabs(b[(size_t)i * n + i] * b[(size_t)j * n + j]));
                if (d / sc > maxrel)
                    maxrel = d / sc;
            }
        print_message("n %4d: max |L - L_lapack| / sqrt(L_ii L_jj) = %.2e\n", n,
                      maxrel);
        assert_true(maxrel < 1e-9);
        free(a);
        free(b);
    }
}

static void test_chol_reports_failing_column(void **state)
{
    (void)state;
    int n = 2 * BP__CHOL_NB + 10;
    double *a = calloc((size_t)n * n, sizeof *a);
    for (int i = 0; i < n; i++)
        a[(size_t)i * n + i] = 1.0;
    /* a 2x2 indefinite minor at columns c, c + 1 of the second block */
    int c = BP__CHOL_NB + 44;
    a[(size_t)(c + 1) * n + c] = 2.0;
    a[(size_t)c * n + c + 1] = 2.0;
    assert_int_equal(bp__chol_lower(a, n), c + 2);
    free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chol_matches_lapack),
        cmocka_unit_test(test_chol_reports_failing_column),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
