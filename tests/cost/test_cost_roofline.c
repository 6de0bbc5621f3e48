/* Tests for the roofline latency model, compute classes and BOPS
 * (optimizer/cost/roofline.c, classes.c). */
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
    bp_error e;
    if (bp_format_parse(name, &f, &e))
        fail_msg("%s", e.msg);
    return f;
}

static bp_hw_profile *builtin(const char *name)
{
    bp_hw_profile *p = NULL;
    assert_int_equal(bp_hw_profile_builtin(name, &p, NULL), BP_OK);
    return p;
}

static double lat(const bp_hw_profile *hw, const bp_format *f, int64_t r, int64_t c,
                  bp_cost_phase ph, int64_t b)
{
    double us;
    bp_error e;
    if (bp_cost_latency_us(hw, f, r, c, ph, b, &us, &e))
        fail_msg("%s", e.msg);
    return us;
}

static void test_classes(void **state)
{
    (void)state;
    static const struct {
        const char *f;
        bp_compute_class native, h100, a100, rtx4090, cpu;
    } m[] = {
        {"f16", BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16},
        {"bf16", BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16},
        {"int8_pc_sym", BP_COMPUTE_INT8, BP_COMPUTE_INT8, BP_COMPUTE_INT8, BP_COMPUTE_INT8, BP_COMPUTE_FP16},
        {"int8_g128_asym", BP_COMPUTE_INT8, BP_COMPUTE_INT8, BP_COMPUTE_INT8, BP_COMPUTE_INT8, BP_COMPUTE_FP16},
        {"fp8_e4m3", BP_COMPUTE_FP8, BP_COMPUTE_FP8, BP_COMPUTE_FP16, BP_COMPUTE_FP8, BP_COMPUTE_FP16},
        {"int4_g128_asym", BP_COMPUTE_INT4, BP_COMPUTE_FP16, BP_COMPUTE_INT4, BP_COMPUTE_INT4, BP_COMPUTE_FP16},
        {"mxfp4", BP_COMPUTE_FP4, BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16},
        {"nvfp4", BP_COMPUTE_FP4, BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16},
        {"int3_g64_sym", BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16},
        {"int6_pc_asym", BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16},
        {"int2_g32_sym", BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16, BP_COMPUTE_FP16},
    };
    const char *profiles[] = {"h100", "a100", "rtx4090", "cpu"};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        bp_format f = fmt(m[i].f);
        bp_compute_class c;
        assert_int_equal(bp_cost_native_class(&f, &c, NULL), BP_OK);
        assert_int_equal(c, m[i].native);
        bp_compute_class want[4] = {m[i].h100, m[i].a100, m[i].rtx4090, m[i].cpu};
        for (int p = 0; p < 4; p++) {
            bp_hw_profile *hw = builtin(profiles[p]);
            assert_int_equal(bp_cost_compute_class(hw, &f, &c, NULL), BP_OK);
            if (c != want[p])
                fail_msg("%s on %s: class %s, expected %s", m[i].f, profiles[p],
                         bp_compute_class_name(c), bp_compute_class_name(want[p]));
            /* weight_only forces the dequantize-to-fp16 path. */
            hw->weight_only = 1;
            assert_int_equal(bp_cost_compute_class(hw, &f, &c, NULL), BP_OK);
            assert_int_equal(c, BP_COMPUTE_FP16);
            bp_hw_profile_destroy(&hw);
        }
    }
    /* Names and bits. */
    for (int c = 0; c < BP_COMPUTE_COUNT; c++) {
        bp_compute_class back;
        assert_int_equal(bp_compute_class_parse(bp_compute_class_name((bp_compute_class)c),
                                                &back, NULL),
                         BP_OK);
        assert_int_equal(back, c);
    }
    assert_null(bp_compute_class_name(BP_COMPUTE_COUNT));
    assert_int_equal(bp_compute_class_bits(BP_COMPUTE_FP16), 16);
    assert_int_equal(bp_compute_class_bits(BP_COMPUTE_FP4), 4);
    assert_int_equal(bp_compute_class_bits(BP_COMPUTE_COUNT), 0);
    bp_compute_class c;
    bp_error e;
    expect_err(bp_compute_class_parse("bf16", &c, &e), BP_EINVAL, &e,
               "unknown compute class \"bf16\"");
    bp_cost_phase ph;
    assert_int_equal(bp_cost_phase_parse("prefill", &ph, NULL), BP_OK);
    assert_int_equal(ph, BP_PHASE_PREFILL);
    assert_string_equal(bp_cost_phase_name(BP_PHASE_DECODE), "decode");
    expect_err(bp_cost_phase_parse("Decode", &ph, &e), BP_EINVAL, &e, "unknown phase");
}

