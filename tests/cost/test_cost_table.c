/* Tests for measured latency tables (optimizer/cost/latency_table.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bitplan/cost.h"

static void expect_err(int rc, int code, const bp_error *e, const char *needle)
{
    if (rc != code)
        fail_msg("expected %s, got %s (%s)", bp_error_name(code), bp_error_name(rc), e->msg);
    if (!strstr(e->msg, needle))
        fail_msg("message \"%s\" lacks \"%s\"", e->msg, needle);
}

static bp_format fmt(const char *name)
{
    bp_format f;
    assert_int_equal(bp_format_parse(name, &f, NULL), BP_OK);
    return f;
}

static bp_latency_table *parse(const char *text)
{
    bp_latency_table *t = NULL;
    bp_error e;
    if (bp_latency_table_from_text(text, "t.csv", &t, &e))
        fail_msg("%s", e.msg);
    return t;
}

static double look(const bp_latency_table *t, int64_t r, int64_t c, const char *f,
                   bp_cost_phase ph, int64_t b)
{
    bp_format ff = fmt(f);
    double us;
    bp_error e;
    if (bp_latency_table_lookup(t, r, c, &ff, ph, b, &us, &e))
        fail_msg("%s", e.msg);
    return us;
}

static void test_basic(void **state)
{
    (void)state;
    bp_latency_table *t = parse("# measured on box 7\n"
                                "\n"
                                "rows,cols,format,latency_us\n"
                                "4096,4096,int4_g128_asym,11.5\n"
                                "  # indented comment\n"
                                "4096, 4096 ,f16,27.25\r\n"
                                "11008,4096,int4_g128_asym,2.5e1\n"
                                "4096,4096,int8_pc_sym,15"); /* no final newline */
    assert_int_equal(bp_latency_table_count(t), 4);
    /* Without phase/batch columns an entry serves every query. */
    assert_true(look(t, 4096, 4096, "int4_g128_asym", BP_PHASE_DECODE, 1) == 11.5);
    assert_true(look(t, 4096, 4096, "int4_g128_asym", BP_PHASE_PREFILL, 512) == 11.5);
    assert_true(look(t, 4096, 4096, "f16", BP_PHASE_DECODE, 8) == 27.25);
    assert_true(look(t, 11008, 4096, "int4_g128_asym", BP_PHASE_DECODE, 1) == 25);
    assert_true(look(t, 4096, 4096, "int8_pc_sym", BP_PHASE_DECODE, 1) == 15);

    bp_format f = fmt("int4_g128_asym");
    double us;
    bp_error e;
    /* A missing entry names the shape and format. */
    expect_err(bp_latency_table_lookup(t, 4096, 11008, &f, BP_PHASE_DECODE, 1, &us, &e),
               BP_ENOTFOUND, &e,
               "t.csv: no latency entry for 4096x11008 int4_g128_asym decode batch 1");
    assert_true(isnan(us));
    bp_format g = fmt("int4_g128_sym");
    expect_err(bp_latency_table_lookup(t, 4096, 4096, &g, BP_PHASE_PREFILL, 64, &us, &e),
               BP_ENOTFOUND, &e, "4096x4096 int4_g128_sym prefill batch 64");
    expect_err(bp_latency_table_lookup(t, 4096, 4096, &f, BP_PHASE_DECODE, 0, &us, &e),
               BP_EINVAL, &e, "must be >= 1");
    g.kind = (bp_format_kind)42;
    expect_err(bp_latency_table_lookup(t, 4096, 4096, &g, BP_PHASE_DECODE, 1, &us, &e),
               BP_EINVAL, &e, "t.csv: format \"int4_g128_sym\": fields do not match");
    bp_latency_table_destroy(&t);
    assert_null(t);
    bp_latency_table_destroy(&t);
}

