/* Tests for optimizer/search/ Lagrangian relaxation: against the exact
 * solvers (feasible, objective >= optimum, bound <= optimum), gap on larger
 * instances, hull construction, infeasible budgets, determinism across
 * thread counts, invalid input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/lagrange.h"
#include "bitplan/solve.h"
#include "search_testutil.h"

/* The returned totals are those of bp_solution_evaluate and within caps. */
static void assert_feasible(const bp_problem *p, const bp_solution *s)
{
    bp_solution chk = {0};
    assert_int_equal(bp_solution_init(&chk, p->n_items, NULL), BP_OK);
    memcpy(chk.choice, s->choice, p->n_items * sizeof *chk.choice);
    assert_int_equal(bp_solution_evaluate(p, &chk, NULL), BP_OK);
    for (size_t j = 0; j < p->n_constraints; j++) {
        if (!(chk.cost_total[j] <= p->capacity[j]))
            fail_msg("constraint %zu: total %.17g > capacity %.17g", j, chk.cost_total[j],
                     p->capacity[j]);
        assert_true(chk.cost_total[j] == s->cost_total[j]);
    }
    assert_true(chk.objective == s->objective);
    bp_solution_free(&chk);
}

/* Lagrange vs an exact optimum: feasible, bound <= opt <= objective. */
static void check_against(const bp_problem *p, const bp_solution *opt, const bp_solution *lg,
                          uint64_t seed)
{
    assert_feasible(p, lg);
    assert_string_equal(lg->solver, "lagrange");
    double tol = 1e-12 * fmax(1.0, fabs(opt->objective));
    if (lg->objective < opt->objective - tol)
        fail_msg("seed %llu: objective %.17g below the optimum %.17g", (unsigned long long)seed,
                 lg->objective, opt->objective);
    if (!(lg->bound <= opt->objective))
        fail_msg("seed %llu: bound %.17g above the optimum %.17g", (unsigned long long)seed,
                 lg->bound, opt->objective);
    assert_true(lg->bound <= lg->objective);
    assert_true(lg->gap >= 0);
    if (lg->status == BP_SOLVE_OPTIMAL) {
        assert_true(lg->gap == 0.0);
        if (fabs(lg->objective - opt->objective) > tol)
            fail_msg("seed %llu: claims optimal %.17g, optimum %.17g", (unsigned long long)seed,
                     lg->objective, opt->objective);
    } else {
        assert_int_equal(lg->status, BP_SOLVE_FEASIBLE);
        assert_true(lg->gap > 0.0);
    }
}

static void run_random(size_t m, int n_inst, int min_items, int max_items, int min_ch, int max_ch,
                       int use_ilp, int fractional, int *n_feasible, double *worst_rel)
{
    for (int t = 0; t < n_inst; t++) {
        uint64_t seed = 1000u * m + (uint64_t)t + (fractional ? 50000u : 0u);
        bp_problem *p = rand_problem(seed, min_items, max_items, min_ch, max_ch, m, 0.05, 0.95,
                                     fractional);
        assert_non_null(p);
        bp_solution ex = {0}, lg = {0};
        bp_error e1, e2;
        int r1;
        if (use_ilp)
            r1 = bp_solve_ilp(p, NULL, &ex, &e1);
        else
            r1 = bp_solve_bruteforce(p, 0, &ex, &e1);
        int r2 = bp_solve_lagrange(p, NULL, &lg, &e2);
        if (r1 == BP_OK) {
            if (r2 != BP_OK)
                fail_msg("seed %llu (m=%zu): exact feasible (%.17g), lagrange %s: %s",
                         (unsigned long long)seed, m, ex.objective, bp_error_name(r2), e2.msg);
            check_against(p, &ex, &lg, seed);
            (*n_feasible)++;
            double rel = (lg.objective - ex.objective) / fmax(fabs(ex.objective), 1e-300);
            if (rel > *worst_rel)
                *worst_rel = rel;
        } else {
            assert_int_equal(r1, BP_EINFEASIBLE);
            /* Lagrange either proves infeasibility or says it found nothing. */
            if (r2 != BP_EINFEASIBLE && r2 != BP_ESOLVER)
                fail_msg("seed %llu: exact infeasible, lagrange %s", (unsigned long long)seed,
                         bp_error_name(r2));
            assert_true(lg.status == BP_SOLVE_INFEASIBLE || lg.status == BP_SOLVE_NO_SOLUTION);
            for (size_t i = 0; i < p->n_items; i++)
                assert_int_equal(lg.choice[i], -1);
        }
        bp_solution_free(&ex);
        bp_solution_free(&lg);
        bp_problem_destroy(&p);
    }
}

