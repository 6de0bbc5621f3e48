/* Tests for the (1+lambda) real-loss search (optimizer/search/evo.c): on
 * synthetic 2-constraint problems with a non-additive fitness computed here,
 * it improves on the ILP seed, asks only feasible never-repeated
 * candidates, never returns worse than the seed, is deterministic, follows
 * the documented multi-fidelity selection exactly, and rejects bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/evo.h"
#include "bitplan/solve.h"
#include "search_testutil.h"

/* ---- the synthetic "real loss" ---- */

/* Per-item weights and pairwise interactions between neighbouring items
 * make the true loss disagree with the additive proxy, so the proxy's
 * optimum (the seed) is not the loss optimum. The low-fidelity loss (fewer
 * tokens) sees every item's weight off by up to 15%: correlated with the
 * high-fidelity loss but ranking some candidates differently, as a KL
 * measured on fewer windows does. */
typedef struct loss_model {
    const bp_problem *p;
    double weight[256], weight_low[256];
} loss_model;

static void loss_init(loss_model *L, const bp_problem *p, uint64_t seed)
{
    assert_true(p->n_items <= 256);
    L->p = p;
    trng r = {seed * 31 + 5};
    for (size_t i = 0; i < p->n_items; i++) {
        L->weight[i] = 0.2 + 2.8 * trng_unit(&r);
        L->weight_low[i] = L->weight[i] * (0.85 + 0.3 * trng_unit(&r));
    }
}

static double item_err(const bp_problem *p, size_t i, int32_t c)
{
    return p->error[p->item_start[i] + (size_t)c];
}

static double loss_with(const loss_model *L, const double *w, const int32_t *x)
{
    const bp_problem *p = L->p;
    double f = 0.0;
    for (size_t i = 0; i < p->n_items; i++) {
        double e = item_err(p, i, x[i]);
        f += w[i] * e;
        if (i + 1 < p->n_items)
            f += 0.5 * e * item_err(p, i + 1, x[i + 1]);
    }
    return f;
}

static double loss_high(const loss_model *L, const int32_t *x)
{
    return loss_with(L, L->weight, x);
}

static double loss_low(const loss_model *L, const int32_t *x)
{
    return loss_with(L, L->weight_low, x);
}

static bp_problem *problem_and_seed(uint64_t seed, size_t m, int32_t **choice)
{
    /* odd seeds: fractional costs, so totals are inexact in floating point */
    bp_problem *p = rand_problem(seed, 24, 40, 3, 7, m, 0.35, 0.6, (int)(seed & 1));
    assert_non_null(p);
    bp_solution s = {0};
    bp_error err;
    int rc = bp_solve_ilp(p, NULL, &s, &err);
    if (rc != BP_OK)
        fail_msg("ilp: %s", err.msg);
    *choice = malloc(p->n_items * sizeof **choice);
    memcpy(*choice, s.choice, p->n_items * sizeof **choice);
    bp_solution_free(&s);
    return p;
}

static void assert_feasible(const bp_problem *p, const int32_t *x)
{
    bp_solution s = {0};
    assert_int_equal(bp_solution_init(&s, p->n_items, NULL), BP_OK);
    memcpy(s.choice, x, p->n_items * sizeof *x);
    assert_int_equal(bp_solution_evaluate(p, &s, NULL), BP_OK);
    for (size_t j = 0; j < p->n_constraints; j++)
        if (s.cost_total[j] > p->capacity[j])
            fail_msg("candidate violates constraint %zu: %.17g > %.17g", j, s.cost_total[j], p->capacity[j]);
    bp_solution_free(&s);
}

/* Every candidate asked, in order, for duplicate and determinism checks. */
typedef struct trace {
    int32_t *x;
    size_t n, cap, n_items;
} trace;

static void trace_add(trace *t, const int32_t *x)
{
    for (size_t k = 0; k < t->n; k++)
        if (!memcmp(t->x + k * t->n_items, x, t->n_items * sizeof *x))
            fail_msg("candidate %zu repeats candidate %zu", t->n, k);
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->x = realloc(t->x, t->cap * t->n_items * sizeof *t->x);
        assert_non_null(t->x);
    }
    memcpy(t->x + t->n++ * t->n_items, x, t->n_items * sizeof *x);
}

