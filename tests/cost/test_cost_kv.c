/* Tests for KV cache byte costs (optimizer/cost/kv.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
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

static uint64_t kv(const bp_kv_shape *s, bp_kv_format f, int64_t ctx, int64_t b)
{
    uint64_t v;
    bp_error e;
    if (bp_kv_bytes(s, f, ctx, b, &v, &e))
        fail_msg("%s", e.msg);
    return v;
}

static void test_names(void **state)
{
    (void)state;
    const char *want[] = {"f16", "fp8_e4m3", "int8", "int4"};
    for (int f = 0; f < BP_KV_FORMAT_COUNT; f++) {
        assert_string_equal(bp_kv_format_name((bp_kv_format)f), want[f]);
        bp_kv_format back;
        assert_int_equal(bp_kv_format_parse(want[f], &back, NULL), BP_OK);
        assert_int_equal(back, f);
    }
    assert_null(bp_kv_format_name(BP_KV_FORMAT_COUNT));
    assert_null(bp_kv_format_name((bp_kv_format)-1));
    bp_kv_format f;
    bp_error e;
    expect_err(bp_kv_format_parse("int2", &f, &e), BP_EINVAL, &e,
               "unknown KV cache format \"int2\" (known: f16, fp8_e4m3, int8, int4)");
    expect_err(bp_kv_format_parse("F16", &f, &e), BP_EINVAL, &e, "\"F16\"");
    expect_err(bp_kv_format_parse("bf16", &f, &e), BP_EINVAL, &e, "\"bf16\"");
    expect_err(bp_kv_format_parse(NULL, &f, &e), BP_EINVAL, &e, "(null)");
}

static void test_llama2_7b(void **state)
{
    (void)state;
    /* 32 layers, 32 KV heads of 128: 2 * 32 * 128 * 2 = 16 KiB per token per
     * layer in f16, so 4096 tokens = 64 MiB per layer, 2 GiB in all. */
    bp_kv_shape s = {32, 32, 128};
    assert_int_equal(kv(&s, BP_KV_F16, 4096, 1), 67108864ull);
    assert_int_equal(kv(&s, BP_KV_FP8_E4M3, 4096, 1), 33554432ull + 8);
    assert_int_equal(kv(&s, BP_KV_INT8, 4096, 1), 2ull * 4096 * 32 * (128 + 2));  /* 34078720 */
    assert_int_equal(kv(&s, BP_KV_INT8, 4096, 1), 34078720ull);
    assert_int_equal(kv(&s, BP_KV_INT4, 4096, 1), 2ull * 4096 * 32 * (64 + 2));   /* 17301504 */
    assert_int_equal(kv(&s, BP_KV_INT4, 4096, 1), 17301504ull);
    bp_kv_format all[32];
    for (int i = 0; i < 32; i++)
        all[i] = BP_KV_F16;
    uint64_t total;
    assert_int_equal(bp_kv_bytes_total(&s, all, 4096, 1, &total, NULL), BP_OK);
    assert_int_equal(total, 2147483648ull);
}

static void test_llama3_8b_gqa(void **state)
{
    (void)state;
    /* 8 KV heads (GQA), context 8192, batch 4. */
    bp_kv_shape s = {32, 8, 128};
    assert_int_equal(kv(&s, BP_KV_F16, 8192, 4), 134217728ull);      /* 2*4*8192*8*256 */
    assert_int_equal(kv(&s, BP_KV_FP8_E4M3, 8192, 4), 67108872ull);  /* +8 once per layer */
    assert_int_equal(kv(&s, BP_KV_INT8, 8192, 4), 68157440ull);      /* 2*32768*8*130 */
    assert_int_equal(kv(&s, BP_KV_INT4, 8192, 4), 34603008ull);      /* 2*32768*8*66 */
    /* batch and context enter only as their product (fp8's scales aside). */
    assert_int_equal(kv(&s, BP_KV_INT8, 4096, 8), kv(&s, BP_KV_INT8, 8192, 4));
    /* Fewer bits, fewer bytes. */
    for (int64_t ctx = 1; ctx <= 1 << 16; ctx *= 4) {
        assert_true(kv(&s, BP_KV_INT4, ctx, 1) < kv(&s, BP_KV_INT8, ctx, 1));
        assert_true(kv(&s, BP_KV_INT8, ctx, 1) < kv(&s, BP_KV_F16, ctx, 1));
        assert_true(kv(&s, BP_KV_FP8_E4M3, ctx, 1) < kv(&s, BP_KV_F16, ctx, 1));
    }
}

