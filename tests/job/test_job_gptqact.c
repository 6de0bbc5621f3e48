/* GPTQ act-order (method "gptq_act") through the whole job: measured,
 * recorded per plan tensor and table row, applied so that the re-measured
 * layer output error equals the prediction bit for bit, lower than natural
 * order GPTQ at 3 bits, and refused where it has no form (cols-axis blocks)
 * or where the method name is unknown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/apply.h"
#include "bitplan/blocks.h"
#include "bitplan/calib_input.h"
#include "bitplan/gptq.h"
#include "bitplan/job_spec.h"
#include "bitplan/llama.h"
#include "bitplan/model.h"
#include "bitplan/task.h"

#include "job_testutil.h"

#define MODEL BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"
#define TMP BP_TEST_TMPDIR "/gptqact-"
#define STATS TMP "h.st"
#define CALIB "\"search\":\"ilp\",\"calibration\":{\"text\":\"" MODEL "/calib.txt\",\"seqs\":12,\"ctx\":64,\"stats\":\"" STATS "\"}"
#define FORMATS "\"formats\":[\"int3_g128_asym\",\"int4_g128_asym\"]"
#define TENSOR "model.layers.0.mlp.up_proj.weight" /* 384 x 128 */

/* Shared by the tests: the act-order plan (direct and through tasks) and
 * the tables of both methods. */
static char *g_plan_act, *g_plan_act_tasks;

static char *spec_of(const char *method, const char *table)
{
    char *s = malloc(4096);
    assert_non_null(s);
    snprintf(s, 4096,
             "{\"kind\":\"plan\",\"model\":\"" MODEL "\",\"budget\":{\"bits\":3.5}," FORMATS
             ",\"metric\":\"gptq\",\"method\":\"%s\"," CALIB ",\"table\":\"%s\"}",
             method, table);
    return s;
}

static int group_setup(void **state)
{
    (void)state;
    bp_job_register_tasks();
    setenv("TMPDIR", BP_TEST_TMPDIR, 1);
    const char *old[] = {STATS, TMP "act.csv", TMP "act-tasks.csv", TMP "nat.csv"};
    for (size_t i = 0; i < sizeof old / sizeof old[0]; i++)
        remove(old[i]);
    /* The first run computes the statistics; the others read them, so all
     * three measure on the same Hessians (and name the same source). */
    char *a = spec_of("gptq_act", TMP "act.csv"), *b = spec_of("gptq_act", TMP "act-tasks.csv");
    char *n = spec_of("gptq", TMP "nat.csv");
    free(run_direct(n));
    g_plan_act = run_direct(a);
    g_plan_act_tasks = run_tasks(b);
    free(a);
    free(b);
    free(n);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_plan_act);
    free(g_plan_act_tasks);
    return 0;
}

static bp_calib *open_calib(bp_llama *llama)
{
    bp_calib_spec cs;
    bp_calib_spec_default(&cs);
    cs.stats_path = STATS;
    cs.quiet = 1;
    bp_calib *calib = NULL;
    bp_error e;
    if (bp_calib_open(&cs, llama, NULL, 0, &calib, &e) != BP_OK)
        fail_msg("calib: %s", e.msg);
    return calib;
}

/* Metric gptq with an explicit method gptq_act measures act-order GPTQ:
 * every plan tensor and table row says so, and the task path gives the
 * same plan as the direct one. */
static void test_plan_records_gptq_act(void **state)
{
    (void)state;
    bp_error e;
    bp_plan *plan = NULL;
    assert_int_equal(bp_plan_from_string(g_plan_act, "act", &plan, &e), BP_OK);
    assert_true(bp_plan_tensor_count(plan) > 1);
    for (size_t i = 0; i < bp_plan_tensor_count(plan); i++) {
        bp_plan_tensor pt;
        bp_plan_tensor_get(plan, i, &pt);
        if (pt.method != BP_METHOD_GPTQ_ACT)
            fail_msg("%s: method %d", pt.name, (int)pt.method);
        assert_false(isnan(pt.predicted_error));
    }
    bp_plan_destroy(&plan);
    assert_non_null(strstr(g_plan_act, "\"gptq_act\""));
    assert_same_text("plans (direct, tasks)", g_plan_act, g_plan_act_tasks);

    bp_table *t = NULL;
    assert_int_equal(bp_table_read(TMP "act.csv", &t, &e), BP_OK);
    assert_true(bp_table_count(t) > 0);
    for (size_t r = 0; r < bp_table_count(t); r++) {
        bp_table_row row;
        bp_table_get_row(t, r, &row);
        assert_int_equal(row.method, BP_METHOD_GPTQ_ACT);
        assert_false(isnan(row.metric[BP_METRIC_GPTQ]));
    }
    bp_table_destroy(&t);
}

