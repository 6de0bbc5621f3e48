/* Measuring a tensor's intra-tensor blocks: one cell per (block, format),
 * each block quantized as its own matrix (docs/blocks.md). */
#include "bitplan/blocks.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/gptq.h"
#include "job_internal.h"

void bp_blocks_shape(bp_block_axis axis, int64_t size, int64_t rows,
                     int64_t cols, int64_t *block_rows, int64_t *block_cols)
{
    *block_rows = axis == BP_BLOCK_AXIS_ROWS ? size : rows;
    *block_cols = axis == BP_BLOCK_AXIS_ROWS ? cols : size;
}

static int check_cut(bp_block_axis axis, int64_t size, int64_t rows,
                     int64_t cols, bp_error *err)
{
    if (rows < 1 || cols < 1 || cols > INT64_MAX / rows)
        return bp_error_set(err, BP_EINVAL, "bad tensor shape %lld x %lld", (long long)rows,
                            (long long)cols);
    if (axis != BP_BLOCK_AXIS_ROWS && axis != BP_BLOCK_AXIS_COLS)
        return bp_error_set(err, BP_EINVAL, "unknown block axis %d", (int)axis);
    int64_t dim = axis == BP_BLOCK_AXIS_ROWS ? rows : cols;
    if (size < 1 || dim % size != 0)
        return bp_error_set(err, BP_EINVAL, "block size %lld does not divide the %s (%lld)",
                            (long long)size, axis == BP_BLOCK_AXIS_ROWS ? "rows" : "columns",
                            (long long)dim);
    return BP_OK;
}

static int check_importance(const float *imp, int64_t cols, bp_error *err)
{
    for (int64_t j = 0; imp && j < cols; j++)
        if (!isfinite(imp[j]) || imp[j] < 0)
            return bp_error_set(err, BP_EINVAL, "importance[%lld] = %g is not finite and >= 0",
                                (long long)j, (double)imp[j]);
    return BP_OK;
}

/* Block b of w as a contiguous matrix: rows blocks are already contiguous;
 * column blocks are copied into buf (rows x size). */
static const float *block_of(const float *w, int64_t rows, int64_t cols, bp_block_axis axis,
                             int64_t size, int64_t b, float *buf)
{
    if (axis == BP_BLOCK_AXIS_ROWS)
        return w + b * size * cols;
    for (int64_t r = 0; r < rows; r++)
        memcpy(buf + r * size, w + r * cols + b * size, (size_t)size * sizeof *buf);
    return buf;
}

/* The Hessian block a block's hfull uses: H itself for row blocks, the
 * diagonal block H_bb (copied into buf, size x size) for column blocks. */
static const double *hessian_of(const double *h, int64_t cols, bp_block_axis axis, int64_t size,
                                int64_t b, double *buf)
{
    if (!h || axis == BP_BLOCK_AXIS_ROWS)
        return h;
    for (int64_t i = 0; i < size; i++)
        memcpy(buf + i * size, h + (b * size + i) * cols + b * size, (size_t)size * sizeof *buf);
    return buf;
}

/* One block's errors (nr x nc matrices wb, qb): per-row sums, then rows in
 * row order. The single definition behind cells and bp_blocks_error.
 * sse, wsse: nr doubles of scratch. */
static int block_error(const float *wb, const float *qb, int64_t nr, int64_t nc,
                       const float *colw, const double *hb, double *sse, double *wsse,
                       double *mse, double *hdiag, double *hfull, bp_error *err)
{
    if (mse || hdiag) {
        bp_format_error_rows(wb, qb, nr, nc, colw, sse, wsse);
        double s = 0.0, sw = 0.0;
        for (int64_t r = 0; r < nr; r++) {
            s += sse[r];
            if (colw)
                sw += wsse[r];
        }
        if (!isfinite(s) || (colw && !isfinite(sw)))
            return bp_error_set(err, BP_EINVAL, "non-finite weights");
        if (mse)
            *mse = s;
        if (hdiag)
            *hdiag = sw;
    }
    if (hfull) {
        double acc = 0.0;
        int rc = bp_quant_hfull_rows(wb, qb, nr, nc, hb, NULL, &acc, err);
        if (rc != BP_OK)
            return rc;
        *hfull = acc;
    }
    return BP_OK;
}

