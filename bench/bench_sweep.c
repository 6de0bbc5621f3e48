/* Sweep throughput on synthetic 7B-shaped bf16 tensors, against memcpy of
 * the same bytes measured in the same run.
 *
 *   bench_sweep [--quick] [--reps N] [--only FORMAT] [--no-menu]
 *   bench_sweep --kernel [--reps N] [--only FORMAT]
 *   bench_sweep --quality [--only FORMAT]
 *
 * For each shape (4096x4096, 11008x4096, 4096x11008): memcpy of the bf16
 * bytes (best of several), bp_sweep_tensor with single formats, and the full
 * menu; each as weights/s and as a ratio to memcpy. Weights: Gaussian, a
 * per-row scale, about 1 in 500 an outlier x8, seeded. The sweeps get a
 * column-importance vector (so WSSE is computed too). --quick: one shape,
 * fewer repetitions. --only FORMAT (repeatable): time just these single
 * formats; --no-menu: skip the 53-format menu sweep.
 *
 * Every sweep is timed twice over: wall time (CLOCK_MONOTONIC) and process
 * CPU time (CLOCK_PROCESS_CPUTIME_ID, all threads). On a shared machine the
 * wall time depends on what else runs; "cpu/thr" is CPU time divided by the
 * thread count, the wall time the sweep would take with its threads running
 * undisturbed, and "vs memcpy (cpu)" compares memcpy's wall time with that.
 *
 * --kernel: the per-format cost without the machine's load in it as far as
 * possible: one thread, bp_format_rtn_error_rows (with column importance) on
 * a 32 x 4096 block held in cache (the sweep's block), thread CPU time,
 * best of N x 64 calls, as ns per weight; plus the bf16 -> fp32 conversion
 * and finite check of the same block (a single-format sweep pays both).
 *
 * --quality: the total squared error of bp_format_rtn_error_rows over the
 * first 1024 rows of each shape, one line per format and shape, printed
 * with 17 digits so two builds (e.g. before and after a search change) can
 * be compared. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bitplan/half.h"
#include "bitplan/sweep.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double unif(uint64_t *s)
{
    return ((double)(rng(s) >> 11) + 0.5) * 0x1p-53;
}

static uint16_t *make_bf16(int64_t rows, int64_t cols, uint64_t seed)
{
    uint16_t *b = malloc((size_t)(rows * cols) * 2);
    if (!b)
        return NULL;
    for (int64_t r = 0; r < rows; r++) {
        uint64_t s = seed * 1000003u + (uint64_t)r;
        float rs = 0.02f * (float)exp2(unif(&s) * 2 - 1);
        for (int64_t j = 0; j < cols; j += 2) {
            double u = unif(&s), v = unif(&s), m = sqrt(-2 * log(u));
            float g0 = (float)(m * cos(6.283185307179586 * v)) * rs;
            float g1 = (float)(m * sin(6.283185307179586 * v)) * rs;
            if (rng(&s) % 500 == 0)
                g0 *= 8;
            b[r * cols + j] = bp_f32_to_bf16(g0);
            if (j + 1 < cols)
                b[r * cols + j + 1] = bp_f32_to_bf16(g1);
        }
    }
    return b;
}

/* Best wall time of reps sweeps; *cpu_best gets the best CPU time. */
static double time_sweep(const bp_tensor_info *t, const bp_format *f, size_t nf,
                         const float *colw, int reps, double *cpu_best)
{
    double best = 1e30, cbest = 1e30;
    for (int k = 0; k < reps; k++) {
        bp_sweep_result r;
        bp_sweep_result_init(&r);
        bp_error e;
        double t0 = now(), c0 = cpu_now();
        int rc = bp_sweep_tensor(t, f, nf, colw, 0, bp_tensor_rows(t), &r, &e);
        double dt = now() - t0, dc = cpu_now() - c0;
        if (rc) {
            fprintf(stderr, "sweep failed: %s\n", e.msg);
            exit(1);
        }
        bp_sweep_result_free(&r);
        if (dt < best)
            best = dt;
        if (dc < cbest)
            cbest = dc;
    }
    *cpu_best = cbest;
    return best;
}

static double thread_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void bf16_to_f32(const uint16_t *src, size_t n, float *dst)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = bp_bf16_to_f32(src[i]);
}

