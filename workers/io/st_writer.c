/* Streaming safetensors writer.
 *
 * Tensors are declared first (so the header, which holds every offset, is
 * known), then their bytes are streamed in declaration order. Data goes to
 * "<path>.tmp-XXXXXX" and is renamed into place only by a successful
 * finish, so readers never see a half-written file under the final name. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io_internal.h"

typedef struct decl {
    char *name;
    uint64_t begin, end; /* bytes in the data section */
} decl;

struct bp_st_writer {
    char *path;
    char *tmp_path;
    FILE *fp;
    json_t *meta;    /* "__metadata__" object, insertion order kept */
    json_t *entries; /* tensor name -> entry, declaration order kept */
    decl *decls;
    size_t n, cap;
    uint64_t total;   /* bytes declared */
    uint64_t written; /* bytes of data written so far */
    int header_done;
    int finished;
    int failed; /* a write error happened; the file is unusable */
};

int bp_st_writer_new(const char *path, bp_st_writer **out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_st_writer_new: out is NULL");
    *out = NULL;
    if (!path || !*path)
        return bp_error_set(err, BP_EINVAL, "bp_st_writer_new: empty path");
    int rc = BP_OK;
    bp_st_writer *w = calloc(1, sizeof *w);
    if (!w)
        return bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
    size_t pl = strlen(path);
    w->path = strdup(path);
    w->tmp_path = malloc(pl + sizeof ".tmp-XXXXXX");
    w->meta = json_object();
    w->entries = json_object();
    if (!w->path || !w->tmp_path || !w->meta || !w->entries) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    memcpy(w->tmp_path, path, pl);
    memcpy(w->tmp_path + pl, ".tmp-XXXXXX", sizeof ".tmp-XXXXXX");
    int fd = mkstemp(w->tmp_path);
    if (fd < 0) {
        rc = bp_error_set(err, BP_EIO, "%s: cannot create temporary file: %s", path,
                          strerror(errno));
        w->tmp_path[0] = '\0'; /* nothing to unlink */
        goto out;
    }
    /* mkstemp makes the file 0600; model files are normally world-readable. */
    if (fchmod(fd, 0644) != 0) {
        /* Not fatal: the data is still correct. */
    }
    w->fp = fdopen(fd, "wb");
    if (!w->fp) {
        rc = bp_error_set(err, BP_EIO, "%s: fdopen failed: %s", path, strerror(errno));
        close(fd);
        goto out;
    }
out:
    if (rc)
        bp_st_writer_destroy(&w);
    *out = w;
    return rc;
}

static int check_open(bp_st_writer *w, const char *fn, bp_error *err)
{
    if (!w)
        return bp_error_set(err, BP_EINVAL, "%s: writer is NULL", fn);
    if (w->finished)
        return bp_error_set(err, BP_EINVAL, "%s: %s: writer already finished", w->path, fn);
    if (w->failed)
        return bp_error_set(err, BP_EIO, "%s: %s: an earlier write failed", w->path, fn);
    return BP_OK;
}

int bp_st_writer_metadata(bp_st_writer *w, const char *key, const char *value,
                          bp_error *err)
{
    int rc = check_open(w, "bp_st_writer_metadata", err);
    if (rc)
        return rc;
    if (!key || !value)
        return bp_error_set(err, BP_EINVAL, "%s: metadata key or value is NULL", w->path);
    if (w->header_done)
        return bp_error_set(err, BP_EINVAL,
                            "%s: metadata '%.*s' added after data writing started", w->path,
                            BP__NAME_SHOWN, key);
    if (json_object_get(w->meta, key))
        return bp_error_set(err, BP_EINVAL, "%s: metadata key '%.*s' set twice", w->path,
                            BP__NAME_SHOWN, key);
    json_t *s = json_string(value);
    if (!s)
        return bp_error_set(err, BP_EINVAL, "%s: metadata '%.*s': value is not valid UTF-8",
                            w->path, BP__NAME_SHOWN, key);
    if (json_object_set_new(w->meta, key, s) != 0)
        return bp_error_set(err, BP_EINVAL, "%s: metadata key '%.*s' is not valid UTF-8",
                            w->path, BP__NAME_SHOWN, key);
    return BP_OK;
}

