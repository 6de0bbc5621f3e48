/* safetensors reader: maps the file read-only and validates its header.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON, then the data
 * section. Every offset in the header is relative to the data section. All
 * checks happen at open, so the accessors can trust the tensor table. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io_internal.h"

/* A real header is a few MB even for the largest models; anything bigger is
 * corrupt and would only make jansson allocate without end. */
#define MAX_HEADER_BYTES (100u * 1024u * 1024u)

struct bp_safetensors {
    char *path;
    unsigned char *map; /* whole file, PROT_READ */
    size_t map_len;     /* bytes */
    size_t n;
    bp_tensor_info *tensors;        /* data-offset order */
    const bp_tensor_info **by_name; /* strcmp order, for find */
    size_t n_meta;
    char **meta_keys;
    char **meta_vals;
};

typedef struct entry {
    bp_tensor_info info;
    uint64_t begin, end; /* bytes, relative to the data section */
} entry;

static int cmp_entry_offset(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->info.name, y->info.name);
}

static int cmp_info_name(const void *a, const void *b)
{
    const bp_tensor_info *x = *(const bp_tensor_info *const *)a;
    const bp_tensor_info *y = *(const bp_tensor_info *const *)b;
    return strcmp(x->name, y->name);
}

/* A JSON integer >= 0, as uint64. */
static int get_nonneg_int(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v))
        return 0;
    json_int_t i = json_integer_value(v);
    if (i < 0)
        return 0;
    *out = (uint64_t)i;
    return 1;
}

/* "path: tensor 'name': reason" */
static int __attribute__((format(printf, 5, 6)))
tensor_error(bp_error *err, int code, const char *path, const char *name, const char *fmt, ...)
{
    char reason[BP_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    return bp_error_set(err, code, "%s: tensor '%.*s': %s", path, BP__NAME_SHOWN, name,
                        reason);
}

#define TFAIL(code, ...)                                           \
    do {                                                           \
        rc = tensor_error(err, code, path, name, __VA_ARGS__);    \
        goto out;                                                  \
    } while (0)

/* Validate one header entry and fill e (name not yet set). */
static int parse_entry(const char *path, const char *name, const json_t *obj,
                       uint64_t data_len, entry *e, bp_error *err)
{
    int rc = BP_OK;
    if (name[0] == '\0')
        TFAIL(BP_EFORMAT, "empty tensor name");
    if (!json_is_object(obj))
        TFAIL(BP_EFORMAT, "entry is not a JSON object");
    const json_t *jd = json_object_get(obj, "dtype");
    const json_t *js = json_object_get(obj, "shape");
    const json_t *jo = json_object_get(obj, "data_offsets");
    if (!jd)
        TFAIL(BP_EFORMAT, "missing \"dtype\"");
    if (!json_is_string(jd))
        TFAIL(BP_EFORMAT, "\"dtype\" is not a string");
    if (!js)
        TFAIL(BP_EFORMAT, "missing \"shape\"");
    if (!json_is_array(js))
        TFAIL(BP_EFORMAT, "\"shape\" is not an array");
    if (!jo)
        TFAIL(BP_EFORMAT, "missing \"data_offsets\"");
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        TFAIL(BP_EFORMAT, "\"data_offsets\" is not an array of 2 integers");

    const char *dname = json_string_value(jd);
    bp_dtype dt = bp_dtype_from_name(dname);
    if (dt == BP_DTYPE_UNKNOWN) {
        if (bp__st_dtype_is_known(dname))
            TFAIL(BP_EUNSUPPORTED,
                  "dtype '%.40s' is not supported (bitplan reads F32, F16, BF16, U8, I32, F64)",
                  dname);
        TFAIL(BP_EUNSUPPORTED, "unknown dtype '%.40s'", dname);
    }

    size_t nd = json_array_size(js);
    if (nd > BP_MAX_DIMS)
        TFAIL(BP_EUNSUPPORTED, "shape has %zu dimensions, more than the %d supported", nd,
              BP_MAX_DIMS);
    e->info.ndim = (int)nd;
    for (size_t i = 0; i < nd; i++) {
        const json_t *d = json_array_get(js, i);
        if (!json_is_integer(d))
            TFAIL(BP_EFORMAT, "shape[%zu] is not an integer", i);
        json_int_t v = json_integer_value(d);
        if (v < 0)
            TFAIL(BP_EFORMAT, "negative dimension %lld in shape[%zu]", (long long)v, i);
        e->info.shape[i] = (int64_t)v;
    }
    for (size_t i = nd; i < BP_MAX_DIMS; i++)
        e->info.shape[i] = 0;
    if (bp__shape_numel(e->info.ndim, e->info.shape, bp_dtype_size(dt), &e->info.numel,
                        &e->info.nbytes) != BP_OK)
        TFAIL(BP_EFORMAT, "shape product overflows 64 bits");
    e->info.dtype = dt;

    if (!get_nonneg_int(json_array_get(jo, 0), &e->begin) ||
        !get_nonneg_int(json_array_get(jo, 1), &e->end))
        TFAIL(BP_EFORMAT, "\"data_offsets\" entries must be non-negative integers");
    if (e->begin > e->end)
        TFAIL(BP_EFORMAT, "data_offsets begin %llu is after end %llu",
              (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > data_len)
        TFAIL(BP_EFORMAT,
              "data_offsets end %llu is beyond the %llu-byte data section (file truncated?)",
              (unsigned long long)e->end, (unsigned long long)data_len);
    if (e->end - e->begin != e->info.nbytes)
        TFAIL(BP_EFORMAT,
              "shape x dtype size is %llu bytes but data_offsets span %llu bytes",
              (unsigned long long)e->info.nbytes, (unsigned long long)(e->end - e->begin));
out:
    return rc;
}

static int parse_metadata(const char *path, const json_t *meta, bp_safetensors *f,
                          bp_error *err)
{
    if (!json_is_object(meta))
        return bp_error_set(err, BP_EFORMAT, "%s: \"__metadata__\" is not a JSON object", path);
    size_t n = json_object_size(meta);
    f->meta_keys = calloc(n ? n : 1, sizeof *f->meta_keys);
    f->meta_vals = calloc(n ? n : 1, sizeof *f->meta_vals);
    if (!f->meta_keys || !f->meta_vals)
        return bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)meta, k, v) {
        if (!json_is_string(v))
            return bp_error_set(err, BP_EFORMAT,
                                "%s: \"__metadata__\" value for key '%.*s' is not a string",
                                path, BP__NAME_SHOWN, k);
        f->meta_keys[f->n_meta] = strdup(k);
        f->meta_vals[f->n_meta] = strdup(json_string_value(v));
        f->n_meta++;
        if (!f->meta_keys[f->n_meta - 1] || !f->meta_vals[f->n_meta - 1])
            return bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
    }
    return BP_OK;
}

