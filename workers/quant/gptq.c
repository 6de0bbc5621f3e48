/* GPTQ with the format's own grid (arXiv 2210.17323; docs/gptq.md). */
#include "bitplan/gptq.h"
#include "quant_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct bp_gptq_factor {
    int64_t n;
    int64_t ndead;
    /* Everything below is indexed by pass position; the pass visits column
     * perm[i] i-th (perm NULL: natural order, perm[i] = i). */
    unsigned char *dead; /* n flags: H_jj was 0 */
    /* n x n row-major, upper triangle: the feedback matrix F = R D^-1 of
     * H = R R^T (R upper, D = diag R) of H permuted to pass order, so F has
     * a unit diagonal. */
    float *f;
    int64_t *perm; /* act-order only */
};

/* |H_ij - H_ji| above this fraction of sqrt(H_ii H_jj) (the Cauchy-Schwarz
 * bound on |H_ij|) means the matrix is not a second-moment matrix at all
 * (wrong layout, wrong tensor), not just accumulated rounding. */
#define SYMMETRY_TOL 1e-3

void bp_gptq_factor_destroy(bp_gptq_factor **p)
{
    if (!p || !*p)
        return;
    free((*p)->dead);
    free((*p)->f);
    free((*p)->perm);
    free(*p);
    *p = NULL;
}

int64_t bp_gptq_factor_cols(const bp_gptq_factor *fac)
{
    return fac ? fac->n : 0;
}

int64_t bp_gptq_factor_dead(const bp_gptq_factor *fac)
{
    return fac ? fac->ndead : 0;
}

static int check_h(const double *h, int64_t n, bp_error *err)
{
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < n; j++)
            if (!isfinite(h[i * n + j]))
                return bp_error_set(err, BP_EINVAL,
                                    "H[%lld][%lld] is not finite",
                                    (long long)i, (long long)j);
        if (h[i * n + i] < 0)
            return bp_error_set(err, BP_EINVAL,
                                "H[%lld][%lld] = %g is negative: not a "
                                "second-moment matrix",
                                (long long)i, (long long)i, h[i * n + i]);
    }
    /* Tiles keep the transposed reads in cache. */
    const int64_t tb = 64;
    for (int64_t i0 = 0; i0 < n; i0 += tb)
        for (int64_t j0 = i0; j0 < n; j0 += tb)
            for (int64_t i = i0; i < i0 + tb && i < n; i++)
                for (int64_t j = j0 > i + 1 ? j0 : i + 1; j < j0 + tb && j < n;
                     j++) {
                    double a = h[i * n + j], b = h[j * n + i];
                    double bound = sqrt(h[i * n + i] * h[j * n + j]);
                    if (fabs(a - b) > SYMMETRY_TOL * bound && a != b)
                        return bp_error_set(err, BP_EINVAL,
                                            "H is not symmetric: H[%lld][%lld]"
                                            " = %g but H[%lld][%lld] = %g",
                                            (long long)i, (long long)j, a,
                                            (long long)j, (long long)i, b);
                }
    return BP_OK;
}

/* Column index of pass position i, for messages in the caller's terms. */
static long long orig_col(const int64_t *perm, int64_t i)
{
    return (long long)(perm ? perm[i] : i);
}

typedef struct {
    double d;
    int64_t j;
} diag_entry;

static int by_decreasing_diag(const void *a, const void *b)
{
    const diag_entry *x = a, *y = b;
    if (x->d != y->d)
        return x->d > y->d ? -1 : 1;
    return x->j < y->j ? -1 : x->j > y->j;
}

int bp_gptq_act_order_perm(const double *h, int64_t n, int64_t *perm,
                           bp_error *err)
{
    if (!h || !perm || n < 1)
        return bp_error_set(err, BP_EINVAL,
                            "gptq: act-order needs a Hessian, an output and "
                            "a size >= 1");
    diag_entry *e = malloc((size_t)n * sizeof *e);
    if (!e)
        return bp_error_set(err, BP_ENOMEM,
                            "gptq: out of memory for act-order of %lld "
                            "columns", (long long)n);
    for (int64_t j = 0; j < n; j++) {
        e[j].d = h[j * n + j];
        e[j].j = j;
        if (!isfinite(e[j].d)) {
            free(e);
            return bp_error_set(err, BP_EINVAL,
                                "gptq: H[%lld][%lld] is not finite",
                                (long long)j, (long long)j);
        }
    }
    /* (H_jj, j) is a total order, so the sort's result is unique. */
    qsort(e, (size_t)n, sizeof *e, by_decreasing_diag);
    for (int64_t i = 0; i < n; i++)
        perm[i] = e[i].j;
    free(e);
    return BP_OK;
}

int bp_gptq_factor_act_order(const bp_gptq_factor *fac, int64_t *perm)
{
    if (!fac || !fac->perm)
        return 0;
    if (perm)
        memcpy(perm, fac->perm, (size_t)fac->n * sizeof *perm);
    return 1;
}

static int factor_build(bp_gptq_factor *fac, const double *h, int64_t n,
                        double damp_frac, bp_error *err);

int bp_gptq_factor_new(const double *h, int64_t h_rows, int64_t h_cols,
                       double damp_frac, bp_gptq_factor **out, bp_error *err)
{
    return bp_gptq_factor_new_ex(h, h_rows, h_cols, damp_frac, 0, out, err);
}

/* H in pass order: hp[i][k] = H[perm[i]][perm[k]], read from H's upper
 * triangle (the only part the factor uses). */
