/* KV-cache quantizers (layouts in include/bitplan/kv_quant.h), fp8 scale
 * calibration and the per-layer KV error term. */
#include "bitplan/kv_quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/format.h"
#include "bitplan/half.h"

#define F16_MAX 65504.0f
#define F16_MIN_SUBNORMAL 0x1p-24f

static int int_bits(bp_kv_format f)
{
    return f == BP_KV_INT8 ? 8 : f == BP_KV_INT4 ? 4 : 0;
}

/* Bytes of one (token, head) group of an int format: fp16 scale + codes. */
static uint64_t int_group_bytes(bp_kv_format f, int64_t head_dim)
{
    uint64_t d = (uint64_t)head_dim;
    return 2 + (f == BP_KV_INT8 ? d : (d + 1) / 2);
}

uint64_t bp_kv_slab_bytes(bp_kv_format f, int64_t n_tokens, int64_t n_heads,
                          int64_t head_dim)
{
    if (n_tokens < 1 || n_heads < 1 || head_dim < 1 || head_dim > (1 << 20) ||
        n_heads > (1 << 20))
        return 0;
    if ((uint64_t)n_tokens > UINT64_MAX / (uint64_t)n_heads)
        return 0;
    const uint64_t rows = (uint64_t)n_tokens * (uint64_t)n_heads;
    uint64_t per;
    switch (f) {
    case BP_KV_F16: per = 2 * (uint64_t)head_dim; break;
    case BP_KV_FP8_E4M3: per = (uint64_t)head_dim; break;
    case BP_KV_INT8:
    case BP_KV_INT4: per = int_group_bytes(f, head_dim); break;
    default: return 0;
    }
    if (rows > (UINT64_MAX - 4) / per)
        return 0;
    return rows * per + (f == BP_KV_FP8_E4M3 ? 4 : 0);
}

float bp_kv_fp8_scale(float absmax)
{
    if (!(absmax > 0) || !isfinite(absmax))
        return 1.0f;
    return absmax / BP_KV_FP8_MAX;
}

/* The fp16 scale of one symmetric int group: absmax / qmax rounded to fp16,
 * kept nonzero for a nonzero group (else every value would collapse to 0)
 * and finite (values beyond qmax * 65504 saturate). */
