/* Forward pass against the bundled model's independent reference logits,
 * weight overrides, batching invariance, and KL of a model against itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/llama.h"
#include "bitplan/model.h"

#define MODEL_DIR BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"

typedef struct fixture {
    bp_model *model;
    bp_llama *llama;
    uint32_t tokens[64];
    float *ref_logits; /* 64 x 256 */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    bp_error err;
    if (bp_model_open(MODEL_DIR, &f->model, &err) != BP_OK) {
        fprintf(stderr, "model open: %s\n", err.msg);
        return -1;
    }
    if (bp_llama_new(f->model, &f->llama, &err) != BP_OK) {
        fprintf(stderr, "llama: %s\n", err.msg);
        return -1;
    }
    json_error_t jerr;
    json_t *ref = json_load_file(MODEL_DIR "/reference.json", 0, &jerr);
    if (!ref)
        return -1;
    json_t *toks = json_object_get(ref, "tokens"), *lg = json_object_get(ref, "logits");
    if (json_array_size(toks) != 64 || json_array_size(lg) != 64)
        return -1;
    f->ref_logits = malloc(sizeof(float) * 64 * 256);
    for (size_t t = 0; t < 64; t++) {
        f->tokens[t] = (uint32_t)json_integer_value(json_array_get(toks, t));
        json_t *row = json_array_get(lg, t);
        if (json_array_size(row) != 256)
            return -1;
        for (size_t v = 0; v < 256; v++)
            f->ref_logits[t * 256 + v] = (float)json_number_value(json_array_get(row, v));
    }
    json_decref(ref);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    bp_llama_destroy(&f->llama);
    bp_llama_destroy(&f->llama); /* safe twice */
    bp_model_destroy(&f->model);
    free(f->ref_logits);
    free(f);
    return 0;
}

static void test_forward_matches_reference_logits(void **state)
{
    fixture *f = *state;
    float *logits = malloc(sizeof(float) * 64 * 256);
    bp_error err;
    assert_int_equal(bp_llama_forward(f->llama, f->tokens, 64, logits, NULL, &err), BP_OK);
    double maxdiff = 0;
    for (int i = 0; i < 64 * 256; i++) {
        double d = fabs((double)logits[i] - (double)f->ref_logits[i]);
        if (d > maxdiff)
            maxdiff = d;
    }
    printf("max |logit - reference| over 64x256 = %.3g\n", maxdiff);
    assert_true(maxdiff <= 1e-3);
    free(logits);
}

static void test_forward_prefix_and_batch_invariance(void **state)
{
    fixture *f = *state;
    bp_error err;
    /* Causality: the first 16 positions do not depend on later tokens. */
    float *a = malloc(sizeof(float) * 64 * 256), *b = malloc(sizeof(float) * 64 * 256);
    assert_int_equal(bp_llama_forward(f->llama, f->tokens, 64, a, NULL, &err), BP_OK);
    assert_int_equal(bp_llama_forward(f->llama, f->tokens, 16, b, NULL, &err), BP_OK);
    for (int i = 0; i < 16 * 256; i++)
        assert_true(fabsf(a[i] - b[i]) <= 1e-4f);
    /* A batch of 4 sequences of 16 gives each sequence's solo result. */
    float *c = malloc(sizeof(float) * 64 * 256);
    assert_int_equal(bp_llama_forward_batch(f->llama, f->tokens, 4, 16, c, NULL, &err), BP_OK);
    for (int s = 0; s < 4; s++) {
        assert_int_equal(bp_llama_forward(f->llama, f->tokens + 16 * s, 16, b, NULL, &err),
                         BP_OK);
        assert_memory_equal(b, c + s * 16 * 256, sizeof(float) * 16 * 256);
    }
    /* One-token sequences: alone or batched, bit for bit. */
    assert_int_equal(bp_llama_forward(f->llama, f->tokens, 1, b, NULL, &err), BP_OK);
    assert_int_equal(bp_llama_forward_batch(f->llama, f->tokens, 2, 1, c, NULL, &err), BP_OK);
    assert_memory_equal(b, c, sizeof(float) * 256);
    free(a);
    free(b);
    free(c);
}

