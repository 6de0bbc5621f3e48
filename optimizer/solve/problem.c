/* bitplan: the flat problem container, its validation and solution helpers. */
#include "bitplan/problem.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "solve_internal.h"

/* Item names are tensor names; anything longer is not one. */
#define ITEM_NAME_MAX 4096

bp_problem *bp_problem_new(size_t n_constraints)
{
    if (n_constraints < 1 || n_constraints > BP_MAX_CONSTRAINTS)
        return NULL;
    bp_problem *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n_constraints = n_constraints;
    p->item_start = calloc(1, sizeof *p->item_start);
    if (!p->item_start) {
        free(p);
        return NULL;
    }
    /* Default names keep messages readable if the caller never names them;
     * the default capacity 0 makes a forgotten budget fail loudly as
     * infeasible rather than silently unconstrained. */
    for (size_t j = 0; j < n_constraints; j++)
        snprintf(p->constraint_name[j], BP_CONSTRAINT_NAME_MAX, "c%zu", j);
    return p;
}

void bp_problem_destroy(bp_problem **pp)
{
    if (!pp || !*pp)
        return;
    bp_problem *p = *pp;
    if (p->item_name) {
        for (size_t i = 0; i < p->n_items; i++)
            free(p->item_name[i]);
    }
    free(p->item_name);
    free(p->item_start);
    free(p->error);
    free(p->cost);
    free(p->label);
    free(p);
    *pp = NULL;
}

static int grow_items(bp_problem *p, bp_error *err)
{
    if (p->n_items < p->cap_items)
        return BP_OK;
    size_t cap = p->cap_items ? p->cap_items * 2 : 16;
    if (cap > BP__GLPK_MAX_ROWS)
        cap = BP__GLPK_MAX_ROWS;
    if (cap <= p->n_items)
        return bp_error_set(err, BP_EINVAL, "problem: more than %u items",
                            BP__GLPK_MAX_ROWS);
    size_t *st = realloc(p->item_start, (cap + 1) * sizeof *st);
    if (!st)
        return bp_error_set(err, BP_ENOMEM, "problem: out of memory for %zu items", cap);
    p->item_start = st;
    char **nm = realloc(p->item_name, cap * sizeof *nm);
    if (!nm)
        return bp_error_set(err, BP_ENOMEM, "problem: out of memory for %zu items", cap);
    p->item_name = nm;
    p->cap_items = cap;
    return BP_OK;
}

static int grow_choices(bp_problem *p, bp_error *err)
{
    if (p->n_choices < p->cap_choices)
        return BP_OK;
    size_t cap = p->cap_choices ? p->cap_choices * 2 : 64;
    if (cap > BP__GLPK_MAX_COLS)
        cap = BP__GLPK_MAX_COLS;
    if (cap <= p->n_choices)
        return bp_error_set(err, BP_EINVAL, "problem: more than %u choices",
                            BP__GLPK_MAX_COLS);
    double *e = realloc(p->error, cap * sizeof *e);
    if (!e)
        goto oom;
    p->error = e;
    double *c = realloc(p->cost, cap * p->n_constraints * sizeof *c);
    if (!c)
        goto oom;
    p->cost = c;
    int32_t *l = realloc(p->label, cap * sizeof *l);
    if (!l)
        goto oom;
    p->label = l;
    p->cap_choices = cap;
    return BP_OK;
oom:
    return bp_error_set(err, BP_ENOMEM, "problem: out of memory for %zu choices", cap);
}

int bp_problem_add_item(bp_problem *p, const char *name, bp_error *err)
{
    if (!p)
        return bp_error_set(err, BP_EINVAL, "problem: NULL");
    if (!name || !name[0])
        return bp_error_set(err, BP_EINVAL, "problem: item %zu: empty name", p->n_items);
    if (strnlen(name, ITEM_NAME_MAX + 1) > ITEM_NAME_MAX)
        return bp_error_set(err, BP_EINVAL, "problem: item %zu: name longer than %d bytes",
                            p->n_items, ITEM_NAME_MAX);
    int rc = grow_items(p, err);
    if (rc)
        return rc;
    char *copy = strdup(name);
    if (!copy)
        return bp_error_set(err, BP_ENOMEM, "problem: item '%.200s': out of memory", name);
    p->item_name[p->n_items] = copy;
    p->n_items++;
    p->item_start[p->n_items] = p->n_choices;
    return BP_OK;
}

