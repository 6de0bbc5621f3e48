/* Cross-check of bp_solve_ilp against two independent solvers on the LP
 * files it exports (export_lp): glpsol (GLPK's own command-line front end,
 * which solves the file from scratch without bitplan's reduction, scaling
 * and reduced-cost fixing) and CBC (Debian coinor-cbc 2.10). Each must
 * find the same optimum, and report infeasible instances as infeasible.
 * A tool that is not installed skips its part. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "bitplan/solve.h"
#include "solve_testutil.h"

#define TMP BP_TEST_TMPDIR "/lpcheck"

typedef struct external {
    int optimal;        /* the tool proved optimality */
    int infeasible;     /* the tool proved infeasibility */
    double objective;   /* as the tool printed it */
    int have_precise;   /* objective_precise is set */
    double objective_precise;
    int32_t *choice;    /* per item, from the columns at 1; -1 = none */
} external;

static int have_tool(const char *tool)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", tool);
    return system(cmd) == 0;
}

static void skip_unless(const char *tool)
{
    if (!have_tool(tool)) {
        printf("skipped: %s not installed\n", tool);
        skip();
    }
}

static void run_or_fail(const char *cmd)
{
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("command failed (status %d): %s", st, cmd);
}

/* Column names are x_<item>_<choice> (docs/solvers.md). */
static void take_column(const bp_problem *p, const char *name, double value, external *x)
{
    unsigned long i, c;
    if (value < 0.5 || sscanf(name, "x_%lu_%lu", &i, &c) != 2)
        return;
    if (i >= p->n_items || c >= p->item_start[i + 1] - p->item_start[i])
        fail_msg("column %s outside the problem", name);
    if (x->choice[i] >= 0)
        fail_msg("item %lu picks two columns", i);
    x->choice[i] = (int32_t)c;
}

static void external_init(const bp_problem *p, external *x)
{
    memset(x, 0, sizeof *x);
    x->choice = malloc(p->n_items * sizeof *x->choice);
    assert_non_null(x->choice);
    for (size_t i = 0; i < p->n_items; i++)
        x->choice[i] = -1;
}

/* glpsol -o (printable: status, objective, named columns) and -w (the
 * objective with 15 significant digits). */
static void run_glpsol(const bp_problem *p, const char *lp, external *x)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "glpsol --tmlim 120 --lp %s -o %s.glp.txt -w %s.glp.sol >%s.glp.log 2>&1", lp, lp,
             lp, lp);
    run_or_fail(cmd);
    external_init(p, x);
    char path[1024], line[512];
    snprintf(path, sizeof path, "%s.glp.txt", lp);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int in_cols = 0;
    while (fgets(line, sizeof line, f)) {
        char word[128];
        if (sscanf(line, "Status: %127[A-Z ]", word) == 1) {
            x->optimal = strstr(word, "INTEGER OPTIMAL") != NULL;
            x->infeasible = strstr(word, "INTEGER EMPTY") != NULL;
        }
        sscanf(line, "Objective: error = %lf", &x->objective);
        if (strstr(line, "Column name"))
            in_cols = 1;
        int no;
        char name[128], t3[64], t4[64];
        if (in_cols && sscanf(line, "%d %127s %63s %63s", &no, name, t3, t4) == 4)
            take_column(p, name, strtod(strcmp(t3, "*") ? t3 : t4, NULL), x);
    }
    fclose(f);
    snprintf(path, sizeof path, "%s.glp.sol", lp);
    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof line, f)) {
        int rows, cols;
        char st;
        double obj;
        if (sscanf(line, "s mip %d %d %c %lf", &rows, &cols, &st, &obj) == 4) {
            x->have_precise = 1;
            x->objective_precise = obj;
        }
    }
    fclose(f);
}

/* cbc FILE solve solu OUT: first line "Optimal - objective value V" or
 * "Infeasible - ...", then "index name value objcoef" for non-zeros. */
