/* The planning job: selection -> measurement -> problem -> solve -> plan. */
#include "bitplan/job.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bitplan/format.h"
#include "bitplan/hash.h"
#include "bitplan/progress.h"
#include "bitplan/job_spec.h"
#include "bitplan/task.h"
#include "job_internal.h"

#define BP_MENU_MAX 256

void bp_job_spec_default(bp_job_spec *s)
{
    memset(s, 0, sizeof *s);
    s->metric = -1;
    s->solver = BP_JOB_SOLVER_ILP;
}

int bp_job_parse_formats(const char *list, bp_format *out, size_t cap,
                         size_t *n_out, bp_error *err)
{
    *n_out = 0;
    if (!list || !strcmp(list, "all")) {
        size_t n = bp_format_menu(out, cap);
        *n_out = n < cap ? n : cap;
        return BP_OK;
    }
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char name[BP_FORMAT_NAME_MAX + 8];
        if (len == 0 || len >= sizeof name)
            return bp_error_set(err, BP_EINVAL, "--formats: empty or overlong entry in '%s'", list);
        memcpy(name, p, len);
        name[len] = '\0';
        if (*n_out >= cap)
            return bp_error_set(err, BP_EINVAL, "--formats: more than %zu formats", cap);
        bp_format f;
        if (bp_format_parse(name, &f, err) != BP_OK)
            return bp_error_prefix(err, "--formats");
        for (size_t i = 0; i < *n_out; i++)
            if (!strcmp(out[i].name, f.name))
                return bp_error_set(err, BP_EINVAL, "--formats: '%s' is listed twice", f.name);
        out[(*n_out)++] = f;
        p += len;
        if (*p == ',')
            p++;
    }
    if (*n_out == 0)
        return bp_error_set(err, BP_EINVAL, "--formats: no format given");
    return BP_OK;
}

/* Measure every (selected tensor, allowed format) cell into a new table,
 * in selection order, formats in menu order. */
static int measure_all(const bp_model *model, const bp_selection *sel, const bp_measure_env *env,
                       int quiet, bp_table **out, bp_error *err)
{
    *out = NULL;
    int rc = BP_OK;
    bp_table *t = bp_table_new();
    uint64_t total_cells = 0;
    for (size_t i = 0; i < sel->n; i++)
        total_cells += sel->tensors[i].n_formats;
    bp_progress *prog = bp_progress_new(env->want_dkl ? "measure (with KL)" : "measure", total_cells, quiet);
    if (!t || !prog) {
        rc = bp_error_set(err, BP_ENOMEM, "measure: out of memory");
        goto out;
    }
    if ((rc = bp_table_declare_metric(t, BP_METRIC_MSE, err)) != BP_OK)
        goto out;
    if ((env->imatrix || env->calib) && (rc = bp_table_declare_metric(t, BP_METRIC_HDIAG, err)) != BP_OK)
        goto out;
    if (env->calib && bp_hessian_get_mode(bp_calib_hessian(env->calib)) == BP_HESSIAN_FULL) {
        if ((rc = bp_table_declare_metric(t, BP_METRIC_HFULL, err)) != BP_OK)
            goto out;
        if (bp_method_is_gptq(env->method) && (rc = bp_table_declare_metric(t, BP_METRIC_GPTQ, err)) != BP_OK)
            goto out;
    }
    if (env->want_dkl && (rc = bp_table_declare_metric(t, BP_METRIC_DKL, err)) != BP_OK)
        goto out;
    for (size_t i = 0; i < sel->n; i++) {
        const bp_selected_tensor *st = &sel->tensors[i];
        const bp_tensor_info *ti = bp_model_tensor(model, st->source_index);
        if ((rc = bp__job_measure_tensor(ti, st, env, t, err)) != BP_OK)
            goto out;
        bp_progress_tick(prog, st->n_formats);
    }
    bp_progress_done(prog);
    *out = t;
    t = NULL;
out:
    bp_progress_destroy(&prog);
    bp_table_destroy(&t);
    return rc;
}

/* Items of the problem are tensors; this maps an item to its table rows. */
typedef struct {
    const char *tensor;
    size_t first_row; /* for ordering when sel is NULL */
} item_ref;

static int allowed_in_selection(const bp_selected_tensor *st, const char *format)
{
    for (size_t k = 0; k < st->n_formats; k++)
        if (!strcmp(st->formats[k].name, format))
            return 1;
    return 0;
}

/* A table row's bytes must agree with the registry, or the plan would
 * promise a size the packed file does not have. */
