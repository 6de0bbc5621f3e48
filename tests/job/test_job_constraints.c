/* Several constraints in one solve (issue 5): bytes, bits, latency, BOPS
 * and the KV cache together; ties; infeasibility messages; the solver
 * choice; direct and task paths agree; job-spec fields round-trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/cost.h"
#include "bitplan/job_spec.h"
#include "bitplan/solve.h"
#include "bitplan/task.h"

#define MODEL BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"
#define TABLE BP_TEST_TMPDIR "/cons-mse.table"
#define FORMATS "[\"int2_g64_asym\",\"int3_g64_asym\",\"int4_g64_asym\",\"int8_g64_asym\"]"
/* The bundled model, mse, one shared table so only the first run measures. */
#define BASE "{\"kind\":\"plan\",\"model\":\"" MODEL "\",\"metric\":\"mse\",\"model_hash\":false," \
             "\"formats\":" FORMATS ",\"table\":\"" TABLE "\","

static int setup(void **state)
{
    (void)state;
    bp_job_register_tasks();
    setenv("TMPDIR", BP_TEST_TMPDIR, 1);
    remove(TABLE);
    return 0;
}

static int run_json(const char *json, bp_plan **plan, bp_error *err)
{
    bp_job_spec_doc *doc = NULL;
    *plan = NULL;
    int rc = bp_job_spec_parse(json, strlen(json), "test", &doc, err);
    if (rc == BP_OK)
        rc = bp_job_run(bp_job_spec_get(doc), plan, err);
    bp_job_spec_doc_destroy(&doc);
    return rc;
}

static bp_plan *must_plan(const char *json)
{
    bp_plan *p = NULL;
    bp_error err;
    if (run_json(json, &p, &err) != BP_OK)
        fail_msg("%s\n-> %s", json, err.msg);
    return p;
}

static char *must_fail(const char *json, int code)
{
    bp_plan *p = NULL;
    bp_error err;
    int rc = run_json(json, &p, &err);
    if (rc != code)
        fail_msg("%s\n-> rc %d (%s), expected %d", json, rc, rc ? err.msg : "ok", code);
    return strdup(err.msg);
}

/* A number of the plan's search section: field of the constraint `name`,
 * or of "solver" when name is NULL. */
static double search_num(const bp_plan *p, const char *name, const char *field)
{
    char *js = bp_plan_search_json(p);
    assert_non_null(js);
    char key[96];
    const char *at = js;
    if (name) {
        snprintf(key, sizeof key, "\"name\":\"%s\"", name);
        at = strstr(js, key);
    } else {
        at = strstr(js, "\"solver\":");
    }
    if (!at)
        fail_msg("no '%s' in %s", name ? name : "solver", js);
    snprintf(key, sizeof key, "\"%s\":", field);
    const char *v = strstr(at, key);
    assert_non_null(v);
    double d = strtod(v + strlen(key), NULL);
    free(js);
    return d;
}

static void assert_all_hold(const bp_plan *p, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double cap = search_num(p, names[i], "capacity"), got = search_num(p, names[i], "achieved");
        if (!(got <= cap * (1 + 1e-12)))
            fail_msg("%s: achieved %.17g > capacity %.17g", names[i], got, cap);
    }
}

/* The number after `after` in a message. */
static double number_after(const char *msg, const char *after)
{
    const char *at = strstr(msg, after);
    if (!at)
        fail_msg("'%s' not in: %s", after, msg);
    return strtod(at + strlen(after), NULL);
}

static double objective(const bp_plan *p)
{
    bp_plan_info info;
    bp_plan_get_info(p, &info);
    return info.objective;
}

/* ---- combinations ------------------------------------------------------- */