static void run_cbc(const bp_problem *p, const char *lp, external *x)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cbc %s sec 120 solve solu %s.cbc.txt >%s.cbc.log 2>&1", lp, lp, lp);
    run_or_fail(cmd);
    external_init(p, x);
    char path[1024], line[512];
    snprintf(path, sizeof path, "%s.cbc.txt", lp);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    if (fgets(line, sizeof line, f)) {
        x->optimal = !strncmp(line, "Optimal", 7);
        x->infeasible = !strncmp(line, "Infeasible", 10) || strstr(line, "infeasible") != NULL;
        const char *v = strstr(line, "objective value");
        if (v)
            x->objective = strtod(v + strlen("objective value"), NULL);
    }
    while (fgets(line, sizeof line, f)) {
        int idx;
        char name[128];
        double value;
        if (sscanf(line, "%d %127s %lf", &idx, name, &value) == 3)
            take_column(p, name, value, x);
    }
    fclose(f);
}

/* The external assignment, recomputed on the problem itself, must be
 * feasible and as good as GLPK's (exactly, with integral data). */
static void check_same_optimum(const bp_problem *p, const bp_solution *s, external *x, const char *tool,
                               int integral, uint64_t seed)
{
    if (!x->optimal)
        fail_msg("%s: seed %llu: not reported optimal", tool, (unsigned long long)seed);
    bp_solution e = {0};
    assert_int_equal(bp_solution_init(&e, p->n_items, NULL), BP_OK);
    for (size_t i = 0; i < p->n_items; i++) {
        if (x->choice[i] < 0)
            fail_msg("%s: seed %llu: item %zu has no column at 1", tool, (unsigned long long)seed, i);
        e.choice[i] = x->choice[i];
    }
    assert_int_equal(bp_solution_evaluate(p, &e, NULL), BP_OK);
    for (size_t j = 0; j < p->n_constraints; j++)
        if (e.cost_total[j] > p->capacity[j])
            fail_msg("%s: seed %llu: constraint %zu: %.17g > capacity %.17g", tool, (unsigned long long)seed, j,
                     e.cost_total[j], p->capacity[j]);
    double tol = integral ? 0.0 : 1e-9 * fmax(fabs(s->objective), 1e-300);
    if (fabs(e.objective - s->objective) > tol)
        fail_msg("%s: seed %llu: optimum %.17g, bitplan %.17g", tool, (unsigned long long)seed, e.objective,
                 s->objective);
    /* The printed value: 8 decimals (CBC) or 10 digits (glpsol -o). */
    if (fabs(x->objective - s->objective) > 1e-8 * fmax(1.0, fabs(s->objective)))
        fail_msg("%s: seed %llu: printed objective %.17g, bitplan %.17g", tool, (unsigned long long)seed,
                 x->objective, s->objective);
    if (x->have_precise && fabs(x->objective_precise - s->objective) > 1e-9 * fmax(1e-300, fabs(s->objective)))
        fail_msg("%s: seed %llu: objective %.17g, bitplan %.17g", tool, (unsigned long long)seed,
                 x->objective_precise, s->objective);
    bp_solution_free(&e);
}

/* Errors rounded to whole numbers: every total is then exact, and the
 * optima must agree to the last bit. */
static void make_integral(bp_problem *p)
{
    for (size_t k = 0; k < p->n_choices; k++)
        p->error[k] = round(p->error[k] * 1000.0);
}

