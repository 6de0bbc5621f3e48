/* Dtype names and sizes, plus small helpers shared by the io files. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io_internal.h"

static const struct {
    bp_dtype dtype;
    const char *name;
    size_t size; /* bytes */
} dtypes[] = {
    {BP_DTYPE_F32, "F32", 4}, {BP_DTYPE_F16, "F16", 2}, {BP_DTYPE_BF16, "BF16", 2},
    {BP_DTYPE_U8, "U8", 1},   {BP_DTYPE_I32, "I32", 4}, {BP_DTYPE_F64, "F64", 8},
};
#define N_DTYPES (sizeof dtypes / sizeof dtypes[0])

const char *bp_dtype_name(bp_dtype d)
{
    for (size_t i = 0; i < N_DTYPES; i++)
        if (dtypes[i].dtype == d)
            return dtypes[i].name;
    return "UNKNOWN";
}

size_t bp_dtype_size(bp_dtype d)
{
    for (size_t i = 0; i < N_DTYPES; i++)
        if (dtypes[i].dtype == d)
            return dtypes[i].size;
    return 0;
}

bp_dtype bp_dtype_from_name(const char *name)
{
    if (!name)
        return BP_DTYPE_UNKNOWN;
    for (size_t i = 0; i < N_DTYPES; i++)
        if (strcmp(dtypes[i].name, name) == 0)
            return dtypes[i].dtype;
    return BP_DTYPE_UNKNOWN;
}

int bp__st_dtype_is_known(const char *name)
{
    /* The dtype strings of the safetensors specification. */
    static const char *const known[] = {
        "BOOL", "U8",  "I8",  "I16", "U16", "F16", "BF16", "I32", "U32", "F32",
        "F64",  "I64", "U64", "C64", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F6_E2M3",
        "F6_E3M2", "F4",
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(known[i], name) == 0)
            return 1;
    return 0;
}

int bp__shape_numel(int ndim, const int64_t *shape, size_t esize, uint64_t *numel,
                    uint64_t *nbytes)
{
    uint64_t n = 1;
    int zero = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return BP_EFORMAT;
        if (shape[i] == 0)
            zero = 1;
    }
    /* A zero dimension makes the product 0 even if the others would
     * overflow, so check for it before multiplying. */
    if (zero) {
        n = 0;
    } else {
        for (int i = 0; i < ndim; i++)
            if (__builtin_mul_overflow(n, (uint64_t)shape[i], &n))
                return BP_EFORMAT;
    }
    uint64_t b;
    if (__builtin_mul_overflow(n, (uint64_t)esize, &b))
        return BP_EFORMAT;
    *numel = n;
    *nbytes = b;
    return BP_OK;
}

char *bp__path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a > 0 && dir[a - 1] != '/')
        p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

int bp__read_file(const char *path, size_t max_bytes, char **out, size_t *len,
                  bp_error *err)
{
    *out = NULL;
    if (len)
        *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return bp_error_set(err, BP_ENOTFOUND, "%s: not found", path);
        return bp_error_set(err, BP_EIO, "%s: cannot open: %s", path, strerror(errno));
    }
    int rc = BP_OK;
    char *buf = NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = bp_error_set(err, BP_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: not a regular file", path);
        goto out;
    }
    if ((uint64_t)st.st_size > max_bytes) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: file is %lld bytes, more than the %zu allowed",
                          path, (long long)st.st_size, max_bytes);
        goto out;
    }
    size_t size = (size_t)st.st_size;
    buf = malloc(size + 1);
    if (!buf) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory reading %zu bytes", path, size);
        goto out;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            rc = bp_error_set(err, BP_EIO, "%s: read failed: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break; /* file shrank while reading: use what is there */
        got += (size_t)r;
    }
    buf[got] = '\0';
    *out = buf;
    buf = NULL;
    if (len)
        *len = got;
out:
    free(buf);
    close(fd);
    return rc;
}
