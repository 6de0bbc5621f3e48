/* The fp32 Llama forward pass, weight cache, weight overrides and the
 * per-layer KV-cache precision. */
#include "bitplan/llama.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitplan/kv_quant.h"
#include "calib_internal.h"

/* Per-block tensor slots, in this order. */
enum {
    L_IN_NORM = 0,
    L_Q,
    L_K,
    L_V,
    L_O,
    L_POST_NORM,
    L_GATE,
    L_UP,
    L_DOWN,
    L_QB,
    L_KB,
    L_VB,
    L_N
};

static const char *const layer_suffix[L_N] = {
    "input_layernorm.weight",  "self_attn.q_proj.weight",
    "self_attn.k_proj.weight", "self_attn.v_proj.weight",
    "self_attn.o_proj.weight", "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",    "mlp.up_proj.weight",
    "mlp.down_proj.weight",    "self_attn.q_proj.bias",
    "self_attn.k_proj.bias",   "self_attn.v_proj.bias",
};

typedef struct wslot {
    char *name;                /* owned */
    int present;               /* the architecture has this tensor */
    const bp_tensor_info *t;   /* stored tensor; NULL for config-only models */
    int64_t rows, cols;        /* matrix view; 1 x n for 1-D tensors */
    float *cache;              /* converted weights (owned) or NULL */
    float *own;                /* owned override copy or NULL */
    const float *ovr;          /* active override (own or borrowed) or NULL */
} wslot;

struct bp_llama {
    bp_llama_config cfg;
    const bp_model *model;     /* borrowed; NULL for config-only models */
    wslot *slots;
    size_t n_slots;
    uint64_t cache_limit;      /* bytes */
    uint64_t cache_used;       /* bytes */
    float *scratch;            /* conversion target beyond the cache limit */
    size_t scratch_n;          /* floats */
    float *inv_freq;           /* head_dim/2 */
    bp_kv_format *kv_fmt;      /* n_layers; BP_KV_F16 = exact fp32 K/V */
    float *kv_scale;           /* 2 * n_layers: fp8 K, V scale; 0 = unset */
    int kv_observe;            /* 1: forward passes update kv_absmax */
    float *kv_absmax;          /* 2 * n_layers: K, V absolute maxima */
};

#define NO_SLOT ((size_t)-1)

static size_t slot_embed(void) { return 0; }
static size_t slot_layer(const bp_llama *l, int64_t layer, int part)
{
    (void)l;
    return 1 + (size_t)layer * L_N + (size_t)part;
}
static size_t slot_norm(const bp_llama *l) { return 1 + (size_t)l->cfg.n_layers * L_N; }
static size_t slot_head(const bp_llama *l)
{
    return l->cfg.tie_word_embeddings ? slot_embed() : slot_norm(l) + 1;
}

static void slot_free(wslot *s)
{
    free(s->name);
    free(s->cache);
    free(s->own);
}

void bp_llama_destroy(bp_llama **pl)
{
    if (!pl || !*pl)
        return;
    bp_llama *l = *pl;
    for (size_t i = 0; l->slots && i < l->n_slots; i++)
        slot_free(&l->slots[i]);
    free(l->slots);
    free(l->scratch);
    free(l->inv_freq);
    free(l->kv_fmt);
    free(l->kv_scale);
    free(l->kv_absmax);
    free(l);
    *pl = NULL;
}

static int set_slot(bp_llama *l, size_t i, const char *name, int present,
                    int64_t rows, int64_t cols, bp_error *err)
{
    wslot *s = &l->slots[i];
    s->name = strdup(name);
    if (!s->name)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    s->present = present;
    s->rows = rows;
    s->cols = cols;
    if (present && l->model) {
        long k = bp_model_find(l->model, name);
        s->t = k >= 0 ? bp_model_tensor(l->model, (size_t)k) : NULL;
        if (!s->t)
            return bp_error_set(err, BP_ENOTFOUND, "%s: missing tensor '%s'",
                                bp_model_dir(l->model), name);
    }
    return BP_OK;
}

