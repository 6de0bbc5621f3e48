/* KV-cache quantizers (round trips, error bounds, byte counts against the
 * cost model) and quantized K/V in the forward pass of the bundled model
 * (baseline bit-identity, reset, per-layer KL ordering, bad arguments). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/cost.h"
#include "bitplan/half.h"
#include "bitplan/kv_quant.h"
#include "bitplan/llama.h"
#include "bitplan/model.h"
#include "bitplan/tokens.h"

#define MODEL_DIR BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"
#define CTX 128
#define N_WIN 16

/* ---- synthetic slabs ---------------------------------------------------- */

static uint64_t rng_state;

/* Deterministic values with a spread of magnitudes (heavy-ish tails, as
 * K/V have), so clipping and subnormal paths are exercised. */
static float rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    const double u = (double)(rng_state >> 11) * 0x1p-53;
    const double sign = (rng_state >> 7) & 1 ? -1.0 : 1.0;
    return (float)(sign * pow(u, 3.0) * 8.0);
}

static float *slab(int64_t n, uint64_t seed)
{
    rng_state = seed;
    float *x = malloc(sizeof *x * (size_t)n);
    assert_non_null(x);
    for (int64_t i = 0; i < n; i++)
        x[i] = rnd();
    return x;
}

static float group_absmax(const float *x, int64_t d)
{
    float m = 0;
    for (int64_t i = 0; i < d; i++)
        m = fmaxf(m, fabsf(x[i]));
    return m;
}

/* qdq == unpack(pack) bit for bit, and the packed size is the slab size. */
static void check_pack_matches_qdq(bp_kv_format f, const float *x, int64_t T, int64_t H,
                                   int64_t D, float s8, const float *q)
{
    bp_error err;
    const uint64_t nb = bp_kv_slab_bytes(f, T, H, D);
    assert_true(nb > 0);
    uint8_t *buf = malloc((size_t)nb);
    float *u = malloc(sizeof *u * (size_t)(T * H * D));
    assert_non_null(buf);
    assert_non_null(u);
    assert_int_equal(bp_kv_pack(f, x, T, H, D, s8, buf, (size_t)nb - 1, &err), BP_EINVAL);
    assert_int_equal(bp_kv_pack(f, x, T, H, D, s8, buf, (size_t)nb, &err), BP_OK);
    assert_int_equal(bp_kv_unpack(f, buf, (size_t)nb, T, H, D, u, &err), BP_OK);
    assert_memory_equal(u, q, sizeof *u * (size_t)(T * H * D));
    assert_int_equal(bp_kv_unpack(f, buf, (size_t)nb + 1, T, H, D, u, &err), BP_EFORMAT);
    free(buf);
    free(u);
}

