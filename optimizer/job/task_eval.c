/* Two task kinds on the same per-process cache: "evaluate", the real loss
 * of one candidate plan (mean KL(full precision || quantized) and NLL over
 * a range of windows of the calibration tokens), and "measure_kv", the
 * KV-cache error terms of one layer (measure_kv.h). The evolutionary search
 * (include/bitplan/evo.h) asks for many evaluations per generation, on the
 * same model and windows, and the KV stage for one task per layer on the
 * held-out windows, so the worker keeps the model, the tokens, the
 * calibration statistics and the full-precision reference distributions
 * between tasks.
 *
 * Params of both (a msgpack map; every field is validated, it comes from
 * the network):
 *   model         str, required    model directory
 *   model_hash    str, optional    evaluate: checked against the plan's and
 *                                  the stats'; measure_kv: against the
 *                                  model's content hash
 *   text | tokens str, exactly one calibration token source (as measure)
 *   tokens_hash   str, optional    checked against the loaded tokens
 *   ctx           int, required    tokens per window, 1..max positions
 *   first_window  int, default 0   first window of the stream (window k
 *                                  is tokens [k*ctx, k*ctx + ctx])
 *   n_windows     int, required    >= 1
 *
 * evaluate also takes
 *   stats         str              Hessian stats file; required when the
 *                                  plan has GPTQ tensors
 *   calib_id      str, optional    checked against the stats' id
 * Binary input "plan" (u8): the plan JSON text.
 * Result: {"kl": f64, "nll": f64, "tokens": int, "nll_fx": int,
 *          "kl_fx": int} — the means and the exact fixed-point sums
 *          (bp_eval_sums), so results over split window ranges merge
 *          exactly.
 *
 * measure_kv also takes
 *   layer         int, required    0..n_layers-1
 *   formats       [str], required  1..4 distinct of "kv_f16",
 *                                  "kv_fp8_e4m3", "kv_int8", "kv_int4"
 * Result: {"dkl": [f64 per format, in order]} — the values
 * bp__job_measure_kv_rows gives on a reference over the same windows. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/evaluate.h"
#include "bitplan/kv_quant.h"
#include "bitplan/task.h"
#include "measure_kv.h"
#include "tasks_internal.h"

/* References are kept in pieces of at most this many bytes (and 64
 * windows), and in total up to EVAL_CACHE_BYTES; beyond that a piece is
 * computed, used and freed. */
#define EVAL_PIECE_BYTES ((uint64_t)256 << 20)
#define EVAL_PIECE_WINDOWS 64
#define EVAL_CACHE_BYTES ((uint64_t)1 << 30)
#define EVAL_PLAN_MAX_BYTES ((size_t)64 << 20)
/* Dequantized tensors kept for the next candidates of a search. */
#define EVAL_DEQ_CACHE_BYTES ((uint64_t)2 << 30)
/* Forward passes of the fp8 calibration cover about this many tokens. */
#define KV_CALIB_CHUNK_TOKENS 4096

typedef struct ref_piece {
    int64_t first, n;
    bp_eval_reference *ref;
} ref_piece;

/* One worker runs one task at a time, so a single static cache suffices. */
static struct {
    char *model_key;        /* dir + "\n" + model hash */
    bp_model *model;
    char content_hash[BP_HASH_HEX_LEN + 1]; /* "" until a measure_kv task needs it */
    bp_llama *fp;           /* full precision: the references */
    bp_llama *q;            /* the candidate plan's weights, reset after each
                               task; measure_kv quantizes its KV (reset too) */
    char *tokens_key;       /* text or tokens path + "\n" + expected hash */
    bp_tokens *tokens;
    char *stats_path;
    bp_calib *calib;
    int64_t ref_ctx;        /* the pieces below are for (model, tokens, ref_ctx) */
    ref_piece *pieces;      /* sorted by first, disjoint */
    size_t n_pieces, cap_pieces;
    uint64_t ref_bytes;
    /* q's fp8 KV scales were calibrated on windows [fp8_first, fp8_first +
     * fp8_n) of (model, tokens, ref_ctx); fp8_n == 0: on nothing known. */
    int64_t fp8_first, fp8_n;
    bp_deq_cache *deq;      /* dequantized tensors of (model, calib) */
} g_eval;