static void test_bytes_and_latency(void **state)
{
    (void)state;
    /* The smallest latency alone, from the infeasibility message. */
    char *msg = must_fail(BASE "\"budget\":{\"bits\":4.5},\"latency_us\":0.001,\"profile\":\"cpu\"}", BP_EINFEASIBLE);
    double lmin = number_after(msg, "smallest achievable ");
    assert_non_null(strstr(msg, "latency_us <= 0.001 us"));
    free(msg);
    bp_plan *loose = must_plan(BASE "\"budget\":{\"bits\":4.5},\"latency_us\":1e12,\"profile\":\"cpu\"}");
    double lfree = search_num(loose, "latency_us", "achieved");
    assert_true(lfree > lmin);
    char json[2048];
    double cap = (lmin + lfree) / 2;
    snprintf(json, sizeof json, BASE "\"budget\":{\"bytes\":\"1MB\"},\"latency_us\":%.17g,\"profile\":\"cpu\"}", cap);
    bp_plan *tight = must_plan(json);
    const char *names[] = {"bytes", "latency_us"};
    assert_all_hold(tight, names, 2);
    assert_true(search_num(tight, "latency_us", "achieved") <= cap);
    /* A binding latency cap costs accuracy. */
    bp_plan *free_lat = must_plan(BASE "\"budget\":{\"bytes\":\"1MB\"}}");
    assert_true(objective(tight) >= objective(free_lat));
    bp_plan_destroy(&loose);
    bp_plan_destroy(&tight);
    bp_plan_destroy(&free_lat);
}

static void test_bytes_and_bops(void **state)
{
    (void)state;
    char *msg = must_fail(BASE "\"budget\":{\"bits\":8.5},\"bops\":1}", BP_EINFEASIBLE);
    double bmin = number_after(msg, "smallest achievable ");
    free(msg);
    bp_plan *loose = must_plan(BASE "\"budget\":{\"bits\":8.5},\"bops\":\"1P\"}");
    double bfree = search_num(loose, "bops", "achieved");
    assert_true(bfree > bmin);
    char json[2048];
    snprintf(json, sizeof json, BASE "\"budget\":{\"bits\":8.5},\"bops\":%.17g}", (bmin + bfree) / 2);
    bp_plan *tight = must_plan(json);
    const char *names[] = {"bits", "bops"};
    assert_all_hold(tight, names, 2);
    assert_true(objective(tight) > objective(loose));
    bp_plan_destroy(&loose);
    bp_plan_destroy(&tight);
}

static void test_bits_and_bytes(void **state)
{
    (void)state;
    bp_plan *bits = must_plan(BASE "\"budget\":{\"bits\":4.0}}");
    bp_plan_info info;
    bp_plan_get_info(bits, &info);
    uint64_t smaller = info.achieved_bytes * 9 / 10;
    char json[2048];
    snprintf(json, sizeof json, BASE "\"budget\":{\"bits\":4.0,\"bytes\":%llu}}", (unsigned long long)smaller);
    bp_plan *both = must_plan(json);
    const char *names[] = {"bits", "bytes"};
    assert_all_hold(both, names, 2);
    bp_plan_info i2;
    bp_plan_get_info(both, &i2);
    assert_true(i2.achieved_bytes <= smaller);
    assert_int_equal(i2.budget_given, BP_BUDGET_BITS);
    assert_true(fabs(search_num(both, "bits", "capacity") - 4.0) < 1e-3);
    assert_true(i2.objective >= info.objective);
    bp_plan_destroy(&bits);
    bp_plan_destroy(&both);
}

static void test_kv_fixed_format(void **state)
{
    (void)state;
    bp_kv_shape shape = {6, 2, 32};
    uint64_t per_layer = 0;
    bp_error err;
    assert_int_equal(bp_kv_bytes(&shape, BP_KV_INT8, 256, 2, &per_layer, &err), BP_OK);
    uint64_t kv = 6 * per_layer;
    bp_plan *p = must_plan(BASE "\"budget\":{\"bytes\":1000000},\"kv_context\":256,\"kv_batch\":2,"
                                "\"kv_format\":\"int8\"}");
    bp_plan_info info;
    bp_plan_get_info(p, &info);
    /* The weights get what the KV cache leaves. */
    assert_true(info.achieved_bytes + kv <= 1000000);
    assert_true(fabs(search_num(p, "bytes", "achieved") - (double)(info.achieved_bytes + kv)) < 0.5);
    assert_true(fabs(search_num(p, "bytes", "capacity") - 1000000.0) < 0.5);
    bp_plan *nokv = must_plan(BASE "\"budget\":{\"bytes\":1000000}}");
    assert_true(objective(p) >= objective(nokv));
    /* A KV cache larger than the whole budget: infeasible, named. */
    char *msg = must_fail(BASE "\"budget\":{\"bytes\":100000},\"kv_context\":4096}", BP_EINFEASIBLE);
    assert_non_null(strstr(msg, "bytes <= 100000 B"));
    assert_non_null(strstr(msg, "smallest achievable"));
    free(msg);
    bp_plan_destroy(&p);
    bp_plan_destroy(&nokv);
}

