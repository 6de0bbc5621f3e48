/* Forward-pass throughput and Hessian accumulation cost.
 *
 *   bench_forward [--seq-7b T] [--skip-7b]
 *
 * 1. The bundled tiny model: tokens/s of bp_llama_forward (one 128-token
 *    sequence) and of batched windows as evaluation runs them (bp_eval_nll).
 * 2. One synthetic layer shaped like a 7B Llama (hidden 4096, intermediate
 *    11008, 32 heads), random bf16 weights made in memory: tokens/s of one
 *    block, and the cost of full-Hessian accumulation on its four inputs
 *    (the time bp_hessian_accumulate spends adding contributions, from
 *    bp_hessian_busy_seconds) against bare cblas_ssyrk on the same
 *    activations, interleaved, best of three each.
 * Thread counts come from OMP_NUM_THREADS / OPENBLAS_NUM_THREADS.
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bitplan/half.h"
#include "bitplan/hessian.h"
#include "bitplan/llama.h"
#include "bitplan/model.h"
#include "bitplan/tokens.h"

#define MODEL_DIR BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int die(const char *what, const bp_error *err)
{
    fprintf(stderr, "bench_forward: %s: %s\n", what, err->msg);
    return 1;
}

static int bench_tiny(void)
{
    bp_error err;
    bp_model *m = NULL;
    bp_llama *l = NULL;
    bp_tokens *t = NULL;
    if (bp_model_open(MODEL_DIR, &m, &err) || bp_llama_new(m, &l, &err) ||
        bp_tokens_load_text(MODEL_DIR "/eval.txt", 256, &t, &err))
        return die("tiny model", &err);
    float *logits = malloc(sizeof(float) * 128 * 256);
    const uint32_t *ids = bp_tokens_data(t);
    if (bp_llama_forward(l, ids, 128, logits, NULL, &err)) /* warm the weight cache */
        return die("forward", &err);
    int reps = 50;
    double t0 = now();
    for (int i = 0; i < reps; i++)
        if (bp_llama_forward(l, ids + 128 * i, 128, logits, NULL, &err))
            return die("forward", &err);
    double dt = now() - t0;
    printf("tiny-llama-kjv  forward, 1 x 128 tokens + logits: %8.0f tokens/s\n",
           reps * 128 / dt);
    bp_eval_sums s;
    int64_t nw = 400;
    t0 = now();
    if (bp_eval_nll(l, ids, bp_tokens_count(t), 128, 0, nw, &s, &err))
        return die("eval", &err);
    dt = now() - t0;
    printf("tiny-llama-kjv  bp_eval_nll, %lld windows of 128:   %8.0f tokens/s (NLL %.6f)\n",
           (long long)nw, nw * 128 / dt, bp_eval_sums_mean_nll(&s));
    free(logits);
    bp_tokens_destroy(&t);
    bp_llama_destroy(&l);
    bp_model_destroy(&m);
    return 0;
}

/* Deterministic pseudo-random bf16 weights, std about 0.02. */
static float rnd_bf16(uint64_t i, uint64_t salt)
{
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ salt * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 29;
    double u = (double)(x >> 11) * 0x1p-53; /* [0, 1) */
    float v = (float)((u - 0.5) * 0.0693);  /* uniform, std 0.02 */
    return bp_bf16_to_f32(bp_f32_to_bf16(v));
}

typedef struct capture {
    float *x[BP_LINEAR_N];
    int64_t dim[BP_LINEAR_N], n[BP_LINEAR_N];
} capture;

static void capture_hook(void *ctx, int layer, bp_linear_input which, const float *x,
                         int64_t n, int64_t dim)
{
    capture *c = ctx;
    (void)layer;
    free(c->x[which]);
    c->x[which] = malloc(sizeof(float) * (size_t)(n * dim));
    if (c->x[which])
        memcpy(c->x[which], x, sizeof(float) * (size_t)(n * dim));
    c->dim[which] = dim;
    c->n[which] = n;
}

