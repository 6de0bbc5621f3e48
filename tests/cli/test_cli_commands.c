/* End-to-end tests of the bitplan executable: help, argument errors, plan,
 * apply, determinism, infeasible budgets, rules, tables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "bitplan/apply.h"
#include "bitplan/calib_input.h"
#include "bitplan/gptq.h"
#include "bitplan/job.h"
#include "bitplan/llama.h"
#include "bitplan/format.h"
#include "bitplan/model.h"
#include "bitplan/plan.h"
#include "cli_test_util.h"

static void test_cli_help_for_every_command(void **state)
{
    (void)state;
    const char *cmds[] = {"", "inspect", "formats", "plan", "apply", "eval"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char args[128];
        snprintf(args, sizeof args, "%s --help", cmds[i]);
        assert_int_equal(run_bitplan("help", args), 0);
        char *out = captured("help", "out");
        assert_non_null(out);
        assert_non_null(strstr(out, "usage: bitplan"));
        free(out);
    }
}

static void test_cli_usage_errors_exit_2(void **state)
{
    (void)state;
    const char *bad[] = {
        "frobnicate",
        "plan --model " MODEL_DIR,                               /* no budget */
        "plan --model " MODEL_DIR " --budget-bits abc",
        "plan --model " MODEL_DIR " --budget-bits -1",
        "plan --model " MODEL_DIR " --budget-bits 3 --solver magic",
        "plan --model " MODEL_DIR " --budget-bits 3 --bogus",
        "plan --model " MODEL_DIR " --budget-bits 3 --metric nope",
        "apply --plan x.json",
        "inspect",
        "formats --rows 0",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = run_bitplan("usage", bad[i]);
        if (rc != 2)
            fail_msg("'bitplan %s' exited %d, expected 2", bad[i], rc);
        char *err = captured("usage", "err");
        assert_non_null(err);
        assert_true(strlen(err) > 0);
        free(err);
    }
}

static void test_cli_runtime_errors_name_the_input(void **state)
{
    (void)state;
    assert_int_equal(run_bitplan("rt", "inspect --model /nonexistent/dir"), 1);
    char *err = captured("rt", "err");
    assert_non_null(strstr(err, "/nonexistent/dir"));
    free(err);
    assert_int_equal(run_bitplan("rt", "plan --model " MODEL_DIR " --budget-bits 3 --formats int9_g128_sym"), 1);
    err = captured("rt", "err");
    assert_non_null(strstr(err, "int9"));
    free(err);
    assert_int_equal(run_bitplan("rt", "apply --plan /nonexistent.json --model " MODEL_DIR " --out " BP_TEST_TMPDIR "/x"), 1);
    err = captured("rt", "err");
    assert_non_null(strstr(err, "/nonexistent.json"));
    free(err);
}

static void test_cli_inspect_lists_tensors(void **state)
{
    (void)state;
    assert_int_equal(run_bitplan("inspect", "inspect --model " MODEL_DIR), 0);
    char *out = captured("inspect", "out");
    assert_non_null(strstr(out, "model.layers.0.self_attn.q_proj.weight"));
    assert_non_null(strstr(out, "57 tensors"));
    free(out);
    assert_int_equal(run_bitplan("inspect", "inspect --json --model " MODEL_DIR), 0);
    out = captured("inspect", "out");
    assert_non_null(strstr(out, "\"n_tensors\": 57"));
    free(out);
}

/* Plans are byte-identical across runs and OpenMP thread counts. */
static void test_cli_plan_is_deterministic(void **state)
{
    (void)state;
    assert_int_equal(run_bitplan("det1", "plan --quiet --model " MODEL_DIR
                                         " --budget-bits 3.5 --out " BP_TEST_TMPDIR "/det1.json"),
                     0);
    assert_int_equal(run_bitplan("det2", "plan --quiet --model " MODEL_DIR
                                         " --budget-bits 3.5 --out " BP_TEST_TMPDIR "/det2.json"),
                     0);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 %s", "");
    (void)cmd;
    setenv("OMP_NUM_THREADS", "1", 1);
    assert_int_equal(run_bitplan("det3", "plan --quiet --model " MODEL_DIR
                                         " --budget-bits 3.5 --out " BP_TEST_TMPDIR "/det3.json"),
                     0);
    unsetenv("OMP_NUM_THREADS");
    size_t l1, l2, l3;
    char *a = slurp(BP_TEST_TMPDIR "/det1.json", &l1);
    char *b = slurp(BP_TEST_TMPDIR "/det2.json", &l2);
    char *c = slurp(BP_TEST_TMPDIR "/det3.json", &l3);
    assert_non_null(a);
    assert_int_equal(l1, l2);
    assert_int_equal(l1, l3);
    assert_memory_equal(a, b, l1);
    assert_memory_equal(a, c, l1);
    free(a);
    free(b);
    free(c);
}

