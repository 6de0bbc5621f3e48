/* Hessian accumulation: exact shard merging, symmetry, agreement with a
 * naive double computation, diag mode, layer ranges, stats files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/hessian.h"
#include "bitplan/llama.h"
#include "bitplan/model.h"
#include "bitplan/tokens.h"

#define MODEL_DIR BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"
#define CTX 128
#define NSEQ 8

typedef struct fixture {
    bp_model *model;
    bp_llama *llama;
    bp_tokens *calib;
    bp_hessian *one;  /* 8 sequences in one piece, full mode */
} fixture;

static bp_hessian *fresh(fixture *f, bp_hessian_mode mode, int64_t first, int64_t count,
                         int lm_head)
{
    bp_hessian_options o;
    bp_hessian_options_default(&o);
    o.mode = mode;
    o.ctx = CTX;
    o.layer_first = first;
    o.layer_count = count;
    o.lm_head = lm_head;
    o.model_hash = "blake2b256:test-model";
    bp_hessian *h = NULL;
    bp_error err;
    if (bp_hessian_new(bp_llama_get_config(f->llama), &o, &h, &err) != BP_OK)
        fail_msg("hessian_new: %s", err.msg);
    return h;
}

static void acc(fixture *f, bp_hessian *h, int64_t first, int64_t n)
{
    bp_error err;
    if (bp_hessian_accumulate(h, f->llama, f->calib, first, n, &err) != BP_OK)
        fail_msg("accumulate [%lld, %lld): %s", (long long)first, (long long)(first + n),
                 err.msg);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    bp_error err;
    if (bp_model_open(MODEL_DIR, &f->model, &err) != BP_OK ||
        bp_llama_new(f->model, &f->llama, &err) != BP_OK ||
        bp_tokens_load_text(MODEL_DIR "/calib.txt", 256, &f->calib, &err) != BP_OK) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    *state = f;
    f->one = fresh(f, BP_HESSIAN_FULL, 0, -1, 1);
    acc(f, f->one, 0, NSEQ);
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    bp_hessian_destroy(&f->one);
    bp_hessian_destroy(&f->one);
    bp_llama_destroy(&f->llama);
    bp_model_destroy(&f->model);
    bp_tokens_destroy(&f->calib);
    free(f);
    return 0;
}

static void test_hessian_shards_merge_bit_exactly(void **state)
{
    fixture *f = *state;
    bp_error err;
    assert_int_equal(bp_hessian_slot_count(f->one), 6 * 4 + 1);
    assert_int_equal(bp_hessian_n_sequences(f->one), NSEQ);
    bp_hessian_slot_info si;
    assert_int_equal(bp_hessian_slot(f->one, 0, &si, &err), BP_OK);
    assert_int_equal(si.count, NSEQ * CTX);
    assert_string_equal(si.name, "model.layers.0.self_attn.qkv");

    /* Three uneven shards, merged as (c + a) + b, with a different BLAS
     * thread count for one of them. */
    bp_hessian *a = fresh(f, BP_HESSIAN_FULL, 0, -1, 1), *b = fresh(f, BP_HESSIAN_FULL, 0, -1, 1),
               *c = fresh(f, BP_HESSIAN_FULL, 0, -1, 1);
    acc(f, a, 0, 3);
    int before = openblas_get_num_threads();
    openblas_set_num_threads(before == 1 ? 2 : 1);
    acc(f, b, 3, 1);
    openblas_set_num_threads(before);
    acc(f, c, 4, 4);
    assert_false(bp_hessian_equal(a, f->one));
    assert_int_equal(bp_hessian_merge(c, a, &err), BP_OK);
    assert_int_equal(bp_hessian_merge(c, b, &err), BP_OK);
    assert_true(bp_hessian_equal(c, f->one));

    /* Eight singles, merged in reverse order into one accumulator. */
    bp_hessian *m = fresh(f, BP_HESSIAN_FULL, 0, -1, 1);
    for (int s = NSEQ - 1; s >= 0; s--) {
        bp_hessian *one = fresh(f, BP_HESSIAN_FULL, 0, -1, 1);
        acc(f, one, s, 1);
        assert_int_equal(bp_hessian_merge(m, one, &err), BP_OK);
        bp_hessian_destroy(&one);
    }
    assert_true(bp_hessian_equal(m, f->one));

    /* Double counting is refused, and leaves the accumulator unchanged. */
    assert_int_equal(bp_hessian_merge(m, a, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "both"));
    assert_true(bp_hessian_equal(m, f->one));
    assert_int_equal(bp_hessian_accumulate(m, f->llama, f->calib, 7, 2, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "overlap"));
    assert_int_equal(bp_hessian_accumulate(m, f->llama, f->calib, 2047, 2, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "2048 sequences"));

    /* Another calibration stream cannot be mixed in. */
    uint32_t ids[CTX * 2];
    for (int i = 0; i < CTX * 2; i++)
        ids[i] = (uint32_t)(i % 251);
    bp_tokens *other = NULL;
    assert_int_equal(bp_tokens_from_array(ids, CTX * 2, "other", &other, &err), BP_OK);
    assert_int_equal(bp_hessian_accumulate(m, f->llama, other, 0, 1, &err), BP_EMISMATCH);
    bp_hessian *o = fresh(f, BP_HESSIAN_FULL, 0, -1, 1);
    assert_int_equal(bp_hessian_accumulate(o, f->llama, other, 1, 1, &err), BP_OK);
    assert_int_equal(bp_hessian_merge(o, a, &err), BP_EMISMATCH);
    assert_non_null(strstr(err.msg, "calibration"));
    bp_tokens_destroy(&other);
    bp_hessian_destroy(&o);

    /* Different modes do not merge. */
    bp_hessian *d = fresh(f, BP_HESSIAN_DIAG, 0, -1, 1);
    assert_int_equal(bp_hessian_merge(d, a, &err), BP_EMISMATCH);
    bp_hessian_destroy(&d);
    bp_hessian_destroy(&a);
    bp_hessian_destroy(&b);
    bp_hessian_destroy(&c);
    bp_hessian_destroy(&m);
}