/* 4096 x 4096 int4_g128_asym, decode batch 1, H100 SXM (no int4 tensor ops:
 * fp16 class):
 *   weights     4096*4096/2 + 4096*32*2*2 = 8 912 896 bytes
 *   activations 2 * 1 * (4096 + 4096)    =    16 384 bytes
 *   memory      1e6 * 8 929 280 / 3.35e12 = 2.665456716417910 us
 *   compute     1e6 * 2*4096*4096 / 989.4e12 = 0.033913919547200 us
 *   total       memory-bound: 2.665456716417910 us */
static void test_h100_hand_computed(void **state)
{
    (void)state;
    bp_hw_profile *hw = builtin("h100");
    bp_format f = fmt("int4_g128_asym");
    bp_roofline r;
    bp_error e;
    assert_int_equal(bp_cost_roofline(hw, &f, 4096, 4096, BP_PHASE_DECODE, 1, &r, &e), BP_OK);
    assert_int_equal(r.cls, BP_COMPUTE_FP16);
    assert_int_equal(r.weight_bytes, 8912896);
    assert_int_equal(r.activation_bytes, 16384);
    assert_true(r.ops == 33554432.0);
    assert_float_equal(r.memory_us, 2.665456716417910, 1e-12);
    assert_float_equal(r.compute_us, 0.033913919547200, 1e-12);
    assert_float_equal(r.overhead_us, 0, 0);
    assert_false(r.compute_bound);
    assert_true(r.total_us == r.memory_us);
    double us = lat(hw, &f, 4096, 4096, BP_PHASE_DECODE, 1);
    assert_true(us == r.total_us);
    /* The launch overhead is added as is. */
    hw->launch_overhead_us = 4.5;
    assert_float_equal(lat(hw, &f, 4096, 4096, BP_PHASE_DECODE, 1), 2.665456716417910 + 4.5,
                       1e-12);
    /* f16 for comparison: 33 554 432 + 16 384 bytes -> 10.021 us. */
    hw->launch_overhead_us = 0;
    bp_format h = fmt("f16");
    assert_float_equal(lat(hw, &h, 4096, 4096, BP_PHASE_DECODE, 1),
                       1e6 * (33554432.0 + 16384.0) / 3.35e12, 1e-12);
    bp_hw_profile_destroy(&hw);
}

