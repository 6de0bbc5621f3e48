/* bitplan: applying a plan — quantizing tensors with bitplan's kernels and
 * writing the result.
 *
 * bp_apply_tensor is the work unit "quantize one tensor to this format": it
 * reads the tensor, quantizes it (RTN, or GPTQ given the input Hessian), and
 * returns the packed bytes (layout in docs/formats.md) and/or the dequantized
 * weights. bp_apply_model streams a whole model through it, one tensor at a
 * time, so memory stays at about one tensor whatever the model size.
 *
 * Packed output (docs/packed-model.md): a model directory with config.json,
 * the plan as bitplan_plan.json, and model.safetensors in which each
 * quantized tensor is a U8 tensor of exactly the plan's bytes under its
 * original name; every other tensor is copied unchanged. The safetensors
 * metadata entry "bitplan" holds a JSON object mapping each quantized tensor
 * to its format, shape and method (and block map, for a blocked tensor,
 * whose bytes are its blocks' packed matrices in block order). With dequantized = 1 the output is
 * instead an ordinary model directory whose quantized weights hold their
 * dequantized values in the source dtype, readable by any Llama loader.
 */
#ifndef BITPLAN_APPLY_H
#define BITPLAN_APPLY_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"
#include "bitplan/format.h"
#include "bitplan/model.h"
#include "bitplan/plan.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Quantize one 2-D tensor. h: cols x cols input Hessian (required for
 * BP_METHOD_GPTQ and BP_METHOD_GPTQ_ACT, ignored for RTN). packed (optional) must hold exactly
 * bp_format_bytes(f, rows, cols) bytes (packed_len); deq (optional) receives
 * rows x cols dequantized floats. */
int bp_apply_tensor(const bp_tensor_info *t, const bp_format *f,
                    bp_quant_method method, const double *h, uint8_t *packed,
                    size_t packed_len, float *deq, bp_error *err);

/* Quantize one 2-D tensor under a block map (plan.h: equal blocks along
 * one axis, each with its own format; docs/blocks.md). Each block is its
 * own matrix with its own parameters; every block's nvfp4 tensor scale is
 * the whole tensor's, so a map with one format everywhere gives the
 * unblocked tensor's weights (rows axis: any format; cols axis: group
 * formats).
 *   RTN: each block quantized on its own.
 *   GPTQ, rows axis: each row block with its format and the tensor's H
 *     (exactly the rows of the whole-tensor GPTQ of that format).
 *   GPTQ, cols axis: one pass over the columns in order, each column
 *     rounded to its block's grid, error feedback crossing block
 *     boundaries (bp_gptq_quantize_col_blocks).
 * packed (optional): exactly the map's bytes (bp_plan_blocks_validate),
 * the blocks' packed matrices (docs/formats.md) concatenated in block
 * order. deq (optional): rows x cols dequantized floats in the tensor's
 * layout. h: cols x cols input Hessian, required for GPTQ. BP_EINVAL for
 * an invalid map (a format the block shape cannot store, sizes, runs) or
 * buffer length, naming the tensor. */
int bp_apply_tensor_blocks(const bp_tensor_info *t, const bp_plan_blocks *b,
                           bp_quant_method method, const double *h, uint8_t *packed,
                           size_t packed_len, float *deq, bp_error *err);

/* A plan tensor: bp_apply_tensor_blocks when it has a block map, else
 * bp_apply_tensor with its format. packed_len must equal pt->bytes. */
int bp_apply_plan_tensor(const bp_tensor_info *t, const bp_plan_tensor *pt, const double *h,
                         uint8_t *packed, size_t packed_len, float *deq, bp_error *err);

struct bp_calib;
struct bp_llama_config;

typedef struct bp_apply_options {
    int dequantized;      /* 1: write dequantized weights in the source dtype */
    int quiet;            /* no progress on stderr */
    int skip_model_hash;  /* 1: do not check the model's content hash */
    const struct bp_calib *calib;            /* Hessians for GPTQ tensors, or NULL */
    const struct bp_llama_config *cfg;       /* the model's config, with calib */
} bp_apply_options;

/* Check the plan against the model (hash, every tensor present with the
 * plan's shape) and write out_dir (created if needed). GPTQ tensors need
 * opt->calib with the plan's calibration id (BP_EINVAL / BP_EMISMATCH
 * otherwise), so the weights are exactly those the plan's errors describe. */
int bp_apply_model(const bp_plan *plan, const bp_model *model,
                   const char *out_dir, const bp_apply_options *opt,
                   bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