static void test_qdq_bounds_and_round_trip(void **state)
{
    (void)state;
    bp_error err;
    const int64_t T = 7, H = 3;
    const int64_t dims[] = {32, 17, 1};
    for (size_t di = 0; di < sizeof dims / sizeof *dims; di++) {
        const int64_t D = dims[di], n = T * H * D;
        float *x = slab(n, 42 + di);
        x[3] = 0.0f;
        /* one all-zero (token, head) group */
        memset(x + D, 0, sizeof *x * (size_t)D);
        float *q = malloc(sizeof *q * (size_t)n);
        assert_non_null(q);
        const float amax = group_absmax(x, n);
        const float s8 = bp_kv_fp8_scale(amax);
        for (int f = 0; f < BP_KV_FORMAT_COUNT; f++) {
            assert_int_equal(bp_kv_qdq((bp_kv_format)f, x, T, H, D, s8, q, &err), BP_OK);
            check_pack_matches_qdq((bp_kv_format)f, x, T, H, D, s8, q);
            for (int64_t g = 0; g < T * H; g++) {
                const float *xg = x + g * D, *qg = q + g * D;
                const float ga = group_absmax(xg, D);
                const int qmax = f == BP_KV_INT8 ? 127 : 7;
                const float si = bp_f16_to_f32(bp_f32_to_f16(ga / (float)qmax));
                for (int64_t i = 0; i < D; i++) {
                    const double e = fabs((double)xg[i] - (double)qg[i]);
                    const double ax = fabs((double)xg[i]);
                    switch (f) {
                    case BP_KV_F16:
                        /* |x| <= 8 is in fp16's normal range above 2^-14 */
                        assert_true(e <= ax * 0x1p-11 + 0x1p-25);
                        break;
                    case BP_KV_FP8_E4M3:
                        /* 3 mantissa bits: half an ulp is 2^-4 relative;
                         * subnormal steps are 2^-9 * scale */
                        assert_true(e <= ax * 0x1p-4 + (double)s8 * 0x1p-10);
                        break;
                    default:
                        assert_true(e <= 0.5 * (double)si * (1 + 1e-6));
                        if (ga == 0)
                            assert_true(qg[i] == 0.0f);
                        break;
                    }
                }
            }
        }
        /* A zero group stays exactly zero in every format. */
        for (int f = 0; f < BP_KV_FORMAT_COUNT; f++) {
            assert_int_equal(bp_kv_qdq((bp_kv_format)f, x, T, H, D, s8, q, &err), BP_OK);
            for (int64_t i = 0; i < D; i++)
                assert_true(q[D + i] == 0.0f);
        }
        /* In place gives the same values. */
        float *y = malloc(sizeof *y * (size_t)n);
        assert_non_null(y);
        memcpy(y, x, sizeof *y * (size_t)n);
        assert_int_equal(bp_kv_qdq(BP_KV_INT4, x, T, H, D, s8, q, &err), BP_OK);
        assert_int_equal(bp_kv_qdq(BP_KV_INT4, y, T, H, D, s8, y, &err), BP_OK);
        assert_memory_equal(y, q, sizeof *y * (size_t)n);
        free(y);
        free(q);
        free(x);
    }
}

/* Coarser formats lose more: total squared error int4 > fp8 and int8 > f16. */
static void test_qdq_error_ordering(void **state)
{
    (void)state;
    bp_error err;
    const int64_t T = 64, H = 2, D = 32, n = T * H * D;
    float *x = slab(n, 7), *q = malloc(sizeof *q * (size_t)n);
    assert_non_null(q);
    double sse[BP_KV_FORMAT_COUNT];
    const float s8 = bp_kv_fp8_scale(group_absmax(x, n));
    for (int f = 0; f < BP_KV_FORMAT_COUNT; f++) {
        assert_int_equal(bp_kv_qdq((bp_kv_format)f, x, T, H, D, s8, q, &err), BP_OK);
        sse[f] = 0;
        for (int64_t i = 0; i < n; i++)
            sse[f] += ((double)x[i] - q[i]) * ((double)x[i] - q[i]);
    }
    printf("slab sse: f16 %.3g fp8 %.3g int8 %.3g int4 %.3g\n", sse[BP_KV_F16],
           sse[BP_KV_FP8_E4M3], sse[BP_KV_INT8], sse[BP_KV_INT4]);
    assert_true(sse[BP_KV_F16] > 0);
    assert_true(sse[BP_KV_INT8] > sse[BP_KV_F16]);
    assert_true(sse[BP_KV_INT4] > sse[BP_KV_INT8]);
    assert_true(sse[BP_KV_INT4] > sse[BP_KV_FP8_E4M3]);
    free(x);
    free(q);
}

/* fp8 values above 448 * scale saturate instead of overflowing. */
static void test_fp8_saturates(void **state)
{
    (void)state;
    bp_error err;
    const float x[4] = {1000.0f, -1000.0f, 448.0f, 0.5f};
    float q[4];
    assert_int_equal(bp_kv_qdq(BP_KV_FP8_E4M3, x, 1, 1, 4, 1.0f, q, &err), BP_OK);
    assert_true(q[0] == 448.0f);
    assert_true(q[1] == -448.0f);
    assert_true(q[2] == 448.0f);
    assert_true(q[3] == 0.5f);
    assert_true(bp_kv_fp8_scale(896.0f) == 2.0f);
    assert_true(bp_kv_fp8_scale(0.0f) == 1.0f);
}