/* A reference model of the documented selection, checked after each tell. */
typedef struct ref_sel {
    int32_t parent[256];
    double parent_low, parent_high;
    size_t evals_low, evals_high, accepted, generations;
    double last_low[4096];
    int32_t last_low_x[64 * 256];
    size_t last_n;
} ref_sel;

typedef struct run_out {
    double seed_high, best;
    int32_t best_x[256];
    bp_evo_stats stats;
    trace tr;
} run_out;

/* Run the search to the end with loss_low/loss_high, checking the batch
 * sequence, feasibility, uniqueness and the selection rules. */
static void run_search(const bp_problem *p, const int32_t *seed, const bp_evo_options *o, const loss_model *L,
                       run_out *out)
{
    size_t n = p->n_items;
    bp_evo *e = NULL;
    bp_error err;
    int rc = bp_evo_new(p, seed, o, &e, &err);
    if (rc != BP_OK)
        fail_msg("evo_new: %s", err.msg);
    memset(out, 0, sizeof *out);
    out->tr.n_items = n;
    ref_sel r;
    memset(&r, 0, sizeof r);
    memcpy(r.parent, seed, n * sizeof *seed);
    r.parent_low = r.parent_high = NAN;
    int seen_seed_high = 0, expect_high = 0;
    double *f = malloc(o->lambda * sizeof *f);
    double promo_low[64];
    while (!bp_evo_done(e)) {
        bp_evo_batch b;
        assert_int_equal(bp_evo_ask(e, &b, &err), BP_OK);
        if (b.n == 0) {
            assert_true(bp_evo_done(e));
            break;
        }
        assert_int_equal(b.n_items, n);
        if (b.generation == 0) {
            assert_int_equal(b.n, 1);
            assert_memory_equal(b.choice, seed, n * sizeof *seed);
            if (b.fidelity == BP_EVO_HIGH)
                seen_seed_high = 1;
        } else {
            assert_true(seen_seed_high);
            for (size_t k = 0; k < b.n; k++) {
                assert_feasible(p, b.choice + k * n);
                if (b.fidelity == BP_EVO_LOW)
                    trace_add(&out->tr, b.choice + k * n);
            }
        }
        if (b.fidelity == BP_EVO_HIGH && b.generation > 0) {
            /* Exactly the promoted offspring of the last low batch: those
             * beating the parent's low fitness, best first, at most promote. */
            assert_true(expect_high);
            size_t want = 0;
            unsigned char used[4096] = {0};
            for (; want < o->promote; want++) {
                size_t best = r.last_n;
                for (size_t k = 0; k < r.last_n; k++)
                    if (!used[k] && r.last_low[k] < r.parent_low && (best == r.last_n || r.last_low[k] < r.last_low[best]))
                        best = k;
                if (best == r.last_n)
                    break;
                used[best] = 1;
                assert_true(want < b.n);
                assert_memory_equal(b.choice + want * n, r.last_low_x + best * n, n * sizeof(int32_t));
                promo_low[want] = r.last_low[best];
            }
            assert_int_equal(b.n, want);
        }
        for (size_t k = 0; k < b.n; k++) {
            const int32_t *x = b.choice + k * n;
            f[k] = b.fidelity == BP_EVO_LOW ? loss_low(L, x) : loss_high(L, x);
        }
        /* Asking again before telling gives the same batch. */
        bp_evo_batch again;
        assert_int_equal(bp_evo_ask(e, &again, &err), BP_OK);
        assert_int_equal(again.n, b.n);
        assert_ptr_equal(again.choice, b.choice);
        assert_int_equal(again.fidelity, b.fidelity);

        /* reference selection */
        if (b.generation == 0) {
            if (b.fidelity == BP_EVO_LOW) {
                r.parent_low = f[0];
                r.evals_low++;
            } else {
                r.parent_high = f[0];
                r.evals_high++;
                out->seed_high = f[0];
            }
        } else if (b.fidelity == BP_EVO_LOW) {
            assert_true(b.n <= o->lambda && b.n <= 64);
            r.evals_low += b.n;
            r.last_n = b.n;
            memcpy(r.last_low, f, b.n * sizeof *f);
            memcpy(r.last_low_x, b.choice, b.n * n * sizeof(int32_t));
            int any = 0;
            for (size_t k = 0; k < b.n; k++)
                any |= f[k] < r.parent_low;
            expect_high = any;
            if (!any)
                r.generations++;
        } else {
            r.evals_high += b.n;
            size_t best = 0;
            for (size_t k = 1; k < b.n; k++)
                if (f[k] < f[best])
                    best = k;
            if (f[best] < r.parent_high) {
                memcpy(r.parent, b.choice + best * n, n * sizeof(int32_t));
                r.parent_high = f[best];
                r.parent_low = promo_low[best];
                r.accepted++;
            }
            expect_high = 0;
            r.generations++;
        }
        rc = bp_evo_tell(e, f, b.n, &err);
        if (rc != BP_OK)
            fail_msg("tell: %s", err.msg);
        const int32_t *best_x;
        double best_f;
        assert_int_equal(bp_evo_best(e, &best_x, &best_f), isnan(r.parent_high) ? BP_ENOTFOUND : BP_OK);
        assert_memory_equal(best_x, r.parent, n * sizeof(int32_t));
        assert_true(best_f == r.parent_high || (isnan(best_f) && isnan(r.parent_high)));
    }
    free(f);
    bp_evo_get_stats(e, &out->stats);
    assert_int_equal(out->stats.evals_low, r.evals_low);
    assert_int_equal(out->stats.evals_high, r.evals_high);
    assert_int_equal(out->stats.accepted, r.accepted);
    assert_int_equal(out->stats.generations, r.generations);
    assert_true(out->stats.seed_high == out->seed_high);
    assert_true(out->stats.parent_low == r.parent_low);
    const int32_t *bx;
    assert_int_equal(bp_evo_best(e, &bx, &out->best), BP_OK);
    memcpy(out->best_x, bx, n * sizeof *bx);
    assert_true(out->best == loss_high(L, bx));
    assert_feasible(p, bx);
    /* History: the seed first, then one non-increasing entry per generation. */
    const double *h;
    size_t nh = bp_evo_history(e, &h);
    assert_int_equal(nh, out->stats.generations + 1);
    assert_true(h[0] == out->seed_high);
    for (size_t g = 1; g < nh; g++)
        assert_true(h[g] <= h[g - 1]);
    assert_true(h[nh - 1] == out->best);
    bp_evo_destroy(&e);
    assert_null(e);
}

