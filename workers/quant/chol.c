/* Deterministic blocked Cholesky (see quant_internal.h for why not
 * LAPACK's dpotrf). Row-major, lower triangular. */
#include "quant_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Unblocked Cholesky of the kb x kb block at a (leading dimension lda).
 * Dot products run serially in index order. Returns 0 or j + 1. */
static int64_t chol_small(double *a, int64_t kb, int64_t lda)
{
    for (int64_t j = 0; j < kb; j++) {
        double *lj = a + j * lda;
        double s = lj[j];
        for (int64_t m = 0; m < j; m++)
            s -= lj[m] * lj[m];
        if (!(s > 0.0) || !isfinite(s))
            return j + 1;
        double d = sqrt(s);
        lj[j] = d;
        for (int64_t i = j + 1; i < kb; i++) {
            double *li = a + i * lda;
            double t = li[j];
            for (int64_t m = 0; m < j; m++)
                t -= li[m] * lj[m];
            li[j] = t / d;
        }
    }
    return 0;
}

/* t (kb x kb, dense row-major, zero above the diagonal) = inverse of the
 * lower triangular kb x kb block at l (leading dimension lda). */
static void trinv_small(const double *l, int64_t kb, int64_t lda, double *t)
{
    memset(t, 0, (size_t)(kb * kb) * sizeof *t);
    for (int64_t i = 0; i < kb; i++) {
        const double *li = l + i * lda;
        double inv = 1.0 / li[i];
        t[i * kb + i] = inv;
        for (int64_t j = 0; j < i; j++) {
            double s = 0.0;
            for (int64_t m = j; m < i; m++)
                s += li[m] * t[m * kb + j];
            t[i * kb + j] = -s * inv;
        }
    }
}

/* Left-looking by block columns: one dgemm per block column brings it up to
 * date, the diagonal block is factored unblocked, and the panel below it is
 * multiplied by the inverse transpose of the diagonal factor. */
int bp__chol_lower(double *a, int64_t n)
{
    const int64_t nb = BP__CHOL_NB;
    int ret = 0;
    double *t = malloc((size_t)(nb * nb) * sizeof *t);
    double *p = malloc((size_t)n * (size_t)nb * sizeof *p);
    if (!t || !p) {
        ret = -1;
        goto out;
    }
    for (int64_t k0 = 0; k0 < n; k0 += nb) {
        int64_t kb = n - k0 < nb ? n - k0 : nb;
        int64_t m = n - k0 - kb; /* rows below the diagonal block */
        if (k0 > 0) /* A[k0:, k] -= L[k0:, 0:k0] L[k, 0:k0]^T (disjoint) */
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans,
                        (int)(n - k0), (int)kb, (int)k0, -1.0, a + k0 * n,
                        (int)n, a + k0 * n, (int)n, 1.0, a + k0 * n + k0,
                        (int)n);
        int64_t info = chol_small(a + k0 * n + k0, kb, n);
        if (info) {
            ret = (int)(k0 + info);
            goto out;
        }
        if (m > 0) { /* L21 = A21 L11^-T */
            trinv_small(a + k0 * n + k0, kb, n, t);
            double *a21 = a + (k0 + kb) * n + k0;
            for (int64_t i = 0; i < m; i++)
                memcpy(p + i * kb, a21 + i * n, (size_t)kb * sizeof *p);
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m,
                        (int)kb, (int)kb, 1.0, p, (int)kb, t, (int)kb, 0.0,
                        a21, (int)n);
        }
    }
out:
    free(t);
    free(p);
    return ret;
}