static void test_bytes_match_cost_model(void **state)
{
    (void)state;
    bp_error err;
    const int64_t heads[] = {1, 2, 8}, dims[] = {1, 17, 64, 128};
    const int64_t ctxs[] = {1, 100, 4096}, batches[] = {1, 3};
    for (int f = 0; f < BP_KV_FORMAT_COUNT; f++)
        for (size_t a = 0; a < 3; a++)
            for (size_t b = 0; b < 4; b++)
                for (size_t c = 0; c < 3; c++)
                    for (size_t d = 0; d < 2; d++) {
                        bp_kv_shape sh = {1, heads[a], dims[b]};
                        uint64_t want;
                        assert_int_equal(bp_kv_bytes(&sh, (bp_kv_format)f, ctxs[c],
                                                     batches[d], &want, &err),
                                         BP_OK);
                        const uint64_t slab_b = bp_kv_slab_bytes(
                            (bp_kv_format)f, ctxs[c] * batches[d], heads[a], dims[b]);
                        assert_true(2 * slab_b == want);
                    }
    assert_true(bp_kv_slab_bytes(BP_KV_FORMAT_COUNT, 1, 1, 1) == 0);
    assert_true(bp_kv_slab_bytes(BP_KV_INT8, 0, 1, 1) == 0);
    assert_true(bp_kv_slab_bytes(BP_KV_INT8, INT64_MAX, 1 << 20, 64) == 0);
}

static void test_qdq_rejects_bad_input(void **state)
{
    (void)state;
    bp_error err;
    float x[8] = {0, 1, 2, 3, 4, 5, 6, 7}, q[8];
    x[5] = NAN;
    assert_int_equal(bp_kv_qdq(BP_KV_INT8, x, 2, 2, 2, 1.0f, q, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "token 1, head 0, element 1"));
    x[5] = 5;
    assert_int_equal(bp_kv_qdq((bp_kv_format)17, x, 2, 2, 2, 1.0f, q, &err), BP_EINVAL);
    assert_int_equal(bp_kv_qdq(BP_KV_FP8_E4M3, x, 2, 2, 2, 0.0f, q, &err), BP_EINVAL);
    assert_int_equal(bp_kv_qdq(BP_KV_FP8_E4M3, x, 2, 2, 2, INFINITY, q, &err), BP_EINVAL);
    assert_int_equal(bp_kv_qdq(BP_KV_INT4, x, 0, 2, 2, 1.0f, q, &err), BP_EINVAL);
    assert_int_equal(bp_kv_qdq(BP_KV_INT4, NULL, 2, 2, 2, 1.0f, q, &err), BP_EINVAL);

    /* Corrupt packed data: a NaN fp8 code, an infinite or negative scale. */
    uint8_t buf[64];
    const size_t n8 = (size_t)bp_kv_slab_bytes(BP_KV_FP8_E4M3, 2, 2, 2);
    assert_int_equal(bp_kv_pack(BP_KV_FP8_E4M3, x, 2, 2, 2, 0.1f, buf, n8, &err), BP_OK);
    buf[4 + 6] = 0x7f;
    assert_int_equal(bp_kv_unpack(BP_KV_FP8_E4M3, buf, n8, 2, 2, 2, q, &err), BP_EFORMAT);
    assert_non_null(strstr(err.msg, "element 6"));
    const size_t ni = (size_t)bp_kv_slab_bytes(BP_KV_INT8, 2, 2, 2);
    assert_int_equal(bp_kv_pack(BP_KV_INT8, x, 2, 2, 2, 1.0f, buf, ni, &err), BP_OK);
    buf[4 * 2 + 1] = 0x7c; /* group 2's scale high byte: fp16 infinity */
    buf[4 * 2] = 0x00;
    assert_int_equal(bp_kv_unpack(BP_KV_INT8, buf, ni, 2, 2, 2, q, &err), BP_EFORMAT);
    assert_non_null(strstr(err.msg, "token 1, head 0"));
    buf[4 * 2 + 1] = 0xbc; /* -1.0 */
    assert_int_equal(bp_kv_unpack(BP_KV_INT8, buf, ni, 2, 2, 2, q, &err), BP_EFORMAT);
}