/* ---- ties -------------------------------------------------------------------- */

static const char *write_rules(const char *name, const char *text)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", BP_TEST_TMPDIR, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    return path;
}

static const char *tensor_format(const bp_plan *p, const char *name, double *pred)
{
    long i = bp_plan_tensor_find(p, name);
    if (i < 0)
        fail_msg("no tensor %s", name);
    static bp_plan_tensor t;
    bp_plan_tensor_get(p, (size_t)i, &t);
    if (pred)
        *pred = t.predicted_error;
    return t.format;
}

static void test_ties_share_format(void **state)
{
    (void)state;
    const char *rules = write_rules("tie.json", "{\"schema\":\"bitplan.rules/v1\",\"rules\":["
                                                "{\"tie\":[\"*.self_attn.q_proj.weight\",\"*.self_attn.k_proj.weight\","
                                                "\"re:.*\\\\.self_attn\\\\.v_proj\\\\.weight\"]},"
                                                "{\"tie\":[\"*.mlp.gate_proj.weight\",\"*.mlp.up_proj.weight\"]}]}");
    char json[2048];
    snprintf(json, sizeof json, BASE "\"budget\":{\"bits\":3.3},\"rules\":\"%s\"}", rules);
    bp_plan *tied = must_plan(json);
    bp_plan *free_p = must_plan(BASE "\"budget\":{\"bits\":3.3}}");
    double sum = 0;
    for (size_t i = 0; i < bp_plan_tensor_count(tied); i++) {
        bp_plan_tensor t;
        bp_plan_tensor_get(tied, i, &t);
        sum += t.predicted_error;
    }
    int differs = 0;
    for (int l = 0; l < 6; l++) {
        char q[96], k[96], v[96], g[96], u[96];
        snprintf(q, sizeof q, "model.layers.%d.self_attn.q_proj.weight", l);
        snprintf(k, sizeof k, "model.layers.%d.self_attn.k_proj.weight", l);
        snprintf(v, sizeof v, "model.layers.%d.self_attn.v_proj.weight", l);
        snprintf(g, sizeof g, "model.layers.%d.mlp.gate_proj.weight", l);
        snprintf(u, sizeof u, "model.layers.%d.mlp.up_proj.weight", l);
        char fq[64];
        snprintf(fq, sizeof fq, "%s", tensor_format(tied, q, NULL));
        assert_string_equal(fq, tensor_format(tied, k, NULL));
        assert_string_equal(fq, tensor_format(tied, v, NULL));
        char fg[64];
        snprintf(fg, sizeof fg, "%s", tensor_format(tied, g, NULL));
        assert_string_equal(fg, tensor_format(tied, u, NULL));
        char a[64];
        snprintf(a, sizeof a, "%s", tensor_format(free_p, q, NULL));
        differs |= strcmp(a, tensor_format(free_p, k, NULL)) != 0 || strcmp(a, tensor_format(free_p, v, NULL)) != 0;
        snprintf(a, sizeof a, "%s", tensor_format(free_p, g, NULL));
        differs |= strcmp(a, tensor_format(free_p, u, NULL)) != 0;
    }
    /* The group's error is the sum of its members' errors. */
    assert_true(fabs(sum - objective(tied)) <= 1e-9 * fabs(sum));
    /* Without the tie the optimum splits some group, so the tie costs. */
    assert_true(differs);
    assert_true(objective(tied) >= objective(free_p));
    bp_plan_destroy(&tied);
    bp_plan_destroy(&free_p);
}

static void test_tie_without_common_format_is_named(void **state)
{
    (void)state;
    const char *rules = write_rules("tie-bad.json", "{\"schema\":\"bitplan.rules/v1\",\"rules\":["
                                                    "{\"match\":\"*.q_proj.weight\",\"formats\":[\"int4_g64_asym\"]},"
                                                    "{\"match\":\"*.k_proj.weight\",\"formats\":[\"int8_g64_asym\"]},"
                                                    "{\"tie\":[\"*.q_proj.weight\",\"*.k_proj.weight\"]}]}");
    char json[2048];
    snprintf(json, sizeof json, BASE "\"budget\":{\"bits\":6},\"rules\":\"%s\"}", rules);
    char *msg = must_fail(json, BP_EINVAL);
    assert_non_null(strstr(msg, "model.layers.0.self_attn.q_proj.weight"));
    assert_non_null(strstr(msg, "model.layers.0.self_attn.k_proj.weight"));
    assert_non_null(strstr(msg, "no common allowed format"));
    free(msg);
}

