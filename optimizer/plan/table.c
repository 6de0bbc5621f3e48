/* The sensitivity table: flat column arrays, an interned string pool, and the
 * CSV reader/writer (docs/table-format.md). */
#include "bitplan/table.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan_internal.h"

/* ---- metric and method names ------------------------------------------- */

static const char *const metric_names[BP_METRIC_COUNT] = {
    "mse", "hdiag", "hfull", "gptq", "dkl", "latency_us", "bops"};

const char *bp_table_metric_name(bp_metric m)
{
    if ((int)m < 0 || m >= BP_METRIC_COUNT)
        return NULL;
    return metric_names[m];
}

int bp_table_metric_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int m = 0; m < BP_METRIC_COUNT; m++)
        if (strcmp(name, metric_names[m]) == 0)
            return m;
    return -1;
}

const char *bp_table_method_name(bp_quant_method m)
{
    switch (m) {
    case BP_METHOD_RTN:
        return "rtn";
    case BP_METHOD_GPTQ:
        return "gptq";
    case BP_METHOD_GPTQ_ACT:
        return "gptq_act";
    }
    return NULL;
}

int bp_table_method_from_name(const char *name)
{
    if (!name)
        return -1;
    if (strcmp(name, "rtn") == 0)
        return BP_METHOD_RTN;
    if (strcmp(name, "gptq") == 0)
        return BP_METHOD_GPTQ;
    if (strcmp(name, "gptq_act") == 0)
        return BP_METHOD_GPTQ_ACT;
    return -1;
}

int bp_method_is_gptq(bp_quant_method m)
{
    return m == BP_METHOD_GPTQ || m == BP_METHOD_GPTQ_ACT;
}

unsigned bp_method_gptq_flags(bp_quant_method m)
{
    return m == BP_METHOD_GPTQ_ACT ? 1u : 0u;
}

/* ---- interned string pool ---------------------------------------------- */

/* Strings live in large chunks that are never reallocated, so a pointer
 * handed out stays valid for the table's lifetime. Id 0 is "". */
#define POOL_CHUNK ((size_t)64 * 1024)

typedef struct strpool {
    char **chunks;
    size_t n_chunks, cap_chunks;
    size_t chunk_used, chunk_size; /* of the last chunk, bytes */
    const char **strs;             /* id -> string */
    size_t n, cap;
    uint32_t *slots;               /* open addressing: id + 1, 0 = empty */
    size_t n_slots;                /* power of two */
} strpool;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static int pool_init(strpool *p)
{
    memset(p, 0, sizeof *p);
    p->cap = 64;
    p->strs = malloc(p->cap * sizeof *p->strs);
    p->n_slots = 128;
    p->slots = calloc(p->n_slots, sizeof *p->slots);
    if (!p->strs || !p->slots)
        return BP_ENOMEM;
    p->strs[0] = "";
    p->n = 1;
    return BP_OK;
}

static void pool_free(strpool *p)
{
    for (size_t i = 0; i < p->n_chunks; i++)
        free(p->chunks[i]);
    free(p->chunks);
    free(p->strs);
    free(p->slots);
    memset(p, 0, sizeof *p);
}

static long pool_lookup(const strpool *p, const char *s)
{
    if (!s || !*s)
        return 0;
    size_t mask = p->n_slots - 1;
    for (size_t i = hash_str(s) & mask;; i = (i + 1) & mask) {
        uint32_t v = p->slots[i];
        if (!v)
            return -1;
        if (strcmp(p->strs[v - 1], s) == 0)
            return (long)(v - 1);
    }
}

static int pool_rehash(strpool *p, size_t n_slots)
{
    uint32_t *slots = calloc(n_slots, sizeof *slots);
    if (!slots)
        return BP_ENOMEM;
    size_t mask = n_slots - 1;
    for (size_t id = 1; id < p->n; id++) {
        size_t i = hash_str(p->strs[id]) & mask;
        while (slots[i])
            i = (i + 1) & mask;
        slots[i] = (uint32_t)(id + 1);
    }
    free(p->slots);
    p->slots = slots;
    p->n_slots = n_slots;
    return BP_OK;
}

