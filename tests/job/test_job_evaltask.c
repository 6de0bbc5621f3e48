/* The "evaluate" task kind (optimizer/job/task_eval.c): run through
 * bp_task_lookup with msgpack params on the bundled model, its KL and NLL
 * equal bp_evaluate's on the same windows bit for bit (both reduce to the
 * same exact fixed-point window sums, so any split of the windows over
 * cached reference pieces gives the same bits), with 1 and 2 OpenMP
 * threads, for RTN and GPTQ plans; malformed params give clear errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/evaluate.h"
#include "bitplan/task.h"

/* Declared in optimizer/job/tasks_internal.h (not a public header). */
void bp__tasks_register_eval(void);

#define MODEL BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"
#define CALIB MODEL "/calib.txt"
#define STATS BP_TEST_TMPDIR "/evaltask-stats.st"

static bp_model *g_model;
static bp_llama *g_llama;
static bp_tokens *g_tokens;

static int setup(void **state)
{
    (void)state;
    bp_job_register_tasks();
    bp__tasks_register_eval();
    bp_error e;
    if (bp_model_open(MODEL, &g_model, &e) || bp_llama_new(g_model, &g_llama, &e) ||
        bp_calib_load_tokens(CALIB, NULL, 256, &g_tokens, &e)) {
        fprintf(stderr, "setup: %s\n", e.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    bp_tokens_destroy(&g_tokens);
    bp_llama_destroy(&g_llama);
    bp_model_destroy(&g_model);
    return 0;
}

/* Every linear weight of the model in one format. */
static bp_plan *uniform_plan(const char *format, bp_quant_method method, const bp_calib *calib)
{
    bp_plan *p = bp_plan_new();
    assert_non_null(p);
    bp_error e;
    uint64_t params = 0;
    for (size_t i = 0; i < bp_model_count(g_model); i++) {
        const bp_tensor_info *t = bp_model_tensor(g_model, i);
        if (t->ndim != 2 || !strstr(t->name, "_proj.weight"))
            continue;
        bp_plan_tensor pt = {t->name, t->shape[0], t->shape[1], "BF16", format, method, NAN, NULL, 0, 0};
        if (bp_plan_add_tensor(p, &pt, &e) != BP_OK)
            fail_msg("%s", e.msg);
        params += t->numel;
    }
    assert_int_equal(bp_plan_tensor_count(p), 42);
    assert_int_equal(bp_plan_set_tool(p, "bitplan", "test", &e), BP_OK);
    assert_int_equal(bp_plan_set_model(p, MODEL, NULL, &e), BP_OK);
    assert_int_equal(bp_plan_set_calibration(p, calib ? bp_calib_id(calib) : NULL,
                                             calib ? bp_calib_source(calib) : NULL, &e),
                     BP_OK);
    assert_int_equal(bp_plan_set_metric(p, BP_METRIC_MSE, &e), BP_OK);
    assert_int_equal(bp_plan_set_budget(p, BP_BUDGET_BITS, 16.0, 2 * params, &e), BP_OK);
    assert_int_equal(bp_plan_set_solver(p, "test", "feasible", 0.0, NAN, NAN, &e), BP_OK);
    return p;
}

/* Params builder: a map of the fields set (NULL / < -1000 leaves a field
 * out). */
typedef struct tparams {
    const char *model, *text, *tokens, *stats, *calib_id;
    int64_t ctx, first, n;
} tparams;

#define ABSENT (-1000000)

static tparams default_params(void)
{
    tparams t = {MODEL, CALIB, NULL, NULL, NULL, 64, 2, 3};
    return t;
}

static void pack_params(const tparams *t, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    const char *skeys[] = {"model", "text", "tokens", "stats", "calib_id"};
    const char *svals[] = {t->model, t->text, t->tokens, t->stats, t->calib_id};
    const char *ikeys[] = {"ctx", "first_window", "n_windows"};
    int64_t ivals[] = {t->ctx, t->first, t->n};
    size_t n = 0;
    for (size_t i = 0; i < 5; i++)
        n += svals[i] != NULL;
    for (size_t i = 0; i < 3; i++)
        n += ivals[i] > ABSENT;
    msgpack_pack_map(&pk, n);
    for (size_t i = 0; i < 5; i++)
        if (svals[i]) {
            msgpack_pack_str(&pk, strlen(skeys[i]));
            msgpack_pack_str_body(&pk, skeys[i], strlen(skeys[i]));
            msgpack_pack_str(&pk, strlen(svals[i]));
            msgpack_pack_str_body(&pk, svals[i], strlen(svals[i]));
        }
    for (size_t i = 0; i < 3; i++)
        if (ivals[i] > ABSENT) {
            msgpack_pack_str(&pk, strlen(ikeys[i]));
            msgpack_pack_str_body(&pk, ikeys[i], strlen(ikeys[i]));
            msgpack_pack_int64(&pk, ivals[i]);
        }
}

typedef struct tres {
    double kl, nll;
    int64_t tokens, nll_fx, kl_fx;
} tres;

static int64_t res_i64(const msgpack_object *m, const char *key)
{
    int64_t v = 0;
    assert_int_equal(bp_mp_get_i64(m, key, &v, NULL), BP_OK);
    return v;
}

/* Run the task from serialized params (and plan text as the "plan" bin, or
 * a custom bin list); returns its status. */
static int run_task_bins(const void *params_mp, size_t params_len, const bp_bin_view *bins, size_t n_bins,
                         tres *out, bp_error *err)
{
    bp_task_fn fn = bp_task_lookup("evaluate");
    assert_non_null(fn);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&up, params_mp, params_len, &off), MSGPACK_UNPACK_SUCCESS);
    msgpack_sbuffer rb;
    msgpack_sbuffer_init(&rb);
    msgpack_packer rp;
    msgpack_packer_init(&rp, &rb, msgpack_sbuffer_write);
    _Atomic uint64_t progress = 0;
    bp_task_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.params = &up.data;
    ctx.bins = bins;
    ctx.n_bins = n_bins;
    ctx.progress = &progress;
    ctx.result = &rp;
    bp_error_clear(err);
    int rc = fn(&ctx, err);
    if (rc == BP_OK) {
        assert_true(progress > 0);
        msgpack_unpacked ru;
        msgpack_unpacked_init(&ru);
        off = 0;
        assert_int_equal(msgpack_unpack_next(&ru, rb.data, rb.size, &off), MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(off, rb.size);
        const msgpack_object *m = &ru.data;
        assert_int_equal(bp_mp_get_f64(m, "kl", &out->kl, NULL), BP_OK);
        assert_int_equal(bp_mp_get_f64(m, "nll", &out->nll, NULL), BP_OK);
        out->tokens = res_i64(m, "tokens");
        out->nll_fx = res_i64(m, "nll_fx");
        out->kl_fx = res_i64(m, "kl_fx");
        msgpack_unpacked_destroy(&ru);
    } else {
        assert_int_equal(rb.size, 0); /* nothing packed on failure */
    }
    bp_task_ctx_free_bins(&ctx);
    msgpack_sbuffer_destroy(&rb);
    msgpack_unpacked_destroy(&up);
    return rc;
}

static int run_task(const tparams *t, const char *plan_text, tres *out, bp_error *err)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pack_params(t, &sb);
    bp_bin_view bin = {{"plan", 4}, BP_WIRE_U8, strlen(plan_text), plan_text, strlen(plan_text)};
    int rc = run_task_bins(sb.data, sb.size, &bin, 1, out, err);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* bp_evaluate on windows [first, first + n) of the calibration stream:
 * window k of the stream shifted by first * ctx tokens is window first + k. */
static bp_eval_result direct(const bp_plan *plan, const bp_calib *calib, int64_t ctx, int64_t first, int64_t n)
{
    bp_eval_result r;
    bp_error e;
    const uint32_t *tok = bp_tokens_data(g_tokens) + first * ctx;
    int64_t ntok = bp_tokens_count(g_tokens) - first * ctx;
    if (bp_evaluate(g_llama, g_model, plan, calib, tok, ntok, ctx, n, 1, &r, &e) != BP_OK)
        fail_msg("bp_evaluate: %s", e.msg);
    assert_int_equal(r.windows, n);
    return r;
}

static void assert_same_bits(double a, double b)
{
    if (memcmp(&a, &b, sizeof a))
        fail_msg("%.17g != %.17g", a, b);
}

static void check_against_direct(const bp_plan *plan, const bp_calib *calib, const char *text,
                                 const tparams *t)
{
    tres r;
    bp_error e;
    if (run_task(t, text, &r, &e) != BP_OK)
        fail_msg("task: %s", e.msg);
    bp_eval_result d = direct(plan, calib, t->ctx, t->first, t->n);
    assert_int_equal(r.tokens, d.tokens);
    assert_int_equal(r.tokens, t->n * t->ctx);
    assert_same_bits(r.kl, d.kl);
    assert_same_bits(r.nll, d.nll);
    assert_true(r.kl > 0 && r.kl < 1);
    assert_same_bits(r.kl, ldexp((double)r.kl_fx, -BP_EVAL_FX_SHIFT) / (double)r.tokens);
}

static void test_rtn_matches_evaluate(void **state)
{
    (void)state;
    bp_error e;
    bp_plan *plan = uniform_plan("int4_g32_asym", BP_METHOD_RTN, NULL);
    char *text = bp_plan_to_string(plan, &e);
    assert_non_null(text);
    tparams t = default_params();
    /* 1 thread: fresh references for [2, 5). */
    omp_set_num_threads(1);
    check_against_direct(plan, NULL, text, &t);
    /* 2 threads: the cached piece [2, 5) plus a fresh [5, 9). */
    omp_set_num_threads(2);
    t.n = 7;
    check_against_direct(plan, NULL, text, &t);
    /* 2 threads, fresh references, compared with a 1-thread bp_evaluate. */
    t.first = 20;
    t.n = 4;
    tres r2;
    assert_int_equal(run_task(&t, text, &r2, &e), BP_OK);
    omp_set_num_threads(1);
    bp_eval_result d = direct(plan, NULL, t.ctx, t.first, t.n);
    assert_same_bits(r2.kl, d.kl);
    assert_same_bits(r2.nll, d.nll);
    omp_set_num_threads(2);
    /* A coarser format loses more. */
    bp_plan *plan2 = uniform_plan("int2_g32_asym", BP_METHOD_RTN, NULL);
    char *text2 = bp_plan_to_string(plan2, &e);
    tres r3;
    assert_int_equal(run_task(&t, text2, &r3, &e), BP_OK);
    assert_true(r3.kl > r2.kl);
    /* The same plan again, after another plan: the weights were reset. */
    tres r4;
    assert_int_equal(run_task(&t, text, &r4, &e), BP_OK);
    assert_same_bits(r4.kl, r2.kl);
    assert_same_bits(r4.nll, r2.nll);
    /* Another ctx: new references, still equal to bp_evaluate. */
    t.ctx = 32;
    t.first = 3;
    t.n = 5;
    check_against_direct(plan, NULL, text, &t);
    free(text);
    free(text2);
    bp_plan_destroy(&plan);
    bp_plan_destroy(&plan2);
}

static void test_gptq_with_stats(void **state)
{
    (void)state;
    bp_error e;
    remove(STATS);
    bp_calib_spec cs;
    bp_calib_spec_default(&cs);
    cs.text_path = CALIB;
    cs.stats_path = STATS;
    cs.ctx = 64;
    cs.n_seq = 8;
    cs.quiet = 1;
    bp_calib *calib = NULL;
    if (bp_calib_open(&cs, g_llama, NULL, 0, &calib, &e) != BP_OK)
        fail_msg("calib: %s", e.msg);
    bp_plan *plan = uniform_plan("int3_g32_asym", BP_METHOD_GPTQ, calib);
    char *text = bp_plan_to_string(plan, &e);
    assert_non_null(text);
    tparams t = default_params();
    t.first = 8; /* held out: after the 8 Hessian sequences */
    t.stats = STATS;
    t.calib_id = bp_calib_id(calib);
    check_against_direct(plan, calib, text, &t);
    /* GPTQ without stats, or with another calibration id, is refused. */
    tres r;
    t.stats = NULL;
    assert_int_equal(run_task(&t, text, &r, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "\"stats\""));
    t.stats = STATS;
    t.calib_id = "blake2b256:0000";
    assert_int_equal(run_task(&t, text, &r, &e), BP_EMISMATCH);
    assert_non_null(strstr(e.msg, "calibration id"));
    t.calib_id = NULL;
    t.stats = BP_TEST_TMPDIR "/evaltask-missing.st";
    assert_int_equal(run_task(&t, text, &r, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "evaltask-missing.st"));
    free(text);
    bp_plan_destroy(&plan);
    bp_calib_destroy(&calib);
}

static void expect_error(const tparams *t, const char *plan_text, int code, const char *needle)
{
    tres r;
    bp_error e;
    int rc = run_task(t, plan_text, &r, &e);
    if (rc != code || !strstr(e.msg, needle))
        fail_msg("expected %s containing '%s', got %s: %s", bp_error_name(code), needle, bp_error_name(rc), e.msg);
}

static void test_malformed_params(void **state)
{
    (void)state;
    bp_error e;
    bp_plan *plan = uniform_plan("int4_g32_asym", BP_METHOD_RTN, NULL);
    char *text = bp_plan_to_string(plan, &e);
    tparams t = default_params();
    t.model = NULL;
    expect_error(&t, text, BP_EINVAL, "\"model\" is required");
    t = default_params();
    t.model = BP_TEST_TMPDIR "/no-such-model";
    tres r;
    assert_true(run_task(&t, text, &r, &e) < 0);
    assert_non_null(strstr(e.msg, "no-such-model"));
    t = default_params();
    t.n = -2;
    expect_error(&t, text, BP_EINVAL, "\"n_windows\" = -2");
    t = default_params();
    t.n = 0;
    expect_error(&t, text, BP_EINVAL, "n_windows");
    t = default_params();
    t.n = ABSENT;
    expect_error(&t, text, BP_EINVAL, "\"n_windows\" is required");
    t = default_params();
    t.first = -1;
    expect_error(&t, text, BP_EINVAL, "first_window");
    t = default_params();
    t.ctx = ABSENT;
    expect_error(&t, text, BP_EINVAL, "\"ctx\" is required");
    t = default_params();
    t.ctx = 100000; /* above max_position_embeddings */
    expect_error(&t, text, BP_EINVAL, "max_position_embeddings");
    t = default_params();
    t.first = 4000; /* 262144 tokens hold 4095 windows of 64 */
    t.n = 100;
    expect_error(&t, text, BP_EINVAL, "outside the 4095 windows");
    t = default_params();
    t.text = NULL;
    expect_error(&t, text, BP_EINVAL, "exactly one of \"text\" and \"tokens\"");
    t.tokens = CALIB;
    t.text = CALIB;
    expect_error(&t, text, BP_EINVAL, "exactly one");

    /* Bad plan text, a plan for other tensors or shapes. */
    t = default_params();
    expect_error(&t, "{\"schema\": 3", BP_EFORMAT, "evaluate task plan");
    expect_error(&t, "[]", BP_EFORMAT, "evaluate task plan");
    char *bad = strdup(text);
    char *at = strstr(bad, "model.layers.0.mlp.down_proj.weight");
    assert_non_null(at);
    memcpy(at + 29, "wfight", 6); /* still sorted and unique */
    expect_error(&t, bad, BP_EMISMATCH, "not in");
    free(bad);

    /* Wrong types and shapes of the inputs themselves. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_str(&pk, 5);
    msgpack_pack_str_body(&pk, "model", 5);
    msgpack_pack_int(&pk, 7); /* not a string */
    msgpack_pack_str(&pk, 4);
    msgpack_pack_str_body(&pk, "text", 4);
    msgpack_pack_str(&pk, strlen(CALIB));
    msgpack_pack_str_body(&pk, CALIB, strlen(CALIB));
    msgpack_pack_str(&pk, 3);
    msgpack_pack_str_body(&pk, "ctx", 3);
    msgpack_pack_str(&pk, 2);
    msgpack_pack_str_body(&pk, "64", 2); /* not an integer */
    msgpack_pack_str(&pk, 9);
    msgpack_pack_str_body(&pk, "n_windows", 9);
    msgpack_pack_double(&pk, 2.0); /* not an integer */
    bp_bin_view bin = {{"plan", 4}, BP_WIRE_U8, strlen(text), text, strlen(text)};
    assert_true(run_task_bins(sb.data, sb.size, &bin, 1, &r, &e) < 0);
    assert_non_null(strstr(e.msg, "model"));
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_array(&pk, 0); /* not a map */
    assert_true(run_task_bins(sb.data, sb.size, &bin, 1, &r, &e) < 0);
    msgpack_sbuffer_clear(&sb);
    pack_params(&(tparams){MODEL, CALIB, NULL, NULL, NULL, 64, 0, 1}, &sb);
    /* ctx as a string */
    msgpack_sbuffer sb2;
    msgpack_sbuffer_init(&sb2);
    msgpack_packer pk2;
    msgpack_packer_init(&pk2, &sb2, msgpack_sbuffer_write);
    msgpack_pack_map(&pk2, 3);
    msgpack_pack_str(&pk2, 5);
    msgpack_pack_str_body(&pk2, "model", 5);
    msgpack_pack_str(&pk2, strlen(MODEL));
    msgpack_pack_str_body(&pk2, MODEL, strlen(MODEL));
    msgpack_pack_str(&pk2, 4);
    msgpack_pack_str_body(&pk2, "text", 4);
    msgpack_pack_str(&pk2, strlen(CALIB));
    msgpack_pack_str_body(&pk2, CALIB, strlen(CALIB));
    msgpack_pack_str(&pk2, 3);
    msgpack_pack_str_body(&pk2, "ctx", 3);
    msgpack_pack_str(&pk2, 2);
    msgpack_pack_str_body(&pk2, "64", 2);
    assert_true(run_task_bins(sb2.data, sb2.size, &bin, 1, &r, &e) < 0);
    assert_non_null(strstr(e.msg, "ctx"));
    msgpack_sbuffer_destroy(&sb2);
    /* the plan input: missing, wrong dtype, empty, with a NUL byte */
    assert_int_equal(run_task_bins(sb.data, sb.size, NULL, 0, &r, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "\"plan\" is missing"));
    bp_bin_view wrong = {{"plan", 4}, BP_WIRE_F32, 4, text, 16};
    assert_int_equal(run_task_bins(sb.data, sb.size, &wrong, 1, &r, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "JSON text"));
    bp_bin_view empty = {{"plan", 4}, BP_WIRE_U8, 0, text, 0};
    assert_int_equal(run_task_bins(sb.data, sb.size, &empty, 1, &r, &e), BP_EINVAL);
    char nul[8] = "{\"a\0\"}";
    bp_bin_view withnul = {{"plan", 4}, BP_WIRE_U8, 6, nul, 6};
    assert_int_equal(run_task_bins(sb.data, sb.size, &withnul, 1, &r, &e), BP_EINVAL);
    /* still healthy afterwards */
    assert_int_equal(run_task_bins(sb.data, sb.size, &bin, 1, &r, &e), BP_OK);
    assert_int_equal(r.tokens, 64);
    msgpack_sbuffer_destroy(&sb);
    free(text);
    bp_plan_destroy(&plan);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rtn_matches_evaluate),
        cmocka_unit_test(test_gptq_with_stats),
        cmocka_unit_test(test_malformed_params),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
