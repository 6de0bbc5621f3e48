/* bitplan: the quantization format registry, its exact storage costs and its
 * reference kernels.
 *
 * A format is named by a canonical string:
 *   int{2,3,4,5,6,8}_g{32,64,128}_{sym,asym}  groups along the input dim
 *   int{2,3,4,5,6,8}_pc_{sym,asym}            one group per output row
 *   fp8_e4m3                                  per output row fp16 scale
 *   mxfp4                                     E2M1, blocks of 32, E8M0 scale
 *   nvfp4                                     E2M1, blocks of 16, E4M3 scale,
 *                                             one fp32 tensor scale
 *   f16, bf16                                 kept in 16-bit float
 * A weight matrix has `rows` output channels and `cols` input channels
 * (the Hugging Face [out, in] layout). Packed layouts are documented in
 * docs/formats.md; bp_format_bytes() is the exact size of that layout.
 *
 * Quantization is split into codes (one uint16 per weight, unpacked) and
 * per-group parameters, so that RTN, GPTQ, packing and dequantization all
 * share one definition of every value a format can represent. Parameters are
 * always stored already rounded to their on-disk precision (fp16, E8M0,
 * E4M3), so dequantizing codes gives exactly the values a reader of the
 * packed file gets.
 */
#ifndef BITPLAN_FORMAT_H
#define BITPLAN_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bp_format_kind {
    BP_FMT_INT = 0,
    BP_FMT_FP8_E4M3,
    BP_FMT_MXFP4,
    BP_FMT_NVFP4,
    BP_FMT_F16,
    BP_FMT_BF16
} bp_format_kind;

#define BP_FORMAT_NAME_MAX 32

typedef struct bp_format {
    bp_format_kind kind;
    int bits;   /* bits per element code: 2..8 int, 8 fp8, 4 mxfp4/nvfp4, 16 */
    int group;  /* elements per parameter group along cols; 0 = whole row */
    int asym;   /* BP_FMT_INT only: 1 = fp16 scale + fp16 offset */
    char name[BP_FORMAT_NAME_MAX]; /* canonical name */
} bp_format;

/* Parse a canonical name. BP_EINVAL with a message listing the grammar. */
int bp_format_parse(const char *name, bp_format *out, bp_error *err);

/* The full default menu (every int bit width x group x sym/asym, fp8,
 * mxfp4, nvfp4, f16, bf16) in a fixed order. Returns the count; writes at
 * most cap entries. */
size_t bp_format_menu(bp_format *out, size_t cap);

/* 1 when the format can store a rows x cols matrix (e.g. cols divisible by
 * the group size), else 0. */
int bp_format_supports(const bp_format *f, int64_t rows, int64_t cols);

/* Exact bytes of the packed layout, scales included. 0 if unsupported. */
uint64_t bp_format_bytes(const bp_format *f, int64_t rows, int64_t cols);

/* Effective bits per weight: 8 * bytes / (rows * cols). */
double bp_format_bpw(const bp_format *f, int64_t rows, int64_t cols);

/* Nominal bits per weight for typical large shapes (group formats: exact;
 * per-row formats: element bits), for menus and summaries. */
double bp_format_nominal_bpw(const bp_format *f);

/* Number of parameter groups per row (cols / group, or 1 for per-row). */
int64_t bp_format_groups_per_row(const bp_format *f, int64_t cols);

/* Group parameters, already rounded to on-disk precision.
 *  int sym:  value = scale * code_signed
 *  int asym: value = scale * code + offset
 *  fp8:      value = scale * e4m3(code)
 *  mxfp4:    value = scale * e2m1(code)     (scale a power of two, E8M0)
 *  nvfp4:    value = scale * e2m1(code)     (scale = e4m3 block scale * tensor scale)
 *  f16/bf16: value = decode16(code); params unused */
typedef struct bp_qparams {
    float scale;
    float offset;
} bp_qparams;

