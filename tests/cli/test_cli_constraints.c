/* `bitplan plan` with several constraints, end to end on the bundled model:
 * direct (--workers 0) and through local workers give the same plan; --help
 * lists the flags; bad flags exit 2 with a message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cli_test_util.h"

#define COMMON " --quiet --no-model-hash --metric mse --formats int2_g64_asym,int3_g64_asym,int4_g64_asym,int8_g64_asym" \
               " --model " MODEL_DIR

/* The number after `key` in a file's text. */
static double number_in(const char *text, const char *key)
{
    const char *at = strstr(text, key);
    if (!at)
        fail_msg("'%s' not found in: %.400s", key, text);
    return strtod(at + strlen(key), NULL);
}

static void test_cli_help_lists_constraint_flags(void **state)
{
    (void)state;
    assert_int_equal(run_bitplan("help", "plan --help"), 0);
    char *out = captured("help", "out");
    const char *flags[] = {"--search", "--granularity", "--block-size", "--block-axis", "--budget-bits",
                           "--budget-bytes", "--latency-us", "--profile", "--profile-fallback", "--phase",
                           "--batch", "--bops", "--kv-context", "--kv-batch", "--kv-format"};
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
        if (!strstr(out, flags[i]))
            fail_msg("--help does not list %s", flags[i]);
    free(out);
}

static void plan_both_ways(const char *tag, const char *flags)
{
    char args[4096];
    snprintf(args, sizeof args, "plan" COMMON " %s --workers 0 --out %s/%s-direct.json", flags, BP_TEST_TMPDIR, tag);
    int rc = run_bitplan(tag, args);
    if (rc != 0) {
        char *err = captured(tag, "err");
        fail_msg("direct: exit %d: %s", rc, err ? err : "");
    }
    snprintf(args, sizeof args, "plan" COMMON " %s --workers 2 --out %s/%s-workers.json", flags, BP_TEST_TMPDIR,
             tag);
    rc = run_bitplan(tag, args);
    if (rc != 0) {
        char *err = captured(tag, "err");
        fail_msg("workers: exit %d: %s", rc, err ? err : "");
    }
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s/%s-direct.json", BP_TEST_TMPDIR, tag);
    snprintf(pb, sizeof pb, "%s/%s-workers.json", BP_TEST_TMPDIR, tag);
    char *a = slurp(pa, NULL), *b = slurp(pb, NULL);
    assert_non_null(a);
    assert_non_null(b);
    assert_string_equal(a, b);
    free(a);
    free(b);
}

static void test_cli_constraints_direct_equals_workers(void **state)
{
    (void)state;
    plan_both_ways("c-lat", "--budget-bytes 500KB --latency-us 400 --profile cpu");
    plan_both_ways("c-bops", "--budget-bits 3.6 --budget-bytes 500KB --bops 35M --search lagrange");
    plan_both_ways("c-kv", "--budget-bytes 1000000 --kv-context 256 --kv-batch 2 --kv-format int8");
    /* Every constraint in the plan's search section, each holding. */
    char path[4096];
    snprintf(path, sizeof path, "%s/c-bops-direct.json", BP_TEST_TMPDIR);
    char *plan = slurp(path, NULL);
    assert_non_null(plan);
    const char *names[] = {"\"bits\"", "\"bytes\"", "\"bops\""};
    for (size_t i = 0; i < 3; i++) {
        const char *at = strstr(plan, names[i]);
        if (!at)
            fail_msg("plan lacks constraint %s", names[i]);
        double cap = number_in(at, "\"capacity\": "), got = number_in(at, "\"achieved\": ");
        assert_true(got <= cap);
    }
    assert_non_null(strstr(plan, "\"lagrange\""));
    free(plan);
}

static void test_cli_infeasible_combination_exits_1(void **state)
{
    (void)state;
    assert_int_equal(run_bitplan("c-inf", "plan" COMMON " --budget-bits 1.0 --bops 1 --workers 0 --out " BP_TEST_TMPDIR
                                          "/c-inf.json"),
                     1);
    char *err = captured("c-inf", "err");
    assert_non_null(strstr(err, "bits <= "));
    assert_non_null(strstr(err, "bops <= 1 BOPS"));
    assert_non_null(strstr(err, "smallest achievable"));
    free(err);
}

static void test_cli_bad_constraint_flags_exit_2(void **state)
{
    (void)state;
    const char *bad[] = {
        "plan --model " MODEL_DIR " --budget-bits 3 --search magic",
        "plan --model " MODEL_DIR " --budget-bits 3 --latency-us 100",
        "plan --model " MODEL_DIR " --budget-bits 3 --latency-us -4 --profile h100",
        "plan --model " MODEL_DIR " --budget-bits 3 --latency-us 100 --profile nosuchgpu",
        "plan --model " MODEL_DIR " --budget-bytes 1MB --kv-batch 4",
        "plan --model " MODEL_DIR " --budget-bits 3 --kv-context 128",
        "plan --model " MODEL_DIR " --budget-bits 3 --bops 5Q",
        "plan --model " MODEL_DIR " --budget-bits 3 --granularity slab",
        "plan --model " MODEL_DIR " --budget-bits 3 --granularity block",
        "plan --model " MODEL_DIR " --budget-bits 3 --block-axis diag --granularity block --block-size 64",
        "plan --model " MODEL_DIR " --budget-bits 3 --kv-format int3 --kv-context 8 --budget-bytes 1MB",
        "plan --model " MODEL_DIR " --budget-bits 3 --budget-bits 4",
        "plan --model " MODEL_DIR " --budget-bits 3 --solver dp --search nsga2",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = run_bitplan("c-usage", bad[i]);
        if (rc != 2)
            fail_msg("'bitplan %s' exited %d, expected 2", bad[i], rc);
        char *err = captured("c-usage", "err");
        assert_non_null(err);
        assert_true(strlen(err) > 0);
        free(err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli_help_lists_constraint_flags),
        cmocka_unit_test(test_cli_bad_constraint_flags_exit_2),
        cmocka_unit_test(test_cli_infeasible_combination_exits_1),
        cmocka_unit_test(test_cli_constraints_direct_equals_workers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
