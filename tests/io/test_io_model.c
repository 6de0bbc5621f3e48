/* Model directories: the bundled tiny model, a sharded model written by the
 * test, and the content hash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>

#include "bitplan/half.h"
#include "bitplan/hash.h"
#include "bitplan/model.h"
#include "io_test_util.h"

#define ROOT BP_TEST_TMPDIR "/io_model"
#define TINY BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"

static void expect_shape(const bp_model *m, const char *name, int64_t r, int64_t c)
{
    long i = bp_model_find(m, name);
    if (i < 0) {
        print_error("tensor %s not found\n", name);
        fail();
    }
    const bp_tensor_info *t = bp_model_tensor(m, (size_t)i);
    assert_string_equal(t->name, name);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], r);
    assert_int_equal(t->shape[1], c);
    assert_int_equal(t->dtype, BP_DTYPE_BF16);
    assert_int_equal(bp_tensor_rows(t), r);
    assert_int_equal(bp_tensor_cols(t), c);
}

static void test_open_tiny_model(void **state)
{
    (void)state;
    bp_error e;
    bp_model *m = NULL;
    int rc = bp_model_open(TINY, &m, &e);
    if (rc)
        print_error("%s\n", e.msg);
    assert_int_equal(rc, BP_OK);
    assert_string_equal(bp_model_dir(m), TINY);
    assert_non_null(strstr(bp_model_config_text(m), "\"num_hidden_layers\": 6"));
    /* 6 layers x 9 tensors + embed, lm_head, final norm... */
    size_t n = bp_model_count(m);
    assert_int_equal(n, 6 * 9 + 3);
    expect_shape(m, "model.layers.0.self_attn.q_proj.weight", 128, 128);
    expect_shape(m, "model.layers.0.self_attn.k_proj.weight", 64, 128);
    expect_shape(m, "model.layers.0.mlp.gate_proj.weight", 384, 128);
    expect_shape(m, "model.layers.5.mlp.down_proj.weight", 128, 384);
    expect_shape(m, "lm_head.weight", 256, 128);
    assert_int_equal(bp_model_find(m, "model.layers.6.mlp.down_proj.weight"), -1);
    assert_int_equal(bp_model_find(m, ""), -1);
    assert_int_equal(bp_model_find(m, NULL), -1);
    assert_null(bp_model_tensor(m, n));

    uint64_t total = 0;
    size_t maxel = 0;
    for (size_t i = 0; i < n; i++) {
        const bp_tensor_info *t = bp_model_tensor(m, i);
        if (i > 0)
            assert_true(strcmp(bp_model_tensor(m, i - 1)->name, t->name) < 0);
        assert_int_equal(bp_model_find(m, t->name), (long)i);
        total += t->nbytes;
        if (t->numel > maxel)
            maxel = t->numel;
        assert_non_null(strstr(t->file, "model.safetensors"));
    }
    assert_int_equal(bp_model_total_bytes(m), total);
    assert_true(total > 2000000 && total < 2499760);

    /* Every value converts to a finite float, also in row pieces. */
    float *buf = malloc(maxel * sizeof *buf);
    for (size_t i = 0; i < n; i++) {
        const bp_tensor_info *t = bp_model_tensor(m, i);
        int64_t rows = bp_tensor_rows(t), cols = bp_tensor_cols(t);
        assert_int_equal((uint64_t)(rows * cols), t->numel);
        assert_int_equal(bp_tensor_rows_f32(t, 0, rows, buf, &e), BP_OK);
        for (uint64_t k = 0; k < t->numel; k++)
            assert_true(isfinite(buf[k]));
        /* Rows converted alone equal the same rows of the whole. */
        if (rows > 3) {
            float *part = malloc(2 * (size_t)cols * sizeof *part);
            assert_int_equal(bp_tensor_rows_f32(t, rows - 2, 2, part, &e), BP_OK);
            assert_memory_equal(part, buf + (rows - 2) * cols, 2 * (size_t)cols * sizeof *part);
            free(part);
        }
    }
    /* Norm weights of a trained model are not all zero. */
    const bp_tensor_info *nw = bp_model_tensor(m, (size_t)bp_model_find(m, "model.norm.weight"));
    assert_int_equal(nw->ndim, 1);
    assert_int_equal(bp_tensor_rows(nw), 1);
    assert_int_equal(bp_tensor_cols(nw), 128);
    assert_int_equal(bp_tensor_rows_f32(nw, 0, 1, buf, &e), BP_OK);
    double s = 0;
    for (int k = 0; k < 128; k++)
        s += fabs(buf[k]);
    assert_true(s > 1.0);
    free(buf);

    char h1[BP_HASH_HEX_LEN + 1], h2[BP_HASH_HEX_LEN + 1];
    assert_int_equal(bp_model_content_hash(m, h1, &e), BP_OK);
    assert_int_equal(strlen(h1), BP_HASH_HEX_LEN);
    bp_model_destroy(&m);
    bp_model_destroy(&m);
    assert_null(m);
    assert_int_equal(bp_model_open(TINY, &m, &e), BP_OK);
    assert_int_equal(bp_model_content_hash(m, h2, &e), BP_OK);
    assert_string_equal(h1, h2);
    bp_model_destroy(&m);
}

