/* The format registry: names, the menu, support rules and exact sizes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats_internal.h"

static const int int_bits[] = {2, 3, 4, 5, 6, 8};
static const int int_groups[] = {32, 64, 128, 0}; /* 0 = per row ("pc") */
#define N_INT_BITS (sizeof int_bits / sizeof int_bits[0])
#define N_INT_GROUPS (sizeof int_groups / sizeof int_groups[0])

static void set_name(bp_format *f)
{
    switch (f->kind) {
    case BP_FMT_INT:
        if (f->group)
            snprintf(f->name, sizeof f->name, "int%d_g%d_%s", f->bits, f->group,
                     f->asym ? "asym" : "sym");
        else
            snprintf(f->name, sizeof f->name, "int%d_pc_%s", f->bits,
                     f->asym ? "asym" : "sym");
        break;
    case BP_FMT_FP8_E4M3: snprintf(f->name, sizeof f->name, "fp8_e4m3"); break;
    case BP_FMT_MXFP4: snprintf(f->name, sizeof f->name, "mxfp4"); break;
    case BP_FMT_NVFP4: snprintf(f->name, sizeof f->name, "nvfp4"); break;
    case BP_FMT_F16: snprintf(f->name, sizeof f->name, "f16"); break;
    case BP_FMT_BF16: snprintf(f->name, sizeof f->name, "bf16"); break;
    }
}

static void make(bp_format *f, bp_format_kind kind, int bits, int group, int asym)
{
    memset(f, 0, sizeof *f);
    f->kind = kind;
    f->bits = bits;
    f->group = group;
    f->asym = asym;
    set_name(f);
}

#define GRAMMAR                                                               \
    "int{2,3,4,5,6,8}_g{32,64,128}_{sym,asym}, int{2,3,4,5,6,8}_pc_{sym,asym}, " \
    "fp8_e4m3, mxfp4, nvfp4, f16, bf16"

int bp_format_parse(const char *name, bp_format *out, bp_error *err)
{
    if (!name || !out)
        return bp_error_set(err, BP_EINVAL, "format name: NULL argument");
    /* Compare against every canonical name: the menu is small, and this
     * rejects every non-canonical spelling (leading zeros, case, spaces). */
    bp_format menu[64];
    size_t n = bp_format_menu(menu, sizeof menu / sizeof menu[0]);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(menu[i].name, name) == 0) {
            *out = menu[i];
            return BP_OK;
        }
    }
    return bp_error_set(err, BP_EINVAL, "format '%.64s': unknown; expected one of " GRAMMAR,
                        name);
}

size_t bp_format_menu(bp_format *out, size_t cap)
{
    size_t n = 0;
    bp_format f;
    for (size_t b = 0; b < N_INT_BITS; b++)
        for (size_t g = 0; g < N_INT_GROUPS; g++)
            for (int asym = 0; asym <= 1; asym++) {
                make(&f, BP_FMT_INT, int_bits[b], int_groups[g], asym);
                if (out && n < cap)
                    out[n] = f;
                n++;
            }
    static const struct {
        bp_format_kind kind;
        int bits, group;
    } rest[] = {
        {BP_FMT_FP8_E4M3, 8, 0}, {BP_FMT_MXFP4, 4, 32}, {BP_FMT_NVFP4, 4, 16},
        {BP_FMT_F16, 16, 0},     {BP_FMT_BF16, 16, 0},
    };
    for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++) {
        make(&f, rest[i].kind, rest[i].bits, rest[i].group, 0);
        if (out && n < cap)
            out[n] = f;
        n++;
    }
    return n;
}

/* A format struct may be built by hand: accept only combinations the
 * registry defines, so kernels never see e.g. int7 or group 48. */