static uint16_t int_scale_f16(const float *x, int64_t d, int qmax)
{
    float amax = 0.0f;
    for (int64_t i = 0; i < d; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    if (amax == 0.0f)
        return 0;
    float s = bp_f16_to_f32(bp_f32_to_f16(amax / (float)qmax));
    if (s == 0.0f)
        s = F16_MIN_SUBNORMAL;
    if (!isfinite(s))
        s = F16_MAX;
    return bp_f32_to_f16(s);
}

static int int_code(float x, float s, int bits)
{
    const int hi = (1 << (bits - 1)) - 1, lo = -hi - 1;
    if (s == 0.0f)
        return 0;
    float r = rintf(x / s);
    if (r > (float)hi)
        return hi;
    if (r < (float)lo)
        return lo;
    return (int)r;
}

static int check_args(bp_kv_format f, const void *x, int64_t T, int64_t H, int64_t D,
                      float fp8_scale, const void *out, const char *what, bp_error *err)
{
    if (!x || !out)
        return bp_error_set(err, BP_EINVAL, "%s: NULL argument", what);
    if (!bp_kv_format_name(f))
        return bp_error_set(err, BP_EINVAL, "%s: unknown KV format %d", what, (int)f);
    if (bp_kv_slab_bytes(f, T, H, D) == 0)
        return bp_error_set(err, BP_EINVAL,
                            "%s: bad slab shape %lld tokens x %lld heads x %lld", what,
                            (long long)T, (long long)H, (long long)D);
    if (f == BP_KV_FP8_E4M3 && !(isfinite(fp8_scale) && fp8_scale > 0))
        return bp_error_set(err, BP_EINVAL, "%s: fp8 scale %g must be finite and > 0", what,
                            (double)fp8_scale);
    return BP_OK;
}

static int check_finite(const float *x, int64_t T, int64_t H, int64_t D, const char *what,
                        bp_error *err)
{
    const int64_t n = T * H * D;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return bp_error_set(err, BP_EINVAL,
                                "%s: value at token %lld, head %lld, element %lld is not "
                                "finite",
                                what, (long long)(i / (H * D)), (long long)(i / D % H),
                                (long long)(i % D));
    return BP_OK;
}

static void fp8_format(bp_format *fmt)
{
    /* A fixed canonical name: parsing cannot fail. */
    bp_format_parse("fp8_e4m3", fmt, NULL);
}

int bp_kv_qdq(bp_kv_format f, const float *x, int64_t T, int64_t H, int64_t D,
              float fp8_scale, float *out, bp_error *err)
{
    int rc = check_args(f, x, T, H, D, fp8_scale, out, "KV quantize", err);
    if (rc == BP_OK)
        rc = check_finite(x, T, H, D, "KV quantize", err);
    if (rc != BP_OK)
        return rc;
    const int64_t n = T * H * D;
    if (f == BP_KV_F16) {
        for (int64_t i = 0; i < n; i++)
            out[i] = bp_f16_to_f32(bp_f32_to_f16(x[i]));
    } else if (f == BP_KV_FP8_E4M3) {
        bp_format fmt;
        fp8_format(&fmt);
        bp_qparams p = {fp8_scale, 0.0f};
        for (int64_t i = 0; i < n; i++)
            out[i] = bp_format_decode(&fmt, &p, bp_format_encode(&fmt, &p, x[i]));
    } else {
        const int bits = int_bits(f), qmax = (1 << (bits - 1)) - 1;
        for (int64_t g = 0; g < T * H; g++) {
            const float *xg = x + g * D;
            float *og = out + g * D;
            const float s = bp_f16_to_f32(int_scale_f16(xg, D, qmax));
            for (int64_t i = 0; i < D; i++)
                og[i] = s * (float)int_code(xg[i], s, bits);
        }
    }
    return BP_OK;
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xffu);
    p[1] = (uint8_t)(v >> 8);
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

int bp_kv_pack(bp_kv_format f, const float *x, int64_t T, int64_t H, int64_t D,
               float fp8_scale, uint8_t *out, size_t out_len, bp_error *err)
{
    int rc = check_args(f, x, T, H, D, fp8_scale, out, "KV pack", err);
    if (rc == BP_OK)
        rc = check_finite(x, T, H, D, "KV pack", err);
    if (rc != BP_OK)
        return rc;
    const uint64_t need = bp_kv_slab_bytes(f, T, H, D);
    if ((uint64_t)out_len != need)
        return bp_error_set(err, BP_EINVAL, "KV pack: buffer of %zu bytes, need %llu",
                            out_len, (unsigned long long)need);
    const int64_t n = T * H * D;
    if (f == BP_KV_F16) {
        for (int64_t i = 0; i < n; i++)
            put_u16(out + 2 * i, bp_f32_to_f16(x[i]));
    } else if (f == BP_KV_FP8_E4M3) {
        uint32_t sb;
        memcpy(&sb, &fp8_scale, 4);
        for (int b = 0; b < 4; b++)
            out[b] = (uint8_t)(sb >> (8 * b));
        bp_format fmt;
        fp8_format(&fmt);
        bp_qparams p = {fp8_scale, 0.0f};
        for (int64_t i = 0; i < n; i++)
            out[4 + i] = (uint8_t)bp_format_encode(&fmt, &p, x[i]);
    } else {
        const int bits = int_bits(f), qmax = (1 << (bits - 1)) - 1;
        const uint64_t gb = int_group_bytes(f, D);
        for (int64_t g = 0; g < T * H; g++) {
            const float *xg = x + g * D;
            uint8_t *o = out + (uint64_t)g * gb;
            const uint16_t sh = int_scale_f16(xg, D, qmax);
            const float s = bp_f16_to_f32(sh);
            put_u16(o, sh);
            memset(o + 2, 0, (size_t)(gb - 2));
            for (int64_t i = 0; i < D; i++) {
                const int c = int_code(xg[i], s, bits);
                if (bits == 8)
                    o[2 + i] = (uint8_t)(c & 0xff);
                else
                    o[2 + i / 2] |= (uint8_t)((c & 0xf) << (4 * (i & 1)));
            }
        }
    }
    return BP_OK;
}

int bp_kv_unpack(bp_kv_format f, const uint8_t *in, size_t len, int64_t T, int64_t H,
                 int64_t D, float *out, bp_error *err)
{
    int rc = check_args(f, in, T, H, D, 1.0f, out, "KV unpack", err);
    if (rc != BP_OK)
        return rc;
    const uint64_t need = bp_kv_slab_bytes(f, T, H, D);
    if ((uint64_t)len != need)
        return bp_error_set(err, BP_EFORMAT, "KV unpack: %zu bytes, %s slab needs %llu", len,
                            bp_kv_format_name(f), (unsigned long long)need);
    const int64_t n = T * H * D;
    if (f == BP_KV_F16) {
        for (int64_t i = 0; i < n; i++)
            out[i] = bp_f16_to_f32(get_u16(in + 2 * i));
    } else if (f == BP_KV_FP8_E4M3) {
        uint32_t sb = 0;
        for (int b = 0; b < 4; b++)
            sb |= (uint32_t)in[b] << (8 * b);
        float s;
        memcpy(&s, &sb, 4);
        if (!(isfinite(s) && s > 0))
            return bp_error_set(err, BP_EFORMAT,
                                "KV unpack: fp8 scale %g must be finite and > 0", (double)s);
        bp_format fmt;
        fp8_format(&fmt);
        bp_qparams p = {s, 0.0f};
        for (int64_t i = 0; i < n; i++) {
            const uint8_t c = in[4 + i];
            if ((c & 0x7fu) == 0x7fu)
                return bp_error_set(err, BP_EFORMAT,
                                    "KV unpack: fp8 code at element %lld is NaN",
                                    (long long)i);
            out[i] = bp_format_decode(&fmt, &p, c);
        }
    } else {
        const int bits = int_bits(f);
        const uint64_t gb = int_group_bytes(f, D);
        for (int64_t g = 0; g < T * H; g++) {
            const uint8_t *o = in + (uint64_t)g * gb;
            const float s = bp_f16_to_f32(get_u16(o));
            if (!isfinite(s) || signbit(s))
                return bp_error_set(err, BP_EFORMAT,
                                    "KV unpack: scale of token %lld, head %lld is %g "
                                    "(must be finite and >= 0)",
                                    (long long)(g / H), (long long)(g % H), (double)s);
            for (int64_t i = 0; i < D; i++) {
                int c;
                if (bits == 8) {
                    c = (int)(int8_t)o[2 + i];
                } else {
                    c = (o[2 + i / 2] >> (4 * (i & 1))) & 0xf;
                    c = c >= 8 ? c - 16 : c;
                }
                out[g * D + i] = s * (float)c;
            }
        }
    }
    return BP_OK;
}

/* ---- calibration and the error term ---------------------------------------- */

/* Per-layer KV formats saved while a helper runs the model its own way. */
static bp_kv_format *save_formats(const bp_llama *l, int64_t n_layers)
{
    bp_kv_format *s = malloc(sizeof *s * (size_t)n_layers);
    for (int64_t i = 0; s && i < n_layers; i++)
        s[i] = bp_llama_get_kv_format(l, i);
    return s;
}

/* Scales are never cleared while formats are saved, so every saved format
 * can be set again. */
static void restore_formats(bp_llama *l, const bp_kv_format *s, int64_t n_layers)
{
    for (int64_t i = 0; i < n_layers; i++)
        bp_llama_set_kv_format(l, i, s[i], NULL);
}

typedef int (*drive_fn)(bp_llama *l, const void *ctx, bp_error *err);

/* Run `drive` with full-precision KV while observing K/V maxima, then set
 * every layer's fp8 scales from them. */
static int calibrate_with(bp_llama *l, drive_fn drive, const void *ctx, bp_error *err)
{
    const int64_t nl = bp_llama_get_config(l)->n_layers;
    bp_kv_format *saved = save_formats(l, nl);
    if (!saved)
        return bp_error_set(err, BP_ENOMEM, "KV calibration: out of memory");
    bp_llama_reset_kv_formats(l);
    bp_llama_kv_observe(l, 1);
    int rc = drive(l, ctx, err);
    bp_llama_kv_observe(l, 0);
    for (int64_t i = 0; rc == BP_OK && i < nl; i++) {
        float ka, va;
        bp_llama_kv_absmax(l, i, &ka, &va, NULL);
        if (!isfinite(ka) || !isfinite(va))
            rc = bp_error_set(err, BP_EINVAL,
                              "KV calibration: layer %lld has non-finite K or V", (long long)i);
        else
            rc = bp_llama_set_kv_fp8_scales(l, i, bp_kv_fp8_scale(ka), bp_kv_fp8_scale(va),
                                            err);
    }
    restore_formats(l, saved, nl);
    free(saved);
    return rc;
}

typedef struct token_batch {
    const uint32_t *tokens;
    int64_t n_seq, seq_len;
} token_batch;

static int drive_tokens(bp_llama *l, const void *ctx, bp_error *err)
{
    const token_batch *b = ctx;
    return bp_llama_forward_batch(l, b->tokens, b->n_seq, b->seq_len, NULL, NULL, err);
}

static int drive_reference(bp_llama *l, const void *ctx, bp_error *err)
{
    const bp_eval_reference *ref = ctx;
    int64_t first, n_win, c;
    bp_eval_reference_range(ref, &first, &n_win, &c);
    bp_eval_sums s;
    return bp_eval_compare(l, ref, first, n_win, &s, err);
}

int bp_kv_calibrate_fp8(bp_llama *l, const uint32_t *tokens, int64_t n_seq,
                        int64_t seq_len, bp_error *err)
{
    if (!l || !tokens)
        return bp_error_set(err, BP_EINVAL, "KV calibration: NULL argument");
    token_batch b = {tokens, n_seq, seq_len};
    return calibrate_with(l, drive_tokens, &b, err);
}

int bp_kv_calibrate_fp8_ref(bp_llama *l, const bp_eval_reference *ref, bp_error *err)
{
    if (!l || !ref)
        return bp_error_set(err, BP_EINVAL, "KV calibration: NULL argument");
    return calibrate_with(l, drive_reference, ref, err);
}

int bp_kv_measure_layer(bp_llama *l, const bp_eval_reference *ref, int64_t layer,
                        bp_kv_format f, double *dkl, bp_error *err)
{
    if (!l || !ref || !dkl)
        return bp_error_set(err, BP_EINVAL, "KV measure: NULL argument");
    const int64_t nl = bp_llama_get_config(l)->n_layers;
    if (layer < 0 || layer >= nl)
        return bp_error_set(err, BP_EINVAL, "KV measure: layer %lld out of range [0, %lld)",
                            (long long)layer, (long long)nl);
    if (!bp_kv_format_name(f))
        return bp_error_set(err, BP_EINVAL, "KV measure: unknown KV format %d", (int)f);
    float ks, vs;
    bp_llama_get_kv_fp8_scales(l, layer, &ks, &vs);
    int rc;
    if (f == BP_KV_FP8_E4M3 && (ks == 0 || vs == 0) &&
        (rc = bp_kv_calibrate_fp8_ref(l, ref, err)) != BP_OK)
        return rc;
    bp_kv_format *saved = save_formats(l, nl);
    if (!saved)
        return bp_error_set(err, BP_ENOMEM, "KV measure: out of memory");
    bp_llama_reset_kv_formats(l);
    rc = bp_llama_set_kv_format(l, layer, f, err);
    int64_t first, n_win, c;
    bp_eval_reference_range(ref, &first, &n_win, &c);
    bp_eval_sums s;
    if (rc == BP_OK)
        rc = bp_eval_compare(l, ref, first, n_win, &s, err);
    restore_formats(l, saved, nl);
    free(saved);
    if (rc != BP_OK) {
        if (err)
            bp_error_prefix(err, "KV layer %lld, %s", (long long)layer, bp_kv_format_name(f));
        return rc;
    }
    const double kl = bp_eval_sums_mean_kl(&s);
    /* Rounding can leave a tiny negative KL for a harmless change. */
    *dkl = kl > 0.0 ? kl : 0.0;
    return BP_OK;
}

typedef struct capture {
    int layer;
    float *dst;     /* n_tokens x dim */
    int64_t n;      /* floats captured */
    int64_t cap;
} capture;

static void capture_attn_out(void *ctx, int layer, bp_linear_input which, const float *x,
                             int64_t n_tokens, int64_t dim)
{
    capture *c = ctx;
    if (layer == c->layer && which == BP_LINEAR_ATTN_O && n_tokens * dim <= c->cap) {
        memcpy(c->dst, x, sizeof *x * (size_t)(n_tokens * dim));
        c->n = n_tokens * dim;
    }
}

int bp_kv_measure_layer_mse(bp_llama *l, const uint32_t *tokens, int64_t n_seq,
                            int64_t seq_len, int64_t layer, bp_kv_format f, double *mse,
                            bp_error *err)
{
    if (!l || !tokens || !mse)
        return bp_error_set(err, BP_EINVAL, "KV measure: NULL argument");
    const bp_llama_config *cfg = bp_llama_get_config(l);
    if (layer < 0 || layer >= cfg->n_layers)
        return bp_error_set(err, BP_EINVAL, "KV measure: layer %lld out of range [0, %lld)",
                            (long long)layer, (long long)cfg->n_layers);
    if (!bp_kv_format_name(f))
        return bp_error_set(err, BP_EINVAL, "KV measure: unknown KV format %d", (int)f);
    if (n_seq < 1 || seq_len < 1 || n_seq > INT64_MAX / seq_len ||
        n_seq * seq_len > (INT64_MAX / 4) / (cfg->n_heads * cfg->head_dim))
        return bp_error_set(err, BP_EINVAL, "KV measure: bad batch %lld x %lld",
                            (long long)n_seq, (long long)seq_len);
    const int64_t n = n_seq * seq_len * cfg->n_heads * cfg->head_dim;
    float *ref = malloc(sizeof *ref * (size_t)n), *q = malloc(sizeof *q * (size_t)n);
    bp_kv_format *saved = save_formats(l, cfg->n_layers);
    int rc = BP_OK;
    if (!ref || !q || !saved) {
        rc = bp_error_set(err, BP_ENOMEM, "KV measure: out of memory");
        goto out;
    }
    capture c = {(int)layer, ref, 0, n};
    bp_llama_hooks h = {capture_attn_out, &c, (int)layer + 1};
    bp_llama_reset_kv_formats(l);
    if ((rc = bp_llama_forward_batch(l, tokens, n_seq, seq_len, NULL, &h, err)) != BP_OK ||
        (rc = bp_llama_set_kv_format(l, layer, f, err)) != BP_OK)
        goto out;
    c.dst = q;
    c.n = 0;
    if ((rc = bp_llama_forward_batch(l, tokens, n_seq, seq_len, NULL, &h, err)) != BP_OK)
        goto out;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)ref[i] - (double)q[i];
        sum += d * d;
    }
    *mse = sum / (double)n;
out:
    if (saved)
        restore_formats(l, saved, cfg->n_layers);
    free(saved);
    free(ref);
    free(q);
    return rc;
}
