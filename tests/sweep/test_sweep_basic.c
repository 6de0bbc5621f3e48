/* The sweep on in-memory tensors: equality with the kernels, chunked and
 * row-ranged sweeps merged == one whole sweep bit for bit, options, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/half.h"
#include "bitplan/sweep.h"
#include "../formats/fmt_testutil.h"

typedef struct {
    bp_tensor_info t;
    void *data;
    float *f32; /* the same values as float */
} mem_tensor;

static void mem_tensor_make(mem_tensor *m, bp_dtype dt, int64_t rows, int64_t cols,
                            uint64_t seed)
{
    memset(m, 0, sizeof *m);
    m->f32 = tu_matrix(seed, rows, cols, 0.02f);
    size_t n = (size_t)(rows * cols);
    if (dt == BP_DTYPE_BF16) {
        uint16_t *b = malloc(n * 2);
        for (size_t i = 0; i < n; i++) {
            b[i] = bp_f32_to_bf16(m->f32[i]);
            m->f32[i] = bp_bf16_to_f32(b[i]);
        }
        m->data = b;
    } else {
        m->data = malloc(n * 4);
        memcpy(m->data, m->f32, n * 4);
    }
    m->t.name = "layers.0.mlp.w";
    m->t.dtype = dt;
    m->t.ndim = 2;
    m->t.shape[0] = rows;
    m->t.shape[1] = cols;
    m->t.numel = n;
    m->t.nbytes = n * (dt == BP_DTYPE_BF16 ? 2 : 4);
    m->t.data = m->data;
    m->t.file = "memory";
}

static void mem_tensor_free(mem_tensor *m)
{
    free(m->data);
    free(m->f32);
}

static float absmax(const float *w, size_t n)
{
    float a = 0;
    for (size_t i = 0; i < n; i++)
        a = fmaxf(a, fabsf(w[i]));
    return a;
}

static void assert_results_equal(const bp_sweep_result *a, const bp_sweep_result *b)
{
    assert_int_equal(a->nfmt, b->nfmt);
    assert_int_equal(a->nchunks, b->nchunks);
    assert_memory_equal(a->supported, b->supported, a->nfmt);
    assert_memory_equal(a->bytes, b->bytes, a->nfmt * sizeof *a->bytes);
    assert_memory_equal(a->chunk_done, b->chunk_done, (size_t)a->nchunks);
    for (size_t f = 0; f < a->nfmt; f++)
        for (int m = 0; m < BP_SWEEP_NMETRIC; m++) {
            double x = bp_sweep_result_total(a, f, m), y = bp_sweep_result_total(b, f, m);
            assert_memory_equal(&x, &y, sizeof x);
            assert_memory_equal(bp_sweep_partial(a, f, m), bp_sweep_partial(b, f, m),
                                (size_t)a->nchunks * sizeof(double));
        }
}

/* Whole-tensor totals equal the kernel's per-row errors summed by chunk. */
static void test_sweep_equals_kernels(void **state)
{
    (void)state;
    const int64_t rows = 200, cols = 128;
    bp_dtype dts[] = {BP_DTYPE_F32, BP_DTYPE_BF16};
    bp_format menu[64];
    size_t nf = bp_format_menu(menu, 64);
    float colw[128];
    for (int j = 0; j < cols; j++)
        colw[j] = 0.5f + (float)(j % 5);
    for (int d = 0; d < 2; d++) {
        mem_tensor m;
        mem_tensor_make(&m, dts[d], rows, cols, 21 + d);
        bp_sweep_result r;
        bp_sweep_result_init(&r);
        bp_error e;
        assert_int_equal(bp_sweep_tensor(&m.t, menu, nf, colw, 0, rows, &r, &e), BP_OK);
        assert_true(bp_sweep_result_complete(&r));
        assert_int_equal(r.nchunks, 4);
        assert_true(r.tensor_absmax == absmax(m.f32, (size_t)(rows * cols)));
        double sse[200], wsse[200];
        for (size_t i = 0; i < nf; i++) {
            assert_true(r.supported[i]);
            assert_int_equal(r.bytes[i], bp_format_bytes(&menu[i], rows, cols));
            float tp = bp_format_tensor_param(&menu[i], r.tensor_absmax);
            assert_int_equal(bp_format_rtn_error_rows(&menu[i], m.f32, rows, cols, tp, colw, sse,
                                                      wsse, NULL, &e),
                             BP_OK);
            double ts = 0, tw = 0;
            for (int64_t c = 0; c < rows; c += 64) {
                double a = 0, b = 0;
                for (int64_t k = c; k < c + 64 && k < rows; k++) {
                    a += sse[k];
                    b += wsse[k];
                }
                ts += a;
                tw += b;
            }
            assert_true(bp_sweep_result_total(&r, i, BP_SWEEP_SSE) == ts);
            assert_true(bp_sweep_result_total(&r, i, BP_SWEEP_WSSE) == tw);
            if (menu[i].kind == BP_FMT_BF16 && dts[d] == BP_DTYPE_BF16)
                assert_true(ts == 0.0);
            else if (menu[i].kind != BP_FMT_F16 || dts[d] != BP_DTYPE_BF16)
                assert_true(ts > 0.0);
        }
        /* Fewer bits, more error (same grouping). */
        assert_true(bp_sweep_result_total(&r, 0, BP_SWEEP_SSE) >
                    bp_sweep_result_total(&r, 8, BP_SWEEP_SSE));
        bp_sweep_result_free(&r);
        bp_sweep_result_free(&r);
        mem_tensor_free(&m);
    }
}

