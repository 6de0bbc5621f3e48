/* bitplan: exhaustive enumeration, the oracle the other solvers are tested
 * against. Deliberately naive: no pruning, every total recomputed from
 * scratch in item order, so it shares no logic with the ILP or the DP. */
#include "bitplan/solve.h"

#include <stdlib.h>

#include "bitplan/progress.h"
#include "solve_internal.h"

#define DEFAULT_MAX_ASSIGNMENTS 10000000L

int bp_solve_bruteforce(const bp_problem *p, long max_assignments, bp_solution *s, bp_error *err)
{
    double t0 = bp_now_seconds();
    int rc = bp_problem_validate(p, err);
    if (rc)
        return rc;
    if (max_assignments <= 0)
        max_assignments = DEFAULT_MAX_ASSIGNMENTS;
    size_t n = p->n_items, m = p->n_constraints;
    unsigned long long count = 1;
    for (size_t i = 0; i < n; i++) {
        unsigned long long k = p->item_start[i + 1] - p->item_start[i];
        if (count > (unsigned long long)max_assignments / k)
            return bp_error_set(err, BP_EUNSUPPORTED,
                                "bruteforce: more than %ld assignments (item %zu)", max_assignments, i);
        count *= k;
    }
    rc = bp__solution_prepare(p, s, "bruteforce", err);
    if (rc)
        return rc;

    int32_t *idx = calloc(n, sizeof *idx);
    if (!idx)
        return bp_error_set(err, BP_ENOMEM, "bruteforce: out of memory");
    int found = 0;
    double best = 0.0;
    /* Odometer with item 0 changing fastest. Ties keep the first assignment
     * met in this order (strict < below). */
    for (;;) {
        double obj = 0.0, tot[BP_MAX_CONSTRAINTS] = {0};
        for (size_t i = 0; i < n; i++) {
            size_t k = p->item_start[i] + (size_t)idx[i];
            obj += p->error[k];
            for (size_t j = 0; j < m; j++)
                tot[j] += p->cost[k * m + j];
        }
        int ok = 1;
        for (size_t j = 0; j < m; j++)
            if (tot[j] > p->capacity[j])
                ok = 0;
        if (ok && (!found || obj < best)) {
            found = 1;
            best = obj;
            for (size_t i = 0; i < n; i++)
                s->choice[i] = idx[i];
        }
        size_t i = 0;
        while (i < n) {
            idx[i]++;
            if ((size_t)idx[i] < p->item_start[i + 1] - p->item_start[i])
                break;
            idx[i] = 0;
            i++;
        }
        if (i == n)
            break;
    }
    free(idx);

    if (!found) {
        bp__solution_set_infeasible(s);
        s->seconds = bp_now_seconds() - t0;
        rc = bp__precheck_capacity(p, err);
        return rc ? rc : bp__joint_infeasible(p, err);
    }
    rc = bp_solution_evaluate(p, s, err);
    if (rc)
        return rc;
    s->status = BP_SOLVE_OPTIMAL;
    s->bound = s->objective;
    s->gap = 0.0;
    s->seconds = bp_now_seconds() - t0;
    return BP_OK;
}
