/* Every menu format on seeded random matrices: quantize -> dequantize error
 * bounds, fused error == quantize + dequantize bit for bit, pack -> unpack
 * bit-exact, thread-count independence, rejected shapes and inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "bitplan/format.h"
#include "bitplan/half.h"
#include "fmt_testutil.h"

static bp_format fmt(const char *name)
{
    bp_format f;
    if (bp_format_parse(name, &f, NULL) != BP_OK)
        fail_msg("parse %s", name);
    return f;
}

static float absmax(const float *w, int64_t n)
{
    float a = 0;
    for (int64_t i = 0; i < n; i++)
        a = fmaxf(a, fabsf(w[i]));
    return a;
}

/* Half a quantization step for values inside the representable range;
 * values outside it (clipped) go to the nearest end. */
static void check_bound(const bp_format *f, const bp_qparams *p, float x, float q,
                        int64_t r, int64_t j)
{
    double err = fabs((double)x - (double)q), tol = 0, lo = 0, hi = 0;
    int ranged = 0;
    switch (f->kind) {
    case BP_FMT_INT: {
        double s = p->scale, step = fabs(s);
        if (f->asym) {
            lo = p->offset;
            hi = (double)(p->scale * (float)((1 << f->bits) - 1) + p->offset);
        } else {
            double a = s * -(double)(1 << (f->bits - 1)), b = s * (double)((1 << (f->bits - 1)) - 1);
            lo = fmin(a, b);
            hi = fmax(a, b);
        }
        tol = step / 2 * (1 + 1e-5) + 1e-30;
        ranged = 1;
        if (x < lo - step / 2 || x > hi + step / 2) {
            double end = x < lo ? lo : hi;
            if (fabs((double)q - end) > 1e-6 * fabs(end))
                fail_msg("%s r%lld c%lld: clipped %g -> %g, end %g", f->name, (long long)r,
                         (long long)j, (double)x, (double)q, end);
            return;
        }
        break;
    }
    case BP_FMT_FP8_E4M3: {
        double a = fabs(x) / p->scale;
        if (p->scale == 0) {
            tol = 0;
            break;
        }
        if (a > 448 * (1 + 1e-6)) {
            tol = err; /* saturated: |q| must be 448 s */
            assert_true(fabs(fabs(q) - 448.0 * p->scale) <= 1e-6 * fabs(q));
        } else {
            tol = fmax(fabs(x) * 0x1p-4, p->scale * 0x1p-10) * (1 + 1e-5);
        }
        break;
    }
    case BP_FMT_MXFP4:
    case BP_FMT_NVFP4: {
        if (p->scale == 0) {
            tol = 0;
            break;
        }
        double a = fabs(x) / p->scale;
        if (a > 6 * (1 + 1e-6)) {
            tol = err;
            assert_true(fabs(fabs(q) - 6.0 * p->scale) <= 1e-6 * fabs(q));
        } else {
            tol = (a < 2 ? 0.25 : a < 4 ? 0.5 : 1.0) * p->scale * (1 + 1e-5);
        }
        break;
    }
    case BP_FMT_F16: tol = fmax(fabs(x) * 0x1p-11, 0x1p-25) * (1 + 1e-6); break;
    case BP_FMT_BF16: tol = fabs(x) * 0x1p-8 * (1 + 1e-6) + 1e-38; break;
    }
    (void)ranged;
    if (err > tol)
        fail_msg("%s r%lld c%lld: %.9g -> %.9g, error %g above %g (scale %g offset %g)",
                 f->name, (long long)r, (long long)j, (double)x, (double)q, err, tol,
                 (double)p->scale, (double)p->offset);
}

typedef struct {
    uint16_t *codes;
    bp_qparams *params;
    float *deq, *qdq, *colw;
    double *sse, *wsse, *sse2;
    uint8_t *packed;
} bufs;

