/* Measuring one tensor for the sensitivity table: every allowed format,
 * with the weights RTN or GPTQ would produce, under every metric the
 * available data allows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/format.h"
#include "bitplan/gptq.h"
#include "bitplan/sweep.h"
#include "job_internal.h"

/* Squared and importance-weighted error of wq against w, summed like the
 * sweep: per row in column order (double), rows into chunks of
 * BP_SWEEP_CHUNK_ROWS in row order, chunks in order. Shared with tests
 * through bp_job_error_total so "re-measured == predicted" is exact. */
void bp_job_error_total(const float *w, const float *wq, int64_t rows, int64_t cols,
                        const float *colw, double *sse_out, double *wsse_out)
{
    /* Per-row sums in the fused kernel's own order (bp_format_error_rows),
     * then rows into chunks and chunks in order, as the sweep does. */
    double *rs = malloc((size_t)(rows > 0 ? rows : 1) * sizeof *rs);
    double *rw = malloc((size_t)(rows > 0 ? rows : 1) * sizeof *rw);
    if (!rs || !rw) {
        free(rs);
        free(rw);
        *sse_out = NAN;
        if (wsse_out)
            *wsse_out = NAN;
        return;
    }
    bp_format_error_rows(w, wq, rows, cols, colw, rs, rw);
    double sse = 0.0, wsse = 0.0;
    for (int64_t c0 = 0; c0 < rows; c0 += BP_SWEEP_CHUNK_ROWS) {
        int64_t c1 = c0 + BP_SWEEP_CHUNK_ROWS < rows ? c0 + BP_SWEEP_CHUNK_ROWS : rows;
        double cs = 0.0, cw = 0.0;
        for (int64_t r = c0; r < c1; r++) {
            cs += rs[r];
            if (colw)
                cw += rw[r];
        }
        sse += cs;
        wsse += cw;
    }
    free(rs);
    free(rw);
    *sse_out = sse;
    if (wsse_out)
        *wsse_out = colw ? wsse : NAN;
}

/* KL increase with only this tensor replaced by deq. */
static int measure_dkl(const bp_measure_env *env, const char *name, const float *deq, double *out,
                       bp_error *err)
{
    int64_t first, n_win, ctx;
    bp_eval_reference_range(env->ref, &first, &n_win, &ctx);
    int rc = bp_llama_set_weight_borrowed(env->llama, name, deq, err);
    if (rc != BP_OK)
        return rc;
    bp_eval_sums s;
    rc = bp_eval_compare(env->llama, env->ref, first, n_win, &s, err);
    int rc2 = bp_llama_reset_weight(env->llama, name, NULL);
    if (rc != BP_OK)
        return rc;
    if (rc2 != BP_OK)
        return bp_error_set(err, BP_EINVAL, "tensor '%s': cannot restore the weight", name);
    double kl = bp_eval_sums_mean_kl(&s);
    /* Rounding can leave a tiny negative KL for a harmless change. */
    *out = kl > 0.0 ? kl : 0.0;
    return BP_OK;
}