static void drop_refs(void)
{
    for (size_t i = 0; i < g_eval.n_pieces; i++)
        bp_eval_reference_destroy(&g_eval.pieces[i].ref);
    free(g_eval.pieces);
    g_eval.pieces = NULL;
    g_eval.n_pieces = g_eval.cap_pieces = 0;
    g_eval.ref_bytes = 0;
    g_eval.ref_ctx = 0;
    g_eval.fp8_first = g_eval.fp8_n = 0;
}

static void drop_calib(void)
{
    bp_calib_destroy(&g_eval.calib);
    free(g_eval.stats_path);
    g_eval.stats_path = NULL;
}

static void drop_tokens(void)
{
    drop_refs();
    bp_tokens_destroy(&g_eval.tokens);
    free(g_eval.tokens_key);
    g_eval.tokens_key = NULL;
}

static void drop_all(void)
{
    drop_tokens();
    drop_calib();
    bp_deq_cache_destroy(&g_eval.deq);
    bp_llama_destroy(&g_eval.q);
    bp_llama_destroy(&g_eval.fp);
    bp_model_destroy(&g_eval.model);
    free(g_eval.model_key);
    g_eval.model_key = NULL;
    g_eval.content_hash[0] = '\0';
}

static char *join_key(const char *a, const char *b)
{
    size_t la = strlen(a), lb = b ? strlen(b) : 0;
    char *k = malloc(la + lb + 2);
    if (k) {
        memcpy(k, a, la);
        k[la] = '\n';
        memcpy(k + la + 1, b ? b : "", lb);
        k[la + 1 + lb] = '\0';
    }
    return k;
}

/* ---- params ---- */

typedef struct eval_params {
    const char *kind;       /* the task kind, for messages */
    char *model, *model_hash, *text, *tokens, *tokens_hash, *stats, *calib_id;
    int64_t ctx, first_window, n_windows;
    int64_t layer;          /* measure_kv */
    bp_kv_format formats[BP_KV_FORMAT_COUNT];
    size_t n_formats;
} eval_params;

static void params_free(eval_params *p)
{
    free(p->model);
    free(p->model_hash);
    free(p->text);
    free(p->tokens);
    free(p->tokens_hash);
    free(p->stats);
    free(p->calib_id);
}

static int get_int(const eval_params *p, const msgpack_object *map, const char *key, int required, int64_t def,
                   int64_t lo, int64_t hi, int64_t *out, bp_error *err)
{
    int rc = bp_mp_get_i64(map, key, out, err);
    if (rc == BP_ENOTFOUND) {
        bp_error_clear(err);
        if (required)
            return bp_error_set(err, BP_EINVAL, "%s task: \"%s\" is required", p->kind, key);
        *out = def;
        return BP_OK;
    }
    if (rc != BP_OK)
        return rc;
    if (*out < lo || *out > hi)
        return bp_error_set(err, BP_EINVAL, "%s task: \"%s\" = %lld is outside %lld..%lld", p->kind, key,
                            (long long)*out, (long long)lo, (long long)hi);
    return BP_OK;
}