static void run_format(const bp_format *f, const float *w, int64_t rows, int64_t cols)
{
    int64_t n = rows * cols, gpr = bp_format_groups_per_row(f, cols);
    bufs b;
    b.codes = malloc((size_t)n * sizeof *b.codes);
    b.params = malloc((size_t)(rows * gpr) * sizeof *b.params);
    b.deq = malloc((size_t)n * sizeof(float));
    b.qdq = malloc((size_t)n * sizeof(float));
    b.colw = malloc((size_t)cols * sizeof(float));
    b.sse = malloc((size_t)rows * sizeof(double));
    b.wsse = malloc((size_t)rows * sizeof(double));
    b.sse2 = malloc((size_t)rows * sizeof(double));
    uint64_t nb = bp_format_bytes(f, rows, cols);
    assert_true(nb > 0);
    b.packed = malloc(nb);
    tu_rng rg = {99};
    for (int64_t j = 0; j < cols; j++)
        b.colw[j] = (float)(tu_unif(&rg) * 3);

    float tp = bp_format_tensor_param(f, absmax(w, n));
    bp_error e;
    assert_int_equal(bp_format_quantize_rows(f, w, rows, cols, tp, b.codes, b.params, &e), BP_OK);
    bp_format_dequantize_rows(f, b.codes, b.params, rows, cols, b.deq);
    assert_int_equal(bp_format_rtn_error_rows(f, w, rows, cols, tp, b.colw, b.sse, b.wsse,
                                              b.qdq, &e),
                     BP_OK);
    /* Fused == quantize + dequantize, bit for bit. */
    if (memcmp(b.qdq, b.deq, (size_t)n * sizeof(float)) != 0)
        fail_msg("%s %lldx%lld: fused dequantized values differ", f->name, (long long)rows,
                 (long long)cols);
    for (int64_t r = 0; r < rows; r++) {
        assert_true(b.sse[r] == tu_row_sse(w + r * cols, b.deq + r * cols, cols));
        assert_true(b.wsse[r] == tu_row_wsse(w + r * cols, b.deq + r * cols, b.colw, cols));
    }
    /* The public error function re-measures the dequantized tensor to the
     * same bits as the fused kernel predicted. */
    {
        double *s3 = malloc((size_t)rows * sizeof(double)), *w3 = malloc((size_t)rows * sizeof(double));
        bp_format_error_rows(w, b.deq, rows, cols, b.colw, s3, w3);
        assert_memory_equal(s3, b.sse, (size_t)rows * sizeof(double));
        assert_memory_equal(w3, b.wsse, (size_t)rows * sizeof(double));
        free(s3);
        free(w3);
    }
    /* Without qdq and without colw: same sse, wsse NaN. */
    assert_int_equal(bp_format_rtn_error_rows(f, w, rows, cols, tp, NULL, b.sse2, b.wsse, NULL,
                                              &e),
                     BP_OK);
    assert_memory_equal(b.sse, b.sse2, (size_t)rows * sizeof(double));
    for (int64_t r = 0; r < rows; r++)
        assert_true(isnan(b.wsse[r]));

    /* Error bounds, element by element. */
    int64_t g = f->group ? f->group : cols;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) {
            const bp_qparams *p = &b.params[r * gpr + j / g];
            check_bound(f, p, w[r * cols + j], b.deq[r * cols + j], r, j);
            assert_true(bp_format_encode(f, p, w[r * cols + j]) == b.codes[r * cols + j]);
        }

    /* Pack -> unpack is exact. */
    assert_int_equal(bp_format_pack(f, rows, cols, b.codes, b.params, tp, b.packed, nb, &e),
                     BP_OK);
    assert_int_equal(bp_format_pack(f, rows, cols, b.codes, b.params, tp, b.packed, nb + 1, &e),
                     BP_EINVAL);
    uint16_t *c2 = malloc((size_t)n * sizeof *c2);
    bp_qparams *p2 = malloc((size_t)(rows * gpr) * sizeof *p2);
    float tp2 = -1;
    assert_int_equal(bp_format_unpack(f, rows, cols, b.packed, nb, c2, p2, &tp2, &e), BP_OK);
    assert_memory_equal(c2, b.codes, (size_t)n * sizeof *c2);
    if (f->kind != BP_FMT_F16 && f->kind != BP_FMT_BF16)
        assert_memory_equal(p2, b.params, (size_t)(rows * gpr) * sizeof *p2);
    assert_true(tp2 == (f->kind == BP_FMT_NVFP4 ? tp : 0.0f));
    assert_int_equal(bp_format_unpack(f, rows, cols, b.packed, nb - 1, c2, p2, &tp2, &e),
                     BP_EFORMAT);
    assert_int_equal(bp_format_unpack(f, rows, cols, b.packed, nb + 1, c2, p2, &tp2, &e),
                     BP_EFORMAT);

    /* Thread-count independence. */
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    assert_int_equal(bp_format_quantize_rows(f, w, rows, cols, tp, c2, p2, &e), BP_OK);
    assert_int_equal(bp_format_rtn_error_rows(f, w, rows, cols, tp, b.colw, b.sse2, b.wsse,
                                              NULL, &e),
                     BP_OK);
    omp_set_num_threads(nt < 2 ? 2 : nt);
    assert_memory_equal(c2, b.codes, (size_t)n * sizeof *c2);
    if (f->kind != BP_FMT_F16 && f->kind != BP_FMT_BF16)
        assert_memory_equal(p2, b.params, (size_t)(rows * gpr) * sizeof *p2);
    assert_memory_equal(b.sse, b.sse2, (size_t)rows * sizeof(double));
    assert_int_equal(bp_format_rtn_error_rows(f, w, rows, cols, tp, b.colw, b.sse2, b.wsse,
                                              NULL, &e),
                     BP_OK);
    assert_memory_equal(b.sse, b.sse2, (size_t)rows * sizeof(double));
    omp_set_num_threads(nt);

    free(c2);
    free(p2);
    free(b.codes);
    free(b.params);
    free(b.deq);
    free(b.qdq);
    free(b.colw);
    free(b.sse);
    free(b.wsse);
    free(b.sse2);
    free(b.packed);
}

