/* Intra-tensor blocks: cell measurement, mixed-format apply (RTN and GPTQ,
 * both axes), packed layout, and plans with block maps through apply and
 * eval on the bundled model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/apply.h"
#include "bitplan/blocks.h"
#include "bitplan/calib_input.h"
#include "bitplan/evaluate.h"
#include "bitplan/gptq.h"
#include "bitplan/model.h"

#define MODEL BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"
#define DOWN "model.layers.1.mlp.down_proj.weight" /* 128 x 384 */
#define UP "model.layers.2.mlp.up_proj.weight"     /* 384 x 128 */

static bp_model *g_model;

static int setup(void **state)
{
    (void)state;
    bp_error e;
    if (bp_model_open(MODEL, &g_model, &e) != BP_OK) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    bp_model_destroy(&g_model);
    return 0;
}

static const bp_tensor_info *tensor(const char *name)
{
    long i = bp_model_find(g_model, name);
    assert_true(i >= 0);
    return bp_model_tensor(g_model, (size_t)i);
}

static float *weights(const bp_tensor_info *t)
{
    float *w = malloc(t->numel * sizeof *w);
    bp_error e;
    assert_non_null(w);
    assert_int_equal(bp_tensor_rows_f32(t, 0, t->shape[0], w, &e), BP_OK);
    return w;
}

/* A correlated SPD H = X^T X (deterministic LCG inputs, neighbouring
 * channels mixed) with one dead column, and its diagonal as importance. */
static double *make_h(int64_t n, float **imp)
{
    int64_t T = 3 * n;
    double *x = malloc((size_t)(T * n) * sizeof *x);
    double *h = calloc((size_t)(n * n), sizeof *h);
    assert_true(x && h);
    uint64_t s = 12345;
    for (int64_t i = 0; i < T * n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (double)((s >> 11) & 0xfffff) / (double)0xfffff - 0.5;
    }
    for (int64_t t = 0; t < T; t++) {
        for (int64_t j = n - 1; j > 0; j--)
            x[t * n + j] += 0.7 * x[t * n + j - 1];
        x[t * n + 5] = 0.0; /* a channel that never fires */
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double a = 0.0;
            for (int64_t t = 0; t < T; t++)
                a += x[t * n + i] * x[t * n + j];
            h[i * n + j] = a;
        }
    free(x);
    *imp = malloc((size_t)n * sizeof **imp);
    for (int64_t j = 0; j < n; j++)
        (*imp)[j] = (float)h[j * n + j];
    return h;
}

static void parse_all(const char *const *names, size_t n, bp_format *out)
{
    bp_error e;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(bp_format_parse(names[i], &out[i], &e), BP_OK);
}

/* Whole-tensor deq of format f (bp_apply_tensor). */
static float *whole(const bp_tensor_info *t, const bp_format *f, bp_quant_method m, const double *h)
{
    float *d = malloc(t->numel * sizeof *d);
    bp_error e;
    int rc = bp_apply_tensor(t, f, m, h, NULL, 0, d, &e);
    if (rc != BP_OK)
        fail_msg("%s: %s", f->name, e.msg);
    return d;
}

static int rel_close(double a, double b, double tol)
{
    return fabs(a - b) <= tol * fmax(fabs(a), fabs(b));
}

/* Rows axis: each cell is exactly the sum of the whole-tensor quantization's
 * per-row errors over the block's rows (RTN and GPTQ, every metric), and the
 * cells of a uniform map add up to the whole-tensor value (1e-12 relative:
 * the rows are summed in blocks, a different association than one sum). */
