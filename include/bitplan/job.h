/* bitplan: a planning job, end to end: select tensors, measure every
 * (tensor, format) cell into a sensitivity table (or reuse one), build the
 * allocation problem, solve it, and produce a plan.
 *
 * The CLI's `bitplan plan` fills a bp_job_spec and calls bp_job_run; the
 * coordinator daemon runs the same steps with the measuring distributed to
 * workers. Each step is a separate function so a caller can stop after any
 * of them (e.g. measure only, or re-solve a table for a new budget).
 */
#ifndef BITPLAN_JOB_H
#define BITPLAN_JOB_H

#include <stdint.h>

#include "bitplan/budget.h"
#include "bitplan/calib_input.h"
#include "bitplan/error.h"
#include "bitplan/imatrix.h"
#include "bitplan/model.h"
#include "bitplan/plan.h"
#include "bitplan/problem.h"
#include "bitplan/rules.h"
#include "bitplan/selection.h"
#include "bitplan/solve.h"
#include "bitplan/table.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bp_job_solver {
    BP_JOB_SOLVER_ILP = 0, /* GLPK branch-and-cut (default; any constraints) */
    BP_JOB_SOLVER_DP       /* exact Pareto DP (single constraint) */
} bp_job_solver;

/* The search that picks the plan (`--search`). DEFAULT: the exact solver
 * of `solver` (ilp, or dp for one constraint). EVO is accepted and stored;
 * until the real-loss search is wired it plans with the ILP. */
typedef enum bp_job_search {
    BP_JOB_SEARCH_DEFAULT = 0,
    BP_JOB_SEARCH_ILP,
    BP_JOB_SEARCH_LAGRANGE, /* Lagrangian relaxation, reports its gap bound */
    BP_JOB_SEARCH_NSGA2,    /* least-error feasible member of the front */
    BP_JOB_SEARCH_EVO
} bp_job_search;

/* "default" is never written; "ilp", "lagrange", "nsga2", "evo". */
const char *bp_job_search_name(bp_job_search s);
/* -1 for an unknown name. */
int bp_job_search_from_name(const char *name);

typedef enum bp_job_granularity {
    BP_JOB_GRANULARITY_TENSOR = 0,
    BP_JOB_GRANULARITY_BLOCK      /* a format per block (docs/blocks.md) */
} bp_job_granularity;

/* Measure-task splitting defaults (docs/job-spec.md, "split_rows"). */
#define BP_JOB_SPLIT_ROWS_DEFAULT 4096
#define BP_JOB_SPLIT_WEIGHTS_DEFAULT 16777216

