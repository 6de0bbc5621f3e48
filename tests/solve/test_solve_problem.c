/* Tests for optimizer/solve/problem.c: building, validation and solution
 * helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "bitplan/solve.h"

static bp_problem *two_items(void)
{
    bp_problem *p = bp_problem_new(2);
    double c[2];
    assert_int_equal(bp_problem_add_item(p, "a.weight", NULL), BP_OK);
    c[0] = 10, c[1] = 1;
    assert_int_equal(bp_problem_add_choice(p, 4, 0.5, c, NULL), BP_OK);
    c[0] = 20, c[1] = 2;
    assert_int_equal(bp_problem_add_choice(p, 8, 0.1, c, NULL), BP_OK);
    assert_int_equal(bp_problem_add_item(p, "b.weight", NULL), BP_OK);
    c[0] = 5, c[1] = 3;
    assert_int_equal(bp_problem_add_choice(p, 4, 0.7, c, NULL), BP_OK);
    assert_int_equal(bp_problem_set_constraint(p, 0, "bytes", 30, NULL), BP_OK);
    assert_int_equal(bp_problem_set_constraint(p, 1, "latency", 4, NULL), BP_OK);
    return p;
}

static void test_problem_build_layout(void **state)
{
    (void)state;
    bp_problem *p = two_items();
    assert_int_equal(p->n_items, 2);
    assert_int_equal(p->n_choices, 3);
    assert_int_equal(p->item_start[0], 0);
    assert_int_equal(p->item_start[1], 2);
    assert_int_equal(p->item_start[2], 3);
    assert_true(p->cost[1 * 2 + 0] == 20 && p->cost[1 * 2 + 1] == 2);
    assert_int_equal(p->label[2], 4);
    assert_string_equal(p->item_name[1], "b.weight");
    assert_string_equal(p->constraint_name[1], "latency");
    assert_int_equal(bp_problem_validate(p, NULL), BP_OK);
    assert_true(bp_problem_min_cost(p, 0) == 15.0);
    assert_true(bp_problem_min_cost(p, 1) == 4.0);
    assert_true(isnan(bp_problem_min_cost(p, 2)));
    bp_problem_destroy(&p);
    assert_null(p);
    bp_problem_destroy(&p); /* twice is fine */
    bp_problem_destroy(NULL);
}

static void test_problem_new_rejects_constraint_counts(void **state)
{
    (void)state;
    assert_null(bp_problem_new(0));
    assert_null(bp_problem_new(BP_MAX_CONSTRAINTS + 1));
    bp_problem *p = bp_problem_new(BP_MAX_CONSTRAINTS);
    assert_non_null(p);
    bp_problem_destroy(&p);
}

static void test_problem_add_rejects_bad_values(void **state)
{
    (void)state;
    bp_problem *p = bp_problem_new(1);
    bp_error e;
    double c = 1;
    assert_int_equal(bp_problem_add_choice(p, 0, 1.0, &c, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "before any add_item"));
    assert_int_equal(bp_problem_add_item(p, "", &e), BP_EINVAL);
    assert_int_equal(bp_problem_add_item(p, NULL, &e), BP_EINVAL);
    assert_int_equal(bp_problem_add_item(p, "w", NULL), BP_OK);
    assert_int_equal(bp_problem_add_choice(p, 0, NAN, &c, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "NaN"));
    assert_non_null(strstr(e.msg, "'w'"));
    c = INFINITY;
    assert_int_equal(bp_problem_add_choice(p, 0, 1.0, &c, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "infinite"));
    c = -1;
    assert_int_equal(bp_problem_add_choice(p, 0, 1.0, &c, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "negative"));
    c = 1e300;
    assert_int_equal(bp_problem_add_choice(p, 0, 1.0, &c, &e), BP_EINVAL);
    assert_int_equal(p->n_choices, 0);
    assert_int_equal(bp_problem_set_constraint(p, 1, "x", 1, &e), BP_EINVAL);
    assert_int_equal(bp_problem_set_constraint(p, 0, "", 1, &e), BP_EINVAL);
    assert_int_equal(bp_problem_set_constraint(p, 0, "a_name_that_is_much_too_long_for_it", 1, &e),
                     BP_EINVAL);
    assert_int_equal(bp_problem_set_constraint(p, 0, "bytes", NAN, &e), BP_EINVAL);
    bp_problem_destroy(&p);
}

/* Problems can arrive from the network with their arrays filled directly,
 * so validate() must catch everything add_* would have refused. */