/* Tensors of the small test model: name, shape, values i * scale. */
#define NT 5
static const st_spec specs[NT] = {
    {"model.layers.0.mlp.down_proj.weight", BP_DTYPE_F32, 2, {4, 6}},
    {"model.layers.0.self_attn.q_proj.weight", BP_DTYPE_F16, 2, {6, 6}},
    {"lm_head.weight", BP_DTYPE_BF16, 2, {8, 6}},
    {"model.embed_tokens.weight", BP_DTYPE_BF16, 2, {8, 6}},
    {"model.norm.weight", BP_DTYPE_F32, 1, {6}},
};

static void *make_data(const st_spec *s, int k)
{
    size_t n = spec_bytes(s) / bp_dtype_size(s->dtype);
    void *d = malloc(spec_bytes(s));
    for (size_t i = 0; i < n; i++) {
        float v = (float)((int)i - 7 * k) * 0.125f;
        if (s->dtype == BP_DTYPE_F32)
            memcpy((char *)d + 4 * i, &v, 4);
        else {
            uint16_t h = s->dtype == BP_DTYPE_F16 ? bp_f32_to_f16(v) : bp_f32_to_bf16(v);
            memcpy((char *)d + 2 * i, &h, 2);
        }
    }
    return d;
}

#define S1 "model-00001-of-00002.safetensors"
#define S2 "model-00002-of-00002.safetensors"
#define CONFIG "{\"model_type\": \"llama\", \"hidden_size\": 6}\n"

/* Write the model either as one file or as two shards plus index. */
static void write_model(const char *dir, int sharded)
{
    fresh_dir(dir);
    char p[1024];
    snprintf(p, sizeof p, "%s/config.json", dir);
    write_text(p, CONFIG);
    void *data[NT];
    for (int k = 0; k < NT; k++)
        data[k] = make_data(&specs[k], k);
    bp_error e;
    if (!sharded) {
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        assert_int_equal(write_st_specs(p, specs, NT, (const void *const *)data, &e), BP_OK);
    } else {
        /* Shard 1: tensors 0-2, shard 2: tensors 3-4. */
        snprintf(p, sizeof p, "%s/" S1, dir);
        assert_int_equal(write_st_specs(p, specs, 3, (const void *const *)data, &e), BP_OK);
        snprintf(p, sizeof p, "%s/" S2, dir);
        assert_int_equal(write_st_specs(p, specs + 3, 2, (const void *const *)(data + 3), &e),
                         BP_OK);
        char idx[2048];
        snprintf(idx, sizeof idx,
                 "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {"
                 "\"%s\": \"" S1 "\", \"%s\": \"" S1 "\", \"%s\": \"" S1 "\","
                 "\"%s\": \"" S2 "\", \"%s\": \"" S2 "\"}}",
                 specs[0].name, specs[1].name, specs[2].name, specs[3].name, specs[4].name);
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
        write_text(p, idx);
    }
    for (int k = 0; k < NT; k++)
        free(data[k]);
}

