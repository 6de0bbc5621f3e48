/* Hugging Face config.json for Llama-family models, tensor checks, RoPE
 * frequencies and the weight-name -> linear-input map. */
#include "bitplan/llama.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Far above any real model, low enough that products of two such sizes and
 * a token count stay inside int64 and every BLAS dimension fits an int. */
#define MAX_DIM (1 << 20)
#define MAX_VOCAB (1 << 24)
#define MAX_LAYERS 4096
#define MAX_POSITIONS (1 << 24)

const char *bp_llama_arch_name(bp_llama_arch a)
{
    switch (a) {
    case BP_LLAMA_ARCH_LLAMA:
        return "LlamaForCausalLM";
    case BP_LLAMA_ARCH_MISTRAL:
        return "MistralForCausalLM";
    case BP_LLAMA_ARCH_QWEN2:
        return "Qwen2ForCausalLM";
    }
    return "unknown";
}

const char *bp_linear_input_name(bp_linear_input which)
{
    switch (which) {
    case BP_LINEAR_ATTN_QKV:
        return "qkv";
    case BP_LINEAR_ATTN_O:
        return "o";
    case BP_LINEAR_MLP_GATE_UP:
        return "gate_up";
    case BP_LINEAR_MLP_DOWN:
        return "down";
    case BP_LINEAR_LM_HEAD:
        return "lm_head";
    case BP_LINEAR_N:
        break;
    }
    return "invalid";
}

int64_t bp_llama_input_dim(const bp_llama_config *cfg, bp_linear_input which)
{
    switch (which) {
    case BP_LINEAR_ATTN_QKV:
    case BP_LINEAR_MLP_GATE_UP:
    case BP_LINEAR_LM_HEAD:
        return cfg->hidden_size;
    case BP_LINEAR_ATTN_O:
        return cfg->n_heads * cfg->head_dim;
    case BP_LINEAR_MLP_DOWN:
        return cfg->intermediate_size;
    case BP_LINEAR_N:
        break;
    }
    return 0;
}

/* --- JSON field readers ------------------------------------------------- */

/* A required or optional positive integer in [lo, hi]. Returns 0 (absent
 * or null, *out untouched), 1 (read), or a negative error. */
static int get_int(json_t *root, const char *src, const char *key, int required,
                   int64_t lo, int64_t hi, int64_t *out, bp_error *err)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required)
            return bp_error_set(err, BP_EFORMAT, "%s: missing required field '%s'",
                                src, key);
        return 0;
    }
    if (!json_is_integer(v))
        return bp_error_set(err, BP_EFORMAT, "%s: field '%s' must be an integer",
                            src, key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return bp_error_set(err, BP_EFORMAT,
                            "%s: field '%s' = %lld is outside [%lld, %lld]", src,
                            key, (long long)x, (long long)lo, (long long)hi);
    *out = (int64_t)x;
    return 1;
}

/* A number (integer or real), finite and > 0. Same returns as get_int. */
static int get_pos_num(json_t *obj, const char *src, const char *key,
                       int required, double *out, bp_error *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required)
            return bp_error_set(err, BP_EFORMAT, "%s: missing required field '%s'",
                                src, key);
        return 0;
    }
    if (!json_is_number(v))
        return bp_error_set(err, BP_EFORMAT, "%s: field '%s' must be a number",
                            src, key);
    double x = json_number_value(v);
    if (!isfinite(x) || !(x > 0))
        return bp_error_set(err, BP_EFORMAT,
                            "%s: field '%s' = %g must be finite and > 0", src, key, x);
    *out = x;
    return 1;
}

static int get_bool(json_t *root, const char *src, const char *key, int dflt,
                    int *out, bp_error *err)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(v))
        return bp_error_set(err, BP_EFORMAT, "%s: field '%s' must be true or false",
                            src, key);
    *out = json_is_true(v) ? 1 : 0;
    return 1;
}

