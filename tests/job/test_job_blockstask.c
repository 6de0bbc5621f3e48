/* The "measure_blocks" task kind: its params come from the network, so
 * every malformed field gets a clear error and never a crash; a good task
 * returns one cell per (block, format) that equals the library's
 * measurement. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/blocks.h"
#include "bitplan/task.h"

#define MODEL BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"
#define TENSOR "model.layers.0.mlp.up_proj.weight" /* 384 x 128 */

typedef struct field {
    const char *key;
    const char *str;   /* string value, or NULL */
    long num;          /* integer value when str is NULL and !fmts */
    int fmts;          /* 1: the formats array below */
} field;

static const char *g_fmts[] = {"int3_g64_asym", "int4_g128_sym"};

static void pack(msgpack_sbuffer *sb, const field *f, size_t n, const char *const *fmts, size_t nf)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, n);
    for (size_t i = 0; i < n; i++) {
        msgpack_pack_str(&pk, strlen(f[i].key));
        msgpack_pack_str_body(&pk, f[i].key, strlen(f[i].key));
        if (f[i].fmts) {
            msgpack_pack_array(&pk, nf);
            for (size_t k = 0; k < nf; k++) {
                msgpack_pack_str(&pk, strlen(fmts[k]));
                msgpack_pack_str_body(&pk, fmts[k], strlen(fmts[k]));
            }
        } else if (f[i].str) {
            msgpack_pack_str(&pk, strlen(f[i].str));
            msgpack_pack_str_body(&pk, f[i].str, strlen(f[i].str));
        } else {
            msgpack_pack_int64(&pk, f[i].num);
        }
    }
}

/* Run the task; on success *ctx_out keeps the output bins (caller frees). */
static int run(const field *f, size_t n, const char *const *fmts, size_t nf, bp_task_ctx *ctx, bp_error *err)
{
    msgpack_sbuffer sb, rb;
    msgpack_sbuffer_init(&sb);
    msgpack_sbuffer_init(&rb);
    pack(&sb, f, n, fmts, nf);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &rb, msgpack_sbuffer_write);
    _Atomic uint64_t progress = 0;
    memset(ctx, 0, sizeof *ctx);
    ctx->params = &up.data;
    ctx->progress = &progress;
    ctx->result = &pk;
    bp_task_fn fn = bp_task_lookup("measure_blocks");
    assert_non_null(fn);
    int rc = fn(ctx, err);
    ctx->progress = NULL;
    ctx->params = NULL;
    ctx->result = NULL;
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&rb);
    return rc;
}

static int setup(void **state)
{
    (void)state;
    bp_job_register_tasks();
    return 0;
}

