/* Tests for optimizer/solve/ilp.c: the guards around GLPK (validation
 * before any GLPK call, the error hook, the deadline), LP export and
 * options. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dlfcn.h>
#include <glpk.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/solve.h"
#include "solve_testutil.h"

/* Count GLPK problem creations by interposing glp_create_prob: the test
 * executable's definition wins over libglpk.so's for calls from bp_solve. */
static int glpk_create_calls;

glp_prob *glp_create_prob(void)
{
    static glp_prob *(*real)(void);
    if (!real)
        real = (glp_prob * (*)(void)) dlsym(RTLD_NEXT, "glp_create_prob");
    if (!real)
        abort(); /* the test cannot run without the real function */
    glpk_create_calls++;
    return real();
}

static void test_ilp_bad_data_never_reaches_glpk(void **state)
{
    (void)state;
    bp_problem *p = random_problem(11, 5, 5, 3, 3, 1);
    bp_solution s = {0};
    bp_error e;
    int before = glpk_create_calls;

    p->error[2] = NAN;
    assert_int_equal(bp_solve_ilp(p, NULL, &s, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "NaN"));
    p->error[2] = 1;

    p->cost[4] = INFINITY;
    assert_int_equal(bp_solve_ilp(p, NULL, &s, &e), BP_EINVAL);
    p->cost[4] = -5;
    assert_int_equal(bp_solve_ilp(p, NULL, &s, &e), BP_EINVAL);
    p->cost[4] = 5;

    p->n_constraints = 0;
    assert_int_equal(bp_solve_ilp(p, NULL, &s, &e), BP_EINVAL);
    p->n_constraints = 1;

    /* Indices that would send GLPK out of range (it would abort). */
    size_t saved = p->item_start[3];
    p->item_start[3] = p->item_start[2];
    assert_int_equal(bp_solve_ilp(p, NULL, &s, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "no choices"));
    p->item_start[3] = 1000000;
    assert_int_equal(bp_solve_ilp(p, NULL, &s, &e), BP_EINVAL);
    p->item_start[3] = saved;

    /* Invalid options GLPK would reject with xerror(). */
    bp_ilp_options o;
    bp_ilp_options_default(&o);
    o.mip_gap = -0.1;
    assert_int_equal(bp_solve_ilp(p, &o, &s, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "mip_gap"));
    o.mip_gap = NAN;
    assert_int_equal(bp_solve_ilp(p, &o, &s, &e), BP_EINVAL);
    o.mip_gap = 0;
    o.time_limit_s = NAN;
    assert_int_equal(bp_solve_ilp(p, &o, &s, &e), BP_EINVAL);

    assert_int_equal(glpk_create_calls, before);
    /* And the same problem, repaired, solves. */
    assert_int_equal(bp_solve_ilp(p, NULL, &s, &e), BP_OK);
    assert_true(glpk_create_calls > before);
    bp_solution_free(&s);
    bp_problem_destroy(&p);
}

/* A capacity below the smallest achievable total is reported without GLPK. */
static void test_ilp_simple_infeasible_skips_glpk(void **state)
{
    (void)state;
    bp_problem *p = random_problem(12, 4, 4, 3, 3, 1);
    double need = bp_problem_min_cost(p, 0);
    p->capacity[0] = need - 1;
    bp_solution s = {0};
    bp_error e;
    int before = glpk_create_calls;
    assert_int_equal(bp_solve_ilp(p, NULL, &s, &e), BP_EINFEASIBLE);
    assert_int_equal(glpk_create_calls, before);
    char want[64];
    snprintf(want, sizeof want, "smallest achievable %.0f", need);
    assert_non_null(strstr(e.msg, want));
    bp_solution_free(&s);
    bp_problem_destroy(&p);
}

/* GLPK's memory limit raises xerror() inside GLPK; the error hook must turn
 * it into BP_ESOLVER, and the next solve in the thread must work. */
static void test_ilp_glpk_error_is_caught(void **state)
{
    (void)state;
    bp_problem *p = random_problem(13, 3000, 3000, 12, 12, 2);
    bp_ilp_options o;
    bp_ilp_options_default(&o);
    o.memory_limit_mb = 1;
    bp_solution s = {0};
    bp_error e;
    assert_int_equal(bp_solve_ilp(p, &o, &s, &e), BP_ESOLVER);
    assert_non_null(strstr(e.msg, "glpk"));
    assert_non_null(strstr(e.msg, "limit"));
    assert_int_equal(s.status, BP_SOLVE_NO_SOLUTION);
    assert_int_equal(s.choice[0], -1);
    bp_problem_destroy(&p);

    p = random_problem(14, 10, 10, 4, 4, 1);
    assert_int_equal(bp_solve_ilp(p, NULL, &s, &e), BP_OK);
    assert_int_equal(s.status, BP_SOLVE_OPTIMAL);
    bp_solution_free(&s);
    bp_problem_destroy(&p);
}