static void permute_h(const double *h, int64_t n, const int64_t *perm,
                      double *hp)
{
#pragma omp parallel for schedule(static) if (n * n >= BP__PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < n; k++) {
            int64_t a = perm[i], b = perm[k];
            hp[i * n + k] = a <= b ? h[a * n + b] : h[b * n + a];
        }
}

int bp_gptq_factor_new_ex(const double *h, int64_t h_rows, int64_t h_cols,
                          double damp_frac, unsigned flags,
                          bp_gptq_factor **out, bp_error *err)
{
    if (out)
        *out = NULL;
    if (flags & ~BP_GPTQ_ACT_ORDER)
        return bp_error_set(err, BP_EINVAL, "gptq: unknown option flags 0x%x",
                            flags & ~BP_GPTQ_ACT_ORDER);
    if (!h || !out)
        return bp_error_set(err, BP_EINVAL, "gptq: NULL Hessian or output");
    if (h_rows != h_cols)
        return bp_error_set(err, BP_EINVAL,
                            "gptq: H is %lld x %lld, not square",
                            (long long)h_rows, (long long)h_cols);
    int64_t n = h_rows;
    if (n < 1 || n > INT32_MAX)
        return bp_error_set(err, BP_EINVAL, "gptq: H size %lld out of range",
                            (long long)n);
    if (!isfinite(damp_frac) || damp_frac < 0)
        return bp_error_set(err, BP_EINVAL,
                            "gptq: damping fraction %g must be finite and >= 0",
                            damp_frac);
    int rc = check_h(h, n, err);
    if (rc)
        return err ? bp_error_prefix(err, "gptq") : rc;

    bp_gptq_factor *fac = calloc(1, sizeof *fac);
    double *hp = NULL;
    if (!fac)
        goto nomem;
    const double *src = h;
    if (flags & BP_GPTQ_ACT_ORDER) {
        fac->perm = malloc((size_t)n * sizeof *fac->perm);
        hp = malloc((size_t)n * (size_t)n * sizeof *hp);
        if (!fac->perm || !hp)
            goto nomem;
        if ((rc = bp_gptq_act_order_perm(h, n, fac->perm, err)) != BP_OK)
            goto out;
        permute_h(h, n, fac->perm, hp);
        src = hp;
    }
    if ((rc = factor_build(fac, src, n, damp_frac, err)) != BP_OK)
        goto out;
    free(hp);
    *out = fac;
    return BP_OK;
nomem:
    rc = bp_error_set(err, BP_ENOMEM, "gptq: out of memory for a %lld x %lld "
                      "Hessian", (long long)h_rows, (long long)h_cols);
out:
    free(hp);
    bp_gptq_factor_destroy(&fac);
    return rc;
}

/* Fills fac (n and perm set, the rest empty) from the validated h, already
 * in pass order. On failure the caller destroys fac. */
static int factor_build(bp_gptq_factor *fac, const double *h, int64_t n,
                        double damp_frac, bp_error *err)
{
    int rc = BP_OK;
    size_t nn = (size_t)n * (size_t)n;
    double *a = NULL, *rdiag = NULL;
    fac->n = n;
    fac->dead = calloc((size_t)n, 1);
    fac->f = malloc(nn * sizeof *fac->f);
    a = malloc(nn * sizeof *a);
    if (!fac->dead || !fac->f || !a)
        goto nomem;

    /* Dead inputs first, then the damping from the mean of the fixed
     * diagonal (the reference algorithm's order). */
    double diag_sum = 0.0;
    for (int64_t j = 0; j < n; j++) {
        double d = h[j * n + j];
        if (d == 0.0) {
            fac->dead[j] = 1;
            fac->ndead++;
            d = 1.0;
        }
        diag_sum += d;
    }
    double damp = damp_frac * (diag_sum / (double)n);

    /* GPTQ's column update with U (H^-1 = U^T U, U upper) is
     *   err_j = (w_j - q_j) / U_jj,  w[j+1:] -= err_j U[j, j+1:],
     * so the final error is dW = W - Q = E U, i.e. E = dW U^-1 = dW R with
     * R = U^-1 upper and H = R R^T, and U_jj = 1 / R_jj. Hence the weight
     * column j is quantized from
     *   w_j + sum_{k<j} dW_k R_kj / R_jj  =  w_j + sum_{k<j} dW_k F_kj,
     * the same values without forming any inverse: one Cholesky (of the
     * reversed matrix, J H J = L L^T gives H = R R^T with R = J L J) instead
     * of Cholesky, inverse, Cholesky. docs/gptq.md has the derivation.
     * a holds J H J in its lower triangle, read from H's upper triangle. */
#pragma omp parallel for schedule(static) if (n * n >= BP__PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        int64_t oi = n - 1 - i;
        for (int64_t k = 0; k <= i; k++) {
            int64_t ok = n - 1 - k; /* ok >= oi: upper triangle of H */
            double v = h[oi * n + ok];
            if (i == k)
                v = (fac->dead[oi] ? 1.0 : v) + damp;
            a[i * n + k] = v;
        }
    }
    int info = bp__chol_lower(a, n);
    if (info < 0)
        goto nomem;
    if (info > 0) {
        rc = bp_error_set(err, BP_EFORMAT,
                          "gptq: H + %g*I is not positive definite (Cholesky "
                          "fails at column %lld of %lld); H must be a positive "
                          "semidefinite second-moment matrix, or use a larger "
                          "damping fraction than %g",
                          damp, orig_col(fac->perm, n - info), (long long)n,
                          damp_frac);
        goto out;
    }
    /* R[p][q] = L[n-1-p][n-1-q]; F[p][q] = R[p][q] / R[q][q]. */
    rdiag = malloc((size_t)n * sizeof *rdiag);
    if (!rdiag)
        goto nomem;
    for (int64_t q = 0; q < n; q++)
        rdiag[q] = a[(n - 1 - q) * n + (n - 1 - q)];
    int64_t bad = -1; /* first non-finite entry, p * n + q */