static void check_rows_cells(bp_quant_method method)
{
    const bp_tensor_info *t = tensor(UP);
    int64_t rows = t->shape[0], cols = t->shape[1], size = 96;
    float *imp;
    double *h = make_h(cols, &imp);
    static const char *const names[] = {"int4_g32_asym", "int3_pc_sym", "nvfp4", "fp8_e4m3",
                                        "mxfp4", "int2_g128_sym", "bf16"};
    enum { NF = sizeof names / sizeof *names };
    bp_format fm[NF];
    parse_all(names, NF, fm);
    bp_block_measure *m = NULL;
    bp_error e;
    int rc = bp_measure_blocks(t, BP_BLOCK_AXIS_ROWS, size, fm, NF, imp, h, method, &m, &e);
    if (rc != BP_OK)
        fail_msg("%s", e.msg);
    assert_int_equal(m->n_blocks, rows / size);
    float *w = weights(t);
    double *rm = malloc((size_t)rows * sizeof *rm), *rd = malloc((size_t)rows * sizeof *rd);
    double *rf = malloc((size_t)rows * sizeof *rf);
    for (size_t k = 0; k < NF; k++) {
        assert_true(m->offered[k]);
        assert_int_equal(m->bytes[k], bp_format_bytes(&fm[k], size, cols));
        float *d = whole(t, &fm[k], method, h);
        /* one-row blocks: the per-row values themselves */
        assert_int_equal(bp_blocks_error(w, d, rows, cols, BP_BLOCK_AXIS_ROWS, 1, imp, h, rm, rd, rf, &e),
                         BP_OK);
        double tm = 0, td = 0, tf = 0, cm = 0, cd = 0, cf = 0;
        for (int64_t b = 0; b < m->n_blocks; b++) {
            double sm = 0, sd = 0, sf = 0;
            for (int64_t r = b * size; r < (b + 1) * size; r++) {
                sm += rm[r];
                sd += rd[r];
                sf += rf[r];
            }
            size_t c = bp_block_measure_cell(m, b, k);
            assert_true(m->mse[c] == sm);
            assert_true(m->hdiag[c] == sd);
            assert_true(m->hfull[c] == sf);
            if (method == BP_METHOD_GPTQ)
                assert_true(m->gptq[c] == sf);
            else
                assert_true(isnan(m->gptq[c]));
            cm += m->mse[c];
            cd += m->hdiag[c];
            cf += m->hfull[c];
        }
        for (int64_t r = 0; r < rows; r++) {
            tm += rm[r];
            td += rd[r];
            tf += rf[r];
        }
        assert_true(tm > 0 || fm[k].kind == BP_FMT_BF16);
        assert_true(rel_close(cm, tm, 1e-12));
        assert_true(rel_close(cd, td, 1e-12));
        assert_true(rel_close(cf, tf, 1e-12));
        if (method == BP_METHOD_GPTQ && fm[k].kind != BP_FMT_BF16) {
            double g = 0;
            assert_int_equal(bp_gptq_error(&fm[k], w, rows, cols, h, cols, cols, BP_GPTQ_DAMP_DEFAULT,
                                           &g, NULL, &e), BP_OK);
            assert_true(rel_close(cf, g, 1e-12));
        }
        free(d);
    }
    free(rm);
    free(rd);
    free(rf);
    free(w);
    free(h);
    free(imp);
    bp_block_measure_destroy(&m);
    bp_block_measure_destroy(&m);
}

static void test_rows_cells_sum_rtn(void **state)
{
    (void)state;
    check_rows_cells(BP_METHOD_RTN);
}

static void test_rows_cells_sum_gptq(void **state)
{
    (void)state;
    check_rows_cells(BP_METHOD_GPTQ);
}

/* A block map over `formats` with runs from a pattern. */
typedef struct map_buf {
    const char *names[4];
    bp_plan_run runs[16];
    bp_plan_blocks b;
} map_buf;

static void make_map(map_buf *mb, bp_block_axis axis, int64_t size, const char *const *names, size_t nf,
                     const uint32_t *pattern, size_t n_runs, const uint64_t *counts)
{
    for (size_t i = 0; i < nf; i++)
        mb->names[i] = names[i];
    for (size_t r = 0; r < n_runs; r++) {
        mb->runs[r].format = pattern[r];
        mb->runs[r].count = counts[r];
    }
    mb->b.axis = axis;
    mb->b.size = size;
    mb->b.formats = mb->names;
    mb->b.n_formats = nf;
    mb->b.runs = mb->runs;
    mb->b.n_runs = n_runs;
}

/* The format index of each block. */
static void block_format_index(const bp_plan_blocks *b, int64_t nb, size_t *out)
{
    int64_t k = 0;
    for (size_t r = 0; r < b->n_runs; r++)
        for (uint64_t c = 0; c < b->runs[r].count; c++)
            out[k++] = b->runs[r].format;
    assert_int_equal(k, nb);
}

