/* The plan job driver, run through serialized tasks in-process, must give
 * byte-identical plans to the direct pipeline (bp_job_run). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/job_spec.h"
#include "bitplan/task.h"

#define MODEL BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"

static int setup(void **state)
{
    (void)state;
    bp_job_register_tasks();
    setenv("TMPDIR", BP_TEST_TMPDIR, 1);
    return 0;
}

static void compare_paths(const char *spec_json)
{
    bp_error err;
    bp_job_spec_doc *doc = NULL;
    assert_int_equal(bp_job_spec_parse(spec_json, strlen(spec_json), "test", &doc, &err), BP_OK);
    bp_plan *direct = NULL;
    int rc = bp_job_run(bp_job_spec_get(doc), &direct, &err);
    if (rc != BP_OK)
        fail_msg("direct: %s", err.msg);
    char *a = bp_plan_to_string(direct, &err);
    char *b = NULL;
    rc = bp_job_run_local(spec_json, strlen(spec_json), 1, &b, &err);
    if (rc != BP_OK)
        fail_msg("tasks: %s", err.msg);
    assert_non_null(a);
    assert_string_equal(a, b);
    free(a);
    free(b);
    bp_plan_destroy(&direct);
    bp_job_spec_doc_destroy(&doc);
}

static void test_driver_mse_matches_direct(void **state)
{
    (void)state;
    compare_paths("{\"kind\":\"plan\",\"model\":\"" MODEL "\",\"budget\":{\"bits\":3.5}}");
}

static void test_driver_gptq_matches_direct(void **state)
{
    (void)state;
    remove(BP_TEST_TMPDIR "/drv-stats.st");
    /* The direct path writes the stats; the task path must then reuse the
     * same file and give the same plan. */
    compare_paths("{\"kind\":\"plan\",\"model\":\"" MODEL "\",\"budget\":{\"bits\":3.25},"
                  "\"formats\":[\"int2_g128_asym\",\"int3_g128_asym\",\"int4_g128_asym\",\"int8_g128_asym\"],"
                  "\"metric\":\"gptq\",\"search\":\"ilp\","
                  "\"calibration\":{\"text\":\"" MODEL "/calib.txt\",\"seqs\":12,\"ctx\":64}}");
}

static void test_driver_hessian_tasks_match_direct(void **state)
{
    (void)state;
    /* No stats file: the task path computes Hessians in shards. */
    const char *spec = "{\"kind\":\"plan\",\"model\":\"" MODEL "\",\"budget\":{\"bits\":3.0},"
                       "\"formats\":[\"int2_g64_asym\",\"int3_g64_asym\",\"int4_g64_asym\"],"
                       "\"metric\":\"hfull\",\"search\":\"ilp\","
                       "\"calibration\":{\"text\":\"" MODEL "/calib.txt\",\"seqs\":11,\"ctx\":32}}";
    char *b = NULL;
    bp_error err;
    int rc = bp_job_run_local(spec, strlen(spec), 1, &b, &err);
    if (rc != BP_OK)
        fail_msg("tasks: %s", err.msg);
    compare_paths(spec);
    free(b);
}

static void test_spec_rejects_bad_input(void **state)
{
    (void)state;
    const char *bad[] = {
        "{",
        "[]",
        "{\"kind\":\"plan\"}",
        "{\"kind\":\"plan\",\"model\":\"m\",\"budget\":{}}",
        "{\"kind\":\"plan\",\"model\":\"m\",\"budget\":{\"bits\":-1}}",
        "{\"kind\":\"plan\",\"model\":\"m\",\"budget\":{\"bits\":3},\"formats\":[\"int9\"]}",
        "{\"kind\":\"plan\",\"model\":\"m\",\"budget\":{\"bits\":3},\"metric\":\"foo\"}",
        "{\"kind\":\"plan\",\"model\":\"m\",\"budget\":{\"bits\":3},\"typo\":1}",
        "{\"kind\":\"plan\",\"model\":\"m\",\"budget\":{\"bits\":3},\"calibration\":{\"text\":\"a\",\"tokens\":\"b\"}}",
        "{\"kind\":\"plan\",\"model\":\"m\",\"budget\":{\"bytes\":\"12XB\"}}",
        "{\"kind\":\"plan\",\"model\":\"m\",\"budget\":{\"bits\":3},\"time_limit_s\":-5}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bp_job_spec_doc *doc = NULL;
        bp_error err;
        int rc = bp_job_spec_parse(bad[i], strlen(bad[i]), "spec.json", &doc, &err);
        if (rc == BP_OK)
            fail_msg("accepted: %s", bad[i]);
        assert_null(doc);
        assert_non_null(strstr(err.msg, "spec.json"));
    }
    /* A missing model is reported when the driver is created. */
    const bp_job_driver_ops *ops = bp_job_driver_lookup("plan");
    void *st = NULL;
    bp_error err;
    const char *spec = "{\"kind\":\"plan\",\"model\":\"/nonexistent/m\",\"budget\":{\"bits\":3}}";
    assert_int_not_equal(ops->create(spec, strlen(spec), &st, &err), BP_OK);
    assert_non_null(strstr(err.msg, "/nonexistent/m"));
    /* Round trip of a CLI-built spec. */
    bp_job_spec s;
    bp_job_spec_default(&s);
    s.model_dir = MODEL;
    assert_int_equal(bp_budget_parse_bits("3.3", &s.budget, &err), BP_OK);
    s.formats = "int4_g128_asym,mxfp4";
    char *json = bp_job_spec_to_json(&s, &err);
    bp_job_spec_doc *doc = NULL;
    assert_int_equal(bp_job_spec_parse(json, strlen(json), "rt", &doc, &err), BP_OK);
    assert_int_equal(bp_job_spec_get(doc)->budget.bits_num, s.budget.bits_num);
    assert_string_equal(bp_job_spec_get(doc)->formats, "int4_g128_asym,mxfp4");
    bp_job_spec_doc_destroy(&doc);
    free(json);
}

static void test_infeasible_budget_fails_at_solve_stage(void **state)
{
    (void)state;
    const char *spec = "{\"kind\":\"plan\",\"model\":\"" MODEL "\",\"budget\":{\"bits\":1.5}}";
    char *b = NULL;
    bp_error err;
    assert_int_equal(bp_job_run_local(spec, strlen(spec), 1, &b, &err), BP_EINFEASIBLE);
    assert_non_null(strstr(err.msg, "smallest achievable"));
    assert_null(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_rejects_bad_input),
        cmocka_unit_test(test_driver_mse_matches_direct),
        cmocka_unit_test(test_driver_gptq_matches_direct),
        cmocka_unit_test(test_driver_hessian_tasks_match_direct),
        cmocka_unit_test(test_infeasible_budget_fails_at_solve_stage),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