int bp_st_writer_declare(bp_st_writer *w, const char *name, bp_dtype dtype, int ndim,
                         const int64_t *shape, bp_error *err)
{
    int rc = check_open(w, "bp_st_writer_declare", err);
    if (rc)
        return rc;
    if (!name || !*name)
        return bp_error_set(err, BP_EINVAL, "%s: empty tensor name", w->path);
    const char *p = w->path;
    int ns = BP__NAME_SHOWN;
    if (w->header_done)
        return bp_error_set(err, BP_EINVAL,
                            "%s: tensor '%.*s' declared after data writing started", p, ns,
                            name);
    if (strcmp(name, "__metadata__") == 0)
        return bp_error_set(err, BP_EINVAL, "%s: '__metadata__' is not a valid tensor name", p);
    if (bp_dtype_size(dtype) == 0)
        return bp_error_set(err, BP_EINVAL, "%s: tensor '%.*s': unknown dtype %d", p, ns, name,
                            (int)dtype);
    if (ndim < 0 || ndim > BP_MAX_DIMS || (ndim > 0 && !shape))
        return bp_error_set(err, BP_EINVAL, "%s: tensor '%.*s': ndim %d out of range [0, %d]",
                            p, ns, name, ndim, BP_MAX_DIMS);
    if (json_object_get(w->entries, name))
        return bp_error_set(err, BP_EINVAL, "%s: tensor '%.*s' declared twice", p, ns, name);
    uint64_t numel, nbytes;
    if (bp__shape_numel(ndim, shape, bp_dtype_size(dtype), &numel, &nbytes) != BP_OK)
        return bp_error_set(err, BP_EINVAL,
                            "%s: tensor '%.*s': negative dimension or size overflow", p, ns,
                            name);
    uint64_t end;
    if (__builtin_add_overflow(w->total, nbytes, &end) || end > (uint64_t)INT64_MAX)
        return bp_error_set(err, BP_EINVAL, "%s: tensor '%.*s': total size overflows", p, ns,
                            name);
    if (w->n == w->cap) {
        size_t nc = w->cap ? 2 * w->cap : 64;
        decl *d = realloc(w->decls, nc * sizeof *d);
        if (!d)
            return bp_error_set(err, BP_ENOMEM, "%s: out of memory", p);
        w->decls = d;
        w->cap = nc;
    }
    json_t *e = json_object();
    json_t *js = json_array();
    json_t *jo = json_array();
    char *nm = strdup(name);
    rc = BP_OK;
    if (!e || !js || !jo || !nm) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", p);
        goto fail;
    }
    for (int i = 0; i < ndim; i++)
        json_array_append_new(js, json_integer((json_int_t)shape[i]));
    json_array_append_new(jo, json_integer((json_int_t)w->total));
    json_array_append_new(jo, json_integer((json_int_t)end));
    json_object_set_new(e, "dtype", json_string(bp_dtype_name(dtype)));
    json_object_set_new(e, "shape", js);
    json_object_set_new(e, "data_offsets", jo);
    js = jo = NULL;
    if (json_object_set_new(w->entries, name, e) != 0) {
        e = NULL;
        rc = bp_error_set(err, BP_EINVAL, "%s: tensor name '%.*s' is not valid UTF-8", p, ns,
                          name);
        goto fail;
    }
    w->decls[w->n].name = nm;
    w->decls[w->n].begin = w->total;
    w->decls[w->n].end = end;
    w->n++;
    w->total = end;
    return BP_OK;
fail:
    json_decref(e);
    json_decref(js);
    json_decref(jo);
    free(nm);
    return rc;
}

static int io_fail(bp_st_writer *w, bp_error *err, const char *what)
{
    w->failed = 1;
    return bp_error_set(err, BP_EIO, "%s: %s failed: %s", w->tmp_path, what, strerror(errno));
}

/* The header: "__metadata__" first (when there is any), then the tensors in
 * declaration order, compact JSON padded with spaces so the data section
 * starts 8-byte aligned, as Hugging Face's writer does. */