static int check_value(double v, const char *what, int nonneg, const bp_problem *p,
                       size_t item, size_t choice, size_t j, bp_error *err)
{
    const char *why = NULL;
    if (isnan(v))
        why = "is NaN";
    else if (!isfinite(v))
        why = "is infinite";
    else if (fabs(v) > BP__MAX_ABS_VALUE)
        why = "exceeds 1e100 in magnitude";
    else if (nonneg && v < 0)
        why = "is negative";
    if (!why)
        return BP_OK;
    char num[40];
    bp__fmt_double(v, num, sizeof num);
    if (j == SIZE_MAX)
        return bp_error_set(err, BP_EINVAL, "problem: item %zu ('%.200s'): choice %zu: %s %s (%s)",
                            item, p->item_name[item], choice, what, why, num);
    return bp_error_set(err, BP_EINVAL,
                        "problem: item %zu ('%.200s'): choice %zu: %s of constraint '%s' %s (%s)",
                        item, p->item_name[item], choice, what, p->constraint_name[j], why, num);
}

int bp_problem_add_choice(bp_problem *p, int32_t label, double error, const double *costs,
                          bp_error *err)
{
    if (!p || !costs)
        return bp_error_set(err, BP_EINVAL, "problem: NULL argument to add_choice");
    if (p->n_items == 0)
        return bp_error_set(err, BP_EINVAL, "problem: add_choice before any add_item");
    size_t item = p->n_items - 1;
    size_t choice = p->n_choices - p->item_start[item];
    int rc = check_value(error, "error", 0, p, item, choice, SIZE_MAX, err);
    for (size_t j = 0; !rc && j < p->n_constraints; j++)
        rc = check_value(costs[j], "cost", 1, p, item, choice, j, err);
    if (rc)
        return rc;
    rc = grow_choices(p, err);
    if (rc)
        return rc;
    size_t k = p->n_choices;
    p->error[k] = error;
    p->label[k] = label;
    memcpy(p->cost + k * p->n_constraints, costs, p->n_constraints * sizeof *costs);
    p->n_choices++;
    p->item_start[p->n_items] = p->n_choices;
    return BP_OK;
}

int bp_problem_set_constraint(bp_problem *p, size_t j, const char *name, double capacity,
                              bp_error *err)
{
    if (!p)
        return bp_error_set(err, BP_EINVAL, "problem: NULL");
    if (j >= p->n_constraints)
        return bp_error_set(err, BP_EINVAL, "problem: constraint %zu out of range (%zu constraints)",
                            j, p->n_constraints);
    if (!name || !name[0])
        return bp_error_set(err, BP_EINVAL, "problem: constraint %zu: empty name", j);
    if (strlen(name) >= BP_CONSTRAINT_NAME_MAX)
        return bp_error_set(err, BP_EINVAL, "problem: constraint '%.64s': name longer than %d bytes",
                            name, BP_CONSTRAINT_NAME_MAX - 1);
    if (!isfinite(capacity) || fabs(capacity) > BP__MAX_ABS_VALUE) {
        char num[40];
        return bp_error_set(err, BP_EINVAL, "problem: constraint '%s': capacity %s is not finite",
                            name, bp__fmt_double(capacity, num, sizeof num));
    }
    snprintf(p->constraint_name[j], BP_CONSTRAINT_NAME_MAX, "%s", name);
    p->capacity[j] = capacity;
    return BP_OK;
}

