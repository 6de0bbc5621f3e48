/* The real-loss search stage of a plan job (search_stage.c): baselines,
 * then the (1+lambda) search, then the best measured plan. Not public. */
#ifndef BITPLAN_SEARCH_STAGE_H
#define BITPLAN_SEARCH_STAGE_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"
#include "bitplan/evo.h"
#include "bitplan/problem.h"

typedef struct bp__search bp__search;

/* prob is borrowed (must outlive the stage). ilp_choice: the ILP plan
 * (feasible). uniform_choice: n_uniform candidate vectors, uniform_names
 * their labels (copied). */
int bp__search_new(const bp_problem *prob, const int32_t *ilp_choice, const int32_t *uniform_choice,
                   const char *const *uniform_names, size_t n_uniform, const bp_evo_options *eo,
                   bp__search **out, bp_error *err);
void bp__search_destroy(bp__search **s);

/* The candidates to evaluate next (n * n_items choices, owned by the stage
 * until the next tell) and their fidelity (BP_EVO_LOW / BP_EVO_HIGH).
 * n == 0: done. Asking again before telling returns the same batch. */
int bp__search_ask(bp__search *s, const int32_t **choice, size_t *n, int *fidelity, bp_error *err);
/* Measured losses of the batch, in order (finite). */
int bp__search_tell(bp__search *s, const double *fitness, size_t n, bp_error *err);
int bp__search_done(const bp__search *s);

typedef struct bp__search_outcome {
    const int32_t *choice;     /* the returned plan */
    const char *which;         /* "evo", "ilp" or "uniform" */
    long uniform_index;        /* when which is "uniform" */
    double fitness;            /* its high-fidelity loss */
    double ilp_fitness;
    long best_uniform;         /* -1 when no uniform plan fits */
    double best_uniform_fitness;
    double evo_fitness;        /* the search's best (>= fitness) */
    bp_evo_stats stats;
    size_t evals_sent;         /* evaluations asked of the caller */
    size_t memo_hits;          /* candidates answered from the memo */
} bp__search_outcome;

int bp__search_result(const bp__search *s, bp__search_outcome *o);
size_t bp__search_uniform_count(const bp__search *s);
const char *bp__search_uniform_name(const bp__search *s, size_t u, double *fitness);
size_t bp__search_history(const bp__search *s, const double **best);

#endif
