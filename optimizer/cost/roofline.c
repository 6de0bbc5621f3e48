/* Roofline latency and BOPS of a linear layer (docs/cost-models.md). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cost_internal.h"

static const char *const phase_names[] = {"decode", "prefill"};

const char *bp_cost_phase_name(bp_cost_phase p)
{
    return (unsigned)p < 2 ? phase_names[p] : NULL;
}

int bp_cost_phase_parse(const char *name, bp_cost_phase *out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_cost_phase_parse: NULL out");
    for (int p = 0; name && p < 2; p++)
        if (strcmp(name, phase_names[p]) == 0) {
            *out = (bp_cost_phase)p;
            return BP_OK;
        }
    return bp_error_set(err, BP_EINVAL, "unknown phase \"%s\" (known: decode, prefill)",
                        name ? name : "(null)");
}

int bp_cost_roofline(const bp_hw_profile *hw, const bp_format *f, int64_t rows,
                     int64_t cols, bp_cost_phase phase, int64_t batch_or_len,
                     bp_roofline *out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_cost_roofline: NULL out");
    memset(out, 0, sizeof *out);
    if (!bp_cost_phase_name(phase))
        return bp_error_set(err, BP_EINVAL, "roofline: unknown phase %d", (int)phase);
    const char *what = phase == BP_PHASE_DECODE ? "batch" : "prefill length";
    bp_compute_class cls;
    int rc = bp_cost_compute_class(hw, f, &cls, err);
    if (rc)
        return rc;
    if (rows < 1 || cols < 1)
        return bp_error_set(err, BP_EINVAL, "roofline: %s: shape %lldx%lld must be >= 1x1",
                            f->name, (long long)rows, (long long)cols);
    if (batch_or_len < 1)
        return bp_error_set(err, BP_EINVAL, "roofline: %s must be >= 1 (got %lld)", what,
                            (long long)batch_or_len);
    if (!bp_format_supports(f, rows, cols))
        return bp_error_set(err, BP_EUNSUPPORTED,
                            "roofline: format %s cannot store a %lldx%lld matrix", f->name,
                            (long long)rows, (long long)cols);
    uint64_t wbytes = bp_format_bytes(f, rows, cols);
    /* fp16 activations in (B x cols) and out (B x rows). */
    uint64_t abytes, total;
    if (__builtin_mul_overflow((uint64_t)batch_or_len, (uint64_t)rows + (uint64_t)cols,
                               &abytes) ||
        __builtin_mul_overflow(abytes, (uint64_t)2, &abytes) ||
        __builtin_add_overflow(wbytes, abytes, &total))
        return bp_error_set(err, BP_EINVAL,
                            "roofline: %lldx%lld at %s %lld: byte count overflows 64 bits",
                            (long long)rows, (long long)cols, what,
                            (long long)batch_or_len);
    out->cls = cls;
    out->weight_bytes = wbytes;
    out->activation_bytes = abytes;
    out->ops = 2.0 * (double)batch_or_len * (double)rows * (double)cols;
    out->memory_us = 1e6 * ((double)total / hw->memory_bandwidth);
    out->compute_us = 1e6 * (out->ops / hw->peak_ops[cls]);
    out->overhead_us = hw->launch_overhead_us;
    out->compute_bound = out->compute_us > out->memory_us;
    out->total_us =
        (out->compute_bound ? out->compute_us : out->memory_us) + out->overhead_us;
    return BP_OK;
}

int bp_cost_latency_us(const bp_hw_profile *hw, const bp_format *f, int64_t rows,
                       int64_t cols, bp_cost_phase phase, int64_t batch_or_len,
                       double *out_us, bp_error *err)
{
    if (!out_us)
        return bp_error_set(err, BP_EINVAL, "bp_cost_latency_us: NULL out_us");
    bp_roofline r;
    int rc = bp_cost_roofline(hw, f, rows, cols, phase, batch_or_len, &r, err);
    *out_us = rc ? NAN : r.total_us;
    return rc;
}

int bp_cost_bops(const bp_format *f, int64_t rows, int64_t cols, int64_t tokens,
                 int a_bits, uint64_t *out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_cost_bops: NULL out");
    *out = 0;
    bp_compute_class cls;
    int rc = bp_cost_native_class(f, &cls, err);
    if (rc)
        return rc;
    if (a_bits == 0)
        a_bits = bp_compute_class_bits(cls);
    if (a_bits < 1 || a_bits > 32)
        return bp_error_set(err, BP_EINVAL, "bops: %s: a_bits %d out of range 1..32",
                            f->name, a_bits);
    if (rows < 1 || cols < 1 || tokens < 1)
        return bp_error_set(err, BP_EINVAL,
                            "bops: %s: shape %lldx%lld and tokens %lld must be >= 1",
                            f->name, (long long)rows, (long long)cols, (long long)tokens);
    uint64_t v = (uint64_t)f->bits * (uint64_t)a_bits;
    if (__builtin_mul_overflow(v, (uint64_t)rows, &v) ||
        __builtin_mul_overflow(v, (uint64_t)cols, &v) ||
        __builtin_mul_overflow(v, (uint64_t)tokens, &v))
        return bp_error_set(err, BP_EINVAL,
                            "bops: %s: %lldx%lld over %lld tokens overflows 64 bits",
                            f->name, (long long)rows, (long long)cols, (long long)tokens);
    *out = v;
    return BP_OK;
}
