/* llama.cpp legacy imatrix.dat: round trip, name mapping, malformed files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "bitplan/imatrix.h"
#include "io_test_util.h"

#define ROOT BP_TEST_TMPDIR "/io_imatrix"

static const char *const pairs[][2] = {
    {"blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"},
    {"blk.3.attn_k.weight", "model.layers.3.self_attn.k_proj.weight"},
    {"blk.12.attn_v.weight", "model.layers.12.self_attn.v_proj.weight"},
    {"blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"},
    {"blk.3.ffn_gate.weight", "model.layers.3.mlp.gate_proj.weight"},
    {"blk.3.ffn_up.weight", "model.layers.3.mlp.up_proj.weight"},
    {"blk.79.ffn_down.weight", "model.layers.79.mlp.down_proj.weight"},
    {"blk.1.attn_norm.weight", "model.layers.1.input_layernorm.weight"},
    {"blk.1.ffn_norm.weight", "model.layers.1.post_attention_layernorm.weight"},
    {"output.weight", "lm_head.weight"},
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"blk.2.attn_q.bias", "model.layers.2.self_attn.q_proj.bias"},
};

static void test_name_mapping(void **state)
{
    (void)state;
    char buf[BP_IMATRIX_NAME_BUF];
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        assert_int_equal(bp_imatrix_name_to_hf(pairs[i][0], buf, sizeof buf), BP_OK);
        assert_string_equal(buf, pairs[i][1]);
        assert_int_equal(bp_imatrix_name_to_gguf(pairs[i][1], buf, sizeof buf), BP_OK);
        assert_string_equal(buf, pairs[i][0]);
        /* Already in the target form: unchanged. */
        assert_int_equal(bp_imatrix_name_to_hf(pairs[i][1], buf, sizeof buf), BP_OK);
        assert_string_equal(buf, pairs[i][1]);
        assert_int_equal(bp_imatrix_name_to_gguf(pairs[i][0], buf, sizeof buf), BP_OK);
        assert_string_equal(buf, pairs[i][0]);
    }
    /* Unknown names pass through; near misses are not mapped. */
    static const char *const keep[] = {"blk.x.attn_q.weight", "blk.3.attn_qk.weight",
                                       "outputs.weight", "blk.3.ffn_gate_exps.weight",
                                       "model.layers.3.mlp.gate_proj_x.weight", "blk.", ""};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
        assert_int_equal(bp_imatrix_name_to_hf(keep[i], buf, sizeof buf), BP_OK);
        assert_string_equal(buf, keep[i]);
        assert_int_equal(bp_imatrix_name_to_gguf(keep[i], buf, sizeof buf), BP_OK);
        assert_string_equal(buf, keep[i]);
    }
    /* Buffer too small. */
    char tiny[8];
    assert_int_equal(bp_imatrix_name_to_hf("output.weight", tiny, sizeof tiny), BP_EINVAL);
    assert_int_equal(bp_imatrix_name_to_hf("output.weight", NULL, 0), BP_EINVAL);
}

