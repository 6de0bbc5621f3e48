/* The "measure_blocks" task kind: every (block, format) cell of one tensor
 * for --granularity block (include/bitplan/blocks.h), so the solve can give
 * each block of the tensor its own format.
 *
 * Params (a msgpack map; validated, it comes from the network):
 *   model       str, required     model directory
 *   tensor      str, required     a 2-D tensor of the model
 *   formats     [str], 1..256     canonical format names
 *   method      "rtn" | "gptq" | "gptq_act" (gptq_act: rows axis only)
 *   axis        "rows" | "cols"
 *   size        int >= 1          rows or columns per block; divides the axis
 *   stats       str, optional     Hessian stats: importance (hdiag), H
 *                                 (hfull, gptq); required for gptq
 *   calib_id    str, optional     checked against the stats
 *   imatrix     str, optional     importance from a llama.cpp imatrix
 * Result: {"blocks": n, "formats": k} and binary outputs "bytes" (i64 per
 * format: one block's packed bytes, 0 when the block shape cannot take the
 * format) and "mse", "hdiag", "hfull", "gptq" (f64 per cell, block-major,
 * NaN when not measured). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/blocks.h"
#include "bitplan/calib_input.h"
#include "bitplan/imatrix.h"
#include "bitplan/llama.h"
#include "bitplan/task.h"
#include "job_internal.h"
#include "tasks_internal.h"

/* One worker runs one task at a time: a single cache per process. */
static struct {
    char *model_dir;
    bp_model *model;
    bp_llama *llama;
    char *stats_path;
    bp_calib *calib;
    char *imatrix_path;
    bp_imatrix *imatrix;
} g_blk;

static int open_model(const char *dir, bp_error *err)
{
    if (g_blk.model_dir && !strcmp(g_blk.model_dir, dir))
        return BP_OK;
    bp_calib_destroy(&g_blk.calib);
    free(g_blk.stats_path);
    g_blk.stats_path = NULL;
    bp_llama_destroy(&g_blk.llama);
    bp_model_destroy(&g_blk.model);
    free(g_blk.model_dir);
    g_blk.model_dir = NULL;
    int rc = bp_model_open(dir, &g_blk.model, err);
    if (rc != BP_OK)
        return rc;
    g_blk.model_dir = strdup(dir);
    return g_blk.model_dir ? BP_OK : bp_error_set(err, BP_ENOMEM, "out of memory");
}

static int open_stats(const char *path, bp_error *err)
{
    if (g_blk.stats_path && !strcmp(g_blk.stats_path, path))
        return BP_OK;
    bp_calib_destroy(&g_blk.calib);
    free(g_blk.stats_path);
    g_blk.stats_path = NULL;
    int rc = BP_OK;
    if (!g_blk.llama && (rc = bp_llama_new(g_blk.model, &g_blk.llama, err)) != BP_OK)
        return rc;
    bp_calib_spec cs;
    bp_calib_spec_default(&cs);
    cs.stats_path = path;
    cs.quiet = 1;
    if ((rc = bp_calib_open(&cs, g_blk.llama, NULL, 0, &g_blk.calib, err)) != BP_OK)
        return rc;
    g_blk.stats_path = strdup(path);
    return g_blk.stats_path ? BP_OK : bp_error_set(err, BP_ENOMEM, "out of memory");
}

static int open_imatrix(const char *path, bp_error *err)
{
    if (g_blk.imatrix_path && !strcmp(g_blk.imatrix_path, path))
        return BP_OK;
    bp_imatrix_destroy(&g_blk.imatrix);
    free(g_blk.imatrix_path);
    g_blk.imatrix_path = NULL;
    int rc = bp_imatrix_load(path, &g_blk.imatrix, err);
    if (rc != BP_OK)
        return rc;
    g_blk.imatrix_path = strdup(path);
    return g_blk.imatrix_path ? BP_OK : bp_error_set(err, BP_ENOMEM, "out of memory");
}

static int read_formats(const msgpack_object *m, bp_format **out, size_t *n, bp_error *err)
{
    const msgpack_object *arr = NULL;
    int rc = bp_mp_get_array(m, "formats", &arr, n, err);
    if (rc != BP_OK)
        return rc;
    if (*n == 0 || *n > 256)
        return bp_error_set(err, BP_EINVAL, "measure_blocks task: \"formats\" must list 1..256 formats");
    *out = calloc(*n, sizeof **out);
    if (!*out)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    for (size_t i = 0; i < *n; i++) {
        char name[BP_FORMAT_NAME_MAX];
        if (arr[i].type != MSGPACK_OBJECT_STR || arr[i].via.str.size >= sizeof name)
            return bp_error_set(err, BP_EINVAL, "measure_blocks task: formats[%zu] is not a format name", i);
        memcpy(name, arr[i].via.str.ptr, arr[i].via.str.size);
        name[arr[i].via.str.size] = '\0';
        if ((rc = bp_format_parse(name, &(*out)[i], err)) != BP_OK)
            return bp_error_prefix(err, "measure_blocks task");
    }
    return BP_OK;
}

static int add_cells(bp_task_ctx *ctx, const char *name, const double *v, size_t n, bp_error *err)
{
    return bp_task_add_bin(ctx, name, BP_WIRE_F64, v, n, err);
}