/* ---- infeasibility -------------------------------------------------------------- */

static void test_infeasible_jointly_names_both(void **state)
{
    (void)state;
    /* int2 is the smallest, int4 has the fewest BOPS (4x4-bit ops): near
     * each minimum the two caps exclude each other. */
    const char *base2 = "{\"kind\":\"plan\",\"model\":\"" MODEL "\",\"metric\":\"mse\",\"model_hash\":false,"
                        "\"formats\":[\"int2_g64_asym\",\"int4_g64_asym\"],\"table\":\"" BP_TEST_TMPDIR
                        "/cons-24.table\",";
    char json[2048];
    snprintf(json, sizeof json, "%s\"budget\":{\"bytes\":1000},\"bops\":1}", base2);
    char *msg = must_fail(json, BP_EINFEASIBLE);
    /* Each alone: both named with their minimum. */
    double bytes_min = number_after(msg, "bytes <= 1000 B is below the smallest achievable ");
    double bops_min = number_after(msg, "bops <= 1 BOPS is below the smallest achievable ");
    free(msg);
    snprintf(json, sizeof json, "%s\"budget\":{\"bytes\":%.0f},\"bops\":%.17g}", base2, bytes_min * 1.02,
             bops_min * 1.02);
    msg = must_fail(json, BP_EINFEASIBLE);
    assert_non_null(strstr(msg, "cannot hold together"));
    double best_bops = number_after(msg, " the smallest bops is ");
    double best_bytes = number_after(msg, " the smallest bytes is ");
    assert_true(best_bops > bops_min * 1.02);
    assert_true(best_bytes > bytes_min * 1.02);
    free(msg);
    /* Lagrange and NSGA-II fail with the same diagnosis. */
    char json2[2200];
    snprintf(json2, sizeof json2, "%s\"budget\":{\"bytes\":%.0f},\"bops\":%.17g,\"search\":\"nsga2\"}", base2,
             bytes_min * 1.02, bops_min * 1.02);
    msg = must_fail(json2, BP_EINFEASIBLE);
    assert_non_null(strstr(msg, "cannot hold together"));
    free(msg);
}

static void test_dp_refuses_two_constraints(void **state)
{
    (void)state;
    char *msg = must_fail(BASE "\"budget\":{\"bits\":4},\"bops\":\"1P\",\"solver\":\"dp\"}", BP_EINVAL);
    assert_non_null(strstr(msg, "single constraint"));
    free(msg);
}

/* ---- searches ------------------------------------------------------------------- */

static void test_lagrange_and_nsga2_feasible(void **state)
{
    (void)state;
    bp_plan *ilp = must_plan(BASE "\"budget\":{\"bits\":3.4},\"latency_us\":400,\"profile\":\"cpu\"}");
    const char *names[] = {"bits", "latency_us"};
    const char *searches[] = {"lagrange", "nsga2"};
    for (size_t s = 0; s < 2; s++) {
        char json[2048];
        snprintf(json, sizeof json,
                 BASE "\"budget\":{\"bits\":3.4},\"latency_us\":400,\"profile\":\"cpu\",\"search\":\"%s\"}",
                 searches[s]);
        bp_plan *p = must_plan(json);
        assert_all_hold(p, names, 2);
        bp_plan_info info;
        bp_plan_get_info(p, &info);
        /* The ILP is exact: no search beats it. */
        assert_true(info.objective >= objective(ilp) * (1 - 1e-12));
        char *js = bp_plan_search_json(p);
        char want[64];
        snprintf(want, sizeof want, "\"search\":\"%s\"", searches[s]);
        assert_non_null(strstr(js, want));
        assert_string_equal(info.solver_name, searches[s]);
        free(js);
        bp_plan_destroy(&p);
    }
    /* The real-loss search measures the model on calibration tokens: without
     * them it is refused, naming what is missing. */
    char *msg = must_fail(BASE "\"budget\":{\"bits\":3.4},\"search\":\"evo\"}", BP_EINVAL);
    assert_non_null(strstr(msg, "calibration tokens"));
    free(msg);
    bp_plan_destroy(&ilp);
}

