/* The "measure_kv" task kind (optimizer/job/task_eval.c) and the direct-path
 * helper bp__job_measure_kv_rows (optimizer/job/measure_kv.c) on the bundled
 * model: the reference of the held-out KL windows [n_seq, n_seq + kl) of the
 * stream equals the one the measure task builds for dkl (from the calib's
 * held-out tokens); task results equal the helper's rows bit for bit with 1
 * and 2 threads, whatever the order, subset or history of the tasks; the
 * errors are ordered (f16 == 0 < int8 < int4); an evaluate task after a
 * measure_kv task gives the same bits as before it; malformed params give
 * clear errors. */
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

#include "../../optimizer/job/measure_kv.h"
#include "bitplan/evaluate.h"
#include "bitplan/task.h"

/* Declared in optimizer/job/tasks_internal.h (not a public header). */
void bp__tasks_register_eval(void);

#define MODEL BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"
#define CALIB MODEL "/calib.txt"
#define CTX 128
#define N_SEQ 8   /* Hessian sequences: the KL windows start after them */
#define KL_WIN 4
#define N_LAYERS 6

static const char *const ALL_FORMATS[] = {"kv_f16", "kv_fp8_e4m3", "kv_int8", "kv_int4"};

static bp_model *g_model;
static bp_llama *g_llama;
static bp_tokens *g_tokens;
static bp_calib *g_calib;
static bp_eval_reference *g_ref_measure; /* as task_measure builds it for want_dkl */
static bp_table *g_rows;                 /* bp__job_measure_kv_rows on g_ref_measure */

