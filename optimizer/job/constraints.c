/* Several constraints in one solve: the job's problem (tensors, tie groups,
 * KV layers; bits, bytes, latency and BOPS rows), the solver choice, the
 * infeasibility diagnosis and the plan's "search" section. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/cost.h"
#include "bitplan/format.h"
#include "bitplan/lagrange.h"
#include "bitplan/nsga2.h"
#include "job_internal.h"

/* ---- spec fields ------------------------------------------------------------ */

static const char *const search_names[] = {"default", "ilp", "lagrange", "nsga2", "evo"};

const char *bp_job_search_name(bp_job_search s)
{
    return (unsigned)s < sizeof search_names / sizeof *search_names ? search_names[s] : NULL;
}

int bp_job_search_from_name(const char *name)
{
    for (int i = 1; name && i < (int)(sizeof search_names / sizeof *search_names); i++)
        if (!strcmp(name, search_names[i]))
            return i;
    return -1;
}

int bp_job_parse_si(const char *text, const char *what, double *out, bp_error *err)
{
    static const char suffix[] = "KMGTP";
    if (!text || !*text)
        return bp_error_set(err, BP_EINVAL, "%s: empty value", what);
    char *end = NULL;
    double v = strtod(text, &end);
    if (end == text || text[0] == '-' || text[0] == '+' || !isfinite(v))
        return bp_error_set(err, BP_EINVAL, "%s: '%s' is not a number", what, text);
    if (*end) {
        const char *s = strchr(suffix, *end);
        if (!s || end[1])
            return bp_error_set(err, BP_EINVAL, "%s: '%s' has an unknown suffix (K, M, G, T, P)", what, text);
        for (const char *p = suffix; p <= s; p++)
            v *= 1000.0;
    }
    if (!(v > 0) || !isfinite(v) || v > 1e100)
        return bp_error_set(err, BP_EINVAL, "%s: '%s' must be a positive number", what, text);
    *out = v;
    return BP_OK;
}

static int ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && !strcmp(s + n - m, tail);
}

static int is_builtin_profile(const char *name)
{
    for (size_t i = 0; bp_hw_profile_builtin_name(i); i++)
        if (!strcmp(name, bp_hw_profile_builtin_name(i)))
            return 1;
    return 0;
}

/* A profile argument is a builtin name or a path; anything else is a typo
 * worth refusing before any work starts. */
static int check_profile_name(const char *flag, const char *name, bp_error *err)
{
    if (!*name)
        return bp_error_set(err, BP_EINVAL, "%s: empty profile", flag);
    if (is_builtin_profile(name) || strchr(name, '/') || ends_with(name, ".json") || ends_with(name, ".csv"))
        return BP_OK;
    char known[256] = "";
    for (size_t i = 0; bp_hw_profile_builtin_name(i); i++) {
        strncat(known, i ? ", " : "", sizeof known - strlen(known) - 1);
        strncat(known, bp_hw_profile_builtin_name(i), sizeof known - strlen(known) - 1);
    }
    return bp_error_set(err, BP_EINVAL,
                        "%s: unknown profile '%s' (builtins: %s; or a .json profile or .csv latency table)", flag,
                        name, known);
}

int bp_job_spec_check(const bp_job_spec *s, bp_error *err)
{
    int has_bytes = s->budget.kind == BP_BUDGET_BYTES || s->budget_bytes > 0;
    if (s->budget_bytes > 0 && s->budget.kind != BP_BUDGET_BITS)
        return bp_error_set(err, BP_EINVAL, "a second bytes budget needs --budget-bits as the first");
    if (isnan(s->latency_us) || s->latency_us < 0 || isinf(s->latency_us))
        return bp_error_set(err, BP_EINVAL, "--latency-us must be a positive number of microseconds");
    if (s->latency_us > 0 && !s->profile)
        return bp_error_set(err, BP_EINVAL, "--latency-us needs --profile NAME|FILE.json|FILE.csv");
    if (s->profile && !(s->latency_us > 0))
        return bp_error_set(err, BP_EINVAL, "--profile is only used with --latency-us");
    int rc;
    if (s->profile && (rc = check_profile_name("--profile", s->profile, err)) != BP_OK)
        return rc;
    if (s->profile_fallback) {
        if (!s->profile || !ends_with(s->profile, ".csv"))
            return bp_error_set(err, BP_EINVAL, "--profile-fallback is only used with a .csv latency table");
        if (ends_with(s->profile_fallback, ".csv"))
            return bp_error_set(err, BP_EINVAL, "--profile-fallback must be a roofline profile, not a table");
        if ((rc = check_profile_name("--profile-fallback", s->profile_fallback, err)) != BP_OK)
            return rc;
    }
    if (s->phase != BP_PHASE_DECODE && s->phase != BP_PHASE_PREFILL)
        return bp_error_set(err, BP_EINVAL, "--phase must be decode or prefill");
    if (s->batch < 0 || s->batch > (1L << 30))
        return bp_error_set(err, BP_EINVAL, "--batch must be in 1..2^30");
    if ((s->batch > 0 || s->phase != BP_PHASE_DECODE) && !(s->latency_us > 0))
        return bp_error_set(err, BP_EINVAL, "--phase and --batch are only used with --latency-us");
    if (isnan(s->bops) || s->bops < 0 || isinf(s->bops))
        return bp_error_set(err, BP_EINVAL, "--bops must be a positive number");
    if (s->kv_context < 0 || s->kv_context > (1L << 30) || s->kv_batch < 0 || s->kv_batch > (1L << 30))
        return bp_error_set(err, BP_EINVAL, "--kv-context and --kv-batch must be in 1..2^30");
    if (s->kv_batch > 0 && s->kv_context == 0)
        return bp_error_set(err, BP_EINVAL, "--kv-batch needs --kv-context");
    if (s->kv_format < 0 || s->kv_format >= BP_KV_FORMAT_COUNT)
        return bp_error_set(err, BP_EINVAL, "--kv-format must be f16, fp8_e4m3, int8 or int4");
    if (s->kv_format != BP_KV_F16 && s->kv_context == 0)
        return bp_error_set(err, BP_EINVAL, "--kv-format needs --kv-context");
    if (s->kv_context > 0 && !has_bytes)
        return bp_error_set(err, BP_EINVAL, "--kv-context needs --budget-bytes (the KV cache counts in bytes)");
    if ((unsigned)s->search > BP_JOB_SEARCH_EVO)
        return bp_error_set(err, BP_EINVAL, "--search must be ilp, lagrange, nsga2 or evo");
    if (s->solver == BP_JOB_SOLVER_DP && s->search != BP_JOB_SEARCH_DEFAULT)
        return bp_error_set(err, BP_EINVAL, "--solver dp and --search %s exclude each other",
                            bp_job_search_name(s->search));
    if (s->granularity != BP_JOB_GRANULARITY_TENSOR && s->granularity != BP_JOB_GRANULARITY_BLOCK)
        return bp_error_set(err, BP_EINVAL, "--granularity must be tensor or block");
    if (s->block_axis != BP_BLOCK_AXIS_COLS && s->block_axis != BP_BLOCK_AXIS_ROWS)
        return bp_error_set(err, BP_EINVAL, "--block-axis must be rows or cols");
    if (s->block_size < 0 || s->block_size > (1L << 30))
        return bp_error_set(err, BP_EINVAL, "--block-size must be in 1..2^30");
    if (s->granularity == BP_JOB_GRANULARITY_BLOCK && s->block_size == 0)
        return bp_error_set(err, BP_EINVAL, "--granularity block needs --block-size N");
    if (s->granularity == BP_JOB_GRANULARITY_TENSOR && (s->block_size || s->block_axis))
        return bp_error_set(err, BP_EINVAL, "--block-size and --block-axis need --granularity block");
    if (!bp_table_method_name(s->method))
        return bp_error_set(err, BP_EINVAL, "--method must be rtn, gptq or gptq_act");
    /* Apply quantizes cols-axis blocks in one natural-order GPTQ pass across
     * them; act-order has no such form. */
    if (s->method == BP_METHOD_GPTQ_ACT && s->granularity == BP_JOB_GRANULARITY_BLOCK &&
        s->block_axis == BP_BLOCK_AXIS_COLS)
        return bp_error_set(err, BP_EINVAL,
                            "--method gptq_act cannot be combined with --granularity block --block-axis cols "
                            "(cols-axis blocks are quantized in natural column order): use --method gptq or "
                            "--block-axis rows");
    if (s->evo_generations < -1 || s->evo_generations > 100000)
        return bp_error_set(err, BP_EINVAL, "--evo-generations must be in 0..100000");
    if (s->evo_lambda < 0 || s->evo_lambda > 4096 || s->evo_promote < 0 || s->evo_promote > 4096)
        return bp_error_set(err, BP_EINVAL, "--evo-lambda and --evo-promote must be in 1..4096");
    if (s->evo_promote > (s->evo_lambda ? s->evo_lambda : BP_JOB_EVO_LAMBDA))
        return bp_error_set(err, BP_EINVAL, "--evo-promote cannot exceed --evo-lambda");
    if (s->evo_seed < 0 || s->evo_windows < 0 || s->evo_windows > (1L << 30))
        return bp_error_set(err, BP_EINVAL, "--evo-seed and --evo-windows must be positive");
    if (s->search == BP_JOB_SEARCH_EVO && (!s->model_dir || (!s->calib.text_path && !s->calib.tokens_path)))
        return bp_error_set(err, BP_EINVAL,
                            "--search evo needs the model and calibration tokens (--text or --tokens): its "
                            "objective is the model's KL on held-out calibration windows");
    return BP_OK;
}