static void test_improves_on_ilp_seed(void **state)
{
    (void)state;
    for (uint64_t s = 1; s <= 6; s++) {
        int32_t *seed;
        bp_problem *p = problem_and_seed(s, 2, &seed);
        loss_model L;
        loss_init(&L, p, s);
        bp_evo_options o;
        bp_evo_options_default(&o);
        o.seed = s;
        run_out out;
        run_search(p, seed, &o, &L, &out);
        assert_true(out.best <= out.seed_high);
        if (!(out.best < out.seed_high))
            fail_msg("problem %llu: no improvement on the seed (%.17g)", (unsigned long long)s, out.seed_high);
        assert_true(out.stats.accepted >= 1);
        assert_int_equal(out.stats.generations, o.generations);
        assert_false(out.stats.stalled);
        free(out.tr.x);
        free(seed);
        bp_problem_destroy(&p);
    }
}

static void test_single_constraint(void **state)
{
    (void)state;
    int32_t *seed;
    bp_problem *p = problem_and_seed(11, 1, &seed);
    loss_model L;
    loss_init(&L, p, 11);
    bp_evo_options o;
    bp_evo_options_default(&o);
    o.lambda = 6;
    o.promote = 3;
    o.generations = 15;
    o.max_moves = 3;
    run_out out;
    run_search(p, seed, &o, &L, &out);
    assert_true(out.best < out.seed_high);
    free(out.tr.x);
    free(seed);
    bp_problem_destroy(&p);
}

