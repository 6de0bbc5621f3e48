/* bitplan: the multiple-choice knapsack as a 0-1 ILP, solved with GLPK.
 *
 * Model: one binary x_{i,c} per kept (item, choice); one equality row per
 * item (sum_c x_{i,c} = 1); one <= row per constraint; minimize the summed
 * error. See docs/solvers.md for the formulation and the guards.
 *
 * GLPK aborts the process on invalid input (xerror -> abort), so nothing
 * reaches it unvalidated, and its error hook longjmps back here as a last
 * line of defence. Everything GLPK allocates lives in the calling thread's
 * GLPK environment, which is freed at the end of every solve (and must be
 * after a longjmp). bp_solve_ilp therefore assumes no other code in the
 * same thread keeps GLPK objects alive across the call.
 */
#include "bitplan/solve.h"

#include <glpk.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/progress.h"
#include "solve_internal.h"

#define DEFAULT_TIME_LIMIT_S 60.0
#define DEFAULT_MEMORY_LIMIT_MB 4096
/* A solution GLPK accepts within its feasibility tolerance can exceed a
 * capacity by a hair when recomputed exactly; the row is then tightened and
 * the model re-solved, at most this many times. */
#define MAX_REPAIRS 3
/* Capacity rows are scaled so their largest coefficient is in
 * [2^(e-1), 2^e) with e = ROW_SCALE_EXP (see model_build). */
#define ROW_SCALE_EXP 10
/* Steps of the incumbent heuristic's multiplier walk (x1.01 each, so up
 * to a factor 1.01^3000 ~ 1e13). */
#define HEUR_ADJUST_STEPS 3000
/* Pair checks one local_search call may spend (~0.1-0.2 s). The pair scan
 * is quadratic in the moves, so huge menus need a cap; a count, not a
 * clock, keeps the result independent of machine speed. */
#define LS_PAIR_BUDGET 40000000L

void bp_ilp_options_default(bp_ilp_options *o)
{
    if (!o)
        return;
    o->time_limit_s = DEFAULT_TIME_LIMIT_S;
    o->node_limit = BP_ILP_DEFAULT_NODE_LIMIT;
    o->mip_gap = 0.0;
    o->memory_limit_mb = DEFAULT_MEMORY_LIMIT_MB;
    o->export_lp = NULL;
    o->verbose = 0;
}

/* ---- GLPK build configuration, checked once per process ---- */

static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static int glpk_reentrant;
/* Serializes every solve when GLPK keeps one global environment. */
static pthread_mutex_t glpk_global_lock = PTHREAD_MUTEX_INITIALIZER;

static void check_tls(void)
{
    glpk_reentrant = glp_config("TLS") != NULL;
}

/* ---- the reduced model actually solved ---- */

/* Columns kept after removing dominated choices, shifted and scaled so that
 * GLPK's absolute tolerances are negligible (see build_solve_model). */
typedef struct model {
    size_t n_cols;
    size_t *col_start;  /* n_items + 1: columns of item i */
    size_t *col_choice; /* n_cols: global choice index k */
    double *min_err;    /* n_items: smallest error of each item */
    double *min_cost;   /* n_items * m: smallest cost of each item */
    double rhs[BP_MAX_CONSTRAINTS]; /* capacity - sum of per-item minima */
    double obj_base;    /* sum of min_err, in item order */
    double obj_scale;   /* a power of two: exact to apply and undo */
    double row_scale[BP_MAX_CONSTRAINTS]; /* powers of two for the cost rows */
} model;

static void model_free(model *md)
{
    free(md->col_start);
    free(md->col_choice);
    free(md->min_err);
    free(md->min_cost);
    memset(md, 0, sizeof *md);
}

/* Choice a of an item is dominated by b when b is no worse in error and in
 * every cost, and strictly better somewhere; among identical choices the
 * lowest index is kept. Swapping a dominated choice for its dominator never
 * hurts, so removing them keeps the optimum and breaks exact ties the same
 * way every time. */
static int dominated(const bp_problem *p, size_t a, size_t lo, size_t hi)
{
    size_t m = p->n_constraints;
    for (size_t b = lo; b < hi; b++) {
        if (b == a || p->error[b] > p->error[a])
            continue;
        int no_worse = 1, better = p->error[b] < p->error[a];
        for (size_t j = 0; j < m && no_worse; j++) {
            double cb = p->cost[b * m + j], ca = p->cost[a * m + j];
            if (cb > ca)
                no_worse = 0;
            else if (cb < ca)
                better = 1;
        }
        if (no_worse && (better || b < a))
            return 1;
    }
    return 0;
}

static int model_build(const bp_problem *p, model *md, bp_error *err)
{
    size_t n = p->n_items, m = p->n_constraints;
    memset(md, 0, sizeof *md);
    md->col_start = malloc((n + 1) * sizeof *md->col_start);
    md->col_choice = malloc(p->n_choices * sizeof *md->col_choice);
    md->min_err = malloc(n * sizeof *md->min_err);
    md->min_cost = malloc(n * m * sizeof *md->min_cost);
    if (!md->col_start || !md->col_choice || !md->min_err || !md->min_cost) {
        model_free(md);
        return bp_error_set(err, BP_ENOMEM, "ilp: out of memory for %zu choices", p->n_choices);
    }
    size_t nc = 0;
    double spread = 0.0, base = 0.0, tot_min[BP_MAX_CONSTRAINTS] = {0};
    for (size_t i = 0; i < n; i++) {
        size_t lo = p->item_start[i], hi = p->item_start[i + 1];
        md->col_start[i] = nc;
        for (size_t k = lo; k < hi; k++)
            if (!dominated(p, k, lo, hi))
                md->col_choice[nc++] = k;
        /* At least one choice survives: a minimal element of a finite
         * partial order is never dominated. */
        double emin = INFINITY, emax = -INFINITY;
        for (size_t t = md->col_start[i]; t < nc; t++) {
            size_t k = md->col_choice[t];
            emin = fmin(emin, p->error[k]);
            emax = fmax(emax, p->error[k]);
        }
        md->min_err[i] = emin;
        spread += emax - emin;
        base += emin;
        for (size_t j = 0; j < m; j++) {
            double cmin = INFINITY;
            for (size_t t = md->col_start[i]; t < nc; t++)
                cmin = fmin(cmin, p->cost[md->col_choice[t] * m + j]);
            md->min_cost[i * m + j] = cmin;
            tot_min[j] += cmin;
        }
    }
    md->col_start[n] = nc;
    md->n_cols = nc;
    md->obj_base = base;
    for (size_t j = 0; j < m; j++) {
        md->rhs[j] = p->capacity[j] - tot_min[j];
        double cmax = 0;
        for (size_t t = 0; t < nc; t++)
            cmax = fmax(cmax, p->cost[md->col_choice[t] * m + j]);
        /* GLPK returned wrong "optimal" answers (checked against the DP)
         * when capacity rows held coefficients around 1e10 and more, as
         * 10 GB tensors would give; its presolver and branch-and-bound use
         * tolerances on the unscaled rows. Scaling each capacity row by a
         * power of two (exact) so its largest coefficient is in
         * [2^9, 2^10) removed every such failure in a 40-seed scan. */
        md->row_scale[j] = 1.0;
        if (cmax > 0) {
            int e;
            frexp(cmax, &e);
            md->row_scale[j] = ldexp(1.0, ROW_SCALE_EXP - e);
        }
    }
    /* GLPK prunes a node when its bound is within tol_obj * (1 + |best|) of
     * the incumbent. Scaling the objective so the largest possible excess
     * over the per-item minima is about 2^20 makes the absolute "1 +" term
     * negligible, so pruning is relative (1e-7) whatever the error units. */
    md->obj_scale = 1.0;
    if (spread > 0 && isfinite(spread)) {
        int e;
        frexp(spread, &e);
        int k = 21 - e;
        if (k > 900)
            k = 900;
        if (k < -900)
            k = -900;
        md->obj_scale = ldexp(1.0, k);
    }
    return BP_OK;
}

