/* Tests for the sensitivity table (optimizer/plan/table.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/table.h"

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", BP_TEST_TMPDIR, name);
    return buf[k];
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    fclose(f);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int same_double(double a, double b)
{
    if (isnan(a) && isnan(b))
        return 1;
    return memcmp(&a, &b, sizeof a) == 0;
}

static void test_names(void **state)
{
    (void)state;
    assert_int_equal(bp_table_metric_from_name("mse"), BP_METRIC_MSE);
    assert_int_equal(bp_table_metric_from_name("dkl"), BP_METRIC_DKL);
    assert_int_equal(bp_table_metric_from_name("bops"), BP_METRIC_BOPS);
    assert_int_equal(bp_table_metric_from_name("MSE"), -1);
    assert_int_equal(bp_table_metric_from_name(NULL), -1);
    assert_string_equal(bp_table_metric_name(BP_METRIC_LATENCY_US), "latency_us");
    assert_null(bp_table_metric_name(BP_METRIC_COUNT));
    assert_int_equal(bp_table_method_from_name("gptq"), BP_METHOD_GPTQ);
    assert_int_equal(bp_table_method_from_name("awq"), -1);
}

/* Every method name reads back as its value, and a table file keeps the
 * three methods of one cell apart. */
static void test_method_names_round_trip(void **state)
{
    (void)state;
    for (int m = 0; m < BP_METHOD_COUNT; m++) {
        const char *name = bp_table_method_name((bp_quant_method)m);
        assert_non_null(name);
        assert_int_equal(bp_table_method_from_name(name), m);
    }
    assert_string_equal(bp_table_method_name(BP_METHOD_GPTQ_ACT), "gptq_act");
    assert_int_equal(bp_table_method_from_name("GPTQ_ACT"), -1);
    const char *path = tmp_path("table_methods.csv");
    write_text(path, "# bitplan.table/v1\ntensor,format,method,bytes,gptq\n"
                     "a,f,gptq_act,5,1\na,f,gptq,5,2\na,f,rtn,5,3\n");
    bp_table *t = NULL;
    bp_error e;
    if (bp_table_read(path, &t, &e))
        fail_msg("%s", e.msg);
    const char *out = tmp_path("table_methods_out.csv");
    assert_int_equal(bp_table_write(t, out, &e), BP_OK);
    bp_table_destroy(&t);
    if (bp_table_read(out, &t, &e))
        fail_msg("%s", e.msg);
    static const double want[] = {3, 2, 1}; /* by method value */
    for (int m = 0; m < BP_METHOD_COUNT; m++) {
        long r = bp_table_find(t, "a", NULL, "f", (bp_quant_method)m);
        assert_true(r >= 0);
        bp_table_row row;
        assert_int_equal(bp_table_get_row(t, (size_t)r, &row), BP_OK);
        assert_int_equal(row.method, m);
        assert_true(row.metric[BP_METRIC_GPTQ] == want[m]);
    }
    bp_table_destroy(&t);
}

