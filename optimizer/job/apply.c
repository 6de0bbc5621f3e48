/* Applying a plan: quantize, pack, and stream a model directory out. */
#include "bitplan/apply.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bitplan/blocks.h"
#include "bitplan/calib_input.h"
#include "bitplan/evaluate.h"
#include "bitplan/gptq.h"
#include "bitplan/hash.h"
#include "bitplan/progress.h"
#include "job_internal.h"

/* table.h spells the act-order flag as a literal to stay free of gptq.h. */
_Static_assert(BP_GPTQ_ACT_ORDER == 1u, "bp_method_gptq_flags returns BP_GPTQ_ACT_ORDER as 1u");

int bp_apply_tensor(const bp_tensor_info *t, const bp_format *f,
                    bp_quant_method method, const double *h, uint8_t *packed,
                    size_t packed_len, float *deq, bp_error *err)
{
    int64_t rows = bp_tensor_rows(t), cols = bp_tensor_cols(t);
    if (t->ndim != 2)
        return bp_error_set(err, BP_EINVAL, "tensor '%s': only 2-D tensors are quantized", t->name);
    if (!bp_format_supports(f, rows, cols))
        return bp_error_set(err, BP_EINVAL, "tensor '%s': format %s cannot store %lld x %lld",
                            t->name, f->name, (long long)rows, (long long)cols);
    uint64_t need = bp_format_bytes(f, rows, cols);
    if (packed && packed_len != need)
        return bp_error_set(err, BP_EINVAL, "tensor '%s': packed buffer is %zu bytes, %s needs %llu",
                            t->name, packed_len, f->name, (unsigned long long)need);
    if (!bp_table_method_name(method))
        return bp_error_set(err, BP_EINVAL, "tensor '%s': unknown method %d", t->name, (int)method);
    if (bp_method_is_gptq(method) && !h)
        return bp_error_set(err, BP_EINVAL, "tensor '%s': GPTQ needs the input Hessian", t->name);

    int rc = BP_OK;
    size_t n = (size_t)rows * (size_t)cols;
    int64_t groups = bp_format_groups_per_row(f, cols);
    float *w = malloc(n * sizeof *w);
    uint16_t *codes = malloc(n * sizeof *codes);
    bp_qparams *params = malloc((size_t)rows * (size_t)groups * sizeof *params);
    if (!w || !codes || !params) {
        rc = bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory (%zu weights)", t->name, n);
        goto out;
    }
    if ((rc = bp_tensor_rows_f32(t, 0, rows, w, err)) != BP_OK)
        goto out;
    float tparam = 0.0f;
    if (bp_method_is_gptq(method)) {
        rc = bp_gptq_quantize_ex(f, w, rows, cols, h, cols, cols, BP_GPTQ_DAMP_DEFAULT,
                                 bp_method_gptq_flags(method), codes, params, &tparam, NULL, err);
    } else {
        tparam = bp_format_tensor_param(f, bp__absmax(w, n));
        rc = bp_format_quantize_rows(f, w, rows, cols, tparam, codes, params, err);
    }
    if (rc != BP_OK) {
        bp_error_prefix(err, "tensor '%s'", t->name);
        goto out;
    }
    if (deq)
        bp_format_dequantize_rows(f, codes, params, rows, cols, deq);
    if (packed && (rc = bp_format_pack(f, rows, cols, codes, params, tparam, packed, packed_len, err)) != BP_OK)
        bp_error_prefix(err, "tensor '%s'", t->name);
out:
    free(w);
    free(codes);
    free(params);
    return rc;
}

/* The format of every block of a (validated) map, in block order. */
static int block_formats(const bp_tensor_info *t, const bp_plan_blocks *b, int64_t n_blocks,
                         bp_format **out, bp_error *err)
{
    bp_format *parsed = malloc(b->n_formats * sizeof *parsed);
    bp_format *per = malloc((size_t)n_blocks * sizeof *per);
    int rc = BP_OK;
    if (!parsed || !per)
        rc = bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory", t->name);
    for (size_t i = 0; rc == BP_OK && i < b->n_formats; i++)
        rc = bp_format_parse(b->formats[i], &parsed[i], err);
    int64_t k = 0;
    for (size_t r = 0; rc == BP_OK && r < b->n_runs; r++)
        for (uint64_t c = 0; c < b->runs[r].count; c++)
            per[k++] = parsed[b->runs[r].format];
    free(parsed);
    if (rc != BP_OK) {
        free(per);
        per = NULL;
    }
    *out = per;
    return rc;
}