/* ---- GLPK callbacks ---- */

typedef struct term_capture {
    char tail[512]; /* last GLPK output, for BP_ESOLVER messages */
    size_t len;
    int verbose;
} term_capture;

static int term_hook(void *info, const char *s)
{
    term_capture *t = info;
    size_t n = strlen(s);
    if (n >= sizeof t->tail) {
        s += n - (sizeof t->tail - 1);
        n = sizeof t->tail - 1;
    }
    if (t->len + n >= sizeof t->tail) {
        size_t drop = t->len + n - (sizeof t->tail - 1);
        memmove(t->tail, t->tail + drop, t->len - drop);
        t->len -= drop;
    }
    memcpy(t->tail + t->len, s, n);
    t->len += n;
    t->tail[t->len] = '\0';
    if (t->verbose)
        fputs(s, stderr);
    return 1; /* never let GLPK write to stdout */
}

/* Only the output of the current step is worth quoting in an error. */
static void term_reset(term_capture *t)
{
    t->len = 0;
    t->tail[0] = '\0';
}

typedef struct search_ctx {
    double deadline;    /* bp_now_seconds() value */
    long node_limit;    /* subproblems to select before stopping; <= 0: none */
    long nodes;         /* subproblems selected so far */
    int stopped;        /* 1 once glp_ios_terminate was called */
    int deadline_hit;   /* 1 if the wall clock caused the stop */
    int node_limit_hit;
    const double *inject; /* 1-based column values of our incumbent, or NULL */
    int have_bound;
    double bound;       /* best tree bound seen, scaled model units */
} search_ctx;

static void search_callback(glp_tree *T, void *info)
{
    search_ctx *c = info;
    /* Every observation of the best active node is a valid lower bound;
     * keep the largest. */
    int best = glp_ios_best_node(T);
    if (best) {
        double b = glp_ios_node_bound(T, best);
        if (isfinite(b) && (!c->have_bound || b > c->bound)) {
            c->bound = b;
            c->have_bound = 1;
        }
    }
    int reason = glp_ios_reason(T);
    if (reason == GLP_IHEUR && c->inject) {
        /* GLPK prunes with our incumbent from the root on instead of
         * waiting for its own rounding heuristic to find one as good. */
        glp_ios_heur_sol(T, c->inject);
        c->inject = NULL;
    }
    if (c->stopped)
        return;
    if (bp_now_seconds() >= c->deadline) {
        c->stopped = c->deadline_hit = 1;
        glp_ios_terminate(T);
        return;
    }
    /* Counting selected subproblems makes the stop a function of the
     * input alone: the same problem stops at the same node on any machine. */
    if (reason == GLP_ISELECT && ++c->nodes > c->node_limit && c->node_limit > 0) {
        c->stopped = c->node_limit_hit = 1;
        glp_ios_terminate(T);
    }
}

/* ---- one GLPK session ---- */

typedef struct job {
    const bp_problem *p;
    model *md;             /* NULL when only exporting */
    const bp_ilp_options *o;
    int mem_mb;
    double deadline;
    int *ia, *ja;          /* 1-based triplets, sized for the full model */
    double *ar;
    int32_t *col_pick;     /* out: per item, column index chosen (0-based) */
    jmp_buf jb;
    term_capture term;
    search_ctx search;
    double rhs_cut[BP_MAX_CONSTRAINTS]; /* tightening from repairs */
    /* Lagrangian preprocessing (see fix_by_reduced_cost). */
    int32_t *heur;         /* per item: column of the heuristic incumbent */
    double *inject_x;      /* 1-based column values of heur[] for GLPK */
    struct ls_move *moves; /* scratch for local_search: one per column */
    int32_t *heur_best;    /* scratch: best incumbent over the starts */
    int32_t *lp_pick;      /* per item: column with the largest LP value */
    int have_lp_pick;
    double *rc;            /* per column: Lagrangian reduced cost */
    int have_heur;         /* heur[] is feasible */
    int have_lagrange;
    double lagrange_bound; /* scaled model units */
    double fix_margin;     /* rounding allowance of the fixing threshold */
    long node_limit;       /* resolved bp_ilp_options.node_limit */
    /* outputs */
    int intopt_ret, mip_status, export_failed;
    int time_hit;          /* a wall-clock limit cut some step short */
} job;

static void error_hook(void *info)
{
    longjmp(*(jmp_buf *)info, 1);
}

/* ---- Lagrangian reduced-cost fixing ----
 *
 * GLPK branches on single binaries, which is weak on multiple-choice rows:
 * proving optimality on a 7B-sized menu took seconds. Before the MIP we
 * solve the LP relaxation once, take its capacity duals as Lagrange
 * multipliers lambda >= 0, and compute in our own arithmetic
 *   L = sum_i min_c (e_ic + lambda . c_ic) - lambda . rhs,
 * a valid lower bound for any lambda >= 0 (so inexact duals only weaken
 * it). A heuristic gives a feasible objective U. Any assignment that uses
 * column (i, c) costs at least L + r_ic, where r_ic is the column's reduced
 * cost e + lambda . c minus its item's minimum; if that exceeds U the column
 * cannot appear in any optimal (or tied-optimal) assignment and is dropped.
 * All values are in the shifted, scaled units of the solve model. */

