/* bitplan: the error sweep, one tensor x a list of formats.
 *
 * A sweep is a self-contained work unit, meant to be shipped to a remote
 * worker: its inputs are one tensor (its info and data), a list of formats,
 * an optional per-column importance vector and a row range; its output,
 * bp_sweep_result, is plain data (numbers, flags and copies of the format
 * structs; no pointers into a model) that can be serialized, sent back and
 * merged.
 *
 * For every format the tensor's shape supports, the sweep quantizes each row
 * with round-to-nearest (bp_format_rtn_error_rows) and records per metric:
 *   BP_SWEEP_SSE   sum over the rows of sum_j (w - q)^2
 *   BP_SWEEP_WSSE  sum over the rows of sum_j colw[j] (w - q)^2 (colw is the
 *                  per-input-channel importance, e.g. a diagonal Hessian);
 *                  NaN when no colw was given
 * Rows are grouped in fixed chunks of BP_SWEEP_CHUNK_ROWS rows. A chunk's
 * partial is the serial sum, in row order, of its per-row errors; a total is
 * the serial sum, in chunk order, of the chunk partials. So a tensor swept
 * in several chunk-aligned row ranges (by different workers, with any
 * thread counts) and merged gives bit-identical totals to one whole-tensor
 * sweep.
 *
 * Metrics are columns of one array (see bp_sweep_partial): a later metric
 * (Hessian-weighted, GPTQ, KL) is a new bp_sweep_metric value, and
 * nmetric in a result says how many columns it holds.
 */
#ifndef BITPLAN_SWEEP_H
#define BITPLAN_SWEEP_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"
#include "bitplan/format.h"
#include "bitplan/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Rows per chunk: the unit of partial sums and of row-range alignment. */
#define BP_SWEEP_CHUNK_ROWS 64

typedef enum bp_sweep_metric {
    BP_SWEEP_SSE = 0,  /* squared error */
    BP_SWEEP_WSSE = 1, /* column-importance-weighted squared error */
    BP_SWEEP_NMETRIC   /* number of metric columns */
} bp_sweep_metric;

typedef struct bp_sweep_result {
    int64_t rows, cols;   /* the tensor's matrix view (bp_tensor_rows/cols) */
    int64_t nchunks;      /* ceil(rows / BP_SWEEP_CHUNK_ROWS) */
    size_t nfmt;          /* formats, in the order given to the sweep */
    int nmetric;          /* metric columns held (BP_SWEEP_NMETRIC) */
    int has_colw;         /* 1 when a colw was given (WSSE is meaningful) */
    float tensor_absmax;  /* whole-tensor max |w| used by nvfp4, or -1 when
                             no supported format needed it */
    bp_format *fmts;      /* [nfmt] copies of the formats */
    uint8_t *supported;   /* [nfmt] 1 when the shape supports the format */
    uint64_t *bytes;      /* [nfmt] packed bytes of the WHOLE tensor, 0 if
                             unsupported */
    uint8_t *chunk_done;  /* [nchunks] 1 when the chunk has been swept */
    double *partial;      /* [nfmt][nmetric][nchunks] chunk partial sums;
                             NaN for unsupported formats, chunks not swept,
                             and WSSE without colw */
} bp_sweep_result;

/* Options of bp_sweep_tensor_ex. Start from BP_SWEEP_OPTS_INIT. */
typedef struct bp_sweep_opts {
    /* The whole tensor's max |w| (finite, >= 0) for nvfp4's tensor scale.
     * < 0: computed by the sweep, which then reads the WHOLE tensor once
     * more (pass it in when sweeping a tensor in several row ranges). */
    float tensor_absmax;
    /* Rows each thread converts to float and runs every format over while
     * they are in its cache; 0 = automatic (about 512 KB of floats). At most
     * BP_SWEEP_CHUNK_ROWS (chunks are the unit handed to threads). No effect
     * on the results. */
    int64_t slice_rows;
} bp_sweep_opts;

#define BP_SWEEP_OPTS_INIT {-1.0f, 0}

/* An empty result (all fields zero/NULL). */
void bp_sweep_result_init(bp_sweep_result *r);
/* Frees every array and re-initializes; safe on an empty result and twice. */
void bp_sweep_result_free(bp_sweep_result *r);

/* Sweep rows [row0, row0 + nrows) of tensor t (F32, F16, BF16 or F64,
 * viewed as bp_tensor_rows x bp_tensor_cols) over fmts[0..nfmt).
 * colw: NULL or bp_tensor_cols(t) finite values >= 0.
 * row0 must be a multiple of BP_SWEEP_CHUNK_ROWS, and nrows a multiple too
 * unless the range ends at the last row. Support is decided by the whole
 * tensor's shape. out must be initialized (bp_sweep_result_init); any
 * previous content is freed, and on success out owns new arrays (free with
 * bp_sweep_result_free). On failure out is left empty.
 * Returns BP_OK, BP_EINVAL (bad arguments, row range or colw), BP_EFORMAT
 * (a non-finite weight), BP_EUNSUPPORTED (dtype), BP_ENOMEM. */
int bp_sweep_tensor(const bp_tensor_info *t, const bp_format *fmts, size_t nfmt,
                    const float *colw, int64_t row0, int64_t nrows, bp_sweep_result *out,
                    bp_error *err);

/* bp_sweep_tensor with options (opts NULL = BP_SWEEP_OPTS_INIT). */
int bp_sweep_tensor_ex(const bp_tensor_info *t, const bp_format *fmts, size_t nfmt,
                       const float *colw, int64_t row0, int64_t nrows,
                       const bp_sweep_opts *opts, bp_sweep_result *out, bp_error *err);

/* The whole tensor's max |w|, reading it in slices. BP_EFORMAT when a
 * weight is not finite. */
int bp_sweep_tensor_absmax(const bp_tensor_info *t, float *out, bp_error *err);

/* Merge src (another row range of the same sweep) into dst. An empty dst
 * (just initialized) becomes a copy of src. Otherwise shapes, formats,
 * has_colw, nmetric and tensor_absmax must match and the swept chunks must
 * not overlap: BP_EMISMATCH otherwise (dst unchanged). */
int bp_sweep_result_merge(bp_sweep_result *dst, const bp_sweep_result *src, bp_error *err);

/* 1 when every chunk of the tensor has been swept. */
int bp_sweep_result_complete(const bp_sweep_result *r);

/* Total of a metric for format index fmt over the swept chunks (serial sum
 * in chunk order). NaN for an unsupported format, a metric the result does
 * not hold, or WSSE without colw; 0 when no chunk was swept. */
double bp_sweep_result_total(const bp_sweep_result *r, size_t fmt, int metric);

/* Pointer to the nchunks partials of (fmt, metric), or NULL. */
const double *bp_sweep_partial(const bp_sweep_result *r, size_t fmt, int metric);

#ifdef __cplusplus
}
#endif
#endif