static int llama_init(const bp_llama_config *cfg, const bp_model *m, bp_llama **out,
                      bp_error *err)
{
    int rc = BP_OK;
    bp_llama *l = calloc(1, sizeof *l);
    if (!l)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    l->cfg = *cfg;
    l->model = m;
    /* Default: half the physical memory, so a model too large to keep in
     * fp32 degrades to converting on use instead of exhausting memory. */
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    l->cache_limit = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page / 2 : UINT64_MAX;
    l->n_slots = 1 + (size_t)cfg->n_layers * L_N + 2;
    l->slots = calloc(l->n_slots, sizeof *l->slots);
    l->inv_freq = malloc(sizeof(float) * (size_t)(cfg->head_dim / 2));
    l->kv_fmt = calloc((size_t)cfg->n_layers, sizeof *l->kv_fmt);
    l->kv_scale = calloc(2 * (size_t)cfg->n_layers, sizeof *l->kv_scale);
    l->kv_absmax = calloc(2 * (size_t)cfg->n_layers, sizeof *l->kv_absmax);
    if (!l->slots || !l->inv_freq || !l->kv_fmt || !l->kv_scale || !l->kv_absmax) {
        rc = bp_error_set(err, BP_ENOMEM, "out of memory");
        goto out;
    }
    bp_llama_rope_inv_freq(cfg, l->inv_freq);

    const int64_t H = cfg->hidden_size, FF = cfg->intermediate_size;
    const int64_t QD = cfg->n_heads * cfg->head_dim, KD = cfg->n_kv_heads * cfg->head_dim;
    const int64_t shape[L_N][2] = {
        {1, H}, {QD, H}, {KD, H}, {KD, H}, {H, QD}, {1, H},
        {FF, H}, {FF, H},  {H, FF},  {1, QD}, {1, KD}, {1, KD},
    };
    char name[256];
    if ((rc = set_slot(l, slot_embed(), "model.embed_tokens.weight", 1, cfg->vocab_size,
                       H, err)) < 0)
        goto out;
    for (int64_t layer = 0; layer < cfg->n_layers; layer++) {
        for (int p = 0; p < L_N; p++) {
            snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)layer,
                     layer_suffix[p]);
            int present = p < L_QB || cfg->qkv_bias;
            if ((rc = set_slot(l, slot_layer(l, layer, p), name, present, shape[p][0],
                               shape[p][1], err)) < 0)
                goto out;
        }
    }
    if ((rc = set_slot(l, slot_norm(l), "model.norm.weight", 1, 1, H, err)) < 0)
        goto out;
    if ((rc = set_slot(l, slot_norm(l) + 1, "lm_head.weight", !cfg->tie_word_embeddings,
                       cfg->vocab_size, H, err)) < 0)
        goto out;
    *out = l;
    return BP_OK;
out:
    bp_llama_destroy(&l);
    return rc;
}

int bp_llama_new(const bp_model *model, bp_llama **out, bp_error *err)
{
    if (!model || !out)
        return bp_error_set(err, BP_EINVAL, "bp_llama_new: NULL argument");
    *out = NULL;
    char src[4096];
    snprintf(src, sizeof src, "%s/config.json", bp_model_dir(model));
    bp_llama_config cfg;
    int rc = bp_llama_config_parse(bp_model_config_text(model), src, &cfg, err);
    if (rc < 0)
        return rc;
    if ((rc = bp_llama_config_check_model(&cfg, model, err)) < 0)
        return rc;
    return llama_init(&cfg, model, out, err);
}

int bp_llama_new_config(const bp_llama_config *cfg, bp_llama **out, bp_error *err)
{
    if (!cfg || !out)
        return bp_error_set(err, BP_EINVAL, "bp_llama_new_config: NULL argument");
    *out = NULL;
    if (cfg->hidden_size < 1 || cfg->intermediate_size < 1 || cfg->n_heads < 1 ||
        cfg->n_kv_heads < 1 || cfg->n_heads % cfg->n_kv_heads || cfg->head_dim < 2 ||
        cfg->head_dim % 2 || cfg->n_layers < 1 || cfg->n_layers > 4096 ||
        cfg->vocab_size < 1 || cfg->max_position_embeddings < 1 ||
        !(cfg->rms_norm_eps > 0) || !(cfg->rope_theta > 0) ||
        cfg->hidden_size > (1 << 20) || cfg->intermediate_size > (1 << 20) ||
        cfg->n_heads * cfg->head_dim > (1 << 20) || cfg->vocab_size > (1 << 24))
        return bp_error_set(err, BP_EINVAL, "bp_llama_new_config: inconsistent config");
    return llama_init(cfg, NULL, out, err);
}

const bp_llama_config *bp_llama_get_config(const bp_llama *l)
{
    return l ? &l->cfg : NULL;
}

void bp_llama_set_cache_limit(bp_llama *l, uint64_t bytes)
{
    if (l)
        l->cache_limit = bytes;
}

void bp_llama_drop_cache(bp_llama *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n_slots; i++) {
        free(l->slots[i].cache);
        l->slots[i].cache = NULL;
    }
    l->cache_used = 0;
    free(l->scratch);
    l->scratch = NULL;
    l->scratch_n = 0;
}

static wslot *find_slot(const bp_llama *l, const char *name)
{
    if (!l || !name)
        return NULL;
    for (size_t i = 0; i < l->n_slots; i++)
        if (l->slots[i].present && strcmp(l->slots[i].name, name) == 0)
            return &l->slots[i];
    return NULL;
}

