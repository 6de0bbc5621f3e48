/* A catalogue of malformed safetensors files and model directories, built
 * by the test itself. Each must be rejected with the expected code and a
 * message naming the file, the tensor and the reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bitplan/model.h"
#include "io_test_util.h"

#define ROOT BP_TEST_TMPDIR "/io_catalogue"

/* ---- single files ------------------------------------------------------ */

typedef struct file_case {
    const char *id;      /* file is ROOT/files/<id>.safetensors */
    const char *header;  /* NULL: raw bytes below */
    uint64_t hlen;       /* UINT64_MAX: the header's real length */
    size_t data_len;     /* bytes after the header */
    const char *raw;     /* when header is NULL */
    size_t raw_len;
    int code;
    const char *sub[3];  /* substrings expected in the message */
} file_case;

#define REAL UINT64_MAX
#define T1(body) "{\"w\":{" body "}}"

static const file_case file_cases[] = {
    {"empty", NULL, 0, 0, "", 0, BP_EFORMAT, {"0 bytes", "shorter than the 8-byte"}},
    {"short", NULL, 0, 0, "\x05\x00\x00\x00\x00", 5, BP_EFORMAT, {"5 bytes", "shorter"}},
    {"hdr_beyond_file", "{}", 1000, 0, NULL, 0, BP_EFORMAT,
     {"header length 1000", "beyond the end"}},
    {"hdr_absurd", "{}", (uint64_t)1 << 40, 0, NULL, 0, BP_EFORMAT, {"absurd"}},
    {"hdr_zero", "", REAL, 16, NULL, 0, BP_EFORMAT, {"header length is 0"}},
    {"invalid_json", "{\"w\": {\"dtype\": \"F32\",", REAL, 0, NULL, 0, BP_EFORMAT,
     {"not valid JSON"}},
    {"non_object", "[1, 2, 3]", REAL, 0, NULL, 0, BP_EFORMAT, {"not a JSON object"}},
    {"entry_not_object", "{\"w\": 5}", REAL, 0, NULL, 0, BP_EFORMAT,
     {"tensor 'w'", "not a JSON object"}},
    {"missing_dtype", T1("\"shape\":[1],\"data_offsets\":[0,4]"), REAL, 4, NULL, 0,
     BP_EFORMAT, {"tensor 'w'", "missing \"dtype\""}},
    {"dtype_not_string", T1("\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]"), REAL, 4,
     NULL, 0, BP_EFORMAT, {"tensor 'w'", "\"dtype\" is not a string"}},
    {"missing_shape", T1("\"dtype\":\"F32\",\"data_offsets\":[0,4]"), REAL, 4, NULL, 0,
     BP_EFORMAT, {"tensor 'w'", "missing \"shape\""}},
    {"shape_not_array", T1("\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]"), REAL, 4,
     NULL, 0, BP_EFORMAT, {"tensor 'w'", "\"shape\" is not an array"}},
    {"shape_string_dim", T1("\"dtype\":\"F32\",\"shape\":[1,\"x\"],\"data_offsets\":[0,4]"),
     REAL, 4, NULL, 0, BP_EFORMAT, {"tensor 'w'", "shape[1] is not an integer"}},
    {"shape_real_dim", T1("\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]"), REAL,
     8, NULL, 0, BP_EFORMAT, {"tensor 'w'", "shape[0] is not an integer"}},
    {"negative_shape", T1("\"dtype\":\"F32\",\"shape\":[-1,4],\"data_offsets\":[0,16]"),
     REAL, 16, NULL, 0, BP_EFORMAT, {"tensor 'w'", "negative dimension -1"}},
    {"shape_overflow",
     T1("\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
        "\"data_offsets\":[0,4]"),
     REAL, 4, NULL, 0, BP_EFORMAT, {"tensor 'w'", "overflow"}},
    {"too_many_dims",
     T1("\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]"), REAL, 4,
     NULL, 0, BP_EUNSUPPORTED, {"tensor 'w'", "9 dimensions"}},
    {"unsupported_dtype", T1("\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,4]"), REAL,
     4, NULL, 0, BP_EUNSUPPORTED, {"tensor 'w'", "dtype 'I8' is not supported"}},
    {"unknown_dtype", T1("\"dtype\":\"Q4_K\",\"shape\":[4],\"data_offsets\":[0,4]"), REAL, 4,
     NULL, 0, BP_EUNSUPPORTED, {"tensor 'w'", "unknown dtype 'Q4_K'"}},
    {"offsets_not_pair", T1("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]"), REAL, 4,
     NULL, 0, BP_EFORMAT, {"tensor 'w'", "\"data_offsets\" is not an array of 2"}},
    {"offsets_negative", T1("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]"), REAL,
     4, NULL, 0, BP_EFORMAT, {"tensor 'w'", "non-negative"}},
    {"begin_after_end", T1("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]"), REAL, 8,
     NULL, 0, BP_EFORMAT, {"tensor 'w'", "begin 8 is after end 4"}},
    {"truncated", T1("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]"), REAL, 8,
     NULL, 0, BP_EFORMAT, {"tensor 'w'", "end 16 is beyond the 8-byte data section"}},
    {"offsets_out_of_range",
     T1("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[1000000,1000004]"), REAL, 4, NULL,
     0, BP_EFORMAT, {"tensor 'w'", "beyond"}},
    {"span_mismatch", T1("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]"), REAL, 12,
     NULL, 0, BP_EFORMAT, {"tensor 'w'", "8 bytes but data_offsets span 12"}},
    {"overlap",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     REAL, 12, NULL, 0, BP_EFORMAT, {"tensor 'b'", "overlap tensor 'a'"}},
    {"duplicate_name",
     "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     REAL, 8, NULL, 0, BP_EFORMAT, {"tensor 'w'", "duplicate tensor name"}},
    {"metadata_not_string", "{\"__metadata__\":{\"format\":\"pt\",\"k\":1}}", REAL, 0, NULL,
     0, BP_EFORMAT, {"__metadata__", "key 'k' is not a string"}},
    {"metadata_not_object", "{\"__metadata__\":[1]}", REAL, 0, NULL, 0, BP_EFORMAT,
     {"\"__metadata__\" is not a JSON object"}},
    {"empty_tensor_name", "{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
     REAL, 4, NULL, 0, BP_EFORMAT, {"tensor ''", "empty tensor name"}},
    {"trailing_garbage", "{} x", REAL, 0, NULL, 0, BP_EFORMAT, {"not valid JSON"}},
};

static void check_msg(const char *id, const bp_error *e, int code, const char *const sub[3],
                      const char *must_name)
{
    if (e->code != code || (must_name && !strstr(e->msg, must_name))) {
        print_error("case %s: got %s '%s', expected %s naming %s\n", id,
                    bp_error_name(e->code), e->msg, bp_error_name(code),
                    must_name ? must_name : "-");
        fail();
    }
    for (int k = 0; k < 3; k++)
        if (sub[k] && !strstr(e->msg, sub[k])) {
            print_error("case %s: message '%s' lacks '%s'\n", id, e->msg, sub[k]);
            fail();
        }
}

static void test_malformed_files(void **state)
{
    (void)state;
    fresh_dir(ROOT "/files");
    size_t n = sizeof file_cases / sizeof file_cases[0];
    for (size_t i = 0; i < n; i++) {
        const file_case *c = &file_cases[i];
        char path[1024], fname[256];
        snprintf(fname, sizeof fname, "%s.safetensors", c->id);
        snprintf(path, sizeof path, "%s/files/%s", ROOT, fname);
        if (c->header)
            write_st_raw(path, c->header, c->hlen, c->data_len);
        else
            write_bytes(path, c->raw, c->raw_len);
        bp_error e;
        bp_error_clear(&e);
        bp_safetensors *f = (bp_safetensors *)1;
        int rc = bp_safetensors_open(path, &f, &e);
        assert_int_equal(rc, e.code);
        assert_null(f);
        check_msg(c->id, &e, c->code, c->sub, fname);
    }
    assert_true(n >= 25);
}

/* ---- model directories -------------------------------------------------- */

#define CONFIG "{\"model_type\": \"llama\"}"
#define ENTRY(name, begin, end)                                                         \
    "\"" name "\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[" #begin "," #end \
    "]}"

/* Valid one-tensor and two-tensor shard files. */
static void shard_a(const char *dir, const char *file)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    write_st_raw(p, "{" ENTRY("a", 0, 8) "}", REAL, 8);
}

