/* The real-loss search end to end on the bundled model (issue 5): the
 * default search with calibration tokens is evo; the plan's search section
 * reports the ILP, uniform and returned plans' measured KL; the returned
 * plan's KL, re-measured independently with bp_evaluate on the same
 * windows, is exactly the reported one and never above the ILP's or any
 * fitting uniform plan's; the run is deterministic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/evaluate.h"
#include "bitplan/job_spec.h"
#include "bitplan/task.h"
#include "bitplan/tokens.h"

#define MODEL BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"
#define CTX 64
#define SEQS 4
#define WINDOWS 4
#define SPEC(extra)                                                                                          \
    "{\"kind\":\"plan\",\"model\":\"" MODEL "\",\"budget\":{\"bits\":3.0},\"metric\":\"mse\","            \
    "\"formats\":[\"int2_g64_asym\",\"int3_g64_asym\",\"int3_pc_asym\",\"int4_g64_asym\"],"               \
    "\"table\":\"" BP_TEST_TMPDIR "/evo-table.csv\","                                                     \
    "\"calibration\":{\"text\":\"" MODEL "/calib.txt\",\"seqs\":4,\"ctx\":64,"                          \
    "\"stats\":\"" BP_TEST_TMPDIR "/evo-stats.st\"}" extra "}"

/* The first run measures the table and the Hessians; the others reuse
 * them (the search itself always runs). */
static int setup(void **state)
{
    (void)state;
    bp_job_register_tasks();
    setenv("TMPDIR", BP_TEST_TMPDIR, 1);
    remove(BP_TEST_TMPDIR "/evo-table.csv");
    remove(BP_TEST_TMPDIR "/evo-stats.st");
    return 0;
}

static bp_plan *run(const char *json, char **text)
{
    bp_job_spec_doc *doc = NULL;
    bp_error err;
    if (bp_job_spec_parse(json, strlen(json), "test", &doc, &err) != BP_OK)
        fail_msg("spec: %s", err.msg);
    bp_plan *p = NULL;
    if (bp_job_run(bp_job_spec_get(doc), &p, &err) != BP_OK)
        fail_msg("run: %s", err.msg);
    bp_job_spec_doc_destroy(&doc);
    if (text) {
        *text = bp_plan_to_string(p, &err);
        assert_non_null(*text);
    }
    return p;
}

static json_t *real_loss(const bp_plan *p)
{
    char *js = bp_plan_search_json(p);
    assert_non_null(js);
    json_error_t je;
    json_t *root = json_loads(js, 0, &je);
    free(js);
    assert_non_null(root);
    json_t *rl = json_object_get(root, "real_loss");
    assert_non_null(rl);
    json_incref(rl);
    json_decref(root);
    return rl;
}

/* KL of the plan on stream windows [SEQS, SEQS + WINDOWS), measured by the
 * library directly (not through the task). */
static double measure_kl(const bp_plan *plan)
{
    bp_error e;
    bp_model *model = NULL;
    bp_llama *llama = NULL;
    bp_tokens *tok = NULL;
    assert_int_equal(bp_model_open(MODEL, &model, &e), BP_OK);
    assert_int_equal(bp_llama_new(model, &llama, &e), BP_OK);
    assert_int_equal(bp_calib_load_tokens(MODEL "/calib.txt", NULL, 256, &tok, &e), BP_OK);
    const uint32_t *t = bp_tokens_data(tok) + (int64_t)SEQS * CTX;
    int64_t n = bp_tokens_count(tok) - (int64_t)SEQS * CTX;
    bp_eval_result r;
    if (bp_evaluate(llama, model, plan, NULL, t, n, CTX, WINDOWS, 1, &r, &e) != BP_OK)
        fail_msg("bp_evaluate: %s", e.msg);
    bp_tokens_destroy(&tok);
    bp_llama_destroy(&llama);
    bp_model_destroy(&model);
    return r.kl;
}

