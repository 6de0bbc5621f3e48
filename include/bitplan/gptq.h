/* bitplan: data-aware quantization error metrics and GPTQ.
 *
 * Weights W are rows x cols (output x input channels, row-major float).
 * H is the cols x cols input second-moment matrix sum_t x_t x_t^T (row-major
 * double, symmetric, positive semidefinite) gathered on calibration data.
 * dW = W - What for a quantized What.
 *
 *   hdiag = sum_j H_jj ||dW[:, j]||^2     (diagonal approximation)
 *   hfull = tr(dW H dW^T)                 (layer output error on the
 *                                          calibration inputs)
 *   gptq  = hfull of the GPTQ-quantized weights
 *
 * Every metric is available per row range ("_rows" functions take the first
 * row of the range as w, wq) so a large tensor can be split: per-row values
 * are computed in double, and the running sum *acc is extended row by row in
 * row order, so calling a function on consecutive row chunks in order with the
 * same acc gives bit-identical totals to one call on the whole tensor.
 * Results are bit-identical for any OpenMP / OpenBLAS thread count
 * (docs/gptq.md, "Determinism").
 *
 * GPTQ (Frantar et al., arXiv 2210.17323) quantizes columns in order
 * 0..cols-1 (or, with a BP_GPTQ_ACT_ORDER factor, by decreasing H_jj with
 * static groups) with error feedback from the damped Hessian (an inverse-free but
 * equivalent form of the paper's inverse-Cholesky update, 128-column lazy
 * blocks), using the format's own grid and parameter fitting
 * (include/bitplan/format.h). Its outputs are codes + params exactly as
 * format.h defines them, so bp_format_dequantize_rows() and bp_format_pack()
 * work unchanged. The algorithm as implemented is in docs/gptq.md.
 */
#ifndef BITPLAN_GPTQ_H
#define BITPLAN_GPTQ_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"
#include "bitplan/format.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Default damping: H + 0.01 * mean(diag H) * I, as in the GPTQ paper. */
#define BP_GPTQ_DAMP_DEFAULT 0.01

/* Columns per lazy-update block (rounded up to a multiple of the group). */
#define BP_GPTQ_BLOCK 128

/* ---- error metrics ------------------------------------------------------ */

/* hdiag of rows [0, nrows) of w vs wq (both nrows x cols, row-major):
 * value_r = sum_j hd[j * hd_stride] * (w_rj - wq_rj)^2, in double, column
 * order. Pass the diagonal of H as hd with hd_stride = 1, or H itself with
 * hd_stride = cols + 1. row_out (optional, nrows) receives value_r;
 * acc (optional) is increased by value_0, value_1, ... in that order.
 * Returns BP_OK, or BP_EINVAL for NULL w/wq/hd, nrows < 0, cols <= 0,
 * hd_stride < 1, or a non-finite input value (the message names it).
 * OpenMP across rows. */
int bp_quant_hdiag_rows(const float *w, const float *wq, int64_t nrows,
                        int64_t cols, const double *hd, int64_t hd_stride,
                        double *row_out, double *acc, bp_error *err);

/* hfull of rows [0, nrows): value_r = dW_r H dW_r^T with dW_r = w_r - wq_r
 * formed in double; h is the cols x cols matrix, symmetric: its upper
 * triangle (diagonal included) is used, as 2 dW_r T dW_r^T with T the strict
 * upper triangle plus half the diagonal, via dgemm on fixed blocks (every
 * entry of h is checked finite). row_out, acc as for bp_quant_hdiag_rows.
 * Returns BP_OK, BP_EINVAL (NULL pointer, bad sizes, non-finite value in w,
 * wq or h) or BP_ENOMEM. Cost nrows * cols^2 flops (double). */
int bp_quant_hfull_rows(const float *w, const float *wq, int64_t nrows,
                        int64_t cols, const double *h, double *row_out,
                        double *acc, bp_error *err);

/* ---- GPTQ --------------------------------------------------------------- */

/* The per-H part of GPTQ: the feedback matrix from the Cholesky factor of
 * the damped, dead-column-fixed H (docs/gptq.md). Computing it costs
 * cols^3/3 double flops and 12*cols^2 bytes (4*cols^2 kept); it does not depend
 * on the weights or the format, so one factor serves every format and every
 * row range of a tensor. Opaque; immutable after creation, so it may be
 * shared by concurrent callers. */
typedef struct bp_gptq_factor bp_gptq_factor;

