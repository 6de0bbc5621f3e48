/* Format names, the menu, support rules and exact byte counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "bitplan/format.h"

static bp_format fmt(const char *name)
{
    bp_format f;
    bp_error e;
    int rc = bp_format_parse(name, &f, &e);
    if (rc != BP_OK)
        fail_msg("parse %s: %s", name, e.msg);
    return f;
}

static void test_menu_order_and_names(void **state)
{
    (void)state;
    bp_format m[64];
    size_t n = bp_format_menu(m, 64);
    assert_int_equal(n, 6 * 4 * 2 + 5);
    assert_int_equal(bp_format_menu(NULL, 0), n);
    assert_string_equal(m[0].name, "int2_g32_sym");
    assert_string_equal(m[1].name, "int2_g32_asym");
    assert_string_equal(m[6].name, "int2_pc_sym");
    assert_string_equal(m[8].name, "int3_g32_sym");
    assert_string_equal(m[47].name, "int8_pc_asym");
    assert_string_equal(m[48].name, "fp8_e4m3");
    assert_string_equal(m[49].name, "mxfp4");
    assert_string_equal(m[50].name, "nvfp4");
    assert_string_equal(m[51].name, "f16");
    assert_string_equal(m[52].name, "bf16");
    /* Every menu name parses back to the same struct; names are unique. */
    for (size_t i = 0; i < n; i++) {
        bp_format f = fmt(m[i].name);
        assert_memory_equal(&f, &m[i], sizeof f);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(m[i].name, m[j].name);
    }
    /* A short capacity writes only that many. */
    bp_format few[3];
    memset(few, 0, sizeof few);
    assert_int_equal(bp_format_menu(few, 2), n);
    assert_string_equal(few[1].name, "int2_g32_asym");
    assert_string_equal(few[2].name, "");
}

static void test_parse_fields_and_rejects(void **state)
{
    (void)state;
    bp_format f = fmt("int4_g128_asym");
    assert_int_equal(f.kind, BP_FMT_INT);
    assert_int_equal(f.bits, 4);
    assert_int_equal(f.group, 128);
    assert_int_equal(f.asym, 1);
    f = fmt("int8_pc_sym");
    assert_int_equal(f.group, 0);
    assert_int_equal(f.asym, 0);
    f = fmt("mxfp4");
    assert_int_equal(f.kind, BP_FMT_MXFP4);
    assert_int_equal(f.group, 32);
    f = fmt("nvfp4");
    assert_int_equal(f.group, 16);
    const char *bad[] = {"int7_g128_sym", "int4_g48_sym", "int4_g128", "INT4_g128_sym",
                         "int4_g0128_sym", " f16", "fp8", "", "int4_pc_asym_",
                         "mxfp4x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bp_error e;
        assert_int_equal(bp_format_parse(bad[i], &f, &e), BP_EINVAL);
        assert_non_null(strstr(e.msg, "expected one of"));
    }
    assert_int_equal(bp_format_parse(NULL, &f, NULL), BP_EINVAL);
}

