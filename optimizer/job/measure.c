/* Measuring one tensor for the sensitivity table. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/format.h"
#include "job_internal.h"

#if __has_include("bitplan/sweep.h")
#include "bitplan/sweep.h"
#endif

static float absmax_of(const float *w, size_t n)
{
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(w[i]);
        m = a > m ? a : m;
    }
    return m;
}

int bp__job_measure_tensor(const bp_tensor_info *ti, const bp_selected_tensor *st,
                           const float *colw, bp_table *t, bp_error *err)
{
    int rc = BP_OK;
    int64_t rows = st->rows, cols = st->cols;
    size_t n = (size_t)rows * (size_t)cols;
    float *w = malloc(n * sizeof *w);
    double *sse = malloc((size_t)rows * sizeof *sse);
    double *wsse = colw ? malloc((size_t)rows * sizeof *wsse) : NULL;
    if (!w || !sse || (colw && !wsse)) {
        rc = bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory", st->name);
        goto out;
    }
    if ((rc = bp_tensor_rows_f32(ti, 0, rows, w, err)) != BP_OK)
        goto out;
    float amax = absmax_of(w, n);
    for (size_t k = 0; k < st->n_formats; k++) {
        const bp_format *f = &st->formats[k];
        float tparam = bp_format_tensor_param(f, amax);
        if ((rc = bp_format_rtn_error_rows(f, w, rows, cols, tparam, colw, sse, wsse, NULL, err)) != BP_OK) {
            bp_error_prefix(err, "tensor '%s', format %s", st->name, f->name);
            goto out;
        }
        /* Row order summation keeps the total independent of threads. */
        double tot = 0.0, wtot = 0.0;
        for (int64_t r = 0; r < rows; r++) {
            tot += sse[r];
            if (wsse)
                wtot += wsse[r];
        }
        bp_table_row row;
        bp_table_row_init(&row);
        row.tensor = st->name;
        row.format = f->name;
        row.method = BP_METHOD_RTN;
        row.bytes = bp_format_bytes(f, rows, cols);
        row.rows = rows;
        row.cols = cols;
        row.params = st->params;
        row.metric[BP_METRIC_MSE] = tot;
        if (wsse)
            row.metric[BP_METRIC_HDIAG] = wtot;
        if ((rc = bp_table_add_row(t, &row, err)) != BP_OK)
            goto out;
    }
out:
    free(w);
    free(sse);
    free(wsse);
    return rc;
}