static void test_round_trip_bit_exact(void **state)
{
    (void)state;
    static const double vals[] = {0.1,
                                  1.0 / 3.0,
                                  5e-324,
                                  2.2250738585072014e-308,
                                  1.7976931348623157e308,
                                  0.0,
                                  123456789.123456789,
                                  9.999999999999999e-7};
    const size_t nv = sizeof vals / sizeof vals[0];
    static const char *const names[] = {"model.layers.0.mlp.up_proj.weight",
                                        "weird,name \"quoted\"", "#hash start",
                                        " padded "};
    bp_table *t = bp_table_new();
    assert_non_null(t);
    bp_error e;
    assert_int_equal(bp_table_set_meta(t, "model", "/models/x y", &e), BP_OK);
    assert_int_equal(bp_table_set_meta(t, "model_hash", "blake2b256:abc=def", &e), BP_OK);
    assert_int_equal(bp_table_set_meta(t, "tool_version", "0.1.0", &e), BP_OK);
    assert_int_equal(bp_table_set_meta(t, "model", "/models/x", &e), BP_OK); /* replace */
    size_t n = 0;
    for (size_t i = 0; i < 4; i++) {
        for (size_t j = 0; j < nv; j++) {
            bp_table_row r;
            bp_table_row_init(&r);
            r.tensor = names[i];
            char fmt[32];
            snprintf(fmt, sizeof fmt, "int%zu_g128_asym", 2 + j % 7);
            r.format = fmt;
            r.block = (j % 3 == 1) ? "c0" : NULL;
            r.method = (j % 2) ? BP_METHOD_GPTQ : BP_METHOD_RTN;
            r.bytes = 1000 + j;
            if (j % 2 == 0) {
                r.rows = 128;
                r.cols = 384;
                r.params = r.block ? 99 : 128 * 384;
            }
            r.metric[BP_METRIC_MSE] = vals[j];
            r.metric[BP_METRIC_HDIAG] = (j % 2) ? NAN : vals[(j + 1) % nv];
            r.metric[BP_METRIC_LATENCY_US] = 17.25 * (double)j;
            assert_int_equal(bp_table_add_row(t, &r, &e), BP_OK);
            n++;
        }
    }
    assert_int_equal(bp_table_count(t), n);
    assert_true(bp_table_has_metric(t, BP_METRIC_HDIAG));
    assert_false(bp_table_has_metric(t, BP_METRIC_DKL));
    const char *p1 = tmp_path("table_rt1.csv"), *p2 = tmp_path("table_rt2.csv");
    assert_int_equal(bp_table_write(t, p1, &e), BP_OK);

    bp_table *u = NULL;
    int rc = bp_table_read(p1, &u, &e);
    if (rc)
        fail_msg("%s", e.msg);
    assert_int_equal(bp_table_count(u), n);
    assert_string_equal(bp_table_get_meta(u, "model"), "/models/x");
    assert_string_equal(bp_table_get_meta(u, "model_hash"), "blake2b256:abc=def");
    assert_int_equal(bp_table_meta_count(u), 3);
    const char *k0;
    assert_int_equal(bp_table_meta_at(u, 0, &k0, NULL), BP_OK);
    assert_string_equal(k0, "model");
    for (size_t i = 0; i < n; i++) {
        bp_table_row a, b;
        assert_int_equal(bp_table_get_row(t, i, &a), BP_OK);
        assert_int_equal(bp_table_get_row(u, i, &b), BP_OK);
        assert_string_equal(a.tensor, b.tensor);
        assert_string_equal(a.format, b.format);
        if (a.block)
            assert_string_equal(a.block, b.block);
        else
            assert_null(b.block);
        assert_int_equal(a.method, b.method);
        assert_int_equal(a.bytes, b.bytes);
        assert_int_equal(a.rows, b.rows);
        assert_int_equal(a.cols, b.cols);
        assert_int_equal(a.params, b.params);
        for (int m = 0; m < BP_METRIC_COUNT; m++)
            assert_true(same_double(a.metric[m], b.metric[m]));
    }
    assert_int_equal(bp_table_find(u, " padded ", "c0", "int3_g128_asym", BP_METHOD_GPTQ), 25);
    assert_int_equal(bp_table_find(u, " padded ", NULL, "int3_g128_asym", BP_METHOD_GPTQ), -1);
    /* Re-writing what was read gives the same bytes. */
    assert_int_equal(bp_table_write(u, p2, &e), BP_OK);
    size_t l1, l2;
    char *b1 = slurp(p1, &l1), *b2 = slurp(p2, &l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(b1, b2, l1);
    assert_non_null(strstr(b1, "\"weird,name \"\"quoted\"\"\""));
    const char *head = "# bitplan.table/v1\n# model=/models/x\n";
    assert_true(strncmp(b1, head, strlen(head)) == 0);
    free(b1);
    free(b2);
    bp_table_destroy(&u);
    bp_table_destroy(&t);
    bp_table_destroy(&t); /* safe twice */
    assert_null(t);
}

static void test_hand_written(void **state)
{
    (void)state;
    const char *path = tmp_path("table_hand.csv");
    write_text(path,
               "\xef\xbb\xbf# bitplan.table/v1\r\n"
               "# A table written by hand.\r\n"
               "# model = /data/llama  \r\n"
               "\r\n"
               " format , tensor,bytes,notes,mse,dkl\r\n"
               "int4_g128_asym, \"model.layers.0.self_attn.q_proj.weight\" ,8704,"
               "\"first, \"\"best\"\" guess\",1.5e-3,\r\n"
               "# a comment between rows\r\n"
               "int8_pc_sym,model.layers.0.self_attn.q_proj.weight,16640,,2.5e-5,0.001\r\n"
               "\"int2_g64_sym\",model.layers.0.self_attn.q_proj.weight,  4608 ,x,,\r\n");
    bp_table *t = NULL;
    bp_error e;
    int rc = bp_table_read(path, &t, &e);
    if (rc)
        fail_msg("%s", e.msg);
    assert_int_equal(bp_table_count(t), 3);
    assert_string_equal(bp_table_get_meta(t, "model"), "/data/llama");
    assert_true(bp_table_has_metric(t, BP_METRIC_MSE));
    assert_true(bp_table_has_metric(t, BP_METRIC_DKL));
    bp_table_row r;
    assert_int_equal(bp_table_get_row(t, 0, &r), BP_OK);
    assert_string_equal(r.tensor, "model.layers.0.self_attn.q_proj.weight");
    assert_string_equal(r.format, "int4_g128_asym");
    assert_null(r.block);
    assert_int_equal(r.method, BP_METHOD_RTN);
    assert_int_equal(r.bytes, 8704);
    assert_int_equal(r.rows, 0);
    assert_true(r.metric[BP_METRIC_MSE] == 1.5e-3);
    assert_true(isnan(r.metric[BP_METRIC_DKL]));
    assert_true(isnan(r.metric[BP_METRIC_HDIAG]));
    assert_int_equal(bp_table_get_row(t, 2, &r), BP_OK);
    assert_string_equal(r.format, "int2_g64_sym");
    assert_int_equal(r.bytes, 4608);
    assert_true(isnan(r.metric[BP_METRIC_MSE]));
    assert_int_equal(bp_table_get_row(t, 3, &r), BP_EINVAL);
    bp_table_destroy(&t);
}

typedef struct bad_case {
    const char *name;
    const char *text;
    int code;
    const char *msg;
} bad_case;

#define HDR "# bitplan.table/v1\n"
#define COLS "tensor,format,bytes,mse\n"

static const bad_case bad_cases[] = {
    {"missing_required", HDR "tensor,format,mse\na,int4_g128_sym,1\n", BP_EFORMAT,
     ":2: missing required column \"bytes\""},
    {"bad_number", HDR COLS "a,f,10,abc\n", BP_EFORMAT,
     ":3: column \"mse\": not a number: \"abc\""},
    {"nan", HDR COLS "a,f,10,nan\n", BP_EFORMAT, ":3: column \"mse\": not a finite number"},
    {"inf", HDR COLS "a,f,10,-inf\n", BP_EFORMAT, "column \"mse\": not a finite number"},
    {"negative_bytes", HDR COLS "a,f,-5,1\n", BP_EFORMAT,
     ":3: column \"bytes\": negative value -5"},
    {"zero_bytes", HDR COLS "a,f,0,1\n", BP_EFORMAT, "column \"bytes\": must be > 0"},
    {"fraction_bytes", HDR COLS "a,f,1.5,1\n", BP_EFORMAT,
     "column \"bytes\": not a non-negative integer"},
    {"huge_bytes", HDR COLS "a,f,99999999999999999999999,1\n", BP_EFORMAT,
     "column \"bytes\": integer out of range"},
    {"negative_error", HDR COLS "a,f,5,-1e-13\n", BP_EFORMAT,
     ":3: column \"mse\": negative value"},
    {"duplicate_key", HDR COLS "a,f,5,1\nb,f,5,1\n\na,f,6,2\n", BP_EFORMAT,
     ":6: duplicate key (tensor \"a\", block \"\", format \"f\", method rtn): first on line 3"},
    {"duplicate_column", HDR "tensor,format,bytes,mse,mse\n", BP_EFORMAT,
     ":2: duplicate column \"mse\""},
    {"duplicate_unknown_column", HDR "tensor,format,bytes,mse,x,x\n", BP_EFORMAT,
     "duplicate column \"x\""},
    {"wrong_schema", "# bitplan.table/v2\n" COLS, BP_EFORMAT,
     ":1: first line must be \"# bitplan.table/v1\""},
    {"no_schema", COLS "a,f,5,1\n", BP_EFORMAT, ":1: first line must be"},
    {"empty_file", "", BP_EFORMAT, "empty file"},
    {"no_header", HDR "# k=v\n", BP_EFORMAT, "no header row"},
    {"no_metric", HDR "tensor,format,bytes,latency_us\n", BP_EFORMAT,
     ":2: no metric column"},
    {"field_count", HDR COLS "a,f,5\n", BP_EFORMAT, ":3: 3 fields, but the header has 4"},
    {"unterminated_quote", HDR COLS "\"a,f,5,1\n", BP_EFORMAT,
     ":3: field 1: unterminated quoted field"},
    {"text_after_quote", HDR COLS "\"a\"x,f,5,1\n", BP_EFORMAT, "text after a closing quote"},
    {"empty_tensor", HDR COLS ",f,5,1\n", BP_EFORMAT, "column \"tensor\": empty tensor name"},
    {"bad_method", HDR "tensor,format,bytes,method,mse\na,f,5,awq,1\n", BP_EFORMAT,
     "column \"method\": unknown method \"awq\""},
    {"params_mismatch", HDR "tensor,format,bytes,rows,cols,params,mse\na,f,5,2,3,7,1\n",
     BP_EFORMAT, ":3: tensor \"a\": params 7 != rows 2 x cols 3"},
    {"duplicate_meta", HDR "# a=1\n# a=2\n" COLS, BP_EFORMAT,
     ":3: duplicate metadata key \"a\""},
};

static void test_malformed(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        char name[128];
        snprintf(name, sizeof name, "table_bad_%s.csv", c->name);
        const char *path = tmp_path(name);
        write_text(path, c->text);
        bp_table *t = (bp_table *)1;
        bp_error e;
        bp_error_clear(&e);
        int rc = bp_table_read(path, &t, &e);
        if (rc != c->code || !strstr(e.msg, c->msg) || !strstr(e.msg, name) || t)
            fail_msg("case %s: rc %d, message \"%s\" (want %d, \"%s\")", c->name, rc, e.msg,
                     c->code, c->msg);
    }
    bp_table *t = NULL;
    bp_error e;
    assert_int_equal(bp_table_read(tmp_path("does-not-exist.csv"), &t, &e), BP_ENOTFOUND);
    assert_non_null(strstr(e.msg, "does-not-exist.csv"));
}