/* ---- the bundled model --------------------------------------------------- */

typedef struct fixture {
    bp_model *model;
    bp_llama *llama;
    bp_tokens *calib;
    bp_eval_reference *ref;
    float *base;   /* default logits of the first CTX calib tokens */
} fixture;

static size_t logits_n(const fixture *f)
{
    return (size_t)CTX * (size_t)bp_llama_get_config(f->llama)->vocab_size;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    bp_error err;
    if (!f || bp_model_open(MODEL_DIR, &f->model, &err) != BP_OK ||
        bp_llama_new(f->model, &f->llama, &err) != BP_OK ||
        bp_tokens_load_text(MODEL_DIR "/calib.txt", 256, &f->calib, &err) != BP_OK ||
        bp_eval_reference_new(f->llama, bp_tokens_data(f->calib), bp_tokens_count(f->calib),
                              CTX, 0, N_WIN, 0, &f->ref, &err) != BP_OK) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    f->base = malloc(sizeof(float) * logits_n(f));
    if (!f->base ||
        bp_llama_forward(f->llama, bp_tokens_data(f->calib), CTX, f->base, NULL, &err) != BP_OK) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    bp_eval_reference_destroy(&f->ref);
    bp_llama_destroy(&f->llama);
    bp_model_destroy(&f->model);
    bp_tokens_destroy(&f->calib);
    free(f->base);
    free(f);
    return 0;
}

static float *run(fixture *f)
{
    bp_error err;
    float *lg = malloc(sizeof(float) * logits_n(f));
    assert_non_null(lg);
    int rc = bp_llama_forward(f->llama, bp_tokens_data(f->calib), CTX, lg, NULL, &err);
    if (rc != BP_OK)
        fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, BP_OK);
    return lg;
}

static void test_forward_f16_is_baseline(void **state)
{
    fixture *f = *state;
    bp_error err;
    assert_int_equal(bp_llama_set_kv_format(f->llama, -1, BP_KV_F16, &err), BP_OK);
    float *lg = run(f);
    assert_memory_equal(lg, f->base, sizeof(float) * logits_n(f));
    free(lg);
}

static void test_forward_set_reset_restores(void **state)
{
    fixture *f = *state;
    bp_error err;
    assert_int_equal(bp_llama_set_kv_format(f->llama, -1, BP_KV_INT4, &err), BP_OK);
    for (int64_t i = 0; i < 6; i++)
        assert_int_equal(bp_llama_get_kv_format(f->llama, i), BP_KV_INT4);
    float *q = run(f);
    assert_true(memcmp(q, f->base, sizeof(float) * logits_n(f)) != 0);
    for (size_t i = 0; i < logits_n(f); i++)
        assert_true(isfinite(q[i]));
    bp_llama_reset_kv_formats(f->llama);
    assert_int_equal(bp_llama_get_kv_format(f->llama, 3), BP_KV_F16);
    float *r = run(f);
    assert_memory_equal(r, f->base, sizeof(float) * logits_n(f));
    /* One layer back to f16 by hand restores it too. */
    assert_int_equal(bp_llama_set_kv_format(f->llama, 2, BP_KV_INT8, &err), BP_OK);
    float *one = run(f);
    assert_true(memcmp(one, f->base, sizeof(float) * logits_n(f)) != 0);
    assert_int_equal(bp_llama_set_kv_format(f->llama, 2, BP_KV_F16, &err), BP_OK);
    float *back = run(f);
    assert_memory_equal(back, f->base, sizeof(float) * logits_n(f));
    free(q);
    free(r);
    free(one);
    free(back);
}

/* Quantizing every position at once is causal: a prefix gives the prefix's
 * logits of the full sequence (up to sgemm shape-dependent rounding), and a
 * batch gives each sequence's own logits exactly. */