static void test_phase_batch_specificity(void **state)
{
    (void)state;
    /* Columns in any order; empty cells are wildcards. */
    bp_latency_table *t = parse("format,phase,batch,rows,cols,latency_us\n"
                                "f16,,,4096,4096,100\n"
                                "f16,decode,,4096,4096,30\n"
                                "f16,decode,1,4096,4096,20\n"
                                "f16,decode,8,4096,4096,22\n"
                                "f16,prefill,512,4096,4096,900\n"
                                "int8_pc_sym,prefill,512,4096,4096,500\n");
    assert_int_equal(bp_latency_table_count(t), 6);
    assert_true(look(t, 4096, 4096, "f16", BP_PHASE_DECODE, 1) == 20);
    assert_true(look(t, 4096, 4096, "f16", BP_PHASE_DECODE, 8) == 22);
    assert_true(look(t, 4096, 4096, "f16", BP_PHASE_DECODE, 4) == 30);   /* phase only */
    assert_true(look(t, 4096, 4096, "f16", BP_PHASE_PREFILL, 512) == 900);
    assert_true(look(t, 4096, 4096, "f16", BP_PHASE_PREFILL, 256) == 100); /* neither */
    assert_true(look(t, 4096, 4096, "int8_pc_sym", BP_PHASE_PREFILL, 512) == 500);
    bp_format f = fmt("int8_pc_sym");
    double us;
    bp_error e;
    expect_err(bp_latency_table_lookup(t, 4096, 4096, &f, BP_PHASE_DECODE, 1, &us, &e),
               BP_ENOTFOUND, &e, "4096x4096 int8_pc_sym decode batch 1");

    /* The documented fallback: the table first, then the roofline. */
    bp_hw_profile *hw = NULL;
    assert_int_equal(bp_hw_profile_builtin("h100", &hw, NULL), BP_OK);
    int from = -1;
    assert_int_equal(bp_cost_latency_lookup_us(t, hw, &f, 4096, 4096, BP_PHASE_PREFILL, 512,
                                               &us, &from, &e),
                     BP_OK);
    assert_true(us == 500);
    assert_int_equal(from, 1);
    double model;
    assert_int_equal(bp_cost_latency_us(hw, &f, 4096, 4096, BP_PHASE_DECODE, 1, &model, &e),
                     BP_OK);
    assert_int_equal(bp_cost_latency_lookup_us(t, hw, &f, 4096, 4096, BP_PHASE_DECODE, 1, &us,
                                               &from, &e),
                     BP_OK);
    assert_true(us == model);
    assert_int_equal(from, 0);
    assert_int_equal(bp_cost_latency_lookup_us(NULL, hw, &f, 4096, 4096, BP_PHASE_DECODE, 1,
                                               &us, &from, &e),
                     BP_OK);
    assert_true(us == model);
    /* Without a fallback a missing entry stays an error. */
    expect_err(bp_cost_latency_lookup_us(t, NULL, &f, 4096, 4096, BP_PHASE_DECODE, 1, &us,
                                         &from, &e),
               BP_ENOTFOUND, &e, "no latency entry");
    expect_err(bp_cost_latency_lookup_us(NULL, NULL, &f, 4096, 4096, BP_PHASE_DECODE, 1, &us,
                                         &from, &e),
               BP_EINVAL, &e, "neither a table nor a profile");
    bp_hw_profile_destroy(&hw);
    bp_latency_table_destroy(&t);

    /* A header with no data rows is an empty table. */
    t = parse("rows,cols,format,latency_us,phase\n# nothing measured yet\n");
    assert_int_equal(bp_latency_table_count(t), 0);
    bp_latency_table_destroy(&t);
}

#define H "rows,cols,format,latency_us\n"
#define HP "rows,cols,format,latency_us,phase,batch\n"

static const struct {
    const char *text;
    const char *msg;
} bad[] = {
    {"", "t.csv:1: no header line"},
    {"# only a comment\n\n", "t.csv:2: no header line"},
    {"rows,cols,format,lat\n", "t.csv:1: header: unknown column \"lat\""},
    {"4096,4096,f16,1.0\n", "t.csv:1: header: unknown column \"4096\""},
    {"rows,cols,format\n", "t.csv:1: header: missing column \"latency_us\""},
    {"rows,cols,rows,format,latency_us\n", "t.csv:1: header: column \"rows\" given twice"},
    {"rows,cols,format,latency_us,batch\n", "t.csv:1: header: column \"batch\" needs a \"phase\""},
    {"rows,cols,format,latency_us,phase,batch,rows\n", "t.csv:1: header: more than 6 columns"},
    {H "4096,4096,f16\n", "t.csv:2: expected 4 fields as in the header, got 3"},
    {H "4096,4096,f16,1.0,\n", "t.csv:2: expected 4 fields as in the header, got 5"},
    {H "4096,4096,f16,1,2,3,4,5,6\n", "t.csv:2: expected 4 fields as in the header, got at least 7"},
    {H "# fine\n-4096,4096,f16,1.0\n", "t.csv:3: rows \"-4096\": not a whole number"},
    {H "0,4096,f16,1.0\n", "t.csv:2: rows \"0\": must be >= 1"},
    {H "4096,,f16,1.0\n", "t.csv:2: cols \"\": empty"},
    {H "4096,99999999999999999999,f16,1.0\n", "t.csv:2: cols \"99999999999999999999\": too large"},
    {H "4096,4096,f16,nan\n", "t.csv:2: latency_us \"nan\": not a number"},
    {H "4096,4096,f16,0x10\n", "t.csv:2: latency_us \"0x10\": not a number"},
    {H "4096,4096,f16,1e999\n", "t.csv:2: latency_us \"1e999\": out of range"},
    {H "4096,4096,f16,0\n", "t.csv:2: latency_us \"0\": must be > 0"},
    {H "4096,4096,f16,-3\n", "t.csv:2: latency_us \"-3\": must be > 0"},
    {H "4096,4096,f16,1.2.3\n", "t.csv:2: latency_us \"1.2.3\": not a number"},
    {H "4096,4096,int4_g100_sym,1.0\n", "t.csv:2: format \"int4_g100_sym\": unknown format"},
    {H "4096,4096,,1.0\n", "t.csv:2: format \"\": unknown format"},
    {H "4096,100,int4_g128_sym,1.0\n", "t.csv:2: format int4_g128_sym cannot store a 4096x100 matrix"},
    {HP "4096,4096,f16,1.0,decoding,1\n", "t.csv:2: phase \"decoding\": must be decode, prefill"},
    {HP "4096,4096,f16,1.0,,4\n", "t.csv:2: batch 4 given without a phase"},
    {HP "4096,4096,f16,1.0,decode,0\n", "t.csv:2: batch \"0\": must be >= 1"},
    {H "4096,4096,\"f16\",1.0\n", "t.csv:2: quoted fields are not supported"},
    {H "4096,4096,f16,1.0\n4096,4096,f16,2.0\n", "t.csv:3: duplicate entry: same rows, cols, format, phase and batch as line 2"},
    {HP "1,1,f16,1,decode,1\n1,1,f16,1,decode,\n1,1,f16,1,,\n1,1,f16,2,decode,\n",
     "t.csv:5: duplicate entry: same rows, cols, format, phase and batch as line 3"},
};