/* Applying the act-order plan and re-measuring the layer output error of
 * the packed weights reproduces every predicted error exactly. */
static void test_apply_reproduces_prediction(void **state)
{
    (void)state;
    bp_error e;
    bp_plan *plan = NULL;
    bp_model *model = NULL;
    bp_llama *llama = NULL;
    assert_int_equal(bp_plan_from_string(g_plan_act, "act", &plan, &e), BP_OK);
    assert_int_equal(bp_model_open(MODEL, &model, &e), BP_OK);
    assert_int_equal(bp_llama_new(model, &llama, &e), BP_OK);
    bp_calib *calib = open_calib(llama);
    for (size_t i = 0; i < bp_plan_tensor_count(plan); i++) {
        bp_plan_tensor pt;
        bp_plan_tensor_get(plan, i, &pt);
        const bp_tensor_info *src = bp_model_tensor(model, (size_t)bp_model_find(model, pt.name));
        size_t n = (size_t)(pt.rows * pt.cols);
        double *h = NULL;
        assert_int_equal(bp_calib_hessian_full(calib, bp_llama_get_config(llama), pt.name, pt.cols, &h, &e), BP_OK);
        bp_format f;
        assert_int_equal(bp_format_parse(pt.format, &f, &e), BP_OK);
        uint8_t *packed = malloc(pt.bytes);
        float *w = malloc(n * sizeof *w), *deq = malloc(n * sizeof *deq), *unp = malloc(n * sizeof *unp);
        uint16_t *codes = malloc(n * sizeof *codes);
        bp_qparams *par = malloc((size_t)(pt.rows * bp_format_groups_per_row(&f, pt.cols)) * sizeof *par);
        assert_true(packed && w && deq && unp && codes && par);
        if (bp_apply_plan_tensor(src, &pt, h, packed, pt.bytes, deq, &e) != BP_OK)
            fail_msg("apply %s: %s", pt.name, e.msg);
        float tp;
        assert_int_equal(bp_format_unpack(&f, pt.rows, pt.cols, packed, pt.bytes, codes, par, &tp, &e), BP_OK);
        bp_format_dequantize_rows(&f, codes, par, pt.rows, pt.cols, unp);
        assert_memory_equal(unp, deq, n * sizeof *deq);
        assert_int_equal(bp_tensor_rows_f32(src, 0, pt.rows, w, &e), BP_OK);
        double acc = 0;
        assert_int_equal(bp_quant_hfull_rows(w, unp, pt.rows, pt.cols, h, NULL, &acc, &e), BP_OK);
        if (acc != pt.predicted_error)
            fail_msg("%s: re-measured %.17g, predicted %.17g", pt.name, acc, pt.predicted_error);
        /* The natural-order weights of the same format are other weights. */
        assert_int_equal(bp_apply_tensor(src, &f, BP_METHOD_GPTQ, h, NULL, 0, deq, &e), BP_OK);
        assert_true(memcmp(unp, deq, n * sizeof *deq) != 0);
        free(h);
        free(packed);
        free(w);
        free(deq);
        free(unp);
        free(codes);
        free(par);
    }
    bp_calib_destroy(&calib);
    bp_llama_destroy(&llama);
    bp_model_destroy(&model);
    bp_plan_destroy(&plan);
}

/* Sum of the gptq metric of format fmt over a table's rows of method m;
 * *n counts them. */