static void test_forward_quantized_is_causal_and_batch_exact(void **state)
{
    fixture *f = *state;
    bp_error err;
    const int64_t V = bp_llama_get_config(f->llama)->vocab_size;
    assert_int_equal(bp_llama_set_kv_format(f->llama, -1, BP_KV_INT4, &err), BP_OK);
    float *full = run(f);
    const int64_t P = 40;
    float *pre = malloc(sizeof(float) * (size_t)(P * V));
    assert_non_null(pre);
    assert_int_equal(bp_llama_forward(f->llama, bp_tokens_data(f->calib), P, pre, NULL, &err),
                     BP_OK);
    double maxd = 0;
    for (int64_t i = 0; i < P * V; i++)
        maxd = fmax(maxd, fabs((double)pre[i] - full[i]));
    assert_true(maxd < 1e-3);

    float *two = malloc(sizeof(float) * 2 * logits_n(f));
    assert_non_null(two);
    assert_int_equal(bp_llama_forward_batch(f->llama, bp_tokens_data(f->calib), 2, CTX, two,
                                            NULL, &err),
                     BP_OK);
    assert_memory_equal(two, full, sizeof(float) * logits_n(f));
    bp_llama_reset_kv_formats(f->llama);
    free(full);
    free(pre);
    free(two);
}

static void test_measure_kl_ordering(void **state)
{
    fixture *f = *state;
    bp_error err;
    const int64_t nl = bp_llama_get_config(f->llama)->n_layers;
    /* Formats set on the model must survive a measurement. */
    assert_int_equal(bp_llama_set_kv_format(f->llama, 1, BP_KV_INT8, &err), BP_OK);
    double sum4 = 0, sum8 = 0;
    for (int64_t layer = 0; layer < nl; layer++) {
        double k16, k8, k4, kf8;
        assert_int_equal(bp_kv_measure_layer(f->llama, f->ref, layer, BP_KV_F16, &k16, &err),
                         BP_OK);
        assert_int_equal(bp_kv_measure_layer(f->llama, f->ref, layer, BP_KV_INT8, &k8, &err),
                         BP_OK);
        assert_int_equal(bp_kv_measure_layer(f->llama, f->ref, layer, BP_KV_INT4, &k4, &err),
                         BP_OK);
        int rc = bp_kv_measure_layer(f->llama, f->ref, layer, BP_KV_FP8_E4M3, &kf8, &err);
        if (rc != BP_OK)
            fprintf(stderr, "%s\n", err.msg);
        assert_int_equal(rc, BP_OK);
        printf("layer %lld: KL f16 %.3g int8 %.3g fp8_e4m3 %.3g int4 %.3g\n",
               (long long)layer, k16, k8, kf8, k4);
        assert_true(k16 == 0.0);
        assert_true(k8 > 0.0);
        assert_true(k4 > k8);
        assert_true(kf8 > 0.0 && kf8 < k4);
        sum4 += k4;
        sum8 += k8;
    }
    assert_true(sum4 > sum8);
    assert_int_equal(bp_llama_get_kv_format(f->llama, 1), BP_KV_INT8);
    assert_int_equal(bp_llama_get_kv_format(f->llama, 0), BP_KV_F16);
    bp_llama_reset_kv_formats(f->llama);
    float *r = run(f);
    assert_memory_equal(r, f->base, sizeof(float) * logits_n(f));
    free(r);
}

/* The error term is the same with one thread or several. */
static void test_measure_thread_independent(void **state)
{
    fixture *f = *state;
    bp_error err;
    const int saved = omp_get_max_threads();
    double a, b;
    omp_set_num_threads(1);
    assert_int_equal(bp_kv_measure_layer(f->llama, f->ref, 3, BP_KV_INT4, &a, &err), BP_OK);
    omp_set_num_threads(saved > 1 ? saved : 2);
    assert_int_equal(bp_kv_measure_layer(f->llama, f->ref, 3, BP_KV_INT4, &b, &err), BP_OK);
    omp_set_num_threads(saved);
    assert_true(a == b);
}

