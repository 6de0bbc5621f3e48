/* Token streams: binary, JSON and byte-text loaders, hashing, splitting. */
#include "bitplan/tokens.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "calib_internal.h"

/* 2^31 tokens (8 GiB of ids) is far beyond any calibration or evaluation
 * set and keeps every count comfortably inside int64 arithmetic. */
#define MAX_TOKENS ((int64_t)1 << 31)

struct bp_tokens {
    uint32_t *ids;
    int64_t n;
    char *source;
    char hash[BP_HASH_HEX_LEN + 1];
};

void bp_tokens_destroy(bp_tokens **pt)
{
    if (!pt || !*pt)
        return;
    free((*pt)->ids);
    free((*pt)->source);
    free(*pt);
    *pt = NULL;
}

static void hash_ids(bp_tokens *t)
{
    bp_hash h;
    bp_hash_init(&h);
    bp_hash_update_str(&h, "bitplan.tokens.v1");
    bp_hash_update_u64(&h, (uint64_t)t->n);
    unsigned char buf[4096];
    size_t fill = 0;
    for (int64_t i = 0; i < t->n; i++) {
        uint32_t v = t->ids[i];
        buf[fill++] = (unsigned char)v;
        buf[fill++] = (unsigned char)(v >> 8);
        buf[fill++] = (unsigned char)(v >> 16);
        buf[fill++] = (unsigned char)(v >> 24);
        if (fill == sizeof buf) {
            bp_hash_update(&h, buf, fill);
            fill = 0;
        }
    }
    if (fill)
        bp_hash_update(&h, buf, fill);
    bp_hash_final_hex(&h, t->hash);
}

/* Takes ownership of ids (freed on failure). */
static int make(uint32_t *ids, int64_t n, const char *source, bp_tokens **out,
                bp_error *err)
{
    bp_tokens *t = calloc(1, sizeof *t);
    char *src = strdup(source ? source : "<memory>");
    if (!t || !src) {
        free(t);
        free(src);
        free(ids);
        return bp_error_set(err, BP_ENOMEM, "tokens: out of memory");
    }
    t->ids = ids;
    t->n = n;
    t->source = src;
    hash_ids(t);
    *out = t;
    return BP_OK;
}

/* Read a whole file; *len bytes, NUL-terminated for the JSON parser. */
static int read_file(const char *path, unsigned char **data, size_t *len, bp_error *err)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return bp_error_set(err, errno == ENOENT ? BP_ENOTFOUND : BP_EIO,
                            "%s: cannot open: %s", path, strerror(errno));
    int rc = BP_OK;
    unsigned char *buf = NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = bp_error_set(err, BP_EIO, "%s: not a regular file", path);
        goto out;
    }
    if ((uint64_t)st.st_size > (uint64_t)MAX_TOKENS * 16u) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: %lld bytes is too large for a token file",
                          path, (long long)st.st_size);
        goto out;
    }
    size_t n = (size_t)st.st_size;
    buf = malloc(n + 1);
    if (!buf) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    if (n && fread(buf, 1, n, f) != n) {
        rc = bp_error_set(err, BP_EIO, "%s: read failed", path);
        goto out;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    buf = NULL;
out:
    free(buf);
    fclose(f);
    return rc;
}

int bp_tokens_load_bin(const char *path, bp_tokens **out, bp_error *err)
{
    if (!path || !out)
        return bp_error_set(err, BP_EINVAL, "tokens: NULL argument");
    *out = NULL;
    unsigned char *data;
    size_t len;
    int rc = read_file(path, &data, &len, err);
    if (rc < 0)
        return rc;
    if (len == 0 || len % 4 != 0) {
        free(data);
        if (len == 0)
            return bp_error_set(err, BP_EFORMAT, "%s: token file is empty", path);
        return bp_error_set(err, BP_EFORMAT,
                            "%s: size %zu bytes is not a multiple of 4 (expected "
                            "little-endian uint32 token ids)",
                            path, len);
    }
    int64_t n = (int64_t)(len / 4);
    uint32_t *ids = malloc(sizeof(uint32_t) * (size_t)n);
    if (!ids) {
        free(data);
        return bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
    }
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *b = data + 4 * i;
        ids[i] = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                 (uint32_t)b[3] << 24;
    }
    free(data);
    return make(ids, n, path, out, err);
}