static void test_every_format_round_trip(void **state)
{
    (void)state;
    /* 2368 = 37 x 64 and 2432 = 19 x 128: rows of several 16-group blocks
     * (the fused kernel fits 16 groups at a time) and a partial one. */
    static const int64_t shapes[][2] = {{7, 256},  {5, 96},   {3, 100}, {67, 128},
                                        {2, 4096}, {3, 2368}, {2, 2432}, {1, 1}};
    bp_format m[64];
    size_t nf = bp_format_menu(m, 64);
    int runs = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t rows = shapes[s][0], cols = shapes[s][1];
        float *w = tu_matrix(1000 + s, rows, cols, 0.02f);
        for (size_t i = 0; i < nf; i++) {
            if (!bp_format_supports(&m[i], rows, cols))
                continue;
            run_format(&m[i], w, rows, cols);
            runs++;
        }
        free(w);
    }
    assert_true(runs > 53 * 3);
}

/* Values far from weight scale: large (fp16 params still hold them) and
 * tiny (subnormal fp16 scales). */
static void test_extreme_scales(void **state)
{
    (void)state;
    bp_format m[64];
    size_t nf = bp_format_menu(m, 64);
    const float scales[] = {300.0f, 1e-6f};
    for (size_t k = 0; k < 2; k++) {
        float *w = tu_matrix(77 + k, 4, 128, scales[k]);
        for (size_t i = 0; i < nf; i++)
            run_format(&m[i], w, 4, 128);
        free(w);
    }
    /* Int formats beyond what fp16 parameters reach: the scale saturates,
     * x / scale goes far past 2^22 (where the vector kernels' rounding by
     * the magic constant no longer holds before the clamp), and every path
     * must still clamp such values to the end codes alike. */
    float *w = tu_matrix(79, 4, 128, 1e12f);
    for (int64_t j = 0; j < 128; j += 9)
        w[j] = -w[j] * 1e-9f;
    for (size_t i = 0; i < nf; i++)
        if (m[i].kind == BP_FMT_INT)
            run_format(&m[i], w, 4, 128);
    free(w);
}

/* bp_format_error_rows on arbitrary data and shapes (tails of every length
 * mod 16): the documented lane order, bit for bit, with any thread count;
 * wsse NaN without colw; NULL and empty arguments do nothing. */