static void test_cli_infeasible_budget_states_minimum(void **state)
{
    (void)state;
    assert_int_equal(run_bitplan("inf", "plan --quiet --model " MODEL_DIR
                                        " --budget-bits 1.0 --out " BP_TEST_TMPDIR "/inf.json"),
                     1);
    char *err = captured("inf", "err");
    assert_non_null(strstr(err, "smallest achievable"));
    free(err);
    /* Same through the DP solver. */
    assert_int_equal(run_bitplan("inf", "plan --quiet --solver dp --model " MODEL_DIR
                                        " --budget-bytes 1000 --out " BP_TEST_TMPDIR "/inf.json"),
                     1);
    err = captured("inf", "err");
    assert_non_null(strstr(err, "smallest achievable"));
    free(err);
}

/* The plan fits its budget and reports it; DP and ILP agree. */
static void test_cli_plan_budget_and_solvers_agree(void **state)
{
    (void)state;
    const char *budgets[] = {"3.0", "3.25", "4.5"};
    for (size_t i = 0; i < 3; i++) {
        char args[1024];
        snprintf(args, sizeof args,
                 "plan --quiet --model %s --budget-bits %s --table %s/t.csv --out %s/ilp.json",
                 MODEL_DIR, budgets[i], BP_TEST_TMPDIR, BP_TEST_TMPDIR);
        assert_int_equal(run_bitplan("b", args), 0);
        snprintf(args, sizeof args,
                 "plan --quiet --model %s --budget-bits %s --solver dp --table %s/t.csv --out %s/dp.json",
                 MODEL_DIR, budgets[i], BP_TEST_TMPDIR, BP_TEST_TMPDIR);
        assert_int_equal(run_bitplan("b", args), 0);
        bp_plan *pi = NULL, *pd = NULL;
        bp_error e;
        assert_int_equal(bp_plan_read(BP_TEST_TMPDIR "/ilp.json", &pi, &e), BP_OK);
        assert_int_equal(bp_plan_read(BP_TEST_TMPDIR "/dp.json", &pd, &e), BP_OK);
        bp_plan_info a, b;
        bp_plan_get_info(pi, &a);
        bp_plan_get_info(pd, &b);
        double bits = atof(budgets[i]);
        assert_true(a.achieved_bits <= bits + 1e-12);
        assert_true(b.achieved_bits <= bits + 1e-12);
        assert_true(fabs(a.objective - b.objective) <= 1e-9 * fmax(1.0, fabs(a.objective)));
        assert_string_equal(a.solver_status, "optimal");
        bp_plan_destroy(&pi);
        bp_plan_destroy(&pd);
    }
}

/* Apply, then read the packed file back: each tensor's bytes equal the
 * plan's, and re-measured error equals the predicted error exactly. */