/* Decode at small batch: fewer bytes is never slower, on every profile. */
static void test_decode_monotone_in_bytes(void **state)
{
    (void)state;
    bp_format menu[64];
    size_t n = bp_format_menu(menu, 64);
    assert_true(n > 40 && n <= 64);
    const char *profiles[] = {"h100", "a100", "rtx4090", "cpu"};
    const int64_t shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}, {1024, 4096}};
    const int64_t batches[] = {1, 8, 16};
    for (int p = 0; p < 4; p++) {
        bp_hw_profile *hw = builtin(profiles[p]);
        for (size_t s = 0; s < 4; s++)
            for (size_t b = 0; b < 3; b++) {
                int64_t R = shapes[s][0], C = shapes[s][1];
                double l[64];
                for (size_t i = 0; i < n; i++)
                    l[i] = bp_format_supports(&menu[i], R, C)
                               ? lat(hw, &menu[i], R, C, BP_PHASE_DECODE, batches[b])
                               : NAN;
                for (size_t i = 0; i < n; i++)
                    for (size_t j = 0; j < n; j++) {
                        if (isnan(l[i]) || isnan(l[j]))
                            continue;
                        uint64_t bi = bp_format_bytes(&menu[i], R, C);
                        uint64_t bj = bp_format_bytes(&menu[j], R, C);
                        if (bi <= bj && l[i] > l[j])
                            fail_msg("%s %lldx%lld B=%lld: %s (%llu bytes) %.6f us slower "
                                     "than %s (%llu bytes) %.6f us",
                                     profiles[p], (long long)R, (long long)C,
                                     (long long)batches[b], menu[i].name,
                                     (unsigned long long)bi, l[i], menu[j].name,
                                     (unsigned long long)bj, l[j]);
                    }
            }
        /* Within one compute class, at any batch. */
        const char *fp16_class[] = {"int2_g32_sym", "int3_g128_asym", "int5_pc_sym",
                                    "int6_g64_asym", "f16"};
        for (int64_t B = 1; B <= 8192; B *= 4) {
            double prev = 0;
            for (int i = 0; i < 5; i++) {
                bp_format f = fmt(fp16_class[i]);
                double v = lat(hw, &f, 4096, 4096, BP_PHASE_PREFILL, B);
                assert_true(v >= prev);
                prev = v;
            }
        }
        bp_hw_profile_destroy(&hw);
    }
}

/* Memory-bound at batch 1; compute-bound at a long prefill of a big layer. */
static void test_bound_regimes(void **state)
{
    (void)state;
    bp_format menu[64];
    size_t n = bp_format_menu(menu, 64);
    const char *profiles[] = {"h100", "a100", "rtx4090", "cpu"};
    for (int p = 0; p < 4; p++) {
        bp_hw_profile *hw = builtin(profiles[p]);
        for (size_t i = 0; i < n; i++) {
            bp_roofline r;
            bp_error e;
            assert_int_equal(
                bp_cost_roofline(hw, &menu[i], 8192, 8192, BP_PHASE_DECODE, 1, &r, &e), BP_OK);
            if (r.compute_bound)
                fail_msg("%s %s decode B=1 is compute-bound", profiles[p], menu[i].name);
            assert_int_equal(
                bp_cost_roofline(hw, &menu[i], 8192, 8192, BP_PHASE_PREFILL, 4096, &r, &e),
                BP_OK);
            if (!r.compute_bound)
                fail_msg("%s %s prefill L=4096 is memory-bound", profiles[p], menu[i].name);
            /* Prefill at L is decode at B = L. */
            double d = lat(hw, &menu[i], 8192, 8192, BP_PHASE_DECODE, 4096);
            assert_true(d == r.total_us);
        }
        bp_hw_profile_destroy(&hw);
    }
}

/* The memory/compute crossover batch: with W weight bytes and P = peak,
 * BW = bandwidth, compute wins when 2BRC/P > (W + 2B(R+C))/BW, i.e. at
 * B > B* = (W/BW) / (2RC/P - 2(R+C)/BW). */