/* Single-thread ns per weight of the fused kernel on a cached block. */
static int kernel_mode(const char **fmts, size_t nf, int reps)
{
    enum { KR = 32, KC = 4096, CALLS = 64 };
    uint16_t *src = make_bf16(KR, KC, 1);
    float *x = malloc(sizeof(float) * KR * KC), *colw = malloc(sizeof(float) * KC);
    if (!src || !x || !colw)
        return 1;
    bf16_to_f32(src, (size_t)KR * KC, x);
    for (int j = 0; j < KC; j++)
        colw[j] = 0.5f + (float)(j % 13) * 0.1f;
    omp_set_num_threads(1);
    /* The conversion and finite check as the sweep does them, through a
     * one-format sweep of a 32-row tensor minus the kernel alone. */
    bp_tensor_info t;
    memset(&t, 0, sizeof t);
    t.name = "kernel";
    t.dtype = BP_DTYPE_BF16;
    t.ndim = 2;
    t.shape[0] = KR;
    t.shape[1] = KC;
    t.numel = (size_t)KR * KC;
    t.nbytes = t.numel * 2;
    t.data = src;
    t.file = "memory";
    printf("kernel: 1 thread, %d x %d block in cache, best of %d x %d calls, thread CPU\n", KR,
           KC, reps, CALLS);
    printf("%-16s %12s %12s\n", "format", "kernel ns/w", "sweep ns/w");
    for (size_t i = 0; i < nf; i++) {
        bp_format f;
        if (bp_format_parse(fmts[i], &f, NULL) != BP_OK)
            return 1;
        float tp = bp_format_tensor_param(&f, 0.2f);
        double sse[KR], wsse[KR], best = 1e30, sbest = 1e30;
        bp_error e;
        bp_sweep_opts o = BP_SWEEP_OPTS_INIT;
        o.tensor_absmax = 0.2f;
        for (int r = 0; r < reps; r++) {
            double t0 = thread_cpu_now();
            for (int c = 0; c < CALLS; c++)
                if (bp_format_rtn_error_rows(&f, x, KR, KC, tp, colw, sse, wsse, NULL, &e)) {
                    fprintf(stderr, "%s\n", e.msg);
                    return 1;
                }
            double dt = thread_cpu_now() - t0;
            best = dt < best ? dt : best;
            t0 = thread_cpu_now();
            for (int c = 0; c < CALLS; c++) {
                bp_sweep_result res;
                bp_sweep_result_init(&res);
                if (bp_sweep_tensor_ex(&t, &f, 1, colw, 0, KR, &o, &res, &e)) {
                    fprintf(stderr, "%s\n", e.msg);
                    return 1;
                }
                bp_sweep_result_free(&res);
            }
            dt = thread_cpu_now() - t0;
            sbest = dt < sbest ? dt : sbest;
        }
        double nw = (double)KR * KC * CALLS;
        printf("%-16s %12.3f %12.3f\n", fmts[i], best / nw * 1e9, sbest / nw * 1e9);
        fflush(stdout);
    }
    free(src);
    free(x);
    free(colw);
    return 0;
}

/* Total squared error of the RTN search on 1024 rows of every shape. */
static int quality_mode(const char **fmts, size_t nf)
{
    static const int64_t shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
    enum { QR = 1024 };
    for (size_t s = 0; s < 3; s++) {
        int64_t cols = shapes[s][1];
        uint16_t *src = make_bf16(QR, cols, 1 + s);
        float *x = malloc(sizeof(float) * (size_t)(QR * cols));
        double *sse = malloc(sizeof(double) * QR);
        if (!src || !x || !sse)
            return 1;
        bf16_to_f32(src, (size_t)(QR * cols), x);
        for (size_t i = 0; i < nf; i++) {
            bp_format f;
            bp_error e;
            if (bp_format_parse(fmts[i], &f, NULL) != BP_OK)
                return 1;
            float amax = 0.0f;
            for (size_t k = 0; k < (size_t)(QR * cols); k++)
                amax = fabsf(x[k]) > amax ? fabsf(x[k]) : amax;
            if (bp_format_rtn_error_rows(&f, x, QR, cols, bp_format_tensor_param(&f, amax), NULL,
                                         sse, NULL, NULL, &e)) {
                fprintf(stderr, "%s\n", e.msg);
                return 1;
            }
            double tot = 0.0;
            for (int r = 0; r < QR; r++)
                tot += sse[r];
            printf("%lldx%lld %s %.17g\n", (long long)shapes[s][0], (long long)cols, fmts[i],
                   tot);
        }
        free(src);
        free(x);
        free(sse);
    }
    return 0;
}

/* One result line: n weights swept in dt wall / dc CPU seconds, against
 * memcpy of the same bytes in mc seconds. */
static void row(const char *sh, const char *what, double dt, double dc, int nthr, double n,
                double mc)
{
    double ct = dc / nthr;
    printf("%-12s %-16s %9.5f %9.5f %9.5f %11.4g %9.4f %9.4f\n", sh, what, dt, dc, ct, n / dt,
           mc / dt, mc / ct);
}