/* Records the inputs of chosen slots for a naive reference. */
typedef struct capture {
    int layer;
    bp_linear_input which;
    double *H;     /* dim x dim, naive double sums */
    int64_t dim;
} capture;

static void capture_hook(void *ctx, int layer, bp_linear_input which, const float *x,
                         int64_t n, int64_t dim)
{
    capture *c = ctx;
    if (layer != c->layer || which != c->which)
        return;
    c->dim = dim;
    for (int64_t t = 0; t < n; t++)
        for (int64_t i = 0; i < dim; i++)
            for (int64_t j = 0; j < dim; j++)
                c->H[i * dim + j] += (double)x[t * dim + i] * (double)x[t * dim + j];
}

static void check_against_naive(fixture *f, int layer, bp_linear_input which, int64_t dim)
{
    bp_error err;
    capture c = {layer, which, calloc((size_t)(dim * dim), sizeof(double)), 0};
    bp_llama_hooks hooks = {capture_hook, &c, 0};
    for (int s = 0; s < NSEQ; s++)
        assert_int_equal(bp_llama_forward(f->llama, bp_tokens_data(f->calib) + s * CTX, CTX,
                                          NULL, &hooks, &err),
                         BP_OK);
    assert_int_equal(c.dim, dim);
    int slot = bp_hessian_find(f->one, layer, which);
    assert_true(slot >= 0);
    double *H = malloc(sizeof(double) * (size_t)(dim * dim));
    double *d = malloc(sizeof(double) * (size_t)dim);
    assert_int_equal(bp_hessian_get_full(f->one, slot, H, &err), BP_OK);
    assert_int_equal(bp_hessian_get_diag(f->one, slot, d, &err), BP_OK);
    double worst = 0, worst_diag = 0;
    for (int64_t i = 0; i < dim; i++) {
        assert_true(H[i * dim + i] == d[i]);
        double rd = fabs(H[i * dim + i] - c.H[i * dim + i]) / c.H[i * dim + i];
        worst_diag = fmax(worst_diag, rd);
        for (int64_t j = 0; j < dim; j++) {
            assert_true(H[i * dim + j] == H[j * dim + i]); /* symmetric, exactly */
            double scale = sqrt(c.H[i * dim + i] * c.H[j * dim + j]);
            worst = fmax(worst, fabs(H[i * dim + j] - c.H[i * dim + j]) / scale);
        }
    }
    printf("%s: max |H - naive| / sqrt(Hii Hjj) = %.2g, diagonal rel. err %.2g\n",
           bp_linear_input_name(which), worst, worst_diag);
    assert_true(worst <= 1e-5);
    assert_true(worst_diag <= 1e-12);
    free(H);
    free(d);
    free(c.H);
}