/* With a deadline that has effectively passed, the solve stops cleanly and
 * says so: a feasible plan with its gap, or no solution. */
static void test_ilp_deadline(void **state)
{
    (void)state;
    bp_problem *p = random_problem(15, 400, 400, 10, 10, 3);
    bp_ilp_options o;
    bp_ilp_options_default(&o);
    o.time_limit_s = 1e-6;
    bp_solution s = {0};
    bp_error e;
    bp_error_clear(&e);
    int rc = bp_solve_ilp(p, &o, &s, &e);
    assert_true(s.seconds < 30.0);
    if (rc == BP_OK) {
        assert_true(s.status == BP_SOLVE_FEASIBLE || s.status == BP_SOLVE_OPTIMAL);
        /* The clock decided where the search stopped: callers must be told. */
        assert_int_equal(s.time_limited, 1);
        bp_solution chk = {0};
        bp_solution_init(&chk, p->n_items, NULL);
        memcpy(chk.choice, s.choice, p->n_items * sizeof *chk.choice);
        assert_int_equal(bp_solution_evaluate(p, &chk, NULL), BP_OK);
        for (size_t j = 0; j < p->n_constraints; j++)
            assert_true(chk.cost_total[j] <= p->capacity[j]);
        assert_true(s.bound <= s.objective);
        assert_true(s.gap >= 0);
        bp_solution_free(&chk);
    } else {
        assert_int_equal(rc, BP_ETIMEOUT);
        assert_int_equal(s.status, BP_SOLVE_NO_SOLUTION);
        assert_non_null(strstr(e.msg, "time limit"));
        assert_int_equal(s.choice[0], -1);
    }
    bp_solution_free(&s);
    bp_problem_destroy(&p);
}

static double solve_lp_file(const char *path, int *status)
{
    glp_term_out(GLP_OFF);
    glp_prob *P = glp_create_prob();
    assert_int_equal(glp_read_lp(P, NULL, path), 0);
    glp_iocp parm;
    glp_init_iocp(&parm);
    parm.presolve = GLP_ON;
    parm.msg_lev = GLP_MSG_OFF;
    assert_int_equal(glp_intopt(P, &parm), 0);
    *status = glp_mip_status(P);
    double v = glp_mip_obj_val(P);
    glp_delete_prob(P);
    glp_free_env();
    return v;
}

static void test_ilp_export_lp_round_trip(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/solve_export.lp", BP_TEST_TMPDIR);
    for (size_t m = 1; m <= 2; m++) {
        bp_problem *p = random_problem(16 + m, 12, 12, 4, 6, m);
        bp_ilp_options o;
        bp_ilp_options_default(&o);
        o.export_lp = path;
        bp_solution s = {0};
        bp_error e;
        remove(path);
        int rc = bp_solve_ilp(p, &o, &s, &e);
        if (rc)
            fail_msg("%s", e.msg);
        int st = 0;
        double v = solve_lp_file(path, &st);
        assert_int_equal(st, GLP_OPT);
        assert_true(fabs(v - s.objective) <= 1e-9 * fmax(1.0, fabs(v)));
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        char buf[65536];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
        assert_non_null(strstr(buf, "x_0_0"));
        assert_non_null(strstr(buf, "pick_11"));
        assert_non_null(strstr(buf, "cap0_bytes"));
        bp_solution_free(&s);
        bp_problem_destroy(&p);
    }
}

/* The model is written even when the budget turns out infeasible. */
static void test_ilp_export_when_infeasible(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/solve_export_infeasible.lp", BP_TEST_TMPDIR);
    bp_problem *p = random_problem(18, 5, 5, 3, 3, 1);
    p->capacity[0] = bp_problem_min_cost(p, 0) - 1;
    /* Constraint names with characters LP files do not allow. */
    strcpy(p->constraint_name[0], "bytes (GiB) #1");
    bp_ilp_options o;
    bp_ilp_options_default(&o);
    o.export_lp = path;
    bp_solution s = {0};
    bp_error e;
    remove(path);
    assert_int_equal(bp_solve_ilp(p, &o, &s, &e), BP_EINFEASIBLE);
    assert_non_null(strstr(e.msg, "constraint 'bytes (GiB) #1'"));
    glp_term_out(GLP_OFF);
    glp_prob *P = glp_create_prob();
    assert_int_equal(glp_read_lp(P, NULL, path), 0);
    assert_int_equal(glp_get_num_cols(P), (int)p->n_choices);
    assert_int_equal(glp_get_num_rows(P), (int)p->n_items + 1);
    assert_string_equal(glp_get_row_name(P, (int)p->n_items + 1), "cap0_bytes__GiB___1");
    glp_delete_prob(P);
    glp_free_env();

    /* An unwritable path is an I/O error, not a crash. */
    p->capacity[0] += 1e6;
    o.export_lp = "/nonexistent-dir/x.lp";
    assert_int_equal(bp_solve_ilp(p, &o, &s, &e), BP_EIO);
    assert_non_null(strstr(e.msg, "/nonexistent-dir/x.lp"));
    bp_solution_free(&s);
    bp_problem_destroy(&p);
}

