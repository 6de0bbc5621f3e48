/* Real-loss evaluation of a plan. */
#include "bitplan/evaluate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/apply.h"
#include "bitplan/progress.h"

int bp_evaluate_check_calib(const bp_plan *plan, const bp_calib *calib, bp_error *err)
{
    int needs = 0;
    for (size_t i = 0; i < bp_plan_tensor_count(plan); i++) {
        bp_plan_tensor pt;
        bp_plan_tensor_get(plan, i, &pt);
        if (pt.method == BP_METHOD_GPTQ)
            needs = 1;
    }
    if (!needs)
        return BP_OK;
    bp_plan_info info;
    bp_plan_get_info(plan, &info);
    if (!calib)
        return bp_error_set(err, BP_EINVAL,
                            "the plan uses GPTQ weights, which need the calibration input it was made with "
                            "(%s): give the same --text/--tokens (and --ctx/--calib-seqs) or --stats",
                            info.calibration_source ? info.calibration_source : "unknown");
    if (!info.calibration_hash || strcmp(info.calibration_hash, bp_calib_id(calib)))
        return bp_error_set(err, BP_EMISMATCH,
                            "calibration input differs from the plan's: plan %s (%s), given %s (%s); "
                            "GPTQ weights would not match the plan's predicted errors",
                            info.calibration_hash ? info.calibration_hash : "none",
                            info.calibration_source ? info.calibration_source : "?", bp_calib_id(calib),
                            bp_calib_source(calib));
    return BP_OK;
}

int bp_evaluate_apply_plan(bp_llama *llama, const bp_model *model, const bp_plan *plan,
                           const bp_calib *calib, bp_error *err)
{
    int rc = bp_evaluate_check_calib(plan, calib, err);
    if (rc != BP_OK)
        return rc;
    const bp_llama_config *cfg = bp_llama_get_config(llama);
    for (size_t i = 0; i < bp_plan_tensor_count(plan); i++) {
        bp_plan_tensor pt;
        bp_plan_tensor_get(plan, i, &pt);
        long mi = bp_model_find(model, pt.name);
        if (mi < 0)
            return bp_error_set(err, BP_EMISMATCH, "plan tensor '%s' is not in the model", pt.name);
        const bp_tensor_info *t = bp_model_tensor(model, (size_t)mi);
        bp_format f;
        if ((rc = bp_format_parse(pt.format, &f, err)) != BP_OK)
            return rc;
        double *h = NULL;
        if (pt.method == BP_METHOD_GPTQ &&
            (rc = bp_calib_hessian_full(calib, cfg, pt.name, pt.cols, &h, err)) != BP_OK)
            return rc;
        float *deq = malloc((size_t)pt.rows * (size_t)pt.cols * sizeof *deq);
        if (!deq) {
            free(h);
            return bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory", pt.name);
        }
        rc = bp_apply_tensor(t, &f, pt.method, h, NULL, 0, deq, err);
        free(h);
        if (rc == BP_OK)
            rc = bp_llama_set_weight(llama, pt.name, deq, err);
        free(deq);
        if (rc != BP_OK)
            return rc;
    }
    return BP_OK;
}

/* Windows per chunk: bounds the cached reference distributions. */
#define EVAL_CHUNK_WINDOWS 64

int bp_plan_override_method(const bp_plan *in, bp_quant_method m, const bp_calib *calib,
                            bp_plan **out, bp_error *err)
{
    *out = NULL;
    if (m == BP_METHOD_GPTQ && !calib)
        return bp_error_set(err, BP_EINVAL, "GPTQ weights need calibration input (--text/--tokens/--stats)");
    bp_plan_info info;
    bp_plan_get_info(in, &info);
    bp_plan *p = bp_plan_new();
    if (!p)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    int rc;
    if ((rc = bp_plan_set_tool(p, info.tool_name, info.tool_version, err)) ||
        (rc = bp_plan_set_model(p, info.model_path, info.model_hash, err)) ||
        (rc = bp_plan_set_calibration(p, m == BP_METHOD_GPTQ ? bp_calib_id(calib) : info.calibration_hash,
                                      m == BP_METHOD_GPTQ ? bp_calib_source(calib) : info.calibration_source,
                                      err)) ||
        (info.metric >= 0 && (rc = bp_plan_set_metric(p, (bp_metric)info.metric, err))) ||
        (rc = bp_plan_set_budget(p, info.budget_given, info.asked_bits, info.asked_bytes, err)) ||
        (rc = bp_plan_set_solver(p, info.solver_name, info.solver_status, info.objective, info.bound, info.gap,
                                 err)))
        goto out;
    for (size_t i = 0; i < bp_plan_tensor_count(in); i++) {
        bp_plan_tensor t;
        bp_plan_tensor_get(in, i, &t);
        t.method = m;
        t.predicted_error = NAN;
        if ((rc = bp_plan_add_tensor(p, &t, err)) != BP_OK)
            goto out;
    }
    *out = p;
    p = NULL;
out:
    bp_plan_destroy(&p);
    return rc;
}

