/* Tests for common/: errors, 16-bit float conversions, hashes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "bitplan/error.h"
#include "bitplan/half.h"
#include "bitplan/hash.h"

static void test_error_set_and_prefix(void **state)
{
    (void)state;
    bp_error e;
    bp_error_clear(&e);
    assert_int_equal(e.code, BP_OK);
    assert_int_equal(bp_error_set(&e, BP_EFORMAT, "tensor '%s': bad", "w"), BP_EFORMAT);
    assert_int_equal(bp_error_prefix(&e, "file %s", "m.st"), BP_EFORMAT);
    assert_string_equal(e.msg, "file m.st: tensor 'w': bad");
    assert_string_equal(bp_error_name(BP_EFORMAT), "BP_EFORMAT");
    assert_string_equal(bp_strerror(BP_EINFEASIBLE), "infeasible");
    assert_int_equal(bp_error_set(NULL, BP_EIO, "x"), BP_EIO);
}

static void test_half_round_trip_all_f16(void **state)
{
    (void)state;
    /* Every finite f16 value converts to float and back unchanged. */
    for (uint32_t h = 0; h < 0x10000u; h++) {
        uint16_t v = (uint16_t)h;
        if ((v & 0x7c00u) == 0x7c00u && (v & 0x3ffu))
            continue; /* NaN payloads are not preserved bit-exactly */
        assert_int_equal(bp_f32_to_f16(bp_f16_to_f32(v)), v);
    }
}

static void test_half_rounding(void **state)
{
    (void)state;
    /* 1 + 2^-11 is a tie between 1 and 1 + 2^-10: rounds to even (1). */
    assert_int_equal(bp_f32_to_f16(1.0f + 0.00048828125f), 0x3c00);
    /* 1 + 3*2^-11 ties between 1+2^-10 (odd) and 1+2^-9: goes to even. */
    assert_int_equal(bp_f32_to_f16(1.0f + 3 * 0.00048828125f), 0x3c02);
    assert_int_equal(bp_f32_to_f16(70000.0f), 0x7c00);
    assert_int_equal(bp_f32_to_f16(-70000.0f), 0xfc00);
    assert_int_equal(bp_f32_to_f16(65504.0f), 0x7bff);
    /* Smallest subnormal and half of it (tie to even -> 0). */
    assert_int_equal(bp_f32_to_f16(5.9604644775390625e-08f), 0x0001);
    assert_int_equal(bp_f32_to_f16(2.98023223876953125e-08f), 0x0000);
    assert_true(isnan(bp_f16_to_f32(bp_f32_to_f16(NAN))));
    /* bf16: every bf16 value survives a round trip; rounding ties to even. */
    for (uint32_t h = 0; h < 0x10000u; h++) {
        uint16_t v = (uint16_t)h;
        if ((v & 0x7f80u) == 0x7f80u && (v & 0x7fu))
            continue;
        assert_int_equal(bp_f32_to_bf16(bp_bf16_to_f32(v)), v);
    }
    assert_int_equal(bp_f32_to_bf16(1.0f + 1.0f / 256.0f), 0x3f80);
}

static void test_hash_known_and_distinct(void **state)
{
    (void)state;
    char a[BP_HASH_HEX_LEN + 1], b[BP_HASH_HEX_LEN + 1];
    bp_hash_buffer_hex("abc", 3, a);
    assert_int_equal(strlen(a), BP_HASH_HEX_LEN);
    assert_memory_equal(a, "blake2b256:", 11);
    bp_hash_buffer_hex("abd", 3, b);
    assert_string_not_equal(a, b);
    bp_hash h1, h2;
    bp_hash_init(&h1);
    bp_hash_update_str(&h1, "ab");
    bp_hash_update_str(&h1, "c");
    bp_hash_init(&h2);
    bp_hash_update_str(&h2, "a");
    bp_hash_update_str(&h2, "bc");
    bp_hash_final_hex(&h1, a);
    bp_hash_final_hex(&h2, b);
    assert_string_not_equal(a, b);
    /* BLAKE2b-256("abc") from RFC 7693's reference implementation. */
    bp_hash_buffer_hex("abc", 3, a);
    assert_string_equal(a + 11, "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_set_and_prefix),
        cmocka_unit_test(test_half_round_trip_all_f16),
        cmocka_unit_test(test_half_rounding),
        cmocka_unit_test(test_hash_known_and_distinct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