static void test_deterministic(void **state)
{
    (void)state;
    int32_t *seed;
    bp_problem *p = problem_and_seed(3, 2, &seed);
    loss_model L;
    loss_init(&L, p, 3);
    bp_evo_options o;
    bp_evo_options_default(&o);
    o.seed = 42;
    run_out a, b, c;
    run_search(p, seed, &o, &L, &a);
    run_search(p, seed, &o, &L, &b);
    assert_int_equal(a.tr.n, b.tr.n);
    assert_memory_equal(a.tr.x, b.tr.x, a.tr.n * p->n_items * sizeof(int32_t));
    assert_true(a.best == b.best);
    o.seed = 43; /* the seed matters */
    run_search(p, seed, &o, &L, &c);
    assert_true(a.tr.n != c.tr.n || memcmp(a.tr.x, c.tr.x, a.tr.n * p->n_items * sizeof(int32_t)));
    free(a.tr.x);
    free(b.tr.x);
    free(c.tr.x);
    free(seed);
    bp_problem_destroy(&p);
}

/* Offspring that never beat the parent at low fidelity are never promoted:
 * no high batch after the seed's, and the parent stays the seed. */
static void test_no_promotion_when_low_never_beats(void **state)
{
    (void)state;
    int32_t *seed;
    bp_problem *p = problem_and_seed(5, 2, &seed);
    bp_evo_options o;
    bp_evo_options_default(&o);
    o.generations = 7;
    o.lambda = 5;
    bp_evo *e = NULL;
    bp_error err;
    assert_int_equal(bp_evo_new(p, seed, &o, &e, &err), BP_OK);
    size_t batches = 0;
    while (!bp_evo_done(e)) {
        bp_evo_batch b;
        assert_int_equal(bp_evo_ask(e, &b, &err), BP_OK);
        assert_true(b.n > 0);
        if (b.generation > 0)
            assert_int_equal(b.fidelity, BP_EVO_LOW);
        double f[8];
        for (size_t k = 0; k < b.n; k++)
            f[k] = b.generation == 0 ? 1.0 : 1.0 + (double)k; /* ties do not beat */
        assert_int_equal(bp_evo_tell(e, f, b.n, &err), BP_OK);
        batches++;
    }
    assert_int_equal(batches, 2 + 7);
    bp_evo_stats st;
    bp_evo_get_stats(e, &st);
    assert_int_equal(st.evals_low, 1 + 7 * 5);
    assert_int_equal(st.evals_high, 1);
    assert_int_equal(st.accepted, 0);
    assert_int_equal(st.generations, 7);
    const int32_t *bx;
    double bf;
    assert_int_equal(bp_evo_best(e, &bx, &bf), BP_OK);
    assert_memory_equal(bx, seed, p->n_items * sizeof *seed);
    assert_true(bf == 1.0);
    /* Done: ask returns an empty batch, tell is refused. */
    bp_evo_batch b;
    assert_int_equal(bp_evo_ask(e, &b, &err), BP_OK);
    assert_int_equal(b.n, 0);
    double none = 0;
    assert_int_equal(bp_evo_tell(e, &none, 0, &err), BP_EINVAL);
    bp_evo_destroy(&e);
    free(seed);
    bp_problem_destroy(&p);
}

/* Offspring that beat the parent at low fidelity but only tie it at high
 * fidelity are promoted (promote per generation) and never replace it. */
static void test_high_ties_do_not_replace(void **state)
{
    (void)state;
    int32_t *seed;
    bp_problem *p = problem_and_seed(8, 2, &seed);
    bp_evo_options o;
    bp_evo_options_default(&o);
    o.generations = 5;
    o.lambda = 6;
    o.promote = 3;
    bp_evo *e = NULL;
    bp_error err;
    assert_int_equal(bp_evo_new(p, seed, &o, &e, &err), BP_OK);
    size_t high_batches = 0;
    while (!bp_evo_done(e)) {
        bp_evo_batch b;
        assert_int_equal(bp_evo_ask(e, &b, &err), BP_OK);
        assert_true(b.n > 0);
        double f[8];
        for (size_t k = 0; k < b.n; k++)
            f[k] = b.generation > 0 && b.fidelity == BP_EVO_LOW ? 0.5 : 1.0;
        if (b.generation > 0 && b.fidelity == BP_EVO_HIGH) {
            assert_int_equal(b.n, 3);
            high_batches++;
        }
        assert_int_equal(bp_evo_tell(e, f, b.n, &err), BP_OK);
    }
    assert_int_equal(high_batches, 5);
    bp_evo_stats st;
    bp_evo_get_stats(e, &st);
    assert_int_equal(st.evals_low, 1 + 5 * 6);
    assert_int_equal(st.evals_high, 1 + 5 * 3);
    assert_int_equal(st.accepted, 0);
    const int32_t *bx;
    assert_int_equal(bp_evo_best(e, &bx, NULL), BP_OK);
    assert_memory_equal(bx, seed, p->n_items * sizeof *seed);
    bp_evo_destroy(&e);
    free(seed);
    bp_problem_destroy(&p);
}