static void test_error_rows(void **state)
{
    (void)state;
    static const int64_t shapes[][2] = {{3, 1}, {5, 15}, {4, 16}, {7, 17}, {2, 33},
                                        {9, 100}, {65, 128}, {3, 4099}};
    int nt = omp_get_max_threads();
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t rows = shapes[s][0], cols = shapes[s][1], n = rows * cols;
        float *w = tu_matrix(300 + s, rows, cols, 0.02f), *q = tu_matrix(400 + s, rows, cols, 0.02f);
        float *colw = malloc((size_t)cols * sizeof *colw);
        double *sse = malloc((size_t)rows * sizeof *sse), *wsse = malloc((size_t)rows * sizeof *wsse);
        double *s1 = malloc((size_t)rows * sizeof *s1), *w1 = malloc((size_t)rows * sizeof *w1);
        tu_rng rg = {s};
        for (int64_t j = 0; j < cols; j++)
            colw[j] = (float)(tu_unif(&rg) * 4);
        for (int64_t i = 0; i < n; i++)
            q[i] = w[i] + q[i] * 0.01f;
        bp_format_error_rows(w, q, rows, cols, colw, sse, wsse);
        for (int64_t r = 0; r < rows; r++) {
            assert_true(sse[r] == tu_row_sse(w + r * cols, q + r * cols, cols));
            assert_true(wsse[r] == tu_row_wsse(w + r * cols, q + r * cols, colw, cols));
        }
        omp_set_num_threads(1);
        bp_format_error_rows(w, q, rows, cols, colw, s1, w1);
        omp_set_num_threads(nt < 2 ? 2 : nt);
        assert_memory_equal(s1, sse, (size_t)rows * sizeof *s1);
        assert_memory_equal(w1, wsse, (size_t)rows * sizeof *w1);
        omp_set_num_threads(nt);
        bp_format_error_rows(w, q, rows, cols, NULL, s1, w1);
        assert_memory_equal(s1, sse, (size_t)rows * sizeof *s1);
        for (int64_t r = 0; r < rows; r++)
            assert_true(isnan(w1[r]));
        bp_format_error_rows(w, q, rows, cols, colw, s1, NULL);
        assert_memory_equal(s1, sse, (size_t)rows * sizeof *s1);
        free(w);
        free(q);
        free(colw);
        free(sse);
        free(wsse);
        free(s1);
        free(w1);
    }
    double x = 7.0;
    float v = 1.0f;
    bp_format_error_rows(NULL, &v, 1, 1, NULL, &x, NULL);
    bp_format_error_rows(&v, NULL, 1, 1, NULL, &x, NULL);
    bp_format_error_rows(&v, &v, 0, 1, NULL, &x, NULL);
    bp_format_error_rows(&v, &v, 1, 0, NULL, &x, NULL);
    assert_true(x == 7.0);
    bp_format_error_rows(&v, &v, 1, 1, NULL, &x, NULL);
    assert_true(x == 0.0);
}

static void test_unsupported_and_bad_inputs(void **state)
{
    (void)state;
    bp_format f = fmt("int4_g128_asym");
    float w[4 * 100] = {0};
    uint16_t c[4 * 100];
    bp_qparams p[8];
    double sse[4], wsse[4];
    uint8_t out[1024];
    bp_error e;
    assert_int_equal(bp_format_quantize_rows(&f, w, 4, 100, 0, c, p, &e), BP_EUNSUPPORTED);
    assert_int_equal(bp_format_rtn_error_rows(&f, w, 4, 100, 0, NULL, sse, NULL, NULL, &e),
                     BP_EUNSUPPORTED);
    assert_int_equal(bp_format_pack(&f, 4, 100, c, p, 0, out, sizeof out, &e), BP_EUNSUPPORTED);
    assert_int_equal(bp_format_unpack(&f, 4, 100, out, sizeof out, c, p, NULL, &e),
                     BP_EUNSUPPORTED);
    f = fmt("mxfp4");
    assert_int_equal(bp_format_rtn_error_rows(&f, w, 2, 48, 0, NULL, sse, NULL, NULL, &e),
                     BP_EUNSUPPORTED);
    f = fmt("nvfp4");
    assert_int_equal(bp_format_rtn_error_rows(&f, w, 2, 24, 0, NULL, sse, NULL, NULL, &e),
                     BP_EUNSUPPORTED);
    assert_int_equal(bp_format_rtn_error_rows(&f, w, 2, 32, NAN, NULL, sse, NULL, NULL, &e),
                     BP_EINVAL);
    assert_int_equal(bp_format_rtn_error_rows(&f, w, 2, 32, -1, NULL, sse, NULL, NULL, &e),
                     BP_EINVAL);

    /* Non-finite weights and column weights are reported, not quantized. */
    f = fmt("int4_g32_sym");
    w[40] = NAN;
    assert_int_equal(bp_format_rtn_error_rows(&f, w, 2, 32, 0, NULL, sse, NULL, NULL, &e),
                     BP_EINVAL);
    assert_non_null(strstr(e.msg, "row 1"));
    assert_int_equal(bp_format_quantize_rows(&f, w, 2, 32, 0, c, p, &e), BP_EINVAL);
    w[40] = INFINITY;
    assert_int_equal(bp_format_rtn_error_rows(&f, w, 2, 32, 0, NULL, sse, NULL, NULL, &e),
                     BP_EINVAL);
    w[40] = 0;
    float colw[32] = {0};
    colw[3] = -1;
    assert_int_equal(bp_format_rtn_error_rows(&f, w, 2, 32, 0, colw, sse, wsse, NULL, &e),
                     BP_EINVAL);
    colw[3] = 1;
    assert_int_equal(bp_format_rtn_error_rows(&f, w, 2, 32, 0, colw, sse, NULL, NULL, &e),
                     BP_EINVAL);
    assert_int_equal(bp_format_rtn_error_rows(&f, w, 2, 32, 0, colw, sse, wsse, NULL, &e), BP_OK);
    assert_int_equal(bp_format_rtn_error_rows(&f, w, 0, 32, 0, NULL, sse, NULL, NULL, &e), BP_OK);
}