int bp__job_check_row_bytes(const bp_table_row *r, bp_error *err)
{
    bp_format f;
    bp_error perr;
    if (bp_format_parse(r->format, &f, &perr) != BP_OK)
        return bp_error_set(err, BP_EFORMAT, "table row '%s' / '%s': %s", r->tensor,
                            r->format, perr.msg);
    if (r->rows <= 0 || r->cols <= 0)
        return BP_OK;
    if (!bp_format_supports(&f, r->rows, r->cols))
        return bp_error_set(err, BP_EFORMAT,
                            "table row '%s' / '%s': format cannot store a %lld x %lld tensor",
                            r->tensor, r->format, (long long)r->rows, (long long)r->cols);
    uint64_t want = bp_format_bytes(&f, r->rows, r->cols);
    if (want != r->bytes)
        return bp_error_set(err, BP_EFORMAT,
                            "table row '%s' / '%s': bytes %llu, but the format needs %llu for %lld x %lld",
                            r->tensor, r->format, (unsigned long long)r->bytes,
                            (unsigned long long)want, (long long)r->rows, (long long)r->cols);
    return BP_OK;
}

int bp_job_build_problem(const bp_table *table, const bp_selection *sel,
                         bp_metric metric, bp_quant_method method, bp_problem **out,
                         bp_error *err)
{
    *out = NULL;
    int rc = BP_OK;
    size_t nrows = bp_table_count(table);
    bp_problem *p = bp_problem_new(1);
    char **names = NULL;
    size_t n_names = 0;
    if (!p)
        return bp_error_set(err, BP_ENOMEM, "problem: out of memory");
    if (!bp_table_has_metric(table, metric)) {
        rc = bp_error_set(err, BP_EINVAL, "the table has no '%s' column",
                          bp_table_metric_name(metric));
        goto out;
    }
    /* Item order: the selection's when given, else first appearance. */
    names = calloc(sel ? sel->n : nrows, sizeof *names);
    if (!names && (sel ? sel->n : nrows)) {
        rc = bp_error_set(err, BP_ENOMEM, "problem: out of memory");
        goto out;
    }
    if (sel) {
        for (size_t i = 0; i < sel->n; i++)
            names[n_names++] = sel->tensors[i].name;
    } else {
        for (size_t r = 0; r < nrows; r++) {
            bp_table_row row;
            bp_table_get_row(table, r, &row);
            int seen = 0;
            /* Tables list a tensor's rows together; check the last name
             * first so this stays linear in practice. */
            for (size_t k = n_names; k-- > 0;)
                if (!strcmp(names[k], row.tensor)) {
                    seen = 1;
                    break;
                }
            if (!seen)
                names[n_names++] = (char *)row.tensor;
        }
    }
    /* Rows of each tensor, in table order. Index rows by tensor once. */
    for (size_t it = 0; it < n_names; it++) {
        const char *name = names[it];
        const bp_selected_tensor *st = sel ? &sel->tensors[it] : NULL;
        if ((rc = bp_problem_add_item(p, name, err)) != BP_OK)
            goto out;
        size_t added = 0;
        for (size_t r = 0; r < nrows; r++) {
            bp_table_row row;
            bp_table_get_row(table, r, &row);
            if (strcmp(row.tensor, name) || (row.block && row.block[0]))
                continue;
            if (row.method != method || isnan(row.metric[metric]))
                continue;
            if (st && !allowed_in_selection(st, row.format))
                continue;
            if (st && (row.rows <= 0 || row.cols <= 0)) {
                row.rows = st->rows;
                row.cols = st->cols;
            }
            if ((rc = bp__job_check_row_bytes(&row, err)) != BP_OK)
                goto out;
            double cost = (double)row.bytes;
            if ((rc = bp_problem_add_choice(p, (int32_t)r, row.metric[metric], &cost, err)) != BP_OK)
                goto out;
            added++;
        }
        if (added == 0) {
            rc = bp_error_set(err, BP_EINVAL,
                              "tensor '%s' has no measured '%s' value with %s weights for any allowed format in the table",
                              name, bp_table_metric_name(metric), bp_table_method_name(method));
            goto out;
        }
    }
    *out = p;
    p = NULL;
out:
    free(names);
    bp_problem_destroy(&p);
    return rc;
}

/* Table rows must describe this model, or a stale table would silently
 * plan the wrong weights. */
static int check_table_model(const bp_table *t, const char *path, const char *model_hash,
                             bp_error *err)
{
    const char *h = bp_table_get_meta(t, "model_hash");
    if (h && model_hash && strcmp(h, model_hash))
        return bp_error_set(err, BP_EMISMATCH,
                            "%s was measured on a different model (model_hash %s, this model %s); "
                            "use --resweep to measure again",
                            path, h, model_hash);
    return BP_OK;
}