static int parse_arch(json_t *root, const char *src, bp_llama_arch *arch,
                      bp_error *err)
{
    static const struct {
        const char *arch, *model_type;
        bp_llama_arch id;
    } known[] = {
        {"LlamaForCausalLM", "llama", BP_LLAMA_ARCH_LLAMA},
        {"MistralForCausalLM", "mistral", BP_LLAMA_ARCH_MISTRAL},
        {"Qwen2ForCausalLM", "qwen2", BP_LLAMA_ARCH_QWEN2},
    };
    json_t *a = json_object_get(root, "architectures");
    const char *name = NULL;
    int by_type = 0;
    if (a && !json_is_null(a)) {
        if (!json_is_array(a) || json_array_size(a) != 1 ||
            !json_is_string(json_array_get(a, 0)))
            return bp_error_set(err, BP_EFORMAT,
                                "%s: field 'architectures' must be an array of "
                                "exactly one string",
                                src);
        name = json_string_value(json_array_get(a, 0));
    } else {
        /* Some exports omit architectures; model_type then names the family. */
        json_t *t = json_object_get(root, "model_type");
        if (!t || !json_is_string(t))
            return bp_error_set(err, BP_EFORMAT,
                                "%s: missing field 'architectures' (and no "
                                "'model_type' string)",
                                src);
        name = json_string_value(t);
        by_type = 1;
    }
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (strcmp(name, by_type ? known[i].model_type : known[i].arch) == 0) {
            *arch = known[i].id;
            return BP_OK;
        }
    }
    return bp_error_set(err, BP_EUNSUPPORTED,
                        "%s: field '%s' = \"%s\" is not supported (supported: "
                        "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)",
                        src, by_type ? "model_type" : "architectures", name);
}

static int parse_rope_scaling(json_t *root, const char *src, bp_llama_config *c,
                              bp_error *err)
{
    c->rope_type = BP_ROPE_DEFAULT;
    json_t *rs = json_object_get(root, "rope_scaling");
    if (!rs || json_is_null(rs))
        return BP_OK;
    if (!json_is_object(rs))
        return bp_error_set(err, BP_EFORMAT,
                            "%s: field 'rope_scaling' must be null or an object", src);
    json_t *t = json_object_get(rs, "rope_type");
    const char *key = "rope_scaling.rope_type";
    if (!t || json_is_null(t)) {
        t = json_object_get(rs, "type");
        key = "rope_scaling.type";
    }
    if (!t || !json_is_string(t))
        return bp_error_set(err, BP_EFORMAT,
                            "%s: field 'rope_scaling' needs a string 'rope_type' "
                            "(or 'type')",
                            src);
    const char *type = json_string_value(t);
    if (strcmp(type, "default") == 0)
        return BP_OK;
    if (strcmp(type, "llama3") != 0)
        return bp_error_set(err, BP_EUNSUPPORTED,
                            "%s: field '%s' = \"%s\" is not supported (supported: "
                            "null, \"default\", \"llama3\")",
                            src, key, type);
    c->rope_type = BP_ROPE_LLAMA3;
    int rc;
    if ((rc = get_pos_num(rs, src, "factor", 1, &c->rope_factor, err)) < 0 ||
        (rc = get_pos_num(rs, src, "low_freq_factor", 1, &c->rope_low_freq_factor,
                          err)) < 0 ||
        (rc = get_pos_num(rs, src, "high_freq_factor", 1, &c->rope_high_freq_factor,
                          err)) < 0 ||
        (rc = get_int(rs, src, "original_max_position_embeddings", 1, 1,
                      MAX_POSITIONS, &c->rope_original_max_position_embeddings,
                      err)) < 0)
        return bp_error_prefix(err, "rope_scaling");
    if (!(c->rope_high_freq_factor > c->rope_low_freq_factor))
        return bp_error_set(err, BP_EFORMAT,
                            "%s: rope_scaling: 'high_freq_factor' (%g) must be "
                            "greater than 'low_freq_factor' (%g)",
                            src, c->rope_high_freq_factor, c->rope_low_freq_factor);
    return BP_OK;
}