static int pool_intern(strpool *p, const char *s, uint32_t *id)
{
    long found = pool_lookup(p, s);
    if (found >= 0) {
        *id = (uint32_t)found;
        return BP_OK;
    }
    if (p->n >= UINT32_MAX - 1)
        return BP_ENOMEM;
    if ((p->n + 1) * 2 > p->n_slots && pool_rehash(p, p->n_slots * 2) != BP_OK)
        return BP_ENOMEM;
    if (p->n == p->cap) {
        const char **ns = realloc(p->strs, 2 * p->cap * sizeof *ns);
        if (!ns)
            return BP_ENOMEM;
        p->strs = ns;
        p->cap *= 2;
    }
    size_t len = strlen(s);
    if (p->n_chunks == 0 || p->chunk_used + len + 1 > p->chunk_size) {
        if (p->n_chunks == p->cap_chunks) {
            size_t nc = p->cap_chunks ? 2 * p->cap_chunks : 8;
            char **c = realloc(p->chunks, nc * sizeof *c);
            if (!c)
                return BP_ENOMEM;
            p->chunks = c;
            p->cap_chunks = nc;
        }
        size_t sz = len + 1 > POOL_CHUNK ? len + 1 : POOL_CHUNK;
        char *chunk = malloc(sz);
        if (!chunk)
            return BP_ENOMEM;
        p->chunks[p->n_chunks++] = chunk;
        p->chunk_used = 0;
        p->chunk_size = sz;
    }
    char *d = p->chunks[p->n_chunks - 1] + p->chunk_used;
    memcpy(d, s, len + 1);
    p->chunk_used += len + 1;
    p->strs[p->n] = d;
    size_t mask = p->n_slots - 1;
    size_t i = hash_str(s) & mask;
    while (p->slots[i])
        i = (i + 1) & mask;
    p->slots[i] = (uint32_t)(p->n + 1);
    *id = (uint32_t)p->n;
    p->n++;
    return BP_OK;
}

/* ---- the table ------------------------------------------------------------ */

struct bp_table {
    strpool pool;
    size_t n, cap;
    uint32_t *tensor, *block, *format; /* pool ids; block 0 = whole tensor */
    uint8_t *method;
    uint64_t *bytes;
    int64_t *rows, *cols;
    uint64_t *params;
    double *metric[BP_METRIC_COUNT]; /* NULL until a column exists */
    unsigned metric_cols;            /* bit m set: metric m is a column */
    uint32_t *keys;                  /* open addressing: row + 1 */
    size_t n_keys;                   /* power of two */
    char **meta_key, **meta_val;
    size_t n_meta, cap_meta;
};

bp_table *bp_table_new(void)
{
    bp_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if (pool_init(&t->pool) != BP_OK) {
        pool_free(&t->pool);
        free(t);
        return NULL;
    }
    t->n_keys = 256;
    t->keys = calloc(t->n_keys, sizeof *t->keys);
    if (!t->keys) {
        bp_table_destroy(&t);
        return NULL;
    }
    return t;
}

void bp_table_destroy(bp_table **tp)
{
    if (!tp || !*tp)
        return;
    bp_table *t = *tp;
    pool_free(&t->pool);
    free(t->tensor);
    free(t->block);
    free(t->format);
    free(t->method);
    free(t->bytes);
    free(t->rows);
    free(t->cols);
    free(t->params);
    for (int m = 0; m < BP_METRIC_COUNT; m++)
        free(t->metric[m]);
    free(t->keys);
    for (size_t i = 0; i < t->n_meta; i++) {
        free(t->meta_key[i]);
        free(t->meta_val[i]);
    }
    free(t->meta_key);
    free(t->meta_val);
    free(t);
    *tp = NULL;
}

void bp_table_row_init(bp_table_row *row)
{
    memset(row, 0, sizeof *row);
    row->method = BP_METHOD_RTN;
    for (int m = 0; m < BP_METRIC_COUNT; m++)
        row->metric[m] = NAN;
}

size_t bp_table_count(const bp_table *t)
{
    return t ? t->n : 0;
}

static uint64_t key_hash(uint32_t tensor, uint32_t block, uint32_t format,
                         uint8_t method)
{
    uint64_t h = mix64(((uint64_t)tensor << 32) ^ format);
    return mix64(h ^ ((uint64_t)block << 8) ^ method);
}

static long key_find(const bp_table *t, uint32_t tensor, uint32_t block,
                     uint32_t format, uint8_t method)
{
    size_t mask = t->n_keys - 1;
    for (size_t i = key_hash(tensor, block, format, method) & mask;;
         i = (i + 1) & mask) {
        uint32_t v = t->keys[i];
        if (!v)
            return -1;
        size_t r = v - 1;
        if (t->tensor[r] == tensor && t->block[r] == block &&
            t->format[r] == format && t->method[r] == method)
            return (long)r;
    }
}

static void key_insert(uint32_t *keys, size_t n_keys, const bp_table *t,
                       size_t r)
{
    size_t mask = n_keys - 1;
    size_t i = key_hash(t->tensor[r], t->block[r], t->format[r], t->method[r]) & mask;
    while (keys[i])
        i = (i + 1) & mask;
    keys[i] = (uint32_t)(r + 1);
}

