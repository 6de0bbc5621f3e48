/* The built-in task kinds that workers run: measure (one tensor, or a row
 * block of one, over its formats), hessian (one shard of calibration
 * sequences), solve (one allocation problem). Each validates its params
 * completely: they come from the network. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitplan/task.h"
#include "job_internal.h"
#include "tasks_internal.h"

/* ---- params helpers ----------------------------------------------------- */

char *bp__mp_strdup(const msgpack_object *map, const char *key, int required, bp_error *err)
{
    bp_str s;
    int rc = bp_mp_get_str(map, key, &s, err);
    if (rc == BP_ENOTFOUND && !required) {
        bp_error_clear(err);
        return NULL;
    }
    if (rc != BP_OK) {
        if (rc == BP_ENOTFOUND)
            bp_error_set(err, BP_EINVAL, "task params: \"%s\" is required", key);
        return NULL;
    }
    if (s.len > 4096 || memchr(s.ptr, 0, s.len)) {
        bp_error_set(err, BP_EINVAL, "task params: \"%s\" is not a valid string", key);
        return NULL;
    }
    char *out = malloc(s.len + 1);
    if (!out) {
        bp_error_set(err, BP_ENOMEM, "out of memory");
        return NULL;
    }
    memcpy(out, s.ptr, s.len);
    out[s.len] = '\0';
    return out;
}

/* An optional string: absent or nil leaves *out NULL; any other type is an
 * error (params come from the network). */
int bp__mp_opt_strdup(const msgpack_object *map, const char *key, char **out, bp_error *err)
{
    *out = NULL;
    bp_str s;
    int rc = bp_mp_get_str(map, key, &s, err);
    if (rc == BP_ENOTFOUND) {
        bp_error_clear(err);
        return BP_OK;
    }
    if (rc != BP_OK)
        return rc;
    *out = bp__mp_strdup(map, key, 1, err);
    return *out ? BP_OK : (err ? err->code : BP_EINVAL);
}

static int get_i64_default(const msgpack_object *map, const char *key, int64_t def, int64_t lo, int64_t hi,
                           int64_t *out, bp_error *err)
{
    int rc = bp_mp_get_i64(map, key, out, err);
    if (rc == BP_ENOTFOUND) {
        *out = def;
        bp_error_clear(err);
        return BP_OK;
    }
    if (rc != BP_OK)
        return rc;
    if (*out < lo || *out > hi)
        return bp_error_set(err, BP_EINVAL, "task params: \"%s\" = %lld is out of range", key, (long long)*out);
    return BP_OK;
}

static int get_bool_default(const msgpack_object *map, const char *key, int *out, bp_error *err)
{
    bool b = false;
    int rc = bp_mp_get_bool(map, key, &b, err);
    if (rc == BP_ENOTFOUND) {
        bp_error_clear(err);
        *out = 0;
        return BP_OK;
    }
    *out = b;
    return rc;
}

void bp__pack_str(msgpack_packer *pk, const char *key, const char *value)
{
    msgpack_pack_str(pk, strlen(key));
    msgpack_pack_str_body(pk, key, strlen(key));
    if (!value) {
        msgpack_pack_nil(pk);
        return;
    }
    msgpack_pack_str(pk, strlen(value));
    msgpack_pack_str_body(pk, value, strlen(value));
}

void bp__pack_key(msgpack_packer *pk, const char *key)
{
    msgpack_pack_str(pk, strlen(key));
    msgpack_pack_str_body(pk, key, strlen(key));
}

/* ---- per-process caches -------------------------------------------------
 * A worker runs one task at a time on its compute thread, and consecutive
 * tasks of a job use the same model and calibration, so keeping the last
 * one open saves reopening (and, for KL, recomputing the reference). */

static struct {
    char *dir;
    bp_model *model;
    bp_llama *llama;
} g_model;

static struct {
    char *key;
    bp_calib *calib;
    bp_eval_reference *ref;
} g_calib;

static struct {
    char *path;
    bp_imatrix *im;
} g_imatrix;

static void drop_calib(void)
{
    bp_eval_reference_destroy(&g_calib.ref);
    bp_calib_destroy(&g_calib.calib);
    free(g_calib.key);
    g_calib.key = NULL;
}