int bp_llama_config_parse(const char *json_text, const char *source,
                          bp_llama_config *out, bp_error *err)
{
    const char *src = source ? source : "config.json";
    if (!json_text || !out)
        return bp_error_set(err, BP_EINVAL, "%s: no config text", src);
    memset(out, 0, sizeof *out);

    json_error_t jerr;
    json_t *root = json_loads(json_text, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return bp_error_set(err, BP_EFORMAT, "%s: invalid JSON at line %d column %d: %s",
                            src, jerr.line, jerr.column, jerr.text);
    int rc = BP_OK;
    bp_llama_config c;
    memset(&c, 0, sizeof c);
    if (!json_is_object(root)) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: top level must be an object", src);
        goto out;
    }
    if ((rc = parse_arch(root, src, &c.arch, err)) < 0)
        goto out;

    json_t *act = json_object_get(root, "hidden_act");
    if (!act || !json_is_string(act)) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: missing string field 'hidden_act'", src);
        goto out;
    }
    if (strcmp(json_string_value(act), "silu") != 0) {
        rc = bp_error_set(err, BP_EUNSUPPORTED,
                          "%s: field 'hidden_act' = \"%s\" is not supported (only "
                          "\"silu\")",
                          src, json_string_value(act));
        goto out;
    }

    if ((rc = get_int(root, src, "hidden_size", 1, 1, MAX_DIM, &c.hidden_size, err)) < 0 ||
        (rc = get_int(root, src, "intermediate_size", 1, 1, MAX_DIM,
                      &c.intermediate_size, err)) < 0 ||
        (rc = get_int(root, src, "num_attention_heads", 1, 1, MAX_DIM, &c.n_heads,
                      err)) < 0 ||
        (rc = get_int(root, src, "num_hidden_layers", 1, 1, MAX_LAYERS, &c.n_layers,
                      err)) < 0 ||
        (rc = get_int(root, src, "vocab_size", 1, 1, MAX_VOCAB, &c.vocab_size, err)) < 0 ||
        (rc = get_int(root, src, "max_position_embeddings", 1, 1, MAX_POSITIONS,
                      &c.max_position_embeddings, err)) < 0 ||
        (rc = get_pos_num(root, src, "rms_norm_eps", 1, &c.rms_norm_eps, err)) < 0)
        goto out;

    c.n_kv_heads = c.n_heads;
    if ((rc = get_int(root, src, "num_key_value_heads", 0, 1, MAX_DIM, &c.n_kv_heads,
                      err)) < 0)
        goto out;
    if (c.n_heads % c.n_kv_heads != 0) {
        rc = bp_error_set(err, BP_EFORMAT,
                          "%s: 'num_attention_heads' (%lld) is not a multiple of "
                          "'num_key_value_heads' (%lld)",
                          src, (long long)c.n_heads, (long long)c.n_kv_heads);
        goto out;
    }
    int have_hd = get_int(root, src, "head_dim", 0, 1, MAX_DIM, &c.head_dim, err);
    if (have_hd < 0) {
        rc = have_hd;
        goto out;
    }
    if (!have_hd) {
        if (c.hidden_size % c.n_heads != 0) {
            rc = bp_error_set(err, BP_EFORMAT,
                              "%s: 'hidden_size' (%lld) is not a multiple of "
                              "'num_attention_heads' (%lld) and 'head_dim' is not set",
                              src, (long long)c.hidden_size, (long long)c.n_heads);
            goto out;
        }
        c.head_dim = c.hidden_size / c.n_heads;
    }
    if (c.head_dim % 2 != 0) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: head_dim %lld must be even for RoPE",
                          src, (long long)c.head_dim);
        goto out;
    }
    if (c.n_heads * c.head_dim > MAX_DIM) {
        rc = bp_error_set(err, BP_EFORMAT,
                          "%s: num_attention_heads * head_dim = %lld is too large", src,
                          (long long)(c.n_heads * c.head_dim));
        goto out;
    }

    c.rope_theta = 10000.0;
    if ((rc = get_pos_num(root, src, "rope_theta", 0, &c.rope_theta, err)) < 0)
        goto out;
    if ((rc = get_bool(root, src, "tie_word_embeddings", 0, &c.tie_word_embeddings,
                       err)) < 0)
        goto out;
    if ((rc = parse_rope_scaling(root, src, &c, err)) < 0)
        goto out;

    /* Options that would change the computation and that bitplan does not
     * implement are rejected rather than ignored. */
    int flag = 0;
    if (c.arch == BP_LLAMA_ARCH_LLAMA) {
        if ((rc = get_bool(root, src, "attention_bias", 0, &flag, err)) < 0)
            goto out;
        if (flag) {
            rc = bp_error_set(err, BP_EUNSUPPORTED,
                              "%s: field 'attention_bias' = true is not supported", src);
            goto out;
        }
        if ((rc = get_bool(root, src, "mlp_bias", 0, &flag, err)) < 0)
            goto out;
        if (flag) {
            rc = bp_error_set(err, BP_EUNSUPPORTED,
                              "%s: field 'mlp_bias' = true is not supported", src);
            goto out;
        }
    }
    if (c.arch == BP_LLAMA_ARCH_QWEN2) {
        c.qkv_bias = 1;
        /* Qwen2 applies sliding_window only with use_sliding_window, and then
         * only to some layers (max_window_layers): not implemented. */
        if ((rc = get_bool(root, src, "use_sliding_window", 0, &flag, err)) < 0)
            goto out;
        if (flag) {
            rc = bp_error_set(err, BP_EUNSUPPORTED,
                              "%s: field 'use_sliding_window' = true is not supported",
                              src);
            goto out;
        }
    }
    if (c.arch == BP_LLAMA_ARCH_MISTRAL) {
        /* Implemented: a query at position i attends to keys j with
         * i - sliding_window < j <= i. */
        if ((rc = get_int(root, src, "sliding_window", 0, 1, MAX_POSITIONS,
                          &c.sliding_window, err)) < 0)
            goto out;
    }
    *out = c;
    rc = BP_OK;
