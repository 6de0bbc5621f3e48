/* Tests for hardware profiles (optimizer/cost/profile.c): the builtins, the
 * shipped docs/profiles files, and malformed files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bitplan/cost.h"

static void expect_err(int rc, int code, const bp_error *e, const char *needle)
{
    if (rc != code)
        fail_msg("expected %s, got %s (%s)", bp_error_name(code), bp_error_name(rc), e->msg);
    if (!strstr(e->msg, needle))
        fail_msg("message \"%s\" lacks \"%s\"", e->msg, needle);
}

static const char *const names[] = {"h100", "a100", "rtx4090", "cpu"};

static void test_builtins(void **state)
{
    (void)state;
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(bp_hw_profile_builtin_name(i), names[i]);
        bp_hw_profile *p = NULL;
        bp_error e;
        assert_int_equal(bp_hw_profile_builtin(names[i], &p, &e), BP_OK);
        assert_string_equal(p->name, names[i]);
        assert_int_equal(bp_hw_profile_validate(p, &e), BP_OK);
        assert_true(p->memory_bandwidth > 0);
        assert_true(p->peak_ops[BP_COMPUTE_FP16] > 0);
        assert_false(p->weight_only);
        bp_hw_profile_destroy(&p);
        assert_null(p);
        bp_hw_profile_destroy(&p);
        /* --profile by name needs no file. */
        assert_int_equal(bp_hw_profile_open(names[i], &p, &e), BP_OK);
        assert_string_equal(p->name, names[i]);
        bp_hw_profile_destroy(&p);
    }
    assert_null(bp_hw_profile_builtin_name(4));
    /* Datasheet figures, spot-checked. */
    bp_hw_profile *p = NULL;
    assert_int_equal(bp_hw_profile_builtin("h100", &p, NULL), BP_OK);
    assert_true(p->memory_bandwidth == 3.35e12);
    assert_true(p->peak_ops[BP_COMPUTE_FP16] == 989.4e12);
    assert_true(p->peak_ops[BP_COMPUTE_FP8] == 1978.9e12);
    assert_true(p->peak_ops[BP_COMPUTE_INT4] == 0); /* Hopper: no int4 */
    bp_hw_profile_destroy(&p);
    assert_int_equal(bp_hw_profile_builtin("a100", &p, NULL), BP_OK);
    assert_true(p->memory_bandwidth == 2.039e12);
    assert_true(p->peak_ops[BP_COMPUTE_FP8] == 0); /* Ampere: no fp8 */
    bp_hw_profile_destroy(&p);

    bp_error e;
    expect_err(bp_hw_profile_builtin("h200", &p, &e), BP_ENOTFOUND, &e,
               "unknown hardware profile \"h200\"");
    assert_null(p);
    expect_err(bp_hw_profile_open("no-such-profile.json", &p, &e), BP_ENOTFOUND, &e,
               "not a builtin profile");
    expect_err(bp_hw_profile_open("", &p, &e), BP_EINVAL, &e, "--profile: empty");
}

/* The shipped files load, equal the compiled-in copies and cite sources. */
static void test_docs_files_equal_builtins(void **state)
{
    (void)state;
    for (size_t i = 0; i < 4; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/docs/profiles/%s.json", BP_SOURCE_DIR, names[i]);
        bp_hw_profile *f = NULL, *b = NULL;
        bp_error e;
        if (bp_hw_profile_load(path, &f, &e))
            fail_msg("%s", e.msg);
        assert_int_equal(bp_hw_profile_builtin(names[i], &b, &e), BP_OK);
        assert_string_equal(f->name, b->name);
        assert_string_equal(f->description, b->description);
        assert_true(f->memory_bandwidth == b->memory_bandwidth);
        for (int c = 0; c < BP_COMPUTE_COUNT; c++)
            if (!(f->peak_ops[c] == b->peak_ops[c]))
                fail_msg("%s: peak_ops[%s]: file %.17g, builtin %.17g", names[i],
                         bp_compute_class_name((bp_compute_class)c), f->peak_ops[c],
                         b->peak_ops[c]);
        assert_true(f->launch_overhead_us == b->launch_overhead_us);
        assert_int_equal(f->weight_only, b->weight_only);
        /* --profile with a path. */
        bp_hw_profile *o = NULL;
        assert_int_equal(bp_hw_profile_open(path, &o, &e), BP_OK);
        assert_true(o->memory_bandwidth == b->memory_bandwidth);
        bp_hw_profile_destroy(&o);
        bp_hw_profile_destroy(&f);
        bp_hw_profile_destroy(&b);

        json_error_t je;
        json_t *root = json_load_file(path, 0, &je);
        assert_non_null(root);
        json_t *src = json_object_get(root, "sources");
        assert_true(json_is_array(src) && json_array_size(src) >= 1);
        assert_true(json_is_array(json_object_get(root, "notes")));
        json_decref(root);
    }
}

