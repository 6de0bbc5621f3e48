/* The RTN error sweep of one tensor over a list of formats.
 *
 * Work is split by 64-row chunks (the unit of the result), handed out to
 * the OpenMP threads dynamically. A thread converts a few rows of its chunk
 * to float at a time (a block small enough to stay in its L2), checks them,
 * and runs every format over that block while it is hot; the chunk's
 * partials are the serial sums of its rows' errors in row order. Which
 * thread runs a chunk, and how it is cut into blocks, changes nothing in the
 * numbers. Inside the parallel region the conversion and the format kernels
 * run single-threaded (their own OpenMP regions are nested, hence serial). */
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/sweep.h"

#define CH BP_SWEEP_CHUNK_ROWS
/* Automatic block: about 512 KB of floats per thread, 1..CH rows. */
#define BLOCK_FLOATS (128 * 1024)

static const char *tname(const bp_tensor_info *t)
{
    return t && t->name ? t->name : "?";
}

void bp_sweep_result_init(bp_sweep_result *r)
{
    if (r)
        memset(r, 0, sizeof *r);
}

void bp_sweep_result_free(bp_sweep_result *r)
{
    if (!r)
        return;
    free(r->fmts);
    free(r->supported);
    free(r->bytes);
    free(r->chunk_done);
    free(r->partial);
    bp_sweep_result_init(r);
}

static size_t pidx(const bp_sweep_result *r, size_t f, int m)
{
    return (f * (size_t)r->nmetric + (size_t)m) * (size_t)r->nchunks;
}

const double *bp_sweep_partial(const bp_sweep_result *r, size_t fmt, int metric)
{
    if (!r || !r->partial || fmt >= r->nfmt || metric < 0 || metric >= r->nmetric)
        return NULL;
    return r->partial + pidx(r, fmt, metric);
}

/* Allocate the arrays for nfmt formats of a rows x cols tensor; partials
 * start as NaN, no chunk swept. */
static int alloc_result(bp_sweep_result *r, int64_t rows, int64_t cols, size_t nfmt)
{
    r->rows = rows;
    r->cols = cols;
    r->nchunks = (rows + CH - 1) / CH;
    r->nfmt = nfmt;
    r->nmetric = BP_SWEEP_NMETRIC;
    r->tensor_absmax = -1.0f;
    size_t np = nfmt * (size_t)r->nmetric * (size_t)r->nchunks;
    r->fmts = calloc(nfmt, sizeof *r->fmts);
    r->supported = calloc(nfmt, 1);
    r->bytes = calloc(nfmt, sizeof *r->bytes);
    r->chunk_done = calloc((size_t)r->nchunks, 1);
    r->partial = malloc(np * sizeof *r->partial);
    if (!r->fmts || !r->supported || !r->bytes || !r->chunk_done || !r->partial) {
        bp_sweep_result_free(r);
        return BP_ENOMEM;
    }
    for (size_t i = 0; i < np; i++)
        r->partial[i] = NAN;
    return BP_OK;
}

/* Index of the first row of buf (n rows) holding a non-finite value, or -1. */
static int64_t first_bad_row(const float *buf, int64_t n, int64_t cols)
{
    for (int64_t r = 0; r < n; r++) {
        const float *x = buf + r * cols;
        uint32_t bad = 0;
        for (int64_t j = 0; j < cols; j++) {
            uint32_t u;
            memcpy(&u, &x[j], 4);
            bad |= (u & 0x7f800000u) == 0x7f800000u;
        }
        if (bad)
            return r;
    }
    return -1;
}

/* Rows per converted block: `want` if given (at most a chunk), else about
 * BLOCK_FLOATS floats. */
static int64_t block_rows(int64_t cols, int64_t want)
{
    int64_t b = want > 0 ? want : BLOCK_FLOATS / (cols > 0 ? cols : 1);
    return b < 1 ? 1 : b > CH ? CH : b;
}

/* The first failure of a parallel sweep, by chunk: chunks run in any order,
 * so the one reported is the failing chunk with the smallest index (each
 * chunk stops at its own first failure), whatever the thread timing. */
typedef struct first_fail {
    int64_t chunk; /* INT64_MAX: none */
    int rc;
    bp_error err;
} first_fail;

static void fail_init(first_fail *f)
{
    f->chunk = INT64_MAX;
    f->rc = BP_OK;
    memset(&f->err, 0, sizeof f->err);
}

static void fail_note(first_fail *f, int64_t chunk, int rc, const bp_error *e)
{
#pragma omp critical(bp_sweep_fail)
    if (chunk < f->chunk) {
        f->rc = rc;
        f->err = *e;
#pragma omp atomic write
        f->chunk = chunk;
    }
}