static void test_sharded_model(void **state)
{
    (void)state;
    write_model(ROOT "/sharded", 1);
    bp_error e;
    bp_model *m = NULL;
    int rc = bp_model_open(ROOT "/sharded", &m, &e);
    if (rc)
        print_error("%s\n", e.msg);
    assert_int_equal(rc, BP_OK);
    assert_int_equal(bp_model_count(m), NT);
    assert_string_equal(bp_model_config_text(m), CONFIG);
    uint64_t total = 0;
    for (int k = 0; k < NT; k++) {
        long i = bp_model_find(m, specs[k].name);
        assert_true(i >= 0);
        const bp_tensor_info *t = bp_model_tensor(m, (size_t)i);
        assert_int_equal(t->dtype, specs[k].dtype);
        assert_non_null(strstr(t->file, k < 3 ? S1 : S2));
        total += t->nbytes;
        /* Values are small multiples of 1/8: exact in every dtype. */
        float *buf = malloc(t->numel * sizeof *buf);
        assert_int_equal(bp_tensor_rows_f32(t, 0, bp_tensor_rows(t), buf, &e), BP_OK);
        for (uint64_t j = 0; j < t->numel; j++)
            assert_true(buf[j] == (float)((int)j - 7 * k) * 0.125f);
        free(buf);
    }
    assert_int_equal(bp_model_total_bytes(m), total);
    /* Name order across shards. */
    assert_string_equal(bp_model_tensor(m, 0)->name, "lm_head.weight");
    assert_string_equal(bp_model_tensor(m, NT - 1)->name, "model.norm.weight");
    bp_model_destroy(&m);
}

static void hash_of(const char *dir, char *out)
{
    bp_error e;
    bp_model *m = NULL;
    int rc = bp_model_open(dir, &m, &e);
    if (rc)
        print_error("%s\n", e.msg);
    assert_int_equal(rc, BP_OK);
    assert_int_equal(bp_model_content_hash(m, out, &e), BP_OK);
    bp_model_destroy(&m);
}

static void test_content_hash(void **state)
{
    (void)state;
    char a[BP_HASH_HEX_LEN + 1], b[BP_HASH_HEX_LEN + 1], c[BP_HASH_HEX_LEN + 1];
    write_model(ROOT "/h_single", 0);
    write_model(ROOT "/h_sharded", 1);
    hash_of(ROOT "/h_single", a);
    assert_memory_equal(a, "blake2b256:", 11);
    hash_of(ROOT "/h_single", b);
    assert_string_equal(a, b);
    /* The hash covers content, not layout: the sharded copy matches. */
    hash_of(ROOT "/h_sharded", c);
    assert_string_equal(a, c);
    /* Same result with one thread. */
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    hash_of(ROOT "/h_sharded", c);
    omp_set_num_threads(nt);
    assert_string_equal(a, c);

    /* One data byte changed: different hash. Flip the last byte of the
     * file (the data of the last tensor). */
    FILE *f = fopen(ROOT "/h_single/model.safetensors", "r+b");
    assert_non_null(f);
    fseek(f, -1, SEEK_END);
    int ch = fgetc(f);
    fseek(f, -1, SEEK_END);
    fputc(ch ^ 1, f);
    fclose(f);
    hash_of(ROOT "/h_single", b);
    assert_string_not_equal(a, b);
    /* Restore, then change one byte of config.json. */
    f = fopen(ROOT "/h_single/model.safetensors", "r+b");
    fseek(f, -1, SEEK_END);
    fputc(ch, f);
    fclose(f);
    hash_of(ROOT "/h_single", b);
    assert_string_equal(a, b);
    write_text(ROOT "/h_single/config.json", "{\"model_type\": \"llama\", \"hidden_size\": 7}\n");
    hash_of(ROOT "/h_single", b);
    assert_string_not_equal(a, b);

    bp_error e;
    assert_int_equal(bp_model_content_hash(NULL, a, &e), BP_EINVAL);
}

/* model.safetensors wins over an index, as in transformers; an index-only
 * directory is opened through the index. */
static void test_single_file_preferred(void **state)
{
    (void)state;
    write_model(ROOT "/both", 1);
    char p[1024];
    snprintf(p, sizeof p, "%s/model.safetensors", ROOT "/both");
    float v[2] = {1, 2};
    const st_spec one = {"only", BP_DTYPE_F32, 1, {2}};
    const void *d[1] = {v};
    bp_error e;
    assert_int_equal(write_st_specs(p, &one, 1, d, &e), BP_OK);
    bp_model *m = NULL;
    assert_int_equal(bp_model_open(ROOT "/both", &m, &e), BP_OK);
    assert_int_equal(bp_model_count(m), 1);
    assert_string_equal(bp_model_tensor(m, 0)->name, "only");
    bp_model_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_tiny_model),
        cmocka_unit_test(test_sharded_model),
        cmocka_unit_test(test_content_hash),
        cmocka_unit_test(test_single_file_preferred),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
