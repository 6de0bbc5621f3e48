/* bitplan: measuring intra-tensor blocks (precision inside a tensor).
 *
 * A tensor may be cut into equal blocks along one axis, each block with its
 * own format (the plan's block map, include/bitplan/plan.h): blocks of
 * output rows (BP_BLOCK_AXIS_ROWS, MixLLM-style channel sets) or of input
 * columns (BP_BLOCK_AXIS_COLS, OWQ / SliM-LLM-style column groups). The work
 * unit here measures every (block, format) cell of one tensor so a global
 * solve can pick one format per block; bp_apply_tensor_blocks
 * (include/bitplan/apply.h) produces the weights a chosen map describes.
 *
 * What is exact and what is an approximation (docs/blocks.md):
 *   rows axis: every metric (mse, hdiag, hfull, gptq) is a sum over rows,
 *     and RTN and GPTQ quantize rows independently (GPTQ given the same H),
 *     so each cell is exactly what those rows get inside any block map, and
 *     a map's error is exactly the sum of its cells.
 *   cols axis, RTN: mse and hdiag are sums over weights, so exactly
 *     additive; hfull is the block-diagonal approximation
 *     sum_b dW_b H_bb dW_b^T (the cross-block terms dW_b H_bc dW_c^T are
 *     dropped).
 *   cols axis, GPTQ: a cell is GPTQ of the block alone with the block's
 *     own Hessian H_bb (feedback only inside the block); the applied
 *     weights come from one pass whose feedback also crosses into later
 *     blocks, so cells are an approximation of the applied error (which is
 *     not additive over blocks).
 *
 * Every block of a tensor shares one nvfp4 tensor scale, computed from the
 * absolute maximum of the whole tensor, so a map using one format
 * everywhere reproduces the unblocked tensor (rows axis: every format;
 * cols axis: group formats).
 *
 * Results are bit-identical for any thread count: blocks and formats are
 * processed in order and every sum has a fixed order (below).
 */
#ifndef BITPLAN_BLOCKS_H
#define BITPLAN_BLOCKS_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"
#include "bitplan/format.h"
#include "bitplan/model.h"
#include "bitplan/plan.h"
#include "bitplan/table.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Block b's shape for a rows x cols tensor cut into blocks of `size`:
 * size x cols (rows axis) or rows x size (cols axis). */
void bp_blocks_shape(bp_block_axis axis, int64_t size, int64_t rows,
                     int64_t cols, int64_t *block_rows, int64_t *block_cols);

/* One tensor's cells. Cell (b, k) = block b, formats[k] is at index
 * b * n_formats + k. Metrics are NaN when not measured: hdiag without
 * importance, hfull without H, gptq unless the method is GPTQ, and every
 * metric of a format that is not offered. */
typedef struct bp_block_measure {
    bp_block_axis axis;
    int64_t size;               /* rows or columns per block */
    int64_t rows, cols;         /* the tensor */
    int64_t block_rows, block_cols;
    int64_t n_blocks;
    size_t n_formats;
    bp_quant_method method;
    bp_format *formats;         /* copies of the formats asked for */
    unsigned char *offered;     /* [n_formats]: 1 when bp_format_supports
                                   (format, block_rows, block_cols) */
    uint64_t *bytes;            /* [n_formats]: bp_format_bytes on the block
                                   shape (the same for every block); 0 when
                                   not offered */
    double *mse;                /* [n_blocks * n_formats]: sum of squared error */
    double *hdiag;              /* sum_j importance_j * dW_ij^2 */
    double *hfull;              /* dW_b H_bb dW_b^T (rows axis: H_bb = H) */
    double *gptq;               /* = hfull of the GPTQ weights (method GPTQ) */
} bp_block_measure;

/* Measure every (block, format) cell of tensor t (2-D, rows x cols):
 * quantize each block as its own matrix with method (RTN, or GPTQ as
 * described above) and measure it against the original weights.
 *   axis, size   the cut; size > 0 must divide the axis length.
 *   formats      n_formats > 0 formats; those the block shape cannot store
 *                are not offered (no error).
 *   importance   optional, cols values >= 0 (e.g. the Hessian diagonal):
 *                fills hdiag.
 *   h            optional cols x cols input Hessian (row-major, symmetric):
 *                fills hfull; required for GPTQ (BP_EINVAL without it).
 * Sums: per row in the order of bp_format_error_rows (mse, hdiag) or
 * bp_quant_hfull_rows (hfull), then the block's rows added in row order,
 * exactly as bp_blocks_error sums them.
 * On success *out is a new measurement owned by the caller
 * (bp_block_measure_destroy). Returns BP_EINVAL (bad arguments, with the
 * tensor's name), BP_ENOMEM, or an error of the kernels (prefixed with the
 * tensor, block and format). */
int bp_measure_blocks(const bp_tensor_info *t, bp_block_axis axis,
                      int64_t size, const bp_format *formats,
                      size_t n_formats, const float *importance,
                      const double *h, bp_quant_method method,
                      bp_block_measure **out, bp_error *err);

/* Frees *m and sets it to NULL; safe on NULL and twice. */
void bp_block_measure_destroy(bp_block_measure **m);

/* Index of cell (block, format) in the metric arrays. */
static inline size_t bp_block_measure_cell(const bp_block_measure *m,
                                           int64_t block, size_t format)
{
    return (size_t)block * m->n_formats + format;
}

/* Per-block error of approximate weights wq against w (both rows x cols,
 * row-major) under a cut, summed exactly as bp_measure_blocks sums its
 * cells, so re-measuring applied weights reproduces the measured cells bit
 * for bit. Each output has n_blocks entries and may be NULL: mse; hdiag
 * (needs importance); hfull (needs h; the block-diagonal form for the cols
 * axis). Returns BP_OK, BP_EINVAL (bad shape or cut, hdiag without
 * importance, hfull without h, non-finite values), BP_ENOMEM. */
int bp_blocks_error(const float *w, const float *wq, int64_t rows,
                    int64_t cols, bp_block_axis axis, int64_t size,
                    const float *importance, const double *h, double *mse,
                    double *hdiag, double *hfull, bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
