/* End-to-end tests of `bitplan pareto`: the JSON front against the table
 * it came from, determinism, the PNG, and argument errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>

#include "bitplan/table.h"
#include "cli_test_util.h"

#define TABLE BP_TEST_TMPDIR "/pareto_table.csv"
#define OUT BP_TEST_TMPDIR "/pareto_front.json"

static int make_table(void **state)
{
    (void)state;
    remove(TABLE);
    int rc = run_bitplan("pareto_plan", "plan --model " MODEL_DIR " --budget-bits 4 --workers 0 --table " TABLE
                                        " --metric mse --quiet --out " BP_TEST_TMPDIR "/pareto_plan.json");
    if (rc != 0) {
        char *e = captured("pareto_plan", "err");
        fprintf(stderr, "plan failed (%d): %s\n", rc, e ? e : "");
        free(e);
        return -1;
    }
    return 0;
}

static json_t *load_json(const char *path)
{
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        fail_msg("%s: %s (line %d)", path, je.text, je.line);
    return j;
}

static double num(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v))
        fail_msg("field '%s' is missing or not a number", key);
    return json_number_value(v);
}

/* Sum the table cells named by an assignment, tensor by tensor in the
 * order written (the tool's item order). */
static void assignment_sums(const bp_table *t, const json_t *asg, double *bytes, double *error)
{
    const char *tensor;
    json_t *fmt;
    *bytes = 0.0;
    *error = 0.0;
    json_object_foreach((json_t *)asg, tensor, fmt) {
        long r = bp_table_find(t, tensor, NULL, json_string_value(fmt), BP_METHOD_RTN);
        if (r < 0)
            fail_msg("assignment names a cell not in the table: %s / %s", tensor, json_string_value(fmt));
        bp_table_row row;
        assert_int_equal(bp_table_get_row(t, (size_t)r, &row), BP_OK);
        *bytes += (double)row.bytes;
        *error += row.metric[BP_METRIC_MSE];
    }
}

static int close_rel(double a, double b)
{
    return fabs(a - b) <= 1e-12 * fmax(fabs(a), fabs(b));
}

static void test_pareto_exact_front_matches_table(void **state)
{
    (void)state;
    remove(OUT);
    assert_int_equal(run_bitplan("pareto_exact", "pareto --table " TABLE " --metric mse --points 20 --quiet --out " OUT),
                     0);
    bp_table *t = NULL;
    assert_int_equal(bp_table_read(TABLE, &t, NULL), BP_OK);
    size_t n_tensors = 0;
    for (size_t r = 0; r < bp_table_count(t); r++) {
        bp_table_row row;
        bp_table_get_row(t, r, &row);
        if (!strcmp(row.format, "int4_g128_sym"))
            n_tensors++;
    }
    json_t *j = load_json(OUT);
    assert_string_equal(json_string_value(json_object_get(j, "schema")), "bitplan.pareto/v1");
    assert_string_equal(json_string_value(json_object_get(j, "metric")), "mse");
    assert_string_equal(json_string_value(json_object_get(j, "search")), "exact");
    double params = num(j, "params");
    json_t *front = json_object_get(j, "front");
    assert_true(json_is_array(front));
    assert_true(json_array_size(front) >= 10);
    double prev_bytes = -1, prev_err = INFINITY;
    size_t k;
    json_t *pt;
    json_array_foreach(front, k, pt) {
        double bytes = num(pt, "bytes"), error = num(pt, "error");
        if (!(bytes > prev_bytes && error < prev_err))
            fail_msg("front point %zu (%.17g bytes, %.17g) does not improve on the previous one", k, bytes, error);
        prev_bytes = bytes;
        prev_err = error;
        assert_true(close_rel(num(pt, "bits_per_weight"), 8.0 * bytes / params));
        json_t *asg = json_object_get(pt, "assignment");
        assert_int_equal(json_object_size(asg), n_tensors);
        double sb, se;
        assignment_sums(t, asg, &sb, &se);
        assert_true(sb == bytes);
        if (!close_rel(se, error))
            fail_msg("point %zu: error %.17g, table cells sum to %.17g", k, error, se);
        assert_null(json_object_get(pt, "latency_us"));
    }
    json_t *uni = json_object_get(j, "uniform");
    assert_true(json_is_array(uni));
    int saw_int4 = 0;
    double min_uni_bytes = INFINITY, min_uni_err = INFINITY;
    json_array_foreach(uni, k, pt) {
        const char *f = json_string_value(json_object_get(pt, "format"));
        assert_non_null(f);
        double b = 0, e = 0;
        for (size_t r = 0; r < bp_table_count(t); r++) {
            bp_table_row row;
            bp_table_get_row(t, r, &row);
            if (!strcmp(row.format, f)) {
                b += (double)row.bytes;
                e += row.metric[BP_METRIC_MSE];
            }
        }
        assert_true(b == num(pt, "bytes"));
        assert_true(close_rel(e, num(pt, "error")));
        saw_int4 |= !strcmp(f, "int4_g128_sym");
        min_uni_bytes = fmin(min_uni_bytes, b);
        min_uni_err = fmin(min_uni_err, e);
    }
    assert_true(saw_int4);
    /* The front spans the cheapest and the most accurate plans, which no
     * uniform format can beat. */
    assert_true(num(json_array_get(front, 0), "bytes") <= min_uni_bytes);
    assert_true(num(json_array_get(front, json_array_size(front) - 1), "error") <= min_uni_err);
    json_decref(j);
    bp_table_destroy(&t);
}