#pragma omp parallel for schedule(static) if (n * n >= BP__PAR_MIN)
    for (int64_t p = 0; p < n; p++) {
        float *frow = fac->f + p * n;
        const double *lrow = a + (n - 1 - p) * n + (n - 1);
        for (int64_t q = 0; q < p; q++)
            frow[q] = 0.0f;
        frow[p] = 1.0f;
        int ok = 1;
        for (int64_t q = p + 1; q < n; q++) {
            frow[q] = (float)(lrow[-q] / rdiag[q]);
            ok &= isfinite(frow[q]) != 0;
        }
        if (!ok) {
#pragma omp critical(bp_gptq_bad)
            for (int64_t q = p + 1; q < n; q++)
                if (!isfinite(frow[q]) && (bad < 0 || p * n + q < bad))
                    bad = p * n + q;
        }
    }
    if (bad >= 0)
        rc = bp_error_set(err, BP_EFORMAT,
                          "gptq: feedback factor of H is not finite at "
                          "[%lld][%lld]; H is too ill-conditioned, use a "
                          "larger damping fraction than %g",
                          orig_col(fac->perm, bad / n),
                          orig_col(fac->perm, bad % n), damp_frac);
    goto out;

nomem:
    rc = bp_error_set(err, BP_ENOMEM, "gptq: out of memory for a %lld x %lld "
                      "Hessian", (long long)n, (long long)n);
out:
    free(a);
    free(rdiag);
    return rc;
}

/* Columns per sub-block inside a block: feedback within a sub-block is
 * applied column by column, to the rest of the block once per sub-block
 * (8 rank-1 updates per pass over the row). Divides every group size. */
#define SUB 8

/* x[k] += sum_{i < nj} d[i] * f[i * n + k] for k in [0, len), the terms
 * added in i order. */
static void rank_update(float *restrict x, int64_t len,
                        const float *restrict f, int64_t n, int64_t nj,
                        const float *restrict d)
{
    if (nj == SUB) {
        const float *f0 = f, *f1 = f0 + n, *f2 = f1 + n, *f3 = f2 + n,
                    *f4 = f3 + n, *f5 = f4 + n, *f6 = f5 + n, *f7 = f6 + n;
        for (int64_t k = 0; k < len; k++) {
            float acc = d[0] * f0[k];
            acc += d[1] * f1[k];
            acc += d[2] * f2[k];
            acc += d[3] * f3[k];
            acc += d[4] * f4[k];
            acc += d[5] * f5[k];
            acc += d[6] * f6[k];
            acc += d[7] * f7[k];
            x[k] += acc;
        }
        return;
    }
    for (int64_t i = 0; i < nj; i++)
        for (int64_t k = 0; k < len; k++)
            x[k] += d[i] * f[i * n + k];
}

/* The weights GPTQ's inverse-Hessian form holds for group [j, j+g) when it
 * reaches column j (every earlier column fed back, none of the group's own),
 * which is what the group's parameters are fitted on. The feedback form
 * holds fewer updates (wr has only the k < j terms scaled for the final
 * column), so finish them as if the group's columns were quantized
 * losslessly (q_m = v_m, dW_m = w0_m - v_m): both forms give the same
 * values for the same choices of q, and lossless choices leave the
 * inverse-Hessian form's weights unchanged. g^2/2 multiply-adds. v and t
 * hold g floats; sub is the sub-block size (any gives the same values up to
 * rounding). */
static void group_view(const float *fb, int64_t n, const float *w0,
                       const unsigned char *dead, const float *wr, int64_t j,
                       int64_t g, int64_t sub, float *v, float *t)
{
    memcpy(v, wr + j, (size_t)g * sizeof *v);
    for (int64_t s0 = 0; s0 < g; s0 += sub) {
        int64_t s1 = s0 + sub < g ? s0 + sub : g;
        for (int64_t m = s0; m < s1; m++) {
            float tm = (dead[j + m] ? 0.0f : w0[j + m]) - v[m];
            t[m - s0] = tm;
            const float *fm = fb + (j + m) * n + j;
            for (int64_t k = m + 1; k < s1; k++)
                v[k] += tm * fm[k];
        }
        rank_update(v + s1, g - s1, fb + (j + s0) * n + j + s1, n, s1 - s0, t);
    }
    for (int64_t m = 0; m < g; m++) /* see block_row */
        if (!isfinite(v[m]))
            v[m] = 0.0f;
}

/* Round the working value wr[j] with p, store its code (and value) at
 * codes[o] / deq[o] (o = j in natural order, the column's own index in
 * act-order), and feed its error into the rest of the sub-block, columns
 * j+1 .. s1-1 of wr. Returns dW_j = target - q for the lazy update of later
 * blocks (target: the original weight, 0 for a dead column). The three
 * passes (natural, act-order, mixed column blocks) share it, so they round
 * and feed back with the very same operations. */
static inline float round_column(const bp_format *f, const bp_qparams *p, const float *fb,
                                 int64_t n, float *wr, int64_t j, int64_t s1, float target,
                                 int64_t o, uint16_t *codes, float *deq)
{
    /* a diverged feedback (reported by the caller) must not reach the
     * format kernels as inf or NaN */
    float x = isfinite(wr[j]) ? wr[j] : 0.0f;
    uint16_t c = bp_format_encode(f, p, x);
    float q = bp_format_decode(f, p, c);
    codes[o] = c;
    if (deq)
        deq[o] = q;
    float dj = target - q;
    const float *fj = fb + j * n;
    for (int64_t k = j + 1; k < s1; k++)
        wr[k] += dj * fj[k];
    return dj;
}