static int setup(void **state)
{
    (void)state;
    bp_job_register_tasks();
    bp__tasks_register_eval();
    bp_error e;
    bp_calib_spec cs;
    bp_calib_spec_default(&cs);
    cs.text_path = CALIB;
    cs.ctx = CTX;
    cs.n_seq = N_SEQ;
    cs.kl_windows = KL_WIN;
    cs.diag_only = 1;
    cs.quiet = 1;
    if (bp_model_open(MODEL, &g_model, &e) || bp_llama_new(g_model, &g_llama, &e) ||
        bp_calib_load_tokens(CALIB, NULL, 256, &g_tokens, &e) || bp_calib_open(&cs, g_llama, NULL, 1, &g_calib, &e)) {
        fprintf(stderr, "setup: %s\n", e.msg);
        return -1;
    }
    const bp_tokens *kt = bp_calib_kl_tokens(g_calib);
    if (bp_eval_reference_new(g_llama, bp_tokens_data(kt), bp_tokens_count(kt), CTX, 0,
                              bp_eval_n_windows(bp_tokens_count(kt), CTX), 0, &g_ref_measure, &e)) {
        fprintf(stderr, "setup: %s\n", e.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    bp_table_destroy(&g_rows);
    bp_eval_reference_destroy(&g_ref_measure);
    bp_calib_destroy(&g_calib);
    bp_tokens_destroy(&g_tokens);
    bp_llama_destroy(&g_llama);
    bp_model_destroy(&g_model);
    return 0;
}

static void assert_same_bits(double a, double b)
{
    if (memcmp(&a, &b, sizeof a))
        fail_msg("%.17g != %.17g", a, b);
}

static bp_kv_shape model_shape(void)
{
    const bp_llama_config *cfg = bp_llama_get_config(g_llama);
    bp_kv_shape s = {cfg->n_layers, cfg->n_kv_heads, cfg->head_dim};
    return s;
}

/* ---- params ----------------------------------------------------------- */

#define ABSENT INT64_MIN

/* The fields set (NULL / ABSENT leave one out); the *_str and *_wrong
 * switches give a field the wrong msgpack type. */
typedef struct kvparams {
    const char *model, *text, *tokens, *model_hash;
    int64_t ctx, first, n, layer;
    const char *const *formats;
    int n_formats;        /* -1: no "formats" */
    int layer_as_str;     /* "layer": "1" */
    int formats_as_str;   /* "formats": "kv_int8" */
    int format_as_int;    /* formats[0] is an integer */
} kvparams;

static kvparams kv_default(int64_t layer)
{
    kvparams k = {MODEL, CALIB, NULL, NULL, CTX, N_SEQ, KL_WIN, layer, ALL_FORMATS, 4, 0, 0, 0};
    return k;
}

static void pk_key(msgpack_packer *pk, const char *key)
{
    msgpack_pack_str(pk, strlen(key));
    msgpack_pack_str_body(pk, key, strlen(key));
}

static void pk_str(msgpack_packer *pk, const char *key, const char *v)
{
    pk_key(pk, key);
    msgpack_pack_str(pk, strlen(v));
    msgpack_pack_str_body(pk, v, strlen(v));
}

static void pack_kv_params(const kvparams *k, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    const char *skeys[] = {"model", "text", "tokens", "model_hash"};
    const char *svals[] = {k->model, k->text, k->tokens, k->model_hash};
    const char *ikeys[] = {"ctx", "first_window", "n_windows", "layer"};
    int64_t ivals[] = {k->ctx, k->first, k->n, k->layer};
    size_t n = k->n_formats >= 0;
    for (size_t i = 0; i < 4; i++)
        n += (svals[i] != NULL) + (ivals[i] != ABSENT);
    msgpack_pack_map(&pk, n);
    for (size_t i = 0; i < 4; i++)
        if (svals[i])
            pk_str(&pk, skeys[i], svals[i]);
    for (size_t i = 0; i < 4; i++) {
        if (ivals[i] == ABSENT)
            continue;
        if (i == 3 && k->layer_as_str) {
            pk_str(&pk, "layer", "1");
            continue;
        }
        pk_key(&pk, ikeys[i]);
        msgpack_pack_int64(&pk, ivals[i]);
    }
    if (k->n_formats < 0)
        return;
    if (k->formats_as_str) {
        pk_str(&pk, "formats", k->formats[0]);
        return;
    }
    pk_key(&pk, "formats");
    msgpack_pack_array(&pk, (size_t)k->n_formats);
    for (int i = 0; i < k->n_formats; i++) {
        if (i == 0 && k->format_as_int) {
            msgpack_pack_int(&pk, 2);
            continue;
        }
        msgpack_pack_str(&pk, strlen(k->formats[i]));
        msgpack_pack_str_body(&pk, k->formats[i], strlen(k->formats[i]));
    }
}

/* ---- running tasks ---------------------------------------------------- */

/* Run a task kind from serialized params; on success *result holds its
 * unpacked result map, which points into *rb (caller destroys both). */
static int run_kind(const char *kind, const msgpack_sbuffer *params, const bp_bin_view *bins, size_t n_bins,
                    msgpack_sbuffer *rb, msgpack_unpacked *result, bp_error *err)
{
    bp_task_fn fn = bp_task_lookup(kind);
    assert_non_null(fn);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&up, params->data, params->size, &off), MSGPACK_UNPACK_SUCCESS);
    msgpack_sbuffer_init(rb);
    msgpack_packer rp;
    msgpack_packer_init(&rp, rb, msgpack_sbuffer_write);
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
    msgpack_unpacked_init(result);
    if (rc == BP_OK) {
        assert_true(progress > 0);
        off = 0;
        assert_int_equal(msgpack_unpack_next(result, rb->data, rb->size, &off), MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(off, rb->size);
    } else {
        assert_int_equal(rb->size, 0); /* nothing packed on failure */
        assert_true(err->msg[0] != '\0');
    }
    assert_int_equal(ctx.n_out_bins, 0);
    msgpack_unpacked_destroy(&up);
    return rc;
}

static int run_kv(const kvparams *k, double *dkl, bp_error *err)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pack_kv_params(k, &sb);
    msgpack_sbuffer rb;
    msgpack_unpacked res;
    int rc = run_kind("measure_kv", &sb, NULL, 0, &rb, &res, err);
    if (rc == BP_OK) {
        const msgpack_object *m = &res.data;
        assert_int_equal(m->type, MSGPACK_OBJECT_MAP);
        assert_int_equal(m->via.map.size, 1);
        const msgpack_object *items = NULL;
        size_t n = 0;
        assert_int_equal(bp_mp_get_array(m, "dkl", &items, &n, NULL), BP_OK);
        assert_int_equal(n, (size_t)k->n_formats);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(items[i].type, MSGPACK_OBJECT_FLOAT64);
            dkl[i] = items[i].via.f64;
        }
    }
    msgpack_unpacked_destroy(&res);
    msgpack_sbuffer_destroy(&rb);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static void run_kv_ok(const kvparams *k, double *dkl)
{
    bp_error e;
    if (run_kv(k, dkl, &e) != BP_OK)
        fail_msg("measure_kv: %s", e.msg);
}