/* ---- ILP against exhaustive search ------------------------------------------------ */

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 11;
}

static void test_ilp_equals_exhaustive_two_constraints(void **state)
{
    (void)state;
    const char *fmts[] = {"int2_g64_asym", "int4_g64_asym", "int8_g64_asym"};
    const int64_t shapes[][2] = {{64, 128}, {128, 128}, {128, 64}, {192, 128}, {64, 192}, {128, 256}};
    for (uint64_t seed = 1; seed <= 6; seed++) {
        uint64_t rs = seed;
        bp_table *t = bp_table_new();
        bp_error err;
        bp_table_declare_metric(t, BP_METRIC_MSE, NULL);
        bp_table_set_meta(t, "model", "synthetic", NULL);
        bp_problem *prob = bp_problem_new(2);
        double min_b = 0, max_b = 0, min_o = 0, max_o = 0;
        char names[6][64];
        for (int i = 0; i < 6; i++) {
            snprintf(names[i], sizeof names[i], "model.layers.%d.mlp.up_proj.weight", i);
            assert_int_equal(bp_problem_add_item(prob, names[i], &err), BP_OK);
            double lo_b = INFINITY, hi_b = 0, lo_o = INFINITY, hi_o = 0;
            for (int k = 0; k < 3; k++) {
                bp_format f;
                assert_int_equal(bp_format_parse(fmts[k], &f, &err), BP_OK);
                bp_table_row row;
                bp_table_row_init(&row);
                row.tensor = names[i];
                row.format = fmts[k];
                row.rows = shapes[i][0];
                row.cols = shapes[i][1];
                row.params = (uint64_t)(row.rows * row.cols);
                row.bytes = bp_format_bytes(&f, row.rows, row.cols);
                row.metric[BP_METRIC_MSE] = (double)(lcg(&rs) % 100000) / (1000.0 * (k + 1) * (k + 1));
                assert_int_equal(bp_table_add_row(t, &row, &err), BP_OK);
                uint64_t bops = 0;
                assert_int_equal(bp_cost_bops(&f, row.rows, row.cols, 1, 0, &bops, &err), BP_OK);
                double c[2] = {(double)row.bytes, (double)bops};
                assert_int_equal(bp_problem_add_choice(prob, k, row.metric[BP_METRIC_MSE], c, &err), BP_OK);
                lo_b = fmin(lo_b, c[0]), hi_b = fmax(hi_b, c[0]);
                lo_o = fmin(lo_o, c[1]), hi_o = fmax(hi_o, c[1]);
            }
            min_b += lo_b, max_b += hi_b, min_o += lo_o, max_o += hi_o;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/cons-synth-%llu.table", BP_TEST_TMPDIR, (unsigned long long)seed);
        assert_int_equal(bp_table_write(t, path, &err), BP_OK);
        double cap_b = floor(min_b + (max_b - min_b) * (0.2 + 0.1 * (double)(seed % 4)));
        double cap_o = floor(min_o + (max_o - min_o) * (0.3 + 0.1 * (double)(seed % 3)));
        assert_int_equal(bp_problem_set_constraint(prob, 0, "bytes", cap_b, &err), BP_OK);
        assert_int_equal(bp_problem_set_constraint(prob, 1, "bops", cap_o, &err), BP_OK);
        bp_solution bf;
        memset(&bf, 0, sizeof bf);
        int brc = bp_solve_bruteforce(prob, 0, &bf, &err);
        char json[8192];
        snprintf(json, sizeof json,
                 "{\"kind\":\"plan\",\"table\":\"%s\",\"metric\":\"mse\",\"budget\":{\"bytes\":%.0f},"
                 "\"bops\":%.17g}",
                 path, cap_b, cap_o);
        bp_plan *plan = NULL;
        int rc = run_json(json, &plan, &err);
        if (brc == BP_EINFEASIBLE) {
            assert_int_equal(rc, BP_EINFEASIBLE);
        } else {
            assert_int_equal(brc, BP_OK);
            if (rc != BP_OK)
                fail_msg("seed %llu: %s", (unsigned long long)seed, err.msg);
            assert_true(fabs(objective(plan) - bf.objective) <= 1e-9 * fabs(bf.objective));
            for (int i = 0; i < 6; i++)
                assert_string_equal(tensor_format(plan, names[i], NULL), fmts[bf.choice[i]]);
        }
        bp_plan_destroy(&plan);
        bp_solution_free(&bf);
        bp_problem_destroy(&prob);
        bp_table_destroy(&t);
    }
}

/* ---- direct and task paths ------------------------------------------------------------ */

static void compare_paths(const char *spec_json)
{
    bp_error err;
    bp_plan *direct = must_plan(spec_json);
    char *a = bp_plan_to_string(direct, &err);
    char *b = NULL;
    int rc = bp_job_run_local(spec_json, strlen(spec_json), 1, &b, &err);
    if (rc != BP_OK)
        fail_msg("tasks: %s\n%s", err.msg, spec_json);
    assert_non_null(a);
    if (strcmp(a, b)) {
        /* Left for a diff. */
        FILE *fa = fopen(BP_TEST_TMPDIR "/cons-direct.json", "w"), *fb = fopen(BP_TEST_TMPDIR "/cons-tasks.json", "w");
        if (fa && fb) {
            fputs(a, fa);
            fputs(b, fb);
        }
        if (fa)
            fclose(fa);
        if (fb)
            fclose(fb);
        fail_msg("direct and task plans differ (%s): %s", BP_TEST_TMPDIR "/cons-{direct,tasks}.json", spec_json);
    }
    free(a);
    free(b);
    bp_plan_destroy(&direct);
}

static void test_direct_equals_tasks(void **state)
{
    (void)state;
    const char *rules = write_rules("tie2.json", "{\"schema\":\"bitplan.rules/v1\",\"rules\":["
                                                 "{\"tie\":[\"*.mlp.gate_proj.weight\",\"*.mlp.up_proj.weight\"]}]}");
    char tie[2048];
    snprintf(tie, sizeof tie, BASE "\"budget\":{\"bits\":3.5},\"bops\":\"40M\",\"rules\":\"%s\"}", rules);
    const char *specs[] = {
        BASE "\"budget\":{\"bytes\":\"500KB\"},\"latency_us\":400,\"profile\":\"cpu\"}",
        BASE "\"budget\":{\"bits\":3.6,\"bytes\":\"500KB\"},\"bops\":\"35M\"}",
        BASE "\"budget\":{\"bytes\":1000000},\"kv_context\":256,\"kv_format\":\"fp8_e4m3\"}",
        BASE "\"budget\":{\"bits\":3.4},\"latency_us\":400,\"profile\":\"h100\",\"phase\":\"prefill\",\"batch\":64,"
             "\"search\":\"lagrange\"}",
        BASE "\"budget\":{\"bits\":3.4},\"latency_us\":400,\"profile\":\"cpu\",\"search\":\"nsga2\"}",
        tie,
    };
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++)
        compare_paths(specs[i]);
    /* Infeasible: both paths fail with the same message. */
    const char *bad = BASE "\"budget\":{\"bits\":1.0},\"bops\":1}";
    char *m1 = must_fail(bad, BP_EINFEASIBLE);
    char *b = NULL;
    bp_error err;
    assert_int_not_equal(bp_job_run_local(bad, strlen(bad), 1, &b, &err), BP_OK);
    assert_non_null(strstr(err.msg, m1));
    free(m1);
}

