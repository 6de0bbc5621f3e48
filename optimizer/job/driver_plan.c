/* The "plan" job driver: the same planning job as bp_job_run, cut into
 * tasks the coordinator can spread over workers:
 *   1. hessian  one task per shard of calibration sequences (when the job
 *               needs Hessians and no stats file exists yet); the partial
 *               sums merge exactly, in any order;
 *   2. measure  one task per selected tensor, or per row block of a tensor
 *               above the split threshold (merged exactly, in row order);
 *   3. solve    one task (GLPK runs in a worker, so a solver crash is a
 *               worker crash the coordinator retries and quarantines);
 *   4. evaluate with the real-loss search (driver_search.c), one task per
 *               candidate plan of each generation: the ILP and uniform
 *               baselines, then the search's offspring.
 * Every task's params are built deterministically from the spec, so the
 * same job always asks for the same tasks with the same hashes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitplan/blocks.h"
#include "bitplan/job_spec.h"
#include "bitplan/sweep.h"
#include "bitplan/task.h"
#include "driver_search.h"
#include "measure_kv.h"
#include "job_internal.h"
#include "tasks_internal.h"

#define HESSIAN_SHARD_SEQS 8
#define HESSIAN_SHARDS 8

enum stage { ST_HESSIAN, ST_MEASURE, ST_SOLVE, ST_SEARCH, ST_DONE };

typedef struct owned_task {
    bp_task_req req;
    msgpack_sbuffer params;
    bp_bin_view bins[3];
    void *bin_data[3];
    int done;
} owned_task;

typedef struct plan_driver {
    bp_job_spec_doc *doc;
    const bp_job_spec *spec;
    bp_model *model;
    bp_rules *rules;
    bp_selection *sel;
    char model_hash[BP_HASH_HEX_LEN + 1];
    char imatrix_hash[BP_HASH_HEX_LEN + 1];
    int metric;
    bp_quant_method method;
    int need_hessian;          /* Hessians must be computed by tasks */
    char stats_path[4200];     /* stats file the measure tasks read */
    char calib_id[BP_HASH_HEX_LEN + 1];
    char calib_source[600];
    char tokens_hash[BP_HASH_HEX_LEN + 1];
    int64_t ctx, n_seq;
    int reuse_table;
    enum stage stage;
    owned_task **tasks;        /* all tasks ever created, by index; each
                                  allocated alone so requests stay valid */
    size_t n_tasks, cap_tasks;
    size_t stage_first;        /* first task index of the current stage */
    size_t handed;             /* tasks handed out by next() */
    bp_task_req *out_reqs;     /* scratch for next() */
    bp_hessian *hess;          /* merged partial Hessians */
    bp_table *table;
    bp__job_problem *prob;
    bp_solution ilp;           /* the solve stage's result */
    bp__search_driver *search; /* the real-loss search, when wanted */
    int64_t n_tokens;          /* calibration tokens, counted once; 0 = not yet */
    double *search_kl;         /* measured loss per task of the batch */
    char *result_json;
    uint64_t done_count;
} plan_driver;

static void task_free(owned_task *t)
{
    msgpack_sbuffer_destroy(&t->params);
    for (int i = 0; i < 3; i++)
        free(t->bin_data[i]);
}

static void driver_destroy(void *state)
{
    plan_driver *d = state;
    if (!d)
        return;
    for (size_t i = 0; i < d->n_tasks; i++) {
        task_free(d->tasks[i]);
        free(d->tasks[i]);
    }
    free(d->tasks);
    free(d->out_reqs);
    bp_hessian_destroy(&d->hess);
    bp_table_destroy(&d->table);
    bp__search_driver_destroy(&d->search);
    free(d->search_kl);
    bp_solution_free(&d->ilp);
    bp__job_problem_destroy(&d->prob);
    bp_selection_destroy(&d->sel);
    bp_rules_destroy(&d->rules);
    bp_model_destroy(&d->model);
    bp_job_spec_doc_destroy(&d->doc);
    free(d->result_json);
    free(d);
}

static owned_task *new_task(plan_driver *d, const char *kind, bp_error *err)
{
    if (d->n_tasks == d->cap_tasks) {
        size_t cap = d->cap_tasks ? 2 * d->cap_tasks : 64;
        owned_task **t = realloc(d->tasks, cap * sizeof *t);
        if (!t) {
            bp_error_set(err, BP_ENOMEM, "out of memory");
            return NULL;
        }
        d->tasks = t;
        d->cap_tasks = cap;
    }
    owned_task *t = calloc(1, sizeof *t);
    if (!t) {
        bp_error_set(err, BP_ENOMEM, "out of memory");
        return NULL;
    }
    d->tasks[d->n_tasks] = t;
    t->req.index = d->n_tasks++;
    snprintf(t->req.kind, sizeof t->req.kind, "%s", kind);
    msgpack_sbuffer_init(&t->params);
    return t;
}

/* The cache key: the kind, the params bytes and every binary input. The
 * params carry the model's content hash and the calibration id, so a
 * changed model or calibration never hits a stale result. */
static void seal_task(owned_task *t, uint64_t cost)
{
    t->req.params_mp = t->params.data;
    t->req.params_len = t->params.size;
    t->req.bins = t->req.n_bins ? t->bins : NULL;
    t->req.cost = cost;
    bp_hash h;
    bp_hash_init(&h);
    bp_hash_update_str(&h, "bitplan.task/v1");
    bp_hash_update_str(&h, t->req.kind);
    bp_hash_update_u64(&h, t->params.size);
    bp_hash_update(&h, t->params.data, t->params.size);
    for (size_t i = 0; i < t->req.n_bins; i++) {
        bp_hash_update(&h, t->bins[i].name.ptr, t->bins[i].name.len);
        bp_hash_update_u64(&h, t->bins[i].size);
        bp_hash_update(&h, t->bins[i].data, t->bins[i].size);
    }
    bp_hash_final_hex(&h, t->req.hash);
}

static int file_hash(const char *path, char *out, bp_error *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return bp_error_set(err, BP_ENOTFOUND, "cannot open %s", path);
    bp_hash h;
    bp_hash_init(&h);
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, fp)) > 0)
        bp_hash_update(&h, buf, n);
    fclose(fp);
    bp_hash_final_hex(&h, out);
    return BP_OK;
}

static void pack_calib_fields(plan_driver *d, msgpack_packer *pk)
{
    const bp_calib_spec *c = &d->spec->calib;
    bp__pack_str(pk, "text", c->text_path);
    bp__pack_str(pk, "tokens", c->tokens_path);
    bp__pack_key(pk, "ctx");
    msgpack_pack_int64(pk, d->ctx);
}