static void test_generations_zero_and_stall(void **state)
{
    (void)state;
    int32_t *seed;
    bp_problem *p = problem_and_seed(7, 2, &seed);
    bp_evo_options o;
    bp_evo_options_default(&o);
    o.generations = 0;
    bp_evo *e = NULL;
    bp_error err;
    assert_int_equal(bp_evo_new(p, seed, &o, &e, &err), BP_OK);
    bp_evo_batch b;
    const int32_t *bx;
    double bf;
    assert_int_equal(bp_evo_best(e, &bx, &bf), BP_ENOTFOUND);
    assert_true(isnan(bf));
    assert_int_equal(bp_evo_ask(e, &b, &err), BP_OK);
    assert_int_equal(b.n, 1);
    assert_int_equal(b.fidelity, BP_EVO_HIGH); /* no low evaluation needed */
    double f = 2.5;
    assert_int_equal(bp_evo_tell(e, &f, 1, &err), BP_OK);
    assert_true(bp_evo_done(e));
    bp_evo_stats st;
    bp_evo_get_stats(e, &st);
    assert_int_equal(st.evals_low, 0);
    assert_int_equal(st.evals_high, 1);
    assert_true(isnan(st.seed_low));
    bp_evo_destroy(&e);
    free(seed);
    bp_problem_destroy(&p);

    /* Two items with two choices each: three other assignments exist, so
     * the search runs out of new candidates and ends early. */
    p = bp_problem_new(2);
    double c00[2] = {1, 1}, c01[2] = {2, 2};
    for (int i = 0; i < 2; i++) {
        char name[8];
        snprintf(name, sizeof name, "t%d", i);
        bp_problem_add_item(p, name, NULL);
        bp_problem_add_choice(p, 0, 1.0, c00, NULL);
        bp_problem_add_choice(p, 1, 0.5, c01, NULL);
    }
    bp_problem_set_constraint(p, 0, "bytes", 10, NULL);
    bp_problem_set_constraint(p, 1, "lat", 10, NULL);
    int32_t s2[2] = {0, 0};
    bp_evo_options_default(&o);
    o.generations = 10;
    o.lambda = 8;
    o.promote = 8;
    assert_int_equal(bp_evo_new(p, s2, &o, &e, &err), BP_OK);
    size_t offspring = 0;
    while (!bp_evo_done(e)) {
        assert_int_equal(bp_evo_ask(e, &b, &err), BP_OK);
        if (b.n == 0)
            break;
        double fv[8];
        for (size_t k = 0; k < b.n; k++) {
            fv[k] = 3.0 - 0.5 * (b.choice[k * 2] + b.choice[k * 2 + 1]);
            if (b.generation > 0 && b.fidelity == BP_EVO_LOW)
                offspring++;
        }
        assert_int_equal(bp_evo_tell(e, fv, b.n, &err), BP_OK);
    }
    bp_evo_get_stats(e, &st);
    assert_true(st.stalled);
    assert_true(offspring <= 3);
    assert_true(st.generations < 10);
    assert_int_equal(bp_evo_best(e, &bx, &bf), BP_OK);
    assert_int_equal(bx[0], 1); /* the most accurate pair fits and wins */
    assert_int_equal(bx[1], 1);
    bp_evo_destroy(&e);
    bp_problem_destroy(&p);
}