/* Unpack every block of packed and dequantize it into the tensor layout. */
static void unpack_blocks(const bp_plan_blocks *b, int64_t rows, int64_t cols, const uint8_t *packed,
                          size_t len, float *out)
{
    int64_t br, bc, nb = (b->axis == BP_BLOCK_AXIS_ROWS ? rows : cols) / b->size;
    bp_blocks_shape(b->axis, b->size, rows, cols, &br, &bc);
    size_t *fi = malloc((size_t)nb * sizeof *fi);
    block_format_index(b, nb, fi);
    uint16_t *codes = malloc((size_t)(br * bc) * sizeof *codes);
    bp_qparams *p = malloc((size_t)(br * bc) * sizeof *p);
    float *q = malloc((size_t)(br * bc) * sizeof *q);
    size_t off = 0;
    for (int64_t k = 0; k < nb; k++) {
        bp_format f;
        bp_error e;
        assert_int_equal(bp_format_parse(b->formats[fi[k]], &f, &e), BP_OK);
        uint64_t n = bp_format_bytes(&f, br, bc);
        float tp;
        assert_true(off + n <= len);
        if (bp_format_unpack(&f, br, bc, packed + off, n, codes, p, &tp, &e) != BP_OK)
            fail_msg("block %lld: %s", (long long)k, e.msg);
        bp_format_dequantize_rows(&f, codes, p, br, bc, q);
        for (int64_t r = 0; r < br; r++)
            for (int64_t j = 0; j < bc; j++) {
                int64_t R = b->axis == BP_BLOCK_AXIS_ROWS ? k * b->size + r : r;
                int64_t C = b->axis == BP_BLOCK_AXIS_ROWS ? j : k * b->size + j;
                out[R * cols + C] = q[r * bc + j];
            }
        off += n;
    }
    assert_int_equal(off, len);
    free(fi);
    free(codes);
    free(p);
    free(q);
}

/* Apply a mixed map: packed length == plan bytes == sum of cell bytes,
 * packed blocks unpack to deq, and (when exact) re-measuring deq gives the
 * chosen cells bit for bit. Returns deq (caller frees). */
static float *apply_and_check(const bp_tensor_info *t, const bp_plan_blocks *b, bp_quant_method method,
                              const double *h, const float *imp, int exact)
{
    int64_t rows = t->shape[0], cols = t->shape[1];
    uint64_t need = 0;
    bp_error e;
    assert_int_equal(bp_plan_blocks_validate(b, rows, cols, &need, NULL, &e), BP_OK);
    uint8_t *packed = malloc(need);
    float *deq = malloc(t->numel * sizeof *deq), *un = malloc(t->numel * sizeof *un);
    int rc = bp_apply_tensor_blocks(t, b, method, h, packed, need, deq, &e);
    if (rc != BP_OK)
        fail_msg("%s", e.msg);
    unpack_blocks(b, rows, cols, packed, need, un);
    assert_memory_equal(un, deq, t->numel * sizeof *deq);

    bp_format fm[4];
    parse_all(b->formats, b->n_formats, fm);
    bp_block_measure *m = NULL;
    assert_int_equal(bp_measure_blocks(t, b->axis, b->size, fm, b->n_formats, imp, h, method, &m, &e), BP_OK);
    int64_t nb = m->n_blocks;
    size_t *fi = malloc((size_t)nb * sizeof *fi);
    block_format_index(b, nb, fi);
    double *mse = malloc((size_t)nb * sizeof *mse), *hd = malloc((size_t)nb * sizeof *hd);
    double *hf = malloc((size_t)nb * sizeof *hf);
    float *w = weights(t);
    assert_int_equal(bp_blocks_error(w, deq, rows, cols, b->axis, b->size, imp, h, mse, hd, hf, &e), BP_OK);
    uint64_t bytes = 0;
    for (int64_t k = 0; k < nb; k++) {
        size_t c = bp_block_measure_cell(m, k, fi[k]);
        bytes += m->bytes[fi[k]];
        if (exact) {
            assert_true(mse[k] == m->mse[c]);
            assert_true(hd[k] == m->hdiag[c]);
            assert_true(hf[k] == m->hfull[c]);
        }
    }
    assert_int_equal(bytes, need);
    free(fi);
    free(mse);
    free(hd);
    free(hf);
    free(w);
    free(packed);
    free(un);
    bp_block_measure_destroy(&m);
    return deq;
}