/* One row's in-block GPTQ step over columns [c0, c1): wr is the working row
 * (original weights plus the feedback received so far), w0 the original row
 * (dead columns read as 0). For group formats the group starting at j is
 * fitted when j is reached, on group_view's up-to-date weights. d receives
 * dW_j = w0_j - q_j for the lazy update of later blocks; v is 2g floats of
 * scratch. */
static void block_row(const bp_format *f, const float *fb, int64_t n,
                      const float *w0, const unsigned char *dead, float *wr,
                      int64_t c0, int64_t c1, float tensor_param,
                      uint16_t *codes, bp_qparams *params, float *deq,
                      float *d, float *v)
{
    int64_t g = f->group;
    /* groups must start sub-blocks, where wr is fully up to date */
    int64_t sub = g == 0 || g % SUB == 0 ? SUB : 1;
    const bp_qparams *p = params; /* per-row: fitted before the first block */
    for (int64_t s0 = c0; s0 < c1; s0 += sub) {
        int64_t s1 = s0 + sub < c1 ? s0 + sub : c1;
        for (int64_t j = s0; j < s1; j++) {
            if (g > 0) {
                bp_qparams *pg = params + j / g;
                if (j % g == 0) { /* j == s0: wr is fully up to date */
                    group_view(fb, n, w0, dead, wr, j, g, sub, v, v + g);
                    bp_format_fit_group(f, v, g, tensor_param, pg);
                }
                p = pg;
            }
            d[j - c0] = round_column(f, p, fb, n, wr, j, s1, dead[j] ? 0.0f : w0[j], j, codes, deq);
        }
        rank_update(wr + s1, c1 - s1, fb + s0 * n + s1, n, s1 - s0,
                    d + (s0 - c0));
    }
}

static int64_t first_nonfinite(const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return i;
    return -1;
}

/* Lazy update of every later column after a block [c0, c1):
 * W[:, c1:] += dW F[c0:c1, c1:] with dW the block's m errors per row. */
static void lazy_update(const bp_gptq_factor *fac, int64_t nrows, int64_t cols, int64_t c0,
                        int64_t c1, int64_t m, const float *e, float *wk)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nrows, (int)(cols - c1), (int)m,
                1.0f, e, (int)m, fac->f + c0 * cols + c1, (int)cols, 1.0f, wk + c1, (int)cols);
}

/* wk holds exactly the values that were quantized: a non-finite one means
 * the feedback diverged. perm (act-order) maps a pass position to its
 * column for the message; NULL in natural order. */
static int check_diverged(const float *wk, int64_t nrows, int64_t cols, const int64_t *perm,
                          bp_error *err)
{
    int64_t bad = first_nonfinite(wk, nrows * cols);
    if (bad < 0)
        return BP_OK;
    return bp_error_set(err, BP_EFORMAT,
                        "gptq: error feedback diverged (weight [%lld, %lld] "
                        "became non-finite); H is too ill-conditioned or "
                        "the weights too large, use a larger damping "
                        "fraction", (long long)(bad / cols),
                        (long long)(perm ? perm[bad % cols] : bad % cols));
}

static int check_rows(const bp_format *f, const float *w, int64_t nrows,
                      int64_t cols, bp_error *err)
{
    if (!f || !w)
        return bp_error_set(err, BP_EINVAL, "gptq: NULL format or weights");
    if (nrows < 1 || cols < 1 || cols > INT32_MAX || nrows > INT32_MAX ||
        cols > INT64_MAX / nrows)
        return bp_error_set(err, BP_EINVAL, "gptq: bad shape %lld x %lld",
                            (long long)nrows, (long long)cols);
    if (!bp_format_supports(f, nrows, cols))
        return bp_error_set(err, BP_EINVAL,
                            "gptq: format %s cannot store a %lld x %lld "
                            "matrix", f->name, (long long)nrows,
                            (long long)cols);
    int64_t i = first_nonfinite(w, nrows * cols);
    if (i >= 0)
        return bp_error_set(err, BP_EINVAL,
                            "gptq: weight [%lld, %lld] is not finite",
                            (long long)(i / cols), (long long)(i % cols));
    return BP_OK;
}

/* One row's in-block act-order step over pass positions [c0, c1): wr is the
 * working row and w0 the original row, both in pass order (dead columns 0);
 * column perm[j] is rounded with its static parameters and written back to
 * its own place in codes and deq. d receives dW for the lazy update. */
static void static_block_row(const bp_format *f, const float *fb, int64_t n,
                             const int64_t *perm, const float *w0, float *wr,
                             int64_t c0, int64_t c1, int64_t g,
                             uint16_t *codes, const bp_qparams *params,
                             float *deq, float *d)
{
    for (int64_t s0 = c0; s0 < c1; s0 += SUB) {
        int64_t s1 = s0 + SUB < c1 ? s0 + SUB : c1;
        for (int64_t j = s0; j < s1; j++) {
            int64_t o = perm[j];
            const bp_qparams *p = params + (g > 0 ? o / g : 0);
            d[j - c0] = round_column(f, p, fb, n, wr, j, s1, w0[j], o, codes, deq);
        }
        rank_update(wr + s1, c1 - s1, fb + s0 * n + s1, n, s1 - s0,
                    d + (s0 - c0));
    }
}

