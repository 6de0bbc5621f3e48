/* Shared helpers for the search tests: seeded random instances, checks. */
#ifndef BITPLAN_TEST_SEARCH_UTIL_H
#define BITPLAN_TEST_SEARCH_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "bitplan/problem.h"

#include "../testutil/random_problem.h"

/* The search tests' instances: items named "blk.N", the second
 * constraint's cost spread 30, capacities at frac_lo..frac_hi. */
static inline bp_problem *rand_problem(uint64_t seed, int min_items, int max_items, int min_ch,
                                       int max_ch, size_t m, double frac_lo, double frac_hi,
                                       int fractional)
{
    random_problem_opts o = {7, "blk.%d", 30, fractional, frac_lo, frac_hi};
    return random_problem_ex(seed, min_items, max_items, min_ch, max_ch, m, &o);
}

#endif
