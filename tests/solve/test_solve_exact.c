/* Tests for optimizer/solve/: the three exact solvers agree with each other
 * on seeded random instances, on infeasible budgets and at exact capacity. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bitplan/solve.h"
#include "solve_testutil.h"

static void assert_close(double a, double b)
{
    double tol = 1e-9 * fmax(1.0, fmax(fabs(a), fabs(b)));
    if (fabs(a - b) > tol)
        fail_msg("objectives differ: %.17g vs %.17g", a, b);
}

static void assert_feasible(const bp_problem *p, const bp_solution *s)
{
    bp_solution chk = {0};
    assert_int_equal(bp_solution_init(&chk, p->n_items, NULL), BP_OK);
    memcpy(chk.choice, s->choice, p->n_items * sizeof *chk.choice);
    assert_int_equal(bp_solution_evaluate(p, &chk, NULL), BP_OK);
    for (size_t j = 0; j < p->n_constraints; j++) {
        assert_true(chk.cost_total[j] <= p->capacity[j]);
        assert_true(chk.cost_total[j] == s->cost_total[j]);
    }
    assert_true(chk.objective == s->objective);
    bp_solution_free(&chk);
}

/* Solve with all applicable solvers; return 1 if feasible. */
static int cross_check(const bp_problem *p, uint64_t seed)
{
    bp_solution bf = {0}, ilp = {0}, dp = {0};
    bp_error e1, e2, e3;
    int r1 = bp_solve_bruteforce(p, 0, &bf, &e1);
    bp_ilp_options o;
    bp_ilp_options_default(&o);
    int r2 = bp_solve_ilp(p, &o, &ilp, &e2);
    if (r1 != r2)
        fail_msg("seed %llu: bruteforce %s (%s), ilp %s (%s)", (unsigned long long)seed,
                 bp_error_name(r1), r1 ? e1.msg : "", bp_error_name(r2), r2 ? e2.msg : "");
    int feasible = r1 == BP_OK;
    if (feasible) {
        assert_int_equal(bf.status, BP_SOLVE_OPTIMAL);
        assert_int_equal(ilp.status, BP_SOLVE_OPTIMAL);
        assert_close(bf.objective, ilp.objective);
        assert_feasible(p, &bf);
        assert_feasible(p, &ilp);
        assert_true(ilp.gap == 0.0);
        assert_true(ilp.bound == ilp.objective);
        assert_string_equal(ilp.solver, "glpk-ilp");
    } else {
        assert_int_equal(r1, BP_EINFEASIBLE);
        assert_int_equal(bf.status, BP_SOLVE_INFEASIBLE);
        assert_int_equal(ilp.status, BP_SOLVE_INFEASIBLE);
    }
    if (p->n_constraints == 1) {
        int r3 = bp_solve_dp(p, 0, &dp, &e3);
        if (r3 != r1)
            fail_msg("seed %llu: bruteforce %s, dp %s (%s)", (unsigned long long)seed,
                     bp_error_name(r1), bp_error_name(r3), r3 ? e3.msg : "");
        if (feasible) {
            assert_int_equal(dp.status, BP_SOLVE_OPTIMAL);
            assert_close(bf.objective, dp.objective);
            assert_feasible(p, &dp);
        }
    }
    bp_solution_free(&bf);
    bp_solution_free(&ilp);
    bp_solution_free(&dp);
    return feasible;
}

static void test_solve_random_single_constraint(void **state)
{
    (void)state;
    int feasible = 0;
    for (uint64_t seed = 1; seed <= 250; seed++) {
        bp_problem *p = random_problem(seed, 2, 8, 2, 5, 1);
        assert_non_null(p);
        assert_int_equal(bp_problem_validate(p, NULL), BP_OK);
        feasible += cross_check(p, seed);
        bp_problem_destroy(&p);
    }
    /* Capacities start at the smallest achievable total: all feasible. */
    assert_int_equal(feasible, 250);
}

static void test_solve_random_two_and_three_constraints(void **state)
{
    (void)state;
    int feasible = 0, total = 0;
    for (size_t m = 2; m <= 3; m++) {
        for (uint64_t seed = 1000; seed < 1110; seed++) {
            bp_problem *p = random_problem(seed * m, 2, 7, 2, 5, m);
            assert_non_null(p);
            feasible += cross_check(p, seed);
            total++;
            bp_problem_destroy(&p);
        }
    }
    /* Some joint budgets are infeasible; most are not. */
    assert_true(feasible > total / 2);
}

