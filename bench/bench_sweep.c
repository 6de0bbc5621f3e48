/* Sweep throughput on synthetic 7B-shaped bf16 tensors, against memcpy of
 * the same bytes measured in the same run.
 *
 *   bench_sweep [--quick] [--reps N] [--only FORMAT] [--no-menu]
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
 * undisturbed, and "vs memcpy (cpu)" compares memcpy's wall time with that. */
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
    int quick = 0, reps = 3, nomenu = 0;
    const char *only[16];
    size_t nonly = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--no-menu") == 0)
            nomenu = 1;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc && nonly < 16)
            only[nonly++] = argv[++i];
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--quick] [--reps N] [--only FORMAT] [--no-menu]\n",
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
