/* Result cache: atomic write/read with binary buffers, corruption detection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitplan/cache.h"
#include "bitplan/hash.h"

#define HASH "blake2b256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static bp_cache *open_cache(const char *name)
{
    char dir[1024], cmd[1200];
    snprintf(dir, sizeof dir, "%s/%s", BP_TEST_TMPDIR, name);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    bp_cache *c = NULL;
    assert_int_equal(bp_cache_open(dir, &c, NULL), BP_OK);
    return c;
}

static void put_sample(bp_cache *c, const char *hash)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "x", 1);
    msgpack_pack_uint64(&pk, 42);
    double v[3] = {1.5, -2.0, 3.25};
    unsigned char u[5] = {1, 2, 3, 4, 5};
    bp_bin_view bins[2] = {{bp_str_c("vals"), BP_WIRE_F64, 3, v, sizeof v},
                           {bp_str_c("codes"), BP_WIRE_U8, 5, u, sizeof u}};
    assert_int_equal(bp_cache_put(c, hash, sb.data, sb.size, bins, 2, NULL), BP_OK);
    msgpack_sbuffer_destroy(&sb);
}

static void check_sample(bp_cache *c, const char *hash)
{
    bp_cache_entry e;
    memset(&e, 0, sizeof e);
    assert_int_equal(bp_cache_get(c, hash, &e, NULL), BP_OK);
    uint64_t x = 0;
    assert_int_equal(bp_mp_get_u64(e.result, "x", &x, NULL), BP_OK);
    assert_int_equal(x, 42);
    assert_int_equal(e.n_bins, 2);
    double v[3];
    assert_int_equal(bp_proto_bin_copy(&e.bins[0], BP_WIRE_F64, v, sizeof v, NULL), BP_OK);
    assert_true(v[0] == 1.5 && v[1] == -2.0 && v[2] == 3.25);
    assert_int_equal(e.bins[1].size, 5);
    assert_memory_equal(e.bins[1].data, "\1\2\3\4\5", 5);
    assert_int_equal(e.bins[1].name.len, 5);
    bp_cache_entry_clear(&e);
    bp_cache_entry_clear(&e);
}

static void test_cache_roundtrip(void **state)
{
    (void)state;
    bp_cache *c = open_cache("cache-rt");
    bp_cache_entry e;
    memset(&e, 0, sizeof e);
    assert_int_equal(bp_cache_get(c, HASH, &e, NULL), BP_ENOTFOUND);
    put_sample(c, HASH);
    check_sample(c, HASH);
    /* overwrite is atomic and leaves no temp files behind */
    put_sample(c, HASH);
    check_sample(c, HASH);
    char path[2048];
    assert_int_equal(bp_cache_path(c, HASH, path, sizeof path), BP_OK);
    assert_non_null(strstr(path, "/01/blake2b256-0123"));
    char *slash = strrchr(path, '/');
    *slash = '\0';
    DIR *d = opendir(path);
    int files = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') {
            files++;
            assert_null(strstr(de->d_name, ".tmp"));
        }
    closedir(d);
    assert_int_equal(files, 1);
    /* empty result and no bins */
    assert_int_equal(bp_cache_put(c, "blake2b256:ff00", NULL, 0, NULL, 0, NULL), BP_OK);
    assert_int_equal(bp_cache_get(c, "blake2b256:ff00", &e, NULL), BP_OK);
    assert_int_equal(e.result->via.map.size, 0);
    bp_cache_entry_clear(&e);
    bp_cache_close(&c);
    bp_cache_close(&c);
}

static void test_cache_bad_hashes(void **state)
{
    (void)state;
    bp_cache *c = open_cache("cache-bad");
    assert_false(bp_cache_hash_ok("../../etc/passwd"));
    assert_false(bp_cache_hash_ok(".hidden"));
    assert_false(bp_cache_hash_ok("a/b"));
    assert_false(bp_cache_hash_ok(""));
    assert_false(bp_cache_hash_ok("blake2b256:zz"));
    assert_true(bp_cache_hash_ok(HASH));
    assert_int_equal(bp_cache_put(c, "../x", NULL, 0, NULL, 0, NULL), BP_EINVAL);
    /* result must be exactly one msgpack object */
    assert_int_equal(bp_cache_put(c, HASH, "\x81\xa1x", 3, NULL, 0, NULL), BP_EINVAL);
    bp_cache_close(&c);
}

static void test_cache_corruption_detected(void **state)
{
    (void)state;
    bp_cache *c = open_cache("cache-corrupt");
    char path[2048];
    assert_int_equal(bp_cache_path(c, HASH, path, sizeof path), BP_OK);
    put_sample(c, HASH);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    size_t size = (size_t)st.st_size;
    unsigned char *orig = malloc(size);
    FILE *fp = fopen(path, "rb");
    assert_int_equal(fread(orig, 1, size, fp), size);
    fclose(fp);
    /* flip each byte in turn (every 7th to keep it quick): always rejected,
     * and the corrupt file is removed so the task is recomputed */
    for (size_t at = 0; at < size; at += 7) {
        orig[at] ^= 0x21;
        fp = fopen(path, "wb");
        fwrite(orig, 1, size, fp);
        fclose(fp);
        orig[at] ^= 0x21;
        bp_cache_entry e;
        memset(&e, 0, sizeof e);
        bp_error err;
        assert_int_equal(bp_cache_get(c, HASH, &e, &err), BP_ENOTFOUND);
        assert_non_null(strstr(err.msg, "corrupt"));
        assert_int_not_equal(access(path, F_OK), 0);
    }
    /* truncated file */
    fp = fopen(path, "wb");
    fwrite(orig, 1, size / 2, fp);
    fclose(fp);
    bp_cache_entry e;
    memset(&e, 0, sizeof e);
    assert_int_equal(bp_cache_get(c, HASH, &e, NULL), BP_ENOTFOUND);
    /* a valid entry stored under another hash's name is rejected */
    const char *other = "blake2b256:01aa";
    put_sample(c, other);
    char opath[2048];
    bp_cache_path(c, other, opath, sizeof opath);
    assert_int_equal(rename(opath, path), 0);
    assert_int_equal(bp_cache_get(c, HASH, &e, NULL), BP_ENOTFOUND);
    /* and a good write afterwards works */
    put_sample(c, HASH);
    check_sample(c, HASH);
    free(orig);
    bp_cache_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_roundtrip),
        cmocka_unit_test(test_cache_bad_hashes),
        cmocka_unit_test(test_cache_corruption_detected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