int bp_llama_weight_shape(const bp_llama *l, const char *name, int64_t *rows,
                          int64_t *cols, bp_error *err)
{
    wslot *s = find_slot(l, name);
    if (!s)
        return bp_error_set(err, BP_ENOTFOUND, "model has no tensor '%s'",
                            name ? name : "(null)");
    if (rows)
        *rows = s->rows;
    if (cols)
        *cols = s->cols;
    return BP_OK;
}

static int set_weight(bp_llama *l, const char *name, const float *w, int copy,
                      bp_error *err)
{
    wslot *s = find_slot(l, name);
    if (!s)
        return bp_error_set(err, BP_ENOTFOUND, "set_weight: model has no tensor '%s'",
                            name ? name : "(null)");
    if (!w)
        return bp_error_set(err, BP_EINVAL, "set_weight '%s': NULL data", name);
    const size_t n = (size_t)(s->rows * s->cols);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(w[i]))
            return bp_error_set(err, BP_EINVAL,
                                "set_weight '%s': element %zu (row %zu, col %zu) is "
                                "not finite",
                                name, i, i / (size_t)s->cols, i % (size_t)s->cols);
    float *own = NULL;
    if (copy) {
        own = malloc(n * sizeof(float));
        if (!own)
            return bp_error_set(err, BP_ENOMEM, "set_weight '%s': out of memory", name);
        memcpy(own, w, n * sizeof(float));
    }
    free(s->own);
    s->own = own;
    s->ovr = copy ? own : w;
    return BP_OK;
}

int bp_llama_set_weight(bp_llama *l, const char *name, const float *w, bp_error *err)
{
    return set_weight(l, name, w, 1, err);
}

int bp_llama_set_weight_borrowed(bp_llama *l, const char *name, const float *w,
                                 bp_error *err)
{
    return set_weight(l, name, w, 0, err);
}

int bp_llama_reset_weight(bp_llama *l, const char *name, bp_error *err)
{
    wslot *s = find_slot(l, name);
    if (!s)
        return bp_error_set(err, BP_ENOTFOUND, "reset_weight: model has no tensor '%s'",
                            name ? name : "(null)");
    free(s->own);
    s->own = NULL;
    s->ovr = NULL;
    return BP_OK;
}

void bp_llama_reset_all_weights(bp_llama *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n_slots; i++) {
        free(l->slots[i].own);
        l->slots[i].own = NULL;
        l->slots[i].ovr = NULL;
    }
}

/* --- KV-cache precision ---------------------------------------------------- */

static int kv_layer_ok(const bp_llama *l, int64_t layer, int allow_all)
{
    return l && ((allow_all && layer == -1) || (layer >= 0 && layer < l->cfg.n_layers));
}

int bp_llama_set_kv_format(bp_llama *l, int64_t layer, bp_kv_format f, bp_error *err)
{
    if (!l)
        return bp_error_set(err, BP_EINVAL, "set_kv_format: NULL model");
    if (!kv_layer_ok(l, layer, 1))
        return bp_error_set(err, BP_EINVAL,
                            "set_kv_format: layer %lld out of range (-1 or [0, %lld))",
                            (long long)layer, (long long)l->cfg.n_layers);
    if (!bp_kv_format_name(f))
        return bp_error_set(err, BP_EINVAL, "set_kv_format: unknown KV format %d", (int)f);
    const int64_t lo = layer < 0 ? 0 : layer, hi = layer < 0 ? l->cfg.n_layers : layer + 1;
    if (f == BP_KV_FP8_E4M3) {
        /* Check every layer first so a failure changes nothing. */
        for (int64_t i = lo; i < hi; i++)
            if (l->kv_scale[2 * i] == 0 || l->kv_scale[2 * i + 1] == 0)
                return bp_error_set(err, BP_EINVAL,
                                    "set_kv_format: layer %lld has no fp8_e4m3 K/V scales "
                                    "(calibrate them first: bp_kv_calibrate_fp8)",
                                    (long long)i);
    }
    for (int64_t i = lo; i < hi; i++)
        l->kv_fmt[i] = f;
    return BP_OK;
}

void bp_llama_reset_kv_formats(bp_llama *l)
{
    if (l)
        memset(l->kv_fmt, 0, sizeof *l->kv_fmt * (size_t)l->cfg.n_layers);
}

bp_kv_format bp_llama_get_kv_format(const bp_llama *l, int64_t layer)
{
    return kv_layer_ok(l, layer, 0) ? l->kv_fmt[layer] : BP_KV_FORMAT_COUNT;
}

