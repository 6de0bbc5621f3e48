/* Tests for optimizer/search/ NSGA-II: option validation, feasibility and
 * mutual non-dominance of the front, objectives match the choice vectors,
 * ILP optima kept when seeded, determinism (seed and thread count),
 * improvement over generations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/nsga2.h"
#include "bitplan/solve.h"
#include "search_testutil.h"

static void check_front(const bp_problem *p, const bp_pareto_front *f, int caps)
{
    size_t M = f->n_objectives, n = f->n_items;
    assert_int_equal(M, 1 + p->n_constraints);
    assert_int_equal(n, p->n_items);
    assert_true(f->n >= 1);
    bp_solution s = {0};
    assert_int_equal(bp_solution_init(&s, n, NULL), BP_OK);
    for (size_t k = 0; k < f->n; k++) {
        const double *o = f->objective + k * M;
        memcpy(s.choice, f->choice + k * n, n * sizeof *s.choice);
        assert_int_equal(bp_solution_evaluate(p, &s, NULL), BP_OK);
        assert_true(s.objective == o[0]);
        for (size_t j = 0; j < p->n_constraints; j++) {
            assert_true(s.cost_total[j] == o[1 + j]);
            if (caps)
                assert_true(o[1 + j] <= p->capacity[j]);
        }
        /* sorted by first cost, then error */
        if (k > 0) {
            const double *q = f->objective + (k - 1) * M;
            assert_true(q[1] < o[1] || (q[1] == o[1] && q[0] <= o[0]));
        }
        /* mutually non-dominated and distinct */
        for (size_t l = 0; l < f->n; l++) {
            if (l == k)
                continue;
            const double *q = f->objective + l * M;
            int le = 1, lt = 0;
            for (size_t t = 0; t < M; t++) {
                if (q[t] > o[t])
                    le = 0;
                if (q[t] < o[t])
                    lt = 1;
            }
            if (le && lt)
                fail_msg("member %zu dominates member %zu", l, k);
            assert_false(le && !lt); /* identical objective vectors */
        }
    }
    bp_solution_free(&s);
}

static void test_invalid_options(void **state)
{
    (void)state;
    bp_problem *p = rand_problem(3, 10, 10, 2, 5, 1, 0.5, 0.5, 0);
    bp_pareto_front *f = (bp_pareto_front *)&f; /* must be reset to NULL */
    bp_nsga2_options o;
    bp_error e;
    static const size_t bad_pop[] = {0, 2, 3, 7, 200001};
    for (size_t t = 0; t < sizeof bad_pop / sizeof bad_pop[0]; t++) {
        bp_nsga2_options_default(&o);
        o.population = bad_pop[t];
        assert_int_equal(bp_nsga2_run(p, &o, &f, &e), BP_EINVAL);
        assert_null(f);
        assert_non_null(strstr(e.msg, "population"));
    }
    bp_nsga2_options_default(&o);
    o.crossover_prob = 1.5;
    assert_int_equal(bp_nsga2_run(p, &o, &f, &e), BP_EINVAL);
    o.crossover_prob = NAN;
    assert_int_equal(bp_nsga2_run(p, &o, &f, &e), BP_EINVAL);
    bp_nsga2_options_default(&o);
    o.mutation_prob = NAN;
    assert_int_equal(bp_nsga2_run(p, &o, &f, &e), BP_EINVAL);
    o.mutation_prob = 2;
    assert_int_equal(bp_nsga2_run(p, &o, &f, &e), BP_EINVAL);
    bp_nsga2_options_default(&o);
    o.n_seeds = 1;
    assert_int_equal(bp_nsga2_run(p, &o, &f, &e), BP_EINVAL);
    int32_t bad[10] = {0};
    bad[4] = 99;
    const int32_t *seeds[1] = {bad};
    o.seeds = seeds;
    assert_int_equal(bp_nsga2_run(p, &o, &f, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "seed 0: item 4"));
    bad[4] = -1;
    assert_int_equal(bp_nsga2_run(p, &o, &f, &e), BP_EINVAL);
    o.population = 4;
    o.n_seeds = 3;
    assert_int_equal(bp_nsga2_run(p, &o, &f, &e), BP_EINVAL);
    o.population = 100;
    o.n_seeds = 1;
    bad[4] = 0;
    o.archive_max = 2000000;
    assert_int_equal(bp_nsga2_run(p, &o, &f, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "archive_max"));
    assert_int_equal(bp_nsga2_run(p, NULL, NULL, &e), BP_EINVAL);
    p->error[0] = INFINITY;
    assert_int_equal(bp_nsga2_run(p, NULL, &f, &e), BP_EINVAL);
    p->error[0] = 1;
    /* Caps below the smallest achievable total. */
    bp_problem_set_constraint(p, 0, "bytes", bp_problem_min_cost(p, 0) - 1, NULL);
    assert_int_equal(bp_nsga2_run(p, NULL, &f, &e), BP_EINFEASIBLE);
    assert_non_null(strstr(e.msg, "< smallest achievable"));
    /* Without caps the same problem is fine. */
    bp_nsga2_options_default(&o);
    o.use_caps = 0;
    o.generations = 5;
    assert_int_equal(bp_nsga2_run(p, &o, &f, &e), BP_OK);
    check_front(p, f, 0);
    bp_pareto_front_destroy(&f);
    bp_pareto_front_destroy(&f);
    assert_null(f);
    bp_problem_destroy(&p);
}