/* The fields both kinds take: model, tokens and the window range. */
static int read_common_params(const msgpack_object *m, const char *kind, eval_params *p, bp_error *err)
{
    memset(p, 0, sizeof *p);
    p->kind = kind;
    if (!m || m->type != MSGPACK_OBJECT_MAP)
        return bp_error_set(err, BP_EINVAL, "%s task: params are not a map", kind);
    p->model = bp__mp_strdup(m, "model", 1, err);
    if (!p->model)
        return err ? err->code : BP_EINVAL;
    int rc;
    if ((rc = bp__mp_opt_strdup(m, "model_hash", &p->model_hash, err)) ||
        (rc = bp__mp_opt_strdup(m, "text", &p->text, err)) || (rc = bp__mp_opt_strdup(m, "tokens", &p->tokens, err)) ||
        (rc = bp__mp_opt_strdup(m, "tokens_hash", &p->tokens_hash, err)))
        return rc;
    if (!p->text == !p->tokens)
        return bp_error_set(err, BP_EINVAL, "%s task: give exactly one of \"text\" and \"tokens\"", kind);
    if ((rc = get_int(p, m, "ctx", 1, 0, 1, 1 << 24, &p->ctx, err)) ||
        (rc = get_int(p, m, "first_window", 0, 0, 0, (int64_t)1 << 40, &p->first_window, err)) ||
        (rc = get_int(p, m, "n_windows", 1, 0, 1, (int64_t)1 << 30, &p->n_windows, err)))
        return rc;
    return BP_OK;
}

static int read_eval_params(const msgpack_object *m, eval_params *p, bp_error *err)
{
    int rc = read_common_params(m, "evaluate", p, err);
    if (rc == BP_OK && (rc = bp__mp_opt_strdup(m, "stats", &p->stats, err)) == BP_OK)
        rc = bp__mp_opt_strdup(m, "calib_id", &p->calib_id, err);
    return rc;
}

/* "formats": 1..4 distinct KV format names, "kv_" + bp_kv_format_name. */
static int read_kv_formats(const msgpack_object *m, eval_params *p, bp_error *err)
{
    const msgpack_object *items = NULL;
    size_t n = 0;
    int rc = bp_mp_get_array(m, "formats", &items, &n, err);
    if (rc == BP_ENOTFOUND)
        return bp_error_set(err, BP_EINVAL, "%s task: \"formats\" is required", p->kind);
    if (rc != BP_OK)
        return rc;
    if (n < 1 || n > BP_KV_FORMAT_COUNT)
        return bp_error_set(err, BP_EINVAL, "%s task: \"formats\" must list 1..%d KV formats, not %zu", p->kind,
                            BP_KV_FORMAT_COUNT, n);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *o = &items[i];
        bp_kv_format f = BP_KV_FORMAT_COUNT;
        for (int k = 0; o->type == MSGPACK_OBJECT_STR && k < BP_KV_FORMAT_COUNT; k++) {
            const char *name = bp_kv_format_name((bp_kv_format)k);
            size_t len = strlen(name);
            if (o->via.str.size == len + 3 && !memcmp(o->via.str.ptr, "kv_", 3) &&
                !memcmp(o->via.str.ptr + 3, name, len))
                f = (bp_kv_format)k;
        }
        if (f == BP_KV_FORMAT_COUNT)
            return bp_error_set(err, BP_EINVAL,
                                "%s task: formats[%zu] is not a KV format (kv_f16, kv_fp8_e4m3, kv_int8, kv_int4)",
                                p->kind, i);
        for (size_t j = 0; j < i; j++)
            if (p->formats[j] == f)
                return bp_error_set(err, BP_EINVAL, "%s task: formats[%zu] repeats kv_%s", p->kind, i,
                                    bp_kv_format_name(f));
        p->formats[i] = f;
    }
    p->n_formats = n;
    return BP_OK;
}

static int read_kv_params(const msgpack_object *m, eval_params *p, bp_error *err)
{
    int rc = read_common_params(m, "measure_kv", p, err);
    if (rc == BP_OK)
        rc = get_int(p, m, "layer", 1, 0, 0, (int64_t)1 << 20, &p->layer, err);
    if (rc == BP_OK)
        rc = read_kv_formats(m, p, err);
    return rc;
}

