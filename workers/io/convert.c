/* Conversion of tensor rows to float, straight from the mmap.
 *
 * The loops load each element with memcpy (the data may be unaligned: the
 * header length decides where the data section starts) and are written
 * branch-free so GCC vectorizes them at -O2. Large ranges are split over
 * OpenMP threads; each output element depends only on its input element, so
 * the result is the same for any thread count. */
#include <string.h>

#include "io_internal.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bitplan reads little-endian safetensors data in place; big-endian hosts are unsupported"
#endif

#define PAR_MIN_ELEMS ((size_t)1 << 20) /* below this, threads cost more than they save */
#define PAR_CHUNK ((size_t)1 << 16)     /* elements per OpenMP work item */

/* IEEE binary16 -> binary32, exact, without branches:
 * normal numbers move the exponent bias from 15 to 127 (add 112 << 23),
 * inf/NaN need a further 112 so exponent 31 becomes 255, and subnormals
 * (exponent 0) are mantissa * 2^-24, which int->float gives exactly. */
static inline float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu;
    uint32_t normal = (em << 13) + (112u << 23);
    float sub = (float)(int32_t)(h & 0x3ffu) * 0x1p-24f;
    uint32_t subbits;
    memcpy(&subbits, &sub, 4);
    /* All-ones masks instead of ?: so the loop has no control flow. */
    uint32_t is_infnan = 0u - (uint32_t)(em >= 0x7c00u);
    uint32_t is_sub = 0u - (uint32_t)(em < 0x0400u);
    uint32_t r = normal + (is_infnan & (112u << 23));
    r = (r & ~is_sub) | (subbits & is_sub);
    r |= sign;
    float f;
    memcpy(&f, &r, 4);
    return f;
}

static void cvt_f16(const unsigned char *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = half_to_float(h);
    }
}

static void cvt_bf16(const unsigned char *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        dst[i] = f;
    }
}

static void cvt_f64(const unsigned char *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double d;
        memcpy(&d, src + 8 * i, 8);
        dst[i] = (float)d;
    }
}

static void cvt_range(bp_dtype dt, const unsigned char *src, float *dst, size_t n)
{
    switch (dt) {
    case BP_DTYPE_F32:
        memcpy(dst, src, n * 4);
        break;
    case BP_DTYPE_F16:
        cvt_f16(src, dst, n);
        break;
    case BP_DTYPE_BF16:
        cvt_bf16(src, dst, n);
        break;
    case BP_DTYPE_F64:
        cvt_f64(src, dst, n);
        break;
    default:
        break; /* rejected by the caller */
    }
}

int64_t bp_tensor_rows(const bp_tensor_info *t)
{
    if (!t)
        return 0;
    return t->ndim >= 2 ? t->shape[0] : 1;
}

int64_t bp_tensor_cols(const bp_tensor_info *t)
{
    if (!t || t->ndim == 0)
        return t ? 1 : 0;
    if (t->ndim == 1)
        return t->shape[0];
    /* Product of the trailing dims rather than numel / shape[0], which
     * would divide by zero for an empty first dimension. Cannot overflow:
     * the reader checked the whole product. */
    int64_t c = 1;
    for (int d = 1; d < t->ndim; d++)
        c *= t->shape[d];
    return c;
}

int bp_tensor_rows_f32(const bp_tensor_info *t, int64_t row0, int64_t nrows, float *out,
                       bp_error *err)
{
    if (!t)
        return bp_error_set(err, BP_EINVAL, "bp_tensor_rows_f32: tensor is NULL");
    const char *nm = t->name ? t->name : "?";
    switch (t->dtype) {
    case BP_DTYPE_F32:
    case BP_DTYPE_F16:
    case BP_DTYPE_BF16:
    case BP_DTYPE_F64:
        break;
    default:
        return bp_error_set(err, BP_EUNSUPPORTED,
                            "tensor '%.*s': dtype %s cannot be converted to float",
                            BP__NAME_SHOWN, nm, bp_dtype_name(t->dtype));
    }
    int64_t rows = bp_tensor_rows(t), cols = bp_tensor_cols(t);
    if (row0 < 0 || nrows < 0 || row0 > rows || nrows > rows - row0)
        return bp_error_set(err, BP_EINVAL,
                            "tensor '%.*s': rows [%lld, %lld + %lld) outside [0, %lld)",
                            BP__NAME_SHOWN, nm, (long long)row0, (long long)row0,
                            (long long)nrows, (long long)rows);
    /* rows * cols == numel, already known not to overflow in bytes. */
    size_t n = (size_t)nrows * (size_t)cols;
    if (n == 0)
        return BP_OK;
    if (!out || !t->data)
        return bp_error_set(err, BP_EINVAL, "tensor '%.*s': NULL buffer", BP__NAME_SHOWN, nm);
    size_t es = bp_dtype_size(t->dtype);
    const unsigned char *src = (const unsigned char *)t->data + (size_t)row0 * (size_t)cols * es;
    if (n < PAR_MIN_ELEMS) {
        cvt_range(t->dtype, src, out, n);
        return BP_OK;
    }
    long nchunks = (long)((n + PAR_CHUNK - 1) / PAR_CHUNK);
    bp_dtype dt = t->dtype;
#pragma omp parallel for schedule(static)
    for (long c = 0; c < nchunks; c++) {
        size_t b = (size_t)c * PAR_CHUNK;
        size_t e = b + PAR_CHUNK < n ? b + PAR_CHUNK : n;
        cvt_range(dt, src + b * es, out + b, e - b);
    }
    return BP_OK;
}