static double col_err(const job *jb, size_t i, size_t t)
{
    const model *md = jb->md;
    return (jb->p->error[md->col_choice[t]] - md->min_err[i]) * md->obj_scale;
}

static double col_cost(const job *jb, size_t i, size_t t, size_t j)
{
    const bp_problem *p = jb->p;
    size_t m = p->n_constraints;
    return p->cost[jb->md->col_choice[t] * m + j] - jb->md->min_cost[i * m + j];
}

/* Totals of the original costs of jb->heur, in item order. */
static void heur_totals(const job *jb, double *tot)
{
    const bp_problem *p = jb->p;
    size_t m = p->n_constraints;
    for (size_t j = 0; j < m; j++)
        tot[j] = 0.0;
    for (size_t i = 0; i < p->n_items; i++) {
        size_t k = jb->md->col_choice[jb->heur[i]];
        for (size_t j = 0; j < m; j++)
            tot[j] += p->cost[k * m + j];
    }
}

/* Each item at its choice of least error + lambda . cost. */
static void lagrangian_start(job *jb, const double *lambda)
{
    const bp_problem *p = jb->p;
    const model *md = jb->md;
    size_t n = p->n_items, m = p->n_constraints;
    for (size_t i = 0; i < n; i++) {
        size_t best = md->col_start[i];
        double bv = INFINITY;
        for (size_t t = md->col_start[i]; t < md->col_start[i + 1]; t++) {
            double v = col_err(jb, i, t);
            for (size_t j = 0; j < m; j++)
                v += lambda[j] * col_cost(jb, i, t, j);
            if (v < bv) {
                bv = v;
                best = t;
            }
        }
        jb->heur[i] = (int32_t)best;
    }
}

/* Greedy repair of violated budgets: the move with the least error added
 * per unit of (normalized) violation removed, until feasible. 0 when it
 * stalls. */
static int repair(job *jb, const double *cap, const double *norm, double *tot)
{
    const bp_problem *p = jb->p;
    const model *md = jb->md;
    size_t n = p->n_items, m = p->n_constraints;
    size_t guard = 4 * md->n_cols + 16;
    for (;;) {
        double viol = 0;
        for (size_t j = 0; j < m; j++)
            viol += fmax(0.0, tot[j] - cap[j]) / norm[j];
        if (viol == 0)
            break;
        if (guard-- == 0)
            return 0;
        double best_score = INFINITY;
        size_t bi = 0, bt = 0;
        for (size_t i = 0; i < n; i++) {
            size_t cur = (size_t)jb->heur[i];
            for (size_t t = md->col_start[i]; t < md->col_start[i + 1]; t++) {
                if (t == cur)
                    continue;
                double v2 = 0;
                for (size_t j = 0; j < m; j++) {
                    double d = col_cost(jb, i, t, j) - col_cost(jb, i, cur, j);
                    v2 += fmax(0.0, tot[j] + d - cap[j]) / norm[j];
                }
                if (!(v2 < viol))
                    continue;
                double score = (col_err(jb, i, t) - col_err(jb, i, cur)) / (viol - v2);
                if (score < best_score) {
                    best_score = score;
                    bi = i;
                    bt = t;
                }
            }
        }
        if (best_score == INFINITY)
            return 0;
        jb->heur[bi] = (int32_t)bt;
        heur_totals(jb, tot); /* recomputed, not updated: exact like evaluate */
    }
    return 1;
}

/* Spend what the budgets have left on the best error reduction per unit of
 * lambda-priced budget, one move at a time. Returns 1 when jb->heur is
 * feasible at the end. */
static int improve(job *jb, const double *lambda, double lam_scale, const double *cap, const double *norm,
                   double *tot)
{
    const bp_problem *p = jb->p;
    const model *md = jb->md;
    size_t n = p->n_items, m = p->n_constraints;
    size_t guard = 4 * md->n_cols + 16;
    for (;;) {
        if (guard-- == 0)
            break;
        double best_score = -1;
        size_t bi = 0, bt = 0;
        for (size_t i = 0; i < n; i++) {
            size_t cur = (size_t)jb->heur[i];
            double ecur = col_err(jb, i, cur);
            for (size_t t = md->col_start[i]; t < md->col_start[i + 1]; t++) {
                double gain = ecur - col_err(jb, i, t);
                if (!(gain > 0))
                    continue;
                double use = 0;
                int fits = 1;
                for (size_t j = 0; j < m; j++) {
                    double d = col_cost(jb, i, t, j) - col_cost(jb, i, cur, j);
                    if (tot[j] + d > cap[j])
                        fits = 0;
                    use += (lambda[j] + 1e-6 * lam_scale / norm[j]) * fmax(0.0, d);
                }
                if (!fits)
                    continue;
                double score = use > 0 ? gain / use : INFINITY;
                if (score > best_score) {
                    best_score = score;
                    bi = i;
                    bt = t;
                }
            }
        }
        if (best_score < 0)
            break;
        size_t old = (size_t)jb->heur[bi];
        jb->heur[bi] = (int32_t)bt;
        heur_totals(jb, tot);
        int ok = 1;
        for (size_t j = 0; j < m; j++)
            if (tot[j] > cap[j])
                ok = 0;
        if (!ok) { /* rounding disagreed with the incremental test */
            jb->heur[bi] = (int32_t)old;
            heur_totals(jb, tot);
            break;
        }
    }
    for (size_t j = 0; j < m; j++)
        if (tot[j] > cap[j])
            return 0;
    return 1;
}

/* An incumbent for the fixing: from each start (below), repair any violated
 * budget with the cheapest error per unit of violation removed, then spend
 * what is left with improve(). Returns 1 with the best feasible result in
 * jb->heur, or 0. Deterministic: ties go to the lowest index. */