/* Static parameters of one row, fitted before any feedback in natural
 * column order: per-row formats on the raw row (as the natural path),
 * groups on the row with dead columns zeroed (the values the pass starts
 * from). Then w0p (pass order, dead zeroed) is laid out for the pass; tmp
 * holds cols floats. */
static void prepare_static_row(const bp_format *f, const bp_gptq_factor *fac,
                               const float *w, int64_t cols, int64_t g,
                               float tensor_param, bp_qparams *params,
                               float *w0p, float *tmp)
{
    const int64_t *perm = fac->perm;
    memcpy(tmp, w, (size_t)cols * sizeof *tmp);
    for (int64_t i = 0; i < cols; i++)
        if (fac->dead[i])
            tmp[perm[i]] = 0.0f;
    if (g == 0)
        bp_format_fit_group(f, w, cols, tensor_param, params);
    else
        for (int64_t k = 0; k < cols / g; k++)
            bp_format_fit_group(f, tmp + k * g, g, tensor_param, params + k);
    for (int64_t i = 0; i < cols; i++)
        w0p[i] = tmp[perm[i]];
}

/* bp_gptq_quantize_rows for an act-order factor (validated arguments):
 * static parameters first, then the lazy-block pass in pass order. */
static int quantize_act_order(const bp_format *f, const bp_gptq_factor *fac,
                              const float *w, int64_t nrows, int64_t cols,
                              int64_t g, int64_t gpr, float tensor_param,
                              uint16_t *codes, bp_qparams *params, float *deq,
                              bp_error *err)
{
    int rc = BP_OK;
    int64_t bw = BP_GPTQ_BLOCK < cols ? BP_GPTQ_BLOCK : cols;
    size_t nw = (size_t)nrows * (size_t)cols;
    float *w0p = malloc(nw * sizeof *w0p);
    float *wk = malloc(nw * sizeof *wk);
    float *e = malloc((size_t)nrows * (size_t)bw * sizeof *e);
    if (!w0p || !wk || !e) {
        rc = bp_error_set(err, BP_ENOMEM,
                          "gptq: out of memory for %lld x %lld weights",
                          (long long)nrows, (long long)cols);
        goto out;
    }
    /* wk serves as the fitting scratch before it is filled. */
#pragma omp parallel for schedule(static) if (nrows * cols >= BP__PAR_MIN)
    for (int64_t r = 0; r < nrows; r++)
        prepare_static_row(f, fac, w + r * cols, cols, g, tensor_param,
                           params + r * gpr, w0p + r * cols, wk + r * cols);
    memcpy(wk, w0p, nw * sizeof *wk);

    for (int64_t c0 = 0; c0 < cols; c0 += bw) {
        int64_t c1 = c0 + bw < cols ? c0 + bw : cols;
        int64_t m = c1 - c0;
#pragma omp parallel for schedule(static) if (nrows * cols >= BP__PAR_MIN)
        for (int64_t r = 0; r < nrows; r++)
            static_block_row(f, fac->f, cols, fac->perm, w0p + r * cols,
                             wk + r * cols, c0, c1, g, codes + r * cols,
                             params + r * gpr, deq ? deq + r * cols : NULL,
                             e + r * m);
        if (c1 < cols)
            lazy_update(fac, nrows, cols, c0, c1, m, e, wk);
    }
    rc = check_diverged(wk, nrows, cols, fac->perm, err);
out:
    free(w0p);
    free(wk);
    free(e);
    return rc;
}