static int valid_format(const bp_format *f)
{
    if (!f)
        return 0;
    switch (f->kind) {
    case BP_FMT_INT: {
        int okb = 0, okg = 0;
        for (size_t i = 0; i < N_INT_BITS; i++)
            okb |= f->bits == int_bits[i];
        for (size_t i = 0; i < N_INT_GROUPS; i++)
            okg |= f->group == int_groups[i];
        return okb && okg && (f->asym == 0 || f->asym == 1);
    }
    case BP_FMT_FP8_E4M3: return f->bits == 8 && f->group == 0;
    case BP_FMT_MXFP4: return f->bits == 4 && f->group == 32;
    case BP_FMT_NVFP4: return f->bits == 4 && f->group == 16;
    case BP_FMT_F16:
    case BP_FMT_BF16: return f->bits == 16 && f->group == 0;
    }
    return 0;
}

int bp_format_supports(const bp_format *f, int64_t rows, int64_t cols)
{
    if (!valid_format(f) || rows < 1 || cols < 1)
        return 0;
    if (f->group > 0 && cols % f->group != 0)
        return 0;
    return bp_format_bytes(f, rows, cols) != 0;
}

int64_t bp_format_groups_per_row(const bp_format *f, int64_t cols)
{
    if (!f || cols < 1)
        return 0;
    return f->group > 0 ? cols / f->group : 1;
}

/* Parameter bytes per row (excluding nvfp4's per-tensor fp32). */
static uint64_t param_bytes_per_row(const bp_format *f, int64_t cols)
{
    uint64_t g = (uint64_t)bp_format_groups_per_row(f, cols);
    switch (f->kind) {
    case BP_FMT_INT: return g * (f->asym ? 4u : 2u); /* fp16 scale (+ fp16 offset) */
    case BP_FMT_FP8_E4M3: return 2;                   /* fp16 scale */
    case BP_FMT_MXFP4: return g;                      /* E8M0 */
    case BP_FMT_NVFP4: return g;                      /* E4M3 */
    case BP_FMT_F16:
    case BP_FMT_BF16: return 0;
    }
    return 0;
}

uint64_t bp_format_bytes(const bp_format *f, int64_t rows, int64_t cols)
{
    if (!valid_format(f) || rows < 1 || cols < 1)
        return 0;
    if (f->group > 0 && cols % f->group != 0)
        return 0;
    uint64_t bits, row_bytes, total;
    if (__builtin_mul_overflow((uint64_t)cols, (uint64_t)f->bits, &bits))
        return 0;
    row_bytes = bits / 8 + (bits % 8 != 0);
    if (__builtin_add_overflow(row_bytes, param_bytes_per_row(f, cols), &row_bytes))
        return 0;
    if (__builtin_mul_overflow(row_bytes, (uint64_t)rows, &total))
        return 0;
    if (f->kind == BP_FMT_NVFP4 && __builtin_add_overflow(total, 4u, &total))
        return 0;
    return total;
}

double bp_format_bpw(const bp_format *f, int64_t rows, int64_t cols)
{
    uint64_t b = bp_format_bytes(f, rows, cols);
    if (!b)
        return 0.0;
    return 8.0 * (double)b / ((double)rows * (double)cols);
}

double bp_format_nominal_bpw(const bp_format *f)
{
    if (!valid_format(f))
        return 0.0;
    switch (f->kind) {
    case BP_FMT_INT:
        if (!f->group)
            return f->bits;
        return f->bits + (f->asym ? 32.0 : 16.0) / f->group;
    case BP_FMT_FP8_E4M3: return 8.0;
    case BP_FMT_MXFP4: return 4.25;
    case BP_FMT_NVFP4: return 4.5;
    case BP_FMT_F16:
    case BP_FMT_BF16: return 16.0;
    }
    return 0.0;
}

float bp_format_tensor_param(const bp_format *f, float tensor_absmax)
{
    if (!f || f->kind != BP_FMT_NVFP4)
        return 0.0f;
    if (!(tensor_absmax > 0.0f) || !isfinite(tensor_absmax))
        return 0.0f;
    float t = tensor_absmax / (BP__E4M3_MAX * BP__E2M1_MAX);
    /* A subnormal absmax can underflow the division: keep it positive so
     * nonzero blocks still get a nonzero scale. */
    return t > 0.0f ? t : 0x1p-149f;
}

int bp__format_valid(const bp_format *f)
{
    return valid_format(f);
}