int bp_problem_validate(const bp_problem *p, bp_error *err)
{
    if (!p)
        return bp_error_set(err, BP_EINVAL, "problem: NULL");
    size_t m = p->n_constraints;
    if (m < 1 || m > BP_MAX_CONSTRAINTS)
        return bp_error_set(err, BP_EINVAL, "problem: n_constraints %zu outside 1..%d", m,
                            BP_MAX_CONSTRAINTS);
    if (p->n_items == 0)
        return bp_error_set(err, BP_EINVAL, "problem: no items");
    /* GLPK ceilings: one column per choice, one row per item and per
     * constraint, at most 1 + m non-zeros per column. Checked by division so
     * that hostile counts cannot overflow. */
    if (p->n_choices > BP__GLPK_MAX_COLS)
        return bp_error_set(err, BP_EINVAL, "problem: %zu choices exceed the solver limit %u",
                            p->n_choices, BP__GLPK_MAX_COLS);
    if (p->n_items > BP__GLPK_MAX_ROWS - m)
        return bp_error_set(err, BP_EINVAL, "problem: %zu items exceed the solver limit %u",
                            p->n_items, BP__GLPK_MAX_ROWS - (unsigned)m);
    if (p->n_choices > BP__GLPK_MAX_NNZ / (m + 1))
        return bp_error_set(err, BP_EINVAL,
                            "problem: %zu choices x %zu rows exceed the solver's %u non-zeros",
                            p->n_choices, m + 1, BP__GLPK_MAX_NNZ);
    if (!p->item_start || !p->item_name || !p->error || !p->cost)
        return bp_error_set(err, BP_EINVAL, "problem: missing arrays");
    for (size_t j = 0; j < m; j++) {
        const char *nm = p->constraint_name[j];
        size_t len = strnlen(nm, BP_CONSTRAINT_NAME_MAX);
        if (len == 0 || len == BP_CONSTRAINT_NAME_MAX)
            return bp_error_set(err, BP_EINVAL, "problem: constraint %zu: name empty or unterminated",
                                j);
        double c = p->capacity[j];
        if (!isfinite(c) || fabs(c) > BP__MAX_ABS_VALUE) {
            char num[40];
            return bp_error_set(err, BP_EINVAL, "problem: constraint '%s': capacity %s is not finite",
                                nm, bp__fmt_double(c, num, sizeof num));
        }
    }
    if (p->item_start[0] != 0)
        return bp_error_set(err, BP_EINVAL, "problem: item_start[0] is %zu, not 0", p->item_start[0]);
    for (size_t i = 0; i < p->n_items; i++) {
        const char *nm = p->item_name[i];
        if (!nm || !nm[0])
            return bp_error_set(err, BP_EINVAL, "problem: item %zu: empty name", i);
        size_t a = p->item_start[i], b = p->item_start[i + 1];
        if (b <= a)
            return bp_error_set(err, BP_EINVAL, "problem: item %zu ('%.200s'): no choices", i, nm);
        if (b > p->n_choices)
            return bp_error_set(err, BP_EINVAL,
                                "problem: item %zu ('%.200s'): choices end at %zu, past %zu choices",
                                i, nm, b, p->n_choices);
        if (b - a > INT32_MAX)
            return bp_error_set(err, BP_EINVAL, "problem: item %zu ('%.200s'): too many choices",
                                i, nm);
        for (size_t k = a; k < b; k++) {
            int rc = check_value(p->error[k], "error", 0, p, i, k - a, SIZE_MAX, err);
            for (size_t j = 0; !rc && j < m; j++)
                rc = check_value(p->cost[k * m + j], "cost", 1, p, i, k - a, j, err);
            if (rc)
                return rc;
        }
    }
    if (p->item_start[p->n_items] != p->n_choices)
        return bp_error_set(err, BP_EINVAL, "problem: items cover %zu choices, n_choices is %zu",
                            p->item_start[p->n_items], p->n_choices);
    return BP_OK;
}

double bp_problem_min_cost(const bp_problem *p, size_t j)
{
    if (!p || j >= p->n_constraints || !p->item_start || !p->cost)
        return NAN;
    size_t m = p->n_constraints;
    double total = 0.0; /* summed in item order, like bp_solution_evaluate */
    for (size_t i = 0; i < p->n_items; i++) {
        size_t a = p->item_start[i], b = p->item_start[i + 1];
        if (b <= a)
            return NAN;
        double best = p->cost[a * m + j];
        for (size_t k = a + 1; k < b; k++)
            if (p->cost[k * m + j] < best)
                best = p->cost[k * m + j];
        total += best;
    }
    return total;
}

const char *bp_solve_status_name(bp_solve_status s)
{
    switch (s) {
    case BP_SOLVE_OPTIMAL:
        return "optimal";
    case BP_SOLVE_FEASIBLE:
        return "feasible";
    case BP_SOLVE_INFEASIBLE:
        return "infeasible";
    case BP_SOLVE_NO_SOLUTION:
        return "no_solution";
    }
    return "unknown";
}

static void reset_solution(bp_solution *s)
{
    for (size_t i = 0; i < s->n_items; i++)
        s->choice[i] = -1;
    s->status = BP_SOLVE_NO_SOLUTION;
    s->objective = 0.0;
    s->bound = 0.0;
    s->gap = 0.0;
    for (size_t j = 0; j < BP_MAX_CONSTRAINTS; j++)
        s->cost_total[j] = 0.0;
    s->seconds = 0.0;
    s->solver[0] = '\0';
    s->time_limited = 0;
    s->nodes = 0;
}

int bp_solution_init(bp_solution *s, size_t n_items, bp_error *err)
{
    if (!s)
        return bp_error_set(err, BP_EINVAL, "solution: NULL");
    memset(s, 0, sizeof *s);
    /* One slot even for zero items so that choice == NULL always means
     * "not initialized". */
    s->choice = malloc((n_items ? n_items : 1) * sizeof *s->choice);
    if (!s->choice)
        return bp_error_set(err, BP_ENOMEM, "solution: out of memory for %zu items", n_items);
    s->n_items = n_items;
    reset_solution(s);
    return BP_OK;
}

void bp_solution_free(bp_solution *s)
{
    if (!s)
        return;
    free(s->choice);
    s->choice = NULL;
    s->n_items = 0;
}