static int make_hessian_tasks(plan_driver *d, bp_error *err)
{
    d->stage_first = d->n_tasks;
    /* About HESSIAN_SHARDS shards, at least HESSIAN_SHARD_SEQS sequences
     * each: few enough that merging partial Hessians at the coordinator
     * stays cheap, enough to keep several workers busy. The split depends
     * only on the spec, and merges are exact, so the Hessians (and the
     * plan) are the same however many workers run. */
    int64_t per = (d->n_seq + HESSIAN_SHARDS - 1) / HESSIAN_SHARDS;
    if (per < HESSIAN_SHARD_SEQS)
        per = HESSIAN_SHARD_SEQS;
    for (int64_t s = 0; s < d->n_seq; s += per) {
        int64_t n = d->n_seq - s < per ? d->n_seq - s : per;
        owned_task *t = new_task(d, "hessian", err);
        if (!t)
            return err->code;
        msgpack_packer pk;
        msgpack_packer_init(&pk, &t->params, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 9);
        bp__pack_str(&pk, "model", d->spec->model_dir);
        bp__pack_str(&pk, "model_hash", d->model_hash);
        bp__pack_str(&pk, "tokens_hash", d->tokens_hash);
        pack_calib_fields(d, &pk);
        bp__pack_key(&pk, "seq_first");
        msgpack_pack_int64(&pk, s);
        bp__pack_key(&pk, "n_seq");
        msgpack_pack_int64(&pk, n);
        bp__pack_key(&pk, "diag_only");
        if (d->spec->calib.diag_only)
            msgpack_pack_true(&pk);
        else
            msgpack_pack_false(&pk);
        seal_task(t, (uint64_t)n);
    }
    d->stage = ST_HESSIAN;
    return BP_OK;
}

/* Rows per measure task of selected tensor i (>= its rows: one task). */
static int64_t measure_block_rows(const plan_driver *d, size_t i)
{
    return bp__job_split_rows(d->spec, &d->sel->tensors[i], d->metric == BP_METRIC_DKL);
}

/* The tensor and rows of measure task `index`: tasks are made tensor by
 * tensor in selection order, row blocks in row order. */
static int measure_task_range(const plan_driver *d, uint64_t index, size_t *tensor, int64_t *row0,
                              int64_t *nrows)
{
    uint64_t k = index - d->stage_first;
    for (size_t i = 0; i < d->sel->n; i++) {
        int64_t rows = d->sel->tensors[i].rows, block = measure_block_rows(d, i);
        uint64_t nb = (uint64_t)((rows + block - 1) / block);
        if (k < nb) {
            *tensor = i;
            *row0 = (int64_t)k * block;
            *nrows = rows - *row0 < block ? rows - *row0 : block;
            return BP_OK;
        }
        k -= nb;
    }
    return BP_EPROTO;
}

static int make_measure_task(plan_driver *d, const bp_selected_tensor *st, int64_t row0, int64_t nrows,
                             double absmax, bp_error *err)
{
    int want_dkl = d->metric == BP_METRIC_DKL;
    int have_stats = d->stats_path[0] != 0;
    owned_task *t = new_task(d, "measure", err);
    if (!t)
        return err->code;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &t->params, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, absmax >= 0.0 ? 18 : 17);
    bp__pack_str(&pk, "model", d->spec->model_dir);
    bp__pack_str(&pk, "model_hash", d->model_hash);
    bp__pack_str(&pk, "tensor", st->name);
    bp__pack_key(&pk, "row0");
    msgpack_pack_int64(&pk, row0);
    bp__pack_key(&pk, "rows");
    msgpack_pack_int64(&pk, nrows);
    if (absmax >= 0.0) {
        bp__pack_key(&pk, "absmax");
        msgpack_pack_double(&pk, absmax);
    }
    bp__pack_key(&pk, "formats");
    msgpack_pack_array(&pk, st->n_formats);
    for (size_t k = 0; k < st->n_formats; k++) {
        msgpack_pack_str(&pk, strlen(st->formats[k].name));
        msgpack_pack_str_body(&pk, st->formats[k].name, strlen(st->formats[k].name));
    }
    bp__pack_str(&pk, "method", bp_table_method_name(d->method));
    bp__pack_key(&pk, "want_dkl");
    if (want_dkl)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    bp__pack_str(&pk, "stats", have_stats ? d->stats_path : NULL);
    bp__pack_str(&pk, "calib_id", d->calib_id[0] ? d->calib_id : NULL);
    bp__pack_str(&pk, "imatrix", d->spec->imatrix_path);
    bp__pack_str(&pk, "imatrix_hash", d->imatrix_hash[0] ? d->imatrix_hash : NULL);
    pack_calib_fields(d, &pk);
    bp__pack_key(&pk, "seqs");
    msgpack_pack_int64(&pk, d->n_seq);
    bp__pack_key(&pk, "kl_windows");
    msgpack_pack_int64(&pk, d->spec->calib.kl_windows);
    seal_task(t, (uint64_t)nrows * (uint64_t)st->cols / 1024 + 1);
    return BP_OK;
}

static int search_windows(plan_driver *d, int64_t *first, int64_t *n_high, bp_error *err);
static int calib_token_count(plan_driver *d, int64_t *n, bp_error *err);
static const bp_bin_view *find_bin(const bp_task_result *r, const char *name);

/* ---- blocks and KV layers: extra measure tasks after the tensors' ------ */

/* A measure_blocks result, kept in the task's bin_data[0]. */
typedef struct block_result {
    size_t tensor;
    int64_t n_blocks;
    size_t nf;
    int64_t *bytes;      /* nf */
    double *cell[4];     /* mse, hdiag, hfull, gptq: n_blocks * nf */
} block_result;

static const int block_metric[4] = {BP_METRIC_MSE, BP_METRIC_HDIAG, BP_METRIC_HFULL, BP_METRIC_GPTQ};
static const char *const block_bin[4] = {"mse", "hdiag", "hfull", "gptq"};

static int make_block_tasks(plan_driver *d, bp_error *err)
{
    const bp_job_spec *s = d->spec;
    if (s->granularity != BP_JOB_GRANULARITY_BLOCK)
        return BP_OK;
    int have_stats = d->stats_path[0] != '\0';
    for (size_t i = 0; i < d->sel->n; i++) {
        const bp_selected_tensor *st = &d->sel->tensors[i];
        if (bp__job_block_count(s->block_axis, s->block_size, st->rows, st->cols) < 1)
            continue;
        owned_task *t = new_task(d, "measure_blocks", err);
        if (!t)
            return err->code;
        msgpack_packer pk;
        msgpack_packer_init(&pk, &t->params, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 11);
        bp__pack_str(&pk, "model", s->model_dir);
        bp__pack_str(&pk, "model_hash", d->model_hash);
        bp__pack_str(&pk, "tensor", st->name);
        bp__pack_key(&pk, "formats");
        msgpack_pack_array(&pk, st->n_formats);
        for (size_t k = 0; k < st->n_formats; k++) {
            msgpack_pack_str(&pk, strlen(st->formats[k].name));
            msgpack_pack_str_body(&pk, st->formats[k].name, strlen(st->formats[k].name));
        }
        bp__pack_str(&pk, "method", bp_table_method_name(d->method));
        bp__pack_str(&pk, "axis", s->block_axis == BP_BLOCK_AXIS_ROWS ? "rows" : "cols");
        bp__pack_key(&pk, "size");
        msgpack_pack_int64(&pk, s->block_size);
        bp__pack_str(&pk, "stats", have_stats ? d->stats_path : NULL);
        bp__pack_str(&pk, "calib_id", d->calib_id[0] ? d->calib_id : NULL);
        bp__pack_str(&pk, "imatrix", s->imatrix_path);
        bp__pack_str(&pk, "imatrix_hash", d->imatrix_hash[0] ? d->imatrix_hash : NULL);
        seal_task(t, st->params / 1024 + 1);
    }
    return BP_OK;
}

static long selected_index(const plan_driver *d, const bp_task_req *req)
{
    /* The tensor name is in the params; the tasks were made in selection
     * order, so match by name. */
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    long found = -1;
    if (msgpack_unpack_next(&u, req->params_mp, req->params_len, &off) == MSGPACK_UNPACK_SUCCESS) {
        bp_str name;
        if (bp_mp_get_str(&u.data, "tensor", &name, NULL) == BP_OK)
            for (size_t i = 0; i < d->sel->n && found < 0; i++)
                if (strlen(d->sel->tensors[i].name) == name.len &&
                    !memcmp(d->sel->tensors[i].name, name.ptr, name.len))
                    found = (long)i;
    }
    msgpack_unpacked_destroy(&u);
    return found;
}

