/* Seeded random multiple-choice knapsacks for the solver and search tests
 * (tests/solve, tests/search, tests/job): one generator, so every oracle
 * comparison draws its instances the same way. */
#ifndef BITPLAN_TEST_RANDOM_PROBLEM_H
#define BITPLAN_TEST_RANDOM_PROBLEM_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "bitplan/problem.h"

typedef struct trng {
    uint64_t s;
} trng;

static inline uint64_t trng_next(trng *r) /* splitmix64 */
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline double trng_unit(trng *r) /* [0, 1) */
{
    return (double)(trng_next(r) >> 11) * 0x1.0p-53;
}

static inline int trng_int(trng *r, int lo, int hi) /* [lo, hi] */
{
    return lo + (int)(trng_next(r) % (uint64_t)(hi - lo + 1));
}

/* How an instance is drawn (see random_problem_ex). */
typedef struct random_problem_opts {
    uint64_t salt;        /* added to the mixed seed: separate streams */
    const char *name_fmt; /* item name, printf with the item index */
    int spread;           /* second+ constraints: cost = U{0..spread} + base/2 */
    int fractional;       /* costs get a random fractional part; capacities too */
    double frac_lo, frac_hi; /* capacity = lo + (hi - lo) * U[frac_lo, frac_hi) */
} random_problem_opts;

/* Random multiple-choice knapsack: items of min_ch..max_ch choices with
 * integer costs (like bytes; the further constraints loosely correlated,
 * like latency), errors falling with cost plus noise (so some choices are
 * dominated or off the hull), each capacity at a random fraction between
 * the smallest and largest achievable totals. */
static inline bp_problem *random_problem_ex(uint64_t seed, int min_items, int max_items, int min_ch,
                                            int max_ch, size_t m, const random_problem_opts *o)
{
    trng r = {seed * 0x2545f4914f6cdd1dull + o->salt};
    bp_problem *p = bp_problem_new(m);
    if (!p)
        return NULL;
    int n = trng_int(&r, min_items, max_items);
    double lo[BP_MAX_CONSTRAINTS] = {0}, hi[BP_MAX_CONSTRAINTS] = {0};
    for (int i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, o->name_fmt, i);
        bp_problem_add_item(p, name, NULL);
        int k = trng_int(&r, min_ch, max_ch);
        double scale = 0.5 + 4.0 * trng_unit(&r);
        double cmin[BP_MAX_CONSTRAINTS], cmax[BP_MAX_CONSTRAINTS];
        for (int c = 0; c < k; c++) {
            double costs[BP_MAX_CONSTRAINTS];
            double base = (double)trng_int(&r, 1, 60);
            for (size_t j = 0; j < m; j++) {
                costs[j] = j == 0 ? base : (double)trng_int(&r, 0, o->spread) + floor(base / 2);
                if (o->fractional)
                    costs[j] += trng_unit(&r);
                if (c == 0 || costs[j] < cmin[j])
                    cmin[j] = costs[j];
                if (c == 0 || costs[j] > cmax[j])
                    cmax[j] = costs[j];
            }
            double e = scale * exp2(-base / 12.0) * (0.7 + 0.6 * trng_unit(&r));
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
        double f = o->frac_lo + (o->frac_hi - o->frac_lo) * trng_unit(&r);
        double cap = lo[j] + (hi[j] - lo[j]) * f;
        if (!o->fractional)
            cap = floor(cap);
        bp_problem_set_constraint(p, j, name, cap, NULL);
    }
    return p;
}

#endif