/* Block b of the rows x cols matrix x (element size es) copied out to a
 * contiguous block (dir 0) or back in from one (dir 1). */
static void block_copy(void *x, int64_t cols, bp_block_axis axis, int64_t size, int64_t b,
                       int64_t br, int64_t bc, void *blk, size_t es, int dir)
{
    for (int64_t r = 0; r < br; r++) {
        int64_t row = axis == BP_BLOCK_AXIS_ROWS ? b * size + r : r;
        int64_t c0 = axis == BP_BLOCK_AXIS_ROWS ? 0 : b * size;
        char *t = (char *)x + ((size_t)row * (size_t)cols + (size_t)c0) * es;
        char *k = (char *)blk + (size_t)r * (size_t)bc * es;
        if (dir == 0)
            memcpy(k, t, (size_t)bc * es);
        else
            memcpy(t, k, (size_t)bc * es);
    }
}

/* Cols-axis GPTQ: one mixed-format pass, then each block packed on its
 * own. */
static int apply_cols_gptq(const bp_tensor_info *t, const float *w, int64_t size,
                           const bp_format *per, int64_t nb, const double *h, float amax,
                           uint8_t *packed, float *deq, bp_error *err)
{
    int64_t rows = bp_tensor_rows(t), cols = bp_tensor_cols(t);
    size_t n = (size_t)rows * (size_t)cols, np = 0;
    for (int64_t b = 0; b < nb; b++)
        np += (size_t)rows * (size_t)bp_format_groups_per_row(&per[b], size);
    uint16_t *codes = malloc(n * sizeof *codes);
    uint16_t *bcodes = malloc((size_t)rows * (size_t)size * sizeof *bcodes);
    bp_qparams *params = malloc(np * sizeof *params);
    float *tps = malloc((size_t)nb * sizeof *tps);
    bp_gptq_factor *fac = NULL;
    int rc = BP_OK;
    if (!codes || !bcodes || !params || !tps) {
        rc = bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory", t->name);
        goto out;
    }
    for (int64_t b = 0; b < nb; b++)
        tps[b] = bp_format_tensor_param(&per[b], amax);
    if ((rc = bp_gptq_factor_new(h, cols, cols, BP_GPTQ_DAMP_DEFAULT, &fac, err)) != BP_OK ||
        (rc = bp_gptq_quantize_col_blocks(fac, w, rows, cols, size, per, tps, codes, params, deq,
                                          err)) != BP_OK) {
        bp_error_prefix(err, "tensor '%s'", t->name);
        goto out;
    }
    size_t poff = 0;
    for (int64_t b = 0; packed && b < nb; b++) {
        uint64_t len = bp_format_bytes(&per[b], rows, size);
        block_copy(codes, cols, BP_BLOCK_AXIS_COLS, size, b, rows, size, bcodes, sizeof *codes, 0);
        if ((rc = bp_format_pack(&per[b], rows, size, bcodes, params + poff, tps[b], packed, len,
                                 err)) != BP_OK) {
            bp_error_prefix(err, "tensor '%s', block %lld", t->name, (long long)b);
            goto out;
        }
        packed += len;
        poff += (size_t)rows * (size_t)bp_format_groups_per_row(&per[b], size);
    }
out:
    bp_gptq_factor_destroy(&fac);
    free(codes);
    free(bcodes);
    free(params);
    free(tps);
    return rc;
}

/* RTN on any axis, GPTQ on row blocks: each block quantized as its own
 * matrix, packed at its offset, dequantized into its place. */
