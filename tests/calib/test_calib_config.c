/* config.json parsing, tensor checks, llama3 RoPE, Mistral sliding window,
 * Qwen2 biases, and the weight-name -> input map. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitplan/llama.h"
#include "bitplan/model.h"

#define MODEL_DIR BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"

/* The bundled config with one line replaced or added (before "hidden_act"). */
static char *config_with(const char *drop_key, const char *extra)
{
    static char buf[8192];
    const char *base =
        "{\n"
        "  \"architectures\": [\"LlamaForCausalLM\"],\n"
        "  \"model_type\": \"llama\",\n"
        "  \"hidden_size\": 128,\n"
        "  \"intermediate_size\": 384,\n"
        "  \"num_attention_heads\": 4,\n"
        "  \"num_key_value_heads\": 2,\n"
        "  \"num_hidden_layers\": 6,\n"
        "  \"vocab_size\": 256,\n"
        "  \"rms_norm_eps\": 1e-05,\n"
        "  \"rope_theta\": 10000.0,\n"
        "  \"max_position_embeddings\": 1024,\n"
        "  \"tie_word_embeddings\": false,\n"
        "  \"torch_dtype\": \"bfloat16\",\n";
    buf[0] = '\0';
    const char *p = base;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = (size_t)(nl - p) + 1;
        char line[256];
        memcpy(line, p, n);
        line[n] = '\0';
        char key[64];
        snprintf(key, sizeof key, "\"%s\"", drop_key ? drop_key : "\x01");
        if (!strstr(line, key))
            strcat(buf, line);
        p += n;
    }
    if (extra) {
        strcat(buf, "  ");
        strcat(buf, extra);
        strcat(buf, ",\n");
    }
    strcat(buf, "  \"hidden_act\": \"silu\"\n}\n");
    return buf;
}

static int parse(const char *text, bp_llama_config *c, bp_error *err)
{
    return bp_llama_config_parse(text, "test/config.json", c, err);
}

static void expect_error(const char *text, int code, const char *field)
{
    bp_llama_config c;
    bp_error err;
    int rc = parse(text, &c, &err);
    if (rc != code)
        fail_msg("expected %s, got %s (%s) for:\n%s", bp_error_name(code), bp_error_name(rc),
                 err.msg, text);
    if (!strstr(err.msg, field) || !strstr(err.msg, "test/config.json"))
        fail_msg("message '%s' should name test/config.json and '%s'", err.msg, field);
}

static void test_config_parse_bundled(void **state)
{
    (void)state;
    bp_llama_config c;
    bp_error err;
    assert_int_equal(parse(config_with(NULL, NULL), &c, &err), BP_OK);
    assert_int_equal(c.arch, BP_LLAMA_ARCH_LLAMA);
    assert_int_equal(c.hidden_size, 128);
    assert_int_equal(c.n_kv_heads, 2);
    assert_int_equal(c.head_dim, 32);
    assert_int_equal(c.qkv_bias, 0);
    assert_int_equal(c.rope_type, BP_ROPE_DEFAULT);
    assert_true(c.rms_norm_eps == 1e-5);
    /* Defaults. */
    assert_int_equal(parse(config_with("num_key_value_heads", NULL), &c, &err), BP_OK);
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(parse(config_with("rope_theta", "\"head_dim\": 64"), &c, &err), BP_OK);
    assert_true(c.rope_theta == 10000.0);
    assert_int_equal(c.head_dim, 64);
    assert_int_equal(parse(config_with("tie_word_embeddings", NULL), &c, &err), BP_OK);
    assert_int_equal(c.tie_word_embeddings, 0);
    assert_int_equal(parse(config_with(NULL, "\"rope_scaling\": null"), &c, &err), BP_OK);
}

