/* bitplan: exact solvers for bp_problem.
 *
 *  - bp_solve_ilp: GLPK branch-and-cut, any number of constraints. Guarded:
 *    the input is validated first, GLPK's error hook longjmps back instead of
 *    aborting, its memory is capped, presolve is on, a callback enforces a
 *    wall-clock deadline, and glp_mip_status is always read.
 *  - bp_solve_dp: exact dynamic programming over Pareto-optimal (cost, error)
 *    states, single constraint; a test oracle and a fast path.
 *  - bp_solve_bruteforce: enumerates every assignment; tests only.
 *
 * All return BP_OK with s->status set (OPTIMAL/FEASIBLE/INFEASIBLE/...), or a
 * negative code for invalid input or an internal solver failure. An
 * infeasible problem returns BP_EINFEASIBLE with a message stating the
 * smallest achievable total of every binding constraint, and s->status =
 * BP_SOLVE_INFEASIBLE. Ties between equal objectives are broken the same way
 * on every run, so identical inputs give identical solutions.
 *
 * s must be zeroed ({0}) or come from bp_solution_init; the solvers
 * (re)allocate s->choice for p->n_items and the caller frees it with
 * bp_solution_free. Unless the status is OPTIMAL or FEASIBLE, choice[]
 * entries are -1 and objective/cost_total are 0. p is not modified.
 * Details, guards and tie-breaking: docs/solvers.md.
 */
#ifndef BITPLAN_SOLVE_H
#define BITPLAN_SOLVE_H

#include "bitplan/problem.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Default bp_ilp_options.node_limit: branch-and-bound subproblems. Chosen
 * so that the hardest bench_solve instance (7B shape, two binding budgets)
 * stops on it well inside the default 60 s deadline (docs/solvers.md). */
#define BP_ILP_DEFAULT_NODE_LIMIT 5000L

typedef struct bp_ilp_options {
    double time_limit_s;     /* hard wall-clock deadline; <= 0 means 60 s.
                              * A last-resort guard: when it stops the
                              * search the plan depends on machine speed
                              * (bp_solution.time_limited is set). */
    long node_limit;         /* deterministic work limit: branch-and-bound
                              * subproblems before the search stops with
                              * the best plan so far (FEASIBLE, with gap);
                              * 0 means BP_ILP_DEFAULT_NODE_LIMIT, < 0 none */
    double mip_gap;          /* relative gap accepted; 0 = prove optimality */
    int memory_limit_mb;     /* glp_mem_limit; <= 0 means 4096 */
    const char *export_lp;   /* if not NULL, write the model (CPLEX LP) here */
    int verbose;             /* 1 = GLPK messages to stderr */
} bp_ilp_options;

void bp_ilp_options_default(bp_ilp_options *o);

/* o may be NULL (defaults). Returns BP_OK with status OPTIMAL, or
 * FEASIBLE (mip_gap or node_limit reached, or the deadline hit after a
 * feasible assignment was known; s->bound and s->gap say how far from
 * proven; s->time_limited = 1 when the deadline, not the input, decided);
 * BP_ETIMEOUT with status NO_SOLUTION if the deadline or node_limit hit
 * before any feasible assignment was known;
 * BP_EINFEASIBLE; BP_EINVAL (problem or options); BP_EIO (export_lp could
 * not be written); BP_ESOLVER (GLPK failed or raised an internal error,
 * caught by its error hook); BP_ENOMEM. Uses and then frees the calling
 * thread's GLPK environment, so no other GLPK objects may be alive in that
 * thread. */
int bp_solve_ilp(const bp_problem *p, const bp_ilp_options *o,
                 bp_solution *s, bp_error *err);

/* Single constraint only (BP_EINVAL otherwise). max_states caps the Pareto
 * frontier size (<= 0 means 4,000,000), counted as the total of states kept
 * over all items (memory ~8 bytes each for back-pointers plus the two live
 * frontiers); exceeding it returns BP_ENOMEM so the caller can fall back to
 * the ILP. Costs are compared exactly: meant for integer-valued costs such
 * as bytes (see docs/solvers.md). */
int bp_solve_dp(const bp_problem *p, long max_states, bp_solution *s,
                bp_error *err);

/* Refuses more than max_assignments (<= 0 means 10,000,000) combinations
 * with BP_EUNSUPPORTED. */
int bp_solve_bruteforce(const bp_problem *p, long max_assignments,
                        bp_solution *s, bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