static void test_small_and_odd(void **state)
{
    (void)state;
    bp_kv_shape s = {4, 3, 5};
    /* One token, one sequence, 3 heads of 5:
     *   f16 2*3*10 = 60; fp8 2*3*5 + 8 = 38; int8 2*3*(5+2) = 42;
     *   int4 2*3*(ceil(5/2)+2) = 2*3*5 = 30. */
    assert_int_equal(kv(&s, BP_KV_F16, 1, 1), 60);
    assert_int_equal(kv(&s, BP_KV_FP8_E4M3, 1, 1), 38);
    assert_int_equal(kv(&s, BP_KV_INT8, 1, 1), 42);
    assert_int_equal(kv(&s, BP_KV_INT4, 1, 1), 30);
    /* Per-layer decision: the total is the sum of the layers' costs. */
    bp_kv_format mix[4] = {BP_KV_F16, BP_KV_INT4, BP_KV_INT8, BP_KV_FP8_E4M3};
    uint64_t total;
    assert_int_equal(bp_kv_bytes_total(&s, mix, 10, 2, &total, NULL), BP_OK);
    /* T = 20: 1200 + 600 + 840 + (600 + 8) */
    assert_int_equal(total, 3248);
}

static void test_errors(void **state)
{
    (void)state;
    bp_kv_shape s = {32, 8, 128};
    uint64_t v = 1;
    bp_error e;
    expect_err(bp_kv_bytes(&s, (bp_kv_format)9, 1, 1, &v, &e), BP_EINVAL, &e,
               "unknown format 9");
    assert_int_equal(v, 0);
    expect_err(bp_kv_bytes(&s, BP_KV_F16, 0, 1, &v, &e), BP_EINVAL, &e, "context 0");
    expect_err(bp_kv_bytes(&s, BP_KV_F16, 1, -1, &v, &e), BP_EINVAL, &e, "batch -1");
    bp_kv_shape z = {32, 8, 0};
    expect_err(bp_kv_bytes(&z, BP_KV_F16, 1, 1, &v, &e), BP_EINVAL, &e, "head_dim 0");
    z = (bp_kv_shape){0, 8, 128};
    expect_err(bp_kv_bytes(&z, BP_KV_F16, 1, 1, &v, &e), BP_EINVAL, &e, "n_layers 0");
    expect_err(bp_kv_bytes(NULL, BP_KV_F16, 1, 1, &v, &e), BP_EINVAL, &e, "NULL shape");
    expect_err(bp_kv_bytes(&s, BP_KV_F16, 1, 1, NULL, &e), BP_EINVAL, &e, "NULL bytes");
    expect_err(bp_kv_bytes(&s, BP_KV_F16, INT64_C(1) << 40, INT64_C(1) << 20, &v, &e),
               BP_EINVAL, &e, "overflows 64 bits");
    bp_kv_format mix[32];
    for (int i = 0; i < 32; i++)
        mix[i] = BP_KV_INT8;
    mix[7] = (bp_kv_format)-2;
    uint64_t total = 1;
    expect_err(bp_kv_bytes_total(&s, mix, 16, 1, &total, &e), BP_EINVAL, &e,
               "layer 7: KV cache: unknown format -2");
    assert_int_equal(total, 0);
    expect_err(bp_kv_bytes_total(&s, NULL, 16, 1, &total, &e), BP_EINVAL, &e,
               "NULL per-layer formats");
    /* Each layer fits but the sum does not. */
    bp_kv_shape big = {32, 1 << 20, 1 << 20};
    for (int i = 0; i < 32; i++)
        mix[i] = BP_KV_F16;
    expect_err(bp_kv_bytes_total(&big, mix, 1 << 17, 1, &total, &e), BP_EINVAL, &e,
               "total over 32 layers overflows");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_llama2_7b),
        cmocka_unit_test(test_llama3_8b_gqa),
        cmocka_unit_test(test_small_and_odd),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
