/* KV-cache error terms (measure_kv.h): the fp8 calibration and the per-span
 * KL sums both the measure_kv task and the direct path use, and the table
 * rows of the direct path. */
#include "measure_kv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/kv_quant.h"

int bp__kv_fp8_calibrate(bp_llama *l, bp__kv_drive_fn drive, void *ctx, bp_error *err)
{
    if (!l || !drive)
        return bp_error_set(err, BP_EINVAL, "KV fp8 calibration: NULL argument");
    /* Maxima are taken before any KV quantization, but the forward pass
     * must still be the exact one for the values to be the reference's. */
    bp_llama_reset_kv_formats(l);
    bp_llama_kv_observe(l, 1);
    int rc = drive(l, ctx, err);
    bp_llama_kv_observe(l, 0);
    const int64_t nl = bp_llama_get_config(l)->n_layers;
    for (int64_t i = 0; rc == BP_OK && i < nl; i++) {
        float ka = 0, va = 0;
        if ((rc = bp_llama_kv_absmax(l, i, &ka, &va, err)) != BP_OK)
            break;
        if (!isfinite(ka) || !isfinite(va))
            rc = bp_error_set(err, BP_EINVAL, "KV fp8 calibration: layer %lld has non-finite K or V",
                              (long long)i);
        else
            rc = bp_llama_set_kv_fp8_scales(l, i, bp_kv_fp8_scale(ka), bp_kv_fp8_scale(va), err);
    }
    return rc;
}

int bp__kv_measure_span(bp_llama *l, const bp_eval_reference *ref, int64_t first, int64_t n,
                        int64_t layer, const bp_kv_format *formats, size_t n_formats,
                        bp_eval_sums *sums, _Atomic uint64_t *progress, bp_error *err)
{
    if (!l || !ref || !formats || !sums)
        return bp_error_set(err, BP_EINVAL, "KV measure: NULL argument");
    int rc = BP_OK;
    for (size_t i = 0; rc == BP_OK && i < n_formats; i++) {
        bp_eval_sums s;
        bp_llama_reset_kv_formats(l);
        if ((rc = bp_llama_set_kv_format(l, layer, formats[i], err)) == BP_OK &&
            (rc = bp_eval_compare(l, ref, first, n, &s, err)) == BP_OK)
            rc = bp_eval_sums_merge(&sums[i], &s, err);
        if (rc != BP_OK && err)
            bp_error_prefix(err, "KV layer %lld, %s", (long long)layer,
                            bp_kv_format_name(formats[i]) ? bp_kv_format_name(formats[i]) : "?");
        if (progress)
            atomic_fetch_add(progress, 1);
    }
    bp_llama_reset_kv_formats(l);
    return rc;
}

int bp__kv_dkl(const bp_eval_sums *s, double *dkl, bp_error *err)
{
    if (s->count <= 0)
        return bp_error_set(err, BP_EINVAL, "KV measure: no tokens were scored");
    const double kl = bp_eval_sums_mean_kl(s);
    /* Rounding can leave a tiny negative KL for a harmless change. */
    *dkl = kl > 0.0 ? kl : 0.0;
    return BP_OK;
}

void bp__kv_row_tensor(int64_t layer, char *out, size_t len)
{
    snprintf(out, len, "model.layers.%lld.kv_cache", (long long)layer);
}

/* Every window of the reference. */
static int drive_reference(bp_llama *l, void *ctx, bp_error *err)
{
    const bp_eval_reference *ref = ctx;
    int64_t first, n, c;
    bp_eval_reference_range(ref, &first, &n, &c);
    bp_eval_sums s;
    return bp_eval_compare(l, ref, first, n, &s, err);
}

static int check_rows_args(const bp_llama *l, const bp_kv_shape *shape, int64_t context, int64_t batch,
                           int metric, uint64_t bytes[BP_KV_FORMAT_COUNT], bp_error *err)
{
    if (metric != BP_METRIC_DKL)
        return bp_error_set(err, BP_EINVAL, "KV cache rows: the job's metric is '%s', but KV rows are measured "
                            "as dkl only (use metric dkl with KV decisions)",
                            bp_table_metric_name((bp_metric)metric) ? bp_table_metric_name((bp_metric)metric)
                                                                    : "?");
    const bp_llama_config *cfg = bp_llama_get_config(l);
    if (shape->n_layers != cfg->n_layers || shape->n_kv_heads != cfg->n_kv_heads || shape->head_dim != cfg->head_dim)
        return bp_error_set(err, BP_EMISMATCH,
                            "KV cache rows: shape %lld layers x %lld KV heads x %lld is not the model's "
                            "%lld x %lld x %lld",
                            (long long)shape->n_layers, (long long)shape->n_kv_heads, (long long)shape->head_dim,
                            (long long)cfg->n_layers, (long long)cfg->n_kv_heads, (long long)cfg->head_dim);
    for (int f = 0; f < BP_KV_FORMAT_COUNT; f++) {
        int rc = bp_kv_bytes(shape, (bp_kv_format)f, context, batch, &bytes[f], err);
        if (rc != BP_OK) {
            bp_error_prefix(err, "KV cache rows");
            return rc;
        }
    }
    return BP_OK;
}