static void test_random_small_one_constraint(void **state)
{
    (void)state;
    int nf = 0;
    double worst = 0;
    run_random(1, 300, 1, 7, 1, 6, 0, 0, &nf, &worst);
    assert_true(nf > 250);
    print_message("1 constraint, %d feasible small instances, worst excess %.3g\n", nf, worst);
}

static void test_random_small_two_constraints(void **state)
{
    (void)state;
    int nf = 0;
    double worst = 0;
    run_random(2, 300, 1, 7, 1, 6, 0, 0, &nf, &worst);
    assert_true(nf > 150);
    print_message("2 constraints, %d feasible small instances, worst excess %.3g\n", nf, worst);
    nf = 0;
    worst = 0;
    run_random(3, 100, 1, 6, 1, 5, 0, 0, &nf, &worst);
    print_message("3 constraints, %d feasible small instances, worst excess %.3g\n", nf, worst);
}

static void test_random_medium_vs_ilp(void **state)
{
    (void)state;
    int nf = 0;
    double worst = 0;
    run_random(1, 30, 20, 80, 2, 10, 1, 0, &nf, &worst);
    run_random(2, 30, 20, 80, 2, 10, 1, 0, &nf, &worst);
    print_message("medium: %d feasible, worst excess %.3g\n", nf, worst);
    assert_true(nf >= 40);
}

static void test_fractional_costs_stay_feasible(void **state)
{
    (void)state;
    int nf = 0;
    double worst = 0;
    run_random(1, 100, 1, 7, 1, 6, 0, 1, &nf, &worst);
    run_random(2, 100, 1, 7, 1, 6, 0, 1, &nf, &worst);
    assert_true(nf > 100);
}

/* 2000 items: gap below 1% and close to the ILP optimum. */
static void test_gap_small_on_2000_items(void **state)
{
    (void)state;
    for (size_t m = 1; m <= 2; m++) {
        bp_problem *p = rand_problem(77 + m, 2000, 2000, 4, 8, m, 0.3, 0.7, 0);
        bp_solution ex = {0}, lg = {0};
        bp_error e;
        bp_ilp_options io;
        bp_ilp_options_default(&io);
        io.mip_gap = 1e-6; /* enough to check the bound; keeps the test fast */
        assert_int_equal(bp_solve_ilp(p, &io, &ex, &e), BP_OK);
        assert_int_equal(bp_solve_lagrange(p, NULL, &lg, &e), BP_OK);
        assert_feasible(p, &lg);
        /* bound <= proven ILP lower bound's objective range */
        assert_true(lg.bound <= ex.objective);
        assert_true(lg.objective >= ex.bound * (1 - 1e-12));
        print_message("m=%zu: lagrange %.9g (gap %.3g, %.3f s), ilp %.9g (%.3f s)\n", m, lg.objective,
                      lg.gap, lg.seconds, ex.objective, ex.seconds);
        assert_true(lg.gap < 0.01);
        assert_true((lg.objective - ex.objective) / ex.objective < 0.01);
        bp_solution_free(&ex);
        bp_solution_free(&lg);
        bp_problem_destroy(&p);
    }
}

/* ---- hull ---- */

static bp_problem *one_item(const double (*pts)[2], size_t n)
{
    bp_problem *p = bp_problem_new(1);
    bp_problem_add_item(p, "t", NULL);
    for (size_t k = 0; k < n; k++)
        bp_problem_add_choice(p, (int32_t)k, pts[k][1], &pts[k][0], NULL);
    bp_problem_set_constraint(p, 0, "bytes", 1e9, NULL);
    return p;
}