static void test_front_feasible_nondominated(void **state)
{
    (void)state;
    for (size_t m = 1; m <= 3; m++) {
        bp_problem *p = rand_problem(40 + m, 30, 30, 3, 9, m, 0.4, 0.6, 0);
        bp_nsga2_options o;
        bp_nsga2_options_default(&o);
        o.generations = 60;
        bp_pareto_front *f = NULL;
        bp_error e;
        assert_int_equal(bp_nsga2_run(p, &o, &f, &e), BP_OK);
        check_front(p, f, 1);
        print_message("m=%zu: %zu members\n", m, f->n);
        bp_pareto_front_destroy(&f);
        o.use_caps = 0;
        assert_int_equal(bp_nsga2_run(p, &o, &f, &e), BP_OK);
        check_front(p, f, 0);
        bp_pareto_front_destroy(&f);
        bp_problem_destroy(&p);
    }
}

/* A member equal to or dominating the ILP optimum (error and every cost). */
static int covers(const bp_pareto_front *f, const bp_solution *s, size_t m)
{
    for (size_t k = 0; k < f->n; k++) {
        const double *o = f->objective + k * f->n_objectives;
        int ok = o[0] <= s->objective;
        for (size_t j = 0; ok && j < m; j++)
            ok = o[1 + j] <= s->cost_total[j];
        if (ok)
            return 1;
    }
    return 0;
}

static void test_contains_ilp_optimum(void **state)
{
    (void)state;
    for (size_t m = 1; m <= 2; m++) {
        bp_problem *p = rand_problem(60 + m, 40, 40, 4, 10, m, 0.5, 0.5, 0);
        double cap_hi[BP_MAX_CONSTRAINTS], cap_lo[BP_MAX_CONSTRAINTS];
        for (size_t j = 0; j < m; j++) {
            cap_hi[j] = p->capacity[j];
            double lo = bp_problem_min_cost(p, j);
            cap_lo[j] = floor(lo + 0.5 * (cap_hi[j] - lo));
        }
        bp_solution opt[2] = {{0}, {0}};
        for (int b = 0; b < 2; b++) {
            for (size_t j = 0; j < m; j++)
                p->capacity[j] = b ? cap_hi[j] : cap_lo[j];
            assert_int_equal(bp_solve_ilp(p, NULL, &opt[b], NULL), BP_OK);
        }
        const int32_t *seeds[2] = {opt[0].choice, opt[1].choice};
        for (int b = 0; b < 2; b++) {
            /* Capped at budget b: the budget's optimum is the error extreme
             * of the feasible front, which NSGA-II never drops. */
            for (size_t j = 0; j < m; j++)
                p->capacity[j] = b ? cap_hi[j] : cap_lo[j];
            bp_nsga2_options o;
            bp_nsga2_options_default(&o);
            o.generations = 50;
            o.seeds = seeds;
            o.n_seeds = 2;
            bp_pareto_front *f = NULL;
            bp_error e;
            assert_int_equal(bp_nsga2_run(p, &o, &f, &e), BP_OK);
            check_front(p, f, 1);
            assert_true(covers(f, &opt[b], m));
            /* The archive keeps the seeds: the lower budget's optimum is
             * feasible under the higher caps and still covered. */
            if (b == 1)
                assert_true(covers(f, &opt[0], m));
            /* Nothing feasible beats the optimum. */
            for (size_t k = 0; k < f->n; k++)
                assert_true(f->objective[k * f->n_objectives] >= opt[b].objective);
            bp_pareto_front_destroy(&f);
            if (b == 1) { /* and without caps */
                o.use_caps = 0;
                assert_int_equal(bp_nsga2_run(p, &o, &f, &e), BP_OK);
                check_front(p, f, 0);
                assert_true(covers(f, &opt[0], m));
                assert_true(covers(f, &opt[1], m));
                bp_pareto_front_destroy(&f);
            }
        }
        bp_solution_free(&opt[0]);
        bp_solution_free(&opt[1]);
        bp_problem_destroy(&p);
    }
}