out:
    json_decref(root);
    return rc;
}

/* --- tensors ------------------------------------------------------------ */

static int check_tensor(const bp_model *m, const char *name, int ndim, int64_t d0,
                        int64_t d1, const char *fields, bp_error *err)
{
    long i = bp_model_find(m, name);
    if (i < 0)
        return bp_error_set(err, BP_ENOTFOUND,
                            "%s: missing tensor '%s' (required by config.json)",
                            bp_model_dir(m), name);
    const bp_tensor_info *t = bp_model_tensor(m, (size_t)i);
    if (!t)
        return bp_error_set(err, BP_ENOTFOUND, "%s: missing tensor '%s'",
                            bp_model_dir(m), name);
    int shape_ok = t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1);
    if (!shape_ok) {
        char got[128] = "";
        size_t off = 0;
        for (int k = 0; k < t->ndim && k < BP_MAX_DIMS && off < sizeof got - 24; k++)
            off += (size_t)snprintf(got + off, sizeof got - off, "%s%lld", k ? ", " : "",
                                    (long long)t->shape[k]);
        if (ndim == 1)
            return bp_error_set(err, BP_EFORMAT,
                                "%s: tensor '%s' has shape [%s], expected [%lld] "
                                "(config.json: %s)",
                                t->file, name, got, (long long)d0, fields);
        return bp_error_set(err, BP_EFORMAT,
                            "%s: tensor '%s' has shape [%s], expected [%lld, %lld] "
                            "(config.json: %s)",
                            t->file, name, got, (long long)d0, (long long)d1, fields);
    }
    if (t->dtype != BP_DTYPE_F32 && t->dtype != BP_DTYPE_F16 &&
        t->dtype != BP_DTYPE_BF16 && t->dtype != BP_DTYPE_F64)
        return bp_error_set(err, BP_EUNSUPPORTED,
                            "%s: tensor '%s' has dtype %s; only F32, F16, BF16 and "
                            "F64 weights are read",
                            t->file, name, bp_dtype_name(t->dtype));
    return BP_OK;
}