static void test_crossover(void **state)
{
    (void)state;
    const struct {
        const char *hw, *f;
        int64_t lo, hi; /* where B* must fall (hand-computed) */
    } c[] = {
        {"h100", "f16", 345, 346},          /* 295.3 ops/byte ridge -> B* = 345.1 */
        {"h100", "int8_pc_sym", 415, 416},  /* int8 class: B* = 415.29 */
        {"h100", "int4_g128_asym", 91, 92}, /* fp16 class, 4.25 bpw: 91.67 */
        {"a100", "int4_pc_sym", 218, 219},  /* native int4: 218.45 */
        {"cpu", "f16", 10, 11},             /* 10 ops/byte ridge: 10.05 */
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        bp_hw_profile *hw = builtin(c[i].hw);
        bp_format f = fmt(c[i].f);
        const double R = 4096, C = 4096;
        bp_compute_class cls;
        assert_int_equal(bp_cost_compute_class(hw, &f, &cls, NULL), BP_OK);
        double W = (double)bp_format_bytes(&f, 4096, 4096);
        double bstar = (W / hw->memory_bandwidth) /
                       (2 * R * C / hw->peak_ops[cls] - 2 * (R + C) / hw->memory_bandwidth);
        if (!(bstar > (double)c[i].lo && bstar < (double)c[i].hi))
            fail_msg("%s %s: B* = %.3f outside (%lld, %lld)", c[i].hw, c[i].f, bstar,
                     (long long)c[i].lo, (long long)c[i].hi);
        int64_t below = (int64_t)floor(bstar), above = below + 1;
        bp_roofline r;
        assert_int_equal(
            bp_cost_roofline(hw, &f, 4096, 4096, BP_PHASE_DECODE, below, &r, NULL), BP_OK);
        assert_false(r.compute_bound);
        assert_int_equal(
            bp_cost_roofline(hw, &f, 4096, 4096, BP_PHASE_DECODE, above, &r, NULL), BP_OK);
        assert_true(r.compute_bound);
        bp_hw_profile_destroy(&hw);
    }
}

static void test_errors(void **state)
{
    (void)state;
    bp_hw_profile *hw = builtin("h100");
    bp_format f = fmt("int4_g128_sym");
    double us;
    bp_error e;
    expect_err(bp_cost_latency_us(hw, &f, 4096, 100, BP_PHASE_DECODE, 1, &us, &e),
               BP_EUNSUPPORTED, &e, "int4_g128_sym cannot store a 4096x100 matrix");
    assert_true(isnan(us));
    expect_err(bp_cost_latency_us(hw, &f, 0, 4096, BP_PHASE_DECODE, 1, &us, &e), BP_EINVAL,
               &e, "shape 0x4096");
    expect_err(bp_cost_latency_us(hw, &f, 4096, 4096, BP_PHASE_DECODE, 0, &us, &e), BP_EINVAL,
               &e, "batch must be >= 1");
    expect_err(bp_cost_latency_us(hw, &f, 4096, 4096, BP_PHASE_PREFILL, -3, &us, &e),
               BP_EINVAL, &e, "prefill length must be >= 1");
    expect_err(bp_cost_latency_us(hw, &f, 4096, 4096, (bp_cost_phase)7, 1, &us, &e), BP_EINVAL,
               &e, "unknown phase 7");
    expect_err(bp_cost_latency_us(NULL, &f, 4096, 4096, BP_PHASE_DECODE, 1, &us, &e),
               BP_EINVAL, &e, "NULL hardware profile");
    expect_err(bp_cost_latency_us(hw, NULL, 4096, 4096, BP_PHASE_DECODE, 1, &us, &e),
               BP_EINVAL, &e, "NULL format");
    expect_err(bp_cost_latency_us(hw, &f, 4096, 4096, BP_PHASE_DECODE, 1, NULL, &e), BP_EINVAL,
               &e, "NULL out_us");
    expect_err(bp_cost_latency_us(hw, &f, INT64_MAX / 2, 1 << 20, BP_PHASE_DECODE, 1, &us, &e),
               BP_EUNSUPPORTED, &e, "cannot store");
    bp_format big = fmt("f16");
    expect_err(bp_cost_latency_us(hw, &big, 1 << 20, 1 << 20, BP_PHASE_PREFILL, INT64_MAX / 4,
                                  &us, &e),
               BP_EINVAL, &e, "overflows 64 bits");
    /* A broken profile is refused, not divided by. */
    hw->memory_bandwidth = 0;
    expect_err(bp_cost_latency_us(hw, &f, 4096, 4096, BP_PHASE_DECODE, 1, &us, &e), BP_EINVAL,
               &e, "memory_bandwidth");
    bp_hw_profile_destroy(&hw);
}