static int bench_7b_layer(int64_t T)
{
    bp_error err;
    bp_llama_config c;
    memset(&c, 0, sizeof c);
    c.arch = BP_LLAMA_ARCH_LLAMA;
    c.hidden_size = 4096;
    c.intermediate_size = 11008;
    c.n_heads = 32;
    c.n_kv_heads = 32;
    c.head_dim = 128;
    c.n_layers = 1;
    c.vocab_size = 32000;
    c.max_position_embeddings = 4096;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 10000.0;
    bp_llama *l = NULL;
    if (bp_llama_new_config(&c, &l, &err))
        return die("7B config", &err);
    static const char *names[] = {
        "model.embed_tokens.weight",          "model.layers.0.input_layernorm.weight",
        "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.post_attention_layernorm.weight", "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",  "model.layers.0.mlp.down_proj.weight",
        "model.norm.weight",                  "lm_head.weight",
    };
    float *w[12];
    double t0 = now();
    for (int i = 0; i < 12; i++) {
        int64_t rows, cols;
        if (bp_llama_weight_shape(l, names[i], &rows, &cols, &err))
            return die("shape", &err);
        const int64_t n = rows * cols;
        w[i] = malloc(sizeof(float) * (size_t)n);
        if (!w[i]) {
            fprintf(stderr, "bench_forward: out of memory\n");
            return 1;
        }
        const int norm = rows == 1;
#pragma omp parallel for schedule(static)
        for (int64_t k = 0; k < n; k++)
            w[i][k] = norm ? 1.0f + rnd_bf16((uint64_t)k, (uint64_t)i) : rnd_bf16((uint64_t)k, (uint64_t)i);
        if (bp_llama_set_weight_borrowed(l, names[i], w[i], &err))
            return die("set weight", &err);
    }
    printf("7B-shaped layer: random bf16 weights generated in %.1f s\n", now() - t0);

    uint32_t *ids = malloc(sizeof(uint32_t) * (size_t)(4 * T));
    for (int64_t i = 0; i < 4 * T; i++)
        ids[i] = (uint32_t)((i * 7919) % 32000);
    bp_llama_hooks stop = {NULL, NULL, 1}; /* one block, no lm_head */
    double best = 1e30;
    for (int r = 0; r < 2; r++) {
        t0 = now();
        if (bp_llama_forward(l, ids, T, NULL, &stop, &err))
            return die("7B forward", &err);
        double dt = now() - t0;
        if (dt < best)
            best = dt;
    }
    const double flop = 2.0 * (4.0 * 4096 * 4096 + 3.0 * 4096 * 11008) * (double)T +
                        2.0 * 2.0 * 32 * 128 * (double)T * (double)T; /* linears + QK, PV */
    printf("7B-shaped layer forward, 1 x %lld tokens:       %8.1f tokens/s (%.1f s, %.0f GFLOP/s)\n",
           (long long)T, (double)T / best, best, flop / best * 1e-9);

    /* The four inputs' activations, for bare ssyrk on the same data. */
    capture cap;
    memset(&cap, 0, sizeof cap);
    bp_llama_hooks hk = {capture_hook, &cap, 1};
    if (bp_llama_forward(l, ids, T, NULL, &hk, &err))
        return die("capture", &err);
    bp_tokens *calib = NULL;
    if (bp_tokens_from_array(ids, 4 * T, "synthetic", &calib, &err))
        return die("tokens", &err);
    bp_hessian_options o;
    bp_hessian_options_default(&o);
    o.ctx = T;
    o.lm_head = 0;
    bp_hessian *h = NULL;
    if (bp_hessian_new(&c, &o, &h, &err))
        return die("hessian", &err);
    /* Sequence 0 warms up (the accumulator's pages are touched first). */
    if (bp_hessian_accumulate(h, l, calib, 0, 1, &err))
        return die("accumulate", &err);
    /* The machine's load drifts, so the three measurements are interleaved
     * and each is the best of three: bare ssyrk on the four inputs, the
     * forward pass alone, and accumulate (forward + Hessians) on a fresh
     * sequence of the same cost. */
    float *C = malloc(sizeof(float) * 11008 * 11008);
    double bare = 1e30, fwd = 1e30, acc = 1e30, ours = 1e30;
    for (int r = 0; r < 3; r++) {
        t0 = now();
        for (int which = 0; which < 4; which++) {
            const int64_t d = cap.dim[which];
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)T, 1.0f,
                        cap.x[which], (int)d, 0.0f, C, (int)d);
        }
        bare = fmin(bare, now() - t0);
        t0 = now();
        if (bp_llama_forward(l, ids + (r + 1) * T, T, NULL, &stop, &err))
            return die("7B forward", &err);
        fwd = fmin(fwd, now() - t0);
        double busy0 = bp_hessian_busy_seconds(h);
        t0 = now();
        if (bp_hessian_accumulate(h, l, calib, r + 1, 1, &err))
            return die("accumulate", &err);
        acc = fmin(acc, now() - t0);
        ours = fmin(ours, bp_hessian_busy_seconds(h) - busy0);
    }
    free(C);
    printf("full Hessians of the 4 inputs (4096 x3, 11008), %lld tokens (best of 3):\n",
           (long long)T);
    printf("  forward (1 block):               %7.3f s;  accumulate call %7.3f s\n", fwd, acc);
    printf("  bare cblas_ssyrk:               %7.3f s  (%8.0f tokens/s)\n", bare, (double)T / bare);
    printf("  bp_hessian_accumulate, Hessian part (bp_hessian_busy_seconds):\n"
           "                                  %7.3f s  (%8.0f tokens/s)  ratio %.2fx\n", ours,
           (double)T / ours, ours / bare);
    bp_hessian_destroy(&h);
    bp_tokens_destroy(&calib);
    for (int i = 0; i < BP_LINEAR_N; i++)
        free(cap.x[i]);
    bp_llama_destroy(&l);
    for (int i = 0; i < 12; i++)
        free(w[i]);
    free(ids);
    return 0;
}

int main(int argc, char **argv)
{
    int64_t T = 512;
    int skip7b = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seq-7b") == 0 && i + 1 < argc) {
            T = atoll(argv[++i]);
            if (T < 2 || T > 4096) {
                fprintf(stderr, "bench_forward: --seq-7b must be in [2, 4096]\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--skip-7b") == 0) {
            skip7b = 1;
        } else {
            fprintf(stderr, "usage: bench_forward [--seq-7b T] [--skip-7b]\n");
            return 2;
        }
    }
    printf("threads: OpenMP %d, OpenBLAS %d\n", omp_get_max_threads(),
           openblas_get_num_threads());
    if (bench_tiny())
        return 1;
    if (!skip7b && bench_7b_layer(T))
        return 1;
    return 0;
}
