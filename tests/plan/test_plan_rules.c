/* Tests for rules files (optimizer/plan/rules.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "bitplan/rules.h"

static bp_rules *load(const char *rules_array)
{
    char text[4096];
    snprintf(text, sizeof text, "{\"schema\": \"bitplan.rules/v1\", \"rules\": %s}",
             rules_array);
    bp_rules *r = NULL;
    bp_error e;
    int rc = bp_rules_from_json_text(text, "r.json", &r, &e);
    if (rc)
        fail_msg("rules %s: %s", rules_array, e.msg);
    return r;
}

static bp_rule_result resolve(const bp_rules *r, const char *name, int ndim)
{
    bp_rule_result o;
    assert_int_equal(bp_rules_resolve(r, name, ndim, &o), BP_OK);
    return o;
}

static void test_default_selection(void **state)
{
    (void)state;
    bp_rule_result o = resolve(NULL, "model.layers.0.mlp.up_proj.weight", 2);
    assert_true(o.include);
    assert_null(o.pin);
    assert_null(o.formats);
    assert_true(o.min_bits == 0);
    assert_int_equal(o.last_rule, -1);
    assert_false(resolve(NULL, "model.layers.0.input_layernorm.weight", 1).include);
    assert_false(resolve(NULL, "lm_head.weight", 2).include);
    assert_false(resolve(NULL, "model.embed_tokens.weight", 2).include);
    assert_false(resolve(NULL, "model.norm.weight", 1).include);
    assert_false(resolve(NULL, "model.layersX.0.w", 2).include);
    /* An empty rule list behaves like no rules. */
    bp_rules *r = load("[]");
    assert_int_equal(bp_rules_count(r), 0);
    assert_true(resolve(r, "model.layers.3.self_attn.o_proj.weight", 2).include);
    bp_rules_destroy(&r);
    bp_rules_destroy(&r);
}

static void test_include_lm_head(void **state)
{
    (void)state;
    bp_rules *r = load("[{\"match\": \"lm_head.weight\", \"include\": true},"
                       " {\"match\": \"*\", \"include\": true, \"comment\": \"norms stay\"}]");
    assert_true(resolve(r, "lm_head.weight", 2).include);
    assert_true(resolve(r, "model.embed_tokens.weight", 2).include);
    /* Only 2-D tensors are ever quantized. */
    bp_rule_result o = resolve(r, "model.norm.weight", 1);
    assert_false(o.include);
    assert_int_equal(o.last_rule, 1);
    assert_string_equal(bp_rules_match_text(r, 0), "lm_head.weight");
    assert_null(bp_rules_match_text(r, 2));
    bp_rules_destroy(&r);
}

static void test_exclude_glob(void **state)
{
    (void)state;
    bp_rules *r = load("[{\"match\": \"*.mlp.down_proj.weight\", \"include\": false},"
                       " {\"match\": \"model.layers.[0-1].self_attn.?_proj.weight\","
                       "  \"include\": false}]");
    assert_false(resolve(r, "model.layers.5.mlp.down_proj.weight", 2).include);
    assert_true(resolve(r, "model.layers.5.mlp.up_proj.weight", 2).include);
    assert_false(resolve(r, "model.layers.1.self_attn.q_proj.weight", 2).include);
    assert_true(resolve(r, "model.layers.2.self_attn.q_proj.weight", 2).include);
    assert_true(resolve(r, "model.layers.10.self_attn.q_proj.weight", 2).include);
    assert_true(bp_rules_rule_matches(r, 0, "a.mlp.down_proj.weight"));
    assert_false(bp_rules_rule_matches(r, 0, "a.mlp.down_proj.weight.x"));
    bp_rules_destroy(&r);
}

static void test_regex(void **state)
{
    (void)state;
    bp_rules *r = load("[{\"match\": \"re:model\\\\.layers\\\\.(0|5)\\\\..*\","
                       "  \"formats\": [\"int8_pc_sym\", \"int4_g128_asym\"]},"
                       " {\"match\": \"re:mlp\", \"include\": false}]");
    bp_rule_result o = resolve(r, "model.layers.5.mlp.up_proj.weight", 2);
    assert_true(o.include); /* "re:mlp" is anchored: matches only the name "mlp" */
    assert_int_equal(o.n_formats, 2);
    assert_string_equal(o.formats[0], "int8_pc_sym");
    assert_string_equal(o.formats[1], "int4_g128_asym");
    assert_int_equal(o.last_rule, 0);
    o = resolve(r, "model.layers.15.mlp.up_proj.weight", 2);
    assert_null(o.formats);
    assert_false(resolve(r, "mlp", 2).include);
    bp_rules_destroy(&r);
}