int bp_blocks_error(const float *w, const float *wq, int64_t rows, int64_t cols,
                    bp_block_axis axis, int64_t size, const float *importance, const double *h,
                    double *mse, double *hdiag, double *hfull, bp_error *err)
{
    int rc = check_cut(axis, size, rows, cols, err);
    if (rc == BP_OK && (!w || !wq))
        rc = bp_error_set(err, BP_EINVAL, "NULL weights");
    if (rc == BP_OK && hdiag && !importance)
        rc = bp_error_set(err, BP_EINVAL, "hdiag needs the importance per column");
    if (rc == BP_OK && hfull && !h)
        rc = bp_error_set(err, BP_EINVAL, "hfull needs the input Hessian");
    if (rc == BP_OK)
        rc = check_importance(importance, cols, err);
    if (rc != BP_OK)
        return rc;
    int64_t br, bc;
    bp_blocks_shape(axis, size, rows, cols, &br, &bc);
    int64_t nb = (axis == BP_BLOCK_AXIS_ROWS ? rows : cols) / size;
    int col = axis == BP_BLOCK_AXIS_COLS;
    size_t nblk = (size_t)br * (size_t)bc;
    float *wbuf = col ? malloc(nblk * sizeof *wbuf) : NULL;
    float *qbuf = col ? malloc(nblk * sizeof *qbuf) : NULL;
    double *hbuf = col && hfull ? malloc((size_t)size * (size_t)size * sizeof *hbuf) : NULL;
    double *sse = malloc((size_t)br * 2 * sizeof *sse);
    if (!sse || (col && (!wbuf || !qbuf)) || (col && hfull && !hbuf)) {
        rc = bp_error_set(err, BP_ENOMEM, "blocks: out of memory");
        goto out;
    }
    for (int64_t b = 0; b < nb && rc == BP_OK; b++) {
        const float *wb = block_of(w, rows, cols, axis, size, b, wbuf);
        const float *qb = block_of(wq, rows, cols, axis, size, b, qbuf);
        const float *colw = importance && hdiag ? importance + (col ? b * size : 0) : NULL;
        const double *hb = hfull ? hessian_of(h, cols, axis, size, b, hbuf) : NULL;
        rc = block_error(wb, qb, br, bc, colw, hb, sse, sse + br, mse ? &mse[b] : NULL,
                         hdiag ? &hdiag[b] : NULL, hfull ? &hfull[b] : NULL, err);
        if (rc != BP_OK)
            bp_error_prefix(err, "block %lld", (long long)b);
    }
out:
    free(wbuf);
    free(qbuf);
    free(hbuf);
    free(sse);
    return rc;
}

void bp_block_measure_destroy(bp_block_measure **m)
{
    if (!m || !*m)
        return;
    free((*m)->formats);
    free((*m)->offered);
    free((*m)->bytes);
    free((*m)->mse);
    free((*m)->hdiag);
    free((*m)->hfull);
    free((*m)->gptq);
    free(*m);
    *m = NULL;
}

static bp_block_measure *measure_alloc(int64_t n_blocks, size_t n_formats)
{
    bp_block_measure *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    size_t nc = (size_t)n_blocks * n_formats;
    m->formats = malloc(n_formats * sizeof *m->formats);
    m->offered = calloc(n_formats, 1);
    m->bytes = calloc(n_formats, sizeof *m->bytes);
    double **arrays[] = {&m->mse, &m->hdiag, &m->hfull, &m->gptq};
    int ok = m->formats && m->offered && m->bytes;
    for (size_t a = 0; a < 4; a++) {
        *arrays[a] = malloc(nc * sizeof **arrays[a]);
        ok &= *arrays[a] != NULL;
        for (size_t i = 0; *arrays[a] && i < nc; i++)
            (*arrays[a])[i] = NAN;
    }
    if (!ok)
        bp_block_measure_destroy(&m);
    return m;
}

