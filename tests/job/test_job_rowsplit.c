/* Measure tasks split into row blocks ("split_rows"): more tasks, but the
 * table and the plan are byte-identical to the unsplit measurement and to
 * the direct pipeline (bp_job_run), for mse, hdiag, hfull and gptq. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/job_spec.h"
#include "bitplan/model.h"
#include "bitplan/task.h"

#include "job_testutil.h"

#define MODEL BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"
#define TMP BP_TEST_TMPDIR "/rowsplit-"
#define CALIB_FULL                                                                                       \
    "\"search\":\"ilp\",\"calibration\":{\"text\":\"" MODEL "/calib.txt\",\"seqs\":12,\"ctx\":64,\"stats\":\"" TMP "full.st\"}"

static int setup(void **state)
{
    (void)state;
    bp_job_register_tasks();
    setenv("TMPDIR", BP_TEST_TMPDIR, 1);
    remove(TMP "full.st");
    return 0;
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        fail_msg("cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = calloc(1, (size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    return buf;
}

/* "{" + body + ",\"table\":path" + extra + "}" */
static char *spec_with(const char *body, const char *table, const char *extra)
{
    char *s = malloc(8192);
    assert_non_null(s);
    snprintf(s, 8192, "{\"kind\":\"plan\",\"model\":\"" MODEL "\",%s,\"table\":\"%s\"%s}", body, table, extra);
    return s;
}

/* Measure tasks the driver asks for first (the spec must not need Hessian
 * tasks), checking that each tensor's blocks tile its rows in order. */
static size_t count_measure_tasks(const char *spec)
{
    const bp_job_driver_ops *ops = bp_job_driver_lookup("plan");
    void *st = NULL;
    bp_error err;
    if (ops->create(spec, strlen(spec), &st, &err) != BP_OK)
        fail_msg("create: %s", err.msg);
    const bp_task_req *reqs = NULL;
    size_t n = 0;
    assert_int_equal(ops->next(st, &reqs, &n, &err), BP_OK);
    char last[256] = "";
    int64_t expect_row0 = 0;
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(reqs[i].kind, "measure");
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        assert_int_equal(msgpack_unpack_next(&u, reqs[i].params_mp, reqs[i].params_len, &off),
                         MSGPACK_UNPACK_SUCCESS);
        bp_str name;
        int64_t row0 = -1, rows = -1;
        assert_int_equal(bp_mp_get_str(&u.data, "tensor", &name, &err), BP_OK);
        assert_int_equal(bp_mp_get_i64(&u.data, "row0", &row0, &err), BP_OK);
        assert_int_equal(bp_mp_get_i64(&u.data, "rows", &rows, &err), BP_OK);
        char cur[256];
        snprintf(cur, sizeof cur, "%.*s", (int)name.len, name.ptr);
        if (strcmp(cur, last))
            expect_row0 = 0;
        assert_int_equal(row0, expect_row0);
        assert_true(rows > 0);
        expect_row0 = row0 + rows;
        snprintf(last, sizeof last, "%s", cur);
        msgpack_unpacked_destroy(&u);
    }
    ops->destroy(st);
    return n;
}

/* Expected task count: a tensor with more rows than `block` and more
 * weights than `min_weights` becomes ceil(rows / block) tasks. */
static size_t expected_tasks(const char *spec_unsplit, int64_t block, int64_t min_weights)
{
    const bp_job_driver_ops *ops = bp_job_driver_lookup("plan");
    void *st = NULL;
    bp_error err;
    assert_int_equal(ops->create(spec_unsplit, strlen(spec_unsplit), &st, &err), BP_OK);
    const bp_task_req *reqs = NULL;
    size_t n = 0;
    assert_int_equal(ops->next(st, &reqs, &n, &err), BP_OK);
    bp_model *m = NULL;
    assert_int_equal(bp_model_open(MODEL, &m, &err), BP_OK);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        assert_int_equal(msgpack_unpack_next(&u, reqs[i].params_mp, reqs[i].params_len, &off),
                         MSGPACK_UNPACK_SUCCESS);
        bp_str name;
        assert_int_equal(bp_mp_get_str(&u.data, "tensor", &name, &err), BP_OK);
        char cur[256];
        snprintf(cur, sizeof cur, "%.*s", (int)name.len, name.ptr);
        const bp_tensor_info *ti = bp_model_tensor(m, (size_t)bp_model_find(m, cur));
        int64_t rows = ti->shape[0], weights = ti->shape[0] * ti->shape[1];
        total += rows > block && weights > min_weights ? (size_t)((rows + block - 1) / block) : 1;
        msgpack_unpacked_destroy(&u);
    }
    bp_model_destroy(&m);
    ops->destroy(st);
    return total;
}