static void test_round_trip(void **state)
{
    (void)state;
    fresh_dir(ROOT "/rt");
    bp_error e;
    bp_imatrix *m = NULL;
    assert_int_equal(bp_imatrix_new(&m, &e), BP_OK);
    float q[4] = {4.0f, 8.0f, 0.0f, 1.0f};
    float d[6] = {1, 2, 3, 4, 5, 6};
    float o[2] = {0.5f, 0.25f};
    /* Names in either form go in; ncall 0 means "not divided". */
    assert_int_equal(bp_imatrix_add(m, "blk.0.attn_q.weight", 4, q, 4, &e), BP_OK);
    assert_int_equal(bp_imatrix_add(m, "model.layers.0.mlp.down_proj.weight", 3, d, 6, &e),
                     BP_OK);
    assert_int_equal(bp_imatrix_add(m, "output.weight", 0, o, 2, &e), BP_OK);
    /* Same tensor under its other name is a duplicate. */
    assert_int_equal(bp_imatrix_add(m, "model.layers.0.self_attn.q_proj.weight", 1, q, 4, &e),
                     BP_EINVAL);
    assert_non_null(strstr(e.msg, "blk.0.attn_q.weight"));
    assert_int_equal(bp_imatrix_add(m, "output.weight", 1, o, 2, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "duplicate"));
    float bad[2] = {1.0f, NAN};
    assert_int_equal(bp_imatrix_add(m, "x", 1, bad, 2, &e), BP_EINVAL);
    bad[1] = -1.0f;
    assert_int_equal(bp_imatrix_add(m, "x", 1, bad, 2, &e), BP_EINVAL);
    assert_int_equal(bp_imatrix_add(m, "x", -1, o, 2, &e), BP_EINVAL);
    assert_int_equal(bp_imatrix_add(m, "x", 1, o, 0, &e), BP_EINVAL);
    assert_int_equal(bp_imatrix_add(m, "", 1, o, 2, &e), BP_EINVAL);
    assert_int_equal(bp_imatrix_count(m), 3);
    assert_int_equal(bp_imatrix_last_chunk(m), -1);
    assert_null(bp_imatrix_dataset(m));
    assert_int_equal(bp_imatrix_set_dataset(m, 42, "calib.txt", &e), BP_OK);

    for (int gguf = 0; gguf < 2; gguf++) {
        const char *path = gguf ? ROOT "/rt/gguf.dat" : ROOT "/rt/asis.dat";
        assert_int_equal(bp_imatrix_save(m, path, gguf, &e), BP_OK);
        assert_int_equal(count_files_with(ROOT "/rt", ".tmp-"), 0);
        bp_imatrix *r = NULL;
        int rc = bp_imatrix_load(path, &r, &e);
        if (rc)
            print_error("%s\n", e.msg);
        assert_int_equal(rc, BP_OK);
        assert_int_equal(bp_imatrix_count(r), 3);
        assert_int_equal(bp_imatrix_last_chunk(r), 42);
        assert_string_equal(bp_imatrix_dataset(r), "calib.txt");
        bp_imatrix_entry en;
        assert_int_equal(bp_imatrix_entry_at(r, 1, &en), BP_OK);
        assert_string_equal(en.name, gguf ? "blk.0.ffn_down.weight"
                                          : "model.layers.0.mlp.down_proj.weight");
        assert_string_equal(en.hf_name, "model.layers.0.mlp.down_proj.weight");
        assert_int_equal(en.ncall, 3);
        assert_int_equal(en.n, 6);
        assert_memory_equal(en.sums, d, sizeof d);
        assert_int_equal(bp_imatrix_entry_at(r, 3, &en), BP_EINVAL);

        /* Lookup by either name, means = sums / ncall. */
        int64_t n = -1;
        const float *w = bp_imatrix_find(r, "model.layers.0.self_attn.q_proj.weight", &n);
        assert_non_null(w);
        assert_int_equal(n, 4);
        assert_true(w[0] == 1.0f && w[1] == 2.0f && w[2] == 0.0f && w[3] == 0.25f);
        assert_ptr_equal(bp_imatrix_find(r, "blk.0.attn_q.weight", NULL), w);
        w = bp_imatrix_find(r, "blk.0.ffn_down.weight", &n);
        assert_int_equal(n, 6);
        assert_true(w[2] == 1.0f && w[5] == 2.0f);
        assert_true(w[0] == 1.0f / 3.0f);
        w = bp_imatrix_find(r, "lm_head.weight", &n);
        assert_true(w && n == 2 && w[0] == 0.5f); /* ncall 0: not divided */
        assert_null(bp_imatrix_find(r, "model.layers.1.self_attn.q_proj.weight", &n));
        assert_int_equal(n, 0);
        bp_imatrix_destroy(&r);
        bp_imatrix_destroy(&r);
        assert_null(r);
    }
    bp_imatrix_destroy(&m);

    /* A file without the optional trailer. */
    assert_int_equal(bp_imatrix_new(&m, &e), BP_OK);
    assert_int_equal(bp_imatrix_add(m, "blk.5.ffn_up.weight", 2, d, 6, &e), BP_OK);
    assert_int_equal(bp_imatrix_save(m, ROOT "/rt/notail.dat", 1, &e), BP_OK);
    bp_imatrix_destroy(&m);
    assert_int_equal(bp_imatrix_load(ROOT "/rt/notail.dat", &m, &e), BP_OK);
    assert_int_equal(bp_imatrix_last_chunk(m), -1);
    assert_non_null(bp_imatrix_find(m, "model.layers.5.mlp.up_proj.weight", NULL));
    bp_imatrix_destroy(&m);
}

/* ---- malformed files ----------------------------------------------------- */

typedef struct buf {
    unsigned char b[4096];
    size_t n;
} buf;

static void put_i32(buf *o, int32_t v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    for (int i = 0; i < 4; i++)
        o->b[o->n++] = (unsigned char)(u >> (8 * i));
}

