/* Shared between the job module's files; not public. */
#ifndef BITPLAN_JOB_INTERNAL_H
#define BITPLAN_JOB_INTERNAL_H

#include "bitplan/calib_input.h"
#include "bitplan/job.h"
#include "bitplan/llama.h"
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

/* The allocation problem of a job from its table, with the budget's byte
 * capacity as constraint 0. */
int bp__job_problem(const bp_job_spec *spec, const bp_table *table, const bp_selection *sel,
                    int metric, bp_quant_method method, bp_problem **out, bp_error *err);

/* The plan for a solved problem. */
int bp__job_make_plan(const bp_job_spec *spec, const bp_table *table, const bp_selection *sel,
                      const bp_problem *prob, const bp_solution *sol, const char *model_hash, int metric,
                      bp_plan **out, bp_error *err);

/* Solve with the spec's solver (ILP or DP). */
int bp__job_solve(const bp_job_spec *spec, const bp_problem *prob, bp_solution *sol, bp_error *err);

#endif