static int on_blocks(plan_driver *d, uint64_t index, const bp_task_result *r, bp_error *err)
{
    long ti = selected_index(d, &d->tasks[index]->req);
    int64_t nb = 0, nf = 0;
    if (ti < 0 || bp_mp_get_i64(r->result, "blocks", &nb, NULL) || bp_mp_get_i64(r->result, "formats", &nf, NULL))
        return bp_error_set(err, BP_EPROTO, "measure_blocks result %llu is malformed", (unsigned long long)index);
    const bp_selected_tensor *st = &d->sel->tensors[ti];
    if (nb != bp__job_block_count(d->spec->block_axis, d->spec->block_size, st->rows, st->cols) ||
        nf != (int64_t)st->n_formats)
        return bp_error_set(err, BP_EPROTO, "measure_blocks result for '%s' has the wrong shape", st->name);
    size_t cells = (size_t)nb * (size_t)nf;
    block_result *br = calloc(1, sizeof *br + (size_t)nf * sizeof(int64_t) + 4 * cells * sizeof(double));
    if (!br)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    br->tensor = (size_t)ti;
    br->n_blocks = nb;
    br->nf = (size_t)nf;
    br->bytes = (int64_t *)(br + 1);
    double *data = (double *)(br->bytes + nf);
    for (int m = 0; m < 4; m++)
        br->cell[m] = data + (size_t)m * cells;
    const bp_bin_view *vb = find_bin(r, "bytes");
    int rc = BP_OK;
    if (!vb || vb->count != (uint64_t)nf || (rc = bp_proto_bin_copy(vb, BP_WIRE_I64, br->bytes, vb->size, err))) {
        free(br);
        return rc ? rc : bp_error_set(err, BP_EPROTO, "measure_blocks result for '%s': no bytes", st->name);
    }
    for (int m = 0; m < 4; m++) {
        const bp_bin_view *v = find_bin(r, block_bin[m]);
        if (!v || v->count != cells || (rc = bp_proto_bin_copy(v, BP_WIRE_F64, br->cell[m], v->size, err))) {
            free(br);
            return rc ? rc : bp_error_set(err, BP_EPROTO, "measure_blocks result for '%s': no %s", st->name,
                                          block_bin[m]);
        }
    }
    owned_task *t = d->tasks[index];
    free(t->bin_data[0]);
    t->bin_data[0] = br;
    return BP_OK;
}

static int add_block_rows(plan_driver *d, const block_result *br, bp_error *err)
{
    const bp_selected_tensor *st = &d->sel->tensors[br->tensor];
    int64_t brows, bcols;
    bp_blocks_shape((bp_block_axis)d->spec->block_axis, d->spec->block_size, st->rows, st->cols, &brows, &bcols);
    for (int64_t b = 0; b < br->n_blocks; b++) {
        char id[64];
        bp__job_block_id(id, sizeof id, d->spec->block_axis, d->spec->block_size, b);
        for (size_t k = 0; k < br->nf; k++) {
            if (br->bytes[k] <= 0)
                continue; /* the block shape cannot take the format */
            bp_table_row row;
            bp_table_row_init(&row);
            row.tensor = st->name;
            row.block = id;
            row.format = st->formats[k].name;
            row.method = d->method;
            row.bytes = (uint64_t)br->bytes[k];
            row.rows = brows;
            row.cols = bcols;
            row.params = (uint64_t)brows * (uint64_t)bcols;
            for (int m = 0; m < 4; m++) {
                double v = br->cell[m][(size_t)b * br->nf + k];
                if (!isnan(v)) {
                    row.metric[block_metric[m]] = v;
                    bp_table_declare_metric(d->table, (bp_metric)block_metric[m], NULL);
                }
            }
            int rc = bp_table_add_row(d->table, &row, err);
            if (rc != BP_OK)
                return rc;
        }
    }
    return BP_OK;
}

/* The KV cache's error terms: with a KV cache in the memory budget and the
 * dkl metric, one measure_kv task per layer on the held-out KL windows. */
static int kv_wanted(const plan_driver *d)
{
    return d->spec->kv_context > 0 && d->metric == BP_METRIC_DKL && d->ctx > 0;
}

static const char *const kv_names[BP_KV_FORMAT_COUNT] = {"kv_f16", "kv_fp8_e4m3", "kv_int8", "kv_int4"};

static int make_kv_tasks(plan_driver *d, bp_error *err)
{
    if (!kv_wanted(d))
        return BP_OK;
    bp_llama_config cfg;
    int rc = bp_llama_config_parse(bp_model_config_text(d->model), "config.json", &cfg, err);
    if (rc != BP_OK)
        return rc;
    /* The dkl cells' windows: after the Hessian sequences, kl_windows of
     * them (default 16), as many as the tokens hold. */
    int64_t klw = d->spec->calib.kl_windows > 0 ? d->spec->calib.kl_windows : 16, n_tok = 0;
    if ((rc = calib_token_count(d, &n_tok, err)) != BP_OK)
        return rc;
    int64_t rest = n_tok - d->n_seq * d->ctx;
    int64_t avail = rest > 1 ? bp_eval_n_windows(rest, d->ctx) : 0;
    int64_t n_win = avail < klw ? avail : klw;
    if (n_win < 1)
        return bp_error_set(err, BP_EINVAL, "no held-out windows are left for the KV-cache error terms");
    for (int64_t l = 0; l < cfg.n_layers; l++) {
        owned_task *t = new_task(d, "measure_kv", err);
        if (!t)
            return err->code;
        msgpack_packer pk;
        msgpack_packer_init(&pk, &t->params, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 9);
        bp__pack_str(&pk, "model", d->spec->model_dir);
        bp__pack_str(&pk, "model_hash", d->model_hash[0] ? d->model_hash : NULL);
        bp__pack_str(&pk, d->spec->calib.text_path ? "text" : "tokens",
                     d->spec->calib.text_path ? d->spec->calib.text_path : d->spec->calib.tokens_path);
        bp__pack_str(&pk, "tokens_hash", d->tokens_hash[0] ? d->tokens_hash : NULL);
        bp__pack_key(&pk, "ctx");
        msgpack_pack_int64(&pk, d->ctx);
        bp__pack_key(&pk, "first_window");
        msgpack_pack_int64(&pk, d->n_seq);
        bp__pack_key(&pk, "n_windows");
        msgpack_pack_int64(&pk, n_win);
        bp__pack_key(&pk, "layer");
        msgpack_pack_int64(&pk, l);
        bp__pack_key(&pk, "formats");
        msgpack_pack_array(&pk, BP_KV_FORMAT_COUNT);
        for (int f = 0; f < BP_KV_FORMAT_COUNT; f++) {
            msgpack_pack_str(&pk, strlen(kv_names[f]));
            msgpack_pack_str_body(&pk, kv_names[f], strlen(kv_names[f]));
        }
        seal_task(t, (uint64_t)n_win * BP_KV_FORMAT_COUNT);
    }
    return BP_OK;
}

typedef struct kv_result {
    int64_t layer;
    double dkl[BP_KV_FORMAT_COUNT];
} kv_result;

