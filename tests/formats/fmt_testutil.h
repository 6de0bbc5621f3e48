/* Helpers shared by the formats tests: a seeded generator of weight-like
 * matrices and a reference error sum. Header-only (static functions). */
#ifndef FMT_TESTUTIL_H
#define FMT_TESTUTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    uint64_t s;
} tu_rng;

static inline uint64_t tu_next(tu_rng *r)
{
    /* splitmix64 */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline double tu_unif(tu_rng *r)
{
    return ((double)(tu_next(r) >> 11) + 0.5) * 0x1p-53;
}

static inline float tu_gauss(tu_rng *r)
{
    double u = tu_unif(r), v = tu_unif(r);
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* Gaussian weights (std `sd`, per-row scale varying x0.25..x4) with about
 * one outlier (x10) per 200 values. Caller frees. */
static inline float *tu_matrix(uint64_t seed, int64_t rows, int64_t cols, float sd)
{
    tu_rng r = {seed};
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    if (!w)
        return NULL;
    for (int64_t i = 0; i < rows; i++) {
        float rs = sd * (float)exp2(4.0 * tu_unif(&r) - 2.0);
        for (int64_t j = 0; j < cols; j++) {
            float v = tu_gauss(&r) * rs;
            if (tu_next(&r) % 200 == 0)
                v *= 10.0f;
            w[i * cols + j] = v;
        }
    }
    return w;
}

/* The reference per-row error, as docs/formats.md defines it: in double,
 * column j into lane j mod 16, the lanes reduced pairwise (t[l] += t[l + w]
 * for w = 8, 4, 2, 1). */
static inline double tu_lanes(double *t)
{
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++)
            t[l] = t[l] + t[l + w];
    return t[0];
}

/* The documented per-row error (docs/formats.md, "Per-row error"): e = w - q
 * in float; per block of 128 columns, e * e (and colw * (e * e)) summed in
 * float into lane j mod 16; each block's lanes added to double lanes; the
 * double lanes reduced pairwise. */
static inline double tu_row_err(const float *w, const float *q, const float *colw,
                                int64_t cols)
{
    double t[16] = {0};
    for (int64_t j0 = 0; j0 < cols; j0 += 128) {
        float a[16] = {0};
        for (int64_t j = j0; j < cols && j < j0 + 128; j++) {
            float e = w[j] - q[j];
            e = e * e;
            a[j % 16] += colw ? colw[j] * e : e;
        }
        for (int l = 0; l < 16; l++)
            t[l] += (double)a[l];
    }
    return tu_lanes(t);
}

static inline double tu_row_sse(const float *w, const float *q, int64_t cols)
{
    return tu_row_err(w, q, NULL, cols);
}

static inline double tu_row_wsse(const float *w, const float *q, const float *colw,
                                 int64_t cols)
{
    return tu_row_err(w, q, colw, cols);
}

#endif