int bp_llama_set_kv_fp8_scales(bp_llama *l, int64_t layer, float k_scale, float v_scale,
                               bp_error *err)
{
    if (!l)
        return bp_error_set(err, BP_EINVAL, "set_kv_fp8_scales: NULL model");
    if (!kv_layer_ok(l, layer, 1))
        return bp_error_set(err, BP_EINVAL,
                            "set_kv_fp8_scales: layer %lld out of range (-1 or [0, %lld))",
                            (long long)layer, (long long)l->cfg.n_layers);
    if (!(isfinite(k_scale) && k_scale > 0) || !(isfinite(v_scale) && v_scale > 0))
        return bp_error_set(err, BP_EINVAL,
                            "set_kv_fp8_scales: scales %g, %g must be finite and > 0",
                            (double)k_scale, (double)v_scale);
    const int64_t lo = layer < 0 ? 0 : layer, hi = layer < 0 ? l->cfg.n_layers : layer + 1;
    for (int64_t i = lo; i < hi; i++) {
        l->kv_scale[2 * i] = k_scale;
        l->kv_scale[2 * i + 1] = v_scale;
    }
    return BP_OK;
}

void bp_llama_get_kv_fp8_scales(const bp_llama *l, int64_t layer, float *k_scale,
                                float *v_scale)
{
    const int ok = kv_layer_ok(l, layer, 0);
    if (k_scale)
        *k_scale = ok ? l->kv_scale[2 * layer] : 0.0f;
    if (v_scale)
        *v_scale = ok ? l->kv_scale[2 * layer + 1] : 0.0f;
}

void bp_llama_kv_observe(bp_llama *l, int on)
{
    if (!l)
        return;
    if (on)
        memset(l->kv_absmax, 0, sizeof *l->kv_absmax * 2 * (size_t)l->cfg.n_layers);
    l->kv_observe = on != 0;
}

int bp_llama_kv_absmax(const bp_llama *l, int64_t layer, float *k_absmax, float *v_absmax,
                       bp_error *err)
{
    if (!kv_layer_ok(l, layer, 0))
        return bp_error_set(err, BP_EINVAL, "kv_absmax: layer %lld out of range",
                            (long long)layer);
    if (k_absmax)
        *k_absmax = l->kv_absmax[2 * layer];
    if (v_absmax)
        *v_absmax = l->kv_absmax[2 * layer + 1];
    return BP_OK;
}

/* Convert a whole stored tensor, in parallel row blocks. The first failing
 * block (by index) reports, so the message does not depend on scheduling. */
static int convert_tensor(const wslot *s, float *dst, bp_error *err)
{
    const int64_t rows = s->rows, cols = s->cols;
    int64_t chunk = (1 << 18) / (cols > 0 ? cols : 1);
    if (chunk < 1)
        chunk = 1;
    const int64_t nchunks = (rows + chunk - 1) / chunk;
    int64_t bad = -1;
    bp_error first;
    bp_error_clear(&first);
#pragma omp parallel for schedule(dynamic)
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t r0 = c * chunk;
        int64_t nr = rows - r0 < chunk ? rows - r0 : chunk;
        bp_error e;
        bp_error_clear(&e);
        int rc = bp_tensor_rows_f32(s->t, r0, nr, dst + r0 * cols, &e);
        if (rc < 0) {
#pragma omp critical(bp_calib_convert)
            {
                if (bad < 0 || c < bad) {
                    bad = c;
                    first = e;
                    first.code = rc;
                }
            }
        }
    }
    if (bad >= 0) {
        if (err)
            *err = first;
        return first.code;
    }
    for (int64_t i = 0; i < rows * cols; i++) {
        if (!isfinite(dst[i]))
            return bp_error_set(err, BP_EFORMAT,
                                "%s: tensor '%s': element %lld is not finite",
                                s->t->file, s->name, (long long)i);
    }
    return BP_OK;
}

/* The fp32 weights of slot i: override, cache, or a fresh conversion (kept
 * in the cache when it fits, else in the scratch buffer, which the next
 * weight_get may overwrite). */
static int weight_get(bp_llama *l, size_t i, const float **out, bp_error *err)
{
    wslot *s = &l->slots[i];
    if (s->ovr) {
        *out = s->ovr;
        return BP_OK;
    }
    if (s->cache) {
        *out = s->cache;
        return BP_OK;
    }
    if (!s->t)
        return bp_error_set(err, BP_EINVAL,
                            "tensor '%s' has no weights (model built from a config: "
                            "set it with bp_llama_set_weight)",
                            s->name);
    const size_t n = (size_t)(s->rows * s->cols);
    const uint64_t bytes = (uint64_t)n * sizeof(float);
    float *dst;
    int keep = s->rows == 1 || (l->cache_used <= l->cache_limit &&
                                bytes <= l->cache_limit - l->cache_used);
    if (keep) {
        dst = malloc(n * sizeof(float));
        if (!dst)
            return bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory", s->name);
    } else {
        if (l->scratch_n < n) {
            float *p = realloc(l->scratch, n * sizeof(float));
            if (!p)
                return bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory",
                                    s->name);
            l->scratch = p;
            l->scratch_n = n;
        }
        dst = l->scratch;
    }
    int rc = convert_tensor(s, dst, err);
    if (rc < 0) {
        if (keep)
            free(dst);
        return rc;
    }
    if (keep) {
        s->cache = dst;
        l->cache_used += bytes;
    }
    *out = dst;
    return BP_OK;
}