/* The error must name what is wrong. */
static void expect_kv_error(const kvparams *k, int code, const char *needle)
{
    bp_error e;
    double dkl[8];
    int rc = run_kv(k, dkl, &e);
    if (rc != code || !strstr(e.msg, needle))
        fail_msg("expected %d with \"%s\", got %d: %s", code, needle, rc, e.msg);
}

/* The helper's value for (layer, "kv_<name>"). */
static double row_dkl(int64_t layer, const char *format)
{
    char name[64];
    bp__kv_row_tensor(layer, name, sizeof name);
    long r = bp_table_find(g_rows, name, NULL, format, BP_METHOD_RTN);
    assert_true(r >= 0);
    bp_table_row row;
    assert_int_equal(bp_table_get_row(g_rows, (size_t)r, &row), BP_OK);
    return row.metric[BP_METRIC_DKL];
}

static void measure_rows(void)
{
    if (g_rows)
        return;
    bp_error e;
    g_rows = bp_table_new();
    assert_non_null(g_rows);
    bp_kv_shape shape = model_shape();
    if (bp__job_measure_kv_rows(g_llama, g_ref_measure, &shape, 4096, 2, BP_METRIC_DKL, g_rows, &e) != BP_OK)
        fail_msg("helper: %s", e.msg);
}

/* ---- evaluate, for the cache check ------------------------------------ */

/* Every linear weight of the model in int4 RTN. */
static char *int4_plan_text(void)
{
    bp_plan *p = bp_plan_new();
    assert_non_null(p);
    bp_error e;
    uint64_t params = 0;
    for (size_t i = 0; i < bp_model_count(g_model); i++) {
        const bp_tensor_info *t = bp_model_tensor(g_model, i);
        if (t->ndim != 2 || !strstr(t->name, "_proj.weight"))
            continue;
        bp_plan_tensor pt = {t->name, t->shape[0], t->shape[1], "BF16", "int4_g32_asym", BP_METHOD_RTN, NAN, NULL,
                             0, 0};
        if (bp_plan_add_tensor(p, &pt, &e) != BP_OK)
            fail_msg("%s", e.msg);
        params += t->numel;
    }
    assert_int_equal(bp_plan_set_tool(p, "bitplan", "test", &e), BP_OK);
    assert_int_equal(bp_plan_set_model(p, MODEL, NULL, &e), BP_OK);
    assert_int_equal(bp_plan_set_calibration(p, NULL, NULL, &e), BP_OK);
    assert_int_equal(bp_plan_set_metric(p, BP_METRIC_MSE, &e), BP_OK);
    assert_int_equal(bp_plan_set_budget(p, BP_BUDGET_BITS, 16.0, 2 * params, &e), BP_OK);
    assert_int_equal(bp_plan_set_solver(p, "test", "feasible", 0.0, NAN, NAN, &e), BP_OK);
    char *text = bp_plan_to_string(p, &e);
    assert_non_null(text);
    bp_plan_destroy(&p);
    return text;
}

/* The evaluate task on the KL windows: its exact sums. */
static void run_evaluate(const char *plan_text, int64_t sums[3])
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    pk_str(&pk, "model", MODEL);
    pk_str(&pk, "text", CALIB);
    pk_key(&pk, "ctx");
    msgpack_pack_int64(&pk, CTX);
    pk_key(&pk, "first_window");
    msgpack_pack_int64(&pk, N_SEQ);
    pk_key(&pk, "n_windows");
    msgpack_pack_int64(&pk, KL_WIN);
    bp_bin_view bin = {{"plan", 4}, BP_WIRE_U8, strlen(plan_text), plan_text, strlen(plan_text)};
    msgpack_sbuffer rb;
    msgpack_unpacked res;
    bp_error e;
    if (run_kind("evaluate", &sb, &bin, 1, &rb, &res, &e) != BP_OK)
        fail_msg("evaluate: %s", e.msg);
    assert_int_equal(bp_mp_get_i64(&res.data, "tokens", &sums[0], NULL), BP_OK);
    assert_int_equal(bp_mp_get_i64(&res.data, "nll_fx", &sums[1], NULL), BP_OK);
    assert_int_equal(bp_mp_get_i64(&res.data, "kl_fx", &sums[2], NULL), BP_OK);
    msgpack_unpacked_destroy(&res);
    msgpack_sbuffer_destroy(&rb);
    msgpack_sbuffer_destroy(&sb);
}

