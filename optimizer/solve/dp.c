/* bitplan: exact dynamic programming over Pareto-optimal (cost, error)
 * states for the single-constraint multiple-choice knapsack.
 *
 * After item i the frontier holds every (total cost, total error) pair that
 * some assignment of items 0..i reaches and that no other reachable pair
 * dominates, sorted by cost ascending with error strictly descending. The
 * next frontier is the Pareto merge of the current one shifted by each
 * choice of item i+1. States whose cost plus the cheapest completion
 * (sum of the remaining items' minimum costs) exceeds the capacity are
 * dropped. Every kept state stores (parent index, choice) so the optimal
 * assignment is rebuilt backwards from the last frontier's minimum-error
 * state.
 *
 * Costs are compared exactly. That is sound when every partial sum is
 * exactly representable, as for byte counts (integers below 2^53 stored in
 * doubles); with fractional costs rounding can differ between two orders of
 * summation and the DP may miss an assignment whose total equals the
 * capacity to the last ulp. Errors are accumulated in item order starting
 * from 0.0, exactly as bp_solution_evaluate does, so the objective the DP
 * optimizes is bit-identical to the one it reports.
 */
#include "bitplan/solve.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/progress.h"
#include "solve_internal.h"

#define DEFAULT_MAX_STATES 4000000L

typedef struct option {
    double cost;
    double error;
    int32_t choice; /* index within the item */
} option;

/* One frontier (or a merge buffer): structure of arrays. */
typedef struct front {
    double *cost, *error;
    uint32_t *parent;
    int32_t *choice;
    size_t n, cap;
} front;

static int front_reserve(front *f, size_t need)
{
    if (need <= f->cap)
        return 0;
    size_t cap = f->cap ? f->cap : 1024;
    while (cap < need)
        cap *= 2;
    double *c = realloc(f->cost, cap * sizeof *c);
    if (!c)
        return -1;
    f->cost = c;
    double *e = realloc(f->error, cap * sizeof *e);
    if (!e)
        return -1;
    f->error = e;
    uint32_t *p = realloc(f->parent, cap * sizeof *p);
    if (!p)
        return -1;
    f->parent = p;
    int32_t *ch = realloc(f->choice, cap * sizeof *ch);
    if (!ch)
        return -1;
    f->choice = ch;
    f->cap = cap;
    return 0;
}

static void front_free(front *f)
{
    free(f->cost);
    free(f->error);
    free(f->parent);
    free(f->choice);
    memset(f, 0, sizeof *f);
}

static int option_cmp(const void *a, const void *b)
{
    const option *x = a, *y = b;
    if (x->cost != y->cost)
        return x->cost < y->cost ? -1 : 1;
    if (x->error != y->error)
        return x->error < y->error ? -1 : 1;
    return (x->choice > y->choice) - (x->choice < y->choice);
}

/* out = Pareto(acc ∪ (cur shifted by o)), keeping only costs <= limit.
 * On equal (cost, error) the state already in acc wins, so among identical
 * totals the cheaper-sorted choice of this item is kept. */
static void merge(const front *acc, const front *cur, const option *o, double limit, front *out)
{
    size_t a = 0, b = 0, n = 0;
    double last = 0.0;
    int have = 0;
    while (a < acc->n || b < cur->n) {
        double c, e;
        uint32_t par;
        int32_t ch;
        int take_a;
        if (a == acc->n)
            take_a = 0;
        else if (b == cur->n)
            take_a = 1;
        else {
            double bc = cur->cost[b] + o->cost, be = cur->error[b] + o->error;
            take_a = acc->cost[a] < bc || (acc->cost[a] == bc && acc->error[a] <= be);
        }
        if (take_a) {
            c = acc->cost[a];
            e = acc->error[a];
            par = acc->parent[a];
            ch = acc->choice[a];
            a++;
        } else {
            c = cur->cost[b] + o->cost;
            e = cur->error[b] + o->error;
            par = (uint32_t)b;
            ch = o->choice;
            b++;
        }
        if (c > limit)
            break; /* both inputs are sorted by cost: nothing later fits */
        if (have && !(e < last))
            continue; /* dominated: error not below a cheaper kept state's */
        out->cost[n] = c;
        out->error[n] = e;
        out->parent[n] = par;
        out->choice[n] = ch;
        n++;
        last = e;
        have = 1;
    }
    out->n = n;
}

