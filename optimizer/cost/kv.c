/* KV cache byte costs per layer and KV precision (docs/cost-models.md). */
#include <string.h>

#include "cost_internal.h"

static const char *const kv_names[BP_KV_FORMAT_COUNT] = {"f16", "fp8_e4m3", "int8",
                                                         "int4"};

const char *bp_kv_format_name(bp_kv_format f)
{
    return (unsigned)f < BP_KV_FORMAT_COUNT ? kv_names[f] : NULL;
}

int bp_kv_format_parse(const char *name, bp_kv_format *out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_kv_format_parse: NULL out");
    for (int f = 0; name && f < BP_KV_FORMAT_COUNT; f++)
        if (strcmp(name, kv_names[f]) == 0) {
            *out = (bp_kv_format)f;
            return BP_OK;
        }
    return bp_error_set(err, BP_EINVAL,
                        "unknown KV cache format \"%s\" (known: f16, fp8_e4m3, int8, int4)",
                        name ? name : "(null)");
}

static int check_shape(const bp_kv_shape *s, int64_t context, int64_t batch, bp_error *err)
{
    if (!s)
        return bp_error_set(err, BP_EINVAL, "KV cache: NULL shape");
    if (s->n_layers < 1 || s->n_kv_heads < 1 || s->head_dim < 1)
        return bp_error_set(err, BP_EINVAL,
                            "KV cache: n_layers %lld, n_kv_heads %lld, head_dim %lld must "
                            "all be >= 1",
                            (long long)s->n_layers, (long long)s->n_kv_heads,
                            (long long)s->head_dim);
    if (context < 1 || batch < 1)
        return bp_error_set(err, BP_EINVAL,
                            "KV cache: context %lld and batch %lld must be >= 1",
                            (long long)context, (long long)batch);
    return BP_OK;
}

int bp_kv_bytes(const bp_kv_shape *s, bp_kv_format f, int64_t context, int64_t batch,
                uint64_t *bytes, bp_error *err)
{
    if (!bytes)
        return bp_error_set(err, BP_EINVAL, "bp_kv_bytes: NULL bytes");
    *bytes = 0;
    int rc = check_shape(s, context, batch, err);
    if (rc)
        return rc;
    uint64_t D = (uint64_t)s->head_dim;
    uint64_t per_head; /* bytes per (token, head) for K or V */
    uint64_t fixed = 0; /* bytes per layer independent of tokens */
    switch (f) {
    case BP_KV_F16:
        per_head = 2 * D;
        break;
    case BP_KV_FP8_E4M3:
        per_head = D;
        fixed = 8; /* fp32 K scale + fp32 V scale */
        break;
    case BP_KV_INT8:
        per_head = D + 2; /* fp16 scale */
        break;
    case BP_KV_INT4:
        per_head = D / 2 + D % 2 + 2; /* two codes per byte, fp16 scale */
        break;
    default:
        return bp_error_set(err, BP_EINVAL, "KV cache: unknown format %d", (int)f);
    }
    uint64_t v = 2; /* K and V */
    if (__builtin_mul_overflow(v, (uint64_t)batch, &v) ||
        __builtin_mul_overflow(v, (uint64_t)context, &v) ||
        __builtin_mul_overflow(v, (uint64_t)s->n_kv_heads, &v) ||
        __builtin_mul_overflow(v, per_head, &v) || __builtin_add_overflow(v, fixed, &v))
        return bp_error_set(err, BP_EINVAL,
                            "KV cache: %s at context %lld, batch %lld: byte count overflows "
                            "64 bits",
                            kv_names[f], (long long)context, (long long)batch);
    *bytes = v;
    return BP_OK;
}

int bp_kv_bytes_total(const bp_kv_shape *s, const bp_kv_format *per_layer,
                      int64_t context, int64_t batch, uint64_t *bytes, bp_error *err)
{
    if (!bytes)
        return bp_error_set(err, BP_EINVAL, "bp_kv_bytes_total: NULL bytes");
    *bytes = 0;
    int rc = check_shape(s, context, batch, err);
    if (rc)
        return rc;
    if (!per_layer)
        return bp_error_set(err, BP_EINVAL, "KV cache: NULL per-layer formats");
    uint64_t sum = 0;
    for (int64_t i = 0; i < s->n_layers; i++) {
        uint64_t b;
        if ((rc = bp_kv_bytes(s, per_layer[i], context, batch, &b, err)))
            return bp_error_prefix(err, "layer %lld", (long long)i);
        if (__builtin_add_overflow(sum, b, &sum))
            return bp_error_set(err, BP_EINVAL, "KV cache: total over %lld layers overflows "
                                                "64 bits",
                                (long long)s->n_layers);
    }
    *bytes = sum;
    return BP_OK;
}