/* The same job three ways: direct, tasks unsplit, tasks split. Plans and
 * tables must be byte-identical. */
static void compare_split(const char *body, const char *split, const char *tag)
{
    char ta[512], tb[512], tc[512];
    snprintf(ta, sizeof ta, TMP "%s-direct.tsv", tag);
    snprintf(tb, sizeof tb, TMP "%s-whole.tsv", tag);
    snprintf(tc, sizeof tc, TMP "%s-split.tsv", tag);
    remove(ta);
    remove(tb);
    remove(tc);
    char *sa = spec_with(body, ta, ",\"split_rows\":0");
    char *sb = spec_with(body, tb, ",\"split_rows\":0");
    char *sc = spec_with(body, tc, split);
    char *pa = run_direct(sa), *pb = run_tasks(sb), *pc = run_tasks(sc);
    char *a = slurp(ta), *b = slurp(tb), *c = slurp(tc);
    /* The direct path words its calibration source differently: compare
     * its table's rows, not its comment lines. */
    assert_same_text("tables (direct, tasks)", strstr(a, "\ntensor,"), strstr(b, "\ntensor,"));
    assert_same_text("tables (unsplit, split)", b, c);
    assert_same_text("plans (direct, tasks)", pa, pb);
    assert_same_text("plans (unsplit, split)", pb, pc);
    /* The split really happened: more measure tasks than tensors (with
     * the tables gone, so the driver measures again). */
    remove(tb);
    remove(tc);
    size_t whole = count_measure_tasks(sb), parts = count_measure_tasks(sc);
    assert_true(parts > whole);
    free(a);
    free(b);
    free(c);
    free(pa);
    free(pb);
    free(pc);
    free(sa);
    free(sb);
    free(sc);
}

static void test_split_mse_identical(void **state)
{
    (void)state;
    /* One format of each kind; nvfp4's tensor scale the blocks get from
     * the driver. */
    compare_split("\"budget\":{\"bits\":3.5},\"formats\":[\"int2_g32_sym\",\"int3_pc_asym\",\"int4_g128_asym\","
                  "\"int8_pc_sym\",\"fp8_e4m3\",\"mxfp4\",\"nvfp4\",\"bf16\"]",
                  ",\"split_rows\":64,\"split_min_weights\":0", "mse");
}

static void test_split_hdiag_identical(void **state)
{
    (void)state;
    /* Full Hessians: the table also holds hfull, merged row by row. The
     * statistics are computed first, so all three runs read them (a run
     * that computes them names its source differently). */
    free(run_tasks("{\"kind\":\"plan\",\"model\":\"" MODEL "\",\"budget\":{\"bits\":5},"
                   "\"formats\":[\"int4_g64_asym\"],\"metric\":\"hdiag\"," CALIB_FULL "}"));
    compare_split("\"budget\":{\"bits\":3.25},\"metric\":\"hdiag\",\"formats\":[\"int2_g64_asym\","
                  "\"int3_g64_asym\",\"int4_g64_asym\",\"mxfp4\",\"nvfp4\"]," CALIB_FULL,
                  ",\"split_rows\":64,\"split_min_weights\":0", "hdiag");
}