static void test_cli_apply_reproduces_predicted_error(void **state)
{
    (void)state;
    assert_int_equal(run_bitplan("ap", "plan --quiet --model " MODEL_DIR
                                       " --budget-bits 3.25 --out " BP_TEST_TMPDIR "/ap.json"),
                     0);
    assert_int_equal(run_bitplan("ap", "apply --quiet --plan " BP_TEST_TMPDIR "/ap.json --model " MODEL_DIR
                                       " --out " BP_TEST_TMPDIR "/ap_out"),
                     0);
    bp_error e;
    bp_plan *plan = NULL;
    bp_model *model = NULL;
    bp_safetensors *packed = NULL;
    assert_int_equal(bp_plan_read(BP_TEST_TMPDIR "/ap.json", &plan, &e), BP_OK);
    assert_int_equal(bp_model_open(MODEL_DIR, &model, &e), BP_OK);
    assert_int_equal(bp_safetensors_open(BP_TEST_TMPDIR "/ap_out/model.safetensors", &packed, &e), BP_OK);
    assert_non_null(bp_safetensors_metadata(packed, "bitplan"));
    size_t n = bp_plan_tensor_count(plan);
    assert_int_equal(n, 42);
    for (size_t i = 0; i < n; i++) {
        bp_plan_tensor pt;
        assert_int_equal(bp_plan_tensor_get(plan, i, &pt), BP_OK);
        const bp_tensor_info *q = bp_safetensors_find(packed, pt.name);
        assert_non_null(q);
        assert_int_equal(q->dtype, BP_DTYPE_U8);
        assert_int_equal(q->nbytes, pt.bytes);
        bp_format f;
        assert_int_equal(bp_format_parse(pt.format, &f, &e), BP_OK);
        size_t cnt = (size_t)(pt.rows * pt.cols);
        uint16_t *codes = malloc(cnt * sizeof *codes);
        bp_qparams *par = malloc((size_t)(pt.rows * bp_format_groups_per_row(&f, pt.cols)) * sizeof *par);
        float *deq = malloc(cnt * sizeof *deq), *w = malloc(cnt * sizeof *w);
        float tp = 0;
        assert_int_equal(bp_format_unpack(&f, pt.rows, pt.cols, q->data, q->nbytes, codes, par, &tp, &e), BP_OK);
        bp_format_dequantize_rows(&f, codes, par, pt.rows, pt.cols, deq);
        const bp_tensor_info *src = bp_model_tensor(model, (size_t)bp_model_find(model, pt.name));
        assert_int_equal(bp_tensor_rows_f32(src, 0, pt.rows, w, &e), BP_OK);
        /* bp_job_error_total sums exactly as the sweep does. */
        double tot = 0;
        bp_job_error_total(w, deq, pt.rows, pt.cols, NULL, &tot, NULL);
        if (tot != pt.predicted_error)
            fail_msg("%s: re-measured %.17g, predicted %.17g", pt.name, tot, pt.predicted_error);
        free(codes);
        free(par);
        free(deq);
        free(w);
    }
    /* Non-planned tensors are copied unchanged. */
    const bp_tensor_info *emb = bp_safetensors_find(packed, "model.embed_tokens.weight");
    const bp_tensor_info *emb0 = bp_model_tensor(model, (size_t)bp_model_find(model, "model.embed_tokens.weight"));
    assert_int_equal(emb->nbytes, emb0->nbytes);
    assert_memory_equal(emb->data, emb0->data, emb0->nbytes);
    bp_safetensors_destroy(&packed);
    bp_model_destroy(&model);
    bp_plan_destroy(&plan);
}

static void test_cli_apply_dequantized_is_a_model(void **state)
{
    (void)state;
    assert_int_equal(run_bitplan("dq", "plan --quiet --model " MODEL_DIR
                                       " --budget-bits 4 --out " BP_TEST_TMPDIR "/dq.json"),
                     0);
    assert_int_equal(run_bitplan("dq", "apply --quiet --dequantized --plan " BP_TEST_TMPDIR
                                       "/dq.json --model " MODEL_DIR " --out " BP_TEST_TMPDIR "/dq_out"),
                     0);
    bp_model *m = NULL;
    bp_error e;
    assert_int_equal(bp_model_open(BP_TEST_TMPDIR "/dq_out", &m, &e), BP_OK);
    assert_int_equal(bp_model_count(m), 57);
    const bp_tensor_info *t = bp_model_tensor(m, (size_t)bp_model_find(m, "model.layers.0.mlp.up_proj.weight"));
    assert_int_equal(t->dtype, BP_DTYPE_BF16);
    assert_int_equal(t->shape[0], 384);
    bp_model_destroy(&m);
    /* A plan for another model is refused. */
    assert_int_equal(run_bitplan("dq", "apply --quiet --plan " BP_TEST_TMPDIR "/dq.json --model " BP_TEST_TMPDIR
                                       "/dq_out --out " BP_TEST_TMPDIR "/dq_out2"),
                     1);
    char *err = captured("dq", "err");
    assert_non_null(strstr(err, "different model"));
    free(err);
}