static double total_of(const bp_table *t, const char *fmt, bp_quant_method m, size_t *n)
{
    double s = 0.0;
    *n = 0;
    for (size_t r = 0; r < bp_table_count(t); r++) {
        bp_table_row row;
        bp_table_get_row(t, r, &row);
        if (row.method == m && !strcmp(row.format, fmt)) {
            s += row.metric[BP_METRIC_GPTQ];
            (*n)++;
        }
    }
    return s;
}

/* docs/gptq.md section 3: act-order cuts the 3-bit layer error. The two
 * tables differ tensor by tensor and act-order's total is lower. */
static void test_act_order_lowers_int3_error(void **state)
{
    (void)state;
    bp_error e;
    bp_table *act = NULL, *nat = NULL;
    assert_int_equal(bp_table_read(TMP "act.csv", &act, &e), BP_OK);
    assert_int_equal(bp_table_read(TMP "nat.csv", &nat, &e), BP_OK);
    size_t na, nn, differ = 0;
    double ta = total_of(act, "int3_g128_asym", BP_METHOD_GPTQ_ACT, &na);
    double tn = total_of(nat, "int3_g128_asym", BP_METHOD_GPTQ, &nn);
    assert_true(na > 0);
    assert_int_equal(na, nn);
    for (size_t r = 0; r < bp_table_count(act); r++) {
        bp_table_row a, b;
        bp_table_get_row(act, r, &a);
        long k = bp_table_find(nat, a.tensor, NULL, a.format, BP_METHOD_GPTQ);
        assert_true(k >= 0);
        bp_table_get_row(nat, (size_t)k, &b);
        assert_int_equal(a.bytes, b.bytes);
        differ += a.metric[BP_METRIC_GPTQ] != b.metric[BP_METRIC_GPTQ];
    }
    assert_true(differ > 0);
    if (!(ta < tn))
        fail_msg("int3_g128_asym: act-order total %.17g, natural %.17g", ta, tn);
    bp_table_destroy(&act);
    bp_table_destroy(&nat);
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    fclose(fp);
}

static void test_names_and_flags(void **state)
{
    (void)state;
    assert_string_equal(bp_table_method_name(BP_METHOD_GPTQ_ACT), "gptq_act");
    assert_int_equal(bp_table_method_from_name("gptq_act"), BP_METHOD_GPTQ_ACT);
    assert_int_equal(bp_table_method_from_name("gptq_ac"), -1);
    assert_null(bp_table_method_name((bp_quant_method)BP_METHOD_COUNT));
    assert_false(bp_method_is_gptq(BP_METHOD_RTN));
    assert_true(bp_method_is_gptq(BP_METHOD_GPTQ));
    assert_true(bp_method_is_gptq(BP_METHOD_GPTQ_ACT));
    assert_int_equal(bp_method_gptq_flags(BP_METHOD_RTN), 0);
    assert_int_equal(bp_method_gptq_flags(BP_METHOD_GPTQ), 0);
    assert_int_equal(bp_method_gptq_flags(BP_METHOD_GPTQ_ACT), BP_GPTQ_ACT_ORDER);
}

/* A table file keeps "gptq_act"; an unknown method is an error naming
 * the file, the column and the value. */
static void test_table_file_method(void **state)
{
    (void)state;
    bp_error e;
    bp_table *t = bp_table_new();
    assert_non_null(t);
    bp_table_row row;
    bp_table_row_init(&row);
    row.tensor = "a.weight";
    row.format = "int3_g128_asym";
    row.method = BP_METHOD_GPTQ_ACT;
    row.bytes = 100;
    row.metric[BP_METRIC_GPTQ] = 0.5;
    assert_int_equal(bp_table_add_row(t, &row, &e), BP_OK);
    row.method = BP_METHOD_GPTQ;
    row.metric[BP_METRIC_GPTQ] = 0.75;
    assert_int_equal(bp_table_add_row(t, &row, &e), BP_OK);
    assert_int_equal(bp_table_write(t, TMP "rt.csv", &e), BP_OK);
    bp_table_destroy(&t);
    assert_int_equal(bp_table_read(TMP "rt.csv", &t, &e), BP_OK);
    long k = bp_table_find(t, "a.weight", NULL, "int3_g128_asym", BP_METHOD_GPTQ_ACT);
    assert_true(k >= 0);
    bp_table_get_row(t, (size_t)k, &row);
    assert_true(row.metric[BP_METRIC_GPTQ] == 0.5);
    bp_table_destroy(&t);

    write_file(TMP "bad.csv", "# bitplan.table/v1\ntensor,format,method,bytes,gptq\n"
                              "a.weight,int3_g128_asym,gptq_actorder,100,0.5\n");
    t = (bp_table *)1;
    assert_int_equal(bp_table_read(TMP "bad.csv", &t, &e), BP_EFORMAT);
    assert_null(t);
    assert_non_null(strstr(e.msg, "bad.csv"));
    assert_non_null(strstr(e.msg, "unknown method \"gptq_actorder\""));
}