static void test_mixed_maps_remeasure(void **state)
{
    (void)state;
    const bp_tensor_info *down = tensor(DOWN), *up = tensor(UP);
    float *imp_d, *imp_u;
    double *hd = make_h(384, &imp_d), *hu = make_h(128, &imp_u);
    static const char *const fr[] = {"int3_pc_asym", "nvfp4", "int4_g64_sym"};
    static const uint32_t pr[] = {0, 1, 2, 0, 1};
    static const uint64_t cr[] = {1, 2, 1, 2, 2}; /* 8 row blocks of 48 */
    map_buf mb;
    make_map(&mb, BP_BLOCK_AXIS_ROWS, 48, fr, 3, pr, 5, cr);
    free(apply_and_check(up, &mb.b, BP_METHOD_RTN, hu, imp_u, 1));
    free(apply_and_check(up, &mb.b, BP_METHOD_GPTQ, hu, imp_u, 1));

    /* Column blocks of 64 of a 128 x 384 tensor: mixed group and per-row
     * formats. RTN cells are exact (hfull in its block-diagonal form). */
    static const char *const fc[] = {"int2_g32_asym", "int8_pc_sym", "mxfp4", "f16"};
    static const uint32_t pc[] = {0, 2, 1, 0, 3};
    static const uint64_t cc[] = {2, 1, 1, 1, 1};
    make_map(&mb, BP_BLOCK_AXIS_COLS, 64, fc, 4, pc, 5, cc);
    float *rtn = apply_and_check(down, &mb.b, BP_METHOD_RTN, hd, imp_d, 1);
    float *gq = apply_and_check(down, &mb.b, BP_METHOD_GPTQ, hd, imp_d, 0);
    /* One GPTQ pass with feedback across blocks must beat rounding on the
     * true (full-H) output error of the same map. */
    float *w = weights(down);
    double er = 0, eg = 0;
    bp_error e;
    assert_int_equal(bp_quant_hfull_rows(w, rtn, 128, 384, hd, NULL, &er, &e), BP_OK);
    assert_int_equal(bp_quant_hfull_rows(w, gq, 128, 384, hd, NULL, &eg, &e), BP_OK);
    assert_true(eg < 0.9 * er);
    free(w);
    free(rtn);
    free(gq);
    free(hd);
    free(hu);
    free(imp_d);
    free(imp_u);
}

/* One format in every block gives exactly the unblocked tensor's weights:
 * rows axis for every format, cols axis for group formats, RTN and GPTQ. */
static void test_uniform_map_matches_unblocked(void **state)
{
    (void)state;
    const bp_tensor_info *down = tensor(DOWN);
    float *imp;
    double *h = make_h(384, &imp);
    static const char *const names[] = {"int4_g128_asym", "int3_g32_sym", "nvfp4", "mxfp4",
                                        "int5_pc_asym", "fp8_e4m3", "f16"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        bp_format f;
        parse_all(&names[i], 1, &f);
        for (int ax = 0; ax < 2; ax++) {
            if (ax == BP_BLOCK_AXIS_COLS && f.group == 0 && f.kind != BP_FMT_F16)
                continue; /* per-row formats get per-block parameters */
            for (int m = 0; m < 2; m++) {
                static const uint32_t p0[] = {0};
                uint64_t cnt[] = {ax == BP_BLOCK_AXIS_ROWS ? 4 : 3};
                map_buf mb;
                make_map(&mb, (bp_block_axis)ax, ax == BP_BLOCK_AXIS_ROWS ? 32 : 128, &names[i], 1, p0, 1,
                         cnt);
                float *ref = whole(down, &f, (bp_quant_method)m, h);
                float *d = malloc(down->numel * sizeof *d);
                bp_error e;
                if (bp_apply_tensor_blocks(down, &mb.b, (bp_quant_method)m, h, NULL, 0, d, &e) != BP_OK)
                    fail_msg("%s: %s", names[i], e.msg);
                if (memcmp(ref, d, down->numel * sizeof *d))
                    fail_msg("%s axis %d method %d differs from the unblocked tensor", names[i], ax, m);
                free(ref);
                free(d);
            }
        }
    }
    free(h);
    free(imp);
}