static int parse_header(bp_safetensors *f, const char *hdr, size_t hdr_len,
                        uint64_t data_len, bp_error *err)
{
    const char *path = f->path;
    int rc = BP_OK;
    entry *es = NULL;
    size_t ne = 0;
    json_error_t jerr;
    json_t *root = json_loadb(hdr, hdr_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (json_error_code(&jerr) == json_error_duplicate_key) {
            /* jansson says: duplicate object key near '"<key>"'. */
            const char *q = strstr(jerr.text, "near '\"");
            const char *e = q ? strstr(q + 7, "\"'") : NULL;
            if (q && e)
                rc = bp_error_set(err, BP_EFORMAT,
                                  "%s: tensor '%.*s': duplicate tensor name in header (header "
                                  "byte %d)",
                                  path, (int)(e - (q + 7)), q + 7, jerr.position);
            else
                rc = bp_error_set(err, BP_EFORMAT,
                                  "%s: duplicate tensor name in header (%s, header byte %d)",
                                  path, jerr.text, jerr.position);
        } else
            rc = bp_error_set(err, BP_EFORMAT,
                              "%s: header is not valid JSON: %s (line %d, column %d)", path,
                              jerr.text, jerr.line, jerr.column);
        goto out;
    }
    if (!json_is_object(root)) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: header is not a JSON object", path);
        goto out;
    }
    size_t cap = json_object_size(root);
    es = calloc(cap ? cap : 1, sizeof *es);
    if (!es) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            rc = parse_metadata(path, val, f, err);
            if (rc)
                goto out;
            continue;
        }
        entry *e = &es[ne];
        memset(e, 0, sizeof *e);
        rc = parse_entry(path, key, val, data_len, e, err);
        if (rc)
            goto out;
        e->info.name = strdup(key);
        if (!e->info.name) {
            rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
            goto out;
        }
        ne++;
    }

    qsort(es, ne, sizeof *es, cmp_entry_offset);
    /* Spans are sorted by begin; a non-empty span overlaps an earlier one
     * exactly when it begins before the furthest end seen so far. Empty
     * spans hold no bytes and cannot overlap anything. */
    uint64_t max_end = 0;
    size_t max_i = 0;
    for (size_t i = 0; i < ne; i++) {
        if (es[i].begin == es[i].end)
            continue;
        if (es[i].begin < max_end) {
            rc = bp_error_set(err, BP_EFORMAT,
                              "%s: tensor '%.*s': data_offsets [%llu, %llu) overlap tensor "
                              "'%.*s' [%llu, %llu)",
                              path, BP__NAME_SHOWN, es[i].info.name,
                              (unsigned long long)es[i].begin, (unsigned long long)es[i].end,
                              BP__NAME_SHOWN, es[max_i].info.name,
                              (unsigned long long)es[max_i].begin,
                              (unsigned long long)es[max_i].end);
            goto out;
        }
        max_end = es[i].end;
        max_i = i;
    }

    f->tensors = calloc(ne ? ne : 1, sizeof *f->tensors);
    f->by_name = calloc(ne ? ne : 1, sizeof *f->by_name);
    if (!f->tensors || !f->by_name) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    const unsigned char *data = f->map + (f->map_len - data_len);
    for (size_t i = 0; i < ne; i++) {
        f->tensors[i] = es[i].info;
        es[i].info.name = NULL; /* moved */
        f->tensors[i].data = data + es[i].begin;
        f->tensors[i].file = f->path;
        f->by_name[i] = &f->tensors[i];
    }
    f->n = ne;
    qsort(f->by_name, ne, sizeof *f->by_name, cmp_info_name);