/* The "plan" binary input as a parsed plan. */
static int read_plan(const bp_task_ctx *ctx, bp_plan **out, bp_error *err)
{
    const bp_bin_view *v = NULL;
    for (size_t i = 0; i < ctx->n_bins; i++)
        if (ctx->bins[i].name.len == 4 && !memcmp(ctx->bins[i].name.ptr, "plan", 4))
            v = &ctx->bins[i];
    if (!v)
        return bp_error_set(err, BP_EINVAL, "evaluate task: the binary input \"plan\" is missing");
    if (v->dtype != BP_WIRE_U8 || v->size != v->count || v->size == 0 || v->size > EVAL_PLAN_MAX_BYTES ||
        memchr(v->data, 0, v->size))
        return bp_error_set(err, BP_EINVAL,
                            "evaluate task: \"plan\" must be 1..%zu bytes of JSON text (u8, no NUL bytes)",
                            EVAL_PLAN_MAX_BYTES);
    char *text = malloc(v->size + 1);
    if (!text)
        return bp_error_set(err, BP_ENOMEM, "evaluate task: out of memory for the plan");
    memcpy(text, v->data, v->size);
    text[v->size] = '\0';
    int rc = bp_plan_from_string(text, "evaluate task plan", out, err);
    free(text);
    return rc;
}

/* ---- cached inputs ---- */

static int use_model(const eval_params *p, bp_error *err)
{
    char *key = join_key(p->model, p->model_hash);
    if (!key)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    if (g_eval.model_key && !strcmp(g_eval.model_key, key)) {
        free(key);
        return BP_OK;
    }
    drop_all();
    int rc;
    if ((rc = bp_model_open(p->model, &g_eval.model, err)) || (rc = bp_llama_new(g_eval.model, &g_eval.fp, err)) ||
        (rc = bp_llama_new(g_eval.model, &g_eval.q, err))) {
        drop_all();
        free(key);
        return rc;
    }
    g_eval.model_key = key;
    return BP_OK;
}

static int use_tokens(const eval_params *p, bp_error *err)
{
    char *key = join_key(p->text ? p->text : p->tokens, p->tokens_hash);
    if (!key)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    if (g_eval.tokens_key && !strcmp(g_eval.tokens_key, key)) {
        free(key);
        return BP_OK;
    }
    drop_tokens();
    int64_t vocab = bp_llama_get_config(g_eval.fp)->vocab_size;
    int rc = bp_calib_load_tokens(p->text, p->tokens, vocab, &g_eval.tokens, err);
    if (rc == BP_OK && p->tokens_hash && strcmp(p->tokens_hash, bp_tokens_hash(g_eval.tokens)))
        rc = bp_error_set(err, BP_EMISMATCH, "%s: token hash %s, the job expects %s",
                          bp_tokens_source(g_eval.tokens), bp_tokens_hash(g_eval.tokens), p->tokens_hash);
    if (rc != BP_OK) {
        drop_tokens();
        free(key);
        return rc;
    }
    g_eval.tokens_key = key;
    return BP_OK;
}

static int use_calib(const eval_params *p, bp_error *err)
{
    if (!p->stats)
        return bp_error_set(err, BP_EINVAL, "evaluate task: the plan has GPTQ tensors, which need \"stats\"");
    if (!g_eval.stats_path || strcmp(g_eval.stats_path, p->stats)) {
        drop_calib();
        bp_calib_spec cs;
        bp_calib_spec_default(&cs);
        cs.stats_path = p->stats; /* no tokens given: never computes Hessians here */
        cs.quiet = 1;
        int rc = bp_calib_open(&cs, g_eval.fp, p->model_hash && p->model_hash[0] ? p->model_hash : NULL, 0,
                               &g_eval.calib, err);
        if (rc != BP_OK)
            return rc;
        g_eval.stats_path = strdup(p->stats);
        if (!g_eval.stats_path) {
            drop_calib();
            return bp_error_set(err, BP_ENOMEM, "out of memory");
        }
    }
    if (p->calib_id && strcmp(p->calib_id, bp_calib_id(g_eval.calib)))
        return bp_error_set(err, BP_EMISMATCH, "%s: calibration id %s, the job expects %s", p->stats,
                            bp_calib_id(g_eval.calib), p->calib_id);
    return BP_OK;
}

/* The checks bp_evaluate_apply_plan leaves to its callers: a plan from the
 * network must match the model tensor by tensor before any buffer is sized
 * from it. */