static void test_rejects_bad_input(void **state)
{
    (void)state;
    int32_t *seed;
    bp_problem *p = problem_and_seed(9, 2, &seed);
    size_t n = p->n_items;
    bp_evo *e = (bp_evo *)&e;
    bp_error err;
    /* The most expensive choice of every item breaks the capacities. */
    int32_t *bad = malloc(n * sizeof *bad);
    for (size_t i = 0; i < n; i++)
        bad[i] = (int32_t)(p->item_start[i + 1] - p->item_start[i] - 1);
    bp_solution s = {0};
    bp_solution_init(&s, n, NULL);
    memcpy(s.choice, bad, n * sizeof *bad);
    bp_solution_evaluate(p, &s, NULL);
    assert_true(s.cost_total[0] > p->capacity[0] || s.cost_total[1] > p->capacity[1]);
    bp_solution_free(&s);
    assert_int_equal(bp_evo_new(p, bad, NULL, &e, &err), BP_EINVAL);
    assert_null(e);
    assert_non_null(strstr(err.msg, "infeasible"));
    assert_true(strstr(err.msg, "'bytes'") || strstr(err.msg, "'lat1'"));
    memcpy(bad, seed, n * sizeof *bad);
    bad[3] = 99;
    assert_int_equal(bp_evo_new(p, bad, NULL, &e, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "item 3"));
    bad[3] = -1;
    assert_int_equal(bp_evo_new(p, bad, NULL, &e, &err), BP_EINVAL);
    assert_int_equal(bp_evo_new(p, NULL, NULL, &e, &err), BP_EINVAL);
    assert_int_equal(bp_evo_new(NULL, seed, NULL, &e, &err), BP_EINVAL);
    free(bad);

    bp_evo_options o;
    bp_evo_options_default(&o);
    o.lambda = 0;
    assert_int_equal(bp_evo_new(p, seed, &o, &e, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "lambda"));
    bp_evo_options_default(&o);
    o.promote = 9;
    assert_int_equal(bp_evo_new(p, seed, &o, &e, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "promote"));
    bp_evo_options_default(&o);
    o.min_moves = 3;
    o.max_moves = 2;
    assert_int_equal(bp_evo_new(p, seed, &o, &e, &err), BP_EINVAL);
    bp_evo_options_default(&o);
    o.max_tries = 0;
    assert_int_equal(bp_evo_new(p, seed, &o, &e, &err), BP_EINVAL);

    /* tell: without ask, wrong count, non-finite values; none changes the
     * state, so the same batch is then told correctly. */
    assert_int_equal(bp_evo_new(p, seed, NULL, &e, &err), BP_OK);
    double f[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    assert_int_equal(bp_evo_tell(e, f, 1, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "no batch"));
    bp_evo_batch b;
    assert_int_equal(bp_evo_ask(e, &b, &err), BP_OK); /* seed, low */
    assert_int_equal(bp_evo_tell(e, f, 1, &err), BP_OK);
    assert_int_equal(bp_evo_ask(e, &b, &err), BP_OK); /* seed, high */
    assert_int_equal(bp_evo_tell(e, f, 1, &err), BP_OK);
    assert_int_equal(bp_evo_ask(e, &b, &err), BP_OK); /* generation 1 */
    assert_int_equal(b.n, 8);
    assert_int_equal(bp_evo_tell(e, f, 7, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "7 fitness values for a batch of 8"));
    f[5] = NAN;
    assert_int_equal(bp_evo_tell(e, f, 8, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "fitness[5]"));
    f[5] = INFINITY;
    assert_int_equal(bp_evo_tell(e, f, 8, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "fitness[5]"));
    f[5] = 1;
    assert_int_equal(bp_evo_tell(e, NULL, 8, &err), BP_EINVAL);
    bp_evo_batch again;
    assert_int_equal(bp_evo_ask(e, &again, &err), BP_OK);
    assert_int_equal(again.n, 8);
    assert_int_equal(again.generation, 1);
    assert_int_equal(bp_evo_tell(e, f, 8, &err), BP_OK);
    bp_evo_stats st;
    bp_evo_get_stats(e, &st);
    assert_int_equal(st.evals_low, 9);
    bp_evo_destroy(&e);
    bp_evo_destroy(&e); /* safe twice */

    /* An invalid problem is refused with the problem's own message. */
    p->error[0] = NAN;
    assert_int_equal(bp_evo_new(p, seed, NULL, &e, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "evo: "));
    free(seed);
    bp_problem_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_improves_on_ilp_seed),
        cmocka_unit_test(test_single_constraint),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_no_promotion_when_low_never_beats),
        cmocka_unit_test(test_high_ties_do_not_replace),
        cmocka_unit_test(test_generations_zero_and_stall),
        cmocka_unit_test(test_rejects_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
