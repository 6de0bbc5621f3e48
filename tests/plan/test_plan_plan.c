/* Tests for plan files (optimizer/plan/plan.c). */
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

#include "bitplan/format.h"
#include "bitplan/plan.h"

static const char *const blk_formats[] = {"int4_g128_asym", "int8_g128_sym"};
static const bp_plan_run blk_runs[] = {{0, 1}, {1, 1}, {0, 1}};

static uint64_t fbytes(const char *name, int64_t r, int64_t c)
{
    bp_format f;
    assert_int_equal(bp_format_parse(name, &f, NULL), BP_OK);
    return bp_format_bytes(&f, r, c);
}

/* A small complete plan: three tensors added out of name order, one with
 * blocks, one gptq, one with an unknown predicted error. */
static bp_plan *make_plan(void)
{
    bp_plan *p = bp_plan_new();
    assert_non_null(p);
    bp_error e;
    bp_plan_tensor t = {0};
    t.name = "model.layers.0.self_attn.q_proj.weight";
    t.rows = 128;
    t.cols = 128;
    t.dtype = "BF16";
    t.format = "int8_pc_sym";
    t.method = BP_METHOD_GPTQ;
    t.predicted_error = 0.1 + 0.2;
    if (bp_plan_add_tensor(p, &t, &e))
        fail_msg("%s", e.msg);
    t.name = "lm_head.weight";
    t.rows = 256;
    t.format = "nvfp4";
    t.method = BP_METHOD_RTN;
    t.predicted_error = NAN;
    if (bp_plan_add_tensor(p, &t, &e))
        fail_msg("%s", e.msg);
    bp_plan_blocks b = {BP_BLOCK_AXIS_COLS, 128, blk_formats, 2, blk_runs, 3};
    t.name = "model.layers.0.mlp.down_proj.weight";
    t.rows = 128;
    t.cols = 384;
    t.format = "int4_g128_asym";
    t.predicted_error = 1.0 / 3.0;
    t.blocks = &b;
    if (bp_plan_add_tensor(p, &t, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(bp_plan_set_tool(p, "bitplan", "0.1.0", &e), BP_OK);
    assert_int_equal(bp_plan_set_model(p, "examples/models/tiny", "blake2b256:00ff", &e), BP_OK);
    assert_int_equal(bp_plan_set_calibration(p, NULL, "calib.txt, 256 KiB", &e), BP_OK);
    assert_int_equal(bp_plan_set_metric(p, BP_METRIC_HDIAG, &e), BP_OK);
    /* params 98304; 8 bits per weight */
    assert_int_equal(bp_plan_set_budget(p, BP_BUDGET_BITS, 8.0, 98304, &e), BP_OK);
    assert_int_equal(bp_plan_set_solver(p, "glpk-ilp", "optimal", 0.1 + 0.2 + 1.0 / 3.0,
                                        0.6, 0.0, &e),
                     BP_OK);
    return p;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = '\0';
    fclose(f);
    return b;
}

static void test_build_and_accessors(void **state)
{
    (void)state;
    bp_plan *p = make_plan();
    assert_int_equal(bp_plan_tensor_count(p), 3);
    bp_plan_tensor t;
    assert_int_equal(bp_plan_tensor_get(p, 0, &t), BP_OK);
    assert_string_equal(t.name, "lm_head.weight"); /* name order */
    assert_int_equal(t.bytes, fbytes("nvfp4", 256, 128));
    assert_true(t.bits_per_weight == 8.0 * (double)t.bytes / (256.0 * 128.0));
    assert_true(isnan(t.predicted_error));
    assert_null(t.blocks);
    assert_int_equal(bp_plan_tensor_get(p, 1, &t), BP_OK);
    assert_string_equal(t.name, "model.layers.0.mlp.down_proj.weight");
    assert_non_null(t.blocks);
    assert_int_equal(t.blocks->n_runs, 3);
    assert_int_equal(t.bytes, 2 * fbytes("int4_g128_asym", 128, 128) +
                                  fbytes("int8_g128_sym", 128, 128));
    assert_int_equal(bp_plan_tensor_find(p, "model.layers.0.self_attn.q_proj.weight"), 2);
    assert_int_equal(bp_plan_tensor_find(p, "nope"), -1);
    assert_int_equal(bp_plan_tensor_get(p, 3, &t), BP_EINVAL);
    bp_plan_info in;
    bp_plan_get_info(p, &in);
    assert_int_equal(in.params, 98304);
    assert_string_equal(in.tool_name, "bitplan");
    assert_null(in.calibration_hash);
    assert_int_equal(in.metric, BP_METRIC_HDIAG);
    assert_true(in.achieved_bytes < in.asked_bytes);
    assert_true(in.deterministic);
    bp_plan_destroy(&p);
    bp_plan_destroy(&p);
}

static void test_round_trip_and_determinism(void **state)
{
    (void)state;
    bp_plan *p = make_plan();
    bp_error e;
    assert_int_equal(bp_plan_set_timing(p, "solve", 1.25, &e), BP_OK);
    assert_int_equal(bp_plan_set_search_json(p, "{\"z\": 1, \"a\": [0.1, null]}", &e), BP_OK);
    const char *p1 = BP_TEST_TMPDIR "/plan_rt1.json", *p2 = BP_TEST_TMPDIR "/plan_rt2.json";
    assert_int_equal(bp_plan_write(p, p1, &e), BP_OK);
    assert_int_equal(bp_plan_write(p, p2, &e), BP_OK);
    char *a = slurp(p1), *b = slurp(p2);
    assert_string_equal(a, b);
    assert_null(strstr(a, "timing")); /* deterministic by default */
    assert_non_null(strstr(a, "\"schema\": \"bitplan.plan/v1\",\n  \"tool\""));
    assert_non_null(strstr(a, "\"predicted_error\": null"));
    assert_non_null(strstr(a, "\"hash\": null"));
    /* Search keeps its own key order. */
    assert_true(strstr(a, "\"z\"") < strstr(a, "\"a\""));
    char *s = bp_plan_to_string(p, &e);
    assert_string_equal(s, a);
    free(b);

    bp_plan *q = NULL;
    int rc = bp_plan_read(p1, &q, &e);
    if (rc)
        fail_msg("%s", e.msg);
    char *s2 = bp_plan_to_string(q, &e);
    assert_string_equal(s2, s); /* bit-exact doubles, same everything */
    bp_plan_tensor t;
    assert_int_equal(bp_plan_tensor_get(q, 2, &t), BP_OK);
    double want = 0.1 + 0.2;
    assert_memory_equal(&t.predicted_error, &want, sizeof want);
    assert_int_equal(t.method, BP_METHOD_GPTQ);
    char *sj = bp_plan_search_json(q);
    assert_string_equal(sj, "{\"z\":1,\"a\":[0.10000000000000001,null]}");
    free(sj);
    free(s2);
    bp_plan_destroy(&q);

    /* Timing appears only when the deterministic flag is cleared, and it
     * survives a read (which keeps the plan non-deterministic). */
    bp_plan_set_deterministic(p, 0);
    char *nd = bp_plan_to_string(p, &e);
    assert_non_null(strstr(nd, "\"timing\": {\n    \"solve\": 1.25\n  }"));
    assert_int_equal(bp_plan_from_string(nd, "nd.json", &q, &e), BP_OK);
    const char *key;
    double sec;
    assert_int_equal(bp_plan_timing_at(q, 0, &key, &sec), BP_OK);
    assert_string_equal(key, "solve");
    assert_true(sec == 1.25);
    char *nd2 = bp_plan_to_string(q, &e);
    assert_string_equal(nd, nd2);
    free(nd2);
    free(nd);
    bp_plan_destroy(&q);
    free(s);
    free(a);

    assert_int_equal(bp_plan_write(p, BP_TEST_TMPDIR "/no/such/dir/plan.json", &e), BP_EIO);
    assert_non_null(strstr(e.msg, "no/such/dir/plan.json"));
    assert_int_equal(bp_plan_read(BP_TEST_TMPDIR "/absent.json", &q, &e), BP_ENOTFOUND);
    bp_plan_destroy(&p);
}

/* Mutations of a valid plan and the message each must produce. */
static json_t *tensor(json_t *root, size_t i)
{
    return json_array_get(json_object_get(root, "tensors"), i);
}

static void mutate(int k, json_t *root)
{
    json_t *t0 = tensor(root, 0), *t1 = tensor(root, 1), *t2 = tensor(root, 2);
    json_t *budget = json_object_get(root, "budget");
    json_t *blocks = json_object_get(t1, "blocks");
    switch (k) {
    case 0: json_object_set_new(root, "schema", json_string("bitplan.plan/v2")); break;
    case 1: json_object_set_new(t2, "format", json_string("int9")); break;
    case 2: json_object_set_new(t0, "bytes", json_integer(12345)); break;
    case 3: json_array_set_new(json_object_get(t0, "shape"), 0, json_integer(-256)); break;
    case 4: json_array_append(json_object_get(root, "tensors"), t0); break;
    case 5: json_object_set_new(t2, "predicted_error", json_real(-1.0)); break;
    case 6:
        json_object_set_new(json_object_get(budget, "achieved"), "bytes", json_integer(1));
        break;
    case 7: json_object_set_new(budget, "params", json_integer(7)); break;
    case 8: json_object_set_new(t2, "fromat", json_string("int4_g128_sym")); break;
    case 9: json_object_del(root, "solver"); break;
    case 10:
        json_object_set_new(json_object_get(root, "solver"), "status", json_string("infeasible"));
        break;
    case 11: json_object_set_new(root, "metric", json_string("latency_us")); break;
    case 12: json_object_set_new(t2, "method", json_string("awq")); break;
    case 13: json_object_set_new(t0, "bits_per_weight", json_real(4.5)); break;
    case 14:
        json_object_set_new(json_object_get(budget, "asked"), "bytes", json_integer(1000));
        json_object_set_new(json_object_get(budget, "asked"), "bits", json_real(8000.0 / 98304));
        json_object_set_new(budget, "given", json_string("bytes"));
        break;
    case 15: json_array_set_new(json_object_get(blocks, "runs"), 2, json_pack("[i,i]", 0, 2)); break;
    case 16: json_array_set_new(json_object_get(blocks, "runs"), 1, json_pack("[i,i]", 2, 1)); break;
    case 17: json_array_set_new(json_object_get(blocks, "runs"), 1, json_pack("[i,i]", 1, 0)); break;
    case 18: json_object_set_new(blocks, "size", json_integer(100)); break;
    case 19: json_object_set_new(t1, "format", json_string("int8_g128_sym")); break;
    case 20: json_object_set_new(blocks, "axis", json_string("diag")); break;
    case 21: json_object_set_new(t0, "shape", json_pack("[i,i]", 256, 100)); break;
    case 22: json_object_set_new(json_object_get(budget, "asked"), "bytes", json_integer(90000)); break;
    case 23: json_object_set_new(root, "tensors", json_array()); break;
    case 24: json_object_set_new(json_object_get(root, "model"), "path", json_integer(3)); break;
    case 25: json_object_set_new(root, "timing", json_pack("{s:s}", "solve", "fast")); break;
    case 26:
        json_array_set_new(json_object_get(blocks, "formats"), 1, json_string("int4_g128_asym"));
        break;
    }
}

typedef struct bad_case {
    const char *msg;
} bad_case;

static const char *const bad_msgs[] = {
    "plan.json: schema: unsupported version \"bitplan.plan/v2\"",
    "plan.json: tensors[2].format: unknown format \"int9\"",
    "plan.json: tensors[0].bytes: 12345 does not match nvfp4 on [256, 128]",
    "plan.json: tensors[0].shape: dimensions must be positive",
    "plan.json: tensors[3].name: duplicate tensor \"lm_head.weight\"",
    "plan.json: tensors[2].predicted_error: must be finite and >= 0, or null",
    "plan.json: budget.achieved.bytes: 1 does not match the sum of tensor bytes",
    "plan.json: budget.params: 7 does not match the tensors' 98304 weights",
    "plan.json: tensors[2]: unknown key \"fromat\"",
    "plan.json: solver: missing",
    "solver.status: must be \"optimal\" or \"feasible\" (got \"infeasible\")",
    "plan.json: metric: unknown metric \"latency_us\"",
    "plan.json: tensors[2].method: must be \"rtn\", \"gptq\" or \"gptq_act\" (got \"awq\")",
    "plan.json: tensors[0].bits_per_weight: 4.5 does not match",
    "plan.json: budget: achieved",
    "plan.json: tensors[1].blocks.runs[2]: counts exceed the 3 blocks",
    "plan.json: tensors[1].blocks.runs[1]: format index 2 out of range (2 formats)",
    "plan.json: tensors[1].blocks.runs[1]: count must be >= 1",
    "plan.json: tensors[1].blocks.size: 100 must be > 0 and divide the cols dimension 384",
    "plan.json: tensors[1].format: \"int8_g128_sym\" must be the format covering the most blocks",
    "plan.json: tensors[1].blocks.axis: must be \"cols\" or \"rows\"",
    "plan.json: tensors[0].format: nvfp4 does not support shape [256, 100]",
    "plan.json: budget.asked.bytes: 90000 does not match 8 bits x 98304 weights",
    "plan.json: tensors: must be a non-empty array",
    "plan.json: model.path: must be a string",
    "plan.json: timing.solve: must be a number",
    "plan.json: tensors[1].blocks.formats[1]: \"int4_g128_asym\" listed twice",
};

static void test_malformed(void **state)
{
    (void)state;
    bp_plan *p = make_plan();
    bp_error e;
    char *base = bp_plan_to_string(p, &e);
    assert_non_null(base);
    bp_plan_destroy(&p);
    size_t n = sizeof bad_msgs / sizeof bad_msgs[0];
    for (size_t k = 0; k < n; k++) {
        json_t *root = json_loads(base, 0, NULL);
        assert_non_null(root);
        mutate((int)k, root);
        char *text = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
        json_decref(root);
        bp_plan *q = (bp_plan *)1;
        bp_error_clear(&e);
        int rc = bp_plan_from_string(text, "plan.json", &q, &e);
        free(text);
        if (rc != BP_EFORMAT || !strstr(e.msg, bad_msgs[k]) || q)
            fail_msg("case %zu: rc %d \"%s\" (want \"%s\")", k, rc, e.msg, bad_msgs[k]);
    }
    /* Text-level problems. */
    static const char *const texts[][2] = {
        {"{\"schema\": \"bitplan.plan/v1\",", "plan.json:1:"},
        {"{\"schema\": \"bitplan.plan/v1\", \"schema\": \"bitplan.plan/v1\"}", "invalid JSON"},
        {"[]", "plan.json: must be an object"},
        {"{\"schema\": \"something\"}", "schema: must be \"bitplan.plan/v1\""},
        {"{\"schema\": \"bitplan.plan/v1\", \"tool\": {\"name\": \"x\", \"version\": \"1\"}, "
         "\"extra\": 1}",
         "plan.json: unknown key \"extra\""},
        {"{\"schema\": \"bitplan.plan/v1\", \"tool\": {\"name\": \"x\", \"version\": \"1\"}, "
         "\"predicted\": NaN}",
         "invalid JSON"},
    };
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        bp_plan *q = NULL;
        int rc = bp_plan_from_string(texts[k][0], "plan.json", &q, &e);
        if (rc != BP_EFORMAT || !strstr(e.msg, texts[k][1]))
            fail_msg("text %zu: rc %d \"%s\" (want \"%s\")", k, rc, e.msg, texts[k][1]);
    }
    free(base);
}

static void test_blocks_validate(void **state)
{
    (void)state;
    bp_error e;
    uint64_t bytes;
    size_t dom;
    const char *const f3[] = {"int4_g64_sym", "int8_pc_sym", "int2_g32_asym"};
    bp_plan_run runs[] = {{1, 2}, {0, 3}, {2, 1}, {0, 2}};
    bp_plan_blocks b = {BP_BLOCK_AXIS_ROWS, 64, f3, 3, runs, 4};
    assert_int_equal(bp_plan_blocks_validate(&b, 512, 256, &bytes, &dom, &e), BP_OK);
    assert_int_equal(dom, 0); /* 5 blocks of int4_g64_sym */
    assert_int_equal(bytes, 5 * fbytes("int4_g64_sym", 64, 256) +
                                2 * fbytes("int8_pc_sym", 64, 256) +
                                fbytes("int2_g32_asym", 64, 256));
    /* Ties go to the lowest index. */
    bp_plan_run tie[] = {{1, 4}, {0, 4}};
    bp_plan_blocks bt = {BP_BLOCK_AXIS_ROWS, 64, f3, 3, tie, 2};
    assert_int_equal(bp_plan_blocks_validate(&bt, 512, 256, NULL, &dom, &e), BP_OK);
    assert_int_equal(dom, 0);

    struct {
        bp_plan_blocks b;
        int64_t rows, cols;
        const char *msg;
    } bad[] = {
        {{BP_BLOCK_AXIS_ROWS, 64, f3, 3, runs, 3}, 512, 256,
         "blocks.runs: counts sum to 6, but there are 8 blocks"},
        {{BP_BLOCK_AXIS_ROWS, 64, f3, 2, runs, 4}, 512, 256,
         "blocks.runs[2]: format index 2 out of range (2 formats)"},
        {{BP_BLOCK_AXIS_ROWS, 64, f3, 3, runs, 4}, 448, 256, "counts exceed the 7 blocks"},
        {{BP_BLOCK_AXIS_ROWS, 60, f3, 3, runs, 4}, 512, 256,
         "blocks.size: 60 must be > 0 and divide the rows dimension 512"},
        {{BP_BLOCK_AXIS_COLS, 32, f3, 3, runs, 4}, 64, 256,
         "blocks.formats[0]: int4_g64_sym does not support blocks of [64, 32]"},
        {{BP_BLOCK_AXIS_ROWS, 64, f3, 0, runs, 4}, 512, 256, "blocks.formats: must list"},
        {{BP_BLOCK_AXIS_ROWS, 64, f3, 3, runs, 0}, 512, 256, "blocks.runs: must have"},
        {{(bp_block_axis)7, 64, f3, 3, runs, 4}, 512, 256, "blocks.axis"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        int rc = bp_plan_blocks_validate(&bad[k].b, bad[k].rows, bad[k].cols, &bytes, NULL, &e);
        if (rc != BP_EINVAL || !strstr(e.msg, bad[k].msg))
            fail_msg("blocks case %zu: rc %d \"%s\" (want \"%s\")", k, rc, e.msg, bad[k].msg);
    }
    bp_plan_run zero[] = {{0, 0}, {0, 8}};
    bp_plan_blocks bz = {BP_BLOCK_AXIS_ROWS, 64, f3, 3, zero, 2};
    assert_int_equal(bp_plan_blocks_validate(&bz, 512, 256, &bytes, NULL, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "blocks.runs[0]: count must be >= 1"));

    /* Through add_tensor: the message names the tensor. */
    bp_plan *p = bp_plan_new();
    bp_plan_tensor t = {0};
    t.name = "w";
    t.rows = 512;
    t.cols = 256;
    t.dtype = "F16";
    t.format = "int8_pc_sym";
    t.blocks = &b;
    assert_int_equal(bp_plan_add_tensor(p, &t, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "tensor \"w\": format: \"int8_pc_sym\" must be the format "
                                  "covering the most blocks (\"int4_g64_sym\")"));
    bp_plan_destroy(&p);
}

static void test_api_validation(void **state)
{
    (void)state;
    bp_error e;
    bp_plan *p = bp_plan_new();
    bp_plan_tensor t = {0};
    t.name = "w";
    t.rows = 64;
    t.cols = 128;
    t.dtype = "F16";
    t.format = "int4";
    assert_int_equal(bp_plan_add_tensor(p, &t, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "tensor \"w\": format: unknown format \"int4\""));
    t.format = "int4_g128_sym";
    t.predicted_error = INFINITY;
    assert_int_equal(bp_plan_add_tensor(p, &t, &e), BP_EINVAL);
    t.predicted_error = 0;
    t.rows = 0;
    assert_int_equal(bp_plan_add_tensor(p, &t, &e), BP_EINVAL);
    t.rows = 64;
    assert_int_equal(bp_plan_add_tensor(p, &t, &e), BP_OK);
    assert_int_equal(bp_plan_add_tensor(p, &t, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "duplicate tensor \"w\""));
    /* Incomplete plans do not serialize. */
    assert_null(bp_plan_to_string(p, &e));
    assert_non_null(strstr(e.msg, "tool: not set"));
    assert_int_equal(bp_plan_set_metric(p, BP_METRIC_BOPS, &e), BP_EINVAL);
    assert_int_equal(bp_plan_set_solver(p, "dp", "optimal", NAN, 0, 0, &e), BP_EINVAL);
    assert_int_equal(bp_plan_set_solver(p, "dp", "infeasible", 1, 0, 0, &e), BP_EINVAL);
    assert_int_equal(bp_plan_set_budget(p, BP_BUDGET_NONE, 4, 10, &e), BP_EINVAL);
    assert_int_equal(bp_plan_set_budget(p, BP_BUDGET_BITS, -4, 10, &e), BP_EINVAL);
    assert_int_equal(bp_plan_set_timing(p, "x", -1, &e), BP_EINVAL);
    assert_int_equal(bp_plan_set_search_json(p, "[1]", &e), BP_EINVAL);
    assert_int_equal(bp_plan_set_search_json(p, "{", &e), BP_EINVAL);
    assert_int_equal(bp_plan_set_model(p, "m", "", &e), BP_EINVAL);
    assert_int_equal(bp_plan_set_tool(p, "bitplan", "0.1", &e), BP_OK);
    assert_int_equal(bp_plan_set_model(p, "m", NULL, &e), BP_OK);
    assert_int_equal(bp_plan_set_calibration(p, "blake2b256:aa", NULL, &e), BP_OK);
    assert_int_equal(bp_plan_set_metric(p, BP_METRIC_MSE, &e), BP_OK);
    assert_int_equal(bp_plan_set_solver(p, "dp", "feasible", 1, NAN, NAN, &e), BP_OK);
    uint64_t tb = fbytes("int4_g128_sym", 64, 128);
    /* Given as bytes: the bits must be 8 * bytes / params. */
    assert_int_equal(bp_plan_set_budget(p, BP_BUDGET_BYTES, 5.0, tb, &e), BP_OK);
    assert_null(bp_plan_to_string(p, &e));
    assert_non_null(strstr(e.msg, "budget.asked.bits"));
    assert_int_equal(bp_plan_set_budget(p, BP_BUDGET_BYTES, 8.0 * (double)tb / 8192, tb, &e),
                     BP_OK);
    char *s = bp_plan_to_string(p, &e);
    assert_non_null(s);
    assert_non_null(strstr(s, "\"bound\": null"));
    bp_plan *q = NULL;
    if (bp_plan_from_string(s, "x.json", &q, &e))
        fail_msg("%s", e.msg);
    bp_plan_info in;
    bp_plan_get_info(q, &in);
    assert_true(isnan(in.bound));
    assert_string_equal(in.calibration_hash, "blake2b256:aa");
    assert_null(in.model_hash);
    assert_int_equal(in.budget_given, BP_BUDGET_BYTES);
    free(s);
    bp_plan_destroy(&q);
    bp_plan_destroy(&p);
}

static void test_summary(void **state)
{
    (void)state;
    bp_plan *p = make_plan();
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    bp_plan_print_summary(p, f);
    fclose(f);
    assert_non_null(strstr(buf, "lm_head.weight"));
    assert_non_null(strstr(buf, "256x128"));
    assert_non_null(strstr(buf, "nvfp4"));
    assert_non_null(strstr(buf, "total: 3 tensors, 98304 weights"));
    assert_non_null(strstr(buf, "budget: 98304 bytes"));
    assert_non_null(strstr(buf, "solver: glpk-ilp, optimal, hdiag objective"));
    assert_non_null(strstr(buf, "gap 0%"));
    free(buf);
    bp_plan_destroy(&p);
}

/* The example in docs/plan-format.md is a valid plan. */
static void test_doc_example(void **state)
{
    (void)state;
    char *doc = slurp(BP_SOURCE_DIR "/docs/plan-format.md");
    char *start = strstr(doc, "```json\n{");
    assert_non_null(start);
    start += 8;
    char *end = strstr(start, "```");
    assert_non_null(end);
    *end = '\0';
    bp_plan *p = NULL;
    bp_error e;
    if (bp_plan_from_string(start, "docs/plan-format.md", &p, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(bp_plan_tensor_count(p), 2);
    /* And it is exactly what the writer produces. */
    char *s = bp_plan_to_string(p, &e);
    assert_string_equal(s, start);
    free(s);
    bp_plan_destroy(&p);
    free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_and_accessors),
        cmocka_unit_test(test_round_trip_and_determinism),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_blocks_validate),
        cmocka_unit_test(test_api_validation),
        cmocka_unit_test(test_summary),
        cmocka_unit_test(test_doc_example),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