static int on_kv(plan_driver *d, uint64_t index, const bp_task_result *r, bp_error *err)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int64_t layer = -1;
    const bp_task_req *req = &d->tasks[index]->req;
    if (msgpack_unpack_next(&u, req->params_mp, req->params_len, &off) == MSGPACK_UNPACK_SUCCESS)
        bp_mp_get_i64(&u.data, "layer", &layer, NULL);
    msgpack_unpacked_destroy(&u);
    const msgpack_object *arr = NULL;
    size_t n = 0;
    if (layer < 0 || bp_mp_get_array(r->result, "dkl", &arr, &n, NULL) != BP_OK || n != BP_KV_FORMAT_COUNT)
        return bp_error_set(err, BP_EPROTO, "measure_kv result %llu is malformed", (unsigned long long)index);
    kv_result *kr = calloc(1, sizeof *kr);
    if (!kr)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    kr->layer = layer;
    for (size_t i = 0; i < n; i++) {
        if (arr[i].type != MSGPACK_OBJECT_FLOAT64 || !isfinite(arr[i].via.f64) || arr[i].via.f64 < 0) {
            free(kr);
            return bp_error_set(err, BP_EPROTO, "measure_kv result for layer %lld: bad value",
                                (long long)layer);
        }
        kr->dkl[i] = arr[i].via.f64;
    }
    owned_task *t = d->tasks[index];
    free(t->bin_data[0]);
    t->bin_data[0] = kr;
    return BP_OK;
}

static int add_kv_rows(plan_driver *d, const kv_result *kr, bp_error *err)
{
    bp_llama_config cfg;
    int rc = bp_llama_config_parse(bp_model_config_text(d->model), "config.json", &cfg, err);
    if (rc != BP_OK)
        return rc;
    bp_kv_shape shape = {cfg.n_layers, cfg.n_kv_heads, cfg.head_dim};
    char name[64];
    bp__kv_row_tensor(kr->layer, name, sizeof name);
    for (int f = 0; f < BP_KV_FORMAT_COUNT; f++) {
        uint64_t bytes = 0;
        if ((rc = bp_kv_bytes(&shape, (bp_kv_format)f, d->spec->kv_context,
                              d->spec->kv_batch > 0 ? d->spec->kv_batch : 1, &bytes, err)) != BP_OK)
            return rc;
        bp_table_row row;
        bp_table_row_init(&row);
        row.tensor = name;
        row.format = kv_names[f];
        row.method = BP_METHOD_RTN;
        row.bytes = bytes;
        row.metric[BP_METRIC_DKL] = kr->dkl[f];
        if ((rc = bp_table_add_row(d->table, &row, err)) != BP_OK)
            return rc;
    }
    return BP_OK;
}

/* Rows of the tasks after the tensors' (from task index `next`). */
static int add_extra_rows(plan_driver *d, size_t next, bp_error *err)
{
    for (size_t i = next; i < d->n_tasks; i++) {
        const owned_task *t = d->tasks[i];
        int rc = BP_OK;
        if (!strcmp(t->req.kind, "measure_blocks"))
            rc = add_block_rows(d, t->bin_data[0], err);
        else if (!strcmp(t->req.kind, "measure_kv"))
            rc = add_kv_rows(d, t->bin_data[0], err);
        if (rc != BP_OK)
            return rc;
    }
    return BP_OK;
}

/* One task per tensor, or per row block of a tensor above the split
 * threshold. A block gets the whole tensor's max |w| (nvfp4's tensor
 * scale) from here, so a worker reads only the rows it measures. */
static int make_measure_tasks(plan_driver *d, bp_error *err)
{
    d->stage_first = d->n_tasks;
    for (size_t i = 0; i < d->sel->n; i++) {
        const bp_selected_tensor *st = &d->sel->tensors[i];
        int64_t block = measure_block_rows(d, i);
        double absmax = -1.0;
        if (block < st->rows && bp__job_needs_absmax(st)) {
            float a = 0.0f;
            int rc = bp_sweep_tensor_absmax(bp_model_tensor(d->model, st->source_index), &a, err);
            if (rc != BP_OK)
                return rc;
            absmax = a;
        }
        for (int64_t r0 = 0; r0 < st->rows; r0 += block) {
            int64_t n = st->rows - r0 < block ? st->rows - r0 : block;
            int rc = make_measure_task(d, st, r0, n, absmax, err);
            if (rc != BP_OK)
                return rc;
        }
    }
    /* After the tensors' tasks: blocks and KV layers. */
    int rc = make_block_tasks(d, err);
    if (rc == BP_OK)
        rc = make_kv_tasks(d, err);
    if (rc != BP_OK)
        return rc;
    d->stage = ST_MEASURE;
    return BP_OK;
}

/* The solve task ships the whole problem: item starts, errors and the
 * costs matrix as binary inputs; every constraint's name, capacity and
 * display (unit, scale, offset) in the params, so the worker can word an
 * infeasibility exactly as the direct path does. */
static int make_solve_task(plan_driver *d, bp_error *err)
{
    int rc = bp__job_problem_build(d->spec, d->table, d->sel, d->rules, d->model, d->metric, d->method, &d->prob,
                                   err);
    if (rc != BP_OK)
        return rc;
    const bp_problem *p = d->prob->prob;
    /* A constraint that cannot hold alone is reported here, without a
     * solver run, in the words the worker would use. */
    if ((rc = bp__job_check_alone(p, d->prob->meta, err)) != BP_OK)
        return rc;
    d->stage_first = d->n_tasks;
    owned_task *t = new_task(d, "solve", err);
    if (!t)
        return err->code;
    size_t ni = p->n_items, nc = p->n_choices, m = p->n_constraints;
    int64_t *start = malloc((ni + 1) * sizeof *start);
    double *ev = malloc((nc ? nc : 1) * sizeof *ev), *cv = malloc((nc * m > 0 ? nc * m : 1) * sizeof *cv);
    if (!start || !ev || !cv) {
        free(start);
        free(ev);
        free(cv);
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i <= ni; i++)
        start[i] = (int64_t)p->item_start[i];
    memcpy(ev, p->error, nc * sizeof *ev);
    memcpy(cv, p->cost, nc * m * sizeof *cv);
    t->bin_data[0] = start;
    t->bin_data[1] = ev;
    t->bin_data[2] = cv;
    t->bins[0] = (bp_bin_view){bp_str_c("start"), BP_WIRE_I64, ni + 1, start, (ni + 1) * 8};
    t->bins[1] = (bp_bin_view){bp_str_c("error"), BP_WIRE_F64, nc, ev, nc * 8};
    t->bins[2] = (bp_bin_view){bp_str_c("cost"), BP_WIRE_F64, nc * m, cv, nc * m * 8};
    t->req.n_bins = 3;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &t->params, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    bp__pack_str(&pk, "solver", bp__solver_kind_name(bp__job_solver_for(d->spec, p)));
    bp__pack_key(&pk, "items");
    msgpack_pack_int64(&pk, (int64_t)ni);
    bp__pack_key(&pk, "time_limit_s");
    msgpack_pack_double(&pk, d->spec->time_limit_s > 0 ? d->spec->time_limit_s : 60.0);
    bp__pack_key(&pk, "constraints");
    msgpack_pack_array(&pk, m);
    for (size_t j = 0; j < m; j++) {
        msgpack_pack_map(&pk, 5);
        bp__pack_str(&pk, "name", p->constraint_name[j]);
        bp__pack_key(&pk, "capacity");
        msgpack_pack_double(&pk, p->capacity[j]);
        bp__pack_str(&pk, "unit", d->prob->meta[j].unit);
        bp__pack_key(&pk, "scale");
        msgpack_pack_double(&pk, d->prob->meta[j].scale);
        bp__pack_key(&pk, "offset");
        msgpack_pack_double(&pk, d->prob->meta[j].offset);
    }
    seal_task(t, 1);
    d->stage = ST_SOLVE;
    return BP_OK;
}

