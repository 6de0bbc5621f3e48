/* Fixed-point conversions and id checks shared by the bp_calib files. */
#include "calib_internal.h"

#include <math.h>

int bp__fx_from_double(double v, int shift, bp__i128 *out)
{
    /* Scaling by a power of two is exact unless it overflows to infinity,
     * which the range check catches. */
    return bp__fx_from_scaled(ldexp(v, shift), out);
}

double bp__fx_to_double(bp__i128 v, int shift)
{
    return ldexp((double)v, -shift);
}

int bp__check_ids(const uint32_t *ids, int64_t first, int64_t n, int64_t vocab,
                  const char *what, bp_error *err)
{
    for (int64_t i = 0; i < n; i++) {
        if ((int64_t)ids[first + i] >= vocab)
            return bp_error_set(err, BP_EINVAL,
                                "%s: token at position %lld has id %u, not below "
                                "vocab_size %lld",
                                what ? what : "tokens", (long long)(first + i),
                                ids[first + i], (long long)vocab);
    }
    return BP_OK;
}
