/* llama.cpp legacy imatrix.dat: reader, in-memory table and writer. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitplan/imatrix.h"
#include "io_internal.h"

typedef struct ent {
    char *name;
    char *hf;
    int32_t ncall;
    int64_t n;
    float *sums;
    float *mean;
} ent;

struct bp_imatrix {
    ent *e;          /* insertion order */
    size_t *by_hf;   /* indices into e, sorted by hf name */
    size_t n, cap;
    int has_tail;
    int32_t last_chunk;
    char *dataset;
};

static void ent_free(ent *e)
{
    free(e->name);
    free(e->hf);
    free(e->sums);
    free(e->mean);
}

int bp_imatrix_new(bp_imatrix **out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_imatrix_new: out is NULL");
    *out = calloc(1, sizeof **out);
    if (!*out)
        return bp_error_set(err, BP_ENOMEM, "imatrix: out of memory");
    (*out)->last_chunk = -1;
    return BP_OK;
}

void bp_imatrix_destroy(bp_imatrix **pm)
{
    if (!pm || !*pm)
        return;
    bp_imatrix *m = *pm;
    for (size_t i = 0; i < m->n; i++)
        ent_free(&m->e[i]);
    free(m->e);
    free(m->by_hf);
    free(m->dataset);
    free(m);
    *pm = NULL;
}

/* Position in by_hf where hf belongs; *found set when it is there. */
static size_t hf_search(const bp_imatrix *m, const char *hf, int *found)
{
    size_t lo = 0, hi = m->n;
    *found = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->e[m->by_hf[mid]].hf, hf);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Takes ownership of sums (even on failure). Messages name the entry; the
 * caller adds the file. */
static int add_owned(bp_imatrix *m, const char *name, int32_t ncall, float *sums, int64_t n,
                     int code, bp_error *err)
{
    int rc = BP_OK;
    ent e = {0};
    e.sums = sums;
    size_t nl = name ? strlen(name) : 0;
    if (nl == 0 || nl > BP_IMATRIX_MAX_NAME) {
        rc = bp_error_set(err, code, "entry name length %zu outside [1, %d]", nl,
                          BP_IMATRIX_MAX_NAME);
        goto fail;
    }
    if (ncall < 0) {
        rc = bp_error_set(err, code, "entry '%.*s': negative ncall %d", BP__NAME_SHOWN, name,
                          (int)ncall);
        goto fail;
    }
    if (n < 1 || n > BP_IMATRIX_MAX_VALUES) {
        rc = bp_error_set(err, code, "entry '%.*s': %lld values, outside [1, %d]",
                          BP__NAME_SHOWN, name, (long long)n, BP_IMATRIX_MAX_VALUES);
        goto fail;
    }
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(sums[i]) || sums[i] < 0.0f) {
            rc = bp_error_set(err, code, "entry '%.*s': value %lld is %g (must be finite and >= 0)",
                              BP__NAME_SHOWN, name, (long long)i, (double)sums[i]);
            goto fail;
        }
    char hf[BP_IMATRIX_NAME_BUF];
    if (bp_imatrix_name_to_hf(name, hf, sizeof hf) != BP_OK) {
        rc = bp_error_set(err, code, "entry '%.*s': name too long", BP__NAME_SHOWN, name);
        goto fail;
    }
    int found;
    size_t pos = hf_search(m, hf, &found);
    if (found) {
        const ent *o = &m->e[m->by_hf[pos]];
        if (strcmp(o->name, name) == 0)
            rc = bp_error_set(err, code, "duplicate entry '%.*s'", BP__NAME_SHOWN, name);
        else
            rc = bp_error_set(err, code, "entries '%.*s' and '%.*s' both name tensor '%.*s'",
                              BP__NAME_SHOWN, o->name, BP__NAME_SHOWN, name, BP__NAME_SHOWN,
                              hf);
        goto fail;
    }
    e.name = strdup(name);
    e.hf = strdup(hf);
    e.mean = malloc((size_t)n * sizeof *e.mean);
    if (!e.name || !e.hf || !e.mean) {
        rc = bp_error_set(err, BP_ENOMEM, "entry '%.*s': out of memory", BP__NAME_SHOWN, name);
        goto fail;
    }
    /* Division (not multiplication by 1/ncall) so the weights are the
     * correctly rounded means. */
    float div = (float)(ncall > 1 ? ncall : 1);
    for (int64_t i = 0; i < n; i++)
        e.mean[i] = e.sums[i] / div;
    e.ncall = ncall;
    e.n = n;
    if (m->n == m->cap) {
        size_t nc = m->cap ? 2 * m->cap : 64;
        ent *ne = realloc(m->e, nc * sizeof *ne);
        if (ne)
            m->e = ne;
        size_t *nb = ne ? realloc(m->by_hf, nc * sizeof *nb) : NULL;
        if (nb)
            m->by_hf = nb;
        if (!ne || !nb) {
            rc = bp_error_set(err, BP_ENOMEM, "entry '%.*s': out of memory", BP__NAME_SHOWN,
                              name);
            goto fail;
        }
        m->cap = nc;
    }
    memmove(&m->by_hf[pos + 1], &m->by_hf[pos], (m->n - pos) * sizeof *m->by_hf);
    m->by_hf[pos] = m->n;
    m->e[m->n++] = e;
    return BP_OK;
