/* Tests for budget parsing (optimizer/plan/budget.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bitplan/budget.h"

typedef struct bits_case {
    const char *text;
    uint64_t params;
    uint64_t capacity;
} bits_case;

static void test_bits(void **state)
{
    (void)state;
    static const bits_case cases[] = {
        {"3.5", 1000, 437},             /* 3500 / 8 = 437.5 -> floor */
        {"4", 1024, 512},
        {" 4.0 ", 1024, 512},
        {"0.5", 16, 1},
        {"3.3", 1000000000, 412500000}, /* exact decimal: no 3.29999... */
        {"2.125", 7, 1},                /* 14.875 / 8 */
        {"16", 6738415616ull, 13476831232ull},
        {"3.50000000000000000000000", 8, 3},
        {".75", 800, 75},
        {"64", 1, 8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bp_budget b;
        bp_error e;
        int rc = bp_budget_parse_bits(cases[i].text, &b, &e);
        if (rc)
            fail_msg("\"%s\": %s", cases[i].text, e.msg);
        assert_int_equal(b.kind, BP_BUDGET_BITS);
        uint64_t cap;
        rc = bp_budget_capacity(&b, cases[i].params, &cap, &e);
        if (rc)
            fail_msg("\"%s\": %s", cases[i].text, e.msg);
        if (cap != cases[i].capacity)
            fail_msg("\"%s\" x %llu: got %llu, want %llu", cases[i].text,
                     (unsigned long long)cases[i].params, (unsigned long long)cap,
                     (unsigned long long)cases[i].capacity);
    }
    bp_budget b;
    assert_int_equal(bp_budget_parse_bits("3.5", &b, NULL), BP_OK);
    assert_true(b.bits == 3.5);
}

typedef struct bytes_case {
    const char *text;
    uint64_t bytes;
} bytes_case;

static void test_bytes(void **state)
{
    (void)state;
    static const bytes_case cases[] = {
        {"7500000000", 7500000000ull},
        {"7.5GB", 7500000000ull},
        {"7.5 GB", 7500000000ull},
        {"7.5gb", 7500000000ull},
        {"512MiB", 512ull << 20},
        {"1.5KiB", 1536},
        {"2KB", 2000},
        {"1.0005KB", 1000}, /* rounded down */
        {"1TiB", 1ull << 40},
        {"3TB", 3000000000000ull},
        {"100B", 100},
        {"0.5MiB", 524288},
        {"18446744073709551615", UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bp_budget b;
        bp_error e;
        int rc = bp_budget_parse_bytes(cases[i].text, &b, &e);
        if (rc)
            fail_msg("\"%s\": %s", cases[i].text, e.msg);
        assert_int_equal(b.kind, BP_BUDGET_BYTES);
        if (b.bytes != cases[i].bytes)
            fail_msg("\"%s\": got %llu", cases[i].text, (unsigned long long)b.bytes);
        uint64_t cap;
        assert_int_equal(bp_budget_capacity(&b, 123, &cap, &e), BP_OK);
        assert_int_equal(cap, cases[i].bytes);
    }
}

typedef struct bad_case {
    int bytes; /* 1: --budget-bytes, 0: --budget-bits */
    const char *text;
    const char *msg;
} bad_case;

static void test_bad(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        {0, "", "empty value"},
        {0, NULL, "empty value"},
        {0, "nan", "not a number"},
        {0, "NaN", "not a number"},
        {0, "inf", "not a number"},
        {0, "-3", "must be positive"},
        {0, "+3", "not a number"},
        {0, "0", "greater than zero"},
        {0, "0.000", "greater than zero"},
        {0, "3.5x", "not a number"},
        {0, "1e3", "not a number"},
        {0, "3,5", "not a number"},
        {0, ".", "not a number"},
        {0, "65", "too large"},
        {0, "99999999999999999999999", "too large"},
        {0, "1.0000000000000000000001", "too many digits"},
        {1, "", "empty value"},
        {1, "0", "greater than zero"},
        {1, "0GB", "greater than zero"},
        {1, "-1GB", "must be positive"},
        {1, "7.5XB", "unknown unit \"XB\""},
        {1, "7.5 G", "unknown unit \"G\""},
        {1, "GB", "not a number"},
        {1, "1.5", "not a whole number of bytes"},
        {1, "1.5B", "not a whole number of bytes"},
        {1, "0.0001KB", "less than one byte"},
        {1, "18446744073709551616", "too large"},
        {1, "20000000TB", "too large"},
        {1, "nan", "not a number"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bp_budget b;
        bp_error e;
        bp_error_clear(&e);
        int rc = cases[i].bytes ? bp_budget_parse_bytes(cases[i].text, &b, &e)
                                : bp_budget_parse_bits(cases[i].text, &b, &e);
        if (rc != BP_EINVAL || !strstr(e.msg, cases[i].msg))
            fail_msg("%s \"%s\": rc %d, \"%s\" (want \"%s\")",
                     cases[i].bytes ? "bytes" : "bits",
                     cases[i].text ? cases[i].text : "(null)", rc, e.msg, cases[i].msg);
        assert_non_null(strstr(e.msg, cases[i].bytes ? "--budget-bytes" : "--budget-bits"));
        assert_int_equal(b.kind, BP_BUDGET_NONE);
    }
}

static void test_capacity_errors(void **state)
{
    (void)state;
    bp_budget b;
    bp_error e;
    uint64_t cap = 1;
    assert_int_equal(bp_budget_parse_bits("0.5", &b, &e), BP_OK);
    assert_int_equal(bp_budget_capacity(&b, 0, &cap, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "no quantized weights"));
    assert_int_equal(bp_budget_capacity(&b, 15, &cap, &e), BP_EINVAL); /* 0.9375 bytes */
    assert_non_null(strstr(e.msg, "less than one byte"));
    assert_int_equal(cap, 0);
    assert_int_equal(bp_budget_parse_bits("64", &b, &e), BP_OK);
    assert_int_equal(bp_budget_capacity(&b, UINT64_MAX / 4, &cap, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "overflows"));
    bp_budget none = {0};
    assert_int_equal(bp_budget_capacity(&none, 10, &cap, &e), BP_EINVAL);
    assert_true(bp_budget_bits_per_weight(437, 1000) == 3.496);
    assert_true(isnan(bp_budget_bits_per_weight(1, 0)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bits),
        cmocka_unit_test(test_bytes),
        cmocka_unit_test(test_bad),
        cmocka_unit_test(test_capacity_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
