/* The plan job's real-loss search (driver_search.c): candidates -> plans
 * and "evaluate" task params; measured KL -> the search; the returned plan
 * with its "search" section. Not public. */
#ifndef BITPLAN_DRIVER_SEARCH_H
#define BITPLAN_DRIVER_SEARCH_H

#include <msgpack.h>
#include <stdint.h>

#include "bitplan/evo.h"
#include "job_internal.h"

typedef struct bp__search_env {
    const bp_job_spec *spec;
    const bp_table *table;
    const bp_selection *sel;
    const bp__job_problem *jp;     /* borrowed, outlives the search */
    const char *model_hash;
    int metric;
    /* what an evaluate task needs (tasks_eval.c) */
    const char *text_path, *tokens_path, *tokens_hash;
    const char *stats_path, *calib_id;
    int64_t ctx;
    int64_t first_window;          /* held out: after the Hessian sequences */
    int64_t n_low, n_high;         /* windows at low and high fidelity */
    bp_evo_options evo;
} bp__search_env;

typedef struct bp__search_driver bp__search_driver;

int bp__search_driver_new(const bp__search_env *env, const bp_solution *ilp, bp__search_driver **out,
                          bp_error *err);
void bp__search_driver_destroy(bp__search_driver **s);
/* Ask the next batch; *n == 0 when the search is done. */
int bp__search_driver_batch(bp__search_driver *s, size_t *n, bp_error *err);
/* Windows the current batch is evaluated on. */
int64_t bp__search_driver_windows(const bp__search_driver *s);
/* Candidate k of the batch: evaluate-task params (packed into the caller's
 * initialized buffer) and the plan JSON (malloc'ed) for its "plan" input. */
int bp__search_driver_task(const bp__search_driver *s, size_t k, msgpack_sbuffer *params, char **plan_json,
                           bp_error *err);
int bp__search_driver_tell(bp__search_driver *s, const double *kl, size_t n, bp_error *err);
int bp__search_driver_done(const bp__search_driver *s);
/* The returned plan (best measured of search, ILP, uniform plans). */
int bp__search_driver_plan(const bp__search_driver *s, bp_plan **out, bp_error *err);

#endif