static int apply_each_block(const bp_tensor_info *t, float *w, bp_block_axis axis, int64_t size,
                            const bp_format *per, int64_t nb, bp_quant_method method,
                            const double *h, float amax, uint8_t *packed, float *deq,
                            bp_error *err)
{
    int64_t rows = bp_tensor_rows(t), cols = bp_tensor_cols(t), br, bc;
    bp_blocks_shape(axis, size, rows, cols, &br, &bc);
    size_t nblk = (size_t)br * (size_t)bc;
    float *wb = malloc(nblk * sizeof *wb);
    float *qb = malloc(nblk * sizeof *qb);
    uint16_t *codes = malloc(nblk * sizeof *codes);
    bp_qparams *params = malloc(nblk * sizeof *params); /* >= groups */
    bp_gptq_factor *fac = NULL;
    int rc = BP_OK;
    if (!wb || !qb || !codes || !params) {
        rc = bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory", t->name);
        goto out;
    }
    if (bp_method_is_gptq(method) &&
        (rc = bp_gptq_factor_new_ex(h, cols, cols, BP_GPTQ_DAMP_DEFAULT, bp_method_gptq_flags(method), &fac,
                                    err)) != BP_OK) {
        bp_error_prefix(err, "tensor '%s'", t->name);
        goto out;
    }
    for (int64_t b = 0; b < nb; b++) {
        const bp_format *f = &per[b];
        float tp = bp_format_tensor_param(f, amax);
        block_copy(w, cols, axis, size, b, br, bc, wb, sizeof *wb, 0);
        rc = bp_method_is_gptq(method)
                 ? bp_gptq_quantize_rows(f, fac, wb, br, bc, tp, codes, params, NULL, err)
                 : bp_format_quantize_rows(f, wb, br, bc, tp, codes, params, err);
        uint64_t len = bp_format_bytes(f, br, bc);
        if (rc == BP_OK && packed)
            rc = bp_format_pack(f, br, bc, codes, params, tp, packed, len, err);
        if (rc != BP_OK) {
            bp_error_prefix(err, "tensor '%s', block %lld", t->name, (long long)b);
            goto out;
        }
        if (packed)
            packed += len;
        if (deq) {
            bp_format_dequantize_rows(f, codes, params, br, bc, qb);
            block_copy(deq, cols, axis, size, b, br, bc, qb, sizeof *qb, 1);
        }
    }
out:
    bp_gptq_factor_destroy(&fac);
    free(wb);
    free(qb);
    free(codes);
    free(params);
    return rc;
}

int bp_apply_tensor_blocks(const bp_tensor_info *t, const bp_plan_blocks *b,
                           bp_quant_method method, const double *h, uint8_t *packed,
                           size_t packed_len, float *deq, bp_error *err)
{
    if (!t || !b)
        return bp_error_set(err, BP_EINVAL, "apply: NULL tensor or block map");
    if (t->ndim != 2)
        return bp_error_set(err, BP_EINVAL, "tensor '%s': only 2-D tensors are quantized", t->name);
    if (!bp_table_method_name(method))
        return bp_error_set(err, BP_EINVAL, "tensor '%s': unknown method %d", t->name, (int)method);
    if (method == BP_METHOD_GPTQ_ACT && b->axis == BP_BLOCK_AXIS_COLS)
        return bp_error_set(err, BP_EINVAL,
                            "tensor '%s': method gptq_act cannot quantize cols-axis blocks (one GPTQ pass "
                            "crosses them in natural column order); use method gptq or block axis rows",
                            t->name);
    int64_t rows = bp_tensor_rows(t), cols = bp_tensor_cols(t);
    uint64_t need = 0;
    int rc = bp_plan_blocks_validate(b, rows, cols, &need, NULL, err);
    if (rc != BP_OK)
        return bp_error_prefix(err, "tensor '%s'", t->name);
    if (packed && packed_len != need)
        return bp_error_set(err, BP_EINVAL, "tensor '%s': packed buffer is %zu bytes, its blocks need %llu",
                            t->name, packed_len, (unsigned long long)need);
    if (bp_method_is_gptq(method) && !h)
        return bp_error_set(err, BP_EINVAL, "tensor '%s': GPTQ needs the input Hessian", t->name);
    int64_t nb = (b->axis == BP_BLOCK_AXIS_ROWS ? rows : cols) / b->size;
    size_t n = (size_t)rows * (size_t)cols;
    bp_format *per = NULL;
    float *w = malloc(n * sizeof *w);
    if (!w) {
        rc = bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory (%zu weights)", t->name, n);
        goto out;
    }
    if ((rc = block_formats(t, b, nb, &per, err)) != BP_OK ||
        (rc = bp_tensor_rows_f32(t, 0, rows, w, err)) != BP_OK)
        goto out;
    float amax = bp__absmax(w, n);
    if (method == BP_METHOD_GPTQ && b->axis == BP_BLOCK_AXIS_COLS)
        rc = apply_cols_gptq(t, w, b->size, per, nb, h, amax, packed, deq, err);
    else
        rc = apply_each_block(t, w, b->axis, b->size, per, nb, method, h, amax, packed, deq, err);
out:
    free(w);
    free(per);
    return rc;
}