int bp_solution_evaluate(const bp_problem *p, bp_solution *s, bp_error *err)
{
    if (!p || !s || !s->choice)
        return bp_error_set(err, BP_EINVAL, "solution: NULL");
    if (s->n_items != p->n_items)
        return bp_error_set(err, BP_EINVAL, "solution: %zu items, problem has %zu", s->n_items,
                            p->n_items);
    size_t m = p->n_constraints;
    if (m < 1 || m > BP_MAX_CONSTRAINTS)
        return bp_error_set(err, BP_EINVAL, "solution: problem has %zu constraints", m);
    for (size_t i = 0; i < p->n_items; i++) {
        size_t n = p->item_start[i + 1] - p->item_start[i];
        if (s->choice[i] < 0 || (size_t)s->choice[i] >= n)
            return bp_error_set(err, BP_EINVAL, "solution: item %zu ('%.200s'): choice %d not in 0..%zu",
                                i, p->item_name[i], (int)s->choice[i], n ? n - 1 : 0);
    }
    /* Fixed order (item 0 first, starting from 0.0), so every solver that
     * picks the same assignment reports bit-identical totals. */
    double obj = 0.0, tot[BP_MAX_CONSTRAINTS] = {0};
    for (size_t i = 0; i < p->n_items; i++) {
        size_t k = p->item_start[i] + (size_t)s->choice[i];
        obj += p->error[k];
        for (size_t j = 0; j < m; j++)
            tot[j] += p->cost[k * m + j];
    }
    s->objective = obj;
    for (size_t j = 0; j < BP_MAX_CONSTRAINTS; j++)
        s->cost_total[j] = tot[j];
    return BP_OK;
}

/* ---- helpers shared by the solvers ---- */

int bp__solution_prepare(const bp_problem *p, bp_solution *s, const char *solver, bp_error *err)
{
    if (!s)
        return bp_error_set(err, BP_EINVAL, "solution: NULL");
    if (!s->choice || s->n_items != p->n_items) {
        bp_solution_free(s);
        int rc = bp_solution_init(s, p->n_items, err);
        if (rc)
            return rc;
    }
    reset_solution(s);
    snprintf(s->solver, sizeof s->solver, "%s", solver);
    return BP_OK;
}

void bp__solution_set_infeasible(bp_solution *s)
{
    for (size_t i = 0; i < s->n_items; i++)
        s->choice[i] = -1;
    s->status = BP_SOLVE_INFEASIBLE;
    s->objective = s->bound = s->gap = 0.0;
    for (size_t j = 0; j < BP_MAX_CONSTRAINTS; j++)
        s->cost_total[j] = 0.0;
}

const char *bp__fmt_double(double v, char *buf, size_t size)
{
    snprintf(buf, size, "%.15g", v);
    if (isfinite(v) && strtod(buf, NULL) != v)
        snprintf(buf, size, "%.17g", v);
    return buf;
}

int bp__precheck_capacity(const bp_problem *p, bp_error *err)
{
    char msg[BP_ERROR_MSG_MAX];
    size_t len = 0;
    int bad = 0;
    msg[0] = '\0';
    for (size_t j = 0; j < p->n_constraints; j++) {
        double need = bp_problem_min_cost(p, j);
        if (!(p->capacity[j] < need))
            continue;
        char a[40], b[40];
        int n = snprintf(msg + len, sizeof msg - len, "%sconstraint '%s': capacity %s < smallest achievable %s",
                         bad ? "; " : "", p->constraint_name[j],
                         bp__fmt_double(p->capacity[j], a, sizeof a), bp__fmt_double(need, b, sizeof b));
        if (n > 0)
            len += (size_t)n < sizeof msg - len ? (size_t)n : sizeof msg - len - 1;
        bad++;
    }
    if (!bad)
        return BP_OK;
    return bp_error_set(err, BP_EINFEASIBLE, "%s", msg);
}

int bp__joint_infeasible(const bp_problem *p, bp_error *err)
{
    char msg[BP_ERROR_MSG_MAX];
    size_t len = 0;
    int n = snprintf(msg, sizeof msg,
                     "each constraint alone is satisfiable but no assignment satisfies all together (");
    if (n > 0)
        len = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
    for (size_t j = 0; j < p->n_constraints && len < sizeof msg - 1; j++) {
        char a[40], b[40];
        n = snprintf(msg + len, sizeof msg - len, "%sconstraint '%s': capacity %s >= smallest achievable %s",
                     j ? "; " : "", p->constraint_name[j],
                     bp__fmt_double(p->capacity[j], a, sizeof a),
                     bp__fmt_double(bp_problem_min_cost(p, j), b, sizeof b));
        if (n > 0)
            len += (size_t)n < sizeof msg - len ? (size_t)n : sizeof msg - len - 1;
    }
    if (len < sizeof msg - 1)
        snprintf(msg + len, sizeof msg - len, ")");
    return bp_error_set(err, BP_EINFEASIBLE, "%s", msg);
}