static void test_pareto_is_deterministic(void **state)
{
    (void)state;
    const char *runs[] = {"pareto --table " TABLE " --quiet --points 8 --out " BP_TEST_TMPDIR "/pareto_d%d.json",
                          "pareto --table " TABLE " --quiet --search nsga2 --generations 15 --seed 7 --points 40 --out "
                          BP_TEST_TMPDIR "/pareto_d%d.json"};
    for (size_t r = 0; r < 2; r++) {
        char *text[2];
        for (int k = 0; k < 2; k++) {
            char args[1024], path[512];
            snprintf(args, sizeof args, runs[r], k);
            snprintf(path, sizeof path, BP_TEST_TMPDIR "/pareto_d%d.json", k);
            remove(path);
            /* A different thread count must not change a byte. */
            setenv("OMP_NUM_THREADS", k ? "1" : "2", 1);
            assert_int_equal(run_bitplan("pareto_det", args), 0);
            text[k] = slurp(path, NULL);
            assert_non_null(text[k]);
        }
        assert_string_equal(text[0], text[1]);
        free(text[0]);
        free(text[1]);
    }
    setenv("OMP_NUM_THREADS", "2", 1);
}

static void test_pareto_profile_adds_latency(void **state)
{
    (void)state;
    remove(OUT);
    assert_int_equal(run_bitplan("pareto_prof", "pareto --table " TABLE " --profile h100 --generations 20 --quiet --out " OUT),
                     0);
    json_t *j = load_json(OUT);
    assert_string_equal(json_string_value(json_object_get(j, "search")), "nsga2");
    assert_string_equal(json_string_value(json_object_get(j, "profile")), "h100");
    json_t *front = json_object_get(j, "front");
    size_t n = json_array_size(front);
    assert_true(n >= 10);
    for (size_t a = 0; a < n; a++) {
        json_t *p = json_array_get(front, a);
        assert_true(num(p, "latency_us") > 0);
        if (a)
            assert_true(num(p, "bytes") >= num(json_array_get(front, a - 1), "bytes"));
        for (size_t b = 0; b < n; b++) {
            json_t *q = json_array_get(front, b);
            if (a != b && num(q, "bytes") <= num(p, "bytes") && num(q, "error") <= num(p, "error") &&
                num(q, "latency_us") <= num(p, "latency_us"))
                fail_msg("front point %zu is dominated by point %zu", a, b);
        }
    }
    json_t *u = json_array_get(json_object_get(j, "uniform"), 0);
    assert_true(num(u, "latency_us") > 0);
    json_decref(j);
}

static int have_gnuplot(void)
{
    return system("command -v gnuplot >/dev/null 2>&1") == 0;
}

static void test_pareto_png(void **state)
{
    (void)state;
    if (!have_gnuplot()) {
        printf("skipped: gnuplot not installed\n");
        skip();
    }
    const char *png = BP_TEST_TMPDIR "/pareto_front.png";
    remove(png);
    assert_int_equal(run_bitplan("pareto_png", "pareto --table " TABLE " --quiet --points 10 --out " OUT
                                               " --png " BP_TEST_TMPDIR "/pareto_front.png"),
                     0);
    size_t len = 0;
    char *data = slurp(png, &len);
    assert_non_null(data);
    assert_true(len > 1000);
    assert_memory_equal(data, "\x89PNG\r\n\x1a\n", 8);
    free(data);
}