static void test_add_row_validation(void **state)
{
    (void)state;
    bp_table *t = bp_table_new();
    bp_error e;
    bp_table_row r;
    bp_table_row_init(&r);
    r.tensor = "w";
    r.format = "int4_g128_sym";
    r.bytes = 10;
    r.metric[BP_METRIC_MSE] = 1;
    /* No metric column yet -> write refuses. */
    assert_int_equal(bp_table_write(t, tmp_path("table_empty.csv"), &e), BP_EINVAL);
    assert_int_equal(bp_table_add_row(t, &r, &e), BP_OK);
    assert_int_equal(bp_table_add_row(t, &r, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "duplicate row"));
    r.method = BP_METHOD_GPTQ;
    assert_int_equal(bp_table_add_row(t, &r, &e), BP_OK);
    r.block = "b1";
    r.metric[BP_METRIC_HFULL] = -1.0;
    assert_int_equal(bp_table_add_row(t, &r, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "hfull must be finite and >= 0"));
    r.metric[BP_METRIC_HFULL] = INFINITY;
    assert_int_equal(bp_table_add_row(t, &r, &e), BP_EINVAL);
    r.metric[BP_METRIC_HFULL] = NAN;
    r.bytes = 0;
    assert_int_equal(bp_table_add_row(t, &r, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "bytes must be > 0"));
    r.bytes = 5;
    r.tensor = "bad\nname";
    assert_int_equal(bp_table_add_row(t, &r, &e), BP_EINVAL);
    r.tensor = "";
    assert_int_equal(bp_table_add_row(t, &r, &e), BP_EINVAL);
    r.tensor = "w";
    assert_int_equal(bp_table_add_row(t, &r, &e), BP_OK);
    assert_int_equal(bp_table_count(t), 3);
    assert_int_equal(bp_table_find(t, "w", "b1", "int4_g128_sym", BP_METHOD_GPTQ), 2);
    assert_int_equal(bp_table_set_meta(t, "bad key", "v", &e), BP_EINVAL);
    assert_int_equal(bp_table_set_meta(t, "k", " v", &e), BP_EINVAL);
    assert_int_equal(bp_table_set_meta(t, "k", "a\nb", &e), BP_EINVAL);
    assert_null(bp_table_get_meta(t, "k"));
    bp_table_destroy(&t);
}