long bp_table_find(const bp_table *t, const char *tensor, const char *block,
                   const char *format, bp_quant_method method)
{
    if (!t || !tensor || !format)
        return -1;
    long ti = pool_lookup(&t->pool, tensor);
    long bi = pool_lookup(&t->pool, block);
    long fi = pool_lookup(&t->pool, format);
    if (ti < 0 || bi < 0 || fi < 0)
        return -1;
    return key_find(t, (uint32_t)ti, (uint32_t)bi, (uint32_t)fi, (uint8_t)method);
}

/* Makes room for one more row in every column array. */
static int grow_rows(bp_table *t)
{
    if (t->n < t->cap)
        return BP_OK;
    if (t->n >= UINT32_MAX - 1)
        return BP_ENOMEM; /* keys store row + 1 in 32 bits */
    size_t nc = t->cap ? 2 * t->cap : 256;
#define GROW(field)                                                \
    do {                                                           \
        void *np = realloc(t->field, nc * sizeof *t->field);       \
        if (!np)                                                   \
            return BP_ENOMEM;                                      \
        t->field = np;                                             \
    } while (0)
    GROW(tensor);
    GROW(block);
    GROW(format);
    GROW(method);
    GROW(bytes);
    GROW(rows);
    GROW(cols);
    GROW(params);
    for (int m = 0; m < BP_METRIC_COUNT; m++)
        if (t->metric[m])
            GROW(metric[m]);
#undef GROW
    t->cap = nc;
    return BP_OK;
}

/* Allocates metric m's array (cells of existing rows empty). */
static int ensure_metric(bp_table *t, bp_metric m)
{
    if (t->metric[m])
        return BP_OK;
    size_t n = t->cap ? t->cap : 1;
    double *a = malloc(n * sizeof *a);
    if (!a)
        return BP_ENOMEM;
    for (size_t i = 0; i < t->n; i++)
        a[i] = NAN;
    t->metric[m] = a;
    return BP_OK;
}

int bp_table_declare_metric(bp_table *t, bp_metric m, bp_error *err)
{
    if (!t || (int)m < 0 || m >= BP_METRIC_COUNT)
        return bp_error_set(err, BP_EINVAL, "bp_table_declare_metric: bad argument");
    if (ensure_metric(t, m) != BP_OK)
        return bp_error_set(err, BP_ENOMEM, "table: out of memory");
    t->metric_cols |= 1u << m;
    return BP_OK;
}

int bp_table_has_metric(const bp_table *t, bp_metric m)
{
    if (!t || (int)m < 0 || m >= BP_METRIC_COUNT)
        return 0;
    return (t->metric_cols >> m) & 1u;
}

