/* The search stage: baselines first, memo answers repeats, and the result
 * is never worse than the ILP plan or any uniform plan on the measured
 * loss (the no-regression guarantee), even when a uniform plan is the best
 * or the search finds nothing better. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../optimizer/job/search_stage.h"
#include "../search/search_testutil.h"

/* A loss that is not additive: the proxy plus a penalty when neighbouring
 * items both sit on their cheapest choices, plus a bias that can make a
 * uniform vector best. */
typedef struct loss_model {
    double pair_penalty;
    double uniform_bonus;   /* subtracted when every item picks choice 0 */
} loss_model;

static double loss(const bp_problem *p, const int32_t *c, const loss_model *m, int fidelity)
{
    double f = 0.0;
    for (size_t i = 0; i < p->n_items; i++)
        f += p->error[p->item_start[i] + (size_t)c[i]];
    for (size_t i = 0; i + 1 < p->n_items; i++)
        if (c[i] == 0 && c[i + 1] == 0)
            f += m->pair_penalty;
    int all0 = 1;
    for (size_t i = 0; i < p->n_items; i++)
        all0 &= c[i] == 0;
    if (all0)
        f -= m->uniform_bonus;
    /* Low fidelity is a noisy view of the same loss. */
    if (fidelity == BP_EVO_LOW)
        f *= 1.0 + 0.01 * (double)(c[0] % 3);
    return f;
}

/* Two items' worth of choices per item, all items with the same number of
 * choices so "uniform" vectors exist. */
static bp_problem *make_problem(uint64_t seed, size_t n_items, size_t n_ch)
{
    trng r = {seed};
    bp_problem *p = bp_problem_new(2);
    for (size_t i = 0; i < n_items; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%zu", i);
        bp_problem_add_item(p, name, NULL);
        double scale = 0.5 + trng_unit(&r);
        for (size_t k = 0; k < n_ch; k++) {
            double cost[2] = {(double)(10 + 10 * k), (double)(5 + 3 * k + trng_int(&r, 0, 2))};
            double e = scale * 100.0 / (double)((k + 1) * (k + 1));
            bp_problem_add_choice(p, (int32_t)k, e, cost, NULL);
        }
    }
    return p;
}

static int feasible(const bp_problem *p, const int32_t *c)
{
    for (size_t j = 0; j < p->n_constraints; j++) {
        double t = 0;
        for (size_t i = 0; i < p->n_items; i++)
            t += p->cost[(p->item_start[i] + (size_t)c[i]) * p->n_constraints + j];
        if (t > p->capacity[j])
            return 0;
    }
    return 1;
}

typedef struct run_out {
    bp__search_outcome o;
    double ilp_fit, min_uniform;
    size_t asked;
} run_out;

static void run(const bp_problem *p, const int32_t *ilp, const int32_t *uni, size_t n_uni, const loss_model *m,
                run_out *out, bp__search **keep)
{
    const char *names[4] = {"u0", "u1", "u2", "u3"};
    bp_evo_options eo;
    bp_evo_options_default(&eo);
    eo.generations = 6;
    eo.lambda = 4;
    bp__search *s = NULL;
    bp_error err;
    assert_int_equal(bp__search_new(p, ilp, uni, names, n_uni, &eo, &s, &err), BP_OK);
    out->asked = 0;
    for (;;) {
        const int32_t *c;
        size_t n;
        int fid;
        assert_int_equal(bp__search_ask(s, &c, &n, &fid, &err), BP_OK);
        if (n == 0)
            break;
        double *f = malloc(n * sizeof *f);
        for (size_t k = 0; k < n; k++) {
            assert_true(feasible(p, c + k * p->n_items));
            f[k] = loss(p, c + k * p->n_items, m, fid);
        }
        out->asked += n;
        assert_int_equal(bp__search_tell(s, f, n, &err), BP_OK);
        free(f);
    }
    assert_true(bp__search_done(s));
    assert_int_equal(bp__search_result(s, &out->o), BP_OK);
    out->ilp_fit = loss(p, ilp, m, BP_EVO_HIGH);
    out->min_uniform = INFINITY;
    for (size_t u = 0; u < n_uni; u++) {
        double f = loss(p, uni + u * p->n_items, m, BP_EVO_HIGH);
        out->min_uniform = f < out->min_uniform ? f : out->min_uniform;
    }
    if (keep)
        *keep = s;
    else
        bp__search_destroy(&s);
}