#define HEAD "{\"schema\": \"bitplan.hwprofile/v1\", \"name\": \"x\", "
#define OK_BW "\"memory_bandwidth_bytes_per_s\": 1e12, "
#define OK_PEAK "\"peak_ops_per_s\": {\"fp16\": 1e14}"

static void test_minimal_and_optional(void **state)
{
    (void)state;
    bp_hw_profile *p = NULL;
    bp_error e;
    if (bp_hw_profile_from_json_text(HEAD OK_BW OK_PEAK "}", "m.json", &p, &e))
        fail_msg("%s", e.msg);
    assert_string_equal(p->name, "x");
    assert_string_equal(p->description, "");
    assert_true(p->launch_overhead_us == 0);
    assert_true(p->peak_ops[BP_COMPUTE_INT8] == 0);
    bp_hw_profile_destroy(&p);
    /* Integers are numbers too; every optional key. */
    if (bp_hw_profile_from_json_text(
            HEAD "\"memory_bandwidth_bytes_per_s\": 1000000000000, \"description\": \"d\", "
                 "\"peak_ops_per_s\": {\"fp16\": 2, \"int8\": 4, \"fp8\": 4, \"int4\": 8, "
                 "\"fp4\": 8}, \"launch_overhead_us\": 3.5, \"weight_only\": true, "
                 "\"sources\": [\"a\"], \"notes\": []}",
            "m.json", &p, &e))
        fail_msg("%s", e.msg);
    assert_true(p->memory_bandwidth == 1e12);
    assert_true(p->peak_ops[BP_COMPUTE_FP4] == 8);
    assert_true(p->launch_overhead_us == 3.5);
    assert_int_equal(p->weight_only, 1);
    assert_string_equal(p->description, "d");
    bp_hw_profile_destroy(&p);
}

static const struct {
    const char *text;
    const char *msg;
} bad[] = {
    {"{\"schema\": ", "bad.json:1:"},
    {"[1, 2]", "bad.json: top level must be an object"},
    {HEAD OK_BW OK_PEAK ", \"bandwidth\": 1}", "bad.json: unknown key \"bandwidth\""},
    {"{\"schema\": \"bitplan.hwprofile/v2\", \"name\": \"x\", " OK_BW OK_PEAK "}",
     "bad.json: schema: must be \"bitplan.hwprofile/v1\""},
    {"{\"schema\": \"bitplan.hwprofile/v1\", " OK_BW OK_PEAK "}",
     "bad.json: name: missing or not a string"},
    {"{\"schema\": \"bitplan.hwprofile/v1\", \"name\": \"my gpu\", " OK_BW OK_PEAK "}",
     "bad.json: name: \"my gpu\": only letters"},
    {HEAD OK_PEAK "}", "bad.json: memory_bandwidth_bytes_per_s: missing"},
    {HEAD "\"memory_bandwidth_bytes_per_s\": -1e12, " OK_PEAK "}",
     "bad.json: memory_bandwidth_bytes_per_s: must be a positive finite number"},
    {HEAD "\"memory_bandwidth_bytes_per_s\": 0, " OK_PEAK "}",
     "bad.json: memory_bandwidth_bytes_per_s: must be a positive finite number"},
    {HEAD "\"memory_bandwidth_bytes_per_s\": \"3.35 TB/s\", " OK_PEAK "}",
     "bad.json: memory_bandwidth_bytes_per_s: must be a number"},
    {HEAD "\"memory_bandwidth_bytes_per_s\": 1e999, " OK_PEAK "}", "bad.json:1:"},
    {HEAD OK_BW "\"peak_ops_per_s\": 1e14}", "bad.json: peak_ops_per_s: must be an object"},
    {HEAD "\"memory_bandwidth_bytes_per_s\": 1e12}", "bad.json: peak_ops_per_s: missing"},
    {HEAD OK_BW "\"peak_ops_per_s\": {\"fp16\": 1e14, \"int2\": 1e15}}",
     "bad.json: peak_ops_per_s.int2: unknown compute class"},
    {HEAD OK_BW "\"peak_ops_per_s\": {\"int8\": 1e15}}", "bad.json: peak_ops_per_s.fp16: missing"},
    {HEAD OK_BW "\"peak_ops_per_s\": {\"fp16\": 1e14, \"int8\": 0}}",
     "bad.json: peak_ops_per_s.int8: must be a positive finite number"},
    {HEAD OK_BW "\"peak_ops_per_s\": {\"fp16\": null}}",
     "bad.json: peak_ops_per_s.fp16: must be a number"},
    {HEAD OK_BW OK_PEAK ", \"launch_overhead_us\": -2}",
     "bad.json: launch_overhead_us: must be a non-negative finite number"},
    {HEAD OK_BW OK_PEAK ", \"weight_only\": 1}", "bad.json: weight_only: must be true or false"},
    {HEAD OK_BW OK_PEAK ", \"sources\": \"datasheet\"}",
     "bad.json: sources: must be an array of strings"},
    {HEAD OK_BW OK_PEAK ", \"notes\": [\"\"]}", "bad.json: notes[0]: must be a non-empty string"},
    {HEAD OK_BW OK_PEAK ", \"description\": 7}", "bad.json: description: must be a string"},
    {HEAD OK_BW OK_BW OK_PEAK "}", "duplicate object key"},
};