static void test_config_errors(void **state)
{
    (void)state;
    char text[8192];
    strcpy(text, config_with(NULL, NULL));
    char *a = strstr(text, "LlamaForCausalLM");
    memcpy(a, "GemmaForCausalLM", 16);
    expect_error(text, BP_EUNSUPPORTED, "architectures");

    strcpy(text, config_with(NULL, NULL));
    char *act = strstr(text, "\"silu\"");
    memcpy(act, "\"gelu\"", 6);
    expect_error(text, BP_EUNSUPPORTED, "hidden_act");

    expect_error(config_with(NULL, "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}"),
                 BP_EUNSUPPORTED, "rope_scaling.rope_type");
    expect_error(config_with(NULL, "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2}"),
                 BP_EUNSUPPORTED, "rope_scaling.type");
    expect_error(config_with(NULL, "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8}"),
                 BP_EFORMAT, "low_freq_factor");
    expect_error(config_with("hidden_size", NULL), BP_EFORMAT, "hidden_size");
    expect_error(config_with("vocab_size", NULL), BP_EFORMAT, "vocab_size");
    expect_error(config_with("rms_norm_eps", NULL), BP_EFORMAT, "rms_norm_eps");
    expect_error(config_with("max_position_embeddings", NULL), BP_EFORMAT,
                 "max_position_embeddings");
    expect_error(config_with("num_key_value_heads", "\"num_key_value_heads\": 3"), BP_EFORMAT,
                 "num_key_value_heads");
    expect_error(config_with("hidden_size", "\"hidden_size\": 130"), BP_EFORMAT, "hidden_size");
    expect_error(config_with("hidden_size", "\"hidden_size\": \"128\""), BP_EFORMAT,
                 "hidden_size");
    expect_error(config_with("hidden_size", "\"hidden_size\": -1"), BP_EFORMAT, "hidden_size");
    expect_error(config_with("rms_norm_eps", "\"rms_norm_eps\": 0"), BP_EFORMAT, "rms_norm_eps");
    expect_error(config_with(NULL, "\"attention_bias\": true"), BP_EUNSUPPORTED,
                 "attention_bias");
    expect_error(config_with(NULL, "\"head_dim\": 33"), BP_EFORMAT, "head_dim");
    expect_error(config_with("tie_word_embeddings", "\"tie_word_embeddings\": 1"), BP_EFORMAT,
                 "tie_word_embeddings");
    expect_error("{\"hidden_size\": 1", BP_EFORMAT, "invalid JSON");
    expect_error("[1]", BP_EFORMAT, "object");
    /* Mistral: windows; Qwen2: sliding window only if not used. */
    strcpy(text, config_with(NULL, "\"use_sliding_window\": true"));
    a = strstr(text, "LlamaForCausalLM");
    memmove(a + 1, a, strlen(a) + 1);
    memcpy(a, "Qwen2ForCausalLM", 16);
    memmove(a + 16, a + 17, strlen(a + 17) + 1);
    expect_error(text, BP_EUNSUPPORTED, "use_sliding_window");
}

static void test_config_rope_llama3(void **state)
{
    (void)state;
    bp_llama_config c, d;
    bp_error err;
    /* Llama 3.1 8B values, head_dim 128. */
    assert_int_equal(parse(config_with("rope_theta",
                                       "\"head_dim\": 128, \"rope_theta\": 500000.0, "
                                       "\"rope_scaling\": {\"rope_type\": \"llama3\", "
                                       "\"factor\": 8.0, \"low_freq_factor\": 1.0, "
                                       "\"high_freq_factor\": 4.0, "
                                       "\"original_max_position_embeddings\": 8192}"),
                           &c, &err),
                     BP_OK);
    d = c;
    d.rope_type = BP_ROPE_DEFAULT;
    assert_int_equal(c.head_dim, 128);
    float f[64], g[64];
    bp_llama_rope_inv_freq(&c, f);
    bp_llama_rope_inv_freq(&d, g);
    const double pi = 3.14159265358979323846;
    int hi = 0, lo = 0, mid = 0;
    for (int i = 0; i < 64; i++) {
        assert_true(fabs(g[i] - pow(500000.0, -2.0 * i / 128)) <= 1e-6 * g[i]);
        double wl = 2 * pi / g[i];
        if (wl < 8192 / 4.0) {
            assert_true(f[i] == g[i]);
            hi++;
        } else if (wl > 8192 / 1.0) {
            assert_true(fabs(f[i] - g[i] / 8.0) <= 1e-7 * g[i]);
            lo++;
        } else {
            /* Interpolated: between inv_freq/8 and inv_freq, with weight
             * s = (8192/wl - 1)/(4 - 1) on the unscaled value. */
            double s = (8192 / wl - 1.0) / 3.0;
            double want = (1 - s) * g[i] / 8.0 + s * g[i];
            assert_true(fabs(f[i] - want) <= 1e-6 * want);
            assert_true(f[i] < g[i] && f[i] > g[i] / 8.0);
            mid++;
        }
    }
    assert_true(hi > 0 && lo > 0 && mid > 0);
}