/* Same results with 1 and 2 threads. */
static void test_thread_invariance(void **state)
{
    (void)state;
    const bp_tensor_info *down = tensor(DOWN);
    float *imp;
    double *h = make_h(384, &imp);
    static const char *const fc[] = {"int3_g32_asym", "int4_pc_sym"};
    static const uint32_t pc[] = {0, 1, 0};
    static const uint64_t cc[] = {1, 1, 1};
    map_buf mb;
    make_map(&mb, BP_BLOCK_AXIS_COLS, 128, fc, 2, pc, 3, cc);
    bp_format fm[2];
    parse_all(fc, 2, fm);
    float *d[2];
    bp_block_measure *m[2];
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k + 1);
        bp_error e;
        d[k] = malloc(down->numel * sizeof *d[k]);
        assert_int_equal(bp_apply_tensor_blocks(down, &mb.b, BP_METHOD_GPTQ, h, NULL, 0, d[k], &e), BP_OK);
        assert_int_equal(bp_measure_blocks(down, BP_BLOCK_AXIS_COLS, 128, fm, 2, imp, h, BP_METHOD_GPTQ, &m[k],
                                           &e), BP_OK);
    }
    omp_set_num_threads(2);
    assert_memory_equal(d[0], d[1], down->numel * sizeof *d[0]);
    size_t nc = (size_t)m[0]->n_blocks * 2;
    assert_memory_equal(m[0]->mse, m[1]->mse, nc * sizeof(double));
    assert_memory_equal(m[0]->hfull, m[1]->hfull, nc * sizeof(double));
    for (int k = 0; k < 2; k++) {
        free(d[k]);
        bp_block_measure_destroy(&m[k]);
    }
    free(h);
    free(imp);
}

static void test_unsupported_refused(void **state)
{
    (void)state;
    const bp_tensor_info *down = tensor(DOWN);
    bp_error e;
    /* 32-column blocks cannot hold 64- or 128-groups */
    static const char *const names[] = {"int4_g32_sym", "int4_g64_sym", "int4_g128_asym"};
    bp_format fm[3];
    parse_all(names, 3, fm);
    bp_block_measure *m = NULL;
    assert_int_equal(bp_measure_blocks(down, BP_BLOCK_AXIS_COLS, 32, fm, 3, NULL, NULL, BP_METHOD_RTN, &m, &e),
                     BP_OK);
    assert_int_equal(m->n_blocks, 12);
    assert_int_equal(m->offered[0], 1);
    assert_int_equal(m->offered[1], 0);
    assert_int_equal(m->offered[2], 0);
    assert_int_equal(m->bytes[1], 0);
    for (int64_t b = 0; b < m->n_blocks; b++) {
        assert_true(m->mse[bp_block_measure_cell(m, b, 0)] > 0);
        assert_true(isnan(m->mse[bp_block_measure_cell(m, b, 1)]));
        assert_true(isnan(m->hdiag[bp_block_measure_cell(m, b, 0)]));
        assert_true(isnan(m->hfull[bp_block_measure_cell(m, b, 0)]));
    }
    bp_block_measure_destroy(&m);

    static const uint32_t p[] = {0, 1};
    static const uint64_t c[] = {6, 6};
    map_buf mb;
    make_map(&mb, BP_BLOCK_AXIS_COLS, 32, names, 2, p, 2, c);
    float *d = malloc(down->numel * sizeof *d);
    assert_int_equal(bp_apply_tensor_blocks(down, &mb.b, BP_METHOD_RTN, NULL, NULL, 0, d, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, DOWN));
    assert_non_null(strstr(e.msg, "int4_g64_sym"));
    /* a size that does not divide, GPTQ without H, a wrong packed length */
    assert_int_equal(bp_measure_blocks(down, BP_BLOCK_AXIS_COLS, 100, fm, 1, NULL, NULL, BP_METHOD_RTN, &m, &e),
                     BP_EINVAL);
    assert_null(m);
    assert_int_equal(bp_measure_blocks(down, BP_BLOCK_AXIS_ROWS, 32, fm, 1, NULL, NULL, BP_METHOD_GPTQ, &m, &e),
                     BP_EINVAL);
    float bad_imp[384];
    for (int j = 0; j < 384; j++)
        bad_imp[j] = j == 7 ? -1.0f : 1.0f;
    assert_int_equal(bp_measure_blocks(down, BP_BLOCK_AXIS_ROWS, 32, fm, 1, bad_imp, NULL, BP_METHOD_RTN, &m, &e),
                     BP_EINVAL);
    assert_non_null(strstr(e.msg, "importance[7]"));
    make_map(&mb, BP_BLOCK_AXIS_COLS, 32, names, 1, p, 1, (const uint64_t[]){12});
    uint8_t buf[16];
    assert_int_equal(bp_apply_tensor_blocks(down, &mb.b, BP_METHOD_RTN, NULL, buf, sizeof buf, NULL, &e), BP_EINVAL);
    assert_int_equal(bp_apply_tensor_blocks(down, &mb.b, BP_METHOD_GPTQ, NULL, NULL, 0, d, &e), BP_EINVAL);
    free(d);
}