int bp__job_wants_real_loss(const bp_job_spec *s)
{
    if (s->search == BP_JOB_SEARCH_EVO)
        return 1;
    /* The default is the strongest search the inputs allow: with a model
     * and calibration tokens, the real loss can be measured. */
    return s->search == BP_JOB_SEARCH_DEFAULT && s->solver != BP_JOB_SOLVER_DP && s->model_dir &&
           (s->calib.text_path || s->calib.tokens_path);
}

/* ---- solver kinds -------------------------------------------------------------- */

static const char *const solver_names[] = {"ilp", "dp", "lagrange", "nsga2"};

const char *bp__solver_kind_name(bp__solver_kind k)
{
    return (unsigned)k < 4 ? solver_names[k] : "?";
}

int bp__solver_kind_from_name(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (name && !strcmp(name, solver_names[i]))
            return i;
    return -1;
}

bp__solver_kind bp__job_solver_for(const bp_job_spec *spec, const bp_problem *prob)
{
    /* Block-level problems reach 10^5..10^7 items, beyond an exact ILP:
     * the default then solves by Lagrangian relaxation (with its gap). */
    if (spec->search == BP_JOB_SEARCH_DEFAULT && spec->solver != BP_JOB_SOLVER_DP && prob &&
        prob->n_items > BP_JOB_ILP_MAX_ITEMS)
        return BP__SOLVE_LAGRANGE;
    return bp__job_solver_kind(spec);
}

bp__solver_kind bp__job_solver_kind(const bp_job_spec *spec)
{
    switch (spec->search) {
    case BP_JOB_SEARCH_LAGRANGE: return BP__SOLVE_LAGRANGE;
    case BP_JOB_SEARCH_NSGA2: return BP__SOLVE_NSGA2;
    case BP_JOB_SEARCH_DEFAULT: return spec->solver == BP_JOB_SOLVER_DP ? BP__SOLVE_DP : BP__SOLVE_ILP;
    default: return BP__SOLVE_ILP; /* ilp, and the seed of evo */
    }
}

/* ---- the problem ------------------------------------------------------------------ */

enum ckind { C_BITS, C_BYTES, C_LATENCY, C_BOPS };

/* What turns a (tensor, format) cell into its cost under each row. */
typedef struct cost_model {
    size_t n;
    enum ckind kind[BP_MAX_CONSTRAINTS];
    bp_hw_profile *hw;          /* roofline latency */
    bp_latency_table *lt;       /* measured latency */
    bp_hw_profile *fallback;    /* roofline for entries lt lacks */
    bp_cost_phase phase;
    int64_t batch;
} cost_model;

static void cost_model_free(cost_model *c)
{
    bp_hw_profile_destroy(&c->hw);
    bp_hw_profile_destroy(&c->fallback);
    bp_latency_table_destroy(&c->lt);
}

static int cost_model_open(const bp_job_spec *spec, cost_model *c, bp_error *err)
{
    memset(c, 0, sizeof *c);
    if (spec->budget.kind == BP_BUDGET_BITS)
        c->kind[c->n++] = C_BITS;
    if (spec->budget.kind == BP_BUDGET_BYTES || spec->budget_bytes > 0)
        c->kind[c->n++] = C_BYTES;
    if (spec->latency_us > 0)
        c->kind[c->n++] = C_LATENCY;
    if (spec->bops > 0)
        c->kind[c->n++] = C_BOPS;
    if (c->n == 0)
        return bp_error_set(err, BP_EINVAL, "a budget is required (--budget-bits or --budget-bytes)");
    c->phase = (bp_cost_phase)spec->phase;
    c->batch = spec->batch > 0 ? spec->batch : 1;
    int rc = BP_OK;
    if (spec->latency_us > 0) {
        if (ends_with(spec->profile, ".csv")) {
            rc = bp_latency_table_load(spec->profile, &c->lt, err);
            if (rc == BP_OK && spec->profile_fallback)
                rc = bp_hw_profile_open(spec->profile_fallback, &c->fallback, err);
        } else {
            rc = bp_hw_profile_open(spec->profile, &c->hw, err);
        }
        if (rc != BP_OK)
            bp_error_prefix(err, "--profile");
    }
    return rc;
}

static const char *kind_name(enum ckind k)
{
    static const char *const n[] = {"bits", "bytes", "latency_us", "bops"};
    return n[k];
}

/* Costs of one weight cell under every row. */
static int weight_costs(const cost_model *c, const char *tensor, const bp_format *f, uint64_t bytes,
                        int64_t rows, int64_t cols, double *out, bp_error *err)
{
    for (size_t j = 0; j < c->n; j++) {
        if (c->kind[j] == C_BITS || c->kind[j] == C_BYTES) {
            out[j] = (double)bytes;
            continue;
        }
        if (rows <= 0 || cols <= 0)
            return bp_error_set(err, BP_EINVAL, "the %s constraint needs each tensor's shape: '%s' has none",
                                kind_name(c->kind[j]), tensor);
        int rc;
        if (c->kind[j] == C_LATENCY) {
            if (c->hw)
                rc = bp_cost_latency_us(c->hw, f, rows, cols, c->phase, c->batch, &out[j], err);
            else
                rc = bp_cost_latency_lookup_us(c->lt, c->fallback, f, rows, cols, c->phase, c->batch, &out[j],
                                               NULL, err);
        } else {
            uint64_t b = 0;
            rc = bp_cost_bops(f, rows, cols, 1, 0, &b, err);
            out[j] = (double)b;
        }
        if (rc != BP_OK)
            return bp_error_prefix(err, "tensor '%s' / %s", tensor, f->name);
    }
    return BP_OK;
}