static void test_fp8_calibration(void **state)
{
    fixture *f = *state;
    bp_error err;
    bp_llama *l = f->llama;
    /* Observation records the maxima of K and V, unaffected by a layer's own
     * quantization. */
    bp_llama_kv_observe(l, 1);
    float *lg = run(f);
    bp_llama_kv_observe(l, 0);
    float ka0, va0;
    assert_int_equal(bp_llama_kv_absmax(l, 0, &ka0, &va0, &err), BP_OK);
    assert_true(ka0 > 0 && va0 > 0 && isfinite(ka0) && isfinite(va0));
    assert_int_equal(bp_llama_set_kv_format(l, 0, BP_KV_INT4, &err), BP_OK);
    bp_llama_kv_observe(l, 1);
    free(lg);
    lg = run(f);
    bp_llama_kv_observe(l, 0);
    float ka1, va1;
    assert_int_equal(bp_llama_kv_absmax(l, 0, &ka1, &va1, &err), BP_OK);
    assert_true(ka1 == ka0 && va1 == va0);
    free(lg);

    assert_int_equal(bp_kv_calibrate_fp8(l, bp_tokens_data(f->calib), 1, CTX, &err), BP_OK);
    assert_int_equal(bp_llama_get_kv_format(l, 0), BP_KV_INT4); /* restored */
    float ks, vs;
    bp_llama_get_kv_fp8_scales(l, 0, &ks, &vs);
    assert_true(ks == ka0 / 448.0f && vs == va0 / 448.0f);
    assert_int_equal(bp_llama_set_kv_format(l, -1, BP_KV_FP8_E4M3, &err), BP_OK);
    lg = run(f);
    assert_true(memcmp(lg, f->base, sizeof(float) * logits_n(f)) != 0);
    free(lg);
    bp_llama_reset_kv_formats(l);
}

/* The local variant orders formats the same way and is exactly 0 for f16. */
static void test_measure_mse(void **state)
{
    fixture *f = *state;
    bp_error err;
    const uint32_t *t = bp_tokens_data(f->calib);
    for (int64_t layer = 0; layer < 6; layer += 5) {
        double m16, m8, m4;
        assert_int_equal(bp_kv_measure_layer_mse(f->llama, t, 4, CTX, layer, BP_KV_F16, &m16,
                                                 &err),
                         BP_OK);
        assert_int_equal(bp_kv_measure_layer_mse(f->llama, t, 4, CTX, layer, BP_KV_INT8, &m8,
                                                 &err),
                         BP_OK);
        assert_int_equal(bp_kv_measure_layer_mse(f->llama, t, 4, CTX, layer, BP_KV_INT4, &m4,
                                                 &err),
                         BP_OK);
        printf("layer %lld: attention-output MSE int8 %.3g int4 %.3g\n", (long long)layer, m8,
               m4);
        assert_true(m16 == 0.0);
        assert_true(m8 > 0.0);
        assert_true(m4 > 10 * m8);
    }
    double m;
    assert_int_equal(bp_kv_measure_layer_mse(f->llama, t, 4, CTX, 6, BP_KV_INT8, &m, &err),
                     BP_EINVAL);
    assert_int_equal(bp_kv_measure_layer_mse(f->llama, t, 0, CTX, 0, BP_KV_INT8, &m, &err),
                     BP_EINVAL);
    for (int64_t i = 0; i < 6; i++)
        assert_int_equal(bp_llama_get_kv_format(f->llama, i), BP_KV_F16);
}