static int driver_create(const char *json, size_t len, void **state, bp_error *err)
{
    *state = NULL;
    plan_driver *d = calloc(1, sizeof *d);
    if (!d)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    int rc = bp_job_spec_parse(json, len, "job spec", &d->doc, err);
    if (rc != BP_OK)
        goto fail;
    d->spec = bp_job_spec_get(d->doc);
    const bp_job_spec *s = d->spec;
    if (!s->model_dir) {
        rc = bp_error_set(err, BP_EINVAL, "job spec: \"model\" is required for a distributed job");
        goto fail;
    }
    if (s->export_lp) {
        rc = bp_error_set(err, BP_EUNSUPPORTED, "job spec: \"export_lp\" is only available offline (--workers 0)");
        goto fail;
    }
    bp_format menu[256];
    size_t n_menu = 0;
    if ((rc = bp_job_parse_formats(s->formats, menu, 256, &n_menu, err)) ||
        (s->rules_path && (rc = bp_rules_load(s->rules_path, &d->rules, err))) ||
        (rc = bp_model_open(s->model_dir, &d->model, err)))
        goto fail;
    if (!s->skip_model_hash && (rc = bp_model_content_hash(d->model, d->model_hash, err)) != BP_OK)
        goto fail;
    if ((rc = bp_selection_build(d->model, d->rules, menu, n_menu, &d->sel, err)) != BP_OK)
        goto fail;
    if (d->sel->n == 0) {
        rc = bp_error_set(err, BP_EINVAL, "%s: no tensor is selected for quantization", s->model_dir);
        goto fail;
    }
    if (s->imatrix_path) {
        bp_imatrix *im = NULL;
        if ((rc = bp_imatrix_load(s->imatrix_path, &im, err)) != BP_OK)
            goto fail;
        bp_imatrix_destroy(&im);
        if ((rc = file_hash(s->imatrix_path, d->imatrix_hash, err)) != BP_OK)
            goto fail;
    }
    int have_calib = bp_calib_spec_given(&s->calib);
    d->metric = s->metric >= 0 ? s->metric : (s->imatrix_path || have_calib ? BP_METRIC_HDIAG : BP_METRIC_MSE);
    /* Metric gptq needs GPTQ weights: natural order unless act-order was asked for. */
    d->method = d->metric == BP_METRIC_GPTQ && !bp_method_is_gptq(s->method) ? BP_METHOD_GPTQ : s->method;
    d->reuse_table = s->table_path && bp__file_exists(s->table_path) && !s->resweep;
    if (!d->reuse_table) {
        const char *need = NULL;
        if (d->metric == BP_METRIC_HDIAG && !s->imatrix_path && !have_calib)
            need = "importance weights (imatrix) or calibration data";
        else if ((d->metric == BP_METRIC_HFULL || d->metric == BP_METRIC_GPTQ || bp_method_is_gptq(d->method)) &&
                 !have_calib)
            need = "calibration data";
        else if (d->metric == BP_METRIC_DKL && !s->calib.text_path && !s->calib.tokens_path)
            need = "calibration tokens (text or tokens)";
        if (need) {
            rc = bp_error_set(err, BP_EINVAL, "job spec: metric '%s' with %s weights needs %s",
                              bp_table_metric_name(d->metric), bp_table_method_name(d->method), need);
            goto fail;
        }
        if (s->imatrix_path && have_calib) {
            rc = bp_error_set(err, BP_EINVAL, "job spec: give an imatrix or calibration data, not both");
            goto fail;
        }
    }
    /* The calibration split is needed to measure, and for the real-loss
     * search's held-out windows even when a table is reused. */
    if (have_calib && (!d->reuse_table || bp__job_wants_real_loss(s))) {
        /* Decide the calibration split exactly as bp_calib_open does. */
        bp_llama_config cfg;
        if ((rc = bp_llama_config_parse(bp_model_config_text(d->model), "config.json", &cfg, err)) != BP_OK)
            goto fail;
        if (s->calib.stats_path && bp__file_exists(s->calib.stats_path)) {
            bp_hessian *h = NULL;
            if ((rc = bp_hessian_load(s->calib.stats_path, &h, err)) != BP_OK)
                goto fail;
            d->ctx = bp_hessian_ctx(h);
            d->n_seq = bp_hessian_n_sequences(h);
            bp_calib_make_id(bp_hessian_calib_hash(h), d->ctx, d->n_seq, d->calib_id);
            bp_hessian_destroy(&h);
            snprintf(d->stats_path, sizeof d->stats_path, "%s", s->calib.stats_path);
            snprintf(d->calib_source, sizeof d->calib_source, "stats:%s ctx=%lld seqs=%lld",
                     s->calib.stats_path, (long long)d->ctx, (long long)d->n_seq);
        } else {
            if (!s->calib.text_path && !s->calib.tokens_path) {
                rc = bp_error_set(err, BP_EINVAL, "stats file %s does not exist; give text or tokens to compute it",
                                  s->calib.stats_path);
                goto fail;
            }
            bp_tokens *tok = NULL;
            const char *tp = s->calib.text_path ? s->calib.text_path : s->calib.tokens_path;
            if ((rc = bp_calib_load_tokens(s->calib.text_path, s->calib.tokens_path, cfg.vocab_size, &tok,
                                           err)) != BP_OK)
                goto fail;
            d->ctx = s->calib.ctx > 0 ? s->calib.ctx : 128;
            int64_t fit = bp_tokens_count(tok) / d->ctx;
            /* dkl cells and the real-loss search need held-out windows. */
            int64_t max_h = d->metric == BP_METRIC_DKL || bp__job_wants_real_loss(s) ? (fit * 3) / 4 : fit;
            d->n_seq = s->calib.n_seq > 0 ? s->calib.n_seq : (max_h < 64 ? max_h : 64);
            snprintf(d->tokens_hash, sizeof d->tokens_hash, "%s", bp_tokens_hash(tok));
            snprintf(d->calib_source, sizeof d->calib_source, "%s:%s ctx=%lld seqs=%lld",
                     s->calib.text_path ? "text" : "tokens", tp, (long long)d->ctx, (long long)d->n_seq);
            bp_tokens_destroy(&tok);
            if (d->n_seq < 1 || d->n_seq > max_h || d->ctx > cfg.max_position_embeddings) {
                rc = bp_error_set(err, BP_EINVAL, "%s: cannot take %lld calibration sequences of %lld tokens", tp,
                                  (long long)d->n_seq, (long long)d->ctx);
                goto fail;
            }
            bp_calib_make_id(d->tokens_hash, d->ctx, d->n_seq, d->calib_id);
            if (s->calib.stats_path) {
                snprintf(d->stats_path, sizeof d->stats_path, "%s", s->calib.stats_path);
            } else {
                /* A shared scratch file named by everything the Hessians
                 * depend on, so a repeated job reuses it. */
                const char *tmp = getenv("TMPDIR");
                char key[BP_HASH_HEX_LEN + 1];
                bp_hash h;
                bp_hash_init(&h);
                bp_hash_update_str(&h, d->calib_id);
                bp_hash_update_str(&h, d->model_hash);
                bp_hash_update_u64(&h, (uint64_t)s->calib.diag_only);
                bp_hash_final_hex(&h, key);
                snprintf(d->stats_path, sizeof d->stats_path, "%s/bitplan-stats-%.24s.st",
                         tmp && *tmp ? tmp : "/tmp", key + 11);
            }
            d->need_hessian = !bp__file_exists(d->stats_path);
        }
    }
    if (bp__job_wants_real_loss(s)) {
        /* Fail now, not after the measurements, when no windows are left. */
        int64_t first = 0, n_high = 0;
        if ((rc = search_windows(d, &first, &n_high, err)) != BP_OK)
            goto fail;
    }
    if (d->reuse_table) {
        if (bp__job_wants_real_loss(s) && bp_method_is_gptq(d->method) && !bp__file_exists(d->stats_path)) {
            rc = bp_error_set(err, BP_EINVAL,
                              "the real-loss search measures GPTQ plans with the Hessians, and %s does not exist: "
                              "give --stats FILE, or --search ilp to re-solve the table alone",
                              d->stats_path[0] ? d->stats_path : "the stats file");
            goto fail;
        }
        if ((rc = bp_table_read(s->table_path, &d->table, err)) != BP_OK)
            goto fail;
        if ((rc = make_solve_task(d, err)) != BP_OK)
            goto fail;
    } else if (d->need_hessian) {
        bp_llama_config cfg;
        bp_llama_config_parse(bp_model_config_text(d->model), "config.json", &cfg, NULL);
        bp_hessian_options o;
        bp_hessian_options_default(&o);
        o.mode = s->calib.diag_only ? BP_HESSIAN_DIAG : BP_HESSIAN_FULL;
        o.ctx = d->ctx;
        o.model_hash = d->model_hash[0] ? d->model_hash : NULL;
        if ((rc = bp_hessian_new(&cfg, &o, &d->hess, err)) != BP_OK)
            goto fail;
        if ((rc = make_hessian_tasks(d, err)) != BP_OK)
            goto fail;
    } else {
        if ((rc = make_measure_tasks(d, err)) != BP_OK)
            goto fail;
    }
    *state = d;
    return BP_OK;
fail:
    driver_destroy(d);
    return rc;
}