/* Tensor-level parameter: nvfp4's fp32 tensor scale from the tensor's
 * absolute maximum; 0 for every other format. */
float bp_format_tensor_param(const bp_format *f, float tensor_absmax);

/* Fit one group's parameters to n values (RTN with the clipping search
 * documented in docs/formats.md, minimizing squared error). */
void bp_format_fit_group(const bp_format *f, const float *x, int64_t n,
                         float tensor_param, bp_qparams *out);

/* Round one value to the nearest representable code under p. */
uint16_t bp_format_encode(const bp_format *f, const bp_qparams *p, float x);
/* The value a code represents under p. */
float bp_format_decode(const bp_format *f, const bp_qparams *p, uint16_t code);

/* RTN quantization of nrows full rows (cols each): codes[nrows*cols] and
 * params[nrows * groups_per_row]. OpenMP across rows. */
int bp_format_quantize_rows(const bp_format *f, const float *w, int64_t nrows,
                            int64_t cols, float tensor_param, uint16_t *codes,
                            bp_qparams *params, bp_error *err);

/* Inverse: out[nrows*cols]. OpenMP across rows. */
void bp_format_dequantize_rows(const bp_format *f, const uint16_t *codes,
                               const bp_qparams *params, int64_t nrows,
                               int64_t cols, float *out);

/* Fused RTN quantize + dequantize + error for the sweep, without storing
 * codes: for each row r, sse[r] = sum_j (w - q(w))^2 and, when colw is not
 * NULL, wsse[r] = sum_j colw[j] (w - q(w))^2, both summed exactly as
 * bp_format_error_rows sums them (float per 128-column block, double across
 * blocks, fixed lanes; docs/formats.md), so
 * bp_format_error_rows(w, dequantized, ...) reproduces them bit for bit.
 * The dequantized values are exactly those quantize_rows + dequantize_rows
 * give. qdq (optional, nrows*cols) receives them. wsse without colw: NaN.
 * BP_EINVAL for a non-finite weight, a bad colw or colw without wsse;
 * BP_EUNSUPPORTED for a shape the format cannot store. */
int bp_format_rtn_error_rows(const bp_format *f, const float *w, int64_t nrows,
                             int64_t cols, float tensor_param, const float *colw,
                             double *sse, double *wsse, float *qdq,
                             bp_error *err);

/* The per-row error of approximate weights wq against w (both nrows x cols,
 * row-major): sse[r] = sum_j d_j^2 and, when colw (cols values) is not NULL,
 * wsse[r] = sum_j colw[j] d_j^2, with d_j = w[j] - wq[j] in float.
 * Summation order (docs/formats.md, "Per-row error"): column j into lane
 * j mod 16, in float within each block of 128 columns, the blocks' lanes
 * added in double, lanes reduced in a fixed pairwise tree; the same order
 * as bp_format_rtn_error_rows, with any thread count and instruction set.
 * wsse may be NULL; with colw NULL, a non-NULL wsse gets NaN. Non-finite
 * inputs give non-finite sums. Nothing is done when w, wq or sse is NULL or
 * the shape is empty. OpenMP across rows. */
void bp_format_error_rows(const float *w, const float *wq, int64_t nrows, int64_t cols,
                          const float *colw, double *sse, double *wsse);

/* Pack codes + params of a full rows x cols tensor into exactly
 * bp_format_bytes() bytes (layout in docs/formats.md). */
int bp_format_pack(const bp_format *f, int64_t rows, int64_t cols,
                   const uint16_t *codes, const bp_qparams *params,
                   float tensor_param, uint8_t *out, size_t out_len,
                   bp_error *err);

/* Unpack, validating len and every stored parameter (finite, in range). */
int bp_format_unpack(const bp_format *f, int64_t rows, int64_t cols,
                     const uint8_t *in, size_t len, uint16_t *codes,
                     bp_qparams *params, float *tensor_param, bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