static void test_hull_removes_dominated_nonconvex_ties(void **state)
{
    (void)state;
    /* (cost, error) */
    static const double pts[][2] = {
        {2, 7},   /* 0: B */
        {1, 10},  /* 1: A, cheapest */
        {3, 6.5}, /* 2: C, above the chord B-D: not convex */
        {4, 3},   /* 3: D */
        {5, 8},   /* 4: dominated by D */
        {2, 7},   /* 5: duplicate of B: the lower index stays */
        {2, 9},   /* 6: same cost as B, more error */
        {3, 5},   /* 7: on the chord B-D (collinear): removed */
        {8, 2.5}, /* 8: most accurate */
        {9, 2.5}, /* 9: same error, dearer */
    };
    bp_problem *p = one_item(pts, sizeof pts / sizeof pts[0]);
    int32_t h[16];
    size_t nh = 0;
    bp_error e;
    assert_int_equal(bp_lagrange_item_hull(p, 0, 0, h, &nh, &e), BP_OK);
    assert_int_equal(nh, 4);
    assert_int_equal(h[0], 1);
    assert_int_equal(h[1], 0);
    assert_int_equal(h[2], 3);
    assert_int_equal(h[3], 8);
    /* Bad arguments. */
    assert_int_equal(bp_lagrange_item_hull(p, 1, 0, h, &nh, &e), BP_EINVAL);
    assert_int_equal(bp_lagrange_item_hull(p, 0, 1, h, &nh, &e), BP_EINVAL);
    assert_int_equal(bp_lagrange_item_hull(NULL, 0, 0, h, &nh, &e), BP_EINVAL);
    p->error[3] = NAN;
    assert_int_equal(bp_lagrange_item_hull(p, 0, 0, h, &nh, &e), BP_EINVAL);
    bp_problem_destroy(&p);

    /* All identical: one point, index 0. Single choice: itself. */
    static const double same[][2] = {{4, 1}, {4, 1}, {4, 1}};
    p = one_item(same, 3);
    assert_int_equal(bp_lagrange_item_hull(p, 0, 0, h, &nh, &e), BP_OK);
    assert_int_equal(nh, 1);
    assert_int_equal(h[0], 0);
    bp_problem_destroy(&p);
}

/* Random items: hull properties and every choice on or above the hull. */
static void test_hull_random_properties(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 300; seed++) {
        trng r = {seed};
        int n = trng_int(&r, 1, 30);
        double pts[30][2];
        for (int k = 0; k < n; k++) {
            pts[k][0] = (double)trng_int(&r, 0, 12);
            pts[k][1] = (double)trng_int(&r, 0, 12); /* coarse grid: many ties */
        }
        bp_problem *p = one_item((const double(*)[2])pts, (size_t)n);
        int32_t h[30];
        size_t nh;
        assert_int_equal(bp_lagrange_item_hull(p, 0, 0, h, &nh, NULL), BP_OK);
        assert_true(nh >= 1);
        double cmin = INFINITY, emin = INFINITY;
        for (int k = 0; k < n; k++) {
            cmin = fmin(cmin, pts[k][0]);
            emin = fmin(emin, pts[k][1]);
        }
        assert_true(pts[h[0]][0] == cmin);
        assert_true(pts[h[nh - 1]][1] == emin);
        for (size_t t = 0; t + 1 < nh; t++) {
            assert_true(pts[h[t]][0] < pts[h[t + 1]][0]);
            assert_true(pts[h[t]][1] > pts[h[t + 1]][1]);
            if (t + 2 < nh) {
                double s1 = (pts[h[t]][1] - pts[h[t + 1]][1]) / (pts[h[t + 1]][0] - pts[h[t]][0]);
                double s2 = (pts[h[t + 1]][1] - pts[h[t + 2]][1]) / (pts[h[t + 2]][0] - pts[h[t + 1]][0]);
                assert_true(s1 > s2);
            }
        }
        /* Every choice lies on or above the hull's piecewise-linear lower
         * envelope (exact on this integer grid via cross products). */
        for (int k = 0; k < n; k++) {
            double c = pts[k][0], e = pts[k][1];
            if (c >= pts[h[nh - 1]][0]) {
                assert_true(e >= pts[h[nh - 1]][1]);
                continue;
            }
            size_t t = 0;
            while (t + 1 < nh && pts[h[t + 1]][0] <= c)
                t++;
            if (t + 1 == nh)
                continue;
            double c0 = pts[h[t]][0], e0 = pts[h[t]][1], c1 = pts[h[t + 1]][0], e1 = pts[h[t + 1]][1];
            /* e >= e0 + (e1 - e0) * (c - c0) / (c1 - c0) */
            assert_true((e - e0) * (c1 - c0) >= (e1 - e0) * (c - c0));
        }
        bp_problem_destroy(&p);
    }
}