static void test_hessian_matches_naive_double(void **state)
{
    fixture *f = *state;
    check_against_naive(f, 0, BP_LINEAR_ATTN_QKV, 128);
    check_against_naive(f, 3, BP_LINEAR_MLP_DOWN, 384);
    check_against_naive(f, 5, BP_LINEAR_ATTN_O, 128);
    check_against_naive(f, -1, BP_LINEAR_LM_HEAD, 128);
}

static void test_hessian_diag_mode_and_layer_range(void **state)
{
    fixture *f = *state;
    bp_error err;
    bp_hessian *d = fresh(f, BP_HESSIAN_DIAG, 0, -1, 1);
    acc(f, d, 0, NSEQ);
    assert_int_equal(bp_hessian_get_mode(d), BP_HESSIAN_DIAG);
    double a[384], b[384], full[128 * 128];
    for (int s = 0; s < bp_hessian_slot_count(d); s++) {
        bp_hessian_slot_info si;
        assert_int_equal(bp_hessian_slot(d, s, &si, &err), BP_OK);
        assert_int_equal(bp_hessian_get_diag(d, s, a, &err), BP_OK);
        assert_int_equal(bp_hessian_get_diag(f->one, s, b, &err), BP_OK);
        assert_memory_equal(a, b, sizeof(double) * (size_t)si.dim);
    }
    assert_int_equal(bp_hessian_get_full(d, 0, full, &err), BP_EUNSUPPORTED);
    bp_hessian_destroy(&d);

    /* Only blocks [2, 3): same sums as the corresponding slots of a full run. */
    bp_hessian *r = fresh(f, BP_HESSIAN_FULL, 2, 1, 0);
    acc(f, r, 0, NSEQ);
    assert_int_equal(bp_hessian_slot_count(r), 4);
    assert_int_equal(bp_hessian_find(r, 1, BP_LINEAR_ATTN_QKV), -1);
    assert_int_equal(bp_hessian_find(r, -1, BP_LINEAR_LM_HEAD), -1);
    int layer;
    bp_linear_input which;
    assert_int_equal(bp_llama_weight_input(bp_llama_get_config(f->llama),
                                           "model.layers.2.self_attn.k_proj.weight", &layer,
                                           &which),
                     BP_OK);
    int s = bp_hessian_find(r, layer, which), t = bp_hessian_find(f->one, layer, which);
    assert_int_equal(s, 0);
    double *x = malloc(sizeof(double) * 128 * 128), *y = malloc(sizeof(double) * 128 * 128);
    assert_int_equal(bp_hessian_get_full(r, s, x, &err), BP_OK);
    assert_int_equal(bp_hessian_get_full(f->one, t, y, &err), BP_OK);
    assert_memory_equal(x, y, sizeof(double) * 128 * 128);
    free(x);
    free(y);
    bp_hessian_destroy(&r);

    bp_hessian_options o;
    bp_hessian *bad = NULL;
    bp_hessian_options_default(&o);
    o.ctx = CTX;
    o.layer_first = 5;
    o.layer_count = 2;
    assert_int_equal(bp_hessian_new(bp_llama_get_config(f->llama), &o, &bad, &err), BP_EINVAL);
    o.layer_first = 0;
    o.layer_count = -1;
    o.ctx = 5000;
    assert_int_equal(bp_hessian_new(bp_llama_get_config(f->llama), &o, &bad, &err), BP_EINVAL);
    assert_null(bad);
}