/* A model directory with a modified config.json and the bundled weights. */
static const char *make_dir(const char *name, const char *config)
{
    static char dir[1024];
    char path[1200];
    snprintf(dir, sizeof dir, "%s/calib_cfg_%s", BP_TEST_TMPDIR, name);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    assert_int_equal(symlink(MODEL_DIR "/model.safetensors", path), 0);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(config, f);
    fclose(f);
    return dir;
}

static void test_config_tensor_checks(void **state)
{
    (void)state;
    bp_model *m = NULL;
    bp_llama *l = NULL;
    bp_error err;
    const char *d = make_dir("layers", config_with("num_hidden_layers",
                                                   "\"num_hidden_layers\": 7"));
    assert_int_equal(bp_model_open(d, &m, &err), BP_OK);
    assert_int_equal(bp_llama_new(m, &l, &err), BP_ENOTFOUND);
    assert_non_null(strstr(err.msg, "model.layers.6.input_layernorm.weight"));
    bp_model_destroy(&m);

    d = make_dir("inter", config_with("intermediate_size", "\"intermediate_size\": 256"));
    assert_int_equal(bp_model_open(d, &m, &err), BP_OK);
    assert_int_equal(bp_llama_new(m, &l, &err), BP_EFORMAT);
    assert_non_null(strstr(err.msg, "model.layers.0.mlp.gate_proj.weight"));
    assert_non_null(strstr(err.msg, "[384, 128]"));
    assert_non_null(strstr(err.msg, "intermediate_size"));
    bp_model_destroy(&m);

    char text[8192];
    strcpy(text, config_with(NULL, NULL));
    char *a = strstr(text, "LlamaForCausalLM");
    memmove(a + 1, a, strlen(a) + 1);
    memcpy(a, "Qwen2ForCausalLM", 16);
    memmove(a + 16, a + 17, strlen(a + 17) + 1);
    d = make_dir("qwen", text);
    assert_int_equal(bp_model_open(d, &m, &err), BP_OK);
    assert_int_equal(bp_llama_new(m, &l, &err), BP_ENOTFOUND);
    assert_non_null(strstr(err.msg, "model.layers.0.self_attn.q_proj.bias"));
    bp_model_destroy(&m);

    /* Tied embeddings: lm_head is ignored and the embedding used. */
    d = make_dir("tied", config_with("tie_word_embeddings", "\"tie_word_embeddings\": true"));
    assert_int_equal(bp_model_open(d, &m, &err), BP_OK);
    assert_int_equal(bp_llama_new(m, &l, &err), BP_OK);
    int layer;
    bp_linear_input which;
    const bp_llama_config *c = bp_llama_get_config(l);
    assert_int_equal(bp_llama_weight_input(c, "model.embed_tokens.weight", &layer, &which), BP_OK);
    assert_int_equal(which, BP_LINEAR_LM_HEAD);
    assert_int_equal(bp_llama_weight_input(c, "lm_head.weight", &layer, &which), BP_ENOTFOUND);
    bp_llama_destroy(&l);
    bp_model_destroy(&m);
}