/* Pack a small tensor, then corrupt one stored field at a time. */
static void corrupt_case(const char *name, int64_t rows, int64_t cols,
                         void (*poke)(uint8_t *buf, uint64_t code_bytes, uint64_t ng),
                         const char *why)
{
    bp_format f = fmt(name);
    float *w = tu_matrix(5, rows, cols, 0.05f);
    int64_t n = rows * cols, gpr = bp_format_groups_per_row(&f, cols);
    uint16_t *c = malloc((size_t)n * sizeof *c);
    bp_qparams *p = malloc((size_t)(rows * gpr) * sizeof *p);
    uint64_t nb = bp_format_bytes(&f, rows, cols);
    uint8_t *buf = malloc(nb);
    float tp = bp_format_tensor_param(&f, absmax(w, n));
    bp_error e;
    assert_int_equal(bp_format_quantize_rows(&f, w, rows, cols, tp, c, p, &e), BP_OK);
    assert_int_equal(bp_format_pack(&f, rows, cols, c, p, tp, buf, nb, &e), BP_OK);
    uint64_t bits = (uint64_t)cols * (uint64_t)f.bits;
    uint64_t code_bytes = (uint64_t)rows * (bits / 8 + (bits % 8 != 0));
    poke(buf, code_bytes, (uint64_t)(rows * gpr));
    int rc = bp_format_unpack(&f, rows, cols, buf, nb, c, p, &tp, &e);
    if (rc != BP_EFORMAT)
        fail_msg("%s: %s not rejected (rc %d)", name, why, rc);
    free(w);
    free(c);
    free(p);
    free(buf);
}

static void poke_f16_nan_scale(uint8_t *b, uint64_t cb, uint64_t ng)
{
    (void)ng;
    b[cb + 2] = 0x00;
    b[cb + 3] = 0x7e;
}
static void poke_f16_inf_offset(uint8_t *b, uint64_t cb, uint64_t ng)
{
    b[cb + 2 * ng] = 0x00;
    b[cb + 2 * ng + 1] = 0xfc;
}
static void poke_e8m0_nan(uint8_t *b, uint64_t cb, uint64_t ng)
{
    (void)ng;
    b[cb + 1] = 0xff;
}
static void poke_e8m0_huge(uint8_t *b, uint64_t cb, uint64_t ng)
{
    (void)ng;
    b[cb] = 0xfd;
}
static void poke_e4m3_nan(uint8_t *b, uint64_t cb, uint64_t ng)
{
    (void)ng;
    b[cb + 3] = 0x7f;
}
static void poke_tensor_nan(uint8_t *b, uint64_t cb, uint64_t ng)
{
    uint8_t nan[4] = {0x00, 0x00, 0xc0, 0x7f};
    memcpy(b + cb + ng, nan, 4);
}
static void poke_tensor_neg(uint8_t *b, uint64_t cb, uint64_t ng)
{
    b[cb + ng + 3] |= 0x80;
}
static void poke_code0_fp8_nan(uint8_t *b, uint64_t cb, uint64_t ng)
{
    (void)cb;
    (void)ng;
    b[0] = 0xff;
}
static void poke_code0_f16_inf(uint8_t *b, uint64_t cb, uint64_t ng)
{
    (void)cb;
    (void)ng;
    b[0] = 0x00;
    b[1] = 0x7c;
}
static void poke_code0_bf16_nan(uint8_t *b, uint64_t cb, uint64_t ng)
{
    (void)cb;
    (void)ng;
    b[0] = 0xc0;
    b[1] = 0x7f;
}
static void poke_padding(uint8_t *b, uint64_t cb, uint64_t ng)
{
    (void)cb;
    (void)ng;
    b[1] |= 0x80; /* int3 x 5 = 15 bits: bit 15 is padding */
}