static int heuristic(job *jb, const double *lambda)
{
    const bp_problem *p = jb->p;
    const model *md = jb->md;
    size_t n = p->n_items, m = p->n_constraints;
    double cap[BP_MAX_CONSTRAINTS], norm[BP_MAX_CONSTRAINTS], tot[BP_MAX_CONSTRAINTS];
    for (size_t j = 0; j < m; j++) {
        cap[j] = p->capacity[j] - jb->rhs_cut[j];
        norm[j] = fmax(fabs(md->rhs[j]), 1.0);
    }
    /* Budget use is priced by the multipliers, the LP's marginal error per
     * unit of each budget; a small floor keeps slack budgets from looking
     * free when every multiplier is zero. */
    double lam_scale = 0;
    for (size_t j = 0; j < m; j++)
        lam_scale = fmax(lam_scale, lambda[j] * norm[j]);
    if (lam_scale == 0)
        lam_scale = 1.0;
    /* Three starts, the best result kept: the LP optimum rounded to each
     * item's largest column (a basic solution has at most 2m fractional
     * items, so it is nearly feasible and nearly optimal); the Lagrangian
     * minimizer; and the minimizer after raising the multipliers of the
     * violated budgets 1 % at a time until none is. The greedy repair
     * moves one item at a time and stalls when every move that relieves
     * one binding budget overdraws another (two binding budgets, as in
     * bench_solve's roofline section); the multiplier walk does not, and
     * stays near the LP optimum, so the fixing below keeps few columns. */
    double best_obj = INFINITY;
    for (int start = 0; start < 3; start++) {
        if (start == 0) {
            if (!jb->have_lp_pick)
                continue;
            memcpy(jb->heur, jb->lp_pick, n * sizeof *jb->heur);
            heur_totals(jb, tot);
        } else {
            double lam[BP_MAX_CONSTRAINTS];
            for (size_t j = 0; j < m; j++)
                lam[j] = start == 1 ? lambda[j] : fmax(lambda[j], 1e-6 * lam_scale / norm[j]);
            lagrangian_start(jb, lam);
            heur_totals(jb, tot);
            for (int step = 0; start == 2 && step < HEUR_ADJUST_STEPS; step++) {
                int violated = 0;
                for (size_t j = 0; j < m; j++)
                    if (tot[j] > cap[j]) {
                        lam[j] *= 1.01;
                        violated = 1;
                    }
                if (!violated)
                    break;
                lagrangian_start(jb, lam);
                heur_totals(jb, tot);
            }
        }
        if (!repair(jb, cap, norm, tot) || !improve(jb, lambda, lam_scale, cap, norm, tot))
            continue;
        double obj = 0;
        for (size_t i = 0; i < n; i++)
            obj += col_err(jb, i, (size_t)jb->heur[i]);
        if (jb->o->verbose)
            fprintf(stderr, "bitplan: incumbent heuristic, start %d: %.10g\n", start, obj);
        if (obj < best_obj) {
            best_obj = obj;
            memcpy(jb->heur_best, jb->heur, n * sizeof *jb->heur);
        }
    }
    if (best_obj < INFINITY)
        memcpy(jb->heur, jb->heur_best, n * sizeof *jb->heur);
    return best_obj < INFINITY;
}

/* ---- local search on the incumbent ----
 *
 * With two binding budgets the greedy phases above stop 1-5 % above the
 * optimum: every single move that lowers the error overdraws one budget.
 * Pairs of moves in two items (one buys bytes with latency, the other the
 * reverse) get past that. Only columns whose reduced cost is within U - L
 * are tried: any assignment better than U uses no other column. */

typedef struct ls_move {
    double de;                       /* error change, scaled model units */
    double d[BP_MAX_CONSTRAINTS];    /* cost change per constraint */
    int32_t item, col;
} ls_move;

/* Ascending error change; full key, so the order (and the search) is the
 * same on every run whatever qsort does with equal elements. */
static int ls_move_cmp(const void *a, const void *b)
{
    const ls_move *x = a, *y = b;
    if (x->de != y->de)
        return x->de < y->de ? -1 : 1;
    if (x->item != y->item)
        return x->item < y->item ? -1 : 1;
    return (x->col > y->col) - (x->col < y->col);
}

static double heur_objective(const job *jb)
{
    double obj = 0;
    for (size_t i = 0; i < jb->p->n_items; i++)
        obj += col_err(jb, i, (size_t)jb->heur[i]);
    return obj;
}

/* Every move from the incumbent to a column with reduced cost <= thr,
 * sorted. Returns the count. */
static size_t ls_collect(job *jb, double thr)
{
    const model *md = jb->md;
    size_t n = jb->p->n_items, m = jb->p->n_constraints, k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t cur = (size_t)jb->heur[i];
        double ecur = col_err(jb, i, cur);
        for (size_t t = md->col_start[i]; t < md->col_start[i + 1]; t++) {
            if (t == cur || jb->rc[t] > thr)
                continue;
            ls_move *mv = &jb->moves[k++];
            mv->de = col_err(jb, i, t) - ecur;
            for (size_t j = 0; j < m; j++)
                mv->d[j] = col_cost(jb, i, t, j) - col_cost(jb, i, cur, j);
            mv->item = (int32_t)i;
            mv->col = (int32_t)t;
        }
    }
    qsort(jb->moves, k, sizeof *jb->moves, ls_move_cmp);
    return k;
}

static int ls_fits(const ls_move *a, const ls_move *b, const double *slack, size_t m)
{
    for (size_t j = 0; j < m; j++)
        if (a->d[j] + (b ? b->d[j] : 0.0) > slack[j])
            return 0;
    return 1;
}

/* Best-improvement descent over single moves and pairs of moves in two
 * different items, keeping every budget. L and margin as in the fixing.
 * jb->heur must be feasible and stays feasible. */
static void local_search(job *jb, double L, double margin, const double *cap)
{
    size_t n = jb->p->n_items, m = jb->p->n_constraints;
    double tot[BP_MAX_CONSTRAINTS], slack[BP_MAX_CONSTRAINTS];
    long budget = LS_PAIR_BUDGET;
    for (size_t iter = 0; iter < 4 * n + 16 && budget > 0; iter++) {
        double U = heur_objective(jb);
        /* Ignore gains at rounding level, so the descent cannot cycle. */
        double best = -1e-12 * (fabs(U) + 1.0);
        size_t nm = ls_collect(jb, fmax(U - L, 0.0) + margin);
        heur_totals(jb, tot);
        for (size_t j = 0; j < m; j++)
            slack[j] = cap[j] - tot[j];
        const ls_move *ba = NULL, *bb = NULL;
        for (size_t a = 0; a < nm && jb->moves[a].de < best; a++)
            if (ls_fits(&jb->moves[a], NULL, slack, m)) {
                best = jb->moves[a].de;
                ba = &jb->moves[a];
                break; /* sorted: the first that fits is the best single move */
            }
        /* Sorted ascending, so for a < b the pair's change is at least
         * de_a + de_a' for every later pair: stop as soon as it cannot beat
         * the best so far. */
        for (size_t a = 0; a + 1 < nm && jb->moves[a].de + jb->moves[a + 1].de < best; a++) {
            const ls_move *x = &jb->moves[a];
            for (size_t b = a + 1; b < nm && x->de + jb->moves[b].de < best && budget > 0; b++) {
                const ls_move *y = &jb->moves[b];
                budget--;
                if (y->item == x->item || !ls_fits(x, y, slack, m))
                    continue;
                best = x->de + y->de;
                ba = x;
                bb = y;
                break; /* later b only add more error */
            }
        }
        if (!ba)
            return;
        int32_t old_a = jb->heur[ba->item], old_b = bb ? jb->heur[bb->item] : 0;
        jb->heur[ba->item] = ba->col;
        if (bb)
            jb->heur[bb->item] = bb->col;
        heur_totals(jb, tot); /* exact, like bp_solution_evaluate */
        for (size_t j = 0; j < m; j++)
            if (tot[j] > cap[j]) { /* rounding disagreed with the slack test */
                jb->heur[ba->item] = old_a;
                if (bb)
                    jb->heur[bb->item] = old_b;
                return;
            }
    }
}