static void test_config_mistral_sliding_window(void **state)
{
    (void)state;
    char text[8192];
    strcpy(text, config_with(NULL, "\"sliding_window\": 1"));
    char *a = strstr(text, "LlamaForCausalLM");
    memmove(a + 2, a, strlen(a) + 1);
    memcpy(a, "MistralForCausalLM", 18);
    bp_model *m = NULL, *base = NULL;
    bp_llama *l = NULL, *b = NULL;
    bp_error err;
    const char *d = make_dir("mistral", text);
    assert_int_equal(bp_model_open(d, &m, &err), BP_OK);
    assert_int_equal(bp_llama_new(m, &l, &err), BP_OK);
    assert_int_equal(bp_llama_get_config(l)->arch, BP_LLAMA_ARCH_MISTRAL);
    assert_int_equal(bp_llama_get_config(l)->sliding_window, 1);
    assert_int_equal(bp_model_open(MODEL_DIR, &base, &err), BP_OK);
    assert_int_equal(bp_llama_new(base, &b, &err), BP_OK);
    /* With a window of 1 every position sees only itself, so its logits
     * are those of the token alone. */
    const uint32_t toks[6] = {84, 104, 101, 32, 76, 79};
    float out[6 * 256], solo[256];
    assert_int_equal(bp_llama_forward(l, toks, 6, out, NULL, &err), BP_OK);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(bp_llama_forward(b, toks + i, 1, solo, NULL, &err), BP_OK);
        for (int v = 0; v < 256; v++)
            assert_true(fabsf(out[i * 256 + v] - solo[v]) <= 1e-4f);
    }
    bp_llama_destroy(&l);
    bp_model_destroy(&m);

    /* A window at least as long as the sequence changes nothing. */
    strcpy(text, config_with(NULL, "\"sliding_window\": 6"));
    a = strstr(text, "LlamaForCausalLM");
    memmove(a + 2, a, strlen(a) + 1);
    memcpy(a, "MistralForCausalLM", 18);
    d = make_dir("mistral6", text);
    assert_int_equal(bp_model_open(d, &m, &err), BP_OK);
    assert_int_equal(bp_llama_new(m, &l, &err), BP_OK);
    float ref[6 * 256];
    assert_int_equal(bp_llama_forward(l, toks, 6, out, NULL, &err), BP_OK);
    assert_int_equal(bp_llama_forward(b, toks, 6, ref, NULL, &err), BP_OK);
    assert_memory_equal(out, ref, sizeof out);
    bp_llama_destroy(&l);
    bp_model_destroy(&m);
    bp_llama_destroy(&b);
    bp_model_destroy(&base);
}

static void test_config_qwen2_biases(void **state)
{
    (void)state;
    bp_model *m = NULL;
    bp_llama *base = NULL, *q = NULL;
    bp_error err;
    assert_int_equal(bp_model_open(MODEL_DIR, &m, &err), BP_OK);
    assert_int_equal(bp_llama_new(m, &base, &err), BP_OK);
    bp_llama_config c = *bp_llama_get_config(base);
    c.arch = BP_LLAMA_ARCH_QWEN2;
    c.qkv_bias = 1;
    assert_int_equal(bp_llama_new_config(&c, &q, &err), BP_OK);
    for (size_t i = 0; i < bp_model_count(m); i++) {
        const bp_tensor_info *t = bp_model_tensor(m, i);
        float *w = malloc(sizeof(float) * t->numel);
        assert_int_equal(bp_tensor_rows_f32(t, 0, bp_tensor_rows(t), w, &err), BP_OK);
        assert_int_equal(bp_llama_set_weight(q, t->name, w, &err), BP_OK);
        free(w);
    }
    const uint32_t toks[8] = {84, 104, 101, 32, 76, 79, 82, 68};
    float a[8 * 256], b[8 * 256];
    /* Missing biases are reported. */
    assert_int_equal(bp_llama_forward(q, toks, 8, b, NULL, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "q_proj.bias"));
    float zq[128] = {0}, zk[64] = {0};
    char name[128];
    for (int l = 0; l < 6; l++) {
        snprintf(name, sizeof name, "model.layers.%d.self_attn.q_proj.bias", l);
        assert_int_equal(bp_llama_set_weight(q, name, zq, &err), BP_OK);
        snprintf(name, sizeof name, "model.layers.%d.self_attn.k_proj.bias", l);
        assert_int_equal(bp_llama_set_weight(q, name, zk, &err), BP_OK);
        snprintf(name, sizeof name, "model.layers.%d.self_attn.v_proj.bias", l);
        assert_int_equal(bp_llama_set_weight(q, name, zk, &err), BP_OK);
    }
    /* Zero biases: the Llama result. A v bias of 1 shifts every output. */
    assert_int_equal(bp_llama_forward(base, toks, 8, a, NULL, &err), BP_OK);
    assert_int_equal(bp_llama_forward(q, toks, 8, b, NULL, &err), BP_OK);
    assert_memory_equal(a, b, sizeof a);
    for (int i = 0; i < 64; i++)
        zk[i] = 1.0f;
    assert_int_equal(bp_llama_set_weight(q, "model.layers.2.self_attn.v_proj.bias", zk, &err),
                     BP_OK);
    assert_int_equal(bp_llama_forward(q, toks, 8, b, NULL, &err), BP_OK);
    double diff = 0;
    for (int i = 0; i < 8 * 256; i++)
        diff = fmax(diff, fabs((double)a[i] - b[i]));
    assert_true(diff > 1e-3);
    bp_llama_destroy(&q);
    bp_llama_destroy(&base);
    bp_model_destroy(&m);
}

