/* The "plan" job driver: the same planning job as bp_job_run, cut into
 * tasks the coordinator can spread over workers:
 *   1. hessian  one task per shard of calibration sequences (when the job
 *               needs Hessians and no stats file exists yet); the partial
 *               sums merge exactly, in any order;
 *   2. measure  one task per selected tensor;
 *   3. solve    one task (GLPK runs in a worker, so a solver crash is a
 *               worker crash the coordinator retries and quarantines).
 * Every task's params are built deterministically from the spec, so the
 * same job always asks for the same tasks with the same hashes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitplan/job_spec.h"
#include "bitplan/task.h"
#include "job_internal.h"
#include "tasks_internal.h"

#define HESSIAN_SHARD_SEQS 8
#define HESSIAN_SHARDS 8

enum stage { ST_HESSIAN, ST_MEASURE, ST_SOLVE, ST_DONE };

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
    bp_problem *prob;
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
    bp_problem_destroy(&d->prob);
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

static int make_measure_tasks(plan_driver *d, bp_error *err)
{
    d->stage_first = d->n_tasks;
    int want_dkl = d->metric == BP_METRIC_DKL;
    int have_stats = d->stats_path[0] != 0;
    for (size_t i = 0; i < d->sel->n; i++) {
        const bp_selected_tensor *st = &d->sel->tensors[i];
        owned_task *t = new_task(d, "measure", err);
        if (!t)
            return err->code;
        msgpack_packer pk;
        msgpack_packer_init(&pk, &t->params, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 15);
        bp__pack_str(&pk, "model", d->spec->model_dir);
        bp__pack_str(&pk, "model_hash", d->model_hash);
        bp__pack_str(&pk, "tensor", st->name);
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
        seal_task(t, st->params / 1024 + 1);
    }
    d->stage = ST_MEASURE;
    return BP_OK;
}

static int make_solve_task(plan_driver *d, bp_error *err)
{
    int rc = bp__job_problem(d->spec, d->table, d->sel, d->metric, d->method, &d->prob, err);
    if (rc != BP_OK)
        return rc;
    /* An infeasible budget is reported here, without a solver run. */
    double minc = bp_problem_min_cost(d->prob, 0);
    if (minc > d->prob->capacity[0])
        return bp_error_set(err, BP_EINFEASIBLE,
                            "infeasible budget: %.0f bytes asked, the smallest achievable size is %.0f bytes "
                            "(%.4f bits per weight)",
                            d->prob->capacity[0], minc, 8.0 * minc / (double)d->sel->total_params);
    d->stage_first = d->n_tasks;
    owned_task *t = new_task(d, "solve", err);
    if (!t)
        return err->code;
    size_t ni = d->prob->n_items, nc = d->prob->n_choices;
    int64_t *start = malloc((ni + 1) * sizeof *start);
    double *ev = malloc((nc ? nc : 1) * sizeof *ev), *cv = malloc((nc ? nc : 1) * sizeof *cv);
    if (!start || !ev || !cv) {
        free(start);
        free(ev);
        free(cv);
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i <= ni; i++)
        start[i] = (int64_t)d->prob->item_start[i];
    for (size_t k = 0; k < nc; k++) {
        ev[k] = d->prob->error[k];
        cv[k] = d->prob->cost[k];
    }
    t->bin_data[0] = start;
    t->bin_data[1] = ev;
    t->bin_data[2] = cv;
    t->bins[0] = (bp_bin_view){bp_str_c("start"), BP_WIRE_I64, ni + 1, start, (ni + 1) * 8};
    t->bins[1] = (bp_bin_view){bp_str_c("error"), BP_WIRE_F64, nc, ev, nc * 8};
    t->bins[2] = (bp_bin_view){bp_str_c("cost"), BP_WIRE_F64, nc, cv, nc * 8};
    t->req.n_bins = 3;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &t->params, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    bp__pack_str(&pk, "solver", d->spec->solver == BP_JOB_SOLVER_DP ? "dp" : "ilp");
    bp__pack_key(&pk, "capacity");
    msgpack_pack_double(&pk, d->prob->capacity[0]);
    bp__pack_key(&pk, "items");
    msgpack_pack_int64(&pk, (int64_t)ni);
    bp__pack_key(&pk, "time_limit_s");
    msgpack_pack_double(&pk, d->spec->time_limit_s > 0 ? d->spec->time_limit_s : 60.0);
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
    d->method = d->metric == BP_METRIC_GPTQ ? BP_METHOD_GPTQ : s->method;
    d->reuse_table = s->table_path && bp__file_exists(s->table_path) && !s->resweep;
    if (!d->reuse_table) {
        const char *need = NULL;
        if (d->metric == BP_METRIC_HDIAG && !s->imatrix_path && !have_calib)
            need = "importance weights (imatrix) or calibration data";
        else if ((d->metric == BP_METRIC_HFULL || d->metric == BP_METRIC_GPTQ || d->method == BP_METHOD_GPTQ) &&
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
    if (have_calib && !d->reuse_table) {
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
            int64_t max_h = d->metric == BP_METRIC_DKL ? (fit * 3) / 4 : fit;
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
    if (d->reuse_table) {
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

static int on_measure(plan_driver *d, uint64_t index, const bp_task_result *r, bp_error *err)
{
    size_t ti = (size_t)(index - d->stage_first);
    const bp_selected_tensor *st = &d->sel->tensors[ti];
    const bp_bin_view *vb = find_bin(r, "bytes"), *vv = find_bin(r, "values"), *vm = find_bin(r, "mask");
    size_t n = st->n_formats;
    if (!vb || !vv || !vm || vb->count != n || vv->count != n * BP_METRIC_N_ERROR ||
        vm->count != n * BP_METRIC_N_ERROR)
        return bp_error_set(err, BP_EPROTO, "measure result for '%s' has the wrong shape", st->name);
    int64_t *bytes = malloc(n * sizeof *bytes);
    double *vals = malloc(n * BP_METRIC_N_ERROR * sizeof *vals);
    uint8_t *mask = malloc(n * BP_METRIC_N_ERROR);
    int rc = BP_OK;
    if (!bytes || !vals || !mask) {
        rc = bp_error_set(err, BP_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = bp_proto_bin_copy(vb, BP_WIRE_I64, bytes, vb->size, err)) ||
        (rc = bp_proto_bin_copy(vv, BP_WIRE_F64, vals, vv->size, err)) ||
        (rc = bp_proto_bin_copy(vm, BP_WIRE_U8, mask, vm->size, err)))
        goto out;
    /* Store in a per-tensor slot; the table is built in selection order
     * once every tensor is measured. */
    owned_task *t = d->tasks[index];
    free(t->bin_data[0]);
    free(t->bin_data[1]);
    free(t->bin_data[2]);
    t->bin_data[0] = bytes;
    t->bin_data[1] = vals;
    t->bin_data[2] = mask;
    bytes = NULL;
    vals = NULL;
    mask = NULL;
out:
    free(bytes);
    free(vals);
    free(mask);
    return rc;
}

static int build_table(plan_driver *d, bp_error *err)
{
    d->table = bp_table_new();
    if (!d->table)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    int rc = BP_OK;
    for (size_t i = 0; i < d->sel->n && rc == BP_OK; i++) {
        const bp_selected_tensor *st = &d->sel->tensors[i];
        owned_task *t = d->tasks[d->stage_first + i];
        const int64_t *bytes = t->bin_data[0];
        const double *vals = t->bin_data[1];
        const uint8_t *mask = t->bin_data[2];
        for (size_t k = 0; k < st->n_formats && rc == BP_OK; k++) {
            bp_table_row row;
            bp_table_row_init(&row);
            row.tensor = st->name;
            row.format = st->formats[k].name;
            row.method = d->method;
            row.bytes = (uint64_t)bytes[k];
            row.rows = st->rows;
            row.cols = st->cols;
            row.params = st->params;
            for (int m = 0; m < BP_METRIC_N_ERROR; m++) {
                if (mask[k * BP_METRIC_N_ERROR + (size_t)m]) {
                    row.metric[m] = vals[k * BP_METRIC_N_ERROR + (size_t)m];
                    bp_table_declare_metric(d->table, (bp_metric)m, NULL);
                }
            }
            if (row.bytes != bp_format_bytes(&st->formats[k], st->rows, st->cols))
                rc = bp_error_set(err, BP_EPROTO, "measure result for '%s': wrong byte count", st->name);
            else
                rc = bp_table_add_row(d->table, &row, err);
        }
    }
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
    size_t ni = d->prob->n_items;
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
        if (ch[i] < 0 || (size_t)ch[i] >= d->prob->item_start[i + 1] - d->prob->item_start[i]) {
            rc = bp_error_set(err, BP_EPROTO, "solve result: choice out of range for item %zu", i);
            goto out;
        }
        sol.choice[i] = (int32_t)ch[i];
    }
    if ((rc = bp_solution_evaluate(d->prob, &sol, err)) != BP_OK)
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
    if (sol.cost_total[0] > d->prob->capacity[0]) {
        rc = bp_error_set(err, BP_EPROTO, "solve result exceeds the budget");
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
    case ST_SOLVE: d->stage = ST_DONE; return BP_OK;
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