void bp__job_problem_destroy(bp__job_problem **jp)
{
    if (!jp || !*jp)
        return;
    bp_problem_destroy(&(*jp)->prob);
    free((*jp)->tensor);
    free((*jp)->rows);
    free((*jp)->cols);
    free((*jp)->member_start);
    free((*jp)->member);
    free((*jp)->item_block);
    free(*jp);
    *jp = NULL;
}

/* N of a name "model.layers.N.<rest>", else -1. */
static long layer_of(const char *name)
{
    static const char prefix[] = "model.layers.";
    if (strncmp(name, prefix, sizeof prefix - 1))
        return -1;
    const char *p = name + sizeof prefix - 1;
    char *end = NULL;
    if (*p < '0' || *p > '9')
        return -1;
    long n = strtol(p, &end, 10);
    return *end == '.' ? n : -1;
}

static int is_kv_name(const char *name)
{
    return layer_of(name) >= 0 && !strcmp(strchr(name + 13, '.'), ".kv_cache");
}

static int allowed_in(const bp_selected_tensor *st, const char *format)
{
    if (!st)
        return 1;
    for (size_t k = 0; k < st->n_formats; k++)
        if (!strcmp(st->formats[k].name, format))
            return 1;
    return 0;
}

/* The weight tensors, in selection order or the table's first appearance
 * (KV rows excluded), with their shapes. */
static int list_tensors(bp__job_problem *jp, const bp_table *table, const bp_selection *sel, bp_error *err)
{
    size_t nrows = bp_table_count(table);
    size_t cap = sel ? sel->n : nrows;
    jp->tensor = calloc(cap ? cap : 1, sizeof *jp->tensor);
    jp->rows = calloc(cap ? cap : 1, sizeof *jp->rows);
    jp->cols = calloc(cap ? cap : 1, sizeof *jp->cols);
    if (!jp->tensor || !jp->rows || !jp->cols)
        return bp_error_set(err, BP_ENOMEM, "problem: out of memory");
    if (sel) {
        for (size_t i = 0; i < sel->n; i++) {
            jp->tensor[i] = sel->tensors[i].name;
            jp->rows[i] = sel->tensors[i].rows;
            jp->cols[i] = sel->tensors[i].cols;
        }
        jp->n_tensors = sel->n;
        jp->params = sel->total_params;
        return BP_OK;
    }
    for (size_t r = 0; r < nrows; r++) {
        bp_table_row row;
        bp_table_get_row(table, r, &row);
        if (is_kv_name(row.tensor))
            continue;
        int seen = 0;
        /* Tables list a tensor's rows together: the last name first keeps
         * this linear in practice. */
        for (size_t k = jp->n_tensors; k-- > 0;)
            if (!strcmp(jp->tensor[k], row.tensor)) {
                seen = 1;
                break;
            }
        if (seen)
            continue;
        jp->tensor[jp->n_tensors] = row.tensor;
        jp->rows[jp->n_tensors] = row.rows;
        jp->cols[jp->n_tensors] = row.cols;
        jp->n_tensors++;
        jp->params += row.params ? row.params : (uint64_t)row.rows * (uint64_t)row.cols;
    }
    return BP_OK;
}

/* Items: one per tensor, except that tensors of one layer matched by the
 * same tie entry form one item, placed at its first member. */
static int group_items(bp__job_problem *jp, const bp_rules *rules, size_t *n_items, bp_error *err)
{
    size_t n = jp->n_tensors;
    size_t *item_of = calloc(n ? n : 1, sizeof *item_of);
    long *tie = calloc(n ? n : 1, sizeof *tie), *layer = calloc(n ? n : 1, sizeof *layer);
    size_t *first = calloc(n ? n : 1, sizeof *first); /* item -> first tensor */
    jp->member_start = calloc(n + 1, sizeof *jp->member_start);
    jp->member = calloc(n ? n : 1, sizeof *jp->member);
    int rc = BP_OK;
    size_t items = 0;
    if (!item_of || !tie || !layer || !first || !jp->member_start || !jp->member) {
        rc = bp_error_set(err, BP_ENOMEM, "problem: out of memory");
        goto out;
    }
    for (size_t t = 0; t < n; t++) {
        layer[t] = layer_of(jp->tensor[t]);
        tie[t] = -1;
        if (rules && layer[t] >= 0 && (rc = bp_rules_tie_find(rules, jp->tensor[t], &tie[t], err)) != BP_OK)
            goto out;
        size_t it = items;
        if (tie[t] >= 0)
            for (size_t k = 0; k < items; k++) {
                size_t f = first[k];
                if (tie[f] == tie[t] && layer[f] == layer[t]) {
                    it = k;
                    break;
                }
            }
        if (it == items)
            first[items++] = t;
        item_of[t] = it;
        jp->member_start[it + 1]++;
    }
    for (size_t i = 0; i < items; i++)
        jp->member_start[i + 1] += jp->member_start[i];
    /* Members in tensor order, which fixes the order of every sum. */
    size_t *fill = first; /* reused as fill cursors */
    for (size_t i = 0; i < items; i++)
        fill[i] = jp->member_start[i];
    for (size_t t = 0; t < n; t++)
        jp->member[fill[item_of[t]]++] = t;
    *n_items = items;
out:
    free(item_of);
    free(tie);
    free(layer);
    free(first);
    return rc;
}

void bp__job_block_id(char *buf, size_t cap, int axis, int64_t size, int64_t index)
{
    snprintf(buf, cap, "%s:%lld:%lld", axis == BP_BLOCK_AXIS_ROWS ? "rows" : "cols", (long long)size,
             (long long)index);
}

int64_t bp__job_block_count(int axis, int64_t size, int64_t rows, int64_t cols)
{
    int64_t len = axis == BP_BLOCK_AXIS_ROWS ? rows : cols;
    if (size <= 0 || len <= 0 || len % size)
        return 0;
    return len / size;
}

/* Block granularity: one item per block of each tensor, tensor-major and
 * blocks in order (so a tensor's items are consecutive), or one item for a
 * tensor the block size does not divide. */
static int group_blocks(bp__job_problem *jp, const bp_job_spec *spec, const bp_rules *rules, size_t *n_items,
                        bp_error *err)
{
    if (rules && bp_rules_tie_count(rules) > 0)
        return bp_error_set(err, BP_EUNSUPPORTED, "ties and --granularity block cannot be combined");
    size_t items = 0;
    for (size_t t = 0; t < jp->n_tensors; t++) {
        int64_t nb = bp__job_block_count(spec->block_axis, spec->block_size, jp->rows[t], jp->cols[t]);
        items += nb > 0 ? (size_t)nb : 1;
    }
    jp->member_start = calloc(items + 1, sizeof *jp->member_start);
    jp->member = calloc(items ? items : 1, sizeof *jp->member);
    jp->item_block = calloc(items ? items : 1, sizeof *jp->item_block);
    if (!jp->member_start || !jp->member || !jp->item_block)
        return bp_error_set(err, BP_ENOMEM, "problem: out of memory");
    size_t i = 0;
    for (size_t t = 0; t < jp->n_tensors; t++) {
        int64_t nb = bp__job_block_count(spec->block_axis, spec->block_size, jp->rows[t], jp->cols[t]);
        for (int64_t b = 0; b < (nb > 0 ? nb : 1); b++, i++) {
            jp->member[i] = t;
            jp->member_start[i + 1] = i + 1;
            jp->item_block[i] = nb > 0 ? b : -1;
        }
    }
    *n_items = items;
    return BP_OK;
}

