/* GPTQ and hfull give bit-identical results for any OpenMP and OpenBLAS
 * thread count. Sizes are large enough that OpenBLAS really runs its
 * threaded gemm / Cholesky paths. */
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

#define R 256
#define C 1024
#define T 1536

static void run(const bp_format *f, const float *w, const double *h,
                uint16_t *codes, bp_qparams *params, float *deq, double *hf)
{
    bp_error e;
    int rc = bp_gptq_quantize(f, w, R, C, h, C, C, BP_GPTQ_DAMP_DEFAULT, codes,
                              params, NULL, deq, &e);
    if (rc)
        fail_msg("%s: %s", f->name, e.msg);
    *hf = 0.0;
    assert_int_equal(bp_quant_hfull_rows(w, deq, R, C, h, NULL, hf, &e), BP_OK);
}

static void test_thread_count_invariance(void **state)
{
    (void)state;
    float *w = malloc((size_t)R * C * sizeof *w);
    double *x = malloc((size_t)T * C * sizeof *x);
    double *h = malloc((size_t)C * C * sizeof *h);
    qt_weights(w, (int64_t)R * C, 21);
    qt_inputs(x, T, C, 22);
    /* H = X^T X by BLAS here: only the data, not the code under test */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, C, T, 1.0, x, C, 0.0, h,
                C);
    for (int i = 0; i < C; i++)
        for (int j = 0; j < i; j++)
            h[(size_t)i * C + j] = h[(size_t)j * C + i];
    free(x);

    size_t n = (size_t)R * C;
    uint16_t *c0 = malloc(n * sizeof *c0), *c1 = malloc(n * sizeof *c1);
    bp_qparams *p0 = malloc(n * sizeof *p0), *p1 = malloc(n * sizeof *p1);
    float *d0 = malloc(n * sizeof *d0), *d1 = malloc(n * sizeof *d1);
    static const char *names[] = {"int4_g128_asym", "int3_g64_sym",
                                  "int2_pc_asym", "nvfp4"};
    static const int threads[][2] = {{2, 2}, {1, 2}, {2, 1}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        bp_format f;
        bp_error e;
        assert_int_equal(bp_format_parse(names[i], &f, &e), BP_OK);
        omp_set_num_threads(1);
        openblas_set_num_threads(1);
        double hf0, hf1;
        run(&f, w, h, c0, p0, d0, &hf0);
        int64_t np = R * bp_format_groups_per_row(&f, C);
        for (size_t k = 0; k < sizeof threads / sizeof *threads; k++) {
            omp_set_num_threads(threads[k][0]);
            openblas_set_num_threads(threads[k][1]);
            run(&f, w, h, c1, p1, d1, &hf1);
            if (memcmp(c0, c1, n * sizeof *c0) ||
                memcmp(p0, p1, (size_t)np * sizeof *p0) ||
                memcmp(d0, d1, n * sizeof *d0) ||
                memcmp(&hf0, &hf1, sizeof hf0))
                fail_msg("%s: omp %d blas %d differs from 1/1 threads",
                         names[i], threads[k][0], threads[k][1]);
        }
        print_message("%-16s deterministic, hfull %.9e\n", names[i], hf0);
    }
    free(w);
    free(h);
    free(c0);
    free(c1);
    free(p0);
    free(p1);
    free(d0);
    free(d1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_thread_count_invariance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