int bp_evaluate(bp_llama *llama, const bp_model *model, const bp_plan *plan,
                const bp_calib *calib, const uint32_t *tokens, int64_t n_tokens,
                int64_t ctx, int64_t max_windows, int quiet, bp_eval_result *out,
                bp_error *err)
{
    return bp_evaluate_ex(llama, model, plan, calib, tokens, n_tokens, ctx, max_windows, quiet, 0, out, err);
}

int bp_evaluate_ex(bp_llama *llama, const bp_model *model, const bp_plan *plan,
                   const bp_calib *calib, const uint32_t *tokens, int64_t n_tokens,
                   int64_t ctx, int64_t max_windows, int quiet, int no_kl,
                   bp_eval_result *out, bp_error *err)
{
    memset(out, 0, sizeof *out);
    out->kl = NAN;
    int64_t nw = bp_eval_n_windows(n_tokens, ctx);
    if (nw < 1)
        return bp_error_set(err, BP_EINVAL, "%lld tokens hold no evaluation window of %lld + 1 tokens",
                            (long long)n_tokens, (long long)ctx);
    if (max_windows > 0 && max_windows < nw)
        nw = max_windows;
    int rc = BP_OK;
    bp_eval_sums fp = {0, 0, 0}, q = {0, 0, 0};
    bp_progress *prog = bp_progress_new("eval", (uint64_t)nw, quiet);
    if (!prog)
        return bp_error_set(err, BP_ENOMEM, "eval: out of memory");
    if (!plan || no_kl) {
        bp_llama *lq = NULL;
        if (plan) {
            rc = bp_llama_new(model, &lq, err);
            if (rc == BP_OK)
                rc = bp_evaluate_apply_plan(lq, model, plan, calib, err);
        }
        for (int64_t w0 = 0; w0 < nw && rc == BP_OK; w0 += EVAL_CHUNK_WINDOWS) {
            int64_t k = nw - w0 < EVAL_CHUNK_WINDOWS ? nw - w0 : EVAL_CHUNK_WINDOWS;
            bp_eval_sums s;
            rc = bp_eval_nll(lq ? lq : llama, tokens, n_tokens, ctx, w0, k, &s, err);
            if (rc == BP_OK)
                rc = bp_eval_sums_merge(&fp, &s, err);
            bp_progress_tick(prog, (uint64_t)k);
        }
        bp_llama_destroy(&lq);
        q = fp;
    } else {
        /* Dequantize every planned tensor once; switch the model between
         * full precision (reference) and quantized per chunk. */
        bp_llama *lq = NULL;
        rc = bp_llama_new(model, &lq, err);
        if (rc == BP_OK)
            rc = bp_evaluate_apply_plan(lq, model, plan, calib, err);
        for (int64_t w0 = 0; w0 < nw && rc == BP_OK; w0 += EVAL_CHUNK_WINDOWS) {
            int64_t k = nw - w0 < EVAL_CHUNK_WINDOWS ? nw - w0 : EVAL_CHUNK_WINDOWS;
            bp_eval_reference *ref = NULL;
            bp_eval_sums s, r;
            rc = bp_eval_reference_new(llama, tokens, n_tokens, ctx, w0, k, 0, &ref, err);
            if (rc == BP_OK) {
                bp_eval_reference_sums(ref, &r);
                rc = bp_eval_sums_merge(&fp, &r, err);
            }
            if (rc == BP_OK)
                rc = bp_eval_compare(lq, ref, w0, k, &s, err);
            if (rc == BP_OK)
                rc = bp_eval_sums_merge(&q, &s, err);
            bp_eval_reference_destroy(&ref);
            bp_progress_tick(prog, (uint64_t)k);
        }
        bp_llama_destroy(&lq);
    }
    if (rc == BP_OK) {
        bp_progress_done(prog);
        out->windows = nw;
        out->tokens = q.count;
        out->nll = bp_eval_sums_mean_nll(&q);
        out->ppl = bp_eval_sums_ppl(&q);
        out->nll_fp = plan && no_kl ? NAN : bp_eval_sums_mean_nll(&fp);
        if (plan && !no_kl)
            out->kl = bp_eval_sums_mean_kl(&q);
    }
    bp_progress_destroy(&prog);
    return rc;
}