static int driver_next(void *state, const bp_task_req **tasks, size_t *n, bp_error *err)
{
    plan_driver *d = state;
    size_t count = d->n_tasks - d->handed;
    free(d->out_reqs);
    d->out_reqs = count ? malloc(count * sizeof *d->out_reqs) : NULL;
    if (count && !d->out_reqs)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    for (size_t i = 0; i < count; i++)
        d->out_reqs[i] = d->tasks[d->handed + i]->req;
    d->handed = d->n_tasks;
    *tasks = d->out_reqs;
    *n = count;
    return BP_OK;
}

static const bp_bin_view *find_bin(const bp_task_result *r, const char *name)
{
    for (size_t i = 0; i < r->n_bins; i++)
        if (r->bins[i].name.len == strlen(name) && !memcmp(r->bins[i].name.ptr, name, r->bins[i].name.len))
            return &r->bins[i];
    return NULL;
}

static int stage_complete(plan_driver *d)
{
    for (size_t i = d->stage_first; i < d->n_tasks; i++)
        if (!d->tasks[i]->done)
            return 0;
    return 1;
}

static int on_hessian(plan_driver *d, const bp_task_result *r, bp_error *err)
{
    const bp_bin_view *v = find_bin(r, "stats");
    if (!v || v->dtype != BP_WIRE_U8)
        return bp_error_set(err, BP_EPROTO, "hessian task result has no stats");
    char tmp[4200];
    const char *td = getenv("TMPDIR");
    snprintf(tmp, sizeof tmp, "%s/bitplan-partial-%ld.st", td && *td ? td : "/tmp", (long)getpid());
    FILE *fp = fopen(tmp, "wb");
    if (!fp || fwrite(v->data, 1, v->size, fp) != v->size) {
        if (fp)
            fclose(fp);
        unlink(tmp);
        return bp_error_set(err, BP_EIO, "cannot write %s", tmp);
    }
    fclose(fp);
    bp_hessian *part = NULL;
    int rc = bp_hessian_load(tmp, &part, err);
    unlink(tmp);
    if (rc == BP_OK)
        rc = bp_hessian_merge(d->hess, part, err);
    bp_hessian_destroy(&part);
    return rc;
}

/* Copy the result bin `name` (want doubles) into dst; a bin the metrics
 * do not call for (needed 0) must be absent. */
static int measure_bin(const bp_task_result *r, const char *name, uint64_t want, int needed, double *dst,
                       const char *tensor, bp_error *err)
{
    const bp_bin_view *v = find_bin(r, name);
    if (!needed)
        return v ? bp_error_set(err, BP_EPROTO, "measure result for '%s' has an unexpected \"%s\"", tensor, name)
                 : BP_OK;
    if (!v || v->dtype != BP_WIRE_F64 || v->count != want)
        return bp_error_set(err, BP_EPROTO, "measure result for '%s': \"%s\" has the wrong shape", tensor, name);
    return bp_proto_bin_copy(v, BP_WIRE_F64, dst, want * sizeof *dst, err);
}

/* Keep a task's partial sums until every block of every tensor is in: a
 * bp_measure_part and its arrays in one allocation, owned by the task. */
static int on_measure(plan_driver *d, uint64_t index, const bp_task_result *r, bp_error *err)
{
    if (!strcmp(d->tasks[index]->req.kind, "measure_blocks"))
        return on_blocks(d, index, r, err);
    if (!strcmp(d->tasks[index]->req.kind, "measure_kv"))
        return on_kv(d, index, r, err);
    size_t ti = 0;
    int64_t row0 = 0, nrows = 0, g_row0 = -1, g_rows = -1;
    uint64_t g_nfmt = 0, metrics = 0;
    if (measure_task_range(d, index, &ti, &row0, &nrows) != BP_OK)
        return bp_error_set(err, BP_EPROTO, "unexpected measure result %llu", (unsigned long long)index);
    const bp_selected_tensor *st = &d->sel->tensors[ti];
    if (bp_mp_get_i64(r->result, "row0", &g_row0, NULL) || bp_mp_get_i64(r->result, "rows", &g_rows, NULL) ||
        bp_mp_get_u64(r->result, "formats", &g_nfmt, NULL) || bp_mp_get_u64(r->result, "metrics", &metrics, NULL) ||
        g_row0 != row0 || g_rows != nrows || g_nfmt != st->n_formats || !(metrics & (1u << BP_METRIC_MSE)) ||
        metrics >= (1u << BP_METRIC_N_ERROR) ||
        ((metrics & (1u << BP_METRIC_GPTQ)) && !(metrics & (1u << BP_METRIC_HFULL))))
        return bp_error_set(err, BP_EPROTO, "measure result for '%s' rows [%lld, %lld) has the wrong shape",
                            st->name, (long long)row0, (long long)(row0 + nrows));
    size_t nf = st->n_formats, nc = (size_t)bp__measure_part_chunks(nrows);
    int has_hfull = (metrics >> BP_METRIC_HFULL) & 1u, has_dkl = (metrics >> BP_METRIC_DKL) & 1u;
    size_t n_chunk = nf * 2 * nc, n_hfull = has_hfull ? nf * (size_t)nrows : 0, n_dkl = has_dkl ? nf : 0;
    bp_measure_part *part = malloc(sizeof *part + (n_chunk + n_hfull + n_dkl) * sizeof(double));
    if (!part)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    double *data = (double *)(part + 1);
    *part = (bp_measure_part){row0, nrows, nf, (unsigned)metrics, data, has_hfull ? data + n_chunk : NULL,
                              has_dkl ? data + n_chunk + n_hfull : NULL};
    int rc;
    if ((rc = measure_bin(r, "chunks", n_chunk, 1, part->chunk, st->name, err)) ||
        (rc = measure_bin(r, "hfull", n_hfull, has_hfull, part->row_hfull, st->name, err)) ||
        (rc = measure_bin(r, "dkl", n_dkl, has_dkl, part->dkl, st->name, err))) {
        free(part);
        return rc;
    }
    owned_task *t = d->tasks[index];
    free(t->bin_data[0]);
    t->bin_data[0] = part;
    return BP_OK;
}

