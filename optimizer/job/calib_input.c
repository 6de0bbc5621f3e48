/* Calibration input: tokens or stats, Hessians, held-out KL windows. */
#include "bitplan/calib_input.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bitplan/progress.h"
#include "job_internal.h"

struct bp_calib {
    bp_tokens *tokens;      /* the whole stream, NULL with a stats file alone */
    bp_tokens *kl_tokens;   /* held-out part, NULL when no tokens */
    bp_hessian *hess;
    int64_t ctx, n_seq;
    char id[BP_HASH_HEX_LEN + 1];
    char source[512];
};

void bp_calib_spec_default(bp_calib_spec *s)
{
    memset(s, 0, sizeof *s);
}

int bp_calib_spec_given(const bp_calib_spec *s)
{
    return s && (s->text_path || s->tokens_path || s->stats_path);
}

void bp_calib_make_id(const char *stream_hash, int64_t ctx, int64_t n_seq, char *out)
{
    bp_hash h;
    bp_hash_init(&h);
    bp_hash_update_str(&h, "bitplan.calib/v1");
    bp_hash_update_str(&h, stream_hash ? stream_hash : "");
    bp_hash_update_u64(&h, (uint64_t)ctx);
    bp_hash_update_u64(&h, (uint64_t)n_seq);
    bp_hash_final_hex(&h, out);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

int bp_calib_load_tokens(const char *text_path, const char *tokens_path, int64_t vocab_size,
                         bp_tokens **out, bp_error *err)
{
    *out = NULL;
    if (!text_path == !tokens_path)
        return bp_error_set(err, BP_EINVAL, "give --text or --tokens, not both and not neither");
    if (text_path)
        return bp_tokens_load_text(text_path, vocab_size, out, err);
    if (ends_with(tokens_path, ".json"))
        return bp_tokens_load_json(tokens_path, out, err);
    return bp_tokens_load_bin(tokens_path, out, err);
}

int bp_calib_open(const bp_calib_spec *spec, bp_llama *llama, const char *model_hash,
                  int need_tokens, bp_calib **out, bp_error *err)
{
    *out = NULL;
    const bp_llama_config *cfg = bp_llama_get_config(llama);
    int rc = BP_OK;
    bp_progress *prog = NULL;
    bp_calib *c = calloc(1, sizeof *c);
    if (!c)
        return bp_error_set(err, BP_ENOMEM, "calibration: out of memory");
    c->ctx = spec->ctx > 0 ? spec->ctx : 128;
    if (c->ctx > cfg->max_position_embeddings) {
        rc = bp_error_set(err, BP_EINVAL, "--ctx %lld exceeds the model's max_position_embeddings %lld",
                          (long long)c->ctx, (long long)cfg->max_position_embeddings);
        goto fail;
    }
    int have_stats = spec->stats_path && bp__file_exists(spec->stats_path);
    if (spec->text_path || spec->tokens_path) {
        if ((rc = bp_calib_load_tokens(spec->text_path, spec->tokens_path, cfg->vocab_size, &c->tokens,
                                       err)) != BP_OK)
            goto fail;
    } else if (!have_stats) {
        rc = bp_error_set(err, BP_EINVAL,
                          spec->stats_path ? "stats file %s does not exist; give --text or --tokens to compute it"
                                           : "no calibration input: give --text, --tokens or --stats%s",
                          spec->stats_path ? spec->stats_path : "");
        goto fail;
    }
    if (need_tokens && !c->tokens) {
        rc = bp_error_set(err, BP_EINVAL,
                          "KL measurement needs calibration tokens (--text or --tokens), not only a stats file");
        goto fail;
    }

    if (have_stats) {
        if ((rc = bp_hessian_load(spec->stats_path, &c->hess, err)) != BP_OK)
            goto fail;
        const char *mh = bp_hessian_model_hash(c->hess);
        if (mh && model_hash && strcmp(mh, model_hash)) {
            rc = bp_error_set(err, BP_EMISMATCH, "%s was computed on a different model (model hash %s, this model %s)",
                              spec->stats_path, mh, model_hash);
            goto fail;
        }
        if (spec->ctx > 0 && bp_hessian_ctx(c->hess) != spec->ctx) {
            rc = bp_error_set(err, BP_EMISMATCH, "%s was computed with ctx %lld, but --ctx %lld was given",
                              spec->stats_path, (long long)bp_hessian_ctx(c->hess), (long long)spec->ctx);
            goto fail;
        }
        c->ctx = bp_hessian_ctx(c->hess);
        c->n_seq = bp_hessian_n_sequences(c->hess);
        if (c->tokens && bp_hessian_calib_hash(c->hess) &&
            strcmp(bp_hessian_calib_hash(c->hess), bp_tokens_hash(c->tokens))) {
            rc = bp_error_set(err, BP_EMISMATCH, "%s was computed from other calibration tokens than %s",
                              spec->stats_path, bp_tokens_source(c->tokens));
            goto fail;
        }
        bp_calib_make_id(bp_hessian_calib_hash(c->hess), c->ctx, c->n_seq, c->id);
        snprintf(c->source, sizeof c->source, "stats:%s ctx=%lld seqs=%lld", spec->stats_path,
                 (long long)c->ctx, (long long)c->n_seq);
    }
    if (c->tokens) {
        int64_t n = bp_tokens_count(c->tokens);
        int64_t kl_win = spec->kl_windows > 0 ? spec->kl_windows : 16;
        if (!have_stats) {
            int64_t fit = n / c->ctx;
            /* Keep at least a quarter of the stream for KL windows. */
            int64_t max_h = need_tokens ? (fit * 3) / 4 : fit;
            c->n_seq = spec->n_seq > 0 ? spec->n_seq : (max_h < 64 ? max_h : 64);
            if (c->n_seq < 1 || c->n_seq > max_h) {
                rc = bp_error_set(err, BP_EINVAL,
                                  "%s: %lld tokens hold %lld Hessian sequences of %lld tokens%s, but %lld were asked",
                                  bp_tokens_source(c->tokens), (long long)n, (long long)max_h,
                                  (long long)c->ctx, need_tokens ? " (leaving a quarter for KL)" : "",
                                  (long long)c->n_seq);
                goto fail;
            }
        }
        /* Held-out KL windows come after the Hessian sequences. */
        int64_t start = c->n_seq * c->ctx;
        int64_t rest = n - start;
        int64_t avail = rest > 1 ? bp_eval_n_windows(rest, c->ctx) : 0;
        if (avail > kl_win)
            avail = kl_win;
        if (need_tokens && avail < 1) {
            rc = bp_error_set(err, BP_EINVAL,
                              "%s: no tokens left for KL windows after %lld Hessian sequences of %lld",
                              bp_tokens_source(c->tokens), (long long)c->n_seq, (long long)c->ctx);
            goto fail;
        }
        if (avail >= 1) {
            char src[600];
            snprintf(src, sizeof src, "%s (held-out KL windows)", bp_tokens_source(c->tokens));
            if ((rc = bp_tokens_from_array(bp_tokens_data(c->tokens) + start, avail * c->ctx + 1, src,
                                           &c->kl_tokens, err)) != BP_OK)
                goto fail;
        }
        if (!have_stats) {
            bp_calib_make_id(bp_tokens_hash(c->tokens), c->ctx, c->n_seq, c->id);
            snprintf(c->source, sizeof c->source, "%s:%s ctx=%lld seqs=%lld",
                     spec->text_path ? "text" : "tokens", bp_tokens_source(c->tokens),
                     (long long)c->ctx, (long long)c->n_seq);
            bp_hessian_options o;
            bp_hessian_options_default(&o);
            o.mode = spec->diag_only ? BP_HESSIAN_DIAG : BP_HESSIAN_FULL;
            o.ctx = c->ctx;
            o.model_hash = model_hash;
            if ((rc = bp_hessian_new(cfg, &o, &c->hess, err)) != BP_OK)
                goto fail;
            prog = bp_progress_new("hessians", (uint64_t)c->n_seq, spec->quiet);
            for (int64_t s = 0; s < c->n_seq; s++) {
                if ((rc = bp_hessian_accumulate(c->hess, llama, c->tokens, s, 1, err)) != BP_OK)
                    goto fail;
                bp_progress_tick(prog, 1);
            }
            bp_progress_done(prog);
            if (spec->stats_path && (rc = bp_hessian_save(c->hess, spec->stats_path, 0, err)) != BP_OK)
                goto fail;
        }
    }
    bp_progress_destroy(&prog);
    *out = c;
    return BP_OK;
fail:
    bp_progress_destroy(&prog);
    bp_calib_destroy(&c);
    return rc;
}

void bp_calib_destroy(bp_calib **c)
{
    if (!c || !*c)
        return;
    bp_tokens_destroy(&(*c)->tokens);
    bp_tokens_destroy(&(*c)->kl_tokens);
    bp_hessian_destroy(&(*c)->hess);
    free(*c);
    *c = NULL;
}

const char *bp_calib_id(const bp_calib *c) { return c->id; }
const char *bp_calib_source(const bp_calib *c) { return c->source; }
const bp_hessian *bp_calib_hessian(const bp_calib *c) { return c->hess; }
const bp_tokens *bp_calib_kl_tokens(const bp_calib *c) { return c->kl_tokens; }
int64_t bp_calib_ctx(const bp_calib *c) { return c->ctx; }

static int slot_for(const bp_calib *c, const bp_llama_config *cfg, const char *weight,
                    int64_t cols, bp_error *err)
{
    int layer;
    bp_linear_input which;
    if (bp_llama_weight_input(cfg, weight, &layer, &which) != BP_OK)
        return bp_error_set(err, BP_ENOTFOUND, "tensor '%s' is not a linear layer weight of this model, "
                            "so calibration data gives it no Hessian", weight);
    int slot = bp_hessian_find(c->hess, layer, which);
    if (slot < 0)
        return bp_error_set(err, BP_ENOTFOUND, "the calibration statistics have no input Hessian for '%s'", weight);
    bp_hessian_slot_info info;
    if (bp_hessian_slot(c->hess, slot, &info, err) != BP_OK)
        return err ? err->code : BP_EINVAL;
    if (info.dim != cols)
        return bp_error_set(err, BP_EMISMATCH, "Hessian for '%s' is %lld wide, the tensor has %lld input channels",
                            weight, (long long)info.dim, (long long)cols);
    return slot;
}

int bp_calib_hessian_full(const bp_calib *c, const bp_llama_config *cfg, const char *weight,
                          int64_t cols, double **out, bp_error *err)
{
    *out = NULL;
    int slot = slot_for(c, cfg, weight, cols, err);
    if (slot < 0)
        return slot;
    if (bp_hessian_get_mode(c->hess) != BP_HESSIAN_FULL)
        return bp_error_set(err, BP_EUNSUPPORTED, "'%s': the calibration statistics are diagonal only", weight);
    double *h = malloc((size_t)cols * (size_t)cols * sizeof *h);
    if (!h)
        return bp_error_set(err, BP_ENOMEM, "'%s': out of memory for a %lld x %lld Hessian", weight,
                            (long long)cols, (long long)cols);
    int rc = bp_hessian_get_full(c->hess, slot, h, err);
    if (rc != BP_OK) {
        free(h);
        return rc;
    }
    *out = h;
    return BP_OK;
}

int bp_calib_hessian_diag(const bp_calib *c, const bp_llama_config *cfg, const char *weight,
                          int64_t cols, double **out, bp_error *err)
{
    *out = NULL;
    int slot = slot_for(c, cfg, weight, cols, err);
    if (slot < 0)
        return slot;
    double *d = malloc((size_t)cols * sizeof *d);
    if (!d)
        return bp_error_set(err, BP_ENOMEM, "'%s': out of memory", weight);
    int rc = bp_hessian_get_diag(c->hess, slot, d, err);
    if (rc != BP_OK) {
        free(d);
        return rc;
    }
    *out = d;
    return BP_OK;
}