int bp__job_measure_tensor(const bp_tensor_info *ti, const bp_selected_tensor *st,
                           const bp_measure_env *env, bp_table *t, bp_error *err)
{
    int rc = BP_OK;
    int64_t rows = st->rows, cols = st->cols;
    size_t n = (size_t)rows * (size_t)cols;
    float *w = NULL, *deq = NULL, *colw_buf = NULL;
    double *h = NULL, *hd = NULL;
    uint16_t *codes = NULL;
    bp_qparams *params = NULL;
    bp_gptq_factor *fac = NULL;
    bp_sweep_result sw;
    bp_sweep_result_init(&sw);
    const float *colw = NULL;
    int need_deq = env->method == BP_METHOD_GPTQ || env->want_dkl || env->calib;

    /* Importance per input channel: the calibration Hessian's diagonal, or
     * an imatrix. */
    if (env->calib) {
        if ((rc = bp_calib_hessian_diag(env->calib, env->cfg, st->name, cols, &hd, err)) != BP_OK)
            goto out;
        colw_buf = malloc((size_t)cols * sizeof *colw_buf);
        if (!colw_buf) {
            rc = bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory", st->name);
            goto out;
        }
        for (int64_t j = 0; j < cols; j++)
            colw_buf[j] = (float)hd[j];
        colw = colw_buf;
        if (bp_hessian_get_mode(bp_calib_hessian(env->calib)) == BP_HESSIAN_FULL &&
            (rc = bp_calib_hessian_full(env->calib, env->cfg, st->name, cols, &h, err)) != BP_OK)
            goto out;
    } else if (env->imatrix) {
        int64_t m = 0;
        colw = bp_imatrix_find(env->imatrix, st->name, &m);
        if (!colw) {
            rc = bp_error_set(err, BP_ENOTFOUND, "imatrix has no entry for tensor '%s'", st->name);
            goto out;
        }
        if (m != cols) {
            rc = bp_error_set(err, BP_EMISMATCH,
                              "imatrix entry for '%s' has %lld values, the tensor has %lld input channels",
                              st->name, (long long)m, (long long)cols);
            goto out;
        }
    }
    if (env->method == BP_METHOD_GPTQ && !h) {
        rc = bp_error_set(err, BP_EINVAL, "tensor '%s': GPTQ needs full input Hessians (calibration data)",
                          st->name);
        goto out;
    }

    /* RTN squared errors come from the sweep work unit. */
    if (env->method == BP_METHOD_RTN &&
        (rc = bp_sweep_tensor(ti, st->formats, st->n_formats, colw, 0, rows, &sw, err)) != BP_OK)
        goto out;

    if (need_deq) {
        w = malloc(n * sizeof *w);
        deq = malloc(n * sizeof *deq);
        if (!w || !deq) {
            rc = bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory", st->name);
            goto out;
        }
        if ((rc = bp_tensor_rows_f32(ti, 0, rows, w, err)) != BP_OK)
            goto out;
    }
    if (env->method == BP_METHOD_GPTQ) {
        if ((rc = bp_gptq_factor_new(h, cols, cols, BP_GPTQ_DAMP_DEFAULT, &fac, err)) != BP_OK) {
            bp_error_prefix(err, "tensor '%s'", st->name);
            goto out;
        }
    }
    float amax = w ? bp__absmax(w, n) : 0.0f;

    for (size_t k = 0; k < st->n_formats; k++) {
        const bp_format *f = &st->formats[k];
        bp_table_row row;
        bp_table_row_init(&row);
        row.tensor = st->name;
        row.format = f->name;
        row.method = env->method;
        row.bytes = bp_format_bytes(f, rows, cols);
        row.rows = rows;
        row.cols = cols;
        row.params = st->params;
        if (env->method == BP_METHOD_RTN) {
            row.metric[BP_METRIC_MSE] = bp_sweep_result_total(&sw, k, BP_SWEEP_SSE);
            if (colw)
                row.metric[BP_METRIC_HDIAG] = bp_sweep_result_total(&sw, k, BP_SWEEP_WSSE);
        }
        if (need_deq) {
            float tparam = bp_format_tensor_param(f, amax);
            if (env->method == BP_METHOD_GPTQ) {
                int64_t groups = bp_format_groups_per_row(f, cols);
                codes = realloc(codes, n * sizeof *codes);
                params = realloc(params, (size_t)rows * (size_t)groups * sizeof *params);
                if (!codes || !params) {
                    rc = bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory", st->name);
                    goto out;
                }
                rc = bp_gptq_quantize_rows(f, fac, w, rows, cols, tparam, codes, params, deq, err);
                if (rc == BP_OK)
                    bp_job_error_total(w, deq, rows, cols, colw, &row.metric[BP_METRIC_MSE],
                                        colw ? &row.metric[BP_METRIC_HDIAG] : NULL);
            } else {
                double *scratch = malloc((size_t)rows * sizeof *scratch);
                rc = scratch ? bp_format_rtn_error_rows(f, w, rows, cols, tparam, NULL, scratch, NULL, deq, err)
                             : bp_error_set(err, BP_ENOMEM, "out of memory");
                free(scratch);
            }
            if (rc != BP_OK) {
                bp_error_prefix(err, "tensor '%s', format %s", st->name, f->name);
                goto out;
            }
            if (h) {
                double acc = 0.0;
                if ((rc = bp_quant_hfull_rows(w, deq, rows, cols, h, NULL, &acc, err)) != BP_OK)
                    goto out;
                row.metric[BP_METRIC_HFULL] = acc;
                if (env->method == BP_METHOD_GPTQ)
                    row.metric[BP_METRIC_GPTQ] = acc;
            }
            if (env->want_dkl &&
                (rc = measure_dkl(env, st->name, deq, &row.metric[BP_METRIC_DKL], err)) != BP_OK) {
                bp_error_prefix(err, "tensor '%s', format %s", st->name, f->name);
                goto out;
            }
        }
        if ((rc = bp_table_add_row(t, &row, err)) != BP_OK)
            goto out;
        if (env->progress)
            atomic_fetch_add(env->progress, 1);
    }
out:
    bp_gptq_factor_destroy(&fac);
    bp_sweep_result_free(&sw);
    free(w);
    free(deq);
    free(colw_buf);
    free(h);
    free(hd);
    free(codes);
    free(params);
    return rc;
}
