/* Helpers shared by the tests in tests/io (header-only: every test file is
 * its own executable). */
#ifndef BP_IO_TEST_UTIL_H
#define BP_IO_TEST_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitplan/model.h"

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* Remove a tree (if present) and recreate it empty. */
static inline void fresh_dir(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(buf, 0755);
            *p = '/';
        }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "cannot create %s\n", buf);
        exit(1);
    }
}

static inline void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    if (len && fwrite(data, 1, len, f) != len)
        exit(1);
    fclose(f);
}

static inline void write_text(const char *path, const char *text)
{
    write_bytes(path, text, strlen(text));
}

/* A safetensors file from a raw header: u64 length (hlen, or the real
 * length when hlen == UINT64_MAX), the header, then data_len bytes 0..255. */
static inline void write_st_raw(const char *path, const char *header, uint64_t hlen,
                                size_t data_len)
{
    size_t hl = strlen(header);
    if (hlen == UINT64_MAX)
        hlen = hl;
    unsigned char *buf = malloc(8 + hl + data_len + 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < data_len; i++)
        buf[8 + hl + i] = (unsigned char)i;
    write_bytes(path, buf, 8 + hl + data_len);
    free(buf);
}

/* Count files in dir whose name contains needle. */
static inline int count_files_with(const char *dir, const char *needle)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, needle))
            n++;
    closedir(d);
    return n;
}

static inline int file_exists_(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Write a safetensors file with the writer; tensors get data from fill(). */
typedef struct st_spec {
    const char *name;
    bp_dtype dtype;
    int ndim;
    int64_t shape[BP_MAX_DIMS];
} st_spec;

static inline size_t spec_bytes(const st_spec *s)
{
    size_t n = bp_dtype_size(s->dtype);
    for (int d = 0; d < s->ndim; d++)
        n *= (size_t)s->shape[d];
    return n;
}

/* Declare all specs, then write data[i] (spec_bytes(&specs[i]) bytes) for
 * each, then finish. */
static inline int write_st_specs(const char *path, const st_spec *specs, size_t n,
                                 const void *const *data, bp_error *err)
{
    bp_st_writer *w = NULL;
    int rc = bp_st_writer_new(path, &w, err);
    for (size_t i = 0; i < n && !rc; i++)
        rc = bp_st_writer_declare(w, specs[i].name, specs[i].dtype, specs[i].ndim,
                                  specs[i].shape, err);
    for (size_t i = 0; i < n && !rc; i++)
        rc = bp_st_writer_write(w, data[i], spec_bytes(&specs[i]), err);
    if (!rc)
        rc = bp_st_writer_finish(w, err);
    bp_st_writer_destroy(&w);
    return rc;
}

#endif
