/* Shared helpers for the solver tests: seeded random instances. */
#ifndef BITPLAN_TEST_SOLVE_UTIL_H
#define BITPLAN_TEST_SOLVE_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "bitplan/problem.h"

#include "../testutil/random_problem.h"

/* The solver tests' instances: items named "layer.N.weight", the second
 * constraint's cost spread 40, integer capacities at 0.15..0.95. */
static inline bp_problem *random_problem(uint64_t seed, int min_items, int max_items, int min_ch,
                                         int max_ch, size_t m)
{
    random_problem_opts o = {1, "layer.%d.weight", 40, 0, 0.15, 0.95};
    return random_problem_ex(seed, min_items, max_items, min_ch, max_ch, m, &o);
}

#endif
