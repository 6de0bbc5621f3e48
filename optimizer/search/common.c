/* bitplan: helpers shared by the search module: per-item menus (Pareto
 * staircase, lower convex hull), infeasibility messages, clock. */
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bitplan/lagrange.h"
#include "search_internal.h"

double bp__search_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Shortest "%.15g"/"%.17g" text of v that reads back as v (the same
 * formatting as optimizer/solve, so messages match bp_solve_ilp's). */
static const char *fmt_double(double v, char *buf, size_t size)
{
    snprintf(buf, size, "%.15g", v);
    if (isfinite(v) && strtod(buf, NULL) != v)
        snprintf(buf, size, "%.17g", v);
    return buf;
}

static void append(char *msg, size_t size, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void append(char *msg, size_t size, size_t *len, const char *fmt, ...)
{
    if (*len >= size - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg + *len, size - *len, fmt, ap);
    va_end(ap);
    if (n > 0)
        *len += (size_t)n < size - *len ? (size_t)n : size - *len - 1;
}

int bp__search_precheck(const bp_problem *p, bp_error *err)
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
        append(msg, sizeof msg, &len, "%sconstraint '%s': capacity %s < smallest achievable %s",
               bad ? "; " : "", p->constraint_name[j], fmt_double(p->capacity[j], a, sizeof a),
               fmt_double(need, b, sizeof b));
        bad++;
    }
    return bad ? bp_error_set(err, BP_EINFEASIBLE, "%s", msg) : BP_OK;
}

int bp__search_joint_infeasible(const bp_problem *p, const char *why, bp_error *err)
{
    char msg[BP_ERROR_MSG_MAX];
    size_t len = 0;
    msg[0] = '\0';
    append(msg, sizeof msg, &len,
           "each constraint alone is satisfiable but no assignment satisfies all together%s%s (",
           why ? " " : "", why ? why : "");
    for (size_t j = 0; j < p->n_constraints; j++) {
        char a[40], b[40];
        append(msg, sizeof msg, &len, "%sconstraint '%s': capacity %s >= smallest achievable %s",
               j ? "; " : "", p->constraint_name[j], fmt_double(p->capacity[j], a, sizeof a),
               fmt_double(bp_problem_min_cost(p, j), b, sizeof b));
    }
    append(msg, sizeof msg, &len, ")");
    return bp_error_set(err, BP_EINFEASIBLE, "%s", msg);
}

/* ---- per-item menus ---- */

/* Order of the staircase sort: cost of constraint j ascending, then error,
 * then index (a total order, so any correct sort gives the same result). */
static int before(const bp_problem *p, size_t j, uint32_t a, uint32_t b)
{
    size_t m = p->n_constraints;
    double ca = p->cost[(size_t)a * m + j], cb = p->cost[(size_t)b * m + j];
    if (ca != cb)
        return ca < cb;
    if (p->error[a] != p->error[b])
        return p->error[a] < p->error[b];
    return a < b;
}

/* Shell sort (Ciura gaps): in place, no recursion, no allocation. */
static void sort_choices(const bp_problem *p, size_t j, uint32_t *v, size_t n)
{
    static const size_t gaps[] = {1750, 701, 301, 132, 57, 23, 10, 4, 1};
    for (size_t g = 0; g < sizeof gaps / sizeof gaps[0]; g++) {
        size_t gap = gaps[g];
        for (size_t i = gap; i < n; i++) {
            uint32_t x = v[i];
            size_t k = i;
            while (k >= gap && before(p, j, x, v[k - gap])) {
                v[k] = v[k - gap];
                k -= gap;
            }
            v[k] = x;
        }
    }
}

