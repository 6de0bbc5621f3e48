/* The plan's optional kv_cache section: round trip, byte-identical output
 * without it, malformed sections, and the budget counting weights + KV. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/cost.h"
#include "bitplan/format.h"
#include "bitplan/plan.h"

#define CONTEXT 64
#define BATCH 2
#define HEADS 2
#define HDIM 32

static const bp_plan_kv_layer kv_layers[] = {
    {0, BP_KV_INT8, 0}, {1, BP_KV_INT4, 0}, {2, BP_KV_FP8_E4M3, 0}, {5, BP_KV_F16, 0}};
#define N_KV (sizeof kv_layers / sizeof *kv_layers)

static uint64_t weight_bytes(void)
{
    bp_format f;
    assert_int_equal(bp_format_parse("int8_pc_sym", &f, NULL), BP_OK);
    return bp_format_bytes(&f, 128, 128);
}

static uint64_t layer_bytes(bp_kv_format f)
{
    bp_kv_shape s = {1, HEADS, HDIM};
    uint64_t b;
    assert_int_equal(bp_kv_bytes(&s, f, CONTEXT, BATCH, &b, NULL), BP_OK);
    return b;
}

static uint64_t kv_total(void)
{
    uint64_t t = 0;
    for (size_t i = 0; i < N_KV; i++)
        t += layer_bytes(kv_layers[i].format);
    return t;
}

/* One tensor; the budget is given in bytes, `asked` of them. */
static bp_plan *make_plan(uint64_t asked)
{
    bp_plan *p = bp_plan_new();
    assert_non_null(p);
    bp_error e;
    bp_plan_tensor t = {0};
    t.name = "model.layers.0.self_attn.q_proj.weight";
    t.rows = 128;
    t.cols = 128;
    t.dtype = "BF16";
    t.format = "int8_pc_sym";
    t.method = BP_METHOD_RTN;
    t.predicted_error = 0.25;
    if (bp_plan_add_tensor(p, &t, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(bp_plan_set_tool(p, "bitplan", "0.1.0", &e), BP_OK);
    assert_int_equal(bp_plan_set_model(p, "examples/models/tiny", NULL, &e), BP_OK);
    assert_int_equal(bp_plan_set_calibration(p, NULL, NULL, &e), BP_OK);
    assert_int_equal(bp_plan_set_metric(p, BP_METRIC_DKL, &e), BP_OK);
    assert_int_equal(bp_plan_set_budget(p, BP_BUDGET_BYTES, 8.0 * (double)asked / 16384.0,
                                        asked, &e),
                     BP_OK);
    assert_int_equal(bp_plan_set_solver(p, "glpk-ilp", "optimal", 0.25, 0.25, 0.0, &e),
                     BP_OK);
    return p;
}

static void set_kv(bp_plan *p)
{
    bp_error e;
    bp_plan_kv_cache kv = {CONTEXT, BATCH, HEADS, HDIM, kv_layers, N_KV, 0};
    if (bp_plan_set_kv_cache(p, &kv, &e))
        fail_msg("%s", e.msg);
}

static char *to_string(const bp_plan *p)
{
    bp_error e;
    char *s = bp_plan_to_string(p, &e);
    if (!s)
        fail_msg("%s", e.msg);
    return s;
}

static void test_round_trip(void **state)
{
    (void)state;
    bp_error e;
    bp_plan *p = make_plan(weight_bytes() + kv_total() + 100);
    set_kv(p);
    bp_plan_kv_cache got;
    assert_int_equal(bp_plan_get_kv_cache(p, &got), 1);
    assert_int_equal(got.n_layers, N_KV);
    assert_int_equal(got.context, CONTEXT);
    assert_int_equal(got.batch, BATCH);
    assert_int_equal(got.n_kv_heads, HEADS);
    assert_int_equal(got.head_dim, HDIM);
    for (size_t i = 0; i < N_KV; i++) {
        assert_int_equal(got.layers[i].layer, kv_layers[i].layer);
        assert_int_equal(got.layers[i].format, kv_layers[i].format);
        assert_int_equal(got.layers[i].bytes, layer_bytes(kv_layers[i].format));
    }
    assert_int_equal(got.bytes, kv_total());
    bp_plan_info in;
    bp_plan_get_info(p, &in);
    assert_int_equal(in.kv_bytes, kv_total());
    assert_int_equal(in.achieved_bytes, weight_bytes()); /* weights only */

    char *s1 = to_string(p);
    const char *kpos = strstr(s1, "\"kv_cache\"");
    assert_non_null(kpos);
    assert_true(kpos > strstr(s1, "\"tensors\""));
    assert_non_null(strstr(s1, "\"format\": \"fp8_e4m3\""));
    bp_plan *q = NULL;
    if (bp_plan_from_string(s1, "plan.json", &q, &e))
        fail_msg("%s", e.msg);
    char *s2 = to_string(q);
    assert_string_equal(s1, s2);
    bp_plan_get_info(q, &in);
    assert_int_equal(in.kv_bytes, kv_total());

    /* Through a file as well. */
    const char *path = BP_TEST_TMPDIR "/plan_kv.json";
    assert_int_equal(bp_plan_write(q, path, &e), BP_OK);
    bp_plan *r = NULL;
    assert_int_equal(bp_plan_read(path, &r, &e), BP_OK);
    char *s3 = to_string(r);
    assert_string_equal(s1, s3);
    free(s1);
    free(s2);
    free(s3);
    bp_plan_destroy(&p);
    bp_plan_destroy(&q);
    bp_plan_destroy(&r);
}

/* Plans without the section are unchanged, and removing it restores them. */
static void test_absent_is_byte_identical(void **state)
{
    (void)state;
    bp_error e;
    const uint64_t asked = weight_bytes() + kv_total();
    bp_plan *p = make_plan(asked), *q = make_plan(asked);
    char *plain = to_string(p);
    assert_null(strstr(plain, "kv_cache"));
    assert_int_equal(bp_plan_get_kv_cache(p, NULL), 0);
    bp_plan_info in;
    bp_plan_get_info(p, &in);
    assert_int_equal(in.kv_bytes, 0);
    set_kv(q);
    char *with = to_string(q);
    assert_string_not_equal(plain, with);
    assert_int_equal(bp_plan_set_kv_cache(q, NULL, &e), BP_OK);
    assert_int_equal(bp_plan_get_kv_cache(q, NULL), 0);
    char *removed = to_string(q);
    assert_string_equal(plain, removed);
    bp_plan *r = NULL;
    assert_int_equal(bp_plan_from_string(plain, "plan.json", &r, &e), BP_OK);
    char *again = to_string(r);
    assert_string_equal(plain, again);
    free(plain);
    free(with);
    free(removed);
    free(again);
    bp_plan_destroy(&p);
    bp_plan_destroy(&q);
    bp_plan_destroy(&r);
}

/* ---- malformed files --------------------------------------------------------- */

static json_t *kv_of(json_t *root)
{
    return json_object_get(root, "kv_cache");
}

static json_t *layer_of(json_t *root, size_t i)
{
    return json_array_get(json_object_get(kv_of(root), "layers"), i);
}

static void mutate(int k, json_t *root)
{
    switch (k) {
    case 0: json_object_set_new(layer_of(root, 1), "format", json_string("int3")); break;
    case 1: json_object_set_new(layer_of(root, 1), "layer", json_integer(0)); break;
    case 2: json_object_set_new(layer_of(root, 2), "layer", json_integer(0)); break;
    case 3: json_object_set_new(layer_of(root, 0), "bytes", json_integer(1)); break;
    case 4: json_object_set_new(kv_of(root), "bytes", json_integer(7)); break;
    case 5: json_object_set_new(kv_of(root), "context", json_string("64")); break;
    case 6: json_object_set_new(kv_of(root), "context", json_integer(0)); break;
    case 7: json_object_set_new(kv_of(root), "layers", json_object()); break;
    case 8: json_object_set_new(kv_of(root), "layers", json_array()); break;
    case 9: json_array_set_new(json_object_get(kv_of(root), "layers"), 0, json_integer(3));
        break;
    case 10: json_object_set_new(layer_of(root, 0), "dtype", json_string("x")); break;
    case 11: json_object_set_new(layer_of(root, 3), "layer", json_integer(-5)); break;
    case 12: json_object_set_new(layer_of(root, 0), "format", json_integer(8)); break;
    case 13: json_object_set_new(root, "kv_cache", json_array()); break;
    case 14: json_object_del(kv_of(root), "head_dim"); break;
    case 15: json_object_set_new(kv_of(root), "n_kv_heads", json_real(2.0)); break;
    case 16: json_object_set_new(kv_of(root), "context", json_integer(INT64_MAX / 2)); break;
    case 17: json_object_set_new(layer_of(root, 0), "format", json_string("INT8")); break;
    case 18: json_object_set_new(kv_of(root), "extra", json_true()); break;
    case 19: json_object_set_new(layer_of(root, 2), "bytes", json_null()); break;
    default: break;
    }
}

static const char *const bad_msgs[] = {
    "plan.json: kv_cache.layers[1].format: ",
    "plan.json: kv_cache.layers[1].layer: 0 does not follow 0",
    "plan.json: kv_cache.layers[2].layer: 0 does not follow 1",
    "plan.json: kv_cache.layers[0].bytes: 1 does not match int8",
    "plan.json: kv_cache.bytes: 7 does not match the sum of layer bytes",
    "plan.json: kv_cache.context: must be an integer",
    "plan.json: kv_cache.context: must be >= 1",
    "plan.json: kv_cache.layers: must be a non-empty array",
    "plan.json: kv_cache.layers: must be a non-empty array",
    "plan.json: kv_cache.layers[0]: must be an object",
    "plan.json: kv_cache.layers[0]: unknown key \"dtype\"",
    "plan.json: kv_cache.layers[3].layer: must be >= 0",
    "plan.json: kv_cache.layers[0].format: must be a string",
    "plan.json: kv_cache: must be an object",
    "plan.json: kv_cache.head_dim: missing",
    "plan.json: kv_cache.n_kv_heads: must be an integer",
    "plan.json: kv_cache.layers[0].bytes: KV cache",
    "plan.json: kv_cache.layers[0].format: ",
    "plan.json: kv_cache: unknown key \"extra\"",
    "plan.json: kv_cache.layers[2].bytes: must be an integer",
};

static void test_malformed(void **state)
{
    (void)state;
    bp_plan *p = make_plan(weight_bytes() + kv_total());
    set_kv(p);
    char *base = to_string(p);
    bp_plan_destroy(&p);
    bp_error e;
    for (size_t k = 0; k < sizeof bad_msgs / sizeof *bad_msgs; k++) {
        json_t *root = json_loads(base, 0, NULL);
        assert_non_null(root);
        mutate((int)k, root);
        char *text = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
        json_decref(root);
        bp_plan *q = (bp_plan *)1;
        bp_error_clear(&e);
        int rc = bp_plan_from_string(text, "plan.json", &q, &e);
        free(text);
        if (rc != BP_EFORMAT || !strstr(e.msg, bad_msgs[k]) || q)
            fail_msg("case %zu: rc %d \"%s\" (want \"%s\")", k, rc, e.msg, bad_msgs[k]);
    }
    /* The unknown-format message names the text. */
    json_t *root = json_loads(base, 0, NULL);
    mutate(0, root);
    char *text = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    bp_plan *q = NULL;
    assert_int_equal(bp_plan_from_string(text, "plan.json", &q, &e), BP_EFORMAT);
    assert_non_null(strstr(e.msg, "int3"));
    free(text);
    free(base);
}

/* ---- budget -------------------------------------------------------------------- */

static void test_budget_counts_kv(void **state)
{
    (void)state;
    bp_error e;
    const uint64_t w = weight_bytes(), kv = kv_total();
    /* Exactly enough for both. */
    bp_plan *p = make_plan(w + kv);
    set_kv(p);
    assert_int_equal(bp_plan_validate(p, &e), BP_OK);
    char *fits = to_string(p);
    bp_plan_destroy(&p);

    /* One byte short: the weights alone fit, weights + KV do not. */
    p = make_plan(w + kv - 1);
    assert_int_equal(bp_plan_validate(p, &e), BP_OK);
    set_kv(p);
    assert_int_equal(bp_plan_validate(p, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "KV-cache bytes exceed"));
    assert_null(bp_plan_to_string(p, &e));
    bp_plan_destroy(&p);

    /* The same in a file: shrink the asked bytes by one. */
    json_t *root = json_loads(fits, 0, NULL);
    json_t *asked = json_object_get(json_object_get(root, "budget"), "asked");
    json_object_set_new(asked, "bytes", json_integer((json_int_t)(w + kv - 1)));
    json_object_set_new(asked, "bits", json_real(8.0 * (double)(w + kv - 1) / 16384.0));
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    json_decref(root);
    bp_plan *q = NULL;
    assert_int_equal(bp_plan_from_string(text, "plan.json", &q, &e), BP_EFORMAT);
    assert_non_null(strstr(e.msg, "plan.json: budget: achieved"));
    assert_non_null(strstr(e.msg, "KV-cache bytes"));
    assert_null(q);
    free(text);
    free(fits);
}

static void test_api_validation(void **state)
{
    (void)state;
    bp_error e;
    bp_plan *p = make_plan(weight_bytes() + kv_total());
    set_kv(p);
    bp_plan_kv_layer bad[N_KV];
    memcpy(bad, kv_layers, sizeof bad);
    bp_plan_kv_cache kv = {CONTEXT, BATCH, HEADS, HDIM, bad, N_KV, 0};

    bad[2].layer = 1;
    assert_int_equal(bp_plan_set_kv_cache(p, &kv, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "kv_cache.layers[2].layer: 1 does not follow 1"));
    bad[2].layer = 2;
    bad[3].format = BP_KV_FORMAT_COUNT;
    assert_int_equal(bp_plan_set_kv_cache(p, &kv, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "kv_cache.layers[3].format"));
    bad[3].format = BP_KV_INT4;
    kv.head_dim = 0;
    assert_int_equal(bp_plan_set_kv_cache(p, &kv, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "kv_cache.head_dim"));
    kv.head_dim = HDIM;
    kv.n_layers = 0;
    assert_int_equal(bp_plan_set_kv_cache(p, &kv, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "kv_cache.layers"));
    kv.n_layers = N_KV;
    kv.batch = INT64_MAX;
    assert_int_equal(bp_plan_set_kv_cache(p, &kv, &e), BP_EINVAL);
    assert_int_equal(bp_plan_set_kv_cache(NULL, &kv, &e), BP_EINVAL);

    /* Failures left the earlier section as it was. */
    bp_plan_kv_cache got;
    assert_int_equal(bp_plan_get_kv_cache(p, &got), 1);
    assert_int_equal(got.layers[3].format, BP_KV_F16);
    assert_int_equal(got.bytes, kv_total());

    /* Caller-supplied bytes are ignored. */
    kv.batch = BATCH;
    bad[0].bytes = 12345;
    assert_int_equal(bp_plan_set_kv_cache(p, &kv, &e), BP_OK);
    assert_int_equal(bp_plan_get_kv_cache(p, &got), 1);
    assert_int_equal(got.layers[0].bytes, layer_bytes(BP_KV_INT8));
    bp_plan_destroy(&p);
}

static void test_summary(void **state)
{
    (void)state;
    bp_plan *p = make_plan(weight_bytes() + kv_total());
    set_kv(p);
    const char *path = BP_TEST_TMPDIR "/plan_kv_summary.txt";
    FILE *fp = fopen(path, "w+");
    assert_non_null(fp);
    bp_plan_print_summary(p, fp);
    rewind(fp);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    char want[128];
    snprintf(want, sizeof want, "kv cache: context 64, batch 2, 2 kv heads x 32, 4 layers, %llu bytes",
             (unsigned long long)kv_total());
    assert_non_null(strstr(buf, want));
    assert_non_null(strstr(buf, "kv layer 2     fp8_e4m3"));
    assert_non_null(strstr(buf, "100.00% used (weights + KV cache)"));
    bp_plan_destroy(&p);
}

/* The docs' kv_cache example is a valid section with the right bytes. */
static void test_doc_example(void **state)
{
    (void)state;
    FILE *f = fopen(BP_SOURCE_DIR "/docs/plan-format.md", "rb");
    assert_non_null(f);
    static char doc[1 << 16];
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = '\0';
    char *start = strstr(doc, "```json\n\"kv_cache\": ");
    assert_non_null(start);
    start += strlen("```json\n\"kv_cache\": ");
    char *end = strstr(start, "```");
    assert_non_null(end);
    *end = '\0';
    json_t *kv = json_loads(start, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(kv);
    bp_plan *p = make_plan(UINT64_C(1) << 40);
    char *base = to_string(p);
    bp_plan_destroy(&p);
    json_t *root = json_loads(base, 0, NULL);
    json_object_set_new(root, "kv_cache", kv);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    json_decref(root);
    bp_error e;
    if (bp_plan_from_string(text, "docs/plan-format.md", &p, &e))
        fail_msg("%s", e.msg);
    bp_plan_kv_cache got;
    assert_int_equal(bp_plan_get_kv_cache(p, &got), 1);
    assert_int_equal(got.n_layers, 2);
    free(text);
    free(base);
    bp_plan_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_absent_is_byte_identical),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_budget_counts_kv),
        cmocka_unit_test(test_api_validation),
        cmocka_unit_test(test_summary),
        cmocka_unit_test(test_doc_example),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