static void test_split_gptq_identical(void **state)
{
    (void)state;
    compare_split("\"budget\":{\"bits\":3.25},\"metric\":\"gptq\",\"method\":\"gptq\",\"formats\":["
                  "\"int2_g128_asym\",\"int3_g128_asym\",\"int4_g128_asym\",\"nvfp4\"]," CALIB_FULL,
                  ",\"split_rows\":128,\"split_min_weights\":20000", "gptq");
}

static void test_split_task_counts(void **state)
{
    (void)state;
    const char *body = "\"budget\":{\"bits\":3.5},\"formats\":[\"int4_g64_asym\",\"nvfp4\"]";
    char *whole = spec_with(body, TMP "count.tsv", ",\"split_rows\":0");
    char *all64 = spec_with(body, TMP "count.tsv", ",\"split_rows\":64,\"split_min_weights\":0");
    char *some = spec_with(body, TMP "count.tsv", ",\"split_rows\":128,\"split_min_weights\":20000");
    char *dflt = spec_with(body, TMP "count.tsv", "");
    remove(TMP "count.tsv");
    size_t n_whole = count_measure_tasks(whole);
    /* 64-row blocks: gate/up (384 rows) 6 tasks each, k/v (64 rows) 1. */
    assert_int_equal(count_measure_tasks(all64), expected_tasks(whole, 64, 0));
    /* Only tensors above 20000 weights with more than 128 rows (gate, up)
     * are split, into 3 blocks: 2 extra tasks for each. */
    size_t n_some = count_measure_tasks(some);
    assert_int_equal(n_some, expected_tasks(whole, 128, 20000));
    assert_true(n_some > n_whole);
    assert_true(n_some < count_measure_tasks(all64));
    /* The default threshold (16M weights) splits nothing in a tiny model. */
    assert_int_equal(count_measure_tasks(dflt), n_whole);
    free(whole);
    free(all64);
    free(some);
    free(dflt);
}

static void test_dkl_never_split(void **state)
{
    (void)state;
    /* Reuses the stats file of the hdiag test when present; otherwise the
     * driver starts with Hessian tasks and nothing is counted here. */
    FILE *fp = fopen(TMP "full.st", "rb");
    if (!fp)
        skip();
    fclose(fp);
    const char *body = "\"budget\":{\"bits\":3.5},\"metric\":\"dkl\",\"formats\":[\"int4_g64_asym\"]," CALIB_FULL;
    char *whole = spec_with(body, TMP "dkl.tsv", ",\"split_rows\":0");
    char *split = spec_with(body, TMP "dkl.tsv", ",\"split_rows\":64,\"split_min_weights\":0");
    remove(TMP "dkl.tsv");
    assert_int_equal(count_measure_tasks(split), count_measure_tasks(whole));
    free(whole);
    free(split);
}

