/* Measuring one tensor for the sensitivity table: every allowed format,
 * with the weights RTN or GPTQ would produce, under every metric the
 * available data allows. A tensor is measured in row blocks (bp_measure_part)
 * that merge into exactly the values of one whole-tensor measurement, so a
 * large tensor can be spread over workers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/format.h"
#include "bitplan/gptq.h"
#include "bitplan/sweep.h"
#include "job_internal.h"

/* Chunk sums of the per-row errors of wq against w (rows [0, nrows) of a
 * block that starts on a chunk boundary): the sweep's order, per row in the
 * fused kernel's order (bp_format_error_rows), rows serially into chunks.
 * wsse_chunks may be NULL; with colw NULL it is left alone. */
static int error_chunks(const float *w, const float *wq, int64_t nrows, int64_t cols, const float *colw,
                        double *sse_chunks, double *wsse_chunks)
{
    double *rs = malloc((size_t)(nrows > 0 ? nrows : 1) * sizeof *rs);
    double *rw = malloc((size_t)(nrows > 0 ? nrows : 1) * sizeof *rw);
    if (!rs || !rw) {
        free(rs);
        free(rw);
        return BP_ENOMEM;
    }
    bp_format_error_rows(w, wq, nrows, cols, colw, rs, rw);
    for (int64_t c0 = 0, c = 0; c0 < nrows; c0 += BP_SWEEP_CHUNK_ROWS, c++) {
        int64_t c1 = c0 + BP_SWEEP_CHUNK_ROWS < nrows ? c0 + BP_SWEEP_CHUNK_ROWS : nrows;
        double cs = 0.0, cw = 0.0;
        for (int64_t r = c0; r < c1; r++) {
            cs += rs[r];
            if (colw)
                cw += rw[r];
        }
        sse_chunks[c] = cs;
        if (colw && wsse_chunks)
            wsse_chunks[c] = cw;
    }
    free(rs);
    free(rw);
    return BP_OK;
}

void bp_job_error_total(const float *w, const float *wq, int64_t rows, int64_t cols,
                        const float *colw, double *sse_out, double *wsse_out)
{
    int64_t nc = bp__measure_part_chunks(rows);
    double *cs = malloc((size_t)(nc > 0 ? nc : 1) * sizeof *cs);
    double *cw = malloc((size_t)(nc > 0 ? nc : 1) * sizeof *cw);
    if (!cs || !cw || error_chunks(w, wq, rows, cols, colw, cs, cw) != BP_OK) {
        free(cs);
        free(cw);
        *sse_out = NAN;
        if (wsse_out)
            *wsse_out = NAN;
        return;
    }
    double sse = 0.0, wsse = 0.0;
    for (int64_t c = 0; c < nc; c++) {
        sse += cs[c];
        if (colw)
            wsse += cw[c];
    }
    free(cs);
    free(cw);
    *sse_out = sse;
    if (wsse_out)
        *wsse_out = colw ? wsse : NAN;
}

int bp__measure_part_alloc(bp_measure_part *p, int64_t row0, int64_t nrows, size_t nfmt, unsigned metrics,
                           bp_error *err)
{
    memset(p, 0, sizeof *p);
    p->row0 = row0;
    p->nrows = nrows;
    p->nfmt = nfmt;
    p->metrics = metrics;
    size_t nc = (size_t)bp__measure_part_chunks(nrows);
    p->chunk = calloc(nfmt * 2 * (nc ? nc : 1), sizeof *p->chunk);
    if (metrics & (1u << BP_METRIC_HFULL))
        p->row_hfull = calloc(nfmt * (size_t)(nrows ? nrows : 1), sizeof *p->row_hfull);
    if (metrics & (1u << BP_METRIC_DKL))
        p->dkl = calloc(nfmt ? nfmt : 1, sizeof *p->dkl);
    if (!p->chunk || ((metrics & (1u << BP_METRIC_HFULL)) && !p->row_hfull) ||
        ((metrics & (1u << BP_METRIC_DKL)) && !p->dkl)) {
        bp__measure_part_free(p);
        return bp_error_set(err, BP_ENOMEM, "measure: out of memory");
    }
    return BP_OK;
}

void bp__measure_part_free(bp_measure_part *p)
{
    free(p->chunk);
    free(p->row_hfull);
    free(p->dkl);
    memset(p, 0, sizeof *p);
}