static int write_header(bp_st_writer *w, bp_error *err)
{
    int rc = BP_OK;
    char *text = NULL;
    json_t *root = json_object();
    if (!root)
        return bp_error_set(err, BP_ENOMEM, "%s: out of memory", w->path);
    if (json_object_size(w->meta) > 0)
        json_object_set(root, "__metadata__", w->meta);
    json_object_update(root, w->entries);
    text = json_dumps(root, JSON_COMPACT);
    if (!text) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: cannot serialize header", w->path);
        goto out;
    }
    size_t len = strlen(text);
    size_t padded = (len + 7) & ~(size_t)7;
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++)
        lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    if (fwrite(lenbuf, 1, 8, w->fp) != 8 || fwrite(text, 1, len, w->fp) != len) {
        rc = io_fail(w, err, "write");
        goto out;
    }
    for (size_t i = len; i < padded; i++)
        if (fputc(' ', w->fp) == EOF) {
            rc = io_fail(w, err, "write");
            goto out;
        }
    w->header_done = 1;
out:
    free(text);
    json_decref(root);
    return rc;
}

/* Name of the tensor the data offset `at` falls in, for messages. */
static const char *tensor_at(const bp_st_writer *w, uint64_t at)
{
    size_t lo = 0, hi = w->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (w->decls[mid].end <= at)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < w->n ? w->decls[lo].name : "(none)";
}

int bp_st_writer_write(bp_st_writer *w, const void *data, size_t len, bp_error *err)
{
    int rc = check_open(w, "bp_st_writer_write", err);
    if (rc)
        return rc;
    if (len == 0)
        return BP_OK;
    if (!data)
        return bp_error_set(err, BP_EINVAL, "%s: write of %zu bytes from NULL", w->path, len);
    if (len > w->total - w->written)
        return bp_error_set(err, BP_EINVAL,
                            "%s: writing %zu bytes at offset %llu goes past the %llu bytes "
                            "declared",
                            w->path, len, (unsigned long long)w->written,
                            (unsigned long long)w->total);
    if (!w->header_done && (rc = write_header(w, err)) != BP_OK)
        return rc;
    if (fwrite(data, 1, len, w->fp) != len)
        return io_fail(w, err, "write");
    w->written += len;
    return BP_OK;
}

int bp_st_writer_finish(bp_st_writer *w, bp_error *err)
{
    int rc = check_open(w, "bp_st_writer_finish", err);
    if (rc)
        return rc;
    if (w->written != w->total)
        return bp_error_set(err, BP_EINVAL,
                            "%s: only %llu of %llu declared data bytes written (tensor '%.*s' "
                            "incomplete)",
                            w->path, (unsigned long long)w->written,
                            (unsigned long long)w->total, BP__NAME_SHOWN,
                            tensor_at(w, w->written));
    if (!w->header_done && (rc = write_header(w, err)) != BP_OK)
        return rc;
    if (fflush(w->fp) != 0)
        return io_fail(w, err, "flush");
    if (fsync(fileno(w->fp)) != 0 && errno != EINVAL && errno != EROFS)
        return io_fail(w, err, "fsync");
    FILE *fp = w->fp;
    w->fp = NULL;
    if (fclose(fp) != 0)
        return io_fail(w, err, "close");
    if (rename(w->tmp_path, w->path) != 0) {
        w->failed = 1;
        return bp_error_set(err, BP_EIO, "%s: cannot rename %s into place: %s", w->path,
                            w->tmp_path, strerror(errno));
    }
    w->finished = 1;
    return BP_OK;
}

void bp_st_writer_destroy(bp_st_writer **pw)
{
    if (!pw || !*pw)
        return;
    bp_st_writer *w = *pw;
    if (w->fp)
        fclose(w->fp);
    if (!w->finished && w->tmp_path && w->tmp_path[0])
        unlink(w->tmp_path);
    for (size_t i = 0; i < w->n; i++)
        free(w->decls[i].name);
    free(w->decls);
    json_decref(w->meta);
    json_decref(w->entries);
    free(w->tmp_path);
    free(w->path);
    free(w);
    *pw = NULL;
}