static int check_plan(const bp_plan *plan, const eval_params *p, int *needs_calib, bp_error *err)
{
    bp_plan_info info;
    bp_plan_get_info(plan, &info);
    if (p->model_hash && p->model_hash[0] && info.model_hash && strcmp(info.model_hash, p->model_hash))
        return bp_error_set(err, BP_EMISMATCH, "evaluate task: the plan is for model %s, the job's model is %s",
                            info.model_hash, p->model_hash);
    *needs_calib = 0;
    for (size_t i = 0; i < bp_plan_tensor_count(plan); i++) {
        bp_plan_tensor pt;
        bp_plan_tensor_get(plan, i, &pt);
        long mi = bp_model_find(g_eval.model, pt.name);
        if (mi < 0)
            return bp_error_set(err, BP_EMISMATCH, "evaluate task: plan tensor '%s' is not in %s", pt.name,
                                p->model);
        const bp_tensor_info *t = bp_model_tensor(g_eval.model, (size_t)mi);
        if (t->ndim != 2 || t->shape[0] != pt.rows || t->shape[1] != pt.cols)
            return bp_error_set(err, BP_EMISMATCH, "evaluate task: plan tensor '%s' is %lldx%lld, the model's is not",
                                pt.name, (long long)pt.rows, (long long)pt.cols);
        if (bp_method_is_gptq(pt.method))
            *needs_calib = 1;
    }
    return BP_OK;
}

/* ---- reference pieces ---- */

static int64_t piece_windows(void)
{
    const bp_llama_config *cfg = bp_llama_get_config(g_eval.fp);
    uint64_t per = bp_eval_reference_bytes(cfg->vocab_size, g_eval.ref_ctx, 1, 0);
    uint64_t n = per ? EVAL_PIECE_BYTES / per : EVAL_PIECE_WINDOWS;
    if (n < 1)
        n = 1;
    return n < EVAL_PIECE_WINDOWS ? (int64_t)n : EVAL_PIECE_WINDOWS;
}

/* Keep a computed piece when the cache has room; returns 1 if kept. */
static int keep_piece(int64_t first, int64_t n, bp_eval_reference *ref)
{
    const bp_llama_config *cfg = bp_llama_get_config(g_eval.fp);
    uint64_t bytes = bp_eval_reference_bytes(cfg->vocab_size, g_eval.ref_ctx, n, 0);
    if (g_eval.ref_bytes + bytes > EVAL_CACHE_BYTES)
        return 0;
    if (g_eval.n_pieces == g_eval.cap_pieces) {
        size_t cap = g_eval.cap_pieces ? 2 * g_eval.cap_pieces : 16;
        ref_piece *np = realloc(g_eval.pieces, cap * sizeof *np);
        if (!np)
            return 0;
        g_eval.pieces = np;
        g_eval.cap_pieces = cap;
    }
    size_t at = g_eval.n_pieces;
    while (at > 0 && g_eval.pieces[at - 1].first > first) {
        g_eval.pieces[at] = g_eval.pieces[at - 1];
        at--;
    }
    g_eval.pieces[at] = (ref_piece){first, n, ref};
    g_eval.n_pieces++;
    g_eval.ref_bytes += bytes;
    return 1;
}

/* Called on every span of a window range with the reference covering it. */
typedef int (*span_fn)(void *ctx, const bp_eval_reference *ref, int64_t first, int64_t n, bp_error *err);

/* Visit windows [first, first + n) in spans, reusing cached pieces and
 * computing the gaps. Callers merge exact fixed-point sums, so how the range
 * is cut does not change their results. */