static void test_unpack_rejects(void **state)
{
    (void)state;
    corrupt_case("int4_g32_sym", 3, 64, poke_f16_nan_scale, "NaN fp16 scale");
    corrupt_case("int4_g32_asym", 3, 64, poke_f16_inf_offset, "inf fp16 offset");
    corrupt_case("fp8_e4m3", 3, 64, poke_f16_nan_scale, "NaN fp8 row scale");
    corrupt_case("fp8_e4m3", 3, 64, poke_code0_fp8_nan, "NaN E4M3 code");
    corrupt_case("mxfp4", 3, 64, poke_e8m0_nan, "E8M0 0xff");
    corrupt_case("mxfp4", 3, 64, poke_e8m0_huge, "E8M0 253");
    corrupt_case("nvfp4", 3, 64, poke_e4m3_nan, "NaN E4M3 block scale");
    corrupt_case("nvfp4", 3, 64, poke_tensor_nan, "NaN tensor scale");
    corrupt_case("nvfp4", 3, 64, poke_tensor_neg, "negative tensor scale");
    corrupt_case("f16", 3, 64, poke_code0_f16_inf, "inf f16 value");
    corrupt_case("bf16", 3, 64, poke_code0_bf16_nan, "NaN bf16 value");
    corrupt_case("int3_pc_sym", 3, 5, poke_padding, "nonzero padding bits");
}

static void test_pack_rejects(void **state)
{
    (void)state;
    bp_format f = fmt("int4_g32_asym");
    uint16_t c[32] = {0};
    bp_qparams p = {0.1f, 0.0f}; /* 0.1 is not an fp16 value */
    uint8_t out[32];
    bp_error e;
    assert_int_equal(bp_format_pack(&f, 1, 32, c, &p, 0, out, 20, &e), BP_EINVAL);
    p.scale = 0.125f;
    assert_int_equal(bp_format_pack(&f, 1, 32, c, &p, 0, out, 20, &e), BP_OK);
    c[7] = 16; /* does not fit 4 bits */
    assert_int_equal(bp_format_pack(&f, 1, 32, c, &p, 0, out, 20, &e), BP_EINVAL);
    f = fmt("mxfp4");
    c[7] = 0;
    p.scale = 0.3f; /* not a power of two */
    assert_int_equal(bp_format_pack(&f, 1, 32, c, &p, 0, out, 17, &e), BP_EINVAL);
    p.scale = 0.25f;
    assert_int_equal(bp_format_pack(&f, 1, 32, c, &p, 0, out, 17, &e), BP_OK);
    assert_int_equal(out[16], 125);
}

/* Packed bytes are LSB-first per row; hand-checked for int3 and int4. */
static void test_packed_bit_order(void **state)
{
    (void)state;
    bp_format f = fmt("int3_pc_asym");
    uint16_t c[10] = {1, 2, 3, 4, 5, 6, 7, 0, 1, 2};
    bp_qparams p[2] = {{1.0f, 0.5f}, {2.0f, -1.0f}};
    uint8_t out[64];
    bp_error e;
    uint64_t nb = bp_format_bytes(&f, 2, 5);
    assert_int_equal(nb, 2 * 2 + 2 * 4);
    assert_int_equal(bp_format_pack(&f, 2, 5, c, p, 0, out, nb, &e), BP_OK);
    /* row 0: 1 | 2<<3 | 3<<6 | 4<<9 | 5<<12 = 0x58d1 */
    assert_int_equal(out[0], 0xd1);
    assert_int_equal(out[1], 0x58);
    /* row 1: 6 | 7<<3 | 0<<6 | 1<<9 | 2<<12 = 0x223e */
    assert_int_equal(out[2], 0x3e);
    assert_int_equal(out[3], 0x22);
    /* scales then offsets, fp16 little-endian */
    assert_int_equal(out[4] | out[5] << 8, 0x3c00);
    assert_int_equal(out[6] | out[7] << 8, 0x4000);
    assert_int_equal(out[8] | out[9] << 8, 0x3800);
    assert_int_equal(out[10] | out[11] << 8, 0xbc00);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_format_round_trip),
        cmocka_unit_test(test_extreme_scales),
        cmocka_unit_test(test_error_rows),
        cmocka_unit_test(test_unsupported_and_bad_inputs),
        cmocka_unit_test(test_unpack_rejects),
        cmocka_unit_test(test_pack_rejects),
        cmocka_unit_test(test_packed_bit_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
