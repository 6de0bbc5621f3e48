/* bitplan: Lagrangian relaxation for very large allocation problems.
 *
 * bp_solve_lagrange solves a bp_problem approximately when it is too large
 * for the exact solvers of solve.h (block-level problems: 10^5 to 10^7
 * items). It returns a feasible assignment together with a proven lower
 * bound on the optimum, so the caller knows how far from optimal it may be:
 *
 *   s->objective  error of the returned (feasible) assignment
 *   s->bound      best Lagrangian dual value found (valid lower bound on the
 *                 optimum, with a rounding margin subtracted)
 *   s->gap        (objective - bound) / max(|objective|, 1e-300)
 *   s->status     BP_SOLVE_OPTIMAL only when gap == 0 exactly (e.g. the
 *                 most accurate choice of every item fits), else FEASIBLE.
 *
 * One constraint: per item the lower convex hull of (cost, error) is built,
 * the exact LP-optimal multiplier is found by a radix selection over the
 * hull slopes, the greedy assignment is repaired/improved. Several
 * constraints (up to 8): coordinate ascent then subgradient steps on the
 * multiplier vector, then repair of violated constraints and greedy
 * improvement. Algorithms, bound and determinism: docs/search.md.
 *
 * Deterministic: identical input gives an identical assignment, objective
 * and bound with any thread count (fixed-size chunks, partial sums
 * combined in chunk order).
 */
#ifndef BITPLAN_LAGRANGE_H
#define BITPLAN_LAGRANGE_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/problem.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_lagrange_options {
    int threads;          /* OpenMP threads; <= 0: OpenMP's default. Never
                           * changes the result. */
    int max_iterations;   /* subgradient steps (2+ constraints); <= 0: 200 */
    int coord_sweeps;     /* coordinate-ascent sweeps before the
                           * subgradient steps (2+ constraints); < 0: 3 */
    int improve_rounds;   /* rounds of greedy upgrades after repair;
                           * < 0: 16, 0 = no improvement */
} bp_lagrange_options;

void bp_lagrange_options_default(bp_lagrange_options *o);

/* o may be NULL (defaults). s must be zeroed ({0}) or come from
 * bp_solution_init; s->choice is (re)allocated for p->n_items and freed by
 * the caller with bp_solution_free. p is not modified.
 *
 * Returns BP_OK with status OPTIMAL or FEASIBLE (solver "lagrange");
 * BP_EINVAL (problem or options; message names the input);
 * BP_EINFEASIBLE with status INFEASIBLE when a capacity is below its
 * constraint's smallest achievable total (message as bp_solve_ilp:
 * "constraint 'bytes': capacity C < smallest achievable M"), or when the
 * Lagrangian dual proves that the constraints cannot hold together;
 * BP_ESOLVER with status NO_SOLUTION when, with 2+ constraints, repair
 * found no feasible assignment and infeasibility is not proven (use
 * bp_solve_ilp); BP_ENOMEM. Unless the status is OPTIMAL or FEASIBLE,
 * choice[] entries are -1.
 *
 * Memory beyond p: about 4 bytes per kept (non-dominated) choice plus
 * ~12 bytes per item. */
int bp_solve_lagrange(const bp_problem *p, const bp_lagrange_options *o,
                      bp_solution *s, bp_error *err);

/* The lower convex hull of item `item` in the (cost of constraint j, error)
 * plane, as used by bp_solve_lagrange: choices sorted by cost ascending
 * with strictly decreasing error and strictly decreasing error-per-cost
 * slopes (collinear middle points removed); among choices with equal cost
 * the smallest error is kept, among identical choices the lowest index.
 * Writes local choice indices (0-based within the item) to hull, which must
 * have room for the item's number of choices, and their count to *n_hull.
 * Returns BP_OK or BP_EINVAL (NULL arguments, item or j out of range, or a
 * non-finite / negative value in that item). */
int bp_lagrange_item_hull(const bp_problem *p, size_t item, size_t j,
                          int32_t *hull, size_t *n_hull, bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
