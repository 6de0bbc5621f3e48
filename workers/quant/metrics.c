/* Data-aware quantization error metrics: hdiag and hfull (docs/gptq.md). */
#include "bitplan/gptq.h"
#include "quant_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows and columns per dgemm in hfull. Fixed, so a row's value never
 * depends on how many rows a call or a thread handles. */
#define HFULL_BLOCK_ROWS 256
#define HFULL_STRIP 256

/* First non-finite value of x[0..n), or -1. */
static int64_t first_nonfinite_f(const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return i;
    return -1;
}

static int check_pair(const float *w, const float *wq, int64_t nrows,
                      int64_t cols, const char *what, bp_error *err)
{
    if (!w || !wq)
        return bp_error_set(err, BP_EINVAL, "%s: NULL weights", what);
    if (nrows < 0 || cols <= 0 || (nrows > 0 && cols > INT64_MAX / nrows))
        return bp_error_set(err, BP_EINVAL, "%s: bad shape %lld x %lld", what,
                            (long long)nrows, (long long)cols);
    int64_t n = nrows * cols;
    int64_t i = first_nonfinite_f(w, n);
    if (i >= 0)
        return bp_error_set(err, BP_EINVAL,
                            "%s: weight [%lld, %lld] is not finite", what,
                            (long long)(i / cols), (long long)(i % cols));
    i = first_nonfinite_f(wq, n);
    if (i >= 0)
        return bp_error_set(err, BP_EINVAL,
                            "%s: quantized weight [%lld, %lld] is not finite",
                            what, (long long)(i / cols), (long long)(i % cols));
    return BP_OK;
}

int bp_quant_hdiag_rows(const float *w, const float *wq, int64_t nrows,
                        int64_t cols, const double *hd, int64_t hd_stride,
                        double *row_out, double *acc, bp_error *err)
{
    int rc = check_pair(w, wq, nrows, cols, "hdiag", err);
    if (rc)
        return rc;
    if (!hd || hd_stride < 1 || (cols - 1) > (INT64_MAX - 1) / hd_stride)
        return bp_error_set(err, BP_EINVAL,
                            "hdiag: NULL Hessian diagonal or bad stride %lld",
                            (long long)hd_stride);
    for (int64_t j = 0; j < cols; j++)
        if (!isfinite(hd[j * hd_stride]))
            return bp_error_set(err, BP_EINVAL,
                                "hdiag: H[%lld][%lld] is not finite",
                                (long long)j, (long long)j);
    double *vals = row_out;
    double *tmp = NULL;
    if (!vals && acc && nrows > 0) {
        tmp = malloc((size_t)nrows * sizeof *tmp);
        if (!tmp)
            return bp_error_set(err, BP_ENOMEM, "hdiag: out of memory");
        vals = tmp;
    }
    if (vals) {
#pragma omp parallel for schedule(static) if (nrows * cols >= BP__PAR_MIN)
        for (int64_t r = 0; r < nrows; r++) {
            const float *a = w + r * cols, *b = wq + r * cols;
            double s = 0.0;
            for (int64_t j = 0; j < cols; j++) {
                double d = (double)a[j] - (double)b[j];
                s += hd[j * hd_stride] * (d * d);
            }
            vals[r] = s;
        }
        if (acc)
            for (int64_t r = 0; r < nrows; r++)
                *acc += vals[r];
    }
    free(tmp);
    return BP_OK;
}