static void shard_ab(const char *dir, const char *file)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    write_st_raw(p, "{" ENTRY("a", 0, 8) "," ENTRY("b", 8, 16) "}", REAL, 16);
}

static void shard_b(const char *dir, const char *file)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    write_st_raw(p, "{" ENTRY("b", 0, 8) "}", REAL, 8);
}

static void put(const char *dir, const char *file, const char *text)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    write_text(p, text);
}

#define INDEX "model.safetensors.index.json"
#define S1 "model-00001-of-00002.safetensors"
#define S2 "model-00002-of-00002.safetensors"

static void mk_no_config(const char *d) { shard_a(d, "model.safetensors"); }
static void mk_config_bad_json(const char *d)
{
    put(d, "config.json", "{\"model_type\": ");
    shard_a(d, "model.safetensors");
}
static void mk_config_not_object(const char *d)
{
    put(d, "config.json", "[\"llama\"]");
    shard_a(d, "model.safetensors");
}
static void mk_no_weights(const char *d) { put(d, "config.json", CONFIG); }
static void mk_missing_shard(const char *d)
{
    put(d, "config.json", CONFIG);
    shard_a(d, S1);
    put(d, INDEX, "{\"weight_map\":{\"a\":\"" S1 "\",\"b\":\"" S2 "\"}}");
}
static void mk_index_tensor_not_in_shard(const char *d)
{
    put(d, "config.json", CONFIG);
    shard_a(d, S1);
    put(d, INDEX, "{\"weight_map\":{\"a\":\"" S1 "\",\"b\":\"" S1 "\"}}");
}
static void mk_shard_tensor_not_in_index(const char *d)
{
    put(d, "config.json", CONFIG);
    shard_ab(d, S1);
    put(d, INDEX, "{\"weight_map\":{\"a\":\"" S1 "\"}}");
}
static void mk_shard_traversal(const char *d)
{
    put(d, "config.json", CONFIG);
    put(d, INDEX, "{\"weight_map\":{\"a\":\"../evil.safetensors\"}}");
}
static void mk_dup_across_shards(const char *d)
{
    put(d, "config.json", CONFIG);
    shard_ab(d, S1);
    shard_b(d, S2);
    put(d, INDEX, "{\"weight_map\":{\"a\":\"" S1 "\",\"b\":\"" S2 "\"}}");
}
static void mk_index_bad_json(const char *d)
{
    put(d, "config.json", CONFIG);
    shard_a(d, S1);
    put(d, INDEX, "{\"weight_map\":");
}
static void mk_index_no_weight_map(const char *d)
{
    put(d, "config.json", CONFIG);
    shard_a(d, S1);
    put(d, INDEX, "{\"metadata\":{\"total_size\":8}}");
}
static void mk_index_value_not_string(const char *d)
{
    put(d, "config.json", CONFIG);
    shard_a(d, S1);
    put(d, INDEX, "{\"weight_map\":{\"a\":1}}");
}
static void mk_index_duplicate_key(const char *d)
{
    put(d, "config.json", CONFIG);
    shard_a(d, S1);
    put(d, INDEX, "{\"weight_map\":{\"a\":\"" S1 "\",\"a\":\"" S1 "\"}}");
}
static void mk_index_empty(const char *d)
{
    put(d, "config.json", CONFIG);
    put(d, INDEX, "{\"weight_map\":{}}");
}
static void mk_shard_malformed(const char *d)
{
    char p[1024];
    put(d, "config.json", CONFIG);
    snprintf(p, sizeof p, "%s/%s", d, S1);
    write_st_raw(p, "{" ENTRY("a", 0, 8) "}", REAL, 4); /* truncated */
    put(d, INDEX, "{\"weight_map\":{\"a\":\"" S1 "\"}}");
}
static void mk_single_malformed(const char *d)
{
    put(d, "config.json", CONFIG);
    put(d, "model.safetensors", "");
}