static void cross_check(const char *tool, void (*run)(const bp_problem *, const char *, external *))
{
    skip_unless(tool);
    run_or_fail("mkdir -p " TMP);
    static const struct {
        int min_items, max_items, min_ch, max_ch;
    } sizes[] = {{4, 10, 2, 6}, {40, 80, 6, 14}};
    int checked = 0;
    for (size_t sz = 0; sz < 2; sz++)
        for (size_t m = 1; m <= 2; m++)
            for (uint64_t seed = 1; seed <= 6; seed++) {
                uint64_t id = 1000 * sz + 100 * m + seed;
                bp_problem *p = random_problem(id, sizes[sz].min_items, sizes[sz].max_items, sizes[sz].min_ch,
                                               sizes[sz].max_ch, m);
                assert_non_null(p);
                int integral = seed % 2 == 0;
                if (integral)
                    make_integral(p);
                char lp[512];
                snprintf(lp, sizeof lp, TMP "/%s_%llu.lp", tool, (unsigned long long)id);
                bp_ilp_options o;
                bp_ilp_options_default(&o);
                o.export_lp = lp;
                bp_solution s = {0};
                bp_error e;
                int rc = bp_solve_ilp(p, &o, &s, &e);
                if (rc == BP_EINFEASIBLE) {
                    bp_solution_free(&s);
                    bp_problem_destroy(&p);
                    continue; /* the infeasible tests cover these */
                }
                if (rc != BP_OK || s.status != BP_SOLVE_OPTIMAL)
                    fail_msg("seed %llu: %s", (unsigned long long)id, rc ? e.msg : "not optimal");
                external x;
                run(p, lp, &x);
                check_same_optimum(p, &s, &x, tool, integral, id);
                checked++;
                free(x.choice);
                bp_solution_free(&s);
                bp_problem_destroy(&p);
            }
    /* Random capacities are rarely infeasible: nearly all were compared. */
    assert_true(checked >= 20);
}

static void test_lpcheck_glpsol_same_optimum(void **state)
{
    (void)state;
    cross_check("glpsol", run_glpsol);
}

static void test_lpcheck_cbc_same_optimum(void **state)
{
    (void)state;
    cross_check("cbc", run_cbc);
}

/* Two infeasible instances: a capacity below the smallest achievable total
 * (bitplan notices without GLPK, and still exports), and two budgets each
 * satisfiable alone but not together (found by GLPK). */
static bp_problem *infeasible_problem(int joint)
{
    if (!joint) {
        bp_problem *p = random_problem(77, 6, 6, 3, 5, 1);
        p->capacity[0] = bp_problem_min_cost(p, 0) - 1;
        return p;
    }
    bp_problem *p = bp_problem_new(2);
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        static const double a[2] = {1, 10}, b[2] = {10, 1};
        bp_problem_add_item(p, name, NULL);
        bp_problem_add_choice(p, 0, 1.0, a, NULL);
        bp_problem_add_choice(p, 1, 2.0, b, NULL);
    }
    bp_problem_set_constraint(p, 0, "bytes", 5, NULL);
    bp_problem_set_constraint(p, 1, "latency", 5, NULL);
    return p;
}

static void infeasible_check(const char *tool, void (*run)(const bp_problem *, const char *, external *))
{
    skip_unless(tool);
    run_or_fail("mkdir -p " TMP);
    for (int joint = 0; joint <= 1; joint++) {
        bp_problem *p = infeasible_problem(joint);
        char lp[512];
        snprintf(lp, sizeof lp, TMP "/%s_infeasible_%d.lp", tool, joint);
        bp_ilp_options o;
        bp_ilp_options_default(&o);
        o.export_lp = lp;
        bp_solution s = {0};
        assert_int_equal(bp_solve_ilp(p, &o, &s, NULL), BP_EINFEASIBLE);
        external x;
        run(p, lp, &x);
        if (!x.infeasible || x.optimal)
            fail_msg("%s did not report instance %d infeasible", tool, joint);
        free(x.choice);
        bp_solution_free(&s);
        bp_problem_destroy(&p);
    }
}

static void test_lpcheck_glpsol_infeasible(void **state)
{
    (void)state;
    infeasible_check("glpsol", run_glpsol);
}

static void test_lpcheck_cbc_infeasible(void **state)
{
    (void)state;
    infeasible_check("cbc", run_cbc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lpcheck_glpsol_same_optimum),
        cmocka_unit_test(test_lpcheck_cbc_same_optimum),
        cmocka_unit_test(test_lpcheck_glpsol_infeasible),
        cmocka_unit_test(test_lpcheck_cbc_infeasible),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