static void test_default_is_evo_and_never_worse(void **state)
{
    (void)state;
    char *text = NULL;
    bp_plan *p = run(SPEC(",\"evo\":{\"generations\":2,\"lambda\":3,\"windows\":4}"), &text);
    json_t *rl = real_loss(p);
    double ret = json_real_value(json_object_get(rl, "returned_kl"));
    double ilp = json_real_value(json_object_get(rl, "ilp_kl"));
    assert_true(ret > 0 && ilp > 0);
    assert_true(ret <= ilp);
    json_t *uni = json_object_get(rl, "uniform");
    assert_true(json_array_size(uni) >= 1); /* int2_g64_asym and int3_pc fit 3.0 bits */
    for (size_t i = 0; i < json_array_size(uni); i++)
        assert_true(ret <= json_real_value(json_object_get(json_array_get(uni, i), "kl")));
    json_t *w = json_object_get(rl, "windows");
    assert_int_equal(json_integer_value(json_object_get(w, "first")), SEQS);
    assert_int_equal(json_integer_value(json_object_get(w, "high")), WINDOWS);
    /* The reported loss is the plan's real loss, measured independently. */
    double again = measure_kl(p);
    if (memcmp(&again, &ret, sizeof again))
        fail_msg("re-measured KL %.17g, reported %.17g", again, ret);
    /* The search section names evo. */
    char *js = bp_plan_search_json(p);
    assert_non_null(strstr(js, "\"search\":\"evo\""));
    free(js);
    /* Deterministic: the same spec gives the same bytes. */
    char *text2 = NULL;
    bp_plan *p2 = run(SPEC(",\"evo\":{\"generations\":2,\"lambda\":3,\"windows\":4}"), &text2);
    assert_string_equal(text, text2);
    json_decref(rl);
    free(text);
    free(text2);
    bp_plan_destroy(&p);
    bp_plan_destroy(&p2);
}

static void test_baselines_only(void **state)
{
    (void)state;
    bp_plan *p = run(SPEC(",\"evo\":{\"generations\":0,\"windows\":4}"), NULL);
    json_t *rl = real_loss(p);
    const char *which = json_string_value(json_object_get(rl, "returned"));
    assert_true(!strcmp(which, "ilp") || !strcmp(which, "uniform"));
    json_t *s = json_object_get(rl, "search");
    assert_int_equal(json_integer_value(json_object_get(s, "generations")), 0);
    json_decref(rl);
    bp_plan_destroy(&p);
}

static void test_ilp_search_has_no_real_loss(void **state)
{
    (void)state;
    bp_plan *p = run(SPEC(",\"search\":\"ilp\""), NULL);
    char *js = bp_plan_search_json(p);
    assert_null(strstr(js, "real_loss"));
    free(js);
    bp_plan_destroy(&p);
}

static void test_bad_evo_fields(void **state)
{
    (void)state;
    const char *bad[] = {
        SPEC(",\"evo\":{\"generations\":-1}"),
        SPEC(",\"evo\":{\"lambda\":0}"),
        SPEC(",\"evo\":{\"lambda\":2,\"promote\":3}"),
        SPEC(",\"evo\":{\"windows\":\"many\"}"),
        SPEC(",\"evo\":{\"bogus\":1}"),
        SPEC(",\"evo\":7"),
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        bp_job_spec_doc *doc = NULL;
        bp_error err;
        if (bp_job_spec_parse(bad[i], strlen(bad[i]), "test", &doc, &err) == BP_OK)
            fail_msg("accepted: %s", bad[i]);
        assert_true(strstr(err.msg, "evo") || strstr(err.msg, "generations") || strstr(err.msg, "lambda") ||
                    strstr(err.msg, "promote") || strstr(err.msg, "windows"));
    }
    /* Too few tokens left for the windows after the Hessian sequences. */
    const char *starved = "{\"kind\":\"plan\",\"model\":\"" MODEL "\",\"budget\":{\"bits\":3.0},\"metric\":\"mse\","
                          "\"formats\":[\"int2_g64_asym\",\"int4_g64_asym\"],"
                          "\"calibration\":{\"text\":\"" MODEL "/calib.txt\",\"seqs\":2048,\"ctx\":128}}";
    bp_job_spec_doc *doc = NULL;
    bp_error err;
    assert_int_equal(bp_job_spec_parse(starved, strlen(starved), "test", &doc, &err), BP_OK);
    bp_plan *p = NULL;
    assert_int_not_equal(bp_job_run(bp_job_spec_get(doc), &p, &err), BP_OK);
    assert_null(p);
    bp_job_spec_doc_destroy(&doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_is_evo_and_never_worse),
        cmocka_unit_test(test_baselines_only),
        cmocka_unit_test(test_ilp_search_has_no_real_loss),
        cmocka_unit_test(test_bad_evo_fields),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
