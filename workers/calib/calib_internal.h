/* Shared between the files of bp_calib; not public. */
#ifndef BP_CALIB_INTERNAL_H
#define BP_CALIB_INTERNAL_H

#include <stdint.h>

#include "bitplan/error.h"

/* Signed 128-bit integer for exact fixed-point sums (GCC/Clang). */
__extension__ typedef __int128 bp__i128;

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bp_calib stores fixed-point sums as little-endian bytes; port needed"

#endif

/* round(s) as an int128, for s already scaled by a power of two (an exact
 * multiplication). Returns 0, or -1 when s is not finite or |s| >= 2^120
 * (so that sums of many such values are still far from the int128 limit
 * before the overflow checks trigger). Inline: it runs once per Hessian
 * element per sequence. */
static inline int bp__fx_from_scaled(double s, bp__i128 *out)
{
    double a = s < 0 ? -s : s;
    if (a < 0x1p52) {
        /* In [2^52, 2^53) the spacing of doubles is 1, so adding and removing
         * 2^52 rounds to an integer (ties to even, default rounding mode). */
        double r = s >= 0 ? (s + 0x1p52) - 0x1p52 : (s - 0x1p52) + 0x1p52;
        *out = (bp__i128)(int64_t)r;
    } else if (a < 0x1p63) {
        *out = (bp__i128)(int64_t)s; /* already an integer */
    } else if (a < 0x1p120) {
        *out = (bp__i128)s;
    } else {
        return -1; /* also NaN, which fails every comparison above */
    }
    return 0;
}

/* round(v * 2^shift) as an int128; as bp__fx_from_scaled. */
int bp__fx_from_double(double v, int shift, bp__i128 *out);

/* v * 2^-shift, rounded to nearest double. */
double bp__fx_to_double(bp__i128 v, int shift);

/* Check ids [first, first+n) of a stream < vocab; message names `what`
 * and the absolute position. */
int bp__check_ids(const uint32_t *ids, int64_t first, int64_t n, int64_t vocab,
                  const char *what, bp_error *err);

struct bp_llama;

/* Convert every stored weight into the cache if the cache limit allows.
 * Returns 1 when afterwards every weight comes from an override or the
 * cache, so that forward passes only read the model object and may run
 * concurrently; else 0 (nothing is reported: a forward pass will report
 * any conversion error itself). */
int bp__llama_cache_all(struct bp_llama *l);

#endif
