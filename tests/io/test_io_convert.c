/* bp_tensor_rows_f32: exact values for every float dtype, the matrix view,
 * range checks, unaligned data and the parallel path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/half.h"
#include "bitplan/model.h"

/* A tensor over caller memory (as the reader would make it). */
static bp_tensor_info view(const char *name, bp_dtype dt, int ndim, const int64_t *shape,
                           const void *data)
{
    bp_tensor_info t;
    memset(&t, 0, sizeof t);
    t.name = (char *)name;
    t.dtype = dt;
    t.ndim = ndim;
    t.numel = 1;
    for (int d = 0; d < ndim; d++) {
        t.shape[d] = shape[d];
        t.numel *= (uint64_t)shape[d];
    }
    t.nbytes = t.numel * bp_dtype_size(dt);
    t.data = data;
    t.file = "memory";
    return t;
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void test_exact_values(void **state)
{
    (void)state;
    int64_t shape[2] = {2, 3};
    float out[6];
    bp_error e;

    const float f32[6] = {1.5f, -2.25f, 0.0f, 3.0e-39f, 65504.0f, -INFINITY};
    bp_tensor_info t = view("f32", BP_DTYPE_F32, 2, shape, f32);
    assert_int_equal(bp_tensor_rows_f32(&t, 0, 2, out, &e), BP_OK);
    for (int i = 0; i < 6; i++)
        assert_int_equal(bits(out[i]), bits(f32[i]));

    /* F16: 1, -2, 0.5, 65504 (max), smallest subnormal 2^-24, -0. */
    const uint16_t f16[6] = {0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x8000};
    const float f16v[6] = {1.0f, -2.0f, 0.5f, 65504.0f, 5.9604644775390625e-08f, -0.0f};
    t = view("f16", BP_DTYPE_F16, 2, shape, f16);
    assert_int_equal(bp_tensor_rows_f32(&t, 0, 2, out, &e), BP_OK);
    for (int i = 0; i < 6; i++)
        assert_int_equal(bits(out[i]), bits(f16v[i]));

    /* BF16: 1, -2, 0.15625, 3.3895314e38 (max), -inf, 1.5. */
    const uint16_t bf[6] = {0x3f80, 0xc000, 0x3e20, 0x7f7f, 0xff80, 0x3fc0};
    const float bfv[6] = {1.0f, -2.0f, 0.15625f, 3.3895313892515355e38f, -INFINITY, 1.5f};
    t = view("bf16", BP_DTYPE_BF16, 2, shape, bf);
    assert_int_equal(bp_tensor_rows_f32(&t, 0, 2, out, &e), BP_OK);
    for (int i = 0; i < 6; i++)
        assert_int_equal(bits(out[i]), bits(bfv[i]));

    /* F64 rounds to nearest float; huge values become infinity. */
    const double f64[6] = {0.1, -1e300, 1.0 / 3.0, 16777217.0, 2.5, 0.0};
    t = view("f64", BP_DTYPE_F64, 2, shape, f64);
    assert_int_equal(bp_tensor_rows_f32(&t, 1, 1, out, &e), BP_OK);
    assert_true(out[0] == 16777216.0f); /* tie to even */
    assert_true(out[1] == 2.5f);
    assert_true(out[2] == 0.0f);
    assert_int_equal(bp_tensor_rows_f32(&t, 0, 1, out, &e), BP_OK);
    assert_true(out[0] == 0.1f);
    assert_true(isinf(out[1]) && out[1] < 0);
    assert_true(out[2] == (float)(1.0 / 3.0));
}

/* Every f16 bit pattern converts exactly as common/half.c does. */
static void test_all_f16_patterns(void **state)
{
    (void)state;
    int64_t shape[2] = {256, 256};
    uint16_t *h = malloc(65536 * sizeof *h);
    float *out = malloc(65536 * sizeof *out);
    for (uint32_t i = 0; i < 65536; i++)
        h[i] = (uint16_t)i;
    bp_tensor_info t = view("all", BP_DTYPE_F16, 2, shape, h);
    assert_int_equal(bp_tensor_rows_f32(&t, 0, 256, out, NULL), BP_OK);
    for (uint32_t i = 0; i < 65536; i++) {
        float ref = bp_f16_to_f32((uint16_t)i);
        if (isnan(ref))
            assert_true(isnan(out[i]));
        else if (bits(out[i]) != bits(ref)) {
            print_error("f16 0x%04x: got %a want %a\n", i, out[i], ref);
            fail();
        }
    }
    free(h);
    free(out);
}

static void test_matrix_view_and_ranges(void **state)
{
    (void)state;
    float data[24];
    for (int i = 0; i < 24; i++)
        data[i] = (float)i;
    float out[24];
    bp_error e;

    int64_t s3[3] = {2, 3, 4};
    bp_tensor_info t = view("t3", BP_DTYPE_F32, 3, s3, data);
    assert_int_equal(bp_tensor_rows(&t), 2);
    assert_int_equal(bp_tensor_cols(&t), 12);
    assert_int_equal(bp_tensor_rows_f32(&t, 1, 1, out, &e), BP_OK);
    assert_true(out[0] == 12.0f && out[11] == 23.0f);

    int64_t s1[1] = {5};
    t = view("t1", BP_DTYPE_F32, 1, s1, data);
    assert_int_equal(bp_tensor_rows(&t), 1);
    assert_int_equal(bp_tensor_cols(&t), 5);
    assert_int_equal(bp_tensor_rows_f32(&t, 0, 1, out, &e), BP_OK);
    assert_true(out[4] == 4.0f);

    t = view("t0", BP_DTYPE_F32, 0, NULL, data + 7);
    assert_int_equal(bp_tensor_rows(&t), 1);
    assert_int_equal(bp_tensor_cols(&t), 1);
    assert_int_equal(bp_tensor_rows_f32(&t, 0, 1, out, &e), BP_OK);
    assert_true(out[0] == 7.0f);

    /* Empty first dimension: 0 rows, cols from the other dims. */
    int64_t s0[2] = {0, 4};
    t = view("t_empty", BP_DTYPE_F32, 2, s0, data);
    assert_int_equal(bp_tensor_rows(&t), 0);
    assert_int_equal(bp_tensor_cols(&t), 4);
    assert_int_equal(bp_tensor_rows_f32(&t, 0, 0, out, &e), BP_OK);

    int64_t s2[2] = {4, 6};
    t = view("w", BP_DTYPE_F32, 2, s2, data);
    assert_int_equal(bp_tensor_rows_f32(&t, 4, 0, out, &e), BP_OK); /* empty range at end */
    assert_int_equal(bp_tensor_rows_f32(&t, 3, 2, out, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "tensor 'w'"));
    assert_int_equal(bp_tensor_rows_f32(&t, -1, 1, out, &e), BP_EINVAL);
    assert_int_equal(bp_tensor_rows_f32(&t, 0, -1, out, &e), BP_EINVAL);
    assert_int_equal(bp_tensor_rows_f32(&t, 5, 0, out, &e), BP_EINVAL);
    assert_int_equal(bp_tensor_rows_f32(&t, INT64_MAX, INT64_MAX, out, &e), BP_EINVAL);
    assert_int_equal(bp_tensor_rows_f32(&t, 0, 1, NULL, &e), BP_EINVAL);
    assert_int_equal(bp_tensor_rows_f32(NULL, 0, 1, out, &e), BP_EINVAL);

    t = view("packed", BP_DTYPE_U8, 2, s2, data);
    assert_int_equal(bp_tensor_rows_f32(&t, 0, 1, out, &e), BP_EUNSUPPORTED);
    assert_non_null(strstr(e.msg, "U8"));
    t = view("ids", BP_DTYPE_I32, 2, s2, data);
    assert_int_equal(bp_tensor_rows_f32(&t, 0, 1, out, &e), BP_EUNSUPPORTED);
    assert_non_null(strstr(e.msg, "I32"));
}

/* Data at odd addresses (a header length that is not a multiple of the
 * element size) converts correctly; UBSan would flag misaligned loads. */
static void test_unaligned(void **state)
{
    (void)state;
    unsigned char raw[1 + 8 * 8];
    int64_t shape[1] = {8};
    float out[8];
    for (int k = 0; k < 4; k++) {
        bp_dtype dt = (bp_dtype[]){BP_DTYPE_F32, BP_DTYPE_F16, BP_DTYPE_BF16, BP_DTYPE_F64}[k];
        for (int i = 0; i < 8; i++) {
            float v = (float)i - 3.5f;
            unsigned char *p = raw + 1 + i * bp_dtype_size(dt);
            if (dt == BP_DTYPE_F32)
                memcpy(p, &v, 4);
            else if (dt == BP_DTYPE_F64) {
                double d = v;
                memcpy(p, &d, 8);
            } else {
                uint16_t h = dt == BP_DTYPE_F16 ? bp_f32_to_f16(v) : bp_f32_to_bf16(v);
                memcpy(p, &h, 2);
            }
        }
        bp_tensor_info t = view("odd", dt, 1, shape, raw + 1);
        assert_int_equal(bp_tensor_rows_f32(&t, 0, 1, out, NULL), BP_OK);
        for (int i = 0; i < 8; i++)
            assert_true(out[i] == (float)i - 3.5f);
    }
}

/* Above 1M elements the conversion runs in parallel; results must equal
 * element-wise scalar conversion, and a row window must line up. */
static void test_large_parallel(void **state)
{
    (void)state;
    const int64_t rows = 1100, cols = 1031; /* 1.13M elements, odd sizes */
    size_t n = (size_t)(rows * cols);
    int64_t shape[2] = {rows, cols};
    uint16_t *h = malloc(n * sizeof *h);
    float *out = malloc(n * sizeof *out);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        h[i] = (uint16_t)(x >> 16);
    }
    for (int k = 0; k < 2; k++) {
        bp_dtype dt = k ? BP_DTYPE_BF16 : BP_DTYPE_F16;
        bp_tensor_info t = view("big", dt, 2, shape, h);
        assert_int_equal(bp_tensor_rows_f32(&t, 0, rows, out, NULL), BP_OK);
        for (size_t i = 0; i < n; i++) {
            float ref = k ? bp_bf16_to_f32(h[i]) : bp_f16_to_f32(h[i]);
            if (isnan(ref) ? !isnan(out[i]) : bits(out[i]) != bits(ref)) {
                print_error("element %zu differs\n", i);
                fail();
            }
        }
        /* Rows 37..1099 (still > 1M elements): the window is exact. */
        assert_int_equal(bp_tensor_rows_f32(&t, 37, rows - 37, out, NULL), BP_OK);
        for (size_t i = 0; i < (size_t)((rows - 37) * cols); i += 997) {
            float ref = k ? bp_bf16_to_f32(h[i + 37 * cols]) : bp_f16_to_f32(h[i + 37 * cols]);
            assert_true(isnan(ref) ? isnan(out[i]) : bits(out[i]) == bits(ref));
        }
    }
    free(h);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_values),
        cmocka_unit_test(test_all_f16_patterns),
        cmocka_unit_test(test_matrix_view_and_ranges),
        cmocka_unit_test(test_unaligned),
        cmocka_unit_test(test_large_parallel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