int bp_tokens_load_json(const char *path, bp_tokens **out, bp_error *err)
{
    if (!path || !out)
        return bp_error_set(err, BP_EINVAL, "tokens: NULL argument");
    *out = NULL;
    unsigned char *data;
    size_t len;
    int rc = read_file(path, &data, &len, err);
    if (rc < 0)
        return rc;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)data, len, 0, &jerr);
    free(data);
    if (!root)
        return bp_error_set(err, BP_EFORMAT, "%s: invalid JSON at line %d column %d: %s",
                            path, jerr.line, jerr.column, jerr.text);
    uint32_t *ids = NULL;
    if (!json_is_array(root)) {
        rc = bp_error_set(err, BP_EFORMAT,
                          "%s: expected a JSON array of token ids at the top level", path);
        goto out;
    }
    size_t n = json_array_size(root);
    if (n == 0) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: token array is empty", path);
        goto out;
    }
    ids = malloc(sizeof(uint32_t) * n);
    if (!ids) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(root, i);
        if (!json_is_integer(v)) {
            rc = bp_error_set(err, BP_EFORMAT,
                              "%s: element %zu is not an integer token id", path, i);
            goto out;
        }
        json_int_t x = json_integer_value(v);
        if (x < 0 || x > (json_int_t)UINT32_MAX) {
            rc = bp_error_set(err, BP_EFORMAT,
                              "%s: element %zu = %lld is not a token id (must be in "
                              "[0, 4294967295])",
                              path, i, (long long)x);
            goto out;
        }
        ids[i] = (uint32_t)x;
    }
    rc = make(ids, (int64_t)n, path, out, err);
    ids = NULL;
out:
    free(ids);
    json_decref(root);
    return rc;
}

int bp_tokens_load_text(const char *path, int64_t vocab_size, bp_tokens **out,
                        bp_error *err)
{
    if (!path || !out)
        return bp_error_set(err, BP_EINVAL, "tokens: NULL argument");
    *out = NULL;
    if (vocab_size < 256)
        return bp_error_set(err, BP_EUNSUPPORTED,
                            "%s: text input maps bytes to token ids 0..255, but the "
                            "model's vocab_size is %lld (< 256); use token ids instead",
                            path, (long long)vocab_size);
    unsigned char *data;
    size_t len;
    int rc = read_file(path, &data, &len, err);
    if (rc < 0)
        return rc;
    if (len == 0) {
        free(data);
        return bp_error_set(err, BP_EFORMAT, "%s: text file is empty", path);
    }
    uint32_t *ids = malloc(sizeof(uint32_t) * len);
    if (!ids) {
        free(data);
        return bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
    }
    for (size_t i = 0; i < len; i++)
        ids[i] = data[i];
    free(data);
    return make(ids, (int64_t)len, path, out, err);
}

int bp_tokens_from_array(const uint32_t *src, int64_t n, const char *source,
                         bp_tokens **out, bp_error *err)
{
    if (!out || (!src && n > 0))
        return bp_error_set(err, BP_EINVAL, "tokens: NULL argument");
    *out = NULL;
    if (n < 1 || n > MAX_TOKENS)
        return bp_error_set(err, BP_EINVAL, "%s: %lld tokens (need 1 .. 2^31)",
                            source ? source : "<memory>", (long long)n);
    uint32_t *ids = malloc(sizeof(uint32_t) * (size_t)n);
    if (!ids)
        return bp_error_set(err, BP_ENOMEM, "tokens: out of memory");
    memcpy(ids, src, sizeof(uint32_t) * (size_t)n);
    return make(ids, n, source, out, err);
}

int64_t bp_tokens_count(const bp_tokens *t) { return t ? t->n : 0; }
const uint32_t *bp_tokens_data(const bp_tokens *t) { return t ? t->ids : NULL; }
const char *bp_tokens_source(const bp_tokens *t) { return t ? t->source : NULL; }
const char *bp_tokens_hash(const bp_tokens *t) { return t ? t->hash : NULL; }

int bp_tokens_check(const bp_tokens *t, int64_t vocab_size, int64_t first, int64_t n,
                    bp_error *err)
{
    if (!t)
        return bp_error_set(err, BP_EINVAL, "tokens: NULL argument");
    if (first < 0 || n < 0 || first > t->n || n > t->n - first)
        return bp_error_set(err, BP_EINVAL,
                            "%s: positions [%lld, %lld) outside the %lld tokens",
                            t->source, (long long)first, (long long)(first + n),
                            (long long)t->n);
    return bp__check_ids(t->ids, first, n, vocab_size, t->source, err);
}

int bp_tokens_split(const bp_tokens *t, int64_t ctx, int64_t max_sequences,
                    int64_t *n_sequences, bp_error *err)
{
    if (!t || !n_sequences)
        return bp_error_set(err, BP_EINVAL, "tokens: NULL argument");
    *n_sequences = 0;
    if (ctx < 1)
        return bp_error_set(err, BP_EINVAL, "%s: ctx %lld must be >= 1", t->source,
                            (long long)ctx);
    if (max_sequences < 0)
        return bp_error_set(err, BP_EINVAL, "%s: number of sequences %lld must be >= 0",
                            t->source, (long long)max_sequences);
    int64_t fit = t->n / ctx;
    if (fit == 0)
        return bp_error_set(err, BP_EINVAL,
                            "%s: %lld tokens is shorter than one sequence of ctx %lld",
                            t->source, (long long)t->n, (long long)ctx);
    if (max_sequences > fit)
        return bp_error_set(err, BP_EINVAL,
                            "%s: %lld sequences of %lld tokens requested, but its %lld "
                            "tokens hold only %lld",
                            t->source, (long long)max_sequences, (long long)ctx,
                            (long long)t->n, (long long)fit);
    *n_sequences = max_sequences ? max_sequences : fit;
    return BP_OK;
}