/* Formats that bp_format_parse would not give are refused. */
static void test_unknown_formats(void **state)
{
    (void)state;
    bp_hw_profile *hw = builtin("a100");
    bp_format f = fmt("int4_g128_asym");
    double us;
    uint64_t bops;
    bp_compute_class c;
    bp_error e;
    bp_format g = f;
    g.kind = (bp_format_kind)99;
    expect_err(bp_cost_latency_us(hw, &g, 4096, 4096, BP_PHASE_DECODE, 1, &us, &e), BP_EINVAL,
               &e, "format \"int4_g128_asym\": fields do not match its name");
    g = f;
    g.bits = 3;
    expect_err(bp_cost_native_class(&g, &c, &e), BP_EINVAL, &e, "fields do not match");
    g = f;
    strcpy(g.name, "int9_g128_sym");
    expect_err(bp_cost_bops(&g, 4096, 4096, 1, 0, &bops, &e), BP_EINVAL, &e,
               "unknown format \"int9_g128_sym\"");
    memset(&g, 'x', sizeof g);
    expect_err(bp_cost_compute_class(hw, &g, &c, &e), BP_EINVAL, &e, "not terminated");
    bp_hw_profile_destroy(&hw);
}

static void test_bops(void **state)
{
    (void)state;
    static const struct {
        const char *f;
        int a_bits;
        int64_t rows, cols, tokens;
        uint64_t want;
    } c[] = {
        /* rows * cols * w_bits * a_bits * tokens */
        {"int4_g128_asym", 0, 4096, 4096, 1, 268435456ull},      /* 4 x 4 (native int4) */
        {"int4_g128_asym", 16, 4096, 4096, 1, 1073741824ull},    /* W4A16 */
        {"f16", 0, 4096, 4096, 10, 42949672960ull},              /* 16 x 16 x 10 */
        {"bf16", 0, 1, 1, 1, 256},
        {"fp8_e4m3", 0, 4096, 11008, 3, 8657043456ull},          /* 8 x 8 x 3 */
        {"int8_g64_sym", 0, 2, 3, 5, 1920},                      /* 2*3*8*8*5 */
        {"mxfp4", 0, 32, 32, 1, 16384},                          /* 4 x 4 */
        {"nvfp4", 8, 16, 16, 2, 16384},                          /* 4 x 8 x 2 */
        {"int3_g64_sym", 0, 4096, 4096, 1, 805306368ull},        /* 3 x 16 */
        {"int2_pc_asym", 0, 7, 9, 11, 22176},                    /* 7*9*2*16*11 */
        {"int6_g32_asym", 1, 7, 9, 1, 378},                      /* 6 x 1 */
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        bp_format f = fmt(c[i].f);
        uint64_t v;
        bp_error e;
        if (bp_cost_bops(&f, c[i].rows, c[i].cols, c[i].tokens, c[i].a_bits, &v, &e))
            fail_msg("%s", e.msg);
        if (v != c[i].want)
            fail_msg("%s a%d: %llu, expected %llu", c[i].f, c[i].a_bits,
                     (unsigned long long)v, (unsigned long long)c[i].want);
    }
    bp_format f = fmt("f16");
    uint64_t v;
    bp_error e;
    expect_err(bp_cost_bops(&f, 4096, 4096, 1, 33, &v, &e), BP_EINVAL, &e, "a_bits 33");
    expect_err(bp_cost_bops(&f, 4096, 4096, 1, -1, &v, &e), BP_EINVAL, &e, "a_bits -1");
    expect_err(bp_cost_bops(&f, 4096, 4096, 0, 0, &v, &e), BP_EINVAL, &e, "tokens 0");
    expect_err(bp_cost_bops(&f, 1 << 20, 1 << 20, 1 << 20, 0, &v, &e), BP_EINVAL, &e,
               "overflows 64 bits");
    assert_int_equal(v, 0);
    expect_err(bp_cost_bops(&f, 4, 4, 1, 0, NULL, &e), BP_EINVAL, &e, "NULL out");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classes),
        cmocka_unit_test(test_h100_hand_computed),
        cmocka_unit_test(test_decode_monotone_in_bytes),
        cmocka_unit_test(test_bound_regimes),
        cmocka_unit_test(test_crossover),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_unknown_formats),
        cmocka_unit_test(test_bops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