static void test_pin_formats_min_bits_override(void **state)
{
    (void)state;
    bp_rules *r = load(
        "[{\"match\": \"model.layers.*\", \"formats\": [\"int4_g128_sym\", \"int8_pc_sym\"],"
        "  \"min_bits\": 3.5},"
        " {\"match\": \"*.mlp.*\", \"pin\": \"int8_pc_sym\"},"
        " {\"match\": \"*.down_proj.weight\", \"pin\": null, \"min_bits\": 6},"
        " {\"match\": \"*.layers.3.*\", \"formats\": null, \"min_bits\": null}]");
    bp_rule_result o = resolve(r, "model.layers.0.self_attn.q_proj.weight", 2);
    assert_true(o.include);
    assert_null(o.pin);
    assert_int_equal(o.n_formats, 2);
    assert_true(o.min_bits == 3.5);
    o = resolve(r, "model.layers.0.mlp.up_proj.weight", 2);
    assert_string_equal(o.pin, "int8_pc_sym");
    assert_int_equal(o.n_formats, 2); /* kept from rule 0 */
    o = resolve(r, "model.layers.0.mlp.down_proj.weight", 2);
    assert_null(o.pin);               /* cleared by rule 2 */
    assert_true(o.min_bits == 6);     /* later rule overrides */
    assert_int_equal(o.last_rule, 2);
    o = resolve(r, "model.layers.3.mlp.down_proj.weight", 2);
    assert_null(o.formats);
    assert_true(o.min_bits == 0);
    assert_int_equal(o.last_rule, 3);
    bp_rules_destroy(&r);
}

typedef struct bad_case {
    const char *text;
    const char *msg;
} bad_case;

#define RULES(x) "{\"schema\": \"bitplan.rules/v1\", \"rules\": [" x "]}"

static void test_errors(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        {RULES("{\"match\": \"a\", \"incldue\": true}"),
         "r.json: rules[0]: unknown key \"incldue\""},
        {"{\"schema\": \"bitplan.rules/v1\", \"rules\": [], \"extra\": 1}",
         "r.json: unknown key \"extra\""},
        {RULES("{\"match\": \"a\", \"include\": true}, {\"match\": \"re:(a\", \"include\": true}"),
         "r.json: rules[1].match: invalid regular expression \"(a\""},
        {RULES("{\"match\": \"re:a)(b\", \"include\": true}"),
         "rules[0].match: invalid regular expression"},
        {RULES("{\"match\": \"re:\", \"include\": true}"), "empty regular expression"},
        {RULES("{\"match\": \"model.layers.[0-3.*\", \"include\": true}"),
         "rules[0].match: invalid glob \"model.layers.[0-3.*\": unclosed '['"},
        {RULES("{\"match\": \"a\\\\\", \"include\": true}"), "trailing backslash"},
        {RULES("{\"match\": \"\", \"include\": true}"), "rules[0].match: empty"},
        {RULES("{\"include\": true}"), "rules[0]: missing \"match\""},
        {RULES("{\"match\": 3, \"include\": true}"), "rules[0].match: must be a string"},
        {RULES("{\"match\": \"a\"}"), "rules[0]: sets nothing"},
        {RULES("{\"match\": \"a\", \"include\": 1}"), "rules[0].include: must be true or false"},
        {RULES("{\"match\": \"a\", \"pin\": \"int9\"}"),
         "r.json: rules[0].pin: unknown format \"int9\""},
        {RULES("{\"match\": \"a\", \"formats\": [\"int4_g128_sym\", \"bogus\"]}"),
         "rules[0].formats[1]: unknown format \"bogus\""},
        {RULES("{\"match\": \"a\", \"formats\": [\"f16\", \"f16\"]}"),
         "rules[0].formats[1]: \"f16\" listed twice"},
        {RULES("{\"match\": \"a\", \"formats\": []}"), "rules[0].formats: empty"},
        {RULES("{\"match\": \"a\", \"formats\": \"f16\"}"), "rules[0].formats: must be an array"},
        {RULES("{\"match\": \"a\", \"min_bits\": -1}"), "rules[0].min_bits: must be a number"},
        {RULES("{\"match\": \"a\", \"min_bits\": \"4\"}"), "rules[0].min_bits: must be a number"},
        {RULES("\"a\""), "rules[0]: must be an object"},
        {"{\"schema\": \"bitplan.rules/v2\", \"rules\": []}", "schema: must be \"bitplan.rules/v1\""},
        {"{\"rules\": []}", "schema: must be"},
        {"{\"schema\": \"bitplan.rules/v1\"}", "rules: must be an array"},
        {"[1]", "top level must be an object"},
        {"{\"schema\": \"bitplan.rules/v1\", \"rules\": [}", "r.json:1:"},
        {"{\"schema\": \"bitplan.rules/v1\", \"schema\": \"x\", \"rules\": []}", "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bp_rules *r = (bp_rules *)1;
        bp_error e;
        bp_error_clear(&e);
        int rc = bp_rules_from_json_text(cases[i].text, "r.json", &r, &e);
        if (rc != BP_EFORMAT || !strstr(e.msg, cases[i].msg) || r)
            fail_msg("case %zu: rc %d \"%s\" (want \"%s\")", i, rc, e.msg, cases[i].msg);
    }
}