static int check_no_rows(const bp_table *t, int64_t n_layers, bp_error *err)
{
    for (int64_t layer = 0; layer < n_layers; layer++) {
        char name[64], fmt[32];
        bp__kv_row_tensor(layer, name, sizeof name);
        for (int f = 0; f < BP_KV_FORMAT_COUNT; f++) {
            snprintf(fmt, sizeof fmt, "kv_%s", bp_kv_format_name((bp_kv_format)f));
            if (bp_table_find(t, name, NULL, fmt, BP_METHOD_RTN) >= 0)
                return bp_error_set(err, BP_EINVAL, "KV cache rows: the table already has '%s' / '%s'", name, fmt);
        }
    }
    return BP_OK;
}

static int add_rows(bp_table *t, int64_t n_layers, const uint64_t bytes[BP_KV_FORMAT_COUNT], const double *dkl,
                    bp_error *err)
{
    for (int64_t layer = 0; layer < n_layers; layer++) {
        char name[64], fmt[32];
        bp__kv_row_tensor(layer, name, sizeof name);
        for (int f = 0; f < BP_KV_FORMAT_COUNT; f++) {
            snprintf(fmt, sizeof fmt, "kv_%s", bp_kv_format_name((bp_kv_format)f));
            bp_table_row row;
            bp_table_row_init(&row);
            row.tensor = name;
            row.format = fmt;
            row.method = BP_METHOD_RTN;
            row.bytes = bytes[f];
            row.metric[BP_METRIC_DKL] = dkl[layer * BP_KV_FORMAT_COUNT + f];
            int rc = bp_table_add_row(t, &row, err);
            if (rc != BP_OK)
                return rc;
        }
    }
    return BP_OK;
}

int bp__job_measure_kv_rows(bp_llama *l, const bp_eval_reference *ref, const bp_kv_shape *shape,
                            int64_t context, int64_t batch, int metric_dkl_column, bp_table *t,
                            bp_error *err)
{
    if (!l || !ref || !shape || !t)
        return bp_error_set(err, BP_EINVAL, "KV cache rows: NULL argument");
    uint64_t bytes[BP_KV_FORMAT_COUNT];
    int rc;
    if ((rc = check_rows_args(l, shape, context, batch, metric_dkl_column, bytes, err)) != BP_OK ||
        (rc = check_no_rows(t, shape->n_layers, err)) != BP_OK)
        return rc;
    const bp_kv_format all[BP_KV_FORMAT_COUNT] = {BP_KV_F16, BP_KV_FP8_E4M3, BP_KV_INT8, BP_KV_INT4};
    double *dkl = malloc(sizeof *dkl * (size_t)(shape->n_layers * BP_KV_FORMAT_COUNT));
    if (!dkl)
        return bp_error_set(err, BP_ENOMEM, "KV cache rows: out of memory");
    int64_t first, n, c;
    bp_eval_reference_range(ref, &first, &n, &c);
    rc = bp__kv_fp8_calibrate(l, drive_reference, (void *)ref, err);
    for (int64_t layer = 0; rc == BP_OK && layer < shape->n_layers; layer++) {
        bp_eval_sums sums[BP_KV_FORMAT_COUNT];
        memset(sums, 0, sizeof sums);
        rc = bp__kv_measure_span(l, ref, first, n, layer, all, BP_KV_FORMAT_COUNT, sums, NULL, err);
        for (int f = 0; rc == BP_OK && f < BP_KV_FORMAT_COUNT; f++)
            rc = bp__kv_dkl(&sums[f], &dkl[layer * BP_KV_FORMAT_COUNT + f], err);
    }
    if (rc == BP_OK)
        rc = add_rows(t, shape->n_layers, bytes, dkl, err);
    free(dkl);
    return rc;
}