/* The metric that apportions a tensor's dkl among its blocks: the block
 * rows' most faithful layer-local error present. */
static int block_share_metric(const bp_table *table)
{
    static const int order[] = {BP_METRIC_GPTQ, BP_METRIC_HFULL, BP_METRIC_HDIAG, BP_METRIC_MSE};
    for (size_t k = 0; k < sizeof order / sizeof *order; k++)
        if (bp_table_has_metric(table, (bp_metric)order[k]))
            return order[k];
    return BP_METRIC_MSE;
}

/* One block of a tensor: its rows of the table. With metric dkl (measured
 * per tensor only) a block's error is the tensor's dkl for the format
 * times the block's share of the tensor's layer-local error for it, so the
 * blocks of a uniform map add up to the tensor's dkl exactly
 * (docs/blocks.md, "Errors at block level"). */
static int add_block_item(bp__job_problem *jp, size_t item, const bp_job_spec *spec, const bp_table *table,
                          const bp_selection *sel, const cost_model *cm, int metric, bp_quant_method method,
                          bp_error *err)
{
    bp_problem *p = jp->prob;
    size_t t = jp->member[jp->member_start[item]];
    int64_t b = jp->item_block[item];
    int64_t nb = bp__job_block_count(spec->block_axis, spec->block_size, jp->rows[t], jp->cols[t]);
    char id[64], name[600];
    bp__job_block_id(id, sizeof id, spec->block_axis, spec->block_size, b);
    snprintf(name, sizeof name, "%s#%s", jp->tensor[t], id);
    int rc = bp_problem_add_item(p, name, err);
    if (rc != BP_OK)
        return rc;
    int share = metric == BP_METRIC_DKL ? block_share_metric(table) : metric;
    const bp_selected_tensor *st = sel ? &sel->tensors[t] : NULL;
    size_t nrows = bp_table_count(table), added = 0;
    for (size_t r = 0; r < nrows; r++) {
        bp_table_row row;
        bp_table_get_row(table, r, &row);
        if (strcmp(row.tensor, jp->tensor[t]) || !row.block || strcmp(row.block, id) || row.method != method ||
            isnan(row.metric[share]) || !allowed_in(st, row.format))
            continue;
        double e = row.metric[metric];
        if (metric == BP_METRIC_DKL) {
            long whole = bp_table_find(table, jp->tensor[t], NULL, row.format, method);
            if (whole < 0)
                continue;
            bp_table_row wr;
            bp_table_get_row(table, (size_t)whole, &wr);
            if (isnan(wr.metric[BP_METRIC_DKL]))
                continue;
            double total = 0.0;
            int complete = 1;
            for (int64_t k = 0; k < nb && complete; k++) {
                char kid[64];
                bp__job_block_id(kid, sizeof kid, spec->block_axis, spec->block_size, k);
                long kr = bp_table_find(table, jp->tensor[t], kid, row.format, method);
                bp_table_row krow;
                complete = kr >= 0 && (bp_table_get_row(table, (size_t)kr, &krow), !isnan(krow.metric[share]));
                if (complete)
                    total += krow.metric[share];
            }
            if (!complete)
                continue;
            e = wr.metric[BP_METRIC_DKL] * (total > 0.0 ? row.metric[share] / total : 1.0 / (double)nb);
        }
        if (isnan(e))
            continue;
        bp_format f;
        if (bp_format_parse(row.format, &f, NULL) != BP_OK)
            continue;
        double c[BP_MAX_CONSTRAINTS];
        if ((rc = weight_costs(cm, name, &f, row.bytes, row.rows, row.cols, c, err)) != BP_OK)
            return rc;
        if ((rc = bp_problem_add_choice(p, (int32_t)r, e, c, err)) != BP_OK)
            return rc;
        added++;
    }
    if (added)
        return BP_OK;
    return bp_error_set(err, BP_EINVAL, "block %s of tensor '%s' has no measured '%s' value for any allowed format",
                        id, jp->tensor[t], bp_table_metric_name((bp_metric)share));
}

/* A member's row for a format, usable for this job, or -1. */
static long member_row(const bp_table *table, const char *tensor, const char *format, bp_quant_method method,
                       int metric, const bp_selected_tensor *st)
{
    long r = bp_table_find(table, tensor, NULL, format, method);
    if (r < 0)
        return -1;
    bp_table_row row;
    bp_table_get_row(table, (size_t)r, &row);
    if (isnan(row.metric[metric]) || !allowed_in(st, format))
        return -1;
    return r;
}

static int add_weight_item(bp__job_problem *jp, size_t item, const bp_table *table, const bp_selection *sel,
                           const cost_model *cm, int metric, bp_quant_method method, bp_error *err)
{
    bp_problem *p = jp->prob;
    size_t m0 = jp->member[jp->member_start[item]];
    size_t nm = jp->member_start[item + 1] - jp->member_start[item];
    int rc = bp_problem_add_item(p, jp->tensor[m0], err);
    if (rc != BP_OK)
        return rc;
    size_t nrows = bp_table_count(table), added = 0;
    for (size_t r = 0; r < nrows; r++) {
        bp_table_row row;
        bp_table_get_row(table, r, &row);
        if (strcmp(row.tensor, jp->tensor[m0]) || (row.block && row.block[0]) || row.method != method ||
            isnan(row.metric[metric]) || !allowed_in(sel ? &sel->tensors[m0] : NULL, row.format))
            continue;
        double err_sum = 0.0, cost_sum[BP_MAX_CONSTRAINTS] = {0};
        int usable = 1;
        for (size_t k = 0; k < nm && usable; k++) {
            size_t t = jp->member[jp->member_start[item] + k];
            const bp_selected_tensor *st = sel ? &sel->tensors[t] : NULL;
            long mr = k == 0 ? (long)r : member_row(table, jp->tensor[t], row.format, method, metric, st);
            if (mr < 0) {
                usable = 0;
                break;
            }
            bp_table_row mrow;
            bp_table_get_row(table, (size_t)mr, &mrow);
            if (mrow.rows <= 0 || mrow.cols <= 0) {
                mrow.rows = jp->rows[t];
                mrow.cols = jp->cols[t];
            }
            if ((rc = bp__job_check_row_bytes(&mrow, err)) != BP_OK)
                return rc;
            bp_format f;
            bp_format_parse(mrow.format, &f, NULL);
            double c[BP_MAX_CONSTRAINTS];
            if ((rc = weight_costs(cm, jp->tensor[t], &f, mrow.bytes, mrow.rows, mrow.cols, c, err)) != BP_OK)
                return rc;
            err_sum += mrow.metric[metric];
            for (size_t j = 0; j < cm->n; j++)
                cost_sum[j] += c[j];
        }
        if (!usable)
            continue;
        if ((rc = bp_problem_add_choice(p, (int32_t)r, err_sum, cost_sum, err)) != BP_OK)
            return rc;
        added++;
    }
    if (added)
        return BP_OK;
    if (nm == 1)
        return bp_error_set(err, BP_EINVAL,
                            "tensor '%s' has no measured '%s' value with %s weights for any allowed format in the table",
                            jp->tensor[m0], bp_table_metric_name((bp_metric)metric), bp_table_method_name(method));
    char names[600] = "";
    for (size_t k = 0; k < nm; k++) {
        strncat(names, k ? ", " : "", sizeof names - strlen(names) - 1);
        strncat(names, jp->tensor[jp->member[jp->member_start[item] + k]], sizeof names - strlen(names) - 1);
    }
    return bp_error_set(err, BP_EINVAL,
                        "tie: tensors %s have no common allowed format with a measured '%s' value", names,
                        bp_table_metric_name((bp_metric)metric));
}