static void test_forward_rejects_bad_input(void **state)
{
    fixture *f = *state;
    bp_error err;
    float *logits = malloc(sizeof(float) * 8 * 256);
    uint32_t bad[8] = {1, 2, 3, 300, 4, 5, 6, 7};
    assert_int_equal(bp_llama_forward(f->llama, bad, 8, logits, NULL, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "position 3"));
    assert_non_null(strstr(err.msg, "300"));
    assert_int_equal(bp_llama_forward(f->llama, bad, 0, logits, NULL, &err), BP_EINVAL);
    uint32_t *many = calloc(2000, sizeof *many);
    float *big = malloc(sizeof(float) * 2000 * 256);
    assert_int_equal(bp_llama_forward(f->llama, many, 2000, big, NULL, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "max_position_embeddings"));
    free(many);
    free(big);
    free(logits);
}

typedef struct hook_log {
    int calls[BP_LINEAR_N];
    int64_t dims[BP_LINEAR_N];
    int last_layer;
} hook_log;

static void log_hook(void *ctx, int layer, bp_linear_input which, const float *x,
                     int64_t n, int64_t dim)
{
    hook_log *h = ctx;
    (void)x;
    assert_int_equal(n, 10);
    h->calls[which]++;
    h->dims[which] = dim;
    h->last_layer = layer;
}

static void test_forward_hooks(void **state)
{
    fixture *f = *state;
    bp_error err;
    hook_log log;
    memset(&log, 0, sizeof log);
    bp_llama_hooks hooks = {log_hook, &log, 0};
    float *logits = malloc(sizeof(float) * 10 * 256);
    assert_int_equal(bp_llama_forward(f->llama, f->tokens, 10, logits, &hooks, &err), BP_OK);
    assert_int_equal(log.calls[BP_LINEAR_ATTN_QKV], 6);
    assert_int_equal(log.calls[BP_LINEAR_ATTN_O], 6);
    assert_int_equal(log.calls[BP_LINEAR_MLP_GATE_UP], 6);
    assert_int_equal(log.calls[BP_LINEAR_MLP_DOWN], 6);
    assert_int_equal(log.calls[BP_LINEAR_LM_HEAD], 1);
    assert_int_equal(log.dims[BP_LINEAR_MLP_DOWN], 384);
    assert_int_equal(log.dims[BP_LINEAR_ATTN_O], 128);
    assert_int_equal(log.last_layer, -1);
    /* layer_limit without logits stops early. */
    memset(&log, 0, sizeof log);
    hooks.layer_limit = 2;
    assert_int_equal(bp_llama_forward(f->llama, f->tokens, 10, NULL, &hooks, &err), BP_OK);
    assert_int_equal(log.calls[BP_LINEAR_ATTN_QKV], 2);
    assert_int_equal(log.calls[BP_LINEAR_LM_HEAD], 0);
    free(logits);
}