/* Build the factor of the h_rows x h_cols matrix h (row-major; only its
 * upper triangle j >= i is used, the lower one is checked for gross
 * asymmetry). damp_frac >= 0 (BP_GPTQ_DAMP_DEFAULT normally).
 *   dead columns (H_jj == 0) get H_jj = 1 and are marked, so their weights
 *   are set to 0 before quantization (the reference algorithm's rule);
 *   then H += damp_frac * mean(diag H) * I.
 * On success *out is a new factor owned by the caller
 * (bp_gptq_factor_destroy). Returns
 *   BP_EINVAL  NULL pointers, h not square, size 0 or > INT32_MAX, a
 *              non-finite entry, a negative diagonal entry, H not symmetric,
 *              damp_frac negative or not finite;
 *   BP_EFORMAT the Cholesky factorization fails even after damping (H is not
 *              positive semidefinite); the message names the column and
 *              suggests a larger damp_frac;
 *   BP_ENOMEM.
 * Callers should prefix err with the tensor name (bp_error_prefix). */
int bp_gptq_factor_new(const double *h, int64_t h_rows, int64_t h_cols,
                       double damp_frac, bp_gptq_factor **out, bp_error *err);

/* Option flags of bp_gptq_factor_new_ex. */
#define BP_GPTQ_ACT_ORDER 1u /* act-order with static groups (below) */

/* bp_gptq_factor_new with options. flags = 0 is bp_gptq_factor_new exactly.
 * BP_GPTQ_ACT_ORDER ("act-order", docs/gptq.md): the pass of every
 * quantization with this factor visits the columns in order of decreasing
 * H_jj (ties: lower index first), so the most exercised input channels are
 * rounded first and the others absorb their error; the factor is built from
 * H permuted that way. Groups are STATIC: every group's (and per-row
 * format's) parameters are fitted up front on the original weights (dead
 * columns read as 0) in natural column order, and each column is rounded
 * with its own group's parameters when the pass reaches it. Outputs keep the
 * ordinary layout (codes, params per format.h), so bp_format_pack and
 * bp_format_dequantize_rows are unchanged. bp_gptq_quantize_rows and
 * bp_gptq_error_rows accept such a factor; bp_gptq_quantize_col_blocks
 * rejects it (BP_EINVAL). Unknown flag bits: BP_EINVAL. Other returns as
 * bp_gptq_factor_new; messages name original column indices. */
int bp_gptq_factor_new_ex(const double *h, int64_t h_rows, int64_t h_cols,
                          double damp_frac, unsigned flags,
                          bp_gptq_factor **out, bp_error *err);

/* The act-order column order of the n x n matrix h (row-major, only its
 * diagonal is read): perm[i] = the column visited i-th, by decreasing
 * h[j][j], ties by increasing j. Returns BP_OK, BP_EINVAL (NULL, n < 1, a
 * non-finite diagonal entry) or BP_ENOMEM. */
int bp_gptq_act_order_perm(const double *h, int64_t n, int64_t *perm,
                           bp_error *err);

/* Nonzero when the factor was built with BP_GPTQ_ACT_ORDER; then perm (n
 * entries, optional) receives its column order as bp_gptq_act_order_perm. */
int bp_gptq_factor_act_order(const bp_gptq_factor *fac, int64_t *perm);

/* Frees *p and sets it to NULL; safe on NULL and twice. */
void bp_gptq_factor_destroy(bp_gptq_factor **p);

/* Size n of the factor (= cols it serves) and its dead-column count. */
int64_t bp_gptq_factor_cols(const bp_gptq_factor *fac);
int64_t bp_gptq_factor_dead(const bp_gptq_factor *fac);

/* GPTQ of nrows full rows (cols each) of a tensor: codes[nrows*cols],
 * params[nrows * bp_format_groups_per_row(f, cols)] as format.h defines
 * them, deq (optional, nrows*cols) = the dequantized GPTQ weights, exactly
 * what bp_format_dequantize_rows(f, codes, params, ...) returns.
 * tensor_param is bp_format_tensor_param(f, absmax of the WHOLE tensor)
 * (0 unless nvfp4), so row chunks of one tensor share it. Rows are
 * independent, so quantizing a tensor in row chunks gives the same bytes as
 * one call. f16/bf16 are plain RTN (bp_format_quantize_rows).
 * Returns BP_OK, or BP_EINVAL (NULL pointer, nrows < 1, cols not equal to
 * the factor's size, format unsupported for the shape, non-finite weight or
 * tensor_param), BP_EFORMAT (the error feedback overflowed float: weights
 * near FLT_MAX or an extremely ill-conditioned H; outputs are then
 * unspecified), BP_ENOMEM, or an error from the format kernels. */
