/* safetensors reader and streaming writer: round trips, writer misuse, and
 * robustness against truncated and corrupted files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "bitplan/half.h"
#include "bitplan/model.h"
#include "io_test_util.h"

#define ROOT BP_TEST_TMPDIR "/io_safetensors"

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Every dtype, a scalar, an empty tensor, metadata; data written in odd-sized
 * pieces that straddle tensor boundaries. */
static void test_writer_round_trip_all_dtypes(void **state)
{
    (void)state;
    fresh_dir(ROOT "/rt");
    const char *path = ROOT "/rt/all.safetensors";
    const st_spec specs[] = {
        {"t.f32", BP_DTYPE_F32, 2, {3, 5}},
        {"t.f16", BP_DTYPE_F16, 1, {7}},
        {"t.bf16", BP_DTYPE_BF16, 3, {2, 2, 3}},
        {"t.u8", BP_DTYPE_U8, 1, {13}},
        {"t.i32", BP_DTYPE_I32, 2, {2, 2}},
        {"t.f64", BP_DTYPE_F64, 1, {3}},
        {"t.scalar", BP_DTYPE_F32, 0, {0}},
        {"t.empty", BP_DTYPE_F16, 2, {0, 4}},
        {"a.last_declared_first_in_name_order", BP_DTYPE_U8, 1, {1}},
    };
    size_t ns = sizeof specs / sizeof specs[0];
    size_t total = 0;
    for (size_t i = 0; i < ns; i++)
        total += spec_bytes(&specs[i]);
    unsigned char *data = malloc(total);
    for (size_t i = 0; i < total; i++)
        data[i] = (unsigned char)(i * 31 + 7);

    bp_error e;
    bp_st_writer *w = NULL;
    assert_int_equal(bp_st_writer_new(path, &w, &e), BP_OK);
    assert_int_equal(bp_st_writer_metadata(w, "format", "pt", &e), BP_OK);
    assert_int_equal(bp_st_writer_metadata(w, "bitplan.note", "ünïcödé \"quoted\"", &e), BP_OK);
    for (size_t i = 0; i < ns; i++)
        assert_int_equal(bp_st_writer_declare(w, specs[i].name, specs[i].dtype, specs[i].ndim,
                                              specs[i].shape, &e),
                         BP_OK);
    /* No file under the final name until finish. */
    assert_false(file_exists_(path));
    for (size_t off = 0; off < total;) {
        size_t piece = off % 3 == 0 ? 5 : 11;
        if (piece > total - off)
            piece = total - off;
        assert_int_equal(bp_st_writer_write(w, data + off, piece, &e), BP_OK);
        off += piece;
    }
    assert_int_equal(bp_st_writer_finish(w, &e), BP_OK);
    bp_st_writer_destroy(&w);
    bp_st_writer_destroy(&w); /* twice is fine */
    assert_null(w);
    assert_true(file_exists_(path));
    assert_int_equal(count_files_with(ROOT "/rt", ".tmp-"), 0);

    /* Header layout: 8-byte aligned data, metadata first, compact JSON. */
    size_t flen;
    unsigned char *raw = read_all(path, &flen);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)raw[i] << (8 * i);
    assert_int_equal(hlen % 8, 0);
    assert_int_equal(flen, 8 + hlen + total);
    assert_memory_equal(raw + 8, "{\"__metadata__\":{\"format\":\"pt\"", 30);
    assert_memory_equal(raw + 8 + hlen, data, total);
    free(raw);

    bp_safetensors *f = NULL;
    assert_int_equal(bp_safetensors_open(path, &f, &e), BP_OK);
    assert_int_equal(bp_safetensors_count(f), ns);
    assert_string_equal(bp_safetensors_metadata(f, "format"), "pt");
    assert_string_equal(bp_safetensors_metadata(f, "bitplan.note"), "ünïcödé \"quoted\"");
    assert_null(bp_safetensors_metadata(f, "absent"));
    size_t off = 0;
    for (size_t i = 0; i < ns; i++) {
        /* Data-offset order equals declaration order here, except that empty
         * tensors share an offset with the next one; look up by name. */
        const bp_tensor_info *t = bp_safetensors_find(f, specs[i].name);
        assert_non_null(t);
        assert_string_equal(t->name, specs[i].name);
        assert_int_equal(t->dtype, specs[i].dtype);
        assert_int_equal(t->ndim, specs[i].ndim);
        for (int d = 0; d < t->ndim; d++)
            assert_int_equal(t->shape[d], specs[i].shape[d]);
        assert_int_equal(t->nbytes, spec_bytes(&specs[i]));
        assert_string_equal(t->file, path);
        if (t->nbytes)
            assert_memory_equal(t->data, data + off, t->nbytes);
        off += t->nbytes;
    }
    /* Offsets are non-decreasing in tensor order. */
    for (size_t i = 1; i < ns; i++)
        assert_true((const char *)bp_safetensors_tensor(f, i)->data >=
                    (const char *)bp_safetensors_tensor(f, i - 1)->data);
    assert_null(bp_safetensors_tensor(f, ns));
    assert_null(bp_safetensors_find(f, "nope"));
    const bp_tensor_info *sc = bp_safetensors_find(f, "t.scalar");
    assert_int_equal(sc->numel, 1);
    assert_int_equal(bp_safetensors_find(f, "t.empty")->numel, 0);
    bp_safetensors_destroy(&f);
    bp_safetensors_destroy(&f);
    assert_null(f);
    free(data);
}