int bp_table_add_row(bp_table *t, const bp_table_row *row, bp_error *err)
{
    if (!t || !row)
        return bp_error_set(err, BP_EINVAL, "bp_table_add_row: NULL argument");
    if (!row->tensor || !*row->tensor)
        return bp_error_set(err, BP_EINVAL, "table row: empty tensor name");
    const char *tn = row->tensor;
    const char *block = row->block ? row->block : "";
    if (bp__has_control(tn))
        return bp_error_set(err, BP_EINVAL,
                            "tensor \"%s\": name contains a control character", tn);
    if (!row->format || !*row->format)
        return bp_error_set(err, BP_EINVAL, "tensor \"%s\": empty format", tn);
    if (bp__has_control(row->format) || bp__has_control(block))
        return bp_error_set(err, BP_EINVAL,
                            "tensor \"%s\": format or block contains a control character",
                            tn);
    if (!bp_table_method_name(row->method))
        return bp_error_set(err, BP_EINVAL, "tensor \"%s\": unknown method %d", tn,
                            (int)row->method);
    if (row->bytes == 0)
        return bp_error_set(err, BP_EINVAL, "tensor \"%s\" format %s: bytes must be > 0",
                            tn, row->format);
    if (row->rows < 0 || row->cols < 0)
        return bp_error_set(err, BP_EINVAL,
                            "tensor \"%s\": rows and cols must be positive (0 = not given)",
                            tn);
    if (!*block && row->rows > 0 && row->cols > 0 && row->params > 0 &&
        ((uint64_t)row->rows > UINT64_MAX / (uint64_t)row->cols ||
         (uint64_t)row->rows * (uint64_t)row->cols != row->params))
        return bp_error_set(err, BP_EINVAL,
                            "tensor \"%s\": params %" PRIu64 " != rows %" PRId64
                            " x cols %" PRId64,
                            tn, row->params, row->rows, row->cols);
    for (int m = 0; m < BP_METRIC_COUNT; m++) {
        double v = row->metric[m];
        if (isnan(v))
            continue;
        if (!isfinite(v) || v < 0)
            return bp_error_set(err, BP_EINVAL,
                                "tensor \"%s\" format %s: %s must be finite and >= 0 "
                                "(got %g)",
                                tn, row->format, metric_names[m], v);
    }
    if (bp_table_find(t, tn, block, row->format, row->method) >= 0)
        return bp_error_set(err, BP_EINVAL,
                            "tensor \"%s\" block \"%s\" format %s method %s: duplicate row",
                            tn, block, row->format, bp_table_method_name(row->method));

    uint32_t ti, bi, fi;
    if (pool_intern(&t->pool, tn, &ti) || pool_intern(&t->pool, block, &bi) ||
        pool_intern(&t->pool, row->format, &fi) || grow_rows(t))
        return bp_error_set(err, BP_ENOMEM, "table: out of memory");
    for (int m = 0; m < BP_METRIC_COUNT; m++)
        if (!isnan(row->metric[m]) && ensure_metric(t, (bp_metric)m))
            return bp_error_set(err, BP_ENOMEM, "table: out of memory");
    if ((t->n + 1) * 2 > t->n_keys) {
        size_t nk = t->n_keys * 2;
        uint32_t *keys = calloc(nk, sizeof *keys);
        if (!keys)
            return bp_error_set(err, BP_ENOMEM, "table: out of memory");
        for (size_t r = 0; r < t->n; r++)
            key_insert(keys, nk, t, r);
        free(t->keys);
        t->keys = keys;
        t->n_keys = nk;
    }
    size_t r = t->n;
    t->tensor[r] = ti;
    t->block[r] = bi;
    t->format[r] = fi;
    t->method[r] = (uint8_t)row->method;
    t->bytes[r] = row->bytes;
    t->rows[r] = row->rows;
    t->cols[r] = row->cols;
    t->params[r] = row->params;
    for (int m = 0; m < BP_METRIC_COUNT; m++) {
        if (t->metric[m])
            t->metric[m][r] = row->metric[m];
        if (!isnan(row->metric[m]))
            t->metric_cols |= 1u << m;
    }
    t->n++;
    key_insert(t->keys, t->n_keys, t, r);
    return BP_OK;
}

int bp_table_get_row(const bp_table *t, size_t i, bp_table_row *out)
{
    if (!t || !out || i >= t->n)
        return BP_EINVAL;
    out->tensor = t->pool.strs[t->tensor[i]];
    out->block = t->block[i] ? t->pool.strs[t->block[i]] : NULL;
    out->format = t->pool.strs[t->format[i]];
    out->method = (bp_quant_method)t->method[i];
    out->bytes = t->bytes[i];
    out->rows = t->rows[i];
    out->cols = t->cols[i];
    out->params = t->params[i];
    for (int m = 0; m < BP_METRIC_COUNT; m++)
        out->metric[m] = t->metric[m] ? t->metric[m][i] : NAN;
    return BP_OK;
}

/* ---- metadata ------------------------------------------------------------ */