static void test_malformed_text(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bp_hw_profile *p = (bp_hw_profile *)1;
        bp_error e;
        int rc = bp_hw_profile_from_json_text(bad[i].text, "bad.json", &p, &e);
        if (rc != BP_EFORMAT || !strstr(e.msg, bad[i].msg))
            fail_msg("case %zu: rc %s, message \"%s\", expected \"%s\"", i,
                     bp_error_name(rc), e.msg, bad[i].msg);
        assert_null(p);
    }
}

static void write_file(const char *path, const char *text, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(text, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

/* Errors from a file name the file (and line/column for JSON syntax). */
static void test_malformed_files(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/cost_profile_bad.json", BP_TEST_TMPDIR);
    const char *t = HEAD OK_BW "\"peak_ops_per_s\": {\"fp16\": 1e14, \"int4\": -5}}";
    write_file(path, t, strlen(t));
    bp_hw_profile *p = NULL;
    bp_error e;
    char want[600];
    snprintf(want, sizeof want, "%s: peak_ops_per_s.int4: must be a positive", path);
    expect_err(bp_hw_profile_load(path, &p, &e), BP_EFORMAT, &e, want);
    assert_null(p);

    t = "{\n  \"schema\": \"bitplan.hwprofile/v1\",\n  \"name\": \"x\",,\n}";
    write_file(path, t, strlen(t));
    snprintf(want, sizeof want, "%s:3:", path);
    expect_err(bp_hw_profile_load(path, &p, &e), BP_EFORMAT, &e, want);

    write_file(path, "{\"a\"\0}", 6);
    expect_err(bp_hw_profile_load(path, &p, &e), BP_EFORMAT, &e, "contains a NUL byte");

    snprintf(path, sizeof path, "%s/cost_profile_missing.json", BP_TEST_TMPDIR);
    remove(path);
    expect_err(bp_hw_profile_load(path, &p, &e), BP_ENOTFOUND, &e, path);
    expect_err(bp_hw_profile_load(NULL, &p, &e), BP_EINVAL, &e, "NULL path");
}

static void test_validate_hand_built(void **state)
{
    (void)state;
    bp_hw_profile h;
    memset(&h, 0, sizeof h);
    strcpy(h.name, "mine");
    h.memory_bandwidth = 1e12;
    h.peak_ops[BP_COMPUTE_FP16] = 1e14;
    bp_error e;
    assert_int_equal(bp_hw_profile_validate(&h, &e), BP_OK);
    h.memory_bandwidth = NAN;
    expect_err(bp_hw_profile_validate(&h, &e), BP_EINVAL, &e, "mine: memory_bandwidth");
    h.memory_bandwidth = 1e12;
    h.peak_ops[BP_COMPUTE_FP16] = 0;
    expect_err(bp_hw_profile_validate(&h, &e), BP_EINVAL, &e, "peak_ops[fp16]");
    h.peak_ops[BP_COMPUTE_FP16] = 1e14;
    h.peak_ops[BP_COMPUTE_INT4] = INFINITY;
    expect_err(bp_hw_profile_validate(&h, &e), BP_EINVAL, &e, "peak_ops[int4]");
    h.peak_ops[BP_COMPUTE_INT4] = 0;
    h.launch_overhead_us = -1;
    expect_err(bp_hw_profile_validate(&h, &e), BP_EINVAL, &e, "launch_overhead_us");
    h.launch_overhead_us = 0;
    h.weight_only = 2;
    expect_err(bp_hw_profile_validate(&h, &e), BP_EINVAL, &e, "weight_only");
    expect_err(bp_hw_profile_validate(NULL, &e), BP_EINVAL, &e, "NULL hardware profile");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtins),
        cmocka_unit_test(test_docs_files_equal_builtins),
        cmocka_unit_test(test_minimal_and_optional),
        cmocka_unit_test(test_malformed_text),
        cmocka_unit_test(test_malformed_files),
        cmocka_unit_test(test_validate_hand_built),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
