/* A Hugging Face model directory: config.json plus model.safetensors or the
 * shards named by model.safetensors.index.json. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io_internal.h"

#define CONFIG_NAME "config.json"
#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define MAX_CONFIG_BYTES (64u * 1024u * 1024u)
#define MAX_INDEX_BYTES (256u * 1024u * 1024u)

struct bp_model {
    char *dir;
    char *config; /* config.json text, NUL-terminated */
    size_t n_files;
    bp_safetensors **files;
    size_t n;
    const bp_tensor_info **tensors; /* strcmp order */
    uint64_t total;                 /* bytes */
};

/* One weight_map entry. */
typedef struct mapping {
    const char *tensor; /* borrowed from the index JSON */
    const char *shard;
    size_t shard_idx; /* into the unique shard list */
} mapping;

static int cmp_mapping_shard(const void *a, const void *b)
{
    const mapping *x = a, *y = b;
    int c = strcmp(x->shard, y->shard);
    return c ? c : strcmp(x->tensor, y->tensor);
}

static int cmp_info_name(const void *a, const void *b)
{
    const bp_tensor_info *x = *(const bp_tensor_info *const *)a;
    const bp_tensor_info *y = *(const bp_tensor_info *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->file, y->file);
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* A shard name is a plain file name: no directories, no way out of dir. */
static int shard_name_ok(const char *s)
{
    return s[0] != '\0' && !strchr(s, '/') && !strchr(s, '\\') && !strstr(s, "..");
}

static int load_config(bp_model *m, bp_error *err)
{
    char *path = bp__path_join(m->dir, CONFIG_NAME);
    if (!path)
        return bp_error_set(err, BP_ENOMEM, "%s: out of memory", m->dir);
    size_t len = 0;
    int rc = bp__read_file(path, MAX_CONFIG_BYTES, &m->config, &len, err);
    if (rc)
        goto out;
    json_error_t jerr;
    json_t *root = json_loadb(m->config, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: not valid JSON: %s (line %d, column %d)", path,
                          jerr.text, jerr.line, jerr.column);
        goto out;
    }
    if (!json_is_object(root))
        rc = bp_error_set(err, BP_EFORMAT, "%s: not a JSON object", path);
    json_decref(root);
out:
    free(path);
    return rc;
}

static int add_file(bp_model *m, bp_safetensors *f)
{
    bp_safetensors **nf = realloc(m->files, (m->n_files + 1) * sizeof *nf);
    if (!nf)
        return BP_ENOMEM;
    m->files = nf;
    m->files[m->n_files++] = f;
    return BP_OK;
}

static int open_file(bp_model *m, const char *name, bp_safetensors **out, bp_error *err)
{
    *out = NULL;
    char *path = bp__path_join(m->dir, name);
    if (!path)
        return bp_error_set(err, BP_ENOMEM, "%s: out of memory", m->dir);
    bp_safetensors *f = NULL;
    int rc = bp_safetensors_open(path, &f, err);
    free(path);
    if (rc)
        return rc;
    if (add_file(m, f) != BP_OK) {
        bp_safetensors_destroy(&f);
        return bp_error_set(err, BP_ENOMEM, "%s: out of memory", m->dir);
    }
    *out = f;
    return BP_OK;
}

/* Gather every tensor of every file, sort by name, reject duplicates. */
static int build_table(bp_model *m, bp_error *err)
{
    size_t n = 0;
    for (size_t i = 0; i < m->n_files; i++)
        n += bp_safetensors_count(m->files[i]);
    m->tensors = calloc(n ? n : 1, sizeof *m->tensors);
    if (!m->tensors)
        return bp_error_set(err, BP_ENOMEM, "%s: out of memory", m->dir);
    for (size_t i = 0; i < m->n_files; i++)
        for (size_t j = 0; j < bp_safetensors_count(m->files[i]); j++)
            m->tensors[m->n++] = bp_safetensors_tensor(m->files[i], j);
    qsort(m->tensors, m->n, sizeof *m->tensors, cmp_info_name);
    m->total = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (i > 0 && strcmp(m->tensors[i - 1]->name, m->tensors[i]->name) == 0)
            return bp_error_set(err, BP_EFORMAT,
                                "%s: duplicate tensor '%.*s' in %s and %s", m->dir,
                                BP__NAME_SHOWN, m->tensors[i]->name, m->tensors[i - 1]->file,
                                m->tensors[i]->file);
        m->total += m->tensors[i]->nbytes;
    }
    return BP_OK;
}