static int64_t fail_chunk(first_fail *f)
{
    int64_t c;
#pragma omp atomic read
    c = f->chunk;
    return c;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(BP_NO_CLONES)
#define HOT __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define HOT
#endif

/* bf16 rows to float (the same bit shift as bp_tensor_rows_f32, host byte
 * order) with the finite check in the same pass: the index of the first row
 * holding an infinity or NaN, or -1. */
HOT static int64_t bf16_rows(const uint16_t *src, int64_t n, int64_t cols, float *dst)
{
    int64_t first = -1;
    for (int64_t r = 0; r < n; r++) {
        const uint16_t *s = src + r * cols;
        float *d = dst + r * cols;
        uint32_t bad = 0;
        for (int64_t j = 0; j < cols; j++) {
            uint32_t u = (uint32_t)s[j] << 16;
            bad |= (u & 0x7f800000u) == 0x7f800000u;
            memcpy(&d[j], &u, 4);
        }
        if (bad && first < 0)
            first = r;
    }
    return first;
}

/* Convert rows [r, r + n) of t into buf and check them: BP_OK, or the
 * conversion's error, or BP_EFORMAT naming the first non-finite row. */
static int load_block(const bp_tensor_info *t, int64_t r, int64_t n, int64_t cols, float *buf,
                      bp_error *e)
{
    int64_t bad;
    if (t->dtype == BP_DTYPE_BF16 && t->data) {
        bad = bf16_rows((const uint16_t *)t->data + r * cols, n, cols, buf);
    } else {
        int rc = bp_tensor_rows_f32(t, r, n, buf, e);
        if (rc)
            return rc;
        bad = first_bad_row(buf, n, cols);
    }
    if (bad >= 0)
        return bp_error_set(e, BP_EFORMAT, "tensor '%s': row %lld: non-finite weight", tname(t),
                            (long long)(r + bad));
    return BP_OK;
}

/* max |w| of rows [r, r + n) of a bf16 tensor, straight from the bits:
 * with the sign cleared, a bf16 bit pattern orders as its magnitude, so
 * the integer max is the max |w| without converting anything. A pattern
 * of 0x7f80 or above is an infinity or NaN: BP_EFORMAT naming the first
 * such row. */
HOT static int bf16_absmax_rows(const bp_tensor_info *t, int64_t r, int64_t n, int64_t cols,
                                uint16_t *out, bp_error *e)
{
    const uint16_t *src = (const uint16_t *)t->data + r * cols;
    size_t total = (size_t)n * (size_t)cols;
    uint16_t m[32] = {0};
    size_t i = 0;
    for (; i + 32 <= total; i += 32)
        for (int l = 0; l < 32; l++) {
            uint16_t a = src[i + (size_t)l] & 0x7fffu;
            m[l] = a > m[l] ? a : m[l];
        }
    for (; i < total; i++) {
        uint16_t a = src[i] & 0x7fffu;
        m[0] = a > m[0] ? a : m[0];
    }
    uint16_t mx = 0;
    for (int l = 0; l < 32; l++)
        mx = m[l] > mx ? m[l] : mx;
    if (mx >= 0x7f80u) {
        for (int64_t k = 0; k < n; k++)
            for (int64_t j = 0; j < cols; j++)
                if ((src[k * cols + j] & 0x7fffu) >= 0x7f80u)
                    return bp_error_set(e, BP_EFORMAT, "tensor '%s': row %lld: non-finite weight",
                                        tname(t), (long long)(r + k));
    }
    *out = mx;
    return BP_OK;
}

int bp_sweep_tensor_absmax(const bp_tensor_info *t, float *out, bp_error *err)
{
    if (!t || !out)
        return bp_error_set(err, BP_EINVAL, "sweep absmax: NULL argument");
    int64_t rows = bp_tensor_rows(t), cols = bp_tensor_cols(t);
    if (rows < 1 || cols < 1)
        return bp_error_set(err, BP_EINVAL, "tensor '%s': empty", tname(t));
    int64_t blk = block_rows(cols, 0), nchunks = (rows + CH - 1) / CH;
    first_fail ff;
    fail_init(&ff);
    float amax = 0.0f;
    /* Max is exact and order-free, so neither the lane split nor the
     * thread split can change it. */
#pragma omp parallel
    {
        float *buf = malloc((size_t)blk * (size_t)cols * sizeof *buf);
        float mine = 0.0f;
        bp_error e;
#pragma omp for schedule(dynamic, 1)
        for (int64_t c = 0; c < nchunks; c++) {
            if (c > fail_chunk(&ff))
                continue;
            if (!buf) {
                fail_note(&ff, c,
                          bp_error_set(&e, BP_ENOMEM,
                                       "tensor '%s': out of memory for a %lld-row block",
                                       tname(t), (long long)blk),
                          &e);
                continue;
            }
            int64_t ce = (c + 1) * CH < rows ? (c + 1) * CH : rows;
            if (t->dtype == BP_DTYPE_BF16 && t->data) {
                uint16_t mb;
                int rc = bf16_absmax_rows(t, c * CH, ce - c * CH, cols, &mb, &e);
                if (rc) {
                    fail_note(&ff, c, rc, &e);
                    continue;
                }
                uint32_t u = (uint32_t)mb << 16;
                float a;
                memcpy(&a, &u, 4);
                mine = a > mine ? a : mine;
                continue;
            }
            for (int64_t r = c * CH; r < ce; r += blk) {
                int64_t n = ce - r < blk ? ce - r : blk;
                int rc = load_block(t, r, n, cols, buf, &e);
                if (rc) {
                    fail_note(&ff, c, rc, &e);
                    break;
                }
                float m[16] = {0};
                size_t total = (size_t)n * (size_t)cols, i = 0;
                for (; i + 16 <= total; i += 16)
                    for (int l = 0; l < 16; l++) {
                        float a = fabsf(buf[i + (size_t)l]);
                        m[l] = a > m[l] ? a : m[l];
                    }
                for (; i < total; i++) {
                    float a = fabsf(buf[i]);
                    m[0] = a > m[0] ? a : m[0];
                }
                for (int l = 0; l < 16; l++)
                    mine = m[l] > mine ? m[l] : mine;
            }
        }
#pragma omp critical(bp_sweep_amax)
        amax = mine > amax ? mine : amax;
        free(buf);
    }
    if (ff.rc) {
        if (err)
            *err = ff.err;
        return ff.rc;
    }
    *out = amax;
    return BP_OK;
}

int bp_sweep_tensor(const bp_tensor_info *t, const bp_format *fmts, size_t nfmt,
                    const float *colw, int64_t row0, int64_t nrows, bp_sweep_result *out,
                    bp_error *err)
{
    return bp_sweep_tensor_ex(t, fmts, nfmt, colw, row0, nrows, NULL, out, err);
}

int bp_sweep_tensor_ex(const bp_tensor_info *t, const bp_format *fmts, size_t nfmt,
                       const float *colw, int64_t row0, int64_t nrows,
                       const bp_sweep_opts *opts, bp_sweep_result *out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "sweep: NULL result");
    bp_sweep_result_free(out);
    if (!t || !fmts || nfmt == 0)
        return bp_error_set(err, BP_EINVAL, "sweep: no tensor or no formats");
    bp_sweep_opts o = BP_SWEEP_OPTS_INIT;
    if (opts)
        o = *opts;
    int64_t rows = bp_tensor_rows(t), cols = bp_tensor_cols(t);
    if (rows < 1 || cols < 1)
        return bp_error_set(err, BP_EINVAL, "tensor '%s': empty (%lld x %lld)", tname(t),
                            (long long)rows, (long long)cols);
    if (row0 < 0 || nrows < 0 || row0 > rows || nrows > rows - row0)
        return bp_error_set(err, BP_EINVAL, "tensor '%s': rows [%lld, +%lld) outside [0, %lld)",
                            tname(t), (long long)row0, (long long)nrows, (long long)rows);
    if (row0 % CH != 0 || (nrows % CH != 0 && row0 + nrows != rows))
        return bp_error_set(err, BP_EINVAL,
                            "tensor '%s': rows [%lld, +%lld) not aligned to %d-row chunks",
                            tname(t), (long long)row0, (long long)nrows, CH);
    if (colw)
        for (int64_t j = 0; j < cols; j++)
            if (!(colw[j] >= 0.0f && colw[j] <= FLT_MAX))
                return bp_error_set(err, BP_EINVAL,
                                    "tensor '%s': column importance %lld is %g, not finite >= 0",
                                    tname(t), (long long)j, (double)colw[j]);
    if (!(o.tensor_absmax < 0.0f) && !(o.tensor_absmax <= FLT_MAX))
        return bp_error_set(err, BP_EINVAL, "tensor '%s': given tensor absmax is not finite",
                            tname(t));

    bp_sweep_result r;
    bp_sweep_result_init(&r);
    int rc = alloc_result(&r, rows, cols, nfmt);
    if (rc) {
        rc = bp_error_set(err, rc, "tensor '%s': out of memory for sweep results", tname(t));
        goto out;
    }
    r.has_colw = colw != NULL;
    int need_absmax = 0;
    for (size_t i = 0; i < nfmt; i++) {
        r.fmts[i] = fmts[i];
        r.supported[i] = (uint8_t)(bp_format_supports(&fmts[i], rows, cols) != 0);
        r.bytes[i] = r.supported[i] ? bp_format_bytes(&fmts[i], rows, cols) : 0;
        need_absmax |= r.supported[i] && fmts[i].kind == BP_FMT_NVFP4;
    }
    if (need_absmax) {
        if (o.tensor_absmax >= 0.0f)
            r.tensor_absmax = o.tensor_absmax;
        else if ((rc = bp_sweep_tensor_absmax(t, &r.tensor_absmax, err)) != BP_OK)
            goto out;
    }

    int64_t blk = block_rows(cols, o.slice_rows);
    int64_t c0 = row0 / CH, c1 = (row0 + nrows + CH - 1) / CH;
    float *tps = malloc(nfmt * sizeof *tps);
    if (!tps) {
        rc = bp_error_set(err, BP_ENOMEM, "tensor '%s': out of memory for sweep results",
                          tname(t));
        goto out;
    }
    for (size_t fi = 0; fi < nfmt; fi++)
        tps[fi] = bp_format_tensor_param(&r.fmts[fi], r.tensor_absmax);
    first_fail ff;
    fail_init(&ff);
#pragma omp parallel if (c1 - c0 > 1)
    {
        /* Per thread: one block of floats and, per format, the errors of
         * the rows of one chunk. */
        float *buf = malloc((size_t)blk * (size_t)cols * sizeof *buf);
        double *es = malloc(nfmt * CH * sizeof *es), *ew = malloc(nfmt * CH * sizeof *ew);
        bp_error e;
#pragma omp for schedule(dynamic, 1)
        for (int64_t c = c0; c < c1; c++) {
            if (c > fail_chunk(&ff))
                continue;
            if (!buf || !es || !ew) {
                fail_note(&ff, c,
                          bp_error_set(&e, BP_ENOMEM,
                                       "tensor '%s': out of memory for a %lld-row block",
                                       tname(t), (long long)blk),
                          &e);
                continue;
            }
            int64_t rs = c * CH, re = (c + 1) * CH < rows ? (c + 1) * CH : rows;
            int crc = BP_OK;
            for (int64_t r0b = rs; r0b < re && !crc; r0b += blk) {
                int64_t n = re - r0b < blk ? re - r0b : blk;
                if ((crc = load_block(t, r0b, n, cols, buf, &e)) != BP_OK)
                    break;
                for (size_t fi = 0; fi < nfmt && !crc; fi++) {
                    if (!r.supported[fi])
                        continue;
                    double *ps = es + fi * CH + (r0b - rs), *pw = ew + fi * CH + (r0b - rs);
                    crc = bp_format_rtn_error_rows(&r.fmts[fi], buf, n, cols, tps[fi], colw, ps,
                                                   colw ? pw : NULL, NULL, &e);
                    if (crc)
                        bp_error_prefix(&e, "tensor '%s' rows [%lld, +%lld)", tname(t),
                                        (long long)r0b, (long long)n);
                }
            }
            if (crc) {
                fail_note(&ff, c, crc, &e);
                continue;
            }
            /* Chunk partials: serial row sums in row order. */
            for (size_t fi = 0; fi < nfmt; fi++) {
                if (!r.supported[fi])
                    continue;
                double a = 0.0, b = 0.0;
                for (int64_t i = 0; i < re - rs; i++) {
                    a += es[fi * CH + (size_t)i];
                    if (colw)
                        b += ew[fi * CH + (size_t)i];
                }
                r.partial[pidx(&r, fi, BP_SWEEP_SSE) + (size_t)c] = a;
                r.partial[pidx(&r, fi, BP_SWEEP_WSSE) + (size_t)c] = colw ? b : NAN;
            }
            r.chunk_done[c] = 1;
        }
        free(buf);
        free(es);
        free(ew);
    }
    free(tps);
    if (ff.rc) {
        if (err)
            *err = ff.err;
        rc = ff.rc;
        goto out;
    }
    *out = r;
    bp_sweep_result_init(&r);
out:
    bp_sweep_result_free(&r);
    return rc;
}