static void test_weight_override_and_reset(void **state)
{
    fixture *f = *state;
    bp_error err;
    const char *name = "model.layers.3.mlp.down_proj.weight";
    int64_t rows, cols;
    assert_int_equal(bp_llama_weight_shape(f->llama, name, &rows, &cols, &err), BP_OK);
    assert_int_equal(rows, 128);
    assert_int_equal(cols, 384);
    float *base = malloc(sizeof(float) * 32 * 256), *mod = malloc(sizeof(float) * 32 * 256),
          *back = malloc(sizeof(float) * 32 * 256);
    assert_int_equal(bp_llama_forward(f->llama, f->tokens, 32, base, NULL, &err), BP_OK);

    /* The stored weights, scaled by 0.5. */
    long ti = bp_model_find(f->model, name);
    assert_true(ti >= 0);
    float *w = malloc(sizeof(float) * (size_t)(rows * cols));
    assert_int_equal(bp_tensor_rows_f32(bp_model_tensor(f->model, (size_t)ti), 0, rows, w, &err),
                     BP_OK);
    for (int64_t i = 0; i < rows * cols; i++)
        w[i] *= 0.5f;
    assert_int_equal(bp_llama_set_weight(f->llama, name, w, &err), BP_OK);
    w[0] = 1e6f; /* copied: later changes do not matter */
    assert_int_equal(bp_llama_forward(f->llama, f->tokens, 32, mod, NULL, &err), BP_OK);
    double diff = 0;
    for (int i = 0; i < 32 * 256; i++)
        diff = fmax(diff, fabs((double)mod[i] - base[i]));
    assert_true(diff > 1e-3);

    assert_int_equal(bp_llama_reset_weight(f->llama, name, &err), BP_OK);
    assert_int_equal(bp_llama_forward(f->llama, f->tokens, 32, back, NULL, &err), BP_OK);
    assert_memory_equal(base, back, sizeof(float) * 32 * 256);

    /* Borrowed override with the stored values gives the same logits. */
    assert_int_equal(bp_tensor_rows_f32(bp_model_tensor(f->model, (size_t)ti), 0, rows, w, &err),
                     BP_OK);
    assert_int_equal(bp_llama_set_weight_borrowed(f->llama, name, w, &err), BP_OK);
    assert_int_equal(bp_llama_forward(f->llama, f->tokens, 32, back, NULL, &err), BP_OK);
    assert_memory_equal(base, back, sizeof(float) * 32 * 256);
    bp_llama_reset_all_weights(f->llama);

    /* Errors. */
    w[5] = NAN;
    assert_int_equal(bp_llama_set_weight(f->llama, name, w, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "element 5"));
    assert_int_equal(bp_llama_set_weight(f->llama, "model.layers.9.mlp.down_proj.weight", w,
                                         &err),
                     BP_ENOTFOUND);
    assert_int_equal(bp_llama_reset_weight(f->llama, "nope", &err), BP_ENOTFOUND);

    /* A zero cache limit converts on every use and changes nothing. */
    bp_llama_drop_cache(f->llama);
    bp_llama_set_cache_limit(f->llama, 0);
    assert_int_equal(bp_llama_forward(f->llama, f->tokens, 32, back, NULL, &err), BP_OK);
    assert_memory_equal(base, back, sizeof(float) * 32 * 256);
    bp_llama_set_cache_limit(f->llama, UINT64_MAX);
    free(w);
    free(base);
    free(mod);
    free(back);
}