/* Row ranges (different slice sizes, thread counts, merge orders) merged ==
 * the whole sweep, bit for bit. */
static void test_ranges_merge_bit_exact(void **state)
{
    (void)state;
    const int64_t rows = 64 * 5 + 13, cols = 256;
    mem_tensor m;
    mem_tensor_make(&m, BP_DTYPE_BF16, rows, cols, 33);
    bp_format menu[64];
    size_t nf = bp_format_menu(menu, 64);
    float colw[256];
    for (int j = 0; j < cols; j++)
        colw[j] = (float)((j * 37) % 11) * 0.25f;
    bp_error e;
    bp_sweep_result whole, parts[3], merged, merged2;
    bp_sweep_result_init(&whole);
    bp_sweep_result_init(&merged);
    bp_sweep_result_init(&merged2);
    for (int i = 0; i < 3; i++)
        bp_sweep_result_init(&parts[i]);
    assert_int_equal(bp_sweep_tensor(&m.t, menu, nf, colw, 0, rows, &whole, &e), BP_OK);

    bp_sweep_opts o = BP_SWEEP_OPTS_INIT;
    o.tensor_absmax = whole.tensor_absmax;
    int nt = omp_get_max_threads();
    const int64_t r0[3] = {0, 64, 192}, nr[3] = {64, 128, rows - 192};
    for (int i = 0; i < 3; i++) {
        o.slice_rows = i == 1 ? 64 : i == 2 ? 7 : 0; /* 7: blocks that do not divide a chunk */
        omp_set_num_threads(i == 2 ? 1 : (nt < 2 ? 2 : nt));
        assert_int_equal(bp_sweep_tensor_ex(&m.t, menu, nf, colw, r0[i], nr[i], &o, &parts[i], &e),
                         BP_OK);
        assert_false(bp_sweep_result_complete(&parts[i]));
    }
    omp_set_num_threads(nt);
    assert_int_equal(bp_sweep_result_merge(&merged, &parts[0], &e), BP_OK);
    assert_int_equal(bp_sweep_result_merge(&merged, &parts[1], &e), BP_OK);
    assert_false(bp_sweep_result_complete(&merged));
    /* The same chunk twice is refused and leaves dst unchanged. */
    assert_int_equal(bp_sweep_result_merge(&merged, &parts[1], &e), BP_EMISMATCH);
    assert_int_equal(bp_sweep_result_merge(&merged, &parts[2], &e), BP_OK);
    assert_true(bp_sweep_result_complete(&merged));
    assert_results_equal(&whole, &merged);
    /* Other order. */
    assert_int_equal(bp_sweep_result_merge(&merged2, &parts[2], &e), BP_OK);
    assert_int_equal(bp_sweep_result_merge(&merged2, &parts[0], &e), BP_OK);
    assert_int_equal(bp_sweep_result_merge(&merged2, &parts[1], &e), BP_OK);
    assert_results_equal(&whole, &merged2);
    /* A part's total covers only its rows. */
    double a = bp_sweep_result_total(&parts[0], 0, BP_SWEEP_SSE);
    double b = bp_sweep_partial(&whole, 0, BP_SWEEP_SSE)[0];
    assert_true(a == b);

    /* Whole sweep with a single thread and 64-row slices: identical. */
    bp_sweep_result one;
    bp_sweep_result_init(&one);
    omp_set_num_threads(1);
    o.slice_rows = 64;
    assert_int_equal(bp_sweep_tensor_ex(&m.t, menu, nf, colw, 0, rows, &o, &one, &e), BP_OK);
    omp_set_num_threads(nt);
    assert_results_equal(&whole, &one);
    /* Two threads, blocks of 5 rows: identical too. */
    bp_sweep_result_free(&one);
    omp_set_num_threads(nt < 2 ? 2 : nt);
    o.slice_rows = 5;
    assert_int_equal(bp_sweep_tensor_ex(&m.t, menu, nf, colw, 0, rows, &o, &one, &e), BP_OK);
    omp_set_num_threads(nt);
    assert_results_equal(&whole, &one);
    bp_sweep_result_free(&one);

    /* Parts that disagree on the tensor absmax or colw do not merge. */
    bp_sweep_result odd;
    bp_sweep_result_init(&odd);
    o.tensor_absmax = whole.tensor_absmax * 2;
    assert_int_equal(bp_sweep_tensor_ex(&m.t, menu, nf, colw, 0, 64, &o, &odd, &e), BP_OK);
    assert_int_equal(bp_sweep_result_merge(&parts[1], &odd, &e), BP_EMISMATCH);
    assert_int_equal(bp_sweep_tensor(&m.t, menu, nf, NULL, 0, 64, &odd, &e), BP_OK);
    assert_int_equal(bp_sweep_result_merge(&parts[1], &odd, &e), BP_EMISMATCH);
    assert_int_equal(bp_sweep_tensor(&m.t, menu, 5, colw, 0, 64, &odd, &e), BP_OK);
    assert_int_equal(bp_sweep_result_merge(&parts[1], &odd, &e), BP_EMISMATCH);

    bp_sweep_result_free(&odd);
    bp_sweep_result_free(&one);
    bp_sweep_result_free(&whole);
    bp_sweep_result_free(&merged);
    bp_sweep_result_free(&merged2);
    for (int i = 0; i < 3; i++)
        bp_sweep_result_free(&parts[i]);
    mem_tensor_free(&m);
}

