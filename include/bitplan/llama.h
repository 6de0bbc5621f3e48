/* bitplan: Llama-family models in fp32 — config, forward pass, evaluation.
 *
 * Supports Hugging Face LlamaForCausalLM, MistralForCausalLM and
 * Qwen2ForCausalLM (q/k/v biases) checkpoints stored as F32, F16 or BF16
 * (docs/calibration.md lists every field read). All compute is fp32; matrix
 * products go through OpenBLAS (cblas_sgemm), element-wise kernels through
 * OpenMP. Results do not depend on the OpenMP thread count.
 *
 * A bp_llama converts weights to fp32 on first use and keeps them up to a
 * cache limit. Any weight can be overridden by an fp32 matrix of the same
 * shape (for example a dequantized candidate), and reset to the stored one.
 *
 * Evaluation (bp_eval_*) scores next-token prediction over fixed windows of a
 * token stream: mean NLL, perplexity, and mean KL(P_ref || P_model) against a
 * cached reference run. Sums are exact fixed-point integers, so work units
 * over any split of the windows merge to identical totals.
 *
 * A bp_llama is not thread-safe: use one object per thread.
 */
#ifndef BITPLAN_LLAMA_H
#define BITPLAN_LLAMA_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/cost.h"
#include "bitplan/error.h"
#include "bitplan/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- config ------------------------------------------------------------ */

typedef enum bp_llama_arch {
    BP_LLAMA_ARCH_LLAMA = 0,  /* LlamaForCausalLM */
    BP_LLAMA_ARCH_MISTRAL,    /* MistralForCausalLM */
    BP_LLAMA_ARCH_QWEN2       /* Qwen2ForCausalLM: biases on q/k/v */
} bp_llama_arch;

typedef enum bp_rope_type {
    BP_ROPE_DEFAULT = 0,      /* inv_freq = theta^(-2i/d) */
    BP_ROPE_LLAMA3            /* Llama 3.1 frequency rescaling */
} bp_rope_type;

typedef struct bp_llama_config {
    bp_llama_arch arch;
    int64_t hidden_size;
    int64_t intermediate_size;
    int64_t n_heads;            /* num_attention_heads */
    int64_t n_kv_heads;         /* num_key_value_heads (default n_heads) */
    int64_t head_dim;           /* default hidden_size / n_heads */
    int64_t n_layers;           /* num_hidden_layers */
    int64_t vocab_size;
    int64_t max_position_embeddings;
    int64_t sliding_window;     /* tokens a query may look back (Mistral); 0 = none */
    double rms_norm_eps;
    double rope_theta;          /* default 10000 */
    int tie_word_embeddings;    /* 1: lm_head is model.embed_tokens.weight */
    int qkv_bias;               /* 1: q/k/v_proj have .bias (Qwen2) */
    bp_rope_type rope_type;
    /* BP_ROPE_LLAMA3 only: */
    double rope_factor;
    double rope_low_freq_factor;
    double rope_high_freq_factor;
    int64_t rope_original_max_position_embeddings;
} bp_llama_config;

/* "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM". */
const char *bp_llama_arch_name(bp_llama_arch a);

/* Parse config.json text. `source` names the file in messages (e.g.
 * "models/x/config.json"; NULL = "config.json"). Unsupported architecture,
 * activation, rope type or option -> BP_EUNSUPPORTED; a missing,
 * mistyped, non-finite or inconsistent field -> BP_EFORMAT. Every message
 * names the source and the field. */
int bp_llama_config_parse(const char *json_text, const char *source,
                          bp_llama_config *out, bp_error *err);

/* Check that every tensor the config implies exists in the model with the
 * expected shape and a readable dtype (F32/F16/BF16/F64). Missing ->
 * BP_ENOTFOUND, wrong shape -> BP_EFORMAT, dtype -> BP_EUNSUPPORTED; the
 * message names the tensor, its shape and the config fields involved. Extra
 * tensors (e.g. rotary_emb.inv_freq) are ignored. */
int bp_llama_config_check_model(const bp_llama_config *cfg, const bp_model *m,
                                bp_error *err);

/* The rotary inverse frequencies, head_dim/2 floats, including the llama3
 * rescaling when configured. */
