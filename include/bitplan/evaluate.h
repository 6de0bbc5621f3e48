/* bitplan: real-loss evaluation of a plan — the model's mean NLL and
 * perplexity on a token stream, and with a plan the mean KL(full precision
 * || quantized) over next-token distributions. The plan is applied in memory
 * with the same kernels as `bitplan apply` (bp_apply_plan_tensor, which
 * honours a tensor's block map).
 */
#ifndef BITPLAN_EVALUATE_H
#define BITPLAN_EVALUATE_H

#include <stdint.h>

#include "bitplan/calib_input.h"
#include "bitplan/error.h"
#include "bitplan/llama.h"
#include "bitplan/model.h"
#include "bitplan/plan.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_eval_result {
    int64_t tokens;    /* scored targets */
    int64_t windows;   /* windows evaluated */
    double nll;        /* mean NLL of the evaluated model (quantized with a plan), nats/token */
    double ppl;        /* exp(nll) */
    double nll_fp;     /* mean NLL of the full-precision model */
    double kl;         /* mean KL(fp || quantized); NaN without a plan */
} bp_eval_result;

/* Set every planned tensor of `llama` to its dequantized weights. GPTQ
 * tensors need `calib` with the plan's calibration id (BP_EMISMATCH
 * otherwise, naming both ids). The weights stay set (reset with
 * bp_llama_reset_all_weights). */
int bp_evaluate_apply_plan(bp_llama *llama, const bp_model *model, const bp_plan *plan,
                           const bp_calib *calib, bp_error *err);

/* A bounded cache of dequantized tensors for evaluating many plans that
 * share most of their choices (the real-loss search): keyed by tensor,
 * format, method, block map and calibration id; entries beyond the byte
 * limit are not kept (the first ones stay, so the hit pattern is
 * deterministic). */
typedef struct bp_deq_cache bp_deq_cache;
bp_deq_cache *bp_deq_cache_new(uint64_t limit_bytes);
void bp_deq_cache_destroy(bp_deq_cache **c);
/* Hits and misses so far (either may be NULL). */
void bp_deq_cache_stats(const bp_deq_cache *c, uint64_t *hits, uint64_t *misses);

/* bp_evaluate_apply_plan through a cache (NULL: no cache). The cache must
 * only ever see one model. */
int bp_evaluate_apply_plan_cached(bp_llama *llama, const bp_model *model, const bp_plan *plan,
                                  const bp_calib *calib, bp_deq_cache *cache, bp_error *err);

/* Check that calib matches the plan's recorded calibration when any
 * planned tensor needs it (GPTQ). */
int bp_evaluate_check_calib(const bp_plan *plan, const bp_calib *calib, bp_error *err);

/* A copy of `in` whose every tensor uses method m (RTN, GPTQ or GPTQ_ACT) instead of
 * the planned one, with predicted errors cleared (they described other
 * weights). For GPTQ the copy records calib's id, so apply/eval accept it.
 * Used by `apply --method` and `eval --method`. Caller owns *out. */
int bp_plan_override_method(const bp_plan *in, bp_quant_method m, const bp_calib *calib,
                            bp_plan **out, bp_error *err);

/* Evaluate windows [0, max_windows) (0 = all) of the stream with context
 * ctx (the reference.json protocol). With a plan: NLL of both models and
 * KL, processed in chunks so memory stays bounded. quiet: no progress. */
int bp_evaluate(bp_llama *llama, const bp_model *model, const bp_plan *plan,
                const bp_calib *calib, const uint32_t *tokens, int64_t n_tokens,
                int64_t ctx, int64_t max_windows, int quiet, bp_eval_result *out,
                bp_error *err);

/* As bp_evaluate, but with a plan and no_kl = 1 only the quantized model
 * runs: nll, ppl and tokens are filled, nll_fp and kl are NaN (half the
 * work, for sweeps over many plans whose full-precision NLL is known). */
int bp_evaluate_ex(bp_llama *llama, const bp_model *model, const bp_plan *plan,
                   const bp_calib *calib, const uint32_t *tokens, int64_t n_tokens,
                   int64_t ctx, int64_t max_windows, int quiet, int no_kl,
                   bp_eval_result *out, bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