static int for_each_span(int64_t first, int64_t n, span_fn fn, void *fn_ctx, _Atomic uint64_t *progress,
                         bp_error *err)
{
    const uint32_t *tok = bp_tokens_data(g_eval.tokens);
    int64_t ntok = bp_tokens_count(g_eval.tokens), ctx = g_eval.ref_ctx, end = first + n;
    int64_t w = first;
    while (w < end) {
        const ref_piece *hit = NULL;
        int64_t next_cached = end;
        for (size_t i = 0; i < g_eval.n_pieces; i++) {
            const ref_piece *pc = &g_eval.pieces[i];
            if (pc->first <= w && w < pc->first + pc->n)
                hit = pc;
            else if (pc->first > w && pc->first < next_cached)
                next_cached = pc->first;
        }
        bp_eval_reference *own = NULL;
        const bp_eval_reference *ref;
        int64_t k;
        if (hit) {
            ref = hit->ref;
            k = hit->first + hit->n - w;
        } else {
            k = next_cached - w;
            int64_t pw = piece_windows();
            if (k > pw)
                k = pw;
            int rc = bp_eval_reference_new(g_eval.fp, tok, ntok, ctx, w, k, 0, &own, err);
            if (rc != BP_OK)
                return rc;
            ref = own;
            if (keep_piece(w, k, own))
                own = NULL;
        }
        if (k > end - w)
            k = end - w;
        int rc = fn(fn_ctx, ref, w, k, err);
        bp_eval_reference_destroy(&own);
        if (rc != BP_OK)
            return rc;
        atomic_fetch_add(progress, 1);
        w += k;
    }
    return BP_OK;
}

/* ---- inputs both kinds share ---- */

/* Model, tokens, and a window range that the tokens hold at ctx. */
static int open_inputs(const eval_params *p, bp_error *err)
{
    int rc;
    if ((rc = use_model(p, err)) || (rc = use_tokens(p, err)))
        return rc;
    const bp_llama_config *cfg = bp_llama_get_config(g_eval.fp);
    if (p->ctx > cfg->max_position_embeddings)
        return bp_error_set(err, BP_EINVAL, "%s task: ctx %lld exceeds the model's max_position_embeddings %lld",
                            p->kind, (long long)p->ctx, (long long)cfg->max_position_embeddings);
    int64_t avail = bp_eval_n_windows(bp_tokens_count(g_eval.tokens), p->ctx);
    if (p->first_window > avail || p->n_windows > avail - p->first_window)
        return bp_error_set(err, BP_EINVAL, "%s task: windows [%lld, %lld) are outside the %lld windows of "
                            "ctx %lld in %s", p->kind, (long long)p->first_window,
                            (long long)(p->first_window + p->n_windows), (long long)avail, (long long)p->ctx,
                            bp_tokens_source(g_eval.tokens));
    if (g_eval.ref_ctx != p->ctx) {
        drop_refs();
        g_eval.ref_ctx = p->ctx;
    }
    return BP_OK;
}

/* ---- evaluate ---- */

typedef struct compare_ctx {
    bp_eval_sums *acc;
} compare_ctx;

static int compare_span(void *c, const bp_eval_reference *ref, int64_t first, int64_t n, bp_error *err)
{
    compare_ctx *cc = c;
    bp_eval_sums s;
    int rc = bp_eval_compare(g_eval.q, ref, first, n, &s, err);
    return rc == BP_OK ? bp_eval_sums_merge(cc->acc, &s, err) : rc;
}

static int calibrate_fp8(const eval_params *p, _Atomic uint64_t *progress, bp_error *err);