static void test_cli_table_resolve_and_rules(void **state)
{
    (void)state;
    /* A table written once is re-solved for a new budget without a sweep. */
    remove(BP_TEST_TMPDIR "/rt.csv");
    assert_int_equal(run_bitplan("tb", "plan --model " MODEL_DIR " --budget-bits 4 --table " BP_TEST_TMPDIR
                                       "/rt.csv --out " BP_TEST_TMPDIR "/tb1.json"),
                     0);
    assert_int_equal(run_bitplan("tb", "plan --model " MODEL_DIR " --budget-bits 3 --table " BP_TEST_TMPDIR
                                       "/rt.csv --out " BP_TEST_TMPDIR "/tb2.json"),
                     0);
    char *err = captured("tb", "err");
    assert_non_null(strstr(err, "no sweep"));
    free(err);
    /* The table alone (no model) also solves. */
    assert_int_equal(run_bitplan("tb", "plan --quiet --budget-bits 3 --table " BP_TEST_TMPDIR
                                       "/rt.csv --out " BP_TEST_TMPDIR "/tb3.json"),
                     0);
    /* Rules: pin down_proj to int8, include lm_head. */
    FILE *fp = fopen(BP_TEST_TMPDIR "/rules.json", "w");
    fputs("{\"schema\":\"bitplan.rules/v1\",\"rules\":["
          "{\"match\":\"*.down_proj.weight\",\"pin\":\"int8_pc_sym\"},"
          "{\"match\":\"lm_head.weight\",\"include\":true}]}",
          fp);
    fclose(fp);
    assert_int_equal(run_bitplan("rl", "plan --quiet --model " MODEL_DIR " --budget-bits 4 --rules " BP_TEST_TMPDIR
                                       "/rules.json --out " BP_TEST_TMPDIR "/rl.json"),
                     0);
    bp_plan *p = NULL;
    bp_error e;
    assert_int_equal(bp_plan_read(BP_TEST_TMPDIR "/rl.json", &p, &e), BP_OK);
    assert_int_equal(bp_plan_tensor_count(p), 43);
    long i = bp_plan_tensor_find(p, "model.layers.3.mlp.down_proj.weight");
    assert_true(i >= 0);
    bp_plan_tensor pt;
    bp_plan_tensor_get(p, (size_t)i, &pt);
    assert_string_equal(pt.format, "int8_pc_sym");
    assert_true(bp_plan_tensor_find(p, "lm_head.weight") >= 0);
    bp_plan_destroy(&p);
}

static void test_cli_export_lp(void **state)
{
    (void)state;
    assert_int_equal(run_bitplan("lp", "plan --quiet --model " MODEL_DIR " --budget-bits 3.5 --formats "
                                       "int2_g64_asym,int3_g64_asym,int4_g64_asym,int8_pc_sym --export-lp " BP_TEST_TMPDIR
                                       "/m.lp --out " BP_TEST_TMPDIR "/lp.json"),
                     0);
    char *lp = slurp(BP_TEST_TMPDIR "/m.lp", NULL);
    assert_non_null(lp);
    assert_non_null(strstr(lp, "Minimize"));
    free(lp);
}

/* GPTQ: plan on the gptq metric, apply with the same calibration, and the
 * re-measured layer output error of every packed tensor equals the plan's
 * prediction exactly; a different calibration input is refused. */
