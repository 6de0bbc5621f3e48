/* Seeded data for the quant tests: Gaussian weights and correlated
 * calibration inputs. Header-only (static), shared by tests/quant/test_*.c. */
#ifndef BP_QUANT_TESTUTIL_H
#define BP_QUANT_TESTUTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct { uint64_t s; } qt_rng;

static inline uint64_t qt_next(qt_rng *r)
{
    /* splitmix64 */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline double qt_unif(qt_rng *r) /* (0, 1) */
{
    return ((double)(qt_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static inline double qt_gauss(qt_rng *r)
{
    double u = qt_unif(r), v = qt_unif(r);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static inline void qt_weights(float *w, int64_t n, uint64_t seed)
{
    qt_rng r = {seed};
    for (int64_t i = 0; i < n; i++)
        w[i] = (float)(0.02 * qt_gauss(&r));
}

/* X (t x n): AR(1) across channels (rho 0.9) plus a shared low-rank factor,
 * with per-channel scales spanning ~30x: strongly correlated inputs like real
 * activations. Row-major double. */
static inline void qt_inputs(double *x, int64_t t, int64_t n, uint64_t seed)
{
    qt_rng r = {seed};
    double *scale = malloc((size_t)n * sizeof *scale);
    double *load = malloc((size_t)n * 4 * sizeof *load);
    for (int64_t j = 0; j < n; j++) {
        scale[j] = exp(1.7 * qt_gauss(&r) * 0.6);
        for (int k = 0; k < 4; k++)
            load[j * 4 + k] = qt_gauss(&r);
    }
    for (int64_t i = 0; i < t; i++) {
        double f[4];
        for (int k = 0; k < 4; k++)
            f[k] = qt_gauss(&r);
        double prev = qt_gauss(&r);
        for (int64_t j = 0; j < n; j++) {
            double ar = 0.9 * prev + 0.4358898943540674 * qt_gauss(&r);
            prev = ar;
            double v = ar;
            for (int k = 0; k < 4; k++)
                v += 0.5 * f[k] * load[j * 4 + k];
            x[i * n + j] = v * scale[j];
        }
    }
    free(scale);
    free(load);
}

/* H = X^T X (n x n), exactly symmetric, naive double sums in t order. */
static inline void qt_hessian(const double *x, int64_t t, int64_t n, double *h)
{
    memset(h, 0, (size_t)n * (size_t)n * sizeof *h);
    for (int64_t s = 0; s < t; s++) {
        const double *xs = x + s * n;
        for (int64_t i = 0; i < n; i++) {
            double a = xs[i];
            double *hi = h + i * n;
            for (int64_t j = i; j < n; j++)
                hi[j] += a * xs[j];
        }
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++)
            h[i * n + j] = h[j * n + i];
}

#endif