typedef struct dir_case {
    const char *id;
    void (*make)(const char *dir);
    int code;
    const char *sub[3];
} dir_case;

static const dir_case dir_cases[] = {
    {"no_config", mk_no_config, BP_ENOTFOUND, {"config.json", "not found"}},
    {"config_bad_json", mk_config_bad_json, BP_EFORMAT, {"config.json", "not valid JSON"}},
    {"config_not_object", mk_config_not_object, BP_EFORMAT,
     {"config.json", "not a JSON object"}},
    {"no_weights", mk_no_weights, BP_ENOTFOUND, {"model.safetensors", INDEX}},
    {"missing_shard", mk_missing_shard, BP_ENOTFOUND, {S2, "tensor 'b'", "shard not found"}},
    {"index_tensor_not_in_shard", mk_index_tensor_not_in_shard, BP_EFORMAT,
     {"tensor 'b'", "shard '" S1 "'", "does not contain it"}},
    {"shard_tensor_not_in_index", mk_shard_tensor_not_in_index, BP_EFORMAT,
     {"tensor 'b'", S1, "does not list"}},
    {"shard_path_traversal", mk_shard_traversal, BP_EFORMAT,
     {"../evil.safetensors", "tensor 'a'", "not a plain file name"}},
    {"duplicate_across_shards", mk_dup_across_shards, BP_EFORMAT,
     {"duplicate tensor 'b'", S1, S2}},
    {"index_bad_json", mk_index_bad_json, BP_EFORMAT, {INDEX, "not valid JSON"}},
    {"index_no_weight_map", mk_index_no_weight_map, BP_EFORMAT, {INDEX, "weight_map"}},
    {"index_value_not_string", mk_index_value_not_string, BP_EFORMAT,
     {INDEX, "tensor 'a'", "not a string"}},
    {"index_duplicate_key", mk_index_duplicate_key, BP_EFORMAT, {INDEX, "duplicate"}},
    {"index_empty", mk_index_empty, BP_EFORMAT, {INDEX, "empty"}},
    {"shard_malformed", mk_shard_malformed, BP_EFORMAT, {S1, "tensor 'a'", "beyond"}},
    {"single_empty_file", mk_single_malformed, BP_EFORMAT,
     {"model.safetensors", "shorter than the 8-byte"}},
};

