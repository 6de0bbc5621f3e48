/* bitplan: KV-cache quantizers and the measured error of a quantized cache.
 *
 * One K (or V) slab is n_tokens x n_heads x head_dim floats, row-major (the
 * layout of the forward pass's K and V buffers: token, then head, then
 * element). Each bp_kv_format stores it exactly as the byte model of
 * include/bitplan/cost.h (bp_kv_bytes) counts it; for one layer,
 * 2 * bp_kv_slab_bytes(f, T, H, D) == bp_kv_bytes(shape{H, D}, f, T, 1).
 * Packed layouts (all little-endian; docs/calibration.md, "KV-cache error"):
 *   f16       T*H*D fp16 values
 *   fp8_e4m3  one fp32 scale s, then T*H*D E4M3 codes; value = s * e4m3(code)
 *   int8      per (token, head): fp16 scale s, then D int8 codes;
 *             value = s * code
 *   int4      per (token, head): fp16 scale s, then ceil(D/2) bytes holding
 *             two's-complement 4-bit codes, element 2i in the low nibble of
 *             byte i, element 2i+1 in the high nibble (0 pad for odd D)
 * int8 and int4 are symmetric with s = fp16(absmax / qmax) (qmax 127, 7),
 * rounded to fp16 before use so the values are what a real cache holds; a
 * zero head vector stores s = 0. fp8_e4m3 uses a static per-layer scale
 * chosen by calibration (bp_kv_fp8_scale of the absmax seen over calibration
 * data), as deployed runtimes do: every token is quantized with it, values
 * beyond 448 * s saturate.
 *
 * bp_kv_qdq gives exactly the values bp_kv_unpack(bp_kv_pack(x)) gives.
 * Everything here is single-threaded and deterministic.
 */
#ifndef BITPLAN_KV_QUANT_H
#define BITPLAN_KV_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/cost.h"
#include "bitplan/error.h"
#include "bitplan/llama.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest E4M3 magnitude (OCP FP8). */
#define BP_KV_FP8_MAX 448.0f

/* Bytes of one packed slab (layouts above); 0 for a bad format, a
 * non-positive dimension or overflow. */
uint64_t bp_kv_slab_bytes(bp_kv_format f, int64_t n_tokens, int64_t n_heads,
                          int64_t head_dim);

/* The fp8 scale for values of absolute maximum absmax: absmax / 448, so the
 * largest calibration value maps to the largest E4M3 value; 1 when absmax
 * is 0 or not finite (every value is then 0, or the caller reports). */
float bp_kv_fp8_scale(float absmax);

/* Quantize and dequantize a slab: out (may equal x) receives the values a
 * cache in format f holds. fp8_scale is used by fp8_e4m3 only (finite,
 * > 0). A non-finite input -> BP_EINVAL naming (token, head, element). */
int bp_kv_qdq(bp_kv_format f, const float *x, int64_t n_tokens, int64_t n_heads,
              int64_t head_dim, float fp8_scale, float *out, bp_error *err);

/* Pack a slab into exactly bp_kv_slab_bytes bytes (out_len must be that).
 * Errors as bp_kv_qdq. */
int bp_kv_pack(bp_kv_format f, const float *x, int64_t n_tokens, int64_t n_heads,
               int64_t head_dim, float fp8_scale, uint8_t *out, size_t out_len,
               bp_error *err);

/* Unpack; len must be bp_kv_slab_bytes. A non-finite or negative scale or
 * a NaN fp8 code -> BP_EFORMAT naming its position. */
int bp_kv_unpack(bp_kv_format f, const uint8_t *in, size_t len, int64_t n_tokens,
                 int64_t n_heads, int64_t head_dim, float *out, bp_error *err);

/* Calibrate the fp8 scales of every layer from the absmax of K (after RoPE)
 * and V over n_seq sequences of seq_len tokens: runs `l` with every layer's
 * KV at full precision (its KV formats are restored afterwards) and sets
 * each layer's scales with bp_llama_set_kv_fp8_scales. */
int bp_kv_calibrate_fp8(bp_llama *l, const uint32_t *tokens, int64_t n_seq,
                        int64_t seq_len, bp_error *err);

/* The same over the windows of a reference (bp_eval_reference_new). */
int bp_kv_calibrate_fp8_ref(bp_llama *l, const bp_eval_reference *ref, bp_error *err);

/* The KV-cache error term of (layer, f): the mean KL(P_ref || P) in nats
 * per scored token over all of the reference's windows, where P is `l` with
 * only this layer's K and V quantized to f (every other layer at full
 * precision; l's KV formats are restored afterwards). The reference must
 * come from the same model with its default (full precision) KV. f16 is
 * the full-precision baseline, so its term is the reference's own
 * mismatch, normally 0. For fp8_e4m3, a layer without scales is calibrated
 * first on the reference windows (bp_kv_calibrate_fp8_ref; the scales stay
 * set on l). Tiny negative KLs from rounding are reported as 0. BP_EINVAL
 * for a bad layer or format. */
int bp_kv_measure_layer(bp_llama *l, const bp_eval_reference *ref, int64_t layer,
                        bp_kv_format f, double *dkl, bp_error *err);

/* A local variant: the mean squared error, per element, of the layer's
 * attention output (the input of o_proj) with this layer's K and V in f
 * against full precision, over n_seq sequences of seq_len tokens. Only
 * blocks [0, layer] run; every layer runs at full-precision KV (l's
 * formats are restored afterwards). Summed in double in token order, so
 * deterministic. For fp8_e4m3 the layer needs scales (BP_EINVAL
 * otherwise). */
int bp_kv_measure_layer_mse(bp_llama *l, const uint32_t *tokens, int64_t n_seq,
                            int64_t seq_len, int64_t layer, bp_kv_format f, double *mse,
                            bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