int bp_quant_hfull_rows(const float *w, const float *wq, int64_t nrows,
                        int64_t cols, const double *h, double *row_out,
                        double *acc, bp_error *err)
{
    int rc = check_pair(w, wq, nrows, cols, "hfull", err);
    if (rc)
        return rc;
    if (!h)
        return bp_error_set(err, BP_EINVAL, "hfull: NULL Hessian");
    if (cols > INT32_MAX || cols > INT64_MAX / cols)
        return bp_error_set(err, BP_EINVAL, "hfull: %lld columns is too many",
                            (long long)cols);
    for (int64_t i = 0; i < cols * cols; i++)
        if (!isfinite(h[i]))
            return bp_error_set(err, BP_EINVAL,
                                "hfull: H[%lld][%lld] is not finite",
                                (long long)(i / cols), (long long)(i % cols));
    if (nrows == 0 || (!row_out && !acc))
        return BP_OK;

    /* dW_r H dW_r^T = 2 dW_r T dW_r^T with T = strict upper triangle of H
     * plus half its diagonal: half the flops of dW H. P = dW T is built in
     * column strips: the part above the strip's diagonal block straight from
     * H, the diagonal block from a copy (tdiag) with the lower part zeroed. */
    const int64_t cb = HFULL_STRIP;
    int64_t br = nrows < HFULL_BLOCK_ROWS ? nrows : HFULL_BLOCK_ROWS;
    int64_t nstrips = (cols + cb - 1) / cb;
    double *d = malloc((size_t)br * (size_t)cols * sizeof *d);
    double *p = malloc((size_t)br * (size_t)cb * sizeof *p);
    double *tdiag = malloc((size_t)nstrips * (size_t)(cb * cb) * sizeof *tdiag);
    double *vals = row_out ? row_out : malloc((size_t)nrows * sizeof *vals);
    if (!d || !p || !tdiag || !vals) {
        rc = bp_error_set(err, BP_ENOMEM, "hfull: out of memory (%lld x %lld)",
                          (long long)br, (long long)cols);
        goto out;
    }
    for (int64_t s = 0; s < nstrips; s++) {
        int64_t c0 = s * cb, sw = cols - c0 < cb ? cols - c0 : cb;
        double *t = tdiag + s * cb * cb;
        for (int64_t i = 0; i < sw; i++)
            for (int64_t j = 0; j < sw; j++) {
                double v = h[(c0 + i) * cols + c0 + j];
                t[i * sw + j] = j > i ? v : j == i ? 0.5 * v : 0.0;
            }
    }
    for (int64_t r0 = 0; r0 < nrows; r0 += br) {
        int64_t m = nrows - r0 < br ? nrows - r0 : br;
        const float *a = w + r0 * cols, *b = wq + r0 * cols;
        double *sum = vals + r0;
#pragma omp parallel for schedule(static) if (m * cols >= BP__PAR_MIN)
        for (int64_t i = 0; i < m * cols; i++)
            d[i] = (double)a[i] - (double)b[i];
        for (int64_t r = 0; r < m; r++)
            sum[r] = 0.0;
        for (int64_t s = 0; s < nstrips; s++) {
            int64_t c0 = s * cb, sw = cols - c0 < cb ? cols - c0 : cb;
            /* OpenBLAS splits gemm over M and N only: every entry is the
             * same k-ordered sum for any thread count. */
            if (c0 > 0)
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m,
                            (int)sw, (int)c0, 1.0, d, (int)cols, h + c0,
                            (int)cols, 0.0, p, (int)cb);
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m,
                        (int)sw, (int)sw, 1.0, d + c0, (int)cols,
                        tdiag + s * cb * cb, (int)sw, c0 > 0 ? 1.0 : 0.0, p,
                        (int)cb);
#pragma omp parallel for schedule(static) if (m * cols >= BP__PAR_MIN)
            for (int64_t r = 0; r < m; r++) {
                const double *dr = d + r * cols + c0, *pr = p + r * cb;
                double acc_r = sum[r];
                for (int64_t j = 0; j < sw; j++)
                    acc_r += dr[j] * pr[j];
                sum[r] = acc_r;
            }
        }
        for (int64_t r = 0; r < m; r++)
            sum[r] *= 2.0;
    }
    if (acc)
        for (int64_t r = 0; r < nrows; r++)
            *acc += vals[r];
out:
    free(d);
    free(p);
    free(tdiag);
    if (vals != row_out)
        free(vals);
    return rc;
}