static void test_cli_gptq_apply_reproduces_prediction(void **state)
{
    (void)state;
    remove(BP_TEST_TMPDIR "/g.stats");
    assert_int_equal(run_bitplan("g", "plan --quiet --model " MODEL_DIR " --budget-bits 3.25 --metric gptq"
                                      " --formats int2_g128_asym,int3_g128_asym,int4_g128_asym,int8_pc_sym"
                                      " --text " MODEL_DIR "/calib.txt --ctx 64 --calib-seqs 8"
                                      " --evo-generations 1 --evo-lambda 2 --evo-windows 2"
                                      " --stats " BP_TEST_TMPDIR "/g.stats --out " BP_TEST_TMPDIR "/g.json"),
                     0);
    assert_int_equal(run_bitplan("g", "apply --quiet --plan " BP_TEST_TMPDIR "/g.json --model " MODEL_DIR
                                      " --text " MODEL_DIR "/calib.txt --ctx 64 --calib-seqs 8 --out " BP_TEST_TMPDIR
                                      "/g_out"),
                     0);
    /* Another calibration (more sequences) gives other Hessians: refused. */
    assert_int_equal(run_bitplan("g2", "apply --quiet --plan " BP_TEST_TMPDIR "/g.json --model " MODEL_DIR
                                       " --text " MODEL_DIR "/calib.txt --ctx 64 --calib-seqs 9 --out " BP_TEST_TMPDIR
                                       "/g_out2"),
                     1);
    char *err = captured("g2", "err");
    assert_non_null(strstr(err, "calibration input differs"));
    free(err);
    /* No calibration at all: refused with a hint. */
    assert_int_equal(run_bitplan("g3", "apply --quiet --plan " BP_TEST_TMPDIR "/g.json --model " MODEL_DIR
                                       " --out " BP_TEST_TMPDIR "/g_out3"),
                     1);

    bp_error e;
    bp_plan *plan = NULL;
    bp_model *model = NULL;
    bp_safetensors *packed = NULL;
    bp_llama *llama = NULL;
    bp_calib *calib = NULL;
    assert_int_equal(bp_plan_read(BP_TEST_TMPDIR "/g.json", &plan, &e), BP_OK);
    assert_int_equal(bp_model_open(MODEL_DIR, &model, &e), BP_OK);
    assert_int_equal(bp_llama_new(model, &llama, &e), BP_OK);
    bp_calib_spec cs;
    bp_calib_spec_default(&cs);
    cs.stats_path = BP_TEST_TMPDIR "/g.stats";
    cs.quiet = 1;
    assert_int_equal(bp_calib_open(&cs, llama, NULL, 0, &calib, &e), BP_OK);
    assert_int_equal(bp_safetensors_open(BP_TEST_TMPDIR "/g_out/model.safetensors", &packed, &e), BP_OK);
    size_t n = bp_plan_tensor_count(plan);
    for (size_t i = 0; i < n; i++) {
        bp_plan_tensor pt;
        bp_plan_tensor_get(plan, i, &pt);
        assert_int_equal(pt.method, BP_METHOD_GPTQ);
        const bp_tensor_info *q = bp_safetensors_find(packed, pt.name);
        bp_format f;
        assert_int_equal(bp_format_parse(pt.format, &f, &e), BP_OK);
        size_t cnt = (size_t)(pt.rows * pt.cols);
        uint16_t *codes = malloc(cnt * sizeof *codes);
        bp_qparams *par = malloc((size_t)(pt.rows * bp_format_groups_per_row(&f, pt.cols)) * sizeof *par);
        float *deq = malloc(cnt * sizeof *deq), *w = malloc(cnt * sizeof *w);
        float tp;
        assert_int_equal(bp_format_unpack(&f, pt.rows, pt.cols, q->data, q->nbytes, codes, par, &tp, &e), BP_OK);
        bp_format_dequantize_rows(&f, codes, par, pt.rows, pt.cols, deq);
        const bp_tensor_info *src = bp_model_tensor(model, (size_t)bp_model_find(model, pt.name));
        assert_int_equal(bp_tensor_rows_f32(src, 0, pt.rows, w, &e), BP_OK);
        double *h = NULL;
        assert_int_equal(bp_calib_hessian_full(calib, bp_llama_get_config(llama), pt.name, pt.cols, &h, &e), BP_OK);
        double acc = 0;
        assert_int_equal(bp_quant_hfull_rows(w, deq, pt.rows, pt.cols, h, NULL, &acc, &e), BP_OK);
        if (acc != pt.predicted_error)
            fail_msg("%s: re-measured %.17g, predicted %.17g", pt.name, acc, pt.predicted_error);
        free(h);
        free(codes);
        free(par);
        free(deq);
        free(w);
    }
    bp_safetensors_destroy(&packed);
    bp_calib_destroy(&calib);
    bp_llama_destroy(&llama);
    bp_model_destroy(&model);
    bp_plan_destroy(&plan);
}