out:
    if (es) {
        for (size_t i = 0; i < ne; i++)
            free(es[i].info.name);
        free(es);
    }
    json_decref(root);
    return rc;
}

int bp_safetensors_open(const char *path, bp_safetensors **out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_safetensors_open: out is NULL");
    *out = NULL;
    if (!path)
        return bp_error_set(err, BP_EINVAL, "bp_safetensors_open: path is NULL");
    int rc = BP_OK;
    bp_safetensors *f = calloc(1, sizeof *f);
    int fd = -1;
    if (!f || !(f->path = strdup(path))) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            rc = bp_error_set(err, BP_ENOTFOUND, "%s: not found", path);
        else
            rc = bp_error_set(err, BP_EIO, "%s: cannot open: %s", path, strerror(errno));
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = bp_error_set(err, BP_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: not a regular file", path);
        goto out;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8) {
        rc = bp_error_set(err, BP_EFORMAT,
                          "%s: file is %llu bytes, shorter than the 8-byte header length",
                          path, (unsigned long long)size);
        goto out;
    }
    if (size > SIZE_MAX) {
        rc = bp_error_set(err, BP_EUNSUPPORTED, "%s: file too large to map", path);
        goto out;
    }
    f->map_len = (size_t)size;
    void *m = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
        rc = bp_error_set(err, BP_EIO, "%s: mmap failed: %s", path, strerror(errno));
        goto out;
    }
    f->map = m;

    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)f->map[i] << (8 * i);
    if (hlen == 0) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: header length is 0 (empty header)", path);
        goto out;
    }
    if (hlen > MAX_HEADER_BYTES) {
        rc = bp_error_set(err, BP_EFORMAT,
                          "%s: header length %llu is absurd (more than %u bytes)", path,
                          (unsigned long long)hlen, MAX_HEADER_BYTES);
        goto out;
    }
    if (hlen > size - 8) {
        rc = bp_error_set(err, BP_EFORMAT,
                          "%s: header length %llu is beyond the end of the %llu-byte file",
                          path, (unsigned long long)hlen, (unsigned long long)size);
        goto out;
    }
    rc = parse_header(f, (const char *)f->map + 8, (size_t)hlen, size - 8 - hlen, err);
out:
    if (fd >= 0)
        close(fd);
    if (rc)
        bp_safetensors_destroy(&f);
    *out = f;
    return rc;
}

void bp_safetensors_destroy(bp_safetensors **pf)
{
    if (!pf || !*pf)
        return;
    bp_safetensors *f = *pf;
    if (f->map)
        munmap(f->map, f->map_len);
    if (f->tensors)
        for (size_t i = 0; i < f->n; i++)
            free(f->tensors[i].name);
    free(f->tensors);
    free(f->by_name);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->path);
    free(f);
    *pf = NULL;
}

size_t bp_safetensors_count(const bp_safetensors *f)
{
    return f ? f->n : 0;
}

const bp_tensor_info *bp_safetensors_tensor(const bp_safetensors *f, size_t i)
{
    return f && i < f->n ? &f->tensors[i] : NULL;
}

const bp_tensor_info *bp_safetensors_find(const bp_safetensors *f, const char *name)
{
    if (!f || !name)
        return NULL;
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->by_name[mid]->name, name);
        if (c == 0)
            return f->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *bp_safetensors_metadata(const bp_safetensors *f, const char *key)
{
    if (!f || !key)
        return NULL;
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0)
            return f->meta_vals[i];
    return NULL;
}