size_t bp__item_staircase(const bp_problem *p, size_t item, size_t j, uint32_t *tmp,
                          uint32_t *out)
{
    size_t m = p->n_constraints;
    size_t a = p->item_start[item], b = p->item_start[item + 1];
    size_t n = b - a;
    int sorted = 1;
    for (size_t k = 0; k < n; k++) {
        tmp[k] = (uint32_t)(a + k);
        if (k && sorted && !before(p, j, tmp[k - 1], tmp[k]))
            sorted = 0;
    }
    if (!sorted) /* menus usually come in cost order already */
        sort_choices(p, j, tmp, n);
    /* Staircase: each kept choice is strictly more accurate than every
     * cheaper one (so costs are strictly increasing too: among equal costs
     * the first, most accurate, is kept). */
    size_t ns = 0;
    for (size_t k = 0; k < n; k++)
        if (ns == 0 || p->error[tmp[k]] < p->error[out[ns - 1]])
            out[ns++] = tmp[k];
    /* Lower convex hull (monotone chain on slopes): a point whose incoming
     * slope does not exceed its outgoing one lies on or above the chord of
     * its neighbours. Comparing the computed slopes themselves guarantees
     * strictly decreasing slopes along the hull as later code sees them. */
    uint32_t *st = tmp; /* stack of positions in out */
    size_t top = 0;
    for (size_t k = 0; k < ns; k++) {
        double ek = p->error[out[k]], wk = p->cost[(size_t)out[k] * m + j];
        while (top >= 2) {
            uint32_t u = out[st[top - 2]], v = out[st[top - 1]];
            double eu = p->error[u], wu = p->cost[(size_t)u * m + j];
            double ev = p->error[v], wv = p->cost[(size_t)v * m + j];
            if (bp__slope(eu, wu, ev, wv) <= bp__slope(ev, wv, ek, wk))
                top--;
            else
                break;
        }
        st[top++] = (uint32_t)k;
    }
    for (size_t t = 0; t < top; t++)
        out[st[t]] |= BP__HULL_FLAG;
    return ns;
}

/* Several constraints: choices not dominated in (error, all costs); among
 * identical choices the lowest index stays. Kept in index order. */
static size_t item_pareto(const bp_problem *p, size_t item, uint32_t *out)
{
    size_t m = p->n_constraints;
    size_t a = p->item_start[item], b = p->item_start[item + 1];
    size_t n = 0;
    for (size_t x = a; x < b; x++) {
        int dominated = 0;
        for (size_t y = a; y < b && !dominated; y++) {
            if (y == x || p->error[y] > p->error[x])
                continue;
            int strict = p->error[y] < p->error[x], worse = 0;
            for (size_t j = 0; j < m; j++) {
                double cy = p->cost[y * m + j], cx = p->cost[x * m + j];
                if (cy > cx) {
                    worse = 1;
                    break;
                }
                if (cy < cx)
                    strict = 1;
            }
            if (!worse && (strict || y < x))
                dominated = 1;
        }
        if (!dominated)
            out[n++] = (uint32_t)x;
    }
    return n;
}

void bp__menu_free(bp__menu *mn)
{
    if (!mn)
        return;
    free(mn->start);
    free(mn->idx);
    memset(mn, 0, sizeof *mn);
}