static void test_writer_misuse(void **state)
{
    (void)state;
    fresh_dir(ROOT "/misuse");
    const char *path = ROOT "/misuse/x.safetensors";
    int64_t shape[2] = {2, 3};
    float buf[6] = {0};
    bp_error e;
    bp_st_writer *w = NULL;

    /* Too few bytes: finish fails and names the incomplete tensor; nothing
     * is left behind after destroy. */
    assert_int_equal(bp_st_writer_new(path, &w, &e), BP_OK);
    assert_int_equal(bp_st_writer_declare(w, "a", BP_DTYPE_F32, 2, shape, &e), BP_OK);
    assert_int_equal(bp_st_writer_declare(w, "b", BP_DTYPE_F32, 2, shape, &e), BP_OK);
    assert_int_equal(bp_st_writer_declare(w, "a", BP_DTYPE_F32, 2, shape, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "declared twice"));
    assert_int_equal(bp_st_writer_declare(w, "__metadata__", BP_DTYPE_F32, 2, shape, &e),
                     BP_EINVAL);
    assert_int_equal(bp_st_writer_declare(w, "c", BP_DTYPE_UNKNOWN, 2, shape, &e), BP_EINVAL);
    assert_int_equal(bp_st_writer_declare(w, "c", BP_DTYPE_F32, 9, shape, &e), BP_EINVAL);
    int64_t neg[1] = {-2};
    assert_int_equal(bp_st_writer_declare(w, "c", BP_DTYPE_F32, 1, neg, &e), BP_EINVAL);
    assert_int_equal(bp_st_writer_write(w, buf, sizeof buf, &e), BP_OK);
    assert_int_equal(bp_st_writer_write(w, buf, 8, &e), BP_OK);
    assert_int_equal(bp_st_writer_declare(w, "late", BP_DTYPE_F32, 2, shape, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "after data writing started"));
    assert_int_equal(bp_st_writer_metadata(w, "k", "v", &e), BP_EINVAL);
    assert_int_equal(bp_st_writer_finish(w, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "32 of 48"));
    assert_non_null(strstr(e.msg, "tensor 'b'"));
    /* Too many bytes. */
    assert_int_equal(bp_st_writer_write(w, buf, 20, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "past the 48 bytes declared"));
    bp_st_writer_destroy(&w);
    assert_false(file_exists_(path));
    assert_int_equal(count_files_with(ROOT "/misuse", ".tmp-"), 0);

    /* Finished writers refuse more work. */
    assert_int_equal(bp_st_writer_new(path, &w, &e), BP_OK);
    assert_int_equal(bp_st_writer_finish(w, &e), BP_OK);
    assert_int_equal(bp_st_writer_finish(w, &e), BP_EINVAL);
    assert_int_equal(bp_st_writer_write(w, buf, 4, &e), BP_EINVAL);
    bp_st_writer_destroy(&w);
    /* An empty file with no tensors is valid. */
    bp_safetensors *f = NULL;
    assert_int_equal(bp_safetensors_open(path, &f, &e), BP_OK);
    assert_int_equal(bp_safetensors_count(f), 0);
    bp_safetensors_destroy(&f);

    /* Unwritable location. */
    assert_int_equal(bp_st_writer_new(ROOT "/misuse/no/such/dir/x.safetensors", &w, &e),
                     BP_EIO);
    assert_null(w);
    assert_int_equal(bp_st_writer_new(NULL, &w, &e), BP_EINVAL);
    assert_int_equal(bp_st_writer_write(NULL, buf, 4, &e), BP_EINVAL);
    bp_st_writer_destroy(NULL);
}

/* A valid file cut at every length must be rejected (never crash); corrupt
 * bytes in the header must never crash and, when accepted, must describe
 * tensors inside the file. */