/* A plan file keeps "gptq_act"; an unknown method names the field. */
static void test_plan_file_method(void **state)
{
    (void)state;
    bp_error e;
    bp_plan *p = NULL;
    assert_int_equal(bp_plan_from_string(g_plan_act, "act", &p, &e), BP_OK);
    char *again = bp_plan_to_string(p, &e);
    assert_non_null(again);
    assert_string_equal(again, g_plan_act);
    free(again);
    bp_plan_destroy(&p);

    char *bad = strdup(g_plan_act);
    assert_non_null(bad);
    char *at = strstr(bad, "\"gptq_act\"");
    assert_non_null(at);
    memcpy(at + 1, "gptq_xyz", 8);
    p = (bp_plan *)1;
    assert_int_equal(bp_plan_from_string(bad, "bad.json", &p, &e), BP_EFORMAT);
    assert_null(p);
    assert_non_null(strstr(e.msg, "bad.json"));
    assert_non_null(strstr(e.msg, ".method"));
    assert_non_null(strstr(e.msg, "gptq_xyz"));
    free(bad);
}

/* Run a task kind on params {"model", "tensor", "method", and for
 * measure_blocks "formats", "axis", "size"}. */
static int run_task(const char *kind, const char *method, bp_error *err)
{
    msgpack_sbuffer sb, rb;
    msgpack_sbuffer_init(&sb);
    msgpack_sbuffer_init(&rb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int blocks = !strcmp(kind, "measure_blocks");
    const char *kv[][2] = {{"model", MODEL}, {"tensor", TENSOR}, {"method", method}, {"axis", "rows"}};
    size_t nkv = blocks ? 4 : 3;
    msgpack_pack_map(&pk, nkv + 2);
    for (size_t i = 0; i < nkv; i++) {
        msgpack_pack_str_with_body(&pk, kv[i][0], strlen(kv[i][0]));
        msgpack_pack_str_with_body(&pk, kv[i][1], strlen(kv[i][1]));
    }
    msgpack_pack_str_with_body(&pk, "formats", 7);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_str_with_body(&pk, "int3_g128_asym", 14);
    if (blocks) {
        msgpack_pack_str_with_body(&pk, "size", 4);
        msgpack_pack_int64(&pk, 64);
    } else {
        msgpack_pack_str_with_body(&pk, "rows", 4);
        msgpack_pack_int64(&pk, 384);
    }
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
    msgpack_packer rk;
    msgpack_packer_init(&rk, &rb, msgpack_sbuffer_write);
    _Atomic uint64_t progress = 0;
    bp_task_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.params = &up.data;
    ctx.progress = &progress;
    ctx.result = &rk;
    bp_task_fn fn = bp_task_lookup(kind);
    assert_non_null(fn);
    int rc = fn(&ctx, err);
    bp_task_ctx_free_bins(&ctx);
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&rb);
    return rc;
}

/* Task params come from the network: an unknown method is an error naming
 * it; gptq_act without the Hessians is refused, not crashed on. */