fail:
    ent_free(&e);
    return rc;
}

int bp_imatrix_add(bp_imatrix *m, const char *name, int32_t ncall, const float *sums,
                   int64_t n, bp_error *err)
{
    if (!m || !name || (!sums && n > 0))
        return bp_error_set(err, BP_EINVAL, "bp_imatrix_add: NULL argument");
    if (n < 1 || n > BP_IMATRIX_MAX_VALUES)
        return bp_error_set(err, BP_EINVAL, "imatrix entry '%.*s': %lld values, outside [1, %d]",
                            BP__NAME_SHOWN, name, (long long)n, BP_IMATRIX_MAX_VALUES);
    float *copy = malloc((size_t)n * sizeof *copy);
    if (!copy)
        return bp_error_set(err, BP_ENOMEM, "imatrix entry '%.*s': out of memory",
                            BP__NAME_SHOWN, name);
    memcpy(copy, sums, (size_t)n * sizeof *copy);
    int rc = add_owned(m, name, ncall, copy, n, BP_EINVAL, err);
    if (rc)
        bp_error_prefix(err, "imatrix");
    return rc;
}

int bp_imatrix_set_dataset(bp_imatrix *m, int32_t last_chunk, const char *dataset,
                           bp_error *err)
{
    if (!m)
        return bp_error_set(err, BP_EINVAL, "bp_imatrix_set_dataset: imatrix is NULL");
    const char *d = dataset ? dataset : "";
    if (strlen(d) > BP_IMATRIX_MAX_NAME)
        return bp_error_set(err, BP_EINVAL, "imatrix: dataset name longer than %d bytes",
                            BP_IMATRIX_MAX_NAME);
    char *copy = strdup(d);
    if (!copy)
        return bp_error_set(err, BP_ENOMEM, "imatrix: out of memory");
    free(m->dataset);
    m->dataset = copy;
    m->last_chunk = last_chunk;
    m->has_tail = 1;
    return BP_OK;
}

int32_t bp_imatrix_last_chunk(const bp_imatrix *m)
{
    return m && m->has_tail ? m->last_chunk : -1;
}

const char *bp_imatrix_dataset(const bp_imatrix *m)
{
    return m && m->has_tail ? m->dataset : NULL;
}

size_t bp_imatrix_count(const bp_imatrix *m)
{
    return m ? m->n : 0;
}