int bp__llama_cache_all(bp_llama *l)
{
    uint64_t need = 0;
    for (size_t i = 0; i < l->n_slots; i++) {
        const wslot *s = &l->slots[i];
        if (!s->present || s->ovr || s->cache)
            continue;
        if (!s->t)
            return 0;
        need += (uint64_t)(s->rows * s->cols) * sizeof(float);
    }
    if (l->cache_used > l->cache_limit || need > l->cache_limit - l->cache_used)
        return 0;
    for (size_t i = 0; i < l->n_slots; i++) {
        const wslot *s = &l->slots[i];
        const float *w;
        if (s->present && !s->ovr && !s->cache && weight_get(l, i, &w, NULL) < 0)
            return 0;
    }
    return 1;
}

/* --- kernels --------------------------------------------------------------- */

/* Rows per sgemm call. OpenBLAS picks different kernels (gemv for one row,
 * "small matrix" and "direct" kernels below size thresholds) whose rounding
 * differs, so a row's result may depend on the call's M. Each sequence is
 * therefore multiplied in chunks that depend only on the sequence length:
 * rows [c, c + CHUNK) of every sequence. A sequence's activations are then
 * the same whether it runs alone or in a batch, which makes evaluation sums
 * and Hessians independent of how work is batched or sharded. */
#define CHUNK_ROWS 1024

/* Element-wise kernels smaller than this many elements run on one thread:
 * waking a team costs more than the work. */
#define PAR_MIN (1 << 17)

/* Bytes of attention score matrices processed per softmax region. */
#define ATT_BYTES ((int64_t)64 << 20)

/* y[n_seq*T, out] = x[n_seq*T, in] W^T (+ b). */
static int linear(bp_llama *l, size_t wi, size_t bi, const float *x, int64_t n_seq,
                  int64_t T, float *y, bp_error *err)
{
    const float *W;
    int rc = weight_get(l, wi, &W, err);
    if (rc < 0)
        return rc;
    const int64_t out = l->slots[wi].rows, in = l->slots[wi].cols;
    for (int64_t s = 0; s < n_seq; s++) {
        for (int64_t c = 0; c < T; c += CHUNK_ROWS) {
            const int64_t m = T - c < CHUNK_ROWS ? T - c : CHUNK_ROWS;
            const int64_t r0 = s * T + c;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)out, (int)in,
                        1.0f, x + r0 * in, (int)in, W, (int)in, 0.0f, y + r0 * out,
                        (int)out);
        }
    }
    if (bi != NO_SLOT) {
        const float *b;
        if ((rc = weight_get(l, bi, &b, err)) < 0)
            return rc;
        const int64_t M = n_seq * T;
#pragma omp parallel for schedule(static) if (M * out >= PAR_MIN)
        for (int64_t r = 0; r < M; r++) {
            float *yr = y + r * out;
            for (int64_t j = 0; j < out; j++)
                yr[j] += b[j];
        }
    }
    return BP_OK;
}

/* As Hugging Face LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) * w. The mean is
 * accumulated in double (HF: fp32), which only makes it more accurate. */
static void rmsnorm(const float *x, const float *w, int64_t M, int64_t H, double eps,
                    float *out)
{
#pragma omp parallel for schedule(static) if (M * H >= PAR_MIN)
    for (int64_t r = 0; r < M; r++) {
        const float *xr = x + r * H;
        float *o = out + r * H;
        double ss = 0.0;
        for (int64_t j = 0; j < H; j++)
            ss += (double)xr[j] * (double)xr[j];
        float inv = (float)(1.0 / sqrt(ss / (double)H + eps));
        for (int64_t j = 0; j < H; j++)
            o[j] = (xr[j] * inv) * w[j];
    }
}