int bp_apply_plan_tensor(const bp_tensor_info *t, const bp_plan_tensor *pt, const double *h,
                         uint8_t *packed, size_t packed_len, float *deq, bp_error *err)
{
    if (pt->blocks)
        return bp_apply_tensor_blocks(t, pt->blocks, pt->method, h, packed, packed_len, deq, err);
    bp_format f;
    int rc = bp_format_parse(pt->format, &f, err);
    if (rc != BP_OK)
        return bp_error_prefix(err, "tensor '%s'", pt->name);
    return bp_apply_tensor(t, &f, pt->method, h, packed, packed_len, deq, err);
}

static int make_dir(const char *path, bp_error *err)
{
    if (mkdir(path, 0777) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            return BP_OK;
        return bp_error_set(err, BP_EIO, "%s exists and is not a directory", path);
    }
    return bp_error_set(err, BP_EIO, "cannot create directory %s: %s", path, strerror(errno));
}

static int write_text_file(const char *path, const char *text, bp_error *err)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return bp_error_set(err, BP_EINVAL, "path too long: %s", path);
    FILE *fp = fopen(tmp, "wb");
    if (!fp)
        return bp_error_set(err, BP_EIO, "cannot write %s: %s", tmp, strerror(errno));
    size_t len = strlen(text);
    int bad = fwrite(text, 1, len, fp) != len;
    bad |= fclose(fp) != 0;
    if (bad || rename(tmp, path) != 0) {
        remove(tmp);
        return bp_error_set(err, BP_EIO, "cannot write %s", path);
    }
    return BP_OK;
}

static bp_dtype out_dtype(bp_dtype src)
{
    return (src == BP_DTYPE_F32 || src == BP_DTYPE_F16 || src == BP_DTYPE_BF16) ? src : BP_DTYPE_F32;
}

/* Convert floats to the output dtype in place-sized chunks and write. */
static int write_floats(bp_st_writer *wr, bp_dtype dt, const float *x, size_t n, bp_error *err)
{
    if (dt == BP_DTYPE_F32)
        return bp_st_writer_write(wr, x, n * sizeof *x, err);
    enum { CHUNK = 1 << 16 };
    uint16_t buf[CHUNK];
    for (size_t i = 0; i < n; i += CHUNK) {
        size_t m = n - i < CHUNK ? n - i : CHUNK;
        for (size_t k = 0; k < m; k++)
            buf[k] = dt == BP_DTYPE_F16 ? bp_f32_to_f16(x[i + k]) : bp_f32_to_bf16(x[i + k]);
        int rc = bp_st_writer_write(wr, buf, m * sizeof *buf, err);
        if (rc)
            return rc;
    }
    return BP_OK;
}

/* The block map in the packed file's metadata, as the plan writes it
 * (docs/plan-format.md), so a reader can unpack without the plan. */
static json_t *blocks_json(const bp_plan_blocks *b)
{
    json_t *o = json_object(), *names = json_array(), *runs = json_array();
    json_object_set_new(o, "axis", json_string(b->axis == BP_BLOCK_AXIS_ROWS ? "rows" : "cols"));
    json_object_set_new(o, "size", json_integer((json_int_t)b->size));
    for (size_t i = 0; i < b->n_formats; i++)
        json_array_append_new(names, json_string(b->formats[i]));
    for (size_t i = 0; i < b->n_runs; i++)
        json_array_append_new(runs, json_pack("[II]", (json_int_t)b->runs[i].format,
                                              (json_int_t)b->runs[i].count));
    json_object_set_new(o, "formats", names);
    json_object_set_new(o, "runs", runs);
    return o;
}