/* The real-loss search evaluates candidate plans as tasks; offline, those
 * tasks run here, through the same driver and the same serialized params
 * as with workers, so both give the same plan byte for byte. */
static int run_through_driver(const bp_job_spec *spec, bp_plan **out, bp_error *err)
{
    char *json = bp_job_spec_to_json(spec, err);
    if (!json)
        return err ? err->code : BP_ENOMEM;
    bp_job_register_tasks();
    char *result = NULL;
    int rc = bp_job_run_local(json, strlen(json), spec->quiet, &result, err);
    free(json);
    if (rc == BP_OK)
        rc = bp_plan_from_string(result, "plan", out, err);
    free(result);
    return rc;
}

int bp_job_run(const bp_job_spec *spec, bp_plan **out, bp_error *err)
{
    *out = NULL;
    /* Block cells, KV error terms and the real-loss search are measured by
     * their own task kinds: run them through the driver. A table-only job
     * (no model) re-solves here. */
    int by_driver = bp__job_wants_real_loss(spec) ||
                    (spec->model_dir && spec->granularity == BP_JOB_GRANULARITY_BLOCK) ||
                    (spec->model_dir && spec->kv_context > 0 && spec->metric == BP_METRIC_DKL);
    if (by_driver && !spec->export_lp) {
        int rc = bp_job_spec_check(spec, err);
        return rc != BP_OK ? rc : run_through_driver(spec, out, err);
    }
    int rc = BP_OK;
    bp_model *model = NULL;
    bp_rules *rules = NULL;
    bp_selection *sel = NULL;
    bp_imatrix *imatrix = NULL;
    bp_table *table = NULL;
    bp__job_problem *prob = NULL;
    bp_plan *plan = NULL;
    bp_llama *llama = NULL;
    bp_calib *calib = NULL;
    bp_eval_reference *ref = NULL;
    bp_solution sol;
    memset(&sol, 0, sizeof sol);
    char model_hash[BP_HASH_HEX_LEN + 1] = "";
    bp_format menu[BP_MENU_MAX];
    size_t n_menu = 0;
    double t_start = bp_now_seconds();

    if (spec->budget.kind == BP_BUDGET_NONE)
        return bp_error_set(err, BP_EINVAL, "a budget is required (--budget-bits or --budget-bytes)");
    if ((rc = bp_job_spec_check(spec, err)) != BP_OK)
        return rc;
    if ((rc = bp_job_parse_formats(spec->formats, menu, BP_MENU_MAX, &n_menu, err)) != BP_OK)
        goto out;
    if (spec->rules_path && (rc = bp_rules_load(spec->rules_path, &rules, err)) != BP_OK)
        goto out;
    if (spec->imatrix_path && (rc = bp_imatrix_load(spec->imatrix_path, &imatrix, err)) != BP_OK)
        goto out;
    int reuse = spec->table_path && bp__file_exists(spec->table_path) && !spec->resweep;
    int have_calib = bp_calib_spec_given(&spec->calib);
    int metric = spec->metric >= 0 ? spec->metric
                 : (imatrix || have_calib ? BP_METRIC_HDIAG : BP_METRIC_MSE);
    /* Metric gptq needs GPTQ weights: natural order unless act-order was asked for. */
    bp_quant_method method =
        metric == BP_METRIC_GPTQ && !bp_method_is_gptq(spec->method) ? BP_METHOD_GPTQ : spec->method;
    if (!reuse) {
        const char *need = NULL;
        if (metric == BP_METRIC_HDIAG && !imatrix && !have_calib)
            need = "importance weights (--imatrix) or calibration data (--text, --tokens or --stats)";
        else if ((metric == BP_METRIC_HFULL || metric == BP_METRIC_GPTQ) && !have_calib)
            need = "calibration data (--text, --tokens or --stats)";
        else if (metric == BP_METRIC_DKL && !spec->calib.text_path && !spec->calib.tokens_path)
            need = "calibration tokens (--text or --tokens)";
        else if (bp_method_is_gptq(method) && !have_calib)
            need = "calibration data for GPTQ (--text, --tokens or --stats)";
        if (need) {
            rc = bp_error_set(err, BP_EINVAL, "metric '%s' with %s weights needs %s",
                              bp_table_metric_name(metric), bp_table_method_name(method), need);
            goto out;
        }
        if (imatrix && have_calib) {
            rc = bp_error_set(err, BP_EINVAL, "give --imatrix or calibration data, not both");
            goto out;
        }
    }

    if (spec->model_dir) {
        if ((rc = bp_model_open(spec->model_dir, &model, err)) != BP_OK)
            goto out;
        if (!spec->skip_model_hash && (rc = bp_model_content_hash(model, model_hash, err)) != BP_OK)
            goto out;
        if ((rc = bp_selection_build(model, rules, menu, n_menu, &sel, err)) != BP_OK)
            goto out;
        if (sel->n == 0) {
            rc = bp_error_set(err, BP_EINVAL, "%s: no tensor is selected for quantization", spec->model_dir);
            goto out;
        }
    }

    if (reuse) {
        if ((rc = bp_table_read(spec->table_path, &table, err)) != BP_OK)
            goto out;
        if ((rc = check_table_model(table, spec->table_path, model_hash[0] ? model_hash : NULL, err)) != BP_OK)
            goto out;
        if (!spec->quiet)
            fprintf(stderr, "bitplan: re-solving the existing table %s (no sweep)\n", spec->table_path);
    } else {
        if (!model) {
            rc = bp_error_set(err, BP_EINVAL, "--model is required unless --table names an existing table");
            goto out;
        }
        bp_measure_env env;
        memset(&env, 0, sizeof env);
        env.imatrix = imatrix;
        env.method = method;
        env.want_dkl = metric == BP_METRIC_DKL;
        if (have_calib) {
            if ((rc = bp_llama_new(model, &llama, err)) != BP_OK)
                goto out;
            env.cfg = bp_llama_get_config(llama);
            env.llama = llama;
            bp_calib_spec cs = spec->calib;
            cs.quiet = spec->quiet;
            if ((rc = bp_calib_open(&cs, llama, model_hash[0] ? model_hash : NULL, env.want_dkl, &calib,
                                    err)) != BP_OK)
                goto out;
            env.calib = calib;
            if (env.want_dkl) {
                const bp_tokens *kt = bp_calib_kl_tokens(calib);
                int64_t ctx = bp_calib_ctx(calib);
                int64_t nw = bp_eval_n_windows(bp_tokens_count(kt), ctx);
                if ((rc = bp_eval_reference_new(llama, bp_tokens_data(kt), bp_tokens_count(kt), ctx, 0, nw, 0,
                                                &ref, err)) != BP_OK)
                    goto out;
                env.ref = ref;
            }
        }
        if ((rc = measure_all(model, sel, &env, spec->quiet, &table, err)) != BP_OK)
            goto out;
        if (calib && ((rc = bp_table_set_meta(table, "calibration_id", bp_calib_id(calib), err)) ||
                      (rc = bp_table_set_meta(table, "calibration_source", bp_calib_source(calib), err))))
            goto out;
        if ((rc = bp_table_set_meta(table, "model", spec->model_dir, err)) != BP_OK)
            goto out;
        if (model_hash[0] && (rc = bp_table_set_meta(table, "model_hash", model_hash, err)) != BP_OK)
            goto out;
        if (spec->table_path && (rc = bp_table_write(table, spec->table_path, err)) != BP_OK)
            goto out;
    }
    double t_measured = bp_now_seconds();

    if ((rc = bp__job_problem_build(spec, table, sel, rules, model, metric, method, &prob, err)) != BP_OK)
        goto out;
    bp__solve_opts so = {bp__job_solver_for(spec, prob->prob), spec->time_limit_s, spec->export_lp};
    if ((rc = bp__job_solve(&so, prob->prob, prob->meta, &sol, err)) != BP_OK)
        goto out;
    double t_solved = bp_now_seconds();
    if ((rc = bp__job_make_plan(spec, table, sel, prob, &sol, model_hash, metric, &plan, err)) != BP_OK)
        goto out;
    bp_plan_set_timing(plan, "measure_s", t_measured - t_start, NULL);
    bp_plan_set_timing(plan, "solve_s", t_solved - t_measured, NULL);
    if ((rc = bp_plan_validate(plan, err)) != BP_OK)
        goto out;
    *out = plan;
    plan = NULL;
out:
    bp_solution_free(&sol);
    bp_plan_destroy(&plan);
    bp__job_problem_destroy(&prob);
    bp_table_destroy(&table);
    bp_eval_reference_destroy(&ref);
    bp_calib_destroy(&calib);
    bp_llama_destroy(&llama);
    bp_imatrix_destroy(&imatrix);
    bp_selection_destroy(&sel);
    bp_rules_destroy(&rules);
    bp_model_destroy(&model);
    return rc;
}