static void test_kl_self_is_zero_and_override_positive(void **state)
{
    fixture *f = *state;
    bp_error err;
    /* 64 + 1 tokens make 2 windows of ctx 32. */
    uint32_t toks[65];
    for (int i = 0; i < 64; i++)
        toks[i] = f->tokens[i];
    toks[64] = 10;
    bp_eval_reference *full = NULL, *top = NULL;
    assert_int_equal(bp_eval_reference_new(f->llama, toks, 65, 32, 0, 2, 0, &full, &err), BP_OK);
    assert_int_equal(bp_eval_reference_new(f->llama, toks, 65, 32, 0, 2, 8, &top, &err), BP_OK);
    bp_eval_sums s, r, n;
    assert_int_equal(bp_eval_compare(f->llama, full, 0, 2, &s, &err), BP_OK);
    assert_int_equal(s.count, 64);
    assert_int_equal(s.kl_fx, 0);
    bp_eval_reference_sums(full, &r);
    assert_int_equal(r.nll_fx, s.nll_fx);
    assert_int_equal(bp_eval_nll(f->llama, toks, 65, 32, 0, 2, &n, &err), BP_OK);
    assert_int_equal(n.nll_fx, s.nll_fx);
    assert_int_equal(bp_eval_compare(f->llama, top, 1, 1, &s, &err), BP_OK);
    assert_int_equal(s.kl_fx, 0);
    assert_int_equal(s.count, 32);

    /* Perturb one weight: KL > 0, and the top-k KL is a lower bound. */
    const char *name = "model.layers.0.self_attn.v_proj.weight";
    long ti = bp_model_find(f->model, name);
    const bp_tensor_info *t = bp_model_tensor(f->model, (size_t)ti);
    float *w = malloc(sizeof(float) * t->numel);
    assert_int_equal(bp_tensor_rows_f32(t, 0, t->shape[0], w, &err), BP_OK);
    for (uint64_t i = 0; i < t->numel; i++)
        w[i] = w[i] * 0.7f + (float)((i * 2654435761u) % 1000) * 1e-5f;
    assert_int_equal(bp_llama_set_weight(f->llama, name, w, &err), BP_OK);
    bp_eval_sums kf, kt, k0, k1, m;
    assert_int_equal(bp_eval_compare(f->llama, full, 0, 2, &kf, &err), BP_OK);
    assert_int_equal(bp_eval_compare(f->llama, top, 0, 2, &kt, &err), BP_OK);
    double klf = bp_eval_sums_mean_kl(&kf), klt = bp_eval_sums_mean_kl(&kt);
    printf("perturbed v_proj: KL full %.6g, top-8 %.6g, NLL %.6f vs %.6f\n", klf, klt,
           bp_eval_sums_mean_nll(&kf), bp_eval_sums_mean_nll(&r));
    assert_true(klf > 1e-5);
    assert_true(klt > 0 && klt <= klf + 1e-12);
    assert_int_equal(kf.nll_fx, kt.nll_fx);
    /* Window work units merge exactly. */
    assert_int_equal(bp_eval_compare(f->llama, full, 0, 1, &k0, &err), BP_OK);
    assert_int_equal(bp_eval_compare(f->llama, full, 1, 1, &k1, &err), BP_OK);
    m = k0;
    assert_int_equal(bp_eval_sums_merge(&m, &k1, &err), BP_OK);
    assert_memory_equal(&m, &kf, sizeof m);
    /* Out of range. */
    assert_int_equal(bp_eval_compare(f->llama, top, 1, 2, &s, &err), BP_EINVAL);
    bp_llama_reset_all_weights(f->llama);
    free(w);
    bp_eval_reference_destroy(&full);
    bp_eval_reference_destroy(&top);
    bp_eval_reference_destroy(&top);
}

static void test_config_only_model_needs_weights(void **state)
{
    fixture *f = *state;
    bp_error err;
    bp_llama *l = NULL;
    assert_int_equal(bp_llama_new_config(bp_llama_get_config(f->llama), &l, &err), BP_OK);
    float *logits = malloc(sizeof(float) * 4 * 256);
    assert_int_equal(bp_llama_forward(l, f->tokens, 4, logits, NULL, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "model.embed_tokens.weight"));
    /* Supplying every tensor reproduces the stored model exactly. */
    for (size_t i = 0; i < bp_model_count(f->model); i++) {
        const bp_tensor_info *t = bp_model_tensor(f->model, i);
        float *w = malloc(sizeof(float) * t->numel);
        assert_int_equal(bp_tensor_rows_f32(t, 0, bp_tensor_rows(t), w, &err), BP_OK);
        assert_int_equal(bp_llama_set_weight(l, t->name, w, &err), BP_OK);
        free(w);
    }
    float *ref = malloc(sizeof(float) * 4 * 256);
    assert_int_equal(bp_llama_forward(l, f->tokens, 4, logits, NULL, &err), BP_OK);
    assert_int_equal(bp_llama_forward(f->llama, f->tokens, 4, ref, NULL, &err), BP_OK);
    assert_memory_equal(logits, ref, sizeof(float) * 4 * 256);
    bp_llama_destroy(&l);
    free(logits);
    free(ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_reference_logits),
        cmocka_unit_test(test_forward_prefix_and_batch_invariance),
        cmocka_unit_test(test_forward_rejects_bad_input),
        cmocka_unit_test(test_forward_hooks),
        cmocka_unit_test(test_weight_override_and_reset),
        cmocka_unit_test(test_kl_self_is_zero_and_override_positive),
        cmocka_unit_test(test_config_only_model_needs_weights),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