/* Refuse a plan that asks for act-order GPTQ on cols-axis blocks before
 * anything is written (bp_apply_tensor_blocks would stop mid-model). */
static int check_plan_methods(const bp_plan *plan, bp_error *err)
{
    for (size_t i = 0; i < bp_plan_tensor_count(plan); i++) {
        bp_plan_tensor pt;
        bp_plan_tensor_get(plan, i, &pt);
        if (pt.method == BP_METHOD_GPTQ_ACT && pt.blocks && pt.blocks->axis == BP_BLOCK_AXIS_COLS)
            return bp_error_set(err, BP_EINVAL,
                                "plan tensor '%s': method gptq_act cannot quantize cols-axis blocks; use "
                                "method gptq or block axis rows",
                                pt.name);
    }
    return BP_OK;
}

int bp_apply_model(const bp_plan *plan, const bp_model *model,
                   const char *out_dir, const bp_apply_options *opt,
                   bp_error *err)
{
    bp_apply_options defaults = {0, 0, 0, NULL, NULL};
    if (!opt)
        opt = &defaults;
    int rc = BP_OK;
    bp_st_writer *wr = NULL;
    json_t *meta = NULL;
    char *meta_text = NULL, *plan_text = NULL;
    bp_progress *prog = NULL;
    size_t n_model = bp_model_count(model);
    size_t n_plan = bp_plan_tensor_count(plan);
    long *plan_index = calloc(n_model ? n_model : 1, sizeof *plan_index);
    if (!plan_index)
        return bp_error_set(err, BP_ENOMEM, "apply: out of memory");

    bp_plan_info info;
    bp_plan_get_info(plan, &info);
    if (!opt->skip_model_hash && info.model_hash && info.model_hash[0]) {
        char h[BP_HASH_HEX_LEN + 1];
        if ((rc = bp_model_content_hash(model, h, err)) != BP_OK)
            goto out;
        if (strcmp(h, info.model_hash)) {
            rc = bp_error_set(err, BP_EMISMATCH,
                              "the plan was made for a different model (plan model hash %s, %s has %s)",
                              info.model_hash, bp_model_dir(model), h);
            goto out;
        }
    }
    /* Every plan tensor must exist in the model with the plan's shape. */
    for (size_t i = 0; i < n_model; i++)
        plan_index[i] = -1;
    for (size_t i = 0; i < n_plan; i++) {
        bp_plan_tensor pt;
        bp_plan_tensor_get(plan, i, &pt);
        long mi = bp_model_find(model, pt.name);
        if (mi < 0) {
            rc = bp_error_set(err, BP_EMISMATCH, "plan tensor '%s' is not in the model %s", pt.name,
                              bp_model_dir(model));
            goto out;
        }
        const bp_tensor_info *t = bp_model_tensor(model, (size_t)mi);
        if (t->ndim != 2 || t->shape[0] != pt.rows || t->shape[1] != pt.cols) {
            rc = bp_error_set(err, BP_EMISMATCH, "plan tensor '%s' is %lld x %lld in the plan but not in the model",
                              pt.name, (long long)pt.rows, (long long)pt.cols);
            goto out;
        }
        plan_index[mi] = (long)i;
    }

    if ((rc = check_plan_methods(plan, err)) != BP_OK ||
        (rc = bp_evaluate_check_calib(plan, opt->calib, err)) != BP_OK)
        goto out;
    if ((rc = make_dir(out_dir, err)) != BP_OK)
        goto out;
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    if ((rc = write_text_file(path, bp_model_config_text(model), err)) != BP_OK)
        goto out;
    if (!(plan_text = bp_plan_to_string(plan, err))) {
        rc = err ? err->code : BP_ENOMEM;
        goto out;
    }
    snprintf(path, sizeof path, "%s/bitplan_plan.json", out_dir);
    if ((rc = write_text_file(path, plan_text, err)) != BP_OK)
        goto out;

    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    if ((rc = bp_st_writer_new(path, &wr, err)) != BP_OK)
        goto out;
    meta = json_object();
    if (!meta) {
        rc = bp_error_set(err, BP_ENOMEM, "apply: out of memory");
        goto out;
    }
    json_object_set_new(meta, "schema", json_string(opt->dequantized ? "bitplan.dequantized/v1"
                                                                      : "bitplan.packed/v1"));
    json_t *tensors = json_object();
    json_object_set_new(meta, "tensors", tensors);
    /* Declare every tensor first: the header needs all sizes. */
    for (size_t i = 0; i < n_model; i++) {
        const bp_tensor_info *t = bp_model_tensor(model, i);
        if (plan_index[i] < 0 || opt->dequantized) {
            bp_dtype dt = plan_index[i] < 0 ? t->dtype : out_dtype(t->dtype);
            rc = bp_st_writer_declare(wr, t->name, dt, t->ndim, t->shape, err);
        } else {
            bp_plan_tensor pt;
            bp_plan_tensor_get(plan, (size_t)plan_index[i], &pt);
            int64_t len = (int64_t)pt.bytes;
            rc = bp_st_writer_declare(wr, t->name, BP_DTYPE_U8, 1, &len, err);
        }
        if (rc != BP_OK)
            goto out;
        if (plan_index[i] >= 0) {
            bp_plan_tensor pt;
            bp_plan_tensor_get(plan, (size_t)plan_index[i], &pt);
            json_t *e = json_object();
            json_object_set_new(e, "format", json_string(pt.format));
            json_object_set_new(e, "shape", json_pack("[II]", (json_int_t)pt.rows, (json_int_t)pt.cols));
            json_object_set_new(e, "dtype", json_string(bp_dtype_name(t->dtype)));
            json_object_set_new(e, "method", json_string(bp_table_method_name(pt.method)));
            if (pt.blocks)
                json_object_set_new(e, "blocks", blocks_json(pt.blocks));
            json_object_set_new(tensors, t->name, e);
        }
    }
    meta_text = json_dumps(meta, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!meta_text || (rc = bp_st_writer_metadata(wr, "bitplan", meta_text, err)) != BP_OK) {
        if (!meta_text)
            rc = bp_error_set(err, BP_ENOMEM, "apply: out of memory");
        goto out;
    }
    prog = bp_progress_new("apply", n_model, opt->quiet);
    for (size_t i = 0; i < n_model; i++) {
        const bp_tensor_info *t = bp_model_tensor(model, i);
        if (plan_index[i] < 0) {
            rc = bp_st_writer_write(wr, t->data, t->nbytes, err);
        } else {
            bp_plan_tensor pt;
            bp_plan_tensor_get(plan, (size_t)plan_index[i], &pt);
            double *h = NULL;
            if (bp_method_is_gptq(pt.method) &&
                (rc = bp_calib_hessian_full(opt->calib, opt->cfg, pt.name, pt.cols, &h, err)) != BP_OK)
                goto out;
            if (opt->dequantized) {
                float *deq = malloc((size_t)t->numel * sizeof *deq);
                if (!deq) {
                    free(h);
                    rc = bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory", t->name);
                    goto out;
                }
                rc = bp_apply_plan_tensor(t, &pt, h, NULL, 0, deq, err);
                if (rc == BP_OK)
                    rc = write_floats(wr, out_dtype(t->dtype), deq, (size_t)t->numel, err);
                free(deq);
            } else {
                uint8_t *packed = malloc(pt.bytes);
                if (!packed) {
                    free(h);
                    rc = bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory", t->name);
                    goto out;
                }
                rc = bp_apply_plan_tensor(t, &pt, h, packed, pt.bytes, NULL, err);
                if (rc == BP_OK)
                    rc = bp_st_writer_write(wr, packed, pt.bytes, err);
                free(packed);
            }
            free(h);
        }
        if (rc != BP_OK)
            goto out;
        bp_progress_tick(prog, 1);
    }
    if ((rc = bp_st_writer_finish(wr, err)) != BP_OK)
        goto out;
    bp_progress_done(prog);
out:
    bp_progress_destroy(&prog);
    bp_st_writer_destroy(&wr);
    free(meta_text);
    free(plan_text);
    json_decref(meta);
    free(plan_index);
    return rc;
}