static void fix_by_reduced_cost(job *jb, const double *lambda)
{
    const bp_problem *p = jb->p;
    model *md = jb->md;
    size_t n = p->n_items, m = p->n_constraints;
    double L = 0, mag = 1.0;
    for (size_t j = 0; j < m; j++) {
        L -= lambda[j] * (md->rhs[j] - jb->rhs_cut[j]);
        mag += fabs(lambda[j] * (md->rhs[j] - jb->rhs_cut[j]));
    }
    for (size_t i = 0; i < n; i++) {
        double lo = INFINITY;
        for (size_t t = md->col_start[i]; t < md->col_start[i + 1]; t++) {
            double v = col_err(jb, i, t);
            for (size_t j = 0; j < m; j++)
                v += lambda[j] * col_cost(jb, i, t, j);
            jb->rc[t] = v;
            lo = fmin(lo, v);
        }
        for (size_t t = md->col_start[i]; t < md->col_start[i + 1]; t++)
            jb->rc[t] -= lo;
        L += lo;
    }
    jb->have_lagrange = 1;
    jb->lagrange_bound = L;
    jb->fix_margin = 1e-9 * (fabs(L) + mag);
    jb->have_heur = heuristic(jb, lambda);
    if (!jb->have_heur)
        return;
    /* Generous margin for rounding in L, U and r: keeping a column is
     * always safe, dropping a needed one is not. */
    double U0 = heur_objective(jb);
    double margin = 1e-9 * (fabs(U0) + fabs(L) + mag);
    double cap[BP_MAX_CONSTRAINTS];
    for (size_t j = 0; j < m; j++)
        cap[j] = p->capacity[j] - jb->rhs_cut[j];
    local_search(jb, L, margin, cap);
    double U = heur_objective(jb);
    if (jb->o->verbose)
        fprintf(stderr, "bitplan: local search: %.10g -> %.10g\n", U0, U);
    double thr = fmax(U - L, 0.0) + margin;
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        size_t lo = md->col_start[i], hi = md->col_start[i + 1];
        int32_t h = jb->heur[i];
        md->col_start[i] = w;
        for (size_t t = lo; t < hi; t++) {
            if (jb->rc[t] > thr && (int32_t)t != h)
                continue;
            if ((int32_t)t == h)
                jb->heur[i] = (int32_t)w;
            jb->rc[w] = jb->rc[t]; /* w <= t: in place; polish() reuses it */
            md->col_choice[w++] = md->col_choice[t];
        }
    }
    md->col_start[n] = w;
    if (jb->o->verbose)
        fprintf(stderr, "bitplan: reduced-cost fixing kept %zu of %zu columns (L %.10g, U %.10g)\n",
                w, md->n_cols, L, U);
    md->n_cols = w;
}

static int ms_left(const job *jb)
{
    double left_ms = (jb->deadline - bp_now_seconds()) * 1000.0;
    return left_ms >= (double)INT_MAX ? INT_MAX : left_ms < 1.0 ? 1 : (int)left_ms;
}

/* LP relaxation of P; glp_simplex's return code. Its time limit is the
 * deadline, so hitting it marks the result as time-dependent. */
static int lp_solve(job *jb, glp_prob *P)
{
    glp_smcp sp;
    glp_init_smcp(&sp);
    sp.msg_lev = jb->o->verbose ? GLP_MSG_ON : GLP_MSG_OFF;
    sp.tm_lim = ms_left(jb);
    glp_scale_prob(P, GLP_SF_AUTO);
    int ret = glp_simplex(P, &sp);
    if (ret == GLP_ETMLIM)
        jb->time_hit = 1;
    return ret;
}

/* A search stopped early (node or time limit) leaves GLPK's incumbent;
 * the pair moves of local_search often still improve it, at no risk. */
static void polish(job *jb)
{
    size_t n = jb->p->n_items, m = jb->p->n_constraints;
    if (!jb->have_lagrange)
        return;
    for (size_t i = 0; i < n; i++)
        if (jb->col_pick[i] < 0)
            return;
    double cap[BP_MAX_CONSTRAINTS], tot[BP_MAX_CONSTRAINTS];
    for (size_t j = 0; j < m; j++)
        cap[j] = jb->p->capacity[j] - jb->rhs_cut[j];
    memcpy(jb->heur, jb->col_pick, n * sizeof *jb->heur);
    heur_totals(jb, tot);
    for (size_t j = 0; j < m; j++)
        if (tot[j] > cap[j])
            return; /* within GLPK's tolerance only: the caller repairs it */
    double before = heur_objective(jb);
    local_search(jb, jb->lagrange_bound, jb->fix_margin + 1e-9 * fabs(before), cap);
    double after = heur_objective(jb);
    if (jb->o->verbose) {
        size_t keep = 0;
        for (size_t t = 0; t < jb->md->n_cols; t++)
            keep += jb->rc[t] <= after - jb->lagrange_bound + jb->fix_margin;
        fprintf(stderr, "bitplan: polishing the incumbent: %.10g -> %.10g (fixing would keep %zu of %zu columns)\n",
                before, after, keep, jb->md->n_cols);
    }
    if (after < before)
        memcpy(jb->col_pick, jb->heur, n * sizeof *jb->col_pick);
}