static int valid_meta_key(const char *k)
{
    if (!k || !*k)
        return 0;
    for (; *k; k++) {
        char c = *k;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

int bp_table_set_meta(bp_table *t, const char *key, const char *value,
                      bp_error *err)
{
    if (!t || !value)
        return bp_error_set(err, BP_EINVAL, "bp_table_set_meta: NULL argument");
    if (!valid_meta_key(key))
        return bp_error_set(err, BP_EINVAL,
                            "table metadata key \"%s\": use letters, digits, '_', '.', '-'",
                            key ? key : "(null)");
    size_t vl = strlen(value);
    if (bp__has_control(value) || (vl && (is_blank(value[0]) || is_blank(value[vl - 1]))))
        return bp_error_set(err, BP_EINVAL,
                            "table metadata \"%s\": value has control characters or "
                            "leading/trailing blanks",
                            key);
    char *v = strdup(value);
    if (!v)
        return bp_error_set(err, BP_ENOMEM, "table: out of memory");
    for (size_t i = 0; i < t->n_meta; i++) {
        if (strcmp(t->meta_key[i], key) == 0) {
            free(t->meta_val[i]);
            t->meta_val[i] = v;
            return BP_OK;
        }
    }
    if (t->n_meta == t->cap_meta) {
        size_t nc = t->cap_meta ? 2 * t->cap_meta : 8;
        char **nk = realloc(t->meta_key, nc * sizeof *nk);
        if (nk)
            t->meta_key = nk;
        char **nv = nk ? realloc(t->meta_val, nc * sizeof *nv) : NULL;
        if (!nk || !nv) {
            free(v);
            return bp_error_set(err, BP_ENOMEM, "table: out of memory");
        }
        t->meta_val = nv;
        t->cap_meta = nc;
    }
    char *k = strdup(key);
    if (!k) {
        free(v);
        return bp_error_set(err, BP_ENOMEM, "table: out of memory");
    }
    t->meta_key[t->n_meta] = k;
    t->meta_val[t->n_meta] = v;
    t->n_meta++;
    return BP_OK;
}

const char *bp_table_get_meta(const bp_table *t, const char *key)
{
    if (!t || !key)
        return NULL;
    for (size_t i = 0; i < t->n_meta; i++)
        if (strcmp(t->meta_key[i], key) == 0)
            return t->meta_val[i];
    return NULL;
}

size_t bp_table_meta_count(const bp_table *t)
{
    return t ? t->n_meta : 0;
}

int bp_table_meta_at(const bp_table *t, size_t i, const char **key,
                     const char **value)
{
    if (!t || i >= t->n_meta)
        return BP_EINVAL;
    if (key)
        *key = t->meta_key[i];
    if (value)
        *value = t->meta_val[i];
    return BP_OK;
}

/* ---- writer ------------------------------------------------------------ */

/* Quote when a reader would otherwise change the text: separators, quotes,
 * edge blanks (trimmed when unquoted) and a leading '#' (a comment line). */
static void write_field(FILE *fp, const char *s)
{
    size_t n = strlen(s);
    int quote = n && (is_blank(s[0]) || is_blank(s[n - 1]) || s[0] == '#');
    for (size_t i = 0; i < n && !quote; i++)
        if (s[i] == ',' || s[i] == '"')
            quote = 1;
    if (!quote) {
        fputs(s, fp);
        return;
    }
    fputc('"', fp);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"')
            fputc('"', fp);
        fputc(s[i], fp);
    }
    fputc('"', fp);
}

int bp_table_write(const bp_table *t, const char *path, bp_error *err)
{
    if (!t || !path)
        return bp_error_set(err, BP_EINVAL, "bp_table_write: NULL argument");
    if (!(t->metric_cols & ((1u << BP_METRIC_N_ERROR) - 1)))
        return bp_error_set(err, BP_EINVAL,
                            "%s: table has no error metric column "
                            "(mse, hdiag, hfull, gptq or dkl)",
                            path);
    bp__atomic_file af;
    int rc = bp__atomic_open(&af, path, err);
    if (rc)
        return rc;
    FILE *fp = af.fp;
    fprintf(fp, "# %s\n", BP_TABLE_SCHEMA);
    for (size_t i = 0; i < t->n_meta; i++)
        fprintf(fp, "# %s=%s\n", t->meta_key[i], t->meta_val[i]);
    fputs("tensor,block,format,method,bytes,rows,cols,params", fp);
    for (int m = 0; m < BP_METRIC_COUNT; m++)
        if (t->metric_cols & (1u << m))
            fprintf(fp, ",%s", metric_names[m]);
    fputc('\n', fp);
    for (size_t r = 0; r < t->n; r++) {
        write_field(fp, t->pool.strs[t->tensor[r]]);
        fputc(',', fp);
        write_field(fp, t->pool.strs[t->block[r]]);
        fputc(',', fp);
        write_field(fp, t->pool.strs[t->format[r]]);
        fprintf(fp, ",%s,%" PRIu64 ",", bp_table_method_name(t->method[r]),
                t->bytes[r]);
        if (t->rows[r])
            fprintf(fp, "%" PRId64, t->rows[r]);
        fputc(',', fp);
        if (t->cols[r])
            fprintf(fp, "%" PRId64, t->cols[r]);
        fputc(',', fp);
        if (t->params[r])
            fprintf(fp, "%" PRIu64, t->params[r]);
        for (int m = 0; m < BP_METRIC_COUNT; m++) {
            if (!(t->metric_cols & (1u << m)))
                continue;
            fputc(',', fp);
            double v = t->metric[m] ? t->metric[m][r] : NAN;
            if (!isnan(v))
                fprintf(fp, "%.17g", v);
        }
        fputc('\n', fp);
    }
    return bp__atomic_commit(&af, 1, err);
}

/* ---- reader -------------------------------------------------------------- */

enum col_kind {
    COL_IGNORED = -1,
    COL_TENSOR = 0,
    COL_FORMAT,
    COL_BYTES,
    COL_ROWS,
    COL_COLS,
    COL_PARAMS,
    COL_BLOCK,
    COL_METHOD,
    COL_METRIC0 /* + bp_metric */
};

static const char *const fixed_cols[] = {"tensor", "format", "bytes", "rows",
                                         "cols",   "params", "block", "method"};
#define N_FIXED_COLS ((int)(sizeof fixed_cols / sizeof fixed_cols[0]))

static int col_kind_of(const char *name)
{
    for (int i = 0; i < N_FIXED_COLS; i++)
        if (strcmp(name, fixed_cols[i]) == 0)
            return i;
    int m = bp_table_metric_from_name(name);
    return m >= 0 ? COL_METRIC0 + m : COL_IGNORED;
}

static char *trim(char *s)
{
    while (is_blank(*s))
        s++;
    size_t n = strlen(s);
    while (n && is_blank(s[n - 1]))
        s[--n] = '\0';
    return s;
}

typedef struct fields {
    char **v;
    size_t n, cap;
} fields;

static int fields_push(fields *f, char *s)
{
    if (f->n == f->cap) {
        size_t nc = f->cap ? 2 * f->cap : 16;
        char **nv = realloc(f->v, nc * sizeof *nv);
        if (!nv)
            return BP_ENOMEM;
        f->v = nv;
        f->cap = nc;
    }
    f->v[f->n++] = s;
    return BP_OK;
}

/* Split one line in place. Fields may be wrapped in double quotes, with ""
 * standing for one quote; unquoted fields are trimmed of blanks. A quoted
 * field cannot span lines. Returns BP_OK, BP_ENOMEM, or BP_EFORMAT with *why
 * set and *bad the 0-based index of the offending field. */
static int csv_split(char *line, fields *f, const char **why, size_t *bad)
{
    f->n = 0;
    char *p = line;
    for (;;) {
        while (is_blank(*p))
            p++;
        char *start;
        if (*p == '"') {
            char *w = p, *r = p + 1;
            start = w;
            for (;;) {
                if (*r == '\0') {
                    *why = "unterminated quoted field";
                    *bad = f->n;
                    return BP_EFORMAT;
                }
                if (*r == '"') {
                    if (r[1] == '"') {
                        *w++ = '"';
                        r += 2;
                        continue;
                    }
                    r++;
                    break;
                }
                *w++ = *r++;
            }
            *w = '\0';
            while (is_blank(*r))
                r++;
            if (*r != ',' && *r != '\0') {
                *why = "text after a closing quote";
                *bad = f->n;
                return BP_EFORMAT;
            }
            if (fields_push(f, start))
                return BP_ENOMEM;
            if (*r == '\0')
                return BP_OK;
            p = r + 1;
        } else {
            start = p;
            while (*p && *p != ',') {
                if (*p == '"') {
                    *why = "quote inside an unquoted field";
                    *bad = f->n;
                    return BP_EFORMAT;
                }
                p++;
            }
            int last = *p == '\0';
            *p = '\0';
            if (fields_push(f, trim(start)))
                return BP_ENOMEM;
            if (last)
                return BP_OK;
            p++;
        }
    }
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!*s)
        return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -2;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int parse_double(const char *s, double *out)
{
    if (!*s)
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end != '\0' || end == s)
        return -1;
    if (!isfinite(v))
        return -2;
    *out = v;
    return 0;
}

