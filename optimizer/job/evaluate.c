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
        if (bp_method_is_gptq(pt.method))
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

typedef struct deq_entry {
    char *key;
    float *deq;
    size_t n;
} deq_entry;

struct bp_deq_cache {
    uint64_t limit, used;
    deq_entry *e;
    size_t n, cap;
    uint64_t hits, misses;
};

bp_deq_cache *bp_deq_cache_new(uint64_t limit_bytes)
{
    bp_deq_cache *c = calloc(1, sizeof *c);
    if (c)
        c->limit = limit_bytes;
    return c;
}

void bp_deq_cache_destroy(bp_deq_cache **cp)
{
    if (!cp || !*cp)
        return;
    for (size_t i = 0; i < (*cp)->n; i++) {
        free((*cp)->e[i].key);
        free((*cp)->e[i].deq);
    }
    free((*cp)->e);
    free(*cp);
    *cp = NULL;
}

void bp_deq_cache_stats(const bp_deq_cache *c, uint64_t *hits, uint64_t *misses)
{
    if (hits)
        *hits = c ? c->hits : 0;
    if (misses)
        *misses = c ? c->misses : 0;
}

/* Everything the dequantized weights depend on besides the model. */
static char *deq_key(const bp_plan_tensor *pt, const char *calib_id)
{
    size_t cap = 256 + strlen(pt->name) + strlen(pt->format) + (calib_id ? strlen(calib_id) : 0);
    if (pt->blocks)
        for (size_t i = 0; i < pt->blocks->n_formats; i++)
            cap += strlen(pt->blocks->formats[i]) + 2;
    if (pt->blocks)
        cap += pt->blocks->n_runs * 48;
    char *k = malloc(cap);
    if (!k)
        return NULL;
    int n = snprintf(k, cap, "%s|%s|%d|%s", pt->name, pt->format, (int)pt->method,
                     bp_method_is_gptq(pt->method) && calib_id ? calib_id : "");
    if (pt->blocks) {
        const bp_plan_blocks *b = pt->blocks;
        n += snprintf(k + n, cap - (size_t)n, "|%d:%lld:", (int)b->axis, (long long)b->size);
        for (size_t i = 0; i < b->n_formats; i++)
            n += snprintf(k + n, cap - (size_t)n, "%s,", b->formats[i]);
        for (size_t i = 0; i < b->n_runs; i++)
            n += snprintf(k + n, cap - (size_t)n, "%u*%llu;", b->runs[i].format,
                          (unsigned long long)b->runs[i].count);
    }
    return k;
}

static const deq_entry *cache_find(const bp_deq_cache *c, const char *key)
{
    for (size_t i = 0; c && i < c->n; i++)
        if (!strcmp(c->e[i].key, key))
            return &c->e[i];
    return NULL;
}

/* Keep a copy when it fits the limit; a full cache is not an error. */
static void cache_put(bp_deq_cache *c, char *key, const float *deq, size_t n)
{
    uint64_t bytes = (uint64_t)n * sizeof *deq + strlen(key);
    if (!c || c->used + bytes > c->limit) {
        free(key);
        return;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        deq_entry *e = realloc(c->e, cap * sizeof *e);
        if (!e) {
            free(key);
            return;
        }
        c->e = e;
        c->cap = cap;
    }
    float *copy = malloc(n * sizeof *copy);
    if (!copy) {
        free(key);
        return;
    }
    memcpy(copy, deq, n * sizeof *copy);
    c->e[c->n++] = (deq_entry){key, copy, n};
    c->used += bytes;
}

int bp_evaluate_apply_plan_cached(bp_llama *llama, const bp_model *model, const bp_plan *plan,
                                  const bp_calib *calib, bp_deq_cache *cache, bp_error *err)
{
    int rc = bp_evaluate_check_calib(plan, calib, err);
    if (rc != BP_OK)
        return rc;
    const bp_llama_config *cfg = bp_llama_get_config(llama);
    const char *calib_id = calib ? bp_calib_id(calib) : NULL;
    for (size_t i = 0; i < bp_plan_tensor_count(plan); i++) {
        bp_plan_tensor pt;
        bp_plan_tensor_get(plan, i, &pt);
        long mi = bp_model_find(model, pt.name);
        if (mi < 0)
            return bp_error_set(err, BP_EMISMATCH, "plan tensor '%s' is not in the model", pt.name);
        const bp_tensor_info *t = bp_model_tensor(model, (size_t)mi);
        if (t->ndim != 2 || t->shape[0] != pt.rows || t->shape[1] != pt.cols)
            return bp_error_set(err, BP_EMISMATCH, "plan tensor '%s' is %lldx%lld, the model's is not",
                                pt.name, (long long)pt.rows, (long long)pt.cols);
        char *key = NULL;
        if (cache) {
            if (!(key = deq_key(&pt, calib_id)))
                return bp_error_set(err, BP_ENOMEM, "out of memory");
            const deq_entry *hit = cache_find(cache, key);
            if (hit) {
                free(key);
                cache->hits++;
                if ((rc = bp_llama_set_weight(llama, pt.name, hit->deq, err)) != BP_OK)
                    return rc;
                continue;
            }
            cache->misses++;
        }
        double *h = NULL;
        if (bp_method_is_gptq(pt.method) &&
            (rc = bp_calib_hessian_full(calib, cfg, pt.name, pt.cols, &h, err)) != BP_OK) {
            free(key);
            return rc;
        }
        size_t n = (size_t)pt.rows * (size_t)pt.cols;
        float *deq = malloc(n * sizeof *deq);
        if (!deq) {
            free(h);
            free(key);
            return bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory", pt.name);
        }
        rc = bp_apply_plan_tensor(t, &pt, h, NULL, 0, deq, err);
        free(h);
        if (rc == BP_OK)
            rc = bp_llama_set_weight(llama, pt.name, deq, err);
        if (rc == BP_OK && key) {
            cache_put(cache, key, deq, n);
            key = NULL;
        }
        free(key);
        free(deq);
        if (rc != BP_OK)
            return rc;
    }
    return BP_OK;
}

int bp_evaluate_apply_plan(bp_llama *llama, const bp_model *model, const bp_plan *plan,
                           const bp_calib *calib, bp_error *err)
{
    return bp_evaluate_apply_plan_cached(llama, model, plan, calib, NULL, err);
}

/* Windows per chunk: bounds the cached reference distributions. */
#define EVAL_CHUNK_WINDOWS 64

int bp_plan_override_method(const bp_plan *in, bp_quant_method m, const bp_calib *calib,
                            bp_plan **out, bp_error *err)
{
    *out = NULL;
    if (!bp_table_method_name(m))
        return bp_error_set(err, BP_EINVAL, "unknown method %d", (int)m);
    if (bp_method_is_gptq(m) && !calib)
        return bp_error_set(err, BP_EINVAL, "GPTQ weights need calibration input (--text/--tokens/--stats)");
    bp_plan_info info;
    bp_plan_get_info(in, &info);
    bp_plan *p = bp_plan_new();
    if (!p)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    int rc;
    if ((rc = bp_plan_set_tool(p, info.tool_name, info.tool_version, err)) ||
        (rc = bp_plan_set_model(p, info.model_path, info.model_hash, err)) ||
        (rc = bp_plan_set_calibration(p, bp_method_is_gptq(m) ? bp_calib_id(calib) : info.calibration_hash,
                                      bp_method_is_gptq(m) ? bp_calib_source(calib) : info.calibration_source,
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