int bp__job_needs_absmax(const bp_selected_tensor *st)
{
    for (size_t k = 0; k < st->n_formats; k++)
        if (st->formats[k].kind == BP_FMT_NVFP4)
            return 1;
    return 0;
}

int64_t bp__job_split_rows(const bp_job_spec *spec, const bp_selected_tensor *st, int want_dkl)
{
    int64_t block = spec->split_rows ? spec->split_rows : BP_JOB_SPLIT_ROWS_DEFAULT;
    int64_t min_w = spec->split_min_weights ? spec->split_min_weights : BP_JOB_SPLIT_WEIGHTS_DEFAULT;
    /* KL replaces the whole tensor in the model: it cannot be cut. */
    if (want_dkl || block < 0 || st->rows <= block)
        return st->rows;
    if (min_w > 0 && st->params <= (uint64_t)min_w)
        return st->rows;
    return block;
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

/* Importance per input channel (the calibration Hessian's diagonal, or an
 * imatrix) and, with full calibration Hessians, H itself. */
static int load_weights_of_error(const bp_selected_tensor *st, const bp_measure_env *env, float **colw_buf,
                                 const float **colw, double **h, bp_error *err)
{
    int64_t cols = st->cols;
    if (env->calib) {
        double *hd = NULL;
        int rc = bp_calib_hessian_diag(env->calib, env->cfg, st->name, cols, &hd, err);
        if (rc != BP_OK)
            return rc;
        *colw_buf = malloc((size_t)cols * sizeof **colw_buf);
        if (!*colw_buf) {
            free(hd);
            return bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory", st->name);
        }
        for (int64_t j = 0; j < cols; j++)
            (*colw_buf)[j] = (float)hd[j];
        free(hd);
        *colw = *colw_buf;
        if (bp_hessian_get_mode(bp_calib_hessian(env->calib)) == BP_HESSIAN_FULL)
            return bp_calib_hessian_full(env->calib, env->cfg, st->name, cols, h, err);
        return BP_OK;
    }
    if (env->imatrix) {
        int64_t m = 0;
        *colw = bp_imatrix_find(env->imatrix, st->name, &m);
        if (!*colw)
            return bp_error_set(err, BP_ENOTFOUND, "imatrix has no entry for tensor '%s'", st->name);
        if (m != cols)
            return bp_error_set(err, BP_EMISMATCH,
                                "imatrix entry for '%s' has %lld values, the tensor has %lld input channels",
                                st->name, (long long)m, (long long)cols);
    }
    return BP_OK;
}

static int check_row_range(const bp_selected_tensor *st, int64_t row0, int64_t nrows, int want_dkl,
                           bp_error *err)
{
    if (row0 < 0 || nrows < 1 || row0 > st->rows - nrows || row0 % BP_SWEEP_CHUNK_ROWS != 0 ||
        (row0 + nrows < st->rows && nrows % BP_SWEEP_CHUNK_ROWS != 0))
        return bp_error_set(err, BP_EINVAL, "tensor '%s': bad row range [%lld, %lld) of %lld rows", st->name,
                            (long long)row0, (long long)(row0 + nrows), (long long)st->rows);
    if (want_dkl && nrows != st->rows)
        return bp_error_set(err, BP_EINVAL, "tensor '%s': dkl needs the whole tensor, not a row range",
                            st->name);
    return BP_OK;
}

int bp__job_measure_rows(const bp_tensor_info *ti, const bp_selected_tensor *st, const bp_measure_env *env,
                         int64_t row0, int64_t nrows, float absmax, bp_measure_part *out, bp_error *err)
{
    memset(out, 0, sizeof *out);
    int rc = check_row_range(st, row0, nrows, env->want_dkl, err);
    if (rc != BP_OK)
        return rc;
    int64_t cols = st->cols, nc = bp__measure_part_chunks(nrows), c_first = row0 / BP_SWEEP_CHUNK_ROWS;
    size_t n = (size_t)nrows * (size_t)cols;
    float *w = NULL, *deq = NULL, *colw_buf = NULL;
    double *h = NULL;
    uint16_t *codes = NULL;
    bp_qparams *params = NULL;
    bp_gptq_factor *fac = NULL;
    bp_sweep_result sw;
    bp_sweep_result_init(&sw);
    const float *colw = NULL;
    int need_deq = bp_method_is_gptq(env->method) || env->want_dkl || env->calib;

    if ((rc = load_weights_of_error(st, env, &colw_buf, &colw, &h, err)) != BP_OK)
        goto out;
    if (bp_method_is_gptq(env->method) && !h) {
        rc = bp_error_set(err, BP_EINVAL, "tensor '%s': GPTQ needs full input Hessians (calibration data)",
                          st->name);
        goto out;
    }
    unsigned metrics = 1u << BP_METRIC_MSE;
    if (colw)
        metrics |= 1u << BP_METRIC_HDIAG;
    if (h && need_deq)
        metrics |= 1u << BP_METRIC_HFULL;
    if (h && bp_method_is_gptq(env->method))
        metrics |= 1u << BP_METRIC_GPTQ;
    if (env->want_dkl)
        metrics |= 1u << BP_METRIC_DKL;
    if ((rc = bp__measure_part_alloc(out, row0, nrows, st->n_formats, metrics, err)) != BP_OK)
        goto out;

    if (need_deq) {
        w = malloc(n * sizeof *w);
        deq = malloc(n * sizeof *deq);
        if (!w || !deq) {
            rc = bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory", st->name);
            goto out;
        }
        if ((rc = bp_tensor_rows_f32(ti, row0, nrows, w, err)) != BP_OK)
            goto out;
    }
    /* nvfp4's tensor scale is a whole-tensor property: a row block gets it
     * from its caller so it reads only its own rows. */
    if (absmax < 0.0f && bp__job_needs_absmax(st)) {
        if (w && nrows == st->rows)
            absmax = bp__absmax(w, n);
        else if ((rc = bp_sweep_tensor_absmax(ti, &absmax, err)) != BP_OK)
            goto out;
    }

    /* RTN squared errors come from the sweep work unit. */
    if (env->method == BP_METHOD_RTN) {
        bp_sweep_opts o = BP_SWEEP_OPTS_INIT;
        o.tensor_absmax = bp__job_needs_absmax(st) ? absmax : -1.0f;
        if ((rc = bp_sweep_tensor_ex(ti, st->formats, st->n_formats, colw, row0, nrows, &o, &sw, err)) != BP_OK)
            goto out;
        for (size_t k = 0; k < st->n_formats; k++) {
            const double *ps = bp_sweep_partial(&sw, k, BP_SWEEP_SSE);
            const double *pw = bp_sweep_partial(&sw, k, BP_SWEEP_WSSE);
            double *dst = out->chunk + k * 2 * (size_t)nc;
            for (int64_t c = 0; c < nc; c++) {
                dst[c] = ps[c_first + c];
                if (colw)
                    dst[nc + c] = pw[c_first + c];
            }
        }
    }

    if (bp_method_is_gptq(env->method) &&
        (rc = bp_gptq_factor_new_ex(h, cols, cols, BP_GPTQ_DAMP_DEFAULT, bp_method_gptq_flags(env->method), &fac,
                                    err)) != BP_OK) {
        bp_error_prefix(err, "tensor '%s'", st->name);
        goto out;
    }

    for (size_t k = 0; k < st->n_formats && need_deq; k++) {
        const bp_format *f = &st->formats[k];
        float tparam = bp_format_tensor_param(f, absmax > 0.0f ? absmax : 0.0f);
        if (bp_method_is_gptq(env->method)) {
            int64_t groups = bp_format_groups_per_row(f, cols);
            codes = realloc(codes, n * sizeof *codes);
            params = realloc(params, (size_t)nrows * (size_t)groups * sizeof *params);
            if (!codes || !params) {
                rc = bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory", st->name);
                goto out;
            }
            rc = bp_gptq_quantize_rows(f, fac, w, nrows, cols, tparam, codes, params, deq, err);
            double *dst = out->chunk + k * 2 * (size_t)nc;
            if (rc == BP_OK && error_chunks(w, deq, nrows, cols, colw, dst, dst + nc) != BP_OK)
                rc = bp_error_set(err, BP_ENOMEM, "out of memory");
        } else {
            double *scratch = malloc((size_t)nrows * sizeof *scratch);
            rc = scratch ? bp_format_rtn_error_rows(f, w, nrows, cols, tparam, NULL, scratch, NULL, deq, err)
                         : bp_error_set(err, BP_ENOMEM, "out of memory");
            free(scratch);
        }
        if (rc != BP_OK) {
            bp_error_prefix(err, "tensor '%s', format %s", st->name, f->name);
            goto out;
        }
        if (h && (rc = bp_quant_hfull_rows(w, deq, nrows, cols, h, out->row_hfull + k * (size_t)nrows, NULL,
                                           err)) != BP_OK)
            goto out;
        if (env->want_dkl && (rc = measure_dkl(env, st->name, deq, &out->dkl[k], err)) != BP_OK) {
            bp_error_prefix(err, "tensor '%s', format %s", st->name, f->name);
            goto out;
        }
        if (env->progress)
            atomic_fetch_add(env->progress, 1);
    }
    if (!need_deq && env->progress)
        atomic_fetch_add(env->progress, st->n_formats);
out:
    if (rc != BP_OK)
        bp__measure_part_free(out);
    bp_gptq_factor_destroy(&fac);
    bp_sweep_result_free(&sw);
    free(w);
    free(deq);
    free(colw_buf);
    free(h);
    free(codes);
    free(params);
    return rc;
}

/* The parts must tile [0, st->rows) in order and agree on what they hold. */
static int check_parts(const bp_selected_tensor *st, const bp_measure_part *parts, size_t nparts, bp_error *err)
{
    int64_t next = 0;
    for (size_t i = 0; i < nparts; i++) {
        const bp_measure_part *p = &parts[i];
        if (p->row0 != next || p->nrows < 1 || p->nfmt != st->n_formats || p->metrics != parts[0].metrics)
            return bp_error_set(err, BP_EPROTO, "tensor '%s': measured row blocks do not fit together", st->name);
        if ((p->metrics & (1u << BP_METRIC_DKL)) && nparts != 1)
            return bp_error_set(err, BP_EPROTO, "tensor '%s': dkl was measured on a row block", st->name);
        next += p->nrows;
    }
    if (nparts == 0 || next != st->rows)
        return bp_error_set(err, BP_EPROTO, "tensor '%s': measured row blocks cover %lld of %lld rows", st->name,
                            (long long)next, (long long)st->rows);
    return BP_OK;
}

int bp__job_measure_merge(const bp_selected_tensor *st, bp_quant_method method, const bp_measure_part *parts,
                          size_t nparts, bp_table *t, bp_error *err)
{
    int rc = check_parts(st, parts, nparts, err);
    if (rc != BP_OK)
        return rc;
    unsigned metrics = parts[0].metrics;
    for (size_t k = 0; k < st->n_formats; k++) {
        /* Chunk partials in chunk order and hfull row by row, starting from
         * 0: exactly the whole-tensor sums, however the rows were cut. */
        double sse = 0.0, wsse = 0.0, hfull = 0.0;
        for (size_t i = 0; i < nparts; i++) {
            const bp_measure_part *p = &parts[i];
            int64_t nc = bp__measure_part_chunks(p->nrows);
            const double *ck = p->chunk + k * 2 * (size_t)nc;
            for (int64_t c = 0; c < nc; c++) {
                sse += ck[c];
                wsse += ck[nc + c];
            }
            if (p->row_hfull)
                for (int64_t r = 0; r < p->nrows; r++)
                    hfull += p->row_hfull[k * (size_t)p->nrows + (size_t)r];
        }
        bp_table_row row;
        bp_table_row_init(&row);
        row.tensor = st->name;
        row.format = st->formats[k].name;
        row.method = method;
        row.bytes = bp_format_bytes(&st->formats[k], st->rows, st->cols);
        row.rows = st->rows;
        row.cols = st->cols;
        row.params = st->params;
        row.metric[BP_METRIC_MSE] = sse;
        if (metrics & (1u << BP_METRIC_HDIAG))
            row.metric[BP_METRIC_HDIAG] = wsse;
        if (metrics & (1u << BP_METRIC_HFULL))
            row.metric[BP_METRIC_HFULL] = hfull;
        if (metrics & (1u << BP_METRIC_GPTQ))
            row.metric[BP_METRIC_GPTQ] = hfull;
        if (metrics & (1u << BP_METRIC_DKL))
            row.metric[BP_METRIC_DKL] = parts[0].dkl[k];
        if ((rc = bp_table_add_row(t, &row, err)) != BP_OK)
            return rc;
    }
    return BP_OK;
}

int bp__job_measure_tensor(const bp_tensor_info *ti, const bp_selected_tensor *st,
                           const bp_measure_env *env, bp_table *t, bp_error *err)
{
    bp_measure_part part;
    int rc = bp__job_measure_rows(ti, st, env, 0, st->rows, -1.0f, &part, err);
    if (rc != BP_OK)
        return rc;
    rc = bp__job_measure_merge(st, env->method, &part, 1, t, err);
    bp__measure_part_free(&part);
    return rc;
}