int bp_gptq_quantize_rows(const bp_format *f, const bp_gptq_factor *fac,
                          const float *w, int64_t nrows, int64_t cols,
                          float tensor_param, uint16_t *codes,
                          bp_qparams *params, float *deq, bp_error *err)
{
    int rc = check_rows(f, w, nrows, cols, err);
    if (rc)
        return rc;
    if (!fac || !codes || !params)
        return bp_error_set(err, BP_EINVAL,
                            "gptq: NULL factor, codes or params");
    if (fac->n != cols)
        return bp_error_set(err, BP_EINVAL,
                            "gptq: weights have %lld columns but H is "
                            "%lld x %lld", (long long)cols, (long long)fac->n,
                            (long long)fac->n);
    if (!isfinite(tensor_param) || tensor_param < 0)
        return bp_error_set(err, BP_EINVAL,
                            "gptq: tensor parameter %g is not finite and >= 0",
                            (double)tensor_param);
    if (f->kind == BP_FMT_F16 || f->kind == BP_FMT_BF16) {
        /* 16-bit keep formats: nothing to feed back worth the cost. */
        rc = bp_format_quantize_rows(f, w, nrows, cols, tensor_param, codes,
                                     params, err);
        if (rc == BP_OK && deq)
            bp_format_dequantize_rows(f, codes, params, nrows, cols, deq);
        return rc;
    }
    int64_t g = f->group;
    if (g < 0 || (g > 0 && cols % g != 0))
        return bp_error_set(err, BP_EINVAL,
                            "gptq: format %s: group %lld does not divide %lld "
                            "columns", f->name, (long long)g, (long long)cols);
    int64_t gpr = bp_format_groups_per_row(f, cols);
    if (gpr != (g > 0 ? cols / g : 1))
        return bp_error_set(err, BP_EINVAL,
                            "gptq: format %s: unexpected %lld groups per row",
                            f->name, (long long)gpr);
    if (fac->perm)
        return quantize_act_order(f, fac, w, nrows, cols, g, gpr,
                                  tensor_param, codes, params, deq, err);
    /* Block width: a multiple of the group so groups never straddle blocks
     * and are fully updated when fitted. */
    int64_t bw = BP_GPTQ_BLOCK;
    if (g > 0)
        bw = ((bw + g - 1) / g) * g;
    if (bw > cols)
        bw = cols;

    size_t nw = (size_t)nrows * (size_t)cols;
    float *wk = malloc(nw * sizeof *wk);
    float *e = malloc((size_t)nrows * (size_t)bw * sizeof *e);
    int64_t nv = g > 0 ? 2 * g : 1; /* group_view scratch per row */
    float *vs = malloc((size_t)nrows * (size_t)nv * sizeof *vs);
    if (!wk || !e || !vs) {
        rc = bp_error_set(err, BP_ENOMEM,
                          "gptq: out of memory for %lld x %lld weights",
                          (long long)nrows, (long long)cols);
        goto out;
    }
    memcpy(wk, w, nw * sizeof *wk);

    /* Per-row parameters come from the original row, before dead columns
     * are zeroed (as the reference algorithm fits before any change). */
    if (g == 0) {
#pragma omp parallel for schedule(static) if (nrows * cols >= BP__PAR_MIN)
        for (int64_t r = 0; r < nrows; r++)
            bp_format_fit_group(f, w + r * cols, cols, tensor_param,
                                params + r);
    }
    if (fac->ndead > 0) {
#pragma omp parallel for schedule(static) if (nrows * cols >= BP__PAR_MIN)
        for (int64_t r = 0; r < nrows; r++)
            for (int64_t j = 0; j < cols; j++)
                if (fac->dead[j])
                    wk[r * cols + j] = 0.0f;
    }

    for (int64_t c0 = 0; c0 < cols; c0 += bw) {
        int64_t c1 = c0 + bw < cols ? c0 + bw : cols;
        int64_t m = c1 - c0;
#pragma omp parallel for schedule(static) if (nrows * cols >= BP__PAR_MIN)
        for (int64_t r = 0; r < nrows; r++)
            block_row(f, fac->f, cols, w + r * cols, fac->dead, wk + r * cols,
                      c0, c1, tensor_param, codes + r * cols,
                      params + r * gpr, deq ? deq + r * cols : NULL,
                      e + r * m, vs + r * nv);
        if (c1 < cols) {
            /* Lazy update of every later column: W[:, c1:] += dW F[c0:c1, c1:]
             * with dW the block's errors; K = m <= block. */
            lazy_update(fac, nrows, cols, c0, c1, m, e, wk);
        }
    }
    /* wk now holds exactly the values that were quantized. */
    rc = check_diverged(wk, nrows, cols, NULL, err);
out:
    free(wk);
    free(e);
    free(vs);
    return rc;
}

static float absmax(const float *w, int64_t n)
{
    float m = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float a = fabsf(w[i]);
        if (a > m)
            m = a;
    }
    return m;
}

int bp_gptq_quantize(const bp_format *f, const float *w, int64_t rows,
                     int64_t cols, const double *h, int64_t h_rows,
                     int64_t h_cols, double damp_frac, uint16_t *codes,
                     bp_qparams *params, float *tensor_param_out, float *deq,
                     bp_error *err)
{
    return bp_gptq_quantize_ex(f, w, rows, cols, h, h_rows, h_cols, damp_frac,
                               0, codes, params, tensor_param_out, deq, err);
}

int bp_gptq_quantize_ex(const bp_format *f, const float *w, int64_t rows,
                        int64_t cols, const double *h, int64_t h_rows,
                        int64_t h_cols, double damp_frac, unsigned flags,
                        uint16_t *codes, bp_qparams *params,
                        float *tensor_param_out, float *deq, bp_error *err)
{
    int rc = check_rows(f, w, rows, cols, err);
    if (rc)
        return rc;
    if (h_rows != cols || h_cols != cols)
        return bp_error_set(err, BP_EINVAL,
                            "gptq: weights have %lld columns but H is "
                            "%lld x %lld", (long long)cols, (long long)h_rows,
                            (long long)h_cols);
    bp_gptq_factor *fac = NULL;
    rc = bp_gptq_factor_new_ex(h, h_rows, h_cols, damp_frac, flags, &fac,
                               err);
    if (rc)
        return rc;
    float tp = bp_format_tensor_param(f, absmax(w, rows * cols));
    if (tensor_param_out)
        *tensor_param_out = tp;
    rc = bp_gptq_quantize_rows(f, fac, w, rows, cols, tp, codes, params, deq,
                               err);
    bp_gptq_factor_destroy(&fac);
    return rc;
}

int bp_gptq_error_rows(const bp_format *f, const bp_gptq_factor *fac,
                       const double *h, const float *w, int64_t nrows,
                       int64_t cols, float tensor_param, double *row_out,
                       double *acc, float *deq, bp_error *err)
{
    int rc = check_rows(f, w, nrows, cols, err);
    if (rc)
        return rc;
    if (!h)
        return bp_error_set(err, BP_EINVAL, "gptq: NULL Hessian");
    size_t nw = (size_t)nrows * (size_t)cols;
    int64_t gpr = bp_format_groups_per_row(f, cols);
    uint16_t *codes = malloc(nw * sizeof *codes);
    bp_qparams *params = malloc((size_t)nrows * (size_t)gpr * sizeof *params);
    float *q = deq ? deq : malloc(nw * sizeof *q);
    if (!codes || !params || !q) {
        rc = bp_error_set(err, BP_ENOMEM,
                          "gptq: out of memory for %lld x %lld weights",
                          (long long)nrows, (long long)cols);
        goto out;
    }
    rc = bp_gptq_quantize_rows(f, fac, w, nrows, cols, tensor_param, codes,
                               params, q, err);
    if (rc == BP_OK)
        rc = bp_quant_hfull_rows(w, q, nrows, cols, h, row_out, acc, err);
out:
    free(codes);
    free(params);
    if (q != deq)
        free(q);
    return rc;
}