static void test_spec_split_fields(void **state)
{
    (void)state;
    const char *bad[] = {
        "\"split_rows\":100",      "\"split_rows\":-64",        "\"split_rows\":\"64\"",
        "\"split_rows\":64.5",     "\"split_rows\":true",       "\"split_min_weights\":-1",
        "\"split_min_weights\":\"1M\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char spec[512];
        snprintf(spec, sizeof spec, "{\"kind\":\"plan\",\"model\":\"m\",\"budget\":{\"bits\":3},%s}", bad[i]);
        bp_job_spec_doc *doc = NULL;
        bp_error err;
        if (bp_job_spec_parse(spec, strlen(spec), "spec.json", &doc, &err) == BP_OK)
            fail_msg("accepted: %s", bad[i]);
        assert_null(doc);
        assert_non_null(strstr(err.msg, "spec.json"));
        assert_non_null(strstr(err.msg, strstr(bad[i], "min") ? "split_min_weights" : "split_rows"));
    }
    bp_error err;
    bp_job_spec_doc *doc = NULL;
    const char *not64 = "{\"kind\":\"plan\",\"model\":\"m\",\"budget\":{\"bits\":3},\"split_rows\":96}";
    assert_int_not_equal(bp_job_spec_parse(not64, strlen(not64), "s", &doc, &err), BP_OK);
    assert_non_null(strstr(err.msg, "multiple of 64"));
    /* 0 = never split, stored as -1 (the struct's 0 is the default). */
    const char *ok = "{\"kind\":\"plan\",\"model\":\"m\",\"budget\":{\"bits\":3},\"split_rows\":0,"
                     "\"split_min_weights\":4096}";
    assert_int_equal(bp_job_spec_parse(ok, strlen(ok), "s", &doc, &err), BP_OK);
    assert_int_equal(bp_job_spec_get(doc)->split_rows, -1);
    assert_int_equal(bp_job_spec_get(doc)->split_min_weights, 4096);
    char *json = bp_job_spec_to_json(bp_job_spec_get(doc), &err);
    bp_job_spec_doc_destroy(&doc);
    assert_non_null(json);
    assert_int_equal(bp_job_spec_parse(json, strlen(json), "rt", &doc, &err), BP_OK);
    assert_int_equal(bp_job_spec_get(doc)->split_rows, -1);
    assert_int_equal(bp_job_spec_get(doc)->split_min_weights, 4096);
    bp_job_spec_doc_destroy(&doc);
    free(json);
    /* Absent: the defaults. */
    bp_job_spec s;
    bp_job_spec_default(&s);
    assert_int_equal(s.split_rows, 0);
    assert_int_equal(s.split_min_weights, 0);
}

/* A measure task checks its row range: params come from the network. */
static void test_task_rejects_bad_row_range(void **state)
{
    (void)state;
    bp_task_fn fn = bp_task_lookup("measure");
    assert_non_null(fn);
    const int64_t cases[][2] = {{32, 64}, {0, 100}, {320, 128}, {-64, 64}, {0, 0}, {448, 64}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        const char *keys[] = {"model", "tensor", "method"};
        const char *vals[] = {MODEL, "model.layers.0.mlp.gate_proj.weight", "rtn"};
        msgpack_pack_map(&pk, 6);
        for (int k = 0; k < 3; k++) {
            msgpack_pack_str_with_body(&pk, keys[k], strlen(keys[k]));
            msgpack_pack_str_with_body(&pk, vals[k], strlen(vals[k]));
        }
        msgpack_pack_str_with_body(&pk, "formats", 7);
        msgpack_pack_array(&pk, 1);
        msgpack_pack_str_with_body(&pk, "int4_g64_asym", 13);
        msgpack_pack_str_with_body(&pk, "row0", 4);
        msgpack_pack_int64(&pk, cases[i][0]);
        msgpack_pack_str_with_body(&pk, "rows", 4);
        msgpack_pack_int64(&pk, cases[i][1]);
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        assert_int_equal(msgpack_unpack_next(&u, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
        msgpack_sbuffer rb;
        msgpack_sbuffer_init(&rb);
        msgpack_packer rpk;
        msgpack_packer_init(&rpk, &rb, msgpack_sbuffer_write);
        _Atomic uint64_t progress = 0;
        bp_task_ctx ctx;
        memset(&ctx, 0, sizeof ctx);
        ctx.params = &u.data;
        ctx.progress = &progress;
        ctx.result = &rpk;
        bp_error err;
        int rc = fn(&ctx, &err);
        if (rc == BP_OK)
            fail_msg("rows [%lld, +%lld) accepted", (long long)cases[i][0], (long long)cases[i][1]);
        assert_true(strstr(err.msg, "row") != NULL);
        bp_task_ctx_free_bins(&ctx);
        msgpack_sbuffer_destroy(&rb);
        msgpack_unpacked_destroy(&u);
        msgpack_sbuffer_destroy(&sb);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_split_fields),
        cmocka_unit_test(test_task_rejects_bad_row_range),
        cmocka_unit_test(test_split_task_counts),
        cmocka_unit_test(test_split_mse_identical),
        cmocka_unit_test(test_split_hdiag_identical),
        cmocka_unit_test(test_split_gptq_identical),
        cmocka_unit_test(test_dkl_never_split),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