int bp_solve_dp(const bp_problem *p, long max_states, bp_solution *s, bp_error *err)
{
    double t0 = bp_now_seconds();
    int rc = bp_problem_validate(p, err);
    if (rc)
        return rc;
    if (p->n_constraints != 1)
        return bp_error_set(err, BP_EINVAL, "dp: needs exactly 1 constraint, problem has %zu",
                            p->n_constraints);
    if (max_states <= 0)
        max_states = DEFAULT_MAX_STATES;
    /* Parent indices are uint32_t. */
    size_t budget = (unsigned long)max_states > UINT32_MAX ? UINT32_MAX : (size_t)max_states;
    rc = bp__solution_prepare(p, s, "dp", err);
    if (rc)
        return rc;
    rc = bp__precheck_capacity(p, err);
    if (rc) {
        bp__solution_set_infeasible(s);
        s->seconds = bp_now_seconds() - t0;
        return rc;
    }

    size_t n = p->n_items;
    double cap = p->capacity[0];
    option *opt = malloc(p->n_choices * sizeof *opt);
    size_t *ostart = malloc((n + 1) * sizeof *ostart);
    double *rem = malloc((n + 1) * sizeof *rem);
    size_t *stage_off = malloc((n + 1) * sizeof *stage_off);
    uint32_t *bp_par = NULL;
    int32_t *bp_ch = NULL;
    size_t bp_n = 0, bp_cap = 0;
    front cur = {0}, acc = {0}, out = {0};
    if (!opt || !ostart || !rem || !stage_off) {
        rc = bp_error_set(err, BP_ENOMEM, "dp: out of memory");
        goto out;
    }

    /* Per item: the Pareto-optimal choices alone, by cost ascending. A
     * dominated choice can always be swapped for its dominator, so dropping
     * it keeps the optimum. */
    size_t no = 0;
    for (size_t i = 0; i < n; i++) {
        size_t a = p->item_start[i], b = p->item_start[i + 1];
        option *o = opt + no;
        for (size_t k = a; k < b; k++)
            o[k - a] = (option){p->cost[k], p->error[k], (int32_t)(k - a)};
        qsort(o, b - a, sizeof *o, option_cmp);
        size_t kept = 0;
        for (size_t k = 0; k < b - a; k++)
            if (kept == 0 || o[k].error < o[kept - 1].error)
                o[kept++] = o[k];
        ostart[i] = no;
        no += kept;
    }
    ostart[n] = no;
    rem[n] = 0.0;
    for (size_t i = n; i-- > 0;)
        rem[i] = rem[i + 1] + opt[ostart[i]].cost;

    if (front_reserve(&cur, 1)) {
        rc = bp_error_set(err, BP_ENOMEM, "dp: out of memory");
        goto out;
    }
    cur.cost[0] = 0.0;
    cur.error[0] = 0.0;
    cur.parent[0] = 0;
    cur.choice[0] = -1;
    cur.n = 1;

    for (size_t i = 0; i < n; i++) {
        double limit = cap - rem[i + 1];
        acc.n = 0;
        for (size_t t = ostart[i]; t < ostart[i + 1]; t++) {
            size_t need = acc.n + cur.n;
            if (front_reserve(&out, need)) {
                rc = bp_error_set(err, BP_ENOMEM, "dp: out of memory at item %zu", i);
                goto out;
            }
            merge(&acc, &cur, &opt[t], limit, &out);
            front tmp = acc;
            acc = out;
            out = tmp;
            if (acc.n > budget - bp_n) {
                rc = bp_error_set(err, BP_ENOMEM,
                                  "dp: more than %zu states at item %zu ('%.200s'); use the ILP",
                                  budget, i, p->item_name[i]);
                goto out;
            }
        }
        if (acc.n == 0) {
            /* Only reachable when rounding of fractional costs makes the
             * precheck and the DP disagree by an ulp. */
            bp__solution_set_infeasible(s);
            rc = bp__joint_infeasible(p, err);
            goto out;
        }
        if (bp_n + acc.n > bp_cap) {
            size_t c = bp_cap ? bp_cap : 4096;
            while (c < bp_n + acc.n)
                c *= 2;
            uint32_t *np = realloc(bp_par, c * sizeof *np);
            if (!np) {
                rc = bp_error_set(err, BP_ENOMEM, "dp: out of memory at item %zu", i);
                goto out;
            }
            bp_par = np;
            int32_t *nc = realloc(bp_ch, c * sizeof *nc);
            if (!nc) {
                rc = bp_error_set(err, BP_ENOMEM, "dp: out of memory at item %zu", i);
                goto out;
            }
            bp_ch = nc;
            bp_cap = c;
        }
        stage_off[i] = bp_n;
        memcpy(bp_par + bp_n, acc.parent, acc.n * sizeof *bp_par);
        memcpy(bp_ch + bp_n, acc.choice, acc.n * sizeof *bp_ch);
        bp_n += acc.n;
        front tmp = cur;
        cur = acc;
        acc = tmp;
    }

    /* Errors strictly decrease along the frontier: the last state is the
     * unique minimum-error one, and the cheapest among equal errors. */
    size_t idx = cur.n - 1;
    for (size_t i = n; i-- > 0;) {
        s->choice[i] = bp_ch[stage_off[i] + idx];
        idx = bp_par[stage_off[i] + idx];
    }
    rc = bp_solution_evaluate(p, s, err);
    if (rc)
        goto out;
    if (s->cost_total[0] > cap) {
        rc = bp_error_set(err, BP_ESOLVER, "dp: internal error: solution exceeds capacity");
        goto out;
    }
    s->status = BP_SOLVE_OPTIMAL;
    s->bound = s->objective;
    s->gap = 0.0;

out:
    if (rc && rc != BP_EINFEASIBLE) {
        for (size_t i = 0; i < s->n_items; i++)
            s->choice[i] = -1;
        s->status = BP_SOLVE_NO_SOLUTION;
    }
    s->seconds = bp_now_seconds() - t0;
    free(opt);
    free(ostart);
    free(rem);
    free(stage_off);
    free(bp_par);
    free(bp_ch);
    front_free(&cur);
    front_free(&acc);
    front_free(&out);
    return rc;
}