static void test_byte_counts(void **state)
{
    (void)state;
    /* The hand-computed sizes of docs/formats.md. */
    assert_int_equal(bp_format_bytes(&(bp_format){0}, 1, 1), 0); /* int0: not a format */
    bp_format f = fmt("int4_g128_asym");
    assert_int_equal(bp_format_bytes(&f, 4096, 4096), 4096ull * 4096 / 2 + 4096ull * 32 * 4);
    f = fmt("int4_g128_sym");
    assert_int_equal(bp_format_bytes(&f, 4096, 4096), 4096ull * 4096 / 2 + 4096ull * 32 * 2);
    f = fmt("int3_g64_asym");
    assert_int_equal(bp_format_bytes(&f, 11008, 4096),
                     11008ull * (4096 * 3 / 8) + 11008ull * 64 * 4);
    f = fmt("int8_g32_sym");
    assert_int_equal(bp_format_bytes(&f, 4096, 4096), 4096ull * 4096 + 4096ull * 128 * 2);
    f = fmt("int3_pc_sym");
    assert_int_equal(bp_format_bytes(&f, 3, 5), 3 * (2 + 2)); /* 15 bits -> 2 bytes */
    f = fmt("int5_pc_asym");
    assert_int_equal(bp_format_bytes(&f, 2, 7), 2 * (5 + 4)); /* 35 bits -> 5 bytes */
    f = fmt("fp8_e4m3");
    assert_int_equal(bp_format_bytes(&f, 4096, 4096), 4096ull * 4096 + 4096ull * 2);
    f = fmt("mxfp4");
    assert_int_equal(bp_format_bytes(&f, 4096, 4096), 4096ull * 4096 / 2 + 4096ull * 128);
    assert_true(bp_format_bpw(&f, 4096, 4096) == 4.25);
    f = fmt("nvfp4");
    assert_int_equal(bp_format_bytes(&f, 4096, 4096), 4096ull * 4096 / 2 + 4096ull * 256 + 4);
    assert_true(bp_format_nominal_bpw(&f) == 4.5);
    f = fmt("f16");
    assert_int_equal(bp_format_bytes(&f, 4096, 11008), 4096ull * 11008 * 2);
    f = fmt("bf16");
    assert_int_equal(bp_format_bytes(&f, 1, 1), 2);
    f = fmt("int4_g128_asym");
    assert_true(bp_format_nominal_bpw(&f) == 4.25);
    assert_true(bp_format_bpw(&f, 4096, 4096) == 4.25);
    f = fmt("int2_g32_sym");
    assert_true(bp_format_nominal_bpw(&f) == 2.5);
    f = fmt("int8_pc_sym");
    assert_true(bp_format_nominal_bpw(&f) == 8.0);
    assert_int_equal(bp_format_groups_per_row(&f, 4096), 1);
    f = fmt("int8_g64_sym");
    assert_int_equal(bp_format_groups_per_row(&f, 4096), 64);
}

static void test_support_rules(void **state)
{
    (void)state;
    bp_format m[64];
    size_t n = bp_format_menu(m, 64);
    for (size_t i = 0; i < n; i++) {
        bp_format *f = &m[i];
        assert_false(bp_format_supports(f, 0, 128));
        assert_false(bp_format_supports(f, 128, 0));
        assert_false(bp_format_supports(f, -1, 128));
        assert_int_equal(bp_format_bytes(f, 0, 128), 0);
        assert_true(bp_format_supports(f, 1, 128));
        assert_true(bp_format_supports(f, 3, 4096));
        int group = f->group;
        int s100 = bp_format_supports(f, 4, 100);
        assert_int_equal(s100, group == 0);
        assert_int_equal(bp_format_bytes(f, 4, 100) != 0, group == 0);
        assert_int_equal(bp_format_supports(f, 4, 48), group == 0 || group == 16);
        assert_int_equal(bp_format_supports(f, 4, 96), group == 0 || group == 16 ||
                                                           group == 32);
        assert_int_equal(bp_format_supports(f, 4, 64), group != 128);
        assert_int_equal(bp_format_supports(f, 4, 1), group == 0);
    }
    /* Hand-built structs outside the registry are not formats. */
    bp_format odd = {BP_FMT_INT, 7, 32, 0, "int7"};
    assert_false(bp_format_supports(&odd, 4, 64));
    odd = (bp_format){BP_FMT_INT, 4, 48, 0, "x"};
    assert_false(bp_format_supports(&odd, 4, 96));
    assert_false(bp_format_supports(NULL, 4, 96));
    /* Sizes that overflow 64 bits are refused, not wrapped. */
    bp_format f = fmt("f16");
    assert_int_equal(bp_format_bytes(&f, INT64_MAX / 2, INT64_MAX / 2), 0);
    assert_false(bp_format_supports(&f, INT64_MAX / 2, INT64_MAX / 2));
}

static void test_tensor_param(void **state)
{
    (void)state;
    bp_format f = fmt("nvfp4");
    assert_true(bp_format_tensor_param(&f, 2688.0f) == 1.0f);
    assert_true(bp_format_tensor_param(&f, 0.0f) == 0.0f);
    assert_true(bp_format_tensor_param(&f, NAN) == 0.0f);
    assert_true(bp_format_tensor_param(&f, 1e-44f) > 0.0f);
    f = fmt("mxfp4");
    assert_true(bp_format_tensor_param(&f, 5.0f) == 0.0f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_menu_order_and_names),
        cmocka_unit_test(test_parse_fields_and_rejects),
        cmocka_unit_test(test_byte_counts),
        cmocka_unit_test(test_support_rules),
        cmocka_unit_test(test_tensor_param),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