int bp__menu_build(const bp_problem *p, int threads, bp__menu *mn, bp_error *err)
{
    memset(mn, 0, sizeof *mn);
    size_t n = p->n_items, maxk = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = p->item_start[i + 1] - p->item_start[i];
        if (k > maxk)
            maxk = k;
    }
    int nt = threads > 0 ? threads : omp_get_max_threads();
    uint32_t *scratch = malloc((size_t)nt * 2 * maxk * sizeof *scratch);
    mn->start = malloc((n + 1) * sizeof *mn->start);
    if (!scratch || !mn->start)
        goto oom;
    mn->n_items = n;
    mn->idx = malloc((p->n_choices ? p->n_choices : 1) * sizeof *mn->idx);
    if (!mn->idx)
        goto oom;
    size_t n_chunks = (n + BP__SEARCH_CHUNK - 1) / BP__SEARCH_CHUNK;
    int one = p->n_constraints == 1;
    /* Each item's kept choices go where its choices start in p (kept <=
     * total), then one serial pass compacts them: one sort per item. */
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (n_chunks > 1)
    for (size_t c = 0; c < n_chunks; c++) {
        uint32_t *tmp = scratch + (size_t)omp_get_thread_num() * 2 * maxk;
        uint32_t *out = tmp + maxk;
        size_t lo = c * BP__SEARCH_CHUNK, hi = lo + BP__SEARCH_CHUNK < n ? lo + BP__SEARCH_CHUNK : n;
        for (size_t i = lo; i < hi; i++) {
            size_t cnt = one ? bp__item_staircase(p, i, 0, tmp, out) : item_pareto(p, i, out);
            mn->start[i + 1] = (uint32_t)cnt;
            memcpy(mn->idx + p->item_start[i], out, cnt * sizeof *out);
        }
    }
    mn->start[0] = 0;
    size_t maxkept = 0;
    for (size_t i = 0; i < n; i++) {
        size_t cnt = mn->start[i + 1];
        if (cnt > maxkept)
            maxkept = cnt;
        if (mn->start[i] != p->item_start[i])
            memmove(mn->idx + mn->start[i], mn->idx + p->item_start[i], cnt * sizeof *mn->idx);
        mn->start[i + 1] = (uint32_t)(mn->start[i] + cnt);
    }
    mn->max_kept = maxkept;
    uint32_t *shrunk = realloc(mn->idx, ((size_t)mn->start[n] ? (size_t)mn->start[n] : 1) * sizeof *shrunk);
    if (shrunk)
        mn->idx = shrunk;
    free(scratch);
    return BP_OK;
oom:
    free(scratch);
    bp__menu_free(mn);
    return bp_error_set(err, BP_ENOMEM, "lagrange: out of memory for the menus of %zu items", n);
}

/* ---- public hull helper ---- */

int bp_lagrange_item_hull(const bp_problem *p, size_t item, size_t j, int32_t *hull,
                          size_t *n_hull, bp_error *err)
{
    if (!p || !hull || !n_hull || !p->item_start || !p->error || !p->cost)
        return bp_error_set(err, BP_EINVAL, "lagrange hull: NULL argument");
    if (item >= p->n_items)
        return bp_error_set(err, BP_EINVAL, "lagrange hull: item %zu out of range (%zu items)", item,
                            p->n_items);
    if (p->n_constraints < 1 || p->n_constraints > BP_MAX_CONSTRAINTS || j >= p->n_constraints)
        return bp_error_set(err, BP_EINVAL, "lagrange hull: constraint %zu out of range", j);
    size_t a = p->item_start[item], b = p->item_start[item + 1], m = p->n_constraints;
    if (b <= a || b > p->n_choices || b - a > INT32_MAX)
        return bp_error_set(err, BP_EINVAL, "lagrange hull: item %zu has no valid choices", item);
    for (size_t k = a; k < b; k++) {
        double e = p->error[k], w = p->cost[k * m + j];
        if (!isfinite(e) || !isfinite(w) || w < 0 || fabs(e) > 1e100 || w > 1e100)
            return bp_error_set(err, BP_EINVAL,
                                "lagrange hull: item %zu: choice %zu: error or cost not finite, "
                                "negative or above 1e100",
                                item, k - a);
    }
    uint32_t *tmp = malloc(2 * (b - a) * sizeof *tmp);
    if (!tmp)
        return bp_error_set(err, BP_ENOMEM, "lagrange hull: out of memory");
    size_t ns = bp__item_staircase(p, item, j, tmp, tmp + (b - a));
    size_t nh = 0;
    for (size_t k = 0; k < ns; k++) {
        uint32_t v = tmp[(b - a) + k];
        if (v & BP__HULL_FLAG)
            hull[nh++] = (int32_t)((v & BP__INDEX_MASK) - a);
    }
    *n_hull = nh;
    free(tmp);
    return BP_OK;
}
