/* Dense factorization shared inside bp_quant. Not a public header.
 *
 * OpenBLAS's dpotrf (and dtrtri, dpotri) choose their blocking from the
 * thread count, so their results change in the last bits with
 * OPENBLAS_NUM_THREADS. This
 * blocked version uses a fixed block size and only dgemm for the O(n^3)
 * work; OpenBLAS parallelizes gemm over M and N and walks K in the same
 * chunks for any thread count, so every entry is computed in the same order
 * and the result is bit-identical for any thread count (tested). */
#ifndef BP_QUANT_INTERNAL_H
#define BP_QUANT_INTERNAL_H

#include <stdint.h>

/* Weights (rows x cols) below which the row loops run on one thread: a
 * parallel region costs more than it saves there, far more on an
 * oversubscribed machine. Rows are independent, so results do not depend on
 * it. */
#define BP__PAR_MIN ((int64_t)1 << 18)

/* Block size of the factorizations (columns). */
#define BP__CHOL_NB 128

/* In-place Cholesky A = L L^T of the n x n row-major matrix a (leading
 * dimension n); only the lower triangle is read and written, the strict upper
 * triangle is left unspecified. Returns 0, -1 when out of memory, or j + 1
 * when the leading minor of order j + 1 is not positive (a is then partly
 * overwritten). */
int bp__chol_lower(double *a, int64_t n);

#endif