void bp_llama_rope_inv_freq(const bp_llama_config *cfg, float *inv_freq);

/* --- linear-layer inputs ------------------------------------------------ */

/* The distinct inputs of the linear layers: q/k/v share one input, gate/up
 * share one. */
typedef enum bp_linear_input {
    BP_LINEAR_ATTN_QKV = 0,   /* input_layernorm output -> q/k/v_proj */
    BP_LINEAR_ATTN_O,         /* attention output -> o_proj */
    BP_LINEAR_MLP_GATE_UP,    /* post_attention_layernorm output -> gate/up_proj */
    BP_LINEAR_MLP_DOWN,       /* silu(gate) * up -> down_proj */
    BP_LINEAR_LM_HEAD,        /* final norm output -> lm_head */
    BP_LINEAR_N
} bp_linear_input;

/* "qkv", "o", "gate_up", "down", "lm_head". */
const char *bp_linear_input_name(bp_linear_input which);

/* Width of that input: hidden_size, n_heads*head_dim, hidden_size,
 * intermediate_size, hidden_size. 0 for an invalid value. */
int64_t bp_llama_input_dim(const bp_llama_config *cfg, bp_linear_input which);

/* Map a quantizable weight name to the input it multiplies:
 * model.layers.N.self_attn.{q,k,v}_proj.weight -> (N, ATTN_QKV),
 * o_proj -> ATTN_O, mlp.{gate,up}_proj -> MLP_GATE_UP, down_proj ->
 * MLP_DOWN, lm_head.weight -> (-1, LM_HEAD), and with tied embeddings
 * model.embed_tokens.weight -> (-1, LM_HEAD). BP_ENOTFOUND for any other
 * name (norms, biases, an untied embedding, a layer out of range). */
int bp_llama_weight_input(const bp_llama_config *cfg, const char *weight_name,
                          int *layer, bp_linear_input *which);

/* --- the model object --------------------------------------------------- */

typedef struct bp_llama bp_llama;

/* Parse the model's config.json, check its tensors and build a model that
 * reads weights from `model`. `model` is borrowed and must outlive the
 * result. Caller owns *out (bp_llama_destroy). */
int bp_llama_new(const bp_model *model, bp_llama **out, bp_error *err);

/* A model with no stored weights: every tensor the config implies must be
 * supplied with bp_llama_set_weight* before a forward pass (for synthetic
 * models in tests and benchmarks). Caller owns *out. */
int bp_llama_new_config(const bp_llama_config *cfg, bp_llama **out, bp_error *err);

void bp_llama_destroy(bp_llama **l);

/* The parsed config; valid while the object lives. */
const bp_llama_config *bp_llama_get_config(const bp_llama *l);

/* Bytes of converted fp32 weights kept between calls (default: half the
 * physical memory).
 * Weights beyond the limit are converted again on every use. 1-D tensors
 * (norms, biases) are always kept. Lowering the limit frees nothing already
 * cached; bp_llama_drop_cache does. */
void bp_llama_set_cache_limit(bp_llama *l, uint64_t bytes);
void bp_llama_drop_cache(bp_llama *l);

/* Shape of a named tensor of the model as a matrix (a 1-D tensor is 1 row).
 * BP_ENOTFOUND if the model has no such tensor. */
int bp_llama_weight_shape(const bp_llama *l, const char *name, int64_t *rows,
                          int64_t *cols, bp_error *err);

/* Replace tensor `name` by w (rows*cols floats in the stored [out, in]
 * row-major layout). bp_llama_set_weight copies w; the _borrowed variant
 * keeps the pointer, which must stay valid and unchanged until the weight is
 * reset or the model destroyed. Non-finite values -> BP_EINVAL (naming the
 * index); unknown name -> BP_ENOTFOUND. Replaces any earlier override. */
int bp_llama_set_weight(bp_llama *l, const char *name, const float *w,
                        bp_error *err);
int bp_llama_set_weight_borrowed(bp_llama *l, const char *name, const float *w,
                                 bp_error *err);
/* Back to the stored weight. BP_ENOTFOUND for an unknown name; resetting a
 * weight that is not overridden is a no-op. */
int bp_llama_reset_weight(bp_llama *l, const char *name, bp_error *err);
void bp_llama_reset_all_weights(bp_llama *l);