/* rotate_half convention: element i pairs with i + head_dim/2. */
static void rope(float *x, int64_t M, int64_t T, int64_t n_heads, int64_t hd,
                 const float *cosv, const float *sinv)
{
    const int64_t half = hd / 2, width = n_heads * hd;
#pragma omp parallel for schedule(static) if (M * n_heads * hd >= PAR_MIN)
    for (int64_t r = 0; r < M; r++) {
        const int64_t pos = r % T;
        const float *c = cosv + pos * half, *s = sinv + pos * half;
        for (int64_t h = 0; h < n_heads; h++) {
            float *v = x + r * width + h * hd;
            for (int64_t i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * c[i] - b * s[i];
                v[i + half] = b * c[i] + a * s[i];
            }
        }
    }
}

/* Causal (optionally windowed) softmax of each row of n_mat matrices
 * S[T, T] in place; masked entries become 0. One parallel region for all
 * rows: a region per matrix costs more than the work when threads are
 * contended. */
static void causal_softmax(float *S, int64_t n_mat, int64_t T, int64_t window)
{
    const int64_t rows = n_mat * T;
#pragma omp parallel for schedule(static) if (rows * T >= PAR_MIN)
    for (int64_t q = 0; q < rows; q++) {
        const int64_t i = q % T;
        float *row = S + q * T;
        int64_t lo = 0;
        if (window > 0 && i - window + 1 > 0)
            lo = i - window + 1;
        float m = row[lo];
        for (int64_t j = lo + 1; j <= i; j++)
            if (row[j] > m)
                m = row[j];
        double sum = 0.0;
        for (int64_t j = lo; j <= i; j++) {
            float e = expf(row[j] - m);
            row[j] = e;
            sum += (double)e;
        }
        float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < lo; j++)
            row[j] = 0.0f;
        for (int64_t j = lo; j <= i; j++)
            row[j] *= inv;
        for (int64_t j = i + 1; j < T; j++)
            row[j] = 0.0f;
    }
}

/* Largest |x|; infinity when any value is not finite, so calibration sees
 * the problem instead of a maximum that skipped it. */
static float absmax_of(const float *x, int64_t n)
{
    float m = 0.0f;
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        m = fmaxf(m, fabsf(x[i]));
        bad |= !isfinite(x[i]);
    }
    return bad ? INFINITY : m;
}

/* Turn one layer's K (after RoPE) and V into what a KV cache in the layer's
 * format holds, in place, before any attention reads them. Quantization is
 * per (token, head) or with a static scale, so quantizing every position at
 * once equals a decoder quantizing each token as it enters the cache. */
static int kv_cache_layer(bp_llama *l, int layer, float *k, float *v, int64_t M,
                          int64_t nkv, int64_t hd, bp_error *err)
{
    if (l->kv_observe) {
        const float ka = absmax_of(k, M * nkv * hd), va = absmax_of(v, M * nkv * hd);
        /* Forward passes may run concurrently on one model (eval work units);
         * a maximum merges in any order to the same value. */
#pragma omp critical(bp_calib_kv_observe)
        {
            l->kv_absmax[2 * layer] = fmaxf(l->kv_absmax[2 * layer], ka);
            l->kv_absmax[2 * layer + 1] = fmaxf(l->kv_absmax[2 * layer + 1], va);
        }
    }
    const bp_kv_format f = l->kv_fmt[layer];
    if (f == BP_KV_F16)
        return BP_OK;
    int rc = bp_kv_qdq(f, k, M, nkv, hd, l->kv_scale[2 * layer], k, err);
    if (rc == BP_OK)
        rc = bp_kv_qdq(f, v, M, nkv, hd, l->kv_scale[2 * layer + 1], v, err);
    if (rc != BP_OK && err)
        bp_error_prefix(err, "forward: layer %d, %s KV cache", layer, bp_kv_format_name(f));
    return rc;
}

static void hook(const bp_llama_hooks *hooks, int layer, bp_linear_input which,
                 const float *x, int64_t M, int64_t dim)
{
    if (hooks && hooks->linear_input)
        hooks->linear_input(hooks->ctx, layer, which, x, M, dim);
}

static void *alloc_floats(int64_t n)
{
    return malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
}

