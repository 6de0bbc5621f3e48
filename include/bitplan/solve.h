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
 */
#ifndef BITPLAN_SOLVE_H
#define BITPLAN_SOLVE_H

#include "bitplan/problem.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_ilp_options {
    double time_limit_s;     /* hard wall-clock deadline; <= 0 means 60 s */
    double mip_gap;          /* relative gap accepted; 0 = prove optimality */
    int memory_limit_mb;     /* glp_mem_limit; <= 0 means 4096 */
    const char *export_lp;   /* if not NULL, write the model (CPLEX LP) here */
    int verbose;             /* 1 = GLPK messages to stderr */
} bp_ilp_options;

void bp_ilp_options_default(bp_ilp_options *o);

int bp_solve_ilp(const bp_problem *p, const bp_ilp_options *o,
                 bp_solution *s, bp_error *err);

/* Single constraint only (BP_EINVAL otherwise). max_states caps the Pareto
 * frontier size (<= 0 means 4,000,000); exceeding it returns BP_ENOMEM so
 * the caller can fall back to the ILP. */
int bp_solve_dp(const bp_problem *p, long max_states, bp_solution *s,
                bp_error *err);

/* Refuses more than max_assignments (<= 0 means 10,000,000) combinations. */
int bp_solve_bruteforce(const bp_problem *p, long max_assignments,
                        bp_solution *s, bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