/* Every solver must return the same assignment on every run. */
static void test_solve_deterministic(void **state)
{
    (void)state;
    for (uint64_t seed = 7; seed < 17; seed++) {
        bp_problem *p = random_problem(seed, 20, 40, 3, 8, seed % 2 ? 1 : 2);
        bp_solution a = {0}, b = {0};
        bp_ilp_options o;
        bp_ilp_options_default(&o);
        assert_int_equal(bp_solve_ilp(p, &o, &a, NULL), BP_OK);
        assert_int_equal(bp_solve_ilp(p, &o, &b, NULL), BP_OK);
        assert_memory_equal(a.choice, b.choice, p->n_items * sizeof *a.choice);
        assert_true(a.objective == b.objective);
        if (p->n_constraints == 1) {
            assert_int_equal(bp_solve_dp(p, 0, &a, NULL), BP_OK);
            assert_int_equal(bp_solve_dp(p, 0, &b, NULL), BP_OK);
            assert_memory_equal(a.choice, b.choice, p->n_items * sizeof *a.choice);
        }
        bp_solution_free(&a);
        bp_solution_free(&b);
        bp_problem_destroy(&p);
    }
}

/* Larger single-constraint instances: ILP and DP agree (no brute force). */
static void test_solve_ilp_matches_dp_medium(void **state)
{
    (void)state;
    for (uint64_t seed = 300; seed < 330; seed++) {
        bp_problem *p = random_problem(seed, 30, 80, 3, 12, 1);
        bp_solution a = {0}, b = {0};
        bp_error e;
        int r = bp_solve_ilp(p, NULL, &a, &e);
        if (r)
            fail_msg("seed %llu: %s", (unsigned long long)seed, e.msg);
        assert_int_equal(bp_solve_dp(p, 0, &b, NULL), BP_OK);
        assert_close(a.objective, b.objective);
        assert_feasible(p, &a);
        assert_feasible(p, &b);
        bp_solution_free(&a);
        bp_solution_free(&b);
        bp_problem_destroy(&p);
    }
}

/* Costs around 1e10 per item (10 GB tensors) with near-collinear sizes:
 * before capacity rows were scaled, GLPK returned "optimal" answers up to
 * 1 % worse than the DP on these seeds. */
static void test_solve_huge_costs_match_dp(void **state)
{
    (void)state;
    static const int seeds[] = {1, 13, 15, 28, 34};
    for (size_t q = 0; q < sizeof seeds / sizeof *seeds; q++) {
        trng r = {(uint64_t)seeds[q]};
        bp_problem *p = bp_problem_new(1);
        double lo = 0, hi = 0;
        for (int i = 0; i < 30; i++) {
            char nm[16];
            snprintf(nm, sizeof nm, "t%d", i);
            bp_problem_add_item(p, nm, NULL);
            double cmin = INFINITY, cmax = 0;
            for (int b = 0; b < 6; b++) {
                double c = floor(1e10 * (b + 1) + floor(trng_unit(&r) * 1e7));
                double e = exp2(-2.0 * b) * (1 + trng_unit(&r));
                bp_problem_add_choice(p, b, e, &c, NULL);
                cmin = fmin(cmin, c);
                cmax = fmax(cmax, c);
            }
            lo += cmin;
            hi += cmax;
        }
        bp_problem_set_constraint(p, 0, "bytes", floor(lo + (hi - lo) * trng_unit(&r)), NULL);
        bp_solution a = {0}, b = {0};
        bp_error e;
        if (bp_solve_ilp(p, NULL, &a, &e))
            fail_msg("seed %d: %s", seeds[q], e.msg);
        assert_int_equal(a.status, BP_SOLVE_OPTIMAL);
        assert_int_equal(bp_solve_dp(p, 0, &b, NULL), BP_OK);
        assert_close(a.objective, b.objective);
        assert_feasible(p, &a);
        bp_solution_free(&a);
        bp_solution_free(&b);
        bp_problem_destroy(&p);
    }
}

static bp_problem *tiny_problem(double capacity)
{
    /* Two items; costs 10/20 and 5/30; smallest achievable 15. */
    bp_problem *p = bp_problem_new(1);
    double c;
    bp_problem_add_item(p, "a", NULL);
    c = 10;
    bp_problem_add_choice(p, 0, 5.0, &c, NULL);
    c = 20;
    bp_problem_add_choice(p, 1, 1.0, &c, NULL);
    bp_problem_add_item(p, "b", NULL);
    c = 5;
    bp_problem_add_choice(p, 0, 7.0, &c, NULL);
    c = 30;
    bp_problem_add_choice(p, 1, 0.5, &c, NULL);
    bp_problem_set_constraint(p, 0, "bytes", capacity, NULL);
    return p;
}