static void test_never_worse_and_memo(void **state)
{
    (void)state;
    const size_t n = 12, nch = 4;
    bp_problem *p = make_problem(5, n, nch);
    /* Capacity: room for choice 1 everywhere. */
    p->capacity[0] = 20.0 * (double)n;
    p->capacity[1] = 1e9;
    int32_t ilp[12], uni[2 * 12];
    for (size_t i = 0; i < n; i++) {
        ilp[i] = (int32_t)(i % 3 == 0 ? 2 : (i % 3 == 1 ? 0 : 1));
        uni[i] = 0;
        uni[n + i] = 1;
    }
    assert_true(feasible(p, ilp));
    loss_model m = {.pair_penalty = 5.0, .uniform_bonus = 0.0};
    run_out r;
    bp__search *s = NULL;
    run(p, ilp, uni, 2, &m, &r, &s);
    /* Measured result is the true loss of the returned vector. */
    double f = loss(p, r.o.choice, &m, BP_EVO_HIGH);
    bp__search_destroy(&s);
    assert_true(f == r.o.fitness);
    assert_true(r.o.fitness <= r.ilp_fit);
    assert_true(r.o.fitness <= r.min_uniform);
    assert_true(r.o.ilp_fitness == r.ilp_fit);
    /* The seed's high-fidelity value came from the ILP baseline. */
    assert_true(r.o.memo_hits >= 1);
    assert_int_equal(r.asked, r.o.evals_sent);
    bp_problem_destroy(&p);
}

static void test_uniform_wins_when_best(void **state)
{
    (void)state;
    const size_t n = 8, nch = 3;
    bp_problem *p = make_problem(9, n, nch);
    p->capacity[0] = 20.0 * (double)n;
    p->capacity[1] = 1e9;
    int32_t ilp[8], uni[8];
    for (size_t i = 0; i < n; i++) {
        ilp[i] = (int32_t)(i % 2);
        uni[i] = 0;
    }
    loss_model m = {.pair_penalty = 0.0, .uniform_bonus = 1e6};
    run_out r;
    bp__search *s = NULL;
    run(p, ilp, uni, 1, &m, &r, &s);
    assert_string_equal(r.o.which, "uniform");
    assert_int_equal(r.o.uniform_index, 0);
    assert_memory_equal(r.o.choice, uni, sizeof uni);
    bp__search_destroy(&s);
    bp_problem_destroy(&p);
}

static void test_deterministic(void **state)
{
    (void)state;
    const size_t n = 10, nch = 4;
    bp_problem *p = make_problem(13, n, nch);
    p->capacity[0] = 22.0 * (double)n;
    p->capacity[1] = 1e9;
    int32_t ilp[10], uni[10];
    for (size_t i = 0; i < n; i++) {
        ilp[i] = (int32_t)(i % 3);
        uni[i] = 1;
    }
    loss_model m = {.pair_penalty = 3.0};
    run_out a, b;
    bp__search *sa = NULL, *sb = NULL;
    run(p, ilp, uni, 1, &m, &a, &sa);
    run(p, ilp, uni, 1, &m, &b, &sb);
    assert_true(a.o.fitness == b.o.fitness);
    assert_memory_equal(a.o.choice, b.o.choice, n * sizeof(int32_t));
    assert_int_equal(a.asked, b.asked);
    bp__search_destroy(&sa);
    bp__search_destroy(&sb);
    bp_problem_destroy(&p);
}

static void test_bad_tell(void **state)
{
    (void)state;
    bp_problem *p = make_problem(3, 4, 3);
    p->capacity[0] = 1e9;
    p->capacity[1] = 1e9;
    int32_t ilp[4] = {0, 1, 2, 1};
    bp__search *s = NULL;
    bp_error err;
    assert_int_equal(bp__search_new(p, ilp, NULL, NULL, 0, NULL, &s, &err), BP_OK);
    double f[2] = {1.0, 2.0};
    assert_int_equal(bp__search_tell(s, f, 1, &err), BP_EINVAL); /* nothing asked */
    const int32_t *c;
    size_t n;
    int fid;
    assert_int_equal(bp__search_ask(s, &c, &n, &fid, &err), BP_OK);
    assert_int_equal(n, 1);
    assert_int_equal(bp__search_tell(s, f, 2, &err), BP_EINVAL);
    double bad = NAN;
    assert_int_equal(bp__search_tell(s, &bad, 1, &err), BP_EINVAL);
    assert_int_equal(bp__search_tell(s, f, 1, &err), BP_OK);
    bp__search_destroy(&s);
    bp_problem_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_never_worse_and_memo),
        cmocka_unit_test(test_uniform_wins_when_best),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_bad_tell),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