/* ---- tests ------------------------------------------------------------- */

/* Runs first, on fresh caches: evaluate, measure_kv (leaving KV formats and
 * fp8 scales on the worker's llama if it did not reset), evaluate again. */
static void test_evaluate_unaffected(void **state)
{
    (void)state;
    omp_set_num_threads(2);
    char *plan = int4_plan_text();
    int64_t before[3], after[3];
    run_evaluate(plan, before);
    assert_int_equal(before[0], KL_WIN * CTX);
    assert_true(before[2] > 0);
    double dkl[4];
    kvparams k = kv_default(1);
    run_kv_ok(&k, dkl);
    assert_true(dkl[3] > 0);
    /* int4 last: a missing reset would leave it set on layer 1. */
    run_evaluate(plan, after);
    assert_memory_equal(before, after, sizeof before);
    free(plan);
}

/* The task's windows are stream windows [N_SEQ, N_SEQ + KL_WIN); the
 * measure task's are windows [0, KL_WIN) of the held-out tokens: the same
 * distributions, bit for bit. */
static void test_reference_matches_measure(void **state)
{
    (void)state;
    bp_error e;
    int64_t f0, n0, c0, f1, n1, c1;
    bp_eval_reference_range(g_ref_measure, &f0, &n0, &c0);
    assert_int_equal(f0, 0);
    assert_int_equal(n0, KL_WIN);
    assert_int_equal(c0, CTX);
    bp_eval_reference *ref_task = NULL;
    assert_int_equal(bp_eval_reference_new(g_llama, bp_tokens_data(g_tokens), bp_tokens_count(g_tokens), CTX,
                                           N_SEQ, KL_WIN, 0, &ref_task, &e),
                     BP_OK);
    bp_eval_reference_range(ref_task, &f1, &n1, &c1);
    assert_int_equal(f1, N_SEQ);
    assert_int_equal(n1, n0);
    assert_int_equal(c1, c0);
    bp_eval_sums s0, s1;
    bp_eval_reference_sums(g_ref_measure, &s0);
    bp_eval_reference_sums(ref_task, &s1);
    assert_memory_equal(&s0, &s1, sizeof s0);
    /* Every reference distribution enters the KL of a perturbed model. */
    assert_int_equal(bp_llama_set_kv_format(g_llama, 2, BP_KV_INT4, &e), BP_OK);
    assert_int_equal(bp_eval_compare(g_llama, g_ref_measure, 0, KL_WIN, &s0, &e), BP_OK);
    assert_int_equal(bp_eval_compare(g_llama, ref_task, N_SEQ, KL_WIN, &s1, &e), BP_OK);
    bp_llama_reset_kv_formats(g_llama);
    assert_true(s0.kl_fx > 0);
    assert_memory_equal(&s0, &s1, sizeof s0);
    bp_eval_reference_destroy(&ref_task);
}

static void test_helper_rows(void **state)
{
    (void)state;
    measure_rows();
    bp_kv_shape shape = model_shape();
    assert_int_equal(shape.n_layers, N_LAYERS);
    assert_int_equal(bp_table_count(g_rows), N_LAYERS * 4);
    for (int64_t l = 0; l < N_LAYERS; l++) {
        for (int f = 0; f < 4; f++) {
            char name[64];
            bp__kv_row_tensor(l, name, sizeof name);
            bp_table_row row;
            assert_int_equal(bp_table_get_row(g_rows, (size_t)(l * 4 + f), &row), BP_OK);
            assert_string_equal(row.tensor, name);
            assert_string_equal(row.format, ALL_FORMATS[f]);
            assert_int_equal(row.method, BP_METHOD_RTN);
            uint64_t want = 0;
            assert_int_equal(bp_kv_bytes(&shape, (bp_kv_format)f, 4096, 2, &want, NULL), BP_OK);
            assert_int_equal(row.bytes, want);
            for (int m = 0; m < BP_METRIC_COUNT; m++)
                if (m != BP_METRIC_DKL)
                    assert_true(isnan(row.metric[m]));
        }
        double f16 = row_dkl(l, "kv_f16"), fp8 = row_dkl(l, "kv_fp8_e4m3");
        double i8 = row_dkl(l, "kv_int8"), i4 = row_dkl(l, "kv_int4");
        assert_true(f16 == 0.0);
        assert_true(i8 > 0.0);
        assert_true(i4 > i8);
        assert_true(fp8 > 0.0 && fp8 < i4);
    }
    /* The helper leaves the llama on the exact KV path. */
    for (int64_t l = 0; l < N_LAYERS; l++)
        assert_int_equal(bp_llama_get_kv_format(g_llama, l), BP_KV_F16);
}

