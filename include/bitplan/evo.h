/* bitplan: (1+lambda) evolutionary search on the real loss, ask/tell style.
 *
 * The additive proxy of a bp_problem (sum of per-tensor errors) ignores how
 * quantization errors interact. This search starts from a feasible plan
 * (normally the ILP optimum of the proxy) and improves it on a fitness the
 * caller measures, e.g. the KL(full precision || quantized) of the whole
 * model on calibration tokens. It never calls back: the caller asks for a
 * batch of candidates, evaluates them however it likes (in parallel, on
 * remote workers, in any order) and tells the fitness values back.
 *
 *   bp_evo_new(problem, seed, options)
 *   while (!bp_evo_done(e)) {
 *       bp_evo_ask(e, &batch)            -- n candidates, one fidelity
 *       ...measure fitness[k] of batch.choice + k * batch.n_items...
 *       bp_evo_tell(e, fitness, batch.n)
 *   }
 *   bp_evo_best(e, &choice, &fitness_high)
 *
 * Batches, in order:
 *   generation 0  the seed at low fidelity (skipped when generations == 0),
 *                 then the seed at high fidelity;
 *   generation g  lambda offspring of the parent at low fidelity; then the
 *                 (at most `promote`) best of them whose low fitness is
 *                 strictly below the parent's, at high fidelity (no high
 *                 batch when none is). The parent is replaced by the best
 *                 high-fidelity offspring whose high fitness is strictly
 *                 below the parent's.
 * Lower fitness is better. The parent is therefore always the best
 * high-fidelity candidate seen, never worse than the seed.
 *
 * Offspring: 1..moves steps, each moving one unit of budget: one item steps
 * up its ladder (next more expensive choice among its non-dominated ones)
 * and another steps down, or the up-step alone when it fits. Every emitted
 * candidate satisfies every constraint (totals summed in item order, as
 * bp_solution_evaluate does) and differs from every candidate asked
 * before. Details and defaults: docs/search.md, "Real-loss evolutionary
 * search".
 *
 * Deterministic: the candidates depend only on the problem, the seed
 * assignment, the options and the fitness values told.
 */
#ifndef BITPLAN_EVO_H
#define BITPLAN_EVO_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"
#include "bitplan/problem.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { BP_EVO_LOW = 0, BP_EVO_HIGH = 1 };

typedef struct bp_evo_options {
    size_t lambda;       /* offspring per generation, 1..4096; default 8 */
    size_t generations;  /* 0..100000; default 20; 0 = evaluate the seed only */
    size_t promote;      /* offspring re-evaluated at high fidelity per
                          * generation, 1..lambda; default 2 */
    uint64_t seed;       /* random seed; default 1 */
    unsigned min_moves;  /* budget moves per offspring, drawn uniformly in */
    unsigned max_moves;  /* [min_moves, max_moves], 1..64; default 1..2 */
    unsigned max_tries;  /* attempts per offspring before giving it up
                          * (infeasible or duplicate), 1..100000; default 64 */
    unsigned tournament; /* budget moves drawn per mutation, 1..64; the one
                          * the additive proxy likes best is made (moves the
                          * proxy rates nearly neutral are where its
                          * interactions hide); default 4 */
} bp_evo_options;

void bp_evo_options_default(bp_evo_options *o);

typedef struct bp_evo bp_evo;

/* A batch of candidates to evaluate, all at one fidelity. choice is owned
 * by the search and valid until the next bp_evo_tell or bp_evo_destroy. */
typedef struct bp_evo_batch {
    size_t n;               /* candidates; 0 only when the search is done */
    size_t n_items;
    const int32_t *choice;  /* candidate k's local choice index of item i at
                             * choice[k * n_items + i] (like bp_solution) */
    int fidelity;           /* BP_EVO_LOW or BP_EVO_HIGH */
    size_t generation;      /* 0 = the seed */
} bp_evo_batch;

/* p is borrowed and must outlive the search, unchanged. seed_choice has
 * p->n_items local choice indices and must satisfy every constraint. o may
 * be NULL (defaults). BP_EINVAL for a bad problem, options, or seed (out of
 * range index; an infeasible seed names the constraint, its total and its
 * capacity); BP_ENOMEM. *out is NULL on error. */
int bp_evo_new(const bp_problem *p, const int32_t *seed_choice, const bp_evo_options *o,
               bp_evo **out, bp_error *err);
void bp_evo_destroy(bp_evo **e);

/* The next batch. Asking again before telling returns the same batch.
 * When the search is done: BP_OK with b->n == 0. Generating offspring may
 * fail to find any new feasible candidate (every move tried was infeasible
 * or already evaluated): the search then ends early (done). BP_ENOMEM. */
int bp_evo_ask(bp_evo *e, bp_evo_batch *b, bp_error *err);

/* The fitness of every candidate of the batch just asked, in batch order.
 * BP_EINVAL (state unchanged) when no batch is pending, n differs from the
 * batch size, or a value is not finite (the message names its index). */
int bp_evo_tell(bp_evo *e, const double *fitness, size_t n, bp_error *err);

/* 1 when no batch remains. */
int bp_evo_done(const bp_evo *e);

/* The best assignment so far (the parent: the seed until an offspring beats
 * it at high fidelity) and its high-fidelity fitness. Returns BP_OK, or
 * BP_ENOTFOUND (with *choice = the seed and *fitness_high = NaN) before the
 * seed's high-fidelity fitness is known. Either output may be NULL. */
int bp_evo_best(const bp_evo *e, const int32_t **choice, double *fitness_high);

typedef struct bp_evo_stats {
    size_t generations;     /* generations completed (excluding the seed) */
    size_t evals_low;       /* candidates told at low fidelity (seed included) */
    size_t evals_high;      /* ... at high fidelity (seed included) */
    size_t accepted;        /* times the parent was replaced */
    size_t failed_offspring;/* offspring slots no try could fill */
    int stalled;            /* 1: ended early, a generation had no offspring */
    double seed_low, seed_high;    /* NaN until known (seed_low stays NaN
                                    * with generations == 0) */
    double parent_low, parent_high;/* the current parent's fitness */
} bp_evo_stats;

void bp_evo_get_stats(const bp_evo *e, bp_evo_stats *out);

/* Best high-fidelity fitness after each generation: (*best)[0] is the
 * seed's, (*best)[g] the parent's after generation g. Returns the count
 * (generations completed + 1, or 0 before the seed's high fitness is
 * known). The array is owned by the search, valid until the next tell. */
size_t bp_evo_history(const bp_evo *e, const double **best);

#ifdef __cplusplus
}
#endif
#endif