static void test_truncation_and_corruption(void **state)
{
    (void)state;
    fresh_dir(ROOT "/fuzz");
    const char *good = ROOT "/fuzz/good.safetensors";
    const st_spec specs[] = {
        {"model.w", BP_DTYPE_BF16, 2, {4, 4}},
        {"model.b", BP_DTYPE_F32, 1, {4}},
        {"model.h", BP_DTYPE_F16, 1, {3}},
    };
    uint16_t w16[16];
    float b32[4] = {1, 2, 3, 4};
    uint16_t h16[3] = {0x3c00, 0x4000, 0xc000};
    for (int i = 0; i < 16; i++)
        w16[i] = bp_f32_to_bf16((float)i / 4);
    const void *data[] = {w16, b32, h16};
    bp_error e;
    assert_int_equal(write_st_specs(good, specs, 3, data, &e), BP_OK);
    size_t len;
    unsigned char *raw = read_all(good, &len);
    const char *cut = ROOT "/fuzz/cut.safetensors";
    for (size_t n = 0; n < len; n++) {
        write_bytes(cut, raw, n);
        bp_safetensors *f = NULL;
        int rc = bp_safetensors_open(cut, &f, &e);
        if (rc != BP_EFORMAT) {
            print_error("length %zu of %zu: rc %d (%s)\n", n, len, rc, e.msg);
            fail();
        }
        assert_null(f);
    }

    /* Deterministic corruption of header bytes. */
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)raw[i] << (8 * i);
    static const unsigned char subs[] = {0x00, '"', '{', '}', '[', ']', ',', ':', '-', '9',
                                         '0', 'e', '.', ' ', 0xff, 0x80};
    unsigned char *mut = malloc(len);
    float *tmp = malloc(64 * sizeof *tmp);
    int accepted = 0;
    for (size_t pos = 0; pos < 8 + hlen; pos++) {
        for (size_t s = 0; s < sizeof subs; s++) {
            memcpy(mut, raw, len);
            mut[pos] = subs[s];
            write_bytes(cut, mut, len);
            bp_safetensors *f = NULL;
            int rc = bp_safetensors_open(cut, &f, &e);
            if (rc != BP_OK) {
                assert_null(f);
                assert_true(rc == BP_EFORMAT || rc == BP_EUNSUPPORTED);
                assert_non_null(strstr(e.msg, "cut.safetensors"));
                continue;
            }
            accepted++;
            for (size_t i = 0; i < bp_safetensors_count(f); i++) {
                const bp_tensor_info *t = bp_safetensors_tensor(f, i);
                /* Touch every byte: out-of-range would fault under ASan
                 * (or past the mapping). */
                const unsigned char *p = t->data;
                unsigned sum = 0;
                for (uint64_t k = 0; k < t->nbytes; k++)
                    sum += p[k];
                (void)sum;
                if (t->numel <= 64 && bp_tensor_rows(t) > 0)
                    (void)bp_tensor_rows_f32(t, 0, bp_tensor_rows(t), tmp, NULL);
            }
            bp_safetensors_destroy(&f);
        }
    }
    /* Some mutations (spaces, same digits) keep the file valid. */
    assert_true(accepted > 0);
    free(tmp);
    free(mut);
    free(raw);
}

/* Tensors stay in data-offset order whatever the header order is. */
static void test_offset_order_and_gaps(void **state)
{
    (void)state;
    fresh_dir(ROOT "/order");
    const char *path = ROOT "/order/o.safetensors";
    write_st_raw(path,
                 "{\"z\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,12]},"
                 "\"y\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                 "\"e\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,2]},"
                 "\"__metadata__\":{\"format\":\"pt\"}}",
                 UINT64_MAX, 16);
    bp_error e;
    bp_safetensors *f = NULL;
    assert_int_equal(bp_safetensors_open(path, &f, &e), BP_OK);
    assert_int_equal(bp_safetensors_count(f), 3);
    assert_string_equal(bp_safetensors_tensor(f, 0)->name, "y");
    assert_string_equal(bp_safetensors_tensor(f, 1)->name, "e");
    assert_string_equal(bp_safetensors_tensor(f, 2)->name, "z");
    assert_int_equal(((const unsigned char *)bp_safetensors_find(f, "z")->data)[0], 8);
    bp_safetensors_destroy(&f);
}

static void test_dtype_helpers(void **state)
{
    (void)state;
    const bp_dtype all[] = {BP_DTYPE_F32, BP_DTYPE_F16, BP_DTYPE_BF16,
                            BP_DTYPE_U8,  BP_DTYPE_I32, BP_DTYPE_F64};
    const size_t sizes[] = {4, 2, 2, 1, 4, 8};
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(bp_dtype_size(all[i]), sizes[i]);
        assert_int_equal(bp_dtype_from_name(bp_dtype_name(all[i])), all[i]);
    }
    assert_int_equal(bp_dtype_size(BP_DTYPE_UNKNOWN), 0);
    assert_int_equal(bp_dtype_from_name("I8"), BP_DTYPE_UNKNOWN);
    assert_int_equal(bp_dtype_from_name("f32"), BP_DTYPE_UNKNOWN);
    assert_int_equal(bp_dtype_from_name(NULL), BP_DTYPE_UNKNOWN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writer_round_trip_all_dtypes),
        cmocka_unit_test(test_writer_misuse),
        cmocka_unit_test(test_truncation_and_corruption),
        cmocka_unit_test(test_offset_order_and_gaps),
        cmocka_unit_test(test_dtype_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