static int build_table(plan_driver *d, bp_error *err)
{
    d->table = bp_table_new();
    if (!d->table)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    int rc = BP_OK;
    size_t next = d->stage_first;
    for (size_t i = 0; i < d->sel->n && rc == BP_OK; i++) {
        const bp_selected_tensor *st = &d->sel->tensors[i];
        int64_t block = measure_block_rows(d, i);
        size_t nb = (size_t)((st->rows + block - 1) / block);
        bp_measure_part *parts = malloc(nb * sizeof *parts);
        if (!parts)
            return bp_error_set(err, BP_ENOMEM, "out of memory");
        for (size_t b = 0; b < nb; b++)
            parts[b] = *(const bp_measure_part *)d->tasks[next + b]->bin_data[0];
        next += nb;
        for (int m = 0; m < BP_METRIC_N_ERROR; m++)
            if ((parts[0].metrics >> m) & 1u)
                bp_table_declare_metric(d->table, (bp_metric)m, NULL);
        rc = bp__job_measure_merge(st, d->method, parts, nb, d->table, err);
        free(parts);
    }
    if (rc == BP_OK)
        rc = add_extra_rows(d, next, err);
    if (rc != BP_OK)
        return rc;
    bp_table_declare_metric(d->table, BP_METRIC_MSE, NULL);
    bp_table_set_meta(d->table, "model", d->spec->model_dir, NULL);
    if (d->model_hash[0])
        bp_table_set_meta(d->table, "model_hash", d->model_hash, NULL);
    if (d->calib_id[0]) {
        bp_table_set_meta(d->table, "calibration_id", d->calib_id, NULL);
        bp_table_set_meta(d->table, "calibration_source", d->calib_source, NULL);
    }
    if (d->spec->table_path && (rc = bp_table_write(d->table, d->spec->table_path, err)) != BP_OK)
        return rc;
    return BP_OK;
}

static int on_solve(plan_driver *d, const bp_task_result *r, bp_error *err)
{
    const bp_bin_view *vc = find_bin(r, "choice");
    const bp_problem *p = d->prob->prob;
    size_t ni = p->n_items;
    if (!vc || vc->count != ni)
        return bp_error_set(err, BP_EPROTO, "solve result has no choices");
    bp_solution sol;
    int rc = bp_solution_init(&sol, ni, err);
    if (rc != BP_OK)
        return rc;
    int64_t *ch = malloc(ni * sizeof *ch);
    bp_str solver, status;
    bp_plan *plan = NULL;
    if (!ch) {
        rc = bp_error_set(err, BP_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = bp_proto_bin_copy(vc, BP_WIRE_I64, ch, vc->size, err)) ||
        (rc = bp_mp_get_str(r->result, "solver", &solver, err)) ||
        (rc = bp_mp_get_str(r->result, "status", &status, err)))
        goto out;
    for (size_t i = 0; i < ni; i++) {
        if (ch[i] < 0 || (size_t)ch[i] >= p->item_start[i + 1] - p->item_start[i]) {
            rc = bp_error_set(err, BP_EPROTO, "solve result: choice out of range for item %zu", i);
            goto out;
        }
        sol.choice[i] = (int32_t)ch[i];
    }
    if ((rc = bp_solution_evaluate(p, &sol, err)) != BP_OK)
        goto out;
    if (status.len == 7 && !memcmp(status.ptr, "optimal", 7))
        sol.status = BP_SOLVE_OPTIMAL;
    else if (status.len == 8 && !memcmp(status.ptr, "feasible", 8))
        sol.status = BP_SOLVE_FEASIBLE;
    else {
        rc = bp_error_set(err, BP_ESOLVER, "the solver stopped without a plan");
        goto out;
    }
    snprintf(sol.solver, sizeof sol.solver, "%.*s", (int)(solver.len < 31 ? solver.len : 31), solver.ptr);
    if (bp_mp_get_f64(r->result, "bound", &sol.bound, NULL) != BP_OK)
        sol.bound = NAN;
    if (bp_mp_get_f64(r->result, "gap", &sol.gap, NULL) != BP_OK)
        sol.gap = NAN;
    int64_t nodes = 0;
    bool tl = false;
    if (bp_mp_get_i64(r->result, "nodes", &nodes, NULL) == BP_OK && nodes >= 0)
        sol.nodes = (long)nodes;
    if (bp_mp_get_bool(r->result, "time_limited", &tl, NULL) == BP_OK)
        sol.time_limited = tl;
    for (size_t j = 0; j < p->n_constraints; j++)
        if (sol.cost_total[j] > p->capacity[j]) {
            rc = bp_error_set(err, BP_EPROTO, "solve result exceeds the '%s' constraint", p->constraint_name[j]);
            goto out;
        }
    if (bp__job_wants_real_loss(d->spec)) {
        /* The plan comes after the search; keep the ILP's answer. */
        bp_solution_free(&d->ilp);
        d->ilp = sol;
        memset(&sol, 0, sizeof sol);
        goto out;
    }
    if ((rc = bp__job_make_plan(d->spec, d->table, d->sel, d->prob, &sol, d->model_hash, d->metric, &plan, err)))
        goto out;
    d->result_json = bp_plan_to_string(plan, err);
    if (!d->result_json)
        rc = err ? err->code : BP_ENOMEM;
out:
    bp_plan_destroy(&plan);
    free(ch);
    bp_solution_free(&sol);
    return rc;
}

/* The held-out windows the search measures on: after the Hessian
 * sequences, as many as the spec asks and the tokens hold. */
/* The calibration stream's token count (read once per job). */
static int calib_token_count(plan_driver *d, int64_t *n, bp_error *err)
{
    if (d->n_tokens > 0) {
        *n = d->n_tokens;
        return BP_OK;
    }
    const bp_job_spec *s = d->spec;
    bp_llama_config cfg;
    int rc = bp_llama_config_parse(bp_model_config_text(d->model), "config.json", &cfg, err);
    if (rc != BP_OK)
        return rc;
    bp_tokens *tok = NULL;
    if ((rc = bp_calib_load_tokens(s->calib.text_path, s->calib.tokens_path, cfg.vocab_size, &tok, err)) != BP_OK)
        return rc;
    d->n_tokens = *n = bp_tokens_count(tok);
    bp_tokens_destroy(&tok);
    return BP_OK;
}