static void test_hessian_stats_file_round_trip(void **state)
{
    fixture *f = *state;
    bp_error err;
    char path[1024], dense[1024];
    snprintf(path, sizeof path, "%s/calib_hessian.safetensors", BP_TEST_TMPDIR);
    snprintf(dense, sizeof dense, "%s/calib_hessian_dense.safetensors", BP_TEST_TMPDIR);
    assert_int_equal(bp_hessian_save(f->one, path, 0, &err), BP_OK);
    assert_int_equal(bp_hessian_save(f->one, dense, BP_HESSIAN_SAVE_DENSE, &err), BP_OK);
    bp_hessian *h = NULL, *g = NULL;
    assert_int_equal(bp_hessian_load(path, &h, &err), BP_OK);
    assert_true(bp_hessian_equal(h, f->one));
    assert_string_equal(bp_hessian_calib_hash(h), bp_tokens_hash(f->calib));
    assert_string_equal(bp_hessian_model_hash(h), "blake2b256:test-model");
    assert_int_equal(bp_hessian_ctx(h), CTX);
    assert_int_equal(bp_hessian_n_sequences(h), NSEQ);
    assert_int_equal(bp_hessian_load(dense, &g, &err), BP_OK);
    assert_true(bp_hessian_equal(g, f->one));

    /* Loaded partial stats keep merging exactly. */
    bp_hessian *rest = fresh(f, BP_HESSIAN_FULL, 0, -1, 1);
    acc(f, rest, NSEQ, 2);
    assert_int_equal(bp_hessian_merge(h, rest, &err), BP_OK);
    acc(f, g, NSEQ, 2);
    assert_true(bp_hessian_equal(h, g));
    bp_hessian_destroy(&rest);

    /* The dense tensor and the metadata as other tools see them. */
    bp_safetensors *st = NULL;
    assert_int_equal(bp_safetensors_open(dense, &st, &err), BP_OK);
    assert_string_equal(bp_safetensors_metadata(st, "mode"), "full");
    assert_string_equal(bp_safetensors_metadata(st, "sequences"), "0:8");
    assert_string_equal(bp_safetensors_metadata(st, "calib_hash"), bp_tokens_hash(f->calib));
    const bp_tensor_info *t = bp_safetensors_find(st, "model.layers.3.mlp.down.hessian");
    assert_non_null(t);
    assert_int_equal(t->dtype, BP_DTYPE_F64);
    assert_int_equal(t->shape[0], 384);
    int slot = bp_hessian_find(f->one, 3, BP_LINEAR_MLP_DOWN);
    double *H = malloc(sizeof(double) * 384 * 384);
    assert_int_equal(bp_hessian_get_full(f->one, slot, H, &err), BP_OK);
    assert_memory_equal(t->data, H, sizeof(double) * 384 * 384);
    t = bp_safetensors_find(st, "lm_head.count");
    assert_non_null(t);
    double cnt;
    memcpy(&cnt, t->data, sizeof cnt);
    assert_true(cnt == NSEQ * CTX);
    free(H);
    bp_safetensors_destroy(&st);

    /* Malformed stats files are rejected with the file's name. */
    char badp[1024];
    snprintf(badp, sizeof badp, "%s/calib_hessian_bad.safetensors", BP_TEST_TMPDIR);
    bp_st_writer *w = NULL;
    assert_int_equal(bp_st_writer_new(badp, &w, &err), BP_OK);
    bp_st_writer_metadata(w, "format", "bitplan.hessian.v1", &err);
    bp_st_writer_metadata(w, "mode", "diag", &err);
    bp_st_writer_metadata(w, "fx_shift", "40", &err);
    bp_st_writer_metadata(w, "ctx", "128", &err);
    bp_st_writer_metadata(w, "n_sequences", "1", &err);
    bp_st_writer_metadata(w, "n_sequences_total", "4", &err);
    bp_st_writer_metadata(w, "sequences", "0:1", &err);
    bp_st_writer_metadata(w, "calib_hash", "blake2b256:x", &err);
    int64_t one = 1;
    assert_int_equal(bp_st_writer_declare(w, "lm_head.count", BP_DTYPE_F64, 1, &one, &err), BP_OK);
    double wrong = 127; /* not n_sequences * ctx */
    assert_int_equal(bp_st_writer_write(w, &wrong, sizeof wrong, &err), BP_OK);
    assert_int_equal(bp_st_writer_finish(w, &err), BP_OK);
    bp_st_writer_destroy(&w);
    bp_hessian *x = NULL;
    assert_int_equal(bp_hessian_load(badp, &x, &err), BP_EFORMAT);
    assert_non_null(strstr(err.msg, "calib_hessian_bad.safetensors"));
    assert_non_null(strstr(err.msg, "lm_head.count"));
    assert_null(x);
    bp_hessian_destroy(&h);
    bp_hessian_destroy(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hessian_shards_merge_bit_exactly),
        cmocka_unit_test(test_hessian_matches_naive_double),
        cmocka_unit_test(test_hessian_diag_mode_and_layer_range),
        cmocka_unit_test(test_hessian_stats_file_round_trip),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