/* Enough rows to exercise pool chunks and hash growth. */
static void test_many_rows(void **state)
{
    (void)state;
    bp_table *t = bp_table_new();
    bp_error e;
    const size_t n = 50000;
    char name[64];
    for (size_t i = 0; i < n; i++) {
        bp_table_row r;
        bp_table_row_init(&r);
        snprintf(name, sizeof name, "model.layers.%zu.mlp.down_proj.weight", i / 10);
        r.tensor = name;
        r.format = (i % 10 < 5) ? "int4_g128_sym" : "int8_pc_sym";
        r.method = (i % 5) % 2 ? BP_METHOD_GPTQ : BP_METHOD_RTN;
        char blk[16];
        snprintf(blk, sizeof blk, "%zu", (i % 5) / 2);
        r.block = blk;
        r.bytes = i + 1;
        r.metric[BP_METRIC_GPTQ] = (double)i * 1e-3;
        assert_int_equal(bp_table_add_row(t, &r, &e), BP_OK);
    }
    const char *path = tmp_path("table_many.csv");
    assert_int_equal(bp_table_write(t, path, &e), BP_OK);
    bp_table *u = NULL;
    assert_int_equal(bp_table_read(path, &u, &e), BP_OK);
    assert_int_equal(bp_table_count(u), n);
    bp_table_row r;
    assert_int_equal(bp_table_get_row(u, n - 1, &r), BP_OK);
    assert_int_equal(r.bytes, n);
    assert_true(r.metric[BP_METRIC_GPTQ] == (double)(n - 1) * 1e-3);
    assert_int_equal(bp_table_find(u, "model.layers.1234.mlp.down_proj.weight", "1",
                                   "int8_pc_sym", BP_METHOD_GPTQ),
                     12348);
    bp_table_destroy(&u);
    bp_table_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_method_names_round_trip),
        cmocka_unit_test(test_round_trip_bit_exact),
        cmocka_unit_test(test_hand_written),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_add_row_validation),
        cmocka_unit_test(test_many_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