static void put_str(buf *o, const char *s)
{
    put_i32(o, (int32_t)strlen(s));
    memcpy(o->b + o->n, s, strlen(s));
    o->n += strlen(s);
}

static void put_f(buf *o, float f)
{
    memcpy(o->b + o->n, &f, 4);
    o->n += 4;
}

/* One well-formed entry with values v, v. */
static void put_entry(buf *o, const char *name, int32_t ncall, float v)
{
    put_str(o, name);
    put_i32(o, ncall);
    put_i32(o, 2);
    put_f(o, v);
    put_f(o, v);
}

static void mk_truncated_count(buf *o) { o->b[0] = 1; o->n = 2; }
static void mk_negative_count(buf *o) { put_i32(o, -1); }
static void mk_huge_count(buf *o)
{
    put_i32(o, 1000000);
    put_entry(o, "a", 1, 1);
}
static void mk_name_len_zero(buf *o)
{
    put_i32(o, 1);
    put_i32(o, 0);
    put_i32(o, 1);
    put_i32(o, 1);
    put_f(o, 1);
    put_f(o, 1); /* padding so the count check passes */
}
static void mk_name_len_huge(buf *o)
{
    put_i32(o, 1);
    put_i32(o, 5000);
    memset(o->b + o->n, 'a', 20);
    o->n += 20;
}
static void mk_truncated_name(buf *o)
{
    put_i32(o, 1);
    put_i32(o, 30);
    memcpy(o->b + o->n, "blk.0.attn_q.weight", 19);
    o->n += 19;
}
static void mk_nval_zero(buf *o)
{
    put_i32(o, 1);
    put_str(o, "blk.0.attn_q.weight");
    put_i32(o, 1);
    put_i32(o, 0);
    put_f(o, 1); /* padding so the count check passes */
}
static void mk_nval_huge(buf *o)
{
    put_i32(o, 1);
    put_str(o, "blk.0.attn_q.weight");
    put_i32(o, 1);
    put_i32(o, 1 << 29);
    put_f(o, 1);
}
static void mk_truncated_values(buf *o)
{
    put_i32(o, 1);
    put_str(o, "blk.0.attn_q.weight");
    put_i32(o, 1);
    put_i32(o, 100);
    put_f(o, 1);
}
static void mk_nan_value(buf *o)
{
    put_i32(o, 1);
    put_entry(o, "blk.0.attn_q.weight", 1, NAN);
}
static void mk_negative_value(buf *o)
{
    put_i32(o, 1);
    put_entry(o, "blk.0.attn_k.weight", 1, -0.5f);
}
static void mk_negative_ncall(buf *o)
{
    put_i32(o, 1);
    put_entry(o, "blk.0.attn_v.weight", -3, 1);
}
static void mk_duplicate(buf *o)
{
    put_i32(o, 2);
    put_entry(o, "blk.0.ffn_up.weight", 1, 1);
    put_entry(o, "blk.0.ffn_up.weight", 1, 1);
}
static void mk_duplicate_mapped(buf *o)
{
    put_i32(o, 2);
    put_entry(o, "blk.0.ffn_up.weight", 1, 1);
    put_entry(o, "model.layers.0.mlp.up_proj.weight", 1, 1);
}
static void mk_trailing(buf *o)
{
    put_i32(o, 1);
    put_entry(o, "output.weight", 1, 1);
    o->b[o->n++] = 7;
    o->b[o->n++] = 7;
}
static void mk_trailing_after_dataset(buf *o)
{
    put_i32(o, 1);
    put_entry(o, "output.weight", 1, 1);
    put_i32(o, 10);
    put_str(o, "calib.txt");
    o->b[o->n++] = 1;
}
static void mk_dataset_too_long(buf *o)
{
    put_i32(o, 1);
    put_entry(o, "output.weight", 1, 1);
    put_i32(o, 10);
    put_i32(o, 100);
    memcpy(o->b + o->n, "calib", 5);
    o->n += 5;
}
static void mk_gguf(buf *o)
{
    memcpy(o->b, "GGUF\x03\x00\x00\x00", 8);
    o->n = 8;
}
static void mk_nul_in_name(buf *o)
{
    put_i32(o, 1);
    put_entry(o, "ab", 1, 1);
    o->b[9] = '\0'; /* second name byte */
}

typedef struct im_case {
    const char *id;
    void (*make)(buf *);
    int code;
    const char *sub[2];
} im_case;