static int kv_format_of_row(const char *name, bp_kv_format *out)
{
    if (strncmp(name, "kv_", 3))
        return -1;
    return bp_kv_format_parse(name + 3, out, NULL) == BP_OK ? 0 : -1;
}

static int kv_shape_of(const bp_model *model, bp_kv_shape *shape, bp_error *err)
{
    if (!model)
        return bp_error_set(err, BP_EINVAL, "--kv-context needs the model (--model) for the KV cache shape");
    bp_llama_config cfg;
    int rc = bp_llama_config_parse(bp_model_config_text(model), "config.json", &cfg, err);
    if (rc != BP_OK)
        return rc;
    shape->n_layers = cfg.n_layers;
    shape->n_kv_heads = cfg.n_kv_heads;
    shape->head_dim = cfg.head_dim;
    return BP_OK;
}

/* One item per layer from the table's KV rows (when it has any), else the
 * fixed KV format's bytes as the bytes row's offset. */
static int add_kv(bp__job_problem *jp, const bp_job_spec *spec, const bp_table *table, const bp_model *model,
                  const cost_model *cm, int metric, size_t bytes_row, bp_error *err)
{
    bp_kv_shape shape;
    int rc = kv_shape_of(model, &shape, err);
    if (rc != BP_OK)
        return rc;
    int64_t batch = spec->kv_batch > 0 ? spec->kv_batch : 1;
    jp->has_kv = 1;
    jp->kv_shape = shape;
    jp->kv_fixed = (bp_kv_format)spec->kv_format;
    size_t nrows = bp_table_count(table);
    int have_rows = 0;
    for (size_t r = 0; r < nrows && !have_rows; r++) {
        bp_table_row row;
        bp_table_get_row(table, r, &row);
        have_rows = is_kv_name(row.tensor);
    }
    if (!have_rows) {
        uint64_t b = 0;
        if ((rc = bp_kv_bytes(&shape, (bp_kv_format)spec->kv_format, spec->kv_context, batch, &b, err)) != BP_OK)
            return rc;
        jp->meta[bytes_row].offset = (double)b * (double)shape.n_layers;
        return BP_OK;
    }
    for (int64_t l = 0; l < shape.n_layers; l++) {
        char name[64];
        snprintf(name, sizeof name, "model.layers.%lld.kv_cache", (long long)l);
        if ((rc = bp_problem_add_item(jp->prob, name, err)) != BP_OK)
            return rc;
        size_t added = 0;
        for (size_t r = 0; r < nrows; r++) {
            bp_table_row row;
            bp_table_get_row(table, r, &row);
            if (strcmp(row.tensor, name) || isnan(row.metric[metric]))
                continue;
            bp_kv_format kf;
            if (kv_format_of_row(row.format, &kf))
                return bp_error_set(err, BP_EFORMAT,
                                    "table row '%s' / '%s': not a KV format (kv_f16, kv_fp8_e4m3, kv_int8, kv_int4)",
                                    name, row.format);
            uint64_t want = 0;
            if ((rc = bp_kv_bytes(&shape, kf, spec->kv_context, batch, &want, err)) != BP_OK)
                return rc;
            if (want != row.bytes)
                return bp_error_set(err, BP_EMISMATCH,
                                    "table row '%s' / '%s': bytes %llu, but the KV cache at context %lld, batch %lld "
                                    "takes %llu (measured for another context or batch?)",
                                    name, row.format, (unsigned long long)row.bytes, (long long)spec->kv_context,
                                    (long long)batch, (unsigned long long)want);
            double c[BP_MAX_CONSTRAINTS] = {0};
            c[bytes_row] = (double)row.bytes;
            if ((rc = bp_problem_add_choice(jp->prob, (int32_t)r, row.metric[metric], c, err)) != BP_OK)
                return rc;
            added++;
        }
        if (!added)
            return bp_error_set(err, BP_EINVAL, "the table has KV rows but none with a '%s' value for '%s'",
                                bp_table_metric_name((bp_metric)metric), name);
    }
    (void)cm;
    return BP_OK;
}

static int set_rows(bp__job_problem *jp, const bp_job_spec *spec, const cost_model *cm, bp_error *err)
{
    for (size_t j = 0; j < cm->n; j++) {
        bp__constraint_meta *m = &jp->meta[j];
        double cap = 0;
        m->scale = 1.0;
        switch (cm->kind[j]) {
        case C_BITS: {
            uint64_t c = 0;
            if (jp->params == 0)
                return bp_error_set(err, BP_EINVAL,
                                    "a bits budget needs each tensor's size: the table rows have no rows/cols/params");
            int rc = bp_budget_capacity(&spec->budget, jp->params, &c, err);
            if (rc != BP_OK)
                return rc;
            cap = (double)c;
            m->scale = 8.0 / (double)jp->params;
            snprintf(m->unit, sizeof m->unit, "bits/weight");
            break;
        }
        case C_BYTES:
            cap = (double)(spec->budget.kind == BP_BUDGET_BYTES ? spec->budget.bytes : spec->budget_bytes) -
                  m->offset;
            snprintf(m->unit, sizeof m->unit, "B");
            break;
        case C_LATENCY:
            cap = spec->latency_us;
            snprintf(m->unit, sizeof m->unit, "us");
            break;
        case C_BOPS:
            cap = spec->bops;
            snprintf(m->unit, sizeof m->unit, "BOPS");
            break;
        }
        int rc = bp_problem_set_constraint(jp->prob, j, kind_name(cm->kind[j]), cap, err);
        if (rc != BP_OK)
            return rc;
    }
    return BP_OK;
}