int bp_gptq_error(const bp_format *f, const float *w, int64_t rows,
                  int64_t cols, const double *h, int64_t h_rows,
                  int64_t h_cols, double damp_frac, double *out, float *deq,
                  bp_error *err)
{
    return bp_gptq_error_ex(f, w, rows, cols, h, h_rows, h_cols, damp_frac, 0,
                            out, deq, err);
}

int bp_gptq_error_ex(const bp_format *f, const float *w, int64_t rows,
                     int64_t cols, const double *h, int64_t h_rows,
                     int64_t h_cols, double damp_frac, unsigned flags,
                     double *out, float *deq, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "gptq: NULL output");
    int rc = check_rows(f, w, rows, cols, err);
    if (rc)
        return rc;
    if (h_rows != cols || h_cols != cols)
        return bp_error_set(err, BP_EINVAL,
                            "gptq: weights have %lld columns but H is "
                            "%lld x %lld", (long long)cols, (long long)h_rows,
                            (long long)h_cols);
    bp_gptq_factor *fac = NULL;
    rc = bp_gptq_factor_new_ex(h, h_rows, h_cols, damp_frac, flags, &fac,
                               err);
    if (rc)
        return rc;
    float tp = bp_format_tensor_param(f, absmax(w, rows * cols));
    double acc = 0.0;
    rc = bp_gptq_error_rows(f, fac, h, w, rows, cols, tp, NULL, &acc, deq,
                            err);
    if (rc == BP_OK)
        *out = acc;
    bp_gptq_factor_destroy(&fac);
    return rc;
}

/* ---- mixed formats over column blocks -------------------------------------- */

/* Where each column's grid comes from: column j is in block j / S with
 * format fmt[j / S]. geff[b] is the number of columns one fitted parameter
 * set covers (the group; the whole block row for per-row formats; 0 for the
 * 16-bit formats, which have none). Block b's parameters start at
 * params + poff[b], laid out [nrows][gpr[b]]. */
typedef struct col_blocks {
    int64_t size;
    const bp_format *fmt;
    const float *tp;
    const int64_t *geff, *gpr, *poff;
} col_blocks;

static int64_t lcm64(int64_t a, int64_t b)
{
    int64_t x = a, y = b;
    while (y) {
        int64_t t = x % y;
        x = y;
        y = t;
    }
    return a / x * b;
}

/* block_row with a grid per column block. A per-row format in a block is
 * fitted like a group spanning the block, on the weights it holds when the
 * pass reaches the block (earlier blocks' errors fed back), since the row's
 * original values no longer describe it there. */
static void block_row_mixed(const col_blocks *cb, const float *fb, int64_t n,
                            const float *w0, const unsigned char *dead,
                            float *wr, int64_t c0, int64_t c1, int64_t sub,
                            int64_t r, uint16_t *codes, bp_qparams *params,
                            float *deq, float *d, float *v)
{
    for (int64_t s0 = c0; s0 < c1; s0 += sub) {
        int64_t s1 = s0 + sub < c1 ? s0 + sub : c1;
        for (int64_t j = s0; j < s1; j++) {
            int64_t b = j / cb->size, jj = j - b * cb->size;
            const bp_format *f = &cb->fmt[b];
            int64_t g = cb->geff[b];
            const bp_qparams *p = NULL; /* 16-bit formats take none */
            if (g > 0) {
                bp_qparams *pg = params + cb->poff[b] + r * cb->gpr[b] + jj / g;
                if (jj % g == 0) { /* a sub-block start: wr is up to date */
                    group_view(fb, n, w0, dead, wr, j, g, sub, v, v + g);
                    bp_format_fit_group(f, v, g, cb->tp[b], pg);
                }
                p = pg;
            }
            d[j - c0] = round_column(f, p, fb, n, wr, j, s1, dead[j] ? 0.0f : w0[j], j, codes, deq);
        }
        rank_update(wr + s1, c1 - s1, fb + s0 * n + s1, n, s1 - s0,
                    d + (s0 - c0));
    }
}

static int check_col_blocks(const bp_gptq_factor *fac, const float *w,
                            int64_t nrows, int64_t cols, int64_t block_cols,
                            const bp_format *formats,
                            const float *tensor_params, uint16_t *codes,
                            bp_qparams *params, bp_error *err)
{
    if (!fac || !w || !formats || !tensor_params || !codes || !params)
        return bp_error_set(err, BP_EINVAL, "gptq: NULL argument");
    if (nrows < 1 || cols < 1 || cols > INT32_MAX || nrows > INT32_MAX ||
        cols > INT64_MAX / nrows)
        return bp_error_set(err, BP_EINVAL, "gptq: bad shape %lld x %lld",
                            (long long)nrows, (long long)cols);
    if (fac->n != cols)
        return bp_error_set(err, BP_EINVAL,
                            "gptq: weights have %lld columns but H is "
                            "%lld x %lld", (long long)cols, (long long)fac->n,
                            (long long)fac->n);
    if (fac->perm)
        return bp_error_set(err, BP_EINVAL,
                            "gptq: mixed column blocks need a natural-order "
                            "factor, not an act-order one");
    if (block_cols < 1 || cols % block_cols != 0)
        return bp_error_set(err, BP_EINVAL,
                            "gptq: column block size %lld does not divide "
                            "%lld columns", (long long)block_cols,
                            (long long)cols);
    for (int64_t b = 0; b < cols / block_cols; b++) {
        if (!bp_format_supports(&formats[b], nrows, block_cols))
            return bp_error_set(err, BP_EINVAL,
                                "gptq: column block %lld: format %s cannot "
                                "store a %lld x %lld block", (long long)b,
                                formats[b].name, (long long)nrows,
                                (long long)block_cols);
        if (!isfinite(tensor_params[b]) || tensor_params[b] < 0)
            return bp_error_set(err, BP_EINVAL,
                                "gptq: column block %lld: tensor parameter %g "
                                "is not finite and >= 0", (long long)b,
                                (double)tensor_params[b]);
    }
    int64_t i = first_nonfinite(w, nrows * cols);
    if (i >= 0)
        return bp_error_set(err, BP_EINVAL,
                            "gptq: weight [%lld, %lld] is not finite",
                            (long long)(i / cols), (long long)(i % cols));
    return BP_OK;
}