/* A plan with block maps on three tensors (rows and cols axes). */
static bp_plan *blocks_plan(bp_quant_method method, const bp_calib *calib)
{
    static const char *const fa[] = {"int4_g32_asym", "int8_g32_sym"};
    static const uint32_t pa[] = {0, 1, 0};
    static const uint64_t ca[] = {3, 1, 2}; /* 6 column blocks of 64 */
    static const char *const fb[] = {"int3_pc_asym", "nvfp4"};
    static const uint32_t pb[] = {1, 0};
    static const uint64_t cb[] = {1, 3}; /* 4 row blocks of 96 */
    map_buf ma, mb;
    make_map(&ma, BP_BLOCK_AXIS_COLS, 64, fa, 2, pa, 3, ca);
    make_map(&mb, BP_BLOCK_AXIS_ROWS, 96, fb, 2, pb, 2, cb);
    bp_plan *p = bp_plan_new();
    bp_error e;
    struct {
        const char *name;
        int64_t r, c;
        const char *fmt;
        const bp_plan_blocks *b;
    } ts[] = {{DOWN, 128, 384, "int4_g32_asym", &ma.b},
              {UP, 384, 128, "int3_pc_asym", &mb.b},
              {"model.layers.0.self_attn.q_proj.weight", 128, 128, "int4_g128_asym", NULL}};
    uint64_t params = 0;
    for (size_t i = 0; i < 3; i++) {
        bp_plan_tensor t = {ts[i].name, ts[i].r, ts[i].c, "BF16", ts[i].fmt, method, NAN, ts[i].b, 0, 0};
        if (bp_plan_add_tensor(p, &t, &e) != BP_OK)
            fail_msg("%s", e.msg);
        params += (uint64_t)(ts[i].r * ts[i].c);
    }
    assert_int_equal(bp_plan_set_tool(p, "bitplan", "test", &e), BP_OK);
    assert_int_equal(bp_plan_set_model(p, MODEL, NULL, &e), BP_OK);
    assert_int_equal(bp_plan_set_calibration(p, calib ? bp_calib_id(calib) : NULL,
                                             calib ? bp_calib_source(calib) : NULL, &e), BP_OK);
    assert_int_equal(bp_plan_set_metric(p, BP_METRIC_MSE, &e), BP_OK);
    assert_int_equal(bp_plan_set_budget(p, BP_BUDGET_BITS, 16.0, 2 * params, &e), BP_OK);
    assert_int_equal(bp_plan_set_solver(p, "test", "feasible", 0.0, NAN, NAN, &e), BP_OK);
    return p;
}

static void check_eval(bp_llama *llama, const bp_plan *plan, const bp_calib *calib)
{
    bp_tokens *tok = NULL;
    bp_error e;
    assert_int_equal(bp_calib_load_tokens(MODEL "/eval.txt", NULL, 256, &tok, &e), BP_OK);
    bp_eval_result r;
    int rc = bp_evaluate(llama, g_model, plan, calib, bp_tokens_data(tok), bp_tokens_count(tok), 64, 4, 1, &r,
                         &e);
    if (rc != BP_OK)
        fail_msg("%s", e.msg);
    assert_true(isfinite(r.nll) && isfinite(r.nll_fp));
    assert_true(r.kl > 0 && r.kl < 1.0);
    bp_tokens_destroy(&tok);
}