/* Called with the input activations of each linear layer, in execution
 * order: x is n_tokens x dim, row-major, valid only during the call. For a
 * batch, rows are sequence-major (sequence s occupies rows
 * [s*seq_len, (s+1)*seq_len)). layer is the block index, -1 for LM_HEAD. */
typedef struct bp_llama_hooks {
    void (*linear_input)(void *ctx, int layer, bp_linear_input which,
                         const float *x, int64_t n_tokens, int64_t dim);
    void *ctx;
    /* If > 0 and logits == NULL: run only blocks [0, layer_limit) and skip
     * the final norm and lm_head (no LM_HEAD call). 0 = everything. */
    int layer_limit;
} bp_llama_hooks;

/* One sequence from position 0 (fresh context). tokens: n_tokens ids, each
 * < vocab_size (else BP_EINVAL naming the position). logits: n_tokens x
 * vocab_size floats written by the call, or NULL to skip the lm_head.
 * hooks may be NULL. n_tokens <= max_position_embeddings. */
int bp_llama_forward(bp_llama *l, const uint32_t *tokens, int64_t n_tokens,
                     float *logits, const bp_llama_hooks *hooks, bp_error *err);

/* n_seq independent sequences of seq_len tokens each (tokens sequence-major),
 * each from position 0; logits n_seq*seq_len x vocab_size. Each sequence's
 * logits and hook activations are bit-identical to bp_llama_forward on that
 * sequence alone: matrix products run per sequence in row chunks that depend
 * only on seq_len, so OpenBLAS's size-dependent kernel choice cannot make a
 * result depend on the batch. */
int bp_llama_forward_batch(bp_llama *l, const uint32_t *tokens, int64_t n_seq,
                           int64_t seq_len, float *logits,
                           const bp_llama_hooks *hooks, bp_error *err);

/* --- KV-cache precision ------------------------------------------------- */

/* Each layer's K and V can be quantized as a KV cache in a bp_kv_format
 * would hold them (include/bitplan/kv_quant.h): K after RoPE, V as
 * produced, every position before the attention that reads it, including a
 * token's own K/V, as a cache-based decoder does. Quantization is per
 * (token, head) or with a static scale, so a position's cached values never
 * depend on later tokens. BP_KV_F16 is the default and means the exact fp32
 * path of the reference forward (the unquantized baseline: it does not round
 * to fp16), so a model with every layer at BP_KV_F16 gives bit-identical
 * results to one that never set a KV format. */

/* layer -1 = every layer. BP_KV_FP8_E4M3 needs the layer's fp8 scales set
 * first (bp_llama_set_kv_fp8_scales or bp_kv_calibrate_fp8). BP_EINVAL for
 * a layer out of range, a bad format or missing scales; nothing changes on
 * error. */
int bp_llama_set_kv_format(bp_llama *l, int64_t layer, bp_kv_format f, bp_error *err);
/* Every layer back to BP_KV_F16 (fp8 scales are kept). */
void bp_llama_reset_kv_formats(bp_llama *l);
/* The layer's format; BP_KV_FORMAT_COUNT when l is NULL or layer is out of
 * range. */
bp_kv_format bp_llama_get_kv_format(const bp_llama *l, int64_t layer);

/* The static fp8_e4m3 scales of K and V for one layer (-1 = every layer):
 * finite and > 0, else BP_EINVAL. */
int bp_llama_set_kv_fp8_scales(bp_llama *l, int64_t layer, float k_scale, float v_scale,
                               bp_error *err);
/* 0 for both when unset or out of range. */
void bp_llama_get_kv_fp8_scales(const bp_llama *l, int64_t layer, float *k_scale,
                                float *v_scale);

/* Calibration statistics: with on != 0 the per-layer absolute maxima of K
 * (after RoPE) and V are zeroed and then updated by every forward pass
 * (safe with concurrent forward passes, and order-independent: a maximum);
 * on == 0 stops updating and keeps the values. Values are taken before any
 * KV quantization of the layer. */
void bp_llama_kv_observe(bp_llama *l, int on);
/* The observed maxima of one layer. BP_EINVAL for a layer out of range. */
int bp_llama_kv_absmax(const bp_llama *l, int64_t layer, float *k_absmax, float *v_absmax,
                       bp_error *err);

