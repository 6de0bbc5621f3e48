/* Shared helpers for the solver tests: seeded random instances. */
#ifndef BITPLAN_TEST_SOLVE_UTIL_H
#define BITPLAN_TEST_SOLVE_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "bitplan/problem.h"

typedef struct rng {
    uint64_t s;
} rng;

static inline uint64_t rng_next(rng *r)
{
    /* splitmix64 */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline double rng_unit(rng *r) /* [0, 1) */
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

static inline int rng_int(rng *r, int lo, int hi) /* [lo, hi] */
{
    return lo + (int)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

/* A random multiple-choice knapsack: integer costs (like bytes), errors
 * loosely decreasing with cost plus noise (so some choices are dominated),
 * capacities between the smallest and largest achievable totals. */
static inline bp_problem *random_problem(uint64_t seed, int min_items, int max_items, int min_ch,
                                         int max_ch, size_t m)
{
    rng r = {seed * 0x2545f4914f6cdd1dull + 1};
    bp_problem *p = bp_problem_new(m);
    if (!p)
        return NULL;
    int n = rng_int(&r, min_items, max_items);
    double lo[BP_MAX_CONSTRAINTS] = {0}, hi[BP_MAX_CONSTRAINTS] = {0};
    for (int i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "layer.%d.weight", i);
        bp_problem_add_item(p, name, NULL);
        int k = rng_int(&r, min_ch, max_ch);
        double scale = 0.5 + 4.0 * rng_unit(&r);
        double cmin[BP_MAX_CONSTRAINTS], cmax[BP_MAX_CONSTRAINTS];
        for (int c = 0; c < k; c++) {
            double costs[BP_MAX_CONSTRAINTS];
            double base = (double)rng_int(&r, 1, 60);
            for (size_t j = 0; j < m; j++) {
                costs[j] = j == 0 ? base : (double)rng_int(&r, 0, 40) + floor(base / 2);
                if (c == 0 || costs[j] < cmin[j])
                    cmin[j] = costs[j];
                if (c == 0 || costs[j] > cmax[j])
                    cmax[j] = costs[j];
            }
            double e = scale * exp2(-base / 12.0) * (0.7 + 0.6 * rng_unit(&r));
            bp_problem_add_choice(p, c, e, costs, NULL);
        }
        for (size_t j = 0; j < m; j++) {
            lo[j] += cmin[j];
            hi[j] += cmax[j];
        }
    }
    for (size_t j = 0; j < m; j++) {
        char name[16];
        snprintf(name, sizeof name, j == 0 ? "bytes" : "lat%zu", j);
        double cap = floor(lo[j] + (hi[j] - lo[j]) * (0.15 + 0.8 * rng_unit(&r)));
        bp_problem_set_constraint(p, j, name, cap, NULL);
    }
    return p;
}

#endif
