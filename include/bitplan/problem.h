/* bitplan: the allocation problem handed to the solvers.
 *
 * A multiple-choice knapsack with one or more capacity rows: items (tensors,
 * or blocks of tensors) each pick exactly one choice (a format); each choice
 * has an error and a cost per constraint; the sum of each constraint's costs
 * must not exceed its capacity; the sum of errors is minimized.
 *
 * Storage is flat (CSR-like) so the problem serializes as a few arrays:
 *   choice c of item i lives at index item_start[i] + c;
 *   cost of choice k under constraint j is cost[k * n_constraints + j].
 * A problem is a work unit: it can be shipped to a worker and solved there.
 */
#ifndef BITPLAN_PROBLEM_H
#define BITPLAN_PROBLEM_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BP_MAX_CONSTRAINTS 8
#define BP_CONSTRAINT_NAME_MAX 32

typedef struct bp_problem {
    size_t n_items;
    size_t n_choices;        /* total over items */
    size_t n_constraints;    /* 1..BP_MAX_CONSTRAINTS */
    size_t *item_start;      /* n_items + 1 entries */
    char **item_name;        /* n_items, owned */
    double *error;           /* n_choices */
    double *cost;            /* n_choices * n_constraints */
    int32_t *label;          /* n_choices: caller's tag, e.g. format index */
    double capacity[BP_MAX_CONSTRAINTS];
    char constraint_name[BP_MAX_CONSTRAINTS][BP_CONSTRAINT_NAME_MAX];
    size_t cap_items, cap_choices; /* allocation sizes, internal */
} bp_problem;

/* Caller owns the result; NULL on OOM or bad n_constraints. */
bp_problem *bp_problem_new(size_t n_constraints);
void bp_problem_destroy(bp_problem **p);

/* Start a new item; following add_choice calls attach to it. */
int bp_problem_add_item(bp_problem *p, const char *name, bp_error *err);
/* costs has n_constraints entries. */
int bp_problem_add_choice(bp_problem *p, int32_t label, double error,
                          const double *costs, bp_error *err);
int bp_problem_set_constraint(bp_problem *p, size_t j, const char *name,
                              double capacity, bp_error *err);

/* Check everything a solver relies on: every item has >= 1 choice, all
 * errors, costs and capacities finite, costs >= 0, names present. Returns
 * BP_EINVAL naming the first offending item/choice. Also checks
 * n_constraints in 1..BP_MAX_CONSTRAINTS, at least one item, item_start
 * consistent with n_choices, |values| <= 1e100 (so sums cannot overflow),
 * and sizes under GLPK's ceilings (1e8 rows/columns, 5e8 non-zeros).
 * add_item/add_choice/set_constraint apply the same checks as they go. */
int bp_problem_validate(const bp_problem *p, bp_error *err);

/* Smallest achievable total of constraint j (sum of per-item minima). */
double bp_problem_min_cost(const bp_problem *p, size_t j);

typedef enum bp_solve_status {
    BP_SOLVE_OPTIMAL = 0,   /* proven optimal */
    BP_SOLVE_FEASIBLE,      /* feasible, optimality not proven (see gap) */
    BP_SOLVE_INFEASIBLE,    /* no assignment satisfies the constraints */
    BP_SOLVE_NO_SOLUTION    /* stopped before any feasible assignment */
} bp_solve_status;

const char *bp_solve_status_name(bp_solve_status s); /* "optimal", ... */

typedef struct bp_solution {
    size_t n_items;
    int32_t *choice;        /* per item: index within the item (0-based) */
    bp_solve_status status;
    double objective;       /* sum of chosen errors */
    double bound;           /* best proven lower bound on the objective */
    double gap;             /* (objective - bound) / max(|objective|, 1e-300); 0 if optimal */
    double cost_total[BP_MAX_CONSTRAINTS];
    double seconds;         /* wall time of the solve */
    char solver[32];        /* "glpk-ilp", "dp", "bruteforce", ... */
    int time_limited;       /* 1: a wall-clock limit cut the search short, so
                             * the result may differ between runs or
                             * machines (callers should warn); 0: the result
                             * depends on the input alone */
    long nodes;             /* branch-and-bound subproblems (ILP), else 0 */
} bp_solution;

/* Allocates choice[] for n_items; caller destroys. */
int bp_solution_init(bp_solution *s, size_t n_items, bp_error *err);
void bp_solution_free(bp_solution *s);
/* Recompute objective and cost_total from choice[]; BP_EINVAL if a choice
 * index is out of range. */
int bp_solution_evaluate(const bp_problem *p, bp_solution *s, bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