int bp_sweep_result_complete(const bp_sweep_result *r)
{
    if (!r || !r->chunk_done || r->nchunks < 1)
        return 0;
    for (int64_t c = 0; c < r->nchunks; c++)
        if (!r->chunk_done[c])
            return 0;
    return 1;
}

double bp_sweep_result_total(const bp_sweep_result *r, size_t fmt, int metric)
{
    const double *p = bp_sweep_partial(r, fmt, metric);
    if (!p || !r->supported[fmt] || (metric == BP_SWEEP_WSSE && !r->has_colw))
        return NAN;
    double s = 0.0;
    for (int64_t c = 0; c < r->nchunks; c++)
        if (r->chunk_done[c])
            s += p[c];
    return s;
}

static int copy_result(bp_sweep_result *dst, const bp_sweep_result *src)
{
    bp_sweep_result r;
    bp_sweep_result_init(&r);
    if (alloc_result(&r, src->rows, src->cols, src->nfmt))
        return BP_ENOMEM;
    r.nmetric = src->nmetric;
    r.has_colw = src->has_colw;
    r.tensor_absmax = src->tensor_absmax;
    size_t np = src->nfmt * (size_t)src->nmetric * (size_t)src->nchunks;
    if (src->nmetric != BP_SWEEP_NMETRIC) {
        /* A result from another version: size the partials to match. */
        free(r.partial);
        r.partial = malloc(np * sizeof *r.partial);
        if (!r.partial) {
            bp_sweep_result_free(&r);
            return BP_ENOMEM;
        }
    }
    memcpy(r.fmts, src->fmts, src->nfmt * sizeof *r.fmts);
    memcpy(r.supported, src->supported, src->nfmt);
    memcpy(r.bytes, src->bytes, src->nfmt * sizeof *r.bytes);
    memcpy(r.chunk_done, src->chunk_done, (size_t)src->nchunks);
    memcpy(r.partial, src->partial, np * sizeof *r.partial);
    bp_sweep_result_free(dst);
    *dst = r;
    return BP_OK;
}