static int search_windows(plan_driver *d, int64_t *first, int64_t *n_high, bp_error *err)
{
    const bp_job_spec *s = d->spec;
    int64_t n = 0;
    int rc = calib_token_count(d, &n, err);
    if (rc != BP_OK)
        return rc;
    int64_t all = n > 1 ? bp_eval_n_windows(n, d->ctx) : 0;
    int64_t want = s->evo_windows > 0 ? s->evo_windows : BP_JOB_EVO_WINDOWS;
    *first = d->n_seq;
    *n_high = all - d->n_seq < want ? all - d->n_seq : want;
    if (*n_high < 1)
        return bp_error_set(err, BP_EINVAL,
                            "%s: no calibration windows of %lld tokens are left after the %lld Hessian sequences "
                            "for the real-loss search (use fewer --calib-seqs or --search ilp)",
                            s->calib.text_path ? s->calib.text_path : s->calib.tokens_path, (long long)d->ctx,
                            (long long)d->n_seq);
    return BP_OK;
}

/* One evaluate task per candidate of the search's next batch; none when
 * the search is done, which writes the plan. */
static int make_search_tasks(plan_driver *d, bp_error *err)
{
    size_t n = 0;
    int rc = bp__search_driver_batch(d->search, &n, err);
    if (rc != BP_OK)
        return rc;
    if (n == 0) {
        bp_plan *plan = NULL;
        if ((rc = bp__search_driver_plan(d->search, &plan, err)) != BP_OK)
            return rc;
        d->result_json = bp_plan_to_string(plan, err);
        bp_plan_destroy(&plan);
        if (!d->result_json)
            return err ? err->code : BP_ENOMEM;
        d->stage = ST_DONE;
        return BP_OK;
    }
    free(d->search_kl);
    d->search_kl = calloc(n, sizeof *d->search_kl);
    if (!d->search_kl)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    d->stage_first = d->n_tasks;
    for (size_t k = 0; k < n; k++) {
        owned_task *t = new_task(d, "evaluate", err);
        if (!t)
            return err->code;
        char *plan_json = NULL;
        if ((rc = bp__search_driver_task(d->search, k, &t->params, &plan_json, err)) != BP_OK)
            return rc;
        size_t len = strlen(plan_json);
        t->bin_data[0] = plan_json;
        t->bins[0] = (bp_bin_view){bp_str_c("plan"), BP_WIRE_U8, len, plan_json, len};
        t->req.n_bins = 1;
        seal_task(t, (uint64_t)bp__search_driver_windows(d->search));
    }
    d->stage = ST_SEARCH;
    return BP_OK;
}

static int start_search(plan_driver *d, bp_error *err)
{
    const bp_job_spec *s = d->spec;
    bp__search_env env;
    memset(&env, 0, sizeof env);
    env.spec = s;
    env.table = d->table;
    env.sel = d->sel;
    env.jp = d->prob;
    env.model_hash = d->model_hash;
    env.metric = d->metric;
    env.text_path = s->calib.text_path;
    env.tokens_path = s->calib.text_path ? NULL : s->calib.tokens_path;
    env.tokens_hash = d->tokens_hash;
    env.stats_path = d->stats_path[0] && bp__file_exists(d->stats_path) ? d->stats_path : NULL;
    env.calib_id = d->calib_id;
    env.ctx = d->ctx;
    int rc = search_windows(d, &env.first_window, &env.n_high, err);
    if (rc != BP_OK)
        return rc;
    env.n_low = env.n_high / 4 > 0 ? env.n_high / 4 : 1;
    bp_evo_options_default(&env.evo);
    env.evo.generations = s->evo_generations < 0   ? 0
                          : s->evo_generations > 0 ? (size_t)s->evo_generations
                                                   : BP_JOB_EVO_GENERATIONS;
    env.evo.lambda = s->evo_lambda > 0 ? (size_t)s->evo_lambda : BP_JOB_EVO_LAMBDA;
    env.evo.promote = s->evo_promote > 0 ? (size_t)s->evo_promote : BP_JOB_EVO_PROMOTE;
    if (env.evo.promote > env.evo.lambda)
        env.evo.promote = env.evo.lambda;
    env.evo.seed = s->evo_seed > 0 ? (uint64_t)s->evo_seed : 1;
    if ((rc = bp__search_driver_new(&env, &d->ilp, &d->search, err)) != BP_OK)
        return rc;
    return make_search_tasks(d, err);
}

static int on_evaluate(plan_driver *d, uint64_t index, const bp_task_result *r, bp_error *err)
{
    double kl = NAN;
    int rc = bp_mp_get_f64(r->result, "kl", &kl, err);
    if (rc != BP_OK)
        return rc;
    if (!isfinite(kl))
        return bp_error_set(err, BP_EPROTO, "evaluate result: KL is not finite");
    d->search_kl[index - d->stage_first] = kl;
    return BP_OK;
}

static int driver_done(void *state, uint64_t index, const bp_task_result *r, bp_error *err)
{
    plan_driver *d = state;
    if (index >= d->n_tasks || index < d->stage_first || d->tasks[index]->done)
        return bp_error_set(err, BP_EPROTO, "unexpected result for task %llu", (unsigned long long)index);
    int rc;
    switch (d->stage) {
    case ST_HESSIAN: rc = on_hessian(d, r, err); break;
    case ST_MEASURE: rc = on_measure(d, index, r, err); break;
    case ST_SOLVE: rc = on_solve(d, r, err); break;
    case ST_SEARCH: rc = on_evaluate(d, index, r, err); break;
    default: rc = bp_error_set(err, BP_EPROTO, "the job is already finished");
    }
    if (rc != BP_OK)
        return rc;
    d->tasks[index]->done = 1;
    d->done_count++;
    if (!stage_complete(d))
        return BP_OK;
    switch (d->stage) {
    case ST_HESSIAN:
        if ((rc = bp_hessian_save(d->hess, d->stats_path, 0, err)) != BP_OK)
            return rc;
        return make_measure_tasks(d, err);
    case ST_MEASURE:
        if ((rc = build_table(d, err)) != BP_OK)
            return rc;
        return make_solve_task(d, err);
    case ST_SOLVE:
        if (d->search)
            return bp_error_set(err, BP_EPROTO, "the search started twice");
        if (bp__job_wants_real_loss(d->spec))
            return start_search(d, err);
        d->stage = ST_DONE;
        return BP_OK;
    case ST_SEARCH:
        if ((rc = bp__search_driver_tell(d->search, d->search_kl, d->n_tasks - d->stage_first, err)) != BP_OK)
            return rc;
        return make_search_tasks(d, err);
    default: return BP_OK;
    }
}

static int driver_finished(void *state)
{
    return ((plan_driver *)state)->stage == ST_DONE;
}

static int driver_result(void *state, char **json, bp_error *err)
{
    plan_driver *d = state;
    if (d->stage != ST_DONE || !d->result_json)
        return bp_error_set(err, BP_EINVAL, "the job is not finished");
    *json = strdup(d->result_json);
    return *json ? BP_OK : bp_error_set(err, BP_ENOMEM, "out of memory");
}

static void driver_progress(void *state, uint64_t *done, uint64_t *total)
{
    plan_driver *d = state;
    /* Stages not yet created are estimated: one measure task per tensor
     * and one solve. */
    uint64_t t = d->n_tasks;
    if (d->stage == ST_HESSIAN)
        t += d->sel->n + 1;
    else if (d->stage == ST_MEASURE)
        t += 1;
    *done = d->done_count;
    *total = t;
}

static const bp_job_driver_ops plan_driver_ops = {
    "plan", driver_create, driver_next, driver_done, driver_finished, driver_result, driver_progress,
    driver_destroy,
};

void bp_job_register_tasks(void)
{
    bp__tasks_register_builtin();
    bp_job_driver_register(&plan_driver_ops);
}