static void test_plan_with_blocks_apply_and_eval(void **state)
{
    (void)state;
    bp_error e;
    bp_plan *plan = blocks_plan(BP_METHOD_RTN, NULL);
    const char *dq = BP_TEST_TMPDIR "/blocks-dq", *pk = BP_TEST_TMPDIR "/blocks-packed";
    bp_apply_options o = {1, 1, 1, NULL, NULL};
    int rc = bp_apply_model(plan, g_model, dq, &o, &e);
    if (rc != BP_OK)
        fail_msg("%s", e.msg);
    o.dequantized = 0;
    assert_int_equal(bp_apply_model(plan, g_model, pk, &o, &e), BP_OK);

    /* The dequantized file holds bf16(deq); the packed file the blocks in
     * order, with the map in its metadata. */
    bp_model *out = NULL;
    bp_safetensors *st = NULL;
    assert_int_equal(bp_model_open(dq, &out, &e), BP_OK);
    assert_int_equal(bp_safetensors_open(BP_TEST_TMPDIR "/blocks-packed/model.safetensors", &st, &e), BP_OK);
    json_t *meta = json_loads(bp_safetensors_metadata(st, "bitplan"), 0, NULL);
    assert_non_null(meta);
    for (size_t i = 0; i < bp_plan_tensor_count(plan); i++) {
        bp_plan_tensor pt;
        bp_plan_tensor_get(plan, i, &pt);
        const bp_tensor_info *t = tensor(pt.name);
        float *d = malloc(t->numel * sizeof *d), *got = malloc(t->numel * sizeof *got);
        assert_int_equal(bp_apply_plan_tensor(t, &pt, NULL, NULL, 0, d, &e), BP_OK);
        const bp_tensor_info *o2 = bp_model_tensor(out, (size_t)bp_model_find(out, pt.name));
        assert_int_equal(bp_tensor_rows_f32(o2, 0, pt.rows, got, &e), BP_OK);
        for (uint64_t k = 0; k < t->numel; k++)
            assert_true(got[k] == bp_bf16_to_f32(bp_f32_to_bf16(d[k])));
        const bp_tensor_info *pkd = bp_safetensors_find(st, pt.name);
        assert_int_equal(pkd->nbytes, pt.bytes);
        json_t *je = json_object_get(json_object_get(meta, "tensors"), pt.name);
        assert_non_null(je);
        json_t *jb = json_object_get(je, "blocks");
        if (pt.blocks) {
            assert_non_null(jb);
            assert_string_equal(json_string_value(json_object_get(jb, "axis")),
                                pt.blocks->axis == BP_BLOCK_AXIS_ROWS ? "rows" : "cols");
            assert_int_equal(json_integer_value(json_object_get(jb, "size")), pt.blocks->size);
            assert_int_equal(json_array_size(json_object_get(jb, "runs")), pt.blocks->n_runs);
            float *un = malloc(t->numel * sizeof *un);
            unpack_blocks(pt.blocks, pt.rows, pt.cols, pkd->data, pkd->nbytes, un);
            assert_memory_equal(un, d, t->numel * sizeof *d);
            free(un);
        } else {
            assert_null(jb);
        }
        free(d);
        free(got);
    }
    json_decref(meta);
    bp_safetensors_destroy(&st);
    bp_model_destroy(&out);

    bp_llama *llama = NULL;
    assert_int_equal(bp_llama_new(g_model, &llama, &e), BP_OK);
    check_eval(llama, plan, NULL);
    bp_plan_destroy(&plan);

    /* GPTQ blocks need the plan's calibration, and use its Hessians. */
    bp_calib_spec cs;
    bp_calib_spec_default(&cs);
    cs.text_path = MODEL "/calib.txt";
    cs.ctx = 32;
    cs.n_seq = 6;
    cs.kl_windows = 2;
    cs.quiet = 1;
    bp_calib *calib = NULL;
    if (bp_calib_open(&cs, llama, NULL, 0, &calib, &e) != BP_OK)
        fail_msg("%s", e.msg);
    plan = blocks_plan(BP_METHOD_GPTQ, calib);
    check_eval(llama, plan, calib);
    assert_int_equal(bp_evaluate_apply_plan(llama, g_model, plan, NULL, &e), BP_EINVAL);
    bp_llama_reset_all_weights(llama);
    bp_plan_destroy(&plan);
    bp_calib_destroy(&calib);
    bp_llama_destroy(&llama);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_cells_sum_rtn),
        cmocka_unit_test(test_rows_cells_sum_gptq),
        cmocka_unit_test(test_mixed_maps_remeasure),
        cmocka_unit_test(test_uniform_map_matches_unblocked),
        cmocka_unit_test(test_thread_invariance),
        cmocka_unit_test(test_unsupported_refused),
        cmocka_unit_test(test_plan_with_blocks_apply_and_eval),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