static int same_front(const bp_pareto_front *a, const bp_pareto_front *b)
{
    if (a->n != b->n || a->n_items != b->n_items || a->n_objectives != b->n_objectives)
        return 0;
    return memcmp(a->choice, b->choice, a->n * a->n_items * sizeof *a->choice) == 0 &&
           memcmp(a->objective, b->objective, a->n * a->n_objectives * sizeof *a->objective) == 0;
}

static void test_deterministic(void **state)
{
    (void)state;
    bp_problem *p = rand_problem(77, 60, 60, 3, 12, 2, 0.4, 0.6, 0);
    bp_pareto_front *f[4] = {NULL};
    for (int t = 0; t < 4; t++) {
        bp_nsga2_options o;
        bp_nsga2_options_default(&o);
        o.generations = 40;
        o.population = 64;
        o.threads = t == 0 ? 1 : t == 1 ? 1 : t == 2 ? 2 : 1;
        o.seed = t == 3 ? 12345 : 7;
        assert_int_equal(bp_nsga2_run(p, &o, &f[t], NULL), BP_OK);
    }
    assert_true(same_front(f[0], f[1]));
    assert_true(same_front(f[0], f[2]));
    assert_false(same_front(f[0], f[3])); /* another seed explores differently */
    for (int t = 0; t < 4; t++)
        bp_pareto_front_destroy(&f[t]);
    bp_problem_destroy(&p);
}

/* Hypervolume of a 2-objective front (error, bytes) against ref. */
static double hypervolume2(const bp_pareto_front *f, double ref_e, double ref_c)
{
    double hv = 0.0, prev_e = ref_e;
    /* sorted by cost ascending, errors then strictly decreasing */
    for (size_t k = 0; k < f->n; k++) {
        double e = f->objective[k * 2], c = f->objective[k * 2 + 1];
        if (c >= ref_c || e >= prev_e)
            continue;
        hv += (prev_e - e) * (ref_c - c);
        prev_e = e;
    }
    return hv;
}

static void test_improves_over_generations(void **state)
{
    (void)state;
    bp_problem *p = rand_problem(88, 80, 80, 6, 12, 1, 0.5, 0.5, 0);
    double ref_e = 0, ref_c = 0;
    for (size_t i = 0; i < p->n_items; i++) {
        double me = 0, mc = 0;
        for (size_t k = p->item_start[i]; k < p->item_start[i + 1]; k++) {
            me = fmax(me, p->error[k]);
            mc = fmax(mc, p->cost[k]);
        }
        ref_e += me;
        ref_c += mc;
    }
    double hv[3];
    static const size_t gens[3] = {0, 20, 150};
    for (int t = 0; t < 3; t++) {
        bp_nsga2_options o;
        bp_nsga2_options_default(&o);
        o.use_caps = 0;
        o.generations = gens[t];
        bp_pareto_front *f = NULL;
        assert_int_equal(bp_nsga2_run(p, &o, &f, NULL), BP_OK);
        check_front(p, f, 0);
        hv[t] = hypervolume2(f, ref_e, ref_c);
        print_message("generations %zu: %zu members, hypervolume %.6g\n", gens[t], f->n, hv[t]);
        bp_pareto_front_destroy(&f);
    }
    assert_true(hv[1] > hv[0]);
    assert_true(hv[2] > hv[1]);
    bp_problem_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_options),
        cmocka_unit_test(test_front_feasible_nondominated),
        cmocka_unit_test(test_contains_ilp_optimum),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_improves_over_generations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
