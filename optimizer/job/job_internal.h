/* Shared between the job module's files; not public. */
#ifndef BITPLAN_JOB_INTERNAL_H
#define BITPLAN_JOB_INTERNAL_H

#include "bitplan/calib_input.h"
#include "bitplan/cost.h"
#include "bitplan/job.h"
#include "bitplan/llama.h"
#include "bitplan/sweep.h"
#include <stdatomic.h>

#define BP_JOB_VERSION "0.1.0"

#include <math.h>
#include <stddef.h>
#include <sys/stat.h>

/* 1 when path names an existing file (NULL: 0). */
static inline int bp__file_exists(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0;
}

/* max |w[i]|, for nvfp4's tensor scale. */
static inline float bp__absmax(const float *w, size_t n)
{
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(w[i]);
        m = a > m ? a : m;
    }
    return m;
}

/* What a measurement may use besides the tensor itself. */
typedef struct bp_measure_env {
    const bp_llama_config *cfg;     /* with calibration, else NULL */
    const bp_calib *calib;          /* Hessians, or NULL */
    const bp_imatrix *imatrix;      /* importance, or NULL */
    bp_llama *llama;                /* for dkl */
    const bp_eval_reference *ref;   /* for dkl */
    bp_quant_method method;         /* weights measured: RTN or GPTQ */
    int want_dkl;
    _Atomic uint64_t *progress;     /* advanced once per format, or NULL */
} bp_measure_env;

/* Sweep one tensor over its allowed formats and append one table row per
 * format. */
int bp__job_measure_tensor(const bp_tensor_info *ti, const bp_selected_tensor *st,
                           const bp_measure_env *env, bp_table *t, bp_error *err);

/* Measuring rows [row0, row0 + nrows) of a tensor gives, per format, the
 * pieces its whole-tensor values are summed from, so row blocks measured
 * apart (by different workers) merge into exactly the unsplit values:
 *   chunk      [nfmt][2][nchunks] mse and hdiag sums of each 64-row chunk
 *              (BP_SWEEP_CHUNK_ROWS), each the serial sum of its rows;
 *   row_hfull  [nfmt][nrows] hfull of each row (also gptq's value), or NULL;
 *   dkl        [nfmt] KL increase, only for the whole tensor, or NULL.
 * metrics has bit m set when metric m is measured (the same for every
 * format). */
typedef struct bp_measure_part {
    int64_t row0, nrows;
    size_t nfmt;
    unsigned metrics;
    double *chunk;
    double *row_hfull;
    double *dkl;
} bp_measure_part;

/* Chunks a part of nrows rows holds. */
static inline int64_t bp__measure_part_chunks(int64_t nrows)
{
    return (nrows + BP_SWEEP_CHUNK_ROWS - 1) / BP_SWEEP_CHUNK_ROWS;
}

/* Allocate the arrays of *p for the given shape and metrics (zeroed);
 * fields as above. Free with bp__measure_part_free. */
int bp__measure_part_alloc(bp_measure_part *p, int64_t row0, int64_t nrows, size_t nfmt, unsigned metrics,
                           bp_error *err);
void bp__measure_part_free(bp_measure_part *p);

/* 1 when a format of st needs the whole tensor's max |w| (nvfp4). */
int bp__job_needs_absmax(const bp_selected_tensor *st);

/* Measure rows [row0, row0 + nrows) of st (row0 a multiple of
 * BP_SWEEP_CHUNK_ROWS, nrows too unless the range ends at the last row).
 * Only those rows are read, except that absmax < 0 with an nvfp4 format
 * reads the whole tensor for its max |w|. dkl needs the whole tensor. */
int bp__job_measure_rows(const bp_tensor_info *ti, const bp_selected_tensor *st, const bp_measure_env *env,
                         int64_t row0, int64_t nrows, float absmax, bp_measure_part *out, bp_error *err);

/* Sum parts covering rows [0, st->rows) in row order (chunks in order,
 * hfull row by row: the unsplit sums) and append one table row per
 * format. Parts must be contiguous and agree on formats and metrics. */
int bp__job_measure_merge(const bp_selected_tensor *st, bp_quant_method method, const bp_measure_part *parts,
                          size_t nparts, bp_table *t, bp_error *err);

/* Rows per measure task for st under the spec's split settings; >= st->rows
 * when the tensor is measured whole (always with dkl). */
int64_t bp__job_split_rows(const bp_job_spec *spec, const bp_selected_tensor *st, int want_dkl);

/* A table row's bytes must agree with the format registry (rows/cols
 * known), or the plan would promise a size the packed file lacks. */
int bp__job_check_row_bytes(const bp_table_row *r, bp_error *err);

/* ---- constraints.c: the job's problem, solve and plan ------------------ */

/* How a constraint row reads to the user: shown value = (raw + offset) *
 * scale, raw being the problem's capacity or cost total; offset is a
 * constant the problem leaves out (a fixed KV cache's bytes). */