static void test_solve_infeasible_budget(void **state)
{
    (void)state;
    bp_problem *p = tiny_problem(14);
    bp_solution s = {0};
    bp_error e;
    assert_int_equal(bp_solve_ilp(p, NULL, &s, &e), BP_EINFEASIBLE);
    assert_int_equal(s.status, BP_SOLVE_INFEASIBLE);
    assert_non_null(strstr(e.msg, "constraint 'bytes': capacity 14 < smallest achievable 15"));
    assert_int_equal(s.choice[0], -1);
    assert_int_equal(bp_solve_dp(p, 0, &s, &e), BP_EINFEASIBLE);
    assert_int_equal(s.status, BP_SOLVE_INFEASIBLE);
    assert_non_null(strstr(e.msg, "smallest achievable 15"));
    assert_int_equal(bp_solve_bruteforce(p, 0, &s, &e), BP_EINFEASIBLE);
    assert_int_equal(s.status, BP_SOLVE_INFEASIBLE);
    assert_non_null(strstr(e.msg, "smallest achievable 15"));
    assert_string_equal(bp_solve_status_name(s.status), "infeasible");
    bp_solution_free(&s);
    bp_problem_destroy(&p);
}

static void test_solve_infeasible_every_constraint_named(void **state)
{
    (void)state;
    bp_problem *p = bp_problem_new(2);
    double c[2] = {100, 7};
    bp_problem_add_item(p, "w", NULL);
    bp_problem_add_choice(p, 0, 1.0, c, NULL);
    bp_problem_set_constraint(p, 0, "bytes", 99, NULL);
    bp_problem_set_constraint(p, 1, "latency", 6.5, NULL);
    bp_solution s = {0};
    bp_error e;
    assert_int_equal(bp_solve_ilp(p, NULL, &s, &e), BP_EINFEASIBLE);
    assert_non_null(strstr(e.msg, "constraint 'bytes': capacity 99 < smallest achievable 100"));
    assert_non_null(strstr(e.msg, "constraint 'latency': capacity 6.5 < smallest achievable 7"));
    bp_solution_free(&s);
    bp_problem_destroy(&p);
}

/* Each budget alone is satisfiable, the pair is not: GLPK must find out. */
static void test_solve_jointly_infeasible(void **state)
{
    (void)state;
    bp_problem *p = bp_problem_new(2);
    bp_problem_add_item(p, "w", NULL);
    double a[2] = {10, 100}, b[2] = {100, 10};
    bp_problem_add_choice(p, 0, 1.0, a, NULL);
    bp_problem_add_choice(p, 1, 2.0, b, NULL);
    bp_problem_add_item(p, "v", NULL);
    bp_problem_add_choice(p, 0, 1.0, a, NULL);
    bp_problem_add_choice(p, 1, 2.0, b, NULL);
    bp_problem_set_constraint(p, 0, "bytes", 50, NULL);
    bp_problem_set_constraint(p, 1, "latency", 50, NULL);
    bp_solution s = {0};
    bp_error e;
    assert_int_equal(bp_solve_ilp(p, NULL, &s, &e), BP_EINFEASIBLE);
    assert_int_equal(s.status, BP_SOLVE_INFEASIBLE);
    assert_non_null(strstr(e.msg, "each constraint alone is satisfiable"));
    assert_non_null(strstr(e.msg, "'bytes'"));
    assert_non_null(strstr(e.msg, "'latency'"));
    assert_int_equal(bp_solve_bruteforce(p, 0, &s, &e), BP_EINFEASIBLE);
    assert_non_null(strstr(e.msg, "each constraint alone is satisfiable"));
    bp_solution_free(&s);
    bp_problem_destroy(&p);
}

static void test_solve_exactly_at_capacity(void **state)
{
    (void)state;
    /* Capacity equal to the smallest achievable total: only the cheapest
     * assignment fits, and it must be found. */
    bp_problem *p = tiny_problem(15);
    bp_solution s = {0};
    assert_int_equal(bp_solve_ilp(p, NULL, &s, NULL), BP_OK);
    assert_int_equal(s.status, BP_SOLVE_OPTIMAL);
    assert_int_equal(s.choice[0], 0);
    assert_int_equal(s.choice[1], 0);
    assert_true(s.cost_total[0] == 15.0);
    assert_int_equal(bp_solve_dp(p, 0, &s, NULL), BP_OK);
    assert_int_equal(s.choice[0], 0);
    assert_int_equal(s.choice[1], 0);
    bp_problem_destroy(&p);

    /* Capacity 25 = 20 + 5 exactly: the better first item fits. */
    p = tiny_problem(25);
    assert_int_equal(bp_solve_ilp(p, NULL, &s, NULL), BP_OK);
    assert_int_equal(s.choice[0], 1);
    assert_int_equal(s.choice[1], 0);
    assert_true(s.objective == 8.0);
    assert_int_equal(bp_solve_dp(p, 0, &s, NULL), BP_OK);
    assert_int_equal(s.choice[0], 1);
    assert_int_equal(bp_solve_bruteforce(p, 0, &s, NULL), BP_OK);
    assert_int_equal(s.choice[0], 1);
    bp_solution_free(&s);
    bp_problem_destroy(&p);

    /* Large byte counts (a 70B-sized budget) exactly at capacity: GLPK's
     * relative tolerance must not let an over-budget assignment through. */
    p = bp_problem_new(1);
    double total = 0;
    for (int i = 0; i < 40; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "t%d", i);
        bp_problem_add_item(p, nm, NULL);
        for (int b = 2; b <= 8; b++) {
            double c = 1e9 * b + (double)(i * 7 + b * 3);
            bp_problem_add_choice(p, b, exp2(-2.0 * b) * (1 + i % 5), &c, NULL);
            if (b == 4)
                total += c;
        }
    }
    bp_problem_set_constraint(p, 0, "bytes", total + 1, NULL);
    assert_int_equal(bp_solve_ilp(p, NULL, &s, NULL), BP_OK);
    assert_true(s.cost_total[0] <= total + 1);
    bp_solution d = {0};
    assert_int_equal(bp_solve_dp(p, 0, &d, NULL), BP_OK);
    assert_close(s.objective, d.objective);
    bp_solution_free(&d);
    bp_solution_free(&s);
    bp_problem_destroy(&p);
}

