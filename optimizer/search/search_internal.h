/* bitplan: helpers shared by the files of optimizer/search/ (not public). */
#ifndef BITPLAN_SEARCH_INTERNAL_H
#define BITPLAN_SEARCH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/problem.h"

/* Items per chunk of every parallel pass. Partial results are kept per
 * chunk and combined in chunk order, so results do not depend on the thread
 * count. */
#define BP__SEARCH_CHUNK ((size_t)1 << 16)

/* Top bit of a menu entry: the choice is on its item's lower convex hull
 * (single-constraint menus only). Choice indices are < 1e8 (validated). */
#define BP__HULL_FLAG 0x80000000u
#define BP__INDEX_MASK 0x7fffffffu

/* Per-item reduced menus, CSR: the kept choices of item i are
 * idx[start[i] .. start[i+1]) (global choice indices into p's arrays).
 * One constraint: the Pareto staircase of (cost, error) sorted by cost
 * ascending, hull points flagged. Several: the choices that no other choice
 * of the item dominates in (error, every cost), in index order. */
typedef struct bp__menu {
    size_t n_items;
    uint32_t *start;
    uint32_t *idx;
    size_t max_kept; /* largest kept count of one item */
} bp__menu;

int bp__menu_build(const bp_problem *p, int threads, bp__menu *mn, bp_error *err);
void bp__menu_free(bp__menu *mn);

/* Hull of one item under constraint j: the staircase + hull flags of the
 * single-constraint menu, written as global indices (flag bit set on hull
 * points) to out (room for the item's choice count); returns the count.
 * tmp: room for the item's choice count. */
size_t bp__item_staircase(const bp_problem *p, size_t item, size_t j, uint32_t *tmp,
                          uint32_t *out);

/* The gain per unit of cost between two hull points (cost ascending). The
 * one expression used everywhere, so that comparisons are consistent. */
static inline double bp__slope(double e0, double w0, double e1, double w1)
{
    return (e0 - e1) / (w1 - w0);
}

/* BP_OK when every capacity is at least its constraint's smallest
 * achievable total, else BP_EINFEASIBLE with bp_solve_ilp's message. */
int bp__search_precheck(const bp_problem *p, bp_error *err);
/* bp_solve_ilp's message for jointly infeasible constraints. */
int bp__search_joint_infeasible(const bp_problem *p, const char *why, bp_error *err);

/* Wall clock, seconds. */
double bp__search_now(void);

#endif