typedef struct bp_job_spec {
    const char *model_dir;     /* model directory; NULL = solve a table alone */
    const char *formats;       /* comma-separated canonical names; NULL = full menu */
    const char *rules_path;    /* optional rules file */
    const char *imatrix_path;  /* optional llama.cpp imatrix.dat (importance) */
    const char *table_path;    /* reuse if it exists (unless resweep); else write */
    int resweep;               /* 1 = measure even if table_path exists */
    int64_t split_rows;        /* rows per measure task of a large tensor (a
                                  multiple of BP_SWEEP_CHUNK_ROWS); 0 = default
                                  BP_JOB_SPLIT_ROWS_DEFAULT, -1 = never split */
    int64_t split_min_weights; /* only tensors with more weights are split;
                                  0 = default BP_JOB_SPLIT_WEIGHTS_DEFAULT,
                                  -1 = any size */
    int metric;                /* bp_metric, or -1 = hdiag with importance, else mse */
    bp_budget budget;          /* required */
    bp_job_solver solver;
    const char *export_lp;     /* optional CPLEX LP dump of the ILP */
    double time_limit_s;       /* solver deadline; <= 0 = 60 s */
    int quiet;                 /* no progress on stderr */
    int skip_model_hash;       /* 1 = do not hash the model content (faster) */
    bp_quant_method method;    /* weights the errors are measured on: RTN
                                  (default), GPTQ or GPTQ_ACT (act-order);
                                  metric gptq implies GPTQ unless GPTQ_ACT */
    bp_calib_spec calib;       /* calibration input (hdiag/hfull/gptq/dkl) */
    /* Constraints besides `budget` (docs/job-spec.md, "Constraints"); all
     * given ones hold together in one solve. */
    uint64_t budget_bytes;     /* bytes cap when `budget` holds the bits one
                                  (both given: two rows); 0 = none */
    double latency_us;         /* > 0: sum of per-tensor latency <= this */
    const char *profile;       /* latency model: builtin name, profile JSON,
                                  or a measured table (path ending .csv) */
    const char *profile_fallback; /* with a .csv table: roofline profile for
                                  shapes the table lacks; NULL = none */
    int phase;                 /* bp_cost_phase (default decode) */
    int64_t batch;             /* decode batch / prefill length; 0 = 1 */
    double bops;               /* > 0: bit operations per token <= this */
    int64_t kv_context;        /* > 0: the bytes cap also holds the KV cache
                                  of kv_batch sequences of this many tokens */
    int64_t kv_batch;          /* 0 = 1 (only with kv_context) */
    int kv_format;             /* bp_kv_format of a fixed KV cache (default
                                  f16); ignored when the table has KV rows */
    bp_job_search search;
    bp_job_granularity granularity;
    int64_t block_size;        /* block granularity: rows/cols per block (> 0) */
    int block_axis;            /* bp_block_axis (plan.h) */
    /* Real-loss search (docs/search.md, "Real-loss evolutionary search");
     * 0 = the default in brackets. */
    int64_t evo_generations;   /* [10]; -1 = none: measure the ILP and
                                  uniform baselines only */
    int64_t evo_lambda;        /* offspring per generation [6] */
    int64_t evo_promote;       /* offspring re-measured at high fidelity [2] */
    int64_t evo_seed;          /* random seed [1] */
    int64_t evo_windows;       /* held-out calibration windows of the high
                                  fidelity [32]; the low fidelity uses the
                                  first quarter (at least 1) */
} bp_job_spec;

/* Defaults of the evo_* fields. */
#define BP_JOB_EVO_GENERATIONS 10
#define BP_JOB_EVO_LAMBDA 6
#define BP_JOB_EVO_PROMOTE 2
#define BP_JOB_EVO_WINDOWS 32

void bp_job_spec_default(bp_job_spec *s);

/* Cross-field checks of the constraint fields, shared by the CLI, the job
 * spec parser and bp_job_run (messages use the CLI flag names): latency
 * needs a profile, --kv-batch needs --kv-context, --kv-context needs
 * --budget-bytes, a profile that is neither a builtin name nor a path
 * (.json / .csv, or containing '/') is unknown, --solver dp excludes
 * --search other than ilp, block granularity needs a block size, ... */
int bp_job_spec_check(const bp_job_spec *s, bp_error *err);

/* Parse a count with an optional SI suffix K M G T P (powers of 1000),
 * e.g. "1.5G"; result finite and > 0. `what` names it in messages. */
int bp_job_parse_si(const char *text, const char *what, double *out, bp_error *err);

/* Parse a comma-separated format list ("int4_g128_asym,mxfp4") into out
 * (at most cap). "all" means the full menu. Errors name the bad entry. */
int bp_job_parse_formats(const char *list, bp_format *out, size_t cap,
                         size_t *n_out, bp_error *err);

/* Squared error sum_ij (w - wq)^2 and importance-weighted error
 * sum_ij colw[j] (w - wq)^2 (NaN when colw is NULL), summed exactly as the
 * sweep sums them (per row in column order, rows into chunks of
 * BP_SWEEP_CHUNK_ROWS, chunks in order), so re-measuring applied weights
 * reproduces a table's values bit for bit. */
void bp_job_error_total(const float *w, const float *wq, int64_t rows, int64_t cols,
                        const float *colw, double *sse, double *wsse);

/* Build the problem from a table: one item per tensor (in table order of
 * first appearance, or selection order when sel is given), one choice per
 * row that has a value for `metric` and whose format is allowed (sel may be
 * NULL: every row counts). Costs are bytes; capacity is set by the caller.
 * Checks each row's bytes against the format registry when rows/cols are
 * known. */
int bp_job_build_problem(const bp_table *table, const bp_selection *sel,
                         bp_metric metric, bp_quant_method method,
                         bp_problem **out, bp_error *err);

/* The whole job. Caller owns *out. On an infeasible budget returns
 * BP_EINFEASIBLE with the smallest achievable size in the message. */
int bp_job_run(const bp_job_spec *spec, bp_plan **out, bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