static void test_malformed(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bp_latency_table *t = (bp_latency_table *)1;
        bp_error e;
        int rc = bp_latency_table_from_text(bad[i].text, "t.csv", &t, &e);
        if (rc != BP_EFORMAT || !strstr(e.msg, bad[i].msg))
            fail_msg("case %zu: rc %s, message \"%s\", expected \"%s\"", i, bp_error_name(rc),
                     e.msg, bad[i].msg);
        assert_null(t);
    }
}

static void write_file(const char *path, const char *text, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(text, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static void test_files(void **state)
{
    (void)state;
    char path[512], want[700];
    snprintf(path, sizeof path, "%s/cost_table.csv", BP_TEST_TMPDIR);
    const char *ok = "\xef\xbb\xbfrows,cols,format,latency_us,phase,batch\n"
                     "4096,4096,int4_g128_asym,11.5,decode,1\n";
    write_file(path, ok, strlen(ok));
    bp_latency_table *t = NULL;
    bp_error e;
    if (bp_latency_table_load(path, &t, &e))
        fail_msg("%s", e.msg);
    bp_format f = fmt("int4_g128_asym");
    double us;
    assert_int_equal(bp_latency_table_lookup(t, 4096, 4096, &f, BP_PHASE_DECODE, 1, &us, &e),
                     BP_OK);
    assert_true(us == 11.5);
    snprintf(want, sizeof want, "%s: no latency entry for 4096x4096 int4_g128_asym decode "
                                "batch 2",
             path);
    expect_err(bp_latency_table_lookup(t, 4096, 4096, &f, BP_PHASE_DECODE, 2, &us, &e),
               BP_ENOTFOUND, &e, want);
    bp_latency_table_destroy(&t);

    const char *badl = "rows,cols,format,latency_us\n# ok\n4096,4096,int4_g128_asym,fast\n";
    write_file(path, badl, strlen(badl));
    snprintf(want, sizeof want, "%s:3: latency_us \"fast\": not a number", path);
    expect_err(bp_latency_table_load(path, &t, &e), BP_EFORMAT, &e, want);
    assert_null(t);

    write_file(path, "rows,cols,format,latency_us\n1,1,f16,\0\n", 38);
    snprintf(want, sizeof want, "%s:2: NUL byte", path);
    expect_err(bp_latency_table_load(path, &t, &e), BP_EFORMAT, &e, want);

    snprintf(path, sizeof path, "%s/cost_table_missing.csv", BP_TEST_TMPDIR);
    remove(path);
    expect_err(bp_latency_table_load(path, &t, &e), BP_ENOTFOUND, &e, path);
    expect_err(bp_latency_table_load(NULL, &t, &e), BP_EINVAL, &e, "NULL path");
}

/* Many entries: every one is found by binary search. */
static void test_many(void **state)
{
    (void)state;
    static char text[1 << 20];
    size_t n = 0;
    n += (size_t)snprintf(text + n, sizeof text - n, "rows,cols,format,latency_us,phase,batch\n");
    const char *fm[] = {"f16", "int4_g128_asym", "int8_pc_sym", "nvfp4"};
    for (int r = 1; r <= 40; r++)
        for (int k = 0; k < 4; k++)
            for (int b = 1; b <= 4; b++)
                n += (size_t)snprintf(text + n, sizeof text - n, "%d,4096,%s,%d,decode,%d\n",
                                      r * 128, fm[k], r * 1000 + k * 10 + b, b);
    bp_latency_table *t = parse(text);
    assert_int_equal(bp_latency_table_count(t), 40 * 4 * 4);
    for (int r = 1; r <= 40; r++)
        for (int k = 0; k < 4; k++)
            for (int b = 1; b <= 4; b++)
                assert_true(look(t, r * 128, 4096, fm[k], BP_PHASE_DECODE, b) ==
                            r * 1000 + k * 10 + b);
    bp_latency_table_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_phase_batch_specificity),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