static void test_load_file(void **state)
{
    (void)state;
    const char *path = BP_TEST_TMPDIR "/rules_load.json";
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\n  \"schema\": \"bitplan.rules/v1\",\n  \"comment\": \"test\",\n"
          "  \"rules\": [\n    {\"match\": \"lm_head.weight\", \"include\": true,\n"
          "     \"pin\": \"int8_pc_sym\"}\n  ]\n}\n",
          f);
    fclose(f);
    bp_rules *r = NULL;
    bp_error e;
    int rc = bp_rules_load(path, &r, &e);
    if (rc)
        fail_msg("%s", e.msg);
    bp_rule_result o = resolve(r, "lm_head.weight", 2);
    assert_true(o.include);
    assert_string_equal(o.pin, "int8_pc_sym");
    bp_rules_destroy(&r);
    assert_int_equal(bp_rules_load(BP_TEST_TMPDIR "/no-such-rules.json", &r, &e),
                     BP_ENOTFOUND);
    assert_non_null(strstr(e.msg, "no-such-rules.json"));
    f = fopen(path, "w");
    fputs("{\"schema\": \"bitplan.rules/v1\", \"rules\": [{\"match\": \"x\", \"pin\": 4}]}", f);
    fclose(f);
    assert_int_equal(bp_rules_load(path, &r, &e), BP_EFORMAT);
    assert_non_null(strstr(e.msg, "rules_load.json: rules[0].pin: must be a format name"));
    assert_int_equal(bp_rules_resolve(NULL, NULL, 2, NULL), BP_EINVAL);
}

/* The example in docs/rules.md loads. */
static void test_doc_example(void **state)
{
    (void)state;
    FILE *f = fopen(BP_SOURCE_DIR "/docs/rules.md", "rb");
    assert_non_null(f);
    static char doc[65536];
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = '\0';
    char *start = strstr(doc, "```json\n");
    assert_non_null(start);
    start += 8;
    char *end = strstr(start, "```");
    assert_non_null(end);
    *end = '\0';
    bp_rules *r = NULL;
    bp_error e;
    if (bp_rules_from_json_text(start, "docs/rules.md", &r, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(bp_rules_count(r), 4);
    bp_rule_result o = resolve(r, "model.layers.1.self_attn.k_proj.weight", 2);
    assert_int_equal(o.n_formats, 3);
    o = resolve(r, "model.layers.10.self_attn.k_proj.weight", 2);
    assert_null(o.formats);
    assert_false(resolve(r, "model.layers.3.mlp.gate_proj.weight", 2).include);
    assert_string_equal(resolve(r, "lm_head.weight", 2).pin, "int8_pc_sym");
    bp_rules_destroy(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_selection),
        cmocka_unit_test(test_include_lm_head),
        cmocka_unit_test(test_exclude_glob),
        cmocka_unit_test(test_regex),
        cmocka_unit_test(test_pin_formats_min_bits_override),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_doc_example),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