int bp_imatrix_entry_at(const bp_imatrix *m, size_t i, bp_imatrix_entry *out)
{
    if (!m || !out || i >= m->n)
        return BP_EINVAL;
    const ent *e = &m->e[i];
    out->name = e->name;
    out->hf_name = e->hf;
    out->ncall = e->ncall;
    out->n = e->n;
    out->sums = e->sums;
    out->mean = e->mean;
    return BP_OK;
}

const float *bp_imatrix_find(const bp_imatrix *m, const char *name, int64_t *n)
{
    if (n)
        *n = 0;
    if (!m || !name)
        return NULL;
    char hf[BP_IMATRIX_NAME_BUF];
    if (bp_imatrix_name_to_hf(name, hf, sizeof hf) != BP_OK)
        return NULL;
    int found;
    size_t pos = hf_search(m, hf, &found);
    if (!found)
        return NULL;
    const ent *e = &m->e[m->by_hf[pos]];
    if (n)
        *n = e->n;
    return e->mean;
}

/* --- reading ------------------------------------------------------------ */

typedef struct rd {
    FILE *fp;
    const char *path;
    uint64_t pos, size; /* bytes */
} rd;

static int rd_bytes(rd *r, void *dst, uint64_t n, const char *what, bp_error *err)
{
    if (n > r->size - r->pos)
        return bp_error_set(err, BP_EFORMAT,
                            "%s: truncated: %s needs %llu bytes at offset %llu, file is %llu "
                            "bytes",
                            r->path, what, (unsigned long long)n, (unsigned long long)r->pos,
                            (unsigned long long)r->size);
    if (n && fread(dst, 1, (size_t)n, r->fp) != n)
        return bp_error_set(err, BP_EIO, "%s: read failed at offset %llu (%s)", r->path,
                            (unsigned long long)r->pos, what);
    r->pos += n;
    return BP_OK;
}

static int rd_i32(rd *r, int32_t *v, const char *what, bp_error *err)
{
    unsigned char b[4];
    int rc = rd_bytes(r, b, 4, what, err);
    if (rc)
        return rc;
    uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                 (uint32_t)b[3] << 24;
    memcpy(v, &u, 4);
    return BP_OK;
}

/* Smallest possible entry: name_len, 1 name byte, ncall, nval, 1 value. */
#define MIN_ENTRY_BYTES 17u