/* LP relaxation of the current model for its capacity duals. 0 on success. */
static int lagrange_multipliers(job *jb, glp_prob *P, double *lambda)
{
    size_t n = jb->p->n_items, m = jb->p->n_constraints;
    if (lp_solve(jb, P) != 0 || glp_get_status(P) != GLP_OPT)
        return -1;
    const model *md = jb->md;
    for (size_t i = 0; i < n; i++) {
        size_t best = md->col_start[i];
        double bv = -1;
        for (size_t t = md->col_start[i]; t < md->col_start[i + 1]; t++) {
            double v = glp_get_col_prim(P, (int)t + 1);
            if (v > bv) {
                bv = v;
                best = t;
            }
        }
        jb->lp_pick[i] = (int32_t)best;
    }
    jb->have_lp_pick = 1;
    for (size_t j = 0; j < m; j++) {
        /* Any lambda >= 0 gives a valid bound, so the dual's sign
         * convention cannot make the fixing wrong, only weaker. */
        double d = fabs(glp_get_row_dual(P, (int)(n + j) + 1)) * jb->md->row_scale[j];
        lambda[j] = isfinite(d) ? d : 0.0;
    }
    return 0;
}

/* Row and column names follow CPLEX LP rules: letters, digits and '_',
 * never starting with a digit. Constraint names come from callers, so they
 * are sanitized; item names never reach GLPK (columns use item indices). */
static void constraint_row_name(const bp_problem *p, size_t j, char *buf, size_t size)
{
    int n = snprintf(buf, size, "cap%zu_", j);
    size_t at = n > 0 ? (size_t)n : 0;
    for (const char *c = p->constraint_name[j]; *c && at + 1 < size; c++) {
        unsigned char ch = (unsigned char)*c;
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                 (ch >= '0' && ch <= '9') || ch == '_';
        buf[at++] = ok ? (char)ch : '_';
    }
    buf[at] = '\0';
}

/* Build the model in GLPK. full = 1: every choice with the original errors,
 * costs and capacities, as the user sees the problem (for export). full = 0:
 * the reduced, shifted and scaled model that is solved. */
static glp_prob *glpk_build(job *jb, int full)
{
    const bp_problem *p = jb->p;
    const model *md = jb->md;
    size_t n = p->n_items, m = p->n_constraints;
    size_t ncols = full ? p->n_choices : md->n_cols;
    glp_prob *P = glp_create_prob();
    glp_set_prob_name(P, "bitplan");
    glp_set_obj_name(P, "error");
    glp_set_obj_dir(P, GLP_MIN);
    glp_add_rows(P, (int)(n + m));
    char name[64];
    for (size_t i = 0; i < n; i++) {
        if (full) {
            snprintf(name, sizeof name, "pick_%zu", i);
            glp_set_row_name(P, (int)i + 1, name);
        }
        glp_set_row_bnds(P, (int)i + 1, GLP_FX, 1.0, 1.0);
    }
    for (size_t j = 0; j < m; j++) {
        constraint_row_name(p, j, name, sizeof name);
        glp_set_row_name(P, (int)(n + j) + 1, name);
        double rhs = full ? p->capacity[j] : (md->rhs[j] - jb->rhs_cut[j]) * md->row_scale[j];
        glp_set_row_bnds(P, (int)(n + j) + 1, GLP_UP, 0.0, rhs);
    }
    glp_add_cols(P, (int)ncols);
    size_t ne = 0, col = 0;
    for (size_t i = 0; i < n; i++) {
        size_t lo = full ? p->item_start[i] : md->col_start[i];
        size_t hi = full ? p->item_start[i + 1] : md->col_start[i + 1];
        for (size_t t = lo; t < hi; t++) {
            size_t k = full ? t : md->col_choice[t];
            int c = (int)++col;
            if (full) {
                snprintf(name, sizeof name, "x_%zu_%zu", i, k - p->item_start[i]);
                glp_set_col_name(P, c, name);
            }
            glp_set_col_kind(P, c, GLP_BV);
            double obj = full ? p->error[k] : (p->error[k] - md->min_err[i]) * md->obj_scale;
            glp_set_obj_coef(P, c, obj);
            ne++;
            jb->ia[ne] = (int)i + 1;
            jb->ja[ne] = c;
            jb->ar[ne] = 1.0;
            for (size_t j = 0; j < m; j++) {
                double a = p->cost[k * m + j];
                if (!full)
                    a = (a - md->min_cost[i * m + j]) * md->row_scale[j];
                if (a == 0.0)
                    continue; /* GLPK needs no explicit zeros */
                ne++;
                jb->ia[ne] = (int)(n + j) + 1;
                jb->ja[ne] = c;
                jb->ar[ne] = a;
            }
        }
    }
    glp_load_matrix(P, (int)ne, jb->ia, jb->ja, jb->ar);
    return P;
}

