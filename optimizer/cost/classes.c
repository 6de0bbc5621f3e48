/* Compute classes and the format -> class mapping (docs/cost-models.md). */
#include <string.h>

#include "cost_internal.h"

static const char *const class_names[BP_COMPUTE_COUNT] = {"fp16", "int8", "fp8", "int4",
                                                          "fp4"};
static const int class_bits[BP_COMPUTE_COUNT] = {16, 8, 8, 4, 4};

const char *bp_compute_class_name(bp_compute_class c)
{
    return (unsigned)c < BP_COMPUTE_COUNT ? class_names[c] : NULL;
}

int bp_compute_class_bits(bp_compute_class c)
{
    return (unsigned)c < BP_COMPUTE_COUNT ? class_bits[c] : 0;
}

int bp_compute_class_parse(const char *name, bp_compute_class *out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_compute_class_parse: NULL out");
    for (int c = 0; name && c < BP_COMPUTE_COUNT; c++)
        if (strcmp(name, class_names[c]) == 0) {
            *out = (bp_compute_class)c;
            return BP_OK;
        }
    return bp_error_set(err, BP_EINVAL,
                        "unknown compute class \"%s\" (known: fp16, int8, fp8, int4, fp4)",
                        name ? name : "(null)");
}

int bp__cost_check_format(const bp_format *f, bp_error *err)
{
    if (!f)
        return bp_error_set(err, BP_EINVAL, "NULL format");
    if (!memchr(f->name, '\0', sizeof f->name))
        return bp_error_set(err, BP_EINVAL, "format name is not terminated");
    bp_format g;
    bp_error fe;
    if (bp_format_parse(f->name, &g, &fe) != BP_OK)
        return bp_error_set(err, BP_EINVAL, "unknown format \"%s\": %s", f->name, fe.msg);
    if (g.kind != f->kind || g.bits != f->bits || g.group != f->group || g.asym != f->asym)
        return bp_error_set(err, BP_EINVAL,
                            "format \"%s\": fields do not match its name (not made by "
                            "bp_format_parse)",
                            f->name);
    return BP_OK;
}

int bp_cost_native_class(const bp_format *f, bp_compute_class *out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_cost_native_class: NULL out");
    int rc = bp__cost_check_format(f, err);
    if (rc)
        return rc;
    switch (f->kind) {
    case BP_FMT_INT:
        /* Only 8- and 4-bit integers have tensor ops; other widths are
         * dequantized to fp16 inside the kernel. */
        *out = f->bits == 8 ? BP_COMPUTE_INT8
             : f->bits == 4 ? BP_COMPUTE_INT4
                            : BP_COMPUTE_FP16;
        return BP_OK;
    case BP_FMT_FP8_E4M3:
        *out = BP_COMPUTE_FP8;
        return BP_OK;
    case BP_FMT_MXFP4:
    case BP_FMT_NVFP4:
        *out = BP_COMPUTE_FP4;
        return BP_OK;
    case BP_FMT_F16:
    case BP_FMT_BF16:
        *out = BP_COMPUTE_FP16;
        return BP_OK;
    }
    return bp_error_set(err, BP_EINVAL, "format \"%s\": unknown kind %d", f->name,
                        (int)f->kind);
}

int bp_cost_compute_class(const bp_hw_profile *hw, const bp_format *f,
                          bp_compute_class *out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_cost_compute_class: NULL out");
    int rc = bp_hw_profile_validate(hw, err);
    if (rc)
        return rc;
    bp_compute_class c;
    if ((rc = bp_cost_native_class(f, &c, err)))
        return rc;
    if (hw->weight_only || !(hw->peak_ops[c] > 0))
        c = BP_COMPUTE_FP16;
    *out = c;
    return BP_OK;
}
