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

typedef struct bp_job_spec {
    const char *model_dir;     /* model directory; NULL = solve a table alone */
    const char *formats;       /* comma-separated canonical names; NULL = full menu */
    const char *rules_path;    /* optional rules file */
    const char *imatrix_path;  /* optional llama.cpp imatrix.dat (importance) */
    const char *table_path;    /* reuse if it exists (unless resweep); else write */
    int resweep;               /* 1 = measure even if table_path exists */
    int metric;                /* bp_metric, or -1 = hdiag with importance, else mse */
    bp_budget budget;          /* required */
    bp_job_solver solver;
    const char *export_lp;     /* optional CPLEX LP dump of the ILP */
    double time_limit_s;       /* solver deadline; <= 0 = 60 s */
    int quiet;                 /* no progress on stderr */
    int skip_model_hash;       /* 1 = do not hash the model content (faster) */
    bp_quant_method method;    /* weights the errors are measured on: RTN
                                  (default) or GPTQ; metric gptq implies GPTQ */
    bp_calib_spec calib;       /* calibration input (hdiag/hfull/gptq/dkl) */
} bp_job_spec;

void bp_job_spec_default(bp_job_spec *s);

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
