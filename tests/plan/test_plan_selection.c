/* Tests for tensor selection (optimizer/plan/selection*.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "bitplan/format.h"
#include "bitplan/model.h"
#include "bitplan/rules.h"
#include "bitplan/selection.h"

#define MODEL_DIR BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"

static bp_format menu[128];
static size_t n_menu;

static int setup(void **state)
{
    (void)state;
    n_menu = bp_format_menu(menu, sizeof menu / sizeof menu[0]);
    return n_menu == 0 || n_menu > sizeof menu / sizeof menu[0];
}

static bp_rules *load(const char *rules_array)
{
    char text[4096];
    snprintf(text, sizeof text, "{\"schema\": \"bitplan.rules/v1\", \"rules\": %s}",
             rules_array);
    bp_rules *r = NULL;
    bp_error e;
    if (bp_rules_from_json_text(text, "r.json", &r, &e))
        fail_msg("%s", e.msg);
    return r;
}

static void test_model_default(void **state)
{
    (void)state;
    bp_model *m = NULL;
    bp_error e;
    if (bp_model_open(MODEL_DIR, &m, &e))
        fail_msg("%s", e.msg);
    bp_selection *s = NULL;
    if (bp_selection_build(m, NULL, menu, n_menu, &s, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(s->n, 42); /* 6 layers x q,k,v,o,gate,up,down */
    uint64_t params = 0;
    for (size_t i = 0; i < s->n; i++) {
        const bp_selected_tensor *t = &s->tensors[i];
        assert_true(strncmp(t->name, "model.layers.", 13) == 0);
        assert_int_equal(t->params, (uint64_t)t->rows * (uint64_t)t->cols);
        assert_true(t->n_formats >= 1);
        assert_false(t->pinned);
        const bp_tensor_info *ti = bp_model_tensor(m, t->source_index);
        assert_string_equal(ti->name, t->name);
        assert_int_equal(ti->ndim, 2);
        if (i)
            assert_true(strcmp(s->tensors[i - 1].name, t->name) < 0);
        params += t->params;
    }
    assert_int_equal(s->total_params, params);
    /* per layer: q 128x128, k,v 64x128, o 128x128, gate,up 384x128, down 128x384 */
    assert_int_equal(params, 6u * (128 * 128 * 2 + 64 * 128 * 2 + 384 * 128 * 3));
    assert_true(bp_selection_find(s, "lm_head.weight") < 0);
    bp_selection_destroy(&s);

    bp_rules *r = load("[{\"match\": \"lm_head.weight\", \"include\": true,"
                       "  \"pin\": \"int8_pc_sym\"},"
                       " {\"match\": \"*.mlp.*\", \"include\": false},"
                       " {\"match\": \"*.q_proj.weight\", \"formats\": [\"int4_g64_sym\", "
                       "\"int8_g128_sym\", \"nvfp4\"], \"min_bits\": 4.4},"
                       " {\"match\": \"nothing.matches\", \"include\": true}]");
    if (bp_selection_build(m, r, menu, n_menu, &s, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(s->n, 6 * 4 + 1);
    long lm = bp_selection_find(s, "lm_head.weight");
    assert_true(lm >= 0);
    assert_true(s->tensors[lm].pinned);
    assert_int_equal(s->tensors[lm].n_formats, 1);
    assert_string_equal(s->tensors[lm].formats[0].name, "int8_pc_sym");
    assert_int_equal(s->tensors[lm].rows, 256);
    long q = bp_selection_find(s, "model.layers.2.self_attn.q_proj.weight");
    assert_true(q >= 0);
    /* int4_g64_sym is 4.25 nominal bits: below min_bits 4.4. Menu order kept. */
    assert_int_equal(s->tensors[q].n_formats, 2);
    assert_string_equal(s->tensors[q].formats[0].name, "int8_g128_sym");
    assert_string_equal(s->tensors[q].formats[1].name, "nvfp4");
    assert_int_equal(s->n_rules, 4);
    assert_int_equal(s->rule_hits[0], 1);
    assert_int_equal(s->rule_hits[1], 18);
    assert_int_equal(s->rule_hits[3], 0); /* the caller can warn about it */
    bp_selection_destroy(&s);
    bp_rules_destroy(&r);
    bp_model_destroy(&m);
}

static bp_tensor_info info(const char *name, int ndim, int64_t r, int64_t c)
{
    bp_tensor_info t;
    memset(&t, 0, sizeof t);
    t.name = (char *)name;
    t.ndim = ndim;
    t.shape[0] = r;
    t.shape[1] = c;
    t.dtype = BP_DTYPE_BF16;
    return t;
}

static void expect_error(const bp_tensor_info *const *list, size_t n, const char *rules,
                         const bp_format *mn, size_t nm, const char *msg)
{
    bp_rules *r = rules ? load(rules) : NULL;
    bp_selection *s = (bp_selection *)1;
    bp_error e;
    int rc = bp_selection_build_list(list, n, r, mn, nm, &s, &e);
    if (rc != BP_EINVAL || !strstr(e.msg, msg) || s)
        fail_msg("rc %d \"%s\" (want \"%s\")", rc, e.msg, msg);
    bp_rules_destroy(&r);
}

static void test_list_errors(void **state)
{
    (void)state;
    bp_tensor_info a = info("model.layers.0.odd.weight", 2, 64, 100);
    bp_tensor_info b = info("model.layers.0.ok.weight", 2, 64, 128);
    const bp_tensor_info *list[] = {&a, &b};
    /* cols 100: no group size divides it, but per-row formats do. */
    bp_selection *s = NULL;
    bp_error e;
    if (bp_selection_build_list(list, 2, NULL, menu, n_menu, &s, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(s->n, 2);
    for (size_t k = 0; k < s->tensors[0].n_formats; k++)
        assert_true(s->tensors[0].formats[k].group == 0 ||
                    100 % s->tensors[0].formats[k].group == 0);
    assert_true(s->tensors[0].n_formats < s->tensors[1].n_formats);
    bp_selection_destroy(&s);

    expect_error(list, 2, "[{\"match\": \"*.odd.weight\", \"pin\": \"int4_g128_sym\"}]", menu,
                 n_menu,
                 "tensor \"model.layers.0.odd.weight\" [64, 100]: pinned format "
                 "int4_g128_sym does not support this shape");
    expect_error(list, 2, "[{\"match\": \"*\", \"formats\": [\"int4_g128_sym\"]}]", menu,
                 n_menu,
                 "tensor \"model.layers.0.odd.weight\" [64, 100]: no allowed format "
                 "supports this shape");
    expect_error(list, 2, "[{\"match\": \"*.ok.*\", \"min_bits\": 32}]", menu, n_menu,
                 "tensor \"model.layers.0.ok.weight\": every allowed format has fewer "
                 "than min_bits 32");
    bp_format small[1];
    bp_format_parse("int4_g128_sym", &small[0], NULL);
    expect_error(list + 1, 1, "[{\"match\": \"*\", \"formats\": [\"int8_pc_sym\"]}]", small, 1,
                 "no format of the job's menu is in its rule's \"formats\" list");
    /* A pin need not be in the job's menu. */
    bp_rules *r = load("[{\"match\": \"*\", \"pin\": \"f16\"}]");
    if (bp_selection_build_list(list, 2, r, small, 1, &s, &e))
        fail_msg("%s", e.msg);
    assert_string_equal(s->tensors[0].formats[0].name, "f16");
    bp_selection_destroy(&s);
    bp_rules_destroy(&r);
    /* A 1-D or 3-D tensor is never selected, even when a rule includes it. */
    bp_tensor_info c = info("model.layers.0.norm", 1, 128, 0);
    const bp_tensor_info *l2[] = {&c};
    r = load("[{\"match\": \"*\", \"include\": true}]");
    if (bp_selection_build_list(l2, 1, r, menu, n_menu, &s, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(s->n, 0);
    assert_int_equal(s->rule_hits[0], 1);
    bp_selection_destroy(&s);
    bp_rules_destroy(&r);
    assert_int_equal(bp_selection_build_list(list, 2, NULL, menu, 0, &s, &e), BP_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_default),
        cmocka_unit_test(test_list_errors),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
