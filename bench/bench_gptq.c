/* bench_gptq: one 4096 x 4096 GPTQ pass (int4_g128_asym, int3_g128_asym)
 * against RTN of the same tensor and one 4096^3 sgemm, in the same run.
 * H comes from random correlated inputs built on the fly (not timed).
 *
 *   bench_gptq [n] [tokens] [repeats]     defaults 4096 4096 2
 *
 * Times are the best of `repeats` runs (the machine is shared); "cpu" is
 * the process CPU time of the same run (all threads). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bitplan/format.h"
#include "bitplan/gptq.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds of the whole process (all threads): on a shared machine the
 * wall time depends on the other jobs, the CPU time much less. */
static double cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng_state = 12345;

static double unif(void) /* (0, 1), splitmix64 */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double gauss(void)
{
    double u = unif(), v = unif();
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "bench_gptq: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* H = X^T X for t tokens of n channels: AR(1) across channels plus a shared
 * low-rank factor and log-normal channel scales. */
static void build_h(double *h, int n, int t)
{
    double *x = xmalloc((size_t)t * (size_t)n * sizeof *x);
    double *scale = xmalloc((size_t)n * sizeof *scale);
    double *load = xmalloc((size_t)n * 4 * sizeof *load);
    for (int j = 0; j < n; j++) {
        scale[j] = exp(gauss());
        for (int k = 0; k < 4; k++)
            load[j * 4 + k] = gauss();
    }
    for (int i = 0; i < t; i++) {
        double f[4], prev = gauss();
        for (int k = 0; k < 4; k++)
            f[k] = gauss();
        for (int j = 0; j < n; j++) {
            prev = 0.9 * prev + 0.4358898943540674 * gauss();
            double v = prev;
            for (int k = 0; k < 4; k++)
                v += 0.5 * f[k] * load[j * 4 + k];
            x[(size_t)i * n + j] = v * scale[j];
        }
    }
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, n, t, 1.0, x, n, 0.0, h,
                n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            h[(size_t)i * n + j] = h[(size_t)j * n + i];
    free(x);
    free(scale);
    free(load);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 4096;
    int t = argc > 2 ? atoi(argv[2]) : 4096;
    int reps = argc > 3 ? atoi(argv[3]) : 2;
    if (n < 128 || n % 128 || t < 1 || reps < 1) {
        fprintf(stderr, "usage: bench_gptq [n (multiple of 128)] [tokens] "
                        "[repeats]\n");
        return 2;
    }
    size_t nn = (size_t)n * (size_t)n;
    float *w = xmalloc(nn * sizeof *w);
    float *deq = xmalloc(nn * sizeof *deq);
    uint16_t *codes = xmalloc(nn * sizeof *codes);
    bp_qparams *params = xmalloc(nn / 32 * sizeof *params + 64);
    double *h = xmalloc(nn * sizeof *h);
    for (size_t i = 0; i < nn; i++)
        w[i] = (float)(0.02 * gauss());

    printf("bench_gptq: %d x %d weights, H from %d correlated tokens, "
           "OpenMP threads %d, OpenBLAS threads %d, best of %d\n",
           n, n, t, omp_get_max_threads(), openblas_get_num_threads(), reps);
    double t0 = now();
    build_h(h, n, t);
    printf("  H build (not timed below)        %8.3f s\n", now() - t0);

    /* baseline: one n^3 sgemm */
    float *b = xmalloc(nn * sizeof *b), *c = xmalloc(nn * sizeof *c);
    for (size_t i = 0; i < nn; i++)
        b[i] = (float)(0.01 * (double)(i % 97));
    double t_sgemm = 1e30, c_sgemm = 0;
    for (int r = 0; r < reps; r++) {
        double c0 = cpu();
        t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f,
                    w, n, b, n, 0.0f, c, n);
        double dt = now() - t0;
        if (dt < t_sgemm) {
            t_sgemm = dt;
            c_sgemm = cpu() - c0;
        }
    }
    free(b);
    free(c);
    printf("  sgemm %d^3                     %8.3f s  (cpu %.3f s, %.1f "
           "GFLOP/s)\n", n, t_sgemm, c_sgemm,
           2.0 * n * (double)n * n / t_sgemm * 1e-9);

    /* factor alone (shared by every format of a tensor) */
    bp_error err;
    double t_fac = 1e30, c_fac = 0;
    for (int r = 0; r < reps; r++) {
        bp_gptq_factor *fac = NULL;
        double c0 = cpu();
        t0 = now();
        if (bp_gptq_factor_new(h, n, n, BP_GPTQ_DAMP_DEFAULT, &fac, &err)) {
            fprintf(stderr, "bench_gptq: %s\n", err.msg);
            return 1;
        }
        double dt = now() - t0;
        if (dt < t_fac) {
            t_fac = dt;
            c_fac = cpu() - c0;
        }
        bp_gptq_factor_destroy(&fac);
    }
    printf("  GPTQ factor (Cholesky of H)      %8.3f s  (cpu %.3f s)\n", t_fac,
           c_fac);

    static const char *names[] = {"int4_g128_asym", "int3_g128_asym"};
    for (int k = 0; k < 2; k++) {
        bp_format f;
        if (bp_format_parse(names[k], &f, &err)) {
            fprintf(stderr, "bench_gptq: %s\n", err.msg);
            return 1;
        }
        double t_rtn = 1e30, t_gptq = 1e30, c_gptq = 0;
        float tp = 0.0f;
        for (int r = 0; r < reps; r++) {
            t0 = now();
            if (bp_format_quantize_rows(&f, w, n, n, tp, codes, params, &err)) {
                fprintf(stderr, "bench_gptq: rtn: %s\n", err.msg);
                return 1;
            }
            double dt = now() - t0;
            t_rtn = dt < t_rtn ? dt : t_rtn;
        }
        bp_format_dequantize_rows(&f, codes, params, n, n, deq);
        double e_rtn = 0.0;
        bp_quant_hfull_rows(w, deq, n, n, h, NULL, &e_rtn, &err);
        for (int r = 0; r < reps; r++) {
            double c0 = cpu();
            t0 = now();
            if (bp_gptq_quantize(&f, w, n, n, h, n, n, BP_GPTQ_DAMP_DEFAULT,
                                 codes, params, NULL, deq, &err)) {
                fprintf(stderr, "bench_gptq: gptq: %s\n", err.msg);
                return 1;
            }
            double dt = now() - t0;
            if (dt < t_gptq) {
                t_gptq = dt;
                c_gptq = cpu() - c0;
            }
        }
        double e_gptq = 0.0;
        t0 = now();
        bp_quant_hfull_rows(w, deq, n, n, h, NULL, &e_gptq, &err);
        double t_hfull = now() - t0;
        printf("  %-15s RTN %7.3f s | GPTQ %7.3f s (cpu %.3f s; factor %.3f "
               "+ columns %.3f) | GPTQ/RTN %6.1fx | GPTQ/sgemm %5.2fx\n",
               names[k], t_rtn, t_gptq, c_gptq, t_fac, t_gptq - t_fac,
               t_gptq / t_rtn, t_gptq / t_sgemm);
        printf("  %-15s hfull: RTN %.4e  GPTQ %.4e  (GPTQ/RTN %.3f; one hfull "
               "%.3f s)\n",
               names[k], e_rtn, e_gptq, e_gptq / e_rtn, t_hfull);
    }
    free(w);
    free(deq);
    free(codes);
    free(params);
    free(h);
    return 0;
}