static int load_entries(rd *r, bp_imatrix *m, bp_error *err)
{
    int rc;
    char *name = NULL;
    float *vals = NULL;
    unsigned char magic[4];
    if (r->size >= 4) {
        if (fread(magic, 1, 4, r->fp) != 4 || fseek(r->fp, 0, SEEK_SET) != 0)
            return bp_error_set(err, BP_EIO, "%s: read failed", r->path);
        if (memcmp(magic, "GGUF", 4) == 0)
            return bp_error_set(err, BP_EUNSUPPORTED,
                                "%s: GGUF imatrix files are not supported; bitplan reads the "
                                "legacy imatrix.dat format",
                                r->path);
    }
    int32_t count;
    if ((rc = rd_i32(r, &count, "entry count", err)))
        return rc;
    if (count < 0 || (uint64_t)count > (r->size - r->pos) / MIN_ENTRY_BYTES)
        return bp_error_set(err, BP_EFORMAT,
                            "%s: entry count %d impossible for a %llu-byte file", r->path,
                            (int)count, (unsigned long long)r->size);
    name = malloc(BP_IMATRIX_MAX_NAME + 1);
    if (!name)
        return bp_error_set(err, BP_ENOMEM, "%s: out of memory", r->path);
    for (int32_t i = 0; i < count; i++) {
        int32_t nl, ncall, nval;
        if ((rc = rd_i32(r, &nl, "entry name length", err)))
            goto out;
        if (nl < 1 || nl > BP_IMATRIX_MAX_NAME) {
            rc = bp_error_set(err, BP_EFORMAT, "%s: entry %d: name length %d outside [1, %d]",
                              r->path, (int)i, (int)nl, BP_IMATRIX_MAX_NAME);
            goto out;
        }
        if ((rc = rd_bytes(r, name, (uint64_t)nl, "entry name", err)))
            goto out;
        name[nl] = '\0';
        if (strlen(name) != (size_t)nl) {
            rc = bp_error_set(err, BP_EFORMAT, "%s: entry %d: name contains a NUL byte",
                              r->path, (int)i);
            goto out;
        }
        if ((rc = rd_i32(r, &ncall, "ncall", err)) || (rc = rd_i32(r, &nval, "nval", err))) {
            bp_error_prefix(err, "entry '%.*s'", BP__NAME_SHOWN, name);
            goto out;
        }
        if (nval < 1 || nval > BP_IMATRIX_MAX_VALUES) {
            rc = bp_error_set(err, BP_EFORMAT, "%s: entry '%.*s': nval %d outside [1, %d]",
                              r->path, BP__NAME_SHOWN, name, (int)nval, BP_IMATRIX_MAX_VALUES);
            goto out;
        }
        /* Check the size before allocating, so a corrupt count cannot make
         * us allocate gigabytes. */
        uint64_t vbytes = (uint64_t)nval * 4u;
        if (vbytes > r->size - r->pos) {
            rc = bp_error_set(err, BP_EFORMAT,
                              "%s: entry '%.*s': truncated: %d values need %llu bytes, %llu "
                              "left",
                              r->path, BP__NAME_SHOWN, name, (int)nval,
                              (unsigned long long)vbytes,
                              (unsigned long long)(r->size - r->pos));
            goto out;
        }
        vals = malloc((size_t)vbytes);
        if (!vals) {
            rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", r->path);
            goto out;
        }
        if ((rc = rd_bytes(r, vals, vbytes, "values", err)))
            goto out;
        rc = add_owned(m, name, ncall, vals, nval, BP_EFORMAT, err);
        vals = NULL; /* owned by add_owned now */
        if (rc) {
            bp_error_prefix(err, "%s", r->path);
            goto out;
        }
    }
    /* Optional trailer. */
    if (r->pos < r->size) {
        int32_t last, dl;
        if ((rc = rd_i32(r, &last, "last_chunk", err)))
            goto out;
        m->has_tail = 1;
        m->last_chunk = last;
        if (r->pos < r->size) {
            if ((rc = rd_i32(r, &dl, "dataset name length", err)))
                goto out;
            if (dl < 0 || dl > BP_IMATRIX_MAX_NAME) {
                rc = bp_error_set(err, BP_EFORMAT,
                                  "%s: dataset name length %d outside [0, %d]", r->path,
                                  (int)dl, BP_IMATRIX_MAX_NAME);
                goto out;
            }
            if ((rc = rd_bytes(r, name, (uint64_t)dl, "dataset name", err)))
                goto out;
            name[dl] = '\0';
            m->dataset = strdup(name);
            if (!m->dataset) {
                rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", r->path);
                goto out;
            }
        }
        if (r->pos < r->size) {
            rc = bp_error_set(err, BP_EFORMAT, "%s: %llu unexpected bytes after the entries",
                              r->path, (unsigned long long)(r->size - r->pos));
            goto out;
        }
    }
    rc = BP_OK;
out:
    free(vals);
    free(name);
    return rc;
}

int bp_imatrix_load(const char *path, bp_imatrix **out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_imatrix_load: out is NULL");
    *out = NULL;
    if (!path)
        return bp_error_set(err, BP_EINVAL, "bp_imatrix_load: path is NULL");
    bp_imatrix *m = NULL;
    rd r = {.path = path};
    int rc = BP_OK;
    r.fp = fopen(path, "rb");
    if (!r.fp) {
        if (errno == ENOENT || errno == ENOTDIR)
            return bp_error_set(err, BP_ENOTFOUND, "%s: not found", path);
        return bp_error_set(err, BP_EIO, "%s: cannot open: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fileno(r.fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: not a regular file", path);
        goto out;
    }
    r.size = (uint64_t)st.st_size;
    if ((rc = bp_imatrix_new(&m, err)))
        goto out;
    rc = load_entries(&r, m, err);
out:
    fclose(r.fp);
    if (rc)
        bp_imatrix_destroy(&m);
    *out = m;
    return rc;
}