int bp_llama_config_check_model(const bp_llama_config *c, const bp_model *m,
                                bp_error *err)
{
    if (!c || !m)
        return bp_error_set(err, BP_EINVAL, "check_model: NULL argument");
    const int64_t H = c->hidden_size, I = c->intermediate_size;
    const int64_t QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
    char name[256];
    int rc;
    if ((rc = check_tensor(m, "model.embed_tokens.weight", 2, c->vocab_size, H,
                           "vocab_size, hidden_size", err)) < 0)
        return rc;
    for (int64_t l = 0; l < c->n_layers; l++) {
        static const struct {
            const char *suffix;
            int which; /* 0 norm, 1 q, 2 k/v, 3 o, 4 gate/up, 5 down, 6 qbias, 7 kvbias */
        } parts[] = {
            {"input_layernorm.weight", 0},   {"self_attn.q_proj.weight", 1},
            {"self_attn.k_proj.weight", 2},  {"self_attn.v_proj.weight", 2},
            {"self_attn.o_proj.weight", 3},  {"post_attention_layernorm.weight", 0},
            {"mlp.gate_proj.weight", 4},     {"mlp.up_proj.weight", 4},
            {"mlp.down_proj.weight", 5},     {"self_attn.q_proj.bias", 6},
            {"self_attn.k_proj.bias", 7},    {"self_attn.v_proj.bias", 7},
        };
        for (size_t p = 0; p < sizeof parts / sizeof parts[0]; p++) {
            if (parts[p].which >= 6 && !c->qkv_bias)
                continue;
            snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)l,
                     parts[p].suffix);
            switch (parts[p].which) {
            case 0:
                rc = check_tensor(m, name, 1, H, 0, "hidden_size", err);
                break;
            case 1:
                rc = check_tensor(m, name, 2, QD, H,
                                  "num_attention_heads * head_dim, hidden_size", err);
                break;
            case 2:
                rc = check_tensor(m, name, 2, KD, H,
                                  "num_key_value_heads * head_dim, hidden_size", err);
                break;
            case 3:
                rc = check_tensor(m, name, 2, H, QD,
                                  "hidden_size, num_attention_heads * head_dim", err);
                break;
            case 4:
                rc = check_tensor(m, name, 2, I, H, "intermediate_size, hidden_size",
                                  err);
                break;
            case 5:
                rc = check_tensor(m, name, 2, H, I, "hidden_size, intermediate_size",
                                  err);
                break;
            case 6:
                rc = check_tensor(m, name, 1, QD, 0, "num_attention_heads * head_dim",
                                  err);
                break;
            default:
                rc = check_tensor(m, name, 1, KD, 0, "num_key_value_heads * head_dim",
                                  err);
                break;
            }
            if (rc < 0)
                return rc;
        }
    }
    if ((rc = check_tensor(m, "model.norm.weight", 1, H, 0, "hidden_size", err)) < 0)
        return rc;
    if (!c->tie_word_embeddings &&
        (rc = check_tensor(m, "lm_head.weight", 2, c->vocab_size, H,
                           "vocab_size, hidden_size; tie_word_embeddings is false",
                           err)) < 0)
        return rc;
    return BP_OK;
}

/* --- RoPE ---------------------------------------------------------------- */