static void test_good_task_matches_library(void **state)
{
    (void)state;
    field f[] = {{"model", MODEL, 0, 0}, {"tensor", TENSOR, 0, 0}, {"formats", NULL, 0, 1},
                 {"method", "rtn", 0, 0}, {"axis", "rows", 0, 0}, {"size", NULL, 64, 0}};
    bp_task_ctx ctx;
    bp_error err;
    if (run(f, 6, g_fmts, 2, &ctx, &err) != BP_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(ctx.n_out_bins, 5);
    bp_model *m = NULL;
    assert_int_equal(bp_model_open(MODEL, &m, &err), BP_OK);
    bp_format fm[2];
    for (int k = 0; k < 2; k++)
        assert_int_equal(bp_format_parse(g_fmts[k], &fm[k], &err), BP_OK);
    bp_block_measure *bm = NULL;
    const bp_tensor_info *t = bp_model_tensor(m, (size_t)bp_model_find(m, TENSOR));
    assert_int_equal(bp_measure_blocks(t, BP_BLOCK_AXIS_ROWS, 64, fm, 2, NULL, NULL, BP_METHOD_RTN, &bm, &err),
                     BP_OK);
    assert_int_equal(bm->n_blocks, 6);
    for (size_t i = 0; i < ctx.n_out_bins; i++)
        if (!strcmp(ctx.out_bins[i].name, "mse")) {
            assert_int_equal(ctx.out_bins[i].count, 12);
            assert_memory_equal(ctx.out_bins[i].data, bm->mse, 12 * sizeof(double));
        }
    bp_block_measure_destroy(&bm);
    bp_model_destroy(&m);
    bp_task_ctx_free_bins(&ctx);
}

static void test_bad_params(void **state)
{
    (void)state;
    static const char *unknown_fmt[] = {"int9_g7_sym"};
    struct {
        field f[6];
        size_t n;
        const char *const *fmts;
        size_t nf;
        const char *want;
    } bad[] = {
        {{{"tensor", TENSOR, 0, 0}, {"formats", NULL, 0, 1}, {"method", "rtn", 0, 0}, {"axis", "rows", 0, 0},
          {"size", NULL, 64, 0}}, 5, g_fmts, 2, "model"},
        {{{"model", MODEL, 0, 0}, {"tensor", TENSOR, 0, 0}, {"formats", NULL, 0, 1}, {"method", "rtn", 0, 0},
          {"axis", "diagonal", 0, 0}, {"size", NULL, 64, 0}}, 6, g_fmts, 2, "axis"},
        {{{"model", MODEL, 0, 0}, {"tensor", TENSOR, 0, 0}, {"formats", NULL, 0, 1}, {"method", "rtn", 0, 0},
          {"axis", "rows", 0, 0}, {"size", NULL, -5, 0}}, 6, g_fmts, 2, "size"},
        {{{"model", MODEL, 0, 0}, {"tensor", TENSOR, 0, 0}, {"formats", NULL, 0, 1}, {"method", "rtn", 0, 0},
          {"axis", "rows", 0, 0}, {"size", NULL, 100, 0}}, 6, g_fmts, 2, "100"},
        {{{"model", MODEL, 0, 0}, {"tensor", TENSOR, 0, 0}, {"formats", NULL, 0, 1}, {"method", "rtn", 0, 0},
          {"axis", "rows", 0, 0}, {"size", NULL, 64, 0}}, 6, unknown_fmt, 1, "int9"},
        {{{"model", MODEL, 0, 0}, {"tensor", TENSOR, 0, 0}, {"formats", "int4_g128_sym", 0, 0},
          {"method", "rtn", 0, 0}, {"axis", "rows", 0, 0}, {"size", NULL, 64, 0}}, 6, NULL, 0, "formats"},
        {{{"model", MODEL, 0, 0}, {"tensor", "no.such.weight", 0, 0}, {"formats", NULL, 0, 1},
          {"method", "rtn", 0, 0}, {"axis", "rows", 0, 0}, {"size", NULL, 64, 0}}, 6, g_fmts, 2, "no.such.weight"},
        {{{"model", MODEL, 0, 0}, {"tensor", TENSOR, 0, 0}, {"formats", NULL, 0, 1}, {"method", "gptq", 0, 0},
          {"axis", "rows", 0, 0}, {"size", NULL, 64, 0}}, 6, g_fmts, 2, "stats"},
        {{{"model", "/nonexistent/model", 0, 0}, {"tensor", TENSOR, 0, 0}, {"formats", NULL, 0, 1},
          {"method", "rtn", 0, 0}, {"axis", "rows", 0, 0}, {"size", NULL, 64, 0}}, 6, g_fmts, 2, "/nonexistent"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        bp_task_ctx ctx;
        bp_error err;
        memset(&err, 0, sizeof err);
        int rc = run(bad[i].f, bad[i].n, bad[i].fmts, bad[i].nf, &ctx, &err);
        bp_task_ctx_free_bins(&ctx);
        if (rc == BP_OK)
            fail_msg("case %zu accepted", i);
        if (!strstr(err.msg, bad[i].want))
            fail_msg("case %zu: '%s' does not mention '%s'", i, err.msg, bad[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_task_matches_library),
        cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