static void test_task_params_method(void **state)
{
    (void)state;
    const char *kinds[] = {"measure", "measure_blocks"};
    for (size_t i = 0; i < 2; i++) {
        bp_error e;
        bp_error_clear(&e);
        assert_int_equal(run_task(kinds[i], "gptq_fancy", &e), BP_EINVAL);
        if (!strstr(e.msg, "unknown method 'gptq_fancy'"))
            fail_msg("%s: %s", kinds[i], e.msg);
        bp_error_clear(&e);
        assert_int_equal(run_task(kinds[i], "gptq_act", &e), BP_EINVAL);
        assert_non_null(strstr(e.msg, "stats"));
    }
}

/* Cols-axis blocks are quantized in one natural-order pass: gptq_act with
 * them is refused by the spec check, block measurement and apply, with a
 * message naming both; the rows axis is accepted. */
static void test_cols_blocks_refused(void **state)
{
    (void)state;
    static const char *const cut[] = {"\"block_axis\":\"cols\"", "\"block_axis\":\"rows\""};
    for (int k = 0; k < 2; k++) {
        char spec[2048];
        snprintf(spec, sizeof spec,
                 "{\"kind\":\"plan\",\"model\":\"" MODEL "\",\"budget\":{\"bits\":3.5}," FORMATS
                 ",\"method\":\"gptq_act\",\"granularity\":\"block\",\"block_size\":64,%s}",
                 cut[k]);
        bp_error e;
        bp_job_spec_doc *doc = NULL;
        int rc = bp_job_spec_parse(spec, strlen(spec), "job.json", &doc, &e);
        if (k == 0) {
            assert_int_equal(rc, BP_EINVAL);
            assert_null(doc);
            assert_non_null(strstr(e.msg, "gptq_act"));
            assert_non_null(strstr(e.msg, "--block-axis cols"));
        } else {
            if (rc != BP_OK)
                fail_msg("rows axis: %s", e.msg);
            bp_job_spec_doc_destroy(&doc);
        }
    }

    bp_error e;
    bp_model *model = NULL;
    assert_int_equal(bp_model_open(MODEL, &model, &e), BP_OK);
    const bp_tensor_info *t = bp_model_tensor(model, (size_t)bp_model_find(model, TENSOR));
    double *h = calloc(128 * 128, sizeof *h);
    assert_non_null(h);
    for (int j = 0; j < 128; j++)
        h[j * 128 + j] = 1.0 + j;
    const char *fmts[] = {"int3_g64_asym"};
    bp_plan_run run = {0, 2};
    bp_plan_blocks b = {BP_BLOCK_AXIS_COLS, 64, fmts, 1, &run, 1};
    float *deq = malloc(384 * 128 * sizeof *deq);
    assert_non_null(deq);
    assert_int_equal(bp_apply_tensor_blocks(t, &b, BP_METHOD_GPTQ_ACT, h, NULL, 0, deq, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "gptq_act"));
    assert_non_null(strstr(e.msg, "cols-axis"));
    assert_int_equal(bp_apply_tensor_blocks(t, &b, BP_METHOD_GPTQ, h, NULL, 0, deq, &e), BP_OK);
    bp_format f;
    assert_int_equal(bp_format_parse("int3_g64_asym", &f, &e), BP_OK);
    bp_block_measure *bm = NULL;
    assert_int_equal(bp_measure_blocks(t, BP_BLOCK_AXIS_COLS, 64, &f, 1, NULL, h, BP_METHOD_GPTQ_ACT, &bm, &e),
                     BP_EINVAL);
    assert_null(bm);
    assert_non_null(strstr(e.msg, "gptq_act"));
    free(deq);
    free(h);
    bp_model_destroy(&model);
}

/* Rows axis: each row block is quantized with the tensor's act-order
 * factor, so the measured cells equal the error of the applied map, a
 * uniform map gives the unblocked act-order weights, and the cells differ
 * from natural order's. */