int bp_sweep_result_merge(bp_sweep_result *dst, const bp_sweep_result *src, bp_error *err)
{
    if (!dst || !src || !src->partial)
        return bp_error_set(err, BP_EINVAL, "sweep merge: NULL or empty argument");
    if (!dst->partial) {
        if (copy_result(dst, src))
            return bp_error_set(err, BP_ENOMEM, "sweep merge: out of memory");
        return BP_OK;
    }
    if (dst->rows != src->rows || dst->cols != src->cols || dst->nfmt != src->nfmt ||
        dst->nmetric != src->nmetric)
        return bp_error_set(err, BP_EMISMATCH,
                            "sweep merge: shapes differ (%lld x %lld, %zu formats, %d metrics "
                            "vs %lld x %lld, %zu formats, %d metrics)",
                            (long long)dst->rows, (long long)dst->cols, dst->nfmt, dst->nmetric,
                            (long long)src->rows, (long long)src->cols, src->nfmt, src->nmetric);
    if (dst->has_colw != src->has_colw)
        return bp_error_set(err, BP_EMISMATCH, "sweep merge: one part has column importance, "
                                               "the other not");
    if (memcmp(&dst->tensor_absmax, &src->tensor_absmax, sizeof(float)) != 0)
        return bp_error_set(err, BP_EMISMATCH, "sweep merge: tensor absmax %g vs %g",
                            (double)dst->tensor_absmax, (double)src->tensor_absmax);
    for (size_t i = 0; i < dst->nfmt; i++)
        if (strcmp(dst->fmts[i].name, src->fmts[i].name) != 0 ||
            dst->supported[i] != src->supported[i])
            return bp_error_set(err, BP_EMISMATCH, "sweep merge: format %zu is %s vs %s", i,
                                dst->fmts[i].name, src->fmts[i].name);
    for (int64_t c = 0; c < dst->nchunks; c++)
        if (dst->chunk_done[c] && src->chunk_done[c])
            return bp_error_set(err, BP_EMISMATCH, "sweep merge: chunk %lld (rows %lld..) swept "
                                                   "twice",
                                (long long)c, (long long)c * CH);
    for (size_t i = 0; i < dst->nfmt; i++)
        for (int m = 0; m < dst->nmetric; m++) {
            double *d = dst->partial + pidx(dst, i, m);
            const double *s = src->partial + pidx(src, i, m);
            for (int64_t c = 0; c < dst->nchunks; c++)
                if (src->chunk_done[c])
                    d[c] = s[c];
        }
    for (int64_t c = 0; c < dst->nchunks; c++)
        dst->chunk_done[c] |= src->chunk_done[c];
    return BP_OK;
}