static int run_eval(bp_task_ctx *ctx, const eval_params *p, bp_plan *plan, bp_eval_sums *sums, bp_error *err)
{
    int rc;
    if ((rc = open_inputs(p, err)) != BP_OK)
        return rc;
    int needs_calib = 0;
    if ((rc = check_plan(plan, p, &needs_calib, err)) != BP_OK)
        return rc;
    if (needs_calib && (rc = use_calib(p, err)) != BP_OK)
        return rc;
    /* Candidates are scored with the exact KV path whatever ran before,
     * then with the plan's KV-cache precision. fp8 scales are calibrated
     * here, before the plan's weights are set, so they never depend on
     * which candidate a worker happened to evaluate first. */
    bp_llama_reset_kv_formats(g_eval.q);
    bp_plan_kv_cache kv;
    int has_kv = bp_plan_get_kv_cache(plan, &kv) == 1;
    for (size_t i = 0; has_kv && i < kv.n_layers; i++)
        if (kv.layers[i].format == BP_KV_FP8_E4M3) {
            if ((rc = calibrate_fp8(p, ctx->progress, err)) != BP_OK)
                return rc;
            break;
        }
    for (size_t i = 0; has_kv && i < kv.n_layers; i++)
        if ((rc = bp_llama_set_kv_format(g_eval.q, kv.layers[i].layer, kv.layers[i].format, err)) != BP_OK) {
            bp_llama_reset_kv_formats(g_eval.q);
            return rc;
        }
    if (!g_eval.deq && !(g_eval.deq = bp_deq_cache_new(EVAL_DEQ_CACHE_BYTES)))
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    rc = bp_evaluate_apply_plan_cached(g_eval.q, g_eval.model, plan, needs_calib ? g_eval.calib : NULL, g_eval.deq,
                                       err);
    atomic_fetch_add(ctx->progress, 1);
    compare_ctx cc = {sums};
    if (rc == BP_OK)
        rc = for_each_span(p->first_window, p->n_windows, compare_span, &cc, ctx->progress, err);
    bp_llama_reset_all_weights(g_eval.q);
    bp_llama_reset_kv_formats(g_eval.q);
    return rc;
}

static int task_evaluate(bp_task_ctx *ctx, bp_error *err)
{
    eval_params p;
    bp_plan *plan = NULL;
    bp_eval_sums sums = {0, 0, 0};
    int rc = read_eval_params(ctx->params, &p, err);
    if (rc == BP_OK)
        rc = read_plan(ctx, &plan, err);
    if (rc == BP_OK)
        rc = run_eval(ctx, &p, plan, &sums, err);
    if (rc == BP_OK && sums.count <= 0)
        rc = bp_error_set(err, BP_EINVAL, "evaluate task: no tokens were scored");
    if (rc == BP_OK) {
        msgpack_pack_map(ctx->result, 5);
        bp__pack_key(ctx->result, "kl");
        msgpack_pack_double(ctx->result, bp_eval_sums_mean_kl(&sums));
        bp__pack_key(ctx->result, "nll");
        msgpack_pack_double(ctx->result, bp_eval_sums_mean_nll(&sums));
        bp__pack_key(ctx->result, "tokens");
        msgpack_pack_int64(ctx->result, sums.count);
        bp__pack_key(ctx->result, "nll_fx");
        msgpack_pack_int64(ctx->result, sums.nll_fx);
        bp__pack_key(ctx->result, "kl_fx");
        msgpack_pack_int64(ctx->result, sums.kl_fx);
    }
    bp_plan_destroy(&plan);
    params_free(&p);
    return rc;
}

/* ---- measure_kv ---- */

/* A KV error measured on another model than the job's would silently
 * mislead the solver, so a given hash is checked against the model's
 * content (hashed once per process). */
static int check_model_hash(const eval_params *p, bp_error *err)
{
    if (!p->model_hash || !p->model_hash[0])
        return BP_OK;
    if (!g_eval.content_hash[0]) {
        int rc = bp_model_content_hash(g_eval.model, g_eval.content_hash, err);
        if (rc != BP_OK) {
            g_eval.content_hash[0] = '\0';
            return rc;
        }
    }
    if (strcmp(g_eval.content_hash, p->model_hash))
        return bp_error_set(err, BP_EMISMATCH, "%s: model hash %s, the job expects %s", p->model,
                            g_eval.content_hash, p->model_hash);
    return BP_OK;
}

typedef struct calib_drive {
    int64_t first, n;
    _Atomic uint64_t *progress;
} calib_drive;

/* The windows' model inputs are contiguous runs of ctx tokens, so they run
 * as sequences of forward passes of bounded size; a sequence's K/V do not
 * depend on its batch (bp_llama_forward_batch), so the maxima are those of
 * the reference's windows. */