int bp_llama_forward_batch(bp_llama *l, const uint32_t *tokens, int64_t n_seq,
                           int64_t T, float *logits, const bp_llama_hooks *hooks,
                           bp_error *err)
{
    if (!l || !tokens)
        return bp_error_set(err, BP_EINVAL, "forward: NULL argument");
    const bp_llama_config *c = &l->cfg;
    if (n_seq < 1 || T < 1)
        return bp_error_set(err, BP_EINVAL, "forward: %lld sequences of %lld tokens",
                            (long long)n_seq, (long long)T);
    if (T > c->max_position_embeddings)
        return bp_error_set(err, BP_EINVAL,
                            "forward: sequence length %lld exceeds "
                            "max_position_embeddings %lld",
                            (long long)T, (long long)c->max_position_embeddings);
    const int64_t H = c->hidden_size, FF = c->intermediate_size, V = c->vocab_size;
    const int64_t hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads;
    const int64_t QD = nh * hd, KD = nkv * hd;
    int64_t widest = H > FF ? H : FF;
    if (QD > widest)
        widest = QD;
    if (V > widest)
        widest = V;
    if (n_seq > INT_MAX / T || n_seq * T > (INT64_MAX / 8) / widest ||
        T > (int64_t)INT_MAX / T)
        return bp_error_set(err, BP_EINVAL, "forward: batch of %lld x %lld tokens is too large",
                            (long long)n_seq, (long long)T);
    const int64_t M = n_seq * T;
    for (int64_t r = 0; r < M; r++) {
        if ((int64_t)tokens[r] >= V)
            return bp_error_set(err, BP_EINVAL,
                                "forward: token %lld (sequence %lld, position %lld) "
                                "has id %u, not below vocab_size %lld",
                                (long long)r, (long long)(r / T), (long long)(r % T),
                                tokens[r], (long long)V);
    }
    int n_run = (int)c->n_layers;
    int run_head = 1;
    if (!logits && hooks && hooks->layer_limit > 0) {
        if (hooks->layer_limit < n_run)
            n_run = hooks->layer_limit;
        run_head = 0;
    }

    int rc = BP_OK;
    float *x = alloc_floats(M * H), *h = alloc_floats(M * H);
    float *q = alloc_floats(M * QD), *k = alloc_floats(M * KD), *v = alloc_floats(M * KD);
    float *att = alloc_floats(M * QD);
    float *g = alloc_floats(M * FF), *u = alloc_floats(M * FF);
    const int64_t n_pairs = n_seq * nh;
    int64_t group_pairs = ATT_BYTES / (int64_t)sizeof(float) / (T * T);
    if (group_pairs < 1)
        group_pairs = 1;
    if (group_pairs > n_pairs)
        group_pairs = n_pairs;
    float *S = alloc_floats(group_pairs * T * T);
    float *cosv = alloc_floats(T * (hd / 2)), *sinv = alloc_floats(T * (hd / 2));
    if (!x || !h || !q || !k || !v || !att || !g || !u || !S || !cosv || !sinv) {
        rc = bp_error_set(err, BP_ENOMEM, "forward: out of memory for %lld tokens",
                          (long long)M);
        goto out;
    }

    for (int64_t p = 0; p < T; p++) {
        for (int64_t i = 0; i < hd / 2; i++) {
            /* HF: positions times inv_freq in fp32, then cos/sin in fp32. */
            float ang = (float)p * l->inv_freq[i];
            cosv[p * (hd / 2) + i] = (float)cos((double)ang);
            sinv[p * (hd / 2) + i] = (float)sin((double)ang);
        }
    }

    /* Embedding rows: from the override or cache when there is one, else
     * converted row by row so a large vocabulary is never converted whole. */
    {
        wslot *es = &l->slots[slot_embed()];
        const float *E = es->ovr ? es->ovr : es->cache;
        if (!E && !es->t) {
            rc = bp_error_set(err, BP_EINVAL,
                              "tensor '%s' has no weights (set it with "
                              "bp_llama_set_weight)",
                              es->name);
            goto out;
        }
        int64_t bad = -1;
        int bad_rc = 0;
#pragma omp parallel for schedule(static) if (M * H >= PAR_MIN)
        for (int64_t r = 0; r < M; r++) {
            if (E) {
                memcpy(x + r * H, E + (int64_t)tokens[r] * H, sizeof(float) * (size_t)H);
            } else {
                int e = bp_tensor_rows_f32(es->t, tokens[r], 1, x + r * H, NULL);
                for (int64_t j = 0; e == 0 && j < H; j++)
                    if (!isfinite(x[r * H + j]))
                        e = BP_EFORMAT;
                if (e < 0) {
#pragma omp critical(bp_calib_embed)
                    {
                        if (bad < 0 || r < bad) {
                            bad = r;
                            bad_rc = e;
                        }
                    }
                }
            }
        }
        if (bad >= 0) {
            rc = bp_error_set(err, bad_rc, "%s: tensor '%s': row %u is unreadable or not finite",
                              es->t->file, es->name, tokens[bad]);
            goto out;
        }
    }

    const int64_t group = nh / nkv;
    const float scale = (float)(1.0 / sqrt((double)hd));
    for (int layer = 0; layer < n_run; layer++) {
        const float *wn;
        if ((rc = weight_get(l, slot_layer(l, layer, L_IN_NORM), &wn, err)) < 0)
            goto out;
        rmsnorm(x, wn, M, H, c->rms_norm_eps, h);
        hook(hooks, layer, BP_LINEAR_ATTN_QKV, h, M, H);
        size_t qb = c->qkv_bias ? slot_layer(l, layer, L_QB) : NO_SLOT;
        size_t kb = c->qkv_bias ? slot_layer(l, layer, L_KB) : NO_SLOT;
        size_t vb = c->qkv_bias ? slot_layer(l, layer, L_VB) : NO_SLOT;
        if ((rc = linear(l, slot_layer(l, layer, L_Q), qb, h, n_seq, T, q, err)) < 0 ||
            (rc = linear(l, slot_layer(l, layer, L_K), kb, h, n_seq, T, k, err)) < 0 ||
            (rc = linear(l, slot_layer(l, layer, L_V), vb, h, n_seq, T, v, err)) < 0)
            goto out;
        rope(q, M, T, nh, hd, cosv, sinv);
        rope(k, M, T, nkv, hd, cosv, sinv);
        if ((rc = kv_cache_layer(l, layer, k, v, M, nkv, hd, err)) < 0)
            goto out;
        /* Score matrices for a group of (sequence, head) pairs, then one
         * softmax region for the group, then the value products. */
        for (int64_t p0 = 0; p0 < n_pairs; p0 += group_pairs) {
            const int64_t np = n_pairs - p0 < group_pairs ? n_pairs - p0 : group_pairs;
            for (int64_t p = p0; p < p0 + np; p++) {
                const int64_t s = p / nh, hh = p % nh, kvh = hh / group;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T,
                            (int)hd, scale, q + s * T * QD + hh * hd, (int)QD,
                            k + s * T * KD + kvh * hd, (int)KD, 0.0f,
                            S + (p - p0) * T * T, (int)T);
            }
            causal_softmax(S, np, T, c->sliding_window);
            for (int64_t p = p0; p < p0 + np; p++) {
                const int64_t s = p / nh, hh = p % nh, kvh = hh / group;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)hd,
                            (int)T, 1.0f, S + (p - p0) * T * T, (int)T,
                            v + s * T * KD + kvh * hd, (int)KD, 0.0f,
                            att + s * T * QD + hh * hd, (int)QD);
            }
        }
        hook(hooks, layer, BP_LINEAR_ATTN_O, att, M, QD);
        if ((rc = linear(l, slot_layer(l, layer, L_O), NO_SLOT, att, n_seq, T, h, err)) < 0)
            goto out;