static void test_ilp_mip_gap_and_bound(void **state)
{
    (void)state;
    bp_problem *p = random_problem(19, 60, 60, 6, 6, 2);
    bp_ilp_options o;
    bp_ilp_options_default(&o);
    o.mip_gap = 0.05;
    bp_solution s = {0}, x = {0};
    assert_int_equal(bp_solve_ilp(p, &o, &s, NULL), BP_OK);
    assert_true(s.status == BP_SOLVE_OPTIMAL || s.status == BP_SOLVE_FEASIBLE);
    assert_true(s.bound <= s.objective);
    assert_true(s.gap <= 0.05 + 1e-12);
    assert_int_equal(bp_solve_ilp(p, NULL, &x, NULL), BP_OK);
    assert_int_equal(x.status, BP_SOLVE_OPTIMAL);
    assert_true(x.objective <= s.objective);
    assert_true(s.bound <= x.objective + 1e-9 * fabs(x.objective));
    bp_solution_free(&s);
    bp_solution_free(&x);
    bp_problem_destroy(&p);
}

static void assert_same_solution(const bp_solution *a, const bp_solution *b)
{
    assert_int_equal(a->status, b->status);
    assert_memory_equal(a->choice, b->choice, a->n_items * sizeof *a->choice);
    /* Bit-identical, not merely close: the plan must not depend on timing. */
    assert_memory_equal(&a->objective, &b->objective, sizeof a->objective);
    assert_memory_equal(&a->bound, &b->bound, sizeof a->bound);
    assert_memory_equal(&a->gap, &b->gap, sizeof a->gap);
    assert_int_equal(a->nodes, b->nodes);
    assert_int_equal(a->time_limited, 0);
    assert_int_equal(b->time_limited, 0);
}

/* A two-constraint instance that needs a few hundred branch-and-bound
 * nodes: stopped by the node budget it must give the same plan, objective
 * and bound on every run, a valid gap, and never claim optimality. */
static void test_ilp_node_limit_is_deterministic(void **state)
{
    (void)state;
    bp_problem *p = random_problem(4, 200, 200, 10, 10, 2);
    bp_ilp_options o;
    bp_ilp_options_default(&o);
    o.node_limit = 25;
    bp_solution a = {0}, b = {0}, full = {0};
    bp_error e;
    assert_int_equal(bp_solve_ilp(p, &o, &a, &e), BP_OK);
    assert_int_equal(a.status, BP_SOLVE_FEASIBLE);
    assert_true(a.nodes > 0 && a.nodes <= o.node_limit + 1);
    assert_true(a.gap > 0);
    assert_true(a.bound <= a.objective);
    for (size_t j = 0; j < p->n_constraints; j++)
        assert_true(a.cost_total[j] <= p->capacity[j]);
    assert_int_equal(bp_solve_ilp(p, &o, &b, &e), BP_OK);
    assert_same_solution(&a, &b);

    /* Without the budget the search goes on to prove optimality; the early
     * stop's plan and bound must bracket that optimum. */
    o.node_limit = -1;
    assert_int_equal(bp_solve_ilp(p, &o, &full, &e), BP_OK);
    assert_int_equal(full.status, BP_SOLVE_OPTIMAL);
    assert_true(full.nodes > 25);
    assert_int_equal(full.time_limited, 0);
    assert_true(full.objective <= a.objective);
    assert_true(a.bound <= full.objective + 1e-9 * fabs(full.objective));

    /* The default budget is large enough for this instance. */
    o.node_limit = 0;
    assert_int_equal(bp_solve_ilp(p, &o, &b, &e), BP_OK);
    assert_same_solution(&full, &b);
    bp_solution_free(&a);
    bp_solution_free(&b);
    bp_solution_free(&full);
    bp_problem_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ilp_bad_data_never_reaches_glpk),
        cmocka_unit_test(test_ilp_simple_infeasible_skips_glpk),
        cmocka_unit_test(test_ilp_glpk_error_is_caught),
        cmocka_unit_test(test_ilp_deadline),
        cmocka_unit_test(test_ilp_export_lp_round_trip),
        cmocka_unit_test(test_ilp_export_when_infeasible),
        cmocka_unit_test(test_ilp_mip_gap_and_bound),
        cmocka_unit_test(test_ilp_node_limit_is_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