void bp_llama_rope_inv_freq(const bp_llama_config *c, float *inv_freq)
{
    const int64_t half = c->head_dim / 2;
    const float dim = (float)c->head_dim;
    for (int64_t i = 0; i < half; i++) {
        /* As Hugging Face: exponent and power in fp32. */
        float e = (float)(2 * i) / dim;
        float p = (float)pow(c->rope_theta, (double)e);
        inv_freq[i] = 1.0f / p;
    }
    if (c->rope_type != BP_ROPE_LLAMA3)
        return;
    /* Llama 3.1 rescaling: wavelengths longer than old_ctx/low_freq_factor
     * are stretched by `factor`, those shorter than old_ctx/high_freq_factor
     * are kept, and the band in between is interpolated linearly in
     * old_ctx/wavelen. */
    const double factor = c->rope_factor, lo = c->rope_low_freq_factor,
                 hi = c->rope_high_freq_factor;
    const double old_ctx = (double)c->rope_original_max_position_embeddings;
    const double low_freq_wavelen = old_ctx / lo;
    const double high_freq_wavelen = old_ctx / hi;
    const double two_pi = 6.283185307179586476925286766559;
    for (int64_t i = 0; i < half; i++) {
        double f = inv_freq[i];
        double wavelen = two_pi / f;
        double r;
        if (wavelen < high_freq_wavelen) {
            r = f;
        } else if (wavelen > low_freq_wavelen) {
            r = f / factor;
        } else {
            double smooth = (old_ctx / wavelen - lo) / (hi - lo);
            r = (1.0 - smooth) * f / factor + smooth * f;
        }
        inv_freq[i] = (float)r;
    }
}

/* --- weight name -> input ------------------------------------------------ */

int bp_llama_weight_input(const bp_llama_config *cfg, const char *name, int *layer,
                          bp_linear_input *which)
{
    if (!cfg || !name)
        return BP_EINVAL;
    int is_head = strcmp(name, "lm_head.weight") == 0;
    int is_embed = strcmp(name, "model.embed_tokens.weight") == 0;
    if (is_head || is_embed) {
        /* With tied embeddings the one matrix is both; its quantization error
         * reaches the loss through the lm_head product, which dominates. */
        if (is_head == cfg->tie_word_embeddings)
            return BP_ENOTFOUND;
        if (layer)
            *layer = -1;
        if (which)
            *which = BP_LINEAR_LM_HEAD;
        return BP_OK;
    }
    static const char prefix[] = "model.layers.";
    if (strncmp(name, prefix, sizeof prefix - 1) != 0)
        return BP_ENOTFOUND;
    const char *p = name + sizeof prefix - 1;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9'))
        return BP_ENOTFOUND;
    int64_t n = 0;
    while (*p >= '0' && *p <= '9') {
        n = n * 10 + (*p - '0');
        if (n >= cfg->n_layers)
            return BP_ENOTFOUND;
        p++;
    }
    static const struct {
        const char *suffix;
        bp_linear_input which;
    } map[] = {
        {".self_attn.q_proj.weight", BP_LINEAR_ATTN_QKV},
        {".self_attn.k_proj.weight", BP_LINEAR_ATTN_QKV},
        {".self_attn.v_proj.weight", BP_LINEAR_ATTN_QKV},
        {".self_attn.o_proj.weight", BP_LINEAR_ATTN_O},
        {".mlp.gate_proj.weight", BP_LINEAR_MLP_GATE_UP},
        {".mlp.up_proj.weight", BP_LINEAR_MLP_GATE_UP},
        {".mlp.down_proj.weight", BP_LINEAR_MLP_DOWN},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (strcmp(p, map[i].suffix) == 0) {
            if (layer)
                *layer = (int)n;
            if (which)
                *which = map[i].which;
            return BP_OK;
        }
    }
    return BP_ENOTFOUND;
}