#pragma omp parallel for schedule(static) if (M * H >= PAR_MIN)
        for (int64_t i = 0; i < M * H; i++)
            x[i] += h[i];

        if ((rc = weight_get(l, slot_layer(l, layer, L_POST_NORM), &wn, err)) < 0)
            goto out;
        rmsnorm(x, wn, M, H, c->rms_norm_eps, h);
        hook(hooks, layer, BP_LINEAR_MLP_GATE_UP, h, M, H);
        if ((rc = linear(l, slot_layer(l, layer, L_GATE), NO_SLOT, h, n_seq, T, g, err)) < 0 ||
            (rc = linear(l, slot_layer(l, layer, L_UP), NO_SLOT, h, n_seq, T, u, err)) < 0)
            goto out;
#pragma omp parallel for schedule(static) if (M * FF >= PAR_MIN)
        for (int64_t i = 0; i < M * FF; i++) {
            float gv = g[i];
            g[i] = gv / (1.0f + expf(-gv)) * u[i];
        }
        hook(hooks, layer, BP_LINEAR_MLP_DOWN, g, M, FF);
        if ((rc = linear(l, slot_layer(l, layer, L_DOWN), NO_SLOT, g, n_seq, T, h, err)) < 0)
            goto out;
#pragma omp parallel for schedule(static) if (M * H >= PAR_MIN)
        for (int64_t i = 0; i < M * H; i++)
            x[i] += h[i];
    }

    if (run_head) {
        const float *wn;
        if ((rc = weight_get(l, slot_norm(l), &wn, err)) < 0)
            goto out;
        rmsnorm(x, wn, M, H, c->rms_norm_eps, h);
        hook(hooks, -1, BP_LINEAR_LM_HEAD, h, M, H);
        if (logits && (rc = linear(l, slot_head(l), NO_SLOT, h, n_seq, T, logits, err)) < 0)
            goto out;
    }
    rc = BP_OK;
out:
    free(x);
    free(h);
    free(q);
    free(k);
    free(v);
    free(att);
    free(g);
    free(u);
    free(S);
    free(cosv);
    free(sinv);
    return rc;
}

int bp_llama_forward(bp_llama *l, const uint32_t *tokens, int64_t n_tokens,
                     float *logits, const bp_llama_hooks *hooks, bp_error *err)
{
    return bp_llama_forward_batch(l, tokens, 1, n_tokens, logits, hooks, err);
}