int bp__job_problem_build(const bp_job_spec *spec, const bp_table *table, const bp_selection *sel,
                          const bp_rules *rules, const bp_model *model, int metric, bp_quant_method method,
                          bp__job_problem **out, bp_error *err)
{
    *out = NULL;
    if (!bp_table_has_metric(table, (bp_metric)metric))
        return bp_error_set(err, BP_EINVAL, "the table has no '%s' column", bp_table_metric_name((bp_metric)metric));
    cost_model cm;
    int rc = cost_model_open(spec, &cm, err);
    bp__job_problem *jp = calloc(1, sizeof *jp);
    size_t n_items = 0;
    if (rc != BP_OK)
        goto out;
    if (!jp || !(jp->prob = bp_problem_new(cm.n))) {
        rc = bp_error_set(err, BP_ENOMEM, "problem: out of memory");
        goto out;
    }
    int blocked = spec->granularity == BP_JOB_GRANULARITY_BLOCK;
    if ((rc = list_tensors(jp, table, sel, err)) != BP_OK ||
        (rc = blocked ? group_blocks(jp, spec, rules, &n_items, err) : group_items(jp, rules, &n_items, err)) !=
            BP_OK)
        goto out;
    for (size_t i = 0; i < n_items; i++)
        if ((rc = blocked && jp->item_block[i] >= 0
                      ? add_block_item(jp, i, spec, table, sel, &cm, metric, method, err)
                      : add_weight_item(jp, i, table, sel, &cm, metric, method, err)) != BP_OK)
            goto out;
    jp->n_weight_items = n_items;
    if (spec->kv_context > 0) {
        size_t bytes_row = spec->budget.kind == BP_BUDGET_BITS ? 1 : 0;
        if ((rc = add_kv(jp, spec, table, model, &cm, metric, bytes_row, err)) != BP_OK)
            goto out;
    }
    if ((rc = set_rows(jp, spec, &cm, err)) != BP_OK)
        goto out;
    *out = jp;
    jp = NULL;
out:
    cost_model_free(&cm);
    bp__job_problem_destroy(&jp);
    return rc;
}

/* ---- solve and diagnosis ------------------------------------------------------------ */

static void fmt_value(char *buf, size_t cap, double raw, const bp__constraint_meta *m)
{
    double v = (raw + m->offset) * m->scale;
    if (!strcmp(m->unit, "B"))
        snprintf(buf, cap, "%.0f B", v);
    else
        snprintf(buf, cap, "%.6g %s", v, m->unit);
}

static void append(char *msg, size_t cap, const char *text)
{
    strncat(msg, text, cap - strlen(msg) - 1);
}

int bp__job_check_alone(const bp_problem *prob, const bp__constraint_meta *meta, bp_error *err)
{
    char msg[BP_ERROR_MSG_MAX] = "infeasible: ";
    int bad = 0;
    for (size_t j = 0; j < prob->n_constraints; j++) {
        double need = bp_problem_min_cost(prob, j);
        if (!(need > prob->capacity[j]))
            continue;
        char cap[64], min[64], part[256];
        fmt_value(cap, sizeof cap, prob->capacity[j], &meta[j]);
        fmt_value(min, sizeof min, need, &meta[j]);
        snprintf(part, sizeof part, "%s%s <= %s is below the smallest achievable %s", bad ? "; " : "",
                 prob->constraint_name[j], cap, min);
        append(msg, sizeof msg, part);
        bad++;
    }
    return bad ? bp_error_set(err, BP_EINFEASIBLE, "%s", msg) : BP_OK;
}

static int solve_ilp(const bp_problem *p, double tlim, const char *export_lp, bp_solution *sol, bp_error *err)
{
    bp_ilp_options o;
    bp_ilp_options_default(&o);
    if (tlim > 0)
        o.time_limit_s = tlim;
    o.export_lp = export_lp;
    return bp_solve_ilp(p, &o, sol, err);
}

/* The smallest total of row j with every other row holding: an ILP whose
 * objective is row j's cost. *found = 0 when the others cannot hold. */
static int min_subject_to_others(const bp_problem *p, size_t j, double tlim, double *value, int *found,
                                 bp_error *err)
{
    *found = 0;
    bp_problem *q = bp_problem_new(p->n_constraints - 1);
    bp_solution s;
    memset(&s, 0, sizeof s);
    int rc = q ? BP_OK : bp_error_set(err, BP_ENOMEM, "out of memory");
    for (size_t i = 0; i < p->n_items && rc == BP_OK; i++) {
        rc = bp_problem_add_item(q, p->item_name[i], err);
        for (size_t k = p->item_start[i]; k < p->item_start[i + 1] && rc == BP_OK; k++) {
            double c[BP_MAX_CONSTRAINTS];
            size_t n = 0;
            for (size_t r = 0; r < p->n_constraints; r++)
                if (r != j)
                    c[n++] = p->cost[k * p->n_constraints + r];
            rc = bp_problem_add_choice(q, p->label[k], p->cost[k * p->n_constraints + j], c, err);
        }
    }
    for (size_t r = 0, n = 0; r < p->n_constraints && rc == BP_OK; r++)
        if (r != j)
            rc = bp_problem_set_constraint(q, n++, p->constraint_name[r], p->capacity[r], err);
    if (rc == BP_OK) {
        bp_error sub;
        int src = solve_ilp(q, tlim, NULL, &s, &sub);
        if (src == BP_OK && (s.status == BP_SOLVE_OPTIMAL || s.status == BP_SOLVE_FEASIBLE)) {
            double v = 0.0;
            for (size_t i = 0; i < p->n_items; i++)
                v += p->cost[(p->item_start[i] + (size_t)s.choice[i]) * p->n_constraints + j];
            *value = v;
            *found = 1;
        } else if (src != BP_EINFEASIBLE) {
            rc = bp_error_set(err, src ? src : BP_ESOLVER, "diagnosing the infeasible constraints: %s", sub.msg);
        }
    }
    bp_solution_free(&s);
    bp_problem_destroy(&q);
    return rc;
}

/* Called when the constraints hold alone but the solver found no plan. */
static int diagnose_joint(const bp__solve_opts *o, const bp_problem *p, const bp__constraint_meta *meta,
                          bp_error *err)
{
    char caps[BP_MAX_CONSTRAINTS][64];
    for (size_t j = 0; j < p->n_constraints; j++)
        fmt_value(caps[j], sizeof caps[j], p->capacity[j], &meta[j]);
    if (o->kind != BP__SOLVE_ILP) {
        /* A heuristic's failure proves nothing: ask the exact solver. */
        bp_solution s;
        memset(&s, 0, sizeof s);
        bp_error sub;
        int rc = solve_ilp(p, o->time_limit_s, NULL, &s, &sub);
        bp_solution_free(&s);
        if (rc == BP_OK)
            return bp_error_set(err, BP_ESOLVER,
                                "%s found no plan that satisfies every constraint, but one exists: use --search ilp",
                                bp__solver_kind_name(o->kind));
        if (rc != BP_EINFEASIBLE)
            return bp_error_set(err, rc, "%s", sub.msg);
    }
    char msg[BP_ERROR_MSG_MAX] = "infeasible: ";
    for (size_t j = 0; j < p->n_constraints; j++) {
        char part[160];
        snprintf(part, sizeof part, "%s%s <= %s", j ? " and " : "", p->constraint_name[j], caps[j]);
        append(msg, sizeof msg, part);
    }
    append(msg, sizeof msg, " cannot hold together");
    for (size_t j = 0; j < p->n_constraints; j++) {
        double v = 0;
        int found = 0;
        int rc = min_subject_to_others(p, j, o->time_limit_s, &v, &found, err);
        if (rc != BP_OK)
            return rc;
        append(msg, sizeof msg, "; with ");
        for (size_t r = 0, n = 0; r < p->n_constraints; r++) {
            if (r == j)
                continue;
            char part[160];
            snprintf(part, sizeof part, "%s%s <= %s", n++ ? " and " : "", p->constraint_name[r], caps[r]);
            append(msg, sizeof msg, part);
        }
        char val[64], part[160];
        fmt_value(val, sizeof val, v, &meta[j]);
        if (found)
            snprintf(part, sizeof part, " the smallest %s is %s", p->constraint_name[j], val);
        else
            snprintf(part, sizeof part, " no plan exists");
        append(msg, sizeof msg, part);
    }
    return bp_error_set(err, BP_EINFEASIBLE, "%s", msg);
}