static void check_layer(int64_t layer, const char *const *formats, int n)
{
    kvparams k = kv_default(layer);
    k.formats = formats;
    k.n_formats = n;
    double dkl[4];
    run_kv_ok(&k, dkl);
    for (int i = 0; i < n; i++)
        assert_same_bits(dkl[i], row_dkl(layer, formats[i]));
}

static void test_task_equals_helper(void **state)
{
    (void)state;
    measure_rows();
    omp_set_num_threads(2);
    for (int64_t l = 0; l < N_LAYERS; l++)
        check_layer(l, ALL_FORMATS, 4);
    omp_set_num_threads(1);
    check_layer(4, ALL_FORMATS, 4);
    /* Another order and a subset. */
    const char *const some[] = {"kv_int4", "kv_fp8_e4m3"};
    check_layer(3, some, 2);
    /* Another ctx drops the cached references of ctx CTX. */
    omp_set_num_threads(2);
    kvparams k = kv_default(2);
    k.ctx = 64;
    k.n = 1;
    double other[4];
    run_kv_ok(&k, other);
    /* fp8 measured on other windows first: its scales are recalibrated for
     * these. The only piece cached is now [N_SEQ + 1, N_SEQ + 3). */
    k = kv_default(2);
    k.first = N_SEQ + 1;
    k.n = 2;
    run_kv_ok(&k, other);
    assert_true(other[1] > 0);
    assert_true(memcmp(&other[1], &(double){row_dkl(2, "kv_fp8_e4m3")}, sizeof(double)) != 0);
    check_layer(2, some, 2);
    /* So [N_SEQ, N_SEQ + KL_WIN) was measured in three spans (a computed
     * window, the cached piece, a computed window); once more, from the
     * pieces cached by that. */
    check_layer(5, ALL_FORMATS, 4);
    check_layer(0, ALL_FORMATS, 4);
}

