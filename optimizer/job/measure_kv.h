/* KV-cache error terms for the solver: the table rows
 * "model.layers.N.kv_cache" / "kv_<format>" that constraints.c (add_kv)
 * turns into one decision per layer, and the pieces the "measure_kv" task
 * (task_eval.c) builds the same values from.
 *
 * The value of (layer, format) is the mean KL(P_ref || P) per scored token
 * over a set of reference windows, P being the model with only that layer's
 * K and V in the format (the protocol of bp_kv_measure_layer). Window sums
 * are exact fixed point (bp_eval_sums), so windows split over several
 * references (the task's cached pieces) merge to the same bits as one
 * reference over all of them. fp8_e4m3 uses static scales calibrated on the
 * same windows, always recalibrated, so a value never depends on what the
 * llama measured before. */
#ifndef BITPLAN_JOB_MEASURE_KV_H
#define BITPLAN_JOB_MEASURE_KV_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "bitplan/cost.h"
#include "bitplan/error.h"
#include "bitplan/llama.h"
#include "bitplan/table.h"

/* Runs the full-precision-KV model over some windows; what it runs is up to
 * the caller (a reference's windows, token chunks). */
typedef int (*bp__kv_drive_fn)(bp_llama *l, void *ctx, bp_error *err);

/* Set every layer's fp8_e4m3 K and V scales from the K/V absolute maxima
 * seen while `drive` runs with every layer at f16 (the exact path):
 * s = bp_kv_fp8_scale(absmax). A maximum, so any split or order of the
 * windows gives the same scales. On return every layer's KV format is f16.
 * BP_EINVAL for non-finite K or V. */
int bp__kv_fp8_calibrate(bp_llama *l, bp__kv_drive_fn drive, void *ctx, bp_error *err);

/* For each of the n_formats formats, add to sums[i] the bp_eval_compare sums
 * of `l` with only `layer`'s KV in formats[i], against ref over windows
 * [first, first + n) (inside ref's range). progress (may be NULL) advances
 * once per format. On return every layer's KV format is f16. fp8_e4m3 needs
 * scales (bp__kv_fp8_calibrate). */
int bp__kv_measure_span(bp_llama *l, const bp_eval_reference *ref, int64_t first, int64_t n,
                        int64_t layer, const bp_kv_format *formats, size_t n_formats,
                        bp_eval_sums *sums, _Atomic uint64_t *progress, bp_error *err);

/* The error term from merged sums: the mean KL, with the tiny negative
 * values rounding can give reported as 0. BP_EINVAL when nothing was
 * scored. */
int bp__kv_dkl(const bp_eval_sums *s, double *dkl, bp_error *err);

/* The table row name of a layer's KV cache: "model.layers.N.kv_cache"
 * (out holds at least 64 bytes). */
void bp__kv_row_tensor(int64_t layer, char *out, size_t len);

/* Append, for every layer of `l` and the four KV formats (f16, fp8_e4m3,
 * int8, int4 in that order), the row {tensor "model.layers.N.kv_cache",
 * format "kv_<name>", method rtn, bytes = bp_kv_bytes(shape, f, context,
 * batch), metric[dkl] = the layer's error on every window of ref}. `l` must
 * be the full-precision model ref was computed with; its fp8 scales are
 * recalibrated on ref's windows and its KV formats are all f16 on return.
 * metric_dkl_column is the job's metric column and must be BP_METRIC_DKL
 * (KV rows only have a dkl value); shape must be l's. Rows are appended only
 * once all are measured; BP_EINVAL for a row the table already has. */
int bp__job_measure_kv_rows(bp_llama *l, const bp_eval_reference *ref, const bp_kv_shape *shape,
                            int64_t context, int64_t batch, int metric_dkl_column, bp_table *t,
                            bp_error *err);

#endif