/* ---- infeasible, invalid ---- */

static void test_infeasible_budgets(void **state)
{
    (void)state;
    bp_problem *p = rand_problem(5, 10, 10, 2, 5, 2, 0.5, 0.5, 0);
    double min0 = bp_problem_min_cost(p, 0);
    bp_problem_set_constraint(p, 0, "bytes", min0 - 1, NULL);
    bp_solution s = {0};
    bp_error e;
    assert_int_equal(bp_solve_lagrange(p, NULL, &s, &e), BP_EINFEASIBLE);
    assert_int_equal(s.status, BP_SOLVE_INFEASIBLE);
    assert_non_null(strstr(e.msg, "constraint 'bytes': capacity"));
    assert_non_null(strstr(e.msg, "< smallest achievable"));
    for (size_t i = 0; i < p->n_items; i++)
        assert_int_equal(s.choice[i], -1);
    /* Exactly the smallest achievable: feasible, the cheapest choices. */
    bp_problem_set_constraint(p, 0, "bytes", min0, NULL);
    assert_int_equal(bp_solve_lagrange(p, NULL, &s, &e), BP_OK);
    assert_true(s.cost_total[0] == min0);
    bp_problem_destroy(&p);

    /* Each constraint alone satisfiable, together not even in the LP:
     * one item, choices (0, 10) and (10, 0), caps 4 and 4. */
    p = bp_problem_new(2);
    bp_problem_add_item(p, "x", NULL);
    bp_problem_add_choice(p, 0, 1.0, (const double[]){0, 10}, NULL);
    bp_problem_add_choice(p, 1, 2.0, (const double[]){10, 0}, NULL);
    bp_problem_add_item(p, "y", NULL);
    bp_problem_add_choice(p, 0, 1.0, (const double[]){1, 1}, NULL);
    bp_problem_set_constraint(p, 0, "bytes", 5, NULL);
    bp_problem_set_constraint(p, 1, "latency", 5, NULL);
    assert_int_equal(bp_solve_lagrange(p, NULL, &s, &e), BP_EINFEASIBLE);
    assert_int_equal(s.status, BP_SOLVE_INFEASIBLE);
    assert_non_null(strstr(e.msg, "each constraint alone is satisfiable"));
    assert_non_null(strstr(e.msg, "constraint 'latency'"));
    bp_solution_free(&s);
    bp_problem_destroy(&p);
}

static void test_invalid_input(void **state)
{
    (void)state;
    bp_problem *p = rand_problem(9, 5, 5, 2, 4, 1, 0.5, 0.5, 0);
    bp_solution s = {0};
    bp_error e;
    assert_int_equal(bp_solve_lagrange(p, NULL, NULL, &e), BP_EINVAL);
    assert_int_equal(bp_solve_lagrange(NULL, NULL, &s, &e), BP_EINVAL);
    p->error[1] = NAN;
    assert_int_equal(bp_solve_lagrange(p, NULL, &s, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "NaN"));
    p->error[1] = 1;
    p->cost[2] = -1;
    assert_int_equal(bp_solve_lagrange(p, NULL, &s, &e), BP_EINVAL);
    p->cost[2] = 1;
    assert_int_equal(bp_solve_lagrange(p, NULL, &s, &e), BP_OK);
    /* A solution of another size is reallocated. */
    bp_problem *q = rand_problem(10, 9, 9, 2, 4, 1, 0.5, 0.5, 0);
    assert_int_equal(bp_solve_lagrange(q, NULL, &s, &e), BP_OK);
    assert_int_equal(s.n_items, q->n_items);
    bp_solution_free(&s);
    bp_problem_destroy(&p);
    bp_problem_destroy(&q);
}