/* ---- job spec -------------------------------------------------------------------------------- */

static void test_spec_round_trip(void **state)
{
    (void)state;
    const char *json = "{\"kind\":\"plan\",\"model\":\"m\",\"budget\":{\"bits\":\"3.25\",\"bytes\":\"7000000\"},"
                       "\"search\":\"nsga2\",\"granularity\":\"block\",\"block_size\":64,\"block_axis\":\"rows\","
                       "\"latency_us\":812.5,\"profile\":\"lat.csv\",\"profile_fallback\":\"a100\","
                       "\"phase\":\"prefill\",\"batch\":512,\"bops\":\"1.5G\",\"kv_context\":4096,"
                       "\"kv_batch\":3,\"kv_format\":\"int4\"}";
    bp_error err;
    bp_job_spec_doc *d = NULL;
    if (bp_job_spec_parse(json, strlen(json), "t", &d, &err) != BP_OK)
        fail_msg("%s", err.msg);
    const bp_job_spec *s = bp_job_spec_get(d);
    assert_int_equal(s->budget.kind, BP_BUDGET_BITS);
    assert_int_equal(s->budget_bytes, 7000000);
    assert_int_equal(s->search, BP_JOB_SEARCH_NSGA2);
    assert_int_equal(s->granularity, BP_JOB_GRANULARITY_BLOCK);
    assert_int_equal(s->block_size, 64);
    assert_int_equal(s->block_axis, BP_BLOCK_AXIS_ROWS);
    assert_true(s->latency_us == 812.5);
    assert_string_equal(s->profile, "lat.csv");
    assert_string_equal(s->profile_fallback, "a100");
    assert_int_equal(s->phase, BP_PHASE_PREFILL);
    assert_int_equal(s->batch, 512);
    assert_true(s->bops == 1.5e9);
    assert_int_equal(s->kv_context, 4096);
    assert_int_equal(s->kv_batch, 3);
    assert_int_equal(s->kv_format, BP_KV_INT4);
    char *a = bp_job_spec_to_json(s, &err);
    bp_job_spec_doc *d2 = NULL;
    if (bp_job_spec_parse(a, strlen(a), "t2", &d2, &err) != BP_OK)
        fail_msg("%s\n%s", err.msg, a);
    char *b = bp_job_spec_to_json(bp_job_spec_get(d2), &err);
    assert_string_equal(a, b);
    assert_true(bp_job_spec_get(d2)->bops == 1.5e9);
    assert_int_equal(bp_job_spec_get(d2)->budget_bytes, 7000000);
    free(a);
    free(b);
    bp_job_spec_doc_destroy(&d);
    bp_job_spec_doc_destroy(&d2);
}