static int task_measure_blocks(bp_task_ctx *ctx, bp_error *err)
{
    const msgpack_object *p = ctx->params;
    char *model = NULL, *tensor = NULL, *method_s = NULL, *axis_s = NULL, *stats = NULL, *calib_id = NULL,
         *imatrix = NULL;
    bp_format *formats = NULL;
    size_t nf = 0;
    double *h = NULL, *hd = NULL;
    float *colw = NULL;
    bp_block_measure *bm = NULL;
    int64_t size = 0;
    int rc = BP_OK;
    if (!(model = bp__mp_strdup(p, "model", 1, err)) || !(tensor = bp__mp_strdup(p, "tensor", 1, err)) ||
        !(method_s = bp__mp_strdup(p, "method", 1, err)) || !(axis_s = bp__mp_strdup(p, "axis", 1, err))) {
        rc = err ? err->code : BP_EINVAL;
        goto out;
    }
    if ((rc = bp__mp_opt_strdup(p, "stats", &stats, err)) ||
        (rc = bp__mp_opt_strdup(p, "calib_id", &calib_id, err)) ||
        (rc = bp__mp_opt_strdup(p, "imatrix", &imatrix, err)) || (rc = bp_mp_get_i64(p, "size", &size, err)) ||
        (rc = read_formats(p, &formats, &nf, err)))
        goto out;
    int method = bp_table_method_from_name(method_s);
    if (method < 0) {
        rc = bp_error_set(err, BP_EINVAL, "measure_blocks task: unknown method '%s' (rtn, gptq or gptq_act)",
                          method_s);
        goto out;
    }
    if ((strcmp(axis_s, "rows") && strcmp(axis_s, "cols")) || size < 1 || size > (1L << 30)) {
        rc = bp_error_set(err, BP_EINVAL, "measure_blocks task: bad axis or size");
        goto out;
    }
    bp_block_axis axis = axis_s[0] == 'r' ? BP_BLOCK_AXIS_ROWS : BP_BLOCK_AXIS_COLS;
    if ((rc = open_model(model, err)) != BP_OK)
        goto out;
    long ti = bp_model_find(g_blk.model, tensor);
    if (ti < 0) {
        rc = bp_error_set(err, BP_ENOTFOUND, "%s: no tensor '%s'", model, tensor);
        goto out;
    }
    const bp_tensor_info *t = bp_model_tensor(g_blk.model, (size_t)ti);
    if (t->ndim != 2) {
        rc = bp_error_set(err, BP_EINVAL, "tensor '%s' is not 2-D", tensor);
        goto out;
    }
    int64_t cols = t->shape[1];
    const float *importance = NULL;
    if (stats) {
        if ((rc = open_stats(stats, err)) != BP_OK)
            goto out;
        if (calib_id && strcmp(calib_id, bp_calib_id(g_blk.calib))) {
            rc = bp_error_set(err, BP_EMISMATCH, "%s: calibration id %s, the job expects %s", stats,
                              bp_calib_id(g_blk.calib), calib_id);
            goto out;
        }
        const bp_llama_config *cfg = bp_llama_get_config(g_blk.llama);
        if ((rc = bp_calib_hessian_diag(g_blk.calib, cfg, tensor, cols, &hd, err)) != BP_OK)
            goto out;
        if (!(colw = malloc((size_t)cols * sizeof *colw))) {
            rc = bp_error_set(err, BP_ENOMEM, "out of memory");
            goto out;
        }
        for (int64_t j = 0; j < cols; j++)
            colw[j] = (float)hd[j];
        importance = colw;
        if (bp_hessian_get_mode(bp_calib_hessian(g_blk.calib)) == BP_HESSIAN_FULL &&
            (rc = bp_calib_hessian_full(g_blk.calib, cfg, tensor, cols, &h, err)) != BP_OK)
            goto out;
    } else if (imatrix) {
        if ((rc = open_imatrix(imatrix, err)) != BP_OK)
            goto out;
        int64_t m = 0;
        importance = bp_imatrix_find(g_blk.imatrix, tensor, &m);
        if (!importance || m != cols) {
            rc = bp_error_set(err, BP_EMISMATCH, "imatrix has no entry of %lld values for '%s'", (long long)cols,
                              tensor);
            goto out;
        }
    }
    if (bp_method_is_gptq((bp_quant_method)method) && !h) {
        rc = bp_error_set(err, BP_EINVAL, "measure_blocks task: GPTQ needs full Hessians (\"stats\")");
        goto out;
    }
    if ((rc = bp_measure_blocks(t, axis, size, formats, nf, importance, h, (bp_quant_method)method, &bm, err)) !=
        BP_OK)
        goto out;
    atomic_fetch_add(ctx->progress, 1);
    size_t cells = (size_t)bm->n_blocks * nf;
    msgpack_pack_map(ctx->result, 2);
    bp__pack_key(ctx->result, "blocks");
    msgpack_pack_int64(ctx->result, bm->n_blocks);
    bp__pack_key(ctx->result, "formats");
    msgpack_pack_int64(ctx->result, (int64_t)nf);
    int64_t *bytes = malloc(nf * sizeof *bytes);
    if (!bytes) {
        rc = bp_error_set(err, BP_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t k = 0; k < nf; k++)
        bytes[k] = bm->offered[k] ? (int64_t)bm->bytes[k] : 0;
    rc = bp_task_add_bin(ctx, "bytes", BP_WIRE_I64, bytes, nf, err);
    free(bytes);
    if (rc ||
        (rc = add_cells(ctx, "mse", bm->mse, cells, err)) || (rc = add_cells(ctx, "hdiag", bm->hdiag, cells, err)) ||
        (rc = add_cells(ctx, "hfull", bm->hfull, cells, err)) || (rc = add_cells(ctx, "gptq", bm->gptq, cells, err)))
        goto out;
out:
    bp_block_measure_destroy(&bm);
    free(model);
    free(tensor);
    free(method_s);
    free(axis_s);
    free(stats);
    free(calib_id);
    free(imatrix);
    free(formats);
    free(h);
    free(hd);
    free(colw);
    return rc;
}

void bp__tasks_register_blocks(void)
{
    bp_task_register("measure_blocks", task_measure_blocks);
}
