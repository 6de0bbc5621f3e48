/* Tests for proto/wire_check.c: the structural guard in front of msgpack-c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "bitplan/wire_check.h"

static int check(const uint8_t *b, size_t n)
{
    bp_error e;
    bp_error_clear(&e);
    return bp_wire_check(b, n, NULL, &e);
}

#define CHECK(expected, ...)                                        \
    do {                                                            \
        const uint8_t b_[] = {__VA_ARGS__};                         \
        assert_int_equal(check(b_, sizeof b_), (expected));         \
    } while (0)

static void test_wire_accepts_valid_objects(void **state)
{
    (void)state;
    CHECK(BP_OK, 0x01);
    CHECK(BP_OK, 0xc0);
    CHECK(BP_OK, 0x90);                              /* [] */
    CHECK(BP_OK, 0x80);                              /* {} */
    CHECK(BP_OK, 0x92, 0x01, 0xa1, 'x');             /* [1, "x"] */
    CHECK(BP_OK, 0x81, 0xa1, 'k', 0x92, 0x01, 0x02); /* {"k": [1, 2]} */
    CHECK(BP_OK, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0);      /* float64 */
    CHECK(BP_OK, 0xc4, 0x02, 0xaa, 0xbb);            /* bin8 */
    CHECK(BP_OK, 0xdc, 0x00, 0x01, 0xc3);            /* array16 [true] */
    CHECK(BP_OK, 0x92, 0x90, 0x80);                  /* [[], {}] */
}

static void test_wire_rejects_hostile_headers(void **state)
{
    (void)state;
    CHECK(BP_EPROTO, 0xdd, 0xff, 0xff, 0xff, 0xff);  /* array32 of 2^32-1 */
    CHECK(BP_EPROTO, 0xdf, 0xff, 0xff, 0xff, 0xff);  /* map32 of 2^32-1 */
    CHECK(BP_EPROTO, 0xc6, 0x00, 0x01, 0x00, 0x00);  /* bin32 65536, none present */
    CHECK(BP_EPROTO, 0xdb, 0x7f, 0xff, 0xff, 0xff, 'a');
    CHECK(BP_EPROTO, 0xc1);                          /* reserved */
    CHECK(BP_EPROTO, 0xd4, 0x01, 0x00);              /* fixext1 */
    CHECK(BP_EPROTO, 0x01, 0x02);                    /* trailing byte */
    CHECK(BP_EPROTO, 0x92, 0x01);                    /* truncated array */
    CHECK(BP_EPROTO, 0xcd, 0x01);                    /* truncated uint16 */
    CHECK(BP_EPROTO, 0xdc, 0x00);                    /* truncated array16 header */
    CHECK(BP_EPROTO, 0x81, 0xa1, 'k');               /* map missing value */
    assert_int_equal(check((const uint8_t *)"", 0), BP_EPROTO);
}

static void test_wire_depth_and_node_limits(void **state)
{
    (void)state;
    uint8_t deep[40];
    memset(deep, 0x91, sizeof deep);
    deep[33] = 0x01;
    assert_int_equal(check(deep, 34), BP_EPROTO); /* 33 nested arrays */
    uint8_t ok[9];
    memset(ok, 0x91, 8);
    ok[8] = 0x01;
    assert_int_equal(check(ok, 9), BP_OK);        /* depth 8 is the limit */
    uint8_t nine[10];
    memset(nine, 0x91, 9);
    nine[9] = 0x01;
    assert_int_equal(check(nine, 10), BP_EPROTO);

    /* Node budget: an array of 100 nils under a limit of 50 nodes. */
    uint8_t many[103] = {0xdc, 0x00, 100};
    memset(many + 3, 0xc0, 100);
    bp_wire_limits lim = {8, 50};
    bp_error e;
    assert_int_equal(bp_wire_check(many, sizeof many, &lim, &e), BP_EPROTO);
    assert_non_null(strstr(e.msg, "more than 50"));
    assert_int_equal(bp_wire_check(many, sizeof many, NULL, &e), BP_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wire_accepts_valid_objects),
        cmocka_unit_test(test_wire_rejects_hostile_headers),
        cmocka_unit_test(test_wire_depth_and_node_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
