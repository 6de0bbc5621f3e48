/* Mean NLL over the bundled eval.txt against the reference value, and exact
 * merging of window work units. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/llama.h"
#include "bitplan/model.h"
#include "bitplan/tokens.h"

#define MODEL_DIR BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"
#define REFERENCE_NLL 1.179671 /* reference.json "eval_nll", 6 decimals */

typedef struct fixture {
    bp_model *model;
    bp_llama *llama;
    bp_tokens *eval;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    bp_error err;
    if (bp_model_open(MODEL_DIR, &f->model, &err) != BP_OK ||
        bp_llama_new(f->model, &f->llama, &err) != BP_OK ||
        bp_tokens_load_text(MODEL_DIR "/eval.txt", 256, &f->eval, &err) != BP_OK) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    bp_llama_destroy(&f->llama);
    bp_model_destroy(&f->model);
    bp_tokens_destroy(&f->eval);
    free(f);
    return 0;
}

static void test_eval_windows_count(void **state)
{
    (void)state;
    assert_int_equal(bp_eval_n_windows(0, 128), 0);
    assert_int_equal(bp_eval_n_windows(128, 128), 0);
    assert_int_equal(bp_eval_n_windows(129, 128), 1);
    assert_int_equal(bp_eval_n_windows(257, 128), 2);
    assert_int_equal(bp_eval_n_windows(214912, 128), 1678);
}

static void test_eval_nll_matches_reference(void **state)
{
    fixture *f = *state;
    bp_error err;
    const int64_t n = bp_tokens_count(f->eval);
    const int64_t nw = bp_eval_n_windows(n, 128);
    bp_eval_sums s;
    assert_int_equal(bp_eval_nll(f->llama, bp_tokens_data(f->eval), n, 128, 0, nw, &s, &err),
                     BP_OK);
    assert_int_equal(s.count, nw * 128);
    double nll = bp_eval_sums_mean_nll(&s);
    printf("eval.txt: %lld windows, mean NLL %.7f (reference %.6f, diff %.2g), ppl %.6f\n",
           (long long)nw, nll, REFERENCE_NLL, nll - REFERENCE_NLL, bp_eval_sums_ppl(&s));
    assert_true(fabs(nll - REFERENCE_NLL) <= 1e-4);

}

static void test_eval_work_units_merge_exactly(void **state)
{
    fixture *f = *state;
    bp_error err;
    const int64_t n = bp_tokens_count(f->eval);
    /* Work units over any split of the windows merge to the same bits. */
    bp_eval_sums s;
    assert_int_equal(bp_eval_nll(f->llama, bp_tokens_data(f->eval), n, 128, 100, 150, &s,
                                 &err),
                     BP_OK);
    const int64_t cuts[] = {100, 101, 137, 200, 250};
    bp_eval_sums m = {0, 0, 0}, part;
    for (size_t i = 0; i + 1 < sizeof cuts / sizeof cuts[0]; i++) {
        assert_int_equal(bp_eval_nll(f->llama, bp_tokens_data(f->eval), n, 128, cuts[i],
                                     cuts[i + 1] - cuts[i], &part, &err),
                         BP_OK);
        assert_int_equal(bp_eval_sums_merge(&m, &part, &err), BP_OK);
    }
    assert_memory_equal(&m, &s, sizeof m);
}

static void test_eval_split_and_thread_invariance(void **state)
{
    fixture *f = *state;
    bp_error err;
    const int64_t n = bp_tokens_count(f->eval);
    bp_eval_sums a, b, c, m = {0, 0, 0};
    assert_int_equal(bp_eval_nll(f->llama, bp_tokens_data(f->eval), n, 64, 10, 40, &a, &err),
                     BP_OK);
    for (int64_t w = 10; w < 50; w++) {
        assert_int_equal(bp_eval_nll(f->llama, bp_tokens_data(f->eval), n, 64, w, 1, &b, &err),
                         BP_OK);
        assert_int_equal(bp_eval_sums_merge(&m, &b, &err), BP_OK);
    }
    assert_memory_equal(&a, &m, sizeof a);
    /* Another OpenBLAS thread count gives the same bits. */
    int before = openblas_get_num_threads();
    openblas_set_num_threads(before == 1 ? 2 : 1);
    assert_int_equal(bp_eval_nll(f->llama, bp_tokens_data(f->eval), n, 64, 10, 40, &c, &err),
                     BP_OK);
    openblas_set_num_threads(before);
    assert_memory_equal(&a, &c, sizeof a);
}

static void test_eval_errors(void **state)
{
    fixture *f = *state;
    bp_error err;
    bp_eval_sums s;
    uint32_t toks[300];
    for (int i = 0; i < 300; i++)
        toks[i] = (uint32_t)(i % 200);
    assert_int_equal(bp_eval_nll(f->llama, toks, 300, 128, 0, 3, &s, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "windows"));
    assert_int_equal(bp_eval_nll(f->llama, toks, 300, 0, 0, 1, &s, &err), BP_EINVAL);
    assert_int_equal(bp_eval_nll(f->llama, toks, 300, 4096, 0, 1, &s, &err), BP_EINVAL);
    /* A bad target id (the last token of window 1) is caught, by position. */
    toks[256] = 999;
    assert_int_equal(bp_eval_nll(f->llama, toks, 300, 128, 0, 2, &s, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "position 256"));
    assert_int_equal(bp_eval_nll(f->llama, toks, 300, 128, 0, 1, &s, &err), BP_OK);
    assert_int_equal(s.count, 128);
    /* Zero windows: empty sums. */
    assert_int_equal(bp_eval_nll(f->llama, toks, 300, 128, 1, 0, &s, &err), BP_OK);
    assert_int_equal(s.count, 0);
    assert_true(isnan(bp_eval_sums_mean_nll(&s)));
    /* Overflowing merge is refused and leaves the accumulator alone. */
    bp_eval_sums big = {1, INT64_MAX, 0}, one = {1, 1, 0}, keep = big;
    assert_int_equal(bp_eval_sums_merge(&big, &one, &err), BP_EINVAL);
    assert_memory_equal(&big, &keep, sizeof big);
    assert_int_equal(bp_eval_reference_bytes(256, 128, 10, 0), 10u * 128 * (4 * 256 + 8) +
                                                                   4u * (1280 + 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval_windows_count),
        cmocka_unit_test(test_eval_nll_matches_reference),
        cmocka_unit_test(test_eval_work_units_merge_exactly),
        cmocka_unit_test(test_eval_split_and_thread_invariance),
        cmocka_unit_test(test_eval_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