static const im_case cases[] = {
    {"empty", NULL, BP_EFORMAT, {"entry count", "truncated"}},
    {"truncated_count", mk_truncated_count, BP_EFORMAT, {"truncated", "entry count"}},
    {"negative_count", mk_negative_count, BP_EFORMAT, {"entry count -1"}},
    {"huge_count", mk_huge_count, BP_EFORMAT, {"entry count 1000000 impossible"}},
    {"name_len_zero", mk_name_len_zero, BP_EFORMAT, {"entry 0", "name length 0"}},
    {"name_len_huge", mk_name_len_huge, BP_EFORMAT, {"name length 5000"}},
    {"truncated_name", mk_truncated_name, BP_EFORMAT, {"truncated", "entry name"}},
    {"nval_zero", mk_nval_zero, BP_EFORMAT, {"blk.0.attn_q.weight", "nval 0"}},
    {"nval_huge", mk_nval_huge, BP_EFORMAT, {"blk.0.attn_q.weight", "nval 536870912"}},
    {"truncated_values", mk_truncated_values, BP_EFORMAT,
     {"blk.0.attn_q.weight", "truncated: 100 values"}},
    {"nan_value", mk_nan_value, BP_EFORMAT, {"blk.0.attn_q.weight", "finite"}},
    {"negative_value", mk_negative_value, BP_EFORMAT, {"blk.0.attn_k.weight", ">= 0"}},
    {"negative_ncall", mk_negative_ncall, BP_EFORMAT, {"blk.0.attn_v.weight", "ncall -3"}},
    {"duplicate", mk_duplicate, BP_EFORMAT, {"duplicate entry 'blk.0.ffn_up.weight'"}},
    {"duplicate_mapped", mk_duplicate_mapped, BP_EFORMAT,
     {"model.layers.0.mlp.up_proj.weight", "blk.0.ffn_up.weight"}},
    {"trailing", mk_trailing, BP_EFORMAT, {"last_chunk"}},
    {"trailing_after_dataset", mk_trailing_after_dataset, BP_EFORMAT,
     {"1 unexpected bytes"}},
    {"dataset_too_long", mk_dataset_too_long, BP_EFORMAT, {"dataset name", "truncated"}},
    {"gguf", mk_gguf, BP_EUNSUPPORTED, {"GGUF", "legacy"}},
    {"nul_in_name", mk_nul_in_name, BP_EFORMAT, {"NUL"}},
};

static void test_malformed(void **state)
{
    (void)state;
    fresh_dir(ROOT "/bad");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const im_case *c = &cases[i];
        buf o;
        memset(&o, 0, sizeof o);
        if (c->make)
            c->make(&o);
        char path[512];
        snprintf(path, sizeof path, ROOT "/bad/%s.dat", c->id);
        write_bytes(path, o.b, o.n);
        bp_error e;
        bp_error_clear(&e);
        bp_imatrix *m = (bp_imatrix *)1;
        int rc = bp_imatrix_load(path, &m, &e);
        assert_null(m);
        int ok = rc == c->code && e.code == rc && strstr(e.msg, path);
        for (int k = 0; k < 2 && ok; k++)
            ok = !c->sub[k] || strstr(e.msg, c->sub[k]);
        if (!ok) {
            print_error("case %s: got %s '%s'\n", c->id, bp_error_name(rc), e.msg);
            fail();
        }
    }
    bp_error e;
    bp_imatrix *m = NULL;
    assert_int_equal(bp_imatrix_load(ROOT "/bad/missing.dat", &m, &e), BP_ENOTFOUND);
    assert_non_null(strstr(e.msg, "missing.dat"));

    /* Every truncation of a valid file fails cleanly (or, at the exact
     * boundary before the optional trailer, succeeds). */
    buf o;
    memset(&o, 0, sizeof o);
    put_i32(&o, 2);
    put_entry(&o, "blk.0.attn_q.weight", 2, 3);
    put_entry(&o, "blk.0.attn_k.weight", 2, 5);
    size_t entries_end = o.n;
    put_i32(&o, 7);
    put_str(&o, "data.txt");
    for (size_t n = 0; n <= o.n; n++) {
        write_bytes(ROOT "/bad/cut.dat", o.b, n);
        int rc = bp_imatrix_load(ROOT "/bad/cut.dat", &m, &e);
        int expect_ok = n == entries_end || n == entries_end + 4 || n == o.n;
        if (expect_ok != (rc == BP_OK)) {
            print_error("cut at %zu: %s\n", n, e.msg);
            fail();
        }
        bp_imatrix_destroy(&m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_mapping),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