/* NSGA-II's answer: the least-error member of the final front; with caps
 * on, every member satisfies every constraint. */
static int solve_nsga2(const bp_problem *p, bp_solution *sol, bp_error *err)
{
    bp_nsga2_options o;
    bp_nsga2_options_default(&o);
    bp_pareto_front *front = NULL;
    int rc = bp_nsga2_run(p, &o, &front, err);
    if (rc != BP_OK)
        return rc;
    size_t best = front->n, no = front->n_objectives;
    for (size_t k = 0; k < front->n; k++) {
        int ok = 1;
        for (size_t j = 0; j < p->n_constraints; j++)
            ok &= front->objective[k * no + 1 + j] <= p->capacity[j];
        if (ok && (best == front->n || front->objective[k * no] < front->objective[best * no]))
            best = k;
    }
    if (best == front->n) {
        bp_pareto_front_destroy(&front);
        return bp_error_set(err, BP_ENOTFOUND, "nsga2: no member of the front satisfies every constraint");
    }
    if ((rc = bp_solution_init(sol, p->n_items, err)) == BP_OK) {
        memcpy(sol->choice, front->choice + best * p->n_items, p->n_items * sizeof *sol->choice);
        sol->status = BP_SOLVE_FEASIBLE;
        sol->bound = NAN;
        sol->gap = NAN;
        snprintf(sol->solver, sizeof sol->solver, "nsga2");
    }
    bp_pareto_front_destroy(&front);
    return rc;
}

int bp__job_solve(const bp__solve_opts *o, const bp_problem *prob, const bp__constraint_meta *meta,
                  bp_solution *sol, bp_error *err)
{
    int rc = bp__job_check_alone(prob, meta, err);
    if (rc != BP_OK)
        return rc;
    if (o->kind == BP__SOLVE_DP && prob->n_constraints > 1)
        return bp_error_set(err, BP_EINVAL,
                            "--solver dp solves a single constraint and this job has %zu; use --solver ilp",
                            prob->n_constraints);
    switch (o->kind) {
    case BP__SOLVE_DP: rc = bp_solve_dp(prob, 0, sol, err); break;
    case BP__SOLVE_LAGRANGE: rc = bp_solve_lagrange(prob, NULL, sol, err); break;
    case BP__SOLVE_NSGA2: rc = solve_nsga2(prob, sol, err); break;
    default: rc = solve_ilp(prob, o->time_limit_s, o->export_lp, sol, err); break;
    }
    int no_plan = rc == BP_EINFEASIBLE || (o->kind == BP__SOLVE_LAGRANGE && rc == BP_ESOLVER) ||
                  (o->kind == BP__SOLVE_NSGA2 && rc == BP_ENOTFOUND);
    if (no_plan)
        return diagnose_joint(o, prob, meta, err);
    if (rc != BP_OK)
        return rc;
    /* The objective and totals re-summed in item order, as the distributed
     * path re-sums them from the shipped choices. */
    return bp_solution_evaluate(prob, sol, err);
}

/* ---- plan ------------------------------------------------------------------------------ */