void bp__tasks_drop_caches(void)
{
    drop_calib();
    bp_llama_destroy(&g_model.llama);
    bp_model_destroy(&g_model.model);
    free(g_model.dir);
    g_model.dir = NULL;
    bp_imatrix_destroy(&g_imatrix.im);
    free(g_imatrix.path);
    g_imatrix.path = NULL;
}

static int cached_model(const char *dir, bp_model **m, bp_error *err)
{
    if (g_model.dir && !strcmp(g_model.dir, dir)) {
        *m = g_model.model;
        return BP_OK;
    }
    bp__tasks_drop_caches();
    int rc = bp_model_open(dir, &g_model.model, err);
    if (rc != BP_OK)
        return rc;
    g_model.dir = strdup(dir);
    if (!g_model.dir) {
        bp_model_destroy(&g_model.model);
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    }
    *m = g_model.model;
    return BP_OK;
}

static int cached_llama(bp_llama **l, bp_error *err)
{
    if (!g_model.llama) {
        int rc = bp_llama_new(g_model.model, &g_model.llama, err);
        if (rc != BP_OK)
            return rc;
    }
    *l = g_model.llama;
    return BP_OK;
}

/* ---- measure -------------------------------------------------------------- */

/* The rows a measure task covers ("row0", "rows"; absent: the whole
 * tensor) and the whole tensor's max |w| for nvfp4 ("absmax"; absent: read
 * from the tensor). The range itself is checked by bp__job_measure_rows. */
static int measure_range(const msgpack_object *p, const bp_selected_tensor *st, int64_t *row0, int64_t *nrows,
                         float *absmax, bp_error *err)
{
    int rc;
    if ((rc = get_i64_default(p, "row0", 0, 0, st->rows - 1, row0, err)) != BP_OK ||
        (rc = get_i64_default(p, "rows", st->rows - *row0, 1, st->rows - *row0, nrows, err)) != BP_OK)
        return rc;
    double a = -1.0;
    rc = bp_mp_get_f64(p, "absmax", &a, err);
    if (rc == BP_ENOTFOUND) {
        bp_error_clear(err);
        *absmax = -1.0f;
        return BP_OK;
    }
    if (rc != BP_OK)
        return rc;
    if (!(a >= 0.0 && a <= FLT_MAX) || (double)(float)a != a)
        return bp_error_set(err, BP_EINVAL, "task params: \"absmax\" must be a float >= 0");
    *absmax = (float)a;
    return BP_OK;
}

/* The result of a measure task: its row range, the formats and metrics it
 * holds, and the partial sums as binary arrays (bp_measure_part). */
static int pack_measure_part(bp_task_ctx *ctx, const bp_measure_part *part, bp_error *err)
{
    int64_t nc = bp__measure_part_chunks(part->nrows);
    msgpack_pack_map(ctx->result, 4);
    bp__pack_key(ctx->result, "row0");
    msgpack_pack_int64(ctx->result, part->row0);
    bp__pack_key(ctx->result, "rows");
    msgpack_pack_int64(ctx->result, part->nrows);
    bp__pack_key(ctx->result, "formats");
    msgpack_pack_uint64(ctx->result, part->nfmt);
    bp__pack_key(ctx->result, "metrics");
    msgpack_pack_uint64(ctx->result, part->metrics);
    int rc = bp_task_add_bin(ctx, "chunks", BP_WIRE_F64, part->chunk, part->nfmt * 2 * (uint64_t)nc, err);
    if (rc == BP_OK && part->row_hfull)
        rc = bp_task_add_bin(ctx, "hfull", BP_WIRE_F64, part->row_hfull, part->nfmt * (uint64_t)part->nrows, err);
    if (rc == BP_OK && part->dkl)
        rc = bp_task_add_bin(ctx, "dkl", BP_WIRE_F64, part->dkl, part->nfmt, err);
    return rc;
}