int bp_gptq_quantize_col_blocks(const bp_gptq_factor *fac, const float *w,
                                int64_t nrows, int64_t cols,
                                int64_t block_cols, const bp_format *formats,
                                const float *tensor_params, uint16_t *codes,
                                bp_qparams *params, float *deq, bp_error *err)
{
    int rc = check_col_blocks(fac, w, nrows, cols, block_cols, formats,
                              tensor_params, codes, params, err);
    if (rc)
        return rc;
    int64_t nb = cols / block_cols;
    int64_t *geff = malloc((size_t)nb * 3 * sizeof *geff);
    float *wk = NULL, *e = NULL, *vs = NULL;
    if (!geff)
        goto nomem;
    int64_t *gpr = geff + nb, *poff = geff + 2 * nb;
    int64_t lcm = 0, gmax = 1, off = 0;
    int all_sub = 1;
    for (int64_t b = 0; b < nb; b++) {
        const bp_format *f = &formats[b];
        int keep16 = f->kind == BP_FMT_F16 || f->kind == BP_FMT_BF16;
        geff[b] = keep16 ? 0 : f->group > 0 ? f->group : block_cols;
        gpr[b] = bp_format_groups_per_row(f, block_cols);
        poff[b] = off;
        off += nrows * gpr[b];
        if (geff[b] > 0) {
            lcm = lcm ? lcm64(lcm, geff[b]) : geff[b];
            gmax = geff[b] > gmax ? geff[b] : gmax;
            all_sub &= geff[b] % SUB == 0;
        }
    }
    /* 16-bit blocks have no parameters; packing still expects one slot. */
    for (int64_t b = 0; b < nb; b++)
        if (geff[b] == 0)
            memset(params + poff[b], 0,
                   (size_t)(nrows * gpr[b]) * sizeof *params);
    if (lcm == 0) {
        /* Only 16-bit blocks: plain rounding, as bp_gptq_quantize_rows
         * does for a 16-bit tensor. */
        for (int64_t r = 0; r < nrows; r++)
            for (int64_t j = 0; j < cols; j++) {
                const bp_format *f = &formats[j / block_cols];
                codes[r * cols + j] = bp_format_encode(f, NULL, w[r * cols + j]);
                if (deq)
                    deq[r * cols + j] = bp_format_decode(f, NULL, codes[r * cols + j]);
            }
        free(geff);
        return BP_OK;
    }
    /* Every fitted group divides the block size, so their lcm does too;
     * lazy blocks of a multiple of it never split a group, and sub-blocks
     * dividing every group start each group on a sub-block. With one group
     * format throughout this is exactly bp_gptq_quantize_rows's split. */
    int64_t bw = ((BP_GPTQ_BLOCK + lcm - 1) / lcm) * lcm;
    if (bw > cols)
        bw = cols;
    int64_t sub = all_sub ? SUB : 1;
    col_blocks cb = {block_cols, formats, tensor_params, geff, gpr, poff};

    size_t nw = (size_t)nrows * (size_t)cols;
    wk = malloc(nw * sizeof *wk);
    e = malloc((size_t)nrows * (size_t)bw * sizeof *e);
    vs = malloc((size_t)nrows * (size_t)(2 * gmax) * sizeof *vs);
    if (!wk || !e || !vs)
        goto nomem;
    memcpy(wk, w, nw * sizeof *wk);
    if (fac->ndead > 0) {
#pragma omp parallel for schedule(static) if (nrows * cols >= BP__PAR_MIN)
        for (int64_t r = 0; r < nrows; r++)
            for (int64_t j = 0; j < cols; j++)
                if (fac->dead[j])
                    wk[r * cols + j] = 0.0f;
    }
    for (int64_t c0 = 0; c0 < cols; c0 += bw) {
        int64_t c1 = c0 + bw < cols ? c0 + bw : cols;
        int64_t m = c1 - c0;
#pragma omp parallel for schedule(static) if (nrows * cols >= BP__PAR_MIN)
        for (int64_t r = 0; r < nrows; r++)
            block_row_mixed(&cb, fac->f, cols, w + r * cols, fac->dead,
                            wk + r * cols, c0, c1, sub, r, codes + r * cols,
                            params, deq ? deq + r * cols : NULL, e + r * m,
                            vs + r * 2 * gmax);
        if (c1 < cols)
            lazy_update(fac, nrows, cols, c0, c1, m, e, wk);
    }
    rc = check_diverged(wk, nrows, cols, NULL, err);
    goto out;
nomem:
    rc = bp_error_set(err, BP_ENOMEM,
                      "gptq: out of memory for %lld x %lld weights",
                      (long long)nrows, (long long)cols);
out:
    free(geff);
    free(wk);
    free(e);
    free(vs);
    return rc;
}