/* --- evaluation --------------------------------------------------------- */

/* Windowing protocol, for a stream b[0..n-1] and context ctx: windows
 * k = 0 .. floor((n-1)/ctx)-1; window k is b[ctx*k .. ctx*k+ctx] (ctx+1
 * tokens); the model sees the first ctx (fresh context, positions 0..ctx-1)
 * and is scored on predicting the last ctx. */
int64_t bp_eval_n_windows(int64_t n_tokens, int64_t ctx);

/* Sums over scored targets. Each window's NLL and KL sums are computed in
 * double and rounded once to fixed point with BP_EVAL_FX_SHIFT fraction
 * bits, so sums over any split of a window range merge exactly (and
 * bp_eval_sums_merge is associative and commutative). */
#define BP_EVAL_FX_SHIFT 32
typedef struct bp_eval_sums {
    int64_t count;     /* targets scored */
    int64_t nll_fx;    /* sum of -ln p(target), nats * 2^32 */
    int64_t kl_fx;     /* sum of KL(P_ref || P_model), nats * 2^32; 0 without a reference */
} bp_eval_sums;

/* acc += add. BP_EINVAL on int64 overflow (acc unchanged). */
int bp_eval_sums_merge(bp_eval_sums *acc, const bp_eval_sums *add, bp_error *err);
/* Means in nats per target; NAN when count == 0. */
double bp_eval_sums_mean_nll(const bp_eval_sums *s);
double bp_eval_sums_mean_kl(const bp_eval_sums *s);
/* exp(mean NLL). */
double bp_eval_sums_ppl(const bp_eval_sums *s);

/* Mean-NLL work unit: windows [win_first, win_first + n_win) of the stream
 * (n_tokens ids). Every id in the windows' span is checked < vocab_size
 * (BP_EINVAL naming the stream position). Overwrites *out. */
int bp_eval_nll(bp_llama *l, const uint32_t *tokens, int64_t n_tokens,
                int64_t ctx, int64_t win_first, int64_t n_win,
                bp_eval_sums *out, bp_error *err);

/* Cached reference distributions for KL. With top_k == 0 (or >= vocab) it
 * keeps every logit of every scored position (4*vocab + 8 bytes each) and
 * the KL is exact. With 0 < top_k < vocab it keeps the k most likely tokens
 * and the remaining mass as one "rest" bucket (8*k + 16 bytes per position)
 * and the KL is that of the coarsened distributions, a lower bound of the
 * full KL. The reference also holds copies of its windows' tokens, so a
 * comparison needs only the model. */
typedef struct bp_eval_reference bp_eval_reference;

/* Run `l` (normally unmodified) over windows [win_first, win_first+n_win)
 * and cache its distributions. Caller owns *out. */
int bp_eval_reference_new(bp_llama *l, const uint32_t *tokens, int64_t n_tokens,
                          int64_t ctx, int64_t win_first, int64_t n_win,
                          int64_t top_k, bp_eval_reference **out, bp_error *err);
void bp_eval_reference_destroy(bp_eval_reference **r);
/* Memory bp_eval_reference_new would hold, for planning. */
uint64_t bp_eval_reference_bytes(int64_t vocab_size, int64_t ctx, int64_t n_win,
                                 int64_t top_k);
/* The window range covered and the context length. */
void bp_eval_reference_range(const bp_eval_reference *r, int64_t *win_first,
                             int64_t *n_win, int64_t *ctx);
/* The reference model's own NLL sums over its windows (kl_fx = 0). */
void bp_eval_reference_sums(const bp_eval_reference *r, bp_eval_sums *out);

/* KL work unit: run `l` (e.g. with dequantized weights set) over windows
 * [win_first, win_first+n_win), which must lie inside the reference's
 * range, and return its NLL sums and KL(P_ref || P_l) sums. The model must
 * have the reference's vocab_size (BP_EMISMATCH otherwise). A non-finite
 * logit -> BP_EINVAL naming the window. Overwrites *out. */
int bp_eval_compare(bp_llama *l, const bp_eval_reference *ref,
                    int64_t win_first, int64_t n_win, bp_eval_sums *out,
                    bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
