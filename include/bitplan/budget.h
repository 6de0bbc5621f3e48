/* bitplan: the size budget a plan must fit, from the command line.
 *
 *   --budget-bits 3.5     average bits per weight over the quantized tensors
 *   --budget-bytes 7.5GB  total bytes of the quantized tensors
 *
 * Numbers are plain decimals ("3.5", "4", "0.75"; no sign, exponent, hex,
 * "nan" or "inf") and are kept as exact decimal fractions, so the capacity
 * never depends on binary rounding: 3.3 bits over 10^9 weights is exactly
 * floor(33 * 10^9 / 80) bytes.
 *
 * Byte units (case-insensitive; all mean bytes, never bits):
 *   none, B          1            (the number must then be whole)
 *   KB, MB, GB, TB   10^3, 10^6, 10^9, 10^12   (decimal, SI)
 *   KiB, MiB, GiB, TiB  2^10, 2^20, 2^30, 2^40 (binary, IEC)
 * A blank may separate number and unit ("7.5 GB"). Fractional results are
 * rounded down to whole bytes ("1.0005KB" = 1000 bytes).
 */
#ifndef BITPLAN_BUDGET_H
#define BITPLAN_BUDGET_H

#include <stdint.h>

#include "bitplan/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Upper bound for --budget-bits: no format stores more than 32 bits per
 * weight; 64 leaves room without accepting typos like 350. */
#define BP_BUDGET_MAX_BITS 64

typedef enum bp_budget_kind {
    BP_BUDGET_NONE = 0,
    BP_BUDGET_BITS,   /* bits per weight */
    BP_BUDGET_BYTES   /* absolute bytes */
} bp_budget_kind;

typedef struct bp_budget {
    bp_budget_kind kind;
    double bits;        /* BITS: the value as a double (for display, plans) */
    uint64_t bits_num;  /* BITS: exact value is bits_num / bits_den */
    uint64_t bits_den;  /* BITS: a power of ten */
    uint64_t bytes;     /* BYTES: > 0 */
} bp_budget;

/* Parse a --budget-bits value: 0 < bits <= BP_BUDGET_MAX_BITS. BP_EINVAL
 * with a message quoting the text and the reason (empty, negative, zero,
 * not a number, too many digits, too large). */
int bp_budget_parse_bits(const char *text, bp_budget *out, bp_error *err);

/* Parse a --budget-bytes value (units above); result > 0 and fits in
 * uint64_t. BP_EINVAL as above, naming an unknown unit. */
int bp_budget_parse_bytes(const char *text, bp_budget *out, bp_error *err);

/* Byte capacity of the budget for `params` quantized weights:
 *   BITS:  floor(bits * params / 8), computed exactly;
 *   BYTES: bytes.
 * BP_EINVAL when params is 0, the capacity is 0 bytes, it overflows
 * uint64_t, or b is not a parsed budget. */
int bp_budget_capacity(const bp_budget *b, uint64_t params, uint64_t *capacity,
                       bp_error *err);

/* 8 * bytes / params (average bits per weight); NaN when params is 0. */
double bp_budget_bits_per_weight(uint64_t bytes, uint64_t params);

#ifdef __cplusplus
}
#endif
#endif