static void test_bad_arguments_rejected(void **state)
{
    fixture *f = *state;
    bp_error err;
    bp_llama *l = f->llama;
    assert_int_equal(bp_llama_set_kv_format(l, 6, BP_KV_INT8, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "layer 6"));
    assert_int_equal(bp_llama_set_kv_format(l, -2, BP_KV_INT8, &err), BP_EINVAL);
    assert_int_equal(bp_llama_set_kv_format(l, 0, (bp_kv_format)-1, &err), BP_EINVAL);
    assert_int_equal(bp_llama_set_kv_format(l, 0, BP_KV_FORMAT_COUNT, &err), BP_EINVAL);
    assert_int_equal(bp_llama_set_kv_format(NULL, 0, BP_KV_INT8, &err), BP_EINVAL);
    assert_int_equal(bp_llama_get_kv_format(l, 6), BP_KV_FORMAT_COUNT);
    assert_int_equal(bp_llama_set_kv_fp8_scales(l, 0, 0.0f, 1.0f, &err), BP_EINVAL);
    assert_int_equal(bp_llama_set_kv_fp8_scales(l, 0, 1.0f, NAN, &err), BP_EINVAL);
    assert_int_equal(bp_llama_set_kv_fp8_scales(l, 7, 1.0f, 1.0f, &err), BP_EINVAL);
    assert_int_equal(bp_llama_kv_absmax(l, -1, NULL, NULL, &err), BP_EINVAL);
    double d;
    assert_int_equal(bp_kv_measure_layer(l, f->ref, 6, BP_KV_INT8, &d, &err), BP_EINVAL);
    assert_int_equal(bp_kv_measure_layer(l, f->ref, -1, BP_KV_INT8, &d, &err), BP_EINVAL);
    assert_int_equal(bp_kv_measure_layer(l, f->ref, 0, (bp_kv_format)9, &d, &err), BP_EINVAL);
    for (int64_t i = 0; i < 6; i++)
        assert_int_equal(bp_llama_get_kv_format(l, i), BP_KV_F16);
}

/* fp8 needs scales: on a fresh model, setting it fails and changes nothing. */
static void test_fp8_needs_scales(void **state)
{
    fixture *f = *state;
    bp_error err;
    bp_llama *l;
    assert_int_equal(bp_llama_new(f->model, &l, &err), BP_OK);
    assert_int_equal(bp_llama_set_kv_fp8_scales(l, 2, 0.01f, 0.02f, &err), BP_OK);
    assert_int_equal(bp_llama_set_kv_format(l, 2, BP_KV_FP8_E4M3, &err), BP_OK);
    assert_int_equal(bp_llama_set_kv_format(l, -1, BP_KV_FP8_E4M3, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "layer 0"));
    assert_int_equal(bp_llama_get_kv_format(l, 0), BP_KV_F16);
    assert_int_equal(bp_llama_get_kv_format(l, 2), BP_KV_FP8_E4M3);
    float ks, vs;
    bp_llama_get_kv_fp8_scales(l, 2, &ks, &vs);
    assert_true(ks == 0.01f && vs == 0.02f);
    bp_llama_get_kv_fp8_scales(l, 0, &ks, &vs);
    assert_true(ks == 0.0f && vs == 0.0f);
    bp_llama_destroy(&l);
}

int main(void)
{
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(test_qdq_bounds_and_round_trip),
        cmocka_unit_test(test_qdq_error_ordering),
        cmocka_unit_test(test_fp8_saturates),
        cmocka_unit_test(test_bytes_match_cost_model),
        cmocka_unit_test(test_qdq_rejects_bad_input),
    };
    const struct CMUnitTest model[] = {
        cmocka_unit_test(test_forward_f16_is_baseline),
        cmocka_unit_test(test_forward_set_reset_restores),
        cmocka_unit_test(test_forward_quantized_is_causal_and_batch_exact),
        cmocka_unit_test(test_measure_kl_ordering),
        cmocka_unit_test(test_measure_thread_independent),
        cmocka_unit_test(test_measure_mse),
        cmocka_unit_test(test_fp8_calibration),
        cmocka_unit_test(test_bad_arguments_rejected),
        cmocka_unit_test(test_fp8_needs_scales),
    };
    int fails = cmocka_run_group_tests_name("kv quantizers", pure, NULL, NULL);
    fails += cmocka_run_group_tests_name("kv forward", model, setup, teardown);
    return fails;
}