/* Most accurate assignment fits: proven optimal, gap exactly 0. */
static void test_loose_budget_is_optimal(void **state)
{
    (void)state;
    for (size_t m = 1; m <= 2; m++) {
        bp_problem *p = rand_problem(21, 30, 30, 2, 6, m, 1.0, 1.0, 0);
        bp_solution s = {0}, ex = {0};
        assert_int_equal(bp_solve_lagrange(p, NULL, &s, NULL), BP_OK);
        assert_int_equal(bp_solve_ilp(p, NULL, &ex, NULL), BP_OK);
        assert_int_equal(s.status, BP_SOLVE_OPTIMAL);
        assert_true(s.gap == 0.0);
        assert_true(s.bound == s.objective);
        assert_true(fabs(s.objective - ex.objective) <= 1e-12 * ex.objective);
        bp_solution_free(&s);
        bp_solution_free(&ex);
        bp_problem_destroy(&p);
    }
}

/* ---- determinism ---- */

/* Block-level instance large enough for several chunks (65536 items). */
static bp_problem *block_problem(size_t n, size_t m, uint64_t seed)
{
    bp_problem *p = bp_problem_new(m);
    trng r = {seed};
    double tot = 0, lat = 0;
    for (size_t i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "b%zu", i);
        bp_problem_add_item(p, name, NULL);
        double s = exp(2.0 * (trng_unit(&r) - 0.5));
        for (int b = 2; b <= 8; b++) {
            double c[2] = {32.0 * b + 2.0, 10.0 * b + (b % 2 ? 6.0 : 0.0)};
            double err = s * exp2(-2.0 * b) * (0.8 + 0.4 * trng_unit(&r));
            bp_problem_add_choice(p, b, err, c, NULL);
        }
        tot += 32.0 * 4.1 + 2.0;
        lat += 10.0 * 4.4;
    }
    bp_problem_set_constraint(p, 0, "bytes", floor(tot), NULL);
    if (m > 1)
        bp_problem_set_constraint(p, 1, "latency", floor(lat), NULL);
    return p;
}

static void test_deterministic_across_threads(void **state)
{
    (void)state;
    static const size_t sizes[2] = {200000, 140000};
    for (size_t m = 1; m <= 2; m++) {
        bp_problem *p = block_problem(sizes[m - 1], m, 99 + m);
        bp_solution ref = {0};
        for (int t = 1; t <= 3; t++) {
            bp_lagrange_options o;
            bp_lagrange_options_default(&o);
            o.threads = t;
            bp_solution s = {0};
            bp_error e;
            assert_int_equal(bp_solve_lagrange(p, &o, &s, &e), BP_OK);
            assert_feasible(p, &s);
            if (t == 1) {
                ref = s;
                print_message("m=%zu n=%zu: objective %.12g gap %.3g (%.2f s)\n", m, p->n_items,
                              s.objective, s.gap, s.seconds);
                assert_true(s.gap < 1e-3);
                continue;
            }
            assert_memory_equal(s.choice, ref.choice, p->n_items * sizeof *s.choice);
            assert_true(s.objective == ref.objective);
            assert_true(s.bound == ref.bound);
            bp_solution_free(&s);
        }
        bp_solution_free(&ref);
        bp_problem_destroy(&p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hull_removes_dominated_nonconvex_ties),
        cmocka_unit_test(test_hull_random_properties),
        cmocka_unit_test(test_random_small_one_constraint),
        cmocka_unit_test(test_random_small_two_constraints),
        cmocka_unit_test(test_random_medium_vs_ilp),
        cmocka_unit_test(test_fractional_costs_stay_feasible),
        cmocka_unit_test(test_gap_small_on_2000_items),
        cmocka_unit_test(test_infeasible_budgets),
        cmocka_unit_test(test_invalid_input),
        cmocka_unit_test(test_loose_budget_is_optimal),
        cmocka_unit_test(test_deterministic_across_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