static void test_malformed_dirs(void **state)
{
    (void)state;
    size_t n = sizeof dir_cases / sizeof dir_cases[0];
    for (size_t i = 0; i < n; i++) {
        const dir_case *c = &dir_cases[i];
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/dirs/%s", ROOT, c->id);
        fresh_dir(dir);
        c->make(dir);
        bp_error e;
        bp_error_clear(&e);
        bp_model *m = (bp_model *)1;
        int rc = bp_model_open(dir, &m, &e);
        assert_int_equal(rc, e.code);
        assert_null(m);
        /* Every message names the model directory (or a file inside it). */
        check_msg(c->id, &e, c->code, c->sub, c->id);
    }
    assert_true(n >= 15);
}

static void test_not_a_directory(void **state)
{
    (void)state;
    bp_error e;
    bp_model *m = NULL;
    assert_int_equal(bp_model_open(ROOT "/does-not-exist", &m, &e), BP_ENOTFOUND);
    assert_non_null(strstr(e.msg, "does-not-exist"));
    assert_null(m);
    bp_safetensors *f = NULL;
    assert_int_equal(bp_safetensors_open(ROOT "/nope.safetensors", &f, &e), BP_ENOTFOUND);
    assert_non_null(strstr(e.msg, "nope.safetensors"));
    /* A directory given as a safetensors file. */
    fresh_dir(ROOT "/a_dir.safetensors");
    assert_int_equal(bp_safetensors_open(ROOT "/a_dir.safetensors", &f, &e), BP_EFORMAT);
    assert_non_null(strstr(e.msg, "not a regular file"));
    /* NULL error record is accepted. */
    assert_int_equal(bp_safetensors_open(ROOT "/nope.safetensors", &f, NULL), BP_ENOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed_files),
        cmocka_unit_test(test_malformed_dirs),
        cmocka_unit_test(test_not_a_directory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