/* Scratch for one block: its weights (column blocks), quantized weights,
 * codes and parameters, the block Hessian, per-row sums. */
typedef struct cell_scratch {
    float *wbuf, *qb;
    uint16_t *codes;
    bp_qparams *params;
    double *hbuf, *sse;
} cell_scratch;

static void scratch_free(cell_scratch *s)
{
    free(s->wbuf);
    free(s->qb);
    free(s->codes);
    free(s->params);
    free(s->hbuf);
    free(s->sse);
}

static int scratch_alloc(cell_scratch *s, int64_t br, int64_t bc, int64_t size, int col_h)
{
    size_t n = (size_t)br * (size_t)bc;
    s->wbuf = malloc(n * sizeof *s->wbuf);
    s->qb = malloc(n * sizeof *s->qb);
    s->codes = malloc(n * sizeof *s->codes);
    /* at most one parameter set per weight */
    s->params = malloc(n * sizeof *s->params);
    s->hbuf = col_h ? malloc((size_t)size * (size_t)size * sizeof *s->hbuf) : NULL;
    s->sse = malloc((size_t)br * 2 * sizeof *s->sse);
    return s->wbuf && s->qb && s->codes && s->params && s->sse && (!col_h || s->hbuf);
}

/* Quantize block wb (br x bc) to f with the method: qb receives the
 * dequantized weights. fac: GPTQ factor of the block's Hessian. */
static int quantize_cell(const bp_format *f, bp_quant_method method, const bp_gptq_factor *fac,
                         const float *wb, int64_t br, int64_t bc, float tp, cell_scratch *s,
                         bp_error *err)
{
    if (bp_method_is_gptq(method))
        return bp_gptq_quantize_rows(f, fac, wb, br, bc, tp, s->codes, s->params, s->qb, err);
    return bp_format_rtn_error_rows(f, wb, br, bc, tp, NULL, s->sse, NULL, s->qb, err);
}

static int check_measure_args(const bp_tensor_info *t, bp_block_axis axis, int64_t size,
                              const bp_format *formats, size_t n_formats, const float *importance,
                              const double *h, bp_quant_method method, bp_block_measure **out,
                              bp_error *err)
{
    if (!t || !out || !formats || n_formats == 0)
        return bp_error_set(err, BP_EINVAL, "blocks: NULL tensor, output or no formats");
    if (t->ndim != 2)
        return bp_error_set(err, BP_EINVAL, "tensor '%s': only 2-D tensors have blocks", t->name);
    if (!bp_table_method_name(method))
        return bp_error_set(err, BP_EINVAL, "tensor '%s': unknown method %d", t->name, (int)method);
    if (method == BP_METHOD_GPTQ_ACT && axis == BP_BLOCK_AXIS_COLS)
        return bp_error_set(err, BP_EINVAL,
                            "tensor '%s': method gptq_act cannot quantize cols-axis blocks (apply runs one "
                            "natural-order GPTQ pass across them); use method gptq or block axis rows",
                            t->name);
    if (bp_method_is_gptq(method) && !h)
        return bp_error_set(err, BP_EINVAL, "tensor '%s': GPTQ needs the input Hessian", t->name);
    int rc = check_cut(axis, size, t->shape[0], t->shape[1], err);
    if (rc == BP_OK)
        rc = check_importance(importance, t->shape[1], err);
    if (rc != BP_OK)
        bp_error_prefix(err, "tensor '%s'", t->name);
    return rc;
}