static int run_glpk(job *jb, bp_error *err)
{
    glp_prob *volatile P = NULL;
    if (setjmp(jb->jb)) {
        /* GLPK hit xerror(); every object of this thread's environment is
         * now invalid and must be released with the environment. */
        glp_free_env();
        for (char *c = jb->term.tail; *c; c++)
            if (*c == '\n' || *c == '\r')
                *c = ' ';
        return bp_error_set(err, BP_ESOLVER, "glpk: internal error: %s",
                            jb->term.tail[0] ? jb->term.tail : "(no message)");
    }
    glp_error_hook(error_hook, &jb->jb);
    glp_term_hook(term_hook, &jb->term);
    glp_mem_limit(jb->mem_mb);

    if (jb->o->export_lp) {
        term_reset(&jb->term);
        P = glpk_build(jb, 1);
        if (glp_write_lp(P, NULL, jb->o->export_lp) != 0)
            jb->export_failed = 1;
        glp_delete_prob(P);
        P = NULL;
    }
    if (!jb->md) {
        glp_free_env();
        return BP_OK;
    }

    term_reset(&jb->term);
    P = glpk_build(jb, 0);
    jb->have_heur = jb->have_lagrange = jb->have_lp_pick = 0;
    if (jb->md->n_cols > jb->p->n_items) {
        double lambda[BP_MAX_CONSTRAINTS];
        int lr = lagrange_multipliers(jb, P, lambda);
        glp_delete_prob(P);
        P = NULL;
        if (lr == 0)
            fix_by_reduced_cost(jb, lambda);
        term_reset(&jb->term);
        P = glpk_build(jb, 0);
    }
    /* Our own root LP, so that GLPK's tree works on our column numbering
     * (presolve off) and can take the heuristic's incumbent. */
    int presolve = GLP_ON;
    jb->search.inject = NULL;
    if (lp_solve(jb, P) == 0) {
        int st = glp_get_status(P);
        if (st == GLP_NOFEAS) {
            jb->intopt_ret = GLP_ENOPFS;
            jb->mip_status = GLP_NOFEAS;
            goto done;
        }
        if (st == GLP_OPT) {
            presolve = GLP_OFF;
            if (jb->have_heur) {
                size_t nc = jb->md->n_cols;
                for (size_t t = 0; t <= nc; t++)
                    jb->inject_x[t] = 0.0;
                for (size_t i = 0; i < jb->p->n_items; i++)
                    jb->inject_x[jb->heur[i] + 1] = 1.0;
                jb->search.inject = jb->inject_x;
            }
        }
    }
    glp_iocp parm;
    glp_init_iocp(&parm);
    parm.msg_lev = jb->o->verbose ? GLP_MSG_ON : GLP_MSG_OFF;
    parm.presolve = presolve;
    parm.mip_gap = jb->o->mip_gap;
    parm.cb_func = search_callback;
    parm.cb_info = &jb->search;
    /* tm_lim bounds the root LP too, which the callback cannot interrupt.
     * The callback is the real deadline; both only fire in the abnormal
     * case, so a normal solve never depends on the clock. */
    parm.tm_lim = ms_left(jb);
    /* Options, measured with bench/bench_solve (docs/solvers.md): GLPK's
     * default branching (Driebeck-Tomlin) and backtracking (best local
     * bound) were fastest once reduced-cost fixing has shrunk the model;
     * preprocessing at the root only halves the time per node on the
     * two-binding instance and costs nothing elsewhere. Clique cuts, the
     * feasibility pump, MIR, Gomory and pseudocost branching were slower
     * or closed less of the gap per node. Cover cuts stay off: in GLPK 5.0
     * they can call glp_add_cols with 0 columns on these models, an
     * xerror() (seen on small random instances). Proximity search is never
     * used: it stops on a time limit, which would make results depend on
     * machine speed. */
    parm.cov_cuts = GLP_OFF;
    parm.clq_cuts = GLP_OFF;
    parm.mir_cuts = GLP_OFF;
    parm.gmi_cuts = GLP_OFF;
    parm.fp_heur = GLP_OFF;
    parm.ps_heur = GLP_OFF;
    parm.br_tech = GLP_BR_DTH;
    parm.bt_tech = GLP_BT_BLB;
    parm.pp_tech = GLP_PP_ROOT;
    jb->search.deadline = jb->deadline;
    jb->search.node_limit = jb->node_limit;
    term_reset(&jb->term);
    jb->intopt_ret = glp_intopt(P, &parm);
    if (jb->intopt_ret == GLP_ETMLIM || jb->search.deadline_hit)
        jb->time_hit = 1;
    jb->mip_status = glp_mip_status(P);
    if (jb->mip_status == GLP_OPT || jb->mip_status == GLP_FEAS) {
        const model *md = jb->md;
        for (size_t i = 0; i < jb->p->n_items; i++) {
            jb->col_pick[i] = -1;
            for (size_t t = md->col_start[i]; t < md->col_start[i + 1]; t++)
                if (glp_mip_col_val(P, (int)t + 1) > 0.5) {
                    jb->col_pick[i] = (int32_t)t;
                    break;
                }
        }
        if (jb->mip_status == GLP_FEAS)
            polish(jb);
    }
done:
    glp_delete_prob(P);
    P = NULL;
    glp_free_env(); /* also removes the hooks and the memory limit */
    return BP_OK;
}

static int glpk_session(job *jb, bp_error *err)
{
    pthread_once(&tls_once, check_tls);
    if (!glpk_reentrant)
        pthread_mutex_lock(&glpk_global_lock);
    int rc = run_glpk(jb, err);
    if (!glpk_reentrant)
        pthread_mutex_unlock(&glpk_global_lock);
    return rc;
}

/* Best proven lower bound on the original objective: the largest of the
 * unconstrained minimum (sum of per-item minimum errors), the Lagrangian
 * bound and the tree's best bound, never above the incumbent. Bounds of the
 * column-reduced model are bounds of the full one: fixing keeps every
 * optimal assignment, so both have the same optimum. */
static double proven_bound(const job *jb, const model *md, double incumbent)
{
    double b = md->obj_base;
    if (jb->have_lagrange) {
        double t = md->obj_base + jb->lagrange_bound / md->obj_scale;
        if (t > b)
            b = t;
    }
    if (jb->search.have_bound) {
        double t = md->obj_base + jb->search.bound / md->obj_scale;
        if (t > b)
            b = t;
    }
    return b < incumbent ? b : incumbent;
}

static int check_options(const bp_ilp_options *o, bp_error *err)
{
    if (isnan(o->time_limit_s))
        return bp_error_set(err, BP_EINVAL, "ilp: time_limit_s is NaN");
    /* glp_intopt rejects mip_gap < 0 with xerror(); >= 1 means "anything". */
    if (!(o->mip_gap >= 0.0 && o->mip_gap < 1.0))
        return bp_error_set(err, BP_EINVAL, "ilp: mip_gap %g outside [0, 1)", o->mip_gap);
    if (o->export_lp && !o->export_lp[0])
        return bp_error_set(err, BP_EINVAL, "ilp: export_lp is an empty file name");
    return BP_OK;
}