static void test_config_weight_input_map(void **state)
{
    (void)state;
    bp_llama_config c;
    bp_error err;
    assert_int_equal(parse(config_with(NULL, NULL), &c, &err), BP_OK);
    static const struct {
        const char *name;
        int rc, layer;
        bp_linear_input which;
    } cases[] = {
        {"model.layers.3.self_attn.q_proj.weight", BP_OK, 3, BP_LINEAR_ATTN_QKV},
        {"model.layers.3.self_attn.k_proj.weight", BP_OK, 3, BP_LINEAR_ATTN_QKV},
        {"model.layers.0.self_attn.v_proj.weight", BP_OK, 0, BP_LINEAR_ATTN_QKV},
        {"model.layers.5.self_attn.o_proj.weight", BP_OK, 5, BP_LINEAR_ATTN_O},
        {"model.layers.1.mlp.gate_proj.weight", BP_OK, 1, BP_LINEAR_MLP_GATE_UP},
        {"model.layers.1.mlp.up_proj.weight", BP_OK, 1, BP_LINEAR_MLP_GATE_UP},
        {"model.layers.2.mlp.down_proj.weight", BP_OK, 2, BP_LINEAR_MLP_DOWN},
        {"lm_head.weight", BP_OK, -1, BP_LINEAR_LM_HEAD},
        {"model.embed_tokens.weight", BP_ENOTFOUND, 0, 0},
        {"model.layers.6.mlp.down_proj.weight", BP_ENOTFOUND, 0, 0},
        {"model.layers.03.mlp.down_proj.weight", BP_ENOTFOUND, 0, 0},
        {"model.layers.3.input_layernorm.weight", BP_ENOTFOUND, 0, 0},
        {"model.layers.3.self_attn.q_proj.bias", BP_ENOTFOUND, 0, 0},
        {"model.norm.weight", BP_ENOTFOUND, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int layer = 99;
        bp_linear_input which = BP_LINEAR_N;
        assert_int_equal(bp_llama_weight_input(&c, cases[i].name, &layer, &which), cases[i].rc);
        if (cases[i].rc == BP_OK) {
            assert_int_equal(layer, cases[i].layer);
            assert_int_equal(which, cases[i].which);
        }
    }
    assert_int_equal(bp_llama_input_dim(&c, BP_LINEAR_MLP_DOWN), 384);
    assert_string_equal(bp_linear_input_name(BP_LINEAR_MLP_GATE_UP), "gate_up");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_parse_bundled),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_config_rope_llama3),
        cmocka_unit_test(test_config_tensor_checks),
        cmocka_unit_test(test_config_mistral_sliding_window),
        cmocka_unit_test(test_config_qwen2_biases),
        cmocka_unit_test(test_config_weight_input_map),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