static int task_measure(bp_task_ctx *ctx, bp_error *err)
{
    const msgpack_object *p = ctx->params;
    int rc = BP_OK;
    char *model_dir = NULL, *model_hash = NULL, *tensor = NULL, *method_s = NULL, *stats = NULL;
    char *calib_id = NULL, *imatrix = NULL, *text = NULL, *tokens = NULL;
    bp_selected_tensor st;
    memset(&st, 0, sizeof st);
    bp_measure_part part;
    memset(&part, 0, sizeof part);
    int64_t row0 = 0, nrows = 0;
    float absmax = -1.0f;
    int want_dkl = 0, diag_only = 0;
    int64_t ctx_len = 0, n_seq = 0, klw = 0;

    if (!(model_dir = bp__mp_strdup(p, "model", 1, err)) || !(tensor = bp__mp_strdup(p, "tensor", 1, err)) ||
        !(method_s = bp__mp_strdup(p, "method", 1, err))) {
        rc = err ? err->code : BP_EINVAL;
        goto out;
    }
    if (bp__mp_opt_strdup(p, "model_hash", &model_hash, err) || bp__mp_opt_strdup(p, "stats", &stats, err) ||
        bp__mp_opt_strdup(p, "calib_id", &calib_id, err) || bp__mp_opt_strdup(p, "imatrix", &imatrix, err) ||
        bp__mp_opt_strdup(p, "text", &text, err) || bp__mp_opt_strdup(p, "tokens", &tokens, err)) {
        rc = err ? err->code : BP_EINVAL;
        goto out;
    }
    if ((rc = get_bool_default(p, "want_dkl", &want_dkl, err)) ||
        (rc = get_bool_default(p, "diag_only", &diag_only, err)) ||
        (rc = get_i64_default(p, "ctx", 0, 0, 1 << 24, &ctx_len, err)) ||
        (rc = get_i64_default(p, "seqs", 0, 0, 1L << 30, &n_seq, err)) ||
        (rc = get_i64_default(p, "kl_windows", 0, 0, 1L << 30, &klw, err)))
        goto out;
    int method = bp_table_method_from_name(method_s);
    if (method < 0) {
        rc = bp_error_set(err, BP_EINVAL, "task params: unknown method '%s' (rtn, gptq or gptq_act)", method_s);
        goto out;
    }
    const msgpack_object *fmts = NULL;
    size_t nf = 0;
    if ((rc = bp_mp_get_array(p, "formats", &fmts, &nf, err)) != BP_OK)
        goto out;
    if (nf == 0 || nf > 256) {
        rc = bp_error_set(err, BP_EINVAL, "task params: \"formats\" must list 1..256 formats");
        goto out;
    }
    bp_model *model = NULL;
    if ((rc = cached_model(model_dir, &model, err)) != BP_OK)
        goto out;
    long ti_index = bp_model_find(model, tensor);
    if (ti_index < 0) {
        rc = bp_error_set(err, BP_ENOTFOUND, "%s: no tensor '%s'", model_dir, tensor);
        goto out;
    }
    const bp_tensor_info *ti = bp_model_tensor(model, (size_t)ti_index);
    if (ti->ndim != 2) {
        rc = bp_error_set(err, BP_EINVAL, "tensor '%s' is not 2-D", tensor);
        goto out;
    }
    st.name = tensor;
    st.source_index = (size_t)ti_index;
    st.dtype = ti->dtype;
    st.rows = ti->shape[0];
    st.cols = ti->shape[1];
    st.params = (uint64_t)st.rows * (uint64_t)st.cols;
    st.formats = calloc(nf, sizeof *st.formats);
    if (!st.formats) {
        rc = bp_error_set(err, BP_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nf; i++) {
        char name[BP_FORMAT_NAME_MAX];
        if (fmts[i].type != MSGPACK_OBJECT_STR || fmts[i].via.str.size >= sizeof name) {
            rc = bp_error_set(err, BP_EINVAL, "task params: formats[%zu] is not a format name", i);
            goto out;
        }
        memcpy(name, fmts[i].via.str.ptr, fmts[i].via.str.size);
        name[fmts[i].via.str.size] = '\0';
        if ((rc = bp_format_parse(name, &st.formats[i], err)) != BP_OK)
            goto out;
        if (!bp_format_supports(&st.formats[i], st.rows, st.cols)) {
            rc = bp_error_set(err, BP_EINVAL, "tensor '%s': format %s cannot store its shape", tensor, name);
            goto out;
        }
    }
    st.n_formats = nf;

    bp_measure_env env;
    memset(&env, 0, sizeof env);
    env.method = (bp_quant_method)method;
    env.want_dkl = want_dkl;
    env.progress = ctx->progress;
    if (imatrix) {
        if (!g_imatrix.path || strcmp(g_imatrix.path, imatrix)) {
            bp_imatrix_destroy(&g_imatrix.im);
            free(g_imatrix.path);
            g_imatrix.path = NULL;
            if ((rc = bp_imatrix_load(imatrix, &g_imatrix.im, err)) != BP_OK)
                goto out;
            g_imatrix.path = strdup(imatrix);
        }
        env.imatrix = g_imatrix.im;
    }
    if (stats) {
        bp_llama *llama = NULL;
        if ((rc = cached_llama(&llama, err)) != BP_OK)
            goto out;
        char key[8192];
        snprintf(key, sizeof key, "%s|%s|%s|%lld|%lld|%lld|%d", stats, text ? text : "", tokens ? tokens : "",
                 (long long)ctx_len, (long long)n_seq, (long long)klw, want_dkl);
        if (!g_calib.key || strcmp(g_calib.key, key)) {
            drop_calib();
            bp_calib_spec cs;
            bp_calib_spec_default(&cs);
            cs.stats_path = stats;
            cs.text_path = want_dkl ? text : NULL;
            cs.tokens_path = want_dkl ? tokens : NULL;
            cs.ctx = ctx_len;
            cs.kl_windows = klw;
            cs.quiet = 1;
            if ((rc = bp_calib_open(&cs, llama, model_hash && model_hash[0] ? model_hash : NULL, want_dkl,
                                    &g_calib.calib, err)) != BP_OK)
                goto out;
            if (want_dkl) {
                const bp_tokens *kt = bp_calib_kl_tokens(g_calib.calib);
                int64_t c = bp_calib_ctx(g_calib.calib);
                if ((rc = bp_eval_reference_new(llama, bp_tokens_data(kt), bp_tokens_count(kt), c, 0,
                                                bp_eval_n_windows(bp_tokens_count(kt), c), 0, &g_calib.ref,
                                                err)) != BP_OK)
                    goto out;
            }
            g_calib.key = strdup(key);
        }
        if (calib_id && strcmp(calib_id, bp_calib_id(g_calib.calib))) {
            rc = bp_error_set(err, BP_EMISMATCH, "%s: calibration id %s, the job expects %s", stats,
                              bp_calib_id(g_calib.calib), calib_id);
            goto out;
        }
        env.cfg = bp_llama_get_config(llama);
        env.llama = llama;
        env.calib = g_calib.calib;
        env.ref = g_calib.ref;
    } else if (want_dkl || bp_method_is_gptq((bp_quant_method)method)) {
        rc = bp_error_set(err, BP_EINVAL, "task params: this measurement needs \"stats\"");
        goto out;
    }
    (void)diag_only;

    if ((rc = measure_range(p, &st, &row0, &nrows, &absmax, err)) == BP_OK &&
        (rc = bp__job_measure_rows(ti, &st, &env, row0, nrows, absmax, &part, err)) == BP_OK)
        rc = pack_measure_part(ctx, &part, err);
out:
    bp__measure_part_free(&part);
    free(st.formats);
    free(model_dir);
    free(model_hash);
    free(tensor);
    free(method_s);
    free(stats);
    free(calib_id);
    free(imatrix);
    free(text);
    free(tokens);
    return rc;
}

/* ---- hessian ---------------------------------------------------------------- */

static int read_file(const char *path, uint8_t **data, size_t *len, bp_error *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return bp_error_set(err, BP_EIO, "cannot read %s: %s", path, strerror(errno));
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    *data = malloc(n > 0 ? (size_t)n : 1);
    if (!*data || n < 0 || fread(*data, 1, (size_t)n, fp) != (size_t)n) {
        fclose(fp);
        free(*data);
        *data = NULL;
        return bp_error_set(err, BP_EIO, "cannot read %s", path);
    }
    fclose(fp);
    *len = (size_t)n;
    return BP_OK;
}

static int task_hessian(bp_task_ctx *ctx, bp_error *err)
{
    const msgpack_object *p = ctx->params;
    int rc = BP_OK;
    char *model_dir = NULL, *model_hash = NULL, *text = NULL, *tokens_path = NULL;
    bp_tokens *tokens = NULL;
    bp_hessian *h = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    char tmp[4200] = "";
    int64_t ctx_len, first, n;
    int diag_only = 0;
    if (!(model_dir = bp__mp_strdup(p, "model", 1, err))) {
        rc = err ? err->code : BP_EINVAL;
        goto out;
    }
    if (bp__mp_opt_strdup(p, "model_hash", &model_hash, err) || bp__mp_opt_strdup(p, "text", &text, err) ||
        bp__mp_opt_strdup(p, "tokens", &tokens_path, err)) {
        rc = err ? err->code : BP_EINVAL;
        goto out;
    }
    if ((rc = get_i64_default(p, "ctx", -1, 1, 1 << 24, &ctx_len, err)) ||
        (rc = get_i64_default(p, "seq_first", -1, 0, 1L << 40, &first, err)) ||
        (rc = get_i64_default(p, "n_seq", -1, 1, 1L << 30, &n, err)) ||
        (rc = get_bool_default(p, "diag_only", &diag_only, err)))
        goto out;
    if (ctx_len < 1 || first < 0 || n < 1 || (!text == !tokens_path)) {
        rc = bp_error_set(err, BP_EINVAL, "task params: hessian needs model, ctx, seq_first, n_seq and text or tokens");
        goto out;
    }
    bp_model *model = NULL;
    bp_llama *llama = NULL;
    if ((rc = cached_model(model_dir, &model, err)) || (rc = cached_llama(&llama, err)))
        goto out;
    const bp_llama_config *cfg = bp_llama_get_config(llama);
    if ((rc = bp_calib_load_tokens(text, tokens_path, cfg->vocab_size, &tokens, err)) != BP_OK)
        goto out;
    bp_hessian_options o;
    bp_hessian_options_default(&o);
    o.mode = diag_only ? BP_HESSIAN_DIAG : BP_HESSIAN_FULL;
    o.ctx = ctx_len;
    o.model_hash = model_hash && model_hash[0] ? model_hash : NULL;
    if ((rc = bp_hessian_new(cfg, &o, &h, err)) != BP_OK)
        goto out;
    for (int64_t s = first; s < first + n; s++) {
        if ((rc = bp_hessian_accumulate(h, llama, tokens, s, 1, err)) != BP_OK)
            goto out;
        atomic_fetch_add(ctx->progress, 1);
    }
    const char *tmpdir = getenv("TMPDIR");
    snprintf(tmp, sizeof tmp, "%s/bitplan-hessian-%ld-%lld.st", tmpdir && *tmpdir ? tmpdir : "/tmp",
             (long)getpid(), (long long)first);
    if ((rc = bp_hessian_save(h, tmp, 0, err)) != BP_OK)
        goto out;
    if ((rc = read_file(tmp, &data, &len, err)) != BP_OK)
        goto out;
    msgpack_pack_map(ctx->result, 1);
    bp__pack_key(ctx->result, "bytes");
    msgpack_pack_uint64(ctx->result, len);
    rc = bp_task_add_bin(ctx, "stats", BP_WIRE_U8, data, len, err);
out:
    if (tmp[0])
        unlink(tmp);
    free(data);
    bp_hessian_destroy(&h);
    bp_tokens_destroy(&tokens);
    free(model_dir);
    free(model_hash);
    free(text);
    free(tokens_path);
    return rc;
}

/* ---- solve --------------------------------------------------------------------- */

/* One constraint of the solve params: {name, capacity, unit, scale,
 * offset}, every field checked (it comes from the network). */
static int read_constraint(const msgpack_object *c, size_t j, bp_problem *prob, bp__constraint_meta *m,
                           bp_error *err)
{
    bp_str name, unit;
    double cap = 0;
    if (c->type != MSGPACK_OBJECT_MAP || bp_mp_get_str(c, "name", &name, err) ||
        bp_mp_get_str(c, "unit", &unit, err) || bp_mp_get_f64(c, "capacity", &cap, err) ||
        bp_mp_get_f64(c, "scale", &m->scale, err) || bp_mp_get_f64(c, "offset", &m->offset, err))
        return bp_error_set(err, BP_EINVAL, "solve task: constraints[%zu] needs name, capacity, unit, scale, offset",
                            j);
    if (name.len == 0 || name.len >= BP_CONSTRAINT_NAME_MAX || memchr(name.ptr, 0, name.len) ||
        unit.len == 0 || unit.len >= sizeof m->unit || memchr(unit.ptr, 0, unit.len))
        return bp_error_set(err, BP_EINVAL, "solve task: constraints[%zu]: bad name or unit", j);
    if (!(m->scale > 0) || !isfinite(m->scale) || !(m->offset >= 0) || !isfinite(m->offset) ||
        fabs(cap) > 1e100)
        return bp_error_set(err, BP_EINVAL, "solve task: constraints[%zu]: bad capacity, scale or offset", j);
    char cname[BP_CONSTRAINT_NAME_MAX];
    memcpy(cname, name.ptr, name.len);
    cname[name.len] = '\0';
    memcpy(m->unit, unit.ptr, unit.len);
    m->unit[unit.len] = '\0';
    return bp_problem_set_constraint(prob, j, cname, cap, err);
}

static const bp_bin_view *solve_bin(const bp_task_ctx *ctx, const char *name)
{
    for (size_t i = 0; i < ctx->n_bins; i++)
        if (ctx->bins[i].name.len == strlen(name) && !memcmp(ctx->bins[i].name.ptr, name, strlen(name)))
            return &ctx->bins[i];
    return NULL;
}

static int task_solve(bp_task_ctx *ctx, bp_error *err)
{
    const msgpack_object *p = ctx->params;
    int rc = BP_OK;
    bp_problem *prob = NULL;
    bp_solution sol;
    memset(&sol, 0, sizeof sol);
    int64_t *start = NULL, *choice = NULL;
    double *errv = NULL, *cost = NULL;
    char *solver = bp__mp_strdup(p, "solver", 1, err);
    double tlim = 0;
    int64_t n_items = 0;
    bp__constraint_meta meta[BP_MAX_CONSTRAINTS];
    memset(meta, 0, sizeof meta);
    if (!solver) {
        rc = err ? err->code : BP_EINVAL;
        goto out;
    }
    int kind = bp__solver_kind_from_name(solver);
    if (kind < 0) {
        rc = bp_error_set(err, BP_EINVAL, "solve task: unknown solver '%s' (ilp, dp, lagrange, nsga2)", solver);
        goto out;
    }
    if ((rc = get_i64_default(p, "items", -1, 1, 100000000, &n_items, err)))
        goto out;
    if (n_items < 1) {
        rc = bp_error_set(err, BP_EINVAL, "solve task: \"items\" is required");
        goto out;
    }
    if (bp_mp_get_f64(p, "time_limit_s", &tlim, err) != BP_OK || !(tlim > 0) || tlim > 1e6) {
        bp_error_clear(err);
        tlim = 0;
    }
    const msgpack_object *cons = NULL;
    size_t m = 0;
    if (bp_mp_get_array(p, "constraints", &cons, &m, err) != BP_OK || m < 1 || m > BP_MAX_CONSTRAINTS) {
        rc = bp_error_set(err, BP_EINVAL, "solve task: \"constraints\" must list 1..%d constraints",
                          BP_MAX_CONSTRAINTS);
        goto out;
    }
    const bp_bin_view *bs = solve_bin(ctx, "start"), *be = solve_bin(ctx, "error"), *bc = solve_bin(ctx, "cost");
    if (!bs || !be || !bc || bs->count != (uint64_t)n_items + 1 || be->count > 500000000ULL ||
        bc->count != be->count * m) {
        rc = bp_error_set(err, BP_EINVAL,
                          "solve task: needs binary inputs start[items+1], error[n], cost[n * constraints]");
        goto out;
    }
    int64_t n_choices = (int64_t)be->count;
    start = malloc(bs->size);
    errv = malloc(be->size ? be->size : 1);
    cost = malloc(bc->size ? bc->size : 1);
    if (!start || !errv || !cost) {
        rc = bp_error_set(err, BP_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = bp_proto_bin_copy(bs, BP_WIRE_I64, start, bs->size, err)) ||
        (rc = bp_proto_bin_copy(be, BP_WIRE_F64, errv, be->size, err)) ||
        (rc = bp_proto_bin_copy(bc, BP_WIRE_F64, cost, bc->size, err)))
        goto out;
    if (start[0] != 0 || start[n_items] != n_choices) {
        rc = bp_error_set(err, BP_EINVAL, "solve task: inconsistent item starts");
        goto out;
    }
    if (!(prob = bp_problem_new(m))) {
        rc = bp_error_set(err, BP_ENOMEM, "out of memory");
        goto out;
    }
    for (int64_t i = 0; i < n_items; i++) {
        char name[32];
        snprintf(name, sizeof name, "item%lld", (long long)i);
        if (start[i + 1] <= start[i] || start[i + 1] > n_choices) {
            rc = bp_error_set(err, BP_EINVAL, "solve task: item %lld has a bad choice range", (long long)i);
            goto out;
        }
        if ((rc = bp_problem_add_item(prob, name, err)) != BP_OK)
            goto out;
        for (int64_t k = start[i]; k < start[i + 1]; k++)
            if ((rc = bp_problem_add_choice(prob, (int32_t)(k - start[i]), errv[k], &cost[(size_t)k * m], err)) !=
                BP_OK)
                goto out;
    }
    for (size_t j = 0; j < m; j++)
        if ((rc = read_constraint(&cons[j], j, prob, &meta[j], err)) != BP_OK)
            goto out;
    if ((rc = bp_problem_validate(prob, err)) != BP_OK)
        goto out;
    bp__solve_opts so = {(bp__solver_kind)kind, tlim, NULL};
    if ((rc = bp__job_solve(&so, prob, meta, &sol, err)) != BP_OK)
        goto out;
    choice = malloc((size_t)n_items * sizeof *choice);
    if (!choice) {
        rc = bp_error_set(err, BP_ENOMEM, "out of memory");
        goto out;
    }
    for (int64_t i = 0; i < n_items; i++)
        choice[i] = sol.choice[i];
    msgpack_pack_map(ctx->result, 7);
    bp__pack_str(ctx->result, "solver", sol.solver);
    bp__pack_key(ctx->result, "nodes");
    msgpack_pack_int64(ctx->result, sol.nodes);
    bp__pack_key(ctx->result, "time_limited");
    if (sol.time_limited)
        msgpack_pack_true(ctx->result);
    else
        msgpack_pack_false(ctx->result);
    bp__pack_str(ctx->result, "status", bp_solve_status_name(sol.status));
    bp__pack_key(ctx->result, "objective");
    msgpack_pack_double(ctx->result, sol.objective);
    bp__pack_key(ctx->result, "bound");
    if (isfinite(sol.bound))
        msgpack_pack_double(ctx->result, sol.bound);
    else
        msgpack_pack_nil(ctx->result);
    bp__pack_key(ctx->result, "gap");
    if (isfinite(sol.gap))
        msgpack_pack_double(ctx->result, sol.gap);
    else
        msgpack_pack_nil(ctx->result);
    rc = bp_task_add_bin(ctx, "choice", BP_WIRE_I64, choice, (uint64_t)n_items, err);
out:
    bp_solution_free(&sol);
    bp_problem_destroy(&prob);
    free(start);
    free(errv);
    free(cost);
    free(choice);
    free(solver);
    return rc;
}

void bp__tasks_register_builtin(void)
{
    bp_task_register("measure", task_measure);
    bp_task_register("hessian", task_hessian);
    bp_task_register("solve", task_solve);
    bp__tasks_register_eval();
    bp__tasks_register_blocks();
}