int bp_solve_ilp(const bp_problem *p, const bp_ilp_options *o_in, bp_solution *s, bp_error *err)
{
    double t0 = bp_now_seconds();
    bp_ilp_options o;
    if (o_in)
        o = *o_in;
    else
        bp_ilp_options_default(&o);
    int rc = check_options(&o, err);
    if (rc)
        return rc;
    rc = bp_problem_validate(p, err);
    if (rc)
        return rc;
    rc = bp__solution_prepare(p, s, "glpk-ilp", err);
    if (rc)
        return rc;
    double limit = o.time_limit_s > 0 ? o.time_limit_s : DEFAULT_TIME_LIMIT_S;
    size_t n = p->n_items, m = p->n_constraints;

    model md = {0};
    job *jb = NULL;
    bp_error pre_err;
    bp_error_clear(&pre_err);
    int pre = bp__precheck_capacity(p, &pre_err);
    if (pre && !o.export_lp) {
        /* Detected without GLPK. */
        bp__solution_set_infeasible(s);
        rc = bp_error_set(err, pre, "%s", pre_err.msg);
        goto out;
    }
    if (!pre) {
        rc = model_build(p, &md, err);
        if (rc)
            goto out;
    }
    jb = calloc(1, sizeof *jb);
    if (!jb) {
        rc = bp_error_set(err, BP_ENOMEM, "ilp: out of memory");
        goto out;
    }
    jb->p = p;
    jb->md = pre ? NULL : &md;
    jb->o = &o;
    jb->mem_mb = o.memory_limit_mb > 0 ? o.memory_limit_mb : DEFAULT_MEMORY_LIMIT_MB;
    jb->deadline = t0 + limit;
    jb->node_limit = o.node_limit == 0 ? BP_ILP_DEFAULT_NODE_LIMIT : o.node_limit;
    jb->term.verbose = o.verbose;
    size_t ne = p->n_choices * (1 + m) + 1; /* validated below GLPK's NNZ ceiling */
    jb->ia = malloc(ne * sizeof *jb->ia);
    jb->ja = malloc(ne * sizeof *jb->ja);
    jb->ar = malloc(ne * sizeof *jb->ar);
    jb->col_pick = malloc(n * sizeof *jb->col_pick);
    jb->heur = malloc(n * sizeof *jb->heur);
    jb->heur_best = malloc(n * sizeof *jb->heur_best);
    jb->lp_pick = malloc(n * sizeof *jb->lp_pick);
    jb->rc = malloc(p->n_choices * sizeof *jb->rc);
    jb->moves = malloc(p->n_choices * sizeof *jb->moves);
    jb->inject_x = malloc((p->n_choices + 1) * sizeof *jb->inject_x);
    if (!jb->ia || !jb->ja || !jb->ar || !jb->col_pick || !jb->heur || !jb->rc || !jb->heur_best ||
        !jb->lp_pick || !jb->moves || !jb->inject_x) {
        rc = bp_error_set(err, BP_ENOMEM, "ilp: out of memory for %zu non-zeros", ne);
        goto out;
    }

    for (int attempt = 0;; attempt++) {
        rc = glpk_session(jb, err);
        if (rc)
            goto out;
        if (jb->export_failed) {
            rc = bp_error_set(err, BP_EIO, "ilp: cannot write LP file '%s'", o.export_lp);
            goto out;
        }
        o.export_lp = NULL; /* written once, before the first solve */
        s->nodes += jb->search.nodes;
        s->time_limited = jb->time_hit;
        if (pre) {
            bp__solution_set_infeasible(s);
            rc = bp_error_set(err, pre, "%s", pre_err.msg);
            goto out;
        }
        int ret = jb->intopt_ret, mst = jb->mip_status;
        if (ret == GLP_ENOPFS || mst == GLP_NOFEAS) {
            bp__solution_set_infeasible(s);
            rc = bp__joint_infeasible(p, err);
            goto out;
        }
        if (ret != 0 && ret != GLP_ETMLIM && ret != GLP_ESTOP && ret != GLP_EMIPGAP) {
            rc = bp_error_set(err, BP_ESOLVER, "ilp: glp_intopt failed with code %d", ret);
            goto out;
        }
        int from_heur = 0;
        if (mst == GLP_UNDEF && jb->have_heur) {
            /* Stopped before GLPK found an incumbent: the heuristic's
             * feasible assignment is still a plan, with its gap. */
            memcpy(jb->col_pick, jb->heur, n * sizeof *jb->col_pick);
            mst = GLP_FEAS;
            from_heur = 1;
        }
        if (mst == GLP_UNDEF) {
            s->status = BP_SOLVE_NO_SOLUTION;
            s->bound = proven_bound(jb, &md, INFINITY);
            if (jb->search.node_limit_hit && !jb->time_hit)
                rc = bp_error_set(err, BP_ETIMEOUT,
                                  "ilp: stopped at the %ld-node limit before any feasible assignment",
                                  jb->node_limit);
            else
                rc = bp_error_set(err, BP_ETIMEOUT,
                                  "ilp: stopped at the %.3g s time limit before any feasible assignment",
                                  limit);
            goto out;
        }
        if (mst != GLP_OPT && mst != GLP_FEAS) {
            rc = bp_error_set(err, BP_ESOLVER, "ilp: unexpected MIP status %d", mst);
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            int32_t t = jb->col_pick[i];
            if (t < 0) {
                rc = bp_error_set(err, BP_ESOLVER, "ilp: item %zu ('%.200s'): no choice selected",
                                  i, p->item_name[i]);
                goto out;
            }
            s->choice[i] = (int32_t)(md.col_choice[t] - p->item_start[i]);
        }
        rc = bp_solution_evaluate(p, s, err);
        if (rc)
            goto out;
        /* GLPK accepted the assignment within its tolerances; check it
         * exactly against the original capacities. */
        int violated = 0;
        for (size_t j = 0; j < m; j++) {
            double excess = s->cost_total[j] - p->capacity[j];
            if (excess > 0) {
                violated = 1;
                jb->rhs_cut[j] += excess;
                if (o.verbose)
                    fprintf(stderr, "bitplan: assignment exceeds '%s' by %g; tightening\n",
                            p->constraint_name[j], excess);
            }
        }
        if (!violated) {
            if (mst == GLP_OPT && ret == 0 && !from_heur) {
                s->status = BP_SOLVE_OPTIMAL;
                s->bound = s->objective;
                s->gap = 0.0;
            } else {
                s->status = BP_SOLVE_FEASIBLE;
                s->bound = proven_bound(jb, &md, s->objective);
                double g = (s->objective - s->bound) / fmax(fabs(s->objective), 1e-300);
                s->gap = g > 0 ? g : 0.0;
            }
            rc = BP_OK;
            goto out;
        }
        if (attempt >= MAX_REPAIRS) {
            rc = bp_error_set(err, BP_ESOLVER,
                              "ilp: solution exceeds a capacity after %d tightenings", MAX_REPAIRS);
            goto out;
        }
        bp_error_clear(err);
        memset(&jb->search, 0, sizeof jb->search);
        for (size_t i = 0; i < n; i++)
            s->choice[i] = -1;
    }

out:
    if (rc && rc != BP_EINFEASIBLE && rc != BP_ETIMEOUT && s->choice) {
        for (size_t i = 0; i < s->n_items; i++)
            s->choice[i] = -1;
        s->status = BP_SOLVE_NO_SOLUTION;
    }
    s->seconds = bp_now_seconds() - t0;
    if (jb) {
        free(jb->ia);
        free(jb->ja);
        free(jb->ar);
        free(jb->col_pick);
        free(jb->heur);
        free(jb->heur_best);
        free(jb->lp_pick);
        free(jb->rc);
        free(jb->moves);
        free(jb->inject_x);
        free(jb);
    }
    model_free(&md);
    return rc;
}