static int load_index(bp_model *m, const char *index_path, bp_error *err)
{
    int rc = BP_OK;
    char *text = NULL;
    json_t *root = NULL;
    mapping *maps = NULL;
    bp_safetensors **shard_files = NULL;
    size_t len = 0;
    rc = bp__read_file(index_path, MAX_INDEX_BYTES, &text, &len, err);
    if (rc)
        goto out;
    json_error_t jerr;
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: not valid JSON: %s (line %d, column %d)",
                          index_path, jerr.text, jerr.line, jerr.column);
        goto out;
    }
    if (!json_is_object(root)) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: not a JSON object", index_path);
        goto out;
    }
    json_t *wm = json_object_get(root, "weight_map");
    if (!wm || !json_is_object(wm)) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: missing \"weight_map\" object", index_path);
        goto out;
    }
    size_t nmap = json_object_size(wm);
    if (nmap == 0) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: \"weight_map\" is empty", index_path);
        goto out;
    }
    maps = calloc(nmap, sizeof *maps);
    shard_files = calloc(nmap, sizeof *shard_files);
    if (!maps || !shard_files) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", index_path);
        goto out;
    }
    size_t k = 0;
    const char *key;
    json_t *val;
    json_object_foreach(wm, key, val) {
        if (!json_is_string(val)) {
            rc = bp_error_set(err, BP_EFORMAT,
                              "%s: weight_map entry for tensor '%.*s' is not a string",
                              index_path, BP__NAME_SHOWN, key);
            goto out;
        }
        const char *shard = json_string_value(val);
        if (!shard_name_ok(shard)) {
            rc = bp_error_set(err, BP_EFORMAT,
                              "%s: tensor '%.*s' maps to shard '%.*s', which is not a plain "
                              "file name (no '/' or '..' allowed)",
                              index_path, BP__NAME_SHOWN, key, BP__NAME_SHOWN, shard);
            goto out;
        }
        maps[k].tensor = key;
        maps[k].shard = shard;
        k++;
    }
    qsort(maps, nmap, sizeof *maps, cmp_mapping_shard);

    /* Open each distinct shard once, in name order. */
    size_t nshard = 0;
    for (size_t i = 0; i < nmap; i++) {
        if (i == 0 || strcmp(maps[i].shard, maps[i - 1].shard) != 0) {
            char *sp = bp__path_join(m->dir, maps[i].shard);
            if (!sp) {
                rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", m->dir);
                goto out;
            }
            int exists = file_exists(sp);
            free(sp);
            if (!exists) {
                rc = bp_error_set(err, BP_ENOTFOUND,
                                  "%s/%s: shard not found (listed in %s for tensor '%.*s')",
                                  m->dir, maps[i].shard, INDEX_NAME, BP__NAME_SHOWN,
                                  maps[i].tensor);
                goto out;
            }
            rc = open_file(m, maps[i].shard, &shard_files[nshard], err);
            if (rc)
                goto out;
            nshard++;
        }
        maps[i].shard_idx = nshard - 1;
    }

    /* Every mapped tensor is in its shard ... */
    for (size_t i = 0; i < nmap; i++)
        if (!bp_safetensors_find(shard_files[maps[i].shard_idx], maps[i].tensor)) {
            rc = bp_error_set(err, BP_EFORMAT,
                              "%s: index maps tensor '%.*s' to shard '%s', which does not "
                              "contain it",
                              index_path, BP__NAME_SHOWN, maps[i].tensor, maps[i].shard);
            goto out;
        }
    /* ... no tensor is in two shards ... */
    rc = build_table(m, err);
    if (rc)
        goto out;
    /* ... and every tensor of a shard is mapped to that shard. */
    for (size_t s = 0; s < nshard; s++) {
        const bp_safetensors *f = shard_files[s];
        for (size_t j = 0; j < bp_safetensors_count(f); j++) {
            const bp_tensor_info *t = bp_safetensors_tensor(f, j);
            json_t *v = json_object_get(wm, t->name);
            const char *mapped = v ? json_string_value(v) : NULL;
            if (!mapped) {
                rc = bp_error_set(err, BP_EFORMAT,
                                  "%s: shard %s holds tensor '%.*s', which the index does "
                                  "not list",
                                  index_path, t->file, BP__NAME_SHOWN, t->name);
                goto out;
            }
            /* Shards are opened in name order, so shard s has index s. */
            const char *fname = strrchr(t->file, '/');
            fname = fname ? fname + 1 : t->file;
            if (strcmp(mapped, fname) != 0) {
                rc = bp_error_set(err, BP_EFORMAT,
                                  "%s: shard %s holds tensor '%.*s', which the index maps to "
                                  "shard '%s'",
                                  index_path, t->file, BP__NAME_SHOWN, t->name, mapped);
                goto out;
            }
        }
    }