static void test_malformed_params(void **state)
{
    (void)state;
    kvparams k = kv_default(6);
    expect_kv_error(&k, BP_EINVAL, "layer 6 is outside 0..5");
    k = kv_default(-1);
    expect_kv_error(&k, BP_EINVAL, "\"layer\" = -1");
    k = kv_default(ABSENT);
    expect_kv_error(&k, BP_EINVAL, "\"layer\" is required");
    k = kv_default(0);
    k.layer_as_str = 1;
    expect_kv_error(&k, BP_EPROTO, "layer");

    const char *const bad[] = {"kv_int3"};
    k = kv_default(0);
    k.formats = bad;
    k.n_formats = 1;
    expect_kv_error(&k, BP_EINVAL, "formats[0] is not a KV format");
    const char *const bare[] = {"kv_int8", "int4"};
    k.formats = bare;
    k.n_formats = 2;
    expect_kv_error(&k, BP_EINVAL, "formats[1] is not a KV format");
    const char *const twice[] = {"kv_int8", "kv_int4", "kv_int8"};
    k.formats = twice;
    k.n_formats = 3;
    expect_kv_error(&k, BP_EINVAL, "formats[2] repeats kv_int8");
    const char *const five[] = {"kv_f16", "kv_fp8_e4m3", "kv_int8", "kv_int4", "kv_f16"};
    k.formats = five;
    k.n_formats = 5;
    expect_kv_error(&k, BP_EINVAL, "1..4 KV formats");
    k.n_formats = 0;
    expect_kv_error(&k, BP_EINVAL, "1..4 KV formats");
    k.n_formats = -1;
    expect_kv_error(&k, BP_EINVAL, "\"formats\" is required");
    k = kv_default(0);
    k.formats_as_str = 1;
    expect_kv_error(&k, BP_EPROTO, "formats");
    k = kv_default(0);
    k.format_as_int = 1;
    expect_kv_error(&k, BP_EINVAL, "formats[0] is not a KV format");

    /* 2047 windows of 128 in calib.txt. */
    k = kv_default(0);
    k.first = 2045;
    expect_kv_error(&k, BP_EINVAL, "windows [2045, 2049) are outside the 2047 windows");
    k.first = ABSENT;
    k.n = 0;
    expect_kv_error(&k, BP_EINVAL, "\"n_windows\" = 0");
    k = kv_default(0);
    k.n = ABSENT;
    expect_kv_error(&k, BP_EINVAL, "\"n_windows\" is required");
    k = kv_default(0);
    k.ctx = 4096;
    expect_kv_error(&k, BP_EINVAL, "max_position_embeddings");
    k = kv_default(0);
    k.tokens = CALIB;
    expect_kv_error(&k, BP_EINVAL, "exactly one of \"text\" and \"tokens\"");
    k = kv_default(0);
    k.model = BP_TEST_TMPDIR "/no-such-model";
    expect_kv_error(&k, BP_ENOTFOUND, "no-such-model: not a directory");

    /* A model hash is checked against the model's content. */
    k = kv_default(0);
    k.model_hash = "blake2b256:0000000000000000000000000000000000000000000000000000000000000000";
    expect_kv_error(&k, BP_EMISMATCH, "the job expects blake2b256:0000");
    char hash[BP_HASH_HEX_LEN + 1];
    assert_int_equal(bp_model_content_hash(g_model, hash, NULL), BP_OK);
    const char *const one[] = {"kv_int8"};
    k.model_hash = hash;
    k.formats = one;
    k.n_formats = 1;
    k.n = 1;
    double dkl[1];
    run_kv_ok(&k, dkl);
    assert_true(dkl[0] > 0);

    /* Params that are not a map. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 0);
    msgpack_sbuffer rb;
    msgpack_unpacked res;
    bp_error e;
    assert_int_equal(run_kind("measure_kv", &sb, NULL, 0, &rb, &res, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "measure_kv task: params are not a map"));
    msgpack_unpacked_destroy(&res);
    msgpack_sbuffer_destroy(&rb);
    msgpack_sbuffer_destroy(&sb);
}

static void test_helper_errors(void **state)
{
    (void)state;
    bp_error e;
    bp_kv_shape shape = model_shape();
    bp_table *t = bp_table_new();
    assert_non_null(t);
    assert_int_equal(bp__job_measure_kv_rows(g_llama, g_ref_measure, &shape, 128, 1, BP_METRIC_MSE, t, &e),
                     BP_EINVAL);
    assert_non_null(strstr(e.msg, "the job's metric is 'mse'"));
    bp_kv_shape wrong = shape;
    wrong.n_kv_heads = 4;
    assert_int_equal(bp__job_measure_kv_rows(g_llama, g_ref_measure, &wrong, 128, 1, BP_METRIC_DKL, t, &e),
                     BP_EMISMATCH);
    assert_non_null(strstr(e.msg, "not the model's"));
    assert_int_equal(bp__job_measure_kv_rows(g_llama, g_ref_measure, &shape, 0, 1, BP_METRIC_DKL, t, &e),
                     BP_EINVAL);
    assert_int_equal(bp_table_count(t), 0);
    /* A table that already has a KV row gets none added. */
    bp_table_row row;
    bp_table_row_init(&row);
    row.tensor = "model.layers.3.kv_cache";
    row.format = "kv_int8";
    row.bytes = 1;
    row.metric[BP_METRIC_DKL] = 0.5;
    assert_int_equal(bp_table_add_row(t, &row, &e), BP_OK);
    assert_int_equal(bp__job_measure_kv_rows(g_llama, g_ref_measure, &shape, 128, 1, BP_METRIC_DKL, t, &e),
                     BP_EINVAL);
    assert_non_null(strstr(e.msg, "already has 'model.layers.3.kv_cache' / 'kv_int8'"));
    assert_int_equal(bp_table_count(t), 1);
    bp_table_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_evaluate_unaffected),
        cmocka_unit_test(test_reference_matches_measure),
        cmocka_unit_test(test_helper_rows),
        cmocka_unit_test(test_task_equals_helper),
        cmocka_unit_test(test_malformed_params),
        cmocka_unit_test(test_helper_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