int main(int argc, char **argv)
{
    int quick = 0, reps = 3, nomenu = 0, kernel = 0, quality = 0;
    const char *only[16];
    size_t nonly = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--kernel") == 0)
            kernel = 1;
        else if (strcmp(argv[i], "--quality") == 0)
            quality = 1;
        else if (strcmp(argv[i], "--no-menu") == 0)
            nomenu = 1;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc && nonly < 16)
            only[nonly++] = argv[++i];
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--quick] [--reps N] [--only FORMAT] [--no-menu] "
                    "[--kernel] [--quality]\n",
                    argv[0]);
            return 2;
        }
    }
    if (quick)
        reps = 1;
    if (reps < 1)
        reps = 1;
    static const int64_t shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
    size_t nshape = quick ? 1 : 3;
    static const char *dflt[] = {"int4_g128_asym", "int3_g128_asym", "int2_g64_asym",
                                   "int4_g128_sym",  "int8_pc_sym",    "fp8_e4m3",
                                   "mxfp4",          "nvfp4"};
    const char **single = nonly ? only : dflt;
    size_t nsingle = nonly ? nonly : sizeof dflt / sizeof dflt[0];
    bp_format menu[64];
    size_t nmenu = bp_format_menu(menu, 64);
    if (kernel)
        return kernel_mode(single, nsingle, reps);
    if (quality) {
        if (nonly)
            return quality_mode(single, nsingle);
        const char *names[64];
        for (size_t i = 0; i < nmenu; i++)
            names[i] = menu[i].name;
        return quality_mode(names, nmenu);
    }

    printf("bench_sweep: %d OpenMP threads, reps %d (best of), sweeps with column "
           "importance\n",
           omp_get_max_threads(), reps);
    int nthr = omp_get_max_threads();
    printf("%-12s %-16s %9s %9s %9s %11s %9s %9s\n", "shape", "what", "wall s", "cpu s",
           "cpu/thr s", "weights/s", "vs memcpy", "vs memcpy");
    printf("%-12s %-16s %9s %9s %9s %11s %9s %9s\n", "", "", "", "", "", "(wall)", "(wall)",
           "(cpu)");
    for (size_t s = 0; s < nshape; s++) {
        int64_t rows = shapes[s][0], cols = shapes[s][1];
        size_t n = (size_t)(rows * cols), bytes = n * 2;
        uint16_t *src = make_bf16(rows, cols, 1 + s);
        uint16_t *dst = malloc(bytes);
        float *colw = malloc((size_t)cols * sizeof *colw);
        if (!src || !dst || !colw) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        for (int64_t j = 0; j < cols; j++)
            colw[j] = 0.5f + (float)(j % 13) * 0.1f;
        memset(dst, 1, bytes); /* fault the pages in before timing */
        double mc = 1e30;
        for (int k = 0; k < (quick ? 5 : 10); k++) {
            double t0 = now();
            memcpy(dst, src, bytes);
            double dt = now() - t0;
            if (dt < mc)
                mc = dt;
        }
        /* Keep the copy observable so it is not optimized away. */
        if (dst[n / 2] != src[n / 2])
            return 1;
        char sh[32];
        snprintf(sh, sizeof sh, "%lldx%lld", (long long)rows, (long long)cols);
        printf("%-12s %-16s %9.5f %9s %9s %11.4g %9s %9s\n", sh, "memcpy(bf16)", mc, "", "",
               (double)n / mc, "1", "1");

        bp_tensor_info t;
        memset(&t, 0, sizeof t);
        t.name = "bench";
        t.dtype = BP_DTYPE_BF16;
        t.ndim = 2;
        t.shape[0] = rows;
        t.shape[1] = cols;
        t.numel = n;
        t.nbytes = bytes;
        t.data = src;
        t.file = "memory";
        for (size_t i = 0; i < nsingle; i++) {
            bp_format f;
            if (bp_format_parse(single[i], &f, NULL) != BP_OK)
                return 1;
            double dc, dt = time_sweep(&t, &f, 1, colw, reps, &dc);
            row(sh, single[i], dt, dc, nthr, (double)n, mc);
            fflush(stdout);
        }
        if (nomenu) {
            free(src);
            free(dst);
            free(colw);
            continue;
        }
        double dc, dt = time_sweep(&t, menu, nmenu, colw, 1, &dc);
        char what[32];
        snprintf(what, sizeof what, "menu(%zu fmts)", nmenu);
        row(sh, what, dt, dc, nthr, (double)n, mc);
        row(sh, "  per format", dt, dc, nthr, (double)n * (double)nmenu, mc * (double)nmenu);
        fflush(stdout);
        free(src);
        free(dst);
        free(colw);
    }
    return 0;
}
