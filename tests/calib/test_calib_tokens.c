/* Token stream loaders: binary, JSON, byte text; malformed inputs; hashes;
 * splitting into sequences. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/tokens.h"

static char *tmp_path(const char *name)
{
    static char buf[4][1024];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 1024, "%s/calib_tokens_%s", BP_TEST_TMPDIR, name);
    return p;
}

static const char *write_file(const char *name, const void *data, size_t n)
{
    char *p = tmp_path(name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    if (n)
        assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
    return p;
}

static void test_tokens_binary(void **state)
{
    (void)state;
    const unsigned char le[12] = {1, 0, 0, 0, 0x39, 0x30, 0, 0, 0xff, 0xff, 0xff, 0xff};
    const char *p = write_file("ok.bin", le, sizeof le);
    bp_tokens *t = NULL;
    bp_error err;
    assert_int_equal(bp_tokens_load_bin(p, &t, &err), BP_OK);
    assert_int_equal(bp_tokens_count(t), 3);
    assert_int_equal(bp_tokens_data(t)[0], 1);
    assert_int_equal(bp_tokens_data(t)[1], 12345);
    assert_int_equal(bp_tokens_data(t)[2], 4294967295u);
    assert_string_equal(bp_tokens_source(t), p);
    assert_int_equal(strncmp(bp_tokens_hash(t), "blake2b256:", 11), 0);
    assert_int_equal(strlen(bp_tokens_hash(t)), BP_HASH_HEX_LEN);
    /* Id 4294967295 is out of any vocabulary: named by position. */
    assert_int_equal(bp_tokens_check(t, 50000, 0, 3, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "position 2"));
    assert_non_null(strstr(err.msg, p));
    assert_int_equal(bp_tokens_check(t, 50000, 0, 2, &err), BP_OK);
    assert_int_equal(bp_tokens_check(t, 50000, 2, 2, &err), BP_EINVAL);
    bp_tokens_destroy(&t);
    bp_tokens_destroy(&t);

    p = write_file("bad.bin", le, 7);
    assert_int_equal(bp_tokens_load_bin(p, &t, &err), BP_EFORMAT);
    assert_null(t);
    assert_non_null(strstr(err.msg, "not a multiple of 4"));
    assert_non_null(strstr(err.msg, "bad.bin"));
    p = write_file("empty.bin", le, 0);
    assert_int_equal(bp_tokens_load_bin(p, &t, &err), BP_EFORMAT);
    assert_non_null(strstr(err.msg, "empty"));
    assert_int_equal(bp_tokens_load_bin(tmp_path("missing.bin"), &t, &err), BP_ENOTFOUND);
    assert_non_null(strstr(err.msg, "missing.bin"));
}

static void test_tokens_json(void **state)
{
    (void)state;
    bp_tokens *t = NULL, *u = NULL;
    bp_error err;
    const char *ok = " [1, 12345, 4294967295]\n";
    const char *p = write_file("ok.json", ok, strlen(ok));
    assert_int_equal(bp_tokens_load_json(p, &t, &err), BP_OK);
    assert_int_equal(bp_tokens_count(t), 3);
    assert_int_equal(bp_tokens_data(t)[1], 12345);
    /* Same ids from the binary form give the same hash. */
    const unsigned char le[12] = {1, 0, 0, 0, 0x39, 0x30, 0, 0, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(bp_tokens_load_bin(write_file("same.bin", le, 12), &u, &err), BP_OK);
    assert_string_equal(bp_tokens_hash(t), bp_tokens_hash(u));
    bp_tokens_destroy(&u);
    /* A different stream hashes differently. */
    uint32_t other[3] = {1, 12345, 7};
    assert_int_equal(bp_tokens_from_array(other, 3, NULL, &u, &err), BP_OK);
    assert_string_not_equal(bp_tokens_hash(t), bp_tokens_hash(u));
    assert_string_equal(bp_tokens_source(u), "<memory>");
    bp_tokens_destroy(&u);
    bp_tokens_destroy(&t);

    static const struct {
        const char *text, *needle;
    } bad[] = {
        {"[1, 2, -3]", "element 2"},
        {"[1, 2.5]", "element 1"},
        {"[1, \"x\"]", "element 1"},
        {"[4294967296]", "element 0"},
        {"{\"ids\": [1]}", "array"},
        {"[]", "empty"},
        {"[1, 2", "invalid JSON"},
        {"", "invalid JSON"},
        {"[99999999999999999999999]", "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = write_file("bad.json", bad[i].text, strlen(bad[i].text));
        assert_int_equal(bp_tokens_load_json(p, &t, &err), BP_EFORMAT);
        assert_null(t);
        if (!strstr(err.msg, bad[i].needle))
            fail_msg("'%s': message '%s' lacks '%s'", bad[i].text, err.msg, bad[i].needle);
        assert_non_null(strstr(err.msg, "bad.json"));
    }
}

static void test_tokens_text(void **state)
{
    (void)state;
    bp_tokens *t = NULL;
    bp_error err;
    const unsigned char text[5] = {'H', 'i', '\n', 0xff, 0};
    const char *p = write_file("t.txt", text, 5);
    assert_int_equal(bp_tokens_load_text(p, 256, &t, &err), BP_OK);
    assert_int_equal(bp_tokens_count(t), 5);
    assert_int_equal(bp_tokens_data(t)[0], 'H');
    assert_int_equal(bp_tokens_data(t)[3], 255);
    assert_int_equal(bp_tokens_data(t)[4], 0);
    bp_tokens_destroy(&t);
    assert_int_equal(bp_tokens_load_text(p, 200, &t, &err), BP_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "vocab_size is 200"));
    assert_int_equal(bp_tokens_load_text(write_file("e.txt", text, 0), 256, &t, &err),
                     BP_EFORMAT);
    assert_int_equal(bp_tokens_load_text(BP_TEST_TMPDIR, 256, &t, &err), BP_EIO);
}

static void test_tokens_split(void **state)
{
    (void)state;
    uint32_t ids[1000];
    for (int i = 0; i < 1000; i++)
        ids[i] = (uint32_t)i;
    bp_tokens *t = NULL;
    bp_error err;
    int64_t n;
    assert_int_equal(bp_tokens_from_array(ids, 1000, "ids", &t, &err), BP_OK);
    assert_int_equal(bp_tokens_split(t, 128, 0, &n, &err), BP_OK);
    assert_int_equal(n, 7);
    assert_int_equal(bp_tokens_split(t, 128, 3, &n, &err), BP_OK);
    assert_int_equal(n, 3);
    assert_int_equal(bp_tokens_split(t, 128, 8, &n, &err), BP_EINVAL);
    assert_non_null(strstr(err.msg, "hold only 7"));
    assert_int_equal(bp_tokens_split(t, 2000, 0, &n, &err), BP_EINVAL);
    assert_int_equal(bp_tokens_split(t, 0, 0, &n, &err), BP_EINVAL);
    bp_tokens_destroy(&t);
    assert_int_equal(bp_tokens_from_array(ids, 0, "none", &t, &err), BP_EINVAL);
    assert_null(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens_binary),
        cmocka_unit_test(test_tokens_json),
        cmocka_unit_test(test_tokens_text),
        cmocka_unit_test(test_tokens_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