out:
    free(shard_files);
    free(maps);
    json_decref(root);
    free(text);
    return rc;
}

int bp_model_open(const char *dir, bp_model **out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_model_open: out is NULL");
    *out = NULL;
    if (!dir || !*dir)
        return bp_error_set(err, BP_EINVAL, "bp_model_open: empty directory name");
    int rc = BP_OK;
    char *index_path = NULL, *single_path = NULL;
    bp_model *m = calloc(1, sizeof *m);
    if (!m || !(m->dir = strdup(dir))) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", dir);
        goto out;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        rc = bp_error_set(err, BP_ENOTFOUND, "%s: not a directory", dir);
        goto out;
    }
    rc = load_config(m, err);
    if (rc)
        goto out;
    index_path = bp__path_join(dir, INDEX_NAME);
    single_path = bp__path_join(dir, SINGLE_NAME);
    if (!index_path || !single_path) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", dir);
        goto out;
    }
    /* model.safetensors wins when both exist, as in transformers. */
    if (file_exists(single_path)) {
        bp_safetensors *f;
        rc = open_file(m, SINGLE_NAME, &f, err);
        if (!rc)
            rc = build_table(m, err);
    } else if (file_exists(index_path)) {
        rc = load_index(m, index_path, err);
    } else {
        rc = bp_error_set(err, BP_ENOTFOUND, "%s: neither %s nor %s found", dir, SINGLE_NAME,
                          INDEX_NAME);
    }
out:
    free(index_path);
    free(single_path);
    if (rc)
        bp_model_destroy(&m);
    *out = m;
    return rc;
}

void bp_model_destroy(bp_model **pm)
{
    if (!pm || !*pm)
        return;
    bp_model *m = *pm;
    for (size_t i = 0; i < m->n_files; i++)
        bp_safetensors_destroy(&m->files[i]);
    free(m->files);
    free(m->tensors);
    free(m->config);
    free(m->dir);
    free(m);
    *pm = NULL;
}

const char *bp_model_dir(const bp_model *m)
{
    return m ? m->dir : NULL;
}

const char *bp_model_config_text(const bp_model *m)
{
    return m ? m->config : NULL;
}

size_t bp_model_count(const bp_model *m)
{
    return m ? m->n : 0;
}

const bp_tensor_info *bp_model_tensor(const bp_model *m, size_t i)
{
    return m && i < m->n ? m->tensors[i] : NULL;
}

long bp_model_find(const bp_model *m, const char *name)
{
    if (!m || !name)
        return -1;
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->tensors[mid]->name, name);
        if (c == 0)
            return (long)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

uint64_t bp_model_total_bytes(const bp_model *m)
{
    return m ? m->total : 0;
}