typedef struct reader {
    const char *path;
    size_t line;
    bp_error *err;
} reader;

static int line_error(const reader *rd, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int line_error(const reader *rd, int code, const char *fmt, ...)
{
    char msg[BP_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return bp_error_set(rd->err, code, "%s:%zu: %s", rd->path, rd->line, msg);
}

static int col_error(const reader *rd, const char *col, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int col_error(const reader *rd, const char *col, const char *fmt, ...)
{
    char msg[BP_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return bp_error_set(rd->err, BP_EFORMAT, "%s:%zu: column \"%s\": %s", rd->path,
                        rd->line, col, msg);
}

/* Positive integer cell; empty allowed when optional. */
static int cell_u64(const reader *rd, const char *col, const char *s,
                    int optional, uint64_t max, uint64_t *out)
{
    *out = 0;
    if (!*s) {
        if (optional)
            return BP_OK;
        return col_error(rd, col, "empty (a positive integer is required)");
    }
    if (s[0] == '-')
        return col_error(rd, col, "negative value %s (must be > 0)", s);
    uint64_t v;
    int r = parse_u64(s, &v);
    if (r == -2 || (r == 0 && v > max))
        return col_error(rd, col, "integer out of range: \"%s\"", s);
    if (r != 0)
        return col_error(rd, col, "not a non-negative integer: \"%s\"", s);
    if (v == 0)
        return col_error(rd, col, "must be > 0");
    *out = v;
    return BP_OK;
}

/* Meta line "# key=value" (or a free comment): returns BP_OK or an error. */
static int read_meta(const reader *rd, bp_table *t, char *line)
{
    char *body = line + 1;
    char *eq = strchr(body, '=');
    if (!eq)
        return BP_OK; /* a comment */
    *eq = '\0';
    char *key = trim(body);
    char *value = trim(eq + 1);
    if (!valid_meta_key(key))
        return BP_OK; /* prose that happens to contain '=' */
    if (bp_table_get_meta(t, key))
        return line_error(rd, BP_EFORMAT, "duplicate metadata key \"%s\"", key);
    bp_error e;
    int rc = bp_table_set_meta(t, key, value, &e);
    if (rc)
        return line_error(rd, rc, "%s", e.msg);
    return BP_OK;
}

int bp_table_read(const char *path, bp_table **out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_table_read: NULL out");
    *out = NULL;
    if (!path)
        return bp_error_set(err, BP_EINVAL, "bp_table_read: NULL path");
    FILE *fp = fopen(path, "r");
    if (!fp)
        return bp_error_set(err, errno == ENOENT ? BP_ENOTFOUND : BP_EIO, "%s: %s",
                            path, strerror(errno));
    int rc = BP_OK;
    bp_table *t = bp_table_new();
    char *line = NULL;
    size_t line_cap = 0;
    fields f = {0};
    int *kind = NULL;      /* per header column */
    size_t n_cols = 0;
    char **col_names = NULL; /* copies of header names */
    uint32_t *row_line = NULL; /* line of each data row, for duplicates */
    size_t row_line_cap = 0;
    int have_header = 0;
    reader rd = {path, 0, err};
    if (!t) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    for (;;) {
        errno = 0;
        ssize_t len = getline(&line, &line_cap, fp);
        if (len < 0) {
            if (ferror(fp))
                rc = bp_error_set(err, BP_EIO, "%s: read error: %s", path,
                                  strerror(errno));
            break;
        }
        rd.line++;
        if ((size_t)len != strlen(line)) {
            rc = line_error(&rd, BP_EFORMAT, "NUL byte in line");
            goto out;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        char *s = line;
        if (rd.line == 1) {
            if ((unsigned char)s[0] == 0xef && (unsigned char)s[1] == 0xbb &&
                (unsigned char)s[2] == 0xbf)
                s += 3; /* UTF-8 byte order mark from spreadsheet exports */
            char *body = s[0] == '#' ? trim(s + 1) : NULL;
            if (!body || strcmp(body, BP_TABLE_SCHEMA) != 0) {
                rc = line_error(&rd, BP_EFORMAT,
                                "first line must be \"# %s\" (not a bitplan table, "
                                "or a different version)",
                                BP_TABLE_SCHEMA);
                goto out;
            }
            continue;
        }
        char *ts = trim(s);
        if (*ts == '\0')
            continue;
        if (s[0] == '#') {
            if (!have_header && (rc = read_meta(&rd, t, s)))
                goto out;
            continue;
        }
        const char *why = NULL;
        size_t bad = 0;
        rc = csv_split(s, &f, &why, &bad);
        if (rc == BP_ENOMEM) {
            rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
            goto out;
        }
        if (rc) {
            rc = line_error(&rd, BP_EFORMAT, "field %zu: %s", bad + 1, why);
            goto out;
        }
        if (!have_header) {
            n_cols = f.n;
            kind = malloc(n_cols * sizeof *kind);
            col_names = calloc(n_cols, sizeof *col_names);
            if (!kind || !col_names) {
                rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
                goto out;
            }
            int seen[COL_METRIC0 + BP_METRIC_COUNT] = {0};
            for (size_t c = 0; c < n_cols; c++) {
                col_names[c] = strdup(f.v[c]);
                if (!col_names[c]) {
                    rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
                    goto out;
                }
                for (size_t d = 0; d < c && *f.v[c]; d++)
                    if (strcmp(col_names[d], f.v[c]) == 0) {
                        rc = line_error(&rd, BP_EFORMAT, "duplicate column \"%s\"",
                                        f.v[c]);
                        goto out;
                    }
                kind[c] = col_kind_of(f.v[c]);
                if (kind[c] >= 0)
                    seen[kind[c]] = 1;
            }
            static const int required[] = {COL_TENSOR, COL_FORMAT, COL_BYTES};
            for (size_t i = 0; i < 3; i++)
                if (!seen[required[i]]) {
                    rc = line_error(&rd, BP_EFORMAT,
                                    "missing required column \"%s\" (header must name "
                                    "tensor, format, bytes and a metric)",
                                    fixed_cols[required[i]]);
                    goto out;
                }
            int n_err = 0;
            for (int m = 0; m < BP_METRIC_COUNT; m++)
                if (seen[COL_METRIC0 + m]) {
                    if (m < BP_METRIC_N_ERROR)
                        n_err++;
                    if ((rc = bp_table_declare_metric(t, (bp_metric)m, err)))
                        goto out;
                }
            if (!n_err) {
                rc = line_error(&rd, BP_EFORMAT,
                                "no metric column (need at least one of mse, hdiag, "
                                "hfull, gptq, dkl)");
                goto out;
            }
            have_header = 1;
            continue;
        }
        if (f.n != n_cols) {
            rc = line_error(&rd, BP_EFORMAT, "%zu fields, but the header has %zu", f.n,
                            n_cols);
            goto out;
        }
        bp_table_row row;
        bp_table_row_init(&row);
        for (size_t c = 0; c < n_cols && rc == BP_OK; c++) {
            const char *v = f.v[c];
            const char *cn = col_names[c];
            uint64_t u;
            switch (kind[c]) {
            case COL_IGNORED:
                break;
            case COL_TENSOR:
                if (!*v)
                    rc = col_error(&rd, cn, "empty tensor name");
                row.tensor = v;
                break;
            case COL_FORMAT:
                if (!*v)
                    rc = col_error(&rd, cn, "empty format");
                row.format = v;
                break;
            case COL_BLOCK:
                row.block = v;
                break;
            case COL_METHOD:
                if (*v) {
                    int m = bp_table_method_from_name(v);
                    if (m < 0)
                        rc = col_error(&rd, cn, "unknown method \"%s\" (rtn, gptq or gptq_act)", v);
                    else
                        row.method = (bp_quant_method)m;
                }
                break;
            case COL_BYTES:
                rc = cell_u64(&rd, cn, v, 0, UINT64_MAX, &row.bytes);
                break;
            case COL_ROWS:
            case COL_COLS:
                rc = cell_u64(&rd, cn, v, 1, INT64_MAX, &u);
                *(kind[c] == COL_ROWS ? &row.rows : &row.cols) = (int64_t)u;
                break;
            case COL_PARAMS:
                rc = cell_u64(&rd, cn, v, 1, UINT64_MAX, &row.params);
                break;
            default: {
                int m = kind[c] - COL_METRIC0;
                if (!*v)
                    break;
                double d;
                int r = parse_double(v, &d);
                if (r == -2)
                    rc = col_error(&rd, cn, "not a finite number: \"%s\"", v);
                else if (r != 0)
                    rc = col_error(&rd, cn, "not a number: \"%s\"", v);
                else if (d < 0)
                    rc = col_error(&rd, cn, "negative value %s (errors and costs are >= 0)",
                                   v);
                else
                    row.metric[m] = d;
                break;
            }
            }
        }
        if (rc)
            goto out;
        long dup = bp_table_find(t, row.tensor, row.block, row.format, row.method);
        if (dup >= 0) {
            rc = line_error(&rd, BP_EFORMAT,
                            "duplicate key (tensor \"%s\", block \"%s\", format \"%s\", "
                            "method %s): first on line %" PRIu32,
                            row.tensor, row.block ? row.block : "", row.format,
                            bp_table_method_name(row.method), row_line[dup]);
            goto out;
        }
        bp_error e;
        rc = bp_table_add_row(t, &row, &e);
        if (rc) {
            rc = line_error(&rd, rc == BP_ENOMEM ? BP_ENOMEM : BP_EFORMAT, "%s", e.msg);
            goto out;
        }
        if (bp_table_count(t) > row_line_cap) {
            size_t nc = row_line_cap ? 2 * row_line_cap : 1024;
            uint32_t *nl = realloc(row_line, nc * sizeof *nl);
            if (!nl) {
                rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
                goto out;
            }
            row_line = nl;
            row_line_cap = nc;
        }
        row_line[bp_table_count(t) - 1] = rd.line > UINT32_MAX ? UINT32_MAX : (uint32_t)rd.line;
    }
    if (rc == BP_OK && rd.line == 0)
        rc = bp_error_set(err, BP_EFORMAT, "%s: empty file (expected \"# %s\")", path,
                          BP_TABLE_SCHEMA);
    else if (rc == BP_OK && !have_header)
        rc = bp_error_set(err, BP_EFORMAT, "%s: no header row", path);
out:
    free(line);
    free(f.v);
    free(kind);
    if (col_names)
        for (size_t c = 0; c < n_cols; c++)
            free(col_names[c]);
    free(col_names);
    free(row_line);
    fclose(fp);
    if (rc == BP_OK)
        *out = t;
    else
        bp_table_destroy(&t);
    return rc;
}