typedef struct bp__constraint_meta {
    char unit[16];   /* "B", "bits/weight", "us", "BOPS" */
    double scale;    /* > 0 */
    double offset;   /* >= 0 */
} bp__constraint_meta;

/* A job's allocation problem and what maps it back to tensors. Item i
 * covers tensors member[member_start[i] .. member_start[i+1]) (more than
 * one for a tie group); items from n_weight_items on are KV layers, whose
 * choices' labels are table rows of "model.layers.N.kv_cache". A weight
 * choice's label is its first member's table row. */
typedef struct bp__job_problem {
    bp_problem *prob;
    bp__constraint_meta meta[BP_MAX_CONSTRAINTS];
    size_t n_tensors;      /* weight tensors: selection order, or table order */
    const char **tensor;   /* names, borrowed from the selection or table */
    int64_t *rows, *cols;  /* per tensor; 0 when unknown */
    size_t *member_start;  /* n_items + 1 */
    size_t *member;        /* n_tensors */
    size_t n_weight_items;
    uint64_t params;       /* weights covered by the bits budget */
    int64_t *item_block;   /* --granularity block: per weight item, the
                              block of its one tensor it covers, or -1 when
                              the tensor is planned whole; NULL otherwise */
    int has_kv;            /* the bytes row holds a KV cache */
    bp_kv_shape kv_shape;
    bp_kv_format kv_fixed; /* the format of every layer when no item chooses */
} bp__job_problem;

void bp__job_problem_destroy(bp__job_problem **jp);

/* Blocks of a tensor at --granularity block: the table's block id
 * "<axis>:<size>:<index>" ("rows:32:3" = output rows 96..127), and how many
 * blocks a rows x cols tensor has (0 when size does not divide the axis: the
 * tensor is then planned whole). docs/blocks.md. */
void bp__job_block_id(char *buf, size_t cap, int axis, int64_t size, int64_t index);
int64_t bp__job_block_count(int axis, int64_t size, int64_t rows, int64_t cols);

/* Build the problem of a job: one item per tensor or tie group (rules may
 * be NULL), one per KV layer when the table has KV rows and kv_context is
 * set; one row per constraint the spec gives (bits, bytes, latency_us,
 * bops, in that order). model (may be NULL) gives the KV shape. */
int bp__job_problem_build(const bp_job_spec *spec, const bp_table *table, const bp_selection *sel,
                          const bp_rules *rules, const bp_model *model, int metric, bp_quant_method method,
                          bp__job_problem **out, bp_error *err);

/* Solvers a solve can run (the wire names of task_solve). */
typedef enum bp__solver_kind { BP__SOLVE_ILP = 0, BP__SOLVE_DP, BP__SOLVE_LAGRANGE, BP__SOLVE_NSGA2 } bp__solver_kind;
const char *bp__solver_kind_name(bp__solver_kind k);
int bp__solver_kind_from_name(const char *name); /* -1 when unknown */
bp__solver_kind bp__job_solver_kind(const bp_job_spec *spec);
/* Above this many items the default search solves by Lagrangian
 * relaxation instead of the exact ILP. */
#define BP_JOB_ILP_MAX_ITEMS 20000
/* The solver for this problem: the spec's, or by size for the default. */
bp__solver_kind bp__job_solver_for(const bp_job_spec *spec, const bp_problem *prob);
/* 1 when the job ends with the real-loss search (--search evo, or the
 * default search with a model and calibration tokens). */
int bp__job_wants_real_loss(const bp_job_spec *spec);

typedef struct bp__solve_opts {
    bp__solver_kind kind;
    double time_limit_s;    /* <= 0: 60 s */
    const char *export_lp;  /* ILP only */
} bp__solve_opts;

/* Solve; an infeasible problem gets BP_EINFEASIBLE with a message naming
 * the binding constraints and the smallest achievable value of each (alone,
 * then each subject to the others). The same message on every path. */
int bp__job_solve(const bp__solve_opts *o, const bp_problem *prob, const bp__constraint_meta *meta,
                  bp_solution *sol, bp_error *err);

/* Only the constraints that fail alone (no solver run): BP_EINFEASIBLE
 * with the message bp__job_solve would give, else BP_OK. */
int bp__job_check_alone(const bp_problem *prob, const bp__constraint_meta *meta, bp_error *err);

/* The plan for a solved problem, with its "search" section. */
int bp__job_make_plan(const bp_job_spec *spec, const bp_table *table, const bp_selection *sel,
                      const bp__job_problem *jp, const bp_solution *sol, const char *model_hash, int metric,
                      bp_plan **out, bp_error *err);

/* The plan's "search" section: every constraint's name, unit, capacity and
 * achieved value, and the solver; malloc'ed JSON text. */
char *bp__job_search_json(const bp_job_spec *spec, const bp__job_problem *jp, const bp_solution *sol,
                          bp_error *err);

#endif