/* eval reproduces the reference NLL and reports KL for a plan. */
static void test_cli_eval_json(void **state)
{
    (void)state;
    assert_int_equal(run_bitplan("ev", "eval --quiet --json --model " MODEL_DIR " --text " MODEL_DIR
                                       "/eval.txt --windows 40"),
                     0);
    char *out = captured("ev", "out");
    assert_non_null(strstr(out, "\"nll\""));
    assert_non_null(strstr(out, "\"ppl\""));
    assert_non_null(strstr(out, "\"tokens\": 5120"));
    assert_null(strstr(out, "\"kl\""));
    free(out);
    assert_int_equal(run_bitplan("ev", "plan --quiet --model " MODEL_DIR " --budget-bits 4 --out " BP_TEST_TMPDIR
                                       "/ev.json"),
                     0);
    assert_int_equal(run_bitplan("ev", "eval --quiet --json --model " MODEL_DIR " --plan " BP_TEST_TMPDIR
                                       "/ev.json --text " MODEL_DIR "/eval.txt --windows 40"),
                     0);
    out = captured("ev", "out");
    char *kl = strstr(out, "\"kl\": ");
    assert_non_null(kl);
    double v = atof(kl + 6);
    assert_true(v > 0.0 && v < 0.5);
    free(out);
}

/* --method overrides the plan's method in apply and eval; --no-kl skips
 * the full-precision pass. */
static void test_cli_method_override_and_no_kl(void **state)
{
    (void)state;
    assert_int_equal(run_bitplan("mo", "plan --quiet --model " MODEL_DIR " --budget-bits 3.5 --formats "
                                       "int3_g128_asym,int4_g128_asym --out " BP_TEST_TMPDIR "/mo.json"),
                     0);
    /* GPTQ without calibration input: refused with a reason. */
    assert_int_equal(run_bitplan("mo1", "apply --quiet --method gptq --plan " BP_TEST_TMPDIR "/mo.json --model "
                                        MODEL_DIR " --out " BP_TEST_TMPDIR "/mo_out"),
                     1);
    char *err = captured("mo1", "err");
    assert_non_null(strstr(err, "calibration"));
    free(err);
    assert_int_equal(run_bitplan("mo2", "apply --quiet --method gptq --plan " BP_TEST_TMPDIR "/mo.json --model "
                                        MODEL_DIR " --text " MODEL_DIR "/calib.txt --ctx 64 --calib-seqs 4 --out "
                                        BP_TEST_TMPDIR "/mo_out"),
                     0);
    const char *ev = "eval --quiet --json --model " MODEL_DIR " --plan " BP_TEST_TMPDIR "/mo.json --text " MODEL_DIR
                     "/eval.txt --windows 20 --calib-text " MODEL_DIR "/calib.txt --calib-ctx 64 --calib-seqs 4";
    char args[2048];
    snprintf(args, sizeof args, "%s --method gptq --no-kl", ev);
    assert_int_equal(run_bitplan("mo3", args), 0);
    char *out = captured("mo3", "out");
    double nll_gptq = atof(strstr(out, "\"nll\": ") + 7);
    assert_null(strstr(out, "\"kl\""));
    free(out);
    snprintf(args, sizeof args, "%s --method rtn --no-kl", ev);
    assert_int_equal(run_bitplan("mo4", args), 0);
    out = captured("mo4", "out");
    double nll_rtn = atof(strstr(out, "\"nll\": ") + 7);
    free(out);
    /* GPTQ weights of the same formats fit the data better. */
    assert_true(nll_gptq < nll_rtn);
    /* --no-kl without a plan is a usage mistake reported as an error. */
    assert_int_equal(run_bitplan("mo5", "eval --quiet --no-kl --model " MODEL_DIR " --text " MODEL_DIR
                                        "/eval.txt --windows 5"),
                     1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli_help_for_every_command),
        cmocka_unit_test(test_cli_usage_errors_exit_2),
        cmocka_unit_test(test_cli_runtime_errors_name_the_input),
        cmocka_unit_test(test_cli_inspect_lists_tensors),
        cmocka_unit_test(test_cli_plan_is_deterministic),
        cmocka_unit_test(test_cli_infeasible_budget_states_minimum),
        cmocka_unit_test(test_cli_plan_budget_and_solvers_agree),
        cmocka_unit_test(test_cli_apply_reproduces_predicted_error),
        cmocka_unit_test(test_cli_apply_dequantized_is_a_model),
        cmocka_unit_test(test_cli_table_resolve_and_rules),
        cmocka_unit_test(test_cli_export_lp),
        cmocka_unit_test(test_cli_gptq_apply_reproduces_prediction),
        cmocka_unit_test(test_cli_eval_json),
        cmocka_unit_test(test_cli_method_override_and_no_kl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