static int drive_windows(bp_llama *l, void *c, bp_error *err)
{
    const calib_drive *d = c;
    const uint32_t *tok = bp_tokens_data(g_eval.tokens);
    int64_t ctx = g_eval.ref_ctx, per = KV_CALIB_CHUNK_TOKENS / ctx;
    if (per < 1)
        per = 1;
    for (int64_t w = d->first; w < d->first + d->n; w += per) {
        int64_t k = d->first + d->n - w < per ? d->first + d->n - w : per;
        int rc = bp_llama_forward_batch(l, tok + w * ctx, k, ctx, NULL, NULL, err);
        if (rc != BP_OK)
            return rc;
        atomic_fetch_add(d->progress, 1);
    }
    return BP_OK;
}

/* q's fp8 scales from this task's windows, unless they already are. */
static int calibrate_fp8(const eval_params *p, _Atomic uint64_t *progress, bp_error *err)
{
    if (g_eval.fp8_n == p->n_windows && g_eval.fp8_first == p->first_window)
        return BP_OK;
    g_eval.fp8_first = g_eval.fp8_n = 0;
    calib_drive d = {p->first_window, p->n_windows, progress};
    int rc = bp__kv_fp8_calibrate(g_eval.q, drive_windows, &d, err);
    if (rc != BP_OK) {
        bp_error_prefix(err, "measure_kv task");
        return rc;
    }
    g_eval.fp8_first = p->first_window;
    g_eval.fp8_n = p->n_windows;
    return BP_OK;
}

typedef struct kv_span_ctx {
    const eval_params *p;
    bp_eval_sums *sums;
    _Atomic uint64_t *progress;
} kv_span_ctx;

static int kv_span(void *c, const bp_eval_reference *ref, int64_t first, int64_t n, bp_error *err)
{
    kv_span_ctx *k = c;
    return bp__kv_measure_span(g_eval.q, ref, first, n, k->p->layer, k->p->formats, k->p->n_formats, k->sums,
                               k->progress, err);
}

static int run_kv(bp_task_ctx *ctx, const eval_params *p, double *dkl, bp_error *err)
{
    int rc;
    if ((rc = open_inputs(p, err)) != BP_OK || (rc = check_model_hash(p, err)) != BP_OK)
        return rc;
    int64_t n_layers = bp_llama_get_config(g_eval.q)->n_layers;
    if (p->layer >= n_layers)
        return bp_error_set(err, BP_EINVAL, "measure_kv task: layer %lld is outside 0..%lld of %s",
                            (long long)p->layer, (long long)(n_layers - 1), p->model);
    for (size_t i = 0; i < p->n_formats; i++)
        if (p->formats[i] == BP_KV_FP8_E4M3 && (rc = calibrate_fp8(p, ctx->progress, err)) != BP_OK)
            return rc;
    bp_eval_sums sums[BP_KV_FORMAT_COUNT];
    memset(sums, 0, sizeof sums);
    kv_span_ctx kc = {p, sums, ctx->progress};
    rc = for_each_span(p->first_window, p->n_windows, kv_span, &kc, ctx->progress, err);
    bp_llama_reset_kv_formats(g_eval.q);
    for (size_t i = 0; rc == BP_OK && i < p->n_formats; i++)
        rc = bp__kv_dkl(&sums[i], &dkl[i], err);
    return rc;
}

static int task_measure_kv(bp_task_ctx *ctx, bp_error *err)
{
    eval_params p;
    double dkl[BP_KV_FORMAT_COUNT];
    int rc = read_kv_params(ctx->params, &p, err);
    if (rc == BP_OK)
        rc = run_kv(ctx, &p, dkl, err);
    if (rc == BP_OK) {
        msgpack_pack_map(ctx->result, 1);
        bp__pack_key(ctx->result, "dkl");
        msgpack_pack_array(ctx->result, p.n_formats);
        for (size_t i = 0; i < p.n_formats; i++)
            msgpack_pack_double(ctx->result, dkl[i]);
    }
    params_free(&p);
    return rc;
}

void bp__tasks_register_eval(void)
{
    bp_task_register("evaluate", task_evaluate);
    bp_task_register("measure_kv", task_measure_kv);
}