/* --- writing ------------------------------------------------------------ */

static int put_i32(FILE *fp, int32_t v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    unsigned char b[4] = {(unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16),
                          (unsigned char)(u >> 24)};
    return fwrite(b, 1, 4, fp) == 4 ? 0 : -1;
}

int bp_imatrix_save(const bp_imatrix *m, const char *path, int gguf_names, bp_error *err)
{
    if (!m || !path || !*path)
        return bp_error_set(err, BP_EINVAL, "bp_imatrix_save: NULL argument");
    if (m->n > INT32_MAX)
        return bp_error_set(err, BP_EINVAL, "%s: too many entries", path);
    int rc = BP_OK;
    FILE *fp = NULL;
    size_t pl = strlen(path);
    char *tmp = malloc(pl + sizeof ".tmp-XXXXXX");
    char *nm = malloc(BP_IMATRIX_NAME_BUF);
    if (!tmp || !nm) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    memcpy(tmp, path, pl);
    memcpy(tmp + pl, ".tmp-XXXXXX", sizeof ".tmp-XXXXXX");
    int fd = mkstemp(tmp);
    if (fd < 0) {
        tmp[0] = '\0';
        rc = bp_error_set(err, BP_EIO, "%s: cannot create temporary file: %s", path,
                          strerror(errno));
        goto out;
    }
    if (fchmod(fd, 0644) != 0) {
        /* Not fatal. */
    }
    fp = fdopen(fd, "wb");
    if (!fp) {
        close(fd);
        rc = bp_error_set(err, BP_EIO, "%s: fdopen failed: %s", path, strerror(errno));
        goto out;
    }
    int bad = put_i32(fp, (int32_t)m->n);
    for (size_t i = 0; i < m->n && !bad; i++) {
        const ent *e = &m->e[i];
        const char *name = e->name;
        if (gguf_names) {
            if (bp_imatrix_name_to_gguf(e->name, nm, BP_IMATRIX_NAME_BUF) != BP_OK ||
                strlen(nm) > BP_IMATRIX_MAX_NAME) {
                rc = bp_error_set(err, BP_EINVAL, "%s: entry '%.*s': name too long", path,
                                  BP__NAME_SHOWN, e->name);
                goto out;
            }
            name = nm;
        }
        size_t nl = strlen(name);
        bad |= put_i32(fp, (int32_t)nl);
        bad |= fwrite(name, 1, nl, fp) != nl;
        bad |= put_i32(fp, e->ncall);
        bad |= put_i32(fp, (int32_t)e->n);
        /* Little-endian host (checked in convert.c), so floats go as is. */
        bad |= fwrite(e->sums, sizeof(float), (size_t)e->n, fp) != (size_t)e->n;
    }
    if (!bad && m->has_tail) {
        const char *d = m->dataset ? m->dataset : "";
        size_t dl = strlen(d);
        bad |= put_i32(fp, m->last_chunk);
        bad |= put_i32(fp, (int32_t)dl);
        bad |= fwrite(d, 1, dl, fp) != dl;
    }
    if (bad || fflush(fp) != 0) {
        rc = bp_error_set(err, BP_EIO, "%s: write failed: %s", tmp, strerror(errno));
        goto out;
    }
    FILE *f2 = fp;
    fp = NULL;
    if (fclose(f2) != 0) {
        rc = bp_error_set(err, BP_EIO, "%s: close failed: %s", tmp, strerror(errno));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        rc = bp_error_set(err, BP_EIO, "%s: cannot rename %s into place: %s", path, tmp,
                          strerror(errno));
        goto out;
    }
    tmp[0] = '\0';
out:
    if (fp)
        fclose(fp);
    if (tmp && tmp[0])
        unlink(tmp);
    free(tmp);
    free(nm);
    return rc;
}
