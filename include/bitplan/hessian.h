/* bitplan: input second moments (GPTQ-style Hessians) of linear layers.
 *
 * For each linear-layer input of the model (per block: qkv, o, gate_up,
 * down; and lm_head) the accumulator holds, over calibration tokens x_t,
 *   H = sum_t x_t x_t^T        (dim x dim, "full" mode), or only
 *   d = sum_t x_t (.) x_t      (its diagonal, "diag" mode; always kept),
 * and the number of tokens. No 2/N factor and no damping are applied.
 *
 * Exact merging. Calibration is split into sequences of ctx tokens. Each
 * sequence's contribution is computed on its own (float X^T X by
 * cblas_ssyrk for off-diagonal terms, a double sum of squares for the
 * diagonal), rounded once to a signed 128-bit integer in units of
 * 2^-BP_HESSIAN_FX_SHIFT, and added to integer accumulators. Integer addition
 * is associative, so any split of the sequences into shards, merged in any
 * order or grouping, gives bit-identical sums; overflow is checked and
 * reported. Values convert to double only when read. Full mode stores the
 * strict upper triangle; the diagonal comes from the diag accumulator, so a
 * full run's diagonal equals a diag run's bit for bit.
 *
 * Stats files are safetensors (docs/calibration.md has the layout):
 *   <slot>.count       F64 [1]          tokens accumulated
 *   <slot>.diag        F64 [dim]        diagonal, as double
 *   <slot>.diag_fx     U8  [dim, 16]    diagonal, exact (int128 LE)
 *   <slot>.hessian_fx  U8  [dim*(dim-1)/2, 16]  strict upper triangle,
 *                                       row-major, exact (full mode)
 *   <slot>.hessian     F64 [dim, dim]   dense symmetric H (optional)
 * where <slot> is model.layers.N.self_attn.qkv, model.layers.N.self_attn.o,
 * model.layers.N.mlp.gate_up, model.layers.N.mlp.down or lm_head, plus
 * metadata (format, mode, fx_shift, ctx, calib_hash, model_hash, sequence
 * ranges).
 */
#ifndef BITPLAN_HESSIAN_H
#define BITPLAN_HESSIAN_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"
#include "bitplan/llama.h"
#include "bitplan/tokens.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BP_HESSIAN_FX_SHIFT 40

typedef enum bp_hessian_mode {
    BP_HESSIAN_FULL = 0,
    BP_HESSIAN_DIAG
} bp_hessian_mode;

typedef struct bp_hessian_options {
    bp_hessian_mode mode;
    int64_t layer_first;     /* first block collected */
    int64_t layer_count;     /* blocks collected; -1 = through the last */
    int lm_head;             /* 1: also collect the lm_head input */
    int64_t ctx;             /* tokens per calibration sequence */
    const char *model_hash;  /* optional provenance, copied; NULL = unknown */
} bp_hessian_options;

/* Full mode, every block, lm_head on, ctx 2048, no model hash. */
void bp_hessian_options_default(bp_hessian_options *o);

typedef struct bp_hessian bp_hessian;

/* An empty accumulator for the inputs of a model with config cfg. Bad
 * options -> BP_EINVAL. Caller owns *out. */
int bp_hessian_new(const bp_llama_config *cfg, const bp_hessian_options *opt,
                   bp_hessian **out, bp_error *err);
void bp_hessian_destroy(bp_hessian **h);

/* Work unit: run the model over calibration sequences
 * [seq_first, seq_first + n_seq) of `calib` (sequence s = positions
 * [s*ctx, s*ctx+ctx)) and add their contributions. `calib` is the whole
 * calibration stream; its hash is recorded and must match earlier calls
 * and merged shards (BP_EMISMATCH). A sequence already accumulated ->
 * BP_EINVAL (no double counting). `l` must match the config the accumulator
 * was made for (BP_EMISMATCH). On error the accumulator is unchanged only
 * for argument errors; after a failed forward pass destroy it. */
int bp_hessian_accumulate(bp_hessian *h, bp_llama *l, const bp_tokens *calib,
                          int64_t seq_first, int64_t n_seq, bp_error *err);

/* dst += src, exactly. Same mode, ctx, slots (names and dims),
 * calibration hash and (when both known) model hash, and disjoint sequence
 * sets; else BP_EMISMATCH / BP_EINVAL with dst unchanged. Overflow ->
 * BP_EINVAL (dst unchanged). */
int bp_hessian_merge(bp_hessian *dst, const bp_hessian *src, bp_error *err);

/* 1 when both hold bit-identical sums, counts and sequence sets. */
int bp_hessian_equal(const bp_hessian *a, const bp_hessian *b);

bp_hessian_mode bp_hessian_get_mode(const bp_hessian *h);
/* Number of input slots, in order: for each block (ascending) qkv, o,
 * gate_up, down; then lm_head. */
int bp_hessian_slot_count(const bp_hessian *h);

typedef struct bp_hessian_slot_info {
    int layer;                /* block, -1 for lm_head */
    bp_linear_input which;
    int64_t dim;
    int64_t count;            /* tokens accumulated */
    const char *name;         /* "model.layers.3.self_attn.qkv"; valid while h lives */
} bp_hessian_slot_info;

/* BP_EINVAL for slot out of range. */
int bp_hessian_slot(const bp_hessian *h, int slot, bp_hessian_slot_info *out,
                    bp_error *err);
/* Slot index for (layer, which), or -1 if not collected. Use
 * bp_llama_weight_input to go from a weight name to (layer, which). */
int bp_hessian_find(const bp_hessian *h, int layer, bp_linear_input which);

/* H as a dense symmetric dim x dim double matrix (full mode only, else
 * BP_EUNSUPPORTED). */
int bp_hessian_get_full(const bp_hessian *h, int slot, double *out, bp_error *err);
/* The diagonal, dim doubles (both modes). */
int bp_hessian_get_diag(const bp_hessian *h, int slot, double *out, bp_error *err);

/* Provenance. Strings are NULL when unknown; valid while h lives. */
const char *bp_hessian_calib_hash(const bp_hessian *h);
const char *bp_hessian_model_hash(const bp_hessian *h);
int64_t bp_hessian_ctx(const bp_hessian *h);
/* Number of sequences accumulated. */
int64_t bp_hessian_n_sequences(const bp_hessian *h);
/* Wall-clock seconds bp_hessian_accumulate spent adding contributions
 * (ssyrk, diagonal, fixed-point conversion; not the forward pass), summed
 * over threads when sequences ran in parallel. For throughput reports. */
double bp_hessian_busy_seconds(const bp_hessian *h);

/* Save flags. */
#define BP_HESSIAN_SAVE_DENSE 1u  /* also write <slot>.hessian F64 [dim, dim] */

/* Write a stats file (atomically, via bp_st_writer). */
int bp_hessian_save(const bp_hessian *h, const char *path, unsigned flags,
                    bp_error *err);
/* Read a stats file written by bp_hessian_save, validating every tensor
 * and metadata entry (BP_EFORMAT naming the file and the tensor). The
 * exact (_fx) tensors are authoritative. Caller owns *out. */
int bp_hessian_load(const char *path, bp_hessian **out, bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