/* Without gnuplot the JSON is still written and the failure says why. */
static void test_pareto_without_gnuplot(void **state)
{
    (void)state;
    remove(OUT);
    /* An empty PATH hides gnuplot from bitplan alone (the shell and the
     * binary are started by absolute path). */
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "PATH=/nonexistent-dir %s pareto --table %s --quiet --points 5 --out %s --png %s/pareto_x.png "
             ">%s/pareto_nognu.out 2>%s/pareto_nognu.err",
             BP_BINARY, TABLE, OUT, BP_TEST_TMPDIR, BP_TEST_TMPDIR, BP_TEST_TMPDIR);
    int st = system(cmd);
    assert_true(st != -1 && WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
    char *err = captured("pareto_nognu", "err");
    assert_non_null(strstr(err, "gnuplot is not installed"));
    assert_non_null(strstr(err, OUT));
    free(err);
    json_t *j = load_json(OUT);
    assert_true(json_array_size(json_object_get(j, "front")) >= 2);
    json_decref(j);
}

static void test_pareto_bad_arguments(void **state)
{
    (void)state;
    const struct {
        const char *args;
        int rc;
        const char *says;
    } cases[] = {
        {"pareto --table /nonexistent/t.csv", 1, "/nonexistent/t.csv"},
        {"pareto --table " TABLE " --metric nope", 2, "nope"},
        {"pareto --table " TABLE " --metric hdiag", 1, "hdiag"},
        {"pareto --table " TABLE " --generations abc", 2, "--generations"},
        {"pareto --table " TABLE " --generations -3", 2, "--generations"},
        {"pareto --table " TABLE " --population 7", 2, "--population"},
        {"pareto --table " TABLE " --points 1", 2, "--points"},
        {"pareto --table " TABLE " --search magic", 2, "magic"},
        {"pareto --table " TABLE " --search exact --profile h100", 2, "--profile"},
        {"pareto --table " TABLE " --profile nosuchgpu", 1, "nosuchgpu"},
        {"pareto --table " TABLE " --formats int9_g128_sym", 1, "int9"},
        {"pareto --metric mse", 2, "--table"},
        {"pareto --table " TABLE " extra", 2, "extra"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = run_bitplan("pareto_bad", cases[i].args);
        if (rc != cases[i].rc)
            fail_msg("'bitplan %s' exited %d, expected %d", cases[i].args, rc, cases[i].rc);
        char *err = captured("pareto_bad", "err");
        assert_non_null(err);
        if (!strstr(err, cases[i].says))
            fail_msg("'bitplan %s': message does not name '%s': %s", cases[i].args, cases[i].says, err);
        free(err);
    }
}

static void test_pareto_formats_subset(void **state)
{
    (void)state;
    remove(OUT);
    assert_int_equal(run_bitplan("pareto_fmt", "pareto --table " TABLE " --formats int2_g64_sym,int4_g64_sym,int8_pc_sym"
                                               " --quiet --out " OUT),
                     0);
    json_t *j = load_json(OUT);
    assert_int_equal(json_array_size(json_object_get(j, "uniform")), 3);
    size_t k;
    json_t *pt;
    json_array_foreach(json_object_get(j, "front"), k, pt) {
        const char *tensor;
        json_t *f;
        json_object_foreach(json_object_get(pt, "assignment"), tensor, f) {
            const char *s = json_string_value(f);
            assert_true(!strcmp(s, "int2_g64_sym") || !strcmp(s, "int4_g64_sym") || !strcmp(s, "int8_pc_sym"));
        }
    }
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pareto_exact_front_matches_table),
        cmocka_unit_test(test_pareto_is_deterministic),
        cmocka_unit_test(test_pareto_profile_adds_latency),
        cmocka_unit_test(test_pareto_png),
        cmocka_unit_test(test_pareto_without_gnuplot),
        cmocka_unit_test(test_pareto_bad_arguments),
        cmocka_unit_test(test_pareto_formats_subset),
    };
    return cmocka_run_group_tests(tests, make_table, NULL);
}