int bp_gptq_quantize_rows(const bp_format *f, const bp_gptq_factor *fac,
                          const float *w, int64_t nrows, int64_t cols,
                          float tensor_param, uint16_t *codes,
                          bp_qparams *params, float *deq, bp_error *err);

/* Mixed-format GPTQ (intra-tensor column blocks, docs/blocks.md): one pass
 * over columns 0..cols-1 of nrows rows in which column j is rounded to the
 * grid of formats[j / block_cols] (cols / block_cols formats, each
 * supporting an nrows x block_cols matrix), with the error feedback of
 * every column reaching all later columns, across block boundaries.
 * Groups are fitted when the pass reaches them, as in
 * bp_gptq_quantize_rows; a per-row format's one parameter set per row and
 * block is fitted likewise when the pass reaches the block (on the weights
 * as updated by earlier blocks). 16-bit blocks are rounded, their error fed
 * back. tensor_params[b] = bp_format_tensor_param(formats[b], absmax of the
 * whole tensor). Outputs: codes[nrows*cols] in the tensor's layout; block b's
 * parameters, [nrows][bp_format_groups_per_row(formats[b], block_cols)],
 * start after those of blocks 0..b-1; deq (optional, nrows*cols). With the
 * same group format in every block the codes and deq equal
 * bp_gptq_quantize_rows's bit for bit (only the params' order differs). When
 * every block is 16-bit, plain rounding (as bp_gptq_quantize_rows). Rows
 * are independent. Returns BP_OK, BP_EINVAL (NULL, bad shape, block_cols
 * not dividing cols, unsupported format, bad tensor param, non-finite
 * weight), BP_EFORMAT (feedback diverged), BP_ENOMEM. */
int bp_gptq_quantize_col_blocks(const bp_gptq_factor *fac, const float *w,
                                int64_t nrows, int64_t cols,
                                int64_t block_cols, const bp_format *formats,
                                const float *tensor_params, uint16_t *codes,
                                bp_qparams *params, float *deq, bp_error *err);

/* Whole-tensor convenience: factor of h (h_rows x h_cols, must be
 * cols x cols), tensor parameter from w's absmax, then
 * bp_gptq_quantize_rows. tensor_param_out (optional) receives the tensor
 * parameter (needed by bp_format_pack). Return codes as above. */
int bp_gptq_quantize(const bp_format *f, const float *w, int64_t rows,
                     int64_t cols, const double *h, int64_t h_rows,
                     int64_t h_cols, double damp_frac, uint16_t *codes,
                     bp_qparams *params, float *tensor_param_out, float *deq,
                     bp_error *err);

/* bp_gptq_quantize with the factor options of bp_gptq_factor_new_ex
 * (flags = 0 is bp_gptq_quantize exactly). */
int bp_gptq_quantize_ex(const bp_format *f, const float *w, int64_t rows,
                        int64_t cols, const double *h, int64_t h_rows,
                        int64_t h_cols, double damp_frac, unsigned flags,
                        uint16_t *codes, bp_qparams *params,
                        float *tensor_param_out, float *deq, bp_error *err);

/* The gptq metric of rows [0, nrows): GPTQ of those rows (as
 * bp_gptq_quantize_rows) then bp_quant_hfull_rows against the original w
 * with the undamped h (cols x cols, the matrix fac was built from).
 * row_out, acc as for bp_quant_hdiag_rows; deq optional (nrows*cols). */
int bp_gptq_error_rows(const bp_format *f, const bp_gptq_factor *fac,
                       const double *h, const float *w, int64_t nrows,
                       int64_t cols, float tensor_param, double *row_out,
                       double *acc, float *deq, bp_error *err);

/* Whole-tensor gptq metric: *out = tr((W - Wgptq) H (W - Wgptq)^T).
 * deq optional (rows*cols). */
int bp_gptq_error(const bp_format *f, const float *w, int64_t rows,
                  int64_t cols, const double *h, int64_t h_rows,
                  int64_t h_cols, double damp_frac, double *out, float *deq,
                  bp_error *err);

/* bp_gptq_error with the factor options of bp_gptq_factor_new_ex
 * (flags = 0 is bp_gptq_error exactly). */
int bp_gptq_error_ex(const bp_format *f, const float *w, int64_t rows,
                     int64_t cols, const double *h, int64_t h_rows,
                     int64_t h_cols, double damp_frac, unsigned flags,
                     double *out, float *deq, bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