int bp_measure_blocks(const bp_tensor_info *t, bp_block_axis axis, int64_t size,
                      const bp_format *formats, size_t n_formats, const float *importance,
                      const double *h, bp_quant_method method, bp_block_measure **out,
                      bp_error *err)
{
    int rc = check_measure_args(t, axis, size, formats, n_formats, importance, h, method, out, err);
    if (rc != BP_OK)
        return rc;
    *out = NULL;
    int64_t rows = t->shape[0], cols = t->shape[1], br, bc;
    bp_blocks_shape(axis, size, rows, cols, &br, &bc);
    int64_t nb = (axis == BP_BLOCK_AXIS_ROWS ? rows : cols) / size;
    int col = axis == BP_BLOCK_AXIS_COLS;
    size_t n = (size_t)rows * (size_t)cols;
    bp_block_measure *m = measure_alloc(nb, n_formats);
    float *w = malloc(n * sizeof *w);
    bp_gptq_factor *fac = NULL;
    cell_scratch s = {0};
    if (!m || !w || !scratch_alloc(&s, br, bc, size, col && h)) {
        rc = bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory for blocks", t->name);
        goto out;
    }
    m->axis = axis;
    m->size = size;
    m->rows = rows;
    m->cols = cols;
    m->block_rows = br;
    m->block_cols = bc;
    m->n_blocks = nb;
    m->n_formats = n_formats;
    m->method = method;
    memcpy(m->formats, formats, n_formats * sizeof *formats);
    for (size_t k = 0; k < n_formats; k++) {
        m->offered[k] = bp_format_supports(&formats[k], br, bc) != 0;
        m->bytes[k] = m->offered[k] ? bp_format_bytes(&formats[k], br, bc) : 0;
    }
    if ((rc = bp_tensor_rows_f32(t, 0, rows, w, err)) != BP_OK)
        goto out;
    /* One nvfp4 tensor scale for every block (blocks.h). */
    float amax = bp__absmax(w, n);
    /* Row blocks share the tensor's factor; column blocks get their own. */
    if (bp_method_is_gptq(method) && !col &&
        (rc = bp_gptq_factor_new_ex(h, cols, cols, BP_GPTQ_DAMP_DEFAULT, bp_method_gptq_flags(method), &fac,
                                    err)) != BP_OK) {
        bp_error_prefix(err, "tensor '%s'", t->name);
        goto out;
    }
    for (int64_t b = 0; b < nb; b++) {
        const float *wb = block_of(w, rows, cols, axis, size, b, s.wbuf);
        const float *colw = importance ? importance + (col ? b * size : 0) : NULL;
        const double *hb = hessian_of(h, cols, axis, size, b, s.hbuf);
        if (bp_method_is_gptq(method) && col) {
            bp_gptq_factor_destroy(&fac);
            if ((rc = bp_gptq_factor_new(hb, size, size, BP_GPTQ_DAMP_DEFAULT, &fac, err)) != BP_OK) {
                bp_error_prefix(err, "tensor '%s', block %lld", t->name, (long long)b);
                goto out;
            }
        }
        for (size_t k = 0; k < n_formats; k++) {
            if (!m->offered[k])
                continue;
            const bp_format *f = &formats[k];
            size_t c = bp_block_measure_cell(m, b, k);
            float tp = bp_format_tensor_param(f, amax);
            rc = quantize_cell(f, method, fac, wb, br, bc, tp, &s, err);
            if (rc == BP_OK)
                rc = block_error(wb, s.qb, br, bc, colw, hb, s.sse, s.sse + br, &m->mse[c],
                                 colw ? &m->hdiag[c] : NULL, hb ? &m->hfull[c] : NULL, err);
            if (rc != BP_OK) {
                bp_error_prefix(err, "tensor '%s', block %lld, format %s", t->name, (long long)b,
                                f->name);
                goto out;
            }
            if (bp_method_is_gptq(method))
                m->gptq[c] = m->hfull[c];
        }
    }
    *out = m;
    m = NULL;
out:
    bp_gptq_factor_destroy(&fac);
    scratch_free(&s);
    free(w);
    bp_block_measure_destroy(&m);
    return rc;
}