static void test_spec_rejects_bad_constraints(void **state)
{
    (void)state;
    const char *bad[][2] = {
        {"\"latency_us\":100,\"profile\":\"h200x\"", "unknown profile"},
        {"\"latency_us\":-5,\"profile\":\"h100\"", "latency_us"},
        {"\"latency_us\":100", "--profile"},
        {"\"kv_batch\":4", "--kv-batch needs --kv-context"},
        {"\"search\":\"annealing\"", "search"},
        {"\"search\":\"default\"", "search"},
        {"\"bops\":\"12X\"", "suffix"},
        {"\"bops\":0", "bops"},
        {"\"granularity\":\"block\"", "--block-size"},
        {"\"block_size\":64", "--granularity block"},
        {"\"phase\":\"warmup\",\"latency_us\":1,\"profile\":\"cpu\"", "phase"},
        {"\"kv_format\":\"int3\",\"kv_context\":8", "kv_format"},
        {"\"profile_fallback\":\"h100\",\"latency_us\":1,\"profile\":\"h100\"", ".csv"},
        {"\"solver\":\"dp\",\"search\":\"lagrange\"", "exclude"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char json[1024];
        snprintf(json, sizeof json, "{\"kind\":\"plan\",\"model\":\"m\",\"budget\":{\"bytes\":1000},%s}", bad[i][0]);
        bp_error err;
        bp_job_spec_doc *d = NULL;
        if (bp_job_spec_parse(json, strlen(json), "t", &d, &err) != BP_EINVAL)
            fail_msg("accepted: %s", json);
        if (!strstr(err.msg, bad[i][1]))
            fail_msg("%s: message '%s' lacks '%s'", json, err.msg, bad[i][1]);
        assert_null(d);
    }
    /* --kv-context needs a bytes budget. */
    const char *kv = "{\"kind\":\"plan\",\"model\":\"m\",\"budget\":{\"bits\":3},\"kv_context\":8}";
    bp_error err;
    bp_job_spec_doc *d = NULL;
    assert_int_equal(bp_job_spec_parse(kv, strlen(kv), "t", &d, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "--budget-bytes"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_round_trip),
        cmocka_unit_test(test_spec_rejects_bad_constraints),
        cmocka_unit_test(test_ilp_equals_exhaustive_two_constraints),
        cmocka_unit_test(test_bytes_and_latency),
        cmocka_unit_test(test_bytes_and_bops),
        cmocka_unit_test(test_bits_and_bytes),
        cmocka_unit_test(test_kv_fixed_format),
        cmocka_unit_test(test_ties_share_format),
        cmocka_unit_test(test_tie_without_common_format_is_named),
        cmocka_unit_test(test_infeasible_jointly_names_both),
        cmocka_unit_test(test_dp_refuses_two_constraints),
        cmocka_unit_test(test_lagrange_and_nsga2_feasible),
        cmocka_unit_test(test_direct_equals_tasks),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