static void test_solve_dp_state_cap(void **state)
{
    (void)state;
    bp_problem *p = random_problem(99, 60, 60, 8, 8, 1);
    bp_solution s = {0};
    bp_error e;
    assert_int_equal(bp_solve_dp(p, 50, &s, &e), BP_ENOMEM);
    assert_non_null(strstr(e.msg, "states"));
    assert_int_equal(s.status, BP_SOLVE_NO_SOLUTION);
    /* The caller's fallback. */
    assert_int_equal(bp_solve_ilp(p, NULL, &s, NULL), BP_OK);
    assert_int_equal(s.status, BP_SOLVE_OPTIMAL);
    bp_solution_free(&s);
    bp_problem_destroy(&p);

    p = random_problem(5, 3, 3, 2, 2, 2);
    assert_int_equal(bp_solve_dp(p, 0, &s, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "1 constraint"));
    bp_solution_free(&s);
    bp_problem_destroy(&p);
}

static void test_solve_bruteforce_limit(void **state)
{
    (void)state;
    bp_problem *p = random_problem(3, 30, 30, 4, 4, 1);
    bp_solution s = {0};
    bp_error e;
    assert_int_equal(bp_solve_bruteforce(p, 1000, &s, &e), BP_EUNSUPPORTED);
    assert_non_null(strstr(e.msg, "assignments"));
    bp_solution_free(&s);
    bp_problem_destroy(&p);
}

/* Identical choices within an item: every solver breaks the tie the same
 * way on every run, and the objectives agree. */
static void test_solve_ties(void **state)
{
    (void)state;
    bp_problem *p = bp_problem_new(1);
    for (int i = 0; i < 6; i++) {
        char nm[8];
        snprintf(nm, sizeof nm, "t%d", i);
        bp_problem_add_item(p, nm, NULL);
        for (int c = 0; c < 4; c++) {
            double cost = 10.0 * (c / 2 + 1);
            bp_problem_add_choice(p, c, 4.0 - 2.0 * (c / 2), &cost, NULL);
        }
    }
    bp_problem_set_constraint(p, 0, "bytes", 90, NULL);
    bp_solution a = {0}, b = {0}, c = {0};
    assert_int_equal(bp_solve_ilp(p, NULL, &a, NULL), BP_OK);
    assert_int_equal(bp_solve_dp(p, 0, &b, NULL), BP_OK);
    assert_int_equal(bp_solve_bruteforce(p, 0, &c, NULL), BP_OK);
    assert_true(a.objective == b.objective);
    assert_true(a.objective == c.objective);
    /* Among identical choices the lowest index is kept (ILP, DP). */
    for (size_t i = 0; i < 6; i++) {
        assert_true(a.choice[i] == 0 || a.choice[i] == 2);
        assert_true(b.choice[i] == 0 || b.choice[i] == 2);
    }
    bp_solution_free(&a);
    bp_solution_free(&b);
    bp_solution_free(&c);
    bp_problem_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_solve_random_single_constraint),
        cmocka_unit_test(test_solve_random_two_and_three_constraints),
        cmocka_unit_test(test_solve_deterministic),
        cmocka_unit_test(test_solve_ilp_matches_dp_medium),
        cmocka_unit_test(test_solve_huge_costs_match_dp),
        cmocka_unit_test(test_solve_infeasible_budget),
        cmocka_unit_test(test_solve_infeasible_every_constraint_named),
        cmocka_unit_test(test_solve_jointly_infeasible),
        cmocka_unit_test(test_solve_exactly_at_capacity),
        cmocka_unit_test(test_solve_dp_state_cap),
        cmocka_unit_test(test_solve_bruteforce_limit),
        cmocka_unit_test(test_solve_ties),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