static void test_rows_blocks_gptq_act(void **state)
{
    (void)state;
    bp_error e;
    bp_model *model = NULL;
    bp_llama *llama = NULL;
    assert_int_equal(bp_model_open(MODEL, &model, &e), BP_OK);
    assert_int_equal(bp_llama_new(model, &llama, &e), BP_OK);
    bp_calib *calib = open_calib(llama);
    const bp_tensor_info *t = bp_model_tensor(model, (size_t)bp_model_find(model, TENSOR));
    double *h = NULL;
    assert_int_equal(bp_calib_hessian_full(calib, bp_llama_get_config(llama), TENSOR, 128, &h, &e), BP_OK);
    bp_format fm[2];
    assert_int_equal(bp_format_parse("int3_g128_asym", &fm[0], &e), BP_OK);
    assert_int_equal(bp_format_parse("int4_g128_asym", &fm[1], &e), BP_OK);
    bp_block_measure *act = NULL, *nat = NULL;
    assert_int_equal(bp_measure_blocks(t, BP_BLOCK_AXIS_ROWS, 64, fm, 2, NULL, h, BP_METHOD_GPTQ_ACT, &act, &e),
                     BP_OK);
    assert_int_equal(bp_measure_blocks(t, BP_BLOCK_AXIS_ROWS, 64, fm, 2, NULL, h, BP_METHOD_GPTQ, &nat, &e), BP_OK);
    assert_int_equal(act->n_blocks, 6);
    size_t n = 384 * 128;
    float *w = malloc(n * sizeof *w), *deq = malloc(n * sizeof *deq), *whole = malloc(n * sizeof *whole);
    double hfull[6];
    assert_true(w && deq && whole);
    assert_int_equal(bp_tensor_rows_f32(t, 0, 384, w, &e), BP_OK);
    /* Alternating formats: int3, int4, int3, ... */
    const char *names[] = {"int3_g128_asym", "int4_g128_asym"};
    bp_plan_run runs[6];
    for (int i = 0; i < 6; i++)
        runs[i] = (bp_plan_run){(uint32_t)(i % 2), 1};
    bp_plan_blocks b = {BP_BLOCK_AXIS_ROWS, 64, names, 2, runs, 6};
    assert_int_equal(bp_apply_tensor_blocks(t, &b, BP_METHOD_GPTQ_ACT, h, NULL, 0, deq, &e), BP_OK);
    assert_int_equal(bp_blocks_error(w, deq, 384, 128, BP_BLOCK_AXIS_ROWS, 64, NULL, h, NULL, NULL, hfull, &e),
                     BP_OK);
    size_t differ = 0;
    for (int i = 0; i < 6; i++) {
        size_t c = bp_block_measure_cell(act, i, (size_t)(i % 2));
        if (hfull[i] != act->gptq[c])
            fail_msg("block %d: applied %.17g, measured %.17g", i, hfull[i], act->gptq[c]);
        for (size_t k = 0; k < 2; k++)
            differ += act->gptq[bp_block_measure_cell(act, i, k)] != nat->gptq[bp_block_measure_cell(nat, i, k)];
    }
    assert_true(differ > 0);
    /* One format everywhere: the unblocked tensor's act-order weights. */
    bp_plan_run one = {0, 6};
    bp_plan_blocks u = {BP_BLOCK_AXIS_ROWS, 64, names, 1, &one, 1};
    assert_int_equal(bp_apply_tensor_blocks(t, &u, BP_METHOD_GPTQ_ACT, h, NULL, 0, deq, &e), BP_OK);
    assert_int_equal(bp_apply_tensor(t, &fm[0], BP_METHOD_GPTQ_ACT, h, NULL, 0, whole, &e), BP_OK);
    assert_memory_equal(deq, whole, n * sizeof *deq);
    free(w);
    free(deq);
    free(whole);
    free(h);
    bp_block_measure_destroy(&act);
    bp_block_measure_destroy(&nat);
    bp_calib_destroy(&calib);
    bp_llama_destroy(&llama);
    bp_model_destroy(&model);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_records_gptq_act),
        cmocka_unit_test(test_apply_reproduces_prediction),
        cmocka_unit_test(test_act_order_lowers_int3_error),
        cmocka_unit_test(test_names_and_flags),
        cmocka_unit_test(test_table_file_method),
        cmocka_unit_test(test_plan_file_method),
        cmocka_unit_test(test_task_params_method),
        cmocka_unit_test(test_cols_blocks_refused),
        cmocka_unit_test(test_rows_blocks_gptq_act),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