static void test_problem_validate_rejects(void **state)
{
    (void)state;
    bp_error e;
    bp_problem *p = two_items();

    p->error[1] = NAN;
    assert_int_equal(bp_problem_validate(p, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "item 0 ('a.weight'): choice 1: error is NaN"));
    p->error[1] = 0.1;

    p->cost[2 * 2 + 1] = INFINITY;
    assert_int_equal(bp_problem_validate(p, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "cost of constraint 'latency' is infinite"));
    p->cost[2 * 2 + 1] = -3;
    assert_int_equal(bp_problem_validate(p, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "negative"));
    p->cost[2 * 2 + 1] = 3;

    p->capacity[0] = INFINITY;
    assert_int_equal(bp_problem_validate(p, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "capacity"));
    p->capacity[0] = 30;

    p->n_constraints = 0;
    assert_int_equal(bp_problem_validate(p, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "n_constraints"));
    p->n_constraints = 9;
    assert_int_equal(bp_problem_validate(p, &e), BP_EINVAL);
    p->n_constraints = 2;

    p->item_start[1] = 0; /* item 0 has no choices */
    assert_int_equal(bp_problem_validate(p, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "no choices"));
    p->item_start[1] = 5; /* past the end */
    assert_int_equal(bp_problem_validate(p, &e), BP_EINVAL);
    p->item_start[1] = 2;

    char *saved = p->item_name[1];
    p->item_name[1] = NULL;
    assert_int_equal(bp_problem_validate(p, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "empty name"));
    p->item_name[1] = saved;

    p->constraint_name[0][0] = '\0';
    assert_int_equal(bp_problem_validate(p, &e), BP_EINVAL);
    strcpy(p->constraint_name[0], "bytes");

    assert_int_equal(bp_problem_validate(p, NULL), BP_OK);
    assert_int_equal(bp_problem_validate(NULL, &e), BP_EINVAL);
    bp_problem_destroy(&p);

    /* An item added with no choices at all. */
    p = bp_problem_new(1);
    double c = 1;
    bp_problem_add_item(p, "x", NULL);
    bp_problem_add_choice(p, 0, 1, &c, NULL);
    bp_problem_add_item(p, "empty", NULL);
    bp_problem_set_constraint(p, 0, "bytes", 10, NULL);
    assert_int_equal(bp_problem_validate(p, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "item 1 ('empty'): no choices"));
    bp_problem_destroy(&p);

    p = bp_problem_new(1);
    assert_int_equal(bp_problem_validate(p, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "no items"));
    bp_problem_destroy(&p);
}

static void test_solution_helpers(void **state)
{
    (void)state;
    bp_problem *p = two_items();
    bp_solution s;
    bp_error e;
    assert_int_equal(bp_solution_init(&s, 2, NULL), BP_OK);
    assert_int_equal(s.status, BP_SOLVE_NO_SOLUTION);
    assert_int_equal(s.choice[0], -1);
    assert_int_equal(bp_solution_evaluate(p, &s, &e), BP_EINVAL);
    s.choice[0] = 1;
    s.choice[1] = 0;
    assert_int_equal(bp_solution_evaluate(p, &s, &e), BP_OK);
    assert_true(s.objective == 0.1 + 0.7);
    assert_true(s.cost_total[0] == 25);
    assert_true(s.cost_total[1] == 5);
    s.choice[1] = 1;
    assert_int_equal(bp_solution_evaluate(p, &s, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "'b.weight'"));
    bp_solution_free(&s);
    assert_null(s.choice);
    bp_solution_free(&s);
    assert_string_equal(bp_solve_status_name(BP_SOLVE_OPTIMAL), "optimal");
    assert_string_equal(bp_solve_status_name(BP_SOLVE_FEASIBLE), "feasible");
    assert_string_equal(bp_solve_status_name(BP_SOLVE_NO_SOLUTION), "no_solution");
    bp_problem_destroy(&p);
}

/* A solution sized for another problem is reallocated by the solvers. */
static void test_solution_reused_across_sizes(void **state)
{
    (void)state;
    bp_problem *p = two_items();
    bp_solution s;
    assert_int_equal(bp_solution_init(&s, 7, NULL), BP_OK);
    p->capacity[1] = 100;
    assert_int_equal(bp_solve_bruteforce(p, 0, &s, NULL), BP_OK);
    assert_int_equal(s.n_items, 2);
    assert_int_equal(s.choice[0], 1);
    assert_string_equal(s.solver, "bruteforce");
    bp_solution_free(&s);
    bp_problem_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_problem_build_layout),
        cmocka_unit_test(test_problem_new_rejects_constraint_counts),
        cmocka_unit_test(test_problem_add_rejects_bad_values),
        cmocka_unit_test(test_problem_validate_rejects),
        cmocka_unit_test(test_solution_helpers),
        cmocka_unit_test(test_solution_reused_across_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