static void test_unsupported_and_no_colw(void **state)
{
    (void)state;
    mem_tensor m;
    mem_tensor_make(&m, BP_DTYPE_F32, 10, 100, 44);
    bp_format menu[64];
    size_t nf = bp_format_menu(menu, 64);
    bp_sweep_result r;
    bp_sweep_result_init(&r);
    bp_error e;
    assert_int_equal(bp_sweep_tensor(&m.t, menu, nf, NULL, 0, 10, &r, &e), BP_OK);
    for (size_t i = 0; i < nf; i++) {
        int sup = menu[i].group == 0; /* 100 columns: only per-row formats */
        assert_int_equal(r.supported[i], sup);
        assert_int_equal(r.bytes[i] != 0, sup);
        double s = bp_sweep_result_total(&r, i, BP_SWEEP_SSE);
        assert_true(sup ? isfinite(s) : isnan(s));
        assert_true(isnan(bp_sweep_result_total(&r, i, BP_SWEEP_WSSE)));
    }
    assert_true(r.tensor_absmax == -1.0f); /* nvfp4 unsupported: not read */
    assert_true(isnan(bp_sweep_result_total(&r, 0, 99)));
    assert_null(bp_sweep_partial(&r, nf, 0));
    bp_sweep_result_free(&r);
    mem_tensor_free(&m);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    mem_tensor m;
    mem_tensor_make(&m, BP_DTYPE_F32, 130, 64, 55);
    bp_format f;
    assert_int_equal(bp_format_parse("int4_g32_asym", &f, NULL), BP_OK);
    bp_sweep_result r;
    bp_sweep_result_init(&r);
    bp_error e;
    assert_int_equal(bp_sweep_tensor(&m.t, &f, 1, NULL, 32, 64, &r, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "layers.0.mlp.w"));
    assert_int_equal(bp_sweep_tensor(&m.t, &f, 1, NULL, 0, 100, &r, &e), BP_EINVAL);
    assert_int_equal(bp_sweep_tensor(&m.t, &f, 1, NULL, 64, 100, &r, &e), BP_EINVAL);
    assert_int_equal(bp_sweep_tensor(&m.t, &f, 1, NULL, 128, 2, &r, &e), BP_OK);
    assert_int_equal(bp_sweep_tensor(&m.t, &f, 0, NULL, 0, 64, &r, &e), BP_EINVAL);
    assert_null(r.partial);
    float colw[64] = {0};
    colw[9] = NAN;
    assert_int_equal(bp_sweep_tensor(&m.t, &f, 1, colw, 0, 64, &r, &e), BP_EINVAL);
    bp_sweep_opts o = BP_SWEEP_OPTS_INIT;
    o.tensor_absmax = INFINITY;
    assert_int_equal(bp_sweep_tensor_ex(&m.t, &f, 1, NULL, 0, 64, &o, &r, &e), BP_EINVAL);
    /* A NaN weight is named by row. */
    ((float *)m.data)[70 * 64 + 3] = NAN;
    assert_int_equal(bp_sweep_tensor(&m.t, &f, 1, NULL, 0, 130, &r, &e), BP_EFORMAT);
    assert_non_null(strstr(e.msg, "row 70"));
    assert_int_equal(bp_sweep_tensor(&m.t, &f, 1, NULL, 0, 64, &r, &e), BP_OK);
    float amax;
    assert_int_equal(bp_sweep_tensor_absmax(&m.t, &amax, &e), BP_EFORMAT);
    /* The same in bf16 (converted and checked in one pass), with the bad
     * rows in two chunks: the first one is named whatever the threads do. */
    {
        mem_tensor b;
        mem_tensor_make(&b, BP_DTYPE_BF16, 300, 64, 56);
        ((uint16_t *)b.data)[250 * 64 + 1] = 0x7f80; /* +inf */
        ((uint16_t *)b.data)[100 * 64 + 5] = 0xffc0; /* NaN */
        for (int rep = 0; rep < 4; rep++) {
            assert_int_equal(bp_sweep_tensor(&b.t, &f, 1, NULL, 0, 300, &r, &e), BP_EFORMAT);
            assert_non_null(strstr(e.msg, "row 100"));
        }
        assert_int_equal(bp_sweep_tensor_absmax(&b.t, &amax, &e), BP_EFORMAT);
        assert_non_null(strstr(e.msg, "row 100"));
        assert_int_equal(bp_sweep_tensor(&b.t, &f, 1, NULL, 0, 64, &r, &e), BP_OK);
        mem_tensor_free(&b);
    }
    /* Unreadable dtype. */
    m.t.dtype = BP_DTYPE_I32;
    assert_int_equal(bp_sweep_tensor(&m.t, &f, 1, NULL, 0, 64, &r, &e), BP_EUNSUPPORTED);
    bp_sweep_result_free(&r);
    mem_tensor_free(&m);
}

