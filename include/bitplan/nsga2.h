/* bitplan: NSGA-II multi-objective search over the additive error proxy.
 *
 * Objectives (all minimized): the total error and the total cost of every
 * constraint of the problem (bytes, latency, ...). With use_caps the
 * capacities are hard caps: infeasible individuals lose against feasible
 * ones and against less-violating ones (Deb's constrained domination) and
 * never appear in the returned front.
 *
 * Standard NSGA-II (Deb et al. 2002): fast non-dominated sort, crowding
 * distance, binary tournament, uniform crossover per item, mutation that
 * moves an item to a neighbouring choice in its cost-sorted menu. The
 * initial population holds the cheapest assignment, the most accurate one,
 * the cheapest per constraint, the caller's seed assignments (e.g. ILP
 * optima for several budgets) and random interpolations between the
 * cheapest and the most accurate. An archive keeps every distinct
 * non-dominated (feasible, with caps) individual seen during the run,
 * truncated by crowding distance to archive_max members; the caller's
 * seeds are never truncated, only replaced by members that dominate them.
 * The archive is the returned front. The random generator is splitmix64
 * seeding one xoshiro256** stream per offspring pair, so the result depends
 * only on the seed, never on the thread count. Details: docs/search.md.
 */
#ifndef BITPLAN_NSGA2_H
#define BITPLAN_NSGA2_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/problem.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_nsga2_options {
    size_t population;      /* even, 4..100000; default 100 */
    size_t generations;     /* default 200; 0 = the initial population only */
    uint64_t seed;          /* RNG seed; default 1 */
    int threads;            /* OpenMP threads; <= 0: OpenMP's default */
    double crossover_prob;  /* per pair, [0, 1]; default 0.9 */
    double mutation_prob;   /* per item, [0, 1]; < 0 (default -1) means
                             * 1 / n_items */
    int use_caps;           /* 1 (default): capacities are hard caps;
                             * 0: ignored, the whole trade-off is explored */
    const int32_t *const *seeds; /* n_seeds assignments, each n_items local
                             * choice indices (like bp_solution.choice);
                             * copied into the initial population */
    size_t n_seeds;         /* at most population - 2 */
    size_t archive_max;     /* archive size after truncation; 0 (default)
                             * means 10 x population; at least n_seeds */
} bp_nsga2_options;

void bp_nsga2_options_default(bp_nsga2_options *o);

typedef struct bp_pareto_front {
    size_t n;               /* members */
    size_t n_items;
    size_t n_objectives;    /* 1 + n_constraints */
    int32_t *choice;        /* n * n_items: member k's local choice index of
                             * item i at choice[k * n_items + i] */
    double *objective;      /* n * n_objectives: member k's total error at
                             * [k * n_objectives], cost of constraint j at
                             * [k * n_objectives + 1 + j]; summed in item
                             * order from 0.0 like bp_solution_evaluate */
    size_t generations;     /* generations run */
} bp_pareto_front;

/* Frees the front and sets *f = NULL; safe on NULL and twice. */
void bp_pareto_front_destroy(bp_pareto_front **f);

/* o may be NULL (defaults). On BP_OK *out is a new front (caller destroys)
 * holding the archive: distinct, mutually non-dominated assignments
 * (feasible ones only with use_caps), sorted by the first cost ascending,
 * then error, then the other costs, then the choice vector. Returns
 * BP_EINVAL (problem or options: odd or too small population, probability
 * outside [0, 1], a seed out of range, ...), BP_EINFEASIBLE (use_caps and a
 * capacity below its constraint's smallest achievable total, message as
 * bp_solve_ilp), BP_ENOTFOUND (use_caps and no individual satisfied every
 * cap during the run), BP_ENOMEM. *out is NULL on error. */
int bp_nsga2_run(const bp_problem *p, const bp_nsga2_options *o,
                 bp_pareto_front **out, bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
