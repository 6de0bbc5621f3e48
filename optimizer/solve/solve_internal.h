/* bitplan: helpers shared by the solver files (not public). */
#ifndef BITPLAN_SOLVE_INTERNAL_H
#define BITPLAN_SOLVE_INTERNAL_H

#include <stddef.h>

#include "bitplan/problem.h"

/* Ceilings from GLPK's src/api/prob1.c (M_MAX, N_MAX, NNZ_MAX). Checked by
 * bp_problem_validate so that no solver ever hands GLPK a size it would
 * reject with xerror() (which aborts). */
#define BP__GLPK_MAX_ROWS 100000000u
#define BP__GLPK_MAX_COLS 100000000u
#define BP__GLPK_MAX_NNZ 500000000u

/* Largest |error|, |cost| or |capacity| accepted. Finite is not enough:
 * sums of values near DBL_MAX overflow to Inf, and GLPK's tolerances are
 * meaningless at such scales. Byte counts and error metrics are far below. */
#define BP__MAX_ABS_VALUE 1e100

/* Make s ready for p: reuse choice[] when it already has p->n_items
 * entries, otherwise (re)allocate. s must be zeroed or come from
 * bp_solution_init. Resets every field; choice[] entries become -1. */
int bp__solution_prepare(const bp_problem *p, bp_solution *s,
                         const char *solver, bp_error *err);

/* Capacity check against per-constraint minima (exact, no GLPK). Returns
 * BP_OK when every constraint alone is satisfiable, else BP_EINFEASIBLE
 * with "constraint 'x': capacity C < smallest achievable M" for every
 * violated constraint (joined by "; "). */
int bp__precheck_capacity(const bp_problem *p, bp_error *err);

/* Message for a problem that passed the precheck but has no feasible
 * assignment: each constraint alone is satisfiable, together they are not. */
int bp__joint_infeasible(const bp_problem *p, bp_error *err);

/* Shortest "%.15g"/"%.17g" text of v that reads back as v. buf >= 32. */
const char *bp__fmt_double(double v, char *buf, size_t size);

/* Mark s infeasible (choice[] = -1, totals 0). */
void bp__solution_set_infeasible(bp_solution *s);

#endif