/* A bf16 tensor's max |w| is taken from the bits: the largest magnitude
 * whatever its sign, subnormals and -0 included, across chunks. */
static void test_bf16_absmax_bits(void **state)
{
    (void)state;
    mem_tensor m;
    mem_tensor_make(&m, BP_DTYPE_BF16, 150, 32, 57);
    uint16_t *b = m.data;
    float amax;
    bp_error e;
    for (size_t i = 0; i < 150 * 32; i++)
        b[i] = (uint16_t)(i % 3 == 0 ? 0x8000u : i % 3 == 1 ? 0x0001u : 0x8003u);
    assert_int_equal(bp_sweep_tensor_absmax(&m.t, &amax, &e), BP_OK);
    assert_true(amax == bp_bf16_to_f32(0x0003u));
    b[140 * 32 + 7] = bp_f32_to_bf16(-3.5f);
    b[10 * 32 + 1] = bp_f32_to_bf16(3.25f);
    assert_int_equal(bp_sweep_tensor_absmax(&m.t, &amax, &e), BP_OK);
    assert_true(amax == 3.5f);
    /* The largest finite bf16 is not mistaken for an infinity. */
    b[70 * 32] = 0xff7fu;
    assert_int_equal(bp_sweep_tensor_absmax(&m.t, &amax, &e), BP_OK);
    assert_true(amax == bp_bf16_to_f32(0x7f7fu));
    memset(b, 0x80, 150 * 32 * 2); /* 0x8080: negative subnormals */
    assert_int_equal(bp_sweep_tensor_absmax(&m.t, &amax, &e), BP_OK);
    assert_true(amax == bp_bf16_to_f32(0x0080u));
    mem_tensor_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sweep_equals_kernels),
        cmocka_unit_test(test_ranges_merge_bit_exact),
        cmocka_unit_test(test_unsupported_and_no_colw),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_bf16_absmax_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
