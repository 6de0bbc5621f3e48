/* bitplan coord: the content-addressed result cache (see include/bitplan/cache.h). */
#include "bitplan/cache.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitplan/hash.h"
#include "bitplan/wire_check.h"
#include "coord_internal.h"

#define MAGIC "BPCACHE1"
#define DIGEST 32

struct bp_cache {
    char dir[PATH_MAX];
};

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int bp_cache_hash_ok(const char *hash)
{
    size_t n = hash ? strlen(hash) : 0;
    if (n == 0 || n > BP_CACHE_MAX_HASH || hash[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = hash[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-'))
            return 0;
    }
    const char *colon = strrchr(hash, ':');
    const char *hex = colon ? colon + 1 : hash;
    return is_hex(hex[0]) && hex[0] && is_hex(hex[1]);
}

static int mkdir_p(const char *path)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return -1;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

int bp_cache_open(const char *dir, bp_cache **out, bp_error *err)
{
    *out = NULL;
    if (!dir || strlen(dir) + 2 * BP_CACHE_MAX_HASH + 32 >= PATH_MAX)
        return bp_error_set(err, BP_EINVAL, "cache: bad directory");
    if (mkdir_p(dir) != 0)
        return bp_error_set(err, BP_EIO, "%s: %s", dir, strerror(errno));
    bp_cache *c = calloc(1, sizeof *c);
    if (!c)
        return bp_error_set(err, BP_ENOMEM, "cache: out of memory");
    snprintf(c->dir, sizeof c->dir, "%s", dir);
    *out = c;
    return BP_OK;
}

void bp_cache_close(bp_cache **p)
{
    if (!p || !*p)
        return;
    free(*p);
    *p = NULL;
}

static void shard_dir(const bp_cache *c, const char *hash, char *out, size_t cap)
{
    const char *colon = strrchr(hash, ':');
    const char *hex = colon ? colon + 1 : hash;
    size_t n = strlen(c->dir);
    if (n + 4 > cap)
        n = cap - 4; /* cannot happen: bp_cache_open bounds dir */
    memcpy(out, c->dir, n);
    out[n] = '/';
    out[n + 1] = hex[0];
    out[n + 2] = hex[1];
    out[n + 3] = '\0';
}

int bp_cache_path(const bp_cache *c, const char *hash, char *out, size_t cap)
{
    if (!bp_cache_hash_ok(hash))
        return BP_EINVAL;
    char dir[PATH_MAX];
    shard_dir(c, hash, dir, sizeof dir);
    char name[BP_CACHE_MAX_HASH + 1];
    snprintf(name, sizeof name, "%s", hash);
    for (char *p = name; *p; p++)
        if (*p == ':')
            *p = '-';
    if (snprintf(out, cap, "%s/%s", dir, name) >= (int)cap)
        return BP_EINVAL;
    return BP_OK;
}

static void pack_cstr(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int bp_cache_put(bp_cache *c, const char *hash, const void *result_mp, size_t result_len,
                 const bp_bin_view *bins, size_t n_bins, bp_error *err)
{
    char path[PATH_MAX], tmp[PATH_MAX + 32], dir[PATH_MAX];
    if (bp_cache_path(c, hash, path, sizeof path) != BP_OK)
        return bp_error_set(err, BP_EINVAL, "cache: invalid hash");
    if (n_bins > BP_PROTO_MAX_BIN || (n_bins && !bins))
        return bp_error_set(err, BP_EINVAL, "cache: too many binary buffers");
    if (result_len && bp_wire_check(result_mp, result_len, NULL, NULL) != BP_OK)
        return bp_error_set(err, BP_EINVAL, "cache: result is not one msgpack object");
    shard_dir(c, hash, dir, sizeof dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return bp_error_set(err, BP_EIO, "%s: %s", dir, strerror(errno));

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    pack_cstr(&pk, "hash", 4);
    pack_cstr(&pk, hash, strlen(hash));
    pack_cstr(&pk, "result", 6);
    if (result_len)
        msgpack_sbuffer_write(&sb, result_mp, result_len);
    else
        msgpack_pack_map(&pk, 0);
    pack_cstr(&pk, "bin", 3);
    msgpack_pack_array(&pk, n_bins);
    for (size_t i = 0; i < n_bins; i++) {
        const char *dt = bp_wire_dtype_name(bins[i].dtype);
        msgpack_pack_map(&pk, 3);
        pack_cstr(&pk, "name", 4);
        pack_cstr(&pk, bins[i].name.ptr ? bins[i].name.ptr : "", bins[i].name.len);
        pack_cstr(&pk, "dtype", 5);
        pack_cstr(&pk, dt, strlen(dt));
        pack_cstr(&pk, "count", 5);
        msgpack_pack_uint64(&pk, bins[i].count);
    }
    int rc = BP_OK, fd = -1;
    if (!sb.data) {
        rc = bp_error_set(err, BP_ENOMEM, "cache: out of memory");
        goto out;
    }
    unsigned char head[16];
    memcpy(head, MAGIC, 8);
    for (int i = 0; i < 8; i++)
        head[8 + i] = (unsigned char)((uint64_t)sb.size >> (8 * i));
    bp_hash h;
    bp_hash_init(&h);
    bp_hash_update(&h, head, sizeof head);
    bp_hash_update(&h, sb.data, sb.size);
    for (size_t i = 0; i < n_bins; i++)
        bp_hash_update(&h, bins[i].data, bins[i].size);
    unsigned char digest[BP_HASH_BYTES];
    bp_hash_final(&h, digest);

    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = bp_error_set(err, BP_EIO, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    int bad = write_all(fd, head, sizeof head) || write_all(fd, sb.data, sb.size);
    for (size_t i = 0; i < n_bins && !bad; i++)
        bad = bins[i].size && write_all(fd, bins[i].data, bins[i].size);
    bad = bad || write_all(fd, digest, sizeof digest) || fsync(fd) != 0;
    bad = close(fd) != 0 || bad;
    fd = -1;
    if (bad || rename(tmp, path) != 0) {
        rc = bp_error_set(err, BP_EIO, "%s: %s", tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    (void)bp__fsync_dir(dir);
out:
    if (fd >= 0)
        close(fd);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

void bp_cache_entry_clear(bp_cache_entry *e)
{
    if (!e)
        return;
    if (e->buf)
        msgpack_unpacked_destroy(&e->unpacked);
    free(e->buf);
    memset(e, 0, sizeof *e);
}

static int parse_dtype(bp_str s, bp_wire_dtype *d)
{
    for (int t = BP_WIRE_F32; t <= BP_WIRE_I64; t++) {
        const char *n = bp_wire_dtype_name((bp_wire_dtype)t);
        if (strlen(n) == s.len && !memcmp(n, s.ptr, s.len)) {
            *d = (bp_wire_dtype)t;
            return 0;
        }
    }
    return -1;
}

/* Validate buf as an entry for hash; fill e's views. Returns a static
 * reason on failure, NULL on success. */
static const char *parse_entry(bp_cache_entry *e, const char *hash)
{
    const unsigned char *b = (const unsigned char *)e->buf;
    size_t len = e->len;
    if (len < 16 + DIGEST || memcmp(b, MAGIC, 8))
        return "bad magic or short file";
    bp_hash h;
    bp_hash_init(&h);
    bp_hash_update(&h, b, len - DIGEST);
    unsigned char digest[BP_HASH_BYTES];
    bp_hash_final(&h, digest);
    if (memcmp(digest, b + len - DIGEST, DIGEST))
        return "checksum mismatch";
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)b[8 + i] << (8 * i);
    if (hl > len - 16 - DIGEST)
        return "header length out of range";
    if (bp_wire_check(b + 16, (size_t)hl, NULL, NULL) != BP_OK)
        return "malformed header";
    size_t off = 0;
    msgpack_unpacked_init(&e->unpacked);
    if (msgpack_unpack_next(&e->unpacked, e->buf + 16, (size_t)hl, &off) !=
            MSGPACK_UNPACK_SUCCESS || off != hl)
        return "malformed header";
    const msgpack_object *m = &e->unpacked.data;
    bp_str hs;
    const msgpack_object *items = NULL;
    size_t n = 0;
    if (bp_mp_get_str(m, "hash", &hs, NULL) || hs.len != strlen(hash) ||
        memcmp(hs.ptr, hash, hs.len))
        return "hash mismatch";
    if (bp_mp_get_map(m, "result", &e->result, NULL))
        return "no result map";
    if (bp_mp_get_array(m, "bin", &items, &n, NULL) || n > BP_PROTO_MAX_BIN)
        return "bad bin list";
    size_t at = 16 + (size_t)hl, end = len - DIGEST;
    for (size_t i = 0; i < n; i++) {
        bp_str name, dt;
        uint64_t count;
        bp_bin_view *v = &e->bins[i];
        if (bp_mp_get_str(&items[i], "name", &name, NULL) ||
            bp_mp_get_str(&items[i], "dtype", &dt, NULL) ||
            bp_mp_get_u64(&items[i], "count", &count, NULL) || parse_dtype(dt, &v->dtype))
            return "bad bin declaration";
        size_t es = bp_wire_dtype_size(v->dtype);
        if (count > (end - at) / es)
            return "bin sizes exceed the file";
        v->name = name;
        v->count = count;
        v->size = (size_t)count * es;
        v->data = e->buf + at;
        at += v->size;
    }
    if (at != end)
        return "trailing bytes";
    e->n_bins = n;
    return NULL;
}

int bp_cache_get(bp_cache *c, const char *hash, bp_cache_entry *e, bp_error *err)
{
    char path[PATH_MAX];
    if (bp_cache_path(c, hash, path, sizeof path) != BP_OK)
        return bp_error_set(err, BP_EINVAL, "cache: invalid hash");
    memset(e, 0, sizeof *e);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return bp_error_set(err, BP_ENOTFOUND, "cache: no entry for %s", hash);
    struct stat st;
    const char *why = NULL;
    if (fstat(fd, &st) != 0 || st.st_size < 0 || (uint64_t)st.st_size > BP_CACHE_MAX_ENTRY) {
        why = "unreadable or too large";
    } else {
        e->len = (size_t)st.st_size;
        e->buf = malloc(e->len ? e->len : 1);
        if (!e->buf) {
            close(fd);
            return bp_error_set(err, BP_ENOMEM, "cache: out of memory");
        }
        size_t got = 0;
        while (got < e->len) {
            ssize_t r = read(fd, e->buf + got, e->len - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        why = got != e->len ? "short read" : parse_entry(e, hash);
    }
    close(fd);
    if (why) {
        /* parse_entry initialised the unpacked zone only past the checksum;
         * clear() handles both cases because it keys on buf. */
        if (e->buf && e->unpacked.zone == NULL)
            msgpack_unpacked_init(&e->unpacked);
        bp_cache_entry_clear(e);
        unlink(path);
        return bp_error_set(err, BP_ENOTFOUND, "cache: %s: corrupt entry ignored (%s)", path,
                            why);
    }
    return BP_OK;
}