static json_t *number(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

char *bp__job_search_json(const bp_job_spec *spec, const bp__job_problem *jp, const bp_solution *sol,
                          bp_error *err)
{
    const bp_problem *p = jp->prob;
    json_t *root = json_object(), *cons = json_array(), *solver = json_object();
    if (!root || !cons || !solver) {
        json_decref(root);
        json_decref(cons);
        json_decref(solver);
        bp_error_set(err, BP_ENOMEM, "out of memory");
        return NULL;
    }
    for (size_t j = 0; j < p->n_constraints; j++) {
        double total = 0.0;
        for (size_t i = 0; i < p->n_items; i++)
            total += p->cost[(p->item_start[i] + (size_t)sol->choice[i]) * p->n_constraints + j];
        const bp__constraint_meta *m = &jp->meta[j];
        json_t *c = json_object();
        json_object_set_new(c, "name", json_string(p->constraint_name[j]));
        json_object_set_new(c, "unit", json_string(m->unit));
        json_object_set_new(c, "capacity", number((p->capacity[j] + m->offset) * m->scale));
        json_object_set_new(c, "achieved", number((total + m->offset) * m->scale));
        json_array_append_new(cons, c);
    }
    bp__solver_kind kind = bp__job_solver_for(spec, jp->prob);
    json_object_set_new(solver, "search",
                        json_string(bp__job_wants_real_loss(spec)          ? "evo"
                                    : spec->search == BP_JOB_SEARCH_DEFAULT ? bp__solver_kind_name(kind)
                                                                            : bp_job_search_name(spec->search)));
    json_object_set_new(solver, "name", json_string(sol->solver));
    json_object_set_new(solver, "status", json_string(bp_solve_status_name(sol->status)));
    json_object_set_new(solver, "objective", number(sol->objective));
    json_object_set_new(solver, "bound", number(sol->bound));
    json_object_set_new(solver, "gap", number(sol->gap));
    json_object_set_new(solver, "nodes", json_integer(sol->nodes));
    /* A wall-clock limit stopped the solver: the plan may differ between
     * runs (the node limit, which is deterministic, normally stops first). */
    if (sol->time_limited)
        json_object_set_new(solver, "time_limited", json_true());
    json_object_set_new(root, "constraints", cons);
    json_object_set_new(root, "solver", solver);
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (!text)
        bp_error_set(err, BP_ENOMEM, "out of memory");
    return text;
}

/* The plan's kv_cache section: each layer's chosen (or the fixed) format. */
static int set_kv_section(bp_plan *plan, const bp_job_spec *spec, const bp_table *table, const bp__job_problem *jp,
                          const bp_solution *sol, bp_error *err)
{
    const bp_problem *prob = jp->prob;
    size_t n = (size_t)jp->kv_shape.n_layers;
    bp_plan_kv_layer *layers = calloc(n, sizeof *layers);
    if (!layers)
        return bp_error_set(err, BP_ENOMEM, "plan: out of memory");
    int chosen = prob->n_items > jp->n_weight_items;
    for (size_t l = 0; l < n; l++) {
        layers[l].layer = (int64_t)l;
        layers[l].format = jp->kv_fixed;
        if (chosen) {
            size_t i = jp->n_weight_items + l;
            bp_table_row row;
            bp_table_get_row(table, (size_t)prob->label[prob->item_start[i] + (size_t)sol->choice[i]], &row);
            kv_format_of_row(row.format, &layers[l].format);
        }
    }
    bp_plan_kv_cache kv;
    memset(&kv, 0, sizeof kv);
    kv.context = spec->kv_context;
    kv.batch = spec->kv_batch > 0 ? spec->kv_batch : 1;
    kv.n_kv_heads = jp->kv_shape.n_kv_heads;
    kv.head_dim = jp->kv_shape.head_dim;
    kv.layers = layers;
    kv.n_layers = n;
    int rc = bp_plan_set_kv_cache(plan, &kv, err);
    free(layers);
    return rc;
}

/* The plan entry of a tensor planned by blocks (its items start at
 * `first`): the run-length block map, or the plain format when every block
 * chose it and storing it whole costs the same bytes. *used = its items. */
static int add_blocked_tensor(bp_plan *plan, const bp_job_spec *spec, const bp_table *table,
                              const bp_selection *sel, const bp__job_problem *jp, const bp_solution *sol,
                              size_t first, size_t *used, bp_error *err)
{
    const bp_problem *prob = jp->prob;
    size_t t = jp->member[jp->member_start[first]];
    int64_t nb = bp__job_block_count(spec->block_axis, spec->block_size, jp->rows[t], jp->cols[t]);
    const char **names = calloc((size_t)nb, sizeof *names);
    const char **fmts = calloc((size_t)nb, sizeof *fmts);
    bp_plan_run *runs = calloc((size_t)nb, sizeof *runs);
    int rc = BP_OK;
    if (!names || !fmts || !runs) {
        rc = bp_error_set(err, BP_ENOMEM, "plan: out of memory");
        goto out;
    }
    size_t n_fmts = 0, n_runs = 0;
    double error = 0.0;
    uint64_t block_bytes = 0;
    bp_quant_method method = BP_METHOD_RTN;
    for (int64_t b = 0; b < nb; b++) {
        size_t i = first + (size_t)b;
        size_t k = prob->item_start[i] + (size_t)sol->choice[i];
        bp_table_row row;
        bp_table_get_row(table, (size_t)prob->label[k], &row);
        names[b] = row.format;
        method = row.method;
        error += prob->error[k];
        block_bytes += row.bytes;
        size_t fi = 0;
        while (fi < n_fmts && strcmp(fmts[fi], row.format))
            fi++;
        if (fi == n_fmts)
            fmts[n_fmts++] = row.format;
        if (n_runs && runs[n_runs - 1].format == fi)
            runs[n_runs - 1].count++;
        else
            runs[n_runs++] = (bp_plan_run){(uint32_t)fi, 1};
    }
    const bp_selected_tensor *st = sel ? &sel->tensors[t] : NULL;
    bp_plan_tensor pt;
    memset(&pt, 0, sizeof pt);
    pt.name = jp->tensor[t];
    pt.rows = jp->rows[t];
    pt.cols = jp->cols[t];
    pt.dtype = st ? bp_dtype_name(st->dtype) : "BF16";
    pt.method = method;
    pt.predicted_error = error;
    bp_plan_blocks blk = {(bp_block_axis)spec->block_axis, spec->block_size, fmts, n_fmts, runs, n_runs};
    size_t dominant = 0;
    if ((rc = bp_plan_blocks_validate(&blk, pt.rows, pt.cols, NULL, &dominant, err)) != BP_OK)
        goto out;
    pt.format = fmts[dominant];
    bp_format f;
    if (n_fmts == 1 && bp_format_parse(fmts[0], &f, NULL) == BP_OK &&
        bp_format_bytes(&f, pt.rows, pt.cols) == block_bytes)
        pt.blocks = NULL;
    else
        pt.blocks = &blk;
    rc = bp_plan_add_tensor(plan, &pt, err);
    *used = (size_t)nb;
out:
    free(names);
    free(fmts);
    free(runs);
    return rc;
}

int bp__job_make_plan(const bp_job_spec *spec, const bp_table *table, const bp_selection *sel,
                      const bp__job_problem *jp, const bp_solution *sol, const char *model_hash, int metric,
                      bp_plan **out, bp_error *err)
{
    const bp_problem *prob = jp->prob;
    int rc = BP_OK;
    char *search = NULL;
    *out = NULL;
    if (sol->status != BP_SOLVE_OPTIMAL && sol->status != BP_SOLVE_FEASIBLE)
        return bp_error_set(err, BP_ESOLVER, "the solver stopped without a plan (status %s)",
                            bp_solve_status_name(sol->status));
    bp_plan *plan = bp_plan_new();
    if (!plan)
        return bp_error_set(err, BP_ENOMEM, "plan: out of memory");
    /* The budget section keeps the budget the user gave: the bits one
     * (row 0) when given, unless a KV cache makes the bytes one the whole
     * memory budget. */
    int bytes_given = spec->budget.kind == BP_BUDGET_BYTES || (jp->has_kv && spec->budget_bytes > 0);
    uint64_t asked = spec->budget.kind == BP_BUDGET_BYTES ? spec->budget.bytes
                     : bytes_given                         ? spec->budget_bytes
                                                           : (uint64_t)prob->capacity[0];
    double asked_bits = bytes_given ? bp_budget_bits_per_weight(asked, jp->params) : spec->budget.bits;
    if ((rc = bp_plan_set_tool(plan, "bitplan", BP_JOB_VERSION, err)) ||
        (rc = bp_plan_set_model(plan, spec->model_dir ? spec->model_dir : bp_table_get_meta(table, "model"),
                                model_hash && model_hash[0] ? model_hash : bp_table_get_meta(table, "model_hash"),
                                err)) ||
        (rc = bp_plan_set_metric(plan, (bp_metric)metric, err)) ||
        (rc = bp_plan_set_calibration(plan, bp_table_get_meta(table, "calibration_id"),
                                      bp_table_get_meta(table, "calibration_source"), err)) ||
        (rc = bp_plan_set_budget(plan, bytes_given ? BP_BUDGET_BYTES : BP_BUDGET_BITS, asked_bits, asked, err)) ||
        (rc = bp_plan_set_solver(plan, sol->solver, bp_solve_status_name(sol->status), sol->objective,
                                 sol->bound, sol->gap, err)))
        goto out;
    for (size_t i = 0; i < jp->n_weight_items; i++) {
        if (jp->item_block && jp->item_block[i] >= 0) {
            size_t used = 0;
            if ((rc = add_blocked_tensor(plan, spec, table, sel, jp, sol, i, &used, err)) != BP_OK)
                goto out;
            i += used - 1;
            continue;
        }
        size_t k = prob->item_start[i] + (size_t)sol->choice[i];
        bp_table_row chosen;
        bp_table_get_row(table, (size_t)prob->label[k], &chosen);
        for (size_t m = jp->member_start[i]; m < jp->member_start[i + 1]; m++) {
            size_t t = jp->member[m];
            long r = m == jp->member_start[i] ? prob->label[k]
                                              : bp_table_find(table, jp->tensor[t], NULL, chosen.format, chosen.method);
            bp_table_row row;
            bp_table_get_row(table, (size_t)r, &row);
            const bp_selected_tensor *st = sel ? &sel->tensors[t] : NULL;
            bp_plan_tensor pt;
            memset(&pt, 0, sizeof pt);
            pt.name = jp->tensor[t];
            pt.rows = st ? st->rows : row.rows;
            pt.cols = st ? st->cols : row.cols;
            pt.dtype = st ? bp_dtype_name(st->dtype) : "BF16";
            pt.format = row.format;
            pt.method = row.method;
            pt.predicted_error = row.metric[metric];
            if ((rc = bp_plan_add_tensor(plan, &pt, err)) != BP_OK)
                goto out;
        }
    }
    if (jp->has_kv && (rc = set_kv_section(plan, spec, table, jp, sol, err)) != BP_OK)
        goto out;
    if (!(search = bp__job_search_json(spec, jp, sol, err))) {
        rc = err ? err->code : BP_ENOMEM;
        goto out;
    }
    if ((rc = bp_plan_set_search_json(plan, search, err)) != BP_OK || (rc = bp_plan_validate(plan, err)) != BP_OK)
        goto out;
    *out = plan;
    plan = NULL;
out:
    free(search);
    bp_plan_destroy(&plan);
    return rc;
}
